//! Gaussian-process regression with a Matérn-5/2 kernel, one length scale per input (ARD), a
//! constant prior mean and Gaussian observation noise, on `nalgebra`'s Cholesky factorization.
//!
//! [`Gp`] conditions on data with fixed hyperparameters; [`fit`] standardizes the outputs and picks
//! the hyperparameters by maximizing the log marginal likelihood. The signal variance is profiled
//! out in closed form (for fixed length scales and noise-to-signal ratio `g`, the best signal
//! variance is `yᵀ(C + gI)⁻¹y / n`), so the search runs over the log length scales and `log g`
//! only: a small grid of starts, then a coordinate search with a shrinking step from the best
//! starts. By default Gaussian priors on `ln ℓ_i` and `ln g` are added to the likelihood (a MAP
//! fit; see [`FitOptions`]). The inputs are expected in `[0, 1]^d` (see [`super::space`]).

use nalgebra::{Cholesky, DMatrix, DVector, Dyn};

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum GpError {
    #[error("no training points")]
    NoData,
    #[error("training inputs have {got} dimensions, expected {want}")]
    Dimension { got: usize, want: usize },
    #[error("{inputs} inputs but {outputs} outputs")]
    Length { inputs: usize, outputs: usize },
    #[error("training data contain a value that is not finite")]
    NotFinite,
    #[error("invalid hyperparameters: {0}")]
    Hyper(String),
    #[error("the kernel matrix is not positive definite even with jitter")]
    NotPositiveDefinite,
}

/// Hyperparameters of the Matérn-5/2 kernel plus noise.
#[derive(Debug, Clone, PartialEq)]
pub struct GpHyper {
    /// One length scale per input dimension (ARD).
    pub length_scales: Vec<f64>,
    /// Kernel variance `σ_f²` (the prior variance of the latent function).
    pub signal_var: f64,
    /// Observation noise variance `σ_n²`.
    pub noise_var: f64,
}

/// Matérn-5/2 covariance: `σ² (1 + √5 r + 5r²/3) exp(-√5 r)` with `r² = Σ ((a_i - b_i)/ℓ_i)²`.
pub fn matern52(a: &[f64], b: &[f64], length_scales: &[f64], signal_var: f64) -> f64 {
    let r2: f64 = a
        .iter()
        .zip(b)
        .zip(length_scales)
        .map(|((x, y), l)| {
            let d = (x - y) / l;
            d * d
        })
        .sum();
    let s5r = (5.0 * r2).sqrt();
    signal_var * (1.0 + s5r + 5.0 * r2 / 3.0) * (-s5r).exp()
}

/// Posterior of the latent function at one point.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Prediction {
    pub mean: f64,
    /// Variance of the latent function (observation noise not included), never negative.
    pub var: f64,
}

impl Prediction {
    pub fn std(&self) -> f64 {
        self.var.max(0.0).sqrt()
    }
}

/// A GP conditioned on data with fixed hyperparameters.
#[derive(Debug, Clone)]
pub struct Gp {
    x: Vec<Vec<f64>>,
    hyper: GpHyper,
    prior_mean: f64,
    chol: Cholesky<f64, Dyn>,
    alpha: DVector<f64>,
    lml: f64,
}

fn validate(x: &[Vec<f64>], y: &[f64]) -> Result<usize, GpError> {
    if x.is_empty() {
        return Err(GpError::NoData);
    }
    if x.len() != y.len() {
        return Err(GpError::Length {
            inputs: x.len(),
            outputs: y.len(),
        });
    }
    let d = x[0].len();
    if let Some(p) = x.iter().find(|p| p.len() != d) {
        return Err(GpError::Dimension {
            got: p.len(),
            want: d,
        });
    }
    if !y.iter().chain(x.iter().flatten()).all(|v| v.is_finite()) {
        return Err(GpError::NotFinite);
    }
    Ok(d)
}

/// Kernel matrix of `x` plus `noise` on the diagonal, factorized, adding jitter if needed.
fn factorize(
    x: &[Vec<f64>],
    ls: &[f64],
    signal_var: f64,
    noise: f64,
) -> Result<Cholesky<f64, Dyn>, GpError> {
    let n = x.len();
    let mut k = DMatrix::<f64>::zeros(n, n);
    for i in 0..n {
        for j in 0..=i {
            let v = if i == j {
                signal_var
            } else {
                matern52(&x[i], &x[j], ls, signal_var)
            };
            k[(i, j)] = v;
            k[(j, i)] = v;
        }
    }
    let mut jitter = 0.0;
    loop {
        let mut m = k.clone();
        for i in 0..n {
            m[(i, i)] += noise + jitter;
        }
        if let Some(c) = Cholesky::new(m) {
            return Ok(c);
        }
        jitter = if jitter == 0.0 {
            1e-10 * signal_var.max(1e-300)
        } else {
            jitter * 10.0
        };
        if jitter > 1e-3 * signal_var {
            return Err(GpError::NotPositiveDefinite);
        }
    }
}

impl Gp {
    /// Condition on `(x, y)` with the given hyperparameters and constant prior mean.
    pub fn new(
        x: &[Vec<f64>],
        y: &[f64],
        hyper: GpHyper,
        prior_mean: f64,
    ) -> Result<Self, GpError> {
        let d = validate(x, y)?;
        if hyper.length_scales.len() != d {
            return Err(GpError::Hyper(format!(
                "{} length scales for {d} dimensions",
                hyper.length_scales.len()
            )));
        }
        let positive = |v: f64| v.is_finite() && v > 0.0;
        let valid = hyper.length_scales.iter().all(|&l| positive(l))
            && positive(hyper.signal_var)
            && hyper.noise_var.is_finite()
            && hyper.noise_var >= 0.0;
        if !valid {
            return Err(GpError::Hyper(format!("{hyper:?}")));
        }
        let chol = factorize(x, &hyper.length_scales, hyper.signal_var, hyper.noise_var)?;
        let r = DVector::from_iterator(y.len(), y.iter().map(|v| v - prior_mean));
        let alpha = chol.solve(&r);
        let n = y.len() as f64;
        let log_det: f64 = chol
            .l_dirty()
            .diagonal()
            .iter()
            .map(|v| v.ln())
            .sum::<f64>()
            * 2.0;
        let lml =
            -0.5 * r.dot(&alpha) - 0.5 * log_det - 0.5 * n * (2.0 * std::f64::consts::PI).ln();
        Ok(Self {
            x: x.to_vec(),
            hyper,
            prior_mean,
            chol,
            alpha,
            lml,
        })
    }

    pub fn hyper(&self) -> &GpHyper {
        &self.hyper
    }

    /// `log p(y | X, θ)`.
    pub fn log_marginal_likelihood(&self) -> f64 {
        self.lml
    }

    /// Posterior mean and variance of the latent function at each of `points`.
    pub fn predict_many(&self, points: &[Vec<f64>]) -> Vec<Prediction> {
        if points.is_empty() {
            return Vec::new();
        }
        let n = self.x.len();
        let m = points.len();
        let (ls, sv) = (&self.hyper.length_scales, self.hyper.signal_var);
        let mut ks = DMatrix::<f64>::zeros(n, m);
        for (j, p) in points.iter().enumerate() {
            for (i, xi) in self.x.iter().enumerate() {
                ks[(i, j)] = matern52(xi, p, ls, sv);
            }
        }
        let mean = ks.tr_mul(&self.alpha);
        let l = self.chol.l();
        let v = l
            .solve_lower_triangular(&ks)
            .expect("Cholesky factor has a positive diagonal");
        (0..m)
            .map(|j| {
                let vv = v.column(j).norm_squared();
                Prediction {
                    mean: self.prior_mean + mean[j],
                    var: (sv - vv).max(0.0),
                }
            })
            .collect()
    }

    pub fn predict(&self, point: &[f64]) -> Prediction {
        self.predict_many(&[point.to_vec()])[0]
    }
}

/// Bounds and starts for hyperparameter fitting, in the units of normalized inputs and
/// standardized outputs.
#[derive(Debug, Clone, PartialEq)]
pub struct FitOptions {
    /// Smallest and largest length scale.
    pub length_scale_bounds: (f64, f64),
    /// Smallest and largest noise-to-signal variance ratio.
    pub noise_ratio_bounds: (f64, f64),
    /// Length scales tried as starting points (every combination across dimensions up to three
    /// dimensions, the same value in every dimension above that).
    pub length_scale_starts: Vec<f64>,
    /// Noise ratios tried as starting points.
    pub noise_ratio_starts: Vec<f64>,
    /// How many of the best starts are refined by coordinate search.
    pub refine: usize,
    /// Above this many points, a fit with a warm start refines only the warm start (with a
    /// smaller first step) instead of searching from every start: the hyperparameters change
    /// little once there is that much data, and each likelihood costs O(n³).
    pub full_search_up_to: usize,
    /// Gaussian prior on each `ln ℓ_i`: (mean, standard deviation); `None` for none. With a
    /// prior the fit maximizes the log marginal likelihood plus the log prior (a MAP estimate),
    /// which keeps a handful of points from choosing an extreme length scale (a tiny one makes
    /// every unmeasured point look unknown, a huge one a plane). Default `N(0, 1)`: length
    /// scales around the width of the normalized space, within a factor e² ≈ 7 either way at 95%.
    pub length_scale_prior: Option<(f64, f64)>,
    /// Gaussian prior on `ln g`, the noise-to-signal variance ratio; `None` for none. Default
    /// `N(−5, 2)`: noise around 0.7% of the signal variance (measured means of a few runs are
    /// not exact), from 0.01% to 37% at 95%, so that neither interpolating every wiggle nor
    /// calling most of the signal noise is the cheap explanation of a few points.
    pub noise_ratio_prior: Option<(f64, f64)>,
}

impl Default for FitOptions {
    fn default() -> Self {
        Self {
            length_scale_bounds: (0.05, 20.0),
            noise_ratio_bounds: (1e-6, 1.0),
            length_scale_starts: vec![0.15, 0.5, 1.5],
            noise_ratio_starts: vec![1e-4, 1e-2],
            refine: 2,
            full_search_up_to: 30,
            length_scale_prior: Some((0.0, 1.0)),
            noise_ratio_prior: Some((-5.0, 2.0)),
        }
    }
}

impl FitOptions {
    /// The defaults without priors: plain maximum likelihood (type-II).
    pub fn maximum_likelihood() -> Self {
        Self {
            length_scale_prior: None,
            noise_ratio_prior: None,
            ..Self::default()
        }
    }
}

/// A GP whose hyperparameters were fit to the data, on standardized outputs.
#[derive(Debug, Clone)]
pub struct FittedGp {
    gp: Gp,
    y_mean: f64,
    y_scale: f64,
    /// Noise-to-signal ratio chosen by the fit.
    noise_ratio: f64,
}

impl FittedGp {
    /// Posterior of the latent function in the original output units.
    pub fn predict_many(&self, points: &[Vec<f64>]) -> Vec<Prediction> {
        self.gp
            .predict_many(points)
            .into_iter()
            .map(|p| Prediction {
                mean: self.y_mean + self.y_scale * p.mean,
                var: p.var * self.y_scale * self.y_scale,
            })
            .collect()
    }

    pub fn predict(&self, point: &[f64]) -> Prediction {
        self.predict_many(&[point.to_vec()])[0]
    }

    /// Hyperparameters in standardized output units.
    pub fn hyper(&self) -> &GpHyper {
        self.gp.hyper()
    }

    pub fn noise_ratio(&self) -> f64 {
        self.noise_ratio
    }

    /// Log marginal likelihood of the standardized outputs.
    pub fn log_marginal_likelihood(&self) -> f64 {
        self.gp.log_marginal_likelihood()
    }
}

/// Profile log marginal likelihood at log length scales and log noise ratio `theta`
/// (`theta = [ln ℓ_1, ..., ln ℓ_d, ln g]`); returns the likelihood and the profiled signal variance.
fn profile_lml(x: &[Vec<f64>], y: &DVector<f64>, theta: &[f64]) -> Option<(f64, f64)> {
    let d = theta.len() - 1;
    let ls: Vec<f64> = theta[..d].iter().map(|v| v.exp()).collect();
    let g = theta[d].exp();
    let chol = factorize(x, &ls, 1.0, g).ok()?;
    let alpha = chol.solve(y);
    let n = y.len() as f64;
    let s2 = (y.dot(&alpha) / n).max(1e-12);
    let half_log_det: f64 = chol.l_dirty().diagonal().iter().map(|v| v.ln()).sum();
    let lml =
        -0.5 * n * s2.ln() - half_log_det - 0.5 * n * (1.0 + (2.0 * std::f64::consts::PI).ln());
    lml.is_finite().then_some((lml, s2))
}

/// Standardize `y`, then choose hyperparameters by maximizing the (profile) log marginal
/// likelihood plus the log prior of [`FitOptions`] (when set). `warm_start` (length scales and noise ratio from an earlier fit) is added to the
/// starting points when given.
pub fn fit(
    x: &[Vec<f64>],
    y: &[f64],
    opts: &FitOptions,
    warm_start: Option<(&[f64], f64)>,
) -> Result<FittedGp, GpError> {
    let d = validate(x, y)?;
    let n = y.len() as f64;
    let y_mean = y.iter().sum::<f64>() / n;
    let var = y.iter().map(|v| (v - y_mean).powi(2)).sum::<f64>() / n;
    let y_scale = if var > 1e-300 { var.sqrt() } else { 1.0 };
    let ys: Vec<f64> = y.iter().map(|v| (v - y_mean) / y_scale).collect();
    let yv = DVector::from_vec(ys.clone());

    let (l_lo, l_hi) = (
        opts.length_scale_bounds.0.ln(),
        opts.length_scale_bounds.1.ln(),
    );
    let (g_lo, g_hi) = (
        opts.noise_ratio_bounds.0.ln(),
        opts.noise_ratio_bounds.1.ln(),
    );
    let log_prior = |theta: &[f64]| -> f64 {
        let gauss = |v: f64, (m, sd): (f64, f64)| -0.5 * ((v - m) / sd).powi(2);
        let ls: f64 = opts
            .length_scale_prior
            .map_or(0.0, |p| theta[..d].iter().map(|&v| gauss(v, p)).sum());
        let g = opts.noise_ratio_prior.map_or(0.0, |p| gauss(theta[d], p));
        ls + g
    };
    let objective = |theta: &[f64]| -> Option<f64> {
        profile_lml(x, &yv, theta).map(|(l, _)| l + log_prior(theta))
    };
    let clamp = |theta: &mut [f64]| {
        for v in theta[..d].iter_mut() {
            *v = v.clamp(l_lo, l_hi);
        }
        theta[d] = theta[d].clamp(g_lo, g_hi);
    };

    let warm_theta = warm_start
        .filter(|(ls, g)| ls.len() == d && *g > 0.0)
        .map(|(ls, g)| {
            let mut t: Vec<f64> = ls.iter().map(|v| v.ln()).collect();
            t.push(g.ln());
            t
        });
    let incremental = warm_theta.is_some() && y.len() > opts.full_search_up_to;

    // Starting points.
    let mut starts: Vec<Vec<f64>> = Vec::new();
    let ls_starts: Vec<f64> = opts.length_scale_starts.iter().map(|v| v.ln()).collect();
    let combos: Vec<Vec<f64>> = if d <= 3 {
        let mut acc: Vec<Vec<f64>> = vec![Vec::new()];
        for _ in 0..d {
            acc = acc
                .into_iter()
                .flat_map(|p| {
                    ls_starts.iter().map(move |&l| {
                        let mut q = p.clone();
                        q.push(l);
                        q
                    })
                })
                .collect();
        }
        acc
    } else {
        ls_starts.iter().map(|&l| vec![l; d]).collect()
    };
    if !incremental {
        for c in &combos {
            for g in &opts.noise_ratio_starts {
                let mut t = c.clone();
                t.push(g.ln());
                starts.push(t);
            }
        }
    }
    starts.extend(warm_theta);
    let mut scored: Vec<(f64, Vec<f64>)> = starts
        .into_iter()
        .filter_map(|mut t| {
            clamp(&mut t);
            objective(&t).map(|l| (l, t))
        })
        .collect();
    scored.sort_by(|a, b| b.0.total_cmp(&a.0));
    scored.truncate(opts.refine.max(1));

    let mut best: Option<(f64, Vec<f64>)> = None;
    for (mut cur_l, mut cur) in scored {
        let mut step = if incremental { 0.25 } else { 1.0 };
        while step > 0.06 {
            let mut improved = false;
            for i in 0..=d {
                for dir in [1.0, -1.0] {
                    let mut t = cur.clone();
                    t[i] += dir * step;
                    clamp(&mut t);
                    if t[i] == cur[i] {
                        continue;
                    }
                    if let Some(l) = objective(&t) {
                        if l > cur_l + 1e-9 {
                            cur_l = l;
                            cur = t;
                            improved = true;
                            break;
                        }
                    }
                }
            }
            if !improved {
                step *= 0.5;
            }
        }
        if best.as_ref().is_none_or(|(bl, _)| cur_l > *bl) {
            best = Some((cur_l, cur));
        }
    }
    let (_, theta) = best.ok_or(GpError::NotPositiveDefinite)?;
    let (_, s2) = profile_lml(x, &yv, &theta).ok_or(GpError::NotPositiveDefinite)?;
    let g = theta[d].exp();
    let hyper = GpHyper {
        length_scales: theta[..d].iter().map(|v| v.exp()).collect(),
        signal_var: s2,
        noise_var: g * s2,
    };
    let gp = Gp::new(x, &ys, hyper, 0.0)?;
    Ok(FittedGp {
        gp,
        y_mean,
        y_scale,
        noise_ratio: g,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hyper(ls: &[f64], sv: f64, nv: f64) -> GpHyper {
        GpHyper {
            length_scales: ls.to_vec(),
            signal_var: sv,
            noise_var: nv,
        }
    }

    #[test]
    fn matern_closed_form_values() {
        assert_eq!(matern52(&[0.3], &[0.3], &[0.5], 2.0), 2.0);
        // r = 1: (1 + √5 + 5/3) e^{-√5}
        let want = (1.0 + 5f64.sqrt() + 5.0 / 3.0) * (-(5f64.sqrt())).exp();
        assert!((matern52(&[0.0], &[0.5], &[0.5], 1.0) - want).abs() < 1e-14);
        // ARD: r² = (0.2/0.1)² + (0.3/1.0)²
        let r = (4.0f64 + 0.09).sqrt();
        let s5r = 5f64.sqrt() * r;
        let want = 3.0 * (1.0 + s5r + 5.0 * r * r / 3.0) * (-s5r).exp();
        assert!((matern52(&[0.0, 0.0], &[0.2, 0.3], &[0.1, 1.0], 3.0) - want).abs() < 1e-14);
    }

    #[test]
    fn one_point_posterior_and_likelihood_in_closed_form() {
        let (sv, nv, y1, m) = (1.5, 0.1, 2.0, 0.5);
        let gp = Gp::new(&[vec![0.2]], &[y1], hyper(&[0.3], sv, nv), m).unwrap();
        let xs = 0.5;
        let k = matern52(&[xs], &[0.2], &[0.3], sv);
        let p = gp.predict(&[xs]);
        assert!((p.mean - (m + k / (sv + nv) * (y1 - m))).abs() < 1e-12);
        assert!((p.var - (sv - k * k / (sv + nv))).abs() < 1e-12);
        let s = sv + nv;
        let lml = -0.5 * (y1 - m).powi(2) / s - 0.5 * (2.0 * std::f64::consts::PI * s).ln();
        assert!((gp.log_marginal_likelihood() - lml).abs() < 1e-12);
    }

    #[test]
    fn two_point_posterior_matches_explicit_inverse() {
        let x = [vec![0.0, 0.0], vec![0.4, 0.1]];
        let y = [1.0, -1.0];
        let h = hyper(&[0.5, 0.2], 1.0, 0.01);
        let gp = Gp::new(&x, &y, h.clone(), 0.0).unwrap();
        let k12 = matern52(&x[0], &x[1], &h.length_scales, 1.0);
        let (a, b, c) = (1.01, k12, 1.01);
        let det = a * c - b * b;
        let inv = [[c / det, -b / det], [-b / det, a / det]];
        let xs = [0.1, 0.05];
        let ks = [
            matern52(&xs, &x[0], &h.length_scales, 1.0),
            matern52(&xs, &x[1], &h.length_scales, 1.0),
        ];
        let mut mean = 0.0;
        let mut quad = 0.0;
        for i in 0..2 {
            for j in 0..2 {
                mean += ks[i] * inv[i][j] * y[j];
                quad += ks[i] * inv[i][j] * ks[j];
            }
        }
        let p = gp.predict(&xs);
        assert!((p.mean - mean).abs() < 1e-12, "{} vs {mean}", p.mean);
        assert!((p.var - (1.0 - quad)).abs() < 1e-12);
        let yky = y[0] * (inv[0][0] * y[0] + inv[0][1] * y[1])
            + y[1] * (inv[1][0] * y[0] + inv[1][1] * y[1]);
        let lml = -0.5 * yky - 0.5 * det.ln() - (2.0 * std::f64::consts::PI).ln();
        assert!((gp.log_marginal_likelihood() - lml).abs() < 1e-12);
    }

    #[test]
    fn noise_free_gp_interpolates_and_reverts_to_prior_far_away() {
        let x: Vec<Vec<f64>> = (0..5).map(|i| vec![i as f64 / 4.0]).collect();
        let y: Vec<f64> = x.iter().map(|p| (6.0 * p[0]).sin()).collect();
        let gp = Gp::new(&x, &y, hyper(&[0.3], 1.0, 0.0), 0.7).unwrap();
        for (p, v) in x.iter().zip(&y) {
            let pr = gp.predict(p);
            assert!((pr.mean - v).abs() < 1e-6);
            assert!(pr.var < 1e-6);
        }
        let far = gp.predict(&[50.0]);
        assert!((far.mean - 0.7).abs() < 1e-9);
        assert!((far.var - 1.0).abs() < 1e-9);
    }

    #[test]
    fn bad_input_is_refused() {
        assert_eq!(
            Gp::new(&[], &[], hyper(&[1.0], 1.0, 0.0), 0.0).unwrap_err(),
            GpError::NoData
        );
        assert!(matches!(
            Gp::new(&[vec![0.0]], &[1.0, 2.0], hyper(&[1.0], 1.0, 0.0), 0.0),
            Err(GpError::Length { .. })
        ));
        assert!(matches!(
            Gp::new(&[vec![0.0]], &[f64::NAN], hyper(&[1.0], 1.0, 0.0), 0.0),
            Err(GpError::NotFinite)
        ));
        assert!(matches!(
            Gp::new(&[vec![0.0]], &[1.0], hyper(&[1.0, 1.0], 1.0, 0.0), 0.0),
            Err(GpError::Hyper(_))
        ));
        // Duplicate inputs without noise still factorize thanks to jitter.
        let gp = Gp::new(
            &[vec![0.1], vec![0.1]],
            &[1.0, 1.0],
            hyper(&[1.0], 1.0, 0.0),
            0.0,
        );
        assert!(gp.is_ok());
    }

    #[test]
    fn fit_finds_the_irrelevant_dimension_and_predicts_well() {
        // y depends on x0 only; ARD must give x1 a much longer length scale.
        let mut x = Vec::new();
        for i in 0..7 {
            for j in 0..3 {
                x.push(vec![
                    i as f64 / 6.0,
                    (j as f64 + 0.5 * (i % 2) as f64) / 3.0,
                ]);
            }
        }
        let f = |p: &[f64]| 10.0 + 3.0 * (3.0 * p[0]).sin();
        let y: Vec<f64> = x.iter().map(|p| f(p)).collect();
        let gp = fit(&x, &y, &FitOptions::maximum_likelihood(), None).unwrap();
        let ls = &gp.hyper().length_scales;
        assert!(ls[1] > 4.0 * ls[0], "length scales {ls:?}");
        // At a measured x0 with an unseen x1 the irrelevant dimension must not matter...
        for q in [[1.0 / 3.0, 0.9], [5.0 / 6.0, 0.05]] {
            let p = gp.predict(&q);
            assert!(
                (p.mean - f(&q)).abs() < 0.02,
                "at {q:?}: {} vs {} ({ls:?})",
                p.mean,
                f(&q)
            );
        }
        // ...and between measured x0 values the error stays small against the range of 6.
        for q in [[0.1, 0.9], [0.55, 0.33], [0.9, 0.05]] {
            let p = gp.predict(&q);
            assert!(
                (p.mean - f(&q)).abs() < 0.2,
                "at {q:?}: {} vs {} ({ls:?})",
                p.mean,
                f(&q)
            );
        }
        // The fit is at least as likely as the starting hyperparameters.
        let ys: Vec<f64> = y.iter().map(|v| (v - gp.y_mean) / gp.y_scale).collect();
        let start = Gp::new(&x, &ys, hyper(&[0.5, 0.5], 1.0, 1e-2), 0.0).unwrap();
        assert!(gp.log_marginal_likelihood() >= start.log_marginal_likelihood());
    }

    #[test]
    fn large_fits_refine_the_warm_start_and_never_lose_likelihood() {
        let x: Vec<Vec<f64>> = (0..40)
            .map(|i| vec![(i % 8) as f64 / 7.0, (i / 8) as f64 / 4.0])
            .collect();
        let y: Vec<f64> = x.iter().map(|p| (4.0 * p[0]).cos() + 0.3 * p[1]).collect();
        let opts = FitOptions::maximum_likelihood();
        assert!(x.len() > opts.full_search_up_to);
        let warm = [0.3, 0.3];
        let fitted = fit(&x, &y, &opts, Some((&warm, 1e-3))).unwrap();
        let ys: Vec<f64> = y
            .iter()
            .map(|v| (v - fitted.y_mean) / fitted.y_scale)
            .collect();
        let yv = DVector::from_vec(ys);
        let (warm_lml, _) =
            profile_lml(&x, &yv, &[0.3f64.ln(), 0.3f64.ln(), 1e-3f64.ln()]).unwrap();
        let l = &fitted.hyper().length_scales;
        let (fit_lml, _) =
            profile_lml(&x, &yv, &[l[0].ln(), l[1].ln(), fitted.noise_ratio().ln()]).unwrap();
        assert!(fit_lml >= warm_lml, "{fit_lml} < {warm_lml}");
        assert!((fitted.predict(&[0.5, 0.5]).mean - ((2.0f64).cos() + 0.15)).abs() < 0.05);
    }

    #[test]
    fn map_fit_with_the_default_priors() {
        // The same data as the ARD test: with the default priors the irrelevant input still gets
        // the longer length scale, predictions stay good, and the fit is at least as probable
        // (likelihood plus log prior) as its starting hyperparameters.
        let mut x = Vec::new();
        for i in 0..7 {
            for j in 0..3 {
                x.push(vec![
                    i as f64 / 6.0,
                    (j as f64 + 0.5 * (i % 2) as f64) / 3.0,
                ]);
            }
        }
        let f = |p: &[f64]| 10.0 + 3.0 * (3.0 * p[0]).sin();
        let y: Vec<f64> = x.iter().map(|p| f(p)).collect();
        let opts = FitOptions::default();
        let gp = fit(&x, &y, &opts, None).unwrap();
        let ls = &gp.hyper().length_scales;
        assert!(ls[1] > 2.0 * ls[0], "length scales {ls:?}");
        for q in [[1.0 / 3.0, 0.9], [0.55, 0.33]] {
            let p = gp.predict(&q);
            assert!((p.mean - f(&q)).abs() < 0.2, "at {q:?}: {}", p.mean);
        }
        let ys: Vec<f64> = y.iter().map(|v| (v - gp.y_mean) / gp.y_scale).collect();
        let yv = DVector::from_vec(ys);
        let posterior = |t: &[f64]| {
            let prior = |v: f64, (m, sd): (f64, f64)| -0.5 * ((v - m) / sd).powi(2);
            let lp = prior(t[0], opts.length_scale_prior.unwrap())
                + prior(t[1], opts.length_scale_prior.unwrap())
                + prior(t[2], opts.noise_ratio_prior.unwrap());
            profile_lml(&x, &yv, t).unwrap().0 + lp
        };
        let fitted = [ls[0].ln(), ls[1].ln(), gp.noise_ratio().ln()];
        for start in [[0.15f64, 0.15, 1e-4], [0.5, 0.5, 1e-2], [1.5, 1.5, 1e-2]] {
            let t = start.map(f64::ln);
            assert!(posterior(&fitted) >= posterior(&t) - 1e-9);
        }
    }

    #[test]
    fn fit_handles_constant_and_single_outputs() {
        let gp = fit(&[vec![0.2]], &[5.0], &FitOptions::default(), None).unwrap();
        assert!((gp.predict(&[0.2]).mean - 5.0).abs() < 1e-3);
        let gp = fit(
            &[vec![0.2], vec![0.8]],
            &[3.0, 3.0],
            &FitOptions::default(),
            None,
        )
        .unwrap();
        assert!((gp.predict(&[0.5]).mean - 3.0).abs() < 1e-9);
    }
}
