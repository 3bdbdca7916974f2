//! Helpers shared by the integration tests: run the real binary, with a deadline, and
//! check that it left no process behind.

#![allow(dead_code, unreachable_pub)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The environment variable that marks every process a test run starts. Workers inherit
/// it, so any process still carrying it after the run has ended was left behind.
const TAG_VAR: &str = "RINGLEADER_TEST_TAG";

/// Has `command`'s process start with SIGINT, SIGTERM and SIGHUP at their default actions,
/// whatever this test inherited, for tests that send it one: a shell without job control
/// starts its background jobs ignoring SIGINT, and a run keeps ignoring a stop signal it
/// was started ignoring.
pub fn default_stop_signals(command: &mut Command) -> &mut Command {
    use nix::sys::signal::{SigHandler, Signal, signal};
    use std::os::unix::process::CommandExt;
    // SAFETY: between the fork and the exec the closure only calls signal(2), which is
    // async-signal-safe, to set default actions, which install no code of ours.
    unsafe {
        command.pre_exec(|| {
            for stop in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
                signal(stop, SigHandler::SigDfl)?;
            }
            Ok(())
        })
    }
}

pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures")
        .join(name)
}

/// A scratch directory for one test, removed and recreated.
pub fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create scratch dir");
    dir
}

/// What a run of the binary did.
#[derive(Debug)]
pub struct Run {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

impl Run {
    pub fn success(&self) -> &Self {
        assert_eq!(self.code, Some(0), "run failed: {}", self.stderr);
        self
    }
}

/// Runs `ringleader ARGS`, killing it if it outlives `deadline`, and asserts that no process
/// it started is still alive once it has exited.
pub fn ringleader_within(args: &[&str], deadline: Duration) -> Run {
    ringleader_env_within(args, &[], deadline)
}

/// [`ringleader_within`] with `env` added to the environment.
pub fn ringleader_env_within(args: &[&str], env: &[(&str, &str)], deadline: Duration) -> Run {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let tag = format!(
        "{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    );
    let started = Instant::now();
    let child = Command::new(env!("CARGO_BIN_EXE_ringleader"))
        .args(args)
        .envs(env.iter().copied())
        .env(TAG_VAR, &tag)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start ringleader");
    let pid = child.id();
    // A watchdog kills the run if it hangs; finishing first cancels it.
    let (done, cancelled) = mpsc::channel::<()>();
    let watchdog = std::thread::spawn(move || {
        if cancelled.recv_timeout(deadline) == Err(mpsc::RecvTimeoutError::Timeout) {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
            true
        } else {
            false
        }
    });
    let output: Output = child.wait_with_output().expect("wait for ringleader");
    let _ = done.send(());
    let timed_out = watchdog.join().unwrap_or(false);
    let elapsed = started.elapsed();
    let run = Run {
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        elapsed,
    };
    assert!(
        !timed_out,
        "ringleader {args:?} hung; killed after {deadline:?}: {run:?}"
    );
    let left = processes_tagged(&tag);
    assert!(
        left.is_empty(),
        "ringleader {args:?} left processes behind: {left:?}"
    );
    run
}

pub fn ringleader(args: &[&str]) -> Run {
    ringleader_within(args, Duration::from_secs(120))
}

/// Waits, with a deadline, until process `pid` catches `signal` (its bit in `SigCgt` of
/// `/proc/PID/status`): from then on the signal reaches its handler, not the default
/// action.
pub fn wait_for_handler(pid: u32, signal: nix::sys::signal::Signal) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !catches(pid, signal) {
        assert!(Instant::now() < deadline, "{signal} was never caught");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Whether process `pid` catches `signal` now: see [`wait_for_handler`].
pub fn catches(pid: u32, signal: nix::sys::signal::Signal) -> bool {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let caught = status
        .lines()
        .find_map(|line| line.strip_prefix("SigCgt:"))
        .and_then(|mask| u64::from_str_radix(mask.trim(), 16).ok())
        .unwrap_or(0);
    caught & (1 << (signal as i32 - 1)) != 0
}

/// Live processes whose environment carries this tag.
pub fn processes_tagged(tag: &str) -> Vec<u32> {
    let needle = format!("{TAG_VAR}={tag}");
    processes_whose("environ", |env| {
        env.split(|&b| b == 0).any(|var| var == needle.as_bytes())
    })
}

/// Live processes whose command line holds `text`.
pub fn processes_running(text: &str) -> Vec<u32> {
    processes_whose("cmdline", |line| {
        String::from_utf8_lossy(line).contains(text)
    })
}

/// Live processes whose `/proc/PID/{file}` can be read and `keep` accepts.
fn processes_whose(file: &str, keep: impl Fn(&[u8]) -> bool) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| std::fs::read(format!("/proc/{pid}/{file}")).is_ok_and(|bytes| keep(&bytes)))
        .collect()
}

/// A final-state CSV (`id,x,y,vx,vy`) as the bits of each value, by id.
pub fn read_state(path: &Path) -> BTreeMap<u32, [u64; 4]> {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    parse_state(&text)
}

pub fn parse_state(text: &str) -> BTreeMap<u32, [u64; 4]> {
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("id,x,y,vx,vy"), "header");
    lines
        .map(|line| {
            let fields: Vec<&str> = line.split(',').collect();
            assert_eq!(fields.len(), 5, "row {line:?}");
            let id = fields[0].parse().expect("id");
            let value = |i: usize| fields[i].parse::<f64>().expect("float").to_bits();
            (id, [value(1), value(2), value(3), value(4)])
        })
        .collect()
}

/// Resumes `checkpoint`, the state a stopped run wrote after `step`, for five more steps on
/// two forked workers, and checks the result bit for bit against a run never stopped:
/// `particles STRAIGHT -s STEP+5` (`straight`: the stopped run's `-n`, and its algorithm).
/// The two outputs go to `dir`.
pub fn assert_resumes_bit_for_bit(
    checkpoint: &str,
    step: u64,
    straight: &[&str],
    dir: &Path,
    what: &str,
) {
    let total = (step + 5).to_string();
    let resumed = dir.join("resumed.csv");
    let unstopped = dir.join("straight.csv");
    let resumed_arg = resumed.to_str().expect("a UTF-8 path");
    let unstopped_arg = unstopped.to_str().expect("a UTF-8 path");
    ringleader(&[
        "particles",
        "-s",
        &total,
        "-p",
        "2",
        "--resume",
        checkpoint,
        "--out",
        resumed_arg,
    ])
    .success();
    let mut args = vec!["particles"];
    args.extend(straight);
    args.extend(["-s", &total, "--out", unstopped_arg]);
    ringleader(&args).success();
    assert_same_state(
        &read_state(&resumed),
        &read_state(&unstopped),
        &format!("{what}: resumed at step {step}"),
    );
}

/// Asserts two states are equal bit for bit, naming the first particle that differs.
pub fn assert_same_state(
    got: &BTreeMap<u32, [u64; 4]>,
    want: &BTreeMap<u32, [u64; 4]>,
    what: &str,
) {
    assert_eq!(got.len(), want.len(), "{what}: particle count");
    for (id, want_bits) in want {
        let got_bits = got
            .get(id)
            .unwrap_or_else(|| panic!("{what}: particle {id} missing"));
        if got_bits != want_bits {
            let show = |bits: &[u64; 4]| bits.map(f64::from_bits);
            panic!(
                "{what}: particle {id} differs: got {:?}, want {:?}",
                show(got_bits),
                show(want_bits)
            );
        }
    }
}
