//! `ringleader demo NAME`: the textbook's parallel-computing programs.

use std::process::ExitCode;

use anyhow::Context;

use ringleader_demos::{self as demos, say};

#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  ringleader demo pipe         a producer and a consumer process over a typed channel
  ringleader demo race         the lost update, then the counter fixed two ways")]
pub(crate) struct Args {
    #[command(subcommand)]
    demo: Demo,
}

#[derive(Debug, clap::Subcommand)]
enum Demo {
    /// Hello from two threads.
    Threads,
    /// Hello from two processes.
    Processes,
    /// The shared counter: the lost update, then fixed with a lock and with messages.
    Race {
        /// How many times to run the two racing increments.
        #[arg(allow_negative_numbers = true, long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..))]
        tries: u32,
    },
    /// Producer and consumer threads over a synchronized queue.
    Queue,
    /// `already_seen` on a set behind a lock.
    Lock,
    /// Two counters in phases, kept in step by a barrier.
    Barrier,
    /// Producer and consumer processes over a typed channel, with an end-of-stream signal.
    Pipe,
    /// Two processes that each wait to receive before they send.
    Deadlock,
}

pub(crate) fn run(args: Args) -> anyhow::Result<ExitCode> {
    match args.demo {
        Demo::Threads => demos::threads().context("could not start a thread")?,
        Demo::Processes => demos::processes()?,
        Demo::Race { tries } => race(tries)?,
        Demo::Queue => demos::queue().context("could not start a thread")?,
        Demo::Lock => demos::lock().context("could not start a thread")?,
        Demo::Barrier => demos::barrier().context("could not start a thread")?,
        Demo::Pipe => demos::pipe()?,
        Demo::Deadlock => demos::deadlock()?,
    }
    Ok(ExitCode::SUCCESS)
}

fn race(tries: u32) -> anyhow::Result<()> {
    // Fork the message-passing workers first: the thread versions start threads, and a
    // process with threads must not fork.
    let workers = 2;
    let by_messages = demos::race_by_messages(workers, tries)?;
    let racy = demos::race_lost_updates(tries).context("could not start a thread")?;
    say!(
        "racy (read, yield, write): count is now: {} after the first try",
        racy.first
    );
    say!(
        "racy (read, yield, write): lost an update in {} of {} tries",
        racy.lost,
        racy.tries
    );
    let locked = demos::race_by_lock(tries).context("could not start a thread")?;
    say!(
        "fixed with a lock: lost an update in {} of {} tries",
        locked.lost,
        locked.tries
    );
    say!(
        "fixed with messages: count is now: {by_messages} \
         ({workers} worker processes sent {tries} increments each to the coordinator)"
    );
    Ok(())
}
