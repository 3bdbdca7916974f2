//! The textbook's parallel-computing programs (Composing Programs 4.8), each rebuilt on
//! std's threads or on a ring of worker processes, printing what the original prints.
//!
//! The thread demos show shared memory and its hazards; the process demos use only
//! ringleader's public API and share nothing.

mod processes;
mod threads;

pub(crate) use self::processes::{deadlock, pipe, processes, race_by_messages};
pub(crate) use self::threads::{barrier, lock, queue, race_by_lock, race_lost_updates, threads};
