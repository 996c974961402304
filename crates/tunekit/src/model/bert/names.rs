//! BERT's Hugging Face tensor names (`BertModel`, and `BertForSequenceClassification`, which
//! puts the encoder under `bert.`): the one place that spells them. Module names here are
//! relative to the base model; tensors add `.weight` / `.bias`.

use crate::model::backbone::LinearRole;

/// Prefix of the encoder's tensors inside a task model (`bert.embeddings…`); a base-model file
/// (`BertModel`) has none.
pub const PREFIX: &str = "bert.";

/// Word-embedding table.
pub const WORD_EMBEDDINGS: &str = "embeddings.word_embeddings";
/// Absolute position-embedding table.
pub const POSITION_EMBEDDINGS: &str = "embeddings.position_embeddings";
/// Segment (token type) embedding table.
pub const TOKEN_TYPE_EMBEDDINGS: &str = "embeddings.token_type_embeddings";
/// LayerNorm after the embeddings.
pub const EMBEDDINGS_LAYER_NORM: &str = "embeddings.LayerNorm";
/// The pooler's dense layer (`tanh(dense([CLS]))`).
pub const POOLER: &str = "pooler.dense";
/// LayerNorm of a layer's attention block, under [`layer_prefix`].
pub const ATTENTION_LAYER_NORM: &str = "attention.output.LayerNorm";
/// LayerNorm of a layer's feed-forward block, under [`layer_prefix`].
pub const OUTPUT_LAYER_NORM: &str = "output.LayerNorm";

/// `encoder.layer.{i}`: HF's prefix of layer `i`.
pub fn layer_prefix(i: usize) -> String {
    format!("encoder.layer.{i}")
}

/// The module name of a linear role under [`layer_prefix`].
pub fn linear_module(role: LinearRole) -> &'static str {
    match role {
        LinearRole::Query => "attention.self.query",
        LinearRole::Key => "attention.self.key",
        LinearRole::Value => "attention.self.value",
        LinearRole::AttentionOutput => "attention.output.dense",
        LinearRole::Intermediate => "intermediate.dense",
        LinearRole::Output => "output.dense",
    }
}

/// Full module name (without [`PREFIX`]) of layer `i`'s linear with `role`.
pub fn linear(i: usize, role: LinearRole) -> String {
    format!("{}.{}", layer_prefix(i), linear_module(role))
}

/// BERT's table ([`crate::model::family::Names`]): `BertModel`,
/// `BertForSequenceClassification` (pooler → dropout → `classifier`),
/// `BertForTokenClassification`.
pub const NAMES: crate::model::family::Names = crate::model::family::Names {
    model_type: "bert",
    prefix: PREFIX,
    classes: [
        "BertModel",
        "BertForSequenceClassification",
        "BertForTokenClassification",
    ],
    word_embeddings: WORD_EMBEDDINGS,
    position_embeddings: POSITION_EMBEDDINGS,
    token_type_embeddings: Some(TOKEN_TYPE_EMBEDDINGS),
    embeddings_layer_norm: EMBEDDINGS_LAYER_NORM,
    embeddings_project: None,
    relative_attention_bias: None,
    positions: crate::model::family::Positions::Absolute,
    layers: "encoder.layer",
    linears: [
        "attention.self.query",
        "attention.self.key",
        "attention.self.value",
        "attention.output.dense",
        "intermediate.dense",
        "output.dense",
    ],
    attention_layer_norm: ATTENTION_LAYER_NORM,
    output_layer_norm: OUTPUT_LAYER_NORM,
    pooler: Some(POOLER),
    sequence_head: crate::model::family::SequenceHead {
        dense: POOLER,
        dense_in_base: true,
        activation: crate::model::family::HeadActivation::Tanh,
        dropout_before_dense: false,
        out: "classifier",
        norm: None,
        prediction_head: false,
    },
    lora_targets: ["query", "value"],
    config_aliases: &[],
    shared: &[],
};
