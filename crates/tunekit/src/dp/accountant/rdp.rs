//! Rényi-DP accounting of the Poisson-subsampled Gaussian mechanism (Mironov, Talwar & Zhang
//! 2019, "Rényi Differential Privacy of the Sampled Gaussian Mechanism", §3.3), with the
//! orders and the RDP → (ε, δ) conversion of Opacus 1.6's `RDPAccountant` (Balle et al. 2020,
//! "Hypothesis testing interpretations and Rényi differential privacy", Theorem 21).

use super::{Composition, special::log_erfc};

/// The RDP orders α Opacus 1.6 uses by default: 1.1, 1.2, …, 10.9, then 12, 13, …, 63.
pub fn default_orders() -> Vec<f64> {
    let mut orders: Vec<f64> = (1..100).map(|x| 1.0 + f64::from(x) / 10.0).collect();
    orders.extend((12..64).map(f64::from));
    orders
}

/// `log(exp(x) + exp(y))`.
fn log_add(x: f64, y: f64) -> f64 {
    let (a, b) = if x < y { (x, y) } else { (y, x) };
    if a == f64::NEG_INFINITY {
        return b;
    }
    (a - b).exp().ln_1p() + b
}

/// `log(exp(x) − exp(y))` for `x ≥ y` (NaN otherwise, which the conversion then ignores).
fn log_sub(x: f64, y: f64) -> f64 {
    if x < y {
        return f64::NAN;
    }
    if y == f64::NEG_INFINITY {
        return x;
    }
    if x == y {
        return f64::NEG_INFINITY;
    }
    let d = (x - y).exp_m1();
    if d.is_infinite() { x } else { d.ln() + y }
}

/// `log A_α` for an integer order: the binomial expansion of §3.3.
fn log_a_int(q: f64, sigma: f64, alpha: u32) -> f64 {
    let mut log_a = f64::NEG_INFINITY;
    let mut log_binom = 0.0f64; // log C(alpha, 0)
    for i in 0..=alpha {
        if i > 0 {
            log_binom += (f64::from(alpha - i + 1) / f64::from(i)).ln();
        }
        let fi = f64::from(i);
        let log_coef = log_binom + fi * q.ln() + f64::from(alpha - i) * (1.0 - q).ln();
        let s = log_coef + (fi * fi - fi) / (2.0 * sigma * sigma);
        log_a = log_add(log_a, s);
    }
    log_a
}

/// `log A_α` for a fractional order: the two infinite series of §3.3, summed until both
/// terms fall below e⁻³⁰ (as Opacus does).
fn log_a_frac(q: f64, sigma: f64, alpha: f64) -> f64 {
    let (mut log_a0, mut log_a1) = (f64::NEG_INFINITY, f64::NEG_INFINITY);
    let z0 = sigma * sigma * (1.0 / q - 1.0).ln() + 0.5;
    let mut coef = 1.0f64; // C(alpha, i), real-valued and possibly negative
    let mut i = 0u32;
    loop {
        let fi = f64::from(i);
        if i > 0 {
            coef *= (alpha - fi + 1.0) / fi;
        }
        let log_coef = coef.abs().ln();
        let j = alpha - fi;
        let log_t0 = log_coef + fi * q.ln() + j * (1.0 - q).ln();
        let log_t1 = log_coef + j * q.ln() + fi * (1.0 - q).ln();
        let log_e0 = 0.5f64.ln() + log_erfc((fi - z0) / (std::f64::consts::SQRT_2 * sigma));
        let log_e1 = 0.5f64.ln() + log_erfc((z0 - j) / (std::f64::consts::SQRT_2 * sigma));
        let log_s0 = log_t0 + (fi * fi - fi) / (2.0 * sigma * sigma) + log_e0;
        let log_s1 = log_t1 + (j * j - j) / (2.0 * sigma * sigma) + log_e1;
        if coef > 0.0 {
            log_a0 = log_add(log_a0, log_s0);
            log_a1 = log_add(log_a1, log_s1);
        } else {
            log_a0 = log_sub(log_a0, log_s0);
            log_a1 = log_sub(log_a1, log_s1);
        }
        i += 1;
        // NaN (a failed subtraction) also ends the series; the order is then ignored.
        let top = log_s0.max(log_s1);
        if top.is_nan() || top < -30.0 || i > 10_000 {
            break;
        }
    }
    log_add(log_a0, log_a1)
}

/// RDP of one step of the Poisson-subsampled Gaussian mechanism at order `alpha`: sampling
/// rate `q`, noise multiplier `sigma` (noise standard deviation over L2 sensitivity). May be
/// infinite (σ = 0) or NaN (numerically failed order).
pub fn rdp_step(q: f64, sigma: f64, alpha: f64) -> f64 {
    if q == 0.0 {
        return 0.0;
    }
    if sigma == 0.0 {
        return f64::INFINITY;
    }
    if q == 1.0 {
        return alpha / (2.0 * sigma * sigma);
    }
    if alpha.is_infinite() {
        return f64::INFINITY;
    }
    let log_a = if alpha.fract() == 0.0 && alpha < f64::from(u32::MAX) {
        log_a_int(q, sigma, alpha as u32)
    } else {
        log_a_frac(q, sigma, alpha)
    };
    log_a / (alpha - 1.0)
}

/// RDP of a history of compositions at each of `orders` (summed over the history).
pub fn rdp(history: &[Composition], orders: &[f64]) -> Vec<f64> {
    orders
        .iter()
        .map(|&a| {
            history
                .iter()
                .map(|c| rdp_step(c.sample_rate, c.noise_multiplier, a) * c.steps as f64)
                .sum()
        })
        .collect()
}

/// The smallest ε over the orders for which the RDP curve `rdp` gives (ε, δ)-DP, and that
/// order: ε = r_α − (ln δ + ln α)/(α − 1) + ln((α − 1)/α). NaN orders are ignored; all NaN
/// gives (∞, NaN).
pub fn epsilon_from_rdp(orders: &[f64], rdp: &[f64], delta: f64) -> (f64, f64) {
    let mut best = (f64::INFINITY, f64::NAN);
    let mut found = false;
    for (&a, &r) in orders.iter().zip(rdp) {
        let eps = r - (delta.ln() + a.ln()) / (a - 1.0) + ((a - 1.0) / a).ln();
        if eps.is_nan() {
            continue;
        }
        if !found || eps < best.0 {
            best = (eps, a);
            found = true;
        }
    }
    best
}

/// ε at `delta` of `history` with Opacus's default orders (0 for an empty history).
pub fn epsilon(history: &[Composition], delta: f64) -> f64 {
    if history.is_empty() {
        return 0.0;
    }
    let orders = default_orders();
    epsilon_from_rdp(&orders, &rdp(history, &orders), delta).0
}
