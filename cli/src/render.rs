//! Pictures of a run: each particle a filled circle coloured by the worker that owns it,
//! with the textbook's caption `step = K, energy = E`. Frames become an animated GIF
//! (`--render`) or a PNG of the final state (`--snapshot`).

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use font8x8::UnicodeFonts;
use plotters::prelude::{BitMapBackend, Circle, IntoDrawingArea, RGBColor, Rectangle};
use plotters::style::Color;

use ringleader_particles::physics::{Particles, divide};
use ringleader_particles::{Flow, Mode, Owners, Snapshot, Watch};

/// Width and height of every frame, in pixels.
pub(crate) const FRAME_SIZE: u32 = 400;
/// Height of the caption band above the box.
const CAPTION_HEIGHT: u32 = 24;
/// Room around the box.
const MARGIN: u32 = 8;

/// The textbook's worker colours, in rank order; rank 8 starts again at blue.
pub(crate) const WORKER_COLOURS: [(u8, u8, u8); 8] = [
    (0, 0, 255),   // blue
    (255, 165, 0), // orange
    (255, 0, 0),   // red
    (0, 128, 0),   // green
    (165, 42, 42), // brown
    (128, 0, 128), // purple
    (0, 255, 255), // cyan
    (0, 0, 0),     // black
];
const WHITE: (u8, u8, u8) = (255, 255, 255);
const BORDER: (u8, u8, u8) = (160, 160, 160);

/// The list slots each worker owns in `mode` at the start, by rank: what a snapshot's
/// `owners` would be before any particle moved.
pub(crate) fn owners(mode: Mode, n: usize) -> Owners {
    let workers = match mode {
        Mode::Serial => 1,
        Mode::Threads(workers) | Mode::Ring(workers, _) => workers,
    };
    Owners::Blocks(divide(n, workers))
}

/// The colour of worker `rank`.
pub(crate) fn worker_colour(rank: usize) -> (u8, u8, u8) {
    WORKER_COLOURS[rank % WORKER_COLOURS.len()]
}

/// The textbook's caption: the energy is shown as round(1000 × kinetic energy).
pub(crate) fn caption(step: u64, energy: f64) -> String {
    format!("step = {step}, energy = {}", (1000.0 * energy).round())
}

/// One picture of the state: RGB, `FRAME_SIZE` square, rows top to bottom.
#[derive(Debug, Clone)]
pub(crate) struct Frame {
    rgb: Vec<u8>,
}

impl Frame {
    /// Draws `particles` (list order) in a box of side `size`, coloured by the worker that
    /// holds each, under the caption for `step`.
    pub(crate) fn draw(
        particles: &Particles,
        owners: &Owners,
        size: f64,
        step: u64,
    ) -> io::Result<Frame> {
        let side = FRAME_SIZE;
        let mut rgb = vec![0u8; (side * side * 3) as usize];
        let top = CAPTION_HEIGHT;
        let left = MARGIN;
        let extent = (side - top - MARGIN).min(side - 2 * MARGIN);
        let radius = dot_radius(particles.len(), extent);
        {
            let root = BitMapBackend::with_buffer(&mut rgb, (side, side)).into_drawing_area();
            let rgb_colour = |(r, g, b): (u8, u8, u8)| RGBColor(r, g, b);
            root.fill(&rgb_colour(WHITE)).map_err(drawing)?;
            let corner = |v: u32| i32::try_from(v).unwrap_or(i32::MAX);
            root.draw(&Rectangle::new(
                [
                    (corner(left) - 1, corner(top) - 1),
                    (corner(left + extent), corner(top + extent)),
                ],
                rgb_colour(BORDER),
            ))
            .map_err(drawing)?;
            let scale = f64::from(extent) / size;
            for (rank, group) in owners.groups().into_iter().enumerate() {
                let colour = rgb_colour(worker_colour(rank)).filled();
                for slot in group {
                    // y grows upwards in the box, downwards in the picture.
                    let px = f64::from(left) + particles.x[slot] * scale;
                    let py = f64::from(top + extent) - particles.y[slot] * scale;
                    root.draw(&Circle::new(
                        (px.round() as i32, py.round() as i32),
                        radius,
                        colour,
                    ))
                    .map_err(drawing)?;
                }
            }
            root.present().map_err(drawing)?;
        }
        let mut frame = Frame { rgb };
        frame.write_text(
            MARGIN,
            (CAPTION_HEIGHT - 16) / 2,
            &caption(step, particles.energy()),
        );
        Ok(frame)
    }

    /// Writes `text` in black at (x, y), in the public-domain 8x8 font.
    fn write_text(&mut self, x: u32, y: u32, text: &str) {
        // Doubled when it fits, as it does until the numbers grow long.
        let width = text.chars().count() as u32 * 16;
        let (scale, y) = if x + width <= FRAME_SIZE {
            (2, y)
        } else {
            (1, y + 4)
        };
        for (i, ch) in text.chars().enumerate() {
            let Some(glyph) = font8x8::BASIC_FONTS.get(ch) else {
                continue;
            };
            let x0 = x + i as u32 * 8 * scale;
            for (row, bits) in glyph.iter().enumerate() {
                for col in 0..8 {
                    if bits & (1 << col) == 0 {
                        continue;
                    }
                    for dy in 0..scale {
                        for dx in 0..scale {
                            self.set(x0 + col * scale + dx, y + row as u32 * scale + dy);
                        }
                    }
                }
            }
        }
    }

    fn set(&mut self, x: u32, y: u32) {
        if x < FRAME_SIZE && y < FRAME_SIZE {
            let at = ((y * FRAME_SIZE + x) * 3) as usize;
            self.rgb[at..at + 3].fill(0);
        }
    }

    /// The pixels as RGB triples.
    #[cfg(test)]
    fn rgb(&self) -> &[u8] {
        &self.rgb
    }

    /// The pixels as indices into the palette.
    fn indexed(&self, palette: &Palette) -> Vec<u8> {
        let mut last = ([255u8; 3], 0u8);
        self.rgb
            .chunks_exact(3)
            .map(|pixel| {
                let pixel = [pixel[0], pixel[1], pixel[2]];
                if pixel != last.0 {
                    last = (pixel, palette.nearest(pixel));
                }
                last.1
            })
            .collect()
    }

    /// Writes the frame as a PNG file.
    pub(crate) fn write_png(&self, out: impl Write) -> io::Result<()> {
        let mut encoder = png::Encoder::new(out, FRAME_SIZE, FRAME_SIZE);
        encoder.set_color(png::ColorType::Rgb);
        encoder.set_depth(png::BitDepth::Eight);
        let mut writer = encoder.write_header().map_err(io::Error::other)?;
        writer
            .write_image_data(&self.rgb)
            .map_err(io::Error::other)?;
        writer.finish().map_err(io::Error::other)
    }
}

/// Smaller dots for more particles, so a crowd stays readable.
fn dot_radius(n: usize, extent: u32) -> u32 {
    let spacing = f64::from(extent) / (n.max(1) as f64).sqrt();
    (spacing / 4.0).clamp(1.0, 4.0).round() as u32
}

fn drawing(err: impl std::fmt::Display) -> io::Error {
    io::Error::other(format!("cannot draw the frame: {err}"))
}

/// The GIF's colours: white, the border, and each worker colour at full strength and
/// blended over white, for the circles' anti-aliased edges.
#[derive(Debug)]
struct Palette {
    colours: Vec<[u8; 3]>,
}

impl Palette {
    fn new() -> Palette {
        let mut colours = vec![[WHITE.0, WHITE.1, WHITE.2], [BORDER.0, BORDER.1, BORDER.2]];
        for (r, g, b) in WORKER_COLOURS {
            for alpha in [1.0, 0.75, 0.5, 0.25] {
                let mix = |c: u8| (f64::from(c) * alpha + 255.0 * (1.0 - alpha)).round() as u8;
                colours.push([mix(r), mix(g), mix(b)]);
            }
        }
        Palette { colours }
    }

    fn nearest(&self, pixel: [u8; 3]) -> u8 {
        let distance = |c: &[u8; 3]| -> i32 {
            (0..3)
                .map(|i| (i32::from(c[i]) - i32::from(pixel[i])).pow(2))
                .sum()
        };
        let best = (0..self.colours.len())
            .min_by_key(|&i| distance(&self.colours[i]))
            .unwrap_or(0);
        // The palette has well under 256 colours.
        u8::try_from(best).unwrap_or(0)
    }

    fn flat(&self) -> Vec<u8> {
        self.colours.iter().flatten().copied().collect()
    }
}

/// Writes an animated GIF as the run goes: the starting state, then a frame every
/// `every` steps and after the last step.
pub(crate) struct Animation {
    path: PathBuf,
    encoder: Option<gif::Encoder<BufWriter<File>>>,
    palette: Palette,
    every: u64,
    last_step: u64,
    size: f64,
    /// The first frame, until the first snapshot says who owns which particle.
    start: Option<(Particles, u64)>,
    frames: usize,
    error: Option<io::Error>,
}

impl std::fmt::Debug for Animation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Animation")
            .field("path", &self.path)
            .field("every", &self.every)
            .field("frames", &self.frames)
            .finish_non_exhaustive()
    }
}

/// Delay between frames, in hundredths of a second.
const FRAME_DELAY: u16 = 8;

impl Animation {
    /// Creates the file at `path`. The first frame will be `start` at step `step`, drawn
    /// with the owners of the first snapshot: the run, not this code, knows how it splits
    /// the particles.
    pub(crate) fn create(
        path: &Path,
        start: &Particles,
        size: f64,
        step: u64,
        every: u64,
        last_step: u64,
    ) -> io::Result<Animation> {
        let palette = Palette::new();
        let file = BufWriter::new(File::create(path)?);
        let side = u16::try_from(FRAME_SIZE).unwrap_or(u16::MAX);
        let mut encoder =
            gif::Encoder::new(file, side, side, &palette.flat()).map_err(io::Error::other)?;
        encoder
            .set_repeat(gif::Repeat::Infinite)
            .map_err(io::Error::other)?;
        Ok(Animation {
            path: path.to_owned(),
            encoder: Some(encoder),
            palette,
            every: every.max(1),
            last_step,
            size,
            start: Some((start.clone(), step)),
            frames: 0,
            error: None,
        })
    }

    /// Draws the first frame if it is still to come.
    fn add_start(&mut self, owners: &Owners) -> io::Result<()> {
        match self.start.take() {
            Some((particles, step)) => self.add(&particles, owners, step),
            None => Ok(()),
        }
    }

    fn add(&mut self, particles: &Particles, owners: &Owners, step: u64) -> io::Result<()> {
        let frame = Frame::draw(particles, owners, self.size, step)?;
        let side = u16::try_from(FRAME_SIZE).unwrap_or(u16::MAX);
        let gif_frame = gif::Frame {
            width: side,
            height: side,
            delay: FRAME_DELAY,
            buffer: std::borrow::Cow::Owned(frame.indexed(&self.palette)),
            ..gif::Frame::default()
        };
        if let Some(encoder) = self.encoder.as_mut() {
            encoder.write_frame(&gif_frame).map_err(io::Error::other)?;
        }
        self.frames += 1;
        Ok(())
    }

    /// Ends the file. Returns how many frames it holds, or the first error met on the way.
    /// `owners` colours the first frame if no snapshot came to tell.
    pub(crate) fn finish(mut self, owners: &Owners) -> io::Result<usize> {
        if let Some(err) = self.error.take() {
            return Err(err);
        }
        self.add_start(owners)?;
        if let Some(encoder) = self.encoder.take() {
            let mut file = encoder.into_inner().map_err(io::Error::other)?;
            file.flush()?;
        }
        Ok(self.frames)
    }

    /// Where the GIF goes.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}

impl Watch for Animation {
    fn snapshot(&mut self, snapshot: &Snapshot<'_>) -> Flow {
        if self.error.is_some() {
            return Flow::Stop;
        }
        let step = snapshot.step;
        if !(step.is_multiple_of(self.every) || step == self.last_step) {
            return Flow::Continue;
        }
        let added = self
            .add_start(snapshot.owners)
            .and_then(|()| self.add(snapshot.particles, snapshot.owners, step));
        match added {
            Ok(()) => Flow::Continue,
            Err(err) => {
                // A GIF that cannot be written is not worth the rest of the run.
                self.error = Some(err);
                Flow::Stop
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringleader_particles::init::{box_size, initial_state};

    #[test]
    fn caption_rounds_a_thousand_times_the_energy() {
        assert_eq!(caption(7, 0.123_456), "step = 7, energy = 123");
        assert_eq!(caption(0, 0.000_49), "step = 0, energy = 0");
    }

    #[test]
    fn colours_cycle_through_eight_workers() {
        assert_eq!(worker_colour(0), (0, 0, 255));
        assert_eq!(worker_colour(8), worker_colour(0));
        assert_eq!(worker_colour(7), (0, 0, 0));
    }

    #[test]
    fn particles_take_their_owners_colour() {
        let particles = initial_state(40);
        let count = |owners: &Owners, colour: (u8, u8, u8)| {
            let frame = Frame::draw(&particles, owners, box_size(40), 0).unwrap();
            frame
                .rgb()
                .chunks_exact(3)
                .filter(|p| (p[0], p[1], p[2]) == colour)
                .count()
        };
        let blocks = Owners::Blocks(divide(40, 2));
        assert!(count(&blocks, worker_colour(0)) > 0);
        assert!(count(&blocks, worker_colour(1)) > 0);
        assert_eq!(count(&blocks, worker_colour(2)), 0);
        // Strips: owners anywhere in the list.
        let slots = Owners::Slots((0..40).map(|slot| slot % 3).collect());
        assert_eq!(slots.workers(), 3);
        for rank in 0..3 {
            assert!(count(&slots, worker_colour(rank)) > 0, "rank {rank}");
        }
        assert_eq!(count(&slots, worker_colour(3)), 0);
    }

    #[test]
    fn the_palette_keeps_exact_colours() {
        let palette = Palette::new();
        for (r, g, b) in WORKER_COLOURS {
            let i = palette.nearest([r, g, b]);
            assert_eq!(palette.colours[usize::from(i)], [r, g, b]);
        }
        assert_eq!(palette.nearest([255, 255, 255]), 0);
    }
}
