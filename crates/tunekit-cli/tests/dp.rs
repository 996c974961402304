//! Differentially private training (`[privacy.dp]`) through the CLI: ε per evaluation, final
//! (ε, δ) in metrics.json, the card and the report; exact resume of the accountant; refusals
//! with exit code 2.

mod common;

use std::path::Path;

use common::*;

fn dp_config(dir: &Path, train_extra: &str, dp: &str) -> std::path::PathBuf {
    let model = tiny_model(&dir.join("tiny-model"));
    let cfg = tiny_config(dir, &model, train_extra);
    let mut text = std::fs::read_to_string(&cfg).unwrap();
    text.push_str(&format!("\n[privacy.dp]\n{dp}\n"));
    std::fs::write(&cfg, text).unwrap();
    cfg
}

fn comparable(mut v: serde_json::Value) -> serde_json::Value {
    if let Some(o) = v.as_object_mut() {
        o.remove("train_time_s");
        o.remove("train_examples_per_s");
        o.remove("elapsed_s");
    }
    v
}

#[test]
fn dp_run_reports_epsilon_and_resume_continues_the_accountant_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = dp_config(
        tmp.path(),
        "epochs = 2\ncheckpoint_every_steps = 2\neval_every_steps = 4\n",
        "target_epsilon = 8.0\ndelta = 1e-5\nmax_grad_norm = 1.0\n",
    );
    let cfg_s = cfg.to_str().unwrap();
    let full = tmp.path().join("full");
    let out = tunekit(&["train", cfg_s, "--run-dir", full.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));

    // 192 examples, batch 16: q = 1/12, 12 steps an epoch, 24 in all; σ solved for ε = 8.
    let m = json(&full.join("metrics.json"));
    let p = &m["privacy"];
    assert_eq!(m["steps"], 24);
    assert_eq!(p["steps"], 24);
    assert_eq!(p["delta"], 1e-5);
    assert_eq!(p["accountant"], "rdp");
    let eps = p["epsilon"].as_f64().unwrap();
    assert!(eps <= 8.0 && eps > 7.99 - 0.01, "final ε {eps}");
    let history = read_jsonl(&full.join("metrics.jsonl"));
    let spent: Vec<f64> = history
        .iter()
        .map(|r| r["epsilon"].as_f64().unwrap())
        .collect();
    assert!(spent.len() >= 3, "{spent:?}");
    assert!(spent.windows(2).all(|w| w[0] < w[1]), "ε grows: {spent:?}");
    assert!((spent.last().unwrap() - eps).abs() < 1e-12);

    let card = std::fs::read_to_string(full.join("model/README.md")).unwrap();
    assert!(card.contains("## Differential privacy"), "{card}");
    assert!(
        card.contains("pretrained model's own training data"),
        "{card}"
    );
    assert!(card.contains("data report's statistics"), "{card}");
    let report = std::fs::read_to_string(full.join("report.html")).unwrap();
    assert!(report.contains("differential privacy (DP-SGD)"), "report");

    // Kill mid-run, resume: the same accountant, the same noise, the same weights.
    let killed = tmp.path().join("killed");
    let at = train_and_kill(&["train", cfg_s], &killed, 6);
    assert!(at < 24, "killed mid-run at {at}");
    let state = json(&killed.join(format!("checkpoints/step-{at:08}/state.json")));
    assert_eq!(state["privacy"]["history"][0]["steps"], at);
    let out = tunekit(&[
        "train",
        cfg_s,
        "--run-dir",
        killed.to_str().unwrap(),
        "--resume",
    ]);
    assert!(out.status.success(), "resume failed: {}", stderr(&out));
    assert_eq!(
        comparable(json(&full.join("metrics.json"))),
        comparable(json(&killed.join("metrics.json")))
    );
    let h = |d: &Path| -> Vec<_> {
        read_jsonl(&d.join("metrics.jsonl"))
            .into_iter()
            .map(comparable)
            .collect()
    };
    assert_eq!(h(&full), h(&killed));
    let a = std::fs::read(full.join("model/model.safetensors")).unwrap();
    let b = std::fs::read(killed.join("model/model.safetensors")).unwrap();
    assert!(a == b, "resumed DP weights must be bit-identical");
}

#[test]
fn dp_refuses_by_name_what_it_cannot_guarantee() {
    let tmp = tempfile::tempdir().unwrap();
    let cases = [
        (
            "oversample = true\n",
            "target_epsilon = 8.0\n",
            "train.oversample",
        ),
        (
            "class_weights = \"balanced\"\n",
            "target_epsilon = 8.0\n",
            "train.class_weights",
        ),
        ("", "delta = 1e-5\n", "give target_epsilon"),
        (
            "",
            "noise_multiplier = -1.0\n",
            "privacy.dp.noise_multiplier",
        ),
        (
            "epochs = 3\n",
            "target_epsilon = 0.5\nnoise_multiplier = 0.3\n",
            "above target_epsilon = 0.5",
        ),
    ];
    for (i, (train, dp, needle)) in cases.iter().enumerate() {
        let dir = tmp.path().join(format!("case{i}"));
        std::fs::create_dir_all(&dir).unwrap();
        let cfg = dp_config(&dir, train, dp);
        let out = tunekit(&["train", cfg.to_str().unwrap()]);
        assert_bad_input(&out, &[needle]);
    }
    // Several models released from the same data: their ε would compose unaccounted.
    let dir = tmp.path().join("cv");
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dp_config(&dir, "", "target_epsilon = 8.0\n");
    let out = tunekit(&["train", cfg.to_str().unwrap(), "--cv", "2"]);
    assert_bad_input(&out, &["refuses --cv"]);
    let mut text = std::fs::read_to_string(&cfg).unwrap();
    text.push_str("\n[search]\ntrials = 2\n\n[search.params]\n\"train.learning_rate\" = \"loguniform(1e-4, 1e-3)\"\n");
    std::fs::write(&cfg, text).unwrap();
    let out = tunekit(&["search", cfg.to_str().unwrap()]);
    assert_bad_input(&out, &["refuses `tunekit search`"]);
}
