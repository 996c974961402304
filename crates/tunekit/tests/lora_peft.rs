//! tunekit's LoRA equals PEFT's: an adapter saved by `peft` (tools/make_lora_fixture.py:
//! all-MiniLM-L6-v2, rank 2, alpha 4, query + value, classifier head) loads into tunekit and
//! gives the logits `transformers` + `peft` computed, within 1e-5.
//!
//! The fixture holds no weights: PEFT's config, the names and shapes its `save_pretrained`
//! wrote, and the logits. The values are a formula ([`value`]) both sides compute; the script
//! checked that PEFT's saved file held exactly them.

use std::path::Path;

use burn::tensor::Device;
use tunekit::batch::collate;
use tunekit::model::weights::to_vec;
use tunekit::predictor::Predictor;

/// Weight `i` of saved tensor `k` (same formula as `value` in tools/make_lora_fixture.py).
fn value(k: usize, i: usize) -> f32 {
    (((i + 7 * k) % 97) as f64 - 48.0) as f32 / 960.0
}

/// PEFT's `adapter_model.safetensors` rebuilt from the recorded names and shapes.
fn write_adapter(expected: &serde_json::Value, path: &Path) {
    let tensors: Vec<(String, Vec<usize>, Vec<u8>)> = expected["tensors"]
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
        .map(|(k, t)| {
            let name = t[0].as_str().unwrap().to_string();
            let shape: Vec<usize> = t[1]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d.as_u64().unwrap() as usize)
                .collect();
            let n: usize = shape.iter().product();
            let bytes = (0..n).flat_map(|i| value(k, i).to_le_bytes()).collect();
            (name, shape, bytes)
        })
        .collect();
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = tensors
        .iter()
        .map(|(n, s, b)| {
            let v = safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), b);
            (n.clone(), v.unwrap())
        })
        .collect();
    std::fs::write(path, safetensors::serialize(views, None).unwrap()).unwrap();
}

#[test]
fn peft_adapter_gives_peft_logits() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let fixture = root.join("crates/tunekit/tests/fixtures/peft_lora");
    let base = root.join("assets/models/all-MiniLM-L6-v2");
    assert!(base.is_dir(), "assets missing: run scripts/fetch-assets.sh");
    let expected: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture.join("expected.json")).unwrap())
            .unwrap();

    // The adapter directory as a user would have it: PEFT's two files, plus the config with
    // labels and the tokenizer; the base path made absolute.
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let mut cfg: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixture.join("adapter_config.json")).unwrap(),
    )
    .unwrap();
    cfg["base_model_name_or_path"] = base.canonicalize().unwrap().display().to_string().into();
    std::fs::write(dir.join("adapter_config.json"), cfg.to_string()).unwrap();
    write_adapter(&expected, &dir.join("adapter_model.safetensors"));
    std::fs::copy(base.join("tokenizer.json"), dir.join("tokenizer.json")).unwrap();
    let mut model_cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(base.join("config.json")).unwrap()).unwrap();
    model_cfg["id2label"] = serde_json::json!({"0": "LABEL_0", "1": "LABEL_1"});
    model_cfg["label2id"] = serde_json::json!({"LABEL_0": 0, "LABEL_1": 1});
    std::fs::write(dir.join("config.json"), model_cfg.to_string()).unwrap();

    let device = Device::flex();
    let clf = Predictor::load(dir.to_str().unwrap(), Some(128), &device).unwrap();
    assert!(clf.is_adapter());
    let sentences: Vec<tunekit::data::Example> = expected["sentences"]
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
        .map(|(i, s)| tunekit::data::Example {
            text: s.as_str().unwrap().to_string(),
            text_pair: None,
            label: None,
            line: i + 1,
        })
        .collect();
    let tokens = clf.tokenize(&sentences).unwrap();
    let refs: Vec<_> = tokens.iter().collect();
    let batch = collate(&refs, clf.tokenizer.pad_id(), &device);
    let logits = to_vec(clf.model.forward(&batch)).unwrap();
    let want: Vec<f32> = expected["logits"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| {
            r.as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap() as f32)
        })
        .collect();
    assert_eq!(logits.len(), want.len());
    let max = logits
        .iter()
        .zip(&want)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(max < 1e-5, "max |logit diff| {max}: {logits:?} vs {want:?}");

    // Folded into the base weights (`tunekit merge`), the same logits.
    let merged = tmp.path().join("merged");
    clf.merge_into(&merged).unwrap();
    let plain = Predictor::load(merged.to_str().unwrap(), Some(128), &device).unwrap();
    assert!(!plain.is_adapter());
    let again = to_vec(plain.model.forward(&batch)).unwrap();
    let max = again
        .iter()
        .zip(&want)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(max < 1e-5, "merged: max |logit diff| {max}");
}
