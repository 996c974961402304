//! Fused CPU ops with their own backward pass — linear, exact-erf GELU, softmax over the last
//! axis, LayerNorm and dropout — for the Flex backend (plain and under autodiff).
//!
//! Why: these were where a training step spent its time (docs/benchmarks.md, "CPU engine").
//! burn 0.22 computes GELU with a scalar libm `erf` per element (forward and backward); under
//! autodiff it decomposes softmax and LayerNorm into chains of element-wise ops, each a
//! separate pass over memory with its own recorded backward; its dropout draws a Bernoulli
//! tensor element by element; and Flex's matmul zero-fills and re-copies every output. Here
//! each op is one pass forward and one backward over contiguous rows (the products one `gemm`
//! call each), with a vectorisable `exp`/`erf` compiled for AVX-512 or AVX2 when the CPU has
//! them (chosen at run time), split across rayon's threads.
//!
//! How: burn's backend-extension mechanism (`#[backend_extension]`). [`FusedOps`] is
//! implemented for `Flex` (forward kernels) and for `Autodiff<Flex, C>` (forward kernels plus a
//! recorded [`Backward`] step). The public functions ([`linear`], [`gelu`], [`softmax_last`],
//! [`layer_norm`], [`dropout`]) route to it only for f32 tensors on a Flex device, and to burn's own ops
//! everywhere else (CUDA, other dtypes), so the model code has one call per op.
//!
//! Numerics: `exp` is a degree-7 polynomial after range reduction (≤ 2 ulp against libm on the
//! tested range), `erf` is `1 − erfc` with the Chebyshev fit of Numerical Recipes' `erfcc`
//! (|erf error| < 4e-7 over [−6, 6], tested), close to PyTorch's own vectorised CPU `erf`
//! (Abramowitz–Stegun 7.1.26, 1.5e-7 absolute). Values and gradients are tested against burn's
//! unfused ops (module tests) and the encoder against `transformers` (parity fixture).

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind, unary};
use burn::backend::tensor::FloatTensor;
use burn::backend::{
    Autodiff, AutodiffBackend, Backend, Dispatch, DispatchDevice, Flex, backend_extension,
};
use burn::nn::LayerNorm;
use burn::tensor::{DType, Shape, Tensor, TensorData};

use super::bf16::Precision;
use burn_flex::FlexTensor;
use rayon::prelude::*;

/// Fused forward ops; see the module docs.
#[backend_extension(Flex, Autodiff)]
pub trait FusedOps: Backend {
    /// Exact GELU, `x Φ(x)`.
    fn fused_gelu(x: FloatTensor<Self>) -> FloatTensor<Self>;
    /// Softmax over the last axis.
    fn fused_softmax(x: FloatTensor<Self>) -> FloatTensor<Self>;
    /// Attention probabilities: softmax over the last axis of `scores / divisor + bias`, for
    /// `scores` `[batch, …, keys]` and an additive `bias` `[batch, keys]` treated as a constant.
    fn fused_attention_softmax(
        scores: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        divisor: f64,
    ) -> FloatTensor<Self>;
    /// Inverted dropout with drop probability `prob`: each element is kept (and scaled by
    /// `1 / (1 − prob)`) or zeroed by a counter-based hash of `seed` and its index, so the
    /// backward pass recomputes the same mask instead of storing it.
    fn fused_dropout(x: FloatTensor<Self>, prob: f64, seed: u64) -> FloatTensor<Self>;
    /// `x · weight + bias` for `x` `[rows, d_in]`, `weight` `[d_in, d_out]`, `bias` `[d_out]`;
    /// with `bf16`, this product and both of its backward products take bf16 operands and
    /// f32 sums ([`super::bf16`]).
    fn fused_linear(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        bf16: bool,
    ) -> FloatTensor<Self>;
    /// LayerNorm over the last axis: `(x − mean) / sqrt(var + eps) · gamma + beta`.
    fn fused_layer_norm(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        epsilon: f64,
    ) -> FloatTensor<Self>;
}

/// Whether `t` takes the fused paths: f32 on a Flex device (with or without autodiff).
pub(crate) fn on_flex_f32<const D: usize>(t: &Tensor<D>) -> bool {
    t.dtype() == DType::F32 && is_flex(&t.device())
}

/// Whether `device` is the Flex CPU backend (with or without autodiff).
pub(crate) fn is_flex(device: &burn::tensor::Device) -> bool {
    matches!(
        device.clone().inner().as_dispatch(),
        DispatchDevice::Flex(_)
    )
}

/// Exact (erf) GELU, HF `gelu`.
pub fn gelu<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    if !on_flex_f32(&x) {
        return burn::tensor::activation::gelu(x);
    }
    Tensor::from_dispatch(<Dispatch as FusedOps>::fused_gelu(x.into_dispatch()))
}

/// `softmax(scores / divisor + bias)` over the last axis: BERT's attention probabilities, with
/// the scaling and the padding mask folded into the softmax pass (`bias` `[batch, 1, 1, keys]`,
/// a constant: the fused path is taken only when it needs no gradient).
pub fn attention_softmax(scores: Tensor<4>, bias: Tensor<4>, divisor: f64) -> Tensor<4> {
    let [batch, _, _, keys] = bias.dims();
    let fits = bias.dims()[1] == 1 && bias.dims()[2] == 1 && scores.dims()[0] == batch;
    if !on_flex_f32(&scores) || !on_flex_f32(&bias) || bias.is_require_grad() || !fits {
        return softmax_last(scores.div_scalar(divisor) + bias);
    }
    let bias = bias.reshape([batch, keys]);
    Tensor::from_dispatch(<Dispatch as FusedOps>::fused_attention_softmax(
        scores.into_dispatch(),
        bias.into_dispatch(),
        divisor,
    ))
}

/// Softmax over the last axis.
pub fn softmax_last<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    if !on_flex_f32(&x) {
        return burn::tensor::activation::softmax(x, D - 1);
    }
    Tensor::from_dispatch(<Dispatch as FusedOps>::fused_softmax(x.into_dispatch()))
}

/// `module.forward(x)`: burn's dropout (same conditions: only when training on an autodiff
/// device, and not in a subtree whose training flag is off), fused where [`on_flex_f32`].
///
/// burn draws a Bernoulli tensor element by element and multiplies twice (each product with
/// its own backward); this draws one 48-bit seed from the device's RNG (so `Device::seed`
/// still makes runs reproducible) and derives the mask from it in one pass.
pub fn dropout<const D: usize>(module: &burn::nn::Dropout, x: Tensor<D>) -> Tensor<D> {
    if !module.training.is_enabled() || !x.device().is_autodiff() || module.prob == 0.0 {
        return x;
    }
    if !on_flex_f32(&x) {
        return module.forward(x);
    }
    let seed = draw_seed(&x.device());
    Tensor::from_dispatch(<Dispatch as FusedOps>::fused_dropout(
        x.into_dispatch(),
        module.prob,
        seed,
    ))
}

/// 48 random bits from the device's RNG (two draws of 24 bits, exact in f32).
pub(crate) fn draw_seed(device: &burn::tensor::Device) -> u64 {
    let draws = Tensor::<1>::random(
        [2],
        burn::tensor::Distribution::Uniform(0.0, 16_777_216.0),
        &device.clone().inner(),
    );
    let v = draws.into_data().try_to_vec::<f32>().unwrap_or_default();
    let part = |i: usize| v.get(i).copied().unwrap_or(0.0).max(0.0) as u64 & 0xFF_FFFF;
    (part(0) << 24) | part(1)
}

/// `linear.forward(x)` for a 2-D `x`, as one GEMM call writing its output once (bias
/// included) where [`on_flex_f32`], its products in `precision`; burn's `linear` (f32)
/// elsewhere and without a bias.
pub fn linear(linear: &burn::nn::Linear, x: Tensor<2>, precision: Precision) -> Tensor<2> {
    let Some(bias) = linear.bias.as_ref() else {
        return linear.forward(x);
    };
    if !on_flex_f32(&x) {
        return linear.forward(x);
    }
    Tensor::from_dispatch(<Dispatch as FusedOps>::fused_linear(
        x.into_dispatch(),
        linear.weight.val().into_dispatch(),
        bias.val().into_dispatch(),
        precision == Precision::Bf16,
    ))
}

/// `norm.forward(x)`, fused where [`on_flex_f32`] (a LayerNorm without bias uses burn's).
/// `epsilon` must be the one `norm` was built with: burn keeps that field private.
pub fn layer_norm<const D: usize>(norm: &LayerNorm, x: Tensor<D>, epsilon: f64) -> Tensor<D> {
    let Some(beta) = norm.beta.as_ref() else {
        return norm.forward(x);
    };
    if !on_flex_f32(&x) {
        return norm.forward(x);
    }
    let gamma = norm.gamma.val();
    let beta = beta.val();
    Tensor::from_dispatch(<Dispatch as FusedOps>::fused_layer_norm(
        x.into_dispatch(),
        gamma.into_dispatch(),
        beta.into_dispatch(),
        epsilon,
    ))
}

// ---------------------------------------------------------------------------------------------
// Flex: forward kernels.
// ---------------------------------------------------------------------------------------------

impl FusedOps for Flex {
    fn fused_gelu(x: FlexTensor) -> FlexTensor {
        if x.dtype() != DType::F32 {
            return <Flex as burn::backend::ops::ActivationOps<Flex>>::gelu(x);
        }
        map_elements(&x, kernels::gelu_block)
    }

    fn fused_attention_softmax(scores: FlexTensor, bias: FlexTensor, divisor: f64) -> FlexTensor {
        let (shape, xs) = contiguous(&scores);
        let (bias_shape, bs) = contiguous(&bias);
        let n = last_dim(&shape);
        let batch = bias_shape[0].max(1);
        let rows_per_batch = (xs.len() / n) / batch;
        let mut out = vec![0.0f32; xs.len()];
        for_row_blocks(&mut out, n, |first, y| {
            kernels::attention_softmax_block(
                &xs[first * n..][..y.len()],
                y,
                n,
                &bs,
                first,
                rows_per_batch,
                divisor as f32,
            )
        });
        from_vec(out, shape)
    }

    fn fused_softmax(x: FlexTensor) -> FlexTensor {
        if x.dtype() != DType::F32 {
            let dim = x.layout().shape().num_dims() - 1;
            return <Flex as burn::backend::ops::ActivationOps<Flex>>::softmax(x, dim);
        }
        let (shape, xs) = contiguous(&x);
        let n = last_dim(&shape);
        let mut out = vec![0.0f32; xs.len()];
        for_row_blocks(&mut out, n, |first, y| {
            kernels::softmax_block(&xs[first * n..][..y.len()], y, n)
        });
        from_vec(out, shape)
    }

    fn fused_dropout(x: FlexTensor, prob: f64, seed: u64) -> FlexTensor {
        if x.dtype() != DType::F32 {
            // `dropout` routes only f32 here; any other float dtype still gets the dropout,
            // through an f32 copy.
            let dtype = burn::tensor::FloatDType::from(x.dtype());
            let as_f32 = <Flex as burn::backend::ops::FloatTensorOps<Flex>>::float_cast(
                x,
                burn::tensor::FloatDType::F32,
            );
            return <Flex as burn::backend::ops::FloatTensorOps<Flex>>::float_cast(
                apply_dropout(&as_f32, prob, seed),
                dtype,
            );
        }
        apply_dropout(&x, prob, seed)
    }

    fn fused_linear(x: FlexTensor, weight: FlexTensor, bias: FlexTensor, bf16: bool) -> FlexTensor {
        let f32s = [&x, &weight, &bias].iter().all(|t| t.dtype() == DType::F32);
        if !f32s || x.layout().shape().num_dims() != 2 {
            return <Flex as burn::backend::ops::ModuleOps<Flex>>::linear(x, weight, Some(bias));
        }
        let (xs_shape, xs) = contiguous(&x);
        let (w_shape, w) = contiguous(&weight);
        let (_, b) = contiguous(&bias);
        let (rows, d_in, d_out) = (xs_shape[0], xs_shape[1], w_shape[1]);
        from_vec(
            gemm::linear_forward(&xs, &w, &b, rows, d_in, d_out, bf16),
            Shape::new([rows, d_out]),
        )
    }

    fn fused_layer_norm(
        x: FlexTensor,
        gamma: FlexTensor,
        beta: FlexTensor,
        eps: f64,
    ) -> FlexTensor {
        if x.dtype() != DType::F32 {
            return <Flex as burn::backend::ops::ModuleOps<Flex>>::layer_norm(
                x,
                gamma,
                Some(beta),
                eps,
            );
        }
        layer_norm_forward(&x, &gamma, &beta, eps as f32)
    }
}

fn last_dim(shape: &Shape) -> usize {
    let r = shape.num_dims();
    if r == 0 { 1 } else { shape[r - 1].max(1) }
}

/// The tensor's shape and its f32 values in row-major order (a copy only if it is strided).
pub(crate) fn contiguous(t: &FlexTensor) -> (Shape, std::borrow::Cow<'_, [f32]>) {
    let shape = t.layout().shape().clone();
    match t.as_slice::<f32>() {
        Some(s) => (shape, std::borrow::Cow::Borrowed(s)),
        None => {
            let c = t.to_contiguous();
            let v = c.as_slice::<f32>().map(<[f32]>::to_vec).unwrap_or_default();
            (shape, std::borrow::Cow::Owned(v))
        }
    }
}

pub(crate) fn from_vec(values: Vec<f32>, shape: Shape) -> FlexTensor {
    FlexTensor::from_data(TensorData::new(values, shape))
}

/// Elements per rayon task: large enough that scheduling is noise, small enough that both
/// cores get work on a batch-1 activation.
const CHUNK: usize = 16 * 1024;

fn map_elements(x: &FlexTensor, f: impl Fn(&[f32], &mut [f32]) + Sync) -> FlexTensor {
    let (shape, xs) = contiguous(x);
    let mut out = vec![0.0f32; xs.len()];
    out.par_chunks_mut(CHUNK)
        .zip(xs.par_chunks(CHUNK))
        .for_each(|(o, i)| f(i, o));
    from_vec(out, shape)
}

/// Dropout's mask for drop probability `prob` and `seed`.
pub(crate) fn dropout_mask(prob: f64, seed: u64) -> kernels::DropoutMask {
    let keep = 1.0 - prob;
    kernels::DropoutMask {
        seed,
        // Kept when 24 hash bits fall below keep · 2^24.
        threshold: (keep * 16_777_216.0).round() as u32,
        scale: (1.0 / keep) as f32,
    }
}

/// `x ⊙ mask / (1 − prob)` with the mask of `seed`; also dropout's backward (the same linear
/// map applied to the gradient).
fn apply_dropout(x: &FlexTensor, prob: f64, seed: u64) -> FlexTensor {
    let (shape, xs) = contiguous(x);
    let mask = dropout_mask(prob, seed);
    let mut out = vec![0.0f32; xs.len()];
    out.par_chunks_mut(CHUNK)
        .zip(xs.par_chunks(CHUNK))
        .enumerate()
        .for_each(|(task, (o, i))| kernels::dropout_block(i, o, (task * CHUNK) as u64, &mask));
    from_vec(out, shape)
}

fn zip_elements(
    a: &FlexTensor,
    b: &FlexTensor,
    f: impl Fn(&[f32], &[f32], &mut [f32]) + Sync,
) -> FlexTensor {
    let (shape, xs) = contiguous(a);
    let (_, gs) = contiguous(b);
    let mut out = vec![0.0f32; xs.len()];
    out.par_chunks_mut(CHUNK)
        .zip(xs.par_chunks(CHUNK).zip(gs.par_chunks(CHUNK)))
        .for_each(|(o, (i, g))| f(i, g, o));
    from_vec(out, shape)
}

/// Runs `f(first_row, block)` over blocks of whole rows (of length `n`) of `out`, in parallel.
fn for_row_blocks(out: &mut [f32], n: usize, f: impl Fn(usize, &mut [f32]) + Sync) {
    let rows_per_task = (CHUNK / n).max(1);
    out.par_chunks_mut(rows_per_task * n)
        .enumerate()
        .for_each(|(task, block)| f(task * rows_per_task, block));
}

fn layer_norm_forward(
    x: &FlexTensor,
    gamma: &FlexTensor,
    beta: &FlexTensor,
    eps: f32,
) -> FlexTensor {
    let (shape, xs) = contiguous(x);
    let (_, g) = contiguous(gamma);
    let (_, b) = contiguous(beta);
    let n = last_dim(&shape);
    let mut out = vec![0.0f32; xs.len()];
    for_row_blocks(&mut out, n, |first, y| {
        kernels::layer_norm_block(&xs[first * n..][..y.len()], &g, &b, eps, y, n);
    });
    from_vec(out, shape)
}

/// LayerNorm backward: `(dx, dgamma, dbeta)`.
fn layer_norm_backward(
    x: &FlexTensor,
    gamma: &FlexTensor,
    grad: &FlexTensor,
    eps: f32,
) -> (FlexTensor, FlexTensor, FlexTensor) {
    let (shape, xs) = contiguous(x);
    let (_, g) = contiguous(gamma);
    let (_, dy) = contiguous(grad);
    let n = last_dim(&shape);
    let mut dx = vec![0.0f32; xs.len()];
    let rows_per_task = (CHUNK / n).max(1);
    // Each task sums its rows' dgamma/dbeta; the partial sums are added at the end.
    let partials: Vec<(Vec<f32>, Vec<f32>)> = dx
        .par_chunks_mut(rows_per_task * n)
        .enumerate()
        .map(|(task, block)| {
            let mut dg = vec![0.0f32; n];
            let mut db = vec![0.0f32; n];
            let r = task * rows_per_task * n;
            let len = block.len();
            kernels::layer_norm_backward_block(
                &xs[r..r + len],
                &g,
                &dy[r..r + len],
                eps,
                block,
                &mut dg,
                &mut db,
                n,
            );
            (dg, db)
        })
        .collect();
    let mut dgamma = vec![0.0f32; n];
    let mut dbeta = vec![0.0f32; n];
    for (dg, db) in partials {
        for j in 0..n {
            dgamma[j] += dg[j];
            dbeta[j] += db[j];
        }
    }
    (
        from_vec(dx, shape),
        from_vec(dgamma, Shape::new([n])),
        from_vec(dbeta, Shape::new([n])),
    )
}

// ---------------------------------------------------------------------------------------------
// Autodiff<Flex>: forward kernels plus recorded backward steps.
// ---------------------------------------------------------------------------------------------

#[derive(Debug)]
struct GeluBackward;

impl Backward<Flex, 1> for GeluBackward {
    /// The input.
    type State = FlexTensor;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let x = ops.state;
        unary::<Flex, _>(ops.parents, ops.node, grads, |g| {
            zip_elements(&x, &g, kernels::gelu_backward_block)
        });
    }
}

#[derive(Debug)]
struct SoftmaxBackward;

impl Backward<Flex, 1> for SoftmaxBackward {
    /// The output.
    type State = FlexTensor;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let y = ops.state;
        unary::<Flex, _>(ops.parents, ops.node, grads, |g| {
            softmax_backward(&y, &g, 1.0)
        });
    }
}

#[derive(Debug)]
struct AttentionSoftmaxBackward;

impl Backward<Flex, 1> for AttentionSoftmaxBackward {
    /// The output and the divisor.
    type State = (FlexTensor, f64);

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let (y, divisor) = ops.state;
        let scale = (1.0 / divisor) as f32;
        unary::<Flex, _>(ops.parents, ops.node, grads, |g| {
            softmax_backward(&y, &g, scale)
        });
    }
}

/// Softmax's input gradient from its output `y` and upstream gradient `g`, row by row, times
/// `scale` (the chain rule of an input scaled before the softmax).
fn softmax_backward(y: &FlexTensor, g: &FlexTensor, scale: f32) -> FlexTensor {
    let (shape, ys) = contiguous(y);
    let (_, gs) = contiguous(g);
    let n = last_dim(&shape);
    let mut dx = vec![0.0f32; ys.len()];
    for_row_blocks(&mut dx, n, |first, out| {
        let r = first * n;
        let len = out.len();
        kernels::softmax_backward_block(&ys[r..r + len], &gs[r..r + len], out, n, scale);
    });
    from_vec(dx, shape)
}

#[derive(Debug)]
struct DropoutBackward;

impl Backward<Flex, 1> for DropoutBackward {
    /// Drop probability and mask seed.
    type State = (f64, u64);

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let (prob, seed) = ops.state;
        unary::<Flex, _>(ops.parents, ops.node, grads, |g| {
            apply_dropout(&g, prob, seed)
        });
    }
}

#[derive(Debug)]
struct LinearBackward;

impl Backward<Flex, 3> for LinearBackward {
    /// Input `[rows, d_in]`, weight `[d_in, d_out]`, and whether the products are bf16.
    type State = (FlexTensor, FlexTensor, bool);

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [px, pw, pb] = ops.parents;
        let grad = grads.consume::<Flex>(&ops.node);
        let (x, w, bf16) = &ops.state;
        let bf16 = *bf16;
        let (x_shape, xs) = contiguous(x);
        let (w_shape, ws) = contiguous(w);
        let (_, dy) = contiguous(&grad);
        let (rows, d_in, d_out) = (x_shape[0], x_shape[1], w_shape[1]);
        if let Some(node) = px {
            let dx = gemm::input_grad(&dy, &ws, rows, d_in, d_out, bf16);
            grads.register::<Flex>(node.id, from_vec(dx, Shape::new([rows, d_in])));
        }
        if let Some(node) = pw {
            let dw = gemm::weight_grad(&xs, &dy, rows, d_in, d_out, bf16);
            grads.register::<Flex>(node.id, from_vec(dw, Shape::new([d_in, d_out])));
        }
        if let Some(node) = pb {
            let db = gemm::column_sums(&dy, rows, d_out);
            grads.register::<Flex>(node.id, from_vec(db, Shape::new([d_out])));
        }
    }
}

#[derive(Debug)]
struct LayerNormBackward;

impl Backward<Flex, 3> for LayerNormBackward {
    /// Input, gamma, epsilon.
    type State = (FlexTensor, FlexTensor, f32);

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [px, pg, pb] = ops.parents;
        let grad = grads.consume::<Flex>(&ops.node);
        let (x, gamma, eps) = &ops.state;
        let (dx, dgamma, dbeta) = layer_norm_backward(x, gamma, &grad, *eps);
        if let Some(node) = px {
            grads.register::<Flex>(node.id, dx);
        }
        if let Some(node) = pg {
            grads.register::<Flex>(node.id, dgamma);
        }
        if let Some(node) = pb {
            grads.register::<Flex>(node.id, dbeta);
        }
    }
}

pub(crate) type AdTensor<C> = FloatTensor<Autodiff<Flex, C>>;

/// Records a one-input op on the autodiff graph: `forward` gets the input's inner tensor and
/// returns the output and the state `backward` keeps (dropped when nothing needs a gradient).
fn record_unary<C: CheckpointStrategy, BO: Backward<Flex, 1>>(
    backward: BO,
    node: burn::backend::autodiff::ops::NodeGuard,
    x: FlexTensor,
    forward: impl FnOnce(FlexTensor) -> (FlexTensor, BO::State),
) -> AdTensor<C> {
    let (y, state) = forward(x);
    match backward.prepare::<C>([node]).compute_bound().stateful() {
        OpsKind::Tracked(prep) => prep.finish(state, y),
        OpsKind::UnTracked(prep) => prep.finish(y),
    }
}

impl<C: CheckpointStrategy> FusedOps for Autodiff<Flex, C> {
    fn fused_gelu(x: AdTensor<C>) -> AdTensor<C> {
        let node = x.node();
        let inner = Autodiff::<Flex, C>::inner(x);
        if inner.dtype() != DType::F32 {
            return <Self as burn::backend::ops::ActivationOps<Self>>::gelu(
                Autodiff::<Flex, C>::from_inner(inner),
            );
        }
        record_unary::<C, _>(GeluBackward, node, inner, |x| {
            (map_elements(&x, kernels::gelu_block), x)
        })
    }

    fn fused_attention_softmax(
        scores: AdTensor<C>,
        bias: AdTensor<C>,
        divisor: f64,
    ) -> AdTensor<C> {
        let node = scores.node();
        let inner = Autodiff::<Flex, C>::inner(scores);
        // The bias is a constant (`attention_softmax` checks it needs no gradient).
        let bias = Autodiff::<Flex, C>::inner(bias);
        record_unary::<C, _>(AttentionSoftmaxBackward, node, inner, |x| {
            let y = <Flex as FusedOps>::fused_attention_softmax(x, bias, divisor);
            (y.clone(), (y, divisor))
        })
    }

    fn fused_softmax(x: AdTensor<C>) -> AdTensor<C> {
        let node = x.node();
        record_unary::<C, _>(SoftmaxBackward, node, Autodiff::<Flex, C>::inner(x), |x| {
            let y = <Flex as FusedOps>::fused_softmax(x);
            (y.clone(), y)
        })
    }

    fn fused_dropout(x: AdTensor<C>, prob: f64, seed: u64) -> AdTensor<C> {
        let node = x.node();
        record_unary::<C, _>(DropoutBackward, node, Autodiff::<Flex, C>::inner(x), |x| {
            (
                <Flex as FusedOps>::fused_dropout(x, prob, seed),
                (prob, seed),
            )
        })
    }

    fn fused_linear(
        x: AdTensor<C>,
        weight: AdTensor<C>,
        bias: AdTensor<C>,
        bf16: bool,
    ) -> AdTensor<C> {
        let nodes = [x.node(), weight.node(), bias.node()];
        let x = Autodiff::<Flex, C>::inner(x);
        let weight = Autodiff::<Flex, C>::inner(weight);
        let bias = Autodiff::<Flex, C>::inner(bias);
        let y = <Flex as FusedOps>::fused_linear(x.clone(), weight.clone(), bias, bf16);
        match LinearBackward
            .prepare::<C>(nodes)
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => prep.finish((x, weight, bf16), y),
            OpsKind::UnTracked(prep) => prep.finish(y),
        }
    }

    fn fused_layer_norm(
        x: AdTensor<C>,
        gamma: AdTensor<C>,
        beta: AdTensor<C>,
        epsilon: f64,
    ) -> AdTensor<C> {
        let nodes = [x.node(), gamma.node(), beta.node()];
        let x = Autodiff::<Flex, C>::inner(x);
        let gamma = Autodiff::<Flex, C>::inner(gamma);
        let beta = Autodiff::<Flex, C>::inner(beta);
        let y = <Flex as FusedOps>::fused_layer_norm(x.clone(), gamma.clone(), beta, epsilon);
        match LayerNormBackward
            .prepare::<C>(nodes)
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => prep.finish((x, gamma, epsilon as f32), y),
            OpsKind::UnTracked(prep) => prep.finish(y),
        }
    }
}

/// Matrix products through the `gemm` crate (the one Flex uses, with its AVX-512 kernels), on
/// row-major slices, each writing a fresh output once: Flex's own matmul zero-fills its output
/// and then copies it into an aligned buffer before the product (two extra passes per call).
pub(crate) mod gemm {
    use super::super::bf16::Matrix;
    use rayon::prelude::*;

    /// Below this many multiply-adds one thread is faster (burn-flex's threshold).
    const PARALLEL_MACS: usize = 192 * 192 * 192;

    /// `dst = lhs · rhs` (or `dst += …` with `accumulate`), sizes `m×k · k×n`, strides given
    /// as (row stride, column stride) of each operand; `dst` is row-major `m×n`.
    ///
    /// # Safety
    /// The pointers must cover the strided extents; `dst` must be writable for `m·n` values and
    /// initialised when `accumulate`.
    #[allow(clippy::too_many_arguments)]
    unsafe fn product(
        m: usize,
        n: usize,
        k: usize,
        dst: *mut f32,
        accumulate: bool,
        lhs: *const f32,
        lhs_strides: (isize, isize),
        rhs: *const f32,
        rhs_strides: (isize, isize),
    ) {
        let parallelism = if m.saturating_mul(n).saturating_mul(k) >= PARALLEL_MACS {
            ::gemm::Parallelism::Rayon(0)
        } else {
            ::gemm::Parallelism::None
        };
        // SAFETY: forwarded from the caller.
        unsafe {
            strided(
                m,
                n,
                k,
                (dst, n as isize),
                accumulate,
                (lhs, lhs_strides),
                (rhs, rhs_strides),
                parallelism,
            )
        }
    }

    /// [`product`] with a destination row stride and the caller's parallelism (the attention
    /// op runs one small product per head inside its own parallel loop).
    ///
    /// # Safety
    /// As [`product`]; `dst` covers rows of `dst_rs` values.
    #[allow(clippy::too_many_arguments)]
    pub(crate) unsafe fn strided(
        m: usize,
        n: usize,
        k: usize,
        (dst, dst_rs): (*mut f32, isize),
        accumulate: bool,
        (lhs, lhs_strides): (*const f32, (isize, isize)),
        (rhs, rhs_strides): (*const f32, (isize, isize)),
        parallelism: ::gemm::Parallelism,
    ) {
        // SAFETY: forwarded from the caller; gemm's argument order is (dst, dst_cs, dst_rs, …)
        // and it computes `dst = 1·dst + 1·lhs·rhs` (dst not read unless `accumulate`).
        unsafe {
            ::gemm::gemm(
                m,
                n,
                k,
                dst,
                1,
                dst_rs,
                accumulate,
                lhs,
                lhs_strides.1,
                lhs_strides.0,
                rhs,
                rhs_strides.1,
                rhs_strides.0,
                1.0,
                1.0,
                false,
                false,
                false,
                parallelism,
            )
        }
    }

    /// A fresh `m×n` product `lhs · rhs`.
    fn fresh_product(
        m: usize,
        n: usize,
        k: usize,
        lhs: &[f32],
        lhs_strides: (isize, isize),
        rhs: &[f32],
        rhs_strides: (isize, isize),
    ) -> Vec<f32> {
        let len = m * n;
        if k == 0 || len == 0 {
            return vec![0.0; len];
        }
        let mut out: Vec<f32> = Vec::with_capacity(len);
        // SAFETY: the callers pass slices that hold the strided `m×k` / `k×n` operands (sizes
        // asserted); with `accumulate = false` gemm writes every one of the `len` outputs
        // without reading them, so they are initialised when the length is set.
        unsafe {
            product(
                m,
                n,
                k,
                out.as_mut_ptr(),
                false,
                lhs.as_ptr(),
                lhs_strides,
                rhs.as_ptr(),
                rhs_strides,
            );
            out.set_len(len);
        }
        out
    }

    /// `out (+)= lhs · rhs` for row-major operands (`m×k`, row stride `lhs_rs`; `k×n`, row
    /// stride `rhs_rs`) into a row-major `m×n` `out`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn into(
        m: usize,
        n: usize,
        k: usize,
        out: &mut [f32],
        accumulate: bool,
        lhs: &[f32],
        lhs_rs: usize,
        rhs: &[f32],
        rhs_rs: usize,
    ) {
        assert_sizes(
            out.len() == m * n
                && (m == 0 || k == 0 || (m - 1) * lhs_rs + k <= lhs.len())
                && (k == 0 || n == 0 || (k - 1) * rhs_rs + n <= rhs.len()),
        );
        if m == 0 || n == 0 {
            return;
        }
        if k == 0 {
            if !accumulate {
                out.fill(0.0);
            }
            return;
        }
        // SAFETY: extents asserted above; `out` holds m·n initialised values.
        unsafe {
            product(
                m,
                n,
                k,
                out.as_mut_ptr(),
                accumulate,
                lhs.as_ptr(),
                (lhs_rs as isize, 1),
                rhs.as_ptr(),
                (rhs_rs as isize, 1),
            )
        }
    }

    /// `x · w + b`: the output starts as the bias rows and the product is added to it; the
    /// product in bf16 ([`super::super::bf16`]) with `bf16`.
    pub fn linear_forward(
        x: &[f32],
        w: &[f32],
        b: &[f32],
        rows: usize,
        d_in: usize,
        d_out: usize,
        bf16: bool,
    ) -> Vec<f32> {
        assert_sizes(x.len() == rows * d_in && w.len() == d_in * d_out && b.len() == d_out);
        let mut out: Vec<f32> = Vec::with_capacity(rows * d_out);
        for _ in 0..rows {
            out.extend_from_slice(b);
        }
        if d_in == 0 || rows == 0 || d_out == 0 {
            return out;
        }
        if bf16 {
            let (xm, wm) = (
                Matrix::row_major(x, rows, d_in),
                Matrix::row_major(w, d_in, d_out),
            );
            super::super::bf16::product(xm, wm, &mut out, true);
            return out;
        }
        // SAFETY: sizes asserted above; `out` is initialised (bias rows).
        unsafe {
            product(
                rows,
                d_out,
                d_in,
                out.as_mut_ptr(),
                true,
                x.as_ptr(),
                (d_in as isize, 1),
                w.as_ptr(),
                (d_out as isize, 1),
            );
        }
        out
    }

    /// `dx = dy · wᵀ`, `[rows, d_in]`.
    pub fn input_grad(
        dy: &[f32],
        w: &[f32],
        rows: usize,
        d_in: usize,
        d_out: usize,
        bf16: bool,
    ) -> Vec<f32> {
        assert_sizes(dy.len() == rows * d_out && w.len() == d_in * d_out);
        if bf16 {
            let dym = Matrix::row_major(dy, rows, d_out);
            let wt = Matrix::row_major(w, d_in, d_out).t();
            return super::super::bf16::product_fresh(dym, wt);
        }
        // wᵀ[o, i] = w[i, o]: row stride 1, column stride d_out.
        fresh_product(
            rows,
            d_in,
            d_out,
            dy,
            (d_out as isize, 1),
            w,
            (1, d_out as isize),
        )
    }

    /// `dw = xᵀ · dy`, `[d_in, d_out]`.
    pub fn weight_grad(
        x: &[f32],
        dy: &[f32],
        rows: usize,
        d_in: usize,
        d_out: usize,
        bf16: bool,
    ) -> Vec<f32> {
        assert_sizes(x.len() == rows * d_in && dy.len() == rows * d_out);
        if bf16 {
            let xt = Matrix::row_major(x, rows, d_in).t();
            let dym = Matrix::row_major(dy, rows, d_out);
            return super::super::bf16::product_fresh(xt, dym);
        }
        // xᵀ[i, r] = x[r, i]: row stride 1, column stride d_in.
        let part = |x: &[f32], dy: &[f32], rows: usize| {
            fresh_product(
                d_in,
                d_out,
                rows,
                x,
                (1, d_in as isize),
                dy,
                (d_out as isize, 1),
            )
        };
        // A long sum over the rows (tokens) runs below the GEMM's peak: summing two halves
        // side by side and adding them was 5–15 % faster on these shapes (docs/benchmarks.md,
        // "CPU engine"). Always two halves, whatever the thread count, so the result does not
        // depend on the machine.
        if rows < SPLIT_ROWS || d_in * d_out * rows < PARALLEL_MACS {
            return part(x, dy, rows);
        }
        let half = rows / 2;
        let (x_lo, x_hi) = x.split_at(half * d_in);
        let (dy_lo, dy_hi) = dy.split_at(half * d_out);
        let (mut lo, hi) = rayon::join(
            || part(x_lo, dy_lo, half),
            || part(x_hi, dy_hi, rows - half),
        );
        lo.par_chunks_mut(16 * 1024)
            .zip(hi.par_chunks(16 * 1024))
            .for_each(|(a, b)| a.iter_mut().zip(b).for_each(|(a, b)| *a += b));
        lo
    }

    /// Rows from which [`weight_grad`] sums two halves separately.
    const SPLIT_ROWS: usize = 512;

    /// `db = Σ_rows dy`, `[d_out]`.
    pub fn column_sums(dy: &[f32], rows: usize, d_out: usize) -> Vec<f32> {
        assert_sizes(dy.len() == rows * d_out);
        if d_out == 0 {
            return Vec::new();
        }
        dy.par_chunks(256 * d_out)
            .map(|block| {
                let mut acc = vec![0.0f32; d_out];
                for r in block.chunks_exact(d_out) {
                    for (a, v) in acc.iter_mut().zip(r) {
                        *a += v;
                    }
                }
                acc
            })
            .reduce(
                || vec![0.0f32; d_out],
                |mut a, b| {
                    for (x, y) in a.iter_mut().zip(&b) {
                        *x += y;
                    }
                    a
                },
            )
    }

    /// The shapes come from tensors burn has already checked (`linear`'s contract); a
    /// mismatch here is a bug in this module, so it stops before any out-of-bounds product.
    fn assert_sizes(ok: bool) {
        assert!(ok, "fused linear: operand sizes do not match their shapes");
    }
}

/// Defines `pub fn $name(args)` that runs `$body` compiled for AVX-512 or AVX2+FMA when
/// the CPU has them (checked at run time, cached by std), portable code otherwise. The row
/// kernels are `inline(always)`, so each copy is vectorised for its target.
macro_rules! multiversion {
    ($(#[$doc:meta])* fn $name:ident($($a:ident: $t:ty),* $(,)?) $body:block) => {
        $(#[$doc])*
        #[allow(clippy::too_many_arguments)]
        pub(crate) fn $name($($a: $t),*) {
            #[inline(always)]
            #[allow(clippy::too_many_arguments)]
            fn imp($($a: $t),*) $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx512vl,avx512dq,avx2,fma")]
                #[allow(clippy::too_many_arguments)]
                unsafe fn v4($($a: $t),*) {
                    imp($($a),*)
                }
                #[target_feature(enable = "avx2,fma")]
                #[allow(clippy::too_many_arguments)]
                unsafe fn v3($($a: $t),*) {
                    imp($($a),*)
                }
                if std::arch::is_x86_feature_detected!("avx512f")
                    && std::arch::is_x86_feature_detected!("avx512vl")
                    && std::arch::is_x86_feature_detected!("avx512dq")
                {
                    // SAFETY: the CPU has the features `v4` is compiled for.
                    return unsafe { v4($($a),*) };
                }
                if std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
                {
                    // SAFETY: as above, for `v3`.
                    return unsafe { v3($($a),*) };
                }
            }
            imp($($a),*)
        }
    };
}
pub(crate) use multiversion;

/// The per-slice and per-row arithmetic, written so that the compiler vectorises it: no
/// branches inside element loops (selects instead), sums over 16 independent lanes.
pub(crate) mod kernels {
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::nn::LayerNormConfig;
    use burn::tensor::{Device, Distribution};

    fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
        crate::model::weights::to_vec(t).unwrap()
    }

    fn max_diff(a: &[f32], b: &[f32]) -> f32 {
        assert_eq!(a.len(), b.len());
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f32::max)
    }

    #[test]
    fn exp_matches_libm_within_two_ulp() {
        let mut worst = 0.0f32;
        let mut x = -87.0f32;
        while x < 88.0 {
            let (a, b) = (kernels::exp(x), x.exp());
            worst = worst.max(((a - b) / b).abs());
            x += 0.0137;
        }
        assert!(worst < 2.5e-7, "max relative error {worst}");
        assert_eq!(kernels::exp(-1e9), 0.0);
        assert_eq!(kernels::exp(-100.0), 0.0);
        assert!(kernels::exp(0.0) == 1.0);
    }

    #[test]
    fn erf_matches_an_f64_reference_within_4e_7() {
        let mut worst = 0.0f32;
        let mut x = -6.0f32;
        while x < 6.0 {
            worst = worst.max((kernels::erf(x) - libm_erf(x)).abs());
            x += 0.000_73;
        }
        assert!(worst < 4e-7, "max |erf error| {worst}");
        assert_eq!(kernels::erf(10.0), 1.0);
        assert_eq!(kernels::erf(-10.0), -1.0);
    }

    fn libm_erf(x: f32) -> f32 {
        // f64 erf via the same series the test does not depend on: Rust has no std erf, so
        // use burn's (libm) GELU identity erf(x) = 2·gelu(√2 x)/(√2 x) − 1 would be circular;
        // integrate instead: erf(x) = 2/√π ∫0^x e^{-t²} dt by Simpson's rule in f64.
        let n = 2000;
        let h = x as f64 / n as f64;
        let f = |t: f64| (-t * t).exp();
        let mut s = f(0.0) + f(x as f64);
        for i in 1..n {
            s += f(i as f64 * h) * if i % 2 == 1 { 4.0 } else { 2.0 };
        }
        (s * h / 3.0 * 2.0 / std::f64::consts::PI.sqrt()) as f32
    }

    /// Runs `op` and `reference` on the same input under autodiff, with the same upstream
    /// gradient, and compares outputs and input gradients.
    fn same_values_and_grads<const D: usize>(
        shape: [usize; D],
        op: impl Fn(Tensor<D>) -> Tensor<D>,
        reference: impl Fn(Tensor<D>) -> Tensor<D>,
        tol: f32,
    ) {
        let device = Device::flex().autodiff();
        let x0 = Tensor::<D>::random(shape, Distribution::Normal(0.0, 2.0), &device);
        let w = Tensor::<D>::random(shape, Distribution::Normal(0.0, 1.0), &device);
        let run = |f: &dyn Fn(Tensor<D>) -> Tensor<D>| {
            let x = x0.clone().detach().require_grad();
            let y = f(x.clone());
            let out = values(y.clone());
            let grads = (y * w.clone()).sum().backward();
            let g = x.grad(&grads).expect("input gradient");
            (out, crate::model::weights::to_vec(g).unwrap())
        };
        let (y1, g1) = run(&op);
        let (y2, g2) = run(&reference);
        let dy = max_diff(&y1, &y2);
        let dg = max_diff(&g1, &g2);
        assert!(dy < tol, "max |value diff| {dy}");
        assert!(dg < tol, "max |grad diff| {dg}");
    }

    #[test]
    fn fused_gelu_equals_burns_gelu_in_value_and_gradient() {
        same_values_and_grads([7, 33, 50], gelu, burn::tensor::activation::gelu, 2e-6);
    }

    #[test]
    fn fused_softmax_equals_burns_softmax_in_value_and_gradient() {
        // 64 and a ragged 37 (remainder lanes), with a masked column as the encoder has.
        same_values_and_grads(
            [3, 4, 5, 64],
            softmax_last,
            |x| burn::tensor::activation::softmax(x, 3),
            1e-6,
        );
        same_values_and_grads(
            [2, 9, 37],
            |x| softmax_last(x.clone() + mask_like(&x)),
            |x| burn::tensor::activation::softmax(x.clone() + mask_like(&x), 2),
            1e-6,
        );
    }

    #[test]
    fn fused_attention_softmax_equals_scaled_masked_softmax_in_value_and_gradient() {
        let device = Device::flex().autodiff();
        // A different padding length per batch item: the bias row must follow the batch.
        let (batch, keys) = (3, 37);
        let mut bias = vec![0.0f32; batch * keys];
        for b in 0..batch {
            for k in keys - 5 * b..keys {
                bias[b * keys + k] = -1e9;
            }
        }
        let bias = Tensor::<4>::from_data(TensorData::new(bias, [batch, 1, 1, keys]), &device);
        let divisor = 8f64.sqrt();
        same_values_and_grads(
            [batch, 4, 6, keys],
            |x| attention_softmax(x, bias.clone(), divisor),
            |x| burn::tensor::activation::softmax(x.div_scalar(divisor) + bias.clone(), 3),
            1e-6,
        );
    }

    fn mask_like(x: &Tensor<3>) -> Tensor<3> {
        let [a, b, c] = x.dims();
        let mut m = vec![0.0f32; a * b * c];
        for (i, v) in m.iter_mut().enumerate() {
            if i % c == c - 1 {
                *v = -1e9;
            }
        }
        Tensor::from_data(TensorData::new(m, [a, b, c]), &x.device())
    }

    #[test]
    fn fused_layer_norm_equals_burns_in_value_and_all_gradients() {
        let device = Device::flex().autodiff();
        for width in [384, 21] {
            let mut norm = LayerNormConfig::new(width)
                .with_epsilon(1e-12)
                .init(&device);
            // Non-trivial gamma/beta.
            norm.gamma = norm
                .gamma
                .map(|g| g.random_like(Distribution::Normal(1.0, 0.5)).require_grad());
            norm.beta = norm
                .beta
                .map(|b| b.map(|t| t.random_like(Distribution::Normal(0.0, 0.5)).require_grad()));
            let x0 = Tensor::<3>::random([4, 50, width], Distribution::Normal(0.3, 2.0), &device);
            let w = Tensor::<3>::random([4, 50, width], Distribution::Normal(0.0, 1.0), &device);
            let run = |fused: bool| {
                let x = x0.clone().detach().require_grad();
                let y = if fused {
                    layer_norm(&norm, x.clone(), 1e-12)
                } else {
                    norm.forward(x.clone())
                };
                let out = values(y.clone());
                let grads = (y * w.clone()).sum().backward();
                let gx = values(x.grad(&grads).unwrap());
                let gg = values(norm.gamma.val().grad(&grads).unwrap());
                let gb = values(norm.beta.as_ref().unwrap().val().grad(&grads).unwrap());
                (out, gx, gg, gb)
            };
            let a = run(true);
            let b = run(false);
            assert!(
                max_diff(&a.0, &b.0) < 1e-5,
                "value {}",
                max_diff(&a.0, &b.0)
            );
            assert!(max_diff(&a.1, &b.1) < 1e-5, "dx {}", max_diff(&a.1, &b.1));
            // dgamma/dbeta sum 200 rows: relative tolerance.
            assert!(
                max_diff(&a.2, &b.2) < 1e-3,
                "dgamma {}",
                max_diff(&a.2, &b.2)
            );
            assert!(
                max_diff(&a.3, &b.3) < 1e-3,
                "dbeta {}",
                max_diff(&a.3, &b.3)
            );
        }
    }

    #[test]
    fn fused_linear_equals_burns_in_value_and_all_gradients() {
        use burn::nn::LinearConfig;
        let device = Device::flex().autodiff();
        device.seed(4);
        // A small product (one thread) and one above the parallel threshold.
        for (rows, d_in, d_out) in [(7, 13, 5), (300, 384, 96)] {
            let mut lin = LinearConfig::new(d_in, d_out).init(&device);
            lin.bias = lin
                .bias
                .map(|b| b.map(|t| t.random_like(Distribution::Normal(0.0, 1.0)).require_grad()));
            let x0 = Tensor::<2>::random([rows, d_in], Distribution::Normal(0.0, 1.0), &device);
            let w = Tensor::<2>::random([rows, d_out], Distribution::Normal(0.0, 1.0), &device);
            let run = |fused: bool| {
                let x = x0.clone().detach().require_grad();
                let y = if fused {
                    linear(&lin, x.clone(), Precision::F32)
                } else {
                    lin.forward(x.clone())
                };
                let out = values(y.clone());
                let grads = (y * w.clone()).sum().backward();
                let gx = values(x.grad(&grads).unwrap());
                let gw = values(lin.weight.val().grad(&grads).unwrap());
                let gb = values(lin.bias.as_ref().unwrap().val().grad(&grads).unwrap());
                (out, gx, gw, gb)
            };
            let (a, b) = (run(true), run(false));
            let tol = 1e-4;
            assert!(max_diff(&a.0, &b.0) < tol, "value {}", max_diff(&a.0, &b.0));
            assert!(max_diff(&a.1, &b.1) < tol, "dx {}", max_diff(&a.1, &b.1));
            assert!(max_diff(&a.2, &b.2) < tol, "dw {}", max_diff(&a.2, &b.2));
            assert!(max_diff(&a.3, &b.3) < tol, "db {}", max_diff(&a.3, &b.3));
        }
    }

    /// With bf16, the value and all three gradients are the f32 products of the bf16-rounded
    /// operands (`x`, `W`, and the incoming gradient `dy`), up to summation order; the bias
    /// and its gradient stay f32.
    #[test]
    fn bf16_linear_is_the_product_of_rounded_operands_in_value_and_all_gradients() {
        use burn::nn::LinearConfig;
        let device = Device::flex().autodiff();
        device.seed(5);
        let plain = Device::flex();
        let rounded = |t: Tensor<2>| {
            let [r, c] = t.dims();
            let v: Vec<f32> = values(t)
                .into_iter()
                .map(super::super::bf16::round_bf16)
                .collect();
            Tensor::<2>::from_data(TensorData::new(v, [r, c]), &plain)
        };
        for (rows, d_in, d_out) in [(7, 13, 5), (300, 384, 96)] {
            let mut lin = LinearConfig::new(d_in, d_out).init(&device);
            lin.bias = lin
                .bias
                .map(|b| b.map(|t| t.random_like(Distribution::Normal(0.0, 1.0)).require_grad()));
            let x = Tensor::<2>::random([rows, d_in], Distribution::Normal(0.0, 1.0), &device)
                .require_grad();
            let dy = Tensor::<2>::random([rows, d_out], Distribution::Normal(0.0, 1.0), &device);
            let y = linear(&lin, x.clone(), Precision::Bf16);
            let grads = (y.clone() * dy.clone()).sum().backward();
            let (rx, rw, rdy) = (
                rounded(x.clone().inner()),
                rounded(lin.weight.val().inner()),
                rounded(dy.clone().inner()),
            );
            let bias = Tensor::<2>::from_data(
                TensorData::new(
                    values(lin.bias.as_ref().unwrap().val().unsqueeze::<2>()),
                    [1, d_out],
                ),
                &plain,
            );
            let want_y = values(rx.clone().matmul(rw.clone()) + bias);
            let want_dx = values(rdy.clone().matmul(rw.transpose()));
            let want_dw = values(rx.transpose().matmul(rdy.clone()));
            let want_db = values(dy.inner().sum_dim(0));
            let tol = 2e-4;
            let got_y = values(y);
            assert!(
                max_diff(&got_y, &want_y) < tol,
                "value {}",
                max_diff(&got_y, &want_y)
            );
            let dx = values(x.grad(&grads).unwrap());
            assert!(
                max_diff(&dx, &want_dx) < tol,
                "dx {}",
                max_diff(&dx, &want_dx)
            );
            let dw = values(lin.weight.val().grad(&grads).unwrap());
            assert!(
                max_diff(&dw, &want_dw) < 2e-3,
                "dw {}",
                max_diff(&dw, &want_dw)
            );
            let db = values(lin.bias.as_ref().unwrap().val().grad(&grads).unwrap());
            // The bias gradient sums the unrounded dy, in f32.
            assert!(
                max_diff(&db, &want_db) < 1e-4,
                "db {}",
                max_diff(&db, &want_db)
            );
        }
    }

    #[test]
    fn fused_linear_with_a_frozen_weight_gives_only_the_input_gradient() {
        use burn::module::Module;
        use burn::nn::LinearConfig;
        let device = Device::flex().autodiff();
        let lin = LinearConfig::new(6, 4).init(&device).no_grad();
        let x = Tensor::<2>::random([3, 6], Distribution::Normal(0.0, 1.0), &device).require_grad();
        let grads = linear(&lin, x.clone(), Precision::F32).sum().backward();
        assert!(lin.weight.val().grad(&grads).is_none());
        // d(sum(x·W + b))/dx = row sums of W, for every row of x.
        let gx = values(x.grad(&grads).unwrap());
        let w = values(lin.weight.val());
        for r in 0..3 {
            for i in 0..6 {
                let want: f32 = w[i * 4..i * 4 + 4].iter().sum();
                assert!((gx[r * 6 + i] - want).abs() < 1e-5);
            }
        }
    }

    #[test]
    fn fused_dropout_keeps_the_right_share_scales_it_and_masks_the_gradient_alike() {
        let device = Device::flex().autodiff();
        device.seed(8);
        let module = burn::nn::DropoutConfig::new(0.1).init();
        let x =
            Tensor::<2>::random([300, 384], Distribution::Normal(0.0, 1.0), &device).require_grad();
        let g = Tensor::<2>::random([300, 384], Distribution::Normal(0.0, 1.0), &device);
        let y = dropout(&module, x.clone());
        let grads = (y.clone() * g.clone()).sum().backward();
        let (xs, ys, gs) = (values(x.clone()), values(y), values(g));
        let dx = values(x.grad(&grads).unwrap());
        let scale = 1.0 / 0.9f32;
        let mut kept = 0usize;
        for i in 0..xs.len() {
            if ys[i] == 0.0 {
                assert_eq!(dx[i], 0.0, "dropped element {i} got a gradient");
            } else {
                kept += 1;
                assert!((ys[i] - xs[i] * scale).abs() < 1e-6);
                assert!((dx[i] - gs[i] * scale).abs() < 1e-6);
            }
        }
        let share = kept as f64 / xs.len() as f64;
        // 115 200 draws: the kept share is 0.9 within a few standard deviations (σ ≈ 0.0009).
        assert!((share - 0.9).abs() < 0.005, "kept share {share}");
        // Seeding the device reproduces the mask; another draw gives another mask.
        let run = || {
            device.seed(21);
            values(dropout(&module, x.clone()))
        };
        let (a, b) = (run(), run());
        assert_eq!(a, b);
        assert_ne!(a, values(dropout(&module, x.clone())));
        // Outside autodiff and with training off it is the identity, as burn's.
        let plain = Tensor::<2>::ones([4, 4], &Device::flex());
        assert_eq!(values(dropout(&module, plain.clone())), values(plain));
    }

    #[test]
    fn fused_ops_without_autodiff_equal_burns() {
        let device = Device::flex();
        let x = Tensor::<3>::random([2, 5, 130], Distribution::Normal(0.0, 3.0), &device);
        let d = max_diff(
            &values(gelu(x.clone())),
            &values(burn::tensor::activation::gelu(x.clone())),
        );
        assert!(d < 2e-6, "gelu {d}");
        let d = max_diff(
            &values(softmax_last(x.clone())),
            &values(burn::tensor::activation::softmax(x.clone(), 2)),
        );
        assert!(d < 1e-6, "softmax {d}");
        let norm = LayerNormConfig::new(130).init(&device);
        let d = max_diff(
            &values(layer_norm(&norm, x.clone(), 1e-5)),
            &values(norm.forward(x.clone())),
        );
        assert!(d < 1e-5, "layer norm {d}");
        // A strided (transposed) input takes the copy path and still agrees.
        let t = x.swap_dims(1, 2);
        let d = max_diff(
            &values(gelu(t.clone())),
            &values(burn::tensor::activation::gelu(t)),
        );
        assert!(d < 2e-6, "strided gelu {d}");
    }
}
