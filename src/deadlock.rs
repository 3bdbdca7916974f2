//! Recognising a circular wait from the progress board.
//!
//! A worker marks itself waiting only after a receive has found nothing for a short while,
//! so the hot path never touches the mark. A wait is *stuck* when nothing is in flight on
//! the link it waits on: the sender counts a frame before it sends it and the receiver
//! after it has it, so equal counts mean no frame is buffered or on its way. A worker can
//! also wait in a send, for its neighbour to take frames off a full link (between
//! processes); it then waits for that neighbour whatever is in flight. Workers that
//! are stuck on each other in a cycle can never move again. So can a set of workers that
//! are all stuck while the coordinator has no report left to handle: the coordinator only
//! answers reports. The supervisor declares a deadlock only when it has seen the same
//! stuck state unchanged for [`SETTLE`]: for a cycle, the counters of the ranks in it,
//! which nothing outside it can move (other ranks may go on working meanwhile); for a
//! deadlock through the coordinator or a barrier, every counter and report.

use std::time::{Duration, Instant};

use crate::progress::{Board, Link, Reading, WaitingOn};

/// How long a stuck state must hold, unchanged, before it is called a deadlock.
pub(crate) const SETTLE: Duration = Duration::from_millis(300);

/// Who a worker waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Party {
    /// The worker of this rank.
    Rank(usize),
    /// The coordinator.
    Coordinator,
    /// The other workers, at a barrier.
    Barrier,
    /// The worker of this rank, to take what the blocked one sent it: between processes a
    /// link holds only a few hundred frames its receiver has not taken.
    Receiver(usize),
}

impl Party {
    /// The rank waited for, if a worker is.
    fn rank(self) -> Option<usize> {
        match self {
            Party::Rank(rank) | Party::Receiver(rank) => Some(rank),
            Party::Coordinator | Party::Barrier => None,
        }
    }
}

/// One blocked worker in a deadlock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wait {
    /// The blocked worker's rank.
    pub rank: usize,
    /// Its process id, for the processes transport.
    pub pid: Option<u32>,
    /// The step it was on.
    pub step: Option<u64>,
    /// Who it waits for.
    pub on: Party,
}

/// The waits of a deadlock: each blocked rank, its step, and who it waits for.
type Waits = Vec<(usize, Option<u64>, Party)>;

/// A stuck state as the watch last saw it.
#[derive(Debug)]
struct Seen {
    /// The readings that must hold still, by rank.
    state: Vec<(usize, Reading)>,
    /// The reports the coordinator had handled, where they count.
    handled: Vec<u64>,
    /// Since when it has held.
    since: Instant,
}

/// Watches the board for a wait that can never end.
#[derive(Debug, Default)]
pub(crate) struct Watch {
    /// The stuck state last seen.
    seen: Option<Seen>,
}

impl Watch {
    /// Looks at the board. `live[r]` says rank `r` has not ended; `handled[r]` counts the
    /// reports the coordinator has taken from rank `r`. Returns the waits of a deadlock
    /// once it has held for [`SETTLE`].
    pub(crate) fn check(&mut self, board: &Board, live: &[bool], handled: &[u64]) -> Option<Waits> {
        let readings: Vec<Reading> = (0..live.len()).map(|rank| board.read(rank)).collect();
        let Some((found, cycle)) = stuck(&readings, live, handled) else {
            self.seen = None;
            return None;
        };
        // A cycle's ranks wait only on each other: the rest of the ring may go on working,
        // stepping and reporting, without ever moving them. Anything else waits on the
        // coordinator, or on every worker at a barrier, and all of it must hold still.
        let (state, handled) = if cycle {
            let state = found
                .iter()
                .map(|&(rank, ..)| (rank, readings[rank].clone()));
            (state.collect(), Vec::new())
        } else {
            (readings.into_iter().enumerate().collect(), handled.to_vec())
        };
        match &self.seen {
            Some(seen) if seen.state == state && seen.handled == handled => {
                (seen.since.elapsed() >= SETTLE).then_some(found)
            }
            _ => {
                let since = Instant::now();
                self.seen = Some(Seen {
                    state,
                    handled,
                    since,
                });
                None
            }
        }
    }
}

/// The rank a worker's wait points at, if it is stuck: waiting, with nothing in flight.
fn stuck_on(readings: &[Reading], live: &[bool], rank: usize) -> Option<Party> {
    let size = readings.len();
    let me = &readings[rank];
    match me.waiting? {
        WaitingOn::Coordinator => (me.answers_sent == me.answers).then_some(Party::Coordinator),
        // A barrier releases no one until every worker has arrived, so a worker waiting
        // there is stuck exactly as long as some other one is.
        WaitingOn::Barrier => Some(Party::Barrier),
        // A send waits until the neighbour takes frames off the link. Whether it ever will
        // is the neighbour's own state: a neighbour that is not stuck will, one that is
        // stuck elsewhere will not, and one that waits on this link has a frame in flight,
        // so it is not stuck. So the wait is an edge to the neighbour either way.
        WaitingOn::ToLeft => {
            live[(rank + size - 1) % size].then_some(Party::Receiver((rank + size - 1) % size))
        }
        WaitingOn::ToRight => live[(rank + 1) % size].then_some(Party::Receiver((rank + 1) % size)),
        side => {
            let (peer, link) = match side {
                WaitingOn::Left => ((rank + size - 1) % size, Link::Right),
                _ => ((rank + 1) % size, Link::Left),
            };
            let in_flight = readings[peer].sent[link as usize] != me.received[link as usize];
            // A peer that ended closes the link, which ends the wait.
            (!in_flight && live[peer]).then_some(Party::Rank(peer))
        }
    }
}

/// The deadlock in this state, if there is one: a cycle of stuck workers (and `true`), or
/// every live worker stuck while the coordinator has nothing left to answer.
fn stuck(readings: &[Reading], live: &[bool], handled: &[u64]) -> Option<(Waits, bool)> {
    let size = readings.len();
    let on: Vec<Option<Party>> = (0..size)
        .map(|rank| {
            if live[rank] {
                stuck_on(readings, live, rank)
            } else {
                None
            }
        })
        .collect();
    let wait = |rank: usize, party: Party| (rank, readings[rank].step, party);
    // A cycle among ranks: follow each rank's wait at most `size` times.
    for start in 0..size {
        let mut path = vec![start];
        let mut at = start;
        while let Some(next) = on[at].and_then(Party::rank) {
            if let Some(pos) = path.iter().position(|&r| r == next) {
                let cycle = &path[pos..];
                // Start the report at the cycle's lowest rank.
                let low = (0..cycle.len()).min_by_key(|&i| cycle[i]).unwrap_or(0);
                let ordered = cycle[low..].iter().chain(&cycle[..low]);
                let waits = ordered
                    .map(|&rank| {
                        let party = on[rank].unwrap_or(Party::Coordinator);
                        wait(rank, party)
                    })
                    .collect();
                return Some((waits, true));
            }
            if path.len() > size {
                break;
            }
            path.push(next);
            at = next;
        }
    }
    // Everyone stuck, on each other, a barrier or the coordinator, and no report left for
    // the coordinator to handle: only an answer could move anyone, and none will come.
    let alive: Vec<usize> = (0..size).filter(|&rank| live[rank]).collect();
    let all_stuck = !alive.is_empty() && alive.iter().all(|&rank| on[rank].is_some());
    let reports_handled = alive
        .iter()
        .all(|&rank| readings[rank].reports == handled[rank]);
    (all_stuck && reports_handled).then(|| {
        let waits = alive
            .iter()
            .filter_map(|&rank| on[rank].map(|party| wait(rank, party)))
            .collect();
        (waits, false)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The waits of [`stuck`]'s deadlock, if any.
    fn stuck_waits(readings: &[Reading], live: &[bool], handled: &[u64]) -> Option<Waits> {
        stuck(readings, live, handled).map(|(waits, _)| waits)
    }

    fn reading(waiting: Option<WaitingOn>) -> Reading {
        Reading {
            step: Some(3),
            waiting,
            sent: [0, 0],
            received: [0, 0],
            reports: 0,
            answers: 0,
            answers_sent: 0,
        }
    }

    #[test]
    fn two_ranks_receiving_first_is_a_cycle() {
        // Rank 0 waits on its right (rank 1), rank 1 on its left (rank 0).
        let readings = [
            reading(Some(WaitingOn::Right)),
            reading(Some(WaitingOn::Left)),
        ];
        let found = stuck_waits(&readings, &[true, true], &[0, 0]).unwrap();
        assert_eq!(
            found,
            vec![(0, Some(3), Party::Rank(1)), (1, Some(3), Party::Rank(0))]
        );
    }

    #[test]
    fn a_frame_in_flight_is_not_a_deadlock() {
        let mut readings = [
            reading(Some(WaitingOn::Right)),
            reading(Some(WaitingOn::Left)),
        ];
        // Rank 0 has sent rank 1 a frame it has not received yet.
        readings[0].sent = [1, 0];
        assert!(stuck_waits(&readings, &[true, true], &[0, 0]).is_none());
    }

    #[test]
    fn a_chain_into_a_cycle_reports_only_the_cycle() {
        // 0 and 1 wait on each other; 2 waits on 1 but is not part of the cycle.
        let readings = [
            reading(Some(WaitingOn::Right)),
            reading(Some(WaitingOn::Left)),
            reading(Some(WaitingOn::Left)),
        ];
        let found = stuck_waits(&readings, &[true; 3], &[0; 3]).unwrap();
        let ranks: Vec<usize> = found.iter().map(|w| w.0).collect();
        assert_eq!(ranks, vec![0, 1]);
    }

    #[test]
    fn everyone_stuck_on_a_silent_coordinator_is_a_deadlock() {
        let readings = [
            reading(Some(WaitingOn::Coordinator)),
            reading(Some(WaitingOn::Left)),
        ];
        assert!(stuck_waits(&readings, &[true, true], &[0, 0]).is_some());
        // But not while a report waits to be handled.
        let mut pending = readings.clone();
        pending[0].reports = 1;
        assert!(stuck_waits(&pending, &[true, true], &[0, 0]).is_none());
        // Nor while one worker still computes.
        let busy = [reading(Some(WaitingOn::Coordinator)), reading(None)];
        assert!(stuck_waits(&busy, &[true, true], &[0, 0]).is_none());
    }

    #[test]
    fn sends_on_full_links_round_the_ring_are_a_cycle() {
        // Each rank waits for its right neighbour to take frames, with frames in flight on
        // every link: in flight or not, a send waits for its receiver.
        let mut readings = [
            reading(Some(WaitingOn::ToRight)),
            reading(Some(WaitingOn::ToRight)),
            reading(Some(WaitingOn::ToRight)),
        ];
        for r in &mut readings {
            r.sent = [300, 0];
            r.received = [260, 0];
        }
        let found = stuck_waits(&readings, &[true; 3], &[0; 3]).unwrap();
        assert_eq!(
            found,
            vec![
                (0, Some(3), Party::Receiver(1)),
                (1, Some(3), Party::Receiver(2)),
                (2, Some(3), Party::Receiver(0)),
            ]
        );
        // A send mixed with receives: rank 0 waits to hand rank 1 a frame, but rank 1
        // waits for a frame from its right (rank 2), which waits for one from rank 0.
        let mut mixed = [
            reading(Some(WaitingOn::ToRight)),
            reading(Some(WaitingOn::Right)),
            reading(Some(WaitingOn::Right)),
        ];
        mixed[0].sent = [300, 0];
        mixed[1].received = [260, 0];
        let found = stuck_waits(&mixed, &[true; 3], &[0; 3]).unwrap();
        assert_eq!(
            found,
            vec![
                (0, Some(3), Party::Receiver(1)),
                (1, Some(3), Party::Rank(2)),
                (2, Some(3), Party::Rank(0)),
            ]
        );
    }

    #[test]
    fn a_send_is_not_stuck_on_a_receiver_that_can_still_take_frames() {
        // Rank 1 waits to receive from its left, where rank 0's frame is in flight: it
        // takes it, and rank 0's send goes on.
        let mut readings = [
            reading(Some(WaitingOn::ToRight)),
            reading(Some(WaitingOn::Left)),
        ];
        readings[0].sent = [5, 0];
        readings[1].received = [4, 0];
        assert!(stuck_waits(&readings, &[true, true], &[0, 0]).is_none());
        // Nor on a receiver that still computes: it may receive later.
        let busy = [reading(Some(WaitingOn::ToRight)), reading(None)];
        assert!(stuck_waits(&busy, &[true, true], &[0, 0]).is_none());
        // Nor on one that ended: the send fails instead.
        let ended = [reading(Some(WaitingOn::ToRight)), reading(None)];
        assert!(stuck_waits(&ended, &[true, false], &[0, 0]).is_none());
    }

    #[test]
    fn a_barrier_that_a_stuck_worker_never_reaches_is_a_deadlock() {
        // Rank 1 waits on rank 0, which waits at a barrier rank 1 never reaches.
        let readings = [
            reading(Some(WaitingOn::Barrier)),
            reading(Some(WaitingOn::Right)),
        ];
        let found = stuck_waits(&readings, &[true, true], &[0, 0]).unwrap();
        assert_eq!(
            found,
            vec![(0, Some(3), Party::Barrier), (1, Some(3), Party::Rank(0))]
        );
        // While one of them still works, the barrier may yet open.
        let busy = [reading(Some(WaitingOn::Barrier)), reading(None)];
        assert!(stuck_waits(&busy, &[true, true], &[0, 0]).is_none());
    }
}
