//! # ringleader
//!
//! Fork worker processes, connect them in a ring of typed IPC channels, and run a
//! [`Stage`] on every one of them. Workers share no memory: they talk to their two ring
//! neighbours and to the coordinator, through messages only.
//!
//! # Hello, ring
//!
//! Every worker passes its rank around the ring with [`Ring::rotate`], so each one sees
//! every rank once, and returns the sum.
//!
//! ```
//! use ringleader::{Launcher, Ring, Stage, StageError, Transport};
//!
//! #[derive(Clone)]
//! struct SumOfRanks;
//!
//! impl Stage for SumOfRanks {
//!     type Message = ();
//!     type Report = ();
//!     type Answer = ();
//!     type Output = u64;
//!
//!     fn work(self, ring: &mut Ring<Self>) -> Result<u64, StageError> {
//!         let mut sum = 0;
//!         ring.rotate(&[ring.rank() as u64], |_origin, block: &[u64]| sum += block[0])?;
//!         Ok(sum)
//!     }
//! }
//!
//! let sums = Launcher::new()
//!     .workers(4)
//!     .transport(Transport::Threads)
//!     .launch(&mut SumOfRanks)?;
//! assert_eq!(sums, vec![6, 6, 6, 6]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! With [`Transport::Processes`] (the default) the same stage runs in forked processes.
//! The process must then be single-threaded when it launches, which is why this example
//! uses threads: doctests run inside a multi-threaded test harness.
//!
//! # Talking to the coordinator
//!
//! Small messages go up to the coordinator with [`Ring::report`] or [`Ring::ask`] (a report,
//! then [`Ring::recv_answer`]). The coordinator's copy of the stage handles each one in
//! [`Stage::on_report`] and answers through [`Coordinator::send`] or
//! [`Coordinator::broadcast`]; [`Gather`] waits for one report from every rank. Here every
//! worker asks for the largest rank's square, an all-reduce through the coordinator:
//!
//! ```
//! use ringleader::{Coordinator, Gather, Launcher, Ring, Stage, StageError, Transport};
//!
//! #[derive(Clone)]
//! struct MaxSquare {
//!     gather: Gather<u64>,
//! }
//!
//! impl Stage for MaxSquare {
//!     type Message = ();
//!     type Report = u64;
//!     type Answer = u64;
//!     type Output = u64;
//!
//!     fn work(self, ring: &mut Ring<Self>) -> Result<u64, StageError> {
//!         let square = (ring.rank() as u64).pow(2);
//!         Ok(ring.ask(square)?)
//!     }
//!
//!     fn on_report(
//!         &mut self,
//!         from: usize,
//!         square: u64,
//!         coordinator: &mut Coordinator<'_, Self>,
//!     ) -> Result<(), StageError> {
//!         if let Some(all) = self.gather.push(from, square) {
//!             coordinator.broadcast(all.into_iter().max().unwrap_or(0))?;
//!         }
//!         Ok(())
//!     }
//! }
//!
//! let mut stage = MaxSquare { gather: Gather::new(3) };
//! let answers = Launcher::new().workers(3).transport(Transport::Threads).launch(&mut stage)?;
//! assert_eq!(answers, vec![4, 4, 4]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Workers share no memory, with each other or with the coordinator: whatever they need to
//! know travels in a message. `examples/custom_stage.rs` is a complete stage on forked
//! processes (`cargo run --release --example custom_stage`), and the README's "Writing a
//! worker stage" walks through it.
//!
//! # Failures
//!
//! A worker that panics, returns an error, exits or is killed ends the run: the coordinator
//! stops and reaps every other worker and returns [`LaunchError::Worker`], naming the rank,
//! pid, cause and step. Receives on a link whose peer has gone fail with
//! [`RingError::PeerGone`] instead of waiting forever. An error from [`Stage::on_report`]
//! ends the run the same way, and [`Coordinator::stop`] ends it on purpose
//! ([`LaunchError::Stopped`]).
//!
//! Nothing else hangs either. Workers that wait on each other in a cycle, with nothing in
//! flight, end the run with [`LaunchError::Deadlock`]; a step that takes longer than
//! [`Launcher::step_timeout`] ends it with [`LaunchError::Timeout`]; SIGINT, SIGTERM or
//! SIGHUP to the coordinator stops every worker and returns [`LaunchError::Interrupted`]
//! (or, with [`Launcher::stop_gracefully`], lets the stage stop at a step boundary: see
//! [`stop_signal`]). Workers die with the coordinator, even when it is killed.

pub mod bench;
mod bulk;
mod deadlock;
mod error;
mod fault;
mod gather;
mod launch;
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
pub use self::launch::Launcher;
pub use self::restart::{Restart, Restarted, Rewind};
pub use self::ring::{Neighbour, Ring};
pub use self::signal::{StopSignal, StopSignalGuard, catch_stop_signals, stop_signal};
pub use self::stage::{Coordinator, Message, Stage, StageError};
pub use self::stats::RunStats;
pub use self::transport::Transport;
#[cfg(feature = "mpi")]
pub use self::transport::mpi::mpi_world_size;
