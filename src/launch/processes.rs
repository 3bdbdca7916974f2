//! Workers as forked processes: the default.

use std::io::{self, Write};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use nix::unistd::{ForkResult, Pid, fork, getpid, getppid};

use super::Wiring;
use crate::error::LaunchError;
use crate::ring::Ring;
use crate::signal;
use crate::stage::{Handler, Stage};
use crate::stats::RunStats;
use crate::supervise::{Limits, Workers, supervise};
use crate::transport::Payload;
use crate::worker;

/// Forks a worker process per rank and supervises them; returns the outputs undecoded.
pub(super) fn launch<S: Stage, H: Handler>(
    stage: &S,
    handler: &mut H,
    mut wiring: Wiring,
    limits: &Limits,
) -> Result<(Vec<Payload>, RunStats), LaunchError> {
    let size = wiring.size;
    // Whatever sits in the buffers now would be written twice, once by each process.
    let _ = io::stdout().flush();
    let _ = io::stderr().flush();
    let coordinator = getpid();
    // Asked now, so that every worker inherits the answers.
    let lend = crate::transport::lend::possible();
    crate::transport::cores();
    // Free heap pages are not to be shared with the workers (see `release_free_heap`).
    crate::memory::release_free_heap();
    let mut pids = Vec::with_capacity(size);
    // Stops the workers already forked when the next cannot start.
    let abandon = |pids: Vec<Pid>| {
        let mut workers = Workers::Processes(pids);
        workers.kill_all(Signal::SIGKILL);
        workers.reap_all();
    };
    for rank in 0..size {
        let ends = match wiring.ends() {
            Ok(ends) => ends,
            Err(e) => {
                drop(wiring);
                abandon(pids);
                return Err(LaunchError::Channel(e));
            }
        };
        // Signals to the child wait until it has its own dispositions (see `Held`).
        let held = signal::Held::all();
        // SAFETY: `launch` checked that this process has a single thread, so no lock can be
        // held by a thread that does not exist in the child. The child never returns into
        // the caller's stack: `child_main` ends with `_exit`.
        match unsafe { fork() } {
            Ok(ForkResult::Child) => {
                // Keep only this rank's ends: a stray copy of another worker's sender would
                // stop its receiver from ever seeing the channel close.
                let (transport, board) = (wiring.transport, Arc::clone(&wiring.board));
                drop(wiring);
                let ring = Ring::new(rank, size, transport, ends, board, limits.fault);
                child_main(stage.clone(), ring, coordinator, held)
            }
            // The child's ends go with this turn of the loop: the coordinator keeps none.
            Ok(ForkResult::Parent { child }) => {
                drop(held);
                pids.push(child);
            }
            Err(source) => {
                drop((held, ends, wiring));
                abandon(pids);
                return Err(LaunchError::Fork { rank, source });
            }
        }
    }
    let Wiring {
        downs,
        inbox,
        board,
        ..
    } = wiring;
    // Only these processes may lend the coordinator their outputs, and only while they are
    // this run's workers.
    let _lenders = lend.then(|| {
        crate::transport::lend::Lenders::register(
            pids.iter().map(|pid| pid.as_raw().unsigned_abs()).collect(),
            &board,
        )
    });
    let workers = Workers::Processes(pids);
    match inbox.open() {
        // Every worker has been reaped by now: their records are final.
        Ok(inbox) => supervise(handler, inbox, downs, workers, &board, limits)
            .map(|outputs| (outputs, RunStats::from_board(&board))),
        Err(e) => {
            let mut workers = workers;
            drop(downs);
            workers.kill_all(Signal::SIGKILL);
            workers.reap_all();
            Err(LaunchError::Wait(e))
        }
    }
}

/// The child side of the fork. Never returns.
fn child_main<S: Stage>(stage: S, ring: Ring, coordinator: Pid, held: signal::Held) -> ! {
    // Die with the coordinator. The re-check closes the race where the coordinator died
    // before the death signal was armed.
    let armed = nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).is_ok();
    crate::descendants::adopt_orphans();
    signal::worker_defaults();
    // Signals sent meanwhile arrive now, to the worker's own dispositions.
    drop(held);
    let code = if armed && getppid() == coordinator {
        worker::run(stage, ring)
    } else {
        1
    };
    let _ = io::stdout().flush();
    let _ = io::stderr().flush();
    // SAFETY: `_exit` skips the atexit handlers and destructors that belong to the
    // coordinator's copy of this process's state; the worker's output is flushed above.
    unsafe { libc::_exit(code) }
}

/// Forking copies only the calling thread; a lock another thread held stays locked forever
/// in the child. So refuse to fork from a process that has more than one thread.
pub(super) fn ensure_single_threaded() -> Result<(), LaunchError> {
    // A thread that was just joined can still be listed for a few microseconds while the
    // kernel finishes tearing it down, and nothing signals the end of that. So a second
    // thread must still be there after a short grace before we refuse.
    let deadline = Instant::now() + Duration::from_millis(50);
    loop {
        let threads = match std::fs::read_dir("/proc/self/task") {
            Ok(tasks) => tasks.count(),
            // Without /proc we cannot tell; fork and trust the caller.
            Err(_) => return Ok(()),
        };
        if threads <= 1 {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(LaunchError::Threaded { threads });
        }
        thread::yield_now();
    }
}
