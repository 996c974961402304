//! Sensitivity analysis (`tunekit eval --robustness`): the evaluation inputs are perturbed
//! the ways real inputs differ from clean training data — typos (adjacent characters swapped
//! or a character dropped), casing, missing punctuation, truncation — and for each the
//! accuracy, macro-F1 and the share of predictions that flip relative to the clean input are
//! reported. Perturbations are seeded, so two runs compare.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::data::Example;
use crate::error::Result;
use crate::infer::{argmax, predict_probs};
use crate::metrics::ConfusionAccumulator;
use crate::predictor::Predictor;
use crate::tokenize::Tokens;

/// One kind of perturbation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Perturbation {
    /// In 10 % of the words (at least one), two adjacent letters swapped.
    CharSwap,
    /// In 10 % of the words (at least one), one letter dropped.
    CharDrop,
    /// Everything upper-case.
    Upper,
    /// Everything lower-case.
    Lower,
    /// All punctuation removed.
    NoPunctuation,
    /// Only the first k word pieces kept (plus the special tokens).
    Truncate(usize),
}

/// The perturbations `--robustness` runs.
pub const DEFAULT: [Perturbation; 6] = [
    Perturbation::CharSwap,
    Perturbation::CharDrop,
    Perturbation::Upper,
    Perturbation::Lower,
    Perturbation::NoPunctuation,
    Perturbation::Truncate(8),
];

/// Result of one perturbation.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PerturbationResult {
    /// What was done.
    pub perturbation: Perturbation,
    /// Accuracy on the perturbed inputs.
    pub accuracy: f64,
    /// Macro-F1 on the perturbed inputs.
    pub macro_f1: f64,
    /// Accuracy change against the clean inputs.
    pub accuracy_delta: f64,
    /// Share of examples whose predicted label differs from the clean prediction.
    pub flip_rate: f64,
    /// Examples whose text the perturbation changed.
    pub changed: usize,
}

/// Typo in one word: swap two adjacent letters, or drop one.
fn typo(word: &str, swap: bool, rng: &mut StdRng) -> String {
    let mut chars: Vec<char> = word.chars().collect();
    let letters: Vec<usize> = (0..chars.len())
        .filter(|&i| chars[i].is_alphabetic())
        .collect();
    if swap {
        let pairs: Vec<usize> = letters
            .iter()
            .copied()
            .filter(|&i| {
                i + 1 < chars.len() && chars[i + 1].is_alphabetic() && chars[i] != chars[i + 1]
            })
            .collect();
        if let Some(&i) = pairs.get(rng.random_range(0..pairs.len().max(1))) {
            chars.swap(i, i + 1);
        }
    } else if letters.len() > 1 {
        chars.remove(letters[rng.random_range(0..letters.len())]);
    }
    chars.into_iter().collect()
}

/// Apply a text-level perturbation (truncation works on tokens, see [`evaluate`]).
pub fn perturb(p: Perturbation, text: &str, rng: &mut StdRng) -> String {
    match p {
        Perturbation::CharSwap | Perturbation::CharDrop => {
            let mut words: Vec<String> = text.split(' ').map(str::to_string).collect();
            let candidates: Vec<usize> = (0..words.len())
                .filter(|&i| words[i].chars().filter(|c| c.is_alphabetic()).count() >= 2)
                .collect();
            let n = ((candidates.len() as f64 * 0.1).round() as usize).max(1);
            let mut chosen = candidates;
            rand::seq::SliceRandom::shuffle(chosen.as_mut_slice(), rng);
            for &i in chosen.iter().take(n) {
                words[i] = typo(&words[i], p == Perturbation::CharSwap, rng);
            }
            words.join(" ")
        }
        Perturbation::Upper => text.to_uppercase(),
        Perturbation::Lower => text.to_lowercase(),
        Perturbation::NoPunctuation => {
            let kept: String = text
                .chars()
                .filter(|c| !c.is_ascii_punctuation() && !matches!(c, '“' | '”' | '‘' | '’' | '…'))
                .collect();
            kept.split_whitespace().collect::<Vec<_>>().join(" ")
        }
        Perturbation::Truncate(_) => text.to_string(),
    }
}

/// Keep the first `k` word pieces of each segment-0 sequence: `[CLS] t1..tk [SEP]`.
fn truncate_tokens(t: &Tokens, k: usize) -> Tokens {
    if t.ids.len() <= k + 2 {
        return t.clone();
    }
    let mut ids = t.ids[..=k].to_vec();
    ids.push(*t.ids.last().unwrap_or(&0));
    let mut type_ids = t.type_ids[..=k].to_vec();
    type_ids.push(0);
    Tokens {
        ids,
        type_ids,
        truncated: true,
    }
}

/// Evaluate `clf` on clean and perturbed versions of `examples` (with class ids `labels`).
pub fn evaluate(
    clf: &Predictor,
    examples: &[Example],
    labels: &[usize],
    batch_size: usize,
    seed: u64,
) -> Result<Vec<PerturbationResult>> {
    let predict = |tokens: &[Tokens]| -> Result<Vec<usize>> {
        let (probs, _) = predict_probs(
            &clf.model,
            tokens,
            None,
            batch_size,
            clf.tokenizer.pad_id(),
            &clf.device,
        )?;
        Ok(probs.iter().map(|p| argmax(p)).collect())
    };
    let clean_tokens = clf.tokenize(examples)?;
    let clean = predict(&clean_tokens)?;
    let score = |preds: &[usize]| {
        let mut acc = ConfusionAccumulator::new(clf.labels.clone());
        acc.update(labels, preds);
        let m = acc.finish();
        (m.accuracy, m.macro_f1)
    };
    let (clean_accuracy, _) = score(&clean);
    let mut out = Vec::new();
    for p in DEFAULT {
        let mut rng = StdRng::seed_from_u64(seed);
        let (tokens, changed) = match p {
            Perturbation::Truncate(k) => {
                let t: Vec<Tokens> = clean_tokens.iter().map(|t| truncate_tokens(t, k)).collect();
                let changed = t
                    .iter()
                    .zip(&clean_tokens)
                    .filter(|(a, b)| a.ids != b.ids)
                    .count();
                (t, changed)
            }
            _ => {
                let perturbed: Vec<Example> = examples
                    .iter()
                    .map(|e| Example {
                        text: perturb(p, &e.text, &mut rng),
                        text_pair: e.text_pair.as_ref().map(|t| perturb(p, t, &mut rng)),
                        ..e.clone()
                    })
                    .collect();
                let changed = perturbed
                    .iter()
                    .zip(examples)
                    .filter(|(a, b)| a.text != b.text || a.text_pair != b.text_pair)
                    .count();
                (clf.tokenize(&perturbed)?, changed)
            }
        };
        let preds = predict(&tokens)?;
        let (accuracy, macro_f1) = score(&preds);
        let flips = preds.iter().zip(&clean).filter(|(a, b)| a != b).count();
        out.push(PerturbationResult {
            perturbation: p,
            accuracy,
            macro_f1,
            accuracy_delta: accuracy - clean_accuracy,
            flip_rate: flips as f64 / labels.len().max(1) as f64,
            changed,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn perturbations_do_what_they_say() {
        let mut rng = StdRng::seed_from_u64(1);
        let text = "The movie, frankly, was wonderful and moving!";
        let swap = perturb(Perturbation::CharSwap, text, &mut rng);
        assert_ne!(swap, text);
        assert_eq!(swap.len(), text.len());
        let mut a: Vec<char> = swap.chars().collect();
        let mut b: Vec<char> = text.chars().collect();
        a.sort_unstable();
        b.sort_unstable();
        assert_eq!(a, b, "a swap keeps the letters");
        let drop = perturb(Perturbation::CharDrop, text, &mut rng);
        assert_eq!(drop.chars().count(), text.chars().count() - 1);
        assert_eq!(perturb(Perturbation::Upper, "Ab c", &mut rng), "AB C");
        assert_eq!(
            perturb(Perturbation::NoPunctuation, text, &mut rng),
            "The movie frankly was wonderful and moving"
        );
        let t = Tokens {
            ids: vec![101, 1, 2, 3, 4, 102],
            type_ids: vec![0; 6],
            truncated: false,
        };
        assert_eq!(truncate_tokens(&t, 2).ids, [101, 1, 2, 102]);
        assert_eq!(truncate_tokens(&t, 9).ids, t.ids);
    }
}
