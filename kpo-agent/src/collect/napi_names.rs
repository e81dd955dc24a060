//! Names of the devices NAPI polls, each looked up in the device's own network namespace: an
//! ifindex names a device only there, so the agent's namespace would name another device, or none.
use std::collections::BTreeMap;

use kpo_common::{NapiCounters, NapiKey};

/// A name as it was found, with the poll count it was found at.
struct Known {
    polls: u64,
    name: Option<String>,
}

/// Looks a device's name up when it is first polled and again whenever it has been polled since
/// (a device may be renamed, or its index given to another after it is deleted), not for every
/// device ever counted on every tick.
#[derive(Default)]
pub struct NapiNames {
    known: BTreeMap<NapiKey, Known>,
}

impl NapiNames {
    /// The name of each device in `napi` that has one: `resolve` gives the name of `key.ifindex`
    /// in namespace `key.netns`, None when that namespace could not be entered or has no such
    /// device. The per-CPU backlog has no device and is not looked up.
    pub fn update(
        &mut self,
        napi: &BTreeMap<NapiKey, NapiCounters>,
        mut resolve: impl FnMut(NapiKey) -> Option<String>,
    ) -> BTreeMap<NapiKey, String> {
        self.known.retain(|key, _| napi.contains_key(key));
        let mut names = BTreeMap::new();
        for (key, counters) in napi {
            if *key == NapiKey::BACKLOG {
                continue;
            }
            let stale = self
                .known
                .get(key)
                .is_none_or(|k| k.polls != counters.polls);
            if stale {
                let name = resolve(*key);
                self.known.insert(
                    *key,
                    Known {
                        polls: counters.polls,
                        name,
                    },
                );
            }
            if let Some(name) = self.known.get(key).and_then(|k| k.name.clone()) {
                names.insert(*key, name);
            }
        }
        names
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn polled(polls: u64) -> NapiCounters {
        NapiCounters {
            polls,
            packets: polls,
            budget_exhausted: 0,
        }
    }

    /// Two namespaces' devices at the same ifindex keep their own names; a namespace the agent
    /// could not enter has none; the backlog is never looked up; a device not polled since is
    /// not looked up again.
    #[test]
    fn each_device_is_named_in_its_own_namespace() {
        let a = NapiKey {
            netns: 4026532001,
            ifindex: 2,
        };
        let b = NapiKey {
            netns: 4026532002,
            ifindex: 2,
        };
        let unentered = NapiKey {
            netns: 4026532003,
            ifindex: 2,
        };
        let namespaces = BTreeMap::from([(a.netns, "veth-a"), (b.netns, "veth-b")]);
        let lookups = std::cell::RefCell::new(Vec::new());
        let resolve = |key: NapiKey| {
            lookups.borrow_mut().push(key);
            assert_eq!(key.ifindex, 2);
            namespaces.get(&key.netns).map(|n| n.to_string())
        };
        let mut names = NapiNames::default();
        let napi = BTreeMap::from([
            (NapiKey::BACKLOG, polled(9)),
            (a, polled(3)),
            (b, polled(5)),
            (unentered, polled(1)),
        ]);
        let got = names.update(&napi, resolve);
        assert_eq!(
            got,
            BTreeMap::from([(a, "veth-a".to_string()), (b, "veth-b".to_string())])
        );
        assert_eq!(*lookups.borrow(), [a, b, unentered]);

        // Only b was polled since: only b is looked up, a keeps its name.
        lookups.borrow_mut().clear();
        let napi = BTreeMap::from([(a, polled(3)), (b, polled(6)), (unentered, polled(1))]);
        let got = names.update(&napi, resolve);
        assert_eq!(got.len(), 2);
        assert_eq!(got[&a], "veth-a");
        assert_eq!(*lookups.borrow(), [b]);
    }
}
