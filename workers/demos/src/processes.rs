//! The demos that run worker processes on a ring: they share nothing and talk only
//! through messages, with ringleader's public API.

use ringleader::{Coordinator, Handler, LaunchError, Launcher, Neighbour, Ring, StageError};
use serde::{Deserialize, Serialize};

/// Hello from two processes: the coordinator, and one worker process it forks.
pub fn processes() -> Result<(), LaunchError> {
    say!("hello from MainProcess");
    Launcher::new().workers(1).run(|ring| {
        say!("hello from Process-{}", ring.rank() + 1);
        Ok(())
    })?;
    Ok(())
}

/// The fixed counter without shared memory: `workers` processes each send `increments`
/// increments to the coordinator, which owns the counter. Returns the final count.
pub fn race_by_messages(workers: usize, increments: u32) -> Result<u64, LaunchError> {
    let mut counter = Counter { count: 0 };
    let stage = ringleader::stage_fn(move |ring: &mut Ring| {
        for _ in 0..increments {
            ring.report(&CounterRequest::Increment)?;
        }
        Ok(())
    });
    Launcher::new()
        .workers(workers)
        .launch_with(stage, &mut counter)?;
    Ok(counter.count)
}

/// The counter's owner, on the coordinator.
struct Counter {
    count: u64,
}

/// A worker's request to the counter's owner.
#[derive(Debug, Serialize, Deserialize)]
enum CounterRequest {
    Increment,
}

impl Handler for Counter {
    type Report = CounterRequest;
    type Answer = ();

    fn on_report(
        &mut self,
        _from: usize,
        report: CounterRequest,
        _coordinator: &mut Coordinator<'_, ()>,
    ) -> Result<(), StageError> {
        match report {
            CounterRequest::Increment => self.count += 1,
        }
        Ok(())
    }
}

/// What goes down the pipe.
#[derive(Debug, Serialize, Deserialize)]
enum Item {
    Item(u32),
    /// The end of the stream (the textbook sends `None`).
    End,
}

/// Producer and consumer processes over a typed channel: rank 0 sends ten items and then
/// the end of the stream to rank 1, which prints each item.
pub fn pipe() -> Result<(), LaunchError> {
    Launcher::new().workers(2).run(|ring| {
        if ring.rank() == 0 {
            for item in 0..10 {
                ring.send(Neighbour::Right, &Item::Item(item))?;
            }
            ring.send(Neighbour::Right, &Item::End)?;
        } else {
            // `Item::End` ends the loop, like the textbook's `None`.
            while let Item::Item(item) = ring.recv(Neighbour::Left)? {
                say!("got an item: {item}");
            }
        }
        Ok(())
    })?;
    Ok(())
}

/// The textbook's deadlock: two processes that each wait to receive before they send, so
/// neither ever sends. Nothing in the stage looks for it: the framework sees both workers
/// blocked on each other with nothing in flight and ends the run with
/// [`LaunchError::Deadlock`], naming the cycle.
pub fn deadlock() -> Result<(), LaunchError> {
    Launcher::new()
        .workers(2)
        .run(|ring| {
            // The textbook's `deadlock(in_pipe, out_pipe)`: receive, print, send the item + 1.
            let item: u32 = ring.recv(Neighbour::Left)?;
            say!("got an item: {item}");
            ring.send(Neighbour::Right, &(item + 1))?;
            Ok(())
        })
        .map(drop)
}
