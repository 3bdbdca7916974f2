//! Checkpoint files: where a run writes its checkpoints, and the writer that saves them as
//! the run goes without ever clobbering what a path names. The format itself is
//! [`ringleader_particles::checkpoint`].

use std::ffi::OsStr;
use std::io;
use std::path::{Path, PathBuf};

use anyhow::Context;
use ringleader_particles::checkpoint::{self, Checkpoint};
use ringleader_particles::{Ending, Flow, Outcome, Owners, Run, Snapshot, Watch};

use crate::destination::{self, Destination};

/// Reads the checkpoint in `path`.
///
/// # Errors
/// When the file cannot be read or is not a usable checkpoint; the message names the file.
pub(crate) fn load(path: &Path) -> anyhow::Result<Checkpoint> {
    let bytes = std::fs::read(path)
        .with_context(|| format!("cannot read checkpoint {}", path.display()))?;
    Checkpoint::decode(&bytes).with_context(|| format!("cannot resume from {}", path.display()))
}

/// The file a checkpoint after `step` goes to: `path`, with every `{step}` in it replaced
/// by the step, so a run can keep each checkpoint instead of only the latest.
pub(crate) fn path_at(path: &Path, step: u64) -> PathBuf {
    match path.to_str() {
        Some(text) if text.contains(STEP) => PathBuf::from(text.replace(STEP, &step.to_string())),
        _ => path.to_owned(),
    }
}

/// The placeholder [`path_at`] replaces.
const STEP: &str = "{step}";

/// Whether `path` has a `{step}` placeholder.
pub(crate) fn is_template(path: &Path) -> bool {
    path.to_str().is_some_and(|text| text.contains(STEP))
}

/// The step whose checkpoint [`path_at`]`(template, step)` names `name`, if one does:
/// `template` is a file name, and every `{step}` in it must stand for the same step,
/// written as [`path_at`] writes it.
pub(crate) fn step_named(template: &OsStr, name: &OsStr) -> Option<u64> {
    let (template, name) = (template.to_str()?, name.to_str()?);
    let first = template.split(STEP).next().unwrap_or("");
    let digits = name.strip_prefix(first)?;
    let len = digits.bytes().take_while(u8::is_ascii_digit).count();
    let step: u64 = digits[..len].parse().ok()?;
    (path_at(Path::new(template), step).as_os_str() == name).then_some(step)
}

/// Writes the state `snapshot` shows, of a run with this step length and normalization, to
/// [`path_at`]`(path, step)`, without clobbering what that path names: see
/// [`Destination`].
///
/// # Errors
/// When the file cannot be written.
pub(crate) fn save_snapshot(
    path: &Path,
    snapshot: &Snapshot<'_>,
    dt: f64,
    normalize: bool,
) -> io::Result<()> {
    let bytes = checkpoint::encode_snapshot(snapshot, dt, normalize).map_err(io::Error::other)?;
    Destination::resolve(&path_at(path, snapshot.step))?.write_with(|out| out.write_all(&bytes))
}

/// A checkpoint could not be written.
#[derive(Debug, thiserror::Error)]
#[error("cannot write checkpoint {}", path.display())]
pub(crate) struct WriteError {
    /// The file.
    pub(crate) path: PathBuf,
    /// Why.
    #[source]
    pub(crate) source: io::Error,
}

/// The watch behind `--checkpoint`: it writes a checkpoint every `every` steps while the run
/// goes on, and [`finish`](Checkpointer::finish) writes the one the run ends with. It shows
/// the run to an inner watch too, so it can be put in front of any other.
pub(crate) struct Checkpointer {
    path: PathBuf,
    every: Option<u64>,
    steps: u64,
    dt: f64,
    normalize: bool,
    initial_energy: f64,
    /// The last step written.
    saved: Option<u64>,
    /// Whether stale temporaries of every step's file were looked for.
    swept: bool,
    /// A failed write; the run stops then.
    error: Option<WriteError>,
    inner: Box<dyn Watch>,
}

impl std::fmt::Debug for Checkpointer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Checkpointer")
            .field("path", &self.path)
            .field("every", &self.every)
            .field("saved", &self.saved)
            .finish_non_exhaustive()
    }
}

impl Checkpointer {
    /// Checkpoints `run` to [`path_at`]`(path, step)`: after every step that is a multiple
    /// of `every`, if given, and at the end. The run must take snapshots at those steps
    /// ([`Run::snapshot_every`]).
    pub(crate) fn new(
        path: PathBuf,
        every: Option<u64>,
        run: &Run,
        inner: Box<dyn Watch>,
    ) -> Checkpointer {
        Checkpointer {
            path,
            every,
            steps: run.steps,
            dt: run.dt,
            normalize: run.normalize,
            initial_energy: run.start.initial_energy,
            saved: None,
            swept: false,
            error: None,
            inner,
        }
    }

    /// Takes the checkpointer back from the watch a run returns, or hands the watch back
    /// when it is something else.
    pub(crate) fn take(watch: Box<dyn Watch>) -> Result<Checkpointer, Box<dyn Watch>> {
        let is_checkpointer = (&*watch as &dyn std::any::Any).is::<Checkpointer>();
        if !is_checkpointer {
            return Err(watch);
        }
        let any: Box<dyn std::any::Any> = watch;
        match any.downcast::<Checkpointer>() {
            Ok(checkpointer) => Ok(*checkpointer),
            // Checked just above.
            Err(_) => Err(Box::new(ringleader_particles::Unwatched)),
        }
    }

    /// The watch behind this one.
    pub(crate) fn into_inner(self) -> Box<dyn Watch> {
        self.inner
    }

    /// The last step written, if any.
    #[cfg(test)]
    pub(crate) fn saved(&self) -> Option<u64> {
        self.saved
    }

    /// Writes the checkpoint of the state the run ended with: after its last step, or after
    /// the step where it stopped. A checkpoint the watch already wrote of that step is kept.
    ///
    /// # Errors
    /// A write during the run that failed, or this one failing.
    pub(crate) fn finish(&mut self, outcome: &Outcome) -> Result<(), WriteError> {
        if let Some(err) = self.error.take() {
            return Err(err);
        }
        let step = match outcome.ending {
            Ending::Finished => self.steps,
            Ending::Stopped(step) => step,
        };
        if self.saved == Some(step) {
            return Ok(());
        }
        let snapshot = Snapshot {
            step,
            particles: &outcome.particles,
            owners: &Owners::Blocks(Vec::new()),
            correction: outcome.correction,
            initial_energy: self.initial_energy,
        };
        self.save(&snapshot)
    }

    fn save(&mut self, snapshot: &Snapshot<'_>) -> Result<(), WriteError> {
        if !self.swept {
            self.swept = true;
            self.sweep();
        }
        save_snapshot(&self.path, snapshot, self.dt, self.normalize).map_err(|source| {
            WriteError {
                path: path_at(&self.path, snapshot.step),
                source,
            }
        })?;
        self.saved = Some(snapshot.step);
        Ok(())
    }
}

impl Checkpointer {
    /// A write removes the stale temporaries of its own file; with `{step}` in the file
    /// name, an earlier run killed while writing another step's file left temporaries the
    /// writes of this run would never meet, so look for every step's once.
    fn sweep(&self) {
        if !is_template(&self.path) {
            return;
        }
        let Ok((dir, template)) = destination::split(&self.path) else {
            return;
        };
        if !is_template(dir) {
            destination::remove_stale(dir, |name| step_named(template, name).is_some());
        }
    }
}

impl Watch for Checkpointer {
    fn step(&mut self, step: u64, energy: Option<f64>) -> Flow {
        self.inner.step(step, energy)
    }

    fn snapshot(&mut self, snapshot: &Snapshot<'_>) -> Flow {
        let flow = self.inner.snapshot(snapshot);
        // Snapshots also come after the last step, and may come at steps the inner watch
        // wants: only the multiples of `every` are ours, and `finish` writes the last.
        if !self
            .every
            .is_some_and(|every| snapshot.step.is_multiple_of(every))
        {
            return flow;
        }
        match self.save(snapshot) {
            Ok(()) => flow,
            Err(err) => {
                self.error.get_or_insert(err);
                Flow::Stop
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use ringleader_particles::{Mode, Start, Unwatched, simulate};

    use super::*;

    #[test]
    fn a_step_placeholder_names_one_file_per_step() {
        assert_eq!(
            path_at(Path::new("out/run-{step}.ck"), 40),
            Path::new("out/run-40.ck")
        );
        assert_eq!(path_at(Path::new("run.ck"), 40), Path::new("run.ck"));
    }

    #[test]
    fn a_step_placeholder_matches_the_names_it_makes_and_no_other() {
        let named = |template: &str, name: &str| step_named(OsStr::new(template), OsStr::new(name));
        assert_eq!(named("run-{step}.ck", "run-40.ck"), Some(40));
        assert_eq!(named("run-{step}.ck", "run-0.ck"), Some(0));
        assert_eq!(named("{step}", "7"), Some(7));
        assert_eq!(named("a{step}b{step}", "a12b12"), Some(12));
        assert_eq!(named("a{step}b{step}", "a12b13"), None);
        assert_eq!(named("run-{step}.ck", "run-040.ck"), None);
        assert_eq!(named("run-{step}.ck", "run-.ck"), None);
        assert_eq!(named("run-{step}.ck", "run-40.ck.tmp"), None);
        assert_eq!(named("run-{step}.ck", "other-40.ck"), None);
        assert_eq!(named("run.ck", "run.ck"), None);
    }

    /// A run of 40 particles for `steps` steps, watched by a checkpointer in front of
    /// `inner`; returns the outcome and the checkpointer after `finish`.
    fn checkpointed(
        path: &Path,
        steps: u64,
        every: Option<u64>,
        inner: Box<dyn Watch>,
    ) -> (Outcome, Checkpointer, Result<(), WriteError>) {
        let mut run = Run::new(Start::initial(40), steps, 0.0005, true);
        run.every_step = true;
        run.snapshot_every = every;
        let watch = Box::new(Checkpointer::new(path.to_owned(), every, &run, inner));
        let (outcome, watch) =
            simulate(run, Mode::Ring(3, ringleader::Transport::Threads), watch).expect("run");
        let any: Box<dyn std::any::Any> = watch;
        let mut checkpointer = *any.downcast::<Checkpointer>().expect("same watch");
        let finished = checkpointer.finish(&outcome);
        (outcome, checkpointer, finished)
    }

    fn plain(steps: u64) -> Outcome {
        let run = Run::new(Start::initial(40), steps, 0.0005, true);
        simulate(run, Mode::Serial, Box::new(Unwatched))
            .expect("run")
            .0
    }

    fn read(path: &Path) -> Checkpoint {
        Checkpoint::decode(&std::fs::read(path).expect("read")).expect("decode")
    }

    #[test]
    fn the_checkpointer_writes_at_multiples_of_k_and_at_the_end() {
        let dir = tempfile::tempdir().expect("tempdir");
        let template = dir.path().join("ck-{step}");
        let (_, checkpointer, finished) = checkpointed(&template, 11, Some(4), Box::new(Unwatched));
        finished.expect("finish");
        assert_eq!(checkpointer.saved(), Some(11));
        let mut names: Vec<_> = std::fs::read_dir(dir.path())
            .expect("list")
            .map(|e| e.expect("entry").file_name().into_string().expect("utf-8"))
            .collect();
        names.sort();
        assert_eq!(names, ["ck-11", "ck-4", "ck-8"]);
        for step in [4, 8, 11] {
            let checkpoint = read(&path_at(&template, step));
            assert_eq!(checkpoint.step, step);
            assert_eq!(checkpoint.particles, plain(step).particles);
        }
    }

    /// Stops the run after a given step, as a signal or a user quitting would.
    struct StopAfter(u64);

    impl Watch for StopAfter {
        fn step(&mut self, step: u64, _: Option<f64>) -> Flow {
            if step == self.0 {
                Flow::Stop
            } else {
                Flow::Continue
            }
        }
    }

    #[test]
    fn a_run_stopped_early_is_checkpointed_where_it_stopped_and_resumes_exactly() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("stopped.ck");
        let (outcome, _, finished) = checkpointed(&path, 30, None, Box::new(StopAfter(13)));
        finished.expect("finish");
        assert_eq!(outcome.ending, Ending::Stopped(13));
        let checkpoint = read(&path);
        assert_eq!(checkpoint.step, 13);
        assert_eq!(checkpoint.particles, plain(13).particles);
        // Resumed on another mode, it ends where the uninterrupted run does.
        let run = Run::new(checkpoint.into_start(), 30, 0.0005, true);
        let (resumed, _) = simulate(run, Mode::Threads(2), Box::new(Unwatched)).expect("run");
        let whole = plain(30);
        assert_eq!(resumed.particles, whole.particles);
        assert_eq!(resumed.correction.to_bits(), whole.correction.to_bits());
    }

    #[test]
    fn a_failed_periodic_write_stops_every_mode_and_is_reported() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("gone/every.ck");
        // Without -e and without a per-step watch, the snapshot is the only time the ring
        // hears from the coordinator: the stop must still reach the workers.
        for mode in [
            Mode::Serial,
            Mode::Threads(2),
            Mode::Ring(3, ringleader::Transport::Threads),
        ] {
            let mut run = Run::new(Start::initial(40), 11, 0.0005, false);
            run.snapshot_every = Some(2);
            let watch = Checkpointer::new(path.clone(), Some(2), &run, Box::new(Unwatched));
            let (outcome, watch) = simulate(run, mode, Box::new(watch)).expect("run");
            assert_eq!(outcome.ending, Ending::Stopped(2), "{mode:?}");
            assert_eq!(outcome.particles, plain_without_e(2).particles, "{mode:?}");
            let any: Box<dyn std::any::Any> = watch;
            let mut checkpointer = *any.downcast::<Checkpointer>().expect("same watch");
            let err = checkpointer.finish(&outcome).expect_err("the write fails");
            assert_eq!(err.path, path);
            assert!(err.to_string().starts_with("cannot write checkpoint "));
        }
    }

    fn plain_without_e(steps: u64) -> Outcome {
        let run = Run::new(Start::initial(40), steps, 0.0005, false);
        simulate(run, Mode::Serial, Box::new(Unwatched))
            .expect("run")
            .0
    }
}
