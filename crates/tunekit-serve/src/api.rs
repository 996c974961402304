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

/// Validate and tokenise inputs; returns tokens and how many were truncated.
fn prepare(
    state: &AppState,
    tokenizer: &tunekit::tokenize::TextTokenizer,
    inputs: Inputs,
    truncate: Option<bool>,
) -> Result<(Vec<tunekit::tokenize::Tokens>, bool, usize), ApiError> {
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
    let prepared: Vec<String> = match &state.preprocess {
        Some(p) => texts.iter().map(|t| p.apply(t)).collect(),
        None => Vec::new(),
    };
    let refs: Vec<&str> = if state.preprocess.is_some() {
        prepared.iter().map(String::as_str).collect()
    } else {
        texts.iter().map(String::as_str).collect()
    };
    let tokens = tokenizer
        .encode_batch(&refs, None)
        .map_err(|e| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "Tokenizer", e.to_string()))?;
    let truncated = tokens.iter().filter(|t| t.truncated).count();
    if truncated > 0 && !truncate.unwrap_or(state.config.truncate) {
        let i = tokens.iter().position(|t| t.truncated).unwrap_or(0);
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "Validation",
            format!(
                "input {i} is longer than the maximum of {} tokens; send `truncate: true` or shorten it",
                tokenizer.max_length()
            ),
        ));
    }
    Ok((tokens, single, truncated))
}

async fn run_job(
    state: &AppState,
    kind: Kind,
    tokens: Vec<tunekit::tokenize::Tokens>,
) -> Result<Vec<Vec<f32>>, ApiError> {
    let (tx, rx) = oneshot::channel();
    state
        .worker
        .submit(Job {
            kind,
            tokens,
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
        if state.info.labels.is_empty() {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "Validation",
                "this model has no classification head (a sentence-embedding model): use /embed",
            ));
        }
        let (tokens, single, truncated) =
            prepare(&state, &state.tokenizer, req.inputs, req.truncate)?;
        let lengths: Vec<usize> = tokens.iter().map(|t| t.ids.len()).collect();
        let probs = run_job(&state, Kind::Predict, tokens).await?;
        let best: Vec<usize> = probs.iter().map(|p| argmax(p)).collect();
        state.metrics.observe_predictions(&best, &lengths);
        let rows: Vec<serde_json::Value> = probs
            .iter()
            .map(|p| {
                let mut scored: Vec<(f32, &String)> =
                    p.iter().copied().zip(state.info.labels.iter()).collect();
                scored.sort_by(|a, b| b.0.total_cmp(&a.0));
                serde_json::Value::Array(
                    scored
                        .into_iter()
                        .map(|(s, l)| serde_json::json!({ "score": s, "label": l }))
                        .collect(),
                )
            })
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
        let (tokens, _, truncated) =
            prepare(&state, &state.embed_tokenizer, req.inputs, req.truncate)?;
        let mut vectors = run_job(&state, Kind::Embed, tokens).await?;
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
