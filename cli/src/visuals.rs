//! What a person looks at during and after a `particles` run: the progress bar, the
//! animated GIF, the final PNG and the live view. One watch drives them all.

use std::any::Any;
use std::io::IsTerminal;
use std::path::PathBuf;

use anyhow::Context;

use super::outputs::{self, Output};
use super::progress::Progress;
use crate::destination::{Destination, Staged};
use crate::live::Live;
use crate::render::{Animation, Frame, owners};
use ringleader_particles::{Ending, Flow, Mode, Outcome, Owners, Run, Snapshot, Watch};

/// The flags for pictures and progress.
#[derive(Debug, clap::Args)]
#[command(next_help_heading = "Pictures and progress")]
pub(crate) struct VisualArgs {
    /// Write an animated GIF: the start, then a frame every --every steps and after the
    /// last, each particle coloured by the worker that owns it.
    #[arg(long, value_name = "FILE.gif", value_parser = gif_path)]
    render: Option<PathBuf>,
    /// Steps between the frames of --render.
    #[arg(allow_negative_numbers = true, long, value_name = "K", default_value_t = 10, value_parser = every, requires = "render")]
    every: u64,
    /// Write a PNG picture of the final state.
    #[arg(long, value_name = "FILE.png", value_parser = png_path)]
    snapshot: Option<PathBuf>,
    /// Show the particles live in the terminal (the textbook's -g or -v); q stops the run.
    #[arg(short = 'g', long = "live", short_alias = 'v')]
    live: bool,
    /// Redraw the live view every K steps (the textbook's -u).
    #[arg(allow_negative_numbers = true, short = 'u', long = "update-every", value_name = "K", value_parser = every, requires = "live")]
    update_every: Option<u64>,
    /// Print nothing but errors: no progress bar, no timing line.
    #[arg(short = 'q', long)]
    pub(crate) quiet: bool,
}

impl VisualArgs {
    /// The pictures' files, for the checks before the run.
    pub(crate) fn outputs(&self) -> impl Iterator<Item = Output<'_>> {
        [
            Output::new("--render", self.render.as_ref()),
            Output::new("--snapshot", self.snapshot.as_ref()),
        ]
        .into_iter()
        .flatten()
    }

    /// Whether the run writes pictures, which colour each particle by the worker that owns
    /// it.
    pub(crate) fn draws(&self) -> bool {
        self.outputs().next().is_some()
    }
}

/// The watches a run asked for, shown every step and snapshot in turn.
#[derive(Debug)]
pub(crate) struct Visuals {
    progress: Option<Progress>,
    animation: Option<Animation>,
    live: Option<Live>,
    /// The GIF's temporary file, when the GIF replaces a regular file: it is renamed over
    /// the target once the animation ends, so a failed run leaves an earlier GIF whole.
    staged: Option<Staged>,
    /// Where the GIF goes, as given.
    render: Option<PathBuf>,
    /// Where the PNG goes; it is written after the run.
    snapshot: Option<PathBuf>,
    /// Who owned which list slots at the last snapshot: how the run itself splits the
    /// particles, which colours the pictures drawn after it.
    owners: Option<Owners>,
    mode: Mode,
    size: f64,
    last_step: u64,
}

impl Visuals {
    /// Sets up what `args` ask for and tells `run` which callbacks they need. The GIF is
    /// started now, so a bad path fails before the run (the caller has checked the PNG's).
    pub(crate) fn prepare(args: &VisualArgs, run: &mut Run, mode: Mode) -> anyhow::Result<Self> {
        let live = if !args.live {
            None
        } else if std::io::stdout().is_terminal() {
            Some(Live::new(
                args.update_every.unwrap_or(1),
                run.steps,
                run.size,
            ))
        } else {
            if !args.quiet {
                eprintln!("ringleader: stdout is not a terminal, so -g runs without the live view");
            }
            None
        };
        // The live view owns the terminal; a bar on the same screen would tear it.
        let progress = (!args.quiet && live.is_none() && std::io::stderr().is_terminal())
            .then(|| Progress::new(run.start.step, run.steps));
        let (animation, staged) = match &args.render {
            None => (None, None),
            Some(path) => {
                let cannot = || format!("cannot write {}", path.display());
                // The animation is written frame by frame during the run: into a temporary
                // beside a regular file, or straight into a device or FIFO.
                let staged = match Destination::resolve(path).with_context(cannot)? {
                    Destination::Replace(target) => {
                        Some(Staged::new(&target).with_context(cannot)?)
                    }
                    _ => None,
                };
                let start = &run.start;
                let animation = Animation::create(
                    staged.as_ref().map_or(path.as_path(), Staged::path),
                    &start.particles,
                    run.size,
                    start.step,
                    args.every,
                    run.steps,
                )
                .with_context(cannot)?;
                (Some(animation), staged)
            }
        };
        let snapshot = args.snapshot.clone();
        // Per-step calls cost a round trip in ring mode: only ask for them when needed.
        run.every_step |= progress.is_some() || live.is_some();
        let intervals = [
            run.snapshot_every,
            animation.as_ref().map(|_| args.every),
            live.as_ref().map(|_| args.update_every.unwrap_or(1)),
            // A snapshot after the last step, for the owners of the PNG's particles.
            snapshot.as_ref().map(|_| run.steps.max(1)),
        ];
        run.snapshot_every = intervals.into_iter().flatten().reduce(gcd);
        Ok(Visuals {
            progress,
            animation,
            live,
            staged,
            render: args.render.clone(),
            snapshot,
            owners: None,
            mode,
            size: run.size,
            last_step: run.steps,
        })
    }

    /// Takes the visuals back from the watch a run returns.
    pub(crate) fn take(watch: Box<dyn Watch>) -> anyhow::Result<Visuals> {
        let any: Box<dyn Any> = watch;
        any.downcast::<Visuals>()
            .map(|visuals| *visuals)
            .map_err(|_| anyhow::anyhow!("the run returned a different watch"))
    }

    /// Clears the bar, closes the live view (waiting for `q` when the run finished under
    /// it), ends the GIF and writes the PNG.
    pub(crate) fn finish(mut self, outcome: &Outcome) -> anyhow::Result<()> {
        if let Some(progress) = self.progress.as_mut() {
            progress.clear();
        }
        let quit = self.live.as_ref().is_some_and(Live::quit);
        if let Some(live) = self.live.take() {
            live.close()
                .context("the live view failed (run without -g to skip it)")?;
        }
        // Without a snapshot (no step taken, or stopped before one), the blocks the mode
        // would give.
        let blocks = self
            .owners
            .take()
            .unwrap_or_else(|| owners(self.mode, outcome.particles.len()));
        if let Some(animation) = self.animation.take() {
            let path = self
                .render
                .clone()
                .unwrap_or_else(|| animation.path().to_owned());
            animation
                .finish(&blocks)
                .and_then(|_| self.staged.take().map_or(Ok(()), Staged::commit))
                .with_context(|| format!("cannot write {}", path.display()))?;
        }
        let step = match outcome.ending {
            Ending::Finished => self.last_step,
            Ending::Stopped(step) => step,
        };
        if let Some(path) = self.snapshot.take() {
            Frame::draw(&outcome.particles, &blocks, self.size, step)
                .and_then(|frame| outputs::write(&path, |out| frame.write_png(out)))
                .with_context(|| format!("cannot write {}", path.display()))?;
        }
        if quit {
            eprintln!(
                "ringleader: stopped after step {step} of {}",
                self.last_step
            );
        }
        Ok(())
    }
}

impl Watch for Visuals {
    fn step(&mut self, step: u64, energy: Option<f64>) -> Flow {
        let mut flow = Flow::Continue;
        // The live view first: it reads the keys.
        if let Some(live) = self.live.as_mut() {
            flow = worst(flow, live.step(step, energy));
        }
        if let Some(progress) = self.progress.as_mut() {
            flow = worst(flow, progress.step(step, energy));
        }
        flow
    }

    fn snapshot(&mut self, snapshot: &Snapshot<'_>) -> Flow {
        if self.owners.as_ref() != Some(snapshot.owners) {
            self.owners = Some(snapshot.owners.clone());
        }
        let mut flow = Flow::Continue;
        if let Some(animation) = self.animation.as_mut() {
            flow = worst(flow, animation.snapshot(snapshot));
        }
        if let Some(live) = self.live.as_mut() {
            flow = worst(flow, live.snapshot(snapshot));
        }
        flow
    }
}

fn worst(a: Flow, b: Flow) -> Flow {
    if a == Flow::Stop || b == Flow::Stop {
        Flow::Stop
    } else {
        Flow::Continue
    }
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 { a } else { gcd(b, a % b) }
}

fn every(text: &str) -> Result<u64, String> {
    match text.parse::<u64>() {
        Ok(0) => Err("must be at least 1 step".to_owned()),
        Ok(value) => Ok(value),
        Err(_) => Err(format!("expected a whole number of steps, not {text:?}")),
    }
}

fn gif_path(text: &str) -> Result<PathBuf, String> {
    with_extension(text, "gif", "an animated GIF")
}

fn png_path(text: &str) -> Result<PathBuf, String> {
    with_extension(text, "png", "a PNG picture")
}

fn with_extension(text: &str, extension: &str, what: &str) -> Result<PathBuf, String> {
    let path = PathBuf::from(text);
    if path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case(extension))
    {
        Ok(path)
    } else {
        Err(format!(
            "this writes {what}: give a file name ending in .{extension}, like run.{extension}"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_interval_suits_every_watch() {
        assert_eq!([4, 6].into_iter().reduce(gcd), Some(2));
        assert_eq!(gcd(10, 1), 1);
        assert_eq!(gcd(7, 7), 7);
    }

    #[test]
    fn picture_paths_need_the_right_extension() {
        assert!(gif_path("a/run.gif").is_ok());
        assert!(gif_path("run.GIF").is_ok());
        assert!(gif_path("run.png").unwrap_err().contains("ending in .gif"));
        assert!(png_path("run").unwrap_err().contains("ending in .png"));
    }
}
