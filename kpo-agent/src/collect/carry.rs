//! The last sock_diag dump of each namespace that succeeded, carried across dumps that failed.
//!
//! A window's listener drops are the change of each socket's `sk_drops` between two readings.
//! When a namespace's dump fails at a window's end, that window cannot count its drops; if the
//! next window then started from the failed reading, the drops of both windows would be lost. So
//! every sample carries, for each namespace, its last good reading: a tick window (one tick after
//! another) counts from it; a window of several ticks whose start failed counts from the dump the
//! window before counted from (`WindowBuilder::finish_and_continue`), which for the first window
//! is this carried one.
use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Arc,
    time::{Duration, Instant},
};

use time::OffsetDateTime;

use super::{ListenerView, NetnsCounters, NetnsRead};
use kpo_common::ListenerKey;

/// How long, after a namespace was last known, its last good reading is kept. A namespace can drop
/// out of discovery while it lives (held only by a descriptor or a bind mount outside
/// /run/netns) and come back; within this time its listeners count from their last reading,
/// after it they count as new (every drop since they were created). Bounded, so that namespaces
/// that come and go (containers) do not accumulate.
pub const KEEP_VANISHED: Duration = Duration::from_secs(3600);

/// One namespace's listeners as one successful sock_diag dump gave them.
#[derive(Debug, Clone, PartialEq)]
pub struct ListenerReading {
    /// When it was read (the sample's `wall`).
    pub wall: OffsetDateTime,
    /// When it was read (the sample's `at`).
    pub at: Instant,
    /// The namespace's cookie, where it could be read: a reading of another namespace that had
    /// the same inode before does not count for this one.
    pub cookie: Option<u64>,
    pub listeners: BTreeMap<ListenerKey, ListenerView>,
}

impl ListenerReading {
    /// Whether this reading is of the namespace whose cookie is `now` (unknown cookies agree).
    pub fn same_namespace(&self, now: Option<u64>) -> bool {
        match (self.cookie, now) {
            (Some(then), Some(now)) => then == now,
            _ => true,
        }
    }
}

/// The last good reading of every namespace, kept from sample to sample.
#[derive(Debug, Default)]
pub struct Carry {
    last: BTreeMap<u64, Arc<ListenerReading>>,
    /// When each namespace with a kept reading was last among those known: the hour of
    /// [`KEEP_VANISHED`] runs from there, not from its last good dump.
    known_at: BTreeMap<u64, Instant>,
    /// The namespaces known at the previous sample, and when it was taken.
    previous: Option<(BTreeSet<u64>, Instant, OffsetDateTime)>,
}

impl Carry {
    /// Takes in one sample's dumps (`listeners` of the namespaces whose `NetnsRead::listeners`
    /// is true) and returns the last good reading of every namespace, for the sample to carry.
    /// `cookies`: the cookie of each namespace entered, where it could be read.
    pub fn update(
        &mut self,
        at: Instant,
        wall: OffsetDateTime,
        namespaces: &BTreeMap<u64, NetnsRead>,
        cookies: &BTreeMap<u64, u64>,
        listeners: &BTreeMap<ListenerKey, ListenerView>,
    ) -> BTreeMap<u64, Arc<ListenerReading>> {
        // A kept reading of a namespace that has died: its inode now names another one, which
        // is new.
        let mut replaced = BTreeSet::new();
        self.last.retain(|inum, r| {
            let same = r.same_namespace(cookies.get(inum).copied());
            if !same {
                replaced.insert(*inum);
            }
            same
        });
        let mut fresh: BTreeMap<u64, BTreeMap<ListenerKey, ListenerView>> = namespaces
            .iter()
            .filter(|(_, read)| read.listeners)
            .map(|(inum, _)| (*inum, BTreeMap::new()))
            .collect();
        for (key, view) in listeners {
            if let Some(own) = fresh.get_mut(&u64::from(key.netns)) {
                own.insert(*key, view.clone());
            }
        }
        // A namespace new since the previous sample whose first dump failed was created since
        // (as windows take one first known in them): it had no listeners then.
        if let Some((known, at, wall)) = &self.previous {
            for (inum, read) in namespaces {
                let new = !known.contains(inum) || replaced.contains(inum);
                if !read.listeners && new && !self.last.contains_key(inum) {
                    let empty = ListenerReading {
                        wall: *wall,
                        at: *at,
                        cookie: cookies.get(inum).copied(),
                        listeners: BTreeMap::new(),
                    };
                    self.last.insert(*inum, Arc::new(empty));
                }
            }
        }
        self.previous = Some((namespaces.keys().copied().collect(), at, wall));
        for (inum, listeners) in fresh {
            let reading = ListenerReading {
                wall,
                at,
                cookie: cookies.get(&inum).copied(),
                listeners,
            };
            self.last.insert(inum, Arc::new(reading));
        }
        forget_vanished(&mut self.last, &mut self.known_at, namespaces, at);
        self.last.clone()
    }
}

/// One namespace's netstat counters as one successful read gave them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CounterReading {
    /// When they were read (the sample's `at`).
    pub at: Instant,
    /// With the namespace's cookie then.
    pub counters: NetnsCounters,
}

/// The last good counters of every namespace, kept from sample to sample the way [`Carry`]
/// keeps dumps: a namespace that discovery no longer finds at a window's end (deleted, most
/// often) has its `netns[]` counters counted through its last good reading, as its listeners'
/// drops are, and should it come back (held by a descriptor), the next count starts there.
#[derive(Debug, Default)]
pub struct CounterCarry {
    last: BTreeMap<u64, CounterReading>,
    /// When each namespace with a kept reading was last among those known.
    known_at: BTreeMap<u64, Instant>,
}

impl CounterCarry {
    /// Takes in one sample's counters (of the namespaces whose `NetnsRead::counters` is true)
    /// and returns the last good reading of every namespace. `cookies`: the cookie of each
    /// namespace entered, where it could be read; a kept reading of another cookie was of a
    /// namespace that died, and goes.
    pub fn update(
        &mut self,
        at: Instant,
        namespaces: &BTreeMap<u64, NetnsRead>,
        cookies: &BTreeMap<u64, u64>,
        counters: &BTreeMap<u64, NetnsCounters>,
    ) -> BTreeMap<u64, CounterReading> {
        self.last
            .retain(|inum, r| match (r.counters.cookie, cookies.get(inum)) {
                (Some(then), Some(now)) => then == *now,
                _ => true,
            });
        for (inum, c) in counters {
            self.last.insert(*inum, CounterReading { at, counters: *c });
        }
        forget_vanished(&mut self.last, &mut self.known_at, namespaces, at);
        self.last.clone()
    }
}

/// Keeps, of the readings in `last`, those of namespaces known at `at` and of those last known
/// less than [`KEEP_VANISHED`] before; `known_at` (when each was last known) follows them.
fn forget_vanished<V>(
    last: &mut BTreeMap<u64, V>,
    known_at: &mut BTreeMap<u64, Instant>,
    namespaces: &BTreeMap<u64, NetnsRead>,
    at: Instant,
) {
    for inum in namespaces.keys() {
        known_at.insert(*inum, at);
    }
    last.retain(|inum, _| {
        namespaces.contains_key(inum)
            || known_at
                .get(inum)
                .is_some_and(|&t| at.saturating_duration_since(t) < KEEP_VANISHED)
    });
    known_at.retain(|inum, _| last.contains_key(inum));
}

#[cfg(test)]
mod tests {
    use super::*;

    const READ: NetnsRead = NetnsRead {
        listeners: true,
        counters: true,
    };

    fn view(drops: u64) -> ListenerView {
        ListenerView {
            addresses: vec!["127.0.0.1".parse().unwrap()],
            depth: 0,
            limit: 8,
            drops,
            socket_drops: [(11, drops)].into(),
            sockets: BTreeMap::new(),
            pid: None,
            comm: None,
            full: None,
        }
    }

    fn key(netns: u32) -> ListenerKey {
        ListenerKey {
            netns,
            port: 80,
            family: kpo_common::AF_INET,
        }
    }

    #[test]
    fn a_failed_dump_carries_the_last_good_one_and_a_good_one_replaces_it() {
        let mut carry = Carry::default();
        let t0 = Instant::now();
        let w0 = OffsetDateTime::UNIX_EPOCH;
        let both = BTreeMap::from([(7, READ), (9, READ)]);
        let listeners = BTreeMap::from([(key(7), view(10)), (key(9), view(1))]);
        let r = carry.update(t0, w0, &both, &BTreeMap::new(), &listeners);
        assert_eq!(r[&7].listeners, BTreeMap::from([(key(7), view(10))]));
        assert_eq!(r[&9].listeners, BTreeMap::from([(key(9), view(1))]));

        // 7's dump fails: its reading is the one before; 9's is this one.
        let failed = BTreeMap::from([(7, NetnsRead::default()), (9, READ)]);
        let t1 = t0 + Duration::from_secs(1);
        let w1 = w0 + Duration::from_secs(1);
        let r = carry.update(
            t1,
            w1,
            &failed,
            &BTreeMap::new(),
            &BTreeMap::from([(key(9), view(2))]),
        );
        assert_eq!((r[&7].wall, r[&7].listeners[&key(7)].drops), (w0, 10));
        assert_eq!((r[&9].wall, r[&9].listeners[&key(9)].drops), (w1, 2));

        // A good dump without the listener: the reading says it is gone.
        let t2 = t1 + Duration::from_secs(1);
        let r = carry.update(t2, w1, &both, &BTreeMap::new(), &BTreeMap::new());
        assert!(r[&7].listeners.is_empty() && r[&9].listeners.is_empty());
    }

    /// A namespace whose first dump fails was created since the sample before (windows count
    /// one first known in them from 0): it had no listeners then, and they count from 0.
    #[test]
    fn a_new_namespace_whose_first_dump_fails_had_no_listeners_before() {
        let mut carry = Carry::default();
        let (t0, w0) = (Instant::now(), OffsetDateTime::UNIX_EPOCH);
        let none = BTreeMap::new();
        let r = carry.update(
            t0,
            w0,
            &BTreeMap::from([(7, READ)]),
            &BTreeMap::new(),
            &none,
        );
        assert_eq!(r.len(), 1);
        let failing = BTreeMap::from([(7, READ), (8, NetnsRead::default())]);
        let (t1, w1) = (t0 + Duration::from_secs(1), w0 + Duration::from_secs(1));
        let r = carry.update(t1, w1, &failing, &BTreeMap::new(), &none);
        assert_eq!((r[&8].wall, r[&8].listeners.len()), (w0, 0));
        // Still failing: the same empty reading, not a newer one.
        let (t2, w2) = (t1 + Duration::from_secs(1), w1 + Duration::from_secs(1));
        let r = carry.update(t2, w2, &failing, &BTreeMap::new(), &none);
        assert_eq!(r[&8].wall, w0);
        // The first sample ever has no sample before: a failed dump there says nothing.
        let mut first = Carry::default();
        assert!(!first
            .update(t0, w0, &failing, &BTreeMap::new(), &none)
            .contains_key(&8));
    }

    #[test]
    fn a_vanished_namespace_is_kept_for_a_while_then_forgotten() {
        let mut carry = Carry::default();
        let t0 = Instant::now();
        let w = OffsetDateTime::UNIX_EPOCH;
        let ns = BTreeMap::from([(7, READ)]);
        carry.update(
            t0,
            w,
            &ns,
            &BTreeMap::new(),
            &BTreeMap::from([(key(7), view(10))]),
        );
        let (none, no_listeners) = (BTreeMap::new(), BTreeMap::new());
        let r = carry.update(
            t0 + KEEP_VANISHED - Duration::from_secs(1),
            w,
            &none,
            &BTreeMap::new(),
            &no_listeners,
        );
        assert_eq!(r[&7].listeners[&key(7)].drops, 10, "still kept");
        let r = carry.update(
            t0 + KEEP_VANISHED,
            w,
            &none,
            &BTreeMap::new(),
            &no_listeners,
        );
        assert!(r.is_empty(), "gone an hour: forgotten");

        // Known but unread (entered never, or failing) is kept however long.
        carry.update(
            t0,
            w,
            &ns,
            &BTreeMap::new(),
            &BTreeMap::from([(key(7), view(10))]),
        );
        let unread = BTreeMap::from([(7, NetnsRead::default())]);
        let r = carry.update(
            t0 + KEEP_VANISHED * 5,
            w,
            &unread,
            &BTreeMap::new(),
            &no_listeners,
        );
        assert_eq!(r[&7].listeners[&key(7)].drops, 10);
    }

    /// A kept reading goes an hour after its namespace was last known, however long before
    /// that its dumps had been failing; and a namespace with another cookie at the same inode
    /// is another namespace.
    #[test]
    fn a_vanished_reading_ages_from_when_it_vanished_and_not_across_cookies() {
        let mut carry = Carry::default();
        let t0 = Instant::now();
        let w = OffsetDateTime::UNIX_EPOCH;
        let (none, no_cookies, no_listeners) = (BTreeMap::new(), BTreeMap::new(), BTreeMap::new());
        let cookie = |c: u64| BTreeMap::from([(7u64, c)]);
        carry.update(
            t0,
            w,
            &BTreeMap::from([(7, READ)]),
            &cookie(70),
            &BTreeMap::from([(key(7), view(10))]),
        );
        // Two hours of failed dumps, then gone from discovery.
        let unread = BTreeMap::from([(7, NetnsRead::default())]);
        let t1 = t0 + KEEP_VANISHED * 2;
        carry.update(t1, w, &unread, &cookie(70), &no_listeners);
        let r = carry.update(
            t1 + Duration::from_secs(1),
            w,
            &none,
            &no_cookies,
            &no_listeners,
        );
        assert_eq!(
            r[&7].listeners[&key(7)].drops,
            10,
            "kept: it vanished a second ago"
        );
        let r = carry.update(t1 + KEEP_VANISHED, w, &none, &no_cookies, &no_listeners);
        assert!(r.is_empty(), "an hour after it vanished");

        // Back at the same inode with another cookie: the old reading is not its own. Its first
        // dump failed: it was created since the sample before, with no listeners.
        let mut carry = Carry::default();
        carry.update(
            t0,
            w,
            &BTreeMap::from([(7, READ)]),
            &cookie(70),
            &BTreeMap::from([(key(7), view(10))]),
        );
        let r = carry.update(
            t0 + Duration::from_secs(2),
            w,
            &unread,
            &cookie(71),
            &no_listeners,
        );
        assert!(r[&7].listeners.is_empty(), "{:?}", r[&7]);
        assert_eq!(r[&7].cookie, Some(71));
    }

    #[test]
    fn counters_are_carried_while_their_namespace_vanished_and_not_across_cookies() {
        let mut carry = CounterCarry::default();
        let t0 = Instant::now();
        let counters = |overflows, cookie| NetnsCounters {
            listen_overflows: overflows,
            listen_drops: overflows,
            cookie: Some(cookie),
            ..Default::default()
        };
        let ns = BTreeMap::from([(7, READ)]);
        let r = carry.update(
            t0,
            &ns,
            &BTreeMap::from([(7, 70)]),
            &BTreeMap::from([(7, counters(5, 70))]),
        );
        assert_eq!(r[&7].counters.listen_overflows, 5);
        // Its read fails: the last good one stands.
        let failed = BTreeMap::from([(7, NetnsRead::default())]);
        let t1 = t0 + Duration::from_secs(1);
        let r = carry.update(t1, &failed, &BTreeMap::from([(7, 70)]), &BTreeMap::new());
        assert_eq!((r[&7].at, r[&7].counters.listen_overflows), (t0, 5));
        // Gone from discovery: kept for an hour from then.
        let none = BTreeMap::new();
        let r = carry.update(
            t1 + KEEP_VANISHED / 2,
            &none,
            &BTreeMap::new(),
            &BTreeMap::new(),
        );
        assert_eq!(r[&7].counters.listen_overflows, 5);
        let r = carry.update(
            t1 + KEEP_VANISHED,
            &none,
            &BTreeMap::new(),
            &BTreeMap::new(),
        );
        assert!(r.is_empty());
        // Another namespace at the inode (another cookie): the old reading goes.
        carry.update(
            t0,
            &ns,
            &BTreeMap::from([(7, 70)]),
            &BTreeMap::from([(7, counters(5, 70))]),
        );
        let r = carry.update(t1, &failed, &BTreeMap::from([(7, 71)]), &BTreeMap::new());
        assert!(r.is_empty());
    }
}
