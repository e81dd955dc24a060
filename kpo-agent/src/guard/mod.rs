//! The guard: after each change, watch the next windows; if health regresses, the change is
//! reverted at once and that value is quarantined for that parameter and target. It also holds the
//! rate limit (at most K changes per parameter and target per hour).
//!
//! The guard owns the decision to keep a change, not the advisor that proposed it (the LumOS
//! pattern: apply, observe, commit or revert). It decides only; the change path reverts through
//! the journal.
use std::{
    collections::{BTreeMap, VecDeque},
    time::{Duration, SystemTime},
};

use serde::{Deserialize, Serialize};

use crate::{
    actuate::param::{ParamAddress, Value},
    window::Window,
};

/// A health signal the guard can watch (policy names them in snake_case).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HealthSignal {
    /// The worst p99 request latency over the timed services, µs.
    RequestP99,
    /// Run-queue latency p99, µs.
    RunqP99,
    /// Connections dropped by full accept queues, per second (every listener, every namespace).
    ListenOverflows,
    /// SYN-ACK retransmits of listeners, per second.
    SynackRetransmits,
    /// Packets dropped by the softnet backlog, per second.
    SoftnetDrops,
    /// TCP segments retransmitted, per second.
    TcpRetransmits,
}

impl HealthSignal {
    pub const ALL: [HealthSignal; 6] = [
        HealthSignal::RequestP99,
        HealthSignal::RunqP99,
        HealthSignal::ListenOverflows,
        HealthSignal::SynackRetransmits,
        HealthSignal::SoftnetDrops,
        HealthSignal::TcpRetransmits,
    ];

    /// How much worse than before counts as noise: a change must add more than this (in the
    /// signal's unit) on top of the relative tolerance before it is a regression. Latencies are
    /// histogram buckets a quarter octave wide, so a small absolute step is one bucket; the rates
    /// are counts per second, where one event per second is noise on an idle host.
    pub fn noise_floor(self) -> f64 {
        match self {
            HealthSignal::RequestP99 | HealthSignal::RunqP99 => 50.0,
            _ => 1.0,
        }
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
            .fold(None, |acc: Option<f64>, v| {
                Some(acc.map_or(v, |a| a.max(v)))
            });
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

/// Where the guard gets health from: the windows in production, a scripted source in tests.
pub trait HealthSource {
    fn health(&mut self, window: &Window) -> Health;
}

/// Health read from the windows themselves.
pub struct WindowHealth;

impl HealthSource for WindowHealth {
    fn health(&mut self, window: &Window) -> Health {
        Health::from_window(window)
    }
}

/// The guard's settings (the policy's `[guard]` table).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
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
    /// Changes per parameter and target in any hour.
    pub max_changes_per_hour: u32,
    /// How long a value that regressed stays refused.
    #[serde(with = "humantime_secs")]
    pub quarantine: Duration,
}

impl Default for GuardConfig {
    fn default() -> Self {
        Self {
            windows: 3,
            signals: HealthSignal::ALL.to_vec(),
            tolerance: 0.2,
            confirm_windows: 2,
            max_changes_per_hour: 4,
            quarantine: Duration::from_secs(3600),
        }
    }
}

mod humantime_secs {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&humantime::format_duration(*d))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(&text)
            .map_err(|e| serde::de::Error::custom(format!("{text:?} is not a duration: {e}")))
    }
}

/// Why the guard will not let a change happen now.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum GuardRefusal {
    #[error(
        "{value} is quarantined for {address} until {until:?}: it regressed {signal:?} before"
    )]
    Quarantined {
        address: String,
        value: Value,
        signal: HealthSignal,
        until: SystemTime,
    },
    #[error("{address} changed {count} times in the last hour; the limit is {limit}")]
    RateLimited {
        address: String,
        count: usize,
        limit: u32,
    },
}

/// What the guard concluded about one watched change.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "verdict", rename_all = "snake_case")]
pub enum Verdict {
    /// Health held for every watched window: the change stays.
    Kept { change_id: u64, address: String },
    /// A signal got worse: revert now; the value is quarantined.
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

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QuarantineEntry {
    pub address: ParamAddress,
    pub value: Value,
    pub signal: HealthSignal,
    pub until: SystemTime,
}

#[derive(Debug, Default)]
pub struct Guard {
    config: GuardConfig,
    watches: Vec<Watch>,
    changes: BTreeMap<ParamAddress, VecDeque<SystemTime>>,
    quarantine: Vec<QuarantineEntry>,
}

const HOUR: Duration = Duration::from_secs(3600);

impl Guard {
    pub fn new(config: GuardConfig) -> Self {
        Self {
            config,
            ..Default::default()
        }
    }

    /// Restores quarantines kept in the state directory (expired ones are dropped).
    pub fn restore(&mut self, entries: Vec<QuarantineEntry>, now: SystemTime) {
        self.quarantine = entries.into_iter().filter(|q| q.until > now).collect();
    }

    /// The quarantines in force, to persist.
    pub fn quarantines(&self) -> &[QuarantineEntry] {
        &self.quarantine
    }

    /// Whether a change of `address` to `value` may happen at `now`.
    pub fn check(
        &mut self,
        address: &ParamAddress,
        value: &Value,
        now: SystemTime,
    ) -> Result<(), GuardRefusal> {
        self.quarantine.retain(|q| q.until > now);
        if let Some(q) = self
            .quarantine
            .iter()
            .find(|q| &q.address == address && &q.value == value)
        {
            return Err(GuardRefusal::Quarantined {
                address: address.to_string(),
                value: value.clone(),
                signal: q.signal,
                until: q.until,
            });
        }
        let recent = self.recent_changes(address, now);
        if recent >= self.config.max_changes_per_hour as usize {
            return Err(GuardRefusal::RateLimited {
                address: address.to_string(),
                count: recent,
                limit: self.config.max_changes_per_hour,
            });
        }
        Ok(())
    }

    fn recent_changes(&mut self, address: &ParamAddress, now: SystemTime) -> usize {
        let Some(times) = self.changes.get_mut(address) else {
            return 0;
        };
        while times
            .front()
            .is_some_and(|t| now.duration_since(*t).unwrap_or_default() >= HOUR)
        {
            times.pop_front();
        }
        times.len()
    }

    /// A change was applied at `now`: count it and watch the next windows against `baseline`
    /// (the health of the window before the change).
    pub fn watch(
        &mut self,
        change_id: u64,
        address: ParamAddress,
        value: Value,
        baseline: Health,
        now: SystemTime,
    ) {
        self.changes
            .entry(address.clone())
            .or_default()
            .push_back(now);
        // A newer change of the same parameter supersedes the older watch.
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
    pub fn observe(&mut self, health: &Health, now: SystemTime) -> Vec<Verdict> {
        let mut verdicts = Vec::new();
        let config = &self.config;
        let mut quarantined = Vec::new();
        self.watches.retain_mut(|w| {
            let regressed = config.signals.iter().find_map(|&signal| {
                let before = *w.baseline.0.get(&signal)?;
                let after = *health.0.get(&signal)?;
                let limit = before * (1.0 + config.tolerance) + signal.noise_floor();
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
                quarantined.push(QuarantineEntry {
                    address: w.address.clone(),
                    value: w.value.clone(),
                    signal,
                    until: now + config.quarantine,
                });
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
        self.quarantine.extend(quarantined);
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
    fn a_regression_reverts_and_quarantines_the_value() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let mut guard = Guard::new(GuardConfig::default());
        let before = health(&[
            (HealthSignal::RequestP99, 800.0),
            (HealthSignal::TcpRetransmits, 2.0),
        ]);
        guard.watch(7, somaxconn(), Value::Int(4096), before, t0);
        // Within tolerance (800 * 1.2 + 50 = 1010 µs): kept watching.
        let ok = health(&[
            (HealthSignal::RequestP99, 1000.0),
            (HealthSignal::TcpRetransmits, 2.0),
        ]);
        assert!(guard.observe(&ok, t0).is_empty());
        let bad = health(&[
            (HealthSignal::RequestP99, 1500.0),
            (HealthSignal::TcpRetransmits, 2.0),
        ]);
        // One bad window is not yet a regression (noise on a busy host); two in a row are.
        assert!(guard.observe(&bad, t0).is_empty());
        let verdicts = guard.observe(&bad, t0);
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
        let refused = guard
            .check(&somaxconn(), &Value::Int(4096), t0)
            .unwrap_err();
        assert!(
            matches!(refused, GuardRefusal::Quarantined { .. }),
            "{refused}"
        );
        // Another value is allowed; the quarantine ends after its time.
        guard.check(&somaxconn(), &Value::Int(2048), t0).unwrap();
        guard
            .check(
                &somaxconn(),
                &Value::Int(4096),
                t0 + Duration::from_secs(3601),
            )
            .unwrap();
    }

    #[test]
    fn health_that_holds_keeps_the_change_after_n_windows() {
        let t0 = SystemTime::UNIX_EPOCH;
        let mut guard = Guard::new(GuardConfig {
            windows: 2,
            ..GuardConfig::default()
        });
        let h = health(&[(HealthSignal::ListenOverflows, 0.0)]);
        guard.watch(1, somaxconn(), Value::Int(1024), h.clone(), t0);
        assert!(guard.observe(&h, t0).is_empty());
        // A signal absent from a window is not judged.
        assert!(guard.observe(&Health::default(), t0).len() == 1);
        assert_eq!(guard.watching(), 0);
    }

    #[test]
    fn unwatched_signals_and_noise_are_not_regressions() {
        let t0 = SystemTime::UNIX_EPOCH;
        let mut guard = Guard::new(GuardConfig {
            signals: vec![HealthSignal::ListenOverflows],
            windows: 10,
            ..GuardConfig::default()
        });
        let before = health(&[
            (HealthSignal::ListenOverflows, 0.0),
            (HealthSignal::RunqP99, 10.0),
        ]);
        guard.watch(1, somaxconn(), Value::Int(1024), before, t0);
        // Run-queue p99 is not watched; 0.5 overflows/s is below the noise floor of 1/s.
        let after = health(&[
            (HealthSignal::ListenOverflows, 0.5),
            (HealthSignal::RunqP99, 9999.0),
        ]);
        assert!(guard.observe(&after, t0).is_empty());
        let after = health(&[(HealthSignal::ListenOverflows, 3.0)]);
        assert!(guard.observe(&after, t0).is_empty());
        // A window back to normal clears the strike.
        let calm = health(&[(HealthSignal::ListenOverflows, 0.0)]);
        assert!(guard.observe(&calm, t0).is_empty());
        assert!(guard.observe(&after, t0).is_empty());
        assert!(matches!(
            guard.observe(&after, t0).as_slice(),
            [Verdict::Revert {
                signal: HealthSignal::ListenOverflows,
                ..
            }]
        ));
    }

    #[test]
    fn the_rate_limit_holds_per_parameter_per_hour() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(10_000);
        let mut guard = Guard::new(GuardConfig {
            max_changes_per_hour: 2,
            ..GuardConfig::default()
        });
        let other: ParamAddress = "net.ipv4.tcp_rmem".parse().unwrap();
        for i in 0..2 {
            let at = t0 + Duration::from_secs(60 * i);
            guard
                .check(&somaxconn(), &Value::Int(100 + i as i64), at)
                .unwrap();
            guard.watch(
                i,
                somaxconn(),
                Value::Int(100 + i as i64),
                Health::default(),
                at,
            );
        }
        let at = t0 + Duration::from_secs(120);
        assert!(matches!(
            guard.check(&somaxconn(), &Value::Int(200), at),
            Err(GuardRefusal::RateLimited {
                count: 2,
                limit: 2,
                ..
            })
        ));
        // Another parameter has its own budget; an hour after the first change, one frees up.
        guard
            .check(&other, &Value::Ints(vec![1, 2, 3]), at)
            .unwrap();
        guard
            .check(
                &somaxconn(),
                &Value::Int(200),
                t0 + Duration::from_secs(3600),
            )
            .unwrap();
    }

    #[test]
    fn quarantines_survive_a_restart_until_they_expire() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(5000);
        let entry = QuarantineEntry {
            address: somaxconn(),
            value: Value::Int(9),
            signal: HealthSignal::RunqP99,
            until: t0 + Duration::from_secs(10),
        };
        let json = serde_json::to_string(&entry).unwrap();
        let back: QuarantineEntry = serde_json::from_str(&json).unwrap();
        let mut guard = Guard::new(GuardConfig::default());
        guard.restore(vec![back], t0);
        assert!(guard.check(&somaxconn(), &Value::Int(9), t0).is_err());
        let mut later = Guard::new(GuardConfig::default());
        later.restore(vec![entry], t0 + Duration::from_secs(11));
        assert!(later.quarantines().is_empty());
    }
}
