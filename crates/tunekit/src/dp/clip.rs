//! The DP-SGD gradient step: per-example gradients, each clipped to C over all trainable
//! parameters, summed, Gaussian noise N(0, (σC)²) added to every trainable coordinate, and
//! the sum divided by the expected logical batch (Opacus's `DPOptimizer` with
//! `loss_reduction = "mean"`).
//!
//! Per-example gradients come from running each example alone (its own forward and backward
//! at its own length, so no padding enters): exact for every parameter type, for full
//! fine-tuning and LoRA alike (only parameters that require a gradient are private
//! parameters: with LoRA the adapters and the head).

use burn::module::{Module, ModuleVisitor, Param};
use burn::optim::{GradientsAccumulator, GradientsParams};
use burn::tensor::{Device, Tensor, TensorData};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::DpPlan;
use crate::error::Result;
use crate::train::fit::{GradientStep, Objective};
use crate::train::step::step_seed;

/// Squared L2 norm of all gradients in `grads` (one number, on the host).
struct SquaredNorm<'a> {
    grads: &'a GradientsParams,
    parts: Vec<Tensor<1>>,
}

impl ModuleVisitor for SquaredNorm<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if let Some(g) = self.grads.get::<D>(param.id) {
            self.parts.push(g.square().sum());
        }
    }
}

/// The L2 norm of one example's whole gradient (all trainable parameters).
pub fn gradient_norm<M: Module>(model: &M, grads: &GradientsParams) -> Result<f64> {
    let mut v = SquaredNorm {
        grads,
        parts: Vec::new(),
    };
    model.visit(&mut v);
    if v.parts.is_empty() {
        return Ok(0.0);
    }
    let total = crate::model::weights::to_vec(Tensor::cat(v.parts, 0).sum())?;
    Ok(f64::from(total.first().copied().unwrap_or(0.0)).sqrt())
}

/// Opacus's clipping factor: min(1, C / (‖g‖ + 10⁻⁶)).
pub fn clip_factor(norm: f64, max_grad_norm: f64) -> f64 {
    (max_grad_norm / (norm + 1e-6)).min(1.0)
}

/// Multiply every gradient by `factor`.
struct Scale<'a> {
    grads: &'a mut GradientsParams,
    factor: f64,
}

impl ModuleVisitor for Scale<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if let Some(g) = self.grads.remove::<D>(param.id) {
            self.grads
                .register::<D>(param.id, g.mul_scalar(self.factor));
        }
    }
}

/// `(g + N(0, std²)) / divisor` for every parameter that requires a gradient (a parameter
/// with no gradient, e.g. in an empty batch, gets noise alone).
struct Noise<'a> {
    grads: &'a mut GradientsParams,
    std: f64,
    divisor: f64,
    rng: StdRng,
}

impl Noise<'_> {
    fn normals(&mut self, n: usize) -> Vec<f32> {
        // Box–Muller on the seeded generator: two normals per pair of uniforms.
        let mut out = Vec::with_capacity(n + 1);
        while out.len() < n {
            let u1: f64 = 1.0 - self.rng.random::<f64>();
            let u2: f64 = self.rng.random::<f64>();
            let r = (-2.0 * u1.ln()).sqrt() * self.std;
            let a = 2.0 * std::f64::consts::PI * u2;
            out.push((r * a.cos()) as f32);
            out.push((r * a.sin()) as f32);
        }
        out.truncate(n);
        out
    }
}

impl ModuleVisitor for Noise<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if !param.is_require_grad() {
            return;
        }
        let inner = param.val().inner();
        let shape = inner.shape();
        let noise = if self.std > 0.0 {
            let n = self.normals(shape.num_elements());
            Tensor::<D>::from_data(TensorData::new(n, shape), &inner.device())
        } else {
            inner.zeros_like()
        };
        let g = match self.grads.remove::<D>(param.id) {
            Some(g) => g + noise,
            None => noise,
        };
        self.grads
            .register::<D>(param.id, g.div_scalar(self.divisor));
    }
}

/// Add the noise of step `step` (seeded by `(seed, step)`) and divide by the expected batch.
pub fn privatise<M: Module>(
    model: &M,
    grads: &mut GradientsParams,
    plan: &DpPlan,
    seed: u64,
    step: usize,
) {
    let rng = StdRng::seed_from_u64(step_seed(seed ^ 0x4e4f_4953_4500_0000, step, 0));
    model.visit(&mut Noise {
        grads,
        std: plan.noise_multiplier * plan.max_grad_norm,
        divisor: plan.expected_batch as f64,
        rng,
    });
}

/// The sum over `examples` of each example's gradient clipped to `max_grad_norm`, and the
/// summed loss. Example `k` of the list runs with dropout seeded by `(seed, step, k)`.
///
/// # Errors
/// The objective's loss errors and tensor read-back errors.
pub(crate) fn clipped_sum<O: Objective>(
    objective: &O,
    model: &O::Model,
    examples: &[usize],
    max_grad_norm: f64,
    ad: &Device,
    (seed, step): (u64, usize),
) -> Result<(GradientsParams, f64)> {
    let mut accumulator = GradientsAccumulator::new();
    let mut loss_sum = 0.0f64;
    for (k, &i) in examples.iter().enumerate() {
        ad.seed(step_seed(seed, step, k));
        let loss = objective.loss_sum(model, &[i], ad)?;
        let value = crate::model::weights::to_vec(loss.clone().detach())?;
        loss_sum += f64::from(value.first().copied().unwrap_or(f32::NAN));
        let mut grads = GradientsParams::from_grads(loss.backward(), model);
        let factor = clip_factor(gradient_norm(model, &grads)?, max_grad_norm);
        if factor < 1.0 {
            model.visit(&mut Scale {
                grads: &mut grads,
                factor,
            });
        }
        accumulator.accumulate(model, grads);
    }
    Ok((accumulator.grads(), loss_sum))
}

/// The DP-SGD [`GradientStep`]: the group is one Poisson-sampled logical batch.
pub(crate) struct DpStep {
    /// The autodiff device.
    pub ad: Device,
    /// The run seed.
    pub seed: u64,
    /// σ, C, q, the expected batch.
    pub plan: DpPlan,
}

impl GradientStep for DpStep {
    fn gradients<O: Objective>(
        &self,
        objective: &O,
        model: &O::Model,
        group: &[Vec<usize>],
        step: usize,
    ) -> Result<(GradientsAccumulator<O::Model>, f64)> {
        let examples: Vec<usize> = group.iter().flatten().copied().collect();
        let (mut grads, loss_sum) = clipped_sum(
            objective,
            model,
            &examples,
            self.plan.max_grad_norm,
            &self.ad,
            (self.seed, step),
        )?;
        privatise(model, &mut grads, &self.plan, self.seed, step);
        let mut accumulator = GradientsAccumulator::new();
        accumulator.accumulate(model, grads);
        // The mean loss of the examples sampled (for the log; outside the guarantee).
        Ok((accumulator, loss_sum / examples.len().max(1) as f64))
    }
}
