//! End-to-end training on a tiny real BERT: run directory contents, eval/predict on the
//! exported model, gradient accumulation ≡ larger batch, and resume after `kill -9`.

mod common;

use std::path::Path;

use common::*;

/// Metrics without the wall-clock fields, for exact comparison across runs.
fn comparable(mut v: serde_json::Value) -> serde_json::Value {
    if let Some(o) = v.as_object_mut() {
        o.remove("train_time_s");
        o.remove("train_examples_per_s");
        o.remove("elapsed_s");
    }
    v
}

fn history(run: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| comparable(serde_json::from_str(l).unwrap()))
        .collect()
}

#[test]
fn train_writes_a_complete_run_that_eval_and_predict_reload() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_model(&tmp.path().join("tiny-model"));
    let cfg = tiny_config(tmp.path(), &model, "");
    let out = tunekit(&["train", cfg.to_str().unwrap(), "--set", "train.epochs=2"]);
    assert!(out.status.success(), "train failed: {}", stderr(&out));
    let run = tmp.path().join("runs/tiny");

    assert_eq!(json(&run.join("status.json"))["status"], "complete");
    assert!(run.join("config.toml").is_file());
    let report = json(&run.join("data_report.json"));
    assert_eq!(report["splits"][0]["split"], "train");
    assert_eq!(report["splits"][0]["examples"], 192);
    assert!(run.join("data_report.txt").is_file());

    // One evaluation per epoch, in metrics.jsonl.
    assert_eq!(history(&run).len(), 2);

    let metrics = json(&run.join("metrics.json"));
    assert_eq!(
        metrics["labels"],
        serde_json::json!(["negative", "positive"])
    );
    let test = &metrics["test"];
    let cm = test["confusion_matrix"].as_array().unwrap();
    let total: u64 = cm
        .iter()
        .flat_map(|r| r.as_array().unwrap())
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert_eq!(total, 48, "confusion matrix covers every test example");
    assert_eq!(test["per_class"].as_array().unwrap().len(), 2);

    // The exported model is HF layout with the label map.
    let exported = run.join("model");
    let config = json(&exported.join("config.json"));
    assert_eq!(config["id2label"]["0"], "negative");
    assert_eq!(config["label2id"]["positive"], 1);
    assert_eq!(config["architectures"][0], "BertForSequenceClassification");
    let bytes = std::fs::read(exported.join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    assert_eq!(st.tensor("classifier.weight").unwrap().shape(), &[2, 32]);
    assert_eq!(
        st.tensor("bert.pooler.dense.weight").unwrap().shape(),
        &[32, 32]
    );
    assert!(exported.join("tokenizer.json").is_file());

    // eval on the exported model reproduces the run's test metrics.
    let test_file = tmp.path().join("test.tsv");
    let out = tunekit(&[
        "eval",
        "--model",
        exported.to_str().unwrap(),
        "--data",
        test_file.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "eval failed: {}", stderr(&out));
    let eval: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(eval["metrics"]["accuracy"], test["accuracy"]);
    assert_eq!(
        eval["metrics"]["confusion_matrix"],
        test["confusion_matrix"]
    );

    // predict streams one JSON line per row, with probabilities summing to 1.
    let preds = tmp.path().join("preds.jsonl");
    let out = tunekit(&[
        "predict",
        "--model",
        exported.to_str().unwrap(),
        "--input",
        test_file.to_str().unwrap(),
        "--output",
        preds.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "predict failed: {}", stderr(&out));
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&preds)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 48);
    for l in &lines {
        let p = l["probabilities"].as_object().unwrap();
        let sum: f64 = p.values().map(|v| v.as_f64().unwrap()).sum();
        assert!((sum - 1.0).abs() < 1e-4, "{l}");
        assert!(p.contains_key(l["label"].as_str().unwrap()));
    }
    let correct = lines
        .iter()
        .zip(std::fs::read_to_string(&test_file).unwrap().lines().skip(1))
        .filter(|(p, row)| row.ends_with(&format!("\t{}", p["label"].as_str().unwrap())))
        .count();
    let acc = correct as f64 / 48.0;
    assert!(
        (acc - test["accuracy"].as_f64().unwrap()).abs() < 1e-9,
        "predict agrees with metrics.json"
    );

    // A second run into the same directory is refused instead of overwriting it.
    let again = tunekit(&["train", cfg.to_str().unwrap()]);
    assert_bad_input(&again, &["already holds a complete run", "--resume"]);
}

#[test]
fn gradient_accumulation_equals_the_larger_batch() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_model(&tmp.path().join("tiny-model"));
    // No dropout and no length grouping, so 2 × 8 accumulated = 1 × 16 exactly in data order.
    let common = "length_bucketing = false\nepochs = 1\nmax_steps = 6\n";
    let cfg_a = tiny_config(tmp.path(), &model, common);
    let run = |name: &str, extra: &[&str]| {
        let name_set = format!("run.name={name}");
        let mut args = vec![
            "train",
            cfg_a.to_str().unwrap(),
            "--set",
            "model.hidden_dropout=0.0",
            "--set",
            "model.attention_dropout=0.0",
            "--set",
            name_set.as_str(),
        ];
        for e in extra {
            args.push("--set");
            args.push(e);
        }
        let out = tunekit(&args);
        assert!(out.status.success(), "{name}: {}", stderr(&out));
        tmp.path().join("runs").join(name)
    };
    let big = run("big", &["train.batch_size=16"]);
    let acc = run(
        "acc",
        &["train.batch_size=8", "train.gradient_accumulation=2"],
    );
    let load = |dir: &Path| std::fs::read(dir.join("best/model.safetensors")).unwrap();
    let (a, b) = (load(&big), load(&acc));
    let (a, b) = (
        safetensors::SafeTensors::deserialize(&a).unwrap(),
        safetensors::SafeTensors::deserialize(&b).unwrap(),
    );
    let mut max_diff = 0f32;
    let mut moved = 0f32;
    let base_bytes = std::fs::read(model.join("model.safetensors")).unwrap();
    let base = safetensors::SafeTensors::deserialize(&base_bytes).unwrap();
    for (name, ta) in a.tensors() {
        let tb = b.tensor(&name).unwrap();
        let fa: Vec<f32> = ta
            .data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        let fb: Vec<f32> = tb
            .data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        for (x, y) in fa.iter().zip(&fb) {
            max_diff = max_diff.max((x - y).abs());
        }
        if let Ok(t0) = base.tensor(name.trim_start_matches("bert.")) {
            let f0: Vec<f32> = t0
                .data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                .collect();
            for (x, y) in fa.iter().zip(&f0) {
                moved = moved.max((x - y).abs());
            }
        }
    }
    // Six AdamW steps moved weights by ~1e-3·6; the two routes agree to float rounding.
    assert!(
        moved > 1e-3,
        "training must change the weights (moved {moved})"
    );
    assert!(
        max_diff < 2e-5,
        "accumulated vs large batch differ by {max_diff}"
    );
    let la = json(&big.join("metrics.json"));
    let lb = json(&acc.join("metrics.json"));
    assert_eq!(la["steps"], 6);
    assert_eq!(lb["steps"], 6);
    let va = la["validation"]["loss"].as_f64().unwrap();
    let vb = lb["validation"]["loss"].as_f64().unwrap();
    assert!((va - vb).abs() < 1e-4, "validation loss {va} vs {vb}");
}

#[test]
fn resume_after_kill_reaches_the_same_result() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_model(&tmp.path().join("tiny-model"));
    let cfg = tiny_config(
        tmp.path(),
        &model,
        "epochs = 5\ncheckpoint_every_steps = 2\neval_every_steps = 5\n",
    );
    let cfg_s = cfg.to_str().unwrap();

    let full_dir = tmp.path().join("full");
    let out = tunekit(&["train", cfg_s, "--run-dir", full_dir.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));

    // Start the same run, kill -9 it once a mid-run checkpoint exists, then resume.
    let killed_dir = tmp.path().join("killed");
    let killed_at = train_and_kill(&["train", cfg_s], &killed_dir, 7);
    assert_eq!(
        json(&killed_dir.join("status.json"))["status"],
        "running",
        "a killed run is not complete"
    );
    assert!(!killed_dir.join("metrics.json").exists());

    assert!(killed_at < 60, "killed mid-run, at step {killed_at}");
    let out = tunekit_env(
        &[
            "train",
            cfg_s,
            "--run-dir",
            killed_dir.to_str().unwrap(),
            "--resume",
        ],
        &[("RUST_LOG", "info")],
    );
    assert!(out.status.success(), "resume failed: {}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!("(step {killed_at},")),
        "must continue from the checkpoint at step {killed_at}: {}",
        stderr(&out)
    );
    assert_eq!(json(&killed_dir.join("status.json"))["status"], "complete");

    assert_eq!(
        comparable(json(&full_dir.join("metrics.json"))),
        comparable(json(&killed_dir.join("metrics.json")))
    );
    assert_eq!(history(&full_dir), history(&killed_dir));
    let a = std::fs::read(full_dir.join("model/model.safetensors")).unwrap();
    let b = std::fs::read(killed_dir.join("model/model.safetensors")).unwrap();
    assert!(a == b, "resumed model weights must be bit-identical");

    // Resuming with a different config is refused.
    let out = tunekit(&[
        "train",
        cfg_s,
        "--run-dir",
        killed_dir.to_str().unwrap(),
        "--resume",
        "--set",
        "train.seed=4",
    ]);
    assert_bad_input(&out, &["differs"]);
}

/// `train.precision = "bf16"` trains through the bf16 products: the run completes, says so,
/// and its weights differ from the f32 run's by bf16 rounding only (same seed, no dropout).
#[test]
fn bf16_precision_trains_close_to_f32_and_is_reported() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_model(&tmp.path().join("tiny-model"));
    let cfg = tiny_config(
        tmp.path(),
        &model,
        "length_bucketing = false\nepochs = 1\nmax_steps = 6\n",
    );
    let run = |name: &str, precision: &str| {
        let (name_set, precision_set) = (
            format!("run.name={name}"),
            format!("train.precision={precision}"),
        );
        let out = tunekit_env(
            &[
                "train",
                cfg.to_str().unwrap(),
                "--set",
                "model.hidden_dropout=0.0",
                "--set",
                "model.attention_dropout=0.0",
                "--set",
                name_set.as_str(),
                "--set",
                precision_set.as_str(),
            ],
            &[("RUST_LOG", "info")],
        );
        assert!(out.status.success(), "{name}: {}", stderr(&out));
        (tmp.path().join("runs").join(name), stderr(&out))
    };
    let (f32_run, _) = run("f32", "f32");
    let (bf16_run, log) = run("bf16", "bf16");
    assert!(
        log.contains("bf16"),
        "the log must say the products are bf16: {log}"
    );
    let load = |dir: &Path| std::fs::read(dir.join("best/model.safetensors")).unwrap();
    let (a, b) = (load(&f32_run), load(&bf16_run));
    let (a, b) = (
        safetensors::SafeTensors::deserialize(&a).unwrap(),
        safetensors::SafeTensors::deserialize(&b).unwrap(),
    );
    let floats = |t: safetensors::tensor::TensorView<'_>| -> Vec<f32> {
        t.data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect()
    };
    let base_bytes = std::fs::read(model.join("model.safetensors")).unwrap();
    let base = safetensors::SafeTensors::deserialize(&base_bytes).unwrap();
    // Mean |bf16 − f32| against mean |f32 − pretrained| over the encoder's weights.
    let (mut diff, mut moved, mut n) = (0f64, 0f64, 0usize);
    for (name, ta) in a.tensors() {
        let tb = b.tensor(&name).unwrap();
        assert_eq!(
            tb.dtype(),
            safetensors::Dtype::F32,
            "{name}: saved weights stay f32"
        );
        let Ok(t0) = base.tensor(name.trim_start_matches("bert.")) else {
            continue; // the new head
        };
        let (fa, fb, f0) = (floats(ta), floats(tb), floats(t0));
        for ((x, y), z) in fa.iter().zip(&fb).zip(&f0) {
            diff += f64::from((x - y).abs());
            moved += f64::from((x - z).abs());
            n += 1;
        }
    }
    let (diff, moved) = (diff / n as f64, moved / n as f64);
    eprintln!("mean |bf16 - f32| {diff:e}, mean |f32 - pretrained| {moved:e}");
    assert!(diff > 0.0, "bf16 run equals the f32 run bit for bit");
    // bf16 rounding perturbs the gradients slightly: the two runs take nearly the same steps.
    assert!(
        diff < 0.1 * moved,
        "bf16 vs f32: {diff:e} against a training move of {moved:e}"
    );
    let la = json(&f32_run.join("metrics.json"))["validation"]["loss"]
        .as_f64()
        .unwrap();
    let lb = json(&bf16_run.join("metrics.json"))["validation"]["loss"]
        .as_f64()
        .unwrap();
    assert!(
        (la - lb).abs() < 0.05 * la.abs().max(1e-3),
        "validation loss {la} vs {lb}"
    );
}

/// `predict` and `eval` with `--precision bf16` run the f32 model's linear layers with bf16
/// operands: the same labels as f32 and probabilities within bf16 rounding, not identical;
/// an unknown precision is a clear error.
#[test]
fn bf16_inference_predicts_like_f32_within_rounding() {
    let tmp = tempfile::tempdir().unwrap();
    let model = trained_tiny(tmp.path(), 2);
    let input = tmp.path().join("validation.tsv");
    let f32_rows = predict_rows(&model, &input, &tmp.path().join("p32.jsonl"));
    let out = tmp.path().join("p16.jsonl");
    let o = tunekit(&[
        "predict",
        "--model",
        model.to_str().unwrap(),
        "--input",
        input.to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
        "--precision",
        "bf16",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let bf16_rows = read_jsonl(&out);
    assert_eq!(bf16_rows.len(), f32_rows.len());
    let same = f32_rows
        .iter()
        .zip(&bf16_rows)
        .filter(|(a, b)| a["label"] == b["label"])
        .count();
    assert!(
        same + 1 >= f32_rows.len(),
        "{same} of {} labels agree",
        f32_rows.len()
    );
    let diffs: Vec<f64> = f32_rows
        .iter()
        .zip(&bf16_rows)
        .map(|(a, b)| (a["score"].as_f64().unwrap() - b["score"].as_f64().unwrap()).abs())
        .collect();
    let worst = diffs.iter().copied().fold(0.0, f64::max);
    assert!(worst < 0.02, "largest probability change {worst}");
    assert!(worst > 0.0, "bf16 gave the f32 probabilities bit for bit");

    let o = tunekit(&[
        "eval",
        "--model",
        model.to_str().unwrap(),
        "--data",
        input.to_str().unwrap(),
        "--precision",
        "bf16",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(report["metrics"]["accuracy"].as_f64().is_some(), "{report}");

    let o = tunekit(&[
        "eval",
        "--model",
        model.to_str().unwrap(),
        "--data",
        input.to_str().unwrap(),
        "--precision",
        "fp8",
    ]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("fp8"), "{}", stderr(&o));
}
