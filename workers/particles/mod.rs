//! The textbook's particle simulator (Composing Programs, section 4.8), bit for bit: a
//! short-range repulsive force between all pairs, in a closed box, serially, with threads
//! sharing memory behind a barrier, or with a ring of workers passing positions.

pub(crate) mod init;
pub(crate) mod output;
pub(crate) mod physics;
mod ring;
mod serial;
mod threads;

use ringleader::{LaunchError, Transport};

use physics::{Particles, correction};

/// Where a simulation starts: the textbook's initial state at step 0.
#[derive(Debug, Clone)]
pub(crate) struct Start {
    pub(crate) particles: Particles,
    /// How many steps were already taken.
    pub(crate) step: u64,
    /// The energy correction the next step applies.
    pub(crate) correction: f64,
    /// The energy at step 0, which normalization holds the system to.
    pub(crate) initial_energy: f64,
}

impl Start {
    /// The textbook's initial state for `n` particles.
    pub(crate) fn initial(n: usize) -> Start {
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

/// One simulation to run.
#[derive(Debug, Clone)]
pub(crate) struct Run {
    pub(crate) start: Start,
    /// The total number of steps: the run ends after step `steps`.
    pub(crate) steps: u64,
    pub(crate) dt: f64,
    /// Rescale velocities every step so the energy stays at its initial value (`-e`).
    pub(crate) normalize: bool,
    /// Keep the energy after every step.
    pub(crate) log_energy: bool,
    /// The side of the box.
    pub(crate) size: f64,
}

impl Run {
    pub(crate) fn new(start: Start, steps: u64, dt: f64, normalize: bool) -> Run {
        let size = init::box_size(start.particles.len());
        Run {
            start,
            steps,
            dt,
            normalize,
            log_energy: false,
            size,
        }
    }

    pub(crate) fn remaining_steps(&self) -> std::ops::Range<u64> {
        self.start.step..self.steps
    }

    /// Whether each step must sum the energy.
    pub(crate) fn needs_energy(&self) -> bool {
        self.normalize || self.log_energy
    }

    /// The correction for the next step, given the energy after this one.
    pub(crate) fn next_correction(&self, energy: f64, current: f64) -> f64 {
        if self.normalize {
            correction(self.start.initial_energy, energy)
        } else {
            current
        }
    }

    /// An empty energy log with room for every step.
    pub(crate) fn energy_log(&self) -> Vec<f64> {
        if self.needs_energy() {
            Vec::with_capacity((self.steps - self.start.step) as usize)
        } else {
            Vec::new()
        }
    }

    /// Pair checks the run makes: every particle against every particle, every step.
    pub(crate) fn pair_checks(&self) -> f64 {
        let n = self.start.particles.len() as f64;
        n * n * (self.steps - self.start.step) as f64
    }
}

/// How the simulation is spread over workers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// One thread.
    Serial,
    /// The textbook's threads: shared positions and a barrier.
    Threads(usize),
    /// A ring of workers on the given transport.
    Ring(usize, Transport),
}

impl Mode {
    /// How the textbook names the mode in its timing line.
    pub(crate) fn describe(self) -> String {
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
pub(crate) struct Outcome {
    /// The final state, in list order.
    pub(crate) particles: Particles,
    /// The energy after each step, when the run needed it.
    pub(crate) energies: Vec<f64>,
}

/// Runs a simulation in the given mode.
pub(crate) fn simulate(run: Run, mode: Mode) -> Result<Outcome, LaunchError> {
    match mode {
        Mode::Serial => Ok(serial::simulate(&run)),
        Mode::Threads(threads) => Ok(threads::simulate(&run, threads)),
        Mode::Ring(workers, transport) => ring::simulate(run, workers, transport),
    }
}
