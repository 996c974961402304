//! Multi-label classification: a sigmoid per label, binary cross-entropy, and per-label
//! decision thresholds tuned on validation.
//!
//! The loss is `transformers`' for `problem_type = "multi_label_classification"`
//! (`BCEWithLogitsLoss`, the mean over examples × labels). Scores follow scikit-learn's
//! `f1_score(average=micro|macro|samples, zero_division=0)`, `accuracy_score` (subset
//! accuracy) and `hamming_loss` (checked on a fixture from `tools/make_task_fixtures.py`).
//!
//! Thresholds: one sigmoid cut-off per label, chosen on the validation split to maximise that
//! label's F1 (candidates: midpoints between consecutive distinct probabilities; ties go to
//! the one nearest 0.5). Labels rarely positive are where a fixed 0.5 fails, which is why
//! the exported model keeps the tuned values; `task.threshold` fixes one instead.

use std::collections::BTreeSet;
use std::path::Path;

use burn::tensor::Tensor;

use super::Scores;
use crate::data::Example;
use crate::error::{Error, Result};

/// The labels of one example: split on `separator`, trimmed, empty parts dropped.
pub fn parse_labels(label: &str, separator: &str) -> Vec<String> {
    let parts: Box<dyn Iterator<Item = &str>> = if separator.is_empty() {
        Box::new(std::iter::once(label))
    } else {
        Box::new(label.split(separator))
    };
    let set: BTreeSet<String> = parts
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(String::from)
        .collect();
    set.into_iter().collect()
}

/// Sorted union of the labels of `examples`.
pub fn label_names(examples: &[Example], separator: &str) -> Vec<String> {
    let set: BTreeSet<String> = examples
        .iter()
        .filter_map(|e| e.label.as_deref())
        .flat_map(|l| parse_labels(l, separator))
        .collect();
    set.into_iter().collect()
}

/// Multi-hot targets in `names` order; a label the names do not know is an error naming the
/// file and line.
pub fn targets(
    examples: &[Example],
    names: &[String],
    separator: &str,
    file: &Path,
) -> Result<Vec<Vec<f32>>> {
    examples
        .iter()
        .map(|e| {
            let mut row = vec![0.0f32; names.len()];
            for l in parse_labels(e.label.as_deref().unwrap_or(""), separator) {
                let i = names.binary_search(&l).map_err(|_| {
                    Error::Labels(format!(
                        "{}:{}: label {l:?} does not occur in the training data (labels: {})",
                        file.display(),
                        e.line,
                        names.join(", ")
                    ))
                })?;
                row[i] = 1.0;
            }
            Ok(row)
        })
        .collect()
}

/// Summed binary cross-entropy with logits over a batch `[n, labels]`, divided by the label
/// count (so that dividing by examples gives `BCEWithLogitsLoss`'s mean).
pub fn bce_sum(logits: Tensor<2>, targets: Tensor<2>) -> Tensor<1> {
    let labels = logits.dims()[1] as f64;
    // max(x, 0) − x·y + log(1 + e^(−|x|)): stable for any x.
    let loss =
        logits.clone().clamp_min(0.0) - logits.clone() * targets + logits.abs().neg().exp().log1p();
    loss.sum().div_scalar(labels)
}

/// Sigmoid of logits.
pub fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

fn f1(tp: usize, fp: usize, fn_: usize) -> f64 {
    let d = 2 * tp + fp + fn_;
    if d == 0 {
        0.0
    } else {
        2.0 * tp as f64 / d as f64
    }
}

/// The F1-maximising threshold of one label (see the module docs).
pub fn tune_threshold(probs: &[f32], truth: &[bool]) -> f64 {
    let positives = truth.iter().filter(|t| **t).count();
    let mut order: Vec<usize> = (0..probs.len()).collect();
    order.sort_by(|&a, &b| probs[b].total_cmp(&probs[a]));
    // Sweep the cut-off down through the distinct probabilities: predicting the top k.
    let mut best = (f1(0, 0, positives), 0.5f64);
    let (mut tp, mut fp) = (0, 0);
    for (k, &i) in order.iter().enumerate() {
        if truth[i] {
            tp += 1;
        } else {
            fp += 1;
        }
        let next = order.get(k + 1).map(|&j| probs[j]);
        if next == Some(probs[i]) {
            continue;
        }
        let cut = match next {
            Some(n) => (f64::from(probs[i]) + f64::from(n)) / 2.0,
            None => f64::from(probs[i]) / 2.0,
        };
        let score = f1(tp, fp, positives - tp);
        let better = score > best.0 + 1e-12
            || ((score - best.0).abs() <= 1e-12 && (cut - 0.5).abs() < (best.1 - 0.5).abs());
        if better {
            best = (score, cut);
        }
    }
    best.1
}

/// Scores of probabilities against multi-hot targets at per-label thresholds.
pub fn scores(probs: &[Vec<f32>], targets: &[Vec<f32>], thresholds: &[f64]) -> Scores {
    let labels = thresholds.len();
    let n = probs.len();
    let predict = |p: &[f32], t: &[f64]| -> Vec<bool> {
        p.iter().zip(t).map(|(&v, &c)| f64::from(v) >= c).collect()
    };
    let mut per_label = vec![(0usize, 0usize, 0usize); labels];
    let (mut exact, mut wrong_bits, mut samples_f1) = (0usize, 0usize, 0.0f64);
    let half = vec![0.5; labels];
    let (mut tp5, mut fp5, mut fn5) = (0, 0, 0);
    for (p, y) in probs.iter().zip(targets) {
        let pred = predict(p, thresholds);
        let (mut tp, mut fp, mut fn_) = (0, 0, 0);
        for (k, (&hit, &t)) in pred.iter().zip(y).enumerate() {
            let truth = t > 0.5;
            match (hit, truth) {
                (true, true) => {
                    tp += 1;
                    per_label[k].0 += 1
                }
                (true, false) => {
                    fp += 1;
                    per_label[k].1 += 1
                }
                (false, true) => {
                    fn_ += 1;
                    per_label[k].2 += 1
                }
                _ => {}
            }
        }
        if fp + fn_ == 0 {
            exact += 1;
        }
        wrong_bits += fp + fn_;
        samples_f1 += f1(tp, fp, fn_);
        for (&hit, &t) in predict(p, &half).iter().zip(y) {
            match (hit, t > 0.5) {
                (true, true) => tp5 += 1,
                (true, false) => fp5 += 1,
                (false, true) => fn5 += 1,
                _ => {}
            }
        }
    }
    let (tp, fp, fn_) = per_label
        .iter()
        .fold((0, 0, 0), |a, l| (a.0 + l.0, a.1 + l.1, a.2 + l.2));
    let macro_f1 = per_label.iter().map(|l| f1(l.0, l.1, l.2)).sum::<f64>() / labels.max(1) as f64;
    let denom = n.max(1) as f64;
    Scores::from([
        ("micro_f1".to_string(), f1(tp, fp, fn_)),
        ("macro_f1".to_string(), macro_f1),
        ("samples_f1".to_string(), samples_f1 / denom),
        ("subset_accuracy".to_string(), exact as f64 / denom),
        (
            "hamming_loss".to_string(),
            wrong_bits as f64 / (denom * labels.max(1) as f64),
        ),
        ("micro_f1_at_0_5".to_string(), f1(tp5, fp5, fn5)),
    ])
}

/// Per-label F1 at the thresholds, in label order (for the run's `metrics.json`).
pub fn per_label_f1(probs: &[Vec<f32>], targets: &[Vec<f32>], thresholds: &[f64]) -> Vec<f64> {
    (0..thresholds.len())
        .map(|k| {
            let (mut tp, mut fp, mut fn_) = (0, 0, 0);
            for (p, y) in probs.iter().zip(targets) {
                match (f64::from(p[k]) >= thresholds[k], y[k] > 0.5) {
                    (true, true) => tp += 1,
                    (true, false) => fp += 1,
                    (false, true) => fn_ += 1,
                    _ => {}
                }
            }
            f1(tp, fp, fn_)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_split_trimmed_and_deduplicated() {
        assert_eq!(parse_labels(" b, a ,b,,", ","), vec!["a", "b"]);
        assert_eq!(parse_labels("a|b", ""), vec!["a|b"]);
        assert!(parse_labels("", ",").is_empty());
    }

    #[test]
    fn tuned_threshold_separates_when_it_can_and_beats_half() {
        // Positives score 0.2–0.3, negatives below 0.15: 0.5 predicts nothing (F1 0).
        let probs = [0.3, 0.25, 0.2, 0.1, 0.05, 0.01];
        let truth = [true, true, true, false, false, false];
        let t = tune_threshold(&probs, &truth);
        assert!((t - 0.15).abs() < 1e-6, "{t}");
        let p: Vec<Vec<f32>> = probs.iter().map(|&v| vec![v]).collect();
        let y: Vec<Vec<f32>> = truth
            .iter()
            .map(|&v| vec![f32::from(u8::from(v))])
            .collect();
        assert_eq!(scores(&p, &y, &[t])["micro_f1"], 1.0);
        assert_eq!(scores(&p, &y, &[0.5])["micro_f1"], 0.0);
    }

    #[derive(serde::Deserialize)]
    struct Case {
        probs: Vec<Vec<f32>>,
        targets: Vec<Vec<f32>>,
        thresholds: Vec<f64>,
        scores: Scores,
    }

    #[test]
    fn scores_equal_scikit_learn_on_its_fixture() {
        // tools/make_task_fixtures.py: sklearn f1_score (micro/macro/samples, zero_division=0),
        // accuracy_score and hamming_loss on random multi-hot data, incl. empty label sets.
        let path =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/multilabel_sklearn.json");
        let cases: Vec<Case> =
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        assert!(cases.len() >= 20);
        for (i, c) in cases.iter().enumerate() {
            let got = scores(&c.probs, &c.targets, &c.thresholds);
            for (k, want) in &c.scores {
                let g = got[k];
                assert!((g - want).abs() < 1e-9, "case {i} {k}: {g} vs {want}");
            }
        }
    }

    #[test]
    fn bce_matches_its_definition() {
        let d = burn::tensor::Device::flex();
        let x = [2.0f32, -1.0, 0.5, -30.0, 40.0, 0.0];
        let y = [1.0f32, 0.0, 0.0, 1.0, 1.0, 1.0];
        let lt = Tensor::<2>::from_data(burn::tensor::TensorData::new(x.to_vec(), [2, 3]), &d);
        let yt = Tensor::<2>::from_data(burn::tensor::TensorData::new(y.to_vec(), [2, 3]), &d);
        let got = crate::model::weights::to_vec(bce_sum(lt, yt)).unwrap()[0];
        let want: f64 = x
            .iter()
            .zip(&y)
            .map(|(&x, &y)| {
                let p = 1.0 / (1.0 + (-f64::from(x)).exp());
                -(f64::from(y) * p.max(1e-300).ln()
                    + (1.0 - f64::from(y)) * (1.0 - p).max(1e-300).ln())
            })
            .sum::<f64>()
            / 3.0;
        assert!(
            (f64::from(got) - want).abs() < 1e-4 * want.max(1.0),
            "{got} vs {want}"
        );
    }
}
