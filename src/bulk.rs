//! Bulk arrays inside reports and outputs: `Pod` elements that skip serde.
//!
//! A worker of a big simulation returns its state, tens of megabytes, to the coordinator.
//! Through serde and a socket that is an encoding, a copy into the socket and a copy out,
//! a few bytes at a time. A [`Bulk`] is made once, in memory that can cross as it is:
//!
//! - between processes, an array of up to 64 KiB goes inline, its bytes in the message,
//!   which costs less than making, mapping and faulting in a region for it; a larger one
//!   is held in the worker's memory until it is sent: lent to the coordinator in a report
//!   or an output (the coordinator copies it straight out, see `transport::lend`), and
//!   anywhere else a shared-memory region of its own, which crosses the socket as a file
//!   descriptor (one block of `transport::block`, never kept by the ring);
//! - between threads, an `Arc` of an aligned buffer: values move, nothing is encoded;
//! - between MPI ranks, a raw message behind the value's own, as rotation blocks travel.
//!
//! Encoded anywhere else (postcard into a file, say) a `Bulk` is its bytes. Decoding checks
//! the length and the alignment, whatever arrives: garbage is an error, never a panic.

use std::fmt;
use std::marker::PhantomData;
use std::ops::Deref;

use bytemuck::Pod;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::transport::{Block, BlockError, Transport, check_align, view};

/// An array of `Pod` elements that a stage can put inside what it reports or returns, and
/// that travels without serde: through shared memory between processes, moved between
/// threads. Make one on a worker with [`Ring::bulk`](crate::Ring::bulk); read it as a
/// slice (it derefs to `[T]`).
///
/// ```
/// use ringleader::{Launcher, Transport};
///
/// let states = Launcher::new().workers(2).transport(Transport::Threads).run(|ring| {
///     let state = vec![ring.rank() as f64; 1_000_000];
///     Ok(ring.bulk(&state)?)
/// })?;
/// assert!(states[1].iter().all(|&x| x == 1.0));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Bulk<T: Pod> {
    /// Holds a whole number of `T`s, aligned for `T`: checked when it was made.
    block: Block,
    _elements: PhantomData<fn() -> T>,
}

/// Why bytes cannot be a `Bulk<T>`.
fn describe(err: &BlockError) -> String {
    match err {
        BlockError::Size { bytes, elem_size } => {
            format!(
                "a bulk array of {bytes} bytes is not a whole number of {elem_size}-byte elements"
            )
        }
        BlockError::Alignment(align) => {
            format!("bulk elements may be aligned to at most 16 bytes, not {align}")
        }
        BlockError::UnknownRegion => "a bulk array arrived without its memory".to_owned(),
    }
}

impl<T: Pod> Bulk<T> {
    /// A copy of `data` in the memory `transport` carries best: between processes held
    /// until it is sent, to be lent or copied into a shared-memory region (unless it is 64
    /// KiB or less, and goes inline), an aligned buffer otherwise.
    pub(crate) fn new(transport: Transport, data: &[T]) -> Result<Bulk<T>, BlockError> {
        check_align::<T>()?;
        let bytes = bytemuck::cast_slice(data);
        let block = if transport == Transport::Processes {
            Block::shared(bytes)
        } else {
            Block::local(bytes)
        };
        Bulk::checked(block)
    }

    /// The elements of `data`, which the caller gives up: between processes a copy in a
    /// shared-memory region (as [`Bulk::new`]); otherwise the vector itself, moved.
    pub(crate) fn adopted(transport: Transport, data: Vec<T>) -> Result<Bulk<T>, BlockError>
    where
        T: Send + Sync,
    {
        check_align::<T>()?;
        let shared = transport == Transport::Processes && !data.is_empty();
        Bulk::checked(Block::adopted(shared, data))
    }

    /// `len` elements, zeroed and then written in place by `fill`, in the memory
    /// `transport` carries best (as [`Bulk::new`]).
    pub(crate) fn filled(
        transport: Transport,
        len: usize,
        fill: impl FnOnce(&mut [T]),
    ) -> Result<Bulk<T>, BlockError> {
        check_align::<T>()?;
        let bytes = len.checked_mul(size_of::<T>()).ok_or(BlockError::Size {
            bytes: usize::MAX,
            elem_size: size_of::<T>(),
        })?;
        let block = Block::filled(transport == Transport::Processes, bytes, |bytes| {
            // Regions are page-aligned and local buffers 16-byte aligned, and `T` needs no
            // more (checked above): the cast cannot fail.
            if let Ok(elements) = bytemuck::try_cast_slice_mut(bytes) {
                fill(elements);
            }
        });
        Bulk::checked(block)
    }

    /// A bulk array over `block`, if its bytes are a whole number of aligned `T`s.
    fn checked(block: Block) -> Result<Bulk<T>, BlockError> {
        let bytes = block.carried_bytes().ok_or(BlockError::UnknownRegion)?;
        view::<T>(bytes)?;
        Ok(Bulk {
            block,
            _elements: PhantomData,
        })
    }

    /// The elements.
    pub fn as_slice(&self) -> &[T] {
        // Checked when the array was made, so neither step can fail.
        let bytes = self.block.carried_bytes().unwrap_or_default();
        view::<T>(bytes).unwrap_or_default()
    }
}

impl<T: Pod> Deref for Bulk<T> {
    type Target = [T];

    fn deref(&self) -> &[T] {
        self.as_slice()
    }
}

impl<T: Pod> AsRef<[T]> for Bulk<T> {
    fn as_ref(&self) -> &[T] {
        self.as_slice()
    }
}

/// A clone shares the bytes: another reference to the buffer between threads, another
/// mapping of the region between processes. Nothing is copied.
impl<T: Pod> Clone for Bulk<T> {
    fn clone(&self) -> Self {
        Bulk {
            block: self.block.clone(),
            _elements: PhantomData,
        }
    }
}

impl<T: Pod> fmt::Debug for Bulk<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Bulk")
            .field("len", &self.as_slice().len())
            .field("shared_memory", &self.block.is_shared())
            .finish()
    }
}

impl<T: Pod> Serialize for Bulk<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.block.serialize(serializer)
    }
}

impl<'de, T: Pod> Deserialize<'de> for Bulk<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let block = Block::deserialize(deserializer)?;
        Bulk::checked(block).map_err(|e| crate::transport::de_error(describe(&e)))
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::transport::{INLINE_BULK, by_ipc};

    /// Through a real ipc channel, as between processes.
    fn through_ipc<V: Serialize + for<'de> Deserialize<'de>>(value: V) -> V {
        let (tx, rx) = ipc_channel::ipc::channel::<V>().unwrap();
        by_ipc(|| tx.send(value)).unwrap();
        rx.recv().unwrap()
    }

    #[test]
    fn between_processes_a_bulk_array_crosses_as_shared_memory() {
        let data: Vec<f64> = (0..100_000).map(|i| f64::from(i) * 0.5).collect();
        let bulk = Bulk::new(Transport::Processes, &data).unwrap();
        assert!(bulk.block.is_shared());
        let back = through_ipc((7u8, bulk));
        assert_eq!(back.0, 7);
        assert!(back.1.block.is_shared(), "{:?}", back.1);
        assert_eq!(&back.1[..], &data[..]);
    }

    /// Up to 64 KiB an array travels inline between processes, its bytes in the message:
    /// cheaper than a region of its own, made, mapped and faulted in for each array. One
    /// byte more and it is a region.
    #[test]
    fn a_small_array_crosses_inline_between_processes() {
        let elements = INLINE_BULK / size_of::<u64>();
        let small: Vec<u64> = (0..elements as u64).collect();
        let bulk = Bulk::new(Transport::Processes, &small).unwrap();
        assert!(!bulk.block.is_shared());
        let back = through_ipc(bulk);
        assert!(!back.block.is_shared());
        assert_eq!(&back[..], &small[..]);
        let filled = Bulk::<u64>::filled(Transport::Processes, elements, |x| x.fill(3)).unwrap();
        assert!(!filled.block.is_shared());
        assert_eq!(&through_ipc(filled)[..], &vec![3; elements][..]);
        let larger = Bulk::new(Transport::Processes, &[0u8; INLINE_BULK + 1]).unwrap();
        assert!(larger.block.is_shared());
        let filled = Bulk::<u8>::filled(Transport::Processes, INLINE_BULK + 1, |_| {}).unwrap();
        assert!(filled.block.is_shared());
    }

    #[test]
    fn empty_and_thread_arrays_are_plain_memory_and_still_cross() {
        for (transport, data) in [
            (Transport::Processes, Vec::new()),
            (Transport::Threads, vec![1u32, 2, 3]),
        ] {
            let bulk = Bulk::new(transport, &data).unwrap();
            assert!(!bulk.block.is_shared());
            assert_eq!(&through_ipc(bulk)[..], &data[..]);
        }
    }

    /// A vector handed over between threads is the array itself, not a copy of it, whatever
    /// the alignment of its elements; between processes it is held as it is until it is
    /// sent, and crosses as shared memory (other than as a worker's output, see
    /// `transport::lend`). Both read back the same, and cross a channel.
    #[test]
    fn a_vector_handed_over_is_the_array_between_threads_and_a_region_between_processes() {
        let data: Vec<[u32; 3]> = (0..50_000).map(|i| [i, i * 2, i * 3]).collect();
        let at = data.as_ptr();
        let moved = Bulk::adopted(Transport::Threads, data.clone()).unwrap();
        assert!(!moved.block.is_shared());
        assert_eq!(&moved[..], &data[..]);
        let kept = Bulk::adopted(Transport::Threads, data).unwrap();
        assert_eq!(kept.as_ptr(), at, "the vector was copied");
        let vector = moved.to_vec();
        let at = vector.as_ptr();
        let held = Bulk::adopted(Transport::Processes, vector).unwrap();
        assert_eq!(
            held.as_ptr(),
            at,
            "the vector was copied before it was sent"
        );
        let arrived = through_ipc(held);
        assert!(arrived.block.is_shared(), "{arrived:?}");
        assert_eq!(&arrived[..], &kept[..]);
        // Between threads an array never crosses a socket; through one it goes as its
        // bytes, so a small one here (a big one would fill the socket before the read).
        let small = Bulk::adopted(Transport::Threads, vec![[1u32, 2, 3]]).unwrap();
        assert_eq!(&through_ipc(small)[..], &[[1, 2, 3]]);
        let empty = Bulk::adopted(Transport::Processes, Vec::<u64>::new()).unwrap();
        assert!(!empty.block.is_shared() && empty.is_empty());
    }

    /// Outside an ipc send a region would be left behind for the next message: a bulk
    /// array written anywhere else goes as its bytes, and reads back.
    #[test]
    fn outside_a_send_a_bulk_array_is_its_bytes() {
        let data = [1.5f64, -2.0, 3.25];
        let bulk = Bulk::new(Transport::Processes, &data).unwrap();
        let bytes = postcard::to_allocvec(&bulk).unwrap();
        assert!(bytes.len() > 3 * 8, "the bytes themselves: {bytes:?}");
        let back: Bulk<f64> = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(&back[..], &data[..]);
        assert!(!back.block.is_shared());
    }

    #[test]
    fn bytes_that_are_no_whole_number_of_elements_are_an_error() {
        let bytes =
            postcard::to_allocvec(&Bulk::new(Transport::Threads, &[0u32; 3]).unwrap()).unwrap();
        let err = postcard::from_bytes::<Bulk<f64>>(&bytes).unwrap_err();
        assert!(matches!(err, postcard::Error::SerdeDeCustom), "{err:?}");
        assert!(postcard::from_bytes::<Bulk<u32>>(&bytes).is_ok());
    }

    /// A region that claims more bytes than it has, through a real channel: a `Bulk`
    /// encodes as its block, so a lying block reads as a lying bulk array.
    #[test]
    fn a_region_shorter_than_it_claims_is_an_error() {
        let (tx, rx) = ipc_channel::ipc::channel::<Block>().unwrap();
        let region =
            crate::transport::Blocks::default().outgoing(Transport::Processes, 0, &[0; 64]);
        by_ipc(|| tx.send(region.claiming(1 << 40))).unwrap();
        let mut set = ipc_channel::ipc::IpcReceiverSet::new().unwrap();
        set.add(rx).unwrap();
        let message = match set.select().unwrap().pop() {
            Some(ipc_channel::ipc::IpcSelectionResult::MessageReceived(_, message)) => message,
            other => panic!("no message: {other:?}"),
        };
        assert!(message.to::<Bulk<u64>>().is_err());
        // postcard keeps only that decoding failed; what failed is kept beside it.
        let detail = crate::transport::take_detail()
            .map(|d| d.message)
            .unwrap_or_default();
        assert!(detail.contains("arrived without its memory"), "{detail}");
    }

    proptest! {
        /// Whatever bytes arrive, decoding gives an array or an error, never a panic.
        #[test]
        fn garbage_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
            if let Ok(bulk) = postcard::from_bytes::<Bulk<f64>>(&bytes) {
                prop_assert_eq!(bulk.as_slice().len() * 8, bulk.block.carried_bytes().unwrap().len());
            }
        }
    }
}
