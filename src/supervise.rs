//! The coordinator's side of a run: answer reports, notice every worker's end, and on the
//! first failure stop the rest, reap them all, and say who failed and why.

use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::Pid;

use crate::error::{Cause, LaunchError, WorkerFailure};
use crate::stage::{Coordinator, Down, Stage, Up};
use crate::transport::{Event, Inbox, Tx};

/// How long stopped workers get to exit after SIGTERM before SIGKILL.
const GRACE: Duration = Duration::from_millis(500);

/// How long SIGKILLed processes get before the coordinator stops listening and reaps them.
const KILL_WAIT: Duration = Duration::from_secs(2);

/// The running workers, processes or threads.
#[derive(Debug)]
pub(crate) enum Workers {
    Processes(Vec<Pid>),
    Threads(Vec<Option<JoinHandle<i32>>>),
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
        }
    }

    /// Sends `signal` to every process not yet reaped. Threads cannot be signalled; they
    /// stop when their ring breaks.
    pub(crate) fn kill_all(&self, signal: Signal) {
        if let Workers::Processes(pids) = self {
            for &pid in pids {
                // ESRCH: it already exited; it is reaped below either way.
                let _ = kill(pid, signal);
            }
        }
    }

    fn kill(&self, rank: usize, signal: Signal) {
        if let Workers::Processes(pids) = self
            && let Some(&pid) = pids.get(rank)
        {
            let _ = kill(pid, signal);
        }
    }

    /// Reaps every worker, blocking. Only for workers already told to stop.
    pub(crate) fn reap_all(&mut self) {
        let count = match self {
            Workers::Processes(pids) => pids.len(),
            Workers::Threads(handles) => handles.len(),
        };
        for rank in 0..count {
            self.reap(rank);
        }
    }
}

/// Where a run stands, as the coordinator sees it.
struct Run<S: Stage> {
    outputs: Vec<Option<S::Output>>,
    ended: Vec<bool>,
    failures: Vec<WorkerFailure>,
    coordinator_error: Option<LaunchError>,
    /// How many failures had been seen when the stage asked to stop; later ones are echoes
    /// of the stop itself.
    stop_requested: Option<usize>,
    /// Set once the run is being stopped: when SIGTERM was sent.
    stopping: Option<Instant>,
    killed: Option<Instant>,
}

impl<S: Stage> Run<S> {
    fn failed(&self) -> bool {
        !self.failures.is_empty() || self.coordinator_error.is_some()
    }

    fn ending(&self) -> bool {
        self.failed() || self.stop_requested.is_some()
    }

    fn has_failure(&self, rank: usize) -> bool {
        self.failures.iter().any(|f| f.rank == rank)
    }
}

pub(crate) fn supervise<S: Stage>(
    stage: &mut S,
    mut inbox: Inbox<Up<S::Report, S::Output>>,
    downs: Vec<Tx<Down<S::Answer>>>,
    mut workers: Workers,
) -> Result<Vec<S::Output>, LaunchError> {
    let size = downs.len();
    let mut downs = Some(downs);
    let mut run = Run::<S> {
        outputs: (0..size).map(|_| None).collect(),
        ended: vec![false; size],
        failures: Vec::new(),
        coordinator_error: None,
        stop_requested: None,
        stopping: None,
        killed: None,
    };
    while run.ended.iter().any(|ended| !ended) {
        if run.ending() && run.stopping.is_none() {
            // Dropping the answer channels releases workers waiting on the coordinator.
            downs = None;
            for rank in (0..size).filter(|&rank| !run.ended[rank]) {
                workers.kill(rank, Signal::SIGTERM);
            }
            run.stopping = Some(Instant::now());
        }
        let timeout = match (run.stopping, run.killed) {
            (None, _) => None,
            (Some(_), Some(killed)) => Some(KILL_WAIT.saturating_sub(killed.elapsed())),
            (Some(stopping), None) => Some(GRACE.saturating_sub(stopping.elapsed())),
        };
        let events = match inbox.wait(timeout) {
            Ok(events) => events,
            Err(e) => {
                drop(downs.take());
                workers.kill_all(Signal::SIGKILL);
                workers.reap_all();
                return Err(LaunchError::Wait(e));
            }
        };
        if events.is_empty() && timeout.is_some() {
            if run.killed.is_none() {
                for rank in (0..size).filter(|&rank| !run.ended[rank]) {
                    workers.kill(rank, Signal::SIGKILL);
                }
                run.killed = Some(Instant::now());
                continue;
            }
            // SIGKILL cannot be refused; reap what is left without listening further.
            // Threads that ignore a broken ring are abandoned: the process exit ends them.
            if let Workers::Processes(_) = workers {
                for rank in (0..size).filter(|&rank| !run.ended[rank]) {
                    workers.reap(rank);
                }
            }
            break;
        }
        for event in events {
            handle(stage, &mut run, &mut workers, downs.as_deref(), event);
        }
    }
    drop(downs);
    if let Some(err) = run.coordinator_error {
        return Err(err);
    }
    let mut failures = run.failures;
    if let Some(before) = run.stop_requested {
        failures.truncate(before);
    }
    if let Some(failure) = first_cause(failures) {
        return Err(LaunchError::Worker(failure));
    }
    if run.stop_requested.is_some() {
        return Err(LaunchError::Stopped);
    }
    Ok(run.outputs.into_iter().flatten().collect())
}

fn handle<S: Stage>(
    stage: &mut S,
    run: &mut Run<S>,
    workers: &mut Workers,
    downs: Option<&[Tx<Down<S::Answer>>]>,
    event: Event<Up<S::Report, S::Output>>,
) {
    match event {
        Event::Message(rank, Up::Report(report)) => {
            // Once the run is stopping, reports have nobody to serve.
            if let (Some(downs), false) = (downs, run.ending()) {
                let mut stop = false;
                let mut coordinator = Coordinator::<S> {
                    downs,
                    stop: &mut stop,
                };
                if let Err(e) = stage.on_report(rank, report, &mut coordinator) {
                    let message = crate::error::chain(e.as_ref());
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
        }
        Event::Message(rank, Up::Failed { step, cause }) => {
            run.failures.push(WorkerFailure {
                rank,
                pid: workers.pid(rank),
                step,
                cause,
            });
        }
        Event::Garbled(rank, what) => {
            run.failures.push(WorkerFailure {
                rank,
                pid: workers.pid(rank),
                step: None,
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
                    // Our own SIGTERM/SIGKILL while stopping is not a cause.
                    if run.stopping.is_some() {
                        return;
                    }
                    Cause::Signaled(signal.clone())
                }
                (Exit::Unknown, true) => return,
                (Exit::Unknown, false) => Cause::Vanished,
            };
            run.failures.push(WorkerFailure {
                rank,
                pid: workers.pid(rank),
                step: None,
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
