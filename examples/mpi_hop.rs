//! One hop over the MPI transport: how long a block takes to move to the next rank.
//!
//! ```text
//! cargo build --release --features mpi --example mpi_hop
//! mpirun -n 2 target/release/examples/mpi_hop 1600000 200
//! ```
//!
//! Every rank rotates a block of BYTES around the ring ROTATIONS times (after one warm-up
//! rotation); a hop is one rank passing one block to its neighbour, all ranks at once, so a
//! rotation is P - 1 hops. Rank 0 prints the time per hop and the bytes moved per second
//! by one link.

use std::process::ExitCode;
use std::time::Instant;

use ringleader::{LaunchError, Launcher, Ring, Stage, StageError, Transport, mpi_world_size};

#[derive(Clone)]
struct Hop {
    bytes: usize,
    rotations: u32,
}

impl Stage for Hop {
    type Output = f64;

    fn work(self, ring: &mut Ring) -> Result<f64, StageError> {
        let block = vec![ring.rank() as u8; self.bytes];
        let mut seen = 0usize;
        ring.rotate(&block, |_, b: &[u8]| seen += b.len())?;
        let started = Instant::now();
        for _ in 0..self.rotations {
            ring.rotate(&block, |_, b: &[u8]| seen += b.len())?;
        }
        let seconds = started.elapsed().as_secs_f64();
        std::hint::black_box(seen);
        Ok(seconds)
    }
}

/// Seconds per hop of a `bytes` block over the ranks of this MPI job: the slowest rank's
/// time over `rotations` rotations, divided by the hops each made. Only rank 0 returns.
fn hop_seconds(bytes: usize, rotations: u32) -> Result<f64, LaunchError> {
    let ranks = mpi_world_size()?;
    let per_rank = Launcher::new()
        .workers(ranks)
        .transport(Transport::Mpi)
        .launch(Hop { bytes, rotations })?;
    let slowest = per_rank.into_iter().fold(0.0, f64::max);
    let hops = f64::from(rotations) * (ranks.max(2) - 1) as f64;
    Ok(slowest / hops)
}

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let bytes = args
        .next()
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_600_000);
    let rotations = args.next().and_then(|a| a.parse().ok()).unwrap_or(200);
    let ranks = match mpi_world_size() {
        Ok(ranks) => ranks,
        Err(e) => {
            eprintln!("mpi_hop: {e}");
            return ExitCode::FAILURE;
        }
    };
    match hop_seconds(bytes, rotations) {
        Ok(seconds) => {
            println!(
                "mpi hop: {bytes} bytes, {ranks} ranks: {:.2} us per hop, {:.2} GB/s per link",
                seconds * 1e6,
                bytes as f64 / seconds / 1e9
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("mpi_hop: {e}");
            ExitCode::FAILURE
        }
    }
}
