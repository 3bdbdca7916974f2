//! The force kernels on the textbook's initial state: the direct translation, and every
//! kernel this CPU runs.

use ringleader_particles::init::initial_state;
use ringleader_particles::kernel::{Body, Kernel, direct};
use ringleader_particles::physics::Hit;

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
