//! bf16 matrix products with f32 sums: the `precision = "bf16"` option of training (mixed
//! precision on the CPU; master weights, activations, LayerNorm, softmax and the optimiser stay
//! f32).
//!
//! What: `C (+)= A·B` with every element of `A` and `B` rounded to bf16 (to nearest, ties to
//! even) and every product summed in f32 — what PyTorch's CPU autocast to bf16 does for
//! `nn.Linear` through oneDNN. Used by the fused linear op ([`super::fused`]) for its forward
//! product and both backward products (`dx = dy·Wᵀ`, `dW = xᵀ·dy`).
//!
//! Why AMX and not AVX-512 BF16 dot products: on this project's Xeon (docs/benchmarks.md,
//! "bf16 mixed precision") `vdpbf16ps` runs 105 GFLOP/s per core, half of f32 FMA (212), so a
//! GEMM built on it would be slower than the f32 one; AMX's `tdpbf16ps` ran 2037 GFLOP/s per
//! core. The `gemm` crate has neither, hence our kernel ([`super::amx`]): operands packed into
//! bf16 tiles (A: 16 rows × 32 k; B: 16 k-pairs × 16 columns, each pair adjacent — AMX's
//! "VNNI" layout), one 32×32 f32 output block per kernel call held in four tile registers,
//! blocks split over rayon's threads. Rust has no stable AMX intrinsics, so the kernel is
//! inline assembly.
//!
//! Without AMX (another CPU, or an OS that refuses the tile state) the same rounding is applied
//! to f32 copies of the operands and the f32 GEMM sums them: the same values up to summation
//! order (slower than f32 on an AVX2 CPU so far: docs/benchmarks.md, "AVX2").

use serde::{Deserialize, Serialize};

/// Number format of the matrix products of training.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// f32 products (the default; matches `transformers` in f32).
    #[default]
    F32,
    /// bf16 operands, f32 sums ([`self`]); the linear layers on the CPU backend.
    Bf16,
}

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Precision::F32 => "f32",
            Precision::Bf16 => "bf16",
        })
    }
}

impl std::str::FromStr for Precision {
    type Err = crate::Error;
    fn from_str(s: &str) -> crate::Result<Self> {
        match s {
            "f32" => Ok(Precision::F32),
            "bf16" => Ok(Precision::Bf16),
            other => Err(crate::Error::UnknownPrecision(other.to_string())),
        }
    }
}

/// `precision` where `device` can run it: bf16 products are the CPU backend's fused linear
/// op, or on a GPU backend whose device has bf16 ([`super::fused::bf16_linear`]); bf16 on a
/// device without it is an error rather than a silent f32 run. Says once in the log where the
/// bf16 products run.
pub fn for_device(precision: Precision, device: &burn::tensor::Device) -> crate::Result<Precision> {
    if precision == Precision::Bf16 {
        if !super::fused::is_flex(device) {
            if !device.supports_dtype(burn::tensor::DType::BF16) {
                return Err(crate::Error::Bf16NeedsCpu);
            }
            tracing::info!(
                "linear-layer products in bf16 on the GPU (bf16 operands, f32 master weights)"
            );
            return Ok(precision);
        }
        if amx_available() {
            tracing::info!("linear-layer products in bf16 on AMX (f32 sums, f32 master weights)");
        } else {
            // An emulation (bf16-rounded operands, f32 GEMM): the numbers of a bf16 run on
            // AMX. Measured on an AVX2 Zen 3 (docs/benchmarks.md, "AVX2") it is still slower
            // than the f32 step even with the rounding in one vectorised pass per operand;
            // whether to refuse bf16 there or run f32 products is open (issue 23).
            tracing::warn!(
                "precision bf16: this CPU (or OS) has no AMX; bf16 products are emulated \
                 (same rounding, slower than f32 here)"
            );
        }
    }
    Ok(precision)
}

/// A strided f32 matrix: element `(i, j)` is `data[i·row_stride + j·col_stride]`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Matrix<'a> {
    pub data: &'a [f32],
    pub rows: usize,
    pub cols: usize,
    pub row_stride: usize,
    pub col_stride: usize,
}

impl<'a> Matrix<'a> {
    /// A row-major `rows × cols` matrix.
    pub fn row_major(data: &'a [f32], rows: usize, cols: usize) -> Self {
        Matrix {
            data,
            rows,
            cols,
            row_stride: cols,
            col_stride: 1,
        }
    }

    /// This matrix transposed (no copy).
    pub fn t(self) -> Self {
        Matrix {
            data: self.data,
            rows: self.cols,
            cols: self.rows,
            row_stride: self.col_stride,
            col_stride: self.row_stride,
        }
    }

    fn covers_its_extent(&self) -> bool {
        self.rows == 0
            || self.cols == 0
            || (self.rows - 1) * self.row_stride + (self.cols - 1) * self.col_stride
                < self.data.len()
    }

    #[inline(always)]
    pub(crate) fn at(&self, i: usize, j: usize) -> f32 {
        self.data[i * self.row_stride + j * self.col_stride]
    }
}

/// `f32` → bf16 bits, rounded to nearest with ties to even; NaN stays a (quiet) NaN.
#[inline(always)]
pub(crate) fn to_bf16(v: f32) -> u16 {
    let bits = v.to_bits();
    let rounded = (bits.wrapping_add(0x7fff + ((bits >> 16) & 1)) >> 16) as u16;
    let nan = ((bits >> 16) as u16) | 0x40;
    if (bits & 0x7fff_ffff) > 0x7f80_0000 {
        nan
    } else {
        rounded
    }
}

/// `v` rounded to the nearest bf16 value, as an f32.
#[inline(always)]
pub(crate) fn round_bf16(v: f32) -> f32 {
    f32::from_bits(u32::from(to_bf16(v)) << 16)
}

/// `out (+)= a · b` with bf16 operands and f32 sums; `out` is row-major `a.rows × b.cols`.
/// AMX where the CPU and OS allow it, else the emulation (same rounding, f32 GEMM).
pub(crate) fn product(a: Matrix, b: Matrix, out: &mut [f32], accumulate: bool) {
    check(&a, &b, out.len());
    #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
    if super::amx::available() {
        // SAFETY: `out` holds the m·n initialised values (checked).
        unsafe { super::amx::product(a, b, out.as_mut_ptr(), accumulate) };
        return;
    }
    emulated(a, b, out, accumulate);
}

/// A fresh `a · b` ([`product`]), its output written once (no zero-fill first).
pub(crate) fn product_fresh(a: Matrix, b: Matrix) -> Vec<f32> {
    let len = a.rows * b.cols;
    #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
    if super::amx::available() {
        let mut out = Box::<[f32]>::new_uninit_slice(len);
        check(&a, &b, len);
        // SAFETY: `out` has room for the m·n values; without `accumulate` every one of them
        // is written (none read), so it is initialised afterwards.
        unsafe {
            super::amx::product(a, b, out.as_mut_ptr().cast(), false);
            return out.assume_init().into_vec();
        }
    }
    let mut out = vec![0.0; len];
    emulated(a, b, &mut out, false);
    out
}

/// Whether bf16 products run on AMX here (else they are emulated: slower than f32 on an AVX2 CPU, docs/benchmarks.md).
pub fn amx_available() -> bool {
    #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
    {
        super::amx::available()
    }
    #[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
    {
        false
    }
}

/// The shapes come from tensors burn has already checked; a mismatch is a bug in the caller,
/// so it stops before any out-of-bounds access.
fn check(a: &Matrix, b: &Matrix, out_len: usize) {
    assert!(
        a.cols == b.rows
            && out_len == a.rows * b.cols
            && a.covers_its_extent()
            && b.covers_its_extent(),
        "bf16 product: operand sizes do not match their shapes"
    );
}

/// The fallback: operands rounded to bf16 values in f32 copies, summed by the f32 GEMM.
///
/// The copies keep each operand's layout (strides), so rounding is one contiguous, parallel,
/// vectorised pass over the memory the operand spans, and the GEMM reads the copy exactly as
/// it would have read the original. (An element-by-element gather into row-major copies, as
/// this was before, walked transposed operands column by column and made the bf16 step 1.9×
/// the f32 step on an AVX2 CPU; docs/benchmarks.md.)
pub(crate) fn emulated(a: Matrix, b: Matrix, out: &mut [f32], accumulate: bool) {
    check(&a, &b, out.len());
    let (m, n, k) = (a.rows, b.cols, a.cols);
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            out.fill(0.0);
        }
        return;
    }
    let (ra, rb) = (rounded_span(&a), rounded_span(&b));
    // SAFETY: `check` proved every element (i, j) of each operand, at
    // i·row_stride + j·col_stride, lies inside its data, and the rounded copies are as long
    // as the spans read; `out` holds m·n values, row-major.
    unsafe {
        super::fused::gemm::strided(
            m,
            n,
            k,
            (out.as_mut_ptr(), n as isize),
            accumulate,
            (ra.as_ptr(), (a.row_stride as isize, a.col_stride as isize)),
            (rb.as_ptr(), (b.row_stride as isize, b.col_stride as isize)),
            if m * n * k >= 192 * 192 * 192 {
                ::gemm::Parallelism::Rayon(0)
            } else {
                ::gemm::Parallelism::None
            },
        )
    }
}

/// The data an operand spans (up to its last element), each value rounded to bf16.
fn rounded_span(a: &Matrix) -> Vec<f32> {
    use rayon::prelude::*;
    let end = (a.rows - 1) * a.row_stride + (a.cols - 1) * a.col_stride + 1;
    let src = &a.data[..end];
    let mut dst = vec![0.0f32; end];
    dst.par_chunks_mut(1 << 14)
        .zip(src.par_chunks(1 << 14))
        .for_each(|(d, s)| round_slice(s, d));
    dst
}

super::fused::multiversion! {
    fn round_slice(src: &[f32], dst: &mut [f32]) {
        for (d, &v) in dst.iter_mut().zip(src) {
            *d = round_bf16(v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matrix(rows: usize, cols: usize, seed: u64) -> Vec<f32> {
        (0..rows * cols)
            .map(|i| {
                let h = (i as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ seed;
                ((h >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    /// f64 sums of the bf16-rounded operands: what every bf16 product should give up to f32
    /// summation error.
    fn reference(a: &Matrix, b: &Matrix) -> Vec<f32> {
        let mut out = vec![0f32; a.rows * b.cols];
        for i in 0..a.rows {
            for j in 0..b.cols {
                let s: f64 = (0..a.cols)
                    .map(|kk| {
                        f64::from(round_bf16(a.at(i, kk))) * f64::from(round_bf16(b.at(kk, j)))
                    })
                    .sum();
                out[i * b.cols + j] = s as f32;
            }
        }
        out
    }

    fn max_diff(a: &[f32], b: &[f32]) -> f32 {
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f32::max)
    }

    #[test]
    fn rounding_is_to_nearest_even_and_keeps_specials() {
        // 1 + 2^-8 is halfway between two bf16 values: ties go to the even one (1.0).
        assert_eq!(round_bf16(1.0 + 1.0 / 256.0), 1.0);
        // 1 + 3·2^-8 ties to 1 + 2^-6 (even mantissa).
        assert_eq!(round_bf16(1.0 + 3.0 / 256.0), 1.0 + 4.0 / 256.0);
        assert_eq!(round_bf16(1.0 + 1.0 / 200.0), 1.0 + 1.0 / 128.0);
        assert!(round_bf16(f32::NAN).is_nan());
        assert_eq!(round_bf16(f32::INFINITY), f32::INFINITY);
        assert_eq!(round_bf16(-0.0).to_bits(), (-0.0f32).to_bits());
        // Every bf16 value is its own rounding.
        for bits in (0u32..0x7f80).step_by(7) {
            let v = f32::from_bits(bits << 16);
            assert_eq!(round_bf16(v).to_bits(), v.to_bits());
        }
    }

    /// Ragged sizes (not multiples of the 32×32 block or the 32-wide k step), all four
    /// stride layouts, fresh and accumulating: the dispatching product (AMX where present)
    /// and the emulation both equal the f64 sums of the rounded operands.
    #[test]
    fn bf16_product_equals_the_rounded_f64_product_for_ragged_strided_shapes() {
        for &(m, n, k) in &[
            (1, 1, 1),
            (37, 45, 70),
            (64, 96, 384),
            (5, 130, 33),
            (70, 3, 200),
        ] {
            let a_rm = matrix(m, k, 1);
            let b_rm = matrix(k, n, 2);
            let a_cm = matrix(k, m, 3);
            let b_cm = matrix(n, k, 4);
            // Row-major, transposed, and neither axis contiguous (every other value).
            let a_sp = matrix(2 * m, k, 5);
            let b_sp = matrix(k, 2 * n, 6);
            let sparse_a = Matrix {
                data: &a_sp,
                rows: m,
                cols: k,
                row_stride: 2 * k,
                col_stride: 2,
            };
            let sparse_b = Matrix {
                data: &b_sp,
                rows: k,
                cols: n,
                row_stride: 2 * n,
                col_stride: 2,
            };
            let operands_a = [
                Matrix::row_major(&a_rm, m, k),
                Matrix::row_major(&a_cm, k, m).t(),
                sparse_a,
            ];
            let operands_b = [
                Matrix::row_major(&b_rm, k, n),
                Matrix::row_major(&b_cm, n, k).t(),
                sparse_b,
            ];
            for a in operands_a {
                for b in operands_b {
                    let want = reference(&a, &b);
                    let tol = 1e-5 * (k as f32).sqrt();
                    for run in [product, emulated] {
                        let mut fresh = vec![f32::NAN; m * n];
                        run(a, b, &mut fresh, false);
                        assert!(
                            max_diff(&fresh, &want) < tol,
                            "{m}x{n}x{k}: {}",
                            max_diff(&fresh, &want)
                        );
                        let mut acc = vec![1.5f32; m * n];
                        run(a, b, &mut acc, true);
                        let shifted: Vec<f32> = want.iter().map(|v| v + 1.5).collect();
                        assert!(max_diff(&acc, &shifted) < tol);
                    }
                    let fresh = product_fresh(a, b);
                    assert!(max_diff(&fresh, &want) < tol);
                }
            }
        }
    }

    #[test]
    fn bf16_product_differs_from_f32_by_bf16_rounding_only() {
        let (m, n, k) = (48, 40, 256);
        let a = matrix(m, k, 7);
        let b = matrix(k, n, 8);
        let (am, bm) = (Matrix::row_major(&a, m, k), Matrix::row_major(&b, k, n));
        let mut got = vec![0f32; m * n];
        product(am, bm, &mut got, false);
        let exact: Vec<f32> = (0..m * n)
            .map(|idx| {
                let (i, j) = (idx / n, idx % n);
                (0..k).map(|kk| a[i * k + kk] * b[kk * n + j]).sum()
            })
            .collect();
        // Each operand carries ≤ 2^-9 relative rounding error; sums of k products of
        // values in [-1, 1] then differ by about 2^-8·sqrt(k/3) ≈ 0.036 at most, and must
        // differ somewhere (the rounding is really applied).
        let d = max_diff(&got, &exact);
        assert!(d < 0.05, "{d}");
        assert!(d > 1e-4, "{d}: no bf16 rounding happened");
    }
}
