//! `tunekit export`: a fine-tuned model in the format another runtime loads.
//!
//! - [`ExportFormat::Hf`]: a plain Hugging Face directory `transformers` loads with
//!   `AutoModelForSequenceClassification.from_pretrained` — LoRA adapters merged, `config.json`
//!   with `architectures`, `id2label`, `label2id`, `problem_type`, `model.safetensors` with
//!   exactly `BertForSequenceClassification`'s tensor names and shapes, tokenizer files and the
//!   model card.
//! - [`ExportFormat::Onnx`]: `model.onnx` (see [`onnx`]) plus the tokenizer and label map.
//!
//! Also here: [`prune`] (a smaller model written the same way) and [`compare`] (the
//! `compress-report` table).

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
