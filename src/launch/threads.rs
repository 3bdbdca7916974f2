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
    wiring: Wiring,
    limits: &Limits,
) -> Result<(Vec<Payload>, RunStats), LaunchError> {
    let Wiring {
        transport,
        ends,
        downs,
        inbox,
        board,
    } = wiring;
    let size = ends.len();
    let mut handles = Vec::with_capacity(size);
    for (rank, ends) in ends.into_iter().enumerate() {
        let worker_stage = stage.clone();
        let ring = Ring::new(
            rank,
            size,
            transport,
            ends,
            Arc::clone(&board),
            limits.fault,
        );
        let spawned = thread::Builder::new()
            .name(format!("ringleader-rank-{rank}"))
            .spawn(move || worker::run(worker_stage, ring));
        match spawned {
            Ok(handle) => handles.push(Some(handle)),
            Err(source) => {
                // The failed closure dropped that rank's ends, so its neighbours see the
                // ring break and stop; dropping the answers releases any waiting on us.
                drop(downs);
                board.cancel();
                Workers::Threads(handles).reap_all();
                return Err(LaunchError::Spawn { rank, source });
            }
        }
    }
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
