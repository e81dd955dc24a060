//! Yielding to people. A managed parameter (journaled with a last applied value, not yielded)
//! whose kernel value is no longer the one KPO applied was changed by someone else: KPO then stops
//! managing it at that target, keeps their value, the guard stops watching it, and an
//! `admin_override` event says so. Three places find such a value:
//! - the `cgroup/sysctl` watch, within a tick, with the writer's pid and comm
//!   ([`super::deciding::Deciding::on_sysctl_writes`]);
//! - once per window, [`check_values`] reads every managed parameter: cpufreq and coalescing,
//!   which no eBPF program watches, and sysctls, for writes the watch did not see (not loaded, or
//!   made between its last drain and the window);
//! - one of the agent's own reverts that finds a value that is not KPO's
//!   ([`crate::change::ChangePath::revert_own`]).
use std::collections::{BTreeMap, HashSet};

use tracing::{debug, info, warn};

use crate::{
    actuate::{
        coalesce::DeviceNow,
        param::{NetnsRef, ParamAddress, Target, Value},
    },
    change::{ChangePath, ChangeReport, ChangeStatus},
    guard::Guard,
    output::events::Event,
};

/// Who the journal says took over a parameter found changed by value.
pub const BY_VALUE_CHECK: &str = "another process (the value differed from the one KPO applied)";

/// Who changed a parameter, as far as KPO could see.
pub struct Writer<'a> {
    /// For the journal's `yield` record and the log.
    pub by: String,
    pub pid: Option<u32>,
    pub comm: Option<&'a str>,
    /// `admin_override.seen_by`.
    pub seen_by: &'static str,
}

impl Writer<'_> {
    /// Nobody saw the write; only its value shows it.
    pub fn unseen() -> Writer<'static> {
        Writer {
            by: BY_VALUE_CHECK.to_string(),
            pid: None,
            comm: None,
            seen_by: "value_check",
        }
    }
}

/// Journals that `address` is someone else's now (their value `now`, KPO's was `applied`), stops
/// the guard watching it, and returns the `admin_override` event; `None` if the journal could not
/// record it (KPO then goes on managing it, and says so in the log).
pub fn yield_to(
    path: &mut ChangePath,
    guard: &mut Guard,
    address: &ParamAddress,
    now: Value,
    applied: Value,
    writer: Writer<'_>,
) -> Option<Event> {
    // A namespace that replaced the one KPO changed has its own values, no one's change.
    if path.settle_if_namespace_gone(address).unwrap_or(false) {
        guard.forget(address);
        return None;
    }
    // Likewise a NIC whose name names a new device now (a veth made again, a NIC replaced):
    // its value is its own. Not judged while the device is not known to be KPO's (renamed,
    // another namespace, a lookup that failed): nothing is concluded, said only at debug level
    // (not at every window), and the next window asks again.
    match path.settle_if_device_gone(address) {
        Ok(DeviceNow::Here) => {}
        Ok(DeviceNow::Gone(_)) => {
            guard.forget(address);
            return None;
        }
        Ok(DeviceNow::Unsure(why)) => {
            debug!("{address} is {now}, not the {applied} KPO applied; not yielded: {why}");
            return None;
        }
        Err(e) => {
            warn!("journal: {address}: {e}");
            return None;
        }
    }
    if let Err(e) = path
        .journal
        .set_yielded(address, Some(now.clone()), &writer.by)
    {
        warn!("journal: yielding {address}: {e}");
        return None;
    }
    guard.forget(address);
    warn!(
        "{address} is {now}, not the {applied} KPO applied: changed by {}; KPO stops managing it \
         there (kpo resume {} hands it back)",
        writer.by,
        address.policy_name()
    );
    Some(Event::AdminOverride {
        target: address.to_string(),
        pid: writer.pid,
        comm: writer.comm.map(str::to_string),
        seen_by: writer.seen_by,
        value: now,
        kpo_value: Some(applied),
    })
}

/// Compares each managed parameter with the value KPO last applied.
pub fn check_values(path: &mut ChangePath, guard: &mut Guard) -> Vec<Event> {
    let mut live: Option<HashSet<u64>> = None;
    forget_gone_namespaces(path, guard, &mut live);
    end_watches_in_namespaces_gone(path, guard, &mut live);
    let managed: Vec<_> = path
        .journal
        .params()
        .filter(|p| p.yielded.is_none())
        // A damaged journal line may have held KPO's latest change here: its last applied value
        // may be an older one of KPO's own, and the kernel's newer one KPO's too.
        .filter(|p| p.unsettled.is_none())
        // A namespace named by a path that names another one now (`ip netns del web; ip netns
        // add web`), or none, is read by its inode: the path would reach a namespace KPO never
        // changed, whose own value is nobody's change (yielding there would repeat every window
        // and hold the new namespace's key as a person's), or nothing, while the namespace KPO
        // changed may live on (a process in it) with someone's value to notice.
        .filter_map(|p| Some((p.reach()?, p.last_applied.clone()?)))
        .collect();
    let mut events = Vec::new();
    for (address, applied) in managed {
        // A namespace named by inode that no longer exists is skipped on one scan per window;
        // reading it would scan every process for each such parameter, and the journal keeps
        // them all.
        if let Target::Netns {
            netns: NetnsRef::Inode(inode),
        } = &address.target
        {
            if !live
                .get_or_insert_with(crate::actuate::sysctl::live_netns_inodes)
                .contains(inode)
            {
                continue;
            }
        }
        // A parameter that cannot be read now (a NIC or a namespace gone) is not taken to be
        // someone's change. A NIC gone for certain from under its name is settled once; one
        // only absent (deleted, or moved to another namespace with KPO's value) is skipped,
        // silently, at every window: KPO keeps what it knows of it, for when it is back.
        let Ok(now) = path.read(&address) else {
            if let Ok(DeviceNow::Gone(_)) = path.settle_if_device_gone(&address) {
                for id in guard.forget(&address) {
                    info!(
                        "guard: no longer watching #{id} ({address}): its network device is gone"
                    );
                }
            }
            continue;
        };
        if now == applied || path.moved_by_the_kernel(&address) {
            // Adaptive moderation that KPO itself turned back on moves the value: nobody wrote
            // it. (Turned on by a person, it does not count here: the value is theirs.)
            continue;
        }
        events.extend(yield_to(
            path,
            guard,
            &address,
            now,
            applied,
            Writer::unseen(),
        ));
    }
    events
}

/// After one of the agent's own reverts: if it was left alone because the value is someone
/// else's now, yield to them (the `admin_override` event).
pub fn after_own_revert(
    path: &mut ChangePath,
    guard: &mut Guard,
    report: &ChangeReport,
) -> Option<Event> {
    if report.status != ChangeStatus::Skipped || path.moved_by_the_kernel(&report.address) {
        return None;
    }
    let now = report.read_back.clone()?;
    // As in [`check_values`]: KPO's last value there is not known for sure.
    let applied = path
        .journal
        .param_state(&report.address)
        .filter(|p| p.unsettled.is_none())
        .and_then(|p| p.last_applied.clone())?;
    yield_to(path, guard, &report.address, now, applied, Writer::unseen())
}

/// Ends the guard's watches in network namespaces gone with no successor: no namespace has the
/// inode now, and it is in use nowhere KPO looks (as a revert takes it for gone). A change
/// watched there would be judged on nothing, and `kept` (s49 storyU U3: deleted pods' changes got
/// such verdicts). The journal keeps the change (its revert is then skipped). Each such inode is
/// scanned for once per call, with or without a cookie in the journal (s49 review3: before Linux
/// 5.14 there is none).
fn end_watches_in_namespaces_gone(
    path: &ChangePath,
    guard: &mut Guard,
    live: &mut Option<HashSet<u64>>,
) {
    let mut gone: BTreeMap<u64, bool> = BTreeMap::new();
    for address in guard.watched_addresses() {
        let key = crate::journal::target_key(&address);
        let Some(inode) = crate::journal::key_netns_inode(&key) else {
            continue;
        };
        if live
            .get_or_insert_with(crate::actuate::sysctl::live_netns_inodes)
            .contains(&inode)
        {
            continue;
        }
        let is_gone = *gone
            .entry(inode)
            .or_insert_with(|| path.namespace_gone_for_certain(&address, &key));
        if is_gone {
            for id in guard.forget(&address) {
                info!("guard: no longer watching #{id} ({address}): its network namespace is gone");
            }
        }
    }
}

/// Forgets what the journal knows of parameters in network namespaces that are gone, their inode
/// now naming another namespace (the cookie differs): that namespace's value is not a person's
/// change, and its original is not KPO's to put back. Yielded parameters too: a new namespace
/// does not inherit a dead one's yield.
fn forget_gone_namespaces(
    path: &mut ChangePath,
    guard: &mut Guard,
    live: &mut Option<HashSet<u64>>,
) {
    // Only parameters with something to forget; after a `gone` the cookie is cleared.
    let in_namespaces: Vec<ParamAddress> = path
        .journal
        .params()
        .filter(|p| p.netns_cookie.is_some())
        .filter(|p| {
            p.original.is_some()
                || p.last_applied.is_some()
                || p.yielded.is_some()
                || !p.quarantine.is_empty()
        })
        .filter_map(crate::journal::ParamState::reach)
        .collect();
    let mut gone_for_certain: BTreeMap<u64, bool> = BTreeMap::new();
    for address in in_namespaces {
        if let Target::Netns {
            netns: NetnsRef::Inode(inode),
        } = &address.target
        {
            // A namespace that does not exist now cannot be entered: settled if nothing holds
            // it either, else looked at again when its inode is in use.
            if !live
                .get_or_insert_with(crate::actuate::sysctl::live_netns_inodes)
                .contains(inode)
            {
                let key = crate::journal::target_key(&address);
                // Once per inode: each look scans every process.
                let is_gone = *gone_for_certain
                    .entry(*inode)
                    .or_insert_with(|| path.namespace_gone_for_certain(&address, &key));
                if is_gone {
                    match path.settle_namespace_gone_for_certain(&address) {
                        Ok(()) => forget_watches(guard, &address),
                        Err(e) => {
                            warn!("journal: forgetting {address} in a namespace that is gone: {e}")
                        }
                    }
                }
                continue;
            }
        }
        // Opened by inode, checked to be that inode after the open (a PID reused in between is
        // caught): a cookie read from another namespace would make KPO forget a live one.
        match path.settle_if_namespace_gone(&address) {
            Ok(true) => forget_watches(guard, &address),
            Ok(false) => {}
            Err(e) => warn!("journal: forgetting {address} in a namespace that is gone: {e}"),
        }
    }
}

fn forget_watches(guard: &mut Guard, address: &ParamAddress) {
    for id in guard.forget(address) {
        info!("guard: no longer watching #{id} ({address}): its network namespace is gone");
    }
}

#[cfg(test)]
mod tests {
    use crate::{
        actuate::param::{ParamAddress, Value},
        change::tests::{kernel, path},
        guard::{Guard, GuardConfig},
        policy::{Proposal, Source},
    };

    /// An operator's 8192 applied at `address`, and the guard watching it.
    fn watched_operator_change(p: &mut crate::change::ChangePath, address: &ParamAddress) -> Guard {
        let r = p
            .propose(&Proposal {
                address: address.clone(),
                value: Value::Int(8192),
                source: Source::Operator,
                reason: "test".into(),
            })
            .unwrap();
        let mut guard = Guard::new(GuardConfig::default());
        guard.watch(
            r.journal_id.unwrap(),
            address.clone(),
            &Value::Int(8192),
            Value::Int(8192),
            None,
            None,
        );
        guard
    }

    /// A parameter KPO changed in a namespace whose inode now names another namespace (another
    /// cookie) is not someone's change: no yield; the journal forgets it there, the guard stops
    /// watching it. In the same namespace, a value someone else wrote is still yielded to.
    #[test]
    fn a_namespace_that_replaced_a_dead_one_is_not_yielded_to() {
        // Named by a path, which the check looks at without the live inodes' list (that needs a
        // namespace other than the test's own, which is the host's and has no cookie). The fake
        // kernel stands behind it; the file gives it an inode for its journal key.
        let ns = tempfile::tempdir().unwrap();
        std::fs::write(ns.path().join("net"), "").unwrap();
        let address: ParamAddress = format!(
            "net.core.somaxconn@netns:{}",
            ns.path().join("net").display()
        )
        .parse()
        .unwrap();
        let policy = "[params.\"net.core.somaxconn\"]\nmode = \"auto\"\nmin = 128\nmax = 65535\n";
        for same_namespace in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let k = kernel(&[(&address.to_string(), Value::Int(4096))]);
            k.0.lock().unwrap().netns_cookie = Some(7);
            let (mut p, _) = path(dir.path(), policy, &k);
            let mut guard = watched_operator_change(&mut p, &address);
            assert_eq!(
                p.journal.param_state(&address).unwrap().netns_cookie,
                Some(7)
            );
            // The namespace's own value now: the default, not KPO's.
            k.0.lock()
                .unwrap()
                .values
                .insert(address.to_string(), Value::Int(4096));
            if !same_namespace {
                k.0.lock().unwrap().netns_cookie = Some(8);
            }
            let events = super::check_values(&mut p, &mut guard);
            let state = p.journal.param_state(&address).unwrap().clone();
            if same_namespace {
                assert_eq!(events.len(), 1, "yielded to whoever wrote it");
                assert!(state.yielded.is_some());
            } else {
                assert!(events.is_empty(), "{events:?}");
                assert!(state.yielded.is_none());
                assert_eq!((state.original, state.last_applied), (None, None));
                assert_eq!(guard.watching(), 0);
                assert!(p
                    .journal
                    .records()
                    .iter()
                    .any(|r| matches!(r, crate::journal::Record::Gone { .. })));
                // Reopened, the journal still knows nothing of it there.
                drop(p);
                let (p, _) = path(dir.path(), policy, &k);
                assert_eq!(p.journal.param_state(&address).unwrap().original, None);
            }
        }
    }

    /// A change watched in a namespace that is gone with no successor (its inode in use nowhere
    /// KPO looks) is no longer watched: it would be judged on nothing and `kept` (s49 storyU U3),
    /// and the journal settles it as gone (s61 story BY-1). Where KPO cannot see every process
    /// (a PID namespace of its own), nothing is taken for gone, and the watch stays.
    #[test]
    fn a_change_in_a_namespace_gone_for_good_is_no_longer_watched() {
        // An inode no namespace of this machine has.
        let inode = (4026539991u64..)
            .find(|&i| !crate::actuate::sysctl::netns_in_use(i))
            .unwrap();
        let address: ParamAddress = format!("net.core.somaxconn@netns:{inode}").parse().unwrap();
        let policy = "[params.\"net.core.somaxconn\"]\nmode = \"auto\"\nmin = 128\nmax = 65535\n";
        // With the namespace's cookie in the journal, and without one (before Linux 5.14, or
        // one that could not be read: s49 review3).
        for cookie in [Some(7), None] {
            let dir = tempfile::tempdir().unwrap();
            let k = kernel(&[(&address.to_string(), Value::Int(4096))]);
            k.0.lock().unwrap().netns_cookie = cookie;
            let (mut p, _) = path(dir.path(), policy, &k);
            let mut guard = watched_operator_change(&mut p, &address);
            assert!(guard.watches(&address));
            // Deleted: it cannot be entered.
            k.0.lock().unwrap().netns_gone = true;
            let events = super::check_values(&mut p, &mut guard);
            assert!(events.is_empty(), "{events:?}");
            let sees_all = crate::actuate::sysctl::sees_every_process();
            assert_eq!(
                guard.watching(),
                usize::from(!sees_all),
                "cookie {cookie:?}, sees every process: {sees_all}"
            );
            // With the namespace's cookie, the journal settles it as gone where every process
            // is seen (s61 story BY-1); without one (or not seeing them all) it keeps the change,
            // whose revert is skipped as gone.
            let settled = cookie.is_some() && sees_all;
            let state = p.journal.param_state(&address).unwrap();
            assert_eq!(
                state.last_applied,
                (!settled).then_some(Value::Int(8192)),
                "cookie {cookie:?}, sees every process: {sees_all}"
            );
            assert_eq!(
                (p.journal.records().iter())
                    .filter(|r| matches!(r, crate::journal::Record::Gone { .. }))
                    .count(),
                usize::from(settled)
            );
            // Once: settled, it is looked at no more.
            super::check_values(&mut p, &mut guard);
            assert_eq!(
                (p.journal.records().iter())
                    .filter(|r| matches!(r, crate::journal::Record::Gone { .. }))
                    .count(),
                usize::from(settled)
            );
        }
    }

    /// A NIC KPO changed whose name names a new device now (a veth made again, a NIC replaced):
    /// the value under the name is the new device's, nobody's change to KPO's. No yield; the
    /// journal settles the old device as gone, once, and the guard stops watching it. A NIC with
    /// no device under its name or its index (removed, or moved to another network namespace,
    /// which keeps its settings) and a renamed one are neither yielded to nor settled, at every
    /// window (the guard keeps watching); one moved back with its index and KPO's value is
    /// KPO's still. On the same device, a value someone else wrote is still yielded to.
    #[test]
    fn a_new_device_under_a_nics_name_is_not_yielded_to() {
        use crate::actuate::coalesce::CoalesceSettings;
        const RX: &str = "ethtool:eth0:rx-usecs";
        let address: ParamAddress = RX.parse().unwrap();
        let gone = |p: &crate::change::ChangePath| {
            p.journal
                .records()
                .iter()
                .filter(|r| matches!(r, crate::journal::Record::Gone { .. }))
                .count()
        };
        let other = CoalesceSettings {
            rx_usecs: 8,
            adaptive_rx: false,
        };
        for what in ["replaced", "removed", "moved", "renamed", "a person"] {
            let dir = tempfile::tempdir().unwrap();
            let (mut p, nic, id) = crate::change::tests::nic_changed(dir.path(), false);
            let mut guard = Guard::new(GuardConfig::default());
            guard.watch(
                id,
                address.clone(),
                &Value::Int(20),
                Value::Int(20),
                None,
                None,
            );
            match what {
                "replaced" => {
                    nic.remove_nic("eth0").add_nic("eth0", other);
                }
                "removed" => {
                    nic.remove_nic("eth0");
                }
                "moved" => {
                    nic.move_nic_out("eth0");
                }
                "renamed" => {
                    nic.rename_nic("eth0", "lan0");
                }
                _ => {
                    // Written on the same device, whose index it keeps.
                    nic.add_nic("eth0", other);
                }
            }
            let events = super::check_values(&mut p, &mut guard);
            let state = p.journal.param_state(&address).unwrap().clone();
            if what == "a person" {
                assert_eq!(events.len(), 1, "yielded to whoever wrote it");
                assert!(state.yielded.is_some());
                assert_eq!(gone(&p), 0);
                continue;
            }
            assert!(events.is_empty(), "{what}: {events:?}");
            assert!(state.yielded.is_none(), "{what}");
            if what != "replaced" {
                // Not known: nothing settled, at the next window either.
                for _ in 0..2 {
                    assert!(super::check_values(&mut p, &mut guard).is_empty());
                    assert_eq!(gone(&p), 0, "{what}");
                    let state = p.journal.param_state(&address).unwrap();
                    assert_eq!(state.last_applied, Some(Value::Int(20)), "{what}");
                    assert!(state.yielded.is_none(), "{what}");
                    assert_eq!(guard.watching(), 1, "{what}");
                }
                if what == "moved" {
                    // Back with its index and KPO's value: KPO's, watched, not yielded.
                    nic.move_nic_back("eth0");
                    assert!(super::check_values(&mut p, &mut guard).is_empty());
                    let state = p.journal.param_state(&address).unwrap();
                    assert_eq!(state.last_applied, Some(Value::Int(20)));
                    assert!(state.yielded.is_none());
                    assert_eq!(guard.watching(), 1);
                }
                continue;
            }
            assert_eq!((state.original, state.last_applied), (None, None), "{what}");
            assert_eq!(guard.watching(), 0, "{what}");
            assert_eq!(gone(&p), 1, "{what}");
            // Once.
            assert!(super::check_values(&mut p, &mut guard).is_empty());
            assert_eq!(gone(&p), 1, "{what}");
            if what == "replaced" {
                assert_eq!(nic.settings("eth0"), Some(other));
            }
        }
    }

    /// A namespace named by a path, deleted and made again under the same name (a new inode):
    /// the value at the path is the new namespace's own, not someone's change to KPO's. No
    /// yield, neither of the parameter KPO changed nor of the new namespace's, which KPO may
    /// still change. Defect: yielded every window, under the new namespace's key.
    /// A yield left on a NIC's old device binds nothing on the new device under its name: an
    /// administrator turned adaptive-rx back on over KPO's rx-usecs (yielded to), then the NIC
    /// was replaced. The next change of rx-usecs finds the device gone through rx-usecs, and
    /// settles the switch made on the same device with it: the change turns the new device's
    /// adaptive-rx off as the policy allows. Defect: the switch stayed yielded for good, and
    /// every change failed with "someone else turned it on".
    #[test]
    fn a_yield_on_a_nics_old_device_does_not_bind_the_new_one() {
        use crate::actuate::coalesce::CoalesceSettings;
        const RX: &str = "ethtool:eth0:rx-usecs";
        const ADAPTIVE_RX: &str = "ethtool:eth0:adaptive-rx";
        let rx = |v| Proposal {
            address: RX.parse().unwrap(),
            value: Value::Int(v),
            source: Source::Rules,
            reason: "test".into(),
        };
        let dir = tempfile::tempdir().unwrap();
        let (mut p, nic) = crate::change::tests::nic_under_dim(dir.path(), true);
        let r = p.propose(&rx(30)).unwrap();
        assert_eq!(r.status, crate::change::ChangeStatus::Applied, "{r:?}");
        assert!(!nic.settings("eth0").unwrap().adaptive_rx);
        nic.set_externally(
            "eth0",
            CoalesceSettings {
                rx_usecs: 30,
                adaptive_rx: true,
            },
        );
        let mut guard = Guard::new(GuardConfig::default());
        super::check_values(&mut p, &mut guard);
        let switch: ParamAddress = ADAPTIVE_RX.parse().unwrap();
        assert!(p.journal.param_state(&switch).unwrap().yielded.is_some());
        nic.remove_nic("eth0").add_nic(
            "eth0",
            CoalesceSettings {
                rx_usecs: 8,
                adaptive_rx: true,
            },
        );
        let r = p.propose(&rx(30)).unwrap();
        assert_eq!(r.status, crate::change::ChangeStatus::Applied, "{r:?}");
        let now = nic.settings("eth0").unwrap();
        assert_eq!((now.rx_usecs, now.adaptive_rx), (30, false));
        let mut gone: Vec<String> = p
            .journal
            .records()
            .iter()
            .filter_map(|r| match r {
                crate::journal::Record::Gone { key, .. } => Some(key.clone()),
                _ => None,
            })
            .collect();
        gone.sort();
        assert_eq!(gone, vec![ADAPTIVE_RX.to_string(), RX.to_string()]);
    }

    #[test]
    fn a_path_that_names_another_namespace_now_is_not_yielded_to() {
        let ns = tempfile::tempdir().unwrap();
        let file = ns.path().join("web");
        std::fs::write(&file, "").unwrap();
        crate::policy::stand_in_netns(&file);
        let address: ParamAddress = format!("net.core.somaxconn@netns:{}", file.display())
            .parse()
            .unwrap();
        let policy = "[params.\"net.core.somaxconn\"]\nmode = \"auto\"\nmin = 128\nmax = 65535\n";
        let dir = tempfile::tempdir().unwrap();
        let k = kernel(&[(&address.to_string(), Value::Int(4096))]);
        let (mut p, _) = path(dir.path(), policy, &k);
        let mut guard = Guard::new(GuardConfig::default());
        p.propose(&Proposal {
            address: address.clone(),
            value: Value::Int(8192),
            source: Source::Operator,
            reason: "test".into(),
        })
        .unwrap();
        let old_key = crate::journal::target_key(&address);
        // Made again: a new file (so a new inode) put in its place, with its own default.
        std::fs::write(ns.path().join("web.new"), "").unwrap();
        std::fs::rename(ns.path().join("web.new"), &file).unwrap();
        assert_ne!(crate::journal::target_key(&address), old_key);
        k.0.lock()
            .unwrap()
            .values
            .insert(address.to_string(), Value::Int(4096));
        for _ in 0..2 {
            let events = super::check_values(&mut p, &mut guard);
            assert!(events.is_empty(), "{events:?}");
        }
        assert!(p.journal.params().all(|s| s.yielded.is_none()));
        // The new namespace is KPO's to change.
        let r = p
            .propose(&Proposal {
                address: address.clone(),
                value: Value::Int(16384),
                source: Source::Rules,
                reason: "test".into(),
            })
            .unwrap();
        assert_eq!(r.status, crate::change::ChangeStatus::Applied, "{r:?}");
    }

    /// `kpo resume PARAM` hands a yielded parameter back with the person's value in the
    /// kernel: the next window's value check does not yield it again, an advisor may change it,
    /// and a person's later write is yielded to as before.
    #[test]
    fn a_resumed_parameter_is_not_yielded_again_until_someone_else_writes() {
        let address: ParamAddress = "net.core.somaxconn".parse().unwrap();
        let policy = "[params.\"net.core.somaxconn\"]\nmode = \"auto\"\nmin = 128\nmax = 65535\n";
        let dir = tempfile::tempdir().unwrap();
        let k = kernel(&[("net.core.somaxconn", Value::Int(4096))]);
        let (mut p, _) = path(dir.path(), policy, &k);
        let mut guard = Guard::new(GuardConfig::default());
        let propose = |p: &mut crate::change::ChangePath, v: i64| {
            p.propose(&Proposal {
                address: address.clone(),
                value: Value::Int(v.into()),
                source: Source::Rules,
                reason: "test".into(),
            })
            .unwrap()
            .status
        };
        let person_writes = |v: i64| {
            k.0.lock()
                .unwrap()
                .values
                .insert("net.core.somaxconn".into(), Value::Int(v.into()))
        };
        assert_eq!(propose(&mut p, 8192), crate::change::ChangeStatus::Applied);
        person_writes(3000);
        assert_eq!(super::check_values(&mut p, &mut guard).len(), 1);
        assert_eq!(
            p.journal.resume_param("net.core.somaxconn").unwrap().len(),
            1
        );

        assert!(super::check_values(&mut p, &mut guard).is_empty());
        // An agent's own revert of the change from before the yield leaves the person's value.
        let first = p.journal.param_state(&address).unwrap().applied[0].0;
        let undo = p.revert_own(first, Source::Guard, "test").unwrap();
        assert_eq!(undo.status, crate::change::ChangeStatus::Skipped);
        assert_eq!(p.read(&address).unwrap(), Value::Int(3000));
        let state = p.journal.param_state(&address).unwrap();
        assert!(state.yielded.is_none());
        assert_eq!((&state.last_applied, state.holding), (&None, None));
        // The journal reopened says the same.
        drop(p);
        let (mut p, _) = path(dir.path(), policy, &k);
        assert!(super::check_values(&mut p, &mut guard).is_empty());

        assert_eq!(propose(&mut p, 6000), crate::change::ChangeStatus::Applied);
        assert!(super::check_values(&mut p, &mut guard).is_empty());
        person_writes(5000);
        assert_eq!(super::check_values(&mut p, &mut guard).len(), 1);
    }

    /// The sysctl watch does not see which namespace's copy a write went to: the writer named for
    /// a yield is the latest write of the value found, and none when no write seen has it (s52
    /// storyAG AG-1: a write of 50 in another namespace was named for the 41 found here).
    #[test]
    fn the_writer_named_for_a_yield_wrote_the_value_found() {
        const SOMAXCONN: &str = "net.core.somaxconn";
        let policy = "[params.\"net.core.somaxconn\"]\nmode = \"auto\"\nmin = 128\nmax = 65535\n";
        let write =
            |pid: u32, comm: &str, value: &str| crate::sensors::sysctl_watch::SysctlWriteEvent {
                pid,
                comm: comm.into(),
                name: SOMAXCONN.into(),
                value: value.into(),
                value_truncated: false,
            };
        for (writes, named) in [
            (
                vec![write(1, "handfix", "41"), write(2, "sysctl", "50")],
                Some("handfix"),
            ),
            (vec![write(2, "sysctl", "50")], None),
        ] {
            let dir = tempfile::tempdir().unwrap();
            let k = kernel(&[(SOMAXCONN, Value::Int(4096))]);
            let (mut p, _) = path(dir.path(), policy, &k);
            let r = p
                .propose(&Proposal {
                    address: SOMAXCONN.parse().unwrap(),
                    value: Value::Int(1200),
                    source: Source::Operator,
                    reason: "test".into(),
                })
                .unwrap();
            assert_eq!(r.status, crate::change::ChangeStatus::Applied);
            k.0.lock()
                .unwrap()
                .values
                .insert(SOMAXCONN.into(), Value::Int(41));
            let (mut d, _) = crate::run::deciding::Deciding::with_path(p, false).unwrap();
            let events = serde_json::to_value(d.on_sysctl_writes(&writes)).unwrap();
            let yielded: Vec<_> = (events.as_array().unwrap().iter())
                .filter(|e| e["kind"] == "admin_override")
                .collect();
            assert_eq!(yielded.len(), 1, "{events}");
            assert_eq!(yielded[0]["comm"].as_str(), named, "{events}");
        }
    }

    /// In a journal written before outcomes repeated their intent, the intent line of KPO's
    /// latest change is damaged: its outcome cannot say which parameter it changed, so the
    /// parameter's last applied value is the change before's. The value check does not take
    /// KPO's own newer value for someone else's (a yield KPO would never undo), across restarts,
    /// until KPO's next change of it; after that, a person's write is yielded to as before.
    #[test]
    fn a_damaged_intent_line_of_an_old_journal_yields_nothing_until_the_next_change() {
        use crate::journal::{store, Record};
        const SOMAXCONN: &str = "net.core.somaxconn";
        let address: ParamAddress = SOMAXCONN.parse().unwrap();
        let policy = "[params.\"net.core.somaxconn\"]\nmode = \"auto\"\nmin = 128\nmax = 65535\n";
        let dir = tempfile::tempdir().unwrap();
        let k = kernel(&[(SOMAXCONN, Value::Int(4096))]);
        let propose = |p: &mut crate::change::ChangePath, v: i64| {
            p.propose(&Proposal {
                address: address.clone(),
                value: Value::Int(v.into()),
                source: Source::Operator,
                reason: "test".into(),
            })
            .unwrap()
            .status
        };
        let (mut p, _) = path(dir.path(), policy, &k);
        for v in [1000, 1100] {
            assert_eq!(propose(&mut p, v), crate::change::ChangeStatus::Applied);
        }
        drop(p);
        // As an older KPO wrote it: outcomes without their intent's copy.
        let file = dir.path().join(store::JOURNAL_FILE);
        let old: Vec<u8> = std::fs::read(&file)
            .unwrap()
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| match store::decode::<Record>(l).unwrap() {
                Record::Outcome {
                    id, ts_ms, outcome, ..
                } => Record::Outcome {
                    id,
                    ts_ms,
                    outcome,
                    intent: None,
                },
                r => r,
            })
            .flat_map(|r| store::encode(&r))
            .collect();
        std::fs::write(&file, old).unwrap();
        crate::change::tests::damage_journal_line(dir.path(), 3);

        let mut guard = Guard::new(GuardConfig::default());
        let (mut p, _) = path(dir.path(), policy, &k);
        assert!(
            p.journal
                .warnings()
                .iter()
                .any(|w| w.starts_with("net.core.somaxconn: journal.log line 3, damaged")),
            "{:?}",
            p.journal.warnings()
        );
        assert!(super::check_values(&mut p, &mut guard).is_empty());
        drop(p);
        // The rewritten journal no longer has the damaged line; what it showed stays.
        let (mut p, _) = path(dir.path(), policy, &k);
        assert!(
            p.journal.warnings().is_empty(),
            "{:?}",
            p.journal.warnings()
        );
        assert!(super::check_values(&mut p, &mut guard).is_empty());
        assert!(p.journal.param_state(&address).unwrap().yielded.is_none());
        // Nor does the sysctl watch, for a write of that name it saw (in any namespace).
        let (mut d, _) = crate::run::deciding::Deciding::with_path(p, false).unwrap();
        let write = crate::sensors::sysctl_watch::SysctlWriteEvent {
            pid: 4242,
            comm: "containerd".into(),
            name: SOMAXCONN.into(),
            value: "512".into(),
            value_truncated: false,
        };
        assert!(d.on_sysctl_writes(&[write]).is_empty());
        drop(d);
        let (mut p, _) = path(dir.path(), policy, &k);
        assert!(p.journal.param_state(&address).unwrap().yielded.is_none());

        assert_eq!(propose(&mut p, 1200), crate::change::ChangeStatus::Applied);
        assert!(p.journal.param_state(&address).unwrap().unsettled.is_none());
        k.0.lock()
            .unwrap()
            .values
            .insert(SOMAXCONN.into(), Value::Int(3000));
        assert_eq!(super::check_values(&mut p, &mut guard).len(), 1);
    }

    /// intel_pstate and amd-pstate hold a policy's energy-performance preference at
    /// `performance` under the `performance` governor: KPO's preference found so after KPO set
    /// that governor was moved by the driver, not by a person, and stays KPO's; found so after a
    /// person set the governor, it is theirs, as after any other write of theirs.
    #[test]
    fn a_preference_the_driver_holds_under_kpos_performance_governor_is_not_yielded() {
        use crate::change::cpufreq_tests::{driver_path, propose, Driver, EPP, GOVERNOR};
        let epp: ParamAddress = EPP.parse().unwrap();
        for by_kpo in [true, false] {
            let dir = tempfile::tempdir().unwrap();
            let driver = Driver::new(800_000, 2_000_000, "powersave", "balance_performance");
            let mut p = driver_path(dir.path(), &driver);
            let mut guard = Guard::new(GuardConfig::default());
            let performance = Value::Word("performance".into());
            let r = propose(&mut p, EPP, Value::Word("power".into()));
            assert_eq!(r.status, crate::change::ChangeStatus::Applied, "{r:?}");
            if by_kpo {
                let r = propose(&mut p, GOVERNOR, performance.clone());
                assert_eq!(r.status, crate::change::ChangeStatus::Applied, "{r:?}");
            } else {
                let mut policy = driver.0.lock().unwrap();
                policy.store("scaling_governor", &performance).unwrap();
            }
            assert_eq!(driver.show(EPP), performance);
            let events = super::check_values(&mut p, &mut guard);
            let yielded = p.journal.param_state(&epp).unwrap().yielded.is_some();
            if by_kpo {
                assert!(events.is_empty(), "{events:?}");
                assert!(!yielded);
                // Still KPO's: the governor going back gives KPO's preference back.
                assert!(p
                    .revert_all("test")
                    .unwrap()
                    .iter()
                    .all(|r| r.status == crate::change::ChangeStatus::Reverted));
                assert_eq!(driver.show(EPP), Value::Word("balance_performance".into()));
            } else {
                assert_eq!(events.len(), 1, "{events:?}");
                assert!(yielded);
            }
        }
    }

    #[test]
    fn the_agents_own_namespace_is_live() {
        use std::os::unix::fs::MetadataExt;
        let own = std::fs::metadata("/proc/self/ns/net").unwrap().ino();
        let live = crate::actuate::sysctl::live_netns_inodes();
        assert!(live.contains(&own), "{own} not in {live:?}");
        assert!(!live.contains(&1), "inode 1 is no namespace");
    }
}
