//! RoBERTa (`model_type = "roberta"`): BERT's modules and tensor names under `roberta.`, with
//! position ids counted from `padding_idx + 1` ([`Positions::AfterPadding`]), a one-row
//! token-type table, and its own classification head (`RobertaClassificationHead`:
//! dropout → `classifier.dense` → tanh → dropout → `classifier.out_proj` on token 0; the base
//! model's pooler is not used). Source: transformers `models/roberta/modeling_roberta.py`.

use super::bert::names as bert;
use super::family::{HeadActivation, Names, Positions, SequenceHead};

/// RoBERTa's head, shared with XLM-RoBERTa.
pub(crate) const ROBERTA_HEAD: SequenceHead = SequenceHead {
    dense: "classifier.dense",
    dense_in_base: false,
    activation: HeadActivation::Tanh,
    dropout_before_dense: true,
    out: "classifier.out_proj",
    norm: None,
    prediction_head: false,
};

/// RoBERTa's table.
pub const NAMES: Names = Names {
    model_type: "roberta",
    prefix: "roberta.",
    classes: [
        "RobertaModel",
        "RobertaForSequenceClassification",
        "RobertaForTokenClassification",
    ],
    positions: Positions::AfterPadding,
    sequence_head: ROBERTA_HEAD,
    ..bert::NAMES
};
