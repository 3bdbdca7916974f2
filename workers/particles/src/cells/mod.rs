//! Cell lists: the O(n) algorithm, bit for bit the textbook's all-pairs results.
//!
//! The box is cut into square cells at least the cutoff wide ([`grid`]), and the particles
//! are kept sorted by cell, so each particle meets only the sources in its own and the eight
//! surrounding cells. The force is zero beyond the cutoff, so those are exactly the pairs
//! the all-pairs loop finds in range, and each particle sums them in list order of the
//! sources (see [`strip`]): the same bits.
//!
//! Work is split by *strips*: runs of whole grid rows, balanced by particle count at the
//! start. On a ring ([`ring`]) each worker owns a strip and trades those rows, and the
//! particles that cross into another strip, with its neighbours; serially the ring has one
//! worker, whose strip holds every row. With threads (`-t`, [`threads`]) each thread steps
//! its own strip, reading the rows next to it from its neighbours' published copies.

mod grid;
pub(crate) mod ring;
mod strip;
#[cfg(test)]
mod tests;
pub(crate) mod threads;

use std::ops::Range;

use grid::slot_window;
pub(crate) use grid::{Body, Grid};
use ringleader::{Loan, Ring, RingError, StageError, Ticket};
use serde::{Deserialize, Serialize};

use super::Owners;
use super::physics::{Particles, energy_term, sum_in_order};

/// How many particles of `y` (their row coordinates) each row of the grid holds: one pass
/// the coordinator makes, from which it cuts the strips and each worker sizes its own.
pub(crate) fn row_counts(grid: &Grid, y: &[f64]) -> Vec<u32> {
    let mut per_row = vec![0u32; grid.lanes() as usize];
    for &y in y {
        per_row[grid.lane(y) as usize] += 1;
    }
    per_row
}

/// The first row of each of `parts` strips, and then the number of rows: edges that give
/// each strip about the same number of particles, given how many each row holds. Every
/// strip gets at least one row while there are rows enough.
pub(crate) fn balanced_edges(per_row: &[u32], parts: usize) -> Vec<u32> {
    let lanes = per_row.len();
    let n: u128 = per_row.iter().map(|&c| u128::from(c)).sum();
    let mut edges = Vec::with_capacity(parts + 1);
    edges.push(0usize);
    let (mut row, mut below) = (0, 0u128);
    for k in 1..parts {
        let quota = n * k as u128 / parts as u128;
        while row < lanes && below < quota {
            below += u128::from(per_row[row]);
            row += 1;
        }
        let prev = edges[k - 1];
        let edge = if lanes >= parts {
            row.clamp(prev + 1, lanes - (parts - k))
        } else {
            row.clamp(prev, lanes)
        };
        edges.push(edge);
    }
    edges.push(lanes);
    edges.into_iter().map(|e| e as u32).collect()
}

/// How much slower than the mean its slowest strip must be before the strips' edges move.
const TOLERANCE: f64 = 1.10;

/// New edges for strips whose workers each took `busy[i]` seconds computing the last few
/// steps of the particles that `per_row` counts (every row of the grid, the strips' rows in
/// order), or `None` to keep `edges`. Each strip's share of the particles moves halfway from
/// what it holds to what its speed (particles per second computing) would give it, so that
/// the strips come to finish a step together without chasing one slow spell; but no
/// edge moves past the old rows of the strips beside it (a row changes hands between
/// neighbours only, in one round of messages), and every strip keeps a row. Nothing moves
/// while the slowest strip is within [`TOLERANCE`] of the mean, or if a time is not
/// positive, or when there are fewer rows than strips.
pub(crate) fn rebalanced(edges: &[u32], busy: &[f64], per_row: &[u32]) -> Option<Vec<u32>> {
    let parts = busy.len();
    let lanes = per_row.len();
    if parts < 2 || edges.len() != parts + 1 || lanes < parts {
        return None;
    }
    if busy.iter().any(|&b| !(b.is_finite() && b > 0.0)) {
        return None;
    }
    let mean = busy.iter().sum::<f64>() / parts as f64;
    if busy.iter().copied().fold(0.0, f64::max) <= TOLERANCE * mean {
        return None;
    }
    let counts: Vec<f64> = edges
        .windows(2)
        .map(|w| {
            per_row[w[0] as usize..w[1] as usize]
                .iter()
                .map(|&c| f64::from(c))
                .sum()
        })
        .collect();
    let n: f64 = counts.iter().sum();
    let overall = n / busy.iter().sum::<f64>();
    // A strip without particles has no speed of its own: give it the average.
    let speed: Vec<f64> = counts
        .iter()
        .zip(busy)
        .map(|(&c, &b)| if c > 0.0 { c / b } else { overall })
        .collect();
    let total: f64 = speed.iter().sum();
    let mut new = Vec::with_capacity(parts + 1);
    new.push(0u32);
    let (mut row, mut below, mut quota) = (0usize, 0.0, 0.0);
    for k in 1..parts {
        quota += (counts[k - 1] + n * speed[k - 1] / total) / 2.0;
        while row < lanes && below < quota {
            below += f64::from(per_row[row]);
            row += 1;
        }
        let lo = (edges[k - 1] as usize).max(new[k - 1] as usize + 1);
        let hi = (edges[k + 1] as usize).min(lanes - (parts - k));
        new.push(row.clamp(lo, hi.max(lo)) as u32);
    }
    new.push(lanes as u32);
    (new != edges).then_some(new)
}

/// Particles in list order from the bodies of every strip, in any order; `ids` are the
/// list's ids, which never move. For pictures; the final state takes
/// [`into_list_order`].
fn in_list_order<'a>(bodies: impl Iterator<Item = &'a Body>, ids: &[u32]) -> Particles {
    let n = ids.len();
    let mut list = Particles {
        ids: ids.to_vec(),
        x: vec![0.0; n],
        y: vec![0.0; n],
        vx: vec![0.0; n],
        vy: vec![0.0; n],
    };
    for b in bodies {
        let s = b.slot as usize;
        (list.x[s], list.y[s], list.vx[s], list.vy[s]) = (b.x, b.y, b.vx, b.vy);
    }
    list
}

/// A worker's final state, lent to the coordinator, which reads it a batch of windows at a
/// time ([`into_list_order_lent`]).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct End {
    /// Every particle the strip owns, as [`Strip::into_slot_windows`](strip::Strip) leaves
    /// them.
    bodies: Ticket<Body>,
    /// Where each batch starts in each group of `bodies` ([`grid::batch_starts`]).
    starts: Vec<u32>,
}

impl End {
    /// Lends `bodies`, a strip's particles as [`Strip::into_slot_windows`](strip::Strip)
    /// leaves them, in a run of `n` particles. Keep the [`Loan`] until the coordinator has
    /// answered.
    pub(crate) fn lend(
        ring: &Ring,
        bodies: Vec<Body>,
        n: usize,
    ) -> Result<(End, Loan<Body>), RingError> {
        let starts = grid::batch_starts(&bodies, n);
        let (bodies, loan) = ring.loan(bodies)?;
        Ok((End { bodies, starts }, loan))
    }
}

/// Where [`into_list_order`] finds the strips' bodies.
#[derive(Clone, Copy)]
enum Source<'a> {
    /// In this process: every strip's bodies, each run of [`GROUP`](grid::GROUP) sorted by
    /// [`slot_window`].
    Here(&'a [&'a [Body]]),
    /// Lent by the workers, each strip's bodies grouped the same way.
    Lent(&'a [End]),
}

/// The particles of `list` (the run's start, whose ids never move), in list order, given
/// the bodies of every strip, each run of [`GROUP`](grid::GROUP) of each part sorted by
/// [`slot_window`] ([`Strip::into_slot_windows`]). The start's own arrays are overwritten,
/// which spares allocating and zeroing as much again. The parts are taken one window at a
/// time, so every write lands in a stretch of the four arrays small enough to stay in
/// cache, where putting each body straight in its place would write memory at random.
/// With `threads` above one, that many threads take a run of windows each. `forked` says
/// that the run forked workers, so the list's pages may still be copy-on-write (each is
/// then faulted in before it is written). Fails unless the slots are exactly
/// `0..list.len()`, once each.
fn into_list_order(
    parts: &[&[Body]],
    list: Particles,
    threads: usize,
    forked: bool,
) -> Result<Particles, String> {
    // Each sorted run is a part of its own.
    let parts: Vec<&[Body]> = parts.iter().flat_map(|p| p.chunks(grid::GROUP)).collect();
    let stray = parts
        .iter()
        .flat_map(|part| part.last())
        .any(|b| slot_window(b.slot) as usize >= list.len().div_ceil(grid::WINDOW));
    if stray {
        return Err(format!("the workers returned a slot past {}", list.len()));
    }
    order(Source::Here(&parts), list, threads, forked).map_err(|e| e.to_string())
}

/// As [`into_list_order`], for the strips' bodies lent by the workers, which must keep them
/// until this returns. Each thread reads a batch of windows at a time, into a buffer that
/// stays in cache: between processes nothing as large as the state is copied, where a
/// worker's output ([`Ring::bulk_from_vec`]) is first copied whole into the coordinator's
/// fresh memory. Fails as [`into_list_order`], and with the [`RingError`] of a read that
/// failed (a worker that ended meanwhile gives a secondary one: its own end is the cause).
fn into_list_order_lent(
    ends: &[End],
    list: Particles,
    threads: usize,
) -> Result<Particles, StageError> {
    // Every body of every group is in one of its batches: no stray goes unread.
    let batches = grid::batches(list.len());
    for end in ends {
        let len = end.bodies.len();
        let groups = len.div_ceil(grid::GROUP);
        if end.starts.len() != groups * (batches + 1) {
            return Err(format!(
                "a worker lent {} batch starts for {groups} groups of {batches} batches",
                end.starts.len()
            )
            .into());
        }
        for (g, starts) in end.starts.chunks(batches + 1).enumerate() {
            let group = g * grid::GROUP..((g + 1) * grid::GROUP).min(len);
            let (first, last) = (starts[0] as usize, starts[batches] as usize);
            if first != group.start || last != group.end || !starts.is_sorted() {
                return Err(
                    format!("a worker lent batch starts {first}..{last} for {group:?}").into(),
                );
            }
        }
    }
    order(Source::Lent(ends), list, threads, true)
}

/// [`into_list_order`] and [`into_list_order_lent`].
fn order(
    source: Source<'_>,
    mut list: Particles,
    threads: usize,
    forked: bool,
) -> Result<Particles, StageError> {
    let n = list.len();
    let (batches, batch) = (grid::batches(n), grid::batch_windows(n));
    let windows = n.div_ceil(grid::WINDOW);
    let threads = threads.clamp(1, batches.max(1));
    // Thread t takes windows `cuts[t]..cuts[t + 1]`, slots `cuts[t] << WINDOW_BITS` on:
    // whole batches.
    let cuts: Vec<usize> = (0..=threads)
        .map(|t| (t * batches / threads * batch).min(windows))
        .collect();
    let first_slot = |w: usize| (w * grid::WINDOW).min(n);
    // Every thread has started and made its buffers: see `place`.
    let started = forked.then(|| Gate::new(threads));
    let mut chunks = Vec::with_capacity(threads);
    let (mut x, mut y, mut vx, mut vy) = (
        &mut list.x[..],
        &mut list.y[..],
        &mut list.vx[..],
        &mut list.vy[..],
    );
    for t in 0..threads {
        let len = first_slot(cuts[t + 1]) - first_slot(cuts[t]);
        let (cx, rx) = std::mem::take(&mut x).split_at_mut(len);
        let (cy, ry) = std::mem::take(&mut y).split_at_mut(len);
        let (cvx, rvx) = std::mem::take(&mut vx).split_at_mut(len);
        let (cvy, rvy) = std::mem::take(&mut vy).split_at_mut(len);
        (x, y, vx, vy) = (rx, ry, rvx, rvy);
        chunks.push((cuts[t]..cuts[t + 1], [cx, cy, cvx, cvy]));
    }
    let place = |windows: Range<usize>, out: [&mut [f64]; 4]| -> Result<usize, StageError> {
        let base = first_slot(windows.start);
        let mut seen = vec![0u64; out[0].len().div_ceil(64)];
        let [x, y, vx, vy] = out;
        // One window's particles, put in order here, in cache, and then streamed out.
        let mut window_state = vec![[0.0; 4]; grid::WINDOW.min(x.len())];
        // A batch of lent windows, read here; zeroed, so that its pages are not yet touched.
        let mut buffer: Vec<Body> = match source {
            Source::Here(_) => Vec::new(),
            Source::Lent(_) => bytemuck::zeroed_vec(batch * grid::WINDOW),
        };
        // Every element is written below, at random within a window. Where the start's
        // pages were shared with forked workers, each write would fault, so they are
        // faulted in at once. The kernel holds the memory-map lock meanwhile, and a thread
        // that maps memory waits for all of it, however it is cut up: a thread starting up
        // (its signal stack) or making its buffers. So each thread first waits for every
        // other to have done both: at 10⁶ particles between processes, the second thread
        // started 1.8 to 2.3 ms late (quartiles of sixteen runs), after the first had
        // populated. Pages that are the coordinator's own need nothing (populating them
        // walks them all the same: 1.3 ms serially at 10⁶). The buffers, fresh memory, are
        // populated with them.
        if let Some(started) = &started {
            started.arrive_and_wait();
            for part in [&mut *x, &mut *y, &mut *vx, &mut *vy] {
                ringleader::HugePages::populate(part);
            }
            ringleader::HugePages::populate(&mut window_state);
            ringleader::HugePages::populate(&mut buffer);
        }
        let mut placed = 0;
        // Puts the bodies of `windows` in place, taking each part's from `at` on.
        let mut fill = |parts: &[&[Body]], at: &mut [usize], windows: Range<usize>| {
            for window in windows {
                let from = first_slot(window) - base;
                let len = first_slot(window + 1) - base - from;
                let state = &mut window_state[..len];
                for (part, at) in parts.iter().zip(&mut *at) {
                    while let Some(b) = part.get(*at)
                        && slot_window(b.slot) as usize == window
                    {
                        let s = (b.slot as usize).wrapping_sub(base);
                        let bit = 1 << (s % 64);
                        match seen.get_mut(s / 64) {
                            Some(word) if *word & bit == 0 && s >= from && s - from < len => {
                                *word |= bit;
                            }
                            _ => {
                                let twice = format!("the workers returned slot {} twice", b.slot);
                                return Err(StageError::from(twice));
                            }
                        }
                        state[s - from] = [b.x, b.y, b.vx, b.vy];
                        placed += 1;
                        *at += 1;
                    }
                }
                for (k, out) in [&mut *x, &mut *y, &mut *vx, &mut *vy]
                    .into_iter()
                    .enumerate()
                {
                    stream_out(&mut out[from..from + len], state, k);
                }
            }
            Ok(())
        };
        match source {
            Source::Here(parts) => {
                let mut at: Vec<usize> = parts
                    .iter()
                    .map(|part| {
                        part.partition_point(|b| (slot_window(b.slot) as usize) < windows.start)
                    })
                    .collect();
                fill(parts, &mut at, windows)?;
            }
            Source::Lent(ends) => {
                for first in windows.clone().step_by(batch) {
                    let parts = read_batch(ends, first / batch, batches, &mut buffer)?;
                    let batch = first..(first + batch).min(windows.end);
                    let mut at = vec![0; parts.len()];
                    fill(&parts, &mut at, batch)?;
                    // A body the batch's windows did not take is in no window of it.
                    if parts.iter().zip(&at).any(|(part, &at)| at != part.len()) {
                        return Err("the workers lent a body outside its batch".into());
                    }
                }
            }
        }
        store_fence();
        Ok(placed)
    };
    // This thread takes the first run of windows itself, while the others start: with every
    // run on a thread of its own, the second started 1 to 3 ms after the first at 10⁵
    // particles between processes, about when the first had finished.
    let mut chunks = chunks.into_iter();
    let (windows, out) = chunks.next().unwrap_or_default();
    let placed: usize = std::thread::scope(|scope| {
        let mut handles = Vec::with_capacity(threads);
        let mut unstarted = Ok(0);
        for (windows, out) in chunks {
            if unstarted.is_err() {
                started.iter().for_each(Gate::call_off);
                continue;
            }
            let place = &place;
            match std::thread::Builder::new().spawn_scoped(scope, move || place(windows, out)) {
                Ok(handle) => handles.push(handle),
                Err(e) => {
                    started.iter().for_each(Gate::call_off);
                    let e = format!("no thread to put the final state in order with: {e}");
                    unstarted = Err(StageError::from(e));
                }
            }
        }
        let mine = place(windows, out);
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
            .fold(mine, |sum, placed| Ok(sum? + placed?))
            .and_then(|placed| Ok(placed + unstarted?))
    })?;
    if placed != n {
        return Err(format!("the workers returned {placed} of {n} particles").into());
    }
    Ok(list)
}

/// Holds threads back until a number of parties have each arrived or been called off.
struct Gate {
    /// The parties still to come.
    remaining: std::sync::Mutex<usize>,
    open: std::sync::Condvar,
}

impl Gate {
    fn new(parties: usize) -> Gate {
        Gate {
            remaining: std::sync::Mutex::new(parties),
            open: std::sync::Condvar::new(),
        }
    }

    /// Arrives, and waits for every other party.
    fn arrive_and_wait(&self) {
        let mut remaining = self.arrive();
        while *remaining > 0 {
            remaining =
                (self.open.wait(remaining)).unwrap_or_else(std::sync::PoisonError::into_inner);
        }
    }

    /// A party that will not come: the others need not wait for it.
    fn call_off(&self) {
        drop(self.arrive());
    }

    fn arrive(&self) -> std::sync::MutexGuard<'_, usize> {
        let mut remaining =
            (self.remaining.lock()).unwrap_or_else(std::sync::PoisonError::into_inner);
        *remaining = remaining.saturating_sub(1);
        if *remaining == 0 {
            self.open.notify_all();
        }
        remaining
    }
}

/// Reads batch `b` (of `batches`) of every lent state, whose starts
/// [`into_list_order_lent`] checked, into `buffer`, and returns each group's part of it, as
/// slices of `buffer`.
fn read_batch<'b>(
    ends: &[End],
    b: usize,
    batches: usize,
    buffer: &'b mut [Body],
) -> Result<Vec<&'b [Body]>, StageError> {
    let mut lens = Vec::new();
    let mut at = 0;
    for end in ends {
        let ranges: Vec<Range<usize>> = end
            .starts
            .chunks(batches + 1)
            .map(|starts| starts[b] as usize..starts[b + 1] as usize)
            .collect();
        let total: usize = ranges.iter().map(|r| r.len()).sum();
        let into = buffer
            .get_mut(at..at + total)
            .ok_or("the workers lent more bodies for a batch than it has slots")?;
        end.bodies.read(&ranges, into)?;
        lens.extend(ranges.iter().map(|r| r.len()));
        at += total;
    }
    let mut rest = &buffer[..at];
    Ok(lens
        .into_iter()
        .map(|len| {
            let (part, next) = rest.split_at(len);
            rest = next;
            part
        })
        .collect())
}

/// Writes element `k` of each of `state` to `out`, as [`into_list_order`] finishes a window:
/// on x86-64 with stores that bypass the cache (`movntpd`), since the arrays are not read
/// again here, and a plain store would first read each line from memory. Serially at 10⁶
/// particles the list order took 19.7 ms with plain stores straight into the arrays, and
/// 15.4 with each window put in order first and then streamed out; at 10⁵, 1.5 and 0.9 ms
/// (medians of ten runs taking turns). A thread calls [`store_fence`] before others read
/// what it streamed.
fn stream_out(out: &mut [f64], state: &[[f64; 4]], k: usize) {
    debug_assert_eq!(out.len(), state.len());
    let mut i = 0;
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_set_pd, _mm_stream_pd};
        while i < out.len() && !(out.as_ptr().wrapping_add(i) as usize).is_multiple_of(16) {
            out[i] = state[i][k];
            i += 1;
        }
        while i + 2 <= out.len() {
            // SAFETY: SSE2, which the instruction needs, is part of every x86-64 processor;
            // `out[i..i + 2]` is within `out` (the loop's condition) and 16-byte aligned (the
            // loop before), as `movntpd` requires.
            unsafe {
                _mm_stream_pd(
                    out.as_mut_ptr().add(i),
                    _mm_set_pd(state[i + 1][k], state[i][k]),
                );
            }
            i += 2;
        }
    }
    for (value, from) in out[i..].iter_mut().zip(&state[i..]) {
        *value = from[k];
    }
}

/// Orders this thread's streamed stores ([`stream_out`]) before whatever it does next, such
/// as ending, which another thread then sees.
fn store_fence() {
    // SAFETY: SSE, which the instruction needs, is part of every x86-64 processor; a fence
    // reads and writes nothing.
    #[cfg(target_arch = "x86_64")]
    unsafe {
        std::arch::x86_64::_mm_sfence();
    }
}

/// Which strip holds each list slot, for pictures.
fn owners<'a>(strips: impl Iterator<Item = impl Iterator<Item = &'a Body>>, n: usize) -> Owners {
    let mut ranks = vec![0; n];
    for (rank, bodies) in strips.enumerate() {
        for body in bodies {
            ranks[body.slot as usize] = rank as u32;
        }
    }
    Owners::Slots(ranks)
}

/// The kinetic energy of the bodies, summed in list order; `terms` is scratch space of
/// one term per particle of the run.
fn energy<'a>(bodies: impl Iterator<Item = &'a Body>, terms: &mut [f64]) -> f64 {
    for b in bodies {
        terms[b.slot as usize] = energy_term(b.vx, b.vy);
    }
    sum_in_order(terms.iter().copied())
}
