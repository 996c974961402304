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
//! core. The `gemm` crate has neither, hence this kernel: operands packed into bf16 tiles (A:
//! 16 rows × 32 k; B: 16 k-pairs × 16 columns, each pair adjacent — AMX's "VNNI" layout), one
//! 32×32 f32 output block per kernel call held in four tile registers, blocks split over
//! rayon's threads. Rust has no stable AMX intrinsics, so the kernel is inline assembly.
//!
//! Without AMX (another CPU, or an OS that refuses the tile state) the same rounding is applied
//! to f32 copies of the operands and the f32 GEMM sums them: the same values up to summation
//! order, at f32 speed.

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
    type Err = crate::error::Error;
    fn from_str(s: &str) -> crate::error::Result<Self> {
        match s {
            "f32" => Ok(Precision::F32),
            "bf16" => Ok(Precision::Bf16),
            other => Err(crate::error::Error::Config(format!(
                "unknown precision `{other}` (f32, bf16)"
            ))),
        }
    }
}

/// `precision` where `device` can run it: bf16 products belong to the CPU backend's fused
/// linear op, so bf16 on another backend is an error rather than a silent f32 run. Says once
/// in the log whether they run on AMX or are emulated.
pub fn for_device(
    precision: Precision,
    device: &burn::tensor::Device,
) -> crate::error::Result<Precision> {
    if precision == Precision::Bf16 {
        if !super::fused::is_flex(device) {
            return Err(crate::error::Error::Config(
                "precision bf16 is implemented for the CPU backend only; use f32 on CUDA".into(),
            ));
        }
        if amx_available() {
            tracing::info!("linear-layer products in bf16 on AMX (f32 sums, f32 master weights)");
        } else {
            tracing::warn!(
                "precision bf16: this CPU (or OS) has no AMX; bf16 products are emulated at \
                 f32 speed (same rounding)"
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
    fn at(&self, i: usize, j: usize) -> f32 {
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
    if amx::available() {
        // SAFETY: `out` holds the m·n initialised values (checked).
        unsafe { amx::product(a, b, out.as_mut_ptr(), accumulate) };
        return;
    }
    emulated(a, b, out, accumulate);
}

/// A fresh `a · b` ([`product`]), its output written once (no zero-fill first).
pub(crate) fn product_fresh(a: Matrix, b: Matrix) -> Vec<f32> {
    let len = a.rows * b.cols;
    #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
    if amx::available() {
        let mut out = Box::<[f32]>::new_uninit_slice(len);
        check(&a, &b, len);
        // SAFETY: `out` has room for the m·n values; without `accumulate` every one of them
        // is written (none read), so it is initialised afterwards.
        unsafe {
            amx::product(a, b, out.as_mut_ptr().cast(), false);
            return out.assume_init().into_vec();
        }
    }
    let mut out = vec![0.0; len];
    emulated(a, b, &mut out, false);
    out
}

/// Whether bf16 products run on AMX here (else they are emulated at f32 speed).
pub fn amx_available() -> bool {
    #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
    {
        amx::available()
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
pub(crate) fn emulated(a: Matrix, b: Matrix, out: &mut [f32], accumulate: bool) {
    check(&a, &b, out.len());
    let round = |m: &Matrix| -> Vec<f32> {
        (0..m.rows)
            .flat_map(|i| (0..m.cols).map(move |j| (i, j)))
            .map(|(i, j)| round_bf16(m.at(i, j)))
            .collect()
    };
    let (ra, rb) = (round(&a), round(&b));
    super::fused::gemm::into(
        a.rows, b.cols, a.cols, out, accumulate, &ra, a.cols, &rb, b.cols,
    );
}

/// Intel AMX (tile registers and `tdpbf16ps`), x86-64 Linux.
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
mod amx {
    use super::{Matrix, to_bf16};
    use rayon::prelude::*;
    use std::arch::asm;
    use std::sync::OnceLock;

    /// u16 elements of one packed tile (16 rows × 64 bytes).
    const TILE: usize = 512;

    /// Whether the CPU has AMX-TILE and AMX-BF16 and the kernel granted this process the tile
    /// state (`arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)`, Linux ≥ 5.16). Asked
    /// once.
    pub fn available() -> bool {
        static READY: OnceLock<bool> = OnceLock::new();
        *READY.get_or_init(|| {
            // Leaf 7 (EDX bit 22 AMX-BF16, bit 24 AMX-TILE), if leaf 0 says it exists.
            let has = std::arch::x86_64::__cpuid(0).eax >= 7 && {
                let edx = std::arch::x86_64::__cpuid_count(7, 0).edx;
                (edx >> 22) & 1 == 1 && (edx >> 24) & 1 == 1
            };
            // The packing kernels use AVX-512 F/BW/BF16 (every AMX CPU has them).
            let packing = std::arch::is_x86_feature_detected!("avx512bw")
                && std::arch::is_x86_feature_detected!("avx512bf16");
            if !has || !packing {
                return false;
            }
            const ARCH_REQ_XCOMP_PERM: libc::c_long = 0x1023;
            const XFEATURE_XTILEDATA: libc::c_long = 18;
            // SAFETY: a plain system call with integer arguments; it only changes which
            // register state this process may use.
            let r = unsafe {
                libc::syscall(
                    libc::SYS_arch_prctl,
                    ARCH_REQ_XCOMP_PERM,
                    XFEATURE_XTILEDATA,
                )
            };
            r == 0
        })
    }

    /// `ldtilecfg`'s 64-byte operand: palette 1, tiles 0–7 each 16 rows × 64 bytes.
    #[repr(C, align(64))]
    struct TileConfig {
        palette: u8,
        start_row: u8,
        reserved: [u8; 14],
        colsb: [u16; 16],
        rows: [u8; 16],
    }

    /// Tile state for the current thread, released when dropped (so a rayon worker does not
    /// carry 8 KiB of dirty tile state through every later context switch).
    struct Tiles;

    impl Tiles {
        fn configure() -> Tiles {
            let mut cfg = TileConfig {
                palette: 1,
                start_row: 0,
                reserved: [0; 14],
                colsb: [0; 16],
                rows: [0; 16],
            };
            for t in 0..8 {
                cfg.colsb[t] = 64;
                cfg.rows[t] = 16;
            }
            // SAFETY: `available()` was true (the caller checks), so the tile state is
            // permitted; the operand is a valid 64-byte configuration.
            unsafe { asm!("ldtilecfg [{}]", in(reg) &cfg as *const TileConfig, options(nostack)) };
            Tiles
        }
    }

    impl Drop for Tiles {
        fn drop(&mut self) {
            // SAFETY: releases the tile state configured by `configure`.
            unsafe { asm!("tilerelease", options(nostack, nomem)) };
        }
    }

    /// `c[32×32] = Σ_kt a_tiles · b_tiles`: `a0`/`a1` point at the first of `kt` consecutive
    /// A tiles of two 16-row groups, `b0`/`b1` at those of two 16-column groups; `c` is a
    /// row-major 32×32 f32 block.
    ///
    /// # Safety
    /// Tiles configured on this thread; each pointer covers `kt` tiles; `kt ≥ 1`.
    #[inline(always)]
    unsafe fn block(
        a0: *const u16,
        a1: *const u16,
        b0: *const u16,
        b1: *const u16,
        kt: usize,
        c: &mut [f32; 1024],
    ) {
        let cp = c.as_mut_ptr();
        // SAFETY: forwarded from the caller; tmm0–3 hold the four 16×16 f32 sums (top-left,
        // top-right, bottom-left, bottom-right), tmm4/5 the A tiles, tmm6/7 the B tiles. The
        // compiler never uses tile registers itself.
        unsafe {
            asm!(
                "tilezero tmm0",
                "tilezero tmm1",
                "tilezero tmm2",
                "tilezero tmm3",
                "2:",
                "tileloadd tmm4, [{a0} + {s}*1]",
                "tileloadd tmm6, [{b0} + {s}*1]",
                "tileloadd tmm7, [{b1} + {s}*1]",
                "tdpbf16ps tmm0, tmm4, tmm6",
                "tileloadd tmm5, [{a1} + {s}*1]",
                "tdpbf16ps tmm1, tmm4, tmm7",
                "tdpbf16ps tmm2, tmm5, tmm6",
                "tdpbf16ps tmm3, tmm5, tmm7",
                "add {a0}, 1024",
                "add {a1}, 1024",
                "add {b0}, 1024",
                "add {b1}, 1024",
                "dec {kt}",
                "jnz 2b",
                "tilestored [{c} + {cs}*1], tmm0",
                "tilestored [{c} + {cs}*1 + 64], tmm1",
                "tilestored [{c2} + {cs}*1], tmm2",
                "tilestored [{c2} + {cs}*1 + 64], tmm3",
                a0 = inout(reg) a0 => _,
                a1 = inout(reg) a1 => _,
                b0 = inout(reg) b0 => _,
                b1 = inout(reg) b1 => _,
                kt = inout(reg) kt => _,
                s = in(reg) 64usize,
                c = in(reg) cp,
                c2 = in(reg) cp.add(16 * 32),
                cs = in(reg) 128usize,
                options(nostack),
            );
        }
    }

    /// Vectorised packing: AVX-512 loads (masked at the edges), `vcvtne2ps2bf16` (round to
    /// nearest even; like AMX itself it treats subnormal inputs as zero) and, for the
    /// operands whose contiguous axis is not the tile's row, a 32-bit scatter that transposes
    /// bf16 pairs into place. Every AMX CPU has AVX-512 BF16.
    mod simd {
        use std::arch::x86_64::*;

        /// Word order that interleaves two converted 16-value rows into 16 (even, odd) pairs.
        const INTERLEAVE: [u16; 32] = {
            let mut idx = [0u16; 32];
            let mut j = 0;
            while j < 16 {
                idx[2 * j] = j as u16;
                idx[2 * j + 1] = 16 + j as u16;
                j += 1;
            }
            idx
        };

        /// The `n ≤ 16` f32 at `src`, zeros after them.
        ///
        /// # Safety
        /// `src` valid for `n` reads; AVX-512F.
        #[inline(always)]
        unsafe fn load16(src: *const f32, n: usize) -> __m512 {
            let mask = if n >= 16 {
                0xffff
            } else {
                ((1u32 << n) - 1) as u16
            };
            // SAFETY: masked-off lanes are not read.
            unsafe { _mm512_maskz_loadu_ps(mask, src) }
        }

        /// `n ≤ 32` consecutive f32 as 32 bf16 (zeros after them).
        ///
        /// # Safety
        /// `src` valid for `n` reads; AVX-512F/BF16.
        #[inline(always)]
        pub unsafe fn run32(src: *const f32, n: usize) -> __m512i {
            // SAFETY: forwarded; the second load starts inside the run only when n > 16.
            unsafe {
                let lo = load16(src, n.min(16));
                let hi = if n > 16 {
                    load16(src.add(16), n - 16)
                } else {
                    _mm512_setzero_ps()
                };
                std::mem::transmute::<__m512bh, __m512i>(_mm512_cvtne2ps_pbh(hi, lo))
            }
        }

        /// Rows `r0`, `r1` (each `n ≤ 16` f32; `r1` absent: zeros) as 16 bf16 pairs
        /// `(r0[j], r1[j])`.
        ///
        /// # Safety
        /// Both pointers valid for `n` reads; AVX-512F/BW/BF16.
        #[inline(always)]
        pub unsafe fn pairs(r0: *const f32, r1: Option<*const f32>, n: usize) -> __m512i {
            // SAFETY: forwarded from the caller.
            unsafe {
                let a = load16(r0, n);
                let b = match r1 {
                    Some(p) => load16(p, n),
                    None => _mm512_setzero_ps(),
                };
                let v = std::mem::transmute::<__m512bh, __m512i>(_mm512_cvtne2ps_pbh(b, a));
                let idx = _mm512_loadu_si512(INTERLEAVE.as_ptr().cast());
                _mm512_permutexvar_epi16(idx, v)
            }
        }

        /// Stores the 16 u32 lanes of `v` at `dst[16·l]` (a column of a 16×16 u32 block).
        ///
        /// # Safety
        /// `dst` valid for writes at `16·l` for l < 16; AVX-512F.
        #[inline(always)]
        pub unsafe fn store_column(dst: *mut u16, v: __m512i) {
            // SAFETY: forwarded; offsets 0, 16, …, 240 u32 (scale 4 bytes).
            unsafe {
                let offsets = _mm512_setr_epi32(
                    0, 16, 32, 48, 64, 80, 96, 112, 128, 144, 160, 176, 192, 208, 224, 240,
                );
                _mm512_i32scatter_epi32::<4>(dst.cast(), offsets, v)
            }
        }

        /// Stores all 64 bytes of `v` at `dst`.
        ///
        /// # Safety
        /// `dst` valid for 32 u16 writes; AVX-512F.
        #[inline(always)]
        pub unsafe fn store_row(dst: *mut u16, v: __m512i) {
            // SAFETY: forwarded.
            unsafe { _mm512_storeu_si512(dst.cast(), v) }
        }
    }

    /// Packs `a` (`m × k`) into A tiles `[m/16][k/32]`, zero-padded: tile row `r` of tile
    /// `(mt, kt)` holds `a[mt·16 + r, kt·32 .. kt·32 + 32]`.
    fn pack_a(a: &Matrix, kt: usize) -> Box<[u16]> {
        let mt = a.rows.div_ceil(32) * 2;
        let mut packed = Box::<[u16]>::new_uninit_slice(mt * kt * TILE);
        packed
            .par_chunks_mut(kt * TILE)
            .enumerate()
            .for_each(|(t, tiles)| {
                let out = tiles.as_mut_ptr().cast::<u16>();
                if t * 16 >= a.rows {
                    // SAFETY: `out` covers the chunk's kt·TILE values.
                    unsafe { std::ptr::write_bytes(out, 0, kt * TILE) }; // padding tiles
                    return;
                }
                // SAFETY: `available()` checked AVX-512 BF16; the operand covers its extent
                // (checked by `product`'s caller), so every read is inside `a.data`; `out`
                // covers kt tiles.
                unsafe { pack_a_tiles(a, t, kt, out) }
            });
        // SAFETY: every chunk was written in full (tiles, or zeros for padding).
        unsafe { packed.assume_init() }
    }

    /// Writes the `kt` A tiles of 16-row group `t` at `out`, every value of them.
    #[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
    unsafe fn pack_a_tiles(a: &Matrix, t: usize, kt: usize, out: *mut u16) {
        let rows = (t * 16)..((t * 16 + 16).min(a.rows));
        let base = a.data.as_ptr();
        // The paths below write whole tile rows (zeros past the last k) for every real row
        // and, transposed, whole columns for every real k pair; anything else is padding.
        let full = if a.col_stride == 1 {
            rows.len() == 16
        } else {
            a.row_stride == 1 && a.cols.is_multiple_of(32)
        };
        if !full {
            // SAFETY: `out` covers kt tiles.
            unsafe { std::ptr::write_bytes(out, 0, kt * TILE) };
        }
        // SAFETY (all blocks): element (i, kk) with i < rows, kk < cols is inside `a.data`
        // (caller); tile offsets stay below kt·TILE.
        if a.col_stride == 1 {
            for (r, i) in rows.enumerate() {
                for q in 0..kt {
                    let n = (a.cols - q * 32).min(32);
                    unsafe {
                        let v = simd::run32(base.add(i * a.row_stride + q * 32), n);
                        simd::store_row(out.add(q * TILE + r * 32), v);
                    }
                }
            }
        } else if a.row_stride == 1 {
            // Rows contiguous across i: pairs of k-rows, scattered into tile columns.
            let n = rows.len();
            for kk in (0..a.cols).step_by(2) {
                let (q, p) = (kk / 32, (kk % 32) / 2);
                unsafe {
                    let r0 = base.add(kk * a.col_stride + rows.start);
                    let r1 =
                        (kk + 1 < a.cols).then(|| base.add((kk + 1) * a.col_stride + rows.start));
                    simd::store_column(out.add(q * TILE + 2 * p), simd::pairs(r0, r1, n));
                }
            }
        } else {
            for (r, i) in rows.enumerate() {
                for kk in 0..a.cols {
                    let at = (kk / 32) * TILE + r * 32 + kk % 32;
                    // SAFETY: inside the kt tiles.
                    unsafe { out.add(at).write(to_bf16(a.at(i, kk))) };
                }
            }
        }
    }

    /// Packs `b` (`k × n`) into B tiles `[n/16][k/32]`, zero-padded: tile row `p` of tile
    /// `(nt, kt)` holds, for each of 16 columns `j`, the pair `b[kt·32 + 2p, j]`,
    /// `b[kt·32 + 2p + 1, j]`.
    fn pack_b(b: &Matrix, kt: usize) -> Box<[u16]> {
        let nt = b.cols.div_ceil(32) * 2;
        let mut packed = Box::<[u16]>::new_uninit_slice(nt * kt * TILE);
        packed
            .par_chunks_mut(kt * TILE)
            .enumerate()
            .for_each(|(t, tiles)| {
                let out = tiles.as_mut_ptr().cast::<u16>();
                if t * 16 >= b.cols {
                    // SAFETY: `out` covers the chunk's kt·TILE values.
                    unsafe { std::ptr::write_bytes(out, 0, kt * TILE) }; // padding tiles
                    return;
                }
                // SAFETY: as in `pack_a`.
                unsafe { pack_b_tiles(b, t, kt, out) }
            });
        // SAFETY: every chunk was written in full (tiles, or zeros for padding).
        unsafe { packed.assume_init() }
    }

    /// Writes the `kt` B tiles of 16-column group `t` at `out`, every value of them.
    #[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
    unsafe fn pack_b_tiles(b: &Matrix, t: usize, kt: usize, out: *mut u16) {
        let cols = (t * 16)..((t * 16 + 16).min(b.cols));
        let base = b.data.as_ptr();
        // As in `pack_a_tiles`: row-major writes every lane of every real k pair; the
        // column path whole tile columns (zeros past the last k) for every real column.
        let full = if b.col_stride == 1 {
            b.rows.is_multiple_of(32)
        } else {
            b.row_stride == 1 && cols.len() == 16
        };
        if !full {
            // SAFETY: `out` covers kt tiles.
            unsafe { std::ptr::write_bytes(out, 0, kt * TILE) };
        }
        // SAFETY (all blocks): as in `pack_a_tiles`.
        if b.col_stride == 1 {
            // Row-major: two k-rows interleaved make one tile row.
            let n = cols.len();
            for kk in (0..b.rows).step_by(2) {
                let (q, p) = (kk / 32, (kk % 32) / 2);
                unsafe {
                    let r0 = base.add(kk * b.row_stride + cols.start);
                    let r1 =
                        (kk + 1 < b.rows).then(|| base.add((kk + 1) * b.row_stride + cols.start));
                    simd::store_row(out.add(q * TILE + p * 32), simd::pairs(r0, r1, n));
                }
            }
        } else if b.row_stride == 1 {
            // Column-contiguous (a transposed weight): a column's k run is already in pair
            // order; it becomes one u32 column of the tile.
            for (jj, j) in cols.enumerate() {
                for q in 0..kt {
                    let n = (b.rows - q * 32).min(32);
                    unsafe {
                        let v = simd::run32(base.add(j * b.col_stride + q * 32), n);
                        simd::store_column(out.add(q * TILE + 2 * jj), v);
                    }
                }
            }
        } else {
            for (jj, j) in cols.enumerate() {
                for kk in 0..b.rows {
                    let (q, p, e) = (kk / 32, (kk % 32) / 2, kk % 2);
                    let at = q * TILE + p * 32 + 2 * jj + e;
                    // SAFETY: inside the kt tiles.
                    unsafe { out.add(at).write(to_bf16(b.at(kk, j))) };
                }
            }
        }
    }

    /// A raw pointer to `out` that rayon tasks share; each writes a disjoint block.
    #[derive(Clone, Copy)]
    struct OutPtr(*mut f32);
    // SAFETY: tasks write disjoint regions of the buffer behind it (see `product`).
    unsafe impl Send for OutPtr {}
    unsafe impl Sync for OutPtr {}

    impl OutPtr {
        fn at(self, offset: usize) -> *mut f32 {
            self.0.wrapping_add(offset)
        }
    }

    /// `out (+)= a·b`, `out` row-major `m×n`.
    ///
    /// # Safety
    /// `out` valid for `m·n` writes, and initialised when `accumulate` (without it, every
    /// value is written and none read); operands checked by the caller.
    pub unsafe fn product(a: Matrix, b: Matrix, out: *mut f32, accumulate: bool) {
        let (m, n, k) = (a.rows, b.cols, a.cols);
        if m == 0 || n == 0 {
            return;
        }
        if k == 0 {
            if !accumulate {
                // SAFETY: forwarded from the caller.
                unsafe { std::ptr::write_bytes(out, 0, m * n) };
            }
            return;
        }
        let kt = k.div_ceil(32);
        let (pa, pb) = rayon::join(|| pack_a(&a, kt), || pack_b(&b, kt));
        let (mb, nb) = (m.div_ceil(32), n.div_ceil(32));
        // Tasks: every 32-row block, its columns split so that both threads get work even
        // when there are few row blocks (a batch-1 forward, a weight gradient).
        let threads = rayon::current_num_threads().max(1);
        let splits = (4 * threads).div_ceil(mb).clamp(1, nb);
        let per = nb.div_ceil(splits);
        let dst = OutPtr(out);
        (0..mb * splits).into_par_iter().for_each(|task| {
            let (ib, s) = (task / splits, task % splits);
            let cols = (s * per)..((s + 1) * per).min(nb);
            if cols.is_empty() {
                return;
            }
            let _tiles = Tiles::configure();
            let mut c = [0f32; 1024];
            let a0 = pa[(2 * ib) * kt * TILE..].as_ptr();
            let a1 = pa[(2 * ib + 1) * kt * TILE..].as_ptr();
            for jb in cols {
                let b0 = pb[(2 * jb) * kt * TILE..].as_ptr();
                let b1 = pb[(2 * jb + 1) * kt * TILE..].as_ptr();
                // SAFETY: tiles configured above; each of a0, a1, b0, b1 starts `kt` whole
                // tiles inside its packed buffer (both padded to even tile counts).
                unsafe { block(a0, a1, b0, b1, kt, &mut c) };
                let rows = (ib * 32)..((ib * 32 + 32).min(m));
                let (j0, j1) = (jb * 32, (jb * 32 + 32).min(n));
                for (r, i) in rows.enumerate() {
                    let src = &c[r * 32..r * 32 + (j1 - j0)];
                    // SAFETY: row `i` < m, columns j0..j1 ≤ n: inside `out` (m·n values, the
                    // caller's contract); no other task writes block (ib, jb); read only when
                    // `accumulate` (initialised then).
                    unsafe {
                        if accumulate {
                            let row = std::slice::from_raw_parts_mut(dst.at(i * n + j0), j1 - j0);
                            row.iter_mut().zip(src).for_each(|(o, v)| *o += v);
                        } else {
                            std::ptr::copy_nonoverlapping(
                                src.as_ptr(),
                                dst.at(i * n + j0),
                                j1 - j0,
                            );
                        }
                    }
                }
            }
        });
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
