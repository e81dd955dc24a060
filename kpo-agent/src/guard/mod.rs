//! The guard: after each change, watch the next windows; if health regresses, the change is to be
//! reverted at once and that value quarantined for that parameter and target.
//!
//! The guard owns the decision to keep a change, not the advisor that proposed it (the LumOS
//! pattern: apply, observe, commit or revert). It decides only: the run loop reverts through the
//! journal and records the quarantine there, where the policy's rate limit and quarantine
//! checks read it (`policy::Context`).
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use crate::policy::HealthSignal;
use crate::{
    actuate::param::{ParamAddress, Value},
    policy::GuardSettings,
    window::Window,
};

/// How much worse than before counts as noise: a change must add more than this (in the signal's
/// unit) on top of the relative tolerance before it is a regression. Latencies are histogram
/// buckets a quarter octave wide, so a small absolute step is one bucket; the rates are counts per
/// second, where one event per second is noise on an idle host.
pub fn noise_floor(signal: HealthSignal) -> f64 {
    match signal {
        HealthSignal::RequestP99 | HealthSignal::RunqP99 => 50.0,
        _ => 1.0,
    }
}

/// One window's value of each signal; a signal the window could not measure is absent.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Health(pub BTreeMap<HealthSignal, f64>);

impl Health {
    pub fn from_window(w: &Window) -> Health {
        let secs = w.duration_s.max(1e-9);
        let mut h = BTreeMap::new();
        let worst_request = w
            .request_latency
            .iter()
            .map(|r| r.latency.p99_us)
            .reduce(f64::max);
        if let Some(v) = worst_request {
            h.insert(HealthSignal::RequestP99, v);
        }
        if let Some(r) = &w.runq_latency {
            h.insert(HealthSignal::RunqP99, r.p99_us);
        }
        let overflows: u64 = w.listeners.iter().map(|l| l.overflows).sum();
        h.insert(HealthSignal::ListenOverflows, overflows as f64 / secs);
        let synacks: Option<u64> = w.listeners.iter().map(|l| l.synack_retrans).sum();
        if let Some(s) = synacks {
            h.insert(HealthSignal::SynackRetransmits, s as f64 / secs);
        }
        if let Some(v) = w.system.softnet_dropped_per_s {
            h.insert(HealthSignal::SoftnetDrops, v);
        }
        if let Some(v) = w.system.tcp_retrans_segs_per_s {
            h.insert(HealthSignal::TcpRetransmits, v);
        }
        Health(h)
    }
}

/// How the guard judges.
#[derive(Debug, Clone, PartialEq)]
pub struct GuardConfig {
    /// Windows watched after a change.
    pub windows: u32,
    /// Signals watched.
    pub signals: Vec<HealthSignal>,
    /// Relative worsening tolerated (0.2: 20% worse than before the change).
    pub tolerance: f64,
    /// Consecutive regressing windows that make a regression: one window of a busy host is
    /// noise as often as it is the change (2: a regression must hold for two windows).
    pub confirm_windows: u32,
}

impl Default for GuardConfig {
    fn default() -> Self {
        Self::from_policy(&GuardSettings::default())
    }
}

impl GuardConfig {
    /// The policy's `[guard]` windows and signals, with the guard's own tolerance.
    pub fn from_policy(settings: &GuardSettings) -> Self {
        Self {
            windows: settings.windows,
            signals: settings.signals.clone(),
            tolerance: 0.2,
            confirm_windows: 2,
        }
    }
}

/// What the guard concluded about one watched change.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "verdict", rename_all = "snake_case")]
pub enum Verdict {
    /// Health held for every watched window: the change stays.
    Kept { change_id: u64, address: String },
    /// A signal got worse: revert now, and quarantine the value.
    Revert {
        change_id: u64,
        address: String,
        value: Value,
        signal: HealthSignal,
        before: f64,
        after: f64,
    },
}

#[derive(Debug, Clone)]
struct Watch {
    change_id: u64,
    address: ParamAddress,
    value: Value,
    baseline: Health,
    windows_left: u32,
    /// Consecutive windows that regressed so far.
    strikes: u32,
}

#[derive(Debug, Default)]
pub struct Guard {
    config: GuardConfig,
    watches: Vec<Watch>,
}

impl Guard {
    pub fn new(config: GuardConfig) -> Self {
        Self {
            config,
            watches: Vec::new(),
        }
    }

    /// A change was applied: watch the next windows against `baseline` (the health of the window
    /// before the change). A newer change of the same parameter supersedes the older watch.
    pub fn watch(&mut self, change_id: u64, address: ParamAddress, value: Value, baseline: Health) {
        self.watches.retain(|w| w.address != address);
        self.watches.push(Watch {
            change_id,
            address,
            value,
            baseline,
            windows_left: self.config.windows,
            strikes: 0,
        });
    }

    /// Stops watching a parameter (reverted, or yielded to a person).
    pub fn forget(&mut self, address: &ParamAddress) {
        self.watches.retain(|w| &w.address != address);
    }

    /// One window's health: a verdict for each watch that regressed or whose watch is over.
    pub fn observe(&mut self, health: &Health) -> Vec<Verdict> {
        let mut verdicts = Vec::new();
        let config = &self.config;
        self.watches.retain_mut(|w| {
            let regressed = config.signals.iter().find_map(|&signal| {
                let before = *w.baseline.0.get(&signal)?;
                let after = *health.0.get(&signal)?;
                let limit = before * (1.0 + config.tolerance) + noise_floor(signal);
                (after > limit).then_some((signal, before, after))
            });
            w.strikes = if regressed.is_some() {
                w.strikes + 1
            } else {
                0
            };
            if let Some((signal, before, after)) =
                regressed.filter(|_| w.strikes >= config.confirm_windows.max(1))
            {
                verdicts.push(Verdict::Revert {
                    change_id: w.change_id,
                    address: w.address.to_string(),
                    value: w.value.clone(),
                    signal,
                    before,
                    after,
                });
                return false;
            }
            w.windows_left = w.windows_left.saturating_sub(1);
            // A regression still unconfirmed keeps the watch open until it is decided.
            if w.windows_left == 0 && w.strikes == 0 {
                verdicts.push(Verdict::Kept {
                    change_id: w.change_id,
                    address: w.address.to_string(),
                });
                return false;
            }
            true
        });
        verdicts
    }

    pub fn watching(&self) -> usize {
        self.watches.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn health(pairs: &[(HealthSignal, f64)]) -> Health {
        Health(pairs.iter().copied().collect())
    }

    fn somaxconn() -> ParamAddress {
        "net.core.somaxconn@netns:4026532281".parse().unwrap()
    }

    #[test]
    fn a_confirmed_regression_is_a_revert_verdict() {
        let mut guard = Guard::new(GuardConfig::default());
        let before = health(&[
            (HealthSignal::RequestP99, 800.0),
            (HealthSignal::TcpRetransmits, 2.0),
        ]);
        guard.watch(7, somaxconn(), Value::Int(4096), before);
        // Within tolerance (800 * 1.2 + 50 = 1010 µs): kept watching.
        let ok = health(&[
            (HealthSignal::RequestP99, 1000.0),
            (HealthSignal::TcpRetransmits, 2.0),
        ]);
        assert!(guard.observe(&ok).is_empty());
        let bad = health(&[
            (HealthSignal::RequestP99, 1500.0),
            (HealthSignal::TcpRetransmits, 2.0),
        ]);
        // One bad window is not yet a regression (noise on a busy host); two in a row are.
        assert!(guard.observe(&bad).is_empty());
        let verdicts = guard.observe(&bad);
        assert_eq!(
            verdicts,
            vec![Verdict::Revert {
                change_id: 7,
                address: somaxconn().to_string(),
                value: Value::Int(4096),
                signal: HealthSignal::RequestP99,
                before: 800.0,
                after: 1500.0,
            }]
        );
        assert_eq!(guard.watching(), 0);
    }

    #[test]
    fn health_that_holds_keeps_the_change_after_n_windows() {
        let mut guard = Guard::new(GuardConfig {
            windows: 2,
            ..GuardConfig::default()
        });
        let h = health(&[(HealthSignal::ListenOverflows, 0.0)]);
        guard.watch(1, somaxconn(), Value::Int(1024), h.clone());
        assert!(guard.observe(&h).is_empty());
        // A signal absent from a window is not judged.
        assert_eq!(
            guard.observe(&Health::default()),
            vec![Verdict::Kept {
                change_id: 1,
                address: somaxconn().to_string()
            }]
        );
        assert_eq!(guard.watching(), 0);
    }

    #[test]
    fn unwatched_signals_and_noise_are_not_regressions() {
        let mut guard = Guard::new(GuardConfig {
            signals: vec![HealthSignal::ListenOverflows],
            windows: 10,
            ..GuardConfig::default()
        });
        let before = health(&[
            (HealthSignal::ListenOverflows, 0.0),
            (HealthSignal::RunqP99, 10.0),
        ]);
        guard.watch(1, somaxconn(), Value::Int(1024), before);
        // Run-queue p99 is not watched; 0.5 overflows/s is below the noise floor of 1/s.
        let after = health(&[
            (HealthSignal::ListenOverflows, 0.5),
            (HealthSignal::RunqP99, 9999.0),
        ]);
        assert!(guard.observe(&after).is_empty());
        let after = health(&[(HealthSignal::ListenOverflows, 3.0)]);
        assert!(guard.observe(&after).is_empty());
        // A window back to normal clears the strike.
        let calm = health(&[(HealthSignal::ListenOverflows, 0.0)]);
        assert!(guard.observe(&calm).is_empty());
        assert!(guard.observe(&after).is_empty());
        assert!(matches!(
            guard.observe(&after).as_slice(),
            [Verdict::Revert {
                signal: HealthSignal::ListenOverflows,
                ..
            }]
        ));
    }

    #[test]
    fn a_newer_change_supersedes_the_watch_and_forget_drops_it() {
        let mut guard = Guard::new(GuardConfig::default());
        guard.watch(1, somaxconn(), Value::Int(1024), Health::default());
        guard.watch(2, somaxconn(), Value::Int(2048), Health::default());
        assert_eq!(guard.watching(), 1);
        guard.forget(&somaxconn());
        assert_eq!(guard.watching(), 0);
    }

    #[test]
    fn the_policy_sets_windows_and_signals() {
        let settings = GuardSettings {
            windows: 5,
            signals: vec![HealthSignal::SoftnetDrops],
            ..GuardSettings::default()
        };
        let c = GuardConfig::from_policy(&settings);
        assert_eq!(
            (c.windows, c.signals),
            (5, vec![HealthSignal::SoftnetDrops])
        );
    }
}
