//! BERT's multi-head self-attention as one fused CPU op with its own backward:
//! `softmax(Q·Kᵀ/√d + mask) · V` per head, with attention dropout, for the Flex backend.
//!
//! Why: composed from tensor ops, attention splits Q, K and V into heads (a strided view that
//! Flex's batched matmul reads head by head), zero-fills and writes a `[batch, heads, seq,
//! seq]` score tensor, softmaxes it into another, drops out into a third, multiplies, and then
//! copies the context back from `[batch, heads, seq, d]` to `[batch, seq, heads·d]`; backward
//! repeats the pattern for dQ, dK, dV. Here each (sequence, head) is one task: two small GEMMs
//! reading Q, K, V where the projections wrote them (row stride = the model width), the
//! scaled, masked softmax and the dropout in between on a per-task buffer, and the context
//! written straight into its `[batch, seq, width]` place; backward likewise (four GEMMs, the
//! dropout mask recomputed from its seed, the softmax backward). Only the probabilities are
//! kept for backward, as before. Measured in docs/benchmarks.md ("CPU engine").
//!
//! The dropout mask is the one [`super::fused::dropout`] draws for the composed op (the same
//! seed source and element numbering over `[batch, heads, seq, seq]`), so the two routes give
//! the same values; anything that is not f32 on Flex, or has a trainable mask, takes the
//! composed route.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, AutodiffBackend, Backend, Dispatch, Flex, backend_extension};
use burn::nn::Dropout;
use burn::tensor::{DType, Shape, Tensor};
use burn_flex::FlexTensor;
use rayon::prelude::*;

use super::fused::{self, AdTensor, contiguous, from_vec, gemm, kernels, on_flex_f32};

/// The fused attention op; see the module docs.
#[backend_extension(Flex, Autodiff)]
pub trait AttentionOps: Backend {
    /// Context `[batch, seq, width]` of `heads` heads over `q`, `k`, `v` `[batch, seq,
    /// width]`, with the additive key mask `bias` `[batch, seq]` (a constant) and, when
    /// `dropout > 0`, inverted dropout on the probabilities with the mask of `seed`.
    fn fused_attention(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        heads: usize,
        dropout: f64,
        seed: u64,
    ) -> FloatTensor<Self>;
}

/// Self-attention context `[batch, seq, width]` from the projections `q`, `k`, `v` (each
/// `[batch, seq, width]`, `width` = `heads` × head size), the additive mask `mask_bias`
/// `[batch, 1, 1, seq]` ([`super::bert::attention_bias`]) and the attention-probability
/// dropout. Fused where every input is f32 on Flex and the mask needs no gradient; composed
/// from burn's ops otherwise (same values).
pub fn attention(
    q: Tensor<3>,
    k: Tensor<3>,
    v: Tensor<3>,
    mask_bias: Tensor<4>,
    heads: usize,
    dropout: &Dropout,
) -> Tensor<3> {
    let [batch, seq, width] = q.dims();
    let fits = heads > 0
        && batch > 0
        && seq > 0
        && width.is_multiple_of(heads)
        && k.dims() == q.dims()
        && v.dims() == q.dims()
        && mask_bias.dims() == [batch, 1, 1, seq];
    let flex = on_flex_f32(&q) && on_flex_f32(&k) && on_flex_f32(&v) && on_flex_f32(&mask_bias);
    if !fits || !flex || mask_bias.is_require_grad() {
        return composed(q, k, v, mask_bias, heads, dropout);
    }
    let training = dropout.training.is_enabled() && q.device().is_autodiff() && dropout.prob > 0.0;
    let (prob, seed) = if training {
        (dropout.prob, fused::draw_seed(&q.device()))
    } else {
        (0.0, 0)
    };
    Tensor::from_dispatch(<Dispatch as AttentionOps>::fused_attention(
        q.into_dispatch(),
        k.into_dispatch(),
        v.into_dispatch(),
        mask_bias.reshape([batch, seq]).into_dispatch(),
        heads,
        prob,
        seed,
    ))
}

/// The same attention from burn's tensor ops (and the fused softmax and dropout, which route
/// themselves): the route for CUDA, other dtypes, or a trainable mask.
pub fn composed(
    q: Tensor<3>,
    k: Tensor<3>,
    v: Tensor<3>,
    mask_bias: Tensor<4>,
    heads: usize,
    dropout: &Dropout,
) -> Tensor<3> {
    let [batch, seq, width] = q.dims();
    let head_dim = width / heads.max(1);
    let split = |x: Tensor<3>| x.reshape([batch, seq, heads, head_dim]).swap_dims(1, 2);
    let scores = split(q).matmul(split(k).swap_dims(2, 3));
    let probs = fused::attention_softmax(scores, mask_bias, (head_dim as f64).sqrt());
    let probs = fused::dropout(dropout, probs);
    probs
        .matmul(split(v))
        .swap_dims(1, 2)
        .reshape([batch, seq, width])
}

/// Sizes of one attention call.
#[derive(Debug, Clone, Copy)]
struct Dims {
    batch: usize,
    seq: usize,
    width: usize,
    heads: usize,
}

impl Dims {
    fn of(q: &FlexTensor, heads: usize) -> Dims {
        let shape = q.layout().shape();
        Dims {
            batch: shape[0],
            seq: shape[1],
            width: shape[2],
            heads,
        }
    }
    fn head_dim(&self) -> usize {
        self.width / self.heads
    }
    /// Offset of head `h` of sequence `b` in a `[batch, seq, width]` buffer.
    fn offset(&self, bh: usize) -> usize {
        let (b, h) = (bh / self.heads, bh % self.heads);
        b * self.seq * self.width + h * self.head_dim()
    }
    /// The shapes come from tensors [`attention`] checked; anything else is a bug here.
    fn check(&self, lens: &[usize]) {
        let n = self.batch * self.seq * self.width;
        assert!(
            self.heads > 0 && self.width.is_multiple_of(self.heads) && lens.iter().all(|&l| l == n),
            "fused attention: operand sizes do not match their shapes"
        );
    }
}

/// Dropout of the probabilities with drop probability `prob` (none when 0).
fn dropout_mask(prob: f64, seed: u64) -> Option<kernels::DropoutMask> {
    (prob > 0.0).then(|| fused::dropout_mask(prob, seed))
}

/// A pointer that parallel tasks share, each writing its own head's column band.
#[derive(Clone, Copy)]
struct Out(*mut f32);
// SAFETY: the tasks write disjoint elements (see each use).
unsafe impl Send for Out {}
unsafe impl Sync for Out {}
impl Out {
    fn at(self, offset: usize) -> *mut f32 {
        self.0.wrapping_add(offset)
    }
}

/// One head's product `dst = lhs · rhs`, sizes `(m, n, k)`, each operand a pointer with its
/// (row, column) strides and `dst` with its row stride; single-threaded, since the heads are
/// the parallel loop.
///
/// # Safety
/// As [`gemm::strided`]: the pointers cover the strided extents, `dst` is writable.
unsafe fn mm(
    (m, n, k): (usize, usize, usize),
    dst: (*mut f32, isize),
    lhs: (*const f32, (isize, isize)),
    rhs: (*const f32, (isize, isize)),
) {
    // SAFETY: forwarded from the caller.
    unsafe { gemm::strided(m, n, k, dst, false, lhs, rhs, ::gemm::Parallelism::None) }
}

/// A buffer of `len` values that the caller writes in full before reading.
fn uninit(len: usize) -> Box<[std::mem::MaybeUninit<f32>]> {
    Box::new_uninit_slice(len)
}

/// The forward pass over every (sequence, head): the context and, with `keep`, the
/// probabilities `[batch, heads, seq, seq]` (before dropout) for the backward pass.
fn forward(
    (q, k, v, bias): (&[f32], &[f32], &[f32], &[f32]),
    d: Dims,
    mask: Option<&kernels::DropoutMask>,
    keep: bool,
) -> (Vec<f32>, Vec<f32>) {
    d.check(&[q.len(), k.len(), v.len()]);
    assert_eq!(bias.len(), d.batch * d.seq, "fused attention: mask size");
    let (t, w, dh) = (d.seq, d.width, d.head_dim());
    let tt = t * t;
    let divisor = (dh as f32).sqrt();
    let mut ctx = uninit(q.len());
    let out = Out(ctx.as_mut_ptr().cast());
    let head = |bh: usize, probs: &mut [f32]| {
        let (b, off) = (bh / d.heads, d.offset(bh));
        let mut scores = vec![0f32; tt];
        // SAFETY: Q and K of this head: rows t of stride w from `off`, dh columns, inside the
        // checked `[batch, seq, width]` buffers; `scores` holds t·t values.
        unsafe {
            mm(
                (t, t, dh),
                (scores.as_mut_ptr(), t as isize),
                (q.as_ptr().add(off), (w as isize, 1)),
                (k.as_ptr().add(off), (1, w as isize)),
            )
        };
        let keys = &bias[b * t..(b + 1) * t];
        kernels::attention_softmax_block(&scores, probs, t, keys, 0, t, divisor);
        let dropped;
        let p: &[f32] = match mask {
            Some(m) => {
                let mut pd = vec![0f32; tt];
                kernels::dropout_block(probs, &mut pd, (bh * tt) as u64, m);
                dropped = pd;
                &dropped
            }
            None => probs,
        };
        // SAFETY: this task alone writes rows b·t.. of columns off.. (one head's band) of
        // the context; P is t×t, V rows of stride w as above.
        unsafe {
            mm(
                (t, dh, t),
                (out.at(off), w as isize),
                (p.as_ptr(), (t as isize, 1)),
                (v.as_ptr().add(off), (w as isize, 1)),
            )
        };
    };
    let tasks = d.batch * d.heads;
    let mut probs = Vec::new();
    if keep {
        probs = vec![0f32; tasks * tt];
        probs
            .par_chunks_mut(tt.max(1))
            .enumerate()
            .for_each(|(bh, p)| head(bh, p));
    } else {
        (0..tasks).into_par_iter().for_each(|bh| {
            let mut p = vec![0f32; tt];
            head(bh, &mut p);
        });
    }
    // SAFETY: every (b, t, h·dh + j) was written by the task of (b, h) (width = heads·dh).
    let ctx = if tasks > 0 && tt > 0 {
        unsafe { ctx.assume_init() }.into_vec()
    } else {
        vec![0.0; q.len()]
    };
    (ctx, probs)
}

/// dQ, dK, dV `[batch, seq, width]` from the upstream gradient `g` of the context.
fn backward(
    (q, k, v, g): (&[f32], &[f32], &[f32], &[f32]),
    probs: &[f32],
    d: Dims,
    mask: Option<&kernels::DropoutMask>,
) -> [Vec<f32>; 3] {
    d.check(&[q.len(), k.len(), v.len(), g.len()]);
    assert_eq!(
        probs.len(),
        d.batch * d.heads * d.seq * d.seq,
        "fused attention: probabilities"
    );
    let (t, w, dh) = (d.seq, d.width, d.head_dim());
    let tt = t * t;
    let scale = 1.0 / (dh as f32).sqrt();
    let (mut dq, mut dk, mut dv) = (uninit(q.len()), uninit(q.len()), uninit(q.len()));
    let (oq, ok, ov) = (
        Out(dq.as_mut_ptr().cast()),
        Out(dk.as_mut_ptr().cast()),
        Out(dv.as_mut_ptr().cast()),
    );
    let tasks = d.batch * d.heads;
    (0..tasks).into_par_iter().for_each(|bh| {
        let off = d.offset(bh);
        let p = &probs[bh * tt..(bh + 1) * tt];
        let (rows, band) = (w as isize, (w as isize, 1));
        let mut dp = vec![0f32; tt];
        // SAFETY (every product below): operands are this head's t×dh bands (row stride w,
        // from `off`) of the checked buffers, or t×t task buffers; the outputs are this
        // head's bands of dQ, dK, dV, written by this task alone.
        unsafe {
            // d(dropped P) = dC · Vᵀ
            mm(
                (t, t, dh),
                (dp.as_mut_ptr(), t as isize),
                (g.as_ptr().add(off), band),
                (v.as_ptr().add(off), (1, rows)),
            )
        };
        let (dp, pd) = match mask {
            Some(m) => {
                let (mut dpm, mut pd) = (vec![0f32; tt], vec![0f32; tt]);
                kernels::dropout_block(&dp, &mut dpm, (bh * tt) as u64, m);
                kernels::dropout_block(p, &mut pd, (bh * tt) as u64, m);
                (dpm, std::borrow::Cow::Owned(pd))
            }
            None => (dp, std::borrow::Cow::Borrowed(p)),
        };
        // SAFETY: as stated for every product of this function above.
        unsafe {
            // dV = (dropped P)ᵀ · dC
            mm(
                (t, dh, t),
                (ov.at(off), rows),
                (pd.as_ptr(), (1, t as isize)),
                (g.as_ptr().add(off), band),
            )
        };
        let mut ds = vec![0f32; tt];
        kernels::softmax_backward_block(p, &dp, &mut ds, t, scale);
        // SAFETY: as stated for every product of this function above.
        unsafe {
            // dQ = dS · K
            mm(
                (t, dh, t),
                (oq.at(off), rows),
                (ds.as_ptr(), (t as isize, 1)),
                (k.as_ptr().add(off), band),
            );
            // dK = dSᵀ · Q
            mm(
                (t, dh, t),
                (ok.at(off), rows),
                (ds.as_ptr(), (1, t as isize)),
                (q.as_ptr().add(off), band),
            );
        }
    });
    if tasks == 0 || tt == 0 {
        return [vec![0.0; q.len()], vec![0.0; q.len()], vec![0.0; q.len()]];
    }
    // SAFETY: each head's task wrote its band of all three (width = heads·dh covers every
    // element once).
    unsafe {
        [
            dq.assume_init().into_vec(),
            dk.assume_init().into_vec(),
            dv.assume_init().into_vec(),
        ]
    }
}

/// `t` as f32 (a copy for other float dtypes; the public function routes only f32 here).
fn as_f32(t: FlexTensor) -> FlexTensor {
    if t.dtype() == DType::F32 {
        return t;
    }
    <Flex as burn::backend::ops::FloatTensorOps<Flex>>::float_cast(t, burn::tensor::FloatDType::F32)
}

fn run_forward(
    (q, k, v, bias): (&FlexTensor, &FlexTensor, &FlexTensor, &FlexTensor),
    heads: usize,
    dropout: f64,
    seed: u64,
    keep: bool,
) -> (FlexTensor, Vec<f32>) {
    let d = Dims::of(q, heads);
    let (shape, qs) = contiguous(q);
    let (_, ks) = contiguous(k);
    let (_, vs) = contiguous(v);
    let (_, bs) = contiguous(bias);
    let mask = dropout_mask(dropout, seed);
    let (ctx, probs) = forward((&qs, &ks, &vs, &bs), d, mask.as_ref(), keep);
    (from_vec(ctx, shape), probs)
}

impl AttentionOps for Flex {
    fn fused_attention(
        q: FlexTensor,
        k: FlexTensor,
        v: FlexTensor,
        bias: FlexTensor,
        heads: usize,
        dropout: f64,
        seed: u64,
    ) -> FlexTensor {
        let dtype = q.dtype();
        let (q, k, v, bias) = (as_f32(q), as_f32(k), as_f32(v), as_f32(bias));
        let (ctx, _) = run_forward((&q, &k, &v, &bias), heads, dropout, seed, false);
        if dtype == DType::F32 {
            return ctx;
        }
        <Flex as burn::backend::ops::FloatTensorOps<Flex>>::float_cast(ctx, dtype.into())
    }
}

#[derive(Debug)]
struct AttentionBackward;

/// Q, K, V, the probabilities, heads, dropout probability and seed.
type AttentionState = (
    FlexTensor,
    FlexTensor,
    FlexTensor,
    FlexTensor,
    usize,
    f64,
    u64,
);

impl Backward<Flex, 3> for AttentionBackward {
    type State = AttentionState;

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [pq, pk, pv] = ops.parents;
        let grad = grads.consume::<Flex>(&ops.node);
        let (q, k, v, probs, heads, dropout, seed) = &ops.state;
        let d = Dims::of(q, *heads);
        let (shape, qs) = contiguous(q);
        let (_, ks) = contiguous(k);
        let (_, vs) = contiguous(v);
        let (_, ps) = contiguous(probs);
        let (_, gs) = contiguous(&grad);
        let mask = dropout_mask(*dropout, *seed);
        let [dq, dk, dv] = backward((&qs, &ks, &vs, &gs), &ps, d, mask.as_ref());
        for (parent, values) in [(pq, dq), (pk, dk), (pv, dv)] {
            if let Some(node) = parent {
                grads.register::<Flex>(node.id, from_vec(values, shape.clone()));
            }
        }
    }
}

impl<C: CheckpointStrategy> AttentionOps for Autodiff<Flex, C> {
    fn fused_attention(
        q: AdTensor<C>,
        k: AdTensor<C>,
        v: AdTensor<C>,
        bias: AdTensor<C>,
        heads: usize,
        dropout: f64,
        seed: u64,
    ) -> AdTensor<C> {
        let nodes = [q.node(), k.node(), v.node()];
        let inner = |t: AdTensor<C>| as_f32(Autodiff::<Flex, C>::inner(t));
        let (q, k, v, bias) = (inner(q), inner(k), inner(v), inner(bias));
        match AttentionBackward
            .prepare::<C>(nodes)
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let (ctx, probs) = run_forward((&q, &k, &v, &bias), heads, dropout, seed, true);
                let d = Dims::of(&q, heads);
                let probs = from_vec(probs, Shape::new([d.batch, d.heads, d.seq, d.seq]));
                prep.finish((q, k, v, probs, heads, dropout, seed), ctx)
            }
            OpsKind::UnTracked(prep) => {
                let (ctx, _) = run_forward((&q, &k, &v, &bias), heads, dropout, seed, false);
                prep.finish(ctx)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Device, Distribution};

    fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
        t.into_data().iter::<f32>().collect()
    }

    /// BERT's additive attention bias (as tunekit's `model::bert::attention_bias`): 0 for real
    /// tokens, −1e9 for padding, `[batch, 1, 1, seq]`.
    fn attention_bias(mask: Tensor<2>) -> Tensor<4> {
        let [batch, seq] = mask.dims();
        mask.neg()
            .add_scalar(1.0)
            .mul_scalar(-1e9)
            .reshape([batch, 1, 1, seq])
    }

    fn max_diff(a: &[f32], b: &[f32]) -> f32 {
        assert_eq!(a.len(), b.len());
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f32::max)
    }

    /// Fused and composed attention agree in value and in the gradients of Q, K and V:
    /// padded keys in the mask, a ragged sequence length, and with dropout (same seed, so the
    /// same mask) as well as without.
    #[test]
    fn fused_attention_equals_the_composed_ops_in_value_and_gradients() {
        let device = Device::flex().autodiff();
        for (batch, seq, heads, head_dim, prob) in
            [(2, 7, 3, 4, 0.0), (3, 64, 12, 32, 0.0), (2, 33, 4, 8, 0.1)]
        {
            let width = heads * head_dim;
            device.seed(11);
            let input = |s: u64| {
                device.seed(s);
                Tensor::<3>::random([batch, seq, width], Distribution::Normal(0.0, 1.0), &device)
            };
            let (q0, k0, v0, g) = (input(1), input(2), input(3), input(4));
            // The last two keys of every sequence but the first are padding.
            let mut mask = vec![1.0f32; batch * seq];
            for b in 1..batch {
                mask[b * seq + seq - 2..(b + 1) * seq].fill(0.0);
            }
            let mask =
                Tensor::<2>::from_data(burn::tensor::TensorData::new(mask, [batch, seq]), &device);
            let bias = attention_bias(mask);
            let module = burn::nn::DropoutConfig::new(prob).init();
            let run = |fused_route: bool| {
                let (q, k, v) = (
                    q0.clone().detach().require_grad(),
                    k0.clone().detach().require_grad(),
                    v0.clone().detach().require_grad(),
                );
                device.seed(99); // the dropout seed is drawn from here
                let ctx = if fused_route {
                    attention(
                        q.clone(),
                        k.clone(),
                        v.clone(),
                        bias.clone(),
                        heads,
                        &module,
                    )
                } else {
                    composed(
                        q.clone(),
                        k.clone(),
                        v.clone(),
                        bias.clone(),
                        heads,
                        &module,
                    )
                };
                let out = values(ctx.clone());
                let grads = (ctx * g.clone()).sum().backward();
                let gq = values(q.grad(&grads).unwrap());
                let gk = values(k.grad(&grads).unwrap());
                let gv = values(v.grad(&grads).unwrap());
                (out, gq, gk, gv)
            };
            let (a, b) = (run(true), run(false));
            let tol = 1e-5;
            assert!(max_diff(&a.0, &b.0) < tol, "value {}", max_diff(&a.0, &b.0));
            assert!(max_diff(&a.1, &b.1) < tol, "dq {}", max_diff(&a.1, &b.1));
            assert!(max_diff(&a.2, &b.2) < tol, "dk {}", max_diff(&a.2, &b.2));
            assert!(max_diff(&a.3, &b.3) < tol, "dv {}", max_diff(&a.3, &b.3));
            if prob > 0.0 {
                // Dropout really applied: the context differs from a dropout-free one.
                let plain = burn::nn::DropoutConfig::new(0.0).init();
                let no_drop = values(composed(
                    q0.clone(),
                    k0.clone(),
                    v0.clone(),
                    bias.clone(),
                    heads,
                    &plain,
                ));
                assert!(max_diff(&a.0, &no_drop) > 1e-3);
            }
        }
    }

    /// Without autodiff (inference) the fused op gives the composed values too.
    #[test]
    fn fused_attention_without_autodiff_equals_the_composed_ops() {
        let device = Device::flex();
        device.seed(3);
        let (batch, seq, heads, width) = (2, 9, 2, 8);
        let x = |_: u8| {
            Tensor::<3>::random([batch, seq, width], Distribution::Normal(0.0, 1.0), &device)
        };
        let (q, k, v) = (x(0), x(1), x(2));
        let mask = Tensor::<2>::ones([batch, seq], &device);
        let bias = attention_bias(mask);
        let module = burn::nn::DropoutConfig::new(0.1).init();
        let a = values(attention(
            q.clone(),
            k.clone(),
            v.clone(),
            bias.clone(),
            heads,
            &module,
        ));
        let b = values(composed(q, k, v, bias, heads, &module));
        assert!(max_diff(&a, &b) < 1e-5, "{}", max_diff(&a, &b));
    }
}
