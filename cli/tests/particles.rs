//! The particle simulator against the textbook's own outputs, bit for bit, in every mode.

mod common;

use common::{assert_same_state, fixture, read_state, ringleader, scratch};

/// The ways to run a simulation on `k` workers.
fn modes(k: usize) -> Vec<Vec<String>> {
    let k = k.to_string();
    vec![
        vec!["-t".into(), k.clone()],
        vec!["-p".into(), k.clone()],
        vec!["-p".into(), k, "--transport".into(), "threads".into()],
    ]
}

fn check_fixture(name: &str, base: &[&str], counts: &[usize], fixture_file: &str) {
    let dir = scratch(name);
    let want = read_state(&fixture(fixture_file));
    let mut runs = vec![Vec::new()];
    for &k in counts {
        runs.extend(modes(k));
    }
    for (i, extra) in runs.iter().enumerate() {
        let out = dir.join(format!("run{i}.csv"));
        let mut args: Vec<&str> = vec!["particles"];
        args.extend(base);
        args.extend(extra.iter().map(String::as_str));
        args.extend(["--out", out.to_str().unwrap()]);
        let run = ringleader(&args);
        run.success();
        assert_same_state(&read_state(&out), &want, &format!("{args:?}"));
    }
}

#[test]
fn n20_matches_the_textbook_for_every_worker_count_up_to_n() {
    // 3 and 7 do not divide 20; 20 is one particle per worker.
    check_fixture(
        "n20",
        &["-n", "20", "-s", "100"],
        &[1, 2, 3, 7, 20],
        "textbook-n20-s100.csv",
    );
}

#[test]
fn n400_matches_the_textbook() {
    check_fixture(
        "n400",
        &["-n", "400", "-s", "200"],
        &[2, 7],
        "textbook-n400-s200.csv",
    );
}

#[test]
fn n300_with_energy_normalization_matches_the_textbook() {
    check_fixture(
        "n300e",
        &["-n", "300", "-s", "100", "-e"],
        &[4, 7],
        "textbook-n300-s100-e.csv",
    );
}

#[test]
fn energy_log_matches_the_textbook_in_every_mode() {
    let dir = scratch("energy");
    let want: Vec<u64> = std::fs::read_to_string(fixture("textbook-n300-s100-e.energy"))
        .unwrap()
        .lines()
        .map(|l| l.parse::<f64>().unwrap().to_bits())
        .collect();
    assert_eq!(want.len(), 100);
    let mut runs = vec![Vec::new()];
    runs.extend(modes(3));
    for (i, extra) in runs.iter().enumerate() {
        let log = dir.join(format!("energy{i}.csv"));
        let mut args = vec!["particles", "-n", "300", "-s", "100", "-e"];
        args.extend(extra.iter().map(String::as_str));
        args.extend(["--energy-log", log.to_str().unwrap()]);
        ringleader(&args).success();
        let text = std::fs::read_to_string(&log).unwrap();
        let mut lines = text.lines();
        assert_eq!(lines.next(), Some("step,energy"));
        let got: Vec<u64> = lines
            .enumerate()
            .map(|(i, line)| {
                let (step, energy) = line.split_once(',').unwrap();
                assert_eq!(step.parse::<usize>().unwrap(), i + 1);
                energy.parse::<f64>().unwrap().to_bits()
            })
            .collect();
        assert_eq!(got, want, "{args:?}");
    }
}

#[test]
fn zero_steps_writes_the_initial_state() {
    let dir = scratch("zero-steps");
    let out = dir.join("init.csv");
    ringleader(&[
        "particles",
        "-n",
        "1000",
        "-s",
        "0",
        "-p",
        "3",
        "--out",
        out.to_str().unwrap(),
    ])
    .success();
    let got = read_state(&out);
    // The fixture is in list order, with a slot column first.
    let text = std::fs::read_to_string(fixture("textbook-init-n1000.csv")).unwrap();
    let want = text
        .lines()
        .skip(1)
        .map(|line| {
            let f: Vec<&str> = line.split(',').collect();
            let v = |i: usize| f[i].parse::<f64>().unwrap().to_bits();
            (f[1].parse::<u32>().unwrap(), [v(2), v(3), v(4), v(5)])
        })
        .collect();
    assert_same_state(&got, &want, "-s 0");
}

#[test]
fn prints_the_textbook_timing_line_with_pair_checks_per_second() {
    for (args, mode) in [
        (vec![], "serial"),
        (vec!["-t", "2"], "multithreaded"),
        (vec!["-p", "2"], "multiprocess"),
    ] {
        let mut all = vec!["particles", "-n", "50", "-s", "10"];
        all.extend(args);
        let run = ringleader(&all);
        run.success();
        let line = run.stdout.trim();
        assert!(
            line.starts_with(&format!("{mode} simulation took ")),
            "{line}"
        );
        assert!(line.ends_with(" pair checks/s)"), "{line}");
        assert_eq!(run.stdout.lines().count(), 1);
    }
}

#[test]
fn out_dash_writes_the_state_to_stdout() {
    let run = ringleader(&["particles", "-s", "100", "--out", "-"]);
    run.success();
    let want = read_state(&fixture("textbook-n20-s100.csv"));
    assert_same_state(&common::parse_state(&run.stdout), &want, "--out -");
    assert!(run.stderr.contains("serial simulation took"));
}

/// Page faults of one run of the binary, the workers it reaped included.
fn faults_of(args: &[&str]) -> i64 {
    #[expect(
        clippy::zombie_processes,
        reason = "reaped by wait4 below, which also reads its use of resources"
    )]
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_ringleader"))
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("run ringleader");
    let pid = libc::pid_t::try_from(child.id()).expect("a pid");
    let mut status = 0;
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: `pid` is our child, not yet waited for; wait4 writes a whole rusage.
    let usage = unsafe {
        assert_eq!(libc::wait4(pid, &mut status, 0, usage.as_mut_ptr()), pid);
        usage.assume_init()
    };
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "{args:?}: status {status}"
    );
    usage.ru_minflt + usage.ru_majflt
}

/// Once a run is under way, a step touches no fresh memory, between processes too. Two
/// things once made each step fault in pages: a block to a neighbour that was empty (a
/// step without migrants) dropped its kept region, so the next one needed a new region,
/// mapped afresh on both sides; and the coordinator's heap, trimmed and grown again
/// around `ipc-channel`'s receive buffer for every report. Four page faults a step for
/// cells on two processes (0.36 s for 2000 steps of 2000 particles, against 0.24 s now).
/// With `-e`, every step's energies went up as arrays in regions of their own, made and
/// mapped anew: ten a step (0.75 s, against 0.26 s now that small arrays go inline).
#[test]
fn a_step_faults_in_no_fresh_memory_once_the_run_is_under_way() {
    let modes: [&[&str]; 7] = [
        &["-p", "2", "--algorithm", "cells"],
        &["-p", "2", "-e", "--algorithm", "cells"],
        &["-p", "3", "--algorithm", "cells"],
        &["-p", "2", "--transport", "threads", "--algorithm", "cells"],
        &["-t", "2", "--algorithm", "cells"],
        &["-p", "2"],
        &["-p", "2", "-e"],
    ];
    for mode in modes {
        let run = |steps: &str| {
            faults_of(&[&["particles", "-n", "1000", "-s", steps][..], mode].concat())
        };
        let (short, long) = (run("20"), run("220"));
        let per_step = (long - short) as f64 / 200.0;
        assert!(
            per_step < 0.5,
            "{mode:?}: {short} page faults for 20 steps, {long} for 220"
        );
    }
}
