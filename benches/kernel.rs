//! The force kernels on the textbook's initial state: the direct translation, and every
//! kernel this CPU runs.

// The stage's unit tests come along with its modules; this target does not run them.
#![allow(dead_code, unused_imports, unreachable_pub, missing_docs)]

// The stage's physics and kernel, compiled here as they are in the binary.
#[path = "../workers/particles/init.rs"]
mod init;
#[path = "../workers/particles/kernel.rs"]
mod kernel;
#[path = "../workers/particles/physics.rs"]
mod physics;

use init::initial_state;
use kernel::{Body, Kernel, direct};
use physics::Hit;

const N: usize = 4000;

fn main() {
    divan::main();
}

#[divan::bench]
fn direct_aos(bencher: divan::Bencher) {
    let p = initial_state(N);
    let bodies: Vec<Body> =
        p.x.iter()
            .zip(&p.y)
            .map(|(&x, &y)| Body {
                x,
                y,
                ..Body::default()
            })
            .collect();
    let mut hits: Vec<Hit> = Vec::new();
    bencher
        .counter(divan::counter::ItemsCount::new(N * N))
        .bench_local(|| {
            hits.clear();
            direct(&bodies, &bodies, 0, &mut hits);
            hits.len()
        });
}

#[divan::bench(args = Kernel::supported_kernels())]
fn soa(bencher: divan::Bencher, kernel: Kernel) {
    let p = initial_state(N);
    let mut hits: Vec<Hit> = Vec::new();
    bencher
        .counter(divan::counter::ItemsCount::new(N * N))
        .bench_local(|| {
            hits.clear();
            kernel.collect_hits(&p.x, &p.y, &p.x, &p.y, 0, &mut hits);
            hits.len()
        });
}
