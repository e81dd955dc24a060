//! The changes, reverts and refusals as `kpo journal` lists them.
use super::*;

/// An intent or refusal with its outcome, as `kpo journal` lists them.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Entry {
    pub id: u64,
    pub ts_ms: u64,
    /// As the change named it: a namespace by path stays a path.
    pub address: ParamAddress,
    /// The journal's key of its target, as `kpo status` and the events name it (a namespace
    /// named by path as its inode, `@netns:INODE`). Absent for a refusal, whose key is not
    /// recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    pub before: Option<Value>,
    pub after: Value,
    pub source: Source,
    pub reason: String,
    /// `change`, `revert` or `refused`.
    pub kind: String,
    pub revert_of: Option<u64>,
    /// `applied`, `failed`, `reverted`, `refused`, or `incomplete`.
    pub status: String,
    pub detail: Option<String>,
    pub read_back: Option<Value>,
}

/// Intent or refusal `r` as `kpo journal` lists it, with the outcome of an intent (if any); or
/// an outcome whose intent's line was lost, from the copy of it the outcome keeps
/// ([`Record::can_stand_for_its_intent`]): its time is the outcome's, its reason
/// [`LOST_INTENT_REASON`].
pub(super) fn entry_of(r: &Record, outcome: Option<&Outcome>) -> Option<Entry> {
    match r {
        Record::Intent(i) => {
            let (status, detail, read_back) = status_of(outcome);
            // A revert that took journals its reason as its outcome's `why`: said once, in
            // `reason`. (An outcome whose intent was lost keeps it: there it is the only copy.)
            let detail = detail.filter(|d| *d != i.reason);
            let (kind, revert_of) = kinds(&i.kind);
            Some(Entry {
                id: i.id,
                ts_ms: i.ts_ms,
                address: i.address.clone(),
                key: Some(i.key.clone()),
                before: Some(i.before.clone()),
                after: i.after.clone(),
                source: i.source,
                reason: i.reason.clone(),
                kind: kind.into(),
                revert_of,
                status,
                detail,
                read_back,
            })
        }
        Record::Outcome {
            id,
            ts_ms,
            outcome,
            intent: Some(copy),
        } => {
            let (status, detail, read_back) = status_of(Some(outcome));
            let (kind, revert_of) = kinds(&copy.kind);
            Some(Entry {
                id: *id,
                ts_ms: *ts_ms,
                address: copy.key.parse().ok()?,
                key: Some(copy.key.clone()),
                before: Some(copy.before.clone()),
                after: copy.after.clone(),
                source: copy.source?,
                reason: LOST_INTENT_REASON.into(),
                kind: kind.into(),
                revert_of,
                status,
                detail,
                read_back,
            })
        }
        Record::Refused {
            id,
            ts_ms,
            address,
            before,
            value,
            source,
            reason,
            refusal,
        } => Some(Entry {
            id: *id,
            ts_ms: *ts_ms,
            address: address.clone(),
            key: None,
            before: before.clone(),
            after: value.clone(),
            source: *source,
            reason: reason.clone(),
            kind: "refused".into(),
            revert_of: None,
            status: "refused".into(),
            detail: Some(refusal.clone()),
            read_back: None,
        }),
        _ => None,
    }
}

/// An intent's kind and the change it undoes, as listed.
fn kinds(kind: &IntentKind) -> (&'static str, Option<u64>) {
    match kind {
        IntentKind::Change => ("change", None),
        IntentKind::Revert { of } => ("revert", *of),
    }
}

/// A change's status, detail and value read back, as listed, from its outcome (if any).
fn status_of(outcome: Option<&Outcome>) -> (String, Option<String>, Option<Value>) {
    match outcome {
        None => ("incomplete".to_string(), None, None),
        Some(Outcome::Applied {
            read_back,
            reconciled,
            why,
        }) => (
            "applied".to_string(),
            why.clone()
                .or_else(|| reconciled.then(|| "found applied on restart".to_string())),
            Some(read_back.clone()),
        ),
        Some(Outcome::Failed { error, left, .. }) => {
            ("failed".to_string(), Some(error.clone()), left.clone())
        }
        Some(Outcome::Reverted { why, read_back }) => {
            ("reverted".to_string(), Some(why.clone()), read_back.clone())
        }
    }
}
