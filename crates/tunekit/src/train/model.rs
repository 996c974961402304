//! What the one training loop trains: any burn module that can write its trained weights.
//! An encoder with its head ([`SequenceClassifier`]) and a decoder language model
//! (`llama::Llama`, trained by `task::causal_lm`) are the two today; the loop, the gradient step, clipping,
//! the optimiser, checkpoints and resume are written once over this trait.

use std::path::Path;

use burn::module::Module;

use crate::error::Result;
use crate::model::SequenceClassifier;

/// A network the loop can train ([`super::fit::fit`]).
pub(crate) trait TrainModel: Module + 'static {
    /// Write the trained weights into `dir` (created if missing): the whole network, or for
    /// LoRA only what trains (the adapters in PEFT's `adapter_model.safetensors`, plus the head
    /// of an encoder). Files are written atomically.
    fn save_weights(&self, dir: &Path, lora: bool) -> Result<()>;
}

impl TrainModel for SequenceClassifier {
    fn save_weights(&self, dir: &Path, lora: bool) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|e| crate::error::Error::io(dir, e))?;
        if lora {
            crate::model::lora::save_adapter(self, &dir.join(crate::model::lora::ADAPTER_WEIGHTS))
        } else {
            crate::model::weights::save_classifier(self, &dir.join("model.safetensors"))
        }
    }
}
