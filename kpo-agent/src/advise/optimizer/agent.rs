//! The live loop inside `kpo run`: which knobs it moves, how a window becomes a measurement, and
//! how its configurations reach the kernel (docs/optimizer.md, "The live loop in the agent").
//!
//! - **Knobs** come from the policy at the loop's start (the agent's, or a reload that changes
//!   the optimizer's entries: `Deciding::reload_policy`), one per entry and attribute (what a
//!   glob matches moves together): every numeric cpufreq or coalescing parameter
//!   (`scaling_max_freq`, `scaling_min_freq`, `rx-usecs`, `tx-usecs`, `rx-frames`, `tx-frames`)
//!   that a `[params."NAME"]` entry (a name or a glob) gives to the optimizer: `sources` includes
//!   `optimizer`, mode `auto`, and `min` and `max` set (mode `recommend` is left out, with the
//!   reason: a search does not wait for an approval per trial). The search grid is `levels`
//!   values spread evenly over `[min, max]`. Built-in defaults never give the optimizer anything.
//! - **A trial** is held for `windows_per_trial` windows. Its measurement is the energy of those
//!   windows (the agent's meter, labelled with its source) and the SLO's request-latency
//!   percentile on the SLO's port (the worst window). A window without timed requests on that
//!   port, or without energy, is not a measurement; the trial simply continues.
//! - **Every change goes through the change path** ([`ChangePath::propose`], source `optimizer`),
//!   knob by knob, all or none: the policy is asked about every knob first
//!   ([`ChangePath::preview`]), and its actuator checks the value ([`ChangePath::check_value`]);
//!   a configuration with one knob refused is proposed no further (the
//!   refused knob's proposal goes through the path, which refuses it and says so) and nothing of
//!   it is applied. Applied changes are watched by the guard. An SLO breach goes back through the
//!   journal ([`ChangePath::revert`] of the changes that left the configuration returned to).
//! - **Knob values changed by anyone else** (an operator's `kpo apply`, the guard's revert during
//!   the window, a person) are noticed when the window closes: that window is not learned, and
//!   the loop continues from the values the kernel has.
//!
//! The loop itself is here; what it is given (`settings.rs`, `knobs.rs`) and how it reaches the
//! kernel (`through_the_path.rs`) are each a file.
mod knobs;
mod settings;
mod through_the_path;

use std::path::Path;

use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use super::live::{
    ChangeReason, GoBack, Knobs, LiveConfig, LiveEvent, LiveOptimizer, Objective, RevertFailure,
    Slo, Tried,
};
use super::space::{KnobSpec, Space};
use crate::{
    actuate::{
        param::{ParamAddress, ParamKind, Target, Value},
        ActuateError,
    },
    change::{ChangePath, ChangeReport, ChangeStatus},
    energy::EnergySource,
    guard::Guard,
    journal::{target_key, Record},
    policy::{Bound, Decision, Mode, Proposal, Source},
    window::Window,
};
use knobs::*;
pub use settings::*;
use through_the_path::*;

/// The numeric cpufreq and coalescing attributes the optimizer can search.
pub(crate) const CPUFREQ_KNOBS: [&str; 2] = ["scaling_max_freq", "scaling_min_freq"];
pub(crate) const COALESCE_KNOBS: [&str; 4] = ["rx-usecs", "tx-usecs", "rx-frames", "tx-frames"];

/// One dimension of the search: the parameters one policy entry gives the optimizer for one
/// attribute, moved together (under `cpufreq:*:scaling_max_freq`, every cpufreq policy's limit).
/// A dimension per cpufreq policy would search 64 dimensions on a 64-CPU machine (intel_pstate
/// has a policy per CPU): no budget explores that, and its candidates would not fit.
#[derive(Debug, Clone)]
struct Knob {
    /// The address for one parameter; for several, the policy entry's pattern with the
    /// attribute filled in (`cpufreq:*:scaling_max_freq`).
    name: String,
    members: Vec<ParamAddress>,
}

impl Knob {
    /// The knob of `members`, given by the policy entry `entry`.
    fn new(members: Vec<ParamAddress>, entry: &str) -> Knob {
        let first = members[0].to_string();
        let attr = first.rsplit(':').next().unwrap_or_default();
        let name = match (
            members.len(),
            entry.split(':').collect::<Vec<_>>().as_slice(),
        ) {
            (1, _) => first,
            (_, [family, target, _]) => format!("{family}:{target}:{attr}"),
            _ => format!("{entry} ({attr})"),
        };
        Knob { name, members }
    }

    /// `address = value` for each member, given their values in order.
    fn each(&self, values: &[i128]) -> String {
        let each: Vec<String> = self
            .members
            .iter()
            .zip(values)
            .map(|(a, v)| format!("{a} = {v}"))
            .collect();
        each.join(", ")
    }
}

/// One change the loop made to one member of a knob, kept so that the loop can go back through
/// the journal to `before`, the knob's value then.
#[derive(Debug, Clone)]
struct Made {
    knob: usize,
    address: ParamAddress,
    id: u64,
    before: i64,
}

/// A trial's windows so far.
#[derive(Debug, Default)]
struct Trial {
    windows: u32,
    energy_j: f64,
    requests: f64,
    seconds: f64,
    latency_us: f64,
    source: Option<EnergySource>,
}

/// One window's timed requests on the SLO port.
/// Requests the sensor would have timed at the last rate seen, below which a window without any
/// is not taken for a trial that stalled the service ([`AgentOptimizer::none_completed`]).
const STALL_EXPECTED_REQUESTS: f64 = 20.0;

#[derive(Debug)]
struct Timed {
    /// The SLO's percentile, the worst over the port's services.
    latency_us: f64,
    /// Requests in the window (scaled up from the sensor's sampled fraction).
    requests: f64,
    requests_per_s: f64,
}

/// The live loop, running in the agent.
pub struct AgentOptimizer {
    settings: OptimizerSettings,
    /// Every knob the loop started with, and its levels.
    all: Vec<(Knob, KnobSpec)>,
    /// Knobs of `all` with a parameter yielded to a person (their indices): left out of the
    /// search, at the person's values.
    set_aside: Vec<usize>,
    /// The knobs searched: those of `all` not set aside (none: every knob is yielded, and the
    /// loop waits).
    knobs: Vec<Knob>,
    live: LiveOptimizer,
    made: Vec<Made>,
    trial: Trial,
    /// Journal records up to the end of the last step: later intents on a knob are someone
    /// else's.
    mark: usize,
    /// Set when a window closes with the knobs not as the loop left them.
    disturbed: Option<(Vec<f64>, String)>,
    /// The last reason a window was not a measurement (said once, not every window).
    unmeasured: Option<String>,
    /// The request rate on the SLO port of the last window that timed any.
    last_timed_rps: f64,
    /// The loop's reverts that left a value alone because it is not KPO's (a person wrote it
    /// since): the caller yields to them, as after the guard's reverts and `on_exit`'s.
    skipped: Vec<ChangeReport>,
    /// Roll-backs of failed trials that failed themselves, tried again at later windows.
    owed: Vec<Owed>,
}

/// A trial's change the loop could not take back when a later write of the trial failed (the
/// kernel refused that write too: a driver being reset, a cpufreq policy going offline). Left,
/// it would keep the trial's value with no trial to measure it, and a group knob's members
/// apart, so that no window reads as one configuration. Tried again at the next window, then
/// after a wait that doubles up to [`MAX_OWED_WAIT_WINDOWS`] (each try is journaled; a window
/// that breaks the SLO, the loop's end or a reload tries at once, until [`MAX_OWED_REVERT_TRIES`]
/// are used up), until it is done, the value is someone else's, another change (the guard's
/// revert) holds the parameter, or the loop no longer wants the value from before the trial there.
#[derive(Debug, Clone)]
struct Owed {
    made: Made,
    /// The change that held the parameter when the roll-back was owed: the trial's own, or
    /// for a revert to an earlier value that failed, the later trial's over it.
    holding: Option<u64>,
    /// The journal's reason for each try.
    reason: String,
    /// Tries left before it slows down: never given up, since left, a failed trial's value would
    /// stay unmeasured, and a revert's would keep what broke the SLO.
    tries_left: u32,
    /// Its tries are used up: it is tried only every [`MAX_OWED_WAIT_WINDOWS`] windows (not at
    /// once at a window that breaks the SLO) and when the loop ends.
    slowed: bool,
    /// Windows still to wait before the next try.
    wait: u32,
    /// The wait after the next failed try.
    backoff: u32,
}

/// When [`AgentOptimizer::retry_owed_roll_backs`] is called: at a window, at a window that broke
/// the SLO (a trial value the loop still owes may be what broke it), or as the loop ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Due {
    Window,
    Breach,
    Ending,
}

/// The longest wait between two tries of an owed roll-back: ten minutes at the default 10 s
/// window.
const MAX_OWED_WAIT_WINDOWS: u32 = 64;

/// How many times a roll-back or revert of the loop's that did not take is tried again (135
/// windows with the doubling waits, fewer when windows break the SLO, each of which tries at once
/// and counts) before it slows down to one try every [`MAX_OWED_WAIT_WINDOWS`] windows and one
/// when the loop ends. Given up for good instead, eight windows breaking the SLO used the tries up within a
/// minute, and the trial that broke it stayed, through the agent's stop with `on_exit = "keep"`
/// (s51 story AA F3); tried at once at every breaking window, a value the kernel keeps refusing
/// journaled a failed change every window.
const MAX_OWED_REVERT_TRIES: u32 = 8;

impl Owed {
    /// A failed trial's roll-back. Slowed like a revert after its tries (s51 review3 N2: tried
    /// at once at every window that broke the SLO for as long as the kernel refused it, each try
    /// journaled).
    fn roll_back(made: Made) -> Self {
        Owed {
            holding: Some(made.id),
            made,
            reason: "optimizer: undoing a trial that failed (its roll-back failed before)".into(),
            tries_left: MAX_OWED_REVERT_TRIES,
            slowed: false,
            wait: 0,
            backoff: 1,
        }
    }

    /// A revert of the loop's, back to `made`'s value before, that did not take, while
    /// `holding` held the parameter; `reason` the revert's own.
    fn revert(made: Made, holding: Option<u64>, reason: &str) -> Self {
        Owed {
            made,
            holding,
            reason: format!("{reason} (its revert failed before)"),
            tries_left: MAX_OWED_REVERT_TRIES,
            slowed: false,
            wait: 0,
            backoff: 1,
        }
    }
}

/// Why the loop does not run although the policy gives it knobs.
#[derive(Debug, Clone, PartialEq)]
pub struct Off {
    pub reason: String,
    /// Only because the parameters of a group differ, which an operator's `kpo apply` can mend
    /// while the agent runs: the caller tries to start the loop again at each window.
    pub groups_apart: bool,
}

impl Off {
    fn because(reason: impl Into<String>) -> Off {
        Off {
            reason: reason.into(),
            groups_apart: false,
        }
    }
}

impl AgentOptimizer {
    /// The knobs the policy gives the optimizer, read through the path. `Ok(None)`: the policy
    /// gives it none. `Err`: it does, but the loop cannot run (the reason says why: no SLO,
    /// unsupported here, no bounds).
    ///
    /// A group knob whose members differ because a trial of the loop's was cut short between
    /// two members' writes (a kill, a roll-back that failed) is first put back together: each
    /// member holding the loop's value goes back through the journal
    /// ([`take_back_a_half_applied_trial`]); a revert that finds a value that is not KPO's is
    /// added to `skipped`, for the caller to yield (`run::yielding::after_own_revert`).
    pub fn start(
        path: &mut ChangePath,
        guard: &mut Guard,
        settings: &OptimizerSettings,
        sys_root: &Path,
        skipped: &mut Vec<ChangeReport>,
    ) -> Result<Option<(AgentOptimizer, LiveEvent)>, Off> {
        let (candidates, mut problems) = given_knobs(path, sys_root);
        if candidates.is_empty() && problems.is_empty() {
            return Ok(None);
        }
        let (Some(port), Some(max_us)) = (settings.slo_port, settings.slo_max_us) else {
            return Err(Off::because(
                "the policy gives the optimizer knobs but the agent configuration has no SLO: \
                 set [optimizer] slo_port and slo_max_us",
            ));
        };
        let mut specs = Vec::new();
        let mut start = Vec::new();
        let mut knobs = Vec::new();
        let mut apart = 0;
        // Members that cannot be read now (a file gone for a moment): mendable, as groups apart.
        let mut unreadable = 0;
        for mut group in candidates {
            let mut members = Vec::new();
            let mut values = Vec::new();
            // The knob keeps the members that can be read; the group keeps its bounds and levels.
            for address in std::mem::take(&mut group.members) {
                match path.read(&address) {
                    Ok(Value::Int(now)) => match unreadable_for_its_checks(path, &address, now) {
                        Some(e) => {
                            unreadable += 1;
                            problems.push(named(&address, e.to_string()));
                        }
                        None => {
                            values.push(now);
                            members.push(address);
                        }
                    },
                    Ok(other) => problems.push(format!(
                        "{address} is {}, not one integer",
                        other.described()
                    )),
                    // Named by its address: an actuator's error may name the device alone,
                    // which two entries (rx-usecs, tx-usecs) share.
                    Err(e) => {
                        unreadable += 1;
                        problems.push(named(&address, e.to_string()));
                    }
                }
            }
            let Some(&first) = values.first() else {
                continue;
            };
            let mut knob = Knob::new(members, &group.entry);
            let mut now = first;
            // Moved together, they are moved from one value: set apart, the search could not
            // say where it started nor put each back.
            if values.iter().any(|&v| v != first) {
                match take_back_a_half_applied_trial(path, guard, &knob, &values, skipped) {
                    Ok(Some(agreed)) => now = agreed,
                    Ok(None) => {
                        apart += 1;
                        problems.push(format!(
                            "{}: its parameters differ ({}); the optimizer moves them together \
                             from one value: set them alike, or give each its own policy entry",
                            knob.name,
                            knob.each(&values)
                        ));
                        continue;
                    }
                    Err(why) => {
                        problems.push(why);
                        continue;
                    }
                }
            }
            if knobs.iter().any(|k: &Knob| k.name == knob.name) {
                knob.name = format!("{} (policy line {})", knob.name, group.line);
            }
            let levels = match grid(&knob, &group, settings.levels, sys_root) {
                Ok(levels) => levels,
                Err(why) => {
                    problems.push(why);
                    continue;
                }
            };
            specs.push(KnobSpec::discrete(knob.name.clone(), levels));
            start.push(now as f64);
            knobs.push(knob);
        }
        if knobs.is_empty() {
            // Apart only (and members unreadable for now, s48 review L4): the loop starts at the
            // first window they agree (the caller asks again).
            let only_apart = apart > 0 && apart + unreadable == problems.len();
            return Err(Off {
                reason: format!(
                    "no knob the policy gives the optimizer can be used here: {}{}",
                    problems.join("; "),
                    if only_apart {
                        " (asked again at each window: the loop starts once they agree)"
                    } else {
                        ""
                    }
                ),
                groups_apart: only_apart,
            });
        }
        for p in &problems {
            warn!("optimizer: left out: {p}");
        }
        let space = Space::new(specs.clone()).map_err(|e| Off::because(e.to_string()))?;
        let pairs = min_max_pairs(&knobs);
        let config = LiveConfig {
            slo: Slo {
                latency_us_max: Some(max_us),
                min_throughput_rps: None,
            },
            objective: settings.objective,
            budget: settings.budget,
            ei_stop: settings.ei_stop,
            load_change_rel: settings.load_change_rel,
            recheck_every: settings.recheck_every,
            recheck_tolerance_rel: settings.recheck_tolerance_rel,
            ..LiveConfig::default()
        };
        let mut live =
            LiveOptimizer::new_where(space, start.clone(), config, |p| possible(&pairs, p))
                .map_err(|e| Off::because(e.to_string()))?;
        let (before_trials, made) = before_the_loops_trials(path, &knobs, &start);
        if before_trials != start {
            info!(
                "optimizer: the knobs hold {start:?}, a trial of the loop's that a stopped agent \
                 left; if it breaks the SLO, the loop goes back to {before_trials:?}"
            );
            live.set_before_trials(before_trials);
        }
        let started = LiveEvent::Started {
            config: start,
            slo_port: port,
            slo_percentile: settings.slo_percentile,
            slo_max_us: max_us,
            windows_per_trial: settings.windows_per_trial,
            left_out: problems,
        };
        let all = knobs.iter().cloned().zip(specs).collect();
        Ok(Some((
            AgentOptimizer {
                settings: settings.clone(),
                all,
                set_aside: Vec::new(),
                knobs,
                live,
                made,
                trial: Trial::default(),
                mark: path.journal.records().len(),
                disturbed: None,
                unmeasured: None,
                last_timed_rps: 0.0,
                skipped: Vec::new(),
                owed: Vec::new(),
            },
            started,
        )))
    }

    /// Journal records from `mark` on count as changes to the knobs during the window open now:
    /// a loop started at a policy reload, after the old loop's settle wrote at `mark` or later,
    /// did not hold its start for the whole window, and must not learn it.
    pub fn count_changes_since(&mut self, mark: usize) {
        self.mark = self.mark.min(mark);
    }

    /// The loop's reverts since the last call that found a value that is not KPO's and left
    /// it: the caller passes each to `run::yielding::after_own_revert`.
    pub fn take_skipped_reverts(&mut self) -> Vec<ChangeReport> {
        std::mem::take(&mut self.skipped)
    }

    /// How many roll-backs and reverts are owed.
    #[cfg(test)]
    pub(crate) fn owed_for_tests(&self) -> usize {
        self.owed.len()
    }

    /// How many owed roll-backs used up their tries ([`Owed::slowed`]).
    #[cfg(test)]
    pub(crate) fn slowed_for_tests(&self) -> usize {
        self.owed.iter().filter(|o| o.slowed).count()
    }

    /// The knobs, in the order of every configuration in the loop's events.
    pub fn knobs(&self) -> Vec<String> {
        self.knobs.iter().map(|k| k.name.clone()).collect()
    }

    /// The live loop's state.
    pub fn live(&self) -> &LiveOptimizer {
        &self.live
    }

    /// A window just closed, before the guard or anyone acts on it: were the knobs as the loop
    /// left them for the whole window?
    pub fn window_closed(&mut self, path: &ChangePath) {
        let now = self.read(path);
        let keys: Vec<String> = self
            .knobs
            .iter()
            .flat_map(|k| k.members.iter().map(target_key))
            .collect();
        let touched = path.journal.records()[self.mark.min(path.journal.records().len())..]
            .iter()
            .any(|r| match r {
                Record::Intent(i) => keys.contains(&i.key),
                Record::Yield { key, .. } => keys.contains(key),
                _ => false,
            });
        self.disturbed = match now {
            Err(e) if !self.owed.is_empty() => Some((
                self.live.current().to_vec(),
                format!("{e} (or a roll-back of the loop's that failed: tried again)"),
            )),
            Err(e) => Some((
                read_knobs_partly(path, &self.knobs, self.live.current()).0,
                e,
            )),
            Ok(now) if self.only_owed_differ(&now) => Some((
                self.live.current().to_vec(),
                "a trial's value is left where its roll-back failed: tried again".into(),
            )),
            Ok(now) if touched || now != self.live.current() => Some((
                now,
                "the knobs were changed during the window (an operator, the guard, a person, or \
                 the settle at a policy reload)"
                    .into(),
            )),
            Ok(_) => None,
        };
    }

    /// Whether the knobs read `now` differ from the loop's configuration, and only where a
    /// roll-back is owed: the value there is a failed trial's, not someone else's to continue
    /// from (the owed roll-back puts the loop's back).
    fn only_owed_differ(&self, now: &[f64]) -> bool {
        // One past its tries too: taken for the kernel's value to go on from, the trial's value
        // was soon the loop's own, its roll-back dropped, and the next breach owed it anew with
        // fresh tries, journaled at nearly every window that broke the SLO (s51 review4 C1). No
        // trial is measured over a value the loop cannot put back: it holds until it takes.
        let owes = |k: &Knob| {
            self.owed
                .iter()
                .any(|o| k.members.contains(&o.made.address))
        };
        let mut differ = now
            .iter()
            .zip(self.live.current())
            .zip(&self.knobs)
            .filter(|((n, c), _)| n != c)
            .peekable();
        differ.peek().is_some() && differ.all(|(_, k)| owes(k))
    }

    /// Each knob's value: its members', which must agree (one set apart by someone else is
    /// an error: the knob has no one value to learn from).
    fn read(&self, path: &ChangePath) -> Result<Vec<f64>, String> {
        read_knobs(path, &self.knobs)
    }

    /// The window's events, each with the knobs its configurations are in (a search started over
    /// over other knobs changes them within one window).
    pub fn on_window(
        &mut self,
        path: &mut ChangePath,
        guard: &mut Guard,
        window: &Window,
    ) -> Vec<(Vec<String>, LiveEvent)> {
        let timed = self.timed(window);
        let when = if self.breaches_slo(&timed) {
            Due::Breach
        } else {
            Due::Window
        };
        if self.retry_owed_roll_backs(path, guard, when) {
            // The window was not the loop's configuration (a trial's value was left), but the
            // kernel holds the loop's values again: a resync continues from those.
            if let (Some(now), Some(disturbed)) = (self.read(path).ok(), self.disturbed.as_mut()) {
                disturbed.0 = now;
            }
        }
        let mut events = self.regroup(path, guard);
        if events.is_empty() && !self.knobs.is_empty() {
            let knobs = self.knobs();
            events = self
                .on_window_inner(path, guard, window, timed)
                .into_iter()
                .map(|e| (knobs.clone(), e))
                .collect();
        }
        self.mark = path.journal.records().len();
        events
    }

    /// Whether the window's timed requests broke the SLO.
    fn breaches_slo(&self, timed: &Result<Timed, String>) -> bool {
        let max_us = self.settings.slo_max_us.unwrap_or(f64::INFINITY);
        timed.as_ref().is_ok_and(|t| t.latency_us > max_us)
    }

    /// Each owed roll-back ([`Owed`]) that is due `when`, tried again: at a window that broke the
    /// SLO each at once, waits aside (a trial value the loop still owes may be what broke it:
    /// the loop's own revert does not reach that member), unless its tries are used up; as the
    /// loop ends, each. Whether one was taken back.
    fn retry_owed_roll_backs(
        &mut self,
        path: &mut ChangePath,
        guard: &mut Guard,
        when: Due,
    ) -> bool {
        let mut took = false;
        for mut owed in std::mem::take(&mut self.owed) {
            let Made {
                id,
                address,
                before,
                ..
            } = &owed.made;
            // Another change holds the parameter now (the guard reverted the trial's, a source
            // changed it): the trial's value is no longer there to take back.
            let holding = path.journal.param_state(address).and_then(|p| p.holding);
            // The loop no longer wants the value from before the trial there (it resynced to
            // the kernel's values, or its knobs were regrouped): it holds what it wants.
            let wanted = self
                .knobs
                .iter()
                .position(|k| k.members.contains(address))
                .map(|i| self.live.current()[i]);
            if holding != owed.holding || wanted != Some(*before as f64) {
                info!(
                    "optimizer: #{id} ({address}) no longer owes a roll-back: {}",
                    if holding != owed.holding {
                        "another change holds the parameter"
                    } else {
                        "the loop holds that value now"
                    }
                );
                continue;
            }
            // Before its wait is over, tried at once when the window broke the SLO (unless its
            // tries are used up) and when the loop ends.
            let due = owed.wait == 0
                || match when {
                    Due::Window => false,
                    Due::Breach => !owed.slowed,
                    Due::Ending => true,
                };
            if !due {
                owed.wait -= 1;
                self.owed.push(owed);
                continue;
            }
            let failed = match path.revert_own(*id, Source::Optimizer, &owed.reason) {
                Ok(r) if undone(path, &r) => {
                    info!(
                        "optimizer: taken back #{id} ({address}), owed: {}",
                        owed.reason
                    );
                    guard.forget(address);
                    took = true;
                    continue;
                }
                Ok(r) if r.status == ChangeStatus::Skipped => {
                    warn!("optimizer: rolling back #{id}: {}", r.describe());
                    self.skipped.push(r);
                    continue;
                }
                Ok(r) => r.describe(),
                Err(e) => format!("{address}: {e}"),
            };
            owed.tries_left = owed.tries_left.saturating_sub(1);
            if owed.tries_left == 0 {
                if !owed.slowed {
                    warn!(
                        "optimizer: rolling back #{id} failed again ({failed}); after \
                         {MAX_OWED_REVERT_TRIES} tries, it is tried every \
                         {MAX_OWED_WAIT_WINDOWS} windows and when the loop ends (the agent \
                         stops, the optimizer's policy changes): meanwhile its value stays (kpo \
                         revert {id} puts the value before it back)"
                    );
                }
                owed.slowed = true;
                owed.wait = MAX_OWED_WAIT_WINDOWS - 1;
                self.owed.push(owed);
                continue;
            }
            owed.wait = owed.backoff;
            owed.backoff = (owed.backoff * 2).min(MAX_OWED_WAIT_WINDOWS);
            if when == Due::Ending {
                warn!(
                    "optimizer: rolling back #{id} failed again as the loop ends ({failed}): its \
                     value stays (kpo revert {id} puts the value before it back)"
                );
            } else {
                warn!(
                    "optimizer: rolling back #{id} failed again ({failed}); next try in {} windows",
                    owed.wait + 1
                );
            }
            self.owed.push(owed);
        }
        took
    }

    /// A knob yielded to a person leaves the search, at the person's value, and comes back when
    /// handed back (`kpo resume`): the loop goes on tuning the others rather than asking, every
    /// trial, to move a knob that is not KPO's. When that set changes, the trial in place makes
    /// way for the best configuration measured (the loop's own values only), and the search
    /// starts over from the kernel's values (`regrouped`). Nothing when the set is the same (a
    /// person moving a knob already set aside is theirs to do: regrouping on every value would
    /// restart the search each window under a daemon that rewrites it).
    fn regroup(
        &mut self,
        path: &mut ChangePath,
        guard: &mut Guard,
    ) -> Vec<(Vec<String>, LiveEvent)> {
        let set_aside: Vec<usize> = (0..self.all.len())
            .filter(|&i| self.all[i].0.members.iter().any(|a| yielded(path, a)))
            .collect();
        if set_aside == self.set_aside {
            return Vec::new();
        }
        let mut events = Vec::new();
        if !self.knobs.is_empty() {
            let knobs = self.knobs();
            let mut back = PathKnobs {
                path,
                guard,
                baseline: None,
                knobs: &self.knobs,
                made: &mut self.made,
                skipped: &mut self.skipped,
                owed: &mut self.owed,
                exiting: false,
            };
            events.extend(
                self.live
                    .go_back_for(&mut back, GoBack::Regroup)
                    .into_iter()
                    .map(|e| (knobs.clone(), e)),
            );
        }
        let searched: Vec<usize> = (0..self.all.len())
            .filter(|i| !set_aside.contains(i))
            .collect();
        let knobs: Vec<Knob> = searched.iter().map(|&i| self.all[i].0.clone()).collect();
        let live = if knobs.is_empty() {
            None
        } else {
            let started = read_knobs(path, &knobs).and_then(|start| {
                let specs = searched.iter().map(|&i| self.all[i].1.clone()).collect();
                let pairs = min_max_pairs(&knobs);
                Space::new(specs)
                    .map_err(|e| e.to_string())
                    .and_then(|space| {
                        LiveOptimizer::new_where(space, start, self.live.config().clone(), |p| {
                            possible(&pairs, p)
                        })
                        .map_err(|e| e.to_string())
                    })
            });
            match started {
                Ok(live) => Some(live),
                Err(reason) => {
                    // Tried again next window (nothing was taken as regrouped), said once.
                    let reason = format!("cannot start the search over: {reason}");
                    if self.unmeasured.as_ref() != Some(&reason) {
                        self.unmeasured = Some(reason.clone());
                        events.push((self.knobs(), LiveEvent::Unmeasured { reason }));
                    }
                    return events;
                }
            }
        };
        // Each knob set aside, with its yielded parameters and their values now (after the
        // trial in place made way).
        let described: Vec<String> = set_aside
            .iter()
            .map(|&i| {
                let knob = &self.all[i].0;
                let each: Vec<String> = knob
                    .members
                    .iter()
                    .filter(|a| yielded(path, a))
                    .map(|a| match path.read(a) {
                        Ok(v) => format!("{a} = {v}"),
                        Err(_) => format!("{a} (unreadable)"),
                    })
                    .collect();
                if knob.members.len() == 1 {
                    format!("{} (yielded)", each.join(""))
                } else {
                    format!("{} (yielded: {})", knob.name, each.join(", "))
                }
            })
            .collect();
        self.set_aside = set_aside;
        self.knobs = knobs;
        if let Some(live) = live {
            self.live = live;
        }
        self.made.clear();
        self.trial = Trial::default();
        self.disturbed = None;
        self.unmeasured = None;
        let config = if self.knobs.is_empty() {
            Vec::new()
        } else {
            self.live.start().to_vec()
        };
        events.push((
            self.knobs(),
            LiveEvent::Regrouped {
                config,
                set_aside: described,
            },
        ));
        events
    }
}

/// `why`, led by `address` unless it names it already.
fn named(address: &ParamAddress, why: String) -> String {
    let address = address.to_string();
    if why.contains(&address) {
        why
    } else {
        format!("{address}: {why}")
    }
}

/// The knobs (min, max) that hold one cpufreq policy's `scaling_min_freq` and
/// `scaling_max_freq`.
fn min_max_pairs(knobs: &[Knob]) -> Vec<(usize, usize)> {
    let policies = |k: &Knob, attr: &str| -> Vec<String> {
        k.members
            .iter()
            .filter(|a| a.name == attr)
            .filter_map(|a| match &a.target {
                Target::Cpufreq { policy } => Some(policy.clone()),
                _ => None,
            })
            .collect()
    };
    let mut pairs = Vec::new();
    for (i, low) in knobs.iter().enumerate() {
        let mins = policies(low, "scaling_min_freq");
        for (j, high) in knobs.iter().enumerate() {
            if policies(high, "scaling_max_freq")
                .iter()
                .any(|p| mins.contains(p))
            {
                pairs.push((i, j));
            }
        }
    }
    pairs
}

/// Whether a point is a configuration the kernel can hold: no policy's min above its max. The
/// search leaves the others out rather than have the path refuse them one by one, each after
/// writing its other half (a trial that lowers the max first) and undoing it.
fn possible(pairs: &[(usize, usize)], point: &[f64]) -> bool {
    pairs.iter().all(|&(min, max)| point[min] <= point[max])
}

/// What each knob held before the loop's trials, where the kernel has one of them now (a killed
/// agent leaves its trial, and the next start takes it as its start), with the loop's changes
/// that go back there; `start` where the journal says the value is not the loop's.
fn before_the_loops_trials(
    path: &ChangePath,
    knobs: &[Knob],
    start: &[f64],
) -> (Vec<f64>, Vec<Made>) {
    let mut before = start.to_vec();
    let mut made = Vec::new();
    for (i, knob) in knobs.iter().enumerate() {
        let found: Option<Vec<(u64, i64)>> = knob
            .members
            .iter()
            .map(|a| first_of_the_loops_run(path, a, start[i] as i64))
            .collect();
        let Some(found) = found else { continue };
        let value = found[0].1;
        if found.iter().any(|&(_, v)| v != value) || value as f64 == start[i] {
            continue;
        }
        before[i] = value as f64;
        made.extend(
            knob.members
                .iter()
                .zip(&found)
                .map(|(address, &(id, before))| Made {
                    knob: i,
                    address: address.clone(),
                    id,
                    before,
                }),
        );
    }
    (before, made)
}

/// The first of the loop's changes, in this boot, in the unbroken run of them that ends with the
/// one the kernel has at `address` now (`now`), and the value it replaced. None when the value
/// there is not the loop's: another source's change, a person's (a yield), none at all.
fn first_of_the_loops_run(
    path: &ChangePath,
    address: &ParamAddress,
    now: i64,
) -> Option<(u64, i64)> {
    let journal = &path.journal;
    let state = journal.param_state(address)?;
    if state.yielded.is_some() || state.last_applied != Some(Value::Int(now.into())) {
        return None;
    }
    let holding = journal.intent(state.holding?)?;
    if holding.source != Source::Optimizer || journal.before_this_boot(holding) {
        return None;
    }
    let first = journal.first_of_run(address, Source::Optimizer)?;
    match first.before {
        Value::Int(v) => Some((first.id, i64::try_from(v).ok()?)),
        _ => None,
    }
}

/// A group knob whose members differ (`values`, read at the loop's start) because a trial of
/// the loop's was cut short between two members' writes: an agent killed there, or a roll-back
/// of a failed trial that failed itself. Left out, the members already written would keep the
/// trial's value with nothing watching it against the SLO; so each member that holds the loop's
/// value (its change, source `optimizer`, in this boot: [`first_of_the_loops_run`]) goes back
/// through the journal (`revert_own`, as the loop's other reverts) to what it held before the
/// loop's run of changes there. A member someone else set apart (an operator, an advisor, a
/// person: not the loop's value) is left as it is.
///
/// `Ok(Some(v))`: the members agree on `v` now (read back). `Ok(None)`: nothing of the loop's
/// to take back (someone else set them apart): the caller leaves the knob out, as for any group
/// set apart. `Err`: the knob is left out for the reason given: a revert failed, or the members
/// still differ after the loop's values went back (someone else set one apart too).
fn take_back_a_half_applied_trial(
    path: &mut ChangePath,
    guard: &mut Guard,
    knob: &Knob,
    values: &[i128],
    skipped: &mut Vec<ChangeReport>,
) -> Result<Option<i128>, String> {
    let loops: Vec<(&ParamAddress, u64, i64)> = knob
        .members
        .iter()
        .zip(values)
        .filter_map(|(a, &v)| {
            let (id, before) = first_of_the_loops_run(path, a, i64::try_from(v).ok()?)?;
            (i128::from(before) != v).then_some((a, id, before))
        })
        .collect();
    if loops.is_empty() {
        return Ok(None);
    }
    let mut errors = Vec::new();
    for (address, id, before) in loops {
        let why = format!("optimizer: a trial left half-applied; back to {before}");
        match path.revert_own(id, Source::Optimizer, &why) {
            Ok(r) if undone(path, &r) => {
                guard.forget(address);
            }
            Ok(r) => {
                errors.push(r.describe());
                if r.status == ChangeStatus::Skipped {
                    skipped.push(r);
                }
            }
            Err(e) => errors.push(format!("{address}: {e}")),
        }
    }
    let mut now = Vec::new();
    for a in &knob.members {
        match path.read(a) {
            Ok(Value::Int(v)) => now.push(v),
            Ok(other) => errors.push(format!("{a} is {}, not one integer", other.described())),
            Err(e) => errors.push(e.to_string()),
        }
    }
    if !errors.is_empty() {
        return Err(format!(
            "{}: its parameters differ ({}) after a trial of the loop's was left half-applied, \
             and taking the loop's values back failed: {}",
            knob.name,
            knob.each(values),
            errors.join("; ")
        ));
    }
    if now.iter().any(|&v| v != now[0]) {
        info!(
            "optimizer: {}: the loop's values taken back; its parameters still differ ({}), \
             someone else set one apart",
            knob.name,
            knob.each(&now)
        );
        return Err(format!(
            "{}: its parameters differ ({}); the optimizer moves them together from one value: \
             set them alike, or give each its own policy entry (the loop's own values there, \
             left by a trial cut short, were taken back: they were {})",
            knob.name,
            knob.each(&now),
            knob.each(values)
        ));
    }
    info!(
        "optimizer: {}: a trial left half-applied ({}) taken back to {}",
        knob.name,
        knob.each(values),
        now[0]
    );
    Ok(Some(now[0]))
}

/// Whether `address` is yielded to a person (`kpo resume` hands it back).
fn yielded(path: &ChangePath, address: &ParamAddress) -> bool {
    path.journal
        .param_state(address)
        .is_some_and(|p| p.yielded.is_some())
}

/// Each knob's value as far as it can be read, for a window whose knobs cannot all be read as
/// one configuration: the value its members that can be read agree on (one that cannot be read
/// left out), else `record`'s (the loop's own: members set apart have no one value to continue
/// from); and whether it reads as one (every member read, all agree). A knob whose file is gone
/// still shows what the loop's writes to its other members did: after a revert that failed there
/// only, those members hold the best's value, and a record left at the trial's would be resynced
/// to every window, the trial taken for what the kernel holds. The record is brought to the
/// kernel rather than the revert tried again: a `revert_failed` leaves the record at the trial
/// everywhere else too, and the next window's read, finding the kernel's values, resyncs to them
/// (a revert is not retried); a write to a file that is gone would fail every window.
fn read_knobs_partly(path: &ChangePath, knobs: &[Knob], record: &[f64]) -> (Vec<f64>, Vec<bool>) {
    knobs
        .iter()
        .zip(record)
        .map(|(k, &own)| {
            let read: Vec<Option<i128>> = k
                .members
                .iter()
                .map(|a| match path.read(a) {
                    Ok(Value::Int(v)) => Some(v),
                    _ => None,
                })
                .collect();
            let values: Vec<i128> = read.iter().flatten().copied().collect();
            match values.first() {
                Some(&v) if values.iter().all(|&w| w == v) => {
                    (v as f64, values.len() == read.len())
                }
                _ => (own, false),
            }
        })
        .unzip()
}

/// Why every value of `address` would be refused, by a check that reads something besides the
/// parameter (a cpufreq limit's hardware range, `cpuinfo_min_freq` and `cpuinfo_max_freq`) and
/// cannot read it: left out at start as an unreadable value is, where the search would otherwise
/// spend its whole budget on candidates each refused as invalid (s58 story BG-1). Checked with
/// the value it has now, which the kernel took; a refusal of that value itself says nothing of
/// the candidates.
fn unreadable_for_its_checks(
    path: &ChangePath,
    address: &ParamAddress,
    now: i128,
) -> Option<ActuateError> {
    match path.check_value(address, &Value::Int(now), true) {
        Err(e @ (ActuateError::Io { .. } | ActuateError::Parse { .. })) => Some(e),
        _ => None,
    }
}

/// Each knob's value: its members', which must agree (one set apart by someone else is an
/// error: the knob has no one value to learn from).
fn read_knobs(path: &ChangePath, knobs: &[Knob]) -> Result<Vec<f64>, String> {
    knobs
        .iter()
        .map(|k| {
            let mut values = Vec::new();
            for a in &k.members {
                match path.read(a) {
                    Ok(Value::Int(v)) => values.push(v),
                    Ok(other) => {
                        return Err(format!("{a} is {}, not one integer", other.described()))
                    }
                    Err(e) => return Err(e.to_string()),
                }
            }
            if values.iter().all(|&v| v == values[0]) {
                Ok(values[0] as f64)
            } else {
                Err(format!(
                    "{}: its parameters differ ({}); the optimizer moves them together from one \
                     value: set them alike (kpo apply each to one value), or give each its own \
                     policy entry; the search starts over the window they agree",
                    k.name,
                    k.each(&values)
                ))
            }
        })
        .collect()
}

impl AgentOptimizer {
    /// The agent is stopping: a trial in place makes way for the best configuration measured
    /// within the SLO (or the start, or what the knobs held before the trials when the start is
    /// a stopped agent's trial measured beyond the SLO), so that no experiment outlives the
    /// agent unwatched. Not
    /// when every knob's parameters go back to their originals anyway (`on_exit = "revert"`).
    pub fn on_exit(&mut self, path: &mut ChangePath, guard: &mut Guard) -> Vec<LiveEvent> {
        // A roll-back still owed gets a last try, waits aside: left, it would stay until the next
        // start, or for good if there is none.
        self.retry_owed_roll_backs(path, guard, Due::Ending);
        let all_revert =
            self.knobs.iter().flat_map(|k| &k.members).all(|address| {
                path.policy.rule_for(address).on_exit == crate::policy::OnExit::Revert
            });
        if all_revert {
            return Vec::new();
        }
        self.go_back(path, guard, GoBack::Stopping)
    }

    /// A reloaded policy changed the optimizer's entries, and this loop makes way for one over
    /// them: as at shutdown, a trial in place makes way for the best configuration measured
    /// within the SLO (or the start), but always (the agent goes on: no `on_exit` revert
    /// follows), and judged by the policy now in `path`, the new one (`Deciding::reload_policy`
    /// says why): a configuration its bounds exclude does not stay.
    pub fn on_reload(&mut self, path: &mut ChangePath, guard: &mut Guard) -> Vec<LiveEvent> {
        // This loop ends: what it still owes gets a last try, as at exit.
        self.retry_owed_roll_backs(path, guard, Due::Ending);
        self.go_back(path, guard, GoBack::Reload)
    }

    fn go_back(&mut self, path: &mut ChangePath, guard: &mut Guard, why: GoBack) -> Vec<LiveEvent> {
        if self.knobs.is_empty() {
            return Vec::new();
        }
        let mut knobs = PathKnobs {
            path,
            guard,
            baseline: None,
            knobs: &self.knobs,
            made: &mut self.made,
            skipped: &mut self.skipped,
            owed: &mut self.owed,
            exiting: why == GoBack::Stopping,
        };
        self.live.go_back_for(&mut knobs, why)
    }

    /// [`Self::on_window`] over the knobs searched; `timed`: the window's requests on the SLO's
    /// port.
    fn on_window_inner(
        &mut self,
        path: &mut ChangePath,
        guard: &mut Guard,
        window: &Window,
        timed: Result<Timed, String>,
    ) -> Vec<LiveEvent> {
        // Changed during the window, or after it closed (the guard reverted a trial, an advisor
        // changed a knob): the window is not the trial's, continue from the kernel's values.
        let disturbed = self.disturbed.take().or_else(|| match self.read(path) {
            Ok(now) if now != self.live.current() => Some((
                now,
                "the knobs were changed when the window closed (the guard, or an advisor)".into(),
            )),
            Ok(_) => None,
            Err(e) => Some((
                read_knobs_partly(path, &self.knobs, self.live.current()).0,
                e,
            )),
        });
        let stalled = timed.is_err() && self.none_completed(window);
        if let Ok(t) = &timed {
            self.last_timed_rps = t.requests_per_s;
        }
        let breached = self.breaches_slo(&timed);
        if let Some((now, reason)) = disturbed {
            self.trial = Trial::default();
            // The kernel has the loop's values, as far as it can be read.
            let loops_values = now == self.live.current();
            let mut events = vec![LiveEvent::Resynced {
                config: now.clone(),
                reason,
            }];
            match &timed {
                // Someone else moved some knobs: a breach still takes a trial's values that are
                // left back at once, not after one more window under them (the loop's own only:
                // the knobs someone else moved keep their values).
                Ok(t) if !loops_values => {
                    events.extend(self.back_without_step(path, guard, window, |live, knobs| {
                        live.resync_after_breach(now, t.latency_us, t.requests_per_s, knobs)
                    }));
                }
                // Knobs that cannot be read as one configuration (a group's members set apart
                // by someone else, a member that cannot be read) are resynced every window
                // until they agree: the SLO must still hold the loop's own trial values to
                // account meanwhile, or a trial that breaks it would stay for as long as they
                // disagree. The breach instead of the resync, whose configuration is the loop's
                // own then: a resync first would drop a converged best still waiting to be
                // applied, and the breach would restart the search as if a measured best held
                // had broken the SLO, rather than go to that best and hold it.
                Ok(t) if breached => {
                    events.extend(self.breach_without_step(path, guard, window, t));
                }
                // Within the SLO (or untimed), under the loop's own values: a resync would drop
                // a converged best still waiting to be applied, and the loop would hold the last
                // trial for good. The best keeps waiting; a window that timed requests tries its
                // move again, as a step while holding does, unless that move writes a knob that
                // cannot be read as one.
                _ if loops_values => {
                    let as_one = read_knobs_partly(path, &self.knobs, self.live.current()).1;
                    let retry = timed.is_ok();
                    events.extend(self.back_without_step(path, guard, window, |live, knobs| {
                        live.resync_own(&as_one, retry, knobs)
                    }));
                }
                _ => self.live.resync(now),
            }
            return events;
        }
        if let Err(reason) = timed
            .as_ref()
            .map_err(Clone::clone)
            .and_then(|t| self.add(window, t))
        {
            let mut events = Vec::new();
            if let (true, Ok(t)) = (breached, &timed) {
                // Not a measurement (no energy reading), but the SLO still holds the trial to
                // account: back at once.
                events = self.breach_without_step(path, guard, window, t);
            } else if stalled {
                // A trial that stalls the service completes no request to time: no percentile
                // can break the SLO, so the silence itself sends it back.
                events = self.back_without_step(path, guard, window, |live, knobs| {
                    live.no_requests_under_trial(knobs)
                });
            }
            if self.unmeasured.as_ref() != Some(&reason) {
                self.unmeasured = Some(reason.clone());
                events.insert(0, LiveEvent::Unmeasured { reason });
            }
            return events;
        }
        self.unmeasured = None;
        // A window that breaks the SLO ends its trial at once: the step goes back.
        if self.trial.windows < self.settings.windows_per_trial && !breached {
            return Vec::new();
        }
        let trial = std::mem::take(&mut self.trial);
        // A trial a breach cut short stands for a whole one: its totals scaled up, so that a
        // per-trial objective is not smaller for being shorter.
        let whole = f64::from(self.settings.windows_per_trial) / f64::from(trial.windows.max(1));
        let m = super::live::Measurement {
            energy_j: trial.energy_j * whole,
            energy_source: trial.source.unwrap_or(EnergySource::Estimated),
            requests: trial.requests * whole,
            window_s: trial.seconds * whole,
            latency_us: trial.latency_us,
            load_rps: trial.requests / trial.seconds.max(1e-9),
        };
        let mut knobs = PathKnobs {
            path,
            guard,
            baseline: Some(window),
            knobs: &self.knobs,
            made: &mut self.made,
            skipped: &mut self.skipped,
            owed: &mut self.owed,
            exiting: false,
        };
        match self.live.step(&m, &mut knobs) {
            Ok(events) => events,
            Err(e) => {
                warn!("optimizer: {e}");
                let mut events = e.events;
                events.push(LiveEvent::Unmeasured {
                    reason: e.error.to_string(),
                });
                // An objective that is not a number is no measurement, but a breach is still one.
                if let (true, Ok(t)) = (breached, &timed) {
                    events.extend(self.breach_without_step(path, guard, window, t));
                }
                events
            }
        }
    }

    /// A window that breaks the SLO but is no measurement the loop can learn from: back to the
    /// best feasible configuration measured (or the start) at once, as a step would.
    fn breach_without_step(
        &mut self,
        path: &mut ChangePath,
        guard: &mut Guard,
        window: &Window,
        t: &Timed,
    ) -> Vec<LiveEvent> {
        self.back_without_step(path, guard, window, |live, knobs| {
            live.breach_unmeasured(t.latency_us, t.requests_per_s, knobs)
        })
    }

    /// A window that is no measurement but ends the trial all the same (`back`: the loop's
    /// answer, a breach or no request completed): the trial's windows so far are dropped.
    fn back_without_step(
        &mut self,
        path: &mut ChangePath,
        guard: &mut Guard,
        window: &Window,
        back: impl FnOnce(&mut LiveOptimizer, &mut dyn Knobs) -> Vec<LiveEvent>,
    ) -> Vec<LiveEvent> {
        self.trial = Trial::default();
        let mut knobs = PathKnobs {
            path,
            guard,
            baseline: Some(window),
            knobs: &self.knobs,
            made: &mut self.made,
            skipped: &mut self.skipped,
            owed: &mut self.owed,
            exiting: false,
        };
        back(&mut self.live, &mut knobs)
    }

    /// The request-latency sensor timed no request on the SLO port over the window, where the
    /// rate of the last window that timed some would have given it at least
    /// [`STALL_EXPECTED_REQUESTS`] in the time it sampled: not a quiet spell that the duty cycle
    /// happened to miss (at 20 expected, a rate that held gives none with probability 2e-9).
    fn none_completed(&self, w: &Window) -> bool {
        let port = self.settings.slo_port.unwrap_or(0);
        let expected = self.last_timed_rps * w.sampled_fraction * w.duration_s;
        expected >= STALL_EXPECTED_REQUESTS
            && !w
                .request_latency
                .iter()
                .any(|r| r.port == port && r.latency.samples > 0)
    }

    /// The SLO's percentile of the window's timed requests on the SLO port (the worst over the
    /// port's services), and their rate, or why there is none.
    fn timed(&self, w: &Window) -> Result<Timed, String> {
        let port = self.settings.slo_port.unwrap_or(0);
        let timed: Vec<_> = w
            .request_latency
            .iter()
            .filter(|r| r.port == port && r.latency.samples > 0)
            .collect();
        if timed.is_empty() || w.sampled_fraction <= 0.0 || w.duration_s <= 0.0 {
            return Err(format!(
                "no request timed on port {port} in the window (no traffic, or the \
                 request_latency sensor is off)"
            ));
        }
        let percentiles: Vec<f64> = timed
            .iter()
            .map(|r| match self.settings.slo_percentile {
                Percentile::P50 => r.latency.p50_us,
                Percentile::P90 => r.latency.p90_us,
                Percentile::P99 => r.latency.p99_us,
            })
            .collect();
        // A service whose percentile is not a number says nothing; the others still count.
        if !percentiles.iter().any(|v| v.is_finite()) {
            return Err(format!(
                "the request latency on port {port} is not a number ({percentiles:?})"
            ));
        }
        let sampled: u64 = timed.iter().map(|r| r.latency.samples).sum();
        // The sensor is duty-cycled: its count covers the sampled fraction of the window.
        let requests = sampled as f64 / w.sampled_fraction;
        Ok(Timed {
            latency_us: percentiles
                .into_iter()
                .filter(|v| v.is_finite())
                .fold(0.0, f64::max),
            requests,
            requests_per_s: requests / w.duration_s,
        })
    }

    /// Adds one window (its timed requests `t`) to the trial, or says why it is not a
    /// measurement.
    fn add(&mut self, w: &Window, t: &Timed) -> Result<(), String> {
        let energy = w.energy.as_ref().ok_or("the agent has no energy source")?;
        let joules = energy.joules.ok_or_else(|| {
            format!(
                "the energy reading failed: {}",
                energy.error.as_deref().unwrap_or("no reading")
            )
        })?;
        if energy.source == EnergySource::Estimated && !self.settings.allow_estimated_energy {
            return Err(
                "the energy is estimated (a model of CPU time and frequency, not a \
                        meter); the optimizer does not run on it unless [optimizer] \
                        allow_estimated_energy = true"
                    .into(),
            );
        }
        // The energy source changed under the trial (the agent set one aside that stopped
        // giving figures): its windows so far are in another source's joules, which do not add
        // up with these. The trial starts over from this window.
        if self.trial.source.is_some_and(|s| s != energy.source) {
            self.trial = Trial::default();
        }
        let trial = &mut self.trial;
        trial.windows += 1;
        trial.energy_j += joules;
        trial.requests += t.requests;
        trial.seconds += w.duration_s;
        trial.latency_us = trial.latency_us.max(t.latency_us);
        trial.source = Some(energy.source);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::{undone, OptimizerSettings};

    /// Every key of `[optimizer]` out of range is named, with why; the defaults are valid.
    #[test]
    fn optimizer_settings_out_of_range_are_named() {
        assert_eq!(OptimizerSettings::default().invalid(), None);
        let bad = |toml_text: &str| -> &'static str {
            let s: OptimizerSettings = toml::from_str(toml_text).unwrap();
            s.invalid()
                .unwrap_or_else(|| panic!("{toml_text} passed"))
                .0
        };
        for (text, key) in [
            ("windows_per_trial = 0", "optimizer.windows_per_trial"),
            ("levels = 1", "optimizer.levels"),
            ("levels = 65", "optimizer.levels"),
            ("budget = 1", "optimizer.budget"),
            ("budget = 201", "optimizer.budget"),
            ("slo_port = 8080", "optimizer.slo_max_us"),
            ("slo_max_us = 500.0", "optimizer.slo_port"),
            ("slo_port = 0\nslo_max_us = 500.0", "optimizer.slo_port"),
            ("slo_port = 8080\nslo_max_us = 0.0", "optimizer.slo_max_us"),
            ("slo_port = 8080\nslo_max_us = nan", "optimizer.slo_max_us"),
            ("recheck_every = 0", "optimizer.recheck_every"),
            ("ei_stop = -0.1", "optimizer.ei_stop"),
            ("ei_stop = inf", "optimizer.ei_stop"),
            ("load_change_rel = 0.0", "optimizer.load_change_rel"),
            ("load_change_rel = -1.0", "optimizer.load_change_rel"),
            (
                "recheck_tolerance_rel = nan",
                "optimizer.recheck_tolerance_rel",
            ),
        ] {
            assert_eq!(bad(text), key, "{text}");
        }
        let fine: OptimizerSettings = toml::from_str(
            "ei_stop = 0.0\nload_change_rel = 0.5\nrecheck_every = 1\nrecheck_tolerance_rel = 0.05\n\
             slo_port = 1\nslo_max_us = 1.0\nbudget = 200",
        )
        .unwrap();
        assert_eq!(fine.invalid(), None);
        assert!(toml::from_str::<OptimizerSettings>("recheck_evry = 3").is_err());
    }
    use crate::{
        actuate::param::Value,
        change::tests::{kernel, path},
        policy::{Proposal, Source},
    };

    /// A cpufreq policy's limits shifted down or up together are written in an order the
    /// actuator (which refuses a max below the min) accepts one write at a time: the min
    /// first going down, the max first going up. The other order is refused at its first write.
    #[test]
    fn cpufreq_limits_are_written_in_an_order_each_write_passes() {
        use crate::actuate::{cpufreq::CpufreqActuator, param::ParamAddress, Actuator, Roots};
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("devices/system/cpu/cpufreq/policy0");
        std::fs::create_dir_all(&dir).unwrap();
        for (file, khz) in [
            ("cpuinfo_min_freq", 800_000),
            ("cpuinfo_max_freq", 3_000_000),
            ("scaling_min_freq", 1_600_000),
            ("scaling_max_freq", 2_000_000),
        ] {
            std::fs::write(dir.join(file), format!("{khz}\n")).unwrap();
        }
        let roots = Roots {
            proc_sys: tmp.path().join("proc_sys"),
            sys: tmp.path().to_path_buf(),
        };
        let addresses: Vec<ParamAddress> = ["scaling_max_freq", "scaling_min_freq"]
            .iter()
            .map(|a| format!("cpufreq:policy0:{a}").parse().unwrap())
            .collect();
        let write = |order: &[usize], to: &[f64]| -> Result<(), String> {
            for &i in order {
                let mut a = CpufreqActuator::open(&addresses[i], &roots).unwrap();
                a.apply(&Value::Int(to[i] as i128))
                    .map_err(|e| e.to_string())?;
            }
            Ok(())
        };
        let high = [2_000_000.0, 1_600_000.0];
        let low = [1_400_000.0, 1_200_000.0];
        // The knobs' own order (max, min) is refused going down...
        assert!(write(&[0, 1], &low)
            .unwrap_err()
            .contains("lower scaling_min_freq first"));
        let knobs: Vec<super::Knob> = addresses
            .iter()
            .map(|a| super::Knob::new(vec![a.clone()], &a.to_string()))
            .collect();
        let down = super::write_order(&knobs, &high, &low);
        assert_eq!(down, [1, 0]);
        write(&down, &low).unwrap();
        // ...and (min, max) going up.
        assert!(write(&[1, 0], &high)
            .unwrap_err()
            .contains("raise scaling_max_freq first"));
        let up = super::write_order(&knobs, &low, &high);
        assert_eq!(up, [0, 1]);
        write(&up, &high).unwrap();
        // A knob that does not move is not written.
        assert_eq!(
            super::write_order(&knobs, &high, &[1_800_000.0, 1_600_000.0]),
            [0]
        );
    }

    /// A quarantined value bars a trial that moves its knob to it, not one that leaves it in
    /// place (s52 review L2: a value quarantined while it stayed, its revert's write having
    /// failed, barred every configuration that kept it).
    #[test]
    fn a_quarantine_bars_only_the_knobs_a_trial_moves() {
        use super::{Knob, Knobs, PathKnobs};
        use crate::guard::{Guard, GuardConfig};
        const A: &str = "net.core.somaxconn@netns:4026539999";
        const B: &str = "net.ipv4.tcp_max_syn_backlog@netns:4026539999";
        let policy = "[params.\"net.core.somaxconn\"]\nmode = \"auto\"\n";
        let dir = tempfile::tempdir().unwrap();
        let k = kernel(&[(A, Value::Int(4096)), (B, Value::Int(512))]);
        let (mut p, _) = path(dir.path(), policy, &k);
        p.journal
            .quarantine(
                &B.parse().unwrap(),
                &Value::Int(512),
                std::time::Duration::from_secs(3600),
                "test",
            )
            .unwrap();
        let mut guard = Guard::new(GuardConfig::default());
        let knobs = [
            Knob::new(vec![A.parse().unwrap()], A),
            Knob::new(vec![B.parse().unwrap()], B),
        ];
        let mut knobs = PathKnobs {
            path: &mut p,
            guard: &mut guard,
            baseline: None,
            knobs: &knobs,
            made: &mut Vec::new(),
            skipped: &mut Vec::new(),
            owed: &mut Vec::new(),
            exiting: false,
        };
        assert!(
            knobs.allowed_move(&[4096.0, 512.0], &[8192.0, 512.0]),
            "B stays"
        );
        assert!(
            !knobs.allowed_move(&[4096.0, 1024.0], &[4096.0, 512.0]),
            "B moves to it"
        );
        assert!(
            !knobs.allowed(&[8192.0, 512.0]),
            "going back to it is barred"
        );
    }

    /// The loop's revert is done only when it took: one put back after a wrong read-back is not.
    /// The loop takes back its own values, also where its own earlier revert left one (no change
    /// holds the parameter then), but not a value another source set since through the journal.
    #[test]
    fn the_loop_takes_back_its_own_values_only() {
        use super::{ChangeReason, GoBack, Knob, Knobs, PathKnobs, Tried};
        use crate::guard::{Guard, GuardConfig};
        const A: &str = "net.core.somaxconn@netns:4026539999";
        let policy = "[guard]\nmax_changes_per_hour = 1000\n[params.\"net.core.somaxconn\"]\n\
                      mode = \"auto\"\nmin = 128\nmax = 65535\n";
        let dir = tempfile::tempdir().unwrap();
        let k = kernel(&[(A, Value::Int(4096))]);
        let (mut p, _) = path(dir.path(), policy, &k);
        let mut guard = Guard::new(GuardConfig::default());
        let knobs = [Knob::new(vec![A.parse().unwrap()], A)];
        let mut made = Vec::new();
        let mut skipped = Vec::new();
        let now = |k: &crate::change::tests::FakeActuators| k.0.lock().unwrap().values[A].clone();
        let mut loop_knobs = PathKnobs {
            path: &mut p,
            guard: &mut guard,
            baseline: None,
            knobs: &knobs,
            made: &mut made,
            skipped: &mut skipped,
            owed: &mut Vec::new(),
            exiting: false,
        };
        // S 4096 -> a 8192 -> b 16384, breach: back to a (the loop's revert), then a breaks the
        // SLO too: back to S, though no change holds the parameter at a.
        for (from, to) in [(4096.0, 8192.0), (8192.0, 16384.0)] {
            let tried = loop_knobs.try_config(&[from], &[to], ChangeReason::Explore);
            assert_eq!(tried, Tried::Applied);
        }
        loop_knobs
            .revert_to(&[16384.0], &[8192.0], GoBack::SloBreach)
            .unwrap();
        assert_eq!(now(&k), Value::Int(8192));
        assert_eq!(
            loop_knobs
                .path
                .journal
                .param_state(&A.parse().unwrap())
                .unwrap()
                .holding,
            None
        );
        loop_knobs
            .revert_to(&[8192.0], &[4096.0], GoBack::SloBreach)
            .unwrap();
        assert_eq!(now(&k), Value::Int(4096), "the loop's own value taken back");

        // An operator's value set since, through the journal, stays.
        let tried = loop_knobs.try_config(&[4096.0], &[8192.0], ChangeReason::Explore);
        assert_eq!(tried, Tried::Applied);
        loop_knobs
            .path
            .propose(&Proposal {
                address: A.parse().unwrap(),
                value: Value::Int(2048),
                source: Source::Operator,
                reason: "test".into(),
            })
            .unwrap();
        assert_eq!(now(&k), Value::Int(2048));
        let reached = loop_knobs
            .revert_to(&[8192.0], &[4096.0], GoBack::Stopping)
            .unwrap();
        assert_eq!(now(&k), Value::Int(2048), "the operator's value stays");
        assert_eq!(
            reached,
            vec![8192.0],
            "not reached: the value the loop knew is kept"
        );
    }

    /// The loop's revert of a NIC's value whose device is absent (not known: deleted, or moved to
    /// another namespace) or whose name names a new device writes nothing and is not taken for
    /// done: the loop does not hold the value it went back to (`revert_to` fails, with why). Only
    /// the second settles the device as gone in the journal.
    #[test]
    fn the_loop_does_not_take_a_revert_on_a_nic_that_is_gone_for_done() {
        use super::{ChangeReason, GoBack, Knob, Knobs, PathKnobs, Tried};
        use crate::guard::{Guard, GuardConfig};
        const RX: &str = "ethtool:eth0:rx-usecs";
        for comes_back in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let (mut p, nic) = crate::change::tests::nic_under_dim(dir.path(), false);
            let mut guard = Guard::new(GuardConfig::default());
            let knobs = [Knob::new(vec![RX.parse().unwrap()], RX)];
            let (mut made, mut skipped) = (Vec::new(), Vec::new());
            let mut loop_knobs = PathKnobs {
                path: &mut p,
                guard: &mut guard,
                baseline: None,
                knobs: &knobs,
                made: &mut made,
                skipped: &mut skipped,
                owed: &mut Vec::new(),
                exiting: false,
            };
            let tried = loop_knobs.try_config(&[50.0], &[20.0], ChangeReason::Explore);
            assert_eq!(tried, Tried::Applied);
            nic.remove_nic("eth0");
            if comes_back {
                nic.add_nic(
                    "eth0",
                    crate::actuate::coalesce::CoalesceSettings {
                        rx_usecs: 8,
                        adaptive_rx: false,
                    },
                );
            }
            let written = nic.history().len();
            let failure = loop_knobs
                .revert_to(&[20.0], &[50.0], GoBack::SloBreach)
                .unwrap_err();
            if !comes_back {
                // Going back for a reload (or a regroup) owes nothing more: another loop starts
                // from the kernel's values (s49 review M1, L4).
                for why in [GoBack::Reload, GoBack::Regroup] {
                    let again = loop_knobs.revert_to(&[20.0], &[50.0], why).unwrap_err();
                    assert_eq!(again.owed, None, "{why:?}");
                    assert_eq!(loop_knobs.owed.len(), 1, "{why:?}: only the breach's");
                }
            }
            // Owed: tried again at later windows (where the journal settled the device as gone,
            // the next try finds the change no longer holds and drops it).
            assert_eq!(failure.owed, Some(vec![50.0]));
            assert_eq!(loop_knobs.owed.len(), 1);
            let error = failure.error;
            if comes_back {
                assert!(
                    error.contains("is gone from under its name")
                        && error.contains("nothing put back"),
                    "{error}"
                );
            } else {
                // Absent only (deleted, or moved to another namespace): not known.
                assert!(
                    error.contains("no device has the name eth0 or the index")
                        && error.contains("not put back"),
                    "{error}"
                );
            }
            assert!(skipped.is_empty(), "not someone else's value: {skipped:?}");
            assert_eq!(nic.history().len(), written, "nothing written");
            let gone = p
                .journal
                .records()
                .iter()
                .filter(|r| matches!(r, crate::journal::Record::Gone { .. }))
                .count();
            assert_eq!(gone, usize::from(comes_back));
        }
    }

    #[test]
    fn a_revert_put_back_is_not_undone() {
        const A: &str = "net.core.somaxconn@netns:4026539999";
        let policy = "[params.\"net.core.somaxconn\"]\nmode = \"auto\"\nmin = 128\nmax = 65535\n";
        let dir = tempfile::tempdir().unwrap();
        let k = kernel(&[(A, Value::Int(4096))]);
        let (mut p, _) = path(dir.path(), policy, &k);
        let proposal = Proposal {
            address: A.parse().unwrap(),
            value: Value::Int(8192),
            source: Source::Optimizer,
            reason: "test".into(),
        };
        let id = p.propose(&proposal).unwrap().journal_id.unwrap();
        k.0.lock().unwrap().revert_clamp_once = Some((A.into(), Value::Int(5000)));
        let put_back = p.revert_own(id, Source::Optimizer, "test").unwrap();
        assert!(!undone(&p, &put_back), "{put_back:?}");
        let took = p.revert_own(id, Source::Optimizer, "test").unwrap();
        assert!(undone(&p, &took), "{took:?}");
    }

    /// An entry without bounds is said once, naming it, however many parameters its glob
    /// matches (the same sentence came once per parameter), as an entry in mode recommend is.
    #[test]
    fn an_entry_without_bounds_is_said_once() {
        use super::{AgentOptimizer, Off};
        use crate::guard::{Guard, GuardConfig};
        let sys = tempfile::tempdir().unwrap();
        for policy in ["policy0", "policy1"] {
            let dir = sys.path().join("devices/system/cpu/cpufreq").join(policy);
            std::fs::create_dir_all(dir).unwrap();
        }
        let policy = "[params.\"cpufreq:*:scaling_max_freq\"]\nmode = \"auto\"\n\
                      [params.\"cpufreq:policy0:scaling_min_freq\"]\nmode = \"auto\"\n\
                      min = 1200000\n";
        let dir = tempfile::tempdir().unwrap();
        let (mut p, _) = path(dir.path(), policy, &kernel(&[]));
        let settings: OptimizerSettings =
            toml::from_str("slo_port = 8080\nslo_max_us = 500.0").unwrap();
        let started = AgentOptimizer::start(
            &mut p,
            &mut Guard::new(GuardConfig::default()),
            &settings,
            sys.path(),
            &mut Vec::new(),
        );
        let Err(Off { reason, .. }) = started else {
            panic!("not off: {:?}", started.map(|s| s.map(|(_, ev)| ev)));
        };
        assert_eq!(
            reason,
            "no knob the policy gives the optimizer can be used here: \
             cpufreq:*:scaling_max_freq: the policy entry (line 1) needs an integer min and max \
             (min < max) for the 2 parameters it matches here: the optimizer searches only within \
             bounds the operator set; \
             cpufreq:policy0:scaling_min_freq: the policy entry (line 3) needs an integer min and \
             max (min < max): the optimizer searches only within bounds the operator set"
        );
    }

    /// A cpufreq limit that `on_exit` puts back (the max) next to one that stays (the min): a
    /// settle must not leave the min above the max's original, or `on_exit`'s write of it is
    /// refused and the trial's max stays.
    #[test]
    fn a_kept_min_may_not_settle_above_the_original_of_a_max_that_reverts() {
        use super::{ChangeReason, Knob, Knobs, PathKnobs, Tried};
        use crate::guard::{Guard, GuardConfig};
        const MAX: &str = "cpufreq:policy0:scaling_max_freq";
        const MIN: &str = "cpufreq:policy0:scaling_min_freq";
        let policy = "[guard]\nmax_changes_per_hour = 1000\n\
                      [params.\"cpufreq:*:scaling_max_freq\"]\nmode = \"auto\"\nmin = 1200000\n\
                      max = 3000000\non_exit = \"revert\"\n\
                      [params.\"cpufreq:*:scaling_min_freq\"]\nmode = \"auto\"\nmin = 1200000\n\
                      max = 3000000\n";
        let dir = tempfile::tempdir().unwrap();
        let k = kernel(&[(MAX, Value::Int(2_400_000)), (MIN, Value::Int(1_200_000))]);
        let (mut p, _) = path(dir.path(), policy, &k);
        let mut guard = Guard::new(GuardConfig::default());
        let knobs = [
            Knob::new(vec![MAX.parse().unwrap()], MAX),
            Knob::new(vec![MIN.parse().unwrap()], MIN),
        ];
        let mut loop_knobs = PathKnobs {
            path: &mut p,
            guard: &mut guard,
            baseline: None,
            knobs: &knobs,
            made: &mut Vec::new(),
            skipped: &mut Vec::new(),
            owed: &mut Vec::new(),
            exiting: false,
        };
        let tried = loop_knobs.try_config(
            &[2_400_000.0, 1_200_000.0],
            &[3_000_000.0, 3_000_000.0],
            ChangeReason::Explore,
        );
        assert_eq!(tried, Tried::Applied);
        // The max goes back to 2.4 GHz at exit: a min kept above that would block it.
        assert!(!loop_knobs.survives_exit(&[3_000_000.0, 3_000_000.0]));
        assert!(loop_knobs.survives_exit(&[3_000_000.0, 2_400_000.0]));
        assert!(loop_knobs.survives_exit(&[2_400_000.0, 1_200_000.0]));
    }
}
