//! The MPI transport: the same ring, between the ranks of a job that `mpirun` started.
//!
//! The ring's links have communicators of their own and carry one message per frame into
//! receives posted ahead (see `link`). The control channels (reports up to rank 0, answers
//! down) are (peer rank, tag) pairs of `MPI_COMM_WORLD`, one tag per protocol. A value on
//! them travels as one message of postcard bytes, prefixed by the number of bulk blocks it
//! carries; each block follows as one raw message of its bytes, never through serde. MPI
//! keeps messages of one (source, tag) in order, so the blocks arrive right behind their
//! header. This is how ipc-channel carries shared memory: the serializer sets the blocks
//! aside and writes their index.
//!
//! Every send is non-blocking (`MPI_Isend`). A blocking send of a large block waits for
//! the receiver (rendezvous), and in a ring where everybody sends first that is the
//! textbook's deadlock. The sender keeps the buffer and the request until MPI says the
//! message has gone.
//!
//! Rank 0 is also the coordinator (see the MPI launcher): whenever rank 0's worker waits
//! long for a message, its receiver runs a [`Pump`], which relays for the coordinator; and
//! the coordinator's thread runs it too, now and then, so that the other ranks' progress
//! reaches it while rank 0's worker computes. Two threads of rank 0 then call MPI, so every
//! call goes through [`call`], which takes turns: `MPI_THREAD_SERIALIZED` asks no more.

mod link;

use std::cell::RefCell;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use mpi::Threading;
use mpi::environment::Universe;
use mpi::point_to_point::Status;
use mpi::request::{Request, StaticScope};
use mpi::topology::SimpleCommunicator;
use mpi::traits::{Communicator, Destination, Equivalence, Source};
use mpi::{Rank, Tag};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{Block, RecvFailure, SendFailure};
use crate::error::LaunchError;

pub(crate) use link::{Lent, LinkComms, LinkReceiver, LinkSender};

/// Reports to the coordinator on rank 0.
pub(crate) const UP: Tag = 3;
/// Answers from the coordinator.
pub(crate) const DOWN: Tag = 4;
/// The other ranks' progress records, for the coordinator on rank 0.
pub(crate) const PROGRESS: Tag = 5;

/// The MPI environment: initialized once, finalized when the process exits.
static UNIVERSE: Mutex<Option<Universe>> = Mutex::new(None);

fn universe() -> MutexGuard<'static, Option<Universe>> {
    UNIVERSE.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Starts MPI if this process has not yet, and returns the number of ranks in the job:
/// the number of workers a [`Transport::Mpi`](crate::Transport::Mpi) ring has. Call it
/// before [`Launcher::launch`](crate::Launcher::launch) to size the stage's data. Run
/// outside `mpirun`, the process is a job of one rank.
///
/// # Errors
///
/// [`LaunchError::Mpi`] if MPI cannot start, was finalized by someone else, or cannot
/// serve calls from a thread other than the one that started it.
pub fn mpi_world_size() -> Result<usize, LaunchError> {
    let mut guard = universe();
    if guard.is_none() {
        if mpi::environment::is_finalized() {
            return Err(LaunchError::Mpi(
                "mpi has already been finalized".to_owned(),
            ));
        }
        let Some((started, threading)) = mpi::initialize_with_threading(Threading::Serialized)
        else {
            return Err(LaunchError::Mpi(
                "mpi was initialized by someone else".to_owned(),
            ));
        };
        if threading < Threading::Serialized {
            return Err(LaunchError::Mpi(format!(
                "this mpi library offers thread level {threading:?}; ringleader needs Serialized"
            )));
        }
        *guard = Some(started);
        // MPI_Finalize is the job's shut-down, as MPI_Init is its start-up: it waits for
        // every rank, tens of milliseconds here, and belongs to no ring's timing. So it
        // runs as the process exits, on every rank, after the last ring and whatever the
        // program did with its outputs. A rank that aborts skips it; MPI_Abort ends the
        // job anyway.
        // SAFETY: `finalize_at_exit` is a plain function that does not unwind (it only
        // takes a lock that it never poisons and drops the universe).
        if unsafe { libc::atexit(finalize_at_exit) } != 0 {
            return Err(LaunchError::Mpi(
                "cannot arrange for mpi to be finalized at exit".to_owned(),
            ));
        }
    }
    let size = call(|| SimpleCommunicator::world().size());
    Ok(usize::try_from(size).unwrap_or(0))
}

/// Starts MPI as [`mpi_world_size`] does, and returns this process's rank in the job: 0
/// for the one whose [`Launcher::launch`](crate::Launcher::launch) returns the outputs.
///
/// # Errors
///
/// As [`mpi_world_size`].
pub fn mpi_rank() -> Result<usize, LaunchError> {
    mpi_world_size()?;
    let rank = call(|| SimpleCommunicator::world().rank());
    Ok(usize::try_from(rank).unwrap_or(0))
}

/// The most bytes of a finding that [`mpi_all_findings`] carries; a longer one is cut at a
/// character boundary.
pub const FINDING_BYTES: usize = 1000;

/// Every rank's `finding`, in rank order, on every rank: for what each rank finds against
/// its own host (its memory, its limits) before a ring starts, which the ranks must agree
/// on before any of them acts, so that one of them can say what all found, in one line.
/// Every rank of the job must call it, with or without a finding. Starts MPI as
/// [`mpi_world_size`] does. A finding is cut to [`FINDING_BYTES`].
///
/// # Errors
///
/// As [`mpi_world_size`].
pub fn mpi_all_findings(finding: Option<&str>) -> Result<Vec<Option<String>>, LaunchError> {
    use mpi::traits::CommunicatorCollectives;
    let size = mpi_world_size()?;
    let mine = finding_record(finding);
    let mut all = vec![0u8; FINDING_RECORD * size];
    call(|| world().all_gather_into(&mine[..], &mut all[..]));
    Ok(all.chunks(FINDING_RECORD).map(read_finding).collect())
}

/// A finding's record: a byte that says whether there is one, its length in two bytes
/// (little-endian), and its bytes.
const FINDING_RECORD: usize = 3 + FINDING_BYTES;

/// `finding` as a record of [`FINDING_RECORD`] bytes.
fn finding_record(finding: Option<&str>) -> [u8; FINDING_RECORD] {
    let mut record = [0u8; FINDING_RECORD];
    if let Some(finding) = finding {
        let mut len = finding.len().min(FINDING_BYTES);
        while !finding.is_char_boundary(len) {
            len -= 1;
        }
        record[0] = 1;
        record[1..3].copy_from_slice(&(len as u16).to_le_bytes());
        record[3..3 + len].copy_from_slice(&finding.as_bytes()[..len]);
    }
    record
}

/// The finding a record of [`finding_record`] holds.
fn read_finding(record: &[u8]) -> Option<String> {
    let (&[present, lo, hi], text) = record.split_first_chunk::<3>()?;
    let len = usize::from(u16::from_le_bytes([lo, hi])).min(text.len());
    (present == 1).then(|| String::from_utf8_lossy(&text[..len]).into_owned())
}

extern "C" fn finalize_at_exit() {
    let universe = universe().take();
    if crate::signal::job_ending() {
        // mpirun is ending the job, and serves no rank's finalize meanwhile: each would
        // wait for its SIGKILL. Exit as a rank that aborts does.
        std::mem::forget(universe);
    } else {
        drop(universe);
    }
}

/// Whether two threads of this process call MPI: rank 0's worker and its coordinator.
static SHARED: AtomicBool = AtomicBool::new(false);

/// The turn to call MPI, while [`SHARED`].
static SERIAL: Mutex<()> = Mutex::new(());

/// Makes one MPI call (or a few that belong together), taking turns with the other thread
/// of rank 0 while it has one. Never nest it: the turn is not reentrant. Elsewhere the only
/// cost is a load.
pub(crate) fn call<R>(f: impl FnOnce() -> R) -> R {
    let _turn = SHARED
        .load(Ordering::Acquire)
        .then(|| SERIAL.lock().unwrap_or_else(PoisonError::into_inner));
    f()
}

/// Says whether a second thread calls MPI from now on. Only the one thread that calls MPI
/// may switch it on, before the other starts, and off, after the other has ended.
pub(crate) fn share(shared: bool) {
    SHARED.store(shared, Ordering::Release);
}

/// Ends the job: every rank of it, this one included. It takes its turn if it can get one
/// soon, and aborts anyway if not: a job that must end cannot wait for a call that hangs.
pub(crate) fn abort(code: i32) -> ! {
    let since = Instant::now();
    let turn = loop {
        match SERIAL.try_lock() {
            Ok(turn) => break Some(turn),
            Err(std::sync::TryLockError::Poisoned(turn)) => break Some(turn.into_inner()),
            Err(std::sync::TryLockError::WouldBlock) if since.elapsed() < ABORT_TURN => {
                thread::yield_now();
            }
            Err(std::sync::TryLockError::WouldBlock) => break None,
        }
    };
    let world = world();
    let _turn = turn;
    world.abort(code)
}

/// How long [`abort`] waits for its turn.
const ABORT_TURN: Duration = Duration::from_millis(200);

pub(crate) fn world() -> SimpleCommunicator {
    SimpleCommunicator::world()
}

fn rank_of(rank: usize) -> Rank {
    Rank::try_from(rank).unwrap_or(Rank::MAX)
}

// ---------------------------------------------------------------------------------------
// Encoding: a payload's bytes as the header, its blocks as raw messages behind it.

/// The header message and the blocks to send behind it.
fn encode<T: Serialize>(value: &T) -> Result<(Vec<u8>, Vec<Block>), String> {
    let payload = super::payload::encode(value)?;
    let count = u32::try_from(payload.blocks.len()).map_err(|_| "too many blocks".to_owned())?;
    let mut header = Vec::with_capacity(4 + payload.bytes.len());
    header.extend_from_slice(&count.to_le_bytes());
    header.extend_from_slice(&payload.bytes);
    Ok((header, payload.blocks))
}

fn decode<T: DeserializeOwned>(body: &[u8], blocks: Vec<Block>) -> Result<T, String> {
    super::payload::decode(super::Payload {
        bytes: body.to_vec(),
        blocks,
    })
}

// ---------------------------------------------------------------------------------------
// Block buffers.

/// How many block buffers a rank keeps for reuse.
const POOL: usize = 8;

thread_local! {
    /// Blocks this rank made or received, kept for reuse once nobody else holds them.
    /// A fresh buffer of a megabyte costs page faults and zeroing on every hop; a reused
    /// one costs nothing.
    static BLOCKS: RefCell<Vec<Block>> = const { RefCell::new(Vec::new()) };
}

/// A block of `len` bytes written by `fill`: a pooled buffer that nobody holds any more,
/// or a new one.
pub(crate) fn recycled_block(len: usize, fill: impl FnOnce(&mut [u8])) -> Block {
    BLOCKS.with(|pool| {
        let mut pool = pool.borrow_mut();
        if let Some(slot) = pool.iter_mut().position(|b| b.writable(len).is_some()) {
            let block = &mut pool[slot];
            if let Some(bytes) = block.writable(len) {
                fill(bytes);
                return block.clone();
            }
        }
        let block = Block::filled_by(len, fill);
        if pool.len() >= POOL {
            // Make room by dropping a buffer nobody holds, if there is one.
            match pool.iter_mut().position(|b| {
                let len = b.bytes().len();
                b.writable(len).is_some()
            }) {
                Some(unused) => {
                    pool.swap_remove(unused);
                }
                None => return block,
            }
        }
        pool.push(block.clone());
        block
    })
}

// ---------------------------------------------------------------------------------------
// Sending.

/// What an in-flight send reads from: kept alive until MPI is done with it.
enum Payload {
    Bytes(Box<[u8]>),
    Block(Block),
}

impl Payload {
    fn bytes(&self) -> &[u8] {
        match self {
            Payload::Bytes(bytes) => bytes,
            Payload::Block(block) => block.bytes(),
        }
    }
}

/// One `MPI_Isend` in flight, with the buffer it reads.
struct InFlight {
    // Declared before `payload`: the request refers to the payload's bytes.
    request: Option<Request<'static, [u8], StaticScope>>,
    _payload: Payload,
}

// SAFETY: the raw request handle is only a token for MPI. The process has one ring, and a
// `Ring` is not `Sync`, so MPI is never called from two threads at once: that is all
// `MPI_THREAD_SERIALIZED` asks, whichever thread holds the ring.
unsafe impl Send for InFlight {}

impl InFlight {
    fn start(dest: Rank, tag: Tag, payload: Payload) -> Result<InFlight, SendFailure> {
        let bytes = payload.bytes();
        if i32::try_from(bytes.len()).is_err() {
            return Err(SendFailure::Encoding(format!(
                "a message of {} bytes is too large for one mpi message",
                bytes.len()
            )));
        }
        // SAFETY: the bytes live on the heap (a box or a block's shared buffer) and do not
        // move when `payload` does; `InFlight` owns the payload and completes the request
        // (in `finish` or on drop) before the payload is dropped.
        let bytes: &'static [u8] =
            unsafe { std::slice::from_raw_parts(bytes.as_ptr(), bytes.len()) };
        let request = call(|| {
            world()
                .process_at_rank(dest)
                .immediate_send_with_tag(StaticScope, bytes, tag)
        });
        Ok(InFlight {
            request: Some(request),
            _payload: payload,
        })
    }

    /// Whether MPI is done with the buffer; completes the request if it is.
    fn done(&mut self) -> bool {
        match self.request.take().map(|request| call(|| request.test())) {
            None | Some(Ok(_)) => true,
            Some(Err(request)) => {
                self.request = Some(request);
                false
            }
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        // Polled rather than MPI_Wait, which would keep the turn while it waits.
        let since = Instant::now();
        while !self.done() {
            let _ = wait_a_little(None, since, None);
        }
    }
}

/// The sending end of one MPI link.
pub(crate) struct Sender {
    dest: Rank,
    tag: Tag,
    in_flight: Mutex<Vec<InFlight>>,
}

impl Sender {
    pub(crate) fn new(dest: usize, tag: Tag) -> Sender {
        Sender {
            dest: rank_of(dest),
            tag,
            in_flight: Mutex::new(Vec::new()),
        }
    }

    /// The rank it sends to.
    pub(crate) fn dest(&self) -> Rank {
        self.dest
    }

    /// Starts sending `value` and returns without waiting for the receiver.
    pub(crate) fn send<T: Serialize>(&self, value: &T) -> Result<(), SendFailure> {
        let (header, blocks) = encode(value).map_err(SendFailure::Encoding)?;
        let mut in_flight = self
            .in_flight
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        in_flight.retain_mut(|send| !send.done());
        in_flight.push(InFlight::start(
            self.dest,
            self.tag,
            Payload::Bytes(header.into_boxed_slice()),
        )?);
        for block in blocks {
            in_flight.push(InFlight::start(self.dest, self.tag, Payload::Block(block))?);
        }
        Ok(())
    }
}

impl std::fmt::Debug for Sender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "mpi::Sender(to rank {}, tag {})", self.dest, self.tag)
    }
}

// ---------------------------------------------------------------------------------------
// Progress records.

/// Sends a rank's progress record to rank 0, whose coordinator keeps it on its own board:
/// that is how the step timeout and the deadlock watch see every rank of the job.
///
/// A rank sends it as a long wait starts and ends, and at every change of step, paced by
/// [`Pace`] so that rank 0 never hears more than [`RECORDS_PER_SECOND`] of them from the
/// whole job. A record is a few words, sent without waiting: about 1.3 µs a step on the
/// 2-core machine of `docs/SCALING.md`. A rank that stops right after a step began must
/// not look as if it were still in the step before (a timeout would name a step the rank
/// had finished), and every rank whose steps are slower than the pace, or that has just
/// begun, is exact. One sending at every change regardless could bury rank 0: a stage
/// that changes step a million times a second, on 64 ranks that wait for nobody, would
/// queue records at rank 0 faster than it reads them, without bound.
pub(crate) struct Publisher {
    to_root: Sender,
    pace: std::cell::Cell<Pace>,
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("mpi::Publisher")
    }
}

impl Publisher {
    /// The publisher of one of the `ranks` ranks of a job.
    pub(crate) fn new(ranks: usize) -> Publisher {
        Publisher {
            to_root: Sender::new(0, PROGRESS),
            pace: std::cell::Cell::new(Pace::for_job(ranks, Instant::now())),
        }
    }

    /// Sends the record now. Nothing to do if it cannot: rank 0 is gone, and the job with
    /// it.
    pub(crate) fn publish(&self, record: &crate::progress::Published) {
        let _ = self.to_root.send(record);
    }

    /// Sends the record after a change of step, if the pace allows one now.
    pub(crate) fn stepped(&self, record: impl FnOnce() -> crate::progress::Published) {
        let mut pace = self.pace.get();
        let allowed = pace.allow(Instant::now());
        self.pace.set(pace);
        if allowed {
            self.publish(&record());
        }
    }
}

/// The most records a second rank 0 hears of changes of step, from all the other ranks
/// together: a few percent of its time at most.
const RECORDS_PER_SECOND: u32 = 50_000;

/// How many records a rank may send at once after a quiet spell: the first steps of a run,
/// and those after a slow one, are all sent.
const BURST: u32 = 16;

/// A token bucket: [`BURST`] tokens, one more every `every`; each record takes one.
#[derive(Debug, Clone, Copy)]
struct Pace {
    every: Duration,
    tokens: u32,
    /// When the last token was added (or the bucket last found full).
    filled: Instant,
}

impl Pace {
    /// One rank's share of [`RECORDS_PER_SECOND`] in a job of `ranks`, full at `now`.
    fn for_job(ranks: usize, now: Instant) -> Pace {
        let senders = u32::try_from(ranks.saturating_sub(1).max(1)).unwrap_or(u32::MAX);
        Pace {
            every: Duration::from_secs(1) * senders / RECORDS_PER_SECOND,
            tokens: BURST,
            filled: now,
        }
    }

    /// Whether a record may go at `now`; takes its token if so.
    fn allow(&mut self, now: Instant) -> bool {
        if self.tokens < BURST {
            let elapsed = now.saturating_duration_since(self.filled);
            let earned = elapsed.as_nanos() / self.every.as_nanos().max(1);
            let room = u128::from(BURST - self.tokens);
            if earned >= room {
                self.tokens = BURST;
                self.filled = now;
            } else {
                // `earned < room <= BURST`, so it fits; the part of a token still owed
                // stays owed.
                let earned = earned as u32;
                self.tokens += earned;
                self.filled += self.every * earned;
            }
        } else {
            self.filled = now;
        }
        if self.tokens == 0 {
            return false;
        }
        self.tokens -= 1;
        true
    }
}

// ---------------------------------------------------------------------------------------
// Receiving.

/// Rank 0's relay between the other ranks and the coordinator thread.
pub(crate) trait Pump: Send {
    /// Moves whatever is waiting, without blocking. `Err` once the coordinator has ended.
    fn poll(&mut self) -> Result<(), CoordinatorGone>;
}

#[derive(Debug)]
pub(crate) struct CoordinatorGone;

pub(crate) type SharedPump = Arc<Mutex<dyn Pump>>;

pub(crate) fn poll(pump: &SharedPump) -> Result<(), CoordinatorGone> {
    pump.lock().unwrap_or_else(PoisonError::into_inner).poll()
}

/// The receiving end of one MPI link.
pub(crate) enum Receiver<T> {
    /// From another rank (or this one, for a ring of one).
    Remote {
        source: Rank,
        tag: Tag,
        /// On rank 0: the relay to run while waiting.
        pump: Option<SharedPump>,
        _values: PhantomData<fn() -> T>,
    },
    /// Rank 0's answers from its own coordinator thread.
    Local {
        rx: mpsc::Receiver<T>,
        pump: SharedPump,
    },
}

impl<T> std::fmt::Debug for Receiver<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Receiver::Remote { source, tag, .. } => {
                write!(f, "mpi::Receiver(from rank {source}, tag {tag})")
            }
            Receiver::Local { .. } => write!(f, "mpi::Receiver(from the coordinator)"),
        }
    }
}

impl<T: DeserializeOwned> Receiver<T> {
    pub(crate) fn remote(source: usize, tag: Tag, pump: Option<SharedPump>) -> Self {
        Receiver::Remote {
            source: rank_of(source),
            tag,
            pump,
            _values: PhantomData,
        }
    }

    /// Waits for the next value, for at most `timeout` if one is given.
    pub(crate) fn recv(&self, timeout: Option<Duration>) -> Result<T, RecvFailure> {
        let since = Instant::now();
        let deadline = timeout.map(|t| since + t);
        match self {
            Receiver::Remote {
                source, tag, pump, ..
            } => loop {
                // A polling loop rather than a blocking MPI_Mprobe: on this OpenMPI the
                // blocking probe takes far longer to notice a large message.
                let probed = call(|| {
                    world()
                        .process_at_rank(*source)
                        .immediate_matched_probe_with_tag(*tag)
                });
                if let Some((message, status)) = probed {
                    return receive(message, status, *tag);
                }
                wait_a_little(pump.as_ref(), since, deadline)?;
            },
            Receiver::Local { rx, pump } => loop {
                match rx.try_recv() {
                    Ok(value) => return Ok(value),
                    Err(mpsc::TryRecvError::Disconnected) => return Err(RecvFailure::Closed),
                    Err(mpsc::TryRecvError::Empty) => wait_a_little(Some(pump), since, deadline)?,
                }
            },
        }
    }
}

/// How long a polling wait spins before it starts yielding the core: long enough to
/// catch a message that is on its way, short enough not to starve a rank that shares the
/// core on an oversubscribed machine.
const SPIN: Duration = Duration::from_micros(50);

/// How long a wait on rank 0 polls for its own message before it also relays for the
/// coordinator. Relaying probes MPI for every other rank's reports, which costs more than a
/// whole short hop; a wait that short delays a report by at most this.
const RELAY_AFTER: Duration = Duration::from_micros(5);

/// One turn of a polling wait that began at `since`: relay for the coordinator once the
/// wait is no longer short, then spin or let others run.
pub(crate) fn wait_a_little(
    pump: Option<&SharedPump>,
    since: Instant,
    deadline: Option<Instant>,
) -> Result<(), RecvFailure> {
    let now = Instant::now();
    if let Some(pump) = pump
        && now.duration_since(since) >= RELAY_AFTER
    {
        poll(pump).map_err(|CoordinatorGone| RecvFailure::Closed)?;
    }
    if deadline.is_some_and(|d| now >= d) {
        return Err(RecvFailure::Timeout);
    }
    if now.duration_since(since) < SPIN {
        std::hint::spin_loop();
    } else {
        thread::yield_now();
    }
    Ok(())
}

/// Receives a probed header, the blocks behind it, and decodes the value.
pub(crate) fn receive<T: DeserializeOwned>(
    message: mpi::point_to_point::Message,
    status: Status,
    tag: Tag,
) -> Result<T, RecvFailure> {
    let source = status.source_rank();
    let len = usize::try_from(status.count(u8::equivalent_datatype())).unwrap_or(0);
    let mut header = vec![0u8; len];
    call(|| message.matched_receive_into(&mut header[..]));
    let Some((count, body)) = header.split_first_chunk::<4>() else {
        return Err(RecvFailure::Encoding(format!(
            "a message of {len} bytes has no header"
        )));
    };
    let count = u32::from_le_bytes(*count) as usize;
    let mut blocks = Vec::with_capacity(count);
    for _ in 0..count {
        // The block is right behind its header. No relaying while waiting for it: the
        // relay itself receives this way.
        let since = Instant::now();
        let (message, status) = loop {
            let probed = call(|| {
                world()
                    .process_at_rank(source)
                    .immediate_matched_probe_with_tag(tag)
            });
            match probed {
                Some(probed) => break probed,
                None => wait_a_little(None, since, None)?,
            }
        };
        let len = usize::try_from(status.count(u8::equivalent_datatype())).unwrap_or(0);
        blocks.push(recycled_block(len, |bytes| {
            call(|| message.matched_receive_into(bytes));
        }));
    }
    decode(body, blocks).map_err(RecvFailure::Encoding)
}

#[cfg(test)]
mod tests {
    use super::super::Frame;
    use super::*;

    #[test]
    fn a_finding_goes_through_its_record_whole_or_cut_at_a_character() {
        assert_eq!(read_finding(&finding_record(None)), None);
        assert_eq!(read_finding(&finding_record(Some(""))), Some(String::new()));
        let said = "-n 3000000000 -p 2 needs about 503.5 GiB of memory, but 21.9 GiB is available";
        assert_eq!(
            read_finding(&finding_record(Some(said))).as_deref(),
            Some(said)
        );
        // 'é' is two bytes, and the last one would not fit whole.
        let long = format!("{}é", "x".repeat(FINDING_BYTES - 1));
        let cut = read_finding(&finding_record(Some(&long))).unwrap();
        assert_eq!(cut, "x".repeat(FINDING_BYTES - 1));
        let records: Vec<u8> = [Some("rank 0"), None, Some("rank 2")]
            .iter()
            .flat_map(|f| finding_record(*f))
            .collect();
        let read: Vec<_> = records.chunks(FINDING_RECORD).map(read_finding).collect();
        assert_eq!(read, [Some("rank 0".into()), None, Some("rank 2".into())]);
    }

    #[test]
    fn a_rank_sends_a_burst_at_once_then_at_its_share_of_the_pace() {
        let start = Instant::now();
        // Three ranks: two send, each at half of the job's records a second.
        let mut pace = Pace::for_job(3, start);
        let every = Duration::from_secs(2) / RECORDS_PER_SECOND;
        assert_eq!(pace.every, every);
        for k in 0..BURST {
            assert!(pace.allow(start), "record {k} of the burst");
        }
        assert!(!pace.allow(start), "the bucket is empty");
        assert!(!pace.allow(start + every / 2), "half a token earned");
        assert!(pace.allow(start + every), "one token earned");
        assert!(!pace.allow(start + every));
        // Three tokens earned by now; the half owed from before counts.
        let later = start + every * 4 + every / 2;
        assert!((0..3).all(|_| pace.allow(later)));
        assert!(!pace.allow(later));
        assert!(pace.allow(start + every * 5), "the half token was kept");
    }

    #[test]
    fn a_quiet_rank_earns_no_more_than_a_burst() {
        let start = Instant::now();
        let mut pace = Pace::for_job(2, start);
        for _ in 0..BURST {
            assert!(pace.allow(start));
        }
        let later = start + Duration::from_secs(3600);
        let sent = (0..10 * BURST).filter(|_| pace.allow(later)).count();
        assert_eq!(sent, BURST as usize);
    }

    #[test]
    fn a_job_of_many_ranks_paces_each_rank_down() {
        let now = Instant::now();
        let pace = Pace::for_job(1025, now);
        assert_eq!(
            pace.every,
            Duration::from_secs(1) * 1024 / RECORDS_PER_SECOND
        );
        assert_eq!(Pace::for_job(1, now).every, Pace::for_job(2, now).every);
    }

    #[test]
    fn a_block_travels_beside_its_header_not_inside_it() {
        let data: Vec<f64> = (0..1000).map(|i| f64::from(i) * 0.25).collect();
        let block = Block::local(bytemuck::cast_slice(&data));
        let (header, blocks) = encode(&Frame::<u32>::Block(block)).unwrap();
        assert_eq!(blocks.len(), 1);
        assert!(
            header.len() < 16,
            "the header carries an index, not 8000 bytes"
        );
        assert_eq!(u32::from_le_bytes(header[..4].try_into().unwrap()), 1);
        let copied = Block::filled_by(blocks[0].bytes().len(), |bytes| {
            bytes.copy_from_slice(blocks[0].bytes());
        });
        match decode::<Frame<u32>>(&header[4..], vec![copied]).unwrap() {
            Frame::Block(block) => {
                assert_eq!(super::super::view::<f64>(block.bytes()).unwrap(), &data[..]);
            }
            frame => panic!("{} came back", frame.kind()),
        }
        assert!(
            !super::super::payload::encoding() && !super::super::payload::decoding(),
            "encoding leaves no state behind"
        );
    }

    #[test]
    fn a_message_without_blocks_is_plain_postcard() {
        let (header, blocks) = encode(&Frame::<(u8, String)>::Message((7, "hi".into()))).unwrap();
        assert!(blocks.is_empty());
        assert_eq!(&header[..4], &0u32.to_le_bytes());
        match decode::<Frame<(u8, String)>>(&header[4..], Vec::new()).unwrap() {
            Frame::Message(message) => assert_eq!(message, (7, "hi".to_owned())),
            frame => panic!("{} came back", frame.kind()),
        }
    }

    #[test]
    fn a_pooled_buffer_is_reused_only_once_nobody_holds_it() {
        let held = recycled_block(64, |b| b.fill(1));
        let other = recycled_block(64, |b| b.fill(2));
        assert!(
            held.bytes().iter().all(|&b| b == 1),
            "a held block is never rewritten"
        );
        let address = other.bytes().as_ptr();
        drop(other);
        let again = recycled_block(64, |b| b.fill(3));
        assert_eq!(
            again.bytes().as_ptr(),
            address,
            "a released buffer is reused"
        );
        assert!(again.bytes().iter().all(|&b| b == 3));
        assert!(held.bytes().iter().all(|&b| b == 1));
    }

    #[test]
    fn a_missing_block_is_an_error_not_a_panic() {
        let block = Block::local(&[1, 2, 3]);
        let (header, _) = encode(&Frame::<()>::Block(block)).unwrap();
        assert!(decode::<Frame<()>>(&header[4..], Vec::new()).is_err());
        assert!(!super::super::payload::encoding() && !super::super::payload::decoding());
    }
}
