//! Privacy accountants: how much privacy (ε at a given δ) a history of noisy, Poisson-sampled
//! gradient steps has spent, and the noise multiplier that makes a planned run spend a target
//! ε. Two accountants, with Opacus 1.6's numbers: [`rdp`] (Rényi DP) and [`prv`] (privacy
//! random variables; tighter).
//!
//! To add an accountant: a file here with `fn epsilon(history, delta) -> Result<f64>`, a
//! variant of [`Accountant`] and its arm in [`Accountant::epsilon`]; the solver, the
//! refusals and the reports use it through that one method.

pub mod fft;
pub mod prv;
pub mod rdp;
pub mod special;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// `steps` steps of the Gaussian mechanism with noise multiplier σ on a Poisson sample of
/// rate q (Opacus's history entry `(noise_multiplier, sample_rate, steps)`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Composition {
    /// σ: the noise's standard deviation over the clipping bound.
    pub noise_multiplier: f64,
    /// q: each example's probability of being in a step's batch.
    pub sample_rate: f64,
    /// Steps taken with these σ and q.
    pub steps: usize,
}

/// Which accountant converts the history into ε (`privacy.dp.accountant`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Accountant {
    /// Rényi DP with Opacus's orders and conversion.
    #[default]
    Rdp,
    /// Privacy random variables (Gopi et al. 2021), with Opacus's ε error 0.01 added.
    Prv,
}

impl Accountant {
    /// The name in configs and reports.
    pub fn name(self) -> &'static str {
        match self {
            Accountant::Rdp => "rdp",
            Accountant::Prv => "prv",
        }
    }

    /// ε spent by `history` at `delta` (0 for an empty history).
    ///
    /// # Errors
    /// The PRV accountant's refusals ([`prv::epsilon`]).
    pub fn epsilon(self, history: &[Composition], delta: f64) -> Result<f64> {
        match self {
            Accountant::Rdp => Ok(rdp::epsilon(history, delta)),
            Accountant::Prv => prv::epsilon(history, delta, prv::EPS_ERROR),
        }
    }
}

/// Opacus's `MAX_SIGMA`: the solver gives up beyond it.
pub const MAX_SIGMA: f64 = 1e6;
/// Opacus's default `epsilon_tolerance` of the noise search.
pub const EPSILON_TOLERANCE: f64 = 0.01;

/// The noise multiplier σ for which `steps` steps at sample rate `sample_rate` spend at most
/// `target_epsilon` at `delta`, found as Opacus's `get_noise_multiplier` finds it: doubling σ
/// from 20 until ε ≤ target, then bisecting until target − ε ≤ `EPSILON_TOLERANCE`; the
/// upper end (ε ≤ target) is returned.
///
/// # Errors
/// [`Error::Config`] when even σ = 10⁶ does not reach the target ("the privacy budget is too
/// low"), and the accountant's own errors.
pub fn noise_multiplier(
    accountant: Accountant,
    target_epsilon: f64,
    delta: f64,
    sample_rate: f64,
    steps: usize,
) -> Result<f64> {
    let eps_at = |sigma: f64| {
        accountant.epsilon(
            &[Composition {
                noise_multiplier: sigma,
                sample_rate,
                steps,
            }],
            delta,
        )
    };
    let (mut sigma_low, mut sigma_high) = (0.0f64, 10.0f64);
    let mut eps_high = f64::INFINITY;
    while eps_high > target_epsilon {
        sigma_high *= 2.0;
        eps_high = eps_at(sigma_high)?;
        if sigma_high > MAX_SIGMA {
            return Err(Error::Config(format!(
                "privacy.dp.target_epsilon = {target_epsilon}: the privacy budget is too low for {steps} steps at sample rate {sample_rate:.3e} (no noise multiplier up to {MAX_SIGMA:e} reaches it)"
            )));
        }
    }
    while target_epsilon - eps_high > EPSILON_TOLERANCE {
        let sigma = (sigma_low + sigma_high) / 2.0;
        let eps = eps_at(sigma)?;
        if eps < target_epsilon {
            sigma_high = sigma;
            eps_high = eps;
        } else {
            sigma_low = sigma;
        }
    }
    Ok(sigma_high)
}
