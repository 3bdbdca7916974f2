//! A process the bench starts (a `--fresh` run, an `mpirun` job), run to its end with its
//! output captured and the bench's stop signals passed on to it.

use std::fs::File;
use std::io::{self, Read, Seek};
use std::os::fd::{AsFd, FromRawFd, OwnedFd, RawFd};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, ppoll};
use nix::sys::memfd::{MFdFlags, memfd_create};
use nix::sys::signal::{SigSet, SigmaskHow, Signal, kill, pthread_sigmask};
use nix::sys::time::TimeSpec;
use nix::unistd::Pid;
use ringleader::StopSignal;

/// The longest a wait for the child goes without looking for a stop signal. A signal to
/// this thread ends the wait at once; only one delivered to another thread of the bench
/// waits for the next look.
const LOOK_AGAIN: Duration = Duration::from_millis(50);

/// The signals that stop a run.
const STOPS: [Signal; 3] = [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP];

/// Runs `command` to its end and returns what it wrote and how it ended, as
/// [`Command::output`] does, while the bench catches stop signals
/// ([`ringleader::catch_stop_signals`]): the first that comes (or came before) is sent on
/// to the child, which stops as it asks; [`ringleader::stop_signal`] names it afterwards.
/// The child's stdout and stderr go to files in memory, so it never waits on the bench to
/// read them.
pub(crate) fn output(command: &mut Command) -> io::Result<Output> {
    let (out, err) = (
        in_memory(c"bench-child-stdout")?,
        in_memory(c"bench-child-stderr")?,
    );
    let mut child = command
        .stdout(Stdio::from(out.try_clone()?))
        .stderr(Stdio::from(err.try_clone()?))
        .spawn()?;
    if let Err(e) = wait_passing_on(&mut child) {
        let _ = child.kill();
        let _ = child.wait();
        return Err(e);
    }
    let status = child.wait()?;
    Ok(Output {
        status,
        stdout: contents(out)?,
        stderr: contents(err)?,
    })
}

/// Waits until `child` has ended (it is left to reap), sending it the first stop signal
/// this process catches meanwhile. Without a pidfd (Linux before 5.3) it just waits.
fn wait_passing_on(child: &mut Child) -> io::Result<()> {
    let pid = child.id() as libc::pid_t;
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
    let raw = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if raw < 0 {
        return child.wait().map(drop);
    }
    let raw = RawFd::try_from(raw).map_err(io::Error::other)?;
    // SAFETY: the kernel just gave us this descriptor, and nothing else owns it.
    let pidfd = unsafe { OwnedFd::from_raw_fd(raw) };
    let stops: SigSet = STOPS.into_iter().collect();
    let mut passed = false;
    loop {
        // The stop signals are held from the look until ppoll waits, which lets them in
        // again: one that comes in between ends the wait rather than going unseen.
        let mut before = SigSet::empty();
        pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&stops), Some(&mut before))?;
        if !passed && let Some(signal) = ringleader::stop_signal() {
            // The child may have ended already; it is not reaped yet, so the pid is still
            // its own.
            let _ = kill(Pid::from_raw(pid), raw_signal(signal));
            passed = true;
        }
        let mut fds = [PollFd::new(pidfd.as_fd(), PollFlags::POLLIN)];
        let polled = ppoll(&mut fds, Some(TimeSpec::from(LOOK_AGAIN)), Some(before));
        pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&before), None)?;
        match polled {
            // The pidfd is readable once the child has ended.
            Ok(ready) if ready > 0 => return Ok(()),
            Ok(_) | Err(Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
}

/// The signal to send on for `signal`.
fn raw_signal(signal: StopSignal) -> Signal {
    match signal {
        StopSignal::Interrupt => Signal::SIGINT,
        StopSignal::Hangup => Signal::SIGHUP,
        _ => Signal::SIGTERM,
    }
}

/// A new file in memory, which no other process can open by a path.
fn in_memory(name: &std::ffi::CStr) -> io::Result<File> {
    Ok(File::from(memfd_create(name, MFdFlags::MFD_CLOEXEC)?))
}

/// What was written to `file`, from its start.
fn contents(mut file: File) -> io::Result<Vec<u8>> {
    file.rewind()?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)?;
    Ok(bytes)
}
