//! The LLM advisor's configuration: the `[llm]` table of the agent's configuration file, completed
//! from `OPENAI_API_KEY` and `OPENAI_BASE_URL`. Off unless a key or an endpoint is set.
use std::{fmt, time::Duration};

use serde::{Deserialize, Deserializer};

/// The endpoint used when only a key is given.
pub const DEFAULT_BASE_URL: &str = "https://api.openai.com/v1";
pub const DEFAULT_MODEL: &str = "gpt-4o-mini";

/// Bounds on the values that set waits and loops. Beyond them a value is a mistake (a typo of
/// units), and a duration added to an `Instant` could overflow it.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(10 * 60);
pub const MAX_BREAKER_COOLOFF: Duration = Duration::from_secs(24 * 3600);
/// Longest `llm.min_interval`: a day.
pub const MAX_MIN_INTERVAL: Duration = Duration::from_secs(24 * 3600);
pub const MIN_RETRY_BACKOFF: Duration = Duration::from_millis(10);
/// The client never waits longer than this between attempts anyway.
pub const MAX_RETRY_BACKOFF: Duration = Duration::from_secs(60);
pub const MAX_ATTEMPTS: u32 = 10;
/// The advisor keeps this many window summaries; each goes into every prompt.
pub const MAX_PROMPT_WINDOWS: usize = 100;

/// `url` with its user name and password (`http://user:token@host/`) replaced by `[redacted]`:
/// they are credentials, and the URL goes into logs, `Debug` output and errors. Text that is not
/// a URL is treated as one without a scheme, so a mistyped value is covered too.
///
/// Everything from after `scheme://` to the last `@` is taken for them, not only what comes
/// before the first `/`, `?` or `#`: a password may hold those unencoded (`bob:tok/en@proxy`,
/// `bob:123#x@proxy`), and read as URL parsers do, its `@` would lie in the path or fragment and
/// the password would be shown. An `@` in a path or query is redacted up to as well, which
/// hides part of such a URL but never a password; an endpoint cannot have one anyway
/// ([`url_problem`]).
pub fn without_userinfo(url: &str) -> String {
    // The authority starts after `scheme://` only when that `://` ends a scheme at the start:
    // one later in the text (a query's `?next=http://...`) says nothing of where it is.
    // Loosely: whatever has no `/`, `?`, `#` or `@` (a mistyped `"https` still counts, so that
    // its credentials are still found).
    let is_scheme = |s: &str| !s.contains(['/', '?', '#', '@']);
    let start = url
        .find("://")
        .filter(|&i| is_scheme(&url[..i]))
        .map_or(0, |i| i + 3);
    let rest = &url[start..];
    match rest.rfind('@') {
        Some(at) => format!("{}[redacted]{}", &url[..start], &rest[at..]),
        None => url.to_string(),
    }
}

/// A URL that is refused, as its error shows it: without credentials, and without its query
/// and fragment, which is where a token goes when one is put in the URL (`?api-key=...`), as a
/// mistyped endpoint often has (s64 story CO-1: the key printed whole in the start error). A key
/// spelled elsewhere in it (the path) is redacted by [`LlmConfigError::redacting`].
fn shown_bad_url(url: &str) -> String {
    const CREDENTIALS: &str = "[redacted]@";
    let shown = without_userinfo(url);
    let scheme_end = shown.find("://").map_or(0, |i| i + 3);
    // After the credentials, the last `@` may have been the query's own
    // (`?user=ops@corp&api-key=...`, s64 review2 R2-7): a query's `&` and `=` end what is shown
    // too.
    let (from, ends): (usize, &[char]) = match shown[scheme_end..].find(CREDENTIALS) {
        Some(at) => (scheme_end + at + CREDENTIALS.len(), &['?', '#', '&', '=']),
        None => (scheme_end, &['?', '#']),
    };
    match shown[from..].find(ends) {
        Some(at) => format!("{}[redacted]", &shown[..=from + at]),
        None => shown,
    }
}

/// An API key. Never printed: `Debug` shows `[redacted]`, and it has no `Display` or `Serialize`.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct ApiKey(String);

impl ApiKey {
    pub fn new(key: impl Into<String>) -> Self {
        Self(key.into().trim().to_string())
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The key itself, for the `Authorization` header only.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// `text` with every occurrence of the key replaced by `[redacted]` (for anything that came
    /// back from the network and might echo it), also one with format characters inside it (a
    /// zero-width space, a bidi mark, a soft hyphen: invisible, and removed when a text is
    /// cleaned for showing, which would give the key back whole: s48 storyO O-1) or control
    /// characters (a tab, which a shown redirect's location drops: s48 review L5).
    pub fn redact(&self, text: &str) -> String {
        if self.0.len() < 4 {
            return text.to_string();
        }
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        while let Some(c) = rest.chars().next() {
            match self.length_at_start_of(rest) {
                Some(len) => {
                    out.push_str("[redacted]");
                    rest = &rest[len..];
                }
                None => {
                    out.push(c);
                    rest = &rest[c.len_utf8()..];
                }
            }
        }
        out
    }

    /// The length in bytes of the key at the start of `text`, format and control characters
    /// after its first character included, each character as itself or as an escape sequence
    /// ([`escaped_char_at_start`]).
    fn length_at_start_of(&self, text: &str) -> Option<usize> {
        // The lengths of the forms of `c` at the start of `rest` that `is` accepts: the escape
        // sequence first, then the character as written (a key's own backslash, say).
        let step = |rest: &str, is: &dyn Fn(char) -> bool| {
            let raw = rest.chars().next()?;
            escaped_char_at_start(rest)
                .filter(|&(c, _)| is(c))
                .map(|(_, len)| len)
                .or_else(|| is(raw).then(|| raw.len_utf8()))
        };
        let ignorable = |c: char| crate::shown::is_format(c) || c.is_control();
        let mut at = 0;
        for (n, wanted) in self.0.chars().enumerate() {
            // Skipped inside the key, not before it.
            if n > 0 {
                while let Some(len) = step(&text[at..], &ignorable) {
                    at += len;
                }
            }
            at += step(&text[at..], &|c| c == wanted)?;
        }
        Some(at)
    }
}

/// The character an escape sequence at the start of `text` stands for, and the sequence's length
/// in bytes: a server's JSON error body may spell any character of the key so (`\u0073k-...`, a
/// tab as `\t`, a backslash as `\\`), and `{:?}` writes a format character as `\u{200b}` (s56
/// story AY-1: the key came back whole in an error excerpt). `None` where `text` does not start
/// with one. Not a crate's unescaping: text around the key need not be JSON, and is never
/// decoded, only matched.
fn escaped_char_at_start(text: &str) -> Option<(char, usize)> {
    let rest = text.strip_prefix('\\')?;
    let hex4 = |at: usize| {
        text.get(at..at + 4)
            .filter(|h| h.bytes().all(|b| b.is_ascii_hexdigit()))
            .and_then(|h| u32::from_str_radix(h, 16).ok())
    };
    let simple = match rest.chars().next()? {
        't' => Some('\t'),
        'n' => Some('\n'),
        'r' => Some('\r'),
        'b' => Some('\u{8}'),
        'f' => Some('\u{c}'),
        '0' => Some('\0'),
        same @ ('/' | '"' | '\'' | '\\') => Some(same),
        _ => None,
    };
    if let Some(decoded) = simple {
        return Some((decoded, 2));
    }
    if let Some(braced) = rest.strip_prefix("u{") {
        // At most six digits, so a look no further than the seventh byte: a text of `\u{` without
        // an end, megabytes of it, is not searched to its end at every position.
        let end = braced.bytes().take(7).position(|b| b == b'}')?;
        let code = u32::from_str_radix(braced.get(..end).filter(|d| !d.is_empty())?, 16).ok()?;
        return char::from_u32(code).map(|d| (d, 3 + end + 1));
    }
    rest.strip_prefix('u')?;
    match hex4(2)? {
        high @ 0xD800..=0xDBFF => {
            let low = hex4(8).filter(|_| text[6..].starts_with("\\u"))?;
            if !(0xDC00..=0xDFFF).contains(&low) {
                return None;
            }
            char::from_u32(0x10000 + ((high - 0xD800) << 10) + (low - 0xDC00)).map(|d| (d, 12))
        }
        code => char::from_u32(code).map(|d| (d, 6)),
    }
}

/// Everything of a resolved endpoint that must never be shown: the API key, and the user name
/// and password a URL may carry, which reqwest sends as `Authorization: Basic` with the base64 of
/// `user:password` (s56 story AY-2: a server echoing that header showed them so).
#[derive(Clone, Default)]
pub struct Secrets(Vec<ApiKey>);

impl Secrets {
    /// `text` with each secret redacted as [`ApiKey::redact`] does the key.
    pub fn redact(&self, text: &str) -> String {
        self.0
            .iter()
            .fold(text.to_string(), |text, secret| secret.redact(&text))
    }

    /// The key and what of `url`'s user name and password is secret: the password (or, without
    /// one, the user name, which is then the token), `user:password`, and their base64 without
    /// its padding (a prefix of the padded header value). Decoded from the URL's percent-encoding
    /// as reqwest decodes them before encoding the header.
    fn of(key: &ApiKey, url: &str) -> Self {
        use base64::Engine;
        let mut all = vec![key.clone()];
        if let Ok(url) = reqwest::Url::parse(url.trim()) {
            let decode = |s: &str| {
                percent_encoding::percent_decode_str(s)
                    .decode_utf8_lossy()
                    .into_owned()
            };
            let user = decode(url.username());
            let password = url.password().map(decode);
            // As written in the URL too: a redirect's location may carry it so.
            if let Some(encoded) = url.password().filter(|p| Some(*p) != password.as_deref()) {
                all.push(ApiKey::new(encoded));
            }
            if !user.is_empty() || password.is_some() {
                let pair = format!("{user}:{}", password.as_deref().unwrap_or_default());
                let encoded = base64::engine::general_purpose::STANDARD_NO_PAD.encode(&pair);
                all.push(ApiKey::new(password.unwrap_or(user)));
                all.push(ApiKey::new(pair));
                all.push(ApiKey::new(encoded));
            }
        }
        all.retain(|s| !s.is_empty());
        Self(all)
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            f.write_str("none")
        } else {
            f.write_str("[redacted]")
        }
    }
}

impl<'de> Deserialize<'de> for ApiKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(KeyVisitor)
    }
}

/// A string, and for anything else an error that does not quote the value: serde's own says
/// "invalid type: integer `982451653`", and a key of digits is still the key (s57 story BE-6).
struct KeyVisitor;

impl KeyVisitor {
    fn not_a_string<E: serde::de::Error>(what: &str) -> E {
        E::custom(format!(
            "{what}, not a string: write the key in quotes (the value is not shown here)"
        ))
    }
}

impl<'de> serde::de::Visitor<'de> for KeyVisitor {
    type Value = ApiKey;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("the API key as a string")
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<ApiKey, E> {
        Ok(ApiKey::new(v.to_string()))
    }

    fn visit_string<E: serde::de::Error>(self, v: String) -> Result<ApiKey, E> {
        Ok(ApiKey::new(v))
    }

    fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<ApiKey, E> {
        Err(Self::not_a_string("an integer"))
    }

    fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<ApiKey, E> {
        Err(Self::not_a_string("an integer"))
    }

    fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<ApiKey, E> {
        Err(Self::not_a_string("a number"))
    }

    fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<ApiKey, E> {
        Err(Self::not_a_string("a boolean"))
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, _: A) -> Result<ApiKey, A::Error> {
        Err(Self::not_a_string("a list"))
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, _: A) -> Result<ApiKey, A::Error> {
        Err(Self::not_a_string("a table"))
    }
}

/// As written in the configuration file (`[llm]`); every key is optional.
#[derive(Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct LlmConfig {
    /// `false` turns the advisor off even when a key or endpoint is set.
    pub enabled: bool,
    /// An OpenAI-compatible API root, e.g. `https://api.openai.com/v1`,
    /// `http://127.0.0.1:11434/v1` (Ollama), `http://127.0.0.1:8080/v1` (llama.cpp, vLLM).
    /// Falls back to `OPENAI_BASE_URL`.
    pub base_url: Option<String>,
    pub model: String,
    /// Falls back to `OPENAI_API_KEY`, unless `base_url` here names a server other than OpenAI's
    /// or `OPENAI_BASE_URL`: that server gets only this key. May be empty for a local server.
    pub api_key: Option<ApiKey>,
    /// Consult every this many windows (the seed asked every 10 minutes of 1-minute windows).
    pub every_windows: u64,
    /// A notable event (a listener dropping connections) may bring a consultation forward, but
    /// not sooner than this many windows after the previous one.
    pub early_min_windows: u64,
    /// No consultation within this long of the previous one, whatever the window counts say
    /// (with short windows, they alone could call a paid API every few seconds). 0 turns it off.
    #[serde(deserialize_with = "duration")]
    pub min_interval: Duration,
    /// Bound on one whole consultation, retries and waits included.
    #[serde(deserialize_with = "duration")]
    pub timeout: Duration,
    pub max_tokens: u32,
    /// HTTP attempts per consultation for refused connections, 429 and 5xx. Not for a timeout:
    /// the connection's own timeout is the whole `timeout`, so no time would be left.
    pub max_attempts: u32,
    /// First wait between attempts; doubles each time (a `Retry-After` header overrides it).
    #[serde(deserialize_with = "duration")]
    pub retry_backoff: Duration,
    /// Consecutive failed consultations that open the circuit breaker.
    pub breaker_failures: u32,
    /// How long the breaker stays open before one trial consultation (half-open).
    #[serde(deserialize_with = "duration")]
    pub breaker_cooloff: Duration,
    /// How many recent windows the prompt summarises.
    pub prompt_windows: usize,
    /// The user (a name or a uid) that runs a server on this host the endpoint names over plain
    /// http, besides root and the agent's own user: a listener of anyone else on its port is not
    /// sent the key and the prompt ([`crate::endpoint_owner`]).
    #[serde(deserialize_with = "crate::endpoint_owner::optional_user")]
    pub server_user: Option<String>,
}

impl Default for LlmConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            base_url: None,
            model: DEFAULT_MODEL.to_string(),
            api_key: None,
            every_windows: 10,
            early_min_windows: 3,
            min_interval: Duration::from_secs(60),
            timeout: Duration::from_secs(30),
            max_tokens: 1024,
            max_attempts: 3,
            retry_backoff: Duration::from_secs(1),
            breaker_failures: 3,
            breaker_cooloff: Duration::from_secs(600),
            prompt_windows: 10,
            server_user: None,
        }
    }
}

impl fmt::Debug for LlmConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LlmConfig")
            .field("enabled", &self.enabled)
            .field("base_url", &self.base_url.as_deref().map(without_userinfo))
            .field("model", &self.model)
            .field("api_key", &self.api_key)
            .field("every_windows", &self.every_windows)
            .field("early_min_windows", &self.early_min_windows)
            .field("min_interval", &self.min_interval)
            .field("timeout", &self.timeout)
            .field("max_tokens", &self.max_tokens)
            .field("max_attempts", &self.max_attempts)
            .field("retry_backoff", &self.retry_backoff)
            .field("breaker_failures", &self.breaker_failures)
            .field("breaker_cooloff", &self.breaker_cooloff)
            .field("prompt_windows", &self.prompt_windows)
            .field("server_user", &self.server_user)
            .finish()
    }
}

/// A mistake in the `[llm]` table (or in `OPENAI_BASE_URL`): [`Self::key`] names the key and
/// [`Self::reason`] says what is wrong, so the agent's configuration error can name the file too.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LlmConfigError {
    /// `llm.base_url` is not an http(s) URL with a host: `why` says what is wrong.
    BadUrl {
        url: String,
        why: String,
    },
    /// `OPENAI_BASE_URL` is not an http(s) URL with a host.
    BadEnvUrl {
        url: String,
        why: String,
    },
    /// This key (`llm.every_windows`, ...) must be at least 1.
    Zero(&'static str),
    ZeroTimeout,
    NoModel,
    /// The endpoint's URL carries a user name and password and an API key is set too: both
    /// would go out as `Authorization` headers. `url_from_env`: the URL is `OPENAI_BASE_URL`;
    /// `key_from_env`: the key is `OPENAI_API_KEY`.
    CredentialsTwice {
        url_from_env: bool,
        key_from_env: bool,
    },
    /// The API key cannot be sent as a header (a control character inside it). `from_env`: the
    /// key is `OPENAI_API_KEY`.
    BadKey {
        from_env: bool,
    },
    /// A value outside what the key allows: `allowed` says what it does, e.g. "1 to 10".
    OutOfRange {
        key: &'static str,
        value: String,
        allowed: String,
    },
}

impl LlmConfigError {
    /// With the environment's `OPENAI_API_KEY` redacted from the URL it holds, if it holds one:
    /// for a check of the file alone, which the environment's key may be pasted into too (s64
    /// review2 R2-8).
    pub fn redacting_the_environments_key(self) -> Self {
        let key = std::env::var("OPENAI_API_KEY").ok().map(ApiKey::new);
        self.redacting(&key.iter().collect::<Vec<_>>())
    }

    /// With `keys` redacted from the URL it holds, if it holds one: a key pasted into the path.
    fn redacting(mut self, keys: &[&ApiKey]) -> Self {
        if let LlmConfigError::BadUrl { url, .. } | LlmConfigError::BadEnvUrl { url, .. } =
            &mut self
        {
            for key in keys {
                *url = key.redact(url);
            }
        }
        self
    }

    /// The configuration key (or environment variable) at fault.
    pub fn key(&self) -> &'static str {
        match self {
            LlmConfigError::BadUrl { .. } => "llm.base_url",
            LlmConfigError::BadEnvUrl { .. } => "OPENAI_BASE_URL",
            LlmConfigError::Zero(key) => key,
            LlmConfigError::ZeroTimeout => "llm.timeout",
            LlmConfigError::NoModel => "llm.model",
            LlmConfigError::CredentialsTwice {
                url_from_env: true, ..
            } => "OPENAI_BASE_URL",
            LlmConfigError::CredentialsTwice {
                url_from_env: false,
                ..
            } => "llm.base_url",
            LlmConfigError::BadKey { from_env: true } => "OPENAI_API_KEY",
            LlmConfigError::BadKey { from_env: false } => "llm.api_key",
            LlmConfigError::OutOfRange { key, .. } => key,
        }
    }

    /// Whether the key at fault is an environment variable rather than a key of the file.
    pub fn from_env(&self) -> bool {
        self.key().starts_with("OPENAI_")
    }

    /// What is wrong with it.
    pub fn reason(&self) -> String {
        match self {
            LlmConfigError::BadUrl { url, why } | LlmConfigError::BadEnvUrl { url, why } => {
                format!("is {:?}; {why}", shown_bad_url(url))
            }
            LlmConfigError::Zero(_) => "must be at least 1".into(),
            LlmConfigError::ZeroTimeout => "must be positive".into(),
            LlmConfigError::NoModel => "must not be empty".into(),
            LlmConfigError::CredentialsTwice { key_from_env, .. } => format!(
                "carries a user name and password, and an API key is set too ({}): both would \
                 be sent as the Authorization header (the URL's as Basic, the key's as Bearer); \
                 keep one",
                if *key_from_env {
                    "OPENAI_API_KEY"
                } else {
                    "llm.api_key"
                }
            ),
            LlmConfigError::BadKey { .. } => "holds a control character (a line break, say) \
                inside it, which an HTTP header cannot carry: every request would fail; the key \
                is not shown here"
                .into(),
            LlmConfigError::OutOfRange { value, allowed, .. } => {
                format!("is {value}; it must be {allowed}")
            }
        }
    }
}

impl fmt::Display for LlmConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.key(), self.reason())
    }
}

impl std::error::Error for LlmConfigError {}

/// Why `url` cannot be the endpoint, if it cannot: it must start with `http://` or `https://`,
/// parse as a URL (no white space in the host, a port up to 65535, ...), name a host and be the
/// API root (no query, fragment or `/chat/completions` of its own). Checked
/// at start, so that a mistyped endpoint stops `kpo run` there rather than failing every
/// consultation later. The parser's message names what is wrong, never the URL (which may carry
/// a password).
fn url_problem(url: &str) -> Option<String> {
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        return Some("it must start with http:// or https://".into());
    }
    // A password's unencoded `/`, `?` or `#` ends the host where the operator did not mean it
    // to: `https://bob:123#x@proxy/v1` is host `bob`, port 123, and a fragment. Sent, the request
    // would go to `bob`; shown, the URL would give the password away as a port and a fragment.
    let rest = &url[url.find("://").map_or(0, |i| i + 3)..];
    if rest
        .find(['/', '?', '#'])
        .is_some_and(|end| rest[end..].contains('@'))
    {
        return Some(
            "it has an @ after a /, ? or #: write a password's /, ?, # and @ as %2F, %3F, %23 \
             and %40 (and any other @ as %40)"
                .into(),
        );
    }
    // Requests go to `{base_url}/chat/completions`, text appended: after a query or a fragment
    // (`?api-version=...`) that path lands inside it, and after a full endpoint it is there
    // twice. Either way every request would miss (a 404, or the API root itself).
    match reqwest::Url::parse(url) {
        Err(e) => Some(format!("it is not a valid URL ({e})")),
        Ok(u) if u.host_str().is_none_or(str::is_empty) => Some("it names no host".into()),
        Ok(u) if u.query().is_some() || u.fragment().is_some() => Some(
            "it has a query or a fragment (? or #), which /chat/completions would be appended \
             to: give the API root alone"
                .into(),
        ),
        Ok(u) if u.path().trim_end_matches('/').ends_with("/chat/completions") => Some(
            "it ends in /chat/completions, which is appended to it: give the API root (such as \
             https://api.openai.com/v1)"
                .into(),
        ),
        Ok(_) => None,
    }
}

/// Whether `url` carries a user name or password, which reqwest sends as Basic authorization.
fn has_userinfo(url: &str) -> bool {
    let url = url.trim();
    without_userinfo(url) != url
}

/// Whether `key` can go out as the `Authorization` header, as the client sends it. Only its
/// ends are trimmed when it is read: a control character inside it (a key pasted across lines)
/// would fail every request, as a connection error that does not say why.
fn key_sendable(key: &ApiKey) -> bool {
    key.is_empty()
        || reqwest::header::HeaderValue::from_str(&format!("Bearer {}", key.expose())).is_ok()
}

/// A configuration with its endpoint decided: what the client runs with.
#[derive(Clone)]
pub struct ResolvedLlm {
    /// Without a trailing `/`.
    pub base_url: String,
    pub api_key: ApiKey,
    pub config: LlmConfig,
}

impl ResolvedLlm {
    /// The users whose listener on this host may be sent the key and the prompt over plain
    /// http ([`crate::endpoint_owner`]): root, the agent's own, and `llm.server_user`.
    /// `Err` when `llm.server_user` names a user this host does not know (now): nothing is sent
    /// to a server on this host then. Blocking: the name is looked up (NSS).
    pub fn trusted_servers(&self) -> Result<crate::endpoint_owner::Trusted, String> {
        crate::endpoint_owner::Trusted::users(
            self.config.server_user.as_deref(),
            "llm.server_user",
            "the API key and the prompt",
        )
    }

    /// What must never be shown of this endpoint: [`Secrets`].
    pub fn secrets(&self) -> Secrets {
        Secrets::of(&self.api_key, &self.base_url)
    }

    pub fn completions_url(&self) -> String {
        format!("{}/chat/completions", self.base_url)
    }

    /// Whether the key would cross the network unencrypted: a key is set and the endpoint is
    /// plain `http://` on a host other than loopback. A proxy does not change this: an endpoint
    /// on this host is never proxied (`crate::http`), and one elsewhere over `http://` is in
    /// clear with or without one; [`Self::key_proxy_with`] names the proxy that reads it too.
    pub fn key_in_clear(&self) -> bool {
        self.has_credentials()
            && self.base_url.starts_with("http://")
            && reqwest::Url::parse(&self.base_url).is_ok()
            && !crate::http::is_loopback_url(&self.base_url)
    }

    /// The proxy, by the environment `env`, that the request would be forwarded through with the
    /// key readable by it: a key is set, the endpoint is plain `http://` and not on this host,
    /// and a proxy applies. To an `https://` endpoint reqwest tunnels through any proxy with
    /// `CONNECT`, and the key stays inside TLS to the server.
    pub fn key_proxy_with(&self, env: impl Fn(&str) -> Option<String>) -> Option<String> {
        if !self.has_credentials() || !self.base_url.starts_with("http://") {
            return None;
        }
        crate::http::env_proxy(&self.base_url, env)
    }

    /// Whether a request carries a credential: the key, or the URL's user name and password,
    /// which go out as `Authorization: Basic` (s64 story CO-2: no warning that they crossed
    /// the network in clear).
    pub fn has_credentials(&self) -> bool {
        !self.api_key.is_empty() || self.url_credentials()
    }

    /// Whether the URL carries a user name or password.
    pub fn url_credentials(&self) -> bool {
        reqwest::Url::parse(&self.base_url)
            .is_ok_and(|u| !u.username().is_empty() || u.password().is_some())
    }

    /// The endpoint as logs and errors show it: without credentials in the URL.
    pub fn shown_base_url(&self) -> String {
        without_userinfo(&self.base_url)
    }
}

impl fmt::Debug for ResolvedLlm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResolvedLlm")
            .field("base_url", &self.shown_base_url())
            .field("api_key", &self.api_key)
            .field("config", &self.config)
            .finish()
    }
}

/// What an operator is told of an endpoint the advisor is on for, at `kpo run`'s start and by
/// `kpo check` ([`LlmConfig::cautions`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caution {
    /// `OPENAI_API_KEY` is set, but the file's `base_url` names another server, which gets only
    /// the file's key (none here).
    EnvKeyNotSent,
    /// The key goes over plain http to another host through this proxy, which reads it.
    KeyThroughProxy(String),
    /// The model is OpenAI's default and the endpoint another server's, which likely serves
    /// other models (Ollama, vLLM): every consultation would fail (s57 story BD-8).
    OpenAisModelElsewhere,
    /// The key goes over plain http to another host.
    KeyInClear,
}

impl Caution {
    pub fn text(&self) -> &'static str {
        match self {
            Caution::EnvKeyNotSent => {
                "OPENAI_API_KEY is not sent to llm.base_url; set llm.api_key for that server"
            }
            Caution::KeyThroughProxy(_) => {
                "the LLM API key (or the URL's user name and password) is sent over plain http \
                 to a host that is not this one, through the proxy from HTTP_PROXY (or \
                 ALL_PROXY), which reads it: anyone on the path can read it; use https"
            }
            Caution::KeyInClear => {
                "the LLM API key (or the URL's user name and password) is sent over plain http \
                 to a host that is not this one: anyone on the path can read it; use https"
            }
            Caution::OpenAisModelElsewhere => {
                "llm.model is gpt-4o-mini (the default when it is not set), an OpenAI model, and \
                 the endpoint is not OpenAI's: set llm.model to a model that server serves"
            }
        }
    }
}

impl LlmConfig {
    /// What to tell of `resolved` (this configuration, resolved against `env`).
    pub fn cautions(
        &self,
        resolved: &ResolvedLlm,
        env: impl Fn(&str) -> Option<String>,
    ) -> Vec<Caution> {
        let mut out = Vec::new();
        if resolved.api_key.is_empty() && self.base_url.is_some() && env("OPENAI_API_KEY").is_some()
        {
            out.push(Caution::EnvKeyNotSent);
        }
        if let Some(proxy) = resolved.key_proxy_with(&env) {
            out.push(Caution::KeyThroughProxy(proxy));
        } else if resolved.key_in_clear() {
            out.push(Caution::KeyInClear);
        }
        let openais = reqwest::Url::parse(&resolved.base_url)
            .is_ok_and(|u| u.host_str() == Some("api.openai.com"));
        if resolved.config.model == DEFAULT_MODEL && !openais {
            out.push(Caution::OpenAisModelElsewhere);
        }
        out
    }

    /// Resolves against the process environment. `Ok(None)` means the advisor is off; the reason
    /// has been logged once.
    pub fn resolve(&self) -> Result<Option<ResolvedLlm>, LlmConfigError> {
        let resolved = self.resolve_with(|k| std::env::var(k).ok())?;
        match &resolved {
            Ok(r) => {
                tracing::info!(
                    base_url = %r.shown_base_url(),
                    model = %r.config.model,
                    key = match (r.api_key.is_empty(), r.url_credentials()) {
                        (false, _) => "set",
                        (true, true) => "in the URL",
                        (true, false) => "none",
                    },
                    every_windows = r.config.every_windows,
                    min_interval = %humantime::format_duration(r.config.min_interval),
                    "LLM advisor on"
                );
                for caution in self.cautions(r, |k| std::env::var(k).ok()) {
                    match caution {
                        Caution::EnvKeyNotSent => tracing::info!("{}", caution.text()),
                        Caution::KeyThroughProxy(proxy) => tracing::warn!(
                            base_url = %r.shown_base_url(),
                            %proxy,
                            "{}",
                            Caution::KeyThroughProxy(String::new()).text()
                        ),
                        Caution::KeyInClear | Caution::OpenAisModelElsewhere => tracing::warn!(
                            base_url = %r.shown_base_url(),
                            "{}",
                            caution.text()
                        ),
                    }
                }
            }
            Err(why) => tracing::info!("LLM advisor off: {why}"),
        }
        Ok(resolved.ok())
    }

    /// Resolves against `env` (a lookup of environment variables). The inner `Err` is why the
    /// advisor is off.
    pub fn resolve_with(
        &self,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Result<ResolvedLlm, &'static str>, LlmConfigError> {
        if !self.enabled {
            return Ok(Err("disabled by configuration (llm.enabled = false)"));
        }
        let nonempty =
            |s: Option<String>| s.map(|s| s.trim().to_string()).filter(|s| !s.is_empty());
        let file_key = self.api_key.clone().filter(|k| !k.is_empty());
        let env_key = || nonempty(env("OPENAI_API_KEY")).map(ApiKey::new);
        let keys = [file_key.clone(), env_key()];
        let keys: Vec<&ApiKey> = keys.iter().flatten().collect();
        self.validate().map_err(|e| e.redacting(&keys))?;
        let file_url = nonempty(self.base_url.clone());
        let env_url = nonempty(env("OPENAI_BASE_URL"));
        let url_from_env = file_url.is_none();
        let (base_url, key) = match (file_url, env_url) {
            // The environment's key is meant for OpenAI (or the environment's own endpoint): sent
            // to a server only the file names, it would go to whoever runs that server.
            // The file naming OpenAI's endpoint itself, or the environment's, is no other server.
            (Some(url), env_url)
                if [Some(DEFAULT_BASE_URL), env_url.as_deref()]
                    .into_iter()
                    .flatten()
                    .any(|same| same.trim_end_matches('/') == url.trim_end_matches('/')) =>
            {
                (url, file_key.or_else(env_key))
            }
            (Some(url), _) => (url, file_key),
            (None, Some(url)) => match url_problem(&url) {
                None => (url, file_key.or_else(env_key)),
                Some(why) => {
                    return Err(LlmConfigError::BadEnvUrl { url, why }.redacting(&keys));
                }
            },
            (None, None) => match file_key.or_else(env_key) {
                Some(key) => (DEFAULT_BASE_URL.to_string(), Some(key)),
                None => return Ok(Err(
                    "no API key (llm.api_key, OPENAI_API_KEY) and no endpoint (llm.base_url, OPENAI_BASE_URL) set",
                )),
            },
        };
        if key.as_ref().is_some_and(|k| !key_sendable(k)) {
            // The file's key was checked by `validate`: this one is the environment's.
            return Err(LlmConfigError::BadKey { from_env: true });
        }
        // reqwest sends a URL's user name and password as Basic authorization, beside the key's
        // Bearer header: a server would see two and pick either.
        // The file's own pair was refused by `validate`: here one of the two is the environment's.
        if let Some(key) = &key {
            if has_userinfo(&base_url) {
                return Err(LlmConfigError::CredentialsTwice {
                    url_from_env,
                    key_from_env: self.api_key.as_ref() != Some(key),
                });
            }
        }
        Ok(Ok(ResolvedLlm {
            base_url: base_url.trim_end_matches('/').to_string(),
            api_key: key.unwrap_or_default(),
            config: self.clone(),
        }))
    }

    /// Checks the file's values (not the environment's: see [`Self::resolve_with`]).
    pub fn validate(&self) -> Result<(), LlmConfigError> {
        if let Some(url) = self.base_url.as_deref().map(str::trim) {
            if let Some(why) = url_problem(url).filter(|_| !url.is_empty()) {
                let file_key = self.api_key.iter().collect::<Vec<_>>();
                return Err(LlmConfigError::BadUrl {
                    url: url.to_string(),
                    why,
                }
                .redacting(&file_key));
            }
        }
        if self.api_key.as_ref().is_some_and(|k| !key_sendable(k)) {
            return Err(LlmConfigError::BadKey { from_env: false });
        }
        // Both in the file: a mistake `kpo check` can see. A pair the environment completes is
        // refused by `resolve_with`, which `kpo run` alone calls.
        if self.api_key.as_ref().is_some_and(|k| !k.is_empty())
            && self.base_url.as_deref().is_some_and(has_userinfo)
        {
            return Err(LlmConfigError::CredentialsTwice {
                url_from_env: false,
                key_from_env: false,
            });
        }
        if self.model.trim().is_empty() {
            return Err(LlmConfigError::NoModel);
        }
        // Only its form: the name is looked up at each attempt, so that one not known yet (a
        // service's dynamic user, a directory not up at boot) does not keep the agent from
        // starting (s59 review2 R2-9, as for `approvals.webhook_user`).
        if self
            .server_user
            .as_deref()
            .is_some_and(|u| u.trim().is_empty())
        {
            return Err(LlmConfigError::OutOfRange {
                key: "llm.server_user",
                value: "\"\"".into(),
                allowed: "a user, by name or uid".into(),
            });
        }
        for (name, v) in [
            ("llm.every_windows", self.every_windows),
            ("llm.max_tokens", u64::from(self.max_tokens)),
            ("llm.max_attempts", u64::from(self.max_attempts)),
            ("llm.breaker_failures", u64::from(self.breaker_failures)),
            ("llm.prompt_windows", self.prompt_windows as u64),
        ] {
            if v == 0 {
                return Err(LlmConfigError::Zero(name));
            }
        }
        if self.timeout.is_zero() {
            return Err(LlmConfigError::ZeroTimeout);
        }
        for (key, v, min, max) in [
            ("llm.timeout", self.timeout, Duration::ZERO, MAX_TIMEOUT),
            (
                "llm.breaker_cooloff",
                self.breaker_cooloff,
                Duration::ZERO,
                MAX_BREAKER_COOLOFF,
            ),
            (
                "llm.min_interval",
                self.min_interval,
                Duration::ZERO,
                MAX_MIN_INTERVAL,
            ),
            (
                "llm.retry_backoff",
                self.retry_backoff,
                MIN_RETRY_BACKOFF,
                MAX_RETRY_BACKOFF,
            ),
        ] {
            if v < min || v > max {
                return Err(LlmConfigError::OutOfRange {
                    key,
                    value: humantime::format_duration(v).to_string(),
                    allowed: if min.is_zero() {
                        format!("at most {}", humantime::format_duration(max))
                    } else {
                        format!(
                            "between {} and {}",
                            humantime::format_duration(min),
                            humantime::format_duration(max)
                        )
                    },
                });
            }
        }
        for (key, v, max) in [
            (
                "llm.max_attempts",
                self.max_attempts as usize,
                MAX_ATTEMPTS as usize,
            ),
            (
                "llm.prompt_windows",
                self.prompt_windows,
                MAX_PROMPT_WINDOWS,
            ),
        ] {
            if v > max {
                return Err(LlmConfigError::OutOfRange {
                    key,
                    value: v.to_string(),
                    allowed: format!("between 1 and {max}"),
                });
            }
        }
        Ok(())
    }
}

fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(d)?;
    // Not quoting the value: the agent's configuration error leaves quoted text out anyway.
    humantime::parse_duration(&text)
        .map_err(|e| serde::de::Error::custom(format!("not a duration: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |k| {
            pairs
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn off_without_key_or_endpoint() {
        let c = LlmConfig::default();
        let why = c.resolve_with(env(&[])).unwrap().unwrap_err();
        assert!(why.contains("OPENAI_API_KEY"), "{why}");
        let off = LlmConfig {
            enabled: false,
            ..LlmConfig::default()
        };
        assert!(off
            .resolve_with(env(&[("OPENAI_API_KEY", "sk-x")]))
            .unwrap()
            .is_err());
    }

    #[test]
    fn key_alone_uses_openai_and_endpoint_alone_needs_no_key() {
        let c = LlmConfig::default();
        let r = c
            .resolve_with(env(&[("OPENAI_API_KEY", "sk-secret-123")]))
            .unwrap()
            .unwrap();
        assert_eq!(r.base_url, DEFAULT_BASE_URL);
        assert_eq!(r.api_key.expose(), "sk-secret-123");
        let local = c
            .resolve_with(env(&[("OPENAI_BASE_URL", "http://127.0.0.1:11434/v1/")]))
            .unwrap()
            .unwrap();
        assert_eq!(
            local.completions_url(),
            "http://127.0.0.1:11434/v1/chat/completions"
        );
        assert!(local.api_key.is_empty());
        let file = LlmConfig {
            base_url: Some("http://10.0.0.1:8000/v1".into()),
            ..LlmConfig::default()
        };
        let r = file
            .resolve_with(env(&[("OPENAI_BASE_URL", "http://elsewhere/v1")]))
            .unwrap()
            .unwrap();
        assert_eq!(r.base_url, "http://10.0.0.1:8000/v1", "the file wins");
        // The environment's key goes to OpenAI or to the environment's endpoint, never to a
        // server only the file names.
        let r = file
            .resolve_with(env(&[("OPENAI_API_KEY", "sk-secret-123")]))
            .unwrap()
            .unwrap();
        assert_eq!(r.base_url, "http://10.0.0.1:8000/v1");
        assert!(r.api_key.is_empty(), "the file's endpoint gets no env key");
        // Unless the file names OpenAI's endpoint itself (or the environment's).
        for named in [DEFAULT_BASE_URL.to_string(), format!("{DEFAULT_BASE_URL}/")] {
            let r = LlmConfig {
                base_url: Some(named),
                ..LlmConfig::default()
            }
            .resolve_with(env(&[("OPENAI_API_KEY", "sk-secret-123")]))
            .unwrap()
            .unwrap();
            assert_eq!(r.api_key.expose(), "sk-secret-123");
        }
        let r = c
            .resolve_with(env(&[
                ("OPENAI_API_KEY", "sk-secret-123"),
                ("OPENAI_BASE_URL", "https://gateway.example/v1"),
            ]))
            .unwrap()
            .unwrap();
        assert_eq!(r.base_url, "https://gateway.example/v1");
        assert_eq!(
            r.api_key.expose(),
            "sk-secret-123",
            "both from the environment"
        );
        let r = LlmConfig {
            api_key: Some(ApiKey::new("sk-file")),
            ..file.clone()
        }
        .resolve_with(env(&[("OPENAI_API_KEY", "sk-secret-123")]))
        .unwrap()
        .unwrap();
        assert_eq!(
            r.api_key.expose(),
            "sk-file",
            "the file's key goes to the file's server"
        );
        assert!(matches!(
            LlmConfig {
                base_url: Some("ftp://x".into()),
                ..LlmConfig::default()
            }
            .resolve_with(env(&[])),
            Err(LlmConfigError::BadUrl { .. })
        ));
        // A user name and password in the URL go out as Basic authorization: not beside a key.
        let proxy = LlmConfig {
            base_url: Some("https://bob:tok-123@proxy.example/v1".into()),
            ..LlmConfig::default()
        };
        let r = proxy.resolve_with(env(&[])).unwrap().unwrap();
        assert!(r.api_key.is_empty());
        let e = LlmConfig {
            api_key: Some(ApiKey::new("sk-file")),
            ..proxy.clone()
        }
        .resolve_with(env(&[]))
        .unwrap_err();
        assert_eq!(e.key(), "llm.base_url");
        assert!(e.to_string().contains("keep one"), "{e}");
        assert!(!e.to_string().contains("tok-123"), "{e}");
        let e = c
            .resolve_with(env(&[
                ("OPENAI_API_KEY", "sk-secret-123"),
                ("OPENAI_BASE_URL", "https://bob:tok-123@gateway.example/v1"),
            ]))
            .unwrap_err();
        assert_eq!(e.key(), "OPENAI_BASE_URL");
        let bad_env = c
            .resolve_with(env(&[("OPENAI_BASE_URL", "localhost:8080")]))
            .unwrap_err();
        assert_eq!(
            bad_env.to_string(),
            "OPENAI_BASE_URL is \"localhost:8080\"; it must start with http:// or https://"
        );
        assert_eq!(
            LlmConfig {
                every_windows: 0,
                ..LlmConfig::default()
            }
            .validate()
            .unwrap_err()
            .to_string(),
            "llm.every_windows must be at least 1"
        );
    }

    /// An endpoint that cannot be one stops the agent at start, naming the key (or variable):
    /// not only one without `http(s)://`.
    #[test]
    fn a_base_url_that_is_no_url_with_a_host_is_refused() {
        for (url, why) in [
            (
                "http://exa mple.com/v1",
                "it is not a valid URL (invalid international domain name)",
            ),
            (
                "https://h:99999/v1",
                "it is not a valid URL (invalid port number)",
            ),
            ("http://", "it is not a valid URL (empty host)"),
            ("http://:8080/v1", "it is not a valid URL (empty host)"),
            ("ftp://x", "it must start with http:// or https://"),
            (
                "https://h.example/openai/deployments/d?api-version=2024-06-01",
                "it has a query or a fragment (? or #), which /chat/completions would be \
                 appended to: give the API root alone",
            ),
            (
                "http://127.0.0.1:8080/v1#x",
                "it has a query or a fragment (? or #), which /chat/completions would be \
                 appended to: give the API root alone",
            ),
            (
                "https://api.openai.com/v1/chat/completions/",
                "it ends in /chat/completions, which is appended to it: give the API root \
                 (such as https://api.openai.com/v1)",
            ),
        ] {
            let e = LlmConfig {
                base_url: Some(url.into()),
                ..LlmConfig::default()
            }
            .validate()
            .unwrap_err();
            assert_eq!(e.key(), "llm.base_url", "{url}");
            // A query or a fragment is where a token goes: not shown (s64 story CO-1).
            let shown = match url.find(['?', '#']) {
                Some(at) => format!("{}[redacted]", &url[..=at]),
                None => url.to_string(),
            };
            assert_eq!(e.to_string(), format!("llm.base_url is {shown:?}; {why}"));
            let e = LlmConfig::default()
                .resolve_with(env(&[("OPENAI_BASE_URL", url)]))
                .unwrap_err();
            assert_eq!(e.key(), "OPENAI_BASE_URL", "{url}");
            assert_eq!(
                e.to_string(),
                format!("OPENAI_BASE_URL is {shown:?}; {why}")
            );
        }
        // The parser's message never quotes the URL, so a password in it stays out.
        let e = LlmConfig {
            base_url: Some("https://bob:tok-123@h:99999/v1".into()),
            ..LlmConfig::default()
        }
        .validate()
        .unwrap_err();
        assert!(!e.to_string().contains("tok-123"), "{e}");
        for good in [
            "http://127.0.0.1:11434/v1",
            "https://api.openai.com/v1/",
            "http://[::1]:8080",
        ] {
            let c = LlmConfig {
                base_url: Some(good.into()),
                ..LlmConfig::default()
            };
            assert_eq!(c.validate(), Ok(()), "{good}");
            assert!(c.resolve_with(env(&[])).unwrap().is_ok(), "{good}");
        }
    }

    /// A password with an unencoded `/`, `?` or `#` ends the URL's host early: the `@` after it
    /// was taken for part of the path, so the password was shown (and `bob:123#x@proxy` read as
    /// host `bob`, port 123, with no credentials for the key to clash with). Such a URL is
    /// refused, the password shown nowhere.
    #[test]
    fn a_password_with_a_slash_or_hash_is_refused_unshown() {
        for (url, secret) in [
            ("https://bob:tok/en@proxy/v1", "tok/en"),
            ("https://bob:123#x@proxy/v1", "123#x"),
            ("https://bob:a?b@proxy/v1", "a?b"),
        ] {
            assert_eq!(without_userinfo(url), "https://[redacted]@proxy/v1");
            let file = LlmConfig {
                base_url: Some(url.into()),
                api_key: Some(ApiKey::new("sk-key")),
                ..LlmConfig::default()
            };
            let env_url = LlmConfig::default().resolve_with(env(&[("OPENAI_BASE_URL", url)]));
            for e in [file.validate().unwrap_err(), env_url.unwrap_err()] {
                let text = e.to_string();
                assert!(!text.contains(secret), "{text}");
                assert!(
                    text.ends_with("%2F, %3F, %23 and %40 (and any other @ as %40)"),
                    "{text}"
                );
                assert!(text.contains("\"https://[redacted]@proxy/v1\""), "{text}");
            }
        }
        // Encoded, it is a URL with credentials: refused beside a key, as ever.
        let encoded = LlmConfig {
            base_url: Some("https://bob:123%23x@proxy/v1".into()),
            api_key: Some(ApiKey::new("sk-key")),
            ..LlmConfig::default()
        };
        let twice = LlmConfigError::CredentialsTwice {
            url_from_env: false,
            key_from_env: false,
        };
        assert_eq!(encoded.validate(), Err(twice.clone()));
        assert_eq!(encoded.resolve_with(env(&[])).unwrap_err(), twice);
        let at_in_path = LlmConfig {
            base_url: Some("http://127.0.0.1:8080/v1/@x".into()),
            ..LlmConfig::default()
        };
        assert!(at_in_path.validate().is_err());
    }

    /// Defect: a file with both a password in `base_url` and an `api_key` passed `validate`, so
    /// `kpo check` called it valid, and only `kpo run` refused it. The file's pair is refused by
    /// `validate`; a pair the environment completes, by `resolve_with`, naming where each is.
    #[test]
    fn a_password_and_a_key_are_refused_where_both_are_known() {
        let url = "https://bob:pw@127.0.0.1:9/v1";
        let file = LlmConfig {
            base_url: Some(url.into()),
            api_key: Some(ApiKey::new("sk-1")),
            ..LlmConfig::default()
        };
        let e = file.validate().unwrap_err();
        assert_eq!(
            e,
            LlmConfigError::CredentialsTwice {
                url_from_env: false,
                key_from_env: false
            }
        );
        assert!(!e.from_env());
        assert!(e.to_string().starts_with(
            "llm.base_url carries a user name and password, and an API key is set too \
             (llm.api_key)"
        ));
        // An empty key is no key.
        let empty_key = LlmConfig {
            api_key: Some(ApiKey::new("")),
            ..file.clone()
        };
        assert_eq!(empty_key.validate(), Ok(()));
        // The file's URL with the environment's key (the file names the environment's server).
        let url_only = LlmConfig {
            api_key: None,
            ..file.clone()
        };
        assert_eq!(url_only.validate(), Ok(()));
        let e = url_only
            .resolve_with(env(&[("OPENAI_BASE_URL", url), ("OPENAI_API_KEY", "sk-2")]))
            .unwrap_err();
        assert_eq!(e.key(), "llm.base_url");
        assert!(e.reason().contains("(OPENAI_API_KEY)"), "{e}");
        // The environment's URL with the file's key, and with the environment's.
        let key_only = LlmConfig {
            base_url: None,
            ..file
        };
        let e = key_only
            .resolve_with(env(&[("OPENAI_BASE_URL", url)]))
            .unwrap_err();
        assert_eq!((e.key(), e.from_env()), ("OPENAI_BASE_URL", true));
        assert!(e.reason().contains("(llm.api_key)"), "{e}");
        let e = LlmConfig::default()
            .resolve_with(env(&[("OPENAI_BASE_URL", url), ("OPENAI_API_KEY", "sk-2")]))
            .unwrap_err();
        assert_eq!((e.key(), e.from_env()), ("OPENAI_BASE_URL", true));
        assert!(e.reason().contains("(OPENAI_API_KEY)"), "{e}");
    }

    /// A key with a control character inside it could never be sent: refused at start, naming
    /// where it came from but not showing it, rather than failing every request as `connect`.
    #[test]
    fn a_key_that_cannot_be_a_header_is_refused_at_start() {
        const SECRET: &str = "sk-abc\ndef";
        let file = LlmConfig {
            api_key: Some(ApiKey::new(format!(" {SECRET}\n"))),
            ..LlmConfig::default()
        };
        let e = file.validate().unwrap_err();
        assert_eq!(e, LlmConfigError::BadKey { from_env: false });
        assert_eq!(e.key(), "llm.api_key");
        assert_eq!(file.resolve_with(env(&[])).unwrap_err(), e);
        let e = LlmConfig::default()
            .resolve_with(env(&[("OPENAI_API_KEY", "sk-abc\u{7f}def")]))
            .unwrap_err();
        assert_eq!(e, LlmConfigError::BadKey { from_env: true });
        assert_eq!(e.key(), "OPENAI_API_KEY");
        for text in [e.to_string(), file.validate().unwrap_err().to_string()] {
            assert!(!text.contains("abc") && !text.contains("def"), "{text}");
            assert!(text.contains("holds a control character"), "{text}");
        }
        // A key the file does not use (another server is named) is not looked at.
        let other = LlmConfig {
            base_url: Some("http://127.0.0.1:8080/v1".into()),
            ..LlmConfig::default()
        };
        let r = other
            .resolve_with(env(&[("OPENAI_API_KEY", SECRET)]))
            .unwrap()
            .unwrap();
        assert!(r.api_key.is_empty());
        // Ends are trimmed; a tab or a non-ASCII letter inside goes out as it is.
        for fine in ["\tsk-abc\n", "sk-a\tb", "sk-é"] {
            let c = LlmConfig {
                api_key: Some(ApiKey::new(fine)),
                ..LlmConfig::default()
            };
            assert_eq!(c.validate(), Ok(()), "{fine:?}");
        }
    }

    fn error(c: LlmConfig) -> String {
        let e = c.validate().unwrap_err();
        assert!(matches!(e, LlmConfigError::OutOfRange { .. }), "{e:?}");
        e.to_string()
    }

    #[test]
    fn waits_and_attempts_are_bounded() {
        let d = LlmConfig::default;
        assert_eq!(d().validate(), Ok(()), "the defaults are valid");
        assert_eq!(
            error(LlmConfig {
                timeout: Duration::from_secs(601),
                ..d()
            }),
            "llm.timeout is 10m 1s; it must be at most 10m"
        );
        assert_eq!(
            error(LlmConfig {
                timeout: Duration::MAX,
                ..d()
            })
            .split(';')
            .nth(1),
            Some(" it must be at most 10m")
        );
        assert_eq!(
            error(LlmConfig {
                breaker_cooloff: Duration::from_secs(86_401),
                ..d()
            }),
            "llm.breaker_cooloff is 1day 1s; it must be at most 1day"
        );
        assert_eq!(
            error(LlmConfig {
                min_interval: Duration::from_secs(86_401),
                ..d()
            }),
            "llm.min_interval is 1day 1s; it must be at most 1day"
        );
        assert!(LlmConfig {
            min_interval: Duration::ZERO,
            ..d()
        }
        .validate()
        .is_ok());
        assert_eq!(
            error(LlmConfig {
                retry_backoff: Duration::from_millis(9),
                ..d()
            }),
            "llm.retry_backoff is 9ms; it must be between 10ms and 1m"
        );
        assert_eq!(
            error(LlmConfig {
                retry_backoff: Duration::from_secs(61),
                ..d()
            }),
            "llm.retry_backoff is 1m 1s; it must be between 10ms and 1m"
        );
        assert_eq!(
            error(LlmConfig {
                max_attempts: 11,
                ..d()
            }),
            "llm.max_attempts is 11; it must be between 1 and 10"
        );
        assert_eq!(
            error(LlmConfig {
                prompt_windows: usize::MAX,
                ..d()
            }),
            format!(
                "llm.prompt_windows is {}; it must be between 1 and 100",
                usize::MAX
            )
        );
        let at_the_bounds = LlmConfig {
            timeout: MAX_TIMEOUT,
            breaker_cooloff: MAX_BREAKER_COOLOFF,
            retry_backoff: MIN_RETRY_BACKOFF,
            max_attempts: MAX_ATTEMPTS,
            prompt_windows: MAX_PROMPT_WINDOWS,
            ..d()
        };
        assert_eq!(at_the_bounds.validate(), Ok(()));
        let from_toml: LlmConfig = toml::from_str(r#"timeout = "1h""#).unwrap();
        assert_eq!(from_toml.validate().unwrap_err().key(), "llm.timeout");
    }

    /// The agent's configuration error never quotes a value (it may be a key), so a message that
    /// began with the quoted value read "line 2, column 11: is not a duration", without a subject.
    #[test]
    fn a_bad_duration_reads_whole_without_its_quoted_value() {
        let err = crate::config::Config::from_toml("[llm]\ntimeout = \"-5s\"", "bad.toml")
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "config file bad.toml: line 2, column 11: not a duration (expected number at 0): a \
             string with its unit, longer than 0, at most \"10m\", in `llm.timeout`"
        );
    }

    /// A server's user this host does not know is no reason to refuse the configuration (a
    /// dynamic user, a directory not up at boot: s59 review2 R2-9); nothing is sent to a server
    /// on this host while it is not known.
    #[test]
    fn a_server_user_this_host_does_not_know_is_looked_up_at_each_attempt() {
        let c: LlmConfig = toml::from_str(
            "base_url = \"http://127.0.0.1:8080/v1\"\napi_key = \"k\"\nserver_user = \"no-such-user-kpo\"",
        )
        .unwrap();
        let r = c.resolve_with(env(&[])).unwrap().unwrap();
        assert_eq!(
            r.trusted_servers().unwrap_err(),
            "llm.server_user: no user named \"no-such-user-kpo\" on this host: nothing is sent \
             to a listener on this host"
        );
        let blank: LlmConfig = toml::from_str(
            "base_url = \"http://127.0.0.1:8080/v1\"\napi_key = \"k\"\nserver_user = \" \"",
        )
        .unwrap();
        assert!(blank.resolve_with(env(&[])).is_err());
    }

    /// A server's user is a name or a uid, in a string or a bare integer (s59 story BM-3: `0`
    /// was refused as "expected a string").
    #[test]
    fn the_server_user_is_a_name_or_a_uid_written_either_way() {
        for (text, user) in [
            ("server_user = \"ollama\"", Some("ollama")),
            ("server_user = \"998\"", Some("998")),
            ("server_user = 998", Some("998")),
            ("server_user = 0", Some("0")),
            ("", None),
        ] {
            let c: LlmConfig = toml::from_str(text).unwrap();
            assert_eq!(c.server_user.as_deref(), user, "{text}");
        }
        for (text, says) in [
            ("server_user = -1", "-1 is not a uid (0 to 4294967295)"),
            ("server_user = 4294967296", "4294967296 is not a uid"),
            (
                "server_user = true",
                "a user name or uid (\"ollama\", \"998\" or 998)",
            ),
        ] {
            let e = toml::from_str::<LlmConfig>(text).unwrap_err().to_string();
            assert!(e.contains(says), "{text}: {e}");
        }
    }

    #[test]
    fn debug_redacts_the_key_and_toml_parses() {
        let c: LlmConfig = toml::from_str(
            r#"
            base_url = "http://127.0.0.1:8080/v1"
            api_key = "sk-very-secret"
            timeout = "200ms"
            every_windows = 5
            "#,
        )
        .unwrap();
        assert_eq!(c.timeout, Duration::from_millis(200));
        let r = c.resolve_with(env(&[])).unwrap().unwrap();
        for text in [
            format!("{c:?}"),
            format!("{r:?}"),
            format!("{:?}", r.api_key),
        ] {
            assert!(!text.contains("sk-very-secret"), "{text}");
            assert!(text.contains("[redacted]"), "{text}");
        }
        assert!(toml::from_str::<LlmConfig>("bogus = 1").is_err());
        assert_eq!(
            r.api_key.redact("bad key sk-very-secret given"),
            "bad key [redacted] given"
        );
        // s48 storyO O-1: format characters inside the key, which cleaning a text for showing
        // removes, do not hide it.
        assert_eq!(
            r.api_key.redact(
                "zw sk-\u{200b}very-secret, bidi sk-very\u{202a}-secret, shy sk-ve\u{ad}ry-secret\u{200b}!"
            ),
            "zw [redacted], bidi [redacted], shy [redacted]\u{200b}!"
        );
        assert_eq!(
            r.api_key
                .redact("tab sk-very\t-secret, nul sk-\0very-secret"),
            "tab [redacted], nul [redacted]"
        );
        assert_eq!(
            r.api_key
                .redact("sk-very-secre sk-very-secretsk-very-secret é"),
            "sk-very-secre [redacted][redacted] é"
        );
        // A key under 4 bytes is never replaced; a placeholder of 4 or more is, wherever it
        // appears (docs/llm.md).
        assert_eq!(ApiKey::new("-").redact("a-b - c"), "a-b - c");
        assert_eq!(
            ApiKey::new("ollama").redact("ollama listener"),
            "[redacted] listener"
        );
    }

    /// A key's own backslash, written escaped (`\\`, `\u005c`), is the key (s56 review2 R2-2);
    /// a body of unended `\u{` is read once, not searched to its end at every place (R2-1: 4 MiB
    /// of it held the agent's thread for minutes).
    #[test]
    fn escapes_are_matched_in_bounded_time_and_a_keys_backslash_too() {
        let key = ApiKey::new(r"pw\SECRET");
        for echoed in [
            r"pw\SECRET",
            r"pw\\SECRET",
            r"pw\u005cSECRET",
            r"\u0070w\\SECRET",
        ] {
            assert_eq!(
                key.redact(&format!("a {echoed} b")),
                "a [redacted] b",
                "{echoed}"
            );
        }
        let body = format!("{}{}", r"\u{".repeat(500_000), r"pw\SECRET");
        assert!(key.redact(&body).ends_with("[redacted]"));
    }

    /// s64 story CO-1: a refused URL was shown whole in the start error, a key in its query,
    /// fragment or path included.
    #[test]
    fn a_refused_url_shows_no_key() {
        let key = "sk-SECRETKEY-CO-1234567890";
        let in_the_file = LlmConfig {
            base_url: Some(format!(
                "https://example.com/x?api-version=2024&api-key={key}"
            )),
            api_key: Some(ApiKey::new(key)),
            ..LlmConfig::default()
        };
        let error = in_the_file.resolve_with(|_| None).unwrap_err().to_string();
        assert!(!error.contains("SECRETKEY"), "{error}");
        assert!(
            error.contains(r#""https://example.com/x?[redacted]""#),
            "{error}"
        );
        for url in [
            format!("http://127.0.0.1:45900/v1#{key}"),
            format!("http://127.0.0.1:99999/{key}/v1"),
            format!("http://127.0.0.1:45900/{key}/chat/completions"),
            // An @ after the ? (s64 review2 R2-7): a token that is not the configured key.
            "https://gw.example/v1?user=ops@corp.example&api-key=SECRETKEY-other".to_string(),
        ] {
            let env = |k: &str| match k {
                "OPENAI_BASE_URL" => Some(url.clone()),
                "OPENAI_API_KEY" => Some(key.to_string()),
                _ => None,
            };
            let error = LlmConfig::default().resolve_with(env).unwrap_err();
            assert!(matches!(error, LlmConfigError::BadEnvUrl { .. }), "{error}");
            assert!(!error.to_string().contains("SECRETKEY"), "{error}");
        }
    }

    /// A key over plain http is only quiet for this host itself.
    #[test]
    fn a_key_over_plain_http_to_another_host_is_in_clear() {
        let resolved = |url: &str, key: &str| ResolvedLlm {
            base_url: url.into(),
            api_key: ApiKey::new(key),
            config: LlmConfig::default(),
        };
        for url in [
            "http://10.0.0.5:8000/v1",
            "http://vllm.internal/v1",
            "http://[fd00::1]:8000/v1",
        ] {
            assert!(resolved(url, "sk-x").key_in_clear(), "{url}");
            assert!(!resolved(url, "").key_in_clear(), "{url} without a key");
            // The URL's user name and password go out as Basic (s64 story CO-2).
            let with_userinfo = url.replacen("http://", "http://bob:sk-pass@", 1);
            assert!(
                resolved(&with_userinfo, "").key_in_clear(),
                "{with_userinfo}"
            );
            let proxy = |k: &str| (k == "HTTP_PROXY").then(|| "http://proxy:3128".to_string());
            assert!(resolved(&with_userinfo, "").key_proxy_with(proxy).is_some());
        }
        for url in [
            "https://10.0.0.5:8000/v1",
            "http://127.0.0.1:11434/v1",
            "http://127.1.2.3/v1",
            "http://localhost:8000/v1",
            "http://[::1]:8000/v1",
        ] {
            assert!(!resolved(url, "sk-x").key_in_clear(), "{url}");
        }
    }

    /// A proxy reads the key only on the way to a plain http endpoint elsewhere, which is in
    /// clear anyway; to this host there is no proxy, and to https the key is tunnelled.
    #[test]
    fn the_proxy_that_would_read_the_key_is_named() {
        let resolved = |url: &str, key: &str| ResolvedLlm {
            base_url: url.into(),
            api_key: ApiKey::new(key),
            config: LlmConfig::default(),
        };
        let env = |k: &str| {
            matches!(k, "HTTP_PROXY" | "HTTPS_PROXY").then(|| "http://proxy.corp:3128".to_string())
        };
        let r = resolved("http://vllm.internal/v1", "sk-x");
        assert_eq!(
            r.key_proxy_with(env).as_deref(),
            Some("http://proxy.corp:3128/")
        );
        assert!(r.key_in_clear());
        for (url, key) in [
            ("http://vllm.internal/v1", ""),
            ("http://127.0.0.1:11434/v1", "sk-x"),
            ("http://localhost:8000/v1", "sk-x"),
            ("https://api.openai.com/v1", "sk-x"),
        ] {
            assert_eq!(resolved(url, key).key_proxy_with(env), None, "{url}");
        }
        assert_eq!(r.key_proxy_with(|_| None), None);
    }

    /// What is redacted, URL by URL. Only the authority's userinfo is a URL parser's
    /// credentials; an `@` after the host (in the path, query or fragment) is redacted up to as
    /// well, on purpose: in text an operator typed it may end a password holding an unencoded
    /// `/`, `?` or `#` (such an endpoint is refused, and its error shows the URL).
    #[test]
    fn what_without_userinfo_redacts_in_each_part_of_a_url() {
        for (url, shown) in [
            ("https://bob:tok@host/v1", "https://[redacted]@host/v1"),
            ("https://tok@host/v1", "https://[redacted]@host/v1"),
            ("https://host/v1", "https://host/v1"),
            ("https://host/v1/@x", "https://[redacted]@x"),
            ("https://host/v1?x=a@b", "https://[redacted]@b"),
            ("https://host/v1#a@b", "https://[redacted]@b"),
            ("https://bob:tok@host/v1?x=a@b", "https://[redacted]@b"),
            ("http://[::1]:8080/v1", "http://[::1]:8080/v1"),
            (
                "http://bob:tok@[::1]:8080/v1",
                "http://[redacted]@[::1]:8080/v1",
            ),
            ("bob:tok@host/v1", "[redacted]@host/v1"),
            ("host/v1", "host/v1"),
        ] {
            assert_eq!(without_userinfo(url), shown, "{url}");
        }
    }

    /// Credentials in the endpoint's URL (a proxy's `user:token@`) are shown nowhere: not in the
    /// log line, the `Debug` output or a configuration error.
    #[test]
    fn credentials_in_the_base_url_are_not_shown() {
        assert_eq!(
            without_userinfo("https://bob:tok-123@proxy.example:8443/v1?a=b"),
            "https://[redacted]@proxy.example:8443/v1?a=b"
        );
        assert_eq!(
            without_userinfo("http://127.0.0.1:8080/v1/@x"),
            "http://[redacted]@x",
            "an @ in the path is redacted up to: it could end a password holding a /"
        );
        assert_eq!(
            without_userinfo("https://bob:p@ss@proxy/v1"),
            "https://[redacted]@proxy/v1"
        );
        assert_eq!(without_userinfo("bob:tok-123@host"), "[redacted]@host");
        assert_eq!(
            without_userinfo("bob:tok-123@proxy/v1?next=http://x"),
            "[redacted]@proxy/v1?next=http://x",
            "a :// later in the text is not the scheme's"
        );
        assert_eq!(
            without_userinfo("\"https://bob:tok-123@proxy/v1\""),
            "\"https://[redacted]@proxy/v1\"",
            "a mistyped scheme still has its credentials found"
        );
        let c = LlmConfig {
            base_url: Some("https://bob:tok-123@proxy.example/v1".into()),
            ..LlmConfig::default()
        };
        let r = c.resolve_with(env(&[])).unwrap().unwrap();
        assert_eq!(r.shown_base_url(), "https://[redacted]@proxy.example/v1");
        assert_eq!(
            r.completions_url(),
            "https://bob:tok-123@proxy.example/v1/chat/completions",
            "still used to connect"
        );
        let client = super::super::LlmClient::new(r.clone()).unwrap();
        let bad = LlmConfig {
            base_url: Some("ftp://bob:tok-123@host/".into()),
            ..LlmConfig::default()
        };
        let bad_env = LlmConfig::default()
            .resolve_with(env(&[("OPENAI_BASE_URL", "bob:tok-123@host")]))
            .unwrap_err();
        for text in [
            format!("{c:?}"),
            format!("{r:?}"),
            format!("{client:?}"),
            bad.validate().unwrap_err().to_string(),
            bad_env.to_string(),
        ] {
            assert!(!text.contains("tok-123"), "{text}");
            assert!(text.contains("[redacted]@"), "{text}");
        }
    }

    /// s57 story BE-6: `api_key = 982451653` (no quotes) was refused with serde's "invalid
    /// type: integer `982451653`", the key shown; now what it is, not its value.
    #[test]
    fn a_key_that_is_no_string_is_refused_without_showing_it() {
        for (value, what) in [
            ("982451653", "an integer"),
            ("-982451653", "an integer"),
            ("98245.1653", "a number"),
            ("[982451653]", "a list"),
        ] {
            let e = crate::config::Config::from_toml(
                &format!("[llm]\napi_key = {value}\n"),
                "kpo.toml",
            )
            .map(|_| ())
            .expect_err("refused")
            .to_string();
            assert!(!e.contains("982451653") && !e.contains("98245.1653"), "{e}");
            assert!(
                e.contains(&format!(
                    "{what}, not a string: write the key in quotes (the value is not shown here)"
                )),
                "{e}"
            );
        }
        let c =
            crate::config::Config::from_toml("[llm]\napi_key = \"sk-1\"\n", "kpo.toml").unwrap();
        assert!(c.llm.api_key.is_some());
    }
}
