//! Training of the non-classification tasks (multilabel, regression, token
//! classification, embedding).
//!
//! [`TaskObjective`] is these tasks' [`Objective`] on [`crate::train`]'s one loop: the
//! task's targets, loss and scores plug into it, and the loop brings everything else —
//! optimiser and no-decay group, frozen parameters and gradual unfreezing, layer-wise LR
//! decay, LoRA, global-norm clipping, L1, reseeded dropout, checkpoints with resume, early
//! stopping, TensorBoard, the search's pruning hook — so each strategy means the same thing
//! for every task. What it leaves to classification: class weights, oversampling, focal
//! loss, label smoothing, augmentation and distillation (their
//! configs are rejected for these tasks, see [`super::TaskSection`]).
//!
//! Run directory: `config.toml`, `data_report.json`, `metrics.jsonl` (one [`TaskEvalRecord`]
//! per evaluation), `checkpoints/`, `best/`, `model/` (HF layout with `tunekit.json` → `task`),
//! `predictions/{validation,test}.jsonl`, `metrics.json` ([`RunMetrics`] with
//! `validation_scores` / `test_scores`), `report.html`, `model/README.md`, TensorBoard events.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use burn::tensor::activation::log_softmax;
use burn::tensor::{Device, Int, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use super::ner::{self, IGNORE, Sentence};
use super::predict::{self, Outputs};
use super::{Scores, TagScheme, TaskKind, TaskMeta, embedding, multilabel, regression};
use crate::batch::collate;
use crate::config::RunConfig;
use crate::data::Example;
use crate::error::{Error, Result};
use crate::fsutil::write_json;
use crate::model::{ModelDir, SequenceClassifier};
use crate::tokenize::{TextTokenizer, Tokens};
use crate::train::RunMetrics;
use crate::train::fit::{Built, Finished, Objective, Validation};

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

/// One evaluation during training (a line of `metrics.jsonl`) of a task run.
pub type TaskEvalRecord = crate::train::EvalRecord<Scores>;

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

/// The non-classification tasks on the one loop ([`crate::train::fit`]).
pub(crate) struct TaskObjective {
    config: RunConfig,
    p: TaskData,
    settings: EvalSettings,
}

impl TaskObjective {
    /// Read, prepare and tokenise the data ([`prepare`]; the data report goes to `run_dir`).
    pub(crate) fn prepare(config: &RunConfig, run_dir: &Path) -> Result<Self> {
        let p = prepare(config, Some(run_dir))?;
        let settings = EvalSettings::of(config, p.tokenizer.pad_id());
        Ok(TaskObjective {
            config: config.clone(),
            p,
            settings,
        })
    }
}

impl TaskObjective {
    /// Whether the trained model has a head (an embedding model has none).
    fn has_head(&self) -> bool {
        self.config.task.kind != TaskKind::Embedding
    }
}

impl Objective for TaskObjective {
    type Scores = Scores;
    type Model = SequenceClassifier;

    fn build(
        &mut self,
        config: &RunConfig,
        resume_from: Option<&Path>,
        ad: &Device,
    ) -> Result<Built<SequenceClassifier>> {
        let has_head = self.has_head();
        crate::train::strategy::build_encoder(
            config,
            &self.p.model_dir,
            self.p.labels.len(),
            has_head,
            resume_from,
            ad,
        )
    }

    fn layered_config(&self) -> Option<&crate::model::BertConfig> {
        Some(&self.p.model_dir.config)
    }

    fn train_lengths(&self) -> Vec<usize> {
        self.p.train.tokens.iter().map(|t| t.ids.len()).collect()
    }

    fn describe(&self) -> String {
        format!(
            "training {}: {} examples, {} outputs",
            super::kind_name(self.config.task.kind),
            self.p.train.tokens.len(),
            self.p.labels.len()
        )
    }

    fn normaliser(&self, group: &[Vec<usize>]) -> f64 {
        let units: usize = group.iter().map(|b| self.p.train.loss_units(b)).sum();
        units.max(1) as f64
    }

    fn couples_batch(&self) -> bool {
        // In-batch negatives: each anchor is scored against every positive of its batch.
        self.config.task.kind == TaskKind::Embedding
    }

    fn loss_sum(
        &self,
        model: &SequenceClassifier,
        idx: &[usize],
        ad: &Device,
    ) -> Result<Tensor<1>> {
        let pad = self.p.tokenizer.pad_id();
        Ok(batch_loss(&self.config, model, &self.p.train, idx, pad, ad))
    }

    fn validate(
        &self,
        model: &SequenceClassifier,
        device: &Device,
    ) -> Result<Option<Validation<Scores>>> {
        let Some(val) = &self.p.validation else {
            return Ok(None);
        };
        let scores = evaluate(&self.settings, model, val, &self.p.labels, None, device)?.scores;
        let value = scores
            .get(&self.config.train.metric)
            .copied()
            .unwrap_or(f64::NAN);
        let scalars = scores
            .iter()
            .map(|(k, v)| (format!("validation/{k}"), *v))
            .collect();
        Ok(Some(Validation {
            scores,
            value,
            scalars,
            note: String::new(),
        }))
    }

    fn finish(self, mut run: Finished<'_, Scores>) -> Result<RunMetrics> {
        let (config, p) = (&self.config, &self.p);
        let kind = config.task.kind;
        // The exported model: evaluate the best weights; multilabel thresholds come from
        // validation (tuned there unless fixed), and are what test and `predict` use.
        let export_dir = run.run_dir.join("model");
        if run.lora() {
            export_task_model(config, p, &run.best_dir, &export_dir, &[], None)?;
        }
        let best = crate::train::strategy::best_encoder(
            &run,
            &p.model_dir.config,
            p.labels.len(),
            self.has_head(),
            &export_dir,
        )?;
        let (validation, test, thresholds) =
            self.evaluate_exported(&best, run.run_dir, run.device)?;
        export_task_model(
            config,
            p,
            &run.best_dir,
            &export_dir,
            &thresholds,
            (!run.lora()).then_some(&best),
        )?;
        if let Some(s) = &test {
            let scalars: Vec<(String, f64)> =
                s.iter().map(|(k, v)| (format!("test/{k}"), *v)).collect();
            let refs: Vec<(&str, f64)> = scalars.iter().map(|(k, v)| (k.as_str(), *v)).collect();
            run.tensorboard.scalars(run.exported_step(), &refs)?;
        }
        run.tensorboard.flush()?;
        for (name, s) in [("validation", &validation), ("test", &test)] {
            if let Some(s) = s {
                let line: Vec<String> = s.iter().map(|(k, v)| format!("{k} {v:.4}")).collect();
                tracing::info!("{name}: {}", line.join(", "));
            }
        }
        let metrics = RunMetrics {
            labels: p.labels.clone(),
            metric: config.train.metric.clone(),
            best_step: run.state.best_step,
            validation: None,
            test: None,
            steps: run.state.step,
            stopped_early: run.state.stopped_early,
            train_time_s: run.train_time_s,
            train_examples_per_s: run.state.examples_seen as f64 / run.train_time_s.max(1e-9),
            trainable_parameters: run.trainable,
            task: kind,
            validation_scores: validation,
            test_scores: test,
            warnings: Vec::new(),
            privacy: run.privacy.clone(),
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
        write_json(&run.run_dir.join("metrics.json"), &json)?;
        let data_report: Option<crate::prep::DataReport> =
            serde_json::from_value(p.report.clone()).ok();
        crate::card::write(
            &export_dir,
            config,
            &metrics,
            data_report.as_ref(),
            run.lora(),
        )?;
        super::classification::write_report(run.run_dir);
        tracing::info!(
            "scores in {}, curves in metrics.jsonl and TensorBoard",
            run.run_dir.join("metrics.json").display()
        );
        Ok(metrics)
    }
}

impl TaskObjective {
    /// Scores of the exported model on validation and test, with their predictions files,
    /// and the multilabel thresholds (tuned on validation unless fixed; else
    /// `task.threshold` or 0.5).
    fn evaluate_exported(
        &self,
        best: &SequenceClassifier,
        run_dir: &Path,
        device: &Device,
    ) -> Result<(Option<Scores>, Option<Scores>, Vec<f64>)> {
        let (config, p) = (&self.config, &self.p);
        let kind = config.task.kind;
        let fixed = || vec![config.task.threshold.unwrap_or(0.5); p.labels.len()];
        let mut thresholds: Option<Vec<f64>> = None;
        let (mut validation, mut test) = (None, None);
        for s in [&p.validation, &p.test].into_iter().flatten() {
            if s.name != "validation" && kind == TaskKind::Multilabel && thresholds.is_none() {
                // No validation split: the configured threshold, or 0.5.
                thresholds = Some(fixed());
            }
            let e = evaluate(
                &self.settings,
                best,
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
            thresholds = Some(fixed());
        }
        Ok((validation, test, thresholds.unwrap_or_default()))
    }
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
