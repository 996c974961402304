//! The int8 product on AVX2 (every x86-64 CPU since Haswell / Zen 1) and on AVX-VNNI (Alder
//! Lake, Zen 5 client …: the VEX-encoded `vpdpbusd` on 256-bit registers).
//!
//! AVX2 has no u8×i8 dot product into i32; fbgemm and oneDNN build one from `vpmaddubsw`
//! (u8×i8 products, adjacent pairs summed into **saturating** i16) and `vpmaddwd` with ones
//! (adjacent i16 pairs summed into i32). A pair of products of a u8 activation shifted by +128
//! (up to 255) and an int8 weight (up to 127) reaches 2·255·127 = 64 770, past i16's 32 767,
//! so the sums would clip. fbgemm avoids that by quantising activations to 7 bits
//! (`reduce_range`), which doubles their rounding error. Here the activations keep all 8 bits
//! and the sums stay exact by the sign trick (as ggml's AVX2 dot products): the product
//! `a·w` is computed as `|a| · (sign(a)·w)` — `vpabsb` and `vpsignb` — so the u8 operand is
//! `|a| ≤ 127` and the i8 operand `|w| ≤ 127`, a pair at most 2·127·127 = 32 258. The i32 sums
//! are then exactly those of the portable path (minus its +128 shift, which is not applied
//! here), and the outputs are the same bits. `vpsignb` cannot negate −128, so a layer whose
//! stored weights hold −128 (never written by [`super::QuantLinear::quantize`], which clamps
//! to ±127, but possible in a file) takes the portable path instead
//! ([`super::QuantLinear::forward`] checks).
//!
//! Blocking for AVX2's 16 registers: a tile is 4 rows × 16 outputs (two 8-lane halves of one
//! packed VNNI block, the same packing as the AVX-512 kernel), 8 accumulators, 2 weight
//! registers, the broadcast activations and the constants. Rows are taken 32 at a time and all
//! output blocks swept for them, so a block's weights (16 × k bytes) stay in L1 while the 32
//! rows' activations stay in L2.

use super::{GROUP, LANES, QuantLinear, SharedOut};
use std::arch::x86_64::*;

/// Rows per tile.
const MR: usize = 4;
/// Rows swept over every output block before moving on (activations kept in L2).
const MC: usize = 32;
/// 256-bit halves of a packed 16-output block.
const HALF: usize = LANES / 2;

/// Which 256-bit instruction forms the u8×i8 dot product.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Dot {
    /// `vpabsb`/`vpsignb` + `vpmaddubsw` + `vpmaddwd` (AVX2).
    Avx2,
    /// `vpdpbusd` (AVX-VNNI) on the +128-shifted activations.
    AvxVnni,
}

impl QuantLinear {
    /// `y` for all `rows` with the AVX2 / AVX-VNNI kernel, split over rayon's threads like the
    /// AVX-512 one (by rows when there are many, else by output blocks).
    ///
    /// # Safety
    /// The CPU has AVX2 and FMA, and AVX-VNNI when `dot` is [`Dot::AvxVnni`]; for
    /// [`Dot::Avx2`] no weight is −128.
    pub(super) unsafe fn forward_avx2(
        &self,
        xq: &[u8],
        xs: &[f32],
        rows: usize,
        dot: Dot,
    ) -> Vec<f32> {
        use rayon::prelude::*;
        let n = self.out_features;
        let blocks = n.div_ceil(LANES);
        let mut y = vec![0.0f32; rows * n];
        let out = SharedOut(y.as_mut_ptr());
        let threads = rayon::current_num_threads().max(1);
        let run = |m0: usize, m1: usize, b0: usize, b1: usize| {
            // SAFETY: the caller's guarantees; each task writes only rows m0..m1 × the
            // outputs of blocks b0..b1.
            unsafe {
                match dot {
                    Dot::Avx2 => self.sweep::<false>(xq, xs, m0, m1, b0, b1, &out),
                    Dot::AvxVnni => self.sweep::<true>(xq, xs, m0, m1, b0, b1, &out),
                }
            }
        };
        if rows >= MC * threads {
            let per = rows.div_ceil(4 * threads * MR) * MR;
            let starts: Vec<usize> = (0..rows).step_by(per).collect();
            starts
                .par_iter()
                .for_each(|&m0| run(m0, (m0 + per).min(rows), 0, blocks));
        } else {
            let per = blocks.div_ceil(2 * threads).max(1);
            let starts: Vec<usize> = (0..blocks).step_by(per).collect();
            starts
                .par_iter()
                .for_each(|&b0| run(0, rows, b0, (b0 + per).min(blocks)));
        }
        y
    }

    /// Rows `m0..m1` × blocks `b0..b1`: for each 32 rows, every block, 4 rows at a time.
    #[allow(clippy::too_many_arguments)]
    unsafe fn sweep<const VNNI: bool>(
        &self,
        xq: &[u8],
        xs: &[f32],
        m0: usize,
        m1: usize,
        b0: usize,
        b1: usize,
        out: &SharedOut,
    ) {
        let mut mc = m0;
        while mc < m1 {
            let mc_end = (mc + MC).min(m1);
            for b in b0..b1 {
                let mut m = mc;
                while m < mc_end {
                    // SAFETY: as for `tile_avx2`; rows m..m+r < m1 and block b < b1 exist.
                    unsafe {
                        match (mc_end - m, VNNI) {
                            (1, false) => self.tile_avx2::<1>(xq, xs, m, b, out),
                            (2, false) => self.tile_avx2::<2>(xq, xs, m, b, out),
                            (3, false) => self.tile_avx2::<3>(xq, xs, m, b, out),
                            (_, false) => self.tile_avx2::<MR>(xq, xs, m, b, out),
                            (1, true) => self.tile_vnni::<1>(xq, xs, m, b, out),
                            (2, true) => self.tile_vnni::<2>(xq, xs, m, b, out),
                            (3, true) => self.tile_vnni::<3>(xq, xs, m, b, out),
                            (_, true) => self.tile_vnni::<MR>(xq, xs, m, b, out),
                        }
                    }
                    m += MR;
                }
            }
            mc = mc_end;
        }
    }

    /// Rows `m..m+R` × the 16 outputs of block `b`, AVX2 sign-trick products (exact i32).
    #[target_feature(enable = "avx2,fma")]
    unsafe fn tile_avx2<const R: usize>(
        &self,
        xq: &[u8],
        xs: &[f32],
        m: usize,
        b: usize,
        out: &SharedOut,
    ) {
        let kp = self.k_pad;
        let groups = kp / GROUP;
        // SAFETY: rows m..m+R exist in `xq` (k_pad bytes each, 4 read per group at
        // g·4 < k_pad); block b exists in `self.packed` (64 bytes per group, two 32-byte
        // halves read); the epilogue's reads and stores are as `store` states.
        unsafe {
            let w = self.packed.as_ptr().add(b * groups * LANES * GROUP);
            let x = xq.as_ptr();
            let flip = _mm256_set1_epi8(-128);
            let ones = _mm256_set1_epi16(1);
            let mut acc = [[_mm256_setzero_si256(); 2]; R];
            for g in 0..groups {
                let w0 = _mm256_loadu_si256(w.add(g * LANES * GROUP) as *const __m256i);
                let w1 = _mm256_loadu_si256(w.add(g * LANES * GROUP + 32) as *const __m256i);
                for (i, row) in acc.iter_mut().enumerate() {
                    let p = x.add((m + i) * kp + g * GROUP) as *const i32;
                    // The stored u8 is a + 128: flipping the top bit gives a as i8.
                    let a = _mm256_xor_si256(_mm256_set1_epi32(p.read_unaligned()), flip);
                    let abs = _mm256_abs_epi8(a);
                    let p0 = _mm256_maddubs_epi16(abs, _mm256_sign_epi8(w0, a));
                    let p1 = _mm256_maddubs_epi16(abs, _mm256_sign_epi8(w1, a));
                    row[0] = _mm256_add_epi32(row[0], _mm256_madd_epi16(p0, ones));
                    row[1] = _mm256_add_epi32(row[1], _mm256_madd_epi16(p1, ones));
                }
            }
            self.store::<R, false>(&acc, xs, m, b, out);
        }
    }

    /// As [`Self::tile_avx2`] with AVX-VNNI's `vpdpbusd` on the shifted activations (the shift is
    /// removed in [`Self::store`] with the weights' column sums).
    #[target_feature(enable = "avx2,fma,avxvnni")]
    unsafe fn tile_vnni<const R: usize>(
        &self,
        xq: &[u8],
        xs: &[f32],
        m: usize,
        b: usize,
        out: &SharedOut,
    ) {
        let kp = self.k_pad;
        let groups = kp / GROUP;
        // SAFETY: as for `tile_avx2`.
        unsafe {
            let w = self.packed.as_ptr().add(b * groups * LANES * GROUP);
            let x = xq.as_ptr();
            let mut acc = [[_mm256_setzero_si256(); 2]; R];
            for g in 0..groups {
                let w0 = _mm256_loadu_si256(w.add(g * LANES * GROUP) as *const __m256i);
                let w1 = _mm256_loadu_si256(w.add(g * LANES * GROUP + 32) as *const __m256i);
                for (i, row) in acc.iter_mut().enumerate() {
                    let p = x.add((m + i) * kp + g * GROUP) as *const i32;
                    let a = _mm256_set1_epi32(p.read_unaligned());
                    row[0] = _mm256_dpbusd_avx_epi32(row[0], a, w0);
                    row[1] = _mm256_dpbusd_avx_epi32(row[1], a, w1);
                }
            }
            self.store::<R, true>(&acc, xs, m, b, out);
        }
    }

    /// `y = (acc [− 128·Σw]) · s_x · s_w + bias` for rows `m..m+R` × block `b`, the same
    /// operations in the same order as the portable path; outputs ≥ n are not written.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn store<const R: usize, const SHIFTED: bool>(
        &self,
        acc: &[[__m256i; 2]; R],
        xs: &[f32],
        m: usize,
        b: usize,
        out: &SharedOut,
    ) {
        let n = self.out_features;
        for h in 0..2 {
            let o = b * LANES + h * HALF;
            if o >= n {
                return;
            }
            let valid = (n - o).min(HALF);
            // SAFETY: the padded per-output vectors hold whole blocks (o + 8 ≤ their length);
            // rows m+i < rows have `xs` entries; stores go to y[(m+i)·n + o ..][..valid],
            // inside `y` (rows × n) and inside this task's region.
            unsafe {
                let ws = _mm256_loadu_ps(self.scale_pad.as_ptr().add(o));
                let bias = _mm256_loadu_ps(self.bias_pad.as_ptr().add(o));
                let cs = _mm256_slli_epi32(
                    _mm256_loadu_si256(self.col_sum_pad.as_ptr().add(o) as *const __m256i),
                    7,
                );
                for (i, row) in acc.iter().enumerate() {
                    let v = if SHIFTED {
                        _mm256_sub_epi32(row[h], cs)
                    } else {
                        row[h]
                    };
                    let sx = _mm256_set1_ps(*xs.get_unchecked(m + i));
                    let yv = _mm256_fmadd_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(v), sx), ws, bias);
                    let dst = out.0.add((m + i) * n + o);
                    if valid == HALF {
                        _mm256_storeu_ps(dst, yv);
                    } else {
                        let mut tmp = [0.0f32; HALF];
                        _mm256_storeu_ps(tmp.as_mut_ptr(), yv);
                        std::ptr::copy_nonoverlapping(tmp.as_ptr(), dst, valid);
                    }
                }
            }
        }
    }
}
