//! A value every worker starts from, which forked workers can let go of.

use std::sync::{Arc, PoisonError, RwLock};

use crate::ring::Ring;
use crate::transport::Transport;

/// A large value that every worker reads when it starts, and that a worker forked as a
/// process can let go of once it has read what it needs.
///
/// A stage is cloned into every worker, and a forked worker sees the coordinator's memory
/// copy-on-write, so a large start (the particles of a run, say) costs nothing to hand
/// over. But while any worker still maps those pages they are not the coordinator's alone:
/// it cannot give them back to the kernel, and writing them copies them first into fresh
/// memory, which the kernel zeroes page by page (and, on a virtual machine, the host may
/// have to find first). A worker that holds its start in an `Inherited` calls
/// [`let_go`](Inherited::let_go) once it is done with it. Between processes that drops the
/// worker's own copy; between threads, which share the coordinator's, and under MPI, whose
/// ranks keep one each, it does nothing.
///
/// Clones share one value. The coordinator [`take`](Inherited::take)s it back when the
/// run's protocol says every worker has let go, and can then write it in place or free it
/// for memory it is about to need. Taking it in a worker between threads would take it from
/// every worker: only [`let_go`](Inherited::let_go) is for workers.
///
/// ```
/// use ringleader::{Inherited, Launcher, Transport};
///
/// let start = Inherited::new(vec![1.5f64; 1 << 20]);
/// let launcher = Launcher::new().workers(2).transport(Transport::Threads);
/// let sums = launcher.run({
///     let start = start.clone();
///     move |ring| {
///         let sum = start.with(|start| start.iter().sum::<f64>()).unwrap_or(0.0);
///         // Done reading: a forked worker gives its copy back here.
///         start.let_go(ring);
///         Ok(sum)
///     }
/// })?;
/// assert_eq!(sums, vec![1.5 * (1 << 20) as f64; 2]);
/// // Threads share the coordinator's copy, which is still here.
/// assert!(start.take().is_some());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Default)]
pub struct Inherited<T>(Arc<RwLock<Option<T>>>);

impl<T> Clone for Inherited<T> {
    fn clone(&self) -> Self {
        Inherited(Arc::clone(&self.0))
    }
}

impl<T> Inherited<T> {
    /// Holds `value` for the workers of a run.
    pub fn new(value: T) -> Self {
        Inherited(Arc::new(RwLock::new(Some(value))))
    }

    /// Reads the value, or returns `None` if it was taken, or let go of in this process.
    /// Readers on different threads do not wait for each other.
    pub fn with<R>(&self, read: impl FnOnce(&T) -> R) -> Option<R> {
        let value = self.0.read().unwrap_or_else(PoisonError::into_inner);
        value.as_ref().map(read)
    }

    /// In a worker forked as a process, drops this worker's copy of the value, so that the
    /// coordinator's pages are its own again; [`with`](Inherited::with) returns `None`
    /// after it. On the other transports the value is shared, and this does nothing. It
    /// waits for every reader to finish, so never call it inside `with`.
    pub fn let_go(&self, ring: &Ring) {
        if ring.transport() == Transport::Processes {
            // The worker's copy of the lock came through `fork`, which the launcher makes
            // from a process with one thread, so no guard can be held in it.
            drop(self.take());
        }
    }

    /// Takes the value out, for every clone in this process; `None` if it is gone already.
    /// Like [`let_go`](Inherited::let_go), it waits for every reader to finish.
    pub fn take(&self) -> Option<T> {
        self.0
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }

    /// Puts `value` back, or in place of the one held, which is returned.
    pub fn put(&self, value: T) -> Option<T> {
        self.0
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .replace(value)
    }
}
