//! Inference shared by training-time evaluation and the `eval`, `predict` and `embed`
//! commands: batched forward passes in length order, scattered back to input order.

use std::path::{Path, PathBuf};

use burn::tensor::Device;
use burn::tensor::activation::log_softmax;
use serde::Serialize;

use crate::batch::{collate, eval_batches};
use crate::data::Example;
use crate::error::{Error, Result};
use crate::metrics::{ClassificationMetrics, ConfusionAccumulator};
use crate::model::weights::{DropoutOverride, to_vec};
use crate::model::{ModelDir, Pooling, SequenceClassifier, TUNEKIT_META};
use crate::tokenize::{TextTokenizer, Tokens};

/// Class probabilities for each input (input order), and the summed cross-entropy against
/// `labels` when given.
pub fn predict_probs(
    model: &SequenceClassifier,
    tokens: &[Tokens],
    labels: Option<&[usize]>,
    batch_size: usize,
    pad_id: u32,
    device: &Device,
) -> Result<(Vec<Vec<f32>>, f64)> {
    let lengths: Vec<usize> = tokens.iter().map(|t| t.ids.len()).collect();
    let mut probs: Vec<Vec<f32>> = vec![Vec::new(); tokens.len()];
    let mut loss_sum = 0.0f64;
    for idx in eval_batches(&lengths, batch_size) {
        let refs: Vec<&Tokens> = idx.iter().map(|&i| &tokens[i]).collect();
        let batch = collate(&refs, pad_id, device);
        let logits = model.forward(&batch);
        let [n, c] = logits.dims();
        let logp = to_vec(log_softmax(logits, 1))?;
        for (row, &i) in idx.iter().enumerate() {
            let lp = &logp[row * c..(row + 1) * c];
            probs[i] = lp.iter().map(|v| v.exp()).collect();
            if let Some(labels) = labels {
                loss_sum -= f64::from(lp[labels[i]]);
            }
        }
        debug_assert_eq!(n, idx.len());
    }
    Ok((probs, loss_sum))
}

/// `f(model, batch)` for every input, in input order, as one row-major `[inputs, width]`
/// buffer and its width: batches sorted by length (little padding), rows scattered back.
fn rows_in_input_order(
    model: &SequenceClassifier,
    tokens: &[Tokens],
    batch_size: usize,
    pad_id: u32,
    device: &Device,
    f: impl Fn(&SequenceClassifier, &crate::model::EncodedBatch) -> burn::tensor::Tensor<2>,
) -> Result<(Vec<f32>, usize)> {
    let lengths: Vec<usize> = tokens.iter().map(|t| t.ids.len()).collect();
    let mut out: Vec<f32> = Vec::new();
    let mut width = 0;
    for idx in eval_batches(&lengths, batch_size) {
        let refs: Vec<&Tokens> = idx.iter().map(|&i| &tokens[i]).collect();
        let batch = collate(&refs, pad_id, device);
        let rows = f(model, &batch);
        let [_, w] = rows.dims();
        if out.is_empty() {
            width = w;
            out = vec![0.0; tokens.len() * w];
        }
        let values = to_vec(rows)?;
        for (row, &i) in idx.iter().enumerate() {
            out[i * w..(i + 1) * w].copy_from_slice(&values[row * w..(row + 1) * w]);
        }
    }
    Ok((out, width))
}

/// Encoder features ([`SequenceClassifier::encoder_features`]) of each input, in input order,
/// as one row-major `[inputs, hidden]` buffer; for caching a frozen encoder's output.
pub fn encoder_features(
    model: &SequenceClassifier,
    tokens: &[Tokens],
    batch_size: usize,
    pad_id: u32,
    device: &Device,
) -> Result<(Vec<f32>, usize)> {
    rows_in_input_order(model, tokens, batch_size, pad_id, device, |m, b| {
        m.encoder_features(b)
    })
}

/// Class logits of each input, in input order, row-major `[inputs, classes]`; for caching a
/// distillation teacher's outputs.
pub fn logits(
    model: &SequenceClassifier,
    tokens: &[Tokens],
    batch_size: usize,
    pad_id: u32,
    device: &Device,
) -> Result<(Vec<f32>, usize)> {
    rows_in_input_order(model, tokens, batch_size, pad_id, device, |m, b| {
        m.forward(b)
    })
}

/// Index of the largest probability.
pub fn argmax(p: &[f32]) -> usize {
    p.iter()
        .enumerate()
        .fold((0, f32::NEG_INFINITY), |(bi, bv), (i, &v)| {
            if v > bv { (i, v) } else { (bi, bv) }
        })
        .0
}

/// Metrics of `model` on tokenised, labelled examples.
pub fn evaluate_tokens(
    model: &SequenceClassifier,
    tokens: &[Tokens],
    labels: &[usize],
    label_names: &[String],
    batch_size: usize,
    pad_id: u32,
    device: &Device,
) -> Result<ClassificationMetrics> {
    let (probs, loss_sum) = predict_probs(model, tokens, Some(labels), batch_size, pad_id, device)?;
    Ok(metrics_from_probs(&probs, loss_sum, labels, label_names))
}

/// Metrics of predicted class probabilities against `labels`, with the summed loss.
pub fn metrics_from_probs(
    probs: &[Vec<f32>],
    loss_sum: f64,
    labels: &[usize],
    label_names: &[String],
) -> ClassificationMetrics {
    let preds: Vec<usize> = probs.iter().map(|p| argmax(p)).collect();
    let mut acc = ConfusionAccumulator::new(label_names.to_vec());
    acc.update(labels, &preds);
    acc.add_loss(loss_sum, labels.len());
    acc.finish().with_probabilities(probs, labels)
}

/// The rule for empty input, the same in every command (`eval`, `predict`, `embed`, task
/// models, `compress-report`, training data): an input with no rows to work on is an error
/// naming the file (exit code 2), and no output is written. A file without data rows (empty,
/// or a header only) is [`crate::data::DataError::Empty`]; one whose every row was dropped
/// (empty text or label) says how many rows were read and why each was dropped.
pub fn require_input(kept: usize, read: &crate::data::ReadReport, file: &Path) -> Result<()> {
    if kept > 0 {
        return Ok(());
    }
    if read.rows_read == 0 {
        return Err(Error::Data(crate::data::DataError::Empty {
            file: file.to_path_buf(),
        }));
    }
    Err(Error::Input(format!(
        "{}: no input rows left: all {} rows read were dropped ({} for an empty text, {} for an empty label)",
        file.display(),
        read.rows_read,
        read.empty_text_dropped,
        read.empty_label_dropped
    )))
}

/// Map label strings to class ids; a label the model does not know is an error naming it, the
/// file and the line.
pub fn label_ids(examples: &[Example], label_names: &[String], file: &Path) -> Result<Vec<usize>> {
    examples
        .iter()
        .map(|e| {
            let l = e.label.as_deref().unwrap_or_default();
            label_names.iter().position(|n| n == l).ok_or_else(|| {
                Error::Labels(format!(
                    "{} line {}: unknown label `{l}` (the model knows: {})",
                    file.display(),
                    e.line,
                    label_names.join(", ")
                ))
            })
        })
        .collect()
}

/// `model` with its linear layers in `precision`, checked for `device` and int8 weights.
pub(crate) fn with_precision(
    mut model: SequenceClassifier,
    precision: crate::model::Precision,
    device: &Device,
    dir: &Path,
) -> Result<SequenceClassifier> {
    if precision == crate::model::Precision::Bf16 && model.encoder.int8().is_some() {
        return Err(Error::Config(format!(
            "{}: an int8 model (`tunekit quantize`) runs int8 products; precision bf16 applies \
             to f32 models",
            dir.display()
        )));
    }
    model
        .encoder
        .set_precision(crate::model::bf16::for_device(precision, device)?);
    Ok(model)
}

/// tunekit's own facts about an exported model (`tunekit.json`).
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct ModelMeta {
    /// Pooling the head was trained with.
    pub pooling: Pooling,
    /// Max length used in training.
    pub max_length: usize,
    /// Labels in class-id order.
    pub labels: Vec<String>,
    /// The pretrained model it was fine-tuned from.
    pub base_model: String,
    /// tunekit version that wrote it.
    pub tunekit_version: String,
    /// Text cleaning and de-identification applied in training, re-applied at inference.
    /// Absent in models exported before tunekit had it (then texts are used as given).
    #[serde(default)]
    pub preprocess: Option<crate::prep::TextPreprocess>,
    /// The task, when it is not single-label classification ([`crate::task`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<crate::task::TaskMeta>,
}

/// Result of `tunekit eval`.
#[derive(Debug, Clone, Serialize)]
pub struct EvalReport {
    /// The evaluated file.
    pub file: PathBuf,
    /// Examples evaluated.
    pub examples: usize,
    /// Rows dropped for empty text.
    pub dropped_empty_text: usize,
    /// Rows dropped for an empty label.
    pub dropped_empty_label: usize,
    /// Examples longer than `max_length` (truncated).
    pub truncated: usize,
    /// The max length used.
    pub max_length: usize,
    /// Metrics.
    pub metrics: ClassificationMetrics,
    /// Metrics under input perturbations (`--robustness`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub robustness: Option<Vec<crate::robustness::PerturbationResult>>,
}

/// Counts from `tunekit predict`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PredictSummary {
    /// Rows predicted.
    pub rows: usize,
    /// Rows truncated to `max_length`.
    pub truncated: usize,
    /// Rows of the file not predicted because their text is empty (no output line for them).
    pub dropped_empty_text: usize,
}

/// Report (at `info`, shown by default) how many of `tokens` `max_length` cut, when any: the
/// commands without a summary of their own (embed, distillation's teacher, prune calibration,
/// compress-report) say so this way.
pub fn log_truncated(tokens: &[Tokens], max_length: usize, what: &str) {
    let truncated = tokens.iter().filter(|t| t.truncated).count();
    if truncated > 0 {
        tracing::info!(
            "{truncated} of {} {what} truncated to {max_length} tokens",
            tokens.len()
        );
    }
}

/// Sentence embeddings of `texts` and how they were made.
#[derive(Debug, Clone)]
pub struct Embeddings {
    /// One vector per text, in input order.
    pub vectors: Vec<Vec<f32>>,
    /// Pooling, normalisation and max length used ([`crate::embed::EmbeddingConfig`]).
    pub config: crate::embed::EmbeddingConfig,
    /// Texts longer than the max length (truncated).
    pub truncated: usize,
}

/// Sentence embeddings from any BERT model directory (the base encoder; a classification
/// head, if present, is ignored), made as the model's sentence-transformers configuration
/// says ([`crate::embed`]) unless `options` override it.
pub fn embed_texts(
    spec: &str,
    texts: &[&str],
    options: &crate::embed::EmbedOptions,
    device: &Device,
) -> Result<Embeddings> {
    let dir = ModelDir::open(spec)?;
    let config = crate::embed::EmbeddingConfig::resolve(&dir.dir, &dir.config, options)?;
    let bert = crate::model::weights::load_encoder(
        &dir.weights_path(),
        &dir.config,
        DropoutOverride::default(),
        device,
    )?;
    let tokenizer =
        TextTokenizer::for_model(&dir.tokenizer_path(), config.max_length, &dir.config)?;
    // A model tunekit trained sees texts as in training (cleaned, de-identified), as `serve`'s
    // /embed does; a model without tunekit.json gets the texts as they are.
    let meta_path = dir.dir.join(TUNEKIT_META);
    let preprocess = if meta_path.is_file() {
        crate::fsutil::read_json::<ModelMeta>(&meta_path)?.preprocess
    } else {
        None
    };
    let prepared: Vec<std::borrow::Cow<'_, str>> = texts
        .iter()
        .map(|t| match &preprocess {
            Some(p) => std::borrow::Cow::Owned(p.apply(t)),
            None => std::borrow::Cow::Borrowed(*t),
        })
        .collect();
    let texts: Vec<&str> = prepared.iter().map(|t| t.as_ref()).collect();
    let tokens = tokenizer.encode_batch(&texts, None)?;
    log_truncated(&tokens, tokenizer.max_length(), "texts");
    let vectors = crate::embed::embed_tokens(
        &bert,
        &tokens,
        config.pooling,
        config.normalize,
        32,
        tokenizer.pad_id(),
        device,
    )?;
    Ok(Embeddings {
        vectors,
        truncated: tokens.iter().filter(|t| t.truncated).count(),
        config,
    })
}
