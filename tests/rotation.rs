//! Rotations of tiny, medium and large blocks, many times over, on both transports: every
//! block must arrive whole every time, including when a worker reuses its buffers and
//! when the ranks run at different speeds. `harness = false`, so it may fork.

mod forking;

use ringleader::{Launcher, Ring, Stage, StageError, Transport};

/// Every round, every worker rotates a block whose words depend on its rank and the round,
/// and counts the words that arrive wrong.
#[derive(Clone)]
struct Rounds {
    words: usize,
    rounds: u64,
}

fn word(origin: usize, round: u64, i: usize) -> u64 {
    (origin as u64) << 48 ^ round << 32 ^ i as u64
}

impl Stage for Rounds {
    type Output = (u64, u64);

    fn work(self, ring: &mut Ring) -> Result<(u64, u64), StageError> {
        let rank = ring.rank();
        let (mut wrong, mut seen) = (0, 0);
        let mut mine = vec![0u64; self.words];
        for round in 0..self.rounds {
            for (i, w) in mine.iter_mut().enumerate() {
                *w = word(rank, round, i);
            }
            ring.rotate(&mine, |origin, block: &[u64]| {
                seen += 1;
                // Rank 0 reads its blocks twice: the ranks drift apart, and a buffer
                // reused too early would show here as words of a later round.
                let passes = if rank == 0 { 2 } else { 1 };
                for _ in 0..passes {
                    if block.len() != self.words {
                        wrong += 1;
                    }
                    wrong += block
                        .iter()
                        .enumerate()
                        .filter(|&(i, &w)| w != word(origin, round, i))
                        .count() as u64;
                }
            })?;
        }
        Ok((wrong, seen))
    }
}

/// Rotations of blocks of `words` words, on both transports and two ring sizes.
fn rotations_of(words: usize) {
    for transport in [Transport::Processes, Transport::Threads] {
        for workers in [2, 3] {
            let rounds = if words > 100_000 { 20 } else { 60 };
            let outputs = Launcher::new()
                .workers(workers)
                .transport(transport)
                .launch(Rounds { words, rounds })
                .expect("rotation");
            for (rank, &(wrong, seen)) in outputs.iter().enumerate() {
                assert_eq!(
                    wrong, 0,
                    "{transport:?}, {workers} workers, {words} words: rank {rank} saw wrong words"
                );
                assert_eq!(seen, rounds * workers as u64, "rank {rank} visits");
            }
        }
    }
}

// Empty, one word, around 8 KiB (the inline limit), 64 KiB, and 1.6 MB.
fn empty_blocks() {
    rotations_of(0);
}
fn one_word() {
    rotations_of(1);
}
fn three_words() {
    rotations_of(3);
}
fn just_under_eight_kib() {
    rotations_of(1023);
}
fn eight_kib() {
    rotations_of(1024);
}
fn just_over_eight_kib() {
    rotations_of(1025);
}
fn sixty_four_kib() {
    rotations_of(8192);
}
fn one_point_six_megabytes() {
    rotations_of(200_000);
}

fn main() -> std::process::ExitCode {
    forking::run(tests![
        empty_blocks,
        one_word,
        three_words,
        just_under_eight_kib,
        eight_kib,
        just_over_eight_kib,
        sixty_four_kib,
        one_point_six_megabytes,
    ])
}
