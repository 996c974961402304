//! Classification metrics with scikit-learn's semantics (`zero_division=0`), accumulated from
//! predictions batch by batch so evaluation never holds more than a confusion matrix.

use serde::{Deserialize, Serialize};

pub mod scores;

pub use scores::{ProbabilityMetrics, RegressionMetrics};

/// Precision, recall and F1 of one class, for the per-class table of a report.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ClassMetrics {
    /// The label.
    pub label: String,
    /// TP / (TP + FP), 0 when nothing was predicted as this class.
    pub precision: f64,
    /// TP / (TP + FN), 0 when the class has no examples.
    pub recall: f64,
    /// 2·TP / (2·TP + FP + FN) (the harmonic mean of precision and recall), 0 when undefined.
    pub f1: f64,
    /// Examples whose true label is this class.
    pub support: u64,
}

/// All single-label classification metrics of one evaluation, as written to `metrics.json`
/// and compared for checkpoint selection and early stopping.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ClassificationMetrics {
    /// Share of correct predictions.
    pub accuracy: f64,
    /// Unweighted mean of per-class F1 over all labels (absent classes count as 0).
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
    /// Mean loss per example, when losses were added.
    pub loss: Option<f64>,
    /// ROC-AUC, PR-AUC, calibration error and top-2 accuracy, when class probabilities were
    /// given ([`ClassificationMetrics::with_probabilities`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scores: Option<ProbabilityMetrics>,
}

impl ClassificationMetrics {
    /// A metric by name (`accuracy`, `macro_f1`, `micro_f1`, `weighted_f1`, `loss`), so the
    /// selection metric can be named in the config; `None` for an unknown name or no loss.
    pub fn get(&self, name: &str) -> Option<f64> {
        match name {
            "accuracy" => Some(self.accuracy),
            "macro_f1" => Some(self.macro_f1),
            "micro_f1" => Some(self.micro_f1),
            "weighted_f1" => Some(self.weighted_f1),
            "loss" => self.loss,
            "roc_auc" => self.scores.as_ref().and_then(|s| s.roc_auc),
            "pr_auc" => self.scores.as_ref().and_then(|s| s.pr_auc),
            _ => None,
        }
    }

    /// Add the probability-based metrics of `probs` (one row per example, in label order).
    pub fn with_probabilities(mut self, probs: &[Vec<f32>], labels: &[usize]) -> Self {
        let rows: Vec<Vec<f64>> = probs
            .iter()
            .map(|p| p.iter().map(|&v| f64::from(v)).collect())
            .collect();
        self.scores = Some(scores::probability_metrics(
            &rows,
            labels,
            self.labels.len(),
        ));
        self
    }
}

/// Accumulates a confusion matrix (and loss) over batches, so metrics need no list of all
/// predictions.
#[derive(Debug, Clone)]
pub struct ConfusionAccumulator {
    labels: Vec<String>,
    matrix: Vec<Vec<u64>>,
    loss_sum: f64,
    loss_count: usize,
    ignored: u64,
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
            ignored: 0,
        }
    }

    /// Add a batch of true and predicted class ids. Pairs with an id outside the label range,
    /// and the unpaired tail when the slices differ in length, are not counted but tallied in
    /// [`ConfusionAccumulator::ignored`].
    pub fn update(&mut self, true_ids: &[usize], pred_ids: &[usize]) {
        for (&t, &p) in true_ids.iter().zip(pred_ids) {
            match self.matrix.get_mut(t).and_then(|row| row.get_mut(p)) {
                Some(cell) => *cell += 1,
                _ => self.ignored += 1,
            }
        }
        self.ignored += true_ids.len().abs_diff(pred_ids.len()) as u64;
    }

    /// Add a summed loss over `count` examples; [`ClassificationMetrics::loss`] is the mean.
    pub fn add_loss(&mut self, sum: f64, count: usize) {
        self.loss_sum += sum;
        self.loss_count += count;
    }

    /// Ids that [`ConfusionAccumulator::update`] could not count (a caller bug if non-zero),
    /// so it can be checked rather than silently skewing the metrics.
    pub fn ignored(&self) -> u64 {
        self.ignored
    }

    /// Compute the metrics.
    pub fn finish(self) -> ClassificationMetrics {
        let n = self.labels.len();
        let total: u64 = self.matrix.iter().flatten().sum();
        let correct: u64 = self
            .matrix
            .iter()
            .enumerate()
            .filter_map(|(i, row)| row.get(i))
            .sum();
        let ratio = |a: u64, b: u64| if b == 0 { 0.0 } else { a as f64 / b as f64 };
        let per_class: Vec<ClassMetrics> = self
            .labels
            .iter()
            .zip(&self.matrix)
            .enumerate()
            .map(|(c, (label, row))| {
                let tp = row.get(c).copied().unwrap_or(0);
                let predicted: u64 = self.matrix.iter().filter_map(|r| r.get(c)).sum();
                let support: u64 = row.iter().sum();
                ClassMetrics {
                    label: label.clone(),
                    precision: ratio(tp, predicted),
                    recall: ratio(tp, support),
                    // sklearn's form: 2·TP / (2·TP + FP + FN) = 2·TP / (predicted + support).
                    f1: ratio(2 * tp, predicted + support),
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
            scores: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    fn close(a: f64, b: f64) {
        assert!((a - b).abs() < 1e-12, "{a} vs {b}");
    }

    #[test]
    fn matches_scikit_learn_with_an_absent_class() {
        // Reference values from scikit-learn 1.9.1, with
        //   yt = [0,0,0,0,0,1,1,1,2,2,0,1]; yp = [0,0,1,0,3,1,2,1,2,0,0,3]; L = [0,1,2,3]
        //   sklearn.metrics.precision_recall_fscore_support(yt, yp, labels=L, zero_division=0)
        //   sklearn.metrics.accuracy_score(yt, yp)
        //   sklearn.metrics.f1_score(yt, yp, labels=L, average=A, zero_division=0)
        //     for A in "macro", "micro", "weighted"
        //   sklearn.metrics.confusion_matrix(yt, yp, labels=L)
        // Class 3 is predicted twice but never true: precision 0, recall 0 (zero division).
        let t = [0, 0, 0, 0, 0, 1, 1, 1, 2, 2, 0, 1];
        let p = [0, 0, 1, 0, 3, 1, 2, 1, 2, 0, 0, 3];
        let mut acc = ConfusionAccumulator::new(labels(&["a", "b", "c", "d"]));
        acc.update(&t[..5], &p[..5]);
        acc.update(&t[5..], &p[5..]);
        assert_eq!(acc.ignored(), 0);
        let m = acc.finish();
        let precision = [0.8, 0.6666666666666666, 0.5, 0.0];
        let recall = [0.6666666666666666, 0.5, 0.5, 0.0];
        let f1 = [0.7272727272727273, 0.5714285714285714, 0.5, 0.0];
        let support = [6, 4, 2, 0];
        for (i, c) in m.per_class.iter().enumerate() {
            close(c.precision, precision[i]);
            close(c.recall, recall[i]);
            close(c.f1, f1[i]);
            assert_eq!(c.support, support[i]);
        }
        close(m.accuracy, 0.5833333333333334);
        close(m.macro_f1, 0.4496753246753247);
        close(m.micro_f1, 0.5833333333333334);
        close(m.weighted_f1, 0.6374458874458874);
        assert_eq!(
            m.confusion_matrix,
            vec![
                vec![4, 1, 0, 1],
                vec![0, 2, 1, 1],
                vec![1, 0, 1, 0],
                vec![0, 0, 0, 0]
            ]
        );
        assert_eq!(m.labels, labels(&["a", "b", "c", "d"]));
        assert_eq!(m.per_class[3].label, "d");
        assert_eq!(m.support, 12);
        assert_eq!(m.loss, None);
    }

    #[test]
    fn matches_scikit_learn_binary() {
        // scikit-learn 1.9.1: yt = [1,1,0,1,0,0,1,1]; yp = [1,0,0,1,1,0,1,1];
        //   sklearn.metrics.f1_score(yt, yp, labels=[0, 1], average=A, zero_division=0)
        //   -> macro 0.7333333333333334, micro 0.75, weighted 0.75; per-class F1 [2/3, 0.8].
        let mut acc = ConfusionAccumulator::new(labels(&["neg", "pos"]));
        acc.update(&[1, 1, 0, 1, 0, 0, 1, 1], &[1, 0, 0, 1, 1, 0, 1, 1]);
        let m = acc.finish();
        close(m.macro_f1, 0.7333333333333334);
        close(m.micro_f1, 0.75);
        close(m.weighted_f1, 0.75);
        close(m.per_class[0].f1, 0.6666666666666666);
        close(m.per_class[1].f1, 0.8);
    }

    #[test]
    fn zero_division_is_zero_like_sklearn() {
        // Class "b" is never predicted and has no examples: precision = recall = f1 = 0, and it
        // still counts in the macro mean.
        let mut acc = ConfusionAccumulator::new(labels(&["a", "b"]));
        acc.update(&[0, 0], &[0, 0]);
        let m = acc.finish();
        assert_eq!(m.per_class[1].precision, 0.0);
        assert_eq!(m.per_class[1].recall, 0.0);
        assert_eq!(m.per_class[1].f1, 0.0);
        assert_eq!(m.per_class[0].f1, 1.0);
        assert_eq!(m.macro_f1, 0.5);
        assert_eq!(m.weighted_f1, 1.0);
    }

    #[test]
    fn no_examples_gives_zeros_not_nan() {
        let m = ConfusionAccumulator::new(labels(&["a", "b"])).finish();
        for name in ["accuracy", "macro_f1", "micro_f1", "weighted_f1"] {
            assert_eq!(m.get(name), Some(0.0), "{name}");
        }
        assert_eq!(m.support, 0);
        let empty = ConfusionAccumulator::new(Vec::new()).finish();
        assert_eq!(empty.macro_f1, 0.0);
    }

    #[test]
    fn loss_is_the_mean_over_batches() {
        let mut acc = ConfusionAccumulator::new(labels(&["a"]));
        acc.add_loss(3.0, 2);
        acc.add_loss(1.0, 2);
        assert_eq!(acc.finish().get("loss"), Some(1.0));
    }

    #[test]
    fn get_knows_every_metric_name() {
        let mut acc = ConfusionAccumulator::new(labels(&["a", "b", "c"]));
        acc.update(&[0, 1, 2, 2], &[0, 1, 1, 2]);
        acc.add_loss(2.0, 4);
        let m = acc.finish();
        assert_eq!(m.get("accuracy"), Some(m.accuracy));
        assert_eq!(m.get("macro_f1"), Some(m.macro_f1));
        assert_eq!(m.get("micro_f1"), Some(m.micro_f1));
        assert_eq!(m.get("weighted_f1"), Some(m.weighted_f1));
        assert_eq!(m.get("loss"), Some(0.5));
        assert_eq!(m.get("f1"), None);
        // The values differ, so a mix-up between names would show.
        assert_ne!(m.macro_f1, m.weighted_f1);
        assert_ne!(m.accuracy, m.macro_f1);
    }

    #[test]
    fn out_of_range_and_unpaired_ids_are_tallied() {
        let mut acc = ConfusionAccumulator::new(labels(&["a", "b"]));
        acc.update(&[0, 2, 1, 1], &[0, 0, 5]);
        assert_eq!(acc.ignored(), 3);
        let m = acc.finish();
        assert_eq!(m.support, 1);
        assert_eq!(m.accuracy, 1.0);
    }

    #[test]
    fn round_trips_through_json() {
        let mut acc = ConfusionAccumulator::new(labels(&["x", "y"]));
        acc.update(&[0, 1, 1], &[0, 0, 1]);
        acc.add_loss(0.9, 3);
        let m = acc.finish();
        let json = serde_json::to_string(&m).unwrap();
        assert!(
            json.contains("\"confusion_matrix\":[[1,0],[1,1]]"),
            "{json}"
        );
        let back: ClassificationMetrics = serde_json::from_str(&json).unwrap();
        assert_eq!(back, m);
    }
}
