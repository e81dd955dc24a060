//! One recommendation type for every advisor (rules, the LLM, the optimizer). An advisor says what
//! it would change and why; the policy decides whether it is applied now, waits for approval, or is
//! only recorded. Serialized as it appears in events.
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::actuate::param::{ParamAddress, Value};

/// Which advisor produced a recommendation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    Rules,
    Llm,
    Optimizer,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Rules => "rules",
            Source::Llm => "llm",
            Source::Optimizer => "optimizer",
        }
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The window a recommendation was made from: its index since the agent started and its end time
/// (RFC 3339, as in the `window` event's `end`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WindowRef {
    pub index: u64,
    pub end: String,
}

/// The application a recommendation is addressed to, when the fix belongs in the application and
/// not in a kernel parameter (for example a `listen()` backlog smaller than `somaxconn`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApplicationRef {
    pub netns: u64,
    pub port: u16,
    pub pid: Option<u32>,
    pub comm: Option<String>,
    /// The listener's accept-queue limit (`sk_max_ack_backlog`) when the advice was made: the
    /// advice for one limit and for another after the service listened again are two pieces of
    /// advice (the approval desk posts each: docs/approvals.md, *Webhook*). Absent in records
    /// written before it was kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backlog_limit: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Recommendation {
    /// Stable for the same source, window and parameter: `SOURCE-WINDOW-HASH`.
    pub id: String,
    /// The parameter and where it lives (host, network namespace, NIC, cpufreq policy), in the
    /// address format of `actuate::param` (`net.core.somaxconn@netns:4026532281`).
    pub parameter: ParamAddress,
    /// The value when the advice was made, if known.
    pub current_value: Option<Value>,
    /// The value advised; `None` when the advice is for the application (see `application`).
    pub recommended_value: Option<Value>,
    /// Whether the advisor and the policy both allow applying it without a person. The policy
    /// still decides at apply time; this can only make a change more cautious.
    pub can_auto_apply: bool,
    /// Human-readable, citing the numbers that led to it.
    pub reason: String,
    /// 0 to 1.
    pub confidence: f64,
    pub source: Source,
    pub window: WindowRef,
    /// Set when the advice is for an application rather than a kernel parameter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub application: Option<ApplicationRef>,
    /// The cookie of the network namespace `current_value` was read in, when the advisor read it
    /// with one (the LLM advisor, whose advice is applied up to `llm.timeout` after the read):
    /// the change path refuses the advice in a namespace that has the address's inode but
    /// another cookie (`ChangePath::propose_advice`). `None`: nothing to check. Not in events.
    #[serde(skip)]
    pub netns_cookie: Option<u64>,
}

impl Recommendation {
    /// The id of a recommendation from `source` about `parameter` in window `window_index`.
    /// Deterministic within a run (FNV-1a of the address and value, and the run's start), so the
    /// same advice gets the same id.
    pub fn make_id(
        source: Source,
        window_index: u64,
        parameter: &ParamAddress,
        value: Option<&Value>,
    ) -> String {
        let mut text = parameter.to_string();
        text.push('=');
        if let Some(v) = value {
            text.push_str(&v.to_string());
        }
        id_in_run(RUN.get().copied(), source, window_index, &text)
    }

    /// The id of advice for an application: two listeners in one namespace get different ids
    /// (their parameter and, having no value, their value are the same).
    pub fn make_app_id(
        source: Source,
        window_index: u64,
        parameter: &ParamAddress,
        app: &ApplicationRef,
        family: &str,
    ) -> String {
        // The family too: a service's IPv4 and IPv6 listeners on one port are advised apart.
        let text = format!("{parameter}=app:{}:{}:{family}", app.netns, app.port);
        id_in_run(RUN.get().copied(), source, window_index, &text)
    }

    /// Whether this asks for a kernel change (as opposed to advice for the application).
    pub fn is_change(&self) -> bool {
        self.recommended_value.is_some()
    }
}

/// The agent's start (ms since the epoch), set once by `kpo run` ([`set_run`]). Windows count from
/// 1 again at each start, so without it a restarted agent would hand out the ids of the run before
/// for other advice, which a log pipeline that de-duplicates on `id` would drop as repeats.
static RUN: std::sync::OnceLock<u64> = std::sync::OnceLock::new();

/// Makes this process's recommendation ids its own: called once, at the agent's start.
pub fn set_run(start_ms: u64) {
    let _ = RUN.set(start_ms);
}

/// `SOURCE-WINDOW-HASH`: the hash of the advice's text, and of the run's start when there is one.
fn id_in_run(run: Option<u64>, source: Source, window_index: u64, text: &str) -> String {
    let hashed = match run {
        Some(start_ms) => format!("{start_ms}:{text}"),
        None => text.to_string(),
    };
    format!(
        "{source}-{window_index}-{:08x}",
        fnv1a(hashed.as_bytes()) as u32
    )
}

fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_listeners_application_advice_have_different_ids() {
        let parameter: ParamAddress = "net.core.somaxconn@netns:4026532281".parse().unwrap();
        let app = |port| ApplicationRef {
            netns: 4026532281,
            port,
            pid: None,
            comm: None,
            backlog_limit: None,
        };
        let a = Recommendation::make_app_id(Source::Rules, 3, &parameter, &app(80), "ipv4");
        let b = Recommendation::make_app_id(Source::Rules, 3, &parameter, &app(443), "ipv4");
        assert_ne!(a, b);
        assert_eq!(
            a,
            Recommendation::make_app_id(Source::Rules, 3, &parameter, &app(80), "ipv4")
        );
        assert_ne!(
            a,
            Recommendation::make_app_id(Source::Rules, 3, &parameter, &app(80), "ipv6"),
            "IPv4 and IPv6 listeners of one port"
        );
        assert!(a.starts_with("rules-3-"), "{a}");
    }

    /// Seen by hand (session 35): a restarted agent handed out `rules-3-…` again, for other
    /// advice, since windows count from 1 at each start.
    #[test]
    fn ids_are_the_same_within_a_run_and_differ_between_runs() {
        let text = "net.core.somaxconn@netns:4026532281=8192";
        let first = id_in_run(Some(1_764_900_000_000), Source::Rules, 3, text);
        assert_eq!(
            first,
            id_in_run(Some(1_764_900_000_000), Source::Rules, 3, text)
        );
        assert_ne!(
            first,
            id_in_run(Some(1_764_900_060_000), Source::Rules, 3, text)
        );
        assert!(first.starts_with("rules-3-"), "{first}");
        assert_eq!(first.len(), "rules-3-".len() + 8);
    }

    #[test]
    fn serializes_for_events() {
        let parameter: ParamAddress = "net.core.somaxconn@netns:4026532281".parse().unwrap();
        let r = Recommendation {
            id: Recommendation::make_id(Source::Llm, 7, &parameter, Some(&Value::Int(8192))),
            parameter,
            current_value: Some(Value::Int(4096)),
            recommended_value: Some(Value::Int(8192)),
            can_auto_apply: false,
            reason: "listener dropped 1200".into(),
            confidence: 0.7,
            source: Source::Llm,
            window: WindowRef {
                index: 7,
                end: "2026-01-01T00:00:00Z".into(),
            },
            application: None,
            netns_cookie: None,
        };
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["parameter"], "net.core.somaxconn@netns:4026532281");
        assert_eq!(json["source"], "llm");
        assert_eq!(json["recommended_value"], 8192);
        assert_eq!(json["window"]["index"], 7);
        assert!(json.get("application").is_none());
        assert!(r.id.starts_with("llm-7-"), "{}", r.id);
        let back: Recommendation = serde_json::from_value(json).unwrap();
        assert_eq!(back, r);
        assert_eq!(
            r.id,
            Recommendation::make_id(Source::Llm, 7, &r.parameter, Some(&Value::Int(8192))),
            "ids are deterministic"
        );
    }
}
