//! # ringleader
//!
//! Fork worker processes, connect them in a ring of IPC channels, and run the same code
//! on every one of them. Workers share no memory: they talk to their two ring neighbours,
//! to all the others in collectives, and to the coordinator, through messages only.
//!
//! # Hello, ring
//!
//! [`Launcher::run`] runs a closure on every worker and returns what each returned, in
//! rank order. Here four worker processes each add their rank to a sum every one of them
//! gets, and each passes a block of numbers once round the ring:
//!
//! ```
//! use ringleader::Launcher;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # // Doctests run inside a threaded test harness, and forking is refused there:
//! # // the same closure runs on threads in that case.
//! # let launcher = Launcher::new().workers(4).transport(ringleader::Transport::Threads);
//! # let _ = || -> Result<(), ringleader::LaunchError> {
//! let launcher = Launcher::new().workers(4);
//! # Ok(()) };
//! let answers = launcher.run(|ring| {
//!     let rank = ring.rank() as u64;
//!     let total = ring.all_reduce(rank, |a, b| a + b)?;
//!     let mut seen = 0;
//!     ring.rotate(&[rank; 8], |_origin, block: &[u64]| seen += block[0])?;
//!     Ok((total, seen))
//! })?;
//! assert_eq!(answers, vec![(6, 6); 4]);
//! # Ok(()) }
//! ```
//!
//! Forking is only safe while the process has one thread, so with the processes
//! transport (the default) `launch` refuses to run from a process that has started
//! others; `examples/custom_stage.rs` is a complete program on forked processes.
//!
//! # Stages and handlers
//!
//! A stage with configuration is a [`Stage`]: a value every worker starts from a copy of,
//! and the code they run. What workers tell the coordinator goes to a [`Handler`], which
//! lives on the coordinator only and is borrowed for the run (it needs neither `Clone` nor
//! `'static`), and answers through [`Coordinator`]:
//!
//! ```
//! use ringleader::{Coordinator, Gather, Handler, Launcher, Ring, Stage, StageError, Transport};
//!
//! /// Every worker asks for the largest rank's square.
//! #[derive(Clone)]
//! struct MaxSquare;
//!
//! impl Stage for MaxSquare {
//!     type Output = u64;
//!
//!     fn work(self, ring: &mut Ring) -> Result<u64, StageError> {
//!         let square = (ring.rank() as u64).pow(2);
//!         Ok(ring.ask(&square)?)
//!     }
//! }
//!
//! struct Largest(Gather<u64>);
//!
//! impl Handler for Largest {
//!     type Report = u64;
//!     type Answer = u64;
//!
//!     fn on_report(&mut self, from: usize, square: u64, coordinator: &mut Coordinator<'_, u64>)
//!         -> Result<(), StageError> {
//!         if let Some(all) = self.0.push(from, square) {
//!             coordinator.broadcast(all.into_iter().max().unwrap_or(0))?;
//!         }
//!         Ok(())
//!     }
//! }
//!
//! let launcher = Launcher::new().workers(3).transport(Transport::Threads);
//! let answers = launcher.launch_with(MaxSquare, &mut Largest(Gather::new(3)))?;
//! assert_eq!(answers, vec![4, 4, 4]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Talking
//!
//! - **Neighbours**: [`Ring::send`] and [`Ring::recv`] carry any serde type;
//!   [`Ring::send_block`] and [`Ring::recv_block`] carry `bytemuck::Pod` slices without
//!   serde, through shared memory between processes; [`Ring::rotate`] passes every
//!   worker's block once round the ring.
//! - **Collectives**: [`Ring::barrier`], [`Ring::broadcast`], [`Ring::all_reduce`] (in rank
//!   order: the same bits everywhere), [`Ring::gather`], [`Ring::all_gather`],
//!   [`Ring::scatter`].
//! - **The coordinator**: [`Ring::report`], [`Ring::ask`], [`Ring::recv_answer`].
//! - **Bulk data** in any of these: a [`Bulk`] array crosses as shared memory between
//!   processes and moves between threads, never through serde.
//! - **A large start** every worker reads once: hold it in an [`Inherited`], and forked
//!   workers give their copy of its pages back when they are done with it.
//!
//! # Failures
//!
//! A worker that panics, returns an error, exits or is killed ends the run: the coordinator
//! stops and reaps every other worker and returns [`LaunchError::Worker`], naming the rank,
//! pid, cause and step. Receives on a link whose peer has gone fail with
//! [`RingError::PeerGone`] instead of waiting forever. An error from
//! [`Handler::on_report`] ends the run the same way, and [`Coordinator::stop`] ends it on
//! purpose ([`LaunchError::Stopped`]).
//!
//! Nothing else hangs either. Workers that wait on each other in a cycle, with nothing in
//! flight, end the run with [`LaunchError::Deadlock`]; a step that takes longer than
//! [`Launcher::step_timeout`] ends it with [`LaunchError::Timeout`] (a stage that announces
//! no steps is one step to it); SIGINT, SIGTERM or
//! SIGHUP to the coordinator stops every worker and returns [`LaunchError::Interrupted`]
//! (or, with [`Launcher::stop_gracefully`], lets the stage stop at a step boundary: see
//! [`stop_signal`]). Workers die with the coordinator, even when it is killed. A handler
//! that keeps the workers' state can have a failed run start again from it: see
//! [`Restart`]. [`Launcher::fault`] injects failures, for tests, in builds with the
//! `fault-injection` feature.

pub mod bench;
mod bulk;
mod collective;
mod deadlock;
mod descendants;
mod error;
mod fault;
mod gather;
mod inherited;
mod launch;
mod loan;
mod memory;
mod message;
mod outbox;
mod panic;
mod progress;
mod restart;
mod ring;
mod shared;
mod signal;
mod stage;
mod stats;
mod supervise;
mod transport;
mod worker;

pub use self::bulk::Bulk;
pub use self::deadlock::{Party, Wait};
pub use self::error::{Cause, LaunchError, Peer, RingError, WorkerFailure};
pub use self::fault::{FAULT_VAR, Fault, FaultKind};
pub use self::gather::Gather;
pub use self::inherited::Inherited;
pub use self::launch::{Launcher, stage_fn};
pub use self::loan::{Loan, Ticket};
pub use self::memory::{HugePages, Pages};
pub use self::message::Data;
pub use self::restart::{Restart, Restarted, Rewind};
pub use self::ring::{Neighbour, Ring};
pub use self::signal::{
    StopSignal, StopSignalGuard, catch_stop_signals, stop_signal, stop_signal_count,
};
pub use self::stage::{Coordinator, Handler, NoReports, Stage, StageError};
pub use self::stats::RunStats;
pub use self::transport::Transport;
#[cfg(feature = "mpi")]
pub use self::transport::mpi::{FINDING_BYTES, mpi_all_findings, mpi_rank, mpi_world_size};
