//! `ringleader bench`: the table, the CSV and the JSON it writes, the kernel comparison and
//! the hop, on small inputs.

mod common;

use common::{ringleader, scratch};

const COLUMNS: [&str; 16] = [
    "mode",
    "algorithm",
    "n",
    "workers",
    "steps",
    "seconds",
    "pair_checks_per_s",
    "speedup",
    "efficiency",
    "comm_fraction",
    "coordinator_rss_bytes",
    "worker_rss_bytes",
    "vs_allpairs",
    "depth",
    "vs_independent",
    "median_seconds",
];

/// With `--repeat`, a row keeps its fastest run in `seconds` and the median of its runs in
/// `median_seconds`: of three runs, the middle one, above the fastest (three runs never
/// take the same nanoseconds).
#[test]
fn repeated_rows_give_their_fastest_and_their_median() {
    let dir = scratch("bench-median");
    let csv_path = dir.join("rows.csv");
    let run = ringleader(&[
        "bench",
        "-n",
        "40",
        "-p",
        "2",
        "-s",
        "3",
        "-r",
        "3",
        "--modes",
        "serial,processes",
        "--csv",
        csv_path.to_str().unwrap(),
    ]);
    run.success();
    let mut reader = csv::Reader::from_path(&csv_path).expect("csv");
    let rows: Vec<csv::StringRecord> = reader.records().map(|r| r.expect("record")).collect();
    assert_eq!(rows.len(), 2);
    for row in &rows {
        let (fastest, median): (f64, f64) = (row[5].parse().unwrap(), row[15].parse().unwrap());
        assert!(fastest > 0.0 && median > fastest, "{row:?}");
    }
}

#[test]
fn bench_prints_a_table_and_writes_csv_and_json_that_parse() {
    let dir = scratch("bench-table");
    let (csv_path, json_path) = (dir.join("rows.csv"), dir.join("rows.json"));
    let run = ringleader(&[
        "bench",
        "-n",
        "40,64",
        "-p",
        "1,2",
        "-s",
        "3",
        "--modes",
        "serial,threads,processes,ring-threads",
        "--csv",
        csv_path.to_str().unwrap(),
        "--json",
        json_path.to_str().unwrap(),
    ]);
    run.success();
    let header = run.stdout.lines().next().expect("a header");
    for column in [
        "mode",
        "algorithm",
        "n",
        "workers",
        "steps",
        "seconds",
        "pair_checks_per_s",
        "speedup",
        "efficiency",
        "comm",
        "coordinator_rss",
        "worker_rss",
        "vs_allpairs",
        "depth",
        "vs_independent",
        "median",
    ] {
        assert!(
            header.split_whitespace().any(|c| c == column),
            "{column} in {header:?}"
        );
    }
    assert!(run.stdout.contains("avx2") || run.stdout.contains("scalar"));

    // Per n: serial once, then three modes with 1 and 2 workers.
    let mut reader = csv::Reader::from_path(&csv_path).expect("csv");
    assert_eq!(
        reader.headers().unwrap().iter().collect::<Vec<_>>(),
        COLUMNS
    );
    let rows: Vec<csv::StringRecord> = reader.records().map(|r| r.expect("record")).collect();
    assert_eq!(rows.len(), 2 * 7);
    for row in &rows {
        let mode = &row[0];
        assert_eq!(&row[1], "allpairs", "the default algorithm: {row:?}");
        let (n, workers): (usize, usize) = (row[2].parse().unwrap(), row[3].parse().unwrap());
        assert!([40, 64].contains(&n));
        assert_eq!(&row[4], "3");
        let seconds: f64 = row[5].parse().unwrap();
        let rate: f64 = row[6].parse().unwrap();
        assert!(seconds > 0.0 && rate > 0.0);
        let expected = (n * n * 3) as f64 / seconds;
        assert!((rate - expected).abs() <= 1e-6 * expected, "{row:?}");
        let speedup: f64 = row[7].parse().expect("a speedup: serial ran");
        let efficiency: f64 = row[8].parse().unwrap();
        assert!((efficiency - speedup / workers as f64).abs() < 1e-9);
        if mode == "serial" {
            assert_eq!(speedup, 1.0);
        }
        let ring = mode == "processes" || mode == "ring-threads";
        assert_eq!(
            !row[9].is_empty(),
            ring,
            "comm fraction only on a ring: {row:?}"
        );
        if ring {
            let fraction: f64 = row[9].parse().unwrap();
            assert!((0.0..=1.0).contains(&fraction), "{row:?}");
        }
        assert!(row[10].parse::<u64>().unwrap() > 0);
        assert_eq!(!row[11].is_empty(), mode == "processes", "{row:?}");
        assert!(
            row[12].is_empty(),
            "vs_allpairs only on cells rows: {row:?}"
        );
        assert_eq!(!row[13].is_empty(), ring, "depth only on a ring: {row:?}");
        assert!(row[14].is_empty(), "no independent rows ran: {row:?}");
        // One run a row: the median is that run.
        assert_eq!(row[15].parse::<f64>().unwrap(), seconds, "{row:?}");
    }
    let kernels = run
        .stdout
        .lines()
        .find(|l| l.starts_with("force kernels"))
        .expect("a heading over the kernel table");
    assert!(
        kernels.contains("n = 64") && kernels.contains("16000"),
        "{kernels}"
    );

    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json_path).unwrap()).expect("json");
    let json = json.as_array().expect("an array of rows");
    assert_eq!(json.len(), rows.len());
    for (object, row) in json.iter().zip(&rows) {
        assert_eq!(object["mode"], row[0]);
        assert_eq!(object["workers"].as_u64().unwrap().to_string(), row[3]);
        for column in COLUMNS {
            assert!(object.get(column).is_some(), "{column} in {object}");
        }
    }
}

/// A rotation on P workers passes each block P - 1 times a step; nothing else in an
/// allpairs step travels.
#[test]
fn bench_reports_the_depth_of_a_ring_step() {
    let (run, rows) = bench_rows(
        "bench-depth",
        &[
            "-n",
            "300",
            "-p",
            "1,2,3",
            "-s",
            "4",
            "--modes",
            "ring-threads",
        ],
    );
    let depths: Vec<(&str, &str, &str)> = rows.iter().map(|r| (&r[0], &r[3], &r[13])).collect();
    assert_eq!(
        depths,
        [
            ("ring-threads", "1", "0.0"),
            ("ring-threads", "2", "1.0"),
            ("ring-threads", "3", "2.0")
        ],
        "{}",
        run.stdout
    );
    // Depth is the last column but one, before vs_independent.
    let depth_column = |line: &str| line.split_whitespace().nth_back(1).map(str::to_owned);
    let mut lines = run.stdout.lines();
    assert_eq!(
        depth_column(lines.next().unwrap()).as_deref(),
        Some("depth")
    );
    let shown: Vec<String> = lines.take(3).filter_map(depth_column).collect();
    assert_eq!(shown, ["0.00", "1.00", "2.00"], "{}", run.stdout);
}

/// Fresh memory is a large part of a run's cost, so a table says which pages its arrays
/// were in, as `RINGLEADER_HUGE_PAGES` chose.
#[test]
fn bench_says_which_pages_its_rows_ran_on() {
    let args = [
        "bench",
        "-n",
        "200",
        "-s",
        "2",
        "-r",
        "1",
        "--modes",
        "serial",
        "--algorithms",
        "cells",
    ];
    let pages = |said: &str| {
        let run = common::ringleader_env_within(
            &args,
            &[("RINGLEADER_HUGE_PAGES", said)],
            std::time::Duration::from_secs(60),
        );
        run.success();
        let line = run.stdout.lines().find(|l| l.starts_with("pages: "));
        line.unwrap_or_else(|| panic!("no pages line in {}", run.stdout))
            .to_owned()
    };
    assert_eq!(
        pages("0"),
        "pages: 4 KiB pages for large arrays (RINGLEADER_HUGE_PAGES=0)"
    );
    let huge = pages("1");
    // A system whose pages are not 4 KiB has no choice to make.
    assert!(
        huge.starts_with("pages: huge pages for large arrays")
            || huge == "pages: the system's own pages for large arrays",
        "{huge}"
    );
}

/// The strips trade halos and migrants with their neighbours only: the critical path of
/// a step stays the same however many workers there are, where the ring's grows with them.
/// Between processes the same, though the coordinator gathers the state with one more
/// round trip after the last step.
#[test]
fn the_depth_of_a_cells_step_does_not_grow_with_the_workers() {
    let (run, rows) = bench_rows(
        "bench-cells-depth",
        &[
            "-n",
            "20000",
            "-p",
            "2,4,8,16",
            "-s",
            "6",
            "--modes",
            "ring-threads,processes",
            "--algorithms",
            "cells",
        ],
    );
    let depth = |mode: &str| -> Vec<f64> {
        rows.iter()
            .filter(|r| r[0] == *mode)
            .map(|r| r[13].parse().unwrap())
            .collect()
    };
    let depths = depth("ring-threads");
    assert_eq!(depth("processes"), depths, "{}", run.stdout);
    assert_eq!(depths.len(), 4, "{}", run.stdout);
    assert!(
        depths.iter().all(|&d| (2.0..=4.0).contains(&d)),
        "{depths:?}"
    );
    let spread =
        depths.iter().copied().fold(0.0, f64::max) - depths.iter().copied().fold(9.0, f64::min);
    assert!(
        spread < 0.01,
        "the depth grows with the workers: {depths:?}"
    );
}

/// The independent rows run P serial simulations of n/P particles at once: the ceiling
/// the other modes' speedups are read against. They share nothing, so they have no share
/// of time talking, no depth and no worker processes.
#[test]
fn bench_measures_independent_runs_beside_the_modes() {
    let (run, rows) = bench_rows(
        "bench-independent",
        &[
            "-n",
            "3000",
            "-p",
            "1,2,3",
            "-s",
            "3",
            "--modes",
            "independent,serial",
            "--algorithms",
            "allpairs,cells",
        ],
    );
    let shape: Vec<(&str, &str, &str)> = rows.iter().map(|r| (&r[0], &r[1], &r[3])).collect();
    let mut expected = Vec::new();
    for algorithm in ["allpairs", "cells"] {
        expected.push(("serial", algorithm, "1"));
        for workers in ["1", "2", "3"] {
            expected.push(("independent", algorithm, workers));
        }
    }
    assert_eq!(shape, expected, "{}", run.stdout);
    for row in rows.iter().filter(|r| &r[0] == "independent") {
        let speedup: f64 = row[7].parse().expect("a speedup over serial");
        assert!(speedup > 0.0, "{row:?}");
        for column in [9, 11, 13, 14] {
            assert!(row[column].is_empty(), "column {column}: {row:?}");
        }
    }
    // Serial is set beside the one independent run that does the same work, of its own
    // algorithm: their seconds, one over the other.
    let seconds = |r: &csv::StringRecord| -> f64 { r[5].parse().unwrap() };
    for serial in rows.iter().filter(|r| &r[0] == "serial") {
        let alone = rows
            .iter()
            .find(|r| (&r[0], &r[1], &r[3]) == ("independent", &serial[1], "1"))
            .expect("an independent run on one worker");
        let share: f64 = serial[14].parse().expect("vs_independent on serial");
        let want = seconds(alone) / seconds(serial);
        assert!(
            (share - want).abs() <= 1e-9 * want,
            "{share} against {want}: {serial:?}"
        );
    }
}

#[test]
fn bench_kernel_compares_every_kernel_with_the_direct_one() {
    let run = ringleader(&["bench", "kernel", "-n", "300", "-r", "1"]);
    run.success();
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert!(lines[0].contains("pair_checks_per_s"));
    assert!(lines[1].starts_with("direct (AoS)") && lines[1].ends_with("1.00x"));
    assert!(lines[2].starts_with("scalar"));
}

#[test]
fn bench_hop_measures_both_transports() {
    let run = ringleader(&[
        "bench", "hop", "--bytes", "200000", "-p", "3", "--rounds", "5",
    ]);
    run.success();
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{}", run.stdout);
    assert!(lines[1].starts_with("processes") && lines[2].starts_with("threads"));
    for line in &lines[1..] {
        let fields: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(fields[1..4], ["3", "200000", "5"]);
        let rate: f64 = fields[5].parse().unwrap();
        assert!(rate > 0.0, "{line}");
    }
}

#[test]
fn bench_refuses_bad_input_with_a_usage_error() {
    for (args, mentions) in [
        // A negative count is named as one, not taken for an argument of its own.
        (&["bench", "-p", "-1"][..], "must be at least 1"),
        (&["bench", "-r", "-2"], "must be at least 1"),
        (&["bench", "hop", "-p", "-2"], "-p"),
        // The plot is SVG whatever the name says.
        (&["bench", "--plot", "scaling.png"], "ending in .svg"),
    ] {
        let run = ringleader(args);
        assert_eq!(run.code, Some(2), "{args:?}: {run:?}");
        assert_eq!(run.stderr.lines().count(), 1, "{args:?}: {}", run.stderr);
        assert!(run.stderr.contains(mentions), "{args:?}: {}", run.stderr);
    }
    for args in [
        &["bench", "hop", "-p", "1"][..],
        // Fewer bytes than a word: once measured as an empty block, `vs_threads NaNx`.
        &["bench", "hop", "--bytes", "7"],
        &["bench", "-n", "2", "-p", "3"],
        &["bench", "--modes", "serial,fast"],
        &["bench", "--algorithms", "allpairs,fast"],
        &["bench", "--transports", "processes,carrier-pigeon"],
    ] {
        let run = ringleader(args);
        assert_eq!(run.code, Some(2), "{args:?}: {run:?}");
        assert_eq!(run.stderr.lines().count(), 1, "{args:?}: {}", run.stderr);
    }
}

/// `--fresh` measures each run in a new process of its own, which reports every column
/// an in-process row has: the ring's depth and share of time talking, and the worker
/// processes' memory.
#[test]
fn bench_fresh_measures_every_row_in_a_process_of_its_own() {
    let (run, rows) = bench_rows(
        "bench-fresh",
        &[
            "-n",
            "3000",
            "-p",
            "2",
            "-s",
            "3",
            "-r",
            "2",
            "--modes",
            "serial,threads,processes,ring-threads,independent",
            "--algorithms",
            "allpairs,cells",
            "--fresh",
        ],
    );
    let shape: Vec<(&str, &str)> = rows.iter().map(|r| (&r[0], &r[1])).collect();
    let modes = [
        "serial",
        "threads",
        "processes",
        "ring-threads",
        "independent",
    ];
    let expected: Vec<(&str, &str)> = ["allpairs", "cells"]
        .into_iter()
        .flat_map(|a| modes.map(|m| (m, a)))
        .collect();
    assert_eq!(shape, expected, "{}", run.stdout);
    for row in &rows {
        let column = |name: &str| &row[COLUMNS.iter().position(|c| *c == name).unwrap()];
        let seconds: f64 = column("seconds").parse().unwrap();
        assert!(seconds > 0.0, "{row:?}");
        assert!(!column("speedup").is_empty(), "{row:?}");
        assert!(!column("coordinator_rss_bytes").is_empty(), "{row:?}");
        let ring = matches!(&row[0], "processes" | "ring-threads");
        assert_eq!(!column("depth").is_empty(), ring, "{row:?}");
        assert_eq!(!column("comm_fraction").is_empty(), ring, "{row:?}");
        assert_eq!(
            !column("worker_rss_bytes").is_empty(),
            &row[0] == "processes",
            "{row:?}"
        );
    }
}

/// What `--fresh` starts: one combination, measured once, printed as a JSON row. More
/// than one combination is a usage error.
#[test]
fn bench_one_prints_the_row_of_one_run() {
    let run = ringleader(&[
        "bench",
        "--one",
        "-n",
        "500",
        "-p",
        "3",
        "-s",
        "2",
        "--modes",
        "ring-threads",
        "--algorithms",
        "allpairs",
    ]);
    run.success();
    let row: serde_json::Value = serde_json::from_str(run.stdout.trim()).expect(&run.stdout);
    assert_eq!(row["mode"], "ring-threads", "{row}");
    assert_eq!(row["workers"], 3, "{row}");
    assert_eq!(row["depth"], 2.0, "{row}");
    assert!(row["seconds"].as_f64().is_some_and(|s| s > 0.0), "{row}");
    // Started by a bench that is gone (its pid is not our parent's): it refuses to run.
    let orphan = common::ringleader_env_within(
        &["bench", "--one", "-n", "40", "--modes", "serial"],
        &[("RINGLEADER_BENCH_PARENT", "1")],
        std::time::Duration::from_secs(60),
    );
    assert_eq!(orphan.code, Some(1), "{orphan:?}");
    assert!(orphan.stdout.is_empty(), "{orphan:?}");
    assert_eq!(
        orphan.stderr.trim(),
        "ringleader: the bench that started this run is gone"
    );
    for args in [
        &["bench", "--one", "-n", "40,80", "--modes", "serial"][..],
        &["bench", "--one", "-n", "40", "--modes", "serial,threads"],
        &[
            "bench", "--one", "-n", "40", "-p", "1,2", "--modes", "threads",
        ],
    ] {
        let run = ringleader(args);
        assert_eq!(run.code, Some(2), "{args:?}: {run:?}");
        assert_eq!(run.stderr.lines().count(), 1, "{args:?}: {}", run.stderr);
    }
}

/// Runs `ringleader bench ARGS --csv FILE`, which must succeed, in a scratch folder named
/// `name`; returns the run and the rows of the CSV.
fn bench_rows(name: &str, args: &[&str]) -> (common::Run, Vec<csv::StringRecord>) {
    let csv_path = scratch(name).join("rows.csv");
    let mut all = vec!["bench"];
    all.extend_from_slice(args);
    all.extend(["--csv", csv_path.to_str().unwrap()]);
    let run = ringleader(&all);
    run.success();
    (run, csv_rows(&csv_path))
}

/// CSV rows as (mode, algorithm, n, workers) and the record.
fn csv_rows(path: &std::path::Path) -> Vec<csv::StringRecord> {
    let mut reader = csv::Reader::from_path(path).expect("csv");
    assert_eq!(
        reader.headers().unwrap().iter().collect::<Vec<_>>(),
        COLUMNS
    );
    reader.records().map(|r| r.expect("record")).collect()
}

/// A value given twice is measured once: `-n 40,40` once made two rows of each mode, and
/// the second serial row was compared with the first.
#[test]
fn bench_measures_a_repeated_value_once() {
    let (_, rows) = bench_rows(
        "bench-repeated",
        &[
            "-n",
            "40,40",
            "-p",
            "2,2",
            "-s",
            "1",
            "--modes",
            "serial,threads,serial",
            "--algorithms",
            "cells,allpairs,cells",
        ],
    );
    let keys: Vec<Vec<&str>> = rows.iter().map(|r| r.iter().take(4).collect()).collect();
    assert_eq!(
        keys,
        [
            ["serial", "cells", "40", "1"],
            ["threads", "cells", "40", "2"],
            ["serial", "allpairs", "40", "1"],
            ["threads", "allpairs", "40", "2"],
        ],
        "{rows:?}"
    );
}

#[test]
fn bench_algorithms_puts_cells_beside_allpairs() {
    let (run, rows) = bench_rows(
        "bench-algorithms",
        &[
            "-n",
            "300",
            "-p",
            "1,2",
            "-s",
            "3",
            "--modes",
            "serial,threads,processes",
            "--algorithms",
            "allpairs,cells",
        ],
    );
    // Per algorithm: serial, then threads and processes on 1 and 2 workers.
    assert_eq!(rows.len(), 2 * 5, "{}", run.stdout);
    let seconds = |algorithm: &str, mode: &str, workers: &str| -> f64 {
        rows.iter()
            .find(|r| (&r[0], &r[1], &r[3]) == (mode, algorithm, workers))
            .unwrap_or_else(|| panic!("a {algorithm} {mode} row on {workers}"))[5]
            .parse()
            .unwrap()
    };
    for row in &rows {
        let (mode, algorithm, workers) = (&row[0], &row[1], &row[3]);
        assert!(["allpairs", "cells"].contains(&algorithm), "{row:?}");
        let speedup: f64 = row[7].parse().unwrap();
        // Against serial of the same algorithm.
        let want = seconds(algorithm, "serial", "1") / seconds(algorithm, mode, workers);
        assert!((speedup - want).abs() <= 1e-9 * want, "{row:?}");
        if algorithm == "cells" {
            let vs: f64 = row[12].parse().expect("cells rows compare with allpairs");
            let want = seconds("allpairs", mode, workers) / seconds("cells", mode, workers);
            assert!((vs - want).abs() <= 1e-9 * want, "{row:?}");
        } else {
            assert!(row[12].is_empty(), "{row:?}");
        }
    }
    let header = run.stdout.lines().next().unwrap();
    assert!(header.contains("algorithm") && header.contains("vs_allpairs"));
    assert_eq!(
        run.stdout
            .lines()
            .filter(|l| l.split_whitespace().nth(1) == Some("cells"))
            .count(),
        5
    );
}

#[test]
fn bench_plot_draws_a_line_per_n_mode_and_algorithm_in_each_panel() {
    let dir = scratch("bench-plot");
    let svg_path = dir.join("scaling.svg");
    let run = ringleader(&[
        "bench",
        "-n",
        "40,64",
        "-p",
        "1,2,3",
        "-s",
        "2",
        "--modes",
        "serial,threads,processes",
        "--plot",
        svg_path.to_str().unwrap(),
    ]);
    run.success();
    let text = std::fs::read_to_string(&svg_path).expect("the plot");
    let svg = roxmltree::Document::parse(&text).expect("the plot is XML");
    assert_eq!(svg.root_element().tag_name().name(), "svg");
    let texts: Vec<String> = svg
        .descendants()
        .filter(|n| n.has_tag_name("text"))
        .map(|n| n.text().unwrap_or("").trim().to_owned())
        .collect();
    for caption in [
        "Speedup over serial",
        "Efficiency (speedup per worker)",
        "Pair checks per second",
    ] {
        assert_eq!(
            texts.iter().filter(|t| *t == caption).count(),
            1,
            "{texts:?}"
        );
    }
    // Four series (two n by two parallel modes), each a line in each of three panels and a
    // legend entry in the first two (the third uses the same colours); the axes are drawn
    // thinner.
    let labels = [
        "n=40 threads",
        "n=40 processes",
        "n=64 threads",
        "n=64 processes",
    ];
    for label in labels {
        assert_eq!(texts.iter().filter(|t| *t == label).count(), 2, "{texts:?}");
    }
    let mut lines: std::collections::HashMap<&str, Vec<usize>> = Default::default();
    for line in svg
        .descendants()
        .filter(|n| n.has_tag_name("polyline") && n.attribute("stroke-width") == Some("2"))
    {
        let points = line.attribute("points").unwrap().split_whitespace().count();
        lines
            .entry(line.attribute("stroke").unwrap())
            .or_default()
            .push(points);
    }
    assert_eq!(
        lines.len(),
        labels.len(),
        "one colour per series: {lines:?}"
    );
    for (colour, mut points) in lines {
        points.sort_unstable();
        // Two legend marks of two points, three lines through 1, 2 and 3 workers.
        assert_eq!(points, [2, 2, 3, 3, 3], "{colour}");
    }
    // Perfect scaling, thin and grey, in the speedup and efficiency panels.
    assert_eq!(
        texts.iter().filter(|t| *t == "ideal").count(),
        2,
        "{texts:?}"
    );
    let ideal = svg
        .descendants()
        .filter(|n| n.has_tag_name("polyline") && n.attribute("stroke") == Some("#969696"))
        .count();
    assert_eq!(ideal, 2 * 2, "a line and a legend mark in each");
    let dots = svg
        .descendants()
        .filter(|n| n.has_tag_name("circle"))
        .count();
    assert_eq!(dots, labels.len() * 3 * 3);
}

#[cfg(not(feature = "mpi"))]
#[test]
fn bench_mpi_rows_without_the_feature_are_a_usage_error() {
    for args in [
        &["bench", "-n", "40", "--transports", "processes,threads,mpi"][..],
        &["bench", "-n", "40", "--modes", "serial,mpi"],
        &["bench", "hop", "--transports", "threads,mpi"],
    ] {
        let run = ringleader(args);
        assert_eq!(run.code, Some(2), "{args:?}: {run:?}");
        assert_eq!(run.stderr.lines().count(), 1, "{}", run.stderr);
        assert!(run.stderr.contains("--features mpi"), "{}", run.stderr);
        assert!(run.stdout.is_empty(), "nothing ran: {}", run.stdout);
    }
}
