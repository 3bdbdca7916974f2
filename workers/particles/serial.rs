//! The serial simulation: one loop over all pairs.

use super::physics::{accelerations, advance, collect_hits};
use super::{Outcome, Run};

pub(crate) fn simulate(run: &Run) -> Outcome {
    let mut particles = run.start.particles.clone();
    let n = particles.len();
    let (mut ax, mut ay) = (vec![0.0; n], vec![0.0; n]);
    let mut hits = Vec::new();
    let mut energies = run.energy_log();
    let mut correction = run.start.correction;
    for _step in run.remaining_steps() {
        hits.clear();
        collect_hits(
            &particles.x,
            &particles.y,
            &particles.x,
            &particles.y,
            0,
            &mut hits,
        );
        accelerations(&mut hits, &mut ax, &mut ay);
        advance(&mut particles, &ax, &ay, run.dt, run.size, correction);
        if run.needs_energy() {
            let energy = particles.energy();
            correction = run.next_correction(energy, correction);
            energies.push(energy);
        }
    }
    Outcome {
        particles,
        energies,
    }
}
