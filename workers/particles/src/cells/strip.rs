//! A strip: the particles of a run of grid rows, kept sorted by cell, and the step that
//! finds their forces, moves them and sorts them again in one sweep.
//!
//! # Keeping the order
//!
//! The particles live in `main`, sorted by key, plus a short sorted array `movers` of
//! particles that arrived from another strip, or jumped more than a row, in the last step.
//! A step visits them in key order, which is row by row, merging the two arrays. A moved
//! particle almost always stays in its row or moves to the next one up or down, so the
//! step keeps three rows open: the row it visits, and the rows below and above it. Each
//! moved particle goes to its new row's buffer. A row is complete once the step has visited
//! the row above it; its buffer is then nearly in order (a particle that crossed a cell
//! edge within the row is one place off, and the few from other rows are sorted apart), so
//! sorting it is cheap, and it is written back into `main`, which comes out sorted.
//! Nothing passes over empty cells, and nothing is sorted whole. A strip just built has its
//! particles in their rows but each row unsorted: the first step sorts a row as it comes to
//! it, which saves a pass over the whole strip, from memory and back.
//!
//! # One array, rewritten in place
//!
//! A complete row is written over the front of `main`, which the step has read already:
//! once it visits a row, nothing below the row under it is read again. The rows written so
//! far hold about as many particles as the rows read, so the writes stay just behind the
//! reads; the few that would pass them (particles that came down a row, or from other
//! strips) wait in a short queue until the reads move on ([`Rewrite`]). A second array as
//! large as `main` would cost as much fresh memory again, which the kernel zeroes page by
//! page, and which on a virtual machine can cost more than the steps that use it.
//!
//! # Finding the neighbours
//!
//! The sources in range of a particle lie in its cell's row and the rows above and below,
//! each within one column: three runs of keys, one per row, in each sorted source array.
//! Visiting targets in key order moves every run's bounds forward only, so each source
//! array is swept by six cursors, and every read is close to the last.
//!
//! # Bit for bit
//!
//! A target's in-range pairs are those where the textbook's [`force`] is not `None`, as in
//! the all-pairs loop; they are summed in list order of their sources (by slot), starting
//! from zero, exactly as [`accelerations`](super::super::physics::accelerations) does. The
//! move is [`Motion::apply`], the textbook's, operation for operation.

use std::collections::VecDeque;
use std::ops::Range;

use super::super::physics::Particles;
use super::super::physics::{CUTOFF2, Escaped, Motion, force};
use super::grid::{Body, GROUP, Grid, group_by_slot_window, sort_by_key, zeroed};

/// The particles of grid rows `rows`, and the buffers their steps reuse.
///
/// A step pushes onto the strip's vectors for every particle, which writes their lengths
/// here. The threads of `-t` keep their strips side by side, so each strip starts on a
/// cache-line pair of its own: a neighbour's pushes would otherwise take the line away from
/// this thread's core over and over (a step took 30 to 36 ms where the same strip on a
/// thread of its own took 19 to 25).
#[derive(Debug, Default)]
#[repr(align(128))]
pub(super) struct Strip {
    rows: Range<u32>,
    /// Sorted by key before `unsorted`; from there on grouped by row, in row order, each
    /// row still to be sorted (a strip just built: its first step sorts each row as it
    /// comes to it). After the last step, its first `grouped` runs of [`GROUP`] are sorted
    /// by slot window instead. Together with `movers`, every particle the strip owns.
    main: Vec<Body>,
    /// Where the rows of `main` not yet sorted begin: `main.len()` once all are.
    unsorted: usize,
    /// Sorted by key once settled.
    movers: Vec<Body>,
    /// The step's output that has no room in `main` yet: see [`Rewrite`].
    queue: VecDeque<Body>,
    /// The particles that moved below or above the strip's rows in the last step.
    pub leaving_down: Vec<Body>,
    pub leaving_up: Vec<Body>,
    /// The rows a step keeps open, by row number modulo three.
    open: [Open; 3],
    /// Column tables of `main` for the rows around the visited one, by row number modulo
    /// three; the fourth is all zeros, for rows outside the grid.
    tables: [Table; 4],
    scratch: Vec<Body>,
    /// The sources in range of the visited particle.
    near: Vec<Near>,
    /// Whether the next step is the run's last ([`Strip::last_step_next`]).
    ending: bool,
    /// How many runs of [`GROUP`] at the start of `main` the last step left sorted by slot
    /// window, as [`Strip::into_slot_windows`] wants them: `main` is in key order only
    /// after them ([`Strip::restore_key_order`]).
    grouped: usize,
}

/// A row's moved particles, while a step may still add to them.
#[derive(Debug, Default)]
struct Open {
    /// The row's own particles that stayed in it, in the order visited.
    stayed: Vec<Body>,
    /// Particles from the rows next to it.
    arrived: Vec<Body>,
}

/// Where each column of one row starts in `main`: `starts[c]` is the index of the first
/// particle of the row in column `c` or later, and `starts[lanes]` the end of the row. Two
/// reads give the sources of a run of columns, where cursors would need a loop each, whose
/// length no branch predictor can guess. [`RUN`] entries past `lanes` are slack for
/// [`Table::fill`]'s wide stores.
#[derive(Debug, Default)]
struct Table {
    row: Option<u32>,
    starts: Vec<u32>,
}

impl Table {
    /// Fills the table for `row` of `main`, whose particles in that row start at or after
    /// `from`, and returns where the row ends. Rows are filled in order, so the row is near:
    /// a scan, not a search. The table must already have `lanes + 1 + RUN` entries.
    ///
    /// Most cells are empty (a fifth of a particle each at the textbook's density), so a
    /// particle starts a run of a few columns, whose length no branch predictor can guess.
    /// Each particle writes its index over the next [`RUN`] entries at once instead, and
    /// loops only for a longer run. Entries past its own run are written wrong, but every
    /// entry's last writer is the right one: the first particle at or past the entry's
    /// column writes it, after every particle before it; the ones after it start past it.
    fn fill(&mut self, row: u32, main: &[Body], from: usize, grid: &Grid) -> usize {
        let (first, next) = (grid.row_start(row), grid.row_start(row + 1));
        self.row = Some(row);
        let mut at = from + main[from..].iter().take_while(|b| b.key < first).count();
        let starts = &mut self.starts;
        debug_assert!(starts.len() == grid.lanes() as usize + 1 + RUN);
        let mut col = 0;
        for body in &main[at..] {
            if body.key >= next {
                break;
            }
            // Every column up to this particle's starts here.
            let upto = grid.col_of(body.key) as usize;
            let mut from = col;
            loop {
                // `from <= upto + 1 <= lanes`, so the run is inside the slack.
                starts[from..from + RUN].fill(at as u32);
                from += RUN;
                if from > upto {
                    break;
                }
            }
            col = col.max(upto + 1);
            at += 1;
        }
        starts[col..].fill(at as u32);
        at
    }
}

/// Bodies binned into the rows of a strip's array. Each row's bodies wait in a small
/// buffer, eight at a time (five whole cache lines), and go out with stores that bypass the
/// cache: a plain store into the array first reads its line from memory, as the rows
/// are written a body at a time, all over the array. The bodies before a row's first
/// whole line go straight in.
struct Binned<'a> {
    main: &'a mut [Body],
    /// Where each row's next body goes in `main`.
    next: Vec<usize>,
    /// Each row's waiting bodies: `waiting[row]` of them.
    staged: Vec<Staged>,
    waiting: Vec<u8>,
}

/// Eight bodies, five cache lines, on a line of their own.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Staged([Body; STAGED]);

/// How many bodies a row's buffer holds: 320 bytes, five cache lines.
const STAGED: usize = 8;

impl<'a> Binned<'a> {
    /// `starts[r]` is where row `r` begins in `main`, and the last entry where the rows end.
    fn new(main: &'a mut [Body], mut starts: Vec<usize>) -> Binned<'a> {
        let rows = starts.len().saturating_sub(1);
        starts.truncate(rows);
        Binned {
            main,
            next: starts,
            staged: vec![Staged([Body::default(); STAGED]); rows],
            waiting: vec![0; rows],
        }
    }

    #[inline]
    fn push(&mut self, row: usize, body: Body) {
        let at = self.next[row];
        let waiting = self.waiting[row] as usize;
        if waiting == 0 && !(self.main.as_ptr().wrapping_add(at) as usize).is_multiple_of(64) {
            self.main[at] = body;
            self.next[row] = at + 1;
            return;
        }
        self.staged[row].0[waiting] = body;
        if waiting + 1 < STAGED {
            self.waiting[row] = (waiting + 1) as u8;
            return;
        }
        self.waiting[row] = 0;
        self.next[row] = at + STAGED;
        // The row's next body was on a cache line when the first of these eight waited.
        let to: &mut [Body; STAGED] = (&mut self.main[at..at + STAGED])
            .try_into()
            .expect("a range of STAGED bodies is an array of them");
        stream_lines(to, &self.staged[row]);
    }

    /// Puts the bodies still waiting in place.
    fn finish(self) {
        for ((&at, staged), &waiting) in self.next.iter().zip(&self.staged).zip(&self.waiting) {
            let waiting = waiting as usize;
            self.main[at..at + waiting].copy_from_slice(&staged.0[..waiting]);
        }
        super::store_fence();
    }
}

/// Writes `from` over `to` with stores that bypass the cache, where `to` starts on a cache
/// line (elsewhere with plain stores).
#[inline]
fn stream_lines(to: &mut [Body; STAGED], from: &Staged) {
    #[cfg(target_arch = "x86_64")]
    if (to.as_ptr() as usize).is_multiple_of(64) {
        use std::arch::x86_64::{__m128i, _mm_load_si128, _mm_stream_si128};
        let (src, dst) = (
            from as *const Staged as *const __m128i,
            to.as_mut_ptr() as *mut __m128i,
        );
        for k in 0..size_of::<Staged>() / 16 {
            // SAFETY: SSE2 is part of every x86-64 processor. `from` and `to` are both
            // `size_of::<Staged>()` bytes (STAGED bodies), so each 16-byte word `k` is
            // within both; `from` is 64-byte aligned (its type) and `to` too (checked), as
            // `movdqa` and `movntdq` need.
            unsafe { _mm_stream_si128(dst.add(k), _mm_load_si128(src.add(k))) };
        }
        return;
    }
    to.copy_from_slice(&from.0);
}

/// How many particles of the start [`Strip::from_start`] sorts out at a time.
const FILTER: usize = 256;

/// How many entries of a column table one particle writes at once.
const RUN: usize = 16;

/// One sorted array of sources, with the cursors that sweep it.
struct Sweep<'a> {
    set: &'a [Body],
    /// The first and last row the array has particles in.
    first_row: u32,
    last_row: u32,
    /// For the rows below, at and above the target's: the first source not before the
    /// target's column minus one, and the first after its column plus one.
    lo: [usize; 3],
    hi: [usize; 3],
}

impl<'a> Sweep<'a> {
    /// Adds to `near` this array's sources in range of a target at (px, py) in `row`,
    /// between columns `left` and `right`.
    #[allow(clippy::too_many_arguments)]
    fn gather(
        &mut self,
        near: &mut Vec<Near>,
        grid: &Grid,
        row: u32,
        left: u32,
        right: u32,
        px: f64,
        py: f64,
    ) {
        for d in 0..3 {
            // The row below, at, and above the target's.
            let Some(r) = (row + d).checked_sub(1) else {
                continue;
            };
            if r < self.first_row || r > self.last_row {
                continue;
            }
            let (from, to) = (grid.row_start(r) | left, grid.row_start(r) | right);
            let set = self.set;
            let lo = &mut self.lo[d as usize];
            while *lo < set.len() && set[*lo].key < from {
                *lo += 1;
            }
            let hi = &mut self.hi[d as usize];
            *hi = (*hi).max(*lo);
            while *hi < set.len() && set[*hi].key <= to {
                *hi += 1;
            }
            gather(near, &set[*lo..*hi], px, py);
        }
    }

    fn new(grid: &Grid, set: &'a [Body]) -> Option<Sweep<'a>> {
        let (first, last) = (set.first()?, set.last()?);
        Some(Sweep {
            set,
            first_row: grid.row_of(first.key),
            last_row: grid.row_of(last.key),
            lo: [0; 3],
            hi: [0; 3],
        })
    }
}

impl Strip {
    /// The strip of `rows` for the particles of `start` whose rows those are; `per_row`
    /// counts the particles of every row. A counting sort puts them in their rows in one
    /// pass; the first step sorts each row by key.
    ///
    /// `alone` says that no other thread of this process makes or maps memory meanwhile.
    /// Only then are the strip's fresh pages faulted in at once
    /// ([`HugePages::populate`](ringleader::HugePages::populate)): the kernel holds the
    /// process's memory-map lock while it does, so other threads building their strips,
    /// or merely starting, would wait, where page faults taken as the pages are written
    /// hold no such lock. Strips ready on `-t 2` at 10⁶ particles, medians of twelve runs:
    /// 26.5 against 34.6 ms (the second thread started up to 14 ms late); a serial run's
    /// strip, alone, took 30.9 ms populated against 34.0.
    pub(super) fn from_start(
        grid: &Grid,
        start: &Particles,
        rows: Range<u32>,
        per_row: &[u32],
        alone: bool,
    ) -> Strip {
        let first = rows.start as usize;
        // Where each row begins, from the coordinator's count of every row.
        let mut offsets = Vec::with_capacity(rows.len() + 1);
        offsets.push(0usize);
        for &count in &per_row[first..rows.end as usize] {
            offsets.push(offsets[offsets.len() - 1] + count as usize);
        }
        // Room to grow, as `step` gives the other buffer: particles that move in from
        // another strip would otherwise reallocate it (a fresh, larger copy) mid-run. The
        // room is never touched until it is used, so it costs nothing.
        let len = offsets[rows.len()];
        let mut main: Vec<Body> = zeroed(len + len / 8);
        main.truncate(len);
        // Every body is written just below, at random: fault the pages in at once.
        if alone {
            ringleader::HugePages::populate(&mut main);
        }
        let mut binned = Binned::new(&mut main, offsets);
        // Puts the particle of `slot`, in the strip's `row`-th row, in its place.
        let mut put = |slot: usize, row: u32| {
            let (x, y) = (start.x[slot], start.y[slot]);
            binned.push(
                row as usize,
                Body {
                    x,
                    y,
                    vx: start.vx[slot],
                    vy: start.vy[slot],
                    slot: slot as u32,
                    key: grid.row_start(rows.start + row) | grid.lane(x),
                },
            );
        };
        let rows_len = rows.len();
        if rows_len == grid.lanes() as usize {
            // Every particle is the strip's.
            debug_assert_eq!(rows.start, 0);
            for (slot, &y) in start.y.iter().enumerate() {
                put(slot, grid.lane(y));
            }
        } else {
            // The start is read a block at a time: first which of its particles are the
            // strip's, without a branch, then those are put in their rows. With a branch per
            // particle, whether it is the strip's is a coin toss on two workers.
            let mut members = [(0u32, 0u32); FILTER];
            for from in (0..start.len()).step_by(FILTER) {
                let to = (from + FILTER).min(start.len());
                let mut found = 0;
                for (slot, &y) in (from..to).zip(&start.y[from..to]) {
                    let row = grid.lane(y).wrapping_sub(rows.start);
                    members[found] = (slot as u32, row);
                    found += usize::from((row as usize) < rows_len);
                }
                for &(slot, row) in &members[..found] {
                    put(slot as usize, row);
                }
            }
        }
        binned.finish();
        // Each row is sorted by the first step, as it comes to the row: a pass over the
        // strip here would read it all from memory and write it back once more.
        Strip {
            rows,
            main,
            unsorted: 0,
            ..Strip::default()
        }
    }

    /// Every particle the strip owns, in the strip's own memory, each run of
    /// [`GROUP`](super::grid::GROUP) sorted by [`slot_window`](super::grid::slot_window):
    /// what [`into_list_order`](super::into_list_order) takes.
    pub(super) fn into_slot_windows(mut self) -> Vec<Body> {
        self.main.append(&mut self.movers);
        // The runs the last step sorted are done; the rest, movers included, are not.
        let from = (self.grouped * GROUP).min(self.main.len());
        group_by_slot_window(&mut self.main[from..], &mut self.scratch);
        self.main
    }

    /// Says that the next step is the run's last. As that step writes `main` back, it sorts
    /// each finished run of [`GROUP`] by slot window while the run is still in cache: the
    /// work of [`Strip::into_slot_windows`], which otherwise reads all of `main` from memory
    /// once more.
    pub(super) fn last_step_next(&mut self) {
        self.ending = true;
    }

    /// Puts `main` back in key order where a last step sorted runs of it by slot window, for
    /// a strip stepped again or whose edges move afterwards (neither happens in a run). The
    /// runs hold the first particles of `main`, so sorting them by key is enough; the order
    /// of particles with one key is no part of any result.
    fn restore_key_order(&mut self) {
        if self.grouped > 0 {
            let end = (self.grouped * GROUP).min(self.main.len());
            self.main[..end].sort_by_key(|b| b.key);
            self.grouped = 0;
        }
    }

    pub(super) fn rows(&self) -> Range<u32> {
        self.rows.clone()
    }

    /// Every particle the strip owns, in no particular order.
    pub(super) fn bodies(&self) -> impl Iterator<Item = &Body> + Clone {
        self.main.iter().chain(&self.movers)
    }

    /// The particles in `row`, one sorted slice of each array.
    fn row(&self, grid: &Grid, row: u32) -> [&[Body]; 2] {
        let (lo, hi) = (grid.row_start(row), grid.row_start(row + 1));
        [&self.main[..], &self.movers[..]].map(|set| {
            let from = set.partition_point(|b| b.key < lo);
            let to = from + set[from..].partition_point(|b| b.key < hi);
            &set[from..to]
        })
    }

    /// The particles in `row`, sorted by key, into `out`.
    pub(super) fn row_into(&self, grid: &Grid, row: u32, out: &mut Vec<Body>) {
        out.clear();
        if self.grouped > 0 {
            // After the last step `main` is not in key order ([`Strip::restore_key_order`]):
            // no run asks for a row then, so a pass over the strip does.
            out.extend(self.bodies().filter(|b| grid.row_of(b.key) == row));
            out.sort_by_key(|body| body.key);
            return;
        }
        let [a, b] = self.row(grid, row);
        out.extend_from_slice(a);
        out.extend_from_slice(b);
        // Two arrays to merge, or a row the first step has not sorted yet.
        if !out.is_sorted_by_key(|body| body.key) {
            out.sort_by_key(|body| body.key);
        }
    }

    /// Gives up the strip's rows outside `rows` (new edges): the particles of those below go
    /// to `down` and those above to `up`, each sorted by key. The strip owns `rows` from now
    /// on; the rows it gains come through [`Strip::gain`]. Call it on a settled strip, whose
    /// arrays are sorted.
    pub(super) fn cede(
        &mut self,
        grid: &Grid,
        rows: Range<u32>,
        down: &mut Vec<Body>,
        up: &mut Vec<Body>,
    ) {
        self.sort_rows(grid);
        let (lo, hi) = (grid.row_start(rows.start), grid.row_start(rows.end));
        let [main, movers] = [&mut self.main, &mut self.movers];
        let (main_to, movers_to) = (
            main.partition_point(|b| b.key < hi),
            movers.partition_point(|b| b.key < hi),
        );
        merge_sorted(&main[main_to..], &movers[movers_to..], up);
        main.truncate(main_to);
        movers.truncate(movers_to);
        let (main_from, movers_from) = (
            main.partition_point(|b| b.key < lo),
            movers.partition_point(|b| b.key < lo),
        );
        merge_sorted(&main[..main_from], &movers[..movers_from], down);
        main.drain(..main_from);
        movers.drain(..movers_from);
        self.rows = rows;
    }

    /// Takes in the particles of rows gained next to the strip's own, sorted by key, from the
    /// neighbour below (`below`) or above: they go before or after all of `main`, which stays
    /// sorted. Fails if they are not in the strip's rows or not in order.
    pub(super) fn gain(
        &mut self,
        grid: &Grid,
        arrived: &[Body],
        below: bool,
    ) -> Result<(), String> {
        let (lo, hi) = (
            grid.row_start(self.rows.start),
            grid.row_start(self.rows.end),
        );
        let ordered = arrived.windows(2).all(|w| w[0].key <= w[1].key);
        let inside = arrived.iter().all(|b| (lo..hi).contains(&b.key));
        let beside = match (arrived.first(), arrived.last()) {
            (Some(_), Some(last)) if below => self.main.first().is_none_or(|m| last.key <= m.key),
            (Some(first), Some(_)) => self.main.last().is_none_or(|m| m.key <= first.key),
            _ => true,
        };
        if !(ordered && inside && beside) {
            return Err(
                "the rows a neighbour handed over are not the ones next to the strip".into(),
            );
        }
        self.sort_rows(grid);
        if below {
            self.main.splice(0..0, arrived.iter().copied());
        } else {
            self.main.extend_from_slice(arrived);
        }
        self.unsorted = self.main.len();
        Ok(())
    }

    /// Sorts every row of `main` the first step has not come to.
    fn sort_rows(&mut self, grid: &Grid) {
        self.restore_key_order();
        let mut scratch = (Vec::new(), Vec::new());
        sort_rows_through(
            grid,
            &mut self.main,
            &mut self.unsorted,
            u32::MAX,
            &mut scratch,
        );
    }

    /// How many particles each of the strip's rows holds, bottom row first.
    pub(super) fn row_counts(&self, grid: &Grid) -> Vec<u32> {
        let mut counts = vec![0u32; self.rows.len()];
        for body in self.bodies() {
            if let Some(count) = (grid.row_of(body.key))
                .checked_sub(self.rows.start)
                .and_then(|r| counts.get_mut(r as usize))
            {
                *count += 1;
            }
        }
        counts
    }

    /// Takes in particles that arrived from another strip; [`Strip::settle`] sorts them in.
    pub(super) fn admit<'a>(&mut self, bodies: impl IntoIterator<Item = &'a Body>) {
        self.movers.extend(bodies);
    }

    /// Sorts the movers after [`Strip::step`] and [`Strip::admit`].
    pub(super) fn settle(&mut self, grid: &Grid) {
        sort_by_key(grid, &mut self.movers, &mut self.scratch);
    }

    /// One step for every particle of the strip: forces from the strip's own particles and
    /// from `halos` (sorted arrays of the particles in the rows next to the strip), then the
    /// move. Afterwards the strip holds the particles still in its rows, unsorted movers
    /// included (call [`Strip::settle`] once the arrivals are in); those that left are in
    /// `leaving_down` and `leaving_up`.
    ///
    /// # Errors
    ///
    /// [`Escaped`] if a particle flew too far to bounce back; the strip is then unusable.
    pub(super) fn step(
        &mut self,
        grid: &Grid,
        halos: &[&[Body]],
        motion: Motion,
    ) -> Result<(), Escaped> {
        self.restore_key_order();
        #[cfg(target_arch = "x86_64")]
        if newer_x86_64() {
            // SAFETY: the processor has every feature `step_newer` is compiled for.
            return unsafe { self.step_newer(grid, halos, motion) };
        }
        self.step_any(grid, halos, motion)
    }

    /// [`Strip::step`] compiled for the x86-64 processors of the last decade (the level
    /// called x86-64-v3: AVX2, FMA, BMI1 and 2, LZCNT, MOVBE, F16C; and POPCNT). The
    /// arithmetic is the same operation for operation, so the bits are too: the compiler
    /// fuses no multiply into an add on its own. Serially at 10⁶ particles, ten steps, the
    /// whole run took 251, 258 and 268 ms (fastest, tenth and 25th percentile of thirty
    /// runs taking turns) against 269, 275 and 277 for the baseline build alone.
    ///
    /// # Safety
    ///
    /// The processor must have every feature enabled here ([`newer_x86_64`]).
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx,avx2,fma,bmi1,bmi2,lzcnt,movbe,popcnt,f16c")]
    unsafe fn step_newer(
        &mut self,
        grid: &Grid,
        halos: &[&[Body]],
        motion: Motion,
    ) -> Result<(), Escaped> {
        self.step_any(grid, halos, motion)
    }

    /// The body of [`Strip::step`], inlined into each version of it.
    #[inline(always)]
    fn step_any(&mut self, grid: &Grid, halos: &[&[Body]], motion: Motion) -> Result<(), Escaped> {
        let Strip {
            rows,
            main,
            unsorted,
            movers,
            queue,
            leaving_down,
            leaving_up,
            open,
            tables,
            near,
            scratch,
            ending,
            grouped,
        } = self;
        debug_assert_eq!(*grouped, 0);
        let last_step = std::mem::take(ending);
        // The last step's scratch for sorting runs of `main` by slot window.
        let mut group_scratch = Vec::new();
        let lanes = grid.lanes();
        // Every particle that stays in the strip's rows is written back into `main`.
        queue.clear();
        let mut rewrite = Rewrite {
            at: 0,
            keep: 0,
            queue,
        };
        leaving_down.clear();
        leaving_up.clear();
        for table in tables.iter_mut() {
            table.row = None;
            table.starts.resize(lanes as usize + 1 + RUN, 0);
        }
        // Particles that jump two rows or more within the strip: the next movers.
        let mut jumped = std::mem::take(scratch);
        jumped.clear();
        // `main` is read through column tables; the movers and at most two halo arrays per
        // side are swept by cursors. No allocation.
        let mut sweeps: [Option<Sweep<'_>>; 6] = Default::default();
        let sources = std::iter::once(&movers[..]).chain(halos.iter().copied());
        for (sweep, set) in sweeps.iter_mut().zip(sources.filter(|s| !s.is_empty())) {
            *sweep = Sweep::new(grid, set);
        }
        debug_assert!(halos.iter().filter(|h| !h.is_empty()).count() <= 5);
        // The rows whose particles may have a source in one of the swept arrays.
        let swept = sweeps
            .iter()
            .flatten()
            .map(|s| s.first_row.saturating_sub(1)..s.last_row + 2)
            .reduce(|a, b| a.start.min(b.start)..a.end.max(b.end))
            .unwrap_or(0..0);
        // Where the next row to tabulate begins in `main`.
        let mut tabulated = 0;
        // Open rows are `opened.start..opened.end`, in `open[row % 3]`.
        let mut opened = 0..0;
        let mut current = None;
        // The tables of the rows below, at and above the visited one.
        let mut around = [3usize; 3];
        let mut sweeping = false;
        // For the rows of a strip just built, which are sorted here, each as the step comes to it.
        let mut sorting = (Vec::new(), Vec::new());
        let (mut i, mut j) = (0, 0);
        while i < main.len() || j < movers.len() {
            prefetch(main.as_ptr().wrapping_add(i + AHEAD));
            if i == *unsorted && i < main.len() {
                let row = grid.row_of(main[i].key);
                sort_rows_through(grid, main, unsorted, row, &mut sorting);
            }
            let target = if j == movers.len() || (i < main.len() && main[i].key <= movers[j].key) {
                i += 1;
                main[i - 1]
            } else {
                j += 1;
                movers[j - 1]
            };
            let (px, py) = (target.x, target.y);
            let (row, col) = (grid.row_of(target.key), grid.col_of(target.key));
            debug_assert_eq!(grid.key(px, py), target.key);
            if current != Some(row) {
                current = Some(row);
                let first = row.saturating_sub(1);
                let last = (row + 1).min(lanes - 1);
                // The tables below read the rows up to `last` in key order.
                sort_rows_through(grid, main, unsorted, last, &mut sorting);
                for r in first..=last {
                    let table = &mut tables[(r % 3) as usize];
                    if table.row != Some(r) {
                        tabulated = table.fill(r, main, tabulated, grid);
                    }
                }
                // Nothing of `main` below row `first` is read again, and rows more than
                // one below this one are complete.
                rewrite.release(main, tables[(first % 3) as usize].starts[0] as usize);
                close(open, &mut opened, first, main, &mut rewrite);
                // In the last step, every run of `main` written for good (nothing below
                // `rewrite.at` is read again) is sorted by slot window while in cache.
                if last_step {
                    while (*grouped + 1) * GROUP <= rewrite.at {
                        let run = *grouped * GROUP..(*grouped + 1) * GROUP;
                        group_by_slot_window(&mut main[run], &mut group_scratch);
                        *grouped += 1;
                    }
                }
                // Rows still open after `close` start at `first` or later.
                let start = if opened.is_empty() {
                    first
                } else {
                    opened.start
                };
                opened = start..last + 1;
                around = [row.wrapping_sub(1), row, row + 1].map(|r| {
                    let k = (r % 3) as usize;
                    if tables[k].row == Some(r) { k } else { 3 }
                });
                sweeping = swept.contains(&row);
            }
            let (left, right) = (
                col.saturating_sub(1) as usize,
                (col + 1).min(lanes - 1) as usize,
            );
            near.clear();
            for &k in &around {
                debug_assert!(k < tables.len() && right < lanes as usize);
                // SAFETY: `around` holds indices of `tables` (0 to 3); every table has
                // more than `lanes` entries (resized above) and `left <= right < lanes`;
                // its entries are indices into `main` or its end (`Table::fill`), and the
                // zero table's are 0, so the range is within `main` and not reversed.
                let sources = unsafe {
                    let starts = &tables.get_unchecked(k).starts;
                    let (lo, hi) = (
                        *starts.get_unchecked(left) as usize,
                        *starts.get_unchecked(right + 1) as usize,
                    );
                    debug_assert!(lo <= hi && hi <= main.len());
                    main.get_unchecked(lo..hi)
                };
                gather(near, sources, px, py);
            }
            if sweeping {
                for sweep in sweeps.iter_mut().flatten() {
                    sweep.gather(near, grid, row, left as u32, right as u32, px, py);
                }
            }
            // Summed in list order of the sources, from zero; `force` decides, as in the
            // all-pairs loop.
            if near.len() > 1 {
                near.sort_unstable_by_key(|n| n.slot);
            }
            let (mut ax, mut ay) = (0.0, 0.0);
            for n in near.iter() {
                if let Some((fx, fy)) = force(px, py, n.x, n.y) {
                    ax += fx;
                    ay += fy;
                }
            }
            let mut body = target;
            motion.apply(&mut body.x, &mut body.y, &mut body.vx, &mut body.vy, ax, ay)?;
            body.key = grid.key(body.x, body.y);
            let to = grid.row_of(body.key);
            if to == row {
                open[(row % 3) as usize].stayed.push(body);
            } else if !rows.contains(&to) {
                if to < rows.start {
                    leaving_down.push(body);
                } else {
                    leaving_up.push(body);
                }
            } else if opened.contains(&to) {
                open[(to % 3) as usize].arrived.push(body);
            } else {
                jumped.push(body);
            }
        }
        // Every particle of `main` has been visited, so every row sorted.
        debug_assert_eq!(*unsorted, main.len());
        let read = main.len();
        rewrite.release(main, read);
        close(open, &mut opened, u32::MAX, main, &mut rewrite);
        rewrite.finish(main);
        *unsorted = main.len();
        movers.clear();
        movers.extend_from_slice(&jumped);
        *scratch = jumped;
        Ok(())
    }
}

/// Whether this processor has every feature of [`Strip::step_newer`]; asked once.
#[cfg(target_arch = "x86_64")]
fn newer_x86_64() -> bool {
    use std::arch::is_x86_feature_detected as has;
    static NEWER: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *NEWER.get_or_init(|| {
        has!("avx")
            && has!("avx2")
            && has!("fma")
            && has!("bmi1")
            && has!("bmi2")
            && has!("lzcnt")
            && has!("movbe")
            && has!("popcnt")
            && has!("f16c")
    })
}

/// How far ahead in `main`, in particles, a step asks for the memory it will read: a few
/// rows, far enough that the memory arrives before the step does. Measured at 10⁶
/// particles, forty steps, eight runs of each build taking turns: 12% off serial (1449
/// against 1652 ms) and 10% off `-t 2` (916 against 1013). Without it, the first read of
/// each row waited on memory; at 10⁵, which stays in cache, it changes nothing.
const AHEAD: usize = 4096;

/// Asks for the cache line at `at` to be loaded. A hint: it never faults, even where
/// nothing is mapped, so `at` may point past the end of an array.
#[inline(always)]
fn prefetch<T>(at: *const T) {
    // SAFETY: SSE, which the instruction needs, is part of every x86-64 processor; a
    // prefetch reads nothing the program sees and cannot fault.
    #[cfg(target_arch = "x86_64")]
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(at.cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = at;
}

/// A source in range of the visited particle.
#[derive(Debug, Clone, Copy)]
struct Near {
    x: f64,
    y: f64,
    slot: u32,
}

/// Appends to `near` the sources of `set` within the cutoff of (px, py) and not at that
/// very position: those the textbook's [`force`] acts between. (Writing every candidate
/// and keeping only those in range, without a branch, measured no faster.)
#[inline]
fn gather(near: &mut Vec<Near>, set: &[Body], px: f64, py: f64) {
    for source in set {
        let (dx, dy) = (source.x - px, source.y - py);
        // The same test as the all-pairs loop, and `force`'s own exclusion of a source at
        // the target's position (itself, say).
        if dx * dx + dy * dy <= CUTOFF2 && !(dx == 0.0 && dy == 0.0) {
            near.push(Near {
                x: source.x,
                y: source.y,
                slot: source.slot,
            });
        }
    }
}

/// Writes every open row below `row` back into `main`, in row order, each sorted, and
/// closes it.
fn close(
    open: &mut [Open; 3],
    opened: &mut Range<u32>,
    row: u32,
    main: &mut [Body],
    out: &mut Rewrite<'_>,
) {
    while opened.start < opened.end && opened.start < row {
        let o = &mut open[(opened.start % 3) as usize];
        insertion_sort(&mut o.stayed);
        o.arrived.sort_unstable_by_key(|b| b.key);
        merge_into(&o.stayed, &o.arrived, main, out);
        o.stayed.clear();
        o.arrived.clear();
        opened.start += 1;
    }
}

/// Sorts by key each row of `main` from `unsorted` on up to row `last`, and moves
/// `unsorted` past them; from `unsorted` on, `main`'s rows are grouped in row order.
/// `scratch` is [`sort_row`]'s, reused.
fn sort_rows_through(
    grid: &Grid,
    main: &mut [Body],
    unsorted: &mut usize,
    last: u32,
    scratch: &mut (Vec<u32>, Vec<Body>),
) {
    while let Some(first) = main.get(*unsorted)
        && grid.row_of(first.key) <= last
    {
        let (from, row) = (*unsorted, grid.row_of(first.key));
        let len = main[from..].partition_point(|b| grid.row_of(b.key) == row);
        sort_row(
            grid,
            &mut main[from..from + len],
            &mut scratch.0,
            &mut scratch.1,
        );
        *unsorted = from + len;
    }
}

/// Sorts the particles of one row by key: a counting sort by column for a long row, which
/// costs about a pass over the columns; a comparison sort for a short one.
fn sort_row(grid: &Grid, row: &mut [Body], counts: &mut Vec<u32>, sorted: &mut Vec<Body>) {
    let lanes = grid.lanes() as usize;
    // Counting costs about `lanes + 2 * len` steps, sorting `len * log(len)` comparisons.
    if row.len() < 32 || lanes > row.len() * 16 {
        row.sort_unstable_by_key(|b| b.key);
        return;
    }
    counts.clear();
    counts.resize(lanes + 1, 0);
    for body in row.iter() {
        counts[grid.col_of(body.key) as usize + 1] += 1;
    }
    // The running sum stays in a register: adding each count to the one before it in
    // memory waits on the store just made, a few cycles a column on every row.
    let mut sum = 0;
    for count in counts.iter_mut() {
        sum += *count;
        *count = sum;
    }
    sorted.clear();
    sorted.resize(row.len(), Body::default());
    for body in row.iter() {
        let at = &mut counts[grid.col_of(body.key) as usize];
        sorted[*at as usize] = *body;
        *at += 1;
    }
    row.copy_from_slice(sorted);
}

/// Sorts by key an array that is nearly in order: only the few out of place move.
fn insertion_sort(bodies: &mut [Body]) {
    for k in 1..bodies.len() {
        if bodies[k - 1].key <= bodies[k].key {
            continue;
        }
        let body = bodies[k];
        let at = bodies[..k].partition_point(|b| b.key <= body.key);
        bodies.copy_within(at..k, at + 1);
        bodies[at] = body;
    }
}

/// Writes the merge of `a`, long, and `b`, short, both sorted by key, to `out`: the runs
/// of `a` between the elements of `b` are copied whole.
fn merge_into(a: &[Body], b: &[Body], main: &mut [Body], out: &mut Rewrite<'_>) {
    let mut from = 0;
    for body in b {
        let to = from + a[from..].partition_point(|x| x.key <= body.key);
        out.write(main, &a[from..to]);
        out.write(main, std::slice::from_ref(body));
        from = to;
    }
    out.write(main, &a[from..]);
}

/// Where a step writes its output: over the front of `main`, behind the first particle it
/// still reads. Output with no room there yet waits in `queue`, in order, until the reads
/// move on; at the end of the step all of `main` is free.
struct Rewrite<'a> {
    /// The next index of `main` to write.
    at: usize,
    /// The first index of `main` still to be read: no write reaches it.
    keep: usize,
    queue: &'a mut VecDeque<Body>,
}

impl Rewrite<'_> {
    /// Writes `bodies` after what was written before.
    fn write(&mut self, main: &mut [Body], bodies: &[Body]) {
        let room = if self.queue.is_empty() {
            (self.keep - self.at).min(bodies.len())
        } else {
            0
        };
        main[self.at..self.at + room].copy_from_slice(&bodies[..room]);
        self.at += room;
        self.queue.extend(&bodies[room..]);
    }

    /// Nothing of `main` before `keep` is read again: what waits goes in as far as that.
    fn release(&mut self, main: &mut [Body], keep: usize) {
        debug_assert!(self.keep <= keep && keep <= main.len());
        self.keep = keep;
        let room = (self.keep - self.at).min(self.queue.len());
        for (slot, body) in main[self.at..self.at + room]
            .iter_mut()
            .zip(self.queue.drain(..room))
        {
            *slot = body;
        }
        self.at += room;
    }

    /// Ends the step, once all of `main` is released: the output becomes `main`, longer or
    /// shorter than the input by what came and went.
    fn finish(self, main: &mut Vec<Body>) {
        debug_assert_eq!(self.keep, main.len());
        main.truncate(self.at);
        main.extend(self.queue.drain(..));
    }
}

/// Appends `a` and `b`, each sorted by key, to `out` in key order.
fn merge_sorted(a: &[Body], b: &[Body], out: &mut Vec<Body>) {
    out.reserve(a.len() + b.len());
    let (mut i, mut j) = (0, 0);
    while i < a.len() && j < b.len() {
        if a[i].key <= b[j].key {
            out.push(a[i]);
            i += 1;
        } else {
            out.push(b[j]);
            j += 1;
        }
    }
    out.extend_from_slice(&a[i..]);
    out.extend_from_slice(&b[j..]);
}

#[cfg(test)]
mod tests {
    use super::super::super::init;
    use super::super::super::physics::DEFAULT_DT;
    use super::super::{
        row_counts,
        tests::{crowd_moving_down, xorshift},
    };
    use super::*;

    #[test]
    fn every_version_of_the_step_gives_the_same_bits() {
        let (grid, build, motion) = moving_strip(20_000, 5);
        let (mut dispatched, mut plain) = (build(), build());
        for _ in 0..5 {
            dispatched.step(&grid, &[], motion).unwrap();
            plain.step_any(&grid, &[], motion).unwrap();
            for strip in [&mut dispatched, &mut plain] {
                strip.settle(&grid);
            }
        }
        #[cfg(target_arch = "x86_64")]
        if newer_x86_64() {
            // The bits of the newer version, against the baseline's.
            let mut newer = build();
            for _ in 0..5 {
                // SAFETY: the processor has the features, just checked.
                unsafe { newer.step_newer(&grid, &[], motion) }.unwrap();
                newer.settle(&grid);
            }
            assert_eq!(newer.main, plain.main);
        }
        assert_eq!(dispatched.main, plain.main);
        assert_eq!(dispatched.movers, plain.movers);
    }

    /// A strip of `n` particles at random, moving, and its grid.
    fn moving_strip(n: usize, seed: u64) -> (Grid, impl Fn() -> Strip, Motion) {
        let size = init::box_size(n);
        let mut next = xorshift(seed);
        let mut unit = || (next() >> 11) as f64 / (1u64 << 53) as f64;
        let mut start = Particles::default();
        for id in 0..n as u32 {
            start.push(id, unit() * size, unit() * size, unit() - 0.5, unit() - 0.5);
        }
        let grid = Grid::new(size);
        let per_row = row_counts(&grid, &start.y);
        let build = move || Strip::from_start(&grid, &start, 0..grid.lanes(), &per_row, true);
        let motion = Motion {
            dt: DEFAULT_DT,
            size,
            correction: 1.0,
        };
        (grid, build, motion)
    }

    /// One step of both strips, `told` told first that it is the last if `last`.
    fn step_both(grid: &Grid, motion: Motion, told: &mut Strip, plain: &mut Strip, last: bool) {
        if last {
            told.last_step_next();
        }
        for strip in [told, plain] {
            strip.step(grid, &[], motion).unwrap();
            strip.settle(grid);
        }
    }

    /// A strip's particles by slot: what every result reads of them.
    fn by_slot(strip: &Strip) -> Vec<Body> {
        let mut bodies: Vec<Body> = strip.bodies().copied().collect();
        bodies.sort_by_key(|b| b.slot);
        bodies
    }

    #[test]
    fn a_last_step_groups_by_slot_window_as_the_end_would() {
        // Several runs of GROUP, and a shorter one.
        let (grid, build, motion) = moving_strip(3 * GROUP + 5_000, 11);
        let (mut told, mut plain) = (build(), build());
        for step in 1..=4 {
            step_both(&grid, motion, &mut told, &mut plain, step == 4);
        }
        // Every run the step finished writing was sorted as it went.
        assert!(told.grouped >= 2, "{} runs grouped", told.grouped);
        assert_eq!(plain.grouped, 0);
        assert_eq!(told.into_slot_windows(), plain.into_slot_windows());
    }

    #[test]
    fn a_strip_stepped_after_its_last_step_gives_the_same_bits() {
        let (grid, build, motion) = moving_strip(3 * GROUP + 5_000, 13);
        let (mut told, mut plain) = (build(), build());
        for step in 1..=4 {
            step_both(&grid, motion, &mut told, &mut plain, step == 2);
            if step == 2 {
                // Rows read out of a grouped strip hold what the plain strip's hold.
                assert!(told.grouped > 0);
                for row in [0, 7, grid.lanes() - 1] {
                    let (mut a, mut b) = (Vec::new(), Vec::new());
                    told.row_into(&grid, row, &mut a);
                    plain.row_into(&grid, row, &mut b);
                    assert!(a.is_sorted_by_key(|body| body.key));
                    for rows in [&mut a, &mut b] {
                        rows.sort_by_key(|body| (body.key, body.slot));
                    }
                    assert_eq!(a, b, "row {row}");
                }
            }
        }
        assert_eq!(told.grouped, 0);
        assert!(told.main.is_sorted_by_key(|b| b.key));
        assert_eq!(by_slot(&told), by_slot(&plain));
    }

    #[test]
    fn a_fresh_strip_sorts_its_rows_as_its_first_step_comes_to_them() {
        // Uniformly at random, so that many pairs are in range (the textbook's start has
        // none), and at rest.
        let n = 20_000;
        let size = init::box_size(n);
        let mut next = xorshift(7);
        let mut coordinate = || (next() >> 11) as f64 / (1u64 << 53) as f64 * size;
        let mut start = Particles::default();
        for id in 0..n as u32 {
            start.push(id, coordinate(), coordinate(), 0.0, 0.0);
        }
        let grid = Grid::new(size);
        let per_row = row_counts(&grid, &start.y);
        let rows = 0..grid.lanes();
        let build = || Strip::from_start(&grid, &start, rows.clone(), &per_row, true);
        let (mut lazy, mut sorted) = (build(), build());
        // Built, the rows are grouped but not sorted; a row read out is sorted all the same.
        assert!(!lazy.main.is_sorted_by_key(|b| b.key));
        let mut out = Vec::new();
        lazy.row_into(&grid, 5, &mut out);
        assert!(!out.is_empty() && out.is_sorted_by_key(|b| b.key));
        sorted.sort_rows(&grid);
        assert!(sorted.main.is_sorted_by_key(|b| b.key));
        let motion = Motion {
            dt: DEFAULT_DT,
            size,
            correction: 1.0,
        };
        for strip in [&mut lazy, &mut sorted] {
            strip.step(&grid, &[], motion).unwrap();
            strip.settle(&grid);
        }
        assert_eq!(lazy.unsorted, lazy.main.len());
        assert_eq!(lazy.main, sorted.main);
        assert_eq!(lazy.movers, sorted.movers);
    }

    #[test]
    fn output_that_would_pass_the_reads_waits_and_every_particle_comes_back_sorted() {
        let start = crowd_moving_down();
        let n = start.particles.len();
        let size = init::box_size(n);
        let grid = Grid::new(size);
        let per_row = row_counts(&grid, &start.particles.y);
        let mut strip = Strip::from_start(&grid, &start.particles, 0..grid.lanes(), &per_row, true);
        let motion = Motion {
            dt: DEFAULT_DT,
            size,
            correction: 1.0,
        };
        strip.step(&grid, &[], motion).unwrap();
        // The crowd's new row was written only once the reads had passed it.
        assert!(strip.queue.capacity() >= 300, "{}", strip.queue.capacity());
        strip.settle(&grid);
        let row_9 = strip.bodies().filter(|b| grid.row_of(b.key) == 9).count();
        assert_eq!(row_9, 300);
        assert!(strip.main.is_sorted_by_key(|b| b.key));
        let mut slots: Vec<u32> = strip.bodies().map(|b| b.slot).collect();
        slots.sort_unstable();
        assert_eq!(slots, (0..n as u32).collect::<Vec<_>>());
    }

    #[test]
    fn binned_rows_hold_their_bodies_in_the_order_pushed_whatever_the_alignment() {
        // Rows of every length from 0 to 40, so their starts fall at every offset within a
        // cache line, and some rows hold fewer bodies than one buffer.
        let lens: Vec<usize> = (0..41).chain([200, 3, 0, 17]).collect();
        let mut starts = vec![0];
        for len in &lens {
            starts.push(starts[starts.len() - 1] + len);
        }
        let n = starts[lens.len()];
        // Each row's bodies, pushed in an order that mixes the rows.
        let mut next = xorshift(9);
        let mut order: Vec<(usize, u32)> = Vec::new();
        for (row, &len) in lens.iter().enumerate() {
            order.extend((0..len).map(|_| (row, 0)));
        }
        for k in (1..order.len()).rev() {
            order.swap(k, next() as usize % (k + 1));
        }
        for (slot, entry) in order.iter_mut().enumerate() {
            entry.1 = slot as u32;
        }
        let body = |slot: u32| Body {
            x: f64::from(slot),
            slot,
            ..Body::default()
        };
        let mut expected = vec![Body::default(); n];
        let mut at = starts.clone();
        for &(row, slot) in &order {
            expected[at[row]] = body(slot);
            at[row] += 1;
        }
        // One array offset by a body, so the rows fall differently against cache lines.
        for shift in [0, 1] {
            let mut memory = vec![Body::default(); n + shift];
            let main = &mut memory[shift..];
            let mut binned = Binned::new(main, starts.clone());
            for &(row, slot) in &order {
                binned.push(row, body(slot));
            }
            binned.finish();
            assert_eq!(main, &expected[..], "shift {shift}");
        }
    }
}
