//! The encoder architectures tunekit loads (Hugging Face `model_type`), and for the BERT-shaped
//! ones the table of what differs between them: tensor names, position ids, token types, the
//! embedding projection, the relative attention bias and the classification head.
//!
//! RoBERTa, XLM-RoBERTa, DistilBERT, ELECTRA and MPNet are BERT's post-LayerNorm transformer
//! with the same six linear modules per layer, the same LayerNorms and the same GELU: one set of
//! modules ([`super::bert`]) runs them all, and each family's file (`model/roberta.rs`, …) owns
//! only what is its own, in a [`Names`] table. To add another BERT-shaped family, write its
//! table in one file and add it to [`Family`]; an encoder with another block (DeBERTa's
//! disentangled attention, ModernBERT's pre-norm GeGLU) is its own folder behind
//! [`super::Backbone`] and a variant of [`super::Encoder`].

use serde::{Deserialize, Serialize};

use super::backbone::LinearRole;

/// A BERT-shaped encoder family (HF `model_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Family {
    /// `bert` (also MiniLM, BGE, E5 and other BERT checkpoints).
    Bert,
    /// `roberta`.
    Roberta,
    /// `xlm-roberta`.
    XlmRoberta,
    /// `distilbert`.
    DistilBert,
    /// `electra` (the discriminator).
    Electra,
    /// `mpnet`.
    MPNet,
    /// `deberta-v2` (DeBERTa-v2 and DeBERTa-v3 checkpoints): its own network
    /// ([`super::deberta_v2`]), this table for its names.
    DebertaV2,
    /// `modernbert`: its own network ([`super::modernbert`]); the table gives its names.
    ModernBert,
}

impl Family {
    /// Every family, in the order `models inspect` and errors list them.
    pub const ALL: [Family; 8] = [
        Family::Bert,
        Family::Roberta,
        Family::XlmRoberta,
        Family::DistilBert,
        Family::Electra,
        Family::MPNet,
        Family::DebertaV2,
        Family::ModernBert,
    ];

    /// The family of a `model_type`, if tunekit runs it with the BERT-shaped modules.
    pub fn from_model_type(model_type: &str) -> Option<Family> {
        Family::ALL
            .into_iter()
            .find(|f| f.names().model_type == model_type)
    }

    /// The family's table of names and differences.
    pub fn names(self) -> &'static Names {
        match self {
            Family::Bert => &super::bert::names::NAMES,
            Family::Roberta => &super::roberta::NAMES,
            Family::XlmRoberta => &super::xlm_roberta::NAMES,
            Family::DistilBert => &super::distilbert::NAMES,
            Family::Electra => &super::electra::NAMES,
            Family::MPNet => &super::mpnet::NAMES,
            Family::DebertaV2 => &super::deberta_v2::names::NAMES,
            Family::ModernBert => &super::modernbert::NAMES,
        }
    }

    /// HF `model_type`.
    pub fn model_type(self) -> &'static str {
        self.names().model_type
    }
}

/// How position ids are made from a padded batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Positions {
    /// `0, 1, …, seq-1` for every row (BERT, DistilBERT, ELECTRA).
    Absolute,
    /// RoBERTa's `create_position_ids_from_input_ids`: real tokens count up from
    /// `padding_idx + 1`, padding tokens get `padding_idx` (RoBERTa, XLM-R, MPNet).
    AfterPadding,
}

/// Activation of the dense layer of a sequence-classification head.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum HeadActivation {
    /// `tanh` (BERT's pooler, RoBERTa's and MPNet's classification heads).
    #[default]
    Tanh,
    /// Exact GELU (ELECTRA's classification head).
    Gelu,
    /// ReLU (DistilBERT's `pre_classifier`).
    Relu,
}

/// A family's sequence-classification head: `[CLS]` (token 0) → dense → activation → dropout
/// → output linear.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SequenceHead {
    /// The dense layer's module name (`pooler.dense`, `classifier.dense`, `pre_classifier`).
    pub dense: &'static str,
    /// Whether the dense layer belongs to the base model (BERT's pooler, under the family
    /// prefix) rather than to the head.
    pub dense_in_base: bool,
    /// Its activation.
    pub activation: HeadActivation,
    /// Whether the head applies dropout to the token-0 state before the dense layer too
    /// (RoBERTa's `classifier.dense` path; BERT's pooler has none there).
    pub dropout_before_dense: bool,
    /// The output linear's module name (`classifier`, `classifier.out_proj`).
    pub out: &'static str,
    /// LayerNorm after the activation, if the head has one (ModernBERT's `head.norm`).
    pub norm: Option<&'static str>,
    /// Whether dense → activation (→ norm) is a prediction head that runs on whatever the
    /// head reads: the masked mean as well as token 0, and every token in token
    /// classification (ModernBERT's `ModernBertPredictionHead`). Otherwise it is a pooler that
    /// runs on token 0 only (mean pooling and token heads feed the output linear directly).
    pub prediction_head: bool,
}

/// Everything that differs between BERT-shaped families, as one table (HF module names are
/// relative to the base model; tensors add `.weight` / `.bias`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Names {
    /// HF `model_type`.
    pub model_type: &'static str,
    /// Prefix of the base model's tensors inside a task model (`bert.`, `roberta.`).
    pub prefix: &'static str,
    /// HF class names: base model, sequence classification, token classification.
    pub classes: [&'static str; 3],
    /// Word-embedding table.
    pub word_embeddings: &'static str,
    /// Absolute position-embedding table.
    pub position_embeddings: &'static str,
    /// Segment (token type) table, if the family has one.
    pub token_type_embeddings: Option<&'static str>,
    /// LayerNorm after the embeddings.
    pub embeddings_layer_norm: &'static str,
    /// ELECTRA's `embeddings_project` (embedding size → hidden size), when the sizes differ.
    pub embeddings_project: Option<&'static str>,
    /// MPNet's relative position bias table `[buckets, heads]`, shared by every layer.
    pub relative_attention_bias: Option<&'static str>,
    /// How position ids are made.
    pub positions: Positions,
    /// Prefix of the layers (`encoder.layer`; layer `i` is `{layers}.{i}`).
    pub layers: &'static str,
    /// Module names of the six linear roles under a layer, in [`LinearRole::ALL`] order.
    pub linears: [&'static str; 6],
    /// LayerNorm of the attention block, under a layer.
    pub attention_layer_norm: &'static str,
    /// LayerNorm of the feed-forward block, under a layer.
    pub output_layer_norm: &'static str,
    /// The base model's pooler, if the family has one (`pooler.dense`).
    pub pooler: Option<&'static str>,
    /// The sequence-classification head.
    pub sequence_head: SequenceHead,
    /// PEFT's default LoRA targets (`target_modules`) for the family.
    pub lora_targets: [&'static str; 2],
    /// `config.json` keys that the family spells differently from BERT (its key, BERT's key):
    /// read as BERT's, written back as the family's.
    pub config_aliases: &'static [(&'static str, &'static str)],
    /// Module names (prefixes) of other encoder-level tensors shared by every layer, counted
    /// with the embeddings by [`Self::depth_of`] and [`Self::is_embedding`] (DeBERTa's
    /// `encoder.rel_embeddings`, `encoder.LayerNorm`, `encoder.conv`); empty for BERT.
    pub shared: &'static [&'static str],
}

impl Names {
    /// `{layers}.{i}`: HF's prefix of layer `i`.
    pub fn layer_prefix(&self, i: usize) -> String {
        format!("{}.{i}", self.layers)
    }

    /// Module name of a linear role under [`Self::layer_prefix`].
    pub fn linear_module(&self, role: LinearRole) -> &'static str {
        self.linears[role.index()]
    }

    /// Full module name (without the prefix) of layer `i`'s linear with `role`.
    pub fn linear(&self, i: usize, role: LinearRole) -> String {
        format!("{}.{}", self.layer_prefix(i), self.linear_module(role))
    }

    /// Depth of an encoder tensor (HF name without the prefix) counted from the top of the
    /// network: the head and pooler are 0, the top layer 1, …, the embeddings (and MPNet's
    /// shared relative bias, the [`Self::shared`] tensors) `layers + 1`.
    pub fn depth_of(&self, name: &str, layers: usize) -> usize {
        let layer_prefix = format!("{}.", self.layers);
        if self.is_embedding(name) {
            layers + 1
        } else if let Some(rest) = name.strip_prefix(&layer_prefix) {
            let i: usize = rest
                .split('.')
                .next()
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
            layers.saturating_sub(i)
        } else {
            0
        }
    }

    /// The family's `config.json` key for BERT's key `bert_key` (DistilBERT's `hidden_dim`
    /// for `intermediate_size`, …; BERT's own key otherwise).
    pub fn config_key(&self, bert_key: &'static str) -> &'static str {
        self.config_aliases
            .iter()
            .find(|(_, ours)| *ours == bert_key)
            .map_or(bert_key, |(theirs, _)| theirs)
    }

    /// Whether `name` (without the prefix) is an embedding tensor (frozen by
    /// `freeze_embeddings`): the tables, their LayerNorm and projection, MPNet's shared bias,
    /// the [`Self::shared`] tensors.
    pub fn is_embedding(&self, name: &str) -> bool {
        name.starts_with("embeddings")
            || self
                .relative_attention_bias
                .is_some_and(|r| name.starts_with(r))
            || self
                .shared
                .iter()
                .any(|s| name == *s || name.starts_with(&format!("{s}.")))
    }
}
