//! The control channels: every worker reports up to the coordinator, which waits on all of
//! them at once and learns of a worker's end when its channel closes.

use std::collections::HashMap;
use std::io;
use std::sync::mpsc;
use std::time::Duration;

use ipc_channel::ipc::{self, IpcReceiver, IpcReceiverSet, IpcSelectionResult, IpcSender};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{SendFailure, Transport, ipc_send_failure};

/// A worker's end of its up channel.
#[derive(Debug)]
pub(crate) enum UpTx<U> {
    Ipc(IpcSender<U>),
    /// Threads share one channel; each message carries the rank, and dropping the sender
    /// posts `None`, which is what a closed socket tells the coordinator between processes.
    Local {
        rank: usize,
        tx: mpsc::Sender<(usize, Option<U>)>,
    },
    /// A rank of an MPI job reporting to rank 0.
    #[cfg(feature = "mpi")]
    Mpi(super::mpi::Sender),
}

impl<U: Serialize + DeserializeOwned> UpTx<U> {
    pub(crate) fn send(&self, value: U) -> Result<(), SendFailure> {
        match self {
            UpTx::Ipc(tx) => super::by_ipc(|| tx.send(value)).map_err(ipc_send_failure),
            UpTx::Local { rank, tx } => tx
                .send((*rank, Some(value)))
                .map_err(|_| SendFailure::Closed),
            #[cfg(feature = "mpi")]
            UpTx::Mpi(tx) => tx.send(&value),
        }
    }
}

impl<U> Drop for UpTx<U> {
    fn drop(&mut self) {
        if let UpTx::Local { rank, tx } = self {
            // The coordinator may be gone already; then nobody needs to know.
            let _ = tx.send((*rank, None));
        }
    }
}

/// The coordinator's receiving ends, before the workers start: one more with each rank.
#[derive(Debug)]
pub(crate) enum PendingInbox<U> {
    Ipc(Vec<IpcReceiver<U>>),
    /// Threads share one channel; `tx` is cloned for each rank and dropped when the inbox
    /// opens, so the channel ends with the last worker.
    Local {
        tx: mpsc::Sender<(usize, Option<U>)>,
        rx: mpsc::Receiver<(usize, Option<U>)>,
        ranks: usize,
    },
}

impl<U> PendingInbox<U>
where
    U: Serialize + DeserializeOwned,
{
    /// An inbox with no up channels yet.
    pub(crate) fn new(transport: Transport) -> io::Result<Self> {
        match transport {
            Transport::Processes => Ok(PendingInbox::Ipc(Vec::new())),
            Transport::Threads => {
                let (tx, rx) = mpsc::channel();
                Ok(PendingInbox::Local { tx, rx, ranks: 0 })
            }
            // The MPI launcher wires rank 0's inbox itself.
            #[cfg(feature = "mpi")]
            Transport::Mpi => Err(io::ErrorKind::Unsupported.into()),
        }
    }

    /// The up channel of the next rank: the inbox keeps the receiving end, and the worker
    /// gets the sender.
    pub(crate) fn add(&mut self) -> io::Result<UpTx<U>> {
        match self {
            PendingInbox::Ipc(receivers) => {
                let (tx, rx) = ipc::channel()?;
                receivers.push(rx);
                Ok(UpTx::Ipc(tx))
            }
            PendingInbox::Local { tx, ranks, .. } => {
                let rank = *ranks;
                *ranks += 1;
                Ok(UpTx::Local {
                    rank,
                    tx: tx.clone(),
                })
            }
        }
    }

    /// Starts listening. Call this after forking, so that no child inherits the poll set.
    pub(crate) fn open(self) -> io::Result<Inbox<U>> {
        match self {
            PendingInbox::Ipc(receivers) => {
                let mut set = IpcReceiverSet::new()?;
                let mut ranks = HashMap::with_capacity(receivers.len());
                for (rank, rx) in receivers.into_iter().enumerate() {
                    let id = set.add(rx)?;
                    ranks.insert(id, rank);
                }
                Ok(Inbox::Ipc { set, ranks })
            }
            PendingInbox::Local { rx, .. } => Ok(Inbox::Local(rx)),
        }
    }
}

/// What the coordinator hears from its workers.
#[derive(Debug)]
pub(crate) enum Event<U> {
    /// A message from the worker of this rank.
    Message(usize, U),
    /// A message from this rank that could not be decoded.
    Garbled(usize, String),
    /// This rank's channel closed: the worker has ended, one way or another.
    Closed(usize),
}

/// The coordinator's view of every up channel at once.
pub(crate) enum Inbox<U> {
    Ipc {
        set: IpcReceiverSet,
        ranks: HashMap<u64, usize>,
    },
    Local(mpsc::Receiver<(usize, Option<U>)>),
    /// Rank 0 of an MPI job: as `Local`, and while it waits it runs the relay that brings
    /// the other ranks' reports and progress records (see `launch::mpi`).
    #[cfg(feature = "mpi")]
    Relayed {
        rx: mpsc::Receiver<(usize, Option<U>)>,
        pump: super::mpi::SharedPump,
    },
}

/// How often the coordinator of an MPI job runs the relay itself. Rank 0's worker runs it
/// whenever it waits long, but not while it computes, and the other ranks' progress must
/// reach the coordinator all the same.
#[cfg(feature = "mpi")]
const RELAY_EVERY: Duration = Duration::from_millis(10);

impl<U: Serialize + DeserializeOwned> Inbox<U> {
    /// Waits for events, at most `timeout` if one is given; an empty result means the time
    /// ran out.
    pub(crate) fn wait(&mut self, timeout: Option<Duration>) -> io::Result<Vec<Event<U>>> {
        match self {
            Inbox::Ipc { set, ranks } => {
                let results = match timeout {
                    None => set.select()?,
                    Some(t) => match set.try_select_timeout(t) {
                        Ok(results) => results,
                        Err(ipc_channel::TrySelectError::Empty) => Vec::new(),
                        Err(ipc_channel::TrySelectError::IoError(e)) => return Err(e),
                    },
                };
                Ok(results
                    .into_iter()
                    .filter_map(|result| match result {
                        IpcSelectionResult::MessageReceived(id, message) => {
                            let rank = *ranks.get(&id)?;
                            super::payload::take_detail();
                            match message.to::<U>() {
                                Ok(up) => Some(Event::Message(rank, up)),
                                Err(e) => match super::payload::take_detail() {
                                    // A worker that lent its last word and ended before it
                                    // was read (killed, say): its channel's close follows,
                                    // and its exit status says more than the failed read.
                                    Some(detail) if detail.lender_gone => None,
                                    Some(detail) => Some(Event::Garbled(rank, detail.message)),
                                    None => Some(Event::Garbled(rank, crate::error::chain(&e))),
                                },
                            }
                        }
                        IpcSelectionResult::ChannelClosed(id) => {
                            ranks.get(&id).map(|&rank| Event::Closed(rank))
                        }
                    })
                    .collect())
            }
            Inbox::Local(rx) => {
                let first = match timeout {
                    None => rx.recv().ok(),
                    Some(t) => rx.recv_timeout(t).ok(),
                };
                let Some(first) = first else {
                    return Ok(Vec::new());
                };
                let mut events = vec![local_event(first)];
                events.extend(rx.try_iter().map(local_event));
                Ok(events)
            }
            #[cfg(feature = "mpi")]
            Inbox::Relayed { rx, pump } => {
                let deadline = timeout.map(|t| std::time::Instant::now() + t);
                let first = loop {
                    // A coordinator that has gone has no use for the relay either.
                    let _ = super::mpi::poll(pump);
                    let slice = deadline.map_or(RELAY_EVERY, |d| {
                        d.saturating_duration_since(std::time::Instant::now())
                            .min(RELAY_EVERY)
                    });
                    match rx.recv_timeout(slice) {
                        Ok(first) => break first,
                        Err(mpsc::RecvTimeoutError::Timeout)
                            if deadline.is_none_or(|d| std::time::Instant::now() < d) => {}
                        Err(_) => return Ok(Vec::new()),
                    }
                };
                let mut events = vec![local_event(first)];
                events.extend(rx.try_iter().map(local_event));
                Ok(events)
            }
        }
    }
}

fn local_event<U>((rank, message): (usize, Option<U>)) -> Event<U> {
    match message {
        Some(up) => Event::Message(rank, up),
        None => Event::Closed(rank),
    }
}

impl<U> std::fmt::Debug for Inbox<U> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Inbox::Ipc { ranks, .. } => write!(f, "Inbox::Ipc({} ranks)", ranks.len()),
            Inbox::Local(_) => write!(f, "Inbox::Local"),
            #[cfg(feature = "mpi")]
            Inbox::Relayed { .. } => write!(f, "Inbox::Relayed"),
        }
    }
}
