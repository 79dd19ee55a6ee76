//! The picture: latency CDFs (left) and the capped tenant's share over time (right), as SVG.
use std::path::Path;

use plotters::prelude::*;

const COLOURS: [RGBColor; 4] = [RGBColor(0, 0, 0), RGBColor(214, 39, 40), RGBColor(31, 119, 180), RGBColor(44, 160, 44)];

/// Draws `cdfs` (name, sorted latencies in µs) and `series` (seconds, share %) into `path`.
pub fn draw(path: &Path, cdfs: &[(String, Vec<f64>)], series: &[(f64, f64)]) -> Result<(), Box<dyn std::error::Error>> {
    let root = SVGBackend::new(path, (1200, 480)).into_drawing_area();
    root.fill(&WHITE)?;
    let (left, right) = root.split_horizontally(680);

    // Up to the slowest configuration's P99.9 (and a margin): the last few outliers would
    // squeeze every curve into the left edge.
    let p999 = |v: &Vec<f64>| v.get((v.len() as f64 * 0.999) as usize).or(v.last()).copied().unwrap_or(1.0);
    let x_max = cdfs.iter().map(|(_, v)| p999(v)).fold(1.0f64, f64::max) / 1e3 * 1.3;
    let mut c = ChartBuilder::on(&left)
        .caption("request latency (CDF)", ("sans-serif", 20))
        .margin(10)
        .x_label_area_size(40)
        .y_label_area_size(50)
        .build_cartesian_2d(0f64..x_max, 0f64..100f64)?;
    c.configure_mesh().x_desc("latency, ms").y_desc("% of requests at or below").draw()?;
    for (i, (name, v)) in cdfs.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        let n = v.len().max(1) as f64;
        let step = (v.len() / 2000).max(1);
        let points: Vec<(f64, f64)> = v
            .iter()
            .enumerate()
            .filter(|(k, _)| k % step == 0 || *k + 1 == v.len())
            .map(|(k, x)| (x / 1e3, 100.0 * (k + 1) as f64 / n))
            .collect();
        c.draw_series(LineSeries::new(points, colour.stroke_width(2)))?
            .label(name.as_str())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(2)));
    }
    c.configure_series_labels().position(SeriesLabelPosition::LowerRight).background_style(WHITE.mix(0.9)).border_style(BLACK).draw()?;

    let t_max = series.last().map_or(1.0, |(t, _)| t + 0.1);
    let mut c = ChartBuilder::on(&right)
        .caption("--sm 30 tenant, second container in the middle third", ("sans-serif", 16))
        .margin(10)
        .x_label_area_size(40)
        .y_label_area_size(50)
        .build_cartesian_2d(0f64..t_max, 0f64..105f64)?;
    c.configure_mesh().x_desc("time, s").y_desc("device share, % per 100 ms").draw()?;
    c.draw_series(LineSeries::new(series.iter().copied(), COLOURS[2].stroke_width(2)))?;
    c.draw_series(LineSeries::new([(0.0, 30.0), (t_max, 30.0)], BLACK.mix(0.4)))?;
    root.present()?;
    Ok(())
}
