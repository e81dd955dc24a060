//! The change path against an in-memory kernel.
use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use super::*;
use crate::journal::Holder;

/// An in-memory kernel: values by address text, plus how it misbehaves.
#[derive(Default)]
pub(crate) struct FakeKernel {
    pub values: HashMap<String, Value>,
    /// Writes of this address store this value instead (a kernel that clamps).
    pub clamp: HashMap<String, Value>,
    /// Writes of this address fail.
    pub refuse: Vec<String>,
    pub opened: Vec<String>,
    /// The cookie every network namespace has (`None`: unknown).
    pub netns_cookie: Option<u64>,
    /// Every network namespace is gone: opening a parameter in one fails.
    pub netns_gone: bool,
    /// The inode of the namespace every actuator in one holds (`None`: unknown).
    pub netns_inode: Option<u64>,
    /// The next revert of this address stores this value instead (once): a read-back that
    /// differs, after which the change path puts the value before back.
    pub revert_clamp_once: Option<(String, Value)>,
    /// Reverts (put-backs) of this address fail.
    pub refuse_revert: Vec<String>,
    /// Reverts of the first address fail while the second holds this value (a kernel that
    /// relates two keys: a local port range below `ip_unprivileged_port_start`).
    pub refuse_revert_while: Option<(String, String, Value)>,
    /// Someone else writes this address this value once it has been read this many times more.
    pub written_by_others_after_reads: Option<(String, usize, Value)>,
}

#[derive(Clone, Default)]
pub(crate) struct FakeActuators(pub Arc<Mutex<FakeKernel>>);

struct FakeActuator {
    address: ParamAddress,
    kernel: Arc<Mutex<FakeKernel>>,
}

impl Actuator for FakeActuator {
    fn address(&self) -> &ParamAddress {
        &self.address
    }
    fn netns_cookie(&self) -> Option<u64> {
        match self.address.target {
            crate::actuate::param::Target::Netns { .. } => self.kernel.lock().unwrap().netns_cookie,
            _ => None,
        }
    }
    fn netns_inode(&self) -> Option<u64> {
        match self.address.target {
            crate::actuate::param::Target::Netns { .. } => self.kernel.lock().unwrap().netns_inode,
            _ => None,
        }
    }
    fn holds_still(&self) -> bool {
        true
    }
    fn read(&mut self) -> Result<Value, ActuateError> {
        let mut k = self.kernel.lock().unwrap();
        let key = self.address.to_string();
        let read = (k.values.get(&key).cloned()).ok_or_else(|| ActuateError::NotFound {
            knob: key.clone(),
            reason: "no such key".into(),
        });
        if let Some((of, reads, value)) = k.written_by_others_after_reads.take() {
            match (of == key, reads) {
                (true, 0 | 1) => {
                    k.values.insert(key, value);
                }
                (true, n) => k.written_by_others_after_reads = Some((of, n - 1, value)),
                (false, n) => k.written_by_others_after_reads = Some((of, n, value)),
            }
        }
        read
    }
    fn validate(&mut self, value: &Value) -> Result<(), ActuateError> {
        match value {
            Value::Int(v) if *v < 0 => Err(ActuateError::NotFound {
                knob: self.address.to_string(),
                reason: "negative".into(),
            }),
            _ => Ok(()),
        }
    }
    fn apply(&mut self, value: &Value) -> Result<Value, ActuateError> {
        let key = self.address.to_string();
        let mut k = self.kernel.lock().unwrap();
        if k.refuse.contains(&key) {
            return Err(ActuateError::NotFound {
                knob: key,
                reason: "EINVAL".into(),
            });
        }
        let stored = k.clamp.get(&key).cloned().unwrap_or_else(|| value.clone());
        k.values.insert(key, stored.clone());
        Ok(stored)
    }
    fn revert(&mut self, original: &Value) -> Result<Value, ActuateError> {
        let key = self.address.to_string();
        let mut k = self.kernel.lock().unwrap();
        if k.refuse_revert.contains(&key) {
            return Err(ActuateError::NotFound {
                knob: key,
                reason: "EBUSY".into(),
            });
        }
        if let Some((of, other, value)) = &k.refuse_revert_while {
            if *of == key && k.values.get(other) == Some(value) {
                return Err(ActuateError::NotFound {
                    knob: key,
                    reason: "EINVAL".into(),
                });
            }
        }
        let stored = match k.revert_clamp_once.take() {
            Some((a, v)) if a == key => v,
            other => {
                k.revert_clamp_once = other;
                original.clone()
            }
        };
        k.values.insert(key, stored.clone());
        Ok(stored)
    }
}

impl Actuators for FakeActuators {
    fn open(&self, address: &ParamAddress) -> Result<Box<dyn Actuator>, ActuateError> {
        let mut k = self.0.lock().unwrap();
        k.opened.push(address.to_string());
        if let (true, crate::actuate::param::Target::Netns { netns }) =
            (k.netns_gone, &address.target)
        {
            return Err(ActuateError::Netns {
                netns: netns.to_string(),
                reason: "no process is in it".into(),
            });
        }
        drop(k);
        Ok(Box::new(FakeActuator {
            address: address.clone(),
            kernel: self.0.clone(),
        }))
    }
}

pub(crate) fn kernel(values: &[(&str, Value)]) -> FakeActuators {
    let k = FakeActuators::default();
    for (a, v) in values {
        k.0.lock().unwrap().values.insert(a.to_string(), v.clone());
    }
    k
}

pub(crate) fn path(
    dir: &std::path::Path,
    policy: &str,
    k: &FakeActuators,
) -> (ChangePath, Arc<Mutex<Vec<ChangePathEvent>>>) {
    let policy = Policy::parse(policy, "test.toml").unwrap();
    crate::journal::store::make_private(dir);
    let journal = Journal::open(dir, Holder::Cli, Duration::ZERO).unwrap();
    let mut p = ChangePath::new(policy, journal, Box::new(k.clone()));
    let events = Arc::new(Mutex::new(Vec::new()));
    let sink = events.clone();
    p.set_event_sink(move |e| sink.lock().unwrap().push(e));
    (p, events)
}

const SOMAX: &str = "net.core.somaxconn@netns:4026539999";

const POLICY: &str = r#"
[params."net.core.somaxconn"]
mode = "auto"
min = 128
max = 65535
max_step = "100%"
"#;

fn op(a: &str, v: Value) -> Proposal {
    Proposal {
        address: a.parse().unwrap(),
        value: v,
        source: Source::Operator,
        reason: "test".into(),
    }
}

fn value(k: &FakeActuators, a: &str) -> Value {
    k.0.lock().unwrap().values[a].clone()
}

fn phases(events: &Mutex<Vec<ChangePathEvent>>) -> Vec<ChangePhase> {
    events
        .lock()
        .unwrap()
        .iter()
        .filter_map(|e| match e {
            ChangePathEvent::Change(c) => Some(c.phase),
            _ => None,
        })
        .collect()
}

#[test]
fn apply_journals_intent_then_outcome_and_revert_all_restores_the_original() {
    let dir = tempfile::tempdir().unwrap();
    let k = kernel(&[(SOMAX, Value::Int(4096))]);
    let (mut p, events) = path(dir.path(), POLICY, &k);
    let r = p.propose(&op(SOMAX, Value::Int(8192))).unwrap();
    assert_eq!(r.status, ChangeStatus::Applied, "{}", r.describe());
    assert_eq!(r.read_back, Some(Value::Int(8192)));
    assert_eq!(
        phases(&events),
        vec![
            ChangePhase::Proposed,
            ChangePhase::Applied,
            ChangePhase::Verified
        ]
    );
    let r = p.propose(&op(SOMAX, Value::Int(12000))).unwrap();
    assert_eq!(r.status, ChangeStatus::Applied);
    assert_eq!(value(&k, SOMAX), Value::Int(12000));
    // Unchanged: nothing journaled.
    let r = p.propose(&op(SOMAX, Value::Int(12000))).unwrap();
    assert_eq!(r.status, ChangeStatus::Unchanged);
    assert_eq!(p.journal.entries().len(), 2);
    // Revert #2 puts back 8192; revert --all the original 4096.
    let r = p.revert(2, Source::Operator, "undo").unwrap();
    assert_eq!(r.status, ChangeStatus::Reverted, "{}", r.describe());
    assert_eq!(value(&k, SOMAX), Value::Int(8192));
    let all = p.revert_all("all").unwrap();
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].status, ChangeStatus::Reverted);
    assert_eq!(
        all[0].detail,
        None,
        "KPO's own value: {}",
        all[0].describe()
    );
    assert_eq!(value(&k, SOMAX), Value::Int(4096));
    // The original stays the original after all of that, across a reopen.
    drop(p);
    let (p, _) = path(dir.path(), POLICY, &k);
    let a: ParamAddress = SOMAX.parse().unwrap();
    assert_eq!(
        p.journal.param_state(&a).unwrap().original,
        Some(Value::Int(4096))
    );
    let kinds: Vec<_> = p
        .journal
        .entries()
        .iter()
        .map(|e| (e.kind.clone(), e.status.clone()))
        .collect();
    assert_eq!(kinds.len(), 4);
    assert!(
        kinds.iter().all(|(_, s)| s == "applied" || s == "reverted"),
        "{kinds:?}"
    );
}

/// s54 story AP F2: the namespace a change named by path was deleted after its actuator opened
/// it (`ip netns del NAME` racing `kpo apply --netns /run/netns/NAME`). The change was journaled
/// under the path, which names nothing, so the value check later read the next namespace of that
/// name and yielded it every window, and `kpo revert --all` found no original. It is journaled
/// and reported under the inode of the namespace written to, the one the actuator holds.
#[test]
fn a_change_whose_namespace_path_is_gone_by_the_write_is_kept_under_the_namespace_written() {
    let dir = tempfile::tempdir().unwrap();
    let gone = dir.path().join("netns-deleted-meanwhile");
    let by_path = format!("net.core.somaxconn@netns:{}", gone.display());
    let by_inode = "net.core.somaxconn@netns:4026539998";
    let k = kernel(&[(&by_path, Value::Int(4096))]);
    k.0.lock().unwrap().netns_inode = Some(4026539998);
    let state = tempfile::tempdir().unwrap();
    let (mut p, events) = path(state.path(), POLICY, &k);
    let r = p.propose(&op(&by_path, Value::Int(8192))).unwrap();
    assert_eq!(r.status, ChangeStatus::Applied, "{}", r.describe());
    assert_eq!(
        r.address.to_string(),
        by_inode,
        "reported, and watched, as written"
    );
    assert_eq!(
        value(&k, &by_path),
        Value::Int(8192),
        "written where opened"
    );
    let entries = p.journal.entries();
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert_eq!(entries[0].key.as_deref(), Some(by_inode));
    assert_eq!(entries[0].address.to_string(), by_inode);
    let applied = events.lock().unwrap().iter().any(|e| {
        matches!(e, ChangePathEvent::Change(c)
            if c.phase == ChangePhase::Applied && c.target.to_string() == by_inode)
    });
    assert!(applied, "the applied event names the namespace written to");
    let keys: Vec<String> = p.journal.params().map(|s| s.key.clone()).collect();
    assert_eq!(keys, vec![by_inode.to_string()]);
}

/// Defect (qa-act): `kpo apply net.core.somaxconn=4500 --netns /proc/self/ns/net`, by an operator
/// in another namespace, reached the agent as that path, which names whoever opens it: the agent,
/// so the change went to the agent's own namespace (the host's key). Refused before the kernel is
/// read; the host keeps its value.
#[test]
fn a_namespace_named_through_proc_self_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let k = kernel(&[("net.core.somaxconn", Value::Int(4096))]);
    let (mut p, _) = path(dir.path(), POLICY, &k);
    for asked in [
        "net.core.somaxconn@netns:/proc/self/ns/net",
        "net.core.somaxconn@netns:/proc/thread-self/ns/net",
        "net.core.somaxconn@netns://proc/self/task/1/ns/net",
    ] {
        let r = p.propose(&op(asked, Value::Int(8192))).unwrap();
        assert_eq!(r.status, ChangeStatus::Refused, "{asked}: {}", r.describe());
        let detail = r.describe();
        assert!(
            detail.contains("names the network namespace of whichever process opens it"),
            "{asked}: {detail}"
        );
    }
    assert_eq!(value(&k, "net.core.somaxconn"), Value::Int(4096));
}

/// s42: `kpo apply --netns /proc/self/ns/mnt` was refused as naming "the network namespace of
/// whichever process opens it", with a hint to take its inode, and `--netns /proc/PID/ns/mnt`
/// failed when the actuator opened it: neither names a network namespace, whoever opens it. Both
/// are refused, before the kernel is read, with what they are.
#[test]
fn a_namespace_of_another_kind_is_refused_as_such() {
    if std::fs::File::open("/proc/self/ns/mnt").is_err() {
        kpo_test_skip::skip("/proc/self/ns/mnt cannot be opened here");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let k = kernel(&[("net.core.somaxconn", Value::Int(4096))]);
    let (mut p, _) = path(dir.path(), POLICY, &k);
    let by_pid = format!("/proc/{}/ns/mnt", std::process::id());
    let mut asked = vec![
        ("/proc/self/ns/mnt", "a mount namespace"),
        ("/proc/thread-self/ns/uts", "a UTS namespace"),
        ("/proc/self/ns/ipc", "an IPC namespace"),
        (by_pid.as_str(), "a mount namespace"),
    ];
    // Time namespaces came with Linux 5.6.
    if std::fs::File::open("/proc/self/ns/time").is_ok() {
        asked.push(("/proc/self/ns/time", "a time namespace"));
    }
    for (asked, kind) in asked {
        let address = format!("net.core.somaxconn@netns:{asked}");
        let r = p.propose(&op(&address, Value::Int(8192))).unwrap();
        assert_eq!(r.status, ChangeStatus::Refused, "{asked}: {}", r.describe());
        assert_eq!(
            names_no_namespace_of_its_own(&address.parse().unwrap()).unwrap(),
            format!(
                "{asked}: not a network namespace: {kind}; give /proc/PID/ns/net \
                 with the PID, /run/netns/NAME, or the network namespace's inode (`stat -L -c \
                 %i /proc/PID/ns/net`)"
            )
        );
        assert!(
            r.describe().contains(&format!(": {kind};")),
            "{}",
            r.describe()
        );
    }
    assert_eq!(value(&k, "net.core.somaxconn"), Value::Int(4096));
}

/// A revert that took is listed with its reason once: `detail` is for what the reason does not
/// say (a put-back, a reconciliation), not the reason again (`kpo journal` printed `[kpo revert
/// 1; by operator ...] kpo revert 1; by operator ...`). One put back after a wrong read-back keeps
/// its detail.
#[test]
fn a_revert_is_listed_without_its_reason_repeated_as_detail() {
    let dir = tempfile::tempdir().unwrap();
    let k = kernel(&[(SOMAX, Value::Int(4096))]);
    let (mut p, _) = path(dir.path(), POLICY, &k);
    p.propose(&op(SOMAX, Value::Int(8192))).unwrap();
    let r = p
        .revert(
            1,
            Source::Operator,
            "kpo revert 1; by operator (uid 0, pid 7)",
        )
        .unwrap();
    assert_eq!(r.status, ChangeStatus::Reverted, "{}", r.describe());
    let entries = p.journal.entries();
    let e = &entries[1];
    assert_eq!(
        (
            e.kind.as_str(),
            e.revert_of,
            e.status.as_str(),
            e.reason.as_str(),
            e.detail.as_deref()
        ),
        (
            "revert",
            Some(1),
            "reverted",
            "kpo revert 1; by operator (uid 0, pid 7)",
            None
        )
    );
}

/// A write the kernel rewrites (icmp_ratelimit 1001 ms reads back 1004 at HZ 250) is put back,
/// and its events have no `applied`, only `reverted`: docs/policy.md's `applied` is a write read
/// back as asked.
#[test]
fn a_read_back_mismatch_is_reverted() {
    let dir = tempfile::tempdir().unwrap();
    let k = kernel(&[(SOMAX, Value::Int(4096))]);
    k.0.lock()
        .unwrap()
        .clamp
        .insert(SOMAX.into(), Value::Int(5000));
    let (mut p, events) = path(dir.path(), POLICY, &k);
    let r = p.propose(&op(SOMAX, Value::Int(8192))).unwrap();
    assert_eq!(r.status, ChangeStatus::Reverted, "{}", r.describe());
    assert!(
        r.detail.as_deref().unwrap().contains("read back 5000"),
        "{}",
        r.describe()
    );
    assert_eq!(value(&k, SOMAX), Value::Int(4096));
    assert_eq!(
        phases(&events),
        vec![ChangePhase::Proposed, ChangePhase::Reverted]
    );
    assert_eq!(p.journal.entries()[0].status, "reverted");
    // KPO never held it: the value put back is the kernel's own, not one KPO applied.
    let state = p.journal.param_state(&SOMAX.parse().unwrap()).unwrap();
    assert_eq!((&state.last_applied, state.holding), (&None, None));
}

/// s58 story BH-2: another writer (`sysctl -p`, a configuration tool) wrote the parameter after
/// KPO read the value before and before its write, while the intent was journaled. KPO writes
/// nothing over it, for a change and for a revert, and says so; the journal keeps no `before`
/// that was not the kernel's as KPO's.
#[test]
fn a_value_written_by_someone_else_while_the_intent_is_journaled_is_not_written_over() {
    let dir = tempfile::tempdir().unwrap();
    let k = kernel(&[(SOMAX, Value::Int(4096))]);
    let (mut p, events) = path(dir.path(), POLICY, &k);
    let others = |k: &FakeActuators, value: i128| {
        let reads = 1;
        k.0.lock().unwrap().written_by_others_after_reads =
            Some((SOMAX.into(), reads, Value::Int(value)));
    };
    others(&k, 7001);
    let r = p.propose(&op(SOMAX, Value::Int(8192))).unwrap();
    assert_eq!(r.status, ChangeStatus::Failed, "{}", r.describe());
    assert_eq!(value(&k, SOMAX), Value::Int(7001));
    assert_eq!(
        r.detail.as_deref(),
        Some(
            "not written: the kernel has 7001, not the 4096 read before the intent was \
             journaled: someone else wrote it meanwhile, and their value stays"
        )
    );
    assert_eq!(
        phases(&events),
        [ChangePhase::Proposed, ChangePhase::Failed]
    );
    let state = p.journal.param_state(&SOMAX.parse().unwrap()).unwrap();
    assert_eq!((&state.last_applied, state.holding), (&None, None));
    // A revert of KPO's change, the other writer coming between its read and its write: their
    // value stays, reported as a revert that found it before its intent is (`skipped`, theirs
    // left, for the caller to yield: s58 review1 R1-1), the journal's outcome `failed`.
    let r = p.propose(&op(SOMAX, Value::Int(8192))).unwrap();
    assert_eq!(r.status, ChangeStatus::Applied, "{}", r.describe());
    let id = r.journal_id.unwrap();
    others(&k, 7002);
    let r = p.revert(id, Source::Operator, "undo").unwrap();
    assert_eq!(
        (r.status, r.theirs_left, &r.read_back),
        (ChangeStatus::Skipped, true, &Some(Value::Int(7002))),
        "{}",
        r.describe()
    );
    assert_eq!(value(&k, SOMAX), Value::Int(7002));
    assert!(
        (r.detail.as_deref().unwrap()).contains("the kernel has 7002, not the 8192"),
        "{}",
        r.describe()
    );
    let revert = r.journal_id.unwrap();
    assert_eq!(
        p.journal
            .entries()
            .iter()
            .find(|e| e.id == revert)
            .unwrap()
            .status,
        "failed"
    );
    // `kpo revert --force` writes over someone else's value, also one written meanwhile
    // (review1 R1-2).
    others(&k, 7003);
    let r = p.revert_over_theirs(id, Source::Operator, "undo").unwrap();
    assert_eq!(r.status, ChangeStatus::Reverted, "{}", r.describe());
    assert_eq!(value(&k, SOMAX), Value::Int(7001), "the value before #{id}");
}

#[test]
fn a_refused_write_fails_and_leaves_the_value() {
    let dir = tempfile::tempdir().unwrap();
    let k = kernel(&[(SOMAX, Value::Int(4096))]);
    k.0.lock().unwrap().refuse.push(SOMAX.into());
    let (mut p, _) = path(dir.path(), POLICY, &k);
    let r = p.propose(&op(SOMAX, Value::Int(8192))).unwrap();
    assert_eq!(r.status, ChangeStatus::Failed, "{}", r.describe());
    assert_eq!(value(&k, SOMAX), Value::Int(4096));
    assert_eq!(p.journal.entries()[0].status, "failed");
}

#[test]
fn an_apply_of_core_pattern_is_refused_without_touching_the_kernel() {
    let dir = tempfile::tempdir().unwrap();
    let k = kernel(&[("kernel.core_pattern", Value::Word("core".into()))]);
    let (mut p, events) = path(dir.path(), "[defaults]\nmode = \"auto\"\n", &k);
    let r = p
        .propose(&op("kernel.core_pattern", Value::Word("|/tmp/evil".into())))
        .unwrap();
    assert_eq!(r.status, ChangeStatus::Refused);
    assert_eq!(r.refusal.as_ref().unwrap().code(), "deny_listed");
    assert!(
        k.0.lock().unwrap().opened.is_empty(),
        "the actuator is never opened"
    );
    assert_eq!(value(&k, "kernel.core_pattern"), Value::Word("core".into()));
    let e = &p.journal.entries()[0];
    assert_eq!(e.status, "refused");
    assert!(e.detail.as_deref().unwrap().contains("deny-listed"));
    let ev = events.lock().unwrap();
    let changes: Vec<_> = ev
        .iter()
        .filter_map(|e| match e {
            ChangePathEvent::Change(c) => Some(c),
            _ => None,
        })
        .collect();
    // Its proposal first, as a refusal the policy decides has (s45 storyF).
    assert_eq!(changes.len(), 2, "{changes:?}");
    assert_eq!(changes[0].phase, ChangePhase::Proposed);
    assert_eq!(changes[0].decision.as_deref(), Some("refused"));
    assert_eq!(changes[1].refusal.as_deref(), Some("deny_listed"));
}

#[test]
fn a_writeback_limit_is_changed_only_in_the_form_in_force() {
    let dir = tempfile::tempdir().unwrap();
    // A host on the default ratios: the byte counts read 0.
    let k = kernel(&[
        ("vm.dirty_bytes", Value::Int(0)),
        ("vm.dirty_ratio", Value::Int(20)),
        ("vm.dirty_background_bytes", Value::Int(0)),
    ]);
    let (mut p, _) = path(dir.path(), "[defaults]\nmode = \"auto\"\n", &k);
    for key in ["vm.dirty_bytes", "vm.dirty_background_bytes"] {
        let r = p.propose(&op(key, Value::Int(64 << 20))).unwrap();
        assert_eq!(r.status, ChangeStatus::Refused, "{}", r.describe());
        assert_eq!(r.refusal.as_ref().unwrap().code(), "invalid");
        assert!(r.describe().contains("is in force"), "{}", r.describe());
        assert_eq!(value(&k, key), Value::Int(0), "nothing written");
    }
    // The ratio in force may be changed, and put back.
    let r = p.propose(&op("vm.dirty_ratio", Value::Int(30))).unwrap();
    assert_eq!(r.status, ChangeStatus::Applied, "{}", r.describe());
    assert_eq!(value(&k, "vm.dirty_ratio"), Value::Int(30));
}

/// Defect: the overcommit limit is a pair of the same kind (writing `vm.overcommit_kbytes` zeroes
/// `vm.overcommit_ratio`, and the reverse), but it was not known: a change of the KiB form wrote,
/// and its revert wrote 0, which zeroed the ratio again: both at 0, and under
/// `vm.overcommit_memory=2` the commit limit was the swap alone.
#[test]
fn the_overcommit_limit_is_changed_only_in_the_form_in_force() {
    let dir = tempfile::tempdir().unwrap();
    let k = kernel(&[
        ("vm.overcommit_kbytes", Value::Int(0)),
        ("vm.overcommit_ratio", Value::Int(50)),
    ]);
    let (mut p, _) = path(dir.path(), "[defaults]\nmode = \"auto\"\n", &k);
    let r = p
        .propose(&op("vm.overcommit_kbytes", Value::Int(8 << 20)))
        .unwrap();
    assert_eq!(r.status, ChangeStatus::Refused, "{}", r.describe());
    assert_eq!(r.refusal.as_ref().unwrap().code(), "invalid");
    assert!(
        r.describe().contains("vm.overcommit_ratio is in force")
            && r.describe().contains("the swap alone"),
        "{}",
        r.describe()
    );
    assert_eq!(
        value(&k, "vm.overcommit_kbytes"),
        Value::Int(0),
        "nothing written"
    );
    let r = p
        .propose(&op("vm.overcommit_ratio", Value::Int(80)))
        .unwrap();
    assert_eq!(r.status, ChangeStatus::Applied, "{}", r.describe());
    // And the other way round: the KiB form in force, the ratio reads 0.
    let dir = tempfile::tempdir().unwrap();
    let k = kernel(&[
        ("vm.overcommit_kbytes", Value::Int(8 << 20)),
        ("vm.overcommit_ratio", Value::Int(0)),
    ]);
    let (mut p, _) = path(dir.path(), "[defaults]\nmode = \"auto\"\n", &k);
    let r = p
        .propose(&op("vm.overcommit_ratio", Value::Int(80)))
        .unwrap();
    assert_eq!(r.status, ChangeStatus::Refused, "{}", r.describe());
    assert!(
        r.describe().contains("vm.overcommit_kbytes is in force"),
        "{}",
        r.describe()
    );
}

/// `kpo revert 2` of a refusal listed as #2 in `kpo journal` said "journal has no change #2":
/// it names what #2 is instead; an id the journal never gave is still "no change".
/// A revert is decided by the deny-list alone; reverting one would write the reverted change's
/// value again past a pause, a quarantine and the bounds (seen by hand, qa-act). It is refused,
/// pointing at `kpo apply`, which the policy decides.
#[test]
fn reverting_a_revert_is_refused_and_points_at_kpo_apply() {
    let dir = tempfile::tempdir().unwrap();
    let k = kernel(&[(SOMAX, Value::Int(4096))]);
    let (mut p, _) = path(dir.path(), POLICY, &k);
    p.propose(&op(SOMAX, Value::Int(8192))).unwrap();
    let r = p.revert(1, Source::Operator, "undo").unwrap();
    assert_eq!(r.status, ChangeStatus::Reverted, "{}", r.describe());
    p.journal.set_paused(true, "op").unwrap();
    let e = p.revert(2, Source::Operator, "undo the undo").unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "journal: #2 is a revert (of #1): reverting it would apply 8192 again \
             without the policy's say (a pause, a quarantine, its bounds); kpo apply \
             '{SOMAX}=8192' asks the policy for it"
        )
    );
    assert_eq!(value(&k, SOMAX), Value::Int(4096));
    assert_eq!(p.journal.entries().len(), 2, "nothing recorded");
}

/// storyF (s45): `kpo revert 1` of a change the kernel refused (EINVAL) wrote that change's
/// value before, over a person's value set since, and over a later change of KPO's; `kpo revert
/// --all` said no change took effect. A change that left nothing in the kernel is not reverted;
/// one whose read-back differed was put back at once, likewise; one whose put-back failed too
/// left KPO's value, which a revert still takes out.
#[test]
fn reverting_a_change_that_took_no_effect_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let k = kernel(&[(SOMAX, Value::Int(4096))]);
    let (mut p, _) = path(dir.path(), POLICY, &k);
    assert_eq!(
        p.propose(&op(SOMAX, Value::Int(5000))).unwrap().status,
        ChangeStatus::Applied
    );
    k.0.lock().unwrap().refuse.push(SOMAX.to_string());
    let failed = p.propose(&op(SOMAX, Value::Int(6000))).unwrap();
    assert_eq!(failed.status, ChangeStatus::Failed, "{}", failed.describe());
    let failed = failed.journal_id.unwrap();
    k.0.lock().unwrap().refuse.clear();
    // A person's value since.
    k.0.lock()
        .unwrap()
        .values
        .insert(SOMAX.to_string(), Value::Int(7000));
    let e = p.revert(failed, Source::Operator, "undo").unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "journal: #{failed} took no effect: it failed ({SOMAX}: not available: EINVAL), and the \
             kernel kept its value; nothing to revert"
        )
    );
    assert_eq!(
        value(&k, SOMAX),
        Value::Int(7000),
        "the person's value stays"
    );
    // Written, read back otherwise, and put back at once.
    k.0.lock()
        .unwrap()
        .clamp
        .insert(SOMAX.to_string(), Value::Int(7999));
    let put_back = p.propose(&op(SOMAX, Value::Int(8000))).unwrap();
    assert_eq!(
        put_back.status,
        ChangeStatus::Reverted,
        "{}",
        put_back.describe()
    );
    let put_back = put_back.journal_id.unwrap();
    k.0.lock().unwrap().clamp.clear();
    let records = p.journal.entries().len();
    let e = p.revert(put_back, Source::Operator, "undo").unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "journal: #{put_back} took no effect: it was put back as soon as it was written \
             (wrote 8000 but read back 7999); nothing to revert"
        )
    );
    assert_eq!(value(&k, SOMAX), Value::Int(7000));
    assert_eq!(p.journal.entries().len(), records, "nothing recorded");
    // The first change did take effect: reverting it still writes its value before.
    let r = p.revert(1, Source::Operator, "undo").unwrap();
    assert_eq!(r.status, ChangeStatus::Reverted, "{}", r.describe());
    assert_eq!(value(&k, SOMAX), Value::Int(4096));
}

/// Defect (s55 story AT-3): reverting a change reconciled as failed at a start (interrupted,
/// then a value that was neither its before nor its after) said "the kernel kept its value" of a
/// kernel that held something else.
#[test]
fn reverting_a_change_reconciled_as_failed_does_not_say_the_kernel_kept_its_value() {
    let dir = tempfile::tempdir().unwrap();
    {
        crate::journal::store::make_private(dir.path());
        let mut j = Journal::open(dir.path(), Holder::Cli, Duration::ZERO).unwrap();
        j.record_intent(
            &SOMAX.parse().unwrap(),
            &Value::Int(4096),
            &Value::Int(8192),
            Source::Operator,
            "t",
            IntentKind::Change,
        )
        .unwrap();
    }
    let k = kernel(&[(SOMAX, Value::Int(9999))]);
    let (mut p, _) = path(dir.path(), POLICY, &k);
    let r = p.reconcile().unwrap();
    assert_eq!(r[0].status, ChangeStatus::Failed, "{r:?}");
    let e = p
        .revert(1, Source::Operator, "undo")
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("journal: #1 took no effect: it was reconciled as failed at a start (")
            && e.ends_with("and what the kernel has is not known to be KPO's; nothing to revert"),
        "{e}"
    );
    assert_eq!(value(&k, SOMAX), Value::Int(9999), "nothing written");
}

/// s45 storyF: `kpo apply` on a state directory no agent had run on recorded no namespace, and
/// `kpo revert --all` from another namespace wrote the original there. A command's first change
/// records its namespace before its intent (`agent-netns`); a refusal, which changes nothing,
/// does not; a later change does not write it again.
#[test]
fn a_commands_first_change_records_its_network_namespace() {
    let dir = tempfile::tempdir().unwrap();
    let k = kernel(&[(SOMAX, Value::Int(4096))]);
    let (mut p, _) = path(dir.path(), POLICY, &k);
    let file = dir.path().join(crate::control::AGENT_NETNS_FILE);
    p.netns_unrecorded = true;
    let r = p.propose(&op(SOMAX, Value::Int(1 << 30))).unwrap();
    assert_eq!(r.status, ChangeStatus::Refused, "{}", r.describe());
    assert!(!file.exists(), "a refusal changes nothing");
    let r = p.propose(&op(SOMAX, Value::Int(8192))).unwrap();
    assert_eq!(r.status, ChangeStatus::Applied, "{}", r.describe());
    let recorded = std::fs::read_to_string(&file).unwrap();
    use std::os::unix::fs::MetadataExt;
    let inode = std::fs::metadata("/proc/thread-self/ns/net").unwrap().ino();
    assert!(recorded.starts_with(&format!("{inode} ")), "{recorded}");
    assert!(!p.netns_unrecorded);
    std::fs::remove_file(&file).unwrap();
    p.propose(&op(SOMAX, Value::Int(9000))).unwrap();
    assert!(!file.exists(), "recorded once");
}

#[test]
fn reverting_a_refusal_says_it_is_one() {
    let dir = tempfile::tempdir().unwrap();
    let k = kernel(&[(SOMAX, Value::Int(4096))]);
    let (mut p, _) = path(dir.path(), POLICY, &k);
    let r = p.propose(&op(SOMAX, Value::Int(1 << 30))).unwrap();
    assert_eq!(r.status, ChangeStatus::Refused, "{}", r.describe());
    let id = r.journal_id.expect("an operator's refusal is journaled");
    let e = p.revert(id, Source::Operator, "undo").unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "journal: #{id} is not a change: it is the refusal of {SOMAX} = 1073741824, \
             which wrote nothing; nothing to revert"
        )
    );
    let e = p.revert(id + 5, Source::Operator, "undo").unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "journal: no change #{} in the journal or its archive (`kpo journal` lists the ids)",
            id + 5
        )
    );
    assert_eq!(value(&k, SOMAX), Value::Int(4096));
}

/// Defect: with both forms at 0 (what an earlier revert of the overcommit pair left), each key's
/// change was refused as "reads 0 because the other is in force", each message sending the
/// operator to the other key, so nothing could give the limit a form again. A key whose 0 the
/// kernel takes back may be changed then; a writeback byte count, whose 0 it refuses, may not.
#[test]
fn with_both_forms_at_0_the_form_whose_revert_can_write_0_may_be_changed() {
    for (key, pair, applied) in [
        ("vm.overcommit_ratio", "vm.overcommit_kbytes", true),
        ("vm.overcommit_kbytes", "vm.overcommit_ratio", true),
        ("vm.dirty_ratio", "vm.dirty_bytes", true),
        ("vm.dirty_bytes", "vm.dirty_ratio", false),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let k = kernel(&[(key, Value::Int(0)), (pair, Value::Int(0))]);
        let (mut p, _) = path(dir.path(), "[defaults]\nmode = \"auto\"\n", &k);
        let r = p.propose(&op(key, Value::Int(1 << 20))).unwrap();
        if applied {
            assert_eq!(r.status, ChangeStatus::Applied, "{key}: {}", r.describe());
            assert_eq!(value(&k, key), Value::Int(1 << 20));
        } else {
            assert_eq!(r.status, ChangeStatus::Refused, "{key}: {}", r.describe());
            assert!(
                r.describe()
                    .contains(&format!("{key} and {pair} both read 0"))
                    && r.describe().contains("the kernel refuses 0 bytes"),
                "{}",
                r.describe()
            );
            assert_eq!(value(&k, key), Value::Int(0), "nothing written");
        }
    }
}

#[test]
fn out_of_bounds_and_large_steps_are_refused_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let k = kernel(&[(SOMAX, Value::Int(4096))]);
    let (mut p, _) = path(dir.path(), POLICY, &k);
    let r = p.propose(&op(SOMAX, Value::Int(70000))).unwrap();
    assert_eq!(r.status, ChangeStatus::Refused);
    assert!(
        r.describe()
            .contains("out of bounds: 70000 is outside [128, 65535]"),
        "{}",
        r.describe()
    );
    let r = p.propose(&op(SOMAX, Value::Int(9000))).unwrap();
    assert_eq!(r.status, ChangeStatus::Refused);
    assert!(
        r.describe().contains("step too large: 4096 -> 9000"),
        "{}",
        r.describe()
    );
    assert_eq!(value(&k, SOMAX), Value::Int(4096));
    let statuses: Vec<_> = p
        .journal
        .entries()
        .iter()
        .map(|e| e.status.clone())
        .collect();
    assert_eq!(statuses, vec!["refused", "refused"]);
    // The journal lists what the kernel had, as the report does (`kpo apply` prints 4096 -> ...).
    let befores: Vec<_> = p.journal.entries().into_iter().map(|e| e.before).collect();
    assert_eq!(
        befores,
        vec![Some(Value::Int(4096)), Some(Value::Int(4096))]
    );
    // A value of the wrong form is refused too.
    let r = p.propose(&op(SOMAX, Value::Ints(vec![1, 2]))).unwrap();
    assert_eq!(r.refusal.unwrap().code(), "invalid");
}

#[test]
fn pause_stops_changes_and_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let k = kernel(&[(SOMAX, Value::Int(4096))]);
    {
        let (mut p, events) = path(dir.path(), POLICY, &k);
        use crate::control::Control;
        assert!(p.pause("op").unwrap());
        assert!(matches!(
            events.lock().unwrap()[0],
            ChangePathEvent::Paused(_)
        ));
    }
    let (mut p, _) = path(dir.path(), POLICY, &k);
    let r = p.propose(&op(SOMAX, Value::Int(5000))).unwrap();
    assert_eq!(r.refusal.unwrap().code(), "paused");
    use crate::control::Control;
    assert_eq!(p.resume(None, "op").unwrap(), vec!["pause"]);
    assert_eq!(
        p.propose(&op(SOMAX, Value::Int(5000))).unwrap().status,
        ChangeStatus::Applied
    );
}

#[test]
fn advisors_get_needs_approval_or_record_only_by_mode() {
    let dir = tempfile::tempdir().unwrap();
    let k = kernel(&[(SOMAX, Value::Int(4096)), ("vm.swappiness", Value::Int(60))]);
    let (mut p, _) = path(
        dir.path(),
        "[params.\"vm.swappiness\"]\nmode = \"observe\"\n",
        &k,
    );
    let mut prop = op(SOMAX, Value::Int(5000));
    prop.source = Source::Rules;
    assert_eq!(
        p.propose(&prop).unwrap().status,
        ChangeStatus::NeedsApproval
    );
    assert_eq!(value(&k, SOMAX), Value::Int(4096));
    assert_eq!(
        p.propose_approved(&prop, None).unwrap().status,
        ChangeStatus::Applied
    );
    assert_eq!(
        p.propose(&op("vm.swappiness", Value::Int(10)))
            .unwrap()
            .status,
        ChangeStatus::RecordOnly
    );
}

#[test]
fn interrupted_intents_are_reconciled_against_the_kernel() {
    let dir = tempfile::tempdir().unwrap();
    let a1 = "net.core.somaxconn@netns:4026539991";
    let a2 = "net.core.somaxconn@netns:4026539992";
    let a3 = "net.core.somaxconn@netns:4026539993";
    let a4 = "net.core.somaxconn@netns:4026539994";
    let k = kernel(&[
        (a1, Value::Int(8192)),
        (a2, Value::Int(4096)),
        (a3, Value::Int(777)),
    ]);
    {
        // Intents whose outcomes never came: the process died.
        crate::journal::store::make_private(dir.path());
        let mut j = Journal::open(dir.path(), Holder::Cli, Duration::ZERO).unwrap();
        for a in [a1, a2, a3, a4] {
            j.record_intent(
                &a.parse().unwrap(),
                &Value::Int(4096),
                &Value::Int(8192),
                Source::Operator,
                "t",
                IntentKind::Change,
            )
            .unwrap();
        }
    }
    let (mut p, events) = path(dir.path(), POLICY, &k);
    assert_eq!(p.journal.incomplete().len(), 4);
    let r = p.reconcile().unwrap();
    // The stream hears what the start settled (s44 storyA: the log alone did), not the one left
    // for the next start.
    let mut said: Vec<(Option<u64>, ChangePhase, String, Source, String)> = events
        .lock()
        .unwrap()
        .iter()
        .filter_map(|e| match e {
            ChangePathEvent::Change(c) => Some((
                c.journal_id,
                c.phase,
                c.target.to_string(),
                c.source,
                c.detail.clone().unwrap_or_default(),
            )),
            _ => None,
        })
        .collect();
    said.sort_by_key(|(id, ..)| *id);
    let expected: Vec<(Option<u64>, ChangePhase, String, Source, String)> = r[..3]
        .iter()
        .zip([
            ChangePhase::Applied,
            ChangePhase::Failed,
            ChangePhase::Failed,
        ])
        .map(|(r, phase)| {
            (
                r.journal_id,
                phase,
                r.address.to_string(),
                Source::Operator,
                format!("reconciled at start: {}", r.detail.as_deref().unwrap()),
            )
        })
        .collect();
    assert_eq!(said, expected);
    let st: Vec<_> = r.iter().map(|r| r.status).collect();
    assert_eq!(
        st,
        vec![
            ChangeStatus::Applied,
            ChangeStatus::Failed,
            ChangeStatus::Failed,
            ChangeStatus::Skipped
        ]
    );
    assert!(r[2].detail.as_deref().unwrap().contains("777"));
    // Not "before the kernel took the value": an agent that could not record the outcome (a full
    // disk) put its value back, and leaves the same (s44 storyA).
    assert_eq!(
        r[1].detail.as_deref(),
        Some(
            "interrupted; the kernel has the value before: the write did not take, or was put \
             back; nothing of it is in place"
        )
    );
    assert!(r[3].detail.as_deref().unwrap().contains("cannot be read"));
    // `read_back` of a failed change is what KPO's write left (docs/api.md): these left nothing,
    // and `kpo: reconciled: failed #2 ...: 4096 -> 8192 (read back 4096)` read as if it had.
    let read_backs: Vec<_> = r.iter().map(|r| r.read_back.clone()).collect();
    assert_eq!(read_backs, vec![Some(Value::Int(8192)), None, None, None]);
    // The unreadable one waits for the next start; the others are settled.
    assert_eq!(p.journal.incomplete().len(), 1);
    let entries = p.journal.entries();
    assert_eq!(entries[0].status, "applied");
    assert_eq!(entries[1].status, "failed");
    // And revert --all still knows the original of what KPO changed (a1) or may have (a4, not
    // settled); a2 never changed, and a3's 777 is someone else's.
    let all = p.revert_all("all").unwrap();
    assert_eq!(value(&k, a1), Value::Int(4096));
    assert_eq!(value(&k, a3), Value::Int(777));
    let reverted: Vec<String> = all.iter().map(|r| r.address.to_string()).collect();
    assert_eq!(reverted, vec![a1.to_string(), a4.to_string()]);
}

/// `kpo revert --all` writes over a value that is not KPO's (a person's, written while the agent
/// was down), but says so (s47 storyM M-2: it went without a word).
#[test]
fn revert_all_says_when_it_replaces_someone_elses_value() {
    let dir = tempfile::tempdir().unwrap();
    let k = kernel(&[(SOMAX, Value::Int(4096))]);
    let (mut p, _) = path(dir.path(), POLICY, &k);
    p.propose(&op(SOMAX, Value::Int(8192))).unwrap();
    k.0.lock()
        .unwrap()
        .values
        .insert(SOMAX.into(), Value::Int(7001));
    let all = p.revert_all("all").unwrap();
    assert_eq!(all[0].status, ChangeStatus::Reverted);
    assert_eq!(value(&k, SOMAX), Value::Int(4096));
    assert_eq!(
        all[0].detail.as_deref(),
        Some(
            "the kernel had 7001, not the 8192 KPO last applied: someone else's write, most \
             likely, replaced (a running agent would have yielded to it at its next window)"
        )
    );
    assert!(
        all[0].describe().contains("someone else's write"),
        "{}",
        all[0].describe()
    );
    // KPO's last write a revert's: a person's value after it is said so too (s52 storyAG AG-2).
    let id = p
        .propose(&op(SOMAX, Value::Int(8192)))
        .unwrap()
        .journal_id
        .unwrap();
    let r = p.revert(id, Source::Operator, "kpo revert").unwrap();
    assert_eq!(r.status, ChangeStatus::Reverted, "{}", r.describe());
    k.0.lock()
        .unwrap()
        .values
        .insert(SOMAX.into(), Value::Int(300));
    let all = p.revert_all("all").unwrap();
    assert_eq!(
        all[0].status,
        ChangeStatus::Reverted,
        "{}",
        all[0].describe()
    );
    assert_eq!(value(&k, SOMAX), Value::Int(4096));
    assert!(
        (all[0].detail.as_deref())
            .is_some_and(|d| d.starts_with("the kernel had 300, not the 4096 KPO last applied")),
        "{}",
        all[0].describe()
    );
}

/// Every intent records the parameter's original, even one the kernel refused (EINVAL) or whose
/// write was put back after a wrong read-back: KPO never left a value there, so a value a person
/// wrote since is theirs, and `kpo revert --all` leaves it. A parameter KPO changed is put back
/// even when KPO put its own value back since, or handed it back with `kpo resume`
/// (docs/journal.md).
#[test]
fn revert_all_leaves_a_parameter_kpo_never_changed() {
    let refused = "net.core.somaxconn@netns:4026539991";
    let rounded = "net.core.somaxconn@netns:4026539992";
    let undone = "net.core.somaxconn@netns:4026539993";
    let resumed = "net.core.somaxconn@netns:4026539994";
    let dir = tempfile::tempdir().unwrap();
    let k = kernel(&[
        (refused, Value::Int(4096)),
        (rounded, Value::Int(4096)),
        (undone, Value::Int(4096)),
        (resumed, Value::Int(4096)),
    ]);
    {
        let mut kk = k.0.lock().unwrap();
        kk.refuse.push(refused.into());
        kk.clamp.insert(rounded.into(), Value::Int(5000));
    }
    let (mut p, _) = path(dir.path(), POLICY, &k);
    let r = p.propose(&op(refused, Value::Int(8192))).unwrap();
    assert_eq!(r.status, ChangeStatus::Failed, "{r:?}");
    let r = p.propose(&op(rounded, Value::Int(8192))).unwrap();
    assert_eq!(r.status, ChangeStatus::Reverted, "{r:?}");
    let id = p.propose(&op(undone, Value::Int(8192))).unwrap().journal_id;
    let r = p.revert(id.unwrap(), Source::Operator, "undo").unwrap();
    assert_eq!(r.status, ChangeStatus::Reverted, "{r:?}");
    let r = p.propose(&op(resumed, Value::Int(8192))).unwrap();
    assert_eq!(r.status, ChangeStatus::Applied, "{r:?}");
    let resumed_at: ParamAddress = resumed.parse().unwrap();
    p.journal
        .set_yielded(&resumed_at, Some(Value::Int(1000)), "pid 9 sysctl")
        .unwrap();
    p.journal.resume_param(resumed).unwrap();
    // A person writes each of them (`sysctl -w`).
    for a in [refused, rounded, undone, resumed] {
        k.0.lock()
            .unwrap()
            .values
            .insert(a.into(), Value::Int(2048));
    }
    drop(p);
    let (mut p, _) = path(dir.path(), POLICY, &k);
    let all = p.revert_all("all").unwrap();
    let reverted: Vec<(String, ChangeStatus)> = all
        .iter()
        .map(|r| (r.address.to_string(), r.status))
        .collect();
    assert_eq!(
        reverted,
        vec![
            (undone.to_string(), ChangeStatus::Reverted),
            (resumed.to_string(), ChangeStatus::Reverted)
        ]
    );
    assert_eq!(
        value(&k, refused),
        Value::Int(2048),
        "the person's value stays"
    );
    assert_eq!(
        value(&k, rounded),
        Value::Int(2048),
        "the person's value stays"
    );
    assert_eq!(value(&k, undone), Value::Int(4096));
    assert_eq!(value(&k, resumed), Value::Int(4096));
}

/// s62 story CD-1: the kernel refused `kpo revert --all`'s put-back of a local port range while
/// `ip_unprivileged_port_start` was still KPO's, which the same pass put back after it; the range
/// stayed, and `on_exit = "revert"` left it too. A failed put-back is tried again once others
/// have taken.
#[test]
fn revert_all_tries_a_refused_put_back_again_after_the_others() {
    let range = "net.core.somaxconn@netns:4026539991";
    let start = "net.core.somaxconn@netns:4026539992";
    let dir = tempfile::tempdir().unwrap();
    let k = kernel(&[(range, Value::Int(4096)), (start, Value::Int(4096))]);
    let (mut p, _) = path(dir.path(), POLICY, &k);
    for a in [range, start] {
        let r = p.propose(&op(a, Value::Int(8192))).unwrap();
        assert_eq!(r.status, ChangeStatus::Applied, "{r:?}");
    }
    k.0.lock().unwrap().refuse_revert_while = Some((range.into(), start.into(), Value::Int(8192)));
    let all = p.revert_all("all").unwrap();
    let shown: Vec<(String, ChangeStatus)> = (all.iter())
        .map(|r| (r.address.to_string(), r.status))
        .collect();
    assert_eq!(
        shown,
        [
            (range.to_string(), ChangeStatus::Reverted),
            (start.to_string(), ChangeStatus::Reverted)
        ]
    );
    assert_eq!(value(&k, range), Value::Int(4096));
    assert_eq!(value(&k, start), Value::Int(4096));
    let detail = all[0].detail.as_deref().unwrap();
    assert!(
        detail.starts_with(
            "tried again after the others had been put back: the first try (#3) failed: "
        ) && detail.contains("EINVAL"),
        "{detail}"
    );
    // The first try is journaled as what it was.
    let failed = p.journal.all_entries().0;
    assert!(
        failed
            .iter()
            .any(|e| e.id == 3 && e.kind == "revert" && e.status == "failed"),
        "{failed:#?}"
    );
}

/// s62 review1 R1-5: a put-back that fails again is reported by its last try, naming the first;
/// the retry is journaled like any.
#[test]
fn revert_all_reports_a_put_back_that_fails_again_by_its_last_try() {
    let stuck = "net.core.somaxconn@netns:4026539991";
    let other = "net.core.somaxconn@netns:4026539992";
    let dir = tempfile::tempdir().unwrap();
    let k = kernel(&[(stuck, Value::Int(4096)), (other, Value::Int(4096))]);
    let (mut p, _) = path(dir.path(), POLICY, &k);
    for a in [stuck, other] {
        p.propose(&op(a, Value::Int(8192))).unwrap();
    }
    k.0.lock().unwrap().refuse_revert.push(stuck.into());
    let all = p.revert_all("all").unwrap();
    assert_eq!(
        (all[0].status, all[0].journal_id),
        (ChangeStatus::Failed, Some(5)),
        "{all:#?}"
    );
    let detail = all[0].detail.as_deref().unwrap();
    assert!(
        detail.contains("EBUSY")
            && detail.contains(
                "; tried again after the others had been put back: the first try (#3) failed: "
            ),
        "{detail}"
    );
    assert_eq!(all[1].status, ChangeStatus::Reverted);
    assert_eq!(value(&k, stuck), Value::Int(8192));
}

/// A parameter whose first change never took effect (the kernel refused it, it read back
/// wrong and was put back, or the agent was killed before the write and the start reconciled it
/// as failed) still has the value KPO found. A value written there since (a deploy's 6000) is
/// someone else's, and it is what KPO's first change that takes effect replaces: `kpo revert
/// --all` puts 6000 back, not the 4096 KPO found before, and so does a journal read again.
#[test]
fn revert_all_puts_back_the_value_found_by_the_first_change_that_took() {
    let refused = "net.core.somaxconn@netns:4026539991";
    let rounded = "net.core.somaxconn@netns:4026539992";
    let interrupted = "net.core.somaxconn@netns:4026539993";
    let all = [refused, rounded, interrupted];
    let dir = tempfile::tempdir().unwrap();
    let k = kernel(&all.map(|a| (a, Value::Int(4096))));
    {
        let mut kk = k.0.lock().unwrap();
        kk.refuse.push(refused.into());
        kk.clamp.insert(rounded.into(), Value::Int(5000));
    }
    {
        // Killed after the intent, before the write.
        crate::journal::store::make_private(dir.path());
        let mut j = Journal::open(dir.path(), Holder::Cli, Duration::ZERO).unwrap();
        j.record_intent(
            &interrupted.parse().unwrap(),
            &Value::Int(4096),
            &Value::Int(8192),
            Source::Operator,
            "t",
            IntentKind::Change,
        )
        .unwrap();
    }
    let (mut p, _) = path(dir.path(), POLICY, &k);
    let r = p.reconcile().unwrap();
    assert_eq!(r[0].status, ChangeStatus::Failed, "{r:?}");
    let r = p.propose(&op(refused, Value::Int(8192))).unwrap();
    assert_eq!(r.status, ChangeStatus::Failed, "{r:?}");
    let r = p.propose(&op(rounded, Value::Int(8192))).unwrap();
    assert_eq!(r.status, ChangeStatus::Reverted, "{r:?}");
    {
        // The kernel takes values again, and a deploy sets each parameter.
        let mut kk = k.0.lock().unwrap();
        kk.refuse.clear();
        kk.clamp.clear();
        for a in all {
            kk.values.insert(a.into(), Value::Int(6000));
        }
    }
    for a in all {
        let r = p.propose(&op(a, Value::Int(8192))).unwrap();
        assert_eq!(r.status, ChangeStatus::Applied, "{r:?}");
        let intent = p.journal.intent(r.journal_id.unwrap()).unwrap();
        assert_eq!(intent.original, Some(Value::Int(6000)), "{a}");
        let r = p.propose(&op(a, Value::Int(9000))).unwrap();
        let intent = p.journal.intent(r.journal_id.unwrap()).unwrap();
        assert_eq!(
            intent.original,
            Some(Value::Int(6000)),
            "{a}: kept once KPO's write took"
        );
    }
    for reopened in [false, true] {
        if reopened {
            drop(p);
            p = path(dir.path(), POLICY, &k).0;
        }
        for a in all {
            let state = p.journal.param_state(&a.parse().unwrap()).unwrap();
            assert_eq!(state.original, Some(Value::Int(6000)), "{a}: {state:?}");
        }
    }
    let reports = p.revert_all("all").unwrap();
    assert!(
        reports.iter().all(|r| r.status == ChangeStatus::Reverted),
        "{reports:#?}"
    );
    for a in all {
        assert_eq!(value(&k, a), Value::Int(6000), "{a}: the deploy's value");
    }
}

/// A change whose write took effect keeps the original it found, however the value moves after
/// (a person's write, a later change of KPO's from it): `kpo revert --all` goes back to the value
/// before KPO's first write that took effect.
#[test]
fn the_original_stays_once_a_write_of_kpos_took_effect() {
    let dir = tempfile::tempdir().unwrap();
    let k = kernel(&[(SOMAX, Value::Int(4096))]);
    let (mut p, _) = path(dir.path(), POLICY, &k);
    assert_eq!(
        p.propose(&op(SOMAX, Value::Int(8192))).unwrap().status,
        ChangeStatus::Applied
    );
    k.0.lock()
        .unwrap()
        .values
        .insert(SOMAX.into(), Value::Int(6000));
    assert_eq!(
        p.propose(&op(SOMAX, Value::Int(7000))).unwrap().status,
        ChangeStatus::Applied
    );
    drop(p);
    let (mut p, _) = path(dir.path(), POLICY, &k);
    let state = p.journal.param_state(&SOMAX.parse().unwrap()).unwrap();
    assert_eq!(state.original, Some(Value::Int(4096)));
    p.revert_all("all").unwrap();
    assert_eq!(value(&k, SOMAX), Value::Int(4096));
}

/// `kpo revert --all` and `kpo revert ID` leave a parameter yielded to a person alone; `kpo
/// revert ID --force` writes over it (s52 storyAC AC-2).
#[test]
fn revert_all_leaves_a_yielded_parameter_alone() {
    let dir = tempfile::tempdir().unwrap();
    let k = kernel(&[(SOMAX, Value::Int(4096))]);
    let (mut p, _) = path(dir.path(), POLICY, &k);
    let id = p
        .propose(&op(SOMAX, Value::Int(8192)))
        .unwrap()
        .journal_id
        .unwrap();
    k.0.lock()
        .unwrap()
        .values
        .insert(SOMAX.into(), Value::Int(1000));
    p.journal
        .set_yielded(
            &SOMAX.parse().unwrap(),
            Some(Value::Int(1000)),
            "pid 9 sysctl",
        )
        .unwrap();
    let r = p.revert_all("all").unwrap();
    assert_eq!(r[0].status, ChangeStatus::Skipped);
    // Seen in a soak (s38 chaos): the line showed only the original, not the value that stays;
    // then `4096 (read back 1000)`, as if 4096 were written (s52 storyAC AC-7).
    assert_eq!(
        r[0].describe(),
        format!(
            "skipped {SOMAX}: 1000 -> 4096 (now 1000): yielded to an administrator; their \
             value stays (kpo resume {SOMAX} hands it back)"
        )
    );
    assert_eq!(value(&k, SOMAX), Value::Int(1000));
    let r = p.propose(&op(SOMAX, Value::Int(2000))).unwrap();
    assert_eq!(r.refusal.unwrap().code(), "yielded");
    let r = p.revert(id, Source::Operator, "kpo revert").unwrap();
    assert_eq!(
        r.describe(),
        format!(
            "skipped {SOMAX}: 1000 -> 4096 (now 1000): yielded to an administrator; their \
             value stays (kpo revert {id} --force writes 4096 over it)"
        )
    );
    assert_eq!(value(&k, SOMAX), Value::Int(1000));
    assert!(r.theirs_left);
    let r = p
        .revert_over_theirs(id, Source::Operator, "kpo revert --force")
        .unwrap();
    assert_eq!(r.status, ChangeStatus::Reverted, "{}", r.describe());
    assert_eq!(value(&k, SOMAX), Value::Int(4096));
    // Asked again with the kernel at that value already: nothing to write over (s52 review L6).
    let r = p.revert(id, Source::Operator, "kpo revert").unwrap();
    assert_eq!(r.status, ChangeStatus::Unchanged, "{}", r.describe());
    assert!(!r.theirs_left);
}

#[test]
fn the_agents_own_reverts_and_advisors_leave_a_value_someone_else_wrote() {
    let dir = tempfile::tempdir().unwrap();
    let k = kernel(&[(SOMAX, Value::Int(4096))]);
    let (mut p, _) = path(dir.path(), POLICY, &k);
    let id = p
        .propose(&op(SOMAX, Value::Int(8192)))
        .unwrap()
        .journal_id
        .unwrap();
    // A person writes 1000, and no watch has told the journal yet.
    k.0.lock()
        .unwrap()
        .values
        .insert(SOMAX.into(), Value::Int(1000));
    let entries = p.journal.entries().len();
    let r = p.revert_own(id, Source::Guard, "guard").unwrap();
    assert_eq!(r.status, ChangeStatus::Skipped, "{}", r.describe());
    assert_eq!(r.read_back, Some(Value::Int(1000)));
    assert!(r.detail.unwrap().contains("someone else changed it"));
    assert_eq!(value(&k, SOMAX), Value::Int(1000), "their value stays");
    assert_eq!(p.journal.entries().len(), entries, "nothing journaled");
    // An advisor's change is refused as yielded, without touching the kernel.
    let mut rules = op(SOMAX, Value::Int(16384));
    rules.source = Source::Rules;
    assert!(
        matches!(p.preview(&rules), Decision::Refused(Refusal::Yielded)),
        "the preview an optimizer asks first says the same"
    );
    let r = p.propose(&rules).unwrap();
    assert_eq!(r.refusal.unwrap().code(), "yielded");
    assert_eq!(value(&k, SOMAX), Value::Int(1000));
    // With KPO's value back in the kernel, its own revert goes ahead.
    k.0.lock()
        .unwrap()
        .values
        .insert(SOMAX.into(), Value::Int(8192));
    let r = p.revert_own(id, Source::Guard, "guard").unwrap();
    assert_eq!(r.status, ChangeStatus::Reverted, "{}", r.describe());
    assert_eq!(value(&k, SOMAX), Value::Int(4096));
}

/// An operator's `kpo apply` acts over a value someone else wrote; `kpo revert ID` leaves it,
/// saying how to write over it, and `--force` does (s52 storyAC AC-2: a revert of a change
/// superseded long before wrote its old value over a colleague's fix, without a word).
#[test]
fn an_operators_revert_leaves_a_value_someone_else_wrote_unless_forced() {
    let dir = tempfile::tempdir().unwrap();
    let k = kernel(&[(SOMAX, Value::Int(4096))]);
    let (mut p, _) = path(dir.path(), POLICY, &k);
    let id = p
        .propose(&op(SOMAX, Value::Int(8192)))
        .unwrap()
        .journal_id
        .unwrap();
    k.0.lock()
        .unwrap()
        .values
        .insert(SOMAX.into(), Value::Int(1000));
    let r = p.propose(&op(SOMAX, Value::Int(2000))).unwrap();
    assert_eq!(r.status, ChangeStatus::Applied, "{}", r.describe());
    k.0.lock()
        .unwrap()
        .values
        .insert(SOMAX.into(), Value::Int(1000));
    let r = p.revert(id, Source::Operator, "kpo revert").unwrap();
    assert_eq!(
        r.describe(),
        format!(
            "skipped {SOMAX}: 1000 -> 4096 (now 1000): the kernel has 1000, not the 2000 KPO \
             applied: someone else changed it, and their value stays (kpo revert {id} --force \
             writes 4096 over it)"
        )
    );
    assert_eq!(value(&k, SOMAX), Value::Int(1000));
    assert!(r.theirs_left, "not done as asked: kpo revert exits 1");
    // Through the control API, as `kpo revert ID --force` sends it.
    let r =
        crate::control::Control::revert(&mut p, &crate::control::RevertRequest::Forced(id), "op")
            .unwrap();
    assert_eq!(r[0].status, ChangeStatus::Reverted, "{}", r[0].describe());
    assert!(!r[0].theirs_left);
    assert_eq!(value(&k, SOMAX), Value::Int(4096));
}

/// `kpo revert ID` of a change a colleague's later `kpo apply` superseded leaves the colleague's
/// value, saying which change holds it; an advisor's later value is taken out as before (s52
/// story AG-6: the revert of a long-superseded rules change wrote over an operator's apply
/// without a word).
#[test]
fn an_operators_revert_leaves_a_later_operators_change_unless_forced() {
    let dir = tempfile::tempdir().unwrap();
    let k = kernel(&[(SOMAX, Value::Int(4096))]);
    let (mut p, _) = path(dir.path(), POLICY, &k);
    let mut rules = op(SOMAX, Value::Int(8192));
    rules.source = Source::Rules;
    let first = p.propose(&rules).unwrap().journal_id.unwrap();
    let colleague = p
        .propose(&op(SOMAX, Value::Int(6000)))
        .unwrap()
        .journal_id
        .unwrap();
    let r = p.revert(first, Source::Operator, "kpo revert").unwrap();
    assert_eq!(
        r.describe(),
        format!(
            "skipped {SOMAX}: 6000 -> 4096 (now 6000): #{first} no longer holds it: a later \
             change by an operator does (#{colleague}, 6000), and its value stays (kpo revert \
             {colleague} takes that out; kpo revert {first} --force writes 4096 over it)"
        )
    );
    assert!(r.theirs_left, "not done as asked: kpo revert exits 1");
    assert_eq!(value(&k, SOMAX), Value::Int(6000));
    // The colleague's change itself is theirs to revert.
    let r = p.revert(colleague, Source::Operator, "kpo revert").unwrap();
    assert_eq!(r.status, ChangeStatus::Reverted, "{}", r.describe());
    assert_eq!(value(&k, SOMAX), Value::Int(8192));
    // A later advisor's value is no colleague's: taken out.
    rules.value = Value::Int(10000);
    let r = p.propose(&rules).unwrap();
    assert_eq!(r.status, ChangeStatus::Applied, "{}", r.describe());
    let r = p.revert(first, Source::Operator, "kpo revert").unwrap();
    assert_eq!(r.status, ChangeStatus::Reverted, "{}", r.describe());
    assert_eq!(value(&k, SOMAX), Value::Int(4096));
    // A colleague's value someone else has replaced since is theirs: said so, as ever.
    let r = p.propose(&op(SOMAX, Value::Int(6000))).unwrap();
    assert_eq!(r.status, ChangeStatus::Applied, "{}", r.describe());
    k.0.lock()
        .unwrap()
        .values
        .insert(SOMAX.into(), Value::Int(300));
    let r = p.revert(first, Source::Operator, "kpo revert").unwrap();
    assert!(
        (r.detail.as_deref())
            .is_some_and(|d| d.starts_with("the kernel has 300, not the 6000 KPO applied")),
        "{}",
        r.describe()
    );
    assert!(r.theirs_left);
    // The colleague's value the very one this revert would write: unchanged, as any.
    k.0.lock()
        .unwrap()
        .values
        .insert(SOMAX.into(), Value::Int(6000));
    let r = p.propose(&op(SOMAX, Value::Int(4096))).unwrap();
    assert_eq!(r.status, ChangeStatus::Applied, "{}", r.describe());
    let r = p.revert(first, Source::Operator, "kpo revert").unwrap();
    assert_eq!(r.status, ChangeStatus::Unchanged, "{}", r.describe());
    // Forced, over a colleague's.
    let colleague = p
        .propose(&op(SOMAX, Value::Int(6000)))
        .unwrap()
        .journal_id
        .unwrap();
    assert!(colleague > first);
    let r = crate::control::Control::revert(
        &mut p,
        &crate::control::RevertRequest::Forced(first),
        "op",
    )
    .unwrap();
    assert_eq!(r[0].status, ChangeStatus::Reverted, "{}", r[0].describe());
    assert_eq!(value(&k, SOMAX), Value::Int(4096));
}

/// s59 review2 R2-5: an advisor's change an operator approved is their decision as much as their
/// `kpo apply`: a colleague's `kpo revert` of the rules' earlier raise took the approved value out
/// and quarantined it, where the same value by `kpo apply` was left. Left and named now, alone or
/// under an advisor's later change; reverted itself, it is taken out (and quarantined) as asked.
#[test]
fn reverting_an_older_change_keeps_a_value_an_operator_approved() {
    let dir = tempfile::tempdir().unwrap();
    let k = kernel(&[(SOMAX, Value::Int(4096))]);
    let (mut p, _) = path(dir.path(), POLICY, &k);
    let mut rules = op(SOMAX, Value::Int(8192));
    rules.source = Source::Rules;
    let first = p.propose(&rules).unwrap().journal_id.unwrap();
    let mut llm = op(SOMAX, Value::Int(6000));
    llm.source = Source::Llm;
    let approved = p.propose_approved(&llm, None).unwrap().journal_id.unwrap();
    assert!(p.journal.intent(approved).unwrap().approved);
    assert!(!p.journal.intent(first).unwrap().approved);
    let r = p.revert(first, Source::Operator, "kpo revert").unwrap();
    assert_eq!(
        r.describe(),
        format!(
            "skipped {SOMAX}: 6000 -> 4096 (now 6000): #{first} no longer holds it: a later \
             change by llm that an operator approved does (#{approved}, 6000), and its value \
             stays (kpo revert {approved} takes that out; kpo revert {first} --force writes 4096 \
             over it)"
        )
    );
    assert!(r.theirs_left, "not done as asked: kpo revert exits 1");
    assert_eq!(value(&k, SOMAX), Value::Int(6000));
    // Under the rules' later raise, both are named.
    rules.value = Value::Int(10000);
    let third = p.propose(&rules).unwrap().journal_id.unwrap();
    let r = p.revert(first, Source::Operator, "kpo revert").unwrap();
    assert_eq!(
        r.describe(),
        format!(
            "skipped {SOMAX}: 10000 -> 4096 (now 10000): #{first} no longer holds it: a later \
             change by llm that an operator approved (#{approved}, 6000) was made since, and \
             #{third} by rules (10000) holds it now; writing 4096 would take out both (kpo \
             revert {third} puts back 6000; kpo revert {first} --force writes 4096 over them)"
        )
    );
    assert_eq!(value(&k, SOMAX), Value::Int(10000));
    let r = p.revert(third, Source::Operator, "kpo revert").unwrap();
    assert_eq!(r.status, ChangeStatus::Reverted, "{}", r.describe());
    assert_eq!(
        value(&k, SOMAX),
        Value::Int(6000),
        "the approved value back"
    );
    // The approved change itself is the operator's to take out (and its value quarantined, as
    // any advisor's, so that the advisor does not ask for it again at once).
    let r = p.revert(approved, Source::Operator, "kpo revert").unwrap();
    assert_eq!(r.status, ChangeStatus::Reverted, "{}", r.describe());
    assert_eq!(value(&k, SOMAX), Value::Int(8192));
}

/// s59 story BO-2: the rules' change, an operator's over it, and the rules' again over that:
/// `kpo revert` of the first put its value before back, taking the operator's value out with the
/// rules' second without a word. Skipped, naming both; the rules' second is what to revert.
#[test]
fn reverting_an_older_change_keeps_an_operators_value_an_advisor_replaced_since() {
    let dir = tempfile::tempdir().unwrap();
    let k = kernel(&[(SOMAX, Value::Int(4096))]);
    let (mut p, _) = path(dir.path(), POLICY, &k);
    let mut rules = op(SOMAX, Value::Int(8192));
    rules.source = Source::Rules;
    let first = p.propose(&rules).unwrap().journal_id.unwrap();
    let colleague = p
        .propose(&op(SOMAX, Value::Int(6000)))
        .unwrap()
        .journal_id
        .unwrap();
    rules.value = Value::Int(10000);
    let third = p.propose(&rules).unwrap().journal_id.unwrap();
    let r = p.revert(first, Source::Operator, "kpo revert").unwrap();
    assert_eq!(
        r.describe(),
        format!(
            "skipped {SOMAX}: 10000 -> 4096 (now 10000): #{first} no longer holds it: a later \
             change by an operator (#{colleague}, 6000) was made since, and #{third} by rules \
             (10000) holds it now; writing 4096 would take out both (kpo revert {third} puts \
             back 6000; kpo revert {first} --force writes 4096 over them)"
        )
    );
    assert!(r.theirs_left, "not done as asked: kpo revert exits 1");
    assert_eq!(value(&k, SOMAX), Value::Int(10000));
    let r = p.revert(third, Source::Operator, "kpo revert").unwrap();
    assert_eq!(r.status, ChangeStatus::Reverted, "{}", r.describe());
    assert_eq!(
        value(&k, SOMAX),
        Value::Int(6000),
        "the colleague's value back"
    );
    // Once the colleague's own change is reverted, the rules' first is the operator's to take
    // out as before.
    let r = p.revert(colleague, Source::Operator, "kpo revert").unwrap();
    assert_eq!(r.status, ChangeStatus::Reverted, "{}", r.describe());
    // (10000 is quarantined: the revert of the rules' second took it out.)
    rules.value = Value::Int(9000);
    assert_eq!(p.propose(&rules).unwrap().status, ChangeStatus::Applied);
    let r = p.revert(first, Source::Operator, "kpo revert").unwrap();
    assert_eq!(r.status, ChangeStatus::Reverted, "{}", r.describe());
    assert_eq!(value(&k, SOMAX), Value::Int(4096));
}

/// s59 story BO-1: the rules' raise, their step back, their raise again; `kpo revert` of the
/// second raise took 8192 out and quarantined it, and `kpo revert` of the step back then wrote
/// 8192 again, past the quarantine, without a word. Skipped, saying so, unless forced.
#[test]
fn a_revert_does_not_put_back_a_value_quarantined_there_unless_forced() {
    let dir = tempfile::tempdir().unwrap();
    let k = kernel(&[(SOMAX, Value::Int(4096))]);
    let (mut p, _) = path(dir.path(), POLICY, &k);
    let mut rules = op(SOMAX, Value::Int(8192));
    rules.source = Source::Rules;
    assert_eq!(p.propose(&rules).unwrap().status, ChangeStatus::Applied);
    rules.value = Value::Int(6000);
    let step_back = p.propose(&rules).unwrap().journal_id.unwrap();
    rules.value = Value::Int(8192);
    let raise = p.propose(&rules).unwrap().journal_id.unwrap();
    let r = p.revert(raise, Source::Operator, "kpo revert").unwrap();
    assert_eq!(r.status, ChangeStatus::Reverted, "{}", r.describe());
    assert_eq!(value(&k, SOMAX), Value::Int(6000));
    let r = p.revert(step_back, Source::Operator, "kpo revert").unwrap();
    assert_eq!(r.status, ChangeStatus::Skipped, "{}", r.describe());
    let detail = r.detail.clone().unwrap_or_default();
    assert!(
        detail.starts_with("8192 is quarantined here until ")
            && detail.ends_with(&format!(
                ": it was taken out (by the guard, or by an operator's revert of an advisor's \
                 change), and putting it back would apply it past the quarantine (kpo revert \
                 {step_back} --force writes it)"
            )),
        "{detail}"
    );
    assert!(r.theirs_left, "not done as asked: kpo revert exits 1");
    assert_eq!(value(&k, SOMAX), Value::Int(6000));
    let r = crate::control::Control::revert(
        &mut p,
        &crate::control::RevertRequest::Forced(step_back),
        "op",
    )
    .unwrap();
    assert_eq!(r[0].status, ChangeStatus::Reverted, "{}", r[0].describe());
    assert_eq!(value(&k, SOMAX), Value::Int(8192));
    // The kernel has the value already: `unchanged`, as ever, not a skip (s59 review2 R2-1).
    let r = p.revert(step_back, Source::Operator, "kpo revert").unwrap();
    assert_eq!(r.status, ChangeStatus::Unchanged, "{}", r.describe());
}

/// s59 story BP-1: an operator's change, then the rules' two; the reverts of the rules' second
/// and first put the operator's value back; `kpo revert` of the rules' second again wrote its
/// value over the operator's (once its quarantine had ended, while paused). Skipped: undone
/// already, naming the operator's change that holds the parameter.
#[test]
fn a_change_undone_already_is_not_written_over_an_earlier_operators_value() {
    let dir = tempfile::tempdir().unwrap();
    let k = kernel(&[(SOMAX, Value::Int(4096))]);
    let (mut p, _) = path(dir.path(), POLICY, &k);
    let operators = p
        .propose(&op(SOMAX, Value::Int(5000)))
        .unwrap()
        .journal_id
        .unwrap();
    let mut rules = op(SOMAX, Value::Int(6000));
    rules.source = Source::Rules;
    let second = p.propose(&rules).unwrap().journal_id.unwrap();
    rules.value = Value::Int(8192);
    let third = p.propose(&rules).unwrap().journal_id.unwrap();
    let undid = p.revert(third, Source::Operator, "kpo revert").unwrap();
    assert_eq!(undid.status, ChangeStatus::Reverted, "{}", undid.describe());
    // The revert of the rules' first takes out everything from it on: the latest to undo #3.
    let latest = p.revert(second, Source::Operator, "kpo revert").unwrap();
    assert_eq!(
        latest.status,
        ChangeStatus::Reverted,
        "{}",
        latest.describe()
    );
    assert_eq!(value(&k, SOMAX), Value::Int(5000));
    let r = p.revert(third, Source::Operator, "kpo revert").unwrap();
    assert_eq!(
        r.describe(),
        format!(
            "skipped {SOMAX}: 5000 -> 6000 (now 5000): #{} undid #{third} already; #{operators} \
             by operator holds it now (kpo revert {operators} takes that out; kpo revert {third} \
             --force writes 6000 again)",
            latest.journal_id.unwrap()
        )
    );
    assert_eq!(
        value(&k, SOMAX),
        Value::Int(5000),
        "the operator's value stays"
    );
}

/// s60 story BV-2: two operators revert one change at once; the second finds the value back
/// already, and is told by whose revert, not only that the kernel has the value.
#[test]
fn a_second_revert_of_a_change_names_the_first() {
    let dir = tempfile::tempdir().unwrap();
    let k = kernel(&[(SOMAX, Value::Int(4096))]);
    let (mut p, _) = path(dir.path(), POLICY, &k);
    let first = p
        .propose(&op(SOMAX, Value::Int(6000)))
        .unwrap()
        .journal_id
        .unwrap();
    let undid = p.revert(first, Source::Operator, "kpo revert").unwrap();
    assert_eq!(undid.status, ChangeStatus::Reverted, "{}", undid.describe());
    let again = p.revert(first, Source::Operator, "kpo revert").unwrap();
    assert_eq!(
        again.status,
        ChangeStatus::Unchanged,
        "{}",
        again.describe()
    );
    assert_eq!(
        again.detail.as_deref(),
        Some(
            format!(
                "the kernel already has this value: #{} undid #{first} already",
                undid.journal_id.unwrap()
            )
            .as_str()
        )
    );
}

/// s59 story BO-3: the rules' change, its revert (the guard's, or an operator's), then an
/// operator's change: `kpo revert` of the rules' change said that the operator's had replaced
/// it, offered `--force` and exited 1, the revert that had undone it unsaid. It was undone
/// already: said so, the operator's value left, exit status 0.
#[test]
fn a_change_undone_before_an_operators_later_one_is_said_undone() {
    let dir = tempfile::tempdir().unwrap();
    let k = kernel(&[(SOMAX, Value::Int(4096))]);
    let (mut p, _) = path(dir.path(), POLICY, &k);
    let mut rules = op(SOMAX, Value::Int(8192));
    rules.source = Source::Rules;
    let first = p.propose(&rules).unwrap().journal_id.unwrap();
    let undid = p.revert(first, Source::Operator, "kpo revert").unwrap();
    assert_eq!(undid.status, ChangeStatus::Reverted, "{}", undid.describe());
    let operators = p
        .propose(&op(SOMAX, Value::Int(6000)))
        .unwrap()
        .journal_id
        .unwrap();
    let r = p.revert(first, Source::Operator, "kpo revert").unwrap();
    assert_eq!(
        r.describe(),
        format!(
            "skipped {SOMAX}: 6000 -> 4096 (now 6000): #{} undid #{first} already; \
             #{operators} by operator holds it now (kpo revert {operators} takes that out; kpo \
             revert {first} --force writes 4096 again)",
            undid.journal_id.unwrap()
        )
    );
    assert!(!r.theirs_left, "nothing left undone: exit status 0");
    assert_eq!(value(&k, SOMAX), Value::Int(6000));
}

/// The parameter's original, quarantined, is still put back by `kpo revert` of the first
/// change, as `kpo revert --all` and `on_exit` put it back (s59 review2 R2-7); and an
/// operator's change between that wrote the very value the revert writes loses nothing to it
/// (review2 R2-4).
#[test]
fn a_revert_puts_back_a_quarantined_original_and_an_operators_own_value() {
    let dir = tempfile::tempdir().unwrap();
    let k = kernel(&[(SOMAX, Value::Int(4096))]);
    let (mut p, _) = path(dir.path(), POLICY, &k);
    let mut rules = op(SOMAX, Value::Int(8192));
    rules.source = Source::Rules;
    let first = p.propose(&rules).unwrap().journal_id.unwrap();
    rules.value = Value::Int(4096);
    let back = p.propose(&rules).unwrap().journal_id.unwrap();
    // Taking the rules' 4096 out quarantines it: the original.
    let r = p.revert(back, Source::Operator, "kpo revert").unwrap();
    assert_eq!(r.status, ChangeStatus::Reverted, "{}", r.describe());
    assert_eq!(value(&k, SOMAX), Value::Int(8192));
    let r = p.revert(first, Source::Operator, "kpo revert").unwrap();
    assert_eq!(r.status, ChangeStatus::Reverted, "{}", r.describe());
    assert_eq!(value(&k, SOMAX), Value::Int(4096));

    let dir = tempfile::tempdir().unwrap();
    let k = kernel(&[(SOMAX, Value::Int(4096))]);
    let (mut p, _) = path(dir.path(), POLICY, &k);
    rules.value = Value::Int(8192);
    let first = p.propose(&rules).unwrap().journal_id.unwrap();
    assert_eq!(
        p.propose(&op(SOMAX, Value::Int(4096))).unwrap().status,
        ChangeStatus::Applied
    );
    rules.value = Value::Int(6000);
    assert_eq!(p.propose(&rules).unwrap().status, ChangeStatus::Applied);
    let r = p.revert(first, Source::Operator, "kpo revert").unwrap();
    assert_eq!(r.status, ChangeStatus::Reverted, "{}", r.describe());
    assert_eq!(
        value(&k, SOMAX),
        Value::Int(4096),
        "the operator's own value"
    );
}

/// After a reboot the kernel has the boot's own values: an interrupted change from before is
/// settled as failed without reading the kernel, KPO's old values are neither compared with (no
/// yield) nor put back (`revert --all` has nothing to do), and the next change starts a new
/// original.
#[test]
fn a_reboot_settles_the_journal_and_the_next_change_starts_a_new_original() {
    let dir = tempfile::tempdir().unwrap();
    crate::journal::store::make_private(dir.path());
    let a = "net.core.somaxconn@netns:4026539991";
    let b = "net.core.somaxconn@netns:4026539992";
    let boot = |id: &str| {
        Journal::open_in_boot(
            dir.path(),
            Holder::Cli,
            Duration::ZERO,
            crate::journal::Boot {
                id: Some(id.to_string()),
                started_ms: None,
            },
        )
        .unwrap()
    };
    let k = kernel(&[(a, Value::Int(4096)), (b, Value::Int(4096))]);
    {
        // Boot A: `a` changed and applied, `b` interrupted after its intent.
        let mut p = ChangePath::new(
            Policy::parse(POLICY, "test.toml").unwrap(),
            boot("A"),
            Box::new(k.clone()),
        );
        p.propose(&op(a, Value::Int(8192))).unwrap();
        p.journal
            .record_intent(
                &b.parse().unwrap(),
                &Value::Int(4096),
                &Value::Int(8192),
                Source::Operator,
                "t",
                IntentKind::Change,
            )
            .unwrap();
    }
    // Boot B: the kernel has its own configuration again, and `b` happens to read 8192.
    k.0.lock()
        .unwrap()
        .values
        .insert(a.into(), Value::Int(1024));
    k.0.lock()
        .unwrap()
        .values
        .insert(b.into(), Value::Int(8192));
    let mut p = ChangePath::new(
        Policy::parse(POLICY, "test.toml").unwrap(),
        boot("B"),
        Box::new(k.clone()),
    );
    let r = p.reconcile().unwrap();
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].status, ChangeStatus::Failed, "not 'found applied'");
    assert!(r[0].detail.as_deref().unwrap().contains("rebooted"));
    let state = p.journal.param_state(&a.parse().unwrap()).unwrap().clone();
    assert_eq!((state.original, state.last_applied), (None, None));
    assert!(
        p.revert_all("all").unwrap().is_empty(),
        "nothing of boot A to put back"
    );
    assert_eq!(value(&k, a), Value::Int(1024));
    // Nor is boot A's change undone by its id: its `before` is not this boot's to have back.
    let undo = p.revert(1, Source::Operator, "by id").unwrap();
    assert_eq!(undo.status, ChangeStatus::Skipped);
    assert!(undo.detail.unwrap().contains("rebooted"));
    assert_eq!(value(&k, a), Value::Int(1024));
    // An advisor may change it again (it is not someone else's), from a new original.
    let mut rules = op(a, Value::Int(2048));
    rules.source = Source::Rules;
    assert_eq!(p.propose(&rules).unwrap().status, ChangeStatus::Applied);
    drop(p);
    let mut p = ChangePath::new(
        Policy::parse(POLICY, "test.toml").unwrap(),
        boot("B"),
        Box::new(k.clone()),
    );
    let state = p.journal.param_state(&a.parse().unwrap()).unwrap().clone();
    assert_eq!(
        state.original,
        Some(Value::Int(1024)),
        "across a reopen too"
    );
    p.revert_all("all").unwrap();
    assert_eq!(value(&k, a), Value::Int(1024));
}

/// The guard's revert of changes it judged together, from the first up to the last, which
/// holds the parameter: the value before the first goes back whatever source each came from;
/// the revert of the first alone still leaves another source's later change (s50 review G1).
#[test]
fn the_guards_revert_of_changes_judged_together_goes_back_before_the_first() {
    let dir = tempfile::tempdir().unwrap();
    let k = kernel(&[(SOMAX, Value::Int(4096))]);
    let (mut p, _) = path(dir.path(), POLICY, &k);
    let mut rules = op(SOMAX, Value::Int(8192));
    rules.source = Source::Rules;
    let first = p.propose(&rules).unwrap().journal_id.unwrap();
    let last = p
        .propose(&op(SOMAX, Value::Int(12000)))
        .unwrap()
        .journal_id
        .unwrap();
    let alone = p.revert_own(first, Source::Guard, "guard").unwrap();
    assert_eq!(alone.status, ChangeStatus::Skipped, "{}", alone.describe());
    assert_eq!(value(&k, SOMAX), Value::Int(12000));
    let r = p
        .revert_own_through(first, last, Source::Guard, "guard")
        .unwrap();
    assert_eq!(r.status, ChangeStatus::Reverted, "{}", r.describe());
    assert_eq!(value(&k, SOMAX), Value::Int(4096));
    // Both changes are listed as taken out by it.
    let reverts = crate::journal::reverted_by(&p.journal.entries());
    assert_eq!(
        (reverts.get(&first), reverts.get(&last)),
        (r.journal_id.as_ref(), r.journal_id.as_ref())
    );
    // A change that failed left nothing to take out: not listed as reverted (s50 review2 N3).
    let applied = p
        .propose(&op(SOMAX, Value::Int(8000)))
        .unwrap()
        .journal_id
        .unwrap();
    k.0.lock().unwrap().refuse.push(SOMAX.into());
    let failed = p.propose(&op(SOMAX, Value::Int(8100))).unwrap();
    assert_eq!(failed.status, ChangeStatus::Failed, "{}", failed.describe());
    k.0.lock().unwrap().refuse.clear();
    // One that failed and left its value (the driver took another, and the put-back was
    // refused): taken out like an applied one (s50 review3 R4).
    {
        let mut kernel = k.0.lock().unwrap();
        kernel.clamp.insert(SOMAX.into(), Value::Int(8300));
        kernel.refuse_revert.push(SOMAX.into());
    }
    let left = p.propose(&op(SOMAX, Value::Int(8200))).unwrap();
    assert_eq!(left.status, ChangeStatus::Failed, "{}", left.describe());
    assert_eq!(value(&k, SOMAX), Value::Int(8300));
    {
        let mut kernel = k.0.lock().unwrap();
        kernel.clamp.clear();
        kernel.refuse_revert.clear();
    }
    let undo = p.revert(applied, Source::Operator, "test").unwrap();
    let reverts = crate::journal::reverted_by(&p.journal.entries());
    assert_eq!(reverts.get(&applied), undo.journal_id.as_ref());
    assert_eq!(reverts.get(&failed.journal_id.unwrap()), None);
    assert_eq!(
        reverts.get(&left.journal_id.unwrap()),
        undo.journal_id.as_ref()
    );
}

/// A write into a namespace whose inode now names another one (another cookie), before any
/// window noticed: a new change starts a new original there (the dead namespace's is not
/// inherited), a revert of a change made in the dead one writes nothing, and an intent the dead
/// namespace left incomplete is reconciled as failed without reading the new one.
#[test]
fn writes_into_a_namespace_that_replaced_a_dead_one_inherit_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let k = kernel(&[(SOMAX, Value::Int(4096))]);
    k.0.lock().unwrap().netns_cookie = Some(7);
    let (mut p, _) = path(dir.path(), POLICY, &k);
    let first = p.propose(&op(SOMAX, Value::Int(8192))).unwrap();
    assert_eq!(first.status, ChangeStatus::Applied);
    // The namespace dies; a new one gets its inode, with its own default.
    {
        let mut kk = k.0.lock().unwrap();
        kk.netns_cookie = Some(8);
        kk.values.insert(SOMAX.into(), Value::Int(1024));
    }
    let r = p
        .revert(first.journal_id.unwrap(), Source::Operator, "test")
        .unwrap();
    assert_eq!(r.status, ChangeStatus::Skipped, "{r:?}");
    assert!(r.detail.unwrap().contains("network namespace is gone"));
    assert_eq!(value(&k, SOMAX), Value::Int(1024), "nothing written");
    let addr: ParamAddress = SOMAX.parse().unwrap();
    assert_eq!(p.journal.param_state(&addr).unwrap().original, None);
    let second = p.propose(&op(SOMAX, Value::Int(2048))).unwrap();
    assert_eq!(second.status, ChangeStatus::Applied);
    let state = p.journal.param_state(&addr).unwrap().clone();
    assert_eq!(
        state.original,
        Some(Value::Int(1024)),
        "the new namespace's own"
    );
    assert_eq!(state.netns_cookie, Some(8));
    drop(p);
    let (p, _) = path(dir.path(), POLICY, &k);
    assert_eq!(
        p.journal.param_state(&addr).unwrap().original,
        Some(Value::Int(1024)),
        "the same after a replay"
    );
    drop(p);

    // An intent left without an outcome in namespace 8, which then dies too.
    let (mut p, _) = path(dir.path(), POLICY, &k);
    p.journal
        .record_intent_making_way(
            &addr,
            &Value::Int(2048),
            &Value::Int(4000),
            Source::Operator,
            "test",
            IntentKind::Change,
            None,
            Some(8),
            None,
            false,
        )
        .unwrap();
    drop(p);
    k.0.lock().unwrap().netns_cookie = Some(9);
    let (mut p, _) = path(dir.path(), POLICY, &k);
    let reconciled = p.reconcile().unwrap();
    assert_eq!(reconciled.len(), 1);
    assert_eq!(reconciled[0].status, ChangeStatus::Failed);
    assert!(reconciled[0].detail.as_ref().unwrap().contains("went away"));
}

/// A change written and put back (the driver took another value) wrote the kernel twice: it
/// counts towards the hourly limit and the cooldown as an applied one does.
#[test]
fn a_change_put_back_counts_towards_the_rate_limits() {
    let dir = tempfile::tempdir().unwrap();
    let k = kernel(&[(SOMAX, Value::Int(4096))]);
    k.0.lock()
        .unwrap()
        .clamp
        .insert(SOMAX.into(), Value::Int(5000));
    let policy =
        "[guard]\nmax_changes_per_hour = 2\n[params.\"net.core.somaxconn\"]\nmode = \"auto\"\n";
    let (mut p, _) = path(dir.path(), policy, &k);
    let mut rules = op(SOMAX, Value::Int(8192));
    rules.source = Source::Rules;
    for v in [8192, 9000] {
        rules.value = Value::Int(v);
        let r = p.propose(&rules).unwrap();
        assert_ne!(r.status, ChangeStatus::Applied, "{r:?}");
        assert!(r.journal_id.is_some(), "written: {r:?}");
        assert_eq!(value(&k, SOMAX), Value::Int(4096), "put back");
    }
    rules.value = Value::Int(10000);
    assert!(
        matches!(
            p.preview(&rules),
            Decision::Refused(Refusal::RateLimited {
                changes: 2,
                limit: 2
            })
        ),
        "{:?}",
        p.preview(&rules)
    );
    let r = p.propose(&rules).unwrap();
    assert!(
        matches!(r.refusal, Some(Refusal::RateLimited { .. })),
        "{r:?}"
    );
}

/// `preview`, which an advisor asks before a change of several parameters, decides for a
/// namespace that replaced a dead one as `propose` would: the dead one's cooldown and quarantine
/// are not the new one's.
#[test]
fn preview_of_a_namespace_that_replaced_a_dead_one_inherits_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let k = kernel(&[(SOMAX, Value::Int(4096))]);
    k.0.lock().unwrap().netns_cookie = Some(7);
    let policy = "[params.\"net.core.somaxconn\"]\nmode = \"auto\"\ncooldown = \"1h\"\n";
    let (mut p, _) = path(dir.path(), policy, &k);
    let mut rules = op(SOMAX, Value::Int(8192));
    rules.source = Source::Rules;
    assert_eq!(p.propose(&rules).unwrap().status, ChangeStatus::Applied);
    let addr: ParamAddress = SOMAX.parse().unwrap();
    p.journal
        .quarantine(&addr, &Value::Int(16384), Duration::from_secs(3600), "test")
        .unwrap();
    let mut again = rules.clone();
    again.value = Value::Int(16384);
    assert!(
        matches!(p.preview(&again), Decision::Refused(_)),
        "the same namespace: quarantined, and in its cooldown"
    );
    {
        let mut kk = k.0.lock().unwrap();
        kk.netns_cookie = Some(8);
        kk.values.insert(SOMAX.into(), Value::Int(1024));
    }
    assert_eq!(p.preview(&again), Decision::Apply);
    assert_eq!(p.propose(&again).unwrap().status, ChangeStatus::Applied);
}

/// `kpo revert ID` of a change in a namespace whose inode another one has now: nothing to put
/// back, said so, even when the parameter was yielded there (s52 review2 N2: it offered
/// `--force`, or called another namespace's value `unchanged`).
#[test]
fn a_revert_of_a_yielded_parameter_in_a_namespace_replaced_since_writes_nothing() {
    // The new namespace's value: another one, or by chance the value the revert would write.
    for now in [1000, 4096] {
        let dir = tempfile::tempdir().unwrap();
        let k = kernel(&[(SOMAX, Value::Int(4096))]);
        k.0.lock().unwrap().netns_cookie = Some(7);
        let (mut p, _) = path(dir.path(), POLICY, &k);
        let id = p
            .propose(&op(SOMAX, Value::Int(8192)))
            .unwrap()
            .journal_id
            .unwrap();
        p.journal
            .set_yielded(
                &SOMAX.parse().unwrap(),
                Some(Value::Int(1000)),
                "pid 9 sysctl",
            )
            .unwrap();
        {
            let mut kk = k.0.lock().unwrap();
            kk.netns_cookie = Some(8);
            kk.values.insert(SOMAX.into(), Value::Int(now));
        }
        let r = p.revert(id, Source::Operator, "kpo revert").unwrap();
        assert_eq!(r.status, ChangeStatus::Skipped, "{}", r.describe());
        assert!(!r.theirs_left, "{}", r.describe());
        assert!(
            (r.detail.as_deref()).is_some_and(|d| d.contains("network namespace is gone")),
            "{}",
            r.describe()
        );
        assert_eq!(value(&k, SOMAX), Value::Int(now));
    }
}

/// A revert whose write reads back wrong is put back, and the journal still holds the change it
/// meant to undo: the agent's reverts (the guard's, the optimizer's) must not take it as done.
#[test]
fn a_revert_put_back_after_a_wrong_read_back_leaves_the_change_holding() {
    let dir = tempfile::tempdir().unwrap();
    let k = kernel(&[(SOMAX, Value::Int(4096))]);
    let (mut p, _) = path(dir.path(), POLICY, &k);
    let id = p
        .propose(&op(SOMAX, Value::Int(8192)))
        .unwrap()
        .journal_id
        .unwrap();
    k.0.lock().unwrap().revert_clamp_once = Some((SOMAX.into(), Value::Int(5000)));
    let r = p.revert_own(id, Source::Guard, "test").unwrap();
    assert_eq!(r.status, ChangeStatus::Failed, "not reverted: {r:?}");
    assert!(
        r.detail.as_deref().unwrap().contains("did not take"),
        "{r:?}"
    );
    assert_eq!(
        value(&k, SOMAX),
        Value::Int(8192),
        "the change's value put back"
    );
    let addr: ParamAddress = SOMAX.parse().unwrap();
    let state = p.journal.param_state(&addr).unwrap();
    assert!(state.still_holds(id, &Value::Int(8192)), "{state:?}");
    // A revert that takes leaves nothing holding.
    let r = p.revert_own(id, Source::Guard, "test").unwrap();
    assert_eq!(r.status, ChangeStatus::Reverted);
    assert_eq!(value(&k, SOMAX), Value::Int(4096));
    assert!(p.journal.param_state(&addr).unwrap().holding.is_none());
}

/// Opens every coalescing parameter of the fake NIC as the agent would.
struct Nic(crate::actuate::coalesce::FakeCoalesce);

impl Actuators for Nic {
    fn open(&self, address: &ParamAddress) -> Result<Box<dyn Actuator>, ActuateError> {
        use crate::actuate::coalesce::{AdaptiveMode, CoalesceActuator};
        let backend = Box::new(self.0.clone());
        Ok(Box::new(CoalesceActuator::with_backend(
            address,
            backend,
            AdaptiveMode::Respect,
        )?))
    }

    fn coalesce_backend(
        &self,
    ) -> Result<Box<dyn crate::actuate::coalesce::CoalesceAttrBackend>, ActuateError> {
        Ok(Box::new(self.0.clone()))
    }
}

/// `kpo revert --all` of a coalescing value whose revert reads back wrong (the driver rounds 50
/// down to 48) and is put back: KPO's 20 is still there, so the revert is `failed` (the CLI exits
/// 1), the journal lists it so, and adaptive moderation, turned off for that value, stays off
/// (turned on, the NIC would move KPO's value).
#[test]
fn a_revert_put_back_is_failed_and_its_switch_stays_off() {
    const RX: &str = "ethtool:eth0:rx-usecs";
    let dir = tempfile::tempdir().unwrap();
    let nic = crate::actuate::coalesce::FakeCoalesce::new();
    let adaptive = crate::actuate::coalesce::CoalesceSettings {
        rx_usecs: 50,
        adaptive_rx: true,
    };
    nic.add_nic("eth0", adaptive);
    let policy = Policy::parse(
        &format!("[params.\"{RX}\"]\nmode = \"auto\"\nallow_adaptive_off = true\n"),
        "test.toml",
    )
    .unwrap();
    crate::journal::store::make_private(dir.path());
    let journal = Journal::open(dir.path(), Holder::Cli, Duration::ZERO).unwrap();
    let mut p = ChangePath::new(policy, journal, Box::new(Nic(nic.clone())));
    let r = p.propose(&op(RX, Value::Int(20))).unwrap();
    assert_eq!(r.status, ChangeStatus::Applied, "{r:?}");
    nic.set_granularity(4);
    let reports = p.revert_all("all").unwrap();
    let statuses: Vec<(String, ChangeStatus)> = reports
        .iter()
        .map(|r| (r.address.to_string(), r.status))
        .collect();
    assert_eq!(
        statuses,
        vec![
            (RX.to_string(), ChangeStatus::Failed),
            (
                "ethtool:eth0:adaptive-rx".to_string(),
                ChangeStatus::Skipped
            )
        ],
        "{reports:#?}"
    );
    let now = nic.settings("eth0").unwrap();
    assert_eq!((now.rx_usecs, now.adaptive_rx), (20, false));
    let revert = p.journal.entries().last().unwrap().clone();
    assert_eq!(
        (revert.kind.as_str(), revert.status.as_str()),
        ("revert", "failed")
    );
}

/// An operator's revert quarantines the advisor's value it takes out, never the switch KPO turned
/// off to set it: no advisor proposes a switch's value, and a quarantine of "adaptive-rx off"
/// would only hold a person's own later write of it (s52 review L10; no test covered it).
#[test]
fn an_operators_revert_quarantines_no_switch() {
    const RX: &str = "ethtool:eth0:rx-usecs";
    const ADAPTIVE: &str = "ethtool:eth0:adaptive-rx";
    let quarantined = |p: &ChangePath, a: &str, v: Value| {
        p.journal
            .context(&a.parse().unwrap(), &v, SystemTime::now())
            .quarantined_until
            .is_some()
    };
    for by_id in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let nic = crate::actuate::coalesce::FakeCoalesce::new();
        let adaptive = crate::actuate::coalesce::CoalesceSettings {
            rx_usecs: 50,
            adaptive_rx: true,
        };
        nic.add_nic("eth0", adaptive);
        let policy = Policy::parse(
            &format!("[params.\"{RX}\"]\nmode = \"auto\"\nallow_adaptive_off = true\n"),
            "test.toml",
        )
        .unwrap();
        crate::journal::store::make_private(dir.path());
        let journal = Journal::open(dir.path(), Holder::Cli, Duration::ZERO).unwrap();
        let mut p = ChangePath::new(policy, journal, Box::new(Nic(nic.clone())));
        let mut optimizer = op(RX, Value::Int(20));
        optimizer.source = Source::Optimizer;
        let r = p.propose(&optimizer).unwrap();
        assert_eq!(r.status, ChangeStatus::Applied, "{r:?}");
        let switch = (p.journal.entries().iter())
            .find(|e| e.address.to_string() == ADAPTIVE)
            .map(|e| e.id)
            .expect("the switch's change");
        if by_id {
            let r = p.revert(switch, Source::Operator, "kpo revert").unwrap();
            assert_eq!(r.status, ChangeStatus::Reverted, "{}", r.describe());
        } else {
            p.revert_all("all").unwrap();
            assert!(quarantined(&p, RX, Value::Int(20)), "the advisor's value");
        }
        let now = nic.settings("eth0").unwrap();
        assert!(now.adaptive_rx, "back on");
        let off: Value = "off".parse().unwrap();
        assert_eq!(p.journal.intent(switch).unwrap().after, off);
        assert!(!quarantined(&p, ADAPTIVE, off), "by id: {by_id}");
    }
}

/// somaxconn at 4096 behind a driver that rounds a write to 5000 and refuses to put a value back.
fn rounding_kernel() -> FakeActuators {
    let k = kernel(&[(SOMAX, Value::Int(4096))]);
    let mut kk = k.0.lock().unwrap();
    kk.clamp.insert(SOMAX.into(), Value::Int(5000));
    kk.refuse_revert.push(SOMAX.into());
    drop(kk);
    k
}

/// A driver rounds the write (5000 for 8192) and then refuses to have the value before put back:
/// what the kernel keeps is KPO's own write, so the journal holds it as KPO's change (no later
/// value check takes it for a person's), and a revert puts the value before back. The value read
/// back is journaled before the put-back is tried.
#[test]
fn a_rounded_write_that_cannot_be_put_back_is_kpos_own_value() {
    let dir = tempfile::tempdir().unwrap();
    let k = rounding_kernel();
    let (mut p, events) = path(dir.path(), POLICY, &k);
    let r = p.propose(&op(SOMAX, Value::Int(8192))).unwrap();
    assert_eq!(r.status, ChangeStatus::Failed, "{r:?}");
    assert_eq!(value(&k, SOMAX), Value::Int(5000));
    let detail = r.detail.clone().unwrap();
    assert!(
        detail.contains("read back 5000") && detail.contains("the kernel keeps 5000"),
        "{detail}"
    );
    assert_eq!(phases(&events).last(), Some(&ChangePhase::Failed));
    let id = r.journal_id.unwrap();
    let addr: ParamAddress = SOMAX.parse().unwrap();
    for reopened in [false, true] {
        if reopened {
            drop(p);
            p = path(dir.path(), POLICY, &k).0;
            assert!(p.reconcile().unwrap().is_empty(), "the change is complete");
        }
        assert_eq!(p.journal.wrong_read_back(id), Some(&Value::Int(5000)));
        assert!(matches!(
            p.journal.outcome(id),
            Some(Outcome::Failed {
                left: Some(Value::Int(5000)),
                ..
            })
        ));
        let state = p.journal.param_state(&addr).unwrap();
        assert!(state.still_holds(id, &Value::Int(5000)), "{state:?}");
        assert_eq!(state.original, Some(Value::Int(4096)));
    }
    // The kernel lets it go now: the revert puts the value before back.
    k.0.lock().unwrap().refuse_revert.clear();
    let r = p.revert(id, Source::Operator, "test").unwrap();
    assert_eq!(r.status, ChangeStatus::Reverted, "{r:?}");
    assert_eq!(value(&k, SOMAX), Value::Int(4096));
    assert!(p.journal.param_state(&addr).unwrap().holding.is_none());
}

/// The agent died after a write read back wrong and before the value before was put back. The
/// read-back was journaled first, so the next start knows the kernel's value as KPO's own and
/// finishes the put-back; a value that is not the one read back is someone else's and stays.
#[test]
fn a_put_back_interrupted_by_a_crash_is_finished_at_the_next_start() {
    let addr: ParamAddress = SOMAX.parse().unwrap();
    for (kernel_now, put_back) in [(5000, true), (6000, false)] {
        let dir = tempfile::tempdir().unwrap();
        let k = kernel(&[(SOMAX, Value::Int(4096))]);
        let (mut p, _) = path(dir.path(), POLICY, &k);
        // What the change path had journaled when the process was killed.
        let id = p
            .journal
            .record_intent_making_way(
                &addr,
                &Value::Int(4096),
                &Value::Int(8192),
                Source::Operator,
                "test",
                IntentKind::Change,
                None,
                None,
                None,
                false,
            )
            .unwrap();
        p.journal.record_read_back(id, &Value::Int(5000)).unwrap();
        k.0.lock()
            .unwrap()
            .values
            .insert(SOMAX.into(), Value::Int(kernel_now));
        drop(p);
        let (mut p, _) = path(dir.path(), POLICY, &k);
        let r = p.reconcile().unwrap();
        assert_eq!(r.len(), 1);
        let detail = r[0].detail.clone().unwrap();
        let state = p.journal.param_state(&addr).unwrap();
        if put_back {
            assert_eq!(r[0].status, ChangeStatus::Reverted, "{detail}");
            assert!(
                detail.contains("before the value before was put back"),
                "{detail}"
            );
            assert_eq!(value(&k, SOMAX), Value::Int(4096));
            assert!(matches!(
                p.journal.outcome(id),
                Some(Outcome::Reverted { .. })
            ));
        } else {
            assert_eq!(r[0].status, ChangeStatus::Failed, "{detail}");
            assert!(detail.contains("someone else changed it"), "{detail}");
            assert_eq!(value(&k, SOMAX), Value::Int(6000));
        }
        assert_eq!((state.holding, &state.last_applied), (None, &None));
    }
}

/// A rounded write whose put-back fails, and whose outcome the journal cannot take either (a full
/// disk): the running agent still holds KPO's write as its own (no value check takes it for a
/// person's), and the next start finishes the put-back from the journaled read-back.
#[test]
fn a_failed_put_back_the_journal_cannot_record_is_still_kpos() {
    let dir = tempfile::tempdir().unwrap();
    let k = rounding_kernel();
    let (mut p, _) = path(dir.path(), POLICY, &k);
    // The intent and the read-back pass; the outcome's line is cut after 10 bytes.
    p.journal.fail_an_append(2, 10);
    let e = p.propose(&op(SOMAX, Value::Int(8192))).unwrap_err();
    assert!(matches!(e, ChangeError::Journal(_)), "{e}");
    assert_eq!(value(&k, SOMAX), Value::Int(5000));
    let addr: ParamAddress = SOMAX.parse().unwrap();
    let state = p.journal.param_state(&addr).unwrap();
    let id = state.holding.expect("KPO's write is held");
    assert!(state.still_holds(id, &Value::Int(5000)), "{state:?}");
    drop(p);
    k.0.lock().unwrap().refuse_revert.clear();
    let (mut p, _) = path(dir.path(), POLICY, &k);
    let r = p.reconcile().unwrap();
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].status, ChangeStatus::Reverted, "{}", r[0].describe());
    assert_eq!(value(&k, SOMAX), Value::Int(4096));
}

/// An interrupted put-back of a parameter the deny-list covers now (journaled under an older
/// list): reconciliation does not write it, and KPO's value is held as KPO's.
#[test]
fn an_interrupted_put_back_the_deny_list_now_refuses_is_left() {
    const CORE: &str = "kernel.core_pattern";
    let dir = tempfile::tempdir().unwrap();
    let k = kernel(&[(CORE, Value::Word("core".into()))]);
    let (mut p, _) = path(dir.path(), POLICY, &k);
    let addr: ParamAddress = CORE.parse().unwrap();
    let id = p
        .journal
        .record_intent_making_way(
            &addr,
            &Value::Word("core".into()),
            &Value::Word("core.%p".into()),
            Source::Operator,
            "test",
            IntentKind::Change,
            None,
            None,
            None,
            false,
        )
        .unwrap();
    p.journal
        .record_read_back(id, &Value::Word("core.%e".into()))
        .unwrap();
    k.0.lock()
        .unwrap()
        .values
        .insert(CORE.into(), Value::Word("core.%e".into()));
    drop(p);
    let (mut p, _) = path(dir.path(), POLICY, &k);
    let r = p.reconcile().unwrap();
    let detail = r[0].detail.clone().unwrap();
    assert_eq!(r[0].status, ChangeStatus::Failed, "{detail}");
    assert!(detail.contains("deny-listed"), "{detail}");
    assert_eq!(value(&k, CORE), Value::Word("core.%e".into()));
    let state = p.journal.param_state(&addr).unwrap();
    assert!(
        state.still_holds(id, &Value::Word("core.%e".into())),
        "{state:?}"
    );
}

/// The kernel took the write but the journal cannot record the outcome (a full disk): the value
/// before is put back, so the journal (an intent, reconciled at the next start) and the kernel
/// agree that nothing was applied, and the caller gets the journal's error.
#[test]
fn an_outcome_the_journal_cannot_record_puts_the_value_back() {
    let dir = tempfile::tempdir().unwrap();
    let k = kernel(&[(SOMAX, Value::Int(4096))]);
    let (mut p, events) = path(dir.path(), POLICY, &k);
    // The intent passes; the outcome's line is cut after 10 bytes.
    p.journal.fail_an_append(1, 10);
    let e = p.propose(&op(SOMAX, Value::Int(8192))).unwrap_err();
    assert!(matches!(e, ChangeError::Journal(_)), "{e}");
    assert_eq!(value(&k, SOMAX), Value::Int(4096));
    assert_eq!(phases(&events).last(), Some(&ChangePhase::Failed));
    // Reopened, the intent is reconciled as not applied, and nothing is KPO's.
    drop(p);
    let (mut p, _) = path(dir.path(), POLICY, &k);
    let r = p.reconcile().unwrap();
    assert_eq!(r.len(), 1);
    assert_ne!(r[0].status, ChangeStatus::Applied, "{}", r[0].describe());
    let state = p.journal.param_state(&SOMAX.parse().unwrap()).unwrap();
    assert_eq!(state.last_applied, None);

    // A revert whose outcome cannot be recorded is left done: what it undid does not come back.
    let applied = p.propose(&op(SOMAX, Value::Int(8192))).unwrap();
    assert_eq!(applied.status, ChangeStatus::Applied);
    p.journal.fail_an_append(1, 10);
    let id = applied.journal_id.unwrap();
    let reverted = p.revert(id, Source::Operator, "test").unwrap();
    assert_eq!(reverted.status, ChangeStatus::Reverted, "{reverted:?}");
    assert_eq!(value(&k, SOMAX), Value::Int(4096));
    // The running agent knows it was done: KPO holds nothing there now (no value check will take
    // the 4096 for a person's).
    let state = p.journal.param_state(&SOMAX.parse().unwrap()).unwrap();
    assert_eq!(
        (&state.last_applied, state.holding),
        (&Some(Value::Int(4096)), None)
    );

    // The agent goes on: a change that fails to be recorded, then the same value applied again.
    // At the next start the first is not taken for applied because the kernel has its value: the
    // later change is the one KPO holds.
    drop(p);
    let (mut p, _) = path(dir.path(), POLICY, &k);
    // The start finds the revert done, and KPO holding nothing there.
    let r = p.reconcile().unwrap();
    assert_eq!(r.len(), 1, "{r:?}");
    assert_ne!(r[0].status, ChangeStatus::Failed, "{}", r[0].describe());
    let state = p.journal.param_state(&SOMAX.parse().unwrap()).unwrap();
    assert_eq!(state.holding, None);
    p.journal.fail_an_append(1, 10);
    assert!(p.propose(&op(SOMAX, Value::Int(8192))).is_err());
    let again = p.propose(&op(SOMAX, Value::Int(8192))).unwrap();
    assert_eq!(again.status, ChangeStatus::Applied);
    drop(p);
    let (mut p, _) = path(dir.path(), POLICY, &k);
    let r = p.reconcile().unwrap();
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].status, ChangeStatus::Failed, "{}", r[0].describe());
    let state = p.journal.param_state(&SOMAX.parse().unwrap()).unwrap();
    assert_eq!(state.holding, again.journal_id);

    // Newest first: a change whose outcome could not be written (put back), then the same change
    // again, killed after its write. At the start the newer is found applied, and the older,
    // whose value the kernel also has, is not.
    p.revert(again.journal_id.unwrap(), Source::Operator, "back")
        .unwrap();
    p.journal.fail_an_append(1, 10);
    assert!(p.propose(&op(SOMAX, Value::Int(8192))).is_err());
    let killed = p
        .journal
        .record_intent(
            &SOMAX.parse().unwrap(),
            &Value::Int(4096),
            &Value::Int(8192),
            Source::Operator,
            "t",
            IntentKind::Change,
        )
        .unwrap();
    k.0.lock()
        .unwrap()
        .values
        .insert(SOMAX.into(), Value::Int(8192));
    drop(p);
    let (mut p, _) = path(dir.path(), POLICY, &k);
    let r = p.reconcile().unwrap();
    let status = |id| r.iter().find(|x| x.journal_id == Some(id)).unwrap().status;
    assert_eq!(status(killed), ChangeStatus::Applied, "{r:?}");
    assert_eq!(status(killed - 1), ChangeStatus::Failed, "{r:?}");
    let state = p.journal.param_state(&SOMAX.parse().unwrap()).unwrap();
    assert_eq!(state.holding, Some(killed));
}

/// An approval is written only into the namespace its advice was about: held with that
/// namespace's cookie, approved after its inode came to name another (another cookie), it writes
/// nothing. The held proposal's report carries the cookie it was read with.
#[test]
fn an_approval_is_not_written_into_a_namespace_that_replaced_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let k = kernel(&[(SOMAX, Value::Int(4096))]);
    k.0.lock().unwrap().netns_cookie = Some(7);
    let (mut p, _) = path(dir.path(), "", &k);
    let mut prop = op(SOMAX, Value::Int(8192));
    prop.source = Source::Rules;
    let held = p.propose_held(&prop).unwrap();
    assert_eq!(held.status, ChangeStatus::NeedsApproval);
    assert_eq!(held.netns_cookie, Some(7));

    k.0.lock().unwrap().netns_cookie = Some(8);
    let r = p.propose_approved(&prop, held.netns_cookie).unwrap();
    assert_eq!(r.status, ChangeStatus::Failed, "{}", r.describe());
    assert!(r.detail.unwrap().contains("advised for is gone"));
    assert_eq!(value(&k, SOMAX), Value::Int(4096));
    // Not known to be the same namespace (no cookie readable now): nothing written either.
    k.0.lock().unwrap().netns_cookie = None;
    let r = p.propose_approved(&prop, held.netns_cookie).unwrap();
    assert_eq!(r.status, ChangeStatus::Failed, "{}", r.describe());
    assert_eq!(value(&k, SOMAX), Value::Int(4096));
    // In the namespace it was advised for, it applies.
    k.0.lock().unwrap().netns_cookie = Some(7);
    let r = p.propose_approved(&prop, held.netns_cookie).unwrap();
    assert_eq!(r.status, ChangeStatus::Applied, "{}", r.describe());
}

/// `kpo status` does not look for a namespace that no longer exists: the journal keeps such
/// parameters for good, and finding one by inode scans every process. (4026539999 is no
/// namespace on this machine; the fake kernel would answer a read of it.)
#[test]
fn status_names_a_gone_namespace_without_reading_it() {
    use crate::control::Control;
    let dir = tempfile::tempdir().unwrap();
    let k = kernel(&[(SOMAX, Value::Int(4096))]);
    let (mut p, _) = path(dir.path(), POLICY, &k);
    assert_eq!(
        p.propose(&op(SOMAX, Value::Int(8192))).unwrap().status,
        ChangeStatus::Applied
    );
    let opened = k.0.lock().unwrap().opened.len();
    let status = Control::status(&mut p).unwrap();
    let param = &status.params[0];
    assert_eq!(param.current, None);
    assert_eq!(
        param.current_error.as_deref(),
        Some(crate::actuate::sysctl::netns_gone(4026539999).as_str())
    );
    assert_eq!(k.0.lock().unwrap().opened.len(), opened, "nothing opened");
}

/// `kpo status` of a parameter whose namespace is gone while its inode names a namespace made
/// since read that namespace's value as the parameter's (seen by hand, qa-act: another helper's
/// namespace took the inode). The cookie tells them apart: it says the namespace is gone.
#[test]
fn status_does_not_read_a_namespace_that_took_the_inode() {
    use crate::control::Control;
    if !nix::unistd::Uid::effective().is_root() {
        kpo_test_skip::skip("not root: the test makes a network namespace to hold an inode");
        return;
    }
    // A live namespace (a /run/netns name holds it), its inode the journal's key.
    let name = format!("kpo-unit-status-{}", std::process::id());
    let added = std::process::Command::new("ip")
        .args(["netns", "add", &name])
        .status();
    if !added.is_ok_and(|s| s.success()) {
        kpo_test_skip::skip("ip netns add failed (iproute2 missing?)");
        return;
    }
    struct Deleted(String);
    impl Drop for Deleted {
        fn drop(&mut self) {
            let _ = std::process::Command::new("ip")
                .args(["netns", "del", &self.0])
                .status();
        }
    }
    let _deleted = Deleted(name.clone());
    let inode = std::os::unix::fs::MetadataExt::ino(
        &std::fs::metadata(format!("/run/netns/{name}")).unwrap(),
    );
    let param = format!("net.core.somaxconn@netns:{inode}");
    let dir = tempfile::tempdir().unwrap();
    let k = kernel(&[(param.as_str(), Value::Int(4096))]);
    k.0.lock().unwrap().netns_cookie = Some(7);
    let (mut p, _) = path(dir.path(), POLICY, &k);
    let r = p.propose(&op(&param, Value::Int(8192))).unwrap();
    assert_eq!(r.status, ChangeStatus::Applied, "{}", r.describe());
    assert_eq!(
        Control::status(&mut p).unwrap().params[0].current,
        Some(Value::Int(8192))
    );
    // The inode names another namespace now.
    k.0.lock().unwrap().netns_cookie = Some(8);
    let status = Control::status(&mut p).unwrap();
    let param = &status.params[0];
    assert_eq!(param.current, None);
    assert_eq!(
        param.current_error.as_deref(),
        Some(
            "its network namespace is gone: the inode now names another namespace (cookie 8, \
             was 7)"
        )
    );
}

/// Advice made from a value read in one network namespace is neither applied nor held for
/// approval in another that has its inode by the time the advice arrives (the LLM's, up to
/// `llm.timeout` after the read): it is refused, like any refused proposal, and nothing is
/// written. In the namespace it was read in, it goes on as `propose` or `propose_held` would.
#[test]
fn advice_read_in_a_namespace_whose_inode_now_names_another_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let k = kernel(&[(SOMAX, Value::Int(4096))]);
    k.0.lock().unwrap().netns_cookie = Some(7);
    let (mut p, events) = path(dir.path(), POLICY, &k);
    let a: ParamAddress = SOMAX.parse().unwrap();
    let (read, cookie) = p.read_with_cookie(&a).unwrap();
    assert_eq!((read, cookie), (Value::Int(4096), Some(7)));
    let host: ParamAddress = "net.core.somaxconn".parse().unwrap();
    k.0.lock()
        .unwrap()
        .values
        .insert(host.to_string(), Value::Int(4096));
    assert_eq!(
        p.read_with_cookie(&host).unwrap().1,
        None,
        "no cookie at the host"
    );
    let mut prop = op(SOMAX, Value::Int(8192));
    prop.source = Source::Llm;

    // The namespace read in (cookie 7) is gone; the inode names cookie 8's now.
    k.0.lock().unwrap().netns_cookie = Some(8);
    for held in [false, true] {
        let r = p.propose_advice(&prop, held, cookie, None).unwrap();
        assert_eq!(r.status, ChangeStatus::Refused, "{}", r.describe());
        let why = r.refusal.as_ref().unwrap().to_string();
        assert!(
            why.contains("advised for is gone") && why.contains("(cookie 8, was 7 "),
            "{why}"
        );
        assert_eq!(r.refusal.unwrap().code(), "invalid");
    }
    assert_eq!(value(&k, SOMAX), Value::Int(4096), "nothing written");
    assert_eq!(
        phases(&events),
        [
            ChangePhase::Proposed,
            ChangePhase::Refused,
            ChangePhase::Proposed,
            ChangePhase::Refused
        ],
        "recorded as refusals are, each after its proposal"
    );
    // Not known to be the same one (no cookie readable now): refused too.
    k.0.lock().unwrap().netns_cookie = None;
    let r = p.propose_advice(&prop, false, cookie, None).unwrap();
    assert_eq!(r.status, ChangeStatus::Refused, "{}", r.describe());

    // In the namespace it was read in: held, with that cookie for the approval, or applied.
    k.0.lock().unwrap().netns_cookie = Some(7);
    let r = p.propose_advice(&prop, true, cookie, None).unwrap();
    assert_eq!(
        (r.status, r.netns_cookie),
        (ChangeStatus::NeedsApproval, Some(7))
    );
    let r = p.propose_advice(&prop, false, cookie, None).unwrap();
    assert_eq!(r.status, ChangeStatus::Applied, "{}", r.describe());
    // Without a cookie read, nothing more is checked (as `propose`).
    let r = p
        .propose_advice(&op(SOMAX, Value::Int(9000)), false, None, None)
        .unwrap();
    assert_eq!(r.status, ChangeStatus::Applied, "{}", r.describe());
}

/// A coalescing value over the fake NIC whose `apply` lets a person turn adaptive-rx on first:
/// what happens between `clear_the_way` turning it off and the value's write.
struct PersonTurnsAdaptiveOn {
    inner: crate::actuate::coalesce::CoalesceActuator,
    nic: crate::actuate::coalesce::FakeCoalesce,
}

impl Actuator for PersonTurnsAdaptiveOn {
    fn address(&self) -> &ParamAddress {
        self.inner.address()
    }
    fn read(&mut self) -> Result<Value, ActuateError> {
        self.inner.read()
    }
    fn validate(&mut self, value: &Value) -> Result<(), ActuateError> {
        self.inner.validate(value)
    }
    fn apply(&mut self, value: &Value) -> Result<Value, ActuateError> {
        let mut attrs = self.nic.attrs("eth0").unwrap();
        attrs.use_adaptive_rx = Some(true);
        self.nic.add_nic_attrs("eth0", attrs);
        self.inner.apply(value)
    }
    fn revert(&mut self, original: &Value) -> Result<Value, ActuateError> {
        self.inner.revert(original)
    }
    fn set_adaptive_off_allowed(&mut self, allowed: bool) {
        self.inner.set_adaptive_off_allowed(allowed)
    }
    fn switch_in_the_way(&mut self) -> Result<Option<(ParamAddress, Value)>, ActuateError> {
        self.inner.switch_in_the_way()
    }
}

struct NicActuators(crate::actuate::coalesce::FakeCoalesce);

impl Actuators for NicActuators {
    fn open(&self, address: &ParamAddress) -> Result<Box<dyn Actuator>, ActuateError> {
        use crate::actuate::coalesce::{AdaptiveMode, CoalesceActuator};
        let inner = CoalesceActuator::with_backend(
            address,
            Box::new(self.0.clone()),
            AdaptiveMode::Respect,
        )?;
        Ok(if address.name == "rx-usecs" {
            Box::new(PersonTurnsAdaptiveOn {
                inner,
                nic: self.0.clone(),
            })
        } else {
            Box::new(inner)
        })
    }
}

/// With `allow_adaptive_off`, adaptive moderation is turned off by a journaled change of its own.
/// If a person turns it on again before the value is written, the value's write is refused: its
/// SET never turns adaptive moderation off again without a journal entry.
#[test]
fn adaptive_moderation_turned_on_before_the_write_is_not_turned_off_unjournaled() {
    let tmp = tempfile::tempdir().unwrap();
    let nic = crate::actuate::coalesce::FakeCoalesce::new();
    nic.add_nic(
        "eth0",
        crate::actuate::coalesce::CoalesceSettings {
            rx_usecs: 50,
            adaptive_rx: true,
        },
    );
    let policy = Policy::parse(
        "[params.\"ethtool:eth0:rx-usecs\"]\nmode = \"auto\"\nallow_adaptive_off = true\n",
        "test.toml",
    )
    .unwrap();
    crate::journal::store::make_private(tmp.path());
    let journal = Journal::open(tmp.path(), Holder::Cli, Duration::ZERO).unwrap();
    let mut path = ChangePath::new(policy, journal, Box::new(NicActuators(nic.clone())));
    let r = path
        .propose(&op("ethtool:eth0:rx-usecs", Value::Int(20)))
        .unwrap();
    assert_ne!(r.status, ChangeStatus::Applied, "{r:?}");
    let detail = r.detail.clone().unwrap_or_default();
    assert!(detail.contains("adaptive-rx is on"), "{r:?}");
    let a = nic.attrs("eth0").unwrap();
    assert_eq!((a.rx_usecs, a.use_adaptive_rx), (Some(50), Some(true)));
    // The only SET that turned it off is the journaled one, before the person turned it on.
    let offs = nic.history().iter().filter(|(_, s)| !s.adaptive_rx).count();
    assert_eq!(offs, 1, "{:?}", nic.history());
}

/// Through the change path a raw EPP number is refused while the driver shows a name (the shape
/// check: the kernel's value is a word), and a name while it shows a raw number, before any
/// write: the actuator alone would write it and report the read-back by name as a mismatch.
#[test]
fn a_raw_epp_number_is_refused_while_the_driver_shows_a_name_and_the_reverse() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("sys/devices/system/cpu/cpufreq/policy0");
    std::fs::create_dir_all(&dir).unwrap();
    let epp = dir.join("energy_performance_preference");
    std::fs::write(&epp, "balance_performance\n").unwrap();
    std::fs::write(
        dir.join("energy_performance_available_preferences"),
        "default performance balance_performance balance_power power \n",
    )
    .unwrap();
    let actuators = KernelActuators {
        roots: crate::actuate::Roots {
            proc_sys: tmp.path().join("proc_sys"),
            sys: tmp.path().join("sys"),
        },
    };
    let policy = Policy::parse(
        "[params.\"cpufreq:*:energy_performance_preference\"]\nmode = \"auto\"\n",
        "test.toml",
    )
    .unwrap();
    let state = tmp.path().join("state");
    std::fs::create_dir_all(&state).unwrap();
    crate::journal::store::make_private(&state);
    let journal = Journal::open(&state, Holder::Cli, Duration::ZERO).unwrap();
    let mut path = ChangePath::new(policy, journal, Box::new(actuators));
    let address = "cpufreq:policy0:energy_performance_preference";
    for (shown, proposed) in [
        ("balance_performance", Value::Int(128)),
        ("64", Value::Word("power".into())),
    ] {
        std::fs::write(&epp, format!("{shown}\n")).unwrap();
        let r = path.propose(&op(address, proposed.clone())).unwrap();
        assert_eq!(r.status, ChangeStatus::Refused, "{proposed}: {r:?}");
        assert!(
            matches!(r.refusal, Some(Refusal::Invalid { .. })),
            "{proposed}: {r:?}"
        );
        assert_eq!(
            std::fs::read_to_string(&epp).unwrap(),
            format!("{shown}\n"),
            "{proposed}: nothing written"
        );
    }
}

/// A change path over the sysctl tree `dir/proc_sys`, its journal in `dir/state` (opened again
/// on each call, as by a new agent), under a policy that lets `param` change automatically.
fn kernel_path(dir: &std::path::Path, param: &str) -> ChangePath {
    let state = dir.join("state");
    std::fs::create_dir_all(&state).unwrap();
    crate::journal::store::make_private(&state);
    let actuators = KernelActuators {
        roots: crate::actuate::Roots {
            proc_sys: dir.join("proc_sys"),
            sys: dir.join("sys"),
        },
    };
    let policy = Policy::parse(
        &format!("[params.\"{param}\"]\nmode = \"auto\"\n"),
        "t.toml",
    );
    let journal = Journal::open(&state, Holder::Cli, Duration::ZERO).unwrap();
    ChangePath::new(policy.unwrap(), journal, Box::new(actuators))
}

/// kernel.shmmax's default, 18446744073692774399, is above i64::MAX: it is read as an integer, so
/// an integer proposal fits its shape, and it round-trips exactly through the journal (JSON) and
/// back into the kernel on revert.
#[test]
fn an_integer_above_i64_max_is_an_integer_and_round_trips_through_the_journal() {
    const SHMMAX: &str = "18446744073692774399";
    let tmp = tempfile::tempdir().unwrap();
    let proc_sys = tmp.path().join("proc_sys");
    std::fs::create_dir_all(proc_sys.join("kernel")).unwrap();
    let file = proc_sys.join("kernel/shmmax");
    std::fs::write(&file, format!("{SHMMAX}\n")).unwrap();
    let original = Value::Int(SHMMAX.parse().unwrap());
    assert_eq!(Value::parse(SHMMAX), original);
    let json = serde_json::to_string(&original).unwrap();
    assert_eq!(json, SHMMAX, "a JSON number, exact");
    assert_eq!(serde_json::from_str::<Value>(&json).unwrap(), original);

    let open = || kernel_path(tmp.path(), "kernel.shmmax");
    let mut path = open();
    let r = path
        .propose(&op("kernel.shmmax", Value::Int(68719476736)))
        .unwrap();
    assert_eq!(r.status, ChangeStatus::Applied, "{r:?}");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "68719476736\n");
    drop(path);
    // Read back from disk by a new journal: the original is exact.
    let mut path = open();
    let address: ParamAddress = "kernel.shmmax".parse().unwrap();
    assert_eq!(
        path.journal.param_state(&address).unwrap().original,
        Some(original.clone())
    );
    let reports = path
        .restore_originals(vec![address], Source::Operator, "test", false)
        .unwrap();
    assert_eq!(reports[0].status, ChangeStatus::Reverted, "{reports:?}");
    assert_eq!(
        std::fs::read_to_string(&file).unwrap(),
        format!("{SHMMAX}\n")
    );
}

/// Defect: an empty value could not be read, so `ip_local_reserved_ports`'s empty default could
/// never be changed through KPO, journaled, or put back. It goes from nothing to one port (an
/// integer, as the kernel prints one) to a list, through the journal on disk, and back to
/// nothing; the report shows the empty value as `""`.
#[test]
fn an_empty_value_is_journaled_and_put_back() {
    const PORTS: &str = "net.ipv4.ip_local_reserved_ports";
    let tmp = tempfile::tempdir().unwrap();
    let proc_sys = tmp.path().join("proc_sys");
    std::fs::create_dir_all(proc_sys.join("net/ipv4")).unwrap();
    let file = proc_sys.join("net/ipv4/ip_local_reserved_ports");
    std::fs::write(&file, "\n").unwrap();
    let open = || kernel_path(tmp.path(), PORTS);
    let empty = Value::Word(String::new());
    let mut path = open();
    let r = path.propose(&op(PORTS, Value::Int(8080))).unwrap();
    assert_eq!(r.status, ChangeStatus::Applied, "{r:?}");
    assert_eq!(r.before, Some(empty.clone()));
    assert!(r.describe().contains(": \"\" -> 8080"), "{}", r.describe());
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "8080\n");
    let list = Value::Word("8080,9000-9100".into());
    let r = path.propose(&op(PORTS, list.clone())).unwrap();
    assert_eq!(r.status, ChangeStatus::Applied, "{r:?}");
    assert_eq!(r.read_back, Some(list));
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "8080,9000-9100\n");
    // One port as a string (the API's `"value": "9000"`) is the integer the kernel prints back,
    // not a word that would read back as another value and be put back.
    let r = path
        .propose(&op(PORTS, Value::Word("9000".into())))
        .unwrap();
    assert_eq!(r.status, ChangeStatus::Applied, "{r:?}");
    assert_eq!(r.after, Value::Int(9000));
    assert_eq!(r.read_back, Some(Value::Int(9000)));
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "9000\n");
    drop(path);
    // A new journal reads the original, nothing, back from disk.
    let mut path = open();
    let address: ParamAddress = PORTS.parse().unwrap();
    assert_eq!(
        path.journal.param_state(&address).unwrap().original,
        Some(empty.clone())
    );
    let reports = path
        .restore_originals(vec![address], Source::Operator, "test", false)
        .unwrap();
    assert_eq!(reports[0].status, ChangeStatus::Reverted, "{reports:?}");
    assert_eq!(reports[0].read_back, Some(empty));
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "\n");
}

/// The agent's own network namespace is the host's: `net.core.somaxconn` and the same key
/// addressed to that namespace by its inode (or a path to it) are one kernel value, so one journal
/// key with one original. Before, the second address started a second key whose "original" was
/// KPO's own first value, and `kpo revert --all` ended there instead of at the real original.
#[test]
fn the_agents_own_namespace_is_the_hosts_key() {
    const SOMAXCONN: &str = "net.core.somaxconn";
    let tmp = tempfile::tempdir().unwrap();
    let proc_sys = tmp.path().join("proc_sys");
    std::fs::create_dir_all(proc_sys.join("net/core")).unwrap();
    let file = proc_sys.join("net/core/somaxconn");
    std::fs::write(&file, "4096\n").unwrap();
    let own = crate::policy::own_netns_inode().expect("/proc/self/ns/net");
    let by_inode = format!("{SOMAXCONN}@netns:{own}");
    // By this process's PID: a path through /proc/self names whoever opens it, and is refused
    // (a_namespace_named_through_proc_self_is_refused).
    let by_path = format!("{SOMAXCONN}@netns:/proc/{}/ns/net", std::process::id());
    let host: ParamAddress = SOMAXCONN.parse().unwrap();
    for own_address in [&by_inode, &by_path] {
        let address: ParamAddress = own_address.parse().unwrap();
        assert_eq!(target_key(&address), SOMAXCONN, "{own_address}");
    }
    // A host-wide key stays as addressed: the actuator refuses it in a namespace.
    let global: ParamAddress = format!("vm.swappiness@netns:{own}").parse().unwrap();
    assert_eq!(target_key(&global), global.to_string());

    let open = || kernel_path(tmp.path(), SOMAXCONN);
    let mut path = open();
    let r = path.propose(&op(SOMAXCONN, Value::Int(5000))).unwrap();
    assert_eq!(r.status, ChangeStatus::Applied, "{r:?}");
    for (own_address, v) in [(&by_inode, 6000), (&by_path, 7000)] {
        let r = path.propose(&op(own_address, Value::Int(v))).unwrap();
        assert_eq!(r.status, ChangeStatus::Applied, "{own_address}: {r:?}");
        assert_eq!(r.address, host, "reported as the host's: {r:?}");
        assert_eq!(std::fs::read_to_string(&file).unwrap(), format!("{v}\n"));
    }
    drop(path);
    // The journal on disk knows one parameter, with the original KPO found.
    let mut path = open();
    let keys: Vec<(String, Option<Value>)> = path
        .journal
        .params()
        .map(|p| (p.key.clone(), p.original.clone()))
        .collect();
    assert_eq!(keys, vec![(SOMAXCONN.to_string(), Some(Value::Int(4096)))]);
    assert!(
        path.journal.entries().iter().all(|e| e.address == host),
        "{:?}",
        path.journal.entries()
    );
    let all = path.revert_all("all").unwrap();
    assert_eq!(all.len(), 1, "{all:?}");
    assert_eq!(all[0].status, ChangeStatus::Reverted, "{all:?}");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "4096\n");
}

/// A change made in a namespace named by a path (`--netns /run/netns/web`), whose name was then
/// deleted while a process keeps the namespace alive (`ip netns del web`): a temporary file
/// stands for the name, and the fake kernel holds the namespace's value under the inode the name
/// had. Returns the change path, its kernel, the address by inode, the change's id, and the
/// directories to keep.
fn change_in_a_namespace_whose_name_is_deleted() -> (
    ChangePath,
    FakeActuators,
    String,
    u64,
    [tempfile::TempDir; 2],
) {
    use std::os::unix::fs::MetadataExt;
    let ns = tempfile::tempdir().unwrap();
    let name = ns.path().join("web");
    std::fs::write(&name, "").unwrap();
    crate::policy::stand_in_netns(&name);
    let by_path = format!("net.core.somaxconn@netns:{}", name.display());
    let inode = std::fs::metadata(&name).unwrap().ino();
    let by_inode = format!("net.core.somaxconn@netns:{inode}");
    let dir = tempfile::tempdir().unwrap();
    let k = kernel(&[(&by_path, Value::Int(4096))]);
    let (mut p, _) = path(dir.path(), POLICY, &k);
    let r = p.propose(&op(&by_path, Value::Int(8192))).unwrap();
    assert_eq!(r.status, ChangeStatus::Applied, "{r:?}");
    assert_eq!(p.journal.params().next().unwrap().key, by_inode);
    std::fs::remove_file(&name).unwrap();
    k.0.lock()
        .unwrap()
        .values
        .insert(by_inode.clone(), Value::Int(8192));
    (p, k, by_inode, r.journal_id.unwrap(), [ns, dir])
}

/// `kpo revert --all`, `on_exit` and `kpo revert ID` reach a namespace whose name was deleted
/// while it lives on, by the inode the journal keyed it under. Defect: each rebuilt the key from
/// the path, which no longer resolves: `revert --all` and `on_exit` left the parameter out
/// without a word ("nothing to revert"), and `kpo revert ID` failed with "does not exist".
#[test]
fn a_namespace_whose_name_is_deleted_is_reverted_by_its_inode() {
    let (mut p, k, by_inode, _, _keep) = change_in_a_namespace_whose_name_is_deleted();
    let all = p.revert_all("all").unwrap();
    assert_eq!(all.len(), 1, "{all:?}");
    assert_eq!(all[0].status, ChangeStatus::Reverted, "{all:?}");
    assert_eq!(all[0].address.to_string(), by_inode);
    assert_eq!(value(&k, &by_inode), Value::Int(4096));

    // `on_exit = "revert"`: the agent's list is the journal's parameters, reached the same way.
    let (mut p, k, by_inode, _, _keep) = change_in_a_namespace_whose_name_is_deleted();
    let reached: Vec<ParamAddress> = p.journal.params().filter_map(ParamState::reach).collect();
    assert_eq!(reached, vec![by_inode.parse().unwrap()]);
    let exit = p
        .restore_originals(reached, Source::Operator, "exit", true)
        .unwrap();
    assert_eq!(exit.len(), 1, "{exit:?}");
    assert_eq!(exit[0].status, ChangeStatus::Reverted, "{exit:?}");
    assert_eq!(value(&k, &by_inode), Value::Int(4096));

    let (mut p, k, by_inode, id, _keep) = change_in_a_namespace_whose_name_is_deleted();
    let one = p.revert(id, Source::Operator, "one").unwrap();
    assert_eq!(one.status, ChangeStatus::Reverted, "{one:?}");
    assert_eq!(value(&k, &by_inode), Value::Int(4096));
    // Journaled under the same key: the parameter holds no change of KPO's now.
    let state = p.journal.params().next().unwrap();
    assert_eq!(
        (state.key.as_str(), state.holding),
        (by_inode.as_str(), None)
    );
}

/// A namespace that is gone for certain (it cannot be opened, and its inode is in use nowhere)
/// is reported by `kpo revert --all` and `kpo revert ID` as skipped with that reason: its values
/// went with it. Defect: `revert --all` said nothing at all.
#[test]
fn a_namespace_that_is_gone_is_reported_not_left_out() {
    let (mut p, k, _, id, _keep) = change_in_a_namespace_whose_name_is_deleted();
    k.0.lock().unwrap().netns_gone = true;
    let all = p.revert_all("all").unwrap();
    assert_eq!(all.len(), 1, "{all:?}");
    assert_eq!(all[0].status, ChangeStatus::Skipped, "{all:?}");
    assert!(
        all[0].detail.as_deref().unwrap().contains(NAMESPACE_GONE),
        "{all:?}"
    );
    let one = p.revert(id, Source::Operator, "one").unwrap();
    assert_eq!(one.status, ChangeStatus::Skipped, "{one:?}");
    assert!(
        one.detail.as_deref().unwrap().contains(NAMESPACE_GONE),
        "{one:?}"
    );
}

/// An intent left incomplete in a namespace named by a path, which is then gone for certain
/// (deleted, nothing in it): reconciliation settles it as failed, since no later start could
/// read it either. Defect: it stayed incomplete for good, with a warning at every command.
#[test]
fn an_interrupted_change_in_a_namespace_that_is_gone_is_settled() {
    let ns = tempfile::tempdir().unwrap();
    let name = ns.path().join("web");
    std::fs::write(&name, "").unwrap();
    let by_path = format!("net.core.somaxconn@netns:{}", name.display());
    let dir = tempfile::tempdir().unwrap();
    {
        crate::journal::store::make_private(dir.path());
        let mut j = Journal::open(dir.path(), Holder::Cli, Duration::ZERO).unwrap();
        j.record_intent(
            &by_path.parse().unwrap(),
            &Value::Int(4096),
            &Value::Int(8192),
            Source::Operator,
            "t",
            IntentKind::Change,
        )
        .unwrap();
    }
    std::fs::remove_file(&name).unwrap();
    let k = kernel(&[]);
    k.0.lock().unwrap().netns_gone = true;
    let (mut p, _) = path(dir.path(), POLICY, &k);
    let r = p.reconcile().unwrap();
    assert_eq!(r.len(), 1, "{r:?}");
    assert_eq!(r[0].status, ChangeStatus::Failed, "{r:?}");
    assert!(
        r[0].detail.as_deref().unwrap().contains(NAMESPACE_GONE),
        "{r:?}"
    );
    assert!(p.journal.incomplete().is_empty());
    // Settled for good: the next start has nothing to reconcile.
    drop(p);
    let (mut p, _) = path(dir.path(), POLICY, &k);
    assert!(p.journal.incomplete().is_empty());
    assert!(p.reconcile().unwrap().is_empty());
    // Nothing of KPO's took effect there: `kpo revert --all` has nothing to put back.
    assert!(p.revert_all("all").unwrap().is_empty());
}

/// Flips one bit in the middle of line `n` (from 1) of the journal: a damaged sector, not a
/// torn write.
pub(crate) fn damage_journal_line(dir: &std::path::Path, n: usize) {
    let file = dir.join(crate::journal::store::JOURNAL_FILE);
    let mut bytes = std::fs::read(&file).unwrap();
    let start: usize = bytes
        .split_inclusive(|&b| b == b'\n')
        .take(n - 1)
        .map(<[u8]>::len)
        .sum();
    let len = bytes[start..].iter().position(|&b| b == b'\n').unwrap();
    bytes[start + len / 2] ^= 1;
    std::fs::write(&file, bytes).unwrap();
}

/// Operator changes of SOMAX to each value in turn, from 4096.
fn changes_of_somax(dir: &std::path::Path, k: &FakeActuators, values: &[i128]) {
    let (mut p, _) = path(dir, POLICY, k);
    for v in values {
        let r = p.propose(&op(SOMAX, Value::Int(*v))).unwrap();
        assert_eq!(r.status, ChangeStatus::Applied, "{}", r.describe());
    }
}

/// The intent line of the latest change is damaged: its outcome, which repeats what the fold
/// needs of the intent, still makes its value KPO's (not the change before's, which would make
/// the value check take KPO's own newer value for someone else's and yield).
#[test]
fn an_outcome_whose_intent_line_was_damaged_still_sets_the_value() {
    let dir = tempfile::tempdir().unwrap();
    let k = kernel(&[(SOMAX, Value::Int(4096))]);
    changes_of_somax(dir.path(), &k, &[1000, 1100]);
    damage_journal_line(dir.path(), 3);
    let (mut p, _) = path(dir.path(), POLICY, &k);
    assert!(!p.journal.warnings().is_empty(), "the damage is reported");
    assert!(p.reconcile().unwrap().is_empty());
    let state = p.journal.param_state(&SOMAX.parse().unwrap()).unwrap();
    assert_eq!(state.last_applied, Some(Value::Int(1100)));
    assert_eq!(state.holding, Some(2));
    assert_eq!(state.applied.len(), 2);
    assert_eq!(state.original, Some(Value::Int(4096)));
    assert_eq!(state.unsettled, None, "its outcome settled it");
    // KPO's own value is still KPO's: its own reverts act on it.
    let all = p.revert_all("all").unwrap();
    assert_eq!(all[0].status, ChangeStatus::Reverted, "{all:?}");
    assert_eq!(value(&k, SOMAX), Value::Int(4096));
}

/// The outcome line of a change in the middle is damaged: the next change's value before is
/// the value it wrote, so it was applied, not failed, and it still counts.
#[test]
fn a_damaged_outcome_line_followed_by_a_change_from_its_value_is_applied() {
    let dir = tempfile::tempdir().unwrap();
    let k = kernel(&[(SOMAX, Value::Int(4096))]);
    changes_of_somax(dir.path(), &k, &[1000, 1100, 1200]);
    damage_journal_line(dir.path(), 2);
    let (mut p, _) = path(dir.path(), POLICY, &k);
    let r = p.reconcile().unwrap();
    assert_eq!(r.len(), 1, "{r:?}");
    assert_eq!(r[0].status, ChangeStatus::Applied, "{}", r[0].describe());
    assert!(
        r[0].detail
            .as_deref()
            .unwrap()
            .contains("outcome line was damaged"),
        "{}",
        r[0].describe()
    );
    assert_eq!(p.journal.entries()[0].status, "applied");
    let state = p.journal.param_state(&SOMAX.parse().unwrap()).unwrap();
    assert_eq!(state.applied.len(), 3, "kpo status counts it");
    assert_eq!(
        state.applied.iter().map(|(id, _)| *id).collect::<Vec<_>>(),
        [1, 2, 3]
    );
    // The kernel's value is still the latest change's.
    assert_eq!(state.last_applied, Some(Value::Int(1200)));
    assert_eq!(state.holding, Some(3));
    drop(p);
    let (p, _) = path(dir.path(), POLICY, &k);
    let state = p.journal.param_state(&SOMAX.parse().unwrap()).unwrap();
    assert_eq!(
        (state.last_applied.clone(), state.holding),
        (Some(Value::Int(1200)), Some(3))
    );
}

/// Makes line `n` (from 1) of the journal fail its checksum, its `"id":` and `"key":"` still
/// readable: `from` is replaced by `to` in it once.
fn damage_journal_text(dir: &std::path::Path, n: usize, from: &str, to: &str) {
    let file = dir.join(crate::journal::store::JOURNAL_FILE);
    let text = std::fs::read_to_string(&file).unwrap();
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    assert!(lines[n - 1].contains(from), "{}", lines[n - 1]);
    lines[n - 1] = lines[n - 1].replacen(from, to, 1);
    std::fs::write(&file, lines.join("\n") + "\n").unwrap();
}

/// KPO's latest change of SOMAX (1000 to 1100) lost both its lines to damage: the journal's last
/// value is the change before's (1000), the kernel has KPO's own 1100, and the parameter is
/// unsettled. The agent's own reverts (`on_exit`'s, the guard's) still leave the value, but do
/// not say someone else wrote it: it may be KPO's, and the operator is told how to put the
/// value back, which does.
#[test]
fn a_revert_over_a_value_a_damaged_line_may_have_lost_does_not_blame_someone_else() {
    let dir = tempfile::tempdir().unwrap();
    let k = kernel(&[(SOMAX, Value::Int(4096))]);
    changes_of_somax(dir.path(), &k, &[1000, 1100]);
    damage_journal_text(dir.path(), 3, "\"reason\"", "\"rEason\"");
    damage_journal_text(dir.path(), 4, "\"reconciled\"", "\"rEconciled\"");
    let (mut p, _) = path(dir.path(), POLICY, &k);
    let state = p.journal.param_state(&SOMAX.parse().unwrap()).unwrap();
    assert_eq!(state.last_applied, Some(Value::Int(1000)));
    assert!(state.unsettled.is_some());
    let on_exit = p
        .restore_originals(
            vec![SOMAX.parse().unwrap()],
            Source::Operator,
            "agent stopping: on_exit = revert",
            true,
        )
        .unwrap();
    assert_eq!(on_exit.len(), 1);
    assert_eq!(on_exit[0].status, ChangeStatus::Skipped);
    assert_eq!(
        on_exit[0].detail.as_deref(),
        Some(
            "the kernel has 1100, not the 1000 KPO last applied as far as the journal knows; a \
             damaged journal line may have lost a later change of KPO's own here, so 1100 may \
             be KPO's value as well as someone else's: left as it is (kpo revert 1 puts 4096 \
             back)"
        )
    );
    let guard = p.revert_own(1, Source::Guard, "guard").unwrap();
    assert_eq!(guard.status, ChangeStatus::Skipped);
    assert_eq!(
        guard.detail.as_deref(),
        Some(
            "the kernel has 1100, not the 1000 KPO last applied as far as the journal knows; a \
             damaged journal line may have lost a later change of KPO's own here, so 1100 may \
             be KPO's value as well as someone else's: left as it is (kpo revert 1 puts 4096 \
             back)"
        )
    );
    assert_eq!(value(&k, SOMAX), Value::Int(1100), "left as it is");
    let r = p.revert(1, Source::Operator, "kpo revert 1").unwrap();
    assert_eq!(r.status, ChangeStatus::Reverted, "{}", r.describe());
    assert_eq!(value(&k, SOMAX), Value::Int(4096));
}

/// Both lines of a change are lost to damage; the change after it repeats the original it knew,
/// so the original is not lost with them, whichever it was: 5000, a new original that change
/// started (the first of KPO's writes there to take effect, from a person's 5000 over a refused
/// change's 4096), or 4096 (the change started from the value KPO found, and the next one from
/// its value).
#[test]
fn a_change_lost_to_damage_does_not_lose_the_original_it_started() {
    for (person, original) in [(Some(5000), 5000), (None, 4096)] {
        let dir = tempfile::tempdir().unwrap();
        let k = kernel(&[(SOMAX, Value::Int(4096))]);
        let (mut p, _) = path(dir.path(), POLICY, &k);
        k.0.lock().unwrap().refuse.push(SOMAX.into());
        assert_eq!(
            p.propose(&op(SOMAX, Value::Int(8192))).unwrap().status,
            ChangeStatus::Failed
        );
        k.0.lock().unwrap().refuse.clear();
        if let Some(v) = person {
            k.0.lock()
                .unwrap()
                .values
                .insert(SOMAX.into(), Value::Int(v));
        }
        for v in [6000, 7000] {
            let r = p.propose(&op(SOMAX, Value::Int(v))).unwrap();
            assert_eq!(r.status, ChangeStatus::Applied, "{r:?}");
        }
        drop(p);
        damage_journal_text(dir.path(), 3, "\"reason\"", "\"rEason\"");
        damage_journal_text(dir.path(), 4, "\"reconciled\"", "\"rEconciled\"");
        let (mut p, _) = path(dir.path(), POLICY, &k);
        assert!(!p.journal.warnings().is_empty());
        let state = p.journal.param_state(&SOMAX.parse().unwrap()).unwrap();
        assert_eq!(state.original, Some(Value::Int(original)), "{state:?}");
        p.revert_all("all").unwrap();
        assert_eq!(value(&k, SOMAX), Value::Int(original));
    }
}

const RX: &str = "ethtool:eth0:rx-usecs";
const ADAPTIVE_RX: &str = "ethtool:eth0:adaptive-rx";

/// eth0 under adaptive moderation (rx-usecs 50 as DIM left it), with a policy that lets a change
/// of rx-usecs turn it off; the change path over it, on `dir`.
pub(crate) fn nic_under_dim(
    dir: &std::path::Path,
    adaptive_rx: bool,
) -> (ChangePath, crate::actuate::coalesce::FakeCoalesce) {
    let nic = crate::actuate::coalesce::FakeCoalesce::new();
    let settings = crate::actuate::coalesce::CoalesceSettings {
        rx_usecs: 50,
        adaptive_rx,
    };
    nic.add_nic("eth0", settings);
    (nic_path(dir, &nic), nic)
}

fn nic_path(dir: &std::path::Path, nic: &crate::actuate::coalesce::FakeCoalesce) -> ChangePath {
    let policy = Policy::parse(
        &format!("[params.\"{RX}\"]\nmode = \"auto\"\nallow_adaptive_off = true\n"),
        "test.toml",
    )
    .unwrap();
    crate::journal::store::make_private(dir);
    let journal = Journal::open(dir, Holder::Cli, Duration::ZERO).unwrap();
    ChangePath::new(policy, journal, Box::new(Nic(nic.clone())))
}

/// Adaptive moderation turned off so that rx-usecs could be set, and the journal cannot record
/// the value's change: the switch goes back on at once, as when the value does not take.
#[test]
fn a_switch_turned_off_for_a_value_whose_intent_cannot_be_journaled_goes_back_on() {
    let dir = tempfile::tempdir().unwrap();
    let (mut p, nic) = nic_under_dim(dir.path(), true);
    // The switch's intent and outcome pass; the value's intent fails.
    p.journal.fail_an_append(2, 0);
    assert!(p.propose(&op(RX, Value::Int(20))).is_err());
    let now = nic.settings("eth0").unwrap();
    assert_eq!((now.rx_usecs, now.adaptive_rx), (50, true));
    let entries = p.journal.entries();
    let last = entries.last().unwrap();
    assert_eq!(
        (
            last.address.to_string(),
            last.kind.as_str(),
            last.status.as_str()
        ),
        (ADAPTIVE_RX.to_string(), "revert", "reverted"),
        "{entries:#?}"
    );
}

/// The agent stopped between turning adaptive moderation off for rx-usecs and setting the value
/// (killed before the value's intent, or after it and before the write): the next start settles
/// the value's intent as not applied and turns the switch back on, journaled. Not a switch a value
/// set after it relies on.
#[test]
fn a_switch_left_off_by_a_stop_before_its_value_was_set_goes_back_on_at_the_next_start() {
    for value_intent in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let (p, nic) = nic_under_dim(dir.path(), false);
        let mut j = p.journal;
        let switch = j
            .record_intent_making_way(
                &ADAPTIVE_RX.parse().unwrap(),
                &Value::Word("on".into()),
                &Value::Word("off".into()),
                Source::Rules,
                "turned off so that ... (allow_adaptive_off): t",
                IntentKind::Change,
                Some(RX.into()),
                None,
                None,
                false,
            )
            .unwrap();
        j.record_outcome(
            switch,
            Outcome::Applied {
                read_back: Value::Word("off".into()),
                reconciled: false,
                why: None,
            },
        )
        .unwrap();
        if value_intent {
            j.record_intent(
                &RX.parse().unwrap(),
                &Value::Int(50),
                &Value::Int(20),
                Source::Rules,
                "t",
                IntentKind::Change,
            )
            .unwrap();
        }
        drop(j);
        let mut p = nic_path(dir.path(), &nic);
        let reports = p.reconcile().unwrap();
        let seen: Vec<(String, ChangeStatus)> = reports
            .iter()
            .map(|r| (r.address.to_string(), r.status))
            .collect();
        let mut want = vec![(ADAPTIVE_RX.to_string(), ChangeStatus::Reverted)];
        if value_intent {
            want.insert(0, (RX.to_string(), ChangeStatus::Failed));
        }
        assert_eq!(seen, want, "{reports:#?}");
        let detail = reports.last().unwrap().detail.clone().unwrap();
        assert!(
            detail.contains(&format!(
                "{RX} was not set after {ADAPTIVE_RX} was turned off"
            )),
            "{detail}"
        );
        let now = nic.settings("eth0").unwrap();
        assert_eq!((now.rx_usecs, now.adaptive_rx), (50, true));
        // Once: the switch is no longer KPO's to turn on.
        drop(p);
        let mut p = nic_path(dir.path(), &nic);
        assert!(p.reconcile().unwrap().is_empty());
    }
    // A value set after it relies on the switch being off: it stays off.
    let dir = tempfile::tempdir().unwrap();
    let (mut p, nic) = nic_under_dim(dir.path(), true);
    let r = p.propose(&op(RX, Value::Int(20))).unwrap();
    assert_eq!(r.status, ChangeStatus::Applied, "{r:?}");
    let r = p
        .revert(r.journal_id.unwrap(), Source::Operator, "t")
        .unwrap();
    assert_eq!(r.status, ChangeStatus::Reverted, "{r:?}");
    drop(p);
    let mut p = nic_path(dir.path(), &nic);
    assert!(p.reconcile().unwrap().is_empty());
    let now = nic.settings("eth0").unwrap();
    assert_eq!((now.rx_usecs, now.adaptive_rx), (50, false));
}

/// The journal of an agent that stopped right after turning eth0's adaptive-rx off for rx-usecs
/// (and, with `value_intent`, after the value's intent, before its write), each intent naming
/// the device eth0 was then.
fn switch_left_off(
    dir: &std::path::Path,
    nic: &crate::actuate::coalesce::FakeCoalesce,
    value_intent: bool,
) {
    use crate::actuate::coalesce::{DeviceSeen, FakeCoalesce};
    let device = Some(DeviceSeen {
        ifindex: nic.index_of("eth0").unwrap(),
        netns_cookie: FakeCoalesce::NETNS_COOKIE,
    });
    let mut j = nic_path(dir, nic).journal;
    let switch = j
        .record_intent_making_way(
            &ADAPTIVE_RX.parse().unwrap(),
            &Value::Word("on".into()),
            &Value::Word("off".into()),
            Source::Rules,
            "turned off so that ... (allow_adaptive_off): t",
            IntentKind::Change,
            Some(RX.into()),
            None,
            device,
            false,
        )
        .unwrap();
    j.record_outcome(
        switch,
        Outcome::Applied {
            read_back: Value::Word("off".into()),
            reconciled: false,
            why: None,
        },
    )
    .unwrap();
    if value_intent {
        j.record_intent_making_way(
            &RX.parse().unwrap(),
            &Value::Int(50),
            &Value::Int(20),
            Source::Rules,
            "t",
            IntentKind::Change,
            None,
            None,
            device,
            false,
        )
        .unwrap();
    }
}

fn statuses(reports: &[ChangeReport]) -> Vec<(String, ChangeStatus)> {
    reports
        .iter()
        .map(|r| (r.address.to_string(), r.status))
        .collect()
}

fn gone_records(p: &ChangePath) -> Vec<String> {
    p.journal
        .records()
        .iter()
        .filter_map(|r| match r {
            crate::journal::Record::Gone { key, .. } => Some(key.clone()),
            _ => None,
        })
        .collect()
}

/// Every change of a NIC's parameter journals the device its name named: its index and its
/// namespace's cookie (the switch turned off, and the value).
#[test]
fn a_nic_change_journals_the_device_it_was_made_on() {
    let dir = tempfile::tempdir().unwrap();
    let (mut p, nic) = nic_under_dim(dir.path(), true);
    let r = p.propose(&op(RX, Value::Int(20))).unwrap();
    assert_eq!(r.status, ChangeStatus::Applied, "{r:?}");
    let want = Some(crate::actuate::coalesce::DeviceSeen {
        ifindex: nic.index_of("eth0").unwrap(),
        netns_cookie: crate::actuate::coalesce::FakeCoalesce::NETNS_COOKIE,
    });
    drop(p);
    // As read back from the file.
    let p = nic_path(dir.path(), &nic);
    let devices: Vec<(String, Option<crate::actuate::coalesce::DeviceSeen>)> = p
        .journal
        .records()
        .iter()
        .filter_map(|r| match r {
            crate::journal::Record::Intent(i) => Some((i.address.to_string(), i.device)),
            _ => None,
        })
        .collect();
    assert_eq!(
        devices,
        vec![(ADAPTIVE_RX.to_string(), want), (RX.to_string(), want)]
    );
}

/// A switch left off by a stop on a NIC that is no longer there. Only absent (unplugged, its
/// driver unloaded, a veth deleted, or moved to another network namespace, which keeps its
/// settings): not known, so at every start a failure, nothing written and nothing forgotten (an
/// interrupted value's change there is left for the next start). Once a new device has its name
/// (another index), the next start settles it once, journaled as gone, and writes nothing (the
/// device that has the name now keeps its own settings); later starts say nothing of it. The
/// interrupted value's change is settled as failed, for the same reason.
#[test]
fn a_switch_left_off_on_a_device_that_is_gone_is_settled_once() {
    for value_intent in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let (_, nic) = nic_under_dim(dir.path(), false);
        switch_left_off(dir.path(), &nic, value_intent);
        let old_index = nic.index_of("eth0").unwrap();
        nic.remove_nic("eth0");
        for _ in 0..2 {
            let mut p = nic_path(dir.path(), &nic);
            let reports = p.reconcile().unwrap();
            // The value's interrupted change left incomplete, for the next start (the switch
            // waits on it).
            let want = if value_intent {
                vec![(RX.to_string(), ChangeStatus::Skipped)]
            } else {
                vec![(ADAPTIVE_RX.to_string(), ChangeStatus::Failed)]
            };
            assert_eq!(statuses(&reports), want, "{reports:#?}");
            for r in &reports {
                let detail = r.detail.as_deref().unwrap();
                assert!(
                    detail.contains(&format!(
                        "no device has the name eth0 or the index {old_index}"
                    )) && detail.contains("moved to another network namespace"),
                    "{detail}"
                );
            }
            assert!(gone_records(&p).is_empty());
            assert_eq!(nic.absent_names_asked(), 0, "no module load asked for");
            assert_eq!(p.journal.incomplete().len(), usize::from(value_intent));
            assert!(p
                .journal
                .param_by_key(&target_key(&ADAPTIVE_RX.parse().unwrap()))
                .unwrap()
                .holding
                .is_some());
        }
        // The name again, another device: adaptive-rx off, as its driver starts it.
        nic.add_nic(
            "eth0",
            crate::actuate::coalesce::CoalesceSettings {
                rx_usecs: 8,
                adaptive_rx: false,
            },
        );
        assert_ne!(nic.index_of("eth0"), Some(old_index));
        let mut p = nic_path(dir.path(), &nic);
        let reports = p.reconcile().unwrap();
        let mut want = vec![(ADAPTIVE_RX.to_string(), ChangeStatus::Skipped)];
        if value_intent {
            want.insert(0, (RX.to_string(), ChangeStatus::Failed));
        }
        assert_eq!(statuses(&reports), want, "{reports:#?}");
        for r in &reports {
            let detail = r.detail.as_deref().unwrap();
            assert!(
                detail.contains(&format!(
                    "the network device eth0 (index {old_index}) is gone from under its name"
                )) && detail.contains("not the new one's"),
                "{detail}"
            );
        }
        let switch = reports.last().unwrap().detail.clone().unwrap();
        assert!(
            switch.contains(&format!(
                "{RX} was not set after {ADAPTIVE_RX} was turned off"
            )) && switch.contains("nothing to turn back on"),
            "{switch}"
        );
        let mut gone = vec![ADAPTIVE_RX.to_string()];
        if value_intent {
            gone.insert(0, RX.to_string());
        }
        assert_eq!(gone_records(&p), gone);
        assert!(p.journal.incomplete().is_empty());
        assert!(
            nic.history().is_empty(),
            "nothing written: {:?}",
            nic.history()
        );
        // Once: later starts (and offline commands) say nothing of it.
        drop(p);
        let mut p = nic_path(dir.path(), &nic);
        assert!(p.reconcile().unwrap().is_empty());
        assert!(nic.history().is_empty(), "{:?}", nic.history());
        assert!(!nic.settings("eth0").unwrap().adaptive_rx);
    }
}

/// An interrupted value's change on a NIC whose name names a new device now: the `gone` record
/// is journaled before the change's outcome, so that a stop between the two (here, an append
/// that fails) leaves the intent incomplete, and the next start journals both. Defect: the
/// outcome first, then no `gone` ever, and KPO kept holding the old device's parameter.
#[test]
fn a_stop_between_gone_and_the_outcome_loses_neither() {
    let dir = tempfile::tempdir().unwrap();
    let (_, nic) = nic_under_dim(dir.path(), false);
    switch_left_off(dir.path(), &nic, true);
    nic.remove_nic("eth0").add_nic(
        "eth0",
        crate::actuate::coalesce::CoalesceSettings {
            rx_usecs: 8,
            adaptive_rx: false,
        },
    );
    let mut p = nic_path(dir.path(), &nic);
    // The first append goes through, the second fails (a full disk).
    p.journal.fail_an_append(1, 10);
    assert!(p.reconcile().is_err());
    drop(p);
    let mut p = nic_path(dir.path(), &nic);
    let reports = p.reconcile().unwrap();
    assert_eq!(
        statuses(&reports),
        vec![
            (RX.to_string(), ChangeStatus::Failed),
            (ADAPTIVE_RX.to_string(), ChangeStatus::Skipped)
        ],
        "{reports:#?}"
    );
    assert!(
        gone_records(&p).contains(&RX.to_string()),
        "{:?}",
        gone_records(&p)
    );
    assert!(p.journal.incomplete().is_empty());
    assert!(nic.history().is_empty(), "{:?}", nic.history());
}

/// A NIC moved to another network namespace (`ip link set eth0 netns pod`, as an SR-IOV or
/// host-device CNI does) with a switch KPO left off: not gone (it keeps its settings, the switch
/// stays off), so KPO forgets nothing and writes nothing while it is away; back with its index,
/// the next start turns the switch back on.
#[test]
fn a_nic_moved_out_and_back_gets_its_switch_back_on() {
    let dir = tempfile::tempdir().unwrap();
    let (_, nic) = nic_under_dim(dir.path(), false);
    switch_left_off(dir.path(), &nic, false);
    nic.move_nic_out("eth0");
    let mut p = nic_path(dir.path(), &nic);
    let reports = p.reconcile().unwrap();
    assert_eq!(
        statuses(&reports),
        vec![(ADAPTIVE_RX.to_string(), ChangeStatus::Failed)],
        "{reports:#?}"
    );
    assert!(gone_records(&p).is_empty());
    assert!(nic.history().is_empty(), "{:?}", nic.history());
    assert!(!nic.settings_away("eth0").unwrap().adaptive_rx);
    drop(p);
    nic.move_nic_back("eth0");
    let mut p = nic_path(dir.path(), &nic);
    let reports = p.reconcile().unwrap();
    assert_eq!(
        statuses(&reports),
        vec![(ADAPTIVE_RX.to_string(), ChangeStatus::Reverted)],
        "{reports:#?}"
    );
    assert!(nic.settings("eth0").unwrap().adaptive_rx);
    assert!(gone_records(&p).is_empty());
}

/// A switch left off by a stop on a NIC that is not gone for certain stays a failure, not
/// written, and is tried again at the next start: renamed (its index under another name), in
/// another network namespace than the one KPO acts in now, or the kernel could not be asked (a
/// transient error), after which the next start turns it back on, or settles it if the device
/// is gone. A write that fails (the device being reset) is a failure too.
#[test]
fn a_switch_left_off_on_a_device_not_known_gone_stays_a_failure() {
    use crate::actuate::coalesce::FakeCoalesce;
    let start = |dir: &std::path::Path, nic: &FakeCoalesce| {
        let mut p = nic_path(dir, nic);
        let reports = p.reconcile().unwrap();
        (statuses(&reports), reports, gone_records(&p))
    };
    let failed = vec![(ADAPTIVE_RX.to_string(), ChangeStatus::Failed)];
    let reverted = vec![(ADAPTIVE_RX.to_string(), ChangeStatus::Reverted)];
    let skipped = vec![(ADAPTIVE_RX.to_string(), ChangeStatus::Skipped)];

    // Renamed: not settled, not written under either name, at every start.
    let dir = tempfile::tempdir().unwrap();
    let (_, nic) = nic_under_dim(dir.path(), false);
    switch_left_off(dir.path(), &nic, false);
    nic.rename_nic("eth0", "lan0");
    for _ in 0..2 {
        let (seen, reports, gone) = start(dir.path(), &nic);
        assert_eq!(seen, failed, "{reports:#?}");
        let detail = reports[0].detail.as_deref().unwrap();
        assert!(
            detail.contains("is named lan0 now: renamed, not gone")
                && detail.contains("tried again at the next start"),
            "{detail}"
        );
        assert!(gone.is_empty());
    }
    assert!(nic.history().is_empty());

    // Another network namespace than the one KPO turned it off in.
    let dir = tempfile::tempdir().unwrap();
    let (_, nic) = nic_under_dim(dir.path(), false);
    switch_left_off(dir.path(), &nic, false);
    nic.remove_nic("eth0");
    nic.set_netns_cookie(Some(FakeCoalesce::NETNS_COOKIE + 1));
    let (seen, reports, gone) = start(dir.path(), &nic);
    assert_eq!(seen, failed, "{reports:#?}");
    assert!(
        reports[0]
            .detail
            .as_deref()
            .unwrap()
            .contains("in another network namespace"),
        "{reports:#?}"
    );
    assert!(gone.is_empty());
    // Back in it, the device is absent still: not known either; once a new device has the
    // name, gone.
    nic.set_netns_cookie(Some(FakeCoalesce::NETNS_COOKIE));
    assert_eq!(start(dir.path(), &nic).0, failed);
    nic.add_nic("eth0", FRESH);
    assert_eq!(start(dir.path(), &nic).0, skipped);

    // A transient error asking the kernel, with a new device under the name: failed, then
    // settled.
    let dir = tempfile::tempdir().unwrap();
    let (_, nic) = nic_under_dim(dir.path(), false);
    switch_left_off(dir.path(), &nic, false);
    nic.remove_nic("eth0").add_nic("eth0", FRESH);
    nic.fail_reads(1);
    let (seen, reports, gone) = start(dir.path(), &nic);
    assert_eq!(seen, failed, "{reports:#?}");
    assert!(gone.is_empty());
    let (seen, reports, gone) = start(dir.path(), &nic);
    assert_eq!(seen, skipped, "{reports:#?}");
    assert_eq!(gone, vec![ADAPTIVE_RX.to_string()]);
    assert!(start(dir.path(), &nic).0.is_empty());

    // A transient error, with the device there: failed, then turned back on.
    for (reads, sets) in [(1, 0), (0, 1)] {
        let dir = tempfile::tempdir().unwrap();
        let (_, nic) = nic_under_dim(dir.path(), false);
        switch_left_off(dir.path(), &nic, false);
        nic.fail_reads(reads);
        if sets > 0 {
            nic.fail_sets_after(0, sets);
        }
        let (seen, reports, gone) = start(dir.path(), &nic);
        assert_eq!(seen, failed, "{reports:#?}");
        assert!(gone.is_empty());
        assert!(!nic.settings("eth0").unwrap().adaptive_rx);
        let (seen, reports, _) = start(dir.path(), &nic);
        assert_eq!(seen, reverted, "{reports:#?}");
        assert!(nic.settings("eth0").unwrap().adaptive_rx);
    }
}

/// The three ways KPO puts a NIC's value back by the NIC's name: `kpo revert ID`, `kpo revert
/// --all`, and `on_exit = "revert"` (only over KPO's own value).
#[derive(Debug, Clone, Copy)]
enum PutBack {
    ById,
    All,
    OnExit,
}

impl PutBack {
    const EACH: [PutBack; 3] = [PutBack::ById, PutBack::All, PutBack::OnExit];

    /// Puts back what `p` holds of eth0 (`id`: the rx-usecs change), the reports in order.
    fn run(self, p: &mut ChangePath, id: u64) -> Vec<ChangeReport> {
        match self {
            PutBack::ById => vec![p.revert(id, Source::Operator, "t").unwrap()],
            PutBack::All => p.revert_all("t").unwrap(),
            PutBack::OnExit => {
                let held: Vec<ParamAddress> = p
                    .journal
                    .params()
                    .filter(|s| s.last_applied.is_some())
                    .filter_map(ParamState::reach)
                    .collect();
                p.restore_originals(held, Source::Operator, "t", true)
                    .unwrap()
            }
        }
    }
}

/// eth0's rx-usecs set to 20 from 50 (with adaptive-rx, on before, turned off for it where
/// `adaptive_rx`): the change path and the value's change.
pub(crate) fn nic_changed(
    dir: &std::path::Path,
    adaptive_rx: bool,
) -> (ChangePath, crate::actuate::coalesce::FakeCoalesce, u64) {
    let (mut p, nic) = nic_under_dim(dir, adaptive_rx);
    let r = p.propose(&op(RX, Value::Int(20))).unwrap();
    assert_eq!(r.status, ChangeStatus::Applied, "{r:?}");
    let id = r.journal_id.unwrap();
    (p, nic, id)
}

/// A revert of a NIC's value whose NIC is no longer there writes nothing. Only absent
/// (unplugged, its driver unloaded, a veth deleted, or moved to another network namespace, which
/// keeps its settings): not known, so `failed`, nothing forgotten, and every later revert tries
/// again; moved back with its index, its value is put back. Once a new device has its name, the
/// old one is gone from under it: `failed` (nothing was put back: the optimizer must not take it
/// for done), says why, and settles the parameter in the journal once (a `gone` record), the
/// switch turned off for the value too: no later revert, `revert --all` or `on_exit` tries
/// again, nor reports it again.
#[test]
fn a_revert_on_a_device_that_is_gone_writes_nothing_and_settles_it() {
    use crate::actuate::coalesce::CoalesceSettings;
    for way in PutBack::EACH {
        for (adaptive_rx, moved) in [(false, false), (true, false), (false, true), (true, true)] {
            let dir = tempfile::tempdir().unwrap();
            let (mut p, nic, id) = nic_changed(dir.path(), adaptive_rx);
            let index = nic.index_of("eth0").unwrap();
            let written = nic.history().len();
            if moved {
                nic.move_nic_out("eth0");
            } else {
                nic.remove_nic("eth0");
            }
            let mut want = vec![(RX.to_string(), ChangeStatus::Failed)];
            let mut gone = vec![RX.to_string()];
            if adaptive_rx && !matches!(way, PutBack::ById) {
                want.push((ADAPTIVE_RX.to_string(), ChangeStatus::Failed));
                gone.push(ADAPTIVE_RX.to_string());
            }
            // Absent: not known, at every revert.
            for _ in 0..2 {
                let reports = way.run(&mut p, id);
                assert_eq!(statuses(&reports), want, "{way:?}: {reports:#?}");
                for r in &reports {
                    let detail = r.detail.as_deref().unwrap();
                    assert!(
                        detail.contains("not put back")
                            && detail.contains(&format!(
                                "no device has the name eth0 or the index {index}"
                            )),
                        "{way:?}: {detail}"
                    );
                }
                assert!(gone_records(&p).is_empty(), "{way:?}");
                assert_eq!(nic.history().len(), written, "{way:?}: nothing written");
                let state = p.journal.param_state(&RX.parse().unwrap()).unwrap();
                assert_eq!(state.original, Some(Value::Int(50)), "{way:?}");
            }
            if moved {
                // It kept KPO's value where it was; back with its index, it is put back.
                assert_eq!(nic.settings_away("eth0").unwrap().rx_usecs, 20);
                nic.move_nic_back("eth0");
                let reports = way.run(&mut p, id);
                assert!(
                    reports.iter().all(|r| r.status == ChangeStatus::Reverted),
                    "{way:?}: {reports:#?}"
                );
                assert_eq!(nic.settings("eth0").unwrap().rx_usecs, 50, "{way:?}");
                assert!(gone_records(&p).is_empty(), "{way:?}");
                continue;
            }
            // A new device under the name: the old one is gone from under it.
            nic.add_nic(
                "eth0",
                CoalesceSettings {
                    rx_usecs: 8,
                    adaptive_rx: false,
                },
            );
            let reports = way.run(&mut p, id);
            assert_eq!(statuses(&reports), want, "{way:?}: {reports:#?}");
            for r in &reports {
                let detail = r.detail.as_deref().unwrap();
                assert!(
                    detail.contains(&format!(
                        "the network device eth0 (index {index}) is gone from under its name"
                    )) && detail.contains("not the new one's")
                        && detail.contains("nothing put back"),
                    "{way:?}: {detail}"
                );
            }
            assert_eq!(gone_records(&p), gone, "{way:?}");
            assert_eq!(nic.history().len(), written, "{way:?}: nothing written");
            // Settled: what KPO held there is forgotten, and nothing is tried again (`kpo
            // revert --all` settles the switch a revert by id leaves).
            assert!(p
                .journal
                .param_state(&RX.parse().unwrap())
                .unwrap()
                .original
                .is_none());
            let rest = p.revert_all("t").unwrap();
            assert!(
                rest.iter().all(|r| r.address.to_string() != RX),
                "{rest:#?}"
            );
            assert!(p.revert_all("t").unwrap().is_empty(), "{way:?}");
            let settled = gone_records(&p);
            let again = p.revert(id, Source::Operator, "t").unwrap();
            assert_eq!(again.status, ChangeStatus::Failed, "{again:?}");
            let own = p.revert_own(id, Source::Guard, "t").unwrap();
            assert_eq!(own.status, ChangeStatus::Skipped, "{own:?}");
            assert_eq!(gone_records(&p), settled, "{way:?}: settled once");
            assert_eq!(nic.history().len(), written, "{way:?}");
            // As read back from the file.
            drop(p);
            let p = nic_path(dir.path(), &nic);
            assert_eq!(gone_records(&p), settled);
        }
    }
}

/// A new device that has taken the name of the one KPO changed (a veth made again, a NIC
/// replaced) is not KPO's: no revert writes the old device's value into it, and its settings
/// stay as its driver made them. The old device's change is settled as gone.
#[test]
fn a_revert_does_not_write_into_a_new_device_under_the_same_name() {
    use crate::actuate::coalesce::CoalesceSettings;
    for way in PutBack::EACH {
        for adaptive_rx in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let (mut p, nic, id) = nic_changed(dir.path(), adaptive_rx);
            let index = nic.index_of("eth0").unwrap();
            nic.remove_nic("eth0");
            let fresh = CoalesceSettings {
                rx_usecs: 8,
                adaptive_rx: false,
            };
            nic.add_nic("eth0", fresh);
            let new_index = nic.index_of("eth0").unwrap();
            assert_ne!(new_index, index);
            let written = nic.history().len();
            let reports = way.run(&mut p, id);
            assert!(!reports.is_empty(), "{way:?}");
            for r in &reports {
                assert_eq!(r.status, ChangeStatus::Failed, "{way:?}: {r:?}");
                let detail = r.detail.as_deref().unwrap();
                assert!(
                    detail.contains("eth0 names another device now")
                        && detail.contains("nothing put back"),
                    "{way:?}: {detail}"
                );
            }
            assert_eq!(nic.settings("eth0"), Some(fresh), "{way:?}");
            assert_eq!(nic.history().len(), written, "{way:?}: nothing written");
            assert!(gone_records(&p).contains(&RX.to_string()), "{way:?}");
            // Nor later: what the journal held of the old device is settled.
            for r in p.revert_all("t").unwrap() {
                assert_eq!(r.status, ChangeStatus::Failed, "{way:?}: {r:?}");
            }
            assert!(p.revert_all("t").unwrap().is_empty(), "{way:?}");
            assert_eq!(nic.settings("eth0"), Some(fresh), "{way:?}");
            assert_eq!(nic.history().len(), written, "{way:?}");
        }
    }
}

/// A renamed NIC (`ip link set eth0 name lan0`) is not gone: a revert writes to neither name,
/// says why, settles nothing, and is `failed`, tried again as a revert whose write fails; once
/// the name names the device again, the revert puts the value back. A lookup that fails
/// (transient) and another network namespace are the same.
#[test]
fn a_revert_on_a_renamed_device_writes_nothing_and_is_tried_again() {
    use crate::actuate::coalesce::FakeCoalesce;
    for way in PutBack::EACH {
        let dir = tempfile::tempdir().unwrap();
        let (mut p, nic, id) = nic_changed(dir.path(), false);
        let written = nic.history().len();
        nic.rename_nic("eth0", "lan0");
        let reports = way.run(&mut p, id);
        assert_eq!(
            statuses(&reports),
            vec![(RX.to_string(), ChangeStatus::Failed)],
            "{way:?}: {reports:#?}"
        );
        let detail = reports[0].detail.as_deref().unwrap();
        assert!(
            detail.contains("not put back")
                && detail.contains("is named lan0 now: renamed, not gone"),
            "{way:?}: {detail}"
        );
        assert_eq!(nic.history().len(), written, "{way:?}");
        assert_eq!(nic.settings("lan0").unwrap().rx_usecs, 20);

        // Another namespace, then a lookup that fails: not written either.
        nic.rename_nic("lan0", "eth0");
        nic.set_netns_cookie(Some(FakeCoalesce::NETNS_COOKIE + 1));
        let r = &way.run(&mut p, id)[0];
        assert_eq!(r.status, ChangeStatus::Failed, "{way:?}: {r:?}");
        assert!(
            r.detail
                .as_deref()
                .unwrap()
                .contains("in another network namespace"),
            "{r:?}"
        );
        nic.set_netns_cookie(Some(FakeCoalesce::NETNS_COOKIE));
        nic.fail_reads(1);
        let r = &way.run(&mut p, id)[0];
        assert_eq!(r.status, ChangeStatus::Failed, "{way:?}: {r:?}");
        assert_eq!(nic.history().len(), written, "{way:?}");
        assert!(gone_records(&p).is_empty(), "{way:?}");

        // The device under its name again: put back.
        let r = &way.run(&mut p, id)[0];
        assert_eq!(r.status, ChangeStatus::Reverted, "{way:?}: {r:?}");
        assert_eq!(nic.settings("eth0").unwrap().rx_usecs, 50);
    }
}

/// A change of a NIC whose name names a new device since KPO's last change there (before any
/// value check settled the old one): the old device is settled first, so the change's original
/// is the new device's value, which `kpo revert --all` puts back (not the old device's).
#[test]
fn a_change_on_a_new_device_under_the_name_starts_a_new_original() {
    use crate::actuate::coalesce::CoalesceSettings;
    let dir = tempfile::tempdir().unwrap();
    let (mut p, nic, _) = nic_changed(dir.path(), false);
    let fresh = CoalesceSettings {
        rx_usecs: 8,
        adaptive_rx: false,
    };
    nic.remove_nic("eth0").add_nic("eth0", fresh);
    let r = p.propose(&op(RX, Value::Int(30))).unwrap();
    assert_eq!(r.status, ChangeStatus::Applied, "{r:?}");
    assert_eq!(gone_records(&p), vec![RX.to_string()]);
    let state = p.journal.param_state(&RX.parse().unwrap()).unwrap();
    assert_eq!(state.original, Some(Value::Int(8)));
    assert_eq!(
        statuses(&p.revert_all("t").unwrap()),
        vec![(RX.to_string(), ChangeStatus::Reverted)]
    );
    assert_eq!(nic.settings("eth0"), Some(fresh));
}

/// `kpo revert --all` over two NICs' values, one NIC absent: the other's value is put back, the
/// absent one's is a failure tried again at every pass (it may be in another namespace), until a
/// new device has its name: then it is settled, once.
#[test]
fn revert_all_puts_back_the_nics_that_are_there() {
    use crate::actuate::coalesce::CoalesceSettings;
    const RX1: &str = "ethtool:eth1:rx-usecs";
    let dir = tempfile::tempdir().unwrap();
    let nic = crate::actuate::coalesce::FakeCoalesce::new();
    let settings = CoalesceSettings {
        rx_usecs: 50,
        adaptive_rx: false,
    };
    nic.add_nic("eth0", settings).add_nic("eth1", settings);
    let policy = Policy::parse(
        &format!("[params.\"{RX}\"]\nmode = \"auto\"\n[params.\"{RX1}\"]\nmode = \"auto\"\n"),
        "test.toml",
    )
    .unwrap();
    crate::journal::store::make_private(dir.path());
    let journal = Journal::open(dir.path(), Holder::Cli, Duration::ZERO).unwrap();
    let mut p = ChangePath::new(policy, journal, Box::new(Nic(nic.clone())));
    for a in [RX, RX1] {
        let r = p.propose(&op(a, Value::Int(20))).unwrap();
        assert_eq!(r.status, ChangeStatus::Applied, "{r:?}");
    }
    nic.remove_nic("eth0");
    let mut reports = statuses(&p.revert_all("t").unwrap());
    reports.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        reports,
        vec![
            (RX.to_string(), ChangeStatus::Failed),
            (RX1.to_string(), ChangeStatus::Reverted),
        ]
    );
    assert_eq!(nic.settings("eth1").unwrap().rx_usecs, 50);
    assert!(gone_records(&p).is_empty());
    let mut again = statuses(&p.revert_all("t").unwrap());
    again.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        again,
        vec![
            (RX.to_string(), ChangeStatus::Failed),
            (RX1.to_string(), ChangeStatus::Unchanged),
        ]
    );
    // A new device under eth0's name: settled, nothing written to it.
    nic.add_nic("eth0", settings);
    let written = nic.history().len();
    let mut reports = statuses(&p.revert_all("t").unwrap());
    reports.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        reports,
        vec![
            (RX.to_string(), ChangeStatus::Failed),
            (RX1.to_string(), ChangeStatus::Unchanged),
        ]
    );
    assert_eq!(gone_records(&p), vec![RX.to_string()]);
    assert_eq!(nic.history().len(), written);
    // Settled once: a further pass has nothing of eth0's.
    let again = statuses(&p.revert_all("t").unwrap());
    assert_eq!(again, vec![(RX1.to_string(), ChangeStatus::Unchanged)]);
    assert_eq!(gone_records(&p), vec![RX.to_string()]);
}

/// A value set with the switch off whose lines were both lost to damage may still be in the
/// kernel: the switch stays off at the next start (unknown counts as relied on).
#[test]
fn a_switch_stays_off_when_a_damaged_line_may_have_held_a_value_set_under_it() {
    let dir = tempfile::tempdir().unwrap();
    let (mut p, nic) = nic_under_dim(dir.path(), true);
    let r = p.propose(&op(RX, Value::Int(20))).unwrap();
    assert_eq!(r.status, ChangeStatus::Applied, "{r:?}");
    let all = p.revert_all("all").unwrap();
    assert!(
        all.iter().all(|r| r.status == ChangeStatus::Reverted),
        "{all:#?}"
    );
    assert!(nic.settings("eth0").unwrap().adaptive_rx);
    let r = p.propose(&op(RX, Value::Int(30))).unwrap();
    assert_eq!(r.status, ChangeStatus::Applied, "{r:?}");
    drop(p);
    let lines = std::fs::read_to_string(dir.path().join(crate::journal::store::JOURNAL_FILE))
        .unwrap()
        .lines()
        .count();
    // The value's intent and outcome, the journal's last two lines.
    damage_journal_text(dir.path(), lines - 1, "\"reason\"", "\"rEason\"");
    damage_journal_text(dir.path(), lines, "\"reconciled\"", "\"rEconciled\"");
    let mut p = nic_path(dir.path(), &nic);
    let reports = p.reconcile().unwrap();
    assert!(
        reports.iter().all(|r| r.address.to_string() != ADAPTIVE_RX),
        "{reports:#?}"
    );
    let now = nic.settings("eth0").unwrap();
    assert_eq!((now.rx_usecs, now.adaptive_rx), (30, false));
}

/// A revert whose outcome the journal could not record is left done; the next change of the
/// parameter starts from the value it put back. At the next start the revert is reconciled as
/// done without reading the kernel, and its detail says the outcome was not recorded: no journal
/// line was damaged, and an operator must not be sent looking for one.
#[test]
fn a_revert_whose_outcome_was_not_recorded_is_not_said_to_have_a_damaged_line() {
    let dir = tempfile::tempdir().unwrap();
    let k = kernel(&[(SOMAX, Value::Int(4096))]);
    let (mut p, _) = path(dir.path(), POLICY, &k);
    let id = p
        .propose(&op(SOMAX, Value::Int(8192)))
        .unwrap()
        .journal_id
        .unwrap();
    // The revert's intent fails: nothing written, the journal's error.
    p.journal.fail_an_append(0, 0);
    let e = p.revert(id, Source::Operator, "t").unwrap_err();
    assert!(e.to_string().starts_with("journal: "), "{e}");
    assert_eq!(value(&k, SOMAX), Value::Int(8192), "not written");
    // The revert's intent passes; its outcome does not. Done, and said so (s50 storyW W1: the
    // journal's bare error read as "not done").
    p.journal.fail_an_append(1, 0);
    let revert = p.journal.last_intent_id().unwrap() + 1;
    let r = p.revert(id, Source::Operator, "t").unwrap();
    assert_eq!(
        (r.status, r.journal_id, r.read_back.clone()),
        (ChangeStatus::Reverted, Some(revert), Some(Value::Int(4096)))
    );
    let detail = r.detail.unwrap();
    assert!(
        detail.starts_with("put back; the journal could not record it (journal: "),
        "{detail}"
    );
    assert_eq!(
        p.journal.intent(revert).unwrap().kind,
        IntentKind::Revert { of: Some(id) }
    );
    assert_eq!(value(&k, SOMAX), Value::Int(4096), "left done");
    let r = p.propose(&op(SOMAX, Value::Int(6000))).unwrap();
    assert_eq!(r.status, ChangeStatus::Applied, "{r:?}");
    drop(p);
    let (mut p, _) = path(dir.path(), POLICY, &k);
    let reports = p.reconcile().unwrap();
    assert_eq!(reports.len(), 1, "{reports:#?}");
    assert_eq!(reports[0].status, ChangeStatus::Reverted);
    let entry = p
        .journal
        .entries()
        .into_iter()
        .find(|e| e.id == revert)
        .unwrap();
    assert_eq!(entry.status, "reverted");
    assert_eq!(
        entry.detail.as_deref(),
        Some("its outcome was not recorded; the next change found its value (4096) in place")
    );
}

/// A new device's settings, as its driver starts it.
const FRESH: crate::actuate::coalesce::CoalesceSettings =
    crate::actuate::coalesce::CoalesceSettings {
        rx_usecs: 8,
        adaptive_rx: false,
    };

/// An interrupted change on a NIC that was absent at the next start (left for later), then a
/// change on a new device under the name that found the interrupted change's value there: the
/// new device's value says nothing of the old device's write, so the interrupted change is a
/// failure, not "found in place by the next change". Defect: journaled `applied`, and counted
/// in the new device's hourly history.
#[test]
fn a_change_on_a_new_device_does_not_prove_the_old_devices_interrupted_write() {
    use crate::actuate::coalesce::{CoalesceSettings, DeviceSeen, FakeCoalesce};
    let dir = tempfile::tempdir().unwrap();
    let (mut p, nic) = nic_under_dim(dir.path(), false);
    let device = Some(DeviceSeen {
        ifindex: nic.index_of("eth0").unwrap(),
        netns_cookie: FakeCoalesce::NETNS_COOKIE,
    });
    let interrupted = p
        .journal
        .record_intent_making_way(
            &RX.parse().unwrap(),
            &Value::Int(50),
            &Value::Int(20),
            Source::Rules,
            "t",
            IntentKind::Change,
            None,
            None,
            device,
            false,
        )
        .unwrap();
    drop(p);
    nic.remove_nic("eth0");
    let mut p = nic_path(dir.path(), &nic);
    let reports = p.reconcile().unwrap();
    assert_eq!(
        statuses(&reports),
        vec![(RX.to_string(), ChangeStatus::Skipped)]
    );
    // A new device under the name, whose driver starts it at the interrupted change's value.
    nic.add_nic(
        "eth0",
        CoalesceSettings {
            rx_usecs: 20,
            adaptive_rx: false,
        },
    );
    let r = p.propose(&op(RX, Value::Int(30))).unwrap();
    assert_eq!(r.status, ChangeStatus::Applied, "{r:?}");
    drop(p);
    let mut p = nic_path(dir.path(), &nic);
    let reports = p.reconcile().unwrap();
    let settled: Vec<_> = reports
        .iter()
        .filter(|r| r.journal_id == Some(interrupted))
        .collect();
    assert_eq!(settled.len(), 1, "{reports:#?}");
    assert_eq!(settled[0].status, ChangeStatus::Failed, "{reports:#?}");
    assert_eq!(nic.settings("eth0").unwrap().rx_usecs, 30);
}

/// `preview`, which the optimizer asks before a trial, decides for a NIC whose name names a new
/// device as `propose` would: the old device's cooldown is not the new one's. Defect: refused
/// by preview (cooldown), then applied by the `propose` meant to report the refusal, outside the
/// trial's all-or-none write.
#[test]
fn preview_of_a_new_device_under_a_nics_name_inherits_nothing() {
    use crate::actuate::coalesce::CoalesceSettings;
    let dir = tempfile::tempdir().unwrap();
    let nic = crate::actuate::coalesce::FakeCoalesce::new();
    let settings = CoalesceSettings {
        rx_usecs: 50,
        adaptive_rx: false,
    };
    nic.add_nic("eth0", settings);
    let policy = Policy::parse(
        &format!("[params.\"{RX}\"]\nmode = \"auto\"\ncooldown = \"1h\"\n"),
        "test.toml",
    )
    .unwrap();
    crate::journal::store::make_private(dir.path());
    let journal = Journal::open(dir.path(), Holder::Cli, Duration::ZERO).unwrap();
    let mut p = ChangePath::new(policy, journal, Box::new(Nic(nic.clone())));
    let mut trial = op(RX, Value::Int(20));
    trial.source = Source::Optimizer;
    assert_eq!(p.propose(&trial).unwrap().status, ChangeStatus::Applied);
    let mut next = trial.clone();
    next.value = Value::Int(30);
    assert!(
        matches!(p.preview(&next), Decision::Refused(_)),
        "the same device: in its cooldown"
    );
    // A new device under the name, with the value KPO last applied (nothing for the value
    // check to settle).
    nic.remove_nic("eth0").add_nic(
        "eth0",
        CoalesceSettings {
            rx_usecs: 20,
            adaptive_rx: false,
        },
    );
    assert_eq!(p.preview(&next), Decision::Apply);
    assert_eq!(p.propose(&next).unwrap().status, ChangeStatus::Applied);
}

/// Defect (review s33 qa-statefail #2): a change whose intent the journal could not record (a
/// full state directory) left its `proposed` event without an end in the event stream, and the
/// operator's error said only the file and the os error. Now a `failed` event says nothing was
/// written, the error names the state directory and what to do, and the kernel is untouched.
#[test]
fn an_intent_the_journal_cannot_record_ends_in_a_failed_event_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let k = kernel(&[(SOMAX, Value::Int(4096))]);
    let (mut p, events) = path(dir.path(), POLICY, &k);
    p.journal.fail_an_append(0, 0);
    let e = p.propose(&op(SOMAX, Value::Int(8192))).unwrap_err();
    // s39 fix: a command's journal (the agent down) said "a running agent takes the journal up
    // again by itself", where no agent runs: it says to run the command again.
    let error = format!(
        "journal: {}: the journal cannot be written (journal.log: No space left on device (os \
         error 28)): KPO changes and records nothing until it can; free space in the state \
         directory (or fix what fails there), then run the command again",
        dir.path().display()
    );
    assert_eq!(e.to_string(), error);
    assert_eq!(value(&k, SOMAX), Value::Int(4096));
    assert_eq!(p.journal.unwritable(), Some(&error["journal: ".len()..]));
    let ends: Vec<(ChangePhase, Option<u64>, Option<String>)> = events
        .lock()
        .unwrap()
        .iter()
        .filter_map(|e| match e {
            ChangePathEvent::Change(c) => Some((c.phase, c.journal_id, c.detail.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(
        ends,
        [
            (ChangePhase::Proposed, None, None),
            (
                ChangePhase::Failed,
                None,
                Some(format!(
                    "not written: the journal could not record its intent ({})",
                    &error["journal: ".len()..]
                ))
            ),
        ]
    );
    // Writable again: the same change is made, with no restart.
    let again = p.propose(&op(SOMAX, Value::Int(8192))).unwrap();
    assert_eq!(again.status, ChangeStatus::Applied);
    assert_eq!(again.journal_id, Some(1));
    assert_eq!(p.journal.unwritable(), None);
    assert_eq!(value(&k, SOMAX), Value::Int(8192));
}

/// An operator's refusal the journal cannot record still ends its `proposed` event: `refused`,
/// without a journal id, saying the refusal was not recorded.
#[test]
fn a_refusal_the_journal_cannot_record_is_still_an_event() {
    let dir = tempfile::tempdir().unwrap();
    let k = kernel(&[(SOMAX, Value::Int(4096))]);
    let (mut p, events) = path(dir.path(), POLICY, &k);
    p.journal.fail_an_append(0, 0);
    let e = p.propose(&op(SOMAX, Value::Int(0))).unwrap_err();
    assert!(
        matches!(e, ChangeError::Journal(JournalError::Unwritable { .. })),
        "{e}"
    );
    let last = match events.lock().unwrap().last() {
        Some(ChangePathEvent::Change(c)) => (c.phase, c.journal_id, c.detail.clone()),
        other => panic!("{other:?}"),
    };
    let refusal = match p.preview(&op(SOMAX, Value::Int(0))) {
        Decision::Refused(r) => r.to_string(),
        other => panic!("{other:?}"),
    };
    assert_eq!(
        last,
        (
            ChangePhase::Refused,
            None,
            Some(format!(
                "{refusal}; the journal could not record the refusal ({})",
                &e.to_string()["journal: ".len()..]
            ))
        )
    );
    assert_eq!(value(&k, SOMAX), Value::Int(4096));
}

/// Defect (s39 fix #1): `restore_originals` (`kpo revert --all`, `on_exit`) stopped at the first
/// journal failure with the error alone: what it had put back before was lost to the command's
/// output. Every parameter now has its report: those done, the one the journal failed on, and
/// each not tried, `failed` with the journal's error; nothing is written after the failure.
#[test]
fn revert_all_on_a_failing_journal_reports_what_it_did_and_what_it_did_not() {
    const BACKLOG: &str = "net.ipv4.tcp_max_syn_backlog";
    const NETDEV: &str = "net.core.netdev_max_backlog";
    let policy = format!(
        "[params.\"net.core.somaxconn\"]\nmode = \"auto\"\n\n[params.\"{BACKLOG}\"]\n\
         mode = \"auto\"\n\n[params.\"{NETDEV}\"]\nmode = \"auto\"\n"
    );
    let dir = tempfile::tempdir().unwrap();
    let k = kernel(&[
        (SOMAX, Value::Int(4096)),
        (BACKLOG, Value::Int(1000)),
        (NETDEV, Value::Int(500)),
    ]);
    let (mut p, _) = path(dir.path(), &policy, &k);
    for (a, v) in [(SOMAX, 8192), (BACKLOG, 2000), (NETDEV, 600)] {
        assert_eq!(
            p.propose(&op(a, Value::Int(v))).unwrap().status,
            ChangeStatus::Applied
        );
    }
    // The first revert's intent and outcome are recorded; the second's intent is not.
    p.journal.fail_an_append(2, 0);
    let reports = p.revert_all("test").unwrap();
    let error = format!(
        "journal: {}: the journal cannot be written (journal.log: No space left on device (os \
         error 28)): KPO changes and records nothing until it can; free space in the state \
         directory (or fix what fails there), then run the command again",
        dir.path().display()
    );
    let lines: Vec<String> = reports.iter().map(ChangeReport::describe).collect();
    assert_eq!(
        lines,
        [
            format!("reverted #4 {NETDEV}: 600 -> 500 (read back 500)"),
            format!("failed {SOMAX}: 8192 -> 4096: not put back: {error}"),
            // The error says what to do (run the command again): not said twice.
            format!(
                "failed {BACKLOG}: 2000 -> 1000: not put back: not tried, the journal failed \
                 before it ({error})"
            ),
        ]
    );
    assert_eq!(value(&k, NETDEV), Value::Int(500));
    assert_eq!(value(&k, SOMAX), Value::Int(8192));
    assert_eq!(value(&k, BACKLOG), Value::Int(2000));
}

/// Defect (s46 storyK K3): `kpo revert --all` (and `on_exit`) named the parameter's first change
/// since its original as the one it undid, even after a revert had undone that one and a later
/// change held the kernel: "60 -> 25 (undoes #1)" where #1 applied 30 and #3 applied 25, and
/// `kpo revert` of it then spoke of #1. It names the change the kernel has from KPO.
#[test]
fn revert_all_names_the_change_it_takes_out() {
    let dir = tempfile::tempdir().unwrap();
    let k = kernel(&[(SOMAX, Value::Int(4096))]);
    let (mut p, _) = path(dir.path(), POLICY, &k);
    assert_eq!(
        p.propose(&op(SOMAX, Value::Int(8192))).unwrap().journal_id,
        Some(1)
    );
    assert_eq!(
        p.revert(1, Source::Operator, "t").unwrap().status,
        ChangeStatus::Reverted
    );
    assert_eq!(
        p.propose(&op(SOMAX, Value::Int(6000))).unwrap().journal_id,
        Some(3)
    );
    let reports = p.revert_all("test").unwrap();
    assert_eq!(
        reports
            .iter()
            .map(ChangeReport::describe)
            .collect::<Vec<_>>(),
        [format!(
            "reverted #4 {SOMAX}: 6000 -> 4096 (read back 4096)"
        )]
    );
    let (entries, _) = p.journal.all_entries();
    assert_eq!(
        entries.last().map(|e| (e.id, e.revert_of)),
        Some((4, Some(3)))
    );
    assert_eq!(value(&k, SOMAX), Value::Int(4096));
}

/// s64 story CP-2: after `kpo revert` of the last of three changes, the kernel holds the second's
/// value; `kpo revert --all` named the second as the change it undid, `on_exit` the first.
#[test]
fn on_exit_names_the_change_whose_value_it_takes_out() {
    for on_exit in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let k = kernel(&[(SOMAX, Value::Int(100))]);
        let (mut p, _) = path(dir.path(), POLICY, &k);
        for (id, v) in [(1, 200), (2, 300), (3, 400)] {
            let report = p.propose(&op(SOMAX, Value::Int(v))).unwrap();
            assert_eq!(report.journal_id, Some(id));
        }
        assert_eq!(
            p.revert(3, Source::Operator, "t").unwrap().status,
            ChangeStatus::Reverted
        );
        assert_eq!(value(&k, SOMAX), Value::Int(300));
        let reports = match on_exit {
            true => p
                .restore_originals(vec![SOMAX.parse().unwrap()], Source::Operator, "exit", true)
                .unwrap(),
            false => p.revert_all("test").unwrap(),
        };
        assert_eq!(reports.len(), 1, "{reports:?}");
        let (entries, _) = p.journal.all_entries();
        assert_eq!(
            entries.last().map(|e| (e.id, e.revert_of)),
            Some((5, Some(2))),
            "on_exit {on_exit}"
        );
        assert_eq!(value(&k, SOMAX), Value::Int(100));
    }
}

/// s43 (found by hand): `kpo revert ID` of a change the rules made put the value back, and the
/// rules, seeing the kernel as before, applied the same value again once the cooldown passed:
/// the operator's decision lasted five minutes. The advisor's value a revert takes out of the
/// kernel is quarantined as a guard's revert is (`guard.quarantine`); and only when the revert
/// writes (s43 review: a revert tried again, refused, or ending with nothing to write quarantined
/// all the same, each retry twice as long), and only an advisor's value (a revert of an
/// operator's change the rules superseded takes out, and quarantines, the rules' value).
#[test]
fn an_operators_revert_of_an_advisors_change_quarantines_its_value() {
    let dir = tempfile::tempdir().unwrap();
    let k = kernel(&[(SOMAX, Value::Int(4096))]);
    let (mut p, events) = path(dir.path(), POLICY, &k);
    let address: ParamAddress = SOMAX.parse().unwrap();
    let quarantined = |p: &ChangePath, v: i128| {
        p.journal
            .context(&address, &Value::Int(v), SystemTime::now())
            .quarantined_until
    };
    let mut rules = op(SOMAX, Value::Int(8192));
    rules.source = Source::Rules;
    let id = p.propose(&rules).unwrap().journal_id.unwrap();
    assert_eq!(value(&k, SOMAX), Value::Int(8192));

    let r = p.revert(id, Source::Operator, "kpo revert").unwrap();
    assert_eq!(r.status, ChangeStatus::Reverted, "{}", r.describe());
    assert_eq!(value(&k, SOMAX), Value::Int(4096));
    let until = quarantined(&p, 8192).expect("quarantined");
    let left = until.duration_since(SystemTime::now()).unwrap();
    assert!(
        left <= Duration::from_secs(3600) && left > Duration::from_secs(3590),
        "{left:?}"
    );
    let ms = until
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    assert_eq!(
        r.detail,
        Some(format!(
            "8192 is quarantined until {}: no change sets it here before then, an operator's kpo apply included",
            crate::journal::format_ms(ms)
        )),
        "{}",
        r.describe()
    );
    // In the event stream too (s52 story AG-7): the revert's `reverted` event says it.
    let reverted: Vec<Option<String>> = (events.lock().unwrap().iter())
        .filter_map(|e| match e {
            ChangePathEvent::Change(c) if c.phase == ChangePhase::Reverted => {
                Some(c.detail.clone())
            }
            _ => None,
        })
        .collect();
    assert_eq!(reverted, std::slice::from_ref(&r.detail));
    // The rules' same proposal is refused as quarantined, not merely held by the cooldown; an
    // operator's apply of it too (as after the guard's revert); another value is free.
    let r = p.propose(&rules).unwrap();
    assert_eq!(r.refusal.unwrap().code(), "quarantined");
    let again = p.propose(&op(SOMAX, Value::Int(8192))).unwrap();
    assert_eq!(
        again.refusal.unwrap().code(),
        "quarantined",
        "an operator too"
    );
    assert_eq!(value(&k, SOMAX), Value::Int(4096));

    // The same revert again writes nothing and quarantines nothing more.
    let r = p.revert(id, Source::Operator, "kpo revert").unwrap();
    assert_eq!(r.status, ChangeStatus::Unchanged, "{}", r.describe());
    assert_eq!(
        r.detail.as_deref(),
        Some("the kernel already has this value: #2 undid #1 already")
    );
    assert_eq!(quarantined(&p, 8192), Some(until), "not doubled");

    // An operator's change superseded by the rules': its revert takes the rules' value out.
    let mine = p
        .propose(&op(SOMAX, Value::Int(6000)))
        .unwrap()
        .journal_id
        .unwrap();
    rules.value = Value::Int(12000);
    let r = p.propose(&rules).unwrap();
    assert_eq!(r.status, ChangeStatus::Applied, "{}", r.describe());
    let r = p.revert(mine, Source::Operator, "kpo revert").unwrap();
    assert_eq!(r.status, ChangeStatus::Reverted, "{}", r.describe());
    assert_eq!(value(&k, SOMAX), Value::Int(4096));
    assert!(quarantined(&p, 12000).is_some(), "the value taken out");
    assert!(quarantined(&p, 6000).is_none(), "not the operator's own");

    // A revert the kernel refuses to write puts nothing back: the rules' value, quarantined
    // before the write (which the kill-safety needs), stays where it is, and says so.
    let held = p.propose(&{
        let mut llm = op(SOMAX, Value::Int(8000));
        llm.source = Source::Llm;
        llm
    });
    let held = held.unwrap().journal_id.unwrap();
    k.0.lock().unwrap().refuse_revert.push(SOMAX.into());
    let r = p.revert(held, Source::Operator, "kpo revert").unwrap();
    assert_eq!(r.status, ChangeStatus::Failed, "{}", r.describe());
    assert_eq!(value(&k, SOMAX), Value::Int(8000));
    let detail = r.detail.unwrap();
    assert!(
        detail.contains("; 8000 is quarantined until "),
        "the words: {detail}"
    );
}

/// The guard's revert of the rules' second raise left their first in the kernel; `kpo revert
/// --all` then took it out without quarantining it, naming a change since undone as the one it
/// undid, and the rules applied it again seconds after `kpo resume` (s56 story AZ-1). The value
/// a revert put back is still its change's.
#[test]
fn revert_all_after_the_guard_took_out_a_second_raise_quarantines_the_first() {
    let dir = tempfile::tempdir().unwrap();
    let k = kernel(&[(SOMAX, Value::Int(4096))]);
    let (mut p, _) = path(dir.path(), POLICY, &k);
    let mut rules = op(SOMAX, Value::Int(8192));
    rules.source = Source::Rules;
    let first = p.propose(&rules).unwrap().journal_id.unwrap();
    rules.value = Value::Int(12000);
    let second = p.propose(&rules).unwrap().journal_id.unwrap();
    let r = p
        .revert_own_through(second, second, Source::Guard, "guard")
        .unwrap();
    assert_eq!(r.status, ChangeStatus::Reverted, "{}", r.describe());
    assert_eq!(value(&k, SOMAX), Value::Int(8192));
    let reports = p.revert_all("all").unwrap();
    assert_eq!(reports[0].status, ChangeStatus::Reverted);
    assert_eq!(value(&k, SOMAX), Value::Int(4096));
    let detail = reports[0].detail.clone().unwrap_or_default();
    assert!(
        detail.starts_with("8192 is quarantined until "),
        "{}",
        reports[0].describe()
    );
    let undoes = (p.journal.entries().into_iter())
        .find(|e| Some(e.id) == reports[0].journal_id)
        .and_then(|e| e.revert_of);
    assert_eq!(undoes, Some(first), "the change whose value it took out");
    rules.value = Value::Int(8192);
    assert_eq!(
        p.propose(&rules).unwrap().refusal.map(|r| r.code()),
        Some("quarantined")
    );
    // A person's value written over KPO's since is nobody's of KPO's: nothing is quarantined.
    rules.value = Value::Int(6000);
    let third = p.propose(&rules).unwrap().journal_id.unwrap();
    rules.value = Value::Int(7000);
    let fourth = p.propose(&rules).unwrap().journal_id.unwrap();
    p.revert_own_through(fourth, fourth, Source::Guard, "guard")
        .unwrap();
    assert_eq!(value(&k, SOMAX), Value::Int(6000));
    k.0.lock()
        .unwrap()
        .values
        .insert(SOMAX.into(), Value::Int(5000));
    p.journal
        .set_yielded(&SOMAX.parse().unwrap(), Some(Value::Int(5000)), "sysctl")
        .unwrap();
    let r = p
        .revert_over_theirs(third, Source::Operator, "kpo revert --force")
        .unwrap();
    assert_eq!(r.status, ChangeStatus::Reverted, "{}", r.describe());
    assert!(
        !r.detail.clone().unwrap_or_default().contains("quarantined"),
        "{}",
        r.describe()
    );
}

/// `kpo revert ID` of a change a revert had taken out already wrote its old value again, past
/// the pause (s56 story AZ-2: 64 -> 100 after `kpo revert 2` and `kpo revert --all`). Now it is
/// skipped, naming the revert that undid it.
#[test]
fn reverting_a_change_undone_already_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let k = kernel(&[(SOMAX, Value::Int(4096))]);
    let (mut p, _) = path(dir.path(), POLICY, &k);
    let first = p
        .propose(&op(SOMAX, Value::Int(5000)))
        .unwrap()
        .journal_id
        .unwrap();
    let second = p
        .propose(&op(SOMAX, Value::Int(6000)))
        .unwrap()
        .journal_id
        .unwrap();
    let by = p.revert(second, Source::Operator, "kpo revert").unwrap();
    assert_eq!(value(&k, SOMAX), Value::Int(5000));
    let all = p.revert_all("all").unwrap();
    assert_eq!(value(&k, SOMAX), Value::Int(4096));
    p.journal.set_paused(true, "operator").unwrap();
    let r = p.revert(second, Source::Operator, "kpo revert").unwrap();
    assert_eq!(r.status, ChangeStatus::Skipped, "{}", r.describe());
    assert_eq!(
        r.describe(),
        format!(
            "skipped {SOMAX}: 4096 -> 5000 (now 4096): #{} undid #{second} already; nothing of \
             it is left to take out (kpo revert {second} --force writes 5000 again; kpo revert \
             --all puts the original back)",
            all[0].journal_id.unwrap()
        )
    );
    assert_eq!(value(&k, SOMAX), Value::Int(4096));
    assert_eq!(by.status, ChangeStatus::Reverted);
    // The first's value before it is the kernel's: nothing to write, as ever.
    let r = p.revert(first, Source::Operator, "kpo revert").unwrap();
    assert_eq!(r.status, ChangeStatus::Unchanged, "{}", r.describe());
    assert_eq!(all[0].status, ChangeStatus::Reverted);
    // A later advisor's change holds it: the undone change's old value (the first's, which
    // `--all` took out) is not brought back; the one to take out is named (s56 story BA-1).
    let mut rules = op(SOMAX, Value::Int(7000));
    rules.source = Source::Rules;
    p.journal.set_paused(false, "operator").unwrap();
    let later = p.propose(&rules).unwrap().journal_id.unwrap();
    p.journal.set_paused(true, "operator").unwrap();
    let r = p.revert(second, Source::Operator, "kpo revert").unwrap();
    assert_eq!(r.status, ChangeStatus::Skipped, "{}", r.describe());
    assert_eq!(
        r.detail.unwrap(),
        format!(
            "#{} undid #{second} already; #{later} by rules holds it now (kpo revert {later} \
             takes that out; kpo revert {second} --force writes 5000 again)",
            all[0].journal_id.unwrap()
        )
    );
    assert_eq!(value(&k, SOMAX), Value::Int(7000));
    let r = p.revert(later, Source::Operator, "kpo revert").unwrap();
    assert_eq!(r.status, ChangeStatus::Reverted, "{}", r.describe());
    assert_eq!(value(&k, SOMAX), Value::Int(4096));
}

/// Changes `kpo revert --all` took out, which it journals as undoing the change that held the
/// parameter (the last), are undone all the same: `kpo revert` of the middle one wrote a rules
/// value `--all` had taken out, past the pause (s56 review1 R1-1); `--force` writes it.
#[test]
fn changes_revert_all_took_out_are_undone_already() {
    let dir = tempfile::tempdir().unwrap();
    let k = kernel(&[(SOMAX, Value::Int(4096))]);
    let (mut p, _) = path(dir.path(), POLICY, &k);
    let mut rules = op(SOMAX, Value::Int(5000));
    rules.source = Source::Rules;
    let mut ids = vec![];
    for v in [5000, 6000, 7000] {
        rules.value = Value::Int(v);
        ids.push(p.propose(&rules).unwrap().journal_id.unwrap());
    }
    let all = p.revert_all("all").unwrap();
    assert_eq!(value(&k, SOMAX), Value::Int(4096));
    p.journal.set_paused(true, "operator").unwrap();
    let r = p.revert(ids[1], Source::Operator, "kpo revert").unwrap();
    assert_eq!(r.status, ChangeStatus::Skipped, "{}", r.describe());
    assert!(
        (r.detail.as_deref()).is_some_and(|d| d.starts_with(&format!(
            "#{} undid #{} already",
            all[0].journal_id.unwrap(),
            ids[1]
        ))),
        "{}",
        r.describe()
    );
    assert_eq!(value(&k, SOMAX), Value::Int(4096));
    let r = p
        .revert_over_theirs(ids[1], Source::Operator, "kpo revert --force")
        .unwrap();
    assert_eq!(r.status, ChangeStatus::Reverted, "{}", r.describe());
    assert_eq!(value(&k, SOMAX), Value::Int(5000));
    // Its value back in the kernel, the first holds again: its revert writes, as ever.
    let r = p.revert(ids[0], Source::Operator, "kpo revert").unwrap();
    assert_eq!(r.status, ChangeStatus::Reverted, "{}", r.describe());
    assert_eq!(value(&k, SOMAX), Value::Int(4096));
}

/// `kpo revert --all` quarantines the advisors' values it takes out, as `kpo revert ID` does:
/// with the agent running, the rules applied the same value again a second later (s52 storyAC
/// AC-1). An operator's own value is not quarantined.
#[test]
fn revert_all_quarantines_the_advisors_values_it_takes_out() {
    let dir = tempfile::tempdir().unwrap();
    let k = kernel(&[(SOMAX, Value::Int(4096))]);
    let (mut p, _) = path(dir.path(), POLICY, &k);
    let quarantined = |p: &ChangePath, v: i128| {
        p.journal
            .context(&SOMAX.parse().unwrap(), &Value::Int(v), SystemTime::now())
            .quarantined_until
    };
    let mut rules = op(SOMAX, Value::Int(8192));
    rules.source = Source::Rules;
    assert_eq!(p.propose(&rules).unwrap().status, ChangeStatus::Applied);
    let reports = p.revert_all("all").unwrap();
    assert_eq!(reports.len(), 1);
    let detail = reports[0].detail.clone().unwrap_or_default();
    assert!(
        detail.starts_with("8192 is quarantined until "),
        "{}",
        reports[0].describe()
    );
    assert!(quarantined(&p, 8192).is_some());
    assert_eq!(
        p.propose(&rules).unwrap().refusal.map(|r| r.code()),
        Some("quarantined")
    );
    assert_eq!(value(&k, SOMAX), Value::Int(4096));
    assert_eq!(
        p.propose(&op(SOMAX, Value::Int(6000))).unwrap().status,
        ChangeStatus::Applied
    );
    assert_eq!(
        p.revert_all("all").unwrap()[0].status,
        ChangeStatus::Reverted
    );
    assert_eq!(quarantined(&p, 6000), None, "the operator's own");
    // The agent's `on_exit` puts originals back too, and quarantines nothing: the advisors
    // are stopping with it (s52 review L11).
    rules.value = Value::Int(8000);
    let r = p.propose(&rules).unwrap();
    assert_eq!(r.status, ChangeStatus::Applied, "{}", r.describe());
    let r = p
        .restore_originals(vec![SOMAX.parse().unwrap()], Source::Operator, "exit", true)
        .unwrap();
    assert_eq!(r[0].status, ChangeStatus::Reverted, "{}", r[0].describe());
    assert_eq!(quarantined(&p, 8000), None, "on_exit quarantines nothing");
}

/// s43 (found by hand): two `kpo apply` of the operator's own, with four changes of the rules,
/// made the rules' next raise `rate_limited` ("6 changes in the last hour, the limit is 6"), in
/// mode recommend before any approval was asked: the limit, documented as the advisors', counted
/// the operator's changes too. Only advisors' changes count (an approved one is its advisor's).
#[test]
fn the_hourly_limit_counts_advisors_changes_not_an_operators() {
    let dir = tempfile::tempdir().unwrap();
    let k = kernel(&[(SOMAX, Value::Int(4096))]);
    let policy = format!("[guard]\nmax_changes_per_hour = 2\n{POLICY}");
    let (mut p, _) = path(dir.path(), &policy, &k);
    for v in [5000, 6000, 7000] {
        let r = p.propose(&op(SOMAX, Value::Int(v))).unwrap();
        assert_eq!(r.status, ChangeStatus::Applied, "{}", r.describe());
    }
    let mut rules = op(SOMAX, Value::Int(8000));
    rules.source = Source::Rules;
    for v in [8000, 9000] {
        rules.value = Value::Int(v);
        let r = p.propose(&rules).unwrap();
        assert_eq!(r.status, ChangeStatus::Applied, "{}", r.describe());
    }
    rules.value = Value::Int(10000);
    let r = p.propose(&rules).unwrap();
    assert_eq!(
        r.refusal.map(|r| r.to_string()),
        Some("rate-limited: 2 changes in the last hour, the limit is 2".into())
    );
    assert_eq!(value(&k, SOMAX), Value::Int(9000));
}

/// Advice that waits for a person writes nothing: the hourly limit (and the cooldown) is asked
/// when it is approved, and meanwhile it waits for approval rather than be refused unseen (s49
/// storyS S-2: in mode recommend, two approved raises of the rules' used up the limit, and the
/// rules' next advice was refused as rate-limited, in no `kpo pending`). Held advice in mode auto
/// likewise.
#[test]
fn advice_that_waits_for_a_person_is_not_held_back_by_the_hourly_limit() {
    let dir = tempfile::tempdir().unwrap();
    let k = kernel(&[(SOMAX, Value::Int(4096))]);
    for mode in ["recommend", "auto"] {
        let policy = format!(
            "[guard]\nmax_changes_per_hour = 2\n[params.\"net.core.somaxconn\"]\nmode = \"{mode}\"\n"
        );
        let sub = dir.path().join(mode);
        std::fs::create_dir(&sub).unwrap();
        let (mut p, _) = path(&sub, &policy, &k);
        let mut rules = op(SOMAX, Value::Int(8000));
        rules.source = Source::Rules;
        for v in [8000, 9000] {
            rules.value = Value::Int(v);
            let r = p.propose_approved(&rules, None).unwrap();
            assert_eq!(r.status, ChangeStatus::Applied, "{mode}: {}", r.describe());
        }
        rules.value = Value::Int(10000);
        // What `kpo approve` would meet now, which `kpo pending` shows.
        assert!(
            matches!(p.preview_approved(&rules), crate::policy::Decision::Refused(r)
                if r.to_string() == "rate-limited: 2 changes in the last hour, the limit is 2"),
            "{mode}"
        );
        let held = mode == "auto";
        let r = p.propose_advice(&rules, held, None, None).unwrap();
        assert_eq!(
            r.status,
            ChangeStatus::NeedsApproval,
            "{mode}: {}",
            r.describe()
        );
        let r = p.propose_approved(&rules, None).unwrap();
        assert_eq!(
            r.refusal.map(|r| r.to_string()),
            Some("rate-limited: 2 changes in the last hour, the limit is 2".into()),
            "{mode}: approved, it is written, and the limit holds"
        );
        assert_eq!(value(&k, SOMAX), Value::Int(9000), "{mode}");
        // Its own value back for the next mode.
        k.0.lock()
            .unwrap()
            .values
            .insert(SOMAX.into(), Value::Int(4096));
    }
}

/// What a change waiting for approval says holds it, as it is (s49 storyV V2: an entry in mode
/// auto read "mode recommend" under `kpo run --recommend-only` and when its advisor held it).
#[test]
fn a_held_change_says_what_holds_it() {
    let dir = tempfile::tempdir().unwrap();
    let k = kernel(&[(SOMAX, Value::Int(4096))]);
    let mut rules = op(SOMAX, Value::Int(8192));
    rules.source = Source::Rules;
    let detail = |mode: &str, forced: bool, held: bool| {
        let sub = dir.path().join(format!("{mode}{forced}{held}"));
        std::fs::create_dir(&sub).unwrap();
        let policy = format!("[params.\"net.core.somaxconn\"]\nmode = \"{mode}\"\n");
        let (mut p, _) = path(&sub, &policy, &k);
        if forced {
            p.policy.force_recommend();
        }
        let r = p.propose_advice(&rules, held, None, None).unwrap();
        assert_eq!(r.status, ChangeStatus::NeedsApproval);
        r.detail.unwrap()
    };
    assert_eq!(
        detail("recommend", false, false),
        "mode recommend: waits for an operator's approval"
    );
    assert_eq!(
        detail("auto", true, false),
        "mode recommend (kpo run --recommend-only treats auto as recommend): waits for an \
         operator's approval"
    );
    assert_eq!(
        detail("auto", false, true),
        "its advisor asked for a person (can_auto_apply false): waits for an operator's approval"
    );
}
