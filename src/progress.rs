//! The progress board: one record per rank that the coordinator can read at any time, even
//! after the worker was killed.
//!
//! Workers write their own record with relaxed stores (a step number, a counter per link),
//! so keeping it costs nothing measurable on the hot path. The records live in a
//! `MAP_SHARED` anonymous mapping made before the fork, so forked workers and the
//! coordinator see the same memory; with the threads transport the mapping is simply shared
//! by the threads. The coordinator only reads them, except for the `cancelled` flag and its
//! own answer counters.

use std::io;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use crate::shared::{SharedArray, SharedZeroed};

/// What a worker is blocked on, as it last said. Links, not ranks: on a ring of two, both
/// neighbours are the same rank.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum WaitingOn {
    /// A frame on the link from the left neighbour.
    Left,
    /// A frame on the link from the right neighbour.
    Right,
    /// An answer from the coordinator.
    Coordinator,
    /// The other workers, at a barrier.
    Barrier,
    /// The left neighbour, to take a frame this worker is sending it: between processes a
    /// link's socket holds only so many frames its receiver has not taken.
    ToLeft,
    /// The right neighbour, likewise.
    ToRight,
}

/// Which of a worker's two outgoing (or incoming) ring links.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Link {
    Right = 0,
    Left = 1,
}

/// One rank's record. Only that rank writes it, except `answers_sent`, which only the
/// coordinator writes.
#[repr(C, align(64))]
struct Record {
    /// 0 before the first step, else the step plus one.
    step: AtomicU64,
    /// 0 while not blocked; 1 for the coordinator; 2 for the left link, 3 for the right; 4
    /// at a barrier; 5 and 6 sending to the left and to the right neighbour.
    waiting: AtomicU64,
    /// Frames sent to the right and to the left neighbour, counted before the send.
    sent: [AtomicU64; 2],
    /// Frames received, by the sender's link they came over: `[Right]` counts frames from
    /// the left neighbour (its right link), `[Left]` those from the right neighbour.
    received: [AtomicU64; 2],
    /// Reports sent up, counted before the send.
    reports: AtomicU64,
    /// Answers received from the coordinator.
    answers: AtomicU64,
    /// Answers the coordinator sent this rank, counted before the send.
    answers_sent: AtomicU64,
    /// The rank's hop count: the largest any frame or answer it received carried.
    hops: AtomicU64,
    /// 0 before the first step, else the first step the rank announced plus one.
    first_step: AtomicU64,
    /// The rank's hop count when it announced its first step.
    hops_at_first_step: AtomicU64,
    /// 0 while the rank steps, else its hop count plus one when it said its steps were
    /// done.
    hops_at_steps_done: AtomicU64,
    /// Blocks the rank lent the coordinator that the coordinator has read (see
    /// `transport::lend`). Only the coordinator writes it.
    lent_read: AtomicU64,
    /// Reports the coordinator has taken from the rank, wrapping. Only the coordinator
    /// writes it; a worker too far ahead of it sleeps on it (a futex).
    reports_taken: AtomicU32,
    /// 1 while the rank may be asleep on `reports_taken`. Only the rank writes it.
    awaits_taken: AtomicU32,
}

/// The coordinator's flag that ends every wait.
#[repr(C, align(64))]
struct Header {
    cancelled: AtomicU64,
    /// The barrier: how many have arrived in the current round, and the round's number,
    /// which waiters sleep on (a futex, so a wake is immediate across processes too).
    arrived: AtomicU32,
    round: AtomicU32,
}

// SAFETY: both hold only atomics, valid at zero.
unsafe impl SharedZeroed for Record {}
// SAFETY: as above.
unsafe impl SharedZeroed for Header {}

/// Sleeps while `word` holds `expected`, for at most `timeout`, or until woken. The word
/// lives in memory every process of the run maps, so the futex is a shared one.
fn futex_wait(word: &AtomicU32, expected: u32, timeout: std::time::Duration) {
    let timeout = libc::timespec {
        tv_sec: timeout.as_secs().min(i64::MAX as u64) as libc::time_t,
        tv_nsec: libc::c_long::from(timeout.subsec_nanos() as i32),
    };
    // SAFETY: `word` is a live, aligned u32 for the duration of the call, and `timeout` a
    // valid timespec; FUTEX_WAIT only reads the word. Early returns (a wake, a signal, the
    // value already changed) are all fine: callers look at the word again.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT,
            expected,
            &timeout as *const libc::timespec,
            std::ptr::null::<u32>(),
            0u32,
        );
    }
}

/// Wakes every process or thread sleeping on `word`.
fn futex_wake(word: &AtomicU32) {
    // SAFETY: `word` is a live, aligned u32; FUTEX_WAKE does not touch it.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAKE,
            i32::MAX,
            std::ptr::null::<libc::timespec>(),
            std::ptr::null::<u32>(),
            0u32,
        );
    }
}

/// The shared records of one run.
pub(crate) struct Board {
    header: SharedArray<Header>,
    records: SharedArray<Record>,
}

/// A snapshot of the counters that show whether anything moved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Reading {
    pub(crate) step: Option<u64>,
    pub(crate) waiting: Option<WaitingOn>,
    /// Frames sent to the right and to the left.
    pub(crate) sent: [u64; 2],
    /// Frames received, indexed by the sender's link (see `Record::received`).
    pub(crate) received: [u64; 2],
    pub(crate) reports: u64,
    pub(crate) answers: u64,
    pub(crate) answers_sent: u64,
}

/// A rank's record as it sends it to a coordinator in another process, which keeps its own
/// board (MPI): every counter the deadlock watch and the step timeout read, except the
/// coordinator's own.
#[cfg(feature = "mpi")]
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct Published {
    /// As `Record::step`.
    step: u64,
    /// As `Record::waiting`.
    waiting: u64,
    sent: [u64; 2],
    received: [u64; 2],
    reports: u64,
    answers: u64,
}

/// What one rank recorded for the run's depth (see `stats`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct DepthReading {
    /// The first step it announced, if any.
    pub(crate) first_step: Option<u64>,
    /// The last step it announced.
    pub(crate) last_step: Option<u64>,
    /// Its hop count at the end of its steps: when it said they were done, or else when it
    /// ended.
    pub(crate) hops: u64,
    /// Its hop count when it announced its first step.
    pub(crate) hops_at_first_step: u64,
}

impl Board {
    /// Maps a zeroed board for `ranks` ranks.
    pub(crate) fn new(ranks: usize) -> io::Result<Board> {
        Ok(Board {
            header: SharedArray::new(1)?,
            records: SharedArray::new(ranks)?,
        })
    }

    fn header(&self) -> &Header {
        &self.header[0]
    }

    fn record(&self, rank: usize) -> &Record {
        debug_assert!(rank < self.records.len());
        &self.records[rank.min(self.records.len() - 1)]
    }

    /// Records the step `rank` is on; the first one it announces is kept too, with its hop
    /// count `hops` at that moment.
    pub(crate) fn set_step(&self, rank: usize, step: u64, hops: u64) {
        let record = self.record(rank);
        let step = step.saturating_add(1);
        if record.first_step.load(Ordering::Relaxed) == 0 {
            record.hops_at_first_step.store(hops, Ordering::Relaxed);
            record.first_step.store(step, Ordering::Relaxed);
        }
        record.step.store(step, Ordering::Relaxed);
    }

    /// Records the hop count of `rank`, after a receive raised it.
    pub(crate) fn set_hops(&self, rank: usize, hops: u64) {
        self.record(rank).hops.store(hops, Ordering::Relaxed);
    }

    /// Records that `rank` is done with its steps, at hop count `hops`: what it exchanges
    /// after (a final state gathered, say) is no part of any step's depth.
    pub(crate) fn steps_done(&self, rank: usize, hops: u64) {
        let record = self.record(rank);
        if record.hops_at_steps_done.load(Ordering::Relaxed) == 0 {
            record
                .hops_at_steps_done
                .store(hops.saturating_add(1), Ordering::Relaxed);
        }
    }

    /// What `rank` recorded for the depth. Read after the run, once the workers have ended.
    pub(crate) fn depth_reading(&self, rank: usize) -> DepthReading {
        let record = self.record(rank);
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        DepthReading {
            first_step: load(&record.first_step).checked_sub(1),
            last_step: load(&record.step).checked_sub(1),
            hops: load(&record.hops_at_steps_done)
                .checked_sub(1)
                .unwrap_or_else(|| load(&record.hops)),
            hops_at_first_step: load(&record.hops_at_first_step),
        }
    }

    /// How many ranks the board has records for.
    pub(crate) fn ranks(&self) -> usize {
        self.records.len()
    }

    pub(crate) fn step(&self, rank: usize) -> Option<u64> {
        self.record(rank)
            .step
            .load(Ordering::Relaxed)
            .checked_sub(1)
    }

    /// Counts a frame about to be sent. Only the owner writes its counters, so a load and
    /// a store do, without a locked instruction.
    pub(crate) fn count_sent(&self, rank: usize, link: Link) {
        bump(&self.record(rank).sent[link as usize]);
    }

    /// Counts a frame received over the sender's `over` link.
    pub(crate) fn count_received(&self, rank: usize, over: Link) {
        bump(&self.record(rank).received[over as usize]);
    }

    pub(crate) fn count_report(&self, rank: usize) {
        bump(&self.record(rank).reports);
    }

    /// The coordinator has taken a report from `rank`: wakes the rank if it waits for
    /// room to send another ([`Board::await_room_for_report`]).
    pub(crate) fn count_report_taken(&self, rank: usize) {
        let record = self.record(rank);
        record.reports_taken.fetch_add(1, Ordering::SeqCst);
        if record.awaits_taken.load(Ordering::SeqCst) != 0 {
            futex_wake(&record.reports_taken);
        }
    }

    /// In `rank`'s worker, before it counts a report: waits until the coordinator has
    /// taken all but fewer than `ahead` of those it counted before. `false` if the run is
    /// being stopped meanwhile. The race with [`Board::count_report_taken`] is closed as a
    /// futex closes it: each side writes its word, then reads the other's.
    pub(crate) fn await_room_for_report(&self, rank: usize, ahead: u32) -> bool {
        let record = self.record(rank);
        let counted = record.reports.load(Ordering::Relaxed) as u32;
        loop {
            let taken = record.reports_taken.load(Ordering::SeqCst);
            if counted.wrapping_sub(taken) < ahead {
                return true;
            }
            if self.cancelled() {
                return false;
            }
            record.awaits_taken.store(1, Ordering::SeqCst);
            if record.reports_taken.load(Ordering::SeqCst) == taken {
                futex_wait(
                    &record.reports_taken,
                    taken,
                    std::time::Duration::from_millis(100),
                );
            }
            record.awaits_taken.store(0, Ordering::SeqCst);
        }
    }

    pub(crate) fn count_answer(&self, rank: usize) {
        bump(&self.record(rank).answers);
    }

    /// The coordinator counts an answer it is about to send to `rank`.
    pub(crate) fn count_answer_sent(&self, rank: usize) {
        bump(&self.record(rank).answers_sent);
    }

    /// The coordinator counts a block `rank` lent it, read: the rank may free it.
    pub(crate) fn count_lent_read(&self, rank: usize) {
        let read = &self.record(rank).lent_read;
        // Release: the read of the block happened before the rank may write it again.
        read.store(read.load(Ordering::Relaxed) + 1, Ordering::Release);
    }

    /// How many of the blocks `rank` lent the coordinator it has read.
    pub(crate) fn lent_read(&self, rank: usize) -> u64 {
        self.record(rank).lent_read.load(Ordering::Acquire)
    }

    pub(crate) fn set_waiting(&self, rank: usize, on: Option<WaitingOn>) {
        let code = match on {
            None => 0,
            Some(WaitingOn::Coordinator) => 1,
            Some(WaitingOn::Left) => 2,
            Some(WaitingOn::Right) => 3,
            Some(WaitingOn::Barrier) => 4,
            Some(WaitingOn::ToLeft) => 5,
            Some(WaitingOn::ToRight) => 6,
        };
        // Release: the counters written before the wait are visible with it.
        self.record(rank).waiting.store(code, Ordering::Release);
    }

    /// Ends every wait on the ring: the coordinator is stopping the run.
    pub(crate) fn cancel(&self) {
        self.header().cancelled.store(1, Ordering::Release);
        // Workers asleep at the barrier look at the flag now rather than at their next
        // timeout.
        futex_wake(&self.header().round);
    }

    /// Arrives at the barrier of a ring of `ranks`. Returns the round to wait out, or
    /// `None` for the last to arrive, which has released the others.
    ///
    /// The round is read before arriving: it cannot move on until this worker has arrived
    /// too, so a waiter never mistakes the next round for its own.
    pub(crate) fn arrive(&self, ranks: usize) -> Option<u32> {
        let header = self.header();
        let round = header.round.load(Ordering::SeqCst);
        if header.arrived.fetch_add(1, Ordering::SeqCst) + 1 < ranks as u32 {
            return Some(round);
        }
        // Nobody can arrive for the next round before the round number moves, so the count
        // is reset first.
        header.arrived.store(0, Ordering::SeqCst);
        header.round.fetch_add(1, Ordering::SeqCst);
        futex_wake(&header.round);
        None
    }

    /// Whether barrier round `round` is over.
    pub(crate) fn released(&self, round: u32) -> bool {
        self.header().round.load(Ordering::SeqCst) != round
    }

    /// Sleeps while barrier round `round` lasts, for at most `timeout`.
    pub(crate) fn sleep_in_round(&self, round: u32, timeout: std::time::Duration) {
        futex_wait(&self.header().round, round, timeout);
    }

    pub(crate) fn cancelled(&self) -> bool {
        self.header().cancelled.load(Ordering::Acquire) != 0
    }

    /// `rank`'s own record, to send to a coordinator in another process.
    #[cfg(feature = "mpi")]
    pub(crate) fn published(&self, rank: usize) -> Published {
        let record = self.record(rank);
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        Published {
            step: load(&record.step),
            waiting: record.waiting.load(Ordering::Acquire),
            sent: [load(&record.sent[0]), load(&record.sent[1])],
            received: [load(&record.received[0]), load(&record.received[1])],
            reports: load(&record.reports),
            answers: load(&record.answers),
        }
    }

    /// Writes what `rank` published into its record here, where the coordinator reads it.
    /// The coordinator's own counter (`answers_sent`) stays as it is.
    #[cfg(feature = "mpi")]
    pub(crate) fn mirror(&self, rank: usize, published: &Published) {
        let record = self.record(rank);
        let store = |counter: &AtomicU64, value| counter.store(value, Ordering::Relaxed);
        store(&record.step, published.step);
        for side in 0..2 {
            store(&record.sent[side], published.sent[side]);
            store(&record.received[side], published.received[side]);
        }
        store(&record.reports, published.reports);
        store(&record.answers, published.answers);
        // Release: the counters are visible with the wait, as `set_waiting` makes them.
        record.waiting.store(published.waiting, Ordering::Release);
    }

    pub(crate) fn read(&self, rank: usize) -> Reading {
        let record = self.record(rank);
        let waiting = match record.waiting.load(Ordering::Acquire) {
            0 => None,
            1 => Some(WaitingOn::Coordinator),
            2 => Some(WaitingOn::Left),
            4 => Some(WaitingOn::Barrier),
            5 => Some(WaitingOn::ToLeft),
            6 => Some(WaitingOn::ToRight),
            _ => Some(WaitingOn::Right),
        };
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        Reading {
            step: load(&record.step).checked_sub(1),
            waiting,
            sent: [load(&record.sent[0]), load(&record.sent[1])],
            received: [load(&record.received[0]), load(&record.received[1])],
            reports: load(&record.reports),
            answers: load(&record.answers),
            answers_sent: load(&record.answers_sent),
        }
    }
}

fn bump(counter: &AtomicU64) {
    counter.store(counter.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
}

impl std::fmt::Debug for Board {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Board")
            .field("ranks", &self.records.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fresh_board_reads_as_nothing_happened() {
        let board = Board::new(3).unwrap();
        for rank in 0..3 {
            let reading = board.read(rank);
            assert_eq!(reading.step, None);
            assert_eq!(reading.waiting, None);
            assert_eq!(reading.sent, [0, 0]);
        }
        assert!(!board.cancelled());
    }

    #[cfg(feature = "mpi")]
    #[test]
    fn a_published_record_reads_the_same_on_the_board_it_is_mirrored_to() {
        let (theirs, ours) = (Board::new(3).unwrap(), Board::new(3).unwrap());
        theirs.set_step(2, 7, 0);
        theirs.count_sent(2, Link::Left);
        theirs.count_received(2, Link::Right);
        theirs.count_received(2, Link::Right);
        theirs.count_report(2);
        theirs.set_waiting(2, Some(WaitingOn::Coordinator));
        ours.count_answer_sent(2);
        ours.mirror(2, &theirs.published(2));
        let mut want = theirs.read(2);
        want.answers_sent = 1;
        assert_eq!(
            ours.read(2),
            want,
            "everything but the coordinator's own count"
        );
        assert_eq!(
            ours.read(1),
            Board::new(3).unwrap().read(1),
            "other records untouched"
        );
    }

    #[test]
    fn records_are_kept_apart() {
        let board = Board::new(2).unwrap();
        board.set_step(1, 0, 0);
        board.count_sent(1, Link::Left);
        board.count_received(0, Link::Right);
        board.set_waiting(0, Some(WaitingOn::Right));
        board.set_waiting(1, Some(WaitingOn::Coordinator));
        board.cancel();
        let (zero, one) = (board.read(0), board.read(1));
        assert_eq!((zero.step, one.step), (None, Some(0)));
        assert_eq!((zero.sent, one.sent), ([0, 0], [0, 1]));
        assert_eq!(zero.received, [1, 0]);
        assert_eq!(zero.waiting, Some(WaitingOn::Right));
        assert_eq!(one.waiting, Some(WaitingOn::Coordinator));
        assert!(board.cancelled());
    }

    #[test]
    fn the_first_step_and_its_hop_count_are_kept_and_the_last_step_follows() {
        let board = Board::new(1).unwrap();
        assert_eq!(board.depth_reading(0), DepthReading::default());
        board.set_hops(0, 4);
        board.set_step(0, 3, 4);
        board.set_hops(0, 9);
        board.set_step(0, 4, 9);
        board.set_step(0, 5, 9);
        board.set_hops(0, 12);
        let reading = DepthReading {
            first_step: Some(3),
            last_step: Some(5),
            hops: 12,
            hops_at_first_step: 4,
        };
        assert_eq!(board.depth_reading(0), reading);
        // What comes after the steps are done does not count.
        board.steps_done(0, 12);
        board.set_hops(0, 15);
        board.steps_done(0, 15);
        assert_eq!(board.depth_reading(0), reading);
    }
}
