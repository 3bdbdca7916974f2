//! `ringleader particles`: the textbook's simulator.

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use ringleader::{FAULT_VAR, Fault, LaunchError, Transport};

use super::outputs::{self, Output};
use super::visuals::{VisualArgs, Visuals};
use super::{limits, usage};
use crate::checkpoint::{self, Checkpointer};
use ringleader_particles::checkpoint::Checkpoint;

use ringleader_particles::output::{write_csv, write_energy_log};
use ringleader_particles::physics::DEFAULT_DT;
use ringleader_particles::{Algorithm, Ending, Mode, Run, Start, Watch, simulate_with};

/// The textbook's particle count.
const DEFAULT_N: usize = 20;

/// How often a run with `--restarts` keeps its state, without `--checkpoint-every`.
const DEFAULT_KEEP_EVERY: u64 = 100;

#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  ringleader particles -n 2000 -s 100 -p 2       a ring of 2 worker processes
  ringleader particles -n 300 -s 100 -t 4 -e     4 threads, energy normalization
  ringleader particles -n 20 -s 100 --out final.csv
  ringleader particles -n 300 -s 200 -p 4 --render run.gif --every 5
                                                 an animation coloured by worker
  ringleader particles -n 300 -s 200 -p 4 --snapshot final.png
  ringleader particles -n 200 -s 100000 -p 2 -g -u 10
                                                 watch it live; q stops every worker")]
pub(crate) struct Args {
    /// Number of particles [default: 20, or with --resume the checkpoint's].
    #[arg(short = 'n', value_parser = positive, allow_negative_numbers = true)]
    n: Option<usize>,
    /// Number of steps (the total, counting those a --resume checkpoint has taken).
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
    /// Step length (the textbook's -dt) [default: 0.0005, or with --resume the checkpoint's].
    #[arg(long = "dt", value_parser = dt, allow_negative_numbers = true)]
    dt: Option<f64>,
    /// Write the final state as CSV (id,x,y,vx,vy), sorted by id; `-` for stdout.
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
    /// Write the energy after every step as CSV (step,energy); `-` for stdout.
    #[arg(long, value_name = "FILE")]
    energy_log: Option<PathBuf>,
    /// What the -p workers run on: forked processes, or threads with in-process channels.
    /// `mpi` runs this process as one rank of an `mpirun` job (build with `--features mpi`);
    /// the ring has one worker per rank.
    #[arg(
        long,
        value_enum,
        default_value_t = TransportArg::Processes,
        requires_ifs = [("processes", "processes"), ("threads", "processes")],
        conflicts_with = "threads"
    )]
    transport: TransportArg,
    /// Write the whole state to FILE at the end of the run (or where it stops), atomically;
    /// `{step}` in FILE becomes the step; `-` for stdout (not a terminal).
    #[arg(long, value_name = "FILE")]
    checkpoint: Option<PathBuf>,
    /// Also write the checkpoint after every step that is a multiple of K.
    #[arg(long, value_name = "K", value_parser = every, allow_negative_numbers = true)]
    checkpoint_every: Option<u64>,
    /// Continue the run a checkpoint holds, up to -s steps in all.
    #[arg(long, value_name = "FILE")]
    resume: Option<PathBuf>,
    /// End the run with an error if a step takes longer than SECS seconds, in every mode
    /// [default: 60, plus a second per 1e8 pair checks a worker makes in an all-pairs step]
    #[arg(long, value_name = "SECS", value_parser = timeout, allow_negative_numbers = true)]
    timeout: Option<Duration>,
    /// When a worker fails (killed, panicked, timed out, deadlocked), start the workers
    /// again from the last state kept, up to N times; the state is kept every
    /// --checkpoint-every K steps (default 100 with --restarts). The result is the same,
    /// bit for bit, as a run that did not fail.
    #[arg(
        allow_negative_numbers = true,
        long,
        value_name = "N",
        default_value_t = 0
    )]
    restarts: u32,
    /// How forces are found: all pairs (the textbook's), or cell lists (O(n), same bits).
    #[arg(long, value_enum, default_value_t = AlgorithmArg::Allpairs)]
    algorithm: AlgorithmArg,
    /// With --algorithm cells on two or more workers (-p or -t), move the strips' edges to
    /// the workers' pace every K steps; 0 keeps them where they start. The results are the
    /// same bits either way [default: 10, or 0 with --render or --snapshot, whose pictures
    /// then come out the same on every run]
    #[arg(allow_negative_numbers = true, long, value_name = "K", value_parser = balance_every)]
    balance_every: Option<u64>,
    #[command(flatten)]
    visuals: VisualArgs,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum AlgorithmArg {
    Allpairs,
    Cells,
}

impl From<AlgorithmArg> for Algorithm {
    fn from(arg: AlgorithmArg) -> Algorithm {
        match arg {
            AlgorithmArg::Allpairs => Algorithm::AllPairs,
            AlgorithmArg::Cells => Algorithm::Cells,
        }
    }
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
    // `-t` with any `--transport` is refused by the parser.
    let ranks = ringleader::mpi_world_size()?;
    if args.restarts > 0 {
        return mpi_usage(
            "--restarts cannot be used with --transport mpi: a rank that fails ends the whole \
             job, and mpirun's ranks cannot be started again (write --checkpoint files and \
             --resume in a new job instead)",
        );
    }
    match args.processes {
        Some(p) if p != ranks => mpi_usage(format!(
            "-p {p} does not match the {ranks} ranks of this mpi job"
        )),
        _ => Ok(Some(ranks)),
    }
}

/// A usage error under `mpirun`: every rank finds the same one, and rank 0 alone says it.
#[cfg(feature = "mpi")]
fn mpi_usage<T>(message: impl Into<String>) -> anyhow::Result<T> {
    if ringleader::mpi_rank()? != 0 {
        // MPI is finalized as the process exits, with the other ranks.
        std::process::exit(2);
    }
    usage(message)
}

/// Under `mpirun` rank 0 alone writes the outputs, on its own host, so it alone checks
/// them: a path that exists only there is no mistake, and one that is wrong everywhere
/// gets one line, not one a rank. Every rank learns what rank 0 found; the others then
/// exit 0 without a word while rank 0 says it, as for a mistake in the arguments (see
/// `main`). Returns, on rank 0, whether an output goes to stdout.
#[cfg(feature = "mpi")]
fn rank_0_checks_outputs(args: &Args, first: u64) -> anyhow::Result<bool> {
    let checked = (ringleader::mpi_rank()? == 0).then(|| check_outputs(args, first));
    let finding = match &checked {
        Some(Err(err)) => Some(format!("{err:#}")),
        _ => None,
    };
    let found = ringleader::mpi_all_findings(finding.as_deref())?;
    match checked {
        Some(on_stdout) => on_stdout,
        // MPI is finalized as the process exits, with the other ranks.
        None if found.first().is_some_and(Option::is_some) => std::process::exit(0),
        None => Ok(false),
    }
}

/// Under `mpirun` a run that cannot fit one host's memory may fit another's: the ranks
/// compare what each found (`fits`), and if any cannot fit, rank 0 alone says so, in one
/// line that names the ranks, and exits 2 for the job; the others exit 0 without a word, as
/// for a mistake in the arguments. When each rank said its own, two ranks on one host said
/// the same line twice.
#[cfg(feature = "mpi")]
fn agree_on_fit(fits: anyhow::Result<()>) -> anyhow::Result<()> {
    let mine = fits.err().map(|e| format!("{e:#}"));
    let all = ringleader::mpi_all_findings(mine.as_deref())?;
    match cannot_fit_line(&all) {
        Some(line) => usage(line),
        None => Ok(()),
    }
}

/// The one line that says which ranks cannot fit, given each rank's finding in rank order:
/// the lowest rank's, with the others named after it. `None` if every rank fits.
#[cfg(any(feature = "mpi", test))]
fn cannot_fit_line(findings: &[Option<String>]) -> Option<String> {
    let mut failed = findings
        .iter()
        .enumerate()
        .filter_map(|(rank, finding)| Some((rank, finding.as_deref()?)));
    let (first, said) = failed.next()?;
    let others: Vec<String> = failed.map(|(rank, _)| rank.to_string()).collect();
    let also = match others.as_slice() {
        [] => String::new(),
        [one] => format!("; rank {one} cannot fit either"),
        [many @ .., last] => format!("; ranks {} and {last} cannot fit either", many.join(", ")),
    };
    Some(format!("rank {first}: {said}{also}"))
}

pub(crate) fn run(args: Args) -> anyhow::Result<ExitCode> {
    let resumed = match &args.resume {
        Some(path) => Some(resume(path, &args)?),
        None => None,
    };
    let n = match &resumed {
        Some(checkpoint) => checkpoint.particles.len(),
        None => args.n.unwrap_or(DEFAULT_N),
    };
    let dt = resumed
        .as_ref()
        .map_or(args.dt.unwrap_or(DEFAULT_DT), |c| c.dt);
    let transport = args.transport.transport()?;
    #[cfg(feature = "mpi")]
    let processes = mpi_workers(&args)?;
    #[cfg(not(feature = "mpi"))]
    let processes = args.processes;
    let mode = match (args.threads, processes) {
        (Some(t), _) if t > n => {
            return usage(format!(
                "-t {t} asks for more threads than the {}",
                particles(n)
            ));
        }
        (_, Some(p)) if p > n => {
            return usage(format!(
                "-p {p} asks for more workers than the {}",
                particles(n)
            ));
        }
        (Some(t), _) => Mode::Threads(t),
        (None, Some(p)) => Mode::Ring(p, transport),
        (None, None) => Mode::Serial,
    };
    let fault = match Fault::from_env() {
        Ok(fault) => fault,
        Err(message) => return usage(message),
    };
    if let Some(fault) = &fault {
        // Every mode runs on the framework's workers: serially one thread, with -t one
        // thread each.
        let (workers, transport) = match mode {
            Mode::Serial => (1, Transport::Threads),
            Mode::Threads(threads) => (threads, Transport::Threads),
            Mode::Ring(workers, transport) => (workers, transport),
        };
        if let Err(message) = fault.check(workers, transport) {
            return usage(message);
        }
        if fault.step > args.steps {
            return usage(format!(
                "{FAULT_VAR}: step {} is past the run's {} steps",
                fault.step, args.steps
            ));
        }
    }
    // The outputs are written after the run (checkpoints also during it), whole or not at
    // all, but a bad path fails before the work, not after.
    let first = resumed.as_ref().map_or(0, |c| c.step);
    #[cfg(feature = "mpi")]
    let on_stdout = match mode {
        Mode::Ring(_, Transport::Mpi) => rank_0_checks_outputs(&args, first)?,
        _ => check_outputs(&args, first)?,
    };
    #[cfg(not(feature = "mpi"))]
    let on_stdout = check_outputs(&args, first)?;
    // Every energy is kept for the log, or for normalization.
    let energies = if args.normalize || args.energy_log.is_some() {
        args.steps.saturating_sub(first)
    } else {
        0
    };
    let fits = limits::check_particles(n, mode, Algorithm::from(args.algorithm), energies);
    #[cfg(feature = "mpi")]
    let fits = match mode {
        Mode::Ring(_, Transport::Mpi) => agree_on_fit(fits),
        _ => fits,
    };
    fits?;
    let start = resumed.map_or_else(|| Start::initial(n), Checkpoint::into_start);
    let mut run = Run::new(start, args.steps, dt, args.normalize);
    run.log_energy = args.energy_log.is_some();
    run.step_timeout = Some(
        args.timeout
            .unwrap_or_else(|| default_timeout(n, mode, Algorithm::from(args.algorithm))),
    );
    run.fault = fault;
    match args.balance_every {
        Some(_) if !matches!(args.algorithm, AlgorithmArg::Cells) => {
            return usage("--balance-every moves the strips of --algorithm cells");
        }
        Some(every) => run.balance_every = every,
        // Pictures colour each particle by its strip's worker: edges that move to the
        // workers' pace would draw different pictures of the same run each time.
        None if args.visuals.draws() => run.balance_every = 0,
        None => {}
    }
    let first_step = run.start.step + 1;
    let (pair_checks, planned) = (run.pair_checks(), run.steps - run.start.step);
    let algorithm = Algorithm::from(args.algorithm);
    let particle_steps = run.start.particles.len() as f64 * planned as f64;
    if args.checkpoint_every.is_some() && args.checkpoint.is_none() && args.restarts == 0 {
        return usage("--checkpoint-every needs --checkpoint or --restarts");
    }
    if args.checkpoint.is_some() || args.restarts > 0 {
        // The state to restart from is the one checkpoints write, kept in memory.
        let default = (args.restarts > 0).then_some(DEFAULT_KEEP_EVERY);
        run.snapshot_every = args.checkpoint_every.or(default);
    }
    run.restarts = args.restarts;
    // The pictures add the snapshot steps they need to the checkpoint's.
    let visuals = Visuals::prepare(&args.visuals, &mut run, mode)?;
    let watch = checkpoint_watch(&args, &mut run, Box::new(visuals));
    // SIGINT, SIGTERM and SIGHUP stop the run at a step boundary in every mode, not
    // mid-write.
    let _signals = ringleader::catch_stop_signals();
    let started = Instant::now();
    let (outcome, watch) = match simulate_with(run, mode, algorithm, watch) {
        Ok(done) => done,
        // Every worker is stopped and reaped by now; exit as the signal asks.
        Err(interrupted @ LaunchError::Interrupted { signal }) => {
            super::say(&format!("ringleader: {interrupted}"));
            return Ok(ExitCode::from(signal.exit_code()));
        }
        Err(err) => return Err(err.into()),
    };
    let seconds = started.elapsed().as_secs_f64();
    // An output whose reader went away (`--energy-log - | head`) leaves the others to
    // write: the first such error ends the run quietly once they are written.
    let mut reader_gone = None;
    let mut unless_reader_gone = |result: anyhow::Result<()>| match result {
        Err(err) if super::closed_pipe(&err) => {
            reader_gone.get_or_insert(err);
            Ok(())
        }
        other => other,
    };
    let watch = match Checkpointer::take(watch) {
        Ok(mut checkpointer) => {
            unless_reader_gone(checkpointer.finish(&outcome).map_err(anyhow::Error::from))?;
            checkpointer.into_inner()
        }
        Err(watch) => watch,
    };
    unless_reader_gone(Visuals::take(watch)?.finish(&outcome))?;
    if let (Ending::Stopped(step), Some(signal)) = (outcome.ending, ringleader::stop_signal()) {
        let saved = if args.checkpoint.is_some() {
            "; checkpoint written"
        } else {
            ""
        };
        super::say(&format!(
            "ringleader: stopped by {signal} after step {step}{saved}"
        ));
        return Ok(ExitCode::from(signal.exit_code()));
    }
    // A run stopped early (q in the live view) made only the checks of its steps.
    let done = match outcome.ending {
        Ending::Stopped(step) if planned > 0 => (step - (first_step - 1)) as f64 / planned as f64,
        _ => 1.0,
    };
    let line = match algorithm {
        Algorithm::AllPairs => format!(
            "{} simulation took {seconds:.6} seconds ({:.3e} pair checks/s)",
            mode.describe(),
            pair_checks * done / seconds
        ),
        // Cells check only nearby pairs: the rate that means something is particle steps.
        Algorithm::Cells => format!(
            "{} simulation took {seconds:.6} seconds ({:.3e} particle steps/s, cells{})",
            mode.describe(),
            particle_steps * done / seconds,
            match outcome.edge_moves {
                0 => String::new(),
                1 => "; the strips' edges moved once".to_owned(),
                moves => format!("; the strips' edges moved {moves} times"),
            }
        ),
    };
    if let Some(path) = &args.energy_log {
        unless_reader_gone(
            outputs::write(path, |log| {
                write_energy_log(&outcome.energies, first_step, log)
            })
            .with_context(|| format!("cannot write the energy log {}", outputs::shown(path))),
        )?;
    }
    if let Some(path) = &args.out {
        unless_reader_gone(
            outputs::write(path, |out| write_csv(&outcome.particles, out))
                .with_context(|| format!("cannot write the final state {}", outputs::shown(path))),
        )?;
    }
    if let Some(err) = reader_gone {
        return Err(err);
    }
    // With an output on stdout, keep the timing line off it.
    if args.visuals.quiet {
        // Nothing but errors.
    } else if on_stdout {
        super::say(&line);
    } else {
        writeln!(io::stdout(), "{line}")?;
    }
    // A stop signal that came after the last step (while the state was gathered, or an
    // output written) found nothing left to stop: the run and its outputs are complete.
    // It is not swallowed: say so, and exit as it asks.
    if let Some(signal) = ringleader::stop_signal() {
        super::say(&format!(
            "ringleader: {signal} came after the last step; the run is complete"
        ));
        return Ok(ExitCode::from(signal.exit_code()));
    }
    Ok(ExitCode::SUCCESS)
}

/// "1 particle", "20 particles".
fn particles(n: usize) -> String {
    if n == 1 {
        "1 particle".to_owned()
    } else {
        format!("{n} particles")
    }
}

/// Checks every output before the run, and says whether one goes to stdout: see
/// [`outputs::check`]. `first` is the step the run starts after.
fn check_outputs(args: &Args, first: u64) -> anyhow::Result<bool> {
    let mut list: Vec<Output<'_>> = [
        Output::new("--out", args.out.as_ref()),
        Output::new("--energy-log", args.energy_log.as_ref()),
    ]
    .into_iter()
    .flatten()
    .collect();
    if let Some(path) = &args.checkpoint {
        outputs::refuse_binary_on_terminal("--checkpoint", path)?;
        if path.as_os_str() == "-" && args.checkpoint_every.is_some() {
            return usage(
                "--checkpoint - holds one checkpoint: give a file for --checkpoint-every",
            );
        }
        list.push(Output {
            flag: "--checkpoint",
            noun: "checkpoint ",
            path,
            steps: checkpoint::is_template(path).then_some(first..=args.steps),
        });
    }
    list.extend(args.visuals.outputs());
    outputs::check(&list)
}

/// The watch for `--checkpoint` and `--checkpoint-every`.
fn checkpoint_watch(args: &Args, run: &mut Run, inner: Box<dyn Watch>) -> Box<dyn Watch> {
    match &args.checkpoint {
        Some(path) => {
            // Hearing from the workers after every step lets a stop signal stop the run
            // at a step boundary, so the checkpoint holds a whole step.
            run.every_step = true;
            Box::new(Checkpointer::new(
                path.clone(),
                args.checkpoint_every,
                run,
                inner,
            ))
        }
        None => inner,
    }
}

/// Reads the checkpoint to resume from, and checks that the flags describe its run.
fn resume(path: &Path, args: &Args) -> anyhow::Result<Checkpoint> {
    let checkpoint = checkpoint::load(path)?;
    let file = path.display();
    let n = checkpoint.particles.len();
    if let Some(given) = args.n.filter(|&given| given != n) {
        anyhow::bail!("-n {given} disagrees with checkpoint {file}, which holds {n} particles");
    }
    if let Some(given) = args
        .dt
        .filter(|given| given.to_bits() != checkpoint.dt.to_bits())
    {
        anyhow::bail!(
            "--dt {given} disagrees with checkpoint {file}, written with --dt {}",
            checkpoint.dt
        );
    }
    if args.normalize != checkpoint.normalize {
        let (was, is) = if checkpoint.normalize {
            ("with", "without")
        } else {
            ("without", "with")
        };
        anyhow::bail!("checkpoint {file} was written {was} -e and cannot be resumed {is} it");
    }
    if checkpoint.step > args.steps {
        anyhow::bail!(
            "checkpoint {file} is at step {}, past -s {}",
            checkpoint.step,
            args.steps
        );
    }
    Ok(checkpoint)
}

/// A whole number of at least 1; a negative one is named as such, not as "not a number".
pub(crate) fn positive(text: &str) -> Result<usize, String> {
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

fn every(text: &str) -> Result<u64, String> {
    match text.parse::<i128>() {
        Ok(value) if value < 1 => Err("must be at least 1".to_owned()),
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

/// The step timeout when `--timeout` is not given: 60 s for anything that should take well
/// under a second, and room for a slow machine (1e8 pair checks a second, a twentieth of
/// this one) where one all-pairs step is big: n = 1,000,000 on two workers makes 5e11 pair
/// checks per worker and step, a minute and a half here.
fn default_timeout(n: usize, mode: Mode, algorithm: Algorithm) -> Duration {
    let workers = match mode {
        Mode::Ring(workers, _) => workers.max(1),
        _ => 1,
    };
    let checks = match algorithm {
        Algorithm::AllPairs => (n as f64) * (n as f64) / workers as f64,
        Algorithm::Cells => 0.0,
    };
    Duration::from_secs(60) + Duration::from_secs_f64((checks / 1e8).min(1e9))
}

/// The balance interval: a whole number of steps, 0 for never.
fn balance_every(text: &str) -> Result<u64, String> {
    text.trim().parse().map_err(|_| {
        format!("the strips' edges move every K steps, a whole number (0: never), not {text}")
    })
}

fn timeout(text: &str) -> Result<Duration, String> {
    let value: f64 = text
        .parse()
        .map_err(|_| format!("expected a number of seconds, not {text:?}"))?;
    if !value.is_finite() || value <= 0.0 {
        return Err(format!(
            "the timeout must be a positive number of seconds, not {text}"
        ));
    }
    Duration::try_from_secs_f64(value).map_err(|_| format!("the timeout {text} is too long"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranks_that_cannot_fit_are_said_in_one_line_from_the_lowest() {
        let said = "-n 9 -p 4 needs about 1 GiB of memory, but 1 MiB is available";
        let line = |ranks: &[usize]| {
            let findings: Vec<Option<String>> = (0..4)
                .map(|rank| ranks.contains(&rank).then(|| said.to_owned()))
                .collect();
            cannot_fit_line(&findings)
        };
        assert_eq!(line(&[]), None);
        assert_eq!(line(&[2]), Some(format!("rank 2: {said}")));
        assert_eq!(
            line(&[0, 3]),
            Some(format!("rank 0: {said}; rank 3 cannot fit either"))
        );
        assert_eq!(
            line(&[1, 2, 3]),
            Some(format!("rank 1: {said}; ranks 2 and 3 cannot fit either"))
        );
        assert_eq!(
            line(&[0, 1, 2, 3]),
            Some(format!(
                "rank 0: {said}; ranks 1, 2 and 3 cannot fit either"
            ))
        );
    }

    /// The help's default for `--balance-every` is written out by hand (the flag has no
    /// value when not given, so that a stray one is caught): it must be the run's.
    #[test]
    fn the_help_names_the_balance_interval_runs_use() {
        let command = <Args as clap::Args>::augment_args(clap::Command::new("particles"));
        let help = command
            .get_arguments()
            .find(|arg| arg.get_id() == "balance_every")
            .and_then(|arg| arg.get_help())
            .map(ToString::to_string)
            .unwrap_or_default();
        let default = ringleader_particles::DEFAULT_BALANCE_EVERY;
        assert!(help.contains(&format!("[default: {default}, ")), "{help}");
    }

    #[test]
    fn the_default_timeout_grows_with_an_all_pairs_step() {
        let ring = Mode::Ring(2, Transport::Processes);
        let secs = |n, mode, algorithm| default_timeout(n, mode, algorithm).as_secs_f64();
        assert_eq!(secs(2000, Mode::Serial, Algorithm::AllPairs), 60.04);
        // A million particles on two workers: 5e11 pair checks each, per step.
        assert_eq!(secs(1_000_000, ring, Algorithm::AllPairs), 5060.0);
        assert_eq!(secs(1_000_000, ring, Algorithm::Cells), 60.0);
    }
}
