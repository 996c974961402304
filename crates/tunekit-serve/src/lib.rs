//! `tunekit serve`: an HTTP inference server for fine-tuned tunekit models.
//!
//! Design: the async runtime (axum on tokio) only parses, validates and tokenises requests;
//! the model runs on one dedicated OS thread (the *worker*) that owns it. Requests reach the
//! worker through a bounded queue; the worker takes the first waiting request, then keeps
//! collecting more for at most `max_wait` or until `max_batch_size` inputs / `max_batch_tokens`
//! tokens, and runs them as one batch (dynamic batching). A full queue is answered at once
//! with 503 + `Retry-After` instead of letting latency grow without bound.
//!
//! Routes follow Hugging Face text-embeddings-inference where it has one (`/predict`,
//! `/embed`, `/health`, `/info`, `/metrics`) plus `/ready` and `/openapi.json`.

#![forbid(unsafe_code)]

mod api;
mod metrics;
mod openapi;
mod worker;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

pub use api::router;
use metrics::Metrics;
use tunekit::drift::ReferenceStats;
use tunekit::predictor::Predictor;
pub use worker::Worker;

/// Server limits and batching parameters.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// Address to listen on.
    pub addr: SocketAddr,
    /// Most inputs in one model batch.
    pub max_batch_size: usize,
    /// Most tokens (sum of input lengths) in one model batch.
    pub max_batch_tokens: usize,
    /// Longest time the first request of a batch waits for company.
    pub max_wait: Duration,
    /// Requests waiting for the worker before new ones get 503.
    pub queue_capacity: usize,
    /// Most inputs in one request.
    pub max_inputs_per_request: usize,
    /// Largest request body in bytes.
    pub max_body_bytes: usize,
    /// Inputs longer than the model's max length: truncate (and flag it) or reject (413).
    pub truncate: bool,
    /// Time limit for one request, queueing included.
    pub request_timeout: Duration,
    /// Predictions in the sliding window used for drift.
    pub drift_window: usize,
    /// Number format of the encoder's linear-layer products (bf16: faster on AMX CPUs).
    pub precision: tunekit::model::Precision,
    /// Where the model runs (`tunekit::device::device`: `--device`, checked against the
    /// features this build has).
    pub device: burn::tensor::Device,
}

impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig {
            addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            max_batch_size: 32,
            max_batch_tokens: 16_384,
            max_wait: Duration::from_millis(5),
            queue_capacity: 256,
            max_inputs_per_request: 64,
            max_body_bytes: 1 << 20,
            truncate: true,
            request_timeout: Duration::from_secs(30),
            drift_window: 1000,
            precision: tunekit::model::Precision::F32,
            device: burn::tensor::Device::flex(),
        }
    }
}

/// Errors starting the server.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// Loading the model failed.
    #[error(transparent)]
    Model(#[from] tunekit::Error),
    /// Registering metrics failed.
    #[error("metrics: {0}")]
    Metrics(String),
    /// Binding or serving failed.
    #[error("{addr}: {source}")]
    Io {
        /// The address.
        addr: SocketAddr,
        /// The error.
        source: std::io::Error,
    },
}

/// Static facts about the served model, for `/info`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ModelInfo {
    /// Model directory.
    pub model_dir: String,
    /// The task (`classification`, `multilabel`, `regression`, `token_classification`,
    /// `embedding`, …): what `/predict` answers (an embedding model answers `/embed` only).
    pub task: String,
    /// Labels in class-id order.
    pub labels: Vec<String>,
    /// Max input length in tokens.
    pub max_input_length: usize,
    /// Pooling of the classification head.
    pub pooling: String,
    /// Pooling of /embed's sentence vectors.
    pub embedding_pooling: String,
    /// Whether /embed normalises by default (the model's `Normalize` module).
    pub embedding_normalize: bool,
    /// Max input length of /embed in tokens.
    pub embedding_max_input_length: usize,
    /// tunekit version.
    pub version: String,
    /// Max inputs per request.
    pub max_client_batch_size: usize,
    /// Max inputs per model batch.
    pub max_batch_size: usize,
    /// Max tokens per model batch.
    pub max_batch_tokens: usize,
    /// Whether long inputs are truncated (else rejected).
    pub auto_truncate: bool,
}

/// Shared state of the HTTP handlers.
pub struct AppState {
    /// Model facts.
    pub info: ModelInfo,
    /// The model worker's queue.
    pub worker: Worker,
    /// Prometheus metrics and drift window.
    pub metrics: Metrics,
    /// Limits.
    pub config: ServeConfig,
    /// The model's task.
    pub kind: tunekit::task::TaskKind,
    /// Tokenizer, training-time preprocessing and task (the handlers encode so the worker
    /// only computes).
    pub encoder: Arc<tunekit::predictor::TextEncoder>,
    /// How /embed makes sentence vectors (the same as `tunekit embed`).
    pub embedding: tunekit::embed::EmbeddingConfig,
    /// Tokenizer at the embedding max length, for /embed.
    pub embed_tokenizer: Arc<tunekit::tokenize::TextTokenizer>,
}

/// Load `model` (any task, through [`Predictor`]) on `config.device` and build the server
/// state (the worker thread starts here).
pub fn load(model: &str, config: ServeConfig) -> Result<Arc<AppState>, ServeError> {
    let device = config.device.clone();
    let predictor = Predictor::load(model, None, &device)?.with_precision(config.precision)?;
    // /embed makes vectors as `tunekit embed` does (tunekit::embed): the model's pooling,
    // normalisation and max length.
    let embedding = predictor.embedding_config()?;
    let bert_config = tunekit::model::BertConfig::from_file(&predictor.dir.join("config.json"))?;
    let embed_tokenizer = Arc::new(tunekit::tokenize::TextTokenizer::for_model(
        &predictor.dir.join("tokenizer.json"),
        embedding.max_length,
        &bert_config,
    )?);
    let reference_path = predictor.dir.join(tunekit::drift::REFERENCE_FILE);
    let reference: Option<ReferenceStats> = if reference_path.is_file() {
        Some(tunekit::fsutil::read_json(&reference_path)?)
    } else {
        tracing::warn!(
            "{}: missing; drift metrics disabled",
            reference_path.display()
        );
        None
    };
    let kind = predictor.kind();
    if kind == tunekit::task::TaskKind::Embedding {
        tracing::info!(
            "{}: an embedding model: serving /embed (/predict refuses)",
            predictor.dir.display()
        );
    }
    // The predictor's own tokenizer: the model's limits (position table, token types) come
    // with it.
    let encoder = Arc::new(predictor.text_encoder());
    let info = ModelInfo {
        model_dir: predictor.dir.display().to_string(),
        task: predictor.kind_name().to_string(),
        labels: predictor.labels.clone(),
        max_input_length: predictor.tokenizer.max_length(),
        pooling: format!("{:?}", predictor.model.pooling).to_lowercase(),
        embedding_pooling: embedding.pooling.name().to_string(),
        embedding_normalize: embedding.normalize,
        embedding_max_input_length: embedding.max_length,
        version: env!("CARGO_PKG_VERSION").to_string(),
        max_client_batch_size: config.max_inputs_per_request,
        max_batch_size: config.max_batch_size,
        max_batch_tokens: config.max_batch_tokens,
        auto_truncate: config.truncate,
    };
    // Drift compares predicted labels with training's: classification models only.
    let drift_labels = if kind.is_classification() {
        predictor.labels.clone()
    } else {
        Vec::new()
    };
    let metrics = Metrics::new(&drift_labels, reference, config.drift_window)
        .map_err(|e| ServeError::Metrics(e.to_string()))?;
    let worker = Worker::spawn(
        predictor,
        embedding.pooling,
        &config,
        metrics.queue_depth.clone(),
        metrics.batch_size.clone(),
    );
    Ok(Arc::new(AppState {
        info,
        kind,
        worker,
        metrics,
        config,
        encoder,
        embedding,
        embed_tokenizer,
    }))
}

/// Serve until `shutdown` resolves; in-flight requests are finished first.
pub async fn serve(
    state: Arc<AppState>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let addr = state.config.addr;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Io { addr, source })?;
    let bound = listener.local_addr().unwrap_or(addr);
    tracing::info!("listening on http://{bound}");
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(|source| ServeError::Io { addr, source })
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutting down: finishing in-flight requests");
}
