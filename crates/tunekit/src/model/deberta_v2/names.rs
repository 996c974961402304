//! DeBERTa-v2's Hugging Face tensor names (`DebertaV2Model` under `deberta.` in its task
//! models): the family table and the tensors only DeBERTa has. Module names are relative to
//! the base model; tensors add `.weight` / `.bias`.

use crate::model::bert::names as bert;
use crate::model::family::{HeadActivation, Names, SequenceHead};

/// Prefix of the encoder's tensors inside a task model.
pub const PREFIX: &str = "deberta.";
/// Relative position embeddings `[2·att_span, hidden]`, shared by every layer.
pub const REL_EMBEDDINGS: &str = "encoder.rel_embeddings";
/// LayerNorm on the relative embeddings (`norm_rel_ebd` containing `layer_norm`).
pub const REL_LAYER_NORM: &str = "encoder.LayerNorm";
/// `embeddings.embed_proj` (no bias): embedding size → hidden size when they differ.
pub const EMBED_PROJ: &str = "embeddings.embed_proj";
/// The convolution after layer 0 (`conv_kernel_size` > 0, deberta-v2-xlarge/-xxlarge).
pub const CONV: &str = "encoder.conv.conv";
/// The convolution block's LayerNorm.
pub const CONV_LAYER_NORM: &str = "encoder.conv.LayerNorm";
/// Separate position projections (`share_att_key` false), under a layer: key side (c2p).
pub const POS_KEY_PROJ: &str = "attention.self.pos_key_proj";
/// Separate position projections (`share_att_key` false), under a layer: query side (p2c).
pub const POS_QUERY_PROJ: &str = "attention.self.pos_query_proj";

/// Encoder-level tensors shared by every layer, counted with the embeddings (depth
/// `layers + 1` for layer-wise LR decay and gradual unfreezing; frozen by
/// `freeze_embeddings`): the relative position table and its LayerNorm, and the convolution
/// block that mixes the embeddings into layer 0's output.
pub const SHARED: &[&str] = &[REL_EMBEDDINGS, REL_LAYER_NORM, "encoder.conv"];

/// `DebertaV2ForSequenceClassification`'s head: `ContextPooler` (dropout → `pooler.dense` →
/// `pooler_hidden_act`, on token 0) → dropout → `classifier`. The pooler belongs to the task
/// model, not to `DebertaV2Model`.
pub const HEAD: SequenceHead = SequenceHead {
    dense: "pooler.dense",
    dense_in_base: false,
    activation: HeadActivation::Gelu,
    dropout_before_dense: true,
    out: "classifier",
    norm: None,
    prediction_head: false,
};

/// DeBERTa-v2's table (used for tensor names, LoRA targets, int8 and freezing; the loader
/// in [`super::load`] reads the DeBERTa-only tensors itself).
pub const NAMES: Names = Names {
    model_type: "deberta-v2",
    prefix: PREFIX,
    classes: [
        "DebertaV2Model",
        "DebertaV2ForSequenceClassification",
        "DebertaV2ForTokenClassification",
    ],
    embeddings_project: Some(EMBED_PROJ),
    relative_attention_bias: None,
    linears: [
        "attention.self.query_proj",
        "attention.self.key_proj",
        "attention.self.value_proj",
        "attention.output.dense",
        "intermediate.dense",
        "output.dense",
    ],
    pooler: None,
    sequence_head: HEAD,
    lora_targets: ["query_proj", "value_proj"],
    shared: SHARED,
    ..bert::NAMES
};
