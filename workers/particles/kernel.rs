//! The force kernel: every target against every source, recording the pairs in range.
//!
//! Three versions that record exactly the same hits:
//! - [`direct`]: the textbook's loop translated as it stands, over an array of structs, with
//!   the whole force evaluated for every pair. Kept as the baseline the bench compares with.
//! - [`scalar`]: structure of arrays with a cheap range test first; portable.
//! - an AVX2 version, picked at run time when the CPU has AVX2: lanes are target
//!   particles, the range test `dx*dx + dy*dy <= cutoff²` runs on 16 targets at once
//!   (four 4-lane vectors), and only a lane that passes calls the scalar [`force`].
//!
//! Bit-exactness does not depend on the vector code's arithmetic: the range test only
//! picks which pairs go to the scalar [`force`], which decides on its own, with the same
//! IEEE operations as the textbook (Rust never fuses a multiply and an add). The hits come
//! out in a different order, and [`accelerations`](super::physics::accelerations) sorts
//! them, so each target still sums its sources in list order.

use super::physics::{CUTOFF2, Hit, force};

/// Sources visited per pass over the targets: 1024 sources (16 KiB of x and y) stay in
/// the L1 cache while every group of targets runs over them.
const SOURCE_CHUNK: usize = 1024;

/// Which implementation [`collect_hits`] runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kernel {
    /// The portable structure-of-arrays loop.
    Scalar,
    /// 4-lane AVX2 range tests, 16 targets at a time.
    Avx2,
}

impl Kernel {
    /// The fastest kernel this CPU runs.
    pub(crate) fn detect() -> Kernel {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            return Kernel::Avx2;
        }
        Kernel::Scalar
    }

    /// How the bench names it.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Kernel::Scalar => "scalar",
            Kernel::Avx2 => "avx2",
        }
    }

    /// Runs this kernel. A kernel the CPU lacks falls back to [`Kernel::Scalar`].
    pub(crate) fn collect_hits(
        self,
        tx: &[f64],
        ty: &[f64],
        sx: &[f64],
        sy: &[f64],
        source_base: usize,
        hits: &mut Vec<Hit>,
    ) {
        assert_eq!(tx.len(), ty.len(), "target x and y differ in length");
        assert_eq!(sx.len(), sy.len(), "source x and y differ in length");
        match self {
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2 if std::arch::is_x86_feature_detected!("avx2") => {
                // SAFETY: the CPU has AVX2, checked just above.
                unsafe { avx2::collect_hits(tx, ty, sx, sy, source_base, hits) }
            }
            _ => scalar(tx, ty, 0, sx, sy, source_base, hits),
        }
    }
}

/// Checks every target against every source and records the pairs in range, with the
/// fastest kernel this CPU runs. `source_base` is the list slot of the first source.
/// Hits come out in no particular order; sort them before summing.
pub(crate) fn collect_hits(
    tx: &[f64],
    ty: &[f64],
    sx: &[f64],
    sy: &[f64],
    source_base: usize,
    hits: &mut Vec<Hit>,
) {
    Kernel::detect().collect_hits(tx, ty, sx, sy, source_base, hits);
}

/// The portable kernel, for targets `target_base..` of the caller's block.
pub(crate) fn scalar(
    tx: &[f64],
    ty: &[f64],
    target_base: usize,
    sx: &[f64],
    sy: &[f64],
    source_base: usize,
    hits: &mut Vec<Hit>,
) {
    for (target, (&px, &py)) in tx.iter().zip(ty).enumerate() {
        for (offset, (&ox, &oy)) in sx.iter().zip(sy).enumerate() {
            let dx = ox - px;
            let dy = oy - py;
            // The cheap test first: most pairs are far apart. `force` decides exactly.
            if dx * dx + dy * dy <= CUTOFF2 {
                record(
                    hits,
                    target_base + target,
                    source_base + offset,
                    px,
                    py,
                    ox,
                    oy,
                );
            }
        }
    }
}

/// A particle as the textbook keeps it: one record with everything.
#[derive(Debug, Clone, Copy, Default)]
#[allow(
    dead_code,
    reason = "the kernel reads only x and y; the rest gives the record its real stride"
)]
pub(crate) struct Body {
    pub(crate) x: f64,
    pub(crate) y: f64,
    pub(crate) vx: f64,
    pub(crate) vy: f64,
    pub(crate) ax: f64,
    pub(crate) ay: f64,
}

/// The textbook's `apply_force` loop as it stands: every pair goes through the whole
/// force computation. The baseline for the bench; no simulation mode uses it.
pub(crate) fn direct(targets: &[Body], sources: &[Body], source_base: usize, hits: &mut Vec<Hit>) {
    for (target, p) in targets.iter().enumerate() {
        for (offset, o) in sources.iter().enumerate() {
            if let Some((ax, ay)) = force(p.x, p.y, o.x, o.y) {
                hits.push(Hit {
                    target: target as u32,
                    source: (source_base + offset) as u32,
                    ax,
                    ay,
                });
            }
        }
    }
}

/// Evaluates the force of one candidate pair and records it if it acts.
#[inline]
fn record(hits: &mut Vec<Hit>, target: usize, source: usize, px: f64, py: f64, ox: f64, oy: f64) {
    if let Some((ax, ay)) = force(px, py, ox, oy) {
        hits.push(Hit {
            target: target as u32,
            source: source as u32,
            ax,
            ay,
        });
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::{
        __m256d, _CMP_LE_OQ, _mm256_add_pd, _mm256_cmp_pd, _mm256_loadu_pd, _mm256_movemask_pd,
        _mm256_mul_pd, _mm256_or_pd, _mm256_set1_pd, _mm256_sub_pd,
    };

    use super::{CUTOFF2, Hit, SOURCE_CHUNK, record, scalar};

    /// Targets per group: four vectors of 4 lanes share each source's broadcast and one
    /// branch on the combined mask.
    const GROUP: usize = 16;

    /// # Safety
    ///
    /// The CPU must support AVX2.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn collect_hits(
        tx: &[f64],
        ty: &[f64],
        sx: &[f64],
        sy: &[f64],
        source_base: usize,
        hits: &mut Vec<Hit>,
    ) {
        debug_assert_eq!(tx.len(), ty.len());
        debug_assert_eq!(sx.len(), sy.len());
        let groups = tx.len() / GROUP;
        let cutoff2 = _mm256_set1_pd(CUTOFF2);
        let mut chunk = 0;
        while chunk < sx.len() {
            let end = (chunk + SOURCE_CHUNK).min(sx.len());
            let (cx, cy) = (&sx[chunk..end], &sy[chunk..end]);
            for group in 0..groups {
                let t = group * GROUP;
                let (gx, gy) = (&tx[t..t + GROUP], &ty[t..t + GROUP]);
                let (qx, qy) = (gx.as_chunks::<4>().0, gy.as_chunks::<4>().0);
                let (px0, px1, px2, px3) = (load(&qx[0]), load(&qx[1]), load(&qx[2]), load(&qx[3]));
                let (py0, py1, py2, py3) = (load(&qy[0]), load(&qy[1]), load(&qy[2]), load(&qy[3]));
                for (offset, (&ox, &oy)) in cx.iter().zip(cy).enumerate() {
                    let (vx, vy) = (_mm256_set1_pd(ox), _mm256_set1_pd(oy));
                    let near0 = in_range(vx, vy, px0, py0, cutoff2);
                    let near1 = in_range(vx, vy, px1, py1, cutoff2);
                    let near2 = in_range(vx, vy, px2, py2, cutoff2);
                    let near3 = in_range(vx, vy, px3, py3, cutoff2);
                    let any = _mm256_or_pd(_mm256_or_pd(near0, near1), _mm256_or_pd(near2, near3));
                    if _mm256_movemask_pd(any) != 0 {
                        let lanes = _mm256_movemask_pd(near0)
                            | (_mm256_movemask_pd(near1) << 4)
                            | (_mm256_movemask_pd(near2) << 8)
                            | (_mm256_movemask_pd(near3) << 12);
                        hits_in_lanes(hits, lanes, t, gx, gy, chunk + source_base + offset, ox, oy);
                    }
                }
            }
            chunk = end;
        }
        let done = groups * GROUP;
        scalar(&tx[done..], &ty[done..], done, sx, sy, source_base, hits);
    }

    #[inline]
    #[target_feature(enable = "avx2")]
    fn load(lanes: &[f64; 4]) -> __m256d {
        // SAFETY: the load reads exactly the 4 elements of `lanes`; it needs no alignment.
        unsafe { _mm256_loadu_pd(lanes.as_ptr()) }
    }

    /// The range test on 4 lanes, with the scalar test's operations in the scalar test's
    /// order: `(o - p)² + (o - p)² <= cutoff²`, each rounded separately.
    #[inline]
    #[target_feature(enable = "avx2")]
    fn in_range(ox: __m256d, oy: __m256d, px: __m256d, py: __m256d, cutoff2: __m256d) -> __m256d {
        let dx = _mm256_sub_pd(ox, px);
        let dy = _mm256_sub_pd(oy, py);
        let r2 = _mm256_add_pd(_mm256_mul_pd(dx, dx), _mm256_mul_pd(dy, dy));
        _mm256_cmp_pd::<_CMP_LE_OQ>(r2, cutoff2)
    }

    /// The rare path: the scalar force for each lane whose range test passed.
    #[cold]
    #[inline(never)]
    #[expect(
        clippy::too_many_arguments,
        reason = "a hot loop's state, passed by value"
    )]
    fn hits_in_lanes(
        hits: &mut Vec<Hit>,
        mut lanes: i32,
        first: usize,
        gx: &[f64],
        gy: &[f64],
        source: usize,
        ox: f64,
        oy: f64,
    ) {
        while lanes != 0 {
            let lane = lanes.trailing_zeros() as usize;
            lanes &= lanes - 1;
            record(hits, first + lane, source, gx[lane], gy[lane], ox, oy);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::physics::CUTOFF;
    use super::*;

    /// A seeded generator, so every run tests the same inputs.
    struct Lcg(u64);

    impl Lcg {
        fn unit(&mut self) -> f64 {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (self.0 >> 11) as f64 / (1u64 << 53) as f64
        }
    }

    fn sorted(mut hits: Vec<Hit>) -> Vec<(u32, u32, u64, u64)> {
        hits.sort_unstable_by_key(|h| (h.target, h.source));
        hits.iter()
            .map(|h| (h.target, h.source, h.ax.to_bits(), h.ay.to_bits()))
            .collect()
    }

    fn bodies(x: &[f64], y: &[f64]) -> Vec<Body> {
        x.iter()
            .zip(y)
            .map(|(&x, &y)| Body {
                x,
                y,
                ..Body::default()
            })
            .collect()
    }

    /// Every kernel, on the same input, gives the same hits to the bit.
    fn assert_kernels_agree(tx: &[f64], ty: &[f64], sx: &[f64], sy: &[f64], base: usize) -> usize {
        let mut reference = Vec::new();
        scalar(tx, ty, 0, sx, sy, base, &mut reference);
        let reference = sorted(reference);
        let mut textbook = Vec::new();
        direct(&bodies(tx, ty), &bodies(sx, sy), base, &mut textbook);
        assert_eq!(sorted(textbook), reference, "direct kernel");
        for kernel in [Kernel::Scalar, Kernel::Avx2, Kernel::detect()] {
            let mut got = Vec::new();
            kernel.collect_hits(tx, ty, sx, sy, base, &mut got);
            assert_eq!(sorted(got), reference, "{} kernel", kernel.name());
        }
        reference.len()
    }

    #[test]
    fn vector_kernel_matches_scalar_on_random_blocks_of_every_length() {
        let mut rng = Lcg(1000);
        let mut total = 0;
        // Dense enough that about one pair in 30 is in range, so the hit path runs often.
        for (targets, sources) in [
            (0, 5),
            (5, 0),
            (1, 1),
            (7, 9),
            (16, 8),
            (17, 31),
            (33, 1030),
            (100, 2100),
        ] {
            let side = 0.05;
            let mut coords = |k: usize| (0..k).map(|_| rng.unit() * side).collect::<Vec<_>>();
            let (tx, ty) = (coords(targets), coords(targets));
            let (sx, sy) = (coords(sources), coords(sources));
            total += assert_kernels_agree(&tx, &ty, &sx, &sy, 17);
        }
        assert!(
            total > 1000,
            "the inputs should produce many hits, got {total}"
        );
    }

    #[test]
    fn vector_kernel_matches_scalar_on_edge_cases() {
        // Coincident points, distances exactly at the cutoff, just inside and outside it,
        // below the clamp distance, and a block checked against itself.
        let at = [
            (0.5, 0.5),
            (0.5, 0.5),
            (0.5 + CUTOFF, 0.5),
            (0.5, 0.5 - CUTOFF),
            (0.5 + CUTOFF * (1.0 - 1e-15), 0.5),
            (0.5 + CUTOFF * (1.0 + 1e-15), 0.5),
            (0.5 + 1e-6, 0.5 + 1e-6),
            (0.0, 0.0),
            (CUTOFF, 0.0),
            (0.0, CUTOFF),
            (0.25, 0.0),
            (0.25 + 0.006, 0.008),
            (1.0, 1.0),
        ];
        // Three copies: enough targets for two whole vector groups and a remainder.
        let x: Vec<f64> = at.iter().cycle().take(3 * at.len()).map(|p| p.0).collect();
        let y: Vec<f64> = at.iter().cycle().take(3 * at.len()).map(|p| p.1).collect();
        let hits = assert_kernels_agree(&x, &y, &x, &y, 0);
        assert!(hits >= 8, "the edge cases should interact, got {hits} hits");
        // Shifted so each lane of a 16-wide group meets each edge case.
        let (ex, ey) = (&x[..at.len()], &y[..at.len()]);
        for shift in 1..=16 {
            let (tx, ty) = (&x[shift..], &y[shift..]);
            assert_kernels_agree(tx, ty, ex, ey, 3);
            assert_kernels_agree(ex, ey, tx, ty, 3);
        }
    }
}
