//! Inference shared by training-time evaluation and the `eval`, `predict` and `embed`
//! commands: batched forward passes in length order, scattered back to input order.

use std::io::Write;
use std::path::{Path, PathBuf};

use burn::tensor::Device;
use burn::tensor::activation::log_softmax;
use serde::Serialize;

use crate::batch::{collate, eval_batches};
use crate::data::{DataSpec, Example, example_iter, read_examples};
use crate::error::{Error, Result};
use crate::metrics::{ClassificationMetrics, ConfusionAccumulator};
use crate::model::weights::{ClassifierSpec, DropoutOverride, load_classifier, to_vec};
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
    if precision == crate::model::Precision::Bf16 && model.bert.int8.is_some() {
        return Err(Error::Config(format!(
            "{}: an int8 model (`tunekit quantize`) runs int8 products; precision bf16 applies \
             to f32 models",
            dir.display()
        )));
    }
    model.bert.precision = crate::model::bf16::for_device(precision, device)?;
    Ok(model)
}

/// A fine-tuned classifier loaded for inference on a plain (non-autodiff) device.
pub struct Classifier {
    /// The model in inference mode.
    pub model: SequenceClassifier,
    /// Its tokenizer.
    pub tokenizer: TextTokenizer,
    /// Label names in class-id order.
    pub labels: Vec<String>,
    /// Where it runs.
    pub device: Device,
    /// The model directory.
    pub dir: PathBuf,
    /// Training-time text preprocessing, applied to every input.
    pub preprocess: Option<crate::prep::TextPreprocess>,
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

impl Classifier {
    /// Load a fine-tuned classifier (HF layout with `id2label`) for inference.
    pub fn load(spec: &str, max_length: Option<usize>, device: &Device) -> Result<Self> {
        let resolved = crate::hub::resolve_model(spec)?;
        // A LoRA run exports adapters + head and the PEFT config, not a whole model.
        let adapter = resolved.join(crate::model::lora::ADAPTER_CONFIG).is_file();
        let config_path = resolved.join("config.json");
        let config = if adapter {
            crate::model::BertConfig::from_file(&config_path)?
        } else {
            ModelDir::open(spec)?.config
        };
        // A model from elsewhere (e.g. transformers) has no tunekit.json: HF defaults apply.
        // One that has it must parse, or the pooling would silently be wrong.
        let meta_path = resolved.join(TUNEKIT_META);
        let meta: Option<ModelMeta> = if meta_path.is_file() {
            Some(crate::fsutil::read_json(&meta_path)?)
        } else {
            None
        };
        if let Some(task) = meta.as_ref().and_then(|m| m.task.as_ref())
            && !task.kind.is_classification()
        {
            return Err(Error::Model(format!(
                "{}: a {} model, not a single-label classifier; use `tunekit eval` / `tunekit predict` (this command serves classifiers only)",
                resolved.display(),
                crate::task::kind_name(task.kind)
            )));
        }
        // An empty id2label would leave predictions without a label to name.
        let labels = config.labels().filter(|l| !l.is_empty()).ok_or_else(|| {
            Error::Model(format!(
                "{}: config.json has no id2label: not a classification model (fine-tune it first)",
                config_path.display()
            ))
        })?;
        let pooling = meta.as_ref().map(|m| m.pooling).unwrap_or_default();
        let max_length = max_length
            .or(meta.as_ref().map(|m| m.max_length))
            .unwrap_or(config.max_position_embeddings.min(512));
        let spec = ClassifierSpec {
            num_labels: labels.len(),
            pooling,
            dropout: DropoutOverride::default(),
            seed: 0,
            require_head: true,
        };
        let model = if adapter {
            crate::model::lora::load_for_inference(&resolved, &spec, device)?.0
        } else {
            let weights = resolved.join("model.safetensors");
            let model = load_classifier(&weights, &config, &spec, device)?.0;
            // An int8 model (`tunekit quantize`) runs the int8 product.
            crate::model::quant::attach(model, &weights)?
        };
        let tokenizer =
            TextTokenizer::for_model(&resolved.join("tokenizer.json"), max_length, &config)?;
        Ok(Classifier {
            model,
            tokenizer,
            labels,
            device: device.clone(),
            dir: resolved,
            preprocess: meta.and_then(|m| m.preprocess),
        })
    }

    /// Runs the encoder's linear layers in `precision` (bf16: bf16 operands, f32 sums, see
    /// [`crate::model::bf16`]); an int8 model has its own product, so bf16 is refused there.
    pub fn with_precision(mut self, precision: crate::model::Precision) -> Result<Self> {
        self.model = with_precision(self.model, precision, &self.device, &self.dir)?;
        Ok(self)
    }

    /// Whether this model is LoRA adapters on a base model (not yet merged).
    pub fn is_adapter(&self) -> bool {
        self.dir.join(crate::model::lora::ADAPTER_CONFIG).is_file()
    }

    /// Fold LoRA adapters into the base weights and write a plain HF model directory to
    /// `out` (weights, config, tokenizer, tunekit.json, drift reference): `tunekit merge`.
    pub fn merge_into(self, out: &Path) -> Result<()> {
        if !self.is_adapter() {
            return Err(Error::Model(format!(
                "{}: not a LoRA adapter directory (no {})",
                self.dir.display(),
                crate::model::lora::ADAPTER_CONFIG
            )));
        }
        std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
        let merged = burn::module::Module::materialize(self.model);
        crate::model::weights::save_classifier(&merged, &out.join("model.safetensors"))?;
        for f in [
            "config.json",
            "tokenizer.json",
            "tokenizer_config.json",
            "special_tokens_map.json",
            "vocab.txt",
            TUNEKIT_META,
            crate::drift::REFERENCE_FILE,
        ] {
            let src = self.dir.join(f);
            if src.is_file() {
                crate::fsutil::copy_atomic(&src, &out.join(f))?;
            }
        }
        Ok(())
    }

    /// A text as the model saw texts in training (cleaned, de-identified).
    pub fn prepare_text<'a>(&self, text: &'a str) -> std::borrow::Cow<'a, str> {
        match &self.preprocess {
            Some(p) => std::borrow::Cow::Owned(p.apply(text)),
            None => std::borrow::Cow::Borrowed(text),
        }
    }

    /// Tokenise examples (after the training-time preprocessing).
    pub fn tokenize(&self, examples: &[Example]) -> Result<Vec<Tokens>> {
        let texts: Vec<std::borrow::Cow<str>> = examples
            .iter()
            .map(|e| self.prepare_text(&e.text))
            .collect();
        let pairs: Option<Vec<std::borrow::Cow<str>>> = examples
            .iter()
            .map(|e| e.text_pair.as_deref().map(|p| self.prepare_text(p)))
            .collect::<Option<Vec<_>>>();
        let texts: Vec<&str> = texts.iter().map(|t| t.as_ref()).collect();
        let pairs: Option<Vec<&str>> = pairs
            .as_ref()
            .map(|p| p.iter().map(|t| t.as_ref()).collect());
        self.tokenizer.encode_batch(&texts, pairs.as_deref())
    }

    /// Evaluate on a labelled file.
    /// With `robustness`, also evaluate under the perturbations of [`crate::robustness`].
    pub fn evaluate_file(
        &self,
        spec: &DataSpec,
        batch_size: usize,
        robustness: bool,
    ) -> Result<EvalReport> {
        let (examples, read) = read_examples(spec)?;
        require_input(examples.len(), &read, &spec.path)?;
        let ids = label_ids(&examples, &self.labels, &spec.path)?;
        let tokens = self.tokenize(&examples)?;
        let truncated = tokens.iter().filter(|t| t.truncated).count();
        let metrics = evaluate_tokens(
            &self.model,
            &tokens,
            &ids,
            &self.labels,
            batch_size,
            self.tokenizer.pad_id(),
            &self.device,
        )?;
        Ok(EvalReport {
            file: spec.path.clone(),
            examples: examples.len(),
            dropped_empty_text: read.empty_text_dropped,
            dropped_empty_label: read.empty_label_dropped,
            truncated,
            max_length: self.tokenizer.max_length(),
            metrics,
            robustness: if robustness {
                Some(crate::robustness::evaluate(
                    self, &examples, &ids, batch_size, 0,
                )?)
            } else {
                None
            },
        })
    }

    /// Stream predictions for `input` to `output` as JSONL (one object per input row, in
    /// order), `chunk` rows at a time; `on_progress` gets the number of rows done. Written to
    /// a temp file and renamed, so a failed run leaves no partial output.
    pub fn predict_file(
        &self,
        input: &DataSpec,
        output: &Path,
        batch_size: usize,
        mut on_progress: impl FnMut(usize),
    ) -> Result<PredictSummary> {
        let dir = output
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let tmp = tempfile::NamedTempFile::new_in(dir).map_err(|e| Error::io(dir, e))?;
        let mut w = std::io::BufWriter::new(tmp);
        let mut summary = PredictSummary::default();
        let mut chunk: Vec<Example> = Vec::with_capacity(1024);
        let mut iter = example_iter(input)?;
        loop {
            let next = iter.next();
            let done = next.is_none();
            if let Some(ex) = next {
                chunk.push(ex?);
            }
            if chunk.len() >= 1024 || (done && !chunk.is_empty()) {
                let tokens = self.tokenize(&chunk)?;
                summary.truncated += tokens.iter().filter(|t| t.truncated).count();
                let (probs, _) = predict_probs(
                    &self.model,
                    &tokens,
                    None,
                    batch_size,
                    self.tokenizer.pad_id(),
                    &self.device,
                )?;
                for (ex, p) in chunk.iter().zip(probs) {
                    let best = argmax(&p);
                    let scores: serde_json::Map<String, serde_json::Value> = self
                        .labels
                        .iter()
                        .zip(p.iter())
                        .map(|(l, &v)| (l.clone(), serde_json::json!(v)))
                        .collect();
                    let row = serde_json::json!({
                        "line": ex.line,
                        "label": self.labels[best],
                        "score": p[best],
                        "probabilities": scores,
                    });
                    writeln!(w, "{row}").map_err(|e| Error::io(output, e))?;
                }
                summary.rows += chunk.len();
                on_progress(summary.rows);
                chunk.clear();
            }
            if done {
                break;
            }
        }
        // Empty input writes nothing (the temp file is removed when dropped).
        require_input(summary.rows, iter.report(), &input.path)?;
        summary.dropped_empty_text = iter.report().empty_text_dropped;
        let tmp = w
            .into_inner()
            .map_err(|e| Error::io(output, e.into_error()))?;
        crate::fsutil::finish_temp(tmp.as_file(), output)?;
        tmp.persist(output)
            .map_err(|e| Error::io(output, e.error))?;
        Ok(summary)
    }
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
    let mut file = crate::model::weights::WeightFile::open(&dir.weights_path())?;
    let bert = crate::model::weights::load_bert(
        &mut file,
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
