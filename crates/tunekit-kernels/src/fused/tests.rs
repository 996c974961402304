use super::*;
use burn::nn::LayerNormConfig;
use burn::tensor::{Device, Distribution};

fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data().iter::<f32>().collect()
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
        (out, g.into_data().iter::<f32>().collect::<Vec<f32>>())
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
    let x = Tensor::<2>::random([300, 384], Distribution::Normal(0.0, 1.0), &device).require_grad();
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
