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
//! now: it has no region to live in.
//!
//! A worker writes its own blocks into two buffers that take turns (see [`Blocks`]), so
//! rotating blocks of one size allocates nothing after the first two rotations. Readers
//! only ever see a block as `&[T]`: no two workers write the same memory.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use bytemuck::Pod;
use ipc_channel::ipc::IpcSharedMemory;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::Transport;

/// The alignment every block guarantees to its readers.
pub(crate) const BLOCK_ALIGN: usize = 16;

/// A block on its way round the ring.
#[derive(Clone)]
pub(crate) enum Block {
    /// Bytes in this process: every block between threads, and small blocks that arrived
    /// inline from another process.
    Local(Arc<Aligned>),
    /// A block in a shared-memory region of its origin.
    Region(Region),
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

/// A byte buffer aligned to [`BLOCK_ALIGN`].
pub(crate) struct Aligned {
    words: Vec<u128>,
    len: usize,
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

    /// A block of `len` bytes written in place by `fill`, so a received MPI message lands
    /// in aligned memory without a second copy.
    #[cfg(feature = "mpi")]
    pub(crate) fn filled_by(len: usize, fill: impl FnOnce(&mut [u8])) -> Block {
        let mut words = vec![0u128; len.div_ceil(BLOCK_ALIGN)];
        fill(&mut bytemuck::cast_slice_mut::<u128, u8>(&mut words)[..len]);
        Block::Local(Arc::new(Aligned { words, len }))
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
        match self {
            Block::Local(local) => local.bytes(),
            Block::Region(Region { shm, len, .. }) => shm
                .as_ref()
                .and_then(|shm| shm.get(..*len))
                .unwrap_or_default(),
        }
    }
}

impl Block {
    /// A block that names a region every rank already has, as three words: small enough
    /// for a mailbox slot in shared memory (see `link`). `None` for any other block.
    pub(crate) fn to_words(&self) -> Option<[u64; 3]> {
        match self {
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
    fn bytes(&self) -> &[u8] {
        &bytemuck::cast_slice::<u128, u8>(&self.words)[..self.len]
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        &mut bytemuck::cast_slice_mut::<u128, u8>(&mut self.words)[..self.len]
    }

    fn copy_of(bytes: &[u8]) -> Aligned {
        let mut words = vec![0u128; bytes.len().div_ceil(BLOCK_ALIGN)];
        bytemuck::cast_slice_mut::<u128, u8>(&mut words)[..bytes.len()].copy_from_slice(bytes);
        Aligned {
            words,
            len: bytes.len(),
        }
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

/// A worker's blocks: the two buffers its own blocks are written into, and the regions of
/// the other workers it has been sent.
///
/// Two buffers taking turns are enough: rotations are collective, so by the end of my
/// rotation `k + 1` I have received the block every other rank injected in its rotation
/// `k + 1`, which it did only after its rotation `k`, and with it every read of my
/// rotation-`k` block, was over. So in rotation `k + 2` nobody reads the buffer I used in
/// rotation `k` any more, and I may write it again.
#[derive(Default)]
pub(crate) struct Blocks {
    own: [Option<Own>; 2],
    /// The rank whose blocks `own` holds.
    rank: Option<u32>,
    turn: u8,
    generation: u64,
    /// Regions of other workers, by origin and turn, with their generation.
    seen: HashMap<(u32, u8), (u64, IpcSharedMemory)>,
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
        self.rank = Some(origin as u32);
        let slot = &mut self.own[usize::from(turn)];
        // A frame that carries a region is small, far below half the socket buffer: a send
        // never waits unless its link already holds another, and no rotation has enough
        // in flight for that, so sends cannot deadlock.
        if transport == Transport::Processes && !bytes.is_empty() {
            let key = |generation| RegionKey {
                origin: origin as u32,
                turn,
                generation,
            };
            if let Some(Own::Region { shm, generation }) = slot
                && shm.len() == bytes.len()
            {
                // SAFETY: per the argument on `Blocks`, no other worker reads this region
                // any more, and this worker keeps no other view of it: the only aliases
                // are the other workers' mappings, idle until this rotation's frame.
                unsafe { shm.deref_mut() }.copy_from_slice(bytes);
                return Block::Region(Region {
                    key: key(*generation),
                    len: bytes.len(),
                    shm: None,
                });
            }
            self.generation += 1;
            let shm = IpcSharedMemory::from_bytes(bytes);
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
            && local.len == bytes.len()
            && let Some(aligned) = Arc::get_mut(local)
        {
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
                let known = if self.rank == Some(key.origin) {
                    match &self.own[usize::from(key.turn)] {
                        Some(Own::Region { shm, generation }) => Some((*generation, shm)),
                        _ => None,
                    }
                } else {
                    self.seen
                        .get(&(key.origin, key.turn))
                        .map(|(generation, shm)| (*generation, shm))
                };
                match known {
                    Some((generation, shm)) if generation == key.generation => (shm, *len),
                    _ => return Err(BlockError::UnknownRegion),
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

impl Serialize for Block {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        // Between MPI ranks a block goes out of band, as a raw message behind its frame.
        #[cfg(feature = "mpi")]
        if super::mpi::carrying_blocks() {
            return super::mpi::serialize_block(self, serializer);
        }
        match self {
            Block::Local(local) => {
                Wire::<&IpcSharedMemory, _>::Inline(RawBytes(local.bytes())).serialize(serializer)
            }
            Block::Region(region) => {
                Wire::<_, RawBytes<'_>>::Region(region.key, region.len, region.shm.as_ref())
                    .serialize(serializer)
            }
        }
    }
}

impl<'de> Deserialize<'de> for Block {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[cfg(feature = "mpi")]
        if super::mpi::carrying_blocks() {
            return super::mpi::deserialize_block(deserializer);
        }
        Ok(
            match Wire::<IpcSharedMemory, Aligned>::deserialize(deserializer)? {
                Wire::Inline(bytes) => Block::Local(Arc::new(bytes)),
                Wire::Region(key, len, shm) => Block::Region(Region { key, len, shm }),
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
        tx.send((1, block.clone())).unwrap();
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

    #[test]
    fn a_new_size_makes_a_new_region() {
        let mut blocks = Blocks::default();
        for len in [100_000usize, 100_000, 120_000, 120_000, 120_000] {
            let block = blocks.outgoing(Transport::Processes, 0, &vec![1u8; len]);
            let bytes = blocks.bytes(&block).unwrap();
            assert_eq!(bytes.len(), len);
        }
        assert_eq!(blocks.generation, 4);
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
