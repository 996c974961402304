//! `report.html`: one self-contained page per run (inline SVG and CSS, no scripts, no
//! network) with the pictures and tables a user would otherwise draw in a notebook — how
//! training went (loss, metric and learning-rate curves, best checkpoint marked) and where the
//! model errs (confusion matrix, per-class table, ROC, PR and reliability diagrams, the most
//! confident errors), plus the data report and the config.
//!
//! Everything is read back from files the run already wrote (`metrics.json`,
//! `metrics.jsonl`, the TensorBoard events, `data_report.json`, `config.toml`,
//! `predictions/*.jsonl`), so `tunekit report RUN_DIR` regenerates the page at any time and
//! the page can never show numbers the run did not record.

pub mod plots;
pub mod search;
mod tasks;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::fsutil::{read_json, write_atomic};
use crate::metrics::ClassificationMetrics;
use crate::metrics::scores::{pr_curve, roc_curve};
use crate::prep::DataReport;
use crate::train::{EvalRecord, RunMetrics};
use plots::{CalibrationBin, Marker, Series, Style};

/// The page's file name in a run directory.
pub const REPORT_FILE: &str = "report.html";
/// Directory of per-example predictions of the exported model, one JSONL file per split.
pub const PREDICTIONS_DIR: &str = "predictions";

/// One evaluated example: what the exported model predicted for it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PredictionRow {
    /// The text as the model saw it (after the run's cleaning and de-identification).
    pub text: String,
    /// True class id (index into `metrics.json` → `labels`).
    pub label: usize,
    /// Predicted class id.
    pub predicted: usize,
    /// True class name.
    #[serde(default)]
    pub label_name: String,
    /// Predicted class name.
    #[serde(default)]
    pub predicted_name: String,
    /// Class probabilities in label order.
    pub probabilities: Vec<f32>,
}

/// Share of a split's predictions one class may reach before the prediction distribution
/// counts as collapsed (when that class's true share is at least 10 points lower).
pub const COLLAPSE_SHARE: f64 = 0.95;

/// The warning for a collapsed prediction distribution on one split: one class gets at least
/// [`COLLAPSE_SHARE`] of the predictions while its true share is at least 10 points lower
/// (a model that learned (almost) nothing but the majority, or a vocabulary that does not
/// cover the data). `None` for a healthy split or one with fewer than 10 rows.
pub fn prediction_collapse(split: &str, m: &ClassificationMetrics) -> Option<String> {
    let cm = &m.confusion_matrix;
    let total: u64 = cm.iter().flatten().sum();
    if total < 10 {
        return None;
    }
    let predicted = |c: usize| {
        cm.iter()
            .map(|row| row.get(c).copied().unwrap_or(0))
            .sum::<u64>()
    };
    let (top, top_n) = (0..m.labels.len())
        .map(|c| (c, predicted(c)))
        .max_by_key(|&(c, n)| (n, std::cmp::Reverse(c)))?;
    let pred_share = top_n as f64 / total as f64;
    let true_n: u64 = cm.get(top).map_or(0, |row| row.iter().sum());
    let true_share = true_n as f64 / total as f64;
    (pred_share >= COLLAPSE_SHARE && true_share <= pred_share - 0.10).then(|| {
        format!(
            "{split}: the model predicts {:?} for {top_n} of {total} rows ({:.1}%) while {:.1}% of the rows are {:?}: the prediction distribution has collapsed onto one class (check the data report's unknown-token rate, the learning rate and the class balance)",
            m.labels[top],
            100.0 * pred_share,
            100.0 * true_share,
            m.labels[top]
        )
    })
}

/// Collapse warnings of a run's validation and test metrics (see [`prediction_collapse`]).
pub fn collapse_warnings(metrics: &RunMetrics) -> Vec<String> {
    [("validation", &metrics.validation), ("test", &metrics.test)]
        .into_iter()
        .filter_map(|(name, m)| m.as_ref().and_then(|m| prediction_collapse(name, m)))
        .collect()
}

/// Write `predictions/{split}.jsonl` atomically.
pub fn write_predictions(run_dir: &Path, split: &str, rows: &[PredictionRow]) -> Result<()> {
    let dir = run_dir.join(PREDICTIONS_DIR);
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    let mut text = String::new();
    for r in rows {
        let line = serde_json::to_string(r).map_err(|e| Error::Report(e.to_string()))?;
        text.push_str(&line);
        text.push('\n');
    }
    write_atomic(&dir.join(format!("{split}.jsonl")), text.as_bytes())
}

/// Every non-blank line of a JSONL file, parsed; errors name the file and line.
fn read_jsonl<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<Vec<T>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l)
                .map_err(|e| Error::Report(format!("{}: line {}: {e}", path.display(), i + 1)))
        })
        .collect()
}

/// Per-step scalars from the run's TensorBoard event files, merged by tag; a resumed run has
/// several files and the later file wins for a step written twice.
fn read_scalars(run_dir: &Path) -> Result<BTreeMap<String, BTreeMap<i64, f64>>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(run_dir)
        .map_err(|e| Error::io(run_dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("events.out.tfevents."))
        })
        .collect();
    files.sort();
    let mut out: BTreeMap<String, BTreeMap<i64, f64>> = BTreeMap::new();
    for f in files {
        let (_, scalars) = crate::tensorboard::read_events(&f)?;
        for (step, tag, value) in scalars {
            out.entry(tag).or_default().insert(step, f64::from(value));
        }
    }
    Ok(out)
}

/// Everything the page shows, read from a run directory.
struct RunFiles {
    name: String,
    metrics: RunMetrics,
    history: Vec<EvalRecord>,
    scalars: BTreeMap<String, BTreeMap<i64, f64>>,
    data: Option<DataReport>,
    config: Option<String>,
    /// The split the error analysis uses (test, else validation) and its rows.
    predictions: Option<(String, Vec<PredictionRow>)>,
}

fn load(run_dir: &Path) -> Result<RunFiles> {
    let metrics_path = run_dir.join("metrics.json");
    if !metrics_path.exists() {
        return Err(Error::Report(format!(
            "{} has no metrics.json: not a finished training run (a cross-validation run has one \
             report per fold-N/ directory)",
            run_dir.display()
        )));
    }
    let metrics: RunMetrics = read_json(&metrics_path)?;
    let history_path = run_dir.join("metrics.jsonl");
    let history: Vec<EvalRecord> = if history_path.exists() {
        read_jsonl(&history_path)?
    } else {
        Vec::new()
    };
    let data_path = run_dir.join("data_report.json");
    let data = if data_path.exists() {
        Some(read_json(&data_path)?)
    } else {
        None
    };
    let config_path = run_dir.join("config.toml");
    let config = std::fs::read_to_string(&config_path).ok();
    let mut predictions = None;
    for split in ["test", "validation"] {
        let p = run_dir.join(PREDICTIONS_DIR).join(format!("{split}.jsonl"));
        if p.exists() {
            predictions = Some((split.to_string(), read_jsonl(&p)?));
            break;
        }
    }
    let name = run_dir
        .canonicalize()
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| run_dir.display().to_string());
    Ok(RunFiles {
        name,
        metrics,
        history,
        scalars: read_scalars(run_dir)?,
        data,
        config,
        predictions,
    })
}

/// A figure of the page: its id (for anchors and tests), caption, and SVG or the reason it is
/// missing.
struct Figure {
    id: String,
    caption: String,
    svg: std::result::Result<String, String>,
}

/// Write `RUN_DIR/report.html` and return its path.
pub fn write(run_dir: &Path) -> Result<PathBuf> {
    // Other tasks have their own page (report::tasks), drawn from their own files.
    let metrics = read_json::<serde_json::Value>(&run_dir.join("metrics.json"));
    if let Ok(m) = &metrics
        && let Ok(task) = serde_json::from_value::<crate::task::TaskKind>(m["task"].clone())
        && !task.is_classification()
    {
        return tasks::write(run_dir);
    }
    let run = load(run_dir)?;
    let html = render(&run)?;
    let path = run_dir.join(REPORT_FILE);
    write_atomic(&path, html.as_bytes())?;
    Ok(path)
}

/// Trailing moving average over `window` points, for a readable per-step loss.
fn moving_average(points: &[(f64, f64)], window: usize) -> Vec<(f64, f64)> {
    let mut out = Vec::with_capacity(points.len());
    let mut sum = 0.0;
    for (i, &(x, y)) in points.iter().enumerate() {
        sum += y;
        if i >= window {
            sum -= points[i - window].1;
        }
        out.push((x, sum / (i + 1).min(window) as f64));
    }
    out
}

/// One evaluation as the training-curve figures see it, whatever the task.
struct EvalPoint {
    /// Optimiser steps done.
    pub step: usize,
    /// Fractional epoch.
    pub epoch: f64,
    /// Mean training loss since the previous evaluation.
    pub train_loss: f64,
    /// Learning rate of the last step.
    pub learning_rate: f64,
    /// Validation scores by name (`loss` when it was recorded).
    pub validation: BTreeMap<String, f64>,
}

/// What the training-curve figures (loss, validation metrics, learning rate) need, read from
/// `metrics.jsonl`, the TensorBoard events and `metrics.json` of a run of any task.
struct Training<'a> {
    /// Per-step scalars by TensorBoard tag.
    pub scalars: &'a BTreeMap<String, BTreeMap<i64, f64>>,
    /// The evaluations in step order.
    pub evals: Vec<EvalPoint>,
    /// Optimiser steps of the run.
    pub steps: usize,
    /// Step of the exported checkpoint.
    pub best_step: Option<usize>,
}

impl<'a> Training<'a> {
    /// The view of a classification run; each evaluation keeps the scores the figures draw.
    fn classification(run: &'a RunFiles) -> Self {
        let names = ["loss", run.metrics.metric.as_str(), "accuracy", "macro_f1"];
        Training {
            scalars: &run.scalars,
            evals: run
                .history
                .iter()
                .map(|r| EvalPoint {
                    step: r.step,
                    epoch: r.epoch,
                    train_loss: r.train_loss,
                    learning_rate: r.learning_rate,
                    validation: names
                        .iter()
                        .filter_map(|&n| r.validation.get(n).map(|v| (n.to_string(), v)))
                        .collect(),
                })
                .collect(),
            steps: run.metrics.steps,
            best_step: run.metrics.best_step,
        }
    }
}

fn best_marker(run: &Training) -> Option<Marker> {
    run.best_step.map(|s| {
        let epoch = run
            .evals
            .iter()
            .find(|r| r.step == s)
            .map(|r| {
                format!(", epoch {:.3}", r.epoch)
                    .trim_end_matches('0')
                    .trim_end_matches('.')
                    .to_string()
            })
            .unwrap_or_default();
        Marker {
            x: s as f64,
            label: format!("best checkpoint (step {s}{epoch})"),
        }
    })
}

/// Training curves share one x axis: step 0 to the last step, so they line up on the page.
fn step_axis(run: &Training) -> Option<(f64, f64)> {
    (run.steps > 0).then_some((0.0, run.steps as f64))
}

/// Training and validation loss; `loss_name` is the y axis (the task's objective).
fn loss_figure(run: &Training, loss_name: &str) -> Figure {
    let mut series = Vec::new();
    if let Some(steps) = run.scalars.get("train/loss") {
        let raw: Vec<(f64, f64)> = steps.iter().map(|(&s, &v)| (s as f64, v)).collect();
        let window = (raw.len() / 30).clamp(1, 50);
        series.push(Series {
            name: "train loss (per step)".into(),
            points: raw.clone(),
            color: 0,
            style: Style::Faint,
        });
        if window > 1 {
            series.push(Series {
                name: format!("train loss ({window}-step moving average)"),
                points: moving_average(&raw, window),
                color: 0,
                style: Style::Line,
            });
        }
    } else if !run.evals.is_empty() {
        series.push(Series {
            name: "train loss (mean since previous evaluation)".into(),
            points: run
                .evals
                .iter()
                .map(|r| (r.step as f64, r.train_loss))
                .collect(),
            color: 0,
            style: Style::LineDots,
        });
    }
    let val: Vec<(f64, f64)> = run
        .evals
        .iter()
        .filter_map(|r| r.validation.get("loss").map(|&l| (r.step as f64, l)))
        .collect();
    if !val.is_empty() {
        series.push(Series {
            name: "validation loss".into(),
            points: val,
            color: 1,
            style: Style::LineDots,
        });
    }
    let marker = best_marker(run);
    Figure {
        id: "fig-loss".into(),
        caption: "Training loss per optimiser step (faint) and smoothed, validation loss at each \
                  evaluation; the dashed red line is the checkpoint that was exported."
            .into(),
        svg: plots::line_chart(
            &plots::Axes {
                title: "Loss",
                x_label: "optimiser step",
                y_label: loss_name,
                marker: marker.as_ref(),
                y_range: None,
                x_range: step_axis(run),
                legend_low: false,
            },
            &series,
        )
        .map_err(|e| e.to_string()),
    }
}

/// Validation metrics at each evaluation: the selection metric first, then `also`; `test` is
/// the exported model's test score of one of them, drawn as a single dot at the best step.
fn metric_figure(
    run: &Training,
    selection: &str,
    also: &[&str],
    test: Option<(&str, f64)>,
) -> Figure {
    let mut names = vec![selection.to_string()];
    for n in also {
        if !names.iter().any(|m| m == n) {
            names.push(n.to_string());
        }
    }
    let mut series = Vec::new();
    for (i, name) in names.iter().filter(|n| n.as_str() != "loss").enumerate() {
        let pts: Vec<(f64, f64)> = run
            .evals
            .iter()
            .filter_map(|r| r.validation.get(name).map(|&v| (r.step as f64, v)))
            .collect();
        if !pts.is_empty() {
            let label = if *name == selection {
                format!("validation {name} (selection metric)")
            } else {
                format!("validation {name}")
            };
            series.push(Series {
                name: label,
                points: pts,
                color: i,
                style: Style::LineDots,
            });
        }
    }
    if let (Some((name, v)), Some(step)) = (test, run.best_step) {
        series.push(Series {
            name: format!("test {name} of the exported model"),
            points: vec![(step as f64, v)],
            color: 5,
            style: Style::LineDots,
        });
    }
    let marker = best_marker(run);
    Figure {
        id: "fig-metric".into(),
        caption: format!(
            "Validation metrics at each evaluation; the exported checkpoint is the best by \
             `{selection}`. The single dot is the exported model's test score."
        ),
        svg: plots::line_chart(
            &plots::Axes {
                title: "Validation metrics",
                x_label: "optimiser step",
                y_label: "score",
                marker: marker.as_ref(),
                y_range: None,
                x_range: step_axis(run),
                legend_low: true,
            },
            &series,
        )
        .map_err(|e| e.to_string()),
    }
}

fn lr_figure(run: &Training) -> Figure {
    let pts: Vec<(f64, f64)> = match run.scalars.get("train/learning_rate") {
        Some(s) => s.iter().map(|(&k, &v)| (k as f64, v)).collect(),
        None => run
            .evals
            .iter()
            .map(|r| (r.step as f64, r.learning_rate))
            .collect(),
    };
    let series = [Series {
        name: "learning rate".into(),
        points: pts,
        color: 2,
        style: Style::Line,
    }];
    Figure {
        id: "fig-lr".into(),
        caption: "Learning rate of each optimiser step (the schedule, warm-up included; with \
                  layer-wise decay this is the top layer's rate)."
            .into(),
        svg: plots::line_chart(
            &plots::Axes {
                title: "Learning rate",
                x_label: "optimiser step",
                y_label: "learning rate",
                marker: None,
                y_range: None,
                x_range: step_axis(run),
                legend_low: false,
            },
            &series,
        )
        .map_err(|e| e.to_string()),
    }
}

fn missing(id: &str, caption: &str, why: &str) -> Figure {
    Figure {
        id: id.into(),
        caption: caption.into(),
        svg: Err(why.into()),
    }
}

/// Which classes get their own ROC/PR curve: the positive class for binary tasks, every class
/// (one-vs-rest) for up to 8 classes, otherwise the 8 largest.
fn curve_classes(labels: &[String], rows: &[PredictionRow]) -> Vec<usize> {
    if labels.len() == 2 {
        return vec![1];
    }
    let mut support: Vec<(usize, usize)> = (0..labels.len())
        .map(|c| (rows.iter().filter(|r| r.label == c).count(), c))
        .collect();
    support.sort_by(|a, b| b.cmp(a));
    let mut chosen: Vec<usize> = support.into_iter().take(8).map(|(_, c)| c).collect();
    chosen.sort_unstable();
    chosen
}

fn ranking_figures(labels: &[String], split: &str, rows: &[PredictionRow]) -> (Figure, Figure) {
    let (mut roc, mut pr) = (Vec::new(), Vec::new());
    for (i, c) in curve_classes(labels, rows).into_iter().enumerate() {
        let y: Vec<bool> = rows.iter().map(|r| r.label == c).collect();
        let s: Vec<f64> = rows
            .iter()
            .map(|r| r.probabilities.get(c).copied().map_or(0.0, f64::from))
            .collect();
        let name = labels.get(c).cloned().unwrap_or_else(|| c.to_string());
        let vs = if labels.len() == 2 {
            String::new()
        } else {
            " vs rest".to_string()
        };
        if let (Some(points), Some(auc)) =
            (roc_curve(&y, &s), crate::metrics::scores::roc_auc(&y, &s))
        {
            roc.push(Series {
                name: format!("{name}{vs} (AUC {auc:.4})"),
                points,
                color: i,
                style: Style::Line,
            });
        }
        if let (Some(points), Some(ap)) = (
            pr_curve(&y, &s),
            crate::metrics::scores::average_precision(&y, &s),
        ) {
            pr.push(Series {
                name: format!("{name}{vs} (AP {ap:.4})"),
                points,
                color: i,
                style: Style::Line,
            });
        }
    }
    let roc_ok = !roc.is_empty();
    if roc_ok {
        roc.push(Series {
            name: "chance".into(),
            points: vec![(0.0, 0.0), (1.0, 1.0)],
            color: 7,
            style: Style::Dashed,
        });
    }
    let unit = Some((0.0, 1.0));
    let roc_fig = Figure {
        id: "fig-roc".into(),
        caption: format!(
            "ROC curve on the {split} split (scores: class probabilities of the exported model)."
        ),
        svg: if roc_ok {
            plots::line_chart(
                &plots::Axes {
                    title: "ROC curve",
                    x_label: "false-positive rate",
                    y_label: "true-positive rate",
                    marker: None,
                    y_range: Some((0.0, 1.02)),
                    x_range: unit,
                    legend_low: true,
                },
                &roc,
            )
            .map_err(|e| e.to_string())
        } else {
            Err("only one class present in the split".into())
        },
    };
    let pr_fig = Figure {
        id: "fig-pr".into(),
        caption: format!(
            "Precision-recall curve on the {split} split; AP is the average precision (PR-AUC)."
        ),
        svg: if pr.is_empty() {
            Err("no positive examples in the split".into())
        } else {
            plots::line_chart(
                &plots::Axes {
                    title: "Precision-recall curve",
                    x_label: "recall",
                    y_label: "precision",
                    marker: None,
                    y_range: Some((0.0, 1.02)),
                    x_range: unit,
                    legend_low: true,
                },
                &pr,
            )
            .map_err(|e| e.to_string())
        },
    };
    (roc_fig, pr_fig)
}

/// Equal-width confidence bins (the ECE's bins, so the diagram and the number agree).
fn calibration_bins(rows: &[PredictionRow], n: usize) -> Vec<CalibrationBin> {
    let mut count = vec![0usize; n];
    let mut conf = vec![0.0f64; n];
    let mut correct = vec![0usize; n];
    for r in rows {
        let c = r
            .probabilities
            .get(r.predicted)
            .copied()
            .map_or(0.0, f64::from);
        let b = ((c * n as f64) as usize).min(n - 1);
        count[b] += 1;
        conf[b] += c;
        correct[b] += usize::from(r.predicted == r.label);
    }
    (0..n)
        .map(|b| CalibrationBin {
            lo: b as f64 / n as f64,
            hi: (b + 1) as f64 / n as f64,
            count: count[b],
            confidence: if count[b] > 0 {
                conf[b] / count[b] as f64
            } else {
                0.0
            },
            accuracy: if count[b] > 0 {
                correct[b] as f64 / count[b] as f64
            } else {
                0.0
            },
        })
        .collect()
}

/// Expected calibration error from the diagram's own bins: Σ_b (n_b / N)·|acc_b − conf_b|,
/// the definition of [`crate::metrics::scores::expected_calibration_error`] (the test checks
/// they agree).
fn ece_of(bins: &[CalibrationBin]) -> f64 {
    let n: usize = bins.iter().map(|b| b.count).sum();
    bins.iter()
        .map(|b| b.count as f64 / n.max(1) as f64 * (b.accuracy - b.confidence).abs())
        .sum()
}

fn esc(s: &str) -> String {
    html_escape::encode_text(s).into_owned()
}

fn fmt_opt(v: Option<f64>) -> String {
    v.map_or_else(|| "—".into(), |v| format!("{v:.4}"))
}

fn metrics_table(out: &mut String, rows: &[(&str, &ClassificationMetrics)]) {
    out.push_str("<table><tr><th>split</th><th>accuracy</th><th>macro F1</th><th>weighted F1</th><th>ROC-AUC</th><th>PR-AUC</th><th>ECE</th><th>loss</th><th>examples</th></tr>");
    for (name, m) in rows {
        let s = m.scores.as_ref();
        let _ = write!(
            out,
            "<tr><td>{name}</td><td>{:.4}</td><td>{:.4}</td><td>{:.4}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            m.accuracy,
            m.macro_f1,
            m.weighted_f1,
            fmt_opt(s.and_then(|s| s.roc_auc)),
            fmt_opt(s.and_then(|s| s.pr_auc)),
            fmt_opt(s.map(|s| s.ece)),
            fmt_opt(m.loss),
            m.support
        );
    }
    out.push_str("</table>");
}

/// How long training ran and which checkpoint was exported, from `metrics.json` alone:
/// "`lead` for N optimiser steps (E epochs) in T s (…). The exported checkpoint is step B, best
/// by validation M (V)." Shared by the classification page and every task's page.
pub(super) fn training_sentences(s: &mut String, lead: &str, m: &RunMetrics, epochs: Option<f64>) {
    let _ = write!(
        s,
        "{lead} for {} optimiser steps{} in {:.0} s ({:.1} examples/s, {} trainable parameters){}.",
        m.steps,
        epochs.map_or(String::new(), |e| format!(" ({e:.2} epochs)")),
        m.train_time_s,
        m.train_examples_per_s,
        m.trainable_parameters,
        if m.stopped_early {
            ", stopped early"
        } else {
            ""
        }
    );
    let validated = m.validation.is_some() || m.validation_scores.is_some();
    if let (Some(best), true) = (m.best_step, validated) {
        let _ = write!(
            s,
            " The exported checkpoint is step {best}, best by validation {} ({}).",
            m.metric,
            fmt_opt(m.validation_metric(&m.metric))
        );
    }
    if let Some(p) = &m.privacy {
        let _ = write!(
            s,
            " Trained with differential privacy (DP-SGD): ε = {:.3} at δ = {:e} ({} accountant, noise multiplier {:.4}, per-example clipping to {}). {}",
            p.epsilon,
            p.delta,
            p.accountant.name(),
            p.noise_multiplier,
            p.max_grad_norm,
            crate::dp::GUARANTEE
        );
    }
}

/// A few sentences that say how training went, from the recorded numbers only.
fn narrative(run: &RunFiles) -> String {
    let m = &run.metrics;
    let mut s = String::new();
    let epochs = run.history.last().map(|r| r.epoch);
    training_sentences(&mut s, "Trained", m, epochs);
    if let Some(t) = &m.test {
        let _ = write!(
            s,
            " On the test split it scores accuracy {:.4}, macro F1 {:.4}.",
            t.accuracy, t.macro_f1
        );
    }
    let losses: Vec<(usize, f64)> = run
        .history
        .iter()
        .filter_map(|r| r.validation.loss.map(|l| (r.step, l)))
        .collect();
    s.push_str(&overfitting(&losses));
    s
}

/// Over-fitting: a sentence (with a leading space) when the validation loss `(step, loss)`
/// ended more than 2 % above its minimum; empty otherwise.
fn overfitting(losses: &[(usize, f64)]) -> String {
    if let Some(&(min_step, min_loss)) = losses.iter().min_by(|a, b| a.1.total_cmp(&b.1))
        && let Some(&(last_step, last_loss)) = losses.last()
        && last_step != min_step
        && last_loss > min_loss * 1.02
    {
        return format!(
            " Validation loss was lowest at step {min_step} ({min_loss:.4}) and rose to \
             {last_loss:.4} by step {last_step}: the model started to over-fit."
        );
    }
    String::new()
}

/// The page's opening: doctype, head with the inline CSS, the run's title and lead sentences.
fn page_head(h: &mut String, name: &str, lead: &str) {
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>tunekit report — {}</title>\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><style>{CSS}</style></head><body>",
        esc(name)
    );
    let _ = write!(
        h,
        "<h1>Run <code>{}</code></h1><p class=\"lead\">{}</p>",
        esc(name),
        esc(lead)
    );
}

/// The warnings box (nothing when there are none).
fn warnings_html(h: &mut String, warnings: &[String]) {
    if !warnings.is_empty() {
        h.push_str("<div class=\"warnings\" id=\"warnings\"><strong>Warnings</strong><ul>");
        for w in warnings {
            let _ = write!(h, "<li>{}</li>", esc(w));
        }
        h.push_str("</ul></div>");
    }
}

/// The page's end: the config and the footer.
fn page_tail(h: &mut String, config: Option<&str>) {
    if let Some(c) = config {
        let _ = write!(
            h,
            "<h2>Configuration</h2><details><summary>config.toml</summary><pre>{}</pre></details>",
            esc(c)
        );
    }
    let _ = write!(
        h,
        "<footer>Written by tunekit {} from the files in the run directory; regenerate with \
         <code>tunekit report RUN_DIR</code>.</footer></body></html>",
        env!("CARGO_PKG_VERSION")
    );
    h.push('\n');
}

/// The "where the model errs" figures: confusion matrix, ROC and precision-recall curves,
/// reliability diagram (each a "not available" figure when its input is missing).
fn error_figures(
    run: &RunFiles,
    final_metrics: Option<&ClassificationMetrics>,
    split_name: &str,
) -> Vec<Figure> {
    let labels = &run.metrics.labels;
    let cm_fig = match final_metrics {
        Some(fm) => Figure {
            id: "fig-confusion".into(),
            caption: format!("Confusion matrix of the exported model on the {split_name} split."),
            svg: plots::confusion_matrix(&fm.labels, &fm.confusion_matrix)
                .map_err(|e| e.to_string()),
        },
        None => missing(
            "fig-confusion",
            "Confusion matrix",
            "the run has no validation or test split",
        ),
    };
    let mut figures_errors = vec![cm_fig];
    match &run.predictions {
        Some((split, rows)) if !rows.is_empty() => {
            let (roc, pr) = ranking_figures(labels, split, rows);
            figures_errors.push(roc);
            figures_errors.push(pr);
            let bins = calibration_bins(rows, 10);
            let ece = ece_of(&bins);
            figures_errors.push(Figure {
                id: "fig-calibration".into(),
                caption: format!(
                    "Reliability diagram on the {split} split: predictions binned by confidence; a \
                     calibrated model's bars reach the diagonal. Bars below it mean over-confidence."
                ),
                svg: plots::reliability(&bins, ece).map_err(|e| e.to_string()),
            });
        }
        _ => {
            let why = "no predictions/*.jsonl in the run directory (runs before tunekit 0.1 did not write them)";
            figures_errors.push(missing("fig-roc", "ROC curve", why));
            figures_errors.push(missing("fig-pr", "Precision-recall curve", why));
            figures_errors.push(missing("fig-calibration", "Reliability diagram", why));
        }
    }
    figures_errors
}

/// The "every evaluation" table of the training history (the best step marked).
fn history_table(h: &mut String, run: &RunFiles) {
    let m = &run.metrics;
    if !run.history.is_empty() {
        h.push_str("<details><summary>Every evaluation</summary><table><tr><th>step</th><th>epoch</th><th>train loss</th><th>validation loss</th><th>validation accuracy</th><th>validation macro F1</th><th>learning rate</th><th>elapsed (s)</th></tr>");
        for r in &run.history {
            let best = if Some(r.step) == m.best_step {
                " class=\"best\""
            } else {
                ""
            };
            let _ = write!(
                *h,
                "<tr{best}><td>{}</td><td>{:.2}</td><td>{:.4}</td><td>{}</td><td>{:.4}</td><td>{:.4}</td><td>{:.2e}</td><td>{:.0}</td></tr>",
                r.step,
                r.epoch,
                r.train_loss,
                fmt_opt(r.validation.loss),
                r.validation.accuracy,
                r.validation.macro_f1,
                r.learning_rate,
                r.elapsed_s
            );
        }
        h.push_str("</table></details>");
    }
}

/// The per-class table of the final split and its 10 most confident errors.
fn per_class_and_errors(
    h: &mut String,
    run: &RunFiles,
    final_metrics: Option<&ClassificationMetrics>,
    split_name: &str,
) {
    let labels = &run.metrics.labels;
    if let Some(fm) = final_metrics {
        let _ = write!(
            *h,
            "<h3>Per class ({split_name} split)</h3><table><tr><th>label</th><th>precision</th><th>recall</th><th>F1</th><th>support</th></tr>"
        );
        for c in &fm.per_class {
            let _ = write!(
                *h,
                "<tr><td>{}</td><td>{:.4}</td><td>{:.4}</td><td>{:.4}</td><td>{}</td></tr>",
                esc(&c.label),
                c.precision,
                c.recall,
                c.f1,
                c.support
            );
        }
        h.push_str("</table>");
    }
    if let Some((split, rows)) = &run.predictions {
        let mut errors: Vec<&PredictionRow> =
            rows.iter().filter(|r| r.label != r.predicted).collect();
        let conf = |r: &PredictionRow| r.probabilities.get(r.predicted).copied().unwrap_or(0.0);
        errors.sort_by(|a, b| conf(b).total_cmp(&conf(a)));
        let _ = write!(
            *h,
            "<h3 id=\"confident-errors\">The 10 most confident errors ({split} split, {} errors of {})</h3>\
             <table class=\"errors\"><tr><th>#</th><th>text</th><th>true</th><th>predicted</th><th>confidence</th></tr>",
            errors.len(),
            rows.len()
        );
        let name = |c: usize| labels.get(c).cloned().unwrap_or_else(|| c.to_string());
        for (i, r) in errors.iter().take(10).enumerate() {
            let _ = write!(
                *h,
                "<tr><td>{}</td><td class=\"text\">{}</td><td>{}</td><td>{}</td><td>{:.3}</td></tr>",
                i + 1,
                esc(&r.text),
                esc(&name(r.label)),
                esc(&name(r.predicted)),
                conf(r)
            );
        }
        h.push_str("</table>");
    }
}

fn render(run: &RunFiles) -> Result<String> {
    let m = &run.metrics;
    let training = Training::classification(run);
    let test_dot = m.test.as_ref().and_then(|t| {
        let name = if m.metric == "loss" {
            "accuracy"
        } else {
            m.metric.as_str()
        };
        t.get(name).map(|v| (name, v))
    });
    let mut figures_training = vec![
        loss_figure(&training, "cross-entropy loss"),
        metric_figure(&training, &m.metric, &["accuracy", "macro_f1"], test_dot),
        lr_figure(&training),
    ];
    let split_name = run
        .predictions
        .as_ref()
        .map(|(s, _)| s.as_str())
        .unwrap_or("test");
    let final_metrics = match split_name {
        "test" => m.test.as_ref().or(m.validation.as_ref()),
        _ => m.validation.as_ref(),
    };
    let figures_errors = error_figures(run, final_metrics, split_name);

    let mut h = String::new();
    page_head(&mut h, &run.name, &narrative(run));
    let mut warnings = collapse_warnings(m);
    if let Some(d) = &run.data {
        warnings.extend(d.warnings.iter().cloned());
    }
    warnings_html(&mut h, &warnings);
    let mut rows: Vec<(&str, &ClassificationMetrics)> = Vec::new();
    if let Some(v) = &m.validation {
        rows.push(("validation", v));
    }
    if let Some(t) = &m.test {
        rows.push(("test", t));
    }
    if !rows.is_empty() {
        h.push_str("<h2>Final metrics (exported model)</h2>");
        metrics_table(&mut h, &rows);
    }

    h.push_str("<h2>How training went</h2><div class=\"grid\">");
    for f in figures_training.drain(..) {
        figure_html(&mut h, &f);
    }
    h.push_str("</div>");
    history_table(&mut h, run);

    h.push_str("<h2>Where the model errs</h2><div class=\"grid\">");
    for f in &figures_errors {
        figure_html(&mut h, f);
    }
    h.push_str("</div>");
    per_class_and_errors(&mut h, run, final_metrics, split_name);

    h.push_str("<h2>Data</h2>");
    match &run.data {
        Some(d) => data_tables(&mut h, d),
        None => h.push_str("<p>No data_report.json in the run directory.</p>"),
    }
    page_tail(&mut h, run.config.as_deref());
    Ok(h)
}

fn figure_html(h: &mut String, f: &Figure) {
    match &f.svg {
        Ok(svg) => {
            let _ = write!(
                h,
                "<figure id=\"{}\" class=\"plot\">{svg}<figcaption>{}</figcaption></figure>",
                f.id,
                esc(&f.caption)
            );
        }
        Err(why) => {
            let _ = write!(
                h,
                "<figure id=\"{}\" class=\"plot missing\"><p>Not available: {}</p><figcaption>{}</figcaption></figure>",
                f.id,
                esc(why),
                esc(&f.caption)
            );
        }
    }
}

fn data_tables(h: &mut String, d: &DataReport) {
    h.push_str("<table id=\"data-splits\"><tr><th>split</th><th>file</th><th>rows read</th><th>dropped</th><th>examples</th><th>labels</th><th>tokens mean / max</th><th>truncated</th><th>unknown tokens</th><th>undecodable bytes replaced (rows)</th><th>rows changed by cleaning</th></tr>");
    for s in &d.splits {
        let dropped: Vec<String> = s
            .dropped
            .iter()
            .filter(|(_, n)| **n > 0)
            .map(|(k, n)| format!("{n} {k}"))
            .collect();
        let counts: Vec<String> = s
            .label_counts
            .iter()
            .map(|(k, n)| format!("{}: {n}", esc(k)))
            .collect();
        let (tokens, truncated) = match &s.tokens {
            Some(t) => (
                format!("{:.1} / {}", t.mean, t.max),
                format!("{} (max_length {})", t.truncated, t.max_length),
            ),
            None => ("—".into(), "—".into()),
        };
        let unknown = match &s.unknown_tokens {
            Some(u) => format!(
                "{} of {} ({:.2}%)",
                u.unknown,
                u.word_pieces,
                100.0 * u.rate
            ),
            None => "—".into(),
        };
        let c = &s.cleaning;
        let cleaning: Vec<String> = [
            ("html", c.html_stripped),
            ("unicode", c.unicode_normalized),
            ("control chars", c.control_removed),
            ("whitespace", c.whitespace_collapsed),
            ("lowercased", c.lowercased),
        ]
        .iter()
        .filter(|(_, n)| *n > 0)
        .map(|(k, n)| format!("{k} {n}"))
        .collect();
        let cleaning = if cleaning.is_empty() {
            "0".to_string()
        } else {
            cleaning.join(", ")
        };
        let _ = write!(
            h,
            "<tr><td>{}</td><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{tokens}</td><td>{truncated}</td><td>{unknown}</td><td>{}</td><td>{cleaning}</td></tr>",
            esc(&s.split),
            esc(&s.file.display().to_string()),
            s.rows_read,
            if dropped.is_empty() {
                "0".into()
            } else {
                esc(&dropped.join(", "))
            },
            s.examples,
            counts.join("<br>"),
            s.decode_replaced
        );
    }
    h.push_str("</table>");
    let dd = &d.dedup;
    let sum = |m: &BTreeMap<String, usize>| m.values().sum::<usize>();
    let _ = write!(
        h,
        "<p>De-duplication: {} exact and {} near duplicates found{}; {} label-conflict groups ({} rows dropped); {} cross-split leaks.</p>",
        sum(&dd.exact_duplicates),
        sum(&dd.near_duplicates),
        if dd.duplicates_dropped {
            " and dropped"
        } else {
            " (kept)"
        },
        dd.conflict_groups,
        dd.conflict_rows_dropped,
        dd.leakage.iter().map(|l| l.rows).sum::<usize>()
    );
}

const CSS: &str = "body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1380px;margin:24px auto;padding:0 16px;color:#222}\
h1{font-size:1.6em}h2{margin-top:1.6em;border-bottom:1px solid #ddd;padding-bottom:4px}.lead{font-size:1.05em;line-height:1.5}\
.grid{display:grid;grid-template-columns:repeat(auto-fit,minmax(560px,1fr));gap:16px}\
figure.plot{margin:0;border:1px solid #e3e3e3;border-radius:6px;padding:8px;background:#fff}figure.plot svg{width:100%;height:auto;display:block}\
figure.missing{background:#fafafa;color:#777}figcaption{font-size:.9em;color:#555;margin-top:4px}\
table{border-collapse:collapse;margin:8px 0;font-size:.92em}th,td{border:1px solid #ddd;padding:4px 8px;text-align:right;vertical-align:top}\
th{background:#f4f4f4}td.text{text-align:left;max-width:640px}tr.best{background:#fff4d6}\
pre{background:#f7f7f7;padding:8px;overflow:auto}div.warnings{background:#fff4d6;border:1px solid #e0b84c;border-radius:6px;padding:4px 12px}footer{margin-top:2em;color:#777;font-size:.85em}";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::scores::expected_calibration_error;

    fn row(label: usize, predicted: usize, p1: f32) -> PredictionRow {
        PredictionRow {
            text: format!("t{label}{predicted}{p1}"),
            label,
            predicted,
            label_name: label.to_string(),
            predicted_name: predicted.to_string(),
            probabilities: vec![1.0 - p1, p1],
        }
    }

    #[test]
    fn calibration_bins_match_the_ece_definition() {
        let rows = vec![
            row(1, 1, 0.95),
            row(0, 1, 0.92),
            row(0, 0, 0.25),
            row(1, 0, 0.45),
        ];
        let bins = calibration_bins(&rows, 10);
        assert_eq!(bins.iter().map(|b| b.count).sum::<usize>(), 4);
        // 0.95 and 0.92 fall in bin 9: one of two right.
        assert_eq!(bins[9].count, 2);
        assert!((bins[9].accuracy - 0.5).abs() < 1e-12);
        assert!((bins[9].confidence - 0.935).abs() < 1e-6);
        // 0.75 (1 − 0.25) and 0.55 in bins 7 and 5.
        assert_eq!(bins[7].count, 1);
        assert_eq!(bins[5].count, 1);
        let ece = ece_of(&bins);
        let probs: Vec<Vec<f64>> = rows
            .iter()
            .map(|r| r.probabilities.iter().map(|&v| f64::from(v)).collect())
            .collect();
        let truth: Vec<usize> = rows.iter().map(|r| r.label).collect();
        assert!((ece - expected_calibration_error(&probs, &truth, 10)).abs() < 1e-6);
    }

    #[test]
    fn moving_average_is_trailing_and_starts_at_the_first_value() {
        let pts: Vec<(f64, f64)> = (0..5).map(|i| (i as f64, i as f64)).collect();
        let ma = moving_average(&pts, 2);
        assert_eq!(
            ma.iter().map(|p| p.1).collect::<Vec<_>>(),
            vec![0.0, 0.5, 1.5, 2.5, 3.5]
        );
    }

    #[test]
    fn binary_tasks_get_one_curve_for_the_positive_class() {
        let labels = vec!["neg".to_string(), "pos".to_string()];
        assert_eq!(curve_classes(&labels, &[]), vec![1]);
    }
}
