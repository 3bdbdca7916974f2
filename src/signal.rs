//! SIGINT, SIGTERM and SIGHUP to the coordinator: an orderly stop instead of sudden death.
//!
//! While a run is supervised, the coordinator catches these signals and only records them;
//! the supervisor then stops and reaps the workers (or lets the stage stop at a step
//! boundary) and [`Launcher::launch`](crate::Launcher::launch) returns. Workers ignore
//! SIGINT and SIGHUP: a terminal's Ctrl-C or hangup reaches the whole process group, and
//! stops them only through the coordinator. Every other fatal signal kills a worker, so
//! the coordinator can name it.

use std::fmt;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI32, AtomicUsize, Ordering};

use nix::sys::signal::{
    SaFlags, SigAction, SigHandler, SigSet, SigmaskHow, Signal, pthread_sigmask, sigaction,
};

/// A signal that asks the coordinator to stop the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum StopSignal {
    /// SIGINT, as from Ctrl-C.
    Interrupt,
    /// SIGTERM, as from `kill`.
    Terminate,
    /// SIGHUP, as when the terminal or the ssh session goes away.
    Hangup,
}

impl StopSignal {
    /// The exit status a shell gives a process killed by this signal: 130, 143 or 129.
    pub fn exit_code(self) -> u8 {
        match self {
            StopSignal::Interrupt => 130,
            StopSignal::Terminate => 143,
            StopSignal::Hangup => 129,
        }
    }

    /// The signal's name, such as `SIGINT`.
    pub fn name(self) -> &'static str {
        match self {
            StopSignal::Interrupt => "SIGINT",
            StopSignal::Terminate => "SIGTERM",
            StopSignal::Hangup => "SIGHUP",
        }
    }

    fn from_raw(raw: i32) -> Option<StopSignal> {
        match raw {
            libc::SIGINT => Some(StopSignal::Interrupt),
            libc::SIGTERM => Some(StopSignal::Terminate),
            libc::SIGHUP => Some(StopSignal::Hangup),
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
/// The signals that stop a run.
const STOP_SIGNALS: [Signal; 3] = [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP];

/// The handlers to restore when the last guard goes, and how many guards are alive.
static INSTALLED: Mutex<(usize, Option<[SigAction; 3]>)> = Mutex::new((0, None));

extern "C" fn on_stop_signal(raw: libc::c_int) {
    // Only atomics here: that is all a signal handler may touch.
    let _ = CAUGHT.compare_exchange(0, raw, Ordering::SeqCst, Ordering::SeqCst);
    COUNT.fetch_add(1, Ordering::SeqCst);
}

/// The stop signal (SIGINT, SIGTERM or SIGHUP) the coordinator received during the latest
/// supervised run, if any. It stays readable after [`Launcher::launch`](crate::Launcher::launch)
/// returns, until the next run starts; a stage's coordinator side can poll it to stop at a
/// step boundary.
pub fn stop_signal() -> Option<StopSignal> {
    StopSignal::from_raw(CAUGHT.load(Ordering::SeqCst))
}

/// How many stop signals arrived since they were first caught (see [`stop_signal`]): a
/// caller that lets a first one finish what is under way (writing an output, say) can
/// give up at the second, as a graceful stop does.
pub fn stop_signal_count() -> usize {
    COUNT.load(Ordering::SeqCst)
}

/// Catches SIGINT, SIGTERM and SIGHUP while alive, and restores the previous handlers when
/// the last guard is dropped.
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
            // A signal this process was started ignoring stays ignored: `nohup` ignores
            // SIGHUP so that a run outlives its terminal, and a shell without job control
            // starts a background job ignoring SIGINT, so that Ctrl-C meant for the job in
            // the foreground leaves it be.
            let previous = STOP_SIGNALS.map(|signal| {
                if ignored(signal) {
                    let ignore =
                        SigAction::new(SigHandler::SigIgn, SaFlags::empty(), SigSet::empty());
                    // SAFETY: ignoring a signal installs no code of ours.
                    unsafe { sigaction(signal, &ignore) }
                } else {
                    // SAFETY: the handler only touches atomics, which is async-signal-safe.
                    unsafe { sigaction(signal, &action) }
                }
            });
            // If one failed that signal keeps its old meaning; the run still works.
            if let [Ok(int), Ok(term), Ok(hup)] = previous {
                installed.1 = Some([int, term, hup]);
            }
        }
        installed.0 += 1;
        Catch(())
    }
}

/// Whether `signal` is ignored (`SIG_IGN`) now. Asked without changing it, so that no signal
/// meets another disposition meanwhile.
fn ignored(signal: Signal) -> bool {
    let mut current = std::mem::MaybeUninit::<libc::sigaction>::zeroed();
    // SAFETY: a null new action only reads the current one into `current`, which is valid
    // for writes of a `sigaction`.
    let read = unsafe {
        libc::sigaction(
            signal as libc::c_int,
            std::ptr::null(),
            current.as_mut_ptr(),
        )
    };
    // SAFETY: zeroed is a valid `sigaction`, and on success the kernel filled it in.
    read == 0 && unsafe { current.assume_init() }.sa_sigaction == libc::SIG_IGN
}

impl Drop for Catch {
    fn drop(&mut self) {
        let mut installed = INSTALLED.lock().unwrap_or_else(|p| p.into_inner());
        installed.0 = installed.0.saturating_sub(1);
        if installed.0 == 0
            && let Some(previous) = installed.1.take()
        {
            for (signal, action) in STOP_SIGNALS.into_iter().zip(previous) {
                // SAFETY: these are the actions that were in place before; restoring them
                // hands the signals back to whoever set them.
                let _ = unsafe { sigaction(signal, &action) };
            }
        }
    }
}

/// The signals a forked worker must die of, whoever sends them, with their default
/// action. The coordinator's handler for SIGTERM is inherited through the fork. The Rust
/// runtime's handler for SIGSEGV and SIGBUS, also inherited, only reports stack overflows:
/// for any other SIGSEGV or SIGBUS it restores the default action and returns, so a
/// signal *sent* to the worker (by `kill`, not by a fault, which would recur) is swallowed
/// once and the worker runs on. A worker's stack overflow then ends as SIGSEGV, which the
/// coordinator names.
const WORKER_FATAL: [Signal; 5] = [
    Signal::SIGTERM,
    Signal::SIGSEGV,
    Signal::SIGBUS,
    Signal::SIGILL,
    Signal::SIGFPE,
];

/// Every signal held back (blocked) while alive, in this thread; the mask before comes
/// back when it is dropped. Held across a fork, it makes the child's signals wait until the
/// child has set its own dispositions ([`worker_defaults`]): a signal sent to a worker in
/// between met the coordinator's, and the Rust runtime's SIGSEGV handler swallows a sent
/// SIGSEGV once, so the worker ran on. The coordinator's own signals wait only as long as
/// the fork.
#[derive(Debug)]
pub(crate) struct Held(SigSet);

impl Held {
    pub(crate) fn all() -> Held {
        let mut before = SigSet::empty();
        // It fails only for an invalid `how`. Should it fail, nothing is held: read the mask
        // as it is, so that the drop puts back what the thread had.
        if pthread_sigmask(
            SigmaskHow::SIG_SETMASK,
            Some(&SigSet::all()),
            Some(&mut before),
        )
        .is_err()
        {
            let _ = pthread_sigmask(SigmaskHow::SIG_SETMASK, None, Some(&mut before));
        }
        Held(before)
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let _ = pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&self.0), None);
    }
}

/// In a forked worker: ignore SIGINT and SIGHUP (they reach the whole process group, and
/// the coordinator stops us), and die of the fatal signals in [`WORKER_FATAL`].
pub(crate) fn worker_defaults() {
    let ignore = SigAction::new(SigHandler::SigIgn, SaFlags::empty(), SigSet::empty());
    let default = SigAction::new(SigHandler::SigDfl, SaFlags::empty(), SigSet::empty());
    for signal in [Signal::SIGINT, Signal::SIGHUP] {
        // SAFETY: ignoring a signal installs no code of ours.
        let _ = unsafe { sigaction(signal, &ignore) };
    }
    for signal in WORKER_FATAL {
        // SAFETY: the default action installs no code of ours.
        let _ = unsafe { sigaction(signal, &default) };
    }
}

/// How long an MPI rank other than 0 outlives a SIGTERM, at least: see [`rank_defaults`].
#[cfg(feature = "mpi")]
pub(crate) const RANK_GRACE_SECS: u32 = 3;

/// How long this rank outlives a SIGTERM: [`RANK_GRACE_SECS`], or two seconds more than
/// mpirun waits between its SIGTERM and its SIGKILL, if that is longer.
#[cfg(feature = "mpi")]
static RANK_GRACE: std::sync::atomic::AtomicU32 =
    std::sync::atomic::AtomicU32::new(RANK_GRACE_SECS);

/// The environment variable by which mpirun tells its ranks `--mca
/// odls_base_sigkill_timeout N`: how many seconds it waits between its SIGTERM and its
/// SIGKILL when it ends a job (1 unless given).
#[cfg(feature = "mpi")]
const SIGKILL_TIMEOUT_VAR: &str = "OMPI_MCA_odls_base_sigkill_timeout";

/// On an MPI rank other than 0: [`worker_defaults`], except that SIGTERM kills the rank
/// after a grace ([`RANK_GRACE_SECS`] or more) rather than at once. A user's Ctrl-C or `kill` reaches an
/// `mpirun` job as a SIGTERM to every rank at once, rank 0 included, whose coordinator
/// takes it for a stop: it ends the ring at a step boundary (writing the checkpoint), as
/// it ends forked workers. A rank that died at once would break the ring first, and the
/// stop would be lost. The ring ends well within the grace; mpirun's own SIGKILL, a second
/// after its SIGTERM, ends a rank that lingers. A SIGTERM sent to this rank alone, by
/// anyone but mpirun, has its worker tell the coordinator it was killed as soon as it next
/// sets a step or waits ([`killed`]), and ends it, by its default action, once the grace
/// is over in any case. A job given `--mca
/// odls_base_sigkill_timeout N`, so that a stop has N seconds, gets a grace of N + 2.
#[cfg(feature = "mpi")]
pub(crate) fn rank_defaults() {
    worker_defaults();
    let mpirun_waits = std::env::var(SIGKILL_TIMEOUT_VAR).ok();
    RANK_GRACE.store(rank_grace(mpirun_waits.as_deref()), Ordering::SeqCst);
    let later = SigAction::new(
        SigHandler::SigAction(on_rank_term),
        SaFlags::SA_SIGINFO,
        SigSet::empty(),
    );
    let die = SigAction::new(
        SigHandler::Handler(on_rank_alarm),
        SaFlags::empty(),
        SigSet::empty(),
    );
    // SAFETY: both handlers make only async-signal-safe calls (sigaction, alarm, raise,
    // getppid) and store to an atomic.
    unsafe {
        let _ = sigaction(Signal::SIGALRM, &die);
        let _ = sigaction(Signal::SIGTERM, &later);
    }
}

/// Whether this process, rank 0 of an `mpirun` job, is ending with the job: its coordinator
/// caught a stop signal, as mpirun sends every rank SIGTERM when it ends a job (a user's
/// Ctrl-C to it, say). mpirun serves no `MPI_Finalize` from then on: one would wait for
/// its SIGKILL, a second later, which would end rank 0 before its exit status. The other
/// ranks finalize all the same: one that exited would have mpirun kill the rest at once,
/// rank 0 before it had said why the job stopped.
#[cfg(feature = "mpi")]
pub(crate) fn job_ending() -> bool {
    stop_signal().is_some()
}

/// The grace of [`rank_defaults`], given what mpirun says it waits between its SIGTERM and
/// its SIGKILL ([`SIGKILL_TIMEOUT_VAR`]), if it says.
#[cfg(feature = "mpi")]
fn rank_grace(mpirun_waits: Option<&str>) -> u32 {
    mpirun_waits
        .and_then(|secs| secs.trim().parse::<u32>().ok())
        .map_or(RANK_GRACE_SECS, |secs| {
            secs.saturating_add(2).max(RANK_GRACE_SECS)
        })
}

/// Set when a SIGTERM reached this rank from a process other than its parent (mpirun, or
/// mpirun's daemon on another host, which are what end a job): a user's `kill`, meant for
/// this rank alone. See [`killed`].
#[cfg(feature = "mpi")]
static KILLED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Whether this MPI rank was sent SIGTERM by a user rather than by mpirun ending the job.
/// Its worker then reports that it was killed, as a forked worker's exit status says,
/// and the coordinator names it and ends the job at once, where the rank would otherwise
/// die only at the end of its grace and leave the coordinator to take mpirun's SIGTERM for
/// a stop. A rank that computes without setting a step or waiting dies at the end of its
/// grace all the same.
#[cfg(feature = "mpi")]
pub(crate) fn killed() -> bool {
    KILLED.load(Ordering::Relaxed)
}

/// A rank's SIGTERM: the next one kills at once, and this one does in a while.
#[cfg(feature = "mpi")]
extern "C" fn on_rank_term(_: libc::c_int, info: *mut libc::siginfo_t, _: *mut libc::c_void) {
    // SAFETY: with SA_SIGINFO the kernel passes a valid `siginfo_t` (checked for null all
    // the same), whose `si_pid` is the sender's for a signal sent by `kill`; getppid is
    // async-signal-safe.
    let from_parent = !info.is_null() && unsafe { (*info).si_pid() == libc::getppid() };
    if !from_parent {
        KILLED.store(true, Ordering::Relaxed);
    }
    let default = SigAction::new(SigHandler::SigDfl, SaFlags::empty(), SigSet::empty());
    // SAFETY: sigaction and alarm are async-signal-safe; the default action runs no code.
    unsafe {
        let _ = sigaction(Signal::SIGTERM, &default);
        libc::alarm(RANK_GRACE.load(Ordering::SeqCst));
    }
}

/// The grace after a rank's SIGTERM is over: it dies of SIGTERM, whose action is the
/// default again.
#[cfg(feature = "mpi")]
extern "C" fn on_rank_alarm(_: libc::c_int) {
    // SAFETY: raise is async-signal-safe.
    unsafe {
        libc::raise(libc::SIGTERM);
    }
}

/// While alive, SIGINT, SIGTERM and SIGHUP no longer kill this process: they are recorded
/// for [`stop_signal`] instead, so code that runs without a [`Launcher`](crate::Launcher) (a
/// serial loop, a thread pool) can stop at a boundary of its choosing. A signal the process
/// was started ignoring stays ignored: under `nohup` a hangup stops nothing. Dropping the guard
/// restores the previous handlers. [`Launcher::launch`](crate::Launcher::launch) catches
/// the signals by itself; holding a guard around it as well is fine.
#[derive(Debug)]
pub struct StopSignalGuard(#[allow(dead_code)] Catch);

/// Starts catching SIGINT, SIGTERM and SIGHUP; see [`StopSignalGuard`].
pub fn catch_stop_signals() -> StopSignalGuard {
    StopSignalGuard(Catch::install())
}

#[cfg(test)]
mod tests {
    use super::*;

    static USR2: AtomicUsize = AtomicUsize::new(0);

    extern "C" fn count_usr2(_: libc::c_int) {
        USR2.fetch_add(1, Ordering::SeqCst);
    }

    #[cfg(feature = "mpi")]
    #[test]
    fn a_rank_outlives_sigterm_longer_than_mpirun_waits_to_kill_it() {
        assert_eq!(rank_grace(None), RANK_GRACE_SECS);
        assert_eq!(rank_grace(Some("1")), RANK_GRACE_SECS);
        assert_eq!(rank_grace(Some("0")), RANK_GRACE_SECS);
        assert_eq!(rank_grace(Some("5")), 7);
        assert_eq!(rank_grace(Some(" 30\n")), 32);
        assert_eq!(rank_grace(Some("soon")), RANK_GRACE_SECS);
        assert_eq!(rank_grace(Some("4294967295")), u32::MAX);
    }

    #[test]
    fn a_signal_raised_while_held_arrives_when_the_hold_ends() {
        let action = SigAction::new(
            SigHandler::Handler(count_usr2),
            SaFlags::empty(),
            SigSet::empty(),
        );
        // SAFETY: the handler only touches an atomic; no other test uses SIGUSR2.
        unsafe { sigaction(Signal::SIGUSR2, &action) }.expect("install a handler");
        let held = Held::all();
        // `raise` signals this thread, whose mask `Held` set.
        nix::sys::signal::raise(Signal::SIGUSR2).expect("raise");
        assert_eq!(USR2.load(Ordering::SeqCst), 0, "delivered while held");
        drop(held);
        assert_eq!(USR2.load(Ordering::SeqCst), 1, "still held after the drop");
    }
}
