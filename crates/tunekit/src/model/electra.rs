//! ELECTRA (`model_type = "electra"`, the discriminator): BERT's layers under `electra.`, with
//! embeddings of `embedding_size` projected to `hidden_size` by `embeddings_project` when the
//! two differ, no pooler, and a classification head with GELU (`ElectraClassificationHead`:
//! dropout → `classifier.dense` → gelu → dropout → `classifier.out_proj`). The
//! discriminator's pre-training head (`discriminator_predictions.*`) is not used and reported
//! as unused. Source: transformers `models/electra/modeling_electra.py`.

use super::bert::names as bert;
use super::family::{HeadActivation, Names, SequenceHead};

/// ELECTRA's table.
pub const NAMES: Names = Names {
    model_type: "electra",
    prefix: "electra.",
    classes: [
        "ElectraModel",
        "ElectraForSequenceClassification",
        "ElectraForTokenClassification",
    ],
    embeddings_project: Some("embeddings_project"),
    pooler: None,
    sequence_head: SequenceHead {
        activation: HeadActivation::Gelu,
        ..super::roberta::ROBERTA_HEAD
    },
    ..bert::NAMES
};
