//! The textbook's multithreaded simulation: shared positions, and a barrier between the
//! phase where every thread reads all positions and the phase where each writes its own.
//!
//! The threads are the framework's workers on the threads transport, so the run gets every
//! guarantee a ring gets (step timeouts, stop signals, injected faults, failures named);
//! they share the positions directly, which only threads can. Thread 0 asks the
//! coordinator, which keeps the books, after every step that reports.

use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};

use ringleader::{
    Coordinator, Handler, LaunchError, Launcher, Restart, Rewind, Ring, Stage, StageError,
    Transport,
};
use serde::{Deserialize, Serialize};

use super::physics::{Particles, accelerations, advance, collect_hits, divide, sum_in_order};
use super::{Outcome, Owners, Run, Tally, Watch};

/// The stage: every thread's view of the shared state.
#[derive(Clone)]
pub(crate) struct SharedThreads {
    run: Arc<Run>,
    ranges: Arc<Vec<Range<usize>>>,
    /// Each thread owns the writes to its block; the barrier keeps every read of a block
    /// apart from its owner's write, so these locks are never contended.
    blocks: Arc<Vec<RwLock<Particles>>>,
    /// The coordinator's last answer, which thread 0 hands on to the others.
    correction: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

/// The coordinator's side: it keeps the books, and the blocks of the last ring, which hold
/// the result.
struct Books<'a> {
    run: Arc<Run>,
    ranges: Arc<Vec<Range<usize>>>,
    blocks: Arc<Vec<RwLock<Particles>>>,
    tally: &'a mut Tally,
}

/// Thread 0's account of a step: the energy, summed in list order, and the state when a
/// snapshot is due.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct StepReport {
    step: u64,
    energy: Option<f64>,
    state: Option<Particles>,
}

/// The coordinator's answer after a step.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub(crate) struct Command {
    correction: f64,
    stop: bool,
}

/// Every block, in list order.
fn gather(blocks: &[RwLock<Particles>]) -> Particles {
    let mut particles = Particles::default();
    for block in blocks {
        particles.extend(read(block).clone());
    }
    particles
}

impl Stage for SharedThreads {
    type Output = ();

    fn work(self, ring: &mut Ring) -> Result<(), StageError> {
        let run = &self.run;
        let rank = ring.rank();
        let range = self.ranges[rank].clone();
        let m = range.len();
        let (mut ax, mut ay) = (vec![0.0; m], vec![0.0; m]);
        let mut hits = Vec::new();
        for step in run.remaining_steps() {
            let step = step + 1;
            ring.set_step(step);
            // Read phase: forces on my particles from everyone's positions.
            let (tx, ty) = {
                let mine = read(&self.blocks[rank]);
                (mine.x.clone(), mine.y.clone())
            };
            hits.clear();
            for (block, source) in self.blocks.iter().zip(self.ranges.iter()) {
                let block = read(block);
                collect_hits(&tx, &ty, &block.x, &block.y, source.start, &mut hits);
            }
            accelerations(&mut hits, &mut ax, &mut ay);
            ring.barrier()?;
            // Thread 0 decided before this barrier whether the last step was the last one;
            // every thread sees the same answer here.
            if self.stop.load(Ordering::Relaxed) {
                break;
            }
            // Write phase: move my particles.
            let correction = f64::from_bits(self.correction.load(Ordering::Relaxed));
            advance(
                &mut write(&self.blocks[rank]),
                &ax,
                &ay,
                run.dt,
                run.size,
                correction,
            )?;
            ring.barrier()?;
            // Thread 0 asks while the others start the next read phase; nobody writes
            // again until after the next barrier.
            if rank == 0 && run.reports_after(step) {
                let energy = run.needs_energy().then(|| {
                    let parts: Vec<_> = self.blocks.iter().map(read).collect();
                    sum_in_order(parts.iter().flat_map(|p| p.energy_terms()))
                });
                let state = run.snapshot_due(step).then(|| gather(&self.blocks));
                let command: Command = ring.ask(&StepReport {
                    step,
                    energy,
                    state,
                })?;
                self.correction
                    .store(command.correction.to_bits(), Ordering::Relaxed);
                self.stop.store(command.stop, Ordering::Relaxed);
            }
        }
        Ok(())
    }
}

impl Handler for Books<'_> {
    type Report = StepReport;
    type Answer = Command;

    fn on_report(
        &mut self,
        _from: usize,
        report: StepReport,
        coordinator: &mut Coordinator<'_, Command>,
    ) -> Result<(), StageError> {
        let owners = Owners::Blocks(self.ranges.to_vec());
        let snapshot = report.state.as_ref().map(|p| (p, &owners));
        let correction = self
            .tally
            .after_step(&self.run, report.step, report.energy, snapshot);
        coordinator.send(
            0,
            Command {
                correction,
                stop: self.tally.stopped(),
            },
        )?;
        Ok(())
    }
}

/// Every thread's block of `start`, in list order.
fn blocks_of(start: &Particles, ranges: &[Range<usize>]) -> Vec<RwLock<Particles>> {
    ranges
        .iter()
        .map(|range| RwLock::new(start.slice(range.clone())))
        .collect()
}

impl Restart<SharedThreads> for Books<'_> {
    fn rewind(&mut self, stage: &mut SharedThreads, _failure: &LaunchError) -> Option<Rewind> {
        let (run, step) = self.tally.rewind(&self.run);
        self.blocks = Arc::new(blocks_of(&run.start.particles, &self.ranges));
        *stage = SharedThreads {
            run: Arc::clone(&run),
            ranges: Arc::clone(&self.ranges),
            blocks: Arc::clone(&self.blocks),
            correction: Arc::new(AtomicU64::new(run.start.correction.to_bits())),
            stop: Arc::new(AtomicBool::new(false)),
        };
        self.run = run;
        Some(Rewind::from_step(step))
    }
}

pub(crate) fn simulate(
    run: Run,
    threads: usize,
    watch: Box<dyn Watch>,
) -> Result<(Outcome, Box<dyn Watch>), LaunchError> {
    let ranges = divide(run.start.particles.len(), threads);
    let blocks = blocks_of(&run.start.particles, &ranges);
    let mut tally = Tally::new(&run, watch);
    let mut launcher = Launcher::new()
        .workers(threads)
        .transport(Transport::Threads)
        // Thread 0 hears from the coordinator after every step that reports.
        .stop_gracefully(run.normalize || run.every_step)
        .fault(run.fault)
        .restarts(run.restarts);
    if let Some(limit) = run.step_timeout {
        launcher = launcher.step_timeout(limit);
    }
    let restarts = run.restarts;
    let run = Arc::new(run);
    let ranges = Arc::new(ranges);
    let blocks = Arc::new(blocks);
    let stage = SharedThreads {
        correction: Arc::new(AtomicU64::new(run.start.correction.to_bits())),
        run: Arc::clone(&run),
        ranges: Arc::clone(&ranges),
        blocks: Arc::clone(&blocks),
        stop: Arc::new(AtomicBool::new(false)),
    };
    let mut books = Books {
        run,
        ranges,
        blocks,
        tally: &mut tally,
    };
    launcher.launch_restarting(stage, &mut books, |r| super::say_restarted(r, restarts))?;
    let particles = gather(&books.blocks);
    Ok(tally.finish(particles, Vec::new()))
}

// A panicking thread poisons the locks; the framework then ends the run with its panic, so
// the data behind a poisoned lock is never used for a result.
fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(PoisonError::into_inner)
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(PoisonError::into_inner)
}
