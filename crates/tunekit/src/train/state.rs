//! A run's position and its checkpoints: [`TrainState`] (everything besides weights and
//! optimiser moments a resumed run needs), the `metrics.jsonl` history, and the checkpoint
//! directory protocol (`checkpoints/step-N/` + an atomically replaced `latest.json`).

use std::path::{Path, PathBuf};

use burn::optim::ModuleOptimizer;
use serde::{Deserialize, Serialize};

use super::model::TrainModel;
use super::strategy::model_param_ids;
use crate::error::{Error, Result};
use crate::fsutil::{read_json, write_atomic, write_json};
use crate::metrics::ClassificationMetrics;

/// One evaluation during training (a line of `metrics.jsonl`); `V` is the task's validation
/// scores ([`ClassificationMetrics`] for classification, [`crate::task::Scores`] otherwise).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct EvalRecord<V = ClassificationMetrics> {
    /// Optimiser steps done.
    pub step: usize,
    /// Epoch (fractional: steps done / steps per epoch).
    pub epoch: f64,
    /// Mean training loss since the previous evaluation.
    pub train_loss: f64,
    /// Learning rate of the last step.
    pub learning_rate: f64,
    /// Validation metrics.
    pub validation: V,
    /// Seconds of training so far.
    pub elapsed_s: f64,
    /// ε spent so far (DP runs only; at the run's δ).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epsilon: Option<f64>,
}

/// Position and bookkeeping saved with every checkpoint; `R` is one evaluation's record
/// ([`EvalRecord`] of the task's scores).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(bound(deserialize = "R: serde::de::DeserializeOwned"))]
pub struct TrainState<R = EvalRecord> {
    /// Optimiser steps done.
    pub step: usize,
    /// Current epoch (0-based).
    pub epoch: usize,
    /// Micro-batches of the current epoch already consumed.
    pub batch_in_epoch: usize,
    /// Best validation metric so far.
    pub best_metric: Option<f64>,
    /// Step of the best validation metric.
    pub best_step: Option<usize>,
    /// Evaluations since the best one.
    pub evals_without_improvement: usize,
    /// All evaluations so far.
    pub history: Vec<R>,
    /// Training loss summed since the last evaluation, and its example count.
    pub loss_since_eval: (f64, usize),
    /// Seconds of training before this process (for throughput across resumes).
    pub elapsed_s: f64,
    /// Examples processed so far.
    pub examples_seen: usize,
    /// Early stopping fired.
    pub stopped_early: bool,
    /// Sorted parameter ids the optimiser state belongs to.
    pub param_ids: Vec<u64>,
    /// The privacy accountant's history (DP runs only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub privacy: Option<crate::dp::PrivacyState>,
}

impl<R> TrainState<R> {
    /// The state before the first step.
    pub(crate) fn start(param_ids: Vec<u64>) -> Self {
        TrainState {
            step: 0,
            epoch: 0,
            batch_in_epoch: 0,
            best_metric: None,
            best_step: None,
            evals_without_improvement: 0,
            history: Vec::new(),
            loss_since_eval: (0.0, 0),
            elapsed_s: 0.0,
            examples_seen: 0,
            stopped_early: false,
            param_ids,
            privacy: None,
        }
    }

    /// Book a validation result: returns whether it is the best so far (then the caller saves
    /// the model); otherwise counts towards early stopping (`patience` 0 = never).
    pub(crate) fn record_validation(
        &mut self,
        value: f64,
        higher_is_better: bool,
        patience: usize,
    ) -> bool {
        let better = match self.best_metric {
            None => value.is_finite(),
            Some(b) if higher_is_better => value > b,
            Some(b) => value < b,
        };
        if better {
            self.best_metric = Some(value);
            self.best_step = Some(self.step);
            self.evals_without_improvement = 0;
        } else {
            self.evals_without_improvement += 1;
            if patience > 0 && self.evals_without_improvement >= patience {
                self.stopped_early = true;
            }
        }
        better
    }
}

/// The checkpoint a run resumes from (`--resume` and a checkpoint present), else `None`.
pub(crate) fn resume_point(run_dir: &Path, resume: bool) -> Result<Option<PathBuf>> {
    let latest = run_dir.join(CHECKPOINTS).join(LATEST);
    if resume && latest.exists() {
        let ptr: LatestPointer = read_json(&latest)?;
        return Ok(Some(run_dir.join(CHECKPOINTS).join(ptr.dir)));
    }
    if resume {
        tracing::warn!(
            "--resume: no checkpoint in {}; starting from the beginning",
            run_dir.display()
        );
    }
    Ok(None)
}

/// Optimiser moments and position from checkpoint `dir`, checked against `model`'s parameters.
pub(crate) fn restore<R: serde::de::DeserializeOwned>(
    dir: &Path,
    optim: ModuleOptimizer,
    model: &impl burn::module::Module,
) -> Result<(ModuleOptimizer, TrainState<R>)> {
    let opt_path = dir.join("optimizer.bpk");
    let bytes = std::fs::read(&opt_path).map_err(|e| Error::io(&opt_path, e))?;
    let optim = optim
        .from_bytes(burn::tensor::Bytes::from_bytes_vec(bytes))
        .map_err(|e| Error::Checkpoint(format!("{}: {e:?}", opt_path.display())))?;
    let state: TrainState<R> = read_json(&dir.join("state.json"))?;
    if state.param_ids != model_param_ids(model) {
        return Err(Error::Checkpoint(format!(
            "{}: the checkpoint's parameters do not match the model; cannot resume",
            dir.display()
        )));
    }
    tracing::info!(
        "resuming from {} (step {}, epoch {})",
        dir.display(),
        state.step,
        state.epoch + 1
    );
    Ok((optim, state))
}

pub(crate) const CHECKPOINTS: &str = "checkpoints";
pub(crate) const LATEST: &str = "latest.json";

#[derive(Debug, Serialize, Deserialize)]
struct LatestPointer {
    step: usize,
    dir: String,
}

fn checkpoint_dir(run_dir: &Path, step: usize) -> PathBuf {
    run_dir.join(CHECKPOINTS).join(format!("step-{step:08}"))
}

/// Save the trained weights into `dir`: the whole model (`model.safetensors`), or for LoRA
/// only the adapters and head (`adapter_model.safetensors`).
pub(crate) fn save_weights(model: &impl TrainModel, dir: &Path, lora: bool) -> Result<()> {
    model.save_weights(dir, lora)
}

/// Write a checkpoint (weights, optimiser state, position), then atomically point
/// `checkpoints/latest.json` at it and delete older checkpoints. A crash at any moment leaves
/// `latest.json` naming a complete checkpoint.
pub(crate) fn save_checkpoint<R: Serialize>(
    run_dir: &Path,
    model: &impl TrainModel,
    optim: &ModuleOptimizer,
    state: &TrainState<R>,
    lora: bool,
) -> Result<()> {
    let step = state.step;
    let dir = checkpoint_dir(run_dir, step);
    save_weights(model, &dir, lora)?;
    let opt_path = dir.join("optimizer.bpk");
    let bytes = optim
        .into_bytes()
        .map_err(|e| Error::Checkpoint(format!("{}: {e:?}", opt_path.display())))?;
    write_atomic(&opt_path, &bytes)?;
    write_json(&dir.join("state.json"), state)?;
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    write_json(
        &run_dir.join(CHECKPOINTS).join(LATEST),
        &LatestPointer {
            step,
            dir: name.clone(),
        },
    )?;
    let root = run_dir.join(CHECKPOINTS);
    if let Ok(entries) = std::fs::read_dir(&root) {
        for e in entries.flatten() {
            let n = e.file_name().to_string_lossy().into_owned();
            if n.starts_with("step-") && n != name {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
    Ok(())
}

/// Rewrite `metrics.jsonl` (atomically) with the whole history.
pub(crate) fn rewrite_history<R: Serialize>(path: &Path, history: &[R]) -> Result<()> {
    let mut text = String::new();
    for r in history {
        let line = serde_json::to_string(r).map_err(|e| Error::Engine(e.to_string()))?;
        text.push_str(&line);
        text.push('\n');
    }
    write_atomic(path, text.as_bytes())
}
