//! Collectives: operations every worker of the ring calls together, on values of any serde
//! type, on every transport.
//!
//! Each value is encoded once and passes round the ring over the neighbour links, so a
//! collective takes `size - 1` hops and every worker sees every value. Reductions combine
//! in rank order, `((v0 op v1) op v2) …`, on every worker: a floating-point sum has the same
//! bits on every rank, every transport and every run, which MPI's own reductions do not
//! promise.
//!
//! Every worker must call the same collectives in the same order, with no `send`/`recv` on
//! the same links interleaved differently on different ranks. A mismatch is a
//! [`RingError::Protocol`] on the rank that meets it, not a hang: every value travels with
//! a tag that says which collective sent it (one that passes every value round, or a
//! broadcast from a given root) and how many the sender had begun, so a rank in one
//! collective never takes another's value for its own. Only a mismatch that no rank
//! receives in is not seen: a broadcast for which every rank names itself the root sends,
//! and receives nothing.

use crate::error::RingError;
use crate::message::Data;
use crate::ring::{Neighbour, Ring};
use crate::transport::{Frame, Payload, decode, encode};

/// Which collective a value belongs to, as its frame's tag says: one that passes every
/// rank's value round the ring (`all_gather`, `all_reduce`, `gather`), or a broadcast from
/// a root (`broadcast`, `scatter`).
#[derive(Debug, Clone, Copy)]
enum Kind {
    Round,
    Broadcast(usize),
}

impl Ring {
    /// Every worker's `value`, in rank order, on every worker.
    ///
    /// ```
    /// use ringleader::{Launcher, Transport};
    ///
    /// let all = Launcher::new().workers(3).transport(Transport::Threads).run(|ring| {
    ///     Ok(ring.all_gather(format!("rank {}", ring.rank()))?)
    /// })?;
    /// assert!(all.iter().all(|names| names == &["rank 0", "rank 1", "rank 2"]));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`RingError::PeerGone`] if a neighbour ends meanwhile, [`RingError::Protocol`] if a
    /// neighbour is not in the same collective, [`RingError::Encoding`] for a value serde
    /// cannot carry.
    pub fn all_gather<T: Data>(&mut self, value: T) -> Result<Vec<T>, RingError> {
        let mut values: Vec<Option<T>> = (0..self.size()).map(|_| None).collect();
        let mine = encode(&value).map_err(RingError::Encoding)?;
        values[self.rank()] = Some(value);
        self.pass_round(mine, |rank, payload| {
            values[rank] = Some(payload);
            Ok(())
        })?;
        Ok(values.into_iter().flatten().collect())
    }

    /// Combines every worker's `value` with `op`, in rank order, and gives every worker the
    /// result: `op(op(v0, v1), v2) …`, the same bits everywhere.
    ///
    /// ```
    /// use ringleader::{Launcher, Transport};
    ///
    /// let sums = Launcher::new().workers(4).transport(Transport::Threads).run(|ring| {
    ///     let mine = 0.1 * (ring.rank() + 1) as f64;
    ///     Ok(ring.all_reduce(mine, |a, b| a + b)?)
    /// })?;
    /// // (((0.1 + 0.2) + 0.3) + 0.4) on every rank, to the last bit.
    /// assert!(sums.iter().all(|s| s.to_bits() == (((0.1f64 + 0.2) + 0.3) + 0.4).to_bits()));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    ///
    /// As [`all_gather`](Ring::all_gather).
    pub fn all_reduce<T: Data>(
        &mut self,
        value: T,
        op: impl FnMut(T, T) -> T,
    ) -> Result<T, RingError> {
        let mut values = self.all_gather(value)?.into_iter();
        let first = values.next().ok_or(RingError::Protocol {
            peer: self.rank(),
            expected: "a value from every rank",
            got: "none",
        })?;
        Ok(values.fold(first, op))
    }

    /// The value of worker `root` on every worker: `root` passes `Some(value)`, the others
    /// `None`.
    ///
    /// ```
    /// use ringleader::{Launcher, Transport};
    ///
    /// let got = Launcher::new().workers(3).transport(Transport::Threads).run(|ring| {
    ///     let mine = (ring.rank() == 1).then(|| vec![2.5f64, 7.0]);
    ///     Ok(ring.broadcast(1, mine)?)
    /// })?;
    /// assert!(got.iter().all(|v| v == &[2.5, 7.0]));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    ///
    /// As [`all_gather`](Ring::all_gather); [`RingError::Protocol`] if `root` is not a rank
    /// or passes `None`.
    pub fn broadcast<T: Data>(&mut self, root: usize, value: Option<T>) -> Result<T, RingError> {
        self.check_root(root)?;
        let size = self.size();
        let tag = self.begin(Kind::Broadcast(root));
        // Hops from the root, going right: the root is 0, its right neighbour 1, ….
        let distance = (self.rank() + size - root) % size;
        if distance == 0 {
            let value = value.ok_or(RingError::Protocol {
                peer: root,
                expected: "a value from the root of a broadcast",
                got: "none",
            })?;
            if size > 1 {
                let payload = encode(&value).map_err(RingError::Encoding)?;
                self.send_frame(Neighbour::Right, Frame::Collective(payload, tag))?;
            }
            return Ok(value);
        }
        let payload = self.recv_collective(tag)?;
        if distance + 1 < size {
            self.send_frame(Neighbour::Right, Frame::Collective(payload.clone(), tag))?;
        }
        self.decode_collective(payload)
    }

    /// Every worker's `value`, in rank order, on worker `root` (`Some`); `None` elsewhere.
    ///
    /// ```
    /// use ringleader::{Launcher, Transport};
    ///
    /// let got = Launcher::new().workers(3).transport(Transport::Threads).run(|ring| {
    ///     Ok(ring.gather(0, ring.rank() * 10)?)
    /// })?;
    /// assert_eq!(got, vec![Some(vec![0, 10, 20]), None, None]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    ///
    /// As [`all_gather`](Ring::all_gather); [`RingError::Protocol`] if `root` is not a rank.
    pub fn gather<T: Data>(&mut self, root: usize, value: T) -> Result<Option<Vec<T>>, RingError> {
        self.check_root(root)?;
        let all = self.all_gather(value)?;
        Ok((self.rank() == root).then_some(all))
    }

    /// Element `rank` of worker `root`'s `values` on every worker: `root` passes
    /// `Some(values)`, with one value per worker, the others `None`.
    ///
    /// ```
    /// use ringleader::{Launcher, Transport};
    ///
    /// let got = Launcher::new().workers(3).transport(Transport::Threads).run(|ring| {
    ///     let work = (ring.rank() == 0).then(|| vec!["a".to_owned(), "b".into(), "c".into()]);
    ///     Ok(ring.scatter(0, work)?)
    /// })?;
    /// assert_eq!(got, vec!["a", "b", "c"]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    ///
    /// As [`broadcast`](Ring::broadcast); [`RingError::Protocol`] if the root's values are
    /// not one per worker.
    pub fn scatter<T: Data>(
        &mut self,
        root: usize,
        values: Option<Vec<T>>,
    ) -> Result<T, RingError> {
        if let Some(values) = &values
            && values.len() != self.size()
        {
            return Err(RingError::Protocol {
                peer: root,
                expected: "one value per worker to scatter",
                got: "another number of values",
            });
        }
        let rank = self.rank();
        let all = self.broadcast(root, values)?;
        all.into_iter().nth(rank).ok_or(RingError::Protocol {
            peer: root,
            expected: "one value per worker to scatter",
            got: "fewer values",
        })
    }

    /// Passes `mine` round the ring and hands `each` every other worker's value, with its
    /// origin.
    fn pass_round<T: Data>(
        &mut self,
        mine: Payload,
        mut each: impl FnMut(usize, T) -> Result<(), RingError>,
    ) -> Result<(), RingError> {
        let size = self.size();
        let tag = self.begin(Kind::Round);
        if size == 1 {
            return Ok(());
        }
        self.send_frame(Neighbour::Right, Frame::Collective(mine, tag))?;
        for hop in 1..size {
            let payload = self.recv_collective(tag)?;
            if hop + 1 < size {
                self.send_frame(Neighbour::Right, Frame::Collective(payload.clone(), tag))?;
            }
            let origin = (self.rank() + size - hop) % size;
            each(origin, self.decode_collective(payload)?)?;
        }
        Ok(())
    }

    /// Begins a collective of `kind`: the tag its frames carry.
    fn begin(&mut self, kind: Kind) -> u64 {
        self.collectives += 1;
        let kind = match kind {
            Kind::Round => 0,
            Kind::Broadcast(root) => 1 + root as u64,
        };
        (self.collectives << 32) | (kind & 0xffff_ffff)
    }

    /// The next value from the left, which must be one of the collective tagged `tag`.
    fn recv_collective(&mut self, tag: u64) -> Result<Payload, RingError> {
        let peer = self.neighbour(Neighbour::Left);
        let theirs = match self.recv_frame(Neighbour::Left)? {
            Frame::Collective(payload, theirs) if theirs == tag => return Ok(payload),
            Frame::Collective(_, theirs) => theirs,
            frame => {
                return Err(RingError::Protocol {
                    peer,
                    expected: "a collective's value",
                    got: frame.kind(),
                });
            }
        };
        let kind = |tag: u64| tag & 0xffff_ffff;
        let (expected, got) = if theirs >> 32 != tag >> 32 {
            (
                "a value of the collective as many calls in as this rank's",
                "one of an earlier or a later collective (the ranks called different numbers)",
            )
        } else if kind(tag) == 0 {
            (
                "a value of all_gather, all_reduce or gather",
                "one of broadcast or scatter",
            )
        } else if kind(theirs) == 0 {
            (
                "a value of broadcast or scatter",
                "one of all_gather, all_reduce or gather",
            )
        } else {
            (
                "a broadcast's value from the root this rank named",
                "one from another root",
            )
        };
        Err(RingError::Protocol {
            peer,
            expected,
            got,
        })
    }

    fn decode_collective<T: Data>(&self, payload: Payload) -> Result<T, RingError> {
        decode(payload).map_err(|e| {
            RingError::Encoding(format!(
                "a collective's value from rank {} is not a {}: {e}",
                self.neighbour(Neighbour::Left),
                std::any::type_name::<T>()
            ))
        })
    }

    fn check_root(&self, root: usize) -> Result<(), RingError> {
        if root < self.size() {
            Ok(())
        } else {
            Err(RingError::Protocol {
                peer: root,
                expected: "a root among the ring's ranks",
                got: "a rank the ring does not have",
            })
        }
    }
}
