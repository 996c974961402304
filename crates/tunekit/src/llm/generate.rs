//! Text generation with a KV cache: greedy by default, or sampling with transformers' logits
//! processors in transformers' order — repetition penalty, temperature, top-k, top-p — from a
//! seeded generator; stops at a stop token (eos), a stop string, or `max_new_tokens`.

use burn::tensor::{Int, Tensor, TensorData};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::error::{Error, Result};
use crate::model::llama::{KvCache, Llama};
use crate::model::weights::to_vec;

/// How to pick the next tokens.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerationConfig {
    /// New tokens at most.
    pub max_new_tokens: usize,
    /// Sampling temperature; `None` (or 0): greedy (argmax), and top-k/top-p are unused.
    pub temperature: Option<f32>,
    /// Keep the `k` most likely tokens (0: all).
    pub top_k: usize,
    /// Keep the smallest set of tokens whose probability reaches `p` (1: all).
    pub top_p: f32,
    /// transformers' `repetition_penalty`: logits of tokens already in the sequence are
    /// divided by it (multiplied when negative); 1: none.
    pub repetition_penalty: f32,
    /// Seed of the sampler.
    pub seed: u64,
    /// Token ids that end generation (not part of the completion), e.g. eos.
    pub stop_tokens: Vec<u32>,
    /// Strings that end generation; the completion is cut before the first one.
    pub stop_strings: Vec<String>,
}

impl Default for GenerationConfig {
    fn default() -> Self {
        GenerationConfig {
            max_new_tokens: 64,
            temperature: None,
            top_k: 0,
            top_p: 1.0,
            repetition_penalty: 1.0,
            seed: 0,
            stop_tokens: Vec::new(),
            stop_strings: Vec::new(),
        }
    }
}

impl GenerationConfig {
    /// Reject values that make no sense (temperature < 0, top-p outside (0, 1], penalty ≤ 0).
    pub fn validate(&self) -> Result<()> {
        if self
            .temperature
            .is_some_and(|t| !(t >= 0.0 && t.is_finite()))
        {
            return Err(Error::Config("--temperature must be ≥ 0".into()));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(Error::Config("--top-p must be in (0, 1]".into()));
        }
        if !(self.repetition_penalty > 0.0 && self.repetition_penalty.is_finite()) {
            return Err(Error::Config("--repetition-penalty must be > 0".into()));
        }
        Ok(())
    }
}

/// Why generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    /// A stop token was produced.
    StopToken,
    /// A stop string appeared in the text.
    StopString,
    /// `max_new_tokens` were produced.
    Length,
}

/// A completion.
#[derive(Debug, Clone, PartialEq)]
pub struct Generation {
    /// New token ids (the stop token excluded).
    pub ids: Vec<u32>,
    /// Their text (cut before a stop string).
    pub text: String,
    /// Why it ended.
    pub stop: StopReason,
}

/// transformers' `RepetitionPenaltyLogitsProcessor` over the tokens `seen`.
pub fn apply_repetition_penalty(logits: &mut [f32], seen: &[u32], penalty: f32) {
    if penalty == 1.0 {
        return;
    }
    let mut done = std::collections::HashSet::new();
    for &t in seen {
        if let Some(l) = logits.get_mut(t as usize).filter(|_| done.insert(t)) {
            *l = if *l < 0.0 { *l * penalty } else { *l / penalty };
        }
    }
}

/// Index of the largest logit (the first on ties, as `torch.argmax`).
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0usize;
    for (i, &l) in logits.iter().enumerate() {
        if l > logits[best] {
            best = i;
        }
    }
    best as u32
}

/// Sample from `logits` after temperature, top-k and top-p (transformers' warpers).
pub fn sample(logits: &[f32], cfg: &GenerationConfig, rng: &mut StdRng) -> u32 {
    let t = cfg.temperature.unwrap_or(1.0).max(1e-6);
    let mut order: Vec<usize> = (0..logits.len()).collect();
    order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]).then(a.cmp(&b)));
    if cfg.top_k > 0 {
        order.truncate(cfg.top_k.max(1));
    }
    let max = order.first().map_or(0.0, |&i| logits[i] / t);
    let mut probs: Vec<f64> = order
        .iter()
        .map(|&i| f64::from(logits[i] / t - max).exp())
        .collect();
    let total: f64 = probs.iter().sum();
    probs.iter_mut().for_each(|p| *p /= total);
    if cfg.top_p < 1.0 {
        // Keep tokens until the cumulative probability reaches top_p (at least one).
        let mut cum = 0.0;
        let mut keep = probs.len();
        for (i, p) in probs.iter().enumerate() {
            cum += p;
            if cum >= f64::from(cfg.top_p) {
                keep = i + 1;
                break;
            }
        }
        probs.truncate(keep);
        order.truncate(keep);
    }
    let total: f64 = probs.iter().sum();
    let mut r = rng.random::<f64>() * total;
    for (p, &i) in probs.iter().zip(&order) {
        if r < *p {
            return i as u32;
        }
        r -= p;
    }
    order.last().map_or(0, |&i| i as u32)
}

/// Generate after `prompt` (token ids, non-empty) with `model`; `decode` turns new ids into
/// text (for stop strings and the result).
pub fn generate(
    model: &Llama,
    prompt: &[u32],
    cfg: &GenerationConfig,
    decode: &dyn Fn(&[u32]) -> Result<String>,
) -> Result<Generation> {
    cfg.validate()?;
    if prompt.is_empty() {
        return Err(Error::Input("the prompt has no tokens".into()));
    }
    let device = model.embed_tokens.weight.val().device();
    let greedy = cfg.temperature.is_none_or(|t| t == 0.0);
    let mut rng = StdRng::seed_from_u64(cfg.seed);
    let mut cache = KvCache::new();
    let mut seen: Vec<u32> = prompt.to_vec();
    let mut new: Vec<u32> = Vec::new();
    let mut input: Vec<u32> = prompt.to_vec();
    let ids_tensor = |ids: &[u32]| {
        let v: Vec<i64> = ids.iter().map(|&x| i64::from(x)).collect();
        Tensor::<2, Int>::from_data(TensorData::new(v, [1, ids.len()]), &device)
    };
    for _ in 0..cfg.max_new_tokens {
        let logits = model.forward(ids_tensor(&input), &mut cache, true);
        let mut row = to_vec(logits)?;
        apply_repetition_penalty(&mut row, &seen, cfg.repetition_penalty);
        let next = if greedy {
            argmax(&row)
        } else {
            sample(&row, cfg, &mut rng)
        };
        if cfg.stop_tokens.contains(&next) {
            let text = decode(&new)?;
            return Ok(Generation {
                ids: new,
                text,
                stop: StopReason::StopToken,
            });
        }
        new.push(next);
        seen.push(next);
        input = vec![next];
        if !cfg.stop_strings.is_empty() {
            let text = decode(&new)?;
            let cut = cfg
                .stop_strings
                .iter()
                .filter_map(|s| text.find(s.as_str()))
                .min();
            if let Some(at) = cut {
                return Ok(Generation {
                    ids: new,
                    text: text[..at].to_string(),
                    stop: StopReason::StopString,
                });
            }
        }
    }
    let text = decode(&new)?;
    Ok(Generation {
        ids: new,
        text,
        stop: StopReason::Length,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repetition_penalty_divides_positive_and_multiplies_negative_once() {
        let mut l = vec![2.0, -2.0, 1.0];
        apply_repetition_penalty(&mut l, &[0, 1, 0], 2.0);
        assert_eq!(l, vec![1.0, -4.0, 1.0]);
    }

    #[test]
    fn top_k_one_and_tiny_top_p_are_greedy_and_seed_repeats() {
        let logits = vec![0.1, 3.0, 2.9, -1.0];
        let mut rng = StdRng::seed_from_u64(1);
        let k1 = GenerationConfig {
            temperature: Some(1.0),
            top_k: 1,
            ..Default::default()
        };
        let p = GenerationConfig {
            temperature: Some(1.0),
            top_p: 0.01,
            ..Default::default()
        };
        for _ in 0..20 {
            assert_eq!(sample(&logits, &k1, &mut rng), 1);
            assert_eq!(sample(&logits, &p, &mut rng), 1);
        }
        let free = GenerationConfig {
            temperature: Some(5.0),
            ..Default::default()
        };
        let draw = |seed| {
            let mut r = StdRng::seed_from_u64(seed);
            (0..50)
                .map(|_| sample(&logits, &free, &mut r))
                .collect::<Vec<_>>()
        };
        assert_eq!(draw(7), draw(7));
        assert!(
            draw(7).iter().any(|&t| t != 1),
            "temperature 5 never left the argmax"
        );
        assert_eq!(argmax(&[1.0, 3.0, 3.0]), 1);
    }
}
