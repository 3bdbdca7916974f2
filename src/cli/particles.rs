//! `ringleader particles`: the textbook's simulator.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;
use ringleader::Transport;

use super::usage;
use crate::workers::particles::output::{write_csv, write_energy_log};
use crate::workers::particles::physics::DEFAULT_DT;
use crate::workers::particles::{Mode, Run, Start, Unwatched, simulate};

#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  ringleader particles -n 2000 -s 100 -p 2       a ring of 2 worker processes
  ringleader particles -n 300 -s 100 -t 4 -e     4 threads, energy normalization
  ringleader particles -n 20 -s 100 --out final.csv")]
pub(crate) struct Args {
    /// Number of particles.
    #[arg(short = 'n', default_value_t = 20, value_parser = positive, allow_negative_numbers = true)]
    n: usize,
    /// Number of steps.
    #[arg(short = 's', long = "steps", default_value_t = 1000, value_parser = steps, allow_negative_numbers = true)]
    steps: u64,
    /// Run on THREADS threads sharing memory, with a barrier (the textbook's -t).
    #[arg(
        short = 't',
        long = "threads",
        value_parser = positive,
        conflicts_with = "processes",
        allow_negative_numbers = true
    )]
    threads: Option<usize>,
    /// Run on a ring of PROCESSES workers (the textbook's -p).
    #[arg(short = 'p', long = "processes", value_parser = positive, allow_negative_numbers = true)]
    processes: Option<usize>,
    /// Energy normalization: rescale velocities to keep the initial energy.
    #[arg(short = 'e', long = "energy-normalize")]
    normalize: bool,
    /// Step length (the textbook's -dt).
    #[arg(long = "dt", default_value_t = DEFAULT_DT, value_parser = dt, allow_negative_numbers = true)]
    dt: f64,
    /// Write the final state as CSV (id,x,y,vx,vy), sorted by id; `-` for stdout.
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
    /// Write the energy after every step as CSV (step,energy).
    #[arg(long, value_name = "FILE")]
    energy_log: Option<PathBuf>,
    /// What the -p workers run on: forked processes, or threads with in-process channels.
    /// `mpi` runs this process as one rank of an `mpirun` job (build with `--features mpi`);
    /// the ring has one worker per rank.
    #[arg(
        long,
        value_enum,
        default_value_t = TransportArg::Processes,
        requires_ifs = [("processes", "processes"), ("threads", "processes")]
    )]
    transport: TransportArg,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum TransportArg {
    Processes,
    Threads,
    Mpi,
}

impl TransportArg {
    fn transport(self) -> anyhow::Result<Transport> {
        match self {
            TransportArg::Processes => Ok(Transport::Processes),
            TransportArg::Threads => Ok(Transport::Threads),
            #[cfg(feature = "mpi")]
            TransportArg::Mpi => Ok(Transport::Mpi),
            #[cfg(not(feature = "mpi"))]
            TransportArg::Mpi => usage(
                "--transport mpi needs a ringleader built with MPI: cargo build --release --features mpi",
            ),
        }
    }
}

/// With `--transport mpi` the ring has one worker per rank of the job; `-p`, if given,
/// must agree.
#[cfg(feature = "mpi")]
fn mpi_workers(args: &Args) -> anyhow::Result<Option<usize>> {
    if args.transport != TransportArg::Mpi {
        return Ok(args.processes);
    }
    if args.threads.is_some() {
        return usage("-t cannot be used with --transport mpi");
    }
    let ranks = ringleader::mpi_world_size()?;
    match args.processes {
        Some(p) if p != ranks => usage(format!(
            "-p {p} does not match the {ranks} ranks of this mpi job"
        )),
        _ => Ok(Some(ranks)),
    }
}

pub(crate) fn run(args: Args) -> anyhow::Result<ExitCode> {
    let transport = args.transport.transport()?;
    #[cfg(feature = "mpi")]
    let processes = mpi_workers(&args)?;
    #[cfg(not(feature = "mpi"))]
    let processes = args.processes;
    let mode = match (args.threads, processes) {
        (Some(t), _) if t > args.n => {
            return usage(format!(
                "-t {t} asks for more threads than the {} particles",
                args.n
            ));
        }
        (_, Some(p)) if p > args.n => {
            return usage(format!(
                "-p {p} asks for more workers than the {} particles",
                args.n
            ));
        }
        (Some(t), _) => Mode::Threads(t),
        (None, Some(p)) => Mode::Ring(p, transport),
        (None, None) => Mode::Serial,
    };
    // Open the output before the run, so a bad path fails before the work, not after.
    let mut out: Option<Box<dyn Write>> = match &args.out {
        None => None,
        Some(path) if path.as_os_str() == "-" => Some(Box::new(io::stdout().lock())),
        Some(path) => Some(Box::new(BufWriter::new(
            File::create(path).with_context(|| format!("cannot write {}", path.display()))?,
        ))),
    };
    let mut energy_log = match &args.energy_log {
        None => None,
        Some(path) => {
            Some(BufWriter::new(File::create(path).with_context(|| {
                format!("cannot write {}", path.display())
            })?))
        }
    };
    let mut run = Run::new(Start::initial(args.n), args.steps, args.dt, args.normalize);
    run.log_energy = energy_log.is_some();
    let first_step = run.start.step + 1;
    let pair_checks = run.pair_checks();
    let started = Instant::now();
    let (outcome, _watch) = simulate(run, mode, Box::new(Unwatched))?;
    let seconds = started.elapsed().as_secs_f64();
    let line = format!(
        "{} simulation took {seconds:.6} seconds ({:.3e} pair checks/s)",
        mode.describe(),
        pair_checks / seconds
    );
    if let Some(log) = energy_log.as_mut() {
        write_energy_log(&outcome.energies, first_step, log)
            .and_then(|()| log.flush())
            .context("cannot write the energy log")?;
    }
    match out.as_mut() {
        Some(out) => {
            write_csv(&outcome.particles, out)
                .and_then(|()| out.flush())
                .context("cannot write the final state")?;
            // With the state on stdout, keep the timing line off it.
            if args.out.as_deref().is_some_and(|p| p.as_os_str() == "-") {
                eprintln!("{line}");
            } else {
                println!("{line}");
            }
        }
        None => println!("{line}"),
    }
    Ok(ExitCode::SUCCESS)
}

fn positive(text: &str) -> Result<usize, String> {
    match text.parse::<i128>() {
        Ok(value) if value < 1 => Err("must be at least 1".to_owned()),
        _ => text
            .parse::<usize>()
            .map_err(|_| format!("expected a whole number of at least 1, not {text:?}")),
    }
}

fn steps(text: &str) -> Result<u64, String> {
    match text.parse::<i128>() {
        Ok(value) if value < 0 => Err("steps cannot be negative".to_owned()),
        _ => text
            .parse::<u64>()
            .map_err(|_| format!("expected a whole number of steps, not {text:?}")),
    }
}

fn dt(text: &str) -> Result<f64, String> {
    let value: f64 = text
        .parse()
        .map_err(|_| format!("expected a number, not {text:?}"))?;
    if !value.is_finite() || value <= 0.0 {
        return Err(format!(
            "the step length must be positive and finite, not {text}"
        ));
    }
    Ok(value)
}
