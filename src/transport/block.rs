//! Bulk blocks: the payload of a ring rotation.
//!
//! Between threads a block is an `Arc` of an aligned buffer. Between processes a block
//! lives in a shared-memory region (a memfd) of the worker that made it. The region crosses
//! the socket, as a file descriptor, only the first time; every rank keeps it mapped, and
//! from then on a frame only names it, and skips the socket (see the `link` module).
//! Mapping a region afresh for every hop costs a page fault for every few pages and an
//! unmap afterwards, about 200 µs of kernel time for 1.6 MB; a region kept mapped costs
//! nothing after its first pass.
//!
//! Blocks once travelled inline between processes up to 8 KiB, their bytes in the frame:
//! four copies and a socket round, 5.6 µs a hop for 16 bytes and 8.3 µs for 8 KB, where a
//! kept region now takes 0.4 to 0.6 µs. So between processes only an empty block is inline
//! now: it has no region to live in, and its frame names it in a word of its own, so it
//! takes the mailbox too. It leaves its turn's region as it was, for the next block.
//!
//! A worker writes its own blocks into two buffers that take turns (see [`Blocks`]), so
//! rotating blocks of one size allocates nothing after the first two rotations. Readers
//! only ever see a block as `&[T]`: no two workers write the same memory.
//!
//! # Blocks to one neighbour
//!
//! `Ring::send_block` sends a block to one neighbour, which reads it with `recv_block`
//! whenever it likes: maybe only after the sender has sent it several more. No collective
//! says when a buffer is free again, so the receiver says it. The argument:
//!
//! - Each outgoing link (to the right, to the left) has two buffers of its own, which take
//!   turns. Their keys (`turn` 2 and 3 to the right, 4 and 5 to the left) differ from the
//!   rotation's and from each other's, so on a ring of two, where both neighbours are the
//!   same rank, the receiver never mistakes one link's region for the other's.
//! - The receiver counts the blocks it has *released*: `read` has returned, and no view of
//!   the bytes is left. The count lives on the receiver's side of the link's mailbox, in
//!   shared memory, and only the receiver writes it (`Release`, after the reads).
//! - Blocks on a link are received, and so released, in the order they were sent. So a
//!   count of `k` means every block up to the `k`-th is released.
//! - The sender numbers the blocks it sends on the link, and notes for each turn the number
//!   of the last block that used its buffer. It rewrites the buffer only when the count
//!   (read with `Acquire`) has reached that number: then the receiver's reads of every
//!   block that used it happened before the writes.
//! - Otherwise the sender writes a new region, a new generation whose frame crosses with its
//!   file descriptor, and the receiver keeps the old one mapped for the blocks that still
//!   name it. It never waits for the count: the receiver may be waiting for the sender.
//!
//! A frame that names a region without its file descriptor names the generation its turn
//! holds, whose first frame went before it on the same link. A receiver admits every frame
//! in order, so it always has that generation. Between threads the count of the `Arc` says
//! whether the receiver still holds a block, as for rotations, and no count is kept.

use std::cell::Cell;
use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, OnceLock};
use std::thread::LocalKey;

use bytemuck::Pod;
use ipc_channel::ipc::IpcSharedMemory;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::Transport;

/// The size of a memory page: shared-memory regions come in whole pages.
const PAGE: usize = 4096;

/// The alignment every block the transport makes guarantees to its readers. A vector a
/// worker hands over ([`Block::adopted`]) keeps its own elements' alignment instead, and is
/// only ever read as those elements.
pub(crate) const BLOCK_ALIGN: usize = 16;

/// The largest [`Bulk`](crate::Bulk) array that travels inline between processes, its
/// bytes in the message: a region of its own for every array costs more up to here (a
/// memory file, mapped and faulted in page by page on both sides, and unmapped again: a
/// run of 2,000 particles on two processes that reports every particle's energy every
/// step took 0.61 s, against 0.21 s between threads).
pub(crate) const INLINE_BULK: usize = 64 << 10;

/// A block on its way round the ring.
#[derive(Clone)]
pub(crate) enum Block {
    /// Bytes in this process: every block between threads, and small blocks that arrived
    /// inline from another process.
    Local(Arc<Aligned>),
    /// A block in a shared-memory region of its origin.
    Region(Region),
    /// A vector a forked worker handed over ([`Block::adopted`]), still in its own memory.
    /// Sent as a worker's last word it is lent (see `lend`); sent any other way it goes as
    /// a region of its own, copied the first time it is sent.
    Held(Arc<Held>),
}

/// A handed-over vector between processes, and the region that carries a copy of it once
/// it has been sent other than lent.
pub(crate) struct Held {
    data: Aligned,
    copy: OnceLock<IpcSharedMemory>,
}

impl Held {
    /// The region that carries a copy of the vector: made the first time it is needed.
    fn region(&self) -> &IpcSharedMemory {
        self.copy
            .get_or_init(|| IpcSharedMemory::from_bytes(self.data.bytes()))
    }
}

/// A large block between processes: which region, and how many of its bytes.
#[derive(Clone)]
pub(crate) struct Region {
    key: RegionKey,
    len: usize,
    /// The region itself, the first time it travels; afterwards every rank has it.
    shm: Option<IpcSharedMemory>,
}

/// Names a region: its origin's rank, which of the origin's two buffers, and which region
/// that buffer holds (a new one whenever the block size changes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct RegionKey {
    origin: u32,
    turn: u8,
    generation: u64,
}

/// The key of a region that crosses once with its file descriptor and that no frame ever
/// names: a held block sent other than lent, or a value's spilled bytes.
const ONE_PASS: RegionKey = RegionKey {
    origin: u32::MAX,
    turn: u8::MAX,
    generation: 0,
};

/// A byte buffer aligned to [`BLOCK_ALIGN`], or a vector a worker handed over whole,
/// aligned for its own elements.
pub(crate) struct Aligned {
    storage: Storage,
    len: usize,
}

/// Where an [`Aligned`] buffer's bytes live.
enum Storage {
    Words(Vec<u128>),
    /// A vector of plain data a worker filled and gave up ([`Block::adopted`]): between
    /// threads it becomes the block as it is, with no copy and no fresh memory.
    Adopted(Box<dyn AdoptedBytes>),
}

/// A vector of plain data, as bytes.
trait AdoptedBytes: Send + Sync {
    fn bytes(&self) -> &[u8];
    fn bytes_mut(&mut self) -> &mut [u8];
}

impl<T: Pod + Send + Sync> AdoptedBytes for Vec<T> {
    fn bytes(&self) -> &[u8] {
        bytemuck::cast_slice(self)
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        bytemuck::cast_slice_mut(self)
    }
}

impl Storage {
    fn bytes(&self) -> &[u8] {
        match self {
            Storage::Words(words) => bytemuck::cast_slice(words),
            Storage::Adopted(vec) => vec.bytes(),
        }
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        match self {
            Storage::Words(words) => bytemuck::cast_slice_mut(words),
            Storage::Adopted(vec) => vec.bytes_mut(),
        }
    }
}

/// Why a block cannot be read as a slice of `T`.
#[derive(Debug)]
pub(crate) enum BlockError {
    Size {
        bytes: usize,
        elem_size: usize,
    },
    Alignment(usize),
    /// A frame named a region this worker was never sent.
    UnknownRegion,
}

impl Block {
    /// A block holding a copy of `bytes`, in this process.
    pub(crate) fn local(bytes: &[u8]) -> Block {
        Block::Local(Arc::new(Aligned::copy_of(bytes)))
    }

    /// A block holding a copy of `bytes` for a [`Bulk`](crate::Bulk) array between
    /// processes: up to [`INLINE_BULK`] bytes it travels inline; a larger one is held in
    /// this process's memory until it is sent, then lent to the coordinator (see `lend`)
    /// or copied into a shared-memory region of its own, which nobody keeps mapped.
    pub(crate) fn shared(bytes: &[u8]) -> Block {
        if bytes.len() <= INLINE_BULK {
            return Block::local(bytes);
        }
        Block::held(Aligned::copy_of(bytes))
    }

    /// How many of the block's bytes cross a socket inline between processes: a local
    /// block's (at most [`INLINE_BULK`] when made for processes); none of a region's.
    pub(crate) fn inline_len(&self) -> usize {
        match self {
            Block::Local(local) => local.len,
            Block::Region(_) | Block::Held(_) => 0,
        }
    }

    /// A block holding a copy of `bytes` in a shared-memory region of its own, which
    /// crosses a socket once, as a file descriptor, and which nobody keeps mapped: how a
    /// value's bytes too many for the socket go between processes (see `payload`).
    pub(crate) fn spilled(bytes: &[u8]) -> Block {
        Block::Region(Region {
            key: ONE_PASS,
            len: bytes.len(),
            shm: Some(IpcSharedMemory::from_bytes(bytes)),
        })
    }

    fn held(data: Aligned) -> Block {
        Block::Held(Arc::new(Held {
            data,
            copy: OnceLock::new(),
        }))
    }

    /// A block of `len` bytes, zeroed and then written in place by `fill`: when `shared`
    /// (between processes) and larger than [`INLINE_BULK`], held in this process until it
    /// is sent (see [`Block::shared`]); else in this process, moved between threads or
    /// inline between processes. Nothing is copied: a large array is written once, where
    /// it will be read or lent.
    pub(crate) fn filled(shared: bool, len: usize, fill: impl FnOnce(&mut [u8])) -> Block {
        let mut words: Vec<u128> = bytemuck::allocation::zeroed_vec(len.div_ceil(BLOCK_ALIGN));
        advise_huge_pages(bytemuck::cast_slice_mut(&mut words));
        let mut aligned = Aligned {
            storage: Storage::Words(words),
            len,
        };
        fill(aligned.bytes_mut());
        if shared && len > INLINE_BULK {
            return Block::held(aligned);
        }
        Block::Local(Arc::new(aligned))
    }

    /// A block of `data`'s elements, which this worker has filled and gives up: the
    /// vector itself, moved, its bytes neither copied nor written afresh. When `shared`
    /// (between processes) it is held until it is sent: lent as a worker's last word,
    /// copied into a region of its own otherwise. Readers of such a block may only count
    /// on `T`'s alignment, which [`view`] checks.
    pub(crate) fn adopted<T: Pod + Send + Sync>(shared: bool, data: Vec<T>) -> Block {
        let len = size_of_val(data.as_slice());
        let data = Aligned {
            storage: Storage::Adopted(Box::new(data)),
            len,
        };
        if shared {
            return Block::held(data);
        }
        Block::Local(Arc::new(data))
    }

    /// Whether the block is held in this process until it is sent, to be lent to the
    /// coordinator (a large bulk array, or a handed-over vector).
    pub(crate) fn is_held(&self) -> bool {
        matches!(self, Block::Held(_))
    }

    /// The bytes of a block that carries them: in this process, or in a region that
    /// travels with it. `None` for a block that only names a region.
    pub(crate) fn carried_bytes(&self) -> Option<&[u8]> {
        match self {
            Block::Local(local) => Some(local.bytes()),
            Block::Region(Region { shm, len, .. }) => shm.as_ref()?.get(..*len),
            Block::Held(held) => Some(held.data.bytes()),
        }
    }

    /// The same block, claiming `len` bytes whatever it holds: a lie for tests to tell.
    #[cfg(test)]
    pub(crate) fn claiming(self, len: usize) -> Block {
        match self {
            Block::Region(region) => Block::Region(Region { len, ..region }),
            local => local,
        }
    }

    /// Whether the block lives in shared memory, or will once it is sent.
    pub(crate) fn is_shared(&self) -> bool {
        matches!(self, Block::Region(_) | Block::Held(_))
    }

    /// A block of `len` bytes written in place by `fill`, so a received MPI message lands
    /// in aligned memory without a second copy.
    #[cfg(feature = "mpi")]
    pub(crate) fn filled_by(len: usize, fill: impl FnOnce(&mut [u8])) -> Block {
        let mut words = vec![0u128; len.div_ceil(BLOCK_ALIGN)];
        fill(&mut bytemuck::cast_slice_mut::<u128, u8>(&mut words)[..len]);
        Block::Local(Arc::new(Aligned {
            storage: Storage::Words(words),
            len,
        }))
    }

    /// This block's bytes for rewriting, if it is an aligned buffer of `len` bytes that
    /// nobody else holds: then no reader can see the change.
    #[cfg(feature = "mpi")]
    pub(crate) fn writable(&mut self, len: usize) -> Option<&mut [u8]> {
        match self {
            Block::Local(local) if local.len == len => Arc::get_mut(local).map(Aligned::bytes_mut),
            _ => None,
        }
    }

    /// The bytes of a block in this process. Between MPI ranks every block is one: blocks
    /// travel as raw messages, never as shared-memory regions.
    #[cfg(feature = "mpi")]
    pub(crate) fn bytes(&self) -> &[u8] {
        self.carried_bytes().unwrap_or_default()
    }
}

/// Receive buffers for MPI: MPI writes one while a receive is posted into it, and it is
/// handed out as a block once the message is in.
#[cfg(feature = "mpi")]
impl Aligned {
    /// A buffer of `capacity` bytes, zeroed by the kernel as it is first touched.
    pub(crate) fn zeroed(capacity: usize) -> Aligned {
        let mut words: Vec<u128> = bytemuck::allocation::zeroed_vec(capacity.div_ceil(BLOCK_ALIGN));
        advise_huge_pages(bytemuck::cast_slice_mut(&mut words));
        Aligned {
            storage: Storage::Words(words),
            len: capacity,
        }
    }

    /// How many bytes it can hold.
    pub(crate) fn capacity(&self) -> usize {
        self.storage.bytes().len()
    }

    /// Where MPI may write its [`capacity`](Aligned::capacity) bytes.
    pub(crate) fn as_mut_ptr(&mut self) -> *mut u8 {
        self.storage.bytes_mut().as_mut_ptr()
    }

    /// Sets how many of its bytes are the block: those a message filled.
    pub(crate) fn set_len(&mut self, len: usize) {
        debug_assert!(len <= self.capacity());
        self.len = len.min(self.capacity());
    }

    /// The block's bytes.
    pub(crate) fn filled(&self) -> &[u8] {
        self.bytes()
    }
}

#[cfg(feature = "mpi")]
impl Block {
    /// The block a received message filled.
    pub(crate) fn received(buffer: Arc<Aligned>) -> Block {
        Block::Local(buffer)
    }
}

/// The first word of an empty block's [words](Block::to_words): no region has bit 62.
const EMPTY: u64 = 1 << 62;

impl Block {
    /// A block that names a region every rank already has, or an empty block, as three
    /// words: small enough for a mailbox slot in shared memory (see `link`). `None` for any
    /// other block. The first word uses only its low 40 bits, and bit 62 for an empty
    /// block.
    pub(crate) fn to_words(&self) -> Option<[u64; 3]> {
        match self {
            // A rank that sends its neighbour nothing (no migrants this step, say) says so
            // through the mailbox too, not through the socket.
            Block::Local(local) if local.len == 0 => Some([EMPTY, 0, 0]),
            Block::Region(Region {
                key,
                len,
                shm: None,
            }) => Some([
                u64::from(key.origin) | u64::from(key.turn) << 32,
                key.generation,
                *len as u64,
            ]),
            _ => None,
        }
    }

    /// The block [`to_words`](Block::to_words) made these words from.
    pub(crate) fn from_words([packed, generation, len]: [u64; 3]) -> Block {
        if packed & EMPTY != 0 {
            return Block::local(&[]);
        }
        Block::Region(Region {
            key: RegionKey {
                origin: packed as u32,
                turn: (packed >> 32) as u8,
                generation,
            },
            // A length that does not fit is no region this worker has: `Blocks::bytes`
            // refuses it.
            len: usize::try_from(len).unwrap_or(usize::MAX),
            shm: None,
        })
    }
}

impl Aligned {
    pub(super) fn bytes(&self) -> &[u8] {
        &self.storage.bytes()[..self.len]
    }

    pub(super) fn bytes_mut(&mut self) -> &mut [u8] {
        &mut self.storage.bytes_mut()[..self.len]
    }

    /// A buffer of `len` bytes that nothing has touched yet (the kernel zeroes each page
    /// as it is first written), backed by huge pages when large; `None` if there is no
    /// such memory.
    pub(super) fn untouched(len: usize) -> Option<Aligned> {
        let mut words: Vec<u128> =
            bytemuck::allocation::try_zeroed_vec(len.div_ceil(BLOCK_ALIGN)).ok()?;
        advise_huge_pages(bytemuck::cast_slice_mut(&mut words));
        Some(Aligned {
            storage: Storage::Words(words),
            len,
        })
    }

    fn copy_of(bytes: &[u8]) -> Aligned {
        let mut words = vec![0u128; bytes.len().div_ceil(BLOCK_ALIGN)];
        bytemuck::cast_slice_mut::<u128, u8>(&mut words)[..bytes.len()].copy_from_slice(bytes);
        Aligned {
            storage: Storage::Words(words),
            len: bytes.len(),
        }
    }
}

/// Asks the kernel to back a large allocation nothing has touched yet with huge pages:
/// a block of tens of megabytes then takes a few page faults instead of thousands.
fn advise_huge_pages(bytes: &mut [u8]) {
    if bytes.len() >= 8 << 20 {
        crate::memory::advise(bytes.as_mut_ptr() as usize, bytes.len());
    }
}

/// Reads bytes as a slice of `T`, without copying.
pub(crate) fn view<T: Pod>(bytes: &[u8]) -> Result<&[T], BlockError> {
    check_align::<T>()?;
    if bytes.is_empty() {
        return Ok(&[]);
    }
    let elem_size = size_of::<T>();
    if elem_size == 0 || !bytes.len().is_multiple_of(elem_size) {
        return Err(BlockError::Size {
            bytes: bytes.len(),
            elem_size,
        });
    }
    // Shared memory is page-aligned and local blocks are 16-byte aligned, so with the
    // check above this cast cannot fail on alignment.
    bytemuck::try_cast_slice(bytes).map_err(|_| BlockError::Alignment(align_of::<T>()))
}

/// Blocks promise [`BLOCK_ALIGN`]; a type that needs more cannot be viewed in place.
pub(crate) fn check_align<T>() -> Result<(), BlockError> {
    if align_of::<T>() > BLOCK_ALIGN {
        Err(BlockError::Alignment(align_of::<T>()))
    } else {
        Ok(())
    }
}

/// How many buffers of its own a worker keeps: two for its rotations, and two for each
/// outgoing link's blocks to one neighbour.
const TURNS: usize = 6;

/// The key of buffer `turn` (0 or 1) of outgoing link `link` (0 to the right, 1 to the
/// left), for blocks sent to one neighbour.
fn direct_turn(link: usize, turn: u8) -> u8 {
    2 + 2 * link as u8 + turn
}

/// A worker's blocks: the buffers its own blocks are written into, and the regions of the
/// other workers it has been sent.
///
/// For rotations two buffers taking turns are enough: rotations are collective, so by the
/// end of my rotation `k + 1` I have received the block every other rank injected in its
/// rotation `k + 1`, which it did only after its rotation `k`, and with it every read of my
/// rotation-`k` block, was over. So in rotation `k + 2` nobody reads the buffer I used in
/// rotation `k` any more, and I may write it again. Blocks to one neighbour need the
/// receiver's word instead (see the module's docs).
#[derive(Default)]
pub(crate) struct Blocks {
    /// By turn: 0 and 1 for rotations, then [`direct_turn`]'s.
    own: [Option<Own>; TURNS],
    /// The rank whose blocks `own` holds.
    rank: Option<u32>,
    /// The rotation's next turn.
    turn: u8,
    generation: u64,
    /// For each outgoing link: the blocks sent on it to one neighbour.
    direct: [Direct; 2],
    /// Regions of other workers (and, on a ring of one, this worker's own that came
    /// back), by origin and turn, with their generation.
    seen: HashMap<(u32, u8), (u64, IpcSharedMemory)>,
}

/// The blocks one outgoing link has carried to one neighbour.
#[derive(Debug, Default)]
struct Direct {
    /// How many were sent.
    sent: u64,
    /// Which of the link's two buffers is next.
    turn: u8,
    /// For each of the two: the number of the last block written into it.
    last: [u64; 2],
}

enum Own {
    Local(Arc<Aligned>),
    Region {
        shm: IpcSharedMemory,
        generation: u64,
    },
}

impl Blocks {
    /// A block holding a copy of `bytes`, to inject into a rotation from rank `origin`:
    /// written into the buffer whose turn it is, when that buffer fits.
    pub(crate) fn outgoing(&mut self, transport: Transport, origin: usize, bytes: &[u8]) -> Block {
        let turn = self.turn;
        self.turn ^= 1;
        // Per the argument on `Blocks`, nobody reads this turn's buffer any more.
        self.fill(transport, origin, turn, bytes, true)
    }

    /// A block holding a copy of `bytes`, for rank `origin` to send to one neighbour on
    /// outgoing link `link` (0 to the right, 1 to the left). `released` is how many of the
    /// link's blocks the receiver has released; 0 where nobody counts (between threads
    /// and MPI ranks, where blocks are never regions).
    pub(crate) fn direct(
        &mut self,
        transport: Transport,
        origin: usize,
        link: usize,
        bytes: &[u8],
        released: u64,
    ) -> Block {
        let direct = &mut self.direct[link.min(1)];
        let turn = direct.turn;
        direct.turn ^= 1;
        direct.sent += 1;
        let last = &mut direct.last[usize::from(turn)];
        let free = released >= *last;
        *last = direct.sent;
        self.fill(
            transport,
            origin,
            direct_turn(link.min(1), turn),
            bytes,
            free,
        )
    }

    /// Writes `bytes` into buffer `turn`, in place when it fits and `free` says no reader
    /// can still see it (between threads, the count of the `Arc` decides instead), or else
    /// into a new one.
    fn fill(
        &mut self,
        transport: Transport,
        origin: usize,
        turn: u8,
        bytes: &[u8],
        free: bool,
    ) -> Block {
        self.rank = Some(origin as u32);
        let slot = &mut self.own[usize::from(turn)];
        // A frame that carries a region is small, far below half the socket buffer: a send
        // never waits unless its link already holds another, and no rotation has enough
        // in flight for that, so sends cannot deadlock.
        if transport == Transport::Processes {
            // An empty block travels inline, and leaves the turn's region kept for the next
            // one that needs it: replacing it cost the next block a new region (a file
            // descriptor on the socket, a mapping on the reader), as often as every other
            // step where migrants come and go.
            if bytes.is_empty() {
                return Block::local(bytes);
            }
            let key = |generation| RegionKey {
                origin: origin as u32,
                turn,
                generation,
            };
            if let Some(Own::Region { shm, generation }) = slot
                && free
                && shm.len() >= bytes.len()
            {
                // SAFETY: `free` says no other worker reads this region any more (the
                // argument on `Blocks` for rotations, the receiver's count for blocks to one
                // neighbour), and this worker keeps no other view of it: the only aliases
                // are the other workers' mappings, idle until the next frame names it.
                let region = unsafe { shm.deref_mut() };
                region[..bytes.len()].copy_from_slice(bytes);
                return Block::Region(Region {
                    key: key(*generation),
                    len: bytes.len(),
                    shm: None,
                });
            }
            self.generation += 1;
            // Room to spare, so that a block that grows a little (a halo, say, whose size
            // changes every step) still fits the region next time: a new region costs a
            // file descriptor on the socket, a mapping on every reader, and page faults.
            let room = (bytes.len() + bytes.len() / 4).next_multiple_of(PAGE);
            let mut shm = IpcSharedMemory::from_byte(0, room);
            // SAFETY: the region was just made; nothing else maps it yet.
            let region = unsafe { shm.deref_mut() };
            region[..bytes.len()].copy_from_slice(bytes);
            let block = Block::Region(Region {
                key: key(self.generation),
                len: bytes.len(),
                shm: Some(shm.clone()),
            });
            *slot = Some(Own::Region {
                shm,
                generation: self.generation,
            });
            return block;
        }
        // Between threads, the count of the `Arc` says for sure whether readers remain.
        if let Some(Own::Local(local)) = slot
            && matches!(local.storage, Storage::Words(_))
            && local.storage.bytes().len() >= bytes.len()
            && let Some(aligned) = Arc::get_mut(local)
        {
            aligned.len = bytes.len();
            aligned.bytes_mut().copy_from_slice(bytes);
            return Block::Local(Arc::clone(local));
        }
        let block = Block::local(bytes);
        if let Block::Local(local) = &block {
            *slot = Some(Own::Local(Arc::clone(local)));
        }
        block
    }

    /// Takes note of a block that arrived: a region seen for the first time is kept.
    pub(crate) fn admit(&mut self, block: &Block) {
        if let Block::Region(Region {
            key,
            shm: Some(shm),
            ..
        }) = block
        {
            self.seen
                .insert((key.origin, key.turn), (key.generation, shm.clone()));
        }
    }

    /// The bytes of a block this worker made or [admitted](Blocks::admit).
    pub(crate) fn bytes<'a>(&'a self, block: &'a Block) -> Result<&'a [u8], BlockError> {
        let (shm, len) = match block {
            Block::Local(local) => return Ok(local.bytes()),
            Block::Held(held) => return Ok(held.data.bytes()),
            Block::Region(Region {
                shm: Some(shm),
                len,
                ..
            }) => (shm, *len),
            Block::Region(Region {
                key,
                len,
                shm: None,
            }) => {
                let own = match self.own.get(usize::from(key.turn)) {
                    Some(Some(Own::Region { shm, generation }))
                        if self.rank == Some(key.origin) =>
                    {
                        Some((*generation, shm))
                    }
                    _ => None,
                };
                // On a ring of one a worker's blocks come back to it, and the one a frame
                // names may be an older generation than its buffer now holds.
                let seen = self
                    .seen
                    .get(&(key.origin, key.turn))
                    .map(|(generation, shm)| (*generation, shm));
                match [own, seen]
                    .into_iter()
                    .flatten()
                    .find(|&(generation, _)| generation == key.generation)
                {
                    Some((_, shm)) => (shm, *len),
                    None => return Err(BlockError::UnknownRegion),
                }
            }
        };
        shm.get(..len).ok_or(BlockError::UnknownRegion)
    }
}

impl fmt::Debug for Blocks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Blocks")
            .field("turn", &self.turn)
            .field("generation", &self.generation)
            .field("seen", &self.seen.len())
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for Block {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Block::Local(local) => write!(f, "Block(local, {} bytes)", local.len),
            Block::Held(held) => write!(f, "Block(held, {} bytes)", held.data.len),
            Block::Region(region) => write!(
                f,
                "Block(region {:?}, {} bytes{})",
                region.key,
                region.len,
                if region.shm.is_some() {
                    ", first pass"
                } else {
                    ""
                }
            ),
        }
    }
}

/// A block as it crosses a socket. One generic enum, so the encoding and the decoding
/// sides cannot disagree on the variants.
#[derive(Serialize, Deserialize)]
enum Wire<Shm, Bytes> {
    Inline(Bytes),
    Region(RegionKey, usize, Option<Shm>),
    /// A worker's held block, lent: its pid, the bytes' address there, and their length.
    Lent(u32, u64, u64),
}

/// Borrowed bytes, encoded as one byte string rather than a sequence of numbers.
struct RawBytes<'a>(&'a [u8]);

impl Serialize for RawBytes<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(self.0)
    }
}

impl<'de> Deserialize<'de> for Aligned {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Aligned;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a block's bytes")
            }
            // The one copy of the receive: from the frame into memory aligned for `T`.
            fn visit_bytes<E: serde::de::Error>(self, bytes: &[u8]) -> Result<Aligned, E> {
                Ok(Aligned::copy_of(bytes))
            }
        }
        deserializer.deserialize_bytes(Visitor)
    }
}

thread_local! {
    /// Whether this thread is encoding a value for an ipc-channel send.
    static IPC_SENDING: Cell<bool> = const { Cell::new(false) };
}

/// Runs `send`, an ipc-channel send, so that shared-memory regions cross as file
/// descriptors. Outside it a region has nowhere to go: ipc-channel would keep it for the
/// next message this thread sends. So a block encoded anywhere else (a user writing a
/// [`Bulk`](crate::Bulk) to a file, say) goes as its bytes.
pub(crate) fn by_ipc<R>(send: impl FnOnce() -> R) -> R {
    with_flag(&IPC_SENDING, send)
}

/// Whether this thread is encoding a value for an ipc-channel send ([`by_ipc`]).
pub(crate) fn ipc_sending() -> bool {
    IPC_SENDING.get()
}

/// Runs `f` with a thread-local `flag` set, and puts it back as it was afterwards, even
/// if `f` panics.
pub(super) fn with_flag<R>(flag: &'static LocalKey<Cell<bool>>, f: impl FnOnce() -> R) -> R {
    struct Reset(&'static LocalKey<Cell<bool>>, bool);
    impl Drop for Reset {
        fn drop(&mut self) {
            self.0.set(self.1);
        }
    }
    let _reset = Reset(flag, flag.replace(true));
    f()
}

impl Serialize for Block {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        // Inside a value being encoded, a block goes beside it (see `payload`).
        if super::payload::encoding() {
            return super::payload::serialize_block(self, serializer);
        }
        match self {
            Block::Local(local) => {
                Wire::<&IpcSharedMemory, _>::Inline(RawBytes(local.bytes())).serialize(serializer)
            }
            Block::Region(region) if IPC_SENDING.get() => {
                Wire::<_, RawBytes<'_>>::Region(region.key, region.len, region.shm.as_ref())
                    .serialize(serializer)
            }
            Block::Held(held) if IPC_SENDING.get() && super::lend::is_lending() => {
                let bytes = held.data.bytes();
                Wire::<&IpcSharedMemory, RawBytes<'_>>::Lent(
                    std::process::id(),
                    bytes.as_ptr() as u64,
                    bytes.len() as u64,
                )
                .serialize(serializer)
            }
            Block::Held(held) if IPC_SENDING.get() => {
                Wire::<_, RawBytes<'_>>::Region(ONE_PASS, held.data.len, Some(held.region()))
                    .serialize(serializer)
            }
            Block::Region(_) | Block::Held(_) => match self.carried_bytes() {
                Some(bytes) => {
                    Wire::<&IpcSharedMemory, _>::Inline(RawBytes(bytes)).serialize(serializer)
                }
                None => Err(serde::ser::Error::custom(
                    "a block that names a region cannot leave the ring",
                )),
            },
        }
    }
}

impl<'de> Deserialize<'de> for Block {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        if super::payload::decoding() {
            return super::payload::deserialize_block(deserializer);
        }
        Ok(
            match Wire::<IpcSharedMemory, Aligned>::deserialize(deserializer)? {
                Wire::Inline(bytes) => Block::Local(Arc::new(bytes)),
                Wire::Region(key, len, shm) => Block::Region(Region { key, len, shm }),
                Wire::Lent(pid, addr, len) => Block::Local(Arc::new(
                    super::lend::read(pid, addr, len).map_err(super::payload::de_error)?,
                )),
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Through a real channel: regions only cross with their file descriptors.
    fn round_trip(block: &Block) -> Block {
        let (tx, rx) = ipc_channel::ipc::channel::<(u8, Block)>().unwrap();
        by_ipc(|| tx.send((1, block.clone()))).unwrap();
        let (tag, back) = rx.recv().unwrap();
        assert_eq!(tag, 1);
        back
    }

    #[test]
    fn local_block_round_trips_f64() {
        let data = [1.5f64, -2.0, 3.25];
        let block = Block::local(bytemuck::cast_slice(&data));
        let blocks = Blocks::default();
        assert_eq!(view::<f64>(blocks.bytes(&block).unwrap()).unwrap(), &data);
    }

    #[test]
    fn between_processes_every_block_but_an_empty_one_lives_in_a_region() {
        let mut blocks = Blocks::default();
        let empty = blocks.outgoing(Transport::Processes, 0, &[]);
        assert!(matches!(empty, Block::Local(_)));
        for len in [1, 16, 100_000] {
            let block = blocks.outgoing(Transport::Processes, 0, &vec![7u8; len]);
            assert!(matches!(block, Block::Region(Region { shm: Some(_), .. })));
            assert_eq!(blocks.bytes(&block).unwrap(), &vec![7u8; len][..]);
        }
        let threads = blocks.outgoing(Transport::Threads, 0, &[7u8; 16]);
        assert!(matches!(threads, Block::Local(_)));
    }

    /// Odd lengths: the decoded copy must still be 16-byte aligned.
    #[test]
    fn inline_block_survives_encoding_and_comes_back_aligned() {
        for len in [0usize, 1, 3, 17, 1000] {
            let data: Vec<u64> = (0..len as u64).map(|i| i * 3 + 1).collect();
            let back = round_trip(&Block::local(bytemuck::cast_slice(&data)));
            let blocks = Blocks::default();
            let bytes = blocks.bytes(&back).unwrap();
            assert_eq!(bytes.as_ptr() as usize % BLOCK_ALIGN, 0);
            assert_eq!(view::<u64>(bytes).unwrap(), &data[..]);
        }
    }

    /// A region crosses once; later frames only name it, and the receiver reads the
    /// origin's new contents through the mapping it kept.
    #[test]
    fn a_region_is_sent_once_and_then_named() {
        let (mut sender, mut receiver) = (Blocks::default(), Blocks::default());
        let data = |round: u64| -> Vec<u64> { (0..20_000).map(|i| i * 7 + round).collect() };
        for round in 0..6 {
            let mine = data(round);
            let block = sender.outgoing(Transport::Processes, 3, bytemuck::cast_slice(&mine));
            let first_pass = matches!(&block, Block::Region(Region { shm: Some(_), .. }));
            assert_eq!(first_pass, round < 2, "round {round}: {block:?}");
            let back = round_trip(&block);
            drop(block);
            receiver.admit(&back);
            let got = view::<u64>(receiver.bytes(&back).unwrap()).unwrap();
            assert_eq!(got, &mine[..], "round {round}");
        }
        // A region nobody announced cannot be read.
        let stranger = Blocks::default();
        let block = sender.outgoing(Transport::Processes, 3, bytemuck::cast_slice(&data(9)));
        assert!(matches!(
            stranger.bytes(&round_trip(&block)),
            Err(BlockError::UnknownRegion)
        ));
    }

    fn first_pass(block: &Block) -> bool {
        matches!(block, Block::Region(Region { shm: Some(_), .. }))
    }

    fn turn(block: &Block) -> u8 {
        match block {
            Block::Region(region) => region.key.turn,
            Block::Local(_) | Block::Held(_) => panic!("not a region"),
        }
    }

    /// The receiver's count decides: a buffer whose last block is not released yet is
    /// never written again; a new region takes its place.
    #[test]
    fn a_buffer_for_one_neighbour_is_rewritten_only_once_its_block_is_released() {
        let mut blocks = Blocks::default();
        let mut send =
            |n: u8, released| blocks.direct(Transport::Processes, 1, 0, &[n; 4000], released);
        // Three blocks before the receiver releases any: three regions.
        let sent: Vec<Block> = (1..=3).map(|n| send(n, 0)).collect();
        assert!(sent.iter().all(first_pass), "{sent:?}");
        assert_eq!(sent.iter().map(turn).collect::<Vec<_>>(), [2, 3, 2]);
        let receiver = Blocks::default();
        for (n, block) in (1..=3).zip(&sent) {
            assert_eq!(receiver.bytes(block).unwrap(), &[n; 4000], "block {n} kept");
        }
        // Block 2 released, not 3: turn 3's buffer is rewritten, turn 2's is not.
        let fourth = send(4, 2);
        assert_eq!((turn(&fourth), first_pass(&fourth)), (3, false));
        let fifth = send(5, 2);
        assert_eq!((turn(&fifth), first_pass(&fifth)), (2, true));
        assert_eq!(receiver.bytes(&sent[2]).unwrap(), &[3; 4000]);
    }

    /// Rotations and each outgoing link have buffers of their own, so on a ring of two
    /// (both neighbours the same rank) no key names two of them.
    #[test]
    fn rotations_and_each_link_have_their_own_keys() {
        let mut blocks = Blocks::default();
        let rotation = blocks.outgoing(Transport::Processes, 0, &[1; 64]);
        let right = blocks.direct(Transport::Processes, 0, 0, &[2; 64], 0);
        let left = blocks.direct(Transport::Processes, 0, 1, &[3; 64], 0);
        assert_eq!([turn(&rotation), turn(&right), turn(&left)], [0, 2, 4]);
    }

    /// Between threads the `Arc` decides: a block still held is never rewritten.
    #[test]
    fn between_threads_a_block_still_held_is_not_rewritten() {
        let mut blocks = Blocks::default();
        let held = blocks.direct(Transport::Threads, 0, 0, &[1; 64], 0);
        let _ = blocks.direct(Transport::Threads, 0, 0, &[2; 64], 0);
        let third = blocks.direct(Transport::Threads, 0, 0, &[3; 64], u64::MAX);
        assert_eq!(blocks.bytes(&held).unwrap(), &[1; 64]);
        assert_eq!(blocks.bytes(&third).unwrap(), &[3; 64]);
    }

    /// A region has a quarter to spare: a block that changes size a little, as a halo
    /// does from step to step, keeps its region; one that outgrows it gets a new one.
    #[test]
    fn a_region_is_kept_while_the_block_fits_it() {
        let mut blocks = Blocks::default();
        let sizes = [
            100_000usize,
            100_000,
            120_000,
            120_000,
            130_000,
            90_000,
            1,
            3,
        ];
        for (k, len) in sizes.into_iter().enumerate() {
            let fill = vec![k as u8 + 1; len];
            let block = blocks.outgoing(Transport::Processes, 0, &fill);
            assert_eq!(blocks.bytes(&block).unwrap(), &fill[..], "block {k}");
        }
        // Both turns made one region each for 100 000 bytes; only 130 000 outgrew one.
        assert_eq!(blocks.generation, 3);
    }

    /// An empty block (a step without migrants) travels inline and leaves its turn's
    /// region kept: the next block that fits it is written there, not into a new region.
    /// Replacing the region made a new one, a file descriptor on the socket and a mapping
    /// on the reader, as often as every other step.
    #[test]
    fn an_empty_block_leaves_its_turns_region_kept() {
        let mut blocks = Blocks::default();
        let sent: [&[u8]; 6] = [&[1; 400], &[2; 400], &[], &[], &[3; 400], &[4; 400]];
        let mut firsts = Vec::new();
        for (released, bytes) in sent.into_iter().enumerate() {
            // The receiver has released every block before this one.
            let block = blocks.direct(Transport::Processes, 0, 0, bytes, released as u64);
            assert_eq!(blocks.bytes(&block).unwrap(), bytes);
            firsts.push(first_pass(&block));
        }
        assert_eq!(firsts, [true, true, false, false, false, false]);
        assert_eq!(blocks.generation, 2);
    }

    /// An empty block is named in three words, as a kept region is, so it goes through the
    /// mailbox rather than the socket; it comes back empty.
    #[test]
    fn an_empty_block_travels_as_words() {
        let words = Block::local(&[])
            .to_words()
            .expect("an empty block has words");
        assert_ne!(words[0] & EMPTY, 0);
        let back = Block::from_words(words);
        assert!(Blocks::default().bytes(&back).unwrap().is_empty());
        // A kept region's words never look empty; a local block with bytes has none.
        let mut blocks = Blocks::default();
        for n in 1..=2 {
            let _ = blocks.outgoing(Transport::Processes, 7, &[n; 64]);
        }
        let kept = blocks.outgoing(Transport::Processes, 7, &[3; 64]);
        let words = kept.to_words().expect("a kept region has words");
        assert_eq!(words[0] & EMPTY, 0);
        assert!(matches!(Block::from_words(words), Block::Region(_)));
        assert!(Block::local(&[1]).to_words().is_none());
    }

    #[test]
    fn empty_block_views_as_empty_slice() {
        let blocks = Blocks::default();
        let block = Block::local(&[]);
        assert!(
            view::<f64>(blocks.bytes(&block).unwrap())
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn ragged_block_is_rejected() {
        assert!(matches!(
            view::<f64>(&[0u8; 12]),
            Err(BlockError::Size {
                bytes: 12,
                elem_size: 8
            })
        ));
    }
}
