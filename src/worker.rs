//! Running one worker: the stage, then one last word to the coordinator.

use crate::error::{Cause, RingError, chain};
use crate::message::Up;
use crate::ring::Ring;
use crate::stage::Stage;
use crate::transport::{Payload, SendFailure, Transport, encode};

/// How a worker failed.
pub(crate) struct Failed {
    /// The last step it announced.
    pub(crate) step: Option<u64>,
    pub(crate) cause: Cause,
    /// The exit code a process ends with.
    pub(crate) code: i32,
}

/// Runs `stage` on `ring`: the one worker loop every launcher runs. Returns the encoded
/// output, or how the worker failed.
pub(crate) fn work<S: Stage>(stage: S, ring: &mut Ring) -> Result<Payload, Failed> {
    let outcome = crate::panic::catch(|| stage.work(ring));
    // Whatever the stage started ends with it, before the coordinator hears of its end.
    crate::descendants::end(descendants_scope(ring));
    let step = ring.step;
    let failed = |cause, code| Err(Failed { step, cause, code });
    match outcome {
        Ok(Ok(output)) => match encode(&output) {
            Ok(payload) => Ok(payload),
            Err(e) => failed(
                Cause::Failed(format!("could not encode its output: {e}")),
                1,
            ),
        },
        Ok(Err(err)) => failed(classify(err.as_ref()), 1),
        Err(message) => failed(Cause::Panicked(message), 101),
    }
}

/// Whose child processes a worker on `ring` ends: a worker thread's own, or its whole
/// process's where the process is the worker's alone.
fn descendants_scope(ring: &Ring) -> crate::descendants::Scope {
    use crate::descendants::Scope;
    match ring.transport() {
        Transport::Processes => Scope::Process,
        Transport::Threads => Scope::Thread,
        // Rank 0's worker is a thread beside the coordinator.
        #[cfg(feature = "mpi")]
        Transport::Mpi if ring.rank() == 0 => Scope::Thread,
        #[cfg(feature = "mpi")]
        Transport::Mpi => Scope::Process,
    }
}

/// Runs `stage` on `ring` and tells the coordinator how it ended. Returns the exit code for
/// a process.
pub(crate) fn run<S: Stage>(stage: S, mut ring: Ring) -> i32 {
    let (last_word, code) = match work(stage, &mut ring) {
        Ok(payload) => (Up::Done(payload), 0),
        Err(Failed { step, cause, code }) => (Up::Failed { step, cause }, code),
    };
    let step = ring.step;
    let done = matches!(last_word, Up::Done(_));
    // A forked worker lends the coordinator the large arrays it sends up (see
    // `transport::lend`): its output's, and those of reports the coordinator may not have
    // read yet. They must outlive the send until the coordinator has read them; it says so
    // once it has taken the output, after every report before it.
    match ring.send_up(last_word) {
        Ok(()) => {
            if done && ring.owes_reads() {
                ring.await_release();
            }
            code
        }
        Err(SendFailure::Encoding(e)) => {
            let cause = Cause::Failed(format!("could not send its output: {e}"));
            // If even this fails, the coordinator is gone and nobody is listening.
            let _ = ring.up.send(Up::Failed { step, cause });
            1
        }
        // The coordinator is gone; nobody is listening.
        Err(_) => code.max(1),
    }
}

/// A worker whose only problem is a neighbour that went away failed because of another.
pub(crate) fn classify(err: &(dyn std::error::Error + Send + Sync + 'static)) -> Cause {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = source {
        if let Some(ring) = e.downcast_ref::<RingError>() {
            if ring.is_secondary() {
                return Cause::PeerLost(chain(err));
            }
            break;
        }
        source = e.source();
    }
    Cause::Failed(chain(err))
}
