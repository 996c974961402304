//! Single-label classification (and pair classification) as an [`Objective`] of the one
//! training loop: class ids as targets, a `[batch, classes]` head, cross-entropy (label
//! smoothing, class weights, focal) or the distillation mix as loss, scikit-learn metrics,
//! oversampling and augmentation as the epoch's inputs, a frozen encoder's features cached
//! (linear probe), and at the end the exported model evaluated with per-example predictions,
//! the drift reference, the model card and the report.

use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::module::Module;
use burn::tensor::{Device, Tensor};

use crate::batch::{collate, label_tensor};
use crate::config::RunConfig;
use crate::data::{Example, label_set};
use crate::error::{Error, Result};
use crate::fsutil::write_json;
use crate::infer::{evaluate_tokens, label_ids};
use crate::metrics::ClassificationMetrics;
use crate::model::{ModelDir, SequenceClassifier};
use crate::prep::{DataReport, PreparedData};
use crate::tokenize::{TextTokenizer, Tokens};
use crate::train::fit::{Built, Finished, Objective, Validation};
use crate::train::{
    RunMetrics, balanced_class_weights, classification_loss_sum, distillation_kl_sum,
};

/// One labelled split, tokenised.
pub struct Split {
    /// `train`, `validation` or `test`.
    pub name: String,
    /// The file it came from.
    pub file: PathBuf,
    /// Tokens per example.
    pub tokens: Vec<Tokens>,
    /// Class id per example.
    pub labels: Vec<usize>,
    /// The examples (cleaned), for augmentation.
    pub examples: Vec<Example>,
}

impl Split {
    /// Examples truncated by `max_length`.
    pub fn truncated(&self) -> usize {
        self.tokens.iter().filter(|t| t.truncated).count()
    }
}

/// Tokenise a prepared split and map its labels (the training split defines the label set).
fn load_split(
    split: crate::prep::PreparedSplit,
    tokenizer: &TextTokenizer,
    labels: Option<&[String]>,
) -> Result<(Split, Vec<String>)> {
    let examples = split.examples;
    let file = split.file;
    let names = match labels {
        Some(l) => l.to_vec(),
        None => label_set(&examples),
    };
    if names.len() < 2 {
        return Err(Error::Labels(format!(
            "{}: classification needs at least 2 distinct labels, found {:?}",
            file.display(),
            names
        )));
    }
    let ids = label_ids(&examples, &names, &file)?;
    let tokens = tokenize_examples(tokenizer, &examples)?;
    Ok((
        Split {
            name: split.name,
            file,
            tokens,
            labels: ids,
            examples,
        },
        names,
    ))
}

fn tokenize_examples(tokenizer: &TextTokenizer, examples: &[Example]) -> Result<Vec<Tokens>> {
    let texts: Vec<&str> = examples.iter().map(|e| e.text.as_str()).collect();
    let pairs: Option<Vec<&str>> = examples.iter().map(|e| e.text_pair.as_deref()).collect();
    tokenizer.encode_batch(&texts, pairs.as_deref())
}

/// The teacher's logits for every training example, computed once (teacher in evaluation
/// mode, tokenised and preprocessed its own way) and kept on the training device.
fn teacher_logits(
    p: &Prepared,
    config: &RunConfig,
    d: &crate::config::DistillSection,
    device: &Device,
    ad: &Device,
) -> Result<Tensor<2>> {
    let started = Instant::now();
    // The same refusals as `data check` (labels, position table), before the weights load.
    crate::train::check::check_teacher(config, &p.labels)?;
    let teacher =
        crate::predictor::Predictor::load(&d.teacher, Some(config.model.max_length), device)?
            .classifier("a distillation teacher")?;
    let tokens = teacher.tokenize(&p.train.examples)?;
    crate::infer::log_truncated(
        &tokens,
        teacher.tokenizer.max_length(),
        "training examples (for the teacher)",
    );
    let (values, classes) = crate::infer::logits(
        &teacher.model,
        &tokens,
        config.train.eval_batch_size,
        teacher.tokenizer.pad_id(),
        device,
    )?;
    let n = tokens.len();
    tracing::info!(
        "distillation: teacher {} logits for {n} examples computed once in {:.1} s (T = {}, alpha = {})",
        d.teacher,
        started.elapsed().as_secs_f64(),
        d.temperature,
        d.alpha
    );
    Ok(Tensor::<2>::from_data(
        burn::tensor::TensorData::new(values, [n, classes]),
        ad,
    ))
}

/// Everything prepared before the loop starts.
pub(crate) struct Prepared {
    pub(crate) model_dir: ModelDir,
    pub(crate) labels: Vec<String>,
    pub(crate) train: Split,
    pub(crate) validation: Option<Split>,
    pub(crate) test: Option<Split>,
    pub(crate) tokenizer: TextTokenizer,
    pub(crate) report: DataReport,
}

/// Load the model directory and tokenizer, run the data pipeline (unless `data` is given,
/// as cross-validation does for its folds) and tokenise the splits.
pub(crate) fn prepare(config: &RunConfig, data: Option<PreparedData>) -> Result<Prepared> {
    let mut model_dir = ModelDir::open(&config.model.path)?;
    let max_len = config.model.max_length;
    if let Some(k) = config.distill.as_ref().and_then(|d| d.student_layers) {
        let layers = model_dir.config.num_hidden_layers;
        if k > layers {
            return Err(Error::Config(format!(
                "distill.student_layers = {k} but {} has {layers} layers",
                model_dir.dir.display()
            )));
        }
        // The student: the first k layers (and the embeddings, pooler and head) of model.path.
        model_dir.config.num_hidden_layers = k;
    }
    let tokenizer =
        TextTokenizer::for_model(&model_dir.tokenizer_path(), max_len, &model_dir.config)?;
    let data = match data {
        Some(d) => d,
        None => crate::prep::prepare(config, Some(&tokenizer))?,
    };
    let report = data.report;
    let mut train = None;
    let (mut validation, mut test) = (None, None);
    let mut labels = Vec::new();
    for split in data.splits {
        match split.name.as_str() {
            "train" => {
                let (s, l) = load_split(split, &tokenizer, None)?;
                labels = l;
                train = Some(s);
            }
            "validation" => validation = Some(load_split(split, &tokenizer, Some(&labels))?.0),
            _ => test = Some(load_split(split, &tokenizer, Some(&labels))?.0),
        }
    }
    let train = train.ok_or_else(|| Error::Config("no training split".into()))?;
    Ok(Prepared {
        model_dir,
        labels,
        train,
        validation,
        test,
        tokenizer,
        report,
    })
}

/// The training split's tokens for one epoch with augmentation applied, and how many
/// examples each operation changed.
fn augment_epoch(
    p: &Prepared,
    opts: &crate::prep::augment::AugmentOptions,
    seed: u64,
    epoch: usize,
) -> Result<(Vec<Tokens>, std::collections::BTreeMap<String, usize>)> {
    let mut tokens = p.train.tokens.clone();
    let mut changed: Vec<(usize, String)> = Vec::new();
    let mut counts = std::collections::BTreeMap::new();
    for (i, e) in p.train.examples.iter().enumerate() {
        if let Some((op, text)) =
            crate::prep::augment::augment_example(opts, &e.text, seed, epoch, i)
        {
            *counts.entry(format!("{op:?}").to_lowercase()).or_insert(0) += 1;
            changed.push((i, text));
        }
    }
    let texts: Vec<&str> = changed.iter().map(|(_, t)| t.as_str()).collect();
    let pairs: Option<Vec<&str>> = changed
        .iter()
        .map(|(i, _)| p.train.examples[*i].text_pair.as_deref())
        .collect();
    let encoded = p.tokenizer.encode_batch(&texts, pairs.as_deref())?;
    for ((i, _), tok) in changed.iter().zip(encoded) {
        tokens[*i] = tok;
    }
    Ok((tokens, counts))
}

/// Classification on the one loop ([`crate::train::fit`]).
pub(crate) struct Classification {
    config: RunConfig,
    p: Prepared,
    /// `train.class_weights = "balanced"`: the weight of each class.
    class_weights: Option<Vec<f64>>,
    /// Distillation: the teacher's logits of every training example `[n, classes]`.
    teacher: Option<Tensor<2>>,
    /// Linear probe: the frozen encoder's features of every training example `[n, hidden]`.
    features: Option<Tensor<2>>,
    /// This epoch's augmented training tokens (augmentation on).
    augmented: Option<Vec<Tokens>>,
}

impl Classification {
    /// Prepare the data (or take `data`, as cross-validation's folds do), write the data
    /// report to `run_dir` and log it.
    pub(crate) fn prepare(
        config: &RunConfig,
        data: Option<PreparedData>,
        run_dir: &Path,
    ) -> Result<Self> {
        let p = prepare(config, data)?;
        for line in p.report.to_text().lines() {
            tracing::info!("{line}");
        }
        for w in &p.report.warnings {
            tracing::warn!("{w}");
        }
        p.report.write(run_dir)?;
        let class_weights = match config.train.class_weights {
            crate::config::ClassWeights::None => None,
            crate::config::ClassWeights::Balanced => {
                let w = balanced_class_weights(&p.train.labels, p.labels.len());
                tracing::info!(
                    "class weights (balanced): {:?}",
                    p.labels.iter().zip(&w).collect::<Vec<_>>()
                );
                Some(w)
            }
        };
        Ok(Classification {
            config: config.clone(),
            p,
            class_weights,
            teacher: None,
            features: None,
            augmented: None,
        })
    }

    fn weight_of(&self, i: usize) -> f64 {
        self.class_weights
            .as_ref()
            .map_or(1.0, |w| w[self.p.train.labels[i]])
    }

    /// Whether a frozen encoder's features can be computed once: the encoder never changes
    /// and neither do the inputs (no augmentation, no gradual unfreezing).
    fn caches_features(&self) -> bool {
        let st = &self.config.strategy;
        st.freeze_encoder
            && st.cache_frozen_features
            && !st.gradual_unfreeze
            && !self.config.data.augment.enabled()
    }

    /// Evaluate the exported model on a split and keep its per-example predictions.
    fn evaluate_split(
        &self,
        model: &SequenceClassifier,
        s: &Split,
        run_dir: &Path,
        device: &Device,
    ) -> Result<ClassificationMetrics> {
        let labels = &self.p.labels;
        let (probs, loss_sum) = crate::infer::predict_probs(
            model,
            &s.tokens,
            Some(&s.labels),
            self.config.train.eval_batch_size,
            self.p.tokenizer.pad_id(),
            device,
        )?;
        let rows: Vec<crate::report::PredictionRow> = probs
            .iter()
            .zip(&s.labels)
            .zip(&s.examples)
            .map(|((pr, &label), ex)| {
                let predicted = crate::infer::argmax(pr);
                let name = |c: usize| labels.get(c).cloned().unwrap_or_default();
                crate::report::PredictionRow {
                    text: ex.text.clone(),
                    label,
                    predicted,
                    label_name: name(label),
                    predicted_name: name(predicted),
                    probabilities: pr.clone(),
                }
            })
            .collect();
        crate::report::write_predictions(run_dir, &s.name, &rows)?;
        Ok(crate::infer::metrics_from_probs(
            &probs, loss_sum, &s.labels, labels,
        ))
    }

    /// The export's task facts (`tunekit.json`, `config.json`'s architecture).
    fn meta(&self) -> super::TaskMeta {
        super::TaskMeta {
            kind: self.config.task.kind,
            thresholds: Vec::new(),
            label_separator: String::new(),
            scheme: None,
            contrastive_scale: None,
        }
    }
}

impl Objective for Classification {
    type Scores = ClassificationMetrics;
    type Model = SequenceClassifier;

    fn build(
        &mut self,
        config: &RunConfig,
        resume_from: Option<&Path>,
        ad: &Device,
    ) -> Result<Built<SequenceClassifier>> {
        crate::train::strategy::build_encoder(
            config,
            &self.p.model_dir,
            self.p.labels.len(),
            true,
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

    fn epoch_sample(&self, epoch: usize) -> Vec<usize> {
        let t = &self.config.train;
        if t.oversample {
            crate::batch::oversampled(
                &self.p.train.labels,
                self.p.labels.len(),
                crate::batch::epoch_seed(t.seed, epoch),
            )
        } else {
            (0..self.p.train.tokens.len()).collect()
        }
    }

    fn describe(&self) -> String {
        let epoch_size = self.epoch_sample(0).len();
        if self.config.train.oversample {
            tracing::info!(
                "oversampling minority classes: {epoch_size} examples per epoch from {}",
                self.p.train.tokens.len()
            );
        }
        format!(
            "training: {epoch_size} examples, {} labels",
            self.p.labels.len()
        )
    }

    fn setup(&mut self, model: &SequenceClassifier, device: &Device, ad: &Device) -> Result<()> {
        if let Some(d) = &self.config.distill {
            self.teacher = Some(teacher_logits(&self.p, &self.config, d, device, ad)?);
        }
        // A frozen encoder sees the same inputs every epoch: its features are computed once
        // and the head trains on them, so a linear probe costs one forward pass over the data
        // plus a tiny head. The features come from the encoder in evaluation mode (no
        // dropout), as feature extraction does.
        if self.caches_features() {
            let started = Instant::now();
            let (values, hidden) = crate::infer::encoder_features(
                &model.valid(),
                &self.p.train.tokens,
                self.config.train.eval_batch_size,
                self.p.tokenizer.pad_id(),
                device,
            )?;
            let n = self.p.train.tokens.len();
            tracing::info!(
                "linear probe: encoder features of {n} examples computed once in {:.1} s",
                started.elapsed().as_secs_f64()
            );
            self.features = Some(Tensor::<2>::from_data(
                burn::tensor::TensorData::new(values, [n, hidden]),
                ad,
            ));
        }
        Ok(())
    }

    fn begin_epoch(&mut self, epoch: usize, progress: &indicatif::ProgressBar) -> Result<()> {
        let augment = &self.config.data.augment;
        if !augment.enabled() {
            return Ok(());
        }
        // Seeded by epoch and example, so resume-exact.
        let (tokens, counts) = augment_epoch(&self.p, augment, self.config.train.seed, epoch)?;
        progress.suspend(|| {
            tracing::info!(
                "augmentation, epoch {}: {} of {} examples changed ({})",
                epoch + 1,
                counts.values().sum::<usize>(),
                self.p.train.tokens.len(),
                counts
                    .iter()
                    .map(|(k, v)| format!("{k} {v}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        });
        self.augmented = Some(tokens);
        Ok(())
    }

    fn normaliser(&self, group: &[Vec<usize>]) -> f64 {
        group.iter().flatten().map(|&i| self.weight_of(i)).sum()
    }

    fn loss_sum(
        &self,
        model: &SequenceClassifier,
        idx: &[usize],
        ad: &Device,
    ) -> Result<Tensor<1>> {
        let t = &self.config.train;
        let logits = match &self.features {
            Some(features) => model.head_forward(features.clone().select(0, label_tensor(idx, ad))),
            None => {
                let tokens = self.augmented.as_ref().unwrap_or(&self.p.train.tokens);
                let refs: Vec<&Tokens> = idx.iter().map(|&i| &tokens[i]).collect();
                model.forward(&collate(&refs, self.p.tokenizer.pad_id(), ad))
            }
        };
        let labels: Vec<usize> = idx.iter().map(|&i| self.p.train.labels[i]).collect();
        let weights = self.class_weights.as_ref().map(|_| {
            let w: Vec<f32> = idx.iter().map(|&i| self.weight_of(i) as f32).collect();
            Tensor::<1>::from_data(burn::tensor::TensorData::new(w, [idx.len()]), ad)
        });
        let hard = |logits| {
            classification_loss_sum(
                logits,
                label_tensor(&labels, ad),
                weights.clone(),
                t.label_smoothing,
                (t.loss == crate::config::LossKind::Focal).then_some(t.focal_gamma),
            )
        };
        Ok(match (&self.teacher, &self.config.distill) {
            (Some(teacher), Some(d)) if d.alpha > 0.0 => {
                let teacher = teacher.clone().select(0, label_tensor(idx, ad));
                let soft = distillation_kl_sum(logits.clone(), teacher, d.temperature);
                if d.alpha < 1.0 {
                    soft.mul_scalar(d.alpha) + hard(logits).mul_scalar(1.0 - d.alpha)
                } else {
                    soft
                }
            }
            _ => hard(logits),
        })
    }

    fn validate(
        &self,
        model: &SequenceClassifier,
        device: &Device,
    ) -> Result<Option<Validation<ClassificationMetrics>>> {
        let Some(val) = &self.p.validation else {
            return Ok(None);
        };
        let metrics = evaluate_tokens(
            model,
            &val.tokens,
            &val.labels,
            &self.p.labels,
            self.config.train.eval_batch_size,
            self.p.tokenizer.pad_id(),
            device,
        )?;
        let value = metrics.get(&self.config.train.metric).unwrap_or(f64::NAN);
        let mut scalars = vec![
            ("validation/accuracy".to_string(), metrics.accuracy),
            ("validation/macro_f1".to_string(), metrics.macro_f1),
        ];
        scalars.extend(metrics.loss.map(|l| ("validation/loss".to_string(), l)));
        scalars.extend(
            metrics
                .get("roc_auc")
                .map(|a| ("validation/roc_auc".to_string(), a)),
        );
        let note = format!(
            " (accuracy {:.4}, macro-F1 {:.4})",
            metrics.accuracy, metrics.macro_f1
        );
        Ok(Some(Validation {
            scores: metrics,
            value,
            scalars,
            note,
        }))
    }

    fn finish(self, mut run: Finished<'_, ClassificationMetrics>) -> Result<RunMetrics> {
        let config = &self.config;
        let p = &self.p;
        // Export the best model in HF layout and evaluate it on the validation and test splits.
        let export_dir = run.run_dir.join("model");
        super::predict::export_model_dir(
            config,
            &p.model_dir,
            &p.labels,
            &run.best_dir,
            &export_dir,
            &self.meta(),
            None,
        )?;
        let best = crate::train::strategy::best_encoder(
            &run,
            &p.model_dir.config,
            p.labels.len(),
            true,
            &export_dir,
        )?;
        let validation = p
            .validation
            .as_ref()
            .map(|s| self.evaluate_split(&best, s, run.run_dir, run.device))
            .transpose()?;
        // What the exported model predicts on validation data: the reference for drift.
        if let (Some(v), Some(split)) = (&validation, &p.validation) {
            let predicted: Vec<u64> = (0..p.labels.len())
                .map(|c| v.confusion_matrix.iter().map(|row| row[c]).sum())
                .collect();
            let lengths: Vec<usize> = split.tokens.iter().map(|t| t.ids.len()).collect();
            let stats = crate::drift::reference(&p.labels, &predicted, &lengths);
            write_json(&export_dir.join(crate::drift::REFERENCE_FILE), &stats)?;
        }
        let test = p
            .test
            .as_ref()
            .map(|s| self.evaluate_split(&best, s, run.run_dir, run.device))
            .transpose()?;
        if let Some(t) = &test {
            run.tensorboard.scalars(
                run.exported_step(),
                &[("test/accuracy", t.accuracy), ("test/macro_f1", t.macro_f1)],
            )?;
        }
        run.tensorboard.flush()?;
        let metrics = RunMetrics {
            labels: p.labels.clone(),
            metric: config.train.metric.clone(),
            best_step: run.state.best_step,
            validation,
            test,
            steps: run.state.step,
            stopped_early: run.state.stopped_early,
            train_time_s: run.train_time_s,
            train_examples_per_s: run.state.examples_seen as f64 / run.train_time_s.max(1e-9),
            trainable_parameters: run.trainable,
            task: config.task.kind,
            validation_scores: None,
            test_scores: None,
            warnings: Vec::new(),
            privacy: run.privacy.clone(),
        };
        let metrics = RunMetrics {
            warnings: crate::report::collapse_warnings(&metrics),
            ..metrics
        };
        for w in &metrics.warnings {
            tracing::warn!("{w}");
        }
        crate::card::write(&export_dir, config, &metrics, Some(&p.report), run.lora())?;
        write_json(&run.run_dir.join("metrics.json"), &metrics)?;
        write_report(run.run_dir);
        Ok(metrics)
    }
}

/// Write `report.html`. It is derived from the run's files; if it cannot be drawn the run is
/// still complete, so say so and how to retry rather than failing the run.
pub(crate) fn write_report(run_dir: &Path) {
    match crate::report::write(run_dir) {
        Ok(path) => tracing::info!("report: {}", path.display()),
        Err(e) => tracing::warn!(
            "{}: could not write report.html ({e}); retry with `tunekit report {}`",
            run_dir.display(),
            run_dir.display()
        ),
    }
}
