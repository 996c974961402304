//! A small complex FFT of any length (iterative radix-2 for powers of two, Bluestein's chirp-z
//! for the rest), for the PRV accountant's self-composition. Twiddles are computed directly
//! (no recurrences) so the error stays near machine precision at a million points.

use std::f64::consts::PI;

/// A complex number.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct C {
    /// Real part.
    pub re: f64,
    /// Imaginary part.
    pub im: f64,
}

impl C {
    pub(crate) fn new(re: f64, im: f64) -> Self {
        C { re, im }
    }
    pub(crate) fn mul(self, o: C) -> C {
        C::new(
            self.re * o.re - self.im * o.im,
            self.re * o.im + self.im * o.re,
        )
    }
    fn add(self, o: C) -> C {
        C::new(self.re + o.re, self.im + o.im)
    }
    fn sub(self, o: C) -> C {
        C::new(self.re - o.re, self.im - o.im)
    }
    fn conj(self) -> C {
        C::new(self.re, -self.im)
    }
    /// `self^n` by repeated squaring.
    pub(crate) fn powu(self, mut n: u64) -> C {
        let (mut base, mut acc) = (self, C::new(1.0, 0.0));
        while n > 0 {
            if n & 1 == 1 {
                acc = acc.mul(base);
            }
            base = base.mul(base);
            n >>= 1;
        }
        acc
    }
}

/// In-place radix-2 FFT (`inverse`: e^{+2πi·jk/n}, unscaled); `x.len()` a power of two.
fn radix2(x: &mut [C], inverse: bool) {
    let n = x.len();
    let mut j = 0usize;
    for i in 1..n {
        let mut bit = n >> 1;
        while j & bit != 0 {
            j ^= bit;
            bit >>= 1;
        }
        j |= bit;
        if i < j {
            x.swap(i, j);
        }
    }
    let sign = if inverse { 1.0 } else { -1.0 };
    let twiddles: Vec<C> = (0..n / 2)
        .map(|k| {
            let a = sign * 2.0 * PI * k as f64 / n as f64;
            C::new(a.cos(), a.sin())
        })
        .collect();
    let mut len = 2;
    while len <= n {
        let stride = n / len;
        for start in (0..n).step_by(len) {
            for k in 0..len / 2 {
                let w = twiddles[k * stride];
                let u = x[start + k];
                let v = x[start + k + len / 2].mul(w);
                x[start + k] = u.add(v);
                x[start + k + len / 2] = u.sub(v);
            }
        }
        len <<= 1;
    }
}

/// The discrete Fourier transform of `x` (`inverse`: the unscaled inverse), any length.
pub fn dft(x: &[C], inverse: bool) -> Vec<C> {
    let n = x.len();
    if n <= 1 {
        return x.to_vec();
    }
    if n.is_power_of_two() {
        let mut y = x.to_vec();
        radix2(&mut y, inverse);
        return y;
    }
    // Bluestein: X_k = w_k Σ_j (x_j w_j) conj(w_{k−j}), w_k = e^{∓iπk²/n}.
    let sign = if inverse { 1.0 } else { -1.0 };
    let two_n = 2 * n as u128;
    let w: Vec<C> = (0..n)
        .map(|k| {
            let k2 = (k as u128 * k as u128) % two_n;
            let a = sign * PI * k2 as f64 / n as f64;
            C::new(a.cos(), a.sin())
        })
        .collect();
    let m = (2 * n - 1).next_power_of_two();
    let mut a = vec![C::default(); m];
    for ((ak, xk), wk) in a.iter_mut().zip(x).zip(&w) {
        *ak = xk.mul(*wk);
    }
    let mut b = vec![C::default(); m];
    b[0] = w[0].conj();
    for k in 1..n {
        b[k] = w[k].conj();
        b[m - k] = w[k].conj();
    }
    radix2(&mut a, false);
    radix2(&mut b, false);
    for (ai, bi) in a.iter_mut().zip(&b) {
        *ai = ai.mul(*bi);
    }
    radix2(&mut a, true);
    let scale = 1.0 / m as f64;
    (0..n)
        .map(|k| {
            let c = C::new(a[k].re * scale, a[k].im * scale);
            c.mul(w[k])
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(x: &[C]) -> Vec<C> {
        let n = x.len();
        (0..n)
            .map(|k| {
                x.iter().enumerate().fold(C::default(), |acc, (j, &v)| {
                    let a = -2.0 * PI * ((j * k) % n) as f64 / n as f64;
                    acc.add(v.mul(C::new(a.cos(), a.sin())))
                })
            })
            .collect()
    }

    #[test]
    fn fft_of_any_length_equals_the_naive_dft() {
        for n in [1usize, 2, 6, 8, 12, 30, 64, 100] {
            let x: Vec<C> = (0..n)
                .map(|i| C::new((i as f64 * 0.37).sin(), (i as f64 * 0.11).cos()))
                .collect();
            let (fast, slow) = (dft(&x, false), naive(&x));
            for (a, b) in fast.iter().zip(&slow) {
                assert!(
                    (a.re - b.re).abs() < 1e-10 && (a.im - b.im).abs() < 1e-10,
                    "n={n}"
                );
            }
            let back = dft(&fast, true);
            for (a, b) in back.iter().zip(&x) {
                assert!((a.re / n as f64 - b.re).abs() < 1e-12, "inverse n={n}");
            }
        }
    }
}
