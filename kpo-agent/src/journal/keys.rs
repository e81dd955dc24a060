//! The key a parameter's history is kept under, and the address that reaches its target now.
use super::*;

/// Whether `name`, as `kpo resume` takes it, names the parameter journaled under `key` (at
/// `address`): its key, its address as written, or its policy name, which names every target.
pub fn names_param(name: &str, key: &str, address: Option<&ParamAddress>) -> bool {
    key == name
        || address.is_some_and(|a| a.policy_name() == name || a.to_string() == name)
        || name
            .parse::<ParamAddress>()
            .is_ok_and(|a| target_key(&a) == key)
}

/// The key a parameter's history is kept under: its address, with a namespace path replaced by
/// the namespace's inode when it resolves (so `/run/netns/web` and its inode are one target).
/// A per-namespace key in the agent's own namespace, by inode or by a path to it, is the host's
/// ([`own_namespace_as_host`]): one kernel value, so one original, one last value and one rate
/// limit, whichever way it was addressed.
pub fn target_key(address: &ParamAddress) -> String {
    if let Some(host) = own_namespace_as_host(address) {
        return host.to_string();
    }
    if let Target::Netns { netns } = &address.target {
        if let Some(inode) = netns_inode(netns) {
            return format!("{}@netns:{inode}", address.policy_name());
        }
    }
    address.to_string()
}

/// A journal key as read from disk, under the name KPO uses for a sysctl the kernel shows under
/// two names (`SYSCTL_ALIASES`): an earlier version journaled `net.nf_conntrack_max` under that
/// name, and read as it was written it would be a second parameter beside
/// `net.netfilter.nf_conntrack_max`, with KPO's own value as its original.
pub(super) fn key_without_alias<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<String, D::Error> {
    String::deserialize(d).map(unalias)
}

/// [`key_without_alias`] for an optional key (`damaged`).
pub(super) fn optional_key_without_alias<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<String>, D::Error> {
    Option::<String>::deserialize(d).map(|key| key.map(unalias))
}

/// [`key_without_alias`] for the keys of a count per key (`archived`); the counts of an alias and
/// its name add up.
pub(super) fn keys_without_alias<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<BTreeMap<String, usize>, D::Error> {
    let mut counts = BTreeMap::new();
    for (key, n) in BTreeMap::<String, usize>::deserialize(d)? {
        *counts.entry(unalias(key)).or_insert(0) += n;
    }
    Ok(counts)
}

/// `key` with its sysctl name under the name KPO uses, when it is an alias.
fn unalias(key: String) -> String {
    let (name, target) = match key.split_once('@') {
        Some((name, target)) => (name, Some(target)),
        None => (key.as_str(), None),
    };
    if crate::actuate::param::sysctl_alias(name).is_none() {
        return key;
    }
    let name = crate::actuate::param::canonical_sysctl(name).unwrap_or_else(|_| name.into());
    match target {
        Some(target) => format!("{name}@{target}"),
        None => name,
    }
}

/// The inode of the network namespace a journal key names (`…@netns:INODE`), if it names one.
pub fn key_netns_inode(key: &str) -> Option<u64> {
    key.rsplit_once("@netns:")?.1.parse().ok()
}

/// The address that reaches the target of journal key `key` now, from `address`, the one it was
/// last reached by. A network namespace named by a path is kept under the inode the path named
/// ([`target_key`]); once the path no longer names that inode (`ip netns del NAME` while a process
/// keeps the namespace alive, or the name made again for another namespace), the path reaches
/// nothing, or another namespace, while the inode still names the one KPO changed: the actuator
/// finds it under /run/netns/* or /proc/*/ns/net, and the cookie check tells it from a namespace
/// that took the inode since. Any other address is returned as it is.
pub fn reach(address: &ParamAddress, key: &str) -> ParamAddress {
    let by_path = matches!(
        &address.target,
        Target::Netns {
            netns: NetnsRef::Path(_)
        }
    );
    match key_netns_inode(key) {
        Some(inode) if by_path && target_key(address) != key => ParamAddress {
            name: address.name.clone(),
            target: Target::Netns {
                netns: NetnsRef::Inode(inode),
            },
        },
        _ => address.clone(),
    }
}

/// The host's address of a per-namespace sysctl addressed to the agent's own network namespace
/// (by its inode or a path to it), as the rules and the policy take that namespace; `None` for
/// any other. A host-wide key addressed so is left as it is: the actuator refuses it
/// (docs/actuators.md), so that a change scoped to a namespace never becomes the whole host's.
pub fn own_namespace_as_host(address: &ParamAddress) -> Option<ParamAddress> {
    let Target::Netns { netns } = &address.target else {
        return None;
    };
    if !crate::actuate::sysctl::is_per_netns(&address.name) {
        return None;
    }
    let inode = netns_inode(netns)?;
    (Some(inode) == own_netns_inode()).then(|| ParamAddress {
        name: address.name.clone(),
        target: Target::Host,
    })
}
