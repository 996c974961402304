//! `tunekit quantize`: int8 encoder weights that are really stored as int8 (smaller file),
//! loaded and run by the int8 product at inference, predicting what the f32 model predicts
//! within the quantisation error; and the int8 ONNX export (QDQ) that ONNX Runtime runs with
//! exactly the graph's arithmetic.

mod common;

use std::path::Path;
use std::process::Command;

use common::*;

#[test]
fn int8_model_is_smaller_runs_int8_and_predicts_like_f32() {
    let tmp = tempfile::tempdir().unwrap();
    let base = trained_tiny(tmp.path(), 2);
    let q = tmp.path().join("int8");
    let o = tunekit(&[
        "quantize",
        "--model",
        base.to_str().unwrap(),
        "--out",
        q.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));

    // Stored as int8: I8 weights with per-channel scales, and a file about a quarter the size.
    let bytes = std::fs::read(q.join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let w = st
        .tensor("bert.encoder.layer.1.intermediate.dense.weight")
        .unwrap();
    assert_eq!(w.dtype(), safetensors::Dtype::I8);
    assert_eq!(w.shape(), [64, 32]);
    let s = st
        .tensor("bert.encoder.layer.1.intermediate.dense.weight_scale")
        .unwrap();
    assert_eq!((s.dtype(), s.shape()), (safetensors::Dtype::F32, &[64][..]));
    assert_eq!(
        st.tensor("bert.embeddings.word_embeddings.weight")
            .unwrap()
            .dtype(),
        safetensors::Dtype::I8
    );
    let size = |d: &Path| {
        std::fs::metadata(d.join("model.safetensors"))
            .unwrap()
            .len()
    };
    assert!(
        size(&q) * 3 < size(&base),
        "{} vs {}",
        size(&q),
        size(&base)
    );
    let report = json(&q.join("quantize_report.json"));
    assert_eq!(report["linear_layers"], 12);
    assert!(report["max_relative_weight_error"].as_f64().unwrap() <= 0.5 / 127.0 + 1e-6);

    // Loaded for inference with the int8 weights attached; its f32 weights are the dequantised
    // ones, within half a quantisation step of the originals.
    let device = tunekit::device::device(tunekit::device::DeviceKind::Cpu).unwrap();
    let clf = tunekit::predictor::Predictor::load(q.to_str().unwrap(), None, &device).unwrap();
    let int8 = clf
        .model
        .encoder
        .int8()
        .cloned()
        .expect("int8 weights attached");
    let f32_clf =
        tunekit::predictor::Predictor::load(base.to_str().unwrap(), None, &device).unwrap();
    assert!(f32_clf.model.encoder.int8().is_none());
    let orig = tunekit::model::weights::to_vec(
        f32_clf.model.encoder.as_bert().unwrap().layers[0]
            .attention
            .query
            .weight
            .val(),
    )
    .unwrap();
    let deq = tunekit::model::weights::to_vec(
        clf.model.encoder.as_bert().unwrap().layers[0]
            .attention
            .query
            .weight
            .val(),
    )
    .unwrap();
    let ql = &int8.layers[0][0];
    for (i, (a, b)) in orig.iter().zip(&deq).enumerate() {
        // burn layout [in, out]: output channel = i % out.
        let scale = ql.scale[i % ql.out_features];
        assert!((a - b).abs() <= scale * 0.5 + 1e-7, "{a} vs {b}");
    }

    // Predictions: the int8 model agrees with the f32 model.
    let input = tmp.path().join("validation.tsv");
    let p32 = predict_rows(&base, &input, &tmp.path().join("p32.jsonl"));
    let p8 = predict_rows(&q, &input, &tmp.path().join("p8.jsonl"));
    assert_eq!(p32.len(), 48);
    let same = p32
        .iter()
        .zip(&p8)
        .filter(|(a, b)| a["label"] == b["label"])
        .count();
    assert!(same >= 46, "{same} of 48 labels agree");
    let worst = p32
        .iter()
        .zip(&p8)
        .map(|(a, b)| (a["score"].as_f64().unwrap() - b["score"].as_f64().unwrap()).abs())
        .fold(0.0, f64::max);
    assert!(worst < 0.05, "largest probability change {worst}");
    // The int8 product differs from the dequantised f32 product (activations are quantised
    // too), but only by the quantisation error.
    let tokens = clf
        .tokenizer
        .encode_batch(&["a gripping , well acted film", "dull"], None)
        .unwrap();
    let (l8, _) = tunekit::infer::logits(&clf.model, &tokens, 8, 0, &device).unwrap();
    let mut deq_model = clf.model.clone();
    deq_model.encoder.set_int8(None);
    let (lf, _) = tunekit::infer::logits(&deq_model, &tokens, 8, 0, &device).unwrap();
    let diff = l8
        .iter()
        .zip(&lf)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(
        diff > 0.0 && diff < 0.05,
        "int8 vs dequantised f32 logits: {diff}"
    );

    // bf16 products do not apply to an int8 model: refused, not silently ignored.
    let o = tunekit(&[
        "eval",
        "--model",
        q.to_str().unwrap(),
        "--data",
        input.to_str().unwrap(),
        "--precision",
        "bf16",
    ]);
    assert_bad_input(&o, &["int8", "bf16"]);

    // eval runs it; quantising twice is refused.
    let o = tunekit(&[
        "eval",
        "--model",
        q.to_str().unwrap(),
        "--data",
        input.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = tunekit(&[
        "quantize",
        "--model",
        q.to_str().unwrap(),
        "--out",
        tmp.path().join("again").to_str().unwrap(),
    ]);
    assert_bad_input(&o, &["already quantised"]);

    // compress-report has the int8 row, smaller on disk.
    let table = tmp.path().join("table.md");
    let o = tunekit(&[
        "compress-report",
        base.to_str().unwrap(),
        q.to_str().unwrap(),
        "--data",
        input.to_str().unwrap(),
        "--output",
        table.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = std::fs::read_to_string(&table).unwrap();
    assert!(
        text.lines().filter(|l| l.starts_with("| `")).count() == 2,
        "{text}"
    );

    // ONNX: int8 initializers behind DequantizeLinear; run as written, ONNX Runtime gives the
    // dequantised model's logits.
    let onnx_dir = tmp.path().join("onnx");
    let o = tunekit(&[
        "export",
        "--model",
        q.to_str().unwrap(),
        "--format",
        "onnx",
        "--out",
        onnx_dir.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let onnx = onnx_dir.join("model.onnx");
    let raw = std::fs::read(&onnx).unwrap();
    assert!(raw.windows(16).any(|w| w == b"DequantizeLinear"));
    assert!(
        raw.len() * 3
            < std::fs::metadata(base.join("model.safetensors"))
                .unwrap()
                .len() as usize,
        "int8 ONNX file is small"
    );
    let inputs = tmp.path().join("inputs.json");
    std::fs::write(
        &inputs,
        serde_json::to_string(&vec![batch_json(&tokens)]).unwrap(),
    )
    .unwrap();
    let out = Command::new("python3")
        .arg(root().join("tools/onnx_logits.py"))
        .arg(&onnx)
        .arg(&inputs)
        .arg("--no-optimizations")
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ort: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let got: Vec<f64> = ort["logits"][0]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| r.as_array().unwrap().iter().map(|v| v.as_f64().unwrap()))
        .collect();
    assert_eq!(got.len(), lf.len());
    for (g, w) in got.iter().zip(&lf) {
        assert!((g - f64::from(*w)).abs() < 1e-4, "onnx {g} vs tunekit {w}");
    }
}
