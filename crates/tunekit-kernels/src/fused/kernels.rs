//! The per-slice and per-row arithmetic, written so that the compiler vectorises it: no
//! branches inside element loops (selects instead), sums over 16 independent lanes.

const LANES: usize = 16;

/// Dropout's mask: element `i` is kept when 24 bits of `splitmix64(seed, i)` are below
/// `threshold`; kept elements are multiplied by `scale`.
pub struct DropoutMask {
    pub seed: u64,
    pub threshold: u32,
    pub scale: f32,
}

#[inline(always)]
fn splitmix64(seed: u64, i: u64) -> u64 {
    let mut z = seed.wrapping_add(i.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

multiversion! {
    /// Dropout of a block whose first element has global index `offset`.
    fn dropout_block(x: &[f32], y: &mut [f32], offset: u64, mask: &DropoutMask) {
        for (j, (o, &v)) in y.iter_mut().zip(x).enumerate() {
            let bits = (splitmix64(mask.seed, offset + j as u64) >> 40) as u32;
            *o = if bits < mask.threshold { v * mask.scale } else { 0.0 };
        }
    }
}

multiversion! {
    /// GELU of each element.
    fn gelu_block(x: &[f32], y: &mut [f32]) {
        gelu(x, y)
    }
}

multiversion! {
    /// GELU's input gradient, element-wise.
    fn gelu_backward_block(x: &[f32], g: &[f32], dx: &mut [f32]) {
        gelu_backward(x, g, dx)
    }
}

multiversion! {
    /// Softmax of each row of length `n`.
    fn softmax_block(x: &[f32], y: &mut [f32], n: usize) {
        for (xr, yr) in x.chunks_exact(n).zip(y.chunks_exact_mut(n)) {
            softmax_row(xr, yr);
        }
    }
}

multiversion! {
    /// Attention softmax of each row of length `n` (row `first + i` of a tensor whose
    /// batch item `b` has `rows_per_batch` rows and bias `bias[b·n..(b+1)·n]`).
    fn attention_softmax_block(
        x: &[f32],
        y: &mut [f32],
        n: usize,
        bias: &[f32],
        first: usize,
        rows_per_batch: usize,
        divisor: f32,
    ) {
        for (i, (xr, yr)) in x.chunks_exact(n).zip(y.chunks_exact_mut(n)).enumerate() {
            let b = (first + i) / rows_per_batch.max(1);
            let br = &bias[b * n..(b + 1) * n];
            for ((o, &v), &m) in yr.iter_mut().zip(xr).zip(br) {
                *o = v / divisor + m;
            }
            softmax_in_place(yr);
        }
    }
}

multiversion! {
    /// Softmax's input gradient for each row of length `n`, from its output `y`.
    fn softmax_backward_block(y: &[f32], g: &[f32], dx: &mut [f32], n: usize, scale: f32) {
        for ((yr, gr), dr) in y.chunks_exact(n).zip(g.chunks_exact(n)).zip(dx.chunks_exact_mut(n)) {
            softmax_backward_row(yr, gr, dr, scale);
        }
    }
}

multiversion! {
    /// LayerNorm of each row of length `n`.
    fn layer_norm_block(x: &[f32], gamma: &[f32], beta: &[f32], eps: f32, y: &mut [f32], n: usize) {
        for (xr, yr) in x.chunks_exact(n).zip(y.chunks_exact_mut(n)) {
            layer_norm_row(xr, gamma, beta, eps, yr);
        }
    }
}

multiversion! {
    /// LayerNorm's backward for each row of length `n`: writes `dx`, adds to `dgamma`
    /// and `dbeta`.
    fn layer_norm_backward_block(
        x: &[f32],
        gamma: &[f32],
        dy: &[f32],
        eps: f32,
        dx: &mut [f32],
        dgamma: &mut [f32],
        dbeta: &mut [f32],
        n: usize,
    ) {
        for ((xr, dyr), dxr) in x.chunks_exact(n).zip(dy.chunks_exact(n)).zip(dx.chunks_exact_mut(n)) {
            layer_norm_backward_row(xr, gamma, dyr, eps, dxr, dgamma, dbeta);
        }
    }
}

/// `e^x` for f32: `2^n · p(r)` with `x = n ln2 + r`, `|r| ≤ ln2/2`, `p` degree 7; 0 below
/// −87.3 (where f32 `exp` underflows), saturated above 88.7.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // 1.5 · 2^23: adding it rounds to an integer held in the low mantissa bits.
    const MAGIC: f32 = 12_582_912.0;
    let xc = x.clamp(-87.3, 88.7);
    let t = xc * LOG2E + MAGIC;
    let n = t - MAGIC;
    let r = (-n).mul_add(LN2_LO, (-n).mul_add(LN2_HI, xc));
    // Horner with fused multiply-adds (one rounding each; `mul_add` is one instruction in
    // the AVX2/AVX-512 copies of the kernels).
    let f = |acc: f32, c: f32| acc.mul_add(r, c);
    let p = f(
        f(
            f(
                f(
                    f(f(f(1.0 / 5040.0, 1.0 / 720.0), 1.0 / 120.0), 1.0 / 24.0),
                    1.0 / 6.0,
                ),
                0.5,
            ),
            1.0,
        ),
        1.0,
    );
    let ni = (t.to_bits() as i32).wrapping_sub(MAGIC.to_bits() as i32);
    let scale = f32::from_bits(((ni + 127) << 23) as u32);
    if x < -87.3 { 0.0 } else { p * scale }
}

/// `erf(x) = ±(1 − erfc(|x|))`, `erfc` from Numerical Recipes' Chebyshev fit.
#[inline(always)]
pub fn erf(x: f32) -> f32 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let f = |acc: f32, c: f32| acc.mul_add(t, c);
    let inner = f(
        f(f(f(0.170_872_77, -0.822_152_23), 1.488_515_9), -1.135_204),
        0.278_868_07,
    );
    let poly = f(
        f(
            f(f(f(inner, -0.186_288_06), 0.096_784_18), 0.374_091_96),
            1.000_023_7,
        ),
        -1.265_512_2,
    ) - z * z;
    let erfc = t * exp(poly);
    let e = 1.0 - erfc;
    if x < 0.0 { -e } else { e }
}

const FRAC_1_SQRT_2: f32 = std::f32::consts::FRAC_1_SQRT_2;
/// 1/√(2π).
const INV_SQRT_2PI: f32 = 0.398_942_3;

#[inline(always)]
fn gelu(x: &[f32], y: &mut [f32]) {
    for (o, &v) in y.iter_mut().zip(x) {
        *o = 0.5 * v * (1.0 + erf(v * FRAC_1_SQRT_2));
    }
}

/// `dL/dx = g · (Φ(x) + x φ(x))`.
#[inline(always)]
fn gelu_backward(x: &[f32], g: &[f32], dx: &mut [f32]) {
    for ((o, &v), &gv) in dx.iter_mut().zip(x).zip(g) {
        let cdf = 0.5 * (1.0 + erf(v * FRAC_1_SQRT_2));
        let pdf = INV_SQRT_2PI * exp(-0.5 * v * v);
        *o = gv * (cdf + v * pdf);
    }
}

#[inline(always)]
fn sum(x: &[f32]) -> f32 {
    let mut acc = [0.0f32; LANES];
    let chunks = x.chunks_exact(LANES);
    let rest = chunks.remainder();
    for c in chunks {
        for l in 0..LANES {
            acc[l] += c[l];
        }
    }
    acc.iter().sum::<f32>() + rest.iter().sum::<f32>()
}

#[inline(always)]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; LANES];
    let ca = a.chunks_exact(LANES);
    let cb = b.chunks_exact(LANES);
    let rest: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for l in 0..LANES {
            acc[l] += x[l] * y[l];
        }
    }
    acc.iter().sum::<f32>() + rest
}

#[inline(always)]
fn max(x: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; LANES];
    let chunks = x.chunks_exact(LANES);
    let rest = chunks.remainder();
    for c in chunks {
        for l in 0..LANES {
            acc[l] = acc[l].max(c[l]);
        }
    }
    acc.iter()
        .chain(rest)
        .fold(f32::NEG_INFINITY, |m, &v| m.max(v))
}

/// Softmax of a row in place.
#[inline(always)]
fn softmax_in_place(y: &mut [f32]) {
    let m = max(y);
    for o in y.iter_mut() {
        *o = exp(*o - m);
    }
    let inv = 1.0 / sum(y);
    for o in y.iter_mut() {
        *o *= inv;
    }
}

#[inline(always)]
fn softmax_row(x: &[f32], y: &mut [f32]) {
    let m = max(x);
    for (o, &v) in y.iter_mut().zip(x) {
        *o = exp(v - m);
    }
    let inv = 1.0 / sum(y);
    for o in y.iter_mut() {
        *o *= inv;
    }
}

/// `dx = y ⊙ (g − Σ g⊙y)`.
#[inline(always)]
fn softmax_backward_row(y: &[f32], g: &[f32], dx: &mut [f32], scale: f32) {
    let s = dot(y, g);
    for ((o, &yv), &gv) in dx.iter_mut().zip(y).zip(g) {
        *o = yv * (gv - s) * scale;
    }
}

/// Mean and `1/sqrt(biased var + eps)` of a row, two passes (as PyTorch).
#[inline(always)]
fn moments(x: &[f32], eps: f32) -> (f32, f32) {
    let n = x.len() as f32;
    let mean = sum(x) / n;
    let mut acc = [0.0f32; LANES];
    let chunks = x.chunks_exact(LANES);
    let rest: f32 = chunks
        .remainder()
        .iter()
        .map(|v| (v - mean) * (v - mean))
        .sum();
    for c in chunks {
        for l in 0..LANES {
            let d = c[l] - mean;
            acc[l] += d * d;
        }
    }
    let var = (acc.iter().sum::<f32>() + rest) / n;
    (mean, 1.0 / (var + eps).sqrt())
}

#[inline(always)]
fn layer_norm_row(x: &[f32], gamma: &[f32], beta: &[f32], eps: f32, y: &mut [f32]) {
    let (mean, rstd) = moments(x, eps);
    for (((o, &v), &g), &b) in y.iter_mut().zip(x).zip(gamma).zip(beta) {
        *o = (v - mean) * rstd * g + b;
    }
}

/// One row of LayerNorm's backward: writes `dx`, adds to `dgamma` and `dbeta`.
/// With `x̂ = (x − mean)·rstd` and `h = dy ⊙ gamma`:
/// `dx = rstd · (h − mean(h) − x̂ · mean(h ⊙ x̂))`.
#[inline(always)]
fn layer_norm_backward_row(
    x: &[f32],
    gamma: &[f32],
    dy: &[f32],
    eps: f32,
    dx: &mut [f32],
    dgamma: &mut [f32],
    dbeta: &mut [f32],
) {
    let n = x.len() as f32;
    let (mean, rstd) = moments(x, eps);
    // dx first holds h = dy ⊙ gamma.
    for ((o, &d), &g) in dx.iter_mut().zip(dy).zip(gamma) {
        *o = d * g;
    }
    let mut acc = [0.0f32; LANES];
    let mut rest = 0.0f32;
    let full = x.len() / LANES * LANES;
    for (xc, hc) in x[..full]
        .chunks_exact(LANES)
        .zip(dx[..full].chunks_exact(LANES))
    {
        for l in 0..LANES {
            acc[l] += hc[l] * (xc[l] - mean) * rstd;
        }
    }
    for j in full..x.len() {
        rest += dx[j] * (x[j] - mean) * rstd;
    }
    let mean_hx = (acc.iter().sum::<f32>() + rest) / n;
    let mean_h = sum(dx) / n;
    for (((o, &v), &d), (dg, db)) in dx
        .iter_mut()
        .zip(x)
        .zip(dy)
        .zip(dgamma.iter_mut().zip(dbeta.iter_mut()))
    {
        let xhat = (v - mean) * rstd;
        *dg += d * xhat;
        *db += d;
        *o = rstd * (*o - mean_h - xhat * mean_hx);
    }
}
