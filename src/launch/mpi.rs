//! Workers as the ranks of an MPI job that `mpirun` started: the path beyond one machine.
//!
//! Rank 0 is also the coordinator. Its supervisor runs on a second thread and never calls
//! MPI: it talks to rank 0's worker through in-process channels, like the threads
//! transport. MPI is called only from the worker's thread (`MPI_THREAD_SERIALIZED` is
//! enough), which relays between the two: whenever rank 0 would wait for a message, it
//! polls instead, and forwards the other ranks' reports to the coordinator and the
//! coordinator's answers to them. So the coordinator costs no core of its own; it works
//! only while rank 0 would otherwise be waiting.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread;

use crate::error::{LaunchError, WorkerFailure};
use crate::progress::Board;
use crate::ring::{Ends, Ring};
use crate::stage::{Down, Handler, Stage, Up};
use crate::supervise::{Limits, Workers, supervise};
use crate::transport::mpi::{
    CoordinatorGone, DOWN, LinkComms, LinkReceiver, LinkSender, Pump, Receiver, Sender, SharedPump,
    UP, call, mpi_world_size, poll, receive, world,
};
use crate::transport::{Inbox, LinkRx, LinkTx, Payload, Rx, Transport, Tx, UpTx};
use crate::worker;
use mpi::traits::{Communicator, Source};

/// Whether this process has launched its ring.
static RAN: AtomicBool = AtomicBool::new(false);

/// Forwards the other ranks' reports to the coordinator thread, and its answers back.
struct Relay {
    inbox: mpsc::Sender<(usize, Option<Up>)>,
    /// For every other rank: the coordinator's answers to it, and the link that carries
    /// them.
    downs: Vec<(mpsc::Receiver<Down>, Sender)>,
}

impl Pump for Relay {
    fn poll(&mut self) -> Result<(), CoordinatorGone> {
        while let Some((message, status)) =
            call(|| world().any_process().immediate_matched_probe_with_tag(UP))
        {
            let rank = usize::try_from(status.source_rank()).unwrap_or(usize::MAX);
            let up = match receive::<Up>(message, status, UP) {
                Ok(up) => up,
                Err(failure) => fail(&format!(
                    "rank 0 could not read a message from rank {rank}: {failure:?}"
                )),
            };
            let last = matches!(up, Up::Done(_) | Up::Failed { .. });
            self.inbox
                .send((rank, Some(up)))
                .map_err(|_| CoordinatorGone)?;
            if last {
                // What a closed channel tells the coordinator between processes.
                self.inbox.send((rank, None)).map_err(|_| CoordinatorGone)?;
            }
        }
        for (rx, link) in &self.downs {
            loop {
                match rx.try_recv() {
                    Ok(down) => {
                        if let Err(failure) = link.send(&down) {
                            fail(&format!(
                                "rank 0 could not answer rank {}: {failure:?}",
                                link.dest()
                            ));
                        }
                    }
                    Err(mpsc::TryRecvError::Empty) => break,
                    Err(mpsc::TryRecvError::Disconnected) => return Err(CoordinatorGone),
                }
            }
        }
        Ok(())
    }
}

/// Runs this process as its rank of the MPI job. Only rank 0 returns, with the outputs
/// undecoded.
pub(super) fn launch<S: Stage, H: Handler>(
    stage: &S,
    handler: &mut H,
    workers: usize,
    limits: &Limits,
) -> Result<Vec<Payload>, LaunchError> {
    let size = mpi_world_size()?;
    // The other ranks end their processes with their ring, so a second one would wait for
    // them forever.
    if RAN.swap(true, Ordering::AcqRel) {
        return Err(LaunchError::Mpi(
            "a process runs one mpi ring: the other ranks ended with the first".to_owned(),
        ));
    }
    if workers != size {
        return Err(LaunchError::Mpi(format!(
            "the ring asks for {workers} workers but the job has {size} ranks (mpirun -n {workers})"
        )));
    }
    let rank = usize::try_from(call(|| world().rank())).unwrap_or(0);
    let right = (rank + 1) % size;
    let left = (rank + size - 1) % size;
    // Each rank keeps its own progress board: the coordinator on rank 0 sees only rank 0's,
    // so it cannot time steps out or spot a cycle across ranks. mpirun's own failure
    // handling covers what it cannot see.
    let board = Arc::new(Board::new(size).map_err(LaunchError::Channel)?);
    let limits = Limits {
        step_timeout: None,
        graceful: limits.graceful,
        fault: limits.fault,
    };
    // Collective: every rank makes them here, before anything can fail on one rank alone.
    let comms = LinkComms::new()?;
    if rank != 0 {
        let ends = Ends {
            to_right: LinkTx::mpi(LinkSender::new(Arc::clone(&comms.rightward), right, None)),
            from_left: LinkRx::mpi(LinkReceiver::new(comms.rightward, left, None)?),
            to_left: LinkTx::mpi(LinkSender::new(Arc::clone(&comms.leftward), left, None)),
            from_right: LinkRx::mpi(LinkReceiver::new(comms.leftward, right, None)?),
            up: UpTx::Mpi(Sender::new(0, UP)),
            down: Rx::Mpi(Receiver::remote(0, DOWN, None)),
        };
        drop(run_worker(
            stage.clone(),
            Ring::new(rank, size, Transport::Mpi, ends, board, limits.fault),
        ));
        // MPI is finalized as the process exits.
        let _ = std::io::stdout().flush();
        let _ = std::io::stderr().flush();
        std::process::exit(0);
    }
    lead(stage, handler, size, (left, right), comms, &board, &limits)
}

/// Rank 0: the coordinator on this thread, its worker on another. Only the worker's thread
/// calls MPI, while the coordinator runs; it relays until the coordinator is done.
fn lead<S: Stage, H: Handler>(
    stage: &S,
    handler: &mut H,
    size: usize,
    (left, right): (usize, usize),
    comms: LinkComms,
    board: &Arc<Board>,
    limits: &Limits,
) -> Result<Vec<Payload>, LaunchError> {
    let (inbox_tx, inbox_rx) = mpsc::channel();
    let (own_down_tx, own_down_rx) = mpsc::channel();
    let mut downs = vec![Tx::Local(own_down_tx)];
    let mut relayed = Vec::with_capacity(size - 1);
    for rank in 1..size {
        let (tx, rx) = mpsc::channel();
        downs.push(Tx::Local(tx));
        relayed.push((rx, Sender::new(rank, DOWN)));
    }
    let relay: SharedPump = Arc::new(Mutex::new(Relay {
        inbox: inbox_tx.clone(),
        downs: relayed,
    }));
    let own_end = inbox_tx.clone();
    let pump = || Some(Arc::clone(&relay));
    let ends = Ends {
        to_right: LinkTx::mpi(LinkSender::new(Arc::clone(&comms.rightward), right, pump())),
        from_left: LinkRx::mpi(LinkReceiver::new(comms.rightward, left, pump())?),
        to_left: LinkTx::mpi(LinkSender::new(Arc::clone(&comms.leftward), left, pump())),
        from_right: LinkRx::mpi(LinkReceiver::new(comms.leftward, right, pump())?),
        up: UpTx::Local {
            rank: 0,
            tx: inbox_tx,
        },
        down: Rx::Mpi(Receiver::Local {
            rx: own_down_rx,
            pump: Arc::clone(&relay),
        }),
    };
    let ring = Ring::new(
        0,
        size,
        Transport::Mpi,
        ends,
        Arc::clone(board),
        limits.fault,
    );
    let coordinator_done = AtomicBool::new(false);
    let worker_stage = stage.clone();
    let outcome = thread::scope(|scope| {
        let worker_relay = Arc::clone(&relay);
        let coordinator_done = &coordinator_done;
        let worker = thread::Builder::new()
            .name("ringleader-rank-0".to_owned())
            .spawn_scoped(scope, move || {
                let ring = run_worker(worker_stage, ring);
                // Tell the coordinator this worker has ended, as a closed channel would.
                // The ring itself stays: dropping it would wait for its last sends to be
                // received, and the receivers may need the relay first.
                let _ = own_end.send((0, None));
                drop(own_end);
                // The other ranks may still be working: relay for them until the
                // coordinator has heard every one of them finish.
                while !coordinator_done.load(Ordering::Acquire) {
                    let _ = poll(&worker_relay);
                    thread::yield_now();
                }
                drop(ring);
            });
        if let Err(e) = worker {
            fail(&format!("could not start rank 0's worker thread: {e}"));
        }
        // No process to reap: a rank that ends badly aborts the job itself.
        let ranks = (0..size).map(|_| None).collect();
        let outcome = supervise(
            handler,
            Inbox::Local(inbox_rx),
            downs,
            Workers::Threads(ranks),
            board,
            limits,
        );
        coordinator_done.store(true, Ordering::Release);
        outcome
    });
    let outputs = match outcome {
        Ok(outputs) => outputs,
        Err(e) => fail(&crate::error::chain(&e)),
    };
    // Every answer must have left before MPI ends, as the process exits.
    drop(relay);
    Ok(outputs)
}

/// Runs the stage on this rank and hands its output to the coordinator. On failure it
/// prints the cause and aborts the job. It returns the ring on success, and nothing on
/// rank 0 when the coordinator failed first.
fn run_worker<S: Stage>(stage: S, mut ring: Ring) -> Option<Ring> {
    let (step, cause) = match worker::work(stage, &mut ring) {
        Ok(output) => match ring.up.send(Up::Done(output)) {
            Ok(()) => return Some(ring),
            Err(failure) => (
                ring.step,
                crate::error::Cause::Failed(format!("could not send its output: {failure:?}")),
            ),
        },
        Err(worker::Failed { step, cause, .. }) => (step, cause),
    };
    // On rank 0, a worker that lost its coordinator is the echo of the coordinator's own
    // failure; report that one instead.
    if cause.is_secondary() && ring.rank() == 0 {
        return None;
    }
    let failure = WorkerFailure {
        rank: ring.rank(),
        pid: Some(std::process::id()),
        step,
        cause,
    };
    fail(&failure.to_string())
}

/// Says why on this rank's stderr, then ends the whole job.
fn fail(why: &str) -> ! {
    eprintln!("ringleader: {why}");
    let _ = std::io::stderr().flush();
    let _ = std::io::stdout().flush();
    crate::transport::mpi::abort(1)
}
