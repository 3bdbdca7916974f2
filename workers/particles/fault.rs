//! Fault injection, for testing how the framework fails.
//!
//! `RINGLEADER_FAULT=RANK:STEP:KIND` makes worker `RANK` of a ring run (`-p`) fail at the
//! start of step `STEP` (counted from 1), in one of these ways:
//!
//! | KIND    | what the worker does                                              | transports |
//! |---------|-------------------------------------------------------------------|------------|
//! | `panic` | panics                                                            | both       |
//! | `exit`  | exits with code 3 without a word to the coordinator               | processes  |
//! | `abort` | aborts (SIGABRT)                                                  | processes  |
//! | `kill`  | kills itself with SIGKILL, as the OOM killer would                | processes  |
//! | `hang`  | stops making progress and never reports (`--timeout` catches it)  | both       |
//! | `cycle` | waits for its right neighbour, which waits for it: a deadlock     | both       |
//!
//! A worker thread cannot exit, abort or be killed without taking the whole process with
//! it, so those kinds need the processes transport. Serial and `-t` runs have no workers
//! for the framework to supervise, so they refuse the variable. Tests use it to make a
//! failure happen at a known rank and step, instead of racing a `kill` against the run.

use std::fmt;
use std::str::FromStr;

use ringleader::{Neighbour, Ring, Stage, StageError, Transport};

/// The environment variable that injects a fault.
pub(crate) const VAR: &str = "RINGLEADER_FAULT";

/// How the worker fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Panic,
    Exit,
    Abort,
    Kill,
    Hang,
    Cycle,
}

impl Kind {
    const ALL: [(&'static str, Kind); 6] = [
        ("panic", Kind::Panic),
        ("exit", Kind::Exit),
        ("abort", Kind::Abort),
        ("kill", Kind::Kill),
        ("hang", Kind::Hang),
        ("cycle", Kind::Cycle),
    ];

    fn name(self) -> &'static str {
        Kind::ALL
            .iter()
            .find(|(_, kind)| *kind == self)
            .map_or("?", |(name, _)| name)
    }

    /// Whether a worker thread can fail this way without ending the whole process.
    fn fits_threads(self) -> bool {
        matches!(self, Kind::Panic | Kind::Hang | Kind::Cycle)
    }
}

/// A fault to inject: which rank, at which step, how.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Fault {
    pub(crate) rank: usize,
    pub(crate) step: u64,
    pub(crate) kind: Kind,
}

impl FromStr for Fault {
    type Err = String;

    fn from_str(text: &str) -> Result<Fault, String> {
        let shape = || format!("expected RANK:STEP:KIND, such as 1:5:panic, not {text:?}");
        let mut parts = text.split(':');
        let (Some(rank), Some(step), Some(kind), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(shape());
        };
        let rank = rank
            .parse::<usize>()
            .map_err(|_| format!("the rank must be a whole number, not {rank:?}"))?;
        let step = match step.parse::<u64>() {
            Ok(step) if step >= 1 => step,
            _ => {
                return Err(format!(
                    "the step must be a whole number from 1, not {step:?}"
                ));
            }
        };
        let names = Kind::ALL.map(|(name, _)| name).join(", ");
        let kind = Kind::ALL
            .iter()
            .find(|(name, _)| *name == kind)
            .map(|&(_, kind)| kind)
            .ok_or_else(|| format!("the kind must be one of {names}, not {kind:?}"))?;
        Ok(Fault { rank, step, kind })
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.rank, self.step, self.kind.name())
    }
}

impl Fault {
    /// The fault the environment asks for, if any.
    ///
    /// # Errors
    ///
    /// A message for a value that does not parse.
    pub(crate) fn from_env() -> Result<Option<Fault>, String> {
        match std::env::var(VAR) {
            Ok(text) => text.parse().map(Some).map_err(|e| format!("{VAR}: {e}")),
            Err(std::env::VarError::NotPresent) => Ok(None),
            Err(std::env::VarError::NotUnicode(_)) => Err(format!("{VAR} is not valid UTF-8")),
        }
    }

    /// Checks that the fault can happen in a run of `steps` steps on `workers` workers.
    ///
    /// # Errors
    ///
    /// A message saying why it cannot.
    pub(crate) fn check(
        &self,
        workers: Option<(usize, Transport)>,
        steps: u64,
    ) -> Result<(), String> {
        let Some((workers, transport)) = workers else {
            return Err(format!("{VAR} needs a ring of workers (-p)"));
        };
        if self.rank >= workers {
            return Err(format!(
                "{VAR}: rank {} does not exist on a ring of {workers}",
                self.rank
            ));
        }
        if self.step > steps {
            return Err(format!(
                "{VAR}: step {} is past the run's {steps} steps",
                self.step
            ));
        }
        if transport == Transport::Threads && !self.kind.fits_threads() {
            return Err(format!(
                "{VAR}: a worker thread cannot {} alone; use the processes transport",
                self.kind.name()
            ));
        }
        Ok(())
    }

    /// Fails, if this rank and step are the fault's. Called at the start of every step.
    ///
    /// # Errors
    ///
    /// Only once the run is being stopped, from `hang` and `cycle`.
    pub(crate) fn strike<S: Stage<Message = ()>>(
        &self,
        ring: &mut Ring<S>,
        step: u64,
    ) -> Result<(), StageError> {
        if ring.rank() != self.rank || step != self.step {
            return Ok(());
        }
        match self.kind {
            Kind::Panic => panic!("injected fault {self}"),
            Kind::Exit => std::process::exit(3),
            Kind::Abort => std::process::abort(),
            Kind::Kill => {
                let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
                std::process::abort()
            }
            Kind::Hang => {
                // A worker thread can only be stopped by returning, so it gives up when the
                // coordinator ends the run; a process just hangs until it is killed.
                while !(ring.transport() == Transport::Threads && ring.stopping()) {
                    std::thread::park_timeout(std::time::Duration::from_millis(50));
                }
                Err(format!("injected fault {self} given up").into())
            }
            Kind::Cycle => {
                // The right neighbour is waiting for this step's block from us.
                ring.recv(Neighbour::Right)?;
                Err(format!("injected fault {self} got an unexpected message").into())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faults_parse_and_print_back() {
        for text in [
            "0:1:panic",
            "3:17:exit",
            "1:2:abort",
            "0:9:kill",
            "2:5:hang",
            "1:1:cycle",
        ] {
            let fault: Fault = text.parse().unwrap();
            assert_eq!(fault.to_string(), text);
        }
    }

    #[test]
    fn malformed_faults_are_refused_with_a_reason() {
        let cases = [
            ("", "RANK:STEP:KIND"),
            ("1:2", "RANK:STEP:KIND"),
            ("1:2:panic:4", "RANK:STEP:KIND"),
            ("x:2:panic", "rank"),
            ("-1:2:panic", "rank"),
            ("1:0:panic", "step"),
            ("1:two:panic", "step"),
            (
                "1:2:explode",
                "one of panic, exit, abort, kill, hang, cycle",
            ),
        ];
        for (text, mentions) in cases {
            let err = text.parse::<Fault>().unwrap_err();
            assert!(err.contains(mentions), "{text:?}: {err}");
        }
    }

    #[test]
    fn a_fault_must_fit_the_run() {
        let fault: Fault = "2:5:kill".parse().unwrap();
        assert!(fault.check(Some((3, Transport::Processes)), 5).is_ok());
        assert!(fault.check(None, 5).unwrap_err().contains("-p"));
        assert!(fault.check(Some((2, Transport::Processes)), 5).is_err());
        assert!(fault.check(Some((3, Transport::Processes)), 4).is_err());
        assert!(fault.check(Some((3, Transport::Threads)), 5).is_err());
        let hang: Fault = "2:5:hang".parse().unwrap();
        assert!(hang.check(Some((3, Transport::Threads)), 5).is_ok());
    }
}
