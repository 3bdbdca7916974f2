//! The multiprocess simulation: a ring of workers, each owning one block of particles.
//! Every step the positions rotate once around the ring, so every worker applies the forces
//! of every block to its own particles, with no shared memory.

use std::sync::Arc;

use ringleader::{Coordinator, Gather, LaunchError, Launcher, Ring, Stage, StageError, Transport};

use super::physics::{Particles, accelerations, advance, collect_hits, divide, sum_in_order};
use super::{Outcome, Run};

/// The particle stage. Workers read the shared configuration; the coordinator's copy also
/// sums the energy each step.
#[derive(Clone)]
pub(crate) struct ParticleRing {
    run: Arc<Run>,
    blocks: Arc<Vec<std::ops::Range<usize>>>,
    // The coordinator's state.
    gather: Gather<Vec<f64>>,
    energies: Vec<f64>,
    correction: f64,
}

impl Stage for ParticleRing {
    type Message = ();
    /// Each particle's kinetic energy after a step, in list order.
    type Report = Vec<f64>;
    /// The energy correction for the next step.
    type Answer = f64;
    type Output = Particles;

    fn work(self, ring: &mut Ring<Self>) -> Result<Particles, StageError> {
        let run = &self.run;
        let range = self.blocks[ring.rank()].clone();
        let mut mine = run.start.particles.slice(range.clone());
        let m = mine.len();
        // Positions travel as one block: all x, then all y.
        let mut positions = vec![0.0; 2 * m];
        let (mut ax, mut ay) = (vec![0.0; m], vec![0.0; m]);
        let mut hits = Vec::new();
        let mut correction = run.start.correction;
        for step in run.remaining_steps() {
            ring.set_step(step + 1);
            positions[..m].copy_from_slice(&mine.x);
            positions[m..].copy_from_slice(&mine.y);
            hits.clear();
            ring.rotate(&positions, |origin, block: &[f64]| {
                let (sx, sy) = block.split_at(block.len() / 2);
                let base = self.blocks[origin].start;
                collect_hits(&mine.x, &mine.y, sx, sy, base, &mut hits);
            })?;
            accelerations(&mut hits, &mut ax, &mut ay);
            advance(&mut mine, &ax, &ay, run.dt, run.size, correction);
            if run.needs_energy() {
                let terms: Vec<f64> = mine.energy_terms().collect();
                if run.normalize {
                    correction = ring.ask(terms)?;
                } else {
                    ring.report(terms)?;
                }
            }
        }
        Ok(mine)
    }

    fn on_report(
        &mut self,
        from: usize,
        terms: Vec<f64>,
        coordinator: &mut Coordinator<'_, Self>,
    ) -> Result<(), StageError> {
        if let Some(blocks) = self.gather.push(from, terms) {
            // Blocks are contiguous runs of list order, so rank order is list order.
            let energy = sum_in_order(blocks.into_iter().flatten());
            self.correction = self.run.next_correction(energy, self.correction);
            self.energies.push(energy);
            if self.run.normalize {
                coordinator.broadcast(self.correction)?;
            }
        }
        Ok(())
    }
}

pub(crate) fn simulate(
    run: Run,
    workers: usize,
    transport: Transport,
) -> Result<Outcome, LaunchError> {
    let blocks = divide(run.start.particles.len(), workers);
    let mut stage = ParticleRing {
        energies: run.energy_log(),
        correction: run.start.correction,
        run: Arc::new(run),
        blocks: Arc::new(blocks),
        gather: Gather::new(workers),
    };
    let outputs = Launcher::new()
        .workers(workers)
        .transport(transport)
        .launch(&mut stage)?;
    let mut particles = Particles::with_capacity(stage.run.start.particles.len());
    for block in outputs {
        particles.extend(block);
    }
    Ok(Outcome {
        particles,
        energies: stage.energies,
    })
}
