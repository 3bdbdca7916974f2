//! What a stage is: the code every worker runs, and, apart from it, the coordinator's side
//! of the conversation.

use std::marker::PhantomData;

use crate::error::RingError;
use crate::message::{Data, Down};
use crate::outbox::Outbox;
use crate::progress::Board;
use crate::ring::Ring;
use crate::transport::{Payload, Tx, encode};

/// The error a stage's code returns. Any error converts into it with `?`; the coordinator
/// receives its message with every cause.
pub type StageError = Box<dyn std::error::Error + Send + Sync>;

/// A stage: the code every worker of a ring runs, and the configuration it runs with.
///
/// The value given to [`Launcher::launch`](crate::Launcher::launch) is copied to every
/// worker (a forked copy, for processes), so its fields are what every worker knows at the
/// start. From then on workers talk only through [`Ring`]: to their neighbours, in
/// collectives, and to the coordinator, whose side of the conversation is a [`Handler`].
///
/// For a stage with nothing to configure,
/// [`Launcher::run`](crate::Launcher::run) takes a closure instead.
pub trait Stage: Clone + Send + 'static {
    /// What each worker returns at the end; [`Launcher::launch`](crate::Launcher::launch)
    /// returns them in rank order.
    type Output: Data;

    /// Runs on every worker. A panic or an error here stops the whole run, and the
    /// coordinator reports it with the worker's rank.
    ///
    /// A process started here (with [`std::process::Command`], say) ends with the worker:
    /// once `work` returns or fails, it is killed, with whatever it started, before the
    /// coordinator hears of the end; so is one still running when the run is stopped. A
    /// program meant to outlive the run must be started by the caller of the launch.
    ///
    /// # Errors
    ///
    /// Whatever the stage decides is a failure; ring errors convert with `?`.
    fn work(self, ring: &mut Ring) -> Result<Self::Output, StageError>;
}

/// The coordinator's side of a stage: what it does with the workers' reports.
///
/// A handler lives on the coordinator only and is borrowed for the run, so it needs
/// neither `Clone` nor `'static`: it can hold references into the caller's data, and the
/// caller has its state back when the launch returns.
pub trait Handler {
    /// What workers send with [`Ring::report`] or [`Ring::ask`].
    type Report: Data;
    /// What the coordinator answers with [`Coordinator::send`] or
    /// [`Coordinator::broadcast`].
    type Answer: Data;

    /// Runs on the coordinator for every report, in the order they arrive. [`Gather`]
    /// collects one report from every rank when the protocol is collective.
    ///
    /// # Errors
    ///
    /// An error stops the run.
    ///
    /// [`Gather`]: crate::Gather
    fn on_report(
        &mut self,
        from: usize,
        report: Self::Report,
        coordinator: &mut Coordinator<'_, Self::Answer>,
    ) -> Result<(), StageError>;
}

/// The handler of a stage that never reports: a report ends the run with an error that
/// says so.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoReports;

impl Handler for NoReports {
    type Report = ();
    type Answer = ();

    fn on_report(
        &mut self,
        from: usize,
        (): (),
        _: &mut Coordinator<'_, ()>,
    ) -> Result<(), StageError> {
        Err(format!("rank {from} reported, but the stage was launched without a handler").into())
    }
}

/// The coordinator's handle for answering workers, given to [`Handler::on_report`].
#[derive(Debug)]
pub struct Coordinator<'a, A> {
    pub(crate) downs: &'a [Tx<Down>],
    /// Where an answer waits that the worker's socket has no room for yet.
    pub(crate) outbox: &'a mut Outbox,
    pub(crate) stop: &'a mut bool,
    pub(crate) board: &'a Board,
    /// The coordinator's hop count (see `stats`): answers carry one more.
    pub(crate) hops: u64,
    pub(crate) answers: PhantomData<fn(A)>,
}

impl<A: Data> Coordinator<'_, A> {
    /// How many workers the ring has.
    pub fn size(&self) -> usize {
        self.downs.len()
    }

    /// Sends an answer to one worker, which receives it with [`Ring::recv_answer`] or
    /// [`Ring::ask`]. It never waits for the worker: between processes an answer that the
    /// worker's socket has no room for (it holds some 64 answers not yet read) waits in the
    /// coordinator, and goes as the worker reads the ones before it, while the coordinator
    /// goes on taking reports.
    ///
    /// # Errors
    ///
    /// [`RingError::PeerGone`] if that worker has ended (the run's supervisor reports
    /// why), [`RingError::NoSuchRank`] if the ring has no rank `rank`, and
    /// [`RingError::Encoding`] for an answer serde cannot encode.
    pub fn send(&mut self, rank: usize, answer: A) -> Result<(), RingError> {
        let payload = encode(&answer).map_err(RingError::Encoding)?;
        self.send_payload(rank, payload)
    }

    fn send_payload(&mut self, rank: usize, payload: Payload) -> Result<(), RingError> {
        if rank >= self.downs.len() {
            let size = self.downs.len();
            return Err(RingError::NoSuchRank { rank, size });
        }
        // Counted first: from now on the answer is in flight, so the worker is not stuck.
        self.board.count_answer_sent(rank);
        // It may wait in the outbox, but the coordinator never waits for the worker.
        let answer = Down::Answer(payload, self.hops + 1);
        self.outbox
            .send(self.downs, self.board, rank, answer)
            .map_err(|failure| crate::ring::send_error(failure, rank))
    }

    /// Ends the run early, on purpose: the workers are stopped and reaped, and
    /// [`Launcher::launch`](crate::Launcher::launch) returns
    /// [`LaunchError::Stopped`](crate::LaunchError::Stopped). For a user who asked to quit,
    /// say.
    pub fn stop(&mut self) {
        *self.stop = true;
    }

    /// Sends the same answer to every worker.
    ///
    /// # Errors
    ///
    /// As [`Coordinator::send`], for the first worker that could not be reached.
    pub fn broadcast(&mut self, answer: A) -> Result<(), RingError> {
        for rank in 0..self.size() {
            let payload = encode(&answer).map_err(RingError::Encoding)?;
            self.send_payload(rank, payload)?;
        }
        Ok(())
    }
}
