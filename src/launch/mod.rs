//! Starting a ring: start the workers, make each one's channels as it starts and hand it
//! its own ends, and supervise them to the end. One launcher per way of running workers: forked
//! processes, threads of this process, the ranks of an MPI job.

#[cfg(feature = "mpi")]
mod mpi;
mod processes;
mod threads;

use std::io;
use std::sync::Arc;
use std::time::Duration;

use crate::error::LaunchError;
use crate::message::{Data, Down, Up};
use crate::progress::Board;
use crate::restart::{Restart, Restarted};
use crate::ring::{Ends, Ring};
use crate::signal::Catch;
use crate::stage::{Handler, NoReports, Stage, StageError};
use crate::stats::RunStats;
use crate::supervise::Limits;
use crate::transport::{
    self, LinkRx, LinkTx, Mailboxes, Payload, PendingInbox, Transport, Tx, decode,
};

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

/// A stage made of a closure, for [`Launcher::run`].
#[derive(Clone)]
struct FnStage<F>(F);

impl<T, F> Stage for FnStage<F>
where
    T: Data,
    F: Fn(&mut Ring) -> Result<T, StageError> + Clone + Send + 'static,
{
    type Output = T;

    fn work(self, ring: &mut Ring) -> Result<T, StageError> {
        (self.0)(ring)
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
    /// [`LaunchError::Timeout`], naming the ranks that did not finish it. A worker is on a
    /// first step from its start until it announces one, so in a stage that announces no
    /// steps the limit bounds each worker's whole run. Without it (the default) a step may
    /// take as long as it likes; circular waits are still caught.
    pub fn step_timeout(mut self, limit: Duration) -> Self {
        self.limits.step_timeout = Some(limit);
        self
    }

    /// On SIGINT, SIGTERM or SIGHUP, let the stage stop at a step boundary instead of stopping the
    /// workers at once: its handler sees [`stop_signal`](crate::stop_signal) and ends the
    /// run, and `launch` returns the outputs as usual. A second signal, or a stage that has
    /// not ended within the step timeout (10 s without one), stops the workers anyway, and
    /// `launch` returns [`LaunchError::Interrupted`].
    pub fn stop_gracefully(mut self, graceful: bool) -> Self {
        self.limits.graceful = graceful;
        self
    }

    /// Injects a fault, for testing how a run fails: worker `fault.rank` fails as
    /// `fault.kind` says when it announces step `fault.step` with
    /// [`Ring::set_step`]. Every stage gets it without asking; see
    /// [`Fault`](crate::Fault). `None` (the default) injects nothing. Only a build with the
    /// `fault-injection` feature strikes; without it, a launch with a fault fails with
    /// [`LaunchError::Fault`].
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

    /// How many workers the ring will have.
    pub fn worker_count(&self) -> usize {
        self.workers
    }

    /// Runs `f` on every worker and returns what each returned, in rank order: a stage
    /// with nothing to configure and no conversation with the coordinator. On forked
    /// processes by default, like every launch.
    ///
    /// ```
    /// use ringleader::{Launcher, Transport};
    ///
    /// let sums = Launcher::new().workers(4).transport(Transport::Threads).run(|ring| {
    ///     let rank = ring.rank() as u64;
    ///     Ok(ring.all_reduce(rank, |a, b| a + b)?)
    /// })?;
    /// assert_eq!(sums, vec![6, 6, 6, 6]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    ///
    /// As [`launch`](Launcher::launch).
    pub fn run<T, F>(&self, f: F) -> Result<Vec<T>, LaunchError>
    where
        T: Data,
        F: Fn(&mut Ring) -> Result<T, StageError> + Clone + Send + 'static,
    {
        self.launch(FnStage(f))
    }

    /// Runs `stage` on every worker and returns each worker's output, in rank order. Every
    /// worker starts from a copy of `stage`. A stage that reports to the coordinator needs
    /// a [`Handler`]: see [`launch_with`](Launcher::launch_with).
    ///
    /// With [`Transport::Processes`] the workers are forked, so the calling process must
    /// still be single-threaded: fork workers before starting any thread. Each child dies
    /// with the coordinator (`PR_SET_PDEATHSIG`).
    ///
    /// With `Transport::Mpi` (cargo feature `mpi`) this process is one rank of the job
    /// `mpirun` started, and the ring has as many workers as the job has ranks. Rank 0 runs
    /// its worker and the coordinator, and is the only rank that returns; every other rank
    /// ends its process when its worker is done, so a process launches one MPI ring. A
    /// failure on any rank prints one line naming the rank and cause on that rank's stderr
    /// and aborts the whole job (`MPI_Abort`): an MPI job cannot lose a rank and go on. The
    /// other ranks send rank 0 their progress, so the step timeout and the deadlock watch
    /// cover the whole job: a rank that stops answering, or ranks that wait for each other
    /// in a cycle, end it the same way, with one line from rank 0. A Ctrl-C to `mpirun`
    /// reaches every rank as SIGTERM: with [`stop_gracefully`](Launcher::stop_gracefully)
    /// the stage stops at a step boundary on every rank and this returns on rank 0, as on
    /// one machine; without it rank 0 prints `interrupted by SIGTERM: every worker was
    /// stopped` and exits with status 143, and mpirun ends the other ranks.
    ///
    /// # Errors
    ///
    /// [`LaunchError::Worker`] names the worker that failed first, its pid and the cause;
    /// by then every other worker has been stopped and reaped. [`LaunchError::Deadlock`],
    /// [`LaunchError::Timeout`] and [`LaunchError::Interrupted`] end the run the same way.
    /// Other variants report a launch that could not start.
    ///
    /// While it runs, the coordinator catches SIGINT, SIGTERM and SIGHUP (the previous
    /// handlers come back when it returns), and worker processes ignore SIGINT and SIGHUP: a
    /// terminal's Ctrl-C or hangup stops the run in order, through the coordinator. One the
    /// process was started ignoring (SIGHUP under `nohup`) stays ignored.
    pub fn launch<S: Stage>(&self, stage: S) -> Result<Vec<S::Output>, LaunchError> {
        self.launch_with(stage, &mut NoReports)
    }

    /// Runs `stage` as [`launch`](Launcher::launch) does, with `handler` answering the
    /// workers' reports on the coordinator. The handler is borrowed for the run, so the
    /// caller has it, and whatever it gathered, back afterwards.
    ///
    /// ```
    /// use ringleader::{Coordinator, Gather, Handler, Launcher, Ring, Stage, StageError,
    ///     Transport};
    ///
    /// /// Every worker asks for the largest square among the ranks.
    /// #[derive(Clone)]
    /// struct Squares;
    ///
    /// impl Stage for Squares {
    ///     type Output = u64;
    ///
    ///     fn work(self, ring: &mut Ring) -> Result<u64, StageError> {
    ///         let square = (ring.rank() as u64).pow(2);
    ///         Ok(ring.ask(&square)?)
    ///     }
    /// }
    ///
    /// /// The coordinator's side: it keeps every round it saw.
    /// struct Largest<'a> {
    ///     gather: Gather<u64>,
    ///     seen: &'a mut Vec<Vec<u64>>,
    /// }
    ///
    /// impl Handler for Largest<'_> {
    ///     type Report = u64;
    ///     type Answer = u64;
    ///
    ///     fn on_report(&mut self, from: usize, square: u64, coordinator: &mut Coordinator<'_, u64>)
    ///         -> Result<(), StageError> {
    ///         if let Some(all) = self.gather.push(from, square) {
    ///             coordinator.broadcast(all.iter().copied().max().unwrap_or(0))?;
    ///             self.seen.push(all);
    ///         }
    ///         Ok(())
    ///     }
    /// }
    ///
    /// let mut seen = Vec::new();
    /// let mut handler = Largest { gather: Gather::new(3), seen: &mut seen };
    /// let launcher = Launcher::new().workers(3).transport(Transport::Threads);
    /// assert_eq!(launcher.launch_with(Squares, &mut handler)?, vec![4, 4, 4]);
    /// assert_eq!(seen, vec![vec![0, 1, 4]]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    ///
    /// As [`launch`](Launcher::launch).
    pub fn launch_with<S: Stage, H: Handler>(
        &self,
        stage: S,
        handler: &mut H,
    ) -> Result<Vec<S::Output>, LaunchError> {
        self.launch_with_stats(stage, handler)
            .map(|(outputs, _)| outputs)
    }

    /// Runs `stage` as [`launch_with`](Launcher::launch_with) does, and also returns what
    /// the run measured of itself: the depth of its critical path per step (see
    /// [`RunStats`]).
    ///
    /// ```
    /// use ringleader::{Launcher, NoReports, Transport};
    ///
    /// let launcher = Launcher::new().workers(4).transport(Transport::Threads);
    /// let rotate = |ring: &mut ringleader::Ring| {
    ///     for step in 0..10 {
    ///         ring.set_step(step);
    ///         ring.rotate(&[step], |_, _: &[u64]| {})?;
    ///     }
    ///     Ok(())
    /// };
    /// let (_, stats) = launcher.launch_with_stats(ringleader::stage_fn(rotate), &mut NoReports)?;
    /// // Every block travels three hops each step.
    /// assert_eq!((stats.depth, stats.steps), (Some(3.0), 10));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    ///
    /// As [`launch`](Launcher::launch).
    pub fn launch_with_stats<S: Stage, H: Handler>(
        &self,
        stage: S,
        handler: &mut H,
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
            processes::ensure_single_threaded()?;
        }
        let _catch = Catch::install();
        let wiring = |transport| Wiring::new(transport, self.workers);
        let (outputs, stats) = match self.transport {
            Transport::Processes => processes::launch(
                &stage,
                handler,
                wiring(Transport::Processes).map_err(LaunchError::Channel)?,
                &self.limits,
            )?,
            Transport::Threads => threads::launch(
                &stage,
                handler,
                wiring(Transport::Threads).map_err(LaunchError::Channel)?,
                &self.limits,
            )?,
            // Each rank keeps its own board, so no one sees every rank's hop count.
            #[cfg(feature = "mpi")]
            Transport::Mpi => (
                mpi::launch(&stage, handler, self.workers, &self.limits)?,
                RunStats::default(),
            ),
        };
        Ok((decode_outputs::<S::Output>(outputs)?, stats))
    }

    /// As [`Launcher::launch_with_stats`], but a run that fails in a way that
    /// [can restart](LaunchError::can_restart) starts again, up to
    /// [`restarts`](Launcher::restarts) times: every worker of the failed ring is stopped
    /// and reaped, [`Restart::rewind`] makes the stage go on from the last state the
    /// handler holds, and a new ring starts. An injected [`fault`](Launcher::fault)
    /// strikes in the first ring only.
    ///
    /// `restarted` is told of every restart, before the new ring starts.
    ///
    /// An MPI ring cannot restart: a rank that fails ends the whole job, and the ranks that
    /// `mpirun` started cannot be started again.
    ///
    /// # Errors
    ///
    /// As [`Launcher::launch`], for the failure that ended the run: the last one, once the
    /// restarts are spent or the handler has nothing to go on from. With
    /// `Transport::Mpi` and any restarts, `LaunchError::Mpi` before anything starts.
    pub fn launch_restarting<S: Stage, H: Restart<S>>(
        &self,
        mut stage: S,
        handler: &mut H,
        mut restarted: impl FnMut(&Restarted),
    ) -> Result<(Vec<S::Output>, RunStats), LaunchError> {
        #[cfg(feature = "mpi")]
        if self.transport == Transport::Mpi && self.restarts > 0 {
            return Err(LaunchError::Mpi(RESTARTS_UNDER_MPI.to_owned()));
        }
        let mut launcher = self.clone();
        let mut attempt = 0;
        loop {
            match launcher.launch_with_stats(stage.clone(), handler) {
                Err(failure) if attempt < self.restarts && failure.can_restart() => {
                    let Some(rewind) = handler.rewind(&mut stage, &failure) else {
                        return Err(failure);
                    };
                    attempt += 1;
                    restarted(&Restarted {
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
}

/// Why an MPI ring cannot restart.
#[cfg(feature = "mpi")]
const RESTARTS_UNDER_MPI: &str = "an mpi ring cannot restart: a rank that fails ends the \
whole job, and mpirun's ranks cannot be started again (run without restarts, and resume from \
a checkpoint in a new job)";

/// A [`Stage`] made of a closure, for the launches that take a stage and a handler:
/// [`Launcher::run`] is this with no handler.
pub fn stage_fn<T, F>(f: F) -> impl Stage<Output = T>
where
    T: Data,
    F: Fn(&mut Ring) -> Result<T, StageError> + Clone + Send + 'static,
{
    FnStage(f)
}

/// The workers' outputs, read as the stage's output type.
fn decode_outputs<O: Data>(outputs: Vec<Payload>) -> Result<Vec<O>, LaunchError> {
    outputs
        .into_iter()
        .enumerate()
        .map(|(rank, payload)| {
            decode(payload).map_err(|e| LaunchError::Protocol {
                rank,
                what: format!(
                    "returned an output that is not a {}: {e}",
                    std::any::type_name::<O>()
                ),
            })
        })
        .collect()
}

/// The channels of a ring, made rank by rank as the workers start ([`Wiring::ends`]).
///
/// A forked worker inherits every descriptor the coordinator holds when it forks, and must
/// close all but its own: a stray copy of another worker's sender would stop its receiver
/// from ever seeing the channel close. Made all at once, a ring of P workers left each
/// worker a dozen descriptors per rank to close, P² in all (0.45 s of a 256-worker start on
/// two cores). Made rank by rank, a worker finds only the coordinator's two ends of each
/// rank started before it, and the halves of the links the next rank and the last take.
pub(crate) struct Wiring {
    pub(crate) transport: Transport,
    pub(crate) size: usize,
    mailboxes: Option<Arc<Mailboxes>>,
    /// The next rank's halves of the links between it and the last rank made.
    next: Option<Halves>,
    /// The last rank's halves of the links between it and rank 0, made with rank 0.
    wrap: Option<Halves>,
    /// How many ranks have their ends.
    made: usize,
    pub(crate) downs: Vec<Tx<Down>>,
    pub(crate) inbox: PendingInbox<Up>,
    pub(crate) board: Arc<Board>,
}

/// One rank's ends of the two links between it and a neighbour: what it sends on and what
/// it receives from.
struct Halves {
    tx: LinkTx<Payload>,
    rx: LinkRx<Payload>,
}

impl Wiring {
    pub(crate) fn new(transport: Transport, size: usize) -> io::Result<Self> {
        // Link r carries blocks rightwards from rank r to rank r + 1, and link r's reverse
        // leftwards from rank r + 1 to rank r; between processes each has a mailbox: link
        // r's rightward one is 2r, the leftward one from rank r is 2r + 1.
        let mailboxes = match transport {
            Transport::Processes => Some(Mailboxes::new(2 * size)?),
            _ => None,
        };
        Ok(Wiring {
            transport,
            size,
            mailboxes,
            next: None,
            wrap: None,
            made: 0,
            downs: Vec::with_capacity(size),
            inbox: PendingInbox::new(transport)?,
            board: Arc::new(Board::new(size)?),
        })
    }

    /// Makes the ends of the next rank, in rank order; the coordinator keeps its own ends
    /// of them, and the halves of the links the next rank and the last need.
    pub(crate) fn ends(&mut self) -> io::Result<Ends> {
        let (rank, size) = (self.made, self.size);
        let link = |index| transport::link(self.transport, self.mailboxes.as_ref(), index);
        // Rank 0 and the last rank share a pair of links, which rank 0 makes.
        let left = match self.next.take() {
            Some(left) => left,
            None => {
                let (to_last, from_first) = link(1)?;
                let (to_first, from_last) = link(2 * (size - 1))?;
                self.wrap = Some(Halves {
                    tx: to_first,
                    rx: from_first,
                });
                Halves {
                    tx: to_last,
                    rx: from_last,
                }
            }
        };
        let right = match self.wrap.take_if(|_| rank + 1 == size) {
            Some(right) => right,
            None => {
                let (to_right, from_left) = link(2 * rank)?;
                let (to_left, from_right) = link(2 * (rank + 1) + 1)?;
                self.next = Some(Halves {
                    tx: to_left,
                    rx: from_left,
                });
                Halves {
                    tx: to_right,
                    rx: from_right,
                }
            }
        };
        let (down_tx, down) = transport::channel(self.transport)?;
        let up = self.inbox.add()?;
        self.downs.push(down_tx);
        self.made += 1;
        Ok(Ends {
            to_right: right.tx,
            from_left: left.rx,
            to_left: left.tx,
            from_right: right.rx,
            up,
            down,
        })
    }
}
