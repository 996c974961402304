//! Regression section: predicted-versus-true scatter, residual plot, the error and
//! correlation scores, and the examples with the largest errors.

use std::fmt::Write as _;

use serde::Deserialize;

use super::{Section, TaskRun};
use crate::error::Result;
use crate::report::plots::{self, Series, Style};
use crate::report::{Figure, esc, fmt_opt, missing};

/// At most this many points are drawn per figure (an even subsample beyond).
const MAX_POINTS: usize = 2000;
/// Rows of the largest-errors table.
const WORST: usize = 10;

/// One line of a regression `predictions/<split>.jsonl`.
#[derive(Debug, Deserialize)]
struct Line {
    text: String,
    /// The true value.
    target: f64,
    /// The model's value.
    prediction: f64,
}

/// Residual of each line: true − predicted (the statistician's `e = y − ŷ`; positive means
/// the model predicted too low).
fn residuals(lines: &[Line]) -> Vec<f64> {
    lines.iter().map(|l| l.target - l.prediction).collect()
}

/// Every `ceil(n / max)`-th point, so at most `max` remain and the spread is kept.
fn subsample<T: Copy>(points: &[T], max: usize) -> Vec<T> {
    let step = points.len().div_ceil(max.max(1)).max(1);
    points.iter().step_by(step).copied().collect()
}

fn scatter_figure(split: &str, lines: &[Line]) -> Figure {
    let pts: Vec<(f64, f64)> = lines.iter().map(|l| (l.target, l.prediction)).collect();
    let lo = pts
        .iter()
        .flat_map(|p| [p.0, p.1])
        .fold(f64::INFINITY, f64::min);
    let hi = pts
        .iter()
        .flat_map(|p| [p.0, p.1])
        .fold(f64::NEG_INFINITY, f64::max);
    let shown = subsample(&pts, MAX_POINTS);
    let note = if shown.len() < pts.len() {
        format!(
            " {} of {} points drawn (an even subsample).",
            shown.len(),
            pts.len()
        )
    } else {
        String::new()
    };
    let series = [
        Series {
            name: "examples".into(),
            points: shown,
            color: 0,
            style: Style::Dots,
        },
        Series {
            name: "perfect prediction (y = x)".into(),
            points: vec![(lo, lo), (hi, hi)],
            color: 7,
            style: Style::Dashed,
        },
    ];
    Figure {
        id: "fig-scatter".into(),
        caption: format!(
            "Predicted against true value on the {split} split; points on the dashed line are \
             exact.{note}"
        ),
        svg: plots::line_chart(
            &plots::Axes {
                title: "Predicted vs true",
                x_label: "true value",
                y_label: "predicted value",
                legend_low: true,
                ..Default::default()
            },
            &series,
        )
        .map_err(|e| e.to_string()),
    }
}

fn residual_figure(split: &str, lines: &[Line]) -> Figure {
    let pts: Vec<(f64, f64)> = lines
        .iter()
        .zip(residuals(lines))
        .map(|(l, r)| (l.prediction, r))
        .collect();
    let lo = pts.iter().map(|p| p.0).fold(f64::INFINITY, f64::min);
    let hi = pts.iter().map(|p| p.0).fold(f64::NEG_INFINITY, f64::max);
    let series = [
        Series {
            name: "residual (true − predicted)".into(),
            points: subsample(&pts, MAX_POINTS),
            color: 5,
            style: Style::Dots,
        },
        Series {
            name: "zero".into(),
            points: vec![(lo, 0.0), (hi, 0.0)],
            color: 7,
            style: Style::Dashed,
        },
    ];
    Figure {
        id: "fig-residuals".into(),
        caption: format!(
            "Residuals (true − predicted) against the prediction on the {split} split: a \
             pattern (a slope, a funnel) means errors that depend on the value."
        ),
        svg: plots::line_chart(
            &plots::Axes {
                title: "Residuals",
                x_label: "predicted value",
                y_label: "true − predicted",
                ..Default::default()
            },
            &series,
        )
        .map_err(|e| e.to_string()),
    }
}

/// The regression section of the page.
pub(super) fn section(run: &TaskRun) -> Result<Section> {
    let mut figures = Vec::new();
    let mut h = String::new();
    h.push_str("<h3>Errors and correlations</h3><table id=\"regression-scores\"><tr><th>split</th><th>MSE</th><th>RMSE</th><th>MAE</th><th>R²</th><th>Pearson</th><th>Spearman</th></tr>");
    for split in ["validation", "test"] {
        if let Some(s) = run.scores(split) {
            let _ = write!(h, "<tr><td>{split}</td>");
            for k in ["mse", "rmse", "mae", "r2", "pearson", "spearman"] {
                let _ = write!(
                    h,
                    "<td data-key=\"errors/{split}/{k}\">{}</td>",
                    fmt_opt(s.get(k).copied())
                );
            }
            h.push_str("</tr>");
        }
    }
    h.push_str("</table>");
    match run.analysis_split::<Line>()? {
        Some((split, lines)) if !lines.is_empty() => {
            figures.push(scatter_figure(split, &lines));
            figures.push(residual_figure(split, &lines));
            let res = residuals(&lines);
            let n = res.len() as f64;
            let mean = res.iter().sum::<f64>() / n;
            let _ = write!(
                h,
                "<p id=\"residual-summary\">{split} split: mean residual {mean:.4} (bias: the model predicts {} on average), residual standard deviation {:.4}, over {} examples.</p>",
                if mean >= 0.0 { "too low" } else { "too high" },
                (res.iter().map(|r| (r - mean).powi(2)).sum::<f64>() / n).sqrt(),
                res.len()
            );
            let mut order: Vec<usize> = (0..lines.len()).collect();
            order.sort_by(|&a, &b| res[b].abs().total_cmp(&res[a].abs()));
            let _ = write!(
                h,
                "<h3 id=\"largest-errors\">The {} largest errors ({split} split)</h3><table class=\"errors\"><tr><th>#</th><th>text</th><th>true</th><th>predicted</th><th>residual</th></tr>",
                WORST.min(lines.len())
            );
            for (i, &k) in order.iter().take(WORST).enumerate() {
                let l = &lines[k];
                let _ = write!(
                    h,
                    "<tr><td>{}</td><td class=\"text\">{}</td><td>{:.4}</td><td>{:.4}</td><td>{:.4}</td></tr>",
                    i + 1,
                    esc(&l.text),
                    l.target,
                    l.prediction,
                    res[k]
                );
            }
            h.push_str("</table>");
        }
        _ => {
            let why = "no predictions/*.jsonl in the run directory";
            figures.push(missing("fig-scatter", "Predicted vs true", why));
            figures.push(missing("fig-residuals", "Residuals", why));
        }
    }
    Ok(Section {
        title: "Predictions against the truth".into(),
        figures,
        html: h,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(target: f64, prediction: f64) -> Line {
        Line {
            text: String::new(),
            target,
            prediction,
        }
    }

    #[test]
    fn residuals_are_true_minus_predicted() {
        let lines = [line(2.0, 1.5), line(-1.0, 0.25), line(3.5, 3.5)];
        assert_eq!(residuals(&lines), vec![0.5, -1.25, 0.0]);
    }

    #[test]
    fn subsample_keeps_at_most_max_points_spread_over_the_input() {
        let pts: Vec<usize> = (0..10).collect();
        assert_eq!(subsample(&pts, 4), vec![0, 3, 6, 9]);
        assert_eq!(subsample(&pts, 20), pts);
    }
}
