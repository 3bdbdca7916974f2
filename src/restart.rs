//! Runs that heal themselves: when a worker fails, the coordinator stops the ring and
//! starts a new one from the last state it holds.
//!
//! The framework cannot know a stage's state; the stage keeps it. A stage opts in by
//! giving its handler [`Restart`]: its workers send their state to the coordinator from
//! time to time (in reports, as any other data), the handler keeps the last whole one, and
//! [`Restart::rewind`] makes the next workers start from it. [`Launcher::restarts`] and
//! [`Launcher::launch_restarting`] do the rest: stop and reap the failed ring (as any failure
//! does), ask the stage to rewind, tell the caller, and start a new ring, up to the given
//! number of times.
//!
//! [`Launcher::restarts`]: crate::Launcher::restarts
//! [`Launcher::launch_restarting`]: crate::Launcher::launch_restarting

use crate::error::LaunchError;
use crate::stage::{Handler, Stage};

/// The handler of a stage whose run can go on after a worker fails, from a state the
/// handler holds.
///
/// ```
/// use ringleader::{Coordinator, Handler, LaunchError, Launcher, Restart, Rewind, Ring, Stage,
///     StageError, Transport};
///
/// /// Counts to 20 from `from`, one step at a time, reporting each.
/// #[derive(Clone)]
/// struct Count {
///     from: u64,
/// }
///
/// impl Stage for Count {
///     type Output = u64;
///
///     fn work(self, ring: &mut Ring) -> Result<u64, StageError> {
///         for step in self.from + 1..=20 {
///             ring.set_step(step);
///             if step == 5 && self.from == 0 {
///                 return Err("the first ring fails at step 5".into());
///             }
///             ring.report(&step)?;
///         }
///         Ok(20)
///     }
/// }
///
/// /// Keeps the last count it heard.
/// struct Kept(u64);
///
/// impl Handler for Kept {
///     type Report = u64;
///     type Answer = ();
///
///     fn on_report(&mut self, _: usize, step: u64, _: &mut Coordinator<'_, ()>)
///         -> Result<(), StageError> {
///         self.0 = step;
///         Ok(())
///     }
/// }
///
/// impl Restart<Count> for Kept {
///     fn rewind(&mut self, stage: &mut Count, _failure: &LaunchError) -> Option<Rewind> {
///         stage.from = self.0;
///         Some(Rewind::from_step(self.0))
///     }
/// }
///
/// // The worker fails at step 5 of the first ring; the second goes on from step 4.
/// let (outputs, _) = Launcher::new()
///     .transport(Transport::Threads)
///     .restarts(1)
///     .launch_restarting(Count { from: 0 }, &mut Kept(0), |restarted| {
///         assert_eq!(restarted.rewind, Rewind::from_step(4));
///     })?;
/// assert_eq!(outputs, vec![20]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub trait Restart<S: Stage>: Handler {
    /// Called on the coordinator when a run failed with `failure` and a restart remains:
    /// make `stage`, the workers' configuration, start the next ring from the last whole
    /// state the handler holds, and say where that is. `None` when there is nothing to go
    /// on from: the failure then ends the run.
    fn rewind(&mut self, stage: &mut S, failure: &LaunchError) -> Option<Rewind>;
}

/// Where a restarted run goes on from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct Rewind {
    /// The step whose state the new workers start from, for stages that count steps.
    pub step: Option<u64>,
}

impl Rewind {
    /// The new workers go on from the state after `step`.
    pub fn from_step(step: u64) -> Rewind {
        Rewind { step: Some(step) }
    }

    /// The new workers start over, for stages without steps (their coordinator side keeps
    /// what was done).
    pub fn over() -> Rewind {
        Rewind { step: None }
    }
}

/// A restart that happened: the failure that caused it, and where the run went on from.
#[derive(Debug)]
#[non_exhaustive]
pub struct Restarted {
    /// Why the ring was restarted.
    pub failure: LaunchError,
    /// Where it went on from.
    pub rewind: Rewind,
    /// Which restart this was, from 1.
    pub attempt: u32,
}

impl LaunchError {
    /// Whether a run that failed this way may be restarted: a worker failed, a step timed
    /// out or the workers deadlocked. A stop signal, a deliberate stop, the coordinator's
    /// own failure and a launch that could not start are final.
    pub fn can_restart(&self) -> bool {
        matches!(
            self,
            LaunchError::Worker(_) | LaunchError::Timeout { .. } | LaunchError::Deadlock { .. }
        )
    }
}
