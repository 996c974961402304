//! Differentially private fine-tuning (DP-SGD, Abadi et al. 2016, as Opacus implements it):
//! Poisson-sampled batches, each example's whole gradient clipped to `max_grad_norm`, Gaussian
//! noise σ·C added to the sum, the sum divided by the expected batch size, and a privacy
//! accountant that says what the run spent.
//!
//! `[privacy.dp]` is [`DpOptions`]; [`DpPlan`] is what a run resolves it to (σ, q, δ, steps);
//! [`clip`] is the gradient step; [`accountant`] holds the accountants.

pub mod accountant;
pub mod clip;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use accountant::{Accountant, Composition};

/// `[privacy]`: de-identification is `[data.privacy]` (it rewrites the data); this section
/// bounds what the trained model can reveal about any one training example.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrivacySection {
    /// `[privacy.dp]`: differentially private training (DP-SGD).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dp: Option<DpOptions>,
}

/// `[privacy.dp]`: DP-SGD with Opacus's meaning of each key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DpOptions {
    /// The ε the whole run may spend; the noise multiplier is solved for it (unless
    /// `noise_multiplier` is given, then a plan spending more is refused).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_epsilon: Option<f64>,
    /// σ: noise standard deviation over `max_grad_norm`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub noise_multiplier: Option<f64>,
    /// δ; default the largest power of ten not above 1/(10·N), N the training examples.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delta: Option<f64>,
    /// C: every example's whole gradient (all trainable parameters) is clipped to this L2 norm.
    #[serde(default = "default_clip")]
    pub max_grad_norm: f64,
    /// `rdp` (default) or `prv`.
    #[serde(default)]
    pub accountant: Accountant,
}

fn default_clip() -> f64 {
    1.0
}

impl DpOptions {
    /// Check the keys alone (the data-dependent checks are in [`DpPlan::new`]).
    ///
    /// # Errors
    /// A message naming the key.
    pub fn validate(&self) -> std::result::Result<(), String> {
        let positive = |v: Option<f64>, key: &str| match v {
            Some(x) if !(x.is_finite() && x > 0.0) => {
                Err(format!("privacy.dp.{key} = {x}: must be a positive number"))
            }
            _ => Ok(()),
        };
        positive(self.target_epsilon, "target_epsilon")?;
        positive(self.noise_multiplier, "noise_multiplier")?;
        positive(Some(self.max_grad_norm), "max_grad_norm")?;
        if self.target_epsilon.is_none() && self.noise_multiplier.is_none() {
            return Err(
                "[privacy.dp]: give target_epsilon (the noise multiplier is then solved for) or noise_multiplier".into(),
            );
        }
        if let Some(d) = self.delta
            && !(d > 0.0 && d < 1.0)
        {
            return Err(format!("privacy.dp.delta = {d}: must be in (0, 1)"));
        }
        Ok(())
    }
}

/// The default δ for `n` training examples: the largest power of ten ≤ 1/(10·n).
pub fn default_delta(n: usize) -> f64 {
    let mut k = 0i32;
    let mut p = 1.0f64; // 10^k
    while p < 10.0 * n as f64 {
        p *= 10.0;
        k += 1;
    }
    10f64.powi(-k)
}

/// Optimiser steps per epoch under Poisson sampling at rate `batch/n` (Opacus's
/// `int(1 / sample_rate)`): an epoch sees every example once in expectation.
pub fn steps_per_epoch(n: usize, logical_batch: usize) -> usize {
    (n / logical_batch.max(1)).max(1)
}

/// A run's resolved DP-SGD: what each step does and what the run may spend.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DpPlan {
    /// σ (given or solved).
    pub noise_multiplier: f64,
    /// q = expected batch / N.
    pub sample_rate: f64,
    /// δ (given or the default).
    pub delta: f64,
    /// C.
    pub max_grad_norm: f64,
    /// The accountant.
    pub accountant: Accountant,
    /// The expected logical batch (`batch_size × gradient_accumulation`): the sum of clipped
    /// gradients and noise is divided by it.
    pub expected_batch: usize,
    /// Training examples N.
    pub examples: usize,
    /// ε the planned steps spend.
    pub planned_epsilon: f64,
    /// `target_epsilon`, if given.
    pub target_epsilon: Option<f64>,
}

impl DpPlan {
    /// Resolve `options` for `n` training examples, a logical batch of `logical_batch`,
    /// `total_steps` planned steps of which `history` (a resumed run's) are done.
    ///
    /// # Errors
    /// [`Error::Config`] (exit 2) when the batch is larger than the data, the budget cannot be
    /// reached, or a given `noise_multiplier` would spend more than `target_epsilon`.
    pub fn new(
        options: &DpOptions,
        n: usize,
        logical_batch: usize,
        total_steps: usize,
        history: &[Composition],
    ) -> Result<Self> {
        if n == 0 || logical_batch > n {
            return Err(Error::Config(format!(
                "privacy.dp: the logical batch (train.batch_size × train.gradient_accumulation = {logical_batch}) must not exceed the {n} training examples"
            )));
        }
        let q = logical_batch as f64 / n as f64;
        let delta = options.delta.unwrap_or_else(|| default_delta(n));
        let done: usize = history.iter().map(|c| c.steps).sum();
        let remaining = total_steps.saturating_sub(done);
        let sigma = match (options.noise_multiplier, options.target_epsilon) {
            (Some(s), _) => s,
            (None, Some(target)) => {
                accountant::noise_multiplier(options.accountant, target, delta, q, total_steps)?
            }
            (None, None) => {
                return Err(Error::Config(
                    "[privacy.dp]: give target_epsilon or noise_multiplier".into(),
                ));
            }
        };
        let mut planned = history.to_vec();
        push_steps(&mut planned, sigma, q, remaining);
        let planned_epsilon = options.accountant.epsilon(&planned, delta)?;
        if let Some(target) = options.target_epsilon
            && planned_epsilon > target
        {
            return Err(Error::Config(format!(
                "privacy.dp: the plan ({total_steps} steps, sample rate {q:.4e}, noise_multiplier {sigma}) spends ε = {planned_epsilon:.3} at δ = {delta:e}, above target_epsilon = {target}; raise noise_multiplier, lower train.epochs / train.max_steps, or drop noise_multiplier to have it solved"
            )));
        }
        Ok(DpPlan {
            noise_multiplier: sigma,
            sample_rate: q,
            delta,
            max_grad_norm: options.max_grad_norm,
            accountant: options.accountant,
            expected_batch: logical_batch,
            examples: n,
            planned_epsilon,
            target_epsilon: options.target_epsilon,
        })
    }

    /// The micro-batches of `epoch`: each of its `steps` logical batches is a Poisson sample
    /// (every example independently with probability q, seeded by `(seed, global step)`), cut
    /// into `accumulation` micro-batches (some possibly empty), so each accumulation group
    /// of the loop is one logical batch.
    pub fn epoch_batches(
        &self,
        seed: u64,
        epoch: usize,
        steps: usize,
        accumulation: usize,
    ) -> Vec<Vec<usize>> {
        let mut out = Vec::with_capacity(steps * accumulation);
        for s in 0..steps {
            let step = epoch * steps + s;
            let mut rng = StdRng::seed_from_u64(crate::train::step::step_seed(
                seed ^ 0x5053_414d_504c_4500,
                step,
                0,
            ));
            let sample: Vec<usize> = (0..self.examples)
                .filter(|_| rng.random::<f64>() < self.sample_rate)
                .collect();
            let per = sample.len().div_ceil(accumulation.max(1)).max(1);
            let mut chunks = sample.chunks(per).map(<[usize]>::to_vec);
            for _ in 0..accumulation.max(1) {
                out.push(chunks.next().unwrap_or_default());
            }
        }
        out
    }

    /// One line for the log.
    pub fn describe(&self) -> String {
        format!(
            "DP-SGD: noise_multiplier {:.4}, max_grad_norm {}, sample rate {:.4e} (expected batch {} of {}), δ = {:e}, planned ε = {:.3} ({}); per-example clipping replaces train.max_grad_norm (global clipping is not applied)",
            self.noise_multiplier,
            self.max_grad_norm,
            self.sample_rate,
            self.expected_batch,
            self.examples,
            self.delta,
            self.planned_epsilon,
            self.accountant.name()
        )
    }
}

/// Append `steps` steps at (σ, q) to an accountant history, merging with its last entry when
/// σ and q are the same (as Opacus's accountants do).
pub fn push_steps(history: &mut Vec<Composition>, sigma: f64, q: f64, steps: usize) {
    if steps == 0 {
        return;
    }
    if let Some(last) = history.last_mut()
        && last.noise_multiplier == sigma
        && last.sample_rate == q
    {
        last.steps += steps;
        return;
    }
    history.push(Composition {
        noise_multiplier: sigma,
        sample_rate: q,
        steps,
    });
}

/// The accountant's state, saved in every checkpoint (`state.json`), so a resumed run
/// continues it exactly.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PrivacyState {
    /// The steps taken, as (σ, q, steps).
    pub history: Vec<Composition>,
}

/// What a DP run spent (`privacy` of `metrics.json`), for the report and the model card.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PrivacyReport {
    /// ε spent by the steps taken.
    pub epsilon: f64,
    /// δ.
    pub delta: f64,
    /// The accountant (`rdp` or `prv`).
    pub accountant: Accountant,
    /// σ.
    pub noise_multiplier: f64,
    /// C.
    pub max_grad_norm: f64,
    /// q.
    pub sample_rate: f64,
    /// Noisy steps taken.
    pub steps: usize,
    /// `target_epsilon`, if given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_epsilon: Option<f64>,
}

/// The sentence the model card and the report print under the (ε, δ) figures.
pub const GUARANTEE: &str = "The guarantee covers each training example of this fine-tuning: the trained weights change the probability of any outcome by at most a factor e^ε (plus δ) whether or not that one example was present. It does not cover the pretrained model's own training data, nor a person whose data appears in several training examples (each copy counts separately, so their protection is weaker), nor the validation and test data (used for model selection and evaluation), nor the data report's statistics, the logged training loss or the preparation steps (de-duplication, outliers, de-identification), which look at the training data outside the private mechanism.";

/// Names the configuration choices DP-SGD refuses under `[privacy.dp]`, each with why.
pub fn refusals(config: &crate::config::RunConfig) -> Vec<String> {
    let mut out = Vec::new();
    let t = &config.train;
    if t.oversample {
        out.push("train.oversample repeats examples within an epoch, so one example could enter a batch several times and the per-example bound (and the Poisson sampling the accountant assumes) would not hold".into());
    }
    if t.class_weights == crate::config::ClassWeights::Balanced {
        out.push("train.class_weights = \"balanced\" is computed from the training labels outside the private mechanism (a statistic that leaks the label counts)".into());
    }
    if config.distill.is_some() {
        out.push("[distill]: the teacher was trained on the data without a privacy guarantee and its soft targets would leak it".into());
    }
    if config.task.kind == crate::task::TaskKind::Embedding {
        out.push("task.kind = \"embedding\": its in-batch contrastive loss couples the examples of a batch, so an example's gradient depends on the others and per-example clipping does not bound its influence".into());
    }
    out
}

#[cfg(test)]
mod tests;
