//! Custom worker stages, in both forms.
//!
//! 1. A closure: every worker computes a partial sum of the harmonic series, and
//!    `Ring::all_reduce` combines them in rank order, so every rank holds the same bits.
//! 2. A stage and a handler: every rank owns one vector; the vectors go once around the
//!    ring with [`Ring::rotate`], so every rank ends holding their element-wise sum. Each
//!    rank then reports a checksum to the coordinator, whose handler checks that every rank
//!    agrees and keeps the checksum for the caller.
//!
//! Run it with `cargo run --release --example custom_stage`. It checks its own results and
//! exits non-zero if anything is wrong, so CI runs it as a test.

use std::process::ExitCode;

use ringleader::{Coordinator, Gather, Handler, Launcher, Ring, Stage, StageError};
use serde::{Deserialize, Serialize};

/// How many worker processes each part forks.
const WORKERS: usize = 4;

/// The harmonic series' first `terms` terms, split across the workers, on forked processes
/// (the default transport).
fn harmonic(terms: u64) -> Result<Vec<f64>, ringleader::LaunchError> {
    Launcher::new().workers(WORKERS).run(move |ring| {
        let (rank, size) = (ring.rank() as u64, ring.size() as u64);
        let part: f64 = (1..=terms)
            .filter(|k| k % size == rank)
            .map(|k| 1.0 / k as f64)
            .sum();
        // ((part0 + part1) + part2) + part3 on every rank: the same bits everywhere.
        Ok(ring.all_reduce(part, |a, b| a + b)?)
    })
}

/// The workers' side: every worker starts from a copy, so its fields are what all ranks
/// know at the start.
#[derive(Clone)]
struct SumVectors {
    /// Length of every rank's vector.
    len: usize,
}

/// What a worker tells the coordinator once it has the sum.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct Checksum {
    total: u64,
}

/// The coordinator's answer to a checksum.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
enum Verdict {
    /// Every rank reported the same checksum.
    Agreed,
}

/// Rank `rank`'s vector: `rank * 1000 + i` for `i` in `0..len`.
fn vector_of(rank: usize, len: usize) -> Vec<u64> {
    (0..len).map(|i| (rank * 1000 + i) as u64).collect()
}

impl Stage for SumVectors {
    type Output = Vec<u64>;

    fn work(self, ring: &mut Ring) -> Result<Vec<u64>, StageError> {
        let mine = vector_of(ring.rank(), self.len);
        let mut sum = vec![0u64; self.len];
        // Bulk data goes through `rotate`: every rank's vector visits every rank once.
        ring.rotate(&mine, |_origin, block: &[u64]| {
            for (total, value) in sum.iter_mut().zip(block) {
                *total += value;
            }
        })?;
        let total = sum.iter().sum();
        // Small control messages go to the coordinator; wait until every rank has agreed.
        match ring.ask(&Checksum { total })? {
            Verdict::Agreed => Ok(sum),
        }
    }
}

/// The coordinator's side. It is borrowed for the run, so it can write into the caller's
/// variables: no `Clone`, no `'static`, no shared handles.
struct Agreement<'a> {
    gather: Gather<Checksum>,
    agreed: &'a mut Option<Checksum>,
}

impl Handler for Agreement<'_> {
    type Report = Checksum;
    type Answer = Verdict;

    fn on_report(
        &mut self,
        from: usize,
        report: Checksum,
        coordinator: &mut Coordinator<'_, Verdict>,
    ) -> Result<(), StageError> {
        let Some(round) = self.gather.push(from, report) else {
            return Ok(());
        };
        if let Some(odd) = round.iter().position(|&c| c != round[0]) {
            // An error from `on_report` stops the run and is reported by `launch`.
            return Err(format!(
                "rank {odd} reported {:?}, rank 0 reported {:?}",
                round[odd], round[0]
            )
            .into());
        }
        *self.agreed = Some(round[0]);
        coordinator.broadcast(Verdict::Agreed)?;
        Ok(())
    }
}

fn main() -> ExitCode {
    // The processes transport forks, so nothing here may have started a thread yet.
    let terms = 1_000_000;
    let sums = match harmonic(terms) {
        Ok(sums) => sums,
        Err(err) => {
            eprintln!("custom_stage: {err}");
            return ExitCode::FAILURE;
        }
    };
    let by_rank = (0..WORKERS as u64).fold(0.0, |acc, rank| {
        acc + (1..=terms)
            .filter(|k| k % WORKERS as u64 == rank)
            .map(|k| 1.0 / k as f64)
            .sum::<f64>()
    });
    if sums.len() != WORKERS || sums.iter().any(|s| s.to_bits() != by_rank.to_bits()) {
        eprintln!("custom_stage: harmonic sums {sums:?}; expected {by_rank} on every rank");
        return ExitCode::FAILURE;
    }
    println!("H({terms}) = {by_rank} on all {WORKERS} ranks, bit for bit");

    let len = 8;
    let mut agreed = None;
    let mut handler = Agreement {
        gather: Gather::new(WORKERS),
        agreed: &mut agreed,
    };
    let sums = match Launcher::new()
        .workers(WORKERS)
        .launch_with(SumVectors { len }, &mut handler)
    {
        Ok(sums) => sums,
        Err(err) => {
            eprintln!("custom_stage: {err}");
            return ExitCode::FAILURE;
        }
    };
    let expected: Vec<u64> = (0..len)
        .map(|i| (0..WORKERS).map(|rank| vector_of(rank, len)[i]).sum())
        .collect();
    for (rank, sum) in sums.iter().enumerate() {
        println!("rank {rank}: {sum:?}");
    }
    let total: u64 = expected.iter().sum();
    if sums.len() != WORKERS || sums.iter().any(|sum| *sum != expected) {
        eprintln!("custom_stage: wrong sums; expected {expected:?} on every rank");
        return ExitCode::FAILURE;
    }
    if agreed != Some(Checksum { total }) {
        eprintln!("custom_stage: the coordinator saw {agreed:?}");
        return ExitCode::FAILURE;
    }
    println!("all {WORKERS} ranks hold the sum; checksum {total}");
    ExitCode::SUCCESS
}
