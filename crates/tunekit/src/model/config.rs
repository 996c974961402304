//! The Hugging Face `config.json` of an encoder, read and validated once. Every family's keys
//! are read as BERT's (DistilBERT's `dim`, `n_layers`, … through its
//! [`Names::config_aliases`](super::family::Names::config_aliases)) and written back in the
//! family's own spelling by [`BertConfig::to_json`].

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::family::{Family, Positions};
use crate::error::{Error, Result};

/// Architectures whose weights and forward pass tunekit implements. `model_type` values outside
/// this list are rejected when loading instead of producing silently wrong numbers.
pub const SUPPORTED_MODEL_TYPES: &[&str] = &[
    "bert",
    "roberta",
    "xlm-roberta",
    "distilbert",
    "electra",
    "mpnet",
    "deberta-v2",
    "modernbert",
];

/// The fields of a HF BERT `config.json` that determine the network. Unknown keys are kept in
/// `extra` so that an exported config round-trips everything the user's model carried.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct BertConfig {
    /// HF `model_type` (`bert`).
    pub model_type: String,
    /// Vocabulary size (rows of the word embedding).
    pub vocab_size: usize,
    /// Width of the hidden states.
    pub hidden_size: usize,
    /// Number of transformer layers.
    pub num_hidden_layers: usize,
    /// Number of attention heads per layer.
    pub num_attention_heads: usize,
    /// Width of the feed-forward layer.
    pub intermediate_size: usize,
    /// Activation of the feed-forward layer (`gelu` = exact erf GELU).
    #[serde(default = "default_act")]
    pub hidden_act: String,
    /// Dropout on hidden states (training only).
    #[serde(default = "default_dropout")]
    pub hidden_dropout_prob: f64,
    /// Dropout on attention probabilities (training only).
    #[serde(default = "default_dropout")]
    pub attention_probs_dropout_prob: f64,
    /// Rows of the position embedding: the longest sequence the model accepts.
    pub max_position_embeddings: usize,
    /// Number of token types (segments); 0 for families without a token-type table
    /// (DistilBERT, MPNet).
    #[serde(default = "default_type_vocab")]
    pub type_vocab_size: usize,
    /// ELECTRA's `embedding_size`: width of the embedding tables, projected to `hidden_size`
    /// by `embeddings_project` when it differs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub embedding_size: Option<usize>,
    /// LayerNorm epsilon.
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
    /// Id of the padding token.
    #[serde(default)]
    pub pad_token_id: u32,
    /// Position embedding kind; only `absolute` is implemented.
    #[serde(default = "default_position")]
    pub position_embedding_type: String,
    /// Label names by class id, when the model has a classification head.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id2label: Option<BTreeMap<String, String>>,
    /// Class ids by label name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label2id: Option<BTreeMap<String, usize>>,
    /// HF `architectures` (e.g. `BertForSequenceClassification`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub architectures: Option<Vec<String>>,
    /// Attention heads removed by structured pruning, by layer (HF's `pruned_heads`: layer
    /// index as a string → original head indices). tunekit loads the smaller tensors this
    /// describes; transformers 4 pruned the same heads before loading, transformers 5 no
    /// longer reads the key (a head-pruned directory does not load there).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub pruned_heads: BTreeMap<String, Vec<usize>>,
    /// Every other key of the file, kept verbatim.
    #[serde(flatten)]
    pub extra: BTreeMap<String, serde_json::Value>,
}

fn default_act() -> String {
    "gelu".into()
}
fn default_dropout() -> f64 {
    0.1
}
fn default_type_vocab() -> usize {
    2
}
fn default_eps() -> f64 {
    1e-12
}
fn default_position() -> String {
    "absolute".into()
}

impl BertConfig {
    /// Read and validate `config.json`.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let value: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| Error::Model(format!("{}: invalid JSON: {e}", path.display())))?;
        let model_type = value
            .get("model_type")
            .and_then(|v| v.as_str())
            .unwrap_or("<missing>")
            .to_string();
        if !SUPPORTED_MODEL_TYPES.contains(&model_type.as_str()) {
            return Err(Error::Model(format!(
                "{}: unsupported model_type `{model_type}` (supported: {})",
                path.display(),
                SUPPORTED_MODEL_TYPES.join(", ")
            )));
        }
        let mut value = Self::bert_keys(value, &model_type);
        if model_type == "deberta-v2" {
            super::deberta_v2::config::fill_defaults(&mut value);
        }
        let mut config: BertConfig = serde_json::from_value(value)
            .map_err(|e| Error::Model(format!("{}: {e}", path.display())))?;
        if config.family().names().token_type_embeddings.is_none() {
            config.type_vocab_size = 0;
        }
        config
            .validate()
            .map_err(|m| Error::Model(format!("{}: {m}", path.display())))?;
        Ok(config)
    }

    /// The family's keys renamed to BERT's (DistilBERT's `dim` → `hidden_size`, …).
    fn bert_keys(mut value: serde_json::Value, model_type: &str) -> serde_json::Value {
        let Some(family) = Family::from_model_type(model_type) else {
            return value;
        };
        if let Some(map) = value.as_object_mut() {
            if family == Family::ModernBert {
                super::modernbert::fill_config_defaults(map);
            }
            for (theirs, ours) in family.names().config_aliases {
                if let Some(v) = map.remove(*theirs) {
                    map.entry(ours.to_string()).or_insert(v);
                }
            }
        }
        value
    }

    /// The encoder family of `model_type` (checked when the file was read; BERT for a config
    /// built in code with another value).
    pub fn family(&self) -> Family {
        Family::from_model_type(&self.model_type).unwrap_or(Family::Bert)
    }

    /// `config.json` as the family writes it: BERT's keys renamed back to the family's own
    /// (DistilBERT), no `type_vocab_size` for a family without token types. Write this, not
    /// the struct, to a model directory.
    pub fn to_json(&self) -> Result<serde_json::Value> {
        let mut value =
            serde_json::to_value(self).map_err(|e| Error::Model(format!("config.json: {e}")))?;
        let names = self.family().names();
        if let Some(map) = value.as_object_mut() {
            for (theirs, ours) in names.config_aliases {
                if let Some(v) = map.remove(*ours) {
                    map.insert(theirs.to_string(), v);
                }
            }
            if names.token_type_embeddings.is_none() {
                map.remove("type_vocab_size");
            }
            if self.family() != Family::Bert {
                map.remove("position_embedding_type");
            }
            if self.family() == Family::ModernBert {
                super::modernbert::finish_config_json(self, map);
            }
        }
        Ok(value)
    }

    /// Width of the embedding tables (`embedding_size`, else `hidden_size`).
    pub fn embedding_width(&self) -> usize {
        self.embedding_size.unwrap_or(self.hidden_size)
    }

    fn validate(&self) -> std::result::Result<(), String> {
        if self.hidden_size == 0 || self.num_attention_heads == 0 {
            return Err("hidden_size and num_attention_heads must be positive".into());
        }
        // Tables that inputs index into: an empty one has no row for any input. DeBERTa's
        // token-type table is optional (`type_vocab_size` 0 in DeBERTa-v3).
        let token_types = self.family().names().token_type_embeddings.is_some()
            && self.family() != Family::DebertaV2;
        for (key, rows) in [
            ("vocab_size", self.vocab_size),
            ("max_position_embeddings", self.max_position_embeddings),
            (
                "type_vocab_size",
                self.type_vocab_size.max(usize::from(!token_types)),
            ),
            ("intermediate_size", self.intermediate_size),
            ("embedding_size", self.embedding_width()),
        ] {
            if rows == 0 {
                return Err(format!("{key} must be positive"));
            }
        }
        if !self.hidden_size.is_multiple_of(self.num_attention_heads) {
            return Err(format!(
                "hidden_size {} is not divisible by num_attention_heads {}",
                self.hidden_size, self.num_attention_heads
            ));
        }
        for (layer, heads) in &self.pruned_heads {
            let ok_layer = layer
                .parse::<usize>()
                .is_ok_and(|l| l < self.num_hidden_layers);
            let mut sorted = heads.clone();
            sorted.sort_unstable();
            sorted.dedup();
            if !ok_layer
                || sorted.len() != heads.len()
                || sorted.len() >= self.num_attention_heads
                || sorted.iter().any(|&h| h >= self.num_attention_heads)
            {
                return Err(format!(
                    "pruned_heads[{layer:?}] = {heads:?}: needs a layer below {} and distinct heads below {}, at least one kept",
                    self.num_hidden_layers, self.num_attention_heads
                ));
            }
        }
        if !matches!(
            self.hidden_act.as_str(),
            "gelu" | "gelu_new" | "gelu_pytorch_tanh" | "relu"
        ) {
            return Err(format!("unsupported hidden_act `{}`", self.hidden_act));
        }
        if self.family().names().positions == Positions::AfterPadding
            && self.max_position_embeddings <= self.padding_idx() + 1
        {
            return Err(format!(
                "max_position_embeddings {} leaves no position after padding_idx {} (positions start at padding_idx + 1)",
                self.max_position_embeddings,
                self.padding_idx()
            ));
        }
        if self.family() == Family::DebertaV2 {
            super::deberta_v2::config::validate(self)?;
        }
        if self.family() == Family::ModernBert {
            super::modernbert::ModernBertOptions::from_config(self)?;
        }
        if self.position_embedding_type != "absolute" {
            return Err(format!(
                "unsupported position_embedding_type `{}` (supported: absolute)",
                self.position_embedding_type
            ));
        }
        Ok(())
    }

    /// The pooling the checkpoint's own sequence head uses when nothing else says: ModernBERT's
    /// `classifier_pooling` (`"mean"` → [`super::Pooling::Mean`]), [`super::Pooling::Cls`]
    /// for every other family.
    pub fn hf_pooling(&self) -> super::Pooling {
        match self.family() {
            Family::ModernBert => super::modernbert::ModernBertOptions::from_config(self)
                .map_or(super::Pooling::Cls, |o| o.classifier_pooling),
            _ => super::Pooling::Cls,
        }
    }

    /// Padding index of the position ids ([`Positions::AfterPadding`]): `pad_token_id`
    /// (RoBERTa, XLM-R), 1 for MPNet (hard-coded there).
    pub fn padding_idx(&self) -> usize {
        match self.family() {
            Family::MPNet => super::mpnet::PADDING_IDX,
            _ => self.pad_token_id as usize,
        }
    }

    /// Positions a sequence can use: `max_position_embeddings`, less `padding_idx + 1` for
    /// families whose positions start after the padding index.
    pub fn max_sequence_length(&self) -> usize {
        match self.family().names().positions {
            Positions::Absolute => self.max_position_embeddings,
            Positions::AfterPadding => self
                .max_position_embeddings
                .saturating_sub(self.padding_idx() + 1),
        }
    }

    /// Width of one attention head.
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }

    /// Attention heads kept in `layer` (all of them unless pruned).
    pub fn heads_in_layer(&self, layer: usize) -> usize {
        self.num_attention_heads
            - self
                .pruned_heads
                .get(&layer.to_string())
                .map_or(0, Vec::len)
    }

    /// Label names in class-id order, if the config carries a label map.
    pub fn labels(&self) -> Option<Vec<String>> {
        let map = self.id2label.as_ref()?;
        let mut pairs: Vec<(usize, String)> = map
            .iter()
            .filter_map(|(k, v)| k.parse::<usize>().ok().map(|i| (i, v.clone())))
            .collect();
        pairs.sort();
        if pairs.iter().enumerate().any(|(i, (id, _))| *id != i) {
            return None;
        }
        Some(pairs.into_iter().map(|(_, v)| v).collect())
    }

    /// Set `id2label`/`label2id` from labels in class-id order.
    pub fn set_labels(&mut self, labels: &[String]) {
        self.id2label = Some(
            labels
                .iter()
                .enumerate()
                .map(|(i, l)| (i.to_string(), l.clone()))
                .collect(),
        );
        self.label2id = Some(
            labels
                .iter()
                .enumerate()
                .map(|(i, l)| (l.clone(), i))
                .collect(),
        );
    }

    /// Parameters of the encoder (embeddings + layers + pooler), for `models inspect`.
    pub fn encoder_param_count(&self, with_pooler: bool) -> usize {
        let h = self.hidden_size;
        if self.family() == Family::DebertaV2 {
            // Its tensors differ from BERT's (relative table, optional position and type
            // tables, …): count them; the pooler is the head's `pooler.dense`.
            let encoder: usize = super::weights::encoder_shapes(self)
                .iter()
                .map(|(_, s)| s.iter().product::<usize>())
                .sum();
            return encoder + if with_pooler { h * h + h } else { 0 };
        }
        let emb =
            (self.vocab_size + self.max_position_embeddings + self.type_vocab_size) * h + 2 * h;
        let attn = 4 * (h * h + h) + 2 * h;
        let ffn = h * self.intermediate_size
            + self.intermediate_size
            + self.intermediate_size * h
            + h
            + 2 * h;
        let pooler = if with_pooler { h * h + h } else { 0 };
        emb + self.num_hidden_layers * (attn + ffn) + pooler
    }
}
