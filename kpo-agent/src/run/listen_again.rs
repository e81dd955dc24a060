//! A raise of `net.core.somaxconn` acts at the next `listen()`: the kernel caps a listener's
//! accept queue at the value it reads when the listener listens (`__sys_listen`), so a listener
//! capped at the old value keeps that cap until its service listens again. Until one does, the
//! windows after the write show the kernel as it was, and a guard that judged them would keep
//! the raise over windows it did nothing in, and then meet the longer queue unwatched (s63 story
//! CI-2). This tracks each such raise until a listener it was for listens above the old value,
//! so that the guard judges the raise from then on, against the windows just before.

use std::collections::{BTreeMap, BTreeSet};

use crate::actuate::param::{ParamAddress, Value};
use crate::collect::Sample;
use crate::guard::NotJudged;
use crate::window::Endpoint;

/// The key whose raise waits for a `listen()`.
pub const SOMAXCONN: &str = "net.core.somaxconn";

/// A listener group as sock_diag names it: port and address family. The sockets of an
/// SO_REUSEPORT group, or of a port bound on several addresses, are one service's.
type Group = (u16, u16);

/// A listening socket at one tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SocketAt {
    pub group: Group,
    pub limit: u32,
}

/// The listening sockets at one tick, by socket inode, in each namespace whose sock_diag dump
/// was read then (elsewhere a socket may exist unseen), and the namespaces discovery found.
#[derive(Debug, Clone, Default)]
pub struct Listening {
    read: BTreeMap<u64, BTreeMap<u32, SocketAt>>,
    found: BTreeSet<u64>,
}

impl Listening {
    /// The listening sockets of `sample`, but those of the agent's own metrics endpoint, which
    /// never listens again.
    pub fn of(sample: &Sample, own_endpoint: Option<Endpoint>) -> Listening {
        let mut read: BTreeMap<u64, BTreeMap<u32, SocketAt>> = (sample.namespaces.iter())
            .filter(|(_, read)| read.listeners)
            .map(|(&netns, _)| (netns, BTreeMap::new()))
            .collect();
        for (key, view) in &sample.listeners {
            let netns = u64::from(key.netns);
            let family = crate::window::family_name(key.family);
            if own_endpoint == Some((netns, key.port, family)) {
                continue;
            }
            if let Some(sockets) = read.get_mut(&netns) {
                let group = (key.port, key.family);
                sockets.extend((view.sockets.iter()).map(|(&inode, s)| {
                    (
                        inode,
                        SocketAt {
                            group,
                            limit: s.limit,
                        },
                    )
                }));
            }
        }
        Listening {
            read,
            found: sample.namespaces.keys().copied().collect(),
        }
    }
}

/// A raise waiting for a listener it was for to listen above the old value.
#[derive(Debug, Clone, PartialEq)]
struct Waiting {
    netns: u64,
    /// The value before the newest raise: a listen above it takes the raise.
    old: u32,
    /// The groups that held a capped socket at a raise: a listen elsewhere in the namespace (an
    /// unrelated service starting) says nothing of them.
    groups: BTreeSet<Group>,
    /// The sockets capped at a raise, each with its group and the limit it was capped at.
    capped: BTreeMap<u32, SocketAt>,
    /// Each socket of `groups` with its limit at the newest raise: a socket whose limit moved
    /// since has listened again (a new one too).
    at_write: BTreeMap<u32, u32>,
    /// Ticks in a row whose dump found no capped socket still at its cap: two end the wait (one
    /// dump can miss a socket).
    none_capped: u32,
    /// A listener took the raise (or the capped ones are gone) in the window in progress: that
    /// window, partly from before, is not judged yet; the next ones are.
    ended: bool,
}

/// The raises of somaxconn waiting for a `listen()`, by journal key of the parameter.
#[derive(Debug, Default)]
pub struct RaisesAwaitingListen {
    waiting: BTreeMap<String, Waiting>,
    /// Each key's values before and after the changes seen in this run: a listener capped at
    /// one of them is capped below a raise to a higher value, not only one at the value just
    /// before it (s64 story CQ-2: a raise right after a lowering waited for nothing, the
    /// listener still capped at the value before the lowering).
    seen: BTreeMap<String, BTreeSet<u32>>,
}

/// At most this many values are remembered per key: a raise looks for listeners capped at them.
const SEEN_VALUES: usize = 64;

impl RaisesAwaitingListen {
    /// A change was applied to `address` (journal key `key`, in namespace `netns`) from `before`
    /// to `after`. A raise of somaxconn with a listener capped at the old value waits for it to
    /// listen again; a raise with none acts on the next listeners only, and is judged from the
    /// write. A raise on top of one still waiting waits for the listeners of both. A lowering
    /// that stays above a cap a raise waits for leaves it waiting (the guard judges the changes
    /// together); one to every such cap or below, or a change of unknown value, ends it.
    pub fn changed(
        &mut self,
        key: String,
        address: &ParamAddress,
        netns: u64,
        (before, after): (Option<&Value>, &Value),
        listening: &Listening,
    ) {
        if address.name != SOMAXCONN {
            return;
        }
        let (ended, earlier) = match self.waiting.remove(&key).filter(|w| w.netns == netns) {
            Some(w) if w.ended => (Some(w), None),
            earlier => (None, earlier),
        };
        let seen = self.seen.entry(key.clone()).or_default();
        let waiting = next_wait(seen, earlier, netns, (before, after), listening);
        for value in [before.and_then(single), single(after)]
            .into_iter()
            .flatten()
        {
            if seen.len() < SEEN_VALUES {
                seen.insert(u32::try_from(value).unwrap_or(u32::MAX));
            }
        }
        // A wait that ended in the window in progress stays to its close unless another takes
        // its place: that window is not judged, and the change is judged against the windows
        // before it (s64 review2 R2-3).
        if let Some(waiting) = waiting.or(ended) {
            self.waiting.insert(key, waiting);
        }
    }
}

/// What [`RaisesAwaitingListen::changed`] leaves waiting, from `earlier`, a wait that had not
/// ended, and the key's values `seen` at earlier changes.
fn next_wait(
    seen: &BTreeSet<u32>,
    earlier: Option<Waiting>,
    netns: u64,
    (before, after): (Option<&Value>, &Value),
    listening: &Listening,
) -> Option<Waiting> {
    let (Some(old), Some(new)) = (before.and_then(single), single(after)) else {
        return None;
    };
    // `old` equals a socket's u32 limit when any is capped at it.
    let old_limit = u32::try_from(old).unwrap_or(u32::MAX);
    if new <= old {
        // Still above a cap it waits for: the listener still gains from the chain.
        return earlier.filter(|w| w.capped.values().any(|s| new > u64::from(s.limit)));
    }
    let Some(sockets) = listening.read.get(&netns) else {
        // Not read now: an earlier wait goes on, from the newest old value (R2-6).
        return earlier.map(|w| Waiting {
            old: old_limit,
            ..w
        });
    };
    let mut waiting = earlier.unwrap_or(Waiting {
        netns,
        old: 0,
        groups: BTreeSet::new(),
        capped: BTreeMap::new(),
        at_write: BTreeMap::new(),
        none_capped: 0,
        ended: false,
    });
    waiting.old = old_limit;
    let capped_now = |s: &SocketAt| {
        s.limit == old_limit || (seen.contains(&s.limit) && u64::from(s.limit) < new)
    };
    for (&inode, &socket) in sockets.iter().filter(|(_, s)| capped_now(s)) {
        waiting.capped.insert(inode, socket);
        waiting.groups.insert(socket.group);
    }
    if waiting.capped.is_empty() {
        return None;
    }
    waiting.at_write = (sockets.iter())
        .filter(|(_, s)| waiting.groups.contains(&s.group))
        .map(|(&inode, s)| (inode, s.limit))
        .collect();
    waiting.none_capped = 0;
    Some(waiting)
}

impl RaisesAwaitingListen {
    /// A tick's sockets: a raise ends its wait once every socket of one of its groups that was
    /// capped has listened again or is gone, and one of that group's sockets listens above the
    /// old value (a SO_REUSEPORT group's rolling restart ends it with its last capped worker);
    /// or once no socket capped at a raise is left at its cap in two dumps in a row (the service
    /// stopped, or listened again with a smaller backlog); or once its namespace is gone.
    pub fn tick(&mut self, listening: &Listening) {
        for waiting in self.waiting.values_mut() {
            let Some(sockets) = listening.read.get(&waiting.netns) else {
                // Not read at this tick: it says nothing, unless discovery no longer finds it.
                if !listening.found.contains(&waiting.netns) {
                    waiting.ended = true;
                }
                continue;
            };
            // A socket of a group at the old value is capped too: one that listened between the
            // tick the raise saw and its write (s64 review2 R2-1).
            for (&inode, &socket) in sockets.iter() {
                if waiting.groups.contains(&socket.group) && socket.limit == waiting.old {
                    waiting.capped.insert(inode, socket);
                }
            }
            let at_cap = |inode: &u32, capped: &SocketAt| {
                sockets.get(inode).is_some_and(|s| s.limit == capped.limit)
            };
            let group_took_it = |group: &Group| {
                let none_at_cap = (waiting.capped.iter())
                    .filter(|(_, capped)| capped.group == *group)
                    .all(|(inode, capped)| !at_cap(inode, capped));
                let listened_above = sockets.iter().any(|(inode, s)| {
                    s.group == *group
                        && s.limit > waiting.old
                        && waiting.at_write.get(inode) != Some(&s.limit)
                });
                none_at_cap && listened_above
            };
            let took_it = waiting.groups.iter().any(group_took_it);
            let still_capped = (waiting.capped.iter()).any(|(inode, capped)| at_cap(inode, capped));
            waiting.none_capped = if still_capped {
                0
            } else {
                waiting.none_capped + 1
            };
            if took_it || waiting.none_capped >= 2 {
                waiting.ended = true;
            }
        }
    }

    /// The keys whose wait ended in the window closing now: their watches are judged from the
    /// next window, against the windows up to this one's start.
    pub fn ended(&self) -> Vec<String> {
        (self.waiting.iter())
            .filter(|(_, w)| w.ended)
            .map(|(key, _)| key.clone())
            .collect()
    }

    /// Why the window closing now is not judged for the change of `key`, if it is not: its raise
    /// still waits for a `listen()`, or a listener took it during the window.
    pub fn not_judged(&self, key: &str) -> Option<NotJudged> {
        self.waiting.get(key).map(|_| NotJudged::AwaitsListen)
    }

    /// A window closed: the raises a listener took in it are judged from the next, and those no
    /// longer watched (reverted, kept, forgotten) wait no longer.
    pub fn window_closed(&mut self, watched: impl Fn(&str) -> bool) {
        self.waiting
            .retain(|key, waiting| !waiting.ended && watched(key));
    }
}

/// A one-number value, as a limit compares with it.
fn single(value: &Value) -> Option<u64> {
    value.as_int().and_then(|v| u64::try_from(v).ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actuate::param::Target;

    const NS: u64 = 4026532281;
    const WEB: Group = (8080, 2);

    fn somaxconn() -> ParamAddress {
        ParamAddress::sysctl(SOMAXCONN, Target::Host).unwrap()
    }

    /// The namespace read, with `(inode, group, limit)` sockets.
    fn sockets(of: &[(u32, Group, u32)]) -> Listening {
        let at = of
            .iter()
            .map(|&(inode, group, limit)| (inode, SocketAt { group, limit }));
        Listening {
            read: BTreeMap::from([(NS, at.collect())]),
            found: BTreeSet::from([NS]),
        }
    }

    /// The namespace found but its dump not read.
    fn unread() -> Listening {
        Listening {
            read: BTreeMap::new(),
            found: BTreeSet::from([NS]),
        }
    }

    fn change(awaiting: &mut RaisesAwaitingListen, old: i128, new: i128, now: &Listening) {
        let (before, after) = (Value::Int(old), Value::Int(new));
        awaiting.changed("k".into(), &somaxconn(), NS, (Some(&before), &after), now);
    }

    fn waits(awaiting: &RaisesAwaitingListen) -> bool {
        awaiting.not_judged("k") == Some(NotJudged::AwaitsListen)
    }

    /// One tick, then the window's end.
    fn window(awaiting: &mut RaisesAwaitingListen, now: &Listening) {
        awaiting.tick(now);
        awaiting.window_closed(|_| true);
    }

    #[test]
    fn a_raise_waits_for_the_capped_listener_to_listen_again() {
        let mut awaiting = RaisesAwaitingListen::default();
        // Inode 7 capped at 64; inode 8 listened with a backlog of 16.
        let capped = sockets(&[(7, WEB, 64), (8, (22, 2), 16)]);
        change(&mut awaiting, 64, 1024, &capped);
        assert!(waits(&awaiting));
        window(&mut awaiting, &capped);
        assert!(waits(&awaiting));
        // The service listens again: same socket, its limit now the service's backlog.
        awaiting.tick(&sockets(&[(7, WEB, 511), (8, (22, 2), 16)]));
        // The window it listened in holds time before it.
        assert!(waits(&awaiting));
        assert_eq!(awaiting.ended(), ["k"]);
        awaiting.window_closed(|_| true);
        assert!(!waits(&awaiting));
    }

    #[test]
    fn only_a_capped_group_listening_again_ends_the_wait() {
        let mut awaiting = RaisesAwaitingListen::default();
        // Inode 9 listened at 4096 before somaxconn was lowered to 64.
        let before = [(7, WEB, 64), (9, WEB, 4096)];
        change(&mut awaiting, 64, 1024, &sockets(&before));
        // An unrelated service starts above the old value: the capped one still waits.
        let other = sockets(&[(7, WEB, 64), (9, WEB, 4096), (20, (9000, 2), 511)]);
        window(&mut awaiting, &other);
        assert!(waits(&awaiting));
        // One worker of the group listens again, another is still capped (s64 review2 R2-2).
        window(&mut awaiting, &sockets(&[(7, WEB, 64), (9, WEB, 1024)]));
        assert!(waits(&awaiting));
        window(&mut awaiting, &sockets(&[(7, WEB, 1024), (9, WEB, 1024)]));
        assert!(!waits(&awaiting));
        // A rolling restart: a new worker beside the capped one, then the capped one gone.
        change(&mut awaiting, 64, 1024, &sockets(&before));
        window(
            &mut awaiting,
            &sockets(&[(7, WEB, 64), (9, WEB, 4096), (12, WEB, 1024)]),
        );
        assert!(waits(&awaiting));
        window(&mut awaiting, &sockets(&[(9, WEB, 4096), (12, WEB, 1024)]));
        assert!(!waits(&awaiting));
    }

    #[test]
    fn capped_listeners_gone_in_two_dumps_or_their_namespace_gone_end_the_wait() {
        let mut awaiting = RaisesAwaitingListen::default();
        let capped = sockets(&[(7, WEB, 64)]);
        change(&mut awaiting, 64, 1024, &capped);
        // A namespace not read at a tick says nothing.
        window(&mut awaiting, &unread());
        assert!(waits(&awaiting));
        // One dump that misses the socket does not end it either.
        window(&mut awaiting, &sockets(&[]));
        window(&mut awaiting, &capped);
        assert!(waits(&awaiting));
        window(&mut awaiting, &sockets(&[]));
        assert!(waits(&awaiting));
        window(&mut awaiting, &sockets(&[]));
        assert!(!waits(&awaiting));
        // A namespace discovery no longer finds.
        change(&mut awaiting, 64, 1024, &capped);
        window(&mut awaiting, &Listening::default());
        assert!(!waits(&awaiting));
    }

    #[test]
    fn only_a_raise_with_a_capped_listener_waits() {
        let mut awaiting = RaisesAwaitingListen::default();
        // No listener at the old value: the raise acts on the next listeners only.
        change(&mut awaiting, 64, 1024, &sockets(&[(8, WEB, 16)]));
        assert!(!waits(&awaiting));
        // A lowering takes effect at the next listen too, but caps: judged from the write.
        change(&mut awaiting, 1024, 64, &sockets(&[(7, WEB, 1024)]));
        assert!(!waits(&awaiting));
        // Another key.
        let other = ParamAddress::sysctl("net.ipv4.tcp_max_syn_backlog", Target::Host).unwrap();
        let (before, after) = (Value::Int(64), Value::Int(1024));
        let now = sockets(&[(7, WEB, 64)]);
        awaiting.changed("o".into(), &other, NS, (Some(&before), &after), &now);
        assert_eq!(awaiting.not_judged("o"), None);
    }

    #[test]
    fn a_change_on_top_of_a_waiting_raise() {
        let mut awaiting = RaisesAwaitingListen::default();
        let capped = sockets(&[(7, WEB, 64)]);
        // A raise on top waits for the same listener.
        change(&mut awaiting, 64, 1024, &capped);
        change(&mut awaiting, 1024, 4096, &capped);
        assert!(waits(&awaiting));
        window(&mut awaiting, &sockets(&[(7, WEB, 4096)]));
        assert!(!waits(&awaiting));
        // A lowering still above the old value leaves it waiting; one to it ends the wait.
        change(&mut awaiting, 64, 4096, &capped);
        change(&mut awaiting, 4096, 2048, &capped);
        assert!(waits(&awaiting));
        change(&mut awaiting, 2048, 64, &capped);
        assert!(!waits(&awaiting));
        // A listener that took the first raise, or listened at it just before the second: the
        // second waits for it to listen above the first's value.
        change(&mut awaiting, 64, 1024, &capped);
        let took_it = sockets(&[(7, WEB, 1024)]);
        awaiting.tick(&took_it);
        change(&mut awaiting, 1024, 4096, &took_it);
        awaiting.window_closed(|_| true);
        assert!(waits(&awaiting));
        window(&mut awaiting, &took_it);
        assert!(waits(&awaiting));
        window(&mut awaiting, &sockets(&[(7, WEB, 4096)]));
        assert!(!waits(&awaiting));
        // A lowering on a chain of two raises still above the first's cap (s64 review2 R2-5).
        change(&mut awaiting, 64, 1024, &capped);
        change(&mut awaiting, 1024, 4096, &capped);
        change(&mut awaiting, 4096, 512, &capped);
        assert!(waits(&awaiting));
        // The listener listened again at the first raise's value after the tick the second
        // saw (R2-1): capped at the second's old value, it is waited for.
        change(&mut awaiting, 512, 64, &capped);
        change(&mut awaiting, 64, 1024, &capped);
        change(&mut awaiting, 1024, 4096, &capped);
        window(&mut awaiting, &took_it);
        window(&mut awaiting, &took_it);
        assert!(waits(&awaiting));
        window(&mut awaiting, &sockets(&[(7, WEB, 4096)]));
        assert!(!waits(&awaiting));
        // A raise on top while the namespace is not read keeps the wait (R2-6).
        change(&mut awaiting, 64, 1024, &capped);
        change(&mut awaiting, 1024, 4096, &unread());
        assert!(waits(&awaiting));
        window(&mut awaiting, &sockets(&[(7, WEB, 4096)]));
        assert!(!waits(&awaiting));
        // A wait that ended in the window in progress stays to its close whatever change
        // follows (R2-3): that window is not judged, and the change is judged against the
        // windows before it.
        change(&mut awaiting, 64, 1024, &capped);
        let at_its_backlog = sockets(&[(7, WEB, 511)]);
        awaiting.tick(&at_its_backlog);
        // Nothing capped at the second raise's old value: no wait of its own.
        change(&mut awaiting, 1024, 2048, &at_its_backlog);
        assert_eq!(awaiting.ended(), ["k"]);
        change(&mut awaiting, 2048, 1024, &at_its_backlog);
        assert_eq!(awaiting.ended(), ["k"]);
        assert!(waits(&awaiting));
        awaiting.window_closed(|_| true);
        assert!(!waits(&awaiting));
        // A raise right after a lowering, the listener still capped at the value before the
        // lowering (s64 story CQ-2: judged from the write).
        let mut awaiting = RaisesAwaitingListen::default();
        let at_128 = sockets(&[(7, WEB, 128)]);
        change(&mut awaiting, 128, 100, &at_128);
        assert!(!waits(&awaiting));
        change(&mut awaiting, 100, 256, &at_128);
        assert!(waits(&awaiting));
        window(&mut awaiting, &sockets(&[(7, WEB, 256)]));
        assert!(!waits(&awaiting));
        // A key no longer watched waits no longer.
        change(&mut awaiting, 64, 1024, &capped);
        awaiting.window_closed(|_| false);
        assert!(!waits(&awaiting));
    }
}
