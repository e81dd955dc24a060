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

/// `kind: "change"`.
#[derive(Debug, Clone, PartialEq, Serialize)]
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
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decision: Option<String>,
    /// For `refused`: the refusal code (`deny_listed`, `out_of_bounds`, `step_too_large`,
    /// `cooldown`, `source_not_allowed`, `namespace_not_covered`, `paused`, `quarantined`,
    /// `rate_limited`, `yielded`, `invalid`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refusal: Option<String>,
    /// For `verified` and `reverted`: the value read back.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub read_back: Option<Value>,
    /// A sentence for people: the refusal, the error, why it was reverted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
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
