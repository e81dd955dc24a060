//! Acquisition: constrained expected improvement.
//!
//! Each candidate's score is the expected improvement of the objective over the best feasible
//! value seen so far, times the probability that every constraint holds there (each constraint
//! has its own GP; the constraints are treated as independent). Until a feasible point has been
//! seen there is nothing to improve on, so the score is the probability of feasibility alone:
//! the search first looks for the feasible region, then for the optimum inside it.

use super::gp::Prediction;
use super::stats::{norm_cdf, norm_pdf};

/// Expected improvement of `N(mean, std²)` below `best` (minimization), with margin `xi`:
/// `E[max(best - xi - Y, 0)]`.
pub fn expected_improvement(mean: f64, std: f64, best: f64, xi: f64) -> f64 {
    let gain = best - xi - mean;
    if std <= 1e-12 * (1.0 + mean.abs()) {
        return gain.max(0.0);
    }
    let z = gain / std;
    (gain * norm_cdf(z) + std * norm_pdf(z)).max(0.0)
}

/// Which side of a threshold is feasible.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Bound {
    /// Feasible when the value is at most the threshold.
    AtMost(f64),
    /// Feasible when the value is at least the threshold.
    AtLeast(f64),
}

impl Bound {
    pub fn holds(&self, value: f64) -> bool {
        match *self {
            Bound::AtMost(t) => value <= t,
            Bound::AtLeast(t) => value >= t,
        }
    }

    pub fn threshold(&self) -> f64 {
        match *self {
            Bound::AtMost(t) | Bound::AtLeast(t) => t,
        }
    }

    /// The same bound with the threshold mapped through a monotonically increasing function.
    pub fn map(&self, f: impl Fn(f64) -> f64) -> Bound {
        match *self {
            Bound::AtMost(t) => Bound::AtMost(f(t)),
            Bound::AtLeast(t) => Bound::AtLeast(f(t)),
        }
    }
}

/// Probability that a value distributed as `pred` satisfies `bound`.
pub fn probability_of_feasibility(pred: &Prediction, bound: Bound) -> f64 {
    let std = pred.std();
    let t = bound.threshold();
    if std <= 1e-12 * (1.0 + pred.mean.abs()) {
        return if bound.holds(pred.mean) { 1.0 } else { 0.0 };
    }
    let p_le = norm_cdf((t - pred.mean) / std);
    match bound {
        Bound::AtMost(_) => p_le,
        Bound::AtLeast(_) => 1.0 - p_le,
    }
}

/// Score of one candidate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Score {
    /// Expected improvement of the objective (0 when no feasible point is known yet).
    pub ei: f64,
    /// Probability that every constraint holds.
    pub pof: f64,
    /// What the optimizer maximizes: `ei * pof`, or `pof` before any feasible point is known.
    pub value: f64,
}

/// Constrained expected improvement for every candidate. `objective[j]` and
/// `constraints[k].0[j]` are the predictions at candidate `j`; `best_feasible` is the best
/// objective value among feasible observations, if any.
pub fn constrained_ei(
    objective: &[Prediction],
    constraints: &[(Vec<Prediction>, Bound)],
    best_feasible: Option<f64>,
    xi: f64,
) -> Vec<Score> {
    objective
        .iter()
        .enumerate()
        .map(|(j, o)| {
            let pof: f64 = constraints
                .iter()
                .map(|(p, b)| probability_of_feasibility(&p[j], *b))
                .product();
            match best_feasible {
                Some(best) => {
                    let ei = expected_improvement(o.mean, o.std(), best, xi);
                    Score {
                        ei,
                        pof,
                        value: ei * pof,
                    }
                }
                None => Score {
                    ei: 0.0,
                    pof,
                    value: pof,
                },
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pred(mean: f64, std: f64) -> Prediction {
        Prediction {
            mean,
            var: std * std,
        }
    }

    #[test]
    fn expected_improvement_closed_form() {
        // At mean == best, EI = σ φ(0).
        let ei = expected_improvement(1.0, 2.0, 1.0, 0.0);
        assert!((ei - 2.0 / (2.0 * std::f64::consts::PI).sqrt()).abs() < 1e-7);
        // Without uncertainty EI is the plain improvement.
        assert_eq!(expected_improvement(0.5, 0.0, 1.0, 0.0), 0.5);
        assert_eq!(expected_improvement(1.5, 0.0, 1.0, 0.0), 0.0);
        // Far above the best with small σ: almost nothing.
        assert!(expected_improvement(10.0, 0.1, 0.0, 0.0) < 1e-12);
        // Monotone: lower mean, or more uncertainty, means more EI.
        assert!(
            expected_improvement(0.0, 1.0, 1.0, 0.0) > expected_improvement(0.5, 1.0, 1.0, 0.0)
        );
        assert!(
            expected_improvement(1.0, 2.0, 1.0, 0.0) > expected_improvement(1.0, 1.0, 1.0, 0.0)
        );
    }

    #[test]
    fn feasibility_probability() {
        assert!(
            (probability_of_feasibility(&pred(1.0, 1.0), Bound::AtMost(1.0)) - 0.5).abs() < 1e-7
        );
        let p = probability_of_feasibility(&pred(0.0, 1.0), Bound::AtMost(1.959_963_985));
        assert!((p - 0.975).abs() < 1e-6);
        let q = probability_of_feasibility(&pred(0.0, 1.0), Bound::AtLeast(1.959_963_985));
        assert!((q - 0.025).abs() < 1e-6);
        assert_eq!(
            probability_of_feasibility(&pred(2.0, 0.0), Bound::AtLeast(1.0)),
            1.0
        );
        assert_eq!(
            probability_of_feasibility(&pred(2.0, 0.0), Bound::AtMost(1.0)),
            0.0
        );
    }

    #[test]
    fn constrained_ei_weights_by_feasibility() {
        let obj = vec![pred(0.0, 0.5), pred(0.0, 0.5)];
        let cons = vec![(vec![pred(0.0, 0.1), pred(2.0, 0.1)], Bound::AtMost(1.0))];
        let s = constrained_ei(&obj, &cons, Some(0.5), 0.0);
        assert!(s[0].value > 100.0 * s[1].value);
        assert!((s[0].ei - s[1].ei).abs() < 1e-12);
        // Before a feasible point is known, the score is the probability of feasibility.
        let s = constrained_ei(&obj, &cons, None, 0.0);
        assert_eq!(s[0].value, s[0].pof);
        assert!(s[0].value > 0.99 && s[1].value < 0.01);
    }
}
