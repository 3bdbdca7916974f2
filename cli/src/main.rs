//! The `ringleader` command: parse, dispatch, and turn every failure into one line and an
//! exit code.
//!
//! The stages it runs are the workspace's `ringleader-particles`, `ringleader-crawl` and
//! `ringleader-demos` crates, which use nothing but the library's public API. What is about
//! the terminal or files lives here: the progress bar, the live view, the pictures, the
//! checkpoint files and `bench`.

mod bench;
mod checkpoint;
mod crawl;
mod demo;
mod destination;
mod limits;
mod live;
mod outputs;
mod particles;
mod progress;
mod render;
mod visuals;

use std::ffi::OsString;
use std::fmt;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Large arrays (particle states, strips, lent outputs) in huge pages: each 4 KiB page
/// fault is dear on a virtual machine, and a fork copies an entry per page.
#[global_allocator]
static ALLOC: ringleader::HugePages = ringleader::HugePages;

/// Run stages on a ring of worker processes.
#[derive(Debug, Parser)]
#[command(name = "ringleader", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Simulate the textbook's particles: serially, with threads, or on a ring of workers.
    Particles(Box<particles::Args>),
    /// Run the textbook's parallel-computing programs.
    Demo(demo::Args),
    /// Find a site's dead links with a ring of worker processes.
    Crawl(crawl::Args),
    /// Measure the simulator in every mode, the force kernels, and the transport.
    Bench(Box<bench::Args>),
}

/// A mistake in how the program was called: exit code 2.
#[derive(Debug)]
pub(crate) struct UsageError {
    message: String,
    /// Found against this machine (its memory, its limit on open files), where another
    /// rank of an MPI job, on another host, may find none; otherwise found in the arguments
    /// alone, which every rank shares.
    here: bool,
}

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for UsageError {}

/// Shorthand for returning a usage error found in the arguments.
pub(crate) fn usage<T>(message: impl Into<String>) -> anyhow::Result<T> {
    Err(UsageError {
        message: message.into(),
        here: false,
    }
    .into())
}

/// Shorthand for returning a usage error found against this machine's resources.
pub(crate) fn usage_here<T>(message: impl Into<String>) -> anyhow::Result<T> {
    Err(UsageError {
        message: message.into(),
        here: true,
    }
    .into())
}

fn main() -> ExitCode {
    match run(std::env::args_os().collect()) {
        Ok(code) => code,
        // A reader that went away (`ringleader … | head`) is not a failure of ours: stop
        // quietly, as other Unix tools do.
        Err(err) if closed_pipe(&err) => ExitCode::SUCCESS,
        // Every worker is stopped and reaped by now; exit as the signal asks.
        Err(err) if let Some(signal) = stopped_by(&err) => {
            say_error(&err);
            ExitCode::from(signal.exit_code())
        }
        Err(err) => {
            // Whether the mistake was found against this host, for a usage error.
            let here = err.downcast_ref::<UsageError>().map(|usage| usage.here);
            let other_rank = launcher_rank().filter(|&rank| rank != 0);
            match (here, other_rank) {
                // Under `mpirun` every rank parses the same arguments and finds the same
                // mistake: rank 0 alone says it, as it says the mistakes found after MPI
                // starts, and exits 2 for the job. The others exit 0: when they exited 2,
                // the first to do so had mpirun end the job, rank 0 with it, at times
                // before rank 0 had said why (a flaky test caught it).
                (Some(false), Some(_)) => ExitCode::SUCCESS,
                // A mistake found against this host, which rank 0's may not share.
                (Some(true), Some(rank)) => {
                    say_error(&err.context(format!("rank {rank}")));
                    ExitCode::from(2)
                }
                (Some(_), None) => {
                    say_error(&err);
                    ExitCode::from(2)
                }
                (None, _) => {
                    say_error(&err);
                    ExitCode::from(1)
                }
            }
        }
    }
}

/// Writes `err` as one line on stderr: see [`say`].
fn say_error(err: &anyhow::Error) {
    say(&format!("ringleader: {}", one_line(&format!("{err:#}"))));
}

/// Writes `line` and a newline on stderr in one system call. `eprintln!` writes each piece
/// of its format on its own, and `mpirun`, which forwards every write of every rank as it
/// comes, once put its own message between them: `ringleader: ------…`.
pub(crate) fn say(line: &str) {
    use std::io::Write;
    let _ = std::io::stderr().write_all(format!("{line}\n").as_bytes());
}

/// This process's rank in a job an MPI launcher started, from the environment it sets for
/// each rank (Open MPI, PMIx, and the MPICH family's PMI): known before MPI starts, or in a
/// build without MPI.
fn launcher_rank() -> Option<u32> {
    ["OMPI_COMM_WORLD_RANK", "PMIX_RANK", "PMI_RANK"]
        .iter()
        .find_map(|name| std::env::var(name).ok()?.trim().parse().ok())
}

fn run(args: Vec<OsString>) -> anyhow::Result<ExitCode> {
    let cli = match Cli::try_parse_from(textbook_flags(args)) {
        Ok(cli) => cli,
        Err(err) => return clap_error(err),
    };
    match cli.command {
        Command::Particles(args) => particles::run(*args),
        Command::Demo(args) => demo::run(args),
        Command::Crawl(args) => crawl::run(args),
        Command::Bench(args) => bench::run(*args),
    }
}

/// Help and version go to stdout with success; any other parse error becomes a usage
/// error of one line.
fn clap_error(err: clap::Error) -> anyhow::Result<ExitCode> {
    use clap::error::ErrorKind;
    match err.kind() {
        ErrorKind::DisplayHelp
        | ErrorKind::DisplayVersion
        | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            let _ = err.print();
            Ok(
                if err.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
                    ExitCode::from(2)
                } else {
                    ExitCode::SUCCESS
                },
            )
        }
        _ => {
            let text = err.to_string();
            // clap's message, up to the usage block that follows the first blank line.
            let message = text.split("\n\n").next().unwrap_or(&text);
            let message = message.trim_start_matches("error: ");
            usage(format!("{} (see --help)", one_line(message)))
        }
    }
}

/// The stop signal that ended the command, if one did: a run it stopped, or a bench it
/// ended between runs.
fn stopped_by(err: &anyhow::Error) -> Option<ringleader::StopSignal> {
    match err.downcast_ref::<ringleader::LaunchError>() {
        Some(&ringleader::LaunchError::Interrupted { signal }) => Some(signal),
        _ => err
            .downcast_ref::<bench::Interrupted>()
            .map(|interrupted| interrupted.signal)
            // An output that waited for a FIFO's reader when the signal came.
            .or_else(|| {
                let waited = err.chain().any(|cause| {
                    cause
                        .downcast_ref::<std::io::Error>()
                        .is_some_and(|io| io.kind() == std::io::ErrorKind::Interrupted)
                });
                waited.then(ringleader::stop_signal).flatten()
            }),
    }
}

/// Whether the error is a write to a pipe whose reader has gone.
pub(crate) fn closed_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// Joins a multi-line message into one line.
fn one_line(text: &str) -> String {
    text.split('\n')
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// The textbook spells the step length `-dt`; accept it as `--dt`.
fn textbook_flags(args: Vec<OsString>) -> Vec<OsString> {
    args.into_iter()
        .map(|arg| match arg.to_str() {
            Some("-dt") => OsString::from("--dt"),
            Some(text) if text.starts_with("-dt=") => OsString::from(format!("-{text}")),
            _ => arg,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn textbook_dt_flag_is_accepted() {
        let args = ["ringleader", "particles", "-dt", "0.001"]
            .map(OsString::from)
            .to_vec();
        assert_eq!(textbook_flags(args)[2], "--dt");
        let args = ["ringleader", "-dt=0.1"].map(OsString::from).to_vec();
        assert_eq!(textbook_flags(args)[1], "--dt=0.1");
    }

    #[test]
    fn one_line_joins_lines() {
        assert_eq!(one_line("a:\n  b\n\nc\n"), "a: b c");
    }
}
