//! Events of the change path: `change` (one per phase of a change), `paused` and `resumed`.
//! Documented in docs/policy.md and docs/journal.md; they join [`super::events::Event`] as
//! `Change(ChangeEvent)`, `Paused(PausedEvent)` and `Resumed(ResumedEvent)` (flattened, with
//! `kind` = `change` / `paused` / `resumed`).
use serde::Serialize;

use crate::{
    actuate::param::{ParamAddress, Value},
    policy::Source,
};

/// Where a change is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangePhase {
    /// An advisor or operator proposed it; `decision` says what the policy made of it.
    Proposed,
    /// Written to the kernel and read back equal (intent journaled first); a write read back
    /// otherwise is put back and `Reverted`, with no `Applied`.
    Applied,
    /// The outcome is journaled.
    Verified,
    /// Not written: the policy refused it (`refusal` says why).
    Refused,
    /// The kernel did not take it, or it could not be read.
    Failed,
    /// Put back: a read-back mismatch, an error after the write, the guard, or an operator.
    Reverted,
}

/// `kind: "change"`. Serialized with `key` after `target` ([`ChangeEvent::key`]).
#[derive(Debug, Clone, PartialEq)]
pub struct ChangeEvent {
    pub phase: ChangePhase,
    /// The parameter address (`net.core.somaxconn@netns:4026532281`).
    pub target: ParamAddress,
    /// The kernel's value before, when it was read.
    pub before: Option<Value>,
    /// The value proposed (or, for a revert, put back).
    pub after: Value,
    pub source: Source,
    pub reason: String,
    /// The journal entry, once there is one.
    pub journal_id: Option<u64>,
    /// For `proposed`: `apply`, `needs_approval`, `record_only` or `refused`.
    pub decision: Option<String>,
    /// For `refused`: the refusal code (`deny_listed`, `out_of_bounds`, `step_too_large`,
    /// `cooldown`, `source_not_allowed`, `namespace_not_covered`, `paused`, `quarantined`,
    /// `rate_limited`, `yielded`, `invalid`).
    pub refusal: Option<String>,
    /// For `verified` and `reverted`: the value read back.
    pub read_back: Option<Value>,
    /// A sentence for people: the refusal, the error, why it was reverted.
    pub detail: Option<String>,
}

impl ChangeEvent {
    /// The journal's key of the target, as `kpo status --json`, the windows and `kpo journal --json`'s
    /// `key` name it: a namespace named by path is named by its inode (`@netns:INODE`), so that
    /// events can be joined with them; the address as given for a path that names no namespace.
    pub fn key(&self) -> String {
        crate::journal::target_key(&self.target)
    }
}

impl Serialize for ChangeEvent {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Wire<'a> {
            phase: ChangePhase,
            target: &'a ParamAddress,
            key: String,
            before: &'a Option<Value>,
            after: &'a Value,
            source: &'a Source,
            reason: &'a str,
            journal_id: Option<u64>,
            #[serde(skip_serializing_if = "Option::is_none")]
            decision: Option<&'a String>,
            #[serde(skip_serializing_if = "Option::is_none")]
            refusal: Option<&'a String>,
            #[serde(skip_serializing_if = "Option::is_none")]
            read_back: Option<&'a Value>,
            #[serde(skip_serializing_if = "Option::is_none")]
            detail: Option<&'a String>,
        }
        Wire {
            phase: self.phase,
            target: &self.target,
            key: self.key(),
            before: &self.before,
            after: &self.after,
            source: &self.source,
            reason: &self.reason,
            journal_id: self.journal_id,
            decision: self.decision.as_ref(),
            refusal: self.refusal.as_ref(),
            read_back: self.read_back.as_ref(),
            detail: self.detail.as_ref(),
        }
        .serialize(s)
    }
}

/// `kind: "paused"`: all changes stopped (`kpo pause`); survives restarts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PausedEvent {
    /// Who paused: `operator (pid N)`, or the agent's reason.
    pub by: String,
}

/// `kind: "resumed"`: the pause lifted (`param` absent), or a yielded parameter handed back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ResumedEvent {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub param: Option<String>,
    /// The journal keys handed back (for `param`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub keys: Vec<String>,
    pub by: String,
}

/// Any of the three, for a sink that takes them all.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ChangePathEvent {
    Change(ChangeEvent),
    Paused(PausedEvent),
    Resumed(ResumedEvent),
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A change addressed to a namespace by path names it by path in `target`, and by its inode
    /// in `key`, as `kpo status`, the windows and `kpo journal --json` do; the event still
    /// matches docs/events.schema.json, which requires `key`.
    #[test]
    fn a_change_event_has_its_targets_key_beside_the_address_as_given() {
        if !nix::unistd::Uid::effective().is_root() {
            kpo_test_skip::skip("a network namespace of its own needs root");
            return;
        }
        let other = crate::actuate::sysctl::ProcessInOtherNetns::spawn();
        let inode = other.netns_inode();
        // A path to it: the namespace file of a process in it.
        let path = std::fs::read_dir("/proc")
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
            .map(|pid| format!("/proc/{pid}/ns/net"))
            .find(|p| {
                use std::os::unix::fs::MetadataExt;
                std::fs::metadata(p).is_ok_and(|m| m.ino() == inode)
            })
            .expect("the process in the other namespace");
        let event = |target: &str| {
            crate::output::events::Event::Change(ChangeEvent {
                phase: ChangePhase::Reverted,
                target: target.parse().unwrap(),
                before: Some(Value::Int(32)),
                after: Value::Int(16),
                source: Source::Operator,
                reason: "agent stopping: on_exit = revert".into(),
                journal_id: Some(7),
                decision: None,
                refusal: None,
                read_back: Some(Value::Int(16)),
                detail: None,
            })
        };
        let schema: serde_json::Value =
            serde_json::from_str(include_str!("../../../docs/events.schema.json")).unwrap();
        let validator = jsonschema::validator_for(&schema).unwrap();
        let by_path = format!("net.core.somaxconn@netns:{path}");
        let by_inode = format!("net.core.somaxconn@netns:{inode}");
        // A file that is no namespace (a mistyped --netns) keeps the address as given.
        let file = tempfile::NamedTempFile::new().unwrap();
        let by_file = format!("net.core.somaxconn@netns:{}", file.path().display());
        for (target, key) in [
            (&by_path, &by_inode),
            (&by_inode, &by_inode),
            (&by_file, &by_file),
        ] {
            let line = crate::output::events::encode(
                &event(target),
                "h",
                time::OffsetDateTime::UNIX_EPOCH,
            );
            let v: serde_json::Value = serde_json::from_slice(&line).unwrap();
            assert_eq!(v["target"], target.as_str(), "{v}");
            assert_eq!(v["key"], key.as_str(), "{v}");
            let errors: Vec<String> = validator.iter_errors(&v).map(|x| x.to_string()).collect();
            assert!(errors.is_empty(), "{errors:?}\n{v:#}");
        }
    }
}
