//! Everything downstream of a trained model works for every task, through the one predictor
//! (`tunekit::predictor::Predictor`): for a multilabel (LoRA), a regression, an NER and an
//! embedding model, each trained once (real all-MiniLM-L6-v2, a few dozen planted examples,
//! few steps) and then
//! - served on loopback: `/predict` (or `/embed`) answers the task's shape with the values
//!   `tunekit predict` gives for the same inputs (within 1e-5: the same f32 forward pass,
//!   batched differently);
//! - quantized to int8, then evaluated: scores close to the f32 model's (tolerances per task
//!   below: int8 products move probabilities by ~1e-2, which can flip a decision or two on a
//!   test set of dozens);
//! - exported with `--format hf` and loaded by transformers / sentence-transformers
//!   (tools/check_task_export.py): the task's class, and outputs equal to `tunekit predict`'s
//!   within 1e-4 (tags: identical);
//! - exported with `--format onnx` and run by ONNX Runtime (tools/onnx_logits.py): the task's
//!   output shape, values equal to tunekit's within 1e-4;
//! - a LoRA task adapter merged (`tunekit merge`) predicts what the adapter predicts (1e-5).
//!
//! Plus: `serve --device cuda` on this CPU build exits 2 naming the device and the feature.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// A small deterministic generator (tests must not depend on an RNG crate's stream).
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: usize) -> usize {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        ((self.0 >> 33) % n as u64) as usize
    }
}

/// MR training sentences (no tabs, at most 10 words), `n` of them from `offset` on.
fn sentences(n: usize, offset: usize) -> Vec<String> {
    let text = std::fs::read_to_string(mr("train")).unwrap();
    text.lines()
        .skip(1 + offset)
        .step_by(7)
        .take(n)
        .map(|l| {
            let t = l.split('\t').next().unwrap();
            t.split_whitespace().take(10).collect::<Vec<_>>().join(" ")
        })
        .collect()
}

fn write_tsv(path: &Path, header: &str, rows: &[String]) -> PathBuf {
    std::fs::write(path, format!("{header}\n{}\n", rows.join("\n"))).unwrap();
    path.to_path_buf()
}

/// Train a MiniLM run (`task`, `data` and `extra` go into their sections; `extra` sets the
/// learning rate and may open further sections); its model dir. Sequence heads pool `cls`
/// (what `BertForSequenceClassification` computes, so transformers can check the export);
/// token classification and embedding pool `mean` (sentence-transformers' pooling).
fn train(dir: &Path, task: &str, data: &str, extra: &str) -> PathBuf {
    let pooling = if task.contains("multilabel") || task.contains("regression") {
        "cls"
    } else {
        "mean"
    };
    let cfg = format!(
        "[task]\n{task}\n\n[model]\npath = {model:?}\npooling = \"{pooling}\"\nmax_length = 48\n\n[data]\n{data}\n\n[train]\nbatch_size = 16\nwarmup_ratio = 0.0\nscheduler = \"constant\"\nseed = 5\n{extra}\n\n[run]\nname = \"task\"\ndir = {runs:?}\n",
        model = minilm(),
        runs = dir.join("runs")
    );
    let path = dir.join("task.toml");
    std::fs::write(&path, cfg).unwrap();
    let run = dir.join("run");
    let out = tunekit(&[
        "train",
        path.to_str().unwrap(),
        "--run-dir",
        run.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "train: {}", stderr(&out));
    run.join("model")
}

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

fn serve(model: &Path) -> Server {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let child = Command::new(env!("CARGO_BIN_EXE_tunekit"))
        .args(["serve", "--model", model.to_str().unwrap(), "--addr", &addr])
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

fn post(base: &str, path: &str, body: serde_json::Value) -> (u16, serde_json::Value) {
    let mut resp = agent()
        .post(&format!("{base}{path}"))
        .header("content-type", "application/json")
        .send(body.to_string())
        .unwrap();
    let status = resp.status().as_u16();
    let text = resp.body_mut().read_to_string().unwrap();
    (status, serde_json::from_str(&text).unwrap())
}

fn info(base: &str) -> serde_json::Value {
    let mut resp = agent().get(&format!("{base}/info")).call().unwrap();
    serde_json::from_str(&resp.body_mut().read_to_string().unwrap()).unwrap()
}

fn floats(v: &serde_json::Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

fn max_diff(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max)
}

/// `tunekit eval` (must succeed): its JSON report.
fn eval(model: &Path, data: &Path, extra: &[&str]) -> serde_json::Value {
    let out_json = model.with_extension("eval.json");
    let mut args = vec![
        "eval",
        "--model",
        model.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--output",
        out_json.to_str().unwrap(),
    ];
    args.extend(extra);
    let o = tunekit(&args);
    assert!(o.status.success(), "eval: {}", stderr(&o));
    json(&out_json)
}

/// `tunekit quantize` then `eval` of both: each named score of the int8 model within `tol`
/// of the f32 model's.
fn quantized_scores_close(model: &Path, data: &Path, extra: &[&str], tol: &[(&str, f64)]) {
    let q = model.with_extension("int8");
    let o = tunekit(&[
        "quantize",
        "--model",
        model.to_str().unwrap(),
        "--out",
        q.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "quantize: {}", stderr(&o));
    assert_eq!(
        json(&q.join("tunekit.json"))["task"],
        json(&model.join("tunekit.json"))["task"],
        "quantize keeps the task and its thresholds"
    );
    let (f, i) = (eval(model, data, extra), eval(&q, data, extra));
    for (k, t) in tol {
        let (a, b) = (
            f["scores"][k].as_f64().unwrap(),
            i["scores"][k].as_f64().unwrap(),
        );
        assert!(
            (a - b).abs() <= *t,
            "{k}: f32 {a} vs int8 {b} (tolerance {t})"
        );
    }
}

/// `tunekit export --format FORMAT` (must succeed) into `out`.
fn export(model: &Path, format: &str, out: &Path) {
    let o = tunekit(&[
        "export",
        "--model",
        model.to_str().unwrap(),
        "--format",
        format,
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "export {format}: {}", stderr(&o));
}

/// transformers' outputs for the HF export of `model` (tools/check_task_export.py).
fn transformers_outputs(model: &Path, task: &str, inputs: serde_json::Value) -> serde_json::Value {
    let out = model.with_extension("hf");
    export(model, "hf", &out);
    let file = model.with_extension("inputs.json");
    std::fs::write(&file, inputs.to_string()).unwrap();
    let o = Command::new("python3")
        .arg(root().join("tools/check_task_export.py"))
        .args(["--task", task, "--model", out.to_str().unwrap()])
        .args(["--inputs", file.to_str().unwrap()])
        .output()
        .expect("python3");
    assert!(
        o.status.success(),
        "transformers (scripts/test-deps.sh installs it): {}",
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_slice(&o.stdout).unwrap()
}

/// ONNX Runtime's output for the ONNX export of `model` on `tokens` (one padded batch):
/// (output name, its dims as declared, the values).
fn onnx_outputs(
    model: &Path,
    tokens: &[tunekit::tokenize::Tokens],
) -> (String, serde_json::Value, serde_json::Value) {
    let out = model.with_extension("onnx");
    export(model, "onnx", &out);
    let scratch = model.with_extension("onnx-run");
    std::fs::create_dir_all(&scratch).unwrap();
    let v = onnx_runtime(&out.join("model.onnx"), &[batch_json(tokens)], &scratch);
    (
        v["outputs"][0].as_str().unwrap().to_string(),
        v["output_shapes"][0].clone(),
        v["logits"][0].clone(),
    )
}

/// The model's own tokenizer through the library, as `predict` tokenises (no pairs).
fn tokens_of(model: &Path, texts: &[&str]) -> Vec<tunekit::tokenize::Tokens> {
    let device = tunekit::device::device(tunekit::device::DeviceKind::Cpu).unwrap();
    let p = tunekit::predictor::Predictor::load(model.to_str().unwrap(), None, &device).unwrap();
    p.tokenizer.encode_batch(texts, None).unwrap()
}

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

const KEYWORDS: [(&str, &[&str]); 3] = [
    ("animal", &["cat", "horse", "dog"]),
    ("weather", &["rain", "snow", "storm"]),
    ("food", &["pizza", "bread", "soup"]),
];

fn multilabel_rows(seed: u64, n: usize, offset: usize) -> Vec<String> {
    let mut rng = Lcg(seed);
    sentences(n, offset)
        .into_iter()
        .map(|s| {
            let mut words: Vec<String> = s.split_whitespace().map(String::from).collect();
            let mut labels = Vec::new();
            for (k, (name, kws)) in KEYWORDS.iter().enumerate() {
                if rng.below(100) < 40 || (labels.is_empty() && k == KEYWORDS.len() - 1) {
                    let at = rng.below(words.len() + 1);
                    words.insert(at, kws[rng.below(kws.len())].to_string());
                    labels.push(*name);
                }
            }
            format!("{}\t{}", words.join(" "), labels.join(","))
        })
        .collect()
}

const ML_TEXTS: [&str; 3] = [
    "a long rain on the old horse",
    "soup and bread after the storm",
    "the film is quiet and moving",
];

#[test]
fn multilabel_lora_adapter_serves_merges_quantizes_and_exports_like_predict() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let train_f = write_tsv(
        &d.join("train.tsv"),
        "text\tlabel",
        &multilabel_rows(1, 96, 0),
    );
    let val = write_tsv(
        &d.join("val.tsv"),
        "text\tlabel",
        &multilabel_rows(2, 32, 700),
    );
    let adapter = train(
        d,
        "type = \"multilabel\"",
        &format!("train = {train_f:?}\nvalidation = {val:?}"),
        "epochs = 2\nlearning_rate = 1e-3\n\n[strategy.lora]\nrank = 4",
    );
    assert!(adapter.join("adapter_config.json").is_file());
    let input = write_tsv(&d.join("in.tsv"), "text", &ML_TEXTS.map(String::from));
    let rows = predict_rows(&adapter, &input, &d.join("p.jsonl"));
    let labels = ["animal", "food", "weather"];

    // Served: label sets with every label's score, equal to predict's.
    let s = serve(&adapter);
    assert_eq!(info(&s.base)["task"], "multilabel");
    let (st, body) = post(
        &s.base,
        "/predict",
        serde_json::json!({ "inputs": ML_TEXTS }),
    );
    assert_eq!(st, 200, "{body}");
    for (served, row) in body.as_array().unwrap().iter().zip(&rows) {
        assert_eq!(served["labels"], row["labels"], "{served} vs {row}");
        let scores = served["scores"].as_array().unwrap();
        assert_eq!(scores.len(), 3);
        for sc in scores {
            let k = labels
                .iter()
                .position(|l| *l == sc["label"].as_str().unwrap())
                .unwrap();
            let (a, b) = (
                sc["score"].as_f64().unwrap(),
                row["probabilities"][k].as_f64().unwrap(),
            );
            assert!((a - b).abs() < 1e-5, "served {a} vs predict {b}");
        }
    }
    drop(s);

    // Merged: the adapter's predictions from plain weights.
    let merged = d.join("merged");
    let o = tunekit(&[
        "merge",
        "--model",
        adapter.to_str().unwrap(),
        "--out",
        merged.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "merge: {}", stderr(&o));
    let again = predict_rows(&merged, &input, &d.join("m.jsonl"));
    for (a, b) in again.iter().zip(&rows) {
        assert_eq!(a["labels"], b["labels"]);
        let diff = max_diff(&floats(&a["probabilities"]), &floats(&b["probabilities"]));
        assert!(
            diff < 1e-5,
            "merged vs adapter probabilities differ by {diff}"
        );
    }

    // int8: micro/macro F1 within 0.1 of f32 (32 validation rows: one flipped label among ~50
    // is 0.02; the bound leaves room for a few).
    quantized_scores_close(&merged, &val, &[], &[("micro_f1", 0.1), ("macro_f1", 0.1)]);

    // transformers: multi_label_classification, sigmoid probabilities = predict's.
    let hf = transformers_outputs(
        &adapter,
        "multilabel",
        serde_json::json!({ "texts": ML_TEXTS }),
    );
    assert_eq!(hf["problem_type"], "multi_label_classification");
    assert_eq!(hf["architectures"][0], "BertForSequenceClassification");
    for (got, row) in hf["outputs"].as_array().unwrap().iter().zip(&rows) {
        let diff = max_diff(&floats(got), &floats(&row["probabilities"]));
        assert!(diff < 1e-4, "transformers vs predict probabilities: {diff}");
    }

    // ONNX Runtime: logits [batch, labels]; sigmoid = predict's probabilities.
    let (name, dims, values) = onnx_outputs(&adapter, &tokens_of(&adapter, &ML_TEXTS));
    assert_eq!(name, "logits");
    assert_eq!(dims, serde_json::json!(["batch", "3"]));
    for (got, row) in values.as_array().unwrap().iter().zip(&rows) {
        let probs: Vec<f64> = floats(got).into_iter().map(sigmoid).collect();
        let diff = max_diff(&probs, &floats(&row["probabilities"]));
        assert!(diff < 1e-4, "onnx vs predict probabilities: {diff}");
    }
}

fn regression_rows(seed: u64, n: usize, offset: usize) -> Vec<String> {
    let mut rng = Lcg(seed);
    sentences(n, offset)
        .into_iter()
        .map(|s| {
            let k = rng.below(4);
            let mut words: Vec<String> = s.split_whitespace().map(String::from).collect();
            for _ in 0..k {
                let at = rng.below(words.len() + 1);
                words.insert(at, "excellent".into());
            }
            format!("{}\t{}", words.join(" "), k as f64 * 1.5 - 1.0)
        })
        .collect()
}

const REG_TEXTS: [&str; 2] = ["an excellent excellent film", "a dull film"];

#[test]
fn regression_model_serves_numbers_quantizes_and_exports_like_predict() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let train_f = write_tsv(
        &d.join("train.tsv"),
        "text\tscore",
        &regression_rows(1, 96, 0),
    );
    let val = write_tsv(
        &d.join("val.tsv"),
        "text\tscore",
        &regression_rows(2, 32, 700),
    );
    let model = train(
        d,
        "type = \"regression\"",
        &format!("train = {train_f:?}\nvalidation = {val:?}\nlabel_column = \"score\""),
        "epochs = 2\nlearning_rate = 1e-4",
    );
    let input = write_tsv(&d.join("in.tsv"), "text", &REG_TEXTS.map(String::from));
    let rows = predict_rows(&model, &input, &d.join("p.jsonl"));
    let want: Vec<f64> = rows
        .iter()
        .map(|r| r["prediction"].as_f64().unwrap())
        .collect();

    let s = serve(&model);
    assert_eq!(info(&s.base)["task"], "regression");
    let (st, body) = post(
        &s.base,
        "/predict",
        serde_json::json!({ "inputs": REG_TEXTS }),
    );
    assert_eq!(st, 200, "{body}");
    assert!(max_diff(&floats(&body), &want) < 1e-5, "{body} vs {want:?}");
    let (st, one) = post(
        &s.base,
        "/predict",
        serde_json::json!({ "inputs": REG_TEXTS[0] }),
    );
    assert_eq!(st, 200);
    assert!((one.as_f64().unwrap() - want[0]).abs() < 1e-5, "{one}");
    drop(s);

    // int8: Pearson within 0.05 and MSE within 0.1 of f32 (values span −1 … 3.5).
    quantized_scores_close(
        &model,
        &val,
        &["--label-column", "score"],
        &[("pearson", 0.05), ("mse", 0.1)],
    );

    let hf = transformers_outputs(
        &model,
        "regression",
        serde_json::json!({ "texts": REG_TEXTS }),
    );
    assert_eq!(hf["problem_type"], "regression");
    let diff = max_diff(&floats(&hf["outputs"]), &want);
    assert!(diff < 1e-4, "transformers vs predict: {diff}");

    let (name, dims, values) = onnx_outputs(&model, &tokens_of(&model, &REG_TEXTS));
    assert_eq!(
        (name.as_str(), dims),
        ("logits", serde_json::json!(["batch", "1"]))
    );
    let got: Vec<f64> = values
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r[0].as_f64().unwrap())
        .collect();
    assert!(
        max_diff(&got, &want) < 1e-4,
        "onnx {got:?} vs predict {want:?}"
    );
}

const FIRST: [&str; 6] = ["John", "Maria", "Ahmed", "Yuki", "Olga", "Pedro"];
const LAST: [&str; 5] = ["Smith", "Garcia", "Khan", "Tanaka", "Petrova"];
const CITIES: [&str; 6] = ["Paris", "Lagos", "Lima", "Oslo", "Hanoi", "Denver"];

fn conll(seed: u64, n: usize, offset: usize) -> String {
    let mut rng = Lcg(seed);
    let mut out = String::new();
    for s in sentences(n, offset) {
        let mut words: Vec<(String, &str)> = s
            .split_whitespace()
            .map(|w| (w.to_lowercase(), "O"))
            .collect();
        let at = rng.below(words.len() + 1);
        words.insert(at, (LAST[rng.below(LAST.len())].into(), "I-PER"));
        words.insert(at, (FIRST[rng.below(FIRST.len())].into(), "B-PER"));
        words.push(("in".into(), "O"));
        words.push((CITIES[rng.below(CITIES.len())].into(), "B-LOC"));
        for (w, t) in words {
            out.push_str(&format!("{w}\t{t}\n"));
        }
        out.push('\n');
    }
    out
}

/// Raw texts for /predict and the words BERT's pre-tokenizer splits them into (punctuation
/// apart), as CoNLL for `tunekit predict`.
const NER_TEXTS: [(&str, &[&str]); 2] = [
    (
        "we saw Maria Khan in Oslo",
        &["we", "saw", "Maria", "Khan", "in", "Oslo"],
    ),
    (
        "later,  Pedro Garcia arrived in Lima!",
        &[
            "later", ",", "Pedro", "Garcia", "arrived", "in", "Lima", "!",
        ],
    ),
];

#[test]
fn ner_model_serves_entities_with_character_offsets_quantizes_and_exports_like_predict() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let train_f = d.join("train.conll");
    std::fs::write(&train_f, conll(1, 160, 0)).unwrap();
    let val = d.join("val.conll");
    std::fs::write(&val, conll(2, 32, 700)).unwrap();
    let model = train(
        d,
        "type = \"token_classification\"",
        &format!("train = {train_f:?}\nvalidation = {val:?}\nformat = \"conll\""),
        "epochs = 3\nlearning_rate = 1e-4",
    );
    let input = d.join("words.txt");
    let conll_in: String = NER_TEXTS
        .iter()
        .map(|(_, w)| format!("{}\n\n", w.join("\n")))
        .collect();
    std::fs::write(&input, conll_in).unwrap();
    let rows = predict_rows(&model, &input, &d.join("p.jsonl"));

    let s = serve(&model);
    assert_eq!(info(&s.base)["task"], "token_classification");
    let texts: Vec<&str> = NER_TEXTS.iter().map(|t| t.0).collect();
    let (st, body) = post(&s.base, "/predict", serde_json::json!({ "inputs": texts }));
    assert_eq!(st, 200, "{body}");
    let mut found = 0;
    for ((text, _), (served, row)) in NER_TEXTS
        .iter()
        .zip(body.as_array().unwrap().iter().zip(&rows))
    {
        let served = served.as_array().unwrap();
        let want = row["entities"].as_array().unwrap();
        assert_eq!(served.len(), want.len(), "{served:?} vs {want:?}");
        for (e, w) in served.iter().zip(want) {
            assert_eq!(e["entity_group"], w["type"]);
            assert_eq!(e["word"], w["text"]);
            // Character offsets into the text as sent.
            let (a, b) = (
                e["start"].as_u64().unwrap() as usize,
                e["end"].as_u64().unwrap() as usize,
            );
            let span: String = text.chars().skip(a).take(b - a).collect();
            assert_eq!(span, e["word"].as_str().unwrap());
            let score = e["score"].as_f64().unwrap();
            assert!(score > 0.0 && score <= 1.0, "{e}");
            found += 1;
        }
    }
    assert!(
        found >= 2,
        "the trained model finds the planted names: {body}"
    );
    drop(s);

    // int8: entity F1 and tag accuracy within 0.1 of f32 (32 sentences, ~64 entities).
    quantized_scores_close(&model, &val, &[], &[("f1", 0.1), ("token_accuracy", 0.05)]);

    let words: Vec<Vec<&str>> = NER_TEXTS.iter().map(|t| t.1.to_vec()).collect();
    let hf = transformers_outputs(
        &model,
        "token_classification",
        serde_json::json!({ "words": words }),
    );
    assert_eq!(hf["architectures"][0], "BertForTokenClassification");
    for (got, row) in hf["outputs"].as_array().unwrap().iter().zip(&rows) {
        assert_eq!(got, &row["tags"], "transformers vs predict tags");
    }

    // ONNX: logits [batch, sequence, tags]; their log-softmax = tunekit's per-piece
    // log-probabilities.
    let device = tunekit::device::device(tunekit::device::DeviceKind::Cpu).unwrap();
    let p = tunekit::predictor::Predictor::load(model.to_str().unwrap(), None, &device).unwrap();
    let owned: Vec<Vec<String>> = words
        .iter()
        .map(|w| w.iter().map(|s| s.to_string()).collect())
        .collect();
    let enc = p.tokenizer.encode_words(&owned).unwrap();
    let tokens: Vec<_> = enc.iter().map(|e| e.tokens.clone()).collect();
    let tunekit::task::predict::Outputs::Pieces(_, logp) = tunekit::task::predict::outputs(
        p.kind(),
        &p.model,
        &tokens,
        8,
        p.tokenizer.pad_id(),
        &device,
    )
    .unwrap() else {
        panic!("token outputs expected")
    };
    let (name, dims, values) = onnx_outputs(&model, &tokens);
    assert_eq!(name, "logits");
    assert_eq!(dims, serde_json::json!(["batch", "sequence", "4"]));
    for (i, (sent, want)) in values.as_array().unwrap().iter().zip(&logp).enumerate() {
        for (k, piece) in sent
            .as_array()
            .unwrap()
            .iter()
            .take(tokens[i].ids.len())
            .enumerate()
        {
            let l = floats(piece);
            let m = l.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let lse = m + l.iter().map(|x| (x - m).exp()).sum::<f64>().ln();
            let got: Vec<f64> = l.iter().map(|x| x - lse).collect();
            let w: Vec<f64> = want[k * 4..(k + 1) * 4]
                .iter()
                .map(|&v| f64::from(v))
                .collect();
            assert!(
                max_diff(&got, &w) < 1e-4,
                "sentence {i} piece {k}: {got:?} vs {w:?}"
            );
        }
    }
}

fn halves(n: usize, offset: usize) -> Vec<String> {
    sentences(n * 3, offset)
        .into_iter()
        .filter(|t| t.split_whitespace().count() >= 8)
        .take(n)
        .map(|t| {
            let w: Vec<&str> = t.split_whitespace().collect();
            let (a, b) = w.split_at(w.len() / 2);
            format!("{}\t{}", a.join(" "), b.join(" "))
        })
        .collect()
}

const EMB_TEXTS: [&str; 2] = ["a quiet , moving film", "the plot falls apart"];

#[test]
fn embedding_model_serves_embed_refuses_predict_quantizes_and_exports_like_predict() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let train_f = write_tsv(&d.join("train.tsv"), "anchor\tpositive", &halves(48, 0));
    let val = write_tsv(&d.join("val.tsv"), "anchor\tpositive", &halves(32, 700));
    let model = train(
        d,
        "type = \"embedding\"",
        &format!(
            "train = {train_f:?}\nvalidation = {val:?}\ntext_column = \"anchor\"\ntext_pair_column = \"positive\""
        ),
        "epochs = 1\nmax_steps = 2\nlearning_rate = 1e-4",
    );
    let input = write_tsv(&d.join("in.tsv"), "text", &EMB_TEXTS.map(String::from));
    let rows = predict_rows(&model, &input, &d.join("p.jsonl"));
    let want: Vec<Vec<f64>> = rows.iter().map(|r| floats(&r["embedding"])).collect();

    let s = serve(&model);
    assert_eq!(info(&s.base)["task"], "embedding");
    let (st, body) = post(
        &s.base,
        "/embed",
        serde_json::json!({ "inputs": EMB_TEXTS }),
    );
    assert_eq!(st, 200, "{body}");
    for (got, w) in body.as_array().unwrap().iter().zip(&want) {
        let diff = max_diff(&floats(got), w);
        assert!(diff < 1e-5, "/embed vs predict: {diff}");
    }
    let (st, body) = post(&s.base, "/predict", serde_json::json!({ "inputs": "hi" }));
    assert_eq!(st, 400, "{body}");
    assert!(body["error"].as_str().unwrap().contains("/embed"), "{body}");
    drop(s);

    // int8: MRR and recall@1 within 0.1 of f32 (32 pairs: one rank change moves MRR ≤ 0.016).
    let cols = ["--text-column", "anchor", "--text-pair-column", "positive"];
    quantized_scores_close(&model, &val, &cols, &[("mrr", 0.1), ("recall_at_1", 0.1)]);

    let hf = transformers_outputs(
        &model,
        "embedding",
        serde_json::json!({ "texts": EMB_TEXTS }),
    );
    assert_eq!(hf["architectures"][0], "BertModel");
    for (got, w) in hf["outputs"].as_array().unwrap().iter().zip(&want) {
        let diff = max_diff(&floats(got), w);
        assert!(diff < 1e-4, "sentence-transformers vs predict: {diff}");
    }

    let (name, dims, values) = onnx_outputs(&model, &tokens_of(&model, &EMB_TEXTS));
    assert_eq!(name, "sentence_embedding");
    assert_eq!(dims, serde_json::json!(["batch", "384"]));
    for (got, w) in values.as_array().unwrap().iter().zip(&want) {
        let diff = max_diff(&floats(got), w);
        assert!(diff < 1e-4, "onnx vs predict embedding: {diff}");
    }
}

#[test]
fn serve_on_a_device_this_build_lacks_exits_2_naming_device_and_feature() {
    // This test binary is built without the `cuda` feature (the default build).
    let o = tunekit(&[
        "serve",
        "--model",
        minilm().to_str().unwrap(),
        "--device",
        "cuda",
    ]);
    assert_bad_input(&o, &["--device cuda", "--features cuda"]);
}
