//! Ring links between MPI ranks: one MPI message per frame, into a posted receive, with no
//! copy that a bare `MPI_Sendrecv` does not make.
//!
//! # The protocol
//!
//! Each direction of the ring has a communicator of its own, a duplicate of the world's
//! ([`LinkComms`]). So nothing else travels on a link, and a message's envelope is free to
//! describe the frame: the tag holds the frame's kind and its hop count, the message's
//! length is the frame's length, and the body is the frame's bytes and nothing else. A
//! rotation block is sent from where it lies and received where it will be read: a rank's
//! own block straight from the stage's slice ([`LinkSender::lend`]), a forwarded one from the
//! buffer it arrived in, and each lands in the buffer the receiver posted for it and reads
//! it from. That is what the raw call does: one message, no staging copy on either side.
//!
//! A posted receive must be large enough for whatever comes next, or MPI fails the whole
//! job (a truncated message is an error). Both ends of a link therefore keep the same
//! *capacity*, which starts at [`INITIAL_CAPACITY`] and only grows. Every receive the
//! receiver posts is of the capacity. A sender with a frame larger than the capacity
//! first sends a [`GROW`] message of 8 bytes, which fits any capacity and carries the new
//! one, and then the frame. MPI keeps the messages of one sender on one communicator in
//! order, so the receiver takes the grow message from its posted receive, posts one of the
//! new capacity, and the frame lands there (or waits for it among MPI's unexpected messages:
//! it is never matched to a smaller buffer). Each end changes the capacity only on the
//! grow messages it sends or takes, in the same order, so the two never disagree.
//!
//! Frames of the stage's protocol and collectives' values (postcard bytes, with the bulk
//! blocks they hold) are copied into one body: they are small or rare, and one message
//! each keeps the link's order simple.
//!
//! A sent buffer stays untouched until MPI says it has gone: a forwarded block is held (its
//! `Arc`) by the send, and a lent slice by the [`Lent`] guard, whose drop waits. A receive
//! buffer is handed out as a block and posted again only once nobody holds it.
//!
//! # When the next receive is posted
//!
//! A message frame is copied out of its buffer, and the next receive is posted before the
//! frame is handed out. A block is read where it arrived, so its link posts the next
//! receive later: when the rank has sent its own next frame of a rotation
//! (`Ring::rotate`), when it releases a block from [`recv_block`](crate::Ring::recv_block),
//! or at the latest when it next waits on the link. Two measurements decided this, both
//! against bare `MPI_Sendrecv` at 1.6 MB between two ranks (`bench hop`):
//!
//! - Posting into a second buffer while the stage still reads the first made every block
//!   land in memory that had left the cache: 0.85-0.9x of the raw bandwidth. Posted later,
//!   the block that was just read is free again and takes the next one.
//! - Large messages are pulled by the receiver (a single copy: CMA between processes,
//!   RDMA get on a network), inside whatever MPI call it makes next. A rank with a receive
//!   posted while it still waits for its own last send to finish pulls its neighbour's
//!   next block there, before it sends its own: the two directions then take turns
//!   instead of overlapping. Posted after its own send, as `MPI_Sendrecv` does, both pull
//!   at once.
//!
//! Posted so, a rotation block still lands straight in the buffer it is read from: a
//! pulled message is only pulled once matched. A small one (eager, under 4 KiB on shared
//! memory) that arrives before its receive is posted is copied once more out of MPI's
//! own buffer, as it is for the raw call.

use std::cell::{Cell, RefCell};
use std::marker::PhantomData;
use std::os::raw::c_int;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mpi::ffi;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{SharedPump, call, wait_a_little};
use crate::error::LaunchError;
use crate::transport::block::Aligned;
use crate::transport::{Block, Frame, Payload, RecvFailure, SendFailure};

/// The capacity both ends of a link start with: blocks up to this size never need a grow
/// message.
const INITIAL_CAPACITY: usize = 64 << 10;

/// Frame kinds, in the low bits of a message's tag.
const MESSAGE: c_int = 0;
const COLLECTIVE: c_int = 1;
const BLOCK: c_int = 2;
const DIRECT: c_int = 3;
/// Not a frame: the next message on the link is larger than the capacity; the body holds
/// the new capacity as 8 little-endian bytes.
const GROW: c_int = 4;
const KIND_BITS: u32 = 3;

/// The largest hop count a tag carries: the standard promises tags up to 32767. Hop counts
/// only feed the depth statistics, which an MPI ring does not report; a larger count is
/// carried as this one.
const MAX_HOPS: u64 = (32767 >> KIND_BITS) as u64;

fn tag(kind: c_int, hops: u64) -> c_int {
    kind | (hops.min(MAX_HOPS) as c_int) << KIND_BITS
}

/// How many more bytes than asked a grown capacity holds, so that a block that grows a
/// little at a time (a halo, say) does not need a grow message every step.
fn grown(len: usize) -> usize {
    (len + len / 8).next_multiple_of(4096)
}

/// How many times a waiting end tests its request in one turn to call MPI.
const POLLS_PER_TURN: u32 = 8;

/// A communicator that only one direction of the ring uses.
pub(crate) struct LinkComm(ffi::MPI_Comm);

// SAFETY: a communicator handle is only a token for MPI, and every MPI call goes through
// `call`, which serializes the calls of rank 0's two threads (`MPI_THREAD_SERIALIZED`).
unsafe impl Send for LinkComm {}
// SAFETY: as above; the handle itself is never written after it is made.
unsafe impl Sync for LinkComm {}

impl Drop for LinkComm {
    fn drop(&mut self) {
        if !mpi::environment::is_finalized() {
            // MPI frees it once the operations still pending on it are done.
            // SAFETY: the handle came from MPI_Comm_dup and is freed only here.
            call(|| unsafe { ffi::MPI_Comm_free(&mut self.0) });
        }
    }
}

/// The communicators of a ring's two directions.
pub(crate) struct LinkComms {
    pub(crate) rightward: Arc<LinkComm>,
    pub(crate) leftward: Arc<LinkComm>,
}

impl LinkComms {
    /// Makes them. Every rank of the job must call this, at the same point: duplicating a
    /// communicator is collective.
    pub(crate) fn new() -> Result<LinkComms, LaunchError> {
        let dup = || {
            let mut comm = ffi::MPI_Comm(std::ptr::null_mut());
            // SAFETY: MPI is initialized (the launcher called `mpi_world_size`); the world
            // communicator is valid, and `comm` receives the new handle.
            let code = call(|| unsafe { ffi::MPI_Comm_dup(ffi::RSMPI_COMM_WORLD, &mut comm) });
            if code == 0 {
                Ok(Arc::new(LinkComm(comm)))
            } else {
                Err(LaunchError::Mpi(format!(
                    "cannot make a communicator for a ring link (error {code})"
                )))
            }
        };
        Ok(LinkComms {
            rightward: dup()?,
            leftward: dup()?,
        })
    }
}

fn rank(rank: usize) -> c_int {
    c_int::try_from(rank).unwrap_or(c_int::MAX)
}

// ---------------------------------------------------------------------------------------
// Requests.

/// An MPI request that this side started and must see finished.
struct Request(ffi::MPI_Request);

// SAFETY: as for `LinkComm`: a token, used only through `call`.
unsafe impl Send for Request {}

impl Request {
    /// The message's status, once MPI is done with it (the request is then spent).
    fn test(&mut self) -> Option<ffi::MPI_Status> {
        call(|| self.test_in_turn())
    }

    /// As [`test`](Request::test), a few times while the request is not done, in one
    /// turn: taking turns costs more than a test. With the status comes the number of
    /// bytes the message had.
    fn poll(&mut self) -> Option<(ffi::MPI_Status, usize)> {
        call(|| {
            for _ in 0..POLLS_PER_TURN {
                if let Some(status) = self.test_in_turn() {
                    let mut count: c_int = 0;
                    // SAFETY: `status` is the one MPI_Test just filled for this request.
                    unsafe { ffi::MPI_Get_count(&status, ffi::RSMPI_UINT8_T, &mut count) };
                    return Some((status, usize::try_from(count).unwrap_or(0)));
                }
                std::hint::spin_loop();
            }
            None
        })
    }

    /// `MPI_Test`, by a caller that has its turn to call MPI.
    fn test_in_turn(&mut self) -> Option<ffi::MPI_Status> {
        let mut done: c_int = 0;
        // SAFETY: zeroed is a valid `MPI_Status` (plain integers) for MPI to overwrite.
        let mut status: ffi::MPI_Status = unsafe { std::mem::zeroed() };
        // SAFETY: the request is live (or already null, which MPI_Test accepts), and
        // `done` and `status` are valid for MPI to write.
        unsafe { ffi::MPI_Test(&mut self.0, &mut done, &mut status) };
        (done != 0).then_some(status)
    }

    /// Whether the request is finished and spent: MPI sets a finished one to the null
    /// request.
    fn is_done(&self) -> bool {
        // SAFETY: reads a constant that the MPI library defines.
        self.0.0 == unsafe { ffi::RSMPI_REQUEST_NULL.0 }
    }

    /// Waits until MPI is done with the request, relaying for the coordinator meanwhile on
    /// rank 0. It cannot fail: the peer of every send and receive here is a rank that
    /// takes or sends it, and a rank that dies takes the job with it.
    fn finish(&mut self, pump: Option<&SharedPump>) {
        if self.is_done() {
            return;
        }
        if self.poll().is_some() {
            return;
        }
        let since = Instant::now();
        while self.poll().is_none() {
            let _ = wait_a_little(pump, since, None);
        }
    }
}

// ---------------------------------------------------------------------------------------
// Sending.

/// What a send reads from, kept alive until MPI is done with it.
enum Body {
    Owned(Vec<u8>),
    Block(Block),
}

impl Body {
    fn bytes(&self) -> &[u8] {
        match self {
            Body::Owned(bytes) => bytes,
            Body::Block(block) => block.bytes(),
        }
    }
}

/// One send in flight, with the buffer it reads.
struct Sending {
    request: Request,
    _body: Body,
}

impl Drop for Sending {
    fn drop(&mut self) {
        self.request.finish(None);
    }
}

/// The sending end of a ring link.
pub(crate) struct LinkSender {
    comm: Arc<LinkComm>,
    dest: c_int,
    /// The receiver's posted capacity, as this end has told it.
    capacity: Cell<usize>,
    in_flight: RefCell<Vec<Sending>>,
    pump: Option<super::SharedPump>,
}

impl std::fmt::Debug for LinkSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "mpi::LinkSender(to rank {})", self.dest)
    }
}

impl LinkSender {
    pub(crate) fn new(comm: Arc<LinkComm>, dest: usize, pump: Option<SharedPump>) -> LinkSender {
        LinkSender {
            comm,
            dest: rank(dest),
            capacity: Cell::new(INITIAL_CAPACITY),
            in_flight: RefCell::new(Vec::new()),
            pump,
        }
    }

    /// Starts sending `frame` with its hop count, and returns without waiting for the
    /// receiver.
    pub(crate) fn send<M: Serialize>(&self, frame: Frame<M>, hops: u64) -> Result<(), SendFailure> {
        let (kind, body) = match frame {
            Frame::Block(block) => (BLOCK, Body::Block(block)),
            Frame::Direct(block) => (DIRECT, Body::Block(block)),
            Frame::Message(message) => (MESSAGE, Body::Owned(pack(&message)?)),
            Frame::Collective(value, tag) => (COLLECTIVE, Body::Owned(pack(&(tag, value))?)),
        };
        let mut in_flight = self.in_flight.borrow_mut();
        in_flight.retain_mut(|send| send.request.test().is_none());
        self.grow_for(body.bytes().len(), &mut in_flight)?;
        let request = self.start(body.bytes(), tag(kind, hops))?;
        in_flight.push(Sending {
            request,
            _body: body,
        });
        Ok(())
    }

    /// Starts sending `bytes` as a rotation block, straight from where they lie: the
    /// receiver gets them without a copy into a block first.
    ///
    /// # Safety
    ///
    /// The returned guard must be dropped, not forgotten: MPI reads `bytes` until its drop
    /// has waited for the send to finish.
    pub(crate) unsafe fn lend<'a>(
        &self,
        bytes: &'a [u8],
        hops: u64,
    ) -> Result<Lent<'a>, SendFailure> {
        {
            let mut in_flight = self.in_flight.borrow_mut();
            in_flight.retain_mut(|send| send.request.test().is_none());
            self.grow_for(bytes.len(), &mut in_flight)?;
        }
        Ok(Lent {
            request: self.start(bytes, tag(BLOCK, hops))?,
            pump: self.pump.clone(),
            _bytes: PhantomData,
        })
    }

    /// Tells the receiver to post a larger receive, if `len` bytes would not fit its
    /// capacity.
    fn grow_for(&self, len: usize, in_flight: &mut Vec<Sending>) -> Result<(), SendFailure> {
        if len <= self.capacity.get() {
            return Ok(());
        }
        let capacity = grown(len);
        let body = Body::Owned((capacity as u64).to_le_bytes().to_vec());
        let request = self.start(body.bytes(), tag(GROW, 0))?;
        in_flight.push(Sending {
            request,
            _body: body,
        });
        self.capacity.set(capacity);
        Ok(())
    }

    /// `MPI_Isend` of `bytes`. The caller keeps them alive and unmoved until the request
    /// is finished.
    fn start(&self, bytes: &[u8], tag: c_int) -> Result<Request, SendFailure> {
        let Ok(count) = c_int::try_from(bytes.len()) else {
            return Err(SendFailure::Encoding(format!(
                "a frame of {} bytes is too large for one mpi message",
                bytes.len()
            )));
        };
        let mut request = ffi::MPI_Request(std::ptr::null_mut());
        // SAFETY: `bytes` is valid for `count` bytes, and every caller keeps it alive until
        // the request finishes (in a `Sending` beside it, or a `Lent` guard); the
        // communicator is live (this end holds it).
        call(|| unsafe {
            ffi::MPI_Isend(
                bytes.as_ptr().cast(),
                count,
                ffi::RSMPI_UINT8_T,
                self.dest,
                tag,
                self.comm.0,
                &mut request,
            )
        });
        Ok(Request(request))
    }
}

impl Drop for LinkSender {
    fn drop(&mut self) {
        for mut send in self.in_flight.take() {
            send.request.finish(self.pump.as_ref());
        }
    }
}

/// A rotation block sent from borrowed bytes (see [`LinkSender::lend`]); dropping it waits
/// until MPI is done with them.
#[must_use = "dropping it waits for the send"]
pub(crate) struct Lent<'a> {
    request: Request,
    pump: Option<SharedPump>,
    _bytes: PhantomData<&'a [u8]>,
}

impl Drop for Lent<'_> {
    fn drop(&mut self) {
        self.request.finish(self.pump.as_ref());
    }
}

/// A message frame's value as one body: how many blocks it holds (4 bytes), each one's
/// length (8 bytes each), the postcard bytes' length (8 bytes), the postcard bytes, then
/// the blocks' bytes.
fn pack<M: Serialize>(value: &M) -> Result<Vec<u8>, SendFailure> {
    let payload = crate::transport::encode(value).map_err(SendFailure::Encoding)?;
    let count = u32::try_from(payload.blocks.len())
        .map_err(|_| SendFailure::Encoding("too many blocks in one value".to_owned()))?;
    let blocks_len: usize = payload.blocks.iter().map(|b| b.bytes().len()).sum();
    let mut body =
        Vec::with_capacity(12 + 8 * payload.blocks.len() + payload.bytes.len() + blocks_len);
    body.extend_from_slice(&count.to_le_bytes());
    for block in &payload.blocks {
        body.extend_from_slice(&(block.bytes().len() as u64).to_le_bytes());
    }
    body.extend_from_slice(&(payload.bytes.len() as u64).to_le_bytes());
    body.extend_from_slice(&payload.bytes);
    for block in &payload.blocks {
        body.extend_from_slice(block.bytes());
    }
    Ok(body)
}

/// The value [`pack`] made this body from.
fn unpack<M: DeserializeOwned>(body: &[u8]) -> Result<M, String> {
    let short = || format!("a message frame of {} bytes is cut short", body.len());
    let (count, mut rest) = body.split_first_chunk::<4>().ok_or_else(short)?;
    let count = u32::from_le_bytes(*count) as usize;
    let mut lens = Vec::with_capacity(count.min(rest.len() / 8));
    for _ in 0..=count {
        let (len, tail) = rest.split_first_chunk::<8>().ok_or_else(short)?;
        lens.push(usize::try_from(u64::from_le_bytes(*len)).map_err(|_| short())?);
        rest = tail;
    }
    let bytes_len = lens.pop().unwrap_or(0);
    let (bytes, mut rest) = rest.split_at_checked(bytes_len).ok_or_else(short)?;
    let mut blocks = Vec::with_capacity(count);
    for len in lens {
        let (block, tail) = rest.split_at_checked(len).ok_or_else(short)?;
        blocks.push(Block::local(block));
        rest = tail;
    }
    if !rest.is_empty() {
        return Err(format!(
            "{} bytes left over after a message frame",
            rest.len()
        ));
    }
    crate::transport::decode(Payload {
        bytes: bytes.to_vec(),
        blocks,
    })
}

// ---------------------------------------------------------------------------------------
// Receiving.

/// How many receive buffers a link keeps for reuse: one posted, one the stage reads, one a
/// forward may still be sending from, and one to spare.
const KEPT: usize = 4;

/// The receive posted on a link, and the buffer MPI writes.
struct Posted {
    request: Request,
    buffer: Arc<Aligned>,
}

/// The receiving end of a ring link.
pub(crate) struct LinkReceiver {
    comm: Arc<LinkComm>,
    source: c_int,
    /// The capacity both ends agree on (see the module's docs).
    capacity: Cell<usize>,
    posted: RefCell<Option<Posted>>,
    /// Buffers handed out as blocks, to post again once nobody holds them.
    kept: RefCell<Vec<Arc<Aligned>>>,
    /// On rank 0: the relay to run while waiting.
    pump: Option<SharedPump>,
}

impl std::fmt::Debug for LinkReceiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "mpi::LinkReceiver(from rank {})", self.source)
    }
}

impl LinkReceiver {
    /// The receiving end of a link from `source`, with its first receive posted.
    pub(crate) fn new(
        comm: Arc<LinkComm>,
        source: usize,
        pump: Option<SharedPump>,
    ) -> Result<LinkReceiver, LaunchError> {
        let receiver = LinkReceiver {
            comm,
            source: rank(source),
            capacity: Cell::new(INITIAL_CAPACITY),
            posted: RefCell::new(None),
            kept: RefCell::new(Vec::new()),
            pump,
        };
        receiver
            .post()
            .map_err(|e| LaunchError::Mpi(format!("{e:?}")))?;
        Ok(receiver)
    }

    /// Posts the next receive, into a kept buffer of the capacity that nobody holds, or a
    /// new one.
    fn post(&self) -> Result<(), RecvFailure> {
        let capacity = self.capacity.get();
        let Ok(count) = c_int::try_from(capacity) else {
            return Err(RecvFailure::Encoding(format!(
                "a frame of {capacity} bytes is too large for one mpi message"
            )));
        };
        let mut kept = self.kept.borrow_mut();
        // Buffers too small for the capacity will never be posted again.
        kept.retain(|buffer| buffer.capacity() >= capacity);
        let free = kept
            .iter_mut()
            .position(|buffer| Arc::get_mut(buffer).is_some());
        let mut buffer = match free {
            Some(index) => kept.swap_remove(index),
            None => Arc::new(Aligned::zeroed(capacity)),
        };
        let Some(unique) = Arc::get_mut(&mut buffer) else {
            unreachable!("a buffer nobody else holds is unique");
        };
        let at = unique.as_mut_ptr();
        let mut request = ffi::MPI_Request(std::ptr::null_mut());
        // SAFETY: `at` is valid for `capacity` bytes, and nothing reads or writes them
        // until the request finishes: the buffer's only `Arc` stays in `posted` until
        // then, and is handed out only after. The communicator is live.
        call(|| unsafe {
            ffi::MPI_Irecv(
                at.cast(),
                count,
                ffi::RSMPI_UINT8_T,
                self.source,
                ffi::RSMPI_ANY_TAG,
                self.comm.0,
                &mut request,
            )
        });
        *self.posted.borrow_mut() = Some(Posted {
            request: Request(request),
            buffer,
        });
        Ok(())
    }

    /// Waits for the next frame and its hop count, for at most `timeout` if one is given.
    pub(crate) fn recv<M: DeserializeOwned>(
        &self,
        timeout: Option<Duration>,
    ) -> Result<(Frame<M>, u64), RecvFailure> {
        // The clock is read only once the frame is not there at the first look.
        let mut waiting: Option<(Instant, Option<Instant>)> = None;
        loop {
            let tested = self
                .posted
                .borrow_mut()
                .as_mut()
                .map(|receive| receive.request.poll());
            match tested {
                Some(Some((status, len))) => {
                    let Some(Posted { buffer, .. }) = self.posted.take() else {
                        continue;
                    };
                    match self.take(status.MPI_TAG, len, buffer)? {
                        Some(frame) => return Ok(frame),
                        // A grow message: the frame follows.
                        None => continue,
                    }
                }
                Some(None) => {}
                // A receive that could not be posted after the last frame: try again.
                None => self.post()?,
            }
            let (since, deadline) = *waiting.get_or_insert_with(|| {
                let since = Instant::now();
                (since, timeout.map(|t| since + t))
            });
            wait_a_little(self.pump.as_ref(), since, deadline)?;
        }
    }

    /// Reads a message of `len` bytes with `tag` that arrived in `buffer`. A message frame
    /// is copied out, and the next receive posted before it is handed out; a block is
    /// handed out in its buffer, and the next receive waits for [`ready`](Self::ready).
    /// `None` for a grow message.
    fn take<M: DeserializeOwned>(
        &self,
        tag: c_int,
        len: usize,
        mut buffer: Arc<Aligned>,
    ) -> Result<Option<(Frame<M>, u64)>, RecvFailure> {
        let Some(unique) = Arc::get_mut(&mut buffer) else {
            unreachable!("a posted buffer has no other holder");
        };
        unique.set_len(len);
        let kind = tag & ((1 << KIND_BITS) - 1);
        let hops = u64::try_from(tag >> KIND_BITS).unwrap_or(0);
        if kind == GROW {
            let capacity = buffer
                .filled()
                .first_chunk::<8>()
                .map(|bytes| u64::from_le_bytes(*bytes))
                .and_then(|c| usize::try_from(c).ok())
                .ok_or_else(|| RecvFailure::Encoding(format!("a grow message of {len} bytes")))?;
            self.capacity.set(capacity.max(self.capacity.get()));
            self.keep(buffer);
            self.post()?;
            return Ok(None);
        }
        let frame = match kind {
            BLOCK | DIRECT => {
                let block = Block::received(Arc::clone(&buffer));
                self.keep(buffer);
                // Posted again later (`ready`, or the next `recv`), into the same buffer if
                // nothing holds it then.
                return Ok(Some((
                    if kind == BLOCK {
                        Frame::Block(block)
                    } else {
                        Frame::Direct(block)
                    },
                    hops,
                )));
            }
            MESSAGE => {
                let value = unpack(buffer.filled()).map_err(RecvFailure::Encoding);
                self.keep(buffer);
                Frame::Message(value?)
            }
            COLLECTIVE => {
                let value = unpack::<(u64, M)>(buffer.filled()).map_err(RecvFailure::Encoding);
                self.keep(buffer);
                let (tag, value) = value?;
                Frame::Collective(value, tag)
            }
            other => {
                self.keep(buffer);
                return Err(RecvFailure::Encoding(format!(
                    "a message of unknown kind {other} on a ring link"
                )));
            }
        };
        self.post()?;
        Ok(Some((frame, hops)))
    }

    /// Posts the next receive, if none is posted (see the module's docs for when).
    pub(crate) fn ready(&self) {
        if self.posted.borrow().is_none() {
            // A receive that could not be posted is posted again by the next `recv`.
            let _ = self.post();
        }
    }

    /// Keeps a buffer to post again once nobody holds it, unless enough are kept.
    fn keep(&self, buffer: Arc<Aligned>) {
        let mut kept = self.kept.borrow_mut();
        if kept.len() < KEPT {
            kept.push(buffer);
        }
    }
}

impl Drop for LinkReceiver {
    fn drop(&mut self) {
        let Some(mut posted) = self.posted.take() else {
            return;
        };
        if mpi::environment::is_finalized() {
            // Nothing can be posted any more; the buffer must outlive MPI's last look.
            std::mem::forget(posted.buffer);
            return;
        }
        // Nothing more comes on this link: withdraw the receive, or take what did come.
        // SAFETY: the request is live; MPI_Cancel only marks it.
        call(|| unsafe { ffi::MPI_Cancel(&mut posted.request.0) });
        posted.request.finish(self.pump.as_ref());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::Transport;

    #[test]
    fn tags_hold_the_kind_and_the_hop_count() {
        for (kind, hops) in [(MESSAGE, 0), (BLOCK, 7), (DIRECT, MAX_HOPS), (GROW, 0)] {
            let tag = tag(kind, hops);
            assert!((0..=32767).contains(&tag), "{tag}");
            assert_eq!(tag & ((1 << KIND_BITS) - 1), kind);
            assert_eq!((tag >> KIND_BITS) as u64, hops);
        }
        assert_eq!(tag(BLOCK, u64::MAX) >> KIND_BITS, MAX_HOPS as c_int);
    }

    #[test]
    fn a_grown_capacity_holds_the_frame_and_some_room() {
        for len in [INITIAL_CAPACITY + 1, 1_600_000, 16 << 20] {
            let capacity = grown(len);
            assert!(capacity >= len + len / 8 && capacity.is_multiple_of(4096));
        }
    }

    #[test]
    fn a_message_frame_packs_its_blocks_beside_its_bytes() {
        let bulk = crate::Bulk::new(Transport::Threads, &[1.5f64, -2.0, 3.25]).unwrap();
        let value = (7u32, "seven".to_owned(), bulk);
        let body = pack(&crate::transport::encode(&value).unwrap()).unwrap();
        let payload: Payload = unpack(&body).unwrap();
        let back: (u32, String, crate::Bulk<f64>) = crate::transport::decode(payload).unwrap();
        assert_eq!((back.0, back.1.as_str()), (7, "seven"));
        assert_eq!(&back.2[..], &[1.5, -2.0, 3.25]);
    }

    #[test]
    fn a_cut_or_padded_message_frame_is_an_error_not_a_panic() {
        let body = pack(&crate::transport::encode(&(1u64, vec![2u8; 40])).unwrap()).unwrap();
        for cut in 0..body.len() {
            assert!(unpack::<Payload>(&body[..cut]).is_err(), "cut at {cut}");
        }
        let mut padded = body.clone();
        padded.push(0);
        assert!(unpack::<Payload>(&padded).is_err());
        let mut huge = body;
        huge[4..12].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(unpack::<Payload>(&huge).is_err());
    }
}
