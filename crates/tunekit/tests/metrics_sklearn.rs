//! tunekit's metrics equal scikit-learn's (and SciPy's) within 1e-6 on fixed fixtures made by
//! `tools/make_metrics_fixture.py`: a binary case with tied scores, a 3-class case with a
//! class never predicted, and a regression case with ties.

use std::path::Path;

use tunekit::metrics::ConfusionAccumulator;
use tunekit::metrics::scores::regression_metrics;

fn fixture() -> serde_json::Value {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/metrics_sklearn.json");
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

fn close(name: &str, got: f64, want: &serde_json::Value) {
    let want = want
        .as_f64()
        .unwrap_or_else(|| panic!("{name}: no reference"));
    assert!((got - want).abs() < 1e-6, "{name}: {got} vs sklearn {want}");
}

#[test]
fn classification_metrics_match_sklearn() {
    let f = fixture();
    for case in ["binary", "multiclass"] {
        let c = &f[case];
        let labels: Vec<usize> = c["labels"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as usize)
            .collect();
        let probs: Vec<Vec<f32>> = c["probs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                r.as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_f64().unwrap() as f32)
                    .collect()
            })
            .collect();
        let classes = probs[0].len();
        let preds: Vec<usize> = probs.iter().map(|p| tunekit::infer::argmax(p)).collect();
        let names: Vec<String> = (0..classes).map(|i| i.to_string()).collect();
        let mut acc = ConfusionAccumulator::new(names);
        acc.update(&labels, &preds);
        let m = acc.finish().with_probabilities(&probs, &labels);
        close(&format!("{case} accuracy"), m.accuracy, &c["accuracy"]);
        close(&format!("{case} macro_f1"), m.macro_f1, &c["macro_f1"]);
        close(&format!("{case} micro_f1"), m.micro_f1, &c["micro_f1"]);
        close(
            &format!("{case} weighted_f1"),
            m.weighted_f1,
            &c["weighted_f1"],
        );
        for (i, pc) in m.per_class.iter().enumerate() {
            close(
                &format!("{case} precision[{i}]"),
                pc.precision,
                &c["precision"][i],
            );
            close(&format!("{case} recall[{i}]"), pc.recall, &c["recall"][i]);
            close(&format!("{case} f1[{i}]"), pc.f1, &c["f1"][i]);
        }
        let s = m.scores.unwrap();
        // Probabilities pass through f32 here as in evaluation; the fixture's 6 decimals are
        // exact enough in f32 for 1e-6 on these sums.
        close(
            &format!("{case} roc_auc"),
            s.roc_auc.unwrap(),
            &c["roc_auc"],
        );
        close(&format!("{case} pr_auc"), s.pr_auc.unwrap(), &c["pr_auc"]);
        close(&format!("{case} ece"), s.ece, &c["ece"]);
        match s.top2_accuracy {
            Some(t) => close(&format!("{case} top2"), t, &c["top2_accuracy"]),
            None => assert!(c["top2_accuracy"].is_null(), "{case}"),
        }
    }
}

#[test]
fn regression_metrics_match_sklearn_and_scipy() {
    let f = fixture();
    let c = &f["regression"];
    let v = |k: &str| -> Vec<f64> {
        c[k].as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect()
    };
    let m = regression_metrics(&v("predictions"), &v("targets"));
    close("mse", m.mse, &c["mse"]);
    close("mae", m.mae, &c["mae"]);
    close("r2", m.r2, &c["r2"]);
    close("pearson", m.pearson, &c["pearson"]);
    close("spearman", m.spearman, &c["spearman"]);
}
