//! One ring hop of a block, on each transport.

#![allow(missing_docs)]

use ringleader::Transport;
use ringleader::bench::hop;

fn main() {
    divan::main();
}

/// Bytes per block: a particle block at n = 16000 on 2 workers, and 1.6 MB.
const SIZES: [usize; 2] = [128_000, 1_600_000];

/// Ten rotations of one block around a ring of 2, after two to warm up. Starting and
/// stopping the ring is part of each sample; `ringleader bench hop` times the rotations alone.
fn rounds(bencher: divan::Bencher, transport: Transport, bytes: usize) {
    bencher
        .counter(divan::counter::BytesCount::new(bytes * 10))
        .bench_local(|| hop(transport, 2, bytes, 10).expect("hop"));
}

#[divan::bench(args = SIZES, sample_count = 10)]
fn processes(bencher: divan::Bencher, bytes: usize) {
    rounds(bencher, Transport::Processes, bytes);
}

#[divan::bench(args = SIZES, sample_count = 10)]
fn threads(bencher: divan::Bencher, bytes: usize) {
    rounds(bencher, Transport::Threads, bytes);
}
