//! Small numeric helpers: the standard normal distribution and order statistics.

use std::f64::consts::{PI, SQRT_2};

/// Density of the standard normal distribution.
pub fn norm_pdf(z: f64) -> f64 {
    (-0.5 * z * z).exp() / (2.0 * PI).sqrt()
}

/// Cumulative distribution of the standard normal distribution.
pub fn norm_cdf(z: f64) -> f64 {
    0.5 * erfc(-z / SQRT_2)
}

/// Complementary error function (Chebyshev fit from Numerical Recipes, relative error < 1.2e-7
/// everywhere).
pub fn erfc(x: f64) -> f64 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let poly = -z * z - 1.265_512_23
        + t * (1.000_023_68
            + t * (0.374_091_96
                + t * (0.096_784_18
                    + t * (-0.186_288_06
                        + t * (0.278_868_07
                            + t * (-1.135_203_98
                                + t * (1.488_515_87 + t * (-0.822_152_23 + t * 0.170_872_77))))))));
    let r = t * poly.exp();
    if x >= 0.0 {
        r
    } else {
        2.0 - r
    }
}

/// Median as the lower median: the `ceil(n/2)`-th smallest value, so it is always the value of
/// an actual element (for an even count, the lower of the two middle values). `+inf` values sort
/// last. Empty input gives NaN.
pub fn median(values: &[f64]) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    v[(v.len() - 1) / 2]
}

/// Percentile by the nearest-rank method: the smallest value with at least `p`% of the values at or
/// below it. Empty input gives NaN.
pub fn percentile_nearest_rank(values: &[f64], p: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
    v[rank.clamp(1, v.len()) - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normal_distribution_matches_tables() {
        assert!((norm_cdf(0.0) - 0.5).abs() < 1e-7);
        assert!((norm_cdf(1.959_963_985) - 0.975).abs() < 1e-6);
        assert!((norm_cdf(-1.0) - 0.158_655_254).abs() < 1e-6);
        assert!((norm_cdf(3.0) - 0.998_650_102).abs() < 1e-6);
        assert!((norm_pdf(0.0) - 0.398_942_280).abs() < 1e-9);
        assert!((erfc(0.5) - 0.479_500_122).abs() < 1e-7);
    }

    #[test]
    fn order_statistics() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.0);
        assert_eq!(median(&[1.0, f64::INFINITY, f64::INFINITY]), f64::INFINITY);
        assert_eq!(median(&[1.0, 2.0, f64::INFINITY, f64::INFINITY]), 2.0);
        assert_eq!(
            median(&[1.0, f64::INFINITY, f64::INFINITY, f64::INFINITY]),
            f64::INFINITY
        );
        let v: Vec<f64> = (1..=10).map(f64::from).collect();
        assert_eq!(percentile_nearest_rank(&v, 90.0), 9.0);
        assert_eq!(percentile_nearest_rank(&v, 100.0), 10.0);
        assert_eq!(percentile_nearest_rank(&[5.0], 90.0), 5.0);
        assert!(median(&[]).is_nan());
    }
}
