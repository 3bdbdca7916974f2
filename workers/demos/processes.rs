//! The demos that run worker processes on a ring: they share nothing and talk only
//! through messages, with ringleader's public API.

use ringleader::{Coordinator, LaunchError, Launcher, Neighbour, Ring, Stage, StageError};
use serde::{Deserialize, Serialize};

/// Hello from two processes: the coordinator, and one worker process it forks.
pub(crate) fn processes() -> Result<(), LaunchError> {
    say!("hello from MainProcess");
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
        say!("hello from Process-{}", ring.rank() + 1);
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
                say!("got an item: {item}");
            }
        }
        Ok(())
    }
}

/// The textbook's deadlock: two processes that each wait to receive before they send, so
/// neither ever sends. Nothing in the stage looks for it: the framework sees both workers
/// blocked on each other with nothing in flight and ends the run with
/// [`LaunchError::Deadlock`], naming the cycle.
pub(crate) fn deadlock() -> Result<(), LaunchError> {
    Launcher::new().workers(2).launch(&mut Deadlock).map(drop)
}

#[derive(Debug, Clone)]
struct Deadlock;

impl Stage for Deadlock {
    type Message = u32;
    type Report = ();
    type Answer = ();
    type Output = ();

    fn work(self, ring: &mut Ring<Self>) -> Result<(), StageError> {
        // The textbook's `deadlock(in_pipe, out_pipe)`: receive, print, send the item + 1.
        let item = ring.recv(Neighbour::Left)?;
        say!("got an item: {item}");
        ring.send(Neighbour::Right, item + 1)?;
        Ok(())
    }
}
