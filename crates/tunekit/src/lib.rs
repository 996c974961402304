//! # tunekit
//!
//! Fine-tune pretrained BERT-family encoders (Hugging Face layout) on labelled text, evaluate,
//! export and predict — the library behind the `tunekit` command.
//!
//! One module per concern, named for what it holds:
//! - [`card`]: the model card (`model/README.md`, Hugging Face format);
//! - [`config`]: the run's TOML configuration, parsed strictly and validated once;
//! - [`data`]: reading labelled CSV/TSV/JSONL/Parquet with line-numbered errors;
//! - [`prep`]: data preparation — cleaning, de-identification, splits, de-duplication,
//!   length outliers, augmentation — and the data report;
//! - [`tensorboard`]: TensorBoard scalar event files written during training;
//! - [`tokenize`]: the model's `tokenizer.json`, with truncation counted;
//! - [`batch`]: dynamic padding and length-grouped batch order;
//! - [`model`]: *what* is trained — BERT encoder and heads, HF weights in and out;
//! - [`llm`]: decoder language models — GGUF / HF loading, tokenizer and chat template, generation;
//! - [`device`]: *where* it runs — Flex CPU or CUDA;
//! - [`report`]: `report.html`, the run's self-contained page of figures and tables;
//! - [`robustness`]: evaluation under input perturbations (`tunekit eval --robustness`);
//! - [`schedule`]: learning-rate schedules;
//! - [`search`]: hyperparameter search — spaces, samplers (grid, random, TPE), pruners, importance;
//! - [`train`]: the fine-tuning loop, checkpoints and resume;
//! - [`task`]: multilabel, regression, token classification (NER) and embedding tasks;
//! - [`metrics`]: classification metrics with scikit-learn semantics;
//! - [`drift`]: reference prediction distribution and divergence (PSI, KL) for monitoring;
//! - [`predictor`]: the one loaded-model type, for every task: eval, predict, serve, export;
//! - [`infer`]: batched forward passes, metrics from probabilities, embeddings;
//! - [`export`]: `tunekit export` — Hugging Face directory or ONNX graph;
//! - [`index`]: the experiment index (`runs/index.sqlite`): runs list, show, compare;
//! - [`hub`]: offline resolution of model ids in the local HF cache;
//! - [`fsutil`]: atomic file writes.

#![forbid(unsafe_code)]

pub mod batch;
pub mod card;
pub mod config;
pub mod data;
pub mod device;
pub mod dp;
pub mod drift;
pub mod embed;
pub mod error;
pub mod export;
pub mod fsutil;
pub mod hub;
pub mod index;
pub mod index_pg;
pub mod infer;
pub mod llm;
pub mod metrics;
pub mod model;
pub mod optim;
pub mod predictor;
pub mod prep;
pub mod report;
pub mod resume;
pub mod robustness;
pub mod schedule;
pub mod search;
pub mod task;
pub mod tensorboard;
pub mod tokenize;
pub mod train;

pub use error::{Error, Result};
