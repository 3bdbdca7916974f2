//! `ringleader bench`: the table, the CSV and the JSON it writes, the kernel comparison and
//! the hop, on small inputs.

mod common;

use common::{ringleader, scratch};

const COLUMNS: [&str; 11] = [
    "mode",
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
];

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
        let (n, workers): (usize, usize) = (row[1].parse().unwrap(), row[2].parse().unwrap());
        assert!([40, 64].contains(&n));
        assert_eq!(&row[3], "3");
        let seconds: f64 = row[4].parse().unwrap();
        let rate: f64 = row[5].parse().unwrap();
        assert!(seconds > 0.0 && rate > 0.0);
        let expected = (n * n * 3) as f64 / seconds;
        assert!((rate - expected).abs() <= 1e-6 * expected, "{row:?}");
        let speedup: f64 = row[6].parse().expect("a speedup: serial ran");
        let efficiency: f64 = row[7].parse().unwrap();
        assert!((efficiency - speedup / workers as f64).abs() < 1e-9);
        if mode == "serial" {
            assert_eq!(speedup, 1.0);
        }
        let ring = mode == "processes" || mode == "ring-threads";
        assert_eq!(
            !row[8].is_empty(),
            ring,
            "comm fraction only on a ring: {row:?}"
        );
        if ring {
            let fraction: f64 = row[8].parse().unwrap();
            assert!((0.0..=1.0).contains(&fraction), "{row:?}");
        }
        assert!(row[9].parse::<u64>().unwrap() > 0);
        assert_eq!(!row[10].is_empty(), mode == "processes", "{row:?}");
    }

    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json_path).unwrap()).expect("json");
    let json = json.as_array().expect("an array of rows");
    assert_eq!(json.len(), rows.len());
    for (object, row) in json.iter().zip(&rows) {
        assert_eq!(object["mode"], row[0]);
        assert_eq!(object["workers"].as_u64().unwrap().to_string(), row[2]);
        for column in COLUMNS {
            assert!(object.get(column).is_some(), "{column} in {object}");
        }
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
    for args in [
        &["bench", "hop", "-p", "1"][..],
        &["bench", "-n", "2", "-p", "3"],
        &["bench", "--modes", "serial,fast"],
    ] {
        let run = ringleader(args);
        assert_eq!(run.code, Some(2), "{args:?}: {run:?}");
        assert_eq!(run.stderr.lines().count(), 1, "{args:?}: {}", run.stderr);
    }
}
