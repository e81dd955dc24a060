//! Archiving at open ([`super::archive`]): the state is the same, the history is all there.
use std::{os::unix::fs::PermissionsExt, time::Duration};

use super::{
    archive::{self, Options, ARCHIVE_FILE},
    store, *,
};
use crate::{
    change::{tests::kernel, ChangePath},
    control::{journal_page, Control, RevertRequest},
    policy::Policy,
};

const A: &str = "net.core.somaxconn@netns:4026539999";
const B: &str = "net.core.netdev_max_backlog";
const DAY_MS: u64 = 24 * 3600 * 1000;

fn addr(s: &str) -> ParamAddress {
    s.parse().unwrap()
}

fn private_tempdir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    store::make_private(dir.path());
    dir
}

fn this_boot() -> Boot {
    Boot {
        id: current_boot(),
        started_ms: boot_started_ms(),
    }
}

/// Archiving as of `days` days from now, past a threshold of one byte.
fn archiving(days: u64) -> Options {
    Options {
        threshold: 1,
        now_ms: Some(now_ms() + days * DAY_MS),
        // The clock is days after the newest record here on purpose.
        max_ahead: Duration::from_secs(365 * 24 * 3600),
        ..Options::default()
    }
}

/// No archiving, whatever the size.
fn never() -> Options {
    Options {
        threshold: u64::MAX,
        ..Options::default()
    }
}

fn open(dir: &Path, options: Options) -> Journal {
    Journal::open_with(dir, Holder::Cli, Duration::ZERO, this_boot(), options).unwrap()
}

fn change(j: &mut Journal, a: &str, before: i64, after: i64) -> u64 {
    change_by(j, a, before, after, Source::Rules)
}

fn change_by(j: &mut Journal, a: &str, before: i64, after: i64, source: Source) -> u64 {
    let id = j
        .record_intent(
            &addr(a),
            &Value::Int(before.into()),
            &Value::Int(after.into()),
            source,
            "test",
            IntentKind::Change,
        )
        .unwrap();
    j.record_outcome(
        id,
        Outcome::Applied {
            read_back: Value::Int(after.into()),
            reconciled: false,
            why: None,
        },
    )
    .unwrap();
    id
}

/// A history: 20 changes of A (original 4096), a refusal, B changed then yielded to a person, a
/// quarantine for a week, the pause.
fn history(dir: &Path) {
    let mut j = open(dir, never());
    for v in 4096..4116 {
        change(&mut j, A, v, v + 1);
    }
    j.record_refusal(
        &addr(A),
        None,
        &Value::Int(1),
        Source::Rules,
        "test",
        "below min",
    )
    .unwrap();
    change(&mut j, B, 1000, 2000);
    j.set_yielded(&addr(B), Some(Value::Int(3000)), "pid 42 (sysctl)")
        .unwrap();
    j.quarantine(
        &addr(A),
        &Value::Int(9000),
        Duration::from_secs(7 * 24 * 3600),
        "p99 rose",
    )
    .unwrap();
    j.set_paused(true, "op").unwrap();
}

fn copy_dir(from: &Path) -> tempfile::TempDir {
    let to = private_tempdir();
    for name in [store::JOURNAL_FILE, ARCHIVE_FILE] {
        if from.join(name).exists() {
            std::fs::copy(from.join(name), to.path().join(name)).unwrap();
        }
    }
    to
}

fn size(dir: &Path, name: &str) -> u64 {
    std::fs::metadata(dir.join(name)).map_or(0, |m| m.len())
}

fn ids(j: &Journal) -> Vec<u64> {
    let (entries, warnings) = j.all_entries();
    assert!(warnings.is_empty(), "{warnings:?}");
    entries.iter().map(|e| e.id).collect()
}

fn archived_records(dir: &Path) -> Vec<Record> {
    store::load_records::<Record>(dir, ARCHIVE_FILE)
        .unwrap()
        .records
}

/// State compared as archiving checks it, and as `kpo status` shows it.
fn assert_same_state(whole: &Journal, archived: &Journal, now: u64) {
    let differ = archive::differences(&whole.st, &archived.st, now - DAY_MS);
    assert!(differ.is_empty(), "{differ:?}");
    let status = |j: &Journal| -> Vec<String> {
        j.params()
            .map(|p| {
                format!(
                    "{} {:?} {:?} {} {:?}",
                    p.key,
                    p.original,
                    p.last_applied,
                    p.applied.len() + p.archived_changes,
                    p.yielded
                )
            })
            .collect()
    };
    assert_eq!(status(whole), status(archived));
    assert_eq!(whole.paused(), archived.paused());
}

#[test]
fn an_oversized_journal_is_archived_with_the_same_state_and_all_its_history() {
    let dir = private_tempdir();
    history(dir.path());
    let whole_dir = copy_dir(dir.path());
    let whole = open(whole_dir.path(), never());
    let before_bytes = size(dir.path(), store::JOURNAL_FILE);
    let old_records = whole.records().to_vec();

    // The usual choice suffices: no key keeps its whole history.
    let options = archiving(2);
    let now = options.now_ms.unwrap();
    let plan = archive::plan(&whole.st, &this_boot(), now, now - DAY_MS, 0).unwrap();
    assert!(plan.kept_whole.is_empty(), "{:?}", plan.kept_whole);

    let mut j = open(dir.path(), options);
    assert!(j.warnings().is_empty(), "{:?}", j.warnings());
    assert_same_state(&whole, &j, now);
    let after_bytes = size(dir.path(), store::JOURNAL_FILE);
    assert!(
        after_bytes < before_bytes / 2,
        "{after_bytes} of {before_bytes}"
    );
    assert!(j.records().len() < old_records.len() / 2);
    // The archive holds every old record, once: those dropped and copies of those kept.
    let mut archived = archived_records(dir.path());
    assert_eq!(archived.len(), old_records.len());
    let key = |r: &Record| serde_json::to_string(r).unwrap();
    let mut expected = old_records.clone();
    archived.sort_by_key(key);
    expected.sort_by_key(key);
    assert_eq!(archived, expected);
    for r in &old_records {
        assert!(
            j.records().contains(r) || archived.contains(r),
            "{r:?} lost"
        );
    }
    assert_eq!(
        std::fs::metadata(dir.path().join(ARCHIVE_FILE))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
    // Every entry, each once, in order.
    assert_eq!(ids(&j), (1..=22).collect::<Vec<_>>());
    assert_eq!(ids(&j), ids(&whole));
    assert!(j.entries().is_empty(), "every live entry is also archived");
    // Ids go on after the highest.
    let next = change(&mut j, A, 4116, 4117);
    assert_eq!(next, 23);
    assert_eq!(ids(&j), (1..=23).collect::<Vec<_>>());
}

#[test]
fn reopening_does_not_archive_again() {
    let dir = private_tempdir();
    history(dir.path());
    drop(open(dir.path(), archiving(2)));
    let journal = std::fs::read(dir.path().join(store::JOURNAL_FILE)).unwrap();
    let archive_bytes = size(dir.path(), ARCHIVE_FILE);
    let j = open(dir.path(), archiving(3));
    assert!(j.warnings().is_empty(), "{:?}", j.warnings());
    assert_eq!(
        std::fs::read(dir.path().join(store::JOURNAL_FILE)).unwrap(),
        journal
    );
    assert_eq!(size(dir.path(), ARCHIVE_FILE), archive_bytes);
}

/// A copy of the journal as it is now; then three more changes of A, archived by a pass `days`
/// days from now. Returns the copy and the highest id the archive holds after the pass.
fn copied_then_archived_on(dir: &Path, days: u64) -> (Vec<u8>, u64) {
    let older = std::fs::read(dir.join(store::JOURNAL_FILE)).unwrap();
    {
        let mut j = open(dir, never());
        for v in 5000..5003 {
            change(&mut j, A, v, v + 1);
        }
    }
    drop(open(dir, archiving(days)));
    let highest = archived_records(dir)
        .iter()
        .filter_map(Record::id)
        .max()
        .unwrap();
    (older, highest)
}

/// Whether a warning says the archive names change `id` past the journal.
fn archive_names(j: &Journal, id: u64) -> bool {
    let said = format!("journal.archive.log names change #{id}, and ");
    j.warnings().iter().any(|w| w.starts_with(&said))
}

/// The live journal lost (deleted, emptied) beside its archive: the archive's ids are said and
/// not handed out again (s50 storyW W2); a journal that says it was archived reads no archive.
#[test]
fn a_journal_lost_beside_its_archive_does_not_hand_the_archived_ids_out_again() {
    let dir = private_tempdir();
    history(dir.path());
    drop(open(dir.path(), archiving(2)));
    let highest = archived_records(dir.path())
        .iter()
        .filter_map(Record::id)
        .max()
        .unwrap();
    assert!(open(dir.path(), never()).warnings().is_empty());
    // Emptied.
    std::fs::write(dir.path().join(store::JOURNAL_FILE), "").unwrap();
    let mut j = open(dir.path(), never());
    assert_eq!(j.warnings().len(), 1, "{:?}", j.warnings());
    assert!(
        j.warnings()[0].starts_with(&format!(
            "journal.archive.log names change #{highest}, and it has none: the journal has \
             lost records"
        )),
        "{:?}",
        j.warnings()
    );
    assert_eq!(change(&mut j, A, 1, 2), highest + 1);
    // Said once: the next open knows of the loss, and reads no archive.
    drop(j);
    assert!(open(dir.path(), never()).warnings().is_empty());
    // A copy made now, with the loss recorded; a pass since; the copy restored: the loss it
    // recorded was of the archive as it was then (s50 review3 R3).
    let (backup, highest) = copied_then_archived_on(dir.path(), 3);
    std::fs::write(dir.path().join(store::JOURNAL_FILE), backup).unwrap();
    let j = open(dir.path(), never());
    assert!(archive_names(&j, highest), "{:?}", j.warnings());
    drop(j);
    // A pass since, then the journal restored from a copy made after it: the loss recorded
    // before that pass says nothing of this one (s50 review2 N2).
    drop(open(dir.path(), archiving(4)));
    let (older, highest) = copied_then_archived_on(dir.path(), 6);
    std::fs::write(dir.path().join(store::JOURNAL_FILE), older).unwrap();
    let j = open(dir.path(), never());
    assert!(archive_names(&j, highest), "{:?}", j.warnings());
}

/// A journal restored from an older copy that was archived once already: its `archived` record
/// names an archive shorter than the one there now, whose later pass it lost, and the ids of
/// that pass are said and not handed out again (s50 review J1).
#[test]
fn a_journal_restored_from_before_an_archive_pass_does_not_hand_its_ids_out_again() {
    let dir = private_tempdir();
    history(dir.path());
    drop(open(dir.path(), archiving(2)));
    let (older, highest) = copied_then_archived_on(dir.path(), 4);
    assert!(open(dir.path(), never()).warnings().is_empty());
    std::fs::write(dir.path().join(store::JOURNAL_FILE), older).unwrap();
    let mut j = open(dir.path(), never());
    assert!(archive_names(&j, highest), "{:?}", j.warnings());
    assert!(j.warnings().iter().any(|w| w.contains("and its last is #")));
    assert_eq!(change(&mut j, A, 1, 2), highest + 1);
}

/// An advisor's changes journaled by a clock that has stepped back since: those up to an hour
/// ahead count against the hourly limit, those further ahead do not (a clock stepped back by a
/// day held advisors off for the day).
#[test]
fn changes_a_clock_stepped_back_puts_in_the_future_count_only_within_the_hour() {
    let dir = private_tempdir();
    let mut j = open(dir.path(), never());
    for (before, after) in [(1000, 2000), (2000, 3000)] {
        change_by(&mut j, B, before, after, Source::Rules);
    }
    let count = |back: Duration| {
        let now = std::time::SystemTime::now() - back;
        j.context(&addr(B), &Value::Int(9000), now)
            .changes_last_hour
    };
    assert_eq!(count(Duration::ZERO), 2);
    assert_eq!(count(Duration::from_secs(1800)), 2);
    assert_eq!(count(Duration::from_secs(2 * 3600)), 0);
}

/// A quarantine journaled by a clock that has stepped back since: by less than its length, it
/// holds until its end; by more (a day), it is over rather than a day longer.
#[test]
fn a_quarantine_a_clock_stepped_back_puts_far_ahead_is_over() {
    let dir = private_tempdir();
    let mut j = open(dir.path(), never());
    change(&mut j, B, 1000, 2000);
    j.quarantine(
        &addr(B),
        &Value::Int(9000),
        Duration::from_secs(1800),
        "p99",
    )
    .unwrap();
    let q = j.param_state(&addr(B)).unwrap().quarantine[0].clone();
    assert_eq!(q.until_ms - q.since_ms, 1_800_000);
    let now = to_time(q.since_ms) - Duration::from_secs(86_400);
    let ctx = j.context(&addr(B), &Value::Int(9000), now);
    assert_eq!(ctx.quarantined_until, None);
    let now = to_time(q.since_ms) - Duration::from_secs(1700);
    let ctx = j.context(&addr(B), &Value::Int(9000), now);
    assert_eq!(ctx.quarantined_until, Some(to_time(q.until_ms)));
    // On time, its end as journaled.
    let ctx = j.context(&addr(B), &Value::Int(9000), to_time(q.since_ms));
    assert_eq!(ctx.quarantined_until, Some(to_time(q.until_ms)));
}

/// The original, a yield, a quarantine in force and the pause are old, and still hold; the
/// hourly count and cooldown of the latest change too.
#[test]
fn old_originals_yields_quarantines_and_the_pause_stay_in_force() {
    let dir = private_tempdir();
    history(dir.path());
    let j = open(dir.path(), archiving(2));
    let a = j.param_state(&addr(A)).unwrap();
    assert_eq!(a.original, Some(Value::Int(4096)));
    assert_eq!(a.last_applied, Some(Value::Int(4116)));
    // The original's change and the latest stay live (the latest for cooldowns).
    assert_eq!((a.applied.len(), a.archived_changes), (2, 18));
    let now = UNIX_EPOCH + Duration::from_millis(now_ms() + 2 * DAY_MS);
    let ctx = j.context(&addr(A), &Value::Int(9000), now);
    assert!(ctx.paused && ctx.quarantined_until.unwrap() > now);
    assert_eq!(ctx.last_change.unwrap(), to_time(a.applied[1].1));
    assert!(j.context(&addr(B), &Value::Int(1), now).yielded);
    assert_eq!(
        j.param_state(&addr(B)).unwrap().original,
        Some(Value::Int(1000))
    );
}

const POLICY: &str = "[params.\"net.core.somaxconn\"]\nmode = \"auto\"\nmin = 128\nmax = 65535\n";

fn change_path(j: Journal, k: &crate::change::tests::FakeActuators) -> ChangePath {
    ChangePath::new(
        Policy::parse(POLICY, "test.toml").unwrap(),
        j,
        Box::new(k.clone()),
    )
}

/// An interrupted change, old, stays live: reconciliation still settles it, and the next pass
/// archives it whole (listed once, with its outcome).
#[test]
fn an_old_interrupted_change_stays_live_and_is_reconciled() {
    let dir = private_tempdir();
    history(dir.path());
    let interrupted = {
        let mut j = open(dir.path(), never());
        j.record_intent(
            &addr(A),
            &Value::Int(4116),
            &Value::Int(5000),
            Source::Rules,
            "killed mid-change",
            IntentKind::Change,
        )
        .unwrap()
    };
    let j = open(dir.path(), archiving(2));
    assert_eq!(
        j.incomplete().iter().map(|i| i.id).collect::<Vec<_>>(),
        [interrupted]
    );
    let k = kernel(&[(A, Value::Int(5000))]);
    let mut path = change_path(j, &k);
    let reports = path.reconcile().unwrap();
    assert_eq!(reports.len(), 1);
    assert_eq!(
        path.journal.param_state(&addr(A)).unwrap().last_applied,
        Some(Value::Int(5000))
    );
    drop(path);
    let j = open(dir.path(), archiving(3));
    assert!(j.warnings().is_empty(), "{:?}", j.warnings());
    let (entries, _) = j.all_entries();
    let listed: Vec<_> = entries.iter().filter(|e| e.id == interrupted).collect();
    assert_eq!(listed.len(), 1);
    assert_eq!(
        (listed[0].status.as_str(), listed[0].detail.as_deref()),
        (
            "applied",
            Some("interrupted after the kernel write; found applied")
        )
    );
    assert_eq!(ids(&j).len(), interrupted as usize);
}

/// A crash after the archive's fsync, before the journal is replaced: the records are in both
/// files; the listing shows each once and the state is the whole journal's; the next open
/// finishes the pass as an uninterrupted one would have.
#[test]
fn a_crash_between_the_archive_and_the_rewrite_loses_and_repeats_nothing() {
    let dir = private_tempdir();
    history(dir.path());
    let clean = copy_dir(dir.path());
    let options = archiving(2);
    let crash = Options {
        crash_before_rewrite: true,
        ..options.clone()
    };
    let journal = std::fs::read(dir.path().join(store::JOURNAL_FILE)).unwrap();
    drop(open(dir.path(), crash));
    assert!(size(dir.path(), ARCHIVE_FILE) > 0);
    assert_eq!(
        std::fs::read(dir.path().join(store::JOURNAL_FILE)).unwrap(),
        journal
    );
    {
        let j = open(dir.path(), never());
        assert_eq!(ids(&j), (1..=22).collect::<Vec<_>>());
        let whole = open(clean.path(), never());
        assert_same_state(&whole, &j, now_ms());
    }
    // Finished at the next open, as an uninterrupted pass would have (the appended tail cut).
    let j = open(dir.path(), options.clone());
    assert!(j.warnings().is_empty(), "{:?}", j.warnings());
    assert_eq!(ids(&j), (1..=22).collect::<Vec<_>>());
    drop(j);
    drop(open(clean.path(), options));
    for name in [store::JOURNAL_FILE, ARCHIVE_FILE] {
        let read = |d: &Path| std::fs::read(d.join(name)).unwrap();
        // The marker's time is the pass's; the rest is byte for byte.
        let lines = |b: Vec<u8>| -> Vec<String> {
            String::from_utf8(b)
                .unwrap()
                .lines()
                .filter(|l| !l.contains("\"type\":\"archived\""))
                .map(str::to_string)
                .collect()
        };
        assert_eq!(lines(read(dir.path())), lines(read(clean.path())), "{name}");
    }
}

/// `kpo journal` pages through the archive, then the live journal, every entry once in order,
/// offline and through the control interface.
#[test]
fn pages_span_the_archive_and_the_live_journal() {
    let dir = private_tempdir();
    history(dir.path());
    let mut j = open(dir.path(), archiving(2));
    for n in 0..5 {
        change(&mut j, A, 4116 + n, 4117 + n);
    }
    let all: Vec<u64> = (1..=27).collect();
    assert_eq!(ids(&j), all);
    let (mut paged, mut from, mut pages, mut crossed) = (Vec::new(), Some(0), 0, false);
    while let Some(at) = from {
        // Three entries a page: one spans both files.
        let page = journal_page(&j, at, 850);
        assert!(page.warnings.is_empty(), "{:?}", page.warnings);
        assert!(!page.entries.is_empty());
        let first = page.entries[0].id;
        crossed |= first <= 22 && page.entries.last().unwrap().id > 22;
        paged.extend(page.entries.iter().map(|e| e.id));
        from = page.next;
        pages += 1;
    }
    assert_eq!(paged, all);
    assert!(pages > 3, "{pages}");
    assert!(crossed, "a page spans both files");
    // As the CLI reads it, and whole (`{"op":"journal"}`).
    let k = kernel(&[(A, Value::Int(4121))]);
    let mut path = change_path(j, &k);
    let mut listed = Vec::new();
    crate::cli::for_each_journal_entry(&mut path, |e| {
        listed.push(e.id);
        Ok(())
    })
    .unwrap();
    assert_eq!(listed, all);
    assert_eq!(
        path.journal()
            .unwrap()
            .iter()
            .map(|e| e.id)
            .collect::<Vec<_>>(),
        all
    );
}

/// A damaged line in the archive is skipped with a warning naming it; the listing goes on. A
/// change whose intent's line it was is listed from its outcome, which repeats the intent.
#[test]
fn a_damaged_archive_line_is_skipped_with_a_warning() {
    let dir = private_tempdir();
    history(dir.path());
    drop(open(dir.path(), archiving(2)));
    let path = dir.path().join(ARCHIVE_FILE);
    let text = std::fs::read_to_string(&path).unwrap();
    let damaged = text.replacen(
        "\"reason\":\"test\",\"kind\":\"change\"",
        "\"reason\":\"tEst\",\"kind\":\"change\"",
        3,
    );
    assert_ne!(text, damaged);
    // And a torn last line.
    std::fs::write(&path, damaged + "0badc0de {\"type\":").unwrap();
    let j = open(dir.path(), never());
    let (entries, warnings) = j.all_entries();
    assert_eq!(entries.len(), 22);
    let lost: Vec<u64> = entries
        .iter()
        .filter(|e| e.reason == LOST_INTENT_REASON)
        .map(|e| e.id)
        .collect();
    assert_eq!(lost, [1, 2, 3], "the first three intents");
    assert_eq!(
        warnings
            .iter()
            .filter(|w| w.contains("is damaged (checksum mismatch); skipped"))
            .count(),
        3,
        "{warnings:?}"
    );
    // Listing reads to the archive's length at open, the torn line too.
    assert!(warnings.iter().any(|w| w.contains("torn")), "{warnings:?}");
    let page = journal_page(&j, 0, 1 << 20);
    assert_eq!(page.entries.len(), 22);
    assert_eq!(page.warnings.len(), 4);
}

/// `kpo revert ID` of an archived change does what it does for a live one that no longer holds
/// its parameter: it writes the change's value before, journaled as a revert of that id. An id
/// that was never a change is still refused.
#[test]
fn reverting_an_archived_change_is_reverting_a_live_one() {
    let dir = private_tempdir();
    {
        let mut j = open(dir.path(), never());
        for v in 0..3 {
            change_by(&mut j, A, 1000 * (v + 1), 1000 * (v + 2), Source::Operator);
        }
        for v in 0..5 {
            change(&mut j, B, 1000 + v, 1001 + v);
        }
    }
    let whole_dir = copy_dir(dir.path());
    let revert = |j: Journal| {
        let k = kernel(&[(A, Value::Int(4000))]);
        let mut path = change_path(j, &k);
        // Forced: #3, an operator's later change, holds the parameter, which a plain
        // `kpo revert 2` leaves to its author.
        let reports = Control::revert(&mut path, &RevertRequest::Forced(2), "op")
            .map(|r| r.iter().map(|r| r.describe()).collect::<Vec<_>>())
            .map_err(|e| e.to_string());
        let intent = path.journal.records().iter().rev().find_map(|r| match r {
            Record::Intent(i) => Some((i.kind.clone(), i.before.clone(), i.after.clone())),
            _ => None,
        });
        let value = path.read(&addr(A)).unwrap();
        let err = Control::revert(&mut path, &RevertRequest::Id(99), "op").unwrap_err();
        assert!(err.to_string().contains("no change #99"), "{err}");
        (reports, intent, value)
    };
    let live = revert(open(whole_dir.path(), never()));
    assert!(live.0.is_ok(), "{live:?}");
    assert_eq!(live.2, Value::Int(2000));
    let j = open(dir.path(), archiving(2));
    assert!(j.intent(2).is_none(), "archived and not needed");
    assert_eq!(revert(j), live);
}

/// The check refuses a journal to be written that would not give the same state: nothing is
/// written, and the warning names what differed.
#[test]
fn the_check_refuses_a_wrong_set_of_records() {
    let dir = private_tempdir();
    history(dir.path());
    let journal = std::fs::read(dir.path().join(store::JOURNAL_FILE)).unwrap();
    // The whole change: its outcome alone would stand for its intent.
    fn drop_first_change(live: &mut Vec<Record>) {
        assert!(live.iter().any(|r| r.id() == Some(1)));
        live.retain(|r| r.id() != Some(1));
    }
    let options = Options {
        tamper: Some(drop_first_change),
        ..archiving(2)
    };
    let j = open(dir.path(), options);
    let warning = j
        .warnings()
        .iter()
        .find(|w| w.contains("was not archived"))
        .unwrap_or_else(|| panic!("{:?}", j.warnings()));
    assert!(warning.contains(&format!("{A}: original")), "{warning}");
    assert_eq!(
        std::fs::read(dir.path().join(store::JOURNAL_FILE)).unwrap(),
        journal
    );
    assert!(!dir.path().join(ARCHIVE_FILE).exists());
    assert_eq!(ids(&j), (1..=22).collect::<Vec<_>>());
    assert_eq!(
        j.param_state(&addr(A)).unwrap().original,
        Some(Value::Int(4096))
    );
}

/// Under the threshold nothing happens; recent records all stay.
#[test]
fn a_small_or_recent_journal_is_left_alone() {
    let dir = private_tempdir();
    history(dir.path());
    let journal = std::fs::read(dir.path().join(store::JOURNAL_FILE)).unwrap();
    drop(open(dir.path(), Options::default()));
    drop(open(
        dir.path(),
        Options {
            threshold: 1,
            ..Options::default()
        },
    ));
    assert_eq!(
        std::fs::read(dir.path().join(store::JOURNAL_FILE)).unwrap(),
        journal
    );
    assert!(!dir.path().join(ARCHIVE_FILE).exists());
}

/// The optimizer's run of changes (agent.rs reads where it started, and the value before it, at
/// the agent's start) is the same after archiving: rules 1000→2000, then the optimizer
/// 2000→3000→4000→5000 more than a day ago.
#[test]
fn the_optimizers_run_and_where_it_started_stay() {
    let dir = private_tempdir();
    let run_start;
    {
        let mut j = open(dir.path(), never());
        change_by(&mut j, B, 1000, 2000, Source::Rules);
        run_start = change_by(&mut j, B, 2000, 3000, Source::Optimizer);
        change_by(&mut j, B, 3000, 4000, Source::Optimizer);
        change_by(&mut j, B, 4000, 5000, Source::Optimizer);
    }
    let whole_dir = copy_dir(dir.path());
    let whole = open(whole_dir.path(), never());
    let first = |j: &Journal| {
        j.first_of_run(&addr(B), Source::Optimizer)
            .map(|i| (i.id, i.before.clone()))
    };
    assert_eq!(first(&whole), Some((run_start, Value::Int(2000))));
    let j = open(dir.path(), archiving(2));
    assert!(j.warnings().is_empty(), "{:?}", j.warnings());
    assert!(size(dir.path(), ARCHIVE_FILE) > 0, "nothing archived");
    assert_eq!(first(&j), first(&whole));
    drop(j);
    assert_eq!(first(&open(dir.path(), never())), first(&whole));
}

/// A change written and put back (a wrong read-back) counts towards the cooldown, which may be
/// longer than a day: the latest one stays live, whatever its age.
#[test]
fn the_latest_change_put_back_stays_for_the_cooldown() {
    let dir = private_tempdir();
    {
        let mut j = open(dir.path(), never());
        change(&mut j, B, 1000, 2000);
        std::thread::sleep(Duration::from_millis(5));
        let id = j
            .record_intent(
                &addr(B),
                &Value::Int(2000),
                &Value::Int(2001),
                Source::Rules,
                "test",
                IntentKind::Change,
            )
            .unwrap();
        j.record_read_back(id, &Value::Int(2004)).unwrap();
        j.record_outcome(
            id,
            Outcome::Reverted {
                why: "read back 2004".into(),
                read_back: Some(Value::Int(2000)),
            },
        )
        .unwrap();
        // A revert of the first whose write read back wrong too and was put back: the latest
        // record of B's that took effect, yet no change.
        let revert = j
            .record_intent(
                &addr(B),
                &Value::Int(2000),
                &Value::Int(1000),
                Source::Operator,
                "test",
                IntentKind::Revert { of: Some(id - 1) },
            )
            .unwrap();
        j.record_outcome(
            revert,
            Outcome::Reverted {
                why: "read back 1004".into(),
                read_back: Some(Value::Int(2000)),
            },
        )
        .unwrap();
        std::thread::sleep(Duration::from_millis(5));
        for v in 0..5 {
            change(&mut j, A, 4096 + v, 4097 + v);
        }
    }
    let whole_dir = copy_dir(dir.path());
    let whole = open(whole_dir.path(), never());
    let j = open(dir.path(), archiving(2));
    assert!(j.warnings().is_empty(), "{:?}", j.warnings());
    assert!(size(dir.path(), ARCHIVE_FILE) > 0, "nothing archived");
    let later = std::time::SystemTime::now() + Duration::from_secs(2 * 24 * 3600);
    let last_change = |j: &Journal| j.context(&addr(B), &Value::Int(2001), later).last_change;
    assert!(last_change(&whole).is_some());
    assert_eq!(last_change(&j), last_change(&whole));
    assert_eq!(
        j.param_state(&addr(B)).unwrap().put_back,
        whole.param_state(&addr(B)).unwrap().put_back
    );
}

/// Every record of the journal and the archive, markers aside.
fn every_record(dir: &Path) -> Vec<Record> {
    let mut all = store::load_records::<Record>(dir, store::JOURNAL_FILE)
        .unwrap()
        .records;
    all.extend(archived_records(dir));
    all.retain(|r| !matches!(r, Record::Archived { .. }));
    all
}

/// The operator rotated the archive, and later put the rotated file back after the new one (cat
/// .1 >> archive): its lines are past the length the marker acknowledged, and some of them are
/// also in the journal (kept there, and archived by the first pass). The next pass must not
/// take them for what an unfinished pass appended: cut, then dropped from the journal once the
/// quarantine expired, they would be nowhere.
#[test]
fn an_archive_put_back_after_rotation_is_not_cut() {
    let dir = private_tempdir();
    {
        let mut j = open(dir.path(), never());
        for v in 0..10 {
            change(&mut j, B, 1000 + v, 1001 + v);
        }
        j.quarantine(
            &addr(B),
            &Value::Int(9000),
            Duration::from_secs(3 * 24 * 3600),
            "p99",
        )
        .unwrap();
        j.set_paused(true, "op").unwrap();
    }
    drop(open(dir.path(), archiving(2)));
    let archive = dir.path().join(ARCHIVE_FILE);
    let rotated = dir.path().join("rotated");
    std::fs::rename(&archive, &rotated).unwrap();
    {
        let mut j = open(dir.path(), never());
        change(&mut j, B, 1010, 1011);
    }
    drop(open(dir.path(), archiving(2)));
    let mut bytes = std::fs::read(&archive).unwrap();
    bytes.extend(std::fs::read(&rotated).unwrap());
    std::fs::write(&archive, &bytes).unwrap();
    let before = every_record(dir.path());
    // Past the quarantine: no longer needed in the journal.
    drop(open(dir.path(), archiving(5)));
    let after = every_record(dir.path());
    let lost: Vec<&Record> = before.iter().filter(|r| !after.contains(r)).collect();
    assert!(lost.is_empty(), "lost: {lost:#?}");
    assert!(
        std::fs::metadata(&archive).unwrap().len() >= bytes.len() as u64,
        "the archive was cut"
    );
}

/// A quarantine whose record is old but that ends less than a day before the pass's time stays:
/// in force is judged with the margin recent records have (a clock somewhat ahead).
#[test]
fn a_quarantine_ending_within_the_margin_stays() {
    let dir = private_tempdir();
    {
        let mut j = open(dir.path(), never());
        change(&mut j, B, 1000, 2000);
        j.quarantine(
            &addr(B),
            &Value::Int(9000),
            Duration::from_secs(3 * 24 * 3600),
            "p99",
        )
        .unwrap();
        change(&mut j, B, 2000, 3000);
    }
    // Half a day after the quarantine's end by a clock that may be ahead.
    let options = Options {
        now_ms: Some(now_ms() + 3 * DAY_MS + DAY_MS / 2),
        ..archiving(0)
    };
    drop(open(dir.path(), options));
    assert!(size(dir.path(), ARCHIVE_FILE) > 0, "nothing archived");
    let j = open(dir.path(), never());
    let at = std::time::SystemTime::now() + Duration::from_secs(2 * 24 * 3600);
    let ctx = j.context(&addr(B), &Value::Int(9000), at);
    assert!(
        ctx.quarantined_until.is_some(),
        "the quarantine was dropped"
    );
}

/// The clock is three days ahead at open (a bad RTC, NTP not synced yet): no pass, so a
/// quarantine still in force by the real clock is not judged over.
#[test]
fn a_clock_far_ahead_of_the_journal_archives_nothing() {
    let dir = private_tempdir();
    {
        let mut j = open(dir.path(), never());
        change(&mut j, B, 1000, 2000);
        j.quarantine(
            &addr(B),
            &Value::Int(9000),
            Duration::from_secs(2 * 24 * 3600),
            "p99",
        )
        .unwrap();
        change(&mut j, B, 2000, 3000);
    }
    let journal = std::fs::read(dir.path().join(store::JOURNAL_FILE)).unwrap();
    let ahead = Options {
        threshold: 1,
        now_ms: Some(now_ms() + 3 * DAY_MS),
        ..Options::default()
    };
    drop(open(dir.path(), ahead));
    assert!(!dir.path().join(ARCHIVE_FILE).exists());
    assert_eq!(
        std::fs::read(dir.path().join(store::JOURNAL_FILE)).unwrap(),
        journal
    );
    let j = open(dir.path(), never());
    let ctx = j.context(&addr(B), &Value::Int(9000), std::time::SystemTime::now());
    assert!(
        ctx.quarantined_until.is_some(),
        "the quarantine was dropped"
    );
}

/// `kpo journal` paging across an agent restart that archived the journal: the position the
/// first page gave is stale; the rest is listed with no entry twice, none missing, and no false
/// damage.
#[test]
fn a_page_position_from_before_a_restart_that_archived() {
    let dir = private_tempdir();
    {
        let mut j = open(dir.path(), never());
        for v in 0..30 {
            change(&mut j, B, 1000 + v, 1001 + v);
        }
    }
    let first = journal_page(&open(dir.path(), never()), 0, 3000);
    assert!(first.next.is_some());
    let j = open(dir.path(), archiving(2));
    assert!(size(dir.path(), ARCHIVE_FILE) > 0, "nothing archived");
    let (mut listed, mut warnings) = (Vec::new(), Vec::new());
    crate::cli::page_through(
        |from| {
            let page = if from == 0 {
                first.clone()
            } else {
                journal_page(&j, from, 3000)
            };
            warnings.extend(page.warnings.clone());
            Ok(page)
        },
        |e| {
            listed.push(e.id);
            Ok(())
        },
    )
    .unwrap();
    assert_eq!(listed, (1..=30).collect::<Vec<_>>(), "{warnings:?}");
    assert!(
        !warnings
            .iter()
            .any(|w| w.contains("damaged") || w.contains("torn")),
        "{warnings:?}"
    );
}

/// The record that ended a run before the current one, when it is recent, is copied after the
/// marker like every recent record, and not also before it (where it would have to be in the
/// archive too).
#[test]
fn a_recent_record_that_ended_a_run_is_not_kept_twice() {
    let dir = private_tempdir();
    {
        let mut j = open(dir.path(), never());
        change_by(&mut j, B, 1000, 2000, Source::Rules);
        change_by(&mut j, A, 1, 2, Source::Rules);
    }
    std::thread::sleep(Duration::from_millis(20));
    let recent_from = now_ms();
    {
        let mut j = open(dir.path(), never());
        j.set_yielded(&addr(B), Some(Value::Int(3000)), "pid 42")
            .unwrap();
        change_by(&mut j, B, 3000, 4000, Source::Optimizer);
    }
    let options = Options {
        threshold: 1,
        now_ms: Some(now_ms()),
        keep_recent: Duration::from_millis(now_ms() - recent_from + 10),
        ..Options::default()
    };
    let j = open(dir.path(), options);
    assert!(j.warnings().is_empty(), "{:?}", j.warnings());
    assert!(size(dir.path(), ARCHIVE_FILE) > 0, "nothing archived");
    let yields = |rs: &[Record]| {
        rs.iter()
            .filter(|r| matches!(r, Record::Yield { .. }))
            .count()
    };
    assert_eq!(yields(&store::load(dir.path()).unwrap().records), 1);
    assert_eq!(yields(&archived_records(dir.path())), 0);
}

/// Rewrites line `n` (from 1) of the journal so that its checksum no longer matches, replacing
/// `from` with `to` in it once.
fn damage_line(dir: &Path, n: usize, from: &str, to: &str) {
    let path = dir.join(store::JOURNAL_FILE);
    let text = std::fs::read_to_string(&path).unwrap();
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    assert!(lines[n - 1].contains(from), "{}", lines[n - 1]);
    lines[n - 1] = lines[n - 1].replacen(from, to, 1);
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
}

/// The second of three changes lost its intent line; its outcome, which repeats it, settles the
/// parameter. The pass at the same open moves that outcome to the archive: judged after it, the
/// change would look lost and the parameter unsettled. Judged on the journal as found, it is not.
#[test]
fn damage_is_judged_before_the_pass_moves_what_settles_it() {
    let dir = private_tempdir();
    {
        let mut j = open(dir.path(), never());
        for v in 4096..4099 {
            change(&mut j, A, v, v + 1);
        }
    }
    damage_line(dir.path(), 3, "\"reason\"", "\"rEason\"");
    let j = open(dir.path(), archiving(2));
    assert!(
        archived_records(dir.path())
            .iter()
            .any(|r| matches!(r, Record::Outcome { id: 2, .. })),
        "the pass archived the outcome"
    );
    assert!(j.intent(2).is_none() && j.outcome(2).is_none());
    let p = j.param_state(&addr(A)).unwrap();
    assert_eq!(p.unsettled, None, "{:?}", j.warnings());
    assert_eq!(p.last_applied, Some(Value::Int(4099)));
    assert!(
        !j.records()
            .iter()
            .any(|r| matches!(r, Record::Damaged { .. })),
        "{:?}",
        j.records()
    );
}

/// A journal written before outcomes repeated their intent: the second change's outcome names no
/// parameter, and the damaged intent line its id cannot be read from names one. That parameter is
/// unsettled (its last applied value may be an older change's) even though the pass at the same
/// open moves that outcome to the archive, which would leave nothing to tell it by.
#[test]
fn an_outcome_naming_no_parameter_unsettles_one_though_the_pass_archives_it() {
    let dir = private_tempdir();
    {
        let mut j = open(dir.path(), never());
        for v in 4096..4099 {
            change(&mut j, A, v, v + 1);
        }
    }
    let legacy: Vec<Record> = store::load(dir.path())
        .unwrap()
        .records
        .into_iter()
        .map(|r| match r {
            Record::Outcome {
                id, ts_ms, outcome, ..
            } => Record::Outcome {
                id,
                ts_ms,
                outcome,
                intent: None,
            },
            other => other,
        })
        .collect();
    store::rewrite(dir.path(), store::JOURNAL_FILE, &legacy).unwrap();
    damage_line(dir.path(), 3, "\"id\":2,", "\"iD\":2,");
    let j = open(dir.path(), archiving(2));
    assert!(
        archived_records(dir.path())
            .iter()
            .any(|r| matches!(r, Record::Outcome { id: 2, .. })),
        "the pass archived the outcome"
    );
    let p = j.param_state(&addr(A)).unwrap();
    assert!(
        p.unsettled
            .as_deref()
            .is_some_and(|why| why.starts_with("journal.log line 3, damaged, may have held")),
        "{:?} {:?}",
        p.unsettled,
        j.warnings()
    );
}

/// The guard's revert, then its quarantine (an hour). Days later a pass drops the quarantine,
/// ended over a day ago, and keeps the revert (the parameter's latest change): the revert must
/// not be taken for one whose quarantine a kill lost, at this open nor the next, or a
/// `guard.quarantine` raised since would bring the quarantine back.
#[test]
fn a_quarantine_a_pass_dropped_does_not_come_back() {
    let dir = private_tempdir();
    {
        let mut j = open(dir.path(), never());
        super::tests::guard_revert_without_its_quarantine(&mut j, &addr(A));
        j.quarantine(
            &addr(A),
            &Value::Int(9000),
            Duration::from_secs(3600),
            "p99 rose",
        )
        .unwrap();
    }
    let week = Duration::from_secs(7 * 24 * 3600);
    let mut j = open(dir.path(), archiving(3));
    assert!(j.intent(2).is_some(), "the revert is kept");
    assert!(
        !j.records()
            .iter()
            .any(|r| matches!(r, Record::Quarantine { .. })),
        "the pass dropped the ended quarantine"
    );
    assert_eq!(
        j.restore_guard_quarantines(week).unwrap(),
        Vec::<String>::new()
    );
    drop(j);
    let mut j = open(dir.path(), never());
    assert_eq!(
        j.restore_guard_quarantines(week).unwrap(),
        Vec::<String>::new()
    );
    let ctx = j.context(&addr(A), &Value::Int(9000), std::time::SystemTime::now());
    assert_eq!(ctx.quarantined_until, None);
}

/// A change whose intent line was lost is listed from its outcome once the pass has moved that
/// outcome to the archive, in its place and once.
#[test]
fn an_archived_change_whose_intent_line_was_lost_is_listed_from_its_outcome() {
    let dir = private_tempdir();
    {
        let mut j = open(dir.path(), never());
        for v in 4096..4099 {
            change(&mut j, A, v, v + 1);
        }
    }
    damage_line(dir.path(), 3, "\"reason\"", "\"rEason\"");
    let j = open(dir.path(), archiving(2));
    assert!(archived_records(dir.path())
        .iter()
        .any(|r| matches!(r, Record::Outcome { id: 2, .. })));
    let (entries, warnings) = j.all_entries();
    assert!(warnings.is_empty(), "{warnings:?}");
    let listed: Vec<(u64, &str, &str)> = entries
        .iter()
        .map(|e| (e.id, e.reason.as_str(), e.status.as_str()))
        .collect();
    assert_eq!(
        listed,
        [
            (1, "test", "applied"),
            (2, LOST_INTENT_REASON, "applied"),
            (3, "test", "applied")
        ]
    );
}

/// `kpo revert ID` of what `kpo journal` lists but cannot be reverted by id (story AH, F1 and
/// F2): a refusal and a change whose intent's line was lost say what they are, live and
/// archived, not that there is no such id. An archived change whose outcome's line is damaged is
/// listed `incomplete` with why (F3): the archive is never reconciled.
#[test]
fn what_is_listed_but_not_revertible_says_why_live_and_archived() {
    let dir = private_tempdir();
    {
        let mut j = open(dir.path(), never());
        change(&mut j, A, 4096, 4097);
        j.record_refusal(
            &addr(A),
            Some(&Value::Int(4097)),
            &Value::Int(99999),
            Source::Operator,
            "too big",
            "out of bounds",
        )
        .unwrap();
        for v in 4097..4100 {
            change(&mut j, A, v, v + 1);
        }
        change(&mut j, B, 1000, 1001);
    }
    // #3's intent line (line 4).
    damage_line(dir.path(), 4, "\"reason\"", "\"rEason\"");
    let refused = format!(
        "journal: #2 is not a change: it is the refusal of {A} = 99999, which wrote nothing; \
         nothing to revert"
    );
    let lost = format!(
        "journal: #3's intent line was lost to damage (`kpo journal` lists it from its outcome's \
         copy), so where it wrote cannot be read and it is not reverted by id; the value it \
         replaced was 4097 ({A})"
    );
    let errors = |j: Journal| {
        let k = kernel(&[(A, Value::Int(4100))]);
        let mut path = change_path(j, &k);
        [2, 3, 99].map(|id| {
            Control::revert(&mut path, &RevertRequest::Id(id), "op")
                .unwrap_err()
                .to_string()
        })
    };
    let live = errors(open(dir.path(), never()));
    assert_eq!(
        live,
        [
            refused,
            lost,
            "journal: no change #99 in the journal or its archive (`kpo journal` lists the ids)"
                .to_string()
        ]
    );
    let j = open(dir.path(), archiving(2));
    assert!(
        j.records().iter().all(|r| !matches!(r.id(), Some(2 | 3))),
        "archived and not needed: {:?}",
        j.records()
    );
    assert_eq!(errors(j), live);
    // #4's outcome line in the archive.
    let path = dir.path().join(ARCHIVE_FILE);
    let text = std::fs::read_to_string(&path).unwrap();
    let damaged: Vec<String> = text
        .lines()
        .map(|l| {
            if l.contains("\"type\":\"outcome\"") && l.contains("\"id\":4,") {
                l.replacen("\"outcome\":", "\"outcomE\":", 1)
            } else {
                l.to_string()
            }
        })
        .collect();
    assert_ne!(damaged.join("\n") + "\n", text);
    std::fs::write(&path, damaged.join("\n") + "\n").unwrap();
    let j = open(dir.path(), never());
    let (entries, warnings) = j.all_entries();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    let four = entries.iter().find(|e| e.id == 4).unwrap();
    assert_eq!(
        (four.status.as_str(), four.detail.as_deref()),
        ("incomplete", Some(archive::ARCHIVED_WITHOUT_OUTCOME))
    );
}

/// The highest id an archive names is read line by line, not loaded whole (story AH, F7: an
/// archive put back several times over was held in memory at every open); a damaged line's id
/// is not taken, a torn last line neither.
#[test]
fn the_highest_archived_id_is_read_line_by_line_past_damage() {
    let dir = private_tempdir();
    {
        let mut j = open(dir.path(), never());
        for v in 4096..4099 {
            change(&mut j, A, v, v + 1);
        }
    }
    drop(open(dir.path(), archiving(2)));
    let path = dir.path().join(ARCHIVE_FILE);
    let text = std::fs::read_to_string(&path).unwrap();
    let last_intent = text
        .lines()
        .rfind(|l| l.contains("\"type\":\"intent\""))
        .unwrap();
    assert!(last_intent.contains("\"id\":3,"), "{last_intent}");
    let damaged = last_intent.replacen("\"id\":3,", "\"id\":9,", 1);
    let torn = &last_intent.replacen("\"id\":3,", "\"id\":8,", 1)[..40];
    std::fs::write(&path, format!("{text}{text}{damaged}\n{torn}")).unwrap();
    assert_eq!(archive::highest_id(dir.path()), Some(3));
    std::fs::remove_file(&path).unwrap();
    assert_eq!(archive::highest_id(dir.path()), None);
}

/// Change `id`'s status, detail and value read back as `kpo journal` lists them: from the live
/// journal, and from the whole listing (the archive's, then the journal's).
fn listed_as(j: &Journal, id: u64) -> [(String, Option<String>, Option<Value>); 2] {
    let of = |entries: &[Entry]| {
        let e = entries.iter().find(|e| e.id == id).unwrap();
        (e.status.clone(), e.detail.clone(), e.read_back.clone())
    };
    let (all, warnings) = j.all_entries();
    assert!(warnings.is_empty(), "{warnings:?}");
    [of(&j.entries()), of(&all)]
}

/// A change whose outcome line was damaged, reconciled at the next start, is listed with why it
/// was taken as `status` (the value read back `read_back`), from the outcome reconciliation
/// wrote: after a restart, and from the archive once a pass has moved it there. `damaged_line` is
/// the outcome line damaged; `kernel_now` is the kernel's value at the start that reconciles.
#[allow(clippy::too_many_arguments)]
fn reconciled_after_damage_is_listed_with_why(
    changes: &[(i64, i64)],
    damaged_line: usize,
    kernel_now: i64,
    id: u64,
    status: &str,
    read_back: Option<i64>,
    why: &str,
) {
    let dir = private_tempdir();
    {
        let mut j = open(dir.path(), never());
        for (before, after) in changes {
            change(&mut j, B, *before, *after);
        }
    }
    damage_line(dir.path(), damaged_line, "\"outcome\":", "\"outcomE\":");
    let j = open(dir.path(), never());
    let lost = format!(
        "journal #{id} ({B}): its outcome's line (journal.log line {damaged_line}) was damaged; \
         it is reconciled from what the kernel has"
    );
    assert!(j.warnings().contains(&lost), "{:?}", j.warnings());
    // Stopped before reconciling: what the dropped line showed is in the journal.
    drop(j);
    let j = open(dir.path(), never());
    assert_eq!(
        j.incomplete().iter().map(|i| i.id).collect::<Vec<_>>(),
        [id]
    );
    let k = kernel(&[(B, Value::Int(kernel_now.into()))]);
    let mut path = change_path(j, &k);
    let reports = path.reconcile().unwrap();
    assert_eq!(
        reports
            .iter()
            .map(|r| r.detail.as_deref())
            .collect::<Vec<_>>(),
        [Some(why)]
    );
    let expected = (
        status.to_string(),
        Some(why.to_string()),
        read_back.map(|v| Value::Int(v.into())),
    );
    let live = listed_as(&path.journal, id);
    assert_eq!(live, [expected.clone(), expected.clone()]);
    drop(path);
    let j = open(dir.path(), never());
    assert_eq!(listed_as(&j, id), [expected.clone(), expected.clone()]);
    drop(j);
    let j = open(dir.path(), archiving(2));
    assert!(
        archived_records(dir.path())
            .iter()
            .any(|r| matches!(r, Record::Outcome { id: i, .. } if *i == id)),
        "the pass archived the reconciled outcome"
    );
    let (all, _) = j.all_entries();
    let e = all.iter().find(|e| e.id == id).unwrap();
    assert_eq!(
        (e.status.clone(), e.detail.clone(), e.read_back.clone()),
        expected
    );
}

/// The first change's outcome line is damaged; the next change found its value in place.
#[test]
fn a_change_found_in_place_by_the_next_is_listed_with_why() {
    reconciled_after_damage_is_listed_with_why(
        &[(1000, 2000), (2000, 3000)],
        2,
        3000,
        1,
        "applied",
        Some(2000),
        "its outcome line was damaged; the next change found its value (2000) in place",
    );
}

/// The first change's outcome line is damaged, and the pass at the same open would archive the
/// second, whose value before shows the first took effect: the second stays live, so the first is
/// reconciled `applied`, as it is without the pass, not `failed` from the third's value before.
#[test]
fn the_change_that_settles_a_damaged_outcome_stays_live_through_a_pass() {
    let dir = private_tempdir();
    {
        let mut j = open(dir.path(), never());
        // Kept by the pass: #1 (interrupted), #3 (it ended the operator's run before the rules'
        // current one), #4 (that run's first), #5 (the latest). #2, not without the fix.
        let sources = [
            Source::Rules,
            Source::Operator,
            Source::Operator,
            Source::Rules,
            Source::Rules,
        ];
        for (n, source) in (1..=5).zip(sources) {
            change_by(&mut j, B, n * 1000, (n + 1) * 1000, source);
        }
    }
    damage_line(dir.path(), 2, "\"outcome\":", "\"outcomE\":");
    let j = open(dir.path(), archiving(2));
    assert!(
        dir.path().join(ARCHIVE_FILE).exists(),
        "the pass archived something: {:?}",
        j.warnings()
    );
    assert!(j.intent(2).is_some(), "{:?}", j.records());
    let k = kernel(&[(B, Value::Int(6000.into()))]);
    let mut path = change_path(j, &k);
    let reports = path.reconcile().unwrap();
    assert_eq!(
        reports
            .iter()
            .map(|r| (r.journal_id, r.status, r.detail.as_deref()))
            .collect::<Vec<_>>(),
        [(
            Some(1),
            crate::change::ChangeStatus::Applied,
            Some("its outcome line was damaged; the next change found its value (2000) in place")
        )]
    );
}

/// The only change's outcome line is damaged; the kernel has its value. It was not interrupted:
/// the detail says what was lost.
#[test]
fn a_change_found_applied_in_the_kernel_is_listed_with_why() {
    reconciled_after_damage_is_listed_with_why(
        &[(1000, 2000)],
        2,
        2000,
        1,
        "applied",
        Some(2000),
        "its outcome's line (journal.log line 2) was damaged; the kernel has its new value: \
         found applied",
    );
}

/// The only change's outcome line is damaged; the kernel has the value before.
#[test]
fn a_change_whose_outcome_was_lost_with_the_value_before_back_is_listed_with_why() {
    reconciled_after_damage_is_listed_with_why(
        &[(1000, 2000)],
        2,
        1000,
        1,
        "failed",
        None,
        "its outcome's line (journal.log line 2) was damaged; the kernel has the value before: \
         the write did not take, or was undone since",
    );
}

/// The first change's outcome line is damaged, and the next change started from another value
/// than its new one: the later changes hold the kernel's value, which is not read.
#[test]
fn a_change_whose_outcome_was_lost_before_later_changes_is_listed_with_why() {
    reconciled_after_damage_is_listed_with_why(
        &[(1000, 2000), (1500, 3000)],
        2,
        3000,
        1,
        "failed",
        None,
        "its outcome's line (journal.log line 2) was damaged, and later changes of the \
         parameter followed, not from its value",
    );
}

/// Defect: a change of an earlier boot whose outcome line was damaged was failed as
/// "interrupted, then the machine rebooted", though it ran to its end; the reason now starts
/// with the damaged line, as every other reconciliation of such a change does.
#[test]
fn a_damaged_outcome_of_an_earlier_boot_is_not_called_interrupted() {
    let dir = private_tempdir();
    {
        let mut j = open(dir.path(), never());
        change(&mut j, B, 1000, 2000);
    }
    damage_line(dir.path(), 2, "\"outcome\":", "\"outcomE\":");
    let later_boot = Boot {
        id: Some("a later boot".into()),
        started_ms: Some(now_ms() + 1),
    };
    let j =
        Journal::open_with(dir.path(), Holder::Cli, Duration::ZERO, later_boot, never()).unwrap();
    let k = kernel(&[(B, Value::Int(2000.into()))]);
    let mut path = change_path(j, &k);
    let reports = path.reconcile().unwrap();
    assert_eq!(
        reports
            .iter()
            .map(|r| r.detail.as_deref())
            .collect::<Vec<_>>(),
        [Some(
            "its outcome's line (journal.log line 2) was damaged, then the machine rebooted: \
             the change did not outlive the boot"
        )]
    );
}
