//! The ask/tell Bayesian optimizer over a finite candidate set.
//!
//! Flow: the caller first tells the measurement of the *current* configuration (the start), then
//! asks for proposals and tells their measurements. The first `initial_points` proposals after the
//! start are space-filling (the candidate farthest from everything evaluated, in normalized
//! coordinates); after that every proposal maximizes constrained expected improvement (see
//! [`super::acquisition`]) over the candidates not evaluated yet. Every observation, feasible or
//! not, trains the objective GP and every constraint GP, so infeasible points teach the model
//! where the boundary is.
//!
//! Outputs are modelled on a log scale when every observed value (and, for a constraint, its
//! threshold) is positive: energy and latency act multiplicatively, and the log keeps a few
//! expensive points from dominating the fit.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use super::acquisition::{constrained_ei, Bound, Score};
use super::gp::{self, FitOptions, FittedGp, GpError};
use super::space::{Space, SpaceError};

#[derive(Debug, thiserror::Error)]
pub enum BoError {
    #[error(transparent)]
    Space(#[from] SpaceError),
    #[error(transparent)]
    Gp(#[from] GpError),
    #[error("no candidates to search")]
    NoCandidates,
    #[error("candidate {0:?} is outside the search space")]
    OutsideSpace(Vec<f64>),
    #[error("observation has {got} constraint values, expected {want}")]
    ConstraintArity { got: usize, want: usize },
    #[error("observed value {0} is not finite")]
    NotFinite(f64),
}

/// A constraint on one measured outcome.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Constraint {
    pub name: String,
    #[serde(skip)]
    pub bound: Bound,
}

impl Constraint {
    pub fn at_most(name: impl Into<String>, threshold: f64) -> Self {
        Self {
            name: name.into(),
            bound: Bound::AtMost(threshold),
        }
    }

    pub fn at_least(name: impl Into<String>, threshold: f64) -> Self {
        Self {
            name: name.into(),
            bound: Bound::AtLeast(threshold),
        }
    }
}

impl std::fmt::Display for Constraint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.bound {
            Bound::AtMost(t) => write!(f, "{}<={}", self.name, t),
            Bound::AtLeast(t) => write!(f, "{}>={}", self.name, t),
        }
    }
}

/// One measured configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Observation {
    /// Knob values.
    pub point: Vec<f64>,
    /// The objective (lower is better).
    pub objective: f64,
    /// One value per constraint, in the optimizer's constraint order.
    pub constraints: Vec<f64>,
    /// Whether every constraint held.
    pub feasible: bool,
}

/// Tuning of the optimizer.
#[derive(Debug, Clone, PartialEq)]
pub struct BoConfig {
    /// Space-filling proposals after the start, before the acquisition takes over.
    pub initial_points: usize,
    /// Margin of expected improvement, in modelled (log, where used) units.
    pub xi: f64,
    /// Model positive outputs on a log scale.
    pub log_outputs: bool,
    pub fit: FitOptions,
}

impl Default for BoConfig {
    fn default() -> Self {
        Self {
            initial_points: 2,
            xi: 0.0,
            log_outputs: true,
            fit: FitOptions::default(),
        }
    }
}

/// Why a candidate was proposed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProposalKind {
    /// Space-filling initial design.
    Initial,
    /// No feasible point known yet: maximizes the probability of feasibility.
    Feasibility,
    /// Maximizes constrained expected improvement.
    ExpectedImprovement,
}

/// The next configuration to evaluate.
#[derive(Debug, Clone, PartialEq)]
pub struct Proposal {
    /// Index into the candidate list.
    pub index: usize,
    pub point: Vec<f64>,
    pub kind: ProposalKind,
    /// Acquisition score (absent for space-filling proposals).
    pub score: Option<Score>,
}

/// Monotone output transform.
fn transform(log: bool, v: f64) -> f64 {
    if log {
        v.ln()
    } else {
        v
    }
}

/// The ask/tell optimizer.
#[derive(Debug)]
pub struct Optimizer {
    space: Space,
    candidates: Vec<Vec<f64>>,
    normalized: Vec<Vec<f64>>,
    evaluated: Vec<bool>,
    constraints: Vec<Constraint>,
    observations: Vec<Observation>,
    config: BoConfig,
    rng: ChaCha8Rng,
    /// Warm starts for the hyperparameter search: objective first, then each constraint.
    warm: Vec<Option<(Vec<f64>, f64)>>,
}

impl Optimizer {
    /// An optimizer over `candidates` (points of `space`; for a full grid use
    /// [`Space::enumerate`]). `seed` drives tie-breaking only, so runs are reproducible.
    pub fn new(
        space: Space,
        candidates: Vec<Vec<f64>>,
        constraints: Vec<Constraint>,
        config: BoConfig,
        seed: u64,
    ) -> Result<Self, BoError> {
        if candidates.is_empty() {
            return Err(BoError::NoCandidates);
        }
        let normalized = candidates
            .iter()
            .map(|c| {
                if !space.contains(c) {
                    return Err(BoError::OutsideSpace(c.clone()));
                }
                Ok(space.normalize(c)?)
            })
            .collect::<Result<Vec<_>, BoError>>()?;
        let n = candidates.len();
        let warm = vec![None; constraints.len() + 1];
        Ok(Self {
            space,
            candidates,
            normalized,
            evaluated: vec![false; n],
            constraints,
            observations: Vec::new(),
            config,
            rng: ChaCha8Rng::seed_from_u64(seed),
            warm,
        })
    }

    pub fn space(&self) -> &Space {
        &self.space
    }

    pub fn candidates(&self) -> &[Vec<f64>] {
        &self.candidates
    }

    pub fn constraints(&self) -> &[Constraint] {
        &self.constraints
    }

    pub fn observations(&self) -> &[Observation] {
        &self.observations
    }

    /// Index of the candidate equal to `point`, if any.
    pub fn candidate_index(&self, point: &[f64]) -> Option<usize> {
        self.candidates.iter().position(|c| c.as_slice() == point)
    }

    /// Record a measurement. The point need not be a candidate (e.g. a start configuration off
    /// the grid) but must be inside the space's bounds; a candidate equal to it is not proposed
    /// again.
    pub fn tell(
        &mut self,
        point: &[f64],
        objective: f64,
        constraint_values: &[f64],
    ) -> Result<&Observation, BoError> {
        if constraint_values.len() != self.constraints.len() {
            return Err(BoError::ConstraintArity {
                got: constraint_values.len(),
                want: self.constraints.len(),
            });
        }
        if let Some(v) = std::iter::once(&objective)
            .chain(constraint_values)
            .find(|v| !v.is_finite())
        {
            return Err(BoError::NotFinite(*v));
        }
        self.space.normalize(point)?;
        if let Some(i) = self.candidate_index(point) {
            self.evaluated[i] = true;
        }
        let feasible = self
            .constraints
            .iter()
            .zip(constraint_values)
            .all(|(c, &v)| c.bound.holds(v));
        self.observations.push(Observation {
            point: point.to_vec(),
            objective,
            constraints: constraint_values.to_vec(),
            feasible,
        });
        Ok(self.observations.last().expect("just pushed"))
    }

    /// Never propose candidate `index` (e.g. the policy refused it). Out-of-range indices are
    /// ignored.
    pub fn exclude(&mut self, index: usize) {
        if let Some(e) = self.evaluated.get_mut(index) {
            *e = true;
        }
    }

    /// Forget every observation (e.g. after a load change); candidates become available again.
    pub fn reset(&mut self) {
        self.observations.clear();
        self.evaluated.iter_mut().for_each(|e| *e = false);
        self.warm.iter_mut().for_each(|w| *w = None);
    }

    /// The feasible observation with the lowest objective. Repeated measurements of one point are
    /// averaged, and a point counts as feasible only if all of its measurements were.
    pub fn best_feasible(&self) -> Option<Observation> {
        self.feasible_points().into_iter().next()
    }

    /// Every feasible point measured, cheapest first, as in [`Self::best_feasible`].
    pub fn feasible_points(&self) -> Vec<Observation> {
        // Per distinct point: sums of objective and constraints, and the count.
        let mut groups: Vec<(Observation, usize)> = Vec::new();
        for o in &self.observations {
            match groups.iter_mut().find(|(g, _)| g.point == o.point) {
                Some((g, n)) => {
                    g.objective += o.objective;
                    g.feasible &= o.feasible;
                    for (a, b) in g.constraints.iter_mut().zip(&o.constraints) {
                        *a += b;
                    }
                    *n += 1;
                }
                None => groups.push((o.clone(), 1)),
            }
        }
        let mut feasible: Vec<Observation> = groups
            .into_iter()
            .filter(|(g, _)| g.feasible)
            .map(|(mut g, n)| {
                g.objective /= n as f64;
                g.constraints.iter_mut().for_each(|c| *c /= n as f64);
                g
            })
            .collect();
        // Stable: of equal objectives, the one measured first, as before.
        feasible.sort_by(|a, b| a.objective.total_cmp(&b.objective));
        feasible
    }

    /// Number of distinct points measured (repeated measurements count once).
    fn distinct_points(&self) -> usize {
        let mut seen: Vec<&[f64]> = Vec::new();
        for o in &self.observations {
            if !seen.contains(&o.point.as_slice()) {
                seen.push(&o.point);
            }
        }
        seen.len()
    }

    fn remaining(&self) -> Vec<usize> {
        (0..self.candidates.len())
            .filter(|&i| !self.evaluated[i])
            .collect()
    }

    /// The remaining candidate farthest from every evaluated point (ties broken at random).
    fn space_filling(&mut self, remaining: &[usize]) -> usize {
        let evaluated: Vec<Vec<f64>> = self
            .observations
            .iter()
            .filter_map(|o| self.space.normalize(&o.point).ok())
            .collect();
        if evaluated.is_empty() {
            return remaining[self.rng.gen_range(0..remaining.len())];
        }
        let dist =
            |a: &[f64], b: &[f64]| -> f64 { a.iter().zip(b).map(|(x, y)| (x - y).powi(2)).sum() };
        let scores: Vec<f64> = remaining
            .iter()
            .map(|&i| {
                evaluated
                    .iter()
                    .map(|e| dist(&self.normalized[i], e))
                    .fold(f64::INFINITY, f64::min)
            })
            .collect();
        let max = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let ties: Vec<usize> = remaining
            .iter()
            .zip(&scores)
            .filter(|(_, &s)| s >= max - 1e-12)
            .map(|(&i, _)| i)
            .collect();
        ties[self.rng.gen_range(0..ties.len())]
    }

    /// Fit a GP to one output column (0 = objective, k = constraint k-1), on a log scale when
    /// allowed. Returns the model and whether the log was used.
    fn fit_output(
        &mut self,
        which: usize,
        extra_positive: Option<f64>,
    ) -> Result<(FittedGp, bool), BoError> {
        let values: Vec<f64> = self
            .observations
            .iter()
            .map(|o| {
                if which == 0 {
                    o.objective
                } else {
                    o.constraints[which - 1]
                }
            })
            .collect();
        let log = self.config.log_outputs
            && values.iter().all(|&v| v > 0.0)
            && extra_positive.is_none_or(|t| t > 0.0);
        let x: Vec<Vec<f64>> = self
            .observations
            .iter()
            .map(|o| self.space.normalize(&o.point))
            .collect::<Result<_, _>>()?;
        let y: Vec<f64> = values.iter().map(|&v| transform(log, v)).collect();
        let warm = self.warm[which].as_ref().map(|(l, g)| (l.as_slice(), *g));
        let model = gp::fit(&x, &y, &self.config.fit, warm)?;
        self.warm[which] = Some((model.hyper().length_scales.clone(), model.noise_ratio()));
        Ok((model, log))
    }

    /// Scores of the given candidates (indices into the candidate list) under the current data.
    pub fn score(&mut self, indices: &[usize]) -> Result<Vec<Score>, BoError> {
        if self.observations.is_empty() {
            return Ok(indices
                .iter()
                .map(|_| Score {
                    ei: 0.0,
                    pof: 1.0,
                    value: 1.0,
                })
                .collect());
        }
        let points: Vec<Vec<f64>> = indices
            .iter()
            .map(|&i| self.normalized[i].clone())
            .collect();
        let (obj_model, obj_log) = self.fit_output(0, None)?;
        let obj_pred = obj_model.predict_many(&points);
        let mut cons = Vec::with_capacity(self.constraints.len());
        for k in 0..self.constraints.len() {
            let bound = self.constraints[k].bound;
            let (model, log) = self.fit_output(k + 1, Some(bound.threshold()))?;
            cons.push((
                model.predict_many(&points),
                bound.map(|t| transform(log, t)),
            ));
        }
        let best = self
            .observations
            .iter()
            .filter(|o| o.feasible)
            .map(|o| transform(obj_log, o.objective))
            .fold(None, |acc: Option<f64>, v| {
                Some(acc.map_or(v, |a| a.min(v)))
            });
        Ok(constrained_ei(&obj_pred, &cons, best, self.config.xi))
    }

    /// The next candidate to evaluate, or `None` when every candidate has been evaluated.
    pub fn ask(&mut self) -> Result<Option<Proposal>, BoError> {
        let remaining = self.remaining();
        if remaining.is_empty() {
            return Ok(None);
        }
        if self.distinct_points() <= self.config.initial_points {
            let i = self.space_filling(&remaining);
            return Ok(Some(self.proposal(i, ProposalKind::Initial, None)));
        }
        let scores = self.score(&remaining)?;
        let any_feasible = self.observations.iter().any(|o| o.feasible);
        let (best_pos, best_score) = scores
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.value.total_cmp(&b.1.value).then(b.0.cmp(&a.0)))
            .expect("remaining is not empty");
        if best_score.value.partial_cmp(&0.0) != Some(std::cmp::Ordering::Greater) {
            // Every score underflowed: fall back to exploring the emptiest region.
            let i = self.space_filling(&remaining);
            return Ok(Some(self.proposal(
                i,
                ProposalKind::Initial,
                Some(*best_score),
            )));
        }
        let kind = if any_feasible {
            ProposalKind::ExpectedImprovement
        } else {
            ProposalKind::Feasibility
        };
        Ok(Some(self.proposal(
            remaining[best_pos],
            kind,
            Some(*best_score),
        )))
    }

    fn proposal(&self, index: usize, kind: ProposalKind, score: Option<Score>) -> Proposal {
        Proposal {
            index,
            point: self.candidates[index].clone(),
            kind,
            score,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::advise::optimizer::space::KnobSpec;

    fn grid_space() -> (Space, Vec<Vec<f64>>) {
        let space = Space::new(vec![
            KnobSpec::range("a", 0.0, 1.0, 0.05),
            KnobSpec::range("b", 0.0, 1.0, 0.05),
        ])
        .unwrap();
        let cands = space.enumerate(10_000).unwrap();
        (space, cands)
    }

    #[test]
    fn tell_checks_its_input() {
        let (space, cands) = grid_space();
        let mut o = Optimizer::new(
            space,
            cands,
            vec![Constraint::at_most("c", 1.0)],
            BoConfig::default(),
            1,
        )
        .unwrap();
        assert!(matches!(
            o.tell(&[0.0, 0.0], 1.0, &[]),
            Err(BoError::ConstraintArity { .. })
        ));
        assert!(matches!(
            o.tell(&[0.0, 0.0], f64::NAN, &[0.0]),
            Err(BoError::NotFinite(_))
        ));
        assert!(matches!(
            o.tell(&[0.0], 1.0, &[0.0]),
            Err(BoError::Space(_))
        ));
        assert!(!o.tell(&[0.0, 0.0], 1.0, &[2.0]).unwrap().feasible);
        assert!(o.tell(&[0.5, 0.0], 3.0, &[0.5]).unwrap().feasible);
        assert!(o.tell(&[0.5, 0.5], 2.0, &[0.5]).unwrap().feasible);
        assert_eq!(o.best_feasible().unwrap().point, vec![0.5, 0.5]);
        // A repeated measurement that breaks the constraint disqualifies the point.
        o.tell(&[0.5, 0.5], 2.0, &[1.5]).unwrap();
        assert_eq!(o.best_feasible().unwrap().point, vec![0.5, 0.0]);
    }

    #[test]
    fn exhausts_candidates_then_returns_none() {
        let space = Space::new(vec![KnobSpec::discrete("a", vec![0.0, 1.0, 2.0])]).unwrap();
        let cands = space.enumerate(10).unwrap();
        let mut o = Optimizer::new(space, cands, vec![], BoConfig::default(), 3).unwrap();
        let mut seen = Vec::new();
        o.tell(&[1.0], 5.0, &[]).unwrap();
        while let Some(p) = o.ask().unwrap() {
            seen.push(p.point[0]);
            o.tell(&p.point, 5.0 - p.point[0], &[]).unwrap();
        }
        seen.sort_by(f64::total_cmp);
        assert_eq!(seen, vec![0.0, 2.0]);
    }
}
