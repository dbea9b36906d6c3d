//! The few distributions and fits the detectors need, written out so their accuracy is tested
//! here rather than assumed: Student's t tail, the binomial tail, and least-squares lines.
//!
//! Tails are computed through the regularized incomplete beta function with Lentz's continued
//! fraction (Press et al., *Numerical Recipes*, 3rd ed., §6.4) and `ln Γ` by the Lanczos
//! approximation (Lanczos 1964, g = 7, nine terms; relative error below 1e-13). Both keep their
//! relative precision far into the tails, where alerting decisions are made (p = 1e-30 is still
//! computed as such, not rounded to 0).
//!
//! ```
//! use rampart_telemetry::detect::stats::{LinearFit, student_t_sf};
//!
//! // The 97.5th percentile of Student's t with 10 degrees of freedom is 2.228.
//! assert!((student_t_sf(2.228, 10.0) - 0.025).abs() < 1e-4);
//!
//! let fit = LinearFit::fit([(0.0, 1.0), (1.0, 3.1), (2.0, 4.9), (3.0, 7.0)]).expect("four points");
//! assert!((fit.slope - 2.0).abs() < 0.05 && fit.r2 > 0.99);
//! ```

use std::f64::consts::PI;

/// `ln Γ(x)` for `x > 0` (Lanczos approximation, g = 7, n = 9).
pub fn ln_gamma(x: f64) -> f64 {
    const COEF: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    if x < 0.5 {
        // Reflection: Γ(x) Γ(1 − x) = π / sin(πx).
        return (PI / (PI * x).sin()).ln() - ln_gamma(1.0 - x);
    }
    let x = x - 1.0;
    let mut a = COEF[0];
    for (i, c) in COEF.iter().enumerate().skip(1) {
        a += c / (x + i as f64);
    }
    let t = x + 7.5;
    0.5 * (2.0 * PI).ln() + (x + 0.5) * t.ln() - t + a.ln()
}

/// The regularized incomplete beta function `I_x(a, b)` for `a, b > 0`, `0 <= x <= 1`.
pub fn beta_reg(a: f64, b: f64, x: f64) -> f64 {
    if x.is_nan() || a.is_nan() || b.is_nan() || a <= 0.0 || b <= 0.0 {
        return f64::NAN;
    }
    if x <= 0.0 {
        return 0.0;
    }
    if x >= 1.0 {
        return 1.0;
    }
    let ln_front = ln_gamma(a + b) - ln_gamma(a) - ln_gamma(b) + a * x.ln() + b * (1.0 - x).ln();
    // The continued fraction converges fast on this side of the mean; use the symmetry
    // I_x(a, b) = 1 − I_{1−x}(b, a) on the other.
    if x < (a + 1.0) / (a + b + 2.0) {
        ln_front.exp() * beta_cf(a, b, x) / a
    } else {
        1.0 - ln_front.exp() * beta_cf(b, a, 1.0 - x) / b
    }
}

/// The continued fraction of the incomplete beta function, by the modified Lentz method.
fn beta_cf(a: f64, b: f64, x: f64) -> f64 {
    const TINY: f64 = 1e-300;
    const EPS: f64 = 1e-15;
    // Convergence takes about sqrt(max(a, b)) steps; this bound covers a, b up to about 10^8.
    const MAX_STEPS: u32 = 20_000;
    let (qab, qap, qam) = (a + b, a + 1.0, a - 1.0);
    let clamp = |v: f64| if v.abs() < TINY { TINY } else { v };
    let mut c = 1.0;
    let mut d = 1.0 / clamp(1.0 - qab * x / qap);
    let mut h = d;
    for m in 1..=MAX_STEPS {
        let m = f64::from(m);
        let m2 = 2.0 * m;
        let aa = m * (b - m) * x / ((qam + m2) * (a + m2));
        d = 1.0 / clamp(1.0 + aa * d);
        c = clamp(1.0 + aa / c);
        h *= d * c;
        let aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2));
        d = 1.0 / clamp(1.0 + aa * d);
        c = clamp(1.0 + aa / c);
        let step = d * c;
        h *= step;
        if (step - 1.0).abs() < EPS {
            break;
        }
    }
    h
}

/// `P(T > t)` for Student's t distribution with `df > 0` degrees of freedom (which need not be
/// an integer, as Welch–Satterthwaite degrees of freedom are not).
pub fn student_t_sf(t: f64, df: f64) -> f64 {
    if t.is_nan() || df.is_nan() || df <= 0.0 {
        return f64::NAN;
    }
    if t.is_infinite() {
        return if t > 0.0 { 0.0 } else { 1.0 };
    }
    // P(|T| > t) = I_{df / (df + t²)}(df / 2, 1 / 2).
    let tail = 0.5 * beta_reg(df / 2.0, 0.5, df / (df + t * t));
    if t >= 0.0 { tail } else { 1.0 - tail }
}

/// `P(X >= k)` for `X ~ Binomial(n, p)`, extended to real `k` and `n` through the incomplete
/// beta function, `I_p(k, n − k + 1)`; 1 when `k <= 0`, 0 when `k > n`.
pub fn binomial_sf(k: f64, n: f64, p: f64) -> f64 {
    if k <= 0.0 {
        return 1.0;
    }
    if k > n || p <= 0.0 {
        return 0.0;
    }
    if p >= 1.0 {
        return 1.0;
    }
    beta_reg(k, n - k + 1.0, p)
}

/// An ordinary least-squares line `y = intercept + slope · x` with the usual goodness figures.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct LinearFit {
    /// Change of `y` per unit of `x`.
    pub slope: f64,
    /// `y` at `x = 0`.
    pub intercept: f64,
    /// The coefficient of determination, 0 to 1 (1 when every point is on the line; 0 when `y`
    /// does not vary).
    pub r2: f64,
    /// The standard error of the slope.
    pub slope_stderr: f64,
    /// Two-sided p-value of the slope's t-test against 0, with `n − 2` degrees of freedom (0 for
    /// points exactly on a sloped line, 1 for a flat one).
    pub p_value: f64,
    /// How many points were fitted.
    pub n: usize,
}

impl LinearFit {
    /// Fits a line through `points` (`(x, y)`); `None` with fewer than three points, with all `x`
    /// equal, or with a non-finite value.
    pub fn fit(points: impl IntoIterator<Item = (f64, f64)>) -> Option<LinearFit> {
        let points: Vec<(f64, f64)> = points.into_iter().collect();
        let n = points.len();
        if n < 3 || points.iter().any(|(x, y)| !x.is_finite() || !y.is_finite()) {
            return None;
        }
        let nf = n as f64;
        let x_mean = points.iter().map(|p| p.0).sum::<f64>() / nf;
        let y_mean = points.iter().map(|p| p.1).sum::<f64>() / nf;
        let (mut sxx, mut sxy, mut syy) = (0.0, 0.0, 0.0);
        for &(x, y) in &points {
            let (dx, dy) = (x - x_mean, y - y_mean);
            sxx += dx * dx;
            sxy += dx * dy;
            syy += dy * dy;
        }
        if sxx <= 0.0 {
            return None;
        }
        let slope = sxy / sxx;
        let intercept = y_mean - slope * x_mean;
        let ss_res = (syy - slope * sxy).max(0.0);
        let r2 = if syy > 0.0 {
            (1.0 - ss_res / syy).clamp(0.0, 1.0)
        } else {
            0.0
        };
        let df = nf - 2.0;
        let slope_stderr = (ss_res / df / sxx).sqrt();
        let p_value = if slope == 0.0 {
            1.0
        } else if slope_stderr == 0.0 || ss_res <= syy * 1e-24 {
            0.0
        } else {
            (2.0 * student_t_sf((slope / slope_stderr).abs(), df)).min(1.0)
        };
        Some(LinearFit {
            slope,
            intercept,
            r2,
            slope_stderr,
            p_value,
            n,
        })
    }

    /// The fitted `y` at `x`.
    pub fn value_at(&self, x: f64) -> f64 {
        self.intercept + self.slope * x
    }

    /// The `x` at which the line reaches `y`; `None` for a flat line.
    pub fn crossing(&self, y: f64) -> Option<f64> {
        (self.slope != 0.0).then(|| (y - self.intercept) / self.slope)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(got: f64, want: f64, rel: f64) -> bool {
        (got - want).abs() <= rel * want.abs()
    }

    #[test]
    fn ln_gamma_matches_factorials_and_half() {
        assert!(close(ln_gamma(0.5), 0.572_364_942_924_700_1, 1e-13)); // ln √π
        assert!(ln_gamma(1.0).abs() < 1e-14 && ln_gamma(2.0).abs() < 1e-14);
        assert!(close(ln_gamma(10.0), 362_880f64.ln(), 1e-13));
        assert!(close(ln_gamma(101.0), 363.739_375_555_563_5, 1e-13)); // ln 100!
        assert!(close(ln_gamma(0.1), 2.252_712_651_734_206, 1e-12));
    }

    #[test]
    fn incomplete_beta_matches_closed_forms() {
        // I_x(2, 3) = Σ_{j=2..4} C(4, j) x^j (1 − x)^{4−j}; at x = 1/2 that is 11/16.
        assert!(close(beta_reg(2.0, 3.0, 0.5), 0.6875, 1e-13));
        // I_x(1, b) = 1 − (1 − x)^b.
        assert!(close(beta_reg(1.0, 4.0, 0.2), 1.0 - 0.8f64.powi(4), 1e-13));
        // I_x(a, 1) = x^a, deep in the tail.
        assert!(close(beta_reg(30.0, 1.0, 0.01), 1e-60, 1e-10));
        assert_eq!(beta_reg(2.0, 3.0, 0.0), 0.0);
        assert_eq!(beta_reg(2.0, 3.0, 1.0), 1.0);
    }

    #[test]
    fn student_t_matches_tables() {
        // Critical values from standard t tables (upper-tail probability, df, t).
        for (p, df, t) in [
            (0.025, 1.0, 12.706_2),
            (0.05, 1.0, 6.313_8),
            (0.025, 10.0, 2.228_1),
            (0.005, 5.0, 4.032_1),
            (0.005, 30.0, 2.750_0),
            (0.0005, 20.0, 3.849_5),
            (0.05, 120.0, 1.657_7),
        ] {
            let got = student_t_sf(t, df);
            assert!(close(got, p, 2e-4), "df {df}, t {t}: {got} vs {p}");
        }
        assert_eq!(student_t_sf(0.0, 7.0), 0.5);
        assert!(close(student_t_sf(-2.228_1, 10.0), 0.975, 1e-5));
        // Reference values computed with mpmath at 30 digits, including the far tail and a
        // fractional df as Welch–Satterthwaite produces.
        for (t, df, want) in [
            (1.96, 1e6, 0.024_998_033_792_634_9),
            (30.0, 59.0, 1.007_979_895_707_802e-37),
            (8.0, 20.0, 5.828_314_135_744_261e-8),
            (6.0, 7.5, 2.079_912_035_027_338e-4),
        ] {
            let got = student_t_sf(t, df);
            assert!(close(got, want, 1e-9), "t {t}, df {df}: {got} vs {want}");
        }
    }

    #[test]
    fn student_t_keeps_precision_in_the_far_tail() {
        // df = 1 is Cauchy: P(T > t) = atan(1/t)/π for t > 0.
        for t in [0.5_f64, 3.0, 1e3, 1e6] {
            let want = (1.0 / t).atan() / PI;
            assert!(close(student_t_sf(t, 1.0), want, 1e-11), "t {t}");
        }
        // df = 2: P(T > t) = 1/2 − t / (2s) = 1 / (s (s + t)), s = sqrt(t² + 2).
        for t in [0.5, 10.0, 1e3, 1e8] {
            let s = (t * t + 2.0_f64).sqrt();
            let want = 1.0 / (s * (s + t));
            assert!(close(student_t_sf(t, 2.0), want, 1e-11), "t {t}");
        }
        // df = 4: P(T > t) = 1/2 − (3/4) u + u³/4 with u = t / s, s = sqrt(t² + 4); with
        // v = 1 − u = 4 / (s (s + t)) that is v² (3 − v) / 4, free of cancellation.
        for t in [1.0, 50.0, 1e4] {
            let s = (t * t + 4.0_f64).sqrt();
            let v = 4.0 / (s * (s + t));
            let want = 0.25 * v * v * (3.0 - v);
            assert!(close(student_t_sf(t, 4.0), want, 1e-10), "t {t}");
        }
    }

    #[test]
    fn binomial_tail_matches_sums() {
        // P(X >= 3) for Binomial(10, 1/2) = 1 − (1 + 10 + 45)/1024.
        assert!(close(binomial_sf(3.0, 10.0, 0.5), 968.0 / 1024.0, 1e-13));
        // P(X >= 10) for Binomial(10, 0.1) = 1e-10.
        assert!(close(binomial_sf(10.0, 10.0, 0.1), 1e-10, 1e-10));
        assert_eq!(binomial_sf(0.0, 10.0, 0.3), 1.0);
        assert_eq!(binomial_sf(11.0, 10.0, 0.3), 0.0);
    }

    #[test]
    fn linear_fit_recovers_lines_and_rejects_flat_noise() {
        let fit = LinearFit::fit((0..10).map(|i| (f64::from(i), 3.0 - 0.5 * f64::from(i))))
            .expect("ten points");
        assert!(close(fit.slope, -0.5, 1e-12) && close(fit.intercept, 3.0, 1e-12));
        assert!(close(fit.r2, 1.0, 1e-12) && fit.p_value == 0.0);
        assert!(close(fit.crossing(0.0).unwrap_or_default(), 6.0, 1e-12));
        // Textbook example: x = 1..5, y = 2, 4, 5, 4, 5 → slope 0.6, intercept 2.2, r² 0.6.
        let fit = LinearFit::fit([(1.0, 2.0), (2.0, 4.0), (3.0, 5.0), (4.0, 4.0), (5.0, 5.0)])
            .expect("five points");
        assert!(close(fit.slope, 0.6, 1e-12) && close(fit.intercept, 2.2, 1e-12));
        assert!(close(fit.r2, 0.6, 1e-12));
        // t = 0.6 / sqrt(2.4 / 3 / 10) = 2.1213 with 3 df: two-sided p = 0.124027 (mpmath).
        assert!(
            close(fit.p_value, 0.124_027_062_657_554_6, 1e-9),
            "{}",
            fit.p_value
        );
        // Alternating noise has no slope.
        let flat = LinearFit::fit((0..20).map(|i| (f64::from(i), f64::from(i % 2))));
        assert!(flat.is_some_and(|f| f.p_value > 0.5 && f.r2 < 0.05));
        assert!(LinearFit::fit([(1.0, 1.0), (1.0, 2.0), (1.0, 3.0)]).is_none());
        assert!(LinearFit::fit([(1.0, 1.0), (2.0, 2.0)]).is_none());
    }
}
