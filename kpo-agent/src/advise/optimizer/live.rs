//! The live loop: move real knobs, measure, learn, keep the best.
//!
//! Each [`LiveOptimizer::step`] measures the configuration that was held during the last window
//! and then decides what to hold next:
//!
//! 1. **Load change.** If the measured load (request rate) differs from the rate the model was
//!    built at by more than `load_change_rel`, the model is thrown away and the search restarts
//!    from the current configuration (the best configuration depends on load).
//! 2. **Learn.** While exploring, the measurement (feasible or not) is told to the optimizer.
//! 3. **SLO guard.** If the window broke the SLO, the loop reverts at once to the best feasible
//!    configuration known (or the configuration it started from) and holds that for the next
//!    window. A held best that breaks the SLO restarts the search from the start configuration.
//! 4. **Explore or hold.** While exploring, the next proposal is applied, unless the budget is
//!    spent or the best acquisition value fell below `ei_stop` (converged): then the best feasible
//!    configuration is applied and held. While holding, every `recheck_every` windows the mean
//!    objective is compared with what the best was measured at; if it is worse by more than
//!    `recheck_tolerance_rel`, the search restarts.
//!
//! Every change except a revert goes through the [`Gate`] (the policy, journal and guard of the
//! agent) first; a refused proposal is never proposed again. Reverts are always applied (they go
//! back to a configuration that was already accepted), and the gate is told about them.

use serde::{Deserialize, Serialize};

use super::bo::{BoConfig, BoError, Constraint, Optimizer, ProposalKind};
use super::space::Space;
use crate::actuate::{ActuateError, KnobSet};
use crate::energy::EnergySource;

/// Largest search space the live loop enumerates.
pub const MAX_LIVE_CANDIDATES: usize = 50_000;

/// The knobs the loop moves, as one configuration (one value per space dimension, in order).
pub trait Actuators {
    fn read(&mut self) -> Result<Vec<f64>, ActuateError>;
    fn apply(&mut self, values: &[f64]) -> Result<(), ActuateError>;
}

impl Actuators for KnobSet {
    fn read(&mut self) -> Result<Vec<f64>, ActuateError> {
        self.read_all()
    }
    fn apply(&mut self, values: &[f64]) -> Result<(), ActuateError> {
        self.apply_all(values)
    }
}

/// What one measurement window saw.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Measurement {
    /// Energy used in the window, joules.
    pub energy_j: f64,
    /// Whether `energy_j` was measured or estimated.
    pub energy_source: EnergySource,
    /// Requests (units of work) completed in the window.
    pub requests: f64,
    /// Window length, seconds.
    pub window_s: f64,
    /// 99th-percentile request latency in the window, microseconds.
    pub p99_us: f64,
    /// Offered load (request rate) in the window, used to detect load changes.
    pub load_rps: f64,
}

impl Measurement {
    pub fn throughput_rps(&self) -> f64 {
        if self.window_s > 0.0 {
            self.requests / self.window_s
        } else {
            0.0
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("measurement failed: {0}")]
pub struct MeasureError(pub String);

/// Holds the current configuration for one window and measures it.
pub trait MeasurementSource {
    fn measure(&mut self) -> Result<Measurement, MeasureError>;
}

/// The service-level objective: the constraints of the search and a guard signal.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Slo {
    /// Request p99 must stay at or below this, microseconds.
    pub p99_us_max: Option<f64>,
    /// Throughput must stay at or above this, requests per second.
    pub min_throughput_rps: Option<f64>,
}

impl Slo {
    fn constraints(&self) -> Vec<Constraint> {
        let mut c = Vec::new();
        if let Some(p) = self.p99_us_max {
            c.push(Constraint::at_most("p99_us", p));
        }
        if let Some(t) = self.min_throughput_rps {
            c.push(Constraint::at_least("throughput_rps", t));
        }
        c
    }

    fn values(&self, m: &Measurement) -> Vec<f64> {
        let mut v = Vec::new();
        if self.p99_us_max.is_some() {
            v.push(m.p99_us);
        }
        if self.min_throughput_rps.is_some() {
            v.push(m.throughput_rps());
        }
        v
    }

    pub fn holds(&self, m: &Measurement) -> bool {
        self.p99_us_max.is_none_or(|p| m.p99_us <= p)
            && self
                .min_throughput_rps
                .is_none_or(|t| m.throughput_rps() >= t)
    }
}

/// What is minimized.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Objective {
    /// Joules per completed request.
    #[default]
    JoulesPerRequest,
    /// Joules per window (for a steady request rate).
    JoulesPerWindow,
}

impl Objective {
    pub fn value(&self, m: &Measurement) -> f64 {
        match self {
            Objective::JoulesPerRequest => m.energy_j / m.requests.max(1.0),
            Objective::JoulesPerWindow => m.energy_j,
        }
    }
}

/// Tuning of the live loop (deserializable from the agent's configuration; every field has a
/// default).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LiveConfig {
    pub slo: Slo,
    pub objective: Objective,
    /// Evaluations per search (the start included).
    pub budget: usize,
    /// Space-filling proposals after the start.
    pub initial_points: usize,
    /// Proposals before the convergence test may stop the search.
    pub min_proposals: usize,
    /// Stop exploring when the best constrained expected improvement is below this (in log units
    /// of the objective, so 0.001 is about 0.1%).
    pub ei_stop: f64,
    /// Relative change of the load rate that restarts the search.
    pub load_change_rel: f64,
    /// Windows between re-checks of the held best.
    pub recheck_every: usize,
    /// Relative worsening of the held best's objective that restarts the search.
    pub recheck_tolerance_rel: f64,
    /// Seed of the optimizer's tie-breaking.
    pub seed: u64,
}

impl Default for LiveConfig {
    fn default() -> Self {
        Self {
            slo: Slo::default(),
            objective: Objective::default(),
            budget: 20,
            initial_points: 2,
            min_proposals: 6,
            ei_stop: 1e-3,
            load_change_rel: 0.25,
            recheck_every: 10,
            recheck_tolerance_rel: 0.15,
            seed: 0,
        }
    }
}

/// Why a configuration change is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeReason {
    /// A proposal of the search.
    Explore,
    /// The search converged; hold the best.
    Converge,
    /// The SLO broke; go back to a known-good configuration.
    Revert,
}

/// A configuration change, for the gate.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Change {
    pub knobs: Vec<String>,
    pub from: Vec<f64>,
    pub to: Vec<f64>,
    pub reason: ChangeReason,
}

/// The policy, journal and guard, as the live loop sees them.
pub trait Gate {
    /// Called before a change is applied. Return `false` to refuse it (not allowed, or waiting
    /// for an operator). For [`ChangeReason::Revert`] the answer is ignored: reverts always happen.
    fn review(&mut self, change: &Change) -> bool;
}

/// A gate that allows everything (tests, dry runs).
#[derive(Debug, Clone, Copy, Default)]
pub struct AllowAll;

impl Gate for AllowAll {
    fn review(&mut self, _change: &Change) -> bool {
        true
    }
}

/// Phase of the loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    Exploring,
    Holding,
}

/// What happened in a step.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum LiveEvent {
    Measured {
        config: Vec<f64>,
        objective: f64,
        p99_us: f64,
        throughput_rps: f64,
        load_rps: f64,
        feasible: bool,
        energy_source: EnergySource,
    },
    LoadChanged {
        from_rps: f64,
        to_rps: f64,
    },
    Restarted {
        reason: String,
    },
    SloBreach {
        config: Vec<f64>,
        p99_us: f64,
        throughput_rps: f64,
    },
    Reverted {
        from: Vec<f64>,
        to: Vec<f64>,
    },
    Applied {
        config: Vec<f64>,
        kind: ProposalKind,
    },
    Refused {
        config: Vec<f64>,
    },
    ApplyFailed {
        config: Vec<f64>,
        error: String,
    },
    Converged {
        best: Vec<f64>,
        objective: Option<f64>,
        evaluations: usize,
    },
    Recheck {
        config: Vec<f64>,
        objective: f64,
        expected: f64,
        ok: bool,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum LiveError {
    #[error(transparent)]
    Optimizer(#[from] BoError),
    #[error(transparent)]
    Actuate(#[from] ActuateError),
    #[error(transparent)]
    Measure(#[from] MeasureError),
    #[error("the search space has more than {MAX_LIVE_CANDIDATES} points; use coarser steps")]
    SpaceTooLarge,
    #[error("the actuators have {got} knobs but the space has {want}")]
    Arity { got: usize, want: usize },
    #[error("measured objective {0} is not a positive finite number")]
    BadObjective(f64),
}

/// The live optimizer, generic over the actuators, the measurement source and the gate.
pub struct LiveOptimizer<A: Actuators, M: MeasurementSource, G: Gate = AllowAll> {
    actuators: A,
    source: M,
    gate: G,
    config: LiveConfig,
    knobs: Vec<String>,
    opt: Optimizer,
    start: Vec<f64>,
    current: Vec<f64>,
    phase: Phase,
    ref_load: Option<f64>,
    evaluations: usize,
    /// Held configuration and the objective it was chosen with.
    held: Option<(Vec<f64>, Option<f64>)>,
    hold_windows: usize,
    hold_sum: f64,
    restarts: usize,
    log: Vec<LiveEvent>,
}

impl<A: Actuators, M: MeasurementSource, G: Gate> LiveOptimizer<A, M, G> {
    /// Read the current configuration (the start) and set up the search over `space`.
    pub fn new(
        space: Space,
        mut actuators: A,
        source: M,
        gate: G,
        config: LiveConfig,
    ) -> Result<Self, LiveError> {
        let candidates = space
            .enumerate(MAX_LIVE_CANDIDATES)
            .ok_or(LiveError::SpaceTooLarge)?;
        let start = actuators.read()?;
        if start.len() != space.dims() {
            return Err(LiveError::Arity {
                got: start.len(),
                want: space.dims(),
            });
        }
        let knobs = space.names().into_iter().map(String::from).collect();
        let bo = BoConfig {
            initial_points: config.initial_points,
            ..BoConfig::default()
        };
        let opt = Optimizer::new(space, candidates, config.slo.constraints(), bo, config.seed)?;
        Ok(Self {
            actuators,
            source,
            gate,
            config,
            knobs,
            opt,
            current: start.clone(),
            start,
            phase: Phase::Exploring,
            ref_load: None,
            evaluations: 0,
            held: None,
            hold_windows: 0,
            hold_sum: 0.0,
            restarts: 0,
            log: Vec::new(),
        })
    }

    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// The configuration applied now.
    pub fn current(&self) -> &[f64] {
        &self.current
    }

    /// The configuration found at start.
    pub fn start(&self) -> &[f64] {
        &self.start
    }

    /// The held best while holding.
    pub fn held(&self) -> Option<&[f64]> {
        self.held.as_ref().map(|(c, _)| c.as_slice())
    }

    pub fn restarts(&self) -> usize {
        self.restarts
    }

    /// Every event so far.
    pub fn log(&self) -> &[LiveEvent] {
        &self.log
    }

    pub fn optimizer(&self) -> &Optimizer {
        &self.opt
    }

    pub fn actuators(&self) -> &A {
        &self.actuators
    }

    pub fn source_mut(&mut self) -> &mut M {
        &mut self.source
    }

    /// Run `windows` steps; return the events of all of them.
    pub fn run(&mut self, windows: usize) -> Result<Vec<LiveEvent>, LiveError> {
        let mut all = Vec::new();
        for _ in 0..windows {
            all.extend(self.step()?);
        }
        Ok(all)
    }

    fn restart(&mut self, load: f64, reason: &str, ev: &mut Vec<LiveEvent>) {
        self.opt.reset();
        self.phase = Phase::Exploring;
        self.ref_load = Some(load);
        self.evaluations = 0;
        self.held = None;
        self.hold_windows = 0;
        self.hold_sum = 0.0;
        self.restarts += 1;
        ev.push(LiveEvent::Restarted {
            reason: reason.to_string(),
        });
    }

    fn change(&self, to: &[f64], reason: ChangeReason) -> Change {
        Change {
            knobs: self.knobs.clone(),
            from: self.current.clone(),
            to: to.to_vec(),
            reason,
        }
    }

    /// Measure the last window and decide what to hold next.
    pub fn step(&mut self) -> Result<Vec<LiveEvent>, LiveError> {
        let mut ev = Vec::new();
        let result = self.step_inner(&mut ev);
        self.log.extend(ev.iter().cloned());
        result.map(|()| ev)
    }

    fn step_inner(&mut self, ev: &mut Vec<LiveEvent>) -> Result<(), LiveError> {
        let m = self.source.measure()?;
        let objective = self.config.objective.value(&m);
        if !(objective.is_finite() && objective > 0.0) {
            return Err(LiveError::BadObjective(objective));
        }
        let slo = self.config.slo;
        let feasible = slo.holds(&m);
        ev.push(LiveEvent::Measured {
            config: self.current.clone(),
            objective,
            p99_us: m.p99_us,
            throughput_rps: m.throughput_rps(),
            load_rps: m.load_rps,
            feasible,
            energy_source: m.energy_source,
        });

        // 1. Load change.
        match self.ref_load {
            None => self.ref_load = Some(m.load_rps),
            Some(r) => {
                if (m.load_rps - r).abs() > self.config.load_change_rel * r.abs().max(1e-9) {
                    ev.push(LiveEvent::LoadChanged {
                        from_rps: r,
                        to_rps: m.load_rps,
                    });
                    self.restart(m.load_rps, "load changed", ev);
                }
            }
        }

        // A held best that breaks the SLO invalidates the model: restart.
        if !feasible && self.phase == Phase::Holding {
            self.restart(m.load_rps, "held configuration broke the SLO", ev);
        }

        // 2. Learn.
        if self.phase == Phase::Exploring {
            let current = self.current.clone();
            self.opt.tell(&current, objective, &slo.values(&m))?;
            self.evaluations += 1;
        }

        // 3. SLO guard.
        if !feasible {
            ev.push(LiveEvent::SloBreach {
                config: self.current.clone(),
                p99_us: m.p99_us,
                throughput_rps: m.throughput_rps(),
            });
            let target = self
                .opt
                .best_feasible()
                .map_or_else(|| self.start.clone(), |o| o.point);
            if target != self.current {
                let change = self.change(&target, ChangeReason::Revert);
                let _ = self.gate.review(&change);
                self.actuators.apply(&target)?;
                ev.push(LiveEvent::Reverted {
                    from: self.current.clone(),
                    to: target.clone(),
                });
                self.current = target;
            }
            return Ok(());
        }

        // 4. Explore or hold.
        match self.phase {
            Phase::Exploring => self.explore(ev),
            Phase::Holding => self.hold(&m, ev),
        }
    }

    fn explore(&mut self, ev: &mut Vec<LiveEvent>) -> Result<(), LiveError> {
        loop {
            if self.evaluations >= self.config.budget {
                return self.converge(ev);
            }
            let Some(p) = self.opt.ask()? else {
                return self.converge(ev);
            };
            let proposals = self.evaluations.saturating_sub(1);
            if p.kind == ProposalKind::ExpectedImprovement
                && proposals >= self.config.min_proposals
                && p.score.is_some_and(|s| s.value < self.config.ei_stop)
            {
                return self.converge(ev);
            }
            let change = self.change(&p.point, ChangeReason::Explore);
            if !self.gate.review(&change) {
                self.opt.exclude(p.index);
                ev.push(LiveEvent::Refused { config: p.point });
                continue;
            }
            match self.actuators.apply(&p.point) {
                Ok(()) => {
                    ev.push(LiveEvent::Applied {
                        config: p.point.clone(),
                        kind: p.kind,
                    });
                    self.current = p.point;
                    return Ok(());
                }
                Err(e) => {
                    self.opt.exclude(p.index);
                    ev.push(LiveEvent::ApplyFailed {
                        config: p.point,
                        error: e.to_string(),
                    });
                    continue;
                }
            }
        }
    }

    fn converge(&mut self, ev: &mut Vec<LiveEvent>) -> Result<(), LiveError> {
        let (best, objective) = match self.opt.best_feasible() {
            Some(o) => (o.point, Some(o.objective)),
            None => (self.start.clone(), None),
        };
        ev.push(LiveEvent::Converged {
            best: best.clone(),
            objective,
            evaluations: self.evaluations,
        });
        self.phase = Phase::Holding;
        self.hold_windows = 0;
        self.hold_sum = 0.0;
        if best != self.current {
            let change = self.change(&best, ChangeReason::Converge);
            if self.gate.review(&change) {
                self.actuators.apply(&best)?;
                ev.push(LiveEvent::Applied {
                    config: best.clone(),
                    kind: ProposalKind::ExpectedImprovement,
                });
                self.current = best.clone();
            } else {
                ev.push(LiveEvent::Refused {
                    config: best.clone(),
                });
                self.held = Some((self.current.clone(), None));
                return Ok(());
            }
        }
        self.held = Some((best, objective));
        Ok(())
    }

    fn hold(&mut self, m: &Measurement, ev: &mut Vec<LiveEvent>) -> Result<(), LiveError> {
        let objective = self.config.objective.value(m);
        self.hold_windows += 1;
        self.hold_sum += objective;
        if self.hold_windows < self.config.recheck_every {
            return Ok(());
        }
        let mean = self.hold_sum / self.hold_windows as f64;
        self.hold_windows = 0;
        self.hold_sum = 0.0;
        let Some((config, Some(expected))) = self.held.clone() else {
            return Ok(());
        };
        let ok = mean <= expected * (1.0 + self.config.recheck_tolerance_rel);
        ev.push(LiveEvent::Recheck {
            config: config.clone(),
            objective: mean,
            expected,
            ok,
        });
        if !ok {
            // The model no longer describes the machine: search again, starting from here.
            self.restart(m.load_rps, "re-check: the held best got worse", ev);
            self.opt
                .tell(&config, objective, &self.config.slo.values(m))?;
            self.evaluations += 1;
            return self.explore(ev);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_and_slo_from_json() {
        let c: LiveConfig = serde_json::from_str(
            r#"{"slo":{"p99_us_max":500},"objective":"joules_per_window","budget":12}"#,
        )
        .unwrap();
        assert_eq!(c.slo.p99_us_max, Some(500.0));
        assert_eq!(c.objective, Objective::JoulesPerWindow);
        assert_eq!(c.budget, 12);
        assert_eq!(c.recheck_every, LiveConfig::default().recheck_every);
        assert!(serde_json::from_str::<LiveConfig>(r#"{"budgte":3}"#).is_err());
    }

    #[test]
    fn slo_and_objective_values() {
        let m = Measurement {
            energy_j: 50.0,
            energy_source: EnergySource::Rapl,
            requests: 1000.0,
            window_s: 2.0,
            p99_us: 400.0,
            load_rps: 500.0,
        };
        assert_eq!(m.throughput_rps(), 500.0);
        assert_eq!(Objective::JoulesPerRequest.value(&m), 0.05);
        assert_eq!(Objective::JoulesPerWindow.value(&m), 50.0);
        let slo = Slo {
            p99_us_max: Some(500.0),
            min_throughput_rps: Some(400.0),
        };
        assert!(slo.holds(&m));
        assert_eq!(slo.values(&m), vec![400.0, 500.0]);
        assert!(!Slo {
            p99_us_max: Some(300.0),
            ..slo
        }
        .holds(&m));
        assert!(!Slo {
            min_throughput_rps: Some(600.0),
            ..slo
        }
        .holds(&m));
        assert!(Slo::default().holds(&m));
    }
}
