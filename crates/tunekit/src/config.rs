//! The run configuration: one TOML file, parsed strictly (unknown keys are errors naming the
//! key and file), with `--set section.key=value` overrides applied before validation, and
//! validated once into [`RunConfig`].

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::data::{DataSpec, Format, Quoting, TextEncoding};
use crate::error::{Error, Result};
use crate::model::Pooling;
use crate::prep::augment::AugmentOptions;
use crate::prep::{CleanOptions, DedupOptions, OutlierOptions, PrivacyOptions, SplitOptions};

/// Everything a training run needs.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RunConfig {
    /// The pretrained model.
    pub model: ModelSection,
    /// The labelled data.
    pub data: DataSection,
    /// Optimisation.
    #[serde(default)]
    pub train: TrainSection,
    /// Run directory and name.
    #[serde(default)]
    pub run: RunSection,
    /// Which parameters train and how fast (freezing, layer-wise learning-rate decay).
    #[serde(default)]
    pub strategy: StrategySection,
    /// Knowledge distillation from a teacher (`tunekit distill`).
    #[serde(default)]
    pub distill: Option<DistillSection>,
    /// What is trained: classification (default), multilabel, regression, token
    /// classification, embedding ([`crate::task`]).
    #[serde(default)]
    pub task: crate::task::TaskSection,
    /// Differential privacy (`[privacy.dp]`, [`crate::dp`]).
    #[serde(default, skip_serializing_if = "is_default_privacy")]
    pub privacy: crate::dp::PrivacySection,
}

fn is_default_privacy(p: &crate::dp::PrivacySection) -> bool {
    p.dp.is_none()
}

/// `[distill]`: train the model (the student) on a fine-tuned teacher's soft targets.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DistillSection {
    /// The teacher: a fine-tuned classifier directory (e.g. `runs/NAME/model`) with the same
    /// labels.
    pub teacher: String,
    /// Softmax temperature T of both teacher and student in the soft term.
    #[serde(default = "default_temperature")]
    pub temperature: f64,
    /// Weight α of the soft term T²·KL(teacher ‖ student); 1 − α weighs the hard-label loss.
    #[serde(default = "default_alpha")]
    pub alpha: f64,
    /// Build the student from the first k encoder layers of `model.path` (e.g. the teacher
    /// itself); absent: the student is `model.path` as it is.
    #[serde(default)]
    pub student_layers: Option<usize>,
}

fn default_temperature() -> f64 {
    2.0
}
fn default_alpha() -> f64 {
    0.5
}

/// `[strategy]`: which parameters change, and how fast.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct StrategySection {
    /// Freeze the embeddings (word, position, token type, LayerNorm).
    #[serde(default)]
    pub freeze_embeddings: bool,
    /// Freeze the first N encoder layers (implies nothing about the embeddings).
    #[serde(default)]
    pub freeze_layers: usize,
    /// Freeze the whole encoder: only the pooler and classifier train (linear probe).
    #[serde(default)]
    pub freeze_encoder: bool,
    /// Gradual unfreezing: epoch 1 trains only the head, each later epoch unfreezes the next
    /// layer from the top (the embeddings last); combines with the freezing options above.
    #[serde(default)]
    pub gradual_unfreeze: bool,
    /// With `freeze_encoder`: compute the frozen encoder's features once and train the head
    /// on them (default). `false` runs the encoder every step, with dropout, as HF does.
    #[serde(default = "default_true")]
    pub cache_frozen_features: bool,
    /// With `gradual_unfreeze`: unfreeze the next layer every N optimiser steps instead of
    /// every epoch. 0 = per epoch.
    #[serde(default)]
    pub unfreeze_every_steps: usize,
    /// LoRA adapters (`[strategy.lora]`): only adapters and the head train.
    #[serde(default)]
    pub lora: Option<crate::model::lora::LoraOptions>,
    /// Layer-wise learning-rate decay: a parameter at depth d from the top (head 0, top layer
    /// 1, …, embeddings L+1) trains at lr × decay^d. 1.0 = off.
    #[serde(default = "one")]
    pub layer_lr_decay: f64,
}

fn one() -> f64 {
    1.0
}

impl Default for StrategySection {
    fn default() -> Self {
        StrategySection {
            freeze_embeddings: false,
            freeze_layers: 0,
            freeze_encoder: false,
            gradual_unfreeze: false,
            cache_frozen_features: true,
            unfreeze_every_steps: 0,
            layer_lr_decay: 1.0,
            lora: None,
        }
    }
}

/// Class weights in the loss.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum ClassWeights {
    /// All classes weigh 1.
    #[default]
    None,
    /// `n / (classes × n_c)` from the training labels (scikit-learn's "balanced").
    Balanced,
}

/// `[model]`
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ModelSection {
    /// A model directory in HF layout, or a model id in the local HF hub cache.
    pub path: String,
    /// `cls` (HF BertForSequenceClassification) or `mean`.
    #[serde(default)]
    pub pooling: Pooling,
    /// Longest input in tokens; longer inputs are truncated and counted.
    #[serde(default = "default_max_length")]
    pub max_length: usize,
    /// Override of the config's hidden dropout.
    #[serde(default)]
    pub hidden_dropout: Option<f64>,
    /// Override of the config's attention dropout.
    #[serde(default)]
    pub attention_dropout: Option<f64>,
}

impl DataSection {
    /// The keys of this section (besides `train`, `validation`, `test`) whose values differ
    /// from their defaults, e.g. `["dedup", "text_column"]` — for tasks that read their
    /// files as they are and must refuse what they would otherwise ignore.
    ///
    /// # Errors
    /// The section does not serialise (a path that is not UTF-8): nothing can be compared, so
    /// nothing is let through silently.
    pub fn non_default_keys(&self) -> std::result::Result<Vec<String>, String> {
        let table = |d: &DataSection| {
            toml::Table::try_from(d).map_err(|e| format!("[data] cannot be compared: {e}"))
        };
        let default: DataSection =
            toml::from_str("train = \"\"").map_err(|e| format!("[data] defaults: {e}"))?;
        let (ours, base) = (table(self)?, table(&default)?);
        Ok(ours
            .iter()
            .filter(|(k, _)| !matches!(k.as_str(), "train" | "validation" | "test"))
            .filter(|(k, v)| base.get(*k) != Some(v))
            .map(|(k, _)| k.clone())
            .collect())
    }
}

fn default_max_length() -> usize {
    128
}

/// `[data]`
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DataSection {
    /// Training file.
    pub train: PathBuf,
    /// Validation file (evaluated every epoch; picks the best checkpoint).
    #[serde(default)]
    pub validation: Option<PathBuf>,
    /// Test file (evaluated once with the best checkpoint).
    #[serde(default)]
    pub test: Option<PathBuf>,
    /// `csv`, `tsv` or `jsonl`; by default from the file extension.
    #[serde(default)]
    pub format: Option<String>,
    /// Field delimiter for CSV/TSV (one character).
    #[serde(default)]
    pub delimiter: Option<String>,
    /// Quotes in CSV/TSV files: `auto` (default: RFC 4180 for CSV, none for TSV), `rfc4180`
    /// or `none`.
    #[serde(default)]
    pub quoting: Quoting,
    /// Whether CSV/TSV files start with a header row.
    #[serde(default = "default_true")]
    pub has_header: bool,
    /// Column with the text.
    #[serde(default = "default_text")]
    pub text_column: String,
    /// Optional second text column (sentence pairs).
    #[serde(default)]
    pub text_pair_column: Option<String>,
    /// Column with the label.
    #[serde(default = "default_label")]
    pub label_column: String,
    /// Character encoding of text files: `utf-8` (default), `latin-1`, `windows-1252`.
    #[serde(default)]
    pub encoding: TextEncoding,
    /// Undecodable bytes: `error` (default: fail naming file and line) or `replace` (U+FFFD,
    /// counted in the data report).
    #[serde(default)]
    pub on_decode_error: DecodeErrorPolicy,
    /// Label for rows whose label is empty; by default such rows are dropped (and counted),
    /// except in a multilabel task, where an empty label is the empty label set and is kept.
    #[serde(default)]
    pub fill_missing_label: Option<String>,
    /// Text cleaning (`[data.clean]`).
    #[serde(default)]
    pub clean: CleanOptions,
    /// De-identification of personal data (`[data.privacy]`).
    #[serde(default)]
    pub privacy: PrivacyOptions,
    /// De-duplication, conflicts and leakage (`[data.dedup]`).
    #[serde(default)]
    pub dedup: DedupOptions,
    /// Token-length outliers (`[data.outliers]`).
    #[serde(default)]
    pub outliers: OutlierOptions,
    /// Carve missing validation/test splits out of the training file (`[data.split]`).
    #[serde(default)]
    pub split: Option<SplitOptions>,
    /// Training-time augmentation (`[data.augment]`).
    #[serde(default)]
    pub augment: AugmentOptions,
}

/// What to do with bytes that are not valid in the file's encoding.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum DecodeErrorPolicy {
    /// Fail with the file and line.
    #[default]
    Error,
    /// Replace with U+FFFD and count the rows.
    Replace,
}

fn default_true() -> bool {
    true
}
fn default_text() -> String {
    "text".into()
}
fn default_label() -> String {
    "label".into()
}

/// Optimisers tunekit builds from burn's.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum OptimizerKind {
    /// AdamW (decoupled weight decay), as HF Trainer.
    #[default]
    Adamw,
    /// Adam with L2 weight decay added to the gradient.
    Adam,
    /// SGD with optional momentum / Nesterov.
    Sgd,
    /// RMSprop.
    Rmsprop,
}

/// Learning-rate schedules (see [`crate::schedule`]).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum SchedulerKind {
    /// Constant after warm-up.
    Constant,
    /// Linear warm-up then linear decay to 0 (HF `linear`).
    #[default]
    Linear,
    /// Linear warm-up then half-cosine decay to 0 (HF `cosine`).
    Cosine,
}

/// `[train]`
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TrainSection {
    /// Passes over the training data.
    pub epochs: usize,
    /// Examples per optimiser step (per micro-batch when accumulating).
    pub batch_size: usize,
    /// Micro-batches accumulated per optimiser step (effective batch = batch_size × this).
    pub gradient_accumulation: usize,
    /// Peak learning rate.
    pub learning_rate: f64,
    /// Weight decay (decoupled for AdamW, L2 otherwise); not applied to biases and LayerNorm.
    pub weight_decay: f64,
    /// Optimiser.
    pub optimizer: OptimizerKind,
    /// Adam/AdamW β1.
    pub beta1: f64,
    /// Adam/AdamW β2.
    pub beta2: f64,
    /// Adam/AdamW/RMSprop ε.
    pub epsilon: f64,
    /// SGD/RMSprop momentum.
    pub momentum: f64,
    /// SGD Nesterov momentum.
    pub nesterov: bool,
    /// RMSprop smoothing constant.
    pub rmsprop_alpha: f64,
    /// Learning-rate schedule.
    pub scheduler: SchedulerKind,
    /// Warm-up as a fraction of total optimiser steps (used when `warmup_steps` is 0).
    pub warmup_ratio: f64,
    /// Warm-up in optimiser steps (overrides `warmup_ratio` when > 0).
    pub warmup_steps: usize,
    /// Clip the global gradient norm to this value (0 = off).
    pub max_grad_norm: f64,
    /// Seed for data order, dropout and new head weights.
    pub seed: u64,
    /// Group training batches by length (less padding, faster); shuffled otherwise.
    pub length_bucketing: bool,
    /// Oversample minority classes in the training sampler: each epoch draws extra examples
    /// (with replacement, seeded) until every class is as frequent as the largest.
    pub oversample: bool,
    /// Also evaluate every N optimiser steps (0 = once per epoch only).
    pub eval_every_steps: usize,
    /// Stop after this many evaluations without improvement (0 = never).
    pub early_stopping_patience: usize,
    /// Validation metric that selects the best checkpoint: accuracy, macro_f1, micro_f1,
    /// weighted_f1 (higher is better) or loss (lower is better).
    pub metric: String,
    /// Write a resumable checkpoint every N optimiser steps (and at every epoch end).
    pub checkpoint_every_steps: usize,
    /// Batch size for evaluation.
    pub eval_batch_size: usize,
    /// Stop after this many optimiser steps in total (0 = no limit); for smoke tests.
    pub max_steps: usize,
    /// Label smoothing ε of the cross-entropy (0 = off).
    pub label_smoothing: f64,
    /// Class weights of the cross-entropy.
    pub class_weights: ClassWeights,
    /// Classification loss: `cross_entropy` (default) or `focal`.
    pub loss: LossKind,
    /// Focusing parameter γ of the focal loss.
    pub focal_gamma: f64,
    /// L1 penalty coefficient on the trainable weight matrices (0 = off), beside weight decay.
    pub l1: f64,
    /// Number format of the encoder's linear-layer products in training and in-run
    /// evaluation: `f32` (default) or `bf16` (bf16 operands, f32 sums, f32 master weights;
    /// AMX where the CPU has it, see `model::bf16`; on a GPU with bf16, bf16 operands of each
    /// product as PyTorch's autocast, `fused::bf16_linear`). The saved model is f32 either way.
    pub precision: crate::model::Precision,
    /// Data-parallel training over several devices (`["cuda:0", "cuda:1"]`; `--devices` on
    /// the command line overrides it). Each micro-batch of `batch_size` examples is split
    /// into one contiguous shard per device, gradients are gathered onto the first device,
    /// which holds the optimiser, runs evaluation and writes checkpoints: the global batch,
    /// schedule, accumulation and resume mean what they mean on one device. Empty (default):
    /// the one device of `--device`.
    pub devices: Vec<String>,
}

/// Classification losses.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum LossKind {
    /// Cross-entropy (with `label_smoothing` and `class_weights`).
    #[default]
    CrossEntropy,
    /// Focal loss (1 − p)^γ · CE, for hard or rare examples (with `class_weights` as α).
    Focal,
}

impl Default for TrainSection {
    fn default() -> Self {
        TrainSection {
            epochs: 3,
            batch_size: 32,
            gradient_accumulation: 1,
            learning_rate: 5e-5,
            weight_decay: 0.0,
            optimizer: OptimizerKind::Adamw,
            beta1: 0.9,
            beta2: 0.999,
            epsilon: 1e-8,
            momentum: 0.0,
            nesterov: false,
            rmsprop_alpha: 0.99,
            scheduler: SchedulerKind::Linear,
            warmup_ratio: 0.0,
            warmup_steps: 0,
            max_grad_norm: 1.0,
            seed: 42,
            length_bucketing: true,
            oversample: false,
            eval_every_steps: 0,
            early_stopping_patience: 0,
            metric: "accuracy".into(),
            checkpoint_every_steps: 200,
            eval_batch_size: 64,
            max_steps: 0,
            label_smoothing: 0.0,
            loss: LossKind::CrossEntropy,
            focal_gamma: 2.0,
            l1: 0.0,
            class_weights: ClassWeights::None,
            precision: crate::model::Precision::F32,
            devices: Vec::new(),
        }
    }
}

// `#[serde(default)]` on the struct would accept a partial [train] table; do it per field via
// a container default so that every omitted key takes the documented default above.
impl TrainSection {
    fn from_partial(table: toml::Table) -> std::result::Result<Self, String> {
        let mut full = toml::Table::try_from(TrainSection::default()).unwrap_or_default();
        for (k, v) in table {
            full.insert(k, v);
        }
        from_table(full)
    }
}

/// `[run]`
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RunSection {
    /// Run name; the run directory is `dir/name`.
    #[serde(default = "default_run_name")]
    pub name: String,
    /// Parent directory of run directories.
    #[serde(default = "default_runs_dir")]
    pub dir: PathBuf,
}

impl Default for RunSection {
    fn default() -> Self {
        RunSection {
            name: default_run_name(),
            dir: default_runs_dir(),
        }
    }
}

fn default_run_name() -> String {
    "run".into()
}
fn default_runs_dir() -> PathBuf {
    PathBuf::from("runs")
}

const METRICS: &[&str] = &[
    "accuracy",
    "macro_f1",
    "micro_f1",
    "weighted_f1",
    "loss",
    "roc_auc",
    "pr_auc",
];

/// Apply one `section.key=value` override to a parsed TOML table. The value is parsed as a
/// TOML value (number, bool, string, array), falling back to a plain string.
pub fn apply_override(table: &mut toml::Table, assignment: &str) -> Result<()> {
    let (key, raw) = assignment
        .split_once('=')
        .ok_or_else(|| Error::Config(format!("--set {assignment}: expected section.key=value")))?;
    let key = key.trim();
    let parts: Vec<&str> = key.split('.').collect();
    if parts.len() < 2 || parts.iter().any(|p| p.is_empty()) {
        return Err(Error::Config(format!(
            "--set {assignment}: key must be section.key or section.table.key (e.g. train.epochs, data.dedup.near)"
        )));
    }
    let raw = raw.trim();
    let value = format!("v = {raw}")
        .parse::<toml::Table>()
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_string()));
    let (last, path) = parts.split_last().unwrap_or((&"", &[]));
    let mut table = table;
    for (depth, part) in path.iter().enumerate() {
        let entry = table
            .entry(part.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        table = match entry {
            toml::Value::Table(t) => t,
            _ => {
                return Err(Error::Config(format!(
                    "--set {assignment}: `{}` is not a table",
                    parts[..=depth].join(".")
                )));
            }
        };
    }
    table.insert(last.to_string(), value);
    Ok(())
}

impl RunConfig {
    /// Parse `path`, apply overrides, validate. Errors name the file and the key.
    pub fn load(path: &Path, overrides: &[String]) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Self::parse(&text, &path.display().to_string(), overrides)
    }

    /// Parse TOML text (`origin` names it in errors).
    pub fn parse(text: &str, origin: &str, overrides: &[String]) -> Result<Self> {
        let mut table: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| Error::Config(format!("{origin}: {e}")))?;
        for o in overrides {
            apply_override(&mut table, o)?;
        }
        if table.contains_key("search") {
            return Err(Error::Config(format!(
                "{origin}: has a [search] section: run `tunekit search {origin}`, or remove the section to train once"
            )));
        }
        let mut metric_given = false;
        let train = match table.remove("train") {
            None => TrainSection::default(),
            Some(toml::Value::Table(t)) => {
                metric_given = t.contains_key("metric");
                TrainSection::from_partial(t)
                    .map_err(|e| Error::Config(format!("{origin}: [train] {e}")))?
            }
            Some(_) => return Err(Error::Config(format!("{origin}: `train` must be a table"))),
        };
        let mut config: RunConfig =
            from_table(table).map_err(|e| Error::Config(format!("{origin}: {e}")))?;
        config.train = train;
        if !metric_given {
            // Each task selects checkpoints by its own headline metric unless told otherwise.
            config.train.metric = config.task.kind.default_metric().to_string();
        }
        config
            .validate()
            .map_err(|m| Error::Config(format!("{origin}: {m}")))?;
        Ok(config)
    }

    fn validate(&self) -> std::result::Result<(), String> {
        if let Some(dp) = &self.privacy.dp {
            dp.validate()?;
            let refused = crate::dp::refusals(self);
            if !refused.is_empty() {
                return Err(format!(
                    "[privacy.dp] (differential privacy) refuses: {}",
                    refused.join("; ")
                ));
            }
        }
        let t = &self.train;
        let positive = [
            ("train.epochs", t.epochs),
            ("train.batch_size", t.batch_size),
            ("train.gradient_accumulation", t.gradient_accumulation),
            ("train.eval_batch_size", t.eval_batch_size),
            ("model.max_length", self.model.max_length),
        ];
        for (k, v) in positive {
            if v == 0 {
                return Err(format!("{k} must be at least 1"));
            }
        }
        if !(t.learning_rate > 0.0 && t.learning_rate.is_finite()) {
            return Err(format!(
                "train.learning_rate must be positive, got {}",
                t.learning_rate
            ));
        }
        if !(0.0..1.0).contains(&t.warmup_ratio) {
            return Err(format!(
                "train.warmup_ratio must be in [0, 1), got {}",
                t.warmup_ratio
            ));
        }
        if t.weight_decay < 0.0 || t.max_grad_norm < 0.0 {
            return Err("train.weight_decay and train.max_grad_norm must be >= 0".into());
        }
        if !(0.0..1.0).contains(&t.label_smoothing) {
            return Err(format!(
                "train.label_smoothing must be in [0, 1), got {}",
                t.label_smoothing
            ));
        }
        if !t.devices.is_empty() {
            let kinds = t
                .devices
                .iter()
                .map(|d| d.parse::<crate::device::DeviceKind>())
                .collect::<crate::error::Result<Vec<_>>>()
                .and_then(|k| crate::device::check_devices(&k).map(|()| k))
                .map_err(|e| format!("train.devices: {e}"))?;
            if let Some(k) = kinds.iter().find(|k| !k.is_built()) {
                return Err(format!(
                    "train.devices: `{k}` needs a tunekit built with `--features {}`",
                    k.feature().unwrap_or("?")
                ));
            }
            let several = kinds.len() > 1;
            if several && self.task.kind == crate::task::TaskKind::Embedding {
                return Err(
                    "train.devices: the embedding task's loss compares the examples of \
                            a batch with each other (in-batch negatives), so a batch cannot be \
                            split over devices"
                        .into(),
                );
            }
            if several && self.distill.is_some() {
                return Err(
                    "train.devices: distillation keeps the teacher's logits on one \
                            device; train the student on one device"
                        .into(),
                );
            }
            if several && self.strategy.freeze_encoder && self.strategy.cache_frozen_features {
                return Err(
                    "train.devices: a linear probe on cached features keeps them on \
                            one device; set strategy.cache_frozen_features = false or use one \
                            device"
                        .into(),
                );
            }
            if several && self.privacy.dp.is_some() {
                return Err(
                    "train.devices: differentially private training runs on one device \
                            (its per-example clipping is not split over devices yet)"
                        .into(),
                );
            }
        }
        if t.loss == LossKind::Focal && t.label_smoothing > 0.0 {
            return Err(
                "train.label_smoothing does not combine with train.loss = \"focal\"".into(),
            );
        }
        if !(t.focal_gamma >= 0.0 && t.focal_gamma.is_finite() && t.l1 >= 0.0 && t.l1.is_finite()) {
            return Err(format!(
                "train.focal_gamma and train.l1 must be >= 0, got {} and {}",
                t.focal_gamma, t.l1
            ));
        }
        if let Some(d) = &self.distill {
            if !(d.temperature > 0.0 && d.temperature.is_finite()) {
                return Err(format!(
                    "distill.temperature must be positive, got {}",
                    d.temperature
                ));
            }
            if !(0.0..=1.0).contains(&d.alpha) {
                return Err(format!("distill.alpha must be in [0, 1], got {}", d.alpha));
            }
            if d.student_layers == Some(0) {
                return Err("distill.student_layers must be at least 1".into());
            }
            if self.data.augment.enabled() {
                return Err("distill: the teacher's logits are computed once, on the unaugmented training texts; turn data.augment off".into());
            }
        }
        let st = &self.strategy;
        if let Some(lora) = &st.lora {
            lora.validate()?;
            if st.freeze_embeddings
                || st.freeze_layers > 0
                || st.freeze_encoder
                || st.gradual_unfreeze
                || st.layer_lr_decay != 1.0
            {
                return Err("strategy.lora trains adapters and the head only: it does not combine with freeze_*, gradual_unfreeze or layer_lr_decay".into());
            }
        }
        if !(st.layer_lr_decay > 0.0 && st.layer_lr_decay <= 1.0) {
            return Err(format!(
                "strategy.layer_lr_decay must be in (0, 1], got {}",
                st.layer_lr_decay
            ));
        }
        self.task.validate(self)?;
        if self.task.kind.is_classification() && !METRICS.contains(&t.metric.as_str()) {
            return Err(format!(
                "train.metric `{}` is not one of {}",
                t.metric,
                METRICS.join(", ")
            ));
        }
        for (k, p) in [
            ("model.hidden_dropout", self.model.hidden_dropout),
            ("model.attention_dropout", self.model.attention_dropout),
        ] {
            if let Some(p) = p
                && !(0.0..1.0).contains(&p)
            {
                return Err(format!("{k} must be in [0, 1), got {p}"));
            }
        }
        if let Some(d) = &self.data.delimiter
            && d.len() != 1
        {
            return Err(format!(
                "data.delimiter must be one ASCII character, got {d:?}"
            ));
        }
        let conll = self.task.kind == crate::task::TaskKind::TokenClassification;
        if let Some(f) = &self.data.format
            && parse_format(f).is_none()
            && !(conll && f == "conll")
        {
            return Err(format!(
                "data.format `{f}` is not one of csv, tsv, jsonl, parquet"
            ));
        }
        let dd = &self.data.dedup;
        if !(dd.near_threshold > 0.0 && dd.near_threshold <= 1.0) {
            return Err(format!(
                "data.dedup.near_threshold must be in (0, 1], got {}",
                dd.near_threshold
            ));
        }
        let o = &self.data.outliers;
        for (k, p) in [
            ("drop_below_percentile", o.drop_below_percentile),
            ("drop_above_percentile", o.drop_above_percentile),
        ] {
            if let Some(p) = p
                && !(0.0..=100.0).contains(&p)
            {
                return Err(format!("data.outliers.{k} must be in [0, 100], got {p}"));
            }
        }
        self.data.augment.validate()?;
        if self.run.name.is_empty() || self.run.name.contains(['/', '\\']) {
            return Err(format!(
                "run.name `{}` must be a plain directory name",
                self.run.name
            ));
        }
        Ok(())
    }

    /// Whether a larger value of the selection metric is better.
    pub fn metric_higher_is_better(&self) -> bool {
        crate::task::higher_is_better(&self.train.metric)
    }

    /// The reader spec for one data file.
    pub fn data_spec(&self, path: &Path, labelled: bool) -> DataSpec {
        DataSpec {
            path: path.to_path_buf(),
            format: self.data.format.as_deref().and_then(parse_format),
            delimiter: self.data.delimiter.as_ref().map(|d| d.as_bytes()[0]),
            quoting: self.data.quoting,
            has_header: self.data.has_header,
            text_column: self.data.text_column.clone(),
            text_pair_column: self.data.text_pair_column.clone(),
            // Embedding pairs carry no label: the positive text is the target.
            label_column: (labelled && self.task.kind != crate::task::TaskKind::Embedding)
                .then(|| self.data.label_column.clone()),
            encoding: self.data.encoding,
            replace_invalid: self.data.on_decode_error == DecodeErrorPolicy::Replace,
            // Multilabel: an empty label cell is the empty label set ("none of these"), a
            // legitimate example that is kept, trained on and scored.
            fill_label: self.data.fill_missing_label.clone().or_else(|| {
                (labelled && self.task.kind == crate::task::TaskKind::Multilabel).then(String::new)
            }),
        }
    }

    /// The resolved configuration as TOML (written to the run directory).
    pub fn to_toml(&self) -> Result<String> {
        toml::to_string_pretty(self).map_err(|e| Error::Config(format!("serialising config: {e}")))
    }
}

/// Deserialize a table, naming the offending key path in errors (`train.epochs: invalid
/// type ...`), which plain serde errors do not.
fn from_table<T: serde::de::DeserializeOwned>(
    table: toml::Table,
) -> std::result::Result<T, String> {
    serde_path_to_error::deserialize(toml::Value::Table(table)).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path.is_empty() || path == "." {
            inner.message().to_string()
        } else {
            format!("key `{path}`: {}", inner.message())
        }
    })
}

/// `csv` / `tsv` / `jsonl` → [`Format`].
pub fn parse_format(name: &str) -> Option<Format> {
    match name.to_ascii_lowercase().as_str() {
        "csv" => Some(Format::Csv),
        "tsv" => Some(Format::Tsv),
        "jsonl" | "ndjson" => Some(Format::Jsonl),
        "parquet" => Some(Format::Parquet),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = "[model]\npath = \"m\"\n[data]\ntrain = \"t.tsv\"\n";

    #[test]
    fn omitted_train_keys_take_defaults() {
        let c =
            RunConfig::parse(&format!("{MINIMAL}[train]\nepochs = 5\n"), "x.toml", &[]).unwrap();
        assert_eq!(c.train.epochs, 5);
        assert_eq!(c.train.batch_size, 32);
        assert_eq!(c.model.max_length, 128);
    }

    #[test]
    fn unknown_key_is_named() {
        let err = RunConfig::parse(&format!("{MINIMAL}[train]\nepochz = 5\n"), "x.toml", &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("x.toml") && err.contains("epochz"), "{err}");
        let err = RunConfig::parse(&format!("{MINIMAL}[model]\n"), "x.toml", &[]).unwrap_err();
        assert!(err.to_string().contains("x.toml"), "{err}");
    }

    #[test]
    fn precision_is_f32_unless_asked_and_unknown_formats_are_named() {
        let c = RunConfig::parse(MINIMAL, "x.toml", &[]).unwrap();
        assert_eq!(c.train.precision, crate::model::Precision::F32);
        let c = RunConfig::parse(
            &format!("{MINIMAL}[train]\nprecision = \"bf16\"\n"),
            "x.toml",
            &[],
        )
        .unwrap();
        assert_eq!(c.train.precision, crate::model::Precision::Bf16);
        let err = RunConfig::parse(
            &format!("{MINIMAL}[train]\nprecision = \"fp8\"\n"),
            "x.toml",
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("precision") && err.contains("fp8"), "{err}");
    }

    #[test]
    fn wrong_type_is_named() {
        let err = RunConfig::parse(
            &format!("{MINIMAL}[train]\nepochs = \"three\"\n"),
            "x.toml",
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("epochs"), "{err}");
    }

    #[test]
    fn overrides_apply_and_are_validated() {
        let c = RunConfig::parse(
            MINIMAL,
            "x.toml",
            &[
                "train.learning_rate=1e-3".into(),
                "run.name=abc".into(),
                "model.pooling=mean".into(),
            ],
        )
        .unwrap();
        assert_eq!(c.train.learning_rate, 1e-3);
        assert_eq!(c.run.name, "abc");
        assert_eq!(c.model.pooling, Pooling::Mean);
        let err = RunConfig::parse(MINIMAL, "x.toml", &["train.nope=1".into()]).unwrap_err();
        assert!(err.to_string().contains("nope"), "{err}");
        let err = RunConfig::parse(MINIMAL, "x.toml", &["train.epochs=0".into()]).unwrap_err();
        assert!(err.to_string().contains("train.epochs"), "{err}");
    }

    #[test]
    fn resolved_config_round_trips() {
        let c = RunConfig::parse(MINIMAL, "x.toml", &[]).unwrap();
        let again = RunConfig::parse(&c.to_toml().unwrap(), "resolved.toml", &[]).unwrap();
        assert_eq!(c, again);
    }
}
