//! A worker's own child processes end with it: a stage that starts a program and leaves it
//! running leaves nothing behind its run.
//!
//! A worker process (forked, or an MPI rank) is a child subreaper: a descendant whose
//! parent dies becomes the worker's child, not init's, so the worker can still find it. When
//! the stage returns or fails, the worker kills every process below it and reaps its
//! children, round after round, before it tells the coordinator it is done. A worker
//! thread does the same for the processes it started itself. A worker process the
//! coordinator kills has its descendants killed first ([`kill_below`]).
//!
//! Only what the kernel lists in `/proc/PID/task/TID/children` is found: a process that
//! left for a session of its own (a daemon) is found all the same, but the children of a
//! worker process that died of a signal before it could end them are init's by then.

use std::fs;

use nix::sys::signal::{Signal, kill};
use nix::sys::wait::waitpid;
use nix::unistd::{Pid, gettid};

/// Whose children a worker ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scope {
    /// A worker process: the children of all its threads.
    Process,
    /// A worker thread: the children it started itself, not the rest of its process's.
    Thread,
}

/// How many rounds [`end`] takes at most: each kills the processes it finds and reaps the
/// children among them, whose own orphans are found by the next.
const ROUNDS: usize = 16;

/// In a worker process: its descendants' orphans become its children rather than init's,
/// so that [`end`] finds them.
pub(crate) fn adopt_orphans() {
    // Without it (a kernel before 3.4), orphans go to init, and `end` finds fewer.
    let _ = nix::sys::prctl::set_child_subreaper(true);
}

/// Kills every process the worker started (in `scope`), and theirs, and reaps the
/// worker's children among them.
pub(crate) fn end(scope: Scope) {
    for _ in 0..ROUNDS {
        let children = match scope {
            Scope::Process => children_of(Pid::this()),
            Scope::Thread => children_of_task(Pid::this(), gettid()),
        };
        if children.is_empty() {
            return;
        }
        for pid in below(&children) {
            let _ = kill(pid, Signal::SIGKILL);
        }
        for &pid in &children {
            // Already reaped (ECHILD) by the stage's own handle: nothing to do.
            let _ = waitpid(pid, None);
        }
    }
}

/// Kills every process below `pid` (not `pid` itself): what a worker process started,
/// before the coordinator kills it. Only while `pid` is this process's child: a worker
/// already reaped may have left its pid to a stranger.
pub(crate) fn kill_below(pid: Pid) {
    if parent_of(pid) != Some(Pid::this()) {
        return;
    }
    for descendant in below(&children_of(pid)) {
        let _ = kill(descendant, Signal::SIGKILL);
    }
}

/// `roots` and every process below them, parents before their children.
fn below(roots: &[Pid]) -> Vec<Pid> {
    let mut all = roots.to_vec();
    let mut next = 0;
    // A process listed twice (it moved between reads) is killed twice: harmless.
    while next < all.len() && all.len() < MAX_PROCESSES {
        let children = children_of(all[next]);
        all.extend(children);
        next += 1;
    }
    all
}

/// More than a worker could have started; a bound on a tree that grows while it is read.
const MAX_PROCESSES: usize = 1 << 16;

/// The parent of process `pid`, while it exists.
fn parent_of(pid: Pid) -> Option<Pid> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The name, in parentheses, may hold spaces; the state and the parent follow it.
    let mut after_name = stat.rsplit_once(')')?.1.split_ascii_whitespace();
    let parent = after_name.nth(1)?.parse().ok()?;
    Some(Pid::from_raw(parent))
}

/// The children of every thread of process `pid`.
fn children_of(pid: Pid) -> Vec<Pid> {
    let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .flatten()
        .filter_map(|task| task.file_name().to_str()?.parse::<i32>().ok())
        .flat_map(|tid| children_of_task(pid, Pid::from_raw(tid)))
        .collect()
}

/// The children of thread `tid` of process `pid`.
fn children_of_task(pid: Pid, tid: Pid) -> Vec<Pid> {
    fs::read_to_string(format!("/proc/{pid}/task/{tid}/children"))
        .unwrap_or_default()
        .split_ascii_whitespace()
        .filter_map(|child| child.parse().ok())
        .map(Pid::from_raw)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::{Command, Stdio};

    fn alive(pid: Pid) -> bool {
        // A zombie is dead: its state is Z.
        fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|stat| {
                let state = stat
                    .rsplit_once(')')?
                    .1
                    .split_whitespace()
                    .next()?
                    .to_owned();
                Some(state != "Z")
            })
            .unwrap_or(false)
    }

    /// A thread's children end (and, with them, what they started); another thread's do
    /// not.
    #[test]
    #[expect(
        clippy::zombie_processes,
        reason = "the shell is left unwaited on purpose: `end` reaps it"
    )]
    fn a_thread_ends_the_processes_it_started_and_theirs() {
        let started = std::thread::spawn(|| {
            // A shell that starts a sleep of its own and waits for it.
            let shell = Command::new("sh")
                .args(["-c", "sleep 1000 & echo $!; wait"])
                .stdout(Stdio::piped())
                .spawn()
                .expect("sh");
            let shell_pid = Pid::from_raw(i32::try_from(shell.id()).expect("pid"));
            let mut line = String::new();
            std::io::BufRead::read_line(
                &mut std::io::BufReader::new(shell.stdout.expect("stdout")),
                &mut line,
            )
            .expect("the sleep's pid");
            let sleep_pid = Pid::from_raw(line.trim().parse().expect("a pid"));
            assert!(alive(shell_pid) && alive(sleep_pid));
            end(Scope::Thread);
            shell_pid
        });
        let mut other = Command::new("sleep").arg("1000").spawn().expect("sleep");
        let other_pid = Pid::from_raw(i32::try_from(other.id()).expect("pid"));
        let shell_pid = started.join().expect("the thread");
        // Its sleep was killed with it and is init's to reap; the framework's tests wait
        // for such a grandchild to go.
        assert!(!alive(shell_pid), "the thread's child lives on");
        assert!(alive(other_pid), "another thread's child was ended");
        other.kill().expect("kill");
        other.wait().expect("reap");
    }
}
