//! Checkpoints through the real binary: a run cut into pieces and resumed in other modes and
//! on other worker counts ends bit for bit where the textbook's uninterrupted run does, and
//! every bad checkpoint or flag ends in one clear line.

mod common;

use std::path::{Path, PathBuf};

use common::{Run, assert_same_state, fixture, read_state, ringleader, scratch};

fn path(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// Runs `ringleader particles BASE MODE -s STEPS [--resume FROM] --checkpoint TO`.
fn leg(base: &[&str], mode: &[&str], steps: u64, from: Option<&Path>, to: &Path) {
    let steps = steps.to_string();
    let mut args = vec!["particles"];
    args.extend(base);
    args.extend(mode);
    args.extend(["-s", &steps, "--checkpoint", path(to)]);
    if let Some(from) = from {
        args.extend(["--resume", path(from)]);
    }
    ringleader(&args).success();
}

/// Runs `base` in legs of (mode, total steps), each resuming from the last, then a final
/// leg in `last` writing the state to CSV; checks it against `fixture_file`.
fn chain(name: &str, base: &[&str], legs: &[(&[&str], u64)], last: (&[&str], u64), want: &str) {
    let dir = scratch(name);
    let mut previous: Option<PathBuf> = None;
    for (i, (mode, steps)) in legs.iter().enumerate() {
        let to = dir.join(format!("leg{i}.ck"));
        leg(base, mode, *steps, previous.as_deref(), &to);
        previous = Some(to);
    }
    let out = dir.join("final.csv");
    let steps = last.1.to_string();
    let mut args = vec!["particles"];
    args.extend(base);
    args.extend(last.0);
    args.extend(["-s", &steps, "--out", path(&out)]);
    if let Some(from) = &previous {
        args.extend(["--resume", path(from)]);
    }
    ringleader(&args).success();
    assert_same_state(
        &read_state(&out),
        &read_state(&fixture(want)),
        &format!("{name}: {legs:?} then {last:?}"),
    );
}

#[test]
fn n300_with_normalization_resumed_in_other_modes_matches_the_textbook() {
    // The chain the issue names: to step 37 on 2 processes, then to 100 on 3 threads.
    chain(
        "n300e-p2-t3",
        &["-n", "300", "-e"],
        &[(&["-p", "2"], 37)],
        (&["-t", "3"], 100),
        "textbook-n300-s100-e.csv",
    );
    // Serial, then a ring over threads, then processes, then serial: -n is left to the file.
    chain(
        "n300e-mixed",
        &["-e"],
        &[
            (&["-n", "300"], 10),
            (&["-p", "7", "--transport", "threads"], 45),
            (&["-p", "3"], 99),
        ],
        (&[], 100),
        "textbook-n300-s100-e.csv",
    );
}

#[test]
fn n400_resumed_across_worker_counts_matches_the_textbook() {
    chain(
        "n400",
        &["-n", "400"],
        &[(&["-t", "2"], 50), (&["-p", "7"], 120), (&[], 121)],
        (&["-p", "3", "--transport", "threads"], 200),
        "textbook-n400-s200.csv",
    );
}

#[test]
fn n20_resumed_after_every_single_step_change_matches_the_textbook() {
    chain(
        "n20",
        &[],
        &[(&["-p", "20"], 1), (&["-t", "7"], 2), (&[], 98)],
        (&["-p", "3"], 100),
        "textbook-n20-s100.csv",
    );
}

#[test]
fn a_resumed_energy_log_continues_the_textbook_log() {
    let dir = scratch("resumed-energy");
    let ck = dir.join("at40.ck");
    leg(&["-n", "300", "-e"], &["-t", "2"], 40, None, &ck);
    let log = dir.join("energy.csv");
    let args = [
        "particles",
        "-e",
        "-s",
        "100",
        "-p",
        "4",
        "--resume",
        path(&ck),
        "--energy-log",
        path(&log),
    ];
    ringleader(&args).success();
    let want: Vec<(u64, u64)> = std::fs::read_to_string(fixture("textbook-n300-s100-e.energy"))
        .unwrap()
        .lines()
        .zip(1..)
        .skip(40)
        .map(|(line, step)| (step, line.parse::<f64>().unwrap().to_bits()))
        .collect();
    let text = std::fs::read_to_string(&log).unwrap();
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("step,energy"));
    let got: Vec<(u64, u64)> = lines
        .map(|line| {
            let (step, energy) = line.split_once(',').unwrap();
            (
                step.parse().unwrap(),
                energy.parse::<f64>().unwrap().to_bits(),
            )
        })
        .collect();
    assert_eq!(got, want);
}

/// The files in `dir`, sorted.
fn files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

#[test]
fn checkpoint_every_writes_at_each_multiple_and_the_end() {
    let dir = scratch("every");
    let template = dir.join("ck-{step}.bin");
    ringleader(&[
        "particles",
        "-s",
        "100",
        "-p",
        "3",
        "--checkpoint",
        path(&template),
        "--checkpoint-every",
        "30",
    ])
    .success();
    assert_eq!(
        files(&dir),
        ["ck-100.bin", "ck-30.bin", "ck-60.bin", "ck-90.bin"]
    );
    // Each file holds the step its name says: resuming it short of that step is refused...
    for step in [30, 60, 90, 100] {
        let ck = dir.join(format!("ck-{step}.bin"));
        let short = (step - 1).to_string();
        let run = ringleader(&["particles", "-s", &short, "--resume", path(&ck)]);
        assert_failure(&run, &format!("is at step {step}, past -s {short}"));
        // ...and resuming it at that step gives the state of a plain run of that many steps.
        let resumed = dir.join(format!("resumed-{step}.csv"));
        let plain = dir.join(format!("plain-{step}.csv"));
        let steps = step.to_string();
        ringleader(&[
            "particles",
            "-s",
            &steps,
            "--resume",
            path(&ck),
            "--out",
            path(&resumed),
        ])
        .success();
        ringleader(&["particles", "-s", &steps, "--out", path(&plain)]).success();
        assert_same_state(&read_state(&resumed), &read_state(&plain), &steps);
    }
    // An intermediate one resumes to the textbook's end, writing its own checkpoints on.
    let out = dir.join("final.csv");
    let again = dir.join("again-{step}.bin");
    ringleader(&[
        "particles",
        "-s",
        "100",
        "-t",
        "4",
        "--resume",
        path(&dir.join("ck-60.bin")),
        "--checkpoint",
        path(&again),
        "--checkpoint-every",
        "25",
        "--out",
        path(&out),
    ])
    .success();
    assert_same_state(
        &read_state(&out),
        &read_state(&fixture("textbook-n20-s100.csv")),
        "from ck-60",
    );
    let again: Vec<String> = files(&dir)
        .into_iter()
        .filter(|f| f.starts_with("again-"))
        .collect();
    assert_eq!(again, ["again-100.bin", "again-75.bin"]);
}

#[test]
fn one_checkpoint_file_ends_holding_the_last_step_and_no_temporary_is_left() {
    let dir = scratch("replace");
    let ck = dir.join("state.ck");
    // An old checkpoint, larger than the new one will be, is replaced whole.
    std::fs::write(&ck, vec![0xAB; 1 << 20]).unwrap();
    ringleader(&[
        "particles",
        "-n",
        "300",
        "-e",
        "-s",
        "100",
        "-p",
        "2",
        "--checkpoint",
        path(&ck),
        "--checkpoint-every",
        "7",
    ])
    .success();
    assert_eq!(files(&dir), ["state.ck"]);
    assert!(std::fs::metadata(&ck).unwrap().len() < 1 << 20);
    let out = dir.join("final.csv");
    ringleader(&[
        "particles",
        "-e",
        "-s",
        "100",
        "--resume",
        path(&ck),
        "--out",
        path(&out),
    ])
    .success();
    assert_same_state(
        &read_state(&out),
        &read_state(&fixture("textbook-n300-s100-e.csv")),
        "the last checkpoint",
    );
    // Resuming from a file and checkpointing back to it is safe: the read comes first.
    ringleader(&[
        "particles",
        "-e",
        "-s",
        "100",
        "--resume",
        path(&ck),
        "--checkpoint",
        path(&ck),
    ])
    .success();
    assert_eq!(files(&dir), ["final.csv", "state.ck"]);
}

/// Exit 1, one line on stderr naming the problem, nothing on stdout, no panic.
fn assert_failure(run: &Run, mentions: &str) {
    assert_eq!(run.code, Some(1), "{run:?}");
    let lines: Vec<&str> = run.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one line: {:?}", run.stderr);
    assert!(lines[0].starts_with("ringleader: "), "{}", lines[0]);
    assert!(
        lines[0].contains(mentions),
        "{:?} should mention {mentions:?}",
        lines[0]
    );
    assert!(!run.stderr.contains("panicked"), "{}", run.stderr);
    assert!(
        run.stdout.is_empty(),
        "the run should not start: {}",
        run.stdout
    );
}

/// A real checkpoint: n = 20 after 10 steps with -e, and its bytes.
fn good_checkpoint(dir: &Path) -> (PathBuf, Vec<u8>) {
    let ck = dir.join("good.ck");
    leg(&["-e"], &[], 10, None, &ck);
    let bytes = std::fs::read(&ck).unwrap();
    (ck, bytes)
}

fn resume_from(dir: &Path, name: &str, bytes: &[u8], extra: &[&str]) -> Run {
    let ck = dir.join(name);
    std::fs::write(&ck, bytes).unwrap();
    let mut args = vec!["particles", "-e", "-s", "20", "--resume", path(&ck)];
    args.extend(extra);
    ringleader(&args)
}

#[test]
fn damaged_and_foreign_checkpoints_are_refused_with_one_line() {
    let dir = scratch("damaged");
    let (_, good) = good_checkpoint(&dir);
    let mut corrupt = good.clone();
    let last = corrupt.len() - 1;
    corrupt[last] ^= 1;
    let mut version2 = good[..8].to_vec();
    version2.extend([2, 0, 0, 0]);
    let mut trailing = good.clone();
    trailing.push(0);
    let cases: &[(&str, &[u8], &str)] = &[
        (
            "truncated.ck",
            &good[..good.len() / 2],
            "truncated.ck: the file is truncated",
        ),
        ("empty.ck", &[], "the file is empty"),
        ("corrupt.ck", &corrupt, "the checksum does not match"),
        (
            "version2.ck",
            &version2,
            "checkpoint format version 2 is not supported",
        ),
        ("trailing.ck", &trailing, "unexpected bytes after its end"),
        (
            "state.csv",
            b"id,x,y,vx,vy\n0,0.1,0.1,0,0\n",
            "wrong magic number",
        ),
    ];
    for (name, bytes, mentions) in cases {
        let run = resume_from(&dir, name, bytes, &["-p", "2"]);
        assert_failure(&run, mentions);
    }
    let run = ringleader(&["particles", "--resume", path(&dir.join("missing.ck"))]);
    assert_failure(&run, "cannot read checkpoint");
    let run = ringleader(&["particles", "--resume", path(&dir)]);
    assert_failure(&run, "cannot read checkpoint");
}

#[test]
fn flags_that_disagree_with_the_checkpoint_are_refused_with_one_line() {
    let dir = scratch("mismatch");
    let (ck, _) = good_checkpoint(&dir);
    let ck = path(&ck);
    let cases: &[(&[&str], &str)] = &[
        (&["-e", "-n", "21"], "-n 21 disagrees with checkpoint"),
        (
            &["-e", "--dt", "0.001"],
            "--dt 0.001 disagrees with checkpoint",
        ),
        (&[], "was written with -e and cannot be resumed without it"),
        (&["-e", "-s", "9"], "is at step 10, past -s 9"),
    ];
    for (extra, mentions) in cases {
        let mut args = vec!["particles", "--resume", ck];
        args.extend(*extra);
        assert_failure(&ringleader(&args), mentions);
    }
    // And the other way: a checkpoint without -e resumed with it.
    let plain = dir.join("plain.ck");
    leg(&[], &[], 5, None, &plain);
    let run = ringleader(&["particles", "-e", "--resume", path(&plain)]);
    assert_failure(&run, "was written without -e and cannot be resumed with it");
    // Flags that agree are fine, spelled out or not.
    ringleader(&[
        "particles",
        "-e",
        "-n",
        "20",
        "--dt",
        "0.0005",
        "-s",
        "12",
        "--resume",
        ck,
    ])
    .success();
}

#[test]
fn an_unwritable_checkpoint_fails_before_the_run() {
    let dir = scratch("unwritable");
    let cases: &[(PathBuf, &str)] = &[
        (dir.join("missing/state.ck"), "No such file or directory"),
        (dir.clone(), "it is a directory"),
    ];
    for (target, mentions) in cases {
        let run = ringleader(&["particles", "-s", "5", "--checkpoint", path(target)]);
        assert_failure(&run, mentions);
        assert!(
            run.stderr.contains("cannot write checkpoint"),
            "{}",
            run.stderr
        );
    }
    assert!(files(&dir).is_empty(), "{:?}", files(&dir));
}

#[test]
fn bad_checkpoint_flags_are_usage_errors() {
    let cases: &[(&[&str], &str)] = &[
        (&["particles", "--checkpoint"], "a value is required"),
        (&["particles", "--checkpoint", ""], "a value is required"),
        (&["particles", "--resume"], "a value is required"),
        (&["particles", "--resume", ""], "a value is required"),
        (
            &["particles", "--checkpoint-every", "5"],
            "needs --checkpoint or --restarts",
        ),
        (
            &["particles", "--checkpoint", "x", "--checkpoint-every", "0"],
            "at least 1",
        ),
        (
            &["particles", "--checkpoint", "x", "--checkpoint-every", "-2"],
            "at least 1",
        ),
        (
            &[
                "particles",
                "--checkpoint",
                "x",
                "--checkpoint-every",
                "ten",
            ],
            "whole number",
        ),
        (
            &["particles", "--checkpoint", "x", "--checkpoint-every"],
            "a value is required",
        ),
    ];
    for (args, mentions) in cases {
        let run = ringleader(args);
        assert_eq!(run.code, Some(2), "{args:?}: {run:?}");
        let lines: Vec<&str> = run.stderr.lines().collect();
        assert_eq!(lines.len(), 1, "{args:?}: {:?}", run.stderr);
        assert!(lines[0].starts_with("ringleader: "), "{}", lines[0]);
        assert!(lines[0].contains(mentions), "{args:?}: {}", lines[0]);
        assert!(run.stdout.is_empty());
        assert!(!Path::new("x").exists(), "no checkpoint is written");
    }
}

#[test]
fn worker_counts_are_checked_against_the_checkpoints_particle_count() {
    let dir = scratch("counts");
    let ck = dir.join("n5.ck");
    leg(&["-n", "5"], &[], 3, None, &ck);
    let run = ringleader(&["particles", "-s", "4", "-t", "6", "--resume", path(&ck)]);
    assert_eq!(run.code, Some(2), "{run:?}");
    assert!(
        run.stderr.contains("more threads than the 5 particles"),
        "{}",
        run.stderr
    );
}

#[test]
fn a_periodic_checkpoint_that_cannot_be_written_ends_the_run_with_one_line() {
    let dir = scratch("periodic-failure");
    // The final checkpoint's directory exists, so the run starts; step 30's does not.
    std::fs::create_dir(dir.join("100")).unwrap();
    let template = dir.join("{step}/state.ck");
    let run = ringleader(&[
        "particles",
        "-s",
        "100",
        "-p",
        "3",
        "--checkpoint",
        path(&template),
        "--checkpoint-every",
        "30",
    ]);
    let want = format!("cannot write checkpoint {}", path(&dir.join("30/state.ck")));
    assert_failure(&run, &want);
    assert!(
        run.stderr.contains("No such file or directory"),
        "{}",
        run.stderr
    );
    assert_eq!(files(&dir), ["100"]);
    assert!(files(&dir.join("100")).is_empty());
}

/// A pid no process has: a child that has been reaped.
fn dead_pid() -> u32 {
    let mut child = std::process::Command::new("true").spawn().unwrap();
    child.wait().unwrap();
    child.id()
}

/// A coordinator killed while writing a checkpoint once left `.NAME.XXXXXX.tmp` files
/// that no later run cleaned up. The next write to the same file, or to any file of the
/// same `{step}` template, removes the temporaries whose writer is provably gone, and
/// nothing else.
#[test]
fn temporaries_a_killed_write_left_are_removed_by_the_next_write() {
    let dir = scratch("stale-temporaries");
    let dead = dead_pid();
    let parent = nix::unistd::getppid();
    let hour_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(2 * 3600);
    // (name, modified long ago, kept)
    let files_before = [
        // Left by a write whose process is gone.
        (format!(".state.ck.{dead}.Ab3dE9.tmp"), false, false),
        // Named as earlier versions named them, untouched for hours.
        (".state.ck.Zq81xW.tmp".to_owned(), true, false),
        // A step of the template this run never writes.
        (format!(".ck-7.{dead}.aaaaaa.tmp"), false, false),
        // Perhaps being written right now: a live pid, or no pid and fresh.
        (format!(".state.ck.{parent}.Ab3dE9.tmp"), false, true),
        (".state.ck.Zq81xX.tmp".to_owned(), false, true),
        // Not ours: another target, another pattern.
        (format!(".other.ck.{dead}.Ab3dE9.tmp"), false, true),
        (format!(".state.ck.{dead}.Ab3dE9.tmp.bak"), true, true),
        (format!(".ck-x.{dead}.aaaaaa.tmp"), true, true),
    ];
    for (name, old, _) in &files_before {
        let file = std::fs::File::create(dir.join(name)).unwrap();
        if *old {
            file.set_modified(hour_ago).unwrap();
        }
    }
    let (state, template) = (dir.join("state.ck"), dir.join("ck-{step}"));
    ringleader(&[
        "particles",
        "-s",
        "10",
        "-p",
        "2",
        "--checkpoint",
        path(&state),
    ])
    .success();
    ringleader(&[
        "particles",
        "-s",
        "10",
        "--checkpoint",
        path(&template),
        "--checkpoint-every",
        "5",
    ])
    .success();
    let mut want: Vec<String> = files_before
        .iter()
        .filter(|(.., kept)| *kept)
        .map(|(name, ..)| name.clone())
        .chain(["state.ck", "ck-5", "ck-10"].map(String::from))
        .collect();
    want.sort();
    assert_eq!(files(&dir), want);
}

/// `--checkpoint -` writes the checkpoint to stdout, for a pipe or a file; it resumes
/// like any other.
#[test]
fn a_checkpoint_to_stdout_resumes_like_a_file() {
    let dir = scratch("checkpoint-stdout");
    let run = std::process::Command::new(env!("CARGO_BIN_EXE_ringleader"))
        .args([
            "particles",
            "-n",
            "300",
            "-e",
            "-s",
            "37",
            "-p",
            "2",
            "--checkpoint",
            "-",
        ])
        .current_dir(&dir)
        .output()
        .unwrap();
    assert!(run.status.success(), "{run:?}");
    assert!(files(&dir).is_empty(), "{:?}", files(&dir));
    assert!(String::from_utf8_lossy(&run.stderr).contains("simulation took"));
    let ck = dir.join("from-stdout.ck");
    std::fs::write(&ck, &run.stdout).unwrap();
    let out = dir.join("final.csv");
    ringleader(&[
        "particles",
        "-e",
        "-s",
        "100",
        "-t",
        "3",
        "--resume",
        path(&ck),
        "--out",
        path(&out),
    ])
    .success();
    assert_same_state(
        &read_state(&out),
        &read_state(&fixture("textbook-n300-s100-e.csv")),
        "resumed from a checkpoint on stdout",
    );
}

/// A checkpoint is binary: `--checkpoint -` on a terminal is refused rather than garbling
/// it, as is `-` with `--checkpoint-every`, which would write many into one stream.
#[test]
fn a_checkpoint_to_stdout_refuses_a_terminal_and_checkpoint_every() {
    use std::os::fd::OwnedFd;
    let dir = scratch("checkpoint-terminal");
    let master = nix::pty::posix_openpt(
        nix::fcntl::OFlag::O_RDWR | nix::fcntl::OFlag::O_NOCTTY | nix::fcntl::OFlag::O_CLOEXEC,
    )
    .unwrap();
    nix::pty::grantpt(&master).unwrap();
    nix::pty::unlockpt(&master).unwrap();
    let terminal: OwnedFd = std::fs::OpenOptions::new()
        .write(true)
        .open(nix::pty::ptsname_r(&master).unwrap())
        .unwrap()
        .into();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_ringleader"))
        .args(["particles", "-s", "5", "--checkpoint", "-"])
        .current_dir(&dir)
        .stdout(terminal)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("would write binary to the terminal"),
        "{stderr}"
    );
    drop(master);
    let run = ringleader(&[
        "particles",
        "-s",
        "5",
        "--checkpoint",
        "-",
        "--checkpoint-every",
        "2",
    ]);
    assert_eq!(run.code, Some(2), "{run:?}");
    assert!(run.stderr.contains("--checkpoint-every"), "{}", run.stderr);
    assert!(files(&dir).is_empty(), "{:?}", files(&dir));
}
