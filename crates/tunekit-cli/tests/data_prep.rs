//! Data preparation on real messy files (fixtures made by tools/make_data_fixtures.py): every
//! row read is either kept or counted under exactly one reason, and the prepared output holds
//! no personal data.

mod common;

use std::path::{Path, PathBuf};

use common::*;

/// A config over messy.csv (train) and messy_test.csv (test) for the tiny model.
fn messy_config(dir: &Path) -> PathBuf {
    let model = tiny_model(&dir.join("tiny-model"));
    let cfg = format!(
        "[model]\npath = {model:?}\nmax_length = 16\n\n[data]\ntrain = {:?}\ntest = {:?}\ntext_column = \"review\"\nlabel_column = \"sentiment\"\n\n[run]\ndir = {:?}\n",
        fixture("data/messy.csv"),
        fixture("data/messy_test.csv"),
        dir.join("runs")
    );
    let path = dir.join("messy.toml");
    std::fs::write(&path, cfg).unwrap();
    path
}

fn check(cfg: &Path, sets: &[&str]) -> serde_json::Value {
    let mut args = vec!["data", "check", cfg.to_str().unwrap(), "--json"];
    for s in sets {
        args.extend(["--set", s]);
    }
    let out = tunekit(&args);
    assert!(out.status.success(), "{}", stderr(&out));
    serde_json::from_str(&stdout(&out)).unwrap()
}

fn split<'a>(report: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    report["splits"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["split"] == name)
        .unwrap_or_else(|| panic!("no split {name}: {report}"))
}

fn dropped(split: &serde_json::Value, reason: &str) -> u64 {
    split["dropped"][reason].as_u64().unwrap_or(0)
}

/// rows read = kept + every drop reason.
fn assert_accounted(split: &serde_json::Value) {
    let drops: u64 = split["dropped"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert_eq!(
        split["rows_read"].as_u64().unwrap(),
        split["examples"].as_u64().unwrap() + drops,
        "{split}"
    );
}

#[test]
fn data_check_accounts_for_every_messy_row() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = messy_config(tmp.path());
    let report = check(&cfg, &[]);
    let train = split(&report, "train");
    // 13 data rows (the blank line is not a row; the quoted newline does not split one).
    assert_eq!(train["rows_read"], 13);
    assert_eq!(dropped(train, "empty_text"), 1);
    assert_eq!(dropped(train, "empty_label"), 1);
    assert_eq!(dropped(train, "exact_duplicate"), 1, "row 4 repeats row 3");
    assert_eq!(dropped(train, "conflict"), 3, "rows 5-7: pos, neg, pos");
    assert_eq!(dropped(train, "leakage"), 1, "row 13 is in the test file");
    assert_eq!(train["examples"], 6);
    assert_accounted(train);
    assert_accounted(split(&report, "test"));
    assert_eq!(
        split(&report, "test")["examples"],
        2,
        "test is never thinned"
    );
    assert_eq!(train["cleaning"]["control_removed"], 1);
    assert!(train["cleaning"]["whitespace_collapsed"].as_u64().unwrap() >= 1);
    let conflict = &report["dedup"]["conflict_examples"][0];
    assert_eq!(conflict["lines"], serde_json::json!([8, 9, 10]));
    assert_eq!(conflict["labels"]["pos"], 2);
    let leak = &report["dedup"]["leakage"][0];
    assert_eq!(
        (leak["split"].as_str(), leak["also_in"].as_str()),
        (Some("train"), Some("test"))
    );
    assert_eq!(leak["examples"][0][0], 16, "line of row 13");
    let tokens = &train["tokens"];
    assert!(tokens["max"].as_u64().unwrap() >= tokens["p50"].as_u64().unwrap());
    assert_eq!(tokens["max_length"], 16);
    let hist: u64 = tokens["histogram"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b[1].as_u64().unwrap())
        .sum();
    assert_eq!(hist, 6);
    // The text report says the same.
    let out = tunekit(&["data", "check", cfg.to_str().unwrap()]);
    let text = stdout(&out);
    assert!(
        text.contains("train: ") && text.contains("-> 6 kept"),
        "{text}"
    );
    assert!(
        text.contains("leakage: 1 rows of train also in test (dropped from train)"),
        "{text}"
    );
}

#[test]
fn data_prepare_deidentifies_strips_html_and_resolves_conflicts_by_majority() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = messy_config(tmp.path());
    let out_dir = tmp.path().join("prepared");
    let out = tunekit(&[
        "data",
        "prepare",
        cfg.to_str().unwrap(),
        "--out",
        out_dir.to_str().unwrap(),
        "--set",
        "data.privacy.enabled=true",
        "--set",
        "data.clean.strip_html=true",
        "--set",
        "data.dedup.conflicts=\"majority\"",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let report = json(&out_dir.join("data_report.json"));
    let train = split(&report, "train");
    // Row 2 now repeats row 1 (HTML stripped), row 4 repeats row 3, row 7 repeats row 5.
    assert_eq!(dropped(train, "exact_duplicate"), 3);
    assert_eq!(dropped(train, "conflict"), 1, "row 6 loses the vote");
    assert_eq!(train["cleaning"]["html_stripped"], 1);
    assert_eq!(train["pii_replaced"]["email"], 1);
    assert_eq!(train["pii_replaced"]["phone"], 1);
    assert_eq!(train["pii_replaced"]["url"], 1);
    assert_accounted(train);
    let rows: Vec<serde_json::Value> = std::fs::read_to_string(out_dir.join("train.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 6);
    assert_eq!(rows[0]["review"], "Great film & cast");
    assert_eq!(rows[1]["review"], "A dull, slow movie");
    assert!(
        rows.iter()
            .any(|r| r["review"] == "Email me at [EMAIL] or call [PHONE]")
    );
    assert!(rows.iter().any(|r| r["review"] == "Visit [URL] now"));
    // No personal data in any output file, the report included.
    for entry in std::fs::read_dir(&out_dir).unwrap() {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        assert!(!text.contains("jane@example.com") && !text.contains("555"));
    }
    // The prepared files are valid training input as they are.
    let again = tmp.path().join("again.toml");
    let model = tmp.path().join("tiny-model");
    std::fs::write(
        &again,
        format!(
            "[model]\npath = {model:?}\nmax_length = 16\n[data]\ntrain = {:?}\ntext_column = \"review\"\nlabel_column = \"sentiment\"\n",
            out_dir.join("train.jsonl")
        ),
    )
    .unwrap();
    let report = check(&again, &[]);
    assert_eq!(split(&report, "train")["examples"], 6);
    assert_eq!(split(&report, "train")["dropped"], serde_json::json!({}));
}

#[test]
fn one_file_is_split_stratified_and_near_duplicates_and_outliers_are_counted() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_model(&tmp.path().join("tiny-model"));
    let train = mr_subset("train", 200, tmp.path());
    let cfg = tmp.path().join("one.toml");
    std::fs::write(
        &cfg,
        format!(
            "[model]\npath = {model:?}\nmax_length = 32\n[data]\ntrain = {train:?}\n[data.split]\nvalidation = 0.2\ntest = 0.1\nseed = 5\n[data.dedup]\nnear = true\nnear_threshold = 0.7\n[data.outliers]\ndrop_above_percentile = 95.0\n"
        ),
    )
    .unwrap();
    let report = check(&cfg, &[]);
    let (tr, va, te) = (
        split(&report, "train"),
        split(&report, "validation"),
        split(&report, "test"),
    );
    assert_eq!(va["carved_from_train"], 0.2);
    let total = tr["rows_read"].as_u64().unwrap()
        + va["rows_read"].as_u64().unwrap()
        + te["rows_read"].as_u64().unwrap();
    assert_eq!(total, 200);
    assert_eq!(va["rows_read"], 40);
    assert_eq!(te["rows_read"], 20);
    // Stratified: each carved split has both labels in the file's proportion (≈ 50/50).
    for s in [va, te] {
        let counts = s["label_counts"].as_object().unwrap();
        assert_eq!(counts.len(), 2, "{s}");
        let n: Vec<u64> = counts.values().map(|v| v.as_u64().unwrap()).collect();
        assert!(n[0].abs_diff(n[1]) <= 2, "{s}");
    }
    assert!(dropped(tr, "length_outlier") > 0, "{tr}");
    assert_eq!(
        dropped(va, "length_outlier"),
        0,
        "evaluation data keeps outliers"
    );
    for s in [tr, va, te] {
        assert_accounted(s);
    }
    assert!(report["dedup"]["near_duplicates"]["train"].is_u64());
    // The same seed gives the same split, another seed another one.
    assert_eq!(check(&cfg, &[]), report);
    let other = check(&cfg, &["data.split.seed=6"]);
    assert_ne!(split(&other, "test")["tokens"], te["tokens"]);
}

#[test]
fn cross_validation_writes_per_fold_and_mean_std_metrics() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_model(&tmp.path().join("tiny-model"));
    let cfg = tiny_config(tmp.path(), &model, "epochs = 1\nmax_steps = 2");
    let out = tunekit(&["train", cfg.to_str().unwrap(), "--cv", "3"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let run = tmp.path().join("runs/tiny");
    let m = json(&run.join("metrics.json"));
    assert_eq!(m["folds"], 3);
    let folds = m["per_fold"].as_array().unwrap();
    assert_eq!(folds.len(), 3);
    let accs: Vec<f64> = folds
        .iter()
        .map(|f| f["validation"]["accuracy"].as_f64().unwrap())
        .collect();
    let mean = accs.iter().sum::<f64>() / 3.0;
    assert!((m["validation"]["mean"]["accuracy"].as_f64().unwrap() - mean).abs() < 1e-12);
    let sd = (accs.iter().map(|a| (a - mean).powi(2)).sum::<f64>() / 2.0).sqrt();
    assert!((m["validation"]["std"]["accuracy"].as_f64().unwrap() - sd).abs() < 1e-12);
    assert!(
        m["test"]["mean"]["accuracy"].is_f64(),
        "the test file is scored by every fold"
    );
    for f in 1..=3 {
        let fold = run.join(format!("fold-{f}"));
        assert_eq!(json(&fold.join("status.json"))["status"], "complete");
        // Each fold validates on a third of the (train + validation) pool of 240 rows.
        let support = json(&fold.join("metrics.json"))["validation"]["support"]
            .as_u64()
            .unwrap();
        assert_eq!(support, 80, "fold {f}");
    }
    assert!(stdout(&out).contains("3-fold validation: accuracy"));
}

#[test]
fn augmentation_and_oversampling_run_and_report_what_they_did() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_model(&tmp.path().join("tiny-model"));
    let cfg = tiny_config(
        tmp.path(),
        &model,
        "epochs = 2\nmax_steps = 14\noversample = true",
    );
    let out = tunekit_env(
        &[
            "train",
            cfg.to_str().unwrap(),
            "--set",
            "data.augment.probability=0.5",
        ],
        &[("RUST_LOG", "info")],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("oversampling minority classes"), "{err}");
    let line = err
        .lines()
        .find(|l| l.contains("augmentation, epoch 2:"))
        .unwrap_or_else(|| panic!("{err}"));
    let changed: usize = line
        .split("epoch 2: ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap();
    assert!((40..160).contains(&changed), "{line}");
    assert!(tmp.path().join("runs/tiny/data_report.txt").is_file());
}

#[test]
fn bad_data_options_are_named() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = messy_config(tmp.path());
    let out = tunekit(&[
        "data",
        "check",
        cfg.to_str().unwrap(),
        "--set",
        "data.encoding=\"ebcdic\"",
    ]);
    assert_bad_input(&out, &["data.encoding"]);
    let out = tunekit(&[
        "data",
        "check",
        cfg.to_str().unwrap(),
        "--set",
        "data.dedup.near_threshold=0",
    ]);
    assert_bad_input(&out, &["data.dedup.near_threshold"]);
    let out = tunekit(&[
        "data",
        "check",
        cfg.to_str().unwrap(),
        "--set",
        "data.privacy.kinds=[\"passport\"]",
    ]);
    assert_bad_input(&out, &["data.privacy.kinds"]);
}

#[test]
fn exported_models_reapply_training_preprocessing_at_prediction() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_model(&tmp.path().join("tiny-model"));
    let cfg = tiny_config(tmp.path(), &model, "epochs = 1\nmax_steps = 2");
    let out = tunekit(&[
        "train",
        cfg.to_str().unwrap(),
        "--set",
        "data.privacy.enabled=true",
        "--set",
        "data.clean.strip_html=true",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let exported = tmp.path().join("runs/tiny/model");
    let meta = json(&exported.join("tunekit.json"));
    assert_eq!(meta["preprocess"]["clean"]["strip_html"], true);
    assert_eq!(meta["preprocess"]["privacy"][0], "email");
    // Different addresses and markup, the same text after preprocessing: the same scores.
    let input = tmp.path().join("in.tsv");
    std::fs::write(
        &input,
        "text\nwrite to ann@example.com today\n<i>write</i> to bob.smith@mail.org   today\nwrite to someone today\n",
    )
    .unwrap();
    let preds = tmp.path().join("p.jsonl");
    let out = tunekit(&[
        "predict",
        "--model",
        exported.to_str().unwrap(),
        "--input",
        input.to_str().unwrap(),
        "--output",
        preds.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let rows: Vec<serde_json::Value> = std::fs::read_to_string(&preds)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows[0]["probabilities"], rows[1]["probabilities"]);
    assert_ne!(rows[0]["probabilities"], rows[2]["probabilities"]);
}
