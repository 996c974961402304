//! `tunekit serve` against a real fine-tuned (tiny) model, on loopback: every route, every
//! error path, concurrency with individually matched answers, overload, graceful shutdown.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

struct Server {
    child: Child,
    base: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(model: &Path, extra: &[&str]) -> Server {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let child = Command::new(env!("CARGO_BIN_EXE_tunekit"))
        .args(["serve", "--model", model.to_str().unwrap(), "--addr", &addr])
        .args(extra)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let base = format!("http://{addr}");
    let start = Instant::now();
    while ureq::get(&format!("{base}/ready")).call().is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "server did not become ready"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Server { child, base }
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(60)))
        .build()
        .into()
}

fn post(
    base: &str,
    path: &str,
    body: &str,
) -> (u16, serde_json::Value, Option<String>, Option<String>) {
    let mut resp = agent()
        .post(&format!("{base}{path}"))
        .header("content-type", "application/json")
        .send(body)
        .unwrap();
    let status = resp.status().as_u16();
    let trunc = resp
        .headers()
        .get("x-truncated-inputs")
        .map(|v| v.to_str().unwrap().to_string());
    let retry = resp
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_string());
    let text = resp.body_mut().read_to_string().unwrap();
    let json = serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text));
    (status, json, trunc, retry)
}

/// The server's scores for `text` equal what `tunekit predict` gives for it with `model`.
fn assert_served_like_predict(served: &serde_json::Value, model: &Path, text: &str, dir: &Path) {
    let input = dir.join("in.tsv");
    std::fs::write(&input, format!("text\n{text}\n")).unwrap();
    let rows = predict_rows(model, &input, &dir.join("p.jsonl"));
    for entry in served.as_array().unwrap() {
        let label = entry["label"].as_str().unwrap();
        let a = entry["score"].as_f64().unwrap();
        let b = rows[0]["probabilities"][label].as_f64().unwrap();
        assert!((a - b).abs() < 1e-6, "{label}: served {a} vs predict {b}");
    }
}

fn get_text(base: &str, path: &str) -> (u16, String) {
    let mut resp = agent().get(&format!("{base}{path}")).call().unwrap();
    (
        resp.status().as_u16(),
        resp.body_mut().read_to_string().unwrap(),
    )
}

#[test]
fn routes_errors_concurrency_and_drift() {
    let tmp = tempfile::tempdir().unwrap();
    let model = trained_tiny(tmp.path(), 1);
    let s = start(
        &model,
        &["--max-inputs-per-request", "8", "--max-body-bytes", "4096"],
    );
    let b = s.base.as_str();

    let (st, body) = get_text(b, "/health");
    assert_eq!(st, 200, "{body}");
    let (st, _) = get_text(b, "/ready");
    assert_eq!(st, 200);
    let (st, body) = get_text(b, "/openapi.json");
    assert_eq!(st, 200);
    let spec: serde_json::Value = serde_json::from_str(&body).unwrap();
    for route in [
        "/predict", "/embed", "/health", "/ready", "/info", "/metrics",
    ] {
        assert!(spec["paths"][route].is_object(), "openapi lacks {route}");
    }
    let (_, body) = get_text(b, "/info");
    let info: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(info["labels"], serde_json::json!(["negative", "positive"]));
    assert_eq!(info["max_input_length"], 64);
    assert!(info["drift"].is_null(), "no drift before any prediction");

    // Single text → [{label, score}] sorted, scores sum to 1.
    let (st, one, trunc, _) = post(b, "/predict", r#"{"inputs": "a wonderful, moving film"}"#);
    assert_eq!(st, 200, "{one}");
    assert_eq!(trunc.as_deref(), Some("0"));
    let arr = one.as_array().unwrap();
    assert_eq!(arr.len(), 2);
    let (s0, s1) = (
        arr[0]["score"].as_f64().unwrap(),
        arr[1]["score"].as_f64().unwrap(),
    );
    assert!(s0 >= s1 && (s0 + s1 - 1.0).abs() < 1e-5);
    // A list → one array per text.
    let (st, many, _, _) = post(
        b,
        "/predict",
        r#"{"inputs": ["good", "bad", "a wonderful, moving film"]}"#,
    );
    assert_eq!(st, 200);
    assert_eq!(many.as_array().unwrap().len(), 3);
    let (l_one, l_many) = (&one[0]["label"], &many[2][0]["label"]);
    assert_eq!(l_one, l_many);
    assert!(
        (one[0]["score"].as_f64().unwrap() - many[2][0]["score"].as_f64().unwrap()).abs() < 1e-4
    );

    // Embeddings: one normalised vector per input.
    let (st, emb, _, _) = post(b, "/embed", r#"{"inputs": ["good", "bad"]}"#);
    assert_eq!(st, 200, "{emb}");
    for v in emb.as_array().unwrap() {
        let v: Vec<f64> = v
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect();
        assert_eq!(v.len(), 32);
        assert!((v.iter().map(|x| x * x).sum::<f64>().sqrt() - 1.0).abs() < 1e-4);
    }

    // Error paths, each with a JSON error body.
    let cases: &[(&str, &str, u16, &str)] = &[
        ("/predict", "{not json", 400, "BadRequest"),
        ("/predict", r#"{"inputs": []}"#, 422, "Validation"),
        ("/predict", r#"{"inputs": ["  "]}"#, 422, "Validation"),
        (
            "/predict",
            r#"{"inputs": ["a","b","c","d","e","f","g","h","i"]}"#,
            413,
            "Validation",
        ),
        ("/predict", r#"{"text": "wrong field"}"#, 400, "BadRequest"),
        ("/embed", "[1, 2", 400, "BadRequest"),
    ];
    for (path, body, status, kind) in cases {
        let (st, err, _, _) = post(b, path, body);
        assert_eq!(st, *status, "{path} {body}: {err}");
        assert_eq!(err["error_type"], *kind, "{err}");
        assert!(err["error"].as_str().is_some_and(|e| !e.is_empty()));
    }
    let huge = format!(r#"{{"inputs": "{}"}}"#, "word ".repeat(2000));
    let (st, err, _, _) = post(b, "/predict", &huge);
    assert_eq!(st, 413, "{err}");
    // Long input: truncated and flagged by default, rejected on request.
    let long = format!(r#"{{"inputs": "{}"}}"#, "movie ".repeat(200));
    let (st, _, trunc, _) = post(b, "/predict", &long);
    assert_eq!((st, trunc.as_deref()), (200, Some("1")));
    let long_strict = format!(
        r#"{{"inputs": "{}", "truncate": false}}"#,
        "movie ".repeat(200)
    );
    let (st, err, _, _) = post(b, "/predict", &long_strict);
    assert_eq!(st, 413, "{err}");

    // Concurrency: 24 clients, each answer matches that text's sequential answer.
    let texts: Vec<String> = (0..24)
        .map(|i| format!("review number {i}: {}", "great ".repeat(i % 7)))
        .collect();
    let sequential: Vec<serde_json::Value> = texts
        .iter()
        .map(|t| {
            post(
                b,
                "/predict",
                &serde_json::json!({ "inputs": t }).to_string(),
            )
            .1
        })
        .collect();
    let handles: Vec<_> = texts
        .iter()
        .cloned()
        .map(|t| {
            let base = s.base.clone();
            std::thread::spawn(move || {
                post(
                    &base,
                    "/predict",
                    &serde_json::json!({ "inputs": t }).to_string(),
                )
            })
        })
        .collect();
    for (h, want) in handles.into_iter().zip(&sequential) {
        let (st, got, _, _) = h.join().unwrap();
        assert_eq!(st, 200);
        assert_eq!(got[0]["label"], want[0]["label"]);
        assert!(
            (got[0]["score"].as_f64().unwrap() - want[0]["score"].as_f64().unwrap()).abs() < 1e-4
        );
    }

    // Metrics and drift after traffic.
    let (st, m) = get_text(b, "/metrics");
    assert_eq!(st, 200);
    for needle in [
        "tunekit_requests_total{route=\"/predict\",status=\"200\"}",
        "tunekit_requests_total{route=\"/predict\",status=\"400\"}",
        "tunekit_request_duration_seconds_bucket",
        "tunekit_batch_size_bucket",
        "tunekit_queue_depth",
        "tunekit_predictions_total{label=",
        "tunekit_drift{measure=\"psi\",signal=\"prediction\"}",
    ] {
        assert!(m.contains(needle), "metrics lack {needle}:\n{m}");
    }
    let batches: f64 = m
        .lines()
        .find(|l| l.starts_with("tunekit_batch_size_count"))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap()
        .parse()
        .unwrap();
    let inputs: f64 = m
        .lines()
        .find(|l| l.starts_with("tunekit_batch_size_sum"))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        inputs > batches,
        "concurrent requests must have been batched together ({inputs} inputs in {batches} batches)"
    );
    let (_, body) = get_text(b, "/info");
    let info: serde_json::Value = serde_json::from_str(&body).unwrap();
    let drift = &info["drift"];
    assert!(drift["window"].as_u64().unwrap() >= 24, "{drift}");
    assert!(drift["prediction_psi"].as_f64().unwrap().is_finite());
    assert!(drift["length_psi"].as_f64().unwrap() >= 0.0);
}

#[test]
fn overload_gets_503_with_retry_after_and_nothing_else_fails() {
    let tmp = tempfile::tempdir().unwrap();
    let model = trained_tiny(tmp.path(), 1);
    let s = start(
        &model,
        &[
            "--queue-capacity",
            "1",
            "--max-batch-size",
            "1",
            "--max-wait-ms",
            "0",
        ],
    );
    let long = "a long review ".repeat(20);
    let handles: Vec<_> = (0..48)
        .map(|_| {
            let base = s.base.clone();
            let body = serde_json::json!({ "inputs": vec![long.clone(); 8] }).to_string();
            std::thread::spawn(move || post(&base, "/predict", &body))
        })
        .collect();
    let mut ok = 0;
    let mut overloaded = 0;
    for h in handles {
        let (st, body, _, retry) = h.join().unwrap();
        match st {
            200 => ok += 1,
            503 => {
                overloaded += 1;
                assert_eq!(retry.as_deref(), Some("1"));
                assert_eq!(body["error_type"], "Overloaded");
            }
            other => panic!("unexpected status {other}: {body}"),
        }
    }
    assert!(ok > 0 && overloaded > 0, "ok {ok}, overloaded {overloaded}");
}

#[test]
fn sigterm_finishes_in_flight_requests_then_exits() {
    let tmp = tempfile::tempdir().unwrap();
    let model = trained_tiny(tmp.path(), 1);
    let mut s = start(&model, &["--max-wait-ms", "300"]);
    // Requests that sit in the batching window when SIGTERM arrives.
    let handles: Vec<_> = (0..4)
        .map(|i| {
            let base = s.base.clone();
            std::thread::spawn(move || {
                post(
                    &base,
                    "/predict",
                    &format!(r#"{{"inputs": "in flight {i}"}}"#),
                )
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(100));
    let pid = s.child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    for h in handles {
        let (st, body, _, _) = h.join().unwrap();
        assert_eq!(st, 200, "in-flight request must complete: {body}");
    }
    let start = Instant::now();
    loop {
        if let Some(status) = s.child.try_wait().unwrap() {
            assert!(status.success(), "graceful exit, got {status}");
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "server did not exit after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn serving_a_model_without_a_head_is_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_model(&tmp.path().join("base"));
    let out = tunekit(&[
        "serve",
        "--model",
        model.to_str().unwrap(),
        "--addr",
        "127.0.0.1:0",
    ]);
    assert_bad_input(&out, &["id2label"]);
}

#[test]
fn requests_over_the_time_limit_get_504() {
    let tmp = tempfile::tempdir().unwrap();
    let model = trained_tiny(tmp.path(), 1);
    // Concurrent requests wait up to 400 ms for a batch to fill; the limit is 100 ms.
    let s = start(
        &model,
        &["--max-wait-ms", "400", "--request-timeout-ms", "100"],
    );
    // Bursts of simultaneous requests: whichever queue behind the first wait in the batching
    // window and time out. Repeated a few times so scheduling luck cannot hide it.
    let mut statuses: Vec<(u16, serde_json::Value)> = Vec::new();
    for _ in 0..5 {
        let barrier = std::sync::Arc::new(std::sync::Barrier::new(16));
        let handles: Vec<_> = (0..16)
            .map(|i| {
                let base = s.base.clone();
                let barrier = barrier.clone();
                std::thread::spawn(move || {
                    barrier.wait();
                    let (st, body, _, _) =
                        post(&base, "/predict", &format!(r#"{{"inputs": "slow {i}"}}"#));
                    (st, body)
                })
            })
            .collect();
        statuses.extend(handles.into_iter().map(|h| h.join().unwrap()));
        if statuses.iter().any(|(st, _)| *st == 504) {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(
        statuses
            .iter()
            .any(|(st, b)| *st == 504 && b["error_type"] == "Timeout"),
        "{statuses:?}"
    );
    assert!(
        statuses.iter().all(|(st, _)| *st == 200 || *st == 504),
        "{statuses:?}"
    );
    // The server stays healthy afterwards (once the slow batch window has passed).
    std::thread::sleep(Duration::from_millis(500));
    let (st, _, _, _) = post(&s.base, "/predict", r#"{"inputs": "after"}"#);
    assert_eq!(st, 200);
}

#[test]
fn lora_adapters_with_preprocessing_are_served_like_predict_sees_them() {
    // A LoRA run that also strips HTML: the server loads the adapter directory directly and
    // applies the training-time preprocessing, so its scores equal `tunekit predict`'s.
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_model(&tmp.path().join("tiny-model"));
    let cfg = tiny_config(tmp.path(), &model, "epochs = 1\nmax_steps = 4");
    let out = tunekit(&[
        "train",
        cfg.to_str().unwrap(),
        "--set",
        "strategy.lora.rank=2",
        "--set",
        "data.clean.strip_html=true",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let exported = tmp.path().join("runs/tiny/model");
    assert!(exported.join("adapter_config.json").is_file());
    let s = start(&exported, &[]);
    let (st, served, _, _) = post(
        &s.base,
        "/predict",
        r#"{"inputs": "<b>a wonderful</b> film"}"#,
    );
    assert_eq!(st, 200, "{served}");
    let (_, plain, _, _) = post(&s.base, "/predict", r#"{"inputs": "a wonderful film"}"#);
    assert_eq!(served, plain, "markup is stripped before the model sees it");
    assert_served_like_predict(&served, &exported, "<b>a wonderful</b> film", tmp.path());
}

#[test]
fn int8_models_are_served_with_the_scores_predict_gives() {
    // `tunekit quantize` output: the server loads it like any model and runs the int8
    // product, so its scores equal `tunekit predict`'s on the same model.
    let tmp = tempfile::tempdir().unwrap();
    let base = trained_tiny(tmp.path(), 1);
    let q = tmp.path().join("int8");
    let out = tunekit(&[
        "quantize",
        "--model",
        base.to_str().unwrap(),
        "--out",
        q.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let s = start(&q, &[]);
    let (st, served, _, _) = post(&s.base, "/predict", r#"{"inputs": "a wonderful film"}"#);
    assert_eq!(st, 200, "{served}");
    assert_served_like_predict(&served, &q, "a wonderful film", tmp.path());
}
