//! The textbook's multithreaded simulation: shared positions, and a barrier between the
//! phase where every thread reads all positions and the phase where each writes its own.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Barrier, Mutex, RwLock};
use std::thread;

use super::physics::{Particles, Runaway, accelerations, advance, collect_hits, divide};
use super::{Outcome, Owners, Run, Tally, Watch};

pub(crate) fn simulate(
    run: &Run,
    threads: usize,
    watch: Box<dyn Watch>,
) -> Result<(Outcome, Box<dyn Watch>), Runaway> {
    let ranges = divide(run.start.particles.len(), threads);
    // Each thread owns the writes to its block; the barrier keeps every read of a block
    // apart from its owner's write, so these locks are never contended.
    let blocks: Vec<RwLock<Particles>> = ranges
        .iter()
        .map(|range| RwLock::new(run.start.particles.slice(range.clone())))
        .collect();
    let barrier = Barrier::new(threads);
    // Thread 0 keeps the books; the others read the correction after a barrier.
    let tally = Mutex::new(Tally::new(run, watch));
    let stop = AtomicBool::new(false);
    let owners = Owners::Blocks(ranges.clone());
    // The step in which a thread's particle escaped (see `advance`), or 0.
    let runaway = AtomicU64::new(0);
    thread::scope(|scope| {
        for (rank, range) in ranges.iter().enumerate() {
            let (blocks, barrier, tally, stop, ranges, owners, runaway) =
                (&blocks, &barrier, &tally, &stop, &ranges, &owners, &runaway);
            scope.spawn(move || {
                let m = range.len();
                let (mut ax, mut ay) = (vec![0.0; m], vec![0.0; m]);
                let mut hits = Vec::new();
                for step in run.remaining_steps() {
                    let step = step + 1;
                    // Read phase: forces on my particles from everyone's positions.
                    let (tx, ty) = {
                        let mine = read(&blocks[rank]);
                        (mine.x.clone(), mine.y.clone())
                    };
                    hits.clear();
                    for (block, source) in blocks.iter().zip(ranges) {
                        let block = read(block);
                        collect_hits(&tx, &ty, &block.x, &block.y, source.start, &mut hits);
                    }
                    accelerations(&mut hits, &mut ax, &mut ay);
                    barrier.wait();
                    // Thread 0 decided before this barrier whether the last step was the
                    // last one; every thread sees the same answer here.
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    // Write phase: move my particles.
                    let correction = lock(tally).correction;
                    let moved = advance(
                        &mut write(&blocks[rank]),
                        &ax,
                        &ay,
                        run.dt,
                        run.size,
                        correction,
                    );
                    if moved.is_err() {
                        runaway.store(step, Ordering::Relaxed);
                    }
                    barrier.wait();
                    // Written before the barrier: every thread sees it here, and stops.
                    if runaway.load(Ordering::Relaxed) != 0 {
                        break;
                    }
                    // Thread 0 keeps the books while the others start the next read
                    // phase; nobody writes again until after the next barrier.
                    if rank == 0 && !run.reports_after(step) && lock(tally).stop_on_signal(step) {
                        stop.store(true, Ordering::Relaxed);
                    }
                    if rank == 0 && run.reports_after(step) {
                        let state = run.snapshot_due(step).then(|| gather(blocks));
                        let energy = run.needs_energy().then(|| {
                            let parts: Vec<_> = blocks.iter().map(read).collect();
                            super::physics::sum_in_order(
                                parts.iter().flat_map(|p| p.energy_terms()),
                            )
                        });
                        let mut tally = lock(tally);
                        tally.after_step(run, step, energy, state.as_ref().map(|p| (p, owners)));
                        if tally.stopped() {
                            stop.store(true, Ordering::Relaxed);
                        }
                    }
                }
            });
        }
    });
    if let step @ 1.. = runaway.into_inner() {
        return Err(Runaway { step });
    }
    let particles = gather(&blocks);
    let tally = tally
        .into_inner()
        .unwrap_or_else(|poison| poison.into_inner());
    Ok(tally.finish(particles, Vec::new()))
}

/// Every block, in list order.
fn gather(blocks: &[RwLock<Particles>]) -> Particles {
    let mut particles = Particles::default();
    for block in blocks {
        particles.extend(read(block).clone());
    }
    particles
}

// A panicking thread poisons the locks; scope() then re-raises its panic anyway, so the
// data behind a poisoned lock is never used for a result.
fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|poison| poison.into_inner())
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(|poison| poison.into_inner())
}

fn lock<T>(lock: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    lock.lock().unwrap_or_else(|poison| poison.into_inner())
}
