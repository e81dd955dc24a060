//! The LLM advisor inside `kpo run` (docs/llm.md, "In the agent").
//!
//! After each window the stage keeps the window's summary and health; when a consultation is due
//! (every `llm.every_windows` windows, earlier after a notable window) and none is in flight, it
//! offers the model the parameters the policy lets the `llm` source drive, with their values read
//! through the change path, and the recent changes with what was measured after them, and spawns
//! the consultation. The loop never waits for it: [`LlmStage::finished`] is one more branch of its
//! `select!`, and [`LlmStage::settle`] turns the result into the `llm` event and hands the accepted
//! recommendations to [`Deciding::consider`] like any other advisor's.
//!
//! A consultation carries a copy of the policy's answers for the parameters it offered
//! ([`OfferedPolicy`]), so validation needs no reference into the loop; the change path decides
//! every proposal against the live policy again.
use std::{
    collections::{BTreeSet, VecDeque},
    sync::Arc,
};

use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use super::deciding::Deciding;
use crate::{
    actuate::{
        param::{NetnsRef, ParamAddress, ParamKind, Target, Value},
        sysctl::is_per_netns,
    },
    advise::{
        limits::{AdvicePolicy, ParamLimits},
        llm::{
            offered_params,
            prompt::{HeldStatus, HeldValue},
            ChangeOutcome, Consultation, LlmAdvisor, LlmConfig, LlmSetupError, MetricChange,
            ParamContext,
        },
        recommendation::{Source, WindowRef},
    },
    approvals::{ApprovalState, Desk},
    change::ChangePath,
    config::ConfigError,
    guard::{Health, HealthSignal, Scope, ServiceLoads},
    journal::{format_ms, Entry},
    output::events::Event,
    policy::{deny::DenyList, netns_inode, NamespaceSel, Namespaces, Policy},
    window::Window,
};

/// Parameters the agent knows how to reason about, offered whenever the policy lets the `llm`
/// drive them (a policy entry that names any other parameter exactly adds it).
pub const CATALOGUE: &[&str] = &[
    "net.core.somaxconn",
    "net.ipv4.tcp_max_syn_backlog",
    "net.core.netdev_max_backlog",
    "net.core.netdev_budget",
    "net.core.netdev_budget_usecs",
    "net.ipv4.tcp_rmem",
    "net.ipv4.tcp_wmem",
    "vm.swappiness",
];

/// At most this many parameters are offered in one prompt (a host with hundreds of namespaces
/// would otherwise fill the prompt with copies of the same key). [`candidates`] puts every key at
/// the host first and then the namespaces' copies round by round, so the cut drops copies in the
/// least dropping namespaces rather than whole keys.
pub const MAX_OFFERED: usize = 24;

/// At most this many recent changes go into the prompt.
pub const MAX_CHANGES: usize = 8;

/// Windows whose health is kept to measure changes against.
const HEALTH_WINDOWS: usize = 64;

/// One closed window's health, and when its last reading was taken.
#[derive(Debug, Clone)]
struct WindowHealth {
    index: u64,
    end_ms: u64,
    /// The whole host's: for a change the guard judges host-wide.
    health: Health,
    /// Each network namespace's (its listeners and services, and the host-wide signals): for a
    /// change the guard judges by one namespace, which other namespaces' load must not be shown
    /// to the model as the effect of (s50 storyY F2: a pod's change in its own namespace was
    /// followed, the model was told, by 6264.7 listen overflows/s, every one another pod's).
    netns: std::collections::BTreeMap<u64, Health>,
    /// Each service's request p99, for `request_p99` over the services busy before a change.
    services: ServiceLoads,
}

impl WindowHealth {
    fn of(index: u64, window: &Window) -> Self {
        let namespaces: std::collections::BTreeSet<u64> = (window.netns.iter().map(|n| n.netns))
            .chain(window.listeners.iter().map(|l| l.netns))
            .collect();
        WindowHealth {
            index,
            end_ms: end_ms(window),
            health: Health::from_window(window),
            netns: namespaces
                .into_iter()
                .map(|n| (n, Health::from_window_in(window, Scope::Netns(n))))
                .collect(),
            services: ServiceLoads::of(window),
        }
    }

    /// The health `scope` sees; `None` for a namespace the window did not see.
    fn seen_by(&self, scope: Scope) -> Option<&Health> {
        match scope {
            Scope::Host => Some(&self.health),
            Scope::Netns(n) => self.netns.get(&n),
        }
    }
}

pub struct LlmStage {
    advisor: Option<LlmAdvisor>,
    in_flight: Option<InFlight>,
    health: VecDeque<WindowHealth>,
    host_netns: u64,
    /// The listeners whose queue was full in the window the last consultation was about: one
    /// still full brings no consultation forward again ([`notable`]).
    full_when_asked: BTreeSet<ListenerId>,
}

/// A listener by its namespace, port and family.
type ListenerId = (u64, u16, &'static str);

/// The consultation in flight, with what settling it needs besides its answer.
struct InFlight {
    handle: JoinHandle<Consultation>,
    asked: Asked,
}

/// What a consultation was asked.
struct Asked {
    /// The parameters it offered: only those could it advise again.
    offered: Vec<ParamAddress>,
    /// The window it is about, and when it started: for its `llm` event should its task end
    /// without one.
    about: WindowRef,
    started: std::time::Instant,
}

/// A consultation that ended: its task's result, and what it was asked.
pub struct Finished {
    result: Result<Consultation, tokio::task::JoinError>,
    asked: Asked,
}

impl LlmStage {
    /// The stage, with the advisor on or off (`LlmAdvisor::from_config` logs one line saying
    /// which). An error names the key at fault, and the file (`origin`) when the key is one of
    /// its own, or the environment variable.
    pub fn start(config: &LlmConfig, origin: &str) -> anyhow::Result<Self> {
        let advisor = LlmAdvisor::from_config(config).map_err(|e| match e {
            LlmSetupError::Config(e) => ConfigError::from_llm(origin, &e).into(),
            LlmSetupError::Client(e) => anyhow::anyhow!("LLM advisor: {e}"),
        })?;
        Ok(Self {
            advisor,
            in_flight: None,
            health: VecDeque::new(),
            full_when_asked: BTreeSet::new(),
            host_netns: std::fs::metadata("/proc/self/ns/net")
                .map(|m| std::os::unix::fs::MetadataExt::ino(&m))
                .unwrap_or(0),
        })
    }

    /// A window closed (window `index`, counted from 1 as the rules count). Starts a
    /// consultation when one is due and none is in flight.
    pub fn after_window(&mut self, index: u64, window: &Window, deciding: &Deciding) {
        let Some(advisor) = self.advisor.as_mut() else {
            return;
        };
        if self.health.len() == HEALTH_WINDOWS {
            self.health.pop_front();
        }
        self.health.push_back(WindowHealth::of(index, window));
        // Drops as the rules take them: a deferred-accept listener's held-back ACKs lose nothing.
        let by_socket = window.by_dropping_socket();
        let window: &Window = &by_socket.without_deferred_acks();
        advisor.observe_window(index, window);
        if self.in_flight.is_some() {
            debug!(
                window = index,
                "LLM consultation still in flight; not starting another"
            );
            return;
        }
        let policy = &deciding.change_path().policy;
        let offered_in = OfferedIn::new(policy, self.host_netns);
        if !advisor.due(
            index,
            notable(window, &self.full_when_asked, self.host_netns, |ns| {
                offered_in.any(ns)
            }),
            std::time::Instant::now(),
        ) {
            return;
        }
        self.full_when_asked = full_listeners(window);
        let path = deciding.change_path();
        let offered = offer_with_held(deciding, window, self.host_netns);
        let history = self.health.make_contiguous();
        let changes = change_outcomes(&path.journal.entries(), history, Scope::of);
        let policy = Arc::new(OfferedPolicy::new(&offered));
        let asked = Asked {
            offered: offered.iter().map(|p| p.address.clone()).collect(),
            about: advisor.latest_window(),
            started: std::time::Instant::now(),
        };
        let handle = tokio::spawn(advisor.consult(offered, changes, policy));
        self.in_flight = Some(InFlight { handle, asked });
    }

    /// The consultation in flight, once it ends (pending forever when there is none). Cancel
    /// safe: a `select!` that takes another branch leaves it in flight.
    pub async fn finished(&mut self) -> Finished {
        let Some(in_flight) = self.in_flight.as_mut() else {
            return std::future::pending().await;
        };
        let result = (&mut in_flight.handle).await;
        let asked = self.in_flight.take().map(|f| f.asked);
        Finished {
            result,
            asked: asked.expect("in flight until now"),
        }
    }

    /// The `llm` event of a finished consultation, then what the deciding stage made of its
    /// accepted recommendations (source `llm`). A consultation whose task panicked is logged and
    /// has its `llm` event too, outcome `internal_error`, with nothing taken from it: the agent
    /// and the other advisors go on.
    pub fn settle(&mut self, finished: Finished, deciding: &mut Deciding) -> Vec<Event> {
        let Finished { result, asked } = finished;
        let offered = asked.offered;
        let mut consultation = match (result, self.advisor.as_ref()) {
            (Ok(c), _) => c,
            (Err(e), advisor) => {
                let Some(advisor) = advisor else {
                    warn!("LLM consultation ended abnormally");
                    return Vec::new();
                };
                // Redacted as its event is: the message is the panic's, which may hold the key.
                let why = e.to_string();
                warn!(
                    "LLM consultation ended abnormally: {}",
                    advisor.shown_task_error(&why)
                );
                return vec![Event::Llm(Box::new(Consultation::task_failed(
                    advisor,
                    asked.about,
                    offered.len(),
                    asked.started.elapsed(),
                    &why,
                )))];
            }
        };
        drop_managed_suggestions(&mut consultation, &deciding.change_path().policy);
        let mut recommendations = std::mem::take(&mut consultation.recommendations);
        // Without a value: the desk reports them, keeps them in the history and posts them as
        // advice, and proposes nothing for them.
        recommendations.extend(std::mem::take(&mut consultation.suggestions));
        if consultation.outcome == crate::advise::llm::client::Outcome::Ok {
            deciding.llm_answered(&offered);
        }
        for (rec, detail) in dropped_answers(&consultation, &offered) {
            deciding.llm_answer_dropped(rec, detail);
        }
        let mut events = vec![Event::Llm(Box::new(consultation))];
        events.extend(deciding.consider(recommendations));
        events
    }

    /// At shutdown: a consultation still in flight is abandoned (nothing it would advise is
    /// applied).
    pub fn stop(&mut self) {
        if let Some(in_flight) = self.in_flight.take() {
            in_flight.handle.abort();
        }
    }
}

/// Whether a window deserves advice before the regular cadence: a listener dropped connections,
/// or filled its accept queue where it was not full when the last consultation was asked
/// (`full_when_asked`), or a namespace's listen overflows grew. A queue that stays full without
/// dropping would otherwise bring every consultation forward, for as long as it stays so, with
/// the same data (s56 story AY-4: a paid API asked every 3 windows instead of 10). Only in a
/// namespace where the model is offered a parameter (`offered_in`): elsewhere its advice can help
/// nothing, and a pod's listener that keeps dropping brought every consultation forward for as
/// long as it dropped (s61 story BX-2). `own_netns`: the agent's, whose counters
/// `system.listen_overflows` holds.
fn notable(
    window: &Window,
    full_when_asked: &BTreeSet<ListenerId>,
    own_netns: u64,
    offered_in: impl Fn(u64) -> bool,
) -> bool {
    (window.listeners.iter()).any(|l| l.known_overflows() > 0 && offered_in(l.netns))
        || full_listeners(window)
            .difference(full_when_asked)
            .any(|(netns, ..)| offered_in(*netns))
        || (window.netns.iter()).any(|n| n.listen_overflows > 0 && offered_in(n.netns))
        || window.system.listen_overflows.is_some_and(|n| n > 0) && offered_in(own_netns)
}

/// Whether the policy offers the model a parameter acting in a network namespace, asked of each
/// namespace once per window.
struct OfferedIn<'a> {
    policy: &'a Policy,
    host_netns: u64,
    known: std::cell::RefCell<std::collections::BTreeMap<u64, bool>>,
}

impl<'a> OfferedIn<'a> {
    fn new(policy: &'a Policy, host_netns: u64) -> Self {
        Self {
            policy,
            host_netns,
            known: Default::default(),
        }
    }

    fn any(&self, netns: u64) -> bool {
        *(self.known.borrow_mut().entry(netns)).or_insert_with(|| {
            candidates(self.policy, &[netns], self.host_netns)
                .iter()
                .filter(|a| acts_in(a, self.host_netns) == Some(netns))
                .any(|a| self.policy.allowed(a, Source::Llm).is_some())
        })
    }
}

/// The listeners whose accept queue was full in the window.
fn full_listeners(window: &Window) -> BTreeSet<ListenerId> {
    (window.listeners.iter())
        .filter(|l| l.backlog_limit > 0 && l.backlog_max >= l.backlog_limit)
        .map(|l| (l.netns, l.port, l.family))
        .collect()
}

/// The time of the window's last reading in ms since the epoch (now, if `end` cannot be read).
fn end_ms(window: &Window) -> u64 {
    humantime::parse_rfc3339_weak(&window.end)
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or_else(crate::journal::now_ms, |d| d.as_millis() as u64)
}

/// The parameters to offer: [`candidates`] the policy lets the `llm` drive, with their current
/// values read through the change path (one that cannot be read is not offered), each with the
/// cookie of the network namespace it was read in: the advice is applied when the consultation
/// ends, up to `llm.timeout` later, and the change path refuses it if the `@netns:INODE` then
/// names another namespace (the one read is gone and the kernel reused its inode).
fn offer(path: &ChangePath, window: &Window, host_netns: u64) -> Vec<ParamContext> {
    offer_among(
        &path.policy,
        host_netns,
        candidates(&path.policy, &listening(window), host_netns),
        // Yielded to a person, it is refused whatever the model says until `kpo resume`: like a
        // parameter no value can satisfy, it would only invite advice that is then lost (s50
        // storyY F7: offered as `auto`, each answer was refused as yielded).
        |a| (path.journal.param_state(a)).is_some_and(|state| state.yielded.is_some()),
        |a| path.read_with_cookie(a).ok(),
    )
}

/// [`offer`] over `candidates`, without those `yielded` says an operator holds, each read by
/// `read` (value and namespace cookie; `None`: not offered). `kpo check --llm` offers through it
/// what `kpo run` would, without a journal.
pub(crate) fn offer_among(
    policy: &Policy,
    host_netns: u64,
    candidates: Vec<ParamAddress>,
    yielded: impl Fn(&ParamAddress) -> bool,
    read: impl Fn(&ParamAddress) -> Option<(Value, Option<u64>)>,
) -> Vec<ParamContext> {
    // What the advice can change (auto, recommend) before what it can only be recorded for
    // (observe), each in the candidates' order: observe-only copies would otherwise take places
    // in the cut from an entry's copy the policy lets the model drive (s43). Sorted before the
    // reads, which stop at the cut.
    let (drivable, observed): (Vec<_>, Vec<_>) = candidates
        .into_iter()
        .filter_map(|a| Some((policy.allowed(&a, Source::Llm)?.mode, a)))
        .filter(|(_, a)| !yielded(a))
        .partition(|(mode, _)| *mode != crate::advise::limits::Mode::Observe);
    let readable: Vec<(ParamAddress, Value, Option<u64>)> = drivable
        .into_iter()
        .chain(observed)
        .map(|(_, a)| a)
        .filter_map(|a| read(&a).map(|(v, c)| (a, v, c)))
        // What `offered_params` leaves out (no value within reach) takes no place in the cut.
        .filter(|(a, v, _)| {
            policy
                .allowed(a, Source::Llm)
                .is_some_and(|l| l.within_reach(v))
        })
        .take(MAX_OFFERED)
        .collect();
    let mut offered = offered_params(
        policy,
        readable.iter().map(|(a, v, _)| (a.clone(), v.clone())),
    );
    for p in &mut offered {
        p.netns_cookie = readable
            .iter()
            .find(|(a, ..)| *a == p.address)
            .and_then(|(.., cookie)| *cookie);
        p.netns = acts_in(&p.address, host_netns);
    }
    offered
}

/// The network namespace (inode) a per-namespace parameter at `address` acts in: the one its
/// `@netns:INODE` names, or the agent's own (`host_netns`) for one named without. `None` for a
/// parameter of the whole machine, and for a namespace named by path (advice is offered by
/// inode).
pub(crate) fn acts_in(address: &ParamAddress, host_netns: u64) -> Option<u64> {
    match &address.target {
        Target::Netns {
            netns: NetnsRef::Inode(inode),
        } => Some(*inode),
        Target::Host if address.kind() == ParamKind::Sysctl && is_per_netns(&address.name) => {
            Some(host_netns)
        }
        _ => None,
    }
}

/// The answers validation dropped for a parameter that was offered, for a value the policy does
/// not allow there (out of bounds, too large a step, a word it does not take), the first for each
/// parameter, each as the recommendation it would have been and why it was dropped. Not a
/// parameter that was not offered, nor an answer without such a value: the first is the model's
/// invention, the second no advice, and neither belongs in a parameter's history.
fn dropped_answers(
    consultation: &Consultation,
    offered: &[ParamAddress],
) -> Vec<(crate::advise::recommendation::Recommendation, String)> {
    use crate::advise::llm::validate::DropKind;
    let mut seen: Vec<ParamAddress> = Vec::new();
    (consultation.dropped.iter())
        .filter_map(|d| {
            let parameter: ParamAddress = d.parameter.as_deref()?.parse().ok()?;
            let parameter = offered.iter().find(|a| **a == parameter)?.clone();
            // The value as the event echoes it: kept only when it is one the kind speaks of (a
            // number or numbers out of bounds or too far, a word not allowed); an echo cut short
            // or of another type is not stored as a value the model never gave (s51 review4 B1).
            let value: Value = serde_json::from_value(d.value.clone()?).ok()?;
            let fits = match d.kind {
                DropKind::OutOfBounds | DropKind::StepTooLarge => {
                    matches!(value, Value::Int(_) | Value::Ints(_))
                }
                DropKind::WordNotAllowed => matches!(value, Value::Word(_)),
                _ => false,
            };
            // One per parameter a reply: 32 dropped items could fill its history (review4 B2).
            if !fits || seen.contains(&parameter) {
                return None;
            }
            seen.push(parameter.clone());
            let value = Some(value);
            let rec = crate::advise::recommendation::Recommendation {
                id: crate::advise::recommendation::Recommendation::make_id(
                    Source::Llm,
                    consultation.window.index,
                    &parameter,
                    value.as_ref(),
                ),
                parameter,
                current_value: None,
                recommended_value: value,
                can_auto_apply: false,
                reason: "the LLM's answer, dropped by validation".into(),
                // The model's, as it gave it with the value.
                confidence: d.confidence.unwrap_or(0.0),
                source: Source::Llm,
                window: consultation.window.clone(),
                application: None,
                netns_cookie: None,
            };
            // The kind by its name in the `llm` event (`out_of_bounds`).
            let kind = serde_json::to_value(d.kind).ok();
            let kind = kind.as_ref().and_then(|k| k.as_str()).unwrap_or("dropped");
            Some((rec, format!("dropped ({kind}): {}", d.detail)))
        })
        .collect()
}

/// [`offer`], each parameter with the values it holds for now ([`held_values`]).
fn offer_with_held(deciding: &Deciding, window: &Window, host_netns: u64) -> Vec<ParamContext> {
    let path = deciding.change_path();
    let mut offered = offer(path, window, host_netns);
    for p in &mut offered {
        p.held = held_values(path, deciding.desk(), &p.address, p.netns_cookie);
    }
    offered
}

/// The values of `address` the model is told are decided for now, or wait on the operator:
/// the LLM's own pending approval first, then rejections in force (the latest rejected first),
/// then quarantines in force, each value once (a value rejected and quarantined is named by the
/// rejection, with the operator's reason; one pending and quarantined by the quarantine, since
/// its approval would be refused), at most [`MAX_HELD`].
///
/// Only the LLM's own pending approval: another advisor's is kept alive by that advisor, and the
/// model repeating its value gained nothing but an `approval_not_asked` at every consultation.
/// Quarantines as the change path reads them: in force now (an ended one's record stays a day),
/// and none of a namespace that had the inode before the one there now (`cookie`).
fn held_values(
    path: &ChangePath,
    desk: &Desk,
    address: &ParamAddress,
    cookie: Option<u64>,
) -> Vec<HeldValue> {
    let standing = desk.standing_for(address, cookie);
    let mut rejected: Vec<(u64, HeldValue)> = (standing.iter())
        .filter_map(|(item, until)| {
            let ApprovalState::Rejected { why, .. } = &item.state else {
                return None;
            };
            let held = HeldValue {
                value: item.value.clone(),
                status: HeldStatus::Rejected,
                until: until.map(format_ms),
                // One line: a rejection stored by an older KPO may hold a line break.
                reason: why
                    .as_deref()
                    .map(|r| shorten(&crate::shown::one_line(r), MAX_REASON_CHARS)),
            };
            Some((item.resolved_ms.unwrap_or(item.updated_ms), held))
        })
        .collect();
    // Newest first, by when rejected; rejected in the same millisecond, by approval (`standing`
    // is in id order).
    rejected.reverse();
    rejected.sort_by_key(|(at, _)| std::cmp::Reverse(*at));
    let now = std::time::SystemTime::now();
    let state = path.journal.param_state(address);
    let replaced = matches!((state.and_then(|s| s.netns_cookie), cookie),
        (Some(was), Some(now)) if was != now);
    let quarantined = (state.into_iter().filter(|_| !replaced))
        .flat_map(|state| &state.quarantine)
        .filter_map(|q| {
            let until = (path.journal.context(address, &q.value, now))
                .quarantined_until
                .filter(|until| *until > now)?;
            Some(HeldValue {
                value: q.value.clone(),
                status: HeldStatus::Quarantined,
                until: Some(format_ms(crate::clock::ms(until))),
                reason: None,
            })
        });
    let pending = (standing.iter())
        .filter(|(item, _)| item.state == ApprovalState::Pending && item.source == Source::Llm)
        .map(|(item, _)| HeldValue {
            value: item.value.clone(),
            status: HeldStatus::PendingApproval,
            until: None,
            reason: None,
        });
    let mut held: Vec<HeldValue> = Vec::new();
    for h in (rejected.into_iter().map(|(_, h)| h))
        .chain(quarantined)
        .chain(pending)
    {
        if !held.iter().any(|k| k.value == h.value) {
            held.push(h);
        }
    }
    // The pending one first, so that the cut never leaves it out.
    held.sort_by_key(|h| h.status != HeldStatus::PendingApproval);
    held.truncate(MAX_HELD);
    held
}

/// Values named per parameter in `held`: the prompt stays bounded however many values an
/// operator rejected (a pending approval, at most one per parameter and target, comes first).
const MAX_HELD: usize = 8;

/// The longest operator's reason told to the model: a reason may be 4 KiB, and eight of them for
/// each of 24 parameters would crowd the measurements out of the prompt.
const MAX_REASON_CHARS: usize = 200;

/// `text` cut to `max` characters, with `…` when cut.
fn shorten(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_string(),
    }
}

/// The network namespaces with a listener in `window`, the most dropping first.
fn listening(window: &Window) -> Vec<u64> {
    let mut listening: Vec<(u64, u64)> = Vec::new(); // (netns, overflows)
    for l in &window.listeners {
        match listening.iter_mut().find(|(ns, _)| *ns == l.netns) {
            Some((_, drops)) => *drops += l.known_overflows(),
            None => listening.push((l.netns, l.known_overflows())),
        }
    }
    listening.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    listening.into_iter().map(|(ns, _)| ns).collect()
}

/// Every address the model could be offered, before the policy's say: the [`CATALOGUE`] and the
/// policy's exactly named parameters; a per-namespace sysctl at the host and in each namespace
/// of `listening` (those with a listener in the window, the most dropping first: [`listening`])
/// or named by the parameter's policy entry.
///
/// Order: every key at the host, then round by round each key's copy in its next namespace (the
/// most dropping namespace's copies of all keys first), because [`offer`] keeps only the first
/// [`MAX_OFFERED`]: key by key, one key's copies in many namespaces would crowd out every other
/// key.
pub(crate) fn candidates(policy: &Policy, listening: &[u64], host_netns: u64) -> Vec<ParamAddress> {
    let mut names: Vec<ParamAddress> = CATALOGUE.iter().filter_map(|n| n.parse().ok()).collect();
    for rule in &policy.params {
        if rule.name.contains(['*', '?', '[', '{']) {
            continue;
        }
        if let Ok(address) = rule.name.parse::<ParamAddress>() {
            if !names.contains(&address) {
                names.push(address);
            }
        }
    }
    let mut out = Vec::new();
    // Each per-namespace key's copies, in the order of its namespaces.
    let mut copies: Vec<Vec<ParamAddress>> = Vec::new();
    for address in names {
        let per_netns = address.kind() == ParamKind::Sysctl && is_per_netns(&address.name);
        if !per_netns {
            out.push(address);
            continue;
        }
        let mut namespaces: Vec<u64> = listening.to_vec();
        if let Namespaces::List(list) = &policy.rule_for(&address).namespaces {
            namespaces.extend(list.iter().filter_map(|sel| match sel {
                NamespaceSel::Host => None,
                NamespaceSel::Inode(i) => Some(*i),
                NamespaceSel::Path(p) => netns_inode(&NetnsRef::Path(p.clone())),
            }));
        }
        let mut seen = vec![host_netns];
        let mut copy = Vec::new();
        for ns in namespaces {
            if seen.contains(&ns) {
                continue;
            }
            seen.push(ns);
            copy.push(ParamAddress {
                name: address.name.clone(),
                target: Target::Netns {
                    netns: NetnsRef::Inode(ns),
                },
            });
        }
        out.push(address);
        copies.push(copy);
    }
    let rounds = copies.iter().map(Vec::len).max().unwrap_or(0);
    for round in 0..rounds {
        out.extend(copies.iter().filter_map(|c| c.get(round).cloned()));
    }
    out
}

/// The suggestions of `consultation` of parameters `policy` lets an advisor change, dropped as
/// `managed`. That needs the whole policy, and the consultation's task had only the answers for
/// what it offered ([`OfferedPolicy`]), by which nothing else is managed: the live one, after.
pub(crate) fn drop_managed_suggestions(consultation: &mut Consultation, policy: &Policy) {
    let managed = crate::advise::llm::validate::drop_managed(&mut consultation.suggestions, policy);
    if !managed.is_empty() {
        let kept = &consultation.suggestions;
        consultation
            .suggested_ids
            .retain(|id| kept.iter().any(|s| s.id == *id));
        for d in &managed {
            info!(detail = %d.detail, "LLM suggestion dropped as managed");
        }
        consultation.dropped_suggestions.extend(managed);
    }
}

/// The policy's answers for the offered parameters, frozen when the prompt was built: validation
/// runs in the consultation's own task. Anything not offered is not allowed; the deny-list is the
/// policy's own.
pub struct OfferedPolicy {
    offered: Vec<(ParamAddress, ParamLimits)>,
    deny: DenyList,
}

impl OfferedPolicy {
    pub fn new(offered: &[ParamContext]) -> Self {
        Self {
            offered: offered
                .iter()
                .map(|p| (p.address.clone(), p.limits.clone()))
                .collect(),
            deny: DenyList::new(),
        }
    }
}

impl AdvicePolicy for OfferedPolicy {
    fn allowed(&self, addr: &ParamAddress, source: Source) -> Option<ParamLimits> {
        if source != Source::Llm {
            return None;
        }
        self.offered
            .iter()
            .find(|(a, _)| a == addr)
            .map(|(_, l)| l.clone())
    }

    fn is_denied(&self, policy_name: &str) -> bool {
        self.deny.denies(policy_name).is_some()
    }
}

/// The most recent changes (journal entries of kind `change`, any source) made while the agent
/// had windows to measure them with: the health of the last window before each change against
/// that of the latest window after it, as the guard reads it (`scope_of`: [`Scope::of`]). A
/// change with no window after it yet, or in a namespace one of the two did not see, has no
/// `effect`.
fn change_outcomes(
    entries: &[Entry],
    history: &[WindowHealth],
    scope_of: impl Fn(&ParamAddress) -> Scope,
) -> Vec<ChangeOutcome> {
    let reverts = crate::journal::reverted_by(entries);
    let mut out: Vec<ChangeOutcome> = entries
        .iter()
        .filter(|e| e.kind == "change")
        .filter_map(|e| {
            let before = history.iter().rev().find(|w| w.end_ms <= e.ts_ms)?;
            let after = history.last().filter(|w| w.end_ms > e.ts_ms);
            let reverted = reverts.contains_key(&e.id);
            let scope = scope_of(&e.address);
            let effect = after
                .and_then(|after| {
                    let mut here = before.seen_by(scope)?.clone();
                    let mut later = after.seen_by(scope)?.clone();
                    // Over the services busy before the change ([`ServiceLoads`]).
                    let signal = HealthSignal::RequestP99;
                    here.0.remove(&signal);
                    later.0.remove(&signal);
                    let services = &before.services;
                    if let Some((then, now)) =
                        services.request_p99_here_and_in(&after.services, scope)
                    {
                        here.0.insert(signal, then);
                        later.0.insert(signal, now);
                    }
                    Some((here, later))
                })
                .map(|(before, after)| {
                    before
                        .0
                        .iter()
                        .filter_map(|(signal, b)| {
                            let a = after.0.get(signal)?;
                            Some(MetricChange {
                                metric: signal.to_string(),
                                before: round1(*b),
                                after: round1(*a),
                            })
                        })
                        .collect()
                })
                .unwrap_or_default();
            Some(ChangeOutcome {
                parameter: e.address.clone(),
                from: e.before.clone()?,
                to: e.after.clone(),
                source: e.source,
                window_index: before.index,
                outcome: if reverted {
                    "reverted".into()
                } else {
                    e.status.clone()
                },
                effect,
            })
        })
        .collect();
    let skip = out.len().saturating_sub(MAX_CHANGES);
    out.drain(..skip);
    out
}

fn round1(v: f64) -> f64 {
    (v * 10.0).round() / 10.0
}

#[cfg(test)]
mod tests;
