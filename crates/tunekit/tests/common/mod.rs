//! Shared by the architecture parity tests (`arch_*.rs`): the reference fixtures of
//! `tools/make_arch_fixtures.py`, their batches, and the comparison with transformers'
//! outputs (cosine ≥ 0.9999, max |diff| ≤ 1e-4).
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use burn::tensor::{Device, Tensor, TensorData};
use serde_json::Value;
use tunekit::model::weights::{ClassifierSpec, DropoutOverride, HeadKind, load_classifier};
use tunekit::model::{BertConfig, EncodedBatch, SequenceClassifier};

/// `tests/fixtures/arch/<name>` (made by tools/make_arch_fixtures.py).
pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/arch")
        .join(name)
}

/// The fixture's `expected.json` (transformers' outputs).
pub fn expected(name: &str) -> Value {
    serde_json::from_str(&std::fs::read_to_string(fixture(name).join("expected.json")).unwrap())
        .unwrap()
}

/// The fixture's `seq/` (3 labels) or `token/` (5 labels) model; every tensor of the file used.
pub fn load(name: &str, head: HeadKind) -> SequenceClassifier {
    let dir = fixture(name).join(match head {
        HeadKind::Sequence => "seq",
        HeadKind::Token => "token",
    });
    let config = BertConfig::from_file(&dir.join("config.json")).unwrap();
    let spec = ClassifierSpec {
        num_labels: if head == HeadKind::Sequence { 3 } else { 5 },
        // The checkpoint's own pooling (`classifier_pooling` for ModernBERT; cls otherwise).
        pooling: config.hf_pooling(),
        dropout: DropoutOverride::default(),
        seed: 1,
        require_head: true,
        head,
    };
    let (model, report) = load_classifier(
        &dir.join("model.safetensors"),
        &config,
        &spec,
        &Device::flex(),
    )
    .unwrap();
    assert!(!report.classifier_initialized && !report.pooler_initialized);
    assert!(
        report.unused_tensors.is_empty(),
        "{:?}",
        report.unused_tensors
    );
    model
}

/// A JSON `[[int]]`.
pub fn ints(v: &Value) -> Vec<Vec<i64>> {
    serde_json::from_value(v.clone()).unwrap()
}

/// The case's padded batch and its attention mask.
pub fn batch(case: &Value) -> (EncodedBatch, Vec<Vec<i64>>) {
    let ids = ints(&case["input_ids"]);
    let mask = ints(&case["attention_mask"]);
    let types = ints(&case["token_type_ids"]);
    let (b, s) = (ids.len(), ids[0].len());
    let flat = |v: &[Vec<i64>]| v.iter().flatten().copied().collect::<Vec<i64>>();
    let device = Device::flex();
    let batch = EncodedBatch {
        input_ids: Tensor::from_data(TensorData::new(flat(&ids), [b, s]), &device),
        token_type_ids: Tensor::from_data(TensorData::new(flat(&types), [b, s]), &device),
        attention_mask: Tensor::from_data(
            TensorData::new(
                flat(&mask).iter().map(|&m| m as f32).collect::<Vec<_>>(),
                [b, s],
            ),
            &device,
        ),
    };
    (batch, mask)
}

/// Values of `got` (row-major `[batch, seq, width]`) and of `want` at real tokens only.
pub fn real_tokens(
    got: &[f32],
    want: &Value,
    mask: &[Vec<i64>],
    width: usize,
) -> (Vec<f32>, Vec<f32>) {
    let want: Vec<Vec<Vec<f32>>> = serde_json::from_value(want.clone()).unwrap();
    let seq = mask[0].len();
    let (mut g, mut w) = (Vec::new(), Vec::new());
    for (b, row) in mask.iter().enumerate() {
        for (t, &m) in row.iter().enumerate() {
            if m == 1 {
                let at = (b * seq + t) * width;
                g.extend_from_slice(&got[at..at + width]);
                w.extend_from_slice(&want[b][t]);
            }
        }
    }
    (g, w)
}

/// (max |diff|, cosine) of two equally long vectors.
pub fn compare(got: &[f32], want: &[f32]) -> (f64, f64) {
    assert_eq!(got.len(), want.len());
    let mut max = 0f64;
    let (mut dot, mut ng, mut nw) = (0f64, 0f64, 0f64);
    for (&g, &w) in got.iter().zip(want) {
        let (g, w) = (g as f64, w as f64);
        max = max.max((g - w).abs());
        dot += g * w;
        ng += g * g;
        nw += w * w;
    }
    (max, dot / (ng.sqrt() * nw.sqrt()))
}

/// [`compare`], asserting max |diff| ≤ 1e-4 and cosine ≥ 0.9999.
pub fn check(what: &str, got: &[f32], want: &[f32]) -> (f64, f64) {
    let (max, cos) = compare(got, want);
    assert!(
        max <= 1e-4 && cos >= 0.9999,
        "{what}: max |diff| {max:e}, cosine {cos}"
    );
    (max, cos)
}
