//! Bad input: exit code 2, one clear line on stderr, never a panic, never a hang.

mod common;

use common::ringleader;

fn assert_usage_error(args: &[&str], mentions: &str) {
    let run = ringleader(args);
    assert_eq!(run.code, Some(2), "{args:?}: {run:?}");
    let lines: Vec<&str> = run.stderr.lines().collect();
    assert_eq!(
        lines.len(),
        1,
        "{args:?}: stderr should be one line: {:?}",
        run.stderr
    );
    assert!(
        lines[0].starts_with("ringleader: "),
        "{args:?}: {}",
        lines[0]
    );
    assert!(
        lines[0].contains(mentions),
        "{args:?}: {:?} should mention {mentions:?}",
        lines[0]
    );
    assert!(!run.stderr.contains("panicked"), "{args:?}: {}", run.stderr);
    assert!(run.stdout.is_empty(), "{args:?}: {}", run.stdout);
}

#[test]
fn bad_particle_arguments_are_usage_errors() {
    let cases: &[(&[&str], &str)] = &[
        (&["particles", "-n", "0"], "at least 1"),
        (&["particles", "-n", "abc"], "whole number"),
        (&["particles", "-n", "-3"], "-n"),
        (&["particles", "-p", "0"], "at least 1"),
        (&["particles", "-t", "0"], "at least 1"),
        (
            &["particles", "-n", "20", "-p", "21"],
            "more workers than the 20 particles",
        ),
        (
            &["particles", "-n", "5", "-t", "6"],
            "more threads than the 5 particles",
        ),
        (&["particles", "-t", "2", "-p", "2"], "cannot be used with"),
        (&["particles", "--dt", "0"], "positive and finite"),
        (&["particles", "--dt", "-0.1"], "positive and finite"),
        (&["particles", "-dt", "inf"], "positive and finite"),
        (&["particles", "--dt", "NaN"], "positive and finite"),
        (&["particles", "--dt", "fast"], "expected a number"),
        (&["particles", "-s", "-5"], "cannot be negative"),
        (&["particles", "-s", "1.5"], "whole number of steps"),
        (&["particles", "--transport", "threads"], "-p"),
        // -t runs the textbook's threads: a transport would be ignored.
        (
            &["particles", "-t", "2", "--transport", "threads"],
            "cannot be used with",
        ),
        // A negative count is named as one, not as an argument of its own.
        (&["particles", "--restarts", "-1"], "--restarts"),
        (
            &["particles", "--transport", "carrier-pigeon", "-p", "2"],
            "carrier-pigeon",
        ),
        (&["particles", "--bogus"], "--bogus"),
        #[cfg(not(feature = "mpi"))]
        (
            &["particles", "--transport", "mpi"],
            "needs a ringleader built with MPI",
        ),
        (&["launch-the-rockets"], "launch-the-rockets"),
    ];
    for (args, mentions) in cases {
        assert_usage_error(args, mentions);
    }
    let one = ringleader(&["particles", "-n", "1", "-p", "2"]);
    assert_eq!(
        one.stderr.trim_end(),
        "ringleader: -p 2 asks for more workers than the 1 particle"
    );
}

#[test]
fn an_unwritable_output_is_a_runtime_error_before_the_run() {
    let run = ringleader(&["particles", "--out", "/nonexistent-dir/out.csv"]);
    assert_eq!(run.code, Some(1), "{run:?}");
    assert_eq!(run.stderr.lines().count(), 1, "{}", run.stderr);
    assert!(
        run.stderr.contains("cannot write /nonexistent-dir/out.csv"),
        "{}",
        run.stderr
    );
    assert!(run.stdout.is_empty());
    // A path ending in / names a directory: where there is none, it is not made a file.
    let dir = common::scratch("output-named-as-a-directory");
    for name in ["out/", "out/."] {
        let path = format!("{}/{name}", dir.display());
        let run = ringleader(&["particles", "-n", "20", "-s", "1", "--out", &path]);
        assert_eq!(run.code, Some(1), "{path}: {run:?}");
        assert!(
            run.stderr.contains("it names a directory"),
            "{path}: {}",
            run.stderr
        );
        assert!(!dir.join("out").exists(), "{path} made a file");
    }
}

/// Root passes every permission check on the kernel's own file systems, so only their type
/// tells that no output can go there: a run must not do its work first and fail after.
#[test]
fn an_output_on_the_kernels_file_systems_is_refused_before_the_run() {
    let cases: &[(&str, &str, &str)] = &[
        ("--out", "/proc/version", "/proc is on procfs"),
        ("--out", "/proc/ringleader-out.csv", "/proc is on procfs"),
        (
            "--energy-log",
            "/sys/ringleader-energy.csv",
            "/sys is on sysfs",
        ),
        ("--checkpoint", "/proc/ringleader.ck", "/proc is on procfs"),
        (
            "--snapshot",
            "/sys/kernel/ringleader.png",
            "/sys/kernel is on sysfs",
        ),
    ];
    for &(flag, target, mentions) in cases {
        let run = ringleader(&["particles", "-n", "200", "-s", "5", flag, target]);
        assert_eq!(run.code, Some(1), "{flag} {target}: {run:?}");
        assert_eq!(
            run.stderr.lines().count(),
            1,
            "{flag} {target}: {}",
            run.stderr
        );
        assert!(run.stderr.contains(target), "{}", run.stderr);
        assert!(run.stderr.contains(mentions), "{}", run.stderr);
        // No timing line: the run never started.
        assert!(run.stdout.is_empty(), "{flag} {target}: {}", run.stdout);
    }
    assert!(!std::path::Path::new("/proc/ringleader-out.csv").exists());
}

#[test]
fn help_lists_examples_and_succeeds() {
    let run = ringleader(&["particles", "--help"]);
    run.success();
    assert!(run.stdout.contains("Examples:"));
    assert!(run.stdout.contains("-p, --processes <PROCESSES>"));
}

#[test]
fn a_reader_that_goes_away_ends_the_run_quietly() {
    // 3000 rows are far more than a pipe holds, so `head` is gone long before the last.
    let err_file = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("epipe.err");
    let script = format!(
        "set -o pipefail; {} particles -n 3000 -s 0 --out - 2>{} | head -n 1",
        env!("CARGO_BIN_EXE_ringleader"),
        err_file.display()
    );
    let status = std::process::Command::new("bash")
        .args(["-c", &script])
        .stdout(std::process::Stdio::null())
        .status()
        .expect("run bash");
    assert!(status.success(), "{status:?}");
    let stderr = std::fs::read_to_string(&err_file).unwrap_or_default();
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(!stderr.contains("ringleader:"), "{stderr}");
}

/// The textbook bounces a particle back one wall at a time, so a step that throws one
/// 1e300 box widths out would never end. Every mode stops with one line instead.
#[test]
fn an_absurd_step_length_fails_in_one_line_instead_of_hanging() {
    for mode in [
        &[][..],
        &["-t", "2"],
        &["-p", "2"],
        &["-p", "2", "--transport", "threads"],
        &["--algorithm", "cells"],
        &["--algorithm", "cells", "-t", "2"],
        &["--algorithm", "cells", "-p", "2"],
    ] {
        let mut args = vec!["particles", "-n", "200", "-s", "3", "--dt", "1e300"];
        args.extend_from_slice(mode);
        let run = common::ringleader_within(&args, std::time::Duration::from_secs(30));
        assert_eq!(run.code, Some(1), "{mode:?}: {run:?}");
        assert_eq!(run.stderr.lines().count(), 1, "{mode:?}: {}", run.stderr);
        assert!(
            run.stderr
                .contains("the step length (--dt) is too large at step 1"),
            "{mode:?}: {}",
            run.stderr
        );
    }
}

/// `--out` and `--energy-log` are written whole after the run or not at all: a run that
/// fails leaves the files of an earlier run as they were, and no temporary files.
#[test]
fn a_failed_run_leaves_earlier_outputs_as_they_were() {
    let dir = common::scratch("outputs-kept");
    let out = dir.join("state.csv");
    let log = dir.join("energy.log");
    let (out_arg, log_arg) = (out.to_str().unwrap(), log.to_str().unwrap());
    let first = ["particles", "-n", "50", "-s", "4"];
    let outputs = ["--out", out_arg, "--energy-log", log_arg];
    ringleader(&[&first[..], &outputs[..]].concat()).success();
    let (state, energies) = (
        std::fs::read_to_string(&out).unwrap(),
        std::fs::read_to_string(&log).unwrap(),
    );
    assert_eq!(state.lines().count(), 51);
    assert_eq!(energies.lines().count(), 5);
    for mode in [&[][..], &["-p", "2"]] {
        let failing = ["particles", "-n", "80", "-s", "4", "--dt", "1e300"];
        let run = ringleader(&[&failing[..], &outputs[..], mode].concat());
        assert_eq!(run.code, Some(1), "{run:?}");
        assert_eq!(std::fs::read_to_string(&out).unwrap(), state, "{mode:?}");
        assert_eq!(std::fs::read_to_string(&log).unwrap(), energies, "{mode:?}");
        let mut names: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|entry| entry.unwrap().file_name())
            .collect();
        names.sort();
        assert_eq!(names, ["energy.log", "state.csv"], "{mode:?}");
    }
}

/// The character device a test writes through. As root, a node of the null device made for
/// the test: a regression that replaced the node would then replace that one, not the
/// machine's `/dev/null`. Otherwise `/dev/null` itself, which a user cannot replace.
fn null_device(dir: &std::path::Path) -> std::path::PathBuf {
    use nix::sys::stat::{Mode, SFlag, makedev, mknod};
    let node = dir.join("null");
    let made = mknod(
        &node,
        SFlag::S_IFCHR,
        Mode::from_bits_truncate(0o666),
        makedev(1, 3),
    );
    // A file system mounted `nodev` takes the node but refuses to open it.
    if made.is_ok() && std::fs::OpenOptions::new().write(true).open(&node).is_ok() {
        node
    } else {
        std::path::PathBuf::from("/dev/null")
    }
}

fn assert_null_device(path: &std::path::Path) {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let meta = std::fs::symlink_metadata(path).expect("stat the device");
    assert!(
        meta.file_type().is_char_device(),
        "{} is no longer a device: {meta:?}",
        path.display()
    );
    assert_eq!(meta.rdev(), nix::sys::stat::makedev(1, 3));
}

/// Run as root, `--out /dev/null` once replaced the machine's null device with a regular
/// file. Every output is now written through a device; outputs may share the null device.
#[test]
fn outputs_onto_a_device_are_written_through_and_the_device_kept() {
    let dir = common::scratch("device-outputs");
    let null = null_device(&dir);
    let null = null.to_str().unwrap();
    for outputs in [
        &["--out", null][..],
        &["--energy-log", null],
        &["--checkpoint", null],
        &["--out", null, "--energy-log", null, "--checkpoint", null],
    ] {
        let args = [
            &["particles", "-n", "30", "-s", "3", "-p", "2"][..],
            outputs,
        ]
        .concat();
        let run = ringleader(&args);
        run.success();
        assert!(run.stdout.contains("simulation took"), "{}", run.stdout);
        assert_null_device(std::path::Path::new(null));
    }
    assert_null_device(std::path::Path::new("/dev/null"));
}

/// A FIFO is written through, not replaced by a regular file: a reader on it gets the
/// output, after the run.
#[test]
fn an_output_onto_a_fifo_is_written_through_to_its_reader() {
    use std::io::Read;
    use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
    let dir = common::scratch("fifo-output");
    for (flag, header) in [("--out", "id,x,y,vx,vy"), ("--energy-log", "step,energy")] {
        let fifo = dir.join(format!("fifo{flag}"));
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600))
            .expect("mkfifo");
        // The reader opens first, without waiting for a writer, so the run's open finds it
        // and nothing blocks; 21 rows fit in the pipe's buffer.
        let mut reader = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&fifo)
            .expect("open the fifo to read");
        let run = ringleader(&[
            "particles",
            "-n",
            "20",
            "-s",
            "5",
            flag,
            fifo.to_str().unwrap(),
        ]);
        run.success();
        assert!(
            std::fs::symlink_metadata(&fifo)
                .expect("stat")
                .file_type()
                .is_fifo(),
            "{flag}: the fifo was replaced"
        );
        let mut text = String::new();
        reader.read_to_string(&mut text).expect("read the fifo");
        assert!(text.starts_with(header), "{flag}: {text:?}");
        let rows = if flag == "--out" { 21 } else { 6 };
        assert_eq!(text.lines().count(), rows, "{flag}: {text}");
    }
}

/// A symlink is followed: its target is replaced atomically and the link stays a link,
/// for a target that exists and for one the link names before it does.
#[test]
fn an_output_through_a_symlink_writes_its_target_and_keeps_the_link() {
    let dir = common::scratch("symlink-output");
    let real = dir.join("real.csv");
    let link = dir.join("link.csv");
    std::os::unix::fs::symlink("real.csv", &link).unwrap();
    let ck_link = dir.join("state.ck");
    std::fs::create_dir(dir.join("kept")).unwrap();
    std::os::unix::fs::symlink("kept/real.ck", &ck_link).unwrap();
    for existing in [false, true] {
        let args = [
            "particles",
            "-n",
            "20",
            "-s",
            "5",
            "--out",
            link.to_str().unwrap(),
            "--checkpoint",
            ck_link.to_str().unwrap(),
        ];
        ringleader(&args).success();
        for path in [&link, &ck_link] {
            let meta = std::fs::symlink_metadata(path).unwrap();
            assert!(meta.file_type().is_symlink(), "{existing}: {path:?}");
        }
        assert_eq!(std::fs::read_to_string(&real).unwrap().lines().count(), 21);
        assert!(dir.join("kept/real.ck").is_file());
    }
    let mut names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["kept", "link.csv", "real.csv", "state.ck"]);
}

/// As a user who may not create files in `/dev`, `--out /dev/stdout` once failed on the
/// probe file of the writable check. An output may now be any file the user may write:
/// here the pipe a shell would give `ringleader … --out /dev/stdout | cat`.
#[test]
fn out_to_dev_stdout_works_for_a_user_who_cannot_write_dev() {
    use std::io::Read;
    use std::os::unix::process::CommandExt;
    let (mut reader, writer) = std::io::pipe().expect("pipe");
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_ringleader"));
    command
        .args(["particles", "-n", "20", "-s", "5", "--out", "/dev/stdout"])
        .stdout(writer)
        .stderr(std::process::Stdio::piped());
    // As root, run as nobody, who may not create files in /dev, as the user who found it
    // did; the pipe is then theirs, as their shell's would be.
    if nix::unistd::geteuid().is_root() {
        let nobody = (
            nix::unistd::Uid::from_raw(65534),
            nix::unistd::Gid::from_raw(65534),
        );
        nix::unistd::fchown(&reader, Some(nobody.0), Some(nobody.1)).expect("chown the pipe");
        command.uid(65534).gid(65534).current_dir("/");
    }
    let mut child = command.spawn().expect("run ringleader");
    // Our copy of the write end goes with the command, so the read ends with the child.
    drop(command);
    let mut stdout = String::new();
    reader.read_to_string(&mut stdout).expect("read stdout");
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut stderr)
        .expect("read stderr");
    assert!(child.wait().expect("wait").success(), "{stderr}");
    assert_eq!(common::parse_state(&stdout).len(), 20, "{stdout}");
    assert!(
        stderr.is_empty() || stderr.contains("simulation took"),
        "{stderr}"
    );
    assert!(std::fs::symlink_metadata("/dev/stdout").is_ok_and(|m| m.file_type().is_symlink()));
}

/// Two outputs on one file: one of them would be silently lost. Refused before the run,
/// and nothing is written.
#[test]
fn two_outputs_on_one_file_are_a_usage_error() {
    let dir = common::scratch("colliding-outputs");
    let file = |name: &str| dir.join(name).to_str().unwrap().to_owned();
    std::fs::write(dir.join("old.csv"), "kept").unwrap();
    std::os::unix::fs::symlink("old.csv", dir.join("alias.csv")).unwrap();
    std::fs::hard_link(dir.join("old.csv"), dir.join("hard.csv")).unwrap();
    std::os::unix::fs::symlink("shared.gif", dir.join("alias.gif")).unwrap();
    let (x, old, alias, hard) = (
        file("x"),
        file("old.csv"),
        file("alias.csv"),
        file("hard.csv"),
    );
    let (gif, alias_gif, png) = (file("shared.gif"), file("alias.gif"), file("x.png"));
    let (ck5, ck10, template) = (file("ck-5"), file("ck-10"), file("ck-{step}"));
    let ck10_named = format!("--out and --checkpoint both write {ck10}:");
    let dotted = format!("{}/./x", dir.display());
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["--out", &x, "--energy-log", &x],
            "--out and --energy-log both write",
        ),
        (
            vec!["--out", &x, "--checkpoint", &dotted],
            "--out and --checkpoint both write",
        ),
        (
            vec!["--energy-log", &x, "--checkpoint", &x],
            "--energy-log and --checkpoint",
        ),
        (vec!["--out", &old, "--energy-log", &alias], "both write"),
        (vec!["--out", &old, "--energy-log", &hard], "both write"),
        (vec!["--out", "-", "--energy-log", "-"], "both write stdout"),
        (
            vec!["--out", "-", "--energy-log", "/dev/stdout"],
            "both write",
        ),
        (
            vec!["--render", &gif, "--snapshot", &png, "--out", &gif],
            "--out and --render",
        ),
        (
            vec!["--render", &gif, "--energy-log", &alias_gif],
            "--energy-log and --render",
        ),
        (
            vec!["--snapshot", &png, "--checkpoint", &png],
            "--checkpoint and --snapshot",
        ),
        (
            vec![
                "--out",
                &ck5,
                "--checkpoint",
                &template,
                "--checkpoint-every",
                "5",
            ],
            "--out and --checkpoint both write",
        ),
        // The template's last step is the file named, not the template.
        (
            vec![
                "--checkpoint",
                &template,
                "--checkpoint-every",
                "5",
                "--out",
                &ck10,
            ],
            &ck10_named,
        ),
    ];
    for (outputs, mentions) in cases {
        let args = [&["particles", "-n", "20", "-s", "10"][..], &outputs].concat();
        assert_usage_error(&args, mentions);
    }
    let mut names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["alias.csv", "alias.gif", "hard.csv", "old.csv"]);
    assert_eq!(
        std::fs::read_to_string(dir.join("old.csv")).unwrap(),
        "kept"
    );
    // A template and a file it never names, for a step the run never reaches, are fine.
    let late = file("ck-11");
    ringleader(&[
        "particles",
        "-n",
        "20",
        "-s",
        "10",
        "--out",
        &late,
        "--checkpoint",
        &template,
        "--checkpoint-every",
        "5",
        "-q",
    ])
    .success();
}

/// Bench's files are outputs too: two on one file are refused before any work.
#[test]
fn two_bench_outputs_on_one_file_are_a_usage_error() {
    let dir = common::scratch("colliding-bench-outputs");
    let x = dir.join("x").to_str().unwrap().to_owned();
    let base = [
        "bench", "-n", "40", "-p", "1", "-s", "1", "--modes", "serial",
    ];
    for outputs in [["--csv", &x, "--json", &x], ["--json", &x, "--plot", &x]] {
        assert_usage_error(&[&base[..], &outputs[..]].concat(), "both write");
    }
    assert!(!dir.join("x").exists());
}

/// `-n 1000000000000` once grew memory at 0.5 GB/s until the machine killed it, and
/// `-p 10000` failed late on "Too many open files". A run that cannot fit is refused at
/// once, naming what it needs and what there is.
#[test]
fn a_run_that_cannot_fit_is_refused_before_it_starts() {
    let started = std::time::Instant::now();
    let cases: &[(&[&str], &str)] = &[
        (
            &["particles", "-n", "1000000000000"],
            "more particles than a run can number",
        ),
        (&["particles", "-n", "4000000000"], "of memory, but"),
        (&["particles", "-n", "4000000000", "-p", "2"], "needs about"),
        (
            &[
                "particles",
                "-n",
                "4000000000",
                "--algorithm",
                "cells",
                "-t",
                "2",
            ],
            "is available",
        ),
        (
            &["particles", "-n", "20", "-s", "1000000000000", "-e"],
            "an energy kept for each of",
        ),
        (
            &["bench", "-n", "2000,4000000000", "-p", "1", "-s", "1"],
            "bench -n 4000000000",
        ),
        (
            &["bench", "kernel", "-n", "4000000000"],
            "bench kernel -n 4000000000",
        ),
        (
            &["bench", "hop", "--bytes", "100000000000000", "-p", "2"],
            "bench hop --bytes 100000000000000 -p 2 needs about",
        ),
    ];
    for (args, mentions) in cases {
        assert_usage_error(args, mentions);
    }
    assert!(
        started.elapsed() < std::time::Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
}

/// Runs the binary with `ulimit -n` set by a shell first: `limit` is `N` (both limits) or
/// `-S N` (the soft one alone).
fn with_open_file_limit(limit: &str, args: &[&str]) -> common::Run {
    let script = format!("ulimit -n {limit} && exec \"$0\" \"$@\"");
    let output = std::process::Command::new("sh")
        .args(["-c", &script, env!("CARGO_BIN_EXE_ringleader")])
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run sh");
    common::Run {
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        elapsed: std::time::Duration::ZERO,
    }
}

#[test]
fn more_workers_than_open_files_allow_are_refused_before_the_run() {
    for args in [
        &["particles", "-n", "40", "-s", "2", "-p", "32"][..],
        &[
            "bench",
            "-n",
            "40",
            "-p",
            "1,32",
            "-s",
            "1",
            "--modes",
            "processes",
        ],
    ] {
        let run = with_open_file_limit("64", args);
        assert_eq!(run.code, Some(2), "{args:?}: {run:?}");
        assert_eq!(run.stderr.lines().count(), 1, "{}", run.stderr);
        assert!(
            run.stderr
                .contains("-p 32 needs about 80 open files, but this process may open 64"),
            "{}",
            run.stderr
        );
        assert!(run.stdout.is_empty(), "{}", run.stdout);
    }
    // Only the soft limit low: it is a default, and the run raises it.
    let run = with_open_file_limit("-S 64", &["particles", "-n", "40", "-s", "2", "-p", "32"]);
    assert_eq!(run.code, Some(0), "{run:?}");
}

/// The coordinator made every rank's channels before it forked any worker, so a ring of P
/// processes needed 8P + 4 descriptors: 196 for 24 workers. Each rank's links are made just
/// before its fork now, and the coordinator keeps two ends per worker.
#[test]
fn a_ring_needs_two_open_files_per_worker() {
    for algorithm in ["allpairs", "cells"] {
        let args = [
            "particles",
            "-n",
            "400",
            "-s",
            "3",
            "-p",
            "24",
            "--algorithm",
            algorithm,
        ];
        let run = with_open_file_limit("64", &args);
        assert_eq!(run.code, Some(0), "{algorithm}: {run:?}");
        assert!(run.stderr.is_empty(), "{algorithm}: {}", run.stderr);
    }
}

/// `--energy-log -` once wrote a file named `-`, where `--out -` meant stdout. `-` is stdout
/// for every output, and the timing line moves to stderr.
#[test]
fn a_dash_is_stdout_for_every_output() {
    let dir = common::scratch("dash-outputs");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_ringleader"))
        .args(["particles", "-n", "20", "-s", "5", "--energy-log", "-"])
        .current_dir(&dir)
        .output()
        .expect("run ringleader");
    assert!(output.status.success(), "{output:?}");
    let stdout = String::from_utf8(output.stdout).unwrap();
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(stdout.starts_with("step,energy\n1,"), "{stdout}");
    assert_eq!(stdout.lines().count(), 6, "{stdout}");
    assert!(stderr.contains("simulation took"), "{stderr}");
    assert_eq!(
        std::fs::read_dir(&dir).unwrap().count(),
        0,
        "a file was written"
    );
}

/// An output whose reader has gone (`--energy-log - | head`) ends the run quietly, as any
/// Unix tool does, but only once the other outputs are written: the final state once went
/// unwritten, without a word, and the run exited 0.
#[test]
fn an_output_whose_reader_left_leaves_the_others_written() {
    let dir = common::scratch("reader-left");
    let state = dir.join("final.csv");
    let (reader, writer) = std::io::pipe().expect("pipe");
    // Nobody reads stdout: the first write to it finds the reader gone.
    drop(reader);
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_ringleader"))
        .args([
            "particles",
            "-n",
            "20",
            "-s",
            "5",
            "--energy-log",
            "-",
            "--out",
        ])
        .arg(&state)
        .stdout(writer)
        .output()
        .expect("run ringleader");
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    assert!(output.stderr.is_empty(), "{output:?}");
    let written = std::fs::read_to_string(&state).expect("the final state was written");
    assert_eq!(written.lines().count(), 21, "{written}");
}

/// A file an output replaces keeps its mode: a private file stays private. And a file the
/// user may not write is not replaced, though its directory would let them: one line, exit
/// 1, the file as it was. (A replaced file once came back 0644, and a read-only one was
/// replaced.)
#[test]
fn a_replaced_output_keeps_its_mode_and_a_read_only_one_is_not_replaced() {
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;
    let dir = common::scratch("output-modes");
    let private = dir.join("private.csv");
    std::fs::write(&private, "mine\n").expect("write");
    std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    ringleader(&[
        "particles",
        "-s",
        "1",
        "-q",
        "--out",
        private.to_str().unwrap(),
    ])
    .success();
    let mode = std::fs::metadata(&private)
        .expect("stat")
        .permissions()
        .mode()
        & 0o7777;
    assert_eq!(mode, 0o600, "{mode:o}");
    assert!(
        std::fs::read_to_string(&private)
            .unwrap()
            .starts_with("id,x,y,vx,vy")
    );

    // As root, as nobody, in a directory nobody may write to, a file nobody may not.
    if !nix::unistd::geteuid().is_root() {
        return;
    }
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    let locked = dir.join("locked.csv");
    std::fs::write(&locked, "kept\n").expect("write");
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o444)).expect("chmod");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_ringleader"))
        .args(["particles", "-s", "1", "-q", "--out"])
        .arg(&locked)
        .uid(65534)
        .gid(65534)
        .output()
        .expect("run ringleader");
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.starts_with("ringleader: cannot write "), "{stderr}");
    assert_eq!(std::fs::read_to_string(&locked).unwrap(), "kept\n");
}
