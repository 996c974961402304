//! Inference for the non-classification tasks: forward passes that give each task's outputs,
//! the exported model directory, and [`TaskModel`] — a trained task model loaded for
//! `tunekit eval` and `tunekit predict`.

use std::io::Write;
use std::path::{Path, PathBuf};

use burn::tensor::activation::log_softmax;
use burn::tensor::{Device, Tensor};
use serde::Serialize;

use super::run::{Targets, TaskSplit, word_tags};
use super::{Scores, TaskKind, TaskMeta, multilabel, ner};
use crate::batch::{collate, eval_batches};
use crate::config::RunConfig;
use crate::data::{DataSpec, read_examples};
use crate::error::{Error, Result};
use crate::fsutil::{write_atomic, write_json};
use crate::infer::ModelMeta;
use crate::model::weights::{
    ClassifierSpec, DropoutOverride, classifier_tensors, load_classifier, to_vec, write_safetensors,
};
use crate::model::{EncodedBatch, ModelDir, SequenceClassifier, TUNEKIT_META};
use crate::tokenize::{TextTokenizer, Tokens};

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
/// head's dropout and classifier (`BertForTokenClassification`).
pub fn token_logits(model: &SequenceClassifier, batch: &EncodedBatch) -> Tensor<3> {
    let hidden = model.bert.forward(batch);
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
    let (arch, problem) = kind.hf_architecture();
    if kind != TaskKind::Embedding {
        hf.set_labels(labels);
    }
    hf.architectures = Some(vec![arch.into()]);
    if let Some(p) = problem {
        hf.extra.insert("problem_type".into(), serde_json::json!(p));
    }
    write_json(&dir.join("config.json"), &hf)?;
    match (&config.strategy.lora, model) {
        (Some(opts), _) => {
            use crate::model::lora::{ADAPTER_CONFIG, ADAPTER_WEIGHTS, AdapterConfig};
            crate::fsutil::copy_atomic(&best.join(ADAPTER_WEIGHTS), &dir.join(ADAPTER_WEIGHTS))?;
            let mut adapter = AdapterConfig::new(opts, &model_dir.dir);
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
            task: Some(meta.clone()),
        },
    )
}

/// A trained task model (multilabel, regression, token classification, embedding) loaded
/// for inference.
pub struct TaskModel {
    /// The model in inference mode.
    pub model: SequenceClassifier,
    /// Its tokenizer.
    pub tokenizer: TextTokenizer,
    /// Output names (labels, tags, target).
    pub labels: Vec<String>,
    /// The task and its inference settings.
    pub meta: TaskMeta,
    /// Training-time text preprocessing.
    pub preprocess: Option<crate::prep::TextPreprocess>,
    /// Where it runs.
    pub device: Device,
    /// The model directory.
    pub dir: PathBuf,
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

impl TaskModel {
    /// Runs the encoder's linear layers in `precision` ([`crate::infer::Classifier::with_precision`]).
    pub fn with_precision(mut self, precision: crate::model::Precision) -> Result<Self> {
        self.model = crate::infer::with_precision(self.model, precision, &self.device, &self.dir)?;
        Ok(self)
    }

    /// Load the model at `spec` if `tunekit.json` names a non-classification task; `None`
    /// for a classifier (or a model tunekit did not train).
    pub fn load(spec: &str, max_length: Option<usize>, device: &Device) -> Result<Option<Self>> {
        let resolved = crate::hub::resolve_model(spec)?;
        let meta_path = resolved.join(TUNEKIT_META);
        if !meta_path.is_file() {
            return Ok(None);
        }
        let meta: ModelMeta = crate::fsutil::read_json(&meta_path)?;
        let Some(task) = meta.task.clone() else {
            return Ok(None);
        };
        if task.kind.is_classification() {
            return Ok(None);
        }
        let adapter = resolved.join(crate::model::lora::ADAPTER_CONFIG).is_file();
        let spec_c = ClassifierSpec {
            num_labels: meta.labels.len().max(1),
            pooling: meta.pooling,
            dropout: DropoutOverride::default(),
            seed: 0,
            require_head: task.kind != TaskKind::Embedding,
        };
        let config = if adapter {
            crate::model::BertConfig::from_file(&resolved.join("config.json"))?
        } else {
            ModelDir::open(spec)?.config
        };
        let model = if adapter {
            crate::model::lora::load_for_inference(&resolved, &spec_c, device)?.0
        } else {
            load_classifier(
                &resolved.join("model.safetensors"),
                &config,
                &spec_c,
                device,
            )?
            .0
        };
        let max_length = max_length.unwrap_or(meta.max_length);
        let tokenizer =
            TextTokenizer::for_model(&resolved.join("tokenizer.json"), max_length, &config)?;
        Ok(Some(TaskModel {
            model,
            tokenizer,
            labels: meta.labels,
            meta: task,
            preprocess: meta.preprocess,
            device: device.clone(),
            dir: resolved,
        }))
    }

    fn split(&self, name: &str, path: &Path, spec: Option<&DataSpec>) -> Result<TaskSplit> {
        let mut split = match (self.meta.kind, spec) {
            (TaskKind::TokenClassification, _) => {
                // The encoding options of `--encoding`/`--on-decode-error`, as in training.
                let (encoding, replace) = spec.map_or((Default::default(), false), |d| {
                    (d.encoding, d.replace_invalid)
                });
                let (sentences, _) = ner::read_conll_with(path, true, encoding, replace)?;
                super::run::conll_split(name, path, sentences, &self.labels, &self.tokenizer)?.0
            }
            (kind, Some(spec)) => {
                // Multilabel: an empty label cell is the empty label set, scored like any row.
                let mut spec = spec.clone();
                if kind == TaskKind::Multilabel && spec.label_column.is_some() {
                    spec.fill_label.get_or_insert_with(String::new);
                }
                let (mut examples, read) = read_examples(&spec)?;
                crate::infer::require_input(examples.len(), &read, &spec.path)?;
                if let Some(p) = &self.preprocess {
                    for e in &mut examples {
                        e.text = p.apply(&e.text);
                        if let Some(t) = e.text_pair.as_mut() {
                            *t = p.apply(t);
                        }
                    }
                }
                super::run::table_split(
                    self.meta.kind,
                    name,
                    path,
                    &examples,
                    &self.labels,
                    &self.meta.label_separator,
                    &self.tokenizer,
                )?
            }
            (_, None) => {
                return Err(Error::Config(format!(
                    "{}: a data spec is needed for this task",
                    path.display()
                )));
            }
        };
        split.name = name.into();
        Ok(split)
    }

    /// Scores on a labelled file (CoNLL for token classification; `spec` for the others).
    pub fn evaluate(
        &self,
        path: &Path,
        spec: Option<&DataSpec>,
        batch_size: usize,
    ) -> Result<TaskEvalReport> {
        let split = self.split("eval", path, spec)?;
        let settings = super::run::EvalSettings {
            kind: self.meta.kind,
            batch_size,
            fixed_threshold: None,
            scale: self.meta.contrastive_scale.unwrap_or(20.0),
            pad_id: self.tokenizer.pad_id(),
        };
        let thresholds = (!self.meta.thresholds.is_empty()).then_some(&self.meta.thresholds[..]);
        let scores = super::run::evaluate(
            &settings,
            &self.model,
            &split,
            &self.labels,
            thresholds,
            &self.device,
        )?
        .scores;
        Ok(TaskEvalReport {
            task: self.meta.kind,
            model: self.dir.clone(),
            data: path.to_path_buf(),
            examples: split.tokens.len(),
            truncated: split.tokens.iter().filter(|t| t.truncated).count(),
            scores,
        })
    }

    /// Predict every input and write JSONL to `output` (atomically): multilabel → `labels`
    /// and `probabilities`; regression → `prediction`; token classification (CoNLL input,
    /// one word per line, blank lines between sentences, tags ignored if present) → `words`,
    /// `tags` and `entities`; embedding → `embedding`. Returns the number of inputs and how
    /// many were truncated to the max length (a truncated sentence's cut-off words are
    /// tagged `O` and counted in its line's `words_truncated`).
    pub fn predict(
        &self,
        input: &Path,
        spec: Option<&DataSpec>,
        output: &Path,
        batch_size: usize,
    ) -> Result<(usize, usize)> {
        let pad = self.tokenizer.pad_id();
        let dev = &self.device;
        let mut lines: Vec<serde_json::Value> = Vec::new();
        let truncated;
        if self.meta.kind == TaskKind::TokenClassification {
            let (encoding, replace) = spec.map_or((Default::default(), false), |d| {
                (d.encoding, d.replace_invalid)
            });
            let (sentences, _) = ner::read_conll_with(input, false, encoding, replace)?;
            let words: Vec<Vec<String>> = sentences.iter().map(|s| s.words.clone()).collect();
            let enc = self.tokenizer.encode_words(&words)?;
            let tokens: Vec<Tokens> = enc.iter().map(|e| e.tokens.clone()).collect();
            truncated = tokens.iter().filter(|t| t.truncated).count();
            let Outputs::Pieces(pieces, _) =
                outputs(self.meta.kind, &self.model, &tokens, batch_size, pad, dev)?
            else {
                return Err(Error::Engine("unexpected outputs".into()));
            };
            for ((s, e), p) in sentences.iter().zip(&enc).zip(&pieces) {
                let seen = e
                    .word_ids
                    .iter()
                    .flatten()
                    .collect::<std::collections::BTreeSet<_>>()
                    .len();
                let tags: Vec<String> = ner::word_predictions(&e.word_ids, p, s.words.len(), 0)
                    .into_iter()
                    .map(|id| self.labels.get(id).cloned().unwrap_or_else(|| "O".into()))
                    .collect();
                let ents: Vec<serde_json::Value> = ner::entities(std::slice::from_ref(&tags))
                    .into_iter()
                    .map(|(ty, a, b)| {
                        serde_json::json!({"type": ty, "start": a, "end": b + 1, "text": s.words[a..=b].join(" ")})
                    })
                    .collect();
                lines.push(serde_json::json!({
                    "line": s.line, "words": s.words, "tags": tags, "entities": ents,
                    "words_truncated": s.words.len() - seen
                }));
            }
        } else {
            let spec = spec.ok_or_else(|| Error::Config("a data spec is needed".into()))?;
            let (examples, read) = read_examples(spec)?;
            crate::infer::require_input(examples.len(), &read, &spec.path)?;
            if read.empty_text_dropped > 0 {
                // Never a silently lost row: output lines + this count = rows in the file.
                tracing::warn!(
                    "{}: {} rows dropped for an empty text: no output line for them",
                    spec.path.display(),
                    read.empty_text_dropped
                );
            }
            let texts: Vec<String> = examples
                .iter()
                .map(|e| match &self.preprocess {
                    Some(p) => p.apply(&e.text),
                    None => e.text.clone(),
                })
                .collect();
            let pairs: Option<Vec<String>> = examples
                .iter()
                .map(|e| {
                    e.text_pair.as_ref().map(|t| match &self.preprocess {
                        Some(p) => p.apply(t),
                        None => t.clone(),
                    })
                })
                .collect();
            let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
            let prefs: Option<Vec<&str>> = pairs
                .as_ref()
                .filter(|_| self.meta.kind != TaskKind::Embedding)
                .map(|p| p.iter().map(String::as_str).collect());
            let tokens = self.tokenizer.encode_batch(&refs, prefs.as_deref())?;
            truncated = tokens.iter().filter(|t| t.truncated).count();
            let out = outputs(self.meta.kind, &self.model, &tokens, batch_size, pad, dev)?;
            for (i, e) in examples.iter().enumerate() {
                let v = match &out {
                    Outputs::Probs(p, _) => {
                        let labels: Vec<&str> = p[i]
                            .iter()
                            .zip(&self.meta.thresholds)
                            .zip(&self.labels)
                            .filter(|((pv, t), _)| f64::from(**pv) >= **t)
                            .map(|(_, l)| l.as_str())
                            .collect();
                        serde_json::json!({"line": e.line, "text": e.text, "labels": labels, "probabilities": p[i]})
                    }
                    Outputs::Values(v) => {
                        serde_json::json!({"line": e.line, "text": e.text, "prediction": v[i]})
                    }
                    Outputs::Embeddings(v) => {
                        serde_json::json!({"line": e.line, "text": e.text, "embedding": v[i]})
                    }
                    Outputs::Pieces(..) => serde_json::Value::Null,
                };
                lines.push(v);
            }
        }
        let mut buf = Vec::new();
        for l in &lines {
            serde_json::to_writer(&mut buf, l).map_err(|e| Error::Engine(e.to_string()))?;
            buf.write_all(b"\n").map_err(|e| Error::io(output, e))?;
        }
        write_atomic(output, &buf)?;
        Ok((lines.len(), truncated))
    }
}
