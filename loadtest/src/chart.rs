//! An SVG chart of latency against load: end-to-end p50 and p99 (and TTFT
//! p50 when streaming) per target, one point per level.

use std::path::Path;

use plotters::prelude::*;

use crate::report::Report;

/// The chart could not be drawn or written.
#[derive(Debug, thiserror::Error)]
#[error("cannot draw the chart {path}: {message}")]
pub struct ChartError {
    pub path: String,
    pub message: String,
}

const COLORS: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(255, 127, 14),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
];

/// One line: its label and (load, ms) points.
type Series = (String, Vec<(f64, f64)>);

fn series(report: &Report) -> Vec<Series> {
    let mut out = Vec::new();
    for t in &report.targets {
        let line = |name: &str, f: &dyn Fn(&crate::stats::LevelStats) -> Option<f64>| {
            let points: Vec<(f64, f64)> = t
                .levels
                .iter()
                .filter_map(|l| f(&l.stats).map(|y| (l.load.value(), y)))
                .collect();
            (format!("{} {name}", t.target), points)
        };
        out.push(line("e2e p50", &|s| s.e2e_ms.as_ref().map(|s| s.p50)));
        out.push(line("e2e p99", &|s| s.e2e_ms.as_ref().map(|s| s.p99)));
        if report.stream {
            out.push(line("ttft p50", &|s| s.ttft_ms.as_ref().map(|s| s.p50)));
        }
    }
    out.retain(|(_, p)| !p.is_empty());
    out
}

/// Writes the chart to `path`.
pub fn write(report: &Report, path: &Path) -> Result<(), ChartError> {
    let err = |e: &dyn std::fmt::Display| ChartError {
        path: path.display().to_string(),
        message: e.to_string(),
    };
    let lines = series(report);
    let points = lines.iter().flat_map(|(_, p)| p.iter());
    let x_max = points.clone().map(|p| p.0).fold(1.0, f64::max) * 1.05;
    let y_max = points.map(|p| p.1).fold(1.0, f64::max) * 1.1;
    let x_label = match report.targets.first().and_then(|t| t.levels.first()) {
        Some(l) if matches!(l.load, crate::args::Load::Open { .. }) => "offered rate (req/s)",
        _ => "concurrent clients",
    };
    let root = SVGBackend::new(path, (900, 560)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption("Latency vs load", ("sans-serif", 22))
        .margin(16)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..x_max, 0.0..y_max)
        .map_err(|e| err(&e))?;
    chart
        .configure_mesh()
        .x_desc(x_label)
        .y_desc("latency (ms)")
        .draw()
        .map_err(|e| err(&e))?;
    for (i, (label, points)) in lines.into_iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        chart
            .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))
            .map_err(|e| err(&e))?
            .label(label)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color));
        chart
            .draw_series(
                points
                    .into_iter()
                    .map(|p| Circle::new(p, 3, color.filled())),
            )
            .map_err(|e| err(&e))?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|e| err(&e))?;
    root.present().map_err(|e| err(&e))?;
    Ok(())
}
