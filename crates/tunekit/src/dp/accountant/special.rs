//! The special functions the accountants need: erfc and log erfc, accurate far into the tail
//! (as SciPy's `special.erfc` / `special.log_ndtr`).

/// The complementary error function (musl's implementation, through `libm`).
pub fn erfc(x: f64) -> f64 {
    libm::erfc(x)
}

/// `ln erfc(x)`, accurate for large `x` where erfc underflows: the asymptotic series
/// erfc(x) ≈ e^{−x²}/(x√π) · Σₖ (−1)ᵏ (2k−1)!! / (2x²)ᵏ beyond x = 20 (relative error of the
/// truncated series below 1e-16 there).
pub fn log_erfc(x: f64) -> f64 {
    if x < 20.0 {
        return erfc(x).ln();
    }
    let inv = 1.0 / (2.0 * x * x);
    let (mut term, mut sum) = (1.0f64, 1.0f64);
    for k in 1..12 {
        term *= -f64::from(2 * k - 1) * inv;
        sum += term;
    }
    -x * x - (x * std::f64::consts::PI.sqrt()).ln() + sum.ln()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_erfc_is_continuous_where_the_series_takes_over() {
        let below = log_erfc(20.0 - 1e-9);
        let above = log_erfc(20.0);
        assert!(
            (below - above).abs() < 1e-6 * below.abs(),
            "{below} vs {above}"
        );
        // ln erfc(30) = -903.974117110643878 (mpmath, 30 digits)
        assert!((log_erfc(30.0) - (-903.974_117_110_643_9)).abs() < 1e-9);
    }
}
