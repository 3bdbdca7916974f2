//! `ringleader bench --plot`: speedup, efficiency and pair checks per second against workers,
//! drawn as an SVG.
//!
//! Plotters draws the text as SVG `<text>` elements, so no font is loaded here: the viewer
//! picks a sans-serif one, and the layout uses plotters' size estimate.

use plotters::prelude::*;

use super::Row;

const PANEL: (u32, u32) = (480, 400);

/// One line of a panel: the rows of one n, mode and algorithm, by workers.
struct Series {
    label: String,
    rows: Vec<Row>,
}

/// What one panel draws.
struct Panel {
    caption: &'static str,
    y_label: &'static str,
    /// Where the legend goes, clear of the lines; the last panel has none, since its
    /// colours are those of the others.
    legend: Option<SeriesLabelPosition>,
    /// Where perfect scaling would be, by workers.
    ideal: Option<fn(f64) -> f64>,
    value: fn(&Row) -> Option<f64>,
}

const PANELS: [Panel; 3] = [
    Panel {
        caption: "Speedup over serial",
        y_label: "speedup",
        legend: Some(SeriesLabelPosition::UpperLeft),
        ideal: Some(|workers| workers),
        value: |r| r.speedup,
    },
    Panel {
        caption: "Efficiency (speedup per worker)",
        y_label: "efficiency",
        legend: Some(SeriesLabelPosition::LowerLeft),
        ideal: Some(|_| 1.0),
        value: |r| r.efficiency,
    },
    Panel {
        caption: "Pair checks per second",
        y_label: "pair checks / s",
        legend: None,
        ideal: None,
        value: |r| Some(r.pair_checks_per_s),
    },
];

/// The SVG text of the three panels.
pub(super) fn svg(rows: &[Row]) -> anyhow::Result<String> {
    let series = series(rows);
    let max_workers = rows.iter().map(|r| r.workers).max().unwrap_or(1).max(2) as f64;
    let mut text = String::new();
    {
        let root = SVGBackend::with_string(&mut text, (PANEL.0 * 3, PANEL.1)).into_drawing_area();
        root.fill(&WHITE).map_err(drawing)?;
        for (area, panel) in root.split_evenly((1, 3)).iter().zip(&PANELS) {
            draw(area, panel, &series, max_workers)?;
        }
        root.present().map_err(drawing)?;
    }
    Ok(text)
}

/// Every non-serial combination of n, mode and algorithm that has rows, in the rows' order.
/// Serial runs on one worker only; it is the 1 that speedup is measured against.
fn series(rows: &[Row]) -> Vec<Series> {
    let mut series: Vec<Series> = Vec::new();
    for row in rows.iter().filter(|r| r.mode != "serial") {
        let label = if rows.iter().any(|r| r.algorithm != row.algorithm) {
            format!("n={} {} {}", row.n, row.mode, row.algorithm)
        } else {
            format!("n={} {}", row.n, row.mode)
        };
        match series.iter_mut().find(|s| s.label == label) {
            Some(s) => s.rows.push(row.clone()),
            None => series.push(Series {
                label,
                rows: vec![row.clone()],
            }),
        }
    }
    for s in &mut series {
        s.rows.sort_by_key(|r| r.workers);
    }
    series
}

fn draw(
    area: &DrawingArea<SVGBackend<'_>, plotters::coord::Shift>,
    panel: &Panel,
    series: &[Series],
    max_workers: f64,
) -> anyhow::Result<()> {
    let value = panel.value;
    let ideal_top = panel.ideal.map_or(0.0, |ideal| ideal(max_workers));
    let top = series
        .iter()
        .flat_map(|s| s.rows.iter().filter_map(value))
        .fold(ideal_top, f64::max)
        .max(f64::MIN_POSITIVE)
        * 1.1;
    let mut chart = ChartBuilder::on(area)
        .caption(panel.caption, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(64)
        .build_cartesian_2d(0.5..max_workers + 0.5, 0.0..top)
        .map_err(drawing)?;
    chart
        .configure_mesh()
        .x_desc("workers")
        .y_desc(panel.y_label)
        .x_labels(max_workers as usize + 1)
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_label_formatter(&|y| {
            if y.abs() >= 1e4 {
                format!("{y:.1e}")
            } else {
                format!("{y:.2}")
            }
        })
        .draw()
        .map_err(drawing)?;
    if let Some(ideal) = panel.ideal {
        // Thin and grey, so the measured lines stand out.
        let grey = RGBColor(150, 150, 150);
        chart
            .draw_series(LineSeries::new(
                [1.0, max_workers].map(|w| (w, ideal(w))),
                grey.stroke_width(1),
            ))
            .map_err(drawing)?
            .label("ideal")
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 16, y)], grey.stroke_width(1)));
    }
    for (i, s) in series.iter().enumerate() {
        let colour = colour(i);
        let points: Vec<(f64, f64)> = s
            .rows
            .iter()
            .filter_map(|r| Some((r.workers as f64, value(r)?)))
            .collect();
        chart
            .draw_series(LineSeries::new(
                points.iter().copied(),
                colour.stroke_width(2),
            ))
            .map_err(drawing)?
            .label(&s.label)
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 16, y)], colour.stroke_width(2)));
        chart
            .draw_series(points.iter().map(|&p| Circle::new(p, 3, colour.filled())))
            .map_err(drawing)?;
    }
    if let Some(position) = &panel.legend {
        chart
            .configure_series_labels()
            .position(position.clone())
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(drawing)?;
    }
    Ok(())
}

/// Colours that stay apart on white (no yellow), then plotters' palette.
fn colour(i: usize) -> RGBAColor {
    const COLOURS: [RGBColor; 8] = [
        RGBColor(0x1f, 0x77, 0xb4),
        RGBColor(0xff, 0x7f, 0x0e),
        RGBColor(0x2c, 0xa0, 0x2c),
        RGBColor(0xd6, 0x27, 0x28),
        RGBColor(0x94, 0x67, 0xbd),
        RGBColor(0x8c, 0x56, 0x4b),
        RGBColor(0xe3, 0x77, 0xc2),
        RGBColor(0x17, 0xbe, 0xcf),
    ];
    COLOURS
        .get(i)
        .map_or_else(|| Palette99::pick(i).to_rgba(), |c| c.to_rgba())
}

fn drawing(err: impl std::fmt::Display) -> anyhow::Error {
    anyhow::anyhow!("cannot draw the plot: {err}")
}
