//! Framework tests through the public API. This target has `harness = false`: it runs in a
//! single thread, so it may fork workers, which the multi-threaded test harness may not.

use std::time::{Duration, Instant};

use ringleader::{
    Cause, Coordinator, Gather, LaunchError, Launcher, Neighbour, Party, Ring, RunStats, Stage,
    StageError, StopSignal, Transport,
};

const TRANSPORTS: [Transport; 2] = [Transport::Processes, Transport::Threads];

/// Every worker rotates a block of `len` words, each word its origin rank, and returns a
/// checksum of what it saw, so the test can tell that every block arrived whole.
#[derive(Clone)]
struct BigRotate {
    len: usize,
}

impl Stage for BigRotate {
    type Message = ();
    type Report = ();
    type Answer = ();
    type Output = Vec<(usize, usize, u64)>;

    fn work(self, ring: &mut Ring<Self>) -> Result<Self::Output, StageError> {
        let mine: Vec<u64> = (0..self.len as u64)
            .map(|i| i ^ ring.rank() as u64)
            .collect();
        let mut seen = Vec::new();
        ring.rotate(&mine, |origin, block: &[u64]| {
            let ok = block
                .iter()
                .enumerate()
                .filter(|&(i, &w)| w == i as u64 ^ origin as u64)
                .count();
            seen.push((origin, block.len(), ok as u64));
        })?;
        Ok(seen)
    }
}

fn large_blocks_do_not_deadlock_the_ring() {
    // 16 MB and 40 MB per block: far past the socket buffer, where a naive ring in which
    // every rank sends before it receives would block forever.
    for (bytes, workers) in [(16 << 20, 3), (40 << 20, 2)] {
        for transport in TRANSPORTS {
            let len = bytes / 8;
            let started = Instant::now();
            let outputs = Launcher::new()
                .workers(workers)
                .transport(transport)
                .launch(&mut BigRotate { len })
                .expect("rotation of large blocks");
            assert_eq!(outputs.len(), workers);
            for (rank, seen) in outputs.iter().enumerate() {
                let expected: Vec<usize> = (0..workers)
                    .map(|hop| (rank + workers - hop) % workers)
                    .collect();
                let origins: Vec<usize> = seen.iter().map(|s| s.0).collect();
                assert_eq!(origins, expected, "rank {rank} visit order");
                for &(origin, got_len, ok) in seen {
                    assert_eq!(got_len, len, "block from {origin} at rank {rank}");
                    assert_eq!(
                        ok as usize, len,
                        "block from {origin} at rank {rank} corrupted"
                    );
                }
            }
            assert!(started.elapsed() < Duration::from_secs(30));
        }
    }
}

/// Messages both ways round the ring, and a collective round trip to the coordinator.
#[derive(Clone)]
struct PingAndSum {
    gather: Gather<u64>,
}

impl Stage for PingAndSum {
    type Message = (usize, String);
    type Report = u64;
    type Answer = u64;
    type Output = (usize, usize, u64);

    fn work(self, ring: &mut Ring<Self>) -> Result<Self::Output, StageError> {
        let rank = ring.rank();
        ring.send(
            Neighbour::Right,
            (rank, format!("to the right from {rank}")),
        )?;
        ring.send(Neighbour::Left, (rank, format!("to the left from {rank}")))?;
        let (from_left, text) = ring.recv(Neighbour::Left)?;
        assert_eq!(text, format!("to the right from {from_left}"));
        let (from_right, text) = ring.recv(Neighbour::Right)?;
        assert_eq!(text, format!("to the left from {from_right}"));
        let total = ring.ask(rank as u64 + 1)?;
        Ok((from_left, from_right, total))
    }

    fn on_report(
        &mut self,
        from: usize,
        report: u64,
        coordinator: &mut Coordinator<'_, Self>,
    ) -> Result<(), StageError> {
        if let Some(all) = self.gather.push(from, report) {
            coordinator.broadcast(all.iter().sum())?;
        }
        Ok(())
    }
}

fn messages_go_both_ways_and_the_coordinator_answers() {
    for transport in TRANSPORTS {
        for workers in [1, 2, 5] {
            let mut stage = PingAndSum {
                gather: Gather::new(workers),
            };
            let outputs = Launcher::new()
                .workers(workers)
                .transport(transport)
                .launch(&mut stage)
                .expect("ping");
            let total = (workers * (workers + 1) / 2) as u64;
            for (rank, &(left, right, sum)) in outputs.iter().enumerate() {
                assert_eq!(left, (rank + workers - 1) % workers);
                assert_eq!(right, (rank + 1) % workers);
                assert_eq!(sum, total);
            }
        }
    }
}

/// A stage where one rank fails in a chosen way while the others wait on the ring.
#[derive(Clone)]
struct FailAt {
    rank: usize,
    how: Fail,
}

#[derive(Clone, Copy, Debug)]
enum Fail {
    Panic,
    Error,
    Exit,
    Abort,
    Kill,
}

impl Stage for FailAt {
    type Message = u8;
    type Report = ();
    type Answer = ();
    type Output = ();

    fn work(self, ring: &mut Ring<Self>) -> Result<(), StageError> {
        ring.set_step(7);
        if ring.rank() == self.rank {
            match self.how {
                Fail::Panic => panic!("injected panic"),
                Fail::Error => return Err("injected error".into()),
                Fail::Exit => std::process::exit(3),
                Fail::Abort => std::process::abort(),
                Fail::Kill => {
                    let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
                }
            }
        }
        // Everyone else waits for a message that never comes.
        ring.recv(Neighbour::Left)?;
        Ok(())
    }
}

fn a_failing_worker_ends_the_run_with_its_rank_pid_and_cause() {
    let cases = [
        (Fail::Panic, TRANSPORTS.to_vec()),
        (Fail::Error, TRANSPORTS.to_vec()),
        (Fail::Exit, vec![Transport::Processes]),
        (Fail::Abort, vec![Transport::Processes]),
        (Fail::Kill, vec![Transport::Processes]),
    ];
    for (how, transports) in cases {
        for transport in transports {
            let started = Instant::now();
            let err = Launcher::new()
                .workers(3)
                .transport(transport)
                .launch(&mut FailAt { rank: 1, how })
                .expect_err("the run must fail");
            let elapsed = started.elapsed();
            assert!(
                elapsed < Duration::from_secs(2),
                "{how:?}: took {elapsed:?}"
            );
            let LaunchError::Worker(failure) = &err else {
                panic!("{how:?}: expected a worker failure, got {err}");
            };
            assert_eq!(failure.rank, 1, "{how:?} on {transport:?}: {err}");
            assert_eq!(failure.pid.is_some(), transport == Transport::Processes);
            let message = err.to_string();
            match how {
                Fail::Panic => {
                    assert!(
                        matches!(&failure.cause, Cause::Panicked(m) if m.contains("injected panic"))
                    );
                    assert_eq!(failure.step, Some(7));
                }
                Fail::Error => {
                    assert_eq!(failure.cause, Cause::Failed("injected error".into()));
                    assert_eq!(failure.step, Some(7));
                }
                Fail::Exit => assert_eq!(failure.cause, Cause::Exited(3)),
                Fail::Abort => assert_eq!(failure.cause, Cause::Signaled("SIGABRT".into())),
                Fail::Kill => assert_eq!(failure.cause, Cause::Signaled("SIGKILL".into())),
            }
            // Even a worker that could not say a word is placed at its step.
            assert_eq!(failure.step, Some(7), "{how:?}: {message}");
            assert!(message.ends_with("at step 7"), "{message}");
            assert!(message.starts_with("worker rank 1"), "{message}");
            if let Some(pid) = failure.pid {
                assert!(message.contains(&format!("(pid {pid})")), "{message}");
            }
            assert_no_children();
        }
    }
}

/// Workers ask forever; the coordinator stops the run after a few rounds.
#[derive(Clone)]
struct AskForever {
    rounds: usize,
}

impl Stage for AskForever {
    type Message = ();
    type Report = ();
    type Answer = ();
    type Output = ();

    fn work(self, ring: &mut Ring<Self>) -> Result<(), StageError> {
        loop {
            ring.ask(())?;
        }
    }

    fn on_report(
        &mut self,
        _from: usize,
        _report: (),
        coordinator: &mut Coordinator<'_, Self>,
    ) -> Result<(), StageError> {
        self.rounds += 1;
        if self.rounds == 10 {
            coordinator.stop();
        } else {
            coordinator.broadcast(())?;
        }
        Ok(())
    }
}

fn the_coordinator_can_stop_a_run() {
    for transport in TRANSPORTS {
        let started = Instant::now();
        let mut stage = AskForever { rounds: 0 };
        let err = Launcher::new()
            .workers(3)
            .transport(transport)
            .launch(&mut stage)
            .expect_err("stopped");
        assert!(matches!(err, LaunchError::Stopped), "{transport:?}: {err}");
        assert_eq!(stage.rounds, 10);
        assert!(started.elapsed() < Duration::from_secs(2));
    }
}

/// Every worker receives from its left before it sends anything: the textbook's deadlock.
#[derive(Clone)]
struct ReceiveFirst;

impl Stage for ReceiveFirst {
    type Message = u8;
    type Report = ();
    type Answer = ();
    type Output = ();

    fn work(self, ring: &mut Ring<Self>) -> Result<(), StageError> {
        ring.set_step(3);
        let got = ring.recv(Neighbour::Left)?;
        ring.send(Neighbour::Right, got)?;
        Ok(())
    }
}

fn workers_that_all_receive_first_are_reported_as_a_deadlock() {
    let cases = [
        (
            2,
            "deadlock: rank 0 waits for rank 1, rank 1 waits for rank 0 (at step 3)",
        ),
        (
            3,
            "deadlock: rank 0 waits for rank 2, rank 2 waits for rank 1, rank 1 waits for rank 0 (at step 3)",
        ),
        (1, "deadlock: rank 0 waits for rank 0 (at step 3)"),
    ];
    for (workers, expected) in cases {
        for transport in TRANSPORTS {
            let started = Instant::now();
            let err = Launcher::new()
                .workers(workers)
                .transport(transport)
                .launch(&mut ReceiveFirst)
                .expect_err("a deadlock must end the run");
            let elapsed = started.elapsed();
            assert_eq!(err.to_string(), expected, "{transport:?}");
            let LaunchError::Deadlock { waits } = &err else {
                panic!("expected a deadlock, got {err}");
            };
            assert_eq!(waits.len(), workers);
            for wait in waits {
                assert_eq!(wait.pid.is_some(), transport == Transport::Processes);
                assert_eq!(wait.on, Party::Rank((wait.rank + workers - 1) % workers));
            }
            assert!(
                elapsed < Duration::from_secs(2),
                "{transport:?}: {elapsed:?}"
            );
            assert_no_children();
        }
    }
}

/// Workers ask the coordinator, which never answers.
#[derive(Clone)]
struct SilentCoordinator;

impl Stage for SilentCoordinator {
    type Message = ();
    type Report = ();
    type Answer = ();
    type Output = ();

    fn work(self, ring: &mut Ring<Self>) -> Result<(), StageError> {
        if ring.rank() == 0 {
            ring.ask(())?;
        } else {
            ring.recv(Neighbour::Left)?;
        }
        Ok(())
    }
}

fn waiting_on_a_coordinator_that_never_answers_is_a_deadlock() {
    for transport in TRANSPORTS {
        let started = Instant::now();
        let err = Launcher::new()
            .workers(3)
            .transport(transport)
            .launch(&mut SilentCoordinator)
            .expect_err("deadlock");
        assert_eq!(
            err.to_string(),
            "deadlock: rank 0 waits for the coordinator, rank 1 waits for rank 0, \
             rank 2 waits for rank 1",
            "{transport:?}"
        );
        assert!(started.elapsed() < Duration::from_secs(2));
    }
}

/// Rank 1 works on step 4 until the run is stopped; the others wait for it.
#[derive(Clone)]
struct SlowStep;

impl Stage for SlowStep {
    type Message = ();
    type Report = ();
    type Answer = ();
    type Output = ();

    fn work(self, ring: &mut Ring<Self>) -> Result<(), StageError> {
        ring.set_step(4);
        if ring.rank() == 1 {
            // A long computation that gives up once the coordinator ends the run.
            while !ring.stopping() {
                std::thread::yield_now();
            }
            return Err("gave up".into());
        }
        ring.recv(Neighbour::Left)?;
        Ok(())
    }
}

fn a_step_that_takes_too_long_names_the_rank_that_did_not_finish_it() {
    for transport in TRANSPORTS {
        let started = Instant::now();
        let err = Launcher::new()
            .workers(3)
            .transport(transport)
            .step_timeout(Duration::from_millis(500))
            .launch(&mut SlowStep)
            .expect_err("timeout");
        let elapsed = started.elapsed();
        let LaunchError::Timeout { step, ranks, .. } = &err else {
            panic!("expected a timeout, got {err}");
        };
        assert_eq!(*step, 4);
        assert_eq!(ranks.len(), 1, "{err}");
        assert_eq!(ranks[0].0, 1, "{err}");
        let message = err.to_string();
        assert!(
            message.starts_with("step 4 timed out after 0.5 s: rank 1"),
            "{message}"
        );
        assert!(message.ends_with("did not finish it"), "{message}");
        assert!(
            elapsed >= Duration::from_millis(500) && elapsed < Duration::from_secs(3),
            "{elapsed:?}"
        );
        assert_no_children();
    }
}

/// Workers ask every round; the coordinator raises a stop signal at itself in round 3
/// and, when `graceful`, ends the run at the next round it sees the signal.
#[derive(Clone)]
struct Rounds {
    signal: nix::sys::signal::Signal,
    graceful: bool,
    gather: Gather<u64>,
}

impl Stage for Rounds {
    type Message = ();
    type Report = u64;
    type Answer = bool;
    type Output = u64;

    fn work(self, ring: &mut Ring<Self>) -> Result<u64, StageError> {
        for round in 1.. {
            ring.set_step(round);
            if ring.ask(round)? {
                return Ok(round);
            }
        }
        Ok(0)
    }

    fn on_report(
        &mut self,
        from: usize,
        round: u64,
        coordinator: &mut Coordinator<'_, Self>,
    ) -> Result<(), StageError> {
        if self.gather.push(from, round).is_some() {
            if round == 3 {
                nix::sys::signal::raise(self.signal)?;
            }
            let stop = self.graceful && ringleader::stop_signal().is_some();
            coordinator.broadcast(stop)?;
        }
        Ok(())
    }
}

fn a_stop_signal_stops_the_run_in_order() {
    use nix::sys::signal::Signal;
    for transport in TRANSPORTS {
        for (signal, expected) in [
            (Signal::SIGINT, StopSignal::Interrupt),
            (Signal::SIGTERM, StopSignal::Terminate),
        ] {
            let mut stage = Rounds {
                signal,
                graceful: false,
                gather: Gather::new(3),
            };
            let err = Launcher::new()
                .workers(3)
                .transport(transport)
                .launch(&mut stage)
                .expect_err("interrupted");
            assert!(
                matches!(err, LaunchError::Interrupted { signal } if signal == expected),
                "{err}"
            );
            assert_eq!(ringleader::stop_signal(), Some(expected));
            assert_eq!(
                err.to_string(),
                format!("interrupted by {signal}: every worker was stopped")
            );
            assert_no_children();
            // Gracefully: the stage ends the run at a round boundary.
            let mut stage = Rounds {
                signal,
                graceful: true,
                gather: Gather::new(3),
            };
            let outputs = Launcher::new()
                .workers(3)
                .transport(transport)
                .stop_gracefully(true)
                .launch(&mut stage)
                .expect("a graceful stop");
            assert_eq!(outputs, vec![3, 3, 3]);
            assert_eq!(ringleader::stop_signal(), Some(expected));
            assert_no_children();
        }
    }
}

/// Rank 1 ignores SIGTERM and never ends; rank 0 fails once rank 1 has said so.
#[derive(Clone)]
struct Stubborn;

impl Stage for Stubborn {
    type Message = ();
    type Report = ();
    type Answer = ();
    type Output = ();

    fn work(self, ring: &mut Ring<Self>) -> Result<(), StageError> {
        use nix::sys::signal::{SigHandler, Signal, signal};
        if ring.rank() == 1 {
            // SAFETY: ignoring a signal installs no code of ours.
            unsafe { signal(Signal::SIGTERM, SigHandler::SigIgn) }?;
            ring.send(Neighbour::Left, ())?;
            loop {
                std::thread::park();
            }
        }
        ring.recv(Neighbour::Right)?;
        Err("failing while rank 1 refuses to stop".into())
    }
}

fn a_worker_that_ignores_sigterm_is_killed_after_the_grace_period() {
    let started = Instant::now();
    let err = Launcher::new()
        .workers(2)
        .launch(&mut Stubborn)
        .expect_err("rank 0 fails");
    let elapsed = started.elapsed();
    let LaunchError::Worker(failure) = &err else {
        panic!("expected a worker failure, got {err}");
    };
    assert_eq!(failure.rank, 0, "{err}");
    // SIGTERM, 0.5 s of grace, then SIGKILL.
    assert!(
        elapsed >= Duration::from_millis(500) && elapsed < Duration::from_secs(3),
        "{elapsed:?}"
    );
    assert_no_children();
}

fn launch_refuses_to_fork_a_multithreaded_process() {
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let helper = std::thread::spawn(move || rx.recv());
    let err = Launcher::new()
        .workers(2)
        .launch(&mut BigRotate { len: 1 })
        .expect_err("must refuse");
    assert!(
        matches!(err, LaunchError::Threaded { threads } if threads >= 2),
        "{err}"
    );
    drop(tx);
    let _ = helper.join();
    // The threads transport does not fork, so it is fine here.
    Launcher::new()
        .workers(2)
        .transport(Transport::Threads)
        .launch(&mut BigRotate { len: 1 })
        .expect("threads transport");
}

fn zero_workers_is_an_error() {
    let err = Launcher::new().workers(0).launch(&mut BigRotate { len: 1 });
    assert!(matches!(err, Err(LaunchError::NoWorkers)));
}

// ---------------------------------------------------------------------------------------
// The critical-path depth.

/// What the depth tests do each step, besides announcing it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Pattern {
    /// Rotate a small block.
    Rotate,
    /// A message to each neighbour, then receive both.
    Halo,
    /// As `Halo`, then a report and its answer.
    HaloAndAsk,
}

/// Answers go out once every rank has reported: a rank that raced ahead could otherwise
/// report its next step before a slower rank's answer left, and that answer would then
/// rightly carry the longer chain.
#[derive(Clone)]
struct Depth {
    pattern: Pattern,
    steps: u64,
    gather: Gather<()>,
}

impl Stage for Depth {
    type Message = u64;
    type Report = ();
    type Answer = ();
    type Output = ();

    fn work(self, ring: &mut Ring<Self>) -> Result<(), StageError> {
        for step in 10..10 + self.steps {
            ring.set_step(step);
            if self.pattern == Pattern::Rotate {
                ring.rotate(&[step, 7], |_, _: &[u64]| {})?;
                continue;
            }
            ring.send(Neighbour::Right, step)?;
            ring.send(Neighbour::Left, step)?;
            assert_eq!(ring.recv(Neighbour::Left)?, step);
            assert_eq!(ring.recv(Neighbour::Right)?, step);
            if self.pattern == Pattern::HaloAndAsk {
                ring.ask(())?;
            }
        }
        Ok(())
    }

    fn on_report(
        &mut self,
        from: usize,
        _: (),
        coordinator: &mut Coordinator<'_, Self>,
    ) -> Result<(), StageError> {
        if self.gather.push(from, ()).is_some() {
            coordinator.broadcast(())?;
        }
        Ok(())
    }
}

fn stats(launcher: &Launcher, stage: &mut impl Stage) -> RunStats {
    launcher.launch_with_stats(stage).expect("the run").1
}

/// A rotation's blocks travel P - 1 hops a step; a message each way, one; a report and its
/// answer, two more. The same on any number of workers and on either transport.
fn the_depth_of_a_step_is_its_longest_chain_of_messages() {
    for transport in TRANSPORTS {
        for workers in [1, 2, 3, 5] {
            let launcher = Launcher::new().workers(workers).transport(transport);
            for (pattern, depth) in [
                (Pattern::Rotate, workers as f64 - 1.0),
                (Pattern::Halo, 1.0),
                (Pattern::HaloAndAsk, 3.0),
            ] {
                let mut stage = Depth {
                    pattern,
                    steps: 6,
                    gather: Gather::new(workers),
                };
                let got = stats(&launcher, &mut stage);
                let what = format!("{pattern:?} on {workers} workers, {transport:?}");
                assert_eq!(got.depth, Some(depth), "{what}");
                assert_eq!(got.steps, 6, "{what}");
            }
        }
    }
}

/// Rank 0 waits for an answer (its count becomes 2), then receives rank 1's message,
/// which carries 1. A receive that took the count it was given instead of the larger
/// would leave rank 0 at 1, and the depth at 1.
#[derive(Clone)]
struct LateMessage;

impl Stage for LateMessage {
    type Message = ();
    type Report = ();
    type Answer = ();
    type Output = ();

    fn work(self, ring: &mut Ring<Self>) -> Result<(), StageError> {
        ring.set_step(0);
        if ring.rank() == 0 {
            ring.ask(())?;
            ring.recv(Neighbour::Right)?;
        } else {
            ring.send(Neighbour::Left, ())?;
        }
        Ok(())
    }

    fn on_report(
        &mut self,
        from: usize,
        _: (),
        coordinator: &mut Coordinator<'_, Self>,
    ) -> Result<(), StageError> {
        coordinator.send(from, ())?;
        Ok(())
    }
}

fn a_receive_keeps_the_larger_hop_count() {
    for transport in TRANSPORTS {
        let launcher = Launcher::new().workers(2).transport(transport);
        let got = stats(&launcher, &mut LateMessage);
        assert_eq!((got.depth, got.steps), (Some(2.0), 1), "{transport:?}");
    }
}

fn a_run_that_announces_no_step_has_no_depth() {
    for transport in TRANSPORTS {
        let launcher = Launcher::new().workers(3).transport(transport);
        let got = stats(&launcher, &mut BigRotate { len: 4 });
        assert_eq!((got.depth, got.steps), (None, 0), "{transport:?}");
    }
}

/// Every child this process forked has been reaped: no zombies.
fn assert_no_children() {
    use nix::sys::wait::{WaitPidFlag, waitpid};
    match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
        Err(nix::errno::Errno::ECHILD) => {}
        other => panic!("a child was left behind: {other:?}"),
    }
}

/// The tests in the order they run, each named once.
macro_rules! tests {
    ($($test:ident),* $(,)?) => {
        [$((stringify!($test), $test as fn())),*]
    };
}

fn main() {
    let tests = tests![
        large_blocks_do_not_deadlock_the_ring,
        messages_go_both_ways_and_the_coordinator_answers,
        a_failing_worker_ends_the_run_with_its_rank_pid_and_cause,
        zero_workers_is_an_error,
        the_coordinator_can_stop_a_run,
        workers_that_all_receive_first_are_reported_as_a_deadlock,
        waiting_on_a_coordinator_that_never_answers_is_a_deadlock,
        a_step_that_takes_too_long_names_the_rank_that_did_not_finish_it,
        a_stop_signal_stops_the_run_in_order,
        a_worker_that_ignores_sigterm_is_killed_after_the_grace_period,
        the_depth_of_a_step_is_its_longest_chain_of_messages,
        a_receive_keeps_the_larger_hop_count,
        a_run_that_announces_no_step_has_no_depth,
        // Last: it starts a thread, and forking needs a single-threaded process.
        launch_refuses_to_fork_a_multithreaded_process,
    ];
    let filter: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let mut ran = 0;
    for (name, test) in tests {
        if !filter.is_empty() && !filter.iter().any(|f| name.contains(f.as_str())) {
            continue;
        }
        let started = Instant::now();
        test();
        assert_no_children();
        println!(
            "test {name} ... ok ({:.2}s)",
            started.elapsed().as_secs_f64()
        );
        ran += 1;
    }
    println!("\ntest result: ok. {ran} passed");
}
