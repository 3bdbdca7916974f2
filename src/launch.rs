//! Starting a ring: create every channel, start the workers, hand each one its own ends.

use std::io::{self, Write};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use nix::unistd::{ForkResult, Pid, fork, getpid, getppid};

use crate::error::LaunchError;
use crate::progress::Board;
use crate::ring::{Ends, Ring};
use crate::signal::{self, Catch};
use crate::stage::{Down, Stage, Up};
use crate::stats::RunStats;
use crate::supervise::{Limits, Workers, supervise};
use crate::transport::{self, Mailboxes, PendingInbox, Transport, Tx};
use crate::worker;

/// Starts a ring of workers running a [`Stage`], and supervises it to the end.
///
/// ```
/// use ringleader::{Launcher, Transport};
///
/// let launcher = Launcher::new().workers(4).transport(Transport::Threads);
/// assert_eq!(launcher.worker_count(), 4);
/// ```
#[derive(Debug, Clone)]
pub struct Launcher {
    workers: usize,
    transport: Transport,
    limits: Limits,
    restarts: u32,
}

impl Default for Launcher {
    fn default() -> Self {
        Launcher {
            workers: 1,
            transport: Transport::Processes,
            limits: Limits::default(),
            restarts: 0,
        }
    }
}

impl Launcher {
    /// One worker on the processes transport.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets how many workers the ring has.
    pub fn workers(mut self, workers: usize) -> Self {
        self.workers = workers;
        self
    }

    /// Chooses the transport.
    pub fn transport(mut self, transport: Transport) -> Self {
        self.transport = transport;
        self
    }

    /// Bounds the time a worker may spend on one step (as announced with
    /// [`Ring::set_step`]). A step that takes longer ends the run with
    /// [`LaunchError::Timeout`], naming the ranks that did not finish it. Without it
    /// (the default) a step may take as long as it likes; circular waits are still caught.
    pub fn step_timeout(mut self, limit: Duration) -> Self {
        self.limits.step_timeout = Some(limit);
        self
    }

    /// On SIGINT or SIGTERM, let the stage stop at a step boundary instead of stopping the
    /// workers at once: its coordinator side sees [`stop_signal`](crate::stop_signal) and
    /// ends the run, and `launch` returns the outputs as usual. A second signal, or a stage
    /// that has not ended within the step timeout (10 s without one), stops the workers
    /// anyway, and `launch` returns [`LaunchError::Interrupted`].
    pub fn stop_gracefully(mut self, graceful: bool) -> Self {
        self.limits.graceful = graceful;
        self
    }

    /// Injects a fault, for testing how a run fails: worker `fault.rank` fails as
    /// `fault.kind` says when it announces step `fault.step` with
    /// [`Ring::set_step`](crate::Ring::set_step). Every stage gets it without asking; see
    /// [`Fault`](crate::Fault). `None` (the default) injects nothing.
    pub fn fault(mut self, fault: Option<crate::Fault>) -> Self {
        self.limits.fault = fault;
        self
    }

    /// How many times [`Launcher::launch_restarting`] may start a new ring after a failure
    /// (0, the default, makes every failure final).
    pub fn restarts(mut self, restarts: u32) -> Self {
        self.restarts = restarts;
        self
    }

    /// As [`Launcher::launch_with_stats`], but a run that fails in a way that
    /// [can restart](LaunchError::can_restart) starts again, up to
    /// [`restarts`](Launcher::restarts) times: every worker of the failed ring is stopped
    /// and reaped, [`Restart::rewind`](crate::Restart::rewind) makes the stage go on from
    /// the last state it holds, and a new ring starts. An injected
    /// [`fault`](Launcher::fault) strikes in the first ring only.
    ///
    /// `restarted` is told of every restart, before the new ring starts.
    ///
    /// # Errors
    ///
    /// As [`Launcher::launch`], for the failure that ended the run: the last one, once the
    /// restarts are spent or the stage has nothing to go on from.
    pub fn launch_restarting<S: crate::Restart>(
        &self,
        stage: &mut S,
        mut restarted: impl FnMut(&crate::Restarted),
    ) -> Result<(Vec<S::Output>, RunStats), LaunchError> {
        let mut launcher = self.clone();
        let mut attempt = 0;
        loop {
            match launcher.launch_with_stats(stage) {
                Err(failure) if attempt < self.restarts && failure.can_restart() => {
                    let Some(rewind) = stage.rewind(&failure) else {
                        return Err(failure);
                    };
                    attempt += 1;
                    restarted(&crate::Restarted {
                        failure,
                        rewind,
                        attempt,
                    });
                    launcher.limits.fault = None;
                }
                done => return done,
            }
        }
    }

    /// How many workers the ring will have.
    pub fn worker_count(&self) -> usize {
        self.workers
    }

    /// Runs `stage` on every worker and returns each worker's output, in rank order.
    ///
    /// `stage` is the coordinator's copy: [`Stage::on_report`] runs on it, and it keeps
    /// whatever state that builds up. Every worker starts from a copy of it.
    ///
    /// With [`Transport::Processes`] the workers are forked, so the calling process must
    /// still be single-threaded: fork workers before starting any thread. Each child dies
    /// with the coordinator (`PR_SET_PDEATHSIG`).
    ///
    /// With `Transport::Mpi` (cargo feature `mpi`) this process is one rank of the job
    /// `mpirun` started, and the ring has as many workers as the job has ranks. Rank 0 runs
    /// its worker and the coordinator, and is the only rank that returns; every other rank
    /// ends its process when its worker is done. A failure on any rank prints one line
    /// naming the rank and cause on that rank's stderr and aborts the whole job
    /// (`MPI_Abort`): an MPI job cannot lose a rank and go on.
    ///
    /// # Errors
    ///
    /// [`LaunchError::Worker`] names the worker that failed first, its pid and the cause;
    /// by then every other worker has been stopped and reaped. [`LaunchError::Deadlock`],
    /// [`LaunchError::Timeout`] and [`LaunchError::Interrupted`] end the run the same way.
    /// Other variants report a launch that could not start.
    ///
    /// While it runs, the coordinator catches SIGINT and SIGTERM (the previous handlers
    /// come back when it returns), and worker processes ignore SIGINT: a terminal's Ctrl-C
    /// stops the run in order, through the coordinator.
    pub fn launch<S: Stage>(&self, stage: &mut S) -> Result<Vec<S::Output>, LaunchError> {
        self.launch_with_stats(stage).map(|(outputs, _)| outputs)
    }

    /// Runs `stage` as [`launch`](Launcher::launch) does, and also returns what the run
    /// measured of itself: the depth of its critical path per step (see [`RunStats`]).
    ///
    /// ```
    /// use ringleader::{Launcher, Ring, Stage, StageError, Transport};
    ///
    /// #[derive(Clone)]
    /// struct Rotate;
    ///
    /// impl Stage for Rotate {
    ///     type Message = ();
    ///     type Report = ();
    ///     type Answer = ();
    ///     type Output = ();
    ///
    ///     fn work(self, ring: &mut Ring<Self>) -> Result<(), StageError> {
    ///         for step in 0..10 {
    ///             ring.set_step(step);
    ///             ring.rotate(&[step], |_, _: &[u64]| {})?;
    ///         }
    ///         Ok(())
    ///     }
    /// }
    ///
    /// let launcher = Launcher::new().workers(4).transport(Transport::Threads);
    /// let (_, stats) = launcher.launch_with_stats(&mut Rotate)?;
    /// // Every block travels three hops each step.
    /// assert_eq!((stats.depth, stats.steps), (Some(3.0), 10));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    ///
    /// As [`launch`](Launcher::launch).
    pub fn launch_with_stats<S: Stage>(
        &self,
        stage: &mut S,
    ) -> Result<(Vec<S::Output>, RunStats), LaunchError> {
        if self.workers == 0 {
            return Err(LaunchError::NoWorkers);
        }
        if let Some(fault) = &self.limits.fault {
            fault
                .check(self.workers, self.transport)
                .map_err(LaunchError::Fault)?;
        }
        if self.transport == Transport::Processes {
            ensure_single_threaded()?;
        }
        let _catch = Catch::install();
        let wiring = |transport| Wiring::<S>::new(transport, self.workers);
        match self.transport {
            Transport::Processes => launch_processes(
                stage,
                wiring(Transport::Processes).map_err(LaunchError::Channel)?,
                &self.limits,
            ),
            Transport::Threads => launch_threads(
                stage,
                wiring(Transport::Threads).map_err(LaunchError::Channel)?,
                &self.limits,
            ),
            // Each rank keeps its own board, so no one sees every rank's hop count.
            #[cfg(feature = "mpi")]
            Transport::Mpi => crate::transport::mpi::launch(stage, self.workers, &self.limits)
                .map(|outputs| (outputs, RunStats::default())),
        }
    }
}

/// Every channel of a ring, made before any worker starts.
struct Wiring<S: Stage> {
    transport: Transport,
    ends: Vec<Ends<S>>,
    downs: Vec<Tx<Down<S::Answer>>>,
    inbox: PendingInbox<Up<S::Report, S::Output>>,
    board: Arc<Board>,
}

impl<S: Stage> Wiring<S> {
    fn new(transport: Transport, size: usize) -> io::Result<Self> {
        // Link r carries blocks rightwards from rank r to rank r + 1 (and the reverse links
        // leftwards from rank r to rank r - 1).
        // Between processes, each link also has a mailbox: link r's rightward one is
        // 2r, its leftward one 2r + 1.
        let mailboxes = match transport {
            Transport::Processes => Some(Mailboxes::new(2 * size)?),
            _ => None,
        };
        let mut to_right = Vec::with_capacity(size);
        let mut from_left: Vec<_> = (0..size).map(|_| None).collect();
        let mut to_left = Vec::with_capacity(size);
        let mut from_right: Vec<_> = (0..size).map(|_| None).collect();
        for rank in 0..size {
            let (tx, rx) = transport::link(transport, mailboxes.as_ref(), 2 * rank)?;
            to_right.push(tx);
            from_left[(rank + 1) % size] = Some(rx);
            let (tx, rx) = transport::link(transport, mailboxes.as_ref(), 2 * rank + 1)?;
            to_left.push(tx);
            from_right[(rank + size - 1) % size] = Some(rx);
        }
        let (ups, inbox) = transport::up_channels(transport, size)?;
        let mut downs = Vec::with_capacity(size);
        let mut down_rxs = Vec::with_capacity(size);
        for _ in 0..size {
            let (tx, rx) = transport::channel(transport)?;
            downs.push(tx);
            down_rxs.push(rx);
        }
        let ends = to_right
            .into_iter()
            .zip(from_left.into_iter().flatten())
            .zip(to_left.into_iter().zip(from_right.into_iter().flatten()))
            .zip(ups.into_iter().zip(down_rxs))
            .map(
                |(((to_right, from_left), (to_left, from_right)), (up, down))| Ends {
                    to_right,
                    from_left,
                    to_left,
                    from_right,
                    up,
                    down,
                },
            )
            .collect();
        Ok(Wiring {
            transport,
            ends,
            downs,
            inbox,
            board: Arc::new(Board::new(size)?),
        })
    }
}

fn launch_processes<S: Stage>(
    stage: &mut S,
    wiring: Wiring<S>,
    limits: &Limits,
) -> Result<(Vec<S::Output>, RunStats), LaunchError> {
    let Wiring {
        transport,
        ends,
        downs,
        inbox,
        board,
    } = wiring;
    let size = ends.len();
    // Whatever sits in the buffers now would be written twice, once by each process.
    let _ = io::stdout().flush();
    let _ = io::stderr().flush();
    let coordinator = getpid();
    let mut ends: Vec<Option<Ends<S>>> = ends.into_iter().map(Some).collect();
    let mut pids = Vec::with_capacity(size);
    for rank in 0..size {
        // SAFETY: `launch` checked that this process has a single thread, so no lock can be
        // held by a thread that does not exist in the child. The child never returns into
        // the caller's stack: `child_main` ends with `_exit`.
        match unsafe { fork() } {
            Ok(ForkResult::Child) => {
                let mine = ends[rank].take();
                // Keep only this rank's ends: a stray copy of another worker's sender would
                // stop its receiver from ever seeing the channel close.
                drop(ends);
                drop(downs);
                drop(inbox);
                let ring =
                    mine.map(|ends| Ring::new(rank, size, transport, ends, board, limits.fault));
                child_main(stage.clone(), ring, coordinator)
            }
            Ok(ForkResult::Parent { child }) => pids.push(child),
            Err(source) => {
                drop(ends);
                drop(downs);
                let mut workers = Workers::Processes(pids);
                workers.kill_all(Signal::SIGKILL);
                workers.reap_all();
                return Err(LaunchError::Fork { rank, source });
            }
        }
    }
    drop(ends);
    let workers = Workers::Processes(pids);
    match inbox.open() {
        // Every worker has been reaped by now: their records are final.
        Ok(inbox) => supervise(stage, inbox, downs, workers, &board, limits)
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
fn child_main<S: Stage>(stage: S, ring: Option<Ring<S>>, coordinator: Pid) -> ! {
    // Die with the coordinator. The re-check closes the race where the coordinator died
    // before the death signal was armed.
    let armed = nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).is_ok();
    signal::worker_defaults();
    let code = match ring {
        Some(ring) if armed && getppid() == coordinator => worker::run(stage, ring),
        _ => 1,
    };
    let _ = io::stdout().flush();
    let _ = io::stderr().flush();
    // SAFETY: `_exit` skips the atexit handlers and destructors that belong to the
    // coordinator's copy of this process's state; the worker's output is flushed above.
    unsafe { libc::_exit(code) }
}

fn launch_threads<S: Stage>(
    stage: &mut S,
    wiring: Wiring<S>,
    limits: &Limits,
) -> Result<(Vec<S::Output>, RunStats), LaunchError> {
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
        Ok(inbox) => supervise(stage, inbox, downs, workers, &board, limits)
            .map(|outputs| (outputs, RunStats::from_board(&board))),
        Err(e) => {
            drop(downs);
            board.cancel();
            workers.reap_all();
            Err(LaunchError::Wait(e))
        }
    }
}

/// Forking copies only the calling thread; a lock another thread held stays locked forever
/// in the child. So refuse to fork from a process that has more than one thread.
fn ensure_single_threaded() -> Result<(), LaunchError> {
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
