//! What a stage is: the code every worker runs, plus the coordinator's side of its protocol.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::error::{Cause, RingError};
use crate::progress::Board;
use crate::ring::Ring;
use crate::transport::Tx;

/// Anything that can travel between workers or to the coordinator: serde both ways, and
/// `Send` so the threads transport can move it. Implemented for every such type.
pub trait Message: Serialize + DeserializeOwned + Send + 'static {}

impl<T> Message for T where T: Serialize + DeserializeOwned + Send + 'static {}

/// The error a stage's worker code returns. Any error converts into it with `?`; the
/// coordinator receives its message with every cause.
pub type StageError = Box<dyn std::error::Error + Send + Sync>;

/// A stage: user code that runs on every worker of a ring.
///
/// The value you pass to [`Launcher::launch`](crate::Launcher::launch) is the coordinator's
/// copy; every worker starts from a clone of it (a forked copy, for processes), so the
/// stage's fields are the configuration every worker shares. Workers talk only through
/// messages: to their ring neighbours through [`Ring`], and to the coordinator through
/// [`Ring::report`] and [`Ring::ask`], which [`Stage::on_report`] answers.
///
/// The associated types are the stage's protocol. Use `()` for a part it does not use.
pub trait Stage: Clone + Send + 'static {
    /// What neighbours send each other with [`Ring::send`] and [`Ring::recv`].
    type Message: Message;
    /// What a worker reports to the coordinator.
    type Report: Message;
    /// What the coordinator answers.
    type Answer: Message;
    /// What each worker returns at the end; [`Launcher::launch`](crate::Launcher::launch)
    /// returns them in rank order.
    type Output: Message;

    /// Runs on every worker. A panic or an error here stops the whole run, and the
    /// coordinator reports it with the worker's rank.
    ///
    /// # Errors
    ///
    /// Whatever the stage decides is a failure; ring errors convert with `?`.
    fn work(self, ring: &mut Ring<Self>) -> Result<Self::Output, StageError>;

    /// Runs on the coordinator for every report, in the order they arrive. Reply with
    /// [`Coordinator::send`] or [`Coordinator::broadcast`]; [`Gather`](crate::Gather)
    /// collects one report from every rank when the protocol is collective. The default
    /// ignores reports.
    ///
    /// # Errors
    ///
    /// An error stops the run.
    fn on_report(
        &mut self,
        from: usize,
        report: Self::Report,
        coordinator: &mut Coordinator<'_, Self>,
    ) -> Result<(), StageError> {
        let _ = (from, report, coordinator);
        Ok(())
    }
}

/// The coordinator's handle for answering workers, given to [`Stage::on_report`].
#[derive(Debug)]
pub struct Coordinator<'a, S: Stage> {
    pub(crate) downs: &'a [Tx<Down<S::Answer>>],
    pub(crate) stop: &'a mut bool,
    pub(crate) board: &'a Board,
    /// The coordinator's hop count: the largest a report has brought it so far.
    pub(crate) hops: u64,
}

impl<S: Stage> Coordinator<'_, S> {
    /// How many workers the ring has.
    pub fn size(&self) -> usize {
        self.downs.len()
    }

    /// Sends an answer to one worker, which receives it with [`Ring::recv_answer`] or
    /// [`Ring::ask`].
    ///
    /// # Errors
    ///
    /// [`RingError::PeerGone`] if that worker has ended; the run's supervisor reports why.
    pub fn send(&mut self, rank: usize, answer: S::Answer) -> Result<(), RingError> {
        let down = self
            .downs
            .get(rank)
            .ok_or(RingError::PeerGone { peer: rank })?;
        // Counted first: from now on the answer is in flight, so the worker is not stuck.
        self.board.count_answer_sent(rank);
        down.send(Down::Answer(answer, self.hops + 1))
            .map_err(|failure| crate::ring::send_error(failure, rank))
    }

    /// Ends the run early, on purpose: the workers are stopped and reaped, and
    /// [`Launcher::launch`](crate::Launcher::launch) returns [`LaunchError::Stopped`](crate::LaunchError::Stopped).
    /// For a user who asked to quit, say.
    pub fn stop(&mut self) {
        *self.stop = true;
    }

    /// Sends the same answer to every worker.
    ///
    /// # Errors
    ///
    /// As [`Coordinator::send`], for the first worker that could not be reached.
    pub fn broadcast(&mut self, answer: S::Answer) -> Result<(), RingError>
    where
        S::Answer: Clone,
    {
        for rank in 0..self.size() {
            self.send(rank, answer.clone())?;
        }
        Ok(())
    }
}

/// Worker to coordinator.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Up<R, O> {
    /// A report and its hop count. The last word (`Done` or `Failed`) carries none: it ends
    /// no chain of messages the depth could measure.
    Report(R, u64),
    Done(O),
    Failed {
        step: Option<u64>,
        cause: Cause,
    },
}

/// Coordinator to worker.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Down<A> {
    /// An answer and its hop count.
    Answer(A, u64),
}
