//! Running one worker: the stage, then one last word to the coordinator.

use crate::error::{Cause, RingError, chain};
use crate::ring::Ring;
use crate::stage::{Stage, Up};
use crate::transport::SendFailure;

/// Runs `stage` on `ring` and reports how it ended. Returns the exit code for a process.
pub(crate) fn run<S: Stage>(stage: S, mut ring: Ring<S>) -> i32 {
    let outcome = crate::panic::catch(|| stage.work(&mut ring));
    let step = ring.step;
    let (last_word, code) = match outcome {
        Ok(Ok(output)) => (Up::Done(output), 0),
        Ok(Err(err)) => (
            Up::Failed {
                step,
                cause: classify(err.as_ref()),
            },
            1,
        ),
        Err(message) => (
            Up::Failed {
                step,
                cause: Cause::Panicked(message),
            },
            101,
        ),
    };
    match ring.up.send(last_word) {
        Ok(()) => code,
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
