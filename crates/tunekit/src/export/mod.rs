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
pub mod recover;

use std::path::{Path, PathBuf};

use burn::tensor::Device;

use crate::error::{Error, Result};
use crate::fsutil::{copy_atomic, write_atomic};
use crate::predictor::Predictor;
use crate::task::TaskKind;

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
    /// The task (decides the transformers class, the ONNX outputs, the head's tensors).
    kind: TaskKind,
}

fn load_plain(spec: &str, device: &Device) -> Result<Plain> {
    plain_of(Predictor::load(spec, None, device)?)
}

fn plain_of(clf: Predictor) -> Result<Plain> {
    let dir = clf.dir.clone();
    let kind = clf.kind();
    let config_path = dir.join("config.json");
    let mut json = clf.config_json()?;
    // transformers reads the task from `architectures` and `problem_type`.
    let family = crate::model::BertConfig::from_file(&config_path)?.family();
    let (arch, problem) = kind.hf_architecture(family);
    if let Some(o) = json.as_object_mut() {
        o.insert("architectures".into(), serde_json::json!([arch]));
        match (kind.is_classification(), problem) {
            // A classifier from elsewhere keeps a problem_type it has.
            (true, Some(p)) => {
                o.entry("problem_type")
                    .or_insert_with(|| serde_json::json!(p));
            }
            (false, Some(p)) => {
                o.insert("problem_type".into(), serde_json::json!(p));
            }
            (_, None) => {
                o.remove("problem_type");
            }
        }
        if let Some(pooling) =
            crate::model::modernbert::classifier_pooling(family, clf.model.pooling)
        {
            // ModernBERT's head pools as its config says: record the pooling the model runs.
            o.insert("classifier_pooling".into(), serde_json::json!(pooling));
        }
    }
    let config = crate::model::BertConfig::from_file(&config_path)?;
    let model = burn::module::Module::materialize(clf.model);
    Ok(Plain {
        dir,
        model,
        config,
        json,
        kind,
    })
}

/// `config.json` (as loaded, with unknown keys) and the side files (tokenizer, labels, meta).
fn write_config_and_side_files(p: &Plain, out: &Path) -> Result<()> {
    let text = serde_json::to_string_pretty(&p.json).map_err(|e| Error::Model(e.to_string()))?;
    write_atomic(&out.join("config.json"), text.as_bytes())?;
    for f in SIDE_FILES {
        let src = p.dir.join(f);
        if src.is_file() {
            copy_atomic(&src, &out.join(f))?;
        }
    }
    if p.kind == TaskKind::Embedding {
        crate::predictor::copy_sentence_transformers_files(&p.dir, out)?;
    }
    Ok(())
}

/// The model's tensors in HF names: an embedding model without its (unused) head.
fn hf_tensors(p: &Plain) -> Result<Vec<crate::model::weights::HfTensor>> {
    let tensors = crate::model::weights::classifier_tensors(&p.model)?;
    Ok(if p.kind == TaskKind::Embedding {
        tensors
            .into_iter()
            .filter(|(n, _, _)| !n.starts_with("classifier."))
            .collect()
    } else {
        tensors
    })
}

fn write(p: &Plain, format: ExportFormat, out: &Path) -> Result<PathBuf> {
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    let main = match format {
        ExportFormat::Hf => {
            if p.model.pooling == crate::model::Pooling::Mean
                && !matches!(p.kind, TaskKind::TokenClassification | TaskKind::Embedding)
                && crate::model::modernbert::classifier_pooling(p.config.family(), p.model.pooling)
                    .is_none()
            {
                // Never silent: the weights load, but transformers computes something else.
                tracing::warn!(
                    "{}: trained with mean pooling, but transformers' {} pools the [CLS] token: \
                     transformers will load this export and predict differently from tunekit \
                     (train with model.pooling = \"cls\" for an export transformers reproduces)",
                    p.dir.display(),
                    p.kind.hf_architecture(p.config.family()).0
                );
            }
            let path = out.join("model.safetensors");
            crate::model::weights::write_safetensors(hf_tensors(p)?, &path)?;
            path
        }
        ExportFormat::Onnx => {
            let bytes = onnx::to_onnx_task(&p.model, &p.config, p.kind)?;
            let path = out.join("model.onnx");
            write_atomic(&path, &bytes)?;
            path
        }
    };
    write_config_and_side_files(p, out)?;
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
    calibration: Option<(&crate::data::DataSpec, usize)>,
    out: &Path,
    device: &Device,
) -> Result<crate::model::prune::PruneReport> {
    let clf = Predictor::load(spec, None, device)?;
    if let (crate::model::prune::Importance::Taylor, Some((data, _))) =
        (opts.importance, calibration)
    {
        clf.calibration_check(&data.path)?;
    }
    let p = plain_of(clf)?;
    let taylor = match (opts.importance, calibration) {
        (crate::model::prune::Importance::Taylor, Some((data, rows))) => {
            Some(taylor_scores(spec, &p, data, rows, device)?)
        }
        (crate::model::prune::Importance::Taylor, None) => {
            return Err(Error::Config(
                "--importance taylor needs labelled calibration data: --calibration FILE".into(),
            ));
        }
        _ => None,
    };
    let (model, config, report) =
        crate::model::prune::prune(p.model, &p.config, opts, taylor.as_ref(), device)?;
    let mut json = p.json;
    if let Some(o) = json.as_object_mut() {
        o.insert(
            config
                .family()
                .names()
                .config_key("intermediate_size")
                .into(),
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
        kind: p.kind,
    };
    write(&pruned, ExportFormat::Hf, out)?;
    crate::fsutil::write_json(&out.join("prune_report.json"), &report)?;
    Ok(report)
}

/// Taylor importance of the plain model `p` on up to `rows` labelled rows of `data` (spread
/// over the file), through an autodiff copy of the model with dropout off.
fn taylor_scores(
    spec: &str,
    p: &Plain,
    data: &crate::data::DataSpec,
    rows: usize,
    device: &Device,
) -> Result<crate::model::prune::TaylorScores> {
    let clf = Predictor::load(spec, None, device)?;
    let (examples, _) = crate::data::read_examples(data)?;
    if examples.is_empty() || rows == 0 {
        return Err(Error::Config(format!(
            "{}: no calibration rows",
            data.path.display()
        )));
    }
    let step = examples.len().div_ceil(rows).max(1);
    let chosen: Vec<crate::data::Example> = examples.into_iter().step_by(step).collect();
    let labels = crate::infer::label_ids(&chosen, &clf.labels, &data.path)?;
    let tokens = clf.tokenize(&chosen)?;
    crate::infer::log_truncated(&tokens, clf.tokenizer.max_length(), "calibration rows");
    // An autodiff copy of the model, dropout off: through a temporary weights file, so the
    // parameters are fresh leaves on the autodiff device.
    let tmp = tempfile::tempdir().map_err(|e| Error::io(Path::new("<temp dir>"), e))?;
    let weights = tmp.path().join("model.safetensors");
    crate::model::weights::save_classifier(&p.model, &weights)?;
    let ad = device.clone().autodiff();
    let spec_c = crate::model::weights::ClassifierSpec {
        num_labels: clf.labels.len(),
        pooling: p.model.pooling,
        dropout: crate::model::weights::DropoutOverride {
            hidden: Some(0.0),
            attention: Some(0.0),
        },
        seed: 0,
        require_head: true,
        head: p.model.head,
    };
    let model = crate::model::weights::load_classifier(&weights, &p.config, &spec_c, &ad)?.0;
    let lengths: Vec<usize> = tokens.iter().map(|t| t.ids.len()).collect();
    let batches: Vec<(crate::model::EncodedBatch, Vec<usize>)> =
        crate::batch::eval_batches(&lengths, 32)
            .into_iter()
            .map(|idx| {
                let refs: Vec<&crate::tokenize::Tokens> = idx.iter().map(|&i| &tokens[i]).collect();
                let y = idx.iter().map(|&i| labels[i]).collect();
                (crate::batch::collate(&refs, clf.tokenizer.pad_id(), &ad), y)
            })
            .collect();
    crate::model::prune::taylor_scores(&model, &batches)
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
    if p.model.encoder.int8().is_some() {
        return Err(Error::Model(format!(
            "{}: already quantised",
            p.dir.display()
        )));
    }
    let (int8, worst) = quant::quantize_encoder(&p.model)?;
    let tensors = hf_tensors(&p)?;
    let names = p.model.encoder.names();
    let total: usize = tensors.iter().map(|t| t.2.len()).sum();
    let words = quant::word_embeddings_name(names);
    let embedding_size = tensors
        .iter()
        .find(|t| t.0 == words)
        .map_or(0, |t| t.2.len());
    let int8_parameters: usize = int8
        .layers
        .iter()
        .flat_map(|l| l.iter().map(|q| q.weight.len()))
        .sum::<usize>()
        + embedding_size;
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    let path = out.join("model.safetensors");
    crate::model::weights::write_safetensors_raw(
        quant::int8_tensors(tensors, &int8, names),
        &path,
    )?;
    write_config_and_side_files(&p, out)?;
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
