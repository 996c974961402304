//! DistilBERT (`model_type = "distilbert"`): BERT's post-LayerNorm layers under
//! `distilbert.transformer.layer.{i}` with their own names (`attention.q_lin/k_lin/v_lin/
//! out_lin`, `ffn.lin1/lin2`, `sa_layer_norm`, `output_layer_norm`), no token types, absolute
//! positions, LayerNorm epsilon 1e-12, no pooler, and the head `pre_classifier` → ReLU →
//! dropout → `classifier` on token 0. Its `config.json` spells sizes its own way (`dim`,
//! `n_layers`, `n_heads`, `hidden_dim`, `activation`, `dropout`, `attention_dropout`): read as
//! BERT's keys and written back as DistilBERT's. Source: transformers
//! `models/distilbert/modeling_distilbert.py`, `configuration_distilbert.py`.

use super::bert::names as bert;
use super::family::{HeadActivation, Names, SequenceHead};

/// DistilBERT's table.
pub const NAMES: Names = Names {
    model_type: "distilbert",
    prefix: "distilbert.",
    classes: [
        "DistilBertModel",
        "DistilBertForSequenceClassification",
        "DistilBertForTokenClassification",
    ],
    token_type_embeddings: None,
    layers: "transformer.layer",
    linears: [
        "attention.q_lin",
        "attention.k_lin",
        "attention.v_lin",
        "attention.out_lin",
        "ffn.lin1",
        "ffn.lin2",
    ],
    attention_layer_norm: "sa_layer_norm",
    output_layer_norm: "output_layer_norm",
    pooler: None,
    sequence_head: SequenceHead {
        dense: "pre_classifier",
        dense_in_base: false,
        activation: HeadActivation::Relu,
        dropout_before_dense: false,
        out: "classifier",
        norm: None,
        prediction_head: false,
    },
    lora_targets: ["q_lin", "v_lin"],
    config_aliases: &[
        ("dim", "hidden_size"),
        ("n_layers", "num_hidden_layers"),
        ("n_heads", "num_attention_heads"),
        ("hidden_dim", "intermediate_size"),
        ("activation", "hidden_act"),
        ("dropout", "hidden_dropout_prob"),
        ("attention_dropout", "attention_probs_dropout_prob"),
    ],
    ..bert::NAMES
};
