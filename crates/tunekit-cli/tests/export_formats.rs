//! `tunekit export` on a real all-MiniLM-L6-v2 LoRA run (a few steps on MR rows):
//! - `--format hf`: adapters merged into one `model.safetensors` with exactly the tensor names
//!   and shapes `transformers`' `BertForSequenceClassification` has (list from
//!   `tools/hf_tensor_names.py`), the label map and `problem_type`, the same predictions;
//! - `--format onnx`: ONNX Runtime (PyPI `onnxruntime`, via `tools/onnx_logits.py`) gives
//!   tunekit's logits within 1e-4 on fixed sentences, in a padded batch and one at a time.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use common::*;

const SENTENCES: [&str; 5] = [
    "A gorgeous, witty, seductive movie.",
    "The plot is nothing but boilerplate clichés from start to finish, and the script assumes that not only would subtlety be lost on the target audience, but that it's also too stupid to realize that they've already seen this exact same movie a hundred times.",
    "Dull.",
    "It's not a great film, but it is a good one, and at times a very funny one.",
    "An ungainly, comedy-deficient, B-movie rush job.",
];

/// A MiniLM LoRA run: the real architecture and an adapter to merge, in a few seconds.
fn minilm_lora_run(dir: &Path) -> std::path::PathBuf {
    let cfg = tiny_config(dir, &minilm(), "max_steps = 4");
    let out = tunekit(&[
        "train",
        cfg.to_str().unwrap(),
        "--set",
        "strategy.lora.rank=4",
        "--set",
        "strategy.lora.alpha=8",
    ]);
    assert!(out.status.success(), "train failed: {}", stderr(&out));
    dir.join("runs/tiny/model")
}

fn safetensors_shapes(path: &Path) -> BTreeMap<String, Vec<usize>> {
    let bytes = std::fs::read(path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    st.tensors()
        .into_iter()
        .map(|(n, v)| (n.to_string(), v.shape().to_vec()))
        .collect()
}

/// tunekit's own logits for the sentences (the library, as `predict` computes them).
fn tunekit_logits(model: &Path) -> Vec<Vec<f32>> {
    let device = tunekit::device::device(tunekit::device::DeviceKind::Cpu).unwrap();
    let clf = tunekit::predictor::Predictor::load(model.to_str().unwrap(), None, &device).unwrap();
    let tokens = clf.tokenizer.encode_batch(&SENTENCES, None).unwrap();
    let (flat, width) =
        tunekit::infer::logits(&clf.model, &tokens, 8, clf.tokenizer.pad_id(), &device).unwrap();
    flat.chunks(width).map(|r| r.to_vec()).collect()
}

#[test]
fn hf_export_merges_adapters_into_transformers_names_and_predicts_the_same() {
    let tmp = tempfile::tempdir().unwrap();
    let adapter_dir = minilm_lora_run(tmp.path());
    let out_dir = tmp.path().join("hf");
    let out = tunekit(&[
        "export",
        "--model",
        adapter_dir.to_str().unwrap(),
        "--format",
        "hf",
        "--out",
        out_dir.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "export failed: {}", stderr(&out));

    let fixture = json(&root().join("crates/tunekit/tests/fixtures/hf_bert_seqcls_minilm.json"));
    let want: BTreeMap<String, Vec<usize>> =
        serde_json::from_value(fixture["tensors"].clone()).unwrap();
    assert_eq!(safetensors_shapes(&out_dir.join("model.safetensors")), want);
    let config = json(&out_dir.join("config.json"));
    assert_eq!(
        config["architectures"],
        serde_json::json!(["BertForSequenceClassification"])
    );
    assert_eq!(config["problem_type"], "single_label_classification");
    assert_eq!(config["id2label"]["1"], "positive");
    assert_eq!(config["label2id"]["negative"], 0);
    for f in ["tokenizer.json", "README.md", "tunekit.json"] {
        assert!(out_dir.join(f).is_file(), "{f} missing");
    }
    // The merged export predicts what the adapter run predicts.
    let (a, b) = (tunekit_logits(&adapter_dir), tunekit_logits(&out_dir));
    for (x, y) in a.iter().flatten().zip(b.iter().flatten()) {
        assert!((x - y).abs() < 1e-4, "{x} vs {y}");
    }
}

#[test]
fn onnx_runtime_reproduces_tunekit_logits_with_and_without_padding() {
    let tmp = tempfile::tempdir().unwrap();
    let model_dir = minilm_lora_run(tmp.path());
    let out_dir = tmp.path().join("onnx");
    let out = tunekit(&[
        "export",
        "--model",
        model_dir.to_str().unwrap(),
        "--format",
        "onnx",
        "--out",
        out_dir.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "export failed: {}", stderr(&out));
    let onnx = out_dir.join("model.onnx");
    assert!(onnx.is_file());
    assert!(out_dir.join("tokenizer.json").is_file() && out_dir.join("config.json").is_file());

    let want = tunekit_logits(&model_dir);
    let device = tunekit::device::device(tunekit::device::DeviceKind::Cpu).unwrap();
    let clf =
        tunekit::predictor::Predictor::load(model_dir.to_str().unwrap(), None, &device).unwrap();
    let tokens = clf.tokenizer.encode_batch(&SENTENCES, None).unwrap();
    // One padded batch of all five, then each sentence alone (no padding).
    let mut batches = vec![batch_json(&tokens)];
    batches.extend(tokens.iter().map(|t| batch_json(std::slice::from_ref(t))));
    let inputs = tmp.path().join("inputs.json");
    std::fs::write(&inputs, serde_json::to_string(&batches).unwrap()).unwrap();

    let out = Command::new("python3")
        .arg(root().join("tools/onnx_logits.py"))
        .arg(&onnx)
        .arg(&inputs)
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "onnxruntime failed (scripts/test-deps.sh installs it): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ort: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        ort["inputs"],
        serde_json::json!(["input_ids", "attention_mask", "token_type_ids"])
    );
    assert_eq!(ort["outputs"], serde_json::json!(["logits"]));
    // Dynamic batch and sequence axes.
    assert_eq!(
        ort["input_shapes"][0],
        serde_json::json!(["batch", "sequence"])
    );
    let batches = ort["logits"].as_array().unwrap();
    let padded = batches[0].as_array().unwrap();
    assert_eq!(padded.len(), SENTENCES.len());
    for (i, want_row) in want.iter().enumerate() {
        for got_rows in [&padded[i], &batches[i + 1][0]] {
            let got: Vec<f64> = serde_json::from_value(got_rows.clone()).unwrap();
            assert_eq!(got.len(), want_row.len());
            for (g, w) in got.iter().zip(want_row) {
                assert!(
                    (g - f64::from(*w)).abs() < 1e-4,
                    "sentence {i}: onnx {g} vs tunekit {w}"
                );
            }
        }
    }
}
