//! `report.html` of the tasks beyond single-label classification (multilabel, regression,
//! token classification, embedding).
//!
//! The page has the classification page's frame — run facts, warnings, the exported model's
//! scores, loss / validation-metric / learning-rate curves, every evaluation, the data report
//! and the config — with the task's own metric names, and one task section drawn from the
//! task's `predictions/{validation,test}.jsonl` lines ([`crate::task::predict`]): one file per
//! task here ([`multilabel`], [`regression`], [`token_classification`], [`embedding`]), each
//! with a `section` function that [`section`] dispatches to by `metrics.json` → `task`.
//!
//! Like the classification page, everything is read back from the run directory, so
//! `tunekit report RUN_DIR` redraws it without the model.

mod embedding;
mod multilabel;
mod regression;
mod token_classification;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

use super::{
    EvalPoint, Figure, PREDICTIONS_DIR, REPORT_FILE, Training, data_tables, esc, figure_html,
    fmt_opt, loss_figure, lr_figure, metric_figure, overfitting, page_head, page_tail, read_jsonl,
    read_scalars, warnings_html,
};
use crate::error::{Error, Result};
use crate::fsutil::{read_json, write_atomic};
use crate::prep::DataReport;
use crate::task::run::TaskEvalRecord;
use crate::task::{Scores, TaskKind, kind_name};
use crate::train::RunMetrics;

/// Everything a task page shows, read from a run directory.
struct TaskRun {
    dir: PathBuf,
    name: String,
    metrics: RunMetrics,
    /// `metrics.json` as written (its task keys `thresholds`, `evaluated_examples`).
    raw: serde_json::Value,
    history: Vec<TaskEvalRecord>,
    scalars: BTreeMap<String, BTreeMap<i64, f64>>,
    /// `data_report.json` (a [`DataReport`], or the CoNLL report of token classification).
    data: Option<serde_json::Value>,
    config: Option<String>,
}

impl TaskRun {
    fn load(run_dir: &Path) -> Result<Self> {
        let metrics_path = run_dir.join("metrics.json");
        let raw: serde_json::Value = read_json(&metrics_path)?;
        let mut clean = raw.clone();
        drop_undefined(&mut clean["validation_scores"]);
        drop_undefined(&mut clean["test_scores"]);
        let metrics: RunMetrics = serde_json::from_value(clean)
            .map_err(|e| Error::Report(format!("{}: {e}", metrics_path.display())))?;
        let history_path = run_dir.join("metrics.jsonl");
        let mut history = Vec::new();
        if history_path.exists() {
            for (i, mut line) in read_jsonl::<serde_json::Value>(&history_path)?
                .into_iter()
                .enumerate()
            {
                drop_undefined(&mut line["validation"]);
                history.push(serde_json::from_value(line).map_err(|e| {
                    Error::Report(format!("{}: line {}: {e}", history_path.display(), i + 1))
                })?);
            }
        }
        let data_path = run_dir.join("data_report.json");
        let data = if data_path.exists() {
            Some(read_json(&data_path)?)
        } else {
            None
        };
        let name = run_dir
            .canonicalize()
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .unwrap_or_else(|| run_dir.display().to_string());
        Ok(TaskRun {
            dir: run_dir.to_path_buf(),
            name,
            metrics,
            raw,
            history,
            scalars: read_scalars(run_dir)?,
            data,
            config: std::fs::read_to_string(run_dir.join("config.toml")).ok(),
        })
    }

    /// The lines of `predictions/<split>.jsonl`, `None` when the run has no such file.
    fn predictions<T: DeserializeOwned>(&self, split: &str) -> Result<Option<Vec<T>>> {
        let p = self
            .dir
            .join(PREDICTIONS_DIR)
            .join(format!("{split}.jsonl"));
        if p.exists() {
            read_jsonl(&p).map(Some)
        } else {
            Ok(None)
        }
    }

    /// The split the error analysis uses (test, else validation) and its lines.
    fn analysis_split<T: DeserializeOwned>(&self) -> Result<Option<(&'static str, Vec<T>)>> {
        for split in ["test", "validation"] {
            if let Some(rows) = self.predictions(split)? {
                return Ok(Some((split, rows)));
            }
        }
        Ok(None)
    }

    /// The exported model's scores on `split` (`validation` or `test`).
    fn scores(&self, split: &str) -> Option<&Scores> {
        match split {
            "validation" => self.metrics.validation_scores.as_ref(),
            _ => self.metrics.test_scores.as_ref(),
        }
    }

    /// Examples a split's scores were computed over (`metrics.json` → `evaluated_examples`).
    fn evaluated(&self, split: &str) -> Option<u64> {
        self.raw["evaluated_examples"][split].as_u64()
    }

    /// Multilabel decision thresholds in label order: `metrics.json` → `thresholds`, else the
    /// exported model's `tunekit.json` → `task.thresholds`; empty when neither has them.
    fn thresholds(&self) -> Vec<f64> {
        let from = |v: &serde_json::Value| -> Option<Vec<f64>> {
            v.as_array()?
                .iter()
                .map(serde_json::Value::as_f64)
                .collect()
        };
        from(&self.raw["thresholds"])
            .or_else(|| {
                let meta: serde_json::Value =
                    read_json(&self.dir.join("model").join(crate::model::TUNEKIT_META)).ok()?;
                from(&meta["task"]["thresholds"])
            })
            .unwrap_or_default()
    }

    fn training(&self) -> Training<'_> {
        Training {
            scalars: &self.scalars,
            evals: self
                .history
                .iter()
                .map(|r| EvalPoint {
                    step: r.step,
                    epoch: r.epoch,
                    train_loss: r.train_loss,
                    learning_rate: r.learning_rate,
                    validation: r.validation.clone(),
                })
                .collect(),
            steps: self.metrics.steps,
            best_step: self.metrics.best_step,
        }
    }
}

/// Remove the `null` entries of a score map: JSON has no NaN, so serde writes an undefined
/// score (the correlation of a constant prediction) as `null`; the page shows it as missing.
fn drop_undefined(scores: &mut serde_json::Value) {
    if let Some(map) = scores.as_object_mut() {
        map.retain(|_, v| !v.is_null());
    }
}

/// What a task adds to the page: a heading, figures, then tables (HTML).
struct Section {
    title: String,
    figures: Vec<Figure>,
    html: String,
}

/// The task's section of the page.
fn section(run: &TaskRun) -> Result<Section> {
    match run.metrics.task {
        TaskKind::Multilabel => multilabel::section(run),
        TaskKind::Regression => regression::section(run),
        TaskKind::TokenClassification => token_classification::section(run),
        TaskKind::Embedding => embedding::section(run),
        TaskKind::CausalLm => Ok(Section {
            title: "Language model (supervised fine-tuning)".into(),
            figures: Vec::new(),
            html: "<p>Loss is the mean cross-entropy of the next token over the target \
                   tokens (the completions or assistant turns, unless \
                   <code>task.completion_only_loss = false</code>); perplexity is its \
                   exponential; next-token accuracy is the share of target tokens the model \
                   ranks first. How many records were cut at <code>model.max_length</code> \
                   or dropped is in <code>data_report.json</code>.</p>"
                .into(),
        }),
        TaskKind::Classification | TaskKind::PairClassification => Err(Error::Report(
            "classification runs are drawn by report::write".into(),
        )),
    }
}

/// What the task's loss is (the loss figure's y axis).
fn loss_name(kind: TaskKind) -> &'static str {
    match kind {
        TaskKind::Multilabel => "binary cross-entropy",
        TaskKind::Regression => "squared error",
        TaskKind::TokenClassification => "cross-entropy per tagged word",
        TaskKind::Embedding => "in-batch contrastive loss",
        TaskKind::CausalLm => "cross-entropy per target token",
        TaskKind::Classification | TaskKind::PairClassification => "cross-entropy loss",
    }
}

/// The task's score names in the order the tables show them (its `train.metric` choices,
/// loss last).
fn score_names(kind: TaskKind) -> Vec<&'static str> {
    let mut names: Vec<&str> = kind
        .metrics()
        .iter()
        .copied()
        .filter(|n| *n != "loss")
        .collect();
    names.push("loss");
    names
}

/// Write `run_dir/report.html` for a task run and return its path.
pub(super) fn write(run_dir: &Path) -> Result<PathBuf> {
    let run = TaskRun::load(run_dir)?;
    let html = render(&run)?;
    let path = run_dir.join(REPORT_FILE);
    write_atomic(&path, html.as_bytes())?;
    Ok(path)
}

fn narrative(run: &TaskRun) -> String {
    let m = &run.metrics;
    let mut s = String::new();
    let epochs = run.history.last().map(|r| r.epoch);
    let lead = format!("A {} run: trained", kind_name(m.task));
    super::training_sentences(&mut s, &lead, m, epochs);
    if let Some(t) = &m.test_scores {
        let head: Vec<String> = score_names(m.task)
            .into_iter()
            .take(2)
            .filter_map(|n| t.get(n).map(|v| format!("{n} {v:.4}")))
            .collect();
        if !head.is_empty() {
            let _ = write!(s, " On the test split it scores {}.", head.join(", "));
        }
    }
    let losses: Vec<(usize, f64)> = run
        .history
        .iter()
        .filter_map(|r| r.validation.get("loss").map(|&l| (r.step, l)))
        .collect();
    s.push_str(&overfitting(&losses));
    s
}

/// The exported model's scores per split; each cell carries `data-key="split/name"`.
fn scores_table(h: &mut String, run: &TaskRun) {
    let names = score_names(run.metrics.task);
    let splits: Vec<(&str, &Scores)> = ["validation", "test"]
        .into_iter()
        .filter_map(|s| run.scores(s).map(|v| (s, v)))
        .collect();
    if splits.is_empty() {
        return;
    }
    h.push_str(
        "<h2>Final scores (exported model)</h2><table id=\"final-scores\"><tr><th>split</th>",
    );
    for n in &names {
        let _ = write!(h, "<th>{n}</th>");
    }
    h.push_str("<th>examples</th></tr>");
    for (split, s) in splits {
        let _ = write!(h, "<tr><td>{split}</td>");
        for n in &names {
            let _ = write!(
                h,
                "<td data-key=\"{split}/{n}\">{}</td>",
                fmt_opt(s.get(*n).copied())
            );
        }
        let _ = write!(
            h,
            "<td>{}</td></tr>",
            run.evaluated(split)
                .map_or_else(|| "—".to_string(), |n| n.to_string())
        );
    }
    h.push_str("</table>");
}

fn history_table(h: &mut String, run: &TaskRun) {
    if run.history.is_empty() {
        return;
    }
    let names = score_names(run.metrics.task);
    h.push_str("<details><summary>Every evaluation</summary><table><tr><th>step</th><th>epoch</th><th>train loss</th>");
    for n in &names {
        let _ = write!(h, "<th>validation {n}</th>");
    }
    h.push_str("<th>learning rate</th><th>elapsed (s)</th></tr>");
    for r in &run.history {
        let best = if Some(r.step) == run.metrics.best_step {
            " class=\"best\""
        } else {
            ""
        };
        let _ = write!(
            h,
            "<tr{best}><td>{}</td><td>{:.2}</td><td>{:.4}</td>",
            r.step, r.epoch, r.train_loss
        );
        for n in &names {
            let _ = write!(h, "<td>{}</td>", fmt_opt(r.validation.get(*n).copied()));
        }
        let _ = write!(
            h,
            "<td>{:.2e}</td><td>{:.0}</td></tr>",
            r.learning_rate, r.elapsed_s
        );
    }
    h.push_str("</table></details>");
}

/// The CoNLL data report of token classification (`data_report.json` → `splits`).
fn conll_tables(h: &mut String, data: &serde_json::Value) {
    let _ = write!(
        h,
        "<p>Tag scheme {}; tags: {}.</p><table id=\"data-splits\"><tr><th>split</th><th>file</th><th>sentences</th><th>words</th><th>entities</th><th>sentences truncated</th><th>words without tag after truncation</th><th>tags</th></tr>",
        esc(data["scheme"].as_str().unwrap_or("—")),
        esc(&data["tags"]
            .as_array()
            .map(|t| {
                t.iter()
                    .filter_map(serde_json::Value::as_str)
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .unwrap_or_default())
    );
    for s in data["splits"].as_array().into_iter().flatten() {
        let n = |k: &str| s[k].as_u64().map_or_else(|| "—".into(), |v| v.to_string());
        let tags: Vec<String> = s["tag_counts"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(t, c)| format!("{}: {c}", esc(t)))
            .collect();
        let _ = write!(
            h,
            "<tr><td>{}{}</td><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(s["split"].as_str().unwrap_or("")),
            if s["carved"] == true {
                " (carved from train)"
            } else {
                ""
            },
            esc(s["file"].as_str().unwrap_or("")),
            n("sentences"),
            n("words"),
            n("entities"),
            n("sentences_truncated"),
            n("words_without_tag_after_truncation"),
            tags.join("<br>")
        );
    }
    h.push_str("</table>");
}

fn render(run: &TaskRun) -> Result<String> {
    let m = &run.metrics;
    let kind = m.task;
    let training = run.training();
    let metric_names = score_names(kind);
    let selection_for_test = if m.metric == "loss" {
        kind.default_metric()
    } else {
        m.metric.as_str()
    };
    let test_dot = m
        .test_metric(selection_for_test)
        .map(|v| (selection_for_test, v));
    let also: Vec<&str> = metric_names.iter().copied().take(3).collect();
    let figures_training = [
        loss_figure(&training, loss_name(kind)),
        metric_figure(&training, &m.metric, &also, test_dot),
        lr_figure(&training),
    ];
    let data: Option<DataReport> = run
        .data
        .as_ref()
        .filter(|_| kind != TaskKind::TokenClassification)
        .and_then(|d| serde_json::from_value(d.clone()).ok());
    let task = section(run)?;

    let mut h = String::new();
    page_head(&mut h, &run.name, &narrative(run));
    let mut warnings = m.warnings.clone();
    if let Some(d) = &data {
        warnings.extend(d.warnings.iter().cloned());
    }
    warnings_html(&mut h, &warnings);
    scores_table(&mut h, run);
    h.push_str("<h2>How training went</h2><div class=\"grid\">");
    for f in &figures_training {
        figure_html(&mut h, f);
    }
    h.push_str("</div>");
    history_table(&mut h, run);
    let _ = write!(h, "<h2 id=\"task-section\">{}</h2>", esc(&task.title));
    if !task.figures.is_empty() {
        h.push_str("<div class=\"grid\">");
        for f in &task.figures {
            figure_html(&mut h, f);
        }
        h.push_str("</div>");
    }
    h.push_str(&task.html);
    h.push_str("<h2>Data</h2>");
    match (&data, &run.data) {
        (Some(d), _) => data_tables(&mut h, d),
        (None, Some(v)) if kind == TaskKind::TokenClassification => conll_tables(&mut h, v),
        _ => h.push_str("<p>No data_report.json in the run directory.</p>"),
    }
    page_tail(&mut h, run.config.as_deref());
    Ok(h)
}

/// `n` equal-width bins over `[lo, hi]`: (bin centre, share of `values` in the bin); values
/// outside the range go to the end bins.
fn histogram(values: &[f64], lo: f64, hi: f64, n: usize) -> Vec<(f64, f64)> {
    let n = n.max(1);
    let width = (hi - lo) / n as f64;
    let mut counts = vec![0usize; n];
    for &v in values.iter().filter(|v| v.is_finite()) {
        let b = if width > 0.0 {
            (((v - lo) / width).floor().max(0.0) as usize).min(n - 1)
        } else {
            0
        };
        counts[b] += 1;
    }
    let total = values.iter().filter(|v| v.is_finite()).count().max(1) as f64;
    counts
        .iter()
        .enumerate()
        .map(|(b, &c)| (lo + width * (b as f64 + 0.5), c as f64 / total))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_shares_sum_to_one_and_clamp_the_ends() {
        let h = histogram(&[-2.0, 0.1, 0.2, 0.9, 1.0, 5.0], 0.0, 1.0, 4);
        assert_eq!(h.len(), 4);
        assert!((h[0].0 - 0.125).abs() < 1e-12);
        // -2, 0.1, 0.2 in bin 0; 0.9, 1.0, 5.0 in bin 3.
        assert_eq!(
            h.iter().map(|b| b.1).collect::<Vec<_>>(),
            vec![0.5, 0.0, 0.0, 0.5]
        );
    }

    #[test]
    fn score_names_follow_the_tasks_metrics_with_loss_last() {
        assert_eq!(
            score_names(TaskKind::Regression),
            vec!["mse", "rmse", "mae", "r2", "pearson", "spearman", "loss"]
        );
        assert_eq!(
            score_names(TaskKind::Embedding),
            vec!["mrr", "recall_at_1", "recall_at_5", "loss"]
        );
    }
}
