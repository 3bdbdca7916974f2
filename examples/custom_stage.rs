//! A custom worker stage: a ring all-reduce.
//!
//! Every rank owns one vector. The vectors go once around the ring with [`Ring::rotate`],
//! so every rank adds up all of them and ends holding the element-wise sum. Each rank then
//! reports a checksum of its sum to the coordinator, which checks, as the reports come in,
//! that every rank agrees.
//!
//! Run it with `cargo run --release --example custom_stage`. It checks its own result and
//! exits non-zero if anything is wrong, so CI runs it as a test.

use std::process::ExitCode;

use ringleader::{Coordinator, Gather, Launcher, Ring, Stage, StageError, Transport};
use serde::{Deserialize, Serialize};

/// How many workers the example forks.
const WORKERS: usize = 4;

/// Every worker starts from a copy of this value, so its fields are the configuration the
/// ranks share. `gather` is only used on the coordinator's copy.
#[derive(Clone)]
struct AllReduce {
    /// Length of every rank's vector.
    len: usize,
    gather: Gather<Checksum>,
    agreed: Option<Checksum>,
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

impl Stage for AllReduce {
    // Neighbours exchange nothing but rotation blocks, which need no message type.
    type Message = ();
    type Report = Checksum;
    type Answer = Verdict;
    type Output = Vec<u64>;

    fn work(self, ring: &mut Ring<Self>) -> Result<Vec<u64>, StageError> {
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
        match ring.ask(Checksum { total })? {
            Verdict::Agreed => Ok(sum),
        }
    }

    fn on_report(
        &mut self,
        from: usize,
        report: Checksum,
        coordinator: &mut Coordinator<'_, Self>,
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
        self.agreed = Some(round[0]);
        coordinator.broadcast(Verdict::Agreed)?;
        Ok(())
    }
}

fn main() -> ExitCode {
    let len = 8;
    let mut stage = AllReduce {
        len,
        gather: Gather::new(WORKERS),
        agreed: None,
    };
    // The processes transport forks, so nothing here may have started a thread yet.
    let sums = match Launcher::new()
        .workers(WORKERS)
        .transport(Transport::Processes)
        .launch(&mut stage)
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
    if stage.agreed != Some(Checksum { total }) {
        eprintln!("custom_stage: the coordinator saw {:?}", stage.agreed);
        return ExitCode::FAILURE;
    }
    println!("all {WORKERS} ranks hold the sum; checksum {total}");
    ExitCode::SUCCESS
}
