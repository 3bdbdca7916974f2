//! Framework tests through the public API. This target has `harness = false`: it runs in a
//! single thread, so it may fork workers, which the multi-threaded test harness may not.

mod forking;

use std::time::{Duration, Instant};

use forking::assert_no_children;

use ringleader::{
    Bulk, Cause, Coordinator, Gather, Handler, Inherited, LaunchError, Launcher, Neighbour,
    NoReports, Party, Ring, RingError, RunStats, Stage, StageError, StopSignal, Ticket, Transport,
};

const TRANSPORTS: [Transport; 2] = [Transport::Processes, Transport::Threads];

/// Every worker rotates a block of `len` words, each word its origin rank, and returns a
/// checksum of what it saw, so the test can tell that every block arrived whole.
#[derive(Clone)]
struct BigRotate {
    len: usize,
}

impl Stage for BigRotate {
    type Output = Vec<(usize, usize, u64)>;

    fn work(self, ring: &mut Ring) -> Result<Self::Output, StageError> {
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
                .launch(BigRotate { len })
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
struct PingAndSum;

/// The coordinator answers every round with the sum of the reports, and notes the
/// scheduling policy of the thread that handles each.
struct Sum {
    gather: Gather<u64>,
    policies: Vec<libc::c_int>,
}

impl Sum {
    fn new(workers: usize) -> Sum {
        Sum {
            gather: Gather::new(workers),
            policies: Vec::new(),
        }
    }
}

impl Stage for PingAndSum {
    type Output = (usize, usize, u64);

    fn work(self, ring: &mut Ring) -> Result<Self::Output, StageError> {
        let rank = ring.rank();
        ring.send(
            Neighbour::Right,
            &(rank, format!("to the right from {rank}")),
        )?;
        ring.send(Neighbour::Left, &(rank, format!("to the left from {rank}")))?;
        let (from_left, text): (usize, String) = ring.recv(Neighbour::Left)?;
        assert_eq!(text, format!("to the right from {from_left}"));
        let (from_right, text): (usize, String) = ring.recv(Neighbour::Right)?;
        assert_eq!(text, format!("to the left from {from_right}"));
        let total = ring.ask(&(rank as u64 + 1))?;
        Ok((from_left, from_right, total))
    }
}

impl Handler for Sum {
    type Report = u64;
    type Answer = u64;

    fn on_report(
        &mut self,
        from: usize,
        report: u64,
        coordinator: &mut Coordinator<'_, u64>,
    ) -> Result<(), StageError> {
        // SAFETY: reads the calling thread's policy; nothing is written.
        self.policies.push(unsafe { libc::sched_getscheduler(0) });
        if let Some(all) = self.gather.push(from, report) {
            coordinator.broadcast(all.iter().sum())?;
        }
        Ok(())
    }
}

/// The coordinator handles reports on `SCHED_BATCH`, whose wakeups do not take a core from
/// a running worker, and its thread is back on the usual policy once the run is over.
fn the_coordinator_supervises_on_sched_batch_and_leaves_it_after() {
    for transport in TRANSPORTS {
        let mut sum = Sum::new(2);
        Launcher::new()
            .workers(2)
            .transport(transport)
            .launch_with(PingAndSum, &mut sum)
            .expect("a run of two workers");
        assert_eq!(sum.policies, [libc::SCHED_BATCH; 2], "{transport:?}");
        // SAFETY: as above.
        let after = unsafe { libc::sched_getscheduler(0) };
        assert_eq!(
            after,
            libc::SCHED_OTHER,
            "{transport:?}: the policy after the run"
        );
    }
}

fn messages_go_both_ways_and_the_coordinator_answers() {
    for transport in TRANSPORTS {
        for workers in [1, 2, 5] {
            let mut sum = Sum::new(workers);
            let outputs = Launcher::new()
                .workers(workers)
                .transport(transport)
                .launch_with(PingAndSum, &mut sum)
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
    type Output = ();

    fn work(self, ring: &mut Ring) -> Result<(), StageError> {
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
        ring.recv::<u8>(Neighbour::Left)?;
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
                .launch(FailAt { rank: 1, how })
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
struct AskForever;

/// Counts the reports and stops the run at the tenth.
struct StopAtTen {
    rounds: usize,
}

impl Stage for AskForever {
    type Output = ();

    fn work(self, ring: &mut Ring) -> Result<(), StageError> {
        loop {
            ring.ask::<(), ()>(&())?;
        }
    }
}

impl Handler for StopAtTen {
    type Report = ();
    type Answer = ();

    fn on_report(
        &mut self,
        _from: usize,
        _report: (),
        coordinator: &mut Coordinator<'_, ()>,
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
        let mut counter = StopAtTen { rounds: 0 };
        let err = Launcher::new()
            .workers(3)
            .transport(transport)
            .launch_with(AskForever, &mut counter)
            .expect_err("stopped");
        assert!(matches!(err, LaunchError::Stopped), "{transport:?}: {err}");
        assert_eq!(counter.rounds, 10);
        assert!(started.elapsed() < Duration::from_secs(2));
    }
}

/// Every worker receives from its left before it sends anything: the textbook's deadlock.
#[derive(Clone)]
struct ReceiveFirst;

impl Stage for ReceiveFirst {
    type Output = ();

    fn work(self, ring: &mut Ring) -> Result<(), StageError> {
        ring.set_step(3);
        let got: u8 = ring.recv(Neighbour::Left)?;
        ring.send(Neighbour::Right, &got)?;
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
                .launch(ReceiveFirst)
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

/// Every worker sends a value of `words` distinct words (about 4 bytes each once encoded)
/// to its right before it receives its left neighbour's, then runs an `all_gather` and an
/// `all_reduce` of values as large, in which every rank sends before it receives too.
#[derive(Clone)]
struct LargeValuesFirst {
    words: u64,
}

impl Stage for LargeValuesFirst {
    type Output = (u64, u64, u64);

    fn work(self, ring: &mut Ring) -> Result<Self::Output, StageError> {
        ring.set_step(1);
        let rank = ring.rank() as u64;
        let value =
            |rank: u64| -> Vec<u64> { (0..self.words).map(|i| i * 1_000_003 + rank).collect() };
        ring.send(Neighbour::Right, &value(rank))?;
        let from_left: Vec<u64> = ring.recv(Neighbour::Left)?;
        let gathered: Vec<Vec<u64>> = ring.all_gather(value(rank))?;
        let summed: Vec<u64> = ring.all_reduce(value(rank), |a, b| {
            a.iter().zip(&b).map(|(x, y)| x.wrapping_add(*y)).collect()
        })?;
        let size = ring.size() as u64;
        let left = (rank + size - 1) % size;
        let gathered_ok = gathered
            .iter()
            .enumerate()
            .all(|(r, v)| *v == value(r as u64));
        let sum_ok = summed
            .iter()
            .enumerate()
            .all(|(i, &s)| s == (0..size).map(|r| i as u64 * 1_000_003 + r).sum::<u64>());
        Ok((
            u64::from(from_left == value(left)),
            u64::from(gathered_ok),
            u64::from(sum_ok),
        ))
    }
}

fn values_of_any_size_cross_when_every_worker_sends_first() {
    // 2 million words: about 8 MB a value, far past what a link's socket holds, and past
    // 64 KiB, where a value's bytes go between processes in shared memory of their own.
    for words in [1000, 20_000, 2_000_000] {
        for transport in TRANSPORTS {
            let started = Instant::now();
            let outputs = Launcher::new()
                .workers(3)
                .transport(transport)
                // A wait that never ends would fail the test rather than hang it.
                .step_timeout(Duration::from_secs(20))
                .launch(LargeValuesFirst { words })
                .unwrap_or_else(|e| panic!("{transport:?}, {words} words: {e}"));
            assert_eq!(outputs, vec![(1, 1, 1); 3], "{transport:?}, {words} words");
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "{transport:?}, {words} words: {:?}",
                started.elapsed()
            );
            assert_no_children();
        }
    }
}

/// Every worker sends `count` small values before it takes any back: messages to its right
/// neighbour, then as many from its left; or reports, then as many answers.
#[derive(Clone)]
struct Ahead {
    count: u64,
    to_coordinator: bool,
}

impl Stage for Ahead {
    type Output = u64;

    fn work(self, ring: &mut Ring) -> Result<u64, StageError> {
        ring.set_step(2);
        for i in 0..self.count {
            if self.to_coordinator {
                ring.report(&i)?;
            } else {
                ring.send(Neighbour::Right, &i)?;
            }
        }
        let mut sum = 0;
        for _ in 0..self.count {
            sum += if self.to_coordinator {
                ring.recv_answer::<u64>()?
            } else {
                ring.recv::<u64>(Neighbour::Left)?
            };
        }
        Ok(sum)
    }
}

fn sending_ahead_of_what_a_link_holds_is_named_a_deadlock() {
    // A hundred frames ahead fit every transport.
    for transport in TRANSPORTS {
        let sums = Launcher::new()
            .workers(3)
            .transport(transport)
            .launch(Ahead {
                count: 100,
                to_coordinator: false,
            })
            .expect("a hundred messages ahead");
        assert_eq!(sums, vec![4950; 3], "{transport:?}");
    }
    // Between threads a link holds any number.
    let sums = Launcher::new()
        .workers(3)
        .transport(Transport::Threads)
        .launch(Ahead {
            count: 5000,
            to_coordinator: false,
        })
        .expect("five thousand messages ahead, between threads");
    assert_eq!(sums, vec![5000 * 4999 / 2; 3]);
    // Between processes a link's socket holds a few hundred small frames: past that each
    // send waits for its receiver, which waits in a send of its own, round the ring.
    let started = Instant::now();
    let err = Launcher::new()
        .workers(3)
        .transport(Transport::Processes)
        .step_timeout(Duration::from_secs(20))
        .launch(Ahead {
            count: 5000,
            to_coordinator: false,
        })
        .expect_err("a ring of full links cannot move");
    let elapsed = started.elapsed();
    assert_eq!(
        err.to_string(),
        "deadlock: rank 0 waits for rank 1 to take what it sent, rank 1 waits for rank 2 to \
         take what it sent, rank 2 waits for rank 0 to take what it sent (at step 2)"
    );
    let LaunchError::Deadlock { waits } = &err else {
        panic!("expected a deadlock, got {err}");
    };
    for wait in waits {
        assert!(wait.pid.is_some());
        assert_eq!(wait.on, Party::Receiver((wait.rank + 1) % 3));
    }
    assert!(elapsed < Duration::from_secs(5), "{elapsed:?}");
    assert_no_children();
}

/// Answers each report with the report.
struct Echo;

impl Handler for Echo {
    type Report = u64;
    type Answer = u64;

    fn on_report(
        &mut self,
        from: usize,
        report: u64,
        coordinator: &mut Coordinator<'_, u64>,
    ) -> Result<(), StageError> {
        coordinator.send(from, report)?;
        Ok(())
    }
}

fn a_worker_far_ahead_of_its_answers_does_not_stall_the_coordinator() {
    // Thousands of answers are far more than a worker's down socket holds. Were the
    // coordinator to wait in a send, the worker, waiting to send it a report, would never
    // read, and the run would hang with nobody watching it: the alarm ends the test then.
    // SAFETY: `alarm` only arms this process's SIGALRM, whose default action ends it.
    unsafe { libc::alarm(60) };
    for (transport, count) in TRANSPORTS
        .into_iter()
        .flat_map(|t| [(t, 5000), (t, 20_000)])
    {
        let started = Instant::now();
        let sums = Launcher::new()
            .workers(3)
            .transport(transport)
            .launch_with(
                Ahead {
                    count,
                    to_coordinator: true,
                },
                &mut Echo,
            )
            .unwrap_or_else(|e| panic!("{transport:?}: {e}"));
        assert_eq!(sums, vec![count * (count - 1) / 2; 3], "{transport:?}");
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{transport:?}, {count}: {:?}",
            started.elapsed()
        );
        assert_no_children();
    }
    // SAFETY: as above; this disarms it.
    unsafe { libc::alarm(0) };
}

/// Rank 0 reports once; the others compute until the run is stopped, and only look at the
/// ring to see whether it is (as a long computation can, with `Ring::stopping`).
#[derive(Clone)]
struct ReportWhileOthersCompute;

impl Stage for ReportWhileOthersCompute {
    type Output = ();

    fn work(self, ring: &mut Ring) -> Result<(), StageError> {
        if ring.rank() == 0 {
            ring.report(&7u64)?;
        } else {
            while !ring.stopping() {
                std::hint::spin_loop();
            }
        }
        Ok(())
    }
}

/// A handler with a bug: it panics on the first report.
struct PanickingHandler;

impl Handler for PanickingHandler {
    type Report = u64;
    type Answer = ();

    fn on_report(
        &mut self,
        _: usize,
        _: u64,
        _: &mut Coordinator<'_, ()>,
    ) -> Result<(), StageError> {
        panic!("the handler's own bug")
    }
}

fn a_panicking_handler_leaves_no_worker_behind() {
    let quiet = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    for transport in TRANSPORTS {
        let launched = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            Launcher::new()
                .workers(3)
                .transport(transport)
                .launch_with(ReportWhileOthersCompute, &mut PanickingHandler)
        }));
        let panic = launched.expect_err("the handler's panic reaches the caller");
        assert_eq!(panic.downcast_ref::<&str>(), Some(&"the handler's own bug"));
        // Not running on, unwatched, nor left for the caller to reap.
        assert_no_children();
    }
    std::panic::set_hook(quiet);
}

/// Ranks 0 and 1 pass a counter back and forth `ROUNDS` times, each round a send and a
/// receive that never wait long; rank 2 fails at once. Each worker says how many rounds it
/// made when it ends.
#[derive(Clone)]
struct PingPongWhileOneFails {
    ended: std::sync::mpsc::Sender<(usize, u64)>,
}

impl PingPongWhileOneFails {
    const ROUNDS: u64 = 1_000_000;
}

impl Stage for PingPongWhileOneFails {
    type Output = ();

    fn work(self, ring: &mut Ring) -> Result<(), StageError> {
        let rank = ring.rank();
        if rank == 2 {
            return Err("rank 2 fails".into());
        }
        let other = if rank == 0 {
            Neighbour::Right
        } else {
            Neighbour::Left
        };
        let mut rounds = 0;
        let result = (|| -> Result<(), RingError> {
            while rounds < Self::ROUNDS {
                ring.send(other, &rounds)?;
                ring.recv::<u64>(other)?;
                rounds += 1;
            }
            Ok(())
        })();
        let _ = self.ended.send((rank, rounds));
        Ok(result?)
    }
}

/// Worker threads cannot be killed, but a run that ends (here because a worker failed)
/// stops them all the same: every send and receive fails once the coordinator is ending
/// the run, even one that would not have waited. They once ran their whole stage after
/// the launch had returned, sending and receiving as if nothing had happened.
fn worker_threads_stop_with_their_run_even_when_nothing_waits() {
    let (ended, rounds) = std::sync::mpsc::channel();
    let err = Launcher::new()
        .workers(3)
        .transport(Transport::Threads)
        .launch(PingPongWhileOneFails { ended })
        .expect_err("rank 2 fails");
    assert!(err.to_string().contains("rank 2 fails"), "{err}");
    for _ in 0..2 {
        let (rank, made) = rounds
            .recv_timeout(Duration::from_secs(60))
            .expect("the workers end");
        assert!(
            made < PingPongWhileOneFails::ROUNDS,
            "rank {rank} made all its {made} rounds after the run had failed"
        );
    }
}

/// Every rank starts a shell that starts a sleep of its own, so that each worker has a
/// child and a grandchild. Then it returns their pids; or, with `fail`, rank 0 hands them
/// to rank 1 and holds, and rank 1 fails, naming every pid, so the run ends while rank 0
/// and its programs are still there.
#[derive(Clone)]
struct StartsPrograms {
    fail: bool,
}

impl StartsPrograms {
    /// A shell that starts `sleep 1000` and waits for it: the shell's pid and the sleep's.
    fn start() -> Result<[i32; 2], StageError> {
        let shell = std::process::Command::new("sh")
            .args(["-c", "sleep 1000 & echo $!; wait"])
            .stdout(std::process::Stdio::piped())
            .spawn()?;
        let shell_pid = i32::try_from(shell.id())?;
        let mut line = String::new();
        let stdout = shell.stdout.ok_or("the shell has no stdout")?;
        std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line)?;
        Ok([shell_pid, line.trim().parse()?])
    }
}

impl Stage for StartsPrograms {
    type Output = [i32; 2];

    fn work(self, ring: &mut Ring) -> Result<[i32; 2], StageError> {
        let mine = Self::start()?;
        if !self.fail {
            return Ok(mine);
        }
        if ring.rank() == 0 {
            ring.send(Neighbour::Right, &mine)?;
            if ring.transport() == Transport::Processes {
                // Only the coordinator's SIGKILL ends this worker.
                loop {
                    nix::unistd::pause();
                }
            }
            // A thread cannot be killed: it ends as the run's receives fail.
            ring.recv::<()>(Neighbour::Right)?;
            return Ok(mine);
        }
        let theirs: [i32; 2] = ring.recv(Neighbour::Left)?;
        Err(format!("pids {} {} {} {}", theirs[0], theirs[1], mine[0], mine[1]).into())
    }
}

/// Whether process `pid` (any process, not only a child) is gone, or goes within 10 s:
/// its pidfd becomes readable when it exits.
fn exits_soon(pid: i32) -> bool {
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    let Ok(fd) = i32::try_from(fd) else {
        return false;
    };
    if fd < 0 {
        // ESRCH: it has been reaped already.
        return std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH);
    }
    let mut poll = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd; `fd` is ours and closed below.
    let ready = unsafe { libc::poll(&raw mut poll, 1, 10_000) };
    // SAFETY: `fd` was opened above and is not used again.
    unsafe { libc::close(fd) };
    ready == 1
}

/// No worker process may outlive its run, nor may what a worker starts: a stage that
/// starts a program and forgets it once left it running after the run (here a shell and
/// its sleep, for 1,000 s), whether the stage returned, failed, or was killed.
fn the_programs_a_worker_starts_end_with_its_run() {
    for transport in TRANSPORTS {
        let pids = Launcher::new()
            .workers(2)
            .transport(transport)
            .launch(StartsPrograms { fail: false })
            .expect("the run");
        for pid in pids.into_iter().flatten() {
            assert!(exits_soon(pid), "{transport:?}: {pid} outlived its run");
        }
        assert_no_children();
        let err = Launcher::new()
            .workers(2)
            .transport(transport)
            .launch(StartsPrograms { fail: true })
            .expect_err("rank 1 fails");
        let message = err.to_string();
        let pids: Vec<i32> = message
            .split_once("pids ")
            .unwrap_or_else(|| panic!("{transport:?}: {message}"))
            .1
            .split_whitespace()
            .map_while(|word| word.parse().ok())
            .collect();
        assert_eq!(pids.len(), 4, "{transport:?}: {message}");
        for pid in pids {
            assert!(
                exits_soon(pid),
                "{transport:?}: {pid} outlived a failed run"
            );
        }
        assert_no_children();
    }
}

/// Ranks 1 and 2 each wait for the other; rank 0, which neither waits for, computes and
/// moves through its steps until the run is stopped.
#[derive(Clone)]
struct CycleBesideABusyRank;

impl Stage for CycleBesideABusyRank {
    type Output = ();

    fn work(self, ring: &mut Ring) -> Result<(), StageError> {
        match ring.rank() {
            0 => {
                let mut turns = 0u64;
                while !ring.stopping() {
                    turns += 1;
                    ring.set_step(turns / 1000);
                }
                Err("gave up".into())
            }
            1 => Ok(ring.recv::<()>(Neighbour::Right)?),
            _ => Ok(ring.recv::<()>(Neighbour::Left)?),
        }
    }
}

/// A cycle is a deadlock whatever the ranks outside it do: they cannot move it. The watch
/// once waited for the whole board to hold still, and named this cycle only once the busy
/// rank had finished (never, here, without a step timeout).
fn a_cycle_is_named_while_other_ranks_go_on_working() {
    for transport in TRANSPORTS {
        let started = Instant::now();
        let err = Launcher::new()
            .workers(3)
            .transport(transport)
            .launch(CycleBesideABusyRank)
            .expect_err("deadlock");
        assert_eq!(
            err.to_string(),
            "deadlock: rank 1 waits for rank 2, rank 2 waits for rank 1",
            "{transport:?}"
        );
        assert!(started.elapsed() < Duration::from_secs(5), "{transport:?}");
        assert_no_children();
    }
}

/// Ranks that call different collectives at the same point meet a protocol error, not one
/// another's values: each value carries which collective sent it. Here rank 0 reduces while
/// rank 1 broadcasts; both then reduce once more. Rank 1 once took rank 0's stale value
/// for the second reduction, and the ranks returned different sums without an error.
fn ranks_in_different_collectives_meet_a_protocol_error() {
    for transport in TRANSPORTS {
        let result = Launcher::new().workers(2).transport(transport).run(|ring| {
            let first = if ring.rank() == 0 {
                ring.all_reduce(5u64, |a, b| a + b)?
            } else {
                ring.broadcast(1, Some(7u64))?
            };
            let second = ring.all_reduce(1u64, |a, b| a + b)?;
            Ok((first, second))
        });
        let err = result.expect_err("a mismatch");
        let message = err.to_string();
        let kinds = "expected a value of all_gather, all_reduce or gather, got one of \
                     broadcast or scatter";
        let counts = "expected a value of the collective as many calls in as this rank's, \
                      got one of an earlier or a later collective";
        assert!(
            message.contains("protocol error on the link from rank")
                && (message.contains(kinds) || message.contains(counts)),
            "{transport:?}: {message}"
        );
        assert_no_children();
    }
}

/// A handler that answers a rank the ring does not have.
struct AnswersNobody;

impl Handler for AnswersNobody {
    type Report = u64;
    type Answer = ();

    fn on_report(
        &mut self,
        _: usize,
        _: u64,
        coordinator: &mut Coordinator<'_, ()>,
    ) -> Result<(), StageError> {
        Ok(coordinator.send(99, ())?)
    }
}

/// An answer to a rank the ring does not have says so; it once said that rank 99 "is gone".
fn an_answer_to_a_rank_the_ring_lacks_names_the_mistake() {
    for transport in TRANSPORTS {
        let err = Launcher::new()
            .workers(3)
            .transport(transport)
            .launch_with(ReportWhileOthersCompute, &mut AnswersNobody)
            .expect_err("no rank 99");
        assert_eq!(
            err.to_string(),
            "coordinator failed: the ring has no rank 99 (its ranks are 0 to 2)",
            "{transport:?}"
        );
        assert_no_children();
    }
}

/// Rank 0 sends `count` reports without waiting for anything; the others end at once.
#[derive(Clone)]
struct Flood {
    count: u64,
}

impl Stage for Flood {
    type Output = ();

    fn work(self, ring: &mut Ring) -> Result<(), StageError> {
        if ring.rank() == 0 {
            for i in 0..self.count {
                ring.report(&i)?;
            }
        }
        Ok(())
    }
}

/// A handler that takes a few microseconds over each report.
#[derive(Default)]
struct Unhurried {
    taken: u64,
}

impl Handler for Unhurried {
    type Report = u64;
    type Answer = ();

    fn on_report(
        &mut self,
        _: usize,
        report: u64,
        _: &mut Coordinator<'_, ()>,
    ) -> Result<(), StageError> {
        let started = Instant::now();
        while started.elapsed() < Duration::from_micros(5) {
            std::hint::spin_loop();
        }
        assert_eq!(report, self.taken, "the reports come in order");
        self.taken += 1;
        Ok(())
    }
}

/// A worker process far ahead of the coordinator waits for it to take its reports. The
/// coordinator once read every report the worker's socket held into memory of its own
/// before handling any, and the worker, never held back, sent all 200,000 (some 500 MB of
/// the coordinator's memory; a run that reported for longer grew without bound, and the
/// coordinator, reading, watched nothing meanwhile).
fn a_worker_far_ahead_of_the_coordinator_waits_for_it_to_take_its_reports() {
    use nix::sys::resource::{UsageWho, getrusage};
    let peak = || getrusage(UsageWho::RUSAGE_SELF).map_or(0, |usage| usage.max_rss());
    let before = peak();
    let mut handler = Unhurried::default();
    Launcher::new()
        .workers(2)
        .launch_with(Flood { count: 200_000 }, &mut handler)
        .expect("the run");
    assert_eq!(handler.taken, 200_000);
    // Kilobytes.
    let grew = peak() - before;
    assert!(grew < 64 << 10, "the coordinator's peak grew by {grew} KB");
    assert_no_children();
}

/// Workers ask the coordinator, which never answers.
#[derive(Clone)]
struct SilentCoordinator;

impl Stage for SilentCoordinator {
    type Output = ();

    fn work(self, ring: &mut Ring) -> Result<(), StageError> {
        if ring.rank() == 0 {
            ring.ask::<(), ()>(&())?;
        } else {
            ring.recv::<()>(Neighbour::Left)?;
        }
        Ok(())
    }
}

/// Takes every report and never answers.
struct Silent;

impl Handler for Silent {
    type Report = ();
    type Answer = ();

    fn on_report(
        &mut self,
        _: usize,
        (): (),
        _: &mut Coordinator<'_, ()>,
    ) -> Result<(), StageError> {
        Ok(())
    }
}

fn waiting_on_a_coordinator_that_never_answers_is_a_deadlock() {
    for transport in TRANSPORTS {
        let started = Instant::now();
        let err = Launcher::new()
            .workers(3)
            .transport(transport)
            .launch_with(SilentCoordinator, &mut Silent)
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

/// Rank 1 works on step `.0` until the run is stopped; the others wait for it. A stage
/// that announces no step (`None`) is one step to the timeout.
#[derive(Clone)]
struct SlowStep(Option<u64>);

impl Stage for SlowStep {
    type Output = ();

    fn work(self, ring: &mut Ring) -> Result<(), StageError> {
        if let Some(step) = self.0 {
            ring.set_step(step);
        }
        if ring.rank() == 1 {
            // A long computation that gives up once the coordinator ends the run.
            while !ring.stopping() {
                std::thread::yield_now();
            }
            return Err("gave up".into());
        }
        ring.recv::<()>(Neighbour::Left)?;
        Ok(())
    }
}

/// And in a stage that announces no steps, the limit bounds the run: such a stage once
/// had no bound at all.
fn a_step_that_takes_too_long_names_the_rank_that_did_not_finish_it() {
    let cases = [
        (
            Some(4),
            "step 4 timed out after 0.5 s: rank 1",
            "did not finish it",
        ),
        (
            None,
            "timed out after 0.5 s: rank 1",
            "announced no step in that time",
        ),
    ];
    for (step_of_stage, starts, ends) in cases {
        for transport in TRANSPORTS {
            let started = Instant::now();
            let err = Launcher::new()
                .workers(3)
                .transport(transport)
                .step_timeout(Duration::from_millis(500))
                .launch(SlowStep(step_of_stage))
                .expect_err("timeout");
            let elapsed = started.elapsed();
            let LaunchError::Timeout { step, ranks, .. } = &err else {
                panic!("expected a timeout, got {err}");
            };
            assert_eq!(
                (*step, ranks.len(), ranks[0].0),
                (step_of_stage, 1, 1),
                "{err}"
            );
            let message = err.to_string();
            assert!(message.starts_with(starts), "{message}");
            assert!(message.ends_with(ends), "{message}");
            assert!(
                elapsed >= Duration::from_millis(500) && elapsed < Duration::from_secs(3),
                "{elapsed:?}"
            );
            assert_no_children();
        }
    }
}

/// Rank 1 never gets as far as its first step (stuck setting up, say), while the others
/// wait for it at step 1.
#[derive(Clone)]
struct StuckBeforeTheFirstStep;

impl Stage for StuckBeforeTheFirstStep {
    type Output = ();

    fn work(self, ring: &mut Ring) -> Result<(), StageError> {
        if ring.rank() == 1 {
            while !ring.stopping() {
                std::thread::yield_now();
            }
            return Err("gave up".into());
        }
        ring.set_step(1);
        ring.recv::<()>(Neighbour::Left)?;
        Ok(())
    }
}

fn a_rank_stuck_before_its_first_step_is_the_one_the_timeout_names() {
    for transport in TRANSPORTS {
        let err = Launcher::new()
            .workers(3)
            .transport(transport)
            .step_timeout(Duration::from_millis(500))
            .launch(StuckBeforeTheFirstStep)
            .expect_err("timeout");
        let LaunchError::Timeout { step, ranks, .. } = &err else {
            panic!("expected a timeout, got {err}");
        };
        assert_eq!((*step, ranks.len(), ranks[0].0), (Some(1), 1, 1), "{err}");
        assert_no_children();
    }
}

/// Workers ask every round; the coordinator raises a stop signal at itself in round 3
/// and, when `graceful`, ends the run at the next round it sees the signal.
#[derive(Clone)]
struct Rounds;

/// The coordinator's side of `Rounds`.
struct RaiseAtThree {
    signal: nix::sys::signal::Signal,
    graceful: bool,
    gather: Gather<u64>,
}

impl Stage for Rounds {
    type Output = u64;

    fn work(self, ring: &mut Ring) -> Result<u64, StageError> {
        for round in 1.. {
            ring.set_step(round);
            if ring.ask(&round)? {
                return Ok(round);
            }
        }
        Ok(0)
    }
}

impl Handler for RaiseAtThree {
    type Report = u64;
    type Answer = bool;

    fn on_report(
        &mut self,
        from: usize,
        round: u64,
        coordinator: &mut Coordinator<'_, bool>,
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
    use nix::sys::signal::{SigHandler, Signal, signal};
    // A coordinator keeps ignoring a signal its process was started ignoring, as a shell
    // without job control starts its background jobs ignoring SIGINT.
    for stop in [Signal::SIGINT, Signal::SIGTERM] {
        // SAFETY: the default action installs no code of ours.
        unsafe { signal(stop, SigHandler::SigDfl) }.expect("the default action");
    }
    for transport in TRANSPORTS {
        for (signal, expected) in [
            (Signal::SIGINT, StopSignal::Interrupt),
            (Signal::SIGTERM, StopSignal::Terminate),
        ] {
            let mut handler = RaiseAtThree {
                signal,
                graceful: false,
                gather: Gather::new(3),
            };
            let err = Launcher::new()
                .workers(3)
                .transport(transport)
                .launch_with(Rounds, &mut handler)
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
            let mut handler = RaiseAtThree {
                signal,
                graceful: true,
                gather: Gather::new(3),
            };
            let outputs = Launcher::new()
                .workers(3)
                .transport(transport)
                .stop_gracefully(true)
                .launch_with(Rounds, &mut handler)
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
    type Output = ();

    fn work(self, ring: &mut Ring) -> Result<(), StageError> {
        use nix::sys::signal::{SigHandler, Signal, signal};
        if ring.rank() == 1 {
            // SAFETY: ignoring a signal installs no code of ours.
            unsafe { signal(Signal::SIGTERM, SigHandler::SigIgn) }?;
            ring.send(Neighbour::Left, &())?;
            loop {
                std::thread::park();
            }
        }
        ring.recv::<()>(Neighbour::Right)?;
        Err("failing while rank 1 refuses to stop".into())
    }
}

fn a_worker_that_ignores_sigterm_is_killed_after_the_grace_period() {
    let started = Instant::now();
    let err = Launcher::new()
        .workers(2)
        .launch(Stubborn)
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
        .launch(BigRotate { len: 1 })
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
        .launch(BigRotate { len: 1 })
        .expect("threads transport");
}

/// Each rank's channels are made just before its worker forks, so descriptors can run out
/// part way through a launch, with some workers started: the launch says what failed and
/// leaves none of them behind.
fn a_launch_that_runs_out_of_descriptors_part_way_leaves_no_worker() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).expect("getrlimit");
    let open = std::fs::read_dir("/proc/self/fd").expect("/proc").count() as u64;
    // Room for the board, the mailboxes and a few ranks (two descriptors each, and their
    // links while they fork), not for 200.
    setrlimit(Resource::RLIMIT_NOFILE, open + 40, hard).expect("setrlimit");
    let result = Launcher::new().workers(200).run(|ring| Ok(ring.rank()));
    setrlimit(Resource::RLIMIT_NOFILE, soft, hard).expect("setrlimit");
    match result {
        Err(LaunchError::Channel(e)) => {
            assert_eq!(e.raw_os_error(), Some(libc::EMFILE), "{e}");
        }
        other => panic!("expected running out of descriptors, got {other:?}"),
    }
    assert_no_children();
    // The descriptors of the workers that had started are closed again.
    let after = std::fs::read_dir("/proc/self/fd").expect("/proc").count() as u64;
    assert_eq!(after, open);
}

/// Each worker reports 40 large bulk arrays as fast as it can, without waiting for an
/// answer, each with contents of its own and of a size of its own.
#[derive(Clone)]
struct BulkReports;

/// Word `i` of `rank`'s array for `step`.
fn bulk_word(rank: usize, step: u64, i: usize) -> u64 {
    i as u64 ^ step << 40 ^ (rank as u64) << 56
}

impl Stage for BulkReports {
    type Output = ();

    fn work(self, ring: &mut Ring) -> Result<(), StageError> {
        for step in 0..40u64 {
            let len = 20_000 + 1000 * step as usize;
            let data: Vec<u64> = (0..len).map(|i| bulk_word(ring.rank(), step, i)).collect();
            let bulk = ring.bulk(&data)?;
            drop(data);
            ring.report(&(step, bulk))?;
        }
        Ok(())
    }
}

/// Checks every array it is sent.
struct CheckBulk {
    seen: Vec<u64>,
}

impl Handler for CheckBulk {
    type Report = (u64, Bulk<u64>);
    type Answer = ();

    fn on_report(
        &mut self,
        from: usize,
        (step, data): (u64, Bulk<u64>),
        _: &mut Coordinator<'_, ()>,
    ) -> Result<(), StageError> {
        assert_eq!(data.len(), 20_000 + 1000 * step as usize);
        for (i, &word) in data.iter().enumerate() {
            assert_eq!(
                word,
                bulk_word(from, step, i),
                "rank {from}, step {step}, word {i}"
            );
        }
        self.seen[from] += 1;
        Ok(())
    }
}

/// Large bulk arrays in reports are lent between processes: the coordinator copies each
/// out of the worker's memory as it receives the report, and the worker frees it only
/// once the coordinator has counted it read. With many reports in flight, the worker's
/// freed arrays are soon reused for new ones: one freed too early would arrive with
/// another's contents.
fn large_bulk_arrays_in_reports_arrive_intact_however_many_are_in_flight() {
    for transport in TRANSPORTS {
        let mut check = CheckBulk { seen: vec![0; 2] };
        Launcher::new()
            .workers(2)
            .transport(transport)
            .launch_with(BulkReports, &mut check)
            .expect("every report arrives");
        assert_eq!(check.seen, [40, 40], "{transport:?}");
        assert_no_children();
    }
}

/// A coordinator reads the reports of all its workers before it frees any, and
/// `ipc-channel` receives each into a 208 KiB buffer of its own. Under `HugePages`,
/// sixteen such buffers freed together leave glibc's heap where it was: trimmed, it would
/// grow back into fresh pages at the next step, a dozen system calls a step. The test
/// runs on the main thread, whose blocks come from the heap that `sbrk` moves.
fn sixteen_receive_buffers_freed_together_leave_the_heap_in_place() {
    use std::alloc::{GlobalAlloc, Layout};
    let layout = Layout::from_size_align(208 << 10, 8).unwrap();
    let blocks: Vec<*mut u8> = (0..16)
        .map(|_| {
            // SAFETY: the layout is not zero-sized; the block is checked before use.
            let block = unsafe { ringleader::HugePages.alloc(layout) };
            assert!(!block.is_null());
            // SAFETY: the block holds at least one byte.
            unsafe { block.write(1) };
            block
        })
        .collect();
    // SAFETY: sbrk(0) only reads the program break.
    let top = unsafe { libc::sbrk(0) };
    for block in blocks {
        // SAFETY: each block came from `HugePages` with this layout, and is freed once.
        unsafe { ringleader::HugePages.dealloc(block, layout) };
    }
    // SAFETY: as above.
    let after = unsafe { libc::sbrk(0) };
    assert_eq!(after, top, "the heap was trimmed from {top:?} to {after:?}");
}

fn zero_workers_is_an_error() {
    let err = Launcher::new().workers(0).launch(BigRotate { len: 1 });
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
}

/// Answers a round once every rank has reported.
struct AnswerRounds {
    gather: Gather<()>,
}

impl Stage for Depth {
    type Output = ();

    fn work(self, ring: &mut Ring) -> Result<(), StageError> {
        for step in 10..10 + self.steps {
            ring.set_step(step);
            if self.pattern == Pattern::Rotate {
                ring.rotate(&[step, 7], |_, _: &[u64]| {})?;
                continue;
            }
            ring.send(Neighbour::Right, &step)?;
            ring.send(Neighbour::Left, &step)?;
            assert_eq!(ring.recv::<u64>(Neighbour::Left)?, step);
            assert_eq!(ring.recv::<u64>(Neighbour::Right)?, step);
            if self.pattern == Pattern::HaloAndAsk {
                ring.ask::<(), ()>(&())?;
            }
        }
        Ok(())
    }
}

impl Handler for AnswerRounds {
    type Report = ();
    type Answer = ();

    fn on_report(
        &mut self,
        from: usize,
        _: (),
        coordinator: &mut Coordinator<'_, ()>,
    ) -> Result<(), StageError> {
        if self.gather.push(from, ()).is_some() {
            coordinator.broadcast(())?;
        }
        Ok(())
    }
}

fn stats(launcher: &Launcher, stage: impl Stage, handler: &mut impl Handler) -> RunStats {
    launcher
        .launch_with_stats(stage, handler)
        .expect("the run")
        .1
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
                let stage = Depth { pattern, steps: 6 };
                let mut rounds = AnswerRounds {
                    gather: Gather::new(workers),
                };
                let got = stats(&launcher, stage, &mut rounds);
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
    type Output = ();

    fn work(self, ring: &mut Ring) -> Result<(), StageError> {
        ring.set_step(0);
        if ring.rank() == 0 {
            ring.ask::<(), ()>(&())?;
            ring.recv::<()>(Neighbour::Right)?;
        } else {
            ring.send(Neighbour::Left, &())?;
        }
        Ok(())
    }
}

/// Answers every report at once.
struct AnswerAtOnce;

impl Handler for AnswerAtOnce {
    type Report = ();
    type Answer = ();

    fn on_report(
        &mut self,
        from: usize,
        _: (),
        coordinator: &mut Coordinator<'_, ()>,
    ) -> Result<(), StageError> {
        coordinator.send(from, ())?;
        Ok(())
    }
}

fn a_receive_keeps_the_larger_hop_count() {
    for transport in TRANSPORTS {
        let launcher = Launcher::new().workers(2).transport(transport);
        let got = stats(&launcher, LateMessage, &mut AnswerAtOnce);
        assert_eq!((got.depth, got.steps), (Some(2.0), 1), "{transport:?}");
    }
}

fn a_run_that_announces_no_step_has_no_depth() {
    for transport in TRANSPORTS {
        let launcher = Launcher::new().workers(3).transport(transport);
        let got = stats(&launcher, BigRotate { len: 4 }, &mut NoReports);
        assert_eq!((got.depth, got.steps), (None, 0), "{transport:?}");
    }
}

// ---------------------------------------------------------------------------------------
// Blocks to one neighbour.

/// The largest block the tests send.
const LARGEST_BLOCK: usize = 16 << 20;

/// Seeded noise to cut blocks from: generating every block byte by byte would take the
/// unoptimized tests longer than sending it. Made before the workers fork, so each has it.
fn noise() -> &'static [u8] {
    static NOISE: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    NOISE.get_or_init(|| {
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        (0..LARGEST_BLOCK + 65_536)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect()
    })
}

/// The bytes of the block `origin` sends towards `to` in round `round`, `len` of them:
/// a different cut of the noise for each.
fn block_bytes(origin: usize, to: Neighbour, round: u64, len: usize) -> &'static [u8] {
    let key = ((origin as u64) << 40) ^ (round << 1) ^ u64::from(to == Neighbour::Left);
    let start = (key.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 48) as usize;
    &noise()[start..start + len]
}

/// Each round, every worker sends a block of each size to both neighbours, then receives
/// both and checks every byte. Returns the rounds it checked.
#[derive(Clone)]
struct Exchange {
    sizes: Vec<usize>,
}

impl Stage for Exchange {
    type Output = usize;

    fn work(self, ring: &mut Ring) -> Result<usize, StageError> {
        let me = ring.rank();
        let (left, right) = (
            ring.neighbour(Neighbour::Left),
            ring.neighbour(Neighbour::Right),
        );
        for (round, &len) in self.sizes.iter().enumerate() {
            let round = round as u64;
            ring.set_step(round);
            ring.send_block(
                Neighbour::Right,
                block_bytes(me, Neighbour::Right, round, len),
            )?;
            ring.send_block(
                Neighbour::Left,
                block_bytes(me, Neighbour::Left, round, len),
            )?;
            // A block sent to the right arrives from the left.
            let from_left = block_bytes(left, Neighbour::Right, round, len);
            let from_right = block_bytes(right, Neighbour::Left, round, len);
            let same = ring.recv_block(Neighbour::Left, |got: &[u8]| got == from_left)?;
            if !same {
                return Err(
                    format!("round {round}: {len} bytes from the left arrived wrong").into(),
                );
            }
            let same = ring.recv_block(Neighbour::Right, |got: &[u8]| got == from_right)?;
            if !same {
                return Err(
                    format!("round {round}: {len} bytes from the right arrived wrong").into(),
                );
            }
        }
        Ok(self.sizes.len())
    }
}

fn exchange(transport: Transport, workers: usize, sizes: Vec<usize>) -> RunStats {
    let rounds = sizes.len();
    noise();
    let (outputs, stats) = Launcher::new()
        .workers(workers)
        .transport(transport)
        .launch_with_stats(Exchange { sizes }, &mut NoReports)
        .unwrap_or_else(|e| panic!("{transport:?} on {workers} workers: {e}"));
    assert_eq!(outputs, vec![rounds; workers]);
    stats
}

/// A ring of one sends to itself: its block to the right comes back from the left.
fn blocks_of_every_size_go_both_ways() {
    let sizes = vec![0, 1, 16, 8000, 1_600_000, LARGEST_BLOCK];
    for transport in TRANSPORTS {
        for workers in [1, 2, 3] {
            exchange(transport, workers, sizes.clone());
        }
    }
}

/// Sizes change from round to round, so buffers are rewritten in place or made anew.
fn blocks_of_changing_sizes_arrive_whole_round_after_round() {
    let menu = [0, 3, 8, 4096, 4099, 100_000, 1_000_000];
    let sizes: Vec<usize> = (0..150u64)
        .map(|round| menu[((round * 2_654_435_761) >> 7) as usize % menu.len()])
        .collect();
    for transport in TRANSPORTS {
        for workers in [2, 3] {
            exchange(transport, workers, sizes.clone());
        }
    }
}

/// The halo exchange of a stencil code: every rank sends to both neighbours, then receives
/// from both, every round. One hop deep per round.
fn a_halo_exchange_of_blocks_runs_a_thousand_rounds() {
    let sizes = vec![4096; 1000];
    for transport in TRANSPORTS {
        for workers in [1, 2, 3] {
            let stats = exchange(transport, workers, sizes.clone());
            assert_eq!(
                (stats.depth, stats.steps),
                (Some(1.0), 1000),
                "{transport:?}"
            );
        }
    }
}

/// Blocks and messages in any order on one link, each taken by its own kind of receive;
/// a receive of the other kind is a protocol error.
#[derive(Clone)]
struct Interleaved;

impl Stage for Interleaved {
    type Output = ();

    fn work(self, ring: &mut Ring) -> Result<(), StageError> {
        for round in 0..50u64 {
            for i in 0..4 {
                if (round >> i) & 1 == 1 {
                    ring.send(Neighbour::Right, &(round * 10 + i))?;
                } else {
                    ring.send_block(Neighbour::Right, &[round * 10 + i; 300])?;
                }
            }
            for i in 0..4 {
                let want = round * 10 + i;
                if (round >> i) & 1 == 1 {
                    assert_eq!(ring.recv::<u64>(Neighbour::Left)?, want);
                } else {
                    let ok = ring.recv_block(Neighbour::Left, |b: &[u64]| b == [want; 300])?;
                    assert!(ok, "round {round}, block {i}");
                }
            }
        }
        ring.send(Neighbour::Right, &1u64)?;
        match ring.recv_block(Neighbour::Left, |_: &[u64]| ()) {
            Err(RingError::Protocol { expected, got, .. }) => {
                assert_eq!(
                    (expected, got),
                    ("a block sent with send_block", "a message")
                );
            }
            other => panic!("a message met by recv_block: {other:?}"),
        }
        ring.send_block(Neighbour::Right, &[1u64])?;
        match ring.recv::<u64>(Neighbour::Left) {
            Err(RingError::Protocol { expected, got, .. }) => {
                assert_eq!(
                    (expected, got),
                    ("a message", "a block sent with send_block")
                );
            }
            other => panic!("a block met by recv: {other:?}"),
        }
        Ok(())
    }
}

fn blocks_and_messages_interleave_on_a_link() {
    for transport in TRANSPORTS {
        for workers in [1, 2, 3] {
            Launcher::new()
                .workers(workers)
                .transport(transport)
                .launch(Interleaved)
                .unwrap_or_else(|e| panic!("{transport:?} on {workers}: {e}"));
        }
    }
}

/// Rank 0 sends three blocks before rank 1 reads any, and tells it so on the other link.
/// Were a buffer rewritten before its block was read, the first block would read as the
/// third. Then rank 0 sends more once rank 1 has read them all, which may reuse buffers,
/// and again three before a read. On a ring of one, rank 0 plays both parts.
#[derive(Clone)]
struct Unread;

const UNREAD_WORDS: usize = 50_000;

impl Stage for Unread {
    type Output = u64;

    fn work(self, ring: &mut Ring) -> Result<u64, StageError> {
        let block = |n: u64| vec![n; UNREAD_WORDS];
        let (sender, receiver) = (ring.rank() == 0, ring.rank() == 1 || ring.size() == 1);
        let mut checked = 0;
        for burst in 0..4u64 {
            let first = burst * 3;
            if sender {
                for n in first..first + 3 {
                    ring.send_block(Neighbour::Right, &block(n))?;
                }
                ring.send(Neighbour::Left, &first)?;
            }
            if receiver {
                assert_eq!(ring.recv::<u64>(Neighbour::Right)?, first);
                for n in first..first + 3 {
                    let ok =
                        ring.recv_block(Neighbour::Left, |got: &[u64]| got == &block(n)[..])?;
                    if !ok {
                        return Err(format!("block {n} was overwritten before it was read").into());
                    }
                    checked += 1;
                }
                ring.send(Neighbour::Left, &first)?;
            }
            if sender {
                assert_eq!(ring.recv::<u64>(Neighbour::Right)?, first);
            }
        }
        Ok(checked)
    }
}

fn a_buffer_is_not_rewritten_before_its_block_is_read() {
    for transport in TRANSPORTS {
        for workers in [1, 2] {
            let outputs = Launcher::new()
                .workers(workers)
                .transport(transport)
                .launch(Unread)
                .unwrap_or_else(|e| panic!("{transport:?} on {workers}: {e}"));
            assert_eq!(outputs[workers - 1], 12, "{transport:?}");
        }
    }
}

/// Rank 0 ends at once. Rank 1's blocks to it go nowhere, and its receive from it ends
/// with `PeerGone` rather than waiting forever.
#[derive(Clone)]
struct Deserted;

impl Stage for Deserted {
    type Output = String;

    fn work(self, ring: &mut Ring) -> Result<String, StageError> {
        if ring.rank() == 0 {
            return Ok("left".to_owned());
        }
        for _ in 0..10 {
            for side in [Neighbour::Left, Neighbour::Right] {
                match ring.send_block(side, &[7u64; 1000]) {
                    Ok(()) | Err(RingError::PeerGone { peer: 0 }) => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
        match ring.recv_block(Neighbour::Left, |_: &[u64]| ()) {
            Err(e @ RingError::PeerGone { peer: 0 }) => Ok(e.to_string()),
            other => Err(format!("expected PeerGone, got {other:?}").into()),
        }
    }
}

fn a_block_receive_from_a_peer_that_ended_is_peer_gone() {
    for transport in TRANSPORTS {
        let outputs = Launcher::new()
            .workers(2)
            .transport(transport)
            .launch(Deserted)
            .unwrap_or_else(|e| panic!("{transport:?}: {e}"));
        assert_eq!(outputs[1], "rank 0 is gone (its end of the channel closed)");
    }
}

// ---------------------------------------------------------------------------------------
// Bulk arrays in outputs and reports.

fn state_value(rank: usize, i: usize) -> f64 {
    rank as f64 * 1e7 + i as f64 * 0.5
}

/// Each worker returns 20 MB of state, and reports a small bulk array every step.
#[derive(Clone)]
struct BigState {
    words: usize,
}

/// Checks every bulk report and answers with the sum of a round's.
struct CheckReports {
    gather: Gather<u64>,
}

impl Stage for BigState {
    type Output = (usize, Bulk<f64>);

    fn work(self, ring: &mut Ring) -> Result<Self::Output, StageError> {
        let rank = ring.rank();
        for step in 0..3u64 {
            ring.set_step(step);
            let report: Vec<u32> = (0..1000).map(|i| i * (rank as u32 + 1)).collect();
            let total: u64 = ring.ask(&(step, ring.bulk(&report)?))?;
            let want: u64 = (1..=ring.size() as u64).map(|k| 999 * 1000 / 2 * k).sum();
            assert_eq!(total, want, "step {step}");
        }
        let state: Vec<f64> = (0..self.words).map(|i| state_value(rank, i)).collect();
        Ok((rank, ring.bulk(&state)?))
    }
}

impl Handler for CheckReports {
    type Report = (u64, Bulk<u32>);
    type Answer = u64;

    fn on_report(
        &mut self,
        from: usize,
        (_, report): (u64, Bulk<u32>),
        coordinator: &mut Coordinator<'_, u64>,
    ) -> Result<(), StageError> {
        let want: Vec<u32> = (0..1000).map(|i| i * (from as u32 + 1)).collect();
        if report[..] != want[..] {
            return Err(format!("the bulk report of rank {from} arrived wrong").into());
        }
        let sum = report.iter().map(|&v| u64::from(v)).sum();
        if let Some(sums) = self.gather.push(from, sum) {
            coordinator.broadcast(sums.iter().sum())?;
        }
        Ok(())
    }
}

fn workers_return_twenty_megabytes_of_state_in_bulk() {
    let words = 20_000_000 / 8;
    for transport in TRANSPORTS {
        let workers = 3;
        let mut check = CheckReports {
            gather: Gather::new(workers),
        };
        let outputs = Launcher::new()
            .workers(workers)
            .transport(transport)
            .launch_with(BigState { words }, &mut check)
            .unwrap_or_else(|e| panic!("{transport:?}: {e}"));
        for (rank, (from, state)) in outputs.iter().enumerate() {
            assert_eq!(*from, rank);
            assert_eq!(state.len(), words, "{transport:?}");
            let wrong = state
                .iter()
                .enumerate()
                .filter(|&(i, &x)| x != state_value(rank, i))
                .count();
            assert_eq!(wrong, 0, "{transport:?}: rank {rank}");
        }
    }
}

/// Rank 0 tells the coordinator its pid, then lends its output and waits to be released.
#[derive(Clone)]
struct LendAndWait;

impl Stage for LendAndWait {
    type Output = Bulk<f64>;

    fn work(self, ring: &mut Ring) -> Result<Self::Output, StageError> {
        ring.set_step(4);
        if ring.rank() == 0 {
            ring.report(&std::process::id())?;
        }
        Ok(ring.bulk_from_vec(vec![ring.rank() as f64; 1 << 20])?)
    }
}

/// Kills the worker that reported, once it sleeps waiting for its release, and waits for
/// it to die before the coordinator reads on.
struct KillTheLender;

impl Handler for KillTheLender {
    type Report = u32;
    type Answer = ();

    fn on_report(
        &mut self,
        _from: usize,
        pid: u32,
        _coordinator: &mut Coordinator<'_, ()>,
    ) -> Result<(), StageError> {
        // The worker has sent its last word once it sleeps: nothing before it blocks.
        kill_once_asleep(pid, "its release")
    }
}

/// Kills worker `pid` with SIGKILL once it sleeps, waiting for `what`, and waits for it to
/// die; the coordinator reaps it later.
fn kill_once_asleep(pid: u32, what: &str) -> Result<(), StageError> {
    use nix::sys::wait::{Id, WaitPidFlag, waitid};
    let pid = nix::unistd::Pid::from_raw(pid as i32);
    let deadline = Instant::now() + Duration::from_secs(10);
    while process_state(pid) != Some('S') {
        if Instant::now() > deadline {
            return Err(format!("the worker never waited for {what}").into());
        }
        std::thread::yield_now();
    }
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL)?;
    // Dead, but left for the coordinator to reap.
    waitid(Id::Pid(pid), WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT)?;
    Ok(())
}

/// The state letter of process `pid`, from `/proc`.
fn process_state(pid: nix::unistd::Pid) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The name, in parentheses, may hold spaces: the state follows the last parenthesis.
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}

/// A worker killed after it lent its output, before the coordinator read it, is named as
/// killed, not as a worker that sent a message the coordinator could not read.
fn a_worker_killed_while_its_output_is_lent_is_named_as_killed() {
    for round in 0..5 {
        let err = Launcher::new()
            .workers(2)
            .launch_with(LendAndWait, &mut KillTheLender)
            .expect_err("the run must fail");
        let LaunchError::Worker(failure) = &err else {
            panic!("round {round}: expected a worker failure, got {err}");
        };
        assert_eq!(failure.rank, 0, "{err}");
        assert_eq!(failure.cause, Cause::Signaled("SIGKILL".into()), "{err}");
        assert_eq!(failure.step, Some(4), "{err}");
        assert_no_children();
    }
}

/// Reads every other run of ten elements of each worker's loan, and answers once it has
/// read them all.
struct Evens {
    read: Vec<Vec<u64>>,
    transport: Transport,
}

impl Handler for Evens {
    type Report = Ticket<u64>;
    type Answer = ();

    fn on_report(
        &mut self,
        from: usize,
        ticket: Ticket<u64>,
        coordinator: &mut Coordinator<'_, ()>,
    ) -> Result<(), StageError> {
        // Between processes the ticket names the worker's memory: the array is not sent.
        let named = format!("{ticket:?}").contains("in process");
        assert_eq!(named, self.transport == Transport::Processes, "{ticket:?}");
        let ranges: Vec<_> = (0..ticket.len()).step_by(20).map(|s| s..s + 10).collect();
        let mut into = vec![0; ranges.len() * 10];
        ticket.read(&ranges, &mut into)?;
        // Out of bounds, and more than the room given: refused.
        let past = ticket.read(&[0..1, ticket.len() - 5..ticket.len() + 5], &mut into);
        assert!(matches!(past, Err(RingError::Loan(_))), "{past:?}");
        let more = ticket.read(&[0..1, 1..ticket.len()], &mut into[..10]);
        assert!(matches!(more, Err(RingError::Loan(_))), "{more:?}");
        self.read[from] = into;
        if self.read.iter().all(|r| !r.is_empty()) {
            coordinator.broadcast(())?;
        }
        Ok(())
    }
}

/// A worker's loan is read in place, in the ranges the coordinator asks for, whatever the
/// transport; over a thousand ranges take more than one system call between processes.
fn the_coordinator_reads_the_ranges_of_a_loan_it_asks_for_on_every_transport() {
    let stage = ringleader::stage_fn(|ring: &mut Ring| {
        let base = ring.rank() as u64 * 1_000_000;
        let data: Vec<u64> = (0..40_000).map(|i| base + i).collect();
        let (ticket, loan) = ring.loan(data)?;
        ring.report(&ticket)?;
        let () = ring.recv_answer()?;
        drop(loan);
        Ok(())
    });
    for transport in TRANSPORTS {
        let mut evens = Evens {
            read: vec![Vec::new(); 3],
            transport,
        };
        Launcher::new()
            .workers(3)
            .transport(transport)
            .launch_with(stage.clone(), &mut evens)
            .unwrap();
        for (rank, got) in evens.read.iter().enumerate() {
            let base = rank as u64 * 1_000_000;
            let want: Vec<u64> = (0..40_000u64)
                .step_by(20)
                .flat_map(|s| base + s..base + s + 10)
                .collect();
            assert_eq!(got, &want, "{transport:?}, rank {rank}");
        }
        assert_no_children();
    }
}

/// Kills the worker that lent the array in its report, once it waits for the answer, and
/// then reads the array: the read fails, and the handler says so.
struct KillTheLoaner;

impl Handler for KillTheLoaner {
    type Report = (u32, Ticket<u64>);
    type Answer = ();

    fn on_report(
        &mut self,
        _from: usize,
        (pid, ticket): (u32, Ticket<u64>),
        _coordinator: &mut Coordinator<'_, ()>,
    ) -> Result<(), StageError> {
        // It polls for a while, then sleeps for the answer.
        kill_once_asleep(pid, "its answer")?;
        let mut into = vec![0; 16];
        match ticket.read(&[0..8, 8..16], &mut into) {
            Err(e @ RingError::LenderGone(_)) => Err(e.into()),
            other => Err(format!("the read of a dead worker's loan gave {other:?}").into()),
        }
    }
}

/// A worker killed while the coordinator reads its loan is named as killed: the failed
/// read only echoes it.
fn a_worker_killed_while_the_coordinator_reads_its_loan_is_named_as_killed() {
    let stage = ringleader::stage_fn(|ring: &mut Ring| {
        ring.set_step(3);
        if ring.rank() == 0 {
            let (ticket, loan) = ring.loan(vec![7u64; 1 << 16])?;
            ring.report(&(std::process::id(), ticket))?;
            let () = ring.recv_answer()?;
            drop(loan);
        }
        Ok(())
    });
    let err = Launcher::new()
        .workers(2)
        .launch_with(stage, &mut KillTheLoaner)
        .expect_err("the run must fail");
    let LaunchError::Worker(failure) = &err else {
        panic!("expected a worker failure, got {err}");
    };
    assert_eq!(failure.rank, 0, "{err}");
    assert_eq!(failure.cause, Cause::Signaled("SIGKILL".into()), "{err}");
    assert_eq!(failure.step, Some(3), "{err}");
    assert_no_children();
}

// ---------------------------------------------------------------------------------------
// The closure form, collectives, and handlers that borrow.

/// `Launcher::run` forks by default: every worker has its own pid, none of them ours.
fn a_closure_runs_on_forked_processes_by_default() {
    let pids = Launcher::new()
        .workers(4)
        .run(|ring| {
            let forked = ring.transport() == Transport::Processes;
            Ok((ring.rank(), std::process::id(), forked))
        })
        .expect("the closure");
    let me = std::process::id();
    for (rank, &(got, pid, forked)) in pids.iter().enumerate() {
        assert_eq!((got, forked), (rank, true));
        assert_ne!(pid, me, "rank {rank} ran in the coordinator");
    }
    let mut distinct: Vec<u32> = pids.iter().map(|p| p.1).collect();
    distinct.sort_unstable();
    distinct.dedup();
    assert_eq!(distinct.len(), 4);
}

/// This process's resident memory, in bytes.
fn resident_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("/proc/self/statm");
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    // SAFETY: sysconf has no preconditions.
    pages * unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as u64
}

/// Words in a mapping of their own, as the command's allocator (`HugePages`) makes every
/// large block: what a freed block gives back to the kernel does not depend on what the
/// system allocator's heap holds after earlier tests.
struct Mapped {
    words: *mut u64,
    len: usize,
}

// SAFETY: `Mapped` owns its words, which nothing else points to; reads go through `&self`.
unsafe impl Send for Mapped {}
// SAFETY: as above.
unsafe impl Sync for Mapped {}

impl Mapped {
    fn layout(len: usize) -> std::alloc::Layout {
        std::alloc::Layout::array::<u64>(len).expect("a layout")
    }

    /// The words `0..len`.
    fn counting(len: usize) -> Mapped {
        use std::alloc::GlobalAlloc;
        // SAFETY: the layout is not zero-sized; the block is checked before use.
        let words = unsafe { ringleader::HugePages.alloc(Self::layout(len)) }.cast::<u64>();
        assert!(!words.is_null());
        for i in 0..len {
            // SAFETY: `i < len`, inside the block, which is aligned for u64.
            unsafe { words.add(i).write(i as u64) };
        }
        Mapped { words, len }
    }

    fn words(&self) -> &[u64] {
        // SAFETY: `len` words, all written by `counting`, live until `drop`.
        unsafe { std::slice::from_raw_parts(self.words, self.len) }
    }
}

impl Drop for Mapped {
    fn drop(&mut self) {
        use std::alloc::GlobalAlloc;
        // SAFETY: the block came from `HugePages` with this layout, and is freed once.
        unsafe { ringleader::HugePages.dealloc(self.words.cast(), Self::layout(self.len)) };
    }
}

/// A forked worker that lets go of an `Inherited` start gives its pages back, and reads
/// nothing of it after; between threads the start is the coordinator's, and stays. Either
/// way the coordinator still has it whole.
fn a_forked_worker_that_lets_go_of_its_start_gives_its_pages_back() {
    const LEN: usize = 8 << 20; // 64 MB of words
    for transport in TRANSPORTS {
        let start = Inherited::new(Mapped::counting(LEN));
        let outputs = Launcher::new()
            .workers(2)
            .transport(transport)
            .run({
                let start = start.clone();
                move |ring| {
                    let sum = start.with(|start| start.words().iter().sum::<u64>());
                    let before = resident_bytes();
                    start.let_go(ring);
                    let given_back = before.saturating_sub(resident_bytes());
                    Ok((sum, start.with(|_| ()).is_some(), given_back))
                }
            })
            .expect("the run");
        let want = (LEN as u64 - 1) * LEN as u64 / 2;
        for (sum, still_there, given_back) in outputs {
            assert_eq!(sum, Some(want), "{transport:?}");
            match transport {
                Transport::Processes => {
                    assert!(!still_there, "{transport:?}");
                    assert!(given_back >= LEN as u64 * 8 * 3 / 4, "{given_back} bytes");
                }
                _ => assert!(still_there, "{transport:?}"),
            }
        }
        let kept = start.take().expect("the coordinator's start");
        assert_eq!(kept.words().iter().sum::<u64>(), want, "{transport:?}");
        assert!(start.with(|_| ()).is_none());
    }
}

/// Values whose sum depends on the order it is taken in: a tree or any other order gives
/// other bits than the rank-order fold.
fn order_sensitive(rank: usize) -> f64 {
    [1e16, 1.0, 1.0, -1e16, 0.5, 0.25, 3.0, -0.125][rank % 8]
}

/// What every collective returns on one rank, in bits where they are floats.
type Results = (u64, Vec<usize>, Option<Vec<String>>, u64, String, Vec<u64>);

fn collectives(ring: &mut Ring) -> Result<Results, StageError> {
    let (rank, size) = (ring.rank(), ring.size());
    ring.barrier()?;
    let sum = ring.all_reduce(order_sensitive(rank), |a, b| a + b)?;
    let all = ring.all_gather(rank * 10)?;
    let gathered = ring.gather(0, format!("r{rank}"))?;
    let root = size - 1;
    let sent = (rank == root).then(|| vec![0.5f64, -1.25, f64::MIN_POSITIVE]);
    let got = ring.broadcast(root, sent)?;
    let work = (rank == size / 2).then(|| (0..size).map(|r| format!("job {r}")).collect());
    let job = ring.scatter(size / 2, work)?;
    ring.barrier()?;
    Ok((
        sum.to_bits(),
        all,
        gathered,
        got.iter().fold(0, |h, x| h ^ x.to_bits()),
        job,
        vec![ring.all_reduce(rank as u64, u64::max)?],
    ))
}

/// Every collective on every transport and ring size, against the same computation done
/// here in rank order: the same bits on every rank and transport.
fn collectives_give_every_rank_the_same_bits_on_every_transport() {
    for workers in [1, 2, 3, 5] {
        let fold = (1..workers).fold(order_sensitive(0), |acc, r| acc + order_sensitive(r));
        let mut seen = Vec::new();
        for transport in TRANSPORTS {
            let results = Launcher::new()
                .workers(workers)
                .transport(transport)
                .run(collectives)
                .unwrap_or_else(|e| panic!("{transport:?} on {workers}: {e}"));
            for (rank, (sum, all, gathered, broadcast, job, max)) in results.iter().enumerate() {
                let what = format!("{transport:?}, rank {rank} of {workers}");
                assert_eq!(*sum, fold.to_bits(), "{what}");
                assert_eq!(
                    all,
                    &(0..workers).map(|r| r * 10).collect::<Vec<_>>(),
                    "{what}"
                );
                let names = (0..workers).map(|r| format!("r{r}")).collect();
                assert_eq!(gathered, &(rank == 0).then_some(names), "{what}");
                let want = [0.5f64, -1.25, f64::MIN_POSITIVE]
                    .iter()
                    .fold(0, |h, x| h ^ x.to_bits());
                assert_eq!(*broadcast, want, "{what}");
                assert_eq!(job, &format!("job {rank}"), "{what}");
                assert_eq!(max, &[workers as u64 - 1], "{what}");
            }
            seen.push(results);
        }
        assert_eq!(
            seen[0], seen[1],
            "{workers} workers: the transports disagree"
        );
    }
}

/// A worker in a collective that meets a plain message learns so at once, and the run
/// ends with that error instead of a hang.
fn a_collective_met_by_a_message_is_a_protocol_error() {
    for transport in TRANSPORTS {
        let err = Launcher::new()
            .workers(2)
            .transport(transport)
            .run(|ring| {
                if ring.rank() == 0 {
                    ring.send(Neighbour::Right, &7u32)?;
                    // Rank 1 fails and the ring breaks: this receive ends too.
                    let _: u32 = ring.recv(Neighbour::Right)?;
                } else {
                    ring.all_gather(1u8)?;
                }
                Ok(())
            })
            .expect_err("a protocol error");
        let LaunchError::Worker(failure) = &err else {
            panic!("expected a worker failure, got {err}");
        };
        assert_eq!(failure.rank, 1, "{transport:?}: {err}");
        let message = err.to_string();
        assert!(message.contains("a collective's value"), "{message}");
        assert!(message.contains("a message"), "{message}");
    }
}

/// A handler is borrowed for the run: it writes into the caller's variables, and the
/// caller reads them afterwards, with no shared handles.
fn a_handler_borrows_from_the_caller() {
    struct Log<'a> {
        lines: &'a mut Vec<String>,
    }
    impl Handler for Log<'_> {
        type Report = String;
        type Answer = usize;
        fn on_report(
            &mut self,
            from: usize,
            line: String,
            coordinator: &mut Coordinator<'_, usize>,
        ) -> Result<(), StageError> {
            self.lines.push(line);
            coordinator.send(from, self.lines.len())?;
            Ok(())
        }
    }
    for transport in TRANSPORTS {
        let mut lines = Vec::new();
        let stage = ringleader::stage_fn(|ring: &mut Ring| {
            let seen: usize = ring.ask(&format!("hello from {}", ring.rank()))?;
            Ok(seen)
        });
        let seen = Launcher::new()
            .workers(3)
            .transport(transport)
            .launch_with(stage, &mut Log { lines: &mut lines })
            .expect("the run");
        lines.sort();
        assert_eq!(lines, ["hello from 0", "hello from 1", "hello from 2"]);
        let mut seen = seen;
        seen.sort_unstable();
        assert_eq!(seen, [1, 2, 3], "{transport:?}");
    }
}

fn main() -> std::process::ExitCode {
    forking::run(tests![
        large_blocks_do_not_deadlock_the_ring,
        sixteen_receive_buffers_freed_together_leave_the_heap_in_place,
        messages_go_both_ways_and_the_coordinator_answers,
        the_coordinator_supervises_on_sched_batch_and_leaves_it_after,
        a_failing_worker_ends_the_run_with_its_rank_pid_and_cause,
        zero_workers_is_an_error,
        large_bulk_arrays_in_reports_arrive_intact_however_many_are_in_flight,
        a_launch_that_runs_out_of_descriptors_part_way_leaves_no_worker,
        the_coordinator_can_stop_a_run,
        workers_that_all_receive_first_are_reported_as_a_deadlock,
        values_of_any_size_cross_when_every_worker_sends_first,
        sending_ahead_of_what_a_link_holds_is_named_a_deadlock,
        a_worker_far_ahead_of_its_answers_does_not_stall_the_coordinator,
        a_panicking_handler_leaves_no_worker_behind,
        worker_threads_stop_with_their_run_even_when_nothing_waits,
        the_programs_a_worker_starts_end_with_its_run,
        waiting_on_a_coordinator_that_never_answers_is_a_deadlock,
        a_cycle_is_named_while_other_ranks_go_on_working,
        ranks_in_different_collectives_meet_a_protocol_error,
        an_answer_to_a_rank_the_ring_lacks_names_the_mistake,
        a_worker_far_ahead_of_the_coordinator_waits_for_it_to_take_its_reports,
        a_step_that_takes_too_long_names_the_rank_that_did_not_finish_it,
        a_rank_stuck_before_its_first_step_is_the_one_the_timeout_names,
        a_stop_signal_stops_the_run_in_order,
        a_worker_that_ignores_sigterm_is_killed_after_the_grace_period,
        the_depth_of_a_step_is_its_longest_chain_of_messages,
        a_receive_keeps_the_larger_hop_count,
        a_run_that_announces_no_step_has_no_depth,
        blocks_of_every_size_go_both_ways,
        blocks_of_changing_sizes_arrive_whole_round_after_round,
        a_halo_exchange_of_blocks_runs_a_thousand_rounds,
        blocks_and_messages_interleave_on_a_link,
        a_buffer_is_not_rewritten_before_its_block_is_read,
        a_block_receive_from_a_peer_that_ended_is_peer_gone,
        workers_return_twenty_megabytes_of_state_in_bulk,
        a_worker_killed_while_its_output_is_lent_is_named_as_killed,
        a_closure_runs_on_forked_processes_by_default,
        the_coordinator_reads_the_ranges_of_a_loan_it_asks_for_on_every_transport,
        a_worker_killed_while_the_coordinator_reads_its_loan_is_named_as_killed,
        a_forked_worker_that_lets_go_of_its_start_gives_its_pages_back,
        collectives_give_every_rank_the_same_bits_on_every_transport,
        a_collective_met_by_a_message_is_a_protocol_error,
        a_handler_borrows_from_the_caller,
        // Last: it starts a thread, and forking needs a single-threaded process.
        launch_refuses_to_fork_a_multithreaded_process,
    ])
}
