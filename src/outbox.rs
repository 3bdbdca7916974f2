//! The coordinator's answers on their way to the workers.
//!
//! Between processes an answer goes through the worker's down socket, which holds only so
//! many answers the worker has not read. A send past that waits until the worker reads,
//! and the worker may itself be waiting for the coordinator to take a report it is
//! sending: then neither moves, and the coordinator, stuck in a send, no longer watches the
//! run. So an answer that would not fit waits here instead, behind the earlier ones, and
//! goes out as the worker reads those: the coordinator keeps taking reports meanwhile. It
//! counts as sent from the start (`Board::count_answer_sent`), so the deadlock watch sees
//! it in flight. Between threads and MPI ranks a send never waits, and nothing queues.

use std::collections::VecDeque;

use crate::message::Down;
use crate::progress::Board;
use crate::transport::{SendFailure, Tx};

/// How many answers a worker's down socket may hold unread before the next one waits
/// here. The socket holds about 200 KB, some 250 small messages.
const AHEAD: usize = 64;

/// How many bytes of answers it may hold unread, counting what crosses inline (a larger
/// value crosses in shared memory of its own, and a few bytes name it).
const AHEAD_BYTES: usize = 96 << 10;

/// The answers of every rank not yet read, and those not yet sent.
#[derive(Debug)]
pub(crate) struct Outbox {
    ranks: Vec<Queue>,
}

#[derive(Debug, Default)]
struct Queue {
    /// Answers that did not fit yet, oldest first.
    waiting: VecDeque<Down>,
    /// The inline bytes of each answer on the socket that the worker may not have read,
    /// oldest first.
    unread: VecDeque<usize>,
    /// Answers put on the socket.
    sent: u64,
}

impl Outbox {
    pub(crate) fn new(ranks: usize) -> Outbox {
        Outbox {
            ranks: (0..ranks).map(|_| Queue::default()).collect(),
        }
    }

    /// Sends `answer` to `rank` now, or once the worker has read enough of the answers
    /// before it. The error is a send's that failed now; a later one is the worker's end,
    /// which its own channel reports.
    pub(crate) fn send(
        &mut self,
        downs: &[Tx<Down>],
        board: &Board,
        rank: usize,
        answer: Down,
    ) -> Result<(), SendFailure> {
        let (Some(down), Some(queue)) = (downs.get(rank), self.ranks.get_mut(rank)) else {
            return Err(SendFailure::Closed);
        };
        if !matches!(down, Tx::Ipc(_)) {
            return down.send(answer);
        }
        queue.waiting.push_back(answer);
        queue.flush(down, board, rank)
    }

    /// Sends every waiting answer that fits now.
    pub(crate) fn flush(&mut self, downs: &[Tx<Down>], board: &Board) {
        for (rank, (queue, down)) in self.ranks.iter_mut().zip(downs).enumerate() {
            if !queue.waiting.is_empty() && queue.flush(down, board, rank).is_err() {
                // The worker has gone; its channel's close says so.
                queue.waiting.clear();
            }
        }
    }

    /// Whether any answer waits to be sent.
    pub(crate) fn waiting(&self) -> bool {
        self.ranks.iter().any(|queue| !queue.waiting.is_empty())
    }

    /// Drops what waits for `rank`: it has sent its last word and reads no more answers.
    pub(crate) fn forget(&mut self, rank: usize) {
        if let Some(queue) = self.ranks.get_mut(rank) {
            queue.waiting.clear();
        }
    }
}

impl Queue {
    fn flush(&mut self, down: &Tx<Down>, board: &Board, rank: usize) -> Result<(), SendFailure> {
        // Answers the worker has read are off the socket.
        let read = board.read(rank).answers;
        let known_read = |queue: &Queue| queue.sent - queue.unread.len() as u64;
        while known_read(self) < read && self.unread.pop_front().is_some() {}
        while let Some(bytes) = self.waiting.front().map(inline_bytes) {
            let held: usize = self.unread.iter().sum();
            let fits = self.unread.is_empty()
                || (self.unread.len() < AHEAD && held + bytes <= AHEAD_BYTES);
            if !fits {
                break;
            }
            let Some(answer) = self.waiting.pop_front() else {
                break;
            };
            down.send(answer)?;
            self.unread.push_back(bytes);
            self.sent += 1;
        }
        Ok(())
    }
}

/// What an answer puts on the socket, roughly: its inline bytes.
fn inline_bytes(answer: &Down) -> usize {
    match answer {
        Down::Answer(payload, _) => payload.socket_bytes(),
        Down::Release => 0,
    }
}
