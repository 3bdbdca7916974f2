//! The barrier of the textbook's threads mode, which gives up when the run is being stopped.
//!
//! `std::sync::Barrier` waits for ever: if one thread of a `-t` run fails, the others would
//! wait at the next barrier for a thread that never comes. This one waits on a condition
//! variable as that one does (a wake is immediate), but looks every few milliseconds
//! whether the framework is ending the run, and then returns an error instead.

use std::sync::{Condvar, Mutex, PoisonError};
use std::time::Duration;

use ringleader::RingError;

/// How often a waiting thread looks whether the run is being stopped.
const LOOK: Duration = Duration::from_millis(5);

/// A reusable barrier for `parties` threads.
#[derive(Debug)]
pub(crate) struct Barrier {
    parties: usize,
    /// How many have arrived in this round, and the round's number.
    state: Mutex<(usize, u64)>,
    all_here: Condvar,
}

impl Barrier {
    pub(crate) fn new(parties: usize) -> Barrier {
        Barrier {
            parties,
            state: Mutex::new((0, 0)),
            all_here: Condvar::new(),
        }
    }

    /// Waits until every party has arrived.
    ///
    /// # Errors
    ///
    /// [`RingError::Stopped`] once `stopping` says the run is ending.
    pub(crate) fn wait(&self, stopping: impl Fn() -> bool) -> Result<(), RingError> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let round = state.1;
        state.0 += 1;
        if state.0 == self.parties {
            *state = (0, round + 1);
            self.all_here.notify_all();
            return Ok(());
        }
        while state.1 == round {
            if stopping() {
                return Err(RingError::Stopped);
            }
            state = self
                .all_here
                .wait_timeout(state, LOOK)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    use super::*;

    #[test]
    fn no_thread_passes_before_every_thread_arrives() {
        let barrier = Barrier::new(4);
        let arrived = AtomicUsize::new(0);
        std::thread::scope(|scope| {
            for _ in 0..4 {
                scope.spawn(|| {
                    for round in 1..=50 {
                        arrived.fetch_add(1, Ordering::SeqCst);
                        barrier.wait(|| false).unwrap();
                        assert!(arrived.load(Ordering::SeqCst) >= round * 4);
                        barrier.wait(|| false).unwrap();
                    }
                });
            }
        });
    }

    #[test]
    fn a_wait_gives_up_when_the_run_stops() {
        let barrier = Barrier::new(2);
        let stopping = AtomicBool::new(false);
        std::thread::scope(|scope| {
            let waiter = scope.spawn(|| barrier.wait(|| stopping.load(Ordering::SeqCst)));
            stopping.store(true, Ordering::SeqCst);
            assert!(matches!(waiter.join().unwrap(), Err(RingError::Stopped)));
        });
    }
}
