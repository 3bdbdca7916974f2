//! The demos that run worker processes on a ring: they share nothing and talk only
//! through messages, with ringleader's public API.

use std::fmt;

use ringleader::{Coordinator, LaunchError, Launcher, Neighbour, Ring, Stage, StageError};
use serde::{Deserialize, Serialize};

/// Hello from two processes: the coordinator, and one worker process it forks.
pub(crate) fn processes() -> Result<(), LaunchError> {
    println!("hello from MainProcess");
    Launcher::new().workers(1).launch(&mut Hello)?;
    Ok(())
}

#[derive(Debug, Clone)]
struct Hello;

impl Stage for Hello {
    type Message = ();
    type Report = ();
    type Answer = ();
    type Output = ();

    fn work(self, ring: &mut Ring<Self>) -> Result<(), StageError> {
        println!("hello from Process-{}", ring.rank() + 1);
        Ok(())
    }
}

/// The fixed counter without shared memory: `workers` processes each send `increments`
/// increments to the coordinator, which owns the counter. Returns the final count.
pub(crate) fn race_by_messages(workers: usize, increments: u32) -> Result<u64, LaunchError> {
    let mut stage = Increments {
        increments,
        count: 0,
    };
    Launcher::new().workers(workers).launch(&mut stage)?;
    Ok(stage.count)
}

#[derive(Debug, Clone)]
struct Increments {
    increments: u32,
    /// The counter: only the coordinator's copy counts.
    count: u64,
}

/// A worker's request to the counter's owner.
#[derive(Debug, Serialize, Deserialize)]
enum CounterRequest {
    Increment,
}

impl Stage for Increments {
    type Message = ();
    type Report = CounterRequest;
    type Answer = ();
    type Output = ();

    fn work(self, ring: &mut Ring<Self>) -> Result<(), StageError> {
        for _ in 0..self.increments {
            ring.report(CounterRequest::Increment)?;
        }
        Ok(())
    }

    fn on_report(
        &mut self,
        _from: usize,
        report: CounterRequest,
        _coordinator: &mut Coordinator<'_, Self>,
    ) -> Result<(), StageError> {
        match report {
            CounterRequest::Increment => self.count += 1,
        }
        Ok(())
    }
}

/// Producer and consumer processes over a typed channel: rank 0 sends ten items and then
/// the end of the stream to rank 1, which prints each item.
pub(crate) fn pipe() -> Result<(), LaunchError> {
    Launcher::new().workers(2).launch(&mut Pipe)?;
    Ok(())
}

#[derive(Debug, Clone)]
struct Pipe;

/// What goes down the pipe.
#[derive(Debug, Serialize, Deserialize)]
enum Item {
    Item(u32),
    /// The end of the stream (the textbook sends `None`).
    End,
}

impl Stage for Pipe {
    type Message = Item;
    type Report = ();
    type Answer = ();
    type Output = ();

    fn work(self, ring: &mut Ring<Self>) -> Result<(), StageError> {
        if ring.rank() == 0 {
            for item in 0..10 {
                ring.send(Neighbour::Right, Item::Item(item))?;
            }
            ring.send(Neighbour::Right, Item::End)?;
        } else {
            // `Item::End` ends the loop, like the textbook's `None`.
            while let Item::Item(item) = ring.recv(Neighbour::Left)? {
                println!("got an item: {item}");
            }
        }
        Ok(())
    }
}

/// Two processes that each wait to receive before they send: neither ever sends, so both
/// wait forever. Each worker tells the coordinator before it blocks; once every worker is
/// waiting and no message was ever sent, the coordinator knows the wait is circular and
/// stops the run.
pub(crate) fn deadlock() -> Result<(), DeadlockOutcome> {
    let mut stage = Deadlock {
        waiting: vec![None; 2],
        sent: 0,
        found: None,
    };
    match Launcher::new().workers(2).launch(&mut stage) {
        Ok(_) => Ok(()),
        Err(LaunchError::Stopped) => match stage.found {
            Some(found) => Err(DeadlockOutcome::Found(found)),
            None => Err(DeadlockOutcome::Failed(LaunchError::Stopped)),
        },
        Err(err) => Err(DeadlockOutcome::Failed(err)),
    }
}

/// How the deadlock demo ended, when it did not finish.
#[derive(Debug)]
pub(crate) enum DeadlockOutcome {
    /// The coordinator saw the circular wait.
    Found(DeadlockFound),
    /// The run failed some other way.
    Failed(LaunchError),
}

/// The circular wait the coordinator found: who waits on whom.
#[derive(Debug, Clone)]
pub(crate) struct DeadlockFound {
    /// `(rank, the rank it waits to receive from)`, in rank order.
    pub(crate) waits: Vec<(usize, usize)>,
}

impl fmt::Display for DeadlockFound {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("deadlock: ")?;
        for (i, (rank, from)) in self.waits.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "rank {rank} waits to receive from rank {from}")?;
        }
        f.write_str("; no message is in flight, so none of them can go on (run stopped)")
    }
}

#[derive(Debug, Clone)]
struct Deadlock {
    /// Coordinator side: which rank each rank waits on, once it said so.
    waiting: Vec<Option<usize>>,
    /// Coordinator side: how many sends workers announced.
    sent: u64,
    found: Option<DeadlockFound>,
}

/// What a deadlock-demo worker tells the coordinator.
#[derive(Debug, Serialize, Deserialize)]
enum Progress {
    /// About to block in `recv` on the link from this rank.
    Waiting { from: usize },
    /// About to send a message.
    Sending,
}

impl Stage for Deadlock {
    type Message = u32;
    type Report = Progress;
    type Answer = ();
    type Output = ();

    fn work(self, ring: &mut Ring<Self>) -> Result<(), StageError> {
        // The textbook's `deadlock(in_pipe, out_pipe)`: receive, print, send the item + 1.
        let from = ring.neighbour(Neighbour::Left);
        ring.report(Progress::Waiting { from })?;
        let item = ring.recv(Neighbour::Left)?;
        println!("got an item: {item}");
        ring.report(Progress::Sending)?;
        ring.send(Neighbour::Right, item + 1)?;
        Ok(())
    }

    fn on_report(
        &mut self,
        from: usize,
        report: Progress,
        coordinator: &mut Coordinator<'_, Self>,
    ) -> Result<(), StageError> {
        match report {
            Progress::Waiting { from: peer } => self.waiting[from] = Some(peer),
            Progress::Sending => self.sent += 1,
        }
        // Every rank waits and nothing was ever sent: nobody can wake anybody.
        if self.sent == 0 && self.waiting.iter().all(Option::is_some) {
            let waits = self
                .waiting
                .iter()
                .enumerate()
                .filter_map(|(rank, peer)| Some((rank, (*peer)?)))
                .collect();
            self.found = Some(DeadlockFound { waits });
            coordinator.stop();
        }
        Ok(())
    }
}
