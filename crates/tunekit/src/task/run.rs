//! The training loop of the non-classification tasks (multilabel, regression, token
//! classification, embedding).
//!
//! It is [`crate::train`]'s loop with the task's targets, loss and scores swapped in, and
//! reuses its pieces — optimiser and no-decay group, frozen parameters and gradual
//! unfreezing, layer-wise LR decay, LoRA, global-norm clipping, L1, reseeded dropout,
//! checkpoints with resume, early stopping, TensorBoard, the search's pruning hook — so each
//! strategy means the same thing for every task. What it leaves to classification: class
//! weights, oversampling, focal loss, label smoothing, augmentation, distillation and the
//! HTML report (their configs are rejected for these tasks, see [`super::TaskSection`]).
//!
//! Run directory: `config.toml`, `data_report.json`, `metrics.jsonl` (one [`TaskEvalRecord`]
//! per evaluation), `checkpoints/`, `best/`, `model/` (HF layout with `tunekit.json` → `task`),
//! `predictions/{validation,test}.jsonl`, `metrics.json` ([`RunMetrics`] with
//! `validation_scores` / `test_scores`), TensorBoard events.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::module::Module;
use burn::optim::{GradientsAccumulator, GradientsParams};
use burn::tensor::activation::log_softmax;
use burn::tensor::{Device, Int, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use super::ner::{self, IGNORE, Sentence};
use super::predict::{self, Outputs};
use super::{Scores, TagScheme, TaskKind, TaskMeta, embedding, multilabel, regression};
use crate::batch::{collate, epoch_batches, epoch_seed};
use crate::config::RunConfig;
use crate::data::Example;
use crate::error::{Error, Result};
use crate::fsutil::write_json;
use crate::model::weights::{ClassifierSpec, DropoutOverride, load_classifier};
use crate::model::{ModelDir, SequenceClassifier};
use crate::tokenize::{TextTokenizer, Tokens};
use crate::train::{
    RunMetrics, TrainOptions, TrainState, build_optimizer, layer_schedules, model_param_ids,
    optimizer_step, progress_bar, restore, resume_point, rewrite_history, save_checkpoint,
    save_weights, step_seed, trainable_model, trainable_params, unfreeze_to_stage,
};

/// The training targets of a split.
#[derive(Debug, Clone)]
pub enum Targets {
    /// Multi-hot rows (multilabel).
    Multi(Vec<Vec<f32>>),
    /// One value per example (regression).
    Value(Vec<f32>),
    /// Per word-piece tag ids, [`IGNORE`] where not scored (token classification).
    Tags(Vec<Vec<i64>>),
    /// The positive text's tokens of each anchor (embedding).
    Positives(Vec<Tokens>),
}

/// One split, tokenised, with its targets.
pub struct TaskSplit {
    /// `train`, `validation` or `test`.
    pub name: String,
    /// The file it came from.
    pub file: PathBuf,
    /// Input tokens (the anchors, for embedding).
    pub tokens: Vec<Tokens>,
    /// Targets.
    pub targets: Targets,
    /// The text of each example, for the predictions file (words joined for NER).
    pub texts: Vec<String>,
    /// Token classification: the sentences (words, gold tags) and each piece's word.
    pub sentences: Vec<Sentence>,
    /// Token classification: word index of every piece.
    pub word_ids: Vec<Vec<Option<u32>>>,
}

impl TaskSplit {
    /// How many things the loss averages over in these examples: labelled pieces for token
    /// classification, examples otherwise.
    fn loss_units(&self, idx: &[usize]) -> usize {
        match &self.targets {
            Targets::Tags(t) => idx
                .iter()
                .map(|&i| t[i].iter().filter(|&&v| v != IGNORE).count())
                .sum(),
            _ => idx.len(),
        }
    }
}

/// One evaluation during training (a line of `metrics.jsonl`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TaskEvalRecord {
    /// Optimiser steps done.
    pub step: usize,
    /// Epoch (fractional).
    pub epoch: f64,
    /// Mean training loss since the previous evaluation.
    pub train_loss: f64,
    /// Learning rate of the last step.
    pub learning_rate: f64,
    /// Validation scores.
    pub validation: Scores,
    /// Seconds of training so far.
    pub elapsed_s: f64,
}

/// Everything prepared before the loop.
pub struct TaskData {
    /// The pretrained model.
    pub model_dir: ModelDir,
    /// Names of the head's outputs: labels, tags, or the regression target.
    pub labels: Vec<String>,
    /// Splits.
    pub train: TaskSplit,
    /// Validation split, if any.
    pub validation: Option<TaskSplit>,
    /// Test split, if any.
    pub test: Option<TaskSplit>,
    /// The tokenizer.
    pub tokenizer: TextTokenizer,
    /// Token classification: the tag scheme.
    pub scheme: Option<TagScheme>,
    /// The data report (`data_report.json`).
    pub report: serde_json::Value,
    /// The data report as text.
    pub report_text: String,
}

/// Read, prepare and tokenise the data of a task run, with every check that precedes the
/// first step; writes `data_report.json` (and `.txt`) to `run_dir` when given (`None`:
/// `tunekit data check`, through [`crate::train::check_data`]).
pub fn prepare(config: &RunConfig, run_dir: Option<&Path>) -> Result<TaskData> {
    let model_dir = ModelDir::open(&config.model.path)?;
    let max_len = config.model.max_length;
    let tokenizer =
        TextTokenizer::for_model(&model_dir.tokenizer_path(), max_len, &model_dir.config)?;
    if config.task.kind == TaskKind::TokenClassification {
        return prepare_conll(config, run_dir, model_dir, tokenizer);
    }
    let data = crate::prep::prepare(config, Some(&tokenizer))?;
    for line in data.report.to_text().lines() {
        tracing::info!("{line}");
    }
    for w in &data.report.warnings {
        tracing::warn!("{w}");
    }
    if let Some(dir) = run_dir {
        data.report.write(dir)?;
    }
    let report = serde_json::to_value(&data.report).map_err(|e| Error::Report(e.to_string()))?;
    let report_text = data.report.to_text();
    let kind = config.task.kind;
    let sep = config.task.label_separator.as_str();
    let labels = match kind {
        TaskKind::Multilabel => {
            let train = data
                .split("train")
                .ok_or_else(|| Error::Config("no training split".into()))?;
            let names = multilabel::label_names(&train.examples, sep);
            if names.is_empty() {
                return Err(Error::Labels(format!(
                    "{}: no labels in column `{}`",
                    train.file.display(),
                    config.data.label_column
                )));
            }
            names
        }
        TaskKind::Regression => vec![config.data.label_column.clone()],
        _ => Vec::new(),
    };
    let (mut train, mut validation, mut test) = (None, None, None);
    for split in data.splits {
        let s = table_split(
            kind,
            &split.name,
            &split.file,
            &split.examples,
            &labels,
            sep,
            &tokenizer,
        )?;
        match split.name.as_str() {
            "train" => train = Some(s),
            "validation" => validation = Some(s),
            _ => test = Some(s),
        }
    }
    let train = train.ok_or_else(|| Error::Config("no training split".into()))?;
    if kind == TaskKind::Embedding && train.tokens.len() < 2 {
        return Err(Error::Input(format!(
            "{}: in-batch negatives need at least 2 pairs",
            train.file.display()
        )));
    }
    Ok(TaskData {
        model_dir,
        labels,
        train,
        validation,
        test,
        tokenizer,
        scheme: None,
        report,
        report_text,
    })
}

/// A split of table data (multilabel, regression, embedding) with its targets.
pub fn table_split(
    kind: TaskKind,
    name: &str,
    file: &Path,
    examples: &[Example],
    labels: &[String],
    separator: &str,
    tokenizer: &TextTokenizer,
) -> Result<TaskSplit> {
    let texts: Vec<&str> = examples.iter().map(|e| e.text.as_str()).collect();
    let pairs: Option<Vec<&str>> = examples.iter().map(|e| e.text_pair.as_deref()).collect();
    let (tokens, targets) = match kind {
        TaskKind::Embedding => {
            let pairs = pairs.ok_or_else(|| {
                Error::Input(format!(
                    "{}: every row needs a positive text (the pair column)",
                    file.display()
                ))
            })?;
            (
                tokenizer.encode_batch(&texts, None)?,
                Targets::Positives(tokenizer.encode_batch(&pairs, None)?),
            )
        }
        TaskKind::Multilabel => (
            tokenizer.encode_batch(&texts, pairs.as_deref())?,
            Targets::Multi(multilabel::targets(examples, labels, separator, file)?),
        ),
        TaskKind::Regression => (
            tokenizer.encode_batch(&texts, pairs.as_deref())?,
            Targets::Value(regression::targets(examples, file)?),
        ),
        other => {
            return Err(Error::Config(format!(
                "{} data is not read from tables",
                super::kind_name(other)
            )));
        }
    };
    Ok(TaskSplit {
        name: name.to_string(),
        file: file.to_path_buf(),
        tokens,
        targets,
        texts: examples.iter().map(display_text).collect(),
        sentences: Vec::new(),
        word_ids: Vec::new(),
    })
}

fn display_text(e: &Example) -> String {
    match &e.text_pair {
        Some(p) => format!("{}\t{}", e.text, p),
        None => e.text.clone(),
    }
}

/// Per-split accounting of a CoNLL data set (`data_report.json` of token classification).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct ConllSplitReport {
    split: String,
    file: PathBuf,
    carved: bool,
    sentences: usize,
    words: usize,
    entities: usize,
    docstart_lines: usize,
    /// Lines whose undecodable bytes were replaced (a carved split's stay with train's file).
    decode_replaced: usize,
    sentences_truncated: usize,
    words_without_tag_after_truncation: usize,
    tag_counts: std::collections::BTreeMap<String, usize>,
}

fn prepare_conll(
    config: &RunConfig,
    run_dir: Option<&Path>,
    model_dir: ModelDir,
    tokenizer: TextTokenizer,
) -> Result<TaskData> {
    let d = &config.data;
    let replace = d.on_decode_error == crate::config::DecodeErrorPolicy::Replace;
    let (train_sents, train_read) = ner::read_conll_with(&d.train, true, d.encoding, replace)?;
    let mut parts: Vec<(String, PathBuf, Vec<Sentence>, ner::ConllReport, bool)> = vec![(
        "train".into(),
        d.train.clone(),
        train_sents,
        train_read,
        false,
    )];
    for (name, file) in [("validation", &d.validation), ("test", &d.test)] {
        if let Some(f) = file {
            let (s, r) = ner::read_conll_with(f, true, d.encoding, replace)?;
            parts.push((name.into(), f.clone(), s, r, false));
        }
    }
    // Splits without a file are carved out of the training sentences ([data.split]).
    if let Some(opts) = &d.split {
        let missing: Vec<(&str, f64)> = [("validation", opts.validation), ("test", opts.test)]
            .into_iter()
            .filter(|(n, f)| *f > 0.0 && !parts.iter().any(|p| p.0 == *n))
            .collect();
        if !missing.is_empty() {
            let train = std::mem::take(&mut parts[0].2);
            let strata = vec![""; train.len()];
            let fractions: Vec<f64> = missing.iter().map(|m| m.1).collect();
            let assign = crate::prep::split::stratified_split(&strata, &fractions, opts.seed);
            let mut carved: Vec<Vec<Sentence>> = vec![Vec::new(); missing.len() + 1];
            for (s, a) in train.into_iter().zip(assign) {
                carved[a].push(s);
            }
            let file = d.train.clone();
            for (k, (name, _)) in missing.iter().enumerate().rev() {
                let sents = std::mem::take(&mut carved[k + 1]);
                let report = ner::ConllReport {
                    sentences: sents.len(),
                    words: sents.iter().map(|s| s.words.len()).sum(),
                    docstart_lines: 0,
                    decode_replaced: 0,
                };
                parts.push(((*name).into(), file.clone(), sents, report, true));
            }
            parts[0].2 = std::mem::take(&mut carved[0]);
            parts[0].3.sentences = parts[0].2.len();
            parts[0].3.words = parts[0].2.iter().map(|s| s.words.len()).sum();
        }
    }
    let train_tags: BTreeSet<String> = parts[0]
        .2
        .iter()
        .flat_map(|s| s.tags.iter().cloned())
        .collect();
    let scheme = match config.task.scheme {
        TagScheme::Auto => ner::detect_scheme(&train_tags),
        s => s,
    };
    ner::check_scheme(&train_tags, scheme, &d.train)?;
    let mut labels: Vec<String> = train_tags.into_iter().collect();
    // `O` first: id 0 is what truncated words are predicted as.
    labels.retain(|t| t != "O");
    labels.insert(0, "O".into());
    let mut reports = Vec::new();
    let (mut train, mut validation, mut test) = (None, None, None);
    for (name, file, sentences, read, carved) in parts {
        let (split, stats) = conll_split(&name, &file, sentences, &labels, &tokenizer)?;
        let ConllStats {
            lost,
            truncated,
            entities,
            tag_counts,
        } = stats;
        if truncated > 0 {
            tracing::warn!(
                "{name}: {truncated} sentences truncated to {} tokens; {lost} words lost their tag (predicted O in evaluation)",
                config.model.max_length
            );
        }
        tracing::info!(
            "{name}: {} sentences, {} words, {entities} entities ({})",
            split.sentences.len(),
            read.words,
            file.display()
        );
        reports.push(ConllSplitReport {
            split: name.clone(),
            file,
            carved,
            sentences: split.sentences.len(),
            words: read.words,
            entities,
            docstart_lines: read.docstart_lines,
            decode_replaced: read.decode_replaced,
            sentences_truncated: truncated,
            words_without_tag_after_truncation: lost,
            tag_counts,
        });
        match name.as_str() {
            "train" => train = Some(split),
            "validation" => validation = Some(split),
            _ => test = Some(split),
        }
    }
    let report = serde_json::json!({ "task": "token_classification", "scheme": scheme, "tags": labels, "splits": reports });
    if let Some(dir) = run_dir {
        write_json(&dir.join("data_report.json"), &report)?;
    }
    let mut report_text = format!("token classification, tag scheme {scheme:?}\n");
    for r in &reports {
        report_text.push_str(&format!(
            "{}: {}{}: {} sentences, {} words, {} entities; {} sentences truncated ({} words lost their tag){}\n  tags: {}\n",
            r.split,
            r.file.display(),
            if r.carved { " (carved from train)" } else { "" },
            r.sentences,
            r.words,
            r.entities,
            r.sentences_truncated,
            r.words_without_tag_after_truncation,
            if r.decode_replaced > 0 {
                format!("; {} lines had undecodable bytes replaced", r.decode_replaced)
            } else {
                String::new()
            },
            r.tag_counts
                .iter()
                .map(|(t, n)| format!("{t} {n}"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    let train = train.ok_or_else(|| Error::Config("no training split".into()))?;
    Ok(TaskData {
        model_dir,
        labels,
        train,
        validation,
        test,
        tokenizer,
        scheme: Some(scheme),
        report,
        report_text,
    })
}

/// What aligning a CoNLL split to word pieces counted.
pub struct ConllStats {
    /// Words whose tag was lost to truncation.
    pub lost: usize,
    /// Sentences truncated.
    pub truncated: usize,
    /// Gold entities.
    pub entities: usize,
    /// Words per tag.
    pub tag_counts: std::collections::BTreeMap<String, usize>,
}

/// A token-classification split: sentences encoded as words, tags aligned to first pieces.
/// A tag outside `labels` is an error naming its file and line.
pub fn conll_split(
    name: &str,
    file: &Path,
    sentences: Vec<Sentence>,
    labels: &[String],
    tokenizer: &TextTokenizer,
) -> Result<(TaskSplit, ConllStats)> {
    let words: Vec<Vec<String>> = sentences.iter().map(|s| s.words.clone()).collect();
    let encoded = tokenizer.encode_words(&words)?;
    let mut targets = Vec::with_capacity(sentences.len());
    let mut lost = 0;
    let mut tag_counts = std::collections::BTreeMap::new();
    for (s, enc) in sentences.iter().zip(&encoded) {
        let mut ids = Vec::with_capacity(s.tags.len());
        for (w, t) in s.tags.iter().enumerate() {
            *tag_counts.entry(t.clone()).or_insert(0usize) += 1;
            let id = labels.iter().position(|l| l == t).ok_or_else(|| {
                Error::Labels(format!(
                    "{}:{}: tag {t:?} is not one the model knows ({})",
                    file.display(),
                    s.line + w,
                    labels.join(", ")
                ))
            })?;
            ids.push(id);
        }
        let (aligned, l) = ner::align(enc, &ids);
        lost += l;
        targets.push(aligned);
    }
    let gold: Vec<Vec<String>> = sentences.iter().map(|s| s.tags.clone()).collect();
    let stats = ConllStats {
        lost,
        truncated: encoded.iter().filter(|e| e.tokens.truncated).count(),
        entities: ner::entities(&gold).len(),
        tag_counts,
    };
    let split = TaskSplit {
        name: name.to_string(),
        file: file.to_path_buf(),
        texts: sentences.iter().map(|s| s.words.join(" ")).collect(),
        word_ids: encoded.iter().map(|e| e.word_ids.clone()).collect(),
        tokens: encoded.into_iter().map(|e| e.tokens).collect(),
        targets: Targets::Tags(targets),
        sentences,
    };
    Ok((split, stats))
}

/// Summed loss of the examples `idx` of `split` (see [`TaskSplit::loss_units`] for what it
/// is later divided by).
fn batch_loss(
    config: &RunConfig,
    model: &SequenceClassifier,
    split: &TaskSplit,
    idx: &[usize],
    pad_id: u32,
    device: &Device,
) -> Tensor<1> {
    let refs: Vec<&Tokens> = idx.iter().map(|&i| &split.tokens[i]).collect();
    let batch = collate(&refs, pad_id, device);
    match &split.targets {
        Targets::Multi(t) => {
            let labels = t.first().map_or(0, Vec::len);
            let rows: Vec<f32> = idx.iter().flat_map(|&i| t[i].iter().copied()).collect();
            let y = Tensor::<2>::from_data(TensorData::new(rows, [idx.len(), labels]), device);
            multilabel::bce_sum(model.forward(&batch), y)
        }
        Targets::Value(t) => {
            let v: Vec<f32> = idx.iter().map(|&i| t[i]).collect();
            let y = Tensor::<1>::from_data(TensorData::new(v, [idx.len()]), device);
            regression::squared_error_sum(model.forward(&batch), y)
        }
        Targets::Tags(t) => {
            let [b, seq] = batch.input_ids.dims();
            let mut ids = vec![IGNORE; b * seq];
            for (row, &i) in idx.iter().enumerate() {
                ids[row * seq..row * seq + t[i].len()].copy_from_slice(&t[i]);
            }
            let mask: Vec<f32> = ids
                .iter()
                .map(|&v| f32::from(u8::from(v != IGNORE)))
                .collect();
            let gather: Vec<i64> = ids.iter().map(|&v| v.max(0)).collect();
            let logits = predict::token_logits(model, &batch);
            let c = logits.dims()[2];
            let logp = log_softmax(logits.reshape([b * seq, c]), 1);
            let target = Tensor::<2, Int>::from_data(TensorData::new(gather, [b * seq, 1]), device);
            let mask = Tensor::<1>::from_data(TensorData::new(mask, [b * seq]), device);
            let picked = logp.gather(1, target).reshape([b * seq]);
            (picked * mask).sum().neg()
        }
        Targets::Positives(p) => {
            let prefs: Vec<&Tokens> = idx.iter().map(|&i| &p[i]).collect();
            let positives = collate(&prefs, pad_id, device);
            embedding::contrastive_sum(
                model.encoder_features(&batch),
                model.encoder_features(&positives),
                config.task.contrastive_scale,
            )
        }
    }
}

/// How to evaluate a task model (from the run config, or the exported model's meta).
pub struct EvalSettings {
    /// The task.
    pub kind: TaskKind,
    /// Inference batch size.
    pub batch_size: usize,
    /// Multilabel: a fixed threshold instead of tuning (when no thresholds are given).
    pub fixed_threshold: Option<f64>,
    /// Embedding: the similarity scale.
    pub scale: f64,
    /// The tokenizer's padding id.
    pub pad_id: u32,
}

impl EvalSettings {
    fn of(config: &RunConfig, pad_id: u32) -> Self {
        EvalSettings {
            kind: config.task.kind,
            batch_size: config.train.eval_batch_size,
            fixed_threshold: config.task.threshold,
            scale: config.task.contrastive_scale,
            pad_id,
        }
    }
}

/// One evaluation of a task model on a split.
pub struct Evaluation {
    /// The scores.
    pub scores: Scores,
    /// Per-example outputs.
    pub outputs: Outputs,
    /// Multilabel: the thresholds used (given, fixed, or tuned on this split).
    pub thresholds: Vec<f64>,
    /// Embedding: the positives' embeddings (for the predictions file).
    pub positives: Option<Vec<Vec<f32>>>,
}

/// Scores of `model` on `split`, its per-example outputs, the multilabel thresholds used
/// (the given ones, else fixed or tuned on this split), and for embedding the positives'
/// embeddings.
pub fn evaluate(
    settings: &EvalSettings,
    model: &SequenceClassifier,
    split: &TaskSplit,
    labels: &[String],
    thresholds: Option<&[f64]>,
    device: &Device,
) -> Result<Evaluation> {
    let (bs, pad_id) = (settings.batch_size, settings.pad_id);
    let outputs = predict::outputs(settings.kind, model, &split.tokens, bs, pad_id, device)?;
    let mut tuned = Vec::new();
    let mut positive_embeddings = None;
    let scores = match (&split.targets, &outputs) {
        (Targets::Multi(t), Outputs::Probs(p, logits)) => {
            tuned = match (thresholds, settings.fixed_threshold) {
                (Some(th), _) => th.to_vec(),
                (None, Some(fixed)) => vec![fixed; labels.len()],
                (None, None) => (0..labels.len())
                    .map(|k| {
                        let col: Vec<f32> = p.iter().map(|r| r[k]).collect();
                        let truth: Vec<bool> = t.iter().map(|r| r[k] > 0.5).collect();
                        multilabel::tune_threshold(&col, &truth)
                    })
                    .collect(),
            };
            let mut s = multilabel::scores(p, t, &tuned);
            s.insert("loss".into(), predict::bce_mean(logits, t));
            s
        }
        (Targets::Value(t), Outputs::Values(v)) => regression::scores(v, t),
        (Targets::Tags(t), Outputs::Pieces(pieces, logp)) => {
            let pred = word_tags(split, pieces, labels);
            let gold: Vec<Vec<String>> = split.sentences.iter().map(|s| s.tags.clone()).collect();
            let mut s = predict::ner_scores(&gold, &pred);
            let units: usize = t
                .iter()
                .map(|r| r.iter().filter(|&&v| v != IGNORE).count())
                .sum();
            s.insert(
                "loss".into(),
                predict::token_nll(logp, t) / units.max(1) as f64,
            );
            s
        }
        (Targets::Positives(p), Outputs::Embeddings(anchors)) => {
            let positives = predict::embeddings(model, p, bs, pad_id, device)?;
            let s = embedding::retrieval_scores(anchors, &positives, settings.scale);
            positive_embeddings = Some(positives);
            s
        }
        _ => {
            return Err(Error::Engine(
                "task outputs do not match the targets".into(),
            ));
        }
    };
    Ok(Evaluation {
        scores,
        outputs,
        thresholds: tuned,
        positives: positive_embeddings,
    })
}

/// Word-level predicted tags of every sentence of `split` from per-piece predictions.
pub fn word_tags(split: &TaskSplit, pieces: &[Vec<usize>], labels: &[String]) -> Vec<Vec<String>> {
    split
        .sentences
        .iter()
        .zip(&split.word_ids)
        .zip(pieces)
        .map(|((s, w), p)| {
            ner::word_predictions(w, p, s.words.len(), 0)
                .into_iter()
                .map(|id| labels.get(id).cloned().unwrap_or_else(|| "O".into()))
                .collect()
        })
        .collect()
}

/// Train a task run in `run_dir` (status and index are handled by [`crate::train::train`]).
pub fn train_in(
    config: &RunConfig,
    options: &TrainOptions,
    run_dir: &Path,
    device: &Device,
) -> Result<RunMetrics> {
    crate::fsutil::write_atomic(&run_dir.join("config.toml"), config.to_toml()?.as_bytes())?;
    let t = &config.train;
    let kind = config.task.kind;
    let p = prepare(config, Some(run_dir))?;
    let ad = device.clone().autodiff();
    let spec = ClassifierSpec {
        // An embedding model has no head; a one-output head is built and never used.
        num_labels: p.labels.len().max(1),
        pooling: config.model.pooling,
        dropout: DropoutOverride {
            hidden: config.model.hidden_dropout,
            attention: config.model.attention_dropout,
        },
        seed: t.seed,
        require_head: false,
    };
    let resume_from = resume_point(run_dir, options.resume)?;
    let lora = config.strategy.lora.as_ref();
    let (mut model, _, frozen_size) =
        trainable_model(config, &p.model_dir, &spec, resume_from.as_deref(), &ad)?;
    let (mut optim, all_params) = build_optimizer(config, &model);
    let mut trainable = if lora.is_some() {
        trainable_params(&model)
    } else {
        all_params - frozen_size
    };
    let mut state: TrainState<TaskEvalRecord> = TrainState::start(model_param_ids(&model));
    if let Some(dir) = &resume_from {
        (optim, state) = restore(dir, optim, &model)?;
    }
    let metrics_path = run_dir.join("metrics.jsonl");
    rewrite_history(&metrics_path, &state.history)?;
    let mut tensorboard = crate::tensorboard::EventWriter::create(run_dir)?;

    let lengths: Vec<usize> = p.train.tokens.iter().map(|t| t.ids.len()).collect();
    let batches_per_epoch = lengths.len().div_ceil(t.batch_size);
    let steps_per_epoch = batches_per_epoch.div_ceil(t.gradient_accumulation);
    let mut total_steps = steps_per_epoch * t.epochs;
    if t.max_steps > 0 {
        total_steps = total_steps.min(t.max_steps);
    }
    let schedule = crate::schedule::Schedule {
        kind: t.scheduler,
        base_lr: t.learning_rate,
        warmup: crate::schedule::warmup_steps(total_steps, t.warmup_ratio, t.warmup_steps),
        total: total_steps,
    };
    tracing::info!(
        "training {}: {} examples, {} outputs, {} epochs × {} steps, {trainable} trainable parameters",
        super::kind_name(kind),
        lengths.len(),
        p.labels.len(),
        t.epochs,
        steps_per_epoch
    );
    let mut lr_groups = layer_schedules(config, &p.model_dir.config, schedule, state.step);
    let progress = progress_bar(options.progress, total_steps as u64, state.step as u64);
    let best_dir = run_dir.join("best");
    let started = Instant::now();
    let elapsed_before = state.elapsed_s;
    let pad = p.tokenizer.pad_id();
    let settings = EvalSettings::of(config, pad);
    let mut unfreeze_stage: Option<usize> = None;
    'epochs: while state.epoch < t.epochs && state.step < total_steps && !state.stopped_early {
        let batches = epoch_batches(
            &lengths,
            t.batch_size,
            t.length_bucketing,
            epoch_seed(t.seed, state.epoch),
        );
        while state.batch_in_epoch < batches.len() {
            if state.step >= total_steps {
                break 'epochs;
            }
            if config.strategy.gradual_unfreeze {
                let (m, now) = progress.suspend(|| {
                    unfreeze_to_stage(
                        config,
                        &p.model_dir.config,
                        model,
                        (state.step, state.epoch),
                        &mut unfreeze_stage,
                        all_params,
                    )
                })?;
                model = m;
                trainable = now.unwrap_or(trainable);
            }
            let group_end = (state.batch_in_epoch + t.gradient_accumulation).min(batches.len());
            let group = &batches[state.batch_in_epoch..group_end];
            let group_size: usize = group.iter().map(|b| b.len()).sum();
            let units: usize = group.iter().map(|b| p.train.loss_units(b)).sum();
            let mut accumulator = GradientsAccumulator::new();
            let mut group_loss = 0.0f64;
            for (micro, idx) in group.iter().enumerate() {
                ad.seed(step_seed(t.seed, state.step, micro));
                let loss = batch_loss(config, &model, &p.train, idx, pad, &ad)
                    .div_scalar(units.max(1) as f64);
                let v = crate::model::weights::to_vec(loss.clone().detach())?;
                group_loss += f64::from(v.first().copied().unwrap_or(f32::NAN));
                let grads = GradientsParams::from_grads(loss.backward(), &model);
                accumulator.accumulate(&model, grads);
            }
            let lr;
            (model, lr) = optimizer_step(
                config,
                model,
                &mut optim,
                &mut lr_groups,
                &schedule,
                accumulator,
                group_loss,
                (state.step, state.epoch),
            )?;
            state.step += 1;
            state.batch_in_epoch = group_end;
            state.examples_seen += group_size;
            state.loss_since_eval.0 += group_loss * group_size as f64;
            state.loss_since_eval.1 += group_size;
            tensorboard.scalars(
                state.step,
                &[("train/loss", group_loss), ("train/learning_rate", lr)],
            )?;
            progress.set_position(state.step as u64);
            progress.set_message(format!(
                "epoch {}/{} loss {group_loss:.4} lr {lr:.2e}",
                state.epoch + 1,
                t.epochs
            ));
            let end_of_epoch = state.batch_in_epoch >= batches.len();
            let last_step = state.step >= total_steps;
            let eval_now = end_of_epoch
                || last_step
                || (t.eval_every_steps > 0 && state.step.is_multiple_of(t.eval_every_steps));
            if eval_now {
                state.elapsed_s = elapsed_before + started.elapsed().as_secs_f64();
                if let Some(val) = &p.validation {
                    let scores =
                        evaluate(&settings, &model.valid(), val, &p.labels, None, device)?.scores;
                    let value = scores.get(&t.metric).copied().unwrap_or(f64::NAN);
                    let record = TaskEvalRecord {
                        step: state.step,
                        epoch: state.step as f64 / steps_per_epoch as f64,
                        train_loss: state.loss_since_eval.0 / state.loss_since_eval.1.max(1) as f64,
                        learning_rate: lr,
                        validation: scores,
                        elapsed_s: state.elapsed_s,
                    };
                    let msg = format!(
                        "step {} epoch {:.2}: train loss {:.4}, validation {} {value:.4}",
                        record.step, record.epoch, record.train_loss, t.metric
                    );
                    progress.suspend(|| tracing::info!("{msg}"));
                    let mut scalars: Vec<(String, f64)> = record
                        .validation
                        .iter()
                        .map(|(k, v)| (format!("validation/{k}"), *v))
                        .collect();
                    scalars.push(("train/epoch_loss".into(), record.train_loss));
                    let refs: Vec<(&str, f64)> =
                        scalars.iter().map(|(k, v)| (k.as_str(), *v)).collect();
                    tensorboard.scalars(state.step, &refs)?;
                    tensorboard.flush()?;
                    state.history.push(record);
                    state.loss_since_eval = (0.0, 0);
                    if state.record_validation(
                        value,
                        config.metric_higher_is_better(),
                        t.early_stopping_patience,
                    ) {
                        save_weights(&model, &best_dir, lora.is_some())?;
                    }
                    rewrite_history(&metrics_path, &state.history)?;
                    if let Some(hook) = &options.on_eval {
                        let evaluation = state.history.len();
                        if (hook.0)(evaluation, state.step, value) {
                            tensorboard.flush()?;
                            return Err(Error::Pruned {
                                evaluation,
                                step: state.step,
                            });
                        }
                    }
                } else {
                    state.best_step = Some(state.step);
                    save_weights(&model, &best_dir, lora.is_some())?;
                }
            }
            if end_of_epoch {
                state.epoch += 1;
                state.batch_in_epoch = 0;
            }
            if eval_now
                || (t.checkpoint_every_steps > 0
                    && state.step.is_multiple_of(t.checkpoint_every_steps))
            {
                state.elapsed_s = elapsed_before + started.elapsed().as_secs_f64();
                save_checkpoint(run_dir, &model, &optim, &state, lora.is_some())?;
            }
            if state.stopped_early {
                break 'epochs;
            }
            if end_of_epoch {
                break;
            }
        }
    }
    progress.finish_and_clear();
    let train_time_s = elapsed_before + started.elapsed().as_secs_f64();

    // The exported model: evaluate the best weights; multilabel thresholds come from
    // validation (tuned there unless fixed), and are what test and `predict` use.
    let infer_spec = ClassifierSpec {
        require_head: kind != TaskKind::Embedding,
        ..spec
    };
    let export_dir = run_dir.join("model");
    let best = match lora {
        Some(_) => {
            export_task_model(config, &p, &best_dir, &export_dir, &[], None)?;
            crate::model::lora::load_for_inference(&export_dir, &infer_spec, device)?.0
        }
        None => {
            load_classifier(
                &best_dir.join("model.safetensors"),
                &p.model_dir.config,
                &infer_spec,
                device,
            )?
            .0
        }
    };
    let mut thresholds: Option<Vec<f64>> = None;
    let mut validation = None;
    let mut test = None;
    for s in [&p.validation, &p.test].into_iter().flatten() {
        if s.name != "validation" && kind == TaskKind::Multilabel && thresholds.is_none() {
            // No validation split: the configured threshold, or 0.5.
            thresholds = Some(vec![config.task.threshold.unwrap_or(0.5); p.labels.len()]);
        }
        let e = evaluate(
            &settings,
            &best,
            s,
            &p.labels,
            thresholds.as_deref(),
            device,
        )?;
        if kind == TaskKind::Multilabel && thresholds.is_none() {
            thresholds = Some(e.thresholds);
        }
        let th = thresholds.clone().unwrap_or_default();
        predict::write_predictions(
            run_dir,
            s,
            &e.outputs,
            &p.labels,
            &th,
            e.positives.as_deref(),
        )?;
        if s.name == "validation" {
            validation = Some(e.scores);
        } else {
            test = Some(e.scores);
        }
    }
    if kind == TaskKind::Multilabel && thresholds.is_none() {
        thresholds = Some(vec![config.task.threshold.unwrap_or(0.5); p.labels.len()]);
    }
    let thresholds = thresholds.unwrap_or_default();
    export_task_model(
        config,
        &p,
        &best_dir,
        &export_dir,
        &thresholds,
        lora.is_none().then_some(&best),
    )?;
    if let Some(s) = &test {
        let step = state.best_step.unwrap_or(state.step);
        let scalars: Vec<(String, f64)> =
            s.iter().map(|(k, v)| (format!("test/{k}"), *v)).collect();
        let refs: Vec<(&str, f64)> = scalars.iter().map(|(k, v)| (k.as_str(), *v)).collect();
        tensorboard.scalars(step, &refs)?;
    }
    tensorboard.flush()?;
    for (name, s) in [("validation", &validation), ("test", &test)] {
        if let Some(s) = s {
            let line: Vec<String> = s.iter().map(|(k, v)| format!("{k} {v:.4}")).collect();
            tracing::info!("{name}: {}", line.join(", "));
        }
    }
    let metrics = RunMetrics {
        labels: p.labels.clone(),
        metric: t.metric.clone(),
        best_step: state.best_step,
        validation: None,
        test: None,
        steps: state.step,
        stopped_early: state.stopped_early,
        train_time_s,
        train_examples_per_s: state.examples_seen as f64 / train_time_s.max(1e-9),
        trainable_parameters: trainable,
        task: kind,
        validation_scores: validation,
        test_scores: test,
        warnings: Vec::new(),
    };
    let mut json = serde_json::to_value(&metrics).map_err(|e| Error::Engine(e.to_string()))?;
    if let Some(obj) = json.as_object_mut() {
        if kind == TaskKind::Multilabel {
            obj.insert("thresholds".into(), serde_json::json!(thresholds));
        }
        // How many examples each split's scores were computed over.
        let evaluated: serde_json::Map<String, serde_json::Value> = [&p.validation, &p.test]
            .into_iter()
            .flatten()
            .map(|s| (s.name.clone(), serde_json::json!(s.texts.len())))
            .collect();
        obj.insert("evaluated_examples".into(), evaluated.into());
    }
    write_json(&run_dir.join("metrics.json"), &json)?;
    crate::card::write(
        &export_dir,
        config,
        &metrics,
        serde_json::from_value(p.report.clone()).ok().as_ref(),
        lora.is_some(),
    )?;
    if let Err(e) = crate::report::write(run_dir) {
        tracing::warn!("could not write report.html ({e}); retry with `tunekit report RUN_DIR`");
    }
    tracing::info!(
        "scores in {}, curves in metrics.jsonl and TensorBoard (report.html is drawn for classification runs)",
        run_dir.join("metrics.json").display()
    );
    Ok(metrics)
}

/// Write the exported model of a task run in HF layout: weights (or LoRA adapters), a
/// `config.json` for the task's transformers class, tokenizer files, `tunekit.json` with the
/// task (and thresholds), and for embedding models sentence-transformers' module files.
fn export_task_model(
    config: &RunConfig,
    p: &TaskData,
    best: &Path,
    dir: &Path,
    thresholds: &[f64],
    model: Option<&SequenceClassifier>,
) -> Result<()> {
    let kind = config.task.kind;
    let meta = TaskMeta {
        kind,
        thresholds: thresholds.to_vec(),
        label_separator: if kind == TaskKind::Multilabel {
            config.task.label_separator.clone()
        } else {
            String::new()
        },
        scheme: p.scheme,
        contrastive_scale: (kind == TaskKind::Embedding).then_some(config.task.contrastive_scale),
    };
    predict::export_model_dir(config, &p.model_dir, &p.labels, best, dir, &meta, model)
}
