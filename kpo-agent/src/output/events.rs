//! The NDJSON event stream: one JSON object per line, each with `schema`, `ts`, `host`, `kind`.
//! Documented in docs/events.md; docs/events.schema.json is checked against real output in tests.
//! [`crate::output::sink`] writes them, off the run loop.
use serde::Serialize;

use crate::{
    collect::notable::ListenerFull,
    energy::handover::SetAside,
    sensors::SensorStatus,
    window::{energy::EnergySourceChoice, family_name, Window},
};

pub const SCHEMA: &str = "kpo.event/v1";

#[derive(Debug, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Event {
    /// The agent started: its settings.
    Start {
        version: &'static str,
        /// The commit the agent was built from (`unknown` outside a git checkout).
        commit: &'static str,
        pid: u32,
        tick_s: f64,
        window_s: f64,
        duty_fraction: f64,
        /// The energy source chosen for the windows' `energy`, and why better ones were not.
        energy: EnergySourceChoice,
        /// The policy file the agent decides under, or the built-in default: a stream that says
        /// what the agent did should say under which rules.
        policy: String,
        /// `--recommend-only`: every parameter in mode auto is treated as recommend.
        recommend_only: bool,
        /// A pause the agent starts under (`kpo pause` survives restarts): who paused and when,
        /// `BY at TIME`; `None` when changes are not paused (s52 storyAC AC-6: said only in
        /// the log).
        paused: Option<String>,
    },
    /// The energy source stopped giving figures while the agent ran and was set aside: `energy`
    /// is the source chosen in its place, as in `start` (docs/events.md).
    EnergySource {
        from: crate::energy::EnergySource,
        reason: String,
        energy: EnergySourceChoice,
    },
    /// Which sensors are on, which are off and why. Sent at start and whenever that changes.
    Sensors { sensors: Vec<SensorStatus> },
    /// A finished window of telemetry.
    Window {
        /// True for the last, shorter window flushed at shutdown.
        partial: bool,
        #[serde(flatten)]
        window: Box<Window>,
    },
    /// A listener's accept queue reached its limit (sent at once, at most once per tick).
    ListenerFull {
        netns: u64,
        port: u16,
        family: &'static str,
        backlog: u32,
        backlog_limit: u32,
        pid: Option<u32>,
        comm: Option<String>,
    },
    /// One phase of a change (proposed, applied, verified, refused, failed, reverted).
    Change(crate::output::change_events::ChangeEvent),
    /// All changes stopped (`kpo pause`).
    Paused(crate::output::change_events::PausedEvent),
    /// The pause lifted, or a yielded parameter handed back (`kpo resume`).
    Resumed(crate::output::change_events::ResumedEvent),
    /// Advice from an advisor (rules, LLM, optimizer): a parameter and value, or a change the
    /// application must make; what the policy made of a value is in the `change` events.
    Recommendation(Box<crate::advise::recommendation::Recommendation>),
    /// A recommendation set aside for a more conservative one for the same parameter and target.
    RecommendationSetAside(crate::approvals::SetAsideEvent),
    /// A change waits for an operator (`kpo approve ID`), or its advice was made again (refresh).
    ApprovalRequired(crate::approvals::ApprovalEvent),
    /// A pending approval ended: approved, rejected, expired, cleared or superseded.
    ApprovalResolved(crate::approvals::ApprovalEvent),
    /// Advice held for approval that did not become one: rejected lately, or another advisor's
    /// approval is pending and kept.
    ApprovalNotAsked(crate::approvals::NotAskedEvent),
    /// One consultation of the LLM advisor: latency, token usage, outcome, and the items its
    /// validation dropped with why (docs/llm.md); the accepted ones follow as `recommendation`s.
    Llm(Box<crate::advise::llm::Consultation>),
    /// The guard's verdict on a change it watched: kept, or reverted with what regressed and
    /// whether the revert took.
    Guard(crate::guard::GuardEvent),
    /// Someone else changed a parameter KPO manages: KPO stopped managing it there and keeps
    /// their value (`kpo resume PARAM` hands it back).
    AdminOverride {
        target: String,
        /// The writer, when the sysctl watch saw it; `null` for cpufreq and coalescing
        /// parameters, whose changes are found by comparing with the value KPO applied.
        pid: Option<u32>,
        comm: Option<String>,
        /// `sysctl_watch` (the eBPF program saw the write) or `value_check` (the value differs
        /// from the one KPO applied).
        seen_by: &'static str,
        /// The value the person wrote, as the kernel has it now.
        value: crate::actuate::param::Value,
        /// What KPO had applied.
        kpo_value: Option<crate::actuate::param::Value>,
    },
    /// The optimizer's live loop: a trial, its measurement, a refusal, an SLO breach and its
    /// revert (docs/optimizer.md).
    Optimizer(OptimizerEvent),
    /// SIGHUP loaded the policy file again (`reloaded`), or could not and kept the policy in
    /// force (`refused`, with why).
    Policy {
        outcome: &'static str,
        /// The file (or the built-in default) now in force, or the one that did not load.
        source: String,
        error: Option<String>,
        /// The policy's cpufreq or ethtool entries (or `[defaults]`) changed: the optimizer's
        /// live loop settled and started again over the knobs the new policy gives it.
        optimizer_knobs_changed: bool,
    },
    /// The journal could not be written (`writable: false`, with the error), or can be again
    /// (`writable: true`): once each way per outage, whatever the changes it stopped meanwhile.
    Journal {
        writable: bool,
        /// The state directory.
        dir: String,
        error: Option<String>,
    },
    /// The agent stopped. The event writer adds `dropped_events_total`, the events lost over
    /// the whole run (see [`crate::output::sink`]).
    Stop { reason: String, windows: u64 },
}

impl Event {
    /// `kind: "energy_source"`: `set_aside` was set aside, and `energy` now uses what replaced
    /// it.
    pub fn energy_source(
        energy: &crate::energy::handover::MeterWatch,
        set_aside: SetAside,
    ) -> Self {
        Event::EnergySource {
            energy: EnergySourceChoice::after(energy.meter(), &set_aside),
            from: set_aside.from,
            reason: set_aside.reason,
        }
    }
}

/// `kind: "optimizer"`: what the live loop did, with the knobs its configurations list.
#[derive(Debug, Clone, Serialize)]
pub struct OptimizerEvent {
    /// Parameter addresses, in the order of every configuration in the event.
    pub knobs: Vec<String>,
    #[serde(flatten)]
    pub event: crate::advise::optimizer::live::LiveEvent,
}

impl From<ListenerFull> for Event {
    fn from(f: ListenerFull) -> Event {
        Event::ListenerFull {
            netns: u64::from(f.key.netns),
            port: f.key.port,
            family: family_name(f.key.family),
            backlog: f.backlog,
            backlog_limit: f.backlog_limit,
            pid: f.pid,
            comm: f.comm,
        }
    }
}

#[derive(Serialize)]
struct Envelope<'a> {
    schema: &'static str,
    ts: String,
    host: &'a str,
    #[serde(flatten)]
    event: &'a Event,
}

/// One event as one JSON object (no newline): the envelope (`schema`, `ts`, `host`, `kind`) and
/// the event's fields. `ts` is when the event was produced.
pub fn encode(event: &Event, host: &str, produced: time::OffsetDateTime) -> Vec<u8> {
    let envelope = Envelope {
        schema: SCHEMA,
        ts: crate::window::rfc3339(produced),
        host,
        event,
    };
    // Serializing plain structs, maps with string keys and finite numbers cannot fail.
    serde_json::to_vec(&envelope).expect("events serialize")
}

/// Appends integer fields to an encoded event and ends the line: `{...}` becomes
/// `{...,"name":n}\n`. The names must not be among the event's own fields.
pub fn finish_line(mut object: Vec<u8>, extra: &[(&str, u64)]) -> Vec<u8> {
    debug_assert_eq!(object.last(), Some(&b'}'));
    if !extra.is_empty() {
        object.pop();
        for (name, value) in extra {
            object.extend_from_slice(format!(",\"{name}\":{value}").as_bytes());
        }
        object.push(b'}');
    }
    object.push(b'\n');
    object
}

pub fn hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_else(|| "unknown".into())
}

impl From<crate::output::change_events::ChangePathEvent> for Event {
    fn from(e: crate::output::change_events::ChangePathEvent) -> Event {
        use crate::output::change_events::ChangePathEvent as C;
        match e {
            C::Change(c) => Event::Change(c),
            C::Paused(p) => Event::Paused(p),
            C::Resumed(r) => Event::Resumed(r),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extra_fields_go_inside_the_object() {
        let stop = Event::Stop {
            reason: "SIGTERM".into(),
            windows: 3,
        };
        let object = encode(&stop, "h", time::OffsetDateTime::UNIX_EPOCH);
        let line = finish_line(object.clone(), &[]);
        assert_eq!(line.last(), Some(&b'\n'));
        let line = finish_line(
            object,
            &[("dropped_events", 2), ("dropped_events_total", 5)],
        );
        let text = std::str::from_utf8(&line).unwrap();
        assert!(
            text.ends_with("}\n") && text.matches('\n').count() == 1,
            "{text}"
        );
        let v: serde_json::Value = serde_json::from_str(text).unwrap();
        assert_eq!(v["kind"], "stop");
        assert_eq!(v["host"], "h");
        assert_eq!(v["ts"], "1970-01-01T00:00:00.000000000Z");
        assert_eq!(v["windows"], 3);
        assert_eq!(v["dropped_events"], 2);
        assert_eq!(v["dropped_events_total"], 5);
    }
}
