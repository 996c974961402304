//! Classification metrics with scikit-learn's semantics (`zero_division=0`), accumulated from
//! predictions batch by batch so evaluation never holds more than a confusion matrix.

use serde::{Deserialize, Serialize};

/// Precision, recall and F1 of one class.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ClassMetrics {
    /// The label.
    pub label: String,
    /// TP / (TP + FP), 0 when nothing was predicted as this class.
    pub precision: f64,
    /// TP / (TP + FN), 0 when the class has no examples.
    pub recall: f64,
    /// Harmonic mean of precision and recall, 0 when both are 0.
    pub f1: f64,
    /// Examples whose true label is this class.
    pub support: u64,
}

/// All single-label classification metrics for one evaluation.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ClassificationMetrics {
    /// Share of correct predictions.
    pub accuracy: f64,
    /// Unweighted mean of per-class F1.
    pub macro_f1: f64,
    /// Micro-averaged F1 (equals accuracy for single-label data).
    pub micro_f1: f64,
    /// Support-weighted mean of per-class F1.
    pub weighted_f1: f64,
    /// Per-class precision/recall/F1, in label order.
    pub per_class: Vec<ClassMetrics>,
    /// Counts `[true][predicted]` in label order.
    pub confusion_matrix: Vec<Vec<u64>>,
    /// Label order of `per_class` and `confusion_matrix`.
    pub labels: Vec<String>,
    /// Number of examples.
    pub support: u64,
    /// Mean cross-entropy, when labels were scored.
    pub loss: Option<f64>,
}

impl ClassificationMetrics {
    /// A metric by name: accuracy, macro_f1, micro_f1, weighted_f1, loss.
    pub fn get(&self, name: &str) -> Option<f64> {
        match name {
            "accuracy" => Some(self.accuracy),
            "macro_f1" => Some(self.macro_f1),
            "micro_f1" => Some(self.micro_f1),
            "weighted_f1" => Some(self.weighted_f1),
            "loss" => self.loss,
            _ => None,
        }
    }
}

/// Accumulates a confusion matrix (and loss) over batches.
#[derive(Debug, Clone)]
pub struct ConfusionAccumulator {
    labels: Vec<String>,
    matrix: Vec<Vec<u64>>,
    loss_sum: f64,
    loss_count: usize,
}

impl ConfusionAccumulator {
    /// An empty accumulator over `labels` (class-id order).
    pub fn new(labels: Vec<String>) -> Self {
        let n = labels.len();
        ConfusionAccumulator {
            labels,
            matrix: vec![vec![0; n]; n],
            loss_sum: 0.0,
            loss_count: 0,
        }
    }

    /// Add a batch of true and predicted class ids (ids outside the label range are ignored
    /// by construction: callers map labels through the model's label map first).
    pub fn update(&mut self, true_ids: &[usize], pred_ids: &[usize]) {
        let n = self.labels.len();
        for (&t, &p) in true_ids.iter().zip(pred_ids) {
            if t < n && p < n {
                self.matrix[t][p] += 1;
            }
        }
    }

    /// Add a summed loss over `count` examples.
    pub fn add_loss(&mut self, sum: f64, count: usize) {
        self.loss_sum += sum;
        self.loss_count += count;
    }

    /// Compute the metrics.
    pub fn finish(self) -> ClassificationMetrics {
        let n = self.labels.len();
        let total: u64 = self.matrix.iter().flatten().sum();
        let correct: u64 = (0..n).map(|i| self.matrix[i][i]).sum();
        let ratio = |a: u64, b: u64| if b == 0 { 0.0 } else { a as f64 / b as f64 };
        let per_class: Vec<ClassMetrics> = (0..n)
            .map(|c| {
                let tp = self.matrix[c][c];
                let predicted: u64 = (0..n).map(|t| self.matrix[t][c]).sum();
                let support: u64 = self.matrix[c].iter().sum();
                let precision = ratio(tp, predicted);
                let recall = ratio(tp, support);
                let f1 = if precision + recall == 0.0 {
                    0.0
                } else {
                    2.0 * precision * recall / (precision + recall)
                };
                ClassMetrics {
                    label: self.labels[c].clone(),
                    precision,
                    recall,
                    f1,
                    support,
                }
            })
            .collect();
        let macro_f1 = if n == 0 {
            0.0
        } else {
            per_class.iter().map(|c| c.f1).sum::<f64>() / n as f64
        };
        let weighted_f1 = if total == 0 {
            0.0
        } else {
            per_class
                .iter()
                .map(|c| c.f1 * c.support as f64)
                .sum::<f64>()
                / total as f64
        };
        let accuracy = ratio(correct, total);
        ClassificationMetrics {
            accuracy,
            macro_f1,
            micro_f1: accuracy,
            weighted_f1,
            per_class,
            confusion_matrix: self.matrix,
            labels: self.labels,
            support: total,
            loss: (self.loss_count > 0).then(|| self.loss_sum / self.loss_count as f64),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_scikit_learn() {
        // y_true = [0,0,0,1,1,2,2,2,2,0], y_pred = [0,1,0,1,2,2,2,0,2,0]; reference values from
        // sklearn.metrics.{accuracy_score, f1_score(average=macro|weighted|None),
        // precision_score(average=None), recall_score(average=None)} (scikit-learn 1.9).
        let t = [0, 0, 0, 1, 1, 2, 2, 2, 2, 0];
        let p = [0, 1, 0, 1, 2, 2, 2, 0, 2, 0];
        let mut acc = ConfusionAccumulator::new(vec!["a".into(), "b".into(), "c".into()]);
        acc.update(&t[..4], &p[..4]);
        acc.update(&t[4..], &p[4..]);
        let m = acc.finish();
        let close = |a: f64, b: f64| assert!((a - b).abs() < 1e-9, "{a} vs {b}");
        close(m.accuracy, 0.7);
        close(m.per_class[0].precision, 0.75);
        close(m.per_class[0].recall, 0.75);
        close(m.per_class[1].precision, 0.5);
        close(m.per_class[1].recall, 0.5);
        close(m.per_class[2].precision, 0.75);
        close(m.per_class[2].recall, 0.75);
        close(m.macro_f1, (0.75 + 0.5 + 0.75) / 3.0);
        close(m.weighted_f1, (0.75 * 4.0 + 0.5 * 2.0 + 0.75 * 4.0) / 10.0);
        assert_eq!(
            m.confusion_matrix,
            vec![vec![3, 1, 0], vec![0, 1, 1], vec![1, 0, 3]]
        );
        assert_eq!(m.support, 10);
    }

    #[test]
    fn zero_division_is_zero_like_sklearn() {
        // Class "b" is never predicted and has no examples: precision = recall = f1 = 0.
        let mut acc = ConfusionAccumulator::new(vec!["a".into(), "b".into()]);
        acc.update(&[0, 0], &[0, 0]);
        acc.add_loss(1.0, 2);
        let m = acc.finish();
        assert_eq!(m.per_class[1].precision, 0.0);
        assert_eq!(m.per_class[1].f1, 0.0);
        assert_eq!(m.macro_f1, 0.5);
        assert_eq!(m.get("loss"), Some(0.5));
    }
}
