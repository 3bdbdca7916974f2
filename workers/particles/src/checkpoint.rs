//! Checkpoints: the whole state of a run after some step, in a file a later run resumes
//! from, bit for bit.
//!
//! The file is [`MAGIC`], then, in postcard, the format [`VERSION`], a CRC-32 of the
//! payload, and the payload as a byte string. The payload, also postcard, holds the particle
//! count, the step, the step length, whether energy normalization is on, the correction
//! for the next step, the initial energy, and every particle in list order (ids, then x, y,
//! vx, vy as raw f64 bits). Decoding checks all of it, so that a damaged or foreign file is
//! an error and never a panic, nor a state the simulation cannot run from.

use serde::{Deserialize, Serialize};

use super::physics::Particles;
use super::{Snapshot, Start, init};

/// The first bytes of every checkpoint file.
pub const MAGIC: [u8; 8] = *b"RLPARTCK";

/// The format version this build writes and reads.
pub const VERSION: u32 = 1;

/// The state of a run after a step: everything it needs to go on.
#[derive(Debug, Clone, PartialEq)]
pub struct Checkpoint {
    /// The step just taken.
    pub step: u64,
    /// The step length the run uses.
    pub dt: f64,
    /// Whether the run normalizes the energy (`-e`).
    pub normalize: bool,
    /// The correction the next step applies.
    pub correction: f64,
    /// The energy normalization holds the system to.
    pub initial_energy: f64,
    /// Every particle, in list order.
    pub particles: Particles,
}

/// Why bytes are not a checkpoint this build can resume from.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// Nothing at all.
    #[error("the file is empty")]
    Empty,
    /// The file ends before its contents do.
    #[error("the file is truncated")]
    Truncated,
    /// The file does not start with [`MAGIC`].
    #[error("not a ringleader particle checkpoint (wrong magic number)")]
    WrongMagic,
    /// A format this build does not know.
    #[error(
        "checkpoint format version {found} is not supported (this build reads version {VERSION})"
    )]
    WrongVersion {
        /// The version the file states.
        found: u32,
    },
    /// The payload is not what was written.
    #[error("the checksum does not match: the file is corrupt")]
    Checksum,
    /// Bytes after the end of the contents.
    #[error("the file has {0} unexpected bytes after its end")]
    TrailingBytes(usize),
    /// The bytes do not decode.
    #[error("the contents are malformed")]
    Malformed(#[source] postcard::Error),
    /// The contents decode but do not describe a state a run can go on from.
    #[error("inconsistent contents: {0}")]
    Inconsistent(String),
}

/// The payload, generic over owned or borrowed particles so writing needs no copy.
#[derive(Debug, Serialize, Deserialize)]
struct Payload<P> {
    n: u64,
    step: u64,
    dt: f64,
    normalize: bool,
    correction: f64,
    initial_energy: f64,
    particles: P,
}

/// What follows the magic number and the version.
#[derive(Debug, Serialize, Deserialize)]
struct Sealed<'a> {
    checksum: u32,
    payload: &'a [u8],
}

impl Checkpoint {
    /// The file's bytes ([`encode_snapshot`] makes the same bytes from a run's
    /// [`Snapshot`], with no copy of the particles).
    ///
    /// # Errors
    /// When postcard cannot encode it (it always can, in memory).
    pub fn encode(&self) -> Result<Vec<u8>, postcard::Error> {
        encode(&Payload {
            n: self.particles.len() as u64,
            step: self.step,
            dt: self.dt,
            normalize: self.normalize,
            correction: self.correction,
            initial_energy: self.initial_energy,
            particles: &self.particles,
        })
    }

    /// Reads a checkpoint back from the file's bytes.
    ///
    /// # Errors
    /// Any bytes that are not a complete, intact checkpoint of this format version holding a
    /// state the simulation can run from: see [`DecodeError`].
    pub fn decode(bytes: &[u8]) -> Result<Checkpoint, DecodeError> {
        if bytes.is_empty() {
            return Err(DecodeError::Empty);
        }
        let Some(rest) = bytes.strip_prefix(&MAGIC) else {
            return Err(if MAGIC.starts_with(bytes) {
                DecodeError::Truncated
            } else {
                DecodeError::WrongMagic
            });
        };
        // The version comes first and alone, so a later format may change all that follows.
        let (version, rest) = postcard::take_from_bytes::<u32>(rest).map_err(malformed)?;
        if version != VERSION {
            return Err(DecodeError::WrongVersion { found: version });
        }
        let sealed: Sealed<'_> = whole(rest)?;
        if crc32fast::hash(sealed.payload) != sealed.checksum {
            return Err(DecodeError::Checksum);
        }
        let payload: Payload<Particles> = whole(sealed.payload)?;
        payload.check()?;
        Ok(Checkpoint {
            step: payload.step,
            dt: payload.dt,
            normalize: payload.normalize,
            correction: payload.correction,
            initial_energy: payload.initial_energy,
            particles: payload.particles,
        })
    }

    /// Where a run that resumes from this checkpoint starts.
    pub fn into_start(self) -> Start {
        Start {
            particles: self.particles,
            step: self.step,
            correction: self.correction,
            initial_energy: self.initial_energy,
        }
    }
}

/// The bytes of the checkpoint a run with this step length and normalization would take
/// at `snapshot`: what [`Checkpoint::encode`] gives for the same state.
///
/// # Errors
/// When postcard cannot encode it (it always can, in memory).
pub fn encode_snapshot(
    snapshot: &Snapshot<'_>,
    dt: f64,
    normalize: bool,
) -> Result<Vec<u8>, postcard::Error> {
    encode(&Payload {
        n: snapshot.particles.len() as u64,
        step: snapshot.step,
        dt,
        normalize,
        correction: snapshot.correction,
        initial_energy: snapshot.initial_energy,
        particles: snapshot.particles,
    })
}

fn encode(payload: &Payload<&Particles>) -> Result<Vec<u8>, postcard::Error> {
    let payload = postcard::to_allocvec(payload)?;
    let bytes = postcard::to_extend(&VERSION, MAGIC.to_vec())?;
    postcard::to_extend(
        &Sealed {
            checksum: crc32fast::hash(&payload),
            payload: &payload,
        },
        bytes,
    )
}

/// Decodes a `T` that must fill `bytes` exactly.
fn whole<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, DecodeError> {
    let (value, rest) = postcard::take_from_bytes::<T>(bytes).map_err(malformed)?;
    if rest.is_empty() {
        Ok(value)
    } else {
        Err(DecodeError::TrailingBytes(rest.len()))
    }
}

fn malformed(err: postcard::Error) -> DecodeError {
    match err {
        postcard::Error::DeserializeUnexpectedEnd => DecodeError::Truncated,
        err => DecodeError::Malformed(err),
    }
}

impl Payload<Particles> {
    /// Checks that the state is one a run can go on from: a count that matches every
    /// column, ids that are a permutation of `0..n`, finite numbers, and every particle in
    /// the box (the bounce loop would never end for one far outside it).
    fn check(&self) -> Result<(), DecodeError> {
        let bad = |what: String| Err(DecodeError::Inconsistent(what));
        let p = &self.particles;
        let n = self.n;
        if n == 0 {
            return bad("the checkpoint holds no particles".to_owned());
        }
        let columns = [
            ("ids", p.ids.len()),
            ("x", p.x.len()),
            ("y", p.y.len()),
            ("vx", p.vx.len()),
            ("vy", p.vy.len()),
        ];
        for (name, len) in columns {
            if len as u64 != n {
                return bad(format!("{n} particles but {len} values of {name}"));
            }
        }
        // n is now the length of a vector that was decoded, so it fits in memory.
        let n = p.len();
        let mut seen = vec![false; n];
        for &id in &p.ids {
            match seen.get_mut(id as usize) {
                Some(slot) if !*slot => *slot = true,
                Some(_) => return bad(format!("particle id {id} appears twice")),
                None => return bad(format!("particle id {id} is not below {n}")),
            }
        }
        if !(self.dt.is_finite() && self.dt > 0.0) {
            return bad(format!("the step length {} is not positive", self.dt));
        }
        for (name, value) in [
            ("correction", self.correction),
            ("initial energy", self.initial_energy),
        ] {
            if !value.is_finite() {
                return bad(format!("the {name} {value} is not finite"));
            }
        }
        let size = init::box_size(n);
        for (name, column) in [("x", &p.x), ("y", &p.y)] {
            if let Some(value) = column.iter().find(|&&v| !(0.0..=size).contains(&v)) {
                return bad(format!("{name} = {value} lies outside the box [0, {size}]"));
            }
        }
        for (name, column) in [("vx", &p.vx), ("vy", &p.vy)] {
            if let Some(value) = column.iter().find(|v| !v.is_finite()) {
                return bad(format!("{name} = {value} is not finite"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::{Mode, Run, Unwatched, simulate};

    /// A real state: the textbook's particles after a few steps with normalization.
    fn checkpoint(n: usize, steps: u64) -> Checkpoint {
        let run = Run::new(Start::initial(n), steps, 0.0005, true);
        let initial_energy = run.start.initial_energy;
        let (outcome, _) = simulate(run, Mode::Serial, Box::new(Unwatched)).expect("run");
        Checkpoint {
            step: steps,
            dt: 0.0005,
            normalize: true,
            correction: outcome.correction,
            initial_energy,
            particles: outcome.particles,
        }
    }

    /// Seals an arbitrary payload with a correct checksum.
    fn sealed(payload: &Payload<Particles>) -> Vec<u8> {
        let borrowed = Payload {
            n: payload.n,
            step: payload.step,
            dt: payload.dt,
            normalize: payload.normalize,
            correction: payload.correction,
            initial_energy: payload.initial_energy,
            particles: &payload.particles,
        };
        encode(&borrowed).expect("encode")
    }

    fn payload_of(c: &Checkpoint) -> Payload<Particles> {
        Payload {
            n: c.particles.len() as u64,
            step: c.step,
            dt: c.dt,
            normalize: c.normalize,
            correction: c.correction,
            initial_energy: c.initial_energy,
            particles: c.particles.clone(),
        }
    }

    fn inconsistency(edit: impl FnOnce(&mut Payload<Particles>)) -> String {
        let mut payload = payload_of(&checkpoint(30, 3));
        edit(&mut payload);
        match Checkpoint::decode(&sealed(&payload)) {
            Err(DecodeError::Inconsistent(why)) => why,
            other => panic!("expected an inconsistency, got {other:?}"),
        }
    }

    #[test]
    fn a_checkpoint_decodes_to_the_same_bits() {
        let original = checkpoint(50, 7);
        let bytes = original.encode().expect("encode");
        assert!(bytes.starts_with(&MAGIC));
        let decoded = Checkpoint::decode(&bytes).expect("decode");
        // Particles compare with ==, which is bits for the finite values a run holds.
        assert_eq!(decoded, original);
        assert_eq!(decoded.correction.to_bits(), original.correction.to_bits());
    }

    #[test]
    fn every_truncation_is_reported_as_truncated() {
        let bytes = checkpoint(20, 2).encode().expect("encode");
        assert!(matches!(Checkpoint::decode(&[]), Err(DecodeError::Empty)));
        for len in 1..bytes.len() {
            match Checkpoint::decode(&bytes[..len]) {
                Err(DecodeError::Truncated) => {}
                other => panic!("{len} of {} bytes: {other:?}", bytes.len()),
            }
        }
    }

    #[test]
    fn a_foreign_file_is_not_a_checkpoint() {
        let err = Checkpoint::decode(b"id,x,y,vx,vy\n0,1,2,3,4\n").unwrap_err();
        assert!(matches!(err, DecodeError::WrongMagic), "{err:?}");
        assert!(err.to_string().contains("wrong magic number"));
    }

    #[test]
    fn another_version_is_refused_before_its_contents_are_read() {
        let mut bytes = MAGIC.to_vec();
        bytes = postcard::to_extend(&2u32, bytes).expect("encode");
        bytes.extend_from_slice(b"whatever version 2 holds");
        let err = Checkpoint::decode(&bytes).unwrap_err();
        assert!(
            matches!(err, DecodeError::WrongVersion { found: 2 }),
            "{err:?}"
        );
        assert_eq!(
            err.to_string(),
            "checkpoint format version 2 is not supported (this build reads version 1)"
        );
    }

    #[test]
    fn a_flipped_bit_in_the_payload_fails_the_checksum() {
        let mut bytes = checkpoint(20, 2).encode().expect("encode");
        let last = bytes.len() - 1;
        bytes[last] ^= 0x10;
        assert!(matches!(
            Checkpoint::decode(&bytes),
            Err(DecodeError::Checksum)
        ));
    }

    #[test]
    fn bytes_after_the_end_are_refused() {
        let mut bytes = checkpoint(20, 2).encode().expect("encode");
        bytes.push(0);
        assert!(matches!(
            Checkpoint::decode(&bytes),
            Err(DecodeError::TrailingBytes(1))
        ));
    }

    #[test]
    fn inconsistent_contents_are_refused_even_with_a_good_checksum() {
        let why = inconsistency(|p| p.n = 31);
        assert_eq!(why, "31 particles but 30 values of ids");
        let why = inconsistency(|p| {
            p.particles.vy.pop();
        });
        assert_eq!(why, "30 particles but 29 values of vy");
        let why = inconsistency(|p| p.particles.ids[3] = p.particles.ids[4]);
        assert!(why.contains("appears twice"), "{why}");
        let why = inconsistency(|p| p.particles.ids[0] = 30);
        assert_eq!(why, "particle id 30 is not below 30");
        let why = inconsistency(|p| {
            p.n = 0;
            p.particles = Particles::default();
        });
        assert_eq!(why, "the checkpoint holds no particles");
        let why = inconsistency(|p| p.dt = -0.5);
        assert!(why.contains("step length"), "{why}");
        let why = inconsistency(|p| p.correction = f64::NAN);
        assert!(why.contains("correction"), "{why}");
        // Far outside the box, the bounce would never end.
        let why = inconsistency(|p| p.particles.x[5] = 1e300);
        assert!(why.contains("outside the box"), "{why}");
        let why = inconsistency(|p| p.particles.y[5] = -0.0001);
        assert!(why.contains("outside the box"), "{why}");
        let why = inconsistency(|p| p.particles.vx[5] = f64::INFINITY);
        assert!(why.contains("vx = inf"), "{why}");
    }

    fn arbitrary_payload() -> impl Strategy<Value = Payload<Particles>> {
        // Mostly values a state can hold (the box for n <= 5 is under 0.05 wide), some not.
        let value = || prop_oneof![4 => 0.0..0.05, 1 => any::<f64>()];
        let column = move |len| prop::collection::vec(value(), len..=len);
        (0usize..6, any::<u64>(), any::<f64>(), any::<bool>())
            .prop_flat_map(move |(n, step, dt, normalize)| {
                (
                    Just((n, step, dt, normalize)),
                    any::<(u8, f64, f64)>(),
                    prop_oneof![
                        Just((0..n as u32).collect::<Vec<_>>()).prop_shuffle(),
                        prop::collection::vec(0u32..8, n..=n),
                    ],
                    (column(n), column(n), column(n), column(n)),
                )
            })
            .prop_map(
                |((n, step, dt, normalize), (skew, correction, initial_energy), ids, columns)| {
                    let (x, y, vx, vy) = columns;
                    Payload {
                        // Mostly the true count, sometimes not.
                        n: if skew < 200 {
                            n as u64
                        } else {
                            u64::from(skew)
                        },
                        step,
                        dt,
                        normalize,
                        correction,
                        initial_energy,
                        particles: Particles { ids, x, y, vx, vy },
                    }
                },
            )
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
            let _ = Checkpoint::decode(&bytes);
        }

        #[test]
        fn arbitrary_bytes_after_a_good_header_never_panic(
            tail in prop::collection::vec(any::<u8>(), 0..512),
        ) {
            let mut bytes = postcard::to_extend(&VERSION, MAGIC.to_vec()).expect("encode");
            bytes.extend_from_slice(&tail);
            let _ = Checkpoint::decode(&bytes);
        }

        /// With a correct checksum the contents reach the consistency checks: what passes
        /// them must be exactly what was sealed.
        #[test]
        fn arbitrary_sealed_payloads_decode_or_fail_cleanly(payload in arbitrary_payload()) {
            let bytes = sealed(&payload);
            if let Ok(decoded) = Checkpoint::decode(&bytes) {
                prop_assert_eq!(decoded.particles.len() as u64, payload.n);
                prop_assert_eq!(sealed(&payload_of(&decoded)), bytes);
            }
        }

        /// Any change to one byte of a real checkpoint is caught: by the magic number, the
        /// version, a length, or the checksum.
        #[test]
        fn any_changed_byte_of_a_real_checkpoint_is_an_error(
            at in any::<prop::sample::Index>(),
            flip in 1u8..=255,
        ) {
            let mut bytes = checkpoint(12, 3).encode().expect("encode");
            let at = at.index(bytes.len());
            bytes[at] ^= flip;
            prop_assert!(Checkpoint::decode(&bytes).is_err(), "byte {} ^ {}", at, flip);
        }

        #[test]
        fn mutated_checkpoints_never_panic(
            edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..3), 1..8),
        ) {
            let mut bytes = checkpoint(12, 3).encode().expect("encode");
            for (at, byte, kind) in edits {
                if bytes.is_empty() {
                    break;
                }
                let i = at.index(bytes.len());
                match kind {
                    0 => bytes[i] = byte,
                    1 => bytes.insert(i, byte),
                    _ => {
                        bytes.remove(i);
                    }
                }
            }
            let _ = Checkpoint::decode(&bytes);
        }
    }
}
