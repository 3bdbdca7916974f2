//! The progress bar on stderr: step and total, rate and time left.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};

use ringleader_particles::{Flow, Watch};

/// A progress bar, drawn from the coordinator's step callback. It starts no thread of its
/// own (no steady tick), and it appears at the first step, after the workers are forked.
#[derive(Debug)]
pub(crate) struct Progress {
    bar: Option<ProgressBar>,
    first_step: u64,
    last_step: u64,
}

impl Progress {
    /// A bar for the steps after `first_step` up to `last_step`.
    pub(crate) fn new(first_step: u64, last_step: u64) -> Progress {
        Progress {
            bar: None,
            first_step,
            last_step,
        }
    }

    fn bar(&mut self) -> &ProgressBar {
        self.bar.get_or_insert_with(|| {
            let bar = ProgressBar::with_draw_target(
                Some(self.last_step - self.first_step),
                ProgressDrawTarget::stderr_with_hz(10),
            );
            let style = ProgressStyle::with_template(
                "{bar:40.cyan/blue} step {pos}/{len}  {rate} steps/s  ETA {eta}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .with_key(
                "rate",
                |state: &ProgressState, w: &mut dyn std::fmt::Write| {
                    let _ = write!(w, "{:.0}", state.per_sec());
                },
            );
            bar.set_style(style);
            bar
        })
    }

    /// Takes the bar off the screen, so what is printed next starts on a clean line.
    pub(crate) fn clear(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.clear();
    }
}

impl Watch for Progress {
    fn step(&mut self, step: u64, _energy: Option<f64>) -> Flow {
        let done = step - self.first_step;
        let bar = self.bar();
        bar.set_position(done);
        // indicatif draws at most 10 times a second, whatever the step rate.
        Flow::Continue
    }
}
