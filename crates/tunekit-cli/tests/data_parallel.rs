//! Data-parallel training (`train.devices` / `--devices`) on two CPU devices: the code path
//! several GPUs take (a micro-batch split into one shard per device, gradients gathered onto
//! the first device, burn-train's `multi` strategy), checked to give the update one device
//! gives on the same global batch; and the device lists it refuses.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use common::*;

fn tensors(path: &Path) -> BTreeMap<String, Vec<f32>> {
    let bytes = std::fs::read(path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    st.tensors()
        .into_iter()
        .map(|(n, v)| {
            let f = v
                .data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                .collect();
            (n, f)
        })
        .collect()
}

/// Train the tiny config for 5 steps, dropout off, batches of 15 (two devices: shards of 8
/// and 7; three: 5 each).
fn train(dir: &Path, model: &Path, name: &str, extra: &[&str]) -> (std::path::PathBuf, String) {
    let cfg = tiny_config(dir, model, "epochs = 1\nmax_steps = 5");
    let run_name = format!("run.name={name}");
    let mut args = vec![
        "train",
        cfg.to_str().unwrap(),
        "--set",
        &run_name,
        "--set",
        "model.hidden_dropout=0.0",
        "--set",
        "model.attention_dropout=0.0",
        "--set",
        "train.batch_size=15",
    ];
    args.extend_from_slice(extra);
    let out = tunekit_env(&args, &[("RUST_LOG", "info")]);
    assert!(out.status.success(), "{name}: {}", stderr(&out));
    (dir.join("runs").join(name), stderr(&out))
}

#[test]
fn two_cpu_devices_give_the_one_device_update() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_model(&tmp.path().join("tiny-model"));
    let (one, _) = train(tmp.path(), &model, "one", &[]);
    let (two, log) = train(tmp.path(), &model, "two", &["--devices", "cpu,cpu"]);
    assert!(
        log.contains("data-parallel over 2 devices"),
        "the run must say it is data-parallel: {log}"
    );
    // The same config key, from the file instead of the flag.
    let (three, _) = train(
        tmp.path(),
        &model,
        "three",
        &["--set", "train.devices=[\"cpu\", \"cpu\", \"cpu\"]"],
    );

    let base = tensors(&model.join("model.safetensors"));
    let a = tensors(&one.join("model/model.safetensors"));
    for run in [&two, &three] {
        let b = tensors(&run.join("model/model.safetensors"));
        assert_eq!(a.len(), b.len());
        let mut moved = 0.0f32;
        for (name, x) in &a {
            let y = &b[name];
            let worst = x.iter().zip(y).fold(0f32, |m, (p, q)| m.max((p - q).abs()));
            // Shards sum their gradients in another order: float rounding (~1e-7 relative),
            // which Adam's normalised update keeps at that scale after 5 steps.
            assert!(
                worst < 2e-5,
                "{name}: max difference {worst} between 1 device and {run:?}"
            );
            // The base file names the encoder without the exported `bert.` prefix.
            if let Some(b0) = base.get(name.trim_start_matches("bert.")) {
                moved = moved.max(
                    x.iter()
                        .zip(b0)
                        .fold(0f32, |m, (p, q)| m.max((p - q).abs())),
                );
            }
        }
        assert!(
            moved > 1e-3,
            "training moved the weights ({moved}): the comparison means something"
        );
        let (ma, mb) = (
            json(&one.join("metrics.json")),
            json(&run.join("metrics.json")),
        );
        let loss = |m: &serde_json::Value| m["validation"]["loss"].as_f64().unwrap();
        assert!(
            (loss(&ma) - loss(&mb)).abs() < 1e-5,
            "validation loss {} vs {}",
            loss(&ma),
            loss(&mb)
        );
        assert_eq!(
            mb["steps"], ma["steps"],
            "the same number of optimiser steps"
        );
    }
}

#[test]
fn device_lists_that_cannot_work_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_model(&tmp.path().join("tiny-model"));
    let cfg = tiny_config(tmp.path(), &model, "epochs = 1");
    let cfg = cfg.to_str().unwrap();
    let o = tunekit(&["train", cfg, "--devices", "cpu,tpu"]);
    assert_bad_input(&o, &["--devices", "tpu"]);
    let o = tunekit(&["train", cfg, "--devices", "cpu,cuda:0"]);
    assert_bad_input(&o, &["different backends"]);
    let o = tunekit(&["train", cfg, "--devices", "cuda:1,cuda:1"]);
    assert_bad_input(&o, &["cuda:1", "twice"]);
    let o = tunekit(&["train", cfg, "--set", "train.devices=[\"vulkan:2\"]"]);
    assert_bad_input(&o, &["train.devices", "only cuda takes an index"]);
    // A build without CUDA names the feature instead of running on the CPU.
    if !cfg!(feature = "cuda") {
        let o = tunekit(&["train", cfg, "--devices", "cuda:0,cuda:1"]);
        assert_bad_input(&o, &["--features cuda"]);
    }
    // An explicit --device must be where the run lives (the first of train.devices).
    let o = tunekit(&[
        "--device",
        "cpu",
        "train",
        cfg,
        "--set",
        "train.devices=[\"wgpu\"]",
    ]);
    assert_bad_input(&o, &["train.devices", "wgpu"]);
    // DP-SGD's per-example path runs on one device.
    let o = tunekit(&[
        "train",
        cfg,
        "--devices",
        "cpu,cpu",
        "--set",
        "privacy.dp.target_epsilon=8.0",
        "--set",
        "privacy.dp.delta=1e-5",
    ]);
    assert_bad_input(&o, &["train.devices", "differentially private"]);
}
