//! Fine-tuning strategies that must do what they say, checked on the weights themselves:
//! frozen tensors are byte-identical after training, unfrozen ones change, and layer-wise
//! learning-rate decay scales each layer's update by decay^depth.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use common::*;

/// Tensors of a safetensors file by name (without the `bert.` prefix), as raw bytes.
fn tensors(path: &Path) -> BTreeMap<String, Vec<u8>> {
    let bytes = std::fs::read(path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    st.tensors()
        .into_iter()
        .map(|(n, v)| (n.trim_start_matches("bert.").to_string(), v.data().to_vec()))
        .collect()
}

fn floats(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

fn train(dir: &Path, model: &Path, name: &str, sets: &[&str]) -> std::path::PathBuf {
    let cfg = tiny_config(dir, model, "epochs = 1\nmax_steps = 4");
    let run_name = format!("run.name={name}");
    let mut args = vec!["train", cfg.to_str().unwrap(), "--set", run_name.as_str()];
    for s in sets {
        args.push("--set");
        args.push(s);
    }
    let out = tunekit(&args);
    assert!(out.status.success(), "{name}: {}", stderr(&out));
    dir.join("runs").join(name)
}

#[test]
fn frozen_embeddings_and_layers_stay_byte_identical() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_model(&tmp.path().join("tiny-model"));
    let base = tensors(&model.join("model.safetensors"));
    let run = train(
        tmp.path(),
        &model,
        "freeze",
        &[
            "strategy.freeze_embeddings=true",
            "strategy.freeze_layers=1",
        ],
    );
    let after = tensors(&run.join("model/model.safetensors"));
    let mut frozen_elems = 0usize;
    for (name, before) in &base {
        let now = &after[name];
        let frozen = name.starts_with("embeddings.") || name.starts_with("encoder.layer.0.");
        if frozen {
            assert!(now == before, "{name} must not change");
            frozen_elems += before.len() / 4;
        } else if name.ends_with(".weight") && !name.contains("LayerNorm") {
            assert!(now != before, "{name} must train");
        }
    }
    assert!(after["classifier.weight"] != vec![0u8; after["classifier.weight"].len()]);
    let m = json(&run.join("metrics.json"));
    let total: usize = after.values().map(|b| b.len() / 4).sum();
    assert_eq!(
        m["trainable_parameters"].as_u64().unwrap() as usize,
        total - frozen_elems
    );
}

#[test]
fn linear_probe_trains_only_the_head() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_model(&tmp.path().join("tiny-model"));
    let base = tensors(&model.join("model.safetensors"));
    let run = train(
        tmp.path(),
        &model,
        "probe",
        &["strategy.freeze_encoder=true"],
    );
    let after = tensors(&run.join("model/model.safetensors"));
    for (name, before) in &base {
        if name.starts_with("pooler.") {
            assert!(
                &after[name] != before || name.ends_with("bias"),
                "{name} must train"
            );
        } else {
            assert!(
                &after[name] == before,
                "{name} must not change in a linear probe"
            );
        }
    }
    let m = json(&run.join("metrics.json"));
    assert_eq!(m["trainable_parameters"], 32 * 32 + 32 + 32 * 2 + 2);
}

#[test]
fn linear_probe_on_cached_features_equals_running_the_frozen_encoder() {
    // Without dropout the frozen encoder's output is the same every step, so training the
    // head on features computed once must give the weights the uncached run gives.
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_model(&tmp.path().join("tiny-model"));
    let common = [
        "strategy.freeze_encoder=true",
        "model.hidden_dropout=0.0",
        "model.attention_dropout=0.0",
        "train.max_steps=8",
    ];
    let cached = train(tmp.path(), &model, "cached", &common);
    let mut plain = common.to_vec();
    plain.push("strategy.cache_frozen_features=false");
    let uncached = train(tmp.path(), &model, "uncached", &plain);
    let a = tensors(&cached.join("checkpoints/step-00000008/model.safetensors"));
    let b = tensors(&uncached.join("checkpoints/step-00000008/model.safetensors"));
    let base = tensors(&model.join("model.safetensors"));
    for name in [
        "pooler.dense.weight",
        "classifier.weight",
        "classifier.bias",
    ] {
        let (x, y) = (floats(&a[name]), floats(&b[name]));
        let max = x
            .iter()
            .zip(&y)
            .map(|(p, q)| (p - q).abs())
            .fold(0f32, f32::max);
        assert!(max < 1e-5, "{name}: max |diff| {max}");
        if let Some(before) = base.get(name) {
            assert!(&a[name] != before, "{name} must train");
        }
    }
    // And the cache is what the first run used.
    let cfg = tiny_config(tmp.path(), &model, "epochs = 1\nmax_steps = 2");
    let out = tunekit_env(
        &[
            "train",
            cfg.to_str().unwrap(),
            "--set",
            "strategy.freeze_encoder=true",
        ],
        &[("RUST_LOG", "info")],
    );
    assert!(
        stderr(&out).contains("linear probe: encoder features of 192 examples computed once"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn l1_penalty_adds_lr_times_coefficient_times_sign_to_each_matrix_update() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_model(&tmp.path().join("tiny-model"));
    // One plain SGD step, no clipping: the L1 run's weights differ from the plain run's by
    // exactly −lr · l1 · sign(w) for matrices, and not at all for biases / LayerNorm.
    let common = [
        "train.optimizer=sgd",
        "train.warmup_ratio=0.0",
        "train.max_steps=1",
        "train.learning_rate=0.5",
        "train.weight_decay=0.0",
        "train.max_grad_norm=0.0",
    ];
    let plain = train(tmp.path(), &model, "no-l1", &common);
    let mut with_l1 = common.to_vec();
    with_l1.push("train.l1=0.01");
    let l1 = train(tmp.path(), &model, "l1", &with_l1);
    let base = tensors(&model.join("model.safetensors"));
    let a = tensors(&plain.join("checkpoints/step-00000001/model.safetensors"));
    let b = tensors(&l1.join("checkpoints/step-00000001/model.safetensors"));
    for name in [
        "encoder.layer.0.attention.self.query.weight",
        "pooler.dense.weight",
    ] {
        let (w0, x, y) = (floats(&base[name]), floats(&a[name]), floats(&b[name]));
        for i in 0..w0.len() {
            let expected = -0.5 * 0.01 * w0[i].signum();
            assert!((y[i] - x[i] - expected).abs() < 1e-6, "{name}[{i}]");
        }
    }
    assert_eq!(
        a["encoder.layer.0.attention.self.query.bias"],
        b["encoder.layer.0.attention.self.query.bias"]
    );
}

#[test]
fn focal_loss_trains_from_config() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_model(&tmp.path().join("tiny-model"));
    let ce = train(tmp.path(), &model, "ce", &["train.max_steps=2"]);
    let focal = train(
        tmp.path(),
        &model,
        "focal",
        &[
            "train.max_steps=2",
            "train.loss=focal",
            "train.focal_gamma=2.0",
        ],
    );
    let a = tensors(&ce.join("checkpoints/step-00000002/model.safetensors"));
    let b = tensors(&focal.join("checkpoints/step-00000002/model.safetensors"));
    assert_ne!(
        a["classifier.weight"], b["classifier.weight"],
        "the loss must change the update"
    );
    let cfg = tiny_config(tmp.path(), &model, "max_steps = 1");
    let out = tunekit(&[
        "train",
        cfg.to_str().unwrap(),
        "--set",
        "train.loss=focal",
        "--set",
        "train.label_smoothing=0.1",
    ]);
    assert_bad_input(&out, &["label_smoothing", "focal"]);
}

#[test]
fn layer_lr_decay_scales_updates_by_depth() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_model(&tmp.path().join("tiny-model"));
    let base = tensors(&model.join("model.safetensors"));
    // One plain SGD step without warm-up: the update is lr × factor × gradient, and both runs
    // see the same gradient, so update ratios equal the factors exactly (up to rounding).
    let common = [
        "train.optimizer=sgd",
        "train.warmup_ratio=0.0",
        "train.max_steps=1",
        "train.learning_rate=0.5",
        "train.weight_decay=0.0",
    ];
    let plain = train(tmp.path(), &model, "plain", &common);
    let mut with_decay = common.to_vec();
    with_decay.push("strategy.layer_lr_decay=0.5");
    let decayed = train(tmp.path(), &model, "decayed", &with_decay);
    let (a, b) = (
        tensors(&plain.join("model/model.safetensors")),
        tensors(&decayed.join("model/model.safetensors")),
    );
    let ratio = |name: &str| -> f64 {
        let (x0, xa, xb) = (floats(&base[name]), floats(&a[name]), floats(&b[name]));
        let da: f64 = x0
            .iter()
            .zip(&xa)
            .map(|(p, q)| f64::from(q - p).abs())
            .sum();
        let db: f64 = x0
            .iter()
            .zip(&xb)
            .map(|(p, q)| f64::from(q - p).abs())
            .sum();
        assert!(da > 0.0, "{name} did not move");
        db / da
    };
    // Two layers: layer 1 is depth 1, layer 0 depth 2, embeddings depth 3.
    for (name, want) in [
        ("encoder.layer.1.intermediate.dense.weight", 0.5),
        ("encoder.layer.0.intermediate.dense.weight", 0.25),
        ("embeddings.word_embeddings.weight", 0.125),
    ] {
        let r = ratio(name);
        assert!(
            (r - want).abs() < 1e-3,
            "{name}: update ratio {r}, want {want}"
        );
    }
}

#[test]
fn class_weights_and_label_smoothing_train_from_config() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_model(&tmp.path().join("tiny-model"));
    let run = train(
        tmp.path(),
        &model,
        "weighted",
        &["train.class_weights=balanced", "train.label_smoothing=0.1"],
    );
    assert_eq!(json(&run.join("status.json"))["status"], "complete");
    let bad = tunekit(&[
        "train",
        tiny_config(tmp.path(), &model, "").to_str().unwrap(),
        "--set",
        "train.label_smoothing=1.5",
    ]);
    assert_bad_input(&bad, &["label_smoothing"]);
    let bad = tunekit(&[
        "train",
        tiny_config(tmp.path(), &model, "").to_str().unwrap(),
        "--set",
        "strategy.freeze_layers=9",
    ]);
    assert_bad_input(&bad, &["freeze_layers", "2 layers"]);
}

#[test]
fn sentence_pairs_train_and_predict_from_config() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_model(&tmp.path().join("tiny-model"));
    // Pairs from real MR snippets: the review split into two halves, same polarity label.
    let pairs = |split: &str, n: usize| {
        let src = mr_subset(split, n, tmp.path());
        let text = std::fs::read_to_string(&src).unwrap();
        let mut out = String::from("first\tsecond\tlabel\n");
        for line in text.lines().skip(1) {
            let (t, label) = line.rsplit_once('\t').unwrap();
            let words: Vec<&str> = t.split(' ').collect();
            let (a, b) = words.split_at(words.len() / 2);
            out.push_str(&format!("{}\t{}\t{label}\n", a.join(" "), b.join(" ")));
        }
        let path = tmp.path().join(format!("{split}-pairs.tsv"));
        std::fs::write(&path, out.replace('"', "")).unwrap();
        path
    };
    let (train, val) = (pairs("train", 64), pairs("validation", 16));
    let cfg = tmp.path().join("pairs.toml");
    std::fs::write(
        &cfg,
        format!(
            "[model]\npath = {model:?}\nmax_length = 64\n[data]\ntrain = {train:?}\nvalidation = {val:?}\ntext_column = \"first\"\ntext_pair_column = \"second\"\n[train]\nepochs = 1\nbatch_size = 16\nlearning_rate = 1e-3\n[run]\nname = \"pairs\"\ndir = {:?}\n",
            tmp.path().join("runs")
        ),
    )
    .unwrap();
    let out = tunekit(&["train", cfg.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let exported = tmp.path().join("runs/pairs/model");
    let preds = tmp.path().join("pairs.jsonl");
    let out = tunekit(&[
        "predict",
        "--model",
        exported.to_str().unwrap(),
        "--input",
        val.to_str().unwrap(),
        "--output",
        preds.to_str().unwrap(),
        "--text-column",
        "first",
        "--text-pair-column",
        "second",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(std::fs::read_to_string(&preds).unwrap().lines().count(), 16);
    // A missing pair column is named.
    let out = tunekit(&[
        "predict",
        "--model",
        exported.to_str().unwrap(),
        "--input",
        val.to_str().unwrap(),
        "--output",
        preds.to_str().unwrap(),
        "--text-column",
        "first",
        "--text-pair-column",
        "third",
    ]);
    assert_bad_input(&out, &["third", "pairs.tsv"]);
}

#[test]
fn gradual_unfreezing_opens_one_layer_per_epoch() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_model(&tmp.path().join("tiny-model"));
    let base = tensors(&model.join("model.safetensors"));
    // 12 steps per epoch: stop after epoch 1 (head only) and after epoch 2 (+ top layer).
    // The last checkpoint holds the last weights (model/ holds the best on validation).
    let changed = |run: &Path, step: usize| -> Vec<String> {
        let after = tensors(&run.join(format!("checkpoints/step-{step:08}/model.safetensors")));
        base.iter()
            .filter(|(n, b)| {
                &after[n.as_str()] != *b && n.ends_with("weight") && !n.contains("LayerNorm")
            })
            .map(|(n, _)| n.clone())
            .collect()
    };
    let one = train(
        tmp.path(),
        &model,
        "gradual1",
        &[
            "strategy.gradual_unfreeze=true",
            "train.epochs=3",
            "train.max_steps=12",
        ],
    );
    let c1 = changed(&one, 12);
    assert!(
        c1.iter().all(|n| n.starts_with("pooler.")),
        "epoch 1 trains the head only: {c1:?}"
    );
    assert!(!c1.is_empty());
    let two = train(
        tmp.path(),
        &model,
        "gradual2",
        &[
            "strategy.gradual_unfreeze=true",
            "train.epochs=3",
            "train.max_steps=24",
        ],
    );
    let c2 = changed(&two, 24);
    assert!(
        c2.iter().any(|n| n.starts_with("encoder.layer.1.")),
        "{c2:?}"
    );
    assert!(
        !c2.iter()
            .any(|n| n.starts_with("encoder.layer.0.") || n.starts_with("embeddings.")),
        "{c2:?}"
    );
    // Per N steps: 4 steps head only, then 4 steps with the top layer open.
    let steps = train(
        tmp.path(),
        &model,
        "gradual_steps",
        &[
            "strategy.gradual_unfreeze=true",
            "strategy.unfreeze_every_steps=4",
            "train.max_steps=8",
        ],
    );
    let c3 = changed(&steps, 8);
    assert!(
        c3.iter().any(|n| n.starts_with("encoder.layer.1.")),
        "{c3:?}"
    );
    assert!(
        !c3.iter()
            .any(|n| n.starts_with("encoder.layer.0.") || n.starts_with("embeddings.")),
        "{c3:?}"
    );
}

/// Tensors of a safetensors file as f32 by name, with shapes.
fn f32_tensors(path: &Path) -> BTreeMap<String, (Vec<usize>, Vec<f32>)> {
    let bytes = std::fs::read(path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    st.tensors()
        .into_iter()
        .map(|(n, v)| (n.to_string(), (v.shape().to_vec(), floats(v.data()))))
        .collect()
}

#[test]
fn lora_trains_adapters_and_head_only_and_merged_predicts_like_unmerged() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_model(&tmp.path().join("tiny-model"));
    let run = train(
        tmp.path(),
        &model,
        "lora",
        &[
            "strategy.lora.rank=4",
            "strategy.lora.alpha=8",
            "train.max_steps=6",
        ],
    );
    let exported = run.join("model");
    assert!(
        !exported.join("model.safetensors").exists(),
        "adapter-only export"
    );
    let cfg = json(&exported.join("adapter_config.json"));
    assert_eq!(cfg["peft_type"], "LORA");
    assert_eq!(cfg["r"], 4);
    assert_eq!(cfg["target_modules"], serde_json::json!(["query", "value"]));
    let adapter = f32_tensors(&exported.join("adapter_model.safetensors"));
    let names: Vec<&str> = adapter.keys().map(String::as_str).collect();
    assert_eq!(adapter.len(), 2 * 2 * 2 + 4, "{names:?}");
    let b = &adapter["base_model.model.bert.encoder.layer.1.attention.self.value.lora_B.weight"];
    assert_eq!(b.0, [32, 4]);
    assert!(
        b.1.iter().any(|v| *v != 0.0),
        "B starts at 0 and must train"
    );
    let a = &adapter["base_model.model.bert.encoder.layer.0.attention.self.query.lora_A.weight"];
    assert_eq!(a.0, [4, 32]);
    let m = json(&run.join("metrics.json"));
    let head = 32 * 32 + 32 + 32 * 2 + 2;
    assert_eq!(m["trainable_parameters"], 2 * 2 * (4 * 32 + 4 * 32) + head);
    let adapter_size = std::fs::metadata(exported.join("adapter_model.safetensors"))
        .unwrap()
        .len();
    let base_size = std::fs::metadata(model.join("model.safetensors"))
        .unwrap()
        .len();
    assert!(
        adapter_size * 20 < base_size,
        "{adapter_size} vs {base_size}"
    );

    // Merge: base + (alpha / r) · A·B in the targets, every other base tensor untouched.
    let merged = tmp.path().join("merged");
    let out = tunekit(&[
        "merge",
        "--model",
        exported.to_str().unwrap(),
        "--out",
        merged.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let base = tensors(&model.join("model.safetensors"));
    let after = tensors(&merged.join("model.safetensors"));
    for (name, before) in &base {
        let target = name.ends_with("query.weight") || name.ends_with("value.weight");
        if name.starts_with("pooler.") {
            continue;
        }
        assert_eq!(&after[name] == before, !target, "{name}");
    }
    // W' = W + 2 · B·A (HF layout [out, in]), checked on one element.
    let w0 = floats(&base["encoder.layer.1.attention.self.value.weight"]);
    let w1 = floats(&after["encoder.layer.1.attention.self.value.weight"]);
    let a1 = &adapter["base_model.model.bert.encoder.layer.1.attention.self.value.lora_A.weight"].1;
    let (o, i) = (5usize, 7usize);
    let delta: f32 = (0..4).map(|k| b.1[o * 4 + k] * a1[k * 32 + i]).sum::<f32>() * 2.0;
    assert!((w1[o * 32 + i] - w0[o * 32 + i] - delta).abs() < 1e-5);

    // Unmerged (adapter directory) and merged predictions agree.
    let input = tmp.path().join("validation.tsv");
    let predict = |dir: &Path, out: &Path| {
        let o = tunekit(&[
            "predict",
            "--model",
            dir.to_str().unwrap(),
            "--input",
            input.to_str().unwrap(),
            "--output",
            out.to_str().unwrap(),
        ]);
        assert!(o.status.success(), "{}", stderr(&o));
        std::fs::read_to_string(out)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .collect::<Vec<_>>()
    };
    let p1 = predict(&exported, &tmp.path().join("p1.jsonl"));
    let p2 = predict(&merged, &tmp.path().join("p2.jsonl"));
    assert_eq!(p1.len(), 48);
    for (x, y) in p1.iter().zip(&p2) {
        assert_eq!(x["label"], y["label"]);
        let (sx, sy) = (x["score"].as_f64().unwrap(), y["score"].as_f64().unwrap());
        assert!((sx - sy).abs() < 1e-5, "{sx} vs {sy}");
    }
    // A plain model is not an adapter.
    let out = tunekit(&[
        "merge",
        "--model",
        merged.to_str().unwrap(),
        "--out",
        tmp.path().join("x").to_str().unwrap(),
    ]);
    assert_bad_input(&out, &["not a LoRA adapter directory"]);
}

#[test]
fn lora_resumes_after_kill_with_identical_adapters() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_model(&tmp.path().join("tiny-model"));
    let cfg = tiny_config(
        tmp.path(),
        &model,
        "epochs = 5\ncheckpoint_every_steps = 2\neval_every_steps = 5\n[strategy.lora]\nrank = 2",
    );
    let cfg_s = cfg.to_str().unwrap();
    let full = tmp.path().join("full");
    let out = tunekit(&["train", cfg_s, "--run-dir", full.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let killed = tmp.path().join("killed");
    let at = train_and_kill(&["train", cfg_s], &killed, 7);
    assert!(at < 60);
    let out = tunekit(&[
        "train",
        cfg_s,
        "--run-dir",
        killed.to_str().unwrap(),
        "--resume",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let a = std::fs::read(full.join("model/adapter_model.safetensors")).unwrap();
    let b = std::fs::read(killed.join("model/adapter_model.safetensors")).unwrap();
    assert!(a == b, "resumed adapters must be bit-identical");
}

#[test]
fn lora_dropout_changes_the_adapters_not_the_base_and_is_recorded_for_peft() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_model(&tmp.path().join("tiny-model"));
    let common = [
        "strategy.lora.rank=4",
        "train.max_steps=4",
        // Hidden dropout off: any difference comes from the adapters' input dropout.
        "model.hidden_dropout=0.0",
        "model.attention_dropout=0.0",
    ];
    let mut with = common.to_vec();
    with.push("strategy.lora.dropout=0.3");
    let plain = train(tmp.path(), &model, "lora-plain", &common);
    let dropped = train(tmp.path(), &model, "lora-dropout", &with);
    let cfg = json(&dropped.join("model/adapter_config.json"));
    assert_eq!(cfg["lora_dropout"], 0.3);
    let a = f32_tensors(&plain.join("model/adapter_model.safetensors"));
    let b = f32_tensors(&dropped.join("model/adapter_model.safetensors"));
    let name = "base_model.model.bert.encoder.layer.1.attention.self.value.lora_B.weight";
    assert!(
        a[name].1 != b[name].1,
        "lora dropout must change the adapter updates"
    );
    // Same seed and no dropout: the plain run is reproducible, so the difference is real.
    let again = train(tmp.path(), &model, "lora-plain-2", &common);
    let c = f32_tensors(&again.join("model/adapter_model.safetensors"));
    assert!(a[name].1 == c[name].1);
}

#[test]
fn lora_rejects_what_it_cannot_do() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_model(&tmp.path().join("tiny-model"));
    let cfg = tiny_config(tmp.path(), &model, "max_steps = 1");
    let run = |sets: &[&str]| {
        let mut args = vec!["train", cfg.to_str().unwrap()];
        for s in sets {
            args.extend(["--set", s]);
        }
        tunekit(&args)
    };
    assert_bad_input(
        &run(&["strategy.lora.dropout=1.0"]),
        &["strategy.lora.dropout"],
    );
    assert_bad_input(&run(&["strategy.lora.rank=0"]), &["strategy.lora.rank"]);
    assert_bad_input(
        &run(&["strategy.lora.rank=2", "strategy.freeze_layers=1"]),
        &["strategy.lora"],
    );
    assert_bad_input(
        &run(&["strategy.lora.targets=[\"ffn\"]"]),
        &["strategy.lora.targets"],
    );
}
