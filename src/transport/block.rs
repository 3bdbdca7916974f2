//! Bulk blocks: the payload of a ring rotation.
//!
//! Between processes a block is a sealed shared-memory region (a memfd) whose file
//! descriptor crosses the socket, so a send never blocks on the socket buffer however large
//! the block is, and forwarding a block around the ring copies nothing. Between threads it
//! is an `Arc` of an aligned buffer. Either way a block is immutable once made: no two
//! workers ever write the same memory.

use std::fmt;
use std::sync::Arc;

use bytemuck::Pod;
use ipc_channel::ipc::IpcSharedMemory;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::Transport;

/// The alignment every block guarantees to its readers.
pub(crate) const BLOCK_ALIGN: usize = 16;

#[derive(Clone)]
pub(crate) enum Block {
    Shm(IpcSharedMemory),
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
            Transport::Processes => Block::Shm(IpcSharedMemory::from_bytes(bytes)),
            Transport::Threads => {
                let mut words = vec![0u128; bytes.len().div_ceil(BLOCK_ALIGN)];
                bytemuck::cast_slice_mut::<u128, u8>(&mut words)[..bytes.len()]
                    .copy_from_slice(bytes);
                Block::Local(Arc::new(Aligned {
                    words,
                    len: bytes.len(),
                }))
            }
            // Between ranks a block travels as one raw MPI message; in memory it is an
            // aligned buffer, as between threads.
            #[cfg(feature = "mpi")]
            Transport::Mpi => super::mpi::recycled_block(bytes.len(), |into| {
                into.copy_from_slice(bytes);
            }),
        }
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
            Block::Local(local) if local.len == len => Arc::get_mut(local).map(|aligned| {
                &mut bytemuck::cast_slice_mut::<u128, u8>(&mut aligned.words)[..len]
            }),
            _ => None,
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
            Block::Shm(_) => "shm",
            Block::Local(_) => "local",
        };
        write!(f, "Block({kind}, {} bytes)", self.bytes().len())
    }
}

impl Serialize for Block {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Block::Shm(shm) => shm.serialize(serializer),
            #[cfg(feature = "mpi")]
            Block::Local(_) if super::mpi::carrying_blocks() => {
                super::mpi::serialize_block(self, serializer)
            }
            Block::Local(_) => Err(serde::ser::Error::custom(
                "an in-process block cannot cross a process boundary",
            )),
        }
    }
}

impl<'de> Deserialize<'de> for Block {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[cfg(feature = "mpi")]
        if super::mpi::carrying_blocks() {
            return super::mpi::deserialize_block(deserializer);
        }
        IpcSharedMemory::deserialize(deserializer).map(Block::Shm)
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
    fn shm_block_round_trips_f64() {
        let data: Vec<f64> = (0..1000).map(|i| i as f64 * 0.5).collect();
        let block = Block::new(Transport::Processes, bytemuck::cast_slice(&data));
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
