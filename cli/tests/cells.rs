//! `--algorithm cells` against the textbook's fixtures and against `allpairs`, bit for bit,
//! in every mode and at several worker counts.

mod common;

use std::path::Path;

use common::{assert_same_state, fixture, read_state, ringleader, ringleader_env_within, scratch};

/// Every way to run cells: serial, threads, processes (strips) and strips on threads.
fn modes() -> Vec<Vec<&'static str>> {
    vec![
        vec![],
        vec!["-t", "1"],
        vec!["-t", "3"],
        vec!["-t", "7"],
        vec!["-p", "1"],
        vec!["-p", "2"],
        vec!["-p", "3"],
        vec!["-p", "7"],
        vec!["-p", "3", "--transport", "threads"],
        vec!["-p", "7", "--transport", "threads"],
    ]
}

/// Runs `particles BASE EXTRA --out DIR/NAME.csv` (and the energy log when asked).
fn run(dir: &Path, name: &str, base: &[&str], extra: &[&str], energy: bool) -> String {
    let out = dir.join(format!("{name}.csv"));
    let log = dir.join(format!("{name}.energy"));
    let mut args = vec!["particles"];
    args.extend(base);
    args.extend(extra);
    args.extend(["--out", out.to_str().unwrap()]);
    if energy {
        args.extend(["--energy-log", log.to_str().unwrap()]);
    }
    ringleader(&args).success();
    format!("{args:?}")
}

/// An energy log (`step,energy`) as bits.
fn read_energy_log(path: &Path) -> Vec<u64> {
    let text = std::fs::read_to_string(path).unwrap();
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("step,energy"));
    lines
        .enumerate()
        .map(|(i, line)| {
            let (step, energy) = line.split_once(',').unwrap();
            assert_eq!(step.parse::<usize>().unwrap(), i + 1);
            energy.parse::<f64>().unwrap().to_bits()
        })
        .collect()
}

fn check_fixture(name: &str, base: &[&str], fixture_file: &str) {
    let dir = scratch(&format!("cells-{name}"));
    let want = read_state(&fixture(fixture_file));
    let mut base = base.to_vec();
    base.extend(["--algorithm", "cells"]);
    for (i, extra) in modes().iter().enumerate() {
        let what = run(&dir, &i.to_string(), &base, extra, false);
        assert_same_state(&read_state(&dir.join(format!("{i}.csv"))), &want, &what);
    }
}

#[test]
fn cells_match_the_textbook_n20_in_every_mode() {
    // At n = 20 the lattice has five columns, so with 7 strips some are empty, and all
    // are narrower than the cutoff: halos and migrants must be relayed past them.
    check_fixture("n20", &["-n", "20", "-s", "100"], "textbook-n20-s100.csv");
}

#[test]
fn cells_match_the_textbook_n400_in_every_mode() {
    check_fixture(
        "n400",
        &["-n", "400", "-s", "200"],
        "textbook-n400-s200.csv",
    );
}

/// A run on processes lends each strip's end to the coordinator, which reads it a batch of
/// windows at a time; at 262,144 particles that is eight batches from several groups of
/// each strip: the same bits as a serial run, with and without `-e`.
#[test]
fn a_large_run_on_processes_ends_on_the_serial_bits() {
    let dir = scratch("cells-large");
    for energy in [&[][..], &["-e"]] {
        let mut base = vec!["-n", "262144", "-s", "3", "--algorithm", "cells"];
        base.extend(energy);
        run(&dir, "serial", &base, &[], true);
        let want = read_state(&dir.join("serial.csv"));
        let want_log = read_energy_log(&dir.join("serial.energy"));
        for workers in ["2", "3"] {
            let what = run(&dir, workers, &base, &["-p", workers], true);
            assert_same_state(
                &read_state(&dir.join(format!("{workers}.csv"))),
                &want,
                &what,
            );
            assert_eq!(
                read_energy_log(&dir.join(format!("{workers}.energy"))),
                want_log,
                "{what}"
            );
        }
    }
}

/// A ring that fails before any state was kept starts again from the run's start, which
/// the coordinator keeps whole while a restart can need it: a forked worker lets go of its
/// own view of it once its strip is built, and the coordinator frees its own only when no
/// restart can follow.
#[test]
fn a_ring_restarted_from_the_start_ends_on_the_textbooks_bits() {
    let dir = scratch("cells-restart-from-start");
    let want = read_state(&fixture("textbook-n400-s200.csv"));
    for (i, mode) in [&["-p", "3"][..], &["-p", "3", "--transport", "threads"]]
        .into_iter()
        .enumerate()
    {
        let out = dir.join(format!("{i}.csv"));
        let mut args = vec![
            "particles",
            "-n",
            "400",
            "-s",
            "200",
            "--algorithm",
            "cells",
        ];
        args.extend(mode);
        args.extend(["--restarts", "1", "--out", out.to_str().unwrap()]);
        let env = [("RINGLEADER_FAULT", "1:3:panic")];
        let done = ringleader_env_within(&args, &env, std::time::Duration::from_secs(60));
        done.success();
        assert!(
            done.stderr.contains("restarting from step 0"),
            "{args:?}: {}",
            done.stderr
        );
        assert_same_state(&read_state(&out), &want, &format!("{args:?}"));
    }
}

#[test]
fn cells_match_the_textbook_with_energy_normalization_and_its_energy_log() {
    let dir = scratch("cells-n300e");
    let want = read_state(&fixture("textbook-n300-s100-e.csv"));
    let want_energy: Vec<u64> = std::fs::read_to_string(fixture("textbook-n300-s100-e.energy"))
        .unwrap()
        .lines()
        .map(|l| l.parse::<f64>().unwrap().to_bits())
        .collect();
    assert_eq!(want_energy.len(), 100);
    let base = ["-n", "300", "-s", "100", "-e", "--algorithm", "cells"];
    for (i, extra) in modes().iter().enumerate() {
        let what = run(&dir, &i.to_string(), &base, extra, true);
        assert_same_state(&read_state(&dir.join(format!("{i}.csv"))), &want, &what);
        let energy = read_energy_log(&dir.join(format!("{i}.energy")));
        assert_eq!(energy, want_energy, "{what}");
    }
}

#[test]
fn cells_match_allpairs_at_n3000_in_every_mode() {
    // Large enough for many cells, many pairs in range and particles crossing strips.
    let dir = scratch("cells-n3000");
    let base = ["-n", "3000", "-s", "30", "-e"];
    run(&dir, "allpairs", &base, &[], true);
    let want = read_state(&dir.join("allpairs.csv"));
    let want_energy = read_energy_log(&dir.join("allpairs.energy"));
    let mut cells = base.to_vec();
    cells.extend(["--algorithm", "cells"]);
    for (i, extra) in modes().iter().enumerate() {
        let what = run(&dir, &i.to_string(), &cells, extra, true);
        assert_same_state(&read_state(&dir.join(format!("{i}.csv"))), &want, &what);
        let energy = read_energy_log(&dir.join(format!("{i}.energy")));
        assert_eq!(energy, want_energy, "{what}");
    }
}

#[test]
fn cells_match_allpairs_when_particles_cross_several_strips_in_a_step() {
    // A step a hundred times the textbook's: a particle moves about 0.05, while a strip of
    // 400 particles on 20 workers is two rows (0.02) high, so particles cross several
    // strips at once, both ways, and bounce off the walls. 60 workers have more strips than
    // the box has rows (44): some strips are empty and relay.
    let dir = scratch("cells-far");
    let base = ["-n", "400", "-s", "15", "--dt", "0.05", "-e"];
    run(&dir, "allpairs", &base, &[], true);
    let want = read_state(&dir.join("allpairs.csv"));
    let want_energy = read_energy_log(&dir.join("allpairs.energy"));
    let mut cells = base.to_vec();
    cells.extend(["--algorithm", "cells"]);
    let modes: [&[&str]; 6] = [
        &["-p", "7"],
        &["-p", "20"],
        &["-p", "60"],
        &["-p", "20", "--transport", "threads"],
        &["-p", "60", "--transport", "threads"],
        &["-t", "20"],
    ];
    for (i, extra) in modes.iter().enumerate() {
        let what = run(&dir, &i.to_string(), &cells, extra, true);
        assert_same_state(&read_state(&dir.join(format!("{i}.csv"))), &want, &what);
        let energy = read_energy_log(&dir.join(format!("{i}.energy")));
        assert_eq!(energy, want_energy, "{what}");
    }
}

/// Strips whose edges move every step (`--balance-every 1`, and the coordinator takes each
/// worker as one to three times slower than it was, by turns: `RINGLEADER_BALANCE_SKEW`)
/// still give all pairs' bits, energies included, on both transports, at worker counts
/// that divide n and that do not, when particles cross several strips in a step, and
/// after a worker fails and the run restarts. `--balance-every 0` keeps them still.
#[test]
fn cells_match_allpairs_while_the_strips_edges_move() {
    let dir = scratch("cells-moving-edges");
    let skewed = [("RINGLEADER_BALANCE_SKEW", "1")];
    type Case<'a> = (&'a str, &'a [&'a str], &'a [&'a [&'a str]]);
    let cases: [Case; 2] = [
        (
            "n3000",
            &["-n", "3000", "-s", "30", "-e"],
            &[
                &["-p", "2"],
                &["-p", "3"],
                &["-p", "7"],
                &["-p", "4", "--transport", "threads"],
                &["-t", "3"],
                &["-t", "7"],
            ],
        ),
        (
            "far",
            &["-n", "400", "-s", "15", "--dt", "0.05", "-e"],
            &[
                &["-p", "7"],
                &["-p", "20", "--transport", "threads"],
                &["-t", "20"],
            ],
        ),
    ];
    for (name, base, modes) in cases {
        run(&dir, name, base, &[], true);
        let want = read_state(&dir.join(format!("{name}.csv")));
        let want_energy = read_energy_log(&dir.join(format!("{name}.energy")));
        for (i, mode) in modes.iter().enumerate() {
            let out = dir.join(format!("{name}-{i}.csv"));
            let log = dir.join(format!("{name}-{i}.energy"));
            let mut args = vec!["particles", "--algorithm", "cells", "--balance-every", "1"];
            args.extend(base);
            args.extend(*mode);
            args.extend(["--out", out.to_str().unwrap()]);
            args.extend(["--energy-log", log.to_str().unwrap()]);
            let done = ringleader_env_within(&args, &skewed, std::time::Duration::from_secs(120));
            done.success();
            // Not a run that kept its edges: they moved at nearly every step.
            assert!(
                done.stdout.contains("the strips' edges moved"),
                "{args:?}: {}",
                done.stdout
            );
            let what = format!("{args:?}");
            assert_same_state(&read_state(&out), &want, &what);
            assert_eq!(read_energy_log(&log), want_energy, "{what}");
        }
    }
    // The same skew, with the edges kept where they start: they never move, and the bits
    // are the same.
    let still = dir.join("still.csv");
    let on_three = [
        "particles",
        "--algorithm",
        "cells",
        "-n",
        "3000",
        "-s",
        "30",
        "-e",
        "-p",
        "3",
    ];
    let mut args = on_three.to_vec();
    args.extend(["--balance-every", "0", "--out", still.to_str().unwrap()]);
    let done = ringleader_env_within(&args, &skewed, std::time::Duration::from_secs(120));
    done.success();
    assert!(
        !done.stdout.contains("edges moved"),
        "{args:?}: {}",
        done.stdout
    );
    assert_same_state(
        &read_state(&still),
        &read_state(&dir.join("n3000.csv")),
        "still",
    );
    // A worker that fails while the edges move: the run restarts from the state kept at
    // step 15, on the first edges, and still ends on all pairs' bits, on a ring and on
    // threads.
    for workers in [&["-p", "3"][..], &["-t", "3"]] {
        let out = dir.join("restarted.csv");
        let log = dir.join("restarted.energy");
        let mut args = on_three[..on_three.len() - 2].to_vec();
        args.extend(workers);
        args.extend([
            "--balance-every",
            "1",
            "--restarts",
            "1",
            "--checkpoint-every",
            "5",
        ]);
        args.extend(["--out", out.to_str().unwrap()]);
        args.extend(["--energy-log", log.to_str().unwrap()]);
        let env = [skewed[0], ("RINGLEADER_FAULT", "2:17:panic")];
        let done = ringleader_env_within(&args, &env, std::time::Duration::from_secs(120));
        done.success();
        assert!(
            done.stderr.contains("restarting from step 15"),
            "{args:?}: {}",
            done.stderr
        );
        assert!(done.stdout.contains("the strips' edges moved"), "{args:?}");
        let what = format!("restarted {args:?}");
        assert_same_state(
            &read_state(&out),
            &read_state(&dir.join("n3000.csv")),
            &what,
        );
        assert_eq!(
            read_energy_log(&log),
            read_energy_log(&dir.join("n3000.energy")),
            "{what}"
        );
    }
}

/// Pictures of a cells run on a ring colour each particle by its strip's worker, so a run
/// that draws keeps the strips' edges where they start unless `--balance-every` says
/// otherwise: the same command draws the same picture, byte for byte, however fast each
/// worker was (here the coordinator takes them as one to three times slower by turns).
#[test]
fn a_run_that_draws_keeps_the_strips_edges_still() {
    let dir = scratch("cells-pictures");
    let skewed = [("RINGLEADER_BALANCE_SKEW", "1")];
    let draw = |name: &str, extra: &[&str]| {
        let png = dir.join(format!("{name}.png"));
        let mut args = vec![
            "particles",
            "--algorithm",
            "cells",
            "-n",
            "3000",
            "-s",
            "30",
            "-p",
            "3",
            "--snapshot",
            png.to_str().unwrap(),
        ];
        args.extend(extra);
        let done = ringleader_env_within(&args, &skewed, std::time::Duration::from_secs(120));
        done.success();
        (std::fs::read(&png).unwrap(), done.stdout)
    };
    let (first, said) = draw("first", &[]);
    assert!(!said.contains("edges moved"), "{said}");
    let (again, said) = draw("again", &[]);
    assert!(!said.contains("edges moved"), "{said}");
    assert!(
        first == again,
        "two runs of one command drew different pictures"
    );
    // Asked for, the edges move as they do without a picture.
    let (_, said) = draw("moving", &["--balance-every", "1"]);
    assert!(said.contains("the strips' edges moved"), "{said}");
}

/// A balance interval that is not a number of steps, or one given to the algorithm
/// without strips, is a usage error said in one line, before any work.
#[test]
fn a_bad_balance_interval_is_said_in_one_line() {
    let base = ["particles", "-n", "100", "-s", "5", "-p", "2"];
    let cases: [(&[&str], &str); 3] = [
        (
            &["--algorithm", "cells", "--balance-every", "often"],
            "a whole number (0: never), not often",
        ),
        (
            &["--algorithm", "cells", "--balance-every=-1"],
            "a whole number (0: never), not -1",
        ),
        (
            &["--balance-every", "5"],
            "--balance-every moves the strips of --algorithm cells",
        ),
    ];
    for (extra, said) in cases {
        let mut args = base.to_vec();
        args.extend(extra);
        let done = ringleader(&args);
        assert_eq!(done.code, Some(2), "{args:?}: {done:?}");
        let lines: Vec<&str> = done.stderr.lines().collect();
        assert_eq!(lines.len(), 1, "{args:?}: {done:?}");
        assert!(lines[0].contains(said), "{args:?}: {}", lines[0]);
    }
}

#[test]
fn allpairs_is_the_default_and_can_be_named() {
    let dir = scratch("cells-default");
    let base = ["-n", "50", "-s", "20", "-p", "2"];
    run(&dir, "default", &base, &[], false);
    run(&dir, "named", &base, &["--algorithm", "allpairs"], false);
    assert_same_state(
        &read_state(&dir.join("named.csv")),
        &read_state(&dir.join("default.csv")),
        "--algorithm allpairs",
    );
}

#[test]
fn cells_report_particle_steps_per_second() {
    for (args, mode) in [
        (vec![], "serial"),
        (vec!["-t", "2"], "multithreaded"),
        (vec!["-p", "2"], "multiprocess"),
    ] {
        let mut all = vec!["particles", "-n", "50", "-s", "10", "--algorithm", "cells"];
        all.extend(args);
        let run = ringleader(&all);
        run.success();
        let line = run.stdout.trim();
        assert!(
            line.starts_with(&format!("{mode} simulation took ")),
            "{line}"
        );
        assert!(line.ends_with(" particle steps/s, cells)"), "{line}");
        assert_eq!(run.stdout.lines().count(), 1);
    }
}

#[test]
fn a_bad_algorithm_is_a_usage_error_of_one_line() {
    let run = ringleader(&["particles", "--algorithm", "octree"]);
    assert_eq!(run.code, Some(2), "{run:?}");
    let lines: Vec<&str> = run.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{:?}", run.stderr);
    assert!(lines[0].starts_with("ringleader: "), "{}", lines[0]);
    assert!(lines[0].contains("octree"), "{}", lines[0]);
    assert!(lines[0].contains("cells"), "{}", lines[0]);
    assert!(run.stdout.is_empty(), "{}", run.stdout);
}
