//! Fault injection, for testing how a run fails: the framework's, so that every stage and
//! every mode gets it without asking.
//!
//! A [`Fault`] names a rank, a step and a way to fail. Given to
//! [`Launcher::fault`](crate::Launcher::fault), it strikes when that worker announces that
//! step with [`Ring::set_step`](crate::Ring::set_step):
//!
//! | kind    | what the worker does                                              | transports |
//! |---------|-------------------------------------------------------------------|------------|
//! | `panic` | panics                                                            | all        |
//! | `exit`  | exits with code 3 without a word to the coordinator               | processes  |
//! | `abort` | aborts (SIGABRT)                                                  | processes  |
//! | `kill`  | kills itself with SIGKILL, as the OOM killer would                | processes  |
//! | `hang`  | stops making progress and never reports (a step timeout catches it) | all      |
//! | `cycle` | waits for its right neighbour, which waits for it: a deadlock     | all        |
//!
//! A worker thread cannot exit, abort or be killed without taking the whole process with
//! it, so those kinds need the processes transport. Tests use faults to make a failure
//! happen at a known rank and step, instead of racing a `kill` against the run.
//!
//! Only a build with the `fault-injection` feature strikes; any other refuses to launch
//! with a fault, so a test never mistakes a build without it for a run that survived.

use std::fmt;
use std::str::FromStr;

use crate::transport::Transport;

/// The environment variable [`Fault::from_env`] reads.
pub const FAULT_VAR: &str = "RINGLEADER_FAULT";

/// How an injected fault makes its worker fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FaultKind {
    /// Panic.
    Panic,
    /// Exit with code 3, saying nothing.
    Exit,
    /// Abort (SIGABRT).
    Abort,
    /// Kill itself with SIGKILL.
    Kill,
    /// Stop making progress.
    Hang,
    /// Wait for the right neighbour, which waits for this worker.
    Cycle,
}

impl FaultKind {
    const ALL: [(&'static str, FaultKind); 6] = [
        ("panic", FaultKind::Panic),
        ("exit", FaultKind::Exit),
        ("abort", FaultKind::Abort),
        ("kill", FaultKind::Kill),
        ("hang", FaultKind::Hang),
        ("cycle", FaultKind::Cycle),
    ];

    /// Every kind, in the order the table above lists them.
    pub fn all() -> impl Iterator<Item = FaultKind> {
        FaultKind::ALL.into_iter().map(|(_, kind)| kind)
    }

    /// The kind's name, as `RINGLEADER_FAULT` spells it.
    pub fn name(self) -> &'static str {
        FaultKind::ALL
            .iter()
            .find(|(_, kind)| *kind == self)
            .map_or("?", |(name, _)| name)
    }

    /// Whether a worker thread can fail this way without ending the whole process.
    pub fn fits_threads(self) -> bool {
        matches!(self, FaultKind::Panic | FaultKind::Hang | FaultKind::Cycle)
    }
}

/// A fault to inject: which rank, at which step, how. Written `RANK:STEP:KIND`, such as
/// `1:5:panic`.
///
/// ```
/// use ringleader::{Fault, FaultKind, Transport};
///
/// let fault: Fault = "1:5:kill".parse()?;
/// assert_eq!((fault.rank, fault.step, fault.kind), (1, 5, FaultKind::Kill));
/// // A worker thread cannot kill itself alone, and rank 2 is not among 2 workers.
/// assert!(fault.check(2, Transport::Threads).is_err());
/// assert!(fault.check(1, Transport::Processes).is_err());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct Fault {
    /// The worker that fails.
    pub rank: usize,
    /// The step at whose announcement it fails, from 1.
    pub step: u64,
    /// How it fails.
    pub kind: FaultKind,
}

impl Fault {
    /// A fault of `kind` for worker `rank` at `step`.
    pub fn new(rank: usize, step: u64, kind: FaultKind) -> Fault {
        Fault { rank, step, kind }
    }

    /// The fault `RINGLEADER_FAULT` asks for, if it is set.
    ///
    /// # Errors
    ///
    /// A one-line message for a value that does not parse.
    pub fn from_env() -> Result<Option<Fault>, String> {
        match std::env::var(FAULT_VAR) {
            Ok(text) => text
                .parse()
                .map(Some)
                .map_err(|e| format!("{FAULT_VAR}: {e}")),
            Err(std::env::VarError::NotPresent) => Ok(None),
            Err(std::env::VarError::NotUnicode(_)) => {
                Err(format!("{FAULT_VAR} is not valid UTF-8"))
            }
        }
    }

    /// Checks that the fault can happen on a ring of `workers` on `transport`.
    ///
    /// # Errors
    ///
    /// A one-line message saying why it cannot.
    pub fn check(&self, workers: usize, transport: Transport) -> Result<(), String> {
        if !cfg!(feature = "fault-injection") {
            return Err(format!(
                "{FAULT_VAR}: this build cannot inject faults (ringleader's `fault-injection` \
                 feature is off)"
            ));
        }
        if self.rank >= workers {
            return Err(format!(
                "{FAULT_VAR}: rank {} does not exist among {workers} worker{}",
                self.rank,
                if workers == 1 { "" } else { "s" }
            ));
        }
        if transport == Transport::Threads && !self.kind.fits_threads() {
            return Err(format!(
                "{FAULT_VAR}: a worker thread cannot {} alone; use worker processes (-p)",
                self.kind.name()
            ));
        }
        Ok(())
    }
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
        let names = FaultKind::ALL.map(|(name, _)| name).join(", ");
        let kind = FaultKind::ALL
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
    #[cfg(feature = "fault-injection")]
    fn a_fault_must_fit_the_ring() {
        let fault: Fault = "2:5:kill".parse().unwrap();
        assert!(fault.check(3, Transport::Processes).is_ok());
        assert!(fault.check(2, Transport::Processes).is_err());
        assert!(fault.check(3, Transport::Threads).is_err());
        let hang: Fault = "2:5:hang".parse().unwrap();
        assert!(hang.check(3, Transport::Threads).is_ok());
        assert!(FaultKind::all().all(|k| !k.name().is_empty()));
    }

    #[test]
    #[cfg(not(feature = "fault-injection"))]
    fn a_build_without_the_feature_refuses_every_fault() {
        let fault: Fault = "2:5:kill".parse().unwrap();
        let err = fault.check(3, Transport::Processes).unwrap_err();
        assert!(err.contains("feature is off"), "{err}");
    }
}
