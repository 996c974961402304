//! `tunekit export`: a fine-tuned model in the format another runtime loads.
//!
//! - [`ExportFormat::Hf`]: a plain Hugging Face directory `transformers` loads with
//!   `AutoModelForSequenceClassification.from_pretrained` — LoRA adapters merged, `config.json`
//!   with `architectures`, `id2label`, `label2id`, `problem_type`, `model.safetensors` with
//!   exactly `BertForSequenceClassification`'s tensor names and shapes, tokenizer files and the
//!   model card.
//! - [`ExportFormat::Onnx`]: `model.onnx` (see [`onnx`]) plus the tokenizer and label map.
//!
//! Also here: [`prune`] (a smaller model written the same way), [`quantize`] (int8 encoder
//! weights, [`crate::model::quant`]) and [`compare`] (the `compress-report` table).

pub mod compare;
pub mod onnx;
pub mod onnx_proto;

use std::path::{Path, PathBuf};

use burn::tensor::Device;

use crate::error::{Error, Result};
use crate::fsutil::{copy_atomic, write_atomic};
use crate::infer::Classifier;

/// What `tunekit export` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportFormat {
    /// Hugging Face directory (safetensors + config + tokenizer + card).
    Hf,
    /// ONNX graph + tokenizer + config.
    Onnx,
}

/// Files copied beside the weights when present: tokenizer, labels, tunekit's own metadata.
const SIDE_FILES: [&str; 7] = [
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
    "README.md",
    crate::model::TUNEKIT_META,
    crate::drift::REFERENCE_FILE,
];

/// A fine-tuned model loaded for writing elsewhere: LoRA adapters folded in.
struct Plain {
    dir: PathBuf,
    model: crate::model::SequenceClassifier,
    config: crate::model::BertConfig,
    /// `config.json` as a JSON value, so keys tunekit does not model survive.
    json: serde_json::Value,
}

fn load_plain(spec: &str, device: &Device) -> Result<Plain> {
    let clf = Classifier::load(spec, None, device)?;
    let dir = clf.dir.clone();
    let config_path = dir.join("config.json");
    let mut json: serde_json::Value = crate::fsutil::read_json(&config_path)?;
    // transformers reads the task from `problem_type`; tunekit's heads are single-label.
    if let Some(o) = json.as_object_mut() {
        o.insert(
            "architectures".into(),
            serde_json::json!(["BertForSequenceClassification"]),
        );
        o.entry("problem_type")
            .or_insert_with(|| serde_json::json!("single_label_classification"));
    }
    let config = crate::model::BertConfig::from_file(&config_path)?;
    let model = burn::module::Module::materialize(clf.model);
    Ok(Plain {
        dir,
        model,
        config,
        json,
    })
}

fn write(p: &Plain, format: ExportFormat, out: &Path) -> Result<PathBuf> {
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    let main = match format {
        ExportFormat::Hf => {
            let path = out.join("model.safetensors");
            crate::model::weights::save_classifier(&p.model, &path)?;
            path
        }
        ExportFormat::Onnx => {
            let bytes = onnx::to_onnx(&p.model, &p.config)?;
            let path = out.join("model.onnx");
            write_atomic(&path, &bytes)?;
            path
        }
    };
    let text = serde_json::to_string_pretty(&p.json).map_err(|e| Error::Model(e.to_string()))?;
    write_atomic(&out.join("config.json"), text.as_bytes())?;
    for f in SIDE_FILES {
        let src = p.dir.join(f);
        if src.is_file() {
            copy_atomic(&src, &out.join(f))?;
        }
    }
    Ok(main)
}

/// Export the fine-tuned model `spec` (a model directory or LoRA adapter directory) to `out`;
/// returns the main file written.
pub fn export(spec: &str, format: ExportFormat, out: &Path, device: &Device) -> Result<PathBuf> {
    write(&load_plain(spec, device)?, format, out)
}

/// Prune the fine-tuned model `spec` ([`crate::model::prune`]) and write the smaller model to
/// `out` in HF layout, with `prune_report.json`.
pub fn prune(
    spec: &str,
    opts: &crate::model::prune::PruneOptions,
    out: &Path,
    device: &Device,
) -> Result<crate::model::prune::PruneReport> {
    let p = load_plain(spec, device)?;
    let (model, config, report) = crate::model::prune::prune(p.model, &p.config, opts, device)?;
    let mut json = p.json;
    if let Some(o) = json.as_object_mut() {
        o.insert(
            "intermediate_size".into(),
            serde_json::json!(config.intermediate_size),
        );
        if config.pruned_heads.is_empty() {
            o.remove("pruned_heads");
        } else {
            o.insert(
                "pruned_heads".into(),
                serde_json::json!(config.pruned_heads),
            );
        }
    }
    let pruned = Plain {
        dir: p.dir,
        model,
        config,
        json,
    };
    write(&pruned, ExportFormat::Hf, out)?;
    crate::fsutil::write_json(&out.join("prune_report.json"), &report)?;
    Ok(report)
}

/// What `tunekit quantize` did.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct QuantizeReport {
    /// The scheme, in words.
    pub scheme: String,
    /// Linear layers quantised (the word-embedding table is int8 on disk too).
    pub linear_layers: usize,
    /// Weights stored as int8.
    pub int8_parameters: usize,
    /// Parameters kept in f32 (embeddings, LayerNorm, biases, scales, pooler, classifier).
    pub f32_parameters: usize,
    /// Size of the source model's weights file in bytes.
    pub size_before_bytes: u64,
    /// Size of the quantised weights file in bytes.
    pub size_after_bytes: u64,
    /// Largest |w − dequantised w| relative to the largest |w| of its output channel.
    pub max_relative_weight_error: f64,
}

/// Quantise the fine-tuned model `spec` to int8 ([`crate::model::quant`]) and write it to
/// `out` in HF layout (int8 weights + scales in `model.safetensors`), with
/// `quantize_report.json`. `tunekit eval`, `predict`, `serve` and `compress-report` load it
/// and run the int8 product.
pub fn quantize(spec: &str, out: &Path, device: &Device) -> Result<QuantizeReport> {
    use crate::model::quant;
    let p = load_plain(spec, device)?;
    if p.model.bert.int8.is_some() {
        return Err(Error::Model(format!(
            "{}: already quantised",
            p.dir.display()
        )));
    }
    let (int8, worst) = quant::quantize_encoder(&p.model)?;
    let tensors = crate::model::weights::classifier_tensors(&p.model)?;
    let total: usize = tensors.iter().map(|t| t.2.len()).sum();
    let embedding_size = tensors
        .iter()
        .find(|t| t.0 == quant::WORD_EMBEDDINGS)
        .map_or(0, |t| t.2.len());
    let int8_parameters: usize = int8
        .layers
        .iter()
        .flat_map(|l| l.iter().map(|q| q.weight.len()))
        .sum::<usize>()
        + embedding_size;
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    let path = out.join("model.safetensors");
    crate::model::weights::write_safetensors_raw(quant::int8_tensors(tensors, &int8), &path)?;
    let text = serde_json::to_string_pretty(&p.json).map_err(|e| Error::Model(e.to_string()))?;
    write_atomic(&out.join("config.json"), text.as_bytes())?;
    for f in SIDE_FILES {
        let src = p.dir.join(f);
        if src.is_file() {
            copy_atomic(&src, &out.join(f))?;
        }
    }
    let size = |f: &Path| std::fs::metadata(f).map(|m| m.len()).unwrap_or(0);
    let report = QuantizeReport {
        scheme: "int8 weights (symmetric, per output channel) × int8 activations (symmetric, per token, computed at run time), i32 accumulation".into(),
        linear_layers: int8.layers.len() * 6,
        int8_parameters,
        f32_parameters: total - int8_parameters,
        size_before_bytes: size(&p.dir.join("model.safetensors")),
        size_after_bytes: size(&path),
        max_relative_weight_error: worst,
    };
    crate::fsutil::write_json(&out.join("quantize_report.json"), &report)?;
    Ok(report)
}
