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
//! # Failures
//!
//! A worker that panics, returns an error, exits or is killed ends the run: the coordinator
//! stops and reaps every other worker and returns [`LaunchError::Worker`], naming the rank,
//! pid and cause. Receives on a link whose peer has gone fail with [`RingError::PeerGone`]
//! instead of waiting forever.

pub mod bench;
mod error;
mod gather;
mod launch;
mod panic;
mod ring;
mod stage;
mod supervise;
mod transport;
mod worker;

pub use self::error::{Cause, LaunchError, Peer, RingError, WorkerFailure};
pub use self::gather::Gather;
pub use self::launch::Launcher;
pub use self::ring::{Neighbour, Ring};
pub use self::stage::{Coordinator, Message, Stage, StageError};
pub use self::transport::Transport;
