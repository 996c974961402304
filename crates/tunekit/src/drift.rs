//! Prediction-distribution drift: the reference distribution a model saw at training time
//! (its predictions on the validation split, and the token lengths of those inputs), saved
//! next to the model, and the divergences (PSI, KL) of live traffic from it.

use serde::{Deserialize, Serialize};

/// Upper bounds (exclusive) of the token-length buckets; the last bucket is open-ended.
pub const LENGTH_BUCKETS: &[usize] = &[8, 16, 32, 64, 128, 256];

/// File in exported model directories holding [`ReferenceStats`].
pub const REFERENCE_FILE: &str = "reference_stats.json";

/// What "normal" looked like at training time.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ReferenceStats {
    /// Labels in class-id order.
    pub labels: Vec<String>,
    /// Share of validation examples predicted as each label.
    pub prediction_distribution: Vec<f64>,
    /// Share of validation inputs per token-length bucket ([`LENGTH_BUCKETS`]).
    pub length_distribution: Vec<f64>,
    /// Mean token length of the validation inputs.
    pub mean_length: f64,
    /// Number of validation examples behind the distributions.
    pub examples: usize,
}

/// Bucket index of a token length.
pub fn length_bucket(len: usize) -> usize {
    LENGTH_BUCKETS
        .iter()
        .position(|&b| len < b)
        .unwrap_or(LENGTH_BUCKETS.len())
}

/// Normalise counts to shares (all zeros stay zeros).
pub fn shares(counts: &[u64]) -> Vec<f64> {
    let total: u64 = counts.iter().sum();
    counts
        .iter()
        .map(|&c| {
            if total == 0 {
                0.0
            } else {
                c as f64 / total as f64
            }
        })
        .collect()
}

/// Reference stats from per-class predicted counts and the inputs' token lengths.
pub fn reference(labels: &[String], predicted_counts: &[u64], lengths: &[usize]) -> ReferenceStats {
    let mut buckets = vec![0u64; LENGTH_BUCKETS.len() + 1];
    for &l in lengths {
        buckets[length_bucket(l)] += 1;
    }
    ReferenceStats {
        labels: labels.to_vec(),
        prediction_distribution: shares(predicted_counts),
        length_distribution: shares(&buckets),
        mean_length: lengths.iter().sum::<usize>() as f64 / lengths.len().max(1) as f64,
        examples: lengths.len(),
    }
}

// Shares are floored at this value so empty buckets give finite divergences (the usual PSI
// convention).
const FLOOR: f64 = 1e-4;

/// Population stability index `Σ (p − q) ln(p / q)` of `actual` against `expected`.
pub fn psi(actual: &[f64], expected: &[f64]) -> f64 {
    actual
        .iter()
        .zip(expected)
        .map(|(&a, &e)| {
            let (a, e) = (a.max(FLOOR), e.max(FLOOR));
            (a - e) * (a / e).ln()
        })
        .sum()
}

/// Kullback–Leibler divergence `KL(actual ‖ expected)` in nats.
pub fn kl(actual: &[f64], expected: &[f64]) -> f64 {
    actual
        .iter()
        .zip(expected)
        .map(|(&a, &e)| {
            let (a, e) = (a.max(FLOOR), e.max(FLOOR));
            a * (a / e).ln()
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identical_distributions_have_no_drift() {
        let p = [0.3, 0.7];
        assert!(psi(&p, &p).abs() < 1e-12);
        assert!(kl(&p, &p).abs() < 1e-12);
    }

    #[test]
    fn shifted_distribution_has_known_psi() {
        // PSI([0.5,0.5] vs [0.9,0.1]) = (0.5-0.9)ln(0.5/0.9) + (0.5-0.1)ln(0.5/0.1)
        let want = -0.4 * (0.5f64 / 0.9).ln() + 0.4 * (5.0f64).ln();
        assert!((psi(&[0.5, 0.5], &[0.9, 0.1]) - want).abs() < 1e-12);
        assert!(kl(&[0.5, 0.5], &[0.9, 0.1]) > 0.0);
    }

    #[test]
    fn reference_buckets_lengths() {
        let r = reference(&["a".into(), "b".into()], &[3, 1], &[5, 10, 300, 12]);
        assert_eq!(r.prediction_distribution, vec![0.75, 0.25]);
        assert_eq!(r.length_distribution[0], 0.25);
        assert_eq!(r.length_distribution[1], 0.5);
        assert_eq!(*r.length_distribution.last().unwrap(), 0.25);
        assert!((r.mean_length - 81.75).abs() < 1e-12);
    }
}
