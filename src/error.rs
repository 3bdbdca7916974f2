//! The errors the framework returns.

use std::fmt;
use std::io;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::deadlock::{Party, Wait};
use crate::signal::StopSignal;

/// An error from a ring operation inside a worker: a send, a receive or a rotation.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RingError {
    /// The neighbour (or the coordinator) closed its end: it has exited or failed.
    #[error("rank {peer} is gone (its end of the channel closed)")]
    PeerGone {
        /// The rank on the other end, or `None` for the coordinator.
        peer: Peer,
    },
    /// The coordinator addressed a rank the ring does not have.
    #[error("the ring has no rank {rank} (its ranks are 0 to {})", .size.saturating_sub(1))]
    NoSuchRank {
        /// The rank asked for.
        rank: usize,
        /// How many ranks the ring has.
        size: usize,
    },
    /// The coordinator closed the control channel.
    #[error("the coordinator is gone")]
    CoordinatorGone,
    /// The coordinator is ending the run (another worker failed, a deadlock or timeout was
    /// found, or the coordinator was told to stop); the wait was abandoned.
    #[error("the run is being stopped")]
    Stopped,
    /// A frame of the wrong kind arrived: a stage interleaved `send`/`recv` with `rotate`
    /// on the same link in different orders on different ranks.
    #[error("protocol error on the link from rank {peer}: expected {expected}, got {got}")]
    Protocol {
        /// The rank the frame came from.
        peer: Peer,
        /// What the receiver expected.
        expected: &'static str,
        /// What arrived.
        got: &'static str,
    },
    /// A block does not fit the element type it is read as.
    #[error("a block of {bytes} bytes is not a whole number of {elem_size}-byte elements")]
    BlockSize {
        /// Size of the block in bytes.
        bytes: usize,
        /// Size of the element type.
        elem_size: usize,
    },
    /// The element type's alignment is larger than blocks guarantee (16 bytes).
    #[error("block elements may be aligned to at most 16 bytes, not {0}")]
    Alignment(usize),
    /// The operating system refused a channel operation.
    #[error("channel i/o failed")]
    Io(#[source] io::Error),
    /// A message could not be encoded or decoded.
    #[error("message encoding failed: {0}")]
    Encoding(String),
    /// A [`Ticket`](crate::Ticket)'s array could not be read: what went wrong.
    #[error("could not read a lent array: {0}")]
    Loan(String),
    /// A [`Ticket`](crate::Ticket)'s array could not be read because the worker that lent
    /// it had ended: its own end says why.
    #[error("could not read a lent array: {0}")]
    LenderGone(String),
}

/// Who is at the other end of a link: a rank.
pub type Peer = usize;

impl RingError {
    /// Whether this error only reflects another worker's failure (a closed peer), rather
    /// than being a cause of its own.
    pub fn is_secondary(&self) -> bool {
        matches!(
            self,
            RingError::PeerGone { .. }
                | RingError::CoordinatorGone
                | RingError::Stopped
                | RingError::LenderGone(_)
        )
    }
}

/// Why a worker failed, as the coordinator saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Cause {
    /// The stage panicked; the panic message.
    Panicked(String),
    /// The stage returned an error; its message, with its causes.
    Failed(String),
    /// A neighbour failed first and this worker saw its channel close.
    PeerLost(String),
    /// The process exited with a non-zero code without reporting.
    Exited(i32),
    /// The process was killed by a signal (its name, such as `SIGKILL`).
    Signaled(String),
    /// The worker's channel closed but the exit status says nothing went wrong.
    Vanished,
}

impl Cause {
    /// Whether this failure is a consequence of another worker's failure.
    pub fn is_secondary(&self) -> bool {
        matches!(self, Cause::PeerLost(_))
    }
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Cause::Panicked(msg) => write!(f, "panicked: {msg}"),
            Cause::Failed(msg) => write!(f, "failed: {msg}"),
            Cause::PeerLost(msg) => write!(f, "lost a peer: {msg}"),
            Cause::Exited(code) => write!(f, "exited with code {code}"),
            Cause::Signaled(sig) => write!(f, "was killed by {sig}"),
            Cause::Vanished => write!(f, "closed its channel without reporting a result"),
        }
    }
}

/// A worker that did not finish its stage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerFailure {
    /// The worker's rank.
    pub rank: usize,
    /// Its process id, for the processes transport.
    pub pid: Option<u32>,
    /// The last step the worker announced with [`Ring::set_step`](crate::Ring::set_step).
    pub step: Option<u64>,
    /// What went wrong.
    pub cause: Cause,
}

impl fmt::Display for WorkerFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "worker rank {}", self.rank)?;
        if let Some(pid) = self.pid {
            write!(f, " (pid {pid})")?;
        }
        write!(f, " {}", self.cause)?;
        if let Some(step) = self.step {
            write!(f, " at step {step}")?;
        }
        Ok(())
    }
}

/// An error from [`Launcher::launch`](crate::Launcher::launch).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LaunchError {
    /// A ring needs at least one worker.
    #[error("a ring needs at least one worker")]
    NoWorkers,
    /// Forking a process that runs several threads is unsafe: only the forking thread
    /// survives in the child, and locks held by the others stay locked forever.
    #[error(
        "refusing to fork: this process runs {threads} threads; launch workers before starting any thread"
    )]
    Threaded {
        /// How many threads the process had.
        threads: usize,
    },
    /// Creating a channel failed.
    #[error("could not create a channel")]
    Channel(#[source] io::Error),
    /// `fork` failed.
    #[error("could not fork worker rank {rank}")]
    Fork {
        /// The rank that could not be started.
        rank: usize,
        /// The OS error.
        #[source]
        source: nix::Error,
    },
    /// Spawning a worker thread failed.
    #[error("could not start worker thread rank {rank}")]
    Spawn {
        /// The rank that could not be started.
        rank: usize,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// Waiting for the workers failed.
    #[error("could not wait for the workers")]
    Wait(#[source] io::Error),
    /// A worker failed; the run was stopped and every worker reaped.
    #[error("{0}")]
    Worker(WorkerFailure),
    /// The stage's coordinator side asked to stop the run with
    /// [`Coordinator::stop`](crate::Coordinator::stop); every worker was stopped and reaped.
    #[error("the run was stopped")]
    Stopped,
    /// Workers waited on each other in a cycle, with nothing in flight, so none could ever
    /// move again; every worker was stopped and reaped.
    #[error("deadlock: {}", describe_waits(.waits))]
    Deadlock {
        /// Each blocked worker and who it waited for, starting at the lowest rank.
        waits: Vec<Wait>,
    },
    /// A step took longer than [`Launcher::step_timeout`](crate::Launcher::step_timeout),
    /// or a worker announced no step for that long; every worker was stopped and reaped.
    #[error("{}", describe_timeout(*.step, *.after, .ranks))]
    Timeout {
        /// The step that did not finish. `None` when the late ranks had announced no step
        /// at all: a stage that announces none (its whole run is one step to the timeout),
        /// or workers stuck before their first.
        step: Option<u64>,
        /// The limit.
        after: Duration,
        /// The ranks still working on it (not blocked waiting for another), with their pids.
        ranks: Vec<(usize, Option<u32>)>,
    },
    /// The coordinator received SIGINT, SIGTERM or SIGHUP; every worker was stopped and reaped.
    #[error("interrupted by {signal}: every worker was stopped")]
    Interrupted {
        /// The signal.
        signal: StopSignal,
    },
    /// The stage's coordinator side (`Stage::on_report`) returned an error.
    #[error("coordinator failed: {0}")]
    Coordinator(String),
    /// MPI could not start the ring: it is not available, was started already, or the job
    /// has another number of ranks than the ring asks for.
    #[cfg(feature = "mpi")]
    #[error("mpi: {0}")]
    Mpi(String),
    /// The fault given to [`Launcher::fault`](crate::Launcher::fault) cannot happen on this
    /// ring (a rank it does not have, or a kind its transport cannot play).
    #[error("cannot inject the fault: {0}")]
    Fault(String),
    /// A worker broke the control protocol (for example, reported twice).
    #[error("worker rank {rank} broke the control protocol: {what}")]
    Protocol {
        /// The offending rank.
        rank: usize,
        /// What happened.
        what: String,
    },
}

/// Renders an error with its chain of causes: `outer: inner: innermost`.
pub(crate) fn chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        out.push_str(": ");
        out.push_str(&cause.to_string());
        source = cause.source();
    }
    out
}

fn describe_waits(waits: &[Wait]) -> String {
    let mut out = waits
        .iter()
        .map(|wait| match wait.on {
            Party::Rank(peer) => format!("rank {} waits for rank {peer}", wait.rank),
            Party::Coordinator => format!("rank {} waits for the coordinator", wait.rank),
            Party::Barrier => format!("rank {} waits at a barrier", wait.rank),
            Party::Receiver(peer) => {
                format!(
                    "rank {} waits for rank {peer} to take what it sent",
                    wait.rank
                )
            }
        })
        .collect::<Vec<_>>()
        .join(", ");
    if let Some(first) = waits.first().and_then(|w| w.step)
        && waits.iter().all(|w| w.step == Some(first))
    {
        out.push_str(&format!(" (at step {first})"));
    }
    out
}

fn describe_timeout(step: Option<u64>, after: Duration, ranks: &[(usize, Option<u32>)]) -> String {
    let after = after.as_secs_f64();
    let ranks = describe_ranks(ranks);
    match step {
        Some(step) => format!("step {step} timed out after {after} s: {ranks} did not finish it"),
        None => format!("timed out after {after} s: {ranks} announced no step in that time"),
    }
}

fn describe_ranks(ranks: &[(usize, Option<u32>)]) -> String {
    let each = |&(rank, pid): &(usize, Option<u32>)| match pid {
        Some(pid) => format!("{rank} (pid {pid})"),
        None => rank.to_string(),
    };
    let list = ranks.iter().map(each).collect::<Vec<_>>().join(", ");
    if ranks.len() == 1 {
        format!("rank {list}")
    } else {
        format!("ranks {list}")
    }
}
