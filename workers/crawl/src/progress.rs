//! One line of progress on stderr, redrawn in place, for a terminal only.
//!
//! The coordinator draws it from `on_report`, so it needs no thread: the process must stay
//! single-threaded until the workers are forked, and a thread would gain nothing, since
//! nothing changes between reports.

use std::io::{self, IsTerminal, Write};
use std::time::{Duration, Instant};

/// The least time between two drawings.
const EVERY: Duration = Duration::from_millis(100);

#[derive(Debug, Clone)]
pub(crate) struct Progress {
    on: bool,
    drawn: Option<Instant>,
}

impl Progress {
    /// A progress line, drawn only if `wanted` and stderr is a terminal.
    pub(crate) fn new(wanted: bool) -> Progress {
        Progress {
            on: wanted && io::stderr().is_terminal(),
            drawn: None,
        }
    }

    /// Redraws the line, unless it was drawn less than a tenth of a second ago.
    pub(crate) fn show(&mut self, line: impl FnOnce() -> String) {
        if !self.on || self.drawn.is_some_and(|at| at.elapsed() < EVERY) {
            return;
        }
        self.drawn = Some(Instant::now());
        // Back to the start of the line, the new text, and clear what the old one left.
        let mut err = io::stderr().lock();
        let _ = write!(err, "\r{}\x1b[K", line());
        let _ = err.flush();
    }

    /// Takes the line off the screen, so what is printed next starts on a clean line.
    pub(crate) fn clear(&mut self) {
        if self.on && self.drawn.take().is_some() {
            let mut err = io::stderr().lock();
            let _ = write!(err, "\r\x1b[K");
            let _ = err.flush();
        }
    }
}
