//! Changes journaled while no agent ran, sent as `change` events at the next start.
//!
//! The commands run while no agent answers on the socket (`kpo apply`, `kpo revert`) write the
//! kernel and the journal, but have no event stream to write to: a pipeline that audits the
//! kernel's changes through the stream would never see them (story AJ, session 53). A mark in the
//! state directory (`journal/events_mark.rs`), the highest journal id whose events a running
//! agent wrote to its stream, says where they start; the agent moves it once a window's events
//! (and the stop's) are written ([`MarkKeeper`]).
use std::{collections::BTreeSet, time::Duration};

use tracing::warn;

use super::deciding::Deciding;
use crate::{
    change::ChangePath,
    journal::{events_mark, Entry, Record},
    output::{
        change_events::{ChangeEvent, ChangePathEvent, ChangePhase},
        sink::EventSink,
    },
    policy::Source,
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
             changes journaled while no agent ran since the last agent stopped, if any, are not \
             sent as events (kpo journal lists them), and the mark is written anew"
        );
        None
    });
    if let Some(mark) = mark.filter(|&m| m < last) {
        for e in entries_after(path, mark) {
            if settled.contains(&e.id) {
                continue;
            }
            let quarantine = quarantined_by(path, &e);
            if let Some(event) = event_of(&e, quarantine) {
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

/// Moves the mark once the events that carry its changes are written to the stream, not when
/// they are queued: the writer runs behind the loop, and a reader that stalls or goes away
/// loses what was queued (story AJ review, session 53: moved at queueing, a change's only event
/// could be lost for good).
#[derive(Debug, Default)]
pub struct MarkKeeper {
    /// The journal's last id when events were queued, and the events offered by then.
    pending: Option<(u64, u64)>,
}

impl MarkKeeper {
    /// After the loop queued events (the start's, a window's): saves the mark a window before
    /// asked for, once its events are written, and asks for the journal's last id now.
    pub fn after_queued(&mut self, deciding: &mut Deciding, sink: &EventSink) {
        if let Some((id, offered)) = self.pending {
            if !sink.written_through(offered) {
                // Kept, not replaced by a later one: under a writer a window or more behind,
                // each later one would be replaced in turn, and the mark never move.
                return;
            }
            deciding.save_events_mark(id);
            self.pending = None;
        }
        self.pending = Some((deciding.journal_last_id(), sink.offered()));
    }

    /// At the stop, its events queued: saves the mark if they are written within `wait` (a
    /// reader that does not keep up gets them sent again at the next start instead).
    pub fn at_stop(&mut self, deciding: &mut Deciding, sink: &EventSink, wait: Duration) {
        if sink.wait_written_through(sink.offered(), wait) {
            deciding.save_events_mark(deciding.journal_last_id());
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
    let mut after: Vec<Entry> = all
        .into_iter()
        .filter(|e| e.id > mark && seen.insert(e.id))
        .collect();
    // The archive lists a change where it was archived, after some kept live: in id order, as
    // they were made.
    after.sort_by_key(|e| e.id);
    after
}

/// For a revert carried out by an operator, the words of the quarantine of the advisor's value
/// it took out, as its `reverted` event gives them through a running agent (docs/policy.md,
/// `detail`): the journal keeps the quarantine, not the words (s53 storyAL F7). The quarantine
/// is the one such a revert journals (`an operator reverted it ...`), of the value taken out,
/// begun by the revert's time and in force then; a guard's, or one begun after, is not its.
fn quarantined_by(path: &ChangePath, e: &Entry) -> Option<String> {
    if (e.kind.as_str(), e.status.as_str(), e.source) != ("revert", "reverted", Source::Operator) {
        return None;
    }
    let taken_out = e.before.as_ref()?;
    let key = (e.key.clone()).unwrap_or_else(|| crate::journal::target_key(&e.address));
    let until_ms = (path.journal.records().iter().rev()).find_map(|r| match r {
        Record::Quarantine {
            ts_ms,
            key: of,
            value,
            until_ms,
            why,
            ..
        } if *of == key
            && value == taken_out
            && *ts_ms <= e.ts_ms
            && *until_ms > e.ts_ms
            && why.starts_with(crate::change::OPERATORS_QUARANTINE) =>
        {
            Some(*until_ms)
        }
        _ => None,
    })?;
    let until = std::time::UNIX_EPOCH + Duration::from_millis(until_ms);
    Some(crate::change::quarantine_words(taken_out, until))
}

/// The start of the `detail` of an event sent at a start from the journal.
pub const SENT_AT_START: &str = "sent at start from the journal";

/// The event of an entry journaled while no agent ran: its phase as it ended, and when it was
/// journaled in `detail`. None for one still incomplete (reconciliation settles it, or the next
/// start).
pub fn event_of(e: &Entry, quarantine: Option<String>) -> Option<ChangeEvent> {
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
        detail: Some(
            std::iter::once(when)
                .chain(e.detail.clone())
                .chain(quarantine)
                .collect::<Vec<_>>()
                .join(": "),
        ),
    })
}
