//! Prune, then recover: fine-tune a structurally pruned model for a few epochs with the run
//! config it came from (`tunekit prune --recover-epochs N`). A workflow of the library, not
//! of the CLI, so every front end gets the same rules.

use std::path::{Path, PathBuf};

use burn::tensor::Device;

use crate::config::RunConfig;
use crate::error::{Error, Result};
use crate::train::{RunMetrics, TrainOptions};

/// What a recovery run needs besides the pruned model.
#[derive(Debug, Clone)]
pub struct Recovery {
    /// Epochs of fine-tuning (at least 1).
    pub epochs: usize,
    /// The run config to fine-tune with; `None`: `config.toml` beside the pruned model's
    /// source directory (a run's `model/` sits in its run directory).
    pub config: Option<PathBuf>,
    /// Show a progress bar.
    pub progress: bool,
}

/// Refuse a recovery that would undo the pruning: unstructured sparsity (zeroed weights)
/// would grow back under fine-tuning; only structured pruning (heads, FFN neurons) is
/// recovered. Call before pruning, so nothing is written for a refused request.
///
/// # Errors
/// [`Error::Config`] when `sparsity` is set.
pub fn check(sparsity: Option<f64>) -> Result<()> {
    if sparsity.is_some() {
        return Err(Error::Config(
            "--recover-epochs with --sparsity would let the zeroed weights grow back; recover structured pruning only".into(),
        ));
    }
    Ok(())
}

/// Fine-tune the pruned model in `pruned` (a model directory) for `recovery.epochs` with the
/// source run's config (`model.path` and `train.epochs` overridden); the run goes to
/// `pruned/recover` and its model to `pruned/recover/model`.
///
/// # Errors
/// The config's load errors (naming the file), and the training run's.
pub fn recover(
    source_model: &str,
    pruned: &Path,
    recovery: &Recovery,
    device: &Device,
) -> Result<RunMetrics> {
    let config_path = match &recovery.config {
        Some(c) => c.clone(),
        None => Path::new(source_model)
            .parent()
            .map(|p| p.join("config.toml"))
            .unwrap_or_default(),
    };
    let out = pruned.to_string_lossy().into_owned();
    let overrides = vec![
        format!("model.path={}", toml::Value::String(out)),
        format!("train.epochs={}", recovery.epochs),
    ];
    let config = RunConfig::load(&config_path, &overrides)?;
    let options = TrainOptions {
        run_dir: Some(pruned.join("recover")),
        resume: false,
        progress: recovery.progress,
        on_eval: None,
    };
    crate::train::train(&config, &options, device)
}
