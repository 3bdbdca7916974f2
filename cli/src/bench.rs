//! `ringleader bench`: the particle simulator in every mode, the force kernels, and the
//! transport alone, measured in one run.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::io::Write;
#[cfg(feature = "mpi")]
use std::path::Path;
use std::path::PathBuf;
use std::process::ExitCode;
#[cfg(feature = "mpi")]
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::Context;
use ringleader::bench::{HopReport, hop, peak_rss, reset_peak_rss};
use ringleader::{Pages, Transport};
use serde::Serialize;

use super::outputs::{self, Output};
use super::particles::positive;
use super::{limits, usage};

mod child;
mod plot;
use ringleader::LaunchError;
use ringleader_particles::init::initial_state;
use ringleader_particles::kernel::{self, Body, Kernel};
use ringleader_particles::physics::{DEFAULT_DT, Hit};
use ringleader_particles::{
    Algorithm, DEFAULT_BALANCE_EVERY, Mode, Run, Start, Unwatched, simulate_with,
};

#[derive(Debug, clap::Args)]
#[command(
    args_conflicts_with_subcommands = true,
    after_help = "Examples:
  ringleader bench -n 2000,16000 -p 1,2 -s 5 --csv bench.csv
  ringleader bench -n 1000,2000 -p 1,2 -s 3 --modes serial,processes --plot scaling.svg
  ringleader bench -n 16000 --algorithms allpairs,cells
  ringleader bench -n 100000,1000000 -p 2 -s 10 --algorithms cells --fresh
  ringleader bench -n 2000 -p 2 --transports processes,threads,mpi   (build with --features mpi)
  ringleader bench kernel -n 16000
  ringleader bench hop --bytes 1600000 -p 2 --transports processes,threads,mpi
  ringleader bench hop --bytes 32768 -p 2 --transports mpi,mpi-raw"
)]
pub(crate) struct Args {
    #[command(subcommand)]
    what: Option<What>,
    #[command(flatten)]
    table: TableArgs,
}

#[derive(Debug, clap::Subcommand)]
enum What {
    /// Pair checks per second of each force kernel on one core.
    Kernel(KernelArgs),
    /// The transport alone: rotate one block around the ring over each transport.
    Hop(HopArgs),
}

#[derive(Debug, clap::Args)]
struct TableArgs {
    /// Particle counts, comma-separated. The force kernels, printed below the table, run
    /// at the largest, but at most at n = 16000: they check all n² pairs.
    #[arg(allow_negative_numbers = true, short = 'n', value_delimiter = ',', default_values_t = [2000, 16000], value_parser = positive)]
    n: Vec<usize>,
    /// Worker counts, comma-separated (serial always runs on one).
    #[arg(allow_negative_numbers = true, short = 'p', value_delimiter = ',', default_values_t = [1, 2], value_parser = positive)]
    workers: Vec<usize>,
    /// Steps per run.
    #[arg(allow_negative_numbers = true, short = 's', long = "steps", default_value_t = 5, value_parser = positive)]
    steps: usize,
    /// Modes, comma-separated: serial, threads (the textbook's shared memory and barrier),
    /// processes (the ring of worker processes), ring-threads (the same ring on threads),
    /// mpi (the ring over the ranks of an `mpirun` job; needs --features mpi), independent
    /// (P serial runs at once, sharing nothing, each a P-th of the work: n/P particles for
    /// cells, n/√P for allpairs; the most P cores of this machine give: each other row's
    /// vs_independent column is its share of that speed).
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [BenchMode::Serial, BenchMode::Threads, BenchMode::Processes])]
    modes: Vec<BenchMode>,
    /// Ring transports, comma-separated, run in addition to --modes: processes (the mode
    /// `processes`), threads (the mode `ring-threads`), mpi (the mode `mpi`: each row runs
    /// `mpirun -n P` of this program's `particles --transport mpi` and reads its timing line,
    /// which leaves out starting the ranks and MPI; needs a build with --features mpi).
    #[arg(long, value_enum, value_delimiter = ',')]
    transports: Vec<TransportArg>,
    /// Algorithms, comma-separated: allpairs (the textbook's), cells (cell lists). Speedup is
    /// over serial of the same algorithm; cells rows also show their speed-up over allpairs
    /// at the same n, mode and workers. pair_checks_per_s is n² per step over the time for
    /// both, so for cells it is the all-pairs equivalent rate.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [BenchAlgorithm::Allpairs])]
    algorithms: Vec<BenchAlgorithm>,
    /// Run each combination this many times and keep the fastest (the median is shown too).
    #[arg(allow_negative_numbers = true, short = 'r', long = "repeat", default_value_t = 1, value_parser = positive)]
    repeat: usize,
    /// Run every measurement in a process of its own, started afresh, as each run of
    /// `ringleader particles` is. Without it the rows share this process, so a row steps
    /// memory the rows before it have already touched, where worker processes, and a
    /// user's run, start on fresh pages. Each process makes its initial state before its
    /// clock starts, as every row does.
    #[arg(long)]
    fresh: bool,
    /// Measure the one combination the other arguments name, once, and print its row as
    /// JSON: what `--fresh` runs in each new process.
    #[arg(long, hide = true, conflicts_with_all = ["fresh", "csv", "json", "plot"])]
    one: bool,
    /// The cells rows on a ring move the strips' edges to the workers' pace every K steps,
    /// as `particles --balance-every` does; 0 keeps them where they start.
    #[arg(allow_negative_numbers = true, long, value_name = "K", default_value_t = DEFAULT_BALANCE_EVERY)]
    balance_every: u64,
    /// Also write the rows as CSV.
    #[arg(long, value_name = "FILE")]
    csv: Option<PathBuf>,
    /// Also write the rows as JSON.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Also draw speedup, efficiency and pair checks per second against workers, one line
    /// per n, mode and algorithm, as an SVG.
    #[arg(long, value_name = "FILE.svg", value_parser = svg_path)]
    plot: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
struct KernelArgs {
    /// Particles: each kernel checks every pair of the textbook's initial state.
    #[arg(allow_negative_numbers = true, short = 'n', default_value_t = 16000, value_parser = positive)]
    n: usize,
    /// Passes per kernel; the fastest counts.
    #[arg(allow_negative_numbers = true, short = 'r', long = "repeat", default_value_t = 3, value_parser = positive)]
    repeat: usize,
}

#[derive(Debug, clap::Args)]
struct HopArgs {
    /// Bytes per block: whole 8-byte words, so at least 8 (the rest of a word is dropped).
    #[arg(allow_negative_numbers = true, long, default_value_t = 1_600_000, value_parser = a_word_or_more)]
    bytes: usize,
    /// Workers on the ring.
    #[arg(allow_negative_numbers = true, short = 'p', default_value_t = 2, value_parser = at_least_two)]
    workers: usize,
    /// Rotations timed.
    #[arg(allow_negative_numbers = true, long, default_value_t = 200, value_parser = positive)]
    rounds: usize,
    /// Measure each transport this many times, taking turns, and keep the fastest.
    #[arg(allow_negative_numbers = true, short = 'r', long = "repeat", default_value_t = 3, value_parser = positive)]
    repeat: usize,
    /// Transports, comma-separated: processes, threads, mpi (each measurement an
    /// `mpirun -n P` job of this program; needs a build with --features mpi), mpi-raw (the
    /// anchor for mpi: bare `MPI_Sendrecv` of the same bytes in the same ring, no
    /// framework, in a job of its own).
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [TransportArg::Processes, TransportArg::Threads])]
    transports: Vec<TransportArg>,
    /// Run as a rank of the `mpirun` job that measures the mpi hop, once.
    #[arg(long, hide = true)]
    mpi_rank: bool,
    /// With --mpi-rank: measure bare `MPI_Sendrecv` instead of the framework.
    #[arg(long, hide = true)]
    raw: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
enum BenchMode {
    Serial,
    Threads,
    Processes,
    RingThreads,
    Mpi,
    Independent,
}

impl BenchMode {
    fn name(self) -> &'static str {
        match self {
            BenchMode::Serial => "serial",
            BenchMode::Threads => "threads",
            BenchMode::Processes => "processes",
            BenchMode::RingThreads => "ring-threads",
            BenchMode::Mpi => "mpi",
            BenchMode::Independent => "independent",
        }
    }

    /// The mode this process runs; `None` for mpi, which runs under `mpirun`, and for
    /// independent, which runs several serial simulations.
    fn mode(self, workers: usize) -> Option<Mode> {
        match self {
            BenchMode::Serial => Some(Mode::Serial),
            BenchMode::Threads => Some(Mode::Threads(workers)),
            BenchMode::Processes => Some(Mode::Ring(workers, Transport::Processes)),
            BenchMode::RingThreads => Some(Mode::Ring(workers, Transport::Threads)),
            BenchMode::Mpi | BenchMode::Independent => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
#[clap(rename_all = "kebab-case")]
enum TransportArg {
    Processes,
    Threads,
    Mpi,
    /// Bare MPI, for `bench hop` only.
    MpiRaw,
}

impl TransportArg {
    fn mode(self) -> BenchMode {
        match self {
            TransportArg::Processes => BenchMode::Processes,
            TransportArg::Threads => BenchMode::RingThreads,
            TransportArg::Mpi => BenchMode::Mpi,
            // Refused before any row runs (see `table`).
            TransportArg::MpiRaw => BenchMode::Mpi,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum BenchAlgorithm {
    Allpairs,
    Cells,
}

impl From<BenchAlgorithm> for Algorithm {
    fn from(value: BenchAlgorithm) -> Algorithm {
        match value {
            BenchAlgorithm::Allpairs => Algorithm::AllPairs,
            BenchAlgorithm::Cells => Algorithm::Cells,
        }
    }
}

/// What mpi rows need and a build without MPI lacks.
const NEEDS_MPI: &str =
    "mpi rows need a ringleader built with MPI: cargo build --release --features mpi";

/// What the seconds of an mpi row include, printed below a table that has one.
const MPI_ROWS: &str = "mpi rows: rank 0's own timing of the run, from launching the ring \
(links included) to having every output, as the other rows time theirs; starting the ranks, \
MPI_Init and MPI_Finalize are the job's start-up and shut-down and are left out, as starting \
this program is left out of every row.\n";

/// Which pages the large arrays of the rows were in, printed below the table: fresh memory
/// is a large part of a run's cost, and which pages pay depends on the machine.
fn pages_line() -> &'static str {
    match ringleader::HugePages::pages() {
        Pages::Huge => {
            "pages: huge pages for large arrays, where the kernel has them \
             (RINGLEADER_HUGE_PAGES=0: 4 KiB pages)\n"
        }
        Pages::Refused => "pages: 4 KiB pages for large arrays (RINGLEADER_HUGE_PAGES=0)\n",
        Pages::HostReclaims => {
            "pages: 4 KiB pages for large arrays: this guest hands its free memory back to its \
             host, where huge pages cost more (RINGLEADER_HUGE_PAGES=1: huge pages)\n"
        }
        _ => "pages: the system's own pages for large arrays\n",
    }
}

/// One measured run: the numbers behind a line of the table, the CSV and the JSON.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Row {
    pub(crate) mode: &'static str,
    pub(crate) algorithm: &'static str,
    pub(crate) n: usize,
    pub(crate) workers: usize,
    pub(crate) steps: usize,
    /// Wall-clock seconds of the whole run, start-up of the workers included.
    pub(crate) seconds: f64,
    pub(crate) pair_checks_per_s: f64,
    /// Serial seconds at the same n, from the same bench run, over these seconds.
    pub(crate) speedup: Option<f64>,
    /// Speedup per worker.
    pub(crate) efficiency: Option<f64>,
    /// The workers' mean share of their time spent sending and waiting for blocks.
    pub(crate) comm_fraction: Option<f64>,
    /// Peak resident memory of the coordinator (the only process, in serial and threads).
    pub(crate) coordinator_rss_bytes: Option<u64>,
    /// Peak resident memory of the largest worker process.
    pub(crate) worker_rss_bytes: Option<u64>,
    /// On a cells row: allpairs seconds at the same n, mode and workers over these seconds.
    pub(crate) vs_allpairs: Option<f64>,
    /// The ring's critical-path depth per step, as the framework measured it (a rotation on
    /// P workers is P - 1 hops deep); `None` off the ring.
    pub(crate) depth: Option<f64>,
    /// The independent row's seconds at the same algorithm, n and workers over these
    /// seconds: the share this mode takes of the speed that many cores gave at all, in the
    /// same bench run. `None` on independent rows and where none was measured.
    pub(crate) vs_independent: Option<f64>,
    /// The median of the row's `--repeat` runs, where `seconds` is the fastest: how far the
    /// machine moved the row's runs.
    pub(crate) median_seconds: f64,
}

impl Row {
    /// The row of a run of `n` particles for `steps` steps that took `seconds`: its timing
    /// and its all-pairs-equivalent rate, the rest to be filled in.
    fn timed(
        mode: BenchMode,
        algorithm: Algorithm,
        n: usize,
        workers: usize,
        steps: usize,
        seconds: f64,
    ) -> Row {
        Row {
            mode: mode.name(),
            algorithm: algorithm.name(),
            n,
            workers,
            steps,
            seconds,
            pair_checks_per_s: (n as f64).powi(2) * steps as f64 / seconds,
            speedup: None,
            efficiency: None,
            comm_fraction: None,
            coordinator_rss_bytes: None,
            worker_rss_bytes: None,
            vs_allpairs: None,
            depth: None,
            vs_independent: None,
            median_seconds: seconds,
        }
    }
}

/// One force kernel's speed.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct KernelRow {
    pub(crate) kernel: &'static str,
    pub(crate) n: usize,
    pub(crate) seconds: f64,
    pub(crate) pair_checks_per_s: f64,
    /// Over the direct translation, in the same run.
    pub(crate) vs_direct: f64,
}

pub(crate) fn run(args: Args) -> anyhow::Result<ExitCode> {
    match args.what {
        Some(What::Kernel(args)) => {
            let n = args.n;
            limits::ensure_memory(limits::kernel_bytes(n), || format!("bench kernel -n {n}"))?;
            let _signals = ringleader::catch_stop_signals();
            emit(&kernel_table(&kernels(args.n, args.repeat)?))?;
            Ok(complete())
        }
        Some(What::Hop(args)) if args.mpi_rank => mpi_rank_hop(&args),
        Some(What::Hop(args)) => {
            let mpi = [TransportArg::Mpi, TransportArg::MpiRaw];
            if args.transports.iter().any(|t| mpi.contains(t)) && !cfg!(feature = "mpi") {
                return usage(NEEDS_MPI);
            }
            let (bytes, workers) = (args.bytes, args.workers);
            if args.transports.contains(&TransportArg::Processes) {
                limits::ensure_descriptors(workers, &format!("bench hop -p {workers}"))?;
            }
            limits::ensure_memory(limits::hop_bytes(bytes, workers), || {
                format!("bench hop --bytes {bytes} -p {workers}")
            })?;
            let _signals = ringleader::catch_stop_signals();
            let reports = hops(&args)?;
            emit(&hop_table(&reports))?;
            Ok(complete())
        }
        None => table(args.table),
    }
}

/// A bench catches SIGINT, SIGTERM and SIGHUP from start to end, so that one which comes
/// between two runs, when no run is there to stop, still ends the bench with a word rather
/// than kill it: each run, and each pass of the kernel table, starts only if none has come
/// ([`go_on`]), and a process the bench started is sent it (see [`child`]). Everything is
/// measured before anything is shown, so a bench that ends early shows no table.
fn go_on() -> Result<(), Interrupted> {
    match ringleader::stop_signal() {
        Some(signal) => Err(Interrupted { signal }),
        None => Ok(()),
    }
}

/// [`go_on`], after a run on workers: one in this process, which a stop signal ends by
/// stopping its workers, or one in a process the bench ran (a `--fresh` run, an `mpirun`
/// job), which was sent the signal on and did the same.
fn go_on_after_run() -> Result<(), LaunchError> {
    go_on().map_err(|Interrupted { signal }| LaunchError::Interrupted { signal })
}

/// A stop signal that came while no run of the bench was going: between two runs or hops,
/// or while it timed the force kernels, which run on no workers. There was nothing to stop;
/// the bench ends, and exits as the signal asks.
#[derive(Debug, thiserror::Error)]
#[error("interrupted by {signal}")]
pub(crate) struct Interrupted {
    pub(crate) signal: ringleader::StopSignal,
}

/// The exit of a bench that has shown everything: a stop signal that came while it was
/// shown or written found nothing left to stop, and is named rather than swallowed.
fn complete() -> ExitCode {
    match ringleader::stop_signal() {
        Some(signal) => {
            super::say(&format!(
                "ringleader: {signal} came after the last run; the bench is complete"
            ));
            ExitCode::from(signal.exit_code())
        }
        None => ExitCode::SUCCESS,
    }
}

fn table(mut args: TableArgs) -> anyhow::Result<ExitCode> {
    if args.transports.contains(&TransportArg::MpiRaw) {
        return usage("mpi-raw measures a hop only: use it with bench hop");
    }
    args.modes
        .extend(args.transports.iter().map(|&t| TransportArg::mode(t)));
    // `-n 1000,1000` asks for one row, not two that would share a serial baseline.
    first_of_each(&mut args.n);
    first_of_each(&mut args.workers);
    first_of_each(&mut args.algorithms);
    if args.modes.contains(&BenchMode::Mpi) && !cfg!(feature = "mpi") {
        return usage(NEEDS_MPI);
    }
    if let Some(&n) = args
        .n
        .iter()
        .find(|&&n| args.workers.iter().any(|&p| p > n))
    {
        return usage(format!(
            "-n {n} has fewer particles than the workers asked for"
        ));
    }
    // The outputs are written after the work, but a bad path fails before it.
    let files: Vec<Output<'_>> = [
        Output::new("--csv", args.csv.as_ref()),
        Output::new("--json", args.json.as_ref()),
        Output::new("--plot", args.plot.as_ref()),
    ]
    .into_iter()
    .flatten()
    .collect();
    // With a file on stdout, the tables go to stderr.
    let to_stderr = outputs::check(&files)?;
    check_limits(&args)?;
    let _signals = ringleader::catch_stop_signals();
    if args.one {
        return one(&args);
    }
    let rows = measure(&args)?;
    let n = kernel_n(&args.n);
    let kernel_rows = kernels(n, 1)?;
    show(&render(&rows), to_stderr)?;
    if rows.iter().any(|r| r.mode == BenchMode::Mpi.name()) {
        show(MPI_ROWS, to_stderr)?;
    }
    show(pages_line(), to_stderr)?;
    show(
        &format!(
            "\nforce kernels at n = {n} (the largest n, at most {KERNEL_N_MAX}: they check all n² pairs)\n{}",
            kernel_table(&kernel_rows)
        ),
        to_stderr,
    )?;
    if let Some(path) = &args.csv {
        outputs::write(path, |out| write_csv(&rows, out))
            .with_context(|| format!("cannot write {}", outputs::shown(path)))?;
    }
    if let Some(path) = &args.json {
        outputs::write(path, |out| {
            serde_json::to_writer_pretty(&mut *out, &rows).map_err(std::io::Error::from)?;
            out.write_all(b"\n")
        })
        .with_context(|| format!("cannot write {}", outputs::shown(path)))?;
    }
    if let Some(path) = &args.plot {
        let svg = plot::svg(&rows)?;
        outputs::write(path, |out| out.write_all(svg.as_bytes()))
            .with_context(|| format!("cannot write {}", outputs::shown(path)))?;
    }
    Ok(complete())
}

/// The most particles the kernel table below a bench table runs at. It checks all n²
/// pairs on one core: at n = 10⁶ that takes hours.
const KERNEL_N_MAX: usize = 16_000;

/// The n the kernel table runs at: the largest of the table's, but at most
/// [`KERNEL_N_MAX`].
fn kernel_n(ns: &[usize]) -> usize {
    ns.iter().copied().max().unwrap_or(2000).min(KERNEL_N_MAX)
}

/// Prints to stdout. A reader that went away (`| head`) is not an error worth a word.
fn emit(text: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other.context("cannot write to stdout"),
    }
}

/// Prints to stdout, or to stderr when a file goes to stdout.
fn show(text: &str, to_stderr: bool) -> anyhow::Result<()> {
    if to_stderr {
        eprint!("{text}");
        Ok(())
    } else {
        emit(text)
    }
}

/// Refuses, before any work, a table whose largest run cannot fit in memory or whose
/// largest ring of processes needs more file descriptors than this process may open.
fn check_limits(args: &TableArgs) -> anyhow::Result<()> {
    let modes = bench_modes(args);
    for &n in &args.n {
        for &algorithm in &args.algorithms {
            for &mode in &modes {
                let counts: &[usize] = if mode == BenchMode::Serial {
                    &[1]
                } else {
                    &args.workers
                };
                for &workers in counts {
                    // Independent runs hold, together, about what one serial run does.
                    let simulated = match (mode, mode.mode(workers)) {
                        (BenchMode::Independent, _) => Mode::Serial,
                        (_, Some(simulated)) => simulated,
                        (_, None) => continue,
                    };
                    // The table keeps the start of every n while each run copies it.
                    let need = limits::start_bytes(n).saturating_add(limits::run_bytes(
                        n,
                        simulated,
                        algorithm.into(),
                        0,
                    ));
                    limits::ensure_memory(need, || {
                        format!(
                            "bench -n {n} ({} {} on {workers})",
                            Algorithm::from(algorithm).name(),
                            mode.name()
                        )
                    })?;
                }
            }
        }
    }
    if modes.contains(&BenchMode::Processes)
        && let Some(&workers) = args.workers.iter().max()
    {
        limits::ensure_descriptors(workers, &format!("bench -p {workers}"))?;
    }
    Ok(())
}

/// The modes a table measures, each once, serial first.
fn bench_modes(args: &TableArgs) -> Vec<BenchMode> {
    let mut modes = args.modes.clone();
    modes.sort_by_key(|&m| m != BenchMode::Serial);
    first_of_each(&mut modes);
    modes
}

/// Keeps the first of each value, in order.
fn first_of_each<T: PartialEq + Copy>(values: &mut Vec<T>) {
    let mut seen = Vec::with_capacity(values.len());
    values.retain(|&value| {
        let new = !seen.contains(&value);
        seen.push(value);
        new
    });
}

/// Every combination, serial listed first at each n and algorithm so the others can be
/// compared with it. The `repeat` runs of the combinations at one n and algorithm take
/// turns, each round starting one combination later ([`turns`]), and each keeps its
/// fastest: a noisy spell on the machine then slows one run of every combination, rather
/// than every run of one, and no combination always runs first.
fn measure(args: &TableArgs) -> anyhow::Result<Vec<Row>> {
    let mut rows: Vec<Row> = Vec::new();
    let modes = bench_modes(args);
    let algorithms = &args.algorithms;
    for &n in &args.n {
        // Made once per n, when a row in this process first needs it.
        let mut start = None;
        for &algorithm in algorithms {
            let combinations: Vec<(BenchMode, usize)> = modes
                .iter()
                .flat_map(|&mode| {
                    let counts: &[usize] = if mode == BenchMode::Serial {
                        &[1]
                    } else {
                        &args.workers
                    };
                    counts.iter().map(move |&workers| (mode, workers))
                })
                .collect();
            let mut best: Vec<Option<Row>> = vec![None; combinations.len()];
            let mut times: Vec<Vec<f64>> = vec![Vec::new(); combinations.len()];
            for round in 0..args.repeat {
                for k in turns(combinations.len(), round) {
                    let (mode, workers) = combinations[k];
                    go_on().context("the bench was stopped between runs")?;
                    // mpi rows are jobs of their own either way.
                    let row = if args.fresh && mode != BenchMode::Mpi {
                        fresh_once(args, n, mode, algorithm, workers)?
                    } else {
                        let start = start.get_or_insert_with(|| Start::initial(n));
                        once(
                            Cow::Borrowed(start),
                            args.steps,
                            mode,
                            algorithm.into(),
                            workers,
                            args.balance_every,
                        )?
                    };
                    times[k].push(row.seconds);
                    if best[k].as_ref().is_none_or(|b| row.seconds < b.seconds) {
                        best[k] = Some(row);
                    }
                }
            }
            for (row, times) in best.iter_mut().zip(&mut times) {
                if let Some(row) = row {
                    row.median_seconds = median(times);
                }
            }
            let mut serial_seconds = None;
            let measured = best.into_iter().zip(combinations);
            for (mut row, (mode, workers)) in measured.filter_map(|(row, c)| Some((row?, c))) {
                if mode == BenchMode::Serial {
                    serial_seconds = Some(row.seconds);
                }
                row.speedup = serial_seconds.map(|s| s / row.seconds);
                row.efficiency = row.speedup.map(|s| s / workers as f64);
                rows.push(row);
            }
        }
    }
    compare(&mut rows);
    Ok(rows)
}

/// "1 worker", "2 workers".
fn workers_named(workers: usize) -> String {
    match workers {
        1 => "1 worker".to_owned(),
        _ => format!("{workers} workers"),
    }
}

/// The median of `times`, which it sorts: the mean of the middle two of an even count.
fn median(times: &mut [f64]) -> f64 {
    times.sort_by(f64::total_cmp);
    match times.len() {
        0 => f64::NAN,
        len if len % 2 == 1 => times[len / 2],
        len => (times[len / 2 - 1] + times[len / 2]) / 2.0,
    }
}

/// Fills in the columns that set a row beside another of the same run: `vs_allpairs` on
/// cells rows, `vs_independent` on every row but the independent ones.
fn compare(rows: &mut [Row]) {
    let keys: Vec<_> = rows
        .iter()
        .map(|r| (r.mode, r.algorithm, r.n, r.workers, r.seconds))
        .collect();
    // The seconds of the row of `mode` and `algorithm` at the n and workers of `row`.
    let seconds = |row: &Row, mode: &str, algorithm: &str| {
        keys.iter()
            .find(|k| (k.0, k.1, k.2, k.3) == (mode, algorithm, row.n, row.workers))
            .map(|k| k.4)
    };
    let (cells, allpairs) = (Algorithm::Cells.name(), Algorithm::AllPairs.name());
    let independent = BenchMode::Independent.name();
    for row in rows.iter_mut() {
        if row.algorithm == cells {
            row.vs_allpairs = seconds(row, row.mode, allpairs).map(|s| s / row.seconds);
        }
        if row.mode != independent {
            row.vs_independent = seconds(row, independent, row.algorithm).map(|s| s / row.seconds);
        }
    }
}

/// The order in which round `round` runs `len` combinations: each round starts one later
/// than the last, so that no combination always runs first, on the memory the machine has
/// touched least lately, or always right after the same one.
fn turns(len: usize, round: usize) -> impl Iterator<Item = usize> {
    (0..len).map(move |i| (round + i) % len)
}

/// One run of `start`: a borrowed start is copied for the run before the clock starts,
/// an owned one is the run's own.
fn once(
    start: Cow<'_, Start>,
    steps: usize,
    mode: BenchMode,
    algorithm: Algorithm,
    workers: usize,
    balance_every: u64,
) -> anyhow::Result<Row> {
    let n = start.particles.len();
    let simulated = match (mode, mode.mode(workers)) {
        (BenchMode::Independent, _) => return independent_once(n, steps, algorithm, workers),
        (_, Some(simulated)) => simulated,
        (_, None) => return mpi_once(n, steps, algorithm, workers, balance_every),
    };
    let mut run = Run::new(start.into_owned(), steps as u64, DEFAULT_DT, false);
    run.balance_every = balance_every;
    reset_peak_rss();
    let started = Instant::now();
    let (outcome, _) = uninterrupted(simulate_with(
        run,
        simulated,
        algorithm,
        Box::new(Unwatched),
    ))
    .with_context(|| {
        format!(
            "{} {} run with {} failed",
            algorithm.name(),
            mode.name(),
            workers_named(workers)
        )
    })?;
    let seconds = started.elapsed().as_secs_f64();
    let stats = &outcome.workers;
    // Serial runs are a ring of one worker, and the threads mode shares memory: neither
    // talks between workers, so neither has a share of time talking or a depth.
    let ring = matches!(mode, BenchMode::Processes | BenchMode::RingThreads);
    let comm_fraction = (ring && !stats.is_empty()).then(|| {
        stats
            .iter()
            .map(|s| s.comm_seconds / (s.comm_seconds + s.compute_seconds).max(f64::MIN_POSITIVE))
            .sum::<f64>()
            / stats.len() as f64
    });
    let worker_rss_bytes = if mode == BenchMode::Processes {
        stats.iter().filter_map(|s| s.peak_rss).max()
    } else {
        None
    };
    Ok(Row {
        comm_fraction,
        coordinator_rss_bytes: peak_rss(),
        worker_rss_bytes,
        depth: outcome.depth.filter(|_| ring),
        ..Row::timed(mode, algorithm, n, workers, steps, seconds)
    })
}

/// A run's result, unless a stop signal (SIGINT, SIGTERM, SIGHUP) came during it. A run on
/// workers that wait for the coordinator every step stops at a step boundary and returns
/// what it did; one the signal reached after its last step returns all of it. Either way
/// the bench ends there, as [`LaunchError::Interrupted`] (which exits as the signal asks),
/// rather than time a run cut short or carry on as if nothing had been asked.
fn uninterrupted<T>(result: Result<T, LaunchError>) -> Result<T, LaunchError> {
    let done = result?;
    go_on_after_run()?;
    Ok(done)
}

/// What a process started by [`fresh_once`] measured: its row's own numbers, which
/// [`one`] prints.
#[derive(Debug, serde::Deserialize)]
struct Measured {
    seconds: f64,
    comm_fraction: Option<f64>,
    coordinator_rss_bytes: Option<u64>,
    worker_rss_bytes: Option<u64>,
    depth: Option<f64>,
}

/// The arguments of `bench --one` that measure `mode` on `workers` with `algorithm` at `n`,
/// as `args` asks.
fn one_args(
    args: &TableArgs,
    n: usize,
    mode: BenchMode,
    algorithm: BenchAlgorithm,
    workers: usize,
) -> Vec<String> {
    let algorithm = Algorithm::from(algorithm).name();
    [
        "bench",
        "--one",
        "-n",
        &n.to_string(),
        "-p",
        &workers.to_string(),
        "-s",
        &args.steps.to_string(),
        "--modes",
        mode.name(),
        "--algorithms",
        algorithm,
        "--balance-every",
        &args.balance_every.to_string(),
    ]
    .map(str::to_owned)
    .to_vec()
}

/// One run in a new process of this program (`bench --one`), which makes the initial
/// state, measures the run as [`once`] does, and prints what it measured.
fn fresh_once(
    args: &TableArgs,
    n: usize,
    mode: BenchMode,
    algorithm: BenchAlgorithm,
    workers: usize,
) -> anyhow::Result<Row> {
    let program =
        std::env::current_exe().context("cannot find this program to run each row afresh")?;
    let one = one_args(args, n, mode, algorithm, workers);
    let output = child::output(
        std::process::Command::new(&program)
            .args(&one)
            .env(PARENT_VAR, std::process::id().to_string())
            .stdin(std::process::Stdio::null()),
    )
    .with_context(|| format!("cannot run {}", program.display()))?;
    // A stop signal was sent on to the run, which ended as it asked (or finished first):
    // either way the bench ends here.
    go_on_after_run().with_context(|| {
        format!(
            "{} {} run with {} (in a process of its own) failed",
            Algorithm::from(algorithm).name(),
            mode.name(),
            workers_named(workers)
        )
    })?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        let why = last_line(&output.stderr);
        let why = why.strip_prefix("ringleader: ").unwrap_or(&why);
        anyhow::bail!("{why} ({})", output.status);
    }
    let measured: Measured = serde_json::from_str(stdout.trim())
        .with_context(|| format!("the fresh run printed no row: {stdout:?}"))?;
    Ok(Row {
        comm_fraction: measured.comm_fraction,
        coordinator_rss_bytes: measured.coordinator_rss_bytes,
        worker_rss_bytes: measured.worker_rss_bytes,
        depth: measured.depth,
        ..Row::timed(
            mode,
            algorithm.into(),
            n,
            workers,
            args.steps,
            measured.seconds,
        )
    })
}

/// Names, in the environment of a process that `--fresh` starts, the bench that started
/// it.
const PARENT_VAR: &str = "RINGLEADER_BENCH_PARENT";

/// `bench --one`: the one combination `args` names, measured once in this process, its
/// row printed as JSON.
fn one(args: &TableArgs) -> anyhow::Result<ExitCode> {
    // A run that `--fresh` started dies with its bench, and its workers with it: a bench
    // that is killed leaves nothing running. The check after arming closes the race where
    // the bench died first.
    if let Some(parent) = std::env::var(PARENT_VAR)
        .ok()
        .and_then(|p| p.parse::<i32>().ok())
    {
        let armed = nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL).is_ok();
        if !armed || nix::unistd::getppid().as_raw() != parent {
            anyhow::bail!("the bench that started this run is gone");
        }
    }
    let modes = bench_modes(args);
    let (&[n], &[mode], &[algorithm], &[workers]) = (
        &args.n[..],
        &modes[..],
        &args.algorithms[..],
        &args.workers[..],
    ) else {
        return usage("--one measures one n, mode, algorithm and worker count");
    };
    let row = if mode == BenchMode::Independent {
        // Each run makes a start of its own share.
        independent_once(n, args.steps, algorithm.into(), workers)?
    } else {
        // The run's own start, as a user's run has: no second copy of it in memory.
        let start = Cow::Owned(Start::initial(n));
        once(
            start,
            args.steps,
            mode,
            algorithm.into(),
            workers,
            args.balance_every,
        )?
    };
    emit(&format!("{}\n", serde_json::to_string(&row)?))?;
    Ok(ExitCode::SUCCESS)
}

/// `workers` serial runs at once, one per thread, each a `workers`-th of the serial run's
/// work ([`shares`]): the textbook's initial state for its particle count, in a box of its
/// own at the same density. Nothing is split, exchanged or gathered, so the row's time is
/// the least `workers` cores of this machine take for the work: the other modes' speedups
/// on `workers` are bounded by its speedup, which is below `workers` where one busy core
/// runs faster than each of several (a clock that boosts for one core, a shared memory bus,
/// neighbours on a shared host). Each run's initial state is made before the clock starts,
/// as every mode's is.
fn independent_once(
    n: usize,
    steps: usize,
    algorithm: Algorithm,
    workers: usize,
) -> anyhow::Result<Row> {
    let runs: Vec<Run> = shares(n, workers, algorithm)
        .into_iter()
        .map(|share| Run::new(Start::initial(share), steps as u64, DEFAULT_DT, false))
        .collect();
    reset_peak_rss();
    let started = Instant::now();
    std::thread::scope(|scope| -> anyhow::Result<()> {
        let mut handles = Vec::with_capacity(runs.len());
        for run in runs {
            let simulate = move || {
                uninterrupted(simulate_with(
                    run,
                    Mode::Serial,
                    algorithm,
                    Box::new(Unwatched),
                ))
                .map(|_| ())
            };
            // Runs already started finish before the scope returns the error.
            let handle = std::thread::Builder::new()
                .spawn_scoped(scope, simulate)
                .context("no thread for an independent run")?;
            handles.push(handle);
        }
        for handle in handles {
            handle
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))?;
        }
        Ok(())
    })
    .with_context(|| {
        format!(
            "{} independent runs on {workers} threads failed",
            algorithm.name()
        )
    })?;
    let seconds = started.elapsed().as_secs_f64();
    Ok(Row {
        coordinator_rss_bytes: peak_rss(),
        ..Row::timed(
            BenchMode::Independent,
            algorithm,
            n,
            workers,
            steps,
            seconds,
        )
    })
}

/// The particle counts of `parts` runs that together do the work of one run of `n`: `n`
/// cut as evenly as whole particles allow for cells, whose work grows as `n`; `parts` runs
/// of `n / √parts` for all pairs, whose work grows as `n²`. None is empty.
fn shares(n: usize, parts: usize, algorithm: Algorithm) -> Vec<usize> {
    match algorithm {
        Algorithm::Cells => (0..parts)
            .map(|k| n * (k + 1) / parts - n * k / parts)
            .filter(|&share| share > 0)
            .collect(),
        Algorithm::AllPairs => {
            let share = (n as f64 / (parts as f64).sqrt()).round().max(1.0) as usize;
            vec![share; parts]
        }
    }
}

/// An MPI world per run: `mpirun -n workers` of this program's `particles --transport mpi`,
/// timed by rank 0's own line, which covers the simulation but not starting the ranks and
/// MPI.
#[cfg(feature = "mpi")]
fn mpi_once(
    n: usize,
    steps: usize,
    algorithm: Algorithm,
    workers: usize,
    balance_every: u64,
) -> anyhow::Result<Row> {
    let program =
        std::env::current_exe().context("cannot find this program to run under mpirun")?;
    let (n_arg, s_arg) = (n.to_string(), steps.to_string());
    let mut args = vec![
        "particles",
        "-n",
        &n_arg,
        "-s",
        &s_arg,
        "--transport",
        "mpi",
        "--algorithm",
        algorithm.name(),
    ];
    let every = balance_every.to_string();
    if algorithm == Algorithm::Cells {
        args.extend(["--balance-every", &every]);
    }
    let stdout = mpirun(workers, &program, &args)?;
    let seconds = stdout
        .lines()
        .find_map(|line| line.split_once(" simulation took "))
        .and_then(|(_, rest)| rest.split_whitespace().next()?.parse::<f64>().ok())
        .filter(|&s| s > 0.0)
        .with_context(|| format!("the mpi run printed no timing line: {stdout:?}"))?;
    Ok(Row::timed(
        BenchMode::Mpi,
        algorithm,
        n,
        workers,
        steps,
        seconds,
    ))
}

#[cfg(not(feature = "mpi"))]
fn mpi_once(_: usize, _: usize, _: Algorithm, _: usize, _: u64) -> anyhow::Result<Row> {
    usage(NEEDS_MPI)
}

/// Runs `mpirun -n ranks PROGRAM ARGS` and returns its stdout; a failed job's error is the
/// last line it wrote on stderr.
///
/// The job dies with this bench: `mpirun` gets SIGTERM, on which it stops its ranks, when
/// the bench is gone, however it ended.
#[cfg(feature = "mpi")]
fn mpirun(ranks: usize, program: &Path, args: &[&str]) -> anyhow::Result<String> {
    use std::os::unix::process::CommandExt;
    let mut command = Command::new("mpirun");
    command
        .args(["--allow-run-as-root", "--oversubscribe", "-n"])
        .arg(ranks.to_string())
        .arg(program)
        .args(args)
        .stdin(Stdio::null());
    let bench = std::process::id();
    // SAFETY: the closure runs in the child between fork and exec, where only
    // async-signal-safe calls may be made: it makes two system calls, and allocates and
    // locks nothing (an `io::Error` from an OS error code holds just the code).
    unsafe {
        command.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The bench died before the signal was armed: start nothing.
            if u32::try_from(libc::getppid()).ok() != Some(bench) {
                return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        });
    }
    let output =
        child::output(&mut command).context("cannot start mpirun (apt-get install openmpi-bin)")?;
    // A stop signal was sent on to mpirun, which passed it on to its ranks.
    go_on_after_run().with_context(|| format!("mpirun -n {ranks} {} failed", args.join(" ")))?;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    if !output.status.success() {
        anyhow::bail!(
            "mpirun -n {ranks} {} failed ({}): {}",
            args.join(" "),
            output.status,
            last_line(&output.stderr)
        );
    }
    Ok(stdout)
}

/// The last line with anything on it of a child's `stderr`: why it failed.
fn last_line(stderr: &[u8]) -> String {
    String::from_utf8_lossy(stderr)
        .lines()
        .rfind(|l| !l.trim().is_empty())
        .unwrap_or("no message")
        .to_owned()
}

fn render(rows: &[Row]) -> String {
    let mut out = format!(
        "{:<12} {:<9} {:>6} {:>7} {:>5} {:>9} {:>9} {:>17} {:>7} {:>10} {:>6} {:>15} {:>10} {:>11} {:>5} {:>14}\n",
        "mode",
        "algorithm",
        "n",
        "workers",
        "steps",
        "seconds",
        "median",
        "pair_checks_per_s",
        "speedup",
        "efficiency",
        "comm",
        "coordinator_rss",
        "worker_rss",
        "vs_allpairs",
        "depth",
        "vs_independent"
    );
    for r in rows {
        let _ = writeln!(
            out,
            "{:<12} {:<9} {:>6} {:>7} {:>5} {:>9.4} {:>9.4} {:>17.3e} {:>7} {:>10} {:>6} {:>15} {:>10} {:>11} {:>5} {:>14}",
            r.mode,
            r.algorithm,
            r.n,
            r.workers,
            r.steps,
            r.seconds,
            r.median_seconds,
            r.pair_checks_per_s,
            opt(r.speedup, |v| format!("{v:.2}")),
            opt(r.efficiency, |v| format!("{v:.2}")),
            opt(r.comm_fraction, |v| format!("{:.1}%", v * 100.0)),
            opt(r.coordinator_rss_bytes, mib),
            opt(r.worker_rss_bytes, mib),
            opt(r.vs_allpairs, |v| format!("{v:.1}x")),
            opt(r.depth, |v| format!("{v:.2}")),
            opt(r.vs_independent, |v| format!("{v:.2}")),
        );
    }
    out
}

fn opt<T>(value: Option<T>, show: impl FnOnce(T) -> String) -> String {
    value.map_or_else(|| "-".to_owned(), show)
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / f64::from(1 << 20))
}

fn write_csv(rows: &[Row], out: &mut dyn Write) -> std::io::Result<()> {
    let mut writer = csv::Writer::from_writer(out);
    for row in rows {
        writer.serialize(row)?;
    }
    writer.flush()
}

/// Every kernel this CPU runs on every pair of the textbook's initial state for `n`
/// particles.
fn kernels(n: usize, repeat: usize) -> Result<Vec<KernelRow>, Interrupted> {
    let particles = initial_state(n);
    let bodies: Vec<Body> = particles
        .x
        .iter()
        .zip(&particles.y)
        .map(|(&x, &y)| Body {
            x,
            y,
            ..Body::default()
        })
        .collect();
    let mut hits: Vec<Hit> = Vec::new();
    // Each pass starts only if no stop signal has come.
    let mut time = |pass: &mut dyn FnMut(&mut Vec<Hit>)| {
        let mut fastest = f64::INFINITY;
        for _ in 0..repeat {
            go_on()?;
            hits.clear();
            let started = Instant::now();
            pass(&mut hits);
            fastest = fastest.min(started.elapsed().as_secs_f64());
        }
        Ok::<f64, Interrupted>(fastest)
    };
    let pairs = (n * n) as f64;
    let direct = time(&mut |hits| kernel::direct(&bodies, &bodies, 0, hits))?;
    let mut rows = vec![("direct (AoS)", direct)];
    for kind in Kernel::supported_kernels() {
        let (x, y) = (&particles.x, &particles.y);
        let seconds = time(&mut |hits| kind.collect_hits(x, y, x, y, 0, hits))?;
        rows.push((kind.name(), seconds));
    }
    Ok(rows
        .into_iter()
        .map(|(kernel, seconds)| KernelRow {
            kernel,
            n,
            seconds,
            pair_checks_per_s: pairs / seconds,
            vs_direct: direct / seconds,
        })
        .collect())
}

fn kernel_table(rows: &[KernelRow]) -> String {
    let mut out = format!(
        "{:<14} {:>6} {:>9} {:>17} {:>9}\n",
        "kernel", "n", "seconds", "pair_checks_per_s", "vs_direct"
    );
    for r in rows {
        let _ = writeln!(
            out,
            "{:<14} {:>6} {:>9.4} {:>17.3e} {:>8.2}x",
            r.kernel, r.n, r.seconds, r.pair_checks_per_s, r.vs_direct
        );
    }
    out
}

/// The fastest of `repeat` hops on each transport, taking turns so all see the same
/// conditions. Processes go first: forking needs this process to have no other thread.
fn hops(args: &HopArgs) -> anyhow::Result<Vec<(TransportArg, HopReport)>> {
    let mut transports: Vec<TransportArg> = Vec::new();
    for &t in [
        TransportArg::Processes,
        TransportArg::Threads,
        TransportArg::Mpi,
        TransportArg::MpiRaw,
    ]
    .iter()
    .filter(|t| args.transports.contains(t))
    {
        transports.push(t);
    }
    let mut best: Vec<(TransportArg, HopReport)> = Vec::new();
    for _ in 0..args.repeat {
        for (i, &transport) in transports.iter().enumerate() {
            go_on().context("the bench was stopped between hops")?;
            let on = |transport| {
                uninterrupted(hop(transport, args.workers, args.bytes, args.rounds))
                    .map_err(anyhow::Error::from)
            };
            let report = match transport {
                TransportArg::Processes => on(Transport::Processes),
                TransportArg::Threads => on(Transport::Threads),
                TransportArg::Mpi => mpi_hop(args, false),
                TransportArg::MpiRaw => mpi_hop(args, true),
            }
            .with_context(|| format!("the {} hop failed", transport_name(transport)))?;
            match best.get_mut(i) {
                Some((_, b)) if b.seconds <= report.seconds => {}
                Some((_, b)) => *b = report,
                None => best.push((transport, report)),
            }
        }
    }
    Ok(best)
}

fn transport_name(transport: TransportArg) -> &'static str {
    match transport {
        TransportArg::Processes => "processes",
        TransportArg::Threads => "threads",
        TransportArg::Mpi => "mpi",
        TransportArg::MpiRaw => "mpi-raw",
    }
}

/// The mpi hop: an `mpirun -n workers` job of this program, whose rank 0 prints the
/// seconds and the largest worker's memory; with `raw`, the same of bare `MPI_Sendrecv`.
#[cfg(feature = "mpi")]
fn mpi_hop(args: &HopArgs, raw: bool) -> anyhow::Result<HopReport> {
    let program =
        std::env::current_exe().context("cannot find this program to run under mpirun")?;
    let (bytes, rounds) = (args.bytes.to_string(), args.rounds.to_string());
    let mut rank_args = vec![
        "bench",
        "hop",
        "--mpi-rank",
        "--bytes",
        &bytes,
        "--rounds",
        &rounds,
    ];
    if raw {
        rank_args.push("--raw");
    }
    let stdout = mpirun(args.workers, &program, &rank_args)?;
    let mut fields = stdout
        .lines()
        .find_map(|l| l.strip_prefix("mpi hop: "))
        .with_context(|| format!("the mpi hop printed no result: {stdout:?}"))?
        .split_whitespace();
    let seconds: f64 = fields
        .next()
        .and_then(|s| s.parse().ok())
        .filter(|&s: &f64| s > 0.0)
        .with_context(|| format!("the mpi hop printed no seconds: {stdout:?}"))?;
    let worker_peak_rss = fields.next().and_then(|s| s.parse().ok());
    let words = args.bytes / size_of::<f64>();
    let moved = (words * size_of::<f64>() * (args.workers - 1) * args.rounds) as f64;
    Ok(HopReport {
        transport: Transport::Mpi,
        workers: args.workers,
        bytes: words * size_of::<f64>(),
        rounds: args.rounds,
        seconds,
        bytes_per_second: moved / seconds,
        worker_peak_rss,
    })
}

#[cfg(not(feature = "mpi"))]
fn mpi_hop(_: &HopArgs, _: bool) -> anyhow::Result<HopReport> {
    usage(NEEDS_MPI)
}

/// This process as a rank of the mpi hop's job: one hop over all the job's ranks (an MPI
/// process runs one world), printed by rank 0 for the `bench hop` that started the job.
#[cfg(feature = "mpi")]
fn mpi_rank_hop(args: &HopArgs) -> anyhow::Result<ExitCode> {
    let ranks = ringleader::mpi_world_size()?;
    let report = if args.raw {
        ringleader::bench::mpi_raw_hop(args.bytes, args.rounds)?
    } else {
        hop(Transport::Mpi, ranks, args.bytes, args.rounds)?
    };
    emit(&format!(
        "mpi hop: {} {}\n",
        report.seconds,
        opt(report.worker_peak_rss, |b| b.to_string())
    ))?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(not(feature = "mpi"))]
fn mpi_rank_hop(_: &HopArgs) -> anyhow::Result<ExitCode> {
    usage(NEEDS_MPI)
}

fn hop_table(reports: &[(TransportArg, HopReport)]) -> String {
    let threads = reports
        .iter()
        .find(|(t, _)| *t == TransportArg::Threads)
        .map(|(_, r)| r.bytes_per_second);
    let raw = reports
        .iter()
        .find(|(t, _)| *t == TransportArg::MpiRaw)
        .map(|(_, r)| r.bytes_per_second);
    let mut out = format!(
        "{:<10} {:>7} {:>10} {:>6} {:>9} {:>10} {:>10} {:>10} {:>10} {:>10}\n",
        "transport",
        "workers",
        "bytes",
        "rounds",
        "seconds",
        "GB/s",
        "vs_threads",
        "worker_rss",
        "us_per_hop",
        "vs_mpi_raw"
    );
    for (transport, r) in reports {
        // A round is workers - 1 hops, all ranks at once.
        let hops = (r.rounds * r.workers.saturating_sub(1)).max(1) as f64;
        let _ = writeln!(
            out,
            "{:<10} {:>7} {:>10} {:>6} {:>9.4} {:>10.2} {:>10} {:>10} {:>10.3} {:>10}",
            transport_name(*transport),
            r.workers,
            r.bytes,
            r.rounds,
            r.seconds,
            r.bytes_per_second / 1e9,
            opt(threads, |t| format!("{:.2}x", r.bytes_per_second / t)),
            opt(r.worker_peak_rss, mib),
            r.seconds / hops * 1e6,
            opt(raw, |t| format!("{:.2}x", r.bytes_per_second / t)),
        );
    }
    out
}

/// A path for the SVG plot: one that ends in another picture's extension (`scaling.png`)
/// would hold SVG under a name that says otherwise. A name without an extension (`-`, a
/// FIFO, `/dev/stdout`) is the user's to choose.
fn svg_path(text: &str) -> Result<PathBuf, String> {
    let path = PathBuf::from(text);
    match path.extension() {
        Some(extension) if !extension.eq_ignore_ascii_case("svg") => Err(format!(
            "the plot is an SVG: give a file name ending in .svg, like scaling.svg, not .{}",
            extension.to_string_lossy()
        )),
        _ => Ok(path),
    }
}

/// At least one 8-byte word: a block of fewer bytes would be empty.
fn a_word_or_more(text: &str) -> Result<usize, String> {
    match positive(text)? {
        1..8 => Err("a block is whole 8-byte words: give at least 8".to_owned()),
        value => Ok(value),
    }
}

fn at_least_two(text: &str) -> Result<usize, String> {
    match positive(text)? {
        1 => Err("a hop needs at least 2 workers".to_owned()),
        value => Ok(value),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_median_of_an_odd_count_is_the_middle_run_and_of_an_even_one_the_mean_of_two() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut [4.0, 1.0, 3.0, 2.0]), 2.5);
        assert_eq!(median(&mut [7.0]), 7.0);
        assert!(median(&mut []).is_nan());
    }

    /// The kernels check all n² pairs: at n = 10⁶ a table would never end.
    #[test]
    fn the_kernel_table_runs_at_the_largest_n_up_to_16000() {
        assert_eq!(kernel_n(&[300, 2000]), 2000);
        assert_eq!(kernel_n(&[2000, 1_000_000]), 16_000);
        assert_eq!(kernel_n(&[]), 2000);
    }

    /// A fresh process measures the very combination the table asked for.
    #[test]
    fn a_fresh_run_is_asked_for_the_combination_of_its_row() {
        #[derive(clap::Parser)]
        struct Command {
            #[command(flatten)]
            args: Args,
        }
        let parse = |line: &[String]| {
            let parsed = <Command as clap::Parser>::try_parse_from(line).expect("parses");
            assert!(parsed.args.what.is_none());
            parsed.args.table
        };
        let base =
            parse(&["bench", "-s", "7", "--balance-every", "3", "--fresh"].map(String::from));
        let cases = [
            (2000, BenchMode::Serial, BenchAlgorithm::Allpairs, 1),
            (16000, BenchMode::Processes, BenchAlgorithm::Cells, 4),
            (5, BenchMode::Independent, BenchAlgorithm::Cells, 3),
            (300, BenchMode::RingThreads, BenchAlgorithm::Allpairs, 2),
        ];
        for (n, mode, algorithm, workers) in cases {
            let one = parse(&one_args(&base, n, mode, algorithm, workers));
            assert!(one.one && !one.fresh);
            assert_eq!(one.n, [n]);
            assert_eq!(one.modes, [mode]);
            assert_eq!(one.algorithms, [algorithm]);
            assert_eq!(one.workers, [workers]);
            assert_eq!((one.steps, one.balance_every), (7, 3));
            assert!(one.transports.is_empty());
        }
    }

    #[test]
    fn each_combination_takes_every_turn_once_in_as_many_rounds() {
        let len = 5;
        let rounds: Vec<Vec<usize>> = (0..len).map(|r| turns(len, r).collect()).collect();
        for order in &rounds {
            let mut sorted = order.clone();
            sorted.sort_unstable();
            assert_eq!(sorted, (0..len).collect::<Vec<_>>(), "{order:?}");
        }
        for place in 0..len {
            let mut at: Vec<usize> = rounds.iter().map(|order| order[place]).collect();
            at.sort_unstable();
            assert_eq!(at, (0..len).collect::<Vec<_>>(), "turn {place}: {rounds:?}");
        }
        assert_eq!(turns(0, 3).count(), 0);
    }

    #[test]
    fn independent_runs_share_the_work_of_one_run() {
        for (n, parts) in [(10, 3), (1_000_000, 2), (7, 7), (5, 16), (1, 1)] {
            let cut = shares(n, parts, Algorithm::Cells);
            assert_eq!(cut.iter().sum::<usize>(), n, "{n} in {parts}: {cut:?}");
            assert_eq!(cut.len(), parts.min(n), "{n} in {parts}: {cut:?}");
            let (least, most) = (cut.iter().min().unwrap(), cut.iter().max().unwrap());
            assert!(most - least <= 1, "{n} in {parts}: {cut:?}");
        }
        // All pairs: parts × share² pairs, as near n² as whole particles allow.
        for (n, parts) in [(16_000, 2), (16_000, 4), (2000, 3), (1, 4)] {
            let cut = shares(n, parts, Algorithm::AllPairs);
            assert_eq!(cut.len(), parts);
            let pairs: usize = cut.iter().map(|s| s * s).sum();
            let (low, high) = ((n * n) as f64 * 0.99, (n * n) as f64 * 1.01);
            assert!(
                n == 1 || (low..=high).contains(&(pairs as f64)),
                "{n} in {parts}: {cut:?}"
            );
        }
    }
}
