//! Archiving: at open, a journal grown past [`ARCHIVE_THRESHOLD`] has its old records copied to
//! `journal.archive.log` (same line format, appended, fsynced) and is rewritten with only the
//! records the state still needs plus the recent ones (docs/journal.md, "Archiving").
//!
//! The archive is the complete history in order: each pass appends every record of the journal
//! older than [`KEEP_RECENT`] that is not in it yet (a change whole, its outcome beside its
//! intent), then rewrites `journal.log` with the old records that still matter (each key's
//! original, the change holding it, yields, quarantines in force, the pause, ...), a
//! [`Record::Archived`] marker, and the recent records. A record before the marker is therefore
//! also in the archive (except the changes the marker holds back), so `kpo journal` lists the
//! archive, then the journal after it, each change once.
//!
//! Nothing is rewritten unless folding the new journal gives the state folding the old one gave
//! ([`differences`]); the archive is appended and fsynced before the journal is replaced, so a
//! crash between the two leaves records in both (listed once: the live copy wins) and the next
//! open finishes the pass, first cutting what the unfinished pass appended.
use std::{
    collections::{BTreeMap, BTreeSet},
    fs::{self, File, OpenOptions},
    io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write},
    os::unix::fs::OpenOptionsExt,
    path::Path,
    time::Duration,
};

use super::{entry_of, now_ms, store, Boot, Entry, Folded, Intent, Journal, Outcome, Record};
use crate::policy::Source;

pub const ARCHIVE_FILE: &str = "journal.archive.log";

/// The sources whose runs of changes ([`Journal::first_of_run`]) archiving keeps and checks.
const RUN_SOURCES: [Source; 5] = [
    Source::Rules,
    Source::Llm,
    Source::Optimizer,
    Source::Operator,
    Source::Guard,
];

/// A journal larger than this at open is archived. At about 400 bytes a change, 8 MiB is some
/// 20,000 changes: read and folded in well under a second and a few tens of MiB in memory, yet
/// large enough that a host is archived rarely (each pass copies what aged past
/// [`KEEP_RECENT`] and rewrites the journal).
pub const ARCHIVE_THRESHOLD: u64 = 8 << 20;

/// Records younger than this stay in the journal whatever they are. The policy's longest fixed
/// look-back is the hourly change limit (one hour); a cooldown may be configured longer, which is
/// why each parameter's latest applied change stays too, however old. A day leaves room for
/// clock steps and for an operator reading `kpo journal` offline.
pub const KEEP_RECENT: Duration = Duration::from_secs(24 * 3600);

/// How archiving at open behaves: [`Options::default`] in production; tests shrink the threshold.
#[derive(Debug, Clone)]
pub struct Options {
    pub threshold: u64,
    pub keep_recent: Duration,
    /// The time archiving judges by (`None`: now).
    pub now_ms: Option<u64>,
    /// A pass is skipped when that time is further than this past the journal's newest record:
    /// a clock set wrong at boot (a bad RTC, NTP not synced yet) would otherwise judge
    /// quarantines still in force over and drop them.
    pub max_ahead: Duration,
    /// Test hook: stop after the archive is appended, as a crash before the rewrite would.
    #[cfg(test)]
    pub crash_before_rewrite: bool,
    /// Test hook: changes the journal to be written before it is checked.
    #[cfg(test)]
    pub tamper: Option<fn(&mut Vec<Record>)>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            threshold: ARCHIVE_THRESHOLD,
            keep_recent: KEEP_RECENT,
            now_ms: None,
            max_ahead: KEEP_RECENT,
            #[cfg(test)]
            crash_before_rewrite: false,
            #[cfg(test)]
            tamper: None,
        }
    }
}

/// Archives the journal just loaded into `st` if it is over the threshold, and returns the state
/// to go on with: the rewritten journal's, or, when nothing was archived (not needed, refused by
/// the check, or an I/O error: then with a warning), `st` itself.
pub(super) fn at_open(dir: &Path, mut st: Folded, boot: &Boot, options: &Options) -> Folded {
    let size = fs::metadata(dir.join(store::JOURNAL_FILE)).map_or(0, |m| m.len());
    if size > options.threshold {
        match archive(dir, &st, boot, options) {
            Ok(Some(new)) => st = new,
            Ok(None) => {}
            Err(why) => {
                tracing::warn!("{why}");
                st.warnings.push(why);
            }
        }
    }
    st.archive_len = fs::metadata(dir.join(ARCHIVE_FILE)).map_or(0, |m| m.len());
    st
}

fn archive(
    dir: &Path,
    st: &Folded,
    boot: &Boot,
    options: &Options,
) -> Result<Option<Folded>, String> {
    let io = |e: io::Error| {
        format!(
            "{}: archiving the journal failed ({e}); it stays as it is",
            dir.display()
        )
    };
    let now = options.now_ms.unwrap_or_else(now_ms);
    let newest = st.records.iter().map(Record::ts_ms).max().unwrap_or(now);
    if now.saturating_sub(newest) > options.max_ahead.as_millis() as u64 {
        // Whether the clock is wrong or the journal was idle that long, archiving can wait for
        // the next open: what it would judge by may be days off.
        tracing::warn!(
            "{}: not archived at this open: the clock says {} h after the journal's newest \
             record (a clock not yet set right at boot would take quarantines still in force \
             for expired; or nothing was journaled for that long); an open within a day of the \
             next record journaled archives it",
            dir.join(store::JOURNAL_FILE).display(),
            (now - newest) / 3_600_000
        );
        return Ok(None);
    }
    let cutoff = now.saturating_sub(options.keep_recent.as_millis() as u64);
    let (base, newline) = append_base(dir, st).map_err(io)?;
    let Some(mut plan) = plan(st, boot, now, cutoff, base + u64::from(newline)) else {
        return Ok(None);
    };
    #[cfg(test)]
    if let Some(tamper) = options.tamper {
        tamper(&mut plan.live);
        plan.state = Folded::of(plan.live.clone(), boot);
    }
    let differ = differences(st, &plan.state, cutoff);
    if !differ.is_empty() {
        return Err(format!(
            "{}: the journal is over {} bytes but was not archived: the records kept would not \
             give the same state ({}); it stays whole",
            dir.join(store::JOURNAL_FILE).display(),
            options.threshold,
            differ.join("; ")
        ));
    }
    append(dir, base, newline, &plan.batch).map_err(io)?;
    #[cfg(test)]
    if options.crash_before_rewrite {
        return Ok(None);
    }
    match store::rewrite(dir, store::JOURNAL_FILE, &plan.live) {
        Ok(()) => {}
        // The rename was done, the directory's fsync failed: the new journal is in place (and
        // the agent appends to it), so its state is the one to go on with; a power loss before
        // the directory reaches the disk may bring the old one back, which gives the same state.
        Err(super::JournalError::Io { path, source }) if path == dir => {
            let why = format!(
                "archiving the journal: {}: {source}; the archived journal is in place, but a \
                 power loss may yet bring back the old one (the same state; its old records are \
                 in the archive too, listed once)",
                path.display()
            );
            tracing::warn!("{why}");
            plan.state.warnings = st.warnings.clone();
            plan.state.warnings.push(why);
            return Ok(Some(plan.state));
        }
        Err(e) => {
            return Err(format!(
                "archiving the journal: {e}; the journal stays as it is (its old records are in \
                 the archive too, listed once)"
            ))
        }
    }
    tracing::info!(
        "journal archived: {} records appended to {}, {} kept",
        plan.batch.len(),
        ARCHIVE_FILE,
        plan.live.len()
    );
    plan.state.warnings = st.warnings.clone();
    Ok(Some(plan.state))
}

/// What a pass would do.
pub(crate) struct Plan {
    /// Appended to the archive.
    pub batch: Vec<Record>,
    /// The new `journal.log`.
    pub live: Vec<Record>,
    /// `live` folded.
    pub state: Folded,
    /// Keys whose every old record was kept: the usual choice did not give their state.
    pub kept_whole: Vec<String>,
}

/// The pass over `st`'s records at `now`: the records older than `cutoff` go to the archive, those
/// the state needs stay. `archive_base`: the archive's length before the batch. `None` when
/// nothing would change.
pub(crate) fn plan(
    st: &Folded,
    boot: &Boot,
    now: u64,
    cutoff: u64,
    archive_base: u64,
) -> Option<Plan> {
    let sel = Selection::new(st, cutoff);
    let old_markers = (st.records.iter())
        .filter(|r| matches!(r, Record::Archived { .. }))
        .count();
    // Every record under a day old (but the marker): all stay, and the candidate's fold would
    // cost a second journal in memory at every open for nothing (s58 story BI-2: a journal over
    // the threshold with every record recent).
    if old_markers <= 1
        && (st.records[..sel.end].iter()).all(|r| matches!(r, Record::Archived { .. }))
    {
        return None;
    }
    let batch = sel.batch();
    let mut kept_whole = BTreeSet::new();
    let mut plan = sel.candidate(st, boot, now, &batch, &kept_whole, archive_base);
    let differ = differences(st, &plan.state, cutoff);
    let keys: BTreeSet<String> = differ
        .iter()
        .filter_map(|d| d.split_once(": ").map(|(k, _)| k.to_string()))
        .collect();
    if !keys.is_empty() {
        // A history the usual choice does not cover (a put-back after a read-back mismatch
        // whose holder went since, ...): those keys keep all their records.
        kept_whole = keys;
        plan = sel.candidate(st, boot, now, &batch, &kept_whole, archive_base);
    }
    plan.kept_whole = kept_whole.into_iter().collect();
    // The new journal has one marker; nothing to do if it would hold every record it holds now.
    if batch.is_empty() && plan.live.len() - 1 == st.records.len() - old_markers {
        return None;
    }
    plan.batch = batch.into_iter().map(|i| st.records[i].clone()).collect();
    Some(plan)
}

/// Which of the journal's records are old (before `end`), and how they are grouped by change.
struct Selection<'a> {
    st: &'a Folded,
    /// Records from here on are recent (or after the latest marker) and stay.
    end: usize,
    /// Each change's records, by index.
    units: BTreeMap<u64, Vec<usize>>,
    /// Records older than this are old.
    cutoff: u64,
}

impl<'a> Selection<'a> {
    fn new(st: &'a Folded, cutoff: u64) -> Self {
        let recs = &st.records;
        let recent = recs
            .iter()
            .position(|r| !matches!(r, Record::Archived { .. }) && r.ts_ms() >= cutoff)
            .unwrap_or(recs.len());
        // Records before the latest marker are judged here too, whatever their time: past it
        // they would be taken for records not yet archived.
        let end = recent.max(st.marker.as_ref().map_or(0, |(at, _)| *at));
        let mut units: BTreeMap<u64, Vec<usize>> = BTreeMap::new();
        for (i, r) in recs.iter().enumerate() {
            if let Some(id) = r.id() {
                units.entry(id).or_default().push(i);
            }
        }
        Selection {
            st,
            end,
            units,
            cutoff,
        }
    }

    /// A change is archived whole, once every record of it is old and it has an outcome (a
    /// refusal is whole by itself; an outcome whose intent was lost to damage too).
    fn whole(&self, id: u64) -> bool {
        let old = self.units[&id].iter().all(|&i| i < self.end);
        let incomplete = self.st.intents.contains_key(&id) && !self.st.outcomes.contains_key(&id);
        old && !incomplete
    }

    /// The indices to append to the archive: old records not in it yet, a change's records
    /// together at its first.
    fn batch(&self) -> Vec<usize> {
        let mut out = Vec::new();
        let mut done = BTreeSet::new();
        for (i, r) in self.st.records[..self.end].iter().enumerate() {
            if matches!(r, Record::Archived { .. }) || self.st.is_archived(i) {
                continue;
            }
            match r.id() {
                None => out.push(i),
                Some(id) if self.whole(id) && done.insert(id) => out.extend(&self.units[&id]),
                Some(_) => {}
            }
        }
        out
    }

    /// The old records the state needs, by index: each key's original, holder, latest applied
    /// change and latest change put back (cooldowns), the first change of each source's current
    /// run and what ended the one before ([`Journal::first_of_run`]), what set its last applied value, its latest intent (address, boot,
    /// cookie) and switch intents (`made_way_for`), its first and latest yield, latest hand-back
    /// and end of namespace, the quarantines in force; the latest pause and resume; the change
    /// with the highest id (ids are never handed out again); every `damaged` record; every record
    /// of `kept_whole`'s keys; the change after each interrupted one.
    fn needed(&self, cutoff: u64, kept_whole: &BTreeSet<String>) -> BTreeSet<usize> {
        let st = self.st;
        let mut units: BTreeSet<u64> = BTreeSet::new();
        for p in st.params.values() {
            units.extend(p.original_id);
            units.extend(p.holding);
            units.extend(p.applied.last().map(|(id, _)| *id));
            // A change put back counts towards the cooldown too, which may exceed a day.
            units.extend(p.put_back.last().map(|(id, _)| *id));
        }
        units.extend(self.units.keys().next_back());
        // What reconciliation reads of an interrupted change: whether the next change of its
        // parameter found its value in place (an outcome line lost to damage). Moved to the
        // archive, the change after that would be read instead, and the interrupted one judged
        // `failed` for good.
        for i in st.incomplete() {
            units.extend(st.next_change_id(&i));
        }
        let mut out = BTreeSet::new();
        // Each source's current run of changes per key ([`Journal::first_of_run`]): its first
        // change, and the record that ended what came before it. That is enough for the same
        // answer: every other change of the key after the breaker took effect is of the run (it
        // would have broken it otherwise), so the records kept between the two and after the
        // first neither start nor break a run; and a run may last as long as the boot (the
        // optimizer's trials), so keeping all of it would keep the key's history live for good.
        for source in RUN_SOURCES {
            for run in st.runs(source, None).into_values() {
                for at in std::iter::once(run.first).chain(run.broken) {
                    match st.records[at].id() {
                        Some(id) => {
                            units.insert(id);
                        }
                        // Only an old one: a recent record is copied after the marker anyway,
                        // and one before it must also be in the archive.
                        None if at < self.end => {
                            out.insert(at);
                        }
                        None => {}
                    }
                }
            }
        }
        // The latest record of each (key, what) slot.
        let mut latest: BTreeMap<(String, String), usize> = BTreeMap::new();
        let mut first_yield: BTreeMap<&str, usize> = BTreeMap::new();
        let mut quarantines: BTreeMap<(String, String), (usize, u64)> = BTreeMap::new();
        for (i, r) in st.records[..self.end].iter().enumerate() {
            let key = key_of(st, r);
            if key.is_some_and(|k| kept_whole.contains(k)) {
                out.insert(i);
            }
            let mut slot = |k: &str, what: String| {
                latest.insert((k.to_string(), what), i);
            };
            match r {
                Record::Intent(intent) => {
                    slot(&intent.key, "intent".into());
                    if intent.boot.is_some() {
                        slot(&intent.key, "boot".into());
                    }
                    if intent.netns_cookie.is_some() {
                        slot(&intent.key, "cookie".into());
                    }
                    if let Some(m) = &intent.made_way_for {
                        slot(&intent.key, format!("made way for {m}"));
                    }
                }
                Record::Outcome { outcome, .. } => {
                    if let (false, Some(k)) =
                        (matches!(outcome, Outcome::Failed { left: None, .. }), key)
                    {
                        slot(k, "effect".into());
                    }
                }
                Record::Pause { .. } => slot("", "pause".into()),
                Record::Resume { .. } => slot("", "resume".into()),
                Record::Yield { key, .. } => {
                    first_yield.entry(key.as_str()).or_insert(i);
                    slot(key, "yield".into());
                }
                Record::Manage { key, .. } => slot(key, "manage".into()),
                Record::Gone { key, .. } => slot(key, "gone".into()),
                Record::Quarantine {
                    key,
                    value,
                    until_ms,
                    ..
                } => {
                    // A later one of the same value replaces it.
                    quarantines.insert((key.clone(), value.to_string()), (i, *until_ms));
                }
                // Rare, and each may hold the highest id or a parameter's unsettled state.
                Record::Damaged { .. } => {
                    out.insert(i);
                }
                _ => {}
            }
        }
        // In force with the same margin as the recent records: a clock a little ahead does
        // not end a quarantine early.
        let in_force = quarantines.values().filter(|(_, until)| *until > cutoff);
        out.extend(in_force.map(|(i, _)| *i));
        out.extend(first_yield.values());
        for i in latest.into_values() {
            match st.records[i].id() {
                Some(id) => {
                    units.insert(id);
                }
                None => {
                    out.insert(i);
                }
            }
        }
        for id in units {
            // An id known only from a copy (its records all lost) has nothing to keep.
            let records = self.units.get(&id).into_iter().flatten();
            out.extend(records.filter(|&&i| i < self.end));
        }
        out
    }

    /// The journal this pass would write, folded: the needed old records, then the marker, then
    /// the recent ones.
    fn candidate(
        &self,
        st: &Folded,
        boot: &Boot,
        now: u64,
        batch: &[usize],
        kept_whole: &BTreeSet<String>,
        archive_base: u64,
    ) -> Plan {
        let in_batch: BTreeSet<usize> = batch.iter().copied().collect();
        let mut kept = self.needed(self.cutoff, kept_whole);
        // An old record that is in the archive neither already nor now stays.
        kept.extend((0..self.end).filter(|&i| {
            !matches!(st.records[i], Record::Archived { .. })
                && !st.is_archived(i)
                && !in_batch.contains(&i)
        }));
        let held: BTreeSet<u64> = kept
            .iter()
            .filter(|&&i| !st.is_archived(i) && !in_batch.contains(&i))
            .filter_map(|&i| st.records[i].id())
            .collect();
        let archive_bytes = archive_base
            + batch
                .iter()
                .map(|&i| store::encode(&st.records[i]).len() as u64)
                .sum::<u64>();
        let build = |changes: BTreeMap<String, usize>| -> Vec<Record> {
            let mut live: Vec<Record> = kept.iter().map(|&i| st.records[i].clone()).collect();
            live.push(Record::Archived {
                ts_ms: now,
                archive_bytes,
                held: held.iter().copied().collect(),
                changes,
            });
            live.extend(
                st.records[self.end..]
                    .iter()
                    .filter(|r| !matches!(r, Record::Archived { .. }))
                    .cloned(),
            );
            live
        };
        // The applied changes that leave the journal, counted in the marker for `kpo status`.
        let without = Folded::of(build(BTreeMap::new()), boot);
        let changes: BTreeMap<String, usize> = st
            .params
            .iter()
            .filter_map(|(key, p)| {
                let now_kept = without
                    .params
                    .get(key)
                    .map_or(0, |q| q.applied.len() + q.archived_changes);
                let gone = (p.applied.len() + p.archived_changes).checked_sub(now_kept)?;
                (gone > 0).then(|| (key.clone(), gone))
            })
            .collect();
        let live = build(changes);
        Plan {
            batch: Vec::new(),
            state: Folded::of(live.clone(), boot),
            live,
            kept_whole: Vec::new(),
        }
    }
}

/// The key a record is about, if any (an outcome's or read-back's is its intent's).
fn key_of<'a>(st: &'a Folded, r: &'a Record) -> Option<&'a str> {
    match r {
        Record::Intent(i) => Some(&i.key),
        Record::Outcome { id, intent, .. } => st
            .intents
            .get(id)
            .map(|i| i.key.as_str())
            .or(intent.as_ref().map(|c| c.key.as_str())),
        Record::ReadBack { id, .. } => st.intents.get(id).map(|i| i.key.as_str()),
        Record::Yield { key, .. }
        | Record::Manage { key, .. }
        | Record::Gone { key, .. }
        | Record::Quarantine { key, .. } => Some(key),
        _ => None,
    }
}

/// Where the state folded from `b` differs from `a`'s as of `since` (the pass's cutoff: a
/// quarantine counts while it ends after it, with the margin recent records have), on what the agent and the
/// commands use: per key (`KEY: field`) its address, original, last applied value, holder, yield,
/// quarantines in force, boot, cookie, latest intent's time, number of applied changes, latest
/// applied change and those since `since`, the same of changes put back, switches it was turned
/// off for, each source's current run of changes ([`Journal::first_of_run`]), whether a damaged
/// line left its state unsettled; the pause, the next
/// id, the interrupted changes (with what reconciliation reads of them: read-backs, whether a
/// later change took effect, the next change).
pub(crate) fn differences(a: &Folded, b: &Folded, since: u64) -> Vec<String> {
    let mut out = Vec::new();
    let (fa, fb) = (fields(a, since), fields(b, since));
    for key in fa.keys().chain(fb.keys()).collect::<BTreeSet<_>>() {
        match (fa.get(key), fb.get(key)) {
            (Some(x), Some(y)) => {
                for ((name, vx), (_, vy)) in x.iter().zip(y) {
                    if vx != vy {
                        out.push(format!("{key}: {name} {vx} became {vy}"));
                    }
                }
            }
            _ => out.push(format!("{key}: known to one journal only")),
        }
    }
    if a.next_id != b.next_id {
        out.push(format!("next id {} became {}", a.next_id, b.next_id));
    }
    if a.paused != b.paused {
        out.push("the pause".into());
    }
    let interrupted = |f: &Folded| -> Vec<String> {
        f.incomplete()
            .iter()
            .map(|i| {
                format!(
                    "{i:?} superseded {} read back {:?} next change {:?}",
                    f.superseded(i),
                    f.read_backs.get(&i.id),
                    f.next_change(i)
                )
            })
            .collect()
    };
    if interrupted(a) != interrupted(b) {
        out.push("the interrupted changes".into());
    }
    out
}

/// Each key's fields that [`differences`] compares, as text.
fn fields(f: &Folded, since: u64) -> BTreeMap<String, Vec<(&'static str, String)>> {
    // Each source's current run per key ([`Journal::first_of_run`]): its first change and the
    // value before it.
    let mut runs: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for source in RUN_SOURCES {
        for (key, run) in f.runs(source, None) {
            if let Record::Intent(i) = &f.records[run.first] {
                let run = format!("{}: #{} from {:?}", source.as_str(), i.id, i.before);
                runs.entry(key).or_default().push(run);
            }
        }
    }
    let mut switches: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for i in f.intents.values() {
        if let Some(m) = &i.made_way_for {
            switches.entry(&i.key).or_default().insert(m);
        }
    }
    f.params
        .iter()
        .map(|(key, p)| {
            let mut quarantine: Vec<String> = p
                .quarantine
                .iter()
                // With the margin the pass keeps them with ([`Selection::needed`]).
                .filter(|q| q.until_ms > since)
                .map(|q| format!("{} from {} until {}", q.value, q.since_ms, q.until_ms))
                .collect();
            quarantine.sort();
            let recent: Vec<_> = p.applied.iter().filter(|(_, ts)| *ts >= since).collect();
            let recent_put_back: Vec<_> =
                p.put_back.iter().filter(|(_, ts)| *ts >= since).collect();
            let switches = p.last_applied.as_ref().and(switches.get(key.as_str()));
            let v = vec![
                ("address", format!("{:?}", p.address)),
                (
                    "original",
                    format!("{:?} of {:?}", p.original, p.original_id),
                ),
                ("last applied", format!("{:?}", p.last_applied)),
                (
                    "holder",
                    format!("{:?} {:?}", p.holding, p.holding.map(|h| f.intents.get(&h))),
                ),
                ("yield", format!("{:?}", p.yielded)),
                ("quarantines", format!("{quarantine:?}")),
                ("boot", format!("{:?}", p.boot)),
                ("cookie", format!("{:?}", p.netns_cookie)),
                ("latest intent", format!("{:?}", p.last_intent_ms)),
                (
                    "changes",
                    format!("{}", p.applied.len() + p.archived_changes),
                ),
                ("latest change", format!("{:?}", p.applied.last())),
                ("recent changes", format!("{recent:?}")),
                ("switches", format!("{switches:?}")),
                ("latest put back", format!("{:?}", p.put_back.last())),
                ("recent put backs", format!("{recent_put_back:?}")),
                ("runs", format!("{:?}", runs.get(key.as_str()))),
                ("unsettled", format!("{:?}", p.unsettled)),
            ];
            (key.clone(), v)
        })
        .collect()
}

/// The archive's length to append at, and whether a newline must come first. What a pass that
/// did not finish appended (a crash before the journal was rewritten) is cut: the run of lines at
/// the archive's end, past the length the latest marker acknowledged, whose records are all still
/// in the journal (cutting them loses nothing; an archive the operator kept or replaced is not
/// such a run).
fn append_base(dir: &Path, st: &Folded) -> io::Result<(u64, bool)> {
    let path = dir.join(ARCHIVE_FILE);
    let mut file = match File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok((0, false)),
        Err(e) => return Err(e),
    };
    let len = file.metadata()?.len();
    let acknowledged = st
        .marker
        .as_ref()
        .and_then(|(at, _)| match &st.records[*at] {
            Record::Archived { archive_bytes, .. } => Some(*archive_bytes),
            _ => None,
        });
    // Where to look from: the acknowledged length if it ends a line of this file; with no marker
    // (no pass finished on this journal), its start. A file the marker did not measure (the
    // operator put another in its place) is not cut: its end may hold acknowledged records.
    let from = match acknowledged {
        Some(ack) if ack < len && ends_a_line(&mut file, ack)? => ack,
        Some(_) => len,
        None => 0,
    };
    let base = if from < len {
        unfinished_from(&mut file, from, st)?
    } else {
        len
    };
    Ok((base, !ends_a_line(&mut file, base)?))
}

fn ends_a_line(file: &mut File, at: u64) -> io::Result<bool> {
    if at == 0 {
        return Ok(true);
    }
    let mut byte = [0u8];
    file.seek(SeekFrom::Start(at - 1))?;
    file.read_exact(&mut byte)?;
    Ok(byte[0] == b'\n')
}

/// The start of the run of lines from `from` to the end whose records are all in `st`'s journal
/// and not archived yet by its marker (a torn last line counts in: an append that was cut short).
/// An unfinished pass appended only such records; a line of one the marker says is archived
/// (kept live too: an original, a quarantine in force) is the operator's copy of the archive,
/// perhaps its only one once the next pass drops that record from the journal.
fn unfinished_from(file: &mut File, from: u64, st: &Folded) -> io::Result<u64> {
    let live: BTreeSet<Vec<u8>> = st
        .records
        .iter()
        .enumerate()
        .filter(|&(i, r)| !matches!(r, Record::Archived { .. }) && !st.is_archived(i))
        .map(|(_, r)| store::encode(r))
        .collect();
    file.seek(SeekFrom::Start(from))?;
    let mut reader = BufReader::new(file);
    let (mut at, mut run) = (from, from);
    loop {
        let mut line = Vec::new();
        let n = reader.read_until(b'\n', &mut line)?;
        if n == 0 {
            return Ok(run);
        }
        at += n as u64;
        let ours = line.last() != Some(&b'\n') || line == b"\n" || live.contains(&line);
        if !ours {
            run = at;
        }
    }
}

/// Appends the batch at `base` (cutting what follows), and returns once it is on disk.
fn append(dir: &Path, base: u64, newline: bool, batch: &[Record]) -> io::Result<()> {
    let path = dir.join(ARCHIVE_FILE);
    let existed = path.exists();
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&path)?;
    let len = file.metadata()?.len();
    if len > base {
        tracing::warn!(
            "{}: cut {} bytes an unfinished archiving pass appended (their records are still in the journal)",
            path.display(),
            len - base
        );
        file.set_len(base)?;
    }
    file.seek(SeekFrom::Start(base))?;
    let mut bytes: Vec<u8> = Vec::new();
    if newline {
        bytes.push(b'\n');
    }
    bytes.extend(batch.iter().flat_map(store::encode));
    file.write_all(&bytes)?;
    file.sync_all()?;
    if !existed {
        store::sync_dir(dir)?;
    }
    Ok(())
}

/// The highest change id the archive's intact lines name, read through line by line: an
/// archive the operator put back may be large, and only the id is needed.
pub(super) fn highest_id(dir: &Path) -> Option<u64> {
    let file = File::open(dir.join(ARCHIVE_FILE)).ok()?;
    BufReader::new(file)
        .split(b'\n')
        .map_while(Result::ok)
        .filter_map(|l| store::decode::<Record>(&l).ok()?.id())
        .max()
}

/// Change `id`'s intent in the archive (read through), if it is there.
pub fn intent(dir: &Path, id: u64) -> Option<Intent> {
    find(dir, id, |r| match r {
        Record::Intent(i) if i.id == id => Some(i),
        _ => None,
    })
}

/// Change `id`'s outcome from the archive (read through; `None` when it is not there).
pub fn outcome(dir: &Path, id: u64) -> Option<Outcome> {
    find(dir, id, |r| match r {
        Record::Outcome {
            id: of, outcome, ..
        } if of == id => Some(outcome),
        _ => None,
    })
}

/// The first of the archive's records naming `id` that `pick` takes.
pub(super) fn find<T>(dir: &Path, id: u64, pick: impl Fn(Record) -> Option<T>) -> Option<T> {
    let file = File::open(dir.join(ARCHIVE_FILE)).ok()?;
    let needle = format!("\"id\":{id},");
    BufReader::new(file)
        .split(b'\n')
        .map_while(Result::ok)
        .filter(|l| l.windows(needle.len()).any(|w| w == needle.as_bytes()))
        .find_map(|l| store::decode::<Record>(&l).ok().and_then(&pick))
}

/// The detail of an archived change listed without an outcome.
pub const ARCHIVED_WITHOUT_OUTCOME: &str = "its outcome's line in the archive is damaged or \
     missing; whether it took effect is not known (the archive is history, never reconciled)";

/// Every entry from a position on ([`Journal::listing`]), with its position: the archive's
/// (read as it goes, up to its length at open; a damaged line skipped with a warning; a change
/// the live journal also lists skipped), then the live journal's. A detached one
/// ([`Journal::detached_listing`]) outlives the journal and its lock.
pub struct Listing<'a> {
    archive: Option<Lines>,
    /// Changes listed from the live journal: a copy in the archive (left by a pass that did not
    /// finish) is not listed again.
    live_ids: BTreeSet<u64>,
    /// The archive's length at open: the live entries' positions start there.
    base: usize,
    live_from: usize,
    live: Box<dyn Iterator<Item = Entry> + 'a>,
    warnings: Vec<String>,
}

impl<'a> Listing<'a> {
    pub(super) fn new(journal: &'a Journal, from: usize) -> Self {
        let live_from = (from as u64).saturating_sub(journal.archive_len()) as usize;
        Self::with_live(journal, from, Box::new(journal.entries_from(live_from)))
    }

    /// The listing from `from` on, the archive opened now (under the journal's lock), the live
    /// journal's entries from `live`.
    fn with_live(
        journal: &Journal,
        from: usize,
        live: Box<dyn Iterator<Item = Entry> + 'a>,
    ) -> Self {
        let end = journal.archive_len();
        let mut warnings = Vec::new();
        let archive = ((from as u64) < end)
            .then(|| Lines::open(journal.dir(), from as u64, end))
            .and_then(|r| {
                r.map_err(|e| warnings.push(format!("{ARCHIVE_FILE}: {e}; not listed")))
                    .ok()
            })
            .map(|(lines, realigned)| {
                if realigned {
                    // Not a position this agent handed out: one from before a restart that
                    // archived the journal (positions past the archive's length at open then
                    // count live entries). It is at or before the first entry not listed yet
                    // (each entry's line is longer than a byte), so going on from the next
                    // whole line skips none; some already listed may come again.
                    warnings.push(
                        "the journal was archived since this listing started (the agent \
                         restarted): going on from the next whole record of the archive; \
                         entries already listed may come again (kpo journal leaves them out)"
                            .to_string(),
                    );
                }
                lines
            });
        Listing {
            live_ids: journal.st.live_listed().filter_map(Record::id).collect(),
            archive,
            base: end as usize,
            live_from: (from as u64).saturating_sub(end) as usize,
            live,
            warnings,
        }
    }

    /// What reading the archive found so far (damaged lines).
    pub fn warnings(&mut self) -> Vec<String> {
        std::mem::take(&mut self.warnings)
    }

    fn next_archived(&mut self) -> Option<(usize, Entry)> {
        let lines = self.archive.as_mut()?;
        loop {
            let (at, r) = lines.next(&mut self.warnings)?;
            // An outcome not right after its intent (a change is archived whole, its outcome
            // beside its intent) is one whose intent's line was lost.
            if !r.is_listed() && !r.can_stand_for_its_intent() {
                continue;
            }
            let id = r.id()?;
            // Its outcome (and read-back) follow it: a change is archived whole.
            let mut outcome = None;
            while let Some(next) = lines.peek_record() {
                if next.id() != Some(id) || next.is_listed() {
                    break;
                }
                if let Some((_, Record::Outcome { outcome: o, .. })) =
                    lines.next(&mut self.warnings)
                {
                    outcome = Some(o);
                }
            }
            if self.live_ids.contains(&id) {
                continue;
            }
            if let Some(mut e) = entry_of(&r, outcome.as_ref()) {
                // A change is archived whole, and the archive is never reconciled: `incomplete`
                // alone would read as a change waiting for the next start.
                if e.status == "incomplete" {
                    e.detail = Some(ARCHIVED_WITHOUT_OUTCOME.into());
                }
                return Some((at as usize, e));
            }
        }
    }
}

impl Listing<'static> {
    /// Every entry ([`Journal::detached_listing`]): the live journal's copied now, the archive
    /// opened now and read later, up to its length now. What a later opener of the journal may
    /// do to the archive (a pass appends to it; a start cuts only what an unfinished pass
    /// appended past the last pass's end) leaves those bytes as they are.
    pub(super) fn detached(journal: &Journal) -> Self {
        let live: Vec<Entry> = journal.entries_from(0).collect();
        Self::with_live(journal, 0, Box::new(live.into_iter()))
    }
}

impl Iterator for Listing<'_> {
    type Item = (usize, Entry);

    fn next(&mut self) -> Option<(usize, Entry)> {
        if let Some(found) = self.next_archived() {
            return Some(found);
        }
        self.archive = None;
        let e = self.live.next()?;
        let at = self.base + self.live_from;
        self.live_from += 1;
        Some((at, e))
    }
}

/// The archive's lines from an offset to an end, decoded one at a time.
struct Lines {
    reader: BufReader<File>,
    at: u64,
    end: u64,
    peeked: Option<Option<(u64, Result<Record, String>)>>,
}

impl Lines {
    /// The lines from `from` on, or from the next line's start if `from` is within a line (and
    /// then `true`).
    fn open(dir: &Path, from: u64, end: u64) -> io::Result<(Self, bool)> {
        let mut file = File::open(dir.join(ARCHIVE_FILE))?;
        let within = !ends_a_line(&mut file, from)?;
        file.seek(SeekFrom::Start(from))?;
        let mut lines = Lines {
            reader: BufReader::new(file),
            at: from,
            end,
            peeked: None,
        };
        if within {
            let mut rest = Vec::new();
            let limit = end - from;
            lines.at += (&mut lines.reader)
                .take(limit)
                .read_until(b'\n', &mut rest)? as u64;
        }
        Ok((lines, within))
    }

    /// The next line, undecoded into a record or why not; `None` at the end.
    fn read(&mut self) -> Option<(u64, Result<Record, String>)> {
        loop {
            if self.at >= self.end {
                return None;
            }
            let start = self.at;
            let mut line = Vec::new();
            let limit = self.end - self.at;
            match (&mut self.reader).take(limit).read_until(b'\n', &mut line) {
                Ok(0) => return None,
                Ok(n) => self.at += n as u64,
                Err(e) => {
                    self.at = self.end;
                    return Some((start, Err(format!("cannot be read ({e})"))));
                }
            }
            if line.last() != Some(&b'\n') {
                return Some((
                    start,
                    Err(format!(
                        "is a torn record ({} bytes without an end)",
                        line.len()
                    )),
                ));
            }
            line.pop();
            if !line.is_empty() {
                return Some((
                    start,
                    store::decode(&line).map_err(|e| format!("is damaged ({e})")),
                ));
            }
        }
    }

    fn peek_record(&mut self) -> Option<&Record> {
        if self.peeked.is_none() {
            self.peeked = Some(self.read());
        }
        match self.peeked.as_ref()? {
            Some((_, Ok(r))) => Some(r),
            _ => None,
        }
    }

    /// The next intact record and where it starts; a damaged line is skipped with a warning.
    fn next(&mut self, warnings: &mut Vec<String>) -> Option<(u64, Record)> {
        loop {
            let line = match self.peeked.take() {
                Some(peeked) => peeked,
                None => self.read(),
            };
            match line? {
                (at, Ok(r)) => return Some((at, r)),
                (at, Err(why)) => {
                    let w = format!("{ARCHIVE_FILE}: the line at byte {at} {why}; skipped");
                    tracing::warn!("{w}");
                    warnings.push(w);
                }
            }
        }
    }
}
