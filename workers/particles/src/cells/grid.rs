//! The cell grid over the whole box, and the record each particle is kept in.
//!
//! One grid serves every mode and every worker: cells are squares at least [`CELL`] wide,
//! numbered row by row from the bottom-left corner, so a particle's cell number (its *key*)
//! is the same whoever holds it. Sorting particles by key puts each row's cells side by side,
//! so the three cells of one row around a particle are one run of the sorted array.

use bytemuck::{Pod, Zeroable};

use super::super::physics::CUTOFF;

/// The narrowest cell. Wider than the cutoff by a margin, so that rounding in a cell index
/// can never put two particles in range more than one cell apart.
pub(super) const CELL: f64 = CUTOFF * 1.01;

/// The most cells along a side, so that a row and a column fit in the halves of a key.
const MAX_LANES: u32 = u16::MAX as u32;

/// A particle as the cell algorithm keeps it: its state, its list slot (which fixes the
/// order its forces and energy are summed in), and its cell.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Pod, Zeroable)]
pub(crate) struct Body {
    pub x: f64,
    pub y: f64,
    pub vx: f64,
    pub vy: f64,
    /// The particle's place in the textbook's list.
    pub slot: u32,
    /// The cell it was in when last binned.
    pub key: u32,
}

/// Square cells over the box `[0, size]²`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Grid {
    /// Cells along each side.
    lanes: u32,
    /// Cells per unit length; zero when there is one lane.
    inv: f64,
    /// The last lane, `lanes - 1`, as a float.
    last: f64,
}

impl Grid {
    /// The grid for a box of side `size`.
    pub(crate) fn new(size: f64) -> Grid {
        let lanes = (size / CELL).floor();
        // Also false for NaN: a degenerate box has one cell.
        let lanes = if lanes >= 1.0 {
            lanes.min(f64::from(MAX_LANES)) as u32
        } else {
            1
        };
        let inv = if lanes > 1 {
            f64::from(lanes) / size
        } else {
            0.0
        };
        Grid {
            lanes,
            inv,
            last: f64::from(lanes - 1),
        }
    }

    /// Cells along each side: the grid has this many rows and this many columns.
    pub(crate) fn lanes(&self) -> u32 {
        self.lanes
    }

    /// The row or column of a coordinate, clamped into the grid: the floor of the scaled
    /// coordinate, 0 below the box (and for NaN), the last lane above it. Every step takes
    /// it four times a particle, so it is clamped as a float and then truncated without
    /// the checks of a saturating cast.
    #[inline]
    pub(crate) fn lane(&self, v: f64) -> u32 {
        // `max` returns 0 for NaN, so the value is a number in `0..=last`.
        let clamped = (v * self.inv).max(0.0).min(self.last);
        debug_assert!((0.0..=f64::from(self.lanes - 1)).contains(&clamped));
        // SAFETY: `clamped` is finite, not negative and at most `lanes - 1`, which fits in
        // a u32: exactly what `to_int_unchecked` requires.
        unsafe { clamped.to_int_unchecked::<u32>() }
    }

    /// The key of the cell holding (x, y): its row in the high half, its column in the
    /// low half, so keys sort row by row and each half is one instruction away.
    #[inline]
    pub(crate) fn key(&self, x: f64, y: f64) -> u32 {
        self.lane(y) << 16 | self.lane(x)
    }

    /// The row of a key.
    #[inline]
    pub(crate) fn row_of(&self, key: u32) -> u32 {
        key >> 16
    }

    /// The column of a key.
    #[inline]
    pub(crate) fn col_of(&self, key: u32) -> u32 {
        key & 0xffff
    }

    /// The first key of `row`.
    #[inline]
    pub(crate) fn row_start(&self, row: u32) -> u32 {
        row << 16
    }

    /// The key of a cell numbered densely, row by row: for sorting in as few passes as the
    /// grid needs.
    fn dense(&self, key: u32) -> u32 {
        self.row_of(key) * self.lanes + self.col_of(key)
    }
}

/// `len` zeroed elements, backed by huge pages when large and where they pay
/// ([`ringleader::HugePages::advise`]). The memory comes zeroed from the kernel, so nothing
/// writes it twice.
pub(super) fn zeroed<T: Zeroable + Copy>(len: usize) -> Vec<T> {
    let v = bytemuck::allocation::zeroed_vec::<T>(len);
    ringleader::HugePages::advise(&v);
    v
}

/// Sorts bodies by key, stably. `scratch` is reused between calls.
pub(super) fn sort_by_key(grid: &Grid, bodies: &mut [Body], scratch: &mut Vec<Body>) {
    radix_sort(bodies, scratch, |b| grid.dense(b.key));
}

/// How many list slots make a window: the particles of one window fill 128 KiB of the
/// four arrays of a state in list order, little enough to stay in cache while they are
/// put in place.
const WINDOW_BITS: u32 = 12;

/// How many list slots make a window.
pub(super) const WINDOW: usize = 1 << WINDOW_BITS;

/// The window of a list slot.
pub(super) fn slot_window(slot: u32) -> u32 {
    slot >> WINDOW_BITS
}

/// How many windows make a batch in a run of `n` particles: the coordinator reads a lent
/// state a batch at a time ([`into_list_order_lent`](super::into_list_order_lent)), into a
/// buffer of its own, fresh memory that stays in cache. A sixteenth of the windows, from
/// two to eight of them (330 KB to 1.3 MB of bodies): more, smaller batches cost more
/// system calls, larger ones more fresh memory. On two workers at 10⁵ particles the end
/// took 3.0 and 4.6 ms with eight windows to a batch (fastest and median of 24 runs), 2.7
/// and 3.5 with two; at 10⁶, 16.0 and 19.7 ms with eight, 18.4 and 26.1 with two.
pub(super) fn batch_windows(n: usize) -> usize {
    (n.div_ceil(WINDOW) / 16).clamp(2, 8)
}

/// How many batches the windows of `n` particles make.
pub(super) fn batches(n: usize) -> usize {
    n.div_ceil(WINDOW).div_ceil(batch_windows(n))
}

/// Where each batch starts in each group of `bodies` (grouped by
/// [`group_by_slot_window`]), for a run of `n` particles: for group `g`, entries
/// `g * (b + 1)` to `g * (b + 1) + b` (with `b` [`batches`]`(n)`) are the index in
/// `bodies` of its first body in each batch or a later one, and one past its last body.
/// What a coordinator that reads the bodies a batch at a time needs to know where to read.
pub(super) fn batch_starts(bodies: &[Body], n: usize) -> Vec<u32> {
    let (batches, batch) = (batches(n), batch_windows(n));
    let mut starts = Vec::with_capacity(bodies.len().div_ceil(GROUP) * (batches + 1));
    for (g, group) in bodies.chunks(GROUP).enumerate() {
        for b in 0..=batches {
            let first = (b * batch) as u32;
            let at = group.partition_point(|body| slot_window(body.slot) < first);
            starts.push((g * GROUP + at) as u32);
        }
    }
    starts
}

/// How many bodies make a group: [`group_by_slot_window`] sorts each group of this many on
/// its own, in scratch space small enough (640 KiB) to stay in cache.
pub(super) const GROUP: usize = 1 << 14;

/// Groups bodies by [`slot_window`] within each run of [`GROUP`] bodies (the last one
/// shorter): each run is sorted by window, stably, with `scratch` reused between runs and
/// calls. A sort of the whole array would need a second array as large, fresh memory the
/// kernel zeroes page by page; sorting it in place moves each body along a chain of
/// dependent cache misses. The runs keep every read and write in cache, and the
/// coordinator's [`into_list_order`](super::into_list_order) takes each run as a part.
pub(super) fn group_by_slot_window(bodies: &mut [Body], scratch: &mut Vec<Body>) {
    for group in bodies.chunks_mut(GROUP) {
        radix_sort(group, scratch, |b| slot_window(b.slot));
    }
}

/// Sorts bodies by `key`, stably, in passes of up to twelve bits over the bits the largest
/// key uses: a few sequential sweeps, where a comparison sort would take `log n` of them.
/// Each pass scatters into `scratch` and copies back.
fn radix_sort(bodies: &mut [Body], scratch: &mut Vec<Body>, key: impl Fn(&Body) -> u32) {
    const WIDEST: u32 = 12;
    if bodies.len() < 64 {
        bodies.sort_by_key(|b| key(b));
        return;
    }
    let top = bodies.iter().map(&key).max().unwrap_or(0);
    let bits = u32::BITS - top.leading_zeros();
    // As few passes as digits of at most WIDEST bits allow, the bits shared out evenly.
    let passes = bits.div_ceil(WIDEST).max(1);
    let width = bits.div_ceil(passes);
    let mask = (1usize << width) - 1;
    if scratch.capacity() < bodies.len() {
        *scratch = zeroed(bodies.len());
        // Every element is written, at random: fault the pages in at once. Grouping a
        // strip's 5·10⁴ bodies at the end took 0.93 ms rather than 1.07 (medians of twenty
        // runs taking turns, two processes at 10⁵ particles). On `-t` another thread that
        // maps memory meanwhile waits for this (see `HugePages::populate`); a little
        // scratch is soon populated, and `-t 2` gained as much (1.31 against 1.44 ms).
        ringleader::HugePages::populate(&mut scratch[..]);
    } else {
        scratch.resize(bodies.len(), Body::default());
    }
    scratch.truncate(bodies.len());
    let mut counts = vec![0usize; 1 << width];
    let mut shift = 0;
    while shift < bits {
        counts.fill(0);
        let digit = |b: &Body| (key(b) >> shift) as usize & mask;
        for body in bodies.iter() {
            counts[digit(body)] += 1;
        }
        // Already in order on this digit (every key in one bucket): nothing moves.
        if counts.contains(&bodies.len()) {
            shift += width;
            continue;
        }
        let mut at = 0;
        for count in &mut counts {
            let c = *count;
            *count = at;
            at += c;
        }
        for body in bodies.iter() {
            let d = digit(body);
            scratch[counts[d]] = *body;
            counts[d] += 1;
        }
        bodies.copy_from_slice(scratch);
        shift += width;
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::xorshift;
    use super::*;

    fn body(key: u32, slot: u32) -> Body {
        Body {
            key,
            slot,
            ..Body::default()
        }
    }

    #[test]
    fn keys_number_cells_row_by_row_and_clamp_at_the_walls() {
        let grid = Grid::new(1.0);
        assert_eq!(grid.lanes(), 99);
        assert_eq!(grid.key(0.0, 0.0), 0);
        assert_eq!(grid.key(1.0, 0.0), 98);
        assert_eq!(grid.key(0.0, 1.0), 98 << 16);
        assert_eq!(grid.col_of(grid.key(0.5, 0.25)), grid.lane(0.5));
        assert_eq!(grid.row_of(grid.key(0.5, 0.25)), grid.lane(0.25));
        assert_eq!(grid.key(-1.0, f64::NAN), 0);
        // Cells are never narrower than CELL.
        assert!(1.0 / f64::from(grid.lanes()) >= CELL);
    }

    #[test]
    fn a_box_narrower_than_a_cell_has_one() {
        for size in [0.0, 0.005, CELL * 0.999, f64::NAN] {
            let grid = Grid::new(size);
            assert_eq!(grid.lanes(), 1, "{size}");
            assert_eq!(grid.key(0.003, 0.004), 0);
        }
        assert_eq!(Grid::new(2.5 * CELL).lanes(), 2);
    }

    #[test]
    fn a_huge_box_keeps_keys_in_a_u32() {
        let grid = Grid::new(1e9);
        assert_eq!(grid.lanes(), MAX_LANES);
        assert_eq!(grid.key(1e9, 1e9), (MAX_LANES - 1) << 16 | (MAX_LANES - 1));
    }

    #[test]
    fn grouping_by_slot_window_keeps_every_body_and_puts_each_groups_windows_in_order() {
        let mut next = xorshift(0x9e37_79b9_7f4a_7c15);
        for (len, slots) in [
            (0, 1),
            (1, 1),
            (10, 5),
            (5000, 40_000),
            (3 * GROUP + 17, 1 << 22),
        ] {
            let mut bodies: Vec<Body> = (0..len)
                .map(|key| body(key as u32, (next() % slots) as u32))
                .collect();
            let mut want = bodies.clone();
            group_by_slot_window(&mut bodies, &mut Vec::new());
            for group in bodies.chunks(GROUP) {
                assert!(
                    group.is_sorted_by_key(|b| slot_window(b.slot)),
                    "{len} bodies"
                );
            }
            // The same bodies: each key (here a body's own number) once.
            bodies.sort_by_key(|b| b.key);
            want.sort_by_key(|b| b.key);
            assert_eq!(bodies, want, "{len} bodies");
        }
    }

    #[test]
    fn radix_sort_is_stable_and_sorts_by_key() {
        let mut next = xorshift(0x2545_f491_4f6c_dd1d);
        for (len, range) in [
            (10, 5),
            (1000, 3),
            (5000, 1 << 20),
            (5000, 1 << 31),
            (70, 1),
        ] {
            let mut bodies: Vec<Body> = (0..len)
                .map(|slot| body((next() % range) as u32, slot))
                .collect();
            let mut want = bodies.clone();
            want.sort_by_key(|b| b.key);
            radix_sort(&mut bodies, &mut Vec::new(), |b| b.key);
            assert_eq!(bodies, want, "{len} keys below {range}");
        }
    }
}
