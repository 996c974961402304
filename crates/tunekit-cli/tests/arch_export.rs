//! Issue 18: exports of every BERT-shaped family (RoBERTa, XLM-RoBERTa, DistilBERT, ELECTRA,
//! MPNet), from the tiny reference models of `tools/make_arch_fixtures.py`:
//! - `--format hf`: transformers loads the export with `AutoModelForSequenceClassification` /
//!   `AutoModelForTokenClassification` (the family's class names, head tensor names and
//!   config keys) and gives tunekit's logits within 1e-4 (`tools/check_arch_export.py`);
//! - `--format onnx`: ONNX Runtime gives tunekit's logits within 1e-4, on a padded batch and
//!   on each example alone (`tools/onnx_logits.py`), for these families, ModernBERT
//!   (sequence and token heads) and DeBERTa-v2/v3;
//! - `tunekit models inspect` names the architecture and the tokenizer kind.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

const FAMILIES: [(&str, &str, &str); 5] = [
    ("roberta", "RobertaModel", "byte-level BPE"),
    ("xlm-roberta", "XLMRobertaModel", "Unigram (SentencePiece)"),
    ("distilbert", "DistilBertModel", "WordPiece"),
    ("electra", "ElectraModel", "WordPiece"),
    ("mpnet", "MPNetModel", "WordPiece"),
];

const TEXTS: [&str; 4] = [
    "a gripping, beautifully shot film",
    "dull",
    "the plot goes nowhere, but the cast is wonderful and the score is lovely",
    "an uneven comedy with a few good laughs",
];

fn arch(name: &str, sub: &str) -> PathBuf {
    root()
        .join("crates/tunekit/tests/fixtures/arch")
        .join(name)
        .join(sub)
}

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

/// tunekit's token ids and logits for each of `TEXTS` alone (sequence: `[labels]` per text;
/// token: `[seq][labels]` per text).
fn tunekit_outputs(model: &Path, token: bool) -> (Vec<Vec<u32>>, serde_json::Value) {
    let device = tunekit::device::device(tunekit::device::DeviceKind::Cpu).unwrap();
    let p = tunekit::predictor::Predictor::load(model.to_str().unwrap(), None, &device).unwrap();
    let tokens = p.tokenizer.encode_batch(&TEXTS, None).unwrap();
    let ids: Vec<Vec<u32>> = tokens.iter().map(|t| t.ids.clone()).collect();
    let mut logits = Vec::new();
    for t in &tokens {
        let batch = tunekit::batch::collate(&[t], p.tokenizer.pad_id(), &device);
        let v = if token {
            let l = tunekit::task::predict::token_logits(&p.model, &batch);
            let [_, seq, c] = l.dims();
            let flat = tunekit::model::weights::to_vec(l).unwrap();
            serde_json::json!(
                (0..seq)
                    .map(|i| flat[i * c..(i + 1) * c].to_vec())
                    .collect::<Vec<_>>()
            )
        } else {
            serde_json::json!(tunekit::model::weights::to_vec(p.model.forward(&batch)).unwrap())
        };
        logits.push(v);
    }
    (ids, serde_json::Value::Array(logits))
}

fn check_with_transformers(
    export_dir: &Path,
    token: bool,
    ids: &[Vec<u32>],
    logits: serde_json::Value,
) {
    let predictions = export_dir.with_extension("predictions.json");
    let task = if token {
        "token_classification"
    } else {
        "sequence_classification"
    };
    let body = serde_json::json!({
        "task": task, "texts": TEXTS, "pairs": null, "input_ids": ids, "logits": logits,
    });
    std::fs::write(&predictions, body.to_string()).unwrap();
    let o = Command::new("python3")
        .arg(root().join("tools/check_arch_export.py"))
        .args(["--model", export_dir.to_str().unwrap()])
        .args(["--predictions", predictions.to_str().unwrap()])
        .output()
        .expect("python3");
    assert!(
        o.status.success(),
        "transformers vs tunekit on {}: {}{}",
        export_dir.display(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

#[test]
fn hf_exports_of_every_family_load_in_transformers_with_the_same_logits() {
    let tmp = tempfile::tempdir().unwrap();
    for (name, _, _) in FAMILIES {
        for (sub, token) in [("seq", false), ("token", true)] {
            let out = tmp.path().join(format!("{name}-{sub}"));
            export(&arch(name, sub), "hf", &out);
            let config = json(&out.join("config.json"));
            assert_eq!(config["model_type"], name, "{name}/{sub}");
            let (ids, logits) = tunekit_outputs(&out, token);
            check_with_transformers(&out, token, &ids, logits);
        }
    }
}

#[test]
fn onnx_exports_of_every_family_run_in_onnx_runtime_with_the_same_logits() {
    let tmp = tempfile::tempdir().unwrap();
    // ModernBERT: rotary tables, alternating global / sliding-window (window 8, so the longer
    // texts cross it) attention, GeGLU, and its prediction head over the masked mean.
    // DeBERTa-v3-style (log buckets, shared keys) and v2-style (separate position projections):
    // the disentangled c2p / p2c terms.
    for name in
        FAMILIES
            .iter()
            .map(|f| f.0)
            .chain(["modernbert", "deberta-v2", "deberta-v2-v2style"])
    {
        let model = arch(name, "seq");
        let out = tmp.path().join(format!("{name}-onnx"));
        export(&model, "onnx", &out);
        let device = tunekit::device::device(tunekit::device::DeviceKind::Cpu).unwrap();
        let p =
            tunekit::predictor::Predictor::load(model.to_str().unwrap(), None, &device).unwrap();
        let tokens = p.tokenizer.encode_batch(&TEXTS, None).unwrap();
        let (want, width) =
            tunekit::infer::logits(&p.model, &tokens, 8, p.tokenizer.pad_id(), &device).unwrap();
        // One padded batch of all four, then each alone.
        let mut batches = vec![batch_json(&tokens)];
        batches.extend(tokens.iter().map(|t| batch_json(std::slice::from_ref(t))));
        let ort = onnx_runtime(&out.join("model.onnx"), &batches, tmp.path());
        let batched: Vec<f64> = ort["logits"][0]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|r| r.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()))
            .collect();
        let alone: Vec<f64> = (1..=TEXTS.len())
            .flat_map(|i| {
                ort["logits"][i][0]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|x| x.as_f64().unwrap())
                    .collect::<Vec<_>>()
            })
            .collect();
        assert_eq!(want.len(), TEXTS.len() * width);
        for (what, got) in [("padded", &batched), ("alone", &alone)] {
            let max = got
                .iter()
                .zip(&want)
                .map(|(a, b)| (a - f64::from(*b)).abs())
                .fold(0.0, f64::max);
            assert!(max <= 1e-4, "{name} {what}: max |diff| {max}");
        }
    }
}

#[test]
fn models_inspect_names_each_familys_architecture_and_tokenizer() {
    for (name, class, tokenizer) in FAMILIES {
        let o = tunekit(&[
            "models",
            "inspect",
            arch(name, "seq").to_str().unwrap(),
            "--json",
        ]);
        assert!(o.status.success(), "{name}: {}", stderr(&o));
        let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
        assert_eq!(v["model_type"], name);
        assert_eq!(v["architecture"], class, "{name}");
        assert_eq!(v["tokenizer"], tokenizer, "{name}");
        assert_eq!(v["weights_format"], "safetensors");
        let params = v["parameters"].as_u64().unwrap();
        assert!(params > 10_000 && params < 200_000, "{name}: {params}");
    }
}

#[test]
fn a_sentencepiece_only_directory_is_refused_with_the_conversion_command() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("spm");
    std::fs::create_dir_all(&dir).unwrap();
    let src = arch("xlm-roberta", "seq");
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(src.join(f), dir.join(f)).unwrap();
    }
    std::fs::write(dir.join("sentencepiece.bpe.model"), b"not read").unwrap();
    let o = tunekit(&["models", "inspect", dir.to_str().unwrap()]);
    assert_bad_input(
        &o,
        &[
            "tokenizer.json is missing",
            "sentencepiece.bpe.model",
            "save_pretrained",
        ],
    );
}

/// Structured pruning of feed-forward neurons for every family writes a model that transformers
/// loads (the family's own `intermediate_size` key: DistilBERT's `hidden_dim`) and that
/// predicts what tunekit predicts; heads are pruned for every family but MPNet, whose heads
/// are refused by name (its relative position bias has one column per head, shared by every
/// layer). transformers 5 no longer reads `pruned_heads`, so head-pruned directories are
/// checked by tunekit loading them (the prune test checks their predictions for BERT).
#[test]
fn pruned_models_of_every_family_load_in_transformers_and_mpnet_heads_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    for (name, _, _) in FAMILIES {
        let out = tmp.path().join(format!("{name}-pruned"));
        let o = tunekit(&[
            "prune",
            "--model",
            arch(name, "seq").to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--ffn",
            "0.3",
        ]);
        assert!(o.status.success(), "{name}: {}", stderr(&o));
        let config = json(&out.join("config.json"));
        let key = if name == "distilbert" {
            "hidden_dim"
        } else {
            "intermediate_size"
        };
        assert_eq!(config[key], 26, "{name}: 37 neurons less 30 % in {key}");
        let (ids, logits) = tunekit_outputs(&out, false);
        check_with_transformers(&out, false, &ids, logits);
        if name != "mpnet" {
            let heads = tmp.path().join(format!("{name}-heads"));
            let o = tunekit(&[
                "prune",
                "--model",
                arch(name, "seq").to_str().unwrap(),
                "--out",
                heads.to_str().unwrap(),
                "--heads",
                "0.25",
            ]);
            assert!(o.status.success(), "{name}: {}", stderr(&o));
            let config = json(&heads.join("config.json"));
            assert_eq!(
                config["pruned_heads"]["0"].as_array().unwrap().len(),
                1,
                "{name}"
            );
            let (_, logits) = tunekit_outputs(&heads, false);
            assert_eq!(logits.as_array().unwrap().len(), TEXTS.len(), "{name}");
        }
    }
    let o = tunekit(&[
        "prune",
        "--model",
        arch("mpnet", "seq").to_str().unwrap(),
        "--out",
        tmp.path().join("mpnet-heads").to_str().unwrap(),
        "--heads",
        "0.25",
    ]);
    assert_bad_input(
        &o,
        &["mpnet", "heads cannot be pruned", "relative_attention_bias"],
    );
}

/// int8 quantisation of every family: the quantised model loads, runs the int8 product and
/// stays close to the f32 model (max |logit diff| within 5 % of the logits' range).
#[test]
fn int8_models_of_every_family_stay_close_to_f32() {
    let tmp = tempfile::tempdir().unwrap();
    for (name, _, _) in FAMILIES {
        let model = arch(name, "seq");
        let out = tmp.path().join(format!("{name}-int8"));
        let o = tunekit(&[
            "quantize",
            "--model",
            model.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ]);
        assert!(o.status.success(), "{name}: {}", stderr(&o));
        let device = tunekit::device::device(tunekit::device::DeviceKind::Cpu).unwrap();
        let logits = |dir: &Path| {
            let p =
                tunekit::predictor::Predictor::load(dir.to_str().unwrap(), None, &device).unwrap();
            let tokens = p.tokenizer.encode_batch(&TEXTS, None).unwrap();
            let int8 = p.model.encoder.int8().is_some();
            (
                tunekit::infer::logits(&p.model, &tokens, 8, p.tokenizer.pad_id(), &device)
                    .unwrap()
                    .0,
                int8,
            )
        };
        let ((f32_logits, f32_int8), (q_logits, q_int8)) = (logits(&model), logits(&out));
        assert!(
            !f32_int8 && q_int8,
            "{name}: int8 weights attached to the quantised model only"
        );
        let range = f32_logits.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let max = f32_logits
            .iter()
            .zip(&q_logits)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        assert!(
            max > 0.0 && max <= 0.05 * range.max(1.0),
            "{name}: {max} of {range}"
        );
    }
}

#[test]
fn modernbert_token_onnx_export_runs_the_prediction_head_on_every_token() {
    let tmp = tempfile::tempdir().unwrap();
    let model = arch("modernbert", "token");
    let out = tmp.path().join("modernbert-token-onnx");
    export(&model, "onnx", &out);
    let (_, want) = tunekit_outputs(&model, true);
    let device = tunekit::device::device(tunekit::device::DeviceKind::Cpu).unwrap();
    let p = tunekit::predictor::Predictor::load(model.to_str().unwrap(), None, &device).unwrap();
    let tokens = p.tokenizer.encode_batch(&TEXTS, None).unwrap();
    // Each text alone, then all four padded into one batch.
    let mut batches: Vec<serde_json::Value> = tokens
        .iter()
        .map(|t| batch_json(std::slice::from_ref(t)))
        .collect();
    batches.push(batch_json(&tokens));
    let got = onnx_runtime(&out.join("model.onnx"), &batches, tmp.path())["logits"].clone();
    let mut max = 0.0f64;
    for (i, t) in tokens.iter().enumerate() {
        for pos in 0..t.ids.len() {
            for (alone_or_padded, row) in [
                (&got[i][0][pos], &want[i][pos]),
                (&got[TEXTS.len()][i][pos], &want[i][pos]),
            ] {
                let (a, b) = (alone_or_padded.as_array().unwrap(), row.as_array().unwrap());
                assert_eq!(a.len(), b.len(), "tags at text {i} piece {pos}");
                for (x, y) in a.iter().zip(b) {
                    max = max.max((x.as_f64().unwrap() - y.as_f64().unwrap()).abs());
                }
            }
        }
    }
    assert!(max <= 1e-4, "max |diff| {max}");
    assert!(
        got[0][0].as_array().unwrap().len() == tokens[0].ids.len(),
        "one row of tags per piece"
    );
}
