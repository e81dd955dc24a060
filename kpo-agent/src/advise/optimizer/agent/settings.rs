//! `[optimizer]` in the agent's configuration file: the SLO, the budget and the grid's size.
use super::*;

/// The request-latency percentile the SLO is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Percentile {
    P50,
    P90,
    #[default]
    P99,
}

/// `[optimizer]` in the agent's configuration file (README, docs/optimizer.md).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OptimizerSettings {
    /// Windows each trial is held and measured over.
    pub windows_per_trial: u32,
    /// The listening port whose request latency is the SLO (the request-latency sensor).
    pub slo_port: Option<u16>,
    pub slo_percentile: Percentile,
    /// The SLO: that percentile must stay at or below this many microseconds.
    pub slo_max_us: Option<f64>,
    /// Run on an estimated energy (a model of CPU time and frequency, not a meter).
    pub allow_estimated_energy: bool,
    /// Values tried per knob, spread evenly over the policy's `[min, max]`.
    pub levels: usize,
    /// Configurations tried per search: the start and each trial (a return after a breach is none).
    pub budget: usize,
    pub objective: Objective,
    /// Stop exploring once the best constrained expected improvement is below this (log units of
    /// the objective: 0.001 is about 0.1%).
    pub ei_stop: f64,
    /// A change of the request rate by more than this fraction, at a configuration measured
    /// before, restarts the search.
    pub load_change_rel: f64,
    /// Trials between re-checks of the held best.
    pub recheck_every: usize,
    /// A held best whose objective got worse by more than this fraction restarts the search.
    pub recheck_tolerance_rel: f64,
}

impl Default for OptimizerSettings {
    fn default() -> Self {
        let live = LiveConfig::default();
        Self {
            windows_per_trial: 1,
            slo_port: None,
            slo_percentile: Percentile::P99,
            slo_max_us: None,
            allow_estimated_energy: false,
            levels: 8,
            budget: live.budget,
            objective: Objective::default(),
            ei_stop: live.ei_stop,
            load_change_rel: live.load_change_rel,
            recheck_every: live.recheck_every,
            recheck_tolerance_rel: live.recheck_tolerance_rel,
        }
    }
}

/// The most values tried per knob: `[optimizer] levels`, and a policy entry's `optimizer_levels`.
pub const MAX_LEVELS: usize = 64;

/// The most trials per search. Each step refits the GPs on every trial so far (the likelihood
/// is O(n³)) and scores every candidate against them (O(n²) each), inside the agent's window
/// processing: measured in replay on a 340-row table (release build), 100 trials take 0.49 s in
/// all, 200 take 4.4 s and 340 take 25 s, so a budget without a bound could stall the agent for
/// seconds a window. 200 trials are hours to days of windows already.
pub const MAX_BUDGET: usize = 200;

impl OptimizerSettings {
    /// The first invalid key and why (the configuration names its file).
    pub fn invalid(&self) -> Option<(&'static str, String)> {
        if self.windows_per_trial == 0 {
            return Some(("optimizer.windows_per_trial", "must be at least 1".into()));
        }
        if !(2..=MAX_LEVELS).contains(&self.levels) {
            return Some((
                "optimizer.levels",
                format!("is {}; it must be between 2 and {MAX_LEVELS}", self.levels),
            ));
        }
        if !(2..=MAX_BUDGET).contains(&self.budget) {
            return Some((
                "optimizer.budget",
                format!(
                    "is {}; it must be between 2 and {MAX_BUDGET} (each trial makes the model's \
                     next step slower, as the cube of the trials so far)",
                    self.budget
                ),
            ));
        }
        // Half an SLO turns the loop off at `kpo run` (`off`: "no SLO"): a typo `kpo check`
        // should catch before rollout, not a choice.
        match (self.slo_port, self.slo_max_us) {
            (Some(_), None) => {
                return Some((
                    "optimizer.slo_max_us",
                    "is missing while slo_port is set: an SLO needs both, the port whose request \
                     latency it bounds and the bound in microseconds"
                        .into(),
                ))
            }
            (None, Some(_)) => {
                return Some((
                    "optimizer.slo_port",
                    "is missing while slo_max_us is set: an SLO needs both, the port whose \
                     request latency it bounds and the bound in microseconds"
                        .into(),
                ))
            }
            _ => {}
        }
        // No socket listens on port 0 (binding it picks another): the SLO would never be timed.
        if self.slo_port == Some(0) {
            return Some((
                "optimizer.slo_port",
                "is 0, which is never a listening port: give the port whose request latency is \
                 the SLO (e.g. 8080)"
                    .into(),
            ));
        }
        if let Some(v) = self.slo_max_us {
            if !(v.is_finite() && v > 0.0) {
                return Some((
                    "optimizer.slo_max_us",
                    format!("is {v}; it must be a positive number of microseconds"),
                ));
            }
        }
        if self.recheck_every == 0 {
            return Some(("optimizer.recheck_every", "must be at least 1".into()));
        }
        if !(self.ei_stop.is_finite() && self.ei_stop >= 0.0) {
            return Some((
                "optimizer.ei_stop",
                format!(
                    "is {}; it must be 0 (explore the whole budget) or a positive number",
                    self.ei_stop
                ),
            ));
        }
        for (key, v) in [
            ("optimizer.load_change_rel", self.load_change_rel),
            (
                "optimizer.recheck_tolerance_rel",
                self.recheck_tolerance_rel,
            ),
        ] {
            if !(v.is_finite() && v > 0.0) {
                return Some((
                    key,
                    format!("is {v}; it must be a positive fraction (0.25 is 25%)"),
                ));
            }
        }
        None
    }
}
