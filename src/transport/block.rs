//! Bulk blocks: the payload of a ring rotation.
//!
//! Between processes, a small block travels inline: its bytes ride in the frame, and the
//! receiver copies them into an aligned buffer. A large block is a shared-memory region (a
//! memfd) whose file descriptor crosses the socket, so a send never blocks on the socket
//! buffer however large the block is, and forwarding it around the ring copies nothing.
//! Making a region costs a few system calls and a page fault per page, about 16 µs even for
//! a tiny block, which is why small blocks do not use one; [`INLINE_MAX`] is where the two
//! cost the same on the bench machine. Between threads a block is an `Arc` of an aligned
//! buffer. Either way a block is immutable once made: no two workers ever write the same
//! memory.

use std::fmt;
use std::sync::Arc;

use bytemuck::Pod;
use ipc_channel::ipc::IpcSharedMemory;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::Transport;

/// The alignment every block guarantees to its readers.
pub(crate) const BLOCK_ALIGN: usize = 16;

/// The largest block that travels inline between processes. It must stay well below half
/// the socket buffer (about 200 KiB on Linux): then a rank's send never waits unless its
/// link already holds another block, and a ring where every link holds two blocks would
/// need more blocks than a rotation ever has in flight, so sends cannot deadlock.
pub(crate) const INLINE_MAX: usize = 64 << 10;

#[derive(Clone)]
pub(crate) enum Block {
    /// A shared-memory region, between processes.
    Shm(IpcSharedMemory),
    /// Bytes in this process: every block between threads, and small blocks that arrived
    /// inline from another process.
    Local(Arc<Aligned>),
}

/// A byte buffer aligned to [`BLOCK_ALIGN`].
pub(crate) struct Aligned {
    words: Vec<u128>,
    len: usize,
}

/// Why a block cannot be read as a slice of `T`.
#[derive(Debug)]
pub(crate) enum BlockError {
    Size { bytes: usize, elem_size: usize },
    Alignment(usize),
}

impl Block {
    /// Copies `bytes` into a new block for the given transport.
    pub(crate) fn new(transport: Transport, bytes: &[u8]) -> Block {
        match transport {
            Transport::Processes if bytes.len() > INLINE_MAX => {
                Block::Shm(IpcSharedMemory::from_bytes(bytes))
            }
            _ => Block::Local(Arc::new(Aligned::copy_of(bytes))),
        }
    }

    pub(crate) fn bytes(&self) -> &[u8] {
        match self {
            Block::Shm(shm) => shm,
            Block::Local(local) => &bytemuck::cast_slice::<u128, u8>(&local.words)[..local.len],
        }
    }

    /// Reads the block as a slice of `T`, without copying.
    pub(crate) fn view<T: Pod>(&self) -> Result<&[T], BlockError> {
        check_align::<T>()?;
        let bytes = self.bytes();
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
}

impl Aligned {
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

/// Where a worker's own blocks come from. [`Ring::rotate`](crate::Ring::rotate) takes each
/// of its blocks here, so a worker that rotates blocks of one size over and over writes
/// into the same two buffers every time instead of new ones: no allocation, and for shared
/// memory no new region, no zeroed pages and no page faults.
///
/// Two buffers take turns, and that is enough: rotations are collective, so by the end of
/// my rotation `k + 1` I have received the block every other rank injected in its rotation
/// `k + 1`, which it did only after its rotation `k` (and with it every read of my
/// rotation-`k` block) was over. So in rotation `k + 2` nobody reads the buffer I used in
/// rotation `k` any more.
#[derive(Default)]
pub(crate) struct Outbox {
    buffers: [Option<Block>; 2],
    turn: usize,
}

impl Outbox {
    /// A block holding a copy of `bytes`, in the buffer whose turn it is when that buffer
    /// has the right size and kind.
    pub(crate) fn block(&mut self, transport: Transport, bytes: &[u8]) -> Block {
        let slot = &mut self.buffers[self.turn];
        self.turn ^= 1;
        let reused = match slot {
            Some(Block::Shm(shm))
                if transport == Transport::Processes
                    && shm.len() == bytes.len()
                    && bytes.len() > INLINE_MAX =>
            {
                // SAFETY: per the argument on `Outbox`, no other process reads this region
                // any more, and every `Block` this process made from it has been sent or
                // dropped, so this is the only view of it.
                unsafe { shm.deref_mut() }.copy_from_slice(bytes);
                true
            }
            // Between threads the count of the `Arc` tells for sure.
            Some(Block::Local(local)) if local.len == bytes.len() => match Arc::get_mut(local) {
                Some(aligned) => {
                    aligned.bytes_mut().copy_from_slice(bytes);
                    true
                }
                None => false,
            },
            _ => false,
        };
        if !reused {
            *slot = Some(Block::new(transport, bytes));
        }
        slot.clone().unwrap_or_else(|| Block::new(transport, bytes))
    }
}

impl fmt::Debug for Outbox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Outbox")
            .field("buffers", &self.buffers)
            .field("turn", &self.turn)
            .finish()
    }
}

/// Blocks promise [`BLOCK_ALIGN`]; a type that needs more cannot be viewed in place.
pub(crate) fn check_align<T>() -> Result<(), BlockError> {
    if align_of::<T>() > BLOCK_ALIGN {
        Err(BlockError::Alignment(align_of::<T>()))
    } else {
        Ok(())
    }
}

impl fmt::Debug for Block {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self {
            Block::Shm(_) => "shared memory",
            Block::Local(_) => "local",
        };
        write!(f, "Block({kind}, {} bytes)", self.bytes().len())
    }
}

/// A block as it crosses a socket. One generic enum, so the encoding and the decoding
/// sides cannot disagree on the variants.
#[derive(Serialize, Deserialize)]
enum Wire<Shm, Bytes> {
    Shm(Shm),
    Inline(Bytes),
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
        match self {
            Block::Shm(shm) => Wire::<_, RawBytes<'_>>::Shm(shm).serialize(serializer),
            Block::Local(_) => {
                Wire::<&IpcSharedMemory, _>::Inline(RawBytes(self.bytes())).serialize(serializer)
            }
        }
    }
}

impl<'de> Deserialize<'de> for Block {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Ok(
            match Wire::<IpcSharedMemory, Aligned>::deserialize(deserializer)? {
                Wire::Shm(shm) => Block::Shm(shm),
                Wire::Inline(bytes) => Block::Local(Arc::new(bytes)),
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_block_round_trips_f64() {
        let data = [1.5f64, -2.0, 3.25];
        let block = Block::new(Transport::Threads, bytemuck::cast_slice(&data));
        assert_eq!(block.view::<f64>().unwrap(), &data);
    }

    #[test]
    fn small_blocks_travel_inline_and_large_ones_as_shared_memory() {
        let small = Block::new(Transport::Processes, &[7u8; INLINE_MAX]);
        assert!(matches!(small, Block::Local(_)));
        let large = Block::new(Transport::Processes, &[7u8; INLINE_MAX + 1]);
        assert!(matches!(large, Block::Shm(_)));
    }

    /// Odd lengths and offsets: the decoded copy must still be 16-byte aligned.
    #[test]
    fn inline_block_survives_encoding_and_comes_back_aligned() {
        for len in [0usize, 1, 3, 17, 1000] {
            let data: Vec<u64> = (0..len as u64).map(|i| i * 3 + 1).collect();
            let block = Block::new(Transport::Processes, bytemuck::cast_slice(&data));
            let mut frame = postcard::to_allocvec(&(1u8, &block)).unwrap();
            frame.push(0);
            let (tag, back): (u8, Block) = postcard::from_bytes(&frame).unwrap();
            assert_eq!(tag, 1);
            assert_eq!(back.bytes().as_ptr() as usize % BLOCK_ALIGN, 0);
            assert_eq!(back.view::<u64>().unwrap(), &data[..]);
        }
    }

    #[test]
    fn shm_block_round_trips_f64() {
        let data: Vec<f64> = (0..20_000).map(|i| i as f64 * 0.5).collect();
        let block = Block::new(Transport::Processes, bytemuck::cast_slice(&data));
        assert!(matches!(block, Block::Shm(_)));
        assert_eq!(block.view::<f64>().unwrap(), &data[..]);
    }

    #[test]
    fn empty_block_views_as_empty_slice() {
        for transport in [Transport::Processes, Transport::Threads] {
            let block = Block::new(transport, &[]);
            assert!(block.view::<f64>().unwrap().is_empty());
        }
    }

    #[test]
    fn ragged_block_is_rejected() {
        let block = Block::new(Transport::Threads, &[0u8; 12]);
        assert!(matches!(
            block.view::<f64>(),
            Err(BlockError::Size {
                bytes: 12,
                elem_size: 8
            })
        ));
    }
}
