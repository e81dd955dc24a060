//! The local control API: the running agent serves the operator's requests (apply, revert,
//! journal, status, pause, resume, and the approvals: pending, approve, reject, explain) on a Unix socket, so that the CLI goes through the agent's own
//! change path instead of competing with it for the state directory.
//!
//! - The socket (default [`DEFAULT_SOCKET`]) is created mode 0600, owned by root; every
//!   connection's peer credentials (SO_PEERCRED) are checked and a caller that is not root is
//!   refused and logged, whatever the file's mode. Its directory, and every one above it, must
//!   be changeable by root alone ([`socket_dir`]).
//! - One request per connection: a JSON object on one line, answered by one JSON line
//!   (docs/api.md). Requests are [`Request`]; a reply is `{"ok": RESULT}` or `{"error": TEXT}`.
//! - [`server`] accepts and checks callers and hands each request to the run loop, which owns the
//!   change path; [`client::SocketControl`] is the CLI's side and implements
//!   [`crate::control::Control`].
pub mod client;
pub mod server;
mod socket_dir;

use serde::{Deserialize, Serialize};

use crate::control::{ApplyRequest, Control, ControlError, RevertRequest};

/// Where the agent listens unless told otherwise.
pub const DEFAULT_SOCKET: &str = "/run/kpo/kpo.sock";

/// The longest request line accepted: requests are small; anything longer is refused unread.
pub const MAX_REQUEST_BYTES: usize = 64 * 1024;

/// The longest reason a request carries (`apply`'s, `reject`'s), in bytes: a reason is a line of
/// the journal and of `kpo journal`, not a document. The CLI checks it before it sends; the agent
/// holds every client to it (s55 story AU-3: a socket client journaled a 60,000-byte reason).
pub const MAX_REASON_BYTES: usize = 4096;

/// A request, as one JSON line: `{"op":"apply","address":"net.core.somaxconn","value":4096,
/// "reason":"..."}`, `{"op":"status"}`, ...
///
/// A key a request does not have is an error: a guessed or misspelled one (`netns` beside an
/// address, `parm` for `param`) would otherwise be dropped and the request carried out as if it
/// were absent, on the host's parameter or on the pause.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    Apply(ApplyRequest),
    Revert {
        revert: RevertRequest,
        /// Who asks (the agent sets it from the socket's peer credentials).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        by: Option<String>,
    },
    Journal,
    /// The journal a page at a time ([`crate::control::JournalPage`]).
    JournalPage {
        from: usize,
    },
    Status,
    Pause {
        by: String,
    },
    Resume {
        param: Option<String>,
        by: String,
    },
    /// Approvals (served by the agent's approval desk, [`crate::approvals::control`]).
    Pending,
    Approve {
        id: String,
        by: String,
    },
    Reject {
        id: String,
        by: String,
        reason: Option<String>,
    },
    Explain {
        param: String,
        limit: usize,
    },
}

/// Why `reason` is refused, if it is: longer than [`MAX_REASON_BYTES`] as it is journaled, on one
/// line with runs of white space made one space (s56 story AX-4: 4090 spaces and a word were
/// refused, though journaled as the word).
pub fn reason_too_long(reason: &str) -> Option<String> {
    let journaled = crate::shown::one_line(reason).len();
    (journaled > MAX_REASON_BYTES).then(|| {
        format!(
            "at most {MAX_REASON_BYTES} bytes on one line (this one has {journaled}): it is one \
             line of the journal"
        )
    })
}

impl Request {
    /// Why the request's reason is refused, if it is: longer than [`MAX_REASON_BYTES`].
    pub fn reason_too_long(&self) -> Option<String> {
        let reason = match self {
            Request::Apply(a) => Some(a.reason.as_str()),
            Request::Reject { reason, .. } => reason.as_deref(),
            _ => None,
        }?;
        reason_too_long(reason).map(|why| format!("reason: {why}"))
    }

    /// Whether the agent journals who asks (`by`): only then is the caller's login name looked
    /// up, which may wait on a directory service (api::server). The requests that only read are
    /// not held up, nor do they spend a thread, for a name they would not use.
    pub fn journals_who_asks(&self) -> bool {
        match self {
            Request::Apply(_)
            | Request::Revert { .. }
            | Request::Pause { .. }
            | Request::Resume { .. }
            | Request::Approve { .. }
            | Request::Reject { .. } => true,
            Request::Journal
            | Request::JournalPage { .. }
            | Request::Status
            | Request::Pending
            | Request::Explain { .. } => false,
        }
    }
}

/// The reply line: exactly one of `ok` and `error`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reply {
    Ok(serde_json::Value),
    Error(String),
}

/// A result as the reply line carries it.
pub fn reply<T: Serialize>(result: Result<T, ControlError>) -> Reply {
    match result {
        Ok(v) => match serde_json::to_value(v) {
            Ok(v) => Reply::Ok(v),
            Err(e) => Reply::Error(format!("encoding the reply: {e}")),
        },
        Err(e) => Reply::Error(e.to_string()),
    }
}

/// Serves one request from `control` (the agent's change path).
pub fn handle(control: &mut dyn Control, request: &Request) -> Reply {
    match request {
        Request::Apply(a) => reply(control.apply(a)),
        Request::Revert { revert, by } => {
            reply(control.revert(revert, by.as_deref().unwrap_or_default()))
        }
        Request::Journal => reply(control.journal()),
        Request::JournalPage { from } => reply(control.journal_page(*from)),
        Request::Status => reply(control.status()),
        Request::Pause { by } => reply(control.pause(by)),
        Request::Resume { param, by } => reply(control.resume(param.as_deref(), by)),
        Request::Pending
        | Request::Approve { .. }
        | Request::Reject { .. }
        | Request::Explain { .. } => {
            Reply::Error("approvals are served by the agent's approval desk, not here".into())
        }
    }
}

/// For a test that calls the agent through its control socket, which answers root callers only:
/// true, with the test recorded as skipped, when this test process is not root.
#[cfg(test)]
pub(crate) fn socket_test_skipped_unless_root() -> bool {
    if nix::unistd::geteuid().is_root() {
        return false;
    }
    kpo_test_skip::skip("the control socket answers root callers only, and this test is not root");
    true
}

#[cfg(test)]
mod protocol_tests {
    use super::*;

    #[test]
    fn requests_and_replies_are_one_json_object_each() {
        let r: Request = serde_json::from_str(
            r#"{"op":"apply","address":"net.core.somaxconn@netns:/run/netns/x","value":4096,"reason":"test"}"#,
        )
        .unwrap();
        assert!(
            matches!(r, Request::Apply(ref a) if a.value == crate::actuate::param::Value::Int(4096))
        );
        let text = serde_json::to_string(&Request::Revert {
            revert: RevertRequest::All,
            by: None,
        })
        .unwrap();
        assert_eq!(text, r#"{"op":"revert","revert":"all"}"#);
        assert_eq!(
            serde_json::to_string(&Request::Status).unwrap(),
            r#"{"op":"status"}"#
        );
        assert_eq!(
            serde_json::to_string(&Reply::Error("no".into())).unwrap(),
            r#"{"error":"no"}"#
        );
        assert!(serde_json::from_str::<Request>(r#"{"op":"format_disk"}"#).is_err());
    }

    /// An apply's or a reject's reason longer than a journal line takes is refused, as the CLI
    /// refuses it (s55 story AU-3: a socket client journaled 60,000 bytes).
    #[test]
    fn a_reason_longer_than_a_journal_line_is_refused() {
        let apply = |reason: &str| -> Request {
            serde_json::from_value(serde_json::json!({"op": "apply",
                "address": "net.core.somaxconn", "value": 4096, "reason": reason}))
            .unwrap()
        };
        let fits = "r".repeat(MAX_REASON_BYTES);
        assert_eq!(apply(&fits).reason_too_long(), None);
        let long = fits.clone() + "r";
        assert_eq!(
            apply(&long).reason_too_long().unwrap(),
            "reason: at most 4096 bytes on one line (this one has 4097): it is one line of the \
             journal"
        );
        let reject: Request = serde_json::from_value(
            serde_json::json!({"op": "reject", "id": "ap-1", "by": "x", "reason": long}),
        )
        .unwrap();
        assert!(reject.reason_too_long().is_some());
        let status: Request = serde_json::from_str(r#"{"op":"status"}"#).unwrap();
        assert_eq!(status.reason_too_long(), None);
    }

    /// The requests whose caller is looked up are exactly those that carry a `by` to journal.
    #[test]
    fn only_requests_with_a_by_journal_who_asks() {
        for line in [
            r#"{"op":"apply","address":"net.core.somaxconn","value":4096,"reason":"t","by":"x"}"#,
            r#"{"op":"revert","revert":{"id":7},"by":"x"}"#,
            r#"{"op":"journal"}"#,
            r#"{"op":"journal_page","from":0}"#,
            r#"{"op":"status"}"#,
            r#"{"op":"pause","by":"x"}"#,
            r#"{"op":"resume","param":null,"by":"x"}"#,
            r#"{"op":"pending"}"#,
            r#"{"op":"approve","id":"ap-3","by":"x"}"#,
            r#"{"op":"reject","id":"ap-3","by":"x","reason":null}"#,
            r#"{"op":"explain","param":"net.core.somaxconn","limit":10}"#,
        ] {
            let request: Request =
                serde_json::from_str(line).unwrap_or_else(|e| panic!("{line}: {e}"));
            let has_by = serde_json::to_value(&request).unwrap().get("by").is_some();
            assert_eq!(request.journals_who_asks(), has_by, "{line}");
        }
    }

    /// A key the request does not have is refused, not ignored: ignored, `netns` (the CLI's
    /// flag, not a field) applied the change to the host, and a misspelled `param` lifted the
    /// pause instead of handing one parameter back.
    #[test]
    fn a_key_the_request_does_not_have_is_refused() {
        for (line, key) in [
            (
                r#"{"op":"apply","address":"net.core.somaxconn","value":4096,"reason":"t","netns":"/run/netns/web"}"#,
                "netns",
            ),
            (
                r#"{"op":"resume","parm":"net.core.somaxconn","param":null,"by":"x"}"#,
                "parm",
            ),
            (
                r#"{"op":"reject","id":"ap-3","by":"x","reason":null,"why":"no"}"#,
                "why",
            ),
            (
                r#"{"op":"approve","id":"ap-3","by":"x","force":true}"#,
                "force",
            ),
        ] {
            let e = serde_json::from_str::<Request>(line)
                .unwrap_err()
                .to_string();
            assert!(e.contains(&format!("unknown field `{key}`")), "{line}: {e}");
        }
        // What the CLI sends still parses, `by` left out where it is optional.
        for line in [
            r#"{"op":"apply","address":"net.core.somaxconn","value":4096,"reason":"t","by":"x"}"#,
            r#"{"op":"apply","address":"net.core.somaxconn","value":4096,"reason":"t"}"#,
            r#"{"op":"revert","revert":{"id":7}}"#,
            r#"{"op":"resume","param":null,"by":"x"}"#,
            r#"{"op":"journal_page","from":0}"#,
            r#"{"op":"status"}"#,
        ] {
            serde_json::from_str::<Request>(line).unwrap_or_else(|e| panic!("{line}: {e}"));
        }
    }
}

#[cfg(test)]
mod tests;
