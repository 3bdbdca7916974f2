//! The multiprocess simulation: a ring of workers, each owning one block of particles.
//! Every step the positions rotate once around the ring, so every worker applies the forces
//! of every block to its own particles, with no shared memory.

use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ringleader::{
    Coordinator, Gather, Handler, LaunchError, Launcher, Restart, Rewind, Ring, Stage, StageError,
    Transport,
};
use serde::{Deserialize, Serialize};

use super::physics::{Particles, accelerations, advance, collect_hits, divide, sum_in_order};
use super::{Outcome, Owners, Run, Tally, Watch};

/// The particle stage: what every worker knows at the start.
#[derive(Clone)]
pub(crate) struct ParticleRing {
    run: Arc<Run>,
    blocks: Arc<Vec<Range<usize>>>,
}

/// The coordinator's side: it gathers each step's reports and keeps the books.
struct Books<'a> {
    run: Arc<Run>,
    blocks: Arc<Vec<Range<usize>>>,
    gather: Gather<StepReport>,
    tally: &'a mut Tally,
}

/// A worker's account of one step.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct StepReport {
    step: u64,
    /// Each particle's kinetic energy, in list order, when the run sums the energy.
    energy_terms: Option<Vec<f64>>,
    /// The worker's whole block, when a snapshot is due.
    block: Option<Particles>,
}

/// What a worker measured of its own run, for `ringleader bench`.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct WorkerStats {
    /// Seconds computing: forces, moves, reports.
    pub compute_seconds: f64,
    /// Seconds in the ring's rotations outside the force computation: sending, and
    /// waiting for the next block.
    pub comm_seconds: f64,
    /// The most memory the worker held, in bytes, if the system says.
    pub peak_rss: Option<u64>,
}

/// The coordinator's answer after a step.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub(crate) struct Command {
    /// The energy correction the next step applies.
    correction: f64,
    /// Stop after this step and return the block.
    stop: bool,
}

impl ParticleRing {
    /// Whether workers wait for the coordinator after this step: for the correction, or
    /// because the watch, shown the step or a snapshot, may stop the run.
    fn asks(run: &Run, step: u64) -> bool {
        run.normalize || run.every_step || run.snapshot_due(step)
    }
}

impl Stage for ParticleRing {
    type Output = (Particles, WorkerStats);

    fn work(self, ring: &mut Ring) -> Result<Self::Output, StageError> {
        // A forked worker starts with the coordinator's peak; count only its own.
        if ring.transport() == Transport::Processes {
            ringleader::bench::reset_peak_rss();
        }
        let started = Instant::now();
        let (mut rotating, mut visiting) = (Duration::ZERO, Duration::ZERO);
        let run = &self.run;
        let mut mine = run.start.particles.slice(self.blocks[ring.rank()].clone());
        let m = mine.len();
        // Positions travel as one block: all x, then all y.
        let mut positions = vec![0.0; 2 * m];
        let (mut ax, mut ay) = (vec![0.0; m], vec![0.0; m]);
        let mut hits = Vec::new();
        let mut correction = run.start.correction;
        for step in run.remaining_steps() {
            let step = step + 1;
            ring.set_step(step);
            positions[..m].copy_from_slice(&mine.x);
            positions[m..].copy_from_slice(&mine.y);
            hits.clear();
            let rotation = Instant::now();
            ring.rotate(&positions, |origin, block: &[f64]| {
                let visit = Instant::now();
                let (sx, sy) = block.split_at(block.len() / 2);
                let base = self.blocks[origin].start;
                collect_hits(&mine.x, &mine.y, sx, sy, base, &mut hits);
                visiting += visit.elapsed();
            })?;
            rotating += rotation.elapsed();
            accelerations(&mut hits, &mut ax, &mut ay);
            advance(&mut mine, &ax, &ay, run.dt, run.size, correction)?;
            if run.reports_after(step) {
                let report = StepReport {
                    step,
                    energy_terms: run.needs_energy().then(|| mine.energy_terms().collect()),
                    block: run.snapshot_due(step).then(|| mine.clone()),
                };
                if Self::asks(run, step) {
                    let command: Command = ring.ask(&report)?;
                    correction = command.correction;
                    if command.stop {
                        break;
                    }
                } else {
                    ring.report(&report)?;
                }
            }
        }
        let comm = rotating.saturating_sub(visiting);
        let stats = WorkerStats {
            compute_seconds: started.elapsed().saturating_sub(comm).as_secs_f64(),
            comm_seconds: comm.as_secs_f64(),
            peak_rss: ringleader::bench::peak_rss(),
        };
        Ok((mine, stats))
    }
}

impl Handler for Books<'_> {
    type Report = StepReport;
    type Answer = Command;

    fn on_report(
        &mut self,
        from: usize,
        report: StepReport,
        coordinator: &mut Coordinator<'_, Command>,
    ) -> Result<(), StageError> {
        let Some(reports) = self.gather.push(from, report) else {
            return Ok(());
        };
        let step = super::round_step(reports.iter().map(|r| r.step))?;
        // Blocks are contiguous runs of list order, so rank order is list order.
        let energy = reports[0].energy_terms.is_some().then(|| {
            sum_in_order(
                reports
                    .iter()
                    .flat_map(|r| r.energy_terms.iter().flatten().copied()),
            )
        });
        let state = reports[0].block.is_some().then(|| {
            let mut all = Particles::default();
            for report in &reports {
                all.extend(report.block.clone().unwrap_or_default());
            }
            all
        });
        let owners = state.as_ref().map(|_| Owners::Blocks(self.blocks.to_vec()));
        let correction =
            self.tally
                .after_step(&self.run, step, energy, state.as_ref().zip(owners.as_ref()));
        if ParticleRing::asks(&self.run, step) {
            coordinator.broadcast(Command {
                correction,
                stop: self.tally.stopped(),
            })?;
        }
        Ok(())
    }
}

impl Restart<ParticleRing> for Books<'_> {
    fn rewind(&mut self, stage: &mut ParticleRing, _failure: &LaunchError) -> Option<Rewind> {
        let (run, step) = self.tally.rewind(&self.run);
        stage.run = Arc::clone(&run);
        self.run = run;
        self.gather = Gather::new(self.blocks.len());
        Some(Rewind::from_step(step))
    }
}

pub(crate) fn simulate(
    run: Run,
    workers: usize,
    transport: Transport,
    watch: Box<dyn Watch>,
) -> Result<(Outcome, Box<dyn Watch>), LaunchError> {
    let blocks = Arc::new(divide(run.start.particles.len(), workers));
    let run = Arc::new(run);
    let mut tally = Tally::new(&run, watch);
    let stage = ParticleRing {
        run: Arc::clone(&run),
        blocks: Arc::clone(&blocks),
    };
    let mut books = Books {
        run: Arc::clone(&run),
        blocks,
        gather: Gather::new(workers),
        tally: &mut tally,
    };
    let mut launcher = Launcher::new()
        .workers(workers)
        .transport(transport)
        // Workers that wait for the coordinator every step can stop at a step boundary.
        .stop_gracefully(run.normalize || run.every_step)
        .fault(run.fault)
        .restarts(run.restarts);
    if let Some(limit) = run.step_timeout {
        launcher = launcher.step_timeout(limit);
    }
    let restarts = run.restarts;
    let (outputs, run_stats) =
        launcher.launch_restarting(stage, &mut books, |r| super::say_restarted(r, restarts))?;
    let mut particles = Particles::default();
    let mut stats = Vec::with_capacity(outputs.len());
    for (block, worker) in outputs {
        particles.extend(block);
        stats.push(worker);
    }
    let (mut outcome, watch) = tally.finish(particles, stats);
    outcome.depth = run_stats.depth;
    Ok((outcome, watch))
}
