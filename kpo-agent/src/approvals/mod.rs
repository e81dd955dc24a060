//! Merging advice and waiting for people: the stage between the advisors and the change path.
//!
//! - [`merge`]: conflicting recommendations for one parameter at one target in one batch are
//!   reduced to the most conservative; the others are set aside, with why.
//! - [`desk`]: a recommendation that may not be applied automatically (its advisor said so, or the
//!   policy's mode is recommend) becomes a pending approval; the desk refreshes, expires and
//!   clears them, and approves (through [`crate::change::ChangePath::propose_approved`]) or
//!   rejects them for an operator. It also keeps the recommendation history `kpo explain` reads.
//! - [`store`]: pending approvals and the history, persisted in the state directory (append-only
//!   checksummed lines, fsynced; written only under the state directory's lock).
//! - [`webhook`]: the optional JSON POST for each approval, off the agent's loop.
//! - [`control`]: `kpo pending`, `approve`, `reject`, `explain` through the socket or offline.
//!
//! docs/approvals.md describes the behaviour for operators.
pub mod cli;
pub mod control;
pub mod desk;
pub mod merge;
pub mod store;
pub mod webhook;

use serde::{Deserialize, Serialize};

use crate::{
    actuate::param::{ParamAddress, Value},
    advise::recommendation::{Recommendation, Source, WindowRef},
    change::ChangeStatus,
};

pub use desk::Desk;

/// One approval: what would change, why, and where it stands.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApprovalItem {
    /// `ap-N`, never reused in a state directory.
    pub id: String,
    /// The parameter and its target, as the advisor addressed it.
    pub parameter: ParamAddress,
    /// The journal's key of that target (a namespace path resolved to its inode).
    pub key: String,
    /// The cookie of the network namespace the target was when the approval was made
    /// (`SO_NETNS_COOKIE`): the inode in the address may name another namespace once this one is
    /// gone. `None` for the host, the agent's own namespace, a kernel without cookies, or an
    /// approval stored before cookies were kept.
    #[serde(default)]
    pub netns_cookie: Option<u64>,
    /// The value that would be applied.
    pub value: Value,
    /// The kernel's value when the advice was last made.
    pub current_value: Option<Value>,
    /// The advisor; an approved change is proposed as this source.
    pub source: Source,
    /// The latest recommendation behind it (the same parameter, target and value).
    pub recommendation_id: String,
    pub reason: String,
    pub confidence: f64,
    /// The window of the latest recommendation.
    pub window: WindowRef,
    /// `advisor` (it did not allow applying automatically) or `policy` (mode recommend).
    pub held_by: String,
    pub created_ms: u64,
    /// When the advice was last made again (the item refreshed).
    pub updated_ms: u64,
    /// After this it can no longer be approved.
    pub expires_ms: u64,
    /// How many times the advice was made again while pending.
    pub refreshed: u32,
    #[serde(default)]
    pub resolved_ms: Option<u64>,
    #[serde(flatten)]
    pub state: ApprovalState,
    /// In `kpo pending` alone, never stored: why approving it now would be refused (a cooldown,
    /// the hourly limit, a pause, ...), which the policy asks only when it is approved (s49
    /// storyS S-2: nothing said so before `kpo approve` was refused).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approving_now: Option<String>,
}

/// Where an approval stands.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum ApprovalState {
    /// Waiting for an operator.
    Pending,
    /// An operator approved it and the change path applied it (or found it in place).
    Approved {
        by: String,
        journal_id: Option<u64>,
        status: ChangeStatus,
    },
    /// An operator rejected it.
    Rejected { by: String, why: Option<String> },
    /// Nobody approved it within `[approvals] expire_after`.
    Expired,
    /// The situation that caused it is over (the kernel has the value, or the advisor stopped
    /// recommending it).
    Cleared { why: String },
    /// Newer advice for the same parameter and target asked for another value.
    Superseded { by_id: String },
}

impl ApprovalState {
    pub fn name(&self) -> &'static str {
        match self {
            ApprovalState::Pending => "pending",
            ApprovalState::Approved { .. } => "approved",
            ApprovalState::Rejected { .. } => "rejected",
            ApprovalState::Expired => "expired",
            ApprovalState::Cleared { .. } => "cleared",
            ApprovalState::Superseded { .. } => "superseded",
        }
    }

    /// One phrase for people: `approved by X (journal #7)`, `cleared: ...`.
    pub fn describe(&self) -> String {
        match self {
            ApprovalState::Pending => "pending".into(),
            ApprovalState::Approved {
                by,
                journal_id,
                status,
            } => format!(
                "approved by {by}{}{}",
                journal_id
                    .map(|i| format!(" (journal #{i})"))
                    .unwrap_or_default(),
                if *status == ChangeStatus::Unchanged {
                    ", the kernel already had the value"
                } else {
                    ""
                }
            ),
            // One line, a reason an older KPO stored with a line break too.
            ApprovalState::Rejected { by, why } => format!(
                "rejected by {by}{}",
                why.as_ref()
                    .map(|r| format!(": {}", crate::shown::one_line(r)))
                    .unwrap_or_default()
            ),
            ApprovalState::Expired => "expired: nobody approved it in time".into(),
            ApprovalState::Cleared { why } => format!("cleared: {why}"),
            ApprovalState::Superseded { by_id } => format!("superseded by {by_id}"),
        }
    }
}

/// What was done with one recommendation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Done {
    /// Applied through the change path (journal id).
    Applied,
    /// The kernel already had the value.
    Unchanged,
    /// Became (or refreshed) a pending approval (approval id).
    Pending,
    /// An operator rejected this value here, and the rejection still holds (for the
    /// `expire_after` in force when it was made; that approval's id); not asked again.
    Rejected,
    /// Mode observe: recorded only.
    RecordOnly,
    /// The policy refused it.
    Refused,
    /// The kernel did not take it, or it could not be read or journaled.
    Failed,
    /// A more conservative recommendation for the same parameter won.
    SetAside,
    /// Advice for the application; nothing for KPO to change.
    Advice,
    /// Recorded before its change is made, and replaced by what was done once the change path
    /// returns: an agent killed in between leaves it, and its next start settles it from the
    /// journal ([`desk::Desk`] at open; s48 storyR R5: the recommendation behind a change made
    /// just before a kill was in no history).
    UnderWay,
    /// What a newer KPO wrote that this one does not know: read as such, not as a damaged line,
    /// which would clear the approvals pending before it (s51 story Z1: a binary older than
    /// `under_way` did, rolled back over a state directory the newer one wrote).
    #[serde(other)]
    Unknown,
}

impl Done {
    pub fn from_status(s: ChangeStatus) -> Done {
        match s {
            ChangeStatus::Applied => Done::Applied,
            ChangeStatus::Unchanged => Done::Unchanged,
            ChangeStatus::NeedsApproval => Done::Pending,
            ChangeStatus::RecordOnly => Done::RecordOnly,
            ChangeStatus::Refused => Done::Refused,
            ChangeStatus::Failed | ChangeStatus::Reverted | ChangeStatus::Skipped => Done::Failed,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Done::Applied => "applied",
            Done::Unchanged => "unchanged",
            Done::Pending => "pending",
            Done::Rejected => "rejected",
            Done::RecordOnly => "record_only",
            Done::Refused => "refused",
            Done::Failed => "failed",
            Done::SetAside => "set_aside",
            Done::Advice => "advice",
            Done::UnderWay => "under_way",
            Done::Unknown => "unknown",
        }
    }
}

/// One recommendation in the history `kpo explain` reads.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryEntry {
    pub ts_ms: u64,
    pub recommendation: Recommendation,
    pub done: Done,
    #[serde(default)]
    pub journal_id: Option<u64>,
    #[serde(default)]
    pub approval_id: Option<String>,
    /// The refusal, the error, or the recommendation that won over it.
    #[serde(default)]
    pub detail: Option<String>,
}

/// `kpo explain`: a history entry and, when it became an approval, where that stands now.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Explained {
    #[serde(flatten)]
    pub entry: HistoryEntry,
    pub approval: Option<ApprovalItem>,
    /// The revert that put back the change the recommendation became, if one did: `applied
    /// (journal #1)` alone read as a value still in place (s50 storyY F5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reverted_by: Option<u64>,
}

/// `kpo approve`: the approval as it stands after, and the change path's report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApproveOutcome {
    pub approval: ApprovalItem,
    pub report: crate::change::ChangeReport,
}

/// Why an approval request cannot be carried out.
#[derive(Debug, thiserror::Error)]
pub enum ApprovalError {
    #[error("no approval {0} (kpo pending lists them)")]
    NoSuch(String),
    /// `asked`: `approved` or `rejected`, what the request wanted (s60 review1 R1-6: "approved
    /// or rejected" for a rejected one, which a second `kpo reject` now takes as done).
    #[error("{id} can no longer be {asked}: {state}")]
    NotPending {
        id: String,
        state: String,
        asked: &'static str,
    },
    #[error("{id} expired at {at}: nobody approved it within [approvals] expire_after; it can no longer be approved or rejected")]
    Expired { id: String, at: String },
    #[error("{id} cannot be approved: {why}; the advice was for a namespace that is no longer there, so it is cleared (the advisor asks again if the namespace now there needs it)")]
    NamespaceGone { id: String, why: String },
    #[error("{id} cannot be approved now: its network namespace cannot be opened ({why}), though it is still in use; the approval stays pending: try again")]
    NamespaceUnreachable { id: String, why: String },
    #[error("{id} was advised against {was}, and the kernel now has {now}: the advice no longer fits, so it is cleared (the advisor asks again if it still sees the need)")]
    Stale {
        id: String,
        was: String,
        now: String,
    },
}

/// `ap-7` from `ap-7`, `AP-7` or `7`.
pub fn normalize_id(id: &str) -> String {
    let id = id.trim();
    // The prefix in any case: an operator copying an id from a ticket or chat may get `AP-7`.
    let digits = match id.get(..3) {
        Some(prefix) if prefix.eq_ignore_ascii_case("ap-") => &id[3..],
        _ => id,
    };
    // As numbers: `ap-03` and `3` are `ap-3` (ids are written without leading zeros).
    match digits.parse::<u64>() {
        Ok(n) if digits.chars().all(|c| c.is_ascii_digit()) => format!("ap-{n}"),
        _ => id.to_string(),
    }
}

#[cfg(test)]
mod id_tests {
    #[test]
    fn an_id_is_read_as_its_number() {
        for (given, id) in [
            ("3", "ap-3"),
            ("ap-3", "ap-3"),
            ("AP-3", "ap-3"),
            ("Ap-12", "ap-12"),
            (" ap-03 ", "ap-3"),
            ("007", "ap-7"),
            ("ap-x", "ap-x"),
            ("", ""),
            ("ap-", "ap-"),
            ("+3", "+3"),
        ] {
            assert_eq!(super::normalize_id(given), id, "{given:?}");
        }
    }
}

/// The event an approval's changes produce: `approval_required` when it is created or refreshed,
/// `approval_resolved` when it is approved, rejected, expired, cleared or superseded.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ApprovalEvent {
    #[serde(flatten)]
    pub approval: ApprovalItem,
    /// For `approval_required`: true when an item already pending was refreshed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refresh: Option<bool>,
}

/// `recommendation_set_aside`: a recommendation that lost to a more conservative one.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SetAsideEvent {
    /// The recommendation set aside, and its advisor.
    pub id: String,
    pub parameter: ParamAddress,
    pub recommended_value: Option<Value>,
    pub source: Source,
    pub can_auto_apply: bool,
    /// The recommendation that won.
    pub kept_id: String,
    pub kept_value: Option<Value>,
    pub kept_source: Source,
    /// Why the kept one is more conservative.
    pub why: String,
}

/// `approval_not_asked`: advice whose change needs a person's approval (its `change` event said
/// `proposed`, `needs_approval`) and that neither became a pending approval nor refreshed one,
/// so that a reader of the stream learns what became of that proposal.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NotAskedEvent {
    pub recommendation_id: String,
    pub parameter: ParamAddress,
    pub value: Value,
    pub source: Source,
    /// `rejected`: an operator rejected this value here lately; `pending`: another advisor's
    /// approval for this target is pending and kept over this advice.
    pub because: NotAskedBecause,
    /// The approval that decided: the one rejected, or the one pending.
    pub approval_id: String,
    /// `rejected`: when the same advice is asked again (milliseconds since the epoch).
    pub asks_again_ms: Option<u64>,
    /// The words `kpo explain` shows for it.
    pub detail: String,
}

impl NotAskedEvent {
    /// `rec`'s advice of `value`, not asked because of approval `approval_id`: rejected when
    /// it asks again only at `asks_again_ms`, otherwise pending and kept over it.
    pub fn new(
        rec: &crate::advise::recommendation::Recommendation,
        value: Value,
        approval_id: String,
        asks_again_ms: Option<u64>,
        detail: String,
    ) -> Self {
        Self {
            recommendation_id: rec.id.clone(),
            parameter: rec.parameter.clone(),
            value,
            source: rec.source,
            because: match asks_again_ms {
                Some(_) => NotAskedBecause::Rejected,
                None => NotAskedBecause::Pending,
            },
            approval_id,
            asks_again_ms,
            detail,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NotAskedBecause {
    Rejected,
    Pending,
}
