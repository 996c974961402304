//! Tasks beyond single-label classification: what the encoder is trained to output and
//! against which objective (`[task] type = ...`).
//!
//! | type | head | loss | selection metrics |
//! |---|---|---|---|
//! | `classification`, `pair_classification` | pooled → classes | cross-entropy / focal | accuracy, F1 … ([`crate::train`]) |
//! | `multilabel` | pooled → one logit per label | BCE | micro/macro F1 with per-label thresholds tuned on validation |
//! | `regression` | pooled → one value | MSE | MSE, MAE, R², Pearson, Spearman |
//! | `token_classification` | every token → tags | cross-entropy on first word pieces | entity P/R/F1 (seqeval) |
//! | `embedding` | pooled, L2-normalised | in-batch-negatives contrastive | MRR, recall@1 |
//!
//! All of them train the same [`SequenceClassifier`](crate::model::SequenceClassifier) (an
//! embedding model simply has no head in use), so freezing, layer-wise LR decay, gradual
//! unfreezing, LoRA, checkpoints and resume are shared with classification; only targets, the
//! head's use, the loss and the metrics differ. Classification keeps its own loop in
//! [`crate::train`] (reports, calibration, drift, distillation are built on its metrics);
//! the other tasks run [`run::train_in`].

pub(crate) mod causal_lm;
pub mod classification;
pub mod embedding;
pub mod multilabel;
pub mod ner;
pub mod predict;
pub mod regression;
pub mod run;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// What is trained (`[task] type`).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum TaskKind {
    /// One label per text (or text pair, when `data.text_pair_column` is set).
    #[default]
    Classification,
    /// One label per pair of texts, encoded together with token type ids.
    PairClassification,
    /// Any number of labels per text.
    Multilabel,
    /// One real number per text (or pair).
    Regression,
    /// One tag per word (NER), from CoNLL column files.
    TokenClassification,
    /// Sentence embeddings from (anchor, positive) pairs.
    Embedding,
    /// Supervised fine-tuning of a decoder language model (next-token prediction) on chat
    /// `messages` or `prompt`/`completion` records ([`crate::llm::sft`]).
    CausalLm,
}

impl TaskKind {
    /// Whether the classification loop of [`crate::train`] runs it.
    pub fn is_classification(self) -> bool {
        matches!(
            self,
            TaskKind::Classification | TaskKind::PairClassification
        )
    }

    /// Names `train.metric` may take for this task.
    pub fn metrics(self) -> &'static [&'static str] {
        match self {
            TaskKind::Classification | TaskKind::PairClassification => &[],
            TaskKind::Multilabel => &[
                "micro_f1",
                "macro_f1",
                "samples_f1",
                "subset_accuracy",
                "hamming_loss",
                "micro_f1_at_0_5",
                "loss",
            ],
            TaskKind::Regression => &["mse", "rmse", "mae", "r2", "pearson", "spearman", "loss"],
            TaskKind::TokenClassification => {
                &["f1", "precision", "recall", "token_accuracy", "loss"]
            }
            TaskKind::Embedding => &["mrr", "recall_at_1", "recall_at_5", "loss"],
            TaskKind::CausalLm => &["loss", "perplexity", "token_accuracy"],
        }
    }

    /// The selection metric when `train.metric` is not given.
    pub fn default_metric(self) -> &'static str {
        match self {
            TaskKind::Classification | TaskKind::PairClassification => "accuracy",
            TaskKind::Multilabel => "micro_f1",
            TaskKind::Regression => "mse",
            TaskKind::TokenClassification => "f1",
            TaskKind::Embedding => "mrr",
            TaskKind::CausalLm => "loss",
        }
    }

    /// The HF architecture (of the model's `family`) and `problem_type` written to an exported
    /// `config.json`.
    pub fn hf_architecture(
        self,
        family: crate::model::Family,
    ) -> (&'static str, Option<&'static str>) {
        let [base, sequence, token] = family.names().classes;
        match self {
            TaskKind::Classification | TaskKind::PairClassification => {
                (sequence, Some("single_label_classification"))
            }
            TaskKind::Multilabel => (sequence, Some("multi_label_classification")),
            TaskKind::Regression => (sequence, Some("regression")),
            TaskKind::TokenClassification => (token, None),
            TaskKind::Embedding | TaskKind::CausalLm => (base, None),
        }
    }

    /// The head a model of this task has on its encoder.
    pub fn head(self) -> crate::model::weights::HeadKind {
        match self {
            TaskKind::TokenClassification => crate::model::weights::HeadKind::Token,
            _ => crate::model::weights::HeadKind::Sequence,
        }
    }
}

/// Whether a larger value of `metric` is better.
pub fn higher_is_better(metric: &str) -> bool {
    !matches!(
        metric,
        "loss" | "mse" | "rmse" | "mae" | "hamming_loss" | "perplexity"
    )
}

/// Tag encoding of token-classification data.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum TagScheme {
    /// BIOES if any tag starts with `E-` or `S-`, else BIO.
    #[default]
    Auto,
    /// `B-`, `I-`, `O` (IOB2).
    Bio,
    /// `B-`, `I-`, `E-`, `S-`, `O`.
    Bioes,
}

/// `[task]`: the task and its options.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TaskSection {
    /// What is trained.
    #[serde(rename = "type")]
    pub kind: TaskKind,
    /// `multilabel`: separator between labels in the label column (`"a,b"`; empty = none).
    pub label_separator: String,
    /// `multilabel`: decision threshold; `None` tunes one per label on validation (F1).
    pub threshold: Option<f64>,
    /// `token_classification`: the tag scheme (`auto` detects it from the training tags).
    pub scheme: TagScheme,
    /// `embedding`: scale of the cosine similarities in the contrastive loss
    /// (sentence-transformers' `MultipleNegativesRankingLoss` uses 20).
    pub contrastive_scale: f64,
    /// `causal_lm`: the loss on completions / assistant turns only (TRL's
    /// `completion_only_loss`; for `messages` records its `assistant_only_loss`); `false`
    /// trains on every token.
    pub completion_only_loss: bool,
    /// `causal_lm`: render records with the model's chat template when it has one; `false`
    /// concatenates prompt and completion and appends eos.
    pub chat_template: bool,
    /// `causal_lm`: the exported model answers every validation and test record's prompt by
    /// greedy decoding with at most this many new tokens, scored by exact match with the
    /// record's answer (`exact_match`); 0 turns it off.
    pub generate_max_new_tokens: usize,
}

impl Default for TaskSection {
    fn default() -> Self {
        TaskSection {
            kind: TaskKind::Classification,
            label_separator: ",".into(),
            threshold: None,
            scheme: TagScheme::Auto,
            contrastive_scale: 20.0,
            completion_only_loss: true,
            chat_template: true,
            generate_max_new_tokens: 32,
        }
    }
}

impl TaskSection {
    /// Check the options against the rest of the config, naming the key.
    pub fn validate(&self, config: &crate::config::RunConfig) -> std::result::Result<(), String> {
        let kind = self.kind;
        if let Some(t) = self.threshold
            && !(t > 0.0 && t < 1.0)
        {
            return Err(format!("task.threshold must be in (0, 1), got {t}"));
        }
        if !(self.contrastive_scale > 0.0 && self.contrastive_scale.is_finite()) {
            return Err(format!(
                "task.contrastive_scale must be positive, got {}",
                self.contrastive_scale
            ));
        }
        if matches!(kind, TaskKind::PairClassification | TaskKind::Embedding)
            && config.data.text_pair_column.is_none()
        {
            return Err(format!(
                "task.type = \"{}\" needs data.text_pair_column (the second text of each pair)",
                kind_name(kind)
            ));
        }
        let default = TaskSection::default();
        let lm_options = [
            (
                self.completion_only_loss != default.completion_only_loss,
                "task.completion_only_loss",
            ),
            (
                self.chat_template != default.chat_template,
                "task.chat_template",
            ),
            (
                self.generate_max_new_tokens != default.generate_max_new_tokens,
                "task.generate_max_new_tokens",
            ),
        ];
        if kind != TaskKind::CausalLm
            && let Some((_, key)) = lm_options.iter().find(|(set, _)| *set)
        {
            return Err(format!(
                "{key} applies to task.type = \"causal_lm\" only, not to \"{}\"",
                kind_name(kind)
            ));
        }
        if kind.is_classification() {
            return Ok(());
        }
        if kind == TaskKind::CausalLm {
            let others = [
                (self.threshold.is_some(), "task.threshold"),
                (self.scheme != default.scheme, "task.scheme"),
                (
                    self.contrastive_scale != default.contrastive_scale,
                    "task.contrastive_scale",
                ),
                (
                    self.label_separator != default.label_separator,
                    "task.label_separator",
                ),
            ];
            if let Some((_, key)) = others.iter().find(|(set, _)| *set) {
                return Err(format!("{key} does not apply to task.type = \"causal_lm\""));
            }
            // Records are used as read: cleaning, de-identification, de-duplication,
            // splitting and the table options would be ignored, so they are refused.
            let data = config.data.non_default_keys()?;
            if let Some(key) = data.first() {
                return Err(format!(
                    "data.{key} does not apply to task.type = \"causal_lm\" (records are JSON lines used as read: give data.train, data.validation, data.test)"
                ));
            }
            let st = &config.strategy;
            let m = &config.model;
            let refused = [
                (st.freeze_embeddings, "strategy.freeze_embeddings"),
                (st.freeze_layers > 0, "strategy.freeze_layers"),
                (st.freeze_encoder, "strategy.freeze_encoder"),
                (st.gradual_unfreeze, "strategy.gradual_unfreeze"),
                (st.layer_lr_decay != 1.0, "strategy.layer_lr_decay"),
                (
                    st.lora.as_ref().is_some_and(|l| l.dropout > 0.0),
                    "strategy.lora.dropout (not implemented for decoders yet)",
                ),
                (
                    config.train.precision != crate::model::Precision::F32,
                    "train.precision other than f32 (not implemented for decoders yet)",
                ),
                (
                    config.privacy.dp.is_some(),
                    "[privacy.dp] (not validated for decoders yet)",
                ),
                (
                    m.hidden_dropout.is_some() || m.attention_dropout.is_some(),
                    "model.hidden_dropout / model.attention_dropout (llama decoders have none)",
                ),
                (
                    m.pooling != crate::model::Pooling::default(),
                    "model.pooling (a decoder predicts every next token)",
                ),
                (
                    config.data.text_pair_column.is_some(),
                    "data.text_pair_column (records are JSON lines with messages or prompt/completion)",
                ),
            ];
            if let Some((_, key)) = refused.iter().find(|(set, _)| *set) {
                return Err(format!("{key} does not apply to task.type = \"causal_lm\""));
            }
        }
        if !kind.metrics().contains(&config.train.metric.as_str()) {
            return Err(format!(
                "train.metric `{}` is not a {} metric; use one of {}",
                config.train.metric,
                kind_name(kind),
                kind.metrics().join(", ")
            ));
        }
        let t = &config.train;
        let unsupported = [
            (config.distill.is_some(), "[distill]"),
            (t.oversample, "train.oversample"),
            (
                t.class_weights != crate::config::ClassWeights::None,
                "train.class_weights",
            ),
            (t.label_smoothing > 0.0, "train.label_smoothing"),
            (
                t.loss != crate::config::LossKind::CrossEntropy,
                "train.loss = \"focal\"",
            ),
            (config.data.augment.enabled(), "data.augment"),
        ];
        for (set, key) in unsupported {
            if set {
                return Err(format!(
                    "{key} applies to classification only, not to task.type = \"{}\"",
                    kind_name(kind)
                ));
            }
        }
        Ok(())
    }
}

/// The config spelling of a task.
pub fn kind_name(kind: TaskKind) -> &'static str {
    match kind {
        TaskKind::Classification => "classification",
        TaskKind::PairClassification => "pair_classification",
        TaskKind::Multilabel => "multilabel",
        TaskKind::Regression => "regression",
        TaskKind::TokenClassification => "token_classification",
        TaskKind::Embedding => "embedding",
        TaskKind::CausalLm => "causal_lm",
    }
}

/// What an exported model of a non-classification task needs at inference
/// (`tunekit.json` → `task`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TaskMeta {
    /// The task.
    #[serde(rename = "type")]
    pub kind: TaskKind,
    /// `multilabel`: the decision threshold per label, in label order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub thresholds: Vec<f64>,
    /// `multilabel`: separator of labels in data files.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub label_separator: String,
    /// `token_classification`: the tag scheme the tags follow.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheme: Option<TagScheme>,
    /// `embedding`: the similarity scale of the contrastive loss (for its evaluation loss).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contrastive_scale: Option<f64>,
}

/// Named scores of one evaluation (`metrics.jsonl`, `metrics.json`), e.g. `mse`, `f1`.
pub type Scores = BTreeMap<String, f64>;
