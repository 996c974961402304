//! The gradient step: from accumulated gradients to updated weights — non-finite loss
//! refused, L1 penalty, global-norm clipping (PyTorch's, not burn's per-tensor clipping),
//! the optimiser at the schedule's rate — and the per-micro-batch dropout seed.

use burn::module::{Module, ModuleVisitor, Param};
use burn::optim::{GradientsAccumulator, GradientsParams, ModuleOptimizer};
use burn::tensor::Tensor;

use crate::config::RunConfig;
use crate::error::{Error, Result};
use crate::schedule::Schedule;

/// One optimiser step on accumulated gradients: refuses a non-finite loss, adds the L1
/// penalty, clips the global norm, steps at the schedule's rate; returns the model and rate.
#[allow(clippy::too_many_arguments)]
pub(crate) fn optimizer_step<M: Module>(
    config: &RunConfig,
    model: M,
    optim: &mut ModuleOptimizer,
    lr_groups: &mut burn::lr_scheduler::module_lr_scheduler::ModuleLrScheduler,
    schedule: &Schedule,
    accumulator: GradientsAccumulator<M>,
    loss: f64,
    position: (usize, usize),
) -> Result<(M, f64)> {
    let (step, epoch) = position;
    if !loss.is_finite() {
        return Err(Error::Engine(format!(
            "training loss became {loss} at step {} (epoch {}); lower train.learning_rate or check the data",
            step + 1,
            epoch + 1
        )));
    }
    let mut accumulator = accumulator;
    let mut grads = accumulator.grads();
    add_l1_penalty(&model, &mut grads, config.train.l1);
    // Under DP-SGD each example was clipped before the noise; clipping the noisy sum again
    // would only shrink the noise's effect unevenly (train.max_grad_norm is not applied).
    if config.privacy.dp.is_none() {
        clip_global_norm(&model, &mut grads, config.train.max_grad_norm)?;
    }
    let lr = schedule.lr(step);
    Ok((optim.step(lr_groups.step(), model, grads), lr))
}

/// Squared L2 norms of every gradient, summed on the device.
struct GradNorm<'a> {
    grads: &'a GradientsParams,
    total: Option<Tensor<1>>,
}

impl ModuleVisitor for GradNorm<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if let Some(g) = self.grads.get::<D>(param.id) {
            let sq = g.square().sum();
            self.total = Some(match self.total.take() {
                Some(t) => t + sq,
                None => sq,
            });
        }
    }
}

struct GradScale<'a> {
    grads: &'a mut GradientsParams,
    factor: f64,
}

impl ModuleVisitor for GradScale<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if let Some(g) = self.grads.remove::<D>(param.id) {
            self.grads
                .register::<D>(param.id, g.mul_scalar(self.factor));
        }
    }
}

/// Adds the L1 penalty's (sub)gradient `coef · sign(w)` to the gradient of every trainable
/// matrix (the parameters that get weight decay; biases and LayerNorm are exempt, as there).
/// Equal to adding `coef · Σ|w|` to the loss, without building that sum into the graph.
struct L1Grad<'a> {
    grads: &'a mut GradientsParams,
    coef: f64,
}

impl ModuleVisitor for L1Grad<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if D < 2 {
            return;
        }
        if let Some(g) = self.grads.remove::<D>(param.id) {
            let sign = param.val().inner().sign().mul_scalar(self.coef);
            self.grads.register::<D>(param.id, g + sign);
        }
    }
}

/// Add an L1 penalty of `coef` to the gradients (see [`L1Grad`]); no-op for 0.
pub fn add_l1_penalty<M: Module>(model: &M, grads: &mut GradientsParams, coef: f64) {
    if coef > 0.0 {
        model.visit(&mut L1Grad { grads, coef });
    }
}

/// Clip the *global* gradient norm to `max_norm`, as `torch.nn.utils.clip_grad_norm_` (and so
/// HF Trainer) does. burn's `GradientClipping::Norm` clips each tensor by its own norm, which
/// is a different update, so the global version is written here. Returns the norm before
/// clipping.
pub fn clip_global_norm<M: Module>(
    model: &M,
    grads: &mut GradientsParams,
    max_norm: f64,
) -> Result<f64> {
    let mut norm = GradNorm { grads, total: None };
    model.visit(&mut norm);
    let Some(total) = norm.total else {
        return Ok(0.0);
    };
    let total = crate::model::weights::to_vec(total.sqrt())?;
    let total = f64::from(total.first().copied().unwrap_or(0.0));
    if max_norm > 0.0 {
        let coef = max_norm / (total + 1e-6);
        if coef < 1.0 {
            model.visit(&mut GradScale {
                grads,
                factor: coef,
            });
        }
    }
    Ok(total)
}

/// The dropout seed of micro-batch `micro` of optimiser step `step` (a hash of the three).
pub(crate) fn step_seed(seed: u64, step: usize, micro: usize) -> u64 {
    let mut h = seed ^ 0x9e37_79b9_7f4a_7c15;
    for v in [step as u64, micro as u64] {
        h = (h ^ v).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        h ^= h >> 31;
    }
    h
}
