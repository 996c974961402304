//! `task.type = "causal_lm"`: supervised fine-tuning of the real SmolLM2-135M-Instruct GGUF
//! (`scripts/fetch-assets.sh`) through the one training loop, checked against transformers +
//! PEFT (`tools/check_sft_adapter.py`): the exported LoRA adapter loads in PEFT over the same
//! GGUF and gives the run's validation loss (masked to the answer tokens) and the same greedy
//! completions as `tunekit generate --adapter`; a full fine-tune exports a transformers
//! directory that transformers loads with the same greedy output; a LoRA run killed after a
//! checkpoint and resumed ends with bit-identical adapters; bad records and options that do
//! not apply exit with code 2.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

fn smollm() -> PathBuf {
    let p = root().join("assets/models/SmolLM2-135M-Instruct.Q4_1.gguf");
    assert!(
        p.is_file(),
        "assets missing: run scripts/fetch-assets.sh first"
    );
    p
}

const REVIEWS: [(&str, &str); 12] = [
    ("A gem of a film, warm and funny.", "positive"),
    ("Dull, slow and far too long.", "negative"),
    ("The cast is wonderful and the story moves.", "positive"),
    ("I wanted my two hours back.", "negative"),
    ("A smart, touching comedy.", "positive"),
    ("Flat jokes and a lifeless plot.", "negative"),
    ("Beautifully shot and sharply written.", "positive"),
    ("A mess from start to finish.", "negative"),
    ("One of the best films of the year.", "positive"),
    ("Tedious and predictable.", "negative"),
    ("Charming, clever and full of heart.", "positive"),
    ("Nothing works in this sorry sequel.", "negative"),
];

fn prompt(review: &str) -> String {
    format!("Review: {review}\nIs this review positive or negative? Answer with one word.")
}

fn write_records(path: &Path, rows: &[(&str, &str)]) {
    let text: String = rows
        .iter()
        .map(|(r, l)| {
            format!(
                "{}\n",
                serde_json::json!({"prompt": prompt(r), "completion": l})
            )
        })
        .collect();
    std::fs::write(path, text).unwrap();
}

fn config(dir: &Path, learning_rate: f64, extra: &str) -> PathBuf {
    write_records(&dir.join("train.jsonl"), &REVIEWS[..8]);
    write_records(&dir.join("validation.jsonl"), &REVIEWS[8..]);
    let cfg = dir.join("sft.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"[task]
type = "causal_lm"

[model]
path = "{model}"
max_length = 64

[data]
train = "{train}"
validation = "{validation}"

[train]
epochs = 2
batch_size = 4
learning_rate = {learning_rate}
warmup_ratio = 0.0
weight_decay = 0.0
seed = 7
metric = "loss"
{extra}

[run]
name = "sft"
dir = "{runs}"
"#,
            model = smollm().display(),
            train = dir.join("train.jsonl").display(),
            validation = dir.join("validation.jsonl").display(),
            runs = dir.join("runs").display(),
        ),
    )
    .unwrap();
    cfg
}

fn reference(args: &[&str]) -> serde_json::Value {
    let o = Command::new("python3")
        .arg(root().join("tools/check_sft_adapter.py"))
        .args(args)
        .output()
        .expect("python3");
    assert!(
        o.status.success(),
        "tools/check_sft_adapter.py: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_slice(&o.stdout).unwrap()
}

/// Greedy completions of `tunekit generate --input` (one JSON line per prompt).
fn generate(model: &Path, adapter: Option<&Path>, prompts: &Path) -> Vec<String> {
    let mut args = vec![
        "generate".to_string(),
        "--model".into(),
        model.display().to_string(),
        "--input".into(),
        prompts.display().to_string(),
        "--max-new-tokens".into(),
        "8".into(),
    ];
    if let Some(a) = adapter {
        args.extend(["--adapter".into(), a.display().to_string()]);
    }
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let o = tunekit(&refs);
    assert!(o.status.success(), "{}", stderr(&o));
    stdout(&o)
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            v["completion"].as_str().unwrap().to_string()
        })
        .collect()
}

fn write_prompts(dir: &Path) -> PathBuf {
    let p = dir.join("prompts.jsonl");
    let text: String = REVIEWS[8..]
        .iter()
        .map(|(r, _)| format!("{}\n", serde_json::json!({"prompt": prompt(r)})))
        .collect();
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn lora_sft_exports_a_peft_adapter_with_the_loss_and_completions_peft_gives() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(
        dir.path(),
        3e-3,
        "checkpoint_every_steps = 1\n\n[strategy.lora]\nrank = 4\nalpha = 8.0\ntargets = [\"query\", \"value\", \"intermediate\"]",
    );
    let o = tunekit(&["train", cfg.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let run = dir.path().join("runs/sft");
    let metrics = json(&run.join("metrics.json"));
    assert_eq!(metrics["task"], "causal_lm");
    let v = &metrics["validation_scores"];
    let loss = v["loss"].as_f64().unwrap();
    assert!(loss.is_finite() && loss > 0.0, "{metrics}");
    assert!((v["perplexity"].as_f64().unwrap() - loss.exp()).abs() < 1e-9 * loss.exp());
    // 8 records, none cut, 2 epochs of 2 steps.
    assert_eq!(metrics["sft"]["train"]["examples"], 8, "{metrics}");
    assert_eq!(metrics["sft"]["train"]["truncated"], 0);
    assert_eq!(metrics["steps"], 4);
    // LoRA on q, v, gate, up: 30 layers × rank 4 × (576+576 + 576+192 + 2×(576+1536)).
    assert_eq!(
        metrics["trainable_parameters"],
        30 * 4 * (576 + 576 + 576 + 192 + 2 * (576 + 1536)),
        "{metrics}"
    );
    let history = read_jsonl(&run.join("metrics.jsonl"));
    assert_eq!(history.len(), 2);
    let first = history[0]["validation"]["loss"].as_f64().unwrap();
    let last = history[1]["validation"]["loss"].as_f64().unwrap();
    assert!(last < first, "validation loss {first} → {last}");
    let model = run.join("model");
    let adapter = json(&model.join("adapter_config.json"));
    assert_eq!(adapter["task_type"], "CAUSAL_LM");
    assert_eq!(
        adapter["target_modules"],
        serde_json::json!(["gate_proj", "q_proj", "up_proj", "v_proj"])
    );
    assert!(model.join("README.md").is_file());

    // PEFT over transformers' GGUF: the same validation loss, the same greedy answers.
    let prompts = write_prompts(dir.path());
    let peft = reference(&[
        "--gguf",
        smollm().to_str().unwrap(),
        "--adapter",
        model.to_str().unwrap(),
        "--records",
        dir.path().join("validation.jsonl").to_str().unwrap(),
        "--prompts",
        prompts.to_str().unwrap(),
    ]);
    let peft_loss = peft["loss"].as_f64().unwrap();
    assert!(
        (peft_loss - loss).abs() < 1e-4 * loss.max(1.0),
        "validation loss: tunekit {loss}, PEFT {peft_loss}"
    );
    let ours = generate(&smollm(), Some(&model), &prompts);
    assert_eq!(
        ours,
        serde_json::from_value::<Vec<String>>(peft["generations"].clone()).unwrap()
    );
    // Killed after a checkpoint and resumed: the same history and bit-identical adapters
    // (the factors reload by their name-derived ids, the optimiser state with them).
    let killed = dir.path().join("killed");
    let at = train_and_kill(&["train", cfg.to_str().unwrap()], &killed, 2);
    assert!(at < 4, "killed mid-run at {at}");
    let o = tunekit(&[
        "train",
        cfg.to_str().unwrap(),
        "--run-dir",
        killed.to_str().unwrap(),
        "--resume",
    ]);
    assert!(o.status.success(), "resume failed: {}", stderr(&o));
    let validation = |d: &Path| -> Vec<serde_json::Value> {
        read_jsonl(&d.join("metrics.jsonl"))
            .into_iter()
            .map(|r| serde_json::json!([r["step"], r["train_loss"], r["validation"]]))
            .collect()
    };
    assert_eq!(validation(&run), validation(&killed));
    let a = std::fs::read(model.join("adapter_model.safetensors")).unwrap();
    let b = std::fs::read(killed.join("model/adapter_model.safetensors")).unwrap();
    assert!(a == b, "resumed adapters must be bit-identical");

    // The adapter learnt the task's answer words, and the run's exact match is the share of
    // these greedy answers equal to the label.
    assert!(
        ours.iter()
            .all(|c| c.contains("positive") || c.contains("negative")),
        "{ours:?}"
    );
    let exact = ours
        .iter()
        .zip(&REVIEWS[8..])
        .filter(|(c, (_, label))| c.trim() == *label)
        .count() as f64
        / ours.len() as f64;
    assert_eq!(v["exact_match"].as_f64(), Some(exact), "{metrics}");
}

#[test]
fn full_sft_exports_a_transformers_directory_with_the_same_greedy_output() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), 1e-5, "max_steps = 1");
    let o = tunekit(&["train", cfg.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let model = dir.path().join("runs/sft/model");
    for f in [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
        "generation_config.json",
    ] {
        assert!(model.join(f).is_file(), "{f} missing");
    }
    let metrics = json(&dir.path().join("runs/sft/metrics.json"));
    let prompts = write_prompts(dir.path());
    let hf = reference(&[
        "--model-dir",
        model.to_str().unwrap(),
        "--records",
        dir.path().join("validation.jsonl").to_str().unwrap(),
        "--prompts",
        prompts.to_str().unwrap(),
    ]);
    let loss = metrics["validation_scores"]["loss"].as_f64().unwrap();
    let hf_loss = hf["loss"].as_f64().unwrap();
    assert!(
        (hf_loss - loss).abs() < 1e-4 * loss.max(1.0),
        "validation loss: tunekit {loss}, transformers {hf_loss}"
    );
    let ours = generate(&model, None, &prompts);
    assert_eq!(
        ours,
        serde_json::from_value::<Vec<String>>(hf["generations"].clone()).unwrap()
    );
    // The export holds the trained weights, not the base model's.
    let base = reference(&[
        "--gguf",
        smollm().to_str().unwrap(),
        "--records",
        dir.path().join("validation.jsonl").to_str().unwrap(),
    ]);
    let base_loss = base["loss"].as_f64().unwrap();
    assert!(
        (base_loss - loss).abs() > 1e-5,
        "one step changed nothing: base {base_loss}, trained {loss}"
    );
}

#[test]
fn bad_sft_records_and_options_that_do_not_apply_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), 3e-3, "");
    let train = dir.path().join("train.jsonl");
    let good = std::fs::read_to_string(&train).unwrap();
    std::fs::write(&train, format!("{good}{{\"prompt\": \"only a prompt\"}}\n")).unwrap();
    let o = tunekit(&["train", cfg.to_str().unwrap()]);
    assert_bad_input(&o, &["train.jsonl:9", "missing `completion`"]);
    std::fs::write(&train, &good).unwrap();
    let base = std::fs::read_to_string(&cfg).unwrap();
    for (extra, needle) in [
        (
            "[strategy]\nlayer_lr_decay = 0.8\n",
            "strategy.layer_lr_decay",
        ),
        ("[strategy.lora]\ndropout = 0.1\n", "strategy.lora.dropout"),
        ("[data.dedup]\nexact = false\n", "data.dedup"),
    ] {
        let bad = dir.path().join("bad.toml");
        std::fs::write(&bad, format!("{base}\n{extra}")).unwrap();
        let o = tunekit(&["train", bad.to_str().unwrap()]);
        assert_bad_input(&o, &[needle, "causal_lm"]);
    }
}
