//! XLM-RoBERTa (`model_type = "xlm-roberta"`): RoBERTa's network and tensor names (the base
//! model is still `roberta.` inside task models) with a SentencePiece (Unigram) tokenizer.
//! Source: transformers `models/xlm_roberta/modeling_xlm_roberta.py`.

use super::family::Names;

/// XLM-RoBERTa's table.
pub const NAMES: Names = Names {
    model_type: "xlm-roberta",
    classes: [
        "XLMRobertaModel",
        "XLMRobertaForSequenceClassification",
        "XLMRobertaForTokenClassification",
    ],
    ..super::roberta::NAMES
};
