//! Multilabel section: per-label precision / recall / F1 at the exported thresholds, and per
//! label the F1-versus-threshold curve on validation with the chosen threshold marked.

use std::fmt::Write as _;

use serde::Deserialize;

use super::{Section, TaskRun};
use crate::error::Result;
use crate::report::plots::{self, Marker, Series, Style};
use crate::report::{Figure, esc, missing};

/// At most this many threshold curves (largest validation support first).
const MAX_CURVES: usize = 12;

/// One line of a multilabel `predictions/<split>.jsonl`.
#[derive(Debug, Deserialize)]
struct Line {
    /// True label names.
    #[serde(default)]
    labels: Vec<String>,
    /// Sigmoid probabilities in label order.
    #[serde(default)]
    probabilities: Vec<f32>,
}

/// One label's scores at its threshold.
#[derive(Debug, Clone, PartialEq)]
struct LabelScores {
    precision: f64,
    recall: f64,
    f1: f64,
    /// Examples that have the label.
    support: usize,
    /// Examples predicted to have it.
    predicted: usize,
}

/// F1 from counts, 0 when undefined (scikit-learn's `zero_division=0`), computed as
/// [`crate::task::multilabel::scores`] does so the macro average is bit-equal.
fn f1(tp: usize, fp: usize, fn_: usize) -> f64 {
    let d = 2 * tp + fp + fn_;
    if d == 0 {
        0.0
    } else {
        2.0 * tp as f64 / d as f64
    }
}

fn ratio(a: usize, b: usize) -> f64 {
    if b == 0 { 0.0 } else { a as f64 / b as f64 }
}

/// Column `k` of the lines: (probability, has the label).
fn column(lines: &[Line], labels: &[String], k: usize) -> (Vec<f32>, Vec<bool>) {
    let name = labels.get(k).map(String::as_str).unwrap_or("");
    lines
        .iter()
        .map(|l| {
            (
                l.probabilities.get(k).copied().unwrap_or(0.0),
                l.labels.iter().any(|x| x == name),
            )
        })
        .unzip()
}

/// Scores of one label when predicted at `probability ≥ threshold`.
fn label_scores(probs: &[f32], truth: &[bool], threshold: f64) -> LabelScores {
    let (mut tp, mut fp, mut fn_) = (0, 0, 0);
    for (&p, &t) in probs.iter().zip(truth) {
        match (f64::from(p) >= threshold, t) {
            (true, true) => tp += 1,
            (true, false) => fp += 1,
            (false, true) => fn_ += 1,
            _ => {}
        }
    }
    LabelScores {
        precision: ratio(tp, tp + fp),
        recall: ratio(tp, tp + fn_),
        f1: f1(tp, fp, fn_),
        support: tp + fn_,
        predicted: tp + fp,
    }
}

/// F1 of one label at thresholds 0, 0.005, …, 1 and at `chosen` (so the curve passes through
/// the marked point), in threshold order.
fn threshold_curve(probs: &[f32], truth: &[bool], chosen: f64) -> Vec<(f64, f64)> {
    let mut grid: Vec<f64> = (0..=200).map(|i| f64::from(i) / 200.0).collect();
    if chosen.is_finite() && !grid.contains(&chosen) {
        grid.push(chosen);
        grid.sort_by(f64::total_cmp);
    }
    grid.into_iter()
        .map(|t| (t, label_scores(probs, truth, t).f1))
        .collect()
}

fn curve_figure(k: usize, label: &str, probs: &[f32], truth: &[bool], chosen: f64) -> Figure {
    let points = threshold_curve(probs, truth, chosen);
    let at = label_scores(probs, truth, chosen).f1;
    let marker = Marker {
        x: chosen,
        label: format!("chosen threshold {chosen:.3} (F1 {at:.4})"),
    };
    let series = [Series {
        name: format!("{label}: F1 on validation"),
        points,
        color: k,
        style: Style::Line,
    }];
    Figure {
        id: format!("fig-threshold-{k}"),
        caption: format!(
            "F1 of `{label}` on the validation split when the label is predicted at \
             probability ≥ threshold (thresholds 0, 0.005, …, 1); the dashed red line is the \
             threshold the exported model uses."
        ),
        svg: plots::line_chart(
            &plots::Axes {
                title: &format!("Threshold curve: {label}"),
                x_label: "decision threshold",
                y_label: "F1",
                marker: Some(&marker),
                y_range: Some((0.0, 1.02)),
                x_range: Some((0.0, 1.0)),
                legend_low: true,
            },
            &series,
        )
        .map_err(|e| e.to_string()),
    }
}

/// The multilabel section of the page.
pub(super) fn section(run: &TaskRun) -> Result<Section> {
    let labels = &run.metrics.labels;
    let thresholds = run.thresholds();
    let threshold = |k: usize| thresholds.get(k).copied().unwrap_or(0.5);
    let mut figures = Vec::new();
    match run.predictions::<Line>("validation")? {
        Some(val) if !val.is_empty() => {
            let mut order: Vec<(usize, usize)> = (0..labels.len())
                .map(|k| (column(&val, labels, k).1.iter().filter(|t| **t).count(), k))
                .collect();
            order.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
            let mut shown: Vec<usize> = order.iter().take(MAX_CURVES).map(|o| o.1).collect();
            shown.sort_unstable();
            for k in shown {
                let (p, t) = column(&val, labels, k);
                figures.push(curve_figure(k, &labels[k], &p, &t, threshold(k)));
            }
        }
        _ => figures.push(missing(
            "fig-threshold-0",
            "Threshold curves",
            "no predictions/validation.jsonl in the run directory (the thresholds are tuned on validation)",
        )),
    }
    let mut h = String::new();
    if labels.len() > MAX_CURVES {
        let _ = write!(
            h,
            "<p>Threshold curves of the {MAX_CURVES} labels with the most validation examples; {} labels in all.</p>",
            labels.len()
        );
    }
    if let Some((split, lines)) = run.analysis_split::<Line>()? {
        let _ = write!(
            h,
            "<h3>Per label ({split} split, {} examples)</h3><table id=\"per-label\"><tr><th>label</th><th>threshold</th><th>precision</th><th>recall</th><th>F1</th><th>support</th><th>predicted</th></tr>",
            lines.len()
        );
        let mut f1_sum = 0.0;
        for (k, label) in labels.iter().enumerate() {
            let (p, t) = column(&lines, labels, k);
            let s = label_scores(&p, &t, threshold(k));
            f1_sum += s.f1;
            let _ = write!(
                h,
                "<tr><td>{}</td><td>{:.4}</td><td>{:.4}</td><td>{:.4}</td><td data-key=\"per-label/{split}/f1/{k}\">{:.4}</td><td>{}</td><td>{}</td></tr>",
                esc(label),
                threshold(k),
                s.precision,
                s.recall,
                s.f1,
                s.support,
                s.predicted
            );
        }
        let _ = write!(
            h,
            "<tr><td>mean (macro F1)</td><td></td><td></td><td></td><td data-key=\"per-label/{split}/macro_f1\">{:.4}</td><td></td><td></td></tr></table>",
            f1_sum / labels.len().max(1) as f64
        );
    } else {
        h.push_str("<p>No predictions/*.jsonl in the run directory: no per-label table.</p>");
    }
    Ok(Section {
        title: "Per label".into(),
        figures,
        html: h,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn threshold_curve_equals_a_hand_count_and_passes_through_the_chosen_point() {
        // Positives at 0.9 and 0.4, negatives at 0.6 and 0.1.
        let probs = [0.9f32, 0.6, 0.4, 0.1];
        let truth = [true, false, true, false];
        // 0.3725 is not on the 0.005 grid: it is added as the 202nd point.
        let curve = threshold_curve(&probs, &truth, 0.3725);
        assert_eq!(curve.len(), 202);
        let at = |t: f64| curve.iter().find(|p| p.0 == t).unwrap().1;
        // t = 0: all four predicted: tp 2, fp 2 → F1 = 4 / 6.
        assert!((at(0.0) - 4.0 / 6.0).abs() < 1e-12);
        // t = 0.3725: 0.9, 0.6, 0.4 predicted: tp 2, fp 1 → 4 / 5.
        assert!((at(0.3725) - 0.8).abs() < 1e-12);
        // t = 0.5: 0.9, 0.6: tp 1, fp 1, fn 1 → 2 / 4.
        assert!((at(0.5) - 0.5).abs() < 1e-12);
        // t = 0.75: 0.9 only: tp 1, fn 1 → 2 / 3.
        assert!((at(0.75) - 2.0 / 3.0).abs() < 1e-12);
        // t = 1: nothing predicted → 0.
        assert_eq!(at(1.0), 0.0);
        assert!(curve.windows(2).all(|w| w[0].0 < w[1].0));
    }

    #[test]
    fn the_tuned_threshold_sits_at_the_curves_maximum() {
        let probs = [0.95f32, 0.7, 0.62, 0.55, 0.3, 0.2, 0.12, 0.05];
        let truth = [true, true, false, true, false, true, false, false];
        let chosen = crate::task::multilabel::tune_threshold(&probs, &truth);
        let curve = threshold_curve(&probs, &truth, chosen);
        let best = curve.iter().map(|p| p.1).fold(0.0, f64::max);
        let at = label_scores(&probs, &truth, chosen).f1;
        assert!((at - best).abs() < 1e-12, "{at} vs {best}");
    }

    #[test]
    fn per_label_f1_averages_to_the_libraries_macro_f1() {
        let labels: Vec<String> = ["a", "b", "c"].map(String::from).to_vec();
        let rows: [(&[&str], [f32; 3]); 4] = [
            (&["a"], [0.8, 0.1, 0.6]),
            (&["a", "b"], [0.4, 0.7, 0.2]),
            (&["c"], [0.3, 0.2, 0.9]),
            (&[], [0.1, 0.6, 0.1]),
        ];
        let lines: Vec<Line> = rows
            .iter()
            .map(|(l, p)| Line {
                labels: l.iter().map(|s| s.to_string()).collect(),
                probabilities: p.to_vec(),
            })
            .collect();
        let th = [0.5, 0.5, 0.5];
        let mean = (0..3)
            .map(|k| {
                let (p, t) = column(&lines, &labels, k);
                label_scores(&p, &t, th[k]).f1
            })
            .sum::<f64>()
            / 3.0;
        let probs: Vec<Vec<f32>> = rows.iter().map(|r| r.1.to_vec()).collect();
        let targets: Vec<Vec<f32>> = rows
            .iter()
            .map(|(l, _)| {
                labels
                    .iter()
                    .map(|x| f32::from(u8::from(l.contains(&x.as_str()))))
                    .collect()
            })
            .collect();
        let want = crate::task::multilabel::scores(&probs, &targets, &th)["macro_f1"];
        assert_eq!(mean, want);
    }
}
