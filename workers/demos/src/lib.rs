//! The textbook's parallel-computing programs (Composing Programs 4.8), each rebuilt on
//! std's threads or on a ring of worker processes, printing what the original prints.
//!
//! The thread demos show shared memory and its hazards; the process demos use only
//! ringleader's public API and share nothing.

use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, Ordering};

/// `println!` for the demos' output, from the coordinator or from a worker. `println!`
/// panics when stdout is a pipe whose reader has gone (`ringleader demo race | head -1`);
/// this drops the line instead, and the demo runs to its end.
#[macro_export]
macro_rules! say {
    ($($arg:tt)*) => {
        $crate::say_line(format_args!($($arg)*))
    };
}

mod processes;
mod threads;

pub use self::processes::{deadlock, pipe, processes, race_by_messages};
pub use self::threads::{barrier, lock, queue, race_by_lock, race_lost_updates, threads};

/// Writes one line to stdout; see [`say!`]. A reader that went away is not worth a word;
/// any other failure is said once, on stderr.
pub fn say_line(line: std::fmt::Arguments<'_>) {
    static REPORTED: AtomicBool = AtomicBool::new(false);
    let mut out = io::stdout().lock();
    let written = out.write_fmt(line).and_then(|()| out.write_all(b"\n"));
    if let Err(e) = written
        && e.kind() != io::ErrorKind::BrokenPipe
        && !REPORTED.swap(true, Ordering::Relaxed)
    {
        let _ = writeln!(io::stderr(), "ringleader: cannot write to stdout: {e}");
    }
}
