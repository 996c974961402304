//! Inference for the non-classification tasks: forward passes that give each task's outputs
//! and the exported model directory. Loading a trained model for inference is
//! [`crate::predictor::Predictor`]'s, for every task.

use std::path::{Path, PathBuf};

use burn::tensor::activation::log_softmax;
use burn::tensor::{Device, Tensor};
use serde::Serialize;

use super::run::{Targets, TaskSplit, word_tags};
use super::{Scores, TaskKind, TaskMeta, multilabel, ner};
use crate::batch::{collate, eval_batches};
use crate::config::RunConfig;
use crate::error::{Error, Result};
use crate::fsutil::{write_atomic, write_json};
use crate::infer::ModelMeta;
use crate::model::weights::{classifier_tensors, to_vec, write_safetensors};
use crate::model::{EncodedBatch, ModelDir, SequenceClassifier, TUNEKIT_META};
use crate::tokenize::Tokens;

/// Per-example outputs of a task model, in input order.
#[derive(Debug, Clone)]
pub enum Outputs {
    /// Multilabel: sigmoid probabilities and logits per label.
    Probs(Vec<Vec<f32>>, Vec<Vec<f32>>),
    /// Regression: the predicted value.
    Values(Vec<f32>),
    /// Token classification: predicted tag id per piece, and per-piece log-probabilities
    /// (row-major `[pieces, tags]`).
    Pieces(Vec<Vec<usize>>, Vec<Vec<f32>>),
    /// Embedding: L2-normalised sentence vectors.
    Embeddings(Vec<Vec<f32>>),
}

/// Tag logits of every piece `[batch, seq, tags]`: the encoder's hidden states through the
/// head's dropout and classifier (`BertForTokenClassification`), after the prediction head on
/// every token in families that have one (`ModernBertForTokenClassification`).
pub fn token_logits(model: &SequenceClassifier, batch: &EncodedBatch) -> Tensor<3> {
    let hidden = model.encoder.forward(batch);
    let hidden = match &model.pooler {
        Some(head) if head.prediction_head => head.forward(hidden),
        _ => hidden,
    };
    model.classifier.forward(model.dropout.forward(hidden))
}

/// L2-normalised sentence embeddings (the encoder features: mean or [CLS] per
/// `model.pooling`) of each input, in input order.
pub fn embeddings(
    model: &SequenceClassifier,
    tokens: &[Tokens],
    batch_size: usize,
    pad_id: u32,
    device: &Device,
) -> Result<Vec<Vec<f32>>> {
    let (values, h) = crate::infer::encoder_features(model, tokens, batch_size, pad_id, device)?;
    Ok(values
        .chunks(h.max(1))
        .map(|row| {
            let n = row.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-12);
            row.iter().map(|v| v / n).collect()
        })
        .collect())
}

/// The task's outputs for every input.
pub fn outputs(
    kind: TaskKind,
    model: &SequenceClassifier,
    tokens: &[Tokens],
    batch_size: usize,
    pad_id: u32,
    device: &Device,
) -> Result<Outputs> {
    match kind {
        TaskKind::Multilabel => {
            let (v, w) = crate::infer::logits(model, tokens, batch_size, pad_id, device)?;
            let logits: Vec<Vec<f32>> = v.chunks(w.max(1)).map(<[f32]>::to_vec).collect();
            let probs = logits
                .iter()
                .map(|r| r.iter().map(|&x| multilabel::sigmoid(x)).collect())
                .collect();
            Ok(Outputs::Probs(probs, logits))
        }
        TaskKind::Regression => {
            let (v, _) = crate::infer::logits(model, tokens, batch_size, pad_id, device)?;
            Ok(Outputs::Values(v))
        }
        TaskKind::Embedding => Ok(Outputs::Embeddings(embeddings(
            model, tokens, batch_size, pad_id, device,
        )?)),
        TaskKind::TokenClassification => {
            let lengths: Vec<usize> = tokens.iter().map(|t| t.ids.len()).collect();
            let mut pred = vec![Vec::new(); tokens.len()];
            let mut logp_rows = vec![Vec::new(); tokens.len()];
            for idx in eval_batches(&lengths, batch_size) {
                let refs: Vec<&Tokens> = idx.iter().map(|&i| &tokens[i]).collect();
                let batch = collate(&refs, pad_id, device);
                let logits = token_logits(model, &batch);
                let [b, seq, c] = logits.dims();
                let logp = to_vec(log_softmax(logits.reshape([b * seq, c]), 1))?;
                for (row, &i) in idx.iter().enumerate() {
                    let n = lengths[i];
                    let rows = &logp[row * seq * c..(row * seq + n) * c];
                    pred[i] = rows.chunks(c).map(crate::infer::argmax).collect();
                    logp_rows[i] = rows.to_vec();
                }
            }
            Ok(Outputs::Pieces(pred, logp_rows))
        }
        TaskKind::Classification | TaskKind::PairClassification => Err(Error::Config(
            "classification runs through tunekit::infer".into(),
        )),
        TaskKind::CausalLm => Err(Error::Config(
            "a decoder language model generates text: use `tunekit generate`".into(),
        )),
    }
}

/// Mean binary cross-entropy (over examples × labels) from logits, as `BCEWithLogitsLoss`.
pub fn bce_mean(logits: &[Vec<f32>], targets: &[Vec<f32>]) -> f64 {
    let mut sum = 0.0f64;
    let mut n = 0usize;
    for (row, y) in logits.iter().zip(targets) {
        for (&x, &t) in row.iter().zip(y) {
            let (x, t) = (f64::from(x), f64::from(t));
            sum += x.max(0.0) - x * t + (-x.abs()).exp().ln_1p();
            n += 1;
        }
    }
    sum / n.max(1) as f64
}

/// Summed negative log-likelihood of the labelled pieces.
pub fn token_nll(logp: &[Vec<f32>], targets: &[Vec<i64>]) -> f64 {
    let mut sum = 0.0;
    for (rows, t) in logp.iter().zip(targets) {
        let c = if t.is_empty() {
            1
        } else {
            rows.len() / t.len()
        };
        for (k, &y) in t.iter().enumerate() {
            if y != ner::IGNORE {
                sum -= f64::from(rows[k * c + y as usize]);
            }
        }
    }
    sum
}

/// Entity-level precision/recall/F1 (seqeval), word-level tag accuracy, and the F1 of each
/// entity type as `f1/<type>`.
pub fn ner_scores(gold: &[Vec<String>], pred: &[Vec<String>]) -> Scores {
    let (all, per_type) = ner::entity_scores(gold, pred);
    let (mut right, mut words) = (0usize, 0usize);
    for (g, p) in gold.iter().zip(pred) {
        right += g.iter().zip(p).filter(|(a, b)| a == b).count();
        words += g.len();
    }
    let mut scores: Scores = per_type
        .into_iter()
        .map(|(ty, s)| (format!("f1/{ty}"), s.f1))
        .collect();
    scores.extend([
        ("precision".to_string(), all.precision),
        ("recall".to_string(), all.recall),
        ("f1".to_string(), all.f1),
        (
            "token_accuracy".to_string(),
            right as f64 / words.max(1) as f64,
        ),
    ]);
    scores
}

/// One line of `predictions/<split>.jsonl` (fields by task).
#[derive(Serialize)]
struct PredictionLine<'a> {
    text: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    labels: Option<Vec<&'a str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    predicted: Option<Vec<&'a str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    probabilities: Option<&'a [f32]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    target: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    prediction: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    positive_rank: Option<usize>,
    /// Token classification: the sentence's words (`labels` / `predicted` are per word).
    #[serde(skip_serializing_if = "Option::is_none")]
    words: Option<&'a [String]>,
    /// Embedding: cosine similarity of the anchor with its own positive.
    #[serde(skip_serializing_if = "Option::is_none")]
    positive_similarity: Option<f64>,
    /// Embedding: row of the most similar other positive (the hardest in-split negative).
    #[serde(skip_serializing_if = "Option::is_none")]
    nearest_negative: Option<usize>,
    /// Embedding: its cosine similarity with the anchor.
    #[serde(skip_serializing_if = "Option::is_none")]
    nearest_negative_similarity: Option<f64>,
}

fn lines_of<'a>(
    split: &'a TaskSplit,
    outputs: &'a Outputs,
    labels: &'a [String],
    thresholds: &[f64],
    positives: Option<&[Vec<f32>]>,
) -> Vec<PredictionLine<'a>> {
    let blank = |text: &'a str| PredictionLine {
        text,
        labels: None,
        predicted: None,
        probabilities: None,
        target: None,
        prediction: None,
        positive_rank: None,
        words: None,
        positive_similarity: None,
        nearest_negative: None,
        nearest_negative_similarity: None,
    };
    let chosen = |probs: &[f32]| -> Vec<&'a str> {
        probs
            .iter()
            .zip(thresholds)
            .zip(labels)
            .filter(|((p, t), _)| f64::from(**p) >= **t)
            .map(|(_, l)| l.as_str())
            .collect()
    };
    match (&split.targets, outputs) {
        (Targets::Multi(t), Outputs::Probs(p, _)) => split
            .texts
            .iter()
            .zip(t)
            .zip(p)
            .map(|((text, y), pr)| PredictionLine {
                labels: Some(
                    y.iter()
                        .zip(labels)
                        .filter(|(v, _)| **v > 0.5)
                        .map(|(_, l)| l.as_str())
                        .collect(),
                ),
                predicted: Some(chosen(pr)),
                probabilities: Some(pr),
                ..blank(text)
            })
            .collect(),
        (Targets::Value(t), Outputs::Values(v)) => split
            .texts
            .iter()
            .zip(t)
            .zip(v)
            .map(|((text, &y), &pv)| PredictionLine {
                target: Some(y),
                prediction: Some(pv),
                ..blank(text)
            })
            .collect(),
        (Targets::Tags(_), Outputs::Pieces(pieces, _)) => {
            let pred = word_tags(split, pieces, labels);
            split
                .texts
                .iter()
                .zip(&split.sentences)
                .zip(pred)
                .map(|((text, s), p)| PredictionLine {
                    labels: Some(s.tags.iter().map(String::as_str).collect()),
                    predicted: Some(
                        p.iter()
                            .map(|t| labels.iter().find(|l| *l == t).map_or("O", String::as_str))
                            .collect(),
                    ),
                    words: Some(s.words.as_slice()),
                    ..blank(text)
                })
                .collect()
        }
        (Targets::Positives(_), Outputs::Embeddings(a)) => {
            let pos = positives.unwrap_or(&[]);
            split
                .texts
                .iter()
                .zip(a)
                .enumerate()
                .map(|(i, (text, av))| {
                    // Summed in f64 as `embedding::retrieval_scores`, so ranks agree with the MRR.
                    let dot = |p: &Vec<f32>| -> f64 {
                        av.iter().zip(p).map(|(x, y)| f64::from(x * y)).sum()
                    };
                    let sims: Vec<f64> = pos.iter().map(dot).collect();
                    let own = sims.get(i).copied();
                    let nearest = sims
                        .iter()
                        .enumerate()
                        .filter(|&(j, _)| j != i)
                        .max_by(|a, b| a.1.total_cmp(b.1));
                    PredictionLine {
                        positive_rank: own.map(|s| 1 + sims.iter().filter(|&&p| p > s).count()),
                        positive_similarity: own,
                        nearest_negative: nearest.map(|(j, _)| j),
                        nearest_negative_similarity: nearest.map(|(_, &v)| v),
                        ..blank(text)
                    }
                })
                .collect()
        }
        _ => Vec::new(),
    }
}

/// Write `run_dir/predictions/<split>.jsonl`: each example's text, truth and prediction.
pub fn write_predictions(
    run_dir: &Path,
    split: &TaskSplit,
    outputs: &Outputs,
    labels: &[String],
    thresholds: &[f64],
    positives: Option<&[Vec<f32>]>,
) -> Result<()> {
    let dir = run_dir.join("predictions");
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    let mut text = String::new();
    for line in lines_of(split, outputs, labels, thresholds, positives) {
        text.push_str(&serde_json::to_string(&line).map_err(|e| Error::Engine(e.to_string()))?);
        text.push('\n');
    }
    write_atomic(&dir.join(format!("{}.jsonl", split.name)), text.as_bytes())
}

/// Write an exported task model in HF layout (see [`super::run`]). `model` is the trained
/// model when it is not LoRA (embedding exports drop its unused head from the weights).
pub fn export_model_dir(
    config: &RunConfig,
    model_dir: &ModelDir,
    labels: &[String],
    best: &Path,
    dir: &Path,
    meta: &TaskMeta,
    model: Option<&SequenceClassifier>,
) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let kind = meta.kind;
    let mut hf = model_dir.config.clone();
    let (arch, problem) = kind.hf_architecture(model_dir.config.family());
    if kind != TaskKind::Embedding {
        hf.set_labels(labels);
    }
    hf.architectures = Some(vec![arch.into()]);
    if let Some(p) = problem {
        hf.extra.insert("problem_type".into(), serde_json::json!(p));
    }
    if let Some(p) = crate::model::modernbert::classifier_pooling(hf.family(), config.model.pooling)
    {
        // ModernBERT's head pools as its config says: record the pooling the model ran.
        hf.extra
            .insert("classifier_pooling".into(), serde_json::json!(p));
    }
    write_json(&dir.join("config.json"), &hf.to_json()?)?;
    match (&config.strategy.lora, model) {
        (Some(opts), _) => {
            use crate::model::lora::{ADAPTER_CONFIG, ADAPTER_WEIGHTS, AdapterConfig};
            crate::fsutil::copy_atomic(&best.join(ADAPTER_WEIGHTS), &dir.join(ADAPTER_WEIGHTS))?;
            let mut adapter =
                AdapterConfig::new(opts, &model_dir.dir, model_dir.config.family().names());
            // PEFT's task type decides which transformers class it wraps.
            adapter.task_type = match kind {
                TaskKind::TokenClassification => "TOKEN_CLS",
                TaskKind::Embedding => "FEATURE_EXTRACTION",
                _ => "SEQ_CLS",
            }
            .into();
            write_json(&dir.join(ADAPTER_CONFIG), &adapter)?;
        }
        (None, Some(m)) if kind == TaskKind::Embedding => {
            let tensors: Vec<_> = classifier_tensors(m)?
                .into_iter()
                .filter(|(n, _, _)| !n.starts_with("classifier."))
                .collect();
            write_safetensors(tensors, &dir.join("model.safetensors"))?;
        }
        (None, _) => crate::fsutil::copy_atomic(
            &best.join("model.safetensors"),
            &dir.join("model.safetensors"),
        )?,
    }
    for f in [
        "tokenizer.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
        "vocab.txt",
    ] {
        let src = model_dir.dir.join(f);
        if src.is_file() {
            crate::fsutil::copy_atomic(&src, &dir.join(f))?;
        }
    }
    if kind == TaskKind::Embedding {
        // sentence-transformers' layout: Transformer module, then pooling.
        write_json(
            &dir.join("modules.json"),
            &serde_json::json!([
                {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
                {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
                {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}
            ]),
        )?;
        let mean = config.model.pooling == crate::model::Pooling::Mean;
        std::fs::create_dir_all(dir.join("1_Pooling")).map_err(|e| Error::io(dir, e))?;
        std::fs::create_dir_all(dir.join("2_Normalize")).map_err(|e| Error::io(dir, e))?;
        write_json(
            &dir.join("1_Pooling/config.json"),
            &serde_json::json!({
                "word_embedding_dimension": model_dir.config.hidden_size,
                "pooling_mode_cls_token": !mean,
                "pooling_mode_mean_tokens": mean,
                "pooling_mode_max_tokens": false,
                "pooling_mode_mean_sqrt_len_tokens": false
            }),
        )?;
        write_json(
            &dir.join("sentence_bert_config.json"),
            &serde_json::json!({"max_seq_length": config.model.max_length, "do_lower_case": false}),
        )?;
    }
    write_json(
        &dir.join(TUNEKIT_META),
        &ModelMeta {
            pooling: config.model.pooling,
            max_length: config.model.max_length,
            labels: labels.to_vec(),
            base_model: config.model.path.clone(),
            tunekit_version: env!("CARGO_PKG_VERSION").into(),
            preprocess: Some(crate::prep::TextPreprocess::from_config(&config.data)),
            // Classification is what a model without a task is (and what transformers-trained
            // models are), so its tunekit.json names none.
            task: (!kind.is_classification()).then(|| meta.clone()),
        },
    )
}

/// `tunekit eval` of a task model: the scores and what they were computed on.
#[derive(Debug, Clone, Serialize)]
pub struct TaskEvalReport {
    /// The task.
    pub task: TaskKind,
    /// The model directory.
    pub model: PathBuf,
    /// The data file.
    pub data: PathBuf,
    /// Examples (sentences for token classification).
    pub examples: usize,
    /// Examples truncated to the model's max length.
    pub truncated: usize,
    /// Scores.
    pub scores: Scores,
}
