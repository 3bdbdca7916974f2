//! Cell lists: the O(n) algorithm, bit for bit the textbook's all-pairs results.
//!
//! The box is cut into square cells at least the cutoff wide ([`grid`]), and the particles
//! are kept sorted by cell, so each particle meets only the sources in its own and the eight
//! surrounding cells. The force is zero beyond the cutoff, so those are exactly the pairs
//! the all-pairs loop finds in range, and each particle sums them in list order of the
//! sources (see [`strip`]): the same bits.
//!
//! Work is split by *strips*: runs of whole grid rows, balanced by particle count at the
//! start. Serially one strip holds every row. With threads (`-t`) each thread steps its own
//! strip, reading the rows next to it from its neighbours' published copies. On a ring
//! ([`ring`]), each worker owns a strip and trades those rows, and the particles that cross
//! into another strip, with its neighbours.

mod grid;
pub(crate) mod ring;
mod strip;
#[cfg(test)]
mod tests;

use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Barrier, Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard};
use std::thread;

use grid::slot_window;
pub(crate) use grid::{Body, Grid};
use strip::Strip;

use super::physics::{Motion, Particles, Runaway, energy_term, sum_in_order};
use super::{Outcome, Owners, Run, Tally, Watch};

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

/// The particles of `list` (the run's start, whose ids never move), in list order, given
/// the bodies of every strip, each part sorted by [`slot_window`]
/// ([`Strip::into_slot_windows`]). The start's own arrays are overwritten, which spares
/// allocating and zeroing as much again. The parts are taken one window at a time, so every
/// write lands in a stretch of the four arrays small enough to stay in cache, where putting
/// each body straight in its place would write memory at random. With `threads` above one,
/// that many threads take a run of windows each. Fails unless the slots are exactly
/// `0..list.len()`, once each.
fn into_list_order(
    parts: &[&[Body]],
    mut list: Particles,
    threads: usize,
) -> Result<Particles, String> {
    let n = list.len();
    let windows = slot_window(n.saturating_sub(1) as u32) as usize + 1;
    let threads = threads.clamp(1, windows);
    // Thread t takes windows `cuts[t]..cuts[t + 1]`, slots `cuts[t] << WINDOW_BITS` on.
    let cuts: Vec<usize> = (0..=threads).map(|t| t * windows / threads).collect();
    let first_slot = |w: usize| (w * grid::WINDOW).min(n);
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
    let place = |windows: Range<usize>, out: [&mut [f64]; 4]| -> Result<usize, String> {
        let base = first_slot(windows.start);
        let mut seen = vec![0u64; out[0].len().div_ceil(64)];
        let [x, y, vx, vy] = out;
        let mut placed = 0;
        let mut at: Vec<usize> = parts
            .iter()
            .map(|part| part.partition_point(|b| (slot_window(b.slot) as usize) < windows.start))
            .collect();
        for window in windows {
            for (part, at) in parts.iter().zip(&mut at) {
                while let Some(b) = part.get(*at)
                    && slot_window(b.slot) as usize == window
                {
                    let s = b.slot as usize - base;
                    let bit = 1 << (s % 64);
                    match seen.get_mut(s / 64) {
                        Some(word) if *word & bit == 0 && s < x.len() => *word |= bit,
                        _ => {
                            return Err(format!("the workers returned slot {} twice", b.slot));
                        }
                    }
                    (x[s], y[s], vx[s], vy[s]) = (b.x, b.y, b.vx, b.vy);
                    placed += 1;
                    *at += 1;
                }
            }
        }
        Ok(placed)
    };
    let placed: usize = if threads == 1 {
        let (windows, out) = chunks.pop().unwrap_or((0..0, Default::default()));
        place(windows, out)?
    } else {
        std::thread::scope(|scope| {
            let handles: Vec<_> = chunks
                .into_iter()
                .map(|(windows, out)| scope.spawn(|| place(windows, out)))
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
                .sum::<Result<usize, String>>()
        })?
    };
    let stray = parts
        .iter()
        .flat_map(|part| part.last())
        .any(|b| slot_window(b.slot) as usize >= windows);
    if placed != n || stray {
        return Err(format!("the workers returned {placed} of {n} particles"));
    }
    Ok(list)
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

/// The serial simulation with cell lists: one strip of every row.
pub(crate) fn simulate_serial(
    mut run: Run,
    watch: Box<dyn Watch>,
) -> Result<(Outcome, Box<dyn Watch>), Runaway> {
    // The start's arrays become the end's: see `into_list_order`.
    let start = std::mem::take(&mut run.start.particles);
    let run = &run;
    let n = start.len();
    let grid = Grid::new(run.size);
    let per_row = row_counts(&grid, &start.y);
    let mut strip = Strip::from_start(&grid, &start, 0..grid.lanes(), &per_row);
    let all = Owners::single(n);
    let mut terms = if run.needs_energy() {
        vec![0.0; n]
    } else {
        Vec::new()
    };
    let mut tally = Tally::new(run, watch);
    let mut correction = run.start.correction;
    for step in run.remaining_steps() {
        let step = step + 1;
        let motion = Motion {
            dt: run.dt,
            size: run.size,
            correction,
        };
        strip
            .step(&grid, &[], motion)
            .map_err(|escaped| escaped.at(step))?;
        strip.settle(&grid);
        if run.reports_after(step) {
            let energy = run
                .needs_energy()
                .then(|| energy(strip.bodies(), &mut terms));
            let state = run
                .snapshot_due(step)
                .then(|| in_list_order(strip.bodies(), &start.ids));
            correction = tally.after_step(run, step, energy, state.as_ref().map(|p| (p, &all)));
        }
        if tally.stop_on_signal(step) {
            break;
        }
    }
    let out = into_list_order(&[&strip.into_slot_windows()], start, 1)
        .expect("one strip holds every particle once");
    Ok(tally.finish(out, Vec::new()))
}

/// What a thread shares with the others: the rows at the edges of its strip, copied at
/// the start of each step, and the particles that left its strip in the step.
#[derive(Debug, Default)]
struct Shared {
    edges: RwLock<(Vec<Body>, Vec<Body>)>,
    leaving: RwLock<Vec<Body>>,
}

/// Cell lists on `threads` threads that live for the whole run, one strip each. A step has
/// three phases between barriers, all of them parallel: each thread copies out its strip's
/// edge rows; each steps its strip, reading its neighbours' edge rows, and puts the
/// particles that left it aside; each takes in those that entered its rows. The coordinating
/// thread then keeps the books, while the others wait only when a step reports.
pub(crate) fn simulate_threads(
    mut run: Run,
    threads: usize,
    watch: Box<dyn Watch>,
) -> Result<(Outcome, Box<dyn Watch>), Runaway> {
    // The start's arrays become the end's: see `into_list_order`.
    let owned = std::mem::take(&mut run.start.particles);
    let (run, start) = (&run, &owned);
    let n = start.len();
    let grid = Grid::new(run.size);
    let per_row = row_counts(&grid, &start.y);
    let edges = balanced_edges(&per_row, threads);
    let rows: Vec<Range<u32>> = edges.windows(2).map(|w| w[0]..w[1]).collect();
    // The nearest strip below and above each that has rows: its edge row is the halo.
    let below: Vec<Option<usize>> = (0..threads)
        .map(|t| (0..t).rev().find(|&u| !rows[u].is_empty()))
        .collect();
    let above: Vec<Option<usize>> = (0..threads)
        .map(|t| (t + 1..threads).find(|&u| !rows[u].is_empty()))
        .collect();
    let shared: Vec<Shared> = (0..threads).map(|_| Shared::default()).collect();
    // Each strip is locked only by its own thread, except while the books are kept.
    // Each thread builds its own strip, and in the end sorts it by slot, in parallel.
    let strips: Vec<Mutex<Strip>> = (0..threads).map(|_| Mutex::default()).collect();
    let finals: Vec<Mutex<Vec<Body>>> = (0..threads).map(|_| Mutex::default()).collect();
    let barrier = Barrier::new(threads);
    let stop = AtomicBool::new(false);
    // The step in which a particle escaped, or 0.
    let runaway = AtomicU64::new(0);
    let correction = AtomicU64::new(run.start.correction.to_bits());
    let tally = Mutex::new(Tally::new(run, watch));
    let terms = Mutex::new(if run.needs_energy() {
        vec![0.0; n]
    } else {
        Vec::new()
    });
    thread::scope(|scope| {
        for t in 0..threads {
            let (shared, strips, barrier, stop, runaway, correction, tally, terms) = (
                &shared,
                &strips,
                &barrier,
                &stop,
                &runaway,
                &correction,
                &tally,
                &terms,
            );
            let (below, above, grid, finals, per_row) =
                (below[t], above[t], &grid, &finals, &per_row);
            let rows = rows[t].clone();
            let worker = move || {
                *lock(&strips[t]) = Strip::from_start(grid, start, rows, per_row);
                for step in run.remaining_steps() {
                    let step = step + 1;
                    {
                        let strip = lock(&strips[t]);
                        let mut edges = write(&shared[t].edges);
                        let range = strip.rows();
                        if !range.is_empty() {
                            let (bottom, top) = &mut *edges;
                            strip.row_into(grid, range.start, bottom);
                            strip.row_into(grid, range.end - 1, top);
                        }
                    }
                    barrier.wait();
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    {
                        let halo_below = below.map(|u| read(&shared[u].edges));
                        let halo_above = above.map(|u| read(&shared[u].edges));
                        let halo_below = halo_below.as_ref().map_or(&[][..], |e| &e.1[..]);
                        let halo_above = halo_above.as_ref().map_or(&[][..], |e| &e.0[..]);
                        let motion = Motion {
                            dt: run.dt,
                            size: run.size,
                            correction: f64::from_bits(correction.load(Ordering::Relaxed)),
                        };
                        let mut strip = lock(&strips[t]);
                        let moved = strip.step(grid, &[halo_below, halo_above], motion);
                        let mut leaving = write(&shared[t].leaving);
                        leaving.clear();
                        leaving.extend_from_slice(&strip.leaving_down);
                        leaving.extend_from_slice(&strip.leaving_up);
                        if moved.is_err() {
                            runaway.store(step, Ordering::Relaxed);
                        }
                    }
                    barrier.wait();
                    if runaway.load(Ordering::Relaxed) != 0 {
                        break;
                    }
                    {
                        let mut strip = lock(&strips[t]);
                        let range = strip.rows();
                        for other in shared.iter() {
                            let leaving = read(&other.leaving);
                            let arriving = leaving
                                .iter()
                                .filter(|b| range.contains(&grid.row_of(b.key)));
                            strip.admit(arriving);
                        }
                        strip.settle(grid);
                    }
                    if !run.reports_after(step) {
                        if t == 0 && lock(tally).stop_on_signal(step) {
                            stop.store(true, Ordering::Relaxed);
                        }
                        continue;
                    }
                    // The books: every strip is settled before the coordinating thread
                    // reads them, and nobody steps on until it has decided.
                    barrier.wait();
                    if t == 0 {
                        let strips: Vec<_> = strips.iter().map(lock).collect();
                        let bodies = || strips.iter().flat_map(|s| s.bodies());
                        let energy = run
                            .needs_energy()
                            .then(|| energy(bodies(), &mut lock(terms)));
                        let state = run.snapshot_due(step).then(|| {
                            let owners = owners(strips.iter().map(|s| s.bodies()), n);
                            (in_list_order(bodies(), &start.ids), owners)
                        });
                        let mut tally = lock(tally);
                        let next = tally.after_step(
                            run,
                            step,
                            energy,
                            state.as_ref().map(|(p, o)| (p, o)),
                        );
                        correction.store(next.to_bits(), Ordering::Relaxed);
                        if tally.stopped() {
                            stop.store(true, Ordering::Relaxed);
                        }
                    }
                    barrier.wait();
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                }
                *lock(&finals[t]) = std::mem::take(&mut *lock(&strips[t])).into_slot_windows();
            };
            scope.spawn(worker);
        }
    });
    if let step @ 1.. = runaway.into_inner() {
        return Err(Runaway { step });
    }
    let finals: Vec<Vec<Body>> = finals
        .into_iter()
        .map(|f| f.into_inner().unwrap_or_else(PoisonError::into_inner))
        .collect();
    let parts: Vec<&[Body]> = finals.iter().map(|f| &f[..]).collect();
    let particles =
        into_list_order(&parts, owned, threads).expect("the strips hold every particle once");
    let tally = tally.into_inner().unwrap_or_else(PoisonError::into_inner);
    Ok(tally.finish(particles, Vec::new()))
}

// A panicking thread poisons the locks; scope() then re-raises its panic anyway, so the
// data behind a poisoned lock is never used for a result.
fn read<T>(lock: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(PoisonError::into_inner)
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(PoisonError::into_inner)
}

fn lock<T>(lock: &Mutex<T>) -> MutexGuard<'_, T> {
    lock.lock().unwrap_or_else(PoisonError::into_inner)
}
