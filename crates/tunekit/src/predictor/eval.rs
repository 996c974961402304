//! `tunekit eval` for every task: [`Predictor::evaluate`] on a labelled file.

use std::path::Path;

use serde::Serialize;

use super::Predictor;
use crate::data::{DataSpec, read_examples};
use crate::error::{Error, Result};
use crate::infer::{EvalReport, evaluate_tokens, label_ids, require_input};
use crate::task::predict::TaskEvalReport;
use crate::task::run::{EvalSettings, TaskSplit, conll_split, table_split};
use crate::task::{TaskKind, ner};

/// The result of evaluating a model on a labelled file: classification metrics (accuracy,
/// F1, calibration, confusion matrix; optionally robustness) or a task's named scores. The
/// JSON is the inner report's own shape (untagged), as `tunekit eval` always wrote it.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum Evaluation {
    /// Single-label or pair classification.
    Classification(EvalReport),
    /// Multilabel, regression, token classification or embedding.
    Task(TaskEvalReport),
}

impl Evaluation {
    /// Examples evaluated (sentences for token classification).
    pub fn examples(&self) -> usize {
        match self {
            Evaluation::Classification(r) => r.examples,
            Evaluation::Task(r) => r.examples,
        }
    }

    /// Examples truncated to the model's max length.
    pub fn truncated(&self) -> usize {
        match self {
            Evaluation::Classification(r) => r.truncated,
            Evaluation::Task(r) => r.truncated,
        }
    }

    /// One headline score by name: `accuracy` / `macro_f1` / `loss` for classification, the
    /// task's score names otherwise (`micro_f1`, `mse`, `f1`, `mrr`, …).
    pub fn score(&self, name: &str) -> Option<f64> {
        match self {
            Evaluation::Classification(r) => match name {
                "accuracy" => Some(r.metrics.accuracy),
                "macro_f1" => Some(r.metrics.macro_f1),
                "loss" => r.metrics.loss,
                _ => None,
            },
            Evaluation::Task(r) => r.scores.get(name).copied(),
        }
    }
}

impl Predictor {
    /// Evaluate on the labelled file `spec`: for classification and the table tasks, rows
    /// read as `spec` says (its label column; embedding reads (text, pair) rows and ignores
    /// the label column); for token classification, the CoNLL file at `spec.path` (only the
    /// encoding options of `spec` apply). With `robustness` (classification only), also under
    /// the perturbations of [`crate::robustness`]; asked of another task it is an error
    /// naming the task.
    pub fn evaluate(
        &self,
        spec: &DataSpec,
        batch_size: usize,
        robustness: bool,
    ) -> Result<Evaluation> {
        if !self.task.kind.is_classification() {
            if robustness {
                self.require_classifier("--robustness")?;
            }
            return Ok(Evaluation::Task(self.evaluate_task(spec, batch_size)?));
        }
        let (examples, read) = read_examples(spec)?;
        require_input(examples.len(), &read, &spec.path)?;
        let ids = label_ids(&examples, &self.labels, &spec.path)?;
        let tokens = self.tokenize(&examples)?;
        let truncated = tokens.iter().filter(|t| t.truncated).count();
        let metrics = evaluate_tokens(
            &self.model,
            &tokens,
            &ids,
            &self.labels,
            batch_size,
            self.tokenizer.pad_id(),
            &self.device,
        )?;
        Ok(Evaluation::Classification(EvalReport {
            file: spec.path.clone(),
            examples: examples.len(),
            dropped_empty_text: read.empty_text_dropped,
            dropped_empty_label: read.empty_label_dropped,
            truncated,
            max_length: self.tokenizer.max_length(),
            metrics,
            robustness: if robustness {
                Some(crate::robustness::evaluate(
                    self, &examples, &ids, batch_size, 0,
                )?)
            } else {
                None
            },
        }))
    }

    /// The labelled split of a task model: CoNLL for token classification, rows for the
    /// others (multilabel: an empty label cell is the empty label set).
    pub(crate) fn task_split(&self, name: &str, spec: &DataSpec) -> Result<TaskSplit> {
        let path = &spec.path;
        let mut split = match self.task.kind {
            TaskKind::TokenClassification => {
                let (sentences, _) =
                    ner::read_conll_with(path, true, spec.encoding, spec.replace_invalid)?;
                conll_split(name, path, sentences, &self.labels, &self.tokenizer)?.0
            }
            kind => {
                let mut spec = spec.clone();
                match kind {
                    // Pairs are their own targets: no label column.
                    TaskKind::Embedding => spec.label_column = None,
                    TaskKind::Multilabel if spec.label_column.is_some() => {
                        spec.fill_label.get_or_insert_with(String::new);
                    }
                    _ => {}
                }
                let (mut examples, read) = read_examples(&spec)?;
                require_input(examples.len(), &read, &spec.path)?;
                if let Some(p) = &self.preprocess {
                    for e in &mut examples {
                        e.text = p.apply(&e.text);
                        if let Some(t) = e.text_pair.as_mut() {
                            *t = p.apply(t);
                        }
                    }
                }
                table_split(
                    kind,
                    name,
                    path,
                    &examples,
                    &self.labels,
                    &self.task.label_separator,
                    &self.tokenizer,
                )?
            }
        };
        split.name = name.into();
        Ok(split)
    }

    fn evaluate_task(&self, spec: &DataSpec, batch_size: usize) -> Result<TaskEvalReport> {
        let split = self.task_split("eval", spec)?;
        let settings = EvalSettings {
            kind: self.task.kind,
            batch_size,
            fixed_threshold: None,
            scale: self.task.contrastive_scale.unwrap_or(20.0),
            pad_id: self.tokenizer.pad_id(),
        };
        let thresholds = (!self.task.thresholds.is_empty()).then_some(&self.task.thresholds[..]);
        let scores = crate::task::run::evaluate(
            &settings,
            &self.model,
            &split,
            &self.labels,
            thresholds,
            &self.device,
        )?
        .scores;
        Ok(TaskEvalReport {
            task: self.task.kind,
            model: self.dir.clone(),
            data: spec.path.clone(),
            examples: split.tokens.len(),
            truncated: split.tokens.iter().filter(|t| t.truncated).count(),
            scores,
        })
    }

    /// Whether pruning's Taylor importance can be computed for this model with calibration
    /// data `data`: it needs the gradient of the classification loss (cross-entropy against
    /// `data`'s labels), so another task is refused naming it and the data-free alternative.
    pub fn calibration_check(&self, data: &Path) -> Result<()> {
        if self.task.kind.is_classification() {
            return Ok(());
        }
        Err(Error::Config(format!(
            "{}: --importance taylor needs the loss gradient of a classification head; this is a {} model (use --importance magnitude, which needs no data)",
            data.display(),
            self.kind_name()
        )))
    }
}
