//! *What* is trained: encoders (BERT, RoBERTa, XLM-RoBERTa, DistilBERT, ELECTRA, MPNet,
//! ModernBERT) and
//! their heads, loaded from and saved to the Hugging Face directory layout. Where it runs is [`crate::device`]'s concern.

pub mod backbone;
pub mod bert;
pub mod config;
pub mod deberta_v2;
pub mod distilbert;
pub mod electra;
pub mod encoder;
pub mod family;
pub mod gguf;
pub mod llama;
pub mod lora;
pub mod modernbert;
pub mod mpnet;
pub mod prune;
pub mod quant;
pub mod roberta;
pub mod weights;
pub mod xlm_roberta;

use std::path::{Path, PathBuf};

use serde::Serialize;

// The CPU kernels live in the `tunekit-kernels` crate (with all of the low-level code);
// re-exported under their old paths (`model::fused`, `model::attention`, `model::bf16`).
pub use tunekit_kernels::{attention, bf16, fused};

pub use backbone::{Backbone, BackboneDims, Feature, LinearRole};
pub use bert::{EncodedBatch, Pooling, SequenceClassifier};
pub use bf16::Precision;
pub use config::BertConfig;
pub use encoder::Encoder;
pub use family::Family;

use crate::error::{Error, Result};

/// A model directory in HF layout, resolved (local path or local HF hub cache) and checked.
#[derive(Debug, Clone)]
pub struct ModelDir {
    /// The directory.
    pub dir: PathBuf,
    /// Parsed `config.json`.
    pub config: BertConfig,
}

impl ModelDir {
    /// Resolve `spec` (a directory, or a model id in the local HF cache) and read its config.
    /// Checks that `model.safetensors` and `tokenizer.json` exist, naming what is missing.
    pub fn open(spec: &str) -> Result<Self> {
        let dir = crate::hub::resolve_model(spec)?;
        let config_path = dir.join("config.json");
        if !config_path.is_file() {
            return Err(Error::Model(format!(
                "{}: not a model directory: config.json is missing",
                dir.display()
            )));
        }
        let config = BertConfig::from_file(&config_path)?;
        if weights::find_weights(&dir).is_none() {
            return Err(Error::Model(format!(
                "{}: no weights: model.safetensors (or model.safetensors.index.json with its shards, or pytorch_model.bin) is missing",
                dir.display()
            )));
        }
        check_tokenizer(&dir)?;
        Ok(ModelDir { dir, config })
    }

    /// The weights: `model.safetensors`, else a sharded `model.safetensors.index.json`, else
    /// `pytorch_model.bin` ([`weights::find_weights`]).
    pub fn weights_path(&self) -> PathBuf {
        weights::find_weights(&self.dir).unwrap_or_else(|| self.dir.join("model.safetensors"))
    }

    /// `tokenizer.json`.
    pub fn tokenizer_path(&self) -> PathBuf {
        self.dir.join("tokenizer.json")
    }
}

/// SentencePiece model files some checkpoints ship instead of `tokenizer.json`.
const SENTENCEPIECE_FILES: [&str; 3] =
    ["spiece.model", "sentencepiece.bpe.model", "tokenizer.model"];

/// `tokenizer.json` must exist; a directory with only a SentencePiece model gets an error
/// saying how to make one (tunekit tokenises with the `tokenizers` crate, which reads
/// `tokenizer.json`, not SentencePiece's protobuf).
fn check_tokenizer(dir: &Path) -> Result<()> {
    if dir.join("tokenizer.json").is_file() {
        return Ok(());
    }
    if let Some(sp) = SENTENCEPIECE_FILES.iter().find(|f| dir.join(f).is_file()) {
        return Err(Error::Model(format!(
            "{}: tokenizer.json is missing; the directory has only the SentencePiece model {sp}. \
             Convert it once with transformers: python3 -c \"from transformers import AutoTokenizer; \
             AutoTokenizer.from_pretrained('{}').save_pretrained('{}')\" (writes tokenizer.json next to it)",
            dir.display(),
            dir.display(),
            dir.display()
        )));
    }
    Err(Error::Model(format!(
        "{}: tokenizer.json is missing",
        dir.display()
    )))
}

/// File in exported model directories holding tunekit-specific facts HF has no key for.
pub const TUNEKIT_META: &str = "tunekit.json";

/// Facts for `tunekit models inspect`.
#[derive(Debug, Clone, Serialize)]
pub struct ModelSummary {
    /// Directory.
    pub dir: PathBuf,
    /// HF model type.
    pub model_type: String,
    /// The architecture tunekit runs it as (HF base class: `RobertaModel`, …).
    pub architecture: String,
    /// Tokenizer kind from `tokenizer.json` (`WordPiece`, `byte-level BPE`, `Unigram
    /// (SentencePiece)`, …).
    pub tokenizer: String,
    /// Weights file format (`safetensors`, `sharded safetensors (N files)`, `PyTorch pickle`).
    pub weights_format: String,
    /// HF architectures.
    pub architectures: Vec<String>,
    /// Parameters in the weights file.
    pub parameters: usize,
    /// Transformer layers.
    pub layers: usize,
    /// Hidden size.
    pub hidden_size: usize,
    /// Attention heads.
    pub heads: usize,
    /// FFN width.
    pub intermediate_size: usize,
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Longest input in tokens.
    pub max_length: usize,
    /// Labels of the classification head, if any.
    pub labels: Option<Vec<String>>,
    /// Estimated peak training memory in bytes for `batch × seq`.
    pub train_memory_bytes: u64,
    /// Batch size used for the estimate.
    pub batch_size: usize,
    /// Sequence length used for the estimate.
    pub seq_len: usize,
}

/// Count parameters in a weights file (all tensors except integer buffers; safetensors,
/// sharded safetensors or PyTorch).
pub fn count_parameters(path: &Path) -> Result<usize> {
    Ok(weights::WeightFile::open(path)?.parameter_count())
}

/// Estimate of peak training memory with AdamW in f32: weights + gradients + two moments
/// (4 copies of the parameters) plus saved activations, which for a BERT layer are about
/// `batch·seq·(16·hidden + 2·intermediate) + 3·batch·heads·seq²` floats (inputs to every
/// matmul, LayerNorm and GELU, attention scores, probabilities and dropout masks).
pub fn estimate_training_memory(
    config: &BertConfig,
    params: usize,
    batch: usize,
    seq: usize,
) -> u64 {
    let f = 4u64;
    let (b, s, h, i) = (
        batch as u64,
        seq as u64,
        config.hidden_size as u64,
        config.intermediate_size as u64,
    );
    let heads = config.num_attention_heads as u64;
    let per_layer = b * s * (16 * h + 2 * i) + 3 * b * heads * s * s;
    let activations = per_layer * config.num_hidden_layers as u64 + b * s * h * 4;
    f * (4 * params as u64 + activations)
}

/// The format of a weights file, in words.
fn weights_format(path: &Path) -> Result<String> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    if name.ends_with(".index.json") {
        let json: serde_json::Value = crate::fsutil::read_json(path)?;
        let shards: std::collections::BTreeSet<&str> = json["weight_map"]
            .as_object()
            .map(|m| m.values().filter_map(|v| v.as_str()).collect())
            .unwrap_or_default();
        Ok(format!("sharded safetensors ({} files)", shards.len()))
    } else if name.ends_with(".bin") {
        Ok("PyTorch pickle (pytorch_model.bin)".into())
    } else {
        Ok("safetensors".into())
    }
}

/// Summarise a model directory for `models inspect`.
pub fn inspect(spec: &str, batch_size: usize, seq_len: usize) -> Result<ModelSummary> {
    let m = ModelDir::open(spec)?;
    let c = &m.config;
    let weights_path = m.weights_path();
    let parameters = count_parameters(&weights_path)?;
    Ok(ModelSummary {
        dir: m.dir.clone(),
        model_type: c.model_type.clone(),
        architecture: c.family().names().classes[0].to_string(),
        tokenizer: crate::tokenize::tokenizer_kind(&m.tokenizer_path())?,
        weights_format: weights_format(&weights_path)?,
        architectures: c.architectures.clone().unwrap_or_default(),
        parameters,
        layers: c.num_hidden_layers,
        hidden_size: c.hidden_size,
        heads: c.num_attention_heads,
        intermediate_size: c.intermediate_size,
        vocab_size: c.vocab_size,
        max_length: c.max_sequence_length(),
        labels: c.labels(),
        train_memory_bytes: estimate_training_memory(c, parameters, batch_size, seq_len),
        batch_size,
        seq_len,
    })
}
