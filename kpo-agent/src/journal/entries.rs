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

/// For each change in `entries` a revert carried out has taken out of the kernel, that
/// revert's id: a revert of change X puts back the value before X, so it takes out every change
/// of the same target from X on made before it (a later change an operator's `kpo revert` of an
/// earlier one overwrote; the changes the guard judged together, reverted from the first: s50
/// review G4). A revert carried out is listed `reverted` (`applied` by earlier versions).
pub fn reverted_by(entries: &[Entry]) -> std::collections::BTreeMap<u64, u64> {
    use std::collections::{BTreeMap, BTreeSet};
    let target = |e: &Entry| e.key.clone().unwrap_or_else(|| target_key(&e.address));
    // A change that took effect: a failed one left nothing to take out (review2 N3), unless its
    // put-back failed too and left its value (review3 R4).
    let took = |c: &Entry| {
        c.kind == "change"
            && match c.status.as_str() {
                "applied" | "incomplete" => true,
                "failed" => c.read_back.is_some(),
                _ => false,
            }
    };
    // Each target's changes not taken out yet: each is taken out once, by the first revert
    // that covers it, so a long journal of reverts is read in O(n log n), not reverts × entries
    // (s56 review1 R1-2: `kpo revert --all` asks this per parameter).
    let mut open: BTreeMap<String, BTreeSet<u64>> = BTreeMap::new();
    let mut out = BTreeMap::new();
    let mut reverts: Vec<&Entry> = Vec::new();
    for e in entries {
        if took(e) {
            open.entry(target(e)).or_default().insert(e.id);
        } else if e.kind == "revert" {
            reverts.push(e);
        }
    }
    reverts.sort_by_key(|r| r.id);
    for r in reverts {
        let (Some(of), "reverted" | "applied") = (r.revert_of, r.status.as_str()) else {
            continue;
        };
        let Some(changes) = open.get_mut(&target(r)) else {
            continue;
        };
        let covered: Vec<u64> = changes.range(of..r.id).copied().collect();
        for c in covered {
            changes.remove(&c);
            out.insert(c, r.id);
        }
    }
    out
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
