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
use std::{collections::HashSet, os::unix::fs::MetadataExt};

use tracing::warn;

use crate::{
    actuate::param::{NetnsRef, ParamAddress, Target, Value},
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
    let managed: Vec<_> = path
        .journal
        .params()
        .filter(|p| p.yielded.is_none())
        .filter_map(|p| Some((p.address.clone()?, p.last_applied.clone()?)))
        .collect();
    let mut live: Option<HashSet<u64>> = None;
    let mut events = Vec::new();
    for (address, applied) in managed {
        // A namespace named by inode that no longer exists is skipped on one scan per window;
        // reading it would scan every process for each such parameter, and the journal keeps
        // them all.
        if let Target::Netns {
            netns: NetnsRef::Inode(inode),
        } = &address.target
        {
            if !live.get_or_insert_with(live_netns).contains(inode) {
                continue;
            }
        }
        // A parameter that cannot be read now (a NIC or a namespace gone) is not taken to be
        // someone's change.
        let Ok(now) = path.read(&address) else {
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
    let applied = path
        .journal
        .param_state(&report.address)
        .and_then(|p| p.last_applied.clone())?;
    yield_to(path, guard, &report.address, now, applied, Writer::unseen())
}

/// The inodes of the network namespaces that exist now: bound under /run/netns, or held by a
/// process.
fn live_netns() -> HashSet<u64> {
    let bound = std::fs::read_dir("/run/netns")
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .map(|e| e.path());
    let held = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .filter(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|n| n.parse::<u32>().is_ok())
        })
        .map(|e| e.path().join("ns/net"));
    bound
        .chain(held)
        .filter_map(|p| std::fs::metadata(p).ok())
        .map(|m| m.ino())
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_agents_own_namespace_is_live() {
        use std::os::unix::fs::MetadataExt;
        let own = std::fs::metadata("/proc/self/ns/net").unwrap().ino();
        let live = super::live_netns();
        assert!(live.contains(&own), "{own} not in {live:?}");
        assert!(!live.contains(&1), "inode 1 is no namespace");
    }
}
