//! The live loop: move real knobs, measure, learn, keep the best.
//!
//! The agent calls [`LiveOptimizer::step`] once per trial with the [`Measurement`] of the
//! configuration held since the last step, and the loop decides what to hold next:
//!
//! 1. **Load change.** If the measured load (request rate) differs from the rate the model was
//!    built at by more than `load_change_rel`, the model is thrown away and the search restarts
//!    from the current configuration (the best configuration depends on load). The window right
//!    after going back from a breach is the breach's as much: neither judged nor learned.
//! 2. **Learn.** While exploring, the measurement (feasible or not) is told to the optimizer;
//!    a configuration outside the space (a start beyond the policy's bounds) is not.
//! 3. **SLO guard.** If the trial broke the SLO, the loop goes back at once to the best feasible
//!    configuration known (or the configuration it started from) and holds that for the next
//!    trial. A held best that breaks the SLO restarts the search from the start configuration.
//! 4. **Explore or hold.** While exploring, the next proposal is tried, unless the budget is
//!    spent or the best acquisition value fell below `ei_stop` (converged): then the best feasible
//!    configuration is tried and held. While holding, every `recheck_every` trials the mean
//!    objective is compared with what the best was measured at; if it is worse by more than
//!    `recheck_tolerance_rel`, the search restarts.
//!
//! At shutdown, [`LiveOptimizer::settle`] puts the best feasible configuration measured (or the
//! start; or what the knobs held before the trials, when the start is a trial a stopped agent
//! left and it was measured beyond the SLO) in place of a trial, so that no experiment outlives the agent unwatched.
//!
//! The loop reaches the kernel only through [`Knobs`]: in the agent, the change path (policy,
//! write-ahead journal, actuators, read-back) with the guard watching (`super::agent`). A
//! proposal the policy refuses for good is never proposed again; one refused for now (cooldown,
//! hourly limit, pause, an operator's approval) is waited for, and nothing is learned meanwhile.
//! Going back after an SLO breach is a revert through the journal and always happens.

use serde::{Deserialize, Serialize};

use super::bo::{BoConfig, BoError, Constraint, Optimizer, Proposal, ProposalKind};
use super::space::Space;
use crate::energy::EnergySource;

/// Largest search space the live loop enumerates.
pub const MAX_LIVE_CANDIDATES: usize = 50_000;

/// Proposals refused for good or failed in one step before the loop holds what it has until the
/// next trial: a NIC that refuses every write would otherwise be written to and rolled back, and
/// journaled, once per candidate within one window.
pub const MAX_SET_ASIDE_PER_STEP: usize = 3;

/// Proposals set aside in one step for a quarantined value, which writes nothing, before the
/// loop holds what it has until the next trial: each costs a refit and a scoring of every
/// candidate, and a space of thousands must not hold up the agent's loop (s53 review3 L1).
pub const MAX_QUARANTINED_PER_STEP: usize = 64;

/// Ends an `apply_failed` error whose configuration is tried again (docs/events.md).
const FAILED_FOR_A_WHILE: &str = "(not the value's fault: tried again later)";

/// The longest wait between two tries of a configuration whose write failed for a while, in the
/// loop's steps (trials): ten minutes at the default 10 s window and one window per trial.
pub(crate) const MAX_RETRY_WAIT_TRIALS: u32 = 64;

/// Waits between the tries of a configuration whose write failed for a while (a file system
/// read-only, a device busy): the next trial, then after waits of 1, 2, 4 ... trials up to
/// [`MAX_RETRY_WAIT_TRIALS`]. Each try writes (a group's earlier members are written and undone)
/// and journals, and a file read-only for good (a container's /sys) would otherwise do so every
/// trial, taking the hourly limit of changes with it (s48 storyP P-1).
#[derive(Debug, Clone, PartialEq, Default)]
struct RetryWait {
    /// Trials still to wait before the next try.
    left: u32,
    /// The wait after the next failed try.
    next: u32,
}

impl RetryWait {
    /// One try more failed for a while.
    fn failed(&mut self) {
        self.left = self.next;
        self.next = (self.next * 2).clamp(1, MAX_RETRY_WAIT_TRIALS);
    }

    /// Whether what a try came to ends the waits: applied, or given up. A refusal for now (a
    /// cooldown, the hourly limit) says nothing of the write, and leaves them as they are
    /// (s48 review M3: it started them over, and a read-only file took the hourly limit again
    /// every hour).
    fn settled_by(tried: &Tried) -> bool {
        matches!(
            tried,
            Tried::Applied
                | Tried::Refused { retry: false, .. }
                | Tried::Failed { retry: false, .. }
        )
    }

    /// Whether to try now; counts a trial off the wait when not.
    fn due(&mut self) -> bool {
        if self.left == 0 {
            return true;
        }
        self.left -= 1;
        false
    }
}

/// What trying a configuration came to.
#[derive(Debug, Clone, PartialEq)]
pub enum Tried {
    /// Every knob has its new value, read back.
    Applied,
    /// The policy refused a knob's value; nothing was changed. `retry`: the refusal passes with
    /// time or an operator (cooldown, hourly limit, pause, approval), so the loop waits for it
    /// rather than giving the configuration up.
    Refused { reason: String, retry: bool },
    /// The kernel did not take it. `rolled_back`: what had changed was put back; when not, the
    /// kernel holds part of it, and the loop tries nothing else before the caller has taken that
    /// back. `retry`: the write failed for a while, not for the value (a file system remounted
    /// read-only, a busy device), so the loop tries the configuration again rather than give it
    /// up; another would fail the same way.
    Failed {
        error: String,
        rolled_back: bool,
        retry: bool,
    },
}

/// The knobs as the loop sees them: one value per space dimension, in order.
pub trait Knobs {
    /// Try `to` (the loop holds `from` now): all knobs or none.
    fn try_config(&mut self, from: &[f64], to: &[f64], why: ChangeReason) -> Tried;
    /// Go back from `from` to `to`, a configuration held before (through the journal in the
    /// agent), for the reason `why`. Not subject to the policy's limits: it undoes the loop's own
    /// changes. `Ok`: the configuration reached, `to` but for a knob whose revert found someone
    /// else's value in place and left it there (at each of a group's members), which keeps its
    /// value in `from` (not reached: the next window reads the kernel's).
    fn revert_to(
        &mut self,
        from: &[f64],
        to: &[f64],
        why: GoBack,
    ) -> Result<Vec<f64>, RevertFailure>;
    /// Whether the loop may go back to `to` (in the agent: none of its values quarantined by the
    /// guard since it was measured).
    fn allowed(&mut self, _to: &[f64]) -> bool {
        true
    }
    /// Whether a trial from `from` may move to `to`: [`Knobs::allowed`] of the knobs that move
    /// only (a trial writes only those; a value quarantined while it stays in place, its
    /// revert's write having failed, does not bar every configuration that keeps it).
    fn allowed_move(&mut self, _from: &[f64], to: &[f64]) -> bool {
        self.allowed(to)
    }
    /// Whether `to` lies within the policy's bounds. Asked only when a reload ends the loop
    /// ([`GoBack::Reload`]): the new bounds may exclude what the old ones allowed, while in a
    /// loop's own life every configuration it measured was within them, and its start need not be.
    fn within_policy(&mut self, _to: &[f64]) -> bool {
        true
    }
    /// Whether `to`, settled on at a stop, lets `on_exit = "revert"` put back what it reverts
    /// next (in the agent: a cpufreq limit's original, which the kept other limit must not cross).
    fn survives_exit(&mut self, _to: &[f64]) -> bool {
        true
    }
}

/// A revert of [`Knobs::revert_to`] that did not take at some knob.
#[derive(Debug, Clone, PartialEq)]
pub struct RevertFailure {
    pub error: String,
    /// Each revert that did not take is owed, tried again at later windows (in the agent:
    /// [`super::agent`]'s owed roll-backs): the loop takes this configuration, what it would
    /// have reached, as its own. `None`: it stays at `from` (s48 storyP P-6: a revert of the
    /// loop's that failed once left a group's members apart until an operator set them alike).
    pub owed: Option<Vec<f64>>,
}

/// What a `revert_failed` whose reverts are owed says of them.
pub const OWED: &str = "; tried again at the next window, then after a wait that doubles";

/// Why the loop goes back to the best configuration it measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GoBack {
    /// The trial broke the SLO.
    SloBreach,
    /// No request completed under the trial (it may hold responses longer than a window): back
    /// as after a breach, but the journal must not say a latency was measured over the SLO.
    NoRequests,
    /// The agent is stopping: a trial nobody will measure is not left in place.
    Stopping,
    /// The knobs searched change (one yielded to a person, or handed back): the new search
    /// starts from a configuration measured, not from a trial.
    Regroup,
    /// A reloaded policy changed the optimizer's entries: this loop ends, and the next one
    /// starts from a configuration measured, not from a trial. The configuration in place must
    /// itself be allowed to stay (the new bounds may exclude it).
    Reload,
}

impl GoBack {
    pub fn as_str(self) -> &'static str {
        match self {
            GoBack::SloBreach => "SLO breach",
            GoBack::NoRequests => "no request completed under the trial",
            GoBack::Stopping => "agent stopping",
            GoBack::Regroup => "knobs regrouped",
            GoBack::Reload => "policy reloaded",
        }
    }
}

/// What one trial (one or more windows) saw.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Measurement {
    /// Energy used over the trial, joules.
    pub energy_j: f64,
    /// Whether `energy_j` was measured or estimated.
    pub energy_source: EnergySource,
    /// Requests (units of work) completed over the trial.
    pub requests: f64,
    /// Trial length, seconds.
    pub window_s: f64,
    /// The SLO's request-latency percentile over the trial, microseconds.
    pub latency_us: f64,
    /// Requests completed per second, used to detect load changes (against an earlier
    /// measurement of the same configuration: under clients that wait for each answer, the rate
    /// completed moves with the configuration).
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

/// The service-level objective: the constraints of the search and the breach signal.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Slo {
    /// The request-latency percentile must stay at or below this, microseconds.
    pub latency_us_max: Option<f64>,
    /// Throughput must stay at or above this, requests per second.
    pub min_throughput_rps: Option<f64>,
}

impl Slo {
    fn constraints(&self) -> Vec<Constraint> {
        let mut c = Vec::new();
        if let Some(p) = self.latency_us_max {
            c.push(Constraint::at_most("latency_us", p));
        }
        if let Some(t) = self.min_throughput_rps {
            c.push(Constraint::at_least("throughput_rps", t));
        }
        c
    }

    fn values(&self, m: &Measurement) -> Vec<f64> {
        let mut v = Vec::new();
        if self.latency_us_max.is_some() {
            v.push(m.latency_us);
        }
        if self.min_throughput_rps.is_some() {
            v.push(m.throughput_rps());
        }
        v
    }

    pub fn holds(&self, m: &Measurement) -> bool {
        self.latency_us_max.is_none_or(|p| m.latency_us <= p)
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
    /// Joules per trial (for a steady request rate).
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

/// Tuning of the search (every field has a default).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LiveConfig {
    pub slo: Slo,
    pub objective: Objective,
    /// Evaluations per search: the start and each trial, measured or sent back unmeasured (a
    /// return to a configuration measured before is learned but not counted). Never exceeded: a
    /// measurement once it is spent is not learned.
    pub budget: usize,
    /// Space-filling proposals after the start.
    pub initial_points: usize,
    /// Proposals before the convergence test may stop the search.
    pub min_proposals: usize,
    /// Stop exploring when the best constrained expected improvement is below this (in log units
    /// of the objective, so 0.001 is about 0.1%).
    pub ei_stop: f64,
    /// Relative change of the load rate, at a configuration measured before, that restarts the
    /// search.
    pub load_change_rel: f64,
    /// Trials between re-checks of the held best.
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
    /// An SLO breach under values none of which was the loop's to take back (an operator's
    /// `kpo apply` on every knob): the best feasible configuration measured, applied over them.
    Back,
}

impl ChangeReason {
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeReason::Explore => "explore",
            ChangeReason::Converge => "converge",
            ChangeReason::Back => "back",
        }
    }
}

/// Phase of the loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    Exploring,
    Holding,
}

/// What happened in a step (the `optimizer` event's `event` field, docs/events.md).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum LiveEvent {
    /// The agent started the loop (`super::agent`): the configuration found, the SLO, and the
    /// knobs the policy names that could not be used.
    Started {
        config: Vec<f64>,
        slo_port: u16,
        slo_percentile: super::agent::Percentile,
        slo_max_us: f64,
        windows_per_trial: u32,
        left_out: Vec<String>,
    },
    /// The policy gives the optimizer knobs but the loop cannot run (said at the agent's start,
    /// and at a reload that changes the optimizer's entries).
    Off {
        reason: String,
    },
    /// A window that is not a measurement (no timed requests, no energy, an estimate not
    /// allowed); said when the reason first appears. The trial continues.
    Unmeasured {
        reason: String,
    },
    /// No request completed under the trial `config` in a window (see
    /// [`LiveOptimizer::no_requests_under_trial`]): a `reverted` follows.
    NoRequests {
        config: Vec<f64>,
    },
    /// The knobs were changed during the window by someone else: the window is not learned and
    /// the loop continues from `config`.
    Resynced {
        config: Vec<f64>,
        reason: String,
    },
    /// A trial's measurement; `learned`: told to the model (not while holding, waiting, for a
    /// configuration outside the space, or once the budget is spent).
    Measured {
        config: Vec<f64>,
        objective: f64,
        latency_us: f64,
        throughput_rps: f64,
        load_rps: f64,
        feasible: bool,
        learned: bool,
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
        latency_us: f64,
        throughput_rps: f64,
    },
    /// Back to a configuration held before, through the journal.
    Reverted {
        from: Vec<f64>,
        to: Vec<f64>,
    },
    /// The knobs searched changed (the agent set knobs yielded to a person aside, or took them
    /// back): a new search over the knobs of the event starts from `config`; `set_aside` names
    /// each knob left out, with its parameters' values (none searched: the loop waits).
    Regrouped {
        config: Vec<f64>,
        set_aside: Vec<String>,
    },
    /// The loop is ending (the agent is stopping, or a reloaded policy changed the optimizer's
    /// entries): the trial in place made way, through the journal, for the best configuration
    /// measured within the SLO (or the start).
    Settled {
        from: Vec<f64>,
        to: Vec<f64>,
    },
    RevertFailed {
        from: Vec<f64>,
        to: Vec<f64>,
        error: String,
    },
    /// The next trial: applied, read back. `proposal`: how the search chose it.
    Applied {
        config: Vec<f64>,
        proposal: ProposalKind,
    },
    /// The policy refused the configuration; nothing changed. `retry`: waited for, not dropped.
    Refused {
        config: Vec<f64>,
        reason: String,
        retry: bool,
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

/// A step that failed partway, with what it did before (a measurement, a restart, a refused or
/// failed proposal whose changes the journal has): the event stream says so too.
#[derive(Debug, thiserror::Error)]
#[error("{error}")]
pub struct StepError {
    pub error: LiveError,
    pub events: Vec<LiveEvent>,
}

#[derive(Debug, thiserror::Error)]
pub enum LiveError {
    #[error(transparent)]
    Optimizer(#[from] BoError),
    #[error(
        "the search space has {points} points over {knobs} knobs, more than \
         {MAX_LIVE_CANDIDATES}: set levels in [optimizer] to at most {max_levels} (and as many \
         in a policy entry's optimizer_levels), or give the optimizer fewer knobs"
    )]
    SpaceTooLarge {
        points: usize,
        knobs: usize,
        /// The most levels per knob that keep the space within [`MAX_LIVE_CANDIDATES`].
        max_levels: usize,
    },
    #[error("the configuration has {got} values but the space has {want} knobs")]
    Arity { got: usize, want: usize },
    #[error("measured objective {0} is not a positive finite number")]
    BadObjective(f64),
}

/// The live optimizer's state between trials.
pub struct LiveOptimizer {
    config: LiveConfig,
    opt: Optimizer,
    start: Vec<f64>,
    current: Vec<f64>,
    phase: Phase,
    /// Each configuration measured since the search (re)started, and the load it was first
    /// measured at: a load change is judged against the same configuration only.
    loads: Vec<(Vec<f64>, f64)>,
    evaluations: usize,
    /// Held configuration and the objective it was chosen with.
    held: Option<(Vec<f64>, Option<f64>)>,
    hold_windows: usize,
    hold_sum: f64,
    restarts: usize,
    /// The last proposal was refused for now: the next measurement repeats the current
    /// configuration and is not learned again.
    waiting: bool,
    /// The proposal refused for now, asked again as it is while nothing else changed: asking
    /// the model anew could break a tie the other way each window.
    waited_for: Option<Proposal>,
    /// How long the next try waits after a write that failed for a while: the waited-for
    /// proposal's, a new proposal's (any configuration would fail the same way), or the converged
    /// best's. Ended by an outcome that settles it ([`RetryWait::settled_by`]) or a restart of
    /// the search; a resync keeps it (s48 review2 N3: a knob unreadable every other window
    /// brought a try every two windows back).
    retry_wait: RetryWait,
    /// The configuration last told to the model: told once, however many trials it is held
    /// (a start that breaks the SLO with nothing better known stays where it is).
    last_told: Option<Vec<f64>>,
    /// The loop went back since the last step, from a trial that broke the SLO or timed no
    /// request: the next measurement is of the window right after, which that trial disturbed.
    just_went_back: bool,
    /// The best found when the search converged, not applied yet (its apply was refused for
    /// now: a cooldown, the hourly limit): tried again each trial, with its objective.
    pending_best: Option<(Vec<f64>, Option<f64>)>,
    /// What the knobs held before the loop's trials, when the start is one of them (a killed
    /// agent left it): where a breach or a settle goes back to while nothing measured has met
    /// the SLO.
    before_trials: Option<Vec<f64>>,
    /// The start was measured beyond the SLO: no settle goes back to it.
    start_broke_slo: bool,
    /// Said once: the configuration in place breaks the SLO and nothing measured met it, so the
    /// loop changes nothing until a window meets it (s61 story CB-2: only a `slo_breach` event
    /// per window said so, and the log nothing past "live loop on").
    said_nothing_safer: bool,
    /// Where the loop last went back to after a breach, until it is learned: a return is no
    /// trial of the budget's, even to a configuration this search has not measured (what the
    /// knobs held before a killed agent's trial: s58 story BG-2).
    returned_to: Option<Vec<f64>>,
    /// The proposal applied last (point, candidate index), until a step measures it: while it
    /// is [`Self::current`], a trial is in place.
    untested: Option<(Vec<f64>, usize)>,
    /// The energy source of the last measurement.
    measured_by: Option<EnergySource>,
}

impl LiveOptimizer {
    /// A search over `space` from `start`, the configuration the knobs hold now.
    pub fn new(space: Space, start: Vec<f64>, config: LiveConfig) -> Result<Self, LiveError> {
        Self::new_where(space, start, config, |_| true)
    }

    /// [`LiveOptimizer::new`] over the points of `space` that `possible` keeps (a cpufreq
    /// policy's `scaling_min_freq` above its `scaling_max_freq` is not a configuration the
    /// kernel can hold, and trying one would write half of it).
    pub fn new_where(
        space: Space,
        start: Vec<f64>,
        config: LiveConfig,
        possible: impl Fn(&[f64]) -> bool,
    ) -> Result<Self, LiveError> {
        let mut candidates =
            space
                .enumerate(MAX_LIVE_CANDIDATES)
                .ok_or_else(|| LiveError::SpaceTooLarge {
                    points: space.size(),
                    knobs: space.dims(),
                    max_levels: (2..)
                        .take_while(|&l: &usize| {
                            l.checked_pow(space.dims() as u32)
                                .is_some_and(|n| n <= MAX_LIVE_CANDIDATES)
                        })
                        .last()
                        .unwrap_or(1),
                })?;
        candidates.retain(|c| possible(c));
        if start.len() != space.dims() {
            return Err(LiveError::Arity {
                got: start.len(),
                want: space.dims(),
            });
        }
        let bo = BoConfig {
            initial_points: config.initial_points,
            ..BoConfig::default()
        };
        let opt = Optimizer::new(space, candidates, config.slo.constraints(), bo, config.seed)?;
        Ok(Self {
            config,
            opt,
            current: start.clone(),
            start,
            phase: Phase::Exploring,
            loads: Vec::new(),
            evaluations: 0,
            held: None,
            hold_windows: 0,
            hold_sum: 0.0,
            restarts: 0,
            waiting: false,
            retry_wait: RetryWait::default(),
            waited_for: None,
            last_told: None,
            just_went_back: false,
            returned_to: None,
            pending_best: None,
            before_trials: None,
            start_broke_slo: false,
            said_nothing_safer: false,
            untested: None,
            measured_by: None,
        })
    }

    pub fn config(&self) -> &LiveConfig {
        &self.config
    }

    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// The configuration the loop holds now.
    pub fn current(&self) -> &[f64] {
        &self.current
    }

    /// The configuration found at start.
    pub fn start(&self) -> &[f64] {
        &self.start
    }

    /// The start is a trial of the loop's that a stopped agent left in place, and `config` what
    /// the knobs held before its trials: a breach or a settle (stopping, a regroup, a reload)
    /// with nothing measured within the SLO goes back there instead of to the start.
    pub fn set_before_trials(&mut self, config: Vec<f64>) {
        self.before_trials = (config != self.start).then_some(config);
    }

    /// The held best while holding.
    pub fn held(&self) -> Option<&[f64]> {
        self.held.as_ref().map(|(c, _)| c.as_slice())
    }

    pub fn restarts(&self) -> usize {
        self.restarts
    }

    pub fn optimizer(&self) -> &Optimizer {
        &self.opt
    }

    /// The knobs hold `config`, not what the loop set (an operator or the guard changed them):
    /// continue from there.
    pub fn resync(&mut self, config: Vec<f64>) {
        self.current = config;
        self.waiting = false;
        self.waited_for = None;
        // Not over someone else's values: a best still to apply waits for the next search.
        self.pending_best = None;
        if self.phase == Phase::Holding {
            // What is held now is theirs: re-checked against what it was measured at, if it was.
            self.hold_current();
            self.hold_windows = 0;
            self.hold_sum = 0.0;
        }
    }

    /// A window the loop does not learn from though the knobs hold its own values, as far as they
    /// can be read (`as_one`: whether each knob reads as one value; a group's members set apart
    /// by someone else, or one that cannot be read, do not). Without a converged best waiting to
    /// be applied, a resync to the configuration in place. With one, it keeps waiting (a resync
    /// would drop it, and the last trial would stay for good), and when `retry` its move is
    /// tried again, as a step while holding tries it ([`Self::hold`]): applied, refused for now
    /// (waiting on), or refused for good or failed (the loop holds what it has). Not a move that
    /// writes a knob that cannot be read as one: it would write over someone else's value in the
    /// group, or fail on the file that cannot be read and be rolled back; it waits until the
    /// knob reads as one again, when the window's step (or this, for a window someone else
    /// touched) tries it.
    pub fn resync_own(
        &mut self,
        as_one: &[bool],
        retry: bool,
        knobs: &mut dyn Knobs,
    ) -> Vec<LiveEvent> {
        let mut ev = Vec::new();
        let Some((best, objective)) = self.pending_best.take() else {
            self.resync(self.current.clone());
            return ev;
        };
        self.waiting = false;
        self.waited_for = None;
        let writes_unread = best
            .iter()
            .zip(&self.current)
            .zip(as_one)
            .any(|((b, c), one)| b != c && !one);
        // The waits after a write that failed for a while hold here too (s48 review L2).
        if retry && !writes_unread && best.len() == as_one.len() && self.retry_wait.due() {
            self.go_to_best(best, objective, knobs, &mut ev);
        } else {
            self.pending_best = Some((best, objective));
        }
        ev
    }

    fn restart(&mut self, load: f64, reason: &str, ev: &mut Vec<LiveEvent>) {
        self.opt.reset();
        self.said_nothing_safer = false;
        self.phase = Phase::Exploring;
        self.loads = vec![(self.current.clone(), load)];
        self.evaluations = 0;
        self.held = None;
        self.hold_windows = 0;
        self.hold_sum = 0.0;
        self.restarts += 1;
        self.returned_to = None;
        self.waiting = false;
        self.waited_for = None;
        self.retry_wait = RetryWait::default();
        self.last_told = None;
        self.pending_best = None;
        ev.push(LiveEvent::Restarted {
            reason: reason.to_string(),
        });
    }

    /// The `measured` event of `m`, taken at the configuration in place.
    fn measured(
        &self,
        m: &Measurement,
        objective: f64,
        feasible: bool,
        learned: bool,
    ) -> LiveEvent {
        LiveEvent::Measured {
            config: self.current.clone(),
            objective,
            latency_us: m.latency_us,
            throughput_rps: m.throughput_rps(),
            load_rps: m.load_rps,
            feasible,
            learned,
            energy_source: m.energy_source,
        }
    }

    /// The trial in place goes back before a measurement of it: not proposed again (the model,
    /// which learnt nothing, would propose it at once), and one of the budget's evaluations all
    /// the same, since the operator saw it applied.
    fn give_up_untested(&mut self, index: usize) {
        self.opt.exclude(index);
        self.evaluations += 1;
    }

    /// Whether `point` can be told to the model: each value within its knob's levels (between
    /// two levels is fine, a start off the grid). Not through `normalize`, which clamps a value
    /// beyond the levels to the nearest end: a start above the policy's max would be learned as
    /// if measured at the max, and the model would credit that level with what another
    /// configuration did.
    fn learnable(&self, point: &[f64]) -> bool {
        let space = self.opt.space();
        point.len() == space.dims()
            && point.iter().enumerate().all(|(i, v)| {
                let levels = space.levels(i);
                levels[0] <= *v && *v <= levels[levels.len() - 1]
            })
    }

    /// `m` measured the current configuration over the last trial: learn, and decide what to
    /// hold next through `knobs`.
    pub fn step(
        &mut self,
        m: &Measurement,
        knobs: &mut dyn Knobs,
    ) -> Result<Vec<LiveEvent>, StepError> {
        let mut events = Vec::new();
        match self.step_inner(m, knobs, &mut events) {
            Ok(()) => Ok(events),
            Err(error) => Err(StepError { error, events }),
        }
    }

    fn step_inner(
        &mut self,
        m: &Measurement,
        knobs: &mut dyn Knobs,
        ev: &mut Vec<LiveEvent>,
    ) -> Result<(), LiveError> {
        self.untested = None;
        let objective = self.config.objective.value(m);
        if !(objective.is_finite() && objective > 0.0) {
            return Err(LiveError::BadObjective(objective));
        }
        let slo = self.config.slo;
        let feasible = slo.holds(m);

        // 1. The energy source changed (the agent set aside one that stopped giving figures):
        // what the model learnt, and what a held configuration was measured at, are in another
        // source's joules, which an estimate does not match and another meter need not. Start
        // over with this measurement as the first.
        if let Some(before) = self.measured_by.replace(m.energy_source) {
            if before != m.energy_source {
                let reason = format!(
                    "the energy source changed from {before} to {}: what was measured before is \
                     not comparable",
                    m.energy_source
                );
                self.restart(m.load_rps, &reason, ev);
            }
        }

        // The window right after going back from a trial (a breach, a window that timed no
        // request) is that trial's as much as the configuration's: requests it held complete
        // then, at a latency and a rate (a backlog drains at more than the offered rate) that
        // are not this configuration's. It is neither learned nor judged (load, SLO), and nothing
        // is tried: the next window at the same configuration is. Judged, a drained backlog read
        // as a load change restarted the search, which forgot the breach and proposed the same
        // trial again (s44 storyB: one breach eight times in two minutes), and a latency over the
        // SLO was learned as this configuration's.
        if std::mem::take(&mut self.just_went_back) {
            ev.push(self.measured(m, objective, feasible, false));
            return Ok(());
        }

        // 2. Load change. The rate is of completed requests: under clients that wait for each
        // answer (a fixed number of connections) it moves with the configuration itself, so only
        // a configuration measured again (the best after a breach, the one held) can tell a
        // change of load from its own effect.
        match self.loads.iter().find(|(c, _)| *c == self.current) {
            None => self.loads.push((self.current.clone(), m.load_rps)),
            Some(&(_, r)) => {
                if (m.load_rps - r).abs() > self.config.load_change_rel * r.abs().max(1e-9) {
                    ev.push(LiveEvent::LoadChanged {
                        from_rps: r,
                        to_rps: m.load_rps,
                    });
                    self.restart(m.load_rps, "load changed", ev);
                }
            }
        }

        // A held best that breaks the SLO invalidates the model: restart. Not while the best
        // waits to be applied: what broke the SLO is the last trial, still in place, and the
        // guard below takes the loop to that best.
        if !feasible && self.holding() {
            self.restart(m.load_rps, "held configuration broke the SLO", ev);
        }

        // 3. Learn.
        let current = self.current.clone();
        // Not once the budget is spent: the return to the best after the last trial broke the
        // SLO would be one evaluation more than the operator allowed.
        let learned = self.phase == Phase::Exploring
            && !self.waiting
            && self.last_told.as_ref() != Some(&current)
            && self.evaluations < self.config.budget
            && self.learnable(&current);
        if learned {
            self.waited_for = None;
            // A configuration this search measured before (the best, or the start, the loop went
            // back to after a breach) is learned again but is no trial of the budget's.
            let returned = self.returned_to.take();
            let revisit = returned.as_ref() == Some(&current)
                || self.opt.observations().iter().any(|o| o.point == current);
            self.opt.tell(&current, objective, &slo.values(m))?;
            if !revisit {
                self.evaluations += 1;
            }
            self.last_told = Some(current.clone());
        }
        self.waiting = false;
        ev.push(self.measured(m, objective, feasible, learned));

        // 4. SLO guard.
        if !feasible {
            self.start_broke_slo |= self.current == self.start;
            ev.push(LiveEvent::SloBreach {
                config: self.current.clone(),
                latency_us: m.latency_us,
                throughput_rps: m.throughput_rps(),
            });
            let (from, said) = (self.current.clone(), ev.len());
            self.go_back(knobs, ev);
            if self.phase == Phase::Exploring && self.current == from && ev.len() == said {
                self.apply_best_over_others(knobs, ev);
            }
            if self.current == from && self.opt.feasible_points().is_empty() {
                self.say_nothing_safer(m);
            }
            return Ok(());
        }

        // 5. Explore or hold.
        match self.phase {
            Phase::Exploring => self.explore(knobs, ev),
            Phase::Holding => self.hold(m, knobs, ev),
        }
    }

    /// A trial that could not be measured (no energy reading) still broke the latency SLO:
    /// back at once, as [`Self::step`] would, without learning anything from it.
    pub fn breach_unmeasured(
        &mut self,
        latency_us: f64,
        throughput_rps: f64,
        knobs: &mut dyn Knobs,
    ) -> Vec<LiveEvent> {
        let mut ev = Vec::new();
        if self
            .config
            .slo
            .latency_us_max
            .is_none_or(|max| latency_us <= max)
        {
            return ev;
        }
        if self.holding() {
            self.restart(throughput_rps, "held configuration broke the SLO", &mut ev);
        }
        // Not learned, but not to be proposed again either (as after a window without
        // requests): the model has not changed, and would propose it at once.
        if let Some((point, index)) = self.untested.take() {
            if point == self.current {
                self.give_up_untested(index);
            }
        }
        // What it goes back to is measured from the window after next (the next is this
        // trial's as much: step_inner), and learned.
        self.waiting = false;
        self.waited_for = None;
        self.start_broke_slo |= self.current == self.start;
        ev.push(LiveEvent::SloBreach {
            config: self.current.clone(),
            latency_us,
            throughput_rps,
        });
        self.go_back(knobs, &mut ev);
        ev
    }

    /// No request on the SLO's port completed in a window under the trial in place, which was
    /// applied after a window where they did: the trial may hold responses longer than a window
    /// (a coalescing delay, a frequency too low for the load), which no percentile shows, since
    /// only completed requests are timed. Back at once, as after a breach, and the configuration
    /// is never proposed again. Traffic that stopped by itself costs one candidate. Nothing
    /// without a trial in place: a configuration measured before (the start, the best held) is
    /// not to blame for a quiet window.
    pub fn no_requests_under_trial(&mut self, knobs: &mut dyn Knobs) -> Vec<LiveEvent> {
        let mut ev = Vec::new();
        let Some((point, index)) = self.untested.take() else {
            return ev;
        };
        if point != self.current {
            return ev;
        }
        self.give_up_untested(index);
        self.waiting = false;
        self.waited_for = None;
        ev.push(LiveEvent::NoRequests { config: point });
        self.go_back_because(knobs, &mut ev, GoBack::NoRequests);
        ev
    }

    /// Back to the best feasible configuration measured, or the start; nothing to do when that
    /// is the configuration held.
    fn go_back(&mut self, knobs: &mut dyn Knobs, ev: &mut Vec<LiveEvent>) {
        self.go_back_because(knobs, ev, GoBack::SloBreach)
    }

    fn go_back_because(&mut self, knobs: &mut dyn Knobs, ev: &mut Vec<LiveEvent>, why: GoBack) {
        let from = self.current.clone();
        if let Some(e) = self.back_to_best(knobs, why) {
            ev.push(e);
        }
        self.just_went_back = self.current != from;
        if self.just_went_back {
            self.returned_to = Some(self.current.clone());
        }
        // The search had converged and its best waited to be applied (refused for now) under
        // the last trial: going back took the loop to that best (or, if the guard quarantined
        // it since, to the cheapest one still allowed), which it now holds. A revert that failed
        // and is not owed leaves the best pending.
        if self.current != from {
            if let Some((best, objective)) = self.pending_best.take() {
                self.hold_windows = 0;
                self.hold_sum = 0.0;
                if self.current == best {
                    self.held = Some((best, objective));
                } else {
                    self.hold_current();
                }
            }
        }
    }

    /// Warns, once, that the configuration in place breaks the SLO and that no configuration
    /// measured has met it: the loop then changes nothing, documented but seen only in the
    /// event stream before.
    fn say_nothing_safer(&mut self, m: &Measurement) {
        if std::mem::replace(&mut self.said_nothing_safer, true) {
            return;
        }
        let slo = &self.config.slo;
        let mut past = Vec::new();
        if let Some(max) = slo.latency_us_max.filter(|max| m.latency_us > *max) {
            past.push(format!(
                "latency {:.0} µs, the limit {max:.0} µs",
                m.latency_us
            ));
        }
        if let Some(min) = (slo.min_throughput_rps).filter(|min| m.throughput_rps() < *min) {
            past.push(format!(
                "throughput {:.1}/s, the least {min:.1}/s",
                m.throughput_rps()
            ));
        }
        tracing::warn!(
            "optimizer: {:?} breaks the SLO ({}) and no configuration measured since the search \
             (re)started has met it, so the loop changes nothing until a window meets the SLO \
             (docs/optimizer.md, SLO guard); if the knobs' values in place are too low for the \
             load, raise them (kpo apply) or loosen the SLO",
            self.current,
            past.join("; ")
        );
    }

    /// After a breach that going back could not answer: nothing of the loop's was in place to
    /// take back, the knobs it would move holding someone else's values, an operator's `kpo
    /// apply` most often, which the loop does not yield to (docs/optimizer.md, *Someone else's
    /// values*). Left there, every window broke the SLO and the search never moved again, with
    /// no word (s61 story CB-1): the best configuration measured within the SLO is applied over
    /// them, as the loop's next trial would be, and the search goes on from it.
    fn apply_best_over_others(&mut self, knobs: &mut dyn Knobs, ev: &mut Vec<LiveEvent>) {
        let target = self.best_target(knobs, GoBack::SloBreach);
        // Only a configuration measured within the SLO: never the start that fallback gives
        // when none was (it may itself break the SLO, and would undo every hand-fix), nor
        // anything right after a restart, which forgot what was measured (s61 review1 R1-1).
        let measured_within = (self.opt.feasible_points().iter()).any(|o| o.point == target);
        if target == self.current || !measured_within {
            return;
        }
        let from = self.current.clone();
        match knobs.try_config(&from, &target, ChangeReason::Back) {
            Tried::Applied => {
                self.current = target.clone();
                self.just_went_back = true;
                self.returned_to = Some(target.clone());
                ev.push(LiveEvent::Reverted { from, to: target });
            }
            Tried::Refused { reason: error, .. } | Tried::Failed { error, .. } => {
                ev.push(LiveEvent::RevertFailed {
                    from,
                    to: target,
                    error,
                });
            }
        }
    }

    /// At shutdown: the best feasible configuration measured (or the start) in place of a trial
    /// that nobody will measure or guard against the SLO. Nothing while a measured configuration
    /// is held (the best, or the last trial when the move to the best failed: retried knob by
    /// knob, it could leave a mix never measured).
    pub fn settle(&mut self, knobs: &mut dyn Knobs) -> Vec<LiveEvent> {
        self.go_back_for(knobs, GoBack::Stopping)
    }

    /// Back to the best feasible configuration measured (or the start) for `why`, unless a
    /// measured configuration is held (a trial is not in place) and, on a reload, still within
    /// the policy's bounds.
    pub fn go_back_for(&mut self, knobs: &mut dyn Knobs, why: GoBack) -> Vec<LiveEvent> {
        let current = self.current.clone();
        if (why != GoBack::Reload || knobs.within_policy(&current))
            && (why != GoBack::Stopping || knobs.survives_exit(&current))
            && self.holding_measured()
        {
            return Vec::new();
        }
        self.back_to_best(knobs, why).into_iter().collect()
    }

    /// Whether the loop holds a configuration it measured within the SLO (the best, or the last
    /// trial when the move to the best failed), rather than a trial: a proposal, a
    /// configuration passed through while exploring, or the last trial while the best waits.
    fn holding_measured(&self) -> bool {
        self.holding() && matches!(&self.held, Some((c, Some(_))) if *c == self.current)
    }

    /// Whether the loop holds what it has after converging, no trial of its own: a measured
    /// configuration, or one held without a measurement (someone else's values a resync found, a
    /// start never measured within the SLO). The next step judges it: a breach restarts the
    /// search. Not the last trial while the converged best waits to be applied.
    fn holding(&self) -> bool {
        self.phase == Phase::Holding && self.pending_best.is_none()
    }

    /// Someone else changed some of the knobs during the window (an operator's `kpo apply`, the
    /// guard's revert): the kernel holds `now`, not the loop's configuration. The window is no
    /// measurement of the loop's, and the loop continues from `now` ([`Self::resync`]). But when
    /// its timed requests broke the latency SLO while a trial of the loop's was in place (not a
    /// configuration it holds after converging, [`Self::holding`]), the trial's values still there are held to account at
    /// once, as after an unmeasured breach: back to the best feasible configuration measured (or
    /// the start) for those knobs, someone else's values left as they are, and the trial not
    /// proposed again. Left to the next window's step, they would stay a whole window more (a
    /// trial's low frequency limit, likely what broke the SLO, beside an operator's coalescing
    /// value). Under a configuration held (measured, or someone else's values found by a resync
    /// before), that step judges the mix, as it would any configuration held. A revert that
    /// fails, and is not owed, leaves the converged best waiting, as [`Self::go_back`] does.
    pub fn resync_after_breach(
        &mut self,
        now: Vec<f64>,
        latency_us: f64,
        throughput_rps: f64,
        knobs: &mut dyn Knobs,
    ) -> Vec<LiveEvent> {
        let mut ev = Vec::new();
        let breached = self
            .config
            .slo
            .latency_us_max
            .is_some_and(|max| latency_us > max);
        if !breached || now.len() != self.current.len() || self.holding() {
            self.resync(now);
            return ev;
        }
        // Not learned, but not to be proposed again either: the window ran under what is left
        // of it, and under it whole before someone else's change.
        if let Some((point, index)) = self.untested.take() {
            if point == self.current {
                self.give_up_untested(index);
            }
        }
        self.start_broke_slo |= self.current == self.start;
        // Chosen as after any breach, from the loop's own configuration (staying where it is
        // writes nothing); then each knob someone else moved keeps their value.
        let mut target = self.best_target(knobs, GoBack::SloBreach);
        for ((to, kernel), own) in target.iter_mut().zip(&now).zip(&self.current) {
            if kernel != own {
                *to = *kernel;
            }
        }
        // The resync drops a best that waits (not to be applied over someone else's values),
        // but only going back leaves the last trial: while the loop's values stay, a later
        // breach goes to it, as after any revert that failed. It is kept with someone else's
        // values in place of its own on the knobs they moved, since the holding step applies it
        // whole; such a mix was never measured.
        let waiting_best = self.pending_best.clone().map(|(best, objective)| {
            let mixed: Vec<f64> = best
                .iter()
                .zip(&now)
                .zip(&self.current)
                .map(|((best, kernel), own)| if kernel != own { *kernel } else { *best })
                .collect();
            let objective = objective.filter(|_| mixed == best);
            (mixed, objective)
        });
        self.resync(now);
        ev.push(LiveEvent::SloBreach {
            config: self.current.clone(),
            latency_us,
            throughput_rps,
        });
        if target == self.current {
            return ev;
        }
        let from = self.current.clone();
        match knobs.revert_to(&from, &target, GoBack::SloBreach) {
            Ok(reached) if reached == from => self.pending_best = waiting_best,
            Ok(reached) => {
                self.went_back_to(&reached);
                ev.push(LiveEvent::Reverted { from, to: reached });
            }
            Err(RevertFailure {
                error,
                owed: Some(reached),
            }) => {
                self.went_back_to(&reached);
                ev.push(LiveEvent::RevertFailed {
                    from,
                    to: reached,
                    error: format!("{error}{OWED}"),
                });
            }
            Err(RevertFailure { error, owed: None }) => {
                self.pending_best = waiting_best;
                ev.push(LiveEvent::RevertFailed {
                    from,
                    to: target,
                    error,
                });
            }
        }
        ev
    }

    /// Back to the cheapest feasible configuration measured that the knobs still allow (the
    /// guard may have quarantined one since; on a reload, the new bounds may exclude one, the
    /// one in place included), or the start; or, when the start is a trial a stopped agent left,
    /// what the knobs held before the trials after a breach, or once the start broke the SLO.
    fn back_to_best(&mut self, knobs: &mut dyn Knobs, why: GoBack) -> Option<LiveEvent> {
        let target = self.best_target(knobs, why);
        if target == self.current {
            return None;
        }
        let from = self.current.clone();
        Some(match knobs.revert_to(&from, &target, why) {
            // Every knob's revert found someone else's value and left it: nothing moved.
            Ok(reached) if reached == from => return None,
            Ok(reached) => {
                self.current = reached.clone();
                match why {
                    GoBack::SloBreach | GoBack::NoRequests | GoBack::Regroup => {
                        LiveEvent::Reverted { from, to: reached }
                    }
                    GoBack::Stopping | GoBack::Reload => LiveEvent::Settled { from, to: reached },
                }
            }
            Err(RevertFailure {
                error,
                owed: Some(reached),
            }) => {
                self.current = reached.clone();
                LiveEvent::RevertFailed {
                    from,
                    to: reached,
                    error: format!("{error}{OWED}"),
                }
            }
            Err(RevertFailure { error, owed: None }) => LiveEvent::RevertFailed {
                from,
                to: target,
                error,
            },
        })
    }

    /// After a breach, the loop is at `reached`, a configuration it held before.
    fn went_back_to(&mut self, reached: &[f64]) {
        self.current = reached.to_vec();
        if self.phase == Phase::Holding {
            self.hold_current();
            self.hold_windows = 0;
            self.hold_sum = 0.0;
        }
    }

    /// Where [`Self::back_to_best`] goes for `why`.
    fn best_target(&self, knobs: &mut dyn Knobs, why: GoBack) -> Vec<f64> {
        // Staying writes nothing, so a quarantine does not move the loop off the configuration
        // in place, nor bar one that keeps a knob at it (s52 review2 N3); bounds that a reload
        // narrowed under it do.
        self.opt
            .feasible_points()
            .into_iter()
            .map(|o| o.point)
            .find(|point| {
                (why != GoBack::Reload || knobs.within_policy(point))
                    && (why != GoBack::Stopping || knobs.survives_exit(point))
                    && (*point == self.current || knobs.allowed_move(&self.current, point))
            })
            // When the start is a stopped agent's trial: before its trials after a breach, and
            // at any settle once the start itself was measured beyond the SLO (the loop went back
            // from it, and its changes in the journal lead back to before it, not to it). A start
            // never measured so stays the target: it may be the configuration a clean stop kept
            // on purpose (`on_exit = "keep"`), which the journal cannot tell from a kill's trial.
            .unwrap_or_else(|| match &self.before_trials {
                Some(before)
                    if matches!(why, GoBack::SloBreach | GoBack::NoRequests)
                        || self.start_broke_slo =>
                {
                    before.clone()
                }
                _ => self.start.clone(),
            })
    }

    fn explore(&mut self, knobs: &mut dyn Knobs, ev: &mut Vec<LiveEvent>) -> Result<(), LiveError> {
        let (mut set_aside, mut quarantined) = (0, 0);
        loop {
            if set_aside >= MAX_SET_ASIDE_PER_STEP || quarantined >= MAX_QUARANTINED_PER_STEP {
                return Ok(());
            }
            if self.evaluations >= self.config.budget {
                return self.converge(knobs, ev);
            }
            let p = match self.waited_for.take() {
                Some(p) if !self.retry_wait.due() => {
                    self.waiting = true;
                    self.waited_for = Some(p);
                    return Ok(());
                }
                Some(p) => p,
                None if !self.retry_wait.due() => return Ok(()),
                None => match self.opt.ask()? {
                    Some(p) => p,
                    None => return self.converge(knobs, ev),
                },
            };
            let proposals = self.evaluations.saturating_sub(1);
            if p.kind == ProposalKind::ExpectedImprovement
                && proposals >= self.config.min_proposals
                && p.score.is_some_and(|s| s.value < self.config.ei_stop)
            {
                return self.converge(knobs, ev);
            }
            // A value the guard or an operator quarantined would be refused: set aside without
            // asking, which sent a refused `change` and `optimizer` event once per search (s51
            // storyAA F5). Counted apart from the set-asides per step, which keep a NIC that
            // refuses every write from being written once per candidate in one window: it
            // writes nothing, and each candidate is set aside once (s52 review L3).
            if p.point != self.current && !knobs.allowed_move(&self.current, &p.point) {
                self.opt.exclude(p.index);
                quarantined += 1;
                continue;
            }
            let tried = knobs.try_config(&self.current, &p.point, ChangeReason::Explore);
            if RetryWait::settled_by(&tried) {
                self.retry_wait = RetryWait::default();
            }
            match tried {
                Tried::Applied => {
                    ev.push(LiveEvent::Applied {
                        config: p.point.clone(),
                        proposal: p.kind,
                    });
                    self.untested = Some((p.point.clone(), p.index));
                    self.current = p.point;
                    return Ok(());
                }
                Tried::Refused { reason, retry } => {
                    ev.push(LiveEvent::Refused {
                        config: p.point.clone(),
                        reason,
                        retry,
                    });
                    if retry {
                        // Hold what we have; the proposal stays open for the next trial.
                        self.waiting = true;
                        self.waited_for = Some(p);
                        return Ok(());
                    }
                    self.opt.exclude(p.index);
                    set_aside += 1;
                }
                Tried::Failed {
                    error,
                    rolled_back,
                    retry: true,
                } => {
                    ev.push(LiveEvent::ApplyFailed {
                        config: p.point.clone(),
                        error: format!("{error} {FAILED_FOR_A_WHILE}"),
                    });
                    self.retry_wait.failed();
                    if rolled_back {
                        // As a refusal that passes: the proposal stays open for the next trial.
                        self.waiting = true;
                        self.waited_for = Some(p);
                    }
                    return Ok(());
                }
                Tried::Failed {
                    error, rolled_back, ..
                } => {
                    self.opt.exclude(p.index);
                    set_aside += 1;
                    ev.push(LiveEvent::ApplyFailed {
                        config: p.point,
                        error,
                    });
                    // Another trial would be written over a configuration that is not
                    // `current`, and its roll-back would stop at the wrong values.
                    if !rolled_back {
                        return Ok(());
                    }
                }
            }
        }
    }

    fn converge(
        &mut self,
        knobs: &mut dyn Knobs,
        ev: &mut Vec<LiveEvent>,
    ) -> Result<(), LiveError> {
        // The cheapest measured within the SLO that the knobs still allow (the guard may have
        // quarantined one since).
        let (best, objective) = match self
            .opt
            .feasible_points()
            .into_iter()
            .find(|o| o.point == self.current || knobs.allowed_move(&self.current, &o.point))
        {
            Some(o) => (o.point, Some(o.objective)),
            // As a breach would: a start measured beyond the SLO is no place to hold.
            None => match &self.before_trials {
                Some(before) if self.start_broke_slo => (before.clone(), None),
                _ => (self.start.clone(), None),
            },
        };
        ev.push(LiveEvent::Converged {
            best: best.clone(),
            objective,
            evaluations: self.evaluations,
        });
        self.phase = Phase::Holding;
        self.hold_windows = 0;
        self.hold_sum = 0.0;
        if best == self.current {
            self.held = Some((best, objective));
        } else {
            self.go_to_best(best, objective, knobs, ev);
        }
        Ok(())
    }

    /// Moves to the converged best and holds it. Refused for now, or failed for a while (not for
    /// its values), it stays pending (tried again each trial); refused for good or failed, the
    /// loop holds what it has, re-checked against what that was measured at (so a machine that
    /// changed under it still restarts the search).
    fn go_to_best(
        &mut self,
        best: Vec<f64>,
        objective: Option<f64>,
        knobs: &mut dyn Knobs,
        ev: &mut Vec<LiveEvent>,
    ) {
        let tried = knobs.try_config(&self.current, &best, ChangeReason::Converge);
        if RetryWait::settled_by(&tried) {
            self.retry_wait = RetryWait::default();
        }
        match tried {
            Tried::Applied => {
                ev.push(LiveEvent::Applied {
                    config: best.clone(),
                    proposal: ProposalKind::ExpectedImprovement,
                });
                self.current = best.clone();
                self.held = Some((best, objective));
            }
            Tried::Refused { reason, retry } => {
                ev.push(LiveEvent::Refused {
                    config: best.clone(),
                    reason,
                    retry,
                });
                if retry {
                    self.pending_best = Some((best, objective));
                    self.held = Some((self.current.clone(), None));
                } else {
                    self.hold_current();
                }
            }
            Tried::Failed {
                error,
                rolled_back: true,
                retry: true,
            } => {
                ev.push(LiveEvent::ApplyFailed {
                    config: best.clone(),
                    error: format!("{error} {FAILED_FOR_A_WHILE}"),
                });
                self.retry_wait.failed();
                // As a refusal that passes: the best waits to be applied.
                self.pending_best = Some((best, objective));
                self.held = Some((self.current.clone(), None));
            }
            Tried::Failed { error, .. } => {
                ev.push(LiveEvent::ApplyFailed {
                    config: best,
                    error,
                });
                self.hold_current();
            }
        }
    }

    /// Holds the configuration in place, with the objective this search measured it at within
    /// the SLO (the mean of its measurements), if it did.
    fn hold_current(&mut self) {
        let measured = self
            .opt
            .feasible_points()
            .into_iter()
            .find(|o| o.point == self.current)
            .map(|o| o.objective);
        self.held = Some((self.current.clone(), measured));
    }

    fn hold(
        &mut self,
        m: &Measurement,
        knobs: &mut dyn Knobs,
        ev: &mut Vec<LiveEvent>,
    ) -> Result<(), LiveError> {
        if let Some((best, expected)) = self.pending_best.take() {
            // Converged, but the best was refused for now: the last trial is still applied.
            if self.retry_wait.due() {
                self.go_to_best(best, expected, knobs, ev);
            } else {
                self.pending_best = Some((best, expected));
            }
            return Ok(());
        }
        let objective = self.config.objective.value(m);
        self.hold_windows += 1;
        self.hold_sum += objective;
        if self.hold_windows < self.config.recheck_every {
            return Ok(());
        }
        let mean = self.hold_sum / self.hold_windows as f64;
        self.hold_windows = 0;
        self.hold_sum = 0.0;
        let Some((config, expected)) = self.held.clone() else {
            return Ok(());
        };
        let Some(expected) = expected else {
            // Held without a measurement of it (someone else's configuration after a resync, or
            // a start never measured within the SLO): its first mean is what later ones are
            // compared with.
            self.held = Some((config, Some(mean)));
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
            if self.learnable(&config) {
                self.opt
                    .tell(&config, objective, &self.config.slo.values(m))?;
                self.evaluations += 1;
                self.last_told = Some(config.clone());
                // Its `measured` event went out as a held window's, not learned: it is the new
                // search's first point.
                if let Some(LiveEvent::Measured { learned, .. }) = ev
                    .iter_mut()
                    .rev()
                    .find(|e| matches!(e, LiveEvent::Measured { .. }))
                {
                    *learned = true;
                }
            }
            return self.explore(knobs, ev);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// s48 storyP P-1, review M3 and L1: tries of a write that failed for a while come at the
    /// next trial, then after 1, 2, 4 ... up to 64 trials; a refusal for now leaves the waits as
    /// they are, an apply or a give-up starts them over.
    #[test]
    fn retry_waits_double_and_only_an_outcome_of_the_write_ends_them() {
        let mut wait = RetryWait::default();
        let mut tried = Vec::new();
        for trial in 0..200 {
            if wait.due() {
                tried.push(trial);
                wait.failed();
            }
        }
        assert_eq!(&tried[..8], [0, 1, 3, 6, 11, 20, 37, 70]);
        assert_eq!(
            tried[8] - tried[7],
            65,
            "at most 64 trials between two tries"
        );
        let refused = |retry| Tried::Refused {
            reason: String::new(),
            retry,
        };
        let failed = |retry| Tried::Failed {
            error: String::new(),
            rolled_back: true,
            retry,
        };
        assert!(RetryWait::settled_by(&Tried::Applied));
        assert!(RetryWait::settled_by(&refused(false)));
        assert!(RetryWait::settled_by(&failed(false)));
        assert!(
            !RetryWait::settled_by(&refused(true)),
            "a cooldown or the hourly limit"
        );
        assert!(!RetryWait::settled_by(&failed(true)));
    }

    #[test]
    fn config_and_slo_from_json() {
        let c: LiveConfig = serde_json::from_str(
            r#"{"slo":{"latency_us_max":500},"objective":"joules_per_window","budget":12}"#,
        )
        .unwrap();
        assert_eq!(c.slo.latency_us_max, Some(500.0));
        assert_eq!(c.objective, Objective::JoulesPerWindow);
        assert_eq!(c.budget, 12);
        assert_eq!(c.recheck_every, LiveConfig::default().recheck_every);
        assert!(serde_json::from_str::<LiveConfig>(r#"{"budgte":3}"#).is_err());
    }

    /// A machine that takes every configuration.
    struct Machine {
        now: Vec<f64>,
    }

    impl Knobs for Machine {
        fn try_config(&mut self, _from: &[f64], to: &[f64], _why: ChangeReason) -> Tried {
            self.now = to.to_vec();
            Tried::Applied
        }

        fn revert_to(
            &mut self,
            _from: &[f64],
            to: &[f64],
            _why: GoBack,
        ) -> Result<Vec<f64>, RevertFailure> {
            self.now = to.to_vec();
            Ok(to.to_vec())
        }
    }

    fn within_slo() -> Measurement {
        Measurement {
            energy_j: 50.0,
            energy_source: EnergySource::Rapl,
            requests: 1000.0,
            window_s: 1.0,
            latency_us: 200.0,
            load_rps: 1000.0,
        }
    }

    fn learned(events: &[LiveEvent]) -> Option<bool> {
        events.iter().find_map(|e| match e {
            LiveEvent::Measured { learned, .. } => Some(*learned),
            _ => None,
        })
    }

    /// Joules of two sources are not compared: a measurement from another source (the agent set
    /// a meter aside) restarts the search, and is the new search's first point.
    #[test]
    fn a_new_energy_source_restarts_the_search() {
        use crate::advise::optimizer::space::KnobSpec;
        let space = Space::new(vec![KnobSpec::range("k", 0.0, 3.0, 1.0)]).unwrap();
        let start = vec![0.0];
        let mut live = LiveOptimizer::new(space, start.clone(), LiveConfig::default()).unwrap();
        let mut machine = Machine { now: start };
        let events = live.step(&within_slo(), &mut machine).unwrap();
        assert!(!events
            .iter()
            .any(|e| matches!(e, LiveEvent::Restarted { .. })));
        let trial = machine.now.clone();
        let events = live.step(&within_slo(), &mut machine).unwrap();
        assert!(!events
            .iter()
            .any(|e| matches!(e, LiveEvent::Restarted { .. })));
        assert_eq!(live.optimizer().observations().len(), 2);
        assert_ne!(machine.now, trial);

        let here = machine.now.clone();
        let estimated = Measurement {
            energy_source: EnergySource::Estimated,
            ..within_slo()
        };
        let events = live.step(&estimated, &mut machine).unwrap();
        assert!(
            matches!(
                &events[..],
                [LiveEvent::Restarted { reason }, LiveEvent::Measured { config, learned: true, energy_source: EnergySource::Estimated, .. }, ..]
                    if reason == "the energy source changed from rapl to estimated: what was measured before is not comparable"
                        && *config == here
            ),
            "{events:?}"
        );
        assert_eq!(live.restarts(), 1);
        assert_eq!(live.optimizer().observations().len(), 1);
        // The same source again is no change.
        let events = live.step(&estimated, &mut machine).unwrap();
        assert!(!events
            .iter()
            .any(|e| matches!(e, LiveEvent::Restarted { .. })));
        assert_eq!(live.restarts(), 1);
    }

    /// A step that fails partway (here the model refuses a latency that is not a number, after
    /// the load change it saw at a configuration measured again) returns what it did before: the
    /// event stream must still say the search restarted.
    #[test]
    fn a_step_that_fails_partway_returns_what_it_did() {
        use crate::advise::optimizer::space::KnobSpec;
        let space = Space::new(vec![KnobSpec::range("k", 0.0, 3.0, 1.0)]).unwrap();
        let config = LiveConfig {
            slo: Slo {
                latency_us_max: Some(300.0),
                min_throughput_rps: None,
            },
            ..LiveConfig::default()
        };
        let start = vec![0.0];
        let mut live = LiveOptimizer::new(space, start.clone(), config).unwrap();
        let mut machine = Machine { now: start.clone() };
        live.step(&within_slo(), &mut machine).unwrap();
        assert_ne!(machine.now, start, "a trial applied");
        let breach = Measurement {
            latency_us: 500.0,
            ..within_slo()
        };
        live.step(&breach, &mut machine).unwrap();
        assert_eq!(machine.now, start, "back at the start");
        let doubled = Measurement {
            latency_us: f64::NAN,
            load_rps: 2000.0,
            requests: 2000.0,
            energy_j: 100.0,
            ..within_slo()
        };
        // The window right after the breach's return is neither judged nor learned; the next one
        // at the same configuration sees the change.
        let events = live.step(&doubled, &mut machine).unwrap();
        assert_eq!(learned(&events), Some(false), "{events:?}");
        assert_eq!(machine.now, start, "nothing tried meanwhile");
        let e = live.step(&doubled, &mut machine).unwrap_err();
        assert!(matches!(e.error, LiveError::Optimizer(_)), "{e:?}");
        assert!(
            matches!(
                &e.events[..],
                [LiveEvent::LoadChanged { from_rps, to_rps }, LiveEvent::Restarted { .. }]
                    if *from_rps == 1000.0 && *to_rps == 2000.0
            ),
            "{:?}",
            e.events
        );
    }

    /// Defect (s44 storyB): under clients on a fixed schedule, a trial that broke the SLO left a
    /// backlog that the return to the best drained at more than the offered rate; that window's
    /// rate was taken for a load change, the search restarted, forgot the breach and proposed
    /// the same trial again (eight breaches in two minutes, never converging). That window is
    /// neither learned nor judged; the next one at the same configuration is, and a real change
    /// still restarts. Nor is the latency of requests the trial held learned as the best's.
    #[test]
    fn a_backlog_drained_after_a_breach_is_not_taken_for_a_load_change() {
        use crate::advise::optimizer::space::KnobSpec;
        let start = vec![0.0];
        let rate = |rps: f64| Measurement {
            load_rps: rps,
            requests: rps,
            ..within_slo()
        };
        // A search from `start`, its first trial applied.
        let first_trial = || {
            let space = Space::new(vec![KnobSpec::range("k", 0.0, 3.0, 1.0)]).unwrap();
            let mut live = LiveOptimizer::new(space, start.clone(), slo_300us(8)).unwrap();
            let mut machine = Machine { now: start.clone() };
            live.step(&rate(100.0), &mut machine).unwrap();
            (live, machine)
        };
        let (mut live, mut machine) = first_trial();
        let trial = machine.now.clone();
        let events = live
            .step(
                &Measurement {
                    latency_us: 24_000.0,
                    ..rate(51.0)
                },
                &mut machine,
            )
            .unwrap();
        assert!(
            events
                .iter()
                .any(|e| matches!(e, LiveEvent::SloBreach { .. })),
            "{events:?}"
        );
        assert_eq!(machine.now, start);
        // The backlog drains: not learned, nothing tried, no restart.
        let events = live.step(&rate(148.0), &mut machine).unwrap();
        assert_eq!(learned(&events), Some(false), "{events:?}");
        assert_eq!(machine.now, start);
        assert_eq!(live.restarts(), 0, "{events:?}");
        // The offered rate again: learned, and the search goes on without the breached trial.
        let events = live.step(&rate(100.0), &mut machine).unwrap();
        assert_eq!(learned(&events), Some(true), "{events:?}");
        assert_eq!(live.restarts(), 0, "{events:?}");
        assert!(machine.now != start && machine.now != trial, "{events:?}");

        // A load that really changed at the breach is seen at the next window.
        let (mut live, mut machine) = first_trial();
        live.step(&breach(), &mut machine).unwrap();
        live.step(&rate(150.0), &mut machine).unwrap();
        let events = live.step(&rate(150.0), &mut machine).unwrap();
        assert!(
            matches!(
                &events[..],
                [LiveEvent::LoadChanged { from_rps, to_rps }, LiveEvent::Restarted { .. }, ..]
                    if *from_rps == 100.0 && *to_rps == 150.0
            ),
            "{events:?}"
        );
        assert_eq!(live.restarts(), 1);

        // A small backlog: the rate within 25%, the requests that waited over the SLO.
        let (mut live, mut machine) = first_trial();
        live.step(&breach(), &mut machine).unwrap();
        let slow = Measurement {
            latency_us: 900.0,
            ..rate(120.0)
        };
        let events = live.step(&slow, &mut machine).unwrap();
        assert_eq!(learned(&events), Some(false), "{events:?}");
        assert!(
            !events
                .iter()
                .any(|e| matches!(e, LiveEvent::SloBreach { .. })),
            "{events:?}"
        );
        assert_eq!(machine.now, start);
    }

    /// Defect (s44 storyB): the window whose re-check found the held best worse restarts the
    /// search and is its first point, told to the new model, while its `measured` event said
    /// `learned: false`.
    #[test]
    fn the_window_a_failed_recheck_restarts_from_is_said_learned() {
        use crate::advise::optimizer::space::KnobSpec;
        let space = Space::new(vec![KnobSpec::range("k", 0.0, 3.0, 1.0)]).unwrap();
        let start = vec![0.0];
        let config = LiveConfig {
            recheck_every: 1,
            ..slo_300us(2)
        };
        let mut live = LiveOptimizer::new(space, start.clone(), config).unwrap();
        let mut machine = Machine { now: start };
        let at = |j: f64| Measurement {
            energy_j: j,
            ..within_slo()
        };
        let mut rechecks = 0;
        for _ in 0..6 {
            let events = live.step(&at(50.0), &mut machine).unwrap();
            rechecks += events
                .iter()
                .filter(|e| matches!(e, LiveEvent::Recheck { ok: true, .. }))
                .count();
            if rechecks > 0 {
                break;
            }
        }
        assert_eq!((live.phase(), rechecks), (Phase::Holding, 1));
        let events = live.step(&at(200.0), &mut machine).unwrap();
        assert!(
            events
                .iter()
                .any(|e| matches!(e, LiveEvent::Recheck { ok: false, .. })),
            "{events:?}"
        );
        assert_eq!(learned(&events), Some(true), "{events:?}");
        assert_eq!(live.optimizer().observations().len(), 1);
    }

    /// A start a killed agent left that broke the SLO sent the loop back to what the knobs held
    /// before its trials (here beyond the levels, so never learned); when every trial breaks the
    /// SLO too and the candidates run out, the loop converges there, not on the start.
    #[test]
    fn with_nothing_feasible_learned_the_loop_does_not_converge_on_a_start_that_broke_the_slo() {
        use crate::advise::optimizer::space::KnobSpec;
        let space = Space::new(vec![KnobSpec::range("k", 2.0, 3.0, 1.0)]).unwrap();
        let config = LiveConfig {
            slo: Slo {
                latency_us_max: Some(300.0),
                min_throughput_rps: None,
            },
            ..LiveConfig::default()
        };
        let (start, before) = (vec![3.0], vec![10.0]);
        let mut live = LiveOptimizer::new(space, start.clone(), config).unwrap();
        live.set_before_trials(before.clone());
        let mut machine = Machine { now: start.clone() };
        let breach = Measurement {
            latency_us: 500.0,
            ..within_slo()
        };
        let mut events = Vec::new();
        for _ in 0..6 {
            let m = if machine.now == before {
                within_slo()
            } else {
                breach.clone()
            };
            events.extend(live.step(&m, &mut machine).unwrap());
            if live.phase() == Phase::Holding {
                break;
            }
        }
        assert!(
            events.iter().any(|e| matches!(e,
                LiveEvent::Converged { best, objective: None, .. } if *best == before)),
            "{events:#?}"
        );
        assert_eq!(machine.now, before);
    }

    /// s58 story BG-2: a killed agent's trial was the start; it broke the SLO and the loop went
    /// back to what the knobs held before the trials, which this search had not measured. That
    /// return was counted as a trial of the budget's: the search had one trial fewer than the
    /// budget allows (the start and `budget - 1` trials).
    #[test]
    fn a_return_to_what_the_knobs_held_before_a_killed_agents_trial_is_no_trial() {
        use crate::advise::optimizer::space::KnobSpec;
        let space = Space::new(vec![KnobSpec::range("k", 1.0, 5.0, 1.0)]).unwrap();
        let budget = 4;
        let (start, before) = (vec![2.0], vec![5.0]);
        let mut live = LiveOptimizer::new(space, start.clone(), slo_300us(budget)).unwrap();
        live.set_before_trials(before.clone());
        let mut machine = Machine { now: start.clone() };
        let mut events = Vec::new();
        for _ in 0..20 {
            let m = if machine.now == start {
                breach()
            } else {
                within_slo()
            };
            events.extend(live.step(&m, &mut machine).unwrap());
            if live.phase() == Phase::Holding {
                break;
            }
        }
        assert!(
            (events.iter()).any(|e| matches!(e, LiveEvent::Reverted { to, .. } if *to == before)),
            "{events:#?}"
        );
        // Before the search converges (an `applied` after it is the move to the best).
        let trials = (events.iter())
            .take_while(|e| !matches!(e, LiveEvent::Converged { .. }))
            .filter(|e| matches!(e, LiveEvent::Applied { .. }))
            .count();
        assert_eq!(trials, budget - 1, "{events:#?}");
        assert!(
            (events.iter()).any(
                |e| matches!(e, LiveEvent::Converged { evaluations, .. } if *evaluations == budget)
            ),
            "{events:#?}"
        );
    }

    fn breach() -> Measurement {
        Measurement {
            latency_us: 500.0,
            ..within_slo()
        }
    }

    fn slo_300us(budget: usize) -> LiveConfig {
        LiveConfig {
            slo: Slo {
                latency_us_max: Some(300.0),
                min_throughput_rps: None,
            },
            budget,
            ..LiveConfig::default()
        }
    }

    /// Every write fails for a while (a read-only /sys); counts the tries.
    struct ReadOnly {
        now: Vec<f64>,
        tries: usize,
    }

    impl Knobs for ReadOnly {
        fn try_config(&mut self, _from: &[f64], _to: &[f64], _why: ChangeReason) -> Tried {
            self.tries += 1;
            Tried::Failed {
                error: "Read-only file system (os error 30)".into(),
                rolled_back: true,
                retry: true,
            }
        }

        fn revert_to(
            &mut self,
            _from: &[f64],
            to: &[f64],
            _why: GoBack,
        ) -> Result<Vec<f64>, RevertFailure> {
            self.now = to.to_vec();
            Ok(to.to_vec())
        }
    }

    /// s48 review2 N3, review3 R3-4: the waits between tries of a write that fails for a while
    /// hold through a resync (someone else's values, or a knob unreadable for a window), which
    /// dropped the waiting proposal and started them over, and a new proposal waits them out.
    #[test]
    fn a_resync_keeps_the_waits_of_a_write_that_fails_for_a_while() {
        use crate::advise::optimizer::space::KnobSpec;
        let space = Space::new(vec![KnobSpec::range("k", 0.0, 7.0, 1.0)]).unwrap();
        let start = vec![0.0];
        let mut live = LiveOptimizer::new(space, start.clone(), slo_300us(20)).unwrap();
        let mut machine = ReadOnly {
            now: start.clone(),
            tries: 0,
        };
        let mut tried_at = Vec::new();
        for step in 0..12 {
            let before = machine.tries;
            if step == 4 || step == 8 {
                live.resync(start.clone());
            }
            live.step(&within_slo(), &mut machine).unwrap();
            if machine.tries > before {
                tried_at.push(step);
            }
        }
        // At the next step, then after 1, 2 and 4 steps: as without the resyncs at 4 and 8.
        assert_eq!(tried_at, [0, 1, 3, 6, 11]);
    }

    /// The search converged while its best waited on the hourly limit, and the last trial, still
    /// in place, broke the SLO: the loop goes back to that best and holds it, the model kept. (It
    /// took the trial for a held best, dropped the model and went back to the start.)
    #[test]
    fn a_breach_while_the_best_waits_goes_to_that_best() {
        use crate::advise::optimizer::space::KnobSpec;
        let space = Space::new(vec![KnobSpec::range("k", 0.0, 3.0, 1.0)]).unwrap();
        let start = vec![0.0];
        let mut live = LiveOptimizer::new(space, start.clone(), slo_300us(3)).unwrap();
        let mut machine = PausedForTheBest {
            now: start.clone(),
            paused: true,
        };
        let at = |j: f64| Measurement {
            energy_j: j,
            ..within_slo()
        };
        live.step(&at(80.0), &mut machine).unwrap();
        let first = machine.now.clone();
        live.step(&at(50.0), &mut machine).unwrap();
        let last = machine.now.clone();
        let events = live.step(&at(60.0), &mut machine).unwrap();
        assert_eq!(live.phase(), Phase::Holding, "{events:?}");
        assert_eq!(
            machine.now, last,
            "the move to the best was refused: {events:?}"
        );

        let events = live.step(&breach(), &mut machine).unwrap();
        assert!(
            !events
                .iter()
                .any(|e| matches!(e, LiveEvent::Restarted { .. })),
            "{events:?}"
        );
        assert!(
            events.iter().any(|e| matches!(e,
                LiveEvent::Reverted { from, to } if *from == last && *to == first)),
            "{events:?}"
        );
        assert_eq!(machine.now, first);
        assert_eq!(live.optimizer().observations().len(), 3);
        assert_eq!(live.restarts(), 0);
        // Held there: the next window moves nothing.
        let events = live.step(&at(50.0), &mut machine).unwrap();
        assert_eq!(machine.now, first, "{events:?}");
        assert_eq!(live.phase(), Phase::Holding);
    }

    /// `budget = 3` is the start and two trials: the first breaks the SLO, and the return to the
    /// start, learned again (its second window: the first is the breach's), is no trial, so a
    /// second one is applied and `converged` says 3.
    #[test]
    fn a_return_to_the_start_after_a_breach_is_not_one_of_the_budgets_trials() {
        use crate::advise::optimizer::space::KnobSpec;
        let space = Space::new(vec![KnobSpec::range("k", 0.0, 3.0, 1.0)]).unwrap();
        let start = vec![0.0];
        let mut live = LiveOptimizer::new(space, start.clone(), slo_300us(3)).unwrap();
        let mut machine = Machine { now: start.clone() };
        live.step(&within_slo(), &mut machine).unwrap();
        let first = machine.now.clone();
        assert_ne!(first, start);
        live.step(&breach(), &mut machine).unwrap();
        assert_eq!(machine.now, start);
        let events = live.step(&within_slo(), &mut machine).unwrap();
        assert_eq!(learned(&events), Some(false), "{events:?}");
        assert_eq!(machine.now, start, "nothing tried in the breach's window");
        let events = live.step(&within_slo(), &mut machine).unwrap();
        assert_eq!(learned(&events), Some(true), "{events:?}");
        let second = machine.now.clone();
        assert!(second != start && second != first, "{events:?}");
        let events = live.step(&within_slo(), &mut machine).unwrap();
        assert!(
            events
                .iter()
                .any(|e| matches!(e, LiveEvent::Converged { evaluations: 3, .. })),
            "{events:?}"
        );
    }

    /// A trial sent back by a breach in a window without an energy figure is not proposed again:
    /// the model has not changed, and would propose it at once.
    #[test]
    fn a_trial_sent_back_by_an_unmeasured_breach_is_not_proposed_again() {
        use crate::advise::optimizer::space::KnobSpec;
        let space = Space::new(vec![KnobSpec::range("k", 0.0, 3.0, 1.0)]).unwrap();
        let start = vec![0.0];
        let mut live = LiveOptimizer::new(space, start.clone(), slo_300us(10)).unwrap();
        let mut machine = Machine { now: start.clone() };
        live.step(&within_slo(), &mut machine).unwrap();
        let trial = machine.now.clone();
        assert_ne!(trial, start);
        let events = live.breach_unmeasured(500.0, 1000.0, &mut machine);
        assert!(
            matches!(
                &events[..],
                [LiveEvent::SloBreach { .. }, LiveEvent::Reverted { .. }]
            ),
            "{events:?}"
        );
        assert_eq!(machine.now, start);
        live.step(&within_slo(), &mut machine).unwrap();
        assert_eq!(machine.now, start, "the breach's window");
        live.step(&within_slo(), &mut machine).unwrap();
        assert_ne!(machine.now, start, "a trial applied");
        assert_ne!(machine.now, trial, "not the one that broke the SLO");
    }

    /// A machine that refuses, for now, the move to the converged best while `paused` (a pause,
    /// the hourly limit).
    struct PausedForTheBest {
        now: Vec<f64>,
        paused: bool,
    }

    impl Knobs for PausedForTheBest {
        fn try_config(&mut self, _from: &[f64], to: &[f64], why: ChangeReason) -> Tried {
            if why == ChangeReason::Converge && self.paused {
                return Tried::Refused {
                    reason: "paused".into(),
                    retry: true,
                };
            }
            self.now = to.to_vec();
            Tried::Applied
        }

        fn revert_to(
            &mut self,
            _from: &[f64],
            to: &[f64],
            _why: GoBack,
        ) -> Result<Vec<f64>, RevertFailure> {
            self.now = to.to_vec();
            Ok(to.to_vec())
        }
    }

    /// A window under the loop's own values that some knob cannot be read as one, with the
    /// converged best waiting: the best keeps waiting (a resync dropped it); its move is tried
    /// again, as a step while holding tries it, unless it writes a knob that cannot be read as
    /// one (or the window timed no request); a refusal for now keeps it waiting.
    #[test]
    fn a_best_that_waits_is_tried_again_in_a_window_under_the_loops_own_values() {
        let mut machine = PausedForTheBest {
            now: vec![0.0, 0.0],
            paused: true,
        };
        let (mut live, best, last) = two_knobs_converged(&mut machine, |m| m.now.clone());
        // The move writes one knob and leaves the other.
        let moved = usize::from(best[1] != last[1]);
        let left = 1 - moved;
        assert!(
            best[moved] != last[moved] && best[left] == last[left],
            "{best:?} {last:?}"
        );
        // Still paused: refused again, and still waiting.
        let events = live.resync_own(&[true, true], true, &mut machine);
        assert!(
            matches!(&events[..], [LiveEvent::Refused { config, retry: true, .. }] if *config == best),
            "{events:?}"
        );
        machine.paused = false;
        // A knob the move writes cannot be read as one; or no request was timed: it waits.
        let mut unread = [true, true];
        unread[moved] = false;
        for (as_one, retry) in [(&unread[..], true), (&[true, true][..], false)] {
            let events = live.resync_own(as_one, retry, &mut machine);
            assert!(events.is_empty(), "{as_one:?} {retry}: {events:?}");
            assert_eq!(machine.now, last);
            assert_eq!(live.current(), &last[..]);
        }
        // Only the knob the move leaves cannot be read as one.
        let mut as_one = [true, true];
        as_one[left] = false;
        let events = live.resync_own(&as_one, true, &mut machine);
        assert!(
            matches!(&events[..], [LiveEvent::Applied { config, .. }] if *config == best),
            "{events:?}"
        );
        assert_eq!(machine.now, best);
        assert_eq!(live.held(), Some(&best[..]));
        assert_eq!(live.restarts(), 0);
        // Without a best that waits, a resync to the configuration in place: nothing written.
        let events = live.resync_own(&[false, false], true, &mut machine);
        assert!(events.is_empty(), "{events:?}");
        assert_eq!(machine.now, best);
    }

    /// Two knobs of 0..=3, from [0, 0].
    fn two_knobs(config: LiveConfig) -> LiveOptimizer {
        use crate::advise::optimizer::space::KnobSpec;
        let space = Space::new(vec![
            KnobSpec::range("a", 0.0, 3.0, 1.0),
            KnobSpec::range("b", 0.0, 3.0, 1.0),
        ])
        .unwrap();
        LiveOptimizer::new(space, vec![0.0, 0.0], config).unwrap()
    }

    /// Two knobs of 0..=3 with a budget of 3, from [0, 0], three trials measured within the SLO
    /// (80, 50, 60 J): converged on the first, whose move `machine` refused for now, so the last
    /// trial stays in place. The loop, its best and the last trial.
    fn two_knobs_converged<M: Knobs>(
        machine: &mut M,
        now: fn(&M) -> Vec<f64>,
    ) -> (LiveOptimizer, Vec<f64>, Vec<f64>) {
        let at = |j: f64| Measurement {
            energy_j: j,
            ..within_slo()
        };
        let mut live = two_knobs(slo_300us(3));
        live.step(&at(80.0), machine).unwrap();
        let best = now(machine);
        live.step(&at(50.0), machine).unwrap();
        let last = now(machine);
        live.step(&at(60.0), machine).unwrap();
        assert_eq!(live.phase(), Phase::Holding);
        assert_eq!(now(machine), last, "the move to the best was refused");
        (live, best, last)
    }

    /// `config` with `knob` at a value neither `config` nor the start has: someone else's.
    fn someone_elses(config: &[f64], knob: usize) -> Vec<f64> {
        let mut mix = config.to_vec();
        mix[knob] = [1.0, 2.0, 3.0]
            .into_iter()
            .find(|&v| v != config[knob])
            .unwrap();
        mix
    }

    /// A window that broke the SLO while someone else moved one knob of the trial in place: the
    /// loop continues from the kernel's values, but its own trial value goes back to the best at
    /// once (someone else's stays), and the trial is not proposed again. Within the SLO, the
    /// window is only a resync.
    #[test]
    fn a_breach_under_someone_elses_value_takes_the_trials_own_values_back() {
        for breached in [true, false] {
            let mut machine = Machine {
                now: vec![0.0, 0.0],
            };
            let mut live = two_knobs(slo_300us(10));
            live.step(&within_slo(), &mut machine).unwrap();
            let trial = machine.now.clone();
            assert!(trial[0] != 0.0 && trial[1] != 0.0, "{trial:?}");
            let mix = someone_elses(&trial, 1);
            machine.now = mix.clone();
            let latency = if breached { 500.0 } else { 200.0 };
            let events = live.resync_after_breach(mix.clone(), latency, 1000.0, &mut machine);
            if !breached {
                assert_eq!(events, vec![], "only a resync");
                assert_eq!(machine.now, mix);
                assert_eq!(live.current(), &mix[..]);
                continue;
            }
            let back = vec![0.0, mix[1]];
            assert!(
                matches!(&events[..], [
                    LiveEvent::SloBreach { config, .. },
                    LiveEvent::Reverted { from, to },
                ] if *config == mix && *from == mix && *to == back),
                "{events:?}"
            );
            assert_eq!(machine.now, back);
            assert_eq!(live.current(), &back[..]);
            assert_eq!(live.optimizer().observations().len(), 1, "nothing learned");
            // The loop measures where it is, then tries another trial, not the one sent back.
            live.step(&within_slo(), &mut machine).unwrap();
            assert_eq!(live.optimizer().observations().len(), 2);
            assert_ne!(machine.now, back, "a trial applied");
            assert_ne!(machine.now, trial, "not the one that broke the SLO");
        }
    }

    /// s61 story CB-2: a start that breaks the SLO, nothing measured having met it, keeps the loop
    /// where it is (documented), and only a `slo_breach` event per window said so. The log says
    /// it once, with the figures.
    #[test]
    fn a_start_beyond_the_slo_with_nothing_safer_is_said_once() {
        let (log, _guard) = crate::logging::Captured::install();
        let mut machine = Machine {
            now: vec![0.0, 0.0],
        };
        let mut live = two_knobs(slo_300us(10));
        let breach = Measurement {
            latency_us: 500.0,
            ..within_slo()
        };
        for _ in 0..3 {
            live.step(&breach, &mut machine).unwrap();
        }
        assert_eq!(machine.now, [0.0, 0.0], "nothing known to be safer");
        let said = "optimizer: [0.0, 0.0] breaks the SLO (latency 500 µs, the limit 300 µs) and \
                    no configuration measured since the search (re)started has met it, so the \
                    loop changes nothing until a window meets the SLO";
        assert_eq!(log.text().matches(said).count(), 1, "{}", log.text());
    }

    /// Values a revert of the loop's leaves where they are (someone else's change holds every
    /// knob, as after an operator's `kpo apply` of each): `revert_to` moves nothing.
    struct TheirsEverywhere {
        now: Vec<f64>,
        tried: Vec<(Vec<f64>, ChangeReason)>,
    }

    impl Knobs for TheirsEverywhere {
        fn try_config(&mut self, _from: &[f64], to: &[f64], why: ChangeReason) -> Tried {
            self.now = to.to_vec();
            self.tried.push((to.to_vec(), why));
            Tried::Applied
        }

        fn revert_to(
            &mut self,
            from: &[f64],
            _to: &[f64],
            _why: GoBack,
        ) -> Result<Vec<f64>, RevertFailure> {
            Ok(from.to_vec())
        }
    }

    /// s61 story CB-1: an operator's `kpo apply` of every knob, during the search, to values that
    /// break the SLO: going back moved nothing (no change of the loop's to revert), and at every
    /// window after, the loop measured, breached, went back to nowhere, and never moved again,
    /// with no word. The best feasible configuration measured is applied over those values now
    /// (journaled as going back), and the search goes on from it.
    #[test]
    fn a_breach_under_someone_elses_values_on_every_knob_goes_to_the_best_over_them() {
        let mut machine = TheirsEverywhere {
            now: vec![0.0, 0.0],
            tried: Vec::new(),
        };
        let mut live = two_knobs(slo_300us(10));
        live.step(&within_slo(), &mut machine).unwrap();
        let trial = machine.now.clone();
        assert_ne!(trial, [0.0, 0.0], "a trial applied");
        let theirs: Vec<f64> = (0..2).map(|k| someone_elses(&trial, k)[k]).collect();
        machine.now = theirs.clone();
        live.resync_after_breach(theirs.clone(), 500.0, 1000.0, &mut machine);
        assert_eq!(live.current(), &theirs[..]);
        let breach = Measurement {
            latency_us: 500.0,
            ..within_slo()
        };
        let events = live.step(&breach, &mut machine).unwrap();
        assert!(
            matches!(&events[..], [
                LiveEvent::Measured { .. },
                LiveEvent::SloBreach { config, .. },
                LiveEvent::Reverted { from, to },
            ] if *config == theirs && *from == theirs && *to == [0.0, 0.0]),
            "{events:?}"
        );
        assert_eq!(
            machine.now,
            [0.0, 0.0],
            "the start, measured within the SLO"
        );
        assert_eq!(
            machine.tried.last(),
            Some(&(vec![0.0, 0.0], ChangeReason::Back))
        );
        let evaluations = live.evaluations;
        // The window of the move is not learned; the next is, as a revisit.
        assert_eq!(
            learned(&live.step(&within_slo(), &mut machine).unwrap()),
            Some(false)
        );
        assert_eq!(
            learned(&live.step(&within_slo(), &mut machine).unwrap()),
            Some(true)
        );
        assert_eq!(live.evaluations, evaluations, "a revisit");
        assert_ne!(machine.now, [0.0, 0.0], "the search goes on");
        assert_ne!(machine.now, theirs);
    }

    /// s61 review1 R1-1: with nothing measured within the SLO (the start broke it), an
    /// operator's values on every knob that break it too are not replaced by the start: only a
    /// configuration measured within the SLO is applied over someone else's values.
    #[test]
    fn nothing_measured_within_the_slo_is_not_applied_over_someone_elses_values() {
        let mut machine = TheirsEverywhere {
            now: vec![0.0, 0.0],
            tried: Vec::new(),
        };
        let mut live = two_knobs(slo_300us(10));
        let breach = Measurement {
            latency_us: 500.0,
            ..within_slo()
        };
        live.step(&breach, &mut machine).unwrap();
        assert_eq!(machine.now, [0.0, 0.0], "nothing known to be safer");
        let theirs = vec![2.0, 2.0];
        machine.now = theirs.clone();
        live.resync_after_breach(theirs.clone(), 500.0, 1000.0, &mut machine);
        for _ in 0..2 {
            live.step(&breach, &mut machine).unwrap();
        }
        assert_eq!(machine.now, theirs, "their values stay");
        assert!(machine.tried.is_empty(), "{:?}", machine.tried);
    }

    /// The search converged while its best waited on the hourly limit, and someone else moved
    /// one knob of the last trial, still in place, in a window that broke the SLO: the trial's
    /// other value goes to the best's at once, the model kept. A measured best held is only
    /// resynced: the next window's step judges it.
    #[test]
    fn a_breach_under_someone_elses_value_goes_to_the_best_that_waits_not_under_a_held_best() {
        let at = |j: f64| Measurement {
            energy_j: j,
            ..within_slo()
        };
        let mut machine = PausedForTheBest {
            now: vec![0.0, 0.0],
            paused: true,
        };
        let (mut live, first, last) = two_knobs_converged(&mut machine, |m| m.now.clone());
        // Someone else moves one knob, the trial's value of the other is the loop's own.
        let (theirs, own) = if first[1] != last[1] { (0, 1) } else { (1, 0) };
        assert_ne!(first[own], last[own], "{first:?} {last:?}");
        let mix = someone_elses(&last, theirs);
        machine.now = mix.clone();
        let events = live.resync_after_breach(mix.clone(), 500.0, 1000.0, &mut machine);
        let mut back = mix.clone();
        back[own] = first[own];
        assert!(
            matches!(&events[..], [
                LiveEvent::SloBreach { .. },
                LiveEvent::Reverted { from, to },
            ] if *from == mix && *to == back),
            "{events:?}"
        );
        assert_eq!(machine.now, back);
        assert_eq!(live.restarts(), 0);
        assert_eq!(live.optimizer().observations().len(), 3);
        assert_eq!(live.phase(), Phase::Holding);

        // A best held, measured: only a resync.
        let mut machine = Machine {
            now: vec![0.0, 0.0],
        };
        let mut live = two_knobs(slo_300us(3));
        for j in [80.0, 50.0, 60.0] {
            live.step(&at(j), &mut machine).unwrap();
        }
        assert_eq!(live.phase(), Phase::Holding);
        assert_eq!(machine.now, first, "the best applied and held");
        let mix = someone_elses(&first, 1);
        machine.now = mix.clone();
        let events = live.resync_after_breach(mix.clone(), 500.0, 1000.0, &mut machine);
        assert_eq!(events, vec![]);
        assert_eq!(machine.now, mix);
        assert_eq!(live.current(), &mix[..]);
    }

    /// A machine that refuses, for now, the move to the converged best (the hourly limit), and
    /// whose reverts fail while `failing` (a write error), or find someone else's value at knob
    /// `left` and leave it there (the journal skips it), the other knobs reverted.
    struct Stubborn {
        now: Vec<f64>,
        failing: bool,
        left: Option<usize>,
    }

    impl Knobs for Stubborn {
        fn try_config(&mut self, _from: &[f64], to: &[f64], why: ChangeReason) -> Tried {
            if why == ChangeReason::Converge {
                return Tried::Refused {
                    reason: "rate_limited".into(),
                    retry: true,
                };
            }
            self.now = to.to_vec();
            Tried::Applied
        }

        fn revert_to(
            &mut self,
            from: &[f64],
            to: &[f64],
            _why: GoBack,
        ) -> Result<Vec<f64>, RevertFailure> {
            if self.failing {
                return Err(RevertFailure {
                    error: "write failed".into(),
                    owed: None,
                });
            }
            let mut reached = to.to_vec();
            for (i, v) in to.iter().enumerate() {
                if Some(i) == self.left {
                    reached[i] = from[i];
                } else {
                    self.now[i] = *v;
                }
            }
            Ok(reached)
        }
    }

    /// The converged best waits, someone else moved one knob of the last trial, and the window
    /// broke the SLO, but the revert of the trial's other value failed: the best still waits (the
    /// loop's trial value is still in place), and the next breach goes to it, the model kept.
    /// (The resync before the revert dropped it, and that breach restarted the search.)
    #[test]
    fn a_revert_that_fails_under_someone_elses_value_leaves_the_best_waiting() {
        let mut machine = Stubborn {
            now: vec![0.0, 0.0],
            failing: false,
            left: None,
        };
        let (mut live, first, last) = two_knobs_converged(&mut machine, |m| m.now.clone());
        let (theirs, own) = if first[1] != last[1] { (0, 1) } else { (1, 0) };
        assert_ne!(first[own], last[own], "{first:?} {last:?}");
        let mix = someone_elses(&last, theirs);
        machine.now = mix.clone();
        machine.failing = true;
        let events = live.resync_after_breach(mix.clone(), 500.0, 1000.0, &mut machine);
        assert!(
            matches!(&events[..], [
                LiveEvent::SloBreach { .. },
                LiveEvent::RevertFailed { from, .. },
            ] if *from == mix),
            "{events:?}"
        );
        assert_eq!(machine.now, mix);
        assert_eq!(live.current(), &mix[..]);

        // The mix still breaks the SLO: back to the best (the journal would leave someone
        // else's value there), which the loop holds, no restart.
        machine.failing = false;
        let events = live.breach_unmeasured(500.0, 1000.0, &mut machine);
        assert!(
            matches!(&events[..], [
                LiveEvent::SloBreach { .. },
                LiveEvent::Reverted { from, to },
            ] if *from == mix && *to == first),
            "{events:?}"
        );
        assert_eq!(live.restarts(), 0);
        assert_eq!(machine.now, first);
        assert_eq!(live.optimizer().observations().len(), 3);
        assert_eq!(live.phase(), Phase::Holding);
        assert_eq!(live.held(), Some(&first[..]));
    }

    /// As above, but the next window is within the SLO: the holding step moves to the best that
    /// waits, and keeps someone else's value on the knob they moved (the move is applied whole:
    /// kept as it was, it wrote their knob back to the loop's best).
    #[test]
    fn a_best_kept_after_a_failed_revert_is_applied_without_someone_elses_knob() {
        let at = |j: f64| Measurement {
            energy_j: j,
            ..within_slo()
        };
        let mut machine = Stubborn {
            now: vec![0.0, 0.0],
            failing: false,
            left: None,
        };
        let (mut live, first, last) = two_knobs_converged(&mut machine, |m| m.now.clone());
        let (theirs, own) = if first[1] != last[1] { (0, 1) } else { (1, 0) };
        let mix = someone_elses(&last, theirs);
        assert_ne!(mix[theirs], first[theirs], "{mix:?} {first:?}");
        machine.now = mix.clone();
        machine.failing = true;
        live.resync_after_breach(mix.clone(), 500.0, 1000.0, &mut machine);
        // The limit that refused the move is lifted.
        let mut machine = Machine { now: mix.clone() };
        live.step(&at(55.0), &mut machine).unwrap();
        assert_eq!(
            machine.now[theirs], mix[theirs],
            "someone else's value stays"
        );
        assert_eq!(
            machine.now[own], first[own],
            "the loop's own knob went to the best"
        );
        assert_eq!(live.restarts(), 0);
    }

    /// The loop holds its measured best; a resync found someone else's value of one knob in an
    /// earlier window; now another knob moved too and the window broke the SLO. No trial of the
    /// loop's is in place: only a resync, and the next step judges the mix (a breach restarts the
    /// search). (It took the earlier value, equal to the loop's record, for a trial's and aimed
    /// it back at the best; with the journal skipping that revert, it sent a `reverted` to
    /// values the kernel did not have.)
    #[test]
    fn a_breach_under_a_mix_held_since_a_resync_is_only_a_resync() {
        let at = |j: f64| Measurement {
            energy_j: j,
            ..within_slo()
        };
        let mut machine = Machine {
            now: vec![0.0, 0.0],
        };
        let mut live = two_knobs(slo_300us(3));
        for j in [80.0, 50.0, 60.0] {
            live.step(&at(j), &mut machine).unwrap();
        }
        assert_eq!(live.phase(), Phase::Holding);
        let best = machine.now.clone();
        let earlier = someone_elses(&best, 1);
        live.resync(earlier.clone());
        let mix = someone_elses(&earlier, 0);
        let mut machine = Stubborn {
            now: mix.clone(),
            failing: false,
            left: Some(1),
        };
        let events = live.resync_after_breach(mix.clone(), 500.0, 1000.0, &mut machine);
        assert_eq!(events, vec![]);
        assert_eq!(machine.now, mix);
        assert_eq!(live.current(), &mix[..]);
        assert_eq!(live.held(), Some(&mix[..]));
        let events = live.step(&breach(), &mut machine).unwrap();
        assert!(
            events
                .iter()
                .any(|e| matches!(e, LiveEvent::Restarted { .. })),
            "{events:?}"
        );
    }

    /// A revert that finds someone else's value at a knob and leaves it there does not count
    /// that knob as reached: the loop keeps the value it knew there, in `current` and in the
    /// `reverted` event's `to`; when no knob moved, there is no `reverted`.
    #[test]
    fn a_knob_whose_revert_was_skipped_is_not_taken_for_reached() {
        let mut machine = Stubborn {
            now: vec![0.0, 0.0],
            failing: false,
            left: Some(1),
        };
        let mut live = two_knobs(slo_300us(10));
        live.step(&within_slo(), &mut machine).unwrap();
        let trial = machine.now.clone();
        assert!(trial[0] != 0.0 && trial[1] != 0.0, "{trial:?}");
        let events = live.breach_unmeasured(500.0, 1000.0, &mut machine);
        let reached = vec![0.0, trial[1]];
        assert!(
            matches!(&events[..], [
                LiveEvent::SloBreach { .. },
                LiveEvent::Reverted { from, to },
            ] if *from == trial && *to == reached),
            "{events:?}"
        );
        assert_eq!(live.current(), &reached[..]);

        // After a resync: someone else moved knob 0 and the trial's knob 1 is skipped.
        let mut machine = Stubborn {
            now: vec![0.0, 0.0],
            failing: false,
            left: Some(1),
        };
        let mut live = two_knobs(slo_300us(10));
        live.step(&within_slo(), &mut machine).unwrap();
        let trial = machine.now.clone();
        let mix = someone_elses(&trial, 0);
        machine.now = mix.clone();
        let events = live.resync_after_breach(mix.clone(), 500.0, 1000.0, &mut machine);
        assert!(
            matches!(&events[..], [LiveEvent::SloBreach { .. }]),
            "{events:?}"
        );
        assert_eq!(live.current(), &mix[..]);
    }

    /// Six knobs at the default 8 levels are 262,144 points: the error says how many levels fit
    /// (6^6 = 46,656; 7^6 = 117,649), naming the setting that has them.
    #[test]
    fn a_space_too_large_says_how_many_levels_fit() {
        use crate::advise::optimizer::space::KnobSpec;
        let knobs = (0..6)
            .map(|i| KnobSpec::range(format!("k{i}"), 0.0, 7.0, 1.0))
            .collect();
        let space = Space::new(knobs).unwrap();
        let Err(e) = LiveOptimizer::new(space, vec![0.0; 6], LiveConfig::default()) else {
            panic!("262,144 points accepted");
        };
        assert_eq!(
            e.to_string(),
            "the search space has 262144 points over 6 knobs, more than 50000: set levels in \
             [optimizer] to at most 6 (and as many in a policy entry's optimizer_levels), or give \
             the optimizer fewer knobs"
        );
    }

    /// A policy that narrows `scaling_max_freq` to 2.0-3.0 GHz while the kernel is at 3.5 GHz:
    /// the start's measurement is not told to the model (clamped, it would be learned as the
    /// 3.0 GHz level's), its `measured` says so, and with nothing else measured the loop settles
    /// back on the start. A start off the grid but within the levels is learned.
    #[test]
    fn a_start_beyond_the_levels_is_not_learned() {
        let space = || {
            Space::new(vec![crate::advise::optimizer::space::KnobSpec::range(
                "cpufreq:policy0:scaling_max_freq",
                2_000_000.0,
                3_000_000.0,
                250_000.0,
            )])
            .unwrap()
        };
        let config = LiveConfig {
            slo: Slo {
                latency_us_max: Some(300.0),
                min_throughput_rps: None,
            },
            ..LiveConfig::default()
        };
        let start = vec![3_500_000.0];
        let mut live = LiveOptimizer::new(space(), start.clone(), config.clone()).unwrap();
        let mut machine = Machine { now: start.clone() };
        let events = live.step(&within_slo(), &mut machine).unwrap();
        assert_eq!(learned(&events), Some(false), "{events:?}");
        assert!(live.optimizer().observations().is_empty());
        let trial = machine.now.clone();
        assert_ne!(trial, start, "a trial within the levels: {events:?}");
        // Nothing learned within the SLO: the trial makes way for the start.
        let events = live.settle(&mut machine);
        assert_eq!(
            events,
            vec![LiveEvent::Settled {
                from: trial.clone(),
                to: start.clone()
            }]
        );
        assert_eq!(machine.now, start);

        // The trial itself is learned.
        let mut live = LiveOptimizer::new(space(), start.clone(), config.clone()).unwrap();
        let mut machine = Machine { now: start.clone() };
        live.step(&within_slo(), &mut machine).unwrap();
        let events = live.step(&within_slo(), &mut machine).unwrap();
        assert_eq!(learned(&events), Some(true), "{events:?}");
        assert_eq!(live.optimizer().observations().len(), 1);
        assert_eq!(live.optimizer().observations()[0].point, trial);

        // Between two levels, within them.
        let start = vec![2_100_000.0];
        let mut live = LiveOptimizer::new(space(), start.clone(), config).unwrap();
        let mut machine = Machine { now: start.clone() };
        let events = live.step(&within_slo(), &mut machine).unwrap();
        assert_eq!(learned(&events), Some(true), "{events:?}");
    }

    #[test]
    fn slo_and_objective_values() {
        let m = Measurement {
            energy_j: 50.0,
            energy_source: EnergySource::Rapl,
            requests: 1000.0,
            window_s: 2.0,
            latency_us: 400.0,
            load_rps: 500.0,
        };
        assert_eq!(m.throughput_rps(), 500.0);
        assert_eq!(Objective::JoulesPerRequest.value(&m), 0.05);
        assert_eq!(Objective::JoulesPerWindow.value(&m), 50.0);
        let slo = Slo {
            latency_us_max: Some(500.0),
            min_throughput_rps: Some(400.0),
        };
        assert!(slo.holds(&m));
        assert_eq!(slo.values(&m), vec![400.0, 500.0]);
        assert!(!Slo {
            latency_us_max: Some(300.0),
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

    /// A trial under which no request completed is taken back for that, not for a breach: the
    /// journal's reason is the `why` of the revert, and no latency was measured over the SLO.
    #[test]
    fn a_trial_that_timed_no_request_goes_back_saying_so() {
        use crate::advise::optimizer::space::KnobSpec;
        struct Why {
            now: Vec<f64>,
            why: Vec<GoBack>,
        }
        impl Knobs for Why {
            fn try_config(&mut self, _from: &[f64], to: &[f64], _why: ChangeReason) -> Tried {
                self.now = to.to_vec();
                Tried::Applied
            }
            fn revert_to(
                &mut self,
                _from: &[f64],
                to: &[f64],
                why: GoBack,
            ) -> Result<Vec<f64>, RevertFailure> {
                self.why.push(why);
                self.now = to.to_vec();
                Ok(to.to_vec())
            }
        }
        let space = Space::new(vec![KnobSpec::range("k", 0.0, 3.0, 1.0)]).unwrap();
        let start = vec![0.0];
        let mut live = LiveOptimizer::new(space, start.clone(), LiveConfig::default()).unwrap();
        let mut machine = Why {
            now: start.clone(),
            why: Vec::new(),
        };
        live.step(&within_slo(), &mut machine).unwrap();
        let trial = machine.now.clone();
        assert_ne!(trial, start);
        let events = live.no_requests_under_trial(&mut machine);
        assert!(
            matches!(&events[..], [LiveEvent::NoRequests { config }, LiveEvent::Reverted { to, .. }]
                if *config == trial && *to == start),
            "{events:?}"
        );
        let why: Vec<&str> = machine.why.iter().map(|w| w.as_str()).collect();
        assert_eq!(why, ["no request completed under the trial"]);
    }

    /// At a stop, a configuration where `on_exit` could not put back what it reverts next (in
    /// the agent: a kept cpufreq min above the max's original) is not settled on, though it is
    /// the cheapest measured: the loop settles on the next one, here the start.
    #[test]
    fn a_stop_settles_where_on_exit_can_put_back() {
        use crate::advise::optimizer::space::KnobSpec;
        struct Exit {
            now: Vec<f64>,
            refuse: Option<Vec<f64>>,
        }
        impl Knobs for Exit {
            fn try_config(&mut self, _from: &[f64], to: &[f64], _why: ChangeReason) -> Tried {
                self.now = to.to_vec();
                Tried::Applied
            }
            fn revert_to(
                &mut self,
                _from: &[f64],
                to: &[f64],
                _why: GoBack,
            ) -> Result<Vec<f64>, RevertFailure> {
                self.now = to.to_vec();
                Ok(to.to_vec())
            }
            fn survives_exit(&mut self, to: &[f64]) -> bool {
                self.refuse.as_deref() != Some(to)
            }
        }
        let space = Space::new(vec![KnobSpec::range("k", 0.0, 3.0, 1.0)]).unwrap();
        let start = vec![0.0];
        let mut live = LiveOptimizer::new(space, start.clone(), LiveConfig::default()).unwrap();
        let mut machine = Exit {
            now: start.clone(),
            refuse: None,
        };
        let joules = |energy_j| Measurement {
            energy_j,
            ..within_slo()
        };
        live.step(&joules(100.0), &mut machine).unwrap();
        let cheapest = machine.now.clone();
        live.step(&joules(10.0), &mut machine).unwrap();
        let trial = machine.now.clone();
        assert!(trial != cheapest && trial != start, "{trial:?}");
        machine.refuse = Some(cheapest);
        let events = live.settle(&mut machine);
        assert_eq!(
            events,
            vec![LiveEvent::Settled {
                from: trial,
                to: start.clone()
            }]
        );
        assert_eq!(machine.now, start);
    }

    /// A proposal refused for now is the one tried again, window after window, and the one
    /// applied once the refusal passes: asked anew, the model breaks a tie between equally
    /// far candidates the other way at random, and the `refused` events would name another
    /// configuration each window.
    #[test]
    fn a_proposal_refused_for_now_is_the_one_tried_again() {
        use crate::advise::optimizer::space::KnobSpec;
        struct Paused {
            now: Vec<f64>,
            paused: bool,
        }
        impl Knobs for Paused {
            fn try_config(&mut self, _from: &[f64], to: &[f64], _why: ChangeReason) -> Tried {
                if self.paused {
                    return Tried::Refused {
                        reason: "paused".into(),
                        retry: true,
                    };
                }
                self.now = to.to_vec();
                Tried::Applied
            }
            fn revert_to(
                &mut self,
                _from: &[f64],
                to: &[f64],
                _why: GoBack,
            ) -> Result<Vec<f64>, RevertFailure> {
                self.now = to.to_vec();
                Ok(to.to_vec())
            }
        }
        let space = Space::new(vec![
            KnobSpec::range("a", 0.0, 3.0, 1.0),
            KnobSpec::range("b", 0.0, 3.0, 1.0),
        ])
        .unwrap();
        let start = vec![0.0, 0.0];
        let mut live = LiveOptimizer::new(space, start.clone(), LiveConfig::default()).unwrap();
        let mut machine = Paused {
            now: start,
            paused: false,
        };
        live.step(&within_slo(), &mut machine).unwrap();
        machine.paused = true;
        let mut refused = Vec::new();
        for _ in 0..12 {
            let events = live.step(&within_slo(), &mut machine).unwrap();
            refused.extend(events.into_iter().filter_map(|e| match e {
                LiveEvent::Refused { config, .. } => Some(config),
                _ => None,
            }));
        }
        assert_eq!(refused.len(), 12);
        assert!(refused.iter().all(|c| *c == refused[0]), "{refused:?}");
        machine.paused = false;
        live.step(&within_slo(), &mut machine).unwrap();
        assert_eq!(machine.now, refused[0]);
    }

    /// A value quarantined (by the guard or an operator's revert) is never tried, not even once
    /// to be refused: the search goes on over the others (s51 storyAA F5: one refused `change`
    /// event per search).
    #[test]
    fn a_quarantined_value_is_never_tried() {
        use crate::advise::optimizer::space::KnobSpec;
        struct Quarantine {
            now: Vec<f64>,
            tried: Vec<Vec<f64>>,
        }
        impl Knobs for Quarantine {
            fn try_config(&mut self, _from: &[f64], to: &[f64], _why: ChangeReason) -> Tried {
                self.tried.push(to.to_vec());
                // As the policy answers a quarantined value.
                if !self.allowed(to) {
                    return Tried::Refused {
                        reason: "quarantined".into(),
                        retry: false,
                    };
                }
                self.now = to.to_vec();
                Tried::Applied
            }
            fn revert_to(
                &mut self,
                _from: &[f64],
                to: &[f64],
                _why: GoBack,
            ) -> Result<Vec<f64>, RevertFailure> {
                self.now = to.to_vec();
                Ok(to.to_vec())
            }
            fn allowed(&mut self, to: &[f64]) -> bool {
                to[0] != 2.0
            }
        }
        let space = Space::new(vec![KnobSpec::range("a", 0.0, 4.0, 1.0)]).unwrap();
        let config = LiveConfig {
            budget: 5,
            ..LiveConfig::default()
        };
        let mut live = LiveOptimizer::new(space, vec![0.0], config).unwrap();
        let mut machine = Quarantine {
            now: vec![0.0],
            tried: Vec::new(),
        };
        let mut refused = 0;
        for _ in 0..12 {
            let events = live.step(&within_slo(), &mut machine).unwrap();
            refused += (events.iter())
                .filter(|e| matches!(e, LiveEvent::Refused { .. }))
                .count();
        }
        let mut tried: Vec<f64> = machine.tried.iter().map(|c| c[0]).collect();
        tried.sort_by(f64::total_cmp);
        tried.dedup();
        // Every level but the quarantined one, the start (0) when the search settles on it.
        assert_eq!((tried, refused), (vec![0.0, 1.0, 3.0, 4.0], 0));
    }

    /// A quarantined proposal, set aside without a write or a journal record, does not count
    /// toward the few set aside per step (s52 review L3): those are there so that a NIC refusing
    /// every write is not written and rolled back once per candidate in one window; counted,
    /// nine quarantined levels cost three windows in which the loop tried nothing.
    #[test]
    fn quarantined_proposals_cost_no_window() {
        use crate::advise::optimizer::space::KnobSpec;
        struct OnlyTheEnds {
            now: Vec<f64>,
        }
        impl Knobs for OnlyTheEnds {
            fn try_config(&mut self, _from: &[f64], to: &[f64], _why: ChangeReason) -> Tried {
                self.now = to.to_vec();
                Tried::Applied
            }
            fn revert_to(
                &mut self,
                _from: &[f64],
                to: &[f64],
                _why: GoBack,
            ) -> Result<Vec<f64>, RevertFailure> {
                self.now = to.to_vec();
                Ok(to.to_vec())
            }
            fn allowed(&mut self, to: &[f64]) -> bool {
                to[0] == 0.0 || to[0] == 10.0
            }
        }
        let space = Space::new(vec![KnobSpec::range("a", 0.0, 10.0, 1.0)]).unwrap();
        let mut live = LiveOptimizer::new(space, vec![0.0], LiveConfig::default()).unwrap();
        let mut machine = OnlyTheEnds { now: vec![0.0] };
        let mut converged_at = None;
        for step in 0..6 {
            let events = live.step(&within_slo(), &mut machine).unwrap();
            if events
                .iter()
                .any(|e| matches!(e, LiveEvent::Converged { .. }))
            {
                converged_at.get_or_insert(step);
            }
        }
        // Step 0 measures the start and tries 10, step 1 measures 10: the nine levels between
        // are quarantined, so nothing is left to try, and the loop converges then, not three
        // windows later.
        assert_eq!(converged_at, Some(1));
        assert_eq!(machine.now, vec![0.0]);
    }
}
