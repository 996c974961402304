//! Issue 16, parts 6 and 8.
//!
//! Embeddings as sentence-transformers makes them: `tunekit embed` and `tunekit serve`'s
//! `/embed` follow the model's sentence-transformers files (pooling, `max_seq_length`,
//! `Normalize`) and reproduce `SentenceTransformer(dir).encode()` (fixture
//! `st_embed_minilm.json`, made by `tools/make_st_embed_fixture.py`); `--raw` gives the raw
//! pooled encoder output.
//!
//! Resume after the inputs changed: `--resume` refuses a run whose data, model or config
//! differ from the ones its checkpoints were trained on, naming the file or the keys.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

fn floats(v: &serde_json::Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

fn norm(v: &[f64]) -> f64 {
    v.iter().map(|x| x * x).sum::<f64>().sqrt()
}

fn cosine(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| x * y).sum::<f64>() / (norm(a) * norm(b))
}

/// The sentence-transformers fixture: sentences and `encode()`'s vectors.
fn st_fixture() -> (Vec<String>, Vec<Vec<f64>>, serde_json::Value) {
    let f = json(&fixture("st_embed_minilm.json"));
    let sentences: Vec<String> = f["sentences"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect();
    let vectors: Vec<Vec<f64>> = f["embeddings"]
        .as_array()
        .unwrap()
        .iter()
        .map(floats)
        .collect();
    (sentences, vectors, f)
}

/// `tunekit embed --model MODEL EXTRA` on `sentences` (JSONL input); the vectors and stderr.
fn cli_embed(
    model: &Path,
    sentences: &[String],
    extra: &[&str],
    dir: &Path,
) -> (Vec<Vec<f64>>, String) {
    let input = dir.join("sentences.jsonl");
    let lines: Vec<String> = sentences
        .iter()
        .map(|s| serde_json::json!({ "text": s }).to_string())
        .collect();
    std::fs::write(&input, lines.join("\n") + "\n").unwrap();
    let output = dir.join("embeddings.jsonl");
    let mut args = vec![
        "embed",
        "--model",
        model.to_str().unwrap(),
        "--input",
        input.to_str().unwrap(),
        "--output",
        output.to_str().unwrap(),
    ];
    args.extend(extra);
    let out = tunekit(&args);
    assert!(out.status.success(), "embed failed: {}", stderr(&out));
    let rows = read_jsonl(&output);
    assert_eq!(rows.len(), sentences.len());
    (
        rows.iter().map(|r| floats(&r["embedding"])).collect(),
        stderr(&out),
    )
}

/// Every vector is a unit vector pointing where the reference points (cosine ≥ 0.9999).
fn assert_like_reference(got: &[Vec<f64>], want: &[Vec<f64>], sentences: &[String], who: &str) {
    assert_eq!(got.len(), want.len());
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let n = norm(g);
        assert!(
            (n - 1.0).abs() < 1e-4,
            "{who}: sentence {i}: norm {n}, not a unit vector"
        );
        let c = cosine(g, w);
        assert!(
            c >= 0.9999,
            "{who}: sentence {i} ({} chars): cosine {c} with sentence-transformers",
            sentences[i].len()
        );
    }
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

/// `tunekit serve --model MODEL` on a free loopback port, once `/ready` answers.
fn serve(model: &Path) -> Server {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let mut child = Command::new(env!("CARGO_BIN_EXE_tunekit"))
        .args(["serve", "--model", model.to_str().unwrap(), "--addr", &addr])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let base = format!("http://{addr}");
    let start = Instant::now();
    while ureq::get(&format!("{base}/ready")).call().is_err() {
        assert!(
            child.try_wait().unwrap().is_none(),
            "server exited before it was ready"
        );
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "server did not become ready"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Server { child, base }
}

fn post(base: &str, path: &str, body: &serde_json::Value) -> (u16, serde_json::Value) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(120)))
        .build()
        .into();
    let mut resp = agent
        .post(&format!("{base}{path}"))
        .header("content-type", "application/json")
        .send(body.to_string())
        .unwrap();
    let status = resp.status().as_u16();
    let text = resp.body_mut().read_to_string().unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)),
    )
}

#[test]
fn embeddings_equal_sentence_transformers_encode() {
    // Default `tunekit embed` on a sentence-transformers directory: mean pooling, unit
    // vectors, truncation at sentence_bert_config.json's 256 (not 128, not tokenizer.json's).
    let (sentences, want, f) = st_fixture();
    let lengths: Vec<u64> = f["token_lengths"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap())
        .collect();
    assert!(lengths.iter().any(|&n| n > 128 && n < 256), "{lengths:?}");
    assert!(lengths.iter().any(|&n| n > 256), "{lengths:?}");
    let tmp = tempfile::tempdir().unwrap();
    let (got, err) = cli_embed(&minilm(), &sentences, &[], tmp.path());
    assert_like_reference(&got, &want, &sentences, "tunekit embed");
    assert!(
        err.contains("mean pooling, L2-normalised, max length 256 (1 truncated)"),
        "the configuration used and the truncation are reported: {err}"
    );
}

#[test]
fn served_embeddings_equal_sentence_transformers_encode_and_the_cli() {
    // A sentence-transformers directory has no classification head: served for /embed only.
    let (sentences, want, _) = st_fixture();
    let tmp = tempfile::tempdir().unwrap();
    let server = serve(&minilm());
    let (status, body) = post(
        &server.base,
        "/embed",
        &serde_json::json!({ "inputs": sentences }),
    );
    assert_eq!(status, 200, "{body}");
    let served: Vec<Vec<f64>> = body.as_array().unwrap().iter().map(floats).collect();
    assert_like_reference(&served, &want, &sentences, "/embed");
    let (cli, _) = cli_embed(&minilm(), &sentences, &[], tmp.path());
    for (i, (a, b)) in served.iter().zip(&cli).enumerate() {
        let max = a
            .iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f64::max);
        assert!(
            max < 1e-5,
            "sentence {i}: /embed and tunekit embed differ by {max}"
        );
    }
    // `normalize: false` gives the raw pooled vectors, as `tunekit embed --raw` does.
    let (status, body) = post(
        &server.base,
        "/embed",
        &serde_json::json!({ "inputs": ["Hello world"], "normalize": false }),
    );
    assert_eq!(status, 200, "{body}");
    let raw = floats(&body[0]);
    let (cli_raw, _) = cli_embed(
        &minilm(),
        &["Hello world".to_string()],
        &["--raw"],
        tmp.path(),
    );
    assert!(norm(&raw) > 1.5, "raw mean pooling is not a unit vector");
    assert!(cosine(&raw, &cli_raw[0]) > 0.99999 && (norm(&raw) - norm(&cli_raw[0])).abs() < 1e-4);
    // No head: /predict is refused with a message, not a made-up class.
    let (status, body) = post(
        &server.base,
        "/predict",
        &serde_json::json!({ "inputs": "hi" }),
    );
    assert_eq!(status, 400, "{body}");
    assert!(body["error"].as_str().unwrap().contains("/embed"), "{body}");
}

#[test]
fn raw_pooling_flags_give_transformers_hidden_states() {
    // `--raw --max-length 128` is the old output: transformers' masked mean (parity fixture);
    // `--pooling cls` its [CLS] hidden state.
    let f = json(&fixture("parity_minilm.json"));
    let sentences: Vec<String> = f["sentences"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect();
    let tmp = tempfile::tempdir().unwrap();
    for (flags, key) in [
        (vec!["--raw", "--max-length", "128"], "mean_pooled"),
        (
            vec!["--raw", "--max-length", "128", "--pooling", "cls"],
            "cls",
        ),
    ] {
        let (got, _) = cli_embed(&minilm(), &sentences, &flags, tmp.path());
        for (i, (g, w)) in got.iter().zip(f[key].as_array().unwrap()).enumerate() {
            let w = floats(w);
            let max = g
                .iter()
                .zip(&w)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f64::max);
            assert!(max <= 1e-4, "{key} sentence {i}: max |diff| {max}");
            assert!(cosine(g, &w) >= 0.9999, "{key} sentence {i}");
        }
    }
    let out = tunekit(&[
        "embed",
        "--model",
        minilm().to_str().unwrap(),
        "--pooling",
        "weighted",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("mean, cls, max"), "{}", stderr(&out));
}

#[test]
fn tokenizer_json_truncation_never_overrides_max_length() {
    // all-MiniLM-L6-v2's tokenizer.json has truncation at 128 and padding to 128 baked in.
    let path = minilm().join("tokenizer.json");
    let baked = json(&path);
    assert_eq!(baked["truncation"]["max_length"], 128);
    let long = "word ".repeat(400);
    let short = "a b c";
    for max_length in [64usize, 200, 256] {
        let tok = tunekit::tokenize::TextTokenizer::from_file(&path, max_length).unwrap();
        let t = tok.encode_batch(&[long.as_str(), short], None).unwrap();
        assert_eq!(t[0].ids.len(), max_length);
        assert!(t[0].truncated);
        assert_eq!(t[1].ids.len(), 5, "no padding to the baked-in 128");
        assert!(!t[1].truncated);
    }
}

#[test]
fn embedding_models_tunekit_trains_are_embedded_and_served_alike() {
    // An embedding-task model (CLS pooling) carries sentence-transformers files; embed,
    // /embed and `tunekit predict` all give the same unit vectors for it.
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let model = tiny_model(&d.join("tiny-model"));
    // (first half, second half) of MR sentences as (anchor, positive) pairs.
    let halves = |n: usize, offset: usize, name: &str| {
        let text = std::fs::read_to_string(mr("train")).unwrap();
        let rows: Vec<String> = text
            .lines()
            .skip(1)
            .map(|l| l.split('\t').next().unwrap())
            .filter(|t| t.split_whitespace().count() >= 10)
            .skip(offset)
            .take(n)
            .map(|t| {
                let w: Vec<&str> = t.split_whitespace().collect();
                let (a, b) = w.split_at(w.len() / 2);
                format!("{}\t{}", a.join(" "), b.join(" "))
            })
            .collect();
        let path = d.join(name);
        std::fs::write(&path, format!("anchor\tpositive\n{}\n", rows.join("\n"))).unwrap();
        path
    };
    let train = halves(64, 0, "train.tsv");
    let validation = halves(32, 4000, "validation.tsv");
    let cfg = d.join("emb.toml");
    std::fs::write(
        &cfg,
        format!(
            "[task]\ntype = \"embedding\"\n\n[model]\npath = {model:?}\npooling = \"cls\"\nmax_length = 48\n\n[data]\ntrain = {train:?}\nvalidation = {validation:?}\ntext_column = \"anchor\"\ntext_pair_column = \"positive\"\n\n[data.privacy]\nenabled = true\n\n[train]\nbatch_size = 16\nepochs = 1\nlearning_rate = 1e-3\nseed = 1\n\n[run]\nname = \"emb\"\ndir = {runs:?}\n",
            runs = d.join("runs")
        ),
    )
    .unwrap();
    let out = tunekit(&["train", cfg.to_str().unwrap()]);
    assert!(out.status.success(), "train: {}", stderr(&out));
    let exported = d.join("runs/emb/model");
    assert_eq!(
        json(&exported.join("1_Pooling/config.json"))["pooling_mode_cls_token"],
        true
    );
    assert_eq!(
        json(&exported.join("sentence_bert_config.json"))["max_seq_length"],
        48
    );
    // The e-mail address is replaced by the training-time de-identification ([data.privacy]):
    // `embed` must see the text as /embed and predict do.
    let texts: Vec<String> = vec![
        "a quiet , moving film".into(),
        "word ".repeat(80),
        "write to jane.doe@example.com about it".into(),
    ];
    let (cli, err) = cli_embed(&exported, &texts, &[], d);
    assert!(
        err.contains("cls pooling, L2-normalised, max length 48"),
        "{err}"
    );
    let server = serve(&exported);
    let (status, body) = post(
        &server.base,
        "/embed",
        &serde_json::json!({ "inputs": texts }),
    );
    assert_eq!(status, 200, "{body}");
    let input = d.join("in.tsv");
    std::fs::write(&input, format!("text\n{}\n", texts.join("\n"))).unwrap();
    let predicted = predict_rows(&exported, &input, &d.join("pred.jsonl"));
    // A row with an empty text gets no output line, and predict says so (never silent).
    let with_empty = d.join("in-empty.tsv");
    std::fs::write(&with_empty, "text\na fine film\n \nit drags\n").unwrap();
    let out = d.join("pred-empty.jsonl");
    let o = tunekit(&[
        "predict",
        "--model",
        exported.to_str().unwrap(),
        "--input",
        with_empty.to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(read_jsonl(&out).len(), 2);
    assert!(
        stderr(&o).contains("1 rows dropped for an empty text"),
        "{}",
        stderr(&o)
    );
    for (i, c) in cli.iter().enumerate() {
        let s = floats(&body[i]);
        let p = floats(&predicted[i]["embedding"]);
        assert!((norm(c) - 1.0).abs() < 1e-4 && (norm(&s) - 1.0).abs() < 1e-4);
        assert!(cosine(c, &s) > 0.99999, "text {i}: embed vs /embed");
        assert!(cosine(c, &p) > 0.99999, "text {i}: embed vs predict");
    }
}

/// A completed tiny run with checkpoints, for the resume tests; returns (config, run dir).
fn checkpointed_run(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let model = tiny_model(&dir.join("tiny-model"));
    let cfg = tiny_config(dir, &model, "epochs = 1\ncheckpoint_every_steps = 4\n");
    let run = dir.join("run");
    let out = tunekit(&[
        "train",
        cfg.to_str().unwrap(),
        "--run-dir",
        run.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(run.join("checkpoints/latest.json").is_file());
    (cfg, run)
}

fn resume(cfg: &Path, run: &Path, extra: &[&str]) -> std::process::Output {
    let mut args = vec![
        "train",
        cfg.to_str().unwrap(),
        "--run-dir",
        run.to_str().unwrap(),
        "--resume",
    ];
    args.extend(extra);
    tunekit(&args)
}

#[test]
fn resume_after_the_data_changed_is_refused_naming_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let (cfg, run) = checkpointed_run(tmp.path());
    let inputs = json(&run.join("inputs.json"));
    let roles: Vec<&str> = inputs
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["role"].as_str().unwrap())
        .collect();
    for role in ["data.train", "data.validation", "data.test", "model"] {
        assert!(roles.contains(&role), "{role} fingerprinted: {roles:?}");
    }
    // The training file edited in place: 32 rows fewer, same name.
    let train = tmp.path().join("train.tsv");
    let original = std::fs::read_to_string(&train).unwrap();
    let lines: Vec<&str> = original.lines().collect();
    std::fs::write(&train, lines[..lines.len() - 32].join("\n") + "\n").unwrap();
    let out = resume(&cfg, &run, &[]);
    assert_bad_input(&out, &["train.tsv", "data.train", "changed"]);
    // The same size and different contents is caught too (not size + mtime).
    let swapped = original.replacen(" the ", " THE ", 1);
    assert_eq!(swapped.len(), original.len());
    assert_ne!(swapped, original);
    std::fs::write(&train, &swapped).unwrap();
    assert_bad_input(&resume(&cfg, &run, &[]), &["train.tsv", "changed"]);
    std::fs::write(&train, &original).unwrap();

    // Model weights changed: named.
    let weights = tmp.path().join("tiny-model/model.safetensors");
    let saved = std::fs::read(&weights).unwrap();
    let parsed =
        tunekit::model::BertConfig::from_file(&tmp.path().join("tiny-model/config.json")).unwrap();
    tunekit::model::weights::write_random_encoder(&parsed, &weights, 8).unwrap();
    assert_bad_input(&resume(&cfg, &run, &[]), &["model.safetensors", "(model)"]);
    std::fs::write(&weights, saved).unwrap();

    // A changed config names the keys that differ, with both values.
    let out = resume(
        &cfg,
        &run,
        &[
            "--set",
            "train.seed=4",
            "--set",
            "train.learning_rate=0.002",
        ],
    );
    assert_bad_input(
        &out,
        &[
            "differs",
            "train.seed (3 → 4)",
            "train.learning_rate (0.001 → 0.002)",
        ],
    );

    // With everything restored, the resume goes ahead.
    let out = resume(&cfg, &run, &[]);
    assert!(
        out.status.success(),
        "unchanged inputs resume: {}",
        stderr(&out)
    );
}
