//! The force kernel: every target against every source, recording the pairs in range.
//!
//! Versions that record exactly the same hits:
//! - [`direct`]: the textbook's loop translated as it stands, over an array of structs, with
//!   the whole force evaluated for every pair. Kept as the baseline the bench compares with.
//! - [`scalar`]: structure of arrays with a cheap range test first; portable.
//! - `avx2`: lanes are target particles, the range test `dx*dx + dy*dy <= cutoff²` runs in
//!   f64 on 16 targets at once (four 4-lane vectors), and only a lane that passes calls the
//!   scalar [`force`].
//! - `f32-avx2` and `f32-avx512`: the same shape with a conservative f32 prefilter on 8 or
//!   16 lanes, whose radius is enlarged by a proven margin (see the `narrow` module) so that it
//!   never drops a pair the f64 test keeps. The fastest; picked at run time.
//!
//! Bit-exactness does not depend on the vector code's arithmetic: a range test, in either
//! precision, only picks which pairs go to the scalar [`force`], which decides on its own,
//! with the same IEEE operations as the textbook (Rust never fuses a multiply and an add).
//! A prefilter may let through more pairs than the f64 test would, never fewer. The hits
//! come out in a different order, and [`accelerations`](super::physics::accelerations)
//! sorts them, so each target still sums its sources in list order.

use super::physics::{CUTOFF2, Hit, force};

/// Sources visited per pass over the targets: 1024 sources (16 KiB of x and y) stay in
/// the L1 cache while every group of targets runs over them.
const SOURCE_CHUNK: usize = 1024;

/// The same for the f32 kernels: 2048 sources are 16 KiB of x and y in f32.
const NARROW_SOURCE_CHUNK: usize = 2048;

/// Which implementation [`collect_hits`] runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kernel {
    /// The portable structure-of-arrays loop.
    Scalar,
    /// 4-lane f64 AVX2 range tests, 16 targets at a time.
    Avx2,
    /// The f32 prefilter on 8-lane AVX2 vectors (with FMA), 32 targets at a time.
    F32Avx2,
    /// The f32 prefilter on 16-lane AVX-512 vectors, 64 targets at a time.
    F32Avx512,
}

impl Kernel {
    /// Every kernel, the portable one first.
    pub const ALL: [Kernel; 4] = [
        Kernel::Scalar,
        Kernel::Avx2,
        Kernel::F32Avx2,
        Kernel::F32Avx512,
    ];

    /// The fastest kernel this CPU runs.
    pub fn detect() -> Kernel {
        Kernel::ALL
            .into_iter()
            .rev()
            .find(|kernel| kernel.supported())
            .unwrap_or(Kernel::Scalar)
    }

    /// The kernels this CPU runs, the portable one first.
    pub fn supported_kernels() -> Vec<Kernel> {
        Kernel::ALL.into_iter().filter(|k| k.supported()).collect()
    }

    /// Whether this CPU has what the kernel needs.
    pub fn supported(self) -> bool {
        match self {
            Kernel::Scalar => true,
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2 => std::arch::is_x86_feature_detected!("avx2"),
            #[cfg(target_arch = "x86_64")]
            Kernel::F32Avx2 => {
                std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
            }
            #[cfg(target_arch = "x86_64")]
            Kernel::F32Avx512 => {
                std::arch::is_x86_feature_detected!("avx512f")
                    && std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
            }
            #[cfg(not(target_arch = "x86_64"))]
            _ => false,
        }
    }

    /// How the bench names it.
    pub fn name(self) -> &'static str {
        match self {
            Kernel::Scalar => "scalar",
            Kernel::Avx2 => "avx2",
            Kernel::F32Avx2 => "f32-avx2",
            Kernel::F32Avx512 => "f32-avx512",
        }
    }

    /// Runs this kernel. A kernel the CPU lacks falls back to [`Kernel::Scalar`]; an f32
    /// kernel whose coordinates are too large for its margin (see the `narrow` module) falls back to
    /// the f64 ones.
    pub fn collect_hits(
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
        if !self.supported() {
            return scalar(tx, ty, 0, sx, sy, source_base, hits);
        }
        let exact = Exact {
            tx,
            ty,
            sx,
            sy,
            source_base,
        };
        match self {
            #[cfg(target_arch = "x86_64")]
            Kernel::F32Avx512 => {
                if let Some(narrow) = narrow(&exact, f32_avx512::GROUP) {
                    // SAFETY: `supported` checked that the CPU has AVX-512F, AVX2 and FMA.
                    return unsafe { f32_avx512::collect_hits(&exact, &narrow, hits) };
                }
            }
            #[cfg(target_arch = "x86_64")]
            Kernel::F32Avx2 => {
                if let Some(narrow) = narrow(&exact, f32_avx2::GROUP) {
                    // SAFETY: `supported` checked that the CPU has AVX2 and FMA.
                    return unsafe { f32_avx2::collect_hits(&exact, &narrow, hits) };
                }
            }
            _ => {}
        }
        // The f64 kernels: asked for, or an f32 kernel's fallback.
        #[cfg(target_arch = "x86_64")]
        if self != Kernel::Scalar && Kernel::Avx2.supported() {
            // SAFETY: the CPU has AVX2, checked just above.
            return unsafe { avx2::collect_hits(tx, ty, sx, sy, source_base, hits) };
        }
        scalar(tx, ty, 0, sx, sy, source_base, hits)
    }
}

/// Checks every target against every source and records the pairs in range, with the
/// fastest kernel this CPU runs. `source_base` is the list slot of the first source.
/// Hits come out in no particular order; sort them before summing.
pub fn collect_hits(
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
pub fn scalar(
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
pub struct Body {
    pub x: f64,
    pub y: f64,
    pub vx: f64,
    pub vy: f64,
    pub ax: f64,
    pub ay: f64,
}

/// The textbook's `apply_force` loop as it stands: every pair goes through the whole
/// force computation. The baseline for the bench; no simulation mode uses it.
pub fn direct(targets: &[Body], sources: &[Body], source_base: usize, hits: &mut Vec<Hit>) {
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

/// The caller's coordinates, in f64: what [`force`] decides on.
#[derive(Debug, Clone, Copy)]
struct Exact<'a> {
    tx: &'a [f64],
    ty: &'a [f64],
    sx: &'a [f64],
    sy: &'a [f64],
    /// The list slot of the first source.
    source_base: usize,
}

/// The f32 kernels' rare path: the exact force for each candidate lane (bit `k` of `lanes`
/// is target `first + k`) against source `source` of the chunk's block. Lanes past the
/// last target are padding; their coordinates are far from every source, but they are
/// skipped here all the same.
#[cold]
#[inline(never)]
fn hits_in_lanes(hits: &mut Vec<Hit>, mut lanes: u64, first: usize, exact: &Exact, source: usize) {
    let (ox, oy) = (exact.sx[source], exact.sy[source]);
    while lanes != 0 {
        let target = first + lanes.trailing_zeros() as usize;
        lanes &= lanes - 1;
        if let (Some(&px), Some(&py)) = (exact.tx.get(target), exact.ty.get(target)) {
            record(hits, target, exact.source_base + source, px, py, ox, oy);
        }
    }
}

/// The largest coordinate, in magnitude, the f32 prefilter accepts: beyond it (or for a
/// coordinate that is not finite) [`narrow`] declines and the f64 kernels run. At this
/// bound the prefilter's radius is 7% above the cutoff, so it still passes few pairs more
/// than the exact test (15% more, by area, where particles are spread evenly). The margin
/// grows with the coordinates (see [`threshold`]): keeping its `ε = 2⁻²³ · M` under
/// `cutoff / 16` gives `M ≤ 2¹⁹ · cutoff ≈ 5243`, rounded down here to a power of two.
/// A textbook box of side `sqrt(0.0005 · n)` reaches it only at n ≈ 3.4e10, beyond the
/// 2³² list slots a [`Hit`] can name, so every state the simulator can hold in its box
/// runs the prefilter.
const NARROW_MAX_COORD: f64 = 4096.0;

/// Where padding targets sit: 1e18 from every real source (|coordinate| ≤ 4096), so
/// `1e36` in the squared distance, far above the threshold and far below `f32::MAX`.
const PADDING: f32 = 1e18;

/// Coordinates rounded to f32 for the prefilter, targets padded with [`PADDING`] to a
/// whole number of groups, and the squared radius the prefilter compares with.
#[derive(Debug)]
struct Narrow {
    tx: Vec<f32>,
    ty: Vec<f32>,
    sx: Vec<f32>,
    sy: Vec<f32>,
    threshold: f32,
}

/// Rounds the coordinates to f32 for a kernel with `group` targets per group, with the
/// threshold [`threshold`] proves safe for them; `None` when some coordinate is larger
/// than [`NARROW_MAX_COORD`] in magnitude, or not finite.
fn narrow(exact: &Exact, group: usize) -> Option<Narrow> {
    let mut largest = 0.0f64;
    let mut round = |values: &[f64], padded: usize| -> Option<Vec<f32>> {
        let mut out = Vec::with_capacity(padded);
        for &v in values {
            if v.is_nan() || v.abs() > NARROW_MAX_COORD {
                return None;
            }
            largest = largest.max(v.abs());
            out.push(v as f32);
        }
        out.resize(padded, PADDING);
        Some(out)
    };
    let padded = exact.tx.len().div_ceil(group) * group;
    let (tx, ty) = (round(exact.tx, padded)?, round(exact.ty, padded)?);
    let (sx, sy) = (
        round(exact.sx, exact.sx.len())?,
        round(exact.sy, exact.sy.len())?,
    );
    Some(Narrow {
        tx,
        ty,
        sx,
        sy,
        threshold: threshold(largest),
    })
}

/// The squared radius of the f32 prefilter for coordinates of magnitude at most `largest`
/// (at most [`NARROW_MAX_COORD`]): no pair the exact f64 test accepts fails
/// the prefilter against it (the kernels' lanes; `prefilter_passes` in the tests).
///
/// # Why no pair in range is missed
///
/// Write `u = 2⁻²⁴` and `v = 2⁻⁵³` for the unit roundoffs of f32 and f64, `C` for
/// [`CUTOFF2`] and `M` for `largest`. Take a pair with real differences `a = ox - px`,
/// `b = oy - py` and distance `D = sqrt(a² + b²)`.
///
/// 1. *What the f64 test accepts.* [`force`] acts only if `fl(fl(fl(a)²) + fl(fl(b)²)) ≤ C`
///    (the clamp to `MIN_R2 < C` changes nothing there). A difference of two floats has
///    relative error at most `v` (exact when the result is subnormal); a square or a sum
///    of non-negative terms at most `v`, or `2⁻¹⁰⁷⁵` absolute below the normal range. So
///    `(1 - v)⁴ D² - 2⁻¹⁰⁷³ ≤ C`, and `D ≤ D₀ = sqrt(C)·(1 + 2⁻⁵⁰)`.
/// 2. *Rounding the coordinates to f32.* Each moves by at most `u·M + 2⁻¹⁵⁰` (the second
///    term for the subnormal range), so the f32 difference before rounding is within
///    `ε = 2(u·M + 2⁻¹⁵⁰)` of the real one, and after rounding (exact if subnormal)
///    `|ã| ≤ (1 + u)(|a| + ε)`, likewise `|b̃|`. Hence, with `|a| + |b| ≤ √2·D`,
///    `ã² + b̃² ≤ (1 + u)²(D² + 2ε(|a| + |b|) + 2ε²) ≤ (1 + u)²(D + √2·ε)²`.
/// 3. *The test.* The kernel computes `s = fl(T - b̃²)` and `r = fl(s - ã²)`, each one fused
///    multiply-add (one rounding), and passes the pair when `r`'s sign bit is clear. If
///    `ã² + b̃² ≤ (1 - u)T`, then `T - b̃² ≥ uT > 0`, so `s ≥ (1 - u)(T - b̃²)` is positive
///    and `s - ã² ≥ (1 - u)T - b̃² - ã² ≥ 0`: round-to-nearest never makes a non-negative
///    result negative, and an exact zero of `s - ã²` with `s > 0` is `+0`. So `r` passes.
/// 4. *The threshold.* By 1 to 3, every pair the f64 test accepts passes when
///    `T ≥ (1 + u)²/(1 - u) · (D₀ + √2·ε)²`. Below, `T` is `(D₀ + 1.5·ε)²·(1 + 2⁻²⁰)`
///    computed in f64 and rounded up to an f32: `(1 + u)²/(1 - u) < 1 + 2⁻²²`, and the
///    factor `1 + 2⁻²⁰` also covers the dozen f64 roundings of this computation.
///
/// Nothing overflows: `|ã|, |b̃| ≤ 2M(1 + u) + ε`, whose square is below `1e8` for
/// `M ≤ 4096`, and the padding's `1e36` is below `f32::MAX`.
///
/// # How much it lets through
///
/// At `n = 16000` the box's side is `2.83`, so `ε = 3.4e-7` and the radius `sqrt(T)`
/// exceeds the cutoff by 0.005%: nearly every candidate is a real neighbour or the
/// target itself. At `M = 4096`, `ε ≈ cutoff / 20` and the radius is 7% above the cutoff.
fn threshold(largest: f64) -> f32 {
    debug_assert!((0.0..=NARROW_MAX_COORD).contains(&largest), "{largest}");
    let u = f64::powi(2.0, -24);
    let epsilon = 2.0 * (u * largest + f64::powi(2.0, -150));
    let d0 = CUTOFF2.sqrt() * (1.0 + f64::powi(2.0, -50));
    let radius = d0 + 1.5 * epsilon;
    let bound = radius * radius * (1.0 + f64::powi(2.0, -20));
    let t = bound as f32;
    // `as` rounds to nearest; the proof needs the f32 at or above the bound.
    let t = if f64::from(t) < bound { t.next_up() } else { t };
    debug_assert!(f64::from(t) >= bound && t.is_finite());
    t
}

/// The prefilter on one pair, as the vector kernels compute it lane by lane: `T - dy² - dx²`
/// with two fused multiply-adds, passing when the sign bit is clear. The tests hold the
/// proof of [`threshold`] against it; the kernels' own lanes are checked against the
/// exact kernel.
#[cfg(test)]
fn prefilter_passes(px: f32, py: f32, ox: f32, oy: f32, threshold: f32) -> bool {
    let (dx, dy) = (ox - px, oy - py);
    let s = (-dy).mul_add(dy, threshold);
    let r = (-dx).mul_add(dx, s);
    !r.is_sign_negative()
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

/// The f32 prefilter on 8-lane AVX2 vectors: four vectors of targets share each source's
/// broadcast, and one branch on the four signs combined.
#[cfg(target_arch = "x86_64")]
mod f32_avx2 {
    use std::arch::x86_64::{
        __m256, _mm256_and_ps, _mm256_fnmadd_ps, _mm256_loadu_ps, _mm256_movemask_ps,
        _mm256_set1_ps, _mm256_sub_ps,
    };

    use super::{Exact, Hit, NARROW_SOURCE_CHUNK, Narrow, hits_in_lanes};

    /// Lanes per vector.
    const LANES: usize = 8;
    /// Targets per group: four vectors.
    pub(super) const GROUP: usize = 4 * LANES;

    /// # Safety
    ///
    /// The CPU must support AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn collect_hits(exact: &Exact, narrow: &Narrow, hits: &mut Vec<Hit>) {
        debug_assert!(super::Kernel::F32Avx2.supported());
        debug_assert_eq!(narrow.tx.len(), narrow.ty.len());
        debug_assert_eq!(narrow.tx.len() % GROUP, 0);
        debug_assert!(narrow.tx.len() - exact.tx.len() < GROUP);
        debug_assert_eq!(narrow.sx.len(), exact.sx.len());
        let threshold = _mm256_set1_ps(narrow.threshold);
        let groups = narrow.tx.as_chunks::<GROUP>().0;
        let groups = groups.iter().zip(narrow.ty.as_chunks::<GROUP>().0);
        let chunks = narrow.sx.chunks(NARROW_SOURCE_CHUNK);
        let chunks = chunks.zip(narrow.sy.chunks(NARROW_SOURCE_CHUNK));
        for (chunk, (cx, cy)) in chunks.enumerate() {
            let chunk_start = chunk * NARROW_SOURCE_CHUNK;
            for (group, (gx, gy)) in groups.clone().enumerate() {
                let (qx, qy) = (gx.as_chunks::<LANES>().0, gy.as_chunks::<LANES>().0);
                let (px0, px1, px2, px3) = (load(&qx[0]), load(&qx[1]), load(&qx[2]), load(&qx[3]));
                let (py0, py1, py2, py3) = (load(&qy[0]), load(&qy[1]), load(&qy[2]), load(&qy[3]));
                for (offset, (&ox, &oy)) in cx.iter().zip(cy).enumerate() {
                    let (vx, vy) = (_mm256_set1_ps(ox), _mm256_set1_ps(oy));
                    let r0 = slack(vx, vy, px0, py0, threshold);
                    let r1 = slack(vx, vy, px1, py1, threshold);
                    let r2 = slack(vx, vy, px2, py2, threshold);
                    let r3 = slack(vx, vy, px3, py3, threshold);
                    // A lane's sign stays set only if all four of its pairs fail.
                    let all = _mm256_and_ps(_mm256_and_ps(r0, r1), _mm256_and_ps(r2, r3));
                    if _mm256_movemask_ps(all) != 0xFF {
                        let lanes = passed(r0)
                            | (passed(r1) << LANES)
                            | (passed(r2) << (2 * LANES))
                            | (passed(r3) << (3 * LANES));
                        hits_in_lanes(hits, lanes, group * GROUP, exact, chunk_start + offset);
                    }
                }
            }
        }
    }

    #[inline]
    #[target_feature(enable = "avx2,fma")]
    fn load(lanes: &[f32; LANES]) -> __m256 {
        // SAFETY: the load reads exactly the 8 elements of `lanes`; it needs no alignment.
        unsafe { _mm256_loadu_ps(lanes.as_ptr()) }
    }

    /// `T - dy² - dx²` on 8 lanes, two fused multiply-adds: a clear sign bit passes the
    /// pair (the proof is at [`threshold`](super::threshold)).
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    fn slack(ox: __m256, oy: __m256, px: __m256, py: __m256, threshold: __m256) -> __m256 {
        let dx = _mm256_sub_ps(ox, px);
        let dy = _mm256_sub_ps(oy, py);
        _mm256_fnmadd_ps(dx, dx, _mm256_fnmadd_ps(dy, dy, threshold))
    }

    /// One bit per lane that passed: its sign bit clear.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    fn passed(slack: __m256) -> u64 {
        u64::from(!_mm256_movemask_ps(slack) as u8)
    }
}

/// The f32 prefilter on 16-lane AVX-512 vectors: the AVX2 kernel's shape, twice as wide.
#[cfg(target_arch = "x86_64")]
mod f32_avx512 {
    use std::arch::x86_64::{
        __m512, __m512i, _mm512_and_si512, _mm512_castps_si512, _mm512_cmpge_epi32_mask,
        _mm512_cmplt_epi32_mask, _mm512_fnmadd_ps, _mm512_loadu_ps, _mm512_set1_ps,
        _mm512_setzero_si512, _mm512_sub_ps, _mm512_ternarylogic_epi32,
    };

    use super::{Exact, Hit, NARROW_SOURCE_CHUNK, Narrow, hits_in_lanes};

    /// Lanes per vector.
    const LANES: usize = 16;
    /// Targets per group: four vectors.
    pub(super) const GROUP: usize = 4 * LANES;
    /// `_mm512_ternarylogic_epi32`'s table for `a & b & c`.
    const AND3: i32 = 0x80;

    /// # Safety
    ///
    /// The CPU must support AVX-512F, AVX2 and FMA.
    #[target_feature(enable = "avx512f,avx2,fma")]
    pub(super) unsafe fn collect_hits(exact: &Exact, narrow: &Narrow, hits: &mut Vec<Hit>) {
        debug_assert!(super::Kernel::F32Avx512.supported());
        debug_assert_eq!(narrow.tx.len(), narrow.ty.len());
        debug_assert_eq!(narrow.tx.len() % GROUP, 0);
        debug_assert!(narrow.tx.len() - exact.tx.len() < GROUP);
        debug_assert_eq!(narrow.sx.len(), exact.sx.len());
        let threshold = _mm512_set1_ps(narrow.threshold);
        let zero = _mm512_setzero_si512();
        let groups = narrow.tx.as_chunks::<GROUP>().0;
        let groups = groups.iter().zip(narrow.ty.as_chunks::<GROUP>().0);
        let chunks = narrow.sx.chunks(NARROW_SOURCE_CHUNK);
        let chunks = chunks.zip(narrow.sy.chunks(NARROW_SOURCE_CHUNK));
        for (chunk, (cx, cy)) in chunks.enumerate() {
            let chunk_start = chunk * NARROW_SOURCE_CHUNK;
            for (group, (gx, gy)) in groups.clone().enumerate() {
                let (qx, qy) = (gx.as_chunks::<LANES>().0, gy.as_chunks::<LANES>().0);
                let (px0, px1, px2, px3) = (load(&qx[0]), load(&qx[1]), load(&qx[2]), load(&qx[3]));
                let (py0, py1, py2, py3) = (load(&qy[0]), load(&qy[1]), load(&qy[2]), load(&qy[3]));
                for (offset, (&ox, &oy)) in cx.iter().zip(cy).enumerate() {
                    let (vx, vy) = (_mm512_set1_ps(ox), _mm512_set1_ps(oy));
                    let r0 = slack(vx, vy, px0, py0, threshold);
                    let r1 = slack(vx, vy, px1, py1, threshold);
                    let r2 = slack(vx, vy, px2, py2, threshold);
                    let r3 = slack(vx, vy, px3, py3, threshold);
                    // A lane's sign stays set only if all four of its pairs fail; as
                    // integers, a set sign bit is a negative number.
                    let all = _mm512_and_si512(_mm512_ternarylogic_epi32::<AND3>(r0, r1, r2), r3);
                    if _mm512_cmplt_epi32_mask(all, zero) != u16::MAX {
                        let passed = |r: __m512i| u64::from(_mm512_cmpge_epi32_mask(r, zero));
                        let lanes = passed(r0)
                            | (passed(r1) << LANES)
                            | (passed(r2) << (2 * LANES))
                            | (passed(r3) << (3 * LANES));
                        hits_in_lanes(hits, lanes, group * GROUP, exact, chunk_start + offset);
                    }
                }
            }
        }
    }

    #[inline]
    #[target_feature(enable = "avx512f,avx2,fma")]
    fn load(lanes: &[f32; LANES]) -> __m512 {
        // SAFETY: the load reads exactly the 16 elements of `lanes`; it needs no alignment.
        unsafe { _mm512_loadu_ps(lanes.as_ptr()) }
    }

    /// `T - dy² - dx²` on 16 lanes, as bits: a clear sign bit passes the pair (the proof
    /// is at [`threshold`](super::threshold)).
    #[inline]
    #[target_feature(enable = "avx512f,avx2,fma")]
    fn slack(ox: __m512, oy: __m512, px: __m512, py: __m512, threshold: __m512) -> __m512i {
        let dx = _mm512_sub_ps(ox, px);
        let dy = _mm512_sub_ps(oy, py);
        _mm512_castps_si512(_mm512_fnmadd_ps(
            dx,
            dx,
            _mm512_fnmadd_ps(dy, dy, threshold),
        ))
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

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
        assert_fast_kernels_agree(tx, ty, sx, sy, base, &reference);
        reference.len()
    }

    /// Every kernel but the direct one gives the `reference` hits to the bit (a kernel the
    /// CPU lacks runs the portable one).
    fn assert_fast_kernels_agree(
        tx: &[f64],
        ty: &[f64],
        sx: &[f64],
        sy: &[f64],
        base: usize,
        reference: &[(u32, u32, u64, u64)],
    ) {
        for kernel in Kernel::ALL.into_iter().chain([Kernel::detect()]) {
            let mut got = Vec::new();
            kernel.collect_hits(tx, ty, sx, sy, base, &mut got);
            assert_eq!(sorted(got), reference, "{} kernel", kernel.name());
        }
    }

    /// The exact kernel's hits, sorted: what every other kernel must give.
    fn exact_hits(
        tx: &[f64],
        ty: &[f64],
        sx: &[f64],
        sy: &[f64],
        base: usize,
    ) -> Vec<(u32, u32, u64, u64)> {
        let mut hits = Vec::new();
        scalar(tx, ty, 0, sx, sy, base, &mut hits);
        sorted(hits)
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

    /// The box the textbook gives n particles.
    fn side(n: f64) -> f64 {
        (0.0005 * n).sqrt()
    }

    /// The exact kernel's range test, as [`force`] decides it (but for the pair at distance
    /// zero, which `force` skips and the prefilter may pass).
    fn exact_accepts(px: f64, py: f64, ox: f64, oy: f64) -> bool {
        let (dx, dy) = (ox - px, oy - py);
        dx * dx + dy * dy <= CUTOFF2
    }

    /// The prefilter on one pair, with the threshold the kernels would use for it.
    fn prefilter_keeps(px: f64, py: f64, ox: f64, oy: f64) -> bool {
        let largest = [px, py, ox, oy].iter().fold(0.0f64, |m, v| m.max(v.abs()));
        prefilter_passes(
            px as f32,
            py as f32,
            ox as f32,
            oy as f32,
            threshold(largest),
        )
    }

    /// A point half an f32 spacing (less a little) from the f32 `g`, toward `+∞` if
    /// `up`: it rounds back to `g`, so rounding moves it the most it can, away from `up`.
    fn before_halfway(g: f32, up: bool) -> f64 {
        let next = if up { g.next_up() } else { g.next_down() };
        f64::from(g) + (f64::from(next) - f64::from(g)) / 2.0 * (1.0 - 1.0 / 1024.0)
    }

    /// A pair at the edge of the cutoff near a corner of a box of side `size`, with every
    /// coordinate's rounding to f32 moving the two apart, each by nearly as much as it can.
    #[derive(Debug, Clone, Copy)]
    struct Edge {
        size: f64,
        /// Near the far wall in x (else the near one); likewise y.
        far: (bool, bool),
        /// How far from the corner the target sits, in each coordinate.
        inward: (f64, f64),
        /// The source lies toward +x from the target (else −x); likewise y.
        toward: (bool, bool),
        /// The direction's angle from the x axis, in [0, π/2].
        angle: f64,
        /// The distance's nudge across the cutoff, in units of 2⁻⁵² of it.
        nudge: i32,
        /// Solve for the target's x last (else its y).
        x_last: bool,
    }

    impl Edge {
        /// `(px, py, ox, oy)`.
        fn pair(&self) -> [f64; 4] {
            // Work in (u, v), u solved for last; swap back at the end.
            let (far, inward, toward, (cos, sin)) = if self.x_last {
                (
                    self.far,
                    self.inward,
                    self.toward,
                    (self.angle.cos(), self.angle.sin()),
                )
            } else {
                let (sin, cos) = (self.angle.cos(), self.angle.sin());
                let (f, i, t) = (self.far, self.inward, self.toward);
                ((f.1, f.0), (i.1, i.0), (t.1, t.0), (cos, sin))
            };
            let place = |far: bool, inward: f64| {
                if far { self.size - inward } else { inward }
            };
            let sign = |up: bool| if up { 1.0 } else { -1.0 };
            let step = |g: f32, up: bool| if up { g.next_up() } else { g.next_down() };
            // The target's v and the source's u and v sit where rounding moves them apart.
            let pv = before_halfway(place(far.1, inward.1) as f32, toward.1);
            let aim_u = place(far.0, inward.0) + sign(toward.0) * CUTOFF * cos;
            let ou = before_halfway(step(aim_u as f32, toward.0), !toward.0);
            let mut gv = (pv + sign(toward.1) * CUTOFF * sin) as f32;
            for _ in 0..32 {
                gv = step(gv, !toward.1);
            }
            // The target's u puts the pair at the cutoff, nudged across it; of 64 places
            // for the source's v, keep the one where rounding moves that u furthest away.
            let mut best: Option<(f64, [f64; 4])> = None;
            for _ in 0..64 {
                let ov = before_halfway(gv, !toward.1);
                gv = step(gv, toward.1);
                let dv = ov - pv;
                if dv.abs() > CUTOFF {
                    continue;
                }
                let du = (CUTOFF2 - dv * dv).sqrt()
                    * (1.0 + f64::from(self.nudge) * f64::powi(2.0, -52));
                let pu = ou - sign(toward.0) * du;
                let away = sign(toward.0) * (pu - f64::from(pu as f32));
                if best.is_none_or(|(most, _)| away > most) {
                    best = Some((away, [pu, pv, ou, ov]));
                }
            }
            let [pu, pv, ou, ov] = best.map_or([0.0; 4], |(_, pair)| pair);
            if self.x_last {
                [pu, pv, ou, ov]
            } else {
                [pv, pu, ov, ou]
            }
        }
    }

    /// Box sides from the textbook's n = 20 up to 2³² particles (the most a [`Hit`]
    /// names); the largest the prefilter takes, less room for a source a cutoff beyond
    /// the wall; and sides just above a power of two, where a coordinate near the far
    /// wall rounds to f32 with an error as large as the proof allows.
    fn sides() -> Vec<f64> {
        let mut sides: Vec<f64> = [20.0, 400.0, 16_000.0, 1e6, 1e8, 4_294_967_296.0]
            .into_iter()
            .map(side)
            .collect();
        sides.extend([NARROW_MAX_COORD - 2.0 * CUTOFF, 2.06, 1024.06]);
        sides
    }

    fn edges() -> impl Strategy<Value = Edge> {
        (
            proptest::sample::select(sides()),
            any::<(bool, bool, bool, bool, bool)>(),
            (0.0..0.05f64, 0.0..0.05f64),
            0.0..std::f64::consts::FRAC_PI_2,
            -64..=64i32,
        )
            .prop_map(
                |(size, (fx, fy, tx, ty, x_last), inward, angle, nudge)| Edge {
                    size,
                    far: (fx, fy),
                    inward,
                    toward: (tx, ty),
                    angle,
                    nudge,
                    x_last,
                },
            )
    }

    #[test]
    fn the_prefilter_keeps_every_pair_at_the_edge_of_the_cutoff_in_every_box() {
        // A sweep, so that the edge is seen often enough: for each box, corner, quadrant
        // and coordinate solved last, many angles and nudges either side of the cutoff.
        let mut rng = Lcg(17);
        let (mut kept_at_edge, mut pairs) = (0, 0);
        // The largest share of its margin a pair uses: how close the sweep comes to the
        // worst case the proof allows.
        let mut most_used = 0.0f64;
        for size in sides() {
            for bits in 0..32u32 {
                let bit = |k: u32| bits & (1 << k) != 0;
                for _ in 0..200 {
                    let edge = Edge {
                        size,
                        far: (bit(0), bit(1)),
                        inward: (rng.unit() * 0.05, rng.unit() * 0.05),
                        toward: (bit(2), bit(3)),
                        angle: rng.unit() * std::f64::consts::FRAC_PI_2,
                        nudge: (rng.unit() * 129.0) as i32 - 64,
                        x_last: bit(4),
                    };
                    let [px, py, ox, oy] = edge.pair();
                    for (px, py, ox, oy) in [(px, py, ox, oy), (ox, oy, px, py)] {
                        pairs += 1;
                        if exact_accepts(px, py, ox, oy) {
                            assert!(prefilter_keeps(px, py, ox, oy), "{edge:?}");
                            let (dx, dy) = (ox - px, oy - py);
                            if dx * dx + dy * dy > CUTOFF2 * (1.0 - 1e-12) {
                                kept_at_edge += 1;
                            }
                            let largest =
                                [px, py, ox, oy].iter().fold(0.0f64, |m, v| m.max(v.abs()));
                            let narrowed = |o: f64, p: f64| f64::from(o as f32 - p as f32);
                            let (dx, dy) = (narrowed(ox, px), narrowed(oy, py));
                            let margin = f64::from(threshold(largest)) - CUTOFF2;
                            most_used = most_used.max((dx * dx + dy * dy - CUTOFF2) / margin);
                        }
                    }
                }
            }
        }
        assert!(
            kept_at_edge > pairs / 5,
            "the sweep should sit at the edge: {kept_at_edge} of {pairs} pairs"
        );
        // The proof's worst case, all four roundings at their largest at 45°, uses
        // √2 / 1.5 = 94% of the margin; with `1.3·ε` in place of `1.5·ε` the sweep fails.
        assert!(
            most_used > 0.85,
            "the sweep should come close to the worst case: {most_used}"
        );
    }

    #[test]
    fn the_prefilter_radius_is_barely_above_the_cutoff() {
        let cutoff2 = CUTOFF2 as f32;
        // At n = 16000, about 0.005% in radius.
        let t = threshold(side(16_000.0));
        assert!(t > cutoff2 && f64::from(t) < CUTOFF2 * 1.000_2, "{t}");
        // At the largest coordinate the prefilter takes, the radius is 7% above the cutoff.
        let t = threshold(NARROW_MAX_COORD);
        assert!(f64::from(t) < CUTOFF2 * 1.075 * 1.075, "{t}");
        // Beyond it, or off the number line, the f64 kernels run instead.
        for far in [NARROW_MAX_COORD.next_up(), -1e5, f64::NAN, f64::INFINITY] {
            let exact = Exact {
                tx: &[0.5],
                ty: &[far],
                sx: &[0.5],
                sy: &[0.5],
                source_base: 0,
            };
            assert!(narrow(&exact, 8).is_none(), "{far}");
        }
    }

    #[test]
    fn the_f32_kernels_fall_back_to_f64_for_coordinates_beyond_the_margin() {
        // A cluster at 5000 and one at the origin: hits in both, and the f32 kernels decline.
        let mut rng = Lcg(7);
        let mut coords =
            |k: usize, at: f64| (0..k).map(|_| at + rng.unit() * 0.05).collect::<Vec<_>>();
        let (mut x, mut y) = (coords(40, 5000.0), coords(40, 5000.0));
        x.extend(coords(40, 0.0));
        y.extend(coords(40, 0.0));
        let reference = exact_hits(&x, &y, &x, &y, 0);
        assert!(reference.len() > 40, "{}", reference.len());
        assert_fast_kernels_agree(&x, &y, &x, &y, 0, &reference);
        // NaN takes the same way out, and records what the f64 kernels record.
        x[3] = f64::NAN;
        let reference = exact_hits(&x, &y, &x, &y, 0);
        assert_fast_kernels_agree(&x, &y, &x, &y, 0, &reference);
    }

    #[test]
    fn the_f32_kernels_match_the_exact_one_in_clusters_at_the_far_corner_of_large_boxes() {
        let mut rng = Lcg(2024);
        for size in sides() {
            // Dense clusters, so about one pair in 20 is in range, at both corners.
            for corner in [0.0, size - 0.05] {
                let mut coords = |k: usize| {
                    (0..k)
                        .map(|_| corner + rng.unit() * 0.05)
                        .collect::<Vec<_>>()
                };
                let (tx, ty) = (coords(75), coords(75));
                let (sx, sy) = (coords(2100), coords(2100));
                let reference = exact_hits(&tx, &ty, &sx, &sy, 9);
                assert!(reference.len() > 1000, "{}", reference.len());
                assert_fast_kernels_agree(&tx, &ty, &sx, &sy, 9, &reference);
            }
        }
    }

    #[test]
    fn the_f32_avx512_kernel_matches_the_exact_one_where_the_cpu_has_it() {
        if !Kernel::F32Avx512.supported() {
            eprintln!("skipped: this CPU lacks AVX-512F, so the f32-avx512 kernel cannot run");
            return;
        }
        let mut rng = Lcg(512);
        for (targets, sources) in [(1, 1), (15, 3), (64, 64), (65, 2049), (200, 5000)] {
            let mut coords = |k: usize| (0..k).map(|_| rng.unit() * 0.05).collect::<Vec<_>>();
            let (tx, ty) = (coords(targets), coords(targets));
            let (sx, sy) = (coords(sources), coords(sources));
            let reference = exact_hits(&tx, &ty, &sx, &sy, 5);
            let mut got = Vec::new();
            Kernel::F32Avx512.collect_hits(&tx, &ty, &sx, &sy, 5, &mut got);
            assert_eq!(sorted(got), reference, "{targets} x {sources}");
        }
    }

    proptest! {
        // One pair a case, and cheap: many cases.
        #![proptest_config(ProptestConfig::with_cases(4096))]
        #[test]
        fn the_prefilter_never_drops_a_pair_the_exact_test_keeps(edge in edges()) {
            let [px, py, ox, oy] = edge.pair();
            for (px, py, ox, oy) in [(px, py, ox, oy), (ox, oy, px, py)] {
                if exact_accepts(px, py, ox, oy) {
                    prop_assert!(prefilter_keeps(px, py, ox, oy), "{:?}", edge);
                }
            }
        }

    }

    proptest! {
        #[test]
        fn every_kernel_records_the_exact_hits_of_pairs_at_the_edge(
            size in proptest::sample::select(sides()),
            edges in proptest::collection::vec(edges(), 1..80),
            split in 0usize..160,
        ) {
            // Every target and source of the pairs, all in one box, against each other;
            // the sources start at `split`, so that their list slots are offset.
            let points: Vec<[f64; 4]> = edges.iter().map(|e| Edge { size, ..*e }.pair()).collect();
            let x: Vec<f64> = points.iter().flat_map(|p| [p[0], p[2]]).collect();
            let y: Vec<f64> = points.iter().flat_map(|p| [p[1], p[3]]).collect();
            let split = split.min(x.len());
            let (sx, sy) = (&x[split..], &y[split..]);
            let reference = exact_hits(&x, &y, sx, sy, split);
            for kernel in Kernel::ALL {
                let mut got = Vec::new();
                kernel.collect_hits(&x, &y, sx, sy, split, &mut got);
                prop_assert_eq!(sorted(got), reference.clone(), "{} kernel", kernel.name());
            }
        }
    }
}
