//! One small facade over the ways workers can talk: ipc-channel between forked processes,
//! and std channels between threads. Everything above this module is written once against
//! [`Tx`], [`Rx`] and [`Block`], whichever transport runs underneath.

mod block;
mod control;
pub(crate) mod lend;
mod link;
#[cfg(feature = "mpi")]
pub(crate) mod mpi;
mod payload;

use std::io;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use ipc_channel::ipc::{self, IpcReceiver, IpcSender};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

pub(crate) use block::INLINE_BULK;
pub(crate) use block::{Block, BlockError, Blocks, by_ipc, check_align, ipc_sending, view};
pub(crate) use control::{Event, Inbox, PendingInbox, UpTx};
pub(crate) use link::{LinkRx, LinkTx, Mailboxes, link};
#[cfg(test)]
pub(crate) use payload::take_detail;
pub(crate) use payload::{Payload, de_error, decode, encode};

/// Which machinery carries the messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Transport {
    /// Forked worker processes connected by `ipc-channel` (Unix sockets; bulk blocks in
    /// shared-memory regions passed by file descriptor once, then named through a mailbox
    /// in shared memory). The default.
    #[default]
    Processes,
    /// Worker threads in this process connected by in-process channels. The same stage,
    /// the same ring; useful for debugging and as a baseline.
    Threads,
    /// This process is one rank of an MPI job started by `mpirun`: the ring is built from
    /// MPI point-to-point messages, so it spans machines. Rank 0 also coordinates. Needs
    /// the cargo feature `mpi`.
    #[cfg(feature = "mpi")]
    Mpi,
}

impl Transport {
    /// The transport's name as the command line spells it.
    pub fn name(self) -> &'static str {
        match self {
            Transport::Processes => "processes",
            Transport::Threads => "threads",
            #[cfg(feature = "mpi")]
            Transport::Mpi => "mpi",
        }
    }
}

/// What travels on a ring link: a typed message of the stage's protocol, or a bulk block.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Frame<M> {
    Message(M),
    /// A value on its way through a collective (`Ring::all_gather` and the rest), with
    /// the collective's tag: which one, and how many the sender had begun before it (see
    /// `collective`).
    Collective(M, u64),
    /// A block on its way round a rotation.
    Block(Block),
    /// A block sent to one neighbour with `Ring::send_block`.
    Direct(Block),
}

/// The bit of a mailbox slot's first word that marks a [`Frame::Direct`]; a block's own
/// words leave it clear (see [`Block::to_words`]).
const DIRECT: u64 = 1 << 63;

impl<M> Frame<M> {
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Frame::Message(_) => "a message",
            Frame::Collective(..) => "a collective's value",
            Frame::Block(_) => "a rotation block",
            Frame::Direct(_) => "a block sent with send_block",
        }
    }

    /// A frame that only names a region every rank already has, as three words: small
    /// enough for a mailbox slot (see `link`). `None` for any other frame.
    pub(crate) fn to_words(&self) -> Option<[u64; 3]> {
        match self {
            Frame::Block(block) => block.to_words(),
            Frame::Direct(block) => block.to_words().map(|[first, generation, len]| {
                debug_assert_eq!(first & DIRECT, 0);
                [first | DIRECT, generation, len]
            }),
            Frame::Message(_) | Frame::Collective(..) => None,
        }
    }

    /// The frame [`to_words`](Frame::to_words) made these words from.
    pub(crate) fn from_words([first, generation, len]: [u64; 3]) -> Frame<M> {
        let block = Block::from_words([first & !DIRECT, generation, len]);
        if first & DIRECT == 0 {
            Frame::Block(block)
        } else {
            Frame::Direct(block)
        }
    }
}

/// The sending end of a channel.
#[derive(Debug)]
pub(crate) enum Tx<T> {
    Ipc(IpcSender<T>),
    Local(mpsc::Sender<T>),
}

/// The receiving end of a channel.
#[derive(Debug)]
pub(crate) enum Rx<T> {
    Ipc(IpcReceiver<T>),
    Local(mpsc::Receiver<T>),
    #[cfg(feature = "mpi")]
    Mpi(mpi::Receiver<T>),
}

/// Why a send failed.
#[derive(Debug)]
pub(crate) enum SendFailure {
    /// The receiver is gone.
    Closed,
    Io(io::Error),
    Encoding(String),
}

/// Why a receive returned without a value.
#[derive(Debug)]
pub(crate) enum RecvFailure {
    /// Every sender is gone and nothing is left to read.
    Closed,
    /// Nothing arrived within the timeout.
    Timeout,
    Io(io::Error),
    Encoding(String),
}

/// Creates a channel of the given transport.
pub(crate) fn channel<T>(transport: Transport) -> io::Result<(Tx<T>, Rx<T>)>
where
    T: Serialize + DeserializeOwned,
{
    Ok(match transport {
        Transport::Processes => {
            let (tx, rx) = ipc::channel()?;
            (Tx::Ipc(tx), Rx::Ipc(rx))
        }
        Transport::Threads => {
            let (tx, rx) = mpsc::channel();
            (Tx::Local(tx), Rx::Local(rx))
        }
        // MPI links join ranks of an MPI job; only its launcher makes them.
        #[cfg(feature = "mpi")]
        Transport::Mpi => return Err(io::ErrorKind::Unsupported.into()),
    })
}

impl<T: Serialize + DeserializeOwned> Tx<T> {
    /// Sends without waiting for the receiver, except that ipc-channel blocks on a message
    /// larger than the socket buffer until the receiver reads it. Ring blocks avoid that:
    /// they travel as shared memory, so only a file descriptor crosses the socket.
    pub(crate) fn send(&self, value: T) -> Result<(), SendFailure> {
        match self {
            Tx::Ipc(tx) => by_ipc(|| tx.send(value)).map_err(ipc_send_failure),
            Tx::Local(tx) => tx.send(value).map_err(|_| SendFailure::Closed),
        }
    }
}

/// How long a receive polls before it sleeps when the workers outnumber the cores: then
/// the neighbour we wait for may need this core, so we let it go soon. Waking a sleeping
/// process takes tens of microseconds on a quiet machine; a neighbour on its own core
/// often answers within this, and a ring step at small n is only a few hundred
/// microseconds long.
const SPIN_SHARING_CORES: Duration = Duration::from_micros(100);

/// How long a receive polls before it sleeps when every worker has a core of its own:
/// nobody else needs the core, and a sleeper can take far longer to wake than a quiet
/// machine suggests. On a 2-core virtual machine a sleeping worker took up to 2 ms to
/// wake, and two workers at n = 10⁵ fell into a rhythm where each step paid that twice:
/// one waited for the other's migrants while the other waited for its halo. Polling for
/// 2 ms took 40 steps from 0.149–0.174 s to 0.145–0.149 s.
const SPIN_OWN_CORE: Duration = Duration::from_millis(2);

/// The poll of this process's workers, in nanoseconds: set by [`pace`].
static SPIN_NANOS: AtomicU64 = AtomicU64::new(SPIN_SHARING_CORES.as_nanos() as u64);

/// The cores this process may run on, asked once. The answer reads the cgroup's files, and
/// every forked worker asked again (4% of the time it took to start 256 of them): ask it
/// before forking, and the workers inherit it.
pub(crate) fn cores() -> usize {
    static CORES: OnceLock<usize> = OnceLock::new();
    *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, usize::from))
}

/// Sets how long this process's receives poll before they sleep, for a ring of `workers`:
/// long while each worker can have a core, short once they share them.
pub(crate) fn pace(workers: usize) {
    let spin = if workers <= cores() {
        SPIN_OWN_CORE
    } else {
        SPIN_SHARING_CORES
    };
    SPIN_NANOS.store(spin.as_nanos() as u64, Ordering::Relaxed);
}

/// How long a receive polls before it sleeps (see [`pace`]).
pub(crate) fn spin() -> Duration {
    Duration::from_nanos(SPIN_NANOS.load(Ordering::Relaxed))
}

impl<T: Serialize + DeserializeOwned> Rx<T> {
    /// Waits for the next value, for at most `timeout` if one is given. It polls for a
    /// short while first, and only then sleeps.
    pub(crate) fn recv(&self, timeout: Option<Duration>) -> Result<T, RecvFailure> {
        // The MPI receiver polls in its own way (it also relays for rank 0's coordinator).
        #[cfg(feature = "mpi")]
        if let Rx::Mpi(rx) = self {
            return rx.recv(timeout);
        }
        let started = Instant::now();
        let spin = timeout.map_or(spin(), |t| t.min(spin()));
        loop {
            match self.try_recv() {
                // Yield rather than spin hard: when the workers outnumber the free cores,
                // the neighbour we wait for may need this one.
                Err(RecvFailure::Timeout) if started.elapsed() < spin => std::thread::yield_now(),
                Err(RecvFailure::Timeout) => break,
                done => return done,
            }
        }
        let timeout = timeout.map(|t| t.saturating_sub(started.elapsed()));
        self.recv_blocking(timeout)
    }

    /// Takes the next value if one is already there; [`RecvFailure::Timeout`] if not.
    pub(crate) fn try_recv(&self) -> Result<T, RecvFailure> {
        match self {
            // A zero timeout polls the socket: one system call when it is empty, where
            // `try_recv` makes three (it flips the socket to non-blocking and back).
            Rx::Ipc(rx) => rx
                .try_recv_timeout(Duration::ZERO)
                .map_err(ipc_try_recv_failure),
            Rx::Local(rx) => rx.try_recv().map_err(|e| match e {
                mpsc::TryRecvError::Empty => RecvFailure::Timeout,
                mpsc::TryRecvError::Disconnected => RecvFailure::Closed,
            }),
            #[cfg(feature = "mpi")]
            Rx::Mpi(rx) => rx.recv(Some(Duration::ZERO)),
        }
    }

    pub(crate) fn recv_blocking(&self, timeout: Option<Duration>) -> Result<T, RecvFailure> {
        match (self, timeout) {
            (Rx::Ipc(rx), None) => rx.recv().map_err(ipc_recv_failure),
            (Rx::Ipc(rx), Some(t)) => rx.try_recv_timeout(t).map_err(ipc_try_recv_failure),
            (Rx::Local(rx), None) => rx.recv().map_err(|_| RecvFailure::Closed),
            (Rx::Local(rx), Some(t)) => rx.recv_timeout(t).map_err(|e| match e {
                mpsc::RecvTimeoutError::Timeout => RecvFailure::Timeout,
                mpsc::RecvTimeoutError::Disconnected => RecvFailure::Closed,
            }),
            #[cfg(feature = "mpi")]
            (Rx::Mpi(rx), timeout) => rx.recv(timeout),
        }
    }
}

fn ipc_send_failure(err: ipc_channel::IpcError) -> SendFailure {
    match err {
        ipc_channel::IpcError::Disconnected => SendFailure::Closed,
        ipc_channel::IpcError::Io(e) if is_closed(&e) => SendFailure::Closed,
        ipc_channel::IpcError::Io(e) => SendFailure::Io(e),
        ipc_channel::IpcError::SerializationError(e) => SendFailure::Encoding(e.to_string()),
    }
}

fn ipc_recv_failure(err: ipc_channel::IpcError) -> RecvFailure {
    match err {
        ipc_channel::IpcError::Disconnected => RecvFailure::Closed,
        ipc_channel::IpcError::Io(e) if is_closed(&e) => RecvFailure::Closed,
        ipc_channel::IpcError::Io(e) => RecvFailure::Io(e),
        ipc_channel::IpcError::SerializationError(e) => RecvFailure::Encoding(error_chain(&e)),
    }
}

fn ipc_try_recv_failure(err: ipc_channel::TryRecvError) -> RecvFailure {
    match err {
        ipc_channel::TryRecvError::Empty => RecvFailure::Timeout,
        ipc_channel::TryRecvError::IpcError(e) => ipc_recv_failure(e),
    }
}

/// A peer that died mid-send shows up as a reset or broken connection, not as a clean close.
fn is_closed(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset | io::ErrorKind::NotConnected
    )
}

fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    crate::error::chain(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Workers that each have a core poll long before they sleep; once they outnumber the
    /// cores they let the core go soon.
    #[test]
    fn receives_poll_long_only_while_every_worker_has_a_core() {
        let cores = cores();
        pace(cores);
        assert_eq!(spin(), SPIN_OWN_CORE);
        pace(1);
        assert_eq!(spin(), SPIN_OWN_CORE);
        pace(cores + 1);
        assert_eq!(spin(), SPIN_SHARING_CORES);
        assert!(SPIN_SHARING_CORES < SPIN_OWN_CORE);
    }
}
