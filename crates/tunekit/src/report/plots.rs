//! The report's figures as standalone SVG strings (plotters' SVG backend, no fonts needed:
//! text is emitted as SVG `<text>` and laid out by the browser), so `report.html` embeds them
//! inline and needs no network or image files.

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor;

use crate::error::{Error, Result};

/// Figure size in pixels (the SVG's user units; the page scales it).
const W: u32 = 640;
const H: u32 = 380;

type PlotResult = std::result::Result<(), Box<dyn std::error::Error>>;

/// Render `draw` onto a fresh white SVG canvas of `size` and return the SVG text.
fn svg(
    size: (u32, u32),
    draw: impl FnOnce(&DrawingArea<SVGBackend, Shift>) -> PlotResult,
) -> Result<String> {
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, size).into_drawing_area();
        let result = root
            .fill(&WHITE)
            .map_err(|e| Box::new(e) as Box<dyn std::error::Error>)
            .and_then(|()| draw(&root))
            .and_then(|()| {
                root.present()
                    .map_err(|e| Box::new(e) as Box<dyn std::error::Error>)
            });
        result.map_err(|e| Error::Report(format!("drawing a figure: {e}")))?;
    }
    Ok(out)
}

/// How a series is drawn.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Style {
    /// A thin, light line (raw per-step values behind a smoothed one).
    Faint,
    /// A solid line.
    Line,
    /// A solid line with a dot at each point (few points, e.g. one per evaluation).
    LineDots,
    /// A dashed reference line (chance level, perfect calibration).
    Dashed,
    /// Dots only (a scatter).
    Dots,
}

/// One named line of a chart.
#[derive(Debug, Clone)]
pub struct Series {
    /// Legend text.
    pub name: String,
    /// (x, y) points in x order.
    pub points: Vec<(f64, f64)>,
    /// Palette index.
    pub color: usize,
    /// How it is drawn.
    pub style: Style,
}

/// A vertical marker line with a label (the best checkpoint).
#[derive(Debug, Clone)]
pub struct Marker {
    /// Where on the x axis.
    pub x: f64,
    /// Its label.
    pub label: String,
}

/// Colour-blind-safe palette (Okabe–Ito).
pub fn color(i: usize) -> RGBColor {
    const P: [RGBColor; 8] = [
        RGBColor(0, 114, 178),
        RGBColor(230, 159, 0),
        RGBColor(0, 158, 115),
        RGBColor(204, 121, 167),
        RGBColor(86, 180, 233),
        RGBColor(213, 94, 0),
        RGBColor(240, 228, 66),
        RGBColor(0, 0, 0),
    ];
    P[i % P.len()]
}

fn bounds(series: &[Series], marker: Option<&Marker>) -> Option<((f64, f64), (f64, f64))> {
    let pts = series
        .iter()
        .flat_map(|s| s.points.iter())
        .filter(|(x, y)| x.is_finite() && y.is_finite());
    let mut b: Option<((f64, f64), (f64, f64))> = None;
    for &(x, y) in pts {
        b = Some(match b {
            None => ((x, x), (y, y)),
            Some(((x0, x1), (y0, y1))) => ((x0.min(x), x1.max(x)), (y0.min(y), y1.max(y))),
        });
    }
    let ((mut x0, mut x1), (mut y0, mut y1)) = b?;
    if let Some(m) = marker {
        x0 = x0.min(m.x);
        x1 = x1.max(m.x);
    }
    if x1 - x0 < 1e-12 {
        x0 -= 0.5;
        x1 += 0.5;
    }
    // A little room on both sides so end points are not cut in half by the frame.
    let x_pad = (x1 - x0) * 0.02;
    x0 -= x_pad;
    x1 += x_pad;
    let pad = ((y1 - y0) * 0.06).max(1e-9 + y1.abs() * 1e-3);
    y0 -= pad;
    y1 += pad;
    Some(((x0, x1), (y0, y1)))
}

/// Titles, ranges and marker of a line chart.
#[derive(Debug, Clone, Copy, Default)]
pub struct Axes<'a> {
    /// Caption above the plot.
    pub title: &'a str,
    /// X axis description.
    pub x_label: &'a str,
    /// Y axis description.
    pub y_label: &'a str,
    /// A vertical marker (the best checkpoint).
    pub marker: Option<&'a Marker>,
    /// Fixed y range (e.g. 0..1 for ROC); otherwise fitted to the data.
    pub y_range: Option<(f64, f64)>,
    /// Fixed x range; otherwise fitted to the data.
    pub x_range: Option<(f64, f64)>,
    /// Put the legend in the lower right (curves that rise, like ROC and accuracy).
    pub legend_low: bool,
}

/// A line chart of `series` on `axes`.
pub fn line_chart(axes: &Axes, series: &[Series]) -> Result<String> {
    let Axes {
        title,
        x_label,
        y_label,
        marker,
        y_range,
        x_range,
        legend_low,
    } = *axes;
    let Some((xb, yb)) = bounds(series, marker) else {
        return Err(Error::Report(format!(
            "figure `{title}` has no finite points"
        )));
    };
    let (xb, yb) = (x_range.unwrap_or(xb), y_range.unwrap_or(yb));
    svg((W, H), |root| {
        let mut chart = ChartBuilder::on(root)
            .caption(title, ("sans-serif", 20))
            .margin(12)
            .x_label_area_size(48)
            .y_label_area_size(72)
            .build_cartesian_2d(xb.0..xb.1, yb.0..yb.1)?;
        chart
            .configure_mesh()
            .x_desc(x_label)
            .y_desc(y_label)
            .light_line_style(RGBColor(235, 235, 235))
            .label_style(("sans-serif", 14))
            .axis_desc_style(("sans-serif", 15))
            .y_label_formatter(&|v| format_tick(*v))
            .x_label_formatter(&|v| format_tick(*v))
            .draw()?;
        for s in series {
            let c = color(s.color);
            let pts = s
                .points
                .iter()
                .copied()
                .filter(|(x, y)| x.is_finite() && y.is_finite());
            let legend_style = match s.style {
                Style::Faint => c.mix(0.35).stroke_width(1),
                Style::Dashed => RGBColor(120, 120, 120).stroke_width(1),
                _ => c.stroke_width(2),
            };
            let anno = match s.style {
                Style::Faint => {
                    chart.draw_series(LineSeries::new(pts, c.mix(0.35).stroke_width(1)))?
                }
                Style::Line => chart.draw_series(LineSeries::new(pts, c.stroke_width(2)))?,
                Style::LineDots => {
                    let v: Vec<(f64, f64)> = pts.collect();
                    chart.draw_series(v.iter().map(|&p| Circle::new(p, 3, c.filled())))?;
                    chart.draw_series(LineSeries::new(v, c.stroke_width(2)))?
                }
                Style::Dots => chart.draw_series(pts.map(|p| Circle::new(p, 4, c.filled())))?,
                Style::Dashed => chart.draw_series(DashedLineSeries::new(
                    pts,
                    6,
                    4,
                    RGBColor(120, 120, 120).stroke_width(1),
                ))?,
            };
            // Past 8 series a legend hides the plot; callers name such figures in the caption.
            if series.len() <= 8 {
                if s.style == Style::Dots {
                    anno.label(s.name.clone())
                        .legend(move |(x, y)| Circle::new((x + 9, y), 4, c.filled()));
                } else {
                    anno.label(s.name.clone()).legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 18, y)], legend_style)
                    });
                }
            }
        }
        if let Some(m) = marker {
            let red = RGBColor(200, 30, 30);
            chart
                .draw_series(DashedLineSeries::new(
                    vec![(m.x, yb.0), (m.x, yb.1)],
                    5,
                    4,
                    red.stroke_width(1),
                ))?
                .label(m.label.clone())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 18, y)], red.stroke_width(1))
                });
        }
        if series.len() <= 8 || marker.is_some() {
            chart
                .configure_series_labels()
                .label_font(("sans-serif", 14))
                .background_style(WHITE.mix(0.85))
                .border_style(RGBColor(200, 200, 200))
                .position(if legend_low {
                    SeriesLabelPosition::LowerRight
                } else {
                    SeriesLabelPosition::UpperRight
                })
                .draw()?;
        }
        Ok(())
    })
}

/// Short tick text: 3 significant digits, scientific for very small or large magnitudes.
fn format_tick(v: f64) -> String {
    let a = v.abs();
    if a == 0.0 {
        "0".into()
    } else if !(1e-3..1e5).contains(&a) {
        format!("{v:.1e}")
    } else if a >= 100.0 {
        format!("{v:.0}")
    } else {
        let s = format!("{v:.3}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

/// Confusion-matrix heat map: rows are true labels, columns predictions; colour is the row
/// share (recall view), text is count and row percentage.
pub fn confusion_matrix(labels: &[String], matrix: &[Vec<u64>]) -> Result<String> {
    let n = labels.len().max(1);
    let cell = (440 / n as u32).clamp(14, 120);
    let left = 150u32;
    let top = 50u32;
    let size = (left + cell * n as u32 + 30, top + cell * n as u32 + 90);
    svg(size, |root| {
        let title = "Confusion matrix (rows: true label, columns: predicted; colour = row share)";
        root.draw(&Text::new(title, (10, 12), ("sans-serif", 15).into_font()))?;
        let show_text = cell >= 28;
        for (i, row) in matrix.iter().enumerate() {
            let total: u64 = row.iter().sum();
            for (j, &count) in row.iter().enumerate() {
                let share = if total > 0 {
                    count as f64 / total as f64
                } else {
                    0.0
                };
                let x = (left + j as u32 * cell) as i32;
                let y = (top + i as u32 * cell) as i32;
                let fill = heat(share, i == j);
                root.draw(&Rectangle::new(
                    [(x, y), (x + cell as i32, y + cell as i32)],
                    fill.filled(),
                ))?;
                root.draw(&Rectangle::new(
                    [(x, y), (x + cell as i32, y + cell as i32)],
                    RGBColor(255, 255, 255).stroke_width(1),
                ))?;
                if show_text {
                    let ink = if share > 0.55 { WHITE } else { BLACK };
                    let style =
                        ("sans-serif", 13)
                            .into_font()
                            .color(&ink)
                            .pos(text_anchor::Pos::new(
                                text_anchor::HPos::Center,
                                text_anchor::VPos::Center,
                            ));
                    let cx = x + cell as i32 / 2;
                    let cy = y + cell as i32 / 2;
                    root.draw(&Text::new(format!("{count}"), (cx, cy - 8), style.clone()))?;
                    root.draw(&Text::new(
                        format!("{:.0}%", share * 100.0),
                        (cx, cy + 8),
                        style,
                    ))?;
                }
            }
        }
        let label_style = TextStyle::from(("sans-serif", 12).into_font()).pos(
            text_anchor::Pos::new(text_anchor::HPos::Right, text_anchor::VPos::Center),
        );
        for (i, l) in labels.iter().enumerate() {
            let y = (top + i as u32 * cell + cell / 2) as i32;
            root.draw(&Text::new(
                shorten(l, 20),
                (left as i32 - 6, y),
                label_style.clone(),
            ))?;
        }
        let col_style = TextStyle::from(
            ("sans-serif", 12)
                .into_font()
                .transform(FontTransform::Rotate90),
        )
        .pos(text_anchor::Pos::new(
            text_anchor::HPos::Left,
            text_anchor::VPos::Center,
        ));
        for (j, l) in labels.iter().enumerate() {
            let x = (left + j as u32 * cell + cell / 2) as i32;
            let y = (top + n as u32 * cell + 6) as i32;
            root.draw(&Text::new(shorten(l, 12), (x, y), col_style.clone()))?;
        }
        let axis = ("sans-serif", 13).into_font();
        root.draw(&Text::new(
            "predicted →",
            (left as i32, (size.1 - 16) as i32),
            axis.clone(),
        ))?;
        root.draw(&Text::new("true ↓", (10, top as i32 - 18), axis))?;
        Ok(())
    })
}

/// White → blue for the diagonal (correct), white → orange off it (errors).
fn heat(share: f64, diagonal: bool) -> RGBColor {
    let (r, g, b) = if diagonal {
        (0.0, 90.0, 170.0)
    } else {
        (215.0, 95.0, 0.0)
    };
    let t = share.clamp(0.0, 1.0);
    let mix = |c: f64| (255.0 + (c - 255.0) * t).round() as u8;
    RGBColor(mix(r), mix(g), mix(b))
}

fn shorten(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(max - 1).collect();
        t.push('…');
        t
    }
}

/// One bin of a reliability diagram.
#[derive(Debug, Clone, Copy)]
pub struct CalibrationBin {
    /// Lower edge of the confidence bin.
    pub lo: f64,
    /// Upper edge.
    pub hi: f64,
    /// Predictions in the bin.
    pub count: usize,
    /// Mean top-class probability in the bin.
    pub confidence: f64,
    /// Share of correct predictions in the bin.
    pub accuracy: f64,
}

/// Reliability diagram: per confidence bin, accuracy (bars) against the diagonal of perfect
/// calibration, with each bin's mean confidence as a dot and its count under the bar.
pub fn reliability(bins: &[CalibrationBin], ece: f64) -> Result<String> {
    svg((W, H), |root| {
        let title = format!("Reliability diagram (ECE {ece:.4})");
        let mut chart = ChartBuilder::on(root)
            .caption(title, ("sans-serif", 20))
            .margin(12)
            .x_label_area_size(48)
            .y_label_area_size(72)
            .build_cartesian_2d(0.0f64..1.0f64, 0.0f64..1.0f64)?;
        chart
            .configure_mesh()
            .x_desc("confidence (top-class probability)")
            .y_desc("accuracy")
            .light_line_style(RGBColor(235, 235, 235))
            .label_style(("sans-serif", 14))
            .axis_desc_style(("sans-serif", 15))
            .draw()?;
        let bar = color(0);
        chart
            .draw_series(bins.iter().filter(|b| b.count > 0).map(|b| {
                Rectangle::new(
                    [(b.lo + 0.005, 0.0), (b.hi - 0.005, b.accuracy)],
                    bar.mix(0.75).filled(),
                )
            }))?
            .label("accuracy per bin")
            .legend(move |(x, y)| {
                Rectangle::new([(x, y - 5), (x + 14, y + 5)], bar.mix(0.75).filled())
            });
        let dot = color(5);
        chart
            .draw_series(
                bins.iter()
                    .filter(|b| b.count > 0)
                    .map(|b| Circle::new(((b.lo + b.hi) / 2.0, b.confidence), 4, dot.filled())),
            )?
            .label("mean confidence")
            .legend(move |(x, y)| Circle::new((x + 7, y), 4, dot.filled()));
        chart
            .draw_series(DashedLineSeries::new(
                vec![(0.0, 0.0), (1.0, 1.0)],
                6,
                4,
                RGBColor(120, 120, 120).stroke_width(1),
            ))?
            .label("perfect calibration")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], RGBColor(120, 120, 120)));
        let small = TextStyle::from(("sans-serif", 10).into_font()).pos(text_anchor::Pos::new(
            text_anchor::HPos::Center,
            text_anchor::VPos::Bottom,
        ));
        chart.draw_series(bins.iter().filter(|b| b.count > 0).map(|b| {
            Text::new(
                format!("n={}", b.count),
                ((b.lo + b.hi) / 2.0, b.accuracy + 0.03),
                small.clone(),
            )
        }))?;
        chart
            .configure_series_labels()
            .label_font(("sans-serif", 14))
            .background_style(WHITE.mix(0.85))
            .border_style(RGBColor(200, 200, 200))
            .position(SeriesLabelPosition::UpperLeft)
            .draw()?;
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_chart_contains_every_series_and_the_marker_label() {
        let s = vec![
            Series {
                name: "train loss".into(),
                points: vec![(1.0, 0.7), (2.0, 0.5)],
                color: 0,
                style: Style::Line,
            },
            Series {
                name: "validation loss".into(),
                points: vec![(1.0, 0.6), (2.0, 0.55)],
                color: 1,
                style: Style::LineDots,
            },
        ];
        let m = Marker {
            x: 2.0,
            label: "best (step 2)".into(),
        };
        let axes = Axes {
            title: "Loss",
            x_label: "step",
            y_label: "loss",
            marker: Some(&m),
            ..Axes::default()
        };
        let out = line_chart(&axes, &s).unwrap();
        assert!(out.starts_with("<svg"));
        for needle in [
            "train loss",
            "validation loss",
            "best (step 2)",
            "<polyline",
            "<circle",
        ] {
            assert!(out.contains(needle), "missing {needle}");
        }
    }

    #[test]
    fn a_chart_without_points_is_an_error_not_an_empty_figure() {
        let s = vec![Series {
            name: "x".into(),
            points: vec![],
            color: 0,
            style: Style::Line,
        }];
        assert!(line_chart(&Axes::default(), &s).is_err());
    }

    #[test]
    fn the_confusion_matrix_shows_counts_and_row_shares() {
        let labels = vec!["negative".to_string(), "positive".to_string()];
        let out = confusion_matrix(&labels, &[vec![449, 81], vec![86, 441]]).unwrap();
        // plotters writes each text on its own line.
        for needle in [
            "\n449\n", "\n81\n", "\n85%\n", "\n16%\n", "negative", "positive",
        ] {
            assert!(out.contains(needle), "missing {needle}");
        }
        assert!(out.matches("<rect").count() >= 8);
    }

    #[test]
    fn ticks_are_short() {
        assert_eq!(format_tick(0.5), "0.5");
        assert_eq!(format_tick(2e-5), "2.0e-5");
        assert_eq!(format_tick(795.0), "795");
    }
}
