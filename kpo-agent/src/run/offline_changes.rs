//! Changes journaled while no agent ran, sent as `change` events at the next start.
//!
//! The commands run while no agent answers on the socket (`kpo apply`, `kpo revert`) write the
//! kernel and the journal, but have no event stream to write to: a pipeline that audits the
//! kernel's changes through the stream would never see them (story AJ, session 53). A mark in the
//! state directory, the highest journal id a running agent knew, says where they start; the
//! agent keeps it at every window that journaled something, and at its stop.
use std::{collections::BTreeSet, path::Path};

use serde::{Deserialize, Serialize};
use tracing::warn;

use crate::{
    change::ChangePath,
    journal::{Entry, JournalError},
    output::change_events::{ChangeEvent, ChangePathEvent, ChangePhase},
};

/// The mark's file in the state directory.
pub const MARK_FILE: &str = "events-mark.json";

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
struct Mark {
    /// Every journal id up to this one was known to a running agent.
    journal_id: u64,
}

/// The highest journal id an earlier agent knew; `None` without a file: a state directory no
/// agent of this version ran on, whose journal the stream may never have carried (an upgrade
/// does not send a whole history).
pub fn load(dir: &Path) -> Result<Option<u64>, String> {
    let path = dir.join(MARK_FILE);
    let bytes = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    let mark: Mark =
        serde_json::from_slice(&bytes).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(Some(mark.journal_id))
}

pub fn save(dir: &Path, journal_id: u64) -> Result<(), JournalError> {
    let mut bytes = serde_json::to_vec(&Mark { journal_id }).expect("plain data");
    bytes.push(b'\n');
    crate::journal::store::replace(dir, MARK_FILE, &bytes)
}

/// Sends, through `path`'s event sink, one `change` event for each change or refusal journaled
/// after the mark, except `settled` (reconciliation at this start sent its own); then moves the
/// mark to the journal's last id. Returns the mark saved (`None`: it could not be, logged).
pub fn announce(path: &mut ChangePath, settled: &BTreeSet<u64>) -> Option<u64> {
    let dir = path.journal.dir().to_path_buf();
    let last = path.journal.last_id();
    let mark = load(&dir).unwrap_or_else(|e| {
        warn!(
            "events: the mark of the changes the event stream carried cannot be read ({e}); \
             changes journaled while no agent ran are not sent as events this time"
        );
        None
    });
    if let Some(mark) = mark.filter(|&m| m < last) {
        for e in entries_after(path, mark) {
            if settled.contains(&e.id) {
                continue;
            }
            if let Some(event) = event_of(&e) {
                path.send_other(ChangePathEvent::Change(event));
            }
        }
    }
    match save(&dir, last) {
        Ok(()) => Some(last),
        Err(e) => {
            warn!(
                "events: cannot keep the mark of the changes the event stream carried ({e}); \
                 tried again every window"
            );
            None
        }
    }
}

/// The entries after id `mark`, oldest first: from the live journal when it holds every id
/// after the mark, else from the archive too (a change made over a day before this start was
/// archived by its open).
fn entries_after(path: &ChangePath, mark: u64) -> Vec<Entry> {
    let live: Vec<Entry> = path
        .journal
        .entries_from(0)
        .filter(|e| e.id > mark)
        .collect();
    let ids: BTreeSet<u64> = live.iter().map(|e| e.id).collect();
    let first_live = ids.first().copied().unwrap_or(u64::MAX);
    // Ids are handed out in order, each to a change or a refusal; one missing between the mark
    // and the first live one may have been archived (or lost to damage: then it is not in the
    // archive either, and the read finds nothing more).
    if first_live == mark + 1 {
        return live;
    }
    let (all, _) = path.journal.all_entries();
    let mut seen = BTreeSet::new();
    all.into_iter()
        .filter(|e| e.id > mark && seen.insert(e.id))
        .collect()
}

/// The event of an entry journaled while no agent ran: its phase as it ended, and when it was
/// journaled in `detail`. None for one still incomplete (reconciliation settles it, or the next
/// start).
pub fn event_of(e: &Entry) -> Option<ChangeEvent> {
    // A revert carried out is journaled `reverted`, as is a change put back.
    let phase = match e.status.as_str() {
        "applied" => ChangePhase::Applied,
        "failed" => ChangePhase::Failed,
        "reverted" => ChangePhase::Reverted,
        "refused" => ChangePhase::Refused,
        _ => return None,
    };
    let when = format!(
        "journaled while no agent ran, at {}",
        crate::journal::format_ms(e.ts_ms)
    );
    Some(ChangeEvent {
        phase,
        target: e.address.clone(),
        before: e.before.clone(),
        after: e.after.clone(),
        source: e.source,
        reason: e.reason.clone(),
        journal_id: Some(e.id),
        decision: None,
        refusal: None,
        read_back: e.read_back.clone(),
        detail: Some(match &e.detail {
            Some(d) => format!("{when}: {d}"),
            None => when,
        }),
    })
}
