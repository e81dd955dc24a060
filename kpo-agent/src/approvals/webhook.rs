//! The optional approval webhook (`[approvals] webhook = "http://..."`): a JSON POST for each
//! approval required or resolved, with a Slack-compatible `text` and the structured item.
//!
//! Never blocks the agent: notifications go into a bounded queue ([`QUEUE`]) drained by a task of
//! its own; when the queue is full the notification is dropped and logged. Each POST is retried
//! with exponential backoff ([`ATTEMPTS`] tries, from [`FIRST_BACKOFF`] doubling up to
//! [`MAX_BACKOFF`]) on a connection error, a timeout or a status other than 2xx; every failure is
//! logged with the URL's scheme, host and port ([`shown_url`]) and the approval id.
use std::time::Duration;

use serde::Serialize;
use tokio::sync::mpsc;
use tracing::{info, warn};

use super::ApprovalItem;

/// Notifications waiting to be posted.
pub const QUEUE: usize = 64;
/// Tries per notification.
pub const ATTEMPTS: u32 = 8;
pub const FIRST_BACKOFF: Duration = Duration::from_millis(500);
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// One POST's time limit, connection included.
pub const TIMEOUT: Duration = Duration::from_secs(5);

/// The body of one POST.
#[derive(Debug, Clone, Serialize)]
pub struct Payload {
    /// One line for people (Slack and compatible receivers show it as the message).
    pub text: String,
    pub kpo: Structured,
}

#[derive(Debug, Clone, Serialize)]
pub struct Structured {
    /// `approval_required` or `approval_resolved`, as in the event stream.
    pub event: &'static str,
    pub host: String,
    pub approval: ApprovalItem,
    /// An approval still pending when the agent started, announced again (present only then):
    /// the first POST may have been lost with the agent that queued it, or given up on.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub repeat: bool,
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
    let entities = s
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace("](", &format!("]{ZWSP}("));
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

impl Payload {
    pub fn new(event: &'static str, raw_host: &str, item: &ApprovalItem) -> Payload {
        let host = slack_escape(raw_host);
        let parameter = slack_escape(&item.parameter.to_string());
        let value = slack_escape(&item.value.to_string());
        let current = item
            .current_value
            .as_ref()
            .map(|v| format!("{} -> ", slack_escape(&v.to_string())))
            .unwrap_or_default();
        let text = if event == "approval_required" {
            format!(
                "KPO on {host}: approval {} required: {parameter} {current}{value} (advised by {}, confidence {:.2}). {} Approve with `kpo approve {}`, reject with `kpo reject {}`; expires {}.",
                item.id,
                item.source,
                item.confidence,
                slack_escape(&item.reason),
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
                approval: item.clone(),
                repeat: false,
            },
        }
    }

    /// `approval_required` again, for an approval still pending when the agent started.
    pub fn repeat(host: &str, item: &ApprovalItem) -> Payload {
        let mut p = Payload::new("approval_required", host, item);
        p.text = format!("{} (Still pending after the agent restarted.)", p.text);
        p.kpo.repeat = true;
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
    tx: mpsc::Sender<Payload>,
    /// [`shown_url`] of the URL.
    shown: String,
}

impl Webhook {
    /// Starts the posting task on the current tokio runtime.
    pub fn spawn(url: String) -> Result<Webhook, reqwest::Error> {
        // No redirects: a 302 to a sign-on page would turn the POST into a GET without its body,
        // answered 200, and the notification would count as delivered.
        // No proxy for a receiver on this host (crate::http).
        let client = crate::http::client_builder(&url)
            .timeout(TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        let (tx, rx) = mpsc::channel(QUEUE);
        let shown = shown_url(&url);
        tokio::spawn(deliver(client, url, shown.clone(), rx));
        info!(url = %shown, "approval webhook on");
        Ok(Webhook { tx, shown })
    }

    /// A webhook whose notifications go to the returned receiver instead of a URL.
    #[cfg(test)]
    pub fn to_channel() -> (Webhook, mpsc::Receiver<Payload>) {
        let (tx, rx) = mpsc::channel(QUEUE);
        let shown = "test:".to_string();
        (Webhook { tx, shown }, rx)
    }

    /// Queues one notification; drops it (logged) when the queue is full.
    pub fn notify(&self, payload: Payload) {
        let id = payload.kpo.approval.id.clone();
        if let Err(e) = self.tx.try_send(payload) {
            warn!(
                url = %self.shown,
                "approval webhook: {id} not sent: {}",
                match e {
                    mpsc::error::TrySendError::Full(_) =>
                        format!("{QUEUE} notifications already wait (the receiver is down or slow)"),
                    mpsc::error::TrySendError::Closed(_) => "the delivery task ended".into(),
                }
            );
        }
    }
}

async fn deliver(
    client: reqwest::Client,
    url: String,
    shown: String,
    mut rx: mpsc::Receiver<Payload>,
) {
    while let Some(payload) = rx.recv().await {
        let id = &payload.kpo.approval.id;
        let event = payload.kpo.event;
        let mut backoff = FIRST_BACKOFF;
        let body = serde_json::to_vec(&payload).expect("payloads serialise");
        for attempt in 1..=ATTEMPTS {
            let result = client
                .post(&url)
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body.clone())
                .send()
                .await;
            let failure = match result {
                Ok(r) if r.status().is_success() => {
                    info!(url = %shown, "approval webhook: {event} {id} delivered (attempt {attempt})");
                    None
                }
                Ok(r) if r.status().is_redirection() => Some(format!(
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
                                reqwest::Url::parse(&url)
                                    .and_then(|base| base.join(l))
                                    .map_or_else(|_| shown_url(l), |u| shown_url(u.as_str()))
                            },
                        )
                )),
                Ok(r) => Some(format!("the receiver answered {}", r.status())),
                // reqwest names the whole URL in its errors.
                Err(e) => Some(describe(&e.without_url())),
            };
            let Some(why) = failure else { break };
            if attempt == ATTEMPTS {
                warn!(url = %shown, "approval webhook: {event} {id} failed (attempt {attempt} of {ATTEMPTS}): {why}; giving up");
                break;
            }
            warn!(url = %shown, "approval webhook: {event} {id} failed (attempt {attempt} of {ATTEMPTS}): {why}; retrying in {backoff:?}");
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }
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
mod tests {
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

    #[test]
    fn the_payload_has_a_slack_text_and_the_item() {
        let p = Payload::new("approval_required", "web1", &item("ap-3", 32));
        let v = serde_json::to_value(&p).unwrap();
        let text = v["text"].as_str().unwrap();
        assert!(
            text.starts_with(
                "KPO on web1: approval ap-3 required: net.core.somaxconn@netns:4026531999 16 -> 32"
            ),
            "{text}"
        );
        assert!(text.contains("kpo approve ap-3"), "{text}");
        assert_eq!(v["kpo"]["event"], "approval_required");
        assert_eq!(v["kpo"]["approval"]["id"], "ap-3");
        assert_eq!(v["kpo"]["approval"]["state"], "pending");
        assert_eq!(v["kpo"]["approval"]["value"], 32);
        let mut done = item("ap-3", 32);
        done.state = ApprovalState::Expired;
        let p = Payload::new("approval_resolved", "web1", &done);
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
        let p = Payload::new("approval_required", "web<1>", &hostile);
        assert!(!p.text.contains('<'), "{}", p.text);
        assert!(
            p.text
                .contains("listener of &lt;!channel&gt; &amp; &lt;http://evil.example|approve&gt;"),
            "{}",
            p.text
        );
        assert!(p.text.starts_with("KPO on web&lt;1&gt;:"), "{}", p.text);
        // The structured copy keeps the words as they were.
        assert_eq!(p.kpo.approval.reason, hostile.reason);
        assert_eq!(p.kpo.host, "web<1>");

        // Mattermost's and Rocket.Chat's mentions, and Markdown links.
        hostile.reason = "@channel @here look: [approve](http://evil.example)".into();
        let p = Payload::new("approval_required", "web1", &hostile);
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
        let q = Payload::new("approval_required", "web1", &hostile);
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
        let hook = Webhook::spawn(format!("http://127.0.0.1:{port}/kpo")).unwrap();
        hook.notify(Payload::new("approval_required", "web1", &item("ap-5", 32)));
        let first = seen.recv().await.unwrap();
        let second = seen.recv().await.unwrap();
        assert_eq!(
            [first.as_str(), second.as_str()],
            ["POST /kpo HTTP/1.1", "POST /kpo HTTP/1.1"]
        );
    }
}
