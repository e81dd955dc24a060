//! The optional approval webhook (`[approvals] webhook = "http://..."`): a JSON POST for each
//! approval required or resolved, and for each piece of advice for an application (a
//! recommendation without a value, which no approval carries), with a Slack-compatible `text` and
//! the structured item.
//!
//! Never blocks the agent: notifications go into a bounded queue ([`QUEUE`]) drained by a task of
//! its own, in order; when it is full one is dropped and logged (the oldest end or advice before
//! any pending approval's notice: [`enqueue`]). Each POST is retried
//! with exponential backoff ([`ATTEMPTS`] tries, from [`FIRST_BACKOFF`] doubling up to
//! [`MAX_BACKOFF`]) on a connection error, a timeout, a redirect, a 5xx, 408, 425 or 429; any other
//! 4xx is not retried (the receiver refused it for good). One waiting to be retried is dropped
//! when a later notification about the same approval is queued (its resolution, say); advice is
//! keyed apart ([`Key`]), so it never replaces an approval's notification nor is replaced by one.
//! Every failure is logged with the URL's scheme, host and port ([`shown_url`]) and the approval
//! id (the recommendation id for advice),
//! and what becomes of each notification is counted ([`Outcomes`]), those a reload's stop cuts
//! short included, so that notifications being lost show in monitoring and not only in the log.
//! A receiver on this host over plain http is posted to only when root, the agent's user or
//! `approvals.webhook_user` serves it ([`crate::endpoint_owner`]), looked at before each try.
use std::{
    collections::VecDeque,
    sync::{Arc, Mutex},
    time::Duration,
};

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family},
};
use serde::Serialize;
use tokio::sync::mpsc;
use tracing::{info, warn};

use super::ApprovalItem;
use crate::advise::recommendation::Recommendation;

/// Notifications waiting to be posted.
pub const QUEUE: usize = 64;
/// Tries per notification.
pub const ATTEMPTS: u32 = 8;
pub const FIRST_BACKOFF: Duration = Duration::from_millis(500);
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// One POST's time limit, connection included.
pub const TIMEOUT: Duration = Duration::from_secs(5);

/// What became of a notification taken by the delivery task: each ends in exactly one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The receiver answered 2xx.
    Delivered,
    /// The oldest waiting when more than [`QUEUE`] did, dropped unsent.
    QueueFull,
    /// Dropped unsent (queued, or waiting for its retry) for a later one about the same approval
    /// (or the same advice: [`Key`]).
    Replaced,
    /// Failed [`ATTEMPTS`] times (connection errors, timeouts, redirects, 5xx, 408, 425, 429, a
    /// receiver on this host that is not one to post to: [`Receiver::client_for_this_try`]).
    GivenUp,
    /// A 4xx not retried: the receiver refused it for good.
    Refused,
    /// Dropped unsent, queued or being tried, when a reload removed or replaced the URL.
    Abandoned,
}

impl Outcome {
    pub const ALL: [Outcome; 6] = [
        Outcome::Delivered,
        Outcome::QueueFull,
        Outcome::Replaced,
        Outcome::GivenUp,
        Outcome::Refused,
        Outcome::Abandoned,
    ];

    /// Its `result` label.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Delivered => "delivered",
            Outcome::QueueFull => "queue_full",
            Outcome::Replaced => "replaced",
            Outcome::GivenUp => "given_up",
            Outcome::Refused => "refused",
            Outcome::Abandoned => "abandoned",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    result: &'static str,
}

/// The count of each [`Outcome`]: `kpo_approval_webhook_notifications_total{result}`
/// (docs/metrics.md). One for the agent's run, shared by every webhook it starts, so that a reload
/// naming a new URL goes on counting instead of starting again from 0.
#[derive(Clone, Debug)]
pub struct Outcomes(Family<OutcomeLabels, Counter>);

impl Default for Outcomes {
    /// Every result's series exists from 0, so that the first loss is an increase that `rate()`
    /// and `increase()` see, not a series appearing.
    fn default() -> Outcomes {
        let family = Family::<OutcomeLabels, Counter>::default();
        for outcome in Outcome::ALL {
            let _ = family.get_or_create(&labels(outcome));
        }
        Outcomes(family)
    }
}

fn labels(outcome: Outcome) -> OutcomeLabels {
    OutcomeLabels {
        result: outcome.as_str(),
    }
}

impl Outcomes {
    pub(crate) fn count(&self, outcome: Outcome) {
        self.0.get_or_create(&labels(outcome)).inc();
    }

    /// How many notifications ended so.
    pub fn get(&self, outcome: Outcome) -> u64 {
        self.0.get_or_create(&labels(outcome)).get()
    }

    /// The counters, for the metrics registry (the same counters, not a copy).
    pub fn family(&self) -> Family<OutcomeLabels, Counter> {
        self.0.clone()
    }
}

/// One webhook's notifications not yet ended in an [`Outcome`], shared by its handle and its
/// delivery task, so that those a stop cuts short are counted too ([`Outcome::Abandoned`]), each
/// once: after the stop, what the task may still finish is not counted again.
#[derive(Clone, Debug)]
struct Ledger {
    outcomes: Outcomes,
    /// Notifications queued and not ended; whether the webhook was stopped.
    open: std::sync::Arc<std::sync::Mutex<(u64, bool)>>,
}

impl Ledger {
    fn new(outcomes: Outcomes) -> Self {
        Ledger {
            outcomes,
            open: Default::default(),
        }
    }

    fn queued(&self) {
        self.open.lock().expect("webhook ledger").0 += 1;
    }

    fn ended(&self, outcome: Outcome) {
        let mut open = self.open.lock().expect("webhook ledger");
        if open.1 {
            return;
        }
        open.0 = open.0.saturating_sub(1);
        self.outcomes.count(outcome);
    }

    /// Notifications queued and not ended yet.
    fn open_now(&self) -> u64 {
        self.open.lock().expect("webhook ledger").0
    }

    /// The webhook stopped: every notification still open is abandoned.
    fn stopped(&self) -> u64 {
        let mut open = self.open.lock().expect("webhook ledger");
        let left = std::mem::take(&mut open.0);
        open.1 = true;
        for _ in 0..left {
            self.outcomes.count(Outcome::Abandoned);
        }
        left
    }
}

/// The body of one POST.
#[derive(Debug, Clone, Serialize)]
pub struct Payload {
    /// One line for people (Slack and compatible receivers show it as the message).
    pub text: String,
    pub kpo: Structured,
}

#[derive(Debug, Clone, Serialize)]
pub struct Structured {
    /// `approval_required` or `approval_resolved`, as in the event stream, or `advice` (advice
    /// for an application: [`Payload::advice`]).
    pub event: &'static str,
    pub host: String,
    /// The approval, or the advice: `"approval": {...}` or `"recommendation": {...}`.
    #[serde(flatten)]
    pub about: About,
    /// An approval announced before, announced again (present only then): still pending when
    /// the agent started (the first POST may have been lost with the agent that queued it, or
    /// given up on), when a reload named a new webhook URL (its receiver may not have heard of
    /// it), or another `webhook_user` for a plain-http one (refused until then, it may not have
    /// either). [`Structured::repeat_reason`] tells which. Advice is never announced again.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub repeat: bool,
    /// Why it is announced again, with `repeat` only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repeat_reason: Option<Again>,
}

/// What a notification is about.
#[derive(Debug, Clone, Serialize)]
pub enum About {
    /// An approval, as in its `approval_required` or `approval_resolved` event.
    #[serde(rename = "approval")]
    Approval(Box<ApprovalItem>),
    /// Advice for an application (no value), as in its `recommendation` event.
    #[serde(rename = "recommendation")]
    Advice(Box<Recommendation>),
}

impl Structured {
    /// The approval, if this is about one.
    pub fn approval(&self) -> Option<&ApprovalItem> {
        match &self.about {
            About::Approval(item) => Some(item),
            About::Advice(_) => None,
        }
    }

    /// The advice, if this is about advice.
    pub fn recommendation(&self) -> Option<&Recommendation> {
        match &self.about {
            About::Advice(rec) => Some(rec),
            About::Approval(_) => None,
        }
    }
}

/// What a queued notification is replaced by a later one of: the approval's id, or, for advice,
/// the recommendation's id. Kept apart by kind, so that advice is never confused with an
/// approval (their ids could never be equal today, `ap-N` and `SOURCE-WINDOW-HASH`, but the
/// queue does not rely on it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Key {
    Approval(String),
    Advice(String),
}

impl std::fmt::Display for Key {
    /// The id, as the log names it after the event (`approval_required ap-3`, `advice rules-4-…`).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Key::Approval(id) | Key::Advice(id) => f.write_str(id),
        }
    }
}

/// Why an approval still pending is announced again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Again {
    /// The agent started.
    AgentStarted,
    /// A reload (SIGHUP) named another webhook URL: this one is told what is pending.
    WebhookChanged,
    /// A reload named another `approvals.webhook_user` for the same URL: what was refused for
    /// its user before may reach the receiver now.
    WebhookUserChanged,
}

/// Words from others made inert for the receivers `text` goes to. What KPO puts in `text` comes
/// partly from others (an LLM's reason, a process name a rule quotes). Slack's three control
/// characters become its entities: `<!channel>` would ping a whole channel and
/// `<http://...|approve>` would draw a link that looks like ours. Mattermost and Rocket.Chat ping
/// on a plain `@channel`, `@all`, `@here` or `@user`, and they and Teams draw Markdown links
/// `[approve](http://...)`: a zero-width space after an `@` that starts a word (a mention; the
/// `@` of `somaxconn@netns:...` does not) and between `]` and `(` breaks both, and shows as
/// nothing.
fn slack_escape(s: &str) -> String {
    const ZWSP: char = '\u{200B}';
    let entities = slack_entities(s).replace("](", &format!("]{ZWSP}("));
    let mut out = String::with_capacity(entities.len());
    let mut after_word = false;
    for c in entities.chars() {
        out.push(c);
        if c == '@' && !after_word {
            out.push(ZWSP);
        }
        // Not `_`: Mattermost strips `_` (and `:.-`) before a mention, so `_@channel_` pings.
        after_word = c.is_alphanumeric();
    }
    out
}

/// `&`, `<` and `>` as the entities Slack reads them as, and nothing else changed: for the
/// operator's own paths in a command, where a zero-width space after an `@` would make a
/// copied command name a path that does not exist.
fn slack_entities(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The reason as a sentence of the text: one that does not end one (a model's
/// `double it, 1200 overflows`) gets a period, or the next words (`Approve with ...`) would run
/// on from it.
fn sentence(reason: &str) -> String {
    let reason = reason.trim_end();
    if reason.ends_with(['.', '!', '?']) {
        reason.to_string()
    } else {
        format!("{reason}.")
    }
}

impl Payload {
    /// `flags`: what `kpo approve` needs besides the id to reach this agent or its state
    /// directory (`--socket PATH --state-dir PATH` where they are not the defaults), or "".
    pub fn new(event: &'static str, raw_host: &str, item: &ApprovalItem, flags: &str) -> Payload {
        let host = slack_escape(raw_host);
        let flags = slack_entities(flags);
        let parameter = slack_escape(&item.parameter.to_string());
        let value = slack_escape(&item.value.to_string());
        let current = item
            .current_value
            .as_ref()
            .map(|v| format!("{} -> ", slack_escape(&v.to_string())))
            .unwrap_or_default();
        let text = if event == "approval_required" {
            format!(
                "KPO on {host}: approval {} required: {parameter} {current}{value} (advised by {}, confidence {:.2}). {} Approve with `kpo approve {}{flags}`, reject with `kpo reject {}{flags}`; expires {} unless advised again (each repeat renews it).",
                item.id,
                item.source,
                item.confidence,
                sentence(&slack_escape(&item.reason)),
                item.id,
                item.id,
                crate::journal::format_ms(item.expires_ms),
            )
        } else {
            format!(
                "KPO on {host}: approval {} ({parameter} {current}{value}): {}",
                item.id,
                slack_escape(&item.state.describe())
            )
        };
        Payload {
            text,
            kpo: Structured {
                event,
                host: raw_host.to_string(),
                about: About::Approval(Box::new(item.clone())),
                repeat: false,
                repeat_reason: None,
            },
        }
    }

    /// `advice`: a recommendation without a value: for the application (`listen ... backlog=`,
    /// listen again, scale the service), the LLM's suggestion of a parameter to look at that it
    /// may not drive, or the rules' word that the policy leaves them no step (its reason names
    /// what to change in the policy). Nothing waits for a person, so there is nothing to
    /// approve; `kpo explain` shows it again. Every foreign word is escaped as in an approval's.
    pub fn advice(raw_host: &str, rec: &Recommendation, flags: &str) -> Payload {
        let host = slack_escape(raw_host);
        let flags = slack_entities(flags);
        let parameter = slack_escape(&rec.parameter.to_string());
        let now = rec
            .current_value
            .as_ref()
            .map(|v| format!(" (now {})", slack_escape(&v.to_string())))
            .unwrap_or_default();
        let text = match rec.application {
            Some(_) => format!(
                "KPO on {host}: advice for the application: {} (advised by {}, confidence {:.2}). No kernel parameter is changed for it; `kpo explain {parameter}{flags}` shows it again.",
                slack_escape(&rec.reason),
                rec.source,
                rec.confidence,
            ),
            // The rules would change it, and KPO could, but the policy's entry leaves no step.
            None if rec.source == crate::advise::recommendation::Source::Rules => format!(
                "KPO on {host}: {parameter}{now}: KPO cannot change it as the policy stands: {} (advised by {}, confidence {:.2}). `kpo explain {parameter}{flags}` shows it again.",
                slack_escape(&rec.reason),
                rec.source,
                rec.confidence,
            ),
            None => format!(
                "KPO on {host}: a parameter to look at, {parameter}{now}: {} (advised by {}, confidence {:.2}). KPO does not change it; `kpo explain {parameter}{flags}` shows it again.",
                slack_escape(&rec.reason),
                rec.source,
                rec.confidence,
            ),
        };
        Payload {
            text,
            kpo: Structured {
                event: "advice",
                host: raw_host.to_string(),
                about: About::Advice(Box::new(rec.clone())),
                repeat: false,
                repeat_reason: None,
            },
        }
    }

    /// What a later notification replaces this one for ([`Key`]).
    pub fn key(&self) -> Key {
        match &self.kpo.about {
            About::Approval(item) => Key::Approval(item.id.clone()),
            About::Advice(rec) => Key::Advice(rec.id.clone()),
        }
    }

    /// `approval_required` again, for an approval still pending when `why` happened.
    pub fn repeat(host: &str, item: &ApprovalItem, flags: &str, why: Again) -> Payload {
        let mut p = Payload::new("approval_required", host, item, flags);
        let note = match why {
            Again::AgentStarted => "(Still pending after the agent restarted.)",
            Again::WebhookChanged => "(Still pending when a policy reload set this webhook.)",
            Again::WebhookUserChanged => {
                "(Still pending when a policy reload named another approvals.webhook_user.)"
            }
        };
        p.text = format!("{} {note}", p.text);
        p.kpo.repeat = true;
        p.kpo.repeat_reason = Some(why);
        p
    }
}

/// The webhook's URL as it may be logged or printed: its scheme, host and port. The rest stays
/// out because it is often the credential itself (a Slack incoming webhook is
/// `https://hooks.slack.com/services/T…/B…/SECRET`; a user and password may be in it too), and
/// logs are read by more people than the policy file.
pub fn shown_url(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(u) => match (u.host_str(), u.port()) {
            (Some(host), Some(port)) => format!("{}://{host}:{port}", u.scheme()),
            (Some(host), None) => format!("{}://{host}", u.scheme()),
            (None, _) => format!("{}:", u.scheme()),
        },
        Err(_) => "(not a URL)".into(),
    }
}

/// The webhook's queue; the task posting from it ends when this is dropped.
pub struct Webhook {
    /// Unbounded: the delivery task takes every notification off it at once, into its own
    /// queue bounded at [`QUEUE`], where the oldest is what a burst drops.
    tx: mpsc::UnboundedSender<Payload>,
    /// [`shown_url`] of the URL.
    shown: String,
    /// The delivery task (none for [`Webhook::to_channel`]).
    task: Option<tokio::task::AbortHandle>,
    ledger: Ledger,
    /// `approvals.webhook_user`, shared with the delivery task: a reload that names another
    /// user for the same URL takes effect at the next try, with the queue kept.
    receiver_user: Arc<Mutex<Option<String>>>,
    /// The URL, to look at who serves it when a reload names another user (none for
    /// [`Webhook::to_channel`]).
    url: Option<String>,
}

/// What [`Webhook::set_receiver_user`] did.
#[derive(Debug)]
pub enum ReceiverUser {
    /// The same user, or a receiver over https, for which the user plays no part.
    Same,
    /// Another user is named: with the look at who serves the receiver (none for
    /// [`Webhook::to_channel`]), which ends once its warning, if any, is logged.
    Changed(Option<tokio::task::JoinHandle<()>>),
}

/// Whose listener on this host may be posted to over plain http: root, the agent's user, and
/// `user` (`approvals.webhook_user`), looked up now: `Err` when the name is not known here.
pub fn receivers(user: Option<&str>) -> Result<crate::endpoint_owner::Trusted, String> {
    crate::endpoint_owner::Trusted::users(
        user,
        "approvals.webhook_user",
        "the approvals and the advice, and its 2xx would count them delivered",
    )
}

/// Why a receiver at `url` on this host would be posted nothing, when that would last: its
/// `webhook_user` not known here, or another user's listener serving it (not a receiver that is
/// down: it may come up). For `kpo check` and the webhook's start, where it is warned of: after
/// an upgrade, a receiver run by its own user would otherwise get nothing more without a word but
/// each try's (s59 review1 R1-2). Blocking: a user name and the listeners are looked up.
/// `as_root`: judged for an agent running as root (`kpo check`, whoever runs it: the checker's
/// own user is not the agent's; s59 review2 R2-8), not for this process's user.
pub fn receiver_refused(url: &str, user: Option<&str>, as_root: bool) -> Option<String> {
    if !reqwest::Url::parse(url).is_ok_and(|u| u.scheme() == "http") {
        return None;
    }
    let unknown_user = std::cell::Cell::new(false);
    // Asked only for a receiver on this host, which the look decides (a name may be this host's).
    let allowed = || {
        let allowed = receivers(user).inspect_err(|_| unknown_user.set(true))?;
        Ok(if as_root {
            allowed.for_a_root_agent()
        } else {
            allowed
        })
    };
    let refusal = crate::endpoint_owner::looked_at(url, allowed).err()?;
    (unknown_user.get() || refusal.contains(" is served by ")).then_some(refusal)
}

/// How long the look at who serves a receiver on this host may take (a user or host name
/// looked up through a directory service that hangs): the try fails then, as a connection
/// that timed out does.
const LOOK_TIMEOUT: Duration = TIMEOUT;

impl Webhook {
    /// Stops posting to this URL at once: what is queued or being retried for it is dropped. A
    /// reload that removes or replaces the URL means it (it may have leaked, or be wrong); ending
    /// the channel alone would let the task post its queue, up to [`ATTEMPTS`] tries each.
    pub fn stop(self) {
        if let Some(task) = &self.task {
            task.abort();
        }
        let left = self.ledger.stopped();
        info!(url = %self.shown, "approval webhook off: nothing more is posted to it ({left} notifications not sent)");
    }

    /// At the agent's stop: gives what is queued or being retried up to `within` to be delivered,
    /// then drops the rest as [`Webhook::stop`] does, counted `abandoned`, and says how many
    /// (s56 story AX-3: a stop dropped them without a word, and a receiver's last word on an
    /// approval could be "required" for one rejected since).
    pub async fn finish(self, within: Duration) {
        let deadline = tokio::time::Instant::now() + within;
        // The ledger's count, looked at now and then: a stop is rare, and this wait is bounded.
        while self.ledger.open_now() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if let Some(task) = &self.task {
            task.abort();
        }
        let left = self.ledger.stopped();
        if left > 0 {
            warn!(
                url = %self.shown,
                "approval webhook: the agent stops with {left} notification(s) not known \
                 delivered (queued, being retried, or posted without an answer yet); those not \
                 received are lost: kpo pending and the journal hold what became of each approval"
            );
        }
    }

    /// Starts the posting task on the current tokio runtime; what becomes of each notification is
    /// counted in `outcomes`. `receiver_user`: `approvals.webhook_user`.
    pub fn spawn(
        url: String,
        outcomes: Outcomes,
        receiver_user: Option<String>,
    ) -> Result<Webhook, reqwest::Error> {
        Self::spawn_backing_off(url, outcomes, FIRST_BACKOFF, receiver_user)
    }

    /// [`Webhook::spawn`], the first retry waiting `first_backoff`.
    fn spawn_backing_off(
        url: String,
        outcomes: Outcomes,
        first_backoff: Duration,
        receiver_user: Option<String>,
    ) -> Result<Webhook, reqwest::Error> {
        let client = client_builder(&url).build()?;
        let receiver_user = Arc::new(Mutex::new(receiver_user));
        let (tx, rx) = mpsc::unbounded_channel();
        let shown = shown_url(&url);
        if let Some(why) = in_clear(&url) {
            warn!(url = %shown, "approval webhook: {why}");
        }
        let ledger = Ledger::new(outcomes);
        let task = tokio::spawn(deliver(
            Receiver {
                client,
                url: url.clone(),
                shown: shown.clone(),
                receiver_user: receiver_user.clone(),
            },
            rx,
            ledger.clone(),
            first_backoff,
        ));
        info!(url = %shown, "approval webhook on");
        Ok(Webhook {
            tx,
            shown,
            task: Some(task.abort_handle()),
            ledger,
            receiver_user,
            url: Some(url),
        })
    }

    /// A reload named another `approvals.webhook_user` for the same URL.
    /// Names the receiver's user from the next try on. When it is another than before, who
    /// serves the receiver is looked at now, and a refusal logged as at the start (s59 story
    /// BP-7: a reload naming an unknown user said nothing until a notification failed).
    pub fn set_receiver_user(&self, user: Option<String>) -> ReceiverUser {
        let before = std::mem::replace(
            &mut *self.receiver_user.lock().expect("not poisoned"),
            user.clone(),
        );
        // Over https, or to a receiver named otherwise than plain http, the user plays no part
        // (s60 review1 R1-2: a change re-posted every pending approval all the same).
        let plain_http = (self.url.as_deref())
            .is_none_or(|u| reqwest::Url::parse(u).is_ok_and(|u| u.scheme() == "http"));
        if before == user || !plain_http {
            return ReceiverUser::Same;
        }
        ReceiverUser::Changed(
            (self.url.clone())
                .map(|url| tokio::spawn(warn_if_refused(url, self.shown.clone(), user))),
        )
    }

    /// A webhook whose notifications go to the returned receiver instead of a URL.
    #[cfg(test)]
    pub fn to_channel() -> (Webhook, mpsc::UnboundedReceiver<Payload>) {
        Self::to_channel_for(None)
    }

    /// [`Webhook::to_channel`], for `url` where one is looked at (`set_receiver_user`), without
    /// a delivery task that would look at it too.
    #[cfg(test)]
    pub fn to_channel_for(url: Option<&str>) -> (Webhook, mpsc::UnboundedReceiver<Payload>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let shown = "test:".to_string();
        (
            Webhook {
                tx,
                shown,
                task: None,
                ledger: Ledger::new(Outcomes::default()),
                receiver_user: Arc::new(Mutex::new(None)),
                url: url.map(str::to_string),
            },
            rx,
        )
    }

    /// Queues one notification (the delivery task drops the oldest past [`QUEUE`]).
    pub fn notify(&self, payload: Payload) {
        let id = payload.key();
        // Counted open before the task can end it.
        self.ledger.queued();
        if self.tx.send(payload).is_err() {
            warn!(url = %self.shown, "approval webhook: {id} not sent: the delivery task ended");
            self.ledger.ended(Outcome::Abandoned);
        }
    }
}

/// The client a webhook posts with. No redirects: a 302 to a sign-on page would turn the POST
/// into a GET without its body, answered 200, and the notification would count as delivered. No
/// proxy for a receiver on this host ([`crate::http`]).
fn client_builder(url: &str) -> reqwest::ClientBuilder {
    crate::http::client_builder(url)
        .timeout(TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
}

/// Where the delivery task posts.
struct Receiver {
    client: reqwest::Client,
    url: String,
    /// [`shown_url`] of the URL.
    shown: String,
    receiver_user: Arc<Mutex<Option<String>>>,
}

impl Receiver {
    /// The client for one try: `Err` why nothing is posted, for a receiver on this host over
    /// plain http that another user serves or nobody does ([`crate::endpoint_owner`]); for one
    /// an allowed user serves, a client of this try's that connects to the addresses that user
    /// serves alone (as the LLM client does), so that no connection kept from an earlier try
    /// can lead elsewhere.
    async fn client_for_this_try(&self) -> Result<reqwest::Client, String> {
        if !reqwest::Url::parse(&self.url).is_ok_and(|u| u.scheme() == "http") {
            return Ok(self.client.clone());
        }
        let user = self.receiver_user.lock().expect("not poisoned").clone();
        let url = self.url.clone();
        // A user and a host name looked up, the listeners dumped, and a client built (which
        // reads the system's certificates): blocking calls, off the runtime's workers, and
        // bounded (s59 review1 R1-4, R1-5).
        let look = tokio::task::spawn_blocking(move || {
            match crate::endpoint_owner::looked_at(&url, || receivers(user.as_deref()))? {
                None => Ok(None),
                // On this host, whatever names it: never through the environment's proxy.
                Some((host, addresses)) => client_builder(&url)
                    .no_proxy()
                    .resolve_to_addrs(&host, &addresses)
                    .pool_max_idle_per_host(0)
                    .build()
                    .map(Some)
                    .map_err(|e| describe(&e.without_url())),
            }
        });
        match tokio::time::timeout(LOOK_TIMEOUT, look).await {
            Ok(Ok(Ok(pinned))) => Ok(pinned.unwrap_or_else(|| self.client.clone())),
            Ok(Ok(Err(why))) => Err(why),
            Ok(Err(e)) => Err(format!(
                "who serves the receiver could not be looked at ({e})"
            )),
            Err(_) => Err(format!(
                "who serves the receiver could not be looked at within {LOOK_TIMEOUT:?} (a user \
                 or host name lookup that hangs?): not sent"
            )),
        }
    }
}

/// Warns when nothing would be posted to `url` now, for who serves it ([`receiver_refused`]).
async fn warn_if_refused(url: String, shown: String, user: Option<String>) {
    let look = tokio::task::spawn_blocking(move || receiver_refused(&url, user.as_deref(), false));
    if let Ok(Ok(Some(why))) = tokio::time::timeout(LOOK_TIMEOUT, look).await {
        warn!(url = %shown, "approval webhook: {why}; nothing is posted to it while that holds");
    }
}

async fn deliver(
    receiver: Receiver,
    mut rx: mpsc::UnboundedReceiver<Payload>,
    ledger: Ledger,
    first_backoff: Duration,
) {
    let (url, shown) = (&receiver.url, &receiver.shown);
    let user = receiver.receiver_user.lock().expect("not poisoned").clone();
    warn_if_refused(url.clone(), shown.clone(), user).await;
    // Taken off the channel as they come, even while one waits to be retried: so that a later
    // notification about the same approval can replace one not yet delivered, and a full queue
    // loses its oldest notification, not the newest.
    let mut queued: VecDeque<Payload> = VecDeque::new();
    loop {
        let payload = match queued.pop_front() {
            Some(p) => p,
            None => match rx.recv().await {
                Some(p) => p,
                None => return,
            },
        };
        let id = payload.key();
        let event = payload.kpo.event;
        let mut backoff = first_backoff;
        let mut replaced = false;
        let body = serde_json::to_vec(&payload).expect("payloads serialise");
        for attempt in 1..=ATTEMPTS {
            let result = match receiver.client_for_this_try().await {
                Err(why) => Err(why),
                Ok(client) => {
                    let send = client
                        .post(url)
                        .header(reqwest::header::CONTENT_TYPE, "application/json")
                        .body(body.clone())
                        .send();
                    tokio::pin!(send);
                    // Drained while the POST runs too (up to TIMEOUT), so that the channel never
                    // fills and drops the newest.
                    Ok(loop {
                        tokio::select! {
                            // The channel first: whatever is in it when the answer comes is
                            // queued (and the oldest dropped) before the next POST is chosen.
                            biased;
                            Some(next) = rx.recv() => replaced |= enqueue(&mut queued, next, shown, &id, &ledger),
                            result = &mut send => break result,
                        }
                    })
                }
            };
            let failure = match result {
                // Not posted: who serves the receiver is not someone it may go to (yet).
                Err(why) => Some(Failure::Retry(why)),
                Ok(result) => match result {
                Ok(r) if r.status().is_success() => {
                    info!(url = %shown, "approval webhook: {event} {id} delivered (attempt {attempt})");
                    ledger.ended(Outcome::Delivered);
                    None
                }
                Ok(r) if r.status().is_redirection() => Some(Failure::Retry(format!(
                    "the receiver answered {} to {} (redirects are not followed; give the final URL)",
                    r.status(),
                    // Shortened like the URL: a redirect to the receiver's new address carries
                    // the same secret path.
                    r.headers()
                        .get(reqwest::header::LOCATION)
                        .and_then(|l| l.to_str().ok())
                        .map_or_else(
                            || "nowhere".to_string(),
                            // A relative one is on the webhook's own host.
                            |l| {
                                reqwest::Url::parse(url)
                                    .and_then(|base| base.join(l))
                                    .map_or_else(|_| shown_url(l), |u| shown_url(u.as_str()))
                            },
                        )
                ))),
                Ok(r) if refused_for_good(r.status()) => Some(Failure::Refused(format!(
                    "the receiver answered {}",
                    r.status()
                ))),
                Ok(r) => Some(Failure::Retry(format!("the receiver answered {}", r.status()))),
                    // reqwest names the whole URL in its errors.
                    Err(e) => Some(Failure::Retry(describe(&e.without_url()))),
                },
            };
            let why = match failure {
                None => break,
                Some(Failure::Refused(why)) => {
                    warn!(url = %shown, "approval webhook: {event} {id} refused (attempt {attempt}): {why}; not retried (the same POST would be refused again: check the webhook URL)");
                    ledger.ended(Outcome::Refused);
                    break;
                }
                Some(Failure::Retry(why)) => why,
            };
            if attempt == ATTEMPTS {
                warn!(url = %shown, "approval webhook: {event} {id} failed (attempt {attempt} of {ATTEMPTS}): {why}; giving up");
                ledger.ended(Outcome::GivenUp);
                break;
            }
            warn!(url = %shown, "approval webhook: {event} {id} failed (attempt {attempt} of {ATTEMPTS}): {why}; retrying in {backoff:?}");
            let wait = tokio::time::sleep(backoff);
            tokio::pin!(wait);
            // A notification replaced by a later one of the same approval stops waiting at
            // once: it would only hold the queue behind it.
            while !replaced {
                tokio::select! {
                    biased;
                    Some(next) = rx.recv() => replaced |= enqueue(&mut queued, next, shown, &id, &ledger),
                    _ = &mut wait => break,
                }
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
            if replaced {
                info!(url = %shown, "approval webhook: {event} {id} not sent: a later notification of it was queued");
                ledger.ended(Outcome::Replaced);
                break;
            }
        }
    }
}

enum Failure {
    /// Worth trying again: the receiver or the way to it may recover.
    Retry(String),
    /// The receiver will answer the same POST the same way.
    Refused(String),
}

/// A 4xx other than a timeout (408), "too early" (425) or rate limit (429): the receiver
/// refused this request (a revoked or mistyped hook URL: 403, 404, 410) and would again.
fn refused_for_good(status: reqwest::StatusCode) -> bool {
    status.is_client_error() && ![408, 425, 429].contains(&status.as_u16())
}

/// Queues `next` behind the others, in place of any queued notification of the same approval
/// (the later one says what is true now), or of the same advice ([`Key`]: never an approval's);
/// over [`QUEUE`], the oldest that is not a pending approval's is dropped (logged), or with only
/// those waiting the oldest: a notification that waited that long is the likeliest to be out of
/// date. Returns whether `next` is about `current`, the approval (or
/// advice) whose notification is being posted: that one then gives way if it has to be retried,
/// even when `next` is itself dropped later.
fn enqueue(
    queued: &mut VecDeque<Payload>,
    next: Payload,
    shown: &str,
    current: &Key,
    ledger: &Ledger,
) -> bool {
    let id = next.key();
    queued.retain(|old| {
        let same = old.key() == id;
        if same {
            info!(url = %shown, "approval webhook: {} {id} not sent: replaced by its {}", old.kpo.event, next.kpo.event);
            ledger.ended(Outcome::Replaced);
        }
        !same
    });
    queued.push_back(next);
    if queued.len() > QUEUE {
        // A pending approval's notice is what the receiver has to act on, and is not posted
        // again while the agent runs: an end or advice makes way first, the oldest of them (s49
        // storyT T1: the ends of approvals superseded in a storm, whose own notices they had
        // replaced unsent, pushed out the only notice of two still pending).
        let at = queued
            .iter()
            .position(|p| p.kpo.event != "approval_required")
            .unwrap_or(0);
        if let Some(old) = queued.remove(at) {
            warn!(url = %shown, "approval webhook: {} {} not sent: {QUEUE} newer notifications wait (the receiver is down or slow)", old.kpo.event, old.key());
            ledger.ended(Outcome::QueueFull);
        }
    }
    &id == current
}

/// Why what the URL carries crosses the network readable, if it does: plain http to a host that
/// is not this one (s49 storyT T3). The path and query are often the credential (Slack's
/// `/services/...`), and reqwest sends a user name and password as Basic authorization.
fn in_clear(url: &str) -> Option<String> {
    let parsed = reqwest::Url::parse(url).ok()?;
    if parsed.scheme() != "http" || crate::http::is_loopback_url(url) {
        return None;
    }
    let credentials = if parsed.username().is_empty() && parsed.password().is_none() {
        ""
    } else {
        ", and its user name and password (sent as Basic authorization)"
    };
    Some(format!(
        "posted over plain http to a host that is not this one: the URL's path and query{credentials} \
         cross the network readable (and a proxy from HTTP_PROXY reads them); use https"
    ))
}

/// reqwest's error with its causes (a bare "error sending request" says nothing).
fn describe(e: &reqwest::Error) -> String {
    let mut s = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        s.push_str(": ");
        s.push_str(&cause.to_string());
        source = cause.source();
    }
    s
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::approvals::{store::tests::item, ApprovalState};

    #[test]
    fn a_webhook_url_is_shown_without_its_path_query_or_user() {
        assert_eq!(
            shown_url("https://hooks.slack.com/services/T000/B000/XXXXSECRET"),
            "https://hooks.slack.com"
        );
        assert_eq!(
            shown_url("http://user:pw@10.0.0.1:9000/kpo?token=SECRET#x"),
            "http://10.0.0.1:9000"
        );
        assert_eq!(shown_url("http://[::1]:8080/hook"), "http://[::1]:8080");
        assert_eq!(shown_url("nonsense SECRET"), "(not a URL)");
    }

    /// Defect (s32, by hand): an LLM's reason without a final period ran into the next
    /// sentence: `... confidence 0.90). double it, 1200 overflows Approve with ...`.
    #[test]
    fn a_reason_without_a_period_ends_its_sentence_in_the_text() {
        let mut it = item("ap-3", 32);
        for (reason, said) in [
            ("double it, 1200 overflows", "double it, 1200 overflows."),
            ("double it, 1200 overflows  ", "double it, 1200 overflows."),
            ("queue full.", "queue full."),
            ("is it full?", "is it full?"),
        ] {
            it.reason = reason.into();
            let p = Payload::new("approval_required", "web1", &it, "");
            assert!(
                p.text.contains(&format!(
                    "(advised by rules, confidence 0.90). {said} Approve with `kpo approve ap-3`"
                )),
                "{}",
                p.text
            );
        }
    }

    #[test]
    fn the_payload_has_a_slack_text_and_the_item() {
        let p = Payload::new("approval_required", "web1", &item("ap-3", 32), "");
        let v = serde_json::to_value(&p).unwrap();
        let text = v["text"].as_str().unwrap();
        assert!(
            text.starts_with(
                "KPO on web1: approval ap-3 required: net.core.somaxconn@netns:4026531999 16 -> 32"
            ),
            "{text}"
        );
        assert!(text.contains("kpo approve ap-3"), "{text}");
        // s43 (story2): a repeat renews the expiry and posts nothing, so a time alone read as
        // past on an approval still open (and a post delayed by retries showed one already).
        assert!(
            text.ends_with(" unless advised again (each repeat renews it)."),
            "{text}"
        );
        assert_eq!(v["kpo"]["event"], "approval_required");
        assert_eq!(v["kpo"]["approval"]["id"], "ap-3");
        assert_eq!(v["kpo"]["approval"]["state"], "pending");
        assert_eq!(v["kpo"]["approval"]["value"], 32);
        let mut done = item("ap-3", 32);
        done.state = ApprovalState::Expired;
        let p = Payload::new("approval_resolved", "web1", &done, "");
        assert!(
            p.text.ends_with("expired: nobody approved it in time"),
            "{}",
            p.text
        );
    }

    #[test]
    fn text_from_others_cannot_use_slack_control_sequences() {
        let mut hostile = item("ap-4", 32);
        hostile.reason = "listener of <!channel> & <http://evil.example|approve>".into();
        let p = Payload::new("approval_required", "web<1>", &hostile, "");
        assert!(!p.text.contains('<'), "{}", p.text);
        assert!(
            p.text
                .contains("listener of &lt;!channel&gt; &amp; &lt;http://evil.example|approve&gt;"),
            "{}",
            p.text
        );
        assert!(p.text.starts_with("KPO on web&lt;1&gt;:"), "{}", p.text);
        // The structured copy keeps the words as they were.
        assert_eq!(p.kpo.approval().unwrap().reason, hostile.reason);
        assert_eq!(p.kpo.host, "web<1>");

        // Mattermost's and Rocket.Chat's mentions, and Markdown links.
        hostile.reason = "@channel @here look: [approve](http://evil.example)".into();
        let p = Payload::new("approval_required", "web1", &hostile, "");
        for live in ["@channel", "@here", "](http"] {
            assert!(!p.text.contains(live), "{live} in {}", p.text);
        }
        // An address's `@` is no mention: it stays as it is, to be copied.
        assert!(p.text.contains("somaxconn@netns:"), "{}", p.text);
        assert!(
            p.text.contains(
                "@\u{200B}channel @\u{200B}here look: [approve]\u{200B}(http://evil.example)"
            ),
            "{}",
            p.text
        );
        hostile.reason = "_@channel_ :@all".into();
        let q = Payload::new("approval_required", "web1", &hostile, "");
        assert!(
            q.text.contains("_@\u{200B}channel_ :@\u{200B}all"),
            "{}",
            q.text
        );
    }

    /// A receiver that redirects (a sign-on page, a moved URL) is a failure to retry, not a
    /// delivery: followed, the redirect would turn the POST into a GET without the body.
    #[tokio::test]
    async fn a_redirect_is_not_followed_and_the_post_is_retried() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (seen_tx, mut seen) = mpsc::channel(8);
        tokio::spawn(async move {
            for answer in [
                format!("HTTP/1.1 302 Found\r\nLocation: http://127.0.0.1:{port}/sso\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"),
                "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_string(),
            ] {
                let (mut conn, _) = listener.accept().await.unwrap();
                let mut buf = vec![0u8; 16384];
                let n = conn.read(&mut buf).await.unwrap();
                let head = String::from_utf8_lossy(&buf[..n]).lines().next().unwrap_or("").to_string();
                seen_tx.send(head).await.unwrap();
                conn.write_all(answer.as_bytes()).await.unwrap();
            }
        });
        let hook = Webhook::spawn(
            format!("http://127.0.0.1:{port}/kpo"),
            Outcomes::default(),
            None,
        )
        .unwrap();
        hook.notify(Payload::new(
            "approval_required",
            "web1",
            &item("ap-5", 32),
            "",
        ));
        let first = seen.recv().await.unwrap();
        let second = seen.recv().await.unwrap();
        assert_eq!(
            [first.as_str(), second.as_str()],
            ["POST /kpo HTTP/1.1", "POST /kpo HTTP/1.1"]
        );
    }

    /// The body of the HTTP request read from `conn`, by its Content-Length.
    pub(crate) async fn request_body(conn: &mut tokio::net::TcpStream) -> String {
        use tokio::io::AsyncReadExt;
        let mut buf = Vec::new();
        loop {
            let mut chunk = [0u8; 4096];
            let n = conn.read(&mut chunk).await.unwrap();
            assert!(n > 0, "the request ended early");
            buf.extend_from_slice(&chunk[..n]);
            let text = String::from_utf8_lossy(&buf).to_string();
            let Some((head, body)) = text.split_once("\r\n\r\n") else {
                continue;
            };
            let length: usize = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse().unwrap())
                })
                .unwrap();
            if body.len() >= length {
                return body.to_string();
            }
        }
    }

    /// A receiver on 127.0.0.1 that answers each POST with the next status of `statuses` and
    /// reports each request's event and approval id (the recommendation id for advice), in
    /// order.
    pub(crate) async fn receiver(statuses: Vec<u16>) -> (String, mpsc::Receiver<(String, String)>) {
        receiver_gated(statuses, None).await
    }

    /// In a receiver's statuses: the request is reported and never answered. A notification
    /// posted last and held so has no outcome yet when the receiver reports it, while every one
    /// before it has had its own ([`after_a_last_one`]).
    const HOLD: u16 = 0;

    /// [`receiver`], holding its first answer until `gate` fires.
    async fn receiver_gated(
        statuses: Vec<u16>,
        mut gate: Option<tokio::sync::oneshot::Receiver<()>>,
    ) -> (String, mpsc::Receiver<(String, String)>) {
        use tokio::io::AsyncWriteExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/kpo", listener.local_addr().unwrap());
        let (seen_tx, seen) = mpsc::channel(256);
        tokio::spawn(async move {
            for status in statuses {
                let (mut conn, _) = listener.accept().await.unwrap();
                let body = request_body(&mut conn).await;
                let v: serde_json::Value = serde_json::from_str(&body).unwrap();
                let about = if v["kpo"]["event"] == "advice" {
                    "recommendation"
                } else {
                    "approval"
                };
                seen_tx
                    .send((
                        v["kpo"]["event"].as_str().unwrap().to_string(),
                        v["kpo"][about]["id"].as_str().unwrap().to_string(),
                    ))
                    .await
                    .unwrap();
                if let Some(gate) = gate.take() {
                    gate.await.unwrap();
                }
                if status == HOLD {
                    // The connection stays open while this waits, for ever.
                    std::future::pending::<()>().await;
                }
                let answer = format!(
                    "HTTP/1.1 {status} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                );
                conn.write_all(answer.as_bytes()).await.unwrap();
            }
        });
        (url, seen)
    }

    fn seen(event: &str, id: &str) -> (String, String) {
        (event.to_string(), id.to_string())
    }

    /// A 404 (a revoked or mistyped hook) is not retried: the next notification goes next.
    #[tokio::test]
    async fn a_refusal_for_good_is_not_retried() {
        let (url, mut requests) = receiver(vec![404, 200, 200]).await;
        let hook = Webhook::spawn(url, Outcomes::default(), None).unwrap();
        hook.notify(Payload::new(
            "approval_required",
            "web1",
            &item("ap-1", 32),
            "",
        ));
        hook.notify(Payload::new(
            "approval_required",
            "web1",
            &item("ap-2", 32),
            "",
        ));
        assert_eq!(
            requests.recv().await.unwrap(),
            seen("approval_required", "ap-1")
        );
        assert_eq!(
            requests.recv().await.unwrap(),
            seen("approval_required", "ap-2")
        );
        hook.notify(Payload::new(
            "approval_required",
            "web1",
            &item("ap-3", 32),
            "",
        ));
        assert_eq!(
            requests.recv().await.unwrap(),
            seen("approval_required", "ap-3")
        );
    }

    /// A notification waiting to be retried gives way to a later one about the same approval
    /// (its resolution): the receiver is not told, late, that a resolved approval is required.
    #[tokio::test]
    async fn a_notification_waiting_for_a_retry_gives_way_to_a_later_one_of_its_approval() {
        let (url, mut requests) = receiver(vec![503, 200, 200]).await;
        let hook = Webhook::spawn(url, Outcomes::default(), None).unwrap();
        let mut resolved = item("ap-1", 32);
        resolved.state = ApprovalState::Expired;
        hook.notify(Payload::new(
            "approval_required",
            "web1",
            &item("ap-1", 32),
            "",
        ));
        hook.notify(Payload::new("approval_resolved", "web1", &resolved, ""));
        assert_eq!(
            requests.recv().await.unwrap(),
            seen("approval_required", "ap-1")
        );
        assert_eq!(
            requests.recv().await.unwrap(),
            seen("approval_resolved", "ap-1")
        );
        hook.notify(Payload::new(
            "approval_required",
            "web1",
            &item("ap-2", 32),
            "",
        ));
        assert_eq!(
            requests.recv().await.unwrap(),
            seen("approval_required", "ap-2")
        );
    }

    /// Advice whose recommendation id is, by chance or design, an approval's id: both are
    /// queued behind a POST in flight and both arrive, neither replacing the other (nor the
    /// approval's later notification the advice). Mutation that fails it: `Payload::key` keying
    /// advice as an approval (`Key::Approval(rec.id)`).
    #[tokio::test]
    async fn an_advice_never_replaces_an_approval_nor_is_replaced_by_one() {
        let (release, gate) = tokio::sync::oneshot::channel();
        let (url, mut requests) = receiver_gated(vec![200; 5], Some(gate)).await;
        let hook = Webhook::spawn(url, Outcomes::default(), None).unwrap();
        hook.notify(required("ap-0"));
        assert_eq!(
            requests.recv().await.unwrap(),
            seen("approval_required", "ap-0")
        );
        let mut advice = advice_rec();
        advice.id = "ap-1".into();
        hook.notify(required("ap-1"));
        hook.notify(Payload::advice("web1", &advice, ""));
        hook.notify(resolved("ap-1"));
        release.send(()).unwrap();
        // A last one: what arrived up to it is all that will (a lost notification fails the
        // test rather than hanging it).
        hook.notify(required("ap-2"));
        let mut got = Vec::new();
        while got.last() != Some(&seen("approval_required", "ap-2")) {
            got.push(requests.recv().await.unwrap());
        }
        // ap-1's required is replaced by its resolution, as before; the advice stays.
        assert_eq!(
            got,
            [
                seen("advice", "ap-1"),
                seen("approval_resolved", "ap-1"),
                seen("approval_required", "ap-2")
            ]
        );
    }

    /// Defect: the rules' word that the policy leaves them no step (advice without a value or
    /// an application) was posted as "a parameter to look at ... KPO does not change it", the
    /// words for the LLM's suggestions, though KPO would change it once the policy lets it.
    #[test]
    fn advice_the_policy_leaves_no_step_for_says_so_and_a_suggestion_is_one_to_look_at() {
        use crate::advise::{
            limits::{Mode, ParamLimits, Percent, Step},
            recommendation::{Source, WindowRef},
            rules::step,
        };
        let at = WindowRef {
            index: 2,
            end: "2026-01-01T00:02:00Z".into(),
        };
        let somaxconn: crate::actuate::param::ParamAddress =
            "net.core.somaxconn@netns:4026532243".parse().unwrap();
        let limits = ParamLimits::new(Mode::Auto)
            .bounds(128, 65535)
            .step(Step::Percent(Percent::whole(100)));
        let why = step::try_raise(&somaxconn, 16, 32, 16384, Some(&limits)).unwrap_err();
        let no_step = step::out_of_reach(&at, somaxconn, 16, true, Some(&limits), &why);
        assert_eq!(
            Payload::advice("web1", &no_step, "").text,
            "KPO on web1: net.core.somaxconn@netns:4026532243 (now 16): KPO cannot change it as \
             the policy stands: The rules would raise net.core.somaxconn@netns:4026532243 from \
             16, but the policy allows no step (the policy's entry for it: min 128, max 65535, \
             max_step 100%): the policy refuses anything below its min 128, and max_step 100% \
             allows at most 32 from 16: widen max_step or lower min. Nothing is proposed until \
             the policy is changed (a reload is answered at the next tick or window). (advised \
             by rules, confidence 1.00). `kpo explain net.core.somaxconn@netns:4026532243` shows \
             it again."
        );
        let suggestion = Recommendation {
            id: "llm-41-0000abcd".into(),
            parameter: "net.ipv4.tcp_fin_timeout".parse().unwrap(),
            current_value: Some(crate::actuate::param::Value::Int(60)),
            recommended_value: None,
            can_auto_apply: false,
            reason: "1200 sockets in FIN_WAIT2 in window 41".into(),
            confidence: 0.5,
            source: Source::Llm,
            window: at,
            application: None,
            netns_cookie: None,
        };
        assert_eq!(
            Payload::advice("web1", &suggestion, "").text,
            "KPO on web1: a parameter to look at, net.ipv4.tcp_fin_timeout (now 60): 1200 sockets \
             in FIN_WAIT2 in window 41 (advised by llm, confidence 0.50). KPO does not change it; \
             `kpo explain net.ipv4.tcp_fin_timeout` shows it again."
        );
    }

    /// Advice for an application, as the accept-queue rule gives it (no value).
    fn advice_rec() -> Recommendation {
        use crate::advise::recommendation::{ApplicationRef, Source, WindowRef};
        Recommendation {
            id: "rules-41-0000abcd".into(),
            parameter: "net.core.somaxconn@netns:4026531999".parse().unwrap(),
            current_value: Some(crate::actuate::param::Value::Int(4096)),
            recommended_value: None,
            can_auto_apply: false,
            reason: "listener 0.0.0.0:8080 (\"nginx\", pid 4242) asked listen() for 511".into(),
            confidence: 0.9,
            source: Source::Rules,
            window: WindowRef {
                index: 41,
                end: "2026-01-01T00:41:00Z".into(),
            },
            application: Some(ApplicationRef {
                netns: 4026531999,
                port: 8080,
                pid: Some(4242),
                comm: Some("nginx".into()),
                backlog_limit: Some(511),
            }),
            netns_cookie: None,
        }
    }

    #[test]
    fn which_answers_are_refusals_for_good() {
        for (code, for_good) in [
            (400, true),
            (403, true),
            (404, true),
            (410, true),
            (408, false),
            (425, false),
            (429, false),
            (500, false),
            (503, false),
            (302, false),
        ] {
            assert_eq!(
                refused_for_good(reqwest::StatusCode::from_u16(code).unwrap()),
                for_good,
                "{code}"
            );
        }
    }

    /// A burst while a POST is in flight: every notification is taken off the channel, and past
    /// QUEUE waiting the oldest are dropped, not the newest.
    #[tokio::test]
    async fn a_burst_during_a_post_drops_the_oldest() {
        const BURST: usize = QUEUE + 6;
        let (release, gate) = tokio::sync::oneshot::channel();
        let (url, mut requests) = receiver_gated(vec![200; BURST + 1], Some(gate)).await;
        let hook = Webhook::spawn(url, Outcomes::default(), None).unwrap();
        hook.notify(Payload::new(
            "approval_required",
            "web1",
            &item("ap-0", 32),
            "",
        ));
        assert_eq!(
            requests.recv().await.unwrap(),
            seen("approval_required", "ap-0")
        );
        // ap-0's POST waits for its answer while the burst comes.
        for n in 1..=BURST {
            hook.notify(Payload::new(
                "approval_required",
                "web1",
                &item(&format!("ap-{n}"), 32),
                "",
            ));
        }
        release.send(()).unwrap();
        for n in (BURST - QUEUE + 1)..=BURST {
            assert_eq!(
                requests.recv().await.unwrap(),
                seen("approval_required", &format!("ap-{n}"))
            );
        }
    }

    /// A webhook stopped (a reload removed or replaced its URL) posts nothing more: its delivery
    /// task ends at once, with a notification still waiting for its retry (an hour here, which
    /// the test would not outlast), instead of posting its queue to the old URL.
    #[tokio::test]
    async fn a_stopped_webhook_drops_what_it_still_had_to_post() {
        let (url, mut requests) = receiver(vec![503, 200]).await;
        let outcomes = Outcomes::default();
        let hook =
            Webhook::spawn_backing_off(url, outcomes.clone(), Duration::from_secs(3600), None)
                .unwrap();
        hook.notify(Payload::new(
            "approval_required",
            "web1",
            &item("ap-1", 32),
            "",
        ));
        assert_eq!(
            requests.recv().await.unwrap(),
            seen("approval_required", "ap-1")
        );
        hook.notify(required("ap-2"));
        let channel = hook.tx.clone();
        hook.stop();
        // Both are counted, once: the one waiting for its retry and the one queued behind it.
        assert_eq!(counted(&outcomes), only(&[(Outcome::Abandoned, 2)]));
        // The task's end drops its receiver, which closes the channel.
        tokio::time::timeout(Duration::from_secs(120), channel.closed())
            .await
            .expect("the delivery task ended, not waiting out its retry");
    }

    /// At the agent's stop, a notification being posted is given its time to be delivered; one
    /// waiting for its retry past that time is dropped and counted (s56 story AX-3).
    #[tokio::test]
    async fn at_the_agents_stop_what_is_left_is_delivered_in_time_or_counted() {
        let (url, mut requests) = receiver(vec![200]).await;
        let outcomes = Outcomes::default();
        let hook = Webhook::spawn(url, outcomes.clone(), None).unwrap();
        hook.notify(required("ap-1"));
        hook.finish(Duration::from_secs(60)).await;
        assert_eq!(
            requests.recv().await.unwrap(),
            seen("approval_required", "ap-1")
        );
        assert_eq!(counted(&outcomes), only(&[(Outcome::Delivered, 1)]));

        let (url, mut requests) = receiver(vec![503, 200]).await;
        let outcomes = Outcomes::default();
        let hook =
            Webhook::spawn_backing_off(url, outcomes.clone(), Duration::from_secs(3600), None)
                .unwrap();
        hook.notify(required("ap-2"));
        assert_eq!(
            requests.recv().await.unwrap(),
            seen("approval_required", "ap-2")
        );
        hook.finish(Duration::from_millis(100)).await;
        assert_eq!(counted(&outcomes), only(&[(Outcome::Abandoned, 1)]));
    }

    /// A notification replaced while it waits for its retry stops waiting at once: the one that
    /// replaced it goes out without the wait (here an hour, which the test would not outlast).
    #[tokio::test]
    async fn a_replaced_notification_does_not_wait_out_its_backoff() {
        let (url, mut requests) = receiver(vec![503, 200]).await;
        let hook =
            Webhook::spawn_backing_off(url, Outcomes::default(), Duration::from_secs(3600), None)
                .unwrap();
        hook.notify(Payload::new(
            "approval_required",
            "web1",
            &item("ap-1", 32),
            "",
        ));
        assert_eq!(
            requests.recv().await.unwrap(),
            seen("approval_required", "ap-1")
        );
        let mut resolved = item("ap-1", 32);
        resolved.state = ApprovalState::Expired;
        hook.notify(Payload::new("approval_resolved", "web1", &resolved, ""));
        // Far below the hour: only a task still waiting out its backoff misses it.
        let next = tokio::time::timeout(Duration::from_secs(120), requests.recv()).await;
        assert_eq!(
            next.expect("sent without waiting out the backoff").unwrap(),
            seen("approval_resolved", "ap-1")
        );
    }

    /// A notification waiting for a retry gives way to a later one of its approval even when a
    /// burst then pushes that later one out of the queue: the receiver is never told, late, that
    /// a resolved approval is required. Two queued notifications of one approval become the later.
    #[tokio::test]
    async fn a_replaced_notification_is_not_retried_even_when_its_replacement_is_dropped() {
        let (url, mut requests) = receiver(vec![503, 200, 200, 200]).await;
        let hook = Webhook::spawn(url, Outcomes::default(), None).unwrap();
        let mut resolved = item("ap-1", 32);
        resolved.state = ApprovalState::Expired;
        hook.notify(Payload::new(
            "approval_required",
            "web1",
            &item("ap-1", 32),
            "",
        ));
        assert_eq!(
            requests.recv().await.unwrap(),
            seen("approval_required", "ap-1")
        );
        // While ap-1 waits for its retry: its resolution, then more than the queue holds.
        hook.notify(Payload::new("approval_resolved", "web1", &resolved, ""));
        for n in 2..=(QUEUE + 1) {
            hook.notify(Payload::new(
                "approval_required",
                "web1",
                &item(&format!("ap-{n}"), 32),
                "",
            ));
        }
        // The resolution was the oldest: dropped; ap-1's required is not retried either.
        assert_eq!(
            requests.recv().await.unwrap(),
            seen("approval_required", "ap-2")
        );
        let mut q = VecDeque::new();
        enqueue(
            &mut q,
            Payload::new("approval_required", "web1", &item("ap-7", 32), ""),
            "t",
            &Key::Approval("ap-0".into()),
            &Ledger::new(Outcomes::default()),
        );
        let mut done = item("ap-7", 32);
        done.state = ApprovalState::Expired;
        assert!(!enqueue(
            &mut q,
            Payload::new("approval_resolved", "web1", &done, ""),
            "t",
            &Key::Approval("ap-0".into()),
            &Ledger::new(Outcomes::default())
        ));
        assert_eq!(q.len(), 1);
        assert_eq!(q[0].kpo.event, "approval_resolved");
    }

    /// Every outcome's count, by its `result` label.
    fn counted(outcomes: &Outcomes) -> Vec<(&'static str, u64)> {
        Outcome::ALL
            .iter()
            .map(|&o| (o.as_str(), outcomes.get(o)))
            .collect()
    }

    /// [`counted`] as it should be: `nonzero`, and 0 for every other outcome.
    fn only(nonzero: &[(Outcome, u64)]) -> Vec<(&'static str, u64)> {
        Outcome::ALL
            .iter()
            .map(|&o| {
                let n = nonzero.iter().find(|(x, _)| *x == o).map_or(0, |(_, n)| *n);
                (o.as_str(), n)
            })
            .collect()
    }

    /// Posts a last notification (`ap-99`) and waits until the receiver has it. The delivery task
    /// takes notifications in order, so every one queued before it has had its outcome by then;
    /// the receiver holds it unanswered ([`HOLD`]), so that it has none yet. The tests run on
    /// tokio's current-thread runtime: nothing else moves until the test awaits again, so the
    /// counts read next are exact.
    async fn after_a_last_one(hook: &Webhook, requests: &mut mpsc::Receiver<(String, String)>) {
        hook.notify(Payload::new(
            "approval_required",
            "web1",
            &item("ap-99", 32),
            "",
        ));
        assert_eq!(
            requests.recv().await.unwrap(),
            seen("approval_required", "ap-99")
        );
    }

    fn required(id: &str) -> Payload {
        Payload::new("approval_required", "web1", &item(id, 32), "")
    }

    fn resolved(id: &str) -> Payload {
        let mut done = item(id, 32);
        done.state = ApprovalState::Expired;
        Payload::new("approval_resolved", "web1", &done, "")
    }

    /// Plain http elsewhere is said at start; to this host, or over https, nothing is.
    #[test]
    fn a_url_in_clear_is_said() {
        let said = |u: &str| in_clear(u);
        assert_eq!(said("https://hooks.example/services/T/B/X"), None);
        assert_eq!(said("http://127.0.0.1:9000/hook"), None);
        assert_eq!(said("http://alice:pw@localhost:9000/hook"), None);
        let path = said("http://10.0.0.9:9000/services/T/B/X").unwrap();
        assert!(
            path.contains("the URL's path and query cross the network"),
            "{path}"
        );
        let user = said("http://alice:pw@hooks.example/hook").unwrap();
        assert!(
            user.contains("user name and password (sent as Basic authorization)"),
            "{user}"
        );
        assert!(!user.contains("pw") && !user.contains("alice"), "{user}");
    }

    /// Over QUEUE, an end (or advice) makes way before a pending approval's notice, however old
    /// that is; with only pending approvals' notices waiting, the oldest goes.
    #[test]
    fn a_full_queue_drops_an_end_before_a_pending_approvals_notice() {
        let outcomes = Outcomes::default();
        let ledger = Ledger::new(outcomes.clone());
        let current = required("ap-0").key();
        let mut queued = VecDeque::new();
        enqueue(&mut queued, required("ap-1"), "h", &current, &ledger);
        for n in 2..=QUEUE {
            enqueue(
                &mut queued,
                resolved(&format!("ap-{n}")),
                "h",
                &current,
                &ledger,
            );
        }
        enqueue(&mut queued, required("ap-100"), "h", &current, &ledger);
        let ids = |q: &VecDeque<Payload>| -> Vec<String> {
            q.iter()
                .map(|p| format!("{} {}", p.kpo.event, p.key()))
                .collect()
        };
        let now = ids(&queued);
        assert_eq!(now.len(), QUEUE);
        assert_eq!(
            now[0],
            format!("approval_required {}", required("ap-1").key())
        );
        assert_eq!(
            now[1],
            format!("approval_resolved {}", resolved("ap-3").key()),
            "ap-2's end went"
        );
        assert_eq!(
            now[QUEUE - 1],
            format!("approval_required {}", required("ap-100").key())
        );
        // Only pending approvals' notices: the oldest goes.
        let mut queued: VecDeque<Payload> =
            (1..=QUEUE).map(|n| required(&format!("ap-{n}"))).collect();
        enqueue(&mut queued, required("ap-100"), "h", &current, &ledger);
        assert_eq!(
            ids(&queued)[0],
            format!("approval_required {}", required("ap-2").key())
        );
        assert_eq!(counted(&outcomes), only(&[(Outcome::QueueFull, 2)]));
    }

    /// A receiver on this host over plain http that another user serves is not posted to: each
    /// try fails before connecting, naming `approvals.webhook_user`, and the notification is
    /// given up; once a reload names that user, the next one is posted (s58 story BL-2).
    #[tokio::test]
    async fn a_receiver_another_user_serves_here_is_posted_to_only_once_named() {
        use tokio::io::AsyncWriteExt;
        if !nix::unistd::geteuid().is_root() {
            kpo_test_skip::skip("not root: the test listens as another user");
            return;
        }
        let nobody = 65534;
        // The socket's owner is the creator's file-system uid, changed for this thread alone.
        let theirs = {
            let root = nix::unistd::setfsuid(nix::unistd::Uid::from_raw(nobody));
            let bound = std::net::TcpListener::bind("127.0.0.1:0");
            nix::unistd::setfsuid(root);
            bound.unwrap()
        };
        theirs.set_nonblocking(true).unwrap();
        let address = theirs.local_addr().unwrap();
        let url = format!("http://{address}/kpo");
        let receiver = Receiver {
            client: client_builder(&url).build().unwrap(),
            url: url.clone(),
            shown: shown_url(&url),
            receiver_user: Arc::new(Mutex::new(None)),
        };
        let why = receiver.client_for_this_try().await.unwrap_err();
        assert!(
            why.starts_with(&format!(
                "{address} is served by uid {nobody} (nobody), not by root, the agent's user or \
                 approvals.webhook_user: any local user may listen on a free port of this host, \
                 and would get the approvals and the advice"
            )),
            "{why}"
        );
        let outcomes = Outcomes::default();
        let hook = Webhook::spawn_backing_off(
            url.clone(),
            outcomes.clone(),
            Duration::from_millis(1),
            None,
        )
        .unwrap();
        hook.notify(required("ap-1"));
        let until = |outcome: Outcome| {
            let outcomes = outcomes.clone();
            async move {
                for _ in 0..3000 {
                    if outcomes.get(outcome) > 0 {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                panic!("no notification {outcome:?}: {:?}", counted(&outcomes));
            }
        };
        until(Outcome::GivenUp).await;
        assert_eq!(
            theirs.accept().map(|_| ()).map_err(|e| e.kind()),
            Err(std::io::ErrorKind::WouldBlock),
            "nothing connected to the other user's listener"
        );
        // What kpo check and the webhook's start warn of.
        assert_eq!(receiver_refused(&url, None, false), Some(why.clone()));
        assert_eq!(receiver_refused(&url, None, true), Some(why));
        assert_eq!(receiver_refused(&url, Some("nobody"), false), None);
        let _ = hook.set_receiver_user(Some(nobody.to_string()));
        hook.notify(required("ap-2"));
        let theirs = tokio::net::TcpListener::from_std(theirs).unwrap();
        let (mut conn, _) = theirs.accept().await.unwrap();
        let body: serde_json::Value = serde_json::from_str(&request_body(&mut conn).await).unwrap();
        assert_eq!(body["kpo"]["approval"]["id"], "ap-2");
        conn.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        until(Outcome::Delivered).await;
        assert_eq!(
            counted(&outcomes),
            only(&[(Outcome::GivenUp, 1), (Outcome::Delivered, 1)])
        );
    }

    /// A reload that names a user this host does not know for the same URL is warned of at
    /// once, as at the webhook's start. Defect (s59 story BP-7): nothing was said until a
    /// notification failed, if one came. Naming the same user again looks at nothing.
    #[tokio::test]
    async fn a_reload_naming_an_unknown_webhook_user_is_warned_of_at_once() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/kpo", listener.local_addr().unwrap());
        // No delivery task: its own look at its start would log the same words (s60 review1
        // R1-9), so only the reload's can here.
        let (hook, _posted) = Webhook::to_channel_for(Some(&url));
        let (log, _guard) = crate::logging::Captured::install();
        let ReceiverUser::Changed(Some(look)) =
            hook.set_receiver_user(Some("no-such-user-kpo".into()))
        else {
            panic!("another user: looked at");
        };
        look.await.unwrap();
        assert!(
            log.text().contains(
                "approval webhook: approvals.webhook_user: no user named \"no-such-user-kpo\" on \
                 this host: nothing is sent to a listener on this host; nothing is posted to it \
                 while that holds"
            ),
            "{}",
            log.text()
        );
        assert!(matches!(
            hook.set_receiver_user(Some("no-such-user-kpo".into())),
            ReceiverUser::Same
        ));
        // Over https the user plays no part: nothing to look at or post again.
        let (hook, _posted) = Webhook::to_channel_for(Some("https://127.0.0.1:9/kpo"));
        assert!(matches!(
            hook.set_receiver_user(Some("relay".into())),
            ReceiverUser::Same
        ));
    }

    /// The refusal `kpo check` and the webhook's start say for a receiver on this host whose
    /// `webhook_user` this host does not know; one elsewhere or over https is not looked at.
    #[test]
    fn a_webhook_user_this_host_does_not_know_is_said_and_elsewhere_nothing_is_looked_at() {
        assert_eq!(
            receiver_refused("http://127.0.0.1:9/kpo", Some("no-such-user-kpo"), true).as_deref(),
            Some(
                "approvals.webhook_user: no user named \"no-such-user-kpo\" on this host: \
                 nothing is sent to a listener on this host"
            )
        );
        for url in ["https://127.0.0.1:9/kpo", "http://hooks.example/kpo"] {
            assert_eq!(
                receiver_refused(url, Some("no-such-user-kpo"), true),
                None,
                "{url}"
            );
        }
    }

    /// A notification delivered counts once, however many tries it took.
    #[tokio::test]
    async fn each_delivered_notification_is_counted_once() {
        let (url, mut requests) = receiver(vec![200, 503, 200, HOLD]).await;
        let outcomes = Outcomes::default();
        let hook =
            Webhook::spawn_backing_off(url, outcomes.clone(), Duration::from_millis(1), None)
                .unwrap();
        assert_eq!(counted(&outcomes), only(&[]), "every series from 0");
        hook.notify(required("ap-1"));
        hook.notify(required("ap-2"));
        for id in ["ap-1", "ap-2", "ap-2"] {
            assert_eq!(
                requests.recv().await.unwrap(),
                seen("approval_required", id)
            );
        }
        after_a_last_one(&hook, &mut requests).await;
        assert_eq!(counted(&outcomes), only(&[(Outcome::Delivered, 2)]));
    }

    /// A 4xx refused for good counts as refused, once (it is not retried).
    #[tokio::test]
    async fn a_refused_notification_is_counted() {
        let (url, mut requests) = receiver(vec![404, 410, HOLD]).await;
        let outcomes = Outcomes::default();
        let hook = Webhook::spawn(url, outcomes.clone(), None).unwrap();
        hook.notify(required("ap-1"));
        hook.notify(resolved("ap-2"));
        assert_eq!(
            requests.recv().await.unwrap(),
            seen("approval_required", "ap-1")
        );
        assert_eq!(
            requests.recv().await.unwrap(),
            seen("approval_resolved", "ap-2")
        );
        after_a_last_one(&hook, &mut requests).await;
        assert_eq!(counted(&outcomes), only(&[(Outcome::Refused, 2)]));
    }

    /// A notification that failed every one of its ATTEMPTS tries counts as given up, once.
    #[tokio::test]
    async fn a_notification_given_up_is_counted() {
        let mut statuses = vec![503; ATTEMPTS as usize - 1];
        statuses.extend([429, HOLD]);
        let (url, mut requests) = receiver(statuses).await;
        let outcomes = Outcomes::default();
        let hook =
            Webhook::spawn_backing_off(url, outcomes.clone(), Duration::from_millis(1), None)
                .unwrap();
        hook.notify(required("ap-1"));
        for _ in 0..ATTEMPTS {
            assert_eq!(
                requests.recv().await.unwrap(),
                seen("approval_required", "ap-1")
            );
        }
        after_a_last_one(&hook, &mut requests).await;
        assert_eq!(counted(&outcomes), only(&[(Outcome::GivenUp, 1)]));
    }

    /// A burst of QUEUE + 6 while a POST is in flight: the 6 oldest are dropped and counted, the
    /// rest delivered.
    #[tokio::test]
    async fn notifications_dropped_from_a_full_queue_are_counted() {
        const BURST: usize = QUEUE + 6;
        let (release, gate) = tokio::sync::oneshot::channel();
        let mut statuses = vec![200; QUEUE + 1];
        statuses.push(HOLD);
        let (url, mut requests) = receiver_gated(statuses, Some(gate)).await;
        let outcomes = Outcomes::default();
        let hook = Webhook::spawn(url, outcomes.clone(), None).unwrap();
        hook.notify(required("ap-0"));
        assert_eq!(
            requests.recv().await.unwrap(),
            seen("approval_required", "ap-0")
        );
        for n in 1..=BURST {
            hook.notify(required(&format!("ap-{n}")));
        }
        release.send(()).unwrap();
        for n in (BURST - QUEUE + 1)..=BURST {
            assert_eq!(
                requests.recv().await.unwrap(),
                seen("approval_required", &format!("ap-{n}"))
            );
        }
        after_a_last_one(&hook, &mut requests).await;
        assert_eq!(
            counted(&outcomes),
            only(&[
                (Outcome::Delivered, QUEUE as u64 + 1),
                (Outcome::QueueFull, BURST as u64 - QUEUE as u64)
            ])
        );
    }

    /// Replaced by a later notification about the same approval, counted both ways: one waiting
    /// for its retry (ap-1's required) and one waiting in the queue (ap-2's required).
    #[tokio::test]
    async fn replaced_notifications_are_counted() {
        let (url, mut requests) = receiver(vec![503, 200, 200, HOLD]).await;
        let outcomes = Outcomes::default();
        // An hour: ap-1's required is still waiting for its retry when its resolution comes.
        let hook =
            Webhook::spawn_backing_off(url, outcomes.clone(), Duration::from_secs(3600), None)
                .unwrap();
        hook.notify(required("ap-1"));
        assert_eq!(
            requests.recv().await.unwrap(),
            seen("approval_required", "ap-1")
        );
        hook.notify(resolved("ap-1"));
        hook.notify(required("ap-2"));
        hook.notify(resolved("ap-2"));
        assert_eq!(
            requests.recv().await.unwrap(),
            seen("approval_resolved", "ap-1")
        );
        assert_eq!(
            requests.recv().await.unwrap(),
            seen("approval_resolved", "ap-2")
        );
        after_a_last_one(&hook, &mut requests).await;
        assert_eq!(
            counted(&outcomes),
            only(&[(Outcome::Delivered, 2), (Outcome::Replaced, 2)])
        );
    }
}
