//! The backbone seam: what generic model code (LoRA, pruning, int8 quantisation, weights I/O)
//! needs from an encoder architecture, so that it never names BERT's modules or tensors.
//!
//! An architecture lives in one folder (`model/bert/`: config, modules, tensor names, as
//! candle's `models/bert.rs`) and implements [`Backbone`]: its hidden states, its layers'
//! linear modules by [`LinearRole`], and the Hugging Face name of each of them. LoRA picks its
//! targets by role, pruning slices the modules of a role, int8 quantises the six roles of every
//! layer, and adapters / int8 weights are named through [`Backbone::linear_name`].

use burn::nn::Linear;
use burn::tensor::Tensor;

use super::EncodedBatch;

/// The role of a linear module inside one encoder layer. The names are PEFT's
/// `target_modules` for BERT-family encoders (`query`, `key`, `value`, `attention.output.dense`,
/// `intermediate.dense`, `output.dense`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum LinearRole {
    /// Query projection of self-attention.
    Query,
    /// Key projection of self-attention.
    Key,
    /// Value projection of self-attention.
    Value,
    /// Projection of the attention context back to the hidden size.
    AttentionOutput,
    /// First feed-forward linear (hidden → intermediate).
    Intermediate,
    /// Second feed-forward linear (intermediate → hidden).
    Output,
}

impl LinearRole {
    /// The six roles of a layer, in the order of int8 layers
    /// ([`super::quant::Int8Encoder::layers`]) and of adapter files.
    pub const ALL: [LinearRole; 6] = [
        LinearRole::Query,
        LinearRole::Key,
        LinearRole::Value,
        LinearRole::AttentionOutput,
        LinearRole::Intermediate,
        LinearRole::Output,
    ];

    /// Position of this role in [`Self::ALL`].
    pub fn index(self) -> usize {
        match self {
            LinearRole::Query => 0,
            LinearRole::Key => 1,
            LinearRole::Value => 2,
            LinearRole::AttentionOutput => 3,
            LinearRole::Intermediate => 4,
            LinearRole::Output => 5,
        }
    }
}

/// A generic feature that an architecture may refuse ([`Backbone::unsupported`]) rather than
/// give wrong numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Feature {
    /// Int8 quantisation of the layers' linear modules (`tunekit quantize`).
    Int8,
    /// Structured pruning: removing attention heads and feed-forward neurons
    /// (`tunekit prune --heads/--ffn`).
    StructuredPruning,
}

impl Feature {
    /// What the feature is called in messages.
    pub fn name(self) -> &'static str {
        match self {
            Feature::Int8 => "int8 quantisation",
            Feature::StructuredPruning => {
                "structured pruning (attention heads, feed-forward neurons)"
            }
        }
    }
}

/// Sizes every encoder has (Hugging Face config names), read from the modules themselves (so a
/// pruned model reports its pruned sizes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackboneDims {
    /// `hidden_size`.
    pub hidden_size: usize,
    /// `num_hidden_layers`.
    pub num_hidden_layers: usize,
    /// `intermediate_size` of the first layer.
    pub intermediate_size: usize,
    /// `max_position_embeddings` (rows of the position table).
    pub max_position_embeddings: usize,
    /// `vocab_size` (rows of the word-embedding table).
    pub vocab_size: usize,
}

/// An encoder architecture, as the generic model code sees it. Layer indices passed in are
/// `0..num_layers()`; a layer index past the end panics (it is a programming error, never user
/// input).
pub trait Backbone {
    /// Hugging Face `model_type` of the architecture (`"bert"`).
    fn model_type(&self) -> &'static str;

    /// Last hidden states `[batch, seq, hidden]`.
    fn hidden_states(&self, batch: &EncodedBatch) -> Tensor<3>;

    /// Number of transformer layers.
    fn num_layers(&self) -> usize;

    /// Sizes of the encoder.
    fn dims(&self) -> BackboneDims;

    /// Attention heads of layer `layer` (fewer than the config's after head pruning).
    fn num_heads(&self, layer: usize) -> usize;

    /// Record that layer `layer` now has `heads` heads (after its projections were sliced).
    fn set_num_heads(&mut self, layer: usize, heads: usize);

    /// The linear module with `role` in layer `layer` (burn layout: weight `[in, out]`).
    fn linear(&self, layer: usize, role: LinearRole) -> &Linear;

    /// The same, mutable (pruning replaces it, unstructured pruning rewrites its weight).
    fn linear_mut(&mut self, layer: usize, role: LinearRole) -> &mut Linear;

    /// Hugging Face module name of that linear module, relative to the base model
    /// (`encoder.layer.{i}.attention.self.query` for BERT): add [`Self::prefix`] for the name
    /// inside a task model, `.weight` / `.bias` for its tensors.
    fn linear_name(&self, layer: usize, role: LinearRole) -> String;

    /// Prefix of the base model's tensors inside a Hugging Face task model (`"bert."`).
    fn prefix(&self) -> &'static str;

    /// `None` when the architecture supports `feature`, else why not (a sentence naming the
    /// architecture, for the error the caller returns). Every BERT-shaped family supports
    /// everything.
    fn unsupported(&self, _feature: Feature) -> Option<String> {
        None
    }

    /// Every linear module of the encoder with its HF name (without [`Self::prefix`]), layer by
    /// layer in [`LinearRole::ALL`] order. A module that serves several roles (ModernBERT's
    /// fused `attn.Wqkv` is query, key and value) is listed once, at its first role.
    fn named_linears(&self) -> Vec<(String, &Linear)> {
        let mut out: Vec<(String, &Linear)> =
            Vec::with_capacity(self.num_layers() * LinearRole::ALL.len());
        for layer in 0..self.num_layers() {
            let first = out.len();
            for role in LinearRole::ALL {
                let name = self.linear_name(layer, role);
                if !out[first..].iter().any(|(n, _)| *n == name) {
                    out.push((name, self.linear(layer, role)));
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::BertConfig;
    use crate::model::weights::{
        ClassifierSpec, DropoutOverride, classifier_tensors, load_classifier,
    };
    use burn::tensor::Device;

    /// The names the backbone gives its linear modules are the ones the weights file uses for
    /// them, with the module's shape (HF `[out, in]`), and its sizes are the config's.
    #[test]
    fn bert_backbone_names_and_shapes_match_its_weights_file() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = serde_json::json!({
            "model_type": "bert", "vocab_size": 120, "hidden_size": 16,
            "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 24,
            "hidden_act": "gelu", "max_position_embeddings": 32, "type_vocab_size": 2
        });
        std::fs::write(dir.path().join("config.json"), cfg.to_string()).unwrap();
        let config = BertConfig::from_file(&dir.path().join("config.json")).unwrap();
        let weights = dir.path().join("model.safetensors");
        crate::model::weights::write_random_encoder(&config, &weights, 1).unwrap();
        let spec = ClassifierSpec {
            head: Default::default(),
            num_labels: 3,
            pooling: crate::model::Pooling::Cls,
            dropout: DropoutOverride::default(),
            seed: 1,
            require_head: false,
        };
        let device = Device::flex();
        let model = load_classifier(&weights, &config, &spec, &device)
            .unwrap()
            .0;
        let bert: &dyn Backbone = &model.encoder;
        assert_eq!(bert.model_type(), "bert");
        assert_eq!(
            bert.dims(),
            BackboneDims {
                hidden_size: 16,
                num_hidden_layers: 2,
                intermediate_size: 24,
                max_position_embeddings: 32,
                vocab_size: 120,
            }
        );
        let tensors = classifier_tensors(&model).unwrap();
        let named = bert.named_linears();
        assert_eq!(named.len(), 2 * LinearRole::ALL.len());
        for (name, linear) in named {
            let full = format!("{}{name}.weight", bert.prefix());
            let [d_in, d_out] = linear.weight.dims();
            let found = tensors.iter().find(|t| t.0 == full);
            assert_eq!(
                found.map(|t| t.1.clone()),
                Some(vec![d_out, d_in]),
                "{full}"
            );
        }
        assert_eq!(
            bert.linear_name(1, LinearRole::AttentionOutput),
            "encoder.layer.1.attention.output.dense"
        );
        assert_eq!(bert.num_heads(1), 2);
    }
}
