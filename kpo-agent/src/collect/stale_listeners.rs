//! Which entries of the accept-queue sensor's map to delete: those of listeners that are gone.
//!
//! `KPO_LISTENERS` is an LRU map of at least 4096 keys (sized to the CPUs at load), and an entry
//! stays after its listener closes. On a
//! node whose pods come and go, every pod's namespace leaves its listeners' entries behind, the
//! map fills, and every tick reads all of it (one lookup per entry, a value per CPU). The LRU
//! would evict them only when a new key needs room.
//!
//! An entry is deleted once its listener has been idle for two windows ([`idle_before_delete`]):
//! not listed by its namespace's sock_diag dump (in a dump that succeeded, or its namespace is
//! gone) and with no new count. A window that saw the listener's last counts has ended by then,
//! so it reports them. Not longer: a tick reads every entry, so after a node's pods go, the
//! entries of their listeners would cost every tick as much as live ones while they stay (and a
//! fuller map makes the LRU evict live listeners sooner). A listener that comes back later counts
//! from 0 in a new entry, which the reader numbers apart from the old one
//! (`bpf_maps::EntryIds`): a window that began before the deletion, holding the old entry's
//! count, counts the new entry whole, as one that began after it does (the old entry counted
//! nothing in the window: it was idle for two windows, longer than the window).
use std::{
    collections::{BTreeMap, HashMap},
    time::{Duration, Instant},
};

use kpo_common::ListenerKey;

use super::{bpf_maps::ListenerBpf, ListenerView, NetnsRead};

/// How long a listener's entry stays after it was last listed or counted: two windows, one for
/// the window that saw its last counts and one for a tick that comes late.
pub fn idle_before_delete(window: Duration) -> Duration {
    window.saturating_mul(2)
}

#[derive(Debug)]
pub struct StaleListeners {
    /// Each entry of the map: when it was last active, and its counts then.
    last_active: HashMap<ListenerKey, (Instant, (u64, u64))>,
    idle_before_delete: Duration,
}

impl StaleListeners {
    pub fn for_windows_of(window: Duration) -> Self {
        Self {
            last_active: HashMap::new(),
            idle_before_delete: idle_before_delete(window),
        }
    }

    /// Notes which entries were active at `now`, and returns those idle for two windows, which
    /// it forgets: the caller deletes them from the map.
    pub fn update(
        &mut self,
        now: Instant,
        in_map: &BTreeMap<ListenerKey, ListenerBpf>,
        listed: &BTreeMap<ListenerKey, ListenerView>,
        namespaces: &BTreeMap<u64, NetnsRead>,
    ) -> Vec<ListenerKey> {
        // Entries the LRU evicted are forgotten.
        self.last_active.retain(|key, _| in_map.contains_key(key));
        let mut stale = Vec::new();
        for (key, bpf) in in_map {
            let counts = (bpf.enqueued, bpf.synack_retrans);
            // A namespace whose dump failed may still list it: unknown counts as active.
            let dump_failed = namespaces
                .get(&u64::from(key.netns))
                .is_some_and(|read| !read.listeners);
            let active = listed.contains_key(key) || dump_failed;
            match self.last_active.get_mut(key) {
                Some(seen) if active || seen.1 != counts => *seen = (now, counts),
                Some(seen) if now.duration_since(seen.0) >= self.idle_before_delete => {
                    stale.push(*key)
                }
                Some(_) => {}
                // First seen now: idle or not, its time starts here.
                None => {
                    self.last_active.insert(*key, (now, counts));
                }
            }
        }
        for key in &stale {
            self.last_active.remove(key);
        }
        stale
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(netns: u32, port: u16) -> ListenerKey {
        ListenerKey {
            netns,
            port,
            family: kpo_common::AF_INET,
        }
    }

    fn counts(enqueued: u64) -> ListenerBpf {
        ListenerBpf {
            enqueued,
            ..Default::default()
        }
    }

    fn view() -> ListenerView {
        ListenerView {
            addresses: vec![],
            depth: 0,
            limit: 128,
            drops: 0,
            socket_drops: BTreeMap::new(),
            sockets: BTreeMap::new(),
            pid: None,
            comm: None,
            full: None,
        }
    }

    fn read(listeners: bool) -> NetnsRead {
        NetnsRead {
            listeners,
            counters: true,
        }
    }

    #[test]
    fn only_a_listener_gone_and_idle_for_two_windows_is_deleted() {
        let t0 = Instant::now();
        let at = |secs: u64| t0 + Duration::from_secs(secs);
        // Windows of a minute: two minutes, not the 30 of the longest window.
        let limit = 120;
        let (closed, open, late, failed_ns, gone_ns) = (
            key(1, 80),
            key(1, 443),
            key(1, 8080),
            key(2, 80),
            key(3, 80),
        );
        let in_map = |late_count: u64| {
            BTreeMap::from([
                (closed, counts(10)),
                (open, counts(10)),
                (late, counts(late_count)),
                (failed_ns, counts(1)),
                (gone_ns, counts(1)),
            ])
        };
        let listed = BTreeMap::from([(open, view())]);
        // Namespace 3 is no longer known; namespace 2's dump fails.
        let namespaces = BTreeMap::from([(1, read(true)), (2, read(false))]);
        let mut stale = StaleListeners::for_windows_of(Duration::from_secs(60));
        assert!(stale
            .update(at(0), &in_map(5), &listed, &namespaces)
            .is_empty());
        // A count after the close (a connection the listener got before it went) restarts the
        // clock.
        assert!(stale
            .update(at(100), &in_map(6), &listed, &namespaces)
            .is_empty());
        assert!(stale
            .update(at(limit - 1), &in_map(6), &listed, &namespaces)
            .is_empty());
        let mut deleted = stale.update(at(limit), &in_map(6), &listed, &namespaces);
        deleted.sort();
        assert_eq!(deleted, vec![closed, gone_ns]);
        // Once deleted, a key still read (the delete raced a new entry) starts again from now.
        assert!(stale
            .update(at(limit + 1), &in_map(6), &listed, &namespaces)
            .is_empty());
        assert_eq!(
            stale.update(at(limit + 100), &in_map(6), &listed, &namespaces),
            vec![late]
        );
        // An entry the LRU evicted is forgotten: it is not returned, and back later it starts anew.
        let only_open = BTreeMap::from([(open, counts(10))]);
        assert!(stale
            .update(at(2 * limit + 200), &only_open, &listed, &namespaces)
            .is_empty());
        assert_eq!(stale.last_active.len(), 1);
    }
}
