//! AdamW as one pass over each parameter: burn's `AdamW` arithmetic, fused for f32 tensors on
//! the Flex (CPU) backend.
//!
//! Why our own: burn 0.22's `AdamW::step` is correct but runs ~15 separate tensor ops per
//! parameter (moments, bias corrections, square root, decay, update), each a full pass over
//! memory with a fresh buffer. For all-MiniLM-L6-v2 (22.7 M parameters) that was 123 ms of a
//! 919 ms training step, against 55 ms for PyTorch's whole optimiser step
//! (docs/benchmarks.md, "CPU engine"). [`FusedAdamW`] does the same element-wise arithmetic,
//! in the same order, in one parallel pass that updates the parameter and both moments in
//! place when their buffers are not shared.
//!
//! It is a burn [`Optimizer`] with burn's own state type ([`AdamWState`]), so parameter groups,
//! gradient clipping, learning-rate schedules and optimiser checkpoints work unchanged, and any
//! tensor that is not f32 on Flex (CUDA, other dtypes) goes through burn's `AdamW`.

use burn::optim::{AdamW, AdamWConfig, AdamWState, AdaptiveMomentumState, LearningRate, Optimizer};
use burn::tensor::{DType, Device, Tensor, TensorData};
use rayon::prelude::*;

use tunekit_kernels::adamw::{Coefficients, adamw_block};
use tunekit_kernels::fused::on_flex_f32;

/// AdamW (decoupled weight decay, PyTorch's and burn's formula) in one fused pass.
#[derive(Clone)]
pub struct FusedAdamW {
    beta_1: f32,
    beta_2: f32,
    epsilon: f32,
    weight_decay: f32,
    /// burn's optimizer with the same settings, for tensors the fused path does not take.
    fallback: AdamW,
}

impl FusedAdamW {
    /// The optimizer for these settings (no AMSGrad, no cautious decay: what tunekit uses).
    pub fn new(beta_1: f32, beta_2: f32, epsilon: f32, weight_decay: f32) -> Self {
        let fallback = AdamWConfig::new()
            .with_beta_1(beta_1)
            .with_beta_2(beta_2)
            .with_epsilon(epsilon)
            .with_weight_decay(weight_decay)
            .build();
        Self {
            beta_1,
            beta_2,
            epsilon,
            weight_decay,
            fallback,
        }
    }
}

/// Elements per rayon task.
const CHUNK: usize = 64 * 1024;

/// A tensor's f32 values, without a copy when its buffer is contiguous and not shared.
fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    // `into_vec` reuses the buffer when it can, and converts (copies) otherwise.
    t.into_data().try_into_vec::<f32>().unwrap_or_default()
}

impl Optimizer for FusedAdamW {
    type State<const D: usize> = AdamWState<D>;

    fn step<const D: usize>(
        &self,
        lr: LearningRate,
        tensor: Tensor<D>,
        grad: Tensor<D>,
        state: Option<Self::State<D>>,
    ) -> (Tensor<D>, Option<Self::State<D>>) {
        let fusable = on_flex_f32(&tensor)
            && on_flex_f32(&grad)
            && !tensor.is_autodiff()
            && state.as_ref().is_none_or(|s| {
                s.momentum.max_moment_2.is_none()
                    && s.momentum.moment_1.dtype() == DType::F32
                    && s.momentum.moment_2.dtype() == DType::F32
            });
        if !fusable {
            return self.fallback.step(lr, tensor, grad, state);
        }
        let device = tensor.device();
        let shape = tensor.shape();
        let n = shape.num_elements();
        let (time, m, v) = match state {
            Some(s) => (
                s.momentum.time + 1,
                values(s.momentum.moment_1),
                values(s.momentum.moment_2),
            ),
            None => (1, vec![0.0f32; n], vec![0.0f32; n]),
        };
        let mut p = values(tensor);
        let g = values(grad);
        let (mut m, mut v) = (m, v);
        // All four are f32 of `shape` (checked above), so they have `n` values each.
        debug_assert!(p.len() == n && g.len() == n && m.len() == n && v.len() == n);
        let t = time as i32;
        let k = Coefficients {
            b1: self.beta_1,
            b2: self.beta_2,
            f1: 1.0 - self.beta_1,
            f2: 1.0 - self.beta_2,
            c1: 1.0 - self.beta_1.powi(t),
            c2: 1.0 - self.beta_2.powi(t),
            eps: self.epsilon,
            // burn: `decay_rate = lr · wd` in f64, then `tensor · (1 − decay_rate)`, then
            // `− delta · lr`, each scalar taken as f32.
            decay: (1.0 - lr * self.weight_decay as f64) as f32,
            decays: lr * self.weight_decay as f64 != 0.0,
            lr: lr as f32,
        };
        p.par_chunks_mut(CHUNK)
            .zip(g.par_chunks(CHUNK))
            .zip(m.par_chunks_mut(CHUNK).zip(v.par_chunks_mut(CHUNK)))
            .for_each(|((p, g), (m, v))| adamw_block(p, g, m, v, &k));
        let tensor =
            |x: Vec<f32>| Tensor::<D>::from_data(TensorData::new(x, shape.clone()), &device);
        let state = AdamWState::new(AdaptiveMomentumState {
            time,
            moment_1: tensor(m),
            moment_2: tensor(v),
            max_moment_2: None,
        });
        (tensor(p), Some(state))
    }

    fn to_device<const D: usize>(state: Self::State<D>, device: &Device) -> Self::State<D> {
        <AdamW as Optimizer>::to_device(state, device)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::nn::{Linear, LinearConfig};
    use burn::optim::{GradientsParams, ModuleOptimizer};
    use burn::tensor::Distribution;

    fn params(model: &Linear) -> Vec<f32> {
        let mut v = crate::model::weights::to_vec(model.weight.val()).unwrap();
        v.extend(crate::model::weights::to_vec(model.bias.as_ref().unwrap().val()).unwrap());
        v
    }

    #[test]
    fn fused_adamw_follows_burns_adamw_step_for_step() {
        let device = Device::flex().autodiff();
        device.seed(5);
        let start = LinearConfig::new(37, 11).init(&device);
        let x = Tensor::<2>::random([8, 37], Distribution::Normal(0.0, 1.0), &device);
        let run = |mut optim: ModuleOptimizer| {
            let mut model = start.clone();
            let mut trace = Vec::new();
            for step in 0..5 {
                let loss = model.forward(x.clone()).powf_scalar(2.0).mean();
                let grads = GradientsParams::from_grads(loss.backward(), &model);
                // A changing learning rate, as a schedule gives.
                model = optim.step(1e-2 / (1.0 + step as f64), model, grads);
                trace.push(params(&model));
            }
            trace
        };
        let fused = run(ModuleOptimizer::from(FusedAdamW::new(0.9, 0.98, 1e-6, 0.1)));
        let burn = run(AdamWConfig::new()
            .with_beta_1(0.9)
            .with_beta_2(0.98)
            .with_epsilon(1e-6)
            .with_weight_decay(0.1)
            .init());
        for (step, (a, b)) in fused.iter().zip(&burn).enumerate() {
            let max = a
                .iter()
                .zip(b)
                .map(|(x, y)| (x - y).abs())
                .fold(0.0, f32::max);
            assert!(max < 1e-6, "step {step}: max |diff| {max}");
        }
        // The parameters really moved (5 steps of ~1e-2).
        let moved = fused[4]
            .iter()
            .zip(&params(&start))
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max);
        assert!(moved > 1e-2, "moved {moved}");
    }

    #[test]
    fn fused_adamw_step_on_plain_cpu_tensors_equals_burns_with_its_state() {
        // Plain (non-autodiff) Flex tensors: the fused path itself, as `ModuleOptimizer`
        // calls it, compared with burn's `AdamW::step` over three steps of carried state.
        let device = Device::flex();
        device.seed(2);
        let fused = FusedAdamW::new(0.9, 0.999, 1e-8, 0.01);
        let burn = AdamWConfig::new()
            .with_epsilon(1e-8)
            .with_weight_decay(0.01)
            .build();
        let mut pa = Tensor::<2>::random([70, 130], Distribution::Normal(0.0, 1.0), &device);
        let mut pb = pa.clone();
        let (mut sa, mut sb) = (None, None);
        for step in 0..3 {
            let g = Tensor::<2>::random([70, 130], Distribution::Normal(0.0, 1.0), &device);
            (pa, sa) = fused.step(2e-3, pa, g.clone(), sa);
            (pb, sb) = burn.step(2e-3, pb, g, sb);
            let a = crate::model::weights::to_vec(pa.clone()).unwrap();
            let b = crate::model::weights::to_vec(pb.clone()).unwrap();
            let max = a
                .iter()
                .zip(&b)
                .map(|(x, y)| (x - y).abs())
                .fold(0.0, f32::max);
            assert!(max < 1e-7, "step {step}: max |diff| {max}");
        }
        let (sa, sb) = (sa.unwrap().momentum, sb.unwrap().momentum);
        assert_eq!(sa.time, 3);
        assert_eq!(sa.time, sb.time);
        let m = crate::model::weights::to_vec(sa.moment_2).unwrap();
        let n = crate::model::weights::to_vec(sb.moment_2).unwrap();
        let max = m
            .iter()
            .zip(&n)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f32::max);
        assert!(max < 1e-7, "second moment max |diff| {max}");
    }

    #[test]
    fn fused_adamw_without_weight_decay_leaves_decay_out() {
        let device = Device::flex().autodiff();
        device.seed(9);
        let start = LinearConfig::new(5, 3).init(&device);
        let x = Tensor::<2>::random([4, 5], Distribution::Normal(0.0, 1.0), &device);
        let step = |mut optim: ModuleOptimizer| {
            let loss = start.forward(x.clone()).sum();
            let grads = GradientsParams::from_grads(loss.backward(), &start);
            params(&optim.step(1e-3, start.clone(), grads))
        };
        let a = step(ModuleOptimizer::from(FusedAdamW::new(
            0.9, 0.999, 1e-8, 0.0,
        )));
        let b = step(
            AdamWConfig::new()
                .with_epsilon(1e-8)
                .with_weight_decay(0.0)
                .init(),
        );
        assert_eq!(a, b);
    }
}
