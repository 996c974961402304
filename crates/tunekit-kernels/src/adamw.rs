//! The element-wise arithmetic of the fused AdamW step (tunekit's `optim::FusedAdamW`, which
//! decides which tensors take it): one pass over a block of a parameter and its two moments,
//! in burn's `AdamW` operation order, compiled for AVX-512 / AVX2 where the CPU has them.

use crate::fused::multiversion;

/// The step's scalars, derived by the optimiser from its settings, the step and the learning
/// rate (see `optim::FusedAdamW::step`).
pub struct Coefficients {
    /// β₁.
    pub b1: f32,
    /// β₂.
    pub b2: f32,
    /// 1 − β₁.
    pub f1: f32,
    /// 1 − β₂.
    pub f2: f32,
    /// Bias correction of the first moment, 1 − β₁ᵗ.
    pub c1: f32,
    /// Bias correction of the second moment, 1 − β₂ᵗ.
    pub c2: f32,
    /// ε.
    pub eps: f32,
    /// Decoupled decay factor, 1 − lr·λ.
    pub decay: f32,
    /// Whether the decay applies (lr·λ ≠ 0).
    pub decays: bool,
    /// Learning rate.
    pub lr: f32,
}

multiversion! {
    /// One AdamW update of a block, in burn's operation order: the parameter `p` and the
    /// moments `m`, `v` updated in place from the gradient `g` (all of one length).
    pub fn adamw_block(p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32], k: &Coefficients) {
        for (((p, &g), m), v) in p.iter_mut().zip(g).zip(m.iter_mut()).zip(v.iter_mut()) {
            *m = *m * k.b1 + g * k.f1;
            *v = *v * k.b2 + g * g * k.f2;
            let m_hat = *m / k.c1;
            let v_hat = *v / k.c2;
            let delta = m_hat / (v_hat.sqrt() + k.eps);
            let decayed = if k.decays { *p * k.decay } else { *p };
            *p = decayed - delta * k.lr;
        }
    }
}
