//! The textbook's particle simulator (Composing Programs, section 4.8), bit for bit: a
//! short-range repulsive force between all pairs, in a closed box, serially, with threads
//! sharing memory behind a barrier, or with a ring of workers passing positions.

mod cells;
pub mod checkpoint;
pub mod init;
pub mod kernel;
pub mod output;
pub mod physics;
mod ring;
mod threads;

use ringleader::Transport;

use physics::{Particles, correction};

/// Where a simulation starts: the textbook's initial state at step 0.
#[derive(Debug, Clone)]
pub struct Start {
    pub particles: Particles,
    /// How many steps were already taken.
    pub step: u64,
    /// The energy correction the next step applies.
    pub correction: f64,
    /// The energy at step 0, which normalization holds the system to.
    pub initial_energy: f64,
}

impl Start {
    /// The textbook's initial state for `n` particles.
    pub fn initial(n: usize) -> Start {
        let particles = init::initial_state(n);
        let initial_energy = particles.energy();
        Start {
            particles,
            step: 0,
            correction: 1.0,
            initial_energy,
        }
    }
}

/// What the coordinator sees of a run while it goes: progress bars, pictures, checkpoints.
/// Every mode calls it the same way, on the coordinator's side, in step order.
pub trait Watch: std::any::Any + Send {
    /// After every step when [`Run::every_step`] is set, with the energy when the run sums
    /// it. Returning [`Flow::Stop`] ends the run early.
    fn step(&mut self, step: u64, energy: Option<f64>) -> Flow {
        let _ = (step, energy);
        Flow::Continue
    }

    /// At every step [`Run::snapshot_due`] selects, with the whole state.
    fn snapshot(&mut self, snapshot: &Snapshot<'_>) -> Flow {
        let _ = snapshot;
        Flow::Continue
    }
}

/// Whether a run goes on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    Continue,
    Stop,
}

/// A watch that looks at nothing.
#[derive(Debug, Default)]
pub struct Unwatched;

impl Watch for Unwatched {}

/// The whole state after a step, as the coordinator assembles it.
#[derive(Debug)]
pub struct Snapshot<'a> {
    /// The step just taken.
    pub step: u64,
    /// Every particle, in list order.
    pub particles: &'a Particles,
    /// Which worker holds each particle.
    pub owners: &'a Owners,
    /// The correction the next step applies.
    pub correction: f64,
    /// The energy normalization holds the system to.
    pub initial_energy: f64,
}

/// Which worker holds each particle of a snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Owners {
    /// Runs of list slots, by rank: the textbook's blocks (one in serial mode).
    Blocks(Vec<std::ops::Range<usize>>),
    /// The rank of every list slot: strips of the box, where a worker's particles lie
    /// anywhere in the list.
    Slots(Vec<u32>),
}

impl Owners {
    /// How many workers.
    pub fn workers(&self) -> usize {
        match self {
            Owners::Blocks(blocks) => blocks.len(),
            Owners::Slots(ranks) => ranks.iter().max().map_or(0, |&r| r as usize + 1),
        }
    }

    /// The list slots of each worker's particles, by rank, each in list order.
    pub fn groups(&self) -> Vec<Vec<usize>> {
        match self {
            Owners::Blocks(blocks) => blocks.iter().map(|b| b.clone().collect()).collect(),
            Owners::Slots(ranks) => {
                let mut groups = vec![Vec::new(); self.workers()];
                for (slot, &rank) in ranks.iter().enumerate() {
                    groups[rank as usize].push(slot);
                }
                groups
            }
        }
    }
}

/// One simulation to run.
#[derive(Debug, Clone)]
pub struct Run {
    pub start: Start,
    /// The total number of steps: the run ends after step `steps`.
    pub steps: u64,
    pub dt: f64,
    /// Rescale velocities every step so the energy stays at its initial value (`-e`).
    pub normalize: bool,
    /// Keep the energy after every step.
    pub log_energy: bool,
    /// Call [`Watch::step`] after every step.
    pub every_step: bool,
    /// Take a snapshot every this many steps (and after the last).
    pub snapshot_every: Option<u64>,
    /// The side of the box.
    pub size: f64,
    /// Bounds each step of a ring run (`--timeout`).
    pub step_timeout: Option<std::time::Duration>,
    /// A fault to inject, for tests (`RINGLEADER_FAULT`).
    pub fault: Option<ringleader::Fault>,
    /// How many times a failed run may start again from the last state kept
    /// (`--restarts`); the state is kept at every snapshot.
    pub restarts: u32,
    /// With the cells algorithm on two or more workers or threads, the strips' edges move
    /// to their pace every this many steps; 0 keeps them where they start
    /// (`--balance-every`). Results are the same bits either way.
    pub balance_every: u64,
}

/// How many steps apart the strips' edges may move by default ([`Run::balance_every`]).
pub const DEFAULT_BALANCE_EVERY: u64 = 10;

impl Run {
    pub fn new(start: Start, steps: u64, dt: f64, normalize: bool) -> Run {
        let size = init::box_size(start.particles.len());
        Run {
            start,
            steps,
            dt,
            normalize,
            log_energy: false,
            every_step: false,
            snapshot_every: None,
            size,
            step_timeout: None,
            fault: None,
            restarts: 0,
            balance_every: DEFAULT_BALANCE_EVERY,
        }
    }

    pub fn remaining_steps(&self) -> std::ops::Range<u64> {
        self.start.step..self.steps
    }

    /// Whether a snapshot follows this step: every `snapshot_every` steps, and the last.
    pub fn snapshot_due(&self, step: u64) -> bool {
        self.snapshot_every
            .is_some_and(|every| step.is_multiple_of(every) || step == self.steps)
    }

    /// Whether the coordinator hears from the workers after this step.
    pub fn reports_after(&self, step: u64) -> bool {
        self.needs_energy() || self.every_step || self.snapshot_due(step)
    }

    /// Whether each step must sum the energy.
    pub fn needs_energy(&self) -> bool {
        self.normalize || self.log_energy
    }

    /// The correction for the next step, given the energy after this one.
    pub fn next_correction(&self, energy: f64, current: f64) -> f64 {
        if self.normalize {
            correction(self.start.initial_energy, energy)
        } else {
            current
        }
    }

    /// An empty energy log with room for every step.
    pub fn energy_log(&self) -> Vec<f64> {
        if self.needs_energy() {
            Vec::with_capacity((self.steps - self.start.step) as usize)
        } else {
            Vec::new()
        }
    }

    /// Pair checks the run makes: every particle against every particle, every step.
    pub fn pair_checks(&self) -> f64 {
        let n = self.start.particles.len() as f64;
        n * n * (self.steps - self.start.step) as f64
    }
}

/// How the simulation is spread over workers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// One thread.
    Serial,
    /// The textbook's threads: shared positions and a barrier.
    Threads(usize),
    /// A ring of workers on the given transport.
    Ring(usize, Transport),
}

impl Mode {
    /// How the textbook names the mode in its timing line.
    pub fn describe(self) -> String {
        match self {
            Mode::Serial => "serial".to_owned(),
            Mode::Threads(_) => "multithreaded".to_owned(),
            Mode::Ring(_, Transport::Processes) => "multiprocess".to_owned(),
            Mode::Ring(_, transport) => format!("ring ({} transport)", transport.name()),
        }
    }
}

/// What a simulation ends with.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The final state, in list order.
    pub particles: Particles,
    /// The energy after each step, when the run needed it.
    pub energies: Vec<f64>,
    /// The correction the next step would apply.
    pub correction: f64,
    /// Whether every step was taken.
    pub ending: Ending,
    /// What each worker of a ring measured, by rank; empty in the other modes.
    pub workers: Vec<ring::WorkerStats>,
    /// The ring's critical-path depth per step, as the framework measured it: messages in
    /// a chain, each received before the next was sent. `None` where nobody measured it.
    pub depth: Option<f64>,
    /// How many times the strips' edges moved to even out the workers' paces (cells on a
    /// ring only).
    pub edge_moves: u32,
}

/// The step a round of ring reports is about, from each rank's report in rank order. The
/// ranks must agree: a report from another step means the protocol broke.
pub fn round_step(mut steps: impl Iterator<Item = u64>) -> Result<u64, ringleader::StageError> {
    let first = steps.next().ok_or("an empty round of reports")?;
    match steps.position(|step| step != first) {
        None => Ok(first),
        Some(i) => Err(format!("rank {} reported another step in round {first}", i + 1).into()),
    }
}

/// How a run ended, when it did not fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// Every step was taken.
    Finished,
    /// The watch asked to stop after this step.
    Stopped(u64),
}

/// How forces are found. Both give the same bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Algorithm {
    /// The textbook's: every particle against every particle, O(n²) per step.
    #[default]
    AllPairs,
    /// Cell lists, O(n) per step; on a ring, strips of the box with halos.
    Cells,
}

impl Algorithm {
    /// The name the command line uses.
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::AllPairs => "allpairs",
            Algorithm::Cells => "cells",
        }
    }
}

/// Runs a simulation with the textbook's algorithm in the given mode, showing it to `watch`
/// as it goes; [`simulate_with`] chooses the algorithm.
///
/// # Errors
/// As [`simulate_with`].
pub fn simulate(
    run: Run,
    mode: Mode,
    watch: Box<dyn Watch>,
) -> Result<(Outcome, Box<dyn Watch>), ringleader::LaunchError> {
    simulate_with(run, mode, Algorithm::AllPairs, watch)
}

/// Runs a simulation in the given mode with the given algorithm.
///
/// # Errors
/// A [`LaunchError`](ringleader::LaunchError): a worker's failure (a particle that
/// [escaped](physics::Escaped) the box among them), or a stop signal.
pub fn simulate_with(
    run: Run,
    mode: Mode,
    algorithm: Algorithm,
    watch: Box<dyn Watch>,
) -> Result<(Outcome, Box<dyn Watch>), ringleader::LaunchError> {
    match (algorithm, mode) {
        // Serially the ring has one worker, on a thread of this process: the same code, with
        // every guarantee of the framework.
        (Algorithm::AllPairs, Mode::Serial) => ring::simulate(run, 1, Transport::Threads, watch),
        (Algorithm::AllPairs, Mode::Threads(threads)) => threads::simulate(run, threads, watch),
        (Algorithm::AllPairs, Mode::Ring(workers, transport)) => {
            ring::simulate(run, workers, transport, watch)
        }
        (Algorithm::Cells, Mode::Serial) => {
            cells::ring::simulate(run, 1, Transport::Threads, watch)
        }
        (Algorithm::Cells, Mode::Threads(threads)) => cells::threads::simulate(run, threads, watch),
        (Algorithm::Cells, Mode::Ring(workers, transport)) => {
            cells::ring::simulate(run, workers, transport, watch)
        }
    }
}

/// Tells the user that a failed run starts again: one line on stderr.
pub fn say_restarted(restarted: &ringleader::Restarted, restarts: u32) {
    let from = restarted
        .rewind
        .step
        .map_or_else(String::new, |step| format!(" from step {step}"));
    eprintln!(
        "ringleader: {}; restarting{from} ({} of {restarts})",
        restarted.failure, restarted.attempt
    );
}

/// The coordinator's bookkeeping after each step, the same in every mode: energy, the
/// correction, and the watch.
pub(crate) struct Tally {
    pub(crate) watch: Box<dyn Watch>,
    pub(crate) energies: Vec<f64>,
    pub(crate) correction: f64,
    pub(crate) ending: Ending,
    /// The step the run started after: `energies[k]` is the energy after step
    /// `first + k + 1`.
    first: u64,
    /// The last whole state seen, to restart from (kept only when the run may restart).
    kept: Option<Start>,
    keep: bool,
    /// The last step shown to the watch: after a restart, the steps the new ring takes
    /// again are not shown twice.
    shown: u64,
}

impl Tally {
    pub(crate) fn new(run: &Run, watch: Box<dyn Watch>) -> Tally {
        Tally {
            watch,
            energies: run.energy_log(),
            correction: run.start.correction,
            ending: Ending::Finished,
            first: run.start.step,
            kept: None,
            keep: run.restarts > 0,
            shown: run.start.step,
        }
    }

    /// Records step `step`. `energy` is the energy after it, when the run sums it;
    /// `snapshot` is the state, when one is due. Returns the correction for the next step.
    pub(crate) fn after_step(
        &mut self,
        run: &Run,
        step: u64,
        energy: Option<f64>,
        snapshot: Option<(&Particles, &Owners)>,
    ) -> f64 {
        if let Some(energy) = energy {
            self.correction = run.next_correction(energy, self.correction);
            self.energies.push(energy);
        }
        if let Some((particles, _)) = snapshot
            && self.keep
        {
            self.kept = Some(Start {
                particles: particles.clone(),
                step,
                correction: self.correction,
                initial_energy: run.start.initial_energy,
            });
        }
        // A step taken again after a restart was shown already.
        let fresh = step > self.shown;
        self.shown = self.shown.max(step);
        let mut flow = Flow::Continue;
        if run.every_step && fresh {
            flow = self.watch.step(step, energy);
        }
        // SIGINT, SIGTERM or SIGHUP: stop at this step boundary.
        if ringleader::stop_signal().is_some() {
            flow = Flow::Stop;
        }
        if let Some((particles, owners)) = snapshot.filter(|_| fresh) {
            let snapshot = Snapshot {
                step,
                particles,
                owners,
                correction: self.correction,
                initial_energy: run.start.initial_energy,
            };
            if self.watch.snapshot(&snapshot) == Flow::Stop {
                flow = Flow::Stop;
            }
        }
        if flow == Flow::Stop && self.ending == Ending::Finished {
            self.ending = Ending::Stopped(step);
        }
        self.correction
    }

    /// After a failure: the run to start the next ring with, from the last whole state
    /// kept (or `run`'s own start, if none was), and the books put back to that step.
    pub(crate) fn rewind(&mut self, run: &std::sync::Arc<Run>) -> (std::sync::Arc<Run>, u64) {
        let run = match self.kept.clone() {
            Some(start) => {
                let mut next = Run::clone(run);
                next.start = start;
                std::sync::Arc::new(next)
            }
            None => std::sync::Arc::clone(run),
        };
        let step = run.start.step;
        self.energies
            .truncate(usize::try_from(step - self.first).unwrap_or(usize::MAX));
        self.correction = run.start.correction;
        (run, step)
    }

    /// Closes the books on a run that ended with `particles`: its outcome, and the watch
    /// back. `workers` is what each worker of a ring measured, if anything.
    pub(crate) fn finish(
        self,
        particles: Particles,
        workers: Vec<ring::WorkerStats>,
    ) -> (Outcome, Box<dyn Watch>) {
        let outcome = Outcome {
            particles,
            energies: self.energies,
            correction: self.correction,
            ending: self.ending,
            workers,
            depth: None,
            edge_moves: 0,
        };
        (outcome, self.watch)
    }

    pub(crate) fn stopped(&self) -> bool {
        self.ending != Ending::Finished
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records what it is shown, and stops after `stop_at`.
    #[derive(Default)]
    struct Recorder {
        steps: Vec<(u64, Option<u64>)>,
        snapshots: Vec<(u64, Vec<u64>, usize)>,
        stop_at: Option<u64>,
    }

    impl Watch for Recorder {
        fn step(&mut self, step: u64, energy: Option<f64>) -> Flow {
            self.steps.push((step, energy.map(f64::to_bits)));
            if self.stop_at == Some(step) {
                Flow::Stop
            } else {
                Flow::Continue
            }
        }

        fn snapshot(&mut self, snapshot: &Snapshot<'_>) -> Flow {
            let bits = snapshot.particles.x.iter().map(|x| x.to_bits()).collect();
            self.snapshots
                .push((snapshot.step, bits, snapshot.owners.workers()));
            Flow::Continue
        }
    }

    fn watched(mode: Mode, stop_at: Option<u64>) -> (Outcome, Recorder) {
        let mut run = Run::new(Start::initial(60), 20, physics::DEFAULT_DT, true);
        run.every_step = true;
        run.snapshot_every = Some(7);
        let recorder = Recorder {
            stop_at,
            ..Recorder::default()
        };
        let (outcome, watch) = simulate(run, mode, Box::new(recorder)).expect("run");
        let any: Box<dyn std::any::Any> = watch;
        (
            outcome,
            *any.downcast::<Recorder>()
                .expect("the same watch comes back"),
        )
    }

    const MODES: [Mode; 4] = [
        Mode::Serial,
        Mode::Threads(3),
        Mode::Ring(4, Transport::Threads),
        Mode::Ring(7, Transport::Threads),
    ];

    #[test]
    fn every_mode_shows_the_watch_the_same_steps_and_snapshots() {
        let (_, serial) = watched(Mode::Serial, None);
        assert_eq!(serial.steps.len(), 20);
        let snapshot_steps: Vec<u64> = serial.snapshots.iter().map(|s| s.0).collect();
        assert_eq!(snapshot_steps, vec![7, 14, 20]);
        for mode in MODES {
            let (outcome, seen) = watched(mode, None);
            assert_eq!(outcome.ending, Ending::Finished);
            assert_eq!(seen.steps, serial.steps, "{mode:?}");
            let strip = |s: &Recorder| {
                s.snapshots
                    .iter()
                    .map(|(st, b, _)| (*st, b.clone()))
                    .collect::<Vec<_>>()
            };
            assert_eq!(strip(&seen), strip(&serial), "{mode:?}");
        }
    }

    #[test]
    fn a_watch_can_stop_every_mode_after_the_same_step() {
        let mut run = Run::new(Start::initial(60), 13, physics::DEFAULT_DT, true);
        run.every_step = true;
        let (reference, _) = simulate(run, Mode::Serial, Box::new(Unwatched)).expect("run");
        for mode in MODES {
            let (outcome, seen) = watched(mode, Some(13));
            assert_eq!(outcome.ending, Ending::Stopped(13), "{mode:?}");
            assert_eq!(seen.steps.len(), 13, "{mode:?}");
            assert_eq!(outcome.particles, reference.particles, "{mode:?}");
        }
    }
}
