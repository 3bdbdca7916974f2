//! Cell lists: bin the sources into a grid of cells at least the cutoff wide, and check each
//! target only against the sources in its own and the eight surrounding cells. The force is
//! zero beyond the cutoff, so the in-range pairs are exactly those of the all-pairs loop;
//! they are recorded as hits and summed in list order by the same
//! [`accelerations`](super::physics::accelerations), so the result is the same, bit for bit.

use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{
    Barrier, Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard,
};
use std::thread;

use super::physics::{
    CUTOFF, CUTOFF2, Hit, Runaway, accelerations, advance, divide, force, sum_in_order,
};
use super::{Outcome, Owners, Run, Tally, Watch};

/// The narrowest cell. Wider than the cutoff by a margin, so that rounding in the cell
/// index can never put two particles in range more than one cell apart.
pub(crate) const CELL: f64 = CUTOFF * 1.01;

/// A grid over a set of sources, rebuilt every step; its buffers are reused.
#[derive(Debug, Default)]
pub(crate) struct Grid {
    x0: f64,
    y0: f64,
    /// Cells per unit length; zero when there is one column (or row).
    inv_x: f64,
    inv_y: f64,
    cols: usize,
    rows: usize,
    /// Cell `c` holds the sources `members[starts[c]..starts[c + 1]]`; cells run along rows,
    /// so three cells side by side are one range.
    starts: Vec<u32>,
    /// Source indices, by cell, ascending within a cell.
    members: Vec<u32>,
    /// The sources' positions in the same order, so a cell's sources are read in sequence.
    xs: Vec<f64>,
    ys: Vec<f64>,
    cells: Vec<u32>,
}

impl Grid {
    /// Bins the sources at (`x[i]`, `y[i]`) into cells spanning their bounding box.
    pub(crate) fn bin(&mut self, x: &[f64], y: &[f64]) {
        debug_assert_eq!(x.len(), y.len());
        let n = x.len();
        let bounds = |v: &[f64]| {
            v.iter()
                .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &p| {
                    (lo.min(p), hi.max(p))
                })
        };
        let (x0, x1) = bounds(x);
        let (y0, y1) = bounds(y);
        let (mut cols, mut rows) = (lanes(x1 - x0), lanes(y1 - y0));
        // Far more cells than particles only costs memory and time: widen the cells.
        let limit = 4 * n + 64;
        while cols * rows > limit {
            cols = (cols / 2).max(1);
            rows = (rows / 2).max(1);
        }
        self.x0 = if x0.is_finite() { x0 } else { 0.0 };
        self.y0 = if y0.is_finite() { y0 } else { 0.0 };
        self.inv_x = if cols > 1 {
            cols as f64 / (x1 - x0)
        } else {
            0.0
        };
        self.inv_y = if rows > 1 {
            rows as f64 / (y1 - y0)
        } else {
            0.0
        };
        self.cols = cols;
        self.rows = rows;

        // A counting sort by cell, stable so each cell lists its sources in index order.
        let mut cells = std::mem::take(&mut self.cells);
        cells.clear();
        cells.extend(
            x.iter()
                .zip(y)
                .map(|(&px, &py)| self.cell_of(px, py) as u32),
        );
        self.cells = cells;
        self.starts.clear();
        self.starts.resize(cols * rows + 1, 0);
        for &cell in &self.cells {
            self.starts[cell as usize + 1] += 1;
        }
        for c in 0..cols * rows {
            self.starts[c + 1] += self.starts[c];
        }
        self.members.resize(n, 0);
        self.xs.resize(n, 0.0);
        self.ys.resize(n, 0.0);
        // `cursor[c]` is where cell c's next member goes: a copy of `starts` shifted by one.
        let mut cursor = self.starts[..cols * rows].to_vec();
        for (i, &cell) in self.cells.iter().enumerate() {
            let at = cursor[cell as usize] as usize;
            cursor[cell as usize] += 1;
            self.members[at] = i as u32;
            self.xs[at] = x[i];
            self.ys[at] = y[i];
        }
    }

    /// The cell of a point, clamped into the grid: points on the far edges (a particle at
    /// the wall, or the last one of the bounding box) land in the last cell, never outside.
    fn cell_of(&self, px: f64, py: f64) -> usize {
        let cx = index((px - self.x0) * self.inv_x, self.cols);
        let cy = index((py - self.y0) * self.inv_y, self.rows);
        cy * self.cols + cx
    }

    /// Records the in-range pairs for the targets among the binned sources: those with
    /// source index in `targets`, as target `index - targets.start`. Sources are named by
    /// `slots[index]`, their list slot. Hits come out grouped by cell, not sorted.
    pub(crate) fn collect_hits(&self, slots: &[u32], targets: Range<usize>, hits: &mut Vec<Hit>) {
        let (cols, rows) = (self.cols, self.rows);
        for cy in 0..rows {
            let (up, down) = (cy.saturating_sub(1), (cy + 1).min(rows - 1));
            for cx in 0..cols {
                let cell = cy * cols + cx;
                let mine = self.starts[cell] as usize..self.starts[cell + 1] as usize;
                if mine.is_empty() {
                    continue;
                }
                let (left, right) = (cx.saturating_sub(1), (cx + 1).min(cols - 1));
                for k in mine {
                    let member = self.members[k] as usize;
                    if !targets.contains(&member) {
                        continue;
                    }
                    let target = (member - targets.start) as u32;
                    let (px, py) = (self.xs[k], self.ys[k]);
                    for row in up..=down {
                        let from = self.starts[row * cols + left] as usize;
                        let to = self.starts[row * cols + right + 1] as usize;
                        for s in from..to {
                            let (ox, oy) = (self.xs[s], self.ys[s]);
                            let dx = ox - px;
                            let dy = oy - py;
                            // The same test, then the same force, as the all-pairs loop.
                            if dx * dx + dy * dy <= CUTOFF2
                                && let Some((ax, ay)) = force(px, py, ox, oy)
                            {
                                hits.push(Hit {
                                    target,
                                    source: slots[self.members[s] as usize],
                                    ax,
                                    ay,
                                });
                            }
                        }
                    }
                }
            }
        }
    }
}

/// How many cells of at least [`CELL`] fit across `width`, at least one.
fn lanes(width: f64) -> usize {
    let lanes = (width / CELL).floor();
    // Also false for NaN: a grid over no particles, or over broken ones, has one cell.
    if lanes >= 1.0 {
        (lanes as usize).min(1 << 20)
    } else {
        1
    }
}

/// A cell coordinate from a scaled offset, clamped into `0..cells`. The float-to-int cast
/// truncates, which is the floor for the offsets that matter (never negative), saturates
/// at 0 for the rest, and sends NaN to 0.
fn index(scaled: f64, cells: usize) -> usize {
    (scaled as usize).min(cells - 1)
}

/// The identity map from index to list slot, for a grid over the whole list.
fn identity(n: usize) -> Vec<u32> {
    (0..n as u32).collect()
}

/// The serial simulation with cell lists.
pub(crate) fn simulate_serial(
    run: &Run,
    watch: Box<dyn Watch>,
) -> Result<(Outcome, Box<dyn Watch>), Runaway> {
    let mut particles = run.start.particles.clone();
    let n = particles.len();
    let all = Owners::single(n);
    let slots = identity(n);
    let mut grid = Grid::default();
    let (mut ax, mut ay) = (vec![0.0; n], vec![0.0; n]);
    let mut hits = Vec::new();
    let mut tally = Tally::new(run, watch);
    let mut correction = run.start.correction;
    for step in run.remaining_steps() {
        let step = step + 1;
        grid.bin(&particles.x, &particles.y);
        hits.clear();
        grid.collect_hits(&slots, 0..n, &mut hits);
        accelerations(&mut hits, &mut ax, &mut ay);
        advance(&mut particles, &ax, &ay, run.dt, run.size, correction)
            .map_err(|escaped| escaped.at(step))?;
        if run.reports_after(step) {
            let energy = run.needs_energy().then(|| particles.energy());
            let snapshot = run.snapshot_due(step).then_some((&particles, &all));
            correction = tally.after_step(run, step, energy, snapshot);
            if tally.stopped() {
                break;
            }
        }
    }
    Ok(tally.finish(particles, Vec::new()))
}

/// Cell lists on `threads` threads that live for the whole run. Each step thread 0 builds
/// the grid; behind a barrier every thread finds the pairs of its own block of the list (the
/// textbook's blocks) and sums their accelerations; behind another, thread 0 moves the
/// particles and keeps the books.
pub(crate) fn simulate_threads(
    run: &Run,
    threads: usize,
    watch: Box<dyn Watch>,
) -> Result<(Outcome, Box<dyn Watch>), Runaway> {
    let n = run.start.particles.len();
    let blocks = divide(n, threads);
    let owners = Owners::Blocks(blocks.clone());
    let slots = identity(n);
    // Thread 0 writes the state only while every other thread waits at a barrier, so these
    // locks are never contended.
    let state = RwLock::new((run.start.particles.clone(), Grid::default()));
    let forces: Vec<Mutex<(Vec<f64>, Vec<f64>)>> = blocks
        .iter()
        .map(|block| Mutex::new((vec![0.0; block.len()], vec![0.0; block.len()])))
        .collect();
    let barrier = Barrier::new(threads);
    let stop = AtomicBool::new(false);
    let mut tally = Tally::new(run, watch);
    let mut correction = run.start.correction;
    let mut runaway = None;
    {
        let mut state = write(&state);
        let (particles, grid) = &mut *state;
        grid.bin(&particles.x, &particles.y);
    }
    thread::scope(|scope| {
        let (state, forces, barrier, stop, slots) = (&state, &forces, &barrier, &stop, &slots);
        let find = move |rank: usize, block: Range<usize>, hits: &mut Vec<Hit>| {
            hits.clear();
            read(state).1.collect_hits(slots, block, hits);
            let (ax, ay) = &mut *lock(&forces[rank]);
            accelerations(hits, ax, ay);
        };
        for (rank, block) in blocks.iter().enumerate().skip(1) {
            let block = block.clone();
            scope.spawn(move || {
                let mut hits = Vec::new();
                for _ in run.remaining_steps() {
                    barrier.wait();
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    find(rank, block.clone(), &mut hits);
                    barrier.wait();
                }
            });
        }
        let (mut ax, mut ay) = (vec![0.0; n], vec![0.0; n]);
        let mut hits = Vec::new();
        for step in run.remaining_steps() {
            let step = step + 1;
            barrier.wait();
            find(0, blocks[0].clone(), &mut hits);
            barrier.wait();
            for (block, force) in blocks.iter().zip(forces) {
                let force = lock(force);
                ax[block.clone()].copy_from_slice(&force.0);
                ay[block.clone()].copy_from_slice(&force.1);
            }
            let mut state = write(state);
            let (particles, grid) = &mut *state;
            if let Err(escaped) = advance(particles, &ax, &ay, run.dt, run.size, correction) {
                runaway = Some(escaped.at(step));
            } else if run.reports_after(step) {
                let energy = run
                    .needs_energy()
                    .then(|| sum_in_order(particles.energy_terms()));
                let snapshot = run.snapshot_due(step).then_some((&*particles, &owners));
                correction = tally.after_step(run, step, energy, snapshot);
            }
            if runaway.is_some() || (run.reports_after(step) && tally.stopped()) {
                // The others see it behind the next barrier, and stop there too.
                stop.store(true, Ordering::Relaxed);
                drop(state);
                if step < run.steps {
                    barrier.wait();
                }
                break;
            }
            grid.bin(&particles.x, &particles.y);
        }
    });
    if let Some(runaway) = runaway {
        return Err(runaway);
    }
    let (particles, _) = state.into_inner().unwrap_or_else(PoisonError::into_inner);
    Ok(tally.finish(particles, Vec::new()))
}

// A panicking thread poisons the locks; scope() then re-raises its panic anyway, so the
// data behind a poisoned lock is never used for a result.
fn read<T>(lock: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(PoisonError::into_inner)
}

fn write<T>(lock: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(PoisonError::into_inner)
}

fn lock<T>(lock: &Mutex<T>) -> MutexGuard<'_, T> {
    lock.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
use super::physics::Particles;

/// The hits of the all-pairs loop over `particles`, for comparison in tests.
#[cfg(test)]
fn all_pairs_hits(particles: &Particles) -> Vec<Hit> {
    let mut hits = Vec::new();
    super::physics::collect_hits(
        &particles.x,
        &particles.y,
        &particles.x,
        &particles.y,
        0,
        &mut hits,
    );
    hits
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workers::particles::init;

    fn sorted(mut hits: Vec<Hit>) -> Vec<(u32, u32, u64, u64)> {
        hits.sort_unstable_by_key(|h| (h.target, h.source));
        hits.iter()
            .map(|h| (h.target, h.source, h.ax.to_bits(), h.ay.to_bits()))
            .collect()
    }

    fn cell_hits(particles: &Particles) -> Vec<Hit> {
        let mut grid = Grid::default();
        grid.bin(&particles.x, &particles.y);
        let mut hits = Vec::new();
        grid.collect_hits(&identity(particles.len()), 0..particles.len(), &mut hits);
        hits
    }

    /// `n` particles scattered at random over the textbook's box for `n`, seeded.
    fn scattered(n: usize) -> Particles {
        let size = init::box_size(n);
        let mut mt = rand_mt::Mt::new(7);
        let mut unit = || f64::from(mt.next_u32()) / f64::from(u32::MAX);
        let mut particles = Particles::default();
        for id in 0..n as u32 {
            let (x, y) = (size * unit(), size * unit());
            particles.push(id, x, y, 0.0, 0.0);
        }
        particles
    }

    #[test]
    fn finds_the_same_pairs_as_all_pairs() {
        let particles = scattered(3000);
        let want = sorted(all_pairs_hits(&particles));
        assert!(!want.is_empty());
        assert_eq!(sorted(cell_hits(&particles)), want);
    }

    #[test]
    fn pairs_across_cell_edges_and_at_the_walls_are_not_lost() {
        let size = 0.1;
        let mut particles = Particles::default();
        // Pairs straddling every cell edge, at the walls, in the corners, and exactly at
        // the cutoff; the last two share a position (no force between them).
        let mut id = 0;
        let mut add = |p: &mut Particles, x: f64, y: f64| {
            p.push(id, x, y, 0.0, 0.0);
            id += 1;
        };
        for k in 0..=10 {
            let edge = k as f64 * CELL;
            add(&mut particles, edge - 0.004, 0.05);
            add(&mut particles, edge + 0.004, 0.05);
            add(&mut particles, 0.03, edge.min(size));
            add(&mut particles, 0.03 + 1e-9, (edge - 0.009).max(0.0));
        }
        for (x, y) in [(0.0, 0.0), (0.0, 0.009), (size, size), (size - 0.01, size)] {
            add(&mut particles, x, y);
        }
        add(&mut particles, 0.07, 0.07);
        add(&mut particles, 0.07, 0.07);
        let want = sorted(all_pairs_hits(&particles));
        assert!(want.len() > 20, "{}", want.len());
        assert_eq!(sorted(cell_hits(&particles)), want);
    }

    #[test]
    fn a_grid_over_one_point_or_none_has_one_cell() {
        let mut grid = Grid::default();
        grid.bin(&[], &[]);
        assert_eq!((grid.cols, grid.rows), (1, 1));
        grid.bin(&[0.5], &[0.5]);
        assert_eq!((grid.cols, grid.rows), (1, 1));
        let mut hits = Vec::new();
        grid.collect_hits(&[0], 0..1, &mut hits);
        assert!(hits.is_empty());
    }

    #[test]
    fn collects_only_the_targets_asked_for() {
        let particles = scattered(500);
        let mut grid = Grid::default();
        grid.bin(&particles.x, &particles.y);
        let mut hits = Vec::new();
        grid.collect_hits(&identity(500), 100..200, &mut hits);
        let want: Vec<_> = sorted(all_pairs_hits(&particles))
            .into_iter()
            .filter(|h| (100..200).contains(&h.0))
            .map(|(t, s, x, y)| (t - 100, s, x, y))
            .collect();
        assert_eq!(sorted(hits), want);
    }
}
