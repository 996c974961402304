//! Intel AMX (tile registers, `tdpbf16ps`, `tdpbusd`) for x86-64 Linux: the tile-state
//! permission, the 32×32-block kernels in inline assembly (Rust has no stable AMX intrinsics)
//! and the operand packing of the bf16 products ([`super::bf16`]) and the int8 products
//! ([`super::quant`]).
//!
//! Measured on this project's Xeon (docs/benchmarks.md, "bf16 mixed precision"): one core runs
//! `tdpbf16ps` at ~2 TFLOP/s against 0.21 for f32 AVX-512 FMA.

use super::bf16::{Matrix, to_bf16};
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
    // SAFETY: `available()` checked AVX-512 BF16; the operand covers its extent (checked by
    // `product`'s caller), so every read is inside `a.data`; `out` covers kt tiles.
    pack(a.rows, kt, |t, out| unsafe { pack_a_tiles(a, t, kt, out) })
}

/// The packing both operands share: `groups` real 16-wide groups (rows of A, columns of B)
/// rounded up to an even count of `kt`-tile chunks, filled in parallel by `fill(group, out)`,
/// which must write all `kt` tiles at `out`; padding groups are zeros.
fn pack(real: usize, kt: usize, fill: impl Fn(usize, *mut u16) + Sync) -> Box<[u16]> {
    let groups = real.div_ceil(32) * 2;
    let mut packed = Box::<[u16]>::new_uninit_slice(groups * kt * TILE);
    packed
        .par_chunks_mut(kt * TILE)
        .enumerate()
        .for_each(|(t, tiles)| {
            let out = tiles.as_mut_ptr().cast::<u16>();
            if t * 16 >= real {
                // SAFETY: `out` covers the chunk's kt·TILE values.
                unsafe { std::ptr::write_bytes(out, 0, kt * TILE) };
            } else {
                fill(t, out);
            }
        });
    // SAFETY: every chunk was written in full (by `fill`, or zeros for padding).
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
            // SAFETY: as in "SAFETY (all blocks)" above.
            unsafe {
                let r0 = base.add(kk * a.col_stride + rows.start);
                let r1 = (kk + 1 < a.cols).then(|| base.add((kk + 1) * a.col_stride + rows.start));
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
    // SAFETY: as in `pack_a`.
    pack(b.cols, kt, |t, out| unsafe { pack_b_tiles(b, t, kt, out) })
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
                let r1 = (kk + 1 < b.rows).then(|| base.add((kk + 1) * b.row_stride + cols.start));
                simd::store_row(out.add(q * TILE + p * 32), simd::pairs(r0, r1, n));
            }
        }
    } else if b.row_stride == 1 {
        // Column-contiguous (a transposed weight): a column's k run is already in pair
        // order; it becomes one u32 column of the tile.
        for (jj, j) in cols.enumerate() {
            for q in 0..kt {
                let n = (b.rows - q * 32).min(32);
                // SAFETY: as in "SAFETY (all blocks)" above.
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
                        std::ptr::copy_nonoverlapping(src.as_ptr(), dst.at(i * n + j0), j1 - j0);
                    }
                }
            }
        }
    });
}

/// Whether [`available`] and the CPU has AMX-INT8 (leaf 7, EDX bit 25).
pub fn int8_available() -> bool {
    available() && (std::arch::x86_64::__cpuid_count(7, 0).edx >> 25) & 1 == 1
}

/// `c[32×32] = Σ_kt a · b` in i32 with `tdpbusd` (u8 × i8): `a0`/`a1` point at two 16-row
/// groups of the u8 activations (row stride `a_stride`, advancing 64 bytes per step), `b0`/
/// `b1` at the first of `kt` consecutive 1 KiB i8 weight tiles of two 16-output groups.
///
/// # Safety
/// Tiles configured on this thread; the pointers cover `kt` steps (16 rows of 64 bytes each);
/// `kt ≥ 1`.
#[inline(always)]
unsafe fn block_int8(
    (a0, a1, a_stride): (*const u8, *const u8, usize),
    (b0, b1): (*const i8, *const i8),
    kt: usize,
    c: &mut [i32; 1024],
) {
    let cp = c.as_mut_ptr();
    // SAFETY: as `block`, with i32 accumulators and byte operands.
    unsafe {
        asm!(
            "tilezero tmm0",
            "tilezero tmm1",
            "tilezero tmm2",
            "tilezero tmm3",
            "2:",
            "tileloadd tmm4, [{a0} + {sa}*1]",
            "tileloadd tmm6, [{b0} + {s}*1]",
            "tileloadd tmm7, [{b1} + {s}*1]",
            "tdpbusd tmm0, tmm4, tmm6",
            "tileloadd tmm5, [{a1} + {sa}*1]",
            "tdpbusd tmm1, tmm4, tmm7",
            "tdpbusd tmm2, tmm5, tmm6",
            "tdpbusd tmm3, tmm5, tmm7",
            "add {a0}, 64",
            "add {a1}, 64",
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
            sa = in(reg) a_stride,
            s = in(reg) 64usize,
            c = in(reg) cp,
            c2 = in(reg) cp.add(16 * 32),
            cs = in(reg) 128usize,
            options(nostack),
        );
    }
}

/// An int8 linear layer as the AMX kernel reads it (see [`int8_forward`]).
pub struct Int8Operands<'a> {
    /// Activations, u8 (+128 shift), `rows_padded × k_pad`, `rows_padded` a multiple of 32
    /// and `k_pad` of 64.
    pub xq: &'a [u8],
    /// Per-row activation scales (`rows`).
    pub xs: &'a [f32],
    /// Real rows.
    pub rows: usize,
    /// Bytes per activation row (a multiple of 64).
    pub k_pad: usize,
    /// Weights packed per 16 outputs, per 4 inputs (16 × 4 bytes): `blocks × k_pad/4 × 64`,
    /// `blocks` even.
    pub packed: &'a [i8],
    /// Real outputs.
    pub out_features: usize,
    /// Σ_k w per output, scale per output, bias per output (each ≥ `out_features` long).
    pub col_sum: &'a [i32],
    pub scale: &'a [f32],
    pub bias: &'a [f32],
}

/// `y[m][o] = (Σ_k xq[m][k]·w[o][k] − 128·Σ_k w[o][k]) · xs[m] · scale[o] + bias[o]`: the
/// int8 layer of [`super::quant`] with `tdpbusd` tiles (exact i32 sums, as its VNNI kernel).
///
/// # Panics
/// When the operands do not have the documented sizes (a bug in the caller).
pub fn int8_forward(op: &Int8Operands) -> Vec<f32> {
    let (rows, n, kp) = (op.rows, op.out_features, op.k_pad);
    let rows_padded = rows.div_ceil(32) * 32;
    let blocks = n.div_ceil(32) * 2;
    let groups = kp / 4;
    assert!(
        kp.is_multiple_of(64)
            && op.xq.len() >= rows_padded * kp
            && op.xs.len() >= rows
            && op.packed.len() >= blocks * groups * 64
            && op.col_sum.len() >= n
            && op.scale.len() >= n
            && op.bias.len() >= n,
        "int8 AMX product: operand sizes do not match"
    );
    let mut y = Box::<[f32]>::new_uninit_slice(rows * n);
    if rows == 0 || n == 0 {
        // SAFETY: empty.
        return unsafe { y.assume_init() }.into_vec();
    }
    let kt = kp / 64;
    if kt == 0 {
        // No inputs: every sum is 0 and each output is its bias.
        let mut y = Vec::with_capacity(rows * n);
        for _ in 0..rows {
            y.extend_from_slice(&op.bias[..n]);
        }
        return y;
    }
    let (mb, nb) = (rows_padded / 32, blocks / 2);
    let threads = rayon::current_num_threads().max(1);
    let splits = (4 * threads).div_ceil(mb).clamp(1, nb);
    let per = nb.div_ceil(splits);
    let dst = OutPtr(y.as_mut_ptr().cast());
    (0..mb * splits).into_par_iter().for_each(|task| {
        let (ib, s) = (task / splits, task % splits);
        let col_blocks = (s * per)..((s + 1) * per).min(nb);
        if col_blocks.is_empty() {
            return;
        }
        let _tiles = Tiles::configure();
        let mut c = [0i32; 1024];
        let a0 = op.xq[ib * 32 * kp..].as_ptr();
        let a1 = op.xq[(ib * 32 + 16) * kp..].as_ptr();
        for jb in col_blocks {
            let b0 = op.packed[(2 * jb) * groups * 64..].as_ptr();
            let b1 = op.packed[(2 * jb + 1) * groups * 64..].as_ptr();
            // SAFETY: tiles configured; the activation rows ib·32.. are padded to 32 rows of
            // kp bytes, the weight blocks hold kt 1 KiB tiles each (sizes asserted).
            unsafe { block_int8((a0, a1, kp), (b0, b1), kt, &mut c) };
            let m_rows = (ib * 32)..((ib * 32 + 32).min(rows));
            let (j0, j1) = (jb * 32, (jb * 32 + 32).min(n));
            for (r, m) in m_rows.enumerate() {
                let mut row = [0f32; 32];
                let w = j1 - j0;
                // SAFETY: every AMX CPU has AVX-512 F and FMA (`int8_available` holds).
                unsafe {
                    rescale(
                        &c[r * 32..r * 32 + w],
                        op.xs[m],
                        (&op.col_sum[j0..j1], &op.scale[j0..j1], &op.bias[j0..j1]),
                        &mut row[..w],
                    )
                };
                // SAFETY: row m < rows, columns j0..j1 ≤ n: inside the output; this task
                // alone writes block (ib, jb).
                unsafe { std::ptr::copy_nonoverlapping(row.as_ptr(), dst.at(m * n + j0), w) };
            }
        }
    });
    // SAFETY: every (m, o) with m < rows, o < n was written by the task of its block.
    unsafe { y.assume_init() }.into_vec()
}

/// `y = (acc − 128·Σw) · s_x · s_w + b` for one row of a block (the VNNI kernel's epilogue,
/// same arithmetic: one multiply, one fused multiply-add).
///
/// # Safety
/// AVX-512 F and FMA available.
#[target_feature(enable = "avx512f,fma")]
unsafe fn rescale(
    acc: &[i32],
    sx: f32,
    (col_sum, scale, bias): (&[i32], &[f32], &[f32]),
    y: &mut [f32],
) {
    for ((((o, &a), &cs), &ws), &b) in y.iter_mut().zip(acc).zip(col_sum).zip(scale).zip(bias) {
        *o = ((a - 128 * cs) as f32 * sx).mul_add(ws, b);
    }
}
