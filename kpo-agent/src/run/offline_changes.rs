//! Changes journaled while no agent ran, sent as `change` events at the next start.
//!
//! The commands run while no agent answers on the socket (`kpo apply`, `kpo revert`) write the
//! kernel and the journal, but have no event stream to write to: a pipeline that audits the
//! kernel's changes through the stream would never see them (story AJ, session 53). A mark in the
//! state directory, the highest journal id a running agent knew, says where they start; the
//! agent keeps it at every window that journaled something, and at its stop.
use std::collections::BTreeSet;

use tracing::warn;

use crate::{
    change::ChangePath,
    journal::{events_mark, Entry},
    output::change_events::{ChangeEvent, ChangePathEvent, ChangePhase},
};

/// Sends, through `path`'s event sink, one `change` event for each change or refusal journaled
/// after the mark, except `settled` (reconciliation at this start sent its own). Returns the mark
/// on disk: the one read when events were sent, which the agent moves once they are written to
/// the stream (moved now, a kill before they are written would lose them for good); else the
/// journal's last id, saved now (`None`: it could not be, logged). A mark above the journal's
/// last id was taken at the journal's open as a witness of lost records, so ids go on after it.
pub fn announce(path: &mut ChangePath, settled: &BTreeSet<u64>) -> Option<u64> {
    let dir = path.journal.dir().to_path_buf();
    let last = path.journal.last_id();
    let mark = events_mark::load(&dir).unwrap_or_else(|e| {
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
        return Some(mark);
    }
    match events_mark::save(&dir, last) {
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
    // Ids are handed out in order, each to a change or a refusal; one after the mark that the
    // live journal lacks may have been archived (or lost to damage, or kept from use: then the
    // archive lacks it too, and reading it finds nothing more).
    if (mark + 1..=path.journal.last_id()).all(|id| ids.contains(&id)) {
        return live;
    }
    let (all, _) = path.journal.all_entries();
    let mut seen = BTreeSet::new();
    all.into_iter()
        .filter(|e| e.id > mark && seen.insert(e.id))
        .collect()
}

/// The start of the `detail` of an event sent at a start from the journal.
pub const SENT_AT_START: &str = "sent at start from the journal";

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
        "{SENT_AT_START} (journaled at {}, while no agent ran or by an agent stopped before it \
         marked its events sent)",
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
