//! The final state as CSV: `id,x,y,vx,vy`, sorted by id, shortest round-trip floats.

use std::io::{self, Write};

use super::physics::Particles;

/// Writes `particles` sorted by id. Rust's `{}` for `f64` is the shortest decimal that
/// parses back to the same bits, as Python's `repr` is.
pub fn write_csv(particles: &Particles, out: &mut (impl Write + ?Sized)) -> io::Result<()> {
    let mut order: Vec<usize> = (0..particles.len()).collect();
    order.sort_unstable_by_key(|&slot| particles.ids[slot]);
    writeln!(out, "id,x,y,vx,vy")?;
    for slot in order {
        writeln!(
            out,
            "{},{:?},{:?},{:?},{:?}",
            particles.ids[slot],
            particles.x[slot],
            particles.y[slot],
            particles.vx[slot],
            particles.vy[slot]
        )?;
    }
    Ok(())
}

/// Writes the energy after each step as `step,energy`, numbering from `first_step`.
pub fn write_energy_log(
    energies: &[f64],
    first_step: u64,
    out: &mut (impl Write + ?Sized),
) -> io::Result<()> {
    writeln!(out, "step,energy")?;
    for (step, energy) in (first_step..).zip(energies) {
        writeln!(out, "{step},{energy:?}")?;
    }
    Ok(())
}
