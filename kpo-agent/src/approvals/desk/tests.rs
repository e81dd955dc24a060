//! The desk over a change path and an in-memory kernel.
use std::time::Duration;

use super::*;
use crate::{
    advise::recommendation::{ApplicationRef, Source, WindowRef},
    approvals::ApprovalError,
    change::tests::{kernel, FakeActuators},
    journal::Holder,
    policy::Policy,
};

const NS: &str = "net.core.somaxconn@netns:4026539999";

fn policy(mode: &str) -> Policy {
    Policy::parse(
        &format!(
            r#"
[params."net.core.somaxconn"]
mode = "{mode}"
min = 16
max = 65535
max_step = "1000%"
"#
        ),
        "test.toml",
    )
    .unwrap()
}

fn settings() -> ApprovalSettings {
    ApprovalSettings {
        expire_after: Duration::from_secs(3600),
        clear_after_windows: 2,
        webhook: None,
        webhook_user: None,
    }
}

struct Setup {
    path: ChangePath,
    desk: Desk,
    k: FakeActuators,
}

fn open(
    dir: &std::path::Path,
    policy: Policy,
    settings: ApprovalSettings,
    recommend_only: bool,
) -> Setup {
    let k = kernel(&[(NS, Value::Int(16))]);
    crate::journal::store::make_private(dir);
    let journal = Journal::open(dir, Holder::Agent, Duration::ZERO).unwrap();
    let desk = Desk::open(&journal, settings, recommend_only).unwrap();
    let path = ChangePath::new(policy, journal, Box::new(k.clone()));
    Setup { path, desk, k }
}

fn setup(dir: &std::path::Path, mode: &str) -> Setup {
    open(dir, policy(mode), settings(), false)
}

fn rec(source: Source, value: i64, auto: bool) -> Recommendation {
    let parameter: ParamAddress = NS.parse().unwrap();
    Recommendation {
        id: Recommendation::make_id(source, 1, &parameter, Some(&Value::Int(value.into()))),
        parameter,
        current_value: Some(Value::Int(16)),
        recommended_value: Some(Value::Int(value.into())),
        can_auto_apply: auto,
        reason: format!("listener dropped 24; raise to {value}"),
        confidence: 0.9,
        source,
        window: WindowRef {
            index: 1,
            end: "2026-01-01T00:00:00Z".into(),
        },
        application: None,
        netns_cookie: None,
    }
}

/// The approvals whose end was posted to a webhook made by `Webhook::to_channel`, in order.
fn posted_ends(
    posted: &mut tokio::sync::mpsc::UnboundedReceiver<crate::approvals::webhook::Payload>,
) -> Vec<String> {
    let mut ends = Vec::new();
    while let Ok(p) = posted.try_recv() {
        if p.kpo.event == "approval_resolved" {
            ends.push(p.kpo.approval().unwrap().id.clone());
        }
    }
    ends
}

fn kinds(events: &[Event]) -> Vec<String> {
    events
        .iter()
        .map(|e| {
            serde_json::to_value(e).unwrap()["kind"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect()
}

impl Setup {
    /// Considers a batch; the change path's own events are not collected here.
    fn consider(&mut self, recs: Vec<Recommendation>) -> Considered {
        self.desk.consider(&mut self.path, recs, &mut Vec::new)
    }
    fn value(&self) -> Value {
        self.k.0.lock().unwrap().values[NS].clone()
    }
    /// Someone (a rule, a person) writes `v` to the kernel.
    fn set_value(&self, v: i128) {
        self.k
            .0
            .lock()
            .unwrap()
            .values
            .insert(NS.into(), Value::Int(v));
    }
}

#[test]
fn mode_recommend_makes_one_pending_approval_refreshed_then_superseded() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = setup(dir.path(), "recommend");
    let out = s.consider(vec![rec(Source::Rules, 32, false)]);
    assert_eq!(kinds(&out.events), ["recommendation", "approval_required"]);
    let pending = s.desk.pending().unwrap();
    assert_eq!(pending.len(), 1);
    let first = pending[0].clone();
    assert_eq!(first.id, "ap-1");
    assert_eq!(first.value, Value::Int(32));
    assert_eq!(first.current_value, Some(Value::Int(16)));
    // The advisor's flag is false because the policy says recommend: the policy holds it.
    assert_eq!(first.held_by, "policy");
    assert_eq!(s.value(), Value::Int(16), "nothing applied");

    // The same advice again: the same approval, refreshed.
    let out = s.consider(vec![rec(Source::Rules, 32, false)]);
    let v = serde_json::to_value(&out.events[1]).unwrap();
    assert_eq!(v["kind"], "approval_required");
    assert_eq!(v["refresh"], true);
    assert_eq!(v["id"], "ap-1");
    let pending = s.desk.pending().unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].refreshed, 1);
    assert!(pending[0].expires_ms >= first.expires_ms);

    // Another value for the same target: the older one is superseded, announced after the new
    // one, which its `by_id` names.
    let out = s.consider(vec![rec(Source::Rules, 64, false)]);
    assert_eq!(
        kinds(&out.events),
        ["recommendation", "approval_required", "approval_resolved"]
    );
    let resolved = serde_json::to_value(&out.events[2]).unwrap();
    assert_eq!(resolved["id"], "ap-1");
    assert_eq!(resolved["by_id"], "ap-2", "{resolved}");
    let pending = s.desk.pending().unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].id, "ap-2");
    assert_eq!(
        s.desk.store().item("ap-1").unwrap().state,
        ApprovalState::Superseded {
            by_id: "ap-2".into()
        }
    );
}

#[test]
fn approving_applies_through_the_change_path_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = setup(dir.path(), "recommend");
    s.consider(vec![rec(Source::Rules, 32, true)]);
    let item = s.desk.pending().unwrap().remove(0);
    assert_eq!(item.held_by, "policy");
    let out = s.desk.approve(&mut s.path, "1", "op").unwrap();
    assert_eq!(out.report.status, ChangeStatus::Applied);
    assert_eq!(s.value(), Value::Int(32));
    let id = out.report.journal_id.expect("journaled");
    assert_eq!(
        out.approval.state,
        ApprovalState::Approved {
            by: "op".into(),
            journal_id: Some(id),
            status: ChangeStatus::Applied
        }
    );
    let intent = s.path.journal.intent(id).unwrap();
    assert_eq!(
        intent.source,
        crate::policy::Source::Rules,
        "proposed as the advisor"
    );
    assert!(
        intent.reason.starts_with("approved by op (ap-1): "),
        "{}",
        intent.reason
    );
    // Asked again (a script, a configuration run): done, nothing journaled (s60 story BR-2: an
    // error, exit 2, as for a typo or an agent that does not answer).
    let entries = s.path.journal.entries().len();
    let again = s.desk.approve(&mut s.path, "ap-1", "op2").unwrap();
    assert_eq!(again.report.status, ChangeStatus::Unchanged);
    assert_eq!(again.report.journal_id, Some(id));
    assert_eq!(
        again.report.detail.as_deref(),
        Some(format!("ap-1 was approved already, by op (journal #{id}); nothing done").as_str())
    );
    assert_eq!(
        again.approval.state, out.approval.state,
        "the first approval's"
    );
    assert_eq!(s.path.journal.entries().len(), entries);
    assert_eq!(s.value(), Value::Int(32));
    // Its value taken out since (a revert, the guard, a person): approved, but not in force, so
    // not done as asked (s60 review1 R1-1: `unchanged`, exit 0, beside a kernel with 16).
    s.set_value(16);
    let again = s.desk.approve(&mut s.path, "ap-1", "op2").unwrap();
    assert_eq!(again.report.status, ChangeStatus::Skipped);
    assert_eq!(again.report.read_back, Some(Value::Int(16)));
    let detail = again.report.detail.unwrap();
    assert!(
        detail.starts_with(&format!(
            "ap-1 was approved already, by op (journal #{id}), and its value is no longer in \
             force (the kernel has 16: taken out since, by a revert, the guard or another writer)"
        )),
        "{detail}"
    );
    assert_eq!(s.path.journal.entries().len(), entries);
    assert_eq!(s.value(), Value::Int(16), "nothing written");
    // Rejecting what is approved is not the same request: an error still, naming the request
    // (s60 review1 R1-6: "approved or rejected").
    let err = s.desk.reject("ap-1", "op", None).unwrap_err();
    assert!(
        matches!(
            err,
            ControlError::Approval(ApprovalError::NotPending { .. })
        ),
        "{err}"
    );
    assert_eq!(
        err.to_string(),
        format!("ap-1 can no longer be rejected: approved by op (journal #{id})")
    );
    assert!(s.desk.pending().unwrap().is_empty());
    let err = s.desk.approve(&mut s.path, "ap-9", "op").unwrap_err();
    assert!(err.to_string().contains("no approval ap-9"), "{err}");
}

/// s47 storyM M-1: `kpo explain` (which only reads) showed an approval past its expiry as
/// pending until a `kpo pending`, a request or a window recorded the expiry.
#[test]
fn explain_shows_an_approval_past_its_expiry_as_expired() {
    let dir = tempfile::tempdir().unwrap();
    let mut settings = settings();
    settings.expire_after = Duration::ZERO; // expires the moment it is made
    let mut s = open(dir.path(), policy("recommend"), settings, false);
    s.consider(vec![rec(Source::Rules, 32, false)]);
    let approval = s.desk.explain("net.core.somaxconn", 1)[0]
        .approval
        .clone()
        .unwrap();
    assert_eq!(approval.state, ApprovalState::Expired);
    assert_eq!(approval.resolved_ms, Some(approval.expires_ms));
    // Not yet due: pending.
    let dir = tempfile::tempdir().unwrap();
    let mut s = setup(dir.path(), "recommend");
    s.consider(vec![rec(Source::Rules, 32, false)]);
    let approval = s.desk.explain("net.core.somaxconn", 1)[0]
        .approval
        .clone()
        .unwrap();
    assert_eq!(approval.state, ApprovalState::Pending);
}

/// A clock stepped back since the advice: by less than `expire_after` (1h), the approval waits
/// until its time; by more (a day), it has expired rather than wait a day longer.
#[test]
fn an_approval_a_clock_stepped_back_puts_far_ahead_has_expired() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = setup(dir.path(), "recommend");
    s.consider(vec![rec(Source::Rules, 32, false)]);
    let item = s.desk.pending().unwrap()[0].clone();
    let hour = 3_600_000;
    assert!(!s.desk.is_due(&item, item.updated_ms - hour + 1));
    assert!(!s.desk.is_due(&item, item.updated_ms + hour - 1));
    assert!(s.desk.is_due(&item, item.updated_ms + hour));
    assert!(s.desk.is_due(&item, item.updated_ms - hour - 1));
    assert!(s.desk.is_due(&item, item.updated_ms - 24 * hour));
}

#[test]
fn an_expired_approval_cannot_be_approved() {
    let dir = tempfile::tempdir().unwrap();
    let mut settings = settings();
    settings.expire_after = Duration::ZERO; // expires the moment it is made
    let mut s = open(dir.path(), policy("recommend"), settings, false);
    s.consider(vec![rec(Source::Rules, 32, false)]);
    let err = s.desk.approve(&mut s.path, "ap-1", "op").unwrap_err();
    assert!(
        matches!(err, ControlError::Approval(ApprovalError::Expired { .. })),
        "{err}"
    );
    assert!(
        err.to_string().contains("can no longer be approved"),
        "{err}"
    );
    assert_eq!(s.value(), Value::Int(16));
    let events = s.desk.take_events();
    let v = serde_json::to_value(&events[0]).unwrap();
    assert_eq!(v["kind"], "approval_resolved");
    assert_eq!(v["state"], "expired");
    // Rejecting it is refused the same way, saying so (it said only "can no longer be
    // approved" to a `kpo reject`: s35 apr, by hand).
    let err = s.desk.reject("ap-1", "op", None).unwrap_err();
    assert!(
        err.to_string()
            .ends_with("expire_after; it can no longer be approved or rejected"),
        "{err}"
    );
}

#[test]
fn an_approval_clears_when_its_advice_stops_or_the_kernel_has_the_value() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = setup(dir.path(), "recommend");
    s.consider(vec![rec(Source::Rules, 32, false)]);
    s.desk.on_window(&s.path); // made in this window: not counted
    s.desk.on_window(&s.path);
    assert_eq!(s.desk.pending().unwrap().len(), 1, "one window without it");
    s.desk.on_window(&s.path);
    assert!(s.desk.pending().unwrap().is_empty());
    match &s.desk.store().item("ap-1").unwrap().state {
        ApprovalState::Cleared { why } => {
            assert_eq!(
                why,
                "rules has not recommended it for 2 consecutive windows"
            )
        }
        other => panic!("{other:?}"),
    }

    // Advice made again each window keeps it; the kernel reaching the value clears it.
    s.consider(vec![rec(Source::Rules, 48, false)]);
    for _ in 0..3 {
        s.desk.on_window(&s.path);
        s.consider(vec![rec(Source::Rules, 48, false)]);
    }
    assert_eq!(s.desk.pending().unwrap().len(), 1);
    s.set_value(48);
    s.desk.on_window(&s.path);
    assert!(s.desk.pending().unwrap().is_empty());
    assert_eq!(
        s.desk.store().item("ap-2").unwrap().state,
        ApprovalState::Cleared {
            why: "the kernel already has 48".into()
        }
    );
}

#[test]
fn pending_approvals_survive_reopening_and_reject_is_recorded_for_explain() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut s = setup(dir.path(), "recommend");
        s.consider(vec![rec(Source::Rules, 32, false)]);
    }
    let mut s = setup(dir.path(), "recommend");
    let pending = s.desk.pending().unwrap();
    assert_eq!(pending.len(), 1);
    let item = s
        .desk
        .reject(&pending[0].id, "op", Some("not in business hours"))
        .unwrap();
    assert_eq!(
        item.state,
        ApprovalState::Rejected {
            by: "op".into(),
            why: Some("not in business hours".into())
        }
    );
    // The loop takes the rejection's event, as the agent's does.
    s.desk.take_events();
    drop(s);
    let s = setup(dir.path(), "recommend");
    let explained = s.desk.explain("net.core.somaxconn", 10);
    assert_eq!(explained.len(), 1);
    assert_eq!(explained[0].entry.done, Done::Pending);
    assert_eq!(explained[0].entry.approval_id.as_deref(), Some("ap-1"));
    assert_eq!(
        explained[0].approval.as_ref().unwrap().state.name(),
        "rejected"
    );
    assert_eq!(s.desk.explain(NS, 10).len(), 1, "by address");

    // The same advice again: not asked again while the rejection stands (expire_after).
    let mut s = s;
    let out = s.consider(vec![rec(Source::Rules, 32, false)]);
    // The stream says what became of the proposal that needed approval (s43 story2).
    assert_eq!(kinds(&out.events), ["recommendation", "approval_not_asked"]);
    let Event::ApprovalNotAsked(not_asked) = &out.events[1] else {
        unreachable!()
    };
    let rejected = s.desk.store.item("ap-1").unwrap();
    assert_eq!(
        (
            not_asked.because,
            not_asked.approval_id.as_str(),
            not_asked.asks_again_ms,
            &not_asked.value,
            not_asked.source,
        ),
        (
            crate::approvals::NotAskedBecause::Rejected,
            "ap-1",
            Some(s.desk.store.asks_again(rejected)),
            &Value::Int(32),
            Source::Rules,
        )
    );
    assert!(s.desk.pending().unwrap().is_empty());
    let latest = &s.desk.explain(NS, 1)[0];
    assert_eq!(latest.entry.detail.as_ref(), Some(&not_asked.detail));
    assert_eq!(latest.entry.done, Done::Rejected);
    assert_eq!(latest.entry.approval_id.as_deref(), Some("ap-1"));
    assert!(
        latest
            .entry
            .detail
            .as_deref()
            .unwrap()
            .contains("not asked again before"),
        "{latest:?}"
    );
    // Another value is a new question.
    s.consider(vec![rec(Source::Rules, 64, false)]);
    assert_eq!(s.desk.pending().unwrap()[0].id, "ap-2");
    assert!(s.desk.explain("net.core.somaxconn@netns:1", 10).is_empty());
    assert!(s.desk.explain("net.core.netdev_budget", 10).is_empty());
}

/// Defect (s35 apr, by hand): `kpo reject ap-14 --reason ""` recorded an empty reason, shown
/// everywhere as `rejected by WHO: ` with nothing after the colon (the CLI, the webhook's text,
/// later errors). An empty or blank reason is no reason.
#[test]
fn an_empty_rejection_reason_is_no_reason() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = setup(dir.path(), "recommend");
    s.consider(vec![rec(Source::Rules, 32, false)]);
    let item = s.desk.reject("ap-1", "op", Some(" ")).unwrap();
    assert_eq!(
        item.state,
        ApprovalState::Rejected {
            by: "op".into(),
            why: None
        }
    );
    assert_eq!(item.state.describe(), "rejected by op");
    // Asked again: done, the first rejection kept (s60 story BR-2: an error, exit 2); approving
    // it is another request, still refused.
    let again = s.desk.reject("ap-1", "op2", Some("other words")).unwrap();
    assert_eq!(again.state, item.state);
    let err = s.desk.approve(&mut s.path, "ap-1", "op").unwrap_err();
    assert!(
        err.to_string().contains("can no longer be approved"),
        "{err}"
    );
    s.consider(vec![rec(Source::Rules, 64, false)]);
    let item = s.desk.reject("ap-2", "op", Some(" not now ")).unwrap();
    assert_eq!(item.state.describe(), "rejected by op: not now");
    // On one line: a line break in it began what read as a new entry in `kpo explain`, and
    // reached the LLM's prompt as it was (s52 storyAF AF-2).
    s.consider(vec![rec(Source::Rules, 128, false)]);
    let item = s
        .desk
        .reject("ap-3", "op", Some("not\nnow,\tthe\u{200b} freeze"))
        .unwrap();
    assert_eq!(item.state.describe(), "rejected by op: not now, the freeze");
    // One an older build stored with its line break shows on one line too (s52 review2 N10).
    let stored = ApprovalState::Rejected {
        by: "op".into(),
        why: Some("not\nnow".into()),
    };
    assert_eq!(stored.describe(), "rejected by op: not now");
}

/// Approvals still pending when the webhook is set (at the agent's start) are posted again,
/// marked `repeat`; resolved ones are not; new ones are posted once, unmarked.
#[test]
fn the_webhook_announces_approvals_still_pending_at_start_again() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut s = setup(dir.path(), "recommend");
        s.consider(vec![rec(Source::Rules, 32, false)]);
        s.consider(vec![rec(Source::Rules, 64, false)]);
        let pending = s.desk.pending().unwrap();
        assert_eq!(pending.len(), 1, "64 superseded 32: {pending:?}");
    }
    let mut s = setup(dir.path(), "recommend");
    let (webhook, mut posted) = Webhook::to_channel();
    s.desk.set_webhook(webhook);
    let first = posted.try_recv().expect("the pending approval, again");
    assert_eq!(first.kpo.event, "approval_required");
    assert_eq!(first.kpo.approval().unwrap().id, "ap-2");
    assert_eq!(first.kpo.approval().unwrap().value, Value::Int(64));
    assert!(first.kpo.repeat);
    let json = serde_json::to_value(&first).unwrap();
    assert_eq!(json["kpo"]["repeat"], true);
    assert!(first
        .text
        .ends_with("(Still pending after the agent restarted.)"));
    assert_eq!(json["kpo"]["repeat_reason"], "agent_started");
    assert!(
        posted.try_recv().is_err(),
        "ap-1 was superseded: not posted"
    );
    // A new question is posted once, without `repeat` in the JSON.
    s.consider(vec![rec(Source::Rules, 128, false)]);
    let mut kinds_posted = Vec::new();
    while let Ok(p) = posted.try_recv() {
        let json = serde_json::to_value(&p).unwrap();
        assert!(json["kpo"].get("repeat").is_none(), "{json}");
        assert!(json["kpo"].get("repeat_reason").is_none(), "{json}");
        kinds_posted.push((p.kpo.event, p.kpo.approval().unwrap().id.clone()));
    }
    assert_eq!(
        kinds_posted,
        [
            ("approval_required", "ap-3".to_string()),
            ("approval_resolved", "ap-2".to_string())
        ]
    );
}

/// A reload that names another `approvals.webhook_user` for the same URL posts what is pending
/// again, saying why. Defect (s59 review R1-3): a receiver refused for its user until then had
/// never heard of the approvals pending, and was told nothing of them after the fix. A reload
/// that names the same user posts nothing.
#[test]
fn another_webhook_user_is_told_what_is_pending() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = setup(dir.path(), "recommend");
    s.consider(vec![rec(Source::Rules, 32, false)]);
    let (webhook, mut posted) = Webhook::to_channel();
    s.desk.set_webhook(webhook);
    assert!(posted.try_recv().is_ok(), "the start's repeat");
    let mut reloaded = settings();
    reloaded.webhook_user = Some("relay".into());
    s.desk.set_settings(reloaded.clone());
    let again = posted.try_recv().expect("the pending approval, again");
    assert_eq!(again.kpo.approval().unwrap().id, "ap-1");
    let json = serde_json::to_value(&again).unwrap();
    assert_eq!(json["kpo"]["repeat"], true, "{json}");
    assert_eq!(
        json["kpo"]["repeat_reason"], "webhook_user_changed",
        "{json}"
    );
    assert!(
        again.text.ends_with(
            "(Still pending when a policy reload named another approvals.webhook_user.)"
        ),
        "{}",
        again.text
    );
    s.desk.set_settings(reloaded);
    assert!(posted.try_recv().is_err(), "the same user: nothing posted");
    s.desk.set_settings(settings());
    assert!(
        posted.try_recv().is_ok(),
        "no user named any more: posted again"
    );
}

/// The body of the first POST to a receiver on this host, which answers 200.
async fn first_post() -> (String, tokio::task::JoinHandle<serde_json::Value>) {
    use tokio::io::AsyncWriteExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/kpo", listener.local_addr().unwrap());
    let body = tokio::spawn(async move {
        let (mut conn, _) = listener.accept().await.unwrap();
        let body = crate::approvals::webhook::tests::request_body(&mut conn).await;
        conn.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        serde_json::from_str(&body).unwrap()
    });
    (url, body)
}

/// A reload that names a new webhook URL announces what is pending to it, saying that this is
/// why. Defect: it said "Still pending after the agent restarted." (`repeat_reason` absent), when
/// no restart happened, misleading a receiver that alerts on restarts.
#[tokio::test]
async fn a_new_webhook_url_is_told_what_is_pending_without_a_restart_claimed() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = setup(dir.path(), "recommend");
    s.consider(vec![rec(Source::Rules, 32, false)]);
    let (url, body) = first_post().await;
    let mut reloaded = settings();
    reloaded.webhook = Some(url);
    s.desk.set_settings(reloaded);
    let body = body.await.unwrap();
    assert_eq!(body["kpo"]["event"], "approval_required", "{body}");
    assert_eq!(body["kpo"]["approval"]["id"], "ap-1", "{body}");
    assert_eq!(body["kpo"]["repeat"], true, "{body}");
    assert_eq!(body["kpo"]["repeat_reason"], "webhook_changed", "{body}");
    let text = body["text"].as_str().unwrap();
    assert!(!text.contains("restarted"), "{text}");
    assert!(
        text.ends_with("(Still pending when a policy reload set this webhook.)"),
        "{text}"
    );
}

/// Soak O6: a reload that changed only the webhook URL's path logged "approval webhook off" and
/// "on" with the same scheme, host and port, as if nothing had changed. It says the path changed,
/// without the path; a reload that leaves the URL as it was says nothing.
#[tokio::test]
async fn a_new_webhook_path_is_told_without_showing_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = setup(dir.path(), "recommend");
    let with = |url: &str| {
        let mut settings = settings();
        settings.webhook = Some(url.to_string());
        settings
    };
    let said = "approval webhook: the reloaded policy changed the URL's path, query, user name or \
                password (not shown: they may hold a token) url=http://127.0.0.1:9";
    s.desk
        .set_settings(with("http://127.0.0.1:9/hook/SECRET-A"));
    let ((), log) = crate::logging::logged(|| {
        s.desk
            .set_settings(with("http://127.0.0.1:9/hook/SECRET-B"))
    });
    assert!(log.contains(said), "{log}");
    assert!(!log.contains("SECRET"), "{log}");
    let ((), log) = crate::logging::logged(|| {
        s.desk
            .set_settings(with("http://127.0.0.1:9/hook/SECRET-B"))
    });
    assert_eq!(log, "");
    // Another port: the off and on lines differ already.
    let ((), log) =
        crate::logging::logged(|| s.desk.set_settings(with("http://127.0.0.1:10/hook")));
    assert!(!log.contains("changed the URL's path"), "{log}");
    assert!(
        log.contains("approval webhook on url=http://127.0.0.1:10"),
        "{log}"
    );
}

/// The agent's start (`start_webhook`, what `kpo run` calls) announces what is pending as a
/// repeat after a start. Defect: it passed the reload's reason, so every start claimed a reload
/// had set the webhook.
#[tokio::test]
async fn the_agents_start_announces_what_is_pending_as_after_a_start() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = setup(dir.path(), "recommend");
    s.consider(vec![rec(Source::Rules, 32, false)]);
    let (url, body) = first_post().await;
    s.desk.start_webhook(url);
    let body = body.await.unwrap();
    assert_eq!(body["kpo"]["approval"]["id"], "ap-1", "{body}");
    assert_eq!(body["kpo"]["repeat"], true, "{body}");
    assert_eq!(body["kpo"]["repeat_reason"], "agent_started", "{body}");
    let text = body["text"].as_str().unwrap();
    assert!(!text.contains("reload"), "{text}");
}

/// An approval whose time ran out while the agent was down is expired at start, and that is
/// what the webhook gets: not a repeat of a question nobody can answer any more.
#[test]
fn an_approval_that_expired_while_the_agent_was_down_is_posted_as_expired() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut s = setup(dir.path(), "recommend");
        s.consider(vec![rec(Source::Rules, 32, false)]);
    }
    let expired_now = ApprovalSettings {
        expire_after: Duration::ZERO,
        ..settings()
    };
    let mut s = open(dir.path(), policy("recommend"), expired_now, false);
    let (webhook, mut posted) = Webhook::to_channel();
    s.desk.set_webhook(webhook);
    let only = posted.try_recv().expect("the expiry");
    assert_eq!(only.kpo.event, "approval_resolved");
    assert_eq!(only.kpo.approval().unwrap().id, "ap-1");
    assert_eq!(only.kpo.approval().unwrap().state, ApprovalState::Expired);
    assert!(!only.kpo.repeat);
    assert!(posted.try_recv().is_err(), "nothing announced again");
    assert!(s.desk.pending().unwrap().is_empty());
}

/// Defect (s36 story F3): what the CLI resolved while the agent was down (a rejection, an
/// expiry a plain `kpo pending` recorded) was never posted, not even at the next start, nor in
/// the event stream. The next start announces each once (event, then webhook), and marks it
/// so: a second start announces nothing again.
#[test]
fn what_the_cli_resolved_while_the_agent_was_down_is_announced_once_at_the_next_start() {
    const OTHER: &str = "net.core.somaxconn@netns:4026540015";
    let dir = tempfile::tempdir().unwrap();
    {
        let mut s = setup(dir.path(), "recommend");
        s.k.0
            .lock()
            .unwrap()
            .values
            .insert(OTHER.into(), Value::Int(16));
        let mut other = rec(Source::Rules, 48, false);
        other.parameter = OTHER.parse().unwrap();
        s.consider(vec![rec(Source::Rules, 32, false), other]);
        assert_eq!(s.desk.pending().unwrap().len(), 2);
    }
    let offline = |settings: ApprovalSettings| {
        let journal = Journal::open(dir.path(), Holder::Cli, Duration::ZERO).unwrap();
        Desk::open_offline(&journal, settings).unwrap()
    };
    offline(settings()).reject("ap-1", "op", None).unwrap();
    let expired_now = ApprovalSettings {
        expire_after: Duration::ZERO,
        ..settings()
    };
    assert!(offline(expired_now).pending().unwrap().is_empty());
    let with_webhook = ApprovalSettings {
        webhook: Some("http://127.0.0.1:9/kpo".into()),
        ..settings()
    };
    let ended = |events: Vec<Event>| -> Vec<(String, String)> {
        events
            .into_iter()
            .filter_map(|e| match e {
                Event::ApprovalResolved(a) => {
                    Some((a.approval.id, a.approval.state.name().to_string()))
                }
                _ => None,
            })
            .collect()
    };
    let both = [
        ("ap-1".to_string(), "rejected".to_string()),
        ("ap-2".to_string(), "expired".to_string()),
    ];
    let mut s = open(dir.path(), policy("recommend"), with_webhook.clone(), false);
    assert_eq!(ended(s.desk.take_events()), both, "in the event stream");
    let (webhook, mut posted) = Webhook::to_channel();
    s.desk.set_webhook(webhook);
    let mut heard = Vec::new();
    while let Ok(p) = posted.try_recv() {
        let a = p.kpo.approval().unwrap();
        heard.push((p.kpo.event, a.id.clone(), a.state.name().to_string()));
    }
    assert_eq!(
        heard,
        [
            ("approval_resolved", "ap-1".into(), "rejected".into()),
            ("approval_resolved", "ap-2".into(), "expired".into()),
        ]
    );
    drop(s);
    // Started again: nothing of it is announced again.
    let mut s = open(dir.path(), policy("recommend"), with_webhook, false);
    assert!(s.desk.take_events().is_empty());
    let (webhook, mut posted) = Webhook::to_channel();
    s.desk.set_webhook(webhook);
    assert!(posted.try_recv().is_err(), "posted once");
}

/// s40 review R3: killed after a newer approval superseded an older one and before the next
/// window marked them announced, the next start posted the older one's end (naming the newer by
/// `by_id`) before the newer one's repeat. It posts what is pending first, as the event stream
/// announces them, then the ends nobody heard.
#[test]
fn a_start_posts_the_pending_approval_before_the_end_that_names_it() {
    let dir = tempfile::tempdir().unwrap();
    let with_webhook = ApprovalSettings {
        webhook: Some("http://127.0.0.1:9/kpo".into()),
        ..settings()
    };
    {
        let mut s = open(dir.path(), policy("recommend"), with_webhook.clone(), false);
        let (webhook, _posted) = Webhook::to_channel();
        s.desk.set_webhook(webhook);
        s.consider(vec![rec(Source::Rules, 32, false)]);
        s.consider(vec![rec(Source::Rules, 64, false)]);
        // Killed before the next window: nothing runs after this.
        let Setup { desk, .. } = s;
        std::mem::forget(desk);
    }
    let mut s = open(dir.path(), policy("recommend"), with_webhook, false);
    let (webhook, mut posted) = Webhook::to_channel();
    s.desk.set_webhook(webhook);
    let mut order = Vec::new();
    while let Ok(p) = posted.try_recv() {
        order.push((p.kpo.event, p.kpo.approval().unwrap().id.clone()));
    }
    assert_eq!(
        order,
        [
            ("approval_required", "ap-2".to_string()),
            ("approval_resolved", "ap-1".to_string())
        ]
    );
}

/// Defect (s38 chaos F1): an approval the running agent resolved was stored as announced before
/// its `approval_resolved` event and post were out, so a kill in between (seen: `kpo approve`,
/// then kill -9 20 ms later) lost both for good, and the receiver kept it pending. Its end stays
/// marked unannounced until the next window: a kill before that announces it at the next start
/// (event and post); once a window marked it, a start announces nothing again.
#[test]
fn what_the_agent_resolved_just_before_a_kill_is_announced_at_the_next_start() {
    let dir = tempfile::tempdir().unwrap();
    let with_webhook = ApprovalSettings {
        webhook: Some("http://127.0.0.1:9/kpo".into()),
        ..settings()
    };
    let resolved = |events: Vec<Event>| -> Vec<String> {
        events
            .into_iter()
            .filter_map(|e| match e {
                Event::ApprovalResolved(a) => Some(a.approval.id),
                _ => None,
            })
            .collect()
    };
    {
        let mut s = open(dir.path(), policy("recommend"), with_webhook.clone(), false);
        let (webhook, mut posted) = Webhook::to_channel();
        s.desk.set_webhook(webhook);
        s.consider(vec![rec(Source::Rules, 32, false)]);
        s.desk.reject("ap-1", "op", None).unwrap();
        assert_eq!(resolved(s.desk.take_events()), ["ap-1"]);
        assert_eq!(posted_ends(&mut posted), ["ap-1"], "queued");
        // Killed before the next window: nothing runs after this.
        let Setup { desk, .. } = s;
        std::mem::forget(desk);
    }
    // A start that fails before its loop takes the events (no webhook set, which would wait for
    // its post anyway): dropped, nothing marked.
    drop(open(dir.path(), policy("recommend"), settings(), false));
    let mut s = open(dir.path(), policy("recommend"), with_webhook.clone(), false);
    assert_eq!(
        resolved(s.desk.take_events()),
        ["ap-1"],
        "in the event stream again"
    );
    let (webhook, mut posted) = Webhook::to_channel();
    s.desk.set_webhook(webhook);
    assert_eq!(posted_ends(&mut posted), ["ap-1"], "posted again");
    s.desk.on_window(&s.path);
    let Setup { desk, path, .. } = s;
    std::mem::forget(desk);
    drop(path);
    // A window marked it announced: the next start is silent about it.
    let mut s = open(dir.path(), policy("recommend"), with_webhook, false);
    assert!(resolved(s.desk.take_events()).is_empty());
    let (webhook, mut posted) = Webhook::to_channel();
    s.desk.set_webhook(webhook);
    assert!(
        posted_ends(&mut posted).is_empty(),
        "posted once more, not twice more"
    );
}

/// Defect (s38 chaos F1b): an approval made just before a kill (seen: at approvals.log's
/// compaction) never had an `approval_required` event, not at the next start either: the start
/// repeated pending approvals to the webhook only. It stays marked unannounced until the next
/// window, and a start reports it; once a window marked it, a start does not.
#[test]
fn an_approval_made_just_before_a_kill_is_reported_at_the_next_start() {
    let dir = tempfile::tempdir().unwrap();
    let required = |events: Vec<Event>| -> Vec<String> {
        events
            .into_iter()
            .filter_map(|e| match e {
                Event::ApprovalRequired(a) => Some(a.approval.id),
                _ => None,
            })
            .collect()
    };
    {
        let mut s = setup(dir.path(), "recommend");
        let out = s.consider(vec![rec(Source::Rules, 32, false)]);
        assert_eq!(kinds(&out.events), ["recommendation", "approval_required"]);
        // Refreshed in the same window: still not marked.
        s.consider(vec![rec(Source::Rules, 32, false)]);
        let Setup { desk, .. } = s;
        std::mem::forget(desk);
    }
    let mut s = setup(dir.path(), "recommend");
    assert_eq!(
        required(s.desk.take_events()),
        ["ap-1"],
        "reported at the start"
    );
    assert_eq!(s.desk.pending().unwrap().len(), 1);
    // Nothing of it is posted as resolved.
    let (webhook, mut posted) = Webhook::to_channel();
    s.desk.set_webhook(webhook);
    while let Ok(p) = posted.try_recv() {
        assert_eq!(p.kpo.event, "approval_required", "only the start's repeat");
    }
    s.desk.on_window(&s.path);
    let Setup { desk, path, .. } = s;
    std::mem::forget(desk);
    drop(path);
    let mut s = setup(dir.path(), "recommend");
    assert!(required(s.desk.take_events()).is_empty(), "reported once");
    assert_eq!(s.desk.pending().unwrap()[0].id, "ap-1");
}

/// Without a webhook, the event stream is all there is to tell of what the CLI resolved while
/// the agent was down: the start reports it once, and a later start with a webhook does not
/// post it (nor would it post every end of an agent run without one).
#[test]
fn without_a_webhook_what_the_cli_resolved_is_reported_once_and_never_posted_later() {
    let dir = tempfile::tempdir().unwrap();
    setup(dir.path(), "recommend").consider(vec![rec(Source::Rules, 32, false)]);
    {
        let journal = Journal::open(dir.path(), Holder::Cli, Duration::ZERO).unwrap();
        let mut cli = Desk::open_offline(&journal, settings()).unwrap();
        cli.reject("ap-1", "op", None).unwrap();
    }
    let mut s = setup(dir.path(), "recommend");
    assert_eq!(kinds(&s.desk.take_events()), ["approval_resolved"]);
    drop(s);
    let with_webhook = ApprovalSettings {
        webhook: Some("http://127.0.0.1:9/kpo".into()),
        ..settings()
    };
    let mut s = open(dir.path(), policy("recommend"), with_webhook, false);
    assert!(s.desk.take_events().is_empty());
    let (webhook, mut posted) = Webhook::to_channel();
    s.desk.set_webhook(webhook);
    assert!(posted.try_recv().is_err());
}

#[test]
fn auto_applies_and_conflicts_are_merged_with_the_loser_set_aside() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = setup(dir.path(), "auto");
    let out = s.consider(vec![
        rec(Source::Llm, 1024, true),
        rec(Source::Rules, 32, true),
    ]);
    assert_eq!(
        kinds(&out.events),
        [
            "recommendation",
            "recommendation",
            "recommendation_set_aside"
        ]
    );
    let aside = serde_json::to_value(&out.events[2]).unwrap();
    assert_eq!(aside["recommended_value"], 1024);
    assert_eq!(aside["kept_value"], 32);
    assert_eq!(aside["source"], "llm");
    assert_eq!(out.applied.len(), 1);
    assert_eq!(s.value(), Value::Int(32));
    let explained = s.desk.explain("net.core.somaxconn", 10);
    let done: Vec<_> = explained.iter().map(|e| e.entry.done).collect();
    assert_eq!(done, [Done::Applied, Done::SetAside], "newest first");
    assert_eq!(explained[0].entry.journal_id, out.applied[0].journal_id);
}

/// The LLM's advice lags the value it was shown by up to its timeout: when the kernel has moved
/// since to another value (a rule raised it meanwhile), the advice is refused, neither applied
/// (advice to raise would be a cut) nor held for approval.
#[test]
fn llm_advice_made_against_a_value_the_kernel_no_longer_has_is_refused() {
    for auto in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let mut s = setup(dir.path(), "auto");
        s.set_value(48);
        let out = s.consider(vec![rec(Source::Llm, 32, auto)]);
        assert!(out.applied.is_empty(), "auto {auto}");
        assert_eq!(s.value(), Value::Int(48), "auto {auto}");
        assert!(s.desk.pending().unwrap().is_empty(), "auto {auto}");
        let e = &s.desk.explain(NS, 1)[0];
        assert_eq!(e.entry.done, Done::Refused, "auto {auto}");
        assert!(
            e.entry
                .detail
                .as_deref()
                .unwrap()
                .contains("the kernel now has 48, and the advice was made against 16"),
            "{:?}",
            e.entry.detail
        );
    }
    // Moved to the advised value itself: nothing to refuse, it is simply unchanged.
    let dir = tempfile::tempdir().unwrap();
    let mut s = setup(dir.path(), "auto");
    s.set_value(32);
    s.consider(vec![rec(Source::Llm, 32, true)]);
    assert_eq!(s.desk.explain(NS, 1)[0].entry.done, Done::Unchanged);
}

/// An operator's rejection stands against the same advice made again with `can_auto_apply`:
/// it is recorded as rejected, not applied, for as long as the rejection is in force.
#[test]
fn a_rejected_value_is_not_applied_automatically_while_the_rejection_stands() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = setup(dir.path(), "auto");
    s.consider(vec![rec(Source::Llm, 32, false)]);
    let pending = s.desk.pending().unwrap();
    assert_eq!(pending[0].held_by, "advisor");
    s.desk.reject(&pending[0].id, "op", None).unwrap();
    let out = s.consider(vec![rec(Source::Llm, 32, true)]);
    assert!(out.applied.is_empty());
    assert_eq!(s.value(), Value::Int(16));
    let latest = &s.desk.explain(NS, 1)[0];
    assert_eq!(latest.entry.done, Done::Rejected);
    assert_eq!(latest.entry.approval_id.as_deref(), Some("ap-1"));
    assert!(s.desk.pending().unwrap().is_empty());
    // Another value is another question, applied as the policy says.
    let out = s.consider(vec![rec(Source::Llm, 64, true)]);
    assert_eq!(out.applied.len(), 1);
    assert_eq!(s.value(), Value::Int(64));
}

/// Defect (s36 story F5): a rejection held the same advice for the `expire_after` in force when
/// the advice came back, not the one it was made under: after a reload cut it (3m -> 20s by
/// hand; 1h -> 0 here), the same advice asked again at once, while `kpo explain` said "not asked
/// again before <rejection + 3m>". It holds for the one it was made under, across a restart too.
#[test]
fn a_rejection_holds_for_the_expire_after_it_was_made_under_after_a_reload() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = setup(dir.path(), "recommend");
    s.consider(vec![rec(Source::Rules, 32, false)]);
    let rejected = s.desk.reject("ap-1", "op", None).unwrap();
    let until = format_ms(rejected.resolved_ms.unwrap() + 3_600_000);
    let cut = ApprovalSettings {
        expire_after: Duration::ZERO,
        ..settings()
    };
    s.desk.set_settings(cut.clone());
    let asked = |s: &mut Setup| {
        s.consider(vec![rec(Source::Rules, 32, false)]);
        let latest = s.desk.explain(NS, 1).remove(0).entry;
        (latest.done, latest.approval_id, latest.detail)
    };
    let held = (
        Done::Rejected,
        Some("ap-1".to_string()),
        Some(format!(
            "ap-1 rejected by op; not asked again before {until}"
        )),
    );
    assert_eq!(asked(&mut s), held);
    drop(s);
    let mut s = open(dir.path(), policy("recommend"), cut, false);
    assert_eq!(asked(&mut s), held, "after a restart");
}

/// The same advice rejected again within a day of its last rejection's end is held twice as
/// long as that one, so an advisor that keeps its view asks half as often each time (s50 storyY
/// F6: asked again every `expire_after`); another value is another question, held for
/// `expire_after`.
#[test]
fn a_rejection_of_advice_rejected_lately_holds_twice_as_long() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = setup(dir.path(), "recommend");
    s.desk.set_settings(ApprovalSettings {
        expire_after: Duration::from_millis(200),
        ..settings()
    });
    let mut held = Vec::new();
    for value in [32, 32, 32, 64] {
        // Past the last hold (each at most 800 ms here): asked again. An approval expires after
        // 200 ms: at 20 ms, a loaded machine expired it before `pending` read it.
        std::thread::sleep(Duration::from_millis(820));
        s.consider(vec![rec(Source::Rules, value, false)]);
        let pending = s.desk.pending().unwrap();
        assert_eq!(pending.len(), 1, "{value}: {pending:?}");
        let rejected = s.desk.reject(&pending[0].id, "op", None).unwrap();
        held.push(s.desk.store().asks_again(&rejected) - rejected.resolved_ms.unwrap());
    }
    assert_eq!(held, [200, 400, 800, 200]);
    // Approved since its last rejection (here the approval of 32 a person's write kept from
    // being applied): the operator's last word on it was yes, and a rejection after that starts
    // over (s50 review2 N5).
    std::thread::sleep(Duration::from_millis(1000));
    s.consider(vec![rec(Source::Rules, 32, false)]);
    let pending = s.desk.pending().unwrap();
    let mut approved = pending[0].clone();
    approved.state = ApprovalState::Approved {
        by: "op".into(),
        journal_id: None,
        status: ChangeStatus::Unchanged,
    };
    s.desk.store_mut().put(approved).unwrap();
    s.consider(vec![rec(Source::Rules, 32, false)]);
    let pending = s.desk.pending().unwrap();
    let rejected = s.desk.reject(&pending[0].id, "op", None).unwrap();
    assert_eq!(
        s.desk.store().asks_again(&rejected) - rejected.resolved_ms.unwrap(),
        200
    );
}

/// `kpo pending` says what approving an approval now would meet, which the policy asks only at
/// approval: a pause, the hourly limit, a cooldown (s49 storyS S-2: only `kpo approve`'s refusal
/// said so). Not stored with the approval.
#[test]
fn pending_says_when_approving_now_would_be_refused() {
    use crate::approvals::control::{ApprovalControl, AtDesk};
    let dir = tempfile::tempdir().unwrap();
    let mut s = setup(dir.path(), "recommend");
    s.consider(vec![rec(Source::Rules, 32, false)]);
    let mut at = AtDesk {
        path: &mut s.path,
        desk: &mut s.desk,
    };
    assert_eq!(at.pending().unwrap()[0].approving_now, None);
    at.path.journal.set_paused(true, "op").unwrap();
    assert_eq!(
        at.pending().unwrap()[0].approving_now.as_deref(),
        Some("refused for now: paused: all changes are paused (kpo resume)")
    );
    assert_eq!(s.desk.store().item("ap-1").unwrap().approving_now, None);
    let text = std::fs::read_to_string(dir.path().join(crate::approvals::store::APPROVALS_FILE));
    assert!(!text.unwrap().contains("approving_now"), "never stored");
}

/// While the policy file says something else than the policy in force, every `kpo approve` is
/// refused: `kpo pending` says so of each approval (s60 story BQ-3: only `kpo status` did).
#[test]
fn pending_says_approving_waits_for_an_edited_policy_file() {
    use crate::approvals::control::{ApprovalControl, AtDesk};
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("policy.toml");
    std::fs::write(
        &file,
        "[params.\"net.core.somaxconn\"]\nmode = \"recommend\"\nmin = 16\nmax = 4096\n",
    )
    .unwrap();
    let mut s = open(
        dir.path(),
        crate::policy::Policy::load(Some(&file)).unwrap(),
        settings(),
        false,
    );
    s.consider(vec![rec(Source::Rules, 32, false)]);
    let mut at = AtDesk {
        path: &mut s.path,
        desk: &mut s.desk,
    };
    assert_eq!(at.pending().unwrap()[0].approving_now, None);
    std::fs::write(&file, "[params.\"net.core.somaxconn\"]\nmode = \"auto\"\n").unwrap();
    let said = at.pending().unwrap()[0].approving_now.clone().unwrap();
    assert!(
        said.starts_with("refused for now: the policy file ")
            && said.contains("was edited since the agent loaded it"),
        "{said}"
    );
}

/// A rejection holds the same advice in its own namespace only: a rule's advice (which carries
/// no cookie) for a namespace that took the rejected one's inode is applied as the policy says.
/// Defect: the dead namespace's rejection held it, and it became a new approval `held_by:
/// "advisor"`, though the advisor and the policy both allowed applying it.
#[test]
fn a_rejection_in_a_dead_namespace_does_not_hold_advice_for_the_one_with_its_inode() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = setup(dir.path(), "auto");
    s.k.0.lock().unwrap().netns_cookie = Some(1);
    s.consider(vec![rec(Source::Rules, 32, false)]);
    let pending = s.desk.pending().unwrap();
    assert_eq!(pending[0].netns_cookie, Some(1));
    s.desk.reject(&pending[0].id, "op", None).unwrap();
    // In the same namespace the rejection stands.
    let out = s.consider(vec![rec(Source::Rules, 32, true)]);
    assert!(out.applied.is_empty());
    assert_eq!(s.desk.explain(NS, 1)[0].entry.done, Done::Rejected);

    s.k.0.lock().unwrap().netns_cookie = Some(2);
    let out = s.consider(vec![rec(Source::Rules, 32, true)]);
    assert_eq!(out.applied.len(), 1, "{:?}", s.desk.pending().unwrap());
    assert_eq!(s.value(), Value::Int(32));
    assert!(s.desk.pending().unwrap().is_empty());
    assert_eq!(s.desk.explain(NS, 1)[0].entry.done, Done::Applied);
}

#[test]
fn recommend_only_holds_what_the_policy_would_apply() {
    let dir = tempfile::tempdir().unwrap();
    let mut p = policy("auto");
    p.force_recommend();
    let mut s = open(dir.path(), p, settings(), true);
    let out = s.consider(vec![rec(Source::Rules, 32, true)]);
    assert!(out.applied.is_empty());
    assert_eq!(s.value(), Value::Int(16));
    let pending = s.desk.pending().unwrap();
    assert_eq!(pending[0].held_by, "recommend_only");
    // An operator's approval still applies it.
    let approved = s.desk.approve(&mut s.path, "ap-1", "op").unwrap();
    assert_eq!(approved.report.status, ChangeStatus::Applied);
    assert_eq!(s.value(), Value::Int(32));
}

#[test]
fn a_refresh_after_a_restart_without_recommend_only_says_what_holds_it_now() {
    let dir = tempfile::tempdir().unwrap();
    let mut p = policy("recommend");
    p.force_recommend();
    let mut s = open(dir.path(), p, settings(), true);
    s.consider(vec![rec(Source::Rules, 32, true)]);
    assert_eq!(s.desk.pending().unwrap()[0].held_by, "recommend_only");
    drop(s);
    // The agent restarted without --recommend-only: mode recommend is what holds it now.
    let mut s = open(dir.path(), policy("recommend"), settings(), false);
    s.consider(vec![rec(Source::Rules, 32, true)]);
    let pending = s.desk.pending().unwrap();
    assert_eq!((pending.len(), pending[0].refreshed), (1, 1), "{pending:?}");
    assert_eq!(pending[0].held_by, "policy");
}

#[test]
fn refused_or_observed_advice_does_not_wait_for_approval() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = setup(dir.path(), "observe");
    s.consider(vec![rec(Source::Rules, 32, false)]);
    assert!(s.desk.pending().unwrap().is_empty());
    assert_eq!(s.desk.explain(NS, 1)[0].entry.done, Done::RecordOnly);
    let dir2 = tempfile::tempdir().unwrap();
    let mut s2 = setup(dir2.path(), "recommend");
    s2.consider(vec![rec(Source::Rules, 100_000, false)]); // above max
    assert!(s2.desk.pending().unwrap().is_empty());
    let e = &s2.desk.explain(NS, 1)[0];
    assert_eq!(e.entry.done, Done::Refused);
    assert!(e.entry.detail.as_deref().unwrap().contains("out of bounds"));
}

#[test]
fn the_desk_events_match_the_schema() {
    const SCHEMA: &str = include_str!("../../../../docs/events.schema.json");
    let schema: serde_json::Value = serde_json::from_str(SCHEMA).unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut s = setup(dir.path(), "recommend");
    let mut events = s
        .consider(vec![
            rec(Source::Llm, 64, true),
            rec(Source::Rules, 32, false),
        ])
        .events;
    events.extend(s.consider(vec![rec(Source::Rules, 32, false)]).events);
    s.desk.approve(&mut s.path, "ap-1", "op").unwrap();
    events.extend(s.desk.take_events());
    s.consider(vec![rec(Source::Rules, 48, false)]);
    s.desk.reject("ap-2", "op", None).unwrap();
    events.extend(s.desk.take_events());
    // Not asked: rejected lately, then another advisor's pending approval kept.
    events.extend(s.consider(vec![rec(Source::Rules, 48, false)]).events);
    s.consider(vec![rec(Source::Rules, 40, false)]);
    let mut llm = rec(Source::Llm, 40, false);
    llm.current_value = Some(s.value()); // what the model was shown: ap-1's 32
    events.extend(s.consider(vec![llm]).events);
    assert_eq!(
        kinds(&events),
        [
            "recommendation",
            "recommendation",
            "recommendation_set_aside",
            "approval_required",
            "recommendation",
            "approval_required",
            "approval_resolved",
            "approval_resolved",
            "recommendation",
            "approval_not_asked",
            "recommendation",
            "approval_not_asked"
        ]
    );
    for e in &events {
        let line = crate::output::events::encode(e, "h", time::OffsetDateTime::UNIX_EPOCH);
        let v: serde_json::Value = serde_json::from_slice(&line).unwrap();
        let errors: Vec<String> = validator.iter_errors(&v).map(|x| x.to_string()).collect();
        assert!(errors.is_empty(), "{errors:?}\n{v:#}");
    }
}

/// Advice made against 16 (16 -> 32); an operator sets 64 meanwhile. Approving it would lower the
/// value, the opposite of what the advice meant: it is refused and cleared, and the kernel keeps
/// 64. A window finds the same on its own.
#[test]
fn an_approval_whose_kernel_value_moved_since_is_cleared_not_applied() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = setup(dir.path(), "recommend");
    s.consider(vec![rec(Source::Rules, 32, false)]);
    let operator = crate::policy::Proposal {
        address: NS.parse().unwrap(),
        value: Value::Int(64),
        source: crate::policy::Source::Operator,
        reason: "by hand".into(),
    };
    assert_eq!(
        s.path.propose(&operator).unwrap().status,
        ChangeStatus::Applied
    );
    let err = s.desk.approve(&mut s.path, "ap-1", "op").unwrap_err();
    assert!(
        matches!(err, ControlError::Approval(ApprovalError::Stale { .. })),
        "{err}"
    );
    assert!(
        err.to_string()
            .contains("advised against 16, and the kernel now has 64"),
        "{err}"
    );
    assert_eq!(s.value(), Value::Int(64));
    assert!(s.desk.pending().unwrap().is_empty());
    let resolved = serde_json::to_value(s.desk.take_events().pop().unwrap()).unwrap();
    assert_eq!(resolved["state"], "cleared", "{resolved}");

    // The same found by a window, with no approve in between.
    let dir = tempfile::tempdir().unwrap();
    let mut s = setup(dir.path(), "recommend");
    s.consider(vec![rec(Source::Rules, 32, false)]);
    s.set_value(48);
    s.desk.on_window(&s.path);
    assert!(s.desk.pending().unwrap().is_empty());
    let resolved = serde_json::to_value(s.desk.take_events().pop().unwrap()).unwrap();
    assert_eq!(resolved["kind"], "approval_resolved", "{resolved}");
    assert_eq!(resolved["state"], "cleared", "{resolved}");
    assert_eq!(
        resolved["why"],
        "the kernel now has 48, and the advice was made against 16"
    );
}

fn cleared_why(s: &Setup, id: &str) -> String {
    match &s.desk.store().item(id).unwrap().state {
        ApprovalState::Cleared { why } => why.clone(),
        other => panic!("{id}: {other:?}"),
    }
}

/// Approving again an approval approved for a namespace since replaced at its inode (another
/// cookie) says the namespace is gone, and suggests nothing: read by address, the new pod's
/// value was taken for the change's (s60 review2 R2-1: `skipped ... kpo apply ...@netns:INODE`,
/// which would change the new pod, or `unchanged` when it happened to hold the value).
#[test]
fn approving_again_after_the_namespace_was_replaced_says_it_is_gone() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = setup(dir.path(), "recommend");
    s.k.0.lock().unwrap().netns_cookie = Some(7);
    s.consider(vec![rec(Source::Rules, 32, false)]);
    let first = s.desk.approve(&mut s.path, "ap-1", "op").unwrap();
    assert_eq!(first.report.status, ChangeStatus::Applied);
    // Another pod at the inode, which happens to hold the very value.
    s.k.0.lock().unwrap().netns_cookie = Some(8);
    let again = s.desk.approve(&mut s.path, "ap-1", "op").unwrap();
    assert_eq!(again.report.status, ChangeStatus::Skipped);
    let detail = again.report.detail.unwrap();
    assert!(
        detail.contains("for a network namespace no longer here (")
            && detail.ends_with("nothing done")
            && !detail.contains("kpo apply"),
        "{detail}"
    );
}

/// A pod's network namespace dies and the next one gets its inode (another cookie): what was
/// advised, approved or rejected for the dead one must not act on, or silence advice for, the new
/// one.
#[test]
fn an_approval_for_a_namespace_whose_inode_now_names_another_is_cleared_not_applied() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = setup(dir.path(), "recommend");
    s.k.0.lock().unwrap().netns_cookie = Some(7);
    s.consider(vec![rec(Source::Rules, 32, false)]);
    assert_eq!(s.desk.pending().unwrap()[0].netns_cookie, Some(7));

    // Approving after the namespace was replaced: refused, cleared, nothing written.
    s.k.0.lock().unwrap().netns_cookie = Some(8);
    let err = s.desk.approve(&mut s.path, "ap-1", "op").unwrap_err();
    assert!(
        matches!(
            err,
            ControlError::Approval(ApprovalError::NamespaceGone { .. })
        ),
        "{err}"
    );
    assert!(
        err.to_string()
            .contains("ap-1 cannot be approved: its network namespace is gone"),
        "{err}"
    );
    assert_eq!(s.value(), Value::Int(16), "nothing applied");
    assert!(
        cleared_why(&s, "ap-1").contains("(cookie 8, was 7)"),
        "{}",
        cleared_why(&s, "ap-1")
    );

    // Advice pending for a namespace that then dies before a window: the same advice for the one
    // that has the inode now does not refresh the dead one's, it is a new question.
    s.consider(vec![rec(Source::Rules, 32, false)]);
    s.k.0.lock().unwrap().netns_cookie = Some(9);
    s.consider(vec![rec(Source::Rules, 32, false)]);
    assert!(cleared_why(&s, "ap-2").contains("(cookie 9, was 8)"));
    let pending = s.desk.pending().unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!(
        (pending[0].id.as_str(), pending[0].netns_cookie),
        ("ap-3", Some(9))
    );

    // A window clears an approval whose namespace is gone for certain: it can no longer be
    // opened, and its inode is in use nowhere.
    s.k.0.lock().unwrap().netns_gone = true;
    s.desk.on_window(&s.path);
    assert!(s.desk.pending().unwrap().is_empty());
    assert!(
        cleared_why(&s, "ap-3").starts_with("its network namespace is gone ("),
        "{}",
        cleared_why(&s, "ap-3")
    );

    // A rejection silences the same advice in its namespace only.
    {
        let mut k = s.k.0.lock().unwrap();
        k.netns_gone = false;
        k.netns_cookie = Some(10);
    }
    s.consider(vec![rec(Source::Rules, 32, false)]);
    s.desk.reject("ap-4", "op", None).unwrap();
    s.consider(vec![rec(Source::Rules, 32, false)]);
    assert!(s.desk.pending().unwrap().is_empty(), "rejected here lately");
    s.k.0.lock().unwrap().netns_cookie = Some(11);
    s.consider(vec![rec(Source::Rules, 32, false)]);
    let pending = s.desk.pending().unwrap();
    assert_eq!(
        pending
            .iter()
            .map(|i| (i.id.as_str(), i.netns_cookie))
            .collect::<Vec<_>>(),
        [("ap-5", Some(11))]
    );
}

/// A thread of this process in a network namespace of its own, for as long as this is kept: a
/// namespace in use, though no /run/netns entry names it and no process's main thread is in it,
/// so that looking it up by its inode among those fails (as a CNI plugin's `setns` leaves one).
struct ThreadInANamespace {
    inode: u64,
    done: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ThreadInANamespace {
    /// `None` where a network namespace cannot be made (not root).
    fn start() -> Option<ThreadInANamespace> {
        let (tx, rx) = std::sync::mpsc::channel();
        let (done, wait) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::spawn(move || {
            let inode = nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
                .ok()
                .map(|()| {
                    std::os::unix::fs::MetadataExt::ino(
                        &std::fs::metadata("/proc/thread-self/ns/net").unwrap(),
                    )
                });
            tx.send(inode).unwrap();
            // Kept in the namespace until the sender is dropped.
            let _ = wait.recv();
        });
        let inode = rx.recv().unwrap()?;
        Some(ThreadInANamespace {
            inode,
            done: Some(done),
            thread: Some(thread),
        })
    }
}

impl Drop for ThreadInANamespace {
    fn drop(&mut self) {
        drop(self.done.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A namespace that cannot be opened for a passing reason (here: only a thread is in it, which
/// the lookup by inode does not search; a descriptor limit does the same) while it is still in
/// use is not gone: a window leaves its approval pending, and `kpo approve` says why it cannot
/// be approved now and leaves it pending, to be approved once the namespace opens again.
/// Defect: both cleared it for good, as if the namespace were gone.
#[test]
fn an_approval_whose_namespace_cannot_be_opened_for_now_stays_pending() {
    let Some(held) = ThreadInANamespace::start() else {
        kpo_test_skip::skip("cannot create a network namespace here (not root)");
        return;
    };
    let at = format!("net.core.somaxconn@netns:{}", held.inode);
    let dir = tempfile::tempdir().unwrap();
    let k = kernel(&[(&at, Value::Int(16))]);
    k.0.lock().unwrap().netns_cookie = Some(7);
    crate::journal::store::make_private(dir.path());
    let journal = Journal::open(dir.path(), Holder::Agent, Duration::ZERO).unwrap();
    let mut desk = Desk::open(&journal, settings(), false).unwrap();
    let mut path = ChangePath::new(policy("recommend"), journal, Box::new(k.clone()));
    let mut advice = rec(Source::Rules, 32, false);
    advice.parameter = at.parse().unwrap();
    desk.consider(&mut path, vec![advice], &mut Vec::new);
    let value = || k.0.lock().unwrap().values[&at].clone();
    let pending_ids = |desk: &mut Desk| -> Vec<String> {
        desk.pending().unwrap().into_iter().map(|i| i.id).collect()
    };
    assert_eq!(pending_ids(&mut desk), ["ap-1"]);

    k.0.lock().unwrap().netns_gone = true;
    desk.on_window(&path);
    assert_eq!(pending_ids(&mut desk), ["ap-1"], "a window cleared it");
    let err = desk.approve(&mut path, "ap-1", "op").unwrap_err();
    assert!(
        matches!(
            err,
            ControlError::Approval(ApprovalError::NamespaceUnreachable { .. })
        ),
        "{err}"
    );
    assert!(
        err.to_string()
            .starts_with("ap-1 cannot be approved now: its network namespace cannot be opened (")
            && err
                .to_string()
                .ends_with("the approval stays pending: try again"),
        "{err}"
    );
    assert_eq!(pending_ids(&mut desk), ["ap-1"], "approve cleared it");
    assert_eq!(value(), Value::Int(16), "nothing applied");

    k.0.lock().unwrap().netns_gone = false;
    let out = desk.approve(&mut path, "ap-1", "op").unwrap();
    assert_eq!(out.report.status, ChangeStatus::Applied);
    assert_eq!(value(), Value::Int(32));
    drop(held);
}

/// Advice whose value was read in a namespace that is gone by the time it is considered (the
/// LLM's, read when its prompt was built) asks for no approval of the namespace that has the
/// inode now: the change path refuses it. An approval records the namespace the value was read
/// in, not only one opened when the advice arrived.
#[test]
fn advice_read_in_a_namespace_since_replaced_asks_no_approval() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = setup(dir.path(), "recommend");
    s.k.0.lock().unwrap().netns_cookie = Some(8);
    let mut advice = rec(Source::Llm, 32, false);
    advice.netns_cookie = Some(7);
    let out = s.consider(vec![advice.clone()]);
    assert!(s.desk.pending().unwrap().is_empty(), "no approval asked");
    assert_eq!(kinds(&out.events), ["recommendation"]);
    assert_eq!(out.refused.len(), 1);
    assert!(
        out.refused[0].1.to_string().contains("(cookie 8, was 7 "),
        "{}",
        out.refused[0].1
    );
    assert_eq!(s.value(), Value::Int(16));
    // Read in the namespace that has the inode now: asked for, with that namespace.
    advice.netns_cookie = Some(8);
    let out = s.consider(vec![advice]);
    assert_eq!(kinds(&out.events), ["recommendation", "approval_required"]);
    assert_eq!(s.desk.pending().unwrap()[0].netns_cookie, Some(8));
}

/// The rules' approval pending, the LLM advises the same value: the approval stays the rules',
/// text and all (it is approved as the rules' proposal), and only the rules' own advice keeps it
/// from clearing.
#[test]
fn another_advisors_identical_advice_leaves_the_approval_as_it_is() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = setup(dir.path(), "recommend");
    s.consider(vec![rec(Source::Rules, 32, false)]);
    let before = s.desk.pending().unwrap().remove(0);
    let mut llm = rec(Source::Llm, 32, false);
    llm.reason = "the model's words".into();
    llm.confidence = 0.5;
    let out = s.consider(vec![llm]);
    assert_eq!(
        kinds(&out.events),
        ["recommendation", "approval_not_asked"],
        "no refresh announced"
    );
    let Event::ApprovalNotAsked(not_asked) = &out.events[1] else {
        unreachable!()
    };
    assert_eq!(
        (
            not_asked.because,
            not_asked.approval_id.as_str(),
            not_asked.asks_again_ms,
            not_asked.source,
            not_asked.detail.as_str()
        ),
        (
            crate::approvals::NotAskedBecause::Pending,
            "ap-1",
            None,
            Source::Llm,
            "ap-1 is already pending for this value, advised by rules; left as it is"
        )
    );
    assert_eq!(
        s.desk.pending().unwrap(),
        std::slice::from_ref(&before),
        "source, reason, confidence, expiry unchanged"
    );
    let latest = &s.desk.explain(NS, 1)[0];
    assert_eq!(latest.entry.done, Done::Pending);
    assert_eq!(latest.entry.approval_id.as_deref(), Some("ap-1"));
    assert!(
        latest
            .entry
            .detail
            .as_deref()
            .unwrap()
            .contains("advised by rules; left as it is"),
        "{latest:?}"
    );

    // The LLM's advice alone does not keep it: the rules' silence clears it as usual.
    s.desk.on_window(&s.path); // made in this window: not counted
    for _ in 0..2 {
        s.consider(vec![rec(Source::Llm, 32, false)]);
        s.desk.on_window(&s.path);
    }
    assert!(cleared_why(&s, "ap-1").starts_with("rules has not recommended it"));

    // Approved while pending, it is journaled as the rules' change.
    let dir = tempfile::tempdir().unwrap();
    let mut s = setup(dir.path(), "recommend");
    s.consider(vec![rec(Source::Rules, 32, false)]);
    s.consider(vec![rec(Source::Llm, 32, false)]);
    let out = s.desk.approve(&mut s.path, "ap-1", "op").unwrap();
    let intent = s
        .path
        .journal
        .intent(out.report.journal_id.unwrap())
        .unwrap();
    assert_eq!(intent.source, crate::policy::Source::Rules);
    assert!(intent.reason.ends_with(&before.reason), "{}", intent.reason);
}

/// Superseding writes the new approval before the old one names it: a failed write of the new
/// one leaves the old one pending and no name of an approval never stored; a failed write of the
/// old one's end leaves it pending, and the next advice supersedes it.
#[test]
fn superseding_never_names_an_approval_that_was_not_stored() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = setup(dir.path(), "recommend");
    s.consider(vec![rec(Source::Rules, 32, false)]);
    s.desk.store.fail_put_of = Some("ap-2".into());
    let out = s.consider(vec![rec(Source::Rules, 64, false)]);
    assert_eq!(kinds(&out.events), ["recommendation"], "nothing announced");
    assert_eq!(s.desk.explain(NS, 1)[0].entry.done, Done::Failed);
    drop(s);
    let mut s = setup(dir.path(), "recommend");
    let pending = s.desk.pending().unwrap();
    assert_eq!(
        pending.iter().map(|i| i.id.as_str()).collect::<Vec<_>>(),
        ["ap-1"],
        "ap-1 still pending, not superseded by an ap-2 that never was"
    );

    // The new one stored, the old one's end not: both pending until the next advice.
    s.desk.store.fail_put_of = Some("ap-1".into());
    let out = s.consider(vec![rec(Source::Rules, 64, false)]);
    assert_eq!(kinds(&out.events), ["recommendation", "approval_required"]);
    let id = s.desk.pending().unwrap().pop().unwrap().id;
    assert_eq!(s.desk.pending().unwrap().len(), 2);
    s.consider(vec![rec(Source::Rules, 64, false)]);
    assert_eq!(
        s.desk.store().item("ap-1").unwrap().state,
        ApprovalState::Superseded { by_id: id.clone() }
    );
    assert!(s.desk.store().item(&id).is_some());
    assert_eq!(s.desk.pending().unwrap().len(), 1);
}

/// Applied, but not marked approved (a crash, or a failed write, between the two): at the next
/// start the journal's change marks it approved by whoever approved it, with its journal id, so it
/// is neither announced nor approved again.
#[test]
fn an_approval_applied_but_not_marked_is_marked_at_the_next_start() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = setup(dir.path(), "recommend");
    s.consider(vec![rec(Source::Rules, 32, false)]);
    s.consider(vec![rec(Source::Rules, 64, false)]);
    s.desk.store.fail_put_of = Some("ap-2".into());
    let out = s.desk.approve(&mut s.path, "ap-2", "alice").unwrap();
    assert_eq!(out.report.status, ChangeStatus::Applied);
    let journal_id = out.report.journal_id.unwrap();
    assert_eq!(s.desk.pending().unwrap()[0].id, "ap-2", "not marked");
    drop(s);
    let mut s = setup(dir.path(), "recommend");
    assert!(s.desk.pending().unwrap().is_empty());
    assert_eq!(
        s.desk.store().item("ap-2").unwrap().state,
        ApprovalState::Approved {
            by: "alice".into(),
            journal_id: Some(journal_id),
            status: ChangeStatus::Applied,
        }
    );
    assert_eq!(kinds(&s.desk.take_events()), ["approval_resolved"]);
    // The superseded one, never applied, is left as it was.
    assert_eq!(
        s.desk.store().item("ap-1").unwrap().state.name(),
        "superseded"
    );
}

/// An approved change the kernel stored as another value is put back and its approval stays
/// pending; after a restart the journal's `reverted` change does not mark it approved either.
#[test]
fn an_approval_whose_change_was_put_back_stays_pending_at_the_next_start() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = setup(dir.path(), "recommend");
    s.consider(vec![rec(Source::Rules, 32, false)]);
    s.k.0
        .lock()
        .unwrap()
        .clamp
        .insert(NS.into(), Value::Int(30));
    let out = s.desk.approve(&mut s.path, "ap-1", "alice").unwrap();
    assert_eq!(out.report.status, ChangeStatus::Reverted);
    assert_eq!(s.value(), Value::Int(16));
    assert_eq!(s.desk.pending().unwrap()[0].id, "ap-1");
    drop(s);
    let s = setup(dir.path(), "recommend");
    assert_eq!(
        s.desk.store().item("ap-1").unwrap().state,
        ApprovalState::Pending,
        "a change put back is not the approval applied"
    );
}

/// Made with an earlier window's advice two hours ago (expire_after 1h), it ran out an hour
/// ago: that is when it ended, whenever the desk notices.
fn ran_out_an_hour_ago(s: &mut Setup) -> u64 {
    s.consider(vec![rec(Source::Rules, 32, false)]);
    let mut item = s.desk.store().item("ap-1").unwrap().clone();
    item.updated_ms -= 2 * 3_600_000;
    s.desk.store.put(item.clone()).unwrap();
    item.updated_ms + 3_600_000
}

/// The agent reads its policy at start and on SIGHUP: once the file says something else, an approval is
/// refused (and stays pending) rather than decided under limits the operator has since changed.
#[test]
fn an_approval_is_refused_while_the_policy_file_differs_from_the_one_loaded() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("policy.toml");
    let text = "[params.\"net.core.somaxconn\"]\nmode = \"recommend\"\nmin = 16\nmax = 65535\n\
                max_step = \"1000%\"\n";
    std::fs::write(&file, text).unwrap();
    let state = dir.path().join("state");
    std::fs::create_dir(&state).unwrap();
    let mut s = open(
        &state,
        Policy::load(Some(&file)).unwrap(),
        settings(),
        false,
    );
    s.consider(vec![rec(Source::Rules, 32, false)]);
    std::fs::write(&file, text.replace("65535", "24")).unwrap();
    let err = s.desk.approve(&mut s.path, "ap-1", "op").unwrap_err();
    assert!(matches!(err, ControlError::PolicyChanged(_)), "{err}");
    assert!(
        err.to_string()
            .contains("policy.toml was edited since the agent loaded it"),
        "{err}"
    );
    assert_eq!(s.value(), Value::Int(16), "nothing applied");
    assert_eq!(s.desk.pending().unwrap()[0].id, "ap-1", "still pending");
    // An operator's own change is refused the same way.
    let apply = crate::control::ApplyRequest {
        address: NS.parse().unwrap(),
        value: Value::Int(20),
        reason: "by hand".into(),
        by: Some("op".into()),
    };
    let err = crate::control::Control::apply(&mut s.path, &apply).unwrap_err();
    assert!(matches!(err, ControlError::PolicyChanged(_)), "{err}");
    assert_eq!(s.value(), Value::Int(16), "nothing applied");
    // `kpo status` says so beside the policy's name (s43: it named the file alone, as if in
    // force, after a reload the agent refused).
    let ControlError::PolicyChanged(why) = err else {
        unreachable!()
    };
    let status = crate::control::Control::status(&mut s.path).unwrap();
    assert_eq!(status.policy_file_differs, Some(why));
    // The same text again (an edit undone): approved as before.
    std::fs::write(&file, text).unwrap();
    let status = crate::control::Control::status(&mut s.path).unwrap();
    assert_eq!(status.policy_file_differs, None);
    let approved = s.desk.approve(&mut s.path, "ap-1", "op").unwrap();
    assert_eq!(approved.approval.state.name(), "approved");
    assert_eq!(s.value(), Value::Int(32));
}

/// Advice that repeats keeps its approval alive: each refresh renews when it expires, so a
/// rule that asks every window is not expired an hour after it first asked.
#[test]
fn a_refresh_renews_the_expiry() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = setup(dir.path(), "recommend");
    s.consider(vec![rec(Source::Rules, 32, false)]);
    // First advised 50 minutes ago: 10 minutes left.
    let mut aged = s.desk.store().item("ap-1").unwrap().clone();
    aged.updated_ms -= 50 * 60_000;
    aged.expires_ms -= 50 * 60_000;
    s.desk.store.put(aged.clone()).unwrap();
    s.consider(vec![rec(Source::Rules, 32, false)]);
    let renewed = s.desk.store().item("ap-1").unwrap().clone();
    assert_eq!(renewed.refreshed, 1);
    assert!(
        renewed.updated_ms >= aged.updated_ms + 50 * 60_000,
        "advised again now"
    );
    assert_eq!(renewed.expires_ms, renewed.updated_ms + 3_600_000);
    // Past the first hour (here: as if it had run out 10 minutes after the refresh was due)
    // it is still pending, and can be approved.
    age_advice(&mut s, 20 * 60_000);
    let approved = s.desk.approve(&mut s.path, "ap-1", "op").unwrap();
    assert_eq!(approved.approval.state.name(), "approved");
}

/// Moves ap-1's advice back by `ms`.
fn age_advice(s: &mut Setup, ms: u64) {
    let mut item = s.desk.store().item("ap-1").unwrap().clone();
    item.updated_ms -= ms;
    item.expires_ms -= ms;
    s.desk.store.put(item).unwrap();
}

#[test]
fn an_expiry_noticed_late_is_dated_when_the_time_ran_out() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = setup(dir.path(), "recommend");
    let ran_out = ran_out_an_hour_ago(&mut s);
    let err = s.desk.approve(&mut s.path, "ap-1", "op").unwrap_err();
    assert!(
        err.to_string()
            .starts_with(&format!("ap-1 expired at {}:", format_ms(ran_out))),
        "{err}"
    );
    assert_eq!(
        s.desk.store().item("ap-1").unwrap().resolved_ms,
        Some(ran_out)
    );

    // A window notices the same way.
    let dir = tempfile::tempdir().unwrap();
    let mut s = setup(dir.path(), "recommend");
    let ran_out = ran_out_an_hour_ago(&mut s);
    s.desk.on_window(&s.path);
    let item = s.desk.store().item("ap-1").unwrap();
    assert_eq!(
        (&item.state, item.resolved_ms),
        (&ApprovalState::Expired, Some(ran_out))
    );
}

/// An expiry that cannot be written (a full disk) fails neither the listing nor the other
/// approvals: the one past its time is treated as expired, and recorded at the next try.
#[test]
fn an_expiry_that_cannot_be_written_fails_no_request() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = setup(dir.path(), "recommend");
    ran_out_an_hour_ago(&mut s);
    // Another target's approval, still in time.
    let other: ParamAddress = "net.core.somaxconn@netns:4026538888".parse().unwrap();
    s.k.0
        .lock()
        .unwrap()
        .values
        .insert(other.to_string(), Value::Int(16));
    let mut r = rec(Source::Rules, 32, false);
    r.parameter = other;
    s.desk.store.fail_put_of = Some("ap-1".into());
    s.consider(vec![r]);

    s.desk.store.fail_put_of = Some("ap-1".into());
    let pending = s.desk.pending().expect("listing works");
    assert_eq!(
        pending.iter().map(|i| i.id.as_str()).collect::<Vec<_>>(),
        ["ap-2"]
    );
    assert_eq!(
        s.desk.store().item("ap-1").unwrap().state,
        ApprovalState::Pending,
        "not written"
    );
    s.desk.store.fail_put_of = Some("ap-1".into());
    let err = s.desk.approve(&mut s.path, "ap-1", "op").unwrap_err();
    assert!(
        matches!(err, ControlError::Approval(ApprovalError::Expired { .. })),
        "{err}"
    );
    // The same advice again is not a refresh of ap-1 back to life: a new approval.
    s.desk.store.fail_put_of = Some("ap-1".into());
    s.consider(vec![rec(Source::Rules, 32, false)]);
    let ids: Vec<String> = s
        .desk
        .pending()
        .unwrap()
        .into_iter()
        .map(|i| i.id)
        .collect();
    assert_eq!(ids, ["ap-2", "ap-3"]);
    s.desk.store.fail_put_of = Some("ap-1".into());
    assert_eq!(
        s.desk.reject("ap-2", "op", None).unwrap().state.name(),
        "rejected"
    );
    // The disk has room again: the next request records it.
    s.desk.pending().unwrap();
    assert_eq!(
        s.desk.store().item("ap-1").unwrap().state,
        ApprovalState::Expired
    );
}

/// `held_by` names what holds the change: the policy when its mode for the advisor is
/// recommend (whatever the advisor's flag, which the advisors lower under that mode), the
/// advisor when the policy would have applied it.
#[test]
fn held_by_names_the_policy_or_the_advisor() {
    for (mode, auto, held_by) in [
        ("recommend", false, "policy"),
        ("recommend", true, "policy"),
        ("auto", false, "advisor"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let mut s = setup(dir.path(), mode);
        s.consider(vec![rec(Source::Rules, 32, auto)]);
        let pending = s.desk.pending().unwrap();
        assert_eq!(pending.len(), 1, "{mode} {auto}");
        assert_eq!(pending[0].held_by, held_by, "{mode} {auto}");
    }
}

/// The LLM advises only when consulted, and only on what it was offered: windows without an
/// answer from it, and answers to consultations that did not offer the approval's parameter, say
/// nothing about its approvals; answers that offered it without repeating it clear it after
/// `clear_after_windows` of them.
#[test]
fn an_llm_approval_is_cleared_by_answers_not_by_windows() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = setup(dir.path(), "recommend");
    let offered: Vec<ParamAddress> = vec![NS.parse().unwrap()];
    let other: Vec<ParamAddress> = vec!["net.core.somaxconn@netns:4026531111".parse().unwrap()];
    s.desk.llm_answered(&offered);
    s.consider(vec![rec(Source::Llm, 32, false)]);
    assert_eq!(s.desk.pending().unwrap().len(), 1);
    for _ in 0..10 {
        s.desk.on_window(&s.path);
    }
    for _ in 0..10 {
        s.desk.llm_answered(&other);
        s.desk.on_window(&s.path);
    }
    assert_eq!(
        s.desk.pending().unwrap().len(),
        1,
        "not asked about it, no verdict"
    );
    // One answer without it, windows between, then a second: cleared (clear_after_windows 2).
    s.desk.llm_answered(&offered);
    s.desk.on_window(&s.path);
    for _ in 0..5 {
        s.desk.on_window(&s.path);
    }
    assert_eq!(s.desk.pending().unwrap().len(), 1);
    s.desk.llm_answered(&offered);
    s.desk.on_window(&s.path);
    assert!(s.desk.pending().unwrap().is_empty());
    assert_eq!(
        s.desk.store().item("ap-1").unwrap().state,
        ApprovalState::Cleared {
            why: "llm has not recommended it for 2 consecutive consultations".into()
        }
    );
}

/// A reloaded policy's `[approvals]` is in force at once: a pending approval made under an hour's
/// `expire_after` expires under a new one of zero.
#[test]
fn reloaded_approval_settings_expire_pending_approvals_by_the_new_time() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = setup(dir.path(), "recommend");
    s.consider(vec![rec(Source::Rules, 32, false)]);
    assert_eq!(s.desk.pending().unwrap().len(), 1);
    let mut now_zero = settings();
    now_zero.expire_after = Duration::ZERO;
    s.desk.set_settings(now_zero);
    let err = s.desk.approve(&mut s.path, "ap-1", "op").unwrap_err();
    assert!(
        matches!(err, ControlError::Approval(ApprovalError::Expired { .. })),
        "{err}"
    );
    assert_eq!(s.value(), Value::Int(16));
}

/// After a reload changed `expire_after`, an approval is reported with the expiry in force
/// wherever it appears: as `kpo pending` lists it, in its `approval_resolved` event, in what
/// `kpo reject` returns and in `kpo explain`. Defect: all but `kpo pending` reported the expiry of
/// the policy it was made under, and an approval expired at another time than its `expires_ms`.
#[test]
fn a_reloaded_expire_after_is_the_expiry_reported_everywhere() {
    let resolved = |events: Vec<Event>| -> Vec<ApprovalItem> {
        events
            .into_iter()
            .filter_map(|e| match e {
                Event::ApprovalResolved(a) => Some(a.approval),
                _ => None,
            })
            .collect()
    };
    let dir = tempfile::tempdir().unwrap();
    let mut s = setup(dir.path(), "recommend");
    s.consider(vec![rec(Source::Rules, 32, false)]);
    let made = s.desk.pending().unwrap().remove(0);
    let mut longer = settings();
    longer.expire_after = Duration::from_secs(2 * 3600);
    s.desk.set_settings(longer);
    let listed = s.desk.pending().unwrap().remove(0);
    assert_eq!(listed.expires_ms, made.updated_ms + 2 * 3600 * 1000);
    assert_ne!(listed.expires_ms, made.expires_ms);
    let rejected = s.desk.reject("ap-1", "op", None).unwrap();
    assert_eq!(rejected.expires_ms, listed.expires_ms, "kpo reject");
    let events = resolved(s.desk.take_events());
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].expires_ms, listed.expires_ms, "approval_resolved");
    let explained = s.desk.explain(NS, 1).remove(0).approval.unwrap();
    assert_eq!(explained.expires_ms, listed.expires_ms, "kpo explain");

    // Shorter: the approval expires at once, at the time its event says it expires.
    s.consider(vec![rec(Source::Rules, 64, false)]);
    let pending = s.desk.pending().unwrap().remove(0);
    assert_eq!(s.desk.explain(NS, 1)[0].approval.as_ref(), Some(&pending));
    s.desk.take_events();
    let mut now_zero = settings();
    now_zero.expire_after = Duration::ZERO;
    s.desk.set_settings(now_zero);
    assert!(s.desk.pending().unwrap().is_empty());
    let events = resolved(s.desk.take_events());
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].state, ApprovalState::Expired);
    assert_eq!(events[0].resolved_ms, Some(pending.updated_ms));
    assert_eq!(events[0].expires_ms, pending.updated_ms, "{:?}", events[0]);
}

/// s47 storyN N-3: a `kpo approve` the policy refused left no journal record (a refused `kpo
/// apply` leaves one): the operator's act was only in the event stream.
#[test]
fn a_refused_approval_is_journaled_as_an_operators_refusal() {
    use crate::control::Control as _;
    let dir = tempfile::tempdir().unwrap();
    let mut s = setup(dir.path(), "recommend");
    s.consider(vec![rec(Source::Rules, 32, false)]);
    s.path.pause("test").unwrap();
    let refusals = |s: &Setup| {
        s.path
            .journal
            .records()
            .iter()
            .filter(|r| matches!(r, crate::journal::Record::Refused { .. }))
            .count()
    };
    assert_eq!(refusals(&s), 0);
    let outcome = s.desk.approve(&mut s.path, "ap-1", "op").unwrap();
    assert_eq!(outcome.report.status, ChangeStatus::Refused);
    assert_eq!(refusals(&s), 1);
    // An advisor's refusal is not journaled (events carry them).
    s.consider(vec![rec(Source::Rules, 48, true)]);
    assert_eq!(s.desk.explain(NS, 1)[0].entry.done, Done::Refused);
    assert_eq!(refusals(&s), 1);
}

/// A reloaded policy that refuses a pending approval for good (narrowed bounds, observe only)
/// clears it at the next window, saying why: left pending, it looked approvable and every
/// `kpo approve` was refused until it expired. A refusal that passes (a pause) leaves it.
#[test]
fn an_approval_the_reloaded_policy_refuses_for_good_is_cleared() {
    use crate::control::Control as _;
    let dir = tempfile::tempdir().unwrap();
    let mut s = setup(dir.path(), "recommend");
    s.consider(vec![rec(Source::Rules, 32, false)]);
    s.consider(vec![rec(Source::Rules, 32, false)]);
    s.path.pause("test").unwrap();
    s.desk.on_window(&s.path);
    s.consider(vec![rec(Source::Rules, 32, false)]);
    assert_eq!(s.desk.pending().unwrap().len(), 1, "a pause passes");

    s.path.policy = Policy::parse(
        "[params.\"net.core.somaxconn\"]\nmode = \"recommend\"\nmin = 16\nmax = 24\n",
        "test.toml",
    )
    .unwrap();
    s.desk.on_window(&s.path);
    assert!(s.desk.pending().unwrap().is_empty());
    assert_eq!(
        cleared_why(&s, "ap-1"),
        "the policy in force refuses it: out of bounds: 32 is outside [16, 24]"
    );

    s.path.resume(None, "test").unwrap();
    s.path.policy = policy("recommend");
    s.consider(vec![rec(Source::Rules, 48, false)]);
    assert_eq!(s.desk.pending().unwrap().len(), 1);
    s.path.policy = policy("observe");
    s.desk.on_window(&s.path);
    assert!(s.desk.pending().unwrap().is_empty());
    assert_eq!(
        cleared_why(&s, "ap-2"),
        format!("the policy in force only observes {NS} (mode observe)")
    );
}

/// A notification's `kpo approve ID` names the agent's socket and state directory where they are
/// not the defaults: without them it reaches no agent, or, while the agent is down, another state
/// directory where the id is another approval.
#[test]
fn a_notification_names_the_socket_and_state_directory_it_needs() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = setup(dir.path(), "recommend");
    let defaults = (
        std::path::Path::new(crate::api::DEFAULT_SOCKET),
        std::path::Path::new(crate::journal::DEFAULT_STATE_DIR),
    );
    s.desk.set_command_paths(defaults.0, defaults.1);
    assert_eq!(s.desk.command_flags, "");
    // A path is the operator's own: copied from the message, it must name the same file, so
    // an `@` gets no zero-width space after it (text from elsewhere does).
    s.desk.set_command_paths(
        std::path::Path::new("/srv/@b/kpo.sock"),
        std::path::Path::new("/srv/kpo"),
    );
    // The agent's log says the same command (s43: it said `kpo approve ap-1` alone, which
    // reached /var/lib/kpo).
    let (_, log) = crate::logging::logged(|| s.consider(vec![rec(Source::Rules, 24, false)]));
    assert!(
        log.contains("; kpo approve ap-1 --socket /srv/@b/kpo.sock --state-dir /srv/kpo\n"),
        "{log}"
    );
    let item = s.desk.store().item("ap-1").unwrap().clone();
    let text = Payload::new("approval_required", "web1", &item, &s.desk.command_flags).text;
    assert!(
        text.contains("`kpo approve ap-1 --socket /srv/@b/kpo.sock --state-dir /srv/kpo`"),
        "{text}"
    );
    s.set_value(24);
    s.desk.on_window(&s.path);
    s.desk.set_command_paths(
        std::path::Path::new("/run/kpo-b/kpo.sock"),
        std::path::Path::new("/srv/kpo state/it's"),
    );
    assert_eq!(
        s.desk.command_flags,
        r" --socket /run/kpo-b/kpo.sock --state-dir '/srv/kpo state/it'\''s'"
    );
    s.consider(vec![rec(Source::Rules, 32, false)]);
    let item = s.desk.store().item("ap-2").unwrap().clone();
    let text = Payload::new("approval_required", "web1", &item, &s.desk.command_flags).text;
    assert!(
        text.contains(
            r"Approve with `kpo approve ap-2 --socket /run/kpo-b/kpo.sock --state-dir '/srv/kpo state/it'\''s'`, reject with `kpo reject ap-2 --socket"
        ),
        "{text}"
    );
}

/// Advice for the application, as the accept-queue rule gives it (no value, the listener named),
/// from a process whose name would ping a channel and draw a link if it were not escaped. What
/// changes from window to window (the window, its end, the drops, the queue's depth, the id) is
/// `window` and `drops`; `limit` is the listener's accept-queue limit.
fn app_advice(window: u64, drops: u64, limit: u32) -> Recommendation {
    let parameter: ParamAddress = NS.parse().unwrap();
    let application = ApplicationRef {
        netns: 4026539999,
        port: 8080,
        pid: Some(4242),
        comm: Some("<!channel>@all".into()),
        backlog_limit: Some(limit),
    };
    Recommendation {
        id: Recommendation::make_app_id(Source::Rules, window, &parameter, &application, "ipv4"),
        parameter,
        current_value: Some(Value::Int(4096)),
        recommended_value: None,
        can_auto_apply: false,
        reason: format!(
            "listener 0.0.0.0:8080 (\"<!channel>@all\", pid 4242) dropped {drops} SYN(s) in \
             window {window} (up to 2026-01-01T00:{:02}:00Z) with its accept queue at \
             {limit}/{limit}: the application asked listen() for a backlog of {limit}, below \
             net.core.somaxconn = 4096, so raising net.core.somaxconn would not help. Raise the \
             application's listen backlog (see [docs](http://evil.example)) and restart it.",
            window % 60
        ),
        confidence: 0.9,
        source: Source::Rules,
        window: WindowRef {
            index: window,
            end: format!("2026-01-01T00:{:02}:00Z", window % 60),
        },
        application: Some(application),
        netns_cookie: None,
    }
}

/// The advice notifications taken off a channel webhook, by recommendation id; every other
/// notification fails the test.
fn advice_posted(
    posted: &mut tokio::sync::mpsc::UnboundedReceiver<crate::approvals::webhook::Payload>,
) -> Vec<String> {
    let mut ids = Vec::new();
    while let Ok(p) = posted.try_recv() {
        assert_eq!(p.kpo.event, "advice", "{}", p.text);
        ids.push(p.kpo.recommendation().unwrap().id.clone());
    }
    ids
}

/// (a) Advice for the application (no value) reaches a person: the running agent's webhook POSTs
/// it once, as `advice`, with the recommendation as in its event, the foreign words of `text`
/// escaped, and no approval in it. Mutations that fail it: no `post` in `Desk::advise`;
/// `rec.reason` not passed through `slack_escape` in `Payload::advice`.
#[tokio::test]
async fn advice_for_the_application_is_posted_to_the_webhook_once_escaped() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = setup(dir.path(), "recommend");
    let (url, body) = first_post().await;
    s.desk.start_webhook(url);
    let advice = app_advice(41, 1200, 511);
    let out = s.consider(vec![advice.clone()]);
    assert_eq!(kinds(&out.events), ["recommendation"]);
    let body = tokio::time::timeout(Duration::from_secs(60), body)
        .await
        .expect("the advice was posted")
        .unwrap();
    assert_eq!(body["kpo"]["event"], "advice", "{body}");
    assert_eq!(body["kpo"]["host"], s.desk.host, "{body}");
    assert!(body["kpo"].get("approval").is_none(), "{body}");
    assert!(body["kpo"].get("repeat").is_none(), "{body}");
    // The recommendation as in its `recommendation` event (the event's `kind` aside).
    let mut event = serde_json::to_value(&out.events[0]).unwrap();
    event.as_object_mut().unwrap().remove("kind");
    assert_eq!(body["kpo"]["recommendation"], event, "{body}");
    assert_eq!(body["kpo"]["recommendation"]["reason"], advice.reason);
    assert_eq!(
        body["kpo"]["recommendation"]["recommended_value"],
        serde_json::Value::Null
    );
    let text = body["text"].as_str().unwrap();
    let host = slack_escaped(&s.desk.host);
    assert_eq!(
        text,
        format!(
            "KPO on {host}: advice for the application: listener 0.0.0.0:8080 \
             (\"&lt;!channel&gt;@\u{200B}all\", pid 4242) dropped 1200 SYN(s) in window 41 (up to \
             2026-01-01T00:41:00Z) with its accept queue at 511/511: the application asked \
             listen() for a backlog of 511, below net.core.somaxconn = 4096, so raising \
             net.core.somaxconn would not help. Raise the application's listen backlog (see \
             [docs]\u{200B}(http://evil.example)) and restart it. (advised by rules, confidence \
             0.90). No kernel parameter is changed for it; `kpo explain {NS}` shows it again."
        )
    );
    // Recorded as advice, not as an approval: nothing waits in `kpo pending`.
    assert!(s.desk.pending().unwrap().is_empty());
    assert_eq!(s.desk.explain(NS, 1)[0].entry.done, Done::Advice);
}

/// (b) The same advice made again in a later window (the rules repeat it every 10 windows while
/// it holds, with a new id and new numbers) is not posted again, nor after a restart; advice
/// of another situation (the listener's limit moved, the words differ beyond numbers) is, and so
/// is the same advice once `expire_after` passed without it. Mutations that fail it: posting
/// in `Desk::advise` without looking at `advised`; leaving out `backlog_limit` or the words of
/// `advice_key`; no `remember_advice_made_lately` at `Desk::open`; no `retain` of what is older
/// than `expire_after`; `advice_key` keeping the accept-queue rule's `DEPTH_NOT_SEEN_FULL`.
#[test]
fn the_same_advice_is_posted_once_per_situation() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut s = setup(dir.path(), "recommend");
        let (webhook, mut posted) = Webhook::to_channel();
        s.desk.set_webhook(webhook);
        let first = app_advice(41, 1200, 511);
        s.consider(vec![first.clone()]);
        assert_eq!(advice_posted(&mut posted), [first.id.as_str()]);
        // Ten windows on, the rule repeats it: other numbers, another id, the same advice.
        let again = app_advice(51, 900, 511);
        assert_ne!(again.id, first.id);
        let out = s.consider(vec![again]);
        assert_eq!(kinds(&out.events), ["recommendation"], "still an event");
        assert!(advice_posted(&mut posted).is_empty(), "not posted again");
        // Its depth seen below the limit this time (the accept-queue rule's note on a queue not
        // seen full): the same situation.
        let mut unseen = app_advice(52, 900, 511);
        unseen.reason = unseen.reason.replace(
            "with its accept queue at 511/511",
            &format!(
                "with its accept queue at 3/511{}",
                crate::advise::rules::accept_queue::DEPTH_NOT_SEEN_FULL
            ),
        );
        assert!(
            unseen.reason.contains("(the deepest seen: "),
            "{}",
            unseen.reason
        );
        s.consider(vec![unseen.clone()]);
        assert!(
            advice_posted(&mut posted).is_empty(),
            "the note is no new situation"
        );
        // Nor the note on full SYN queues beside it.
        unseen.reason = unseen.reason.replace(
            crate::advise::rules::accept_queue::DEPTH_NOT_SEEN_FULL,
            &format!(
                "{}{}",
                crate::advise::rules::accept_queue::DEPTH_NOT_SEEN_FULL,
                crate::advise::rules::accept_queue::SYN_QUEUE_FULL_TOO
            ),
        );
        unseen.id = "rec-syn-full".into();
        s.consider(vec![unseen]);
        assert!(advice_posted(&mut posted).is_empty(), "nor the SYN note");
        // It listened again with a larger backlog, and still drops: new advice.
        let larger = app_advice(61, 900, 1024);
        s.consider(vec![larger.clone()]);
        assert_eq!(advice_posted(&mut posted), [larger.id.as_str()]);
        // Other words for the same listener and limit: another kind of advice.
        let mut listen_again = app_advice(71, 900, 1024);
        listen_again.reason = listen_again.reason.replace(
            "the application asked",
            "its limit is the value somaxconn had when",
        );
        s.consider(vec![listen_again.clone()]);
        assert_eq!(advice_posted(&mut posted), [listen_again.id.as_str()]);
    }
    // A restart: the rules' latches start empty and advise again at once; not posted again.
    let mut s = setup(dir.path(), "recommend");
    let (webhook, mut posted) = Webhook::to_channel();
    s.desk.set_webhook(webhook);
    assert!(
        advice_posted(&mut posted).is_empty(),
        "nothing announced at start"
    );
    s.consider(vec![app_advice(3, 700, 511)]);
    assert!(
        advice_posted(&mut posted).is_empty(),
        "made before the restart"
    );
    // Not made for longer than expire_after (an hour here): posted again when it comes back.
    for at in s.desk.advised.values_mut() {
        *at -= 3_600_000;
    }
    let back = app_advice(400, 50, 511);
    s.consider(vec![back.clone()]);
    assert_eq!(advice_posted(&mut posted), [back.id]);
}

/// (c) An advice notification and an approval's go through the one queue and both arrive, in
/// order: advice has a key of its own, so neither replaces the other. Mutation that fails it
/// (with `an_advice_never_replaces_an_approval_nor_is_replaced_by_one` in webhook.rs): advice
/// keyed as an approval in `Payload::key`.
#[tokio::test]
async fn an_approval_and_advice_posted_together_both_arrive() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = setup(dir.path(), "recommend");
    let (url, mut requests) = crate::approvals::webhook::tests::receiver(vec![200, 200]).await;
    s.desk.start_webhook(url);
    let advice = app_advice(41, 1200, 511);
    s.consider(vec![rec(Source::Rules, 32, false), advice.clone()]);
    let mut got = Vec::new();
    for _ in 0..2 {
        let next = tokio::time::timeout(Duration::from_secs(60), requests.recv()).await;
        got.push(next.expect("posted").unwrap());
    }
    assert_eq!(
        got,
        [
            ("approval_required".to_string(), "ap-1".to_string()),
            ("advice".to_string(), advice.id)
        ]
    );
}

/// (d) Without a webhook, advice is recorded and reported as before and nothing breaks; it is
/// remembered all the same, so that a webhook set later (a start, a reload naming a URL) is not
/// told of it (advice is not state that waits for someone) while a new situation is posted.
/// Mutation that fails it: `Desk::advise` returning before it remembers when no webhook is set.
#[test]
fn without_a_webhook_advice_is_recorded_and_not_announced_later() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = setup(dir.path(), "recommend");
    let out = s.consider(vec![app_advice(41, 1200, 511)]);
    assert_eq!(kinds(&out.events), ["recommendation"]);
    assert!(out.applied.is_empty() && out.refused.is_empty());
    assert_eq!(s.desk.explain(NS, 1)[0].entry.done, Done::Advice);
    assert!(s.desk.pending().unwrap().is_empty());
    let (webhook, mut posted) = Webhook::to_channel();
    s.desk.set_webhook(webhook);
    assert!(
        advice_posted(&mut posted).is_empty(),
        "not announced at start"
    );
    s.consider(vec![app_advice(51, 800, 511)]);
    assert!(advice_posted(&mut posted).is_empty(), "the same situation");
    let larger = app_advice(61, 800, 1024);
    s.consider(vec![larger.clone()]);
    assert_eq!(advice_posted(&mut posted), [larger.id]);
}

/// (e) A recommendation with a value (a parameter change) is never posted as advice, even when it
/// names the application (the accept-queue rule's raise does): what the policy makes of it is
/// what the webhook hears of (an approval, or nothing). Mutation that fails it: `Desk::advise`
/// called for every recommendation, not only those without a value.
#[test]
fn a_parameter_change_is_not_posted_as_advice() {
    for mode in ["observe", "auto", "recommend"] {
        let dir = tempfile::tempdir().unwrap();
        let mut s = setup(dir.path(), mode);
        let (webhook, mut posted) = Webhook::to_channel();
        s.desk.set_webhook(webhook);
        let mut raise = rec(Source::Rules, 32, mode == "auto");
        raise.application = app_advice(1, 10, 16).application;
        s.consider(vec![raise]);
        let mut events = Vec::new();
        while let Ok(p) = posted.try_recv() {
            events.push(p.kpo.event);
        }
        let expected: &[&str] = if mode == "recommend" {
            &["approval_required"]
        } else {
            &[]
        };
        assert_eq!(events, expected, "{mode}");
    }
}

/// The LLM's suggestion of a parameter it may not drive (no value, no application), as
/// `advise::llm::validate::suggestions` keeps it.
fn llm_suggestion(window: u64, reason: &str, now: i64) -> Recommendation {
    let parameter: ParamAddress = "net.ipv4.tcp_fin_timeout".parse().unwrap();
    Recommendation {
        id: Recommendation::make_id(Source::Llm, window, &parameter, None),
        parameter,
        current_value: Some(Value::Int(now.into())),
        recommended_value: None,
        can_auto_apply: false,
        reason: reason.into(),
        confidence: 0.6,
        source: Source::Llm,
        window: WindowRef {
            index: window,
            end: "2026-01-01T00:41:00Z".into(),
        },
        application: None,
        netns_cookie: None,
    }
}

/// (f) An LLM suggestion goes the way of advice for an application: reported, recorded as
/// advice in the history `kpo explain` reads, posted once per situation with words of its own
/// (it is no advice for an application), and never proposed: no change, no approval, the kernel
/// as it was. Mutations that fail it: the `application` match in `Payload::advice` taken out
/// (the application's words); `Desk::advise` not called for it; the reason's words or the
/// value kept in a suggestion's `advice_key`.
#[test]
fn an_llm_suggestion_is_advice_posted_once_and_never_proposed() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = setup(dir.path(), "auto");
    let (webhook, mut posted) = Webhook::to_channel();
    s.desk.set_webhook(webhook);
    let first = llm_suggestion(41, "1200 sockets in FIN_WAIT2 <!here>", 60);
    let out = s.consider(vec![first.clone()]);
    assert_eq!(kinds(&out.events), ["recommendation"]);
    assert!(out.applied.is_empty() && out.refused.is_empty());
    assert!(s.desk.pending().unwrap().is_empty());
    assert_eq!(s.path.journal.entries().len(), 0);
    let explained = s.desk.explain("net.ipv4.tcp_fin_timeout", 5);
    assert_eq!(explained.len(), 1);
    assert_eq!(explained[0].entry.done, Done::Advice);
    assert_eq!(explained[0].entry.recommendation, first);
    let p = posted.try_recv().expect("posted");
    assert_eq!(p.kpo.event, "advice");
    assert_eq!(p.kpo.recommendation(), Some(&first));
    let host = slack_escaped(&s.desk.host);
    assert_eq!(
        p.text,
        format!(
            "KPO on {host}: a parameter to look at, net.ipv4.tcp_fin_timeout (now 60): 1200 \
             sockets in FIN_WAIT2 &lt;!here&gt; (advised by llm, confidence 0.60). KPO does not \
             change it; `kpo explain net.ipv4.tcp_fin_timeout` shows it again."
        )
    );
    // Made again in a later consultation, in other words and beside another value (the model
    // writes its reason anew each time; the value may move by itself): the same situation, not
    // posted again.
    s.consider(vec![llm_suggestion(
        51,
        "connections stuck in the FIN_WAIT2 state",
        30,
    )]);
    assert!(posted.try_recv().is_err());
    assert_eq!(s.desk.explain("net.ipv4.tcp_fin_timeout", 5).len(), 2);
}

/// `text` as the webhook's Slack-style text shows it.
fn slack_escaped(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// s43 (found by hand): with the rules advising 32 and the LLM 20 for the same listener, each
/// consultation superseded the other's approval (ap-10 by ap-11 by ap-12 ...), a webhook post
/// each time, and the value waiting was whoever spoke last. Another advisor's value supersedes a
/// pending approval only when the merging order keeps it (here: closer to the kernel's 16);
/// otherwise the approval is left as it is, and the advice is recorded as pending on it. The
/// same advisor's new value is its new opinion and supersedes as before.
#[test]
fn two_advisors_values_do_not_supersede_each_other_in_turn() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = setup(dir.path(), "recommend");
    s.consider(vec![rec(Source::Rules, 32, false)]);
    // The LLM's 20 is more cautious: it supersedes the rules' 32.
    let out = s.consider(vec![rec(Source::Llm, 20, false)]);
    assert_eq!(
        kinds(&out.events),
        ["recommendation", "approval_required", "approval_resolved"]
    );
    let pending = s.desk.pending().unwrap();
    assert_eq!((pending.len(), pending[0].id.as_str()), (1, "ap-2"));
    // The rules' 32 again: left as it is, said in the stream and the history.
    let out = s.consider(vec![rec(Source::Rules, 32, false)]);
    assert_eq!(kinds(&out.events), ["recommendation", "approval_not_asked"]);
    let Event::ApprovalNotAsked(not_asked) = &out.events[1] else {
        unreachable!()
    };
    assert_eq!(
        (not_asked.because, not_asked.approval_id.as_str()),
        (crate::approvals::NotAskedBecause::Pending, "ap-2")
    );
    let pending = s.desk.pending().unwrap();
    assert_eq!((pending.len(), pending[0].id.as_str()), (1, "ap-2"));
    let history = s.desk.explain(NS, 1);
    assert_eq!(history[0].entry.approval_id.as_deref(), Some("ap-2"));
    assert_eq!(
        history[0].entry.detail.as_deref(),
        Some(
            "ap-2 is pending for 20, advised by llm, which the merging order keeps over 32 \
             (more cautious, or as cautious and first); left as it is"
        )
    );
    // The LLM's own new value supersedes its approval; the rules' 18, closer still, then
    // supersedes the LLM's.
    s.consider(vec![rec(Source::Llm, 24, false)]);
    assert_eq!(s.desk.pending().unwrap()[0].id, "ap-3");
    s.consider(vec![rec(Source::Rules, 18, false)]);
    let pending = s.desk.pending().unwrap();
    assert_eq!((pending.len(), pending[0].id.as_str()), (1, "ap-4"));
    assert_eq!(pending[0].value, Value::Int(18));
}

/// A recommendation is in the history as under way before its change is made (s48 storyR R5: a
/// kill between the kernel write and the path's return lost it from `kpo explain`), replaced by
/// what was done once the path returns; one a stop left under way is settled at the next start
/// from the journal: the change made for it, or nothing written.
#[test]
fn a_recommendation_a_stop_left_under_way_is_settled_from_the_journal() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = setup(dir.path(), "auto");
    let under_way = |s: &mut Setup, r: &Recommendation| {
        s.desk
            .store
            .record(HistoryEntry {
                ts_ms: now_ms(),
                recommendation: r.clone(),
                done: Done::UnderWay,
                journal_id: None,
                approval_id: None,
                detail: Some(UNDER_WAY.into()),
            })
            .unwrap();
    };
    // As a kill after the write leaves it: the 32's entry under way and its change journaled
    // (the path ran to its end, the desk never heard); the 64's entry under way, nothing
    // journaled.
    // Its value as the advisor gave it, one word; the path journals the integer (s49 review L1).
    let made = Recommendation {
        recommended_value: Some(Value::Word("32".into())),
        ..rec(Source::Rules, 32, true)
    };
    under_way(&mut s, &made);
    let proposal = Proposal {
        address: made.parameter.clone(),
        value: Value::Int(32),
        source: made.source.into(),
        reason: made.reason.clone(),
    };
    let report = s.path.propose_advice(&proposal, false, None, None).unwrap();
    assert_eq!(report.status, ChangeStatus::Applied);
    let journal_id = report.journal_id.unwrap();
    let lost = Recommendation {
        id: "rules-lost".into(),
        ..rec(Source::Rules, 64, true)
    };
    // Made after that change (a later millisecond), and killed before anything was journaled
    // (a refusal of an advisor's is not journaled either).
    std::thread::sleep(std::time::Duration::from_millis(2));
    under_way(&mut s, &lost);
    assert_eq!(s.desk.explain(NS, 10)[0].entry.done, Done::UnderWay);
    drop(s);

    let mut s = setup(dir.path(), "auto");
    let settled = s.desk.explain(NS, 10);
    let done: Vec<_> = settled
        .iter()
        .map(|e| {
            (
                e.entry.recommendation.id.as_str(),
                e.entry.done,
                e.entry.journal_id,
            )
        })
        .collect();
    assert_eq!(
        done,
        [
            ("rules-lost", Done::Failed, None),
            (made.id.as_str(), Done::Applied, Some(journal_id))
        ],
        "newest first: {settled:#?}"
    );
    assert_eq!(
        settled[0].entry.detail.as_deref(),
        Some("the agent stopped before this change was journaled: nothing was written")
    );
    assert_eq!(
        settled[1].entry.detail.as_deref(),
        Some(
            "the agent stopped before recording how this change ended; the journal has it applied"
        )
    );
    // A recommendation the desk sees through is replaced by what was done, not added to.
    let out = s.consider(vec![rec(Source::Rules, 48, true)]);
    assert_eq!(out.refused.len(), 1, "{out:#?}");
    let now = s.desk.explain(NS, 10);
    assert_eq!(
        (now.len(), now[0].entry.done),
        (3, Done::Refused),
        "{now:#?}"
    );
    drop(s);
    // Settled for good: a later start reads the same.
    let s = setup(dir.path(), "auto");
    let again: Vec<_> = s
        .desk
        .explain(NS, 10)
        .iter()
        .map(|e| e.entry.done)
        .collect();
    assert_eq!(again, [Done::Refused, Done::Failed, Done::Applied]);
}

/// An approval cleared at the stop, after `on_exit`'s reverts moved its value: in the event
/// stream at once; with a webhook, left unannounced though the desk is dropped (its post, queued
/// as the agent stops, would be lost), so the next start posts it (s49 review M3).
#[test]
fn an_approval_cleared_at_the_stop_is_posted_at_the_next_start() {
    let dir = tempfile::tempdir().unwrap();
    let with_webhook = ApprovalSettings {
        webhook: Some("http://127.0.0.1:9/kpo".into()),
        ..settings()
    };
    let mut s = open(dir.path(), policy("recommend"), with_webhook.clone(), false);
    let (webhook, _posted) = Webhook::to_channel();
    s.desk.set_webhook(webhook);
    s.consider(vec![rec(Source::Rules, 32, false)]);
    s.desk.take_events();
    // on_exit put 8 back where the advice was made against 16.
    s.set_value(8);
    s.desk.clear_what_no_longer_holds(&s.path);
    let events = s.desk.take_events();
    assert_eq!(kinds(&events), ["approval_resolved"]);
    assert_eq!(
        cleared_why(&s, "ap-1"),
        "the kernel now has 8, and the advice was made against 16"
    );
    drop(s);
    let mut s = open(dir.path(), policy("recommend"), with_webhook, false);
    let (webhook, mut posted) = Webhook::to_channel();
    s.desk.set_webhook(webhook);
    assert_eq!(
        posted_ends(&mut posted),
        ["ap-1"],
        "posted by the next start"
    );
}

/// At a start whose agent's own namespace died, a pending approval of one of its keys (advised
/// for the dead namespace's values) is cleared; one of another namespace is not (s55 review M3:
/// approved, the dead namespace's advice would have been applied in the new one).
#[test]
fn approvals_of_a_dead_agent_namespaces_keys_are_cleared() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = setup(dir.path(), "recommend");
    const HOST: &str = "net.core.somaxconn";
    s.k.0
        .lock()
        .unwrap()
        .values
        .insert(HOST.into(), Value::Int(16));
    let mut host = rec(Source::Rules, 64, false);
    host.parameter = HOST.parse().unwrap();
    host.id = Recommendation::make_id(Source::Rules, 1, &host.parameter, Some(&Value::Int(64)));
    s.consider(vec![rec(Source::Rules, 32, false), host]);
    let pending = s.desk.pending().unwrap();
    let keys: Vec<&str> = pending.iter().map(|i| i.key.as_str()).collect();
    assert_eq!(keys, [NS, HOST]);
    s.desk.take_events();
    assert!(s
        .desk
        .clear_for_dead_agent_namespace("the agent's network namespace net:[7] is gone"));
    assert_eq!(kinds(&s.desk.take_events()), ["approval_resolved"]);
    let left: Vec<String> = s
        .desk
        .pending()
        .unwrap()
        .into_iter()
        .map(|i| i.key)
        .collect();
    assert_eq!(left, [NS]);
    assert_eq!(
        cleared_why(&s, &pending[1].id),
        "the agent's network namespace net:[7] is gone"
    );
}
