//! The serial simulation: one loop over all pairs.

use super::physics::{Runaway, accelerations, advance, collect_hits};
use super::{Outcome, Owners, Run, Tally, Watch};

pub(crate) fn simulate(
    run: &Run,
    watch: Box<dyn Watch>,
) -> Result<(Outcome, Box<dyn Watch>), Runaway> {
    let mut particles = run.start.particles.clone();
    let n = particles.len();
    // One block: the whole list.
    let all = Owners::single(n);
    let (mut ax, mut ay) = (vec![0.0; n], vec![0.0; n]);
    let mut hits = Vec::new();
    let mut tally = Tally::new(run, watch);
    let mut correction = run.start.correction;
    for step in run.remaining_steps() {
        let step = step + 1;
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
        advance(&mut particles, &ax, &ay, run.dt, run.size, correction)
            .map_err(|escaped| escaped.at(step))?;
        if run.reports_after(step) {
            let energy = run.needs_energy().then(|| particles.energy());
            let snapshot = run.snapshot_due(step).then_some((&particles, &all));
            correction = tally.after_step(run, step, energy, snapshot);
        }
        if tally.stop_on_signal(step) {
            break;
        }
    }
    Ok(tally.finish(particles, Vec::new()))
}
