//! Yielding to people for the parameters no eBPF program watches: cpufreq attributes and NIC
//! coalescing. Once per window, every such parameter KPO manages (journaled with a last applied
//! value, not yielded) is read; a value other than the one KPO applied was written by someone
//! else. KPO then stops managing it at that target, keeps their value, the guard stops watching
//! it, and an `admin_override` event says so (with no pid or comm: nobody saw the writer).
//! Sysctls are left to the `cgroup/sysctl` watch ([`super::deciding::Deciding::on_sysctl_writes`]).
use tracing::warn;

use crate::{actuate::param::ParamKind, change::ChangePath, guard::Guard, output::events::Event};

/// Who the journal says took over a parameter found changed by value.
pub const BY_VALUE_CHECK: &str = "another process (the value differed from the one KPO applied)";

/// Compares each managed cpufreq and coalescing parameter with the value KPO last applied.
pub fn check_values(path: &mut ChangePath, guard: &mut Guard) -> Vec<Event> {
    let managed: Vec<_> = path
        .journal
        .params()
        .filter(|p| p.yielded.is_none())
        .filter_map(|p| Some((p.address.clone()?, p.last_applied.clone()?)))
        .filter(|(a, _)| matches!(a.kind(), ParamKind::Cpufreq | ParamKind::Ethtool))
        .collect();
    let mut events = Vec::new();
    for (address, applied) in managed {
        // A parameter that cannot be read now (a NIC gone) is not taken to be someone's change.
        let Ok(now) = path.read(&address) else {
            continue;
        };
        if now == applied {
            continue;
        }
        if let Err(e) = path
            .journal
            .set_yielded(&address, Some(now.clone()), BY_VALUE_CHECK)
        {
            warn!("journal: yielding {address}: {e}");
            continue;
        }
        guard.forget(&address);
        warn!(
            "{address} is {now}, not the {applied} KPO applied: someone else changed it; KPO \
             stops managing it there (kpo resume {} hands it back)",
            address.policy_name()
        );
        events.push(Event::AdminOverride {
            target: address.to_string(),
            pid: None,
            comm: None,
            seen_by: "value_check",
            value: now,
            kpo_value: Some(applied),
        });
    }
    events
}
