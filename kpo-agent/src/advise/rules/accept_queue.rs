//! The accept-queue rule. A listener at or near its accept-queue limit, or dropping connections,
//! leads to advice; which advice depends on where its limit comes from:
//!
//! - (a) the limit equals `net.core.somaxconn` of the listener's namespace (or exceeds it: the key
//!   was lowered after `listen()`): the kernel capped the application's backlog. Raise somaxconn
//!   in that namespace, in steps within policy. The new value applies only when the service
//!   calls `listen()` again, so the reason says so and names the pid and comm.
//! - (b) the application asked for less than somaxconn: raising somaxconn does nothing. The advice
//!   is for the application (no sysctl), naming the listener, its limit and its drops.
//!
//! After a long calm with large headroom in a namespace whose somaxconn was raised, it recommends
//! stepping back toward the original value.
//!
//! Hysteresis: drops trigger at once; a queue near its limit without drops must persist for
//! `near_windows` windows. Once advised, the same advice is not repeated until the situation
//! changes (somaxconn or the limit moved), `repeat_windows` pass, or the listener was calm for
//! `rearm_windows` windows.
use std::collections::BTreeMap;

use crate::{
    actuate::param::{NetnsRef, ParamAddress, Target, Value},
    advise::{
        limits::{AdvicePolicy, Mode},
        recommendation::{ApplicationRef, Recommendation, Source, WindowRef},
    },
    window::{ListenerWindow, Window},
};

pub const SOMAXCONN: &str = "net.core.somaxconn";
/// The kernel's ceiling for somaxconn before 5.4 kept it in 16 bits; a safe default ceiling.
const DEFAULT_CEILING: i64 = 65535;

/// What the rule manages and why (for `kpo explain` and the docs).
pub const DESCS: &[(&str, &str)] = &[(
    SOMAXCONN,
    "accept-queue limit of listen(); raised per network namespace when listeners are capped by it",
)];

#[derive(Debug, Clone, PartialEq)]
pub struct AcceptQueueConfig {
    /// A queue at this fraction of its limit or more counts as near the limit.
    pub near_ratio: f64,
    /// Consecutive near-limit windows (without drops) before advising.
    pub near_windows: u32,
    /// Windows without pressure that re-arm a listener's advice.
    pub rearm_windows: u32,
    /// Windows after which unchanged advice for a still-pressed listener is repeated.
    pub repeat_windows: u64,
    /// Calm windows (every listener of the namespace below `calm_ratio` of its limit, no drops)
    /// before stepping back toward the original somaxconn.
    pub calm_windows: u32,
    pub calm_ratio: f64,
    /// Growth factor of one raise (within the policy's bounds and step).
    pub raise_factor: i64,
}

impl Default for AcceptQueueConfig {
    fn default() -> Self {
        Self {
            near_ratio: 0.9,
            near_windows: 2,
            rearm_windows: 3,
            repeat_windows: 10,
            calm_windows: 60,
            calm_ratio: 0.25,
            raise_factor: 2,
        }
    }
}

/// The kernel values the rule needs, read by the agent before each evaluation.
#[derive(Debug, Clone, Default)]
pub struct NetnsSysctls {
    /// The agent's own network namespace inode: its keys are addressed as the host's.
    pub host_netns: u64,
    /// Current `net.core.somaxconn` per namespace inode.
    pub somaxconn: BTreeMap<u64, i64>,
    /// somaxconn before KPO first changed it, per namespace (from the journal); absent when KPO
    /// never changed it.
    pub original_somaxconn: BTreeMap<u64, i64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct ListenerId {
    netns: u64,
    port: u16,
    family: &'static str,
}

#[derive(Debug, Clone, Default)]
struct ListenerState {
    near: u32,
    calm: u32,
    /// (window index, somaxconn, limit) of the last advice.
    advised: Option<(u64, i64, u32)>,
}

/// The rule and its hysteresis state.
#[derive(Debug, Clone, Default)]
pub struct AcceptQueueRule {
    pub cfg: AcceptQueueConfig,
    listeners: BTreeMap<ListenerId, ListenerState>,
    /// Calm windows per namespace, and the window of the last step-back advice.
    calm: BTreeMap<u64, (u32, Option<u64>)>,
}

/// A listener under pressure in this window, and its case.
struct Pressed<'a> {
    l: &'a ListenerWindow,
    somaxconn: i64,
}

impl AcceptQueueRule {
    pub fn new(cfg: AcceptQueueConfig) -> Self {
        Self {
            cfg,
            ..Self::default()
        }
    }

    /// Evaluates one window (`index`) and returns the advice it leads to.
    pub fn evaluate(
        &mut self,
        index: u64,
        window: &Window,
        sysctls: &NetnsSysctls,
        policy: &dyn AdvicePolicy,
    ) -> Vec<Recommendation> {
        let wref = WindowRef {
            index,
            end: window.end.clone(),
        };
        let mut raise: BTreeMap<u64, Vec<Pressed>> = BTreeMap::new();
        let mut out = Vec::new();
        for l in &window.listeners {
            let id = ListenerId {
                netns: l.netns,
                port: l.port,
                family: l.family,
            };
            let st = self.listeners.entry(id).or_default();
            let dropping = l.overflows > 0;
            let near = l.backlog_limit > 0
                && f64::from(l.backlog_max) >= self.cfg.near_ratio * f64::from(l.backlog_limit);
            if dropping || near {
                st.near += 1;
                st.calm = 0;
            } else {
                st.near = 0;
                st.calm += 1;
                if st.calm >= self.cfg.rearm_windows {
                    st.advised = None;
                }
                continue;
            }
            if !dropping && st.near < self.cfg.near_windows {
                continue;
            }
            // Without the namespace's somaxconn the two cases cannot be told apart.
            let Some(&somaxconn) = sysctls.somaxconn.get(&l.netns) else {
                continue;
            };
            if let Some((at, s, lim)) = st.advised {
                let same = s == somaxconn && lim == l.backlog_limit;
                if same && index.saturating_sub(at) < self.cfg.repeat_windows {
                    continue;
                }
            }
            st.advised = Some((index, somaxconn, l.backlog_limit));
            if i64::from(l.backlog_limit) < somaxconn {
                out.push(application_advice(l, somaxconn, sysctls, &wref));
            } else {
                raise
                    .entry(l.netns)
                    .or_default()
                    .push(Pressed { l, somaxconn });
            }
        }
        // Forget listeners that are gone.
        let seen: std::collections::BTreeSet<ListenerId> = window
            .listeners
            .iter()
            .map(|l| ListenerId {
                netns: l.netns,
                port: l.port,
                family: l.family,
            })
            .collect();
        self.listeners.retain(|id, _| seen.contains(id));
        for (netns, pressed) in raise {
            if let Some(r) = self.raise_advice(netns, &pressed, sysctls, policy, &wref) {
                out.push(r);
            }
        }
        out.extend(self.step_back(window, sysctls, policy, &wref));
        out
    }

    fn raise_advice(
        &self,
        netns: u64,
        pressed: &[Pressed],
        sysctls: &NetnsSysctls,
        policy: &dyn AdvicePolicy,
        wref: &WindowRef,
    ) -> Option<Recommendation> {
        let current = pressed[0].somaxconn;
        let addr = somaxconn_address(netns, sysctls);
        let limits = policy.allowed(&addr, Source::Rules);
        let base = pressed
            .iter()
            .map(|p| i64::from(p.l.backlog_limit))
            .max()
            .unwrap_or(current)
            .max(current);
        let mut target = base.saturating_mul(self.cfg.raise_factor.max(2));
        let mut ceiling = DEFAULT_CEILING;
        if let Some(l) = &limits {
            ceiling = l.max.unwrap_or(DEFAULT_CEILING);
            if let Some(step) = l.max_step {
                target = target.min(current.saturating_add(step.allowed_from(current)));
            }
        }
        let target = target.min(ceiling);
        if target <= current {
            return None;
        }
        let worst = pressed
            .iter()
            .max_by_key(|p| (p.l.overflows, p.l.backlog_max))
            .map(|p| p.l)?;
        let others = pressed.len() - 1;
        let mut reason = format!(
            "{} dropped {} connection(s) in window {} with its accept queue at {}/{}; its limit is capped by {SOMAXCONN} = {current}{}. \
Raising {SOMAXCONN} to {target} {}takes effect only when the service calls listen() again: restart {}, or reload it after setting a larger listen backlog ({}); a reload that does not listen again keeps the old limit.",
            describe(worst, sysctls),
            worst.overflows,
            wref.index,
            worst.backlog_max,
            worst.backlog_limit,
            if others > 0 {
                format!(" ({others} other listener(s) in this namespace are also pressed)")
            } else {
                String::new()
            },
            if addr.target == Target::Host {
                String::new()
            } else {
                format!("in network namespace {netns} ")
            },
            process(worst),
            backlog_hint(worst, target),
        );
        if limits.is_none() {
            reason.push_str(" The policy does not let rules change this parameter.");
        }
        Some(Recommendation {
            id: Recommendation::make_id(
                Source::Rules,
                wref.index,
                &addr,
                Some(&Value::Int(target)),
            ),
            parameter: addr,
            current_value: Some(Value::Int(current)),
            recommended_value: Some(Value::Int(target)),
            can_auto_apply: limits.is_some_and(|l| l.mode == Mode::Auto),
            reason,
            confidence: if worst.overflows > 0 { 0.9 } else { 0.6 },
            source: Source::Rules,
            window: wref.clone(),
            application: Some(app_ref(worst)),
        })
    }

    /// After a long calm with large headroom, step somaxconn back toward its original value.
    fn step_back(
        &mut self,
        window: &Window,
        sysctls: &NetnsSysctls,
        policy: &dyn AdvicePolicy,
        wref: &WindowRef,
    ) -> Vec<Recommendation> {
        let mut out = Vec::new();
        for (&netns, &original) in &sysctls.original_somaxconn {
            let Some(&current) = sysctls.somaxconn.get(&netns) else {
                continue;
            };
            let entry = self.calm.entry(netns).or_insert((0, None));
            if current <= original {
                *entry = (0, None);
                continue;
            }
            let calm = window
                .listeners
                .iter()
                .filter(|l| l.netns == netns)
                .all(|l| {
                    l.overflows == 0
                        && f64::from(l.backlog_max)
                            < self.cfg.calm_ratio * f64::from(l.backlog_limit.max(1))
                });
            entry.0 = if calm { entry.0 + 1 } else { 0 };
            if entry.0 < self.cfg.calm_windows {
                continue;
            }
            if entry
                .1
                .is_some_and(|at| wref.index.saturating_sub(at) < u64::from(self.cfg.calm_windows))
            {
                continue;
            }
            entry.1 = Some(wref.index);
            let addr = somaxconn_address(netns, sysctls);
            let limits = policy.allowed(&addr, Source::Rules);
            let mut target = (current / self.cfg.raise_factor.max(2)).max(original);
            if let Some(step) = limits.as_ref().and_then(|l| l.max_step) {
                target = target.max(current - step.allowed_from(current));
            }
            if let Some(min) = limits.as_ref().and_then(|l| l.min) {
                target = target.max(min);
            }
            if target >= current {
                continue;
            }
            let peak = window
                .listeners
                .iter()
                .filter(|l| l.netns == netns)
                .map(|l| l.backlog_max)
                .max()
                .unwrap_or(0);
            out.push(Recommendation {
                id: Recommendation::make_id(Source::Rules, wref.index, &addr, Some(&Value::Int(target))),
                parameter: addr,
                current_value: Some(Value::Int(current)),
                recommended_value: Some(Value::Int(target)),
                can_auto_apply: limits.is_some_and(|l| l.mode == Mode::Auto),
                reason: format!(
                    "no accept-queue drops for {} windows and the deepest queue is {peak}, under {}% of its limit: step {SOMAXCONN} back from {current} to {target}, toward the original {original}",
                    entry.0,
                    (self.cfg.calm_ratio * 100.0).round()
                ),
                confidence: 0.5,
                source: Source::Rules,
                window: wref.clone(),
                application: None,
            });
        }
        out
    }
}

fn application_advice(
    l: &ListenerWindow,
    somaxconn: i64,
    sysctls: &NetnsSysctls,
    wref: &WindowRef,
) -> Recommendation {
    let addr = somaxconn_address(l.netns, sysctls);
    let wanted = somaxconn.min(i64::from(l.backlog_limit).saturating_mul(4).max(128));
    Recommendation {
        id: Recommendation::make_id(Source::Rules, wref.index, &addr, None),
        parameter: addr,
        current_value: Some(Value::Int(somaxconn)),
        recommended_value: None,
        can_auto_apply: false,
        reason: format!(
            "{} {} in window {} with its accept queue at {}/{}: the application asked listen() for a backlog of {}, below {SOMAXCONN} = {somaxconn}, so raising {SOMAXCONN} would not help. \
Raise the application's listen backlog (for example to {wanted}: {}) and restart {}.",
            describe(l, sysctls),
            if l.overflows > 0 {
                format!("dropped {} connection(s)", l.overflows)
            } else {
                "was near its limit".to_string()
            },
            wref.index,
            l.backlog_max,
            l.backlog_limit,
            l.backlog_limit,
            backlog_hint(l, wanted),
            process(l),
        ),
        confidence: if l.overflows > 0 { 0.9 } else { 0.6 },
        source: Source::Rules,
        window: wref.clone(),
        application: Some(app_ref(l)),
    }
}

/// How to ask for a larger backlog: nginx's own setting when the listener is nginx's.
fn backlog_hint(l: &ListenerWindow, n: i64) -> String {
    match l.comm.as_deref() {
        Some(c) if c.starts_with("nginx") => format!("nginx: `listen ... backlog={n}`"),
        _ => format!(
            "the backlog argument it passes to listen(), or its setting for it, {n} or more"
        ),
    }
}

fn somaxconn_address(netns: u64, sysctls: &NetnsSysctls) -> ParamAddress {
    let target = if netns == sysctls.host_netns {
        Target::Host
    } else {
        Target::Netns {
            netns: NetnsRef::Inode(netns),
        }
    };
    ParamAddress {
        name: SOMAXCONN.to_string(),
        target,
    }
}

fn app_ref(l: &ListenerWindow) -> ApplicationRef {
    ApplicationRef {
        netns: l.netns,
        port: l.port,
        pid: l.pid,
        comm: l.comm.clone(),
    }
}

/// `listener :8080 (nginx, pid 4242) in netns 4026532281`; the process name is quoted as data.
fn describe(l: &ListenerWindow, sysctls: &NetnsSysctls) -> String {
    let ns = if l.netns == sysctls.host_netns {
        String::new()
    } else {
        format!(" in netns {}", l.netns)
    };
    format!("listener {}:{} {}{ns}", addr_of(l), l.port, owner(l))
}

fn addr_of(l: &ListenerWindow) -> String {
    match l.addresses.first() {
        Some(a) if l.family == "ipv6" => format!("[{a}]"),
        Some(a) => a.clone(),
        None => String::new(),
    }
}

fn owner(l: &ListenerWindow) -> String {
    match (&l.comm, l.pid) {
        (Some(c), Some(p)) => format!("({}, pid {p})", quoted(c)),
        (Some(c), None) => format!("({})", quoted(c)),
        (None, Some(p)) => format!("(pid {p})"),
        (None, None) => "(owner unknown)".into(),
    }
}

fn process(l: &ListenerWindow) -> String {
    match (&l.comm, l.pid) {
        (Some(c), Some(p)) => format!("{} (pid {p})", quoted(c)),
        (Some(c), None) => quoted(c),
        (None, Some(p)) => format!("pid {p}"),
        (None, None) => "the service".into(),
    }
}

/// A process name as JSON-quoted data.
fn quoted(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"?\"".into())
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;
    use crate::{
        advise::limits::{ParamLimits, StaticPolicy, Step},
        collect::procfs::{HostMetrics, HostSnapshot},
    };

    const NS: u64 = 4026532281;
    const HOST: u64 = 4026531840;

    fn listener(netns: u64, limit: u32, max: u32, drops: u64) -> ListenerWindow {
        ListenerWindow {
            netns,
            port: 8080,
            family: "ipv4",
            addresses: vec!["10.200.0.2".into()],
            backlog_limit: limit,
            backlog_max: max,
            backlog_now: 0,
            enqueued: Some(1000),
            synack_retrans: Some(0),
            overflows: drops,
            pid: Some(4242),
            comm: Some("nginx".into()),
        }
    }

    fn window(listeners: Vec<ListenerWindow>) -> Window {
        let t = Instant::now();
        Window {
            start: "s".into(),
            end: "2026-12-01T03:01:00Z".into(),
            duration_s: 1.0,
            sampled_fraction: 1.0,
            accept_queue_sampled_fraction: 1.0,
            listeners,
            netns: vec![],
            irqs: vec![],
            softirqs: vec![],
            napi: vec![],
            runq_latency: None,
            sampled_context_switches_per_s: None,
            request_latency: vec![],
            system: HostMetrics::between(&HostSnapshot::empty(t), &HostSnapshot::empty(t)),
            energy: None,
        }
    }

    fn sysctls(somaxconn: i64) -> NetnsSysctls {
        NetnsSysctls {
            host_netns: HOST,
            somaxconn: [(NS, somaxconn), (HOST, 4096)].into(),
            original_somaxconn: BTreeMap::new(),
        }
    }

    fn auto_policy() -> StaticPolicy {
        StaticPolicy::new().with(
            "net.core.somaxconn",
            &[Source::Rules],
            ParamLimits::new(Mode::Auto).bounds(128, 65535),
        )
    }

    #[test]
    fn capped_by_somaxconn_raises_it_in_the_listeners_namespace() {
        let mut rule = AcceptQueueRule::default();
        let w = window(vec![listener(NS, 128, 128, 1200)]);
        let recs = rule.evaluate(41, &w, &sysctls(128), &auto_policy());
        assert_eq!(recs.len(), 1);
        let r = &recs[0];
        assert_eq!(
            r.parameter.to_string(),
            "net.core.somaxconn@netns:4026532281"
        );
        assert_eq!(r.current_value, Some(Value::Int(128)));
        assert_eq!(r.recommended_value, Some(Value::Int(256)));
        assert!(r.can_auto_apply);
        assert_eq!(r.source, Source::Rules);
        assert_eq!(r.window.index, 41);
        for needle in [
            "listen() again",
            "\"nginx\"",
            "pid 4242",
            "backlog=256",
            "1200",
            "128/128",
            "restart",
        ] {
            assert!(r.reason.contains(needle), "{needle:?} not in {}", r.reason);
        }
        assert_eq!(r.application.as_ref().unwrap().port, 8080);
    }

    #[test]
    fn an_application_asking_for_less_gets_application_advice() {
        let mut rule = AcceptQueueRule::default();
        let w = window(vec![listener(NS, 511, 511, 300)]);
        let recs = rule.evaluate(5, &w, &sysctls(4096), &auto_policy());
        assert_eq!(recs.len(), 1);
        let r = &recs[0];
        assert_eq!(r.recommended_value, None, "no sysctl");
        assert!(!r.can_auto_apply);
        assert!(!r.is_change());
        let app = r.application.as_ref().unwrap();
        assert_eq!((app.netns, app.port, app.pid), (NS, 8080, Some(4242)));
        for needle in [
            "backlog of 511",
            "would not help",
            "300",
            ":8080",
            "\"nginx\"",
            "4096",
        ] {
            assert!(r.reason.contains(needle), "{needle:?} not in {}", r.reason);
        }
    }

    #[test]
    fn hysteresis_near_limit_needs_two_windows_and_advice_is_not_repeated() {
        let mut rule = AcceptQueueRule::default();
        let s = sysctls(128);
        let p = auto_policy();
        let near = window(vec![listener(NS, 128, 120, 0)]);
        let calm = window(vec![listener(NS, 128, 3, 0)]);
        assert!(
            rule.evaluate(0, &near, &s, &p).is_empty(),
            "one near window"
        );
        assert!(rule.evaluate(1, &calm, &s, &p).is_empty());
        assert!(
            rule.evaluate(2, &near, &s, &p).is_empty(),
            "streak restarted"
        );
        let r = rule.evaluate(3, &near, &s, &p);
        assert_eq!(r.len(), 1, "two near windows in a row");
        assert_eq!(r[0].confidence, 0.6);
        // Still pressed, nothing changed: not repeated for repeat_windows.
        for i in 4..13 {
            assert!(rule.evaluate(i, &near, &s, &p).is_empty(), "window {i}");
        }
        assert_eq!(
            rule.evaluate(13, &near, &s, &p).len(),
            1,
            "repeated after 10"
        );
        // The situation changed (somaxconn raised, the service listened again): advised again.
        let raised = sysctls(256);
        let full = window(vec![listener(NS, 256, 256, 10)]);
        let r = rule.evaluate(14, &full, &raised, &p);
        assert_eq!(r[0].recommended_value, Some(Value::Int(512)));
        // Calm re-arms: three calm windows, then drops advise at once.
        for i in 15..18 {
            assert!(rule.evaluate(i, &calm, &raised, &p).is_empty());
        }
        assert_eq!(rule.evaluate(18, &full, &raised, &p).len(), 1);
    }

    #[test]
    fn steps_stay_within_policy() {
        let s = sysctls(4096);
        let w = window(vec![listener(NS, 4096, 4096, 50)]);
        let capped = StaticPolicy::new().with(
            "net.core.somaxconn",
            &[Source::Rules],
            ParamLimits::new(Mode::Recommend).bounds(128, 6000),
        );
        let r = AcceptQueueRule::default().evaluate(1, &w, &s, &capped);
        assert_eq!(r[0].recommended_value, Some(Value::Int(6000)));
        assert!(!r[0].can_auto_apply, "recommend mode");
        let stepped = StaticPolicy::new().with(
            "net.core.somaxconn",
            &[Source::Rules],
            ParamLimits::new(Mode::Auto)
                .bounds(128, 65535)
                .step(Step::Percent(50.0)),
        );
        let r = AcceptQueueRule::default().evaluate(1, &w, &s, &stepped);
        assert_eq!(r[0].recommended_value, Some(Value::Int(6144)));
        let at_max = StaticPolicy::new().with(
            "net.core.somaxconn",
            &[Source::Rules],
            ParamLimits::new(Mode::Auto).bounds(128, 4096),
        );
        assert!(AcceptQueueRule::default()
            .evaluate(1, &w, &s, &at_max)
            .is_empty());
        let none = StaticPolicy::new();
        let r = AcceptQueueRule::default().evaluate(1, &w, &s, &none);
        assert!(!r[0].can_auto_apply);
        assert!(r[0].reason.contains("does not let rules"));
    }

    #[test]
    fn the_agents_namespace_is_the_host_and_one_advice_per_namespace() {
        let mut a = listener(HOST, 4096, 4096, 10);
        let mut b = listener(HOST, 4096, 4000, 900);
        a.port = 80;
        b.port = 443;
        b.comm = Some("envoy".into());
        let w = window(vec![a, b, listener(NS, 511, 511, 0)]);
        let recs = AcceptQueueRule::default().evaluate(2, &w, &sysctls(4096), &auto_policy());
        assert_eq!(
            recs.len(),
            1,
            "the near-only application listener waits: {recs:?}"
        );
        assert_eq!(recs[0].parameter.to_string(), "net.core.somaxconn");
        assert!(
            recs[0].reason.contains("\"envoy\""),
            "names the worst listener"
        );
        assert!(recs[0].reason.contains("1 other listener"));
        assert!(!recs[0].reason.contains("nginx:"), "{}", recs[0].reason);
        assert!(!recs[0].reason.contains("netns"));
    }

    #[test]
    fn unknown_somaxconn_gives_no_advice() {
        let w = window(vec![listener(77, 128, 128, 1200)]);
        assert!(AcceptQueueRule::default()
            .evaluate(1, &w, &sysctls(128), &auto_policy())
            .is_empty());
    }

    #[test]
    fn long_calm_steps_back_toward_the_original() {
        let cfg = AcceptQueueConfig {
            calm_windows: 5,
            ..AcceptQueueConfig::default()
        };
        let mut rule = AcceptQueueRule::new(cfg);
        let mut s = sysctls(8192);
        s.original_somaxconn.insert(NS, 1024);
        let p = auto_policy();
        let calm = window(vec![listener(NS, 8192, 40, 0)]);
        let busy = window(vec![listener(NS, 8192, 4000, 0)]);
        for i in 0..4 {
            assert!(rule.evaluate(i, &calm, &s, &p).is_empty());
        }
        assert!(
            rule.evaluate(4, &busy, &s, &p).is_empty(),
            "headroom under 25% breaks the calm"
        );
        for i in 5..9 {
            assert!(rule.evaluate(i, &calm, &s, &p).is_empty());
        }
        let r = rule.evaluate(9, &calm, &s, &p);
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].recommended_value, Some(Value::Int(4096)));
        assert!(
            r[0].reason.contains("toward the original 1024"),
            "{}",
            r[0].reason
        );
        assert!(
            rule.evaluate(10, &calm, &s, &p).is_empty(),
            "not every window"
        );
    }
}
