//! How the binary fails: a worker that dies, hangs or deadlocks, a stop signal, a
//! coordinator that is killed. Each test checks the exit status, the one line on stderr,
//! the time taken (with generous margins: the machine is shared) and that no process is
//! left behind. Faults are injected with `RINGLEADER_FAULT`, never raced with a `kill`.
//!
//! Every test here takes one lock, so they run one at a time, and the test process is a
//! child subreaper: a worker the coordinator failed to reap would become our child, and
//! the tests look for exactly that.

mod common;

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, Once, mpsc};
use std::time::{Duration, Instant};

use common::{default_stop_signals, processes_tagged};
use nix::sys::signal::{Signal, kill, killpg};
use nix::sys::wait::{Id, WaitPidFlag, WaitStatus, waitid, waitpid};
use nix::unistd::Pid;

/// The variable `tests/common` tags every process of a run with.
const TAG_VAR: &str = "RINGLEADER_TEST_TAG";

/// One test at a time, and orphans come to us.
fn exclusive() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    static SUBREAPER: Once = Once::new();
    SUBREAPER.call_once(|| {
        nix::sys::prctl::set_child_subreaper(true).expect("become a child subreaper");
    });
    LOCK.lock().unwrap_or_else(|poison| poison.into_inner())
}

/// Panics if a process this test started has ended without being reaped by its parent:
/// it was reparented to us and sits here as a zombie.
fn assert_no_zombie_came_to_us() {
    let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT;
    match waitid(Id::All, flags) {
        Err(nix::errno::Errno::ECHILD) | Ok(WaitStatus::StillAlive) => {}
        other => panic!("a process was left for us to reap: {other:?}"),
    }
}

/// A new directory of this test's own, for the files a run writes.
fn scratch_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(new_tag());
    std::fs::create_dir_all(&dir).expect("scratch directory");
    dir
}

fn new_tag() -> String {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    format!(
        "rel-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

fn spawn(args: &[&str], env: &[(&str, &str)], tag: &str, own_group: bool) -> Child {
    spawn_under(&[], args, env, tag, own_group)
}

/// [`spawn`], run by the program and arguments `wrapper` (`nohup`, say), which are given
/// the binary and `args` to run.
fn spawn_under(
    wrapper: &[&str],
    args: &[&str],
    env: &[(&str, &str)],
    tag: &str,
    own_group: bool,
) -> Child {
    let binary = env!("CARGO_BIN_EXE_ringleader");
    let mut command = match wrapper.split_first() {
        Some((program, before)) => {
            let mut command = Command::new(program);
            command.args(before).arg(binary);
            command
        }
        None => Command::new(binary),
    };
    default_stop_signals(&mut command)
        .args(args)
        .env(TAG_VAR, tag)
        .env_remove("RINGLEADER_FAULT")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if own_group {
        use std::os::unix::process::CommandExt;
        command.process_group(0);
    }
    command.spawn().expect("start ringleader")
}

/// What a run of the binary did.
#[derive(Debug)]
struct Outcome {
    code: Option<i32>,
    stdout: String,
    stderr: String,
    elapsed: Duration,
}

impl Outcome {
    /// The single line on stderr.
    fn line(&self) -> &str {
        let lines: Vec<&str> = self.stderr.lines().collect();
        assert_eq!(
            lines.len(),
            1,
            "stderr should be one line: {:?}",
            self.stderr
        );
        assert!(!self.stderr.contains("panicked at"), "{}", self.stderr);
        lines[0]
    }
}

/// Waits for `child` with a watchdog, then checks that nothing it started is left.
fn finish(child: Child, tag: &str, started: Instant, deadline: Duration) -> Outcome {
    let pid = child.id();
    let (done, cancelled) = mpsc::channel::<()>();
    let watchdog = std::thread::spawn(move || {
        let hung = cancelled.recv_timeout(deadline) == Err(mpsc::RecvTimeoutError::Timeout);
        if hung {
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
        }
        hung
    });
    let output = child.wait_with_output().expect("wait for ringleader");
    let _ = done.send(());
    let hung = watchdog.join().unwrap_or(false);
    let outcome = Outcome {
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        elapsed: started.elapsed(),
    };
    assert!(
        !hung,
        "the run hung; killed after {deadline:?}: {outcome:?}"
    );
    let left = processes_tagged(tag);
    assert!(
        left.is_empty(),
        "processes left behind: {left:?} ({outcome:?})"
    );
    assert_no_zombie_came_to_us();
    outcome
}

fn run_with(args: &[&str], env: &[(&str, &str)]) -> Outcome {
    let tag = new_tag();
    let started = Instant::now();
    let child = spawn(args, env, &tag, false);
    finish(child, &tag, started, Duration::from_secs(60))
}

fn fault(spec: &str, args: &[&str]) -> Outcome {
    run_with(args, &[("RINGLEADER_FAULT", spec)])
}

/// Waits, with a deadline, until `count` processes carry the tag: the coordinator and its
/// workers are all up.
fn wait_for_processes(tag: &str, count: usize) -> Vec<u32> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let found = processes_tagged(tag);
        if found.len() >= count {
            return found;
        }
        assert!(Instant::now() < deadline, "only {found:?} started");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Waits, with a deadline, until process `pid` runs `count` threads: the worker threads
/// are up, so the coordinator is supervising them.
fn wait_for_threads(pid: u32, count: usize) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let threads = std::fs::read_dir(format!("/proc/{pid}/task")).map_or(0, |t| t.count());
        if threads >= count {
            return;
        }
        assert!(Instant::now() < deadline, "only {threads} threads started");
        std::thread::sleep(Duration::from_millis(10));
    }
}

const TRANSPORTS: [&str; 2] = ["processes", "threads"];

#[test]
fn a_dying_worker_ends_the_run_naming_rank_pid_cause_and_step() {
    let _serial = exclusive();
    let cases = [
        ("panic", "panicked: injected fault 1:4:panic"),
        ("exit", "exited with code 3"),
        ("abort", "was killed by SIGABRT"),
        ("kill", "was killed by SIGKILL"),
    ];
    for (kind, cause) in cases {
        for transport in TRANSPORTS {
            if transport == "threads" && kind != "panic" {
                continue;
            }
            let spec = format!("1:4:{kind}");
            let args = [
                "particles",
                "-n",
                "30",
                "-s",
                "20",
                "-p",
                "3",
                "--transport",
                transport,
            ];
            let run = fault(&spec, &args);
            assert_eq!(run.code, Some(1), "{spec} on {transport}: {run:?}");
            let line = run.line();
            let who = if transport == "processes" {
                "ringleader: worker rank 1 (pid "
            } else {
                "ringleader: worker rank 1 "
            };
            assert!(line.starts_with(who), "{line}");
            assert!(line.contains(cause), "{line}");
            assert!(line.ends_with(" at step 4"), "{line}");
            // The coordinator notices within milliseconds; the bound is for a loaded machine.
            assert!(
                run.elapsed < Duration::from_secs(3),
                "{spec}: {:?}",
                run.elapsed
            );
        }
    }
}

#[test]
fn a_hung_worker_is_named_when_its_step_times_out() {
    let _serial = exclusive();
    for transport in TRANSPORTS {
        let args = [
            "particles",
            "-n",
            "30",
            "-s",
            "20",
            "-p",
            "3",
            "--transport",
            transport,
            "--timeout",
            "1",
        ];
        let run = fault("2:5:hang", &args);
        assert_eq!(run.code, Some(1), "{run:?}");
        let line = run.line();
        assert!(
            line.starts_with("ringleader: step 5 timed out after 1 s: rank 2 "),
            "{line}"
        );
        assert!(line.ends_with("did not finish it"), "{line}");
        assert_eq!(line.contains("(pid "), transport == "processes", "{line}");
        assert!(run.elapsed >= Duration::from_secs(1), "{:?}", run.elapsed);
        assert!(run.elapsed < Duration::from_secs(10), "{:?}", run.elapsed);
    }
}

#[test]
fn a_circular_wait_is_reported_as_a_deadlock_within_two_seconds() {
    let _serial = exclusive();
    for transport in TRANSPORTS {
        for (workers, spec, expected) in [
            (
                "2",
                "0:3:cycle",
                "ringleader: deadlock: rank 0 waits for rank 1, rank 1 waits for rank 0 (at step 3)",
            ),
            (
                "4",
                "2:3:cycle",
                "ringleader: deadlock: rank 2 waits for rank 3, rank 3 waits for rank 2 (at step 3)",
            ),
        ] {
            let args = [
                "particles",
                "-n",
                "30",
                "-s",
                "20",
                "-p",
                workers,
                "--transport",
                transport,
            ];
            let run = fault(spec, &args);
            assert_eq!(run.code, Some(1), "{run:?}");
            assert_eq!(run.line(), expected);
            assert!(
                run.elapsed < Duration::from_secs(2),
                "{transport} {spec}: {:?}",
                run.elapsed
            );
        }
    }
}

/// Starts a long run, waits until every worker is up, and sends `signal` to the
/// coordinator (or to its whole process group, as a terminal's Ctrl-C does).
fn signalled(extra: &[&str], signal: Signal, to_group: bool) -> (Outcome, Duration) {
    let tag = new_tag();
    let mut args = vec!["particles", "-n", "40", "-s", "100000000", "-p", "3"];
    args.extend(extra);
    let started = Instant::now();
    let child = spawn(&args, &[], &tag, to_group);
    let pid = Pid::from_raw(child.id() as i32);
    if extra.contains(&"threads") {
        wait_for_threads(child.id(), 4);
    } else {
        wait_for_processes(&tag, 4);
    }
    let sent = Instant::now();
    if to_group {
        killpg(pid, signal).expect("signal the process group");
    } else {
        kill(pid, signal).expect("signal the coordinator");
    }
    let outcome = finish(child, &tag, started, Duration::from_secs(60));
    let after_signal = sent.elapsed();
    (outcome, after_signal)
}

#[test]
fn sigint_and_sigterm_stop_the_workers_and_exit_130_or_143() {
    let _serial = exclusive();
    for transport in TRANSPORTS {
        for (signal, code) in [(Signal::SIGINT, 130), (Signal::SIGTERM, 143)] {
            let (run, took) = signalled(&["--transport", transport], signal, false);
            assert_eq!(run.code, Some(code), "{run:?}");
            assert_eq!(
                run.line(),
                format!("ringleader: interrupted by {signal}: every worker was stopped")
            );
            assert!(took < Duration::from_secs(3), "{took:?}");
        }
    }
}

/// Worker threads stop with their run, at their next step or link, in every mode: the
/// coordinator does not have to give up on them. A serial run, a ring of one thread that
/// meets no link, and `-t` runs once went on computing until the coordinator's grace and
/// wait were over, 2.5 s after the signal.
#[test]
fn worker_threads_stop_within_a_second_of_a_stop_signal() {
    let _serial = exclusive();
    for algorithm in ["allpairs", "cells"] {
        for (mode, workers) in [(&[][..], 1), (&["-t", "2"], 2)] {
            let tag = new_tag();
            let mut args = vec!["particles", "-n", "3000", "-s", "100000000"];
            args.extend(["--algorithm", algorithm]);
            args.extend(mode);
            let started = Instant::now();
            let child = spawn(&args, &[], &tag, false);
            let pid = Pid::from_raw(child.id() as i32);
            wait_for_threads(child.id(), workers + 1);
            let sent = Instant::now();
            kill(pid, Signal::SIGTERM).expect("signal the run");
            let run = finish(child, &tag, started, Duration::from_secs(60));
            let took = sent.elapsed();
            assert_eq!(run.code, Some(143), "{args:?}: {run:?}");
            assert!(took < Duration::from_secs(1), "{args:?}: {took:?}");
        }
    }
}

#[test]
fn a_stop_signal_ends_a_run_that_reports_every_step_at_a_step_boundary() {
    let _serial = exclusive();
    for transport in TRANSPORTS {
        for (signal, code) in [(Signal::SIGINT, 130), (Signal::SIGTERM, 143)] {
            // -e: workers wait for the coordinator's correction every step.
            let (run, took) = signalled(&["--transport", transport, "-e"], signal, false);
            assert_eq!(run.code, Some(code), "{run:?}");
            let line = run.line();
            let prefix = format!("ringleader: stopped by {signal} after step ");
            let step = line
                .strip_prefix(&prefix)
                .unwrap_or_else(|| panic!("{line}"));
            assert!(step.parse::<u64>().is_ok(), "{line}");
            assert!(took < Duration::from_secs(3), "{took:?}");
        }
    }
}

#[test]
fn a_stop_signal_writes_a_checkpoint_that_resumes_bit_for_bit() {
    let _serial = exclusive();
    let dir = common::scratch("signal-checkpoint");
    let checkpoint = dir.join("stopped.ck");
    let checkpoint = checkpoint.to_str().unwrap();
    for (transport, signal, code) in [
        ("processes", Signal::SIGINT, 130),
        ("threads", Signal::SIGTERM, 143),
    ] {
        // With --checkpoint the workers hear from the coordinator after every step, so
        // the signal stops the run at a step boundary and the file holds that step.
        let (run, took) = signalled(
            &["--transport", transport, "--checkpoint", checkpoint],
            signal,
            false,
        );
        assert_eq!(run.code, Some(code), "{run:?}");
        let line = run.line();
        let step: u64 = line
            .strip_prefix(&format!("ringleader: stopped by {signal} after step "))
            .and_then(|rest| rest.strip_suffix("; checkpoint written"))
            .and_then(|step| step.parse().ok())
            .unwrap_or_else(|| panic!("{line}"));
        assert!(took < Duration::from_secs(3), "{took:?}");
        // Five more steps from the checkpoint, on another worker count, against the
        // uninterrupted run.
        common::assert_resumes_bit_for_bit(
            checkpoint,
            step,
            &["-n", "40"],
            &dir,
            &format!("stopped by {signal}"),
        );
    }
}

/// Spawns the binary with `args`, which write to a FIFO nobody reads, and returns once it
/// waits for a reader: the run is over, and its only thread sleeps between tries to open
/// the FIFO.
fn waiting_on_a_fifo(args: &[&str], tag: &str) -> Child {
    let child = spawn(args, &[], tag, false);
    wait_until_it_sleeps_alone(child.id(), args);
    child
}

/// Waits until process `pid` has one thread, asleep (`hrtimer_nanosleep`).
fn wait_until_it_sleeps_alone(pid: u32, args: &[&str]) {
    let tasks = format!("/proc/{pid}/task");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let wchans: Vec<String> = std::fs::read_dir(&tasks)
            .map(|tasks| {
                tasks
                    .flatten()
                    .map(|task| std::fs::read_to_string(task.path().join("wchan")))
                    .collect::<Result<_, _>>()
                    .unwrap_or_default()
            })
            .unwrap_or_default();
        if wchans == ["hrtimer_nanosleep"] {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{args:?}: never waited on the fifo ({wchans:?})"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Runs the binary with `args`, which write to the FIFO `fifo`; once it waits for a reader
/// ([`waiting_on_a_fifo`]), sends it `signal`, then reads the FIFO whole. Returns the run
/// and what it wrote.
fn signalled_on_a_fifo(args: &[&str], fifo: &std::path::Path, signal: Signal) -> (Outcome, String) {
    use std::io::Read;
    let tag = new_tag();
    let started = Instant::now();
    let child = waiting_on_a_fifo(args, &tag);
    kill(Pid::from_raw(child.id() as i32), signal).expect("signal the run");
    let mut written = String::new();
    std::fs::File::open(fifo)
        .and_then(|mut reader| reader.read_to_string(&mut written))
        .expect("read the fifo");
    (
        finish(child, &tag, started, Duration::from_secs(60)),
        written,
    )
}

/// A stop signal that comes after the last step finds nothing left to stop: the run and
/// its outputs are complete, and it says so and exits as the signal asks rather than
/// swallowing it. The final state goes to a FIFO that nobody reads yet, so the signal lands
/// while the coordinator waits to open it; then the test reads the whole state.
#[test]
fn a_stop_signal_after_the_last_step_is_named_and_the_output_still_written() {
    let _serial = exclusive();
    let dir = common::scratch("late-signal");
    for (k, mode) in [&["-p", "2"][..], &["-t", "2"], &[]]
        .into_iter()
        .enumerate()
    {
        let fifo = dir.join(format!("state{k}.csv"));
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600))
            .expect("mkfifo");
        let mut args = vec!["particles", "-n", "20", "-s", "5", "--algorithm", "cells"];
        args.extend(mode);
        args.extend(["--out", fifo.to_str().unwrap()]);
        // Every step is done, and every worker gone, by then.
        let (run, state) = signalled_on_a_fifo(&args, &fifo, Signal::SIGINT);
        assert_eq!(run.code, Some(130), "{mode:?}: {run:?}");
        assert_eq!(
            run.line(),
            "ringleader: SIGINT came after the last step; the run is complete",
            "{mode:?}"
        );
        assert!(state.starts_with("id,x,y,vx,vy"), "{mode:?}: {state:?}");
        assert_eq!(state.lines().count(), 21, "{mode:?}: {state}");
    }
}

/// An output that waits for a FIFO's reader, which never comes, is not a run that only
/// SIGKILL ends: a first stop signal lets it wait on (the output is the run's point), a
/// second ends it, in one line, with the signal's status. The open once waited in the
/// kernel, which our handlers restarted after every signal, until killed.
#[test]
fn a_second_stop_signal_ends_a_wait_for_a_fifos_reader() {
    let _serial = exclusive();
    let dir = common::scratch("fifo-nobody-reads");
    let fifo = dir.join("state.csv");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).expect("mkfifo");
    let args = [
        "particles",
        "-n",
        "20",
        "-s",
        "5",
        "--out",
        fifo.to_str().unwrap(),
    ];
    let tag = new_tag();
    let started = Instant::now();
    let child = waiting_on_a_fifo(&args, &tag);
    let pid = Pid::from_raw(child.id() as i32);
    kill(pid, Signal::SIGTERM).expect("signal the run");
    // A second signal sent while the first is pending would be one with it: wait until
    // the first has been delivered.
    let status = format!("/proc/{}/status", child.id());
    let pending = || {
        std::fs::read_to_string(&status).map_or(true, |status| {
            status
                .lines()
                .filter(|line| line.starts_with("SigPnd:") || line.starts_with("ShdPnd:"))
                .any(|line| line.split_whitespace().nth(1) != Some("0000000000000000"))
        })
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while pending() {
        assert!(Instant::now() < deadline, "the first signal stayed pending");
        std::thread::sleep(Duration::from_millis(10));
    }
    kill(pid, Signal::SIGTERM).expect("signal the run again");
    let run = finish(child, &tag, started, Duration::from_secs(60));
    assert_eq!(run.code, Some(143), "{run:?}");
    assert_eq!(
        run.line(),
        format!(
            "ringleader: cannot write the final state {}: a second SIGTERM came while it \
             waited for a reader",
            fifo.display()
        )
    );
}

/// The arguments of a bench whose one row, cells on two workers in `mode`, runs until it is
/// stopped.
fn endless_bench(mode: &str) -> Vec<&str> {
    let mut args = vec![
        "bench",
        "-n",
        "40000",
        "-p",
        "2",
        "-s",
        "100000000",
        "-r",
        "1",
    ];
    args.extend(["--modes", mode, "--algorithms", "cells"]);
    args
}

/// A stop signal ends a bench, in every mode it times: no row for a run cut short (cells
/// on two worker processes stop at a step boundary and return what they did, which a bench
/// once timed as a whole run), and the exit the signal asks for.
#[test]
fn a_stop_signal_ends_a_bench_without_timing_the_run_it_cut_short() {
    let _serial = exclusive();
    for mode in [
        "processes",
        "ring-threads",
        "threads",
        "serial",
        "independent",
    ] {
        let tag = new_tag();
        let args = endless_bench(mode);
        let started = Instant::now();
        let child = spawn(&args, &[], &tag, false);
        // Every run is supervised (it catches the signal) once its workers are up: the
        // bench's own thread, which supervises, and the run's worker threads; independent
        // runs are two supervising threads with a worker each.
        match mode {
            "processes" => drop(wait_for_processes(&tag, 3)),
            "serial" => wait_for_threads(child.id(), 2),
            "independent" => wait_for_threads(child.id(), 5),
            _ => wait_for_threads(child.id(), 3),
        }
        kill(Pid::from_raw(child.id() as i32), Signal::SIGINT).expect("signal the bench");
        let run = finish(child, &tag, started, Duration::from_secs(60));
        assert_eq!(run.code, Some(130), "{mode}: {run:?}");
        let line = run.line();
        assert!(
            line.starts_with("ringleader: ")
                && line.ends_with("interrupted by SIGINT: every worker was stopped"),
            "{mode}: {line}"
        );
    }
}

/// `bench kernel` times the force kernels on no workers: a stop signal ends it with a line
/// that claims no workers stopped, no table, and the exit the signal asks for. The line
/// once said `every worker was stopped`, as a run's does.
#[test]
fn a_stop_signal_ends_a_kernel_bench_with_no_table_and_no_workers_claimed() {
    let _serial = exclusive();
    for (signal, code) in [(Signal::SIGINT, 130), (Signal::SIGTERM, 143)] {
        let tag = new_tag();
        let started = Instant::now();
        // Passes enough for hours: only the signal ends it.
        let args = ["bench", "kernel", "-n", "4000", "-r", "100000000"];
        let child = spawn(&args, &[], &tag, false);
        common::wait_for_handler(child.id(), signal);
        kill(Pid::from_raw(child.id() as i32), signal).expect("signal the bench");
        let run = finish(child, &tag, started, Duration::from_secs(60));
        assert_eq!(run.code, Some(code), "{signal}: {run:?}");
        assert_eq!(
            run.line(),
            format!("ringleader: interrupted by {}", signal.as_str()),
            "{run:?}"
        );
        assert_eq!(run.stdout, "", "no table: {run:?}");
    }
}

/// `bench --fresh` runs each row in a process of its own, and is itself between runs all
/// along: a stop signal sent to the bench alone (not its process group) is passed on to the
/// run, which stops, and the bench names it, where the signal once killed the bench and
/// its run without a word.
#[test]
fn a_stop_signal_to_a_fresh_bench_is_passed_on_to_its_run_and_named() {
    let _serial = exclusive();
    for (signal, code) in [(Signal::SIGTERM, 143), (Signal::SIGINT, 130)] {
        let tag = new_tag();
        let mut args = endless_bench("processes");
        args.insert(1, "--fresh");
        let started = Instant::now();
        let child = spawn(&args, &[], &tag, false);
        // The bench, its run, and the run's two workers.
        drop(wait_for_processes(&tag, 4));
        kill(Pid::from_raw(child.id() as i32), signal).expect("signal the bench");
        let run = finish(child, &tag, started, Duration::from_secs(60));
        assert_eq!(run.code, Some(code), "{signal}: {run:?}");
        let line = run.line();
        assert!(
            line.starts_with("ringleader: cells processes run with 2 workers")
                && line.ends_with(&format!(
                    "interrupted by {}: every worker was stopped",
                    signal.as_str()
                )),
            "{signal}: {line}"
        );
    }
}

/// A stop signal that comes after a bench's last run, while it writes its table to a FIFO
/// nobody reads yet, finds nothing to stop: the table is written whole, and the bench says
/// so and exits as the signal asks, where the signal once killed it before it wrote.
#[test]
fn a_stop_signal_after_a_benchs_last_run_is_named_and_the_table_still_written() {
    let _serial = exclusive();
    let dir = common::scratch("late-bench-signal");
    let fifo = dir.join("bench.csv");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).expect("mkfifo");
    let args = [
        "bench",
        "-n",
        "200",
        "-p",
        "2",
        "-s",
        "2",
        "-r",
        "1",
        "--modes",
        "serial,threads,processes",
        "--algorithms",
        "cells",
        "--csv",
        fifo.to_str().unwrap(),
    ];
    // Every run is done by then.
    let (run, csv) = signalled_on_a_fifo(&args, &fifo, Signal::SIGHUP);
    assert_eq!(run.code, Some(129), "{run:?}");
    assert_eq!(
        run.line(),
        "ringleader: SIGHUP came after the last run; the bench is complete"
    );
    assert!(csv.starts_with("mode,algorithm,n,workers"), "{csv:?}");
    // The header and the serial, two threads and two processes rows.
    assert_eq!(csv.lines().count(), 4, "{csv}");
}

#[test]
fn ctrl_c_to_the_process_group_stops_the_run_through_the_coordinator() {
    let _serial = exclusive();
    // Workers ignore SIGINT: had they died of it, the coordinator would report a worker
    // killed by SIGINT instead.
    let (run, took) = signalled(&[], Signal::SIGINT, true);
    assert_eq!(run.code, Some(130), "{run:?}");
    assert_eq!(
        run.line(),
        "ringleader: interrupted by SIGINT: every worker was stopped"
    );
    assert!(took < Duration::from_secs(3), "{took:?}");
}

#[test]
fn every_worker_dies_within_a_second_of_a_killed_coordinator() {
    let _serial = exclusive();
    let tag = new_tag();
    let args = ["particles", "-n", "40", "-s", "100000000", "-p", "3"];
    let mut child = spawn(&args, &[], &tag, false);
    let coordinator = child.id();
    let workers: Vec<u32> = wait_for_processes(&tag, 4)
        .into_iter()
        .filter(|&pid| pid != coordinator)
        .collect();
    assert_eq!(workers.len(), 3, "{workers:?}");
    let killed = Instant::now();
    kill(Pid::from_raw(coordinator as i32), Signal::SIGKILL).expect("kill the coordinator");
    child.wait().expect("reap the coordinator");
    // Its workers are now our children (we are a subreaper): wait for each to die.
    for &pid in &workers {
        match waitpid(Pid::from_raw(pid as i32), None) {
            Ok(WaitStatus::Signaled(_, Signal::SIGKILL, _)) => {}
            other => panic!("worker {pid} ended as {other:?}"),
        }
    }
    let took = killed.elapsed();
    assert!(
        took < Duration::from_secs(1),
        "workers outlived the coordinator by {took:?}"
    );
    assert!(processes_tagged(&tag).is_empty());
    assert_no_zombie_came_to_us();
}

/// `bench --fresh` measures each run in a process of its own: killing the bench kills that
/// process, and the workers it forked with it.
#[test]
fn a_killed_bench_leaves_no_fresh_run_behind() {
    let _serial = exclusive();
    let tag = new_tag();
    let args = [
        "bench",
        "--fresh",
        "-n",
        "40",
        "-s",
        "100000000",
        "-p",
        "3",
        "--modes",
        "processes",
    ];
    let mut child = spawn(&args, &[], &tag, false);
    let bench = child.id();
    // The bench, the run it started, and that run's three workers.
    let others: Vec<u32> = wait_for_processes(&tag, 5)
        .into_iter()
        .filter(|&pid| pid != bench)
        .collect();
    assert_eq!(others.len(), 4, "{others:?}");
    let killed = Instant::now();
    kill(Pid::from_raw(bench as i32), Signal::SIGKILL).expect("kill the bench");
    child.wait().expect("reap the bench");
    // The run and, once it is gone, its workers are now our children (we are a
    // subreaper): wait for each to die, for a while.
    let deadline = killed + Duration::from_secs(5);
    let mut left = others.clone();
    while !left.is_empty() && Instant::now() < deadline {
        left.retain(
            |&pid| match waitpid(Pid::from_raw(pid as i32), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) => true,
                Ok(WaitStatus::Signaled(_, Signal::SIGKILL, _)) => false,
                // A worker whose parent, the run, has not been reaped yet.
                Err(nix::errno::Errno::ECHILD) => true,
                other => panic!("process {pid} ended as {other:?}"),
            },
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    for &pid in &left {
        let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
        let _ = waitpid(Pid::from_raw(pid as i32), None);
    }
    assert!(left.is_empty(), "{left:?} outlived the bench");
    let took = killed.elapsed();
    assert!(
        took < Duration::from_secs(1),
        "the fresh run outlived its bench by {took:?}"
    );
    assert!(processes_tagged(&tag).is_empty());
    assert_no_zombie_came_to_us();
}

/// A small seeded generator, so a failing run can be replayed from its seed.
struct Seeded(rand_mt::Mt64);

impl Seeded {
    fn below(&mut self, n: u64) -> u64 {
        self.0.next_u64() % n
    }
}

#[test]
fn stress_random_faults_never_hang_orphan_or_leave_a_zombie() {
    let _serial = exclusive();
    let runs: u64 = std::env::var("RINGLEADER_STRESS_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    let seed: u64 = std::env::var("RINGLEADER_STRESS_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x5EED);
    let mut rng = Seeded(rand_mt::Mt64::new(seed));
    let kinds = ["panic", "exit", "abort", "kill", "hang", "cycle"];
    let steps = 6u64;
    let started = Instant::now();
    for i in 0..runs {
        let workers = 1 + rng.below(4);
        let threads = rng.below(3) == 0;
        let kind = loop {
            let kind = kinds[rng.below(kinds.len() as u64) as usize];
            if !threads || matches!(kind, "panic" | "hang" | "cycle") {
                break kind;
            }
        };
        let rank = rng.below(workers);
        let step = 1 + rng.below(steps);
        let normalize = rng.below(2) == 0;
        let algorithm = ["allpairs", "cells"][rng.below(2) as usize];
        let spec = format!("{rank}:{step}:{kind}");
        let (workers_arg, steps_arg) = (workers.to_string(), steps.to_string());
        let mut args = vec![
            "particles",
            "-n",
            "12",
            "-s",
            &steps_arg,
            "-p",
            &workers_arg,
            "--timeout",
            "0.3",
        ];
        if threads {
            args.extend(["--transport", "threads"]);
        }
        if normalize {
            args.push("-e");
        }
        args.extend(["--algorithm", algorithm]);
        let run = fault(&spec, &args);
        let what = format!("run {i} (seed {seed:#x}): {spec} {args:?}: {run:?}");
        assert_eq!(run.code, Some(1), "{what}");
        let line = run.line();
        let expected = match kind {
            "panic" => format!("worker rank {rank} "),
            "exit" | "abort" | "kill" => format!("worker rank {rank} (pid "),
            "hang" => format!("step {step} timed out after 0.3 s: rank {rank}"),
            _ => format!("rank {rank} waits for rank {}", (rank + 1) % workers),
        };
        assert!(line.contains(&expected), "{what}: want {expected:?}");
        if matches!(kind, "panic" | "exit" | "abort" | "kill") {
            assert!(line.ends_with(&format!(" at step {step}")), "{what}");
        }
    }
    eprintln!(
        "{runs} faulty runs in {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

#[test]
fn bad_timeouts_and_faults_are_usage_errors() {
    let _serial = exclusive();
    let cases: &[(&[&str], &str, &str)] = &[
        (&["--timeout", "0"], "", "positive number of seconds"),
        (&["--timeout", "-5"], "", "positive number of seconds"),
        (&["--timeout", "soon"], "", "expected a number of seconds"),
        (&["--timeout", "inf"], "", "positive number of seconds"),
        (&["--timeout", "NaN"], "", "positive number of seconds"),
        (&["--timeout", "1e300"], "", "too long"),
        (&["-p", "2"], "1:2", "RANK:STEP:KIND"),
        (&["-p", "2"], "1:2:explode", "one of panic"),
        (&["-p", "2"], "x:2:panic", "rank"),
        (&["-p", "2"], "1:0:panic", "step"),
        (&["-p", "2"], "2:1:panic", "rank 2 does not exist"),
        (&["-p", "2"], "1:11:panic", "past the run's 10 steps"),
        (
            &["-p", "2", "--transport", "threads"],
            "1:1:kill",
            "use worker processes",
        ),
        // Serial runs have one worker, and -t workers are threads.
        (&[], "1:1:panic", "rank 1 does not exist among 1 worker"),
        (&["-t", "2"], "0:1:exit", "a worker thread cannot exit"),
    ];
    for (extra, spec, mentions) in cases {
        let mut args = vec!["particles", "-n", "20", "-s", "10"];
        args.extend(*extra);
        let env: Vec<(&str, &str)> = if spec.is_empty() {
            Vec::new()
        } else {
            vec![("RINGLEADER_FAULT", spec)]
        };
        let run = run_with(&args, &env);
        assert_eq!(run.code, Some(2), "{args:?} {spec}: {run:?}");
        let line = run.line();
        assert!(line.starts_with("ringleader: "), "{line}");
        assert!(line.contains(mentions), "{args:?} {spec}: {line}");
    }
}

/// Every mode a run can take, as command-line arguments: serially one worker thread, the
/// textbook's threads, a ring of processes, a ring of threads.
const MODES: [&[&str]; 4] = [
    &[],
    &["-t", "2"],
    &["-p", "2"],
    &["-p", "2", "--transport", "threads"],
];

const ALGORITHMS: [&str; 2] = ["allpairs", "cells"];

/// Every fault kind against every mode and both algorithms: the guarantees come from the
/// framework, so they hold wherever a run goes. A kind a worker thread cannot play is a
/// usage error, said before anything runs.
#[test]
fn every_fault_ends_every_mode_and_algorithm_in_one_line() {
    let _serial = exclusive();
    for algorithm in ALGORITHMS {
        for mode in MODES {
            let threads = !mode.contains(&"-p") || mode.contains(&"threads");
            for kind in ["panic", "exit", "abort", "kill", "hang", "cycle"] {
                let mut args = vec!["particles", "-n", "200", "-s", "10", "--timeout", "1"];
                args.extend(["--algorithm", algorithm]);
                args.extend(mode);
                let spec = format!("0:3:{kind}");
                let run = fault(&spec, &args);
                let what = format!("{spec} {args:?}: {run:?}");
                let line = run.line();
                if threads && matches!(kind, "exit" | "abort" | "kill") {
                    assert_eq!(run.code, Some(2), "{what}");
                    assert!(line.contains("a worker thread cannot"), "{what}");
                    continue;
                }
                assert_eq!(run.code, Some(1), "{what}");
                let expected = match kind {
                    "panic" => "panicked: injected fault 0:3:panic",
                    "exit" => "exited with code 3 at step 3",
                    "abort" => "was killed by SIGABRT at step 3",
                    "kill" => "was killed by SIGKILL at step 3",
                    "hang" => "ringleader: step 3 timed out after 1 s: rank 0",
                    _ => "ringleader: deadlock: rank 0 waits ",
                };
                assert!(line.contains(expected), "{what}: want {expected:?}");
                if matches!(kind, "panic" | "exit" | "abort" | "kill") {
                    assert!(line.starts_with("ringleader: worker rank 0 "), "{what}");
                }
            }
        }
    }
}

/// Starts a long run of `args` and waits until its workers are up: the coordinator and
/// `workers` worker processes, or the coordinator's threads.
fn started(args: &[&str], tag: &str, workers: usize) -> Child {
    let child = spawn(args, &[], tag, false);
    if args.contains(&"-p") && !args.contains(&"threads") {
        wait_for_processes(tag, workers + 1);
    } else {
        // The coordinator's own thread and one per worker.
        wait_for_threads(child.id(), workers + 1);
    }
    child
}

/// The worker processes of a run: every tagged process but the coordinator.
fn workers_of(tag: &str, coordinator: u32) -> Vec<u32> {
    processes_tagged(tag)
        .into_iter()
        .filter(|&pid| pid != coordinator)
        .collect()
}

/// A step timeout, a stop signal with a checkpoint, and SIGSTOP, in every mode and both
/// algorithms: each ends as the framework promises.
#[test]
fn stop_signals_write_a_checkpoint_in_every_mode_and_algorithm() {
    let _serial = exclusive();
    for algorithm in ALGORITHMS {
        for mode in MODES {
            let dir = scratch_dir();
            let ck = dir.join("stop.ck");
            let ck_arg = ck.to_str().expect("a UTF-8 path");
            let mut args = vec!["particles", "-n", "200", "-s", "100000000", "-e"];
            args.extend(["--algorithm", algorithm, "--checkpoint", ck_arg]);
            args.extend(mode);
            let tag = new_tag();
            let begun = Instant::now();
            let child = started(&args, &tag, if mode.is_empty() { 1 } else { 2 });
            kill(Pid::from_raw(child.id() as i32), Signal::SIGINT).expect("signal");
            let run = finish(child, &tag, begun, Duration::from_secs(60));
            let what = format!("{args:?}: {run:?}");
            assert_eq!(run.code, Some(130), "{what}");
            let line = run.line();
            assert!(
                line.starts_with("ringleader: stopped by SIGINT after step "),
                "{what}"
            );
            assert!(line.ends_with("; checkpoint written"), "{what}");
            assert!(ck.exists(), "{what}");
        }
    }
}

/// A worker process stopped by SIGSTOP never finishes its step: the step timeout names it,
/// whichever algorithm it runs.
#[test]
fn a_stopped_worker_process_times_out_in_both_algorithms() {
    let _serial = exclusive();
    for algorithm in ALGORITHMS {
        let args = [
            "particles",
            "-n",
            "200",
            "-s",
            "100000000",
            "-p",
            "2",
            "--timeout",
            "1",
            "--algorithm",
            algorithm,
        ];
        let tag = new_tag();
        let begun = Instant::now();
        let child = started(&args, &tag, 2);
        let workers = workers_of(&tag, child.id());
        kill(Pid::from_raw(workers[0] as i32), Signal::SIGSTOP).expect("stop a worker");
        let run = finish(child, &tag, begun, Duration::from_secs(60));
        let line = run.line();
        assert_eq!(run.code, Some(1), "{algorithm}: {run:?}");
        assert!(line.contains("timed out after 1 s: rank "), "{line}");
        assert!(line.contains(&format!("(pid {})", workers[0])), "{line}");
    }
}

/// Waits, with a deadline, until the file at `path` exists.
fn wait_for_file(path: &std::path::Path) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !path.exists() {
        assert!(Instant::now() < deadline, "{} never came", path.display());
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A job stopped whole and sent on, as a terminal's Ctrl-Z and `fg` do, is not timed while
/// it was stopped, in every mode and both algorithms. Rank 0 hangs at step 3 (the
/// checkpoint of step 2 says the run got there); half a second into the step the whole
/// job is stopped, for longer than the 2 s step timeout, and sent on. The timeout still
/// gives rank 0 the rest of its 2 s after that, where once the coordinator found the step
/// late the moment it went on, and would have said so of any step the job was stopped in.
#[test]
fn a_job_stopped_and_sent_on_is_not_timed_while_it_was_stopped() {
    let _serial = exclusive();
    let timeout = Duration::from_secs(2);
    let into_the_step = Duration::from_millis(500);
    for algorithm in ALGORITHMS {
        for mode in MODES {
            let dir = scratch_dir();
            let ck = dir.join("step.ck");
            let ck_arg = ck.to_str().expect("a UTF-8 path");
            let mut args = vec!["particles", "-n", "200", "-s", "10", "--timeout", "2"];
            args.extend(["--checkpoint", ck_arg, "--checkpoint-every", "2"]);
            args.extend(["--algorithm", algorithm]);
            args.extend(mode);
            let tag = new_tag();
            let begun = Instant::now();
            let child = spawn(&args, &[("RINGLEADER_FAULT", "0:3:hang")], &tag, true);
            wait_for_file(&ck);
            std::thread::sleep(into_the_step);
            let job = Pid::from_raw(child.id() as i32);
            killpg(job, Signal::SIGSTOP).expect("stop the job");
            std::thread::sleep(timeout * 5 / 4);
            killpg(job, Signal::SIGCONT).expect("send the job on");
            let went_on = Instant::now();
            let run = finish(child, &tag, begun, Duration::from_secs(60));
            let after = went_on.elapsed();
            let _ = std::fs::remove_dir_all(&dir);
            let what = format!("{args:?}: {run:?}, {after:?} after it went on");
            assert_eq!(run.code, Some(1), "{what}");
            let line = run.line();
            assert!(
                line.starts_with("ringleader: step 3 timed out after 2 s: rank 0"),
                "{what}"
            );
            // The rest of the timeout is 1.5 s, less the time the stop took to come.
            assert!(after >= (timeout - into_the_step) / 2, "{what}");
        }
    }
}

/// Whether process `pid` ignores `signal` (its bit in `SigIgn` of `/proc/PID/status`).
fn ignores(pid: u32, signal: Signal) -> bool {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("SigIgn:"))
        .and_then(|mask| u64::from_str_radix(mask.trim(), 16).ok())
        .is_some_and(|mask| mask & (1 << (signal as i32 - 1)) != 0)
}

/// A stop signal the run was started ignoring stays ignored, in every mode: under `nohup` a
/// hangup stops nothing, and neither does a Ctrl-C that a shell without job control keeps
/// from its background jobs. Once the run catches SIGTERM (its handlers are in), the
/// ignored signal is still ignored, and sent, it changes nothing: SIGTERM then ends the
/// run as usual. Both signals once stopped such a run, the coordinator's handler put over
/// the ignoring.
#[test]
fn a_stop_signal_the_run_was_started_ignoring_stays_ignored() {
    let _serial = exclusive();
    let ignoring: [(&[&str], Signal); 2] = [
        (&["nohup"], Signal::SIGHUP),
        (
            &["sh", "-c", "trap '' INT; exec \"$@\"", "sh"],
            Signal::SIGINT,
        ),
    ];
    for mode in MODES {
        for (wrapper, signal) in ignoring {
            let mut args = vec!["particles", "-n", "200", "-s", "100000000"];
            args.extend(mode);
            let tag = new_tag();
            let begun = Instant::now();
            let child = spawn_under(wrapper, &args, &[], &tag, false);
            let pid = child.id();
            common::wait_for_handler(pid, Signal::SIGTERM);
            // Asked now, said once the run is over: a failed assertion leaves no run behind.
            let ignored = ignores(pid, signal);
            kill(Pid::from_raw(pid as i32), signal).expect("send the ignored signal");
            kill(Pid::from_raw(pid as i32), Signal::SIGTERM).expect("send SIGTERM");
            let run = finish(child, &tag, begun, Duration::from_secs(60));
            let what = format!("{wrapper:?} {args:?}");
            assert!(ignored, "{what}: {signal} is not ignored");
            assert_eq!(run.code, Some(143), "{what}: {run:?}");
            let line = run.line();
            assert!(line.contains("by SIGTERM"), "{what}: {line}");
        }
    }
}

/// The state of `run`'s --out file, as bits.
fn out_state(path: &std::path::Path) -> String {
    std::fs::read_to_string(path).expect("the final state")
}

/// Workers killed or stopped from outside during a run with --restarts: the run starts
/// again from the last state kept and ends with the bits of a run that never failed, on
/// processes and threads and with both algorithms.
#[test]
fn restarted_runs_end_with_the_bits_of_an_unbroken_run() {
    let _serial = exclusive();
    for algorithm in ALGORITHMS {
        let dir = scratch_dir();
        let want = dir.join("want.csv");
        let base = ["particles", "-n", "300", "-s", "2000", "-e"];
        let mut args = base.to_vec();
        args.extend(["--algorithm", algorithm, "--out", want.to_str().unwrap()]);
        assert_eq!(run_with(&args, &[]).code, Some(0));
        let want = out_state(&want);
        // On processes a worker is killed, then one is stopped; on threads one panics.
        let cases: [(&[&str], &str); 3] = [
            (&["-p", "3"], "kill"),
            (&["-p", "3"], "stop"),
            (&["-p", "3", "--transport", "threads"], "panic"),
        ];
        for (mode, how) in cases {
            let got = dir.join(format!("{how}.csv"));
            let mut args = base.to_vec();
            args.extend(["--algorithm", algorithm, "--out", got.to_str().unwrap()]);
            args.extend([
                "--restarts",
                "2",
                "--checkpoint-every",
                "50",
                "--timeout",
                "1",
            ]);
            args.extend(mode);
            let run = if how == "panic" {
                fault("1:700:panic", &args)
            } else {
                let tag = new_tag();
                let begun = Instant::now();
                let child = started(&args, &tag, 3);
                let worker = Pid::from_raw(workers_of(&tag, child.id())[1] as i32);
                let signal = if how == "kill" {
                    Signal::SIGKILL
                } else {
                    Signal::SIGSTOP
                };
                kill(worker, signal).expect("signal a worker");
                finish(child, &tag, begun, Duration::from_secs(120))
            };
            let what = format!("{algorithm} {how} {args:?}: {run:?}");
            assert_eq!(run.code, Some(0), "{what}");
            let line = run.line();
            assert!(line.contains("; restarting from step "), "{what}");
            assert!(line.ends_with(" (1 of 2)"), "{what}");
            assert_eq!(out_state(&got), want, "{what}");
        }
    }
}

/// Every ring of a run with one restart fails: the second failure ends the run as any
/// failure does, named, after the one restart line.
#[test]
fn a_run_that_fails_after_its_last_restart_ends_with_that_failure() {
    let _serial = exclusive();
    let args = [
        "particles",
        "-n",
        "200",
        "-s",
        "100000000",
        "-p",
        "2",
        "--restarts",
        "1",
    ];
    let tag = new_tag();
    let begun = Instant::now();
    let child = started(&args, &tag, 2);
    let first = workers_of(&tag, child.id());
    kill(Pid::from_raw(first[0] as i32), Signal::SIGKILL).expect("kill a worker");
    // The new ring's workers: tagged processes that were not there before.
    let deadline = Instant::now() + Duration::from_secs(30);
    let second = loop {
        let now: Vec<u32> = workers_of(&tag, child.id())
            .into_iter()
            .filter(|pid| !first.contains(pid))
            .collect();
        if now.len() == 2 {
            break now;
        }
        assert!(Instant::now() < deadline, "no new ring: {now:?}");
        std::thread::sleep(Duration::from_millis(10));
    };
    kill(Pid::from_raw(second[1] as i32), Signal::SIGKILL).expect("kill a worker again");
    let run = finish(child, &tag, begun, Duration::from_secs(60));
    assert_eq!(run.code, Some(1), "{run:?}");
    let lines: Vec<&str> = run.stderr.lines().collect();
    assert_eq!(lines.len(), 2, "{run:?}");
    assert!(lines[0].contains(&format!("(pid {}) was killed by SIGKILL", first[0])));
    assert!(lines[0].ends_with(" (1 of 1)"), "{}", lines[0]);
    assert!(
        lines[1].starts_with(&format!(
            "ringleader: worker rank 1 (pid {}) was killed by SIGKILL",
            second[1]
        )),
        "{}",
        lines[1]
    );
}

/// SIGHUP (a closed terminal or ssh session) once ended a run with no message and no
/// checkpoint. It is a stop signal like SIGTERM: the run stops at a step boundary, writes
/// its checkpoint, names the signal and exits 129.
#[test]
fn sighup_stops_the_run_like_sigterm_and_writes_the_checkpoint() {
    let _serial = exclusive();
    let dir = common::scratch("sighup-checkpoint");
    let checkpoint = dir.join("hup.ck");
    let checkpoint = checkpoint.to_str().unwrap();
    for transport in TRANSPORTS {
        let (run, took) = signalled(
            &["--transport", transport, "--checkpoint", checkpoint],
            Signal::SIGHUP,
            false,
        );
        assert_eq!(run.code, Some(129), "{transport}: {run:?}");
        let line = run.line();
        let step: u64 = line
            .strip_prefix("ringleader: stopped by SIGHUP after step ")
            .and_then(|rest| rest.strip_suffix("; checkpoint written"))
            .and_then(|step| step.parse().ok())
            .unwrap_or_else(|| panic!("{transport}: {line}"));
        assert!(took < Duration::from_secs(3), "{took:?}");
        let total = (step + 2).to_string();
        common::ringleader(&["particles", "-s", &total, "--resume", checkpoint, "-q"]).success();
        let (run, _) = signalled(&["--transport", transport], Signal::SIGHUP, false);
        assert_eq!(run.code, Some(129), "{transport}: {run:?}");
        assert_eq!(
            run.line(),
            "ringleader: interrupted by SIGHUP: every worker was stopped"
        );
    }
    // A hangup reaches the whole process group, workers too: they leave the stop to the
    // coordinator, as they do for Ctrl-C, or one would be reported killed by SIGHUP.
    let (run, took) = signalled(&[], Signal::SIGHUP, true);
    assert_eq!(run.code, Some(129), "{run:?}");
    assert_eq!(
        run.line(),
        "ringleader: interrupted by SIGHUP: every worker was stopped"
    );
    assert!(took < Duration::from_secs(3), "{took:?}");
}

/// A SIGSEGV sent to a worker was once swallowed by the Rust runtime's handler, which is
/// there for stack overflows, and the worker ran on. Any fatal signal a worker receives
/// kills it, and the coordinator names the rank, pid, signal and step.
#[test]
fn a_worker_sent_a_fatal_signal_dies_of_it_and_is_named() {
    let _serial = exclusive();
    for signal in [
        Signal::SIGSEGV,
        Signal::SIGBUS,
        Signal::SIGILL,
        Signal::SIGFPE,
    ] {
        let tag = new_tag();
        let args = ["particles", "-n", "40", "-s", "100000000", "-p", "3"];
        let started = Instant::now();
        let child = spawn(&args, &[], &tag, false);
        let coordinator = child.id();
        let worker = wait_for_processes(&tag, 4)
            .into_iter()
            .find(|&pid| pid != coordinator)
            .expect("a worker");
        kill(Pid::from_raw(worker as i32), signal).expect("signal the worker");
        let run = finish(child, &tag, started, Duration::from_secs(20));
        assert_eq!(run.code, Some(1), "{signal}: {run:?}");
        let line = run.line();
        // A worker signalled before its first step has no step to name.
        let cause = format!(" (pid {worker}) was killed by {signal}");
        let rest = line
            .strip_prefix("ringleader: worker rank ")
            .and_then(|rest| rest.split_once(&cause))
            .map(|(_, rest)| rest);
        assert!(
            rest.is_some_and(|rest| rest.is_empty() || rest.starts_with(" at step ")),
            "{signal}: {line}"
        );
    }
}
