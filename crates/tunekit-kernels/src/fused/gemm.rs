//! Matrix products through the `gemm` crate (the one Flex uses, with its AVX-512 kernels), on
//! row-major slices, each writing a fresh output once: Flex's own matmul zero-fills its output
//! and then copies it into an aligned buffer before the product (two extra passes per call).

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
