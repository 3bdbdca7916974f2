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
