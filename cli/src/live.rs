//! The live view (`-g`/`-v`): the particles drawn in the terminal as the run goes,
//! coloured by owning worker, with the step, the energy and the rate. `q` stops the run.
//!
//! Everything happens inside the watch's callbacks on the coordinator: keys are polled
//! without waiting, so no thread is started and the processes transport can still fork.
//! The terminal is set up at the first callback (after the workers exist) and put back by
//! `Drop`, so every way out of a run restores it.

use std::io::{self, Stdout};
use std::time::{Duration, Instant};

use ratatui::Terminal;
use ratatui::backend::CrosstermBackend;
use ratatui::crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers};
use ratatui::crossterm::terminal::{
    EnterAlternateScreen, LeaveAlternateScreen, disable_raw_mode, enable_raw_mode,
};
use ratatui::crossterm::{cursor, execute};
use ratatui::layout::Rect;
use ratatui::style::Color;
use ratatui::symbols::Marker;
use ratatui::text::Line;
use ratatui::widgets::Block;
use ratatui::widgets::canvas::{Canvas, Points};

use crate::render::{caption, worker_colour};
use ringleader_particles::{Flow, Snapshot, Watch};

/// The shortest time between two drawings: faster than the eye, slower than the terminal.
const FRAME_INTERVAL: Duration = Duration::from_millis(40);

/// How often the final picture, shown until `q`, looks for a stop signal.
const SIGNAL_LOOK: Duration = Duration::from_millis(100);

/// The most terminal events a step reads.
const EVENTS_PER_STEP: usize = 64;

/// The terminal, in raw mode on the alternate screen while this lives.
struct Screen {
    /// Dropped by hand: see `Drop`.
    terminal: std::mem::ManuallyDrop<Terminal<CrosstermBackend<Stdout>>>,
}

impl Screen {
    fn open() -> io::Result<Screen> {
        enable_raw_mode()?;
        let mut stdout = io::stdout();
        if let Err(err) = execute!(stdout, EnterAlternateScreen, cursor::Hide) {
            restore();
            return Err(err);
        }
        match Terminal::new(CrosstermBackend::new(stdout)) {
            Ok(terminal) => Ok(Screen {
                terminal: std::mem::ManuallyDrop::new(terminal),
            }),
            Err(err) => {
                restore();
                Err(err)
            }
        }
    }
}

impl Drop for Screen {
    fn drop(&mut self) {
        // A terminal that hung up has nothing to restore, and ratatui's own drop would
        // say on stderr, the same dead terminal, that it could not show the cursor: a
        // write that fails there is a panic. The process is about to end: leave it.
        if hung_up() {
            return;
        }
        // SAFETY: dropped once, here, and never used after.
        unsafe { std::mem::ManuallyDrop::drop(&mut self.terminal) };
        restore();
    }
}

/// Puts the terminal back as it was; each part is harmless if it was never changed.
fn restore() {
    let _ = execute!(io::stdout(), LeaveAlternateScreen, cursor::Show);
    let _ = disable_raw_mode();
}

/// What the view shows.
#[derive(Debug, Default)]
struct Picture {
    step: u64,
    energy: f64,
    /// Positions by owning worker.
    groups: Vec<Vec<(f64, f64)>>,
}

/// The live view, as a watch.
pub(crate) struct Live {
    every: u64,
    last_step: u64,
    size: f64,
    screen: Option<Screen>,
    picture: Picture,
    started: Option<(Instant, u64)>,
    rate: f64,
    drawn: Option<Instant>,
    quit: bool,
    error: Option<io::Error>,
}

impl std::fmt::Debug for Live {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Live")
            .field("every", &self.every)
            .field("step", &self.picture.step)
            .field("quit", &self.quit)
            .finish_non_exhaustive()
    }
}

impl Live {
    /// A view of a box of side `size` that redraws every `every` steps and after
    /// `last_step`.
    pub(crate) fn new(every: u64, last_step: u64, size: f64) -> Live {
        Live {
            every: every.max(1),
            last_step,
            size,
            screen: None,
            picture: Picture::default(),
            started: None,
            rate: 0.0,
            drawn: None,
            quit: false,
            error: None,
        }
    }

    /// Whether the user asked to stop.
    pub(crate) fn quit(&self) -> bool {
        self.quit
    }

    /// Shows the final picture until the user presses `q`, then gives the terminal back.
    /// Returns at once if the view never opened or was quit.
    ///
    /// # Errors
    /// The first terminal error met during the run or now.
    pub(crate) fn close(mut self) -> io::Result<()> {
        if let Some(err) = self.error.take() {
            return Err(err);
        }
        if self.screen.is_none() || self.quit || ringleader::stop_signal().is_some() || hung_up() {
            return Ok(());
        }
        self.draw(true)?;
        // A stop signal (a hangup, say, where nobody is left to press q) closes it too.
        loop {
            if event::poll(SIGNAL_LOOK)? && self.keys(event::read()?)? {
                return Ok(());
            }
            if ringleader::stop_signal().is_some() || hung_up() {
                return Ok(());
            }
        }
    }

    fn open(&mut self) -> io::Result<()> {
        if self.screen.is_none() {
            self.screen = Some(Screen::open()?);
        }
        Ok(())
    }

    /// Handles one terminal event; true for a key that quits.
    fn keys(&mut self, event: Event) -> io::Result<bool> {
        match event {
            Event::Key(key) if key.kind != KeyEventKind::Release => {
                let interrupt =
                    key.code == KeyCode::Char('c') && key.modifiers.contains(KeyModifiers::CONTROL);
                if interrupt {
                    // The terminal is raw, so Ctrl-C is a key here, not the SIGINT it is
                    // elsewhere: make it one, so that the run ends as SIGINT ends it
                    // (`stopped by SIGINT after step …`, exit 130). The run catches it.
                    let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGINT);
                }
                Ok(matches!(key.code, KeyCode::Char('q') | KeyCode::Esc))
            }
            Event::Resize(..) => {
                self.draw(self.picture.step == self.last_step)?;
                Ok(false)
            }
            _ => Ok(false),
        }
    }

    /// Reads the events waiting, without blocking: at most [`EVENTS_PER_STEP`]. Not once
    /// the run is stopping, or the terminal has hung up: reading a terminal that hung up
    /// never ends (the run spun there, with its workers alive, after its terminal closed).
    fn poll(&mut self) -> io::Result<()> {
        if ringleader::stop_signal().is_some() {
            return Ok(());
        }
        if heed_a_hangup() {
            return Ok(());
        }
        for _ in 0..EVENTS_PER_STEP {
            if !event::poll(Duration::ZERO)? {
                break;
            }
            if self.keys(event::read()?)? {
                self.quit = true;
            }
        }
        Ok(())
    }

    fn draw(&mut self, finished: bool) -> io::Result<()> {
        let Some(screen) = self.screen.as_mut() else {
            return Ok(());
        };
        let picture = &self.picture;
        let size = self.size;
        let status = if finished {
            " finished: q closes ".to_owned()
        } else {
            format!(" {:.0} steps/s, q quits ", self.rate)
        };
        screen.terminal.draw(|frame| {
            let title = format!(" {} ", caption(picture.step, picture.energy));
            let canvas = Canvas::default()
                .block(
                    Block::bordered()
                        .title(Line::from(title))
                        .title_bottom(Line::from(status)),
                )
                .marker(Marker::Braille)
                .x_bounds([0.0, size])
                .y_bounds([0.0, size])
                .paint(|ctx| {
                    for (rank, coords) in picture.groups.iter().enumerate() {
                        ctx.draw(&Points {
                            coords,
                            color: terminal_colour(rank),
                        });
                    }
                });
            // A terminal cell is about twice as tall as wide: keep the box square.
            let area = frame.area();
            let width = area.width.min(area.height.saturating_mul(2));
            let area = Rect {
                x: area.x + (area.width - width) / 2,
                width,
                ..area
            };
            frame.render_widget(canvas, area);
        })?;
        self.drawn = Some(Instant::now());
        Ok(())
    }

    fn fail(&mut self, err: io::Error) -> Flow {
        // A draw that met a terminal just hung up: the run stops as for SIGHUP, not as for
        // a broken view.
        if heed_a_hangup() {
            return Flow::Continue;
        }
        self.error = Some(err);
        Flow::Stop
    }
}

/// Whether the terminal has hung up; if it has, a SIGHUP to this process, unless a stop
/// signal came already. A hangup sends SIGHUP to the session's leader, which is a shell
/// that sends it on to its jobs, or this process; but the terminal reads as hung up before
/// that signal comes, and a shell killed outright sends none. The run then ends as a
/// hangup ends it (129), however the view learns of it. Where SIGHUP is ignored (`nohup`),
/// the run goes on without the view.
fn heed_a_hangup() -> bool {
    if !hung_up() {
        return false;
    }
    if ringleader::stop_signal().is_none() {
        let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGHUP);
    }
    true
}

/// Whether the terminal (standard input, where the view reads its keys) has hung up.
fn hung_up() -> bool {
    let mut terminal = libc::pollfd {
        fd: libc::STDIN_FILENO,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd, and a zero timeout: poll only reports on it.
    let ready = unsafe { libc::poll(&mut terminal, 1, 0) };
    ready > 0 && terminal.revents & libc::POLLHUP != 0
}

/// The textbook's colours, with black shown as grey so it stays visible on a dark
/// terminal.
fn terminal_colour(rank: usize) -> Color {
    match worker_colour(rank) {
        (0, 0, 0) => Color::Gray,
        (r, g, b) => Color::Rgb(r, g, b),
    }
}

impl Watch for Live {
    fn step(&mut self, step: u64, _energy: Option<f64>) -> Flow {
        if let Err(err) = self.open().and_then(|()| self.poll()) {
            return self.fail(err);
        }
        let (since, first) = *self.started.get_or_insert((Instant::now(), step));
        let seconds = since.elapsed().as_secs_f64();
        if seconds > 0.0 {
            self.rate = (step - first) as f64 / seconds;
        }
        if self.quit {
            Flow::Stop
        } else {
            Flow::Continue
        }
    }

    fn snapshot(&mut self, snapshot: &Snapshot<'_>) -> Flow {
        // The run is stopping: nothing more to show (its terminal may be gone).
        if ringleader::stop_signal().is_some() || heed_a_hangup() {
            return Flow::Continue;
        }
        let step = snapshot.step;
        let last = step == self.last_step;
        if !(step.is_multiple_of(self.every) || last) {
            return Flow::Continue;
        }
        if self.drawn.is_some_and(|at| at.elapsed() < FRAME_INTERVAL) && !last {
            return Flow::Continue;
        }
        let particles = snapshot.particles;
        self.picture = Picture {
            step,
            energy: particles.energy(),
            groups: snapshot
                .owners
                .groups()
                .into_iter()
                .map(|group| {
                    group
                        .into_iter()
                        .map(|slot| (particles.x[slot], particles.y[slot]))
                        .collect()
                })
                .collect(),
        };
        match self.open().and_then(|()| self.draw(false)) {
            Ok(()) if self.quit => Flow::Stop,
            Ok(()) => Flow::Continue,
            Err(err) => self.fail(err),
        }
    }
}
