//! Cell lists on the textbook's threads (`-t`): each thread owns a strip, as a ring worker
//! does, but reads the rows next to it straight from its neighbours, and takes in the
//! particles that entered its rows from every other thread's list. A step has three phases
//! between barriers, all of them parallel: each thread copies out its strip's edge rows;
//! each steps its strip and puts the particles that left it aside; each takes in those that
//! entered its rows.
//!
//! The threads are the framework's workers on the threads transport, so the run gets every
//! guarantee a ring gets. Thread 0 asks the coordinator, which keeps the books, after every
//! step that reports.
//!
//! The strips' edges move to the threads' paces as a ring's do ([`Balance`]): every
//! [`Balance::every`] steps each thread posts how long it computed and how many particles
//! each of its rows holds; thread 0 plans new edges, and each thread hands the rows it
//! gives up to the neighbour that gains them, through the shared state, between barriers.

use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard};
use std::time::{Duration, Instant};

use ringleader::{
    Coordinator, Handler, LaunchError, Launcher, Restart, Rewind, Ring, Stage, StageError,
    Transport,
};
use serde::{Deserialize, Serialize};

use super::super::physics::{Motion, Particles};
use super::super::{Outcome, Run, Tally, Watch};
use super::ring::Balance;
use super::strip::Strip;
use super::{
    Body, Grid, balanced_edges, energy, in_list_order, into_list_order, owners, row_counts,
};

/// What a thread shares with the others: the rows at the edges of its strip, copied at the
/// start of each step, and the particles that left its strip in the step.
#[derive(Debug, Default)]
struct Shared {
    edges: RwLock<(Vec<Body>, Vec<Body>)>,
    leaving: RwLock<Vec<Body>>,
    /// Seconds computing since the last plan, and the particles of each row of the strip.
    load: Mutex<(f64, Vec<u32>)>,
    /// The particles of the rows given up to the strips below and above, when edges move.
    ceded: RwLock<(Vec<Body>, Vec<Body>)>,
}

/// The stage: every thread's view of the shared state.
#[derive(Clone)]
pub(crate) struct CellThreads {
    run: Arc<Run>,
    grid: Grid,
    rows: Arc<Vec<Range<u32>>>,
    per_row: Arc<Vec<u32>>,
    /// The nearest thread below and above each that has rows: its edge row is the halo.
    below: Arc<Vec<Option<usize>>>,
    above: Arc<Vec<Option<usize>>>,
    shared: Arc<Vec<Shared>>,
    /// Each strip is locked only by its own thread, except while thread 0 keeps the books
    /// and every other thread waits at a barrier.
    strips: Arc<Vec<Mutex<Strip>>>,
    /// Each thread's particles at the end, for `into_list_order`.
    finals: Arc<Vec<Mutex<Vec<Body>>>>,
    /// The coordinator's last answer, which thread 0 hands on to the others.
    correction: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    balance: Balance,
    /// The strips' edges as they are now, and thread 0's plan after a step that posts
    /// loads: the edges to move to, if they move.
    edges: Arc<RwLock<Vec<u32>>>,
    plan: Arc<RwLock<Option<Vec<u32>>>>,
    /// How many times the edges moved.
    moves: Arc<AtomicU32>,
}

/// The coordinator's side: it keeps the books, and a handle on the state the threads of
/// the last ring share, which holds the result.
struct Books<'a> {
    threads: CellThreads,
    tally: &'a mut Tally,
}

/// Thread 0's account of a step.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct StepReport {
    step: u64,
    energy: Option<f64>,
    state: Option<(Particles, Vec<u32>)>,
}

/// The coordinator's answer after a step.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub(crate) struct Command {
    correction: f64,
    stop: bool,
}

impl Stage for CellThreads {
    type Output = ();

    fn work(self, ring: &mut Ring) -> Result<(), StageError> {
        let run = &self.run;
        let t = ring.rank();
        let (grid, shared) = (&self.grid, &self.shared);
        *lock(&self.strips[t]) = Strip::from_start(
            grid,
            &run.start.particles,
            self.rows[t].clone(),
            &self.per_row,
            ring.size() == 1,
        );
        let n = run.start.particles.len();
        let mut terms = Vec::new();
        // Time spent stepping the strip since the last load posted.
        let mut busy = Duration::ZERO;
        for step in run.remaining_steps() {
            let step = step + 1;
            ring.set_step(step);
            {
                let strip = lock(&self.strips[t]);
                let mut edges = write(&shared[t].edges);
                let range = strip.rows();
                if !range.is_empty() {
                    let (bottom, top) = &mut *edges;
                    strip.row_into(grid, range.start, bottom);
                    strip.row_into(grid, range.end - 1, top);
                }
            }
            ring.barrier()?;
            if self.stop.load(Ordering::Relaxed) {
                break;
            }
            {
                let halo_below = self.below[t].map(|u| read(&shared[u].edges));
                let halo_above = self.above[t].map(|u| read(&shared[u].edges));
                let halo_below = halo_below.as_ref().map_or(&[][..], |e| &e.1[..]);
                let halo_above = halo_above.as_ref().map_or(&[][..], |e| &e.0[..]);
                let motion = Motion {
                    dt: run.dt,
                    size: run.size,
                    correction: f64::from_bits(self.correction.load(Ordering::Relaxed)),
                };
                let mut strip = lock(&self.strips[t]);
                if step == run.steps {
                    strip.last_step_next();
                }
                let stepping = Instant::now();
                strip.step(grid, &[halo_below, halo_above], motion)?;
                busy += stepping.elapsed();
                let mut leaving = write(&shared[t].leaving);
                leaving.clear();
                leaving.extend_from_slice(&strip.leaving_down);
                leaving.extend_from_slice(&strip.leaving_up);
            }
            ring.barrier()?;
            {
                let mut strip = lock(&self.strips[t]);
                let range = strip.rows();
                for other in shared.iter() {
                    let leaving = read(&other.leaving);
                    let arriving = leaving
                        .iter()
                        .filter(|b| range.contains(&grid.row_of(b.key)));
                    strip.admit(arriving);
                }
                strip.settle(grid);
            }
            if run.reports_after(step) {
                self.keep_books(ring, step, n, &mut terms)?;
                if self.stop.load(Ordering::Relaxed) {
                    break;
                }
            }
            if self.balance.due(step, run.steps, self.rows.len()) {
                let load = std::mem::take(&mut busy).as_secs_f64();
                self.rebalance(ring, step, load)?;
            }
        }
        *lock(&self.finals[t]) = std::mem::take(&mut *lock(&self.strips[t])).into_slot_windows();
        Ok(())
    }
}

impl CellThreads {
    /// The books after `step`: every strip is settled before thread 0 reads them, and
    /// nobody steps on until the coordinator has answered.
    fn keep_books(
        &self,
        ring: &mut Ring,
        step: u64,
        n: usize,
        terms: &mut Vec<f64>,
    ) -> Result<(), StageError> {
        let (run, t) = (&self.run, ring.rank());
        ring.barrier()?;
        if t == 0 {
            let report = {
                let strips: Vec<_> = self.strips.iter().map(lock).collect();
                let bodies = || strips.iter().flat_map(|s| s.bodies());
                if run.needs_energy() && terms.is_empty() {
                    *terms = vec![0.0; n];
                }
                StepReport {
                    step,
                    energy: run.needs_energy().then(|| energy(bodies(), terms)),
                    state: run.snapshot_due(step).then(|| {
                        let super::super::Owners::Slots(ranks) =
                            owners(strips.iter().map(|s| s.bodies()), n)
                        else {
                            unreachable!("strips own slots")
                        };
                        (in_list_order(bodies(), &run.start.particles.ids), ranks)
                    }),
                }
            };
            let command: Command = ring.ask(&report)?;
            self.correction
                .store(command.correction.to_bits(), Ordering::Relaxed);
            self.stop.store(command.stop, Ordering::Relaxed);
        }
        ring.barrier()?;
        Ok(())
    }

    /// Moves the strips' edges to the threads' paces, if they are uneven: this thread took
    /// `busy` seconds computing since the last time. Thread 0 plans; each thread then gives
    /// up the rows outside its new edges and takes in the rows its neighbours gave up next
    /// to its own. No edge moves past the old rows of the strips beside it
    /// ([`rebalanced`](super::rebalanced)), so only neighbours trade rows.
    fn rebalance(&self, ring: &mut Ring, step: u64, busy: f64) -> Result<(), StageError> {
        let (t, grid) = (ring.rank(), &self.grid);
        *lock(&self.shared[t].load) = (busy, lock(&self.strips[t]).row_counts(grid));
        ring.barrier()?;
        if t == 0 {
            let (busy, per_row): (Vec<f64>, Vec<Vec<u32>>) =
                self.shared.iter().map(|s| lock(&s.load).clone()).unzip();
            let per_row: Vec<u32> = per_row.concat();
            let plan = self.balance.plan(&read(&self.edges), busy, &per_row, step);
            if let Some(edges) = &plan {
                write(&self.edges).clone_from(edges);
                self.moves.fetch_add(1, Ordering::Relaxed);
            }
            *write(&self.plan) = plan;
        }
        ring.barrier()?;
        let Some(edges) = read(&self.plan).clone() else {
            return Ok(());
        };
        let last = self.shared.len() - 1;
        {
            let (mut down, mut up) = (Vec::new(), Vec::new());
            lock(&self.strips[t]).cede(grid, edges[t]..edges[t + 1], &mut down, &mut up);
            if (t == 0 && !down.is_empty()) || (t == last && !up.is_empty()) {
                return Err("the edges moved off the box".into());
            }
            *write(&self.shared[t].ceded) = (down, up);
        }
        ring.barrier()?;
        let mut strip = lock(&self.strips[t]);
        if t > 0 {
            strip.gain(grid, &read(&self.shared[t - 1].ceded).1, true)?;
        }
        if t < last {
            strip.gain(grid, &read(&self.shared[t + 1].ceded).0, false)?;
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
        let state = report
            .state
            .map(|(particles, ranks)| (particles, super::super::Owners::Slots(ranks)));
        let correction = self.tally.after_step(
            &self.threads.run,
            report.step,
            report.energy,
            state.as_ref().map(|(p, o)| (p, o)),
        );
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

impl Restart<CellThreads> for Books<'_> {
    fn rewind(&mut self, stage: &mut CellThreads, _failure: &LaunchError) -> Option<Rewind> {
        let (run, step) = self.tally.rewind(&self.threads.run);
        let fresh = &mut self.threads;
        let threads = fresh.rows.len();
        fresh.per_row = Arc::new(row_counts(&fresh.grid, &run.start.particles.y));
        fresh.shared = Arc::new((0..threads).map(|_| Shared::default()).collect());
        fresh.strips = Arc::new((0..threads).map(|_| Mutex::default()).collect());
        fresh.finals = Arc::new((0..threads).map(|_| Mutex::default()).collect());
        fresh.correction = Arc::new(AtomicU64::new(run.start.correction.to_bits()));
        fresh.stop = Arc::new(AtomicBool::new(false));
        // The threads start again from the first edges.
        let first: Vec<u32> = fresh.rows.iter().map(|r| r.start).collect();
        let last = fresh.rows.last().map_or(0, |r| r.end);
        fresh.edges = Arc::new(RwLock::new([first, vec![last]].concat()));
        fresh.plan = Arc::default();
        fresh.run = run;
        *stage = fresh.clone();
        Some(Rewind::from_step(step))
    }
}

pub(crate) fn simulate(
    run: Run,
    threads: usize,
    watch: Box<dyn Watch>,
) -> Result<(Outcome, Box<dyn Watch>), LaunchError> {
    let grid = Grid::new(run.size);
    let per_row = row_counts(&grid, &run.start.particles.y);
    let edges = balanced_edges(&per_row, threads);
    let rows: Vec<Range<u32>> = edges.windows(2).map(|w| w[0]..w[1]).collect();
    let below = (0..threads)
        .map(|t| (0..t).rev().find(|&u| !rows[u].is_empty()))
        .collect();
    let above = (0..threads)
        .map(|t| (t + 1..threads).find(|&u| !rows[u].is_empty()))
        .collect();
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
    let balance = Balance::new(run.balance_every);
    let stage = CellThreads {
        correction: Arc::new(AtomicU64::new(run.start.correction.to_bits())),
        run: Arc::new(run),
        grid,
        rows: Arc::new(rows),
        per_row: Arc::new(per_row),
        below: Arc::new(below),
        above: Arc::new(above),
        shared: Arc::new((0..threads).map(|_| Shared::default()).collect()),
        strips: Arc::new((0..threads).map(|_| Mutex::default()).collect()),
        finals: Arc::new((0..threads).map(|_| Mutex::default()).collect()),
        stop: Arc::new(AtomicBool::new(false)),
        balance,
        edges: Arc::new(RwLock::new(edges)),
        plan: Arc::default(),
        moves: Arc::default(),
    };
    let mut books = Books {
        threads: stage.clone(),
        tally: &mut tally,
    };
    launcher.launch_restarting(stage, &mut books, |r| {
        super::super::say_restarted(r, restarts)
    })?;
    let CellThreads {
        run, finals, moves, ..
    } = books.threads;
    let finals: Vec<Vec<Body>> = finals
        .iter()
        .map(|f| std::mem::take(&mut *lock(f)))
        .collect();
    // Every thread is done with the start: its arrays become the end's (`into_list_order`).
    let start = match Arc::try_unwrap(run) {
        Ok(mut run) => std::mem::take(&mut run.start.particles),
        Err(run) => run.start.particles.clone(),
    };
    let parts: Vec<&[Body]> = finals.iter().map(|f| &f[..]).collect();
    let particles =
        into_list_order(&parts, start, threads, false).map_err(LaunchError::Coordinator)?;
    let (mut outcome, watch) = tally.finish(particles, Vec::new());
    outcome.edge_moves = moves.load(Ordering::Relaxed);
    Ok((outcome, watch))
}

// A panicking thread poisons the locks; the framework then ends the run with its panic, so
// the data behind a poisoned lock is never used for a result.
fn read<T>(lock: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(PoisonError::into_inner)
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(PoisonError::into_inner)
}

fn lock<T>(lock: &Mutex<T>) -> MutexGuard<'_, T> {
    lock.lock().unwrap_or_else(PoisonError::into_inner)
}
