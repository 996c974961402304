//! Fine-tuning, for every task: one loop ([`fit`]) over a task's [`fit::Objective`], run
//! by [`train`], which owns the run directory's status, the experiment index and panics.
//!
//! - [`fit`]: the loop (setup, epochs, gradient step, evaluation, checkpoints) and its two
//!   seams: `Objective` (what a task contributes) and `GradientStep` (where it runs);
//! - [`step`]: from accumulated gradients to new weights (clipping, L1, optimiser step);
//! - [`strategy`]: which weights train and how fast (freezing, LoRA, LLRD, unfreezing);
//! - [`state`]: position, history and checkpoints (exact resume);
//! - [`loss`]: classification losses (cross-entropy, focal, distillation);
//! - [`cv`]: K-fold cross-validation; [`check`]: `tunekit data check`.
//!
//! Determinism: everything random is a pure function of the run seed and the position in
//! training — the epoch's data order is seeded by `(seed, epoch)`, dropout is reseeded before
//! every micro-batch by `(seed, step, micro-batch)`, and the learning rate is a function of
//! the step. A checkpoint therefore needs only weights, optimiser moments and the position,
//! and a resumed run retraces an uninterrupted one exactly.

pub mod check;
pub mod cv;
pub(crate) mod fit;
pub mod loss;
pub(crate) mod model;
pub mod state;
pub mod step;
pub mod strategy;

use std::path::{Path, PathBuf};

use burn::tensor::Device;
use serde::{Deserialize, Serialize};

pub use check::{DataCheck, check_data};
pub use cv::{CvMetrics, MeanStd, cross_validate};
pub use loss::{
    balanced_class_weights, classification_loss_sum, cross_entropy_sum, cross_entropy_weighted_sum,
    distillation_kl_sum,
};
pub use state::{EvalRecord, TrainState};
pub use step::{add_l1_penalty, clip_global_norm};
pub use strategy::build_optimizer;

use crate::config::RunConfig;
use crate::error::{Error, Result};
use crate::fsutil::{read_json, write_atomic, write_json};
use crate::metrics::ClassificationMetrics;
use crate::prep::PreparedData;
use state::{CHECKPOINTS, LATEST};

/// Final result of a run (`metrics.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunMetrics {
    /// Label order of the head.
    pub labels: Vec<String>,
    /// Selection metric.
    pub metric: String,
    /// Step of the best checkpoint.
    pub best_step: Option<usize>,
    /// Best validation metrics (the exported model's).
    pub validation: Option<ClassificationMetrics>,
    /// Test metrics of the exported model.
    pub test: Option<ClassificationMetrics>,
    /// Optimiser steps done.
    pub steps: usize,
    /// Whether early stopping ended training.
    pub stopped_early: bool,
    /// Training wall time in seconds (excluding data preparation and final test).
    pub train_time_s: f64,
    /// Training examples per second.
    pub train_examples_per_s: f64,
    /// Trainable parameters.
    pub trainable_parameters: usize,
    /// The task (absent: classification).
    #[serde(default, skip_serializing_if = "is_classification")]
    pub task: crate::task::TaskKind,
    /// Other tasks: the exported model's validation scores ([`crate::task`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validation_scores: Option<crate::task::Scores>,
    /// Other tasks: the exported model's test scores.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_scores: Option<crate::task::Scores>,
    /// What a practitioner must look at, e.g. a collapsed prediction distribution
    /// ([`crate::report::prediction_collapse`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// What a differentially private run spent (final ε and δ), absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub privacy: Option<crate::dp::PrivacyReport>,
}

fn is_classification(kind: &crate::task::TaskKind) -> bool {
    kind.is_classification()
}

impl RunMetrics {
    /// A validation metric of the exported model by name, whatever the task.
    pub fn validation_metric(&self, name: &str) -> Option<f64> {
        match &self.validation_scores {
            Some(s) => s.get(name).copied(),
            None => self.validation.as_ref().and_then(|v| v.get(name)),
        }
    }

    /// A test metric of the exported model by name, whatever the task.
    pub fn test_metric(&self, name: &str) -> Option<f64> {
        match &self.test_scores {
            Some(s) => s.get(name).copied(),
            None => self.test.as_ref().and_then(|v| v.get(name)),
        }
    }
}

/// Options that are not part of the experiment's config.
#[derive(Debug, Clone, Default)]
pub struct TrainOptions {
    /// Run directory (default `run.dir/run.name`).
    pub run_dir: Option<PathBuf>,
    /// Continue from the latest checkpoint in the run directory.
    pub resume: bool,
    /// Show a progress bar.
    pub progress: bool,
    /// Called after every validation evaluation; `true` stops the run as pruned
    /// ([`Error::Pruned`]). Hyperparameter search prunes unpromising trials through it.
    pub on_eval: Option<EvalHook>,
}

/// A callback on each validation evaluation: (evaluation number from 1, optimiser step,
/// value of the selection metric) → prune now?
#[derive(Clone)]
pub struct EvalHook(pub std::sync::Arc<dyn Fn(usize, usize, f64) -> bool + Send + Sync>);

impl std::fmt::Debug for EvalHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EvalHook")
    }
}

/// `status.json` of a run directory: a run is `complete` only after every output is written.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RunStatus {
    /// `running`, `failed` or `complete`.
    pub status: String,
    /// Error message for failed runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

fn set_status(run_dir: &Path, status: &str, error: Option<String>) -> Result<()> {
    write_json(
        &run_dir.join("status.json"),
        &RunStatus {
            status: status.into(),
            error,
        },
    )
}

/// Where a run writes its outputs.
pub fn run_dir_for(config: &RunConfig, options: &TrainOptions) -> PathBuf {
    options
        .run_dir
        .clone()
        .unwrap_or_else(|| config.run.dir.join(&config.run.name))
}

/// Fine-tune according to `config`; see the module docs. On error the run is marked failed.
pub fn train(config: &RunConfig, options: &TrainOptions, device: &Device) -> Result<RunMetrics> {
    train_with_data(config, options, device, None)
}

/// Record a run's start in the experiment index of its parent directory; a failure is a
/// warning (the run directory, not the index, is the record that matters).
pub(crate) fn index_start(
    config: &RunConfig,
    run_dir: &Path,
    kind: &str,
) -> Option<crate::index::RunIndex> {
    let parent = run_dir
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let result = crate::index::RunIndex::open(parent).and_then(|index| {
        index.start(&config.run.name, run_dir, kind, &config.to_toml()?)?;
        Ok(index)
    });
    match result {
        Ok(index) => Some(index),
        Err(e) => {
            tracing::warn!("run not recorded in the experiment index: {e}");
            None
        }
    }
}

pub(crate) fn index_finish(
    index: Option<crate::index::RunIndex>,
    run_dir: &Path,
    outcome: std::result::Result<crate::index::Outcome, (&str, String)>,
) {
    let Some(index) = index else { return };
    let result = match &outcome {
        Ok(o) => index.finish(run_dir, "complete", None, o),
        Err((status, e)) => index.finish(run_dir, status, Some(e), &Default::default()),
    };
    if let Err(e) = result {
        tracing::warn!("run end not recorded in the experiment index: {e}");
    }
}

fn outcome_of(m: &RunMetrics, run_dir: &Path) -> crate::index::Outcome {
    crate::index::Outcome {
        train_time_s: Some(m.train_time_s),
        steps: Some(m.steps as i64),
        validation_accuracy: m.validation.as_ref().map(|v| v.accuracy),
        validation_macro_f1: m.validation.as_ref().map(|v| v.macro_f1),
        test_accuracy: m.test.as_ref().map(|v| v.accuracy),
        test_macro_f1: m.test.as_ref().map(|v| v.macro_f1),
        metrics: std::fs::read_to_string(run_dir.join("metrics.json")).ok(),
    }
}

/// Test hook, read only by the run driver: when this environment variable is set, the run
/// panics right after it is marked `running`, so tests can check that a panic inside a run
/// marks it `failed` (status.json and the experiment index). No user input triggers a panic
/// there any more, hence the hook; never set it outside tests.
pub const PANIC_TEST_HOOK: &str = "TUNEKIT_TEST_PANIC_IN_RUN";

/// The device a run lives on: the first of `train.devices` when the config lists devices
/// (it holds the model and optimiser, evaluates and checkpoints; data-parallel shards go to the
/// others), else `device` (`--device`).
///
/// # Errors
/// [`Error::Config`] for a device the config names that this build cannot run.
pub fn main_device(config: &RunConfig, device: &Device) -> Result<Device> {
    match config.train.devices.first() {
        Some(first) => crate::device::device(first.parse()?),
        None => Ok(device.clone()),
    }
}

/// `body`, with a panic inside it turned into an [`Error::Engine`] carrying the panic's
/// message, so that the run driver marks the run `failed` (status.json and the index row)
/// instead of leaving it `running`. The panic itself is still printed by the panic hook (with
/// its location), and the error exits with code 1: a panic is a bug, not bad input.
pub(crate) fn catch_panic<T>(body: impl FnOnce() -> Result<T>) -> Result<T> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(body)).unwrap_or_else(|payload| {
        Err(Error::Engine(format!(
            "internal error: panicked: {}",
            panic_message(payload.as_ref())
        )))
    })
}

/// The message of a caught panic's payload (`"(no message)"` when it carries none).
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".into())
}

/// [`train`] on already prepared data (`None`: run the data pipeline of `config`).
pub(crate) fn train_with_data(
    config: &RunConfig,
    options: &TrainOptions,
    device: &Device,
    data: Option<PreparedData>,
) -> Result<RunMetrics> {
    let main = main_device(config, device)?;
    let device = &main;
    let run_dir = run_dir_for(config, options);
    let status_path = run_dir.join("status.json");
    if !options.resume && status_path.exists() {
        let previous: RunStatus = read_json(&status_path)?;
        if previous.status != "failed" {
            return Err(Error::Config(format!(
                "run directory {} already holds a {} run; pass --resume to continue it or choose another --run-dir / run.name",
                run_dir.display(),
                previous.status
            )));
        }
        // A failed run is replaced: clear its outputs so nothing of it mixes into the new one.
        for stale in [CHECKPOINTS, "best", "model"] {
            let p = run_dir.join(stale);
            if p.exists() {
                std::fs::remove_dir_all(&p).map_err(|e| Error::io(&p, e))?;
            }
        }
        for stale in [
            "metrics.jsonl",
            "metrics.json",
            "data_report.json",
            "data_report.txt",
        ] {
            let _ = std::fs::remove_file(run_dir.join(stale));
        }
    }
    std::fs::create_dir_all(&run_dir).map_err(|e| Error::io(&run_dir, e))?;
    // --resume: same config (differing keys named) and unchanged inputs (fingerprints);
    // a start from the beginning records the fingerprints. Shared by every training loop.
    let has_checkpoint = run_dir.join(CHECKPOINTS).join(LATEST).exists();
    crate::resume::check_or_record(&run_dir, config, options.resume, has_checkpoint)?;
    set_status(&run_dir, "running", None)?;
    let kind = if config.distill.is_some() {
        "distill"
    } else {
        "train"
    };
    let index = index_start(config, &run_dir, kind);
    let result = catch_panic(|| {
        if std::env::var_os(PANIC_TEST_HOOK).is_some() {
            panic!("{PANIC_TEST_HOOK} is set: a panic inside the run (test hook)");
        }
        train_in(config, options, &run_dir, device, data)
    });
    match &result {
        Ok(m) => {
            set_status(&run_dir, "complete", None)?;
            index_finish(index, &run_dir, Ok(outcome_of(m, &run_dir)));
        }
        Err(e @ Error::Pruned { .. }) => {
            set_status(&run_dir, "pruned", Some(e.to_string()))?;
            index_finish(index, &run_dir, Err(("pruned", e.to_string())));
        }
        Err(e) => {
            let _ = set_status(&run_dir, "failed", Some(e.to_string()));
            index_finish(index, &run_dir, Err(("failed", e.to_string())));
        }
    }
    result
}

/// The task's objective on the one loop: which task a run trains is decided here, once.
fn train_in(
    config: &RunConfig,
    options: &TrainOptions,
    run_dir: &Path,
    device: &Device,
    data: Option<PreparedData>,
) -> Result<RunMetrics> {
    write_atomic(&run_dir.join("config.toml"), config.to_toml()?.as_bytes())?;
    if config.task.kind == crate::task::TaskKind::CausalLm {
        let objective = crate::task::causal_lm::CausalLm::prepare(config, run_dir, device)?;
        fit::fit(config, options, run_dir, device, objective)
    } else if config.task.kind.is_classification() {
        let objective =
            crate::task::classification::Classification::prepare(config, data, run_dir)?;
        fit::fit(config, options, run_dir, device, objective)
    } else {
        let objective = crate::task::run::TaskObjective::prepare(config, run_dir)?;
        fit::fit(config, options, run_dir, device, objective)
    }
}

/// A progress bar of `total` optimiser steps at `pos` (hidden unless `show`).
pub(crate) fn progress_bar(show: bool, total: u64, pos: u64) -> indicatif::ProgressBar {
    if !show {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(total);
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{spinner} [{elapsed_precise}<{eta_precise}] {bar:30} {pos}/{len} steps {msg}",
    ) {
        bar.set_style(style);
    }
    bar.set_position(pos);
    bar
}
