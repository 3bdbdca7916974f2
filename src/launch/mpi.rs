//! Workers as the ranks of an MPI job that `mpirun` started: the path beyond one machine.
//!
//! Rank 0 is also the coordinator. Its supervisor runs on a second thread and talks to rank
//! 0's worker through in-process channels, like the threads transport. A relay moves the
//! other ranks' reports to the coordinator and its answers to them: rank 0's worker runs
//! it whenever it waits long for a message, so the coordinator costs no core of its own,
//! and the coordinator's thread runs it every few milliseconds, so that nothing waits for
//! a worker that computes. The two threads take turns to call MPI
//! (`MPI_THREAD_SERIALIZED` is enough).
//!
//! Every other rank sends rank 0 its progress record (its step, what it waits for, its
//! counts of frames sent and received) whenever it starts or ends a long wait, and after a
//! change of step at most every few milliseconds. The relay writes them into the
//! coordinator's board, so the step timeout and the deadlock watch see the whole job, as
//! they see every worker of the other transports. When either ends a run, the
//! coordinator prints one line and ends the job (`MPI_Abort`): an MPI job cannot stop one
//! rank and go on.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread;

use crate::error::{LaunchError, WorkerFailure};
use crate::message::{Down, Up};
use crate::progress::Board;
use crate::progress::Published;
use crate::ring::{Ends, Ring};
use crate::stage::{Handler, Stage};
use crate::supervise::{Limits, Workers, supervise};
use crate::transport::mpi::{
    CoordinatorGone, DOWN, LinkComms, LinkReceiver, LinkSender, PROGRESS, Publisher, Pump,
    Receiver, Sender, SharedPump, UP, call, mpi_world_size, poll, receive, share, world,
};
use crate::transport::{Inbox, LinkRx, LinkTx, Payload, Rx, Transport, Tx, UpTx};
use crate::worker;
use mpi::traits::{Communicator, Root, Source};

/// Whether this process has launched its ring.
static RAN: AtomicBool = AtomicBool::new(false);

/// Forwards the other ranks' reports to the coordinator thread, and its answers back.
struct Relay {
    inbox: mpsc::Sender<(usize, Option<Up>)>,
    /// For every other rank: the coordinator's answers to it, and the link that carries
    /// them.
    downs: Vec<(mpsc::Receiver<Down>, Sender)>,
    /// The coordinator's board, where the other ranks' progress records go.
    board: Arc<Board>,
}

impl Pump for Relay {
    fn poll(&mut self) -> Result<(), CoordinatorGone> {
        while let Some((message, status)) = call(|| {
            world()
                .any_process()
                .immediate_matched_probe_with_tag(PROGRESS)
        }) {
            let rank = usize::try_from(status.source_rank()).unwrap_or(usize::MAX);
            match receive::<Published>(message, status, PROGRESS) {
                Ok(published) if rank < self.board.ranks() => self.board.mirror(rank, &published),
                Ok(_) => fail(&format!(
                    "rank 0 heard from rank {rank}, which the job lacks"
                )),
                Err(failure) => fail(&format!(
                    "rank 0 could not read a progress record from rank {rank}: {failure:?}"
                )),
            }
        }
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
            "the ring asks for {workers} worker{} but the job has {size} rank{} (mpirun -n {workers})",
            if workers == 1 { "" } else { "s" },
            if size == 1 { "" } else { "s" },
        )));
    }
    let rank = usize::try_from(call(|| world().rank())).unwrap_or(0);
    let right = (rank + 1) % size;
    let left = (rank + size - 1) % size;
    // Each rank keeps a board of its own; rank 0's coordinator reads its own, where the
    // relay writes what the other ranks publish.
    let board = Arc::new(Board::new(size).map_err(LaunchError::Channel)?);
    // Collective: every rank makes them here, before anything can fail on one rank alone.
    let comms = LinkComms::new()?;
    let pids = gather_pids(rank, size);
    if rank != 0 {
        // A worker, as a forked one is: it leaves SIGINT and SIGHUP to the coordinator, and
        // dies of SIGTERM, which is how mpirun ends the job when a rank aborts; but a few
        // seconds late, as a user's Ctrl-C reaches every rank as SIGTERM, and rank 0 may
        // stop the ring gracefully meanwhile.
        crate::signal::rank_defaults();
        crate::descendants::adopt_orphans();
        let ends = Ends {
            to_right: LinkTx::mpi(LinkSender::new(Arc::clone(&comms.rightward), right, None)),
            from_left: LinkRx::mpi(LinkReceiver::new(comms.rightward, left, None)?),
            to_left: LinkTx::mpi(LinkSender::new(Arc::clone(&comms.leftward), left, None)),
            from_right: LinkRx::mpi(LinkReceiver::new(comms.leftward, right, None)?),
            up: UpTx::Mpi(Sender::new(0, UP)),
            down: Rx::Mpi(Receiver::remote(0, DOWN, None)),
        };
        let ring = Ring::new(rank, size, Transport::Mpi, ends, board, limits.fault);
        drop(run_worker(
            stage.clone(),
            ring.publishing(Publisher::new(size)),
        ));
        // MPI is finalized as the process exits.
        let _ = std::io::stdout().flush();
        let _ = std::io::stderr().flush();
        std::process::exit(0);
    }
    lead(stage, handler, (left, right), comms, &board, pids, limits)
}

/// Every rank's process id, on rank 0 (empty on the others): the coordinator names a
/// failed rank by its pid, as it names a forked worker. On another host it is that host's
/// pid.
fn gather_pids(rank: usize, size: usize) -> Vec<u32> {
    let world = world();
    let root = world.process_at_rank(0);
    let pid = std::process::id();
    if rank == 0 {
        let mut pids = vec![0_u32; size];
        call(|| root.gather_into_root(&pid, &mut pids[..]));
        pids
    } else {
        call(|| root.gather_into(&pid));
        Vec::new()
    }
}

/// Rank 0: the coordinator on this thread, its worker on another. Only the worker's thread
/// calls MPI, while the coordinator runs; it relays until the coordinator is done.
fn lead<S: Stage, H: Handler>(
    stage: &S,
    handler: &mut H,
    (left, right): (usize, usize),
    comms: LinkComms,
    board: &Arc<Board>,
    pids: Vec<u32>,
    limits: &Limits,
) -> Result<Vec<Payload>, LaunchError> {
    let size = pids.len();
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
        board: Arc::clone(board),
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
    // From here until the worker's thread has ended, two threads call MPI.
    share(true);
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
        let inbox = Inbox::Relayed {
            rx: inbox_rx,
            pump: Arc::clone(&relay),
        };
        let outcome = supervise(handler, inbox, downs, Workers::Ranks(pids), board, limits);
        // Now, not after the worker's thread has ended: it may be waiting for a rank that
        // never answers, or computing for a long time.
        if let Err(e) = &outcome {
            end_job(e);
        }
        coordinator_done.store(true, Ordering::Release);
        outcome
    });
    share(false);
    let outputs = match outcome {
        Ok(outputs) => outputs,
        Err(e) => end_job(&e),
    };
    // Every answer must have left before MPI ends, as the process exits.
    drop(relay);
    Ok(outputs)
}

/// Runs the stage on this rank and hands its output to the coordinator. It returns the ring
/// on success, and nothing on rank 0 when the coordinator failed first.
///
/// A failure goes to the coordinator, as from a forked worker: it names the failure in one
/// line and ends the job. A rank that printed and aborted on its own would race the
/// coordinator, which takes the SIGTERM that ends the job for a stop signal and says so.
/// Only when the coordinator cannot be told, or does not end the job in time, does the rank
/// print and abort itself. Rank 0's worker shares the coordinator's process and ends the
/// job at once.
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
    // On rank 0, a worker that lost its coordinator, or that failed once the coordinator
    // was ending the run (a computation that gave up when `stopping` said so), is the echo
    // of the coordinator's own verdict; that one is said instead.
    if ring.rank() == 0 && (cause.is_secondary() || ring.stopping()) {
        return None;
    }
    let failure = WorkerFailure {
        rank: ring.rank(),
        pid: Some(std::process::id()),
        step,
        cause: cause.clone(),
    };
    if ring.rank() != 0 && ring.up.send(Up::Failed { step, cause }).is_ok() {
        // The coordinator relays every few milliseconds; the job ends with this process.
        // The wait is only a bound on a coordinator that no longer relays.
        thread::sleep(REPORT_WAIT);
    }
    fail(&failure.to_string())
}

/// How long a failed rank waits for the coordinator to end the job before it ends the job
/// itself.
const REPORT_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Says why rank 0's coordinator failed, then ends the whole job: [`fail`], but a stop
/// signal ends only this process, with the signal's exit status. mpirun sends one to every
/// rank when it ends the job itself (a user's Ctrl-C to it), and ends the other ranks as
/// soon as this one exits; an `MPI_Abort` would add its notice to the user's stop, and wait
/// for the other ranks, which outlive a SIGTERM by a few seconds, until mpirun's SIGKILL
/// (see [`rank_defaults`](crate::signal::rank_defaults)).
fn end_job(e: &LaunchError) -> ! {
    let why = crate::error::chain(e);
    if let LaunchError::Interrupted { signal } = e {
        say(&why);
        // MPI is not finalized: see `signal::job_ending`.
        std::process::exit(i32::from(signal.exit_code()));
    }
    fail(&why)
}

/// Says why on this rank's stderr, then ends the whole job.
fn fail(why: &str) -> ! {
    say(why);
    crate::transport::mpi::abort(1)
}

/// Says why on this rank's stderr, in one write: mpirun forwards the rank's stderr as it
/// reads it, and prints its own notices between any two pieces of a line written in parts.
/// Flushes stdout too, as the process is about to end.
fn say(why: &str) {
    let _ = std::io::stderr().write_all(format!("ringleader: {why}\n").as_bytes());
    let _ = std::io::stdout().flush();
}
