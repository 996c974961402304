//! The cores' peak f32 rate, measured with a plain fused-multiply-add loop: the physical floor
//! that docs/benchmarks.md compares each training step's achieved GFLOP/s with (issue "CPU
//! speed on every machine", part 4).
//!
//! The loop keeps `ACC` independent vector accumulators (enough to hide the FMA latency of
//! every current x86 core: 4–5 cycles × 2 ports), each `a = a·b + c` on a full register, so
//! it runs at the FMA ports' throughput and touches no memory. One loop per thread, all
//! threads started together; the rate is the total FLOPs over the slowest thread's time.
//! FLOPs count 2 per lane per FMA (multiply + add), as vendors' peak figures do.

use std::time::Instant;

/// Independent accumulators per thread.
const ACC: usize = 12;

/// What [`measure`] found.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Peak {
    /// The instruction set the loop ran on: `"avx512f"`, `"avx2+fma"` or `"scalar"`.
    pub isa: &'static str,
    /// f32 lanes per FMA instruction (16, 8 or 1).
    pub lanes: usize,
    /// Threads run at once.
    pub threads: usize,
    /// Measured f32 rate of all threads together, in GFLOP/s (10⁹ floating-point operations
    /// per second).
    pub gflops: f64,
}

/// Run the FMA loop on `threads` threads for about `seconds` and return the rate.
///
/// On x86-64 the widest FMA the CPU has is used (AVX-512F, else AVX2+FMA); elsewhere a scalar
/// `mul_add` loop stands in (then `isa` says `"scalar"` and the figure is not the vector
/// peak). `threads` of 0 is treated as 1.
pub fn measure(threads: usize, seconds: f64) -> Peak {
    let threads = threads.max(1);
    let (isa, lanes) = isa();
    // Calibrate the iteration count on one thread so the timed run lasts about `seconds`.
    let mut iters: u64 = 1 << 16;
    loop {
        let t = Instant::now();
        std::hint::black_box(run(isa, iters));
        let dt = t.elapsed().as_secs_f64();
        if dt > 0.05 || iters > 1 << 34 {
            iters = ((iters as f64) * (seconds / dt.max(1e-9))).max(1.0) as u64;
            break;
        }
        iters *= 4;
    }
    let start = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| std::hint::black_box(run(isa, iters)));
        }
    });
    let dt = start.elapsed().as_secs_f64();
    let flops = 2.0 * (lanes * ACC) as f64 * iters as f64 * threads as f64;
    Peak {
        isa,
        lanes,
        threads,
        gflops: flops / dt / 1e9,
    }
}

fn isa() -> (&'static str, usize) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            return ("avx512f", 16);
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            return ("avx2+fma", 8);
        }
    }
    ("scalar", 1)
}

/// `iters` rounds of `ACC` FMAs on the given instruction set; returns a sum of the
/// accumulators so the work cannot be optimised away.
fn run(isa: &str, iters: u64) -> f32 {
    #[cfg(target_arch = "x86_64")]
    {
        if isa == "avx512f" {
            // SAFETY: `isa` is "avx512f" only when the CPU reported AVX-512F (see `isa()`).
            return unsafe { x86::fma_avx512(iters) };
        }
        if isa == "avx2+fma" {
            // SAFETY: `isa` is "avx2+fma" only when the CPU reported AVX2 and FMA.
            return unsafe { x86::fma_avx2(iters) };
        }
    }
    let _ = isa;
    let mut acc = [0.0f32; ACC];
    let (b, c) = (
        std::hint::black_box(0.999_f32),
        std::hint::black_box(1e-3_f32),
    );
    for _ in 0..iters {
        for a in &mut acc {
            *a = a.mul_add(b, c);
        }
    }
    acc.iter().sum()
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::ACC;
    use std::arch::x86_64::*;

    /// # Safety
    /// The CPU must support AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn fma_avx2(iters: u64) -> f32 {
        let b = _mm256_set1_ps(std::hint::black_box(0.999));
        let c = _mm256_set1_ps(std::hint::black_box(1e-3));
        let mut acc = [_mm256_setzero_ps(); ACC];
        for _ in 0..iters {
            for a in &mut acc {
                *a = _mm256_fmadd_ps(*a, b, c);
            }
        }
        let mut out = [0.0f32; 8];
        let mut sum = _mm256_setzero_ps();
        for a in acc {
            sum = _mm256_add_ps(sum, a);
        }
        // SAFETY: `out` holds 8 f32, the width of one unaligned 256-bit store.
        unsafe { _mm256_storeu_ps(out.as_mut_ptr(), sum) };
        out.iter().sum()
    }

    /// # Safety
    /// The CPU must support AVX-512F.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn fma_avx512(iters: u64) -> f32 {
        let b = _mm512_set1_ps(std::hint::black_box(0.999));
        let c = _mm512_set1_ps(std::hint::black_box(1e-3));
        let mut acc = [_mm512_setzero_ps(); ACC];
        for _ in 0..iters {
            for a in &mut acc {
                *a = _mm512_fmadd_ps(*a, b, c);
            }
        }
        let mut sum = _mm512_setzero_ps();
        for a in acc {
            sum = _mm512_add_ps(sum, a);
        }
        _mm512_reduce_add_ps(sum)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fma_loop_reports_a_positive_rate_for_its_isa() {
        let p = measure(1, 0.05);
        assert!(p.gflops.is_finite() && p.gflops > 0.0, "{p:?}");
        assert_eq!(p.threads, 1);
        // A vector ISA must beat one scalar FMA per nanosecond (2 GFLOP/s) by far.
        if p.lanes > 1 {
            assert!(p.gflops > 4.0, "{p:?}");
        }
    }
}
