//! The textbook's physics, operation for operation: the same IEEE operations in the same
//! order, so every mode gives the same bits.

/// Particles per unit area.
pub const DENSITY: f64 = 0.0005;
/// Mass of every particle.
pub const MASS: f64 = 0.01;
/// The force acts only within this distance.
pub const CUTOFF: f64 = 0.01;
/// `min_r = cutoff / 100`; squared distances are clamped to at least this.
pub const MIN_R2: f64 = (CUTOFF / 100.0) * (CUTOFF / 100.0);
/// `cutoff * cutoff`, as the original compares it.
pub const CUTOFF2: f64 = CUTOFF * CUTOFF;
/// The textbook's default step length.
pub const DEFAULT_DT: f64 = 0.0005;
/// How far outside the box, in box widths, a particle may land in one step. The textbook
/// reflects it back one wall at a time, which for an absurd step length (`--dt 1e300`)
/// would take forever; beyond this the run stops with [`Escaped`] instead.
const FURTHEST: f64 = 1e6;

/// A particle landed more than `FURTHEST` box widths outside the box (or off the number
/// line) in one step: see [`advance`]. A worker returns it as it is, and the framework adds
/// the step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "a particle moved more than a million box widths in one step; \
     the step length (--dt) is too large"
)]
pub struct Escaped;

/// Particles in list order, as a structure of arrays.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Particles {
    pub ids: Vec<u32>,
    pub x: Vec<f64>,
    pub y: Vec<f64>,
    pub vx: Vec<f64>,
    pub vy: Vec<f64>,
}

impl Particles {
    pub fn with_capacity(n: usize) -> Self {
        Particles {
            ids: Vec::with_capacity(n),
            x: Vec::with_capacity(n),
            y: Vec::with_capacity(n),
            vx: Vec::with_capacity(n),
            vy: Vec::with_capacity(n),
        }
    }

    /// How many particles there are.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    pub fn push(&mut self, id: u32, x: f64, y: f64, vx: f64, vy: f64) {
        self.ids.push(id);
        self.x.push(x);
        self.y.push(y);
        self.vx.push(vx);
        self.vy.push(vy);
    }

    /// A copy of the particles in list slots `range`.
    pub fn slice(&self, range: std::ops::Range<usize>) -> Particles {
        Particles {
            ids: self.ids[range.clone()].to_vec(),
            x: self.x[range.clone()].to_vec(),
            y: self.y[range.clone()].to_vec(),
            vx: self.vx[range.clone()].to_vec(),
            vy: self.vy[range].to_vec(),
        }
    }

    /// Appends `other`'s particles after these, keeping list order.
    pub fn extend(&mut self, other: Particles) {
        self.ids.extend(other.ids);
        self.x.extend(other.x);
        self.y.extend(other.y);
        self.vx.extend(other.vx);
        self.vy.extend(other.vy);
    }

    /// Kinetic energy, summed in list order.
    pub fn energy(&self) -> f64 {
        sum_in_order(self.energy_terms())
    }

    /// Each particle's kinetic energy, in list order.
    pub fn energy_terms(&self) -> impl Iterator<Item = f64> + '_ {
        self.vx
            .iter()
            .zip(&self.vy)
            .map(|(&vx, &vy)| energy_term(vx, vy))
    }
}

/// One particle's kinetic energy, `0.5 * mass * (vx² + vy²)` evaluated left to right.
pub fn energy_term(vx: f64, vy: f64) -> f64 {
    0.5 * MASS * (vx * vx + vy * vy)
}

/// A sequential sum, starting from zero: the order is part of the result.
pub fn sum_in_order(terms: impl IntoIterator<Item = f64>) -> f64 {
    terms.into_iter().fold(0.0, |sum, term| sum + term)
}

/// The energy correction from the initial and the current energy.
pub fn correction(initial_energy: f64, energy: f64) -> f64 {
    (initial_energy / energy).sqrt()
}

/// The force on a particle at (px, py) from one at (ox, oy), if they interact: the
/// acceleration's contribution `(coef * dx, coef * dy)`.
#[inline]
pub fn force(px: f64, py: f64, ox: f64, oy: f64) -> Option<(f64, f64)> {
    let dx = ox - px;
    let dy = oy - py;
    if dx == 0.0 && dy == 0.0 {
        return None;
    }
    let r2 = (dx * dx + dy * dy).max(MIN_R2);
    if r2 > CUTOFF2 {
        return None;
    }
    let r = r2.sqrt();
    let coef = (1.0 - CUTOFF / r) / r2 / MASS;
    Some((coef * dx, coef * dy))
}

/// One in-range pair: the contribution of source slot `source` to target `target`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Hit {
    pub target: u32,
    pub source: u32,
    pub ax: f64,
    pub ay: f64,
}

/// Checks every target against every source and records the pairs in range, with the
/// fastest kernel this CPU runs (see [`kernel`](super::kernel)). `source_base` is the list
/// slot of the first source. Hits come out in no particular order:
/// [`accelerations`] sorts them.
pub fn collect_hits(
    tx: &[f64],
    ty: &[f64],
    sx: &[f64],
    sy: &[f64],
    source_base: usize,
    hits: &mut Vec<Hit>,
) {
    super::kernel::collect_hits(tx, ty, sx, sy, source_base, hits);
}

/// Sums the hits into accelerations, for each target in list order of its sources, whatever
/// order the sources were visited in.
pub fn accelerations(hits: &mut [Hit], ax: &mut [f64], ay: &mut [f64]) {
    hits.sort_unstable_by_key(|hit| (hit.target, hit.source));
    ax.fill(0.0);
    ay.fill(0.0);
    for hit in hits.iter() {
        let t = hit.target as usize;
        ax[t] += hit.ax;
        ay[t] += hit.ay;
    }
}

/// Moves particles by one step: accelerate, move, bounce off the walls, then apply the
/// energy correction. [`Escaped`] if a particle flew too far to bounce back (the others
/// may have moved or not: the run is over).
pub fn advance(
    p: &mut Particles,
    ax: &[f64],
    ay: &[f64],
    dt: f64,
    size: f64,
    correction: f64,
) -> Result<(), Escaped> {
    let motion = Motion {
        dt,
        size,
        correction,
    };
    for i in 0..p.len() {
        let (mut x, mut y, mut vx, mut vy) = (p.x[i], p.y[i], p.vx[i], p.vy[i]);
        motion.apply(&mut x, &mut y, &mut vx, &mut vy, ax[i], ay[i])?;
        (p.x[i], p.y[i], p.vx[i], p.vy[i]) = (x, y, vx, vy);
    }
    Ok(())
}

/// What moves a particle through one step, given its acceleration.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Motion {
    pub dt: f64,
    /// The side of the box.
    pub size: f64,
    /// The energy correction this step applies.
    pub correction: f64,
}

impl Motion {
    /// One particle's part of [`advance`]: accelerate, move, bounce, correct.
    #[inline]
    pub fn apply(
        self,
        x: &mut f64,
        y: &mut f64,
        vx: &mut f64,
        vy: &mut f64,
        ax: f64,
        ay: f64,
    ) -> Result<(), Escaped> {
        *vx += ax * self.dt;
        *vy += ay * self.dt;
        *x += *vx * self.dt;
        *y += *vy * self.dt;
        bounce(x, vx, self.size)?;
        bounce(y, vy, self.size)?;
        *vx *= self.correction;
        *vy *= self.correction;
        Ok(())
    }
}

#[inline]
fn bounce(position: &mut f64, velocity: &mut f64, size: f64) -> Result<(), Escaped> {
    // Nearly every particle is still in the box: one test, and nothing to do.
    if *position >= 0.0 && *position <= size {
        return Ok(());
    }
    // Written so that NaN fails it too.
    if !(*position >= -FURTHEST * size && *position <= (FURTHEST + 1.0) * size) {
        return Err(Escaped);
    }
    while *position < 0.0 || *position > size {
        *position = if *position < 0.0 {
            -*position
        } else {
            2.0 * size - *position
        };
        *velocity = -*velocity;
    }
    Ok(())
}

/// Splits `n` items into `parts` contiguous blocks, the first `n % parts` one longer: the
/// original `divide_items`.
pub fn divide(n: usize, parts: usize) -> Vec<std::ops::Range<usize>> {
    let (base, extra) = (n / parts, n % parts);
    let mut start = 0;
    (0..parts)
        .map(|part| {
            let len = base + usize::from(part < extra);
            let range = start..start + len;
            start += len;
            range
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn min_r2_is_the_square_computed_by_multiplication() {
        assert_eq!(
            MIN_R2.to_bits(),
            ((0.01f64 / 100.0) * (0.01 / 100.0)).to_bits()
        );
        assert_eq!(MIN_R2.to_bits(), (0.01f64 / 100.0).powi(2).to_bits());
    }

    #[test]
    fn divide_gives_the_first_blocks_the_remainder() {
        assert_eq!(divide(10, 3), vec![0..4, 4..7, 7..10]);
        assert_eq!(divide(3, 3), vec![0..1, 1..2, 2..3]);
        assert_eq!(divide(2, 4), vec![0..1, 1..2, 2..2, 2..2]);
    }

    #[test]
    fn no_force_on_itself_and_none_out_of_range() {
        assert_eq!(force(0.5, 0.5, 0.5, 0.5), None);
        assert_eq!(force(0.0, 0.0, 0.02, 0.0), None);
        let (ax, ay) = force(0.0, 0.0, 0.005, 0.0).unwrap();
        assert!(ax < 0.0, "the force repels");
        assert_eq!(ay, 0.0);
    }

    #[test]
    fn accelerations_sum_in_source_order_whatever_the_visit_order() {
        let mut forward = vec![
            Hit {
                target: 0,
                source: 1,
                ax: 1e-16,
                ay: 0.0,
            },
            Hit {
                target: 0,
                source: 2,
                ax: 1.0,
                ay: 0.0,
            },
            Hit {
                target: 0,
                source: 3,
                ax: -1.0,
                ay: 0.0,
            },
        ];
        let mut reversed: Vec<Hit> = forward.iter().rev().copied().collect();
        let (mut a1, mut b1) = (vec![0.0], vec![0.0]);
        let (mut a2, mut b2) = (vec![0.0], vec![0.0]);
        accelerations(&mut forward, &mut a1, &mut b1);
        accelerations(&mut reversed, &mut a2, &mut b2);
        assert_eq!(a1[0].to_bits(), a2[0].to_bits());
        // (1e-16 + 1) - 1 is 0 in f64; summed the other way round it would be 1e-16.
        assert_eq!(a1[0], 0.0);
    }

    #[test]
    fn bounce_reflects_off_both_walls() {
        let (mut x, mut v) = (-0.1, -1.0);
        bounce(&mut x, &mut v, 1.0).unwrap();
        assert_eq!((x, v), (0.1, 1.0));
        let (mut x, mut v) = (1.25, 1.0);
        bounce(&mut x, &mut v, 1.0).unwrap();
        assert_eq!((x, v), (0.75, -1.0));
        // Several walls in one step, as the textbook's loop does it.
        let (mut x, mut v) = (5.25, 1.0);
        bounce(&mut x, &mut v, 1.0).unwrap();
        assert_eq!((x, v), (0.75, -1.0));
    }

    #[test]
    fn a_particle_too_far_out_escapes_instead_of_bouncing_forever() {
        for far in [
            1e300,
            -1e300,
            f64::INFINITY,
            f64::NEG_INFINITY,
            f64::NAN,
            2e6,
        ] {
            let (mut x, mut v) = (far, 1.0);
            assert_eq!(bounce(&mut x, &mut v, 1.0), Err(Escaped), "{far}");
        }
        let (mut x, mut v) = (-999_999.5, -1.0);
        assert_eq!(bounce(&mut x, &mut v, 1.0), Ok(()));
        assert!((0.0..=1.0).contains(&x));
    }
}
