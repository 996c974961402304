//! The PRV accountant (Gopi, Lee & Wutschitz 2021, "Numerical composition of differential
//! privacy"), as Opacus 1.6's `PRVAccountant` computes it: the privacy-loss random variable of
//! the Poisson-subsampled Gaussian mechanism (propositions B1/B4) truncated to a safe domain
//! (remark 5.6, sized from the RDP accountant), discretised on a mesh of
//! `eps_error / sqrt(steps · ln(12/δ_err) / 2)` with its mean restored, composed with itself by
//! FFT, and ε read off the composed distribution, reported with its error bound added
//! (`eps_upper`).

use super::fft::{C, dft};
use super::special::erfc;
use super::{Composition, rdp};
use crate::error::{Error, Result};

/// Opacus's default ε error of the PRV accountant.
pub const EPS_ERROR: f64 = 0.01;

/// Machine epsilon of x86's `long double` (NumPy's `np.finfo(np.longdouble).eps`), which
/// Opacus compares against to refuse a δ too small for the domain.
const LONGDOUBLE_EPS: f64 = 1.084_202_172_485_504_4e-19;

/// The cdf of the privacy loss of one Poisson-subsampled Gaussian step (proposition B4).
fn cdf(q: f64, sigma: f64, t: f64) -> f64 {
    if t <= (1.0 - q).ln() {
        return 0.0;
    }
    let z = ((t.exp() + q - 1.0) / q).ln();
    let s2 = sigma * sigma;
    let r = 2.0 * std::f64::consts::SQRT_2 * sigma;
    -q * erfc((2.0 * z * s2 - 1.0) / r) / 2.0 - (1.0 - q) * erfc((2.0 * z * s2 + 1.0) / r) / 2.0
        + 1.0
}

/// That cdf truncated to `[t_min, t_max)` and renormalised.
struct Truncated {
    q: f64,
    sigma: f64,
    t_min: f64,
    t_max: f64,
    base: f64,
    mass: f64,
}

impl Truncated {
    fn new(q: f64, sigma: f64, t_min: f64, t_max: f64) -> Self {
        let base = cdf(q, sigma, t_min);
        Truncated {
            q,
            sigma,
            t_min,
            t_max,
            base,
            mass: cdf(q, sigma, t_max) - base,
        }
    }

    fn cdf(&self, t: f64) -> f64 {
        if t < self.t_min {
            0.0
        } else if t < self.t_max {
            (cdf(self.q, self.sigma, t) - self.base) / self.mass
        } else {
            1.0
        }
    }

    /// E[t] = ∫ t dF by parts, piece by piece on Opacus's break points (log-spaced towards 0).
    fn mean(&self) -> f64 {
        let lower = self.t_min.abs().log10().trunc() as i32;
        let upper = self.t_max.log10().trunc() as i32;
        let logspace = |a: i32, b: i32| -> Vec<f64> {
            (0..10)
                .map(|i| {
                    let e = f64::from(a) + (f64::from(b) - f64::from(a)) * f64::from(i) / 9.0;
                    10f64.powf(e)
                })
                .collect()
        };
        let mut points = vec![self.t_min];
        points.extend(logspace(lower, -5).into_iter().map(|v| -v));
        points.push(0.0);
        points.extend(logspace(-5, upper));
        points.push(self.t_max);
        let f = |t: f64| self.cdf(t);
        points
            .windows(2)
            .map(|w| {
                let (l, r) = (w[0], w[1]);
                r * f(r) - l * f(l) - integrate(&f, l, r, 1e-13, 40)
            })
            .sum()
    }
}

/// Gauss–Kronrod (7, 15) nodes and weights on [-1, 1].
const XGK: [f64; 8] = [
    0.991_455_371_120_812_6,
    0.949_107_912_342_758_5,
    0.864_864_423_359_769_1,
    0.741_531_185_599_394_4,
    0.586_087_235_467_691_1,
    0.405_845_151_377_397_2,
    0.207_784_955_007_898_5,
    0.0,
];
const WGK: [f64; 8] = [
    0.022_935_322_010_529_22,
    0.063_092_092_629_978_55,
    0.104_790_010_322_250_2,
    0.140_653_259_715_525_9,
    0.169_004_726_639_267_9,
    0.190_350_578_064_785_4,
    0.204_432_940_075_298_9,
    0.209_482_141_084_727_8,
];
const WG: [f64; 4] = [
    0.129_484_966_168_869_7,
    0.279_705_391_489_276_7,
    0.381_830_050_505_118_9,
    0.417_959_183_673_469_4,
];

/// ∫ₐᵇ f by adaptive Gauss–Kronrod (7, 15), splitting until the Kronrod–Gauss difference is
/// below `tol` (absolute) or `depth` runs out.
fn integrate(f: &dyn Fn(f64) -> f64, a: f64, b: f64, tol: f64, depth: u32) -> f64 {
    let (c, h) = ((a + b) / 2.0, (b - a) / 2.0);
    let fc = f(c);
    let (mut k, mut g) = (WGK[7] * fc, WG[3] * fc);
    for i in 0..7 {
        let (f1, f2) = (f(c - h * XGK[i]), f(c + h * XGK[i]));
        k += WGK[i] * (f1 + f2);
        if i % 2 == 1 {
            g += WG[i / 2] * (f1 + f2);
        }
    }
    let (k, g) = (k * h, g * h);
    // The relative floor keeps round-off from splitting a smooth piece forever.
    if (k - g).abs() <= tol.max(1e-14 * k.abs()) || depth == 0 {
        return k;
    }
    integrate(f, a, c, tol / 2.0, depth - 1) + integrate(f, c, b, tol / 2.0, depth - 1)
}

/// The discretisation grid: `size` (even) points from `t_min` to `t_max`.
#[derive(Debug, Clone, Copy)]
struct Domain {
    t_min: f64,
    t_max: f64,
    size: usize,
    shifts: f64,
}

impl Domain {
    fn aligned(t_min: f64, t_max: f64, dt: f64) -> Self {
        let t_min = (t_min / dt).floor() * dt;
        let mut t_max = (t_max / dt).ceil() * dt;
        let mut size = ((t_max - t_min) / dt).round() as usize + 1;
        if !size.is_multiple_of(2) {
            size += 1;
            t_max += dt;
        }
        Domain {
            t_min,
            t_max,
            size,
            shifts: 0.0,
        }
    }

    fn shift_right(self, d: f64) -> Self {
        Domain {
            t_min: self.t_min + d,
            t_max: self.t_max + d,
            size: self.size,
            shifts: self.shifts + d,
        }
    }

    fn dt(&self) -> f64 {
        (self.t_max - self.t_min) / (self.size - 1) as f64
    }

    /// NumPy's `linspace(t_min, t_max, size)`.
    fn ts(&self) -> Vec<f64> {
        let step = self.dt();
        let mut ts: Vec<f64> = (0..self.size)
            .map(|i| i as f64 * step + self.t_min)
            .collect();
        if let Some(last) = ts.last_mut() {
            *last = self.t_max;
        }
        ts
    }
}

/// Remark 5.6's safe half-width L of the domain: RDP's ε at δ_err/4 over all steps, and of a
/// single step at δ_err/(8·steps), plus 3.
fn safe_domain_size(c: &Composition, eps_error: f64, delta_error: f64) -> f64 {
    let all = rdp::epsilon(std::slice::from_ref(c), delta_error / 4.0);
    let one = Composition { steps: 1, ..*c };
    let single = rdp::epsilon(&[one], delta_error / (8.0 * c.steps as f64));
    all.max(single).max(eps_error) + 3.0
}

/// ε (Opacus's `eps_upper`: the estimate plus `eps_error`) of `history` at `delta`, with
/// Opacus's defaults `eps_error` = 0.01 and δ_err = δ/1000. Only a history of one (σ, q)
/// pair is supported (a tunekit run never changes either).
///
/// # Errors
/// [`Error::Config`] for a history mixing several (σ, q), a δ too small for the domain's
/// floating point, or a discretisation whose mean moved by half a mesh step.
pub fn epsilon(history: &[Composition], delta: f64, eps_error: f64) -> Result<f64> {
    let c = match history {
        [] => return Ok(0.0),
        [c] => *c,
        _ => {
            return Err(Error::Config(
                "privacy.dp: the prv accountant composes one (noise_multiplier, sample_rate) pair; use accountant = \"rdp\"".into(),
            ));
        }
    };
    if delta <= 0.0 {
        return Ok(f64::INFINITY);
    }
    let delta_error = delta / 1000.0;
    let l = safe_domain_size(&c, eps_error, delta_error);
    let mesh = eps_error / (c.steps as f64 * (12.0 / delta_error).ln() / 2.0).sqrt();
    let domain = Domain::aligned(-l, l, mesh);
    let tprv = Truncated::new(
        c.sample_rate,
        c.noise_multiplier,
        domain.t_min,
        domain.t_max,
    );
    // Discretise: the mass of each cell, then shift so the mean is the continuous one.
    let (ts, dt) = (domain.ts(), domain.dt());
    let pmf: Vec<f64> = ts
        .iter()
        .map(|&t| tprv.cdf(t + dt / 2.0) - tprv.cdf(t - dt / 2.0))
        .collect();
    let mean_d: f64 = ts.iter().zip(&pmf).map(|(t, p)| t * p).sum();
    let shift = tprv.mean() - mean_d;
    if shift.abs() >= dt / 2.0 {
        return Err(Error::Config(
            "privacy.dp: PRV discretisation: the discrete mean differs from the continuous one by half a mesh step".into(),
        ));
    }
    let domain = domain.shift_right(shift);
    // Self-composition: irfft(rfft(pmf)^steps), rolled back into place.
    let n = c.steps as u64;
    let spectrum: Vec<C> = dft(
        &pmf.iter().map(|&p| C::new(p, 0.0)).collect::<Vec<_>>(),
        false,
    )
    .into_iter()
    .map(|z| z.powu(n))
    .collect();
    let size = pmf.len();
    let composed: Vec<f64> = dft(&spectrum, true)
        .into_iter()
        .map(|z| z.re / size as f64)
        .collect();
    let mut roll = (n as usize).saturating_sub(1);
    if n.is_multiple_of(2) {
        roll += size / 2;
    }
    let mut pmf = vec![0.0; size];
    for (i, v) in composed.into_iter().enumerate() {
        pmf[(i + roll) % size] = v;
    }
    let domain = domain.shift_right(domain.shifts * (n as f64 - 1.0));
    if LONGDOUBLE_EPS * size as f64 > delta - delta_error {
        return Err(Error::Config(format!(
            "privacy.dp: delta {delta} is too small for the PRV accountant's floating point; raise delta or use accountant = \"rdp\""
        )));
    }
    let eps = epsilon_of_pmf(&pmf, &domain.ts(), delta - delta_error)?;
    Ok(eps + eps_error)
}

/// ε of a discrete privacy-loss distribution at `delta`: the first grid point whose
/// δ(ε) = Σ_{t≥ε} p(t)(1 − e^{ε−t}) drops to `delta`.
fn epsilon_of_pmf(p: &[f64], t: &[f64], delta: f64) -> Result<f64> {
    let n = p.len();
    let (mut d1, mut d2) = (vec![0.0; n], vec![0.0; n]);
    let (mut s1, mut s2) = (0.0f64, 0.0f64);
    for i in (0..n).rev() {
        s1 += p[i];
        s2 += p[i] * (-t[i]).exp();
        d1[i] = s1;
        d2[i] = s2;
    }
    // searchsorted(ndelta, -delta, side="left") on ndelta = e^t·d2 − d1.
    // NumPy's binary search, so a not quite monotone tail picks the same index.
    let (mut lo, mut hi) = (0usize, n);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if t[mid].exp() * d2[mid] - d1[mid] < -delta {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    let i = lo;
    if i == 0 || i >= n {
        return Err(Error::Config(
            "privacy.dp: the PRV accountant cannot compute epsilon for this plan".into(),
        ));
    }
    Ok(((d1[i] - delta) / d2[i]).ln())
}
