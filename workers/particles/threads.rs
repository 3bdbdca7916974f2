//! The textbook's multithreaded simulation: shared positions, and a barrier between the
//! phase where every thread reads all positions and the phase where each writes its own.

use std::sync::{Barrier, Mutex, RwLock};
use std::thread;

use super::physics::{Particles, accelerations, advance, collect_hits, divide, sum_in_order};
use super::{Outcome, Run};

pub(crate) fn simulate(run: &Run, threads: usize) -> Outcome {
    let ranges = divide(run.start.particles.len(), threads);
    // Each thread owns the writes to its block; the barrier keeps every read of a block
    // apart from its owner's write, so these locks are never contended.
    let blocks: Vec<RwLock<Particles>> = ranges
        .iter()
        .map(|range| RwLock::new(run.start.particles.slice(range.clone())))
        .collect();
    let barrier = Barrier::new(threads);
    let correction = Mutex::new(run.start.correction);
    let energies = Mutex::new(run.energy_log());
    thread::scope(|scope| {
        for (rank, range) in ranges.iter().enumerate() {
            let (blocks, barrier, correction, energies) =
                (&blocks, &barrier, &correction, &energies);
            let ranges = &ranges;
            scope.spawn(move || {
                let m = range.len();
                let (mut ax, mut ay) = (vec![0.0; m], vec![0.0; m]);
                let mut hits = Vec::new();
                for _step in run.remaining_steps() {
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
                    // Write phase: move my particles.
                    let c = *lock(correction);
                    advance(&mut write(&blocks[rank]), &ax, &ay, run.dt, run.size, c);
                    barrier.wait();
                    // Thread 0 sums the energy while the others start the next read phase;
                    // nobody writes velocities again until after the next barrier.
                    if rank == 0 && run.needs_energy() {
                        let energy = sum_in_order(
                            blocks
                                .iter()
                                .flat_map(|b| read(b).energy_terms().collect::<Vec<_>>()),
                        );
                        let mut c = lock(correction);
                        *c = run.next_correction(energy, *c);
                        lock(energies).push(energy);
                    }
                }
            });
        }
    });
    let mut particles = Particles::with_capacity(run.start.particles.len());
    for block in blocks {
        particles.extend(
            block
                .into_inner()
                .unwrap_or_else(|poison| poison.into_inner()),
        );
    }
    Outcome {
        particles,
        energies: energies
            .into_inner()
            .unwrap_or_else(|poison| poison.into_inner()),
    }
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
