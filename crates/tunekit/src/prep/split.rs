//! Stratified splits and K-fold assignment, seeded, so that a single labelled file becomes
//! reproducible train/validation/test sets with each label in the same proportion.

use std::collections::BTreeMap;

use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};

/// `[data.split]`: carve the splits that have no file out of the training file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SplitOptions {
    /// Fraction of rows for validation (when `data.validation` is not given).
    #[serde(default = "tenth")]
    pub validation: f64,
    /// Fraction of rows for test (when `data.test` is not given).
    #[serde(default = "tenth")]
    pub test: f64,
    /// Shuffle seed.
    #[serde(default = "default_seed")]
    pub seed: u64,
}

fn tenth() -> f64 {
    0.1
}
fn default_seed() -> u64 {
    42
}

impl Default for SplitOptions {
    fn default() -> Self {
        SplitOptions {
            validation: 0.1,
            test: 0.1,
            seed: 42,
        }
    }
}

/// Row indices per label, each list shuffled with the seed (labels in sorted order, so the
/// result does not depend on hash order).
fn shuffled_by_label(labels: &[&str], seed: u64) -> Vec<Vec<usize>> {
    let mut by_label: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, l) in labels.iter().enumerate() {
        by_label.entry(l).or_default().push(i);
    }
    let mut rng = StdRng::seed_from_u64(seed);
    by_label
        .into_values()
        .map(|mut rows| {
            rows.shuffle(&mut rng);
            rows
        })
        .collect()
}

/// Assign each row to a part: 0 = train, then one part per fraction (e.g. validation, test).
/// Within each label, ⌊n·f⌉ rows go to each fraction, at least one when the label has rows
/// to spare, so rare labels still appear in every split.
pub fn stratified_split(labels: &[&str], fractions: &[f64], seed: u64) -> Vec<usize> {
    let mut part = vec![0usize; labels.len()];
    for rows in shuffled_by_label(labels, seed) {
        let n = rows.len();
        let mut at = 0;
        for (p, &f) in fractions.iter().enumerate() {
            let mut take = (n as f64 * f).round() as usize;
            if take == 0 && f > 0.0 && n > fractions.len() {
                take = 1;
            }
            let take = take.min(n.saturating_sub(at + 1));
            for &i in &rows[at..at + take] {
                part[i] = p + 1;
            }
            at += take;
        }
    }
    part
}

/// Assign each row to one of `k` folds, stratified by label: fold sizes differ by at most
/// one overall and each label is spread evenly.
pub fn stratified_folds(labels: &[&str], k: usize, seed: u64) -> Vec<usize> {
    let mut fold = vec![0usize; labels.len()];
    let mut next = 0usize;
    for rows in shuffled_by_label(labels, seed) {
        for i in rows {
            fold[i] = next % k.max(1);
            next += 1;
        }
    }
    fold
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pos: usize, neg: usize) -> Vec<&'static str> {
        let mut v = vec!["pos"; pos];
        v.extend(vec!["neg"; neg]);
        v
    }

    #[test]
    fn split_keeps_label_proportions_and_is_seeded() {
        let l = labels(800, 200);
        let part = stratified_split(&l, &[0.1, 0.2], 7);
        let count = |p: usize, label: &str| {
            part.iter()
                .zip(&l)
                .filter(|(q, m)| **q == p && **m == label)
                .count()
        };
        assert_eq!((count(1, "pos"), count(1, "neg")), (80, 20));
        assert_eq!((count(2, "pos"), count(2, "neg")), (160, 40));
        assert_eq!((count(0, "pos"), count(0, "neg")), (560, 140));
        assert_eq!(part, stratified_split(&l, &[0.1, 0.2], 7));
        assert_ne!(part, stratified_split(&l, &[0.1, 0.2], 8));
    }

    #[test]
    fn rare_labels_reach_every_split_but_train_keeps_one() {
        let l = labels(100, 3);
        let part = stratified_split(&l, &[0.1, 0.1], 1);
        for p in 0..3 {
            assert!(
                part.iter().zip(&l).any(|(q, m)| *q == p && *m == "neg"),
                "part {p}"
            );
        }
        let one = labels(0, 1);
        assert_eq!(stratified_split(&one, &[0.5, 0.5], 1), [0]);
    }

    #[test]
    fn folds_are_balanced_and_stratified() {
        let l = labels(50, 25);
        let fold = stratified_folds(&l, 5, 3);
        for f in 0..5 {
            let rows: Vec<&&str> = fold
                .iter()
                .zip(&l)
                .filter(|(g, _)| **g == f)
                .map(|(_, m)| m)
                .collect();
            assert_eq!(rows.len(), 15);
            assert_eq!(rows.iter().filter(|m| ***m == "pos").count(), 10);
        }
    }
}
