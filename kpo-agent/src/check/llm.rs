//! `kpo check`'s LLM advisor: whether `kpo run` would consult one with this configuration and
//! this shell's environment (its `OPENAI_*`), and, with `--llm`, one consultation as `kpo run`
//! would make it, its outcome shown and nothing applied. Without it an operator learns that the
//! endpoint, the key or the model is wrong only from the running agent's first `llm` event, up to
//! `every_windows` windows after the start (s56 story AY-3).
use serde_json::{json, Value};

use crate::{
    actuate::{open_actuator, param::Target, Roots},
    advise::{
        llm::{
            config::Caution, consult, Consultation, LlmClient, LlmConfig, ParamContext, ResolvedLlm,
        },
        recommendation::WindowRef,
    },
    config::Config,
    policy::Policy,
};

/// What `kpo run` would make of `[llm]` with this environment.
pub(super) enum Advisor {
    On(Box<ResolvedLlm>),
    /// Off, and why (`llm.enabled = false`, no key or endpoint).
    Off(&'static str),
    /// A mistake only the environment makes (`OPENAI_BASE_URL` no URL): `kpo run` would stop.
    Refused(String),
}

impl Advisor {
    pub(super) fn of(config: &LlmConfig, env: impl Fn(&str) -> Option<String>) -> Self {
        match config.resolve_with(env) {
            Ok(Ok(resolved)) => Advisor::On(Box::new(resolved)),
            Ok(Err(why)) => Advisor::Off(why),
            Err(e) => Advisor::Refused(e.to_string()),
        }
    }

    /// Where the key comes from: the file, the environment, or nowhere (a local server).
    fn key_source(resolved: &ResolvedLlm) -> &'static str {
        let url_credentials = reqwest::Url::parse(&resolved.base_url)
            .is_ok_and(|u| !u.username().is_empty() || u.password().is_some());
        if resolved.api_key.is_empty() {
            if url_credentials {
                "the URL's user name and password"
            } else {
                "none"
            }
        } else if resolved
            .config
            .api_key
            .as_ref()
            .is_some_and(|k| !k.is_empty())
        {
            "llm.api_key"
        } else {
            "OPENAI_API_KEY"
        }
    }

    /// What `kpo run` would warn of at its start (or why it would stop), as `kpo check`'s
    /// warnings: the key in clear, `OPENAI_API_KEY` not sent (s57 review1 R1-7, R1-8; story
    /// BE-1: `kpo check --llm` sent the key over plain http without a word).
    pub(super) fn warnings(
        &self,
        config: &LlmConfig,
        env: impl Fn(&str) -> Option<String>,
    ) -> Vec<String> {
        match self {
            Advisor::On(r) => (config.cautions(r, env).into_iter())
                .map(|c| match &c {
                    Caution::KeyThroughProxy(proxy) => format!(
                        "llm: {} (base_url {}, proxy {proxy})",
                        c.text(),
                        r.shown_base_url()
                    ),
                    _ => format!("llm: {} (base_url {})", c.text(), r.shown_base_url()),
                })
                .collect(),
            Advisor::Off(_) => Vec::new(),
            Advisor::Refused(why) => vec![format!(
                "llm: kpo run with this environment would stop at its start: {why}"
            )],
        }
    }

    pub(super) fn to_json(&self) -> Value {
        match self {
            Advisor::On(r) => json!({
                "on": true,
                "base_url": r.shown_base_url(),
                "model": r.config.model,
                "key": Self::key_source(r),
                "every_windows": r.config.every_windows,
                "min_interval": super::shown_duration(r.config.min_interval),
                "timeout": super::shown_duration(r.config.timeout),
            }),
            Advisor::Off(why) => json!({ "on": false, "why": why }),
            Advisor::Refused(why) => json!({ "on": false, "error": why }),
        }
    }

    pub(super) fn to_text(&self) -> String {
        match self {
            Advisor::On(r) => format!(
                "  [llm] on (with this shell's OPENAI_* environment): {}, model {}, key {}; \
                 every {} windows, min_interval {}, timeout {}\n",
                r.shown_base_url(),
                r.config.model,
                Self::key_source(r),
                r.config.every_windows,
                super::shown_duration(r.config.min_interval),
                super::shown_duration(r.config.timeout),
            ),
            Advisor::Off(why) => format!("  [llm] off: {why}\n"),
            Advisor::Refused(why) => {
                format!("  [llm] refused (kpo run would stop with this environment): {why}\n")
            }
        }
    }
}

/// One consultation as `kpo run` would make it, before any window: the parameters it would offer
/// (the policy's exactly named ones and the built-in list, at the host and in the namespaces
/// their entries name, read now), no measurements and no recent changes, validated as `kpo run`
/// validates (against what was offered, then the suggestions of managed parameters dropped).
/// When the policy lets the LLM drive none of them here, nothing is sent: the outcome is
/// `no_parameters`, as `kpo run`'s.
pub(super) struct Probe {
    pub offered: Vec<ParamContext>,
    pub consultation: Consultation,
    /// Parameters in other network namespaces not read, and so not offered: not run as root.
    pub unread_as_user: usize,
}

pub(super) fn probe(
    resolved: ResolvedLlm,
    policy: &Policy,
    config: &Config,
) -> anyhow::Result<Probe> {
    let roots = Roots {
        sys: config.sysfs_root.clone(),
        ..Roots::default()
    };
    let host_netns = crate::policy::own_netns_inode().unwrap_or(0);
    // No journal here: a parameter an operator holds (`kpo yield`) is offered all the same.
    // Another namespace's parameters are read by entering it, which needs root: as another
    // user they are not offered, and the output says so (s57 review2 R2-5: "nothing sent" as if
    // `kpo run` would not ask either).
    let root = nix::unistd::geteuid().is_root();
    let unread = std::cell::Cell::new(0usize);
    let offered = crate::run::llm::offer_among(
        policy,
        host_netns,
        crate::run::llm::candidates(policy, &[], host_netns),
        |_| false,
        |a| {
            let read = open_actuator(a, &roots).and_then(|mut actuator| {
                let cookie = actuator.netns_cookie();
                Ok((actuator.read()?, cookie))
            });
            if read.is_err() && !root && matches!(a.target, Target::Netns { .. }) {
                unread.set(unread.get() + 1);
            }
            read.ok()
        },
    );
    let client = LlmClient::new(resolved)?;
    let window = WindowRef {
        index: 0,
        end: crate::journal::format_ms(crate::journal::now_ms()),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let answers = crate::run::llm::OfferedPolicy::new(&offered);
    let mut consultation = runtime.block_on(consult(&client, &offered, &[], &[], &answers, window));
    crate::run::llm::drop_managed_suggestions(&mut consultation, policy);
    Ok(Probe {
        offered,
        consultation,
        unread_as_user: unread.get(),
    })
}

impl Probe {
    /// Whether `kpo run` would have taken advice from this reply (`ok`), or nothing was asked.
    /// Whether `kpo run` would have taken advice from this reply (`ok`), or would not ask
    /// either; not when nothing was asked only because this user could not read what `kpo run`
    /// would offer.
    pub(super) fn passed(&self) -> bool {
        use crate::advise::llm::Outcome;
        match self.consultation.outcome {
            Outcome::Ok => true,
            Outcome::NoParameters => self.unread_as_user == 0,
            _ => false,
        }
    }

    pub(super) fn to_json(&self) -> Value {
        json!({
            "unread_as_user": self.unread_as_user,
            "offered": self.offered.iter().map(|p| json!({
                "parameter": p.address.to_string(),
                "current": p.current,
                "mode": p.limits.mode,
            })).collect::<Vec<_>>(),
            // The `llm` event's fields, as `kpo run` would write them.
            "consultation": self.consultation,
            "recommendations": (self.consultation.recommendations.iter())
                .chain(&self.consultation.suggestions)
                .collect::<Vec<_>>(),
        })
    }

    pub(super) fn to_text(&self) -> String {
        let c = &self.consultation;
        let unread = match self.unread_as_user {
            0 => String::new(),
            n => format!(
                "  {n} parameter(s) in other network namespaces not read, and not offered: \
                 reading them needs root (kpo run, as root, would offer them)\n"
            ),
        };
        if c.outcome == crate::advise::llm::Outcome::NoParameters {
            if self.unread_as_user > 0 {
                return format!(
                    "llm probe: nothing sent: what the LLM may drive here is in other network \
                     namespaces, which this user cannot read; run kpo check --llm as root\n\
                     {unread}"
                );
            }
            return "llm probe: nothing sent: the policy lets the LLM drive no parameter kpo run \
                    could read here, so kpo run would not consult it either (no_parameters)\n"
                .into();
        }
        let mut out = format!(
            "llm probe: {} in {} ms ({} attempt(s){}{}{})\n",
            c.outcome.name(),
            c.latency_ms,
            c.attempts,
            c.http_status
                .map_or(String::new(), |s| format!(", http_status {s}")),
            // What the last request asked for, said only of a server that answered it
            // (review1 R1-9: "structured output" after a refused connection).
            match (c.http_status, c.structured_output) {
                (None, _) => "",
                (Some(_), true) => ", structured output",
                (Some(_), false) => ", free-form JSON",
            },
            c.total_tokens
                .map_or(String::new(), |t| format!(", {t} tokens")),
        );
        if let Some(e) = &c.error {
            out += &format!("  error: {e}\n");
        }
        out += &unread;
        out += &format!(
            "  offered {}: {}\n",
            self.offered.len(),
            (self.offered.iter())
                .map(|p| format!("{} = {}", p.address, p.current))
                .collect::<Vec<_>>()
                .join(", ")
        );
        for r in &c.recommendations {
            out += &format!(
                "  advice: {} -> {} ({}): {}\n",
                r.parameter,
                r.recommended_value
                    .as_ref()
                    .map_or("-".into(), |v| v.to_string()),
                if r.can_auto_apply {
                    "may apply in auto"
                } else {
                    "for approval"
                },
                r.reason
            );
        }
        for r in &c.suggestions {
            out += &format!("  suggestion: look at {}: {}\n", r.parameter, r.reason);
        }
        if c.outcome == crate::advise::llm::Outcome::Ok
            && c.recommendations.is_empty()
            && c.suggestions.is_empty()
        {
            out += "  advice: none\n";
        }
        for d in c.dropped.iter().chain(&c.dropped_suggestions) {
            // The parameter, as the model named it: details such as "10000000 is outside the
            // policy's bounds" do not (s57 story BE-2).
            out += &format!(
                "  dropped ({}){}: {}\n",
                serde_json::to_value(d.kind)
                    .ok()
                    .and_then(|k| k.as_str().map(str::to_string))
                    .unwrap_or_default(),
                d.parameter
                    .as_deref()
                    .map_or(String::new(), |p| format!(" {p}")),
                d.detail
            );
        }
        out += "  nothing was applied: kpo check only shows what kpo run would take\n";
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn advisor(llm: &str, env: &[(&str, &str)]) -> Advisor {
        let config = Config::from_toml(&format!("[llm]\n{llm}"), "kpo.toml").unwrap();
        Advisor::of(&config.llm, |k| {
            env.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        })
    }

    #[test]
    fn the_advisors_line_says_where_the_key_comes_from_and_never_shows_it() {
        let on = advisor("model = \"m\"", &[("OPENAI_API_KEY", "sk-env-SECRET")]);
        let text = on.to_text();
        assert_eq!(
            text,
            "  [llm] on (with this shell's OPENAI_* environment): https://api.openai.com/v1, \
             model m, key OPENAI_API_KEY; every 10 windows, min_interval 1m, timeout 30s\n"
        );
        assert_eq!(on.to_json()["key"], "OPENAI_API_KEY");
        let file = advisor(
            "base_url = \"https://user:pw-SECRET@llm.example/v1\"\nmodel = \"m\"",
            &[("OPENAI_API_KEY", "sk-env-SECRET")],
        );
        // The file names another server: the environment's key is not sent there; the URL's
        // credentials are.
        assert_eq!(file.to_json()["key"], "the URL's user name and password");
        let env = |k: &str| (k == "OPENAI_API_KEY").then(|| "sk-env-SECRET".to_string());
        let config = |llm: &str| Config::from_toml(&format!("[llm]\n{llm}"), "kpo.toml").unwrap();
        let llm = "base_url = \"https://user:pw-SECRET@llm.example/v1\"\nmodel = \"m\"";
        assert_eq!(
            file.warnings(&config(llm).llm, env),
            [
                "llm: OPENAI_API_KEY is not sent to llm.base_url; set llm.api_key for that server \
              (base_url https://[redacted]@llm.example/v1)"
            ]
        );
        // A key over plain http to another host: kpo run's warning, as kpo check's.
        let llm =
            "base_url = \"http://llm.example/v1\"\napi_key = \"sk-file-SECRET\"\nmodel = \"m\"";
        let clear = Advisor::of(&config(llm).llm, |_| None);
        assert_eq!(
            clear.warnings(&config(llm).llm, |_| None),
            [
                "llm: the LLM API key (or the URL's user name and password) is sent over plain \
              http to a host that is not this one: anyone on the path can read it; use https \
              (base_url http://llm.example/v1)"
            ]
        );
        // The default model against another server (s57 story BD-8); not against OpenAI's.
        let local = "base_url = \"http://127.0.0.1:11434/v1\"";
        let default_model = Advisor::of(&config(local).llm, |_| None);
        assert_eq!(
            default_model.warnings(&config(local).llm, |_| None),
            [
                "llm: llm.model is gpt-4o-mini (the default when it is not set), an OpenAI \
                 model, and the endpoint is not OpenAI's: set llm.model to a model that server \
                 serves (base_url http://127.0.0.1:11434/v1)"
            ]
        );
        let openai = advisor("", &[("OPENAI_API_KEY", "sk-env-SECRET")]);
        assert_eq!(openai.warnings(&config("").llm, env), [] as [String; 0]);
        let shown = file.to_json().to_string() + &file.to_text();
        assert!(!shown.contains("SECRET"), "{shown}");
        let keyed = advisor("api_key = \"sk-file-SECRET\"\nmodel = \"m\"", &[]);
        assert_eq!(keyed.to_json()["key"], "llm.api_key");
        assert!(!keyed.to_text().contains("SECRET"));
    }

    #[test]
    fn an_advisor_off_or_refused_says_why() {
        let off = advisor("enabled = false\napi_key = \"k\"", &[]);
        assert_eq!(
            off.to_text(),
            "  [llm] off: disabled by configuration (llm.enabled = false)\n"
        );
        assert_eq!(
            off.to_json(),
            json!({"on": false, "why": "disabled by configuration (llm.enabled = false)"})
        );
        let refused = advisor("", &[("OPENAI_BASE_URL", "not a url")]);
        let text = refused.to_text();
        assert!(
            text.starts_with("  [llm] refused (kpo run would stop with this environment): ")
                && text.contains("OPENAI_BASE_URL"),
            "{text}"
        );
        assert_eq!(refused.to_json()["on"], false);
        let config = Config::from_toml("[llm]\n", "kpo.toml").unwrap();
        let warned = refused.warnings(&config.llm, |k| {
            (k == "OPENAI_BASE_URL").then(|| "not a url".to_string())
        });
        assert!(
            warned.len() == 1
                && warned[0]
                    .starts_with("llm: kpo run with this environment would stop at its start: "),
            "{warned:?}"
        );
    }
}
