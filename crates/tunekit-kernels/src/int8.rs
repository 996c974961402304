//! Int8 linear layers with an int8 matrix product that is actually faster than f32: the
//! kernel of post-training quantisation (which tensors are quantised, and how they are stored,
//! is tunekit's `model::quant`).
//!
//! Scheme (as `torch.ao.quantization.quantize_dynamic` and ONNX Runtime's dynamic
//! quantisation): weights int8, symmetric, one scale per output channel
//! (`s_o = max|w_o| / 127`); activations quantised on the fly, symmetric, one scale per row
//! (token) of each input (`s_m = max|x_m| / 127`); products accumulated exactly in i32 and
//! rescaled, `y = (Σ q_x q_w) · s_m · s_o + b`.
//!
//! Why not burn's quantisation: burn 0.22 stores quantised tensors, but its Flex backend
//! dequantises them before every matmul, so the model gets smaller and not faster. The product
//! here is tunekit's own: on CPUs with AMX-INT8 it uses `tdpbusd` tiles ([`crate::amx`]), on
//! CPUs with AVX-512 VNNI `vpdpbusd` (64 u8×i8 products per instruction; the signed
//! activations are shifted to u8 by +128 and the shift is removed with the weights' column
//! sums), on CPUs with AVX-VNNI its 256-bit form, on every other x86-64 CPU with AVX2 a
//! `vpmaddubsw`/`vpmaddwd` kernel ([`avx2`], exact by the sign trick), elsewhere a portable
//! integer loop with the same result, bit for bit. [`Kernel::pick`] says which runs where.

use rayon::prelude::*;

#[cfg(target_arch = "x86_64")]
mod avx2;

/// Output channels per packed block (one 512-bit register of i32 accumulators).
const LANES: usize = 16;
/// Inputs per `vpdpbusd` group.
const GROUP: usize = 4;
/// Inputs per AMX tile row (64 bytes).
const AMX_K: usize = 64;

/// One linear layer with int8 weights.
#[derive(Debug, Clone)]
pub struct QuantLinear {
    /// Inputs.
    pub in_features: usize,
    /// Outputs.
    pub out_features: usize,
    /// Weights `[out][in]` (HF layout).
    pub weight: Vec<i8>,
    /// Scale of each output channel.
    pub scale: Vec<f32>,
    /// Bias (f32).
    pub bias: Vec<f32>,
    /// Σ_k w[o][k] per output, to undo the activations' +128 shift.
    col_sum: Vec<i32>,
    /// `col_sum`, `scale` and `bias` zero-padded to whole blocks of 16, for vector loads.
    col_sum_pad: Vec<i32>,
    scale_pad: Vec<f32>,
    bias_pad: Vec<f32>,
    /// Weights packed for the VNNI kernel: per block of 16 outputs, per group of 4 inputs,
    /// 16 × 4 bytes.
    packed: Vec<i8>,
    /// Inputs padded to a multiple of 4.
    k_pad: usize,
    /// Whether a weight is −128, which the AVX2 kernel's `vpsignb` cannot negate.
    has_min: bool,
}

/// The int8 product kernels, fastest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kernel {
    /// AMX-INT8 tiles (`tdpbusd`; Sapphire Rapids and later Xeons, Linux).
    Amx,
    /// AVX-512 VNNI (`vpdpbusd` on 512-bit registers; Cascade Lake+, Ice Lake+, Zen 4+).
    Avx512Vnni,
    /// AVX-VNNI (`vpdpbusd` on 256-bit registers; Alder Lake+, Zen 5 client without AVX-512).
    AvxVnni,
    /// AVX2 `vpmaddubsw` + `vpmaddwd` (Haswell+, Zen 1–3).
    Avx2,
    /// Portable integer loops (any CPU).
    Portable,
}

/// What the CPU offers for the int8 product (see [`Kernel::pick`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CpuInt8 {
    /// AMX-INT8 with the OS's permission for the tile state.
    pub amx_int8: bool,
    /// AVX-512F and AVX-512 VNNI.
    pub avx512vnni: bool,
    /// AVX-VNNI (with AVX2 and FMA).
    pub avxvnni: bool,
    /// AVX2 and FMA.
    pub avx2_fma: bool,
}

impl CpuInt8 {
    /// This CPU's features (run-time detection; all false off x86-64).
    pub fn detect() -> Self {
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::is_x86_feature_detected as has;
            let avx2_fma = has!("avx2") && has!("fma");
            CpuInt8 {
                #[cfg(target_os = "linux")]
                amx_int8: super::amx::int8_available(),
                #[cfg(not(target_os = "linux"))]
                amx_int8: false,
                avx512vnni: has!("avx512f") && has!("avx512vnni"),
                avxvnni: avx2_fma && has!("avxvnni"),
                avx2_fma,
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        CpuInt8::default()
    }
}

impl Kernel {
    /// The fastest kernel `cpu` can run for a layer; `weights_have_min` (a weight is −128)
    /// rules out the AVX2 sign trick only. Every kernel gives the same outputs, bit for bit.
    pub fn pick(cpu: CpuInt8, weights_have_min: bool) -> Kernel {
        if cpu.amx_int8 {
            Kernel::Amx
        } else if cpu.avx512vnni {
            Kernel::Avx512Vnni
        } else if cpu.avxvnni {
            Kernel::AvxVnni
        } else if cpu.avx2_fma && !weights_have_min {
            Kernel::Avx2
        } else {
            Kernel::Portable
        }
    }

    /// The kernel this CPU runs for layers quantised by [`QuantLinear::quantize`].
    pub fn detected() -> Kernel {
        static PICKED: std::sync::OnceLock<Kernel> = std::sync::OnceLock::new();
        *PICKED.get_or_init(|| Kernel::pick(CpuInt8::detect(), false))
    }
}

impl QuantLinear {
    /// Quantise f32 weights given `[out][in]` (HF layout).
    pub fn quantize(
        weight: &[f32],
        bias: Vec<f32>,
        in_features: usize,
        out_features: usize,
    ) -> Self {
        let (q, scale) = Self::quantize_rows(weight, out_features, in_features);
        Self::from_int8(q, scale, bias, in_features, out_features)
    }

    /// Symmetric int8 of a `[rows][cols]` matrix with one scale per row (`max|row| / 127`).
    pub fn quantize_rows(values: &[f32], rows: usize, cols: usize) -> (Vec<i8>, Vec<f32>) {
        let mut q = vec![0i8; values.len()];
        let mut scale = vec![1.0f32; rows];
        for r in 0..rows {
            let row = &values[r * cols..(r + 1) * cols];
            let amax = row.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            let s = if amax > 0.0 { amax / 127.0 } else { 1.0 };
            scale[r] = s;
            for (dst, &v) in q[r * cols..(r + 1) * cols].iter_mut().zip(row) {
                *dst = (v / s).round().clamp(-127.0, 127.0) as i8;
            }
        }
        (q, scale)
    }

    /// Build from stored int8 weights `[out][in]` and per-output scales.
    pub fn from_int8(
        weight: Vec<i8>,
        scale: Vec<f32>,
        bias: Vec<f32>,
        in_features: usize,
        out_features: usize,
    ) -> Self {
        // Padded for the AMX kernel too (it reads whole 64-byte rows and pairs of 16-output
        // blocks); the padding is zero weights, so it adds nothing to any sum.
        let k_pad = in_features.div_ceil(AMX_K) * AMX_K;
        let blocks = out_features.div_ceil(2 * LANES) * 2;
        let mut packed = vec![0i8; blocks * LANES * k_pad];
        let groups = k_pad / GROUP;
        for o in 0..out_features {
            let (blk, lane) = (o / LANES, o % LANES);
            for k in 0..in_features {
                let (g, j) = (k / GROUP, k % GROUP);
                packed[((blk * groups + g) * LANES + lane) * GROUP + j] =
                    weight[o * in_features + k];
            }
        }
        let col_sum: Vec<i32> = (0..out_features)
            .map(|o| {
                weight[o * in_features..(o + 1) * in_features]
                    .iter()
                    .map(|&w| i32::from(w))
                    .sum()
            })
            .collect();
        let pad_i = |v: &[i32]| {
            let mut p = v.to_vec();
            p.resize(blocks * LANES, 0);
            p
        };
        let pad_f = |v: &[f32]| {
            let mut p = v.to_vec();
            p.resize(blocks * LANES, 0.0);
            p
        };
        let has_min = weight.contains(&i8::MIN);
        QuantLinear {
            in_features,
            out_features,
            col_sum_pad: pad_i(&col_sum),
            scale_pad: pad_f(&scale),
            bias_pad: pad_f(&bias),
            weight,
            scale,
            bias,
            col_sum,
            has_min,
            packed,
            k_pad,
        }
    }

    /// The dequantised weights `[out][in]`.
    pub fn dequantized(&self) -> Vec<f32> {
        self.weight
            .iter()
            .enumerate()
            .map(|(i, &q)| f32::from(q) * self.scale[i / self.in_features])
            .collect()
    }

    /// `y = x·Wᵀ + b` for `rows` rows of `x` (`[rows][in]`), with int8 arithmetic, on the
    /// fastest kernel this CPU has ([`Kernel::pick`]).
    pub fn forward(&self, x: &[f32], rows: usize) -> Vec<f32> {
        let cpu = CpuInt8::detect();
        self.forward_with(Kernel::pick(cpu, self.has_min), x, rows)
    }

    /// [`Self::forward`] on `kernel`, which must be one [`Kernel::pick`] can return for this
    /// CPU and layer (else the portable path runs).
    fn forward_with(&self, kernel: Kernel, x: &[f32], rows: usize) -> Vec<f32> {
        let (xq, xs) = self.quantize_input(x, rows);
        let cpu = CpuInt8::detect();
        let allowed = match kernel {
            Kernel::Amx => cpu.amx_int8,
            Kernel::Avx512Vnni => cpu.avx512vnni,
            Kernel::AvxVnni => cpu.avxvnni,
            Kernel::Avx2 => cpu.avx2_fma && !self.has_min,
            Kernel::Portable => true,
        };
        #[cfg(target_arch = "x86_64")]
        if allowed {
            match kernel {
                #[cfg(target_os = "linux")]
                Kernel::Amx => {
                    return super::amx::int8_forward(&super::amx::Int8Operands {
                        xq: &xq,
                        xs: &xs,
                        rows,
                        k_pad: self.k_pad,
                        packed: &self.packed,
                        out_features: self.out_features,
                        col_sum: &self.col_sum,
                        scale: &self.scale,
                        bias: &self.bias,
                    });
                }
                Kernel::Avx512Vnni => return self.forward_vnni(&xq, &xs, rows),
                // SAFETY: the CPU has AVX2, FMA and AVX-VNNI (`allowed`).
                Kernel::AvxVnni => unsafe {
                    return self.forward_avx2(&xq, &xs, rows, avx2::Dot::AvxVnni);
                },
                // SAFETY: the CPU has AVX2 and FMA, and no weight is −128 (`allowed`).
                Kernel::Avx2 => unsafe {
                    return self.forward_avx2(&xq, &xs, rows, avx2::Dot::Avx2);
                },
                _ => {}
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = allowed;
        let acc = self.accumulate_portable(&xq, rows);
        let n = self.out_features;
        let mut y = vec![0.0f32; rows * n];
        y.par_chunks_mut(n.max(1)).enumerate().for_each(|(m, out)| {
            for (o, dst) in out.iter_mut().enumerate() {
                let v = acc[m * n + o] - 128 * self.col_sum[o];
                *dst = (v as f32 * xs[m]).mul_add(self.scale[o], self.bias[o]);
            }
        });
        y
    }

    /// Per-row symmetric int8 activations shifted to u8 (+128; padding encodes 0), and the
    /// row scales; rows padded to a multiple of 32 for the AMX kernel.
    fn quantize_input(&self, x: &[f32], rows: usize) -> (Vec<u8>, Vec<f32>) {
        let (k, kp) = (self.in_features, self.k_pad);
        let mut xq = vec![128u8; rows.div_ceil(32) * 32 * kp];
        let mut xs = vec![0.0f32; rows];
        xq.par_chunks_mut(kp.max(1))
            .zip(xs.par_iter_mut())
            .enumerate()
            .for_each(|(m, (dst, scale))| {
                let row = &x[m * k..(m + 1) * k];
                *scale = quantize_row(row, &mut dst[..k]);
            });
        (xq, xs)
    }

    /// Σ_k xq[m][k] · w[o][k] (u8 × i8, exact in i32) for every row and output: the reference
    /// product (any CPU).
    fn accumulate_portable(&self, xq: &[u8], rows: usize) -> Vec<i32> {
        let (k, kp, n) = (self.in_features, self.k_pad, self.out_features);
        let mut acc = vec![0i32; rows * n];
        acc.par_chunks_mut(n.max(1))
            .enumerate()
            .for_each(|(m, out)| {
                let xr = &xq[m * kp..m * kp + k];
                for (o, dst) in out.iter_mut().enumerate() {
                    let wr = &self.weight[o * k..(o + 1) * k];
                    *dst = xr
                        .iter()
                        .zip(wr)
                        .map(|(&a, &b)| i32::from(a) * i32::from(b))
                        .sum();
                }
            });
        acc
    }

    /// The VNNI product with the rescaling fused in, written straight into `y`. Work is split
    /// by rows when there are many (each task streams all weights once per 4 rows), else by
    /// groups of 4 output blocks (batch-1 inference: the weights are the traffic).
    #[cfg(target_arch = "x86_64")]
    fn forward_vnni(&self, xq: &[u8], xs: &[f32], rows: usize) -> Vec<f32> {
        let n = self.out_features;
        let blocks = n.div_ceil(LANES);
        let mut y = vec![0.0f32; rows * n];
        let out = SharedOut(y.as_mut_ptr());
        let threads = rayon::current_num_threads().max(1);
        if rows >= 16 * threads {
            let per = rows.div_ceil(4 * threads * 4) * 4;
            let starts: Vec<usize> = (0..rows).step_by(per).collect();
            starts.par_iter().for_each(|&m0| {
                let m1 = (m0 + per).min(rows);
                // SAFETY: features checked above; each task writes rows m0..m1 only.
                unsafe { self.kernel(xq, xs, m0, m1, 0, blocks, &out) };
            });
        } else {
            let groups: Vec<usize> = (0..blocks).step_by(4).collect();
            groups.par_iter().for_each(|&b0| {
                let b1 = (b0 + 4).min(blocks);
                // SAFETY: features checked above; each task writes outputs of blocks b0..b1.
                unsafe { self.kernel(xq, xs, 0, rows, b0, b1, &out) };
            });
        }
        y
    }

    /// Rows `m0..m1` × blocks `b0..b1` in tiles of 4 rows × 4 blocks (16 accumulator
    /// registers), smaller tiles at the edges.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx512vnni")]
    #[allow(clippy::too_many_arguments)]
    unsafe fn kernel(
        &self,
        xq: &[u8],
        xs: &[f32],
        m0: usize,
        m1: usize,
        b0: usize,
        b1: usize,
        out: &SharedOut,
    ) {
        let mut m = m0;
        while m < m1 {
            let mr = 4.min(m1 - m);
            let mut b = b0;
            while b < b1 {
                let nb = 4.min(b1 - b);
                // SAFETY: as for `tile`; the features are enabled here too.
                unsafe {
                    macro_rules! tiles {
                        ($($r:literal, $c:literal);*) => {
                            match (mr, nb) {
                                $(($r, $c) => self.tile::<$r, $c>(xq, xs, m, b, out),)*
                                _ => {}
                            }
                        };
                    }
                    tiles!(4, 4; 4, 3; 4, 2; 4, 1; 3, 4; 3, 3; 3, 2; 3, 1;
                           2, 4; 2, 3; 2, 2; 2, 1; 1, 4; 1, 3; 1, 2; 1, 1);
                }
                b += 4;
            }
            m += 4;
        }
    }

    /// One tile: rows `m..m+MR` × blocks `b..b+NB`, accumulated in registers, then
    /// `y = (acc − 128·Σw) · s_x · s_w + bias` stored (masked at the last block).
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx512vnni")]
    #[inline]
    unsafe fn tile<const MR: usize, const NB: usize>(
        &self,
        xq: &[u8],
        xs: &[f32],
        m: usize,
        b: usize,
        out: &SharedOut,
    ) {
        use std::arch::x86_64::*;
        let kp = self.k_pad;
        let n = self.out_features;
        let groups = kp / GROUP;
        let block_len = groups * LANES * GROUP;
        // SAFETY: rows m..m+MR exist in `xq` (rows × k_pad bytes, 4 read per group); blocks
        // b..b+NB exist in `self.packed` (64 bytes per block and group) and in the padded
        // per-output vectors; stores are masked to outputs < n of rows < rows, inside `y`.
        unsafe {
            let w = self.packed.as_ptr();
            let x = xq.as_ptr();
            let mut acc = [[_mm512_setzero_si512(); NB]; MR];
            for g in 0..groups {
                let mut a = [_mm512_setzero_si512(); MR];
                for (i, ai) in a.iter_mut().enumerate() {
                    let p = x.add((m + i) * kp + g * GROUP) as *const i32;
                    *ai = _mm512_set1_epi32(p.read_unaligned());
                }
                for j in 0..NB {
                    let wp = w.add((b + j) * block_len + g * LANES * GROUP);
                    let bv = _mm512_loadu_si512(wp as *const __m512i);
                    for (row, ai) in acc.iter_mut().zip(&a) {
                        row[j] = _mm512_dpbusd_epi32(row[j], *ai, bv);
                    }
                }
            }
            for j in 0..NB {
                let o = (b + j) * LANES;
                let cs = _mm512_slli_epi32(
                    _mm512_loadu_si512(self.col_sum_pad.as_ptr().add(o) as *const __m512i),
                    7,
                );
                let ws = _mm512_loadu_ps(self.scale_pad.as_ptr().add(o));
                let bias = _mm512_loadu_ps(self.bias_pad.as_ptr().add(o));
                let valid = n.saturating_sub(o).min(LANES);
                let mask: __mmask16 = if valid == LANES {
                    0xFFFF
                } else {
                    ((1u32 << valid) - 1) as __mmask16
                };
                for (i, row) in acc.iter().enumerate() {
                    let v = _mm512_cvtepi32_ps(_mm512_sub_epi32(row[j], cs));
                    let sx = _mm512_set1_ps(xs[m + i]);
                    let yv = _mm512_fmadd_ps(_mm512_mul_ps(v, sx), ws, bias);
                    _mm512_mask_storeu_ps(out.0.add((m + i) * n + o), mask, yv);
                }
            }
        }
    }
}

/// Symmetric int8 of one activation row shifted to u8 (`+128`), returning its scale
/// (`max|row| / 127`, 1 for a zero row). Compiled for AVX-512/AVX2 where the CPU has them
/// (`round` is then one instruction rather than a libm call).
fn quantize_row(row: &[f32], dst: &mut [u8]) -> f32 {
    let mut scale = 1.0f32;
    quantize_row_into(row, dst, &mut scale);
    scale
}

super::fused::multiversion! {
    fn quantize_row_into(row: &[f32], dst: &mut [u8], scale: &mut f32) {
        let amax = row.iter().fold(0.0f32, |a, v| a.max(v.abs()));
        let s = if amax > 0.0 { amax / 127.0 } else { 1.0 };
        *scale = s;
        let inv = 1.0 / s;
        for (d, &v) in dst.iter_mut().zip(row) {
            // |v · inv| ≤ 127 by construction; round half away from zero, written as
            // truncation plus a select (`f32::round` is a libm call per element; `trunc` is
            // one vector instruction and `r − t` is exact).
            let r = v * inv;
            let t = r.trunc();
            let q = if (r - t).abs() >= 0.5 { t + 1.0f32.copysign(r) } else { t };
            // Clamped (NaN → −127) so the unchecked conversion is in range: `as i32`
            // saturates lane by lane in scalar code.
            // (`clamp` would keep a NaN, which the unchecked conversion must not see.)
            #[allow(clippy::manual_clamp)]
            let q = q.max(-127.0).min(127.0);
            // SAFETY: q is finite and within i32 (clamped above).
            *d = (unsafe { q.to_int_unchecked::<i32>() } + 128) as u8;
        }
    }
}

/// The output buffer shared by the tasks of one product; each writes a disjoint region.
#[cfg(target_arch = "x86_64")]
struct SharedOut(*mut f32);
// SAFETY: tasks write disjoint rows or disjoint output blocks of the buffer, which outlives
// them (rayon joins before `forward_vnni` returns it).
#[cfg(target_arch = "x86_64")]
unsafe impl Sync for SharedOut {}
#[cfg(target_arch = "x86_64")]
unsafe impl Send for SharedOut {}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(n: usize, seed: u32) -> Vec<f32> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                ((s >> 8) as f32 / (1u32 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    #[test]
    fn amx_vnni_and_portable_int8_products_agree_on_ragged_shapes() {
        // Inputs not a multiple of 4, outputs not a multiple of 16 or 64, rows not of 4, and
        // both work splits (few rows: by outputs; many rows: by rows).
        for (k, n, rows) in [
            (37, 45, 5),
            (384, 384, 1),
            (384, 1536, 7),
            (8, 3, 2),
            (50, 70, 133),
            (1536, 384, 70),
            (384, 1536, 2048),
        ] {
            let q = QuantLinear::quantize(&data(k * n, 1), data(n, 2), k, n);
            let x = data(rows * k, 3);
            let (xq, xs) = q.quantize_input(&x, rows);
            let acc = q.accumulate_portable(&xq, rows);
            let want: Vec<f32> = (0..rows * n)
                .map(|i| {
                    let (m, o) = (i / n, i % n);
                    let v = acc[i] - 128 * q.col_sum[o];
                    (v as f32 * xs[m]).mul_add(q.scale[o], q.bias[o])
                })
                .collect();
            // The dispatching product and every kernel this CPU can run (AMX tiles, AVX-512
            // VNNI, AVX-VNNI, AVX2) against the portable sums.
            let cpu = CpuInt8::detect();
            let mut runs = vec![("dispatch".to_string(), q.forward(&x, rows))];
            for kernel in [
                Kernel::Amx,
                Kernel::Avx512Vnni,
                Kernel::AvxVnni,
                Kernel::Avx2,
                Kernel::Portable,
            ] {
                let allowed = match kernel {
                    Kernel::Amx => cpu.amx_int8,
                    Kernel::Avx512Vnni => cpu.avx512vnni,
                    Kernel::AvxVnni => cpu.avxvnni,
                    Kernel::Avx2 => cpu.avx2_fma,
                    Kernel::Portable => true,
                };
                if allowed {
                    runs.push((format!("{kernel:?}"), q.forward_with(kernel, &x, rows)));
                }
            }
            for (name, got) in runs {
                assert_eq!(got.len(), want.len());
                for (g, w) in got.iter().zip(&want) {
                    // The SIMD kernels compute the same i32 sums and the same f32 epilogue
                    // (one multiply, one fused multiply-add) as the portable path.
                    if name == "Avx2" || name == "AvxVnni" || name == "Portable" {
                        assert_eq!(g.to_bits(), w.to_bits(), "{name}: k {k} n {n} rows {rows}");
                    }
                    assert!(
                        (g - w).abs() <= 1e-5 * w.abs().max(1.0),
                        "{name}: k {k} n {n} rows {rows}: {g} vs {w}"
                    );
                }
            }
        }
    }

    /// Every activation and weight at ±127 (the largest pairs `vpmaddubsw` sees): the AVX2
    /// sign trick must not saturate its i16 pair sums.
    #[test]
    fn extreme_int8_values_do_not_saturate_the_avx2_pair_sums() {
        let (k, n, rows) = (64, 16, 4);
        let signs = |i: usize| {
            if (i / 3).is_multiple_of(2) {
                1.0f32
            } else {
                -1.0
            }
        };
        let w: Vec<f32> = (0..k * n).map(signs).collect();
        let x: Vec<f32> = (0..rows * k).map(|i| signs(i) * 5.0).collect();
        let q = QuantLinear::quantize(&w, vec![0.0; n], k, n);
        let portable = q.forward_with(Kernel::Portable, &x, rows);
        let y = q.forward(&x, rows);
        for m in 0..rows {
            for o in 0..n {
                let exact: f32 = (0..k).map(|j| x[m * k + j] * w[o * k + j]).sum();
                let got = y[m * n + o];
                assert!(
                    (got - exact).abs() < 1e-3 * exact.abs().max(1.0),
                    "{got} vs {exact}"
                );
                assert_eq!(got.to_bits(), portable[m * n + o].to_bits());
            }
        }
    }

    /// A stored −128 weight (possible in a file, never written by `quantize`) keeps the
    /// exact result: the AVX2 kernel is not picked for it.
    #[test]
    fn a_weight_of_minus_128_takes_a_kernel_that_handles_it() {
        let (k, n, rows) = (8, 4, 2);
        let mut wq = vec![1i8; k * n];
        wq[3] = i8::MIN;
        let q = QuantLinear::from_int8(wq.clone(), vec![1.0; n], vec![0.0; n], k, n);
        assert!(q.has_min);
        assert_ne!(Kernel::pick(CpuInt8::detect(), true), Kernel::Avx2);
        let x: Vec<f32> = (0..rows * k).map(|i| (i % 5) as f32 - 2.0).collect();
        let y = q.forward(&x, rows);
        let (xq, xs) = q.quantize_input(&x, rows);
        for m in 0..rows {
            for o in 0..n {
                let sum: i32 = (0..k)
                    .map(|j| (i32::from(xq[m * q.k_pad + j]) - 128) * i32::from(wq[o * k + j]))
                    .sum();
                assert_eq!(y[m * n + o], sum as f32 * xs[m]);
            }
        }
    }

    #[test]
    fn the_int8_kernel_is_picked_by_cpu_feature_fastest_first() {
        let none = CpuInt8::default();
        let avx2 = CpuInt8 {
            avx2_fma: true,
            ..none
        };
        let avxvnni = CpuInt8 {
            avxvnni: true,
            ..avx2
        };
        let avx512 = CpuInt8 {
            avx512vnni: true,
            ..avxvnni
        };
        let amx = CpuInt8 {
            amx_int8: true,
            ..avx512
        };
        assert_eq!(Kernel::pick(none, false), Kernel::Portable);
        assert_eq!(Kernel::pick(avx2, false), Kernel::Avx2);
        assert_eq!(Kernel::pick(avx2, true), Kernel::Portable);
        assert_eq!(Kernel::pick(avxvnni, false), Kernel::AvxVnni);
        assert_eq!(Kernel::pick(avxvnni, true), Kernel::AvxVnni);
        assert_eq!(Kernel::pick(avx512, false), Kernel::Avx512Vnni);
        assert_eq!(Kernel::pick(amx, true), Kernel::Amx);
        // This machine: an x86-64 CPU with AVX2 never falls back to the portable loops.
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            assert_ne!(Kernel::detected(), Kernel::Portable);
        }
    }

    /// Guards the AMX path's empty sum (no tile step to run): every output is the bias.
    #[test]
    fn a_layer_without_inputs_outputs_its_bias() {
        let q = QuantLinear::quantize(&[], vec![0.5, -1.0, 2.0], 0, 3);
        assert_eq!(q.forward(&[], 2), vec![0.5, -1.0, 2.0, 0.5, -1.0, 2.0]);
    }

    #[test]
    fn int8_product_is_close_to_f32() {
        let (k, n, rows) = (384, 96, 9);
        let w = data(k * n, 5);
        let b = data(n, 6);
        let x: Vec<f32> = data(rows * k, 7).iter().map(|v| v * 3.0).collect();
        let q = QuantLinear::quantize(&w, b.clone(), k, n);
        let y = q.forward(&x, rows);
        let mut worst = 0.0f32;
        let mut norm = 0.0f32;
        for m in 0..rows {
            for o in 0..n {
                let exact: f32 = (0..k).map(|j| x[m * k + j] * w[o * k + j]).sum::<f32>() + b[o];
                worst = worst.max((y[m * n + o] - exact).abs());
                norm = norm.max(exact.abs());
            }
        }
        // Two roundings of at most half a step each: relative error around 1 %.
        assert!(worst < 0.02 * norm, "max error {worst} of {norm}");
        // And the dequantised weights are within half a step of the originals.
        let deq = q.dequantized();
        for o in 0..n {
            for j in 0..k {
                assert!((deq[o * k + j] - w[o * k + j]).abs() <= q.scale[o] * 0.5 + 1e-7);
            }
        }
    }
}
