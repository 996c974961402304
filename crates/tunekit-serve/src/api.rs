//! HTTP routes: request validation, tokenisation, and the JSON shapes of the responses.

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use tokio::sync::oneshot;
use tunekit::infer::argmax;
use tunekit::predictor::{Encoded, Prediction};
use tunekit::task::TaskKind;

use crate::AppState;
use crate::worker::{Job, Kind, SubmitError};

/// `inputs`: one text or a list of texts (TEI request shape).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Inputs {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PredictRequest {
    inputs: Inputs,
    /// Per-request override of the server's truncation policy.
    #[serde(default)]
    truncate: Option<bool>,
    /// Return logits' softmax for every label (always on; accepted for TEI compatibility).
    #[serde(default)]
    #[allow(dead_code)]
    raw_scores: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EmbedRequest {
    inputs: Inputs,
    #[serde(default)]
    truncate: Option<bool>,
    /// L2-normalise the embeddings; default: as the model's sentence-transformers config
    /// says (its `Normalize` module), as `tunekit embed` does.
    #[serde(default)]
    normalize: Option<bool>,
}

/// An error response: TEI's `{"error": ..., "error_type": ...}` body.
struct ApiError {
    status: StatusCode,
    kind: &'static str,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            kind,
            message: message.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "error": self.message, "error_type": self.kind });
        let mut resp = (self.status, axum::Json(body)).into_response();
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        resp
    }
}

/// The router with every route; `state` is shared by all handlers.
pub fn router(state: Arc<AppState>) -> Router {
    let limit = state.config.max_body_bytes;
    Router::new()
        .route("/predict", post(predict))
        .route("/embed", post(embed))
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/info", get(info))
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(openapi))
        .layer(DefaultBodyLimit::max(limit))
        .with_state(state)
}

fn record(state: &AppState, route: &str, status: StatusCode, start: Instant) {
    state
        .metrics
        .requests
        .with_label_values(&[route, status.as_str()])
        .inc();
    state
        .metrics
        .latency
        .with_label_values(&[route])
        .observe(start.elapsed().as_secs_f64());
}

fn parse<T: serde::de::DeserializeOwned>(
    body: Result<Bytes, BytesRejection>,
) -> Result<T, ApiError> {
    let body = body.map_err(|e| {
        let status = e.status();
        let kind = if status == StatusCode::PAYLOAD_TOO_LARGE {
            "Validation"
        } else {
            "BadRequest"
        };
        ApiError::new(status, kind, e.body_text())
    })?;
    serde_json::from_slice(&body).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            format!("invalid JSON body: {e}"),
        )
    })
}

/// Validate the request's texts (not empty, not too many, none blank); returns them and
/// whether a single text (not a list) was sent.
fn texts_of(state: &AppState, inputs: Inputs) -> Result<(Vec<String>, bool), ApiError> {
    let (texts, single) = match inputs {
        Inputs::One(t) => (vec![t], true),
        Inputs::Many(v) => (v, false),
    };
    if texts.is_empty() {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Validation",
            "`inputs` cannot be empty",
        ));
    }
    if texts.len() > state.config.max_inputs_per_request {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "Validation",
            format!(
                "batch size {} > maximum allowed batch size {}",
                texts.len(),
                state.config.max_inputs_per_request
            ),
        ));
    }
    if let Some(i) = texts.iter().position(|t| t.trim().is_empty()) {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Validation",
            format!("input {i} is empty"),
        ));
    }
    Ok((texts, single))
}

/// How many inputs were truncated; with truncation off (server or request), a truncated
/// input is refused (413) naming it.
fn check_truncation(
    state: &AppState,
    inputs: &[Encoded],
    truncate: Option<bool>,
    max_length: usize,
) -> Result<usize, ApiError> {
    let truncated = inputs.iter().filter(|e| e.tokens.truncated).count();
    if truncated > 0 && !truncate.unwrap_or(state.config.truncate) {
        let i = inputs.iter().position(|e| e.tokens.truncated).unwrap_or(0);
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "Validation",
            format!(
                "input {i} is longer than the maximum of {max_length} tokens; send `truncate: true` or shorten it"
            ),
        ));
    }
    Ok(truncated)
}

/// Validate and encode inputs for /predict (the task decides how: see
/// `tunekit::predictor::TextEncoder`); returns them, whether one text was sent, and how many
/// were truncated.
fn prepare_predict(
    state: &AppState,
    inputs: Inputs,
    truncate: Option<bool>,
) -> Result<(Vec<Encoded>, bool, usize), ApiError> {
    let (texts, single) = texts_of(state, inputs)?;
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let encoded = state
        .encoder
        .encode(&refs)
        .map_err(|e| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "Tokenizer", e.to_string()))?;
    let truncated = check_truncation(
        state,
        &encoded,
        truncate,
        state.encoder.tokenizer.max_length(),
    )?;
    Ok((encoded, single, truncated))
}

/// Validate and tokenise inputs for /embed (the embedding max length, training-time
/// preprocessing).
fn prepare_embed(
    state: &AppState,
    inputs: Inputs,
    truncate: Option<bool>,
) -> Result<(Vec<Encoded>, usize), ApiError> {
    let (texts, _) = texts_of(state, inputs)?;
    let prepared: Vec<String> = match &state.encoder.preprocess {
        Some(p) => texts.iter().map(|t| p.apply(t)).collect(),
        None => texts,
    };
    let refs: Vec<&str> = prepared.iter().map(String::as_str).collect();
    let tokens = state
        .embed_tokenizer
        .encode_batch(&refs, None)
        .map_err(|e| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "Tokenizer", e.to_string()))?;
    let encoded: Vec<Encoded> = tokens
        .into_iter()
        .map(|tokens| Encoded {
            tokens,
            words: Vec::new(),
            word_ids: Vec::new(),
            text: String::new(),
        })
        .collect();
    let truncated = check_truncation(
        state,
        &encoded,
        truncate,
        state.embed_tokenizer.max_length(),
    )?;
    Ok((encoded, truncated))
}

async fn run_job(
    state: &AppState,
    kind: Kind,
    inputs: Vec<Encoded>,
) -> Result<Vec<Prediction>, ApiError> {
    let (tx, rx) = oneshot::channel();
    state
        .worker
        .submit(Job {
            kind,
            inputs,
            reply: tx,
        })
        .map_err(|e| match e {
            SubmitError::Full => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "Overloaded",
                "model queue is full; retry later",
            ),
            SubmitError::Closed => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "Unhealthy",
                "model worker is not running",
            ),
        })?;
    match tokio::time::timeout(state.config.request_timeout, rx).await {
        Err(_) => Err(ApiError::new(
            StatusCode::GATEWAY_TIMEOUT,
            "Timeout",
            "request timed out",
        )),
        Ok(Err(_)) => Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Backend",
            "model worker dropped the request",
        )),
        Ok(Ok(Err(e))) => Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Backend",
            e,
        )),
        Ok(Ok(Ok(v))) => Ok(v),
    }
}

fn with_truncation_header(mut resp: Response, truncated: usize) -> Response {
    if let Ok(v) = HeaderValue::from_str(&truncated.to_string()) {
        resp.headers_mut().insert("x-truncated-inputs", v);
    }
    resp
}

async fn predict(
    State(state): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let start = Instant::now();
    let result = async {
        let req: PredictRequest = parse(body)?;
        if state.kind == TaskKind::Embedding {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "Validation",
                "this model has no classification head (a sentence-embedding model): use /embed",
            ));
        }
        let (inputs, single, truncated) = prepare_predict(&state, req.inputs, req.truncate)?;
        let lengths: Vec<usize> = inputs.iter().map(|e| e.tokens.ids.len()).collect();
        let predictions = run_job(&state, Kind::Predict, inputs).await?;
        let best: Vec<usize> = predictions
            .iter()
            .filter_map(|p| match p {
                Prediction::Classes(p) => Some(argmax(p)),
                _ => None,
            })
            .collect();
        if best.len() == lengths.len() {
            state.metrics.observe_predictions(&best, &lengths);
        }
        let rows: Vec<serde_json::Value> = predictions
            .iter()
            .map(|p| prediction_json(&state.info.labels, p))
            .collect();
        let body = if single {
            rows.into_iter().next().unwrap_or_default()
        } else {
            serde_json::Value::Array(rows)
        };
        Ok::<_, ApiError>(with_truncation_header(
            axum::Json(body).into_response(),
            truncated,
        ))
    }
    .await;
    let resp = result.unwrap_or_else(IntoResponse::into_response);
    record(&state, "/predict", resp.status(), start);
    resp
}

async fn embed(
    State(state): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let start = Instant::now();
    let result = async {
        let req: EmbedRequest = parse(body)?;
        let (inputs, truncated) = prepare_embed(&state, req.inputs, req.truncate)?;
        let mut vectors: Vec<Vec<f32>> = run_job(&state, Kind::Embed, inputs)
            .await?
            .into_iter()
            .map(|p| match p {
                Prediction::Embedding(v) => v,
                _ => Vec::new(),
            })
            .collect();
        if req.normalize.unwrap_or(state.embedding.normalize) {
            vectors
                .iter_mut()
                .for_each(|v| tunekit::embed::l2_normalize(v));
        }
        Ok::<_, ApiError>(with_truncation_header(
            axum::Json(vectors).into_response(),
            truncated,
        ))
    }
    .await;
    let resp = result.unwrap_or_else(IntoResponse::into_response);
    record(&state, "/embed", resp.status(), start);
    resp
}

/// One input's answer in JSON, by task:
/// - classification: every label with its probability, best first (`[{"label","score"}]`,
///   TEI's shape);
/// - multilabel: `{"labels": [chosen labels], "scores": [{"label","score"}, …]}`, every label
///   with its sigmoid probability, best first; chosen = at or over its tuned threshold;
/// - regression: the predicted number;
/// - token classification: the entities, `[{"entity_group","score","word","start","end"}]`
///   (Hugging Face Inference API; character offsets into the input);
/// - embedding (not answered by /predict): the vector.
fn prediction_json(labels: &[String], p: &Prediction) -> serde_json::Value {
    let scored = |probs: &[f32]| -> serde_json::Value {
        let mut scored: Vec<(f32, &String)> = probs.iter().copied().zip(labels.iter()).collect();
        scored.sort_by(|a, b| b.0.total_cmp(&a.0));
        serde_json::Value::Array(
            scored
                .into_iter()
                .map(|(s, l)| serde_json::json!({ "score": s, "label": l }))
                .collect(),
        )
    };
    match p {
        Prediction::Classes(probs) => scored(probs),
        Prediction::Labels {
            probabilities,
            chosen,
        } => {
            let chosen: Vec<&String> = labels
                .iter()
                .zip(chosen)
                .filter(|(_, c)| **c)
                .map(|(l, _)| l)
                .collect();
            serde_json::json!({ "labels": chosen, "scores": scored(probabilities) })
        }
        Prediction::Value(v) => serde_json::json!(v),
        Prediction::Entities(e) => serde_json::to_value(e).unwrap_or_default(),
        Prediction::Embedding(v) => serde_json::json!(v),
    }
}

async fn health() -> impl IntoResponse {
    axum::Json(serde_json::json!({ "status": "ok" }))
}

async fn ready(State(state): State<Arc<AppState>>) -> Response {
    // The model is loaded before the router exists; ready means the worker still accepts work.
    if state.worker.is_alive() {
        axum::Json(serde_json::json!({ "status": "ready" })).into_response()
    } else {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "Unhealthy",
            "model worker is not running",
        )
        .into_response()
    }
}

async fn info(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    let mut v = serde_json::to_value(&state.info).unwrap_or_default();
    if let Some(o) = v.as_object_mut() {
        o.insert(
            "drift".into(),
            serde_json::to_value(state.metrics.drift()).unwrap_or_default(),
        );
    }
    axum::Json(v)
}

async fn metrics(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
}

async fn openapi() -> impl IntoResponse {
    axum::Json(crate::openapi::spec())
}
