//! What a run leaves for people and tools: every run lands in `runs/index.sqlite` with its
//! status and metrics, `tunekit runs` lists, sorts, shows and compares them, every export
//! carries a Hugging Face model card with the run's real numbers, and TensorBoard event files
//! hold the curves.

mod common;

use common::*;

#[test]
fn runs_are_indexed_listed_sorted_shown_and_compared() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_model(&tmp.path().join("tiny-model"));
    let cfg = tiny_config(tmp.path(), &model, "epochs = 1\nmax_steps = 3");
    let cfg_s = cfg.to_str().unwrap();
    for (name, seed) in [("a", "3"), ("b", "4")] {
        let out = tunekit(&[
            "train",
            cfg_s,
            "--set",
            &format!("run.name={name}"),
            "--set",
            &format!("train.seed={seed}"),
        ]);
        assert!(out.status.success(), "{}", stderr(&out));
    }
    // A run that fails after it started is recorded as failed, with its error.
    let out = tunekit(&[
        "train",
        cfg_s,
        "--set",
        "run.name=broken",
        "--set",
        &format!(
            "data.validation={:?}",
            fixture("data/unknown_label.tsv").to_str().unwrap()
        ),
    ]);
    assert_eq!(out.status.code(), Some(2));
    let runs = tmp.path().join("runs");
    let dir = runs.to_str().unwrap();

    let out = tunekit(&["runs", "list", "--dir", dir, "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let rows: Vec<serde_json::Value> = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(rows.len(), 3);
    for name in ["a", "b"] {
        let row = rows.iter().find(|r| r["name"] == name).unwrap();
        assert_eq!(row["status"], "complete");
        let m = json(&runs.join(name).join("metrics.json"));
        assert_eq!(row["test_accuracy"], m["test"]["accuracy"]);
        assert_eq!(row["steps"], 3);
        assert!(row["config"].as_str().unwrap().contains("seed"));
    }
    let broken = rows.iter().find(|r| r["name"] == "broken").unwrap();
    assert_eq!(broken["status"], "failed");
    assert!(
        broken["error"]
            .as_str()
            .unwrap()
            .contains("unknown_label.tsv")
    );

    // Sorted best first by a metric; runs without it go last.
    let out = tunekit(&["runs", "list", "--dir", dir, "--sort", "test_accuracy"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let order: Vec<&str> = text
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().next().unwrap())
        .collect();
    let acc = |n: &str| {
        rows.iter().find(|r| r["name"] == n).unwrap()["test_accuracy"]
            .as_f64()
            .unwrap()
    };
    assert_eq!(order.len(), 3);
    assert_eq!(order[2], "broken");
    assert!(acc(order[0]) >= acc(order[1]), "{text}");
    assert_bad_input(
        &tunekit(&["runs", "list", "--dir", dir, "--sort", "vibes"]),
        &["--sort vibes"],
    );

    let out = tunekit(&["runs", "compare", "a", "b", "--dir", dir]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("train.seed: a=3  b=4"), "{text}");
    assert!(text.contains("run.name: a=\"a\"  b=\"b\""), "{text}");
    assert!(
        !text.contains("train.epochs:"),
        "equal keys are not listed: {text}"
    );

    let out = tunekit(&["runs", "show", "b", "--dir", dir]);
    assert!(stdout(&out).contains("run directory:"));
    assert_bad_input(
        &tunekit(&["runs", "show", "zzz", "--dir", dir]),
        &["no run named"],
    );
    assert_bad_input(
        &tunekit(&["runs", "list", "--dir", tmp.path().to_str().unwrap()]),
        &["no experiment index"],
    );
}

#[test]
fn exports_carry_a_hugging_face_model_card_with_the_runs_numbers() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_model(&tmp.path().join("tiny-model"));
    let cfg = tiny_config(tmp.path(), &model, "epochs = 1\nmax_steps = 3");
    let out = tunekit(&["train", cfg.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let run = tmp.path().join("runs/tiny");
    let card = std::fs::read_to_string(run.join("model/README.md")).unwrap();
    assert!(
        card.starts_with("---\nlibrary_name: transformers\npipeline_tag: text-classification\n"),
        "{card}"
    );
    let front = card.split("---\n").nth(1).unwrap();
    for key in [
        "base_model:",
        "datasets:",
        "metrics:",
        "model-index:",
        "split: test",
    ] {
        assert!(front.contains(key), "{key} missing: {front}");
    }
    let m = json(&run.join("metrics.json"));
    let acc = m["test"]["accuracy"].as_f64().unwrap();
    assert!(front.contains(&format!("value: {acc}")), "{front}");
    assert!(card.contains(&format!("| test | {acc:.4} |")), "{card}");
    assert!(card.contains("## Training configuration\n\n```toml\n"));
    assert!(card.contains("## Intended use and limitations"));
    assert!(card.contains("| train | `"), "data table: {card}");

    // A LoRA export says so, for the Hub's loader.
    let out = tunekit(&[
        "train",
        cfg.to_str().unwrap(),
        "--set",
        "run.name=lora",
        "--set",
        "strategy.lora.rank=2",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let card = std::fs::read_to_string(tmp.path().join("runs/lora/model/README.md")).unwrap();
    assert!(card.starts_with("---\nlibrary_name: peft\n"), "{card}");
    assert!(card.contains("- lora\n"));
}

#[test]
fn tensorboard_events_hold_the_runs_curves() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_model(&tmp.path().join("tiny-model"));
    let cfg = tiny_config(tmp.path(), &model, "epochs = 1\nmax_steps = 3");
    let out = tunekit(&["train", cfg.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let run = tmp.path().join("runs/tiny");
    let files: Vec<_> = std::fs::read_dir(&run)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("events.out.tfevents.")
        })
        .collect();
    assert_eq!(files.len(), 1);
    let (version, scalars) = tunekit::tensorboard::read_events(&files[0]).unwrap();
    assert_eq!(version.as_deref(), Some("brain.Event:2"));
    let steps: Vec<i64> = scalars
        .iter()
        .filter(|(_, t, _)| t == "train/loss")
        .map(|(s, _, _)| *s)
        .collect();
    assert_eq!(steps, [1, 2, 3]);
    let history = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    let last: serde_json::Value = serde_json::from_str(history.lines().last().unwrap()).unwrap();
    let acc = scalars
        .iter()
        .find(|(s, t, _)| *s == 3 && t == "validation/accuracy")
        .unwrap()
        .2;
    assert_eq!(acc, last["validation"]["accuracy"].as_f64().unwrap() as f32);
    let m = json(&run.join("metrics.json"));
    let test = scalars
        .iter()
        .find(|(_, t, _)| t == "test/accuracy")
        .unwrap()
        .2;
    assert_eq!(test, m["test"]["accuracy"].as_f64().unwrap() as f32);
}
