use std::{fs::OpenOptions, io::Write};

use super::*;

fn addr(s: &str) -> ParamAddress {
    s.parse().unwrap()
}

/// A temporary state directory as the agent makes one (0700): `tempdir()` makes it 0755, which
/// the journal would warn about.
fn private_tempdir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    store::make_private(dir.path());
    dir
}

fn open(dir: &Path) -> Journal {
    Journal::open(dir, Holder::Cli, Duration::ZERO).unwrap()
}

/// Two applied changes to somaxconn (original 4096) in a fresh journal.
fn two_changes(dir: &Path) {
    let mut j = open(dir);
    let a = addr("net.core.somaxconn@netns:4026539999");
    let id = j
        .record_intent(
            &a,
            &Value::Int(4096),
            &Value::Int(8192),
            Source::Operator,
            "one",
            IntentKind::Change,
        )
        .unwrap();
    j.record_outcome(
        id,
        Outcome::Applied {
            read_back: Value::Int(8192),
            reconciled: false,
            why: None,
        },
    )
    .unwrap();
    let id = j
        .record_intent(
            &a,
            &Value::Int(8192),
            &Value::Int(16384),
            Source::Rules,
            "two",
            IntentKind::Change,
        )
        .unwrap();
    j.record_outcome(
        id,
        Outcome::Applied {
            read_back: Value::Int(16384),
            reconciled: false,
            why: None,
        },
    )
    .unwrap();
}

fn original(j: &Journal) -> Option<Value> {
    j.param_state(&addr("net.core.somaxconn@netns:4026539999"))
        .and_then(|p| p.original.clone())
}

fn append_raw(dir: &Path, bytes: &[u8]) {
    let mut f = OpenOptions::new()
        .append(true)
        .open(dir.join(store::JOURNAL_FILE))
        .unwrap();
    f.write_all(bytes).unwrap();
}

#[test]
fn records_survive_reopen_and_the_original_is_the_first_before() {
    let dir = private_tempdir();
    two_changes(dir.path());
    let j = open(dir.path());
    assert!(j.warnings().is_empty(), "{:?}", j.warnings());
    assert_eq!(original(&j), Some(Value::Int(4096)));
    let p = j
        .param_state(&addr("net.core.somaxconn@netns:4026539999"))
        .unwrap();
    assert_eq!(p.last_applied, Some(Value::Int(16384)));
    assert_eq!(p.applied.len(), 2);
    assert_eq!(j.entries().len(), 2);
    assert!(j.incomplete().is_empty());
    // The second intent repeats the original.
    let Some(Record::Intent(second)) = j.records().get(2) else {
        panic!()
    };
    assert_eq!(second.original, Some(Value::Int(4096)));
}

#[test]
fn a_torn_last_record_is_recovered_with_a_warning_and_keeps_the_original() {
    let dir = private_tempdir();
    two_changes(dir.path());
    // A third intent cut short mid-write (the kernel is never touched before it is whole).
    let line = store::encode(&Record::Intent(Intent {
        id: 3,
        ts_ms: 1,
        key: "net.core.somaxconn@netns:4026539999".into(),
        address: addr("net.core.somaxconn@netns:4026539999"),
        before: Value::Int(16384),
        after: Value::Int(32768),
        source: Source::Rules,
        reason: "torn".into(),
        kind: IntentKind::Change,
        original: Some(Value::Int(4096)),
        made_way_for: None,
        boot: None,
        netns_cookie: None,
        device: None,
        approved: false,
    }));
    append_raw(dir.path(), &line[..line.len() / 2]);
    let mut j = open(dir.path());
    assert!(
        j.warnings().iter().any(|w| w.contains("torn")),
        "{:?}",
        j.warnings()
    );
    assert_eq!(original(&j), Some(Value::Int(4096)));
    assert_eq!(j.entries().len(), 2, "the torn intent is dropped");
    assert!(
        j.incomplete().is_empty(),
        "and not taken for an interrupted change"
    );
    // The damaged file is kept; the journal goes on, and reopens clean.
    let saved = std::fs::read_dir(dir.path())
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .contains(".corrupt-")
        })
        .count();
    assert_eq!(saved, 1);
    for e in std::fs::read_dir(dir.path()).unwrap() {
        let e = e.unwrap();
        if e.file_name().to_string_lossy().contains(".corrupt-") {
            use std::os::unix::fs::PermissionsExt;
            let mode = e.metadata().unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "the damaged copy is as private as the journal");
        }
    }
    j.set_paused(true, "test").unwrap();
    drop(j);
    let j = open(dir.path());
    assert!(j.warnings().is_empty(), "{:?}", j.warnings());
    assert!(j.paused().is_some());
    assert_eq!(original(&j), Some(Value::Int(4096)));
}

#[test]
fn garbage_appended_is_recovered_with_a_warning_and_keeps_the_original() {
    let dir = private_tempdir();
    two_changes(dir.path());
    append_raw(
        dir.path(),
        b"\x00\x00\xffgarbage\nmore {\"type\":\"pause\"}\n12345678 {}\n\x01\x02",
    );
    let mut j = open(dir.path());
    assert!(j.warnings().len() >= 3, "{:?}", j.warnings());
    assert!(
        j.warnings().iter().any(|w| w.contains("damaged")),
        "{:?}",
        j.warnings()
    );
    assert_eq!(original(&j), Some(Value::Int(4096)));
    assert_eq!(j.entries().len(), 2);
    // New ids continue after the intact ones.
    let id = j
        .record_intent(
            &addr("vm.swappiness"),
            &Value::Int(60),
            &Value::Int(10),
            Source::Operator,
            "",
            IntentKind::Change,
        )
        .unwrap();
    assert_eq!(id, 3);
}

#[test]
fn a_damaged_first_intent_does_not_lose_the_original() {
    let dir = private_tempdir();
    two_changes(dir.path());
    let path = dir.path().join(store::JOURNAL_FILE);
    let mut bytes = std::fs::read(&path).unwrap();
    // Flip a byte inside the first line's JSON.
    let pos = bytes.iter().position(|&b| b == b'{').unwrap() + 5;
    bytes[pos] ^= 0x20;
    std::fs::write(&path, bytes).unwrap();
    let j = open(dir.path());
    assert!(
        j.warnings().iter().any(|w| w.contains("line 1")),
        "{:?}",
        j.warnings()
    );
    assert_eq!(
        original(&j),
        Some(Value::Int(4096)),
        "the second intent repeats it"
    );
}

#[test]
fn one_writer_at_a_time() {
    let dir = private_tempdir();
    let j = open(dir.path());
    match Journal::open(dir.path(), Holder::Cli, Duration::from_millis(50)) {
        Err(JournalError::Busy { pid, .. }) => assert_eq!(pid, Some(std::process::id())),
        other => panic!("{other:?}"),
    }
    drop(j);
    let agent = Journal::open(dir.path(), Holder::Agent, Duration::ZERO).unwrap();
    match Journal::open(dir.path(), Holder::Cli, Duration::from_secs(30)) {
        Err(e @ JournalError::AgentRunning { .. }) => {
            assert!(e.to_string().contains("agent is running"), "{e}")
        }
        other => panic!("{other:?}"),
    }
    drop(agent);
    open(dir.path());
}

/// Defect: a change an earlier version journaled under the alias `net.nf_conntrack_max` stayed
/// under that key once the alias was read as `net.netfilter.nf_conntrack_max`: a lookup by the
/// one name found no original, and `revert --all` could not put the variable back.
#[test]
fn a_change_journaled_under_an_alias_is_found_under_the_one_name() {
    let dir = private_tempdir();
    {
        // What an earlier version wrote: the alias itself as the address and the key.
        let mut j = open(dir.path());
        let as_written = ParamAddress {
            name: "net.nf_conntrack_max".into(),
            target: crate::actuate::param::Target::Host,
        };
        let id = j
            .record_intent(
                &as_written,
                &Value::Int(262144),
                &Value::Int(524288),
                Source::Operator,
                "t",
                IntentKind::Change,
            )
            .unwrap();
        j.record_outcome(
            id,
            Outcome::Applied {
                read_back: Value::Int(524288),
                reconciled: false,
                why: None,
            },
        )
        .unwrap();
        j.quarantine(&as_written, &Value::Int(1), Duration::from_secs(600), "t")
            .unwrap();
    }
    let text = std::fs::read_to_string(dir.path().join(store::JOURNAL_FILE)).unwrap();
    assert!(text.contains("\"key\":\"net.nf_conntrack_max\""), "{text}");
    // An archiving pass's count and a damaged line's key, under the alias too.
    for line in [
        r#"{"type":"archived","ts_ms":1,"archive_bytes":0,"changes":{"net.nf_conntrack_max":3}}"#,
        r#"{"type":"damaged","ts_ms":2,"key":"net.nf_conntrack_max","why":"t"}"#,
    ] {
        let record: serde_json::Value = serde_json::from_str(line).unwrap();
        append_raw(dir.path(), &store::encode(&record));
    }
    let j = open(dir.path());
    let one = addr("net.nf_conntrack_max");
    assert_eq!(one.name, "net.netfilter.nf_conntrack_max");
    let p = j.param_state(&one).expect("found under the one name");
    assert_eq!(p.original, Some(Value::Int(262144)));
    assert_eq!(p.last_applied, Some(Value::Int(524288)));
    assert_eq!(p.archived_changes, 3, "{:?}", j.warnings());
    assert_eq!(p.unsettled.as_deref(), Some("t"));
    let keys: Vec<_> = j.params().map(|p| p.key.clone()).collect();
    assert_eq!(keys, vec!["net.netfilter.nf_conntrack_max".to_string()]);
    let now = SystemTime::now();
    assert!(j
        .context(&one, &Value::Int(1), now)
        .quarantined_until
        .is_some());
}

#[test]
fn pause_yield_and_quarantine_persist() {
    let dir = private_tempdir();
    let a = addr("net.core.somaxconn@netns:4026539999");
    {
        let mut j = open(dir.path());
        assert!(j.set_paused(true, "op").unwrap());
        assert!(!j.set_paused(true, "op").unwrap());
        j.set_yielded(&a, Some(Value::Int(1000)), "pid 42 (sysctl)")
            .unwrap();
        j.quarantine(&a, &Value::Int(9000), Duration::from_secs(600), "p99 rose")
            .unwrap();
    }
    let mut j = open(dir.path());
    let now = SystemTime::now();
    let ctx = j.context(&a, &Value::Int(9000), now);
    assert!(ctx.paused && ctx.yielded);
    assert!(ctx.quarantined_until.unwrap() > now);
    assert!(j
        .context(&a, &Value::Int(9001), now)
        .quarantined_until
        .is_none());
    assert_eq!(
        j.resume_param("net.core.somaxconn").unwrap(),
        vec!["net.core.somaxconn@netns:4026539999".to_string()]
    );
    assert!(j.set_paused(false, "op").unwrap());
    drop(j);
    let j = open(dir.path());
    let ctx = j.context(&a, &Value::Int(9000), now);
    assert!(!ctx.paused && !ctx.yielded);
}

#[test]
fn a_failed_append_is_taken_back_and_the_next_record_is_whole() {
    let dir = private_tempdir();
    let a = addr("net.core.somaxconn@netns:4026539999");
    let intent = |j: &mut Journal, reason: &str| {
        j.record_intent(
            &a,
            &Value::Int(4096),
            &Value::Int(8192),
            Source::Operator,
            reason,
            IntentKind::Change,
        )
    };
    let mut j = open(dir.path());
    // A full disk after 20 bytes of the line: the error reaches the caller, and neither the
    // partial line nor the id stays.
    j.appender.as_mut().unwrap().fail_after = Some(20);
    let err = intent(&mut j, "cut short").unwrap_err();
    assert!(err.to_string().contains("No space left"), "{err}");
    assert!(j.records().is_empty());
    assert_eq!(intent(&mut j, "whole").unwrap(), 1);
    drop(j);
    let bytes = std::fs::read(dir.path().join(store::JOURNAL_FILE)).unwrap();
    assert_eq!(bytes.iter().filter(|&&b| b == b'\n').count(), 1, "one line");
    let j = open(dir.path());
    assert!(j.warnings().is_empty(), "{:?}", j.warnings());
    let reasons: Vec<_> = j
        .records()
        .iter()
        .map(|r| match r {
            Record::Intent(i) => (i.id, i.reason.clone()),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(reasons, vec![(1, "whole".to_string())]);
}

/// An operator's intent to raise somaxconn in a namespace, 4096 -> 8192.
fn operators_intent(j: &mut Journal) -> Result<u64, JournalError> {
    j.record_intent(
        &addr("net.core.somaxconn@netns:4026539999"),
        &Value::Int(4096),
        &Value::Int(8192),
        Source::Operator,
        "test",
        IntentKind::Change,
    )
}

/// A state directory removed under the agent (`rm -rf`): records appended to the deleted file
/// would be acknowledged and lost, so the append is refused, saying why, and nothing is changed.
#[test]
fn an_append_to_a_deleted_journal_is_refused() {
    let dir = private_tempdir();
    let mut j = open(dir.path());
    let intent = operators_intent;
    assert_eq!(intent(&mut j).unwrap(), 1);
    std::fs::remove_file(dir.path().join(store::JOURNAL_FILE)).unwrap();
    let err = intent(&mut j).unwrap_err();
    assert!(matches!(err, JournalError::Deleted { .. }), "{err:?}");
    assert!(
        err.to_string()
            .contains("journal.log: the file was deleted while open"),
        "{err}"
    );
    // The running agent still knows the originals the restart loses (s50 storyW W8).
    assert!(
        err.to_string()
            .contains("save its output, kpo status --json, to put them back by hand"),
        "{err}"
    );
    assert_eq!(j.records().len(), 1, "nothing recorded");
}

/// A state directory moved aside under the agent and a copy restored in its place: the file
/// KPO has open still has a name, but not the one read at the next start, so the append is
/// refused, saying why (s50 storyW W9); moved away with nothing in its place, saying that
/// moving it back takes it up again (s50 review S1).
#[test]
fn an_append_to_a_journal_moved_aside_is_refused() {
    for restored in [true, false] {
        let parent = private_tempdir();
        let (dir, aside) = (parent.path().join("state"), parent.path().join("state.old"));
        store::ensure_dir(&dir).unwrap();
        let mut j = open(&dir);
        let intent = operators_intent;
        assert_eq!(intent(&mut j).unwrap(), 1);
        std::fs::rename(&dir, &aside).unwrap();
        if restored {
            store::ensure_dir(&dir).unwrap();
            std::fs::copy(
                aside.join(store::JOURNAL_FILE),
                dir.join(store::JOURNAL_FILE),
            )
            .unwrap();
        }
        let err = intent(&mut j).unwrap_err();
        match restored {
            true => assert!(
                err.to_string().contains("journal.log is another file now"),
                "{err}"
            ),
            false => assert!(
                err.to_string()
                    .contains("journal.log is not there any more, though the file KPO has open"),
                "{err}"
            ),
        }
        assert_eq!(j.records().len(), 1, "nothing recorded");
        assert_eq!(
            std::fs::read_to_string(aside.join(store::JOURNAL_FILE))
                .unwrap()
                .lines()
                .count(),
            1,
            "nothing written to the file moved aside"
        );
        if !restored {
            // Moved back: taken up again at the next record.
            std::fs::rename(&aside, &dir).unwrap();
            assert_eq!(intent(&mut j).unwrap(), 2);
        }
    }
}

#[test]
fn an_outcome_whose_intent_line_was_lost_keeps_its_id_taken() {
    let dir = private_tempdir();
    two_changes(dir.path());
    let path = dir.path().join(store::JOURNAL_FILE);
    let text = std::fs::read_to_string(&path).unwrap();
    // Damage the second intent (line 3) and keep its outcome (line 4).
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    assert!(lines[2].contains(r#""id":2"#) && lines[3].contains(r#""id":2"#));
    lines[2] = lines[2].replacen("\"reason\"", "\"rEason\"", 1);
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    let mut j = open(dir.path());
    assert!(
        j.warnings().iter().any(|w| w.contains("line 3")),
        "{:?}",
        j.warnings()
    );
    let id = j
        .record_intent(
            &addr("net.core.somaxconn@netns:4026539999"),
            &Value::Int(16384),
            &Value::Int(4096),
            Source::Operator,
            "after the damage",
            IntentKind::Change,
        )
        .unwrap();
    assert_eq!(id, 3, "id 2 belongs to the outcome that survived");
}

/// A journal written before intents carried boot ids: what came before this boot (by time) is
/// settled like any earlier boot's, what came after it is not.
#[test]
fn intents_without_a_boot_id_are_placed_by_the_boot_time() {
    let dir = private_tempdir();
    let a = addr("net.core.somaxconn@netns:4026539999");
    {
        let mut j = Journal::open_in_boot(dir.path(), Holder::Cli, Duration::ZERO, Boot::default())
            .unwrap();
        let id = j
            .record_intent(
                &a,
                &Value::Int(4096),
                &Value::Int(8192),
                Source::Operator,
                "before boot ids",
                IntentKind::Change,
            )
            .unwrap();
        j.record_outcome(
            id,
            Outcome::Applied {
                read_back: Value::Int(8192),
                reconciled: false,
                why: None,
            },
        )
        .unwrap();
        assert!(j.records().iter().all(|r| match r {
            Record::Intent(i) => i.boot.is_none(),
            _ => true,
        }));
    }
    let reopen = |started_ms: u64| {
        let boot = Boot {
            id: Some("B".into()),
            started_ms: Some(started_ms),
        };
        let j = Journal::open_in_boot(dir.path(), Holder::Cli, Duration::ZERO, boot).unwrap();
        let p = j.param_state(&a).unwrap().clone();
        (p.original, p.last_applied)
    };
    // Booted after the intent: settled.
    let booted = now_ms() + 60_000;
    assert_eq!(reopen(booted), (None, None));
    // Booted before it: the same boot, nothing settled.
    assert_eq!(
        reopen(now_ms() - 3_600_000),
        (Some(Value::Int(4096)), Some(Value::Int(8192)))
    );
    // A change in the new boot, then a restart in it: the legacy intent stays settled (the
    // original is the new change's `before`, not the 4096 of the boot before).
    {
        let boot = Boot {
            id: Some("B".into()),
            started_ms: Some(booted),
        };
        let mut j = Journal::open_in_boot(dir.path(), Holder::Cli, Duration::ZERO, boot).unwrap();
        j.record_intent(
            &a,
            &Value::Int(1024),
            &Value::Int(2048),
            Source::Operator,
            "in boot B",
            IntentKind::Change,
        )
        .unwrap();
    }
    assert_eq!(reopen(booted).0, Some(Value::Int(1024)));
    // This machine's boot time is in the past.
    let started = boot_started_ms().expect("/proc/stat has btime");
    assert!(started > 0 && started <= now_ms(), "{started}");
}

/// A state directory another user could write in is refused before anything is read or written
/// there; one others can only read is used, with a warning that names the mode. A new one is made
/// 0700 and opens without a warning. (One another user owns: the next test.)
#[test]
fn a_state_directory_others_can_change_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("state");
    assert!(open(&dir).warnings().is_empty());
    let mode = |m: u32| std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(m)).unwrap();
    for (m, who) in [
        (0o777, "every user"),
        (0o770, "its group"),
        (0o702, "every user"),
    ] {
        mode(m);
        match Journal::open(&dir, Holder::Cli, Duration::ZERO) {
            Err(e @ JournalError::UnsafeDir { .. }) => {
                let text = e.to_string();
                assert!(
                    text.contains(&format!("{m:04o} lets {who} write")),
                    "{text}"
                );
            }
            other => panic!("mode {m:o}: {other:?}"),
        }
    }
    assert!(
        !dir.join(store::JOURNAL_FILE).exists()
            || std::fs::metadata(dir.join(store::JOURNAL_FILE))
                .unwrap()
                .len()
                == 0
    );
    mode(0o755);
    let j = open(&dir);
    assert_eq!(j.warnings().len(), 1, "{:?}", j.warnings());
    assert!(
        j.warnings()[0].contains("mode is 0755"),
        "{:?}",
        j.warnings()
    );
    drop(j);
    mode(0o700);

    let file = tmp.path().join("a-file");
    std::fs::write(&file, "").unwrap();
    assert!(matches!(
        Journal::open(&file, Holder::Cli, Duration::ZERO),
        Err(JournalError::UnsafeDir { .. })
    ));
}

/// `kpo run` makes its state directory with [`store::ensure_dir`]: at a link into a disk that is
/// not mounted it said "File exists"; it names the link now, and makes nothing at its end, where
/// the mount would later hide the journal.
#[test]
fn a_state_directory_link_to_nothing_is_not_created() {
    let tmp = private_tempdir();
    let (link, nowhere) = (tmp.path().join("state"), tmp.path().join("unmounted/kpo"));
    std::os::unix::fs::symlink(&nowhere, &link).unwrap();
    let err = store::ensure_dir(&link).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "{}: refusing to keep the journal here: it is a symbolic link to {}, which does not \
             exist (a disk not mounted?); KPO does not create a directory at the end of a link",
            link.display(),
            nowhere.display()
        )
    );
    assert!(!tmp.path().join("unmounted").exists());
    // Written with a trailing slash, or with the link higher up the path (s51 review L1).
    let slash = std::path::PathBuf::from(format!("{}/", link.display()));
    let below = link.join("kpo");
    let why = |dir: &std::path::Path| store::ensure_dir(dir).unwrap_err().to_string();
    assert!(
        why(&slash).contains(": refusing to keep the journal here: it is a symbolic link to "),
        "{}",
        why(&slash)
    );
    assert!(
        why(&below).contains(&format!(
            ": refusing to keep the journal here: {} is a symbolic link to {}, which does not \
             exist",
            link.display(),
            nowhere.display()
        )),
        "{}",
        why(&below)
    );
    assert!(!tmp.path().join("unmounted").exists());
    std::fs::create_dir_all(&nowhere).unwrap();
    store::ensure_dir(&link).unwrap();
    store::ensure_dir(&below).unwrap();
}

/// A state directory of another user's is refused, naming the owner, whatever its mode.
#[test]
fn a_state_directory_another_user_owns_is_refused() {
    if !nix::unistd::geteuid().is_root() {
        kpo_test_skip::skip("not root: the test gives a directory to another user");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("state");
    drop(open(&dir));
    std::os::unix::fs::chown(&dir, Some(65534), None).unwrap();
    match Journal::open(&dir, Holder::Cli, Duration::ZERO) {
        Err(e @ JournalError::UnsafeDir { .. }) => {
            assert!(e.to_string().contains("owned by uid 65534"), "{e}")
        }
        other => panic!("{other:?}"),
    }
}

/// A state directory below one another user may write (a group other than root's, everyone
/// without the sticky bit, or its owner) is refused, naming that directory: they could rename the
/// state directory away and put their own journal in its place. A sticky one, as /tmp, is not.
#[test]
fn a_state_directory_below_one_others_can_change_is_refused() {
    use std::os::unix::fs::{chown, PermissionsExt};
    if !nix::unistd::geteuid().is_root() {
        kpo_test_skip::skip("not root: the test makes directories of other users and groups");
        return;
    }
    let tmp = private_tempdir();
    let parent = tmp.path().join("parent");
    let dir = parent.join("state");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    let parent_is = |uid: u32, gid: u32, mode: u32| {
        chown(&parent, Some(uid), Some(gid)).unwrap();
        std::fs::set_permissions(&parent, std::fs::Permissions::from_mode(mode)).unwrap();
    };
    let refused = |why: &str| match Journal::open(&dir, Holder::Cli, Duration::ZERO) {
        Err(e @ JournalError::UnsafeDir { .. }) => {
            let text = e.to_string();
            assert!(
                text.starts_with(&format!(
                    "{}: refusing to keep the journal here: {}, a directory above it ({why}",
                    dir.display(),
                    parent.display()
                )),
                "{text}"
            );
            assert!(text.ends_with("or give --state-dir a path whose every directory is so"));
        }
        other => panic!("{why}: {:?}", other.map(|_| ())),
    };
    parent_is(0, 65534, 0o775);
    refused("owner uid 0, group 65534, mode 0775), lets group 65534 rename");
    parent_is(0, 0, 0o777);
    refused("owner uid 0, group 0, mode 0777), lets every user rename");
    parent_is(65534, 0, 0o755);
    refused("owner uid 65534, group 0, mode 0755), belongs to uid 65534, who may rename");
    parent_is(0, 0, 0o1777);
    drop(open(&dir));
    parent_is(0, 65534, 0o755);
    drop(open(&dir));
}

/// Defect (s46 storyI): a state directory reached through another user's symbolic link in a
/// sticky directory passed, since the sticky directory itself does; the link's owner then pointed
/// it at a directory of their own, and the agent wrote its files there (and through links they
/// put there, over a root-only file). Refused, naming the link and its owner; root's own link
/// there, and another user's link in a directory only root may write, are followed.
#[test]
fn a_state_directory_reached_through_another_users_link_in_a_sticky_directory_is_refused() {
    use std::os::unix::fs::{lchown, symlink, PermissionsExt};
    if !nix::unistd::geteuid().is_root() {
        kpo_test_skip::skip("not root: the test makes links of another user");
        return;
    }
    let tmp = private_tempdir();
    let shared = tmp.path().join("shared");
    std::fs::create_dir(&shared).unwrap();
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o1777)).unwrap();
    let dir = tmp.path().join("state");
    drop(open(&dir));
    let link = shared.join("state");
    symlink(&dir, &link).unwrap();
    lchown(&link, Some(65534), Some(65534)).unwrap();
    match Journal::open(&link, Holder::Cli, Duration::ZERO) {
        Err(e @ JournalError::UnsafeDir { .. }) => assert_eq!(
            e.to_string(),
            format!(
                "{link}: refusing to keep the journal here: {link}, a symbolic link on the way \
                 to it, is uid 65534's, in the sticky directory {shared}, where uid 65534 may \
                 replace it at any time with a link to a directory of their own, with a journal \
                 of their making; give --state-dir the path it leads to, or make the link root's \
                 (as root: ln -sfn TARGET {link})",
                link = link.display(),
                shared = shared.display()
            )
        ),
        other => panic!("{:?}", other.map(|_| ())),
    }
    lchown(&link, Some(0), Some(0)).unwrap();
    drop(open(&link));
    // Another user's link where only root may write: only root may replace it.
    let roots = tmp.path().join("roots-link");
    symlink(&dir, &roots).unwrap();
    lchown(&roots, Some(65534), Some(65534)).unwrap();
    drop(open(&roots));
}

/// Which change the kernel has from KPO: the latest applied one, until a revert takes effect,
/// even a revert that puts back the very value that change had set; a change put back after a
/// failed read-back leaves the earlier change in place.
#[test]
fn a_parameter_holds_its_latest_applied_change_until_a_revert() {
    let dir = private_tempdir();
    let mut j = open(dir.path());
    let a = addr("net.core.somaxconn@netns:4026539999");
    let step = |j: &mut Journal, before: i64, after: i64, kind: IntentKind, outcome: Outcome| {
        let id = j
            .record_intent(
                &a,
                &Value::Int(before.into()),
                &Value::Int(after.into()),
                Source::Operator,
                "test",
                kind,
            )
            .unwrap();
        j.record_outcome(id, outcome).unwrap();
        id
    };
    let applied = |v: i64| Outcome::Applied {
        read_back: Value::Int(v.into()),
        reconciled: false,
        why: None,
    };
    let first = step(&mut j, 4096, 8192, IntentKind::Change, applied(8192));
    let second = step(&mut j, 8192, 4096, IntentKind::Change, applied(4096));
    let holds = |j: &Journal, id: u64, v: i64| {
        j.param_state(&a)
            .unwrap()
            .still_holds(id, &Value::Int(v.into()))
    };
    assert!(holds(&j, second, 4096));
    assert!(!holds(&j, first, 8192) && !holds(&j, second, 8192));
    // A later change that read back wrong and was put back: the second still holds.
    step(
        &mut j,
        4096,
        16384,
        IntentKind::Change,
        Outcome::Reverted {
            why: "wrote 16384 but read back 8000".into(),
            read_back: Some(Value::Int(4096)),
        },
    );
    assert!(holds(&j, second, 4096));
    // Someone wrote 1000; the operator reverts the first change, which puts back 4096, the
    // second change's value: the kernel has the revert's value now, not the second change's.
    step(
        &mut j,
        1000,
        4096,
        IntentKind::Revert { of: Some(first) },
        Outcome::Reverted {
            why: "test".into(),
            read_back: Some(Value::Int(4096)),
        },
    );
    assert!(!holds(&j, second, 4096));
    drop(j);
    let j = open(dir.path());
    assert!(!holds(&j, second, 4096), "the same after a reopen");
}

/// No network namespace but the host's outlives a reboot: a parameter in one (it has a cookie)
/// loses its yield and quarantines with the boot, unlike a host parameter.
#[test]
fn a_reboot_ends_what_was_known_of_other_namespaces() {
    let dir = private_tempdir();
    let boot = |id: &str| Boot {
        id: Some(id.to_string()),
        started_ms: None,
    };
    let ns = addr("net.core.somaxconn@netns:4026539999");
    let host = addr("net.core.netdev_max_backlog");
    {
        let mut j =
            Journal::open_in_boot(dir.path(), Holder::Cli, Duration::ZERO, boot("a")).unwrap();
        for (a, cookie) in [(&ns, Some(5)), (&host, None)] {
            let id = j
                .record_intent_making_way(
                    a,
                    &Value::Int(1000),
                    &Value::Int(2000),
                    Source::Operator,
                    "test",
                    IntentKind::Change,
                    None,
                    cookie,
                    None,
                    false,
                )
                .unwrap();
            j.record_outcome(
                id,
                Outcome::Applied {
                    read_back: Value::Int(2000),
                    reconciled: false,
                    why: None,
                },
            )
            .unwrap();
            j.set_yielded(a, Some(Value::Int(3000)), "someone").unwrap();
        }
    }
    let j = Journal::open_in_boot(dir.path(), Holder::Cli, Duration::ZERO, boot("b")).unwrap();
    assert!(j.param_state(&ns).unwrap().yielded.is_none());
    assert!(
        j.param_state(&host).unwrap().yielded.is_some(),
        "the host's stays"
    );
}

/// On replay, an intent whose namespace cookie differs from the one before it starts afresh
/// (its own `before` is the original, even if its `original` field carried the dead namespace's),
/// and an intent whose cookie could not be read keeps the one known.
#[test]
fn an_intent_in_a_new_namespace_starts_afresh_on_replay() {
    let dir = private_tempdir();
    let a = addr("net.core.somaxconn@netns:4026539999");
    let intent = |id: u64, before: i64, original: i64, cookie: Option<u64>| {
        Record::Intent(Intent {
            id,
            // Of this boot: older intents without a boot id would be settled as an earlier boot's.
            ts_ms: now_ms(),
            key: target_key(&a),
            address: a.clone(),
            before: Value::Int(before.into()),
            after: Value::Int((before * 2).into()),
            source: Source::Operator,
            reason: "test".into(),
            kind: IntentKind::Change,
            original: Some(Value::Int(original.into())),
            made_way_for: None,
            boot: None,
            netns_cookie: cookie,
            device: None,
            approved: false,
        })
    };
    let applied = |id: u64, v: i64| Record::Outcome {
        id,
        ts_ms: now_ms(),
        outcome: Outcome::Applied {
            read_back: Value::Int(v.into()),
            reconciled: false,
            why: None,
        },
        intent: None,
    };
    let text: Vec<u8> = [
        intent(1, 4096, 4096, Some(7)),
        applied(1, 8192),
        intent(2, 8192, 4096, None),
        applied(2, 16384),
        intent(3, 128, 4096, Some(9)),
        applied(3, 256),
    ]
    .iter()
    .flat_map(store::encode)
    .collect();
    std::fs::write(dir.path().join(store::JOURNAL_FILE), text).unwrap();
    let j = open(dir.path());
    let p = j.param_state(&a).unwrap();
    assert_eq!(
        p.original,
        Some(Value::Int(128)),
        "not the dead namespace's 4096"
    );
    assert_eq!(p.netns_cookie, Some(9));
    assert_eq!(
        p.applied.len(),
        1,
        "the dead namespace's changes are not this one's"
    );
    assert!(p.still_holds(3, &Value::Int(256)));
    drop(j);
    // Without the third intent: the cookie-less second keeps the first's cookie.
    let text: Vec<u8> = [intent(1, 4096, 4096, Some(7)), intent(2, 8192, 4096, None)]
        .iter()
        .flat_map(store::encode)
        .collect();
    let dir = private_tempdir();
    std::fs::write(dir.path().join(store::JOURNAL_FILE), text).unwrap();
    assert_eq!(
        open(dir.path()).param_state(&a).unwrap().netns_cookie,
        Some(7)
    );
}

/// A record with an id KPO cannot have handed out (here `u64::MAX`, from a hand-made or damaged
/// file) is set aside with a warning; counting on from it would overflow. A time past the year
/// 9999 is shown as milliseconds, not a panic.
#[test]
fn an_impossible_id_is_set_aside_and_an_impossible_time_is_shown_as_a_number() {
    let dir = private_tempdir();
    two_changes(dir.path());
    let line = store::encode(&Record::Intent(Intent {
        id: u64::MAX,
        ts_ms: u64::MAX,
        key: "net.core.somaxconn@netns:4026539999".into(),
        address: addr("net.core.somaxconn@netns:4026539999"),
        before: Value::Int(16384),
        after: Value::Int(32768),
        source: Source::Rules,
        reason: "hand-made".into(),
        kind: IntentKind::Change,
        original: Some(Value::Int(4096)),
        made_way_for: None,
        boot: None,
        netns_cookie: None,
        device: None,
        approved: false,
    }));
    append_raw(dir.path(), &line);
    let j = open(dir.path());
    assert!(
        j.warnings()
            .iter()
            .any(|w| w.contains(&format!("id {} is set aside", u64::MAX))),
        "{:?}",
        j.warnings()
    );
    assert_eq!(j.entries().len(), 2);
    assert!(j.incomplete().is_empty());
    assert_eq!(
        crate::journal::format_ms(u64::MAX),
        format!("{} ms after the epoch (not a date)", u64::MAX)
    );
    assert_eq!(crate::journal::format_ms(1_000), "1970-01-01T00:00:01.000Z");
}

/// Defect: every quarantine had the policy's length, and a revert restores the kernel value the
/// advisors saw before, so a change that regressed came back, and regressed, once an hour,
/// forever. A value reverted again is kept out twice as long as the last time.
#[test]
fn a_value_reverted_again_is_quarantined_twice_as_long() {
    let dir = private_tempdir();
    let a = addr("net.core.somaxconn");
    let mut j = open(dir.path());
    let base = Duration::from_secs(600);
    assert_eq!(
        j.quarantine(&a, &Value::Int(9000), base, "p99 rose")
            .unwrap(),
        base
    );
    assert_eq!(
        j.quarantine(&a, &Value::Int(9000), base, "p99 rose")
            .unwrap(),
        2 * base
    );
    assert_eq!(
        j.quarantine(&a, &Value::Int(4000), base, "p99 rose")
            .unwrap(),
        base,
        "another value's first quarantine"
    );
    drop(j);
    // The lengths come from the journal's records: the same after a reopen.
    let mut j = open(dir.path());
    assert_eq!(
        j.quarantine(&a, &Value::Int(9000), base, "p99 rose")
            .unwrap(),
        4 * base
    );
    let now = SystemTime::now();
    let until = j
        .context(&a, &Value::Int(9000), now)
        .quarantined_until
        .unwrap();
    let left = until.duration_since(now).unwrap();
    assert!(left > 3 * base && left <= 4 * base, "{left:?}");
}

/// A lifted quarantine was a mistake (the guard's `cleared` verdict): it counts for no doubling,
/// and neither does it erase the doubling of the real ones before it (review2 s57 R2-3): a value
/// reverted for real after a lift is kept out twice as long as its last real quarantine, also
/// after a reopen, as the lift's record carries that quarantine.
#[test]
fn a_lifted_quarantine_keeps_the_doubling_of_the_ones_before_it() {
    let dir = private_tempdir();
    let a = addr("net.core.somaxconn");
    let v = Value::Int(9000);
    let base = Duration::from_secs(600);
    let mut j = open(dir.path());
    assert_eq!(j.quarantine(&a, &v, base, "p99 rose").unwrap(), base);
    assert_eq!(j.quarantine(&a, &v, base, "p99 rose").unwrap(), 2 * base);
    assert_eq!(j.quarantine(&a, &v, base, "p99 rose").unwrap(), 4 * base);
    assert!(j.lift_quarantine(&a, &v, "cleared").unwrap());
    assert!(
        !j.lift_quarantine(&a, &v, "cleared").unwrap(),
        "none in force"
    );
    drop(j);
    let mut j = open(dir.path());
    let now = SystemTime::now();
    let until = j.context(&a, &v, now).quarantined_until;
    assert!(until.is_some_and(|u| u <= now), "lifted: {until:?}");
    assert_eq!(
        j.quarantine(&a, &v, base, "p99 rose").unwrap(),
        4 * base,
        "twice the last real one (2 × base), not base, nor twice the lifted one"
    );
    // A lift of a value's first quarantine leaves nothing to double.
    let w = Value::Int(4000);
    assert_eq!(j.quarantine(&a, &w, base, "p99 rose").unwrap(), base);
    assert!(j.lift_quarantine(&a, &w, "cleared").unwrap());
    assert_eq!(j.quarantine(&a, &w, base, "p99 rose").unwrap(), base);
}

#[test]
fn a_repeated_quarantine_doubles_within_a_day_of_the_last_one_and_up_to_a_week() {
    use crate::journal::{quarantine_length, Span, QUARANTINE_REPEATED_AT_MOST};
    const HOUR_MS: u64 = 3600 * 1000;
    let hour = Duration::from_secs(3600);
    let last = |since_ms, until_ms| Span { since_ms, until_ms };
    let now = 100 * 24 * HOUR_MS;
    assert_eq!(quarantine_length(None, hour, now), hour);
    // Ended 23 hours ago, after 2 hours: 4 hours now.
    let ended = last(now - 25 * HOUR_MS, now - 23 * HOUR_MS);
    assert_eq!(quarantine_length(Some(ended), hour, now), 4 * hour);
    // Ended a day ago or more: forgotten, as the journal's archive forgets it.
    let old = last(now - 26 * HOUR_MS, now - 24 * HOUR_MS);
    assert_eq!(quarantine_length(Some(old), hour, now), hour);
    // Five days doubled is more than a week: a week.
    let long = last(now - 5 * 24 * HOUR_MS, now - HOUR_MS);
    assert_eq!(
        quarantine_length(Some(long), hour, now),
        QUARANTINE_REPEATED_AT_MOST
    );
    // A policy's own quarantine longer than that stays the floor.
    let year = Duration::from_secs(365 * 24 * 3600);
    assert_eq!(quarantine_length(Some(long), year, now), year);
}

/// The last intent's line, whole but damaged (its change may have been made: the kernel is
/// written after the intent's fsync), is the only record of its id: that id is not handed out
/// again, at this open or the next.
#[test]
fn the_id_of_a_damaged_last_intent_is_not_handed_out_again() {
    let dir = private_tempdir();
    two_changes(dir.path());
    let mut j = open(dir.path());
    let next = j
        .record_intent(
            &addr("net.core.somaxconn@netns:4026539999"),
            &Value::Int(1),
            &Value::Int(2),
            Source::Operator,
            "test",
            IntentKind::Change,
        )
        .unwrap();
    drop(j);
    crate::change::tests::damage_journal_line(dir.path(), 2 * next as usize - 1);
    let j = open(dir.path());
    assert!(j.intent(next).is_none(), "dropped");
    assert!(
        j.warnings()
            .iter()
            .any(|w| w.contains(&format!("named id {next}"))),
        "{:?}",
        j.warnings()
    );
    drop(j);
    let mut j = open(dir.path());
    let id = j
        .record_intent(
            &addr("net.core.somaxconn@netns:4026539999"),
            &Value::Int(1),
            &Value::Int(2),
            Source::Operator,
            "test",
            IntentKind::Change,
        )
        .unwrap();
    assert_eq!(id, next + 1);
}

/// Rewrites line `n` (from 1) of the journal so that its checksum no longer matches, leaving its
/// `"id":` and `"key":"` readable: `field` (a JSON key on that line) gets a capital second letter.
fn damage_field(dir: &Path, n: usize, field: &str) {
    let path = dir.join(store::JOURNAL_FILE);
    let text = std::fs::read_to_string(&path).unwrap();
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    let quoted = format!("\"{field}\"");
    let mut damaged: Vec<char> = quoted.chars().collect();
    damaged[2] = damaged[2].to_ascii_uppercase();
    assert!(lines[n - 1].contains(&quoted), "{}", lines[n - 1]);
    lines[n - 1] = lines[n - 1].replacen(&quoted, &damaged.iter().collect::<String>(), 1);
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
}

/// The second change's intent and outcome lines are both damaged: recovery drops them, and the
/// `damaged` records of what they showed (id 2 taken, the parameter unsettled) are written by the
/// same rewrite. Killed right after it (recovery alone, nothing opened after), the next open
/// still has them: the damaged lines are gone by then, and nothing could work them out again.
#[test]
fn what_damaged_lines_showed_is_written_by_the_rewrite_that_drops_them() {
    let dir = private_tempdir();
    two_changes(dir.path());
    damage_field(dir.path(), 3, "reason");
    damage_field(dir.path(), 4, "reconciled");
    let boot = Boot {
        id: current_boot(),
        started_ms: boot_started_ms(),
    };
    let loaded = Journal::load_repaired(dir.path(), &boot).unwrap();
    let key = "net.core.somaxconn@netns:4026539999";
    let said: Vec<&String> = loaded.warnings.iter().skip(3).collect();
    assert_eq!(
        said,
        [
            "journal.log line 4, damaged, named id 2: it is not handed out again",
            &format!(
                "{key}: journal.log line 3, damaged, may have held a change of KPO's here that \
                 the journal lost: a value other than KPO's last known one is not taken for \
                 someone else's change until KPO's next change of it"
            ),
        ],
        "{:?}",
        loaded.warnings
    );
    drop(loaded);
    let mut j = open(dir.path());
    assert!(
        j.warnings().is_empty(),
        "nothing to recover: {:?}",
        j.warnings()
    );
    let p = j.param_state(&addr(key)).unwrap();
    assert_eq!(p.last_applied, Some(Value::Int(8192)), "the first change's");
    assert!(
        p.unsettled
            .as_deref()
            .is_some_and(|why| why.starts_with("journal.log line 3, damaged, may have held")),
        "{:?}",
        p.unsettled
    );
    let id = j
        .record_intent(
            &addr(key),
            &Value::Int(16384),
            &Value::Int(4096),
            Source::Operator,
            "after the damage",
            IntentKind::Change,
        )
        .unwrap();
    assert_eq!(id, 3, "id 2 stays taken");
}

/// Change #1 of `a` to 9000 (from 4096), then the guard's revert #2 of it, done; no quarantine
/// after it, as an agent killed between the two leaves the journal.
pub(super) fn guard_revert_without_its_quarantine(j: &mut Journal, a: &ParamAddress) {
    let revert = guard_revert_intent(j, a);
    j.record_outcome(
        revert,
        Outcome::Reverted {
            why: "the guard".into(),
            read_back: Some(Value::Int(4096)),
        },
    )
    .unwrap();
}

/// Change #1 of `a` to 9000 (from 4096), applied, then the intent of the guard's revert of it,
/// without its outcome; returns the revert's id.
fn guard_revert_intent(j: &mut Journal, a: &ParamAddress) -> u64 {
    let id = j
        .record_intent(
            a,
            &Value::Int(4096),
            &Value::Int(9000),
            Source::Rules,
            "test",
            IntentKind::Change,
        )
        .unwrap();
    j.record_outcome(
        id,
        Outcome::Applied {
            read_back: Value::Int(9000),
            reconciled: false,
            why: None,
        },
    )
    .unwrap();
    j.record_intent(
        a,
        &Value::Int(9000),
        &Value::Int(4096),
        Source::Guard,
        "p99 rose",
        IntentKind::Revert { of: Some(id) },
    )
    .unwrap()
}

/// A missing quarantine that has ended by the first start after the kill is journaled as ended:
/// a later start with `guard.quarantine` raised does not bring it back (judged again with the new
/// length, it was in force from the revert's time).
#[test]
fn a_missing_quarantine_ended_by_the_next_start_does_not_come_back_with_a_longer_setting() {
    let dir = private_tempdir();
    let a = addr("net.core.somaxconn@netns:4026539999");
    let mut j = open(dir.path());
    guard_revert_without_its_quarantine(&mut j, &a);
    drop(j);
    std::thread::sleep(Duration::from_millis(5));
    let mut j = open(dir.path());
    let restored = j
        .restore_guard_quarantines(Duration::from_millis(1))
        .unwrap();
    assert_eq!(restored.len(), 1, "{restored:?}");
    assert!(
        restored[0].contains(
            "9000, which the guard reverted (#1 by #2) just before the agent \
             stopped, would have been quarantined until"
        ) && restored[0]
            .ends_with("which has passed; journaled as ended, as the guard would have done"),
        "{restored:?}"
    );
    drop(j);
    let week = Duration::from_secs(7 * 24 * 3600);
    let mut j = open(dir.path());
    assert_eq!(
        j.restore_guard_quarantines(week).unwrap(),
        Vec::<String>::new()
    );
    let now = SystemTime::now();
    let until = j.context(&a, &Value::Int(9000), now).quarantined_until;
    assert!(until.is_some_and(|u| u <= now), "ended: {until:?}");
}

/// The guard's revert was interrupted after its kernel write, and a later start reconciled it as
/// done: its outcome is dated at that start. The quarantine it was missing runs from the revert's
/// own time, as the guard's would have, not from the start (docs/journal.md).
#[test]
fn a_missing_quarantine_runs_from_the_revert_not_from_its_reconciliation() {
    let dir = private_tempdir();
    let a = addr("net.core.somaxconn@netns:4026539999");
    let mut j = open(dir.path());
    let revert = guard_revert_intent(&mut j, &a);
    drop(j);
    // The agent was down: the next start's outcome is at least this much later.
    std::thread::sleep(Duration::from_millis(20));
    let mut j = open(dir.path());
    j.record_outcome(
        revert,
        Outcome::Reverted {
            why: "revert interrupted after the kernel write; found done".into(),
            read_back: Some(Value::Int(4096)),
        },
    )
    .unwrap();
    let restored = j
        .restore_guard_quarantines(Duration::from_secs(3600))
        .unwrap();
    assert_eq!(restored.len(), 1, "{restored:?}");
    let ts = |want: &dyn Fn(&Record) -> Option<u64>| j.records().iter().find_map(want).unwrap();
    let revert_ms = ts(&|r| match r {
        Record::Intent(i) if i.id == revert => Some(i.ts_ms),
        _ => None,
    });
    let (since, until) = j
        .records()
        .iter()
        .find_map(|r| match r {
            Record::Quarantine {
                ts_ms, until_ms, ..
            } => Some((*ts_ms, *until_ms)),
            _ => None,
        })
        .unwrap();
    assert_eq!((since, until), (revert_ms, revert_ms + 3_600_000));
}

/// A damaged file's warnings are its holder's to log (the agent logs the journal's, the approvals
/// store's and guard.log's with a prefix of its own): the loader logging them as well put every
/// line in the agent's log twice.
#[test]
fn a_damaged_files_warnings_are_returned_not_logged_by_the_loader() {
    let dir = private_tempdir();
    std::fs::write(dir.path().join("guard.log"), "zzzz not a record\n").unwrap();
    let (loaded, logged) =
        crate::logging::logged(|| store::load_records::<Record>(dir.path(), "guard.log").unwrap());
    assert_eq!(loaded.warnings.len(), 2, "{:?}", loaded.warnings);
    assert!(
        loaded.warnings[0].contains("line 1 is damaged"),
        "{:?}",
        loaded.warnings
    );
    assert_eq!(logged, "");
}

/// The second change's intent line is damaged: its outcome, which repeats the intent, is listed
/// in its place, with the reason saying the intent's line was lost.
#[test]
fn a_change_whose_intent_line_was_lost_is_listed_from_its_outcome() {
    let dir = private_tempdir();
    two_changes(dir.path());
    damage_field(dir.path(), 3, "reason");
    let j = open(dir.path());
    let entries = j.entries();
    assert_eq!(entries.iter().map(|e| e.id).collect::<Vec<_>>(), [1, 2]);
    let e = &entries[1];
    let outcome_ms = j
        .records()
        .iter()
        .find_map(|r| match r {
            Record::Outcome { id: 2, ts_ms, .. } => Some(*ts_ms),
            _ => None,
        })
        .unwrap();
    assert_eq!(
        (
            e.ts_ms,
            e.address.to_string(),
            e.before.clone(),
            e.after.clone(),
            e.source,
            e.reason.as_str(),
            e.kind.as_str(),
            e.revert_of,
            e.status.as_str(),
            e.detail.clone(),
            e.read_back.clone(),
        ),
        (
            outcome_ms,
            "net.core.somaxconn@netns:4026539999".to_string(),
            Some(Value::Int(8192)),
            Value::Int(16384),
            Source::Rules,
            "not known: the intent's line was lost to damage; listed from its outcome's copy",
            "change",
            None,
            "applied",
            None,
            Some(Value::Int(16384)),
        )
    );
    assert_eq!(j.listing(0).map(|(_, e)| e.id).collect::<Vec<_>>(), [1, 2]);
}

/// Defect (review s33 qa-statefail #3): a write the journal could not take back (its file
/// system went read-only, an fsync failed) left a running agent's journal refusing every later
/// record until a restart, saying only "an earlier failure left this file unsafe to append to",
/// without the cause. Now the next record opens the file again, cut back to before the record
/// that failed; one that cannot (still read-only) is refused with that cause.
#[test]
fn a_write_that_could_not_be_taken_back_is_cut_off_at_the_next_record() {
    let dir = private_tempdir();
    let mut j = open(dir.path());
    j.set_paused(true, "first").unwrap();
    let file = dir.path().join(store::JOURNAL_FILE);
    let length = std::fs::metadata(&file).unwrap().len();
    // As an append leaves it when it wrote part of its line and neither its fsync nor taking
    // it back worked.
    let appender = j.appender.as_mut().unwrap();
    appender.poison_from(length);
    OpenOptions::new()
        .append(true)
        .open(&file)
        .unwrap()
        .write_all(b"0badc0de {\"type\":\"res")
        .unwrap();
    assert!(j.set_paused(false, "second").unwrap());
    drop(j);
    let j = open(dir.path());
    assert_eq!(j.warnings(), &[] as &[String]);
    assert_eq!(j.paused(), None);
    let kinds: Vec<String> = j
        .records()
        .iter()
        .map(|r| {
            serde_json::to_value(r).unwrap()["type"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(kinds, ["pause", "resume"]);
}

/// What a poisoned append says while the file cannot be opened again: the failure that
/// poisoned it, by name when it is a read-only file system.
#[test]
fn a_poisoned_append_says_what_poisoned_it() {
    let dir = private_tempdir();
    let mut appender = store::Appender::open(dir.path(), store::JOURNAL_FILE).unwrap();
    appender.fail_after = Some(0);
    // Not poisoned by a failure it took back.
    assert!(appender
        .append(&Record::Pause {
            ts_ms: 1,
            by: "x".into()
        })
        .is_err());
    assert!(!appender.is_poisoned());
    appender.poison_from_error(0, std::io::Error::from_raw_os_error(5));
    let e = appender
        .append(&Record::Pause {
            ts_ms: 2,
            by: "x".into(),
        })
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "{}: an earlier write failed (Input/output error (os error 5)) and could not be taken \
             back, so this file takes no more until it is opened again, which the agent does \
             at its next record once the state directory can be written",
            dir.path().join(store::JOURNAL_FILE).display()
        )
    );
    appender.poison_from_error(0, std::io::Error::from_raw_os_error(30));
    let e = appender
        .append(&Record::Pause {
            ts_ms: 3,
            by: "x".into(),
        })
        .unwrap_err();
    assert!(
        matches!(&e, JournalError::Io { source, .. } if source.raw_os_error() == Some(30)),
        "{e}"
    );
}

/// Defect (s39 fix #4): `kpo journal --json` gave a namespace named by path only as typed
/// (`@netns:/run/netns/NAME`), while `kpo status` and the events name it by its key
/// (`@netns:INODE`): joining them by address failed. Each entry has the key too (a refusal's key
/// is not recorded: it has none).
#[test]
fn an_entry_has_its_key_beside_the_address_as_typed() {
    use std::os::unix::fs::MetadataExt as _;
    let dir = private_tempdir();
    let ns = dir.path().join("ns-file");
    std::fs::write(&ns, "").unwrap();
    crate::policy::stand_in_netns(&ns);
    let inode = std::fs::metadata(&ns).unwrap().ino();
    let typed = format!("net.core.somaxconn@netns:{}", ns.display());
    let mut j = open(dir.path());
    let id = j
        .record_intent(
            &addr(&typed),
            &Value::Int(4096),
            &Value::Int(8192),
            Source::Operator,
            "one",
            IntentKind::Change,
        )
        .unwrap();
    j.record_outcome(
        id,
        Outcome::Applied {
            read_back: Value::Int(8192),
            reconciled: false,
            why: None,
        },
    )
    .unwrap();
    j.record_refusal(
        &addr(&typed),
        Some(&Value::Int(8192)),
        &Value::Int(1),
        Source::Operator,
        "two",
        "below min",
    )
    .unwrap();
    let listed: Vec<serde_json::Value> = j
        .entries()
        .iter()
        .map(|e| serde_json::to_value(e).unwrap())
        .map(|e| serde_json::json!([e["address"], e.get("key")]))
        .collect();
    assert_eq!(
        listed,
        [
            serde_json::json!([typed, format!("net.core.somaxconn@netns:{inode}")]),
            serde_json::json!([typed, null]),
        ]
    );
}

/// The line (from 1) of the journal whose record is of `kind`, the `nth` of them (from 0).
fn line_of(dir: &Path, kind: &str, nth: usize) -> usize {
    let text = std::fs::read_to_string(dir.join(store::JOURNAL_FILE)).unwrap();
    let tag = format!("\"type\":\"{kind}\"");
    text.lines()
        .enumerate()
        .filter(|(_, l)| l.contains(&tag))
        .nth(nth)
        .unwrap()
        .0
        + 1
}

/// Defect (s44 storyA F2): a `kpo pause` whose line was damaged was dropped like any damaged
/// line, and with it the pause: `kpo status` said `paused: no` and the advisors changed the
/// kernel again, the only word a "line N is damaged; dropped". The pause is kept in force (the
/// safe side), said, and written by the rewrite, so the next open has it too; a resume dated
/// after it still lifts it.
#[test]
fn a_damaged_pause_is_kept_in_force_unless_a_resume_follows_it() {
    let dir = private_tempdir();
    let mut j = open(dir.path());
    assert!(j.set_paused(true, "operator alice").unwrap());
    let paused_at = j.paused().unwrap().1;
    drop(j);
    let line = line_of(dir.path(), "pause", 0);
    damage_field(dir.path(), line, "by");
    let j = open(dir.path());
    assert!(
        j.warnings().iter().any(|w| w
            == &format!(
                "journal.log line {line}, damaged, was a kpo pause: the pause is kept in force \
                 (kpo resume lifts it)"
            )),
        "{:?}",
        j.warnings()
    );
    drop(j);
    // Written by the rewrite that dropped the line: the next open has it as well.
    for _ in 0..2 {
        let j = open(dir.path());
        assert_eq!(
            j.paused(),
            Some(&(
                format!("a damaged pause record (journal.log line {line}), kept"),
                paused_at
            ))
        );
    }

    // Paused, then resumed: the pause's line damaged does not pause again.
    let dir = private_tempdir();
    let mut j = open(dir.path());
    j.set_paused(true, "alice").unwrap();
    std::thread::sleep(Duration::from_millis(2)); // the resume is dated after the pause
    j.set_paused(false, "alice").unwrap();
    drop(j);
    damage_field(dir.path(), line_of(dir.path(), "pause", 0), "by");
    assert_eq!(open(dir.path()).paused(), None);
}

/// Defect (s55 story AT-1): an agent started in a new namespace after its own died kept what the
/// journal knew of the dead one's keys. Settled: the host's per-namespace keys with anything
/// known; not a host-wide key, another namespace's key, or one known of nothing; and once only.
#[test]
fn a_dead_agent_namespace_settles_only_its_own_per_namespace_keys_once() {
    let dir = private_tempdir();
    let mut j = open(dir.path());
    for (address, before, after) in [
        ("net.core.somaxconn", 777, 1001),
        ("vm.swappiness", 60, 10),
        ("net.core.somaxconn@netns:4026539999", 4096, 8192),
        ("ethtool:eth0:rx-usecs", 50, 100),
        ("cpufreq:policy0:scaling_max_freq", 2000000, 1800000),
    ] {
        let id = j
            .record_intent(
                &addr(address),
                &Value::Int(before),
                &Value::Int(after),
                Source::Operator,
                "t",
                IntentKind::Change,
            )
            .unwrap();
        j.record_outcome(
            id,
            Outcome::Applied {
                read_back: Value::Int(after),
                reconciled: false,
                why: None,
            },
        )
        .unwrap();
    }
    // Interrupted: its original is all that is known.
    j.record_intent(
        &addr("net.ipv4.tcp_fin_timeout"),
        &Value::Int(60),
        &Value::Int(31),
        Source::Operator,
        "t",
        IntentKind::Change,
    )
    .unwrap();
    let mut settled = j.forget_dead_agent_namespace("dead").unwrap();
    settled.sort();
    // Not a NIC's: a physical one goes back to the first namespace with KPO's value (s55
    // review2 N3); CPU frequency is the machine's.
    assert_eq!(settled, ["net.core.somaxconn", "net.ipv4.tcp_fin_timeout"]);
    let interrupted = j.incomplete();
    assert_eq!(interrupted.len(), 1);
    assert_eq!(
        j.gone_after(&interrupted[0]).map(|(why, _)| why),
        Some("dead")
    );
    drop(j);
    let mut j = open(dir.path());
    let host = j.param_state(&addr("net.core.somaxconn")).unwrap();
    assert_eq!((host.original.clone(), host.holding), (None, None));
    let swappiness = j.param_state(&addr("vm.swappiness")).unwrap();
    assert_eq!(swappiness.original, Some(Value::Int(60)));
    let cpufreq = j
        .param_state(&addr("cpufreq:policy0:scaling_max_freq"))
        .unwrap();
    assert_eq!(cpufreq.original, Some(Value::Int(2000000)));
    let nic = j.param_state(&addr("ethtool:eth0:rx-usecs")).unwrap();
    assert_eq!(nic.original, Some(Value::Int(50)));
    let other = j
        .param_state(&addr("net.core.somaxconn@netns:4026539999"))
        .unwrap();
    assert_eq!(other.original, Some(Value::Int(4096)));
    assert_eq!(
        j.forget_dead_agent_namespace("dead").unwrap(),
        Vec::<String>::new()
    );
}
