//! The fine-tuning loop: data → tokens → batches → forward/backward → optimiser step, with
//! evaluation, best-checkpoint selection, early stopping and resumable checkpoints.
//!
//! Determinism: everything random is a pure function of the run seed and the position in
//! training — the epoch's data order is seeded by `(seed, epoch)`, dropout is reseeded before
//! every micro-batch by `(seed, step, micro-batch)`, and the learning rate is a function of
//! the step. A checkpoint therefore needs only weights, optimiser moments and the position,
//! and a resumed run retraces an uninterrupted one exactly.

use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::module::{Module, ModuleVisitor, Param, ParamGroup, ParamId};
use burn::optim::{
    AdamConfig, GradientsAccumulator, GradientsParams, ModuleOptimizer, RmsPropConfig, SgdConfig,
    decay::WeightDecayConfig, momentum::MomentumConfig,
};
use burn::tensor::activation::log_softmax;
use burn::tensor::{Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::batch::{collate, epoch_batches, epoch_seed, label_tensor};
use crate::config::{OptimizerKind, RunConfig};
use crate::data::{Example, label_set};
use crate::error::{Error, Result};
use crate::fsutil::{read_json, write_atomic, write_json};
use crate::infer::{ModelMeta, evaluate_tokens, label_ids};
use crate::metrics::ClassificationMetrics;
use crate::model::weights::{
    ClassifierSpec, DropoutOverride, LoadReport, load_classifier, param_id, save_classifier,
};
use crate::model::{ModelDir, SequenceClassifier, TUNEKIT_META};
use crate::optim::FusedAdamW;
use crate::prep::{DataReport, PreparedData};
use crate::schedule::{Schedule, warmup_steps};
use crate::tokenize::{TextTokenizer, Tokens};

/// One labelled split, tokenised.
pub struct Split {
    /// `train`, `validation` or `test`.
    pub name: String,
    /// The file it came from.
    pub file: PathBuf,
    /// Tokens per example.
    pub tokens: Vec<Tokens>,
    /// Class id per example.
    pub labels: Vec<usize>,
    /// The examples (cleaned), for augmentation.
    pub examples: Vec<Example>,
}

impl Split {
    /// Examples truncated by `max_length`.
    pub fn truncated(&self) -> usize {
        self.tokens.iter().filter(|t| t.truncated).count()
    }
}

/// One evaluation during training (a line of `metrics.jsonl`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct EvalRecord {
    /// Optimiser steps done.
    pub step: usize,
    /// Epoch (fractional: steps done / steps per epoch).
    pub epoch: f64,
    /// Mean training loss since the previous evaluation.
    pub train_loss: f64,
    /// Learning rate of the last step.
    pub learning_rate: f64,
    /// Validation metrics.
    pub validation: ClassificationMetrics,
    /// Seconds of training so far.
    pub elapsed_s: f64,
}

/// Position and bookkeeping saved with every checkpoint; `R` is one evaluation's record
/// ([`EvalRecord`] for classification, [`crate::task::run::TaskEvalRecord`] for other tasks).
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
    model: &SequenceClassifier,
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

/// The model a run trains: weights from the pretrained model (or the checkpoint being
/// resumed), LoRA adapters when configured, the strategy's frozen tensors frozen. Returns it
/// with its load report and the frozen parameter count.
pub(crate) fn trainable_model(
    config: &RunConfig,
    model_dir: &ModelDir,
    spec: &ClassifierSpec,
    resume_from: Option<&Path>,
    ad: &Device,
) -> Result<(SequenceClassifier, LoadReport, usize)> {
    let lora = config.strategy.lora.as_ref();
    // A LoRA run resumes from the base weights plus its saved adapters and head.
    let weights = match (resume_from, lora) {
        (Some(dir), None) => dir.join("model.safetensors"),
        _ => model_dir.weights_path(),
    };
    let (mut model, report) = load_classifier(&weights, &model_dir.config, spec, ad)?;
    model.bert.precision = crate::model::bf16::for_device(config.train.precision, ad)?;
    if let Some(opts) = lora {
        // A's initial values come from the device RNG: seeded, so runs repeat.
        ad.seed(spec.seed);
        model = crate::model::lora::apply(model, opts, &model_dir.config);
        if let Some(dir) = resume_from {
            model = crate::model::lora::load_adapter(
                model,
                &dir.join(crate::model::lora::ADAPTER_WEIGHTS),
                ad,
            )?;
        }
    }
    let (frozen_ids, frozen_size) = frozen_params(config, &model_dir.config, None)?;
    if !frozen_ids.is_empty() {
        // burn's freezing: frozen tensors are detached, get no gradient, and so are never
        // touched by the optimiser (nor by weight decay).
        model = model.freeze_group(ParamGroup::from_ids(frozen_ids));
    }
    Ok((model, report, frozen_size))
}

/// Gradual unfreezing: the stage for the current position (a function of the position alone,
/// so a resumed run freezes exactly the same tensors) and, when it changed, the model with
/// that stage's tensors frozen and the new trainable count.
pub(crate) fn unfreeze_to_stage(
    config: &RunConfig,
    model_config: &crate::model::BertConfig,
    model: SequenceClassifier,
    position: (usize, usize),
    current: &mut Option<usize>,
    all_params: usize,
) -> Result<(SequenceClassifier, Option<usize>)> {
    let (step, epoch) = position;
    let every = config.strategy.unfreeze_every_steps;
    let stage = step.checked_div(every).unwrap_or(epoch);
    if *current == Some(stage) {
        return Ok((model, None));
    }
    let (frozen, size) = frozen_params(config, model_config, Some(stage))?;
    let encoder: Vec<ParamId> = crate::model::weights::encoder_shapes(model_config)
        .into_iter()
        .map(|(n, _)| param_id(&n))
        .collect();
    *current = Some(stage);
    tracing::info!(
        "gradual unfreezing, stage {}: {} trainable parameters",
        stage + 1,
        all_params - size
    );
    Ok((
        model
            .unfreeze_group(ParamGroup::from_ids(encoder))
            .freeze_group(ParamGroup::from_ids(frozen)),
        Some(all_params - size),
    ))
}

/// One optimiser step on accumulated gradients: refuses a non-finite loss, adds the L1
/// penalty, clips the global norm, steps at the schedule's rate; returns the model and rate.
#[allow(clippy::too_many_arguments)]
pub(crate) fn optimizer_step(
    config: &RunConfig,
    model: SequenceClassifier,
    optim: &mut ModuleOptimizer,
    lr_groups: &mut burn::lr_scheduler::module_lr_scheduler::ModuleLrScheduler,
    schedule: &Schedule,
    accumulator: GradientsAccumulator<SequenceClassifier>,
    loss: f64,
    position: (usize, usize),
) -> Result<(SequenceClassifier, f64)> {
    let (step, epoch) = position;
    if !loss.is_finite() {
        return Err(Error::Engine(format!(
            "training loss became {loss} at step {} (epoch {}); lower train.learning_rate or check the data",
            step + 1,
            epoch + 1
        )));
    }
    let mut accumulator = accumulator;
    let mut grads = accumulator.grads();
    add_l1_penalty(&model, &mut grads, config.train.l1);
    clip_global_norm(&model, &mut grads, config.train.max_grad_norm)?;
    let lr = schedule.lr(step);
    Ok((optim.step(lr_groups.step(), model, grads), lr))
}

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

/// Tokenise a prepared split and map its labels (the training split defines the label set).
fn load_split(
    split: crate::prep::PreparedSplit,
    tokenizer: &TextTokenizer,
    labels: Option<&[String]>,
) -> Result<(Split, Vec<String>)> {
    let examples = split.examples;
    let file = split.file;
    let names = match labels {
        Some(l) => l.to_vec(),
        None => label_set(&examples),
    };
    if names.len() < 2 {
        return Err(Error::Labels(format!(
            "{}: classification needs at least 2 distinct labels, found {:?}",
            file.display(),
            names
        )));
    }
    let ids = label_ids(&examples, &names, &file)?;
    let tokens = tokenize_examples(tokenizer, &examples)?;
    Ok((
        Split {
            name: split.name,
            file,
            tokens,
            labels: ids,
            examples,
        },
        names,
    ))
}

fn tokenize_examples(tokenizer: &TextTokenizer, examples: &[Example]) -> Result<Vec<Tokens>> {
    let texts: Vec<&str> = examples.iter().map(|e| e.text.as_str()).collect();
    let pairs: Option<Vec<&str>> = examples.iter().map(|e| e.text_pair.as_deref()).collect();
    tokenizer.encode_batch(&texts, pairs.as_deref())
}

/// Collects parameter ids and names: biases and LayerNorm parameters get no weight decay
/// (as HF Trainer does).
struct NoDecayIds {
    ids: Vec<ParamId>,
    all: usize,
}

impl ModuleVisitor for NoDecayIds {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        self.all += param.shape().num_elements();
        if D == 1 {
            self.ids.push(param.id);
        }
    }
}

/// Build the configured optimiser from burn's, with a no-decay group for 1-D parameters
/// (biases and LayerNorm weights).
pub fn build_optimizer(config: &RunConfig, model: &SequenceClassifier) -> (ModuleOptimizer, usize) {
    let t = &config.train;
    let mut visitor = NoDecayIds {
        ids: Vec::new(),
        all: 0,
    };
    model.visit(&mut visitor);
    let no_decay = ParamGroup::from_ids(visitor.ids);
    let (eps, b1, b2) = (t.epsilon as f32, t.beta1 as f32, t.beta2 as f32);
    let wd = t.weight_decay as f32;
    let optim =
        match t.optimizer {
            // burn's AdamW arithmetic in one fused pass per parameter (`crate::optim`).
            OptimizerKind::Adamw => ModuleOptimizer::from(FusedAdamW::new(b1, b2, eps, wd))
                .with_group(no_decay, FusedAdamW::new(b1, b2, eps, 0.0), None),
            OptimizerKind::Adam => {
                let make = |wd: f32| {
                    AdamConfig::new()
                        .with_beta_1(b1)
                        .with_beta_2(b2)
                        .with_epsilon(eps)
                        .with_weight_decay((wd > 0.0).then(|| WeightDecayConfig::new(wd)))
                };
                make(wd)
                    .init()
                    .with_group(no_decay, make(0.0).build(), None)
            }
            OptimizerKind::Sgd => {
                let momentum = (t.momentum > 0.0).then(|| {
                    MomentumConfig::new()
                        .with_momentum(t.momentum)
                        .with_dampening(0.0)
                        .with_nesterov(t.nesterov)
                });
                let make = |wd: f32| {
                    SgdConfig::new()
                        .with_momentum(momentum.clone())
                        .with_weight_decay((wd > 0.0).then(|| WeightDecayConfig::new(wd)))
                };
                make(wd)
                    .init()
                    .with_group(no_decay, make(0.0).build(), None)
            }
            OptimizerKind::Rmsprop => {
                let make = |wd: f32| {
                    RmsPropConfig::new()
                        .with_alpha(t.rmsprop_alpha as f32)
                        .with_momentum(t.momentum as f32)
                        .with_epsilon(eps)
                        .with_weight_decay((wd > 0.0).then(|| WeightDecayConfig::new(wd)))
                };
                make(wd)
                    .init()
                    .with_group(no_decay, make(0.0).build(), None)
            }
        };
    (optim, visitor.all)
}

/// Elements of the parameters that require a gradient.
pub(crate) fn trainable_params(model: &SequenceClassifier) -> usize {
    struct Count(usize);
    impl ModuleVisitor for Count {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            if param.is_require_grad() {
                self.0 += param.shape().num_elements();
            }
        }
    }
    let mut c = Count(0);
    model.visit(&mut c);
    c.0
}

/// Sorted parameter ids of the model. Saved with every checkpoint and compared on resume:
/// burn keys optimiser state by `ParamId`, so a model rebuilt with different ids would
/// silently restart its moments and the resumed run would diverge.
pub(crate) fn model_param_ids(model: &SequenceClassifier) -> Vec<u64> {
    struct Ids(Vec<u64>);
    impl ModuleVisitor for Ids {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            self.0.push(param.id.val());
        }
    }
    let mut ids = Ids(Vec::new());
    model.visit(&mut ids);
    ids.0.sort_unstable();
    ids.0
}

/// Squared L2 norms of every gradient, summed on the device.
struct GradNorm<'a> {
    grads: &'a GradientsParams,
    total: Option<Tensor<1>>,
}

impl ModuleVisitor for GradNorm<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if let Some(g) = self.grads.get::<D>(param.id) {
            let sq = g.square().sum();
            self.total = Some(match self.total.take() {
                Some(t) => t + sq,
                None => sq,
            });
        }
    }
}

struct GradScale<'a> {
    grads: &'a mut GradientsParams,
    factor: f64,
}

impl ModuleVisitor for GradScale<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if let Some(g) = self.grads.remove::<D>(param.id) {
            self.grads
                .register::<D>(param.id, g.mul_scalar(self.factor));
        }
    }
}

/// Adds the L1 penalty's (sub)gradient `coef · sign(w)` to the gradient of every trainable
/// matrix (the parameters that get weight decay; biases and LayerNorm are exempt, as there).
/// Equal to adding `coef · Σ|w|` to the loss, without building that sum into the graph.
struct L1Grad<'a> {
    grads: &'a mut GradientsParams,
    coef: f64,
}

impl ModuleVisitor for L1Grad<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if D < 2 {
            return;
        }
        if let Some(g) = self.grads.remove::<D>(param.id) {
            let sign = param.val().inner().sign().mul_scalar(self.coef);
            self.grads.register::<D>(param.id, g + sign);
        }
    }
}

/// Add an L1 penalty of `coef` to the gradients (see [`L1Grad`]); no-op for 0.
pub fn add_l1_penalty(model: &SequenceClassifier, grads: &mut GradientsParams, coef: f64) {
    if coef > 0.0 {
        model.visit(&mut L1Grad { grads, coef });
    }
}

/// Clip the *global* gradient norm to `max_norm`, as `torch.nn.utils.clip_grad_norm_` (and so
/// HF Trainer) does. burn's `GradientClipping::Norm` clips each tensor by its own norm, which
/// is a different update, so the global version is written here. Returns the norm before
/// clipping.
pub fn clip_global_norm(
    model: &SequenceClassifier,
    grads: &mut GradientsParams,
    max_norm: f64,
) -> Result<f64> {
    let mut norm = GradNorm { grads, total: None };
    model.visit(&mut norm);
    let Some(total) = norm.total else {
        return Ok(0.0);
    };
    let total = crate::model::weights::to_vec(total.sqrt())?;
    let total = f64::from(total.first().copied().unwrap_or(0.0));
    if max_norm > 0.0 {
        let coef = max_norm / (total + 1e-6);
        if coef < 1.0 {
            model.visit(&mut GradScale {
                grads,
                factor: coef,
            });
        }
    }
    Ok(total)
}

/// Summed cross-entropy of a batch (a `[1]` tensor): summed, not averaged, so that
/// accumulated micro-batches divide by the whole accumulation group's size and reproduce the
/// large-batch gradient exactly.
pub fn cross_entropy_sum(
    logits: Tensor<2>,
    labels: burn::tensor::Tensor<1, burn::tensor::Int>,
) -> Tensor<1> {
    cross_entropy_weighted_sum(logits, labels, None, 0.0)
}

/// Σᵢ wᵢ · ((1−ε)·(−log pᵢ[yᵢ]) + ε·mean_c(−log pᵢ[c])): cross-entropy with label smoothing ε
/// (PyTorch's formulation) and per-example weights `wᵢ` (the class weight of yᵢ). Callers
/// divide by Σ wᵢ over the accumulation group, as PyTorch's weighted mean does.
pub fn cross_entropy_weighted_sum(
    logits: Tensor<2>,
    labels: burn::tensor::Tensor<1, burn::tensor::Int>,
    weights: Option<Tensor<1>>,
    smoothing: f64,
) -> Tensor<1> {
    classification_loss_sum(logits, labels, weights, smoothing, None)
}

/// [`cross_entropy_weighted_sum`], or with `focal_gamma = Some(γ)` the focal loss
/// Σᵢ wᵢ · (1 − pᵢ[yᵢ])^γ · (−log pᵢ[yᵢ]) (Lin et al. 2017; class weights play the role of α).
/// γ = 0 is cross-entropy. Label smoothing does not combine with focal loss (config rejects it).
pub fn classification_loss_sum(
    logits: Tensor<2>,
    labels: burn::tensor::Tensor<1, burn::tensor::Int>,
    weights: Option<Tensor<1>>,
    smoothing: f64,
    focal_gamma: Option<f64>,
) -> Tensor<1> {
    let [n, _] = logits.dims();
    let logp = log_softmax(logits, 1);
    let logp_y = logp.clone().gather(1, labels.reshape([n, 1]));
    let mut per = logp_y.clone().neg();
    if let Some(gamma) = focal_gamma {
        // (1 − p)^γ with p = exp(log p); the modulating factor is differentiated through too,
        // as in the reference implementations (torchvision.ops.sigmoid_focal_loss et al.).
        let modulating = logp_y
            .exp()
            .neg()
            .add_scalar(1.0)
            .clamp_min(0.0)
            .powf_scalar(gamma);
        per = per * modulating;
    }
    if smoothing > 0.0 {
        let uniform = logp.mean_dim(1).neg();
        per = per.mul_scalar(1.0 - smoothing) + uniform.mul_scalar(smoothing);
    }
    if let Some(w) = weights {
        per = per * w.reshape([n, 1]);
    }
    per.sum()
}

/// Σᵢ T² · KL(softmax(tᵢ/T) ‖ softmax(sᵢ/T)): Hinton et al.'s soft-target term, scaled by T²
/// so its gradients keep their size as T changes (as in DistilBERT and the HF examples).
pub fn distillation_kl_sum(student: Tensor<2>, teacher: Tensor<2>, temperature: f64) -> Tensor<1> {
    let t = temperature;
    let log_q = log_softmax(student.div_scalar(t), 1);
    let log_p = log_softmax(teacher.div_scalar(t), 1);
    let p = log_p.clone().exp();
    (p * (log_p - log_q)).sum().mul_scalar(t * t)
}

/// The teacher's logits for every training example, computed once (teacher in evaluation
/// mode, tokenised and preprocessed its own way) and kept on the training device.
fn teacher_logits(
    p: &Prepared,
    config: &RunConfig,
    d: &crate::config::DistillSection,
    device: &Device,
    ad: &Device,
) -> Result<Tensor<2>> {
    let started = Instant::now();
    // The same refusals as `data check` (labels, position table), before the weights load.
    check_teacher(config, &p.labels)?;
    let teacher =
        crate::infer::Classifier::load(&d.teacher, Some(config.model.max_length), device)?;
    let tokens = teacher.tokenize(&p.train.examples)?;
    crate::infer::log_truncated(
        &tokens,
        teacher.tokenizer.max_length(),
        "training examples (for the teacher)",
    );
    let (values, classes) = crate::infer::logits(
        &teacher.model,
        &tokens,
        config.train.eval_batch_size,
        teacher.tokenizer.pad_id(),
        device,
    )?;
    let n = tokens.len();
    tracing::info!(
        "distillation: teacher {} logits for {n} examples computed once in {:.1} s (T = {}, alpha = {})",
        d.teacher,
        started.elapsed().as_secs_f64(),
        d.temperature,
        d.alpha
    );
    Ok(Tensor::<2>::from_data(
        burn::tensor::TensorData::new(values, [n, classes]),
        ad,
    ))
}

/// `n / (classes × n_c)` per class (scikit-learn's "balanced"); 1.0 for classes absent from
/// the training data (they never occur as a target there).
pub fn balanced_class_weights(labels: &[usize], classes: usize) -> Vec<f64> {
    let mut counts = vec![0usize; classes];
    for &l in labels {
        counts[l] += 1;
    }
    counts
        .iter()
        .map(|&c| {
            if c == 0 {
                1.0
            } else {
                labels.len() as f64 / (classes * c) as f64
            }
        })
        .collect()
}

/// Depth of an encoder tensor (HF name without `bert.`) from the top of the network: the head
/// and pooler are 0, the top layer 1, …, the embeddings `layers + 1`.
fn depth_of(name: &str, layers: usize) -> usize {
    if name.starts_with("embeddings.") {
        layers + 1
    } else if let Some(rest) = name.strip_prefix("encoder.layer.") {
        let i: usize = rest
            .split('.')
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        layers - i
    } else {
        0
    }
}

/// Parameter ids and sizes of the encoder tensors the strategy freezes.
/// With gradual unfreezing, pass the 0-based unfreezing `stage` (epoch, or step / N): tensors
/// deeper than it stay frozen.
fn frozen_params(
    config: &RunConfig,
    model_config: &crate::model::BertConfig,
    stage: Option<usize>,
) -> Result<(Vec<ParamId>, usize)> {
    let st = &config.strategy;
    let layers = model_config.num_hidden_layers;
    if st.freeze_layers > layers {
        return Err(Error::Config(format!(
            "strategy.freeze_layers = {} but the model has {layers} layers",
            st.freeze_layers
        )));
    }
    let mut ids = Vec::new();
    let mut size = 0;
    for (name, shape) in crate::model::weights::encoder_shapes(model_config) {
        let depth = depth_of(&name, layers);
        let frozen = if name.starts_with("pooler.") {
            false
        } else if st.freeze_encoder {
            true
        } else if name.starts_with("embeddings.") {
            st.freeze_embeddings
        } else {
            // Layer i has depth layers - i; the first N layers are i < N.
            layers - depth < st.freeze_layers
        };
        let not_yet =
            st.gradual_unfreeze && stage.is_some_and(|e| depth > e) && !name.starts_with("pooler.");
        if frozen || not_yet {
            ids.push(param_id(&name));
            size += shape.iter().product::<usize>();
        }
    }
    Ok((ids, size))
}

/// A [`Schedule`] scaled by a constant factor, as a burn `LrScheduler`, so that burn's
/// `ModuleLrScheduler` can give each layer group its own rate (layer-wise LR decay). Its state
/// is the step, which [`TrainState`] already holds, so its record is empty.
#[derive(Clone)]
struct ScaledSchedule {
    schedule: Schedule,
    factor: f64,
    step: usize,
}

impl burn::lr_scheduler::LrScheduler for ScaledSchedule {
    fn step(&mut self) -> f64 {
        let lr = self.schedule.lr(self.step) * self.factor;
        self.step += 1;
        lr
    }

    fn to_record(&self) -> burn::lr_scheduler::LrSchedulerRecord {
        burn::lr_scheduler::LrSchedulerRecord::new()
    }

    fn load_record(&mut self, _record: burn::lr_scheduler::LrSchedulerRecord) {}
}

/// Per-parameter learning rates from `step` on: the schedule for everything, scaled by
/// decay^depth per encoder layer group when `layer_lr_decay` < 1.
pub(crate) fn layer_schedules(
    config: &RunConfig,
    model_config: &crate::model::BertConfig,
    schedule: Schedule,
    step: usize,
) -> burn::lr_scheduler::module_lr_scheduler::ModuleLrScheduler {
    use burn::lr_scheduler::module_lr_scheduler::ModuleLrScheduler;
    let base = ScaledSchedule {
        schedule,
        factor: 1.0,
        step,
    };
    let mut sched = ModuleLrScheduler::new(base);
    let decay = config.strategy.layer_lr_decay;
    if decay < 1.0 {
        let layers = model_config.num_hidden_layers;
        let mut by_depth: Vec<Vec<ParamId>> = vec![Vec::new(); layers + 2];
        for (name, _) in crate::model::weights::encoder_shapes(model_config) {
            by_depth[depth_of(&name, layers)].push(param_id(&name));
        }
        for (depth, ids) in by_depth.into_iter().enumerate().skip(1) {
            if ids.is_empty() {
                continue;
            }
            let scaled = ScaledSchedule {
                schedule,
                factor: decay.powi(depth as i32),
                step,
            };
            sched = sched.with_group(ParamGroup::from_ids(ids), scaled);
        }
    }
    sched
}

pub(crate) fn step_seed(seed: u64, step: usize, micro: usize) -> u64 {
    let mut h = seed ^ 0x9e37_79b9_7f4a_7c15;
    for v in [step as u64, micro as u64] {
        h = (h ^ v).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        h ^= h >> 31;
    }
    h
}

const CHECKPOINTS: &str = "checkpoints";
const LATEST: &str = "latest.json";

#[derive(Debug, Serialize, Deserialize)]
struct LatestPointer {
    step: usize,
    dir: String,
}

fn checkpoint_dir(run_dir: &Path, step: usize) -> PathBuf {
    run_dir.join(CHECKPOINTS).join(format!("step-{step:08}"))
}

/// Write a checkpoint (weights, optimiser state, position), then atomically point
/// `checkpoints/latest.json` at it and delete older checkpoints. A crash at any moment leaves
/// `latest.json` naming a complete checkpoint.
/// Save the trained weights into `dir`: the whole model (`model.safetensors`), or for LoRA
/// only the adapters and head (`adapter_model.safetensors`).
pub(crate) fn save_weights(model: &SequenceClassifier, dir: &Path, lora: bool) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    if lora {
        crate::model::lora::save_adapter(model, &dir.join(crate::model::lora::ADAPTER_WEIGHTS))
    } else {
        save_classifier(model, &dir.join("model.safetensors"))
    }
}

pub(crate) fn save_checkpoint<R: Serialize>(
    run_dir: &Path,
    model: &SequenceClassifier,
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

/// Everything prepared before the loop starts.
struct Prepared {
    model_dir: ModelDir,
    labels: Vec<String>,
    train: Split,
    validation: Option<Split>,
    test: Option<Split>,
    tokenizer: TextTokenizer,
    report: DataReport,
}

/// Load the model directory and tokenizer, run the data pipeline (unless `data` is given,
/// as cross-validation does for its folds) and tokenise the splits.
fn prepare(config: &RunConfig, data: Option<PreparedData>) -> Result<Prepared> {
    let mut model_dir = ModelDir::open(&config.model.path)?;
    let max_len = config.model.max_length;
    if let Some(k) = config.distill.as_ref().and_then(|d| d.student_layers) {
        let layers = model_dir.config.num_hidden_layers;
        if k > layers {
            return Err(Error::Config(format!(
                "distill.student_layers = {k} but {} has {layers} layers",
                model_dir.dir.display()
            )));
        }
        // The student: the first k layers (and the embeddings, pooler and head) of model.path.
        model_dir.config.num_hidden_layers = k;
    }
    let tokenizer =
        TextTokenizer::for_model(&model_dir.tokenizer_path(), max_len, &model_dir.config)?;
    let data = match data {
        Some(d) => d,
        None => crate::prep::prepare(config, Some(&tokenizer))?,
    };
    let report = data.report;
    let mut train = None;
    let (mut validation, mut test) = (None, None);
    let mut labels = Vec::new();
    for split in data.splits {
        match split.name.as_str() {
            "train" => {
                let (s, l) = load_split(split, &tokenizer, None)?;
                labels = l;
                train = Some(s);
            }
            "validation" => validation = Some(load_split(split, &tokenizer, Some(&labels))?.0),
            _ => test = Some(load_split(split, &tokenizer, Some(&labels))?.0),
        }
    }
    let train = train.ok_or_else(|| Error::Config("no training split".into()))?;
    Ok(Prepared {
        model_dir,
        labels,
        train,
        validation,
        test,
        tokenizer,
        report,
    })
}

/// The training split's tokens for one epoch with augmentation applied, and how many
/// examples each operation changed.
fn augment_epoch(
    p: &Prepared,
    opts: &crate::prep::augment::AugmentOptions,
    seed: u64,
    epoch: usize,
) -> Result<(Vec<Tokens>, std::collections::BTreeMap<String, usize>)> {
    let mut tokens = p.train.tokens.clone();
    let mut changed: Vec<(usize, String)> = Vec::new();
    let mut counts = std::collections::BTreeMap::new();
    for (i, e) in p.train.examples.iter().enumerate() {
        if let Some((op, text)) =
            crate::prep::augment::augment_example(opts, &e.text, seed, epoch, i)
        {
            *counts.entry(format!("{op:?}").to_lowercase()).or_insert(0) += 1;
            changed.push((i, text));
        }
    }
    let texts: Vec<&str> = changed.iter().map(|(_, t)| t.as_str()).collect();
    let pairs: Option<Vec<&str>> = changed
        .iter()
        .map(|(i, _)| p.train.examples[*i].text_pair.as_deref())
        .collect();
    let encoded = p.tokenizer.encode_batch(&texts, pairs.as_deref())?;
    for ((i, _), tok) in changed.iter().zip(encoded) {
        tokens[*i] = tok;
    }
    Ok((tokens, counts))
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

/// Mean and sample standard deviation of each metric over the folds.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct MeanStd {
    /// Metric name → mean.
    pub mean: std::collections::BTreeMap<String, f64>,
    /// Metric name → standard deviation (n − 1).
    pub std: std::collections::BTreeMap<String, f64>,
}

/// `metrics.json` of a cross-validation run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CvMetrics {
    /// Number of folds.
    pub folds: usize,
    /// Each fold's run metrics (its run directory is `fold-N/`).
    pub per_fold: Vec<RunMetrics>,
    /// Over the folds' validation metrics (each fold validates on its held-out part).
    pub validation: MeanStd,
    /// Over the folds' test metrics, when there is a test split.
    pub test: Option<MeanStd>,
}

fn mean_std(all: &[&ClassificationMetrics]) -> MeanStd {
    let mut out = MeanStd {
        mean: Default::default(),
        std: Default::default(),
    };
    for name in ["accuracy", "macro_f1", "micro_f1", "weighted_f1", "loss"] {
        let values: Vec<f64> = all.iter().filter_map(|m| m.get(name)).collect();
        if values.is_empty() {
            continue;
        }
        let n = values.len() as f64;
        let mean = values.iter().sum::<f64>() / n;
        let var = if values.len() > 1 {
            values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0)
        } else {
            0.0
        };
        out.mean.insert(name.into(), mean);
        out.std.insert(name.into(), var.sqrt());
    }
    out
}

/// Stratified K-fold cross-validation: the prepared training data (plus the validation file,
/// if any) is split into `k` folds; fold i trains on the others and validates on fold i, in
/// `RUN_DIR/fold-i`; the test split, if any, is evaluated by every fold. Writes
/// `RUN_DIR/metrics.json` with per-fold results and mean ± std.
pub fn cross_validate(
    config: &RunConfig,
    options: &TrainOptions,
    k: usize,
    device: &Device,
) -> Result<CvMetrics> {
    check_cv_options(config, k)?;
    let run_dir = run_dir_for(config, options);
    std::fs::create_dir_all(&run_dir).map_err(|e| Error::io(&run_dir, e))?;
    let index = index_start(config, &run_dir, "cv");
    let result = catch_panic(|| cross_validate_in(config, options, k, device, &run_dir));
    let outcome = match &result {
        Ok(cv) => Ok(crate::index::Outcome {
            train_time_s: Some(cv.per_fold.iter().map(|m| m.train_time_s).sum()),
            steps: Some(cv.per_fold.iter().map(|m| m.steps as i64).sum()),
            validation_accuracy: cv.validation.mean.get("accuracy").copied(),
            validation_macro_f1: cv.validation.mean.get("macro_f1").copied(),
            test_accuracy: cv
                .test
                .as_ref()
                .and_then(|t| t.mean.get("accuracy").copied()),
            test_macro_f1: cv
                .test
                .as_ref()
                .and_then(|t| t.mean.get("macro_f1").copied()),
            metrics: std::fs::read_to_string(run_dir.join("metrics.json")).ok(),
        }),
        Err(e) => Err(("failed", e.to_string())),
    };
    index_finish(index, &run_dir, outcome);
    result
}

/// The options of `--cv K` that need no data: at least two folds, a classification task.
fn check_cv_options(config: &RunConfig, k: usize) -> Result<()> {
    if k < 2 {
        return Err(Error::Config(format!(
            "--cv needs at least 2 folds, got {k}"
        )));
    }
    if !config.task.kind.is_classification() {
        return Err(Error::Config(format!(
            "--cv is for classification; task.type = \"{}\" trains with train/validation/test splits",
            crate::task::kind_name(config.task.kind)
        )));
    }
    Ok(())
}

/// What the folds of cross-validation are drawn from.
struct CvData {
    /// The data report of the pipeline run (no validation carved: folds validate).
    report: DataReport,
    /// Prepared training rows plus the validation file's, if any.
    pool: Vec<Example>,
    /// The test split, evaluated by every fold.
    test: Option<crate::prep::PreparedSplit>,
    /// Fold of each pool row.
    fold_of: Vec<usize>,
}

/// Prepare the data of `--cv k` and assign the folds; a class with fewer than `k` rows is
/// refused here, before any fold trains (see [`crate::prep::split::classes_below`]).
fn cv_data(config: &RunConfig, k: usize, tokenizer: &TextTokenizer) -> Result<CvData> {
    // Validation comes from the folds, so none is carved out of train.
    let mut prep_config = config.clone();
    if let Some(split) = prep_config.data.split.as_mut() {
        split.validation = 0.0;
    }
    let data = crate::prep::prepare(&prep_config, Some(tokenizer))?;
    let mut pool: Vec<Example> = Vec::new();
    let mut test = None;
    for split in data.splits {
        match split.name.as_str() {
            "test" => test = Some(split),
            _ => pool.extend(split.examples),
        }
    }
    let labels: Vec<&str> = pool
        .iter()
        .map(|e| e.label.as_deref().unwrap_or(""))
        .collect();
    let small = crate::prep::split::classes_below(&labels, k);
    if !small.is_empty() {
        let named: Vec<String> = small
            .iter()
            .map(|(l, n)| format!("{l:?} has {n} row{}", if *n == 1 { "" } else { "s" }))
            .collect();
        return Err(Error::Labels(format!(
            "--cv {k}: every class needs at least {k} rows (one per fold) after data preparation, but class {} ({}); use fewer folds or add rows of {}",
            named.join(", class "),
            config.data.train.display(),
            if small.len() == 1 {
                "that class"
            } else {
                "those classes"
            }
        )));
    }
    let seed = config
        .data
        .split
        .as_ref()
        .map_or(config.train.seed, |s| s.seed);
    let fold_of = crate::prep::split::stratified_folds(&labels, k, seed);
    Ok(CvData {
        report: data.report,
        pool,
        test,
        fold_of,
    })
}

/// The prepared data of one fold: the other folds train, this one validates.
fn cv_fold(config: &RunConfig, cv: &CvData, fold: usize) -> PreparedData {
    let (mut train, mut held) = (Vec::new(), Vec::new());
    for (e, &f) in cv.pool.iter().zip(&cv.fold_of) {
        if f == fold {
            held.push(e.clone());
        } else {
            train.push(e.clone());
        }
    }
    let file = config.data.train.clone();
    let mut splits = vec![
        crate::prep::PreparedSplit {
            name: "train".into(),
            file: file.clone(),
            examples: train,
            token_lengths: None,
        },
        crate::prep::PreparedSplit {
            name: "validation".into(),
            file,
            examples: held,
            token_lengths: None,
        },
    ];
    splits.extend(cv.test.clone());
    PreparedData {
        splits,
        report: cv.report.clone(),
    }
}

fn cross_validate_in(
    config: &RunConfig,
    options: &TrainOptions,
    k: usize,
    device: &Device,
    run_dir: &Path,
) -> Result<CvMetrics> {
    let model_dir = ModelDir::open(&config.model.path)?;
    let tokenizer = TextTokenizer::for_model(
        &model_dir.tokenizer_path(),
        config.model.max_length,
        &model_dir.config,
    )?;
    let cv = cv_data(config, k, &tokenizer)?;
    cv.report.write(run_dir)?;
    let mut per_fold = Vec::with_capacity(k);
    for fold in 0..k {
        tracing::info!("cross-validation: fold {} of {k}", fold + 1);
        let fold_options = TrainOptions {
            run_dir: Some(run_dir.join(format!("fold-{}", fold + 1))),
            ..options.clone()
        };
        let metrics = train_with_data(
            config,
            &fold_options,
            device,
            Some(cv_fold(config, &cv, fold)),
        )?;
        per_fold.push(metrics);
    }
    let validation: Vec<&ClassificationMetrics> = per_fold
        .iter()
        .filter_map(|m| m.validation.as_ref())
        .collect();
    let tests: Vec<&ClassificationMetrics> =
        per_fold.iter().filter_map(|m| m.test.as_ref()).collect();
    let cv = CvMetrics {
        folds: k,
        validation: mean_std(&validation),
        test: (!tests.is_empty()).then(|| mean_std(&tests)),
        per_fold,
    };
    write_json(&run_dir.join("metrics.json"), &cv)?;
    Ok(cv)
}

/// What `tunekit data check` shows: the data report `train` would write, produced by the
/// very functions `train` (and `train --cv`) run before their first step, so a file that
/// passes the check is not refused by `train` for its data.
#[derive(Debug, Clone)]
pub struct DataCheck {
    /// The data report as `data_report.json` holds it.
    pub report: serde_json::Value,
    /// The same report as text.
    pub text: String,
    /// What the head would be trained to output: classes, multilabel labels or NER tags
    /// (the target column for regression; empty for embedding).
    pub labels: Vec<String>,
}

/// Run every data validation `train` runs before its first step, for every task: the
/// model's position limit and tokenizer, reading, cleaning, splitting and de-duplication,
/// the label set (at least two classes; no unknown label in an evaluation split), targets
/// (multilabel labels, regression values, CoNLL tags), and with `cv = Some(k)` the checks of
/// `train --cv k` (class sizes against the folds). Errors are the ones `train` would give.
/// Not checked here: the pretrained weights themselves and a distillation teacher (both are
/// loaded, not validated, by `train`).
pub fn check_data(config: &RunConfig, cv: Option<usize>) -> Result<DataCheck> {
    if let Some(k) = cv {
        check_cv_options(config, k)?;
    }
    if !config.task.kind.is_classification() {
        let p = crate::task::run::prepare(config, None)?;
        return Ok(DataCheck {
            report: p.report,
            text: p.report_text,
            labels: p.labels,
        });
    }
    let (report, p) = match cv {
        None => {
            let p = prepare(config, None)?;
            (p.report.clone(), p)
        }
        Some(k) => {
            let model_dir = ModelDir::open(&config.model.path)?;
            let tokenizer = TextTokenizer::for_model(
                &model_dir.tokenizer_path(),
                config.model.max_length,
                &model_dir.config,
            )?;
            let cv = cv_data(config, k, &tokenizer)?;
            // Every class has a row in every fold, so the folds share one label set: the
            // first fold's checks are every fold's.
            let p = prepare(config, Some(cv_fold(config, &cv, 0)))?;
            (cv.report, p)
        }
    };
    check_teacher(config, &p.labels)?;
    Ok(DataCheck {
        report: serde_json::to_value(&report).map_err(|e| Error::Report(e.to_string()))?,
        text: report.to_text(),
        labels: p.labels,
    })
}

/// What `distill` checks of its teacher before the first step (its position table against
/// `model.max_length`, its labels against the data's), from its config alone: `data check`
/// makes the same refusals without loading the teacher's weights.
fn check_teacher(config: &RunConfig, labels: &[String]) -> Result<()> {
    let Some(d) = &config.distill else {
        return Ok(());
    };
    let dir = crate::hub::resolve_model(&d.teacher)?;
    let teacher = crate::model::BertConfig::from_file(&dir.join("config.json"))?;
    crate::tokenize::check_max_length(config.model.max_length, &teacher, &dir)?;
    let teacher_labels = teacher.labels().filter(|l| !l.is_empty()).ok_or_else(|| {
        Error::Model(format!(
            "distill.teacher {}: config.json has no id2label: not a classification model (fine-tune it first)",
            d.teacher
        ))
    })?;
    if teacher_labels != labels {
        return Err(Error::Labels(format!(
            "distill.teacher {}: its labels {teacher_labels:?} differ from the training data's {labels:?}",
            d.teacher
        )));
    }
    Ok(())
}

/// Record a run's start in the experiment index of its parent directory; a failure is a
/// warning (the run directory, not the index, is the record that matters).
fn index_start(config: &RunConfig, run_dir: &Path, kind: &str) -> Option<crate::index::RunIndex> {
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

fn index_finish(
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

/// `body`, with a panic inside it turned into an [`Error::Engine`] carrying the panic's
/// message, so that the run driver marks the run `failed` (status.json and the index row)
/// instead of leaving it `running`. The panic itself is still printed by the panic hook (with
/// its location), and the error exits with code 1: a panic is a bug, not bad input.
pub(crate) fn catch_panic<T>(body: impl FnOnce() -> Result<T>) -> Result<T> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(body)).unwrap_or_else(|payload| {
        let message = payload
            .downcast_ref::<&str>()
            .map(|s| (*s).to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "(no message)".into());
        Err(Error::Engine(format!(
            "internal error: panicked: {message}"
        )))
    })
}

/// [`train`] on already prepared data (`None`: run the data pipeline of `config`).
fn train_with_data(
    config: &RunConfig,
    options: &TrainOptions,
    device: &Device,
    data: Option<PreparedData>,
) -> Result<RunMetrics> {
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
        if config.task.kind.is_classification() {
            train_in(config, options, &run_dir, device, data)
        } else {
            crate::task::run::train_in(config, options, &run_dir, device)
        }
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

fn train_in(
    config: &RunConfig,
    options: &TrainOptions,
    run_dir: &Path,
    device: &Device,
    data: Option<PreparedData>,
) -> Result<RunMetrics> {
    write_atomic(&run_dir.join("config.toml"), config.to_toml()?.as_bytes())?;
    let t = &config.train;
    let p = prepare(config, data)?;
    for line in p.report.to_text().lines() {
        tracing::info!("{line}");
    }
    for w in &p.report.warnings {
        tracing::warn!("{w}");
    }
    p.report.write(run_dir)?;

    let ad = device.clone().autodiff();
    let spec = ClassifierSpec {
        num_labels: p.labels.len(),
        pooling: config.model.pooling,
        dropout: DropoutOverride {
            hidden: config.model.hidden_dropout,
            attention: config.model.attention_dropout,
        },
        seed: t.seed,
        require_head: false,
    };

    // Resume: weights and state from the latest checkpoint; otherwise from the pretrained model.
    let resume_from = resume_point(run_dir, options.resume)?;
    let lora = config.strategy.lora.as_ref();
    let (mut model, load_report, frozen_size) =
        trainable_model(config, &p.model_dir, &spec, resume_from.as_deref(), &ad)?;
    if resume_from.is_none() {
        if load_report.classifier_initialized {
            tracing::info!(
                "classifier head initialised for {} labels: {:?}",
                p.labels.len(),
                p.labels
            );
        }
        if load_report.pooler_initialized {
            tracing::info!("pooler initialised (the pretrained weights have none)");
        }
        if !load_report.unused_tensors.is_empty() {
            tracing::info!(
                "{} tensors in the pretrained weights are not used: {:?}",
                load_report.unused_tensors.len(),
                load_report.unused_tensors
            );
        }
    }
    let (mut optim, all_params) = build_optimizer(config, &model);
    // With gradual unfreezing this is updated per stage and ends as the last stage's count.
    let mut trainable = if lora.is_some() {
        trainable_params(&model)
    } else {
        all_params - frozen_size
    };
    if let Some(opts) = lora {
        tracing::info!(
            "LoRA rank {} alpha {} on {:?}: {trainable} trainable parameters (adapters + head) of {all_params}",
            opts.rank,
            opts.alpha,
            opts.targets
        );
    }
    let class_weights: Option<Vec<f64>> = match t.class_weights {
        crate::config::ClassWeights::None => None,
        crate::config::ClassWeights::Balanced => {
            let w = balanced_class_weights(&p.train.labels, p.labels.len());
            tracing::info!(
                "class weights (balanced): {:?}",
                p.labels.iter().zip(&w).collect::<Vec<_>>()
            );
            Some(w)
        }
    };
    let mut state: TrainState = TrainState::start(model_param_ids(&model));
    if let Some(dir) = &resume_from {
        (optim, state) = restore(dir, optim, &model)?;
    }
    // metrics.jsonl always equals the checkpoint's history plus what follows.
    let metrics_path = run_dir.join("metrics.jsonl");
    rewrite_history(&metrics_path, &state.history)?;
    // TensorBoard curves (`tensorboard --logdir runs/`); a resumed run adds a file.
    let mut tensorboard = crate::tensorboard::EventWriter::create(run_dir)?;

    let lengths: Vec<usize> = p.train.tokens.iter().map(|t| t.ids.len()).collect();
    // The epoch's sample of example indices (with duplicates when oversampling).
    let epoch_sample = |epoch: usize| -> Vec<usize> {
        if t.oversample {
            crate::batch::oversampled(&p.train.labels, p.labels.len(), epoch_seed(t.seed, epoch))
        } else {
            (0..lengths.len()).collect()
        }
    };
    let epoch_size = epoch_sample(0).len();
    if t.oversample {
        tracing::info!(
            "oversampling minority classes: {} examples per epoch from {}",
            epoch_size,
            lengths.len()
        );
    }
    let augment = &config.data.augment;
    // A frozen encoder sees the same inputs every epoch: its features are computed once and
    // the head trains on them, so a linear probe costs one forward pass over the data plus a
    // tiny head. The features come from the encoder in evaluation mode (no dropout), as
    // feature extraction does; augmentation changes the inputs every epoch and gradual
    // unfreezing thaws the encoder, so either turns the cache off.
    let teacher_logits = match &config.distill {
        Some(d) => Some(teacher_logits(&p, config, d, device, &ad)?),
        None => None,
    };
    let feature_cache: Option<Tensor<2>> = if config.strategy.freeze_encoder
        && config.strategy.cache_frozen_features
        && !config.strategy.gradual_unfreeze
        && !augment.enabled()
    {
        let started = Instant::now();
        let (values, hidden) = crate::infer::encoder_features(
            &model.valid(),
            &p.train.tokens,
            t.eval_batch_size,
            p.tokenizer.pad_id(),
            device,
        )?;
        let n = p.train.tokens.len();
        tracing::info!(
            "linear probe: encoder features of {n} examples computed once in {:.1} s",
            started.elapsed().as_secs_f64()
        );
        Some(Tensor::<2>::from_data(
            burn::tensor::TensorData::new(values, [n, hidden]),
            &ad,
        ))
    } else {
        None
    };
    let batches_per_epoch = epoch_size.div_ceil(t.batch_size);
    let steps_per_epoch = batches_per_epoch.div_ceil(t.gradient_accumulation);
    let mut total_steps = steps_per_epoch * t.epochs;
    if t.max_steps > 0 {
        total_steps = total_steps.min(t.max_steps);
    }
    let schedule = Schedule {
        kind: t.scheduler,
        base_lr: t.learning_rate,
        warmup: warmup_steps(total_steps, t.warmup_ratio, t.warmup_steps),
        total: total_steps,
    };
    tracing::info!(
        "training: {} examples, {} labels, {} epochs × {} steps (batch {} × accumulation {}), {} warm-up steps, {} trainable parameters",
        epoch_size,
        p.labels.len(),
        t.epochs,
        steps_per_epoch,
        t.batch_size,
        t.gradient_accumulation,
        schedule.warmup,
        trainable
    );

    let mut lr_groups = layer_schedules(config, &p.model_dir.config, schedule, state.step);
    let progress = progress_bar(options.progress, total_steps as u64, state.step as u64);
    let best_dir = run_dir.join("best");
    let started = Instant::now();
    let elapsed_before = state.elapsed_s;
    let examples_before = state.examples_seen;

    let mut unfreeze_stage: Option<usize> = None;
    'epochs: while state.epoch < t.epochs && state.step < total_steps && !state.stopped_early {
        let sample = epoch_sample(state.epoch);
        let sample_lengths: Vec<usize> = sample.iter().map(|&i| lengths[i]).collect();
        let batches: Vec<Vec<usize>> = epoch_batches(
            &sample_lengths,
            t.batch_size,
            t.length_bucketing,
            epoch_seed(t.seed, state.epoch),
        )
        .into_iter()
        .map(|b| b.into_iter().map(|j| sample[j]).collect())
        .collect();
        // This epoch's augmented tokens (seeded by epoch and example, so resume-exact).
        let augmented = if augment.enabled() {
            let (tokens, counts) = augment_epoch(&p, augment, t.seed, state.epoch)?;
            progress.suspend(|| {
                tracing::info!(
                    "augmentation, epoch {}: {} of {} examples changed ({})",
                    state.epoch + 1,
                    counts.values().sum::<usize>(),
                    p.train.tokens.len(),
                    counts
                        .iter()
                        .map(|(k, v)| format!("{k} {v}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            });
            Some(tokens)
        } else {
            None
        };
        let train_tokens = augmented.as_ref().unwrap_or(&p.train.tokens);
        while state.batch_in_epoch < batches.len() {
            if state.step >= total_steps {
                break 'epochs;
            }
            if config.strategy.gradual_unfreeze {
                let (m, now) = progress.suspend(|| {
                    unfreeze_to_stage(
                        config,
                        &p.model_dir.config,
                        model,
                        (state.step, state.epoch),
                        &mut unfreeze_stage,
                        all_params,
                    )
                })?;
                model = m;
                trainable = now.unwrap_or(trainable);
            }
            let group_end = (state.batch_in_epoch + t.gradient_accumulation).min(batches.len());
            let group = &batches[state.batch_in_epoch..group_end];
            let group_size: usize = group.iter().map(|b| b.len()).sum();
            let weight_of = |i: usize| class_weights.as_ref().map_or(1.0, |w| w[p.train.labels[i]]);
            let normaliser: f64 = group.iter().flatten().map(|&i| weight_of(i)).sum();
            let mut accumulator = GradientsAccumulator::new();
            let mut group_loss = 0.0f64;
            for (micro, idx) in group.iter().enumerate() {
                ad.seed(step_seed(t.seed, state.step, micro));
                let refs: Vec<&Tokens> = idx.iter().map(|&i| &train_tokens[i]).collect();
                let labels: Vec<usize> = idx.iter().map(|&i| p.train.labels[i]).collect();
                let logits = match &feature_cache {
                    Some(features) => {
                        model.head_forward(features.clone().select(0, label_tensor(idx, &ad)))
                    }
                    None => model.forward(&collate(&refs, p.tokenizer.pad_id(), &ad)),
                };
                let weights = class_weights.as_ref().map(|_| {
                    let w: Vec<f32> = idx.iter().map(|&i| weight_of(i) as f32).collect();
                    Tensor::<1>::from_data(burn::tensor::TensorData::new(w, [idx.len()]), &ad)
                });
                let hard = |logits| {
                    classification_loss_sum(
                        logits,
                        label_tensor(&labels, &ad),
                        weights.clone(),
                        t.label_smoothing,
                        (t.loss == crate::config::LossKind::Focal).then_some(t.focal_gamma),
                    )
                };
                let loss = match (&teacher_logits, &config.distill) {
                    (Some(teacher), Some(d)) if d.alpha > 0.0 => {
                        let teacher = teacher.clone().select(0, label_tensor(idx, &ad));
                        let soft = distillation_kl_sum(logits.clone(), teacher, d.temperature);
                        if d.alpha < 1.0 {
                            soft.mul_scalar(d.alpha) + hard(logits).mul_scalar(1.0 - d.alpha)
                        } else {
                            soft
                        }
                    }
                    _ => hard(logits),
                }
                .div_scalar(normaliser);
                let loss_value = crate::model::weights::to_vec(loss.clone().detach())?;
                group_loss += f64::from(loss_value.first().copied().unwrap_or(f32::NAN));
                let grads = GradientsParams::from_grads(loss.backward(), &model);
                accumulator.accumulate(&model, grads);
            }
            let lr;
            (model, lr) = optimizer_step(
                config,
                model,
                &mut optim,
                &mut lr_groups,
                &schedule,
                accumulator,
                group_loss,
                (state.step, state.epoch),
            )?;
            state.step += 1;
            state.batch_in_epoch = group_end;
            state.examples_seen += group_size;
            state.loss_since_eval.0 += group_loss * group_size as f64;
            state.loss_since_eval.1 += group_size;
            tensorboard.scalars(
                state.step,
                &[("train/loss", group_loss), ("train/learning_rate", lr)],
            )?;

            let secs = started.elapsed().as_secs_f64();
            let rate = (state.examples_seen - examples_before) as f64 / secs.max(1e-9);
            progress.set_position(state.step as u64);
            progress.set_message(format!(
                "epoch {}/{} loss {:.4} lr {:.2e} {:.1} ex/s",
                state.epoch + 1,
                t.epochs,
                group_loss,
                lr,
                rate
            ));

            let end_of_epoch = state.batch_in_epoch >= batches.len();
            let last_step = state.step >= total_steps;
            let eval_now = end_of_epoch
                || last_step
                || (t.eval_every_steps > 0 && state.step.is_multiple_of(t.eval_every_steps));
            if eval_now {
                state.elapsed_s = elapsed_before + started.elapsed().as_secs_f64();
                if let Some(val) = &p.validation {
                    let valid = model.valid();
                    let metrics = evaluate_tokens(
                        &valid,
                        &val.tokens,
                        &val.labels,
                        &p.labels,
                        t.eval_batch_size,
                        p.tokenizer.pad_id(),
                        device,
                    )?;
                    let value = metrics.get(&t.metric).unwrap_or(f64::NAN);
                    let record = EvalRecord {
                        step: state.step,
                        epoch: state.step as f64 / steps_per_epoch as f64,
                        train_loss: state.loss_since_eval.0 / state.loss_since_eval.1.max(1) as f64,
                        learning_rate: lr,
                        validation: metrics,
                        elapsed_s: state.elapsed_s,
                    };
                    let msg = format!(
                        "step {} epoch {:.2}: train loss {:.4}, validation {} {:.4} (accuracy {:.4}, macro-F1 {:.4})",
                        record.step,
                        record.epoch,
                        record.train_loss,
                        t.metric,
                        value,
                        record.validation.accuracy,
                        record.validation.macro_f1
                    );
                    progress.suspend(|| tracing::info!("{msg}"));
                    let v = &record.validation;
                    let mut scalars = vec![
                        ("validation/accuracy", v.accuracy),
                        ("validation/macro_f1", v.macro_f1),
                        ("train/epoch_loss", record.train_loss),
                    ];
                    scalars.extend(v.loss.map(|l| ("validation/loss", l)));
                    scalars.extend(v.get("roc_auc").map(|a| ("validation/roc_auc", a)));
                    tensorboard.scalars(state.step, &scalars)?;
                    tensorboard.flush()?;
                    state.history.push(record);
                    state.loss_since_eval = (0.0, 0);
                    if state.record_validation(
                        value,
                        config.metric_higher_is_better(),
                        t.early_stopping_patience,
                    ) {
                        save_weights(&model, &best_dir, lora.is_some())?;
                    } else if state.stopped_early {
                        progress.suspend(|| {
                            tracing::info!(
                                "early stopping: no improvement of validation {} in {} evaluations",
                                t.metric,
                                state.evals_without_improvement
                            )
                        });
                    }
                    rewrite_history(&metrics_path, &state.history)?;
                    if let Some(hook) = &options.on_eval {
                        let evaluation = state.history.len();
                        if (hook.0)(evaluation, state.step, value) {
                            tensorboard.flush()?;
                            return Err(Error::Pruned {
                                evaluation,
                                step: state.step,
                            });
                        }
                    }
                } else {
                    // Without validation data the last model is the one exported.
                    state.best_step = Some(state.step);
                    save_weights(&model, &best_dir, lora.is_some())?;
                }
            }
            if end_of_epoch {
                state.epoch += 1;
                state.batch_in_epoch = 0;
            }
            if eval_now
                || (t.checkpoint_every_steps > 0
                    && state.step.is_multiple_of(t.checkpoint_every_steps))
            {
                state.elapsed_s = elapsed_before + started.elapsed().as_secs_f64();
                save_checkpoint(run_dir, &model, &optim, &state, lora.is_some())?;
            }
            if state.stopped_early {
                break 'epochs;
            }
            if end_of_epoch {
                break;
            }
        }
    }
    progress.finish_and_clear();
    let train_time_s = elapsed_before + started.elapsed().as_secs_f64();

    // Export the best model in HF layout and evaluate it on the test split.
    let export_dir = run_dir.join("model");
    export_model(&p, config, &best_dir, &export_dir)?;
    let infer_spec = ClassifierSpec {
        require_head: true,
        ..spec
    };
    let best = match lora {
        Some(_) => crate::model::lora::load_for_inference(&export_dir, &infer_spec, device)?.0,
        None => {
            load_classifier(
                &best_dir.join("model.safetensors"),
                &p.model_dir.config,
                &infer_spec,
                device,
            )?
            .0
        }
    };
    // Evaluate the exported model and keep its per-example predictions for the report.
    let eval_split = |s: &Split| -> Result<ClassificationMetrics> {
        let (probs, loss_sum) = crate::infer::predict_probs(
            &best,
            &s.tokens,
            Some(&s.labels),
            t.eval_batch_size,
            p.tokenizer.pad_id(),
            device,
        )?;
        let rows: Vec<crate::report::PredictionRow> = probs
            .iter()
            .zip(&s.labels)
            .zip(&s.examples)
            .map(|((pr, &label), ex)| {
                let predicted = crate::infer::argmax(pr);
                let name = |c: usize| p.labels.get(c).cloned().unwrap_or_default();
                crate::report::PredictionRow {
                    text: ex.text.clone(),
                    label,
                    predicted,
                    label_name: name(label),
                    predicted_name: name(predicted),
                    probabilities: pr.clone(),
                }
            })
            .collect();
        crate::report::write_predictions(run_dir, &s.name, &rows)?;
        Ok(crate::infer::metrics_from_probs(
            &probs, loss_sum, &s.labels, &p.labels,
        ))
    };
    let validation = p.validation.as_ref().map(eval_split).transpose()?;
    // What the exported model predicts on validation data: the reference for drift monitoring.
    if let (Some(v), Some(split)) = (&validation, &p.validation) {
        let n = p.labels.len();
        let predicted: Vec<u64> = (0..n)
            .map(|c| v.confusion_matrix.iter().map(|row| row[c]).sum())
            .collect();
        let lengths: Vec<usize> = split.tokens.iter().map(|t| t.ids.len()).collect();
        let stats = crate::drift::reference(&p.labels, &predicted, &lengths);
        write_json(&export_dir.join(crate::drift::REFERENCE_FILE), &stats)?;
    }
    let test = p.test.as_ref().map(eval_split).transpose()?;
    if let Some(t) = &test {
        let step = state.best_step.unwrap_or(state.step);
        tensorboard.scalars(
            step,
            &[("test/accuracy", t.accuracy), ("test/macro_f1", t.macro_f1)],
        )?;
    }
    tensorboard.flush()?;
    let metrics = RunMetrics {
        labels: p.labels.clone(),
        metric: t.metric.clone(),
        best_step: state.best_step,
        validation,
        test,
        steps: state.step,
        stopped_early: state.stopped_early,
        train_time_s,
        train_examples_per_s: state.examples_seen as f64 / train_time_s.max(1e-9),
        trainable_parameters: trainable,
        task: config.task.kind,
        validation_scores: None,
        test_scores: None,
        warnings: Vec::new(),
    };
    let metrics = RunMetrics {
        warnings: crate::report::collapse_warnings(&metrics),
        ..metrics
    };
    for w in &metrics.warnings {
        tracing::warn!("{w}");
    }
    crate::card::write(
        &export_dir,
        config,
        &metrics,
        Some(&p.report),
        lora.is_some(),
    )?;
    write_json(&run_dir.join("metrics.json"), &metrics)?;
    // The report is derived from the files above; if it cannot be drawn the run is still
    // complete, so say so and how to retry rather than failing the run.
    match crate::report::write(run_dir) {
        Ok(path) => tracing::info!("report: {}", path.display()),
        Err(e) => tracing::warn!(
            "{}: could not write report.html ({e}); retry with `tunekit report {}`",
            run_dir.display(),
            run_dir.display()
        ),
    }
    Ok(metrics)
}

pub(crate) fn rewrite_history<R: Serialize>(path: &Path, history: &[R]) -> Result<()> {
    let mut text = String::new();
    for r in history {
        let line = serde_json::to_string(r).map_err(|e| Error::Engine(e.to_string()))?;
        text.push_str(&line);
        text.push('\n');
    }
    write_atomic(path, text.as_bytes())
}

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

/// Write `dir` in HF layout: config.json with `id2label`/`label2id` and
/// `BertForSequenceClassification`, the weights from `best` (the whole model, or for LoRA the
/// adapters + head with PEFT's `adapter_config.json`), the tokenizer files, and `tunekit.json`.
fn export_model(p: &Prepared, config: &RunConfig, best: &Path, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let mut hf = p.model_dir.config.clone();
    hf.set_labels(&p.labels);
    hf.architectures = Some(vec!["BertForSequenceClassification".into()]);
    hf.extra.insert(
        "problem_type".into(),
        serde_json::json!("single_label_classification"),
    );
    write_json(&dir.join("config.json"), &hf)?;
    match &config.strategy.lora {
        Some(opts) => {
            use crate::model::lora::{ADAPTER_CONFIG, ADAPTER_WEIGHTS, AdapterConfig};
            crate::fsutil::copy_atomic(&best.join(ADAPTER_WEIGHTS), &dir.join(ADAPTER_WEIGHTS))?;
            write_json(
                &dir.join(ADAPTER_CONFIG),
                &AdapterConfig::new(opts, &p.model_dir.dir),
            )?;
        }
        None => {
            crate::fsutil::copy_atomic(
                &best.join("model.safetensors"),
                &dir.join("model.safetensors"),
            )?;
        }
    }
    for f in [
        "tokenizer.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
        "vocab.txt",
    ] {
        let src = p.model_dir.dir.join(f);
        if src.is_file() {
            crate::fsutil::copy_atomic(&src, &dir.join(f))?;
        }
    }
    write_json(
        &dir.join(TUNEKIT_META),
        &ModelMeta {
            pooling: config.model.pooling,
            max_length: config.model.max_length,
            labels: p.labels.clone(),
            base_model: config.model.path.clone(),
            tunekit_version: env!("CARGO_PKG_VERSION").into(),
            preprocess: Some(crate::prep::TextPreprocess::from_config(&config.data)),
            task: None,
        },
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Int, TensorData};

    fn loss(logits: Vec<f32>, labels: Vec<i64>, weights: Option<Vec<f32>>, eps: f64) -> f64 {
        let d = burn::tensor::Device::flex();
        let n = labels.len();
        let c = logits.len() / n;
        let l = Tensor::<2>::from_data(TensorData::new(logits, [n, c]), &d);
        let y = Tensor::<1, Int>::from_data(TensorData::new(labels, [n]), &d);
        let w = weights.map(|w| Tensor::<1>::from_data(TensorData::new(w, [n]), &d));
        let v = crate::model::weights::to_vec(cross_entropy_weighted_sum(l, y, w, eps)).unwrap();
        f64::from(v[0])
    }

    #[test]
    fn label_smoothing_matches_the_pytorch_formula() {
        // logits [1, 2, 0], target 1: log p = x - logsumexp(x).
        let lse = (1f64.exp() + 2f64.exp() + 1.0).ln();
        let logp = [1.0 - lse, 2.0 - lse, -lse];
        let nll = -logp[1];
        let uniform = -(logp.iter().sum::<f64>()) / 3.0;
        let want = 0.9 * nll + 0.1 * uniform;
        let got = loss(vec![1.0, 2.0, 0.0], vec![1], None, 0.1);
        assert!((got - want).abs() < 1e-6, "{got} vs {want}");
        assert!((loss(vec![1.0, 2.0, 0.0], vec![1], None, 0.0) - nll).abs() < 1e-6);
    }

    #[test]
    fn class_weights_scale_each_example() {
        let plain = loss(vec![0.5, -0.5, 0.2, 0.1], vec![0, 1], None, 0.0);
        let a = loss(vec![0.5, -0.5], vec![0], None, 0.0);
        let b = loss(vec![0.2, 0.1], vec![1], None, 0.0);
        assert!((plain - (a + b)).abs() < 1e-6);
        let weighted = loss(
            vec![0.5, -0.5, 0.2, 0.1],
            vec![0, 1],
            Some(vec![2.0, 0.5]),
            0.0,
        );
        assert!((weighted - (2.0 * a + 0.5 * b)).abs() < 1e-6);
    }

    #[test]
    fn balanced_weights_match_scikit_learn() {
        // n / (classes × n_c) with n = 4, classes = 3, as compute_class_weight("balanced");
        // scikit-learn rejects a class absent from y, tunekit gives it weight 1.
        let w = balanced_class_weights(&[0, 0, 0, 1], 3);
        assert!((w[0] - 4.0 / 9.0).abs() < 1e-12, "{w:?}");
        assert!((w[1] - 4.0 / 3.0).abs() < 1e-12);
        assert_eq!(w[2], 1.0);
    }

    #[test]
    fn depth_counts_from_the_top() {
        assert_eq!(depth_of("classifier.weight", 6), 0);
        assert_eq!(depth_of("pooler.dense.weight", 6), 0);
        assert_eq!(depth_of("encoder.layer.5.output.dense.weight", 6), 1);
        assert_eq!(depth_of("encoder.layer.0.output.dense.weight", 6), 6);
        assert_eq!(depth_of("embeddings.word_embeddings.weight", 6), 7);
    }

    #[test]
    fn focal_loss_matches_its_definition_and_reduces_to_cross_entropy_at_gamma_zero() {
        let d = burn::tensor::Device::flex();
        let run = |gamma: f64| {
            let l =
                Tensor::<2>::from_data(TensorData::new(vec![2.0f32, 0.5, 0.1, 1.0], [2, 2]), &d);
            let y = Tensor::<1, Int>::from_data(TensorData::new(vec![0i64, 1], [2]), &d);
            let v = crate::model::weights::to_vec(classification_loss_sum(
                l,
                y,
                None,
                0.0,
                Some(gamma),
            ))
            .unwrap();
            f64::from(v[0])
        };
        // Σ (1 − p_y)^γ · −log p_y, computed in f64 by hand (Python, math module).
        assert!(
            (run(2.0) - 0.035_206_317_990_844_664).abs() < 1e-6,
            "{}",
            run(2.0)
        );
        assert!((run(0.0) - 0.542_567_152_714_840_4).abs() < 1e-6);
        assert!((run(0.0) - loss(vec![2.0, 0.5, 0.1, 1.0], vec![0, 1], None, 0.0)).abs() < 1e-7);
    }

    #[test]
    fn distillation_term_matches_t_squared_kl() {
        let d = burn::tensor::Device::flex();
        let m = |v: Vec<f32>| Tensor::<2>::from_data(TensorData::new(v, [2, 3]), &d);
        let student = m(vec![1.0, -0.5, 0.2, 0.3, 0.3, 2.0]);
        let teacher = m(vec![2.0, 0.0, -1.0, 0.0, 1.0, 0.5]);
        let v = crate::model::weights::to_vec(distillation_kl_sum(student, teacher.clone(), 2.0))
            .unwrap();
        // Σ T²·Σ_c p log(p/q), computed in f64 by hand (Python, math module).
        assert!(
            (f64::from(v[0]) - 0.791_154_983_371_120_1).abs() < 1e-6,
            "{v:?}"
        );
        let same =
            crate::model::weights::to_vec(distillation_kl_sum(teacher.clone(), teacher, 2.0))
                .unwrap();
        assert!(
            same[0].abs() < 1e-6,
            "KL of a distribution with itself is 0"
        );
    }
}
