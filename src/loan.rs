//! An array a worker lends the coordinator, which reads the parts it wants straight out of
//! the worker's memory while the worker waits.

use std::fmt;
use std::ops::Range;

use bytemuck::Pod;
use serde::{Deserialize, Serialize};

use crate::bulk::Bulk;
use crate::error::RingError;
use crate::ring::Ring;
use crate::transport::Transport;

/// A worker's side of an array lent to the coordinator: the array itself, which must stay
/// where it is until the coordinator has read what it wants. Keep the `Loan` until the
/// coordinator has answered the report that carried its [`Ticket`], then drop it. Dropped
/// sooner, a read between processes fails or finds whatever the memory holds by then; it
/// never reads outside the worker, and never harms the coordinator.
///
/// Made by [`Ring::loan`].
pub struct Loan<T> {
    /// The lent array, between processes; between threads and MPI ranks the ticket carries
    /// it.
    kept: Option<Vec<T>>,
}

impl<T> fmt::Debug for Loan<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Loan")
            .field("kept", &self.kept.as_ref().map(Vec::len))
            .finish()
    }
}

/// What the coordinator is sent of a [`Loan`]: where to read the array from. Put it in a
/// report; the handler reads the ranges it wants with [`Ticket::read`], before it answers.
///
/// Between processes the ticket names the array's place in the worker's memory, and a read
/// copies only the ranges asked for, out of the worker's memory into the coordinator's
/// (`process_vm_readv`). An output that the coordinator sorts into arrays of its own is
/// so read a piece at a time into a buffer that stays in cache: nothing of the size of the
/// whole array is copied or made anew, where fresh memory is what costs most. Between
/// threads, and between MPI ranks, the ticket carries the array itself (handed over
/// between threads, sent between ranks), and a read copies from it.
#[derive(Serialize, Deserialize)]
#[serde(bound = "")]
pub struct Ticket<T: Pod> {
    place: Place<T>,
}

#[derive(Serialize, Deserialize)]
#[serde(bound = "")]
enum Place<T: Pod> {
    /// `len` elements at `addr` in process `pid`, a worker of the run going on.
    InWorker {
        pid: u32,
        addr: u64,
        len: u64,
    },
    Carried(Bulk<T>),
}

/// A clone names the same array: between threads another reference to it; nothing is
/// copied.
impl<T: Pod> Clone for Ticket<T> {
    fn clone(&self) -> Self {
        let place = match &self.place {
            &Place::InWorker { pid, addr, len } => Place::InWorker { pid, addr, len },
            Place::Carried(bulk) => Place::Carried(bulk.clone()),
        };
        Ticket { place }
    }
}

impl<T: Pod> fmt::Debug for Ticket<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let place = match &self.place {
            Place::InWorker { pid, .. } => format!("in process {pid}"),
            Place::Carried(_) => "carried".to_owned(),
        };
        f.debug_struct("Ticket")
            .field("len", &self.len())
            .field("place", &place)
            .finish()
    }
}

impl Ring {
    /// Lends `data` to the coordinator: returns the [`Ticket`] to send it in a report, and
    /// the [`Loan`] to keep until the coordinator has answered that report. The
    /// coordinator's handler reads the ranges it wants with [`Ticket::read`].
    ///
    /// For a large array the coordinator takes apart, such as a state it puts back in its
    /// own order: between processes the coordinator copies only a piece at a time, into
    /// memory it reuses, where a worker's output ([`Ring::bulk_from_vec`]) is copied whole
    /// into fresh memory first.
    ///
    /// ```
    /// use ringleader::{Coordinator, Handler, Launcher, StageError, Ticket, Transport, stage_fn};
    ///
    /// struct Ends(Vec<u64>);
    ///
    /// impl Handler for Ends {
    ///     type Report = Ticket<u64>;
    ///     type Answer = ();
    ///
    ///     fn on_report(
    ///         &mut self,
    ///         _from: usize,
    ///         ticket: Ticket<u64>,
    ///         coordinator: &mut Coordinator<'_, ()>,
    ///     ) -> Result<(), StageError> {
    ///         // The first two elements and the last: nothing else is copied.
    ///         let mut three = [0; 3];
    ///         ticket.read(&[0..2, 999..1000], &mut three)?;
    ///         self.0.extend(three);
    ///         if self.0.len() == 3 * coordinator.size() {
    ///             coordinator.broadcast(())?;
    ///         }
    ///         Ok(())
    ///     }
    /// }
    ///
    /// let stage = stage_fn(|ring| {
    ///     let squares: Vec<u64> = (0..1000).map(|i| i * i).collect();
    ///     let (ticket, loan) = ring.loan(squares)?;
    ///     ring.report(&ticket)?;
    ///     // The coordinator has read what it wanted once it answers.
    ///     let () = ring.recv_answer()?;
    ///     drop(loan);
    ///     Ok(())
    /// });
    /// let mut ends = Ends(Vec::new());
    /// Launcher::new().workers(2).transport(Transport::Threads).launch_with(stage, &mut ends)?;
    /// assert_eq!(ends.0, [0, 1, 998_001, 0, 1, 998_001]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`RingError::Alignment`] if `T` needs more than 16-byte alignment.
    pub fn loan<T: Pod + Send + Sync>(
        &self,
        data: Vec<T>,
    ) -> Result<(Ticket<T>, Loan<T>), RingError> {
        if self.transport() == Transport::Processes
            && !data.is_empty()
            && crate::transport::lend::possible()
        {
            let place = Place::InWorker {
                pid: std::process::id(),
                addr: data.as_ptr() as u64,
                len: data.len() as u64,
            };
            self.lent_from_memory();
            return Ok((Ticket { place }, Loan { kept: Some(data) }));
        }
        let place = Place::Carried(self.bulk_from_vec(data)?);
        Ok((Ticket { place }, Loan { kept: None }))
    }
}

impl<T: Pod> Ticket<T> {
    /// How many elements the lent array has.
    pub fn len(&self) -> usize {
        match &self.place {
            Place::InWorker { len, .. } => usize::try_from(*len).unwrap_or(usize::MAX),
            Place::Carried(bulk) => bulk.len(),
        }
    }

    /// Whether the lent array is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Copies the elements of each of `ranges` of the lent array, one range after another,
    /// to the front of `into`. Between processes that is one system call for up to 1024
    /// ranges. Call it in the coordinator, while the worker keeps its [`Loan`].
    ///
    /// # Errors
    ///
    /// [`RingError::Loan`] if a range is out of the array's bounds or the ranges take more
    /// than `into` holds; between processes also if the ticket names a process that is no
    /// worker of the run going on (a ticket read outside the coordinator, or kept past its
    /// run). [`RingError::LenderGone`] if the worker has ended: returned from a handler, the
    /// run then reports the worker's own end.
    pub fn read(&self, ranges: &[Range<usize>], into: &mut [T]) -> Result<(), RingError> {
        let len = self.len();
        let mut total = 0usize;
        for range in ranges {
            if range.start > range.end || range.end > len {
                return Err(RingError::Loan(format!(
                    "elements {range:?} of a lent array of {len}"
                )));
            }
            total += range.end - range.start;
        }
        let Some(into) = into.get_mut(..total) else {
            return Err(RingError::Loan(format!(
                "{total} elements read into room for {}",
                into.len()
            )));
        };
        match &self.place {
            Place::Carried(bulk) => {
                let mut at = 0;
                for range in ranges {
                    let piece = &bulk[range.clone()];
                    into[at..at + piece.len()].copy_from_slice(piece);
                    at += piece.len();
                }
                Ok(())
            }
            Place::InWorker { pid, addr, .. } => {
                let size = size_of::<T>();
                // Each range fits in `into`, so its length in bytes does too; where it starts
                // comes from the ticket, which a garbled message could make up.
                let piece = |range: &Range<usize>| {
                    let from = range.start.checked_mul(size)?;
                    Some((
                        addr.checked_add(u64::try_from(from).ok()?)?,
                        range.len() * size,
                    ))
                };
                let pieces = ranges
                    .iter()
                    .filter(|range| !range.is_empty())
                    .map(|range| {
                        piece(range).ok_or_else(|| {
                            RingError::Loan(format!(
                                "elements {range:?} lie past the end of memory"
                            ))
                        })
                    })
                    .collect::<Result<Vec<(u64, usize)>, _>>()?;
                crate::transport::lend::read_pieces(*pid, &pieces, bytemuck::cast_slice_mut(into))
                    .map_err(|detail| match detail.lender_gone {
                        true => RingError::LenderGone(detail.message),
                        false => RingError::Loan(detail.message),
                    })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Between processes the ticket names the worker's memory, so the bytes are not carried
    /// in the message; a ticket for a process that is no worker of a run going on is
    /// refused, never read.
    #[test]
    fn a_ticket_from_a_process_names_its_memory_and_is_read_only_from_a_worker() {
        let ticket: Ticket<u64> = Ticket {
            place: Place::InWorker {
                pid: 1,
                addr: 4096,
                len: 16,
            },
        };
        let bytes = postcard::to_allocvec(&ticket).unwrap();
        assert!(bytes.len() < 32, "{} bytes", bytes.len());
        let back: Ticket<u64> = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(back.len(), 16);
        let mut into = [0u64; 16];
        let err = back
            .read(&[0..8, 8..16], &mut into)
            .unwrap_err()
            .to_string();
        assert!(err.contains("process 1, which is no worker"), "{err}");
        assert_eq!(into, [0; 16]);
    }
}
