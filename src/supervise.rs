//! The coordinator's side of a run: answer reports, notice every worker's end, and on the
//! first failure stop the rest, reap them all, and say who failed and why.

use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::Pid;

use crate::deadlock::Wait;
use crate::error::{Cause, LaunchError, WorkerFailure};
use crate::message::{Down, Up};
use crate::outbox::Outbox;
use crate::progress::Board;
use crate::stage::{Coordinator, Handler};
use crate::transport::{Event, Inbox, Tx};
use crate::transport::{Payload, decode};

/// How long stopped workers get to exit after SIGTERM before SIGKILL.
const GRACE: Duration = Duration::from_millis(500);

/// How long SIGKILLed processes get before the coordinator stops listening and reaps them.
const KILL_WAIT: Duration = Duration::from_secs(2);

/// The coordinator's thread runs as `SCHED_BATCH` while it supervises, and as it was after.
///
/// A report wakes the coordinator. When every core is running a worker, as on a machine
/// with a core per worker, a thread woken with the usual policy takes a core from a
/// worker at once, in the middle of its step, and the worker's neighbours then wait for
/// it. The coordinator's part of a step is short and rarely urgent: each worker already
/// waits for its answer, and a worker that waits lets the coordinator have its core.
/// `SCHED_BATCH` is the usual policy but for that: its wakeups never take a core from a
/// running thread (the next tick or yield gives it one), and it keeps its fair share of
/// time. On the 2-core machine of `docs/PERFORMANCE.md`, a worker's report took 40 µs of
/// a 112 µs step at 2000 particles on two processes, most of it lost to the coordinator,
/// against 9 µs for the other worker's.
///
/// Only a thread on the usual policy is changed: a realtime or idle policy the program
/// chose stays as it is. Going back from `SCHED_BATCH` needs no privilege.
struct Batch {
    /// Whether this thread was moved from the usual policy, and goes back to it.
    changed: bool,
}

impl Batch {
    fn begin() -> Batch {
        // SAFETY: asks for the calling thread's policy; nothing is written.
        if unsafe { libc::sched_getscheduler(0) } != libc::SCHED_OTHER {
            return Batch { changed: false };
        }
        Batch {
            changed: set_policy(libc::SCHED_BATCH),
        }
    }
}

impl Drop for Batch {
    fn drop(&mut self) {
        if self.changed {
            set_policy(libc::SCHED_OTHER);
        }
    }
}

/// Moves the calling thread to `policy`, one that takes priority 0; whether it worked.
fn set_policy(policy: libc::c_int) -> bool {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: changes only the calling thread's policy (pid 0 is the calling thread on
    // Linux); `param` holds the priority 0 that `SCHED_BATCH` and `SCHED_OTHER` take.
    unsafe { libc::sched_setscheduler(0, policy, &param) == 0 }
}

/// The running workers, processes or threads.
#[derive(Debug)]
pub(crate) enum Workers {
    Processes(Vec<Pid>),
    Threads(Vec<Option<JoinHandle<i32>>>),
    /// The ranks of an MPI job, by their pids. The coordinator can neither signal nor reap
    /// them: a run that must end ends the whole job (`MPI_Abort`), at once.
    #[cfg(feature = "mpi")]
    Ranks(Vec<u32>),
}

/// How a worker ended, as the OS tells it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Exit {
    Code(i32),
    Signal(String),
    /// A thread that is still running (abandoned after the grace period) or a status we
    /// could not read.
    Unknown,
}

impl Workers {
    fn pid(&self, rank: usize) -> Option<u32> {
        match self {
            Workers::Processes(pids) => pids.get(rank).map(|pid| pid.as_raw().unsigned_abs()),
            Workers::Threads(_) => None,
            #[cfg(feature = "mpi")]
            Workers::Ranks(pids) => pids.get(rank).copied(),
        }
    }

    /// Waits for one worker that has ended (its channel closed) and reads its status.
    fn reap(&mut self, rank: usize) -> Exit {
        match self {
            Workers::Processes(pids) => {
                let Some(&pid) = pids.get(rank) else {
                    return Exit::Unknown;
                };
                loop {
                    match waitpid(pid, None) {
                        Ok(WaitStatus::Exited(_, code)) => return Exit::Code(code),
                        Ok(WaitStatus::Signaled(_, signal, _)) => {
                            return Exit::Signal(signal.as_str().to_owned());
                        }
                        Ok(_) | Err(Errno::EINTR) => continue,
                        Err(_) => return Exit::Unknown,
                    }
                }
            }
            Workers::Threads(handles) => match handles.get_mut(rank).and_then(Option::take) {
                Some(handle) => match handle.join() {
                    Ok(code) => Exit::Code(code),
                    Err(_) => Exit::Unknown,
                },
                None => Exit::Unknown,
            },
            #[cfg(feature = "mpi")]
            Workers::Ranks(_) => Exit::Unknown,
        }
    }

    /// Sends `signal` to every process not yet reaped. Threads cannot be signalled; they
    /// stop when their ring breaks.
    pub(crate) fn kill_all(&self, signal: Signal) {
        if let Workers::Processes(pids) = self {
            for &pid in pids {
                // The signals sent here end a worker: what it started ends first, while the
                // worker still holds it.
                crate::descendants::kill_below(pid);
                // ESRCH: it already exited; it is reaped below either way.
                let _ = kill(pid, signal);
            }
        }
    }

    fn kill(&self, rank: usize, signal: Signal) {
        if let Workers::Processes(pids) = self
            && let Some(&pid) = pids.get(rank)
        {
            crate::descendants::kill_below(pid);
            let _ = kill(pid, signal);
        }
    }

    /// Reaps every worker, blocking. Only for workers already told to stop.
    pub(crate) fn reap_all(&mut self) {
        let count = match self {
            Workers::Processes(pids) => pids.len(),
            Workers::Threads(handles) => handles.len(),
            #[cfg(feature = "mpi")]
            Workers::Ranks(_) => 0,
        };
        for rank in 0..count {
            self.reap(rank);
        }
    }
}

/// What bounds a run besides failures: the step timeout, and how a stop signal ends it.
#[derive(Debug, Clone, Default)]
pub(crate) struct Limits {
    pub(crate) step_timeout: Option<Duration>,
    pub(crate) graceful: bool,
    /// The fault to inject, for tests.
    pub(crate) fault: Option<crate::fault::Fault>,
}

/// How often the coordinator looks at the progress board while nothing arrives.
const TICK: Duration = Duration::from_millis(100);

/// How often the coordinator looks whether an answer waiting in its outbox has room, while
/// one does (see `outbox`).
const OUTBOX_POLL: Duration = Duration::from_millis(1);

/// The longest the coordinator may go between two looks at the board with the time still
/// counting towards a step timeout. It looks every [`TICK`] while it runs, so a longer gap
/// means it did not run: it was stopped (SIGSTOP, or a terminal's Ctrl-Z, which stops the
/// whole job until `fg`), went without a core, or was busy with the stage's own work (a
/// large checkpoint written while the workers wait for its answer). Meanwhile the workers
/// were stopped with it, or waited for it, or went unwatched; that time counts towards no
/// step timeout, or a job stopped in the middle of a long step would be said to have timed
/// out the moment it went on. A worker that hangs meanwhile is named a whole timeout later.
const UNWATCHED: Duration = Duration::from_secs(1);

/// How long a graceful stop may take when there is no step timeout.
const GRACEFUL_LIMIT: Duration = Duration::from_secs(10);

/// Where a run stands, as the coordinator sees it.
struct Run {
    /// Each worker's output, as it arrived: decoded by the launcher, which knows its type.
    outputs: Vec<Option<Payload>>,
    ended: Vec<bool>,
    failures: Vec<WorkerFailure>,
    coordinator_error: Option<LaunchError>,
    /// Whether that error only echoes a worker that went away (an answer to a closed
    /// channel, say): then the worker's own failure is the one to report.
    coordinator_echo: bool,
    /// How many failures had been seen when the stage asked to stop; later ones are echoes
    /// of the stop itself.
    stop_requested: Option<usize>,
    /// Why the coordinator itself ended the run (deadlock, timeout, stop signal), and how
    /// many failures had been seen by then.
    verdict: Option<(usize, LaunchError)>,
    /// Reports taken from each rank, for the deadlock watch.
    handled: Vec<u64>,
    /// The coordinator's hop count: the largest any report brought it (see `stats`).
    hops: u64,
    /// Set once the run is being stopped: when SIGTERM was sent.
    stopping: Option<Instant>,
    killed: Option<Instant>,
}

impl Run {
    /// A run of `size` ranks, all still going, before any report.
    fn new(size: usize) -> Run {
        Run {
            outputs: (0..size).map(|_| None).collect(),
            ended: vec![false; size],
            failures: Vec::new(),
            coordinator_error: None,
            coordinator_echo: false,
            stop_requested: None,
            verdict: None,
            handled: vec![0; size],
            hops: 0,
            stopping: None,
            killed: None,
        }
    }

    fn failed(&self) -> bool {
        !self.failures.is_empty() || self.coordinator_error.is_some()
    }

    fn ending(&self) -> bool {
        self.failed() || self.stop_requested.is_some() || self.verdict.is_some()
    }

    fn has_failure(&self, rank: usize) -> bool {
        self.failures.iter().any(|f| f.rank == rank)
    }

    fn conclude(&mut self, verdict: LaunchError) {
        if self.verdict.is_none() {
            self.verdict = Some((self.failures.len(), verdict));
        }
    }
}

/// The coordinator's periodic look at the board: stop signals, deadlocks, slow steps.
struct Checks {
    limits: Limits,
    deadlock: crate::deadlock::Watch,
    /// Each rank's step as last seen, and since when.
    steps: Vec<(Option<u64>, Instant)>,
    /// When a graceful stop began.
    graceful_since: Option<Instant>,
    /// When the board was last read whole.
    last: Instant,
    /// When the coordinator last looked at all.
    awake: Instant,
}

impl Checks {
    fn new(limits: &Limits, size: usize) -> Checks {
        let now = Instant::now();
        Checks {
            limits: limits.clone(),
            deadlock: crate::deadlock::Watch::default(),
            steps: vec![(None, now); size],
            graceful_since: None,
            last: now,
            awake: now,
        }
    }

    /// Returns why the run must end now, if it must.
    fn look(&mut self, run: &Run, board: &Board, workers: &Workers) -> Option<LaunchError> {
        self.look_at(Instant::now(), run, board, workers)
    }

    /// [`Checks::look`] at the time `now`.
    fn look_at(
        &mut self,
        now: Instant,
        run: &Run,
        board: &Board,
        workers: &Workers,
    ) -> Option<LaunchError> {
        let unwatched = now.saturating_duration_since(self.awake);
        self.awake = now;
        if unwatched > UNWATCHED {
            // The clocks of the step timeout and of a graceful stop stood still meanwhile.
            for (_, since) in &mut self.steps {
                *since += unwatched;
            }
            if let Some(since) = &mut self.graceful_since {
                *since += unwatched;
            }
        }
        if let Some(signal) = crate::signal::stop_signal() {
            let since = *self.graceful_since.get_or_insert(now);
            let limit = self.limits.step_timeout.unwrap_or(GRACEFUL_LIMIT);
            let forced = crate::signal::stop_signal_count() > 1
                || now.saturating_duration_since(since) >= limit;
            if !self.limits.graceful || forced {
                return Some(LaunchError::Interrupted { signal });
            }
        }
        // The rest reads the whole board: not more often than every tick.
        if now.duration_since(self.last) < TICK {
            return None;
        }
        self.last = now;
        let live: Vec<bool> = run.ended.iter().map(|ended| !ended).collect();
        if let Some(waits) = self.deadlock.check(board, &live, &run.handled) {
            let waits = waits
                .into_iter()
                .map(|(rank, step, on)| Wait {
                    rank,
                    pid: workers.pid(rank),
                    step,
                    on,
                })
                .collect();
            return Some(LaunchError::Deadlock { waits });
        }
        let limit = self.limits.step_timeout?;
        let mut late = Vec::new();
        // The lowest step a rank waits in: the one a rank that has announced none holds up.
        let mut held_up: Option<u64> = None;
        for (rank, seen) in self.steps.iter_mut().enumerate() {
            if !live[rank] {
                continue;
            }
            let reading = board.read(rank);
            if reading.waiting.is_some()
                && let Some(step) = reading.step
            {
                held_up = Some(held_up.map_or(step, |held| held.min(step)));
            }
            if reading.step != seen.0 {
                *seen = (reading.step, now);
            } else if now.saturating_duration_since(seen.1) >= limit {
                // A rank that has announced no step yet (stopped while it set up, say) is
                // late too: it holds up the first step the others are on.
                let waiting = reading.waiting.is_some();
                late.push((
                    rank,
                    reading.step,
                    waiting,
                    now.saturating_duration_since(seen.1),
                ));
            }
        }
        if late.is_empty() {
            return None;
        }
        // A rank that has announced no step is on the first step, timed from the launch:
        // the lowest step another rank waits in (the one it holds up), or else none, as in
        // a stage that announces none, whose whole run the limit then bounds. A step that
        // other ranks merely pass through is not named: the late rank never reached it.
        let step = late
            .iter()
            .filter_map(|&(_, step, _, _)| step)
            .min()
            .or(held_up);
        let on_step = late
            .iter()
            .filter(|&&(_, s, _, _)| s.is_none() || s == step);
        // The ranks still working on the step are the ones to blame; those blocked waiting
        // for them are not, unless everyone waits.
        let mut ranks: Vec<usize> = on_step
            .clone()
            .filter(|&&(_, _, waiting, _)| !waiting)
            .map(|&(rank, ..)| rank)
            .collect();
        if ranks.is_empty() {
            // Everyone waits: most likely a deadlock, which says more than a timeout. Give
            // the deadlock watch time to settle first.
            let settled = limit + 2 * crate::deadlock::SETTLE;
            if on_step.clone().any(|&(.., late_by)| late_by < settled) {
                return None;
            }
            ranks = on_step.map(|&(rank, ..)| rank).collect();
        }
        Some(LaunchError::Timeout {
            step,
            after: limit,
            ranks: ranks
                .into_iter()
                .map(|rank| (rank, workers.pid(rank)))
                .collect(),
        })
    }
}

/// The run's workers while the coordinator supervises them. A panic on the coordinator (a
/// handler's bug, say) unwinds out of the launch to its caller; on its way it stops and
/// reaps every worker process, which would otherwise run on unwatched, or end as a zombie
/// nobody reaps. Worker threads cannot be stopped: cancelling the board ends their waits,
/// and a thread that never waits is abandoned, as when a run is stopped.
struct Stopper<'a> {
    workers: Workers,
    board: &'a Board,
}

impl Drop for Stopper<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.board.cancel();
            if let Workers::Processes(_) = self.workers {
                self.workers.kill_all(Signal::SIGKILL);
                self.workers.reap_all();
            }
        }
    }
}

pub(crate) fn supervise<H: Handler>(
    handler: &mut H,
    mut inbox: Inbox<Up>,
    downs: Vec<Tx<Down>>,
    workers: Workers,
    board: &Board,
    limits: &Limits,
) -> Result<Vec<Payload>, LaunchError> {
    let mut stopper = Stopper { workers, board };
    let workers = &mut stopper.workers;
    let size = downs.len();
    let mut downs = Some(downs);
    let mut run = Run::new(size);
    let mut checks = Checks::new(limits, size);
    let mut outbox = Outbox::new(size);
    // Every worker is forked or spawned by now, so none inherits the policy. Rank 0 of an
    // MPI job also relays for the other ranks, which may not wait.
    let _batch = match *workers {
        Workers::Processes(_) | Workers::Threads(_) => Some(Batch::begin()),
        #[cfg(feature = "mpi")]
        Workers::Ranks(_) => None,
    };
    while run.ended.iter().any(|ended| !ended) {
        // Ranks of an MPI job cannot be stopped one by one, and waiting for them would only
        // delay the end: a failure or a verdict ends the job now.
        #[cfg(feature = "mpi")]
        if matches!(*workers, Workers::Ranks(_)) && (run.failed() || run.verdict.is_some()) {
            board.cancel();
            break;
        }
        if run.ending() && run.stopping.is_none() {
            // Dropping the answer channels releases workers waiting on the coordinator;
            // cancelling the board releases every other wait, which is how threads stop.
            downs = None;
            board.cancel();
            for rank in (0..size).filter(|&rank| !run.ended[rank]) {
                workers.kill(rank, Signal::SIGTERM);
            }
            run.stopping = Some(Instant::now());
        }
        // Answers that had no room go out as the workers read the ones before them,
        // which nothing announces: look again soon while any waits.
        if let Some(downs) = &downs {
            outbox.flush(downs, board);
        }
        let timeout = match (run.stopping, run.killed) {
            (None, _) if outbox.waiting() => OUTBOX_POLL,
            (None, _) => TICK,
            (Some(_), Some(killed)) => KILL_WAIT.saturating_sub(killed.elapsed()),
            (Some(stopping), None) => GRACE.saturating_sub(stopping.elapsed()),
        };
        let events = match inbox.wait(Some(timeout)) {
            Ok(events) => events,
            Err(e) => {
                drop(downs.take());
                board.cancel();
                workers.kill_all(Signal::SIGKILL);
                workers.reap_all();
                return Err(LaunchError::Wait(e));
            }
        };
        for event in events {
            handle(
                handler,
                &mut run,
                workers,
                downs.as_deref(),
                &mut outbox,
                board,
                event,
            );
        }
        match (run.stopping, run.killed) {
            (None, _) => {
                if !run.ending()
                    && let Some(verdict) = checks.look(&run, board, workers)
                {
                    run.conclude(verdict);
                }
            }
            (Some(stopping), None) if stopping.elapsed() >= GRACE => {
                for rank in (0..size).filter(|&rank| !run.ended[rank]) {
                    workers.kill(rank, Signal::SIGKILL);
                }
                run.killed = Some(Instant::now());
            }
            (Some(_), Some(killed)) if killed.elapsed() >= KILL_WAIT => {
                // SIGKILL cannot be refused; reap what is left without listening further.
                // Threads that ignore a broken ring are abandoned: the process exit ends
                // them.
                if let Workers::Processes(_) = *workers {
                    for rank in (0..size).filter(|&rank| !run.ended[rank]) {
                        workers.reap(rank);
                    }
                }
                break;
            }
            _ => {}
        }
    }
    drop(downs);
    // The coordinator's side failed only because a worker had gone: the worker's own end
    // says why, and that is the error to report.
    if let Some(err) = run.coordinator_error
        && !(run.coordinator_echo && run.failures.iter().any(|f| !f.cause.is_secondary()))
    {
        return Err(err);
    }
    let mut failures = run.failures;
    let before = match (&run.verdict, run.stop_requested) {
        (Some((at, _)), Some(stop)) => Some((*at).min(stop)),
        (Some((at, _)), None) => Some(*at),
        (None, stop) => stop,
    };
    if let Some(before) = before {
        failures.truncate(before);
    }
    if let Some(failure) = first_cause(failures) {
        return Err(LaunchError::Worker(failure));
    }
    if let Some((_, verdict)) = run.verdict {
        return Err(verdict);
    }
    if run.stop_requested.is_some() {
        return Err(LaunchError::Stopped);
    }
    // A stage that stopped gracefully after a stop signal also ends here, with its
    // outputs; the caller reads `stop_signal()`.
    Ok(run.outputs.into_iter().flatten().collect())
}

fn handle<H: Handler>(
    handler: &mut H,
    run: &mut Run,
    workers: &mut Workers,
    downs: Option<&[Tx<Down>]>,
    outbox: &mut Outbox,
    board: &Board,
    event: Event<Up>,
) {
    match event {
        Event::Message(rank, Up::Report(report, hops)) => {
            run.handled[rank] += 1;
            board.count_report_taken(rank);
            run.hops = run.hops.max(hops);
            // Once the run is stopping, reports have nobody to serve.
            if let (Some(downs), false) = (downs, run.ending()) {
                let report = match decode::<H::Report>(report) {
                    Ok(report) => report,
                    Err(e) => {
                        run.failures.push(WorkerFailure {
                            rank,
                            pid: workers.pid(rank),
                            step: board.step(rank),
                            cause: Cause::Failed(format!(
                                "sent a report the coordinator could not read as a {}: {e}",
                                std::any::type_name::<H::Report>()
                            )),
                        });
                        return;
                    }
                };
                let mut stop = false;
                let mut coordinator = Coordinator {
                    downs,
                    outbox,
                    stop: &mut stop,
                    board,
                    hops: run.hops,
                    answers: std::marker::PhantomData,
                };
                if let Err(e) = handler.on_report(rank, report, &mut coordinator) {
                    let message = crate::error::chain(e.as_ref());
                    run.coordinator_echo =
                        matches!(crate::worker::classify(e.as_ref()), Cause::PeerLost(_));
                    run.coordinator_error = Some(LaunchError::Coordinator(message));
                }
                if stop {
                    run.stop_requested = Some(run.failures.len());
                }
            }
        }
        Event::Message(rank, Up::Done(output)) => {
            if run.outputs[rank].is_some() {
                run.coordinator_error = Some(LaunchError::Protocol {
                    rank,
                    what: "sent two results".to_owned(),
                });
            }
            run.outputs[rank] = Some(output);
            // The worker reads no more answers: one still waiting for room never goes.
            outbox.forget(rank);
            // A forked worker that lent its output waits to hear that it was read, which
            // it was as the message was received.
            if let (Workers::Processes(_), Some(downs)) = (&*workers, downs)
                && let Some(down) = downs.get(rank)
            {
                // A worker that lent nothing does not wait for it; it goes with the channel.
                let _ = down.send(Down::Release);
            }
        }
        Event::Message(rank, Up::Failed { step, cause }) => {
            run.failures.push(WorkerFailure {
                rank,
                pid: workers.pid(rank),
                step: step.or_else(|| board.step(rank)),
                cause,
            });
        }
        Event::Garbled(rank, what) => {
            run.failures.push(WorkerFailure {
                rank,
                pid: workers.pid(rank),
                step: board.step(rank),
                cause: Cause::Failed(format!(
                    "sent a message the coordinator could not read: {what}"
                )),
            });
        }
        Event::Closed(rank) => {
            if run.ended[rank] {
                return;
            }
            run.ended[rank] = true;
            let exit = workers.reap(rank);
            if run.has_failure(rank) {
                return;
            }
            let cause = match (&exit, run.outputs[rank].is_some()) {
                (Exit::Code(0), true) => return,
                (Exit::Code(0), false) => Cause::Vanished,
                (Exit::Code(code), _) => Cause::Exited(*code),
                (Exit::Signal(signal), _) => {
                    // Our own SIGTERM or SIGKILL while stopping is not a cause; a worker
                    // killed by SIGKILL before we sent any (by the OOM killer, say) is.
                    let ours = match signal.as_str() {
                        "SIGTERM" => run.stopping.is_some(),
                        "SIGKILL" => run.killed.is_some(),
                        _ => false,
                    };
                    if ours {
                        return;
                    }
                    Cause::Signaled(signal.clone())
                }
                (Exit::Unknown, true) => return,
                (Exit::Unknown, false) => Cause::Vanished,
            };
            // Read from the board: a killed worker could not say.
            run.failures.push(WorkerFailure {
                rank,
                pid: workers.pid(rank),
                step: board.step(rank),
                cause,
            });
        }
    }
}

/// The failure to report: the first that was a cause of its own, not the echo of another.
fn first_cause(failures: Vec<WorkerFailure>) -> Option<WorkerFailure> {
    let root = failures.iter().position(|f| !f.cause.is_secondary());
    let mut failures = failures;
    match root {
        Some(index) => Some(failures.swap_remove(index)),
        None => failures.into_iter().next(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The first time from `from` on, looking every tick until `until`, at which the
    /// checks end the run with a step timeout; and the step and ranks it names.
    fn timed_out(
        checks: &mut Checks,
        board: &Board,
        from: Instant,
        until: Instant,
    ) -> Option<(Instant, Option<u64>, Vec<usize>)> {
        let (run, workers) = (Run::new(board.ranks()), Workers::Threads(Vec::new()));
        let mut now = from;
        while now <= until {
            match checks.look_at(now, &run, board, &workers) {
                Some(LaunchError::Timeout { step, ranks, .. }) => {
                    return Some((now, step, ranks.iter().map(|&(rank, _)| rank).collect()));
                }
                Some(other) => panic!("not a timeout: {other:?}"),
                None => now += TICK,
            }
        }
        None
    }

    /// A step timeout of 2 s counts only the time the coordinator ran: a gap between two
    /// looks longer than [`UNWATCHED`] (the whole job stopped and went on, say) moves the
    /// deadline on by the gap, where once the job timed out the moment it went on.
    #[test]
    fn the_time_the_coordinator_did_not_run_counts_towards_no_step_timeout() {
        let limits = Limits {
            step_timeout: Some(Duration::from_secs(2)),
            ..Limits::default()
        };
        let board = Board::new(2).expect("a board");
        board.set_step(0, 3, 0);
        board.set_step(1, 3, 0);
        let ms = Duration::from_millis;

        // Watched all along: the step times out 2 s after the first look saw it begin.
        let mut checks = Checks::new(&limits, 2);
        let begun = checks.awake + TICK;
        let (at, step, ranks) =
            timed_out(&mut checks, &board, begun, begun + ms(5000)).expect("a timeout");
        assert_eq!((at - begun, step, ranks), (ms(2000), Some(3), vec![0, 1]));

        // Stopped for 4.9 s just after the step began: the look after the gap finds nothing
        // late, and the step times out after 2 s of watching, 2 s after the job went on.
        let mut checks = Checks::new(&limits, 2);
        let begun = checks.awake + TICK;
        assert!(timed_out(&mut checks, &board, begun, begun).is_none());
        let went_on = begun + ms(4900);
        let (at, ..) =
            timed_out(&mut checks, &board, went_on, went_on + ms(5000)).expect("a timeout");
        assert_eq!(at - went_on, ms(2000));

        // A gap of a second or less is the coordinator's own pace: it counts.
        let mut checks = Checks::new(&limits, 2);
        let begun = checks.awake + TICK;
        assert!(timed_out(&mut checks, &board, begun, begun).is_none());
        let later = begun + UNWATCHED;
        let (at, ..) = timed_out(&mut checks, &board, later, later + ms(5000)).expect("a timeout");
        assert_eq!(at - later, ms(1000));
    }

    /// A rank that announces no step is on the first one from the start: with none
    /// announced at all, the limit bounds the whole run, and a rank that never announces one
    /// while the others move on is the one named: at the step another waits in, if one does.
    #[test]
    fn a_rank_that_announces_no_step_times_out_from_the_start() {
        let limits = Limits {
            step_timeout: Some(Duration::from_secs(2)),
            ..Limits::default()
        };
        let ms = Duration::from_millis;

        let board = Board::new(2).expect("a board");
        let mut checks = Checks::new(&limits, 2);
        let begun = checks.awake + TICK;
        let (at, step, ranks) =
            timed_out(&mut checks, &board, begun, begun + ms(5000)).expect("a timeout");
        assert_eq!(
            (at - checks.steps[0].1, step, ranks),
            (ms(2000), None, vec![0, 1])
        );

        let board = Board::new(2).expect("a board");
        let mut checks = Checks::new(&limits, 2);
        let (run, workers) = (Run::new(2), Workers::Threads(Vec::new()));
        let started = checks.awake;
        let mut now = started;
        let mut step = 0;
        let err = loop {
            now += TICK;
            step += 1;
            board.set_step(0, step, 0);
            if let Some(err) = checks.look_at(now, &run, &board, &workers) {
                break err;
            }
            assert!(now - started < ms(5000), "no timeout");
        };
        let LaunchError::Timeout { step, ranks, .. } = err else {
            panic!("not a timeout: {err:?}");
        };
        // Not at the step rank 0 has got to, which rank 1 never reached.
        assert_eq!(
            (now - started, step, ranks),
            (ms(2000), None, vec![(1, None)])
        );

        // With rank 0 waiting in step 3 (for rank 1, say), rank 1 holds up step 3.
        let board = Board::new(2).expect("a board");
        board.set_step(0, 3, 0);
        board.set_waiting(0, Some(crate::progress::WaitingOn::Right));
        let mut checks = Checks::new(&limits, 2);
        let begun = checks.awake + TICK;
        let (_, step, ranks) =
            timed_out(&mut checks, &board, begun, begun + ms(5000)).expect("a timeout");
        assert_eq!((step, ranks), (Some(3), vec![1]));
    }
}
