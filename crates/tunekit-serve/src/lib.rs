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
use tunekit::infer::Classifier;
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
    /// Tokenizer (the handlers tokenise so the worker only computes).
    pub tokenizer: Arc<tunekit::tokenize::TextTokenizer>,
    /// The model's training-time text preprocessing (cleaning, de-identification).
    pub preprocess: Option<tunekit::prep::TextPreprocess>,
    /// How /embed makes sentence vectors (the same as `tunekit embed`).
    pub embedding: tunekit::embed::EmbeddingConfig,
    /// Tokenizer at the embedding max length, for /embed.
    pub embed_tokenizer: Arc<tunekit::tokenize::TextTokenizer>,
}

/// Load `model` and build the server state (the worker thread starts here).
pub fn load(model: &str, config: ServeConfig) -> Result<Arc<AppState>, ServeError> {
    let device = burn::tensor::Device::flex();
    let resolved = tunekit::hub::resolve_model(model).map_err(tunekit::Error::from)?;
    // A sentence-embedding model (sentence-transformers files, no classification head) is
    // served for /embed only.
    // Only a model that is not a classifier falls back (no id2label, or a tunekit embedding
    // model); any other load error (bad tunekit.json, a max length past the position table) is
    // the user's to see, not hidden behind /embed.
    let not_a_classifier = || -> Result<bool, ServeError> {
        let meta_path = resolved.join(tunekit::model::TUNEKIT_META);
        if meta_path.is_file() {
            let meta: tunekit::infer::ModelMeta = tunekit::fsutil::read_json(&meta_path)?;
            if meta
                .task
                .is_some_and(|t| t.kind == tunekit::task::TaskKind::Embedding)
            {
                return Ok(true);
            }
        }
        let config = tunekit::model::BertConfig::from_file(&resolved.join("config.json"))?;
        Ok(config.labels().is_none_or(|l| l.is_empty()))
    };
    let classifier = match Classifier::load(model, None, &device) {
        Ok(c) => c,
        Err(e) if resolved.join("modules.json").is_file() && not_a_classifier()? => {
            tracing::info!("{e}: serving it as a sentence-embedding model (/embed only)");
            encoder_only(model, &device)?
        }
        Err(e) => return Err(e.into()),
    }
    .with_precision(config.precision)?;
    // /embed makes vectors as `tunekit embed` does (tunekit::embed): the model's pooling,
    // normalisation and max length.
    let bert_config = tunekit::model::BertConfig::from_file(&classifier.dir.join("config.json"))?;
    let embedding = tunekit::embed::EmbeddingConfig::resolve(
        &classifier.dir,
        &bert_config,
        &tunekit::embed::EmbedOptions::default(),
    )?;
    let embed_tokenizer = Arc::new(tunekit::tokenize::TextTokenizer::for_model(
        &classifier.dir.join("tokenizer.json"),
        embedding.max_length,
        &bert_config,
    )?);
    let reference_path = classifier.dir.join(tunekit::drift::REFERENCE_FILE);
    let reference: Option<ReferenceStats> = if reference_path.is_file() {
        Some(tunekit::fsutil::read_json(&reference_path)?)
    } else {
        tracing::warn!(
            "{}: missing; drift metrics disabled",
            reference_path.display()
        );
        None
    };
    // The classifier's own tokenizer: the model's limits (position table, token types) come
    // with it.
    let tokenizer = Arc::new(classifier.tokenizer.clone());
    let info = ModelInfo {
        model_dir: classifier.dir.display().to_string(),
        labels: classifier.labels.clone(),
        max_input_length: classifier.tokenizer.max_length(),
        pooling: format!("{:?}", classifier.model.pooling).to_lowercase(),
        embedding_pooling: embedding.pooling.name().to_string(),
        embedding_normalize: embedding.normalize,
        embedding_max_input_length: embedding.max_length,
        version: env!("CARGO_PKG_VERSION").to_string(),
        max_client_batch_size: config.max_inputs_per_request,
        max_batch_size: config.max_batch_size,
        max_batch_tokens: config.max_batch_tokens,
        auto_truncate: config.truncate,
    };
    let metrics = Metrics::new(&classifier.labels, reference, config.drift_window)
        .map_err(|e| ServeError::Metrics(e.to_string()))?;
    let preprocess = classifier.preprocess.clone();
    let worker = Worker::spawn(
        classifier,
        embedding.pooling,
        &config,
        metrics.queue_depth.clone(),
        metrics.batch_size.clone(),
    );
    Ok(Arc::new(AppState {
        info,
        worker,
        metrics,
        config,
        tokenizer,
        preprocess,
        embedding,
        embed_tokenizer,
    }))
}

/// The encoder of a model without a classification head (a sentence-embedding model),
/// wrapped as a [`Classifier`] with no labels: /predict refuses, /embed serves it.
fn encoder_only(model: &str, device: &burn::tensor::Device) -> Result<Classifier, ServeError> {
    use tunekit::model::weights::{ClassifierSpec, DropoutOverride, load_classifier};
    let dir = tunekit::model::ModelDir::open(model)?;
    let spec = ClassifierSpec {
        num_labels: 1,
        pooling: tunekit::model::Pooling::Mean,
        dropout: DropoutOverride::default(),
        seed: 0,
        require_head: false,
    };
    let model = load_classifier(&dir.weights_path(), &dir.config, &spec, device)?.0;
    let embedding = tunekit::embed::EmbeddingConfig::resolve(
        &dir.dir,
        &dir.config,
        &tunekit::embed::EmbedOptions::default(),
    )?;
    let tokenizer = tunekit::tokenize::TextTokenizer::for_model(
        &dir.tokenizer_path(),
        embedding.max_length,
        &dir.config,
    )?;
    Ok(Classifier {
        model,
        tokenizer,
        labels: Vec::new(),
        device: device.clone(),
        dir: dir.dir,
        preprocess: None,
    })
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
