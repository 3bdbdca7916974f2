//! Ring links. Between threads a link is just the transport's channel; between MPI ranks,
//! one message per frame (see `mpi::link`). Between processes it is a socket plus a mailbox
//! in shared memory.
//!
//! Once a region has crossed the socket (see `block`), every later block frame (of a
//! rotation, or sent to one neighbour) only names it: three words, and a fourth for the hop
//! count every frame carries (see `stats`). Sending those words over the socket costs a
//! `sendmsg`, a `recvmsg` and the receiver's polls, several microseconds a hop; the mailbox
//! carries them through shared memory instead, as cheaply as a channel between threads.
//! Everything else (messages, empty blocks, a region's first pass with its file
//! descriptor) still takes the socket, with its hop count beside it, and the socket is
//! still how a receiver learns that its sender has gone.
//!
//! # The protocol
//!
//! Frames on a link are numbered 1, 2, … in the order they are sent, whichever way they go.
//! The sender alone writes `delivered`, the number of frames it has handed over; the
//! receiver alone writes `taken`, the number it has received. Frame `k` went by mailbox
//! exactly when slot `k % SLOTS` holds sequence number `k`; otherwise it is the next frame
//! in the socket. The sender writes slot `k % SLOTS` only once `taken >= k - SLOTS`, so a
//! slot is never rewritten while it may still be read.
//!
//! A receiver spins on `delivered` for a short while and then sleeps in the socket, after
//! raising `sleeping`. A frame for a sleeping receiver goes by socket, which wakes it. The
//! race where the receiver falls asleep just as a frame goes into the mailbox is closed
//! the way a futex closes it, with sequentially consistent accesses on both sides:
//!
//! - receiver: `sleeping = 1`, then read `delivered`; sleep only if nothing new;
//! - sender: `delivered = k`, then read `sleeping`; if set, send a nudge (an empty frame
//!   that only wakes the receiver) unless one is already unread.
//!
//! At least one side sees the other's write, so the receiver either finds the frame or
//! is woken. A receiver woken by a nudge looks at the mailbox before it reads the socket
//! again; nudges it meets later are skipped. At most one nudge is unread at a time, so
//! they never fill the socket.
//!
//! The receiver's side also holds `released`: how many blocks sent with `Ring::send_block`
//! the receiver is done reading. Only the receiver writes it; the sender reads it to know
//! which of its buffers it may write again (the argument is in `block`).

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ipc_channel::ipc;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::{Frame, RecvFailure, Rx, SendFailure, Transport, Tx, channel, spin};
use crate::shared::{SharedArray, SharedZeroed};

/// Frames a mailbox holds at once. A rotation has at most two frames in flight on a link,
/// so a sender rarely finds the mailbox full; when it does, the frame takes the socket.
const SLOTS: usize = 4;

/// How many times a spinning receiver reads `delivered` between yields of its core.
const POLLS_PER_YIELD: u32 = 32;

/// The mailbox of one link, on cache lines of its own: what the sender writes, what the
/// receiver writes, and the slots.
#[repr(C, align(64))]
struct Mailbox {
    sender: SenderSide,
    receiver: ReceiverSide,
    slots: [Slot; SLOTS],
}

#[repr(C, align(64))]
struct SenderSide {
    /// Frames handed over, by either way.
    delivered: AtomicU64,
    /// Nudges sent, counted before the send.
    nudges: AtomicU64,
}

#[repr(C, align(64))]
struct ReceiverSide {
    /// Frames received.
    taken: AtomicU64,
    /// 1 while the receiver may be asleep in the socket.
    sleeping: AtomicU64,
    /// Nudges read from the socket.
    nudges_read: AtomicU64,
    /// Blocks sent with `Ring::send_block` that the receiver has released: it holds no
    /// view of their bytes any more. Stored with `Release` after the last read.
    released: AtomicU64,
}

/// One frame's slot, on a cache line of its own: five words would otherwise straddle two
/// lines, and a hop would move both between the cores.
#[repr(C, align(64))]
struct Slot {
    /// The frame number this slot holds; written last.
    seq: AtomicU64,
    /// The three words that name a region, then the frame's hop count.
    words: [AtomicU64; 4],
}

// SAFETY: atomics only, valid at zero.
unsafe impl SharedZeroed for Mailbox {}

/// The mailboxes of every link of a ring, in memory every worker process shares.
pub(crate) struct Mailboxes(SharedArray<Mailbox>);

impl Mailboxes {
    pub(crate) fn new(links: usize) -> std::io::Result<Arc<Mailboxes>> {
        Ok(Arc::new(Mailboxes(SharedArray::new(links)?)))
    }
}

impl fmt::Debug for Mailboxes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Mailboxes")
            .field("links", &self.0.len())
            .finish()
    }
}

/// One link's mailbox, as either end holds it.
#[derive(Debug, Clone)]
struct MailboxRef {
    boxes: Arc<Mailboxes>,
    index: usize,
}

impl MailboxRef {
    fn get(&self) -> &Mailbox {
        &self.boxes.0[self.index]
    }
}

/// What crosses a link's socket between processes.
#[derive(Debug, Serialize, Deserialize)]
enum Wire<M> {
    /// A frame and its hop count.
    Frame(Frame<M>, u64),
    /// Wakes a sleeping receiver: look in the mailbox.
    Nudge,
}

/// The sending end of a ring link.
#[derive(Debug)]
pub(crate) struct LinkTx<M>(TxEnd<M>);

/// The receiving end of a ring link.
#[derive(Debug)]
pub(crate) struct LinkRx<M>(RxEnd<M>);

#[derive(Debug)]
enum TxEnd<M> {
    /// The transport's own channel: each frame with its hop count.
    Plain(Tx<(Frame<M>, u64)>),
    /// Between processes.
    Mailbox {
        tx: Tx<Wire<M>>,
        mailbox: MailboxRef,
    },
    #[cfg(feature = "mpi")]
    Mpi(super::mpi::LinkSender),
}

#[derive(Debug)]
enum RxEnd<M> {
    Plain(Rx<(Frame<M>, u64)>),
    Mailbox {
        rx: Rx<Wire<M>>,
        mailbox: MailboxRef,
    },
    #[cfg(feature = "mpi")]
    Mpi(super::mpi::LinkReceiver),
}

impl<M> LinkTx<M> {
    /// A link end on the transport's own channel, without a mailbox.
    pub(crate) fn plain(tx: Tx<(Frame<M>, u64)>) -> Self {
        LinkTx(TxEnd::Plain(tx))
    }

    /// How many of the blocks sent on this link with `Ring::send_block` the receiver has
    /// released. 0 on a link without a mailbox: nobody counts there, and no buffer of such
    /// a link is ever rewritten on the strength of the count.
    pub(crate) fn released(&self) -> u64 {
        match self {
            LinkTx(TxEnd::Plain(_)) => 0,
            #[cfg(feature = "mpi")]
            LinkTx(TxEnd::Mpi(_)) => 0,
            // Acquire: the receiver's reads of the blocks it counted happened before
            // whatever the sender writes next.
            LinkTx(TxEnd::Mailbox { mailbox, .. }) => {
                mailbox.get().receiver.released.load(Ordering::Acquire)
            }
        }
    }
}

#[cfg(feature = "mpi")]
impl<M> LinkTx<M> {
    /// A link end between MPI ranks.
    pub(crate) fn mpi(tx: super::mpi::LinkSender) -> Self {
        LinkTx(TxEnd::Mpi(tx))
    }

    /// Between MPI ranks: starts sending `bytes` as a rotation block from where they lie,
    /// without copying them into a block first. `None` on other transports.
    ///
    /// # Safety
    ///
    /// As [`LinkSender::lend`](super::mpi::LinkSender::lend): the guard must be dropped,
    /// not forgotten.
    pub(crate) unsafe fn lend<'a>(
        &self,
        bytes: &'a [u8],
        hops: u64,
    ) -> Option<Result<super::mpi::Lent<'a>, SendFailure>> {
        match self {
            // SAFETY: passed on to our caller.
            LinkTx(TxEnd::Mpi(tx)) => Some(unsafe { tx.lend(bytes, hops) }),
            _ => None,
        }
    }
}

#[cfg(feature = "mpi")]
impl<M> LinkRx<M> {
    /// A link end between MPI ranks.
    pub(crate) fn mpi(rx: super::mpi::LinkReceiver) -> Self {
        LinkRx(RxEnd::Mpi(rx))
    }
}

impl<M> LinkRx<M> {
    /// A link end on the transport's own channel, without a mailbox.
    pub(crate) fn plain(rx: Rx<(Frame<M>, u64)>) -> Self {
        LinkRx(RxEnd::Plain(rx))
    }

    /// Between MPI ranks: posts the link's next receive, if none is posted, into the buffer
    /// of the block taken last if nothing holds it any more. A no-op elsewhere.
    pub(crate) fn post_ahead(&self) {
        #[cfg(feature = "mpi")]
        if let LinkRx(RxEnd::Mpi(rx)) = self {
            rx.ready();
        }
    }

    /// Counts one more block sent with `Ring::send_block` as released: this worker holds no
    /// view of its bytes any more. Blocks are released in the order they arrived.
    pub(crate) fn release(&self) {
        self.post_ahead();
        if let LinkRx(RxEnd::Mailbox { mailbox, .. }) = self {
            let released = &mailbox.get().receiver.released;
            // Release: every read of the block happened before the sender may rewrite it.
            released.store(released.load(Ordering::Relaxed) + 1, Ordering::Release);
        }
    }
}

/// Makes a link. Between processes it uses mailbox `index` of `mailboxes`, which every
/// link of the ring must be given a different one of.
pub(crate) fn link<M>(
    transport: Transport,
    mailboxes: Option<&Arc<Mailboxes>>,
    index: usize,
) -> std::io::Result<(LinkTx<M>, LinkRx<M>)>
where
    M: Serialize + DeserializeOwned,
{
    match (transport, mailboxes) {
        (Transport::Processes, Some(boxes)) => {
            let (tx, rx) = ipc::channel()?;
            let mailbox = MailboxRef {
                boxes: Arc::clone(boxes),
                index,
            };
            // Panics now, while wiring, rather than in a worker.
            let _ = mailbox.get();
            Ok((
                LinkTx(TxEnd::Mailbox {
                    tx: Tx::Ipc(tx),
                    mailbox: mailbox.clone(),
                }),
                LinkRx(RxEnd::Mailbox {
                    rx: Rx::Ipc(rx),
                    mailbox,
                }),
            ))
        }
        _ => {
            let (tx, rx) = channel(transport)?;
            Ok((LinkTx::plain(tx), LinkRx::plain(rx)))
        }
    }
}

impl<M: Serialize + DeserializeOwned> LinkTx<M> {
    /// Sends a frame with its hop count; as [`Tx::send`], it does not wait for the
    /// receiver, unless its socket is full of frames the receiver has not taken (between
    /// processes it holds a few hundred): `stalled(true)` goes before a send on the socket,
    /// which may then wait, and `stalled(false)` after it, so that the deadlock watch can
    /// see such a wait.
    pub(crate) fn send(
        &self,
        frame: Frame<M>,
        hops: u64,
        stalled: &dyn Fn(bool),
    ) -> Result<(), SendFailure> {
        let (tx, mailbox) = match self {
            LinkTx(TxEnd::Plain(tx)) => return tx.send((frame, hops)),
            LinkTx(TxEnd::Mailbox { tx, mailbox }) => (tx, mailbox.get()),
            #[cfg(feature = "mpi")]
            LinkTx(TxEnd::Mpi(tx)) => return tx.send(frame, hops),
        };
        let seq = mailbox.sender.delivered.load(Ordering::Relaxed) + 1;
        let room = || {
            mailbox.receiver.taken.load(Ordering::Acquire) + SLOTS as u64 >= seq
                && mailbox.receiver.sleeping.load(Ordering::SeqCst) == 0
        };
        let Some([a, b, c]) = frame.to_words().filter(|_| room()) else {
            stalled(true);
            let sent = tx.send(Wire::Frame(frame, hops));
            stalled(false);
            sent?;
            mailbox.sender.delivered.store(seq, Ordering::SeqCst);
            return Ok(());
        };
        put(mailbox, seq, [a, b, c, hops]);
        wake(tx, mailbox, stalled)
    }
}

/// Puts frame `seq` (the words that name its region, and its hop count) into its slot and
/// hands it over.
fn put(mailbox: &Mailbox, seq: u64, words: [u64; 4]) {
    let slot = &mailbox.slots[seq as usize % SLOTS];
    for (word, value) in slot.words.iter().zip(words) {
        word.store(value, Ordering::Relaxed);
    }
    slot.seq.store(seq, Ordering::Release);
    mailbox.sender.delivered.store(seq, Ordering::SeqCst);
}

/// After [`put`]: the receiver may have fallen asleep without seeing the frame, so wake it,
/// unless a nudge it has not read yet will.
fn wake<M: Serialize + DeserializeOwned>(
    tx: &Tx<Wire<M>>,
    mailbox: &Mailbox,
    stalled: &dyn Fn(bool),
) -> Result<(), SendFailure> {
    if mailbox.receiver.sleeping.load(Ordering::SeqCst) != 0
        && mailbox.sender.nudges.load(Ordering::Relaxed)
            == mailbox.receiver.nudges_read.load(Ordering::SeqCst)
    {
        let nudges = &mailbox.sender.nudges;
        nudges.store(nudges.load(Ordering::Relaxed) + 1, Ordering::SeqCst);
        stalled(true);
        let sent = tx.send(Wire::Nudge);
        stalled(false);
        sent?;
    }
    Ok(())
}

impl<M: Serialize + DeserializeOwned> LinkRx<M> {
    /// Waits for the next frame and its hop count, for at most `timeout` if one is given;
    /// as [`Rx::recv`], it polls for a short while before it sleeps.
    pub(crate) fn recv(&self, timeout: Option<Duration>) -> Result<(Frame<M>, u64), RecvFailure> {
        let (rx, mailbox) = match self {
            LinkRx(RxEnd::Plain(rx)) => return rx.recv(timeout),
            LinkRx(RxEnd::Mailbox { rx, mailbox }) => (rx, mailbox.get()),
            #[cfg(feature = "mpi")]
            LinkRx(RxEnd::Mpi(rx)) => return rx.recv(timeout),
        };
        let started = Instant::now();
        let spin = timeout.map_or(spin(), |t| t.min(spin()));
        let mut polls = 0u32;
        loop {
            if let Some(frame) = take(rx, mailbox)? {
                return Ok(frame);
            }
            polls += 1;
            // Reading `delivered` costs nanoseconds: look at the clock, and give the core
            // away (another worker may need it), only now and then.
            if polls.is_multiple_of(POLLS_PER_YIELD) {
                if started.elapsed() >= spin {
                    break;
                }
                std::thread::yield_now();
            } else {
                std::hint::spin_loop();
            }
        }
        loop {
            mailbox.receiver.sleeping.store(1, Ordering::SeqCst);
            let result = sleep(
                rx,
                mailbox,
                timeout.map(|t| t.saturating_sub(started.elapsed())),
            );
            mailbox.receiver.sleeping.store(0, Ordering::SeqCst);
            match result {
                // Woken by a nudge: the frame is in the mailbox.
                Ok(None) => continue,
                Ok(Some(frame)) => return Ok(frame),
                // A sender that handed a frame over and then ended still has it taken.
                Err(RecvFailure::Closed) => return take(rx, mailbox)?.ok_or(RecvFailure::Closed),
                Err(failure) => return Err(failure),
            }
        }
    }
}

/// One sleep in the socket, with `sleeping` raised: the next frame, or `None` for a nudge.
fn sleep<M: Serialize + DeserializeOwned>(
    rx: &Rx<Wire<M>>,
    mailbox: &Mailbox,
    timeout: Option<Duration>,
) -> Result<Option<(Frame<M>, u64)>, RecvFailure> {
    if let Some(frame) = take(rx, mailbox)? {
        return Ok(Some(frame));
    }
    match rx.recv_blocking(timeout)? {
        Wire::Nudge => {
            count_nudge_read(mailbox);
            Ok(None)
        }
        // Nothing was delivered by mailbox when we fell asleep, and anything delivered
        // since came with a nudge that is ahead of this frame in the socket: so this is
        // the next frame.
        Wire::Frame(frame, hops) => {
            count_taken(mailbox);
            Ok(Some((frame, hops)))
        }
    }
}

/// The next frame, if the sender has handed it over: from its slot, or else from the
/// socket, where it is then already waiting.
fn take<M: Serialize + DeserializeOwned>(
    rx: &Rx<Wire<M>>,
    mailbox: &Mailbox,
) -> Result<Option<(Frame<M>, u64)>, RecvFailure> {
    let want = mailbox.receiver.taken.load(Ordering::Relaxed) + 1;
    if mailbox.sender.delivered.load(Ordering::SeqCst) < want {
        return Ok(None);
    }
    let slot = &mailbox.slots[want as usize % SLOTS];
    if slot.seq.load(Ordering::Acquire) == want {
        let [a, b, c, hops] = slot
            .words
            .each_ref()
            .map(|word| word.load(Ordering::Relaxed));
        count_taken(mailbox);
        return Ok(Some((Frame::from_words([a, b, c]), hops)));
    }
    loop {
        match rx.recv_blocking(None)? {
            Wire::Nudge => count_nudge_read(mailbox),
            Wire::Frame(frame, hops) => {
                count_taken(mailbox);
                return Ok(Some((frame, hops)));
            }
        }
    }
}

fn count_taken(mailbox: &Mailbox) {
    let taken = &mailbox.receiver.taken;
    // Release: the slot was read before the sender may write it again.
    taken.store(taken.load(Ordering::Relaxed) + 1, Ordering::Release);
}

fn count_nudge_read(mailbox: &Mailbox) {
    let read = &mailbox.receiver.nudges_read;
    read.store(read.load(Ordering::Relaxed) + 1, Ordering::SeqCst);
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::transport::Block;

    type Ends = (LinkTx<u64>, LinkRx<u64>);

    fn processes_link() -> Ends {
        let boxes = Mailboxes::new(1).unwrap();
        link(Transport::Processes, Some(&boxes), 0).unwrap()
    }

    /// A frame that only names a region: the kind that may take the mailbox.
    fn named(n: u64) -> Frame<u64> {
        Frame::Block(Block::from_words([n, n, n]))
    }

    /// The hop count the tests send frame `n` with, so a receiver can tell that each
    /// frame kept its own.
    fn hops(n: u64) -> u64 {
        3 * n + 1
    }

    /// Sends frame `n`, a message or a named region, with its hop count.
    fn send(tx: &LinkTx<u64>, n: u64, message: bool) {
        let frame = if message { Frame::Message(n) } else { named(n) };
        tx.send(frame, hops(n), &|_| {}).unwrap();
    }

    /// What a frame says, to compare it with what was sent; its hop count is checked.
    fn said((frame, got): (Frame<u64>, u64)) -> (bool, u64) {
        let said = match frame {
            Frame::Message(n) => (false, n),
            Frame::Block(block) => (true, block.to_words().expect("a named region")[1]),
            Frame::Direct(_) => panic!("a block sent to one neighbour"),
            Frame::Collective(..) => panic!("a collective's value"),
        };
        assert_eq!(got, hops(said.1), "the hop count of frame {said:?}");
        said
    }

    fn socket(rx: &LinkRx<u64>) -> &Rx<Wire<u64>> {
        match &rx.0 {
            RxEnd::Mailbox { rx, .. } => rx,
            _ => panic!("no mailbox"),
        }
    }

    #[test]
    fn named_regions_skip_the_socket_and_everything_else_takes_it() {
        let (tx, rx) = processes_link();
        send(&tx, 1, false);
        send(&tx, 2, true);
        send(&tx, 3, false);
        // The socket holds only the message.
        assert!(matches!(
            socket(&rx).try_recv(),
            Ok(Wire::Frame(Frame::Message(2), 7))
        ));
        assert!(matches!(socket(&rx).try_recv(), Err(RecvFailure::Timeout)));
        // Hand the message back to the socket, as the receiver expects it there.
        let LinkTx(TxEnd::Mailbox { tx: socket_tx, .. }) = &tx else {
            unreachable!()
        };
        socket_tx
            .send(Wire::Frame(Frame::Message(2), hops(2)))
            .unwrap();
        let got: Vec<_> = (0..3).map(|_| said(rx.recv(None).unwrap())).collect();
        assert_eq!(got, [(true, 1), (false, 2), (true, 3)]);
        assert!(matches!(
            rx.recv(Some(Duration::ZERO)),
            Err(RecvFailure::Timeout)
        ));
    }

    /// The race the nudge is for, played out step by step: the receiver is asleep in the
    /// socket when a frame goes into the mailbox.
    #[test]
    fn a_receiver_asleep_when_a_frame_goes_into_the_mailbox_is_woken() {
        let (tx, rx) = processes_link();
        let LinkTx(TxEnd::Mailbox { tx, mailbox }) = &tx else {
            unreachable!()
        };
        let mailbox = mailbox.get();
        let tid = std::sync::atomic::AtomicI32::new(0);
        let tid = &tid;
        std::thread::scope(|scope| {
            let receiver = scope.spawn(move || {
                // SAFETY: gettid has no preconditions.
                tid.store(unsafe { libc::gettid() }, Ordering::SeqCst);
                rx.recv(Some(Duration::from_secs(10)))
            });
            // Wait until the receiver has raised its flag and sleeps in the kernel.
            while mailbox.receiver.sleeping.load(Ordering::SeqCst) == 0
                || !asleep(tid.load(Ordering::SeqCst))
            {
                std::thread::yield_now();
            }
            put(mailbox, 1, [7, 7, 7, hops(7)]);
            wake(tx, mailbox, &|_| {}).unwrap();
            // Without the nudge the receive would time out.
            let frame = receiver.join().unwrap().expect("woken before the timeout");
            assert_eq!(said(frame), (true, 7));
        });
        assert_eq!(mailbox.sender.nudges.load(Ordering::SeqCst), 1);
        assert_eq!(mailbox.receiver.nudges_read.load(Ordering::SeqCst), 1);
    }

    /// Whether thread `tid` of this process is sleeping in the kernel.
    fn asleep(tid: i32) -> bool {
        let stat = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat"));
        // The state follows the command name, which is in parentheses.
        stat.ok()
            .and_then(|stat| Some(stat.get(stat.rfind(')')? + 2..)?.starts_with('S')))
            .unwrap_or(false)
    }

    /// A nudge can outlive its reason: the receiver found the frame before it slept. The
    /// stale nudge is skipped, and a second is not sent while one is unread.
    #[test]
    fn stale_nudges_are_skipped_and_never_pile_up() {
        let (tx, rx) = processes_link();
        let (
            LinkTx(TxEnd::Mailbox {
                tx: socket,
                mailbox,
            }),
            RxEnd::Mailbox { .. },
        ) = (&tx, &rx.0)
        else {
            unreachable!()
        };
        let mailbox = mailbox.get();
        mailbox.receiver.sleeping.store(1, Ordering::SeqCst);
        put(mailbox, 1, [1, 1, 1, hops(1)]);
        wake(socket, mailbox, &|_| {}).unwrap();
        put(mailbox, 2, [2, 2, 2, hops(2)]);
        wake(socket, mailbox, &|_| {}).unwrap();
        assert_eq!(mailbox.sender.nudges.load(Ordering::SeqCst), 1);
        mailbox.receiver.sleeping.store(0, Ordering::SeqCst);
        assert_eq!(said(rx.recv(None).unwrap()), (true, 1));
        assert_eq!(said(rx.recv(None).unwrap()), (true, 2));
        send(&tx, 3, true);
        assert_eq!(said(rx.recv(None).unwrap()), (false, 3));
        assert_eq!(mailbox.receiver.nudges_read.load(Ordering::SeqCst), 1);
    }

    /// Both kinds of block go by mailbox, and each comes out as the kind it went in.
    #[test]
    fn rotation_blocks_and_blocks_to_one_neighbour_keep_their_kind_in_the_mailbox() {
        let (tx, rx) = processes_link();
        let block = |n: u64| Block::from_words([n | 7 << 32, n, 100 + n]);
        tx.send(Frame::Direct(block(1)), 5, &|_| {}).unwrap();
        tx.send(Frame::Block(block(2)), 6, &|_| {}).unwrap();
        let got: Vec<_> = (0..2)
            .map(|_| match rx.recv(None).unwrap() {
                (Frame::Direct(b), hops) => ("direct", b.to_words(), hops),
                (Frame::Block(b), hops) => ("rotation", b.to_words(), hops),
                (Frame::Message(_) | Frame::Collective(..), _) => panic!("a message"),
            })
            .collect();
        assert_eq!(
            got,
            [
                ("direct", Some([1 | 7 << 32, 1, 101]), 5),
                ("rotation", Some([2 | 7 << 32, 2, 102]), 6)
            ]
        );
        assert!(matches!(socket(&rx).try_recv(), Err(RecvFailure::Timeout)));
    }

    #[test]
    fn the_senders_count_of_released_blocks_is_what_the_receiver_released() {
        let (tx, rx) = processes_link();
        assert_eq!(tx.released(), 0);
        rx.release();
        rx.release();
        assert_eq!(tx.released(), 2);
        // Without a mailbox nobody counts, and the count says nothing is released.
        let (tx, rx) = link::<u64>(Transport::Threads, None, 0).unwrap();
        rx.release();
        assert_eq!(tx.released(), 0);
    }

    #[test]
    fn a_full_mailbox_sends_by_socket_and_order_is_kept() {
        let (tx, rx) = processes_link();
        for n in 1..=3 * SLOTS as u64 {
            send(&tx, n, false);
        }
        for n in 1..=3 * SLOTS as u64 {
            assert_eq!(said(rx.recv(None).unwrap()), (true, n));
        }
    }

    #[test]
    fn a_receiver_learns_that_its_sender_ended_after_taking_what_it_sent() {
        let (tx, rx) = processes_link();
        send(&tx, 1, false);
        send(&tx, 2, true);
        drop(tx);
        assert_eq!(said(rx.recv(None).unwrap()), (true, 1));
        assert_eq!(said(rx.recv(None).unwrap()), (false, 2));
        assert!(matches!(rx.recv(None), Err(RecvFailure::Closed)));
    }

    /// Both ends run at uneven speeds, so receivers spin, fall asleep, and wake to frames
    /// in either place, and senders find the mailbox full or the receiver asleep. The
    /// pauses only vary the timing; nothing waits on them.
    #[test]
    fn frames_arrive_in_order_whatever_the_timing() {
        const FRAMES: u64 = 4000;
        let (tx, rx) = processes_link();
        let pause = |n: u64, salt: u64| {
            let h = (n ^ salt).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 58;
            match h {
                0 => std::thread::sleep(Duration::from_micros(300)),
                1..=3 => std::thread::sleep(Duration::from_micros(20)),
                _ => {}
            }
        };
        std::thread::scope(|scope| {
            scope.spawn(move || {
                for n in 1..=FRAMES {
                    send(&tx, n, n % 5 == 0);
                    pause(n, 1);
                }
            });
            for n in 1..=FRAMES {
                let (_, got) = said(rx.recv(Some(Duration::from_secs(10))).unwrap());
                assert_eq!(got, n);
                pause(n, 2);
            }
            assert!(matches!(rx.recv(None), Err(RecvFailure::Closed)));
        });
        // Nudges never pile up: at most one is ever unread.
        let RxEnd::Mailbox { mailbox, .. } = &rx.0 else {
            unreachable!()
        };
        let mailbox = mailbox.get();
        let sent = mailbox.sender.nudges.load(Ordering::SeqCst);
        let read = mailbox.receiver.nudges_read.load(Ordering::SeqCst);
        assert!(sent - read <= 1, "{sent} nudges sent, {read} read");
    }
}
