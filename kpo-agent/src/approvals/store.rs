//! Pending approvals and the recommendation history, in the state directory as `approvals.log`:
//! the journal's format (one `CRC32 JSON` line per record, each appended with fdatasync; a torn or
//! damaged line dropped with a warning, the damaged file kept aside, docs/journal.md) with its own
//! records. An approval is stored whole each time it changes; the last copy wins on load.
//!
//! One writer: the store is opened from an open [`Journal`], whose lock on the state directory
//! its holder keeps for as long as it keeps the store. The file is bounded: past
//! [`MAX_RECORDS`] lines it is compacted (rewritten to a temporary file, fsynced, renamed over,
//! directory fsynced) to every pending approval, every rejection still in force, the latest
//! resolved ones and the latest history.
use std::{
    collections::{BTreeMap, BTreeSet, VecDeque},
    path::{Path, PathBuf},
    time::Duration,
};

use serde::{Deserialize, Serialize};
use tracing::warn;

use super::{ApprovalItem, ApprovalState, Done, HistoryEntry};
use crate::journal::{
    now_ms,
    store::{load_as_is, load_repairing, rewrite, Appender, Loaded},
    Journal, JournalError,
};

pub const APPROVALS_FILE: &str = "approvals.log";
/// Lines before the file is compacted.
pub const MAX_RECORDS: usize = 4096;
/// History entries kept (in memory and by compaction).
pub const HISTORY_KEPT: usize = 1024;
/// Resolved approvals kept by compaction (pending ones, and rejections still in force, are
/// always kept besides).
pub const RESOLVED_KEPT: usize = 256;

/// One line of `approvals.log`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Record {
    /// An approval as it stands now (created, refreshed or resolved).
    Approval(Box<Stored>),
    /// What was done with one recommendation.
    History(Box<HistoryEntry>),
    /// A damaged line dropped at recovery named approval `id`, above every intact record's: it
    /// may have been its only copy, and an operator may still act on the webhook's text about
    /// it, so the id is never handed out again.
    IdTaken { id: String, why: String },
}

/// An approval as its line holds it: the approval, and what only the store keeps of it (never
/// in an event, a reply or a webhook post).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stored {
    #[serde(flatten)]
    pub item: ApprovalItem,
    /// Resolved where neither the event stream nor the webhook heard of it (the CLI while the
    /// agent was down): the agent's next start announces it, then stores it again without the
    /// mark. Absent, as in an older KPO's file: announced, so that an upgrade does not post every
    /// old resolution at once.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub unannounced: bool,
    /// A rejection's hold (ms): the `expire_after` in force when it was made, for which the same
    /// advice does not ask again; a later reload does not change it. Absent, as in an older
    /// KPO's file: the `expire_after` in force.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hold_ms: Option<u64>,
}

impl Stored {
    fn record(item: ApprovalItem, unannounced: bool) -> Record {
        Record::Approval(Box::new(Stored {
            item,
            unannounced,
            hold_ms: None,
        }))
    }
}

/// The approvals and history, open for appending.
pub struct ApprovalStore {
    dir: PathBuf,
    path: PathBuf,
    /// `None` when the state directory cannot be written ([`ApprovalStore::open`] of a journal
    /// open to read only).
    file: Option<Appender>,
    /// Lines in the file now.
    lines: usize,
    /// Lines past which the file is compacted ([`MAX_RECORDS`]).
    limit: usize,
    /// After a failed compaction, the line count at which it is tried again.
    retry_at: Option<usize>,
    /// How long a rejection keeps the same advice from asking again (`[approvals]
    /// expire_after`): compaction must not forget one sooner.
    rejection_in_force: Duration,
    items: BTreeMap<u64, ApprovalItem>,
    /// The resolved approvals marked [`Stored::unannounced`].
    unannounced: BTreeSet<u64>,
    /// The rejections' [`Stored::hold_ms`].
    holds: BTreeMap<u64, u64>,
    history: VecDeque<HistoryEntry>,
    next_id: u64,
    /// The highest id an [`Record::IdTaken`] keeps from being handed out again.
    taken: Option<u64>,
    warnings: Vec<String>,
    /// Test hook: the next `put` of this approval fails like a full disk (nothing written).
    #[cfg(test)]
    pub(crate) fail_put_of: Option<String>,
}

impl std::fmt::Debug for ApprovalStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApprovalStore")
            .field("path", &self.path)
            .field("items", &self.items.len())
            .finish()
    }
}

/// Records appended after a failed compaction before it is tried again.
const COMPACT_RETRY: usize = 1000;

/// Every approval id `"ap-N"` in KPO's own form a line shows, read without trusting it (a
/// damaged line).
fn ids_named(line: &[u8]) -> impl Iterator<Item = u64> + '_ {
    const OPEN: &[u8] = b"\"ap-";
    line.windows(OPEN.len())
        .enumerate()
        .filter(|(_, w)| *w == OPEN)
        .filter_map(move |(at, _)| {
            let rest = &line[at + 1..];
            let end = rest.iter().skip(1).position(|&b| b == b'"')? + 1;
            let id = std::str::from_utf8(&rest[..end]).ok()?;
            number(id).filter(|&n| n < crate::journal::MAX_ID)
        })
}

fn number(id: &str) -> Option<u64> {
    // Only the form KPO writes: `ap-007` or `ap-+7` would share a slot with `ap-7`.
    let n: u64 = id.strip_prefix("ap-")?.parse().ok()?;
    (format!("ap-{n}") == id).then_some(n)
}

/// The records that keep what the damaged lines dropped at recovery may have held, each with its
/// warning, for the rewrite that drops them (`path` names the file in the warnings):
/// - the highest approval id they still show (`"ap-N"`, read without trusting the line) above
///   every intact one, as taken ([`Record::IdTaken`]), so that the next approval does not get an
///   id an operator may still act on;
/// - a cleared copy of each approval still pending whose last copy comes before the first
///   damaged line: that line may have been its rejection or approval, and an earlier, pending
///   copy must not come back as a question an operator already answered (its advisor asks again
///   if the advice still holds).
fn damage_records(path: &Path, found: &Loaded<Record>) -> Vec<(Record, String)> {
    let valid = |id: &str| number(id).filter(|&n| n < crate::journal::MAX_ID);
    let next_id = found
        .records
        .iter()
        .filter_map(|r| match r {
            Record::Approval(stored) => valid(&stored.item.id),
            Record::IdTaken { id, .. } => valid(id),
            Record::History(_) => None,
        })
        .max()
        .map_or(1, |n| n + 1);
    let mut out = Vec::new();
    let taken = found
        .damaged
        .iter()
        .flat_map(|(line, bytes)| ids_named(bytes).map(move |n| (n, *line)))
        .max()
        .filter(|(n, _)| *n >= next_id);
    if let Some((n, line)) = taken {
        let id = format!("ap-{n}");
        let why = format!(
            "{} line {line}, damaged, named approval {id}: it is not handed out again",
            path.display()
        );
        out.push((
            Record::IdTaken {
                id,
                why: why.clone(),
            },
            why,
        ));
    }
    let Some(damage) = found.first_damage else {
        return out;
    };
    // Each approval's last copy, and where it is.
    let mut last: BTreeMap<u64, (usize, &ApprovalItem)> = BTreeMap::new();
    for (at, r) in found.records.iter().enumerate() {
        if let Record::Approval(stored) = r {
            if let Some(n) = valid(&stored.item.id) {
                last.insert(n, (at, &stored.item));
            }
        }
    }
    let suspect = last
        .into_values()
        .filter(|(at, item)| *at < damage && item.state == ApprovalState::Pending);
    for (_, item) in suspect {
        let mut item = item.clone();
        item.state = ApprovalState::Cleared {
            why: "the approvals file was damaged after its last record, which may have \
                  resolved it; its advisor asks again if the advice still holds"
                .into(),
        };
        item.resolved_ms = Some(now_ms());
        let warning = format!(
            "approval {} cleared: the approvals file was damaged after its last record",
            item.id
        );
        out.push((Stored::record(item, false), warning));
    }
    out
}

impl ApprovalStore {
    /// A reloaded policy's `expire_after`, for the compactions from now on.
    pub fn set_rejection_in_force(&mut self, rejection_in_force: Duration) {
        self.rejection_in_force = rejection_in_force;
    }

    /// Opens (creating) the store in the journal's state directory. The journal's lock is the
    /// store's: keep the journal open as long as the store. A rejection keeps the same advice
    /// from asking again for `rejection_in_force` after it was made.
    /// With a journal open to read only ([`Journal::open_read_only`]), the file is read as it is
    /// on disk, not repaired, compacted nor appended to: what is recorded is folded in memory only
    /// ([`ApprovalStore::append`]).
    pub fn open(journal: &Journal, rejection_in_force: Duration) -> Result<Self, JournalError> {
        let mut store = Self::open_in(journal.dir(), rejection_in_force, journal.is_read_only())?;
        store.keep_ids_the_journal_names(journal)?;
        Ok(store)
    }

    /// An approval the journal names (an approved change's reason, `approved by WHO (ap-4):
    /// ...`) past every id this file has: the file lost records (emptied, deleted, restored from
    /// an older copy), which its own recovery cannot tell. Said, and the ids up to it are not
    /// handed out again (an `id_taken` record): an operator's `kpo approve ap-1` from an old
    /// notification must not approve new advice (s50 storyW W4).
    fn keep_ids_the_journal_names(&mut self, journal: &Journal) -> Result<(), JournalError> {
        let named = (journal.intents_after(None))
            .filter(|i| i.reason.starts_with("approved by "))
            .filter_map(|i| approval_named_in(&i.reason))
            .max();
        let Some(highest) = named.filter(|&n| n >= self.next_id && n < crate::journal::MAX_ID)
        else {
            return Ok(());
        };
        let why = format!(
            "the journal names approval ap-{highest}, and {} has {}: it has lost records \
             (emptied, deleted, or restored from an older copy?); pending approvals it held are \
             asked again when their advice comes back, and no id up to ap-{highest} is handed \
             out again",
            APPROVALS_FILE,
            match self.next_id - 1 {
                0 => "none".to_string(),
                n => format!("ap-{n} at most"),
            }
        );
        warn!("approvals: {why}");
        self.warnings.push(why.clone());
        self.append(Record::IdTaken {
            id: format!("ap-{highest}"),
            why,
        })
    }

    fn open_in(
        dir: &Path,
        rejection_in_force: Duration,
        read_only: bool,
    ) -> Result<Self, JournalError> {
        let (loaded, file) = if read_only {
            let path = dir.join(APPROVALS_FILE);
            let loaded = load_as_is(dir, APPROVALS_FILE, |found| damage_records(&path, found))?;
            (loaded, None)
        } else {
            let loaded = Self::load_repaired(dir)?;
            (loaded, Some(Appender::open(dir, APPROVALS_FILE)?))
        };
        let mut store = ApprovalStore {
            dir: dir.to_path_buf(),
            path: dir.join(APPROVALS_FILE),
            file,
            lines: loaded.records.len(),
            limit: MAX_RECORDS,
            retry_at: None,
            rejection_in_force,
            items: BTreeMap::new(),
            unannounced: BTreeSet::new(),
            holds: BTreeMap::new(),
            history: VecDeque::new(),
            next_id: 1,
            taken: None,
            warnings: loaded.warnings,
            #[cfg(test)]
            fail_put_of: None,
        };
        for r in loaded.records {
            store.fold(r);
        }
        if store.lines > store.limit && !read_only {
            store.compact_or_warn();
        }
        Ok(store)
    }

    /// Reads the file, dropping damaged lines: the damaged file is kept aside, and the rewrite
    /// that drops them also holds what they may have held that must not be lost with them
    /// ([`damage_records`]), so that no crash leaves the lines gone and those records unwritten.
    fn load_repaired(dir: &Path) -> Result<Loaded<Record>, JournalError> {
        let path = dir.join(APPROVALS_FILE);
        load_repairing(dir, APPROVALS_FILE, |found| damage_records(&path, found))
    }

    /// What recovery found on open (empty for a clean file).
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    fn fold(&mut self, r: Record) {
        match r {
            Record::Approval(stored) => {
                let Stored {
                    item,
                    unannounced,
                    hold_ms,
                } = *stored;
                match number(&item.id).filter(|&n| n < crate::journal::MAX_ID) {
                    Some(n) => {
                        self.next_id = self.next_id.max(n + 1);
                        if unannounced {
                            self.unannounced.insert(n);
                        } else {
                            self.unannounced.remove(&n);
                        }
                        match hold_ms {
                            Some(hold) => self.holds.insert(n, hold),
                            None => self.holds.remove(&n),
                        };
                        self.items.insert(n, item);
                    }
                    None => self.warnings.push(format!(
                        "an approval with id {:?} is set aside: KPO's ids are ap-1, ap-2, ...",
                        item.id
                    )),
                }
            }
            Record::History(h) => {
                // What was done replaces the entry written before the change was made.
                let under_way = self.history.iter().rposition(|e| {
                    e.done == Done::UnderWay && e.recommendation.id == h.recommendation.id
                });
                if let Some(at) = under_way {
                    self.history[at] = *h;
                    return;
                }
                self.history.push_back(*h);
                while self.history.len() > HISTORY_KEPT {
                    self.history.pop_front();
                }
            }
            Record::IdTaken { id, .. } => {
                if let Some(n) = number(&id).filter(|&n| n < crate::journal::MAX_ID) {
                    self.next_id = self.next_id.max(n + 1);
                    self.taken = self.taken.max(Some(n));
                }
            }
        }
    }

    /// Appends (fsync) then folds a record; read-only, only folds it. Only reading commands open
    /// the store read-only, and what the desk records as they open and list (an approval the
    /// journal shows applied, one past its time) is then shown as it stands, not as the file last
    /// had it; no operator's decision is taken there (approving journals, and the journal
    /// refuses; rejecting is never opened read-only).
    fn append(&mut self, r: Record) -> Result<(), JournalError> {
        let Some(file) = self.file.as_mut() else {
            self.fold(r);
            return Ok(());
        };
        if file.is_poisoned() {
            match file.reopen_after_failure(&self.dir, APPROVALS_FILE) {
                Ok(reopened) => *file = reopened,
                Err(e) => {
                    file.poison();
                    return Err(e);
                }
            }
        }
        file.append(&r)?;
        self.lines += 1;
        self.fold(r);
        if self.lines > self.limit && self.retry_at.is_none_or(|at| self.lines > at) {
            self.compact_or_warn();
        }
        Ok(())
    }

    /// Compaction is housekeeping: the record just appended is durable whether or not it works
    /// (a full disk fails the rewrite long before a one-line append), so a failure is a warning,
    /// and the next try waits for another `COMPACT_RETRY` records.
    fn compact_or_warn(&mut self) {
        if let Err(e) = self.compact() {
            warn!(
                "approvals: compacting {} failed ({e}); its records stay as they are, and it is \
                 tried again after {COMPACT_RETRY} more",
                self.path.display()
            );
            self.retry_at = Some(self.lines + COMPACT_RETRY);
        }
    }

    /// A fresh id, `ap-N`.
    pub fn new_id(&mut self) -> String {
        let id = format!("ap-{}", self.next_id);
        self.next_id += 1;
        id
    }

    /// Makes an approval's new state durable.
    pub fn put(&mut self, item: ApprovalItem) -> Result<(), JournalError> {
        self.put_marked(item, false, None)
    }

    /// [`ApprovalStore::put`], marked [`Stored::unannounced`] or not, and with a rejection's
    /// [`Stored::hold_ms`].
    pub fn put_marked(
        &mut self,
        item: ApprovalItem,
        unannounced: bool,
        hold: Option<Duration>,
    ) -> Result<(), JournalError> {
        #[cfg(test)]
        if self.fail_put_of.as_ref() == Some(&item.id) {
            self.fail_put_of = None;
            if let Some(file) = self.file.as_mut() {
                file.fail_after = Some(0);
            }
        }
        self.append(Record::Approval(Box::new(Stored {
            item,
            unannounced,
            hold_ms: hold.map(|h| h.as_millis() as u64),
        })))
    }

    /// The approvals whose last state (an end, or a new pending approval) the event stream, or
    /// the webhook, may not have heard of yet ([`Stored::unannounced`]), oldest first.
    pub fn unannounced(&self) -> impl Iterator<Item = &ApprovalItem> {
        self.unannounced.iter().filter_map(|n| self.items.get(n))
    }

    /// Stores `id` again without its [`Stored::unannounced`] mark: it was announced.
    pub fn mark_announced(&mut self, id: &str) -> Result<(), JournalError> {
        let Some(n) = number(id) else { return Ok(()) };
        match self.items.get(&n).cloned() {
            Some(item) => {
                let hold = self.holds.get(&n).map(|&ms| Duration::from_millis(ms));
                self.put_marked(item, false, hold)
            }
            None => Ok(()),
        }
    }

    /// The highest journal id the approvals file in `dir` names (an approved approval's change,
    /// or what a recommendation became), read as it is on disk: a witness of changes the journal
    /// should hold ([`Journal::keep_ids_named_elsewhere`]). `None` without such an id, or a file
    /// that cannot be read (its own open says why).
    pub fn highest_journal_id_in(dir: &Path) -> Option<u64> {
        let store = Self::open_in(dir, Duration::ZERO, true).ok()?;
        let approved = store.items().filter_map(|i| match i.state {
            ApprovalState::Approved { journal_id, .. } => journal_id,
            _ => None,
        });
        let done = store.history().filter_map(|h| h.journal_id);
        approved.chain(done).max()
    }

    /// Makes a history entry durable.
    pub fn record(&mut self, entry: HistoryEntry) -> Result<(), JournalError> {
        self.append(Record::History(Box::new(entry)))
    }

    pub fn item(&self, id: &str) -> Option<&ApprovalItem> {
        self.items.get(&number(id)?)
    }

    /// Every approval kept, oldest first.
    pub fn items(&self) -> impl DoubleEndedIterator<Item = &ApprovalItem> {
        self.items.values()
    }

    pub fn pending(&self) -> impl Iterator<Item = &ApprovalItem> {
        self.items
            .values()
            .filter(|i| i.state == ApprovalState::Pending)
    }

    /// The history, oldest first.
    pub fn history(&self) -> impl DoubleEndedIterator<Item = &HistoryEntry> {
        self.history.iter()
    }

    /// Whether a rejection still keeps the same advice from asking again (the desk's
    /// `rejected_lately`): forgetting it would ask the operator again the question just refused.
    pub fn rejection_in_force(&self, item: &ApprovalItem, now: u64) -> bool {
        let made = item.resolved_ms.unwrap_or(item.updated_ms);
        let hold = self.asks_again(item).saturating_sub(made);
        // One made before the clock stepped back is over ([`crate::clock`]).
        matches!(item.state, ApprovalState::Rejected { .. }) && crate::clock::runs(made, hold, now)
    }

    /// When a rejected approval's advice may ask again: its hold after the rejection (the
    /// `expire_after` in force when it was made; for one stored without, the one in force now).
    pub fn asks_again(&self, rejected: &ApprovalItem) -> u64 {
        let hold = number(&rejected.id)
            .and_then(|n| self.holds.get(&n).copied())
            .unwrap_or(self.rejection_in_force.as_millis() as u64);
        rejected
            .resolved_ms
            .unwrap_or(rejected.updated_ms)
            .saturating_add(hold)
    }

    /// Rewrites the file with what is kept: pending approvals, rejections still in force, the
    /// latest resolved ones, the latest history. Atomic: a crash leaves the old file or the new
    /// one.
    fn compact(&mut self) -> Result<(), JournalError> {
        let now = now_ms();
        let resolved: Vec<u64> = self
            .items
            .iter()
            .filter(|(n, i)| {
                i.state != ApprovalState::Pending
                    && !self.rejection_in_force(i, now)
                    && !self.unannounced.contains(n)
            })
            .map(|(n, _)| *n)
            .collect();
        let drop = resolved.len().saturating_sub(RESOLVED_KEPT);
        for n in &resolved[..drop] {
            self.items.remove(n);
        }
        // The approvals kept may all be below an id taken by a damaged line.
        let taken = self
            .taken
            .filter(|&n| self.items.keys().next_back().is_none_or(|&kept| kept < n))
            .map(|n| Record::IdTaken {
                id: format!("ap-{n}"),
                why: "named by a damaged line; kept by compaction".into(),
            });
        let kept: Vec<Record> = taken
            .into_iter()
            .chain(self.items.iter().map(|(n, i)| {
                Record::Approval(Box::new(Stored {
                    item: i.clone(),
                    unannounced: self.unannounced.contains(n),
                    hold_ms: self.holds.get(n).copied(),
                }))
            }))
            .chain(
                self.history
                    .iter()
                    .cloned()
                    .map(|h| Record::History(Box::new(h))),
            )
            .collect();
        let rewritten = rewrite(&self.dir, APPROVALS_FILE, &kept);
        // Whether or not the rewrite got as far as its rename (it can fail after it, syncing the
        // directory), append to the file that has the name now: the one the appender holds may
        // have been renamed over, and appends to it would be lost.
        self.reopen()?;
        rewritten?;
        self.lines = kept.len();
        // What is kept (pending approvals, rejections in force, history) can itself be over the
        // limit: the next compaction waits for new records, or every append would rewrite it.
        self.retry_at = (self.lines > self.limit).then(|| {
            warn!(
                "approvals: {} records are still in force after compacting, over the {} that \
                 start a compaction; the next one waits for {COMPACT_RETRY} more",
                self.lines, self.limit
            );
            self.lines + COMPACT_RETRY
        });
        Ok(())
    }

    /// Opens the file under its name again, cut back to its last complete line (a failed append
    /// that poisoned the appender may have left part of one); until that works, appends fail
    /// rather than go to a file that may no longer have one, or be glued to a partial line.
    fn reopen(&mut self) -> Result<(), JournalError> {
        match Appender::open_trimmed(&self.dir, APPROVALS_FILE) {
            Ok(file) => {
                self.file = Some(file);
                Ok(())
            }
            Err(e) => {
                if let Some(file) = self.file.as_mut() {
                    file.poison();
                }
                Err(e)
            }
        }
    }
}

/// The approval an approved change's reason names: `approved by WHO (ap-4): ...`.
fn approval_named_in(reason: &str) -> Option<u64> {
    let at = reason.find("): ")?;
    let open = reason[..at].rfind("(ap-")?;
    reason[open + "(ap-".len()..at].parse().ok()
}

#[cfg(test)]
pub(crate) mod tests {
    use std::{
        fs::{self, OpenOptions},
        io::Write,
    };

    use super::*;
    use crate::journal::store::encode;
    use crate::{
        actuate::param::Value,
        advise::recommendation::{Source, WindowRef},
    };

    const HOUR: Duration = Duration::from_secs(3600);

    pub(crate) fn item(id: &str, value: i64) -> ApprovalItem {
        ApprovalItem {
            id: id.into(),
            parameter: "net.core.somaxconn@netns:4026531999".parse().unwrap(),
            key: "net.core.somaxconn@netns:4026531999".into(),
            netns_cookie: None,
            value: Value::Int(value.into()),
            current_value: Some(Value::Int(16)),
            source: Source::Rules,
            recommendation_id: "rules-1-00000000".into(),
            reason: "test".into(),
            confidence: 0.9,
            window: WindowRef {
                index: 1,
                end: "2026-01-01T00:00:00Z".into(),
            },
            held_by: "policy".into(),
            created_ms: 1,
            updated_ms: 1,
            expires_ms: 4_102_444_800_000, // 2100-01-01
            refreshed: 0,
            resolved_ms: None,
            state: ApprovalState::Pending,
            approving_now: None,
        }
    }

    /// An approvals file emptied or deleted while the journal names an approved change's
    /// approval: said, and its id not handed out again (s50 storyW W4: ap-1 was given to new
    /// advice, and an old notification's `kpo approve ap-1` would have approved it).
    #[test]
    fn approvals_lost_while_the_journal_names_one_do_not_hand_its_id_out_again() {
        use crate::journal::{Holder, IntentKind};
        assert_eq!(
            approval_named_in("approved by operator alice (uid 0, pid 7) (ap-4): dropped (24)"),
            Some(4)
        );
        assert_eq!(approval_named_in("approved by (ap-x): y"), None);
        let dir = tempfile::tempdir().unwrap();
        crate::journal::store::make_private(dir.path());
        let mut journal = Journal::open(dir.path(), Holder::Agent, Duration::ZERO).unwrap();
        journal
            .record_intent(
                &"net.core.somaxconn".parse().unwrap(),
                &Value::Int(16),
                &Value::Int(32),
                crate::policy::Source::Rules,
                "approved by operator (uid 0, pid 7) (ap-4): listener dropped 24",
                IntentKind::Change,
            )
            .unwrap();
        let mut s = ApprovalStore::open(&journal, HOUR).unwrap();
        assert_eq!(
            s.warnings(),
            [
                "the journal names approval ap-4, and approvals.log has none: it has lost records \
              (emptied, deleted, or restored from an older copy?); pending approvals it held are \
              asked again when their advice comes back, and no id up to ap-4 is handed out again"
            ]
        );
        assert_eq!(s.new_id(), "ap-5");
        drop(s);
        let mut s = ApprovalStore::open(&journal, HOUR).unwrap();
        assert!(s.warnings().is_empty(), "{:?}", s.warnings());
        assert_eq!(s.new_id(), "ap-5", "kept in the file");
    }

    /// A journal that lost records (restored from an older copy, emptied, deleted) while the
    /// approvals name a change of them: said at open, and the ids not handed out again (s50
    /// storyW W2: the next change took #19 and #20 again, and ap-4's "journal #20" named it).
    #[test]
    fn a_journal_that_lost_the_changes_the_approvals_name_does_not_hand_their_ids_out_again() {
        use crate::journal::{Holder, IntentKind};
        let intent = |j: &mut Journal| {
            j.record_intent(
                &"net.core.somaxconn".parse().unwrap(),
                &Value::Int(16),
                &Value::Int(32),
                crate::policy::Source::Operator,
                "test",
                IntentKind::Change,
            )
            .unwrap()
        };
        let lost = |last: &str| {
            format!(
                "approvals.log names change #3, and {last}: the journal has lost records \
                 (restored from an older copy, cut short, emptied or deleted?). KPO does not \
                 know the changes it lost: a value one of them left in the kernel reads as \
                 someone else's, and kpo revert --all does not put it back; compare kpo journal \
                 and kpo explain with the kernel. No id up to #3 is handed out again"
            )
        };
        for kept in [0, 1] {
            let dir = tempfile::tempdir().unwrap();
            crate::journal::store::make_private(dir.path());
            {
                let mut j = Journal::open(dir.path(), Holder::Cli, Duration::ZERO).unwrap();
                for _ in 0..3 {
                    intent(&mut j);
                }
            }
            let mut s = ApprovalStore::open_in(dir.path(), HOUR, false).unwrap();
            let mut approved = item(&s.new_id(), 32);
            approved.state = ApprovalState::Approved {
                by: "op".into(),
                journal_id: Some(3),
                status: crate::change::ChangeStatus::Applied,
            };
            s.put(approved).unwrap();
            drop(s);
            assert!(Journal::open(dir.path(), Holder::Cli, Duration::ZERO)
                .unwrap()
                .warnings()
                .is_empty());
            // The journal as a restore of an older copy leaves it: its first `kept` lines.
            let journal = dir.path().join(crate::journal::store::JOURNAL_FILE);
            let text = fs::read_to_string(&journal).unwrap();
            let older: String = text.split_inclusive('\n').take(kept).collect();
            fs::write(&journal, older).unwrap();
            let said = lost(if kept == 0 {
                "it has none"
            } else {
                "its last is #1"
            });
            let read_only = Journal::open_read_only(dir.path()).unwrap();
            assert_eq!(read_only.warnings(), [said.as_str()]);
            {
                let mut j = Journal::open(dir.path(), Holder::Cli, Duration::ZERO).unwrap();
                assert_eq!(j.warnings(), [said.as_str()]);
                assert_eq!(intent(&mut j), 4, "kept {kept}");
            }
            let mut j = Journal::open(dir.path(), Holder::Cli, Duration::ZERO).unwrap();
            assert!(j.warnings().is_empty(), "{:?}", j.warnings());
            assert_eq!(intent(&mut j), 5);
        }
    }

    #[test]
    fn approvals_survive_reopening_and_the_last_copy_wins() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut s = ApprovalStore::open_in(dir.path(), HOUR, false).unwrap();
            let a = s.new_id();
            let b = s.new_id();
            assert_eq!((a.as_str(), b.as_str()), ("ap-1", "ap-2"));
            s.put(item(&a, 32)).unwrap();
            s.put(item(&b, 64)).unwrap();
            let mut done = item(&a, 32);
            done.state = ApprovalState::Rejected {
                by: "op".into(),
                why: Some("not now".into()),
            };
            s.put(done).unwrap();
        }
        let mut s = ApprovalStore::open_in(dir.path(), HOUR, false).unwrap();
        assert!(s.warnings().is_empty());
        assert_eq!(
            s.pending().map(|i| i.id.as_str()).collect::<Vec<_>>(),
            ["ap-2"]
        );
        assert_eq!(s.item("ap-1").unwrap().state.name(), "rejected");
        assert_eq!(s.new_id(), "ap-3", "ids are never reused");
    }

    /// An end resolved where nobody heard of it (the CLI's, while the agent was down) stays
    /// marked across opens and a compaction until it is marked announced, once; an older KPO's
    /// line, which has no mark, is announced already (an upgrade posts no old resolution), and
    /// the line of an approval without the mark is what an older KPO wrote.
    #[test]
    fn an_unannounced_end_stays_marked_until_announced_and_old_lines_are_announced() {
        let dir = tempfile::tempdir().unwrap();
        let rejected = |id: &str| ApprovalItem {
            resolved_ms: Some(1),
            state: ApprovalState::Rejected {
                by: "op".into(),
                why: None,
            },
            ..item(id, 32)
        };
        // ap-1's line as an older KPO wrote it: the approval's fields and its type.
        let mut old = serde_json::to_value(rejected("ap-1")).unwrap();
        old["type"] = "approval".into();
        let old = encode(&old);
        assert_eq!(
            serde_json::from_slice::<serde_json::Value>(&old[9..]).unwrap(),
            serde_json::from_slice::<serde_json::Value>(
                &encode(&Stored::record(rejected("ap-1"), false))[9..]
            )
            .unwrap(),
            "without the mark, the line is an older KPO's"
        );
        fs::write(dir.path().join(APPROVALS_FILE), old).unwrap();
        let mut s = ApprovalStore::open_in(dir.path(), HOUR, false).unwrap();
        assert_eq!(s.unannounced().count(), 0, "an older KPO's end: announced");
        let id = s.new_id();
        s.put_marked(rejected(&id), true, None).unwrap();
        let unannounced =
            |s: &ApprovalStore| -> Vec<String> { s.unannounced().map(|i| i.id.clone()).collect() };
        assert_eq!(unannounced(&s), ["ap-2"]);
        drop(s);
        let mut s = ApprovalStore::open_in(dir.path(), HOUR, false).unwrap();
        assert_eq!(unannounced(&s), ["ap-2"], "durable");
        s.compact().unwrap();
        drop(s);
        let mut s = ApprovalStore::open_in(dir.path(), HOUR, false).unwrap();
        assert_eq!(unannounced(&s), ["ap-2"], "kept by compaction");
        s.mark_announced("ap-2").unwrap();
        assert!(unannounced(&s).is_empty());
        assert_eq!(s.item("ap-2").unwrap(), &rejected("ap-2"));
        drop(s);
        let s = ApprovalStore::open_in(dir.path(), HOUR, false).unwrap();
        assert!(unannounced(&s).is_empty(), "marked announced, durably");
        assert!(s.warnings().is_empty(), "{:?}", s.warnings());
    }

    /// A rejection holds the same advice for the `expire_after` in force when it was made, across
    /// a shorter one set later, an open, a compaction and its marking as announced; one stored
    /// without it (an older KPO's) holds for the one in force.
    #[test]
    fn a_rejection_holds_for_the_expire_after_it_was_made_under() {
        let dir = tempfile::tempdir().unwrap();
        let now = now_ms();
        let rejected = |id: &str| ApprovalItem {
            resolved_ms: Some(now - 60_000),
            state: ApprovalState::Rejected {
                by: "op".into(),
                why: None,
            },
            ..item(id, 32)
        };
        let mut s = ApprovalStore::open_in(dir.path(), HOUR, false).unwrap();
        s.put_marked(rejected("ap-1"), true, Some(HOUR)).unwrap();
        s.put(rejected("ap-2")).unwrap();
        let held = |s: &ApprovalStore| -> Vec<bool> {
            ["ap-1", "ap-2"]
                .map(|id| s.rejection_in_force(s.item(id).unwrap(), now))
                .to_vec()
        };
        assert_eq!(held(&s), [true, true]);
        assert_eq!(
            s.asks_again(s.item("ap-1").unwrap()),
            now - 60_000 + 3_600_000
        );
        // expire_after cut to 20 s: the old rejection was made under an hour's.
        let short = Duration::from_secs(20);
        s.set_rejection_in_force(short);
        assert_eq!(held(&s), [true, false]);
        drop(s);
        let mut s = ApprovalStore::open_in(dir.path(), short, false).unwrap();
        assert_eq!(held(&s), [true, false], "durable");
        s.mark_announced("ap-1").unwrap();
        s.compact().unwrap();
        drop(s);
        let s = ApprovalStore::open_in(dir.path(), short, false).unwrap();
        assert!(held(&s)[0], "kept by the mark and compaction");
        assert_eq!(s.unannounced().count(), 0);
        // The clock stepped back since the rejection (made a minute before `now`): by less than
        // its hour, it holds; by more (a day), it is over, not held a day longer.
        let ap1 = s.item("ap-1").unwrap();
        assert!(s.rejection_in_force(ap1, now - 3_000_000));
        assert!(!s.rejection_in_force(ap1, now - 24 * 3_600_000));
    }

    /// Opened with a journal that is read-only (a read-only state directory, for `kpo pending`
    /// and `kpo explain`), the store reads the file as it is: a torn tail is dropped in memory,
    /// not cut away, and nothing is kept aside; what the desk records (an approval the journal
    /// applied, one expired) is shown as it stands, and the file is left as it was.
    #[test]
    fn read_only_the_file_is_read_as_it_is_and_never_written() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut s = ApprovalStore::open_in(dir.path(), HOUR, false).unwrap();
            for v in [32, 64] {
                let id = s.new_id();
                s.put(item(&id, v)).unwrap();
            }
        }
        let path = dir.path().join(APPROVALS_FILE);
        let line = encode(&Stored::record(item("ap-3", 128), false));
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(&line[..line.len() / 2]).unwrap();
        drop(f);
        let before = fs::read(&path).unwrap();
        let mut s = ApprovalStore::open_in(dir.path(), HOUR, true).unwrap();
        assert_eq!(
            s.warnings(),
            [
                format!(
                    "{}: line 3 is a torn record ({} bytes without an end; a crash mid-write); \
                     dropped",
                    path.display(),
                    line.len() / 2
                ),
                format!(
                    "{}: the file is damaged, and not repaired: the state directory cannot be \
                     written",
                    path.display()
                ),
            ]
        );
        let mut done = item("ap-1", 32);
        done.state = ApprovalState::Expired;
        s.put(done).unwrap();
        assert_eq!(
            s.pending().map(|i| i.id.as_str()).collect::<Vec<_>>(),
            ["ap-2"]
        );
        assert_eq!(s.item("ap-1").unwrap().state.name(), "expired");
        drop(s);
        assert_eq!(fs::read(&path).unwrap(), before);
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, [APPROVALS_FILE]);
    }

    #[test]
    fn a_torn_tail_is_dropped_and_the_rest_kept() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut s = ApprovalStore::open_in(dir.path(), HOUR, false).unwrap();
            let id = s.new_id();
            s.put(item(&id, 32)).unwrap();
        }
        // A crash mid-append: half a line, no newline.
        let path = dir.path().join(APPROVALS_FILE);
        let line = encode(&Stored::record(item("ap-2", 64), false));
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(&line[..line.len() / 2]).unwrap();
        drop(f);
        let mut s = ApprovalStore::open_in(dir.path(), HOUR, false).unwrap();
        assert_eq!(s.pending().count(), 1);
        assert!(s.item("ap-2").is_none());
        assert!(
            s.warnings()[0].contains("torn record"),
            "{:?}",
            s.warnings()
        );
        assert!(fs::read_dir(dir.path()).unwrap().any(|e| e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .contains(".corrupt-")));
        // The file was rewritten whole: the next append starts on its own line.
        let id = s.new_id();
        assert_eq!(id, "ap-2");
        s.put(item(&id, 128)).unwrap();
        drop(s);
        let s = ApprovalStore::open_in(dir.path(), HOUR, false).unwrap();
        assert!(s.warnings().is_empty(), "{:?}", s.warnings());
        assert_eq!(s.pending().count(), 2);
    }

    #[test]
    /// The damaged line here is ap-1's rejection: its pending copy before it must not come back
    /// as a question already answered. What came after the damage is as it was.
    fn a_damaged_line_in_the_middle_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(APPROVALS_FILE);
        let mut bytes = encode(&Stored::record(item("ap-1", 32), false));
        let mut rejected = item("ap-1", 32);
        rejected.state = ApprovalState::Rejected {
            by: "op".into(),
            why: None,
        };
        let mut bad = encode(&Stored::record(rejected, false));
        bad[12] ^= 0x01; // a flipped bit inside the JSON
        bytes.extend(bad);
        bytes.extend(encode(&Stored::record(item("ap-3", 128), false)));
        fs::write(&path, bytes).unwrap();
        let s = ApprovalStore::open_in(dir.path(), HOUR, false).unwrap();
        let ids: Vec<_> = s.pending().map(|i| i.id.clone()).collect();
        assert_eq!(ids, ["ap-3"]);
        assert_eq!(s.item("ap-1").unwrap().state.name(), "cleared");
        assert!(
            s.warnings()[0].contains("line 2 is damaged"),
            "{:?}",
            s.warnings()
        );
        assert!(
            s.warnings()
                .iter()
                .any(|w| w.contains("approval ap-1 cleared")),
            "{:?}",
            s.warnings()
        );
        drop(s);
        let s = ApprovalStore::open_in(dir.path(), HOUR, false).unwrap();
        assert!(s.warnings().is_empty(), "{:?}", s.warnings());
        assert_eq!(
            s.pending().map(|i| i.id.clone()).collect::<Vec<_>>(),
            ["ap-3"]
        );
        assert_eq!(s.item("ap-1").unwrap().state.name(), "cleared");
    }

    /// A history line a newer KPO wrote, with an outcome this one does not know, is read as
    /// `unknown`, not dropped as damage: that cleared every approval pending before it (s51
    /// story Z1, a binary older than `under_way` rolled back over a newer one's file).
    #[test]
    fn a_newer_kpos_outcome_in_the_history_is_not_damage() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(APPROVALS_FILE);
        {
            let mut s = ApprovalStore::open_in(dir.path(), HOUR, false).unwrap();
            let id = s.new_id();
            s.put(item(&id, 32)).unwrap();
            let parameter: crate::actuate::param::ParamAddress =
                "net.core.somaxconn".parse().unwrap();
            s.record(HistoryEntry {
                ts_ms: now_ms(),
                recommendation: crate::advise::recommendation::Recommendation {
                    id: "llm-1".into(),
                    parameter,
                    current_value: Some(Value::Int(16)),
                    recommended_value: Some(Value::Int(64)),
                    can_auto_apply: true,
                    reason: "test".into(),
                    confidence: 0.9,
                    source: crate::advise::recommendation::Source::Llm,
                    window: crate::advise::recommendation::WindowRef {
                        index: 1,
                        end: "2026-01-01T00:00:00Z".into(),
                    },
                    application: None,
                    netns_cookie: None,
                },
                done: Done::Applied,
                journal_id: Some(1),
                approval_id: None,
                detail: None,
            })
            .unwrap();
        }
        // The history line as a newer KPO would write it: an outcome unknown here, a checksum
        // that holds.
        let text = fs::read_to_string(&path).unwrap();
        let newer: String = text
            .lines()
            .map(|line| match line.split_once(' ') {
                Some((_, json)) if json.contains("\"done\":\"applied\"") => {
                    let json: serde_json::Value =
                        serde_json::from_str(&json.replace("\"applied\"", "\"a_newer_outcome\""))
                            .unwrap();
                    String::from_utf8(encode(&json)).unwrap()
                }
                _ => format!("{line}\n"),
            })
            .collect();
        assert_ne!(newer, text);
        fs::write(&path, &newer).unwrap();
        let s = ApprovalStore::open_in(dir.path(), HOUR, false).unwrap();
        assert!(s.warnings().is_empty(), "{:?}", s.warnings());
        assert_eq!(
            s.pending().map(|i| i.id.clone()).collect::<Vec<_>>(),
            ["ap-1"]
        );
        let done: Vec<Done> = s.history().map(|h| h.done).collect();
        assert_eq!(done, [Done::Unknown]);
        assert_eq!(fs::read_to_string(&path).unwrap(), newer, "left as it was");
    }

    /// The damaged line is the only copy of the newest approval: its id is not handed out again
    /// (an operator acting on the webhook's text about it would approve another value), at this
    /// open nor the next, nor after a compaction.
    #[test]
    fn the_id_of_an_approval_lost_to_a_damaged_line_is_not_reused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(APPROVALS_FILE);
        let mut bytes = encode(&Stored::record(item("ap-1", 32), false));
        let mut bad = encode(&Stored::record(item("ap-2", 64), false));
        bad[12] ^= 0x01;
        bytes.extend(bad);
        fs::write(&path, bytes).unwrap();
        let mut s = ApprovalStore::open_in(dir.path(), HOUR, false).unwrap();
        assert!(
            s.warnings()
                .iter()
                .any(|w| w.contains("named approval ap-2")),
            "{:?}",
            s.warnings()
        );
        assert_eq!(s.new_id(), "ap-3");
        drop(s);
        let mut s = ApprovalStore::open_in(dir.path(), HOUR, false).unwrap();
        assert!(s.warnings().is_empty(), "{:?}", s.warnings());
        assert_eq!(s.new_id(), "ap-3");
        s.compact().unwrap();
        drop(s);
        let mut s = ApprovalStore::open_in(dir.path(), HOUR, false).unwrap();
        assert_eq!(s.new_id(), "ap-3", "compaction keeps it");
    }

    /// Recovery's rewrite holds the records of what the damaged line may have held (ap-2 taken,
    /// ap-1 cleared): killed right after it (recovery alone, the store never opened), the next
    /// open still has them, though the file it finds is whole.
    #[test]
    fn a_kill_right_after_recovery_loses_neither_the_taken_id_nor_a_clearing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(APPROVALS_FILE);
        let mut bytes = encode(&Stored::record(item("ap-1", 32), false));
        let mut bad = encode(&Stored::record(item("ap-2", 64), false));
        bad[12] ^= 0x01;
        bytes.extend(bad);
        fs::write(&path, bytes).unwrap();
        let loaded = ApprovalStore::load_repaired(dir.path()).unwrap();
        assert_eq!(
            loaded.warnings[2..],
            [
                format!(
                    "{} line 2, damaged, named approval ap-2: it is not handed out again",
                    path.display()
                ),
                "approval ap-1 cleared: the approvals file was damaged after its last record"
                    .to_string(),
            ],
            "{:?}",
            loaded.warnings
        );
        drop(loaded);
        let mut s = ApprovalStore::open_in(dir.path(), HOUR, false).unwrap();
        assert!(s.warnings().is_empty(), "{:?}", s.warnings());
        assert_eq!(s.item("ap-1").unwrap().state.name(), "cleared");
        assert_eq!(s.pending().count(), 0);
        assert_eq!(s.new_id(), "ap-3");
    }

    /// An id KPO cannot have handed out (a hand-made line) is set aside with a warning; counting
    /// on from it would overflow.
    #[test]
    fn an_impossible_id_is_set_aside() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(APPROVALS_FILE);
        let mut bytes = encode(&Stored::record(item("ap-1", 32), false));
        bytes.extend(encode(&Stored::record(
            item(&format!("ap-{}", u64::MAX), 64),
            false,
        )));
        bytes.extend(encode(&Stored::record(item("approval-7", 64), false)));
        bytes.extend(encode(&Stored::record(item("ap-001", 64), false)));
        fs::write(&path, bytes).unwrap();
        let mut s = ApprovalStore::open_in(dir.path(), HOUR, false).unwrap();
        let ids: Vec<_> = s.pending().map(|i| i.id.clone()).collect();
        assert_eq!(ids, ["ap-1"]);
        assert_eq!(s.warnings().len(), 3, "{:?}", s.warnings());
        assert!(
            s.warnings()[0].contains("is set aside"),
            "{:?}",
            s.warnings()
        );
        assert_eq!(s.new_id(), "ap-2");
    }

    #[test]
    fn the_file_is_compacted_and_keeps_every_pending_approval() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = ApprovalStore::open_in(dir.path(), HOUR, false).unwrap();
        s.limit = 300;
        let keep = s.new_id();
        s.put(item(&keep, 32)).unwrap();
        for _ in 0..400 {
            let id = s.new_id();
            let mut i = item(&id, 64);
            i.state = ApprovalState::Expired;
            s.put(i).unwrap();
        }
        assert!(s.lines <= 300, "{} lines", s.lines);
        let on_disk = fs::read(dir.path().join(APPROVALS_FILE)).unwrap();
        assert_eq!(on_disk.iter().filter(|&&b| b == b'\n').count(), s.lines);
        drop(s);
        let s = ApprovalStore::open_in(dir.path(), HOUR, false).unwrap();
        assert_eq!(
            s.pending().map(|i| i.id.clone()).collect::<Vec<_>>(),
            [keep]
        );
        let kept = s.items().count();
        assert!((RESOLVED_KEPT + 1..=300).contains(&kept), "{kept}");
        assert_eq!(
            s.item("ap-401").unwrap().state,
            ApprovalState::Expired,
            "the latest are kept"
        );
    }

    /// When what compaction keeps is itself over the limit (many pending approvals), the next
    /// appends do not each rewrite the file: the next compaction waits for `COMPACT_RETRY` more.
    #[test]
    fn records_still_in_force_over_the_limit_do_not_compact_on_every_append() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let mut s = ApprovalStore::open_in(dir.path(), HOUR, false).unwrap();
        s.limit = 10;
        let file = dir.path().join(APPROVALS_FILE);
        let inode = || fs::metadata(&file).unwrap().ino();
        for _ in 0..11 {
            let id = s.new_id();
            s.put(item(&id, 32)).unwrap();
        }
        // The eleventh append compacted (a rewrite is a new file), keeping all eleven.
        assert_eq!(s.lines, 11);
        let after_compaction = inode();
        for _ in 0..5 {
            let id = s.new_id();
            s.put(item(&id, 32)).unwrap();
        }
        assert_eq!(inode(), after_compaction, "no rewrite per append");
        assert_eq!(s.lines, 16);
        assert_eq!(s.retry_at, Some(11 + COMPACT_RETRY));
    }

    /// A rejection keeps the same advice from asking again for `expire_after`: compaction keeps
    /// it that long however many approvals were resolved after it, and forgets it after.
    #[test]
    fn compaction_keeps_every_rejection_still_in_force() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = ApprovalStore::open_in(dir.path(), HOUR, false).unwrap();
        s.limit = 300;
        let rejected = |id: &str, at: u64| ApprovalItem {
            resolved_ms: Some(at),
            state: ApprovalState::Rejected {
                by: "op".into(),
                why: None,
            },
            ..item(id, 32)
        };
        let now = now_ms();
        let in_force = s.new_id();
        s.put(rejected(&in_force, now)).unwrap();
        let over = s.new_id();
        s.put(rejected(&over, now - 2 * 3_600_000)).unwrap();
        for _ in 0..400 {
            let id = s.new_id();
            let mut i = item(&id, 64);
            i.state = ApprovalState::Expired;
            s.put(i).unwrap();
        }
        assert!(s.lines <= 300, "{} lines: compacted", s.lines);
        for s in [s, ApprovalStore::open_in(dir.path(), HOUR, false).unwrap()] {
            assert!(s.item(&in_force).is_some(), "in force: kept");
            assert!(s.item(&over).is_none(), "past its time: like any resolved");
        }
    }

    /// An append that failed and could not be taken back leaves part of a line and poisons the
    /// appender; the next append reopens the file cut back to its last whole line, so that it is
    /// not glued to the partial one (and both lost at the next load).
    #[test]
    fn an_append_after_a_failure_that_could_not_be_undone_starts_on_its_own_line() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = ApprovalStore::open_in(dir.path(), HOUR, false).unwrap();
        let first = s.new_id();
        s.put(item(&first, 32)).unwrap();
        // What a write cut short, whose truncation then failed too, leaves behind.
        let line = encode(&Stored::record(item("ap-99", 64), false));
        let mut f = OpenOptions::new()
            .append(true)
            .open(dir.path().join(APPROVALS_FILE))
            .unwrap();
        f.write_all(&line[..line.len() / 2]).unwrap();
        s.file.as_mut().unwrap().poison();
        let next = s.new_id();
        s.put(item(&next, 128)).unwrap();
        drop(s);
        let s = ApprovalStore::open_in(dir.path(), HOUR, false).unwrap();
        assert!(s.warnings().is_empty(), "{:?}", s.warnings());
        assert_eq!(
            s.pending().map(|i| i.id.clone()).collect::<Vec<_>>(),
            [first, next]
        );
    }

    /// A whole line written by an append whose fsync then failed, and whose taking back failed
    /// too, was never acknowledged: it is cut, not kept because it happens to be complete.
    #[test]
    fn a_whole_line_that_was_never_acknowledged_is_cut() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = ApprovalStore::open_in(dir.path(), HOUR, false).unwrap();
        let first = s.new_id();
        s.put(item(&first, 32)).unwrap();
        let path = dir.path().join(APPROVALS_FILE);
        let length = fs::metadata(&path).unwrap().len();
        let line = encode(&Stored::record(item("ap-99", 64), false));
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(&line).unwrap();
        s.file.as_mut().unwrap().poison_from(length);
        let next = s.new_id();
        s.put(item(&next, 128)).unwrap();
        drop(s);
        let s = ApprovalStore::open_in(dir.path(), HOUR, false).unwrap();
        assert_eq!(
            s.pending().map(|i| i.id.clone()).collect::<Vec<_>>(),
            [first, next]
        );
    }

    /// A compaction that cannot write its new file (here a directory stands where it goes; a
    /// full disk does the same) leaves every appended record in place and is only a warning.
    #[test]
    fn a_failed_compaction_loses_nothing_and_fails_no_append() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = ApprovalStore::open_in(dir.path(), HOUR, false).unwrap();
        s.limit = 5;
        fs::create_dir(dir.path().join(format!("{APPROVALS_FILE}.tmp"))).unwrap();
        let ids: Vec<String> = (0..8)
            .map(|_| {
                let id = s.new_id();
                s.put(item(&id, 32)).expect("the append itself succeeded");
                id
            })
            .collect();
        assert_eq!(s.lines, 8, "not compacted");
        drop(s);
        fs::remove_dir(dir.path().join(format!("{APPROVALS_FILE}.tmp"))).unwrap();
        let s = ApprovalStore::open_in(dir.path(), HOUR, false).unwrap();
        assert!(s.warnings().is_empty(), "{:?}", s.warnings());
        assert_eq!(s.pending().map(|i| i.id.clone()).collect::<Vec<_>>(), ids);
    }
}
