//! The LLM advisor: any OpenAI-compatible chat completions endpoint (OpenAI, vLLM, Ollama,
//! llama.cpp). docs/llm.md describes configuration, prompt, validation, faults and the `llm`
//! event.
//!
//! The agent loop:
//! 1. at start, [`LlmAdvisor::from_config`] (off, with one log line, without key or endpoint);
//! 2. after each window, [`LlmAdvisor::observe_window`], then [`LlmAdvisor::due`] with whether a
//!    notable event fired;
//! 3. when due, [`offered_params`] from the policy and the current values, then
//!    [`LlmAdvisor::consult`] (in a spawned task: it is `'static` and bounded by the timeout);
//! 4. emit the returned [`Consultation`] as an `llm` event, and hand its `recommendations` to the
//!    policy (auto ones to apply, the rest to pending approval), and its `suggestions` (values
//!    none) to the approval desk as advice, which reports them and never proposes them.
pub mod client;
pub mod config;
pub mod parse;
pub mod prompt;
pub mod validate;

use std::{
    collections::VecDeque,
    sync::Arc,
    time::{Duration, Instant},
};

use serde::Serialize;

pub use client::{BreakerState, LlmClient, Outcome, Usage};
pub use config::{ApiKey, LlmConfig, LlmConfigError, ResolvedLlm};
pub use prompt::{
    build_prompt, offered_params, ChangeOutcome, MetricChange, ParamContext, Prompt, WindowSummary,
};
pub use validate::{DropKind, Dropped, Validated};

use crate::{
    advise::{
        limits::AdvicePolicy,
        recommendation::{Recommendation, WindowRef},
    },
    window::Window,
};

/// When to consult: every `every` windows, and earlier for a notable event, but never within
/// `early_min` windows of the previous consultation.
#[derive(Debug, Clone)]
pub struct Schedule {
    every: u64,
    early_min: u64,
    /// No consultation within this long of the previous one's start, whatever the window count
    /// says: with short windows, `every` alone could ask a paid API every few seconds.
    min_interval: Duration,
    last: Option<(u64, Instant)>,
    seen: u64,
}

impl Schedule {
    pub fn new(every: u64, early_min: u64, min_interval: Duration) -> Self {
        Self {
            every: every.max(1),
            early_min,
            min_interval,
            last: None,
            seen: 0,
        }
    }

    /// Called once per finished window, with its index and the time it is called (monotonic);
    /// `notable` when something happened that deserves advice sooner (a listener dropping
    /// connections). Returns whether to consult now, and if so counts it as done. A consultation
    /// the window count makes due within `min_interval` of the previous one waits for the first
    /// window after it.
    pub fn due(&mut self, index: u64, notable: bool, now: Instant) -> bool {
        self.seen += 1;
        let (since, waited) = match self.last {
            Some((last, at)) => (
                index.saturating_sub(last),
                now.saturating_duration_since(at) + floor_slack(self.min_interval)
                    >= self.min_interval,
            ),
            None => (self.seen, true),
        };
        let due = waited && (since >= self.every || (notable && since >= self.early_min));
        if due {
            self.last = Some((index, now));
        }
        due
    }
}

/// How far short of `min_interval` still counts as it: windows are processed a few milliseconds
/// off their schedule, so with `min_interval` a whole number of windows the interval measured
/// between two of them falls short by that much about half the time, and the consultation waited
/// a window more (s45 storyD: every 2 windows with `every_windows 1` and `min_interval` one
/// window, the defaults' 1m at 60 s windows among them). A tenth of the floor, at most a second:
/// the floor still keeps a paid API from being asked every few seconds.
pub fn floor_slack(min_interval: Duration) -> Duration {
    (min_interval / 10).min(Duration::from_secs(1))
}

/// What one consultation did: the `llm` event, plus the accepted recommendations.
#[derive(Debug, Clone, Serialize)]
pub struct Consultation {
    pub window: WindowRef,
    pub model: String,
    pub outcome: Outcome,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_status: Option<u16>,
    /// What went wrong, without the key or any header.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub latency_ms: u64,
    pub attempts: u32,
    pub retry_wait_ms: u64,
    pub structured_output: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finish_reason: Option<String>,
    pub prompt_tokens: Option<u64>,
    pub completion_tokens: Option<u64>,
    pub total_tokens: Option<u64>,
    /// Parameters offered to the model.
    pub offered: usize,
    /// Accepted recommendations the policy lets apply now.
    pub accepted_auto: usize,
    /// Accepted recommendations that wait for approval (or are recorded only).
    pub accepted_pending: usize,
    pub accepted_ids: Vec<String>,
    /// Items dropped by validation, each with why.
    pub dropped: Vec<Dropped>,
    /// The ids of the kept suggestions: parameters outside those offered that the model thinks
    /// the operator should look at, each reported as a `recommendation` without a value.
    pub suggested_ids: Vec<String>,
    /// Suggestions dropped by validation, each with why.
    pub dropped_suggestions: Vec<Dropped>,
    pub breaker: BreakerState,
    /// The accepted recommendations (emitted as their own events, not in this one).
    #[serde(skip)]
    pub recommendations: Vec<Recommendation>,
    /// The kept suggestions, as recommendations without a value (emitted as their own events).
    #[serde(skip)]
    pub suggestions: Vec<Recommendation>,
}

impl Consultation {
    /// A consultation about `window` that has not asked yet: outcome `ok`, nothing accepted.
    fn blank(window: WindowRef, model: String, offered: usize, breaker: BreakerState) -> Self {
        Self {
            window,
            model,
            outcome: Outcome::Ok,
            http_status: None,
            error: None,
            latency_ms: 0,
            attempts: 0,
            retry_wait_ms: 0,
            structured_output: false,
            finish_reason: None,
            prompt_tokens: None,
            completion_tokens: None,
            total_tokens: None,
            offered,
            accepted_auto: 0,
            accepted_pending: 0,
            accepted_ids: Vec::new(),
            dropped: Vec::new(),
            suggested_ids: Vec::new(),
            dropped_suggestions: Vec::new(),
            breaker,
            recommendations: Vec::new(),
            suggestions: Vec::new(),
        }
    }

    /// Test hook: a consultation that ended with `outcome`, the breaker in `breaker`.
    #[cfg(test)]
    pub(crate) fn ended(outcome: Outcome, breaker: BreakerState) -> Self {
        let window = WindowRef {
            index: 1,
            end: "2026-12-05T00:00:00Z".into(),
        };
        let mut out = Self::blank(window, "m".into(), 1, breaker);
        out.outcome = outcome;
        out
    }

    /// The `llm` event of a consultation whose task ended without a result (it panicked):
    /// outcome `internal_error`, with `why` (the key replaced, cut to 300 characters) as its
    /// error. Nothing of it is taken.
    pub fn task_failed(
        advisor: &LlmAdvisor,
        window: WindowRef,
        offered: usize,
        latency: Duration,
        why: &str,
    ) -> Self {
        let client = advisor.client();
        let why = advisor.shown_task_error(why);
        let mut out = Self::blank(
            window,
            client.config().config.model.clone(),
            offered,
            client.breaker_state(),
        );
        out.outcome = Outcome::InternalError;
        out.error = Some(format!("the consultation's task ended abnormally: {why}"));
        out.latency_ms = latency.as_millis() as u64;
        out
    }

    pub fn auto(&self) -> impl Iterator<Item = &Recommendation> {
        self.recommendations.iter().filter(|r| r.can_auto_apply)
    }

    pub fn pending(&self) -> impl Iterator<Item = &Recommendation> {
        self.recommendations.iter().filter(|r| !r.can_auto_apply)
    }
}

/// The LLM advisor: its client, schedule and the recent windows it summarises.
#[derive(Debug)]
pub struct LlmAdvisor {
    client: LlmClient,
    schedule: Schedule,
    history: VecDeque<WindowSummary>,
    keep: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum LlmSetupError {
    #[error(transparent)]
    Config(#[from] LlmConfigError),
    #[error(transparent)]
    Client(#[from] client::ClientBuildError),
}

impl LlmAdvisor {
    /// The advisor, or `None` (logged once) when no key or endpoint is configured.
    pub fn from_config(cfg: &LlmConfig) -> Result<Option<Self>, LlmSetupError> {
        match cfg.resolve()? {
            Some(r) => Ok(Some(Self::new(r)?)),
            None => Ok(None),
        }
    }

    pub fn new(resolved: ResolvedLlm) -> Result<Self, LlmSetupError> {
        let c = &resolved.config;
        let schedule = Schedule::new(c.every_windows, c.early_min_windows, c.min_interval);
        let keep = c.prompt_windows;
        Ok(Self {
            client: LlmClient::new(resolved)?,
            schedule,
            history: VecDeque::with_capacity(keep),
            keep,
        })
    }

    pub fn client(&self) -> &LlmClient {
        &self.client
    }

    /// What a consultation's task that ended abnormally said (a panic's message), as the `llm`
    /// event and the log show it: the key replaced, control characters made spaces and invisible
    /// format characters removed, at most 300
    /// characters. A panic's message may hold anything the task held, the key included.
    pub fn shown_task_error(&self, why: &str) -> String {
        validate::plain(&self.client.redact(why))
            .chars()
            .take(300)
            .collect()
    }

    /// Keeps a compact summary of a finished window for the next prompts.
    pub fn observe_window(&mut self, index: u64, window: &Window) {
        if self.history.len() == self.keep {
            self.history.pop_front();
        }
        self.history
            .push_back(WindowSummary::from_window(index, window));
    }

    /// Whether to consult after window `index` (see [`Schedule::due`]).
    pub fn due(&mut self, index: u64, notable: bool, now: Instant) -> bool {
        self.schedule.due(index, notable, now)
    }

    /// The recent window summaries, oldest first.
    pub fn history(&self) -> Vec<WindowSummary> {
        self.history.iter().cloned().collect()
    }

    /// The latest window summarised, which a consultation now would be about.
    pub fn latest_window(&self) -> WindowRef {
        self.history.back().map_or(
            WindowRef {
                index: 0,
                end: String::new(),
            },
            |w| WindowRef {
                index: w.index,
                end: w.end.clone(),
            },
        )
    }

    /// One consultation about the latest window, as a `'static` future to spawn.
    pub fn consult(
        &self,
        offered: Vec<ParamContext>,
        changes: Vec<ChangeOutcome>,
        policy: Arc<dyn AdvicePolicy>,
    ) -> impl std::future::Future<Output = Consultation> + Send + 'static {
        let client = self.client.clone();
        let windows = self.history();
        let window = self.latest_window();
        async move { consult(&client, &offered, &windows, &changes, &*policy, window).await }
    }
}

/// One consultation: prompt, request, tolerant parse, strict validation. Never panics; returns
/// within the client's timeout.
pub async fn consult(
    client: &LlmClient,
    offered: &[ParamContext],
    windows: &[WindowSummary],
    changes: &[ChangeOutcome],
    policy: &dyn AdvicePolicy,
    window: WindowRef,
) -> Consultation {
    let started = Instant::now();
    let mut out = Consultation::blank(
        window,
        client.config().config.model.clone(),
        offered.len(),
        client.breaker_state(),
    );
    if offered.is_empty() {
        out.outcome = Outcome::NoParameters;
        out.error = Some("the policy lets the llm drive no parameter".into());
        return out;
    }
    let prompt = build_prompt(offered, windows, changes);
    let schema = prompt::response_schema(offered);
    let c = client.complete(&prompt, Some(&schema)).await;
    out.outcome = c.outcome;
    out.http_status = c.http_status;
    out.error = c.error;
    out.attempts = c.attempts;
    out.retry_wait_ms = c.retry_wait.as_millis() as u64;
    out.structured_output = c.structured_output;
    out.finish_reason = c.finish_reason;
    out.prompt_tokens = c.usage.prompt_tokens;
    out.completion_tokens = c.usage.completion_tokens;
    out.total_tokens = c.usage.total_tokens;
    out.breaker = client.breaker_state();
    if let (Outcome::Ok, Some(content)) = (c.outcome, c.content) {
        take_reply(&mut out, &content, offered, policy, &|text| {
            client.redact(text)
        });
    }
    out.latency_ms = started.elapsed().as_millis() as u64;
    log_outcome(&out);
    out
}

/// One log line per consultation. The outcome by the name the `llm` event and docs/llm.md give
/// it (`invalid_body`): Rust's own (`InvalidBody`) is found by no grep for the documented one.
fn log_outcome(out: &Consultation) {
    let outcome = out.outcome.name();
    match out.outcome {
        Outcome::Ok => tracing::info!(
            accepted = out.recommendations.len(),
            dropped = out.dropped.len(),
            suggested = out.suggestions.len(),
            latency_ms = out.latency_ms,
            "LLM consulted"
        ),
        Outcome::NoParameters | Outcome::CircuitOpen | Outcome::Backoff => tracing::debug!(
            outcome = %outcome,
            "LLM consultation skipped"
        ),
        _ => tracing::warn!(
            outcome = %outcome,
            error = out.error.as_deref().unwrap_or(""),
            "LLM consultation failed"
        ),
    }
}

/// Every string in `value`, field names included, through `redact`.
fn redact_json(value: &mut serde_json::Value, redact: &dyn Fn(&str) -> String) {
    match value {
        serde_json::Value::String(s) => *s = redact(s),
        serde_json::Value::Array(items) => items.iter_mut().for_each(|v| redact_json(v, redact)),
        serde_json::Value::Object(fields) => {
            *fields = std::mem::take(fields)
                .into_iter()
                .map(|(name, mut v)| {
                    redact_json(&mut v, redact);
                    (redact(&name), v)
                })
                .collect();
        }
        serde_json::Value::Number(_) | serde_json::Value::Bool(_) | serde_json::Value::Null => {}
    }
}

/// Where a suggestion's current value is read: the agent's own namespace's sysctls.
const PROC_SYS: &str = "/proc/sys";

/// The reply's advice into `out`: parsed, validated, and counted. This runs on the agent's thread
/// once the reply is in; its cost is bounded by the size of `content`, which the client keeps
/// within [`parse::MAX_CONTENT`], and its output by [`validate::MAX_ITEMS`] and
/// [`validate::MAX_SUGGESTIONS`] (each kept suggestion reads one file under /proc/sys).
fn take_reply(
    out: &mut Consultation,
    content: &str,
    offered: &[ParamContext],
    policy: &dyn AdvicePolicy,
    redact: &dyn Fn(&str) -> String,
) {
    match parse::extract_items(content) {
        Ok(mut advice) => {
            // The key redacted from what the advice holds once parsed, the JSON escapes of the
            // model's strings (`\u0073k-...`) decoded: every string, and every field name, which a
            // dropped item's echo shows.
            advice
                .items
                .iter_mut()
                .for_each(|item| redact_json(item, redact));
            if let Some(suggestions) = &mut advice.suggestions {
                redact_json(suggestions, redact);
            }
            let mut v = validate::validate(advice.items, offered, policy, &out.window);
            if !advice.found.may_auto_apply() && v.auto().next().is_some() {
                tracing::info!(
                    found = ?advice.found,
                    "LLM advice was not the whole reply or its only fenced block: \
                     held for approval"
                );
                v.hold_for_approval();
            }
            out.accepted_auto = v.auto().count();
            out.accepted_pending = v.pending().count();
            out.accepted_ids = v.accepted.iter().map(|r| r.id.clone()).collect();
            out.dropped = v.dropped;
            out.recommendations = v.accepted;
            let s = validate::suggestions(advice.suggestions, offered, policy, &out.window, &|a| {
                validate::read_sysctl(std::path::Path::new(PROC_SYS), a)
            });
            out.suggested_ids = s.kept.iter().map(|r| r.id.clone()).collect();
            out.dropped_suggestions = s.dropped;
            out.suggestions = s.kept;
        }
        Err(e) => {
            out.outcome = Outcome::ParseError;
            out.error = Some(redact(&e.to_string()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        actuate::param::{ParamAddress, Value},
        advise::limits::{Mode, ParamLimits, StaticPolicy},
        advise::recommendation::Source,
    };
    use validate::MAX_ITEMS;

    /// Defect (s32, by hand): the failure's log line said `outcome=InvalidBody`, where the event
    /// and docs/llm.md say `invalid_body`. Every outcome logs the event's name.
    #[test]
    fn the_log_names_the_outcome_as_the_event_does() {
        let mut c = empty_consultation();
        c.outcome = Outcome::InvalidBody;
        c.error = Some("not a chat completion".into());
        let ((), logged) = crate::logging::logged(|| log_outcome(&c));
        assert!(
            logged.contains(
                "LLM consultation failed outcome=invalid_body error=\"not a chat completion\""
            ),
            "{logged}"
        );
        for outcome in [
            Outcome::Ok,
            Outcome::Timeout,
            Outcome::Connect,
            Outcome::HttpStatus,
            Outcome::RateLimited,
            Outcome::Backoff,
            Outcome::CircuitOpen,
            Outcome::NoParameters,
            Outcome::InvalidBody,
            Outcome::EmptyChoices,
            Outcome::Refusal,
            Outcome::Truncated,
            Outcome::ParseError,
            Outcome::InternalError,
        ] {
            assert_eq!(
                serde_json::to_value(outcome).unwrap(),
                outcome.name(),
                "{outcome:?}"
            );
        }
    }

    fn empty_consultation() -> Consultation {
        Consultation {
            window: WindowRef {
                index: 1,
                end: "t".into(),
            },
            model: "m".into(),
            outcome: Outcome::Ok,
            http_status: Some(200),
            error: None,
            latency_ms: 0,
            attempts: 1,
            retry_wait_ms: 0,
            structured_output: true,
            finish_reason: Some("stop".into()),
            prompt_tokens: None,
            completion_tokens: None,
            total_tokens: None,
            offered: 1,
            accepted_auto: 0,
            accepted_pending: 0,
            accepted_ids: Vec::new(),
            dropped: Vec::new(),
            suggested_ids: Vec::new(),
            dropped_suggestions: Vec::new(),
            breaker: BreakerState::Closed,
            recommendations: Vec::new(),
            suggestions: Vec::new(),
        }
    }

    #[test]
    fn a_hostile_reply_makes_a_small_event() {
        let (offered, policy) = somaxconn_auto();
        // As long as the client lets through: 32 items that each echo as much as they can
        // (control characters, which JSON escapes to 6 bytes each), then tens of thousands more.
        let junk = "\\u0001".repeat(150);
        let item = format!(r#"{{"parameter":"{junk}","value":"{junk}"}}"#);
        let mut content = format!("[{}", vec![item; MAX_ITEMS].join(","));
        while content.len() < parse::MAX_CONTENT - 4 {
            content.push_str(",1");
        }
        content.push(']');
        let mut out = empty_consultation();
        take_reply(&mut out, &content, &offered, &policy, &|t| t.to_string());
        assert_eq!(out.outcome, Outcome::Ok, "{:?}", out.error);
        assert_eq!(out.dropped.len(), MAX_ITEMS + 1);
        let event = serde_json::to_string(&out).unwrap();
        assert!(event.len() < 128 << 10, "{} bytes", event.len());
    }

    /// A top-level object that repeats a key as long as the reply allows is quoted in the
    /// event's `error` cut short, as a dropped item's key is.
    #[test]
    fn a_long_repeated_key_makes_a_small_error() {
        let key = "k".repeat(parse::MAX_CONTENT / 3);
        let mut out = empty_consultation();
        let (offered, policy) = somaxconn_auto();
        take_reply(
            &mut out,
            &format!(r#"{{"{key}": 1, "{key}": 2}}"#),
            &offered,
            &policy,
            &|t| t.to_string(),
        );
        assert_eq!(out.outcome, Outcome::ParseError);
        assert_eq!(
            out.error.as_deref(),
            Some(
                format!(
                    "the reply's JSON has an object that repeats the key \"{}…\"; which one counts \
                     is unclear",
                    "k".repeat(120)
                )
                .as_str()
            )
        );
    }

    /// s48 storyO O-1: the client redacts the key from the reply's content as it comes, but a
    /// JSON escape in the model's strings (`\u0073k-...`) is decoded by parsing, and the key
    /// came back whole in reasons, dropped items' echoes and parse errors.
    #[test]
    fn the_key_is_redacted_from_the_advice_as_parsed() {
        let key = crate::advise::llm::config::ApiKey::new("sk-QASECRET-0123");
        let redact = |t: &str| key.redact(t);
        let (offered, policy) = somaxconn_auto();
        let escaped = r"\u0073k-QASECRET-0123";
        let zero_width = r"sk-QA\u200bSECRET-0123";
        let content = format!(
            r#"{{"recommendations": [
                {{"parameter": "net.core.somaxconn", "value": 8192, "reason": "a {escaped} b {zero_width} c"}},
                {{"parameter": "net.{escaped}", "value": "{escaped}", "{escaped}": 1}}
            ], "suggestions": [{{"parameter": "net.core.{escaped}", "reason": "{escaped}"}}]}}"#
        );
        let mut out = empty_consultation();
        take_reply(&mut out, &content, &offered, &policy, &redact);
        assert_eq!(out.outcome, Outcome::Ok, "{:?}", out.error);
        assert_eq!(out.recommendations.len(), 1);
        assert_eq!(out.recommendations[0].reason, "a [redacted] b [redacted] c");
        let event = serde_json::to_string(&out).unwrap();
        assert!(!event.contains("QASECRET"), "{event}");
        assert!(event.contains("net.[redacted]"), "{event}");
        assert_eq!(out.dropped.len(), 1, "{event}");
        assert_eq!(out.dropped_suggestions.len(), 1, "{event}");
        // A backslash before it (s64 story CO-3): valid JSON, parsed, and redacted.
        let mut out = empty_consultation();
        let content = format!(
            r#"{{"recommendations": [{{"parameter": "net.core.somaxconn", "value": 8192,
                "reason": "path C:\{escaped} ok"}}]}}"#
        );
        take_reply(&mut out, &content, &offered, &policy, &redact);
        assert_eq!(out.outcome, Outcome::Ok, "{:?}", out.error);
        assert_eq!(out.recommendations[0].reason, "path C:[redacted] ok");
        let mut out = empty_consultation();
        let repeated = format!(r#"{{"{escaped}": 1, "{escaped}": 2}}"#);
        take_reply(&mut out, &repeated, &offered, &policy, &redact);
        assert_eq!(out.outcome, Outcome::ParseError);
        let error = out.error.unwrap();
        assert!(error.contains("\"[redacted]\""), "{error}");
    }

    fn somaxconn_auto() -> (Vec<ParamContext>, StaticPolicy) {
        let addr: ParamAddress = "net.core.somaxconn".parse().unwrap();
        let policy = StaticPolicy::new().with(
            "net.core.somaxconn",
            &[Source::Llm],
            ParamLimits::new(Mode::Auto).bounds(128, 65535),
        );
        let offered = vec![ParamContext {
            address: addr.clone(),
            current: Value::Int(4096),
            limits: policy.allowed(&addr, Source::Llm).unwrap(),
            netns_cookie: None,
            netns: None,
            held: vec![],
        }];
        (offered, policy)
    }

    fn took(content: &str) -> Consultation {
        let (offered, policy) = somaxconn_auto();
        let mut out = empty_consultation();
        take_reply(&mut out, content, &offered, &policy, &|t| t.to_string());
        out
    }

    /// What the model mentions, nests or writes around its answer is never applied without a
    /// person; its answer, as the whole reply or its only fence, is.
    #[test]
    fn only_the_models_answer_is_applied() {
        let item = |v: u32| {
            format!(
                r#"{{"parameter": "net.core.somaxconn", "value": {v}, "can_auto_apply": true, "reason": "x"}}"#
            )
        };
        // A value considered in prose, then an explicit empty answer.
        let c = took(&format!(
            "I considered {} but the queue never filled, so nothing needs to change. \
             {{\"recommendations\": []}}",
            item(8192)
        ));
        assert_eq!(c.outcome, Outcome::Ok);
        assert!(c.recommendations.is_empty(), "{:?}", c.recommendations);
        // Broken JSON whose item carries a rejected alternative: nothing is taken.
        let c = took(&format!(
            r#"{{"recommendations": [{{"parameter": "net.core.somaxconn", "value": 4096, "reason": "keep "as is"", "rejected_alternative": {}}}]}}"#,
            item(65535)
        ));
        assert_eq!(c.outcome, Outcome::ParseError);
        assert!(c.recommendations.is_empty());
        // A `</think>` in the answer's note is no end of thinking: the alternative the model
        // rejected after it is not taken.
        let c = took(
            r#"{"recommendations": [], "note": "nginx </think> fine", "rejected": [{"parameter":"net.core.somaxconn","value":65535,"can_auto_apply":true}]}"#,
        );
        assert_eq!(c.outcome, Outcome::Ok);
        assert!(c.recommendations.is_empty(), "{:?}", c.recommendations);
        // Advice in prose: accepted, for approval.
        let c = took(&format!(
            "Here is my advice: [{}] Hope it helps.",
            item(8192)
        ));
        assert_eq!((c.accepted_auto, c.accepted_pending), (0, 1));
        assert!(!c.recommendations[0].can_auto_apply);
        // The same as the whole reply, or in its only fence: automatic.
        for content in [
            format!("[{}]", item(8192)),
            format!("```json\n[{}]\n```", item(8192)),
        ] {
            let c = took(&content);
            assert_eq!((c.accepted_auto, c.accepted_pending), (1, 0), "{content}");
            assert!(c.recommendations[0].can_auto_apply);
        }
    }

    /// A reply's suggestions are taken beside its recommendations, and broken ones cost nothing
    /// else: the recommendation in the same answer is accepted, automatic, all the same. A kept
    /// suggestion's current value is this process's /proc/sys value. Mutations that fail it:
    /// `validate::suggestions` not called in `take_reply`; its result not kept in `out`.
    #[test]
    fn suggestions_are_taken_beside_the_recommendations() {
        if !std::path::Path::new("/proc/sys/net/ipv4/tcp_fin_timeout").is_file() {
            kpo_test_skip::skip("no /proc/sys/net/ipv4/tcp_fin_timeout here to suggest");
            return;
        }
        let item = r#"{"parameter": "net.core.somaxconn", "value": 8192, "can_auto_apply": true, "reason": "x"}"#;
        let c = took(&format!(
            r#"{{"recommendations": [{item}], "suggestions": [
                {{"parameter": "net.ipv4.tcp_fin_timeout", "reason": "1200 sockets in FIN_WAIT2"}},
                {{"parameter": "kernel.core_pattern", "reason": "x"}},
                {{"reason": "no name"}}]}}"#
        ));
        assert_eq!(c.outcome, Outcome::Ok, "{:?}", c.error);
        assert_eq!((c.accepted_auto, c.dropped.len()), (1, 0));
        assert_eq!(c.suggestions.len(), 1);
        let s = &c.suggestions[0];
        assert_eq!(s.parameter.to_string(), "net.ipv4.tcp_fin_timeout");
        assert_eq!(s.recommended_value, None);
        assert!(!s.can_auto_apply);
        let now = std::fs::read_to_string("/proc/sys/net/ipv4/tcp_fin_timeout")
            .ok()
            .map(|t| Value::parse(&t));
        assert_eq!(s.current_value, now);
        assert_eq!(c.suggested_ids, std::slice::from_ref(&s.id));
        let kinds: Vec<DropKind> = c.dropped_suggestions.iter().map(|d| d.kind).collect();
        assert_eq!(kinds, [DropKind::DenyListed, DropKind::Malformed]);
        let event = serde_json::to_value(&c).unwrap();
        assert_eq!(event["suggested_ids"], serde_json::json!([s.id]));
        assert_eq!(event["dropped_suggestions"][0]["kind"], "deny_listed");
        // Not a list: one dropped entry, the recommendation still automatic.
        let c = took(&format!(
            r#"{{"recommendations": [{item}], "suggestions": {{"parameter": "vm.dirty_ratio"}}}}"#
        ));
        assert_eq!((c.accepted_auto, c.suggestions.len()), (1, 0));
        assert_eq!(c.dropped_suggestions.len(), 1);
        assert_eq!(c.dropped_suggestions[0].kind, DropKind::Malformed);
    }

    /// The same change given twice, once as not automatic, waits for approval: the model can
    /// keep a change for a person whichever of its items says so.
    #[test]
    fn a_repeated_change_is_automatic_only_if_every_item_says_so() {
        let item = |auto: bool| {
            format!(
                r#"{{"parameter": "net.core.somaxconn", "value": 8192, "can_auto_apply": {auto}, "reason": "x"}}"#
            )
        };
        for (first, second, auto) in [
            (true, false, false),
            (false, true, false),
            (true, true, true),
        ] {
            let c = took(&format!("[{}, {}]", item(first), item(second)));
            assert_eq!(c.outcome, Outcome::Ok);
            assert_eq!(c.recommendations.len(), 1, "{first} {second}");
            assert_eq!(
                c.recommendations[0].can_auto_apply, auto,
                "{first} {second}"
            );
            assert_eq!(
                (c.accepted_auto, c.accepted_pending),
                (usize::from(auto), usize::from(!auto)),
                "{first} {second}"
            );
            assert_eq!(c.dropped.len(), 1);
            assert_eq!(c.dropped[0].kind, DropKind::Duplicate);
        }
    }

    /// One field in two spellings is the same ambiguity as a repeated key: the item is dropped as
    /// malformed, whichever spelling would have been looked up first.
    #[test]
    fn a_field_in_two_spellings_drops_the_item() {
        for content in [
            r#"[{"parameter":"net.core.somaxconn","value":8192,"new_value":65535,"can_auto_apply":true}]"#,
            r#"[{"parameter":"net.core.somaxconn","value":8192,"can_auto_apply":false,"CanAutoApply":true}]"#,
            r#"[{"parameter":"net.core.somaxconn","Parameter":"net.core.netdev_max_backlog","value":8192}]"#,
        ] {
            let c = took(content);
            assert!(c.recommendations.is_empty(), "{content}");
            assert_eq!(c.dropped.len(), 1, "{content}");
            assert_eq!(c.dropped[0].kind, DropKind::Malformed, "{content}");
            assert!(
                c.dropped[0].detail.contains("which one counts is unclear"),
                "{}",
                c.dropped[0].detail
            );
        }
        // One spelling, any of them, is still read.
        let c =
            took(r#"[{"parameter":"net.core.somaxconn","new_value":8192,"can_auto_apply":true}]"#);
        assert_eq!(c.accepted_auto, 1);
    }

    /// A key the model wrote twice is not settled silently by the last one: the item is dropped
    /// as malformed, and a top-level object that repeats one is no answer.
    #[test]
    fn a_repeated_key_is_never_read_last_wins() {
        let c = took(
            r#"[{"parameter":"net.core.somaxconn","value":8192,"can_auto_apply":false,"reason":"x","can_auto_apply":true}]"#,
        );
        assert_eq!(c.outcome, Outcome::Ok);
        assert!(c.recommendations.is_empty(), "{:?}", c.recommendations);
        assert_eq!(c.dropped.len(), 1);
        assert_eq!(c.dropped[0].kind, DropKind::Malformed);
        assert_eq!(
            c.dropped[0].parameter.as_deref(),
            Some("net.core.somaxconn")
        );
        assert!(
            c.dropped[0]
                .detail
                .contains("repeats the key \"can_auto_apply\""),
            "{}",
            c.dropped[0].detail
        );
        // The other items of the list still count.
        let c = took(
            r#"[{"parameter":"net.core.somaxconn","value":8192,"value":9000,"can_auto_apply":true},
                {"parameter":"net.core.somaxconn","value":8192,"can_auto_apply":true}]"#,
        );
        assert_eq!((c.accepted_auto, c.dropped.len()), (1, 1));
        let item =
            r#"{"parameter":"net.core.somaxconn","value":8192,"can_auto_apply":true,"reason":"x"}"#;
        for reply in [
            format!(r#"{{"recommendations":[{item}],"recommendations":[]}}"#),
            format!(r#"{{"recommendations":[],"recommendations":[{item}]}}"#),
            format!("Here: {{\"recommendations\":[{item}],\"recommendations\":[]}}"),
        ] {
            let c = took(&reply);
            assert_eq!(c.outcome, Outcome::ParseError, "{reply}");
            assert!(c.recommendations.is_empty());
            let error = c.error.unwrap();
            assert!(
                error.contains("repeats the key \"recommendations\""),
                "{error}"
            );
        }
    }

    #[test]
    fn schedule_every_n_and_early_rate_limited() {
        // Windows a second apart, no time floor: the window counts alone decide.
        let t0 = Instant::now();
        let at = |i: u64| t0 + Duration::from_secs(i);
        let mut s = Schedule::new(10, 3, Duration::ZERO);
        let due: Vec<u64> = (0..25).filter(|&i| s.due(i, false, at(i))).collect();
        assert_eq!(due, [9, 19]);
        let mut s = Schedule::new(10, 3, Duration::ZERO);
        // Notable from window 0: the first early consultation after 3 windows, then every 3.
        let due: Vec<u64> = (0..10).filter(|&i| s.due(i, true, at(i))).collect();
        assert_eq!(due, [2, 5, 8]);
        let mut s = Schedule::new(10, 3, Duration::ZERO);
        let notable = [4, 5, 6, 7];
        let due: Vec<u64> = (0..20)
            .filter(|&i| s.due(i, notable.contains(&i), at(i)))
            .collect();
        assert_eq!(due, [4, 7, 17]);
    }

    #[test]
    fn schedule_keeps_the_time_floor_between_consultations() {
        let t0 = Instant::now();
        let at = |i: u64| t0 + Duration::from_secs(i);
        // One-second windows, every 2, at least 5 s apart: the count is due at 1, 3, 5, ... but
        // each waits for the first window 5 s after the previous consultation.
        let mut s = Schedule::new(2, 1, Duration::from_secs(5));
        let due: Vec<u64> = (0..20).filter(|&i| s.due(i, false, at(i))).collect();
        assert_eq!(due, [1, 6, 11, 16]);
        // Notable windows cannot bring one within the floor either.
        let mut s = Schedule::new(10, 1, Duration::from_secs(5));
        let due: Vec<u64> = (0..12).filter(|&i| s.due(i, true, at(i))).collect();
        assert_eq!(due, [0, 5, 10]);
        // Windows longer than the floor: the floor changes nothing.
        let mut s = Schedule::new(3, 1, Duration::from_secs(5));
        let due: Vec<u64> = (0..10)
            .filter(|&i| s.due(i, false, t0 + Duration::from_secs(60 * i)))
            .collect();
        assert_eq!(due, [2, 5, 8]);
        // A floor of one window, the windows processed a few milliseconds off their schedule
        // (s45 storyD): every window, not every other one.
        let mut s = Schedule::new(1, 1, Duration::from_secs(5));
        let jitter = [30, 12, 41, 5, 28, 9];
        let due: Vec<u64> = (0..6)
            .filter(|&i| {
                let at =
                    t0 + Duration::from_secs(5 * i) + Duration::from_millis(jitter[i as usize]);
                s.due(i, false, at)
            })
            .collect();
        assert_eq!(due, [0, 1, 2, 3, 4, 5]);
        // Within a tenth of the floor only, at most a second: 4 s after one at a 5 s floor waits.
        let mut s = Schedule::new(1, 1, Duration::from_secs(5));
        let due: Vec<u64> = (0..4)
            .filter(|&i| s.due(i, false, t0 + Duration::from_secs(4 * i)))
            .collect();
        assert_eq!(due, [0, 2]);
        let mut s = Schedule::new(1, 1, Duration::from_secs(60));
        assert!(s.due(0, false, t0));
        assert!(!s.due(1, false, t0 + Duration::from_millis(58_900)));
        assert!(s.due(2, false, t0 + Duration::from_millis(59_000)));
    }
}
