//! Tree-structured Parzen Estimator (Bergstra et al., "Algorithms for Hyper-Parameter
//! Optimization", NeurIPS 2011), following Optuna's `TPESampler` in its independent
//! (univariate) mode — Optuna's default up to 4.x.
//!
//! The idea: split the finished trials into the best `γ(n)` ("below") and the rest ("above"),
//! fit a density to each — `l(x)` and `g(x)` — per parameter, draw candidates from `l` and keep
//! the one maximising `l(x) / g(x)`, which is proportional to expected improvement under the
//! TPE model. Each parameter is handled on its own (no interactions).
//!
//! What matches Optuna (`optuna/samplers/_tpe/`, checked against 5.0.0, whose densities the
//! test `parzen_densities_match_optuna` pins to 1e-8): the defaults (`n_startup_trials = 10`,
//! `n_ei_candidates = 24`, `γ(n) = min(⌈0.1·n⌉, 25)`, `default_weights`, prior weight 1, magic
//! clip on, endpoints off, prior on); the below/above split, including pruned trials ranked by
//! (deepest step, then last intermediate value) and used to fill "below" only when fewer than
//! `γ(n)` trials completed (so usually they sit in "above"); the bandwidth rule (each point's
//! sigma is the larger distance to its sorted neighbours, the range ends being the outer
//! neighbours and the prior *not* a neighbour — Optuna ≥ 3; the extreme points use their inner
//! neighbour only; clipped to `[range / min(100, 1 + kernels), range]`, kernels counting the
//! prior); the prior kernel at the middle of the range with sigma = range; truncated Gaussians
//! on the internal coordinate (log for log scales); integers as *discrete* truncated Gaussians
//! whose probability is the mass of the cell `[v − ½, v + ½]` (in log space for `logint`), as
//! Optuna does rather than "continuous then round"; the categorical kernels (each observation
//! puts `1 + prior_weight/k'` on its option and `prior_weight/k'` on the others, `k'` =
//! kernels, plus a uniform prior kernel).
//!
//! Deviations from Optuna:
//! - independent mode only: Optuna 5.0 made `multivariate=True` (one joint Parzen estimator
//!   over all parameters) and `constant_liar=True` the defaults for single-objective studies;
//!   neither is implemented, nor group mode or constraints;
//! - truncated normals are drawn by rejection instead of the inverse CDF. Same distribution
//!   (every kernel centre lies inside the range and sigma ≤ range, so at least a third of draws
//!   are accepted), different random stream;
//! - the random numbers come from ChaCha seeded with `(seed, trial number)`, not a stateful
//!   NumPy generator, so proposals are a function of the history (see [`super::Sampler`]);
//! - trials whose values do not fit the current space (edited since) are dropped entirely,
//!   where Optuna filters per parameter by name — positional values carry no names;
//! - `consider_prior = false` is still honoured (Optuna ≥ 4.3 ignores it and always uses the
//!   prior).

use rand::Rng;

use super::space::{Distribution, SearchSpace, Value};
use super::{Direction, Sampler, Trial, TrialState, next_trial_number, trial_rng};

/// Optuna's `default_gamma`: the number of trials in the "below" (good) group out of `n`.
pub fn default_gamma(n: usize) -> usize {
    n.div_ceil(10).min(25)
}

/// Optuna's `default_weights`: the weight of each of `n` observations, oldest first. All ones
/// below 25; otherwise the oldest `n − 25` ramp linearly from `1/n` to 1 and the most recent 25
/// weigh 1, so that early random exploration fades as the search matures.
pub fn default_weights(n: usize) -> Vec<f64> {
    if n < 25 {
        return vec![1.0; n];
    }
    let ramp_len = n - 25;
    let start = 1.0 / n as f64;
    let mut w: Vec<f64> = match ramp_len {
        0 => Vec::new(),
        // numpy.linspace(start, 1, num=1) is [start].
        1 => vec![start],
        _ => (0..ramp_len)
            .map(|i| start + (1.0 - start) * i as f64 / (ramp_len - 1) as f64)
            .collect(),
    };
    w.extend(std::iter::repeat_n(1.0, 25));
    w
}

/// TPE settings; [`Default`] is Optuna's `TPESampler()` defaults.
#[derive(Debug, Clone, Copy)]
pub struct TpeOptions {
    /// Trials (completed or pruned) sampled at random before TPE takes over.
    pub n_startup_trials: usize,
    /// Candidates drawn from `l(x)` per parameter per trial.
    pub n_ei_candidates: usize,
    /// Size of the "below" group given the number of finished trials.
    pub gamma: fn(usize) -> usize,
    /// Observation weights given their count, oldest first.
    pub weights: fn(usize) -> Vec<f64>,
    /// Weight of the prior kernel relative to one observation.
    pub prior_weight: f64,
    /// Add the prior kernel (always on in Optuna ≥ 4.3).
    pub consider_prior: bool,
    /// Floor bandwidths at `range / min(100, 1 + kernels)` so a few close points cannot make
    /// `l(x)` a set of spikes.
    pub consider_magic_clip: bool,
    /// Let the range ends count as neighbours of the extreme points when choosing bandwidths.
    pub consider_endpoints: bool,
}

impl Default for TpeOptions {
    fn default() -> Self {
        TpeOptions {
            n_startup_trials: 10,
            n_ei_candidates: 24,
            gamma: default_gamma,
            weights: default_weights,
            prior_weight: 1.0,
            consider_prior: true,
            consider_magic_clip: true,
            consider_endpoints: false,
        }
    }
}

/// The TPE sampler (independent, Optuna defaults unless [`TpeSampler::with_options`]).
#[derive(Debug, Clone)]
pub struct TpeSampler {
    seed: u64,
    options: TpeOptions,
}

impl TpeSampler {
    /// TPE with Optuna's defaults. Its start-up proposals equal [`super::RandomSampler`]'s with
    /// the same seed.
    pub fn new(seed: u64) -> Self {
        Self::with_options(seed, TpeOptions::default())
    }

    /// TPE with explicit settings.
    pub fn with_options(seed: u64, options: TpeOptions) -> Self {
        TpeSampler { seed, options }
    }

    /// The settings in use.
    pub fn options(&self) -> &TpeOptions {
        &self.options
    }
}

impl Sampler for TpeSampler {
    fn sample(
        &mut self,
        space: &SearchSpace,
        history: &[Trial],
        direction: Direction,
    ) -> Vec<Value> {
        let mut rng = trial_rng(self.seed, next_trial_number(history));
        // Completed (with a finite objective) and pruned trials inform the model; running and
        // failed ones do not (Optuna without constant liar).
        let mut finished: Vec<&Trial> = history
            .iter()
            .filter(|t| {
                (t.complete_objective().is_some() || t.state == TrialState::Pruned)
                    && space.contains(&t.values)
            })
            .collect();
        if finished.len() < self.options.n_startup_trials || finished.is_empty() {
            return space.sample_uniform(&mut rng);
        }
        finished.sort_by_key(|t| t.number);
        let n_below = (self.options.gamma)(finished.len());
        let (below, above) = split_trials(&finished, n_below, direction);
        space
            .params
            .iter()
            .enumerate()
            .map(|(i, param)| {
                let obs = |group: &[&Trial]| -> Vec<f64> {
                    group
                        .iter()
                        .filter_map(|t| param.dist.to_internal(&t.values[i]))
                        .collect()
                };
                let l = Parzen::fit(&param.dist, &obs(&below), &self.options);
                let g = Parzen::fit(&param.dist, &obs(&above), &self.options);
                let mut best: Option<(Value, f64)> = None;
                for _ in 0..self.options.n_ei_candidates.max(1) {
                    let candidate = l.sample(&param.dist, &mut rng);
                    let acq =
                        l.log_pdf(&param.dist, &candidate) - g.log_pdf(&param.dist, &candidate);
                    // First maximum wins, as numpy.argmax; NaN (−∞ − −∞) never wins.
                    if best.is_none() || best.is_some_and(|(_, b)| acq > b) {
                        best = Some((
                            candidate,
                            if acq.is_nan() { f64::NEG_INFINITY } else { acq },
                        ));
                    }
                }
                best.map_or_else(|| param.dist.sample_uniform(&mut rng), |(v, _)| v)
            })
            .collect()
    }
}

/// Optuna's `_split_trials` for one objective: the best `n_below` completed trials go below;
/// if fewer completed, the best pruned ones (deepest step first, then best last value) fill up.
/// Both groups come back ordered by trial number, which is what the recency weights assume.
fn split_trials<'a>(
    finished: &[&'a Trial],
    n_below: usize,
    direction: Direction,
) -> (Vec<&'a Trial>, Vec<&'a Trial>) {
    let mut complete: Vec<(&Trial, f64)> = finished
        .iter()
        .filter_map(|t| t.complete_objective().map(|y| (*t, y)))
        .collect();
    // Stable sorts: ties keep trial-number order, as Python's `sorted`.
    complete.sort_by(|a, b| match direction {
        Direction::Minimize => a.1.total_cmp(&b.1),
        Direction::Maximize => b.1.total_cmp(&a.1),
    });
    let mut pruned: Vec<(&Trial, (f64, f64))> = finished
        .iter()
        .filter(|t| t.state == TrialState::Pruned)
        .map(|t| (*t, pruned_score(t, direction)))
        .collect();
    pruned.sort_by(|a, b| a.1.0.total_cmp(&b.1.0).then(a.1.1.total_cmp(&b.1.1)));

    let n_complete_below = n_below.min(complete.len());
    let n_pruned_below = (n_below - n_complete_below).min(pruned.len());
    let mut below: Vec<&Trial> = Vec::new();
    let mut above: Vec<&Trial> = Vec::new();
    for (i, (t, _)) in complete.iter().enumerate() {
        if i < n_complete_below {
            below.push(t)
        } else {
            above.push(t)
        }
    }
    for (i, (t, _)) in pruned.iter().enumerate() {
        if i < n_pruned_below {
            below.push(t)
        } else {
            above.push(t)
        }
    }
    below.sort_by_key(|t| t.number);
    above.sort_by_key(|t| t.number);
    (below, above)
}

/// Optuna's `_get_pruned_trial_score`: smaller is better.
fn pruned_score(trial: &Trial, direction: Direction) -> (f64, f64) {
    match trial.last_report() {
        None => (1.0, 0.0),
        Some((step, v)) if v.is_nan() => (-(step as f64), f64::INFINITY),
        Some((step, v)) => match direction {
            Direction::Minimize => (-(step as f64), v),
            Direction::Maximize => (-(step as f64), -v),
        },
    }
}

/// A one-parameter Parzen estimator: a weighted mixture of kernels on the internal coordinate.
#[derive(Debug, Clone)]
enum Parzen {
    /// Truncated Gaussians on `[low, high]` (the internal bounds).
    Numeric {
        log_weights: Vec<f64>,
        weights: Vec<f64>,
        mus: Vec<f64>,
        sigmas: Vec<f64>,
        low: f64,
        high: f64,
        /// `ln` of each kernel's mass inside `[low, high]`, its truncation normaliser.
        log_norms: Vec<f64>,
    },
    /// The mixture collapsed into one probability per option (identical distribution).
    Categorical { probs: Vec<f64> },
}

/// Mixture weights: the observation weights plus the prior's, normalised (Optuna's
/// `_ParzenEstimator.__init__`).
fn mixture_weights(n: usize, options: &TpeOptions) -> Vec<f64> {
    if n == 0 {
        return vec![1.0];
    }
    let mut w = (options.weights)(n);
    w.resize(n, 1.0);
    if options.consider_prior {
        w.push(options.prior_weight);
    }
    let sum: f64 = w.iter().sum();
    if !(sum.is_finite() && sum > 0.0) || w.iter().any(|x| !x.is_finite() || *x < 0.0) {
        // A broken custom weight function: fall back to equal weights rather than NaNs.
        return vec![1.0 / w.len() as f64; w.len()];
    }
    w.iter().map(|x| x / sum).collect()
}

impl Parzen {
    fn fit(dist: &Distribution, obs: &[f64], options: &TpeOptions) -> Parzen {
        let weights = mixture_weights(obs.len(), options);
        let with_prior = options.consider_prior || obs.is_empty();
        let Some((low, high)) = dist.internal_bounds() else {
            return Self::fit_categorical(dist, obs, &weights, with_prior, options);
        };
        let n = obs.len();
        let range = high - low;
        let mut sigmas = vec![0.0; n];
        if n > 0 {
            let mut order: Vec<usize> = (0..n).collect();
            order.sort_by(|&a, &b| obs[a].total_cmp(&obs[b]));
            let mut s = Vec::with_capacity(n + 2);
            s.push(low);
            s.extend(order.iter().map(|&i| obs[i]));
            s.push(high);
            let mut sorted: Vec<f64> = (1..=n)
                .map(|j| (s[j] - s[j - 1]).max(s[j + 1] - s[j]))
                .collect();
            if !options.consider_endpoints && n >= 2 {
                sorted[0] = s[2] - s[1];
                sorted[n - 1] = s[n] - s[n - 1];
            }
            let min_sigma = if options.consider_magic_clip {
                let kernels = n + usize::from(with_prior);
                range / (1.0 + kernels as f64).min(100.0)
            } else {
                1e-12
            };
            for (j, &i) in order.iter().enumerate() {
                // numpy.clip(x, lo, hi) = min(max(x, lo), hi).
                sigmas[i] = sorted[j].max(min_sigma).min(range);
            }
        }
        let mut mus = obs.to_vec();
        if with_prior {
            mus.push(0.5 * (low + high));
            sigmas.push(range);
        }
        let log_norms = mus
            .iter()
            .zip(&sigmas)
            .map(|(mu, sigma)| log_gauss_mass((low - mu) / sigma, (high - mu) / sigma))
            .collect();
        Parzen::Numeric {
            log_weights: weights.iter().map(|w| w.ln()).collect(),
            weights,
            mus,
            sigmas,
            low,
            high,
            log_norms,
        }
    }

    fn fit_categorical(
        dist: &Distribution,
        obs: &[f64],
        weights: &[f64],
        with_prior: bool,
        options: &TpeOptions,
    ) -> Parzen {
        let k = match dist {
            Distribution::Choice(o) => o.len().max(1),
            _ => 1,
        };
        if obs.is_empty() {
            return Parzen::Categorical {
                probs: vec![1.0 / k as f64; k],
            };
        }
        let kernels = obs.len() + usize::from(with_prior);
        let base = options.prior_weight / kernels as f64;
        let mut probs = vec![0.0; k];
        // Observation kernels: `base` everywhere plus 1 on the observed option, normalised.
        let obs_row_sum = base * k as f64 + 1.0;
        for (x, w) in obs.iter().zip(weights) {
            for p in probs.iter_mut() {
                *p += w * base / obs_row_sum;
            }
            let idx = (*x as usize).min(k - 1);
            probs[idx] += w / obs_row_sum;
        }
        // The prior kernel is uniform (a zero row when prior_weight is 0, as in Optuna).
        if with_prior && base > 0.0 {
            let w = weights.get(obs.len()).copied().unwrap_or(0.0);
            for p in probs.iter_mut() {
                *p += w / k as f64;
            }
        }
        let sum: f64 = probs.iter().sum();
        if sum > 0.0 {
            probs.iter_mut().for_each(|p| *p /= sum);
        }
        Parzen::Categorical { probs }
    }

    fn sample<R: Rng + ?Sized>(&self, dist: &Distribution, rng: &mut R) -> Value {
        match self {
            Parzen::Categorical { probs } => Value::Choice(pick(probs, rng.random::<f64>())),
            Parzen::Numeric {
                weights,
                mus,
                sigmas,
                low,
                high,
                ..
            } => {
                let i = pick(weights, rng.random::<f64>());
                let x = sample_trunc_normal(mus[i], sigmas[i], *low, *high, rng);
                dist.from_internal(x)
            }
        }
    }

    fn log_pdf(&self, dist: &Distribution, value: &Value) -> f64 {
        match self {
            Parzen::Categorical { probs } => match value {
                Value::Choice(i) => probs.get(*i).map_or(f64::NEG_INFINITY, |p| p.ln()),
                _ => f64::NEG_INFINITY,
            },
            Parzen::Numeric {
                log_weights,
                mus,
                sigmas,
                low,
                high,
                log_norms,
                ..
            } => {
                let terms = mus.iter().zip(sigmas).zip(log_norms).zip(log_weights);
                match (dist, value) {
                    (Distribution::Int { log, .. }, Value::Int(v)) => {
                        let (left, right) = if *log {
                            ((*v as f64 - 0.5).ln(), (*v as f64 + 0.5).ln())
                        } else {
                            (*v as f64 - 0.5, *v as f64 + 0.5)
                        };
                        log_sum_exp(terms.map(|(((mu, sigma), norm), lw)| {
                            lw + log_gauss_mass((left - mu) / sigma, (right - mu) / sigma) - norm
                        }))
                    }
                    _ => {
                        let Some(x) = dist.to_internal(value) else {
                            return f64::NEG_INFINITY;
                        };
                        if x < *low || x > *high {
                            return f64::NEG_INFINITY;
                        }
                        log_sum_exp(terms.map(|(((mu, sigma), norm), lw)| {
                            let z = (x - mu) / sigma;
                            lw - 0.5 * z * z - LN_SQRT_2PI - sigma.ln() - norm
                        }))
                    }
                }
            }
        }
    }
}

/// Index drawn from (unnormalised) `weights` with a uniform `u ∈ [0, 1)`.
fn pick(weights: &[f64], u: f64) -> usize {
    let total: f64 = weights.iter().sum();
    let target = u * total;
    let mut acc = 0.0;
    for (i, w) in weights.iter().enumerate() {
        acc += w;
        if target < acc {
            return i;
        }
    }
    // Rounding left `target` at the very top: the last kernel with any weight.
    weights.iter().rposition(|w| *w > 0.0).unwrap_or(0)
}

/// One draw of N(mu, sigma²) restricted to `[low, high]`, by rejection. `mu` lies inside the
/// range and `sigma ≤ high − low` for every TPE kernel, so acceptance is above 1/3.
fn sample_trunc_normal<R: Rng + ?Sized>(
    mu: f64,
    sigma: f64,
    low: f64,
    high: f64,
    rng: &mut R,
) -> f64 {
    for _ in 0..10_000 {
        let x = mu + sigma * standard_normal(rng);
        if (low..=high).contains(&x) {
            return x;
        }
    }
    mu.clamp(low, high)
}

/// Box–Muller (rand 0.9 has no normal distribution without `rand_distr`).
fn standard_normal<R: Rng + ?Sized>(rng: &mut R) -> f64 {
    let u1 = 1.0 - rng.random::<f64>(); // (0, 1], so ln is finite
    let u2 = rng.random::<f64>();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

fn log_sum_exp(xs: impl Iterator<Item = f64>) -> f64 {
    let xs: Vec<f64> = xs.collect();
    let max = xs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if max == f64::NEG_INFINITY || max.is_nan() {
        return max;
    }
    max + xs.iter().map(|x| (x - max).exp()).sum::<f64>().ln()
}

// --- The normal distribution, to double precision, without a maths crate. ---

const LN_SQRT_2PI: f64 = 0.918_938_533_204_672_8;

/// erf for |x| < 2 by the all-positive series `erf x = 2/√π · e^{−x²} · Σ x(2x²)ⁿ/(2n+1)!!`
/// (no cancellation, unlike the alternating Taylor series).
fn erf_series(x: f64) -> f64 {
    let x2 = x * x;
    let mut term = x;
    let mut sum = x;
    for n in 1..200 {
        term *= 2.0 * x2 / (2 * n + 1) as f64;
        sum += term;
        if term.abs() <= 1e-17 * sum.abs() {
            break;
        }
    }
    std::f64::consts::FRAC_2_SQRT_PI * (-x2).exp() * sum
}

/// erfc for x ≥ 2 by its continued fraction
/// `erfc x = e^{−x²}/√π · 1/(x + ½/(x + 1/(x + (3/2)/(x + …))))`, evaluated with Lentz's method.
fn erfc_continued_fraction(x: f64) -> f64 {
    const TINY: f64 = 1e-300;
    let mut f = x;
    let mut c = x;
    let mut d = 0.0;
    for n in 1..500 {
        let a = n as f64 / 2.0;
        d = x + a * d;
        if d.abs() < TINY {
            d = TINY;
        }
        c = x + a / c;
        if c.abs() < TINY {
            c = TINY;
        }
        d = 1.0 / d;
        let delta = c * d;
        f *= delta;
        if (delta - 1.0).abs() < 1e-16 {
            break;
        }
    }
    (-x * x).exp() / (std::f64::consts::PI.sqrt() * f)
}

fn erf(x: f64) -> f64 {
    if x.abs() < 2.0 {
        erf_series(x)
    } else if x > 0.0 {
        1.0 - erfc_continued_fraction(x)
    } else {
        erfc_continued_fraction(-x) - 1.0
    }
}

fn erfc(x: f64) -> f64 {
    if x >= 2.0 {
        erfc_continued_fraction(x)
    } else if x > -2.0 {
        1.0 - erf_series(x)
    } else {
        2.0 - erfc_continued_fraction(-x)
    }
}

/// Standard normal CDF (Optuna's `_ndtr_single`).
fn ndtr(a: f64) -> f64 {
    let x = a / std::f64::consts::SQRT_2;
    if x < -std::f64::consts::FRAC_1_SQRT_2 {
        0.5 * erfc(-x)
    } else if x < std::f64::consts::FRAC_1_SQRT_2 {
        0.5 + 0.5 * erf(x)
    } else {
        1.0 - 0.5 * erfc(x)
    }
}

/// `ln Φ(a)`, with the asymptotic series far in the left tail (Optuna's `_log_ndtr_single`).
fn log_ndtr(a: f64) -> f64 {
    if a > 6.0 {
        return -ndtr(-a);
    }
    if a > -20.0 {
        return ndtr(a).ln();
    }
    let log_lhs = -0.5 * a * a - (-a).ln() - 0.5 * std::f64::consts::TAU.ln();
    let mut last = 0.0;
    let mut rhs: f64 = 1.0;
    let mut numerator = 1.0;
    let mut denom_factor = 1.0;
    let denom_cons = 1.0 / (a * a);
    let mut sign = 1.0;
    let mut i = 0.0;
    while (last - rhs).abs() > f64::EPSILON && i < 100.0 {
        i += 1.0;
        last = rhs;
        sign = -sign;
        denom_factor *= denom_cons;
        numerator *= 2.0 * i - 1.0;
        rhs += sign * numerator * denom_factor;
    }
    log_lhs + rhs.ln()
}

/// `ln(Φ(b) − Φ(a))` for `a ≤ b`, accurate in both tails (Optuna's `_log_gauss_mass`).
fn log_gauss_mass(a: f64, b: f64) -> f64 {
    if b <= 0.0 {
        let (lb, la) = (log_ndtr(b), log_ndtr(a));
        lb + (-(la - lb).exp()).ln_1p()
    } else if a > 0.0 {
        log_gauss_mass(-b, -a)
    } else {
        (-ndtr(a) - ndtr(-b)).ln_1p()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::search::tests::done;
    use crate::search::{RandomSampler, TrialState};

    fn close(a: f64, b: f64, rel: f64) -> bool {
        (a - b).abs() <= rel * b.abs().max(1e-300)
    }

    #[test]
    fn normal_functions_match_reference_values() {
        // Reference values from mpmath at 40 digits.
        let erfs = [
            (0.1, 0.1124629160182849),
            (0.5, 0.5204998778130465),
            (1.0, 0.8427007929497149),
            (1.9, 0.9927904292352575),
            (2.0, 0.9953222650189527),
            (-1.0, -0.8427007929497149),
        ];
        for (x, want) in erfs {
            assert!(close(erf(x), want, 1e-14), "erf({x}) = {}", erf(x));
        }
        let erfcs = [
            (0.5, 0.4795001221869535),
            (2.0, 0.004677734981047266),
            (3.0, 2.209049699858544e-05),
            (5.0, 1.537_459_794_428_035e-12),
            (10.0, 2.088487583762545e-45),
        ];
        for (x, want) in erfcs {
            assert!(close(erfc(x), want, 1e-12), "erfc({x}) = {}", erfc(x));
        }
        assert!(close(ndtr(-3.0), 0.0013498980316300946, 1e-12));
        // Far tail, where Φ itself underflows soon after.
        assert!(
            close(log_ndtr(-30.0), -454.3212439563432, 1e-12),
            "{}",
            log_ndtr(-30.0)
        );
        assert!(
            close(log_ndtr(-10.0), -53.23128515051247, 1e-12),
            "{}",
            log_ndtr(-10.0)
        );
        // Masses: central, both tails, and a narrow far cell that naive CDF differences lose.
        assert!(close(
            log_gauss_mass(-1.0, 1.0),
            0.6826894921370859_f64.ln(),
            1e-12
        ));
        assert!(close(
            log_gauss_mass(1.0, 2.0),
            (0.9772498680518208_f64 - 0.8413447460685429).ln(),
            1e-10
        ));
        assert!(close(
            log_gauss_mass(-2.0, -1.0),
            log_gauss_mass(1.0, 2.0),
            1e-14
        ));
        assert!(close(log_gauss_mass(40.0, 41.0), -804.6084420137538, 1e-10));
    }

    #[test]
    fn gamma_and_weights_are_optunas() {
        assert_eq!(default_gamma(10), 1);
        assert_eq!(default_gamma(11), 2);
        assert_eq!(default_gamma(100), 10);
        assert_eq!(default_gamma(1000), 25);
        assert_eq!(default_weights(3), vec![1.0; 3]);
        assert_eq!(default_weights(25), vec![1.0; 25]);
        assert_eq!(default_weights(26)[0], 1.0 / 26.0);
        let w = default_weights(30);
        assert_eq!(w.len(), 30);
        assert!(close(w[0], 1.0 / 30.0, 1e-15));
        assert!(close(w[4], 1.0, 1e-15));
        assert!(close(w[2], (1.0 / 30.0 + 1.0) / 2.0, 1e-15));
        assert!(w[5..].iter().all(|&x| x == 1.0));
    }

    #[test]
    fn bandwidths_follow_optunas_univariate_rule() {
        let dist = Distribution::parse("k", "uniform(0.0, 1.0)").unwrap();
        let Parzen::Numeric {
            mus,
            sigmas,
            weights,
            ..
        } = Parzen::fit(&dist, &[0.9, 0.2, 0.5], &TpeOptions::default())
        else {
            panic!("numeric")
        };
        // Sorted with ends: 0, .2, .5, .9, 1. Extremes use their inner neighbour only (.3, .4),
        // the middle the larger gap (.4); floor = 1/min(100, 1 + 4 kernels) = .2; prior .5 ± 1.
        assert_eq!(mus, vec![0.9, 0.2, 0.5, 0.5]);
        let want = [0.4, 0.3, 0.4, 1.0];
        for (s, w) in sigmas.iter().zip(want) {
            assert!(close(*s, w, 1e-12), "{sigmas:?}");
        }
        assert!(weights.iter().all(|w| close(*w, 0.25, 1e-12)));
        // The magic clip floor binds for close points.
        let Parzen::Numeric { sigmas, .. } =
            Parzen::fit(&dist, &[0.50, 0.51, 0.52], &TpeOptions::default())
        else {
            panic!("numeric")
        };
        assert!(
            sigmas[..3].iter().all(|s| close(*s, 0.2, 1e-12)),
            "{sigmas:?}"
        );
    }

    #[test]
    fn parzen_densities_match_optuna() {
        // log l(x) and log g(x) that Optuna 5.0.0's `_ParzenEstimator` (univariate parameters,
        // defaults) gives for these observations, split by `_split_trials` with γ = 2 of 20.
        let xs = [
            3.232203, 5.72784, 4.041451, 3.173248, 1.354822, 4.688412, 1.563808, 8.376595,
            9.454941, 0.751623, 6.875876, 2.933424, 3.520668, 8.88395, -3.934459, -3.693061,
            -4.696724, 7.489298, 6.672351, 8.050182,
        ];
        let dist = Distribution::parse("a", "uniform(-5, 10)").unwrap();
        let below = vec![xs[4], xs[6]];
        let above: Vec<f64> = xs
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != 4 && *i != 6)
            .map(|(_, x)| *x)
            .collect();
        let at = [-5.0, -2.5, 0.0, 1.3, 4.0, 7.7, 10.0];
        let optuna_l = [
            -3.284690235,
            -2.735834347,
            -2.382579087,
            -2.323302693,
            -2.493557814,
            -3.204384018,
            -3.647964969,
        ];
        let optuna_g = [
            -2.763437224,
            -3.855555816,
            -4.004840566,
            -3.769894845,
            -2.101108562,
            -2.124237098,
            -3.083688551,
        ];
        for (obs, want) in [(below, optuna_l), (above, optuna_g)] {
            let p = Parzen::fit(&dist, &obs, &TpeOptions::default());
            for (x, w) in at.iter().zip(want) {
                let got = p.log_pdf(&dist, &Value::Float(*x));
                assert!((got - w).abs() < 1e-8, "x = {x}: {got} vs Optuna {w}");
            }
        }
        // Discrete: int(0, 6) observed 3, 5, 6; logint(8, 64) observed 8, 16, 40; evaluated at
        // low, first observation, high.
        let cases = [
            (
                "int(0, 6)",
                [3, 5, 6],
                [-2.904765638, -1.950859624, -1.525551724],
            ),
            (
                "logint(8, 64)",
                [8, 16, 40],
                [-2.726411787, -2.726411787, -5.360042125],
            ),
        ];
        for (text, obs, want) in cases {
            let d = Distribution::parse("a", text).unwrap();
            let Distribution::Int { lo, hi, .. } = d else {
                panic!("{text}")
            };
            let o: Vec<f64> = obs
                .iter()
                .filter_map(|v| d.to_internal(&Value::Int(*v)))
                .collect();
            let p = Parzen::fit(&d, &o, &TpeOptions::default());
            for (v, w) in [lo, obs[0], hi].iter().zip(want) {
                let got = p.log_pdf(&d, &Value::Int(*v));
                assert!((got - w).abs() < 1e-8, "{text} at {v}: {got} vs Optuna {w}");
            }
        }
    }

    #[test]
    fn categorical_estimator_smooths_counts_with_the_prior() {
        let dist = Distribution::parse("k", "choice([1, 2, 3])").unwrap();
        let Parzen::Categorical { probs } =
            Parzen::fit(&dist, &[0.0, 0.0, 1.0], &TpeOptions::default())
        else {
            panic!("categorical")
        };
        // 4 kernels, base = 1/4: an observation row is (1.25, .25, .25)/1.75; the prior row
        // uniform; mixture weights 1/4 each.
        let row = |hit: usize| -> Vec<f64> {
            (0..3)
                .map(|j| if j == hit { 1.25 / 1.75 } else { 0.25 / 1.75 })
                .collect()
        };
        let (r0, r1) = (row(0), row(1));
        for j in 0..3 {
            let want = (2.0 * r0[j] + r1[j] + 1.0 / 3.0) / 4.0;
            assert!(close(probs[j], want, 1e-12), "{probs:?}");
        }
    }

    #[test]
    fn discrete_pdf_sums_to_one_over_the_integers() {
        for text in ["int(0, 6)", "logint(2, 40)"] {
            let dist = Distribution::parse("k", text).unwrap();
            let Distribution::Int { lo, hi, .. } = dist else {
                panic!()
            };
            let obs: Vec<f64> = [3, 5, 6]
                .iter()
                .filter_map(|&v| dist.to_internal(&Value::Int(v)))
                .collect();
            let p = Parzen::fit(&dist, &obs, &TpeOptions::default());
            let total: f64 = (lo..=hi)
                .map(|v| p.log_pdf(&dist, &Value::Int(v)).exp())
                .sum();
            assert!(close(total, 1.0, 1e-9), "{text}: {total}");
        }
    }

    #[test]
    fn split_fills_below_with_the_deepest_pruned_trials() {
        let v = || vec![Value::Float(0.5)];
        let pruned = |n: usize, reports: Vec<(usize, f64)>| Trial {
            state: TrialState::Pruned,
            intermediate: reports,
            ..done(n, v(), 0.0)
        };
        let trials = [
            done(0, v(), 0.3),
            pruned(1, vec![(1, 0.9)]),
            done(2, v(), 0.7),
            pruned(3, vec![(1, 0.5), (2, 0.4)]),
            pruned(4, vec![]),
            pruned(5, vec![(1, 0.95)]),
        ];
        let refs: Vec<&Trial> = trials.iter().collect();
        let numbers = |g: Vec<&Trial>| g.iter().map(|t| t.number).collect::<Vec<_>>();
        let (below, above) = split_trials(&refs, 1, Direction::Maximize);
        assert_eq!(
            (numbers(below), numbers(above)),
            (vec![2], vec![0, 1, 3, 4, 5])
        );
        // Both completes, then trial 3 (reached step 2) before 5 (better value, step 1).
        let (below, _) = split_trials(&refs, 3, Direction::Maximize);
        assert_eq!(numbers(below), vec![0, 2, 3]);
        let (below, _) = split_trials(&refs, 4, Direction::Maximize);
        assert_eq!(numbers(below), vec![0, 2, 3, 5]);
        let (below, _) = split_trials(&refs, 1, Direction::Minimize);
        assert_eq!(numbers(below), vec![0]);
    }

    /// Runs a sequential search of `n` trials and returns the history.
    fn run(
        sampler: &mut dyn Sampler,
        space: &SearchSpace,
        n: usize,
        f: &dyn Fn(&[Value]) -> f64,
    ) -> Vec<Trial> {
        let mut history = Vec::new();
        for number in 0..n {
            let values = sampler.sample(space, &history, Direction::Minimize);
            assert!(space.contains(&values), "{values:?}");
            let y = f(&values);
            history.push(done(number, values, y));
        }
        history
    }

    fn floats(values: &[Value]) -> Vec<f64> {
        values
            .iter()
            .map(|v| match v {
                Value::Float(x) => *x,
                Value::Int(i) => *i as f64,
                Value::Choice(i) => *i as f64,
            })
            .collect()
    }

    /// Best objective of each of 50 seeded 40-trial searches, TPE or random. 50 seeds because
    /// the best-of-40 is skewed and noisy (sd ≈ 0.7 on Branin): the mean of 50 has a standard
    /// error near 0.1, while 10 seeds could not tell TPE from random reliably.
    fn bests(space: &SearchSpace, tpe: bool, f: &dyn Fn(&[Value]) -> f64) -> Vec<f64> {
        (0..50u64)
            .map(|seed| {
                let mut sampler: Box<dyn Sampler> = if tpe {
                    Box::new(TpeSampler::new(seed))
                } else {
                    Box::new(RandomSampler::new(seed))
                };
                run(sampler.as_mut(), space, 40, f)
                    .iter()
                    .filter_map(|t| t.objective)
                    .fold(f64::INFINITY, f64::min)
            })
            .collect()
    }

    fn mean(xs: &[f64]) -> f64 {
        xs.iter().sum::<f64>() / xs.len() as f64
    }

    fn median(xs: &[f64]) -> f64 {
        let mut v = xs.to_vec();
        v.sort_by(f64::total_cmp);
        0.5 * (v[(v.len() - 1) / 2] + v[v.len() / 2])
    }

    fn branin(v: &[Value]) -> f64 {
        let x = floats(v);
        let (x1, x2) = (x[0], x[1]);
        let pi = std::f64::consts::PI;
        let b = 5.1 / (4.0 * pi * pi);
        let c = 5.0 / pi;
        let t = 1.0 / (8.0 * pi);
        (x2 - b * x1 * x1 + c * x1 - 6.0).powi(2) + 10.0 * (1.0 - t) * x1.cos() + 10.0
    }

    #[test]
    fn tpe_beats_random_on_a_quadratic() {
        let space =
            SearchSpace::from_texts([("x", "uniform(-5, 5)"), ("y", "uniform(-5, 5)")]).unwrap();
        let f = |v: &[Value]| {
            let x = floats(v);
            (x[0] - 1.0).powi(2) + (x[1] + 2.0).powi(2)
        };
        let (tpe, random) = (
            mean(&bests(&space, true, &f)),
            mean(&bests(&space, false, &f)),
        );
        eprintln!("quadratic: mean best TPE {tpe:.4}, random {random:.4}");
        assert!(tpe < random, "TPE {tpe} vs random {random}");
        assert!(tpe < 0.5 * random, "TPE {tpe} vs random {random}");
    }

    #[test]
    fn tpe_beats_random_on_branin() {
        let space =
            SearchSpace::from_texts([("x1", "uniform(-5, 10)"), ("x2", "uniform(0, 15)")]).unwrap();
        let (tpe, random) = (bests(&space, true, &branin), bests(&space, false, &branin));
        let (tpe_mean, random_mean) = (mean(&tpe), mean(&random));
        eprintln!(
            "branin: mean best TPE {tpe_mean:.4} (median {:.4}), random {random_mean:.4} \
             (optimum 0.397887)",
            median(&tpe)
        );
        assert!(
            tpe_mean < random_mean,
            "TPE {tpe_mean} vs random {random_mean}"
        );
        // Bounds from Optuna 5.0's own univariate TPE (`multivariate=False`, 40 trials, seeds
        // 0–39): mean best 1.08, median 0.86; this implementation over 200 seeds: mean 1.03,
        // median 0.81. The mean of 50 has a standard error near 0.1.
        assert!(tpe_mean < 1.4, "TPE mean best {tpe_mean}");
        assert!(median(&tpe) < 1.0, "TPE median best {}", median(&tpe));
    }

    #[test]
    fn tpe_finds_the_right_category_more_often_than_random() {
        let space = SearchSpace::from_texts([
            ("opt", r#"choice(["sgd", "adamw", "adam"])"#),
            ("lr", "loguniform(1e-5, 1e-1)"),
        ])
        .unwrap();
        // Option 1 is best by a margin comparable to what the continuous parameter can buy.
        let f = |v: &[Value]| {
            let penalty = [0.6, 0.0, 0.3];
            let Value::Choice(c) = v[0] else {
                return f64::NAN;
            };
            let Value::Float(lr) = v[1] else {
                return f64::NAN;
            };
            penalty[c] + (lr.log10() + 3.0).powi(2) / 4.0
        };
        let right = |tpe: bool| -> usize {
            (0..10u64)
                .map(|seed| {
                    let mut sampler: Box<dyn Sampler> = if tpe {
                        Box::new(TpeSampler::new(seed))
                    } else {
                        Box::new(RandomSampler::new(seed))
                    };
                    let history = run(sampler.as_mut(), &space, 40, &f);
                    history[10..]
                        .iter()
                        .filter(|t| t.values[0] == Value::Choice(1))
                        .count()
                })
                .sum()
        };
        let (tpe, random) = (right(true), right(false));
        eprintln!("right category after start-up: TPE {tpe}/300, random {random}/300");
        assert!(tpe > random, "TPE {tpe} vs random {random}");
        assert!(tpe > 150, "TPE {tpe}/300");
    }

    #[test]
    fn tpe_is_deterministic_given_seed_and_history_and_stays_in_range() {
        let space = SearchSpace::from_texts([
            ("a", "loguniform(1e-5, 1e-3)"),
            ("b", "uniform(0.0, 0.3)"),
            ("c", "int(0, 6)"),
            ("d", "logint(8, 64)"),
            ("e", r#"choice(["linear", "cosine", "constant"])"#),
        ])
        .unwrap();
        let f = |v: &[Value]| floats(v).iter().sum::<f64>();
        let mut history = run(&mut TpeSampler::new(3), &space, 30, &f);
        history[12].state = TrialState::Pruned;
        history[12].intermediate = vec![(1, 5.0)];
        history[13].state = TrialState::Failed;
        history[14].state = TrialState::Running;
        let a = TpeSampler::new(3).sample(&space, &history, Direction::Minimize);
        let b = TpeSampler::new(3).sample(&space, &history, Direction::Minimize);
        let c = TpeSampler::new(4).sample(&space, &history, Direction::Minimize);
        assert_eq!(a, b);
        assert_ne!(a, c);
        // Order of the history does not matter, only its contents.
        let mut shuffled = history.clone();
        shuffled.reverse();
        assert_eq!(
            TpeSampler::new(3).sample(&space, &shuffled, Direction::Minimize),
            a
        );
        // Start-up proposals are the random sampler's.
        assert_eq!(
            TpeSampler::new(9).sample(&space, &history[..5], Direction::Minimize),
            RandomSampler::new(9).sample(&space, &history[..5], Direction::Minimize)
        );
        // Every TPE proposal lies in the space (ints are ints, ends reachable).
        for seed in 0..40 {
            let p = TpeSampler::new(seed).sample(&space, &history, Direction::Maximize);
            assert!(space.contains(&p), "{p:?}");
        }
        // A stored trial that no longer fits the space is ignored, not a panic.
        let mut odd = history.clone();
        odd.push(done(30, vec![Value::Int(1)], 0.0));
        assert!(space.contains(&TpeSampler::new(3).sample(&space, &odd, Direction::Minimize)));
    }
}
