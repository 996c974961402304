//! Metrics of scores and probabilities — ranking (ROC-AUC, PR-AUC), calibration (ECE) and
//! top-k accuracy — and of regression (MSE, MAE, R², Pearson, Spearman), each with
//! scikit-learn's or SciPy's exact definition (checked against them on fixtures made by
//! `tools/make_metrics_fixture.py`).

use serde::{Deserialize, Serialize};

/// Per distinct score, from the highest down: cumulative (true positives, false positives)
/// — the points of sklearn's `_binary_clf_curve`.
fn curve(y: &[bool], s: &[f64]) -> Vec<(f64, f64)> {
    let mut order: Vec<usize> = (0..s.len()).collect();
    order.sort_by(|&a, &b| s[b].total_cmp(&s[a]));
    let mut out = Vec::new();
    let (mut tp, mut fp) = (0.0, 0.0);
    for (k, &i) in order.iter().enumerate() {
        if y[i] {
            tp += 1.0;
        } else {
            fp += 1.0;
        }
        let last_of_score = order.get(k + 1).is_none_or(|&j| s[j] != s[i]);
        if last_of_score {
            out.push((tp, fp));
        }
    }
    out
}

/// Area under the ROC curve of scores `s` for positives `y` (sklearn `roc_auc_score`,
/// trapezoidal, ties handled as sklearn does). `None` when only one class is present.
pub fn roc_auc(y: &[bool], s: &[f64]) -> Option<f64> {
    let pts = curve(y, s);
    let (p, n) = pts.last().copied()?;
    if p == 0.0 || n == 0.0 {
        return None;
    }
    let mut area = 0.0;
    let (mut x0, mut y0) = (0.0, 0.0);
    for (tp, fp) in pts {
        let (x1, y1) = (fp / n, tp / p);
        area += (x1 - x0) * (y0 + y1) / 2.0;
        (x0, y0) = (x1, y1);
    }
    Some(area)
}

/// ROC curve points (false-positive rate, true-positive rate), from (0, 0) through one point
/// per distinct score to (1, 1) — sklearn's `roc_curve` with `drop_intermediate=False`.
/// `None` when only one class is present.
pub fn roc_curve(y: &[bool], s: &[f64]) -> Option<Vec<(f64, f64)>> {
    let pts = curve(y, s);
    let (p, n) = pts.last().copied()?;
    if p == 0.0 || n == 0.0 {
        return None;
    }
    let mut out = vec![(0.0, 0.0)];
    out.extend(pts.into_iter().map(|(tp, fp)| (fp / n, tp / p)));
    Some(out)
}

/// Precision-recall curve points (recall, precision), one per distinct score from the highest
/// down, starting at (0, 1) as sklearn's `precision_recall_curve` does. `None` without
/// positives.
pub fn pr_curve(y: &[bool], s: &[f64]) -> Option<Vec<(f64, f64)>> {
    let pts = curve(y, s);
    let (p, _) = pts.last().copied()?;
    if p == 0.0 {
        return None;
    }
    let mut out = vec![(0.0, 1.0)];
    out.extend(pts.into_iter().map(|(tp, fp)| (tp / p, tp / (tp + fp))));
    Some(out)
}

/// Average precision Σ (Rₖ − Rₖ₋₁)·Pₖ over distinct thresholds (sklearn
/// `average_precision_score`, no interpolation). `None` without positives.
pub fn average_precision(y: &[bool], s: &[f64]) -> Option<f64> {
    let pts = curve(y, s);
    let (p, _) = pts.last().copied()?;
    if p == 0.0 {
        return None;
    }
    let mut ap = 0.0;
    let mut prev_recall = 0.0;
    for (tp, fp) in pts {
        let recall = tp / p;
        let precision = if tp + fp > 0.0 { tp / (tp + fp) } else { 0.0 };
        ap += (recall - prev_recall) * precision;
        prev_recall = recall;
    }
    Some(ap)
}

/// Expected calibration error over `bins` equal-width bins of the top-class probability:
/// Σ_b (n_b / N)·|accuracy_b − mean confidence_b|, bin = min(⌊conf·bins⌋, bins − 1).
pub fn expected_calibration_error(probs: &[Vec<f64>], labels: &[usize], bins: usize) -> f64 {
    let mut count = vec![0usize; bins];
    let mut correct = vec![0usize; bins];
    let mut conf_sum = vec![0.0f64; bins];
    for (p, &y) in probs.iter().zip(labels) {
        let (pred, conf) =
            p.iter()
                .enumerate()
                .fold((0, f64::NEG_INFINITY), |(bi, bv), (i, &v)| {
                    if v > bv { (i, v) } else { (bi, bv) }
                });
        let b = ((conf * bins as f64).floor() as usize).min(bins - 1);
        count[b] += 1;
        conf_sum[b] += conf;
        correct[b] += usize::from(pred == y);
    }
    let n = labels.len().max(1) as f64;
    (0..bins)
        .filter(|&b| count[b] > 0)
        .map(|b| {
            let c = count[b] as f64;
            c / n * (correct[b] as f64 / c - conf_sum[b] / c).abs()
        })
        .sum()
}

/// Share of examples whose true class is among the `k` highest scores (sklearn
/// `top_k_accuracy_score`).
pub fn top_k_accuracy(probs: &[Vec<f64>], labels: &[usize], k: usize) -> f64 {
    let hits = probs
        .iter()
        .zip(labels)
        .filter(|(p, y)| {
            let score = p[**y];
            // Rank of the true class: how many classes score strictly higher.
            p.iter().filter(|&&v| v > score).count() < k
        })
        .count();
    hits as f64 / labels.len().max(1) as f64
}

/// Ranking, calibration and top-k metrics of one evaluation.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ProbabilityMetrics {
    /// ROC-AUC: of the positive (second) class for binary problems, one-vs-rest macro average
    /// otherwise (classes without positives or negatives are skipped, as sklearn cannot score
    /// them either).
    pub roc_auc: Option<f64>,
    /// Average precision (PR-AUC), same averaging as `roc_auc`.
    pub pr_auc: Option<f64>,
    /// Expected calibration error (10 bins).
    pub ece: f64,
    /// Top-2 accuracy (more than two classes only).
    pub top2_accuracy: Option<f64>,
}

/// [`ProbabilityMetrics`] of class probabilities `probs` (rows) against `labels`.
pub fn probability_metrics(
    probs: &[Vec<f64>],
    labels: &[usize],
    classes: usize,
) -> ProbabilityMetrics {
    let column = |c: usize| -> (Vec<bool>, Vec<f64>) {
        (
            labels.iter().map(|&y| y == c).collect(),
            probs.iter().map(|p| p[c]).collect(),
        )
    };
    let (roc_auc, pr_auc) = if classes == 2 {
        let (y, s) = column(1);
        (roc_auc(&y, &s), average_precision(&y, &s))
    } else {
        let mean = |v: Vec<f64>| (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64);
        let (mut rocs, mut aps) = (Vec::new(), Vec::new());
        for c in 0..classes {
            let (y, s) = column(c);
            rocs.extend(roc_auc(&y, &s));
            aps.extend(average_precision(&y, &s));
        }
        (mean(rocs), mean(aps))
    };
    ProbabilityMetrics {
        roc_auc,
        pr_auc,
        ece: expected_calibration_error(probs, labels, 10),
        top2_accuracy: (classes > 2).then(|| top_k_accuracy(probs, labels, 2)),
    }
}

/// Regression metrics.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RegressionMetrics {
    /// Mean squared error.
    pub mse: f64,
    /// Mean absolute error.
    pub mae: f64,
    /// Coefficient of determination 1 − SS_res / SS_tot (sklearn `r2_score`).
    pub r2: f64,
    /// Pearson correlation.
    pub pearson: f64,
    /// Spearman rank correlation (average ranks for ties, as SciPy).
    pub spearman: f64,
    /// Number of examples.
    pub support: u64,
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len().max(1) as f64
}

fn pearson(a: &[f64], b: &[f64]) -> f64 {
    let (ma, mb) = (mean(a), mean(b));
    let cov: f64 = a.iter().zip(b).map(|(x, y)| (x - ma) * (y - mb)).sum();
    let va: f64 = a.iter().map(|x| (x - ma).powi(2)).sum();
    let vb: f64 = b.iter().map(|y| (y - mb).powi(2)).sum();
    if va == 0.0 || vb == 0.0 {
        f64::NAN
    } else {
        cov / (va.sqrt() * vb.sqrt())
    }
}

/// 1-based ranks with ties given their average rank.
fn ranks(v: &[f64]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..v.len()).collect();
    order.sort_by(|&a, &b| v[a].total_cmp(&v[b]));
    let mut out = vec![0.0; v.len()];
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && v[order[j + 1]] == v[order[i]] {
            j += 1;
        }
        let avg = (i + j) as f64 / 2.0 + 1.0;
        for &k in &order[i..=j] {
            out[k] = avg;
        }
        i = j + 1;
    }
    out
}

/// [`RegressionMetrics`] of predictions against targets.
pub fn regression_metrics(predictions: &[f64], targets: &[f64]) -> RegressionMetrics {
    let n = targets.len().max(1) as f64;
    let mse = predictions
        .iter()
        .zip(targets)
        .map(|(p, t)| (p - t).powi(2))
        .sum::<f64>()
        / n;
    let mae = predictions
        .iter()
        .zip(targets)
        .map(|(p, t)| (p - t).abs())
        .sum::<f64>()
        / n;
    let mt = mean(targets);
    let ss_tot: f64 = targets.iter().map(|t| (t - mt).powi(2)).sum();
    let ss_res = mse * n;
    // sklearn: a constant target scores 1.0 if predicted exactly, else 0.0.
    let r2 = if ss_tot == 0.0 {
        if ss_res == 0.0 { 1.0 } else { 0.0 }
    } else {
        1.0 - ss_res / ss_tot
    };
    RegressionMetrics {
        mse,
        mae,
        r2,
        pearson: pearson(predictions, targets),
        spearman: pearson(&ranks(predictions), &ranks(targets)),
        support: targets.len() as u64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn perfect_and_reversed_rankings() {
        let y = [false, false, true, true];
        assert_eq!(roc_auc(&y, &[0.1, 0.2, 0.8, 0.9]), Some(1.0));
        assert_eq!(roc_auc(&y, &[0.9, 0.8, 0.2, 0.1]), Some(0.0));
        assert_eq!(roc_auc(&y, &[0.5; 4]), Some(0.5), "all tied");
        assert_eq!(roc_auc(&[true, true], &[0.1, 0.2]), None);
        assert_eq!(average_precision(&y, &[0.1, 0.2, 0.8, 0.9]), Some(1.0));
    }

    #[test]
    fn ranks_average_ties() {
        assert_eq!(ranks(&[3.0, 1.0, 3.0, 2.0]), [3.5, 1.0, 3.5, 2.0]);
    }
}
