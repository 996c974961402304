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
#[inline]
pub fn on_flex_f32<const D: usize>(t: &Tensor<D>) -> bool {
    t.dtype() == DType::F32 && is_flex(&t.device())
}

/// Whether `device` is the Flex CPU backend (with or without autodiff).
#[inline]
pub fn is_flex(device: &burn::tensor::Device) -> bool {
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
/// included) where [`on_flex_f32`], its products in `precision`. On the GPU backends with
/// `precision` bf16: [`bf16_linear`]. Burn's `linear` (f32) elsewhere and without a bias on
/// the CPU.
pub fn linear(linear: &burn::nn::Linear, x: Tensor<2>, precision: Precision) -> Tensor<2> {
    if precision == Precision::Bf16 && x.dtype() == DType::F32 && !is_flex(&x.device()) {
        return bf16_linear(linear, x);
    }
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

/// `x · W + b` with bf16 operands on a GPU backend, f32 in and out: the product of
/// PyTorch's `torch.autocast(dtype=torch.bfloat16)` for `nn.Linear`, with f32 master weights
/// (the cast is part of the graph, so gradients reach the f32 weights through it). burn's
/// matmul of two bf16 tensors accumulates in f32 (tensor cores on CUDA) and rounds its
/// output to bf16, which is then widened back, as autocast's does; the bias is added in f32.
pub fn bf16_linear(linear: &burn::nn::Linear, x: Tensor<2>) -> Tensor<2> {
    use burn::tensor::FloatDType;
    let w = linear.weight.val().cast(FloatDType::BF16);
    let y = x.cast(FloatDType::BF16).matmul(w).cast(FloatDType::F32);
    match &linear.bias {
        Some(b) => y + b.val().unsqueeze::<2>(),
        None => y,
    }
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

pub(crate) mod gemm;

/// Defines `pub(crate) fn $name(args)` (or `pub fn` when written `pub fn`) that runs `$body`
/// compiled for AVX-512 or AVX2+FMA when the CPU has them (checked at run time, cached by
/// std), portable code otherwise. The row kernels are `inline(always)`, so each copy is
/// vectorised for its target. Crate-internal: its expansion holds `unsafe` calls, which
/// belong in this crate only.
macro_rules! multiversion {
    ($(#[$doc:meta])* pub fn $name:ident($($a:ident: $t:ty),* $(,)?) $body:block) => {
        $crate::fused::multiversion!(@emit [pub] $(#[$doc])* fn $name($($a: $t),*) $body);
    };
    ($(#[$doc:meta])* fn $name:ident($($a:ident: $t:ty),* $(,)?) $body:block) => {
        $crate::fused::multiversion!(@emit [pub(crate)] $(#[$doc])* fn $name($($a: $t),*) $body);
    };
    (@emit [$($vis:tt)*] $(#[$doc:meta])* fn $name:ident($($a:ident: $t:ty),*) $body:block) => {
        $(#[$doc])*
        #[allow(clippy::too_many_arguments)]
        $($vis)* fn $name($($a: $t),*) {
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

pub(crate) mod kernels;

#[cfg(test)]
mod tests;
