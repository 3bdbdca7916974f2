//! Workers as threads of this process, with in-process channels.

use std::sync::Arc;
use std::thread;

use super::Wiring;
use crate::error::LaunchError;
use crate::ring::Ring;
use crate::stage::{Handler, Stage};
use crate::stats::RunStats;
use crate::supervise::{Limits, Workers, supervise};
use crate::transport::Payload;
use crate::worker;

/// Starts a worker thread per rank and supervises them; returns the outputs undecoded.
pub(super) fn launch<S: Stage, H: Handler>(
    stage: &S,
    handler: &mut H,
    mut wiring: Wiring,
    limits: &Limits,
) -> Result<(Vec<Payload>, RunStats), LaunchError> {
    let size = wiring.size;
    let mut handles = Vec::with_capacity(size);
    for rank in 0..size {
        let made = wiring.ends().map_err(LaunchError::Channel);
        let spawned = made.and_then(|ends| {
            let worker_stage = stage.clone();
            let ring = Ring::new(
                rank,
                size,
                wiring.transport,
                ends,
                Arc::clone(&wiring.board),
                limits.fault,
            );
            thread::Builder::new()
                .name(format!("ringleader-rank-{rank}"))
                .spawn(move || worker::run(worker_stage, ring))
                .map_err(|source| LaunchError::Spawn { rank, source })
        });
        match spawned {
            Ok(handle) => handles.push(Some(handle)),
            Err(e) => {
                // The failed closure dropped that rank's ends, and the wiring holds the
                // next rank's: the neighbours see the ring break and stop. Dropping the
                // answers releases any waiting on us.
                let board = Arc::clone(&wiring.board);
                drop(wiring);
                board.cancel();
                Workers::Threads(handles).reap_all();
                return Err(e);
            }
        }
    }
    let Wiring {
        downs,
        inbox,
        board,
        ..
    } = wiring;
    let mut workers = Workers::Threads(handles);
    match inbox.open() {
        // Every worker has been joined by now: their records are final.
        Ok(inbox) => supervise(handler, inbox, downs, workers, &board, limits)
            .map(|outputs| (outputs, RunStats::from_board(&board))),
        Err(e) => {
            drop(downs);
            board.cancel();
            workers.reap_all();
            Err(LaunchError::Wait(e))
        }
    }
}
