//! `tunekit eval --robustness`: every perturbation is applied through the model's own
//! pipeline and reported; casing cannot flip an uncased model's predictions, typos and
//! truncation change inputs.

mod common;

use common::*;

#[test]
fn robustness_reports_each_perturbation_and_casing_never_flips_an_uncased_model() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_model(&tmp.path().join("tiny-model"));
    let cfg = tiny_config(tmp.path(), &model, "epochs = 1\nmax_steps = 4");
    let out = tunekit(&["train", cfg.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let report_path = tmp.path().join("eval.json");
    let out = tunekit(&[
        "eval",
        "--model",
        tmp.path().join("runs/tiny/model").to_str().unwrap(),
        "--data",
        tmp.path().join("test.tsv").to_str().unwrap(),
        "--robustness",
        "--output",
        report_path.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("under perturbation"));
    let report = json(&report_path);
    let clean = report["metrics"]["accuracy"].as_f64().unwrap();
    let rows = report["robustness"].as_array().unwrap();
    let names: Vec<String> = rows.iter().map(|r| r["perturbation"].to_string()).collect();
    assert_eq!(
        names,
        [
            "\"char_swap\"",
            "\"char_drop\"",
            "\"upper\"",
            "\"lower\"",
            "\"no_punctuation\"",
            "{\"truncate\":8}"
        ]
    );
    for r in rows {
        let acc = r["accuracy"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&acc));
        assert!((r["accuracy_delta"].as_f64().unwrap() - (acc - clean)).abs() < 1e-12);
        let flip = r["flip_rate"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&flip));
    }
    let by = |name: &str| rows.iter().find(|r| r["perturbation"] == name).unwrap();
    // MiniLM's tokenizer lower-cases: casing changes the text but not a single prediction.
    for casing in ["upper", "lower"] {
        assert_eq!(by(casing)["flip_rate"], 0.0, "{casing}");
        assert_eq!(by(casing)["accuracy"].as_f64().unwrap(), clean);
    }
    assert_eq!(
        by("char_swap")["changed"],
        48,
        "every review has a word to misspell"
    );
    assert!(by("char_drop")["changed"].as_u64().unwrap() == 48);
    let truncated = rows.last().unwrap()["changed"].as_u64().unwrap();
    assert!(
        truncated > 24,
        "most reviews are longer than 8 word pieces: {truncated}"
    );
}
