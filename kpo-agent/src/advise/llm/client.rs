//! The HTTP side: one chat completion against an OpenAI-compatible endpoint, bounded by the
//! configured timeout, with retries (honouring `Retry-After`), a circuit breaker, and a fallback
//! for servers that refuse `response_format`. It never panics and never returns the API key or
//! any header in an error.
use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

use super::{
    config::{ApiKey, ResolvedLlm, Secrets},
    parse::MAX_CONTENT,
    prompt::Prompt,
};

/// Longest reply body read. Its content must be shorter still: [`MAX_CONTENT`].
const MAX_BODY: usize = 4 << 20;
/// Longest excerpt of an error body kept in the outcome.
const MAX_ERROR_EXCERPT: usize = 300;
/// Longest wait a `Retry-After` can impose.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// How a consultation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// A reply was parsed (its items may still all have been dropped).
    Ok,
    /// The configured timeout passed before a reply.
    Timeout,
    /// The endpoint could not be reached (refused, DNS, TLS), or the connection broke mid-reply.
    Connect,
    /// An HTTP error status other than 429 (see `http_status`).
    HttpStatus,
    /// 429 until the attempts or the time ran out; later consultations wait for `Retry-After`.
    RateLimited,
    /// Skipped: an earlier `Retry-After` has not passed yet.
    Backoff,
    /// Skipped: the circuit breaker is open.
    CircuitOpen,
    /// Skipped: the policy lets the LLM drive no parameter.
    NoParameters,
    /// The body is not a chat completion (not JSON, the wrong shape, or an error in place of one).
    InvalidBody,
    /// The completion has no choice or no content.
    EmptyChoices,
    /// The model refused (`message.refusal`).
    Refusal,
    /// The reply was cut off (`finish_reason` "length"): nothing is taken from it.
    Truncated,
    /// The content holds no recognisable advice.
    ParseError,
    /// The consultation's task ended without a result (a panic in the agent's own code): nothing
    /// of it is taken. Set by the agent (`run/llm.rs`), never by the client.
    InternalError,
}

impl Outcome {
    /// The name the `llm` event gives it (its serde name), for the log.
    pub fn name(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Timeout => "timeout",
            Outcome::Connect => "connect",
            Outcome::HttpStatus => "http_status",
            Outcome::RateLimited => "rate_limited",
            Outcome::Backoff => "backoff",
            Outcome::CircuitOpen => "circuit_open",
            Outcome::NoParameters => "no_parameters",
            Outcome::InvalidBody => "invalid_body",
            Outcome::EmptyChoices => "empty_choices",
            Outcome::Refusal => "refusal",
            Outcome::Truncated => "truncated",
            Outcome::ParseError => "parse_error",
            Outcome::InternalError => "internal_error",
        }
    }

    /// Whether this counts against the circuit breaker: the endpoint failed, as opposed to the
    /// model answering badly.
    fn is_endpoint_failure(self) -> bool {
        matches!(
            self,
            Outcome::Timeout
                | Outcome::Connect
                | Outcome::HttpStatus
                | Outcome::RateLimited
                | Outcome::InvalidBody
        )
    }
}

/// The circuit breaker's state after a consultation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakerState {
    Closed,
    Open,
    HalfOpen,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub prompt_tokens: Option<u64>,
    pub completion_tokens: Option<u64>,
    pub total_tokens: Option<u64>,
}

/// What one chat completion call produced.
#[derive(Debug, Clone)]
pub struct Completion {
    /// The message content when `outcome` is `Ok` (parse errors are decided by the caller), as
    /// the server sent it: the key not redacted, which whatever shows of it must do.
    pub content: Option<String>,
    pub outcome: Outcome,
    pub http_status: Option<u16>,
    /// A short, key-free description of what went wrong.
    pub error: Option<String>,
    pub finish_reason: Option<String>,
    pub usage: Usage,
    pub latency: Duration,
    /// HTTP requests sent.
    pub attempts: u32,
    /// Time spent waiting between attempts (backoff or `Retry-After`).
    pub retry_wait: Duration,
    /// Whether the request that produced the reply asked for structured output.
    pub structured_output: bool,
}

impl Completion {
    fn empty() -> Self {
        Self {
            content: None,
            outcome: Outcome::Ok,
            http_status: None,
            error: None,
            finish_reason: None,
            usage: Usage::default(),
            latency: Duration::ZERO,
            attempts: 0,
            retry_wait: Duration::ZERO,
            structured_output: false,
        }
    }
}

/// `t + d`, or as late as can be told apart from "never" when that overflows. The configuration
/// bounds every duration added here, so this only guards against a panic.
fn later(t: Instant, d: Duration) -> Instant {
    const FAR: Duration = Duration::from_secs(100 * 365 * 24 * 3600);
    t.checked_add(d)
        .or_else(|| t.checked_add(d.min(FAR)))
        .unwrap_or(t)
}

#[derive(Debug)]
enum Breaker {
    Closed {
        failures: u32,
    },
    Open {
        until: Instant,
    },
    /// One trial is in flight since then. A trial whose future was dropped (cancelled) does
    /// not hold the breaker forever: after twice the timeout another may start.
    HalfOpen {
        since: Instant,
    },
}

/// How a request asks for JSON, from the most constrained down: a server that refuses one way
/// is asked the next. `json_object` with the schema beside it is how llama.cpp's servers take a
/// schema (llama-cpp-python's refuses `json_schema` outright); others take it as plain JSON mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum JsonAsk {
    /// `{"type": "json_schema", "json_schema": {..., "schema": S}}`, OpenAI's structured output.
    Schema,
    /// `{"type": "json_object", "schema": S}`.
    Object,
    /// No `response_format`: the parser finds the JSON in whatever comes back.
    Free,
}

impl JsonAsk {
    fn next(self) -> Self {
        match self {
            JsonAsk::Schema => JsonAsk::Object,
            JsonAsk::Object | JsonAsk::Free => JsonAsk::Free,
        }
    }

    fn name(self) -> &'static str {
        match self {
            JsonAsk::Schema => "json_schema",
            JsonAsk::Object => "json_object",
            JsonAsk::Free => "none",
        }
    }
}

#[derive(Debug)]
struct State {
    breaker: Breaker,
    /// How to ask for JSON: lowered once a server refused a way and answered the next.
    ask: JsonAsk,
    /// `true` once the server refused `max_tokens` or `temperature` (OpenAI's reasoning models
    /// take `max_completion_tokens` and only the default temperature).
    completion_tokens: bool,
    /// A `Retry-After` that reached past a consultation's end.
    not_before: Option<Instant>,
}

struct Inner {
    http: reqwest::Client,
    url: String,
    key: ApiKey,
    /// The key and the URL's credentials, redacted from anything the server sends back.
    secrets: Secrets,
    cfg: ResolvedLlm,
    state: Mutex<State>,
}

/// An OpenAI-compatible chat completions client. Cheap to clone (shared state), so a
/// consultation can run in a spawned task while the agent goes on.
#[derive(Clone)]
pub struct LlmClient {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for LlmClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LlmClient")
            .field("url", &super::config::without_userinfo(&self.inner.url))
            .field("key", &self.inner.key)
            .finish()
    }
}

/// A redirect's `Location` as the error shows it: resolved against the request's URL, the way a
/// client following it would read it, with the user name and password in its authority replaced
/// by `[redacted]`. Not [`super::config::without_userinfo`], which redacts up to the last `@`
/// anywhere: that suits text an operator typed (a password with an unencoded `/` or `#`), but a
/// server's `Location` with an `@` in its query (a sign-on page's `?user=alice@example.com`)
/// would be shown as a URL on another host, in the very message that says to set
/// `llm.base_url` to it. Text that does not parse falls back on it.
fn shown_location(request_url: &str, location: &str) -> String {
    let Ok(mut url) = reqwest::Url::parse(request_url).and_then(|base| base.join(location)) else {
        return super::config::without_userinfo(location);
    };
    if url.username().is_empty() && url.password().is_none() {
        return url.into();
    }
    // Neither fails on a URL with a host, which is the only kind with a user name to clear.
    let _ = url.set_username("");
    let _ = url.set_password(None);
    let text = url.as_str();
    let host_at = text.find("://").map_or(0, |i| i + 3);
    format!("{}[redacted]@{}", &text[..host_at], &text[host_at..])
}

#[derive(Debug, thiserror::Error)]
#[error("cannot build the HTTP client: {0}")]
pub struct ClientBuildError(String);

/// The HTTP client's settings. No redirects: followed, a 301 or 302 turns the POST into a GET
/// without its body, and a redirect to another host would take the key's header along to
/// wherever it points. No proxy for a server on this host: the environment's would get the key
/// in clear.
fn http_builder(cfg: &ResolvedLlm) -> reqwest::ClientBuilder {
    crate::http::client_builder(&cfg.base_url)
        .connect_timeout(cfg.config.timeout)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("kpo/", env!("CARGO_PKG_VERSION")))
}

impl LlmClient {
    pub fn new(cfg: ResolvedLlm) -> Result<Self, ClientBuildError> {
        let http = http_builder(&cfg)
            .build()
            .map_err(|e| ClientBuildError(cfg.secrets().redact(&e.without_url().to_string())))?;
        Ok(Self {
            inner: Arc::new(Inner {
                http,
                url: cfg.completions_url(),
                key: cfg.api_key.clone(),
                secrets: cfg.secrets(),
                state: Mutex::new(State {
                    breaker: Breaker::Closed { failures: 0 },
                    ask: JsonAsk::Schema,
                    completion_tokens: false,
                    not_before: None,
                }),
                cfg,
            }),
        })
    }

    pub fn config(&self) -> &ResolvedLlm {
        &self.inner.cfg
    }

    /// `text` with the API key and the URL's credentials redacted.
    pub fn redact(&self, text: &str) -> String {
        self.inner.secrets.redact(text)
    }

    pub fn breaker_state(&self) -> BreakerState {
        let st = self.lock();
        match st.breaker {
            Breaker::Closed { .. } => BreakerState::Closed,
            Breaker::Open { until } if Instant::now() >= until => BreakerState::HalfOpen,
            Breaker::Open { .. } => BreakerState::Open,
            Breaker::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding this lock cannot leave it inconsistent: take it anyway.
        self.inner.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sends `prompt`, asking for output matching `schema` when given and supported. Returns
    /// within the configured timeout, whatever the server does.
    pub async fn complete(&self, prompt: &Prompt, schema: Option<&Json>) -> Completion {
        let started = Instant::now();
        let cfg = &self.inner.cfg.config;
        let mut c = Completion::empty();
        // Gate: breaker and Retry-After.
        {
            let mut st = self.lock();
            if let Some(nb) = st.not_before {
                if started < nb {
                    c.outcome = Outcome::Backoff;
                    c.error = Some(format!(
                        "waiting {} ms more for the server's Retry-After",
                        nb.duration_since(started).as_millis()
                    ));
                    return c;
                }
                st.not_before = None;
            }
            match st.breaker {
                Breaker::Closed { .. } => {}
                Breaker::Open { until } if started >= until => {
                    st.breaker = Breaker::HalfOpen { since: started }
                }
                Breaker::HalfOpen { since }
                    if started.duration_since(since) > cfg.timeout.saturating_mul(2) =>
                {
                    st.breaker = Breaker::HalfOpen { since: started }
                }
                Breaker::Open { until } => {
                    c.outcome = Outcome::CircuitOpen;
                    c.error = Some(format!(
                        "circuit breaker open for {} ms more",
                        until.duration_since(started).as_millis()
                    ));
                    return c;
                }
                Breaker::HalfOpen { .. } => {
                    c.outcome = Outcome::CircuitOpen;
                    c.error = Some("circuit breaker half-open: a trial is in flight".into());
                    return c;
                }
            }
        }
        let deadline = later(started, cfg.timeout);
        let mut ask = match schema {
            Some(_) => self.lock().ask,
            None => JsonAsk::Free,
        };
        let mut stepped_down = false;
        let mut completion_tokens = self.lock().completion_tokens;
        let mut failed_attempts = 0u32;
        loop {
            let now = Instant::now();
            if now >= deadline {
                c.outcome = Outcome::Timeout;
                c.error = Some(format!("no reply within {:?}", cfg.timeout));
                break;
            }
            c.structured_output = ask != JsonAsk::Free;
            let body = request_body(cfg, prompt, ask, schema, completion_tokens);
            let result = tokio::time::timeout(deadline - now, self.send(&body)).await;
            if !matches!(result, Ok(Err(SendError { sent: false, .. }))) {
                c.attempts += 1;
            }
            let Answer {
                status,
                retry_after,
                location,
                bytes,
                cut,
            } = match result {
                Err(_) => {
                    c.outcome = Outcome::Timeout;
                    c.error = Some(format!("no reply within {:?}", cfg.timeout));
                    break;
                }
                Ok(Err(SendError {
                    timeout, message, ..
                })) => {
                    c.outcome = if timeout {
                        Outcome::Timeout
                    } else {
                        Outcome::Connect
                    };
                    c.error = Some(self.inner.secrets.redact(&message));
                    if timeout {
                        break;
                    }
                    failed_attempts += 1;
                    if self
                        .wait_before_retry(&mut c, failed_attempts, None, deadline)
                        .await
                    {
                        continue;
                    }
                    break;
                }
                Ok(Ok(r)) => r,
            };
            if !(100..=599).contains(&status) {
                // HTTP defines no such status (hyper takes up to 999): not a server this client
                // can talk to, like a body that is no chat completion. Not retried, and not shown
                // as `http_status`, which the events' schema keeps to 100..=599.
                c.http_status = None;
                c.outcome = Outcome::InvalidBody;
                c.error = Some(format!(
                    "the server answered with status {status}, which is not an HTTP status \
                     (100 to 599)"
                ));
                break;
            }
            c.http_status = Some(status);
            if (200..300).contains(&status) {
                if completion_tokens {
                    self.lock().completion_tokens = true;
                }
                if stepped_down {
                    // Answered after a refusal of the way asked before: only now is the refusal
                    // known to be about it, and later consultations ask this way.
                    let mut st = self.lock();
                    if ask > st.ask {
                        st.ask = ask;
                        tracing::info!(
                            response_format = ask.name(),
                            "LLM server answered with less structured output; asking so from now on"
                        );
                    }
                }
                if cut {
                    // Parsed, its start would fail as JSON cut short ("EOF while parsing at
                    // column 4194304"), which names no cause; or, padded, pass as a reply.
                    c.outcome = Outcome::InvalidBody;
                    let start = self.excerpt(&bytes);
                    c.error = Some(format!(
                        "the reply's body is longer than the {MAX_BODY} bytes read: no chat \
                         completion is that long{}",
                        if start.is_empty() {
                            String::new()
                        } else {
                            format!("; it starts: {start}")
                        }
                    ));
                } else {
                    self.read_completion(&mut c, &bytes);
                }
                break;
            }
            if (300..400).contains(&status) {
                c.outcome = Outcome::HttpStatus;
                // Redacted before it is cut, like a body's excerpt.
                let to = location.map_or_else(
                    || "no Location".to_string(),
                    |l| {
                        let l = self
                            .inner
                            .secrets
                            .redact(&shown_location(&self.inner.url, &l));
                        l.chars()
                            .filter(|c| !c.is_control() && !super::validate::is_format(*c))
                            .take(MAX_ERROR_EXCERPT)
                            .collect()
                    },
                );
                c.error = Some(format!(
                    "HTTP {status} to {to}: redirects are not followed; set llm.base_url to the final URL"
                ));
                break;
            }
            let excerpt = self.excerpt(&bytes);
            if status == 400 && !completion_tokens && refuses_token_parameters(&excerpt) {
                // A reasoning model: once more with `max_completion_tokens` and the default
                // temperature (kept for later consultations once that is answered).
                completion_tokens = true;
                tracing::info!(
                    "LLM server refused max_tokens or temperature; asking with \
                     max_completion_tokens and the default temperature"
                );
                continue;
            }
            // 422 is how FastAPI servers refuse a field's shape, and llama-cpp-python's server
            // answers its validation errors with a 500.
            if matches!(status, 400 | 422 | 500)
                && ask != JsonAsk::Free
                && refuses_response_format(&excerpt)
            {
                // The server does not take this way of asking for JSON: once more the next
                // way. Kept for later consultations only once that is answered (above): an
                // error that merely looked like a refusal must not lower it for good.
                ask = ask.next();
                stepped_down = true;
                tracing::info!(
                    status,
                    next = ask.name(),
                    "LLM server refused response_format; asking once more"
                );
                continue;
            }
            c.error = Some(format!("HTTP {status}: {excerpt}"));
            if status == 429 {
                c.outcome = Outcome::RateLimited;
                failed_attempts += 1;
                if self
                    .wait_before_retry(&mut c, failed_attempts, retry_after, deadline)
                    .await
                {
                    continue;
                }
                if let Some(wait) = retry_after {
                    self.lock().not_before = Some(later(Instant::now(), wait));
                }
                break;
            }
            c.outcome = Outcome::HttpStatus;
            if status >= 500 {
                failed_attempts += 1;
                // A 5xx's Retry-After is the server's guess at how long it stays down, not a
                // limit it enforces as a 429's is (that one is kept, and remembered for the next
                // consultations): one reaching past the deadline leaves the usual backoff, so
                // the consultation still gets its retry instead of none.
                if self
                    .wait_before_retry(&mut c, failed_attempts, retry_after, deadline)
                    .await
                    || (retry_after.is_some()
                        && self
                            .wait_before_retry(&mut c, failed_attempts, None, deadline)
                            .await)
                {
                    continue;
                }
            }
            break;
        }
        c.latency = started.elapsed();
        self.settle_breaker(c.outcome);
        c
    }

    /// Sleeps before another attempt if attempts remain and the wait ends before the deadline.
    async fn wait_before_retry(
        &self,
        c: &mut Completion,
        failed_attempts: u32,
        retry_after: Option<Duration>,
        deadline: Instant,
    ) -> bool {
        let cfg = &self.inner.cfg.config;
        if failed_attempts >= cfg.max_attempts {
            return false;
        }
        let wait = retry_after.unwrap_or_else(|| {
            let factor = 1u32 << (failed_attempts - 1).min(16);
            cfg.retry_backoff.saturating_mul(factor).min(MAX_BACKOFF)
        });
        if later(Instant::now(), wait) >= deadline {
            return false;
        }
        tokio::time::sleep(wait).await;
        c.retry_wait += wait;
        true
    }

    fn settle_breaker(&self, outcome: Outcome) {
        let cfg = &self.inner.cfg.config;
        let mut st = self.lock();
        let half_open = matches!(st.breaker, Breaker::HalfOpen { .. });
        if outcome.is_endpoint_failure() {
            let failures = match st.breaker {
                Breaker::Closed { failures } => failures + 1,
                _ => cfg.breaker_failures,
            };
            if half_open || failures >= cfg.breaker_failures {
                // The trial is one failure, not a run of them: a count would mislead.
                if half_open {
                    tracing::warn!(
                        cooloff = ?cfg.breaker_cooloff,
                        "LLM endpoint still failing: the half-open trial consultation failed; \
                         circuit breaker open again"
                    );
                } else {
                    tracing::warn!(
                        failures,
                        cooloff = ?cfg.breaker_cooloff,
                        "LLM endpoint failing: circuit breaker open"
                    );
                }
                st.breaker = Breaker::Open {
                    until: later(Instant::now(), cfg.breaker_cooloff),
                };
            } else {
                st.breaker = Breaker::Closed { failures };
            }
        } else {
            if half_open {
                tracing::info!("LLM endpoint answered: circuit breaker closed");
            }
            st.breaker = Breaker::Closed { failures: 0 };
        }
    }

    async fn send(&self, body: &Json) -> Result<Answer, SendError> {
        // Before each attempt: a server restarting between two may have left its port to anyone.
        // A server on this host is reached at the addresses an allowed user's listener serves
        // alone, through a client of this attempt's (no connection kept from one that may have
        // gone elsewhere): [`crate::endpoint_owner`].
        // The look resolves a name and dumps the listeners, and the pinned client's build reads
        // the system's certificates: blocking calls, made off the runtime's workers (s59 review1
        // R1-5).
        // The server's user is looked up here too, at each attempt (s58 review2 R2-7: off the
        // runtime's workers; s59 review2 R2-9: a name not known at start is no reason not to
        // start).
        let url = self.inner.url.clone();
        let (cfg, secrets) = (self.inner.cfg.clone(), self.inner.secrets.clone());
        let looked = tokio::task::spawn_blocking(move || {
            if !reqwest::Url::parse(&url).is_ok_and(|u| u.scheme() == "http") {
                return Ok(None);
            }
            match crate::endpoint_owner::looked_at(&url, || cfg.trusted_servers())? {
                None => Ok(None),
                // On this host, whatever names it: never through the environment's proxy, which
                // would get the key (s59 story BP-4: `http://0.0.0.0:PORT` or the host's name
                // went through it, no-proxy judging by loopback literals).
                Some((host, addresses)) => http_builder(&cfg)
                    .no_proxy()
                    .resolve_to_addrs(&host, &addresses)
                    .pool_max_idle_per_host(0)
                    .build()
                    .map(Some)
                    .map_err(|e| secrets.redact(&e.without_url().to_string())),
            }
        })
        .await
        .unwrap_or_else(|e| {
            Err(format!(
                "who serves the endpoint could not be looked at ({e}): not sent"
            ))
        });
        let pinned;
        let http = match looked {
            Err(message) => {
                return Err(SendError {
                    timeout: false,
                    sent: false,
                    message,
                })
            }
            Ok(None) => &self.inner.http,
            Ok(Some(client)) => {
                pinned = client;
                &pinned
            }
        };
        let mut req = http
            .post(&self.inner.url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.to_string());
        if !self.inner.key.is_empty() {
            let mut value = reqwest::header::HeaderValue::from_str(&format!(
                "Bearer {}",
                self.inner.key.expose()
            ))
            .map_err(|_| SendError {
                timeout: false,
                sent: false,
                message: "the API key is not a valid header value".into(),
            })?;
            value.set_sensitive(true);
            req = req.header(reqwest::header::AUTHORIZATION, value);
        }
        let mut resp = req.send().await.map_err(SendError::from)?;
        let status = resp.status().as_u16();
        let retry_after = resp
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_retry_after);
        let location = resp
            .headers()
            .get(reqwest::header::LOCATION)
            .map(|l| String::from_utf8_lossy(l.as_bytes()).into_owned());
        let mut bytes = Vec::new();
        let mut cut = false;
        while let Some(chunk) = resp.chunk().await.map_err(SendError::from)? {
            bytes.extend_from_slice(&chunk);
            if bytes.len() > MAX_BODY {
                bytes.truncate(MAX_BODY);
                cut = true;
                break;
            }
        }
        Ok(Answer {
            status,
            retry_after,
            location,
            bytes,
            cut,
        })
    }

    /// The start of a body, for an error message: at most [`MAX_ERROR_EXCERPT`] characters, the
    /// key redacted.
    fn excerpt(&self, bytes: &[u8]) -> String {
        // The whole body (bounded when read) redacted before it is cut: cut first, a key
        // straddling the cut would lose its end and no longer match, leaking its start; and
        // redaction shortens the text, so no shorter prefix is sure to hold every key whole.
        let text = self.inner.secrets.redact(&String::from_utf8_lossy(bytes));
        let text: String = super::validate::plain(&text)
            .chars()
            .take(MAX_ERROR_EXCERPT)
            .collect();
        text.trim().to_string()
    }

    fn read_completion(&self, c: &mut Completion, bytes: &[u8]) {
        // Errors of earlier attempts (a 429 before this reply) no longer apply.
        c.error = None;
        let resp = match ChatResponse::read(bytes) {
            Ok(r) => r,
            Err(why) => {
                c.outcome = Outcome::InvalidBody;
                // serde quotes the strings it could not take, which may hold the key.
                c.error = Some(format!(
                    "not a chat completion ({}): {}",
                    self.inner.secrets.redact(&why),
                    self.excerpt(bytes)
                ));
                return;
            }
        };
        c.usage = resp.usage;
        let finish_reason = resp
            .choice
            .as_ref()
            .and_then(|c| c.finish_reason.as_deref());
        c.finish_reason = finish_reason.and_then(|r| finish_word(&self.inner.secrets.redact(r)));
        if resp.error.is_some() || finish_reason == Some("error") {
            // The server's fault, as a 5xx would be: counted against the breaker, with its
            // message. Content that came with it was cut short by the error, and is not read.
            let said = match resp.error {
                Some(Json::Object(e)) => match e.get("message") {
                    Some(Json::String(m)) => m.clone(),
                    _ => Json::Object(e).to_string(),
                },
                Some(Json::String(s)) => s,
                Some(other) => other.to_string(),
                None => "finish_reason \"error\"".into(),
            };
            c.outcome = Outcome::InvalidBody;
            c.error = Some(format!(
                "the server answered with an error in place of a completion: {}",
                self.excerpt(said.as_bytes())
            ));
            return;
        }
        let Some(choice) = resp.choice else {
            c.outcome = Outcome::EmptyChoices;
            c.error = Some("the reply has no choices".into());
            return;
        };
        let message = choice.message;
        if let Some(refusal) = message.refusal.filter(|r| !r.trim().is_empty()) {
            c.outcome = Outcome::Refusal;
            c.error = Some(format!(
                "the model refused: {}",
                self.excerpt(refusal.as_bytes())
            ));
            return;
        }
        if choice.finish_reason.as_deref() == Some("length") {
            c.outcome = Outcome::Truncated;
            c.error = Some("the reply was cut off at max_tokens (finish_reason \"length\")".into());
            return;
        }
        let content = match message.content {
            Some(Json::String(s)) => s,
            // Some servers return content as a list of parts.
            Some(Json::Array(parts)) => parts
                .iter()
                .filter_map(|p| p.get("text").and_then(Json::as_str))
                .collect::<Vec<_>>()
                .join(""),
            _ => String::new(),
        };
        if content.trim().is_empty() {
            c.outcome = Outcome::EmptyChoices;
            c.error = Some("the reply's message has no content".into());
            return;
        }
        // Parsing happens after the timeout no longer applies: what it reads is bounded here.
        // The model's text, but counted against the breaker as the server's faults are: past
        // the default `max_tokens` many times over, the server ignores it (or it was raised that
        // far), and each such reply costs as many tokens again.
        if content.len() > MAX_CONTENT {
            c.outcome = Outcome::InvalidBody;
            c.error = Some(format!(
                "the reply's content is {} bytes, more than the {MAX_CONTENT} read as advice",
                content.len()
            ));
            return;
        }
        // Not redacted here: a redaction inside the JSON text can break it (a backslash before
        // a key spelled `\u0073k-...` left `\[redacted]`, an escape JSON refuses, and the whole
        // reply was lost: s64 story CO-3). What is shown of it is redacted once parsed.
        c.content = Some(content);
        c.outcome = Outcome::Ok;
    }
}

/// Longest `finish_reason` kept for the `llm` event.
const MAX_FINISH_REASON: usize = 32;

/// A `finish_reason` as the `llm` event shows it: a short word of `[a-z_]` (`stop`, `length`,
/// `tool_calls`, `content_filter`), else nothing. The server's text is bounded by the body alone
/// (up to 4 MiB) and may echo anything, the key included: the caller redacts it first, and a
/// redacted key (`[redacted]`) is not a word either.
fn finish_word(reason: &str) -> Option<String> {
    (!reason.is_empty()
        && reason.len() <= MAX_FINISH_REASON
        && reason.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'))
    .then(|| reason.to_string())
}

struct SendError {
    timeout: bool,
    /// Whether a request went out: not when who serves the endpoint could not be looked at or
    /// nothing serves it, nor with a key that is no header value. `attempts` counts only those
    /// that did (s61 story BX-4: "attempts": 3 beside "not sent", read as three billed requests).
    sent: bool,
    message: String,
}

/// What the server answered to one request.
struct Answer {
    status: u16,
    retry_after: Option<Duration>,
    /// The `Location` header, for a redirect's error message.
    location: Option<String>,
    bytes: Vec<u8>,
    /// The body went on past [`MAX_BODY`]: `bytes` is its start.
    cut: bool,
}

impl From<reqwest::Error> for SendError {
    fn from(e: reqwest::Error) -> Self {
        let timeout = e.is_timeout();
        let kind = if e.is_connect() {
            "cannot connect"
        } else if timeout {
            "timed out"
        } else {
            "request failed"
        };
        // The error and its causes, without the URL or any header.
        let mut message = kind.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            message.push_str(": ");
            message.push_str(&s.to_string());
            source = s.source();
        }
        // Tried on the network, whether or not it reached a server.
        Self {
            timeout,
            sent: true,
            message,
        }
    }
}

fn request_body(
    cfg: &super::config::LlmConfig,
    prompt: &Prompt,
    ask: JsonAsk,
    schema: Option<&Json>,
    completion_tokens: bool,
) -> Json {
    let mut body = serde_json::json!({
        "model": cfg.model,
        "messages": [
            {"role": "system", "content": prompt.system},
            {"role": "user", "content": prompt.user},
        ],
        "stream": false,
    });
    if completion_tokens {
        body["max_completion_tokens"] = cfg.max_tokens.into();
    } else {
        body["max_tokens"] = cfg.max_tokens.into();
        body["temperature"] = 0.into();
    }
    match (ask, schema) {
        (JsonAsk::Schema, Some(schema)) => {
            body["response_format"] = serde_json::json!({
                "type": "json_schema",
                "json_schema": {"name": "kpo_recommendations", "strict": true, "schema": schema},
            });
        }
        (JsonAsk::Object, Some(schema)) => {
            body["response_format"] = serde_json::json!({"type": "json_object", "schema": schema});
        }
        _ => {}
    }
    body
}

/// A 400 that says the model does not take `max_tokens` or a temperature of 0, as OpenAI's
/// reasoning models answer ("Unsupported parameter: 'max_tokens' ... Use 'max_completion_tokens'
/// instead", "Unsupported value: 'temperature' does not support 0"). A `max_tokens` that is merely
/// too large is not that.
fn refuses_token_parameters(body: &str) -> bool {
    let b = body.to_ascii_lowercase();
    let max_tokens = b.contains("max_tokens")
        && (b.contains("max_completion_tokens") || b.contains("unsupported_parameter"));
    let temperature = b.contains("temperature")
        && (b.contains("unsupported_value")
            || b.contains("does not support")
            || b.contains("only the default"));
    max_tokens || temperature
}

/// How far from `response_format` (or `json_schema`) the words of a refusal must be.
const NEAR: usize = 80;

/// An error that says the server does not take `response_format` ("Unrecognized request argument
/// supplied: response_format", "Invalid parameter: 'response_format' of type 'json_schema' is
/// not supported with this model", "unknown field `response_format`"): the parameter named, and
/// words of a refusal within [`NEAR`] bytes of it. A mention alone is not that: a proxy's error
/// that echoes the request names it too, and a context-length error counts the schema's tokens
/// ("including 100 in the response_format schemas"). As [`refuses_token_parameters`], a 400
/// about something else is not taken for a refusal of the parameter.
fn refuses_response_format(body: &str) -> bool {
    const SUBJECTS: [&str; 2] = ["response_format", "json_schema"];
    const REFUSALS: [&str; 13] = [
        "unsupported",
        "not supported",
        "does not support",
        "unrecognized",
        "unrecognised",
        "unknown",
        "invalid",
        "not allowed",
        "not permitted",
        "not implemented",
        "extra inputs",
        // pydantic's: "1 validation error ... ('body', 'response_format', 'type'): Input
        // should be 'text' or 'json_object'".
        "validation error",
        "input should be",
    ];
    // OpenAI's error type, on every 400 whatever it is about, is no word of a refusal.
    let b = body
        .to_ascii_lowercase()
        .replace("invalid_request_error", "");
    if b.contains("context length") || b.contains("context_length") {
        return false;
    }
    SUBJECTS.iter().any(|subject| {
        b.match_indices(subject).any(|(at, _)| {
            let mut start = at.saturating_sub(NEAR);
            while !b.is_char_boundary(start) {
                start -= 1;
            }
            let mut end = (at + subject.len() + NEAR).min(b.len());
            while !b.is_char_boundary(end) {
                end += 1;
            }
            let around = &b[start..end];
            REFUSALS.iter().any(|r| around.contains(r))
        })
    })
}

/// `Retry-After` as seconds or an HTTP date.
pub fn parse_retry_after(v: &str) -> Option<Duration> {
    let v = v.trim();
    if let Ok(secs) = v.parse::<f64>() {
        return (secs.is_finite() && secs >= 0.0)
            .then(|| Duration::from_secs_f64(secs.min(MAX_RETRY_AFTER.as_secs_f64())));
    }
    let when = http_date(v)?;
    let secs = (when - time::OffsetDateTime::now_utc()).as_seconds_f64();
    Some(Duration::from_secs_f64(
        secs.clamp(0.0, MAX_RETRY_AFTER.as_secs_f64()),
    ))
}

/// An IMF-fixdate (`Wed, 21 Oct 2015 07:28:00 GMT`), the HTTP date form servers send.
fn http_date(v: &str) -> Option<time::OffsetDateTime> {
    let parts: Vec<&str> = v.split_whitespace().collect();
    let [_, day, month, year, hms, "GMT"] = parts.as_slice() else {
        return None;
    };
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let month = MONTHS.iter().position(|m| m.eq_ignore_ascii_case(month))? as u8 + 1;
    let mut t = hms.split(':').map(|x| x.parse::<u8>().ok());
    let (h, m, s) = (t.next()??, t.next()??, t.next()??);
    let date = time::Date::from_calendar_date(
        year.parse().ok()?,
        time::Month::try_from(month).ok()?,
        day.parse().ok()?,
    )
    .ok()?;
    let time = time::Time::from_hms(h, m, s).ok()?;
    Some(time::PrimitiveDateTime::new(date, time).assume_utc())
}

/// What the client takes from a chat completion: the first choice's message, its
/// `finish_reason`, and `usage`. Read from the JSON by hand rather than by a strict `Deserialize`:
/// servers disagree on the fields around the content (`usage` as `"n/a"` or with float or
/// negative counts, `refusal: false`), and a strict reading turned such a reply into
/// `invalid_body`, which threw the advice away and counted toward the circuit breaker. Only the
/// body itself, `choices` and the first choice's `message` must have their shape; anything else
/// unreadable is left out.
struct ChatResponse {
    choice: Option<Choice>,
    usage: Usage,
    /// An `error` the body carries, at its top or in its first choice: some servers answer 200
    /// with one when the model fails once it has started (OpenRouter: `{"error": {"code": 502,
    /// "message": ...}}`, or a choice with `finish_reason` `error`).
    error: Option<Json>,
}

struct Choice {
    message: Message,
    finish_reason: Option<String>,
}

#[derive(Default)]
struct Message {
    /// A string, or a list of parts with `text`; the caller reads it.
    content: Option<Json>,
    refusal: Option<String>,
}

impl ChatResponse {
    /// The reply, or why it is not a chat completion.
    fn read(bytes: &[u8]) -> Result<Self, String> {
        let body: Json = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        let Json::Object(mut body) = body else {
            return Err("the body is not a JSON object".into());
        };
        let usage = body.get("usage").map(Usage::lenient).unwrap_or_default();
        let mut error = body.remove("error").filter(says_something);
        let choice = match body.remove("choices") {
            None | Some(Json::Null) => None,
            Some(Json::Array(choices)) => match choices.into_iter().next() {
                None => None,
                Some(Json::Object(mut choice)) => {
                    if let Some(e) = choice.remove("error").filter(says_something) {
                        error.get_or_insert(e);
                    }
                    let message = match choice.remove("message") {
                        None | Some(Json::Null) => Message::default(),
                        Some(Json::Object(mut m)) => Message {
                            content: m.remove("content").filter(|c| !c.is_null()),
                            refusal: m.remove("refusal").and_then(into_string),
                        },
                        Some(_) => return Err("`choices[0].message` is not an object".into()),
                    };
                    Some(Choice {
                        message,
                        finish_reason: choice.remove("finish_reason").and_then(into_string),
                    })
                }
                Some(_) => return Err("`choices[0]` is not an object".into()),
            },
            Some(_) => return Err("`choices` is not a list".into()),
        };
        Ok(Self {
            choice,
            usage,
            error,
        })
    }
}

/// Whether an `error` field reports one: an object with something in it, or some text. A server
/// that fills the field on success (`null`, `""`, `false`, `{}`) has not failed.
fn says_something(error: &Json) -> bool {
    match error {
        Json::Object(e) => !e.is_empty(),
        Json::String(s) => !s.trim().is_empty(),
        Json::Array(a) => !a.is_empty(),
        Json::Bool(b) => *b,
        // An error code (`"error": 502`); 0 is the usual "none".
        Json::Number(n) => n.as_f64() != Some(0.0),
        Json::Null => false,
    }
}

fn into_string(v: Json) -> Option<String> {
    match v {
        Json::String(s) => Some(s),
        _ => None,
    }
}

impl Usage {
    /// Each count that is a non-negative integer (`812`, or `812.0` as some servers write it);
    /// anything else, or a `usage` that is not an object, is absent.
    fn lenient(v: &Json) -> Self {
        let count = |key: &str| {
            let n = v.get(key)?;
            n.as_u64().or_else(|| {
                let f = n.as_f64()?;
                // Below 2^53 a float holds every integer exactly.
                (f >= 0.0 && f.fract() == 0.0 && f < 9.0e15).then_some(f as u64)
            })
        };
        Self {
            prompt_tokens: count("prompt_tokens"),
            completion_tokens: count("completion_tokens"),
            total_tokens: count("total_tokens"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_forms() {
        assert_eq!(parse_retry_after("2"), Some(Duration::from_secs(2)));
        assert_eq!(parse_retry_after(" 0.5 "), Some(Duration::from_millis(500)));
        assert_eq!(parse_retry_after("-1"), None);
        assert_eq!(parse_retry_after("soon"), None);
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(Duration::ZERO),
            "a date in the past: no wait"
        );
        assert_eq!(parse_retry_after("99999"), Some(MAX_RETRY_AFTER));
        let soon = time::OffsetDateTime::now_utc() + time::Duration::seconds(30);
        let text = format!(
            "Thu, {:02} {} {} {:02}:{:02}:{:02} GMT",
            soon.day(),
            &format!("{:?}", soon.month())[..3],
            soon.year(),
            soon.hour(),
            soon.minute(),
            soon.second()
        );
        let wait = parse_retry_after(&text).unwrap();
        assert!(
            wait > Duration::from_secs(20) && wait <= Duration::from_secs(30),
            "{text}: {wait:?}"
        );
    }

    fn client() -> LlmClient {
        LlmClient::new(ResolvedLlm {
            base_url: "http://127.0.0.1:9".into(),
            api_key: ApiKey::default(),
            config: super::super::config::LlmConfig::default(),
        })
        .unwrap()
    }

    /// Defect (s43 story2): a failed half-open trial was logged as "failures=3", the configured
    /// count, after one failure.
    #[test]
    fn a_failed_half_open_trial_is_logged_as_the_trial_not_as_a_count() {
        let client = client();
        let ((), log) = crate::logging::logged(|| {
            for _ in 0..3 {
                client.settle_breaker(Outcome::HttpStatus);
            }
        });
        assert!(
            log.contains("failures=3") && log.contains("circuit breaker open"),
            "{log}"
        );
        client.lock().breaker = Breaker::HalfOpen {
            since: Instant::now(),
        };
        let ((), log) = crate::logging::logged(|| client.settle_breaker(Outcome::Timeout));
        assert!(
            log.contains("the half-open trial consultation failed; circuit breaker open again")
                && !log.contains("failures="),
            "{log}"
        );
        assert_eq!(client.breaker_state(), BreakerState::Open);
    }

    fn reply(content: &str) -> Vec<u8> {
        serde_json::json!({
            "choices": [{"message": {"content": content}, "finish_reason": "stop"}]
        })
        .to_string()
        .into_bytes()
    }

    #[test]
    fn oversized_content_is_an_invalid_body() {
        let client = client();
        let mut c = Completion::empty();
        client.read_completion(&mut c, &reply(&"[1]".repeat(MAX_CONTENT)));
        assert_eq!(c.outcome, Outcome::InvalidBody);
        assert!(c.content.is_none());
        assert!(c.outcome.is_endpoint_failure());
        let error = c.error.unwrap();
        assert!(error.contains(&(3 * MAX_CONTENT).to_string()), "{error}");
        let mut c = Completion::empty();
        client.read_completion(&mut c, &reply(&" ".repeat(MAX_CONTENT - 2)));
        assert_eq!(
            c.outcome,
            Outcome::EmptyChoices,
            "the other checks still apply"
        );
        let mut c = Completion::empty();
        let at_the_bound = format!("[]{}", " ".repeat(MAX_CONTENT - 2));
        client.read_completion(&mut c, &reply(&at_the_bound));
        assert_eq!(c.outcome, Outcome::Ok);
        assert_eq!(c.content.as_deref(), Some(at_the_bound.as_str()));
    }

    /// s64 story CO-3: the content was redacted as text before it was parsed, and a backslash
    /// before a key spelled with an escape left `\[redacted]`, which JSON refuses: the whole
    /// reply was lost. It is kept as sent, and redacted once parsed (`take_reply`).
    #[test]
    fn the_content_is_kept_as_sent_for_parsing() {
        let client = LlmClient::new(ResolvedLlm {
            base_url: "http://127.0.0.1:9".into(),
            api_key: ApiKey::new("sk-QASECRET-0123"),
            config: super::super::config::LlmConfig::default(),
        })
        .unwrap();
        let advice = r#"{"recommendations": [{"parameter": "net.core.somaxconn", "value": 8192,
            "reason": "path C:\\u0073k-QASECRET-0123 ok"}]}"#;
        let body = serde_json::json!({"choices": [{"message": {"content": advice}}]});
        let mut c = Completion::empty();
        client.read_completion(&mut c, body.to_string().as_bytes());
        assert_eq!(c.outcome, Outcome::Ok, "{:?}", c.error);
        assert_eq!(c.content.as_deref(), Some(advice));
        let parsed: Json = serde_json::from_str(c.content.as_deref().unwrap()).unwrap();
        assert!(parsed["recommendations"][0]["reason"].is_string());
    }

    fn read(body: Json) -> Completion {
        let mut c = Completion::empty();
        client().read_completion(&mut c, body.to_string().as_bytes());
        c
    }

    /// Fields around the content that a server fills oddly cost the figure, not the advice, and
    /// do not count toward the breaker.
    #[test]
    fn odd_fields_around_the_content_are_ignored() {
        let advice = r#"[{"parameter":"net.core.somaxconn","value":8192}]"#;
        let choice = |message: Json, finish: Json| serde_json::json!([{"message": message, "finish_reason": finish}]);
        let plain = choice(serde_json::json!({"content": advice}), "stop".into());
        let cases = [
            (
                serde_json::json!({"choices": plain, "usage":
                    {"prompt_tokens": 812.0, "completion_tokens": 64, "total_tokens": 876}}),
                Usage {
                    prompt_tokens: Some(812),
                    completion_tokens: Some(64),
                    total_tokens: Some(876),
                },
                Some("stop"),
            ),
            (
                serde_json::json!({"choices": plain, "usage":
                    {"prompt_tokens": -1, "completion_tokens": 1.5, "total_tokens": "9"}}),
                Usage::default(),
                Some("stop"),
            ),
            (
                serde_json::json!({"choices": plain, "usage": "n/a"}),
                Usage::default(),
                Some("stop"),
            ),
            (
                serde_json::json!({"choices": choice(
                    serde_json::json!({"content": advice, "refusal": false}),
                    Json::Null,
                )}),
                Usage::default(),
                None,
            ),
            (
                serde_json::json!({"choices": choice(
                    serde_json::json!({"content": advice, "refusal": null}),
                    7.into(),
                ), "usage": null}),
                Usage::default(),
                None,
            ),
        ];
        for (body, usage, finish) in cases {
            let c = read(body.clone());
            assert_eq!(c.outcome, Outcome::Ok, "{body}: {:?}", c.error);
            assert_eq!(c.content.as_deref(), Some(advice), "{body}");
            assert_eq!(c.usage, usage, "{body}");
            assert_eq!(c.finish_reason.as_deref(), finish, "{body}");
        }
        // A refusal that is a string still is one; "length" still cuts the reply.
        let c = read(serde_json::json!({"choices": choice(
            serde_json::json!({"content": null, "refusal": "no"}), "stop".into())}));
        assert_eq!(c.outcome, Outcome::Refusal);
        let c = read(serde_json::json!({"choices": choice(
            serde_json::json!({"content": advice}), "length".into()), "usage": "n/a"}));
        assert_eq!(c.outcome, Outcome::Truncated);
    }

    /// `finish_reason` is the server's text: only a short word reaches the `llm` event, never the
    /// key nor megabytes of whatever the server sent.
    #[test]
    fn finish_reason_is_a_short_word_or_nothing() {
        const KEY: &str = "sk-finish-SECRET";
        let client = LlmClient::new(ResolvedLlm {
            base_url: "http://127.0.0.1:9".into(),
            api_key: ApiKey::new(KEY),
            config: super::super::config::LlmConfig::default(),
        })
        .unwrap();
        let read = |finish: String| {
            let body = serde_json::json!({
                "choices": [{"message": {"content": "[]"}, "finish_reason": finish}]
            });
            let mut c = Completion::empty();
            client.read_completion(&mut c, body.to_string().as_bytes());
            c
        };
        let huge = format!("stop {KEY}{}", "x".repeat(3 << 20));
        for bad in [
            huge,
            format!("stop {KEY}"),
            KEY.to_string(),
            "stop".repeat(9),
            "Stop".into(),
            "stop\u{202e}".into(),
            String::new(),
        ] {
            let c = read(bad.clone());
            assert_eq!(c.outcome, Outcome::Ok, "the advice is still read");
            assert_eq!(c.finish_reason, None, "{}", &bad[..bad.len().min(40)]);
        }
        for word in [
            "stop",
            "length",
            "tool_calls",
            "content_filter",
            &"a".repeat(32),
        ] {
            assert_eq!(read(word.into()).finish_reason.as_deref(), Some(word));
        }
        // A key that is itself a short word is replaced before the check, and so dropped.
        let client = LlmClient::new(ResolvedLlm {
            base_url: "http://127.0.0.1:9".into(),
            api_key: ApiKey::new("secretword"),
            config: super::super::config::LlmConfig::default(),
        })
        .unwrap();
        let mut c = Completion::empty();
        let body = r#"{"choices":[{"message":{"content":"[]"},"finish_reason":"secretword"}]}"#;
        client.read_completion(&mut c, body.as_bytes());
        assert_eq!(c.finish_reason, None);
    }

    /// An error body that echoes the key with a JSON escape in it (`\u0073k-...`, a tab written
    /// `\t`), or the Basic authorization a URL's user name and password became, gave them away in
    /// the `llm` event's `error` (s56 story AY-1, AY-2).
    #[test]
    fn an_error_body_never_shows_the_key_or_the_urls_credentials_however_spelled() {
        let client = LlmClient::new(ResolvedLlm {
            base_url: "http://bob:pw-SECRET%2F8888@127.0.0.1:9/v1".into(),
            api_key: ApiKey::new("sk-kpoqa/SECRET-0123"),
            config: super::super::config::LlmConfig::default(),
        })
        .unwrap();
        // What reqwest sends for that URL: the percent-encoding decoded first.
        let basic = {
            use base64::Engine;
            base64::engine::general_purpose::STANDARD.encode("bob:pw-SECRET/8888")
        };
        for body in [
            r#"{"error": {"message": "Incorrect API key provided: \u0073k-kpoqa/SECRET-0123"}}"#
                .to_string(),
            r#"{"message": "key sk-kpoqa\/SECRET-0123 (PHP escapes slashes)"}"#.into(),
            r#"{"message": "tab-split sk-kpoqa/SE\tCRET-0123"}"#.into(),
            r#"{"message": "surrogates \ud835\udc00 then \u0073\u006b-kpoqa/SECRET-0123"}"#.into(),
            "debug-escaped sk-kpoqa/SE\u{200b}CRET-0123".into(),
            format!(r#"{{"message": "Incorrect API key provided: Basic {basic}"}}"#),
            r#"{"message": "user bob:pw-SECRET/8888, password pw-SECRET/8888"}"#.into(),
        ] {
            let shown = client.excerpt(body.as_bytes());
            for secret in ["SECRET", "SE\\tCRET", &basic[..basic.len() - 2]] {
                assert!(!shown.contains(secret), "{secret} in {shown}");
            }
            assert!(shown.contains("[redacted]"), "{shown}");
        }
        // Not a key: text around it and escapes of other characters are left as they were.
        assert_eq!(
            client.excerpt(br#"{"a": "\u00e9t\u00e9 \\ bob"}"#),
            r#"{"a": "\u00e9t\u00e9 \\ bob"}"#
        );
    }

    /// What the content depends on must have its shape: otherwise it is not a chat completion.
    #[test]
    fn an_unreadable_content_is_an_invalid_body() {
        for body in [
            "<html>bad gateway</html>".to_string(),
            "[]".into(),
            r#""ok""#.into(),
            r#"{"choices": "none"}"#.into(),
            r#"{"choices": ["text"]}"#.into(),
            r#"{"choices": [{"message": "text"}]}"#.into(),
        ] {
            let mut c = Completion::empty();
            client().read_completion(&mut c, body.as_bytes());
            assert_eq!(c.outcome, Outcome::InvalidBody, "{body}");
            assert!(c.outcome.is_endpoint_failure());
        }
        // No choice, or no content: the server answered, with nothing.
        for body in [
            serde_json::json!({}),
            serde_json::json!({"choices": null}),
            serde_json::json!({"choices": []}),
            serde_json::json!({"choices": [{"finish_reason": "stop"}]}),
            serde_json::json!({"choices": [{"message": {"content": null}}]}),
        ] {
            assert_eq!(read(body.clone()).outcome, Outcome::EmptyChoices, "{body}");
        }
    }

    /// A 200 that carries an error (OpenRouter's, when the model fails after it started) is the
    /// server's fault, with its message, as a 5xx is: not "no choices", which the breaker
    /// ignores, and not advice read from a reply the error cut short.
    #[test]
    fn an_error_in_a_200_is_the_servers_fault() {
        const KEY: &str = "sk-error-SECRET";
        let client = LlmClient::new(ResolvedLlm {
            base_url: "http://127.0.0.1:9".into(),
            api_key: ApiKey::new(KEY),
            config: super::super::config::LlmConfig::default(),
        })
        .unwrap();
        let read = |body: Json| {
            let mut c = Completion::empty();
            client.read_completion(&mut c, body.to_string().as_bytes());
            c
        };
        let advice = r#"[{"parameter":"net.core.somaxconn","value":8192}]"#;
        for (body, said) in [
            (
                serde_json::json!({"error": {"code": 502, "message": format!("Provider returned error for {KEY}")}}),
                "Provider returned error for [redacted]",
            ),
            (
                serde_json::json!({"choices": [], "error": "upstream overloaded"}),
                "upstream overloaded",
            ),
            (
                serde_json::json!({"choices": [{"message": {"content": advice}, "finish_reason": "error",
                    "error": {"code": 502, "message": "stream cut"}}]}),
                "stream cut",
            ),
            (
                serde_json::json!({"choices": [{"message": {"content": advice}, "finish_reason": "error"}]}),
                "finish_reason \"error\"",
            ),
            (
                serde_json::json!({"error": {"code": 500}}),
                r#"{"code":500}"#,
            ),
            (serde_json::json!({"choices": [], "error": true}), "true"),
            (serde_json::json!({"choices": [], "error": 502}), "502"),
            (
                serde_json::json!({"choices": [], "error": ["overloaded"]}),
                r#"["overloaded"]"#,
            ),
        ] {
            let c = read(body.clone());
            assert_eq!(c.outcome, Outcome::InvalidBody, "{body}");
            assert!(c.outcome.is_endpoint_failure());
            assert_eq!(c.content, None, "{body}");
            assert_eq!(
                c.error.as_deref(),
                Some(
                    format!("the server answered with an error in place of a completion: {said}")
                        .as_str()
                ),
                "{body}"
            );
        }
        // An error field that reports none, as a server may fill it on success.
        for none in [
            Json::Null,
            "".into(),
            false.into(),
            serde_json::json!({}),
            0.into(),
            serde_json::json!([]),
        ] {
            let c = read(serde_json::json!({"error": none,
                "choices": [{"message": {"content": advice}, "finish_reason": "stop", "error": none}]}));
            assert_eq!(c.outcome, Outcome::Ok, "{none}: {:?}", c.error);
            assert_eq!(c.content.as_deref(), Some(advice));
        }
    }

    /// Set in the environment of the child process that runs [`proxy_child`].
    const PROXY_CHILD: &str = "KPO_TEST_PROXY_CHILD";
    const PROXY_TEST_KEY: &str = "sk-proxy-test-SECRET";

    /// An HTTP request's head (up to the blank line) from `conn`, or what came before it closed.
    fn read_head(conn: &mut impl std::io::Read) -> String {
        let mut head = Vec::new();
        let mut byte = [0u8];
        while !head.ends_with(b"\r\n\r\n") && conn.read(&mut byte).unwrap_or(0) == 1 {
            head.push(byte[0]);
        }
        String::from_utf8_lossy(&head).into_owned()
    }

    /// With `HTTP_PROXY` and `HTTPS_PROXY` set, a server on this host gets the request (and the
    /// key) directly, the proxy nothing; a plain http server elsewhere is reached through the
    /// proxy, which reads the key (what the start-up warning says); an https one through a
    /// `CONNECT` tunnel, whose head holds no key.
    ///
    /// reqwest reads the proxy variables when a client is built. Setting them in this process
    /// would race every other test that builds a client (and `setenv` racing `getenv` in
    /// another thread is undefined behaviour in glibc); an explicit `reqwest::Proxy` would
    /// test a client we do not build. So the clients are built in a child process, this test
    /// binary running [`proxy_child`] alone, with the variables in its environment only. The
    /// proxy is here: every connection the child made is queued on it before the child exits,
    /// so a last connection of ours, queued after them, ends the proxy's loop without a wait.
    #[test]
    fn a_server_on_this_host_is_never_proxied() {
        use std::io::Write;
        let proxy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = proxy.local_addr().unwrap();
        let seen = std::thread::spawn(move || {
            let mut heads = Vec::new();
            for conn in proxy.incoming() {
                let mut conn = conn.unwrap();
                let head = read_head(&mut conn);
                if head.starts_with("STOP") {
                    break;
                }
                let _ = conn.write_all(
                    b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                );
                heads.push(head);
            }
            heads
        });
        let mut child = std::process::Command::new(std::env::current_exe().unwrap());
        child
            .args(["--exact", "advise::llm::client::tests::proxy_child"])
            .args(["--ignored", "--nocapture", "--test-threads=1"])
            .env(PROXY_CHILD, "1")
            .env("HTTP_PROXY", format!("http://{addr}"))
            .env("HTTPS_PROXY", format!("http://{addr}"));
        for var in [
            "http_proxy",
            "https_proxy",
            "ALL_PROXY",
            "all_proxy",
            "NO_PROXY",
            "no_proxy",
            "REQUEST_METHOD",
        ] {
            child.env_remove(var);
        }
        let out = child.output().unwrap();
        std::net::TcpStream::connect(addr)
            .unwrap()
            .write_all(b"STOP\r\n\r\n")
            .unwrap();
        let heads = seen.join().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.contains("1 passed"),
            "{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            !heads.iter().any(|h| h.starts_with("POST http://127.0.0.1:")
                || h.starts_with("POST http://0.0.0.0:")),
            "the server on this host was reached through the proxy: {heads:#?}"
        );
        assert_eq!(heads.len(), 2, "{heads:#?}");
        let plain = &heads[0];
        assert!(
            plain.starts_with("POST http://192.0.2.1:9/v1/chat/completions "),
            "{plain}"
        );
        assert!(
            plain.to_ascii_lowercase().contains(&format!(
                "authorization: bearer {}",
                PROXY_TEST_KEY.to_ascii_lowercase()
            )),
            "a proxy for plain http reads the key: {plain}"
        );
        let tunnel = &heads[1];
        assert!(tunnel.starts_with("CONNECT 192.0.2.1:9 "), "{tunnel}");
        assert!(!tunnel.contains(PROXY_TEST_KEY), "{tunnel}");
    }

    /// Run by [`a_server_on_this_host_is_never_proxied`] in a child process with the proxy
    /// variables set; does nothing elsewhere.
    #[tokio::test]
    #[ignore = "child half: run in a child process by a_server_on_this_host_is_never_proxied"]
    async fn proxy_child() {
        use tokio::io::AsyncWriteExt;
        if std::env::var_os(PROXY_CHILD).is_none() {
            return;
        }
        let resolved = |base_url: String| ResolvedLlm {
            base_url,
            api_key: ApiKey::new(PROXY_TEST_KEY),
            config: super::super::config::LlmConfig {
                max_attempts: 1,
                ..Default::default()
            },
        };
        let prompt = Prompt {
            system: "s".into(),
            user: "u".into(),
        };
        // A server on this host, answering one completion; the head of the request it got.
        let serve_one = || async {
            let server = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let port = server.local_addr().unwrap().port();
            let served = tokio::spawn(async move {
                let (mut conn, _) = server.accept().await.unwrap();
                let (head, _) = read_request(&mut conn).await;
                let body = reply("[]");
                let mut answer = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
                     Connection: close\r\n\r\n",
                    body.len()
                )
                .into_bytes();
                answer.extend_from_slice(&body);
                conn.write_all(&answer).await.unwrap();
                head
            });
            (port, served)
        };
        let (port, served) = serve_one().await;
        let local = LlmClient::new(resolved(format!("http://127.0.0.1:{port}/v1"))).unwrap();
        let c = local.complete(&prompt, None).await;
        assert_eq!(c.outcome, Outcome::Ok, "{:?}", c.error);
        let head = served.await.unwrap();
        assert!(head.starts_with("POST /v1/chat/completions "), "{head}");
        assert!(head.contains(PROXY_TEST_KEY), "{head}");
        // Named by 0.0.0.0, which connects to this host: not proxied either (s59 story BP-4).
        let (port, served) = serve_one().await;
        let any = LlmClient::new(resolved(format!("http://0.0.0.0:{port}/v1"))).unwrap();
        let c = any.complete(&prompt, None).await;
        assert_eq!(c.outcome, Outcome::Ok, "0.0.0.0: {:?}", c.error);
        assert!(served
            .await
            .unwrap()
            .starts_with("POST /v1/chat/completions "));
        // Elsewhere (TEST-NET-1, never routed): only the proxy answers, 502.
        for base_url in ["http://192.0.2.1:9/v1", "https://192.0.2.1:9/v1"] {
            let c = LlmClient::new(resolved(base_url.into()))
                .unwrap()
                .complete(&prompt, None)
                .await;
            let through_proxy = if base_url.starts_with("https") {
                // The tunnel was refused: reqwest reports the proxy's 502 as a connect error.
                c.outcome == Outcome::Connect
            } else {
                c.http_status == Some(502)
            };
            assert!(through_proxy, "{base_url}: {:?} {:?}", c.outcome, c.error);
        }
    }

    #[test]
    fn instants_never_overflow() {
        let now = Instant::now();
        assert!(later(now, Duration::MAX) > now);
        assert_eq!(
            later(now, Duration::from_secs(1)),
            now + Duration::from_secs(1)
        );
    }

    #[test]
    fn token_parameter_refusals_are_recognised() {
        assert!(refuses_token_parameters(
            r#"{"error":{"message":"Unsupported parameter: 'max_tokens' is not supported with this model. Use 'max_completion_tokens' instead.","type":"invalid_request_error","param":"max_tokens","code":"unsupported_parameter"}}"#
        ));
        assert!(refuses_token_parameters(
            r#"{"error":{"message":"Unsupported value: 'temperature' does not support 0 with this model. Only the default (1) value is supported."}}"#
        ));
        assert!(!refuses_token_parameters(
            "max_tokens is too large: 100000. This model supports at most 16384 completion tokens"
        ));
        assert!(!refuses_token_parameters("model not found"));
        // A proxy's error that merely echoes the request is not the model refusing it.
        assert!(!refuses_token_parameters(
            r#"upstream not supported: {"max_tokens":1024,"temperature":0}"#
        ));
    }

    #[test]
    fn response_format_refusals_are_recognised() {
        for refusal in [
            r#"{"error":{"message":"Unrecognized request argument supplied: response_format"}}"#,
            r#"{"error":{"message":"Invalid parameter: 'response_format' of type 'json_schema' is not supported with this model.","type":"invalid_request_error","param":"response_format","code":null}}"#,
            "json_schema is not supported",
            "json: unknown field \"response_format\"",
            "response_format: Extra inputs are not permitted",
            // llama-cpp-python 0.3.36's server, with HTTP 500.
            r#"{"error":{"message":"1 validation error:\n  {'type': 'literal_error', 'loc': ('body', 'response_format', 'type'), 'msg': \"Input should be 'text' or 'json_object'\", 'input': 'json_schema', 'ctx': {'expected': \"'text' or 'json_object'\"}}\n\n  File \"/srv/llama_cpp/server/app.py\", line 376, in create_chat_completion\n    POST /v1/chat/completions","type":"internal_server_error","param":null,"code":null}}"#,
        ] {
            assert!(refuses_response_format(refusal), "{refusal}");
        }
        for other in [
            "model not found",
            // A mention without a refusal: a proxy echoing the request.
            r#"upstream error 400: {"model":"m","response_format":{"type":"json_schema","json_schema":{"name":"kpo_recommendations","strict":true}}}"#,
            // OpenAI's context-length error counts the schema, next to its error type.
            r#"{"error":{"message":"This model's maximum context length is 8192 tokens. However, your messages resulted in 9000 tokens (including 120 in the response_format schemas.). Please reduce the length of the messages.","type":"invalid_request_error","param":"messages","code":"context_length_exceeded"}}"#,
            // A context-length error from a proxy, echoing a request with a refusal word in it.
            r#"context length exceeded; request: {"messages":[{"content":"unknown"}],"response_format":{}}"#,
            // A refusal of something else, far from the parameter's name.
            &format!(
                "invalid model name{}; request had response_format",
                " ".repeat(NEAR)
            ),
        ] {
            assert!(!refuses_response_format(other), "{other}");
        }
    }

    /// One HTTP request from `conn`: its head (request line and headers) and its body, as long as
    /// its Content-Length says.
    async fn read_request(conn: &mut tokio::net::TcpStream) -> (String, Vec<u8>) {
        use tokio::io::AsyncReadExt;
        let mut request = Vec::new();
        let mut buf = [0u8; 4096];
        let head_end = loop {
            let n = conn.read(&mut buf).await.unwrap();
            assert!(n > 0, "closed before the request's head");
            request.extend_from_slice(&buf[..n]);
            if let Some(i) = request.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
        };
        let head = String::from_utf8_lossy(&request[..head_end]).into_owned();
        let length: usize = head
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("content-length")
                    .then(|| v.trim().parse().ok())?
            })
            .unwrap_or(0);
        while request.len() < head_end + length {
            let n = conn.read(&mut buf).await.unwrap();
            assert!(n > 0, "closed before the request's body");
            request.extend_from_slice(&buf[..n]);
        }
        (head, request.split_off(head_end))
    }

    /// A server that answers each request with the next of `answers` (status line's code and
    /// body), and hands back the bodies of the requests it got.
    async fn scripted_server(
        answers: Vec<(u16, String)>,
    ) -> (String, tokio::task::JoinHandle<Vec<Json>>) {
        scripted_server_with(answers.into_iter().map(|(s, b)| (s, "", b)).collect()).await
    }

    /// [`scripted_server`], with header lines (each ending in `\r\n`) added to each answer.
    async fn scripted_server_with(
        answers: Vec<(u16, &'static str, String)>,
    ) -> (String, tokio::task::JoinHandle<Vec<Json>>) {
        use tokio::io::AsyncWriteExt;
        let server = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = server.local_addr().unwrap().port();
        let served = tokio::spawn(async move {
            let mut bodies = Vec::new();
            for (status, headers, body) in answers {
                let (mut conn, _) = server.accept().await.unwrap();
                let (_, request) = read_request(&mut conn).await;
                bodies.push(serde_json::from_slice(&request).unwrap());
                let answer = format!(
                    "HTTP/1.1 {status} Whatever\r\nContent-Type: application/json\r\n\
                     {headers}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                conn.write_all(answer.as_bytes()).await.unwrap();
            }
            bodies
        });
        (format!("http://127.0.0.1:{port}/v1"), served)
    }

    fn scripted_client(base_url: String) -> LlmClient {
        LlmClient::new(ResolvedLlm {
            base_url,
            api_key: ApiKey::default(),
            config: super::super::config::LlmConfig {
                max_attempts: 3,
                retry_backoff: Duration::from_millis(10),
                timeout: Duration::from_secs(10),
                ..Default::default()
            },
        })
        .unwrap()
    }

    fn prompt() -> Prompt {
        Prompt {
            system: "s".into(),
            user: "u".into(),
        }
    }

    fn ok_body() -> String {
        String::from_utf8(reply("[]")).unwrap()
    }

    /// The `response_format` type of each request a scripted server was sent (`None`: none).
    fn asked(bodies: &[Json]) -> Vec<Option<String>> {
        bodies
            .iter()
            .map(|b| b["response_format"]["type"].as_str().map(str::to_string))
            .collect()
    }

    /// s61 story BX-4: with nothing listening on the endpoint's loopback port, no request goes
    /// out, and `attempts` (HTTP requests sent) says 0, not one per try.
    #[tokio::test]
    async fn requests_never_sent_are_not_counted_as_attempts() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let client = scripted_client(format!("http://127.0.0.1:{port}/v1"));
        let c = client.complete(&prompt(), None).await;
        assert_eq!((c.outcome, c.attempts), (Outcome::Connect, 0), "{c:?}");
        assert!(
            (c.error.as_deref()).is_some_and(|e| e.contains("not sent")),
            "{c:?}"
        );
    }

    /// A 400 that only mentions `response_format` (a proxy's context-length error echoing the
    /// request) is no refusal of it; a refusal is retried the next way down (`json_schema`,
    /// `json_object` with the schema, none), and that way is kept for later consultations only
    /// once the server answers it.
    #[tokio::test]
    async fn structured_output_is_lowered_only_by_a_refusal_the_retry_confirms() {
        let schema = serde_json::json!({"type": "object"});
        let echo = r#"{"error":"context too long","request":{"model":"m","response_format":{"type":"json_schema"}}}"#;
        let (url, served) = scripted_server(vec![(400, echo.into()), (200, ok_body())]).await;
        let client = scripted_client(url);
        let c = client.complete(&prompt(), Some(&schema)).await;
        assert_eq!(
            (c.outcome, c.http_status, c.attempts),
            (Outcome::HttpStatus, Some(400), 1)
        );
        let c = client.complete(&prompt(), Some(&schema)).await;
        assert_eq!(c.outcome, Outcome::Ok);
        assert!(
            c.structured_output,
            "still asked for: the 400 was no refusal"
        );
        let schema_asked = Some("json_schema".to_string());
        assert_eq!(
            asked(&served.await.unwrap()),
            [schema_asked.clone(), schema_asked.clone()]
        );

        // A refusal whose retry fails too (the 400 was about something else after all): the
        // next consultation asks for the schema again.
        let refusal =
            r#"{"error":{"message":"Unrecognized request argument supplied: response_format"}}"#;
        let other = r#"{"error":{"message":"model not found"}}"#;
        let (url, served) = scripted_server(vec![
            (400, refusal.into()),
            (400, other.into()),
            (400, refusal.into()),
            (400, refusal.into()),
            (200, ok_body()),
            (200, ok_body()),
        ])
        .await;
        let client = scripted_client(url);
        let c = client.complete(&prompt(), Some(&schema)).await;
        assert_eq!((c.outcome, c.attempts), (Outcome::HttpStatus, 2));
        assert_eq!(
            client.lock().ask,
            JsonAsk::Schema,
            "the retry did not succeed: not lowered"
        );
        // Refused twice, and answered without `response_format`: none from then on.
        let c = client.complete(&prompt(), Some(&schema)).await;
        assert_eq!((c.outcome, c.attempts), (Outcome::Ok, 3));
        assert!(!c.structured_output);
        let c = client.complete(&prompt(), Some(&schema)).await;
        assert_eq!((c.outcome, c.attempts), (Outcome::Ok, 1));
        assert!(!c.structured_output);
        let object_asked = Some("json_object".to_string());
        assert_eq!(
            asked(&served.await.unwrap()),
            [
                schema_asked.clone(),
                object_asked.clone(),
                schema_asked.clone(),
                object_asked.clone(),
                None,
                None
            ]
        );
    }

    /// llama-cpp-python's server refuses `json_schema` with a 500 and takes `json_object` with
    /// the schema beside it: asked so, once refused, from then on; the schema goes with it.
    #[tokio::test]
    async fn a_server_that_takes_json_object_with_a_schema_is_asked_so() {
        let schema = serde_json::json!({"type": "object", "required": ["recommendations"]});
        let refusal = r#"{"error":{"message":"1 validation error:\n  {'type': 'literal_error', 'loc': ('body', 'response_format', 'type'), 'msg': \"Input should be 'text' or 'json_object'\", 'input': 'json_schema'}","type":"internal_server_error"}}"#;
        let (url, served) = scripted_server(vec![
            (500, refusal.into()),
            (200, ok_body()),
            (200, ok_body()),
        ])
        .await;
        let client = scripted_client(url);
        let c = client.complete(&prompt(), Some(&schema)).await;
        assert_eq!((c.outcome, c.attempts), (Outcome::Ok, 2));
        assert!(c.structured_output);
        let c = client.complete(&prompt(), Some(&schema)).await;
        assert_eq!((c.outcome, c.attempts), (Outcome::Ok, 1));
        let bodies = served.await.unwrap();
        assert_eq!(
            asked(&bodies),
            [
                Some("json_schema".to_string()),
                Some("json_object".to_string()),
                Some("json_object".to_string())
            ]
        );
        assert_eq!(bodies[1]["response_format"]["schema"], schema);

        // A 500 about something else is a server error, whatever was asked.
        let oom = r#"{"error":"out of memory"}"#;
        let (url, served) = scripted_server(vec![(500, oom.into()); 3]).await;
        let client = scripted_client(url);
        let c = client.complete(&prompt(), Some(&schema)).await;
        assert_eq!((c.outcome, c.attempts), (Outcome::HttpStatus, 3), "{c:?}");
        assert_eq!(client.lock().ask, JsonAsk::Schema);
        assert_eq!(
            asked(&served.await.unwrap()),
            vec![Some("json_schema".to_string()); 3]
        );
    }

    /// A server's error body is shown as a reader sees it: control characters made spaces and
    /// invisible format characters (bidi overrides, zero-width spaces) removed, as in the
    /// model's own text, so an excerpt cannot show one thing and hold another.
    #[tokio::test]
    async fn an_error_excerpt_holds_no_invisible_characters() {
        let body = "bad\u{202E}request\u{200B}: quota\u{7}exceeded".to_string();
        let (url, served) = scripted_server(vec![(400, body)]).await;
        let client = scripted_client(url);
        let c = client.complete(&prompt(), None).await;
        let error = c.error.unwrap();
        assert!(error.contains("badrequest: quota exceeded"), "{error:?}");
        assert!(
            !error
                .chars()
                .any(|c| c.is_control() || super::super::validate::is_format(c)),
            "{error:?}"
        );
        served.abort();
    }

    /// A status HTTP does not define (hyper reads up to 999) is not retried as a server error,
    /// and is not shown as `http_status` (the schema's 100..=599).
    #[tokio::test]
    async fn a_status_beyond_599_is_an_invalid_reply_not_retried() {
        for status in [600, 999] {
            let (url, served) = scripted_server(vec![(status, ok_body()), (200, ok_body())]).await;
            let client = scripted_client(url);
            let c = client.complete(&prompt(), None).await;
            assert_eq!(
                (c.outcome, c.http_status, c.attempts),
                (Outcome::InvalidBody, None, 1),
                "{status}: {:?}",
                c.error
            );
            assert!(c.error.unwrap().contains(&status.to_string()));
            served.abort();
        }
    }

    /// A 2xx body longer than [`MAX_BODY`] is no chat completion, whatever its start: a valid
    /// completion padded past the bound is not taken (its start alone parsed), and one of blanks
    /// is not "EOF while parsing" at the bound. Each is read once, not retried.
    #[tokio::test]
    async fn a_body_past_the_bound_is_an_invalid_reply_that_says_so() {
        use tokio::io::AsyncWriteExt;
        for (body, start) in [
            (
                format!("{}{}", ok_body(), " ".repeat(MAX_BODY)),
                "; it starts: {",
            ),
            (" ".repeat(MAX_BODY + 1), ""),
        ] {
            let server = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let port = server.local_addr().unwrap().port();
            let served = tokio::spawn(async move {
                let mut requests = 0;
                while let Ok((mut conn, _)) = server.accept().await {
                    requests += 1;
                    read_request(&mut conn).await;
                    let head = format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\
                         Content-Length: {}\r\nConnection: close\r\n\r\n",
                        body.len()
                    );
                    // The client stops reading at the bound: the rest may not be written.
                    let _ = conn.write_all(head.as_bytes()).await;
                    let _ = conn.write_all(body.as_bytes()).await;
                    if requests > 1 {
                        break;
                    }
                }
                requests
            });
            let client = scripted_client(format!("http://127.0.0.1:{port}/v1"));
            let c = client.complete(&prompt(), None).await;
            let error = c.error.clone().unwrap_or_default();
            assert_eq!(
                (c.outcome, c.http_status, c.attempts),
                (Outcome::InvalidBody, Some(200), 1),
                "{error}"
            );
            let said = format!(
                "the reply's body is longer than the {MAX_BODY} bytes read: no chat completion \
                 is that long{start}"
            );
            assert!(error.starts_with(&said), "{error}");
            served.abort();
        }
    }

    /// A redirect's error names where it points as a client would read the `Location`: an `@`
    /// in its query is no user name (it was shown as `http://[redacted]@example.com`, another
    /// host), a relative one is on the server's host, and a user name and password are redacted.
    #[tokio::test]
    async fn a_redirect_names_its_target_as_a_client_would_read_it() {
        for (header, shown) in [
            (
                "Location: https://login.example/sso?user=alice@example.com\r\n",
                "https://login.example/sso?user=alice@example.com",
            ),
            (
                "Location: https://bob:tok-123@other.example/v1#a@b\r\n",
                "https://[redacted]@other.example/v1#a@b",
            ),
            ("Location: /v2/chat?x=a@b\r\n", "/v2/chat?x=a@b"),
        ] {
            let (url, served) = scripted_server_with(vec![(302, header, "{}".into())]).await;
            let shown = if shown.starts_with('/') {
                format!("{}{shown}", url.trim_end_matches("/v1"))
            } else {
                shown.to_string()
            };
            let c = scripted_client(url).complete(&prompt(), None).await;
            assert_eq!(
                (c.outcome, c.http_status, c.error),
                (
                    Outcome::HttpStatus,
                    Some(302),
                    Some(format!(
                        "HTTP 302 to {shown}: redirects are not followed; set llm.base_url to \
                         the final URL"
                    ))
                )
            );
            served.await.unwrap();
        }
    }

    /// A 5xx whose Retry-After reaches past the consultation's end is retried after the usual
    /// backoff (it was not retried at all); a 429's is kept, with no retry, for later ones.
    #[tokio::test]
    async fn a_5xx_retry_after_past_the_deadline_leaves_the_backoff() {
        let (url, served) = scripted_server_with(vec![
            (503, "Retry-After: 3600\r\n", "{}".into()),
            (200, "", ok_body()),
        ])
        .await;
        let client = scripted_client(url);
        let c = client.complete(&prompt(), None).await;
        assert_eq!(
            (c.outcome, c.attempts, c.retry_wait),
            (Outcome::Ok, 2, Duration::from_millis(10)),
            "{:?}",
            c.error
        );
        served.await.unwrap();
        // One that fits is still waited for, not the backoff.
        let (url, served) = scripted_server_with(vec![
            (503, "Retry-After: 1\r\n", "{}".into()),
            (200, "", ok_body()),
        ])
        .await;
        let c = scripted_client(url).complete(&prompt(), None).await;
        assert_eq!(
            (c.outcome, c.attempts, c.retry_wait),
            (Outcome::Ok, 2, Duration::from_secs(1))
        );
        served.await.unwrap();
        let (url, served) = scripted_server_with(vec![
            (429, "Retry-After: 3600\r\n", "{}".into()),
            (200, "", ok_body()),
        ])
        .await;
        let client = scripted_client(url);
        let c = client.complete(&prompt(), None).await;
        assert_eq!((c.outcome, c.attempts), (Outcome::RateLimited, 1));
        assert_eq!(
            client.complete(&prompt(), None).await.outcome,
            Outcome::Backoff
        );
        served.abort();
    }
}
