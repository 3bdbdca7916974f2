//! Measuring a ring: the transport alone, and the memory a process holds.
//!
//! `ringleader bench` and the `cargo bench` targets build on these.

use std::hint::black_box;
use std::time::Instant;

use crate::error::LaunchError;
use crate::launch::Launcher;
use crate::ring::Ring;
use crate::stage::{Stage, StageError};
use crate::transport::Transport;

/// The peak resident memory of this process, in bytes (`VmHWM` in `/proc/self/status`),
/// or `None` where the system does not say.
pub fn peak_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with("VmHWM:"))?;
    let kib: u64 = line
        .trim_start_matches("VmHWM:")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024)
}

/// Starts a new peak: from now on, [`peak_rss`] reports the most this process holds from
/// this point on. Returns whether the system allowed it (Linux does, through
/// `/proc/self/clear_refs`).
pub fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// What [`hop`] measured.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HopReport {
    /// The transport measured.
    pub transport: Transport,
    /// Workers on the ring.
    pub workers: usize,
    /// Bytes per block.
    pub bytes: usize,
    /// Rotations timed.
    pub rounds: usize,
    /// Seconds for all the timed rotations, on the slowest worker.
    pub seconds: f64,
    /// Bytes each worker received per second: `bytes × (workers - 1) × rounds / seconds`.
    pub bytes_per_second: f64,
    /// The most memory any worker held, in bytes, if the system says.
    pub worker_peak_rss: Option<u64>,
}

/// Measures the transport alone: every worker rotates a block of `bytes` (rounded down to
/// whole `f64`s) around a ring of `workers`, `rounds` times after two untimed rounds. A
/// hop copies the sender's data into the transport and hands it to the receiver, which
/// reads one word of every 4 KiB page, so the cost of mapping shared memory is counted
/// but the cost of reading the block is not.
///
/// # Errors
///
/// As [`Launcher::launch`]: with [`Transport::Processes`] the calling process must be
/// single-threaded.
pub fn hop(
    transport: Transport,
    workers: usize,
    bytes: usize,
    rounds: usize,
) -> Result<HopReport, LaunchError> {
    let stage = Hop {
        words: bytes / size_of::<f64>(),
        rounds,
    };
    let outputs = Launcher::new()
        .workers(workers)
        .transport(transport)
        .launch(stage.clone())?;
    let seconds = outputs.iter().map(|o| o.0).fold(0.0, f64::max);
    let worker_peak_rss = outputs.iter().filter_map(|o| o.1).max();
    let moved = (stage.words * size_of::<f64>() * workers.saturating_sub(1) * rounds) as f64;
    Ok(HopReport {
        transport,
        workers,
        bytes: stage.words * size_of::<f64>(),
        rounds,
        seconds,
        bytes_per_second: moved / seconds,
        worker_peak_rss,
    })
}

/// Measures MPI itself, as the anchor for the MPI transport's [`hop`]: every rank of the
/// job passes a block of `bytes` (rounded down to whole `f64`s) to its right neighbour with
/// a bare `MPI_Sendrecv`, in the same ring and the same pattern as a rotation, with no
/// framework: `workers - 1` calls a round, the first sending the rank's own block and each
/// later one the block just received. Like [`hop`], it times `rounds` rounds after two
/// untimed ones, reads one word of every 4 KiB page of each block a round sees (its own
/// and each one received, as [`hop`]'s stage does), and reports the slowest rank's
/// seconds. Every rank of the job must call it; each gets the report.
/// Starts MPI as [`mpi_world_size`](crate::mpi_world_size) does.
///
/// # Errors
///
/// [`LaunchError::Mpi`] if MPI cannot start, or the job has fewer than two ranks.
#[cfg(feature = "mpi")]
pub fn mpi_raw_hop(bytes: usize, rounds: usize) -> Result<HopReport, LaunchError> {
    use mpi::collective::SystemOperation;
    use mpi::traits::{AsRaw, Communicator, CommunicatorCollectives};

    let workers = crate::mpi_world_size()?;
    if workers < 2 {
        return Err(LaunchError::Mpi(format!(
            "a hop needs at least 2 ranks; this job has {workers}"
        )));
    }
    let world = crate::transport::mpi::world();
    let words = bytes / size_of::<f64>();
    let count = i32::try_from(words * size_of::<f64>())
        .map_err(|_| LaunchError::Mpi(format!("{bytes} bytes are too many for one message")))?;
    let rank = usize::try_from(world.rank()).unwrap_or(0);
    let (right, left) = ((rank + 1) % workers, (rank + workers - 1) % workers);
    let (right, left) = (right as i32, left as i32);
    reset_peak_rss();
    let mine = vec![(rank + 1) as f64; words];
    let mut held = [vec![0.0f64; words], vec![0.0f64; words]];
    let stride = 4096 / size_of::<f64>();
    let mut touched = 0.0;
    let mut round = |held: &mut [Vec<f64>; 2]| {
        touched += mine.iter().step_by(stride).sum::<f64>();
        for hop in 1..workers {
            let [a, b] = &mut *held;
            // Hop 1 sends the rank's own block; later hops send what the last one received.
            let (send, recv): (&[f64], &mut [f64]) = match hop {
                1 => (&mine, a),
                _ if hop % 2 == 0 => (a, b),
                _ => (b, a),
            };
            // SAFETY: both buffers live across the call and hold `count` bytes; the send
            // and receive buffers never overlap; MPI has been started and not finalized.
            unsafe {
                mpi::ffi::MPI_Sendrecv(
                    send.as_ptr().cast(),
                    count,
                    mpi::ffi::RSMPI_UINT8_T,
                    right,
                    0,
                    recv.as_mut_ptr().cast(),
                    count,
                    mpi::ffi::RSMPI_UINT8_T,
                    left,
                    0,
                    world.as_raw(),
                    mpi::ffi::RSMPI_STATUS_IGNORE,
                );
            }
            touched += recv.iter().step_by(stride).sum::<f64>();
        }
    };
    for _ in 0..2 {
        round(&mut held);
    }
    let started = Instant::now();
    for _ in 0..rounds {
        round(&mut held);
    }
    let mine_seconds = started.elapsed().as_secs_f64();
    black_box(touched);
    let mut seconds = 0.0f64;
    world.all_reduce_into(&mine_seconds, &mut seconds, SystemOperation::max());
    let mine_rss = peak_rss().unwrap_or(0);
    let mut rss = 0u64;
    world.all_reduce_into(&mine_rss, &mut rss, SystemOperation::max());
    let moved = (words * size_of::<f64>() * (workers - 1) * rounds) as f64;
    Ok(HopReport {
        transport: Transport::Mpi,
        workers,
        bytes: words * size_of::<f64>(),
        rounds,
        seconds,
        bytes_per_second: moved / seconds,
        worker_peak_rss: (rss > 0).then_some(rss),
    })
}

#[derive(Debug, Clone)]
struct Hop {
    words: usize,
    rounds: usize,
}

impl Stage for Hop {
    type Output = (f64, Option<u64>);

    fn work(self, ring: &mut Ring) -> Result<Self::Output, StageError> {
        reset_peak_rss();
        let mine = vec![(ring.rank() + 1) as f64; self.words];
        // One word per page: enough to make every page of the block resident here.
        let stride = 4096 / size_of::<f64>();
        let mut touched = 0.0;
        let mut round = |ring: &mut Ring| {
            ring.rotate(&mine, |_, block: &[f64]| {
                touched += block.iter().step_by(stride).sum::<f64>();
            })
        };
        for _ in 0..2 {
            round(ring)?;
        }
        let started = Instant::now();
        for _ in 0..self.rounds {
            round(ring)?;
        }
        let seconds = started.elapsed().as_secs_f64();
        black_box(touched);
        Ok((seconds, peak_rss()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peak_rss_is_reported_and_grows_with_what_we_hold() {
        let before = peak_rss().expect("linux reports VmHWM");
        let held = vec![1u8; 64 << 20];
        black_box(&held);
        let after = peak_rss().expect("linux reports VmHWM");
        assert!(after >= before + (32 << 20), "{before} -> {after}");
    }

    #[test]
    fn hop_between_threads_moves_every_byte() {
        let report = hop(Transport::Threads, 3, 100_000, 4).expect("hop");
        assert_eq!(report.bytes, 100_000);
        assert!(report.seconds > 0.0);
        let expected = 100_000.0 * 2.0 * 4.0 / report.seconds;
        assert!((report.bytes_per_second - expected).abs() <= 1e-6 * expected);
    }
}
