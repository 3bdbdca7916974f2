//! SIGINT and SIGTERM to the coordinator: an orderly stop instead of sudden death.
//!
//! While a run is supervised, the coordinator catches both signals and only records them;
//! the supervisor then stops and reaps the workers (or lets the stage stop at a step
//! boundary) and [`Launcher::launch`](crate::Launcher::launch) returns. Workers ignore
//! SIGINT, so a terminal's Ctrl-C, which reaches the whole process group, stops them only
//! through the coordinator.

use std::fmt;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI32, AtomicUsize, Ordering};

use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};

/// A signal that asks the coordinator to stop the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum StopSignal {
    /// SIGINT, as from Ctrl-C.
    Interrupt,
    /// SIGTERM, as from `kill`.
    Terminate,
}

impl StopSignal {
    /// The exit status a shell gives a process killed by this signal: 130 or 143.
    pub fn exit_code(self) -> u8 {
        match self {
            StopSignal::Interrupt => 130,
            StopSignal::Terminate => 143,
        }
    }

    /// The signal's name, such as `SIGINT`.
    pub fn name(self) -> &'static str {
        match self {
            StopSignal::Interrupt => "SIGINT",
            StopSignal::Terminate => "SIGTERM",
        }
    }

    fn from_raw(raw: i32) -> Option<StopSignal> {
        match raw {
            libc::SIGINT => Some(StopSignal::Interrupt),
            libc::SIGTERM => Some(StopSignal::Terminate),
            _ => None,
        }
    }
}

impl fmt::Display for StopSignal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The first stop signal caught since the outermost guard was installed; 0 for none.
static CAUGHT: AtomicI32 = AtomicI32::new(0);
/// How many stop signals were caught: a second one while a stage stops gracefully forces
/// the stop.
static COUNT: AtomicUsize = AtomicUsize::new(0);
/// The handlers to restore when the last guard goes, and how many guards are alive.
static INSTALLED: Mutex<(usize, Option<[SigAction; 2]>)> = Mutex::new((0, None));

extern "C" fn on_stop_signal(raw: libc::c_int) {
    // Only atomics here: that is all a signal handler may touch.
    let _ = CAUGHT.compare_exchange(0, raw, Ordering::SeqCst, Ordering::SeqCst);
    COUNT.fetch_add(1, Ordering::SeqCst);
}

/// The stop signal (SIGINT or SIGTERM) the coordinator received during the latest
/// supervised run, if any. It stays readable after [`Launcher::launch`](crate::Launcher::launch)
/// returns, until the next run starts; a stage's coordinator side can poll it to stop at a
/// step boundary.
pub fn stop_signal() -> Option<StopSignal> {
    StopSignal::from_raw(CAUGHT.load(Ordering::SeqCst))
}

/// How many stop signals arrived during the latest supervised run.
pub(crate) fn stop_count() -> usize {
    COUNT.load(Ordering::SeqCst)
}

/// Catches SIGINT and SIGTERM while alive, and restores the previous handlers when the last
/// guard is dropped.
#[derive(Debug)]
pub(crate) struct Catch(());

impl Catch {
    pub(crate) fn install() -> Catch {
        let mut installed = INSTALLED.lock().unwrap_or_else(|p| p.into_inner());
        if installed.0 == 0 {
            CAUGHT.store(0, Ordering::SeqCst);
            COUNT.store(0, Ordering::SeqCst);
            // SA_RESTART: the coordinator's own reads and writes carry on across a signal.
            let action = SigAction::new(
                SigHandler::Handler(on_stop_signal),
                SaFlags::SA_RESTART,
                SigSet::empty(),
            );
            // SAFETY: the handler only touches atomics, which is async-signal-safe.
            let previous = unsafe {
                (
                    sigaction(Signal::SIGINT, &action),
                    sigaction(Signal::SIGTERM, &action),
                )
            };
            // If either failed the signal keeps its old meaning; the run still works.
            if let (Ok(int), Ok(term)) = previous {
                installed.1 = Some([int, term]);
            }
        }
        installed.0 += 1;
        Catch(())
    }
}

impl Drop for Catch {
    fn drop(&mut self) {
        let mut installed = INSTALLED.lock().unwrap_or_else(|p| p.into_inner());
        installed.0 = installed.0.saturating_sub(1);
        if installed.0 == 0
            && let Some([int, term]) = installed.1.take()
        {
            // SAFETY: these are the actions that were in place before; restoring them
            // hands the signals back to whoever set them.
            unsafe {
                let _ = sigaction(Signal::SIGINT, &int);
                let _ = sigaction(Signal::SIGTERM, &term);
            }
        }
    }
}

/// In a forked worker: ignore SIGINT (the coordinator stops us) and let SIGTERM kill.
pub(crate) fn worker_defaults() {
    let ignore = SigAction::new(SigHandler::SigIgn, SaFlags::empty(), SigSet::empty());
    let default = SigAction::new(SigHandler::SigDfl, SaFlags::empty(), SigSet::empty());
    // SAFETY: ignoring or defaulting a signal installs no code of ours.
    unsafe {
        let _ = sigaction(Signal::SIGINT, &ignore);
        let _ = sigaction(Signal::SIGTERM, &default);
    }
}

/// While alive, SIGINT and SIGTERM no longer kill this process: they are recorded for
/// [`stop_signal`] instead, so code that runs without a [`Launcher`](crate::Launcher) (a
/// serial loop, a thread pool) can stop at a boundary of its choosing. Dropping the guard
/// restores the previous handlers. [`Launcher::launch`](crate::Launcher::launch) catches
/// the signals by itself; holding a guard around it as well is fine.
#[derive(Debug)]
pub struct StopSignalGuard(#[allow(dead_code)] Catch);

/// Starts catching SIGINT and SIGTERM; see [`StopSignalGuard`].
pub fn catch_stop_signals() -> StopSignalGuard {
    StopSignalGuard(Catch::install())
}
