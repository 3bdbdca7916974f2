//! `ringleader demo NAME`: each textbook program runs and prints what the original prints.

mod common;

use common::ringleader;

fn lines(text: &str) -> Vec<&str> {
    text.lines().collect()
}

fn items() -> Vec<String> {
    (0..10).map(|i| format!("got an item: {i}")).collect()
}

#[test]
fn threads_says_hello_from_two_threads() {
    let run = ringleader(&["demo", "threads"]);
    run.success();
    let mut got = lines(&run.stdout);
    got.sort_unstable();
    assert_eq!(got, ["hello from MainThread", "hello from Thread-1"]);
}

#[test]
fn processes_says_hello_from_two_processes() {
    let run = ringleader(&["demo", "processes"]);
    run.success();
    let mut got = lines(&run.stdout);
    got.sort_unstable();
    assert_eq!(got, ["hello from MainProcess", "hello from Process-1"]);
}

#[test]
fn race_shows_the_lost_update_and_both_fixes_are_exact() {
    let run = ringleader(&["demo", "race", "--tries", "200"]);
    run.success();
    let got = lines(&run.stdout);
    assert_eq!(got.len(), 4, "{}", run.stdout);
    // Losing is up to the scheduler, so only its bounds are certain.
    let first: u64 = got[0]
        .strip_prefix("racy (read, yield, write): count is now: ")
        .and_then(|rest| rest.strip_suffix(" after the first try"))
        .expect("first racy line")
        .parse()
        .expect("a count");
    assert!((1..=2).contains(&first), "{}", got[0]);
    let lost: u32 = got[1]
        .strip_prefix("racy (read, yield, write): lost an update in ")
        .and_then(|rest| rest.strip_suffix(" of 200 tries"))
        .expect("racy summary")
        .parse()
        .expect("a count");
    assert!(lost <= 200, "{}", got[1]);
    assert_eq!(
        got[2],
        "fixed with a lock: lost an update in 0 of 200 tries"
    );
    assert_eq!(
        got[3],
        "fixed with messages: count is now: 400 \
         (2 worker processes sent 200 increments each to the coordinator)"
    );
}

#[test]
fn queue_passes_ten_items_in_order() {
    let run = ringleader(&["demo", "queue"]);
    run.success();
    assert_eq!(lines(&run.stdout), items());
}

#[test]
fn lock_makes_each_item_new_exactly_once() {
    let run = ringleader(&["demo", "lock"]);
    run.success();
    let got = lines(&run.stdout);
    assert_eq!(
        got.last(),
        Some(&"already_seen: 20 checks of 10 items, 10 new, 10 already seen")
    );
    // Between them, the two threads saw every item first exactly once.
    let mut firsts: Vec<u32> = got[..2]
        .iter()
        .flat_map(|line| {
            let list = line.split_once(": ").expect("a list").1;
            list.trim_matches(['[', ']'])
                .split(", ")
                .filter(|s| !s.is_empty())
                .map(|s| s.parse::<u32>().expect("an item"))
                .collect::<Vec<_>>()
        })
        .collect();
    firsts.sort_unstable();
    assert_eq!(firsts, (0..10).collect::<Vec<_>>());
}

#[test]
fn barrier_ends_with_both_counters_at_ten() {
    let run = ringleader(&["demo", "barrier"]);
    run.success();
    assert_eq!(lines(&run.stdout), ["counters: [10, 10]"]);
}

#[test]
fn pipe_passes_ten_items_between_processes_then_ends() {
    let run = ringleader(&["demo", "pipe"]);
    run.success();
    assert_eq!(lines(&run.stdout), items());
}

#[test]
fn deadlock_is_reported_by_the_framework_within_two_seconds() {
    let run = ringleader(&["demo", "deadlock"]);
    assert_eq!(run.code, Some(1), "{run:?}");
    assert_eq!(run.stdout, "");
    assert_eq!(
        run.stderr,
        "ringleader: deadlock: rank 0 waits for rank 1, rank 1 waits for rank 0\n"
    );
    assert!(
        run.elapsed < std::time::Duration::from_secs(2),
        "took {:?}",
        run.elapsed
    );
}

#[test]
fn demo_help_lists_every_demo() {
    let run = ringleader(&["demo", "--help"]);
    run.success();
    for name in [
        "threads",
        "processes",
        "race",
        "queue",
        "lock",
        "barrier",
        "pipe",
        "deadlock",
    ] {
        assert!(
            run.stdout
                .lines()
                .any(|line| line.trim_start().starts_with(name)),
            "{name} missing from {}",
            run.stdout
        );
    }
}

#[test]
fn unknown_demo_is_a_usage_error() {
    let run = ringleader(&["demo", "nope"]);
    assert_eq!(run.code, Some(2));
    assert_eq!(run.stderr.lines().count(), 1, "{}", run.stderr);
}

/// With stdout a pipe nobody reads (`| head -0`), every demo still runs to its end and
/// exits 0, without a panic: the output is dropped, as a reader that went away wants.
#[test]
fn a_reader_that_went_away_ends_the_output_not_the_demo() {
    use std::process::{Command, Stdio};
    for demo in [
        &["threads"][..],
        &["processes"],
        &["race", "--tries", "50"],
        &["queue"],
        &["lock"],
        &["barrier"],
        &["pipe"],
    ] {
        let (reader, writer) = std::io::pipe().expect("a pipe");
        drop(reader);
        let output = Command::new(env!("CARGO_BIN_EXE_ringleader"))
            .arg("demo")
            .args(demo)
            .stdin(Stdio::null())
            .stdout(writer)
            .stderr(Stdio::piped())
            .output()
            .expect("run ringleader");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            output.status.success(),
            "{demo:?}: {:?} {stderr}",
            output.status
        );
        assert!(stderr.is_empty(), "{demo:?}: {stderr}");
    }
}
