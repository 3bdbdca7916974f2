//! A value on its way: postcard bytes, with its bulk blocks beside them.
//!
//! Every value a stage sends (a neighbour message, a report, an answer, an output) becomes
//! a [`Payload`] before it enters a channel, whatever its type: that is what lets `Ring`'s
//! methods, and the collectives, take any serde type. The blocks a value holds (a
//! [`Bulk`](crate::Bulk) array) are set aside while it is encoded, and the bytes name them
//! by index, as ipc-channel does with the shared memory it carries. So a block never goes
//! through postcard: between threads it moves as it is, between processes it crosses as
//! shared memory, between MPI ranks as a raw message of its own.

use std::cell::RefCell;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::Block;

/// An encoded value and the blocks it holds.
#[derive(Debug, Clone)]
pub(crate) struct Payload {
    pub(crate) bytes: Vec<u8>,
    pub(crate) blocks: Vec<Block>,
}

impl Payload {
    /// About how many bytes this payload puts on a socket between processes: its encoded
    /// bytes, unless they go in a region of their own, and its blocks that go inline.
    pub(crate) fn socket_bytes(&self) -> usize {
        let bytes = if self.bytes.len() > SPILL_FROM {
            0
        } else {
            self.bytes.len()
        };
        bytes + self.blocks.iter().map(Block::inline_len).sum::<usize>()
    }
}

/// Encoded bytes above this many cross a socket between processes in a shared-memory
/// region of their own ([`Block::spilled`]), as a bulk array above it does: ipc-channel
/// sends a message larger than its socket holds only as the receiver takes it, so a ring in
/// which every worker sent a large value before it received (an `all_gather`, say) would
/// wait for ever.
pub(crate) const SPILL_FROM: usize = super::INLINE_BULK;

/// A payload as it crosses a socket: its bytes inline, or in a region of their own.
#[derive(Serialize, Deserialize)]
enum Wire<Bytes, Blocks, Spill> {
    Inline(Bytes, Blocks),
    Spilled(Blocks, Spill),
}

impl Serialize for Payload {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if super::ipc_sending() && self.bytes.len() > SPILL_FROM {
            let spill = Block::spilled(&self.bytes);
            return Wire::<ByteStr<'_>, _, _>::Spilled(&self.blocks, &spill).serialize(serializer);
        }
        Wire::<_, _, &Block>::Inline(ByteStr(&self.bytes), &self.blocks).serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Payload {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        match Wire::<ByteBuf, Vec<Block>, Block>::deserialize(deserializer)? {
            Wire::Inline(ByteBuf(bytes), blocks) => Ok(Payload { bytes, blocks }),
            Wire::Spilled(blocks, spill) => {
                let bytes = spill
                    .carried_bytes()
                    .ok_or_else(|| de_error("a value's bytes came without their region"))?
                    .to_vec();
                Ok(Payload { bytes, blocks })
            }
        }
    }
}

/// Borrowed bytes, encoded as one byte string rather than a sequence of numbers.
struct ByteStr<'a>(&'a [u8]);

impl Serialize for ByteStr<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(self.0)
    }
}

/// Owned bytes, decoded from one byte string.
struct ByteBuf(Vec<u8>);

impl<'de> Deserialize<'de> for ByteBuf {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        serde_bytes_vec::deserialize(deserializer).map(ByteBuf)
    }
}

thread_local! {
    /// While a value is encoded: the blocks it holds, in order.
    static OUTBOUND: RefCell<Option<Vec<Block>>> = const { RefCell::new(None) };
    /// While a value is decoded: its blocks, taken as the bytes name them.
    static INBOUND: RefCell<Option<Vec<Option<Block>>>> = const { RefCell::new(None) };
    /// What the last decoding error raised here with [`de_error`] said.
    static DETAIL: RefCell<Option<Detail>> = const { RefCell::new(None) };
}

/// What a decoding error of our own said. postcard keeps only that a custom error
/// happened, so [`de_error`] keeps this beside it for [`take_detail`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Detail {
    pub(crate) message: String,
    /// The error was a lent block whose lender had already ended (see `lend`): its exit
    /// status, which the coordinator reads next, says more.
    pub(crate) lender_gone: bool,
}

impl From<String> for Detail {
    fn from(message: String) -> Detail {
        Detail {
            message,
            lender_gone: false,
        }
    }
}

impl From<&str> for Detail {
    fn from(message: &str) -> Detail {
        Detail::from(message.to_owned())
    }
}

/// A decoding error that says `detail`, kept for [`take_detail`] too.
pub(crate) fn de_error<E: serde::de::Error>(detail: impl Into<Detail>) -> E {
    let detail = detail.into();
    let error = E::custom(&detail.message);
    DETAIL.with(|kept| *kept.borrow_mut() = Some(detail));
    error
}

/// What the last decoding error [`de_error`] raised on this thread said, if it has not
/// been taken; forgets it.
pub(crate) fn take_detail() -> Option<Detail> {
    DETAIL.with(|kept| kept.borrow_mut().take())
}

/// Encodes `value`, setting its blocks aside.
///
/// # Errors
///
/// postcard's message for a value it cannot encode.
pub(crate) fn encode<T: Serialize>(value: &T) -> Result<Payload, String> {
    let outer = OUTBOUND.with(|out| out.borrow_mut().replace(Vec::new()));
    // postcard keeps no message of a value's own serializer: name the type at least.
    let bytes =
        postcard::to_allocvec(value).map_err(|e| format!("{}: {e}", std::any::type_name::<T>()));
    let blocks = OUTBOUND.with(|out| std::mem::replace(&mut *out.borrow_mut(), outer));
    Ok(Payload {
        bytes: bytes?,
        blocks: blocks.unwrap_or_default(),
    })
}

/// Decodes a payload as a `T`.
///
/// # Errors
///
/// A message for bytes that are not a `T` (bytes left over included), or that name a block
/// the payload lacks.
pub(crate) fn decode<T: DeserializeOwned>(payload: Payload) -> Result<T, String> {
    let blocks = payload.blocks.into_iter().map(Some).collect();
    let outer = INBOUND.with(|inb| inb.borrow_mut().replace(blocks));
    take_detail();
    let value = match postcard::take_from_bytes(&payload.bytes) {
        Ok((value, [])) => Ok(value),
        Ok((_, rest)) => Err(format!("{} bytes left over after the value", rest.len())),
        Err(e) => Err(take_detail().map_or_else(|| e.to_string(), |d| d.message)),
    };
    INBOUND.with(|inb| *inb.borrow_mut() = outer);
    value
}

/// Whether this thread is encoding a value, so that a block goes aside.
pub(crate) fn encoding() -> bool {
    OUTBOUND.with(|out| out.borrow().is_some())
}

/// Whether this thread is decoding a value, so that a block comes from beside it.
pub(crate) fn decoding() -> bool {
    INBOUND.with(|inb| inb.borrow().is_some())
}

/// Sets a block aside and writes its index.
pub(crate) fn serialize_block<S: Serializer>(
    block: &Block,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    let index = OUTBOUND.with(|out| {
        out.borrow_mut().as_mut().map(|blocks| {
            blocks.push(block.clone());
            blocks.len() - 1
        })
    });
    match index.and_then(|i| u32::try_from(i).ok()) {
        Some(index) => serializer.serialize_u32(index),
        None => Err(serde::ser::Error::custom("a block outside a payload")),
    }
}

/// Takes the block an index names from those beside the value.
pub(crate) fn deserialize_block<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Block, D::Error> {
    let index = u32::deserialize(deserializer)? as usize;
    INBOUND
        .with(|inb| {
            inb.borrow_mut()
                .as_mut()
                .and_then(|blocks| blocks.get_mut(index))
                .and_then(Option::take)
        })
        .ok_or_else(|| de_error(format!("block {index} of a value is missing")))
}

/// A `Vec<u8>` read from one byte string rather than a sequence of numbers.
mod serde_bytes_vec {
    use serde::Deserializer;

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Vec<u8>, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Vec<u8>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("bytes")
            }
            fn visit_bytes<E: serde::de::Error>(self, bytes: &[u8]) -> Result<Vec<u8>, E> {
                Ok(bytes.to_vec())
            }
            fn visit_byte_buf<E: serde::de::Error>(self, bytes: Vec<u8>) -> Result<Vec<u8>, E> {
                Ok(bytes)
            }
        }
        deserializer.deserialize_byte_buf(Visitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Bulk;
    use crate::transport::Transport;

    /// A value whose own serializer fails is named by its type: postcard keeps no message.
    #[test]
    fn a_value_that_cannot_be_encoded_is_named_by_its_type() {
        struct Refuses;
        impl Serialize for Refuses {
            fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
                Err(serde::ser::Error::custom("no"))
            }
        }
        let err = encode(&Refuses).map(|_| ()).unwrap_err();
        assert!(
            err.starts_with("ringleader::transport::payload::tests::"),
            "{err}"
        );
        assert!(err.contains("Refuses: "), "{err}");
    }

    #[test]
    fn a_value_round_trips_with_its_blocks_beside_it() {
        let bulk = Bulk::new(Transport::Threads, &[1.5f64, 2.5, -3.0]).unwrap();
        let value = (7u32, "seven".to_owned(), bulk, vec![1u8, 2, 3]);
        let payload = encode(&value).unwrap();
        assert_eq!(payload.blocks.len(), 1);
        let back: (u32, String, Bulk<f64>, Vec<u8>) = decode(payload).unwrap();
        assert_eq!(
            (back.0, back.1.as_str(), &back.2[..], &back.3[..]),
            (7, "seven", &[1.5, 2.5, -3.0][..], &[1, 2, 3][..])
        );
    }

    #[test]
    fn bytes_of_another_type_are_an_error_not_a_panic() {
        let payload = encode(&"a string").unwrap();
        assert!(decode::<(u64, u64, u64)>(payload).is_err());
        let missing = Payload {
            bytes: encode(&Bulk::new(Transport::Threads, &[1u8]).unwrap())
                .unwrap()
                .bytes,
            blocks: Vec::new(),
        };
        let err = decode::<Bulk<u8>>(missing).unwrap_err();
        assert_eq!(err, "block 0 of a value is missing");
    }

    /// Values too large for a socket cross in shared memory: several go out on a channel
    /// nobody reads yet, where a send of one inline would wait for the reader.
    #[test]
    fn large_bytes_cross_a_socket_in_a_region_of_their_own() {
        let (tx, rx) = ipc_channel::ipc::channel::<Payload>().unwrap();
        let payloads: Vec<Payload> = (0..4u8)
            .map(|k| Payload {
                bytes: (0..(1usize << 20) + usize::from(k))
                    .map(|i| (i % 251) as u8 ^ k)
                    .collect(),
                blocks: vec![Block::local(&[k; 3])],
            })
            .collect();
        let (done_tx, done) = std::sync::mpsc::channel();
        let sending = payloads.clone();
        std::thread::spawn(move || {
            for payload in sending {
                crate::transport::by_ipc(|| tx.send(payload)).unwrap();
            }
            let _ = done_tx.send(tx);
        });
        let _tx = done
            .recv_timeout(std::time::Duration::from_secs(10))
            .expect("four 1 MB values went out without a reader");
        for sent in &payloads {
            let got = rx.recv().unwrap();
            assert_eq!(got.bytes, sent.bytes);
            assert_eq!(got.blocks.len(), 1);
            assert_eq!(
                got.blocks[0].carried_bytes(),
                sent.blocks[0].carried_bytes()
            );
        }
        // Outside an ipc-channel send (postcard, as MPI packs frames) the bytes stay inline.
        let bytes = postcard::to_allocvec(&payloads[0]).unwrap();
        assert!(bytes.len() > 1 << 20);
        let back: Payload = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(back.bytes, payloads[0].bytes);
    }

    /// postcard says only that a custom error happened; the error says what it was.
    #[test]
    fn a_decoding_error_of_our_own_keeps_its_message() {
        let payload = encode(&Bulk::new(Transport::Threads, &[0u32; 3]).unwrap()).unwrap();
        let err = decode::<Bulk<f64>>(payload).unwrap_err();
        assert_eq!(
            err,
            "a bulk array of 12 bytes is not a whole number of 8-byte elements"
        );
        // postcard's own errors are postcard's.
        let err = decode::<(u64, u64, u64)>(encode(&"a string").unwrap()).unwrap_err();
        assert!(!err.contains("bulk"), "{err}");
        assert_eq!(take_detail(), None, "taken");
    }
}
