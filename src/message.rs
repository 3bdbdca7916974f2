//! What travels: the bound on every message, and the protocol between a worker and the
//! coordinator. The lowest layer above the transport; the rest of the library builds on it.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::transport::Payload;

/// Anything that can travel between workers or to the coordinator: serde both ways, and
/// `Send` so the threads transport can move it. Implemented for every such type.
pub trait Data: Serialize + DeserializeOwned + Send + 'static {}

impl<T> Data for T where T: Serialize + DeserializeOwned + Send + 'static {}

/// Worker to coordinator.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub(crate) enum Up {
    /// A report, and its hop count.
    Report(Payload, u64),
    /// The worker's output: it has finished.
    Done(Payload),
    Failed {
        step: Option<u64>,
        cause: crate::error::Cause,
    },
}

/// Coordinator to worker.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub(crate) enum Down {
    /// An answer, and its hop count.
    Answer(Payload, u64),
    /// The coordinator has the worker's output: a worker that lent it may exit now.
    Release,
}
