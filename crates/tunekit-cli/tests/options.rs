//! Training options that must do what they say: every optimiser and schedule updates the
//! model, early stopping stops, truncation is counted, dropout is off at inference, and models
//! resolve from a local Hugging Face cache.

mod common;

use common::*;

fn weights(path: &std::path::Path) -> Vec<f32> {
    let bytes = std::fs::read(path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    st.tensor("bert.encoder.layer.0.attention.self.query.weight")
        .unwrap()
        .data()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

#[test]
fn every_optimizer_and_schedule_trains() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_model(&tmp.path().join("tiny-model"));
    let cfg = tiny_config(tmp.path(), &model, "epochs = 1\nmax_steps = 3");
    let base = {
        let bytes = std::fs::read(model.join("model.safetensors")).unwrap();
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        st.tensor("encoder.layer.0.attention.self.query.weight")
            .unwrap()
            .data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect::<Vec<f32>>()
    };
    for (name, sets) in [
        (
            "adamw-cosine",
            vec!["train.optimizer=adamw", "train.scheduler=cosine"],
        ),
        (
            "adam-constant",
            vec!["train.optimizer=adam", "train.scheduler=constant"],
        ),
        (
            "sgd-nesterov",
            vec![
                "train.optimizer=sgd",
                "train.momentum=0.9",
                "train.nesterov=true",
                "train.learning_rate=0.5",
            ],
        ),
        (
            "rmsprop",
            vec!["train.optimizer=rmsprop", "train.momentum=0.5"],
        ),
    ] {
        let run_name = format!("run.name={name}");
        let mut args = vec!["train", cfg.to_str().unwrap(), "--set", run_name.as_str()];
        for s in &sets {
            args.push("--set");
            args.push(s);
        }
        let out = tunekit(&args);
        assert!(out.status.success(), "{name}: {}", stderr(&out));
        let run = tmp.path().join("runs").join(name);
        let w = weights(&run.join("model/model.safetensors"));
        // HF stores [out, in]; the tiny model file stores the same layout.
        let moved = w
            .iter()
            .zip(&base)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        assert!(
            moved > 1e-6,
            "{name}: weights did not change (max move {moved})"
        );
        assert_eq!(json(&run.join("metrics.json"))["steps"], 3, "{name}");
    }
}

#[test]
fn early_stopping_stops_and_exports_the_best_step() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_model(&tmp.path().join("tiny-model"));
    // A learning rate this small leaves the validation metric unchanged: no improvement.
    let cfg = tiny_config(
        tmp.path(),
        &model,
        "epochs = 10\nearly_stopping_patience = 2",
    );
    let out = tunekit(&[
        "train",
        cfg.to_str().unwrap(),
        "--set",
        "train.learning_rate=1e-12",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let run = tmp.path().join("runs/tiny");
    let m = json(&run.join("metrics.json"));
    assert_eq!(m["stopped_early"], true);
    assert_eq!(m["best_step"], 12, "the first evaluation stays the best");
    assert_eq!(
        m["steps"], 36,
        "stopped after 2 evaluations without improvement"
    );
    let lines = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    assert_eq!(lines.lines().count(), 3);
}

#[test]
fn truncation_is_counted_per_split() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_model(&tmp.path().join("tiny-model"));
    let cfg = tiny_config(tmp.path(), &model, "epochs = 1\nmax_steps = 1");
    let out = tunekit(&[
        "train",
        cfg.to_str().unwrap(),
        "--set",
        "model.max_length=12",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let report = json(&tmp.path().join("runs/tiny/data_report.json"));
    for split in report["splits"].as_array().unwrap() {
        let truncated = split["tokens"]["truncated"].as_u64().unwrap();
        assert!(
            truncated > 0 && truncated < split["examples"].as_u64().unwrap(),
            "{split}"
        );
        assert_eq!(split["tokens"]["max_length"], 12);
    }
}

#[test]
fn models_resolve_from_a_local_hf_cache() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("hub");
    let snap = cache.join("models--acme--tiny-bert/snapshots/0123abcd");
    tiny_model(&snap);
    std::fs::create_dir_all(cache.join("models--acme--tiny-bert/refs")).unwrap();
    std::fs::write(cache.join("models--acme--tiny-bert/refs/main"), "0123abcd").unwrap();
    let out = tunekit_env(
        &["models", "inspect", "acme/tiny-bert", "--json"],
        &[("HF_HUB_CACHE", cache.to_str().unwrap())],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(v["layers"], 2);
    assert_eq!(v["hidden_size"], 32);
    assert!(v["dir"].as_str().unwrap().ends_with("0123abcd"));
    // HF_HOME/hub is the next place looked at.
    let out = tunekit_env(
        &["models", "inspect", "acme/tiny-bert"],
        &[("HF_HOME", tmp.path().to_str().unwrap())],
    );
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn models_inspect_reports_the_real_model() {
    let out = tunekit(&["models", "inspect", minilm().to_str().unwrap(), "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(v["parameters"], 22_713_216);
    assert_eq!(v["layers"], 6);
    assert_eq!(v["vocab_size"], 30522);
    assert_eq!(v["max_length"], 512);
    let gib = v["train_memory_bytes"].as_f64().unwrap() / (1u64 << 30) as f64;
    assert!(gib > 0.3 && gib < 4.0, "memory estimate {gib} GiB");
}
