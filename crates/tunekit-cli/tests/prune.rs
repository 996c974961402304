//! `tunekit prune` on a trained tiny BERT: removing heads and FFN neurons whose output weights
//! are zero changes no prediction (so the slicing is exact) and gives a smaller model with a
//! config transformers understands (`intermediate_size`, `pruned_heads`), which eval and the
//! ONNX export load; magnitude pruning reaches its sparsity; recovery fine-tuning runs.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use common::*;

fn shapes(path: &Path) -> BTreeMap<String, Vec<usize>> {
    let bytes = std::fs::read(path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    st.tensors()
        .into_iter()
        .map(|(n, v)| (n, v.shape().to_vec()))
        .collect()
}

/// Rewrite `model.safetensors` in `dir` with `edit(name, shape, values)` applied to each tensor.
fn edit_weights(dir: &Path, edit: impl Fn(&str, &[usize], &mut [f32])) {
    let path = dir.join("model.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut tensors: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
    for (name, view) in st.tensors() {
        let mut v: Vec<f32> = view
            .data()
            .chunks(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        edit(&name, view.shape(), &mut v);
        let data: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
        tensors.push((name, view.shape().to_vec(), data));
    }
    let views: Vec<(String, safetensors::tensor::TensorView)> = tensors
        .iter()
        .map(|(n, s, d)| {
            (
                n.clone(),
                safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), d)
                    .unwrap(),
            )
        })
        .collect();
    let out = safetensors::serialize(views, None).unwrap();
    std::fs::write(&path, out).unwrap();
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

/// Probabilities tunekit predicts for the MR test subset, in row order.
fn probabilities(model: &Path, data: &Path, out: &Path) -> Vec<Vec<f64>> {
    predict_rows(model, data, out)
        .iter()
        .map(|v| {
            ["negative", "positive"]
                .iter()
                .map(|k| v["probabilities"][k].as_f64().unwrap())
                .collect()
        })
        .collect()
}

#[test]
fn removing_heads_and_neurons_with_zero_output_weights_is_exact_and_shrinks_the_model() {
    let tmp = tempfile::tempdir().unwrap();
    let trained = trained_tiny(tmp.path(), 2);
    // Silence heads 0 and 2 (8 dims each) and FFN neurons 32..64 in every layer.
    let silenced = tmp.path().join("silenced");
    copy_dir(&trained, &silenced);
    edit_weights(&silenced, |name, shape, v| {
        let (rows, cols) = (shape[0], shape.get(1).copied().unwrap_or(1));
        let zero_cols = |v: &mut [f32], keep: &dyn Fn(usize) -> bool| {
            for r in 0..rows {
                for c in 0..cols {
                    if !keep(c) {
                        v[r * cols + c] = 0.0;
                    }
                }
            }
        };
        if name.ends_with("attention.output.dense.weight") {
            zero_cols(v, &|c| !(c < 8 || (16..24).contains(&c)));
        } else if name.ends_with(".output.dense.weight") && cols == 64 {
            zero_cols(v, &|c| c < 32);
        }
    });
    let pruned = tmp.path().join("pruned");
    let out = tunekit(&[
        "prune",
        "--model",
        silenced.to_str().unwrap(),
        "--out",
        pruned.to_str().unwrap(),
        "--heads",
        "0.5",
        "--ffn",
        "0.5",
    ]);
    assert!(out.status.success(), "prune failed: {}", stderr(&out));

    let config = json(&pruned.join("config.json"));
    assert_eq!(config["intermediate_size"], 32);
    assert_eq!(
        config["num_attention_heads"], 4,
        "HF keeps the original count"
    );
    assert_eq!(
        config["pruned_heads"],
        serde_json::json!({"0": [0, 2], "1": [0, 2]})
    );
    let s = shapes(&pruned.join("model.safetensors"));
    assert_eq!(
        s["bert.encoder.layer.0.attention.self.query.weight"],
        vec![16, 32]
    );
    assert_eq!(
        s["bert.encoder.layer.1.attention.output.dense.weight"],
        vec![32, 16]
    );
    assert_eq!(
        s["bert.encoder.layer.0.intermediate.dense.weight"],
        vec![32, 32]
    );
    assert_eq!(s["bert.encoder.layer.1.output.dense.weight"], vec![32, 32]);
    let report = json(&pruned.join("prune_report.json"));
    assert!(report["parameters_after"].as_u64() < report["parameters_before"].as_u64());
    assert!(
        std::fs::metadata(pruned.join("model.safetensors"))
            .unwrap()
            .len()
            < std::fs::metadata(silenced.join("model.safetensors"))
                .unwrap()
                .len()
    );

    // Same predictions as the silenced model, through the real loader and eval path.
    let test = tmp.path().join("test.tsv");
    let a = probabilities(&silenced, &test, &tmp.path().join("a.jsonl"));
    let b = probabilities(&pruned, &test, &tmp.path().join("b.jsonl"));
    assert_eq!(a.len(), 48);
    for (x, y) in a.iter().flatten().zip(b.iter().flatten()) {
        assert!((x - y).abs() < 1e-5, "{x} vs {y}");
    }
    // Taylor importance on calibration data also removes the silenced units first (their
    // gates have zero gradient): the same heads, and again the same predictions.
    let taylor = tmp.path().join("taylor");
    let out = tunekit(&[
        "prune",
        "--model",
        silenced.to_str().unwrap(),
        "--out",
        taylor.to_str().unwrap(),
        "--heads",
        "0.5",
        "--ffn",
        "0.5",
        "--importance",
        "taylor",
        "--calibration",
        tmp.path().join("validation.tsv").to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "taylor prune failed: {}",
        stderr(&out)
    );
    assert_eq!(
        json(&taylor.join("config.json"))["pruned_heads"],
        serde_json::json!({"0": [0, 2], "1": [0, 2]})
    );
    let tr = json(&taylor.join("prune_report.json"));
    assert_eq!(tr["importance"], "taylor");
    assert_eq!(tr["calibration_examples"], 48);
    let c = probabilities(&taylor, &test, &tmp.path().join("c.jsonl"));
    for (x, y) in a.iter().flatten().zip(c.iter().flatten()) {
        assert!((x - y).abs() < 1e-5, "{x} vs {y}");
    }
    // Without calibration data Taylor importance is refused.
    let out = tunekit(&[
        "prune",
        "--model",
        silenced.to_str().unwrap(),
        "--out",
        tmp.path().join("x").to_str().unwrap(),
        "--heads",
        "0.5",
        "--importance",
        "taylor",
    ]);
    assert_bad_input(&out, &["--calibration"]);

    // And the ONNX export handles the narrower attention.
    let onnx = tmp.path().join("onnx");
    let out = tunekit(&[
        "export",
        "--model",
        pruned.to_str().unwrap(),
        "--format",
        "onnx",
        "--out",
        onnx.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "onnx export of a pruned model failed: {}",
        stderr(&out)
    );

    // The comparison table: same accuracy (exact pruning), fewer parameters, smaller files.
    let table = tmp.path().join("compress.md");
    let out = tunekit(&[
        "compress-report",
        silenced.to_str().unwrap(),
        pruned.to_str().unwrap(),
        "--data",
        test.to_str().unwrap(),
        "--latency-inputs",
        "10",
        "--output",
        table.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "compress-report failed: {}",
        stderr(&out)
    );
    let rows = json(&table.with_extension("json"));
    let (base, small) = (&rows[0], &rows[1]);
    assert_eq!(base["accuracy"], small["accuracy"]);
    assert!(small["parameters"].as_u64() < base["parameters"].as_u64());
    assert!(small["weight_bytes"].as_u64() < base["weight_bytes"].as_u64());
    for r in [base, small] {
        assert!(r["latency_p50_ms"].as_f64().unwrap() > 0.0);
        assert!(r["latency_p90_ms"].as_f64() >= r["latency_p50_ms"].as_f64());
        assert!(r["batch32_examples_per_s"].as_f64().unwrap() > 0.0);
    }
    let md = std::fs::read_to_string(&table).unwrap();
    assert_eq!(md.lines().count(), 4, "{md}");
    assert!(md.contains("+0.0000"));
}

#[test]
fn magnitude_pruning_reaches_its_sparsity_globally_and_per_layer() {
    let tmp = tempfile::tempdir().unwrap();
    let trained = trained_tiny(tmp.path(), 2);
    for (flag, dir) in [(None, "global"), (Some("--per-layer"), "per-layer")] {
        let out_dir = tmp.path().join(dir);
        let mut args = vec![
            "prune",
            "--model",
            trained.to_str().unwrap(),
            "--out",
            out_dir.to_str().unwrap(),
            "--sparsity",
            "0.5",
        ];
        args.extend(flag);
        let out = tunekit(&args);
        assert!(out.status.success(), "prune failed: {}", stderr(&out));
        let report = json(&out_dir.join("prune_report.json"));
        let s = report["linear_sparsity"].as_f64().unwrap();
        assert!((s - 0.5).abs() < 0.01, "{dir}: sparsity {s}");
        assert_eq!(
            shapes(&out_dir.join("model.safetensors")),
            shapes(&trained.join("model.safetensors"))
        );
        // Per layer: every encoder matrix is half zeros; embeddings and head untouched.
        let bytes = std::fs::read(out_dir.join("model.safetensors")).unwrap();
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let zeros = |n: &str| {
            let d = st.tensor(n).unwrap();
            let v: Vec<f32> = d
                .data()
                .chunks(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            v.iter().filter(|x| **x == 0.0).count() as f64 / v.len() as f64
        };
        assert_eq!(zeros("classifier.weight"), 0.0);
        assert_eq!(zeros("bert.embeddings.word_embeddings.weight"), 0.0);
        if flag.is_some() {
            let q = zeros("bert.encoder.layer.0.attention.self.query.weight");
            assert!((q - 0.5).abs() < 0.01, "per-layer query sparsity {q}");
        }
    }
}

#[test]
fn structured_pruning_with_recovery_fine_tunes_the_smaller_model() {
    let tmp = tempfile::tempdir().unwrap();
    let trained = trained_tiny(tmp.path(), 2);
    let out_dir = tmp.path().join("pruned");
    let out = tunekit(&[
        "prune",
        "--model",
        trained.to_str().unwrap(),
        "--out",
        out_dir.to_str().unwrap(),
        "--heads",
        "0.25",
        "--recover-epochs",
        "1",
    ]);
    assert!(out.status.success(), "prune failed: {}", stderr(&out));
    let recovered = out_dir.join("recover/model");
    assert_eq!(
        json(&recovered.join("config.json"))["pruned_heads"]["0"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    let s = shapes(&recovered.join("model.safetensors"));
    assert_eq!(
        s["bert.encoder.layer.0.attention.self.key.weight"],
        vec![24, 32]
    );
    let m = json(&out_dir.join("recover/metrics.json"));
    assert!(m["test"]["accuracy"].as_f64().is_some());
    // Bad fractions are rejected with the flag named.
    let out = tunekit(&[
        "prune",
        "--model",
        trained.to_str().unwrap(),
        "--out",
        out_dir.to_str().unwrap(),
        "--heads",
        "1.0",
    ]);
    assert_bad_input(&out, &["--heads", "[0, 1)"]);
}
