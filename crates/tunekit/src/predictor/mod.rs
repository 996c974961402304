//! The one loaded-model type: [`Predictor`], a trained (or plain Hugging Face) model loaded
//! for inference, with everything inference needs — task, tokenizer, training-time
//! preprocessing, labels, multilabel thresholds, device and precision. Every command that
//! runs a trained model goes through it: `eval`, `predict`, `serve`, `robustness`,
//! `compress-report`, `export`, `quantize`, `merge`, `prune` and distillation's teacher.
//!
//! "Which task is this model" is decided once, in [`Predictor::load`]: `tunekit.json`'s
//! `task` when present, else single-label classification when `config.json` has `id2label`,
//! else a sentence-embedding model when the directory is a sentence-transformers one.
//!
//! The folder splits by what a caller does with the model:
//! - [`eval`]: scores on a labelled file ([`Evaluation`]: classification metrics or a task's
//!   [`Scores`](crate::task::Scores));
//! - [`file`]: predictions for a file, written as JSONL;
//! - [`online`]: predictions for in-memory texts (`serve`), one typed [`Prediction`] per text.
//!
//! To add a task's inference output, touch [`crate::task::predict::outputs`] (the forward
//! pass), [`online::Prediction`] and its `predictions` match (serve), and `file.rs`'s line for
//! the task (`predict`).

pub mod eval;
pub mod file;
pub mod online;

use std::path::{Path, PathBuf};

use burn::tensor::Device;

pub use eval::Evaluation;
pub use online::{Encoded, EntitySpan, Prediction, TextEncoder};

use crate::data::Example;
use crate::error::{Error, Result};
use crate::infer::ModelMeta;
use crate::model::weights::{ClassifierSpec, DropoutOverride, load_classifier};
use crate::model::{BertConfig, ModelDir, Pooling, SequenceClassifier, TUNEKIT_META};
use crate::task::{TaskKind, TaskMeta, kind_name};
use crate::tokenize::{TextTokenizer, Tokens};

/// A model loaded for inference on a plain (non-autodiff) device, for any task.
pub struct Predictor {
    /// The model in inference mode (an embedding model's head, if any, is unused).
    pub model: SequenceClassifier,
    /// Its tokenizer, at the model's max length.
    pub tokenizer: TextTokenizer,
    /// Output names in id order: class labels, multilabel labels, NER tags, the regression
    /// target; empty for a sentence-embedding model without `tunekit.json`.
    pub labels: Vec<String>,
    /// The task and its inference settings (multilabel thresholds, tag scheme, …);
    /// [`TaskKind::Classification`] with no settings for a model without a `task`.
    pub task: TaskMeta,
    /// Training-time text preprocessing (cleaning, de-identification), applied to every input.
    pub preprocess: Option<crate::prep::TextPreprocess>,
    /// Where it runs.
    pub device: Device,
    /// The model directory (resolved from a hub id when one was given).
    pub dir: PathBuf,
}

/// The task settings of a model without `tunekit.json`'s `task`.
fn plain_task(kind: TaskKind) -> TaskMeta {
    TaskMeta {
        kind,
        thresholds: Vec::new(),
        label_separator: String::new(),
        scheme: None,
        contrastive_scale: None,
    }
}

impl Predictor {
    /// Load the model at `spec` (a directory or a cached hub id): a full model, a LoRA adapter
    /// directory (adapters on the base model named in `adapter_config.json`), an int8 model
    /// (`tunekit quantize`; runs the int8 product), a Hugging Face classifier with `id2label`,
    /// or a sentence-transformers / encoder-only directory (an embedding model).
    /// `max_length` overrides the trained max length (checked against the position table).
    ///
    /// Errors: a model with neither `id2label`, a tunekit task nor sentence-transformers files
    /// ([`Error::Model`]); unreadable or inconsistent files, naming them.
    pub fn load(spec: &str, max_length: Option<usize>, device: &Device) -> Result<Self> {
        let resolved = crate::hub::resolve_model(spec)?;
        // A LoRA run exports adapters + head and the PEFT config, not a whole model.
        let adapter = resolved.join(crate::model::lora::ADAPTER_CONFIG).is_file();
        let config_path = resolved.join("config.json");
        let config = if adapter {
            BertConfig::from_file(&config_path)?
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
        let hf_labels = config.labels().filter(|l| !l.is_empty());
        // A Hugging Face token classifier (`…ForTokenClassification`) without tunekit's files.
        let hf_token_classifier = config
            .architectures
            .iter()
            .flatten()
            .any(|a| a.ends_with("ForTokenClassification"));
        let task = match (meta.as_ref().and_then(|m| m.task.clone()), &hf_labels) {
            (Some(t), _) => t,
            (None, Some(_)) if hf_token_classifier => TaskMeta {
                scheme: Some(crate::task::TagScheme::Auto),
                ..plain_task(TaskKind::TokenClassification)
            },
            (None, Some(_)) => plain_task(TaskKind::Classification),
            // A sentence-transformers model (or a tunekit embedding model without its task):
            // the encoder alone, for embeddings.
            (None, None) if resolved.join("modules.json").is_file() => {
                plain_task(TaskKind::Embedding)
            }
            (None, None) => {
                return Err(Error::Model(format!(
                    "{}: config.json has no id2label: not a classification model (fine-tune it first)",
                    config_path.display()
                )));
            }
        };
        let labels = match (task.kind.is_classification(), hf_labels) {
            (true, Some(l)) => l,
            // An empty id2label would leave predictions without a label to name.
            (true, None) => {
                return Err(Error::Model(format!(
                    "{}: config.json has no id2label: not a classification model (fine-tune it first)",
                    config_path.display()
                )));
            }
            (false, hf) => match &meta {
                Some(m) => m.labels.clone(),
                None => hf.unwrap_or_default(),
            },
        };
        let embedding = task.kind == TaskKind::Embedding;
        let pooling = match &meta {
            Some(m) => m.pooling,
            None if embedding => Pooling::Mean,
            // A transformers model: its head's own pooling (ModernBERT's `classifier_pooling`).
            None => config.hf_pooling(),
        };
        let max_length = match (max_length, &meta) {
            (Some(n), _) => n,
            (None, Some(m)) => m.max_length,
            (None, None) if embedding => {
                crate::embed::EmbeddingConfig::resolve(
                    &resolved,
                    &config,
                    &crate::embed::EmbedOptions::default(),
                )?
                .max_length
            }
            (None, None) => config.max_sequence_length().min(512),
        };
        let spec_c = ClassifierSpec {
            num_labels: labels.len().max(1),
            pooling,
            dropout: DropoutOverride::default(),
            seed: 0,
            require_head: !embedding,
            head: task.kind.head(),
        };
        let model = if adapter {
            crate::model::lora::load_for_inference(&resolved, &spec_c, device)?.0
        } else {
            let weights = crate::model::weights::find_weights(&resolved)
                .unwrap_or_else(|| resolved.join("model.safetensors"));
            let model = load_classifier(&weights, &config, &spec_c, device)?.0;
            // An int8 model (`tunekit quantize`) runs the int8 product.
            crate::model::quant::attach(model, &weights)?
        };
        let tokenizer =
            TextTokenizer::for_model(&resolved.join("tokenizer.json"), max_length, &config)?;
        Ok(Predictor {
            model,
            tokenizer,
            labels,
            task,
            preprocess: meta.and_then(|m| m.preprocess),
            device: device.clone(),
            dir: resolved,
        })
    }

    /// The task this model was trained for.
    pub fn kind(&self) -> TaskKind {
        self.task.kind
    }

    /// The task's config spelling (`multilabel`, `regression`, …).
    pub fn kind_name(&self) -> &'static str {
        kind_name(self.task.kind)
    }

    /// Refuse a model that is not a single-label (or pair) classifier, saying which task it
    /// is and what `what` (a command, a feature) needs: for what exists for classifiers only.
    pub fn require_classifier(&self, what: &str) -> Result<()> {
        if self.task.kind.is_classification() {
            return Ok(());
        }
        Err(Error::Model(format!(
            "{}: a {} model, not a single-label classifier; {what} applies to classifiers only",
            self.dir.display(),
            self.kind_name()
        )))
    }

    /// This predictor if it is a single-label (or pair) classifier, else the error of
    /// [`Predictor::require_classifier`].
    pub fn classifier(self, what: &str) -> Result<Self> {
        self.require_classifier(what)?;
        Ok(self)
    }

    /// Runs the encoder's linear layers in `precision` (bf16: bf16 operands, f32 sums, see
    /// [`crate::model::bf16`]); an int8 model has its own product, so bf16 is refused there.
    pub fn with_precision(mut self, precision: crate::model::Precision) -> Result<Self> {
        self.model = crate::infer::with_precision(self.model, precision, &self.device, &self.dir)?;
        Ok(self)
    }

    /// Whether this model is LoRA adapters on a base model (not yet merged).
    pub fn is_adapter(&self) -> bool {
        self.dir.join(crate::model::lora::ADAPTER_CONFIG).is_file()
    }

    /// `config.json` of the model as it should be written for a plain (merged, exported,
    /// quantised, pruned) copy: the directory's own, or for a LoRA adapter directory the
    /// adapter's (labels, task's `problem_type`) — unknown keys kept.
    pub fn config_json(&self) -> Result<serde_json::Value> {
        crate::fsutil::read_json(&self.dir.join("config.json"))
    }

    /// Fold LoRA adapters into the base weights and write a plain HF model directory to
    /// `out` (weights, config, tokenizer, tunekit.json with the task, drift reference): `tunekit
    /// merge`, for every task.
    pub fn merge_into(self, out: &Path) -> Result<()> {
        if !self.is_adapter() {
            return Err(Error::Model(format!(
                "{}: not a LoRA adapter directory (no {}): a full {} model, nothing to merge",
                self.dir.display(),
                crate::model::lora::ADAPTER_CONFIG,
                self.kind_name()
            )));
        }
        std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
        let merged = burn::module::Module::materialize(self.model);
        let weights = out.join("model.safetensors");
        if self.task.kind == TaskKind::Embedding {
            // An embedding model has no head in use: the encoder alone, as its export.
            let tensors: Vec<_> = crate::model::weights::classifier_tensors(&merged)?
                .into_iter()
                .filter(|(n, _, _)| !n.starts_with("classifier."))
                .collect();
            crate::model::weights::write_safetensors(tensors, &weights)?;
        } else {
            crate::model::weights::save_classifier(&merged, &weights)?;
        }
        for f in MODEL_SIDE_FILES {
            let src = self.dir.join(f);
            if src.is_file() {
                crate::fsutil::copy_atomic(&src, &out.join(f))?;
            }
        }
        if self.task.kind == TaskKind::Embedding {
            copy_sentence_transformers_files(&self.dir, out)?;
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

    /// Tokenise examples (after the training-time preprocessing); text pairs are encoded
    /// together, except for an embedding model (the pair is its positive, not its input).
    pub fn tokenize(&self, examples: &[Example]) -> Result<Vec<Tokens>> {
        let texts: Vec<std::borrow::Cow<str>> = examples
            .iter()
            .map(|e| self.prepare_text(&e.text))
            .collect();
        let pairs: Option<Vec<std::borrow::Cow<str>>> = examples
            .iter()
            .map(|e| e.text_pair.as_deref().map(|p| self.prepare_text(p)))
            .collect::<Option<Vec<_>>>()
            .filter(|_| self.task.kind != TaskKind::Embedding);
        let texts: Vec<&str> = texts.iter().map(|t| t.as_ref()).collect();
        let pairs: Option<Vec<&str>> = pairs
            .as_ref()
            .map(|p| p.iter().map(|t| t.as_ref()).collect());
        self.tokenizer.encode_batch(&texts, pairs.as_deref())
    }

    /// The tokenisation half of the predictor, without the model (cheap to clone and share
    /// with threads that prepare requests while the model runs elsewhere).
    pub fn text_encoder(&self) -> TextEncoder {
        TextEncoder {
            tokenizer: self.tokenizer.clone(),
            preprocess: self.preprocess.clone(),
            kind: self.task.kind,
        }
    }

    /// How sentence vectors of this model are made for `/embed` and `tunekit embed`: the
    /// directory's sentence-transformers configuration ([`crate::embed`]).
    pub fn embedding_config(&self) -> Result<crate::embed::EmbeddingConfig> {
        let config = BertConfig::from_file(&self.dir.join("config.json"))?;
        crate::embed::EmbeddingConfig::resolve(
            &self.dir,
            &config,
            &crate::embed::EmbedOptions::default(),
        )
    }
}

/// Files copied beside the weights of a plain copy of a model (merge): tokenizer, config,
/// tunekit's metadata (task, thresholds), drift reference.
const MODEL_SIDE_FILES: [&str; 7] = [
    "config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
    TUNEKIT_META,
    crate::drift::REFERENCE_FILE,
];

/// Copy sentence-transformers' module files (`modules.json`, pooling, normalisation), so an
/// embedding model stays one after merge / quantize / prune.
pub fn copy_sentence_transformers_files(from: &Path, to: &Path) -> Result<()> {
    for f in [
        "modules.json",
        "sentence_bert_config.json",
        "config_sentence_transformers.json",
        "1_Pooling/config.json",
    ] {
        let src = from.join(f);
        if src.is_file() {
            let dst = to.join(f);
            if let Some(parent) = dst.parent() {
                std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
            }
            crate::fsutil::copy_atomic(&src, &dst)?;
        }
    }
    let norm = to.join("2_Normalize");
    if from.join("2_Normalize").is_dir() {
        std::fs::create_dir_all(&norm).map_err(|e| Error::io(&norm, e))?;
    }
    Ok(())
}
