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

/// [`stratified_split`] over groups of rows that must stay together (scikit-learn's group
/// splitters): identical and near-identical texts, so that no group straddles two splits and
/// tunekit's own split creates no leakage. `strata[g]` is group g's label, `weights[g]` the
/// rows it counts for (1 when de-duplication will keep one row of it). Within each label the
/// groups are shuffled with the seed and each part is filled up to ⌊n·f⌉ of the label's
/// weight n (at least one group when the label has groups to spare), the rest staying in
/// train, which always keeps one group. With one row per group this is
/// [`stratified_split`] exactly. Returns each group's part.
pub fn stratified_group_split(
    strata: &[&str],
    weights: &[usize],
    fractions: &[f64],
    seed: u64,
) -> Vec<usize> {
    let mut part = vec![0usize; strata.len()];
    for groups in shuffled_by_label(strata, seed) {
        let n: usize = groups.iter().map(|&g| weights[g]).sum();
        let targets: Vec<usize> = fractions
            .iter()
            .map(|&f| {
                let take = (n as f64 * f).round() as usize;
                if take == 0 && f > 0.0 && groups.len() > fractions.len() {
                    1
                } else {
                    take
                }
            })
            .collect();
        let mut filled = vec![0usize; fractions.len()];
        let mut train_has = false;
        for (at, &g) in groups.iter().enumerate() {
            let last = at + 1 == groups.len();
            let room = (0..fractions.len()).find(|&p| {
                filled[p] < targets[p] && (filled[p] + weights[g] <= targets[p] || filled[p] == 0)
            });
            match room {
                Some(p) if train_has || !last => {
                    // A group bigger than what is left of a target takes the part only when
                    // the part is still empty (a rare label's single big group).
                    filled[p] += weights[g];
                    part[g] = p + 1;
                }
                _ => train_has = true,
            }
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

/// Classes with fewer than `k` rows, as (label, rows), in label order: each of `k` stratified
/// folds must see every class in both its training and its held-out part, which is what
/// scikit-learn's `StratifiedKFold` needs of `n_splits` (it warns below it; tunekit refuses,
/// since a fold whose training part lacks a class cannot score its held-out rows).
pub fn classes_below(labels: &[&str], k: usize) -> Vec<(String, usize)> {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for l in labels {
        *counts.entry(l).or_default() += 1;
    }
    counts
        .into_iter()
        .filter(|(_, n)| *n < k)
        .map(|(l, n)| (l.to_string(), n))
        .collect()
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
    fn group_split_with_single_rows_is_the_row_split() {
        let l = labels(80, 23);
        let w = vec![1; l.len()];
        for seed in [1, 7, 42] {
            assert_eq!(
                stratified_group_split(&l, &w, &[0.1, 0.1], seed),
                stratified_split(&l, &[0.1, 0.1], seed)
            );
        }
    }

    #[test]
    fn group_split_keeps_fractions_of_weight() {
        // 300 groups of one label, sizes 1..=5: fractions are met in weight, not in groups.
        let l = vec!["x"; 300];
        let w: Vec<usize> = (0..300).map(|i| 1 + i % 5).collect();
        let part = stratified_group_split(&l, &w, &[0.1, 0.1], 3);
        let total: usize = w.iter().sum();
        for p in 1..3 {
            let got: usize = part
                .iter()
                .zip(&w)
                .filter(|(q, _)| **q == p)
                .map(|(_, w)| w)
                .sum();
            let want = total / 10;
            assert!(got <= want && got + 5 > want, "part {p}: {got} of {total}");
        }
    }

    #[test]
    fn classes_below_k_are_named_with_their_counts() {
        let mut l = labels(10, 4);
        l.push("rare");
        assert_eq!(
            classes_below(&l, 5),
            vec![("neg".to_string(), 4), ("rare".to_string(), 1)]
        );
        assert!(classes_below(&l, 1).is_empty());
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
