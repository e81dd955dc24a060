//! A raise of `net.core.somaxconn` acts at the next `listen()`: the kernel caps a listener's
//! accept queue at the value it reads when the listener listens (`__sys_listen`), so a listener
//! capped at the old value keeps that cap until its service listens again. Until one does, the
//! windows after the write show the kernel as it was, and a guard that judged them would keep
//! the raise over windows it did nothing in, and then meet the longer queue unwatched (s63 story
//! CI-2). This tracks each such raise until a listener of its namespace listens above the old
//! value, so that the guard judges the raise from then on.

use std::collections::{BTreeMap, BTreeSet};

use crate::actuate::param::{ParamAddress, Value};
use crate::collect::Sample;
use crate::guard::NotJudged;

/// The key whose raise waits for a `listen()`.
pub const SOMAXCONN: &str = "net.core.somaxconn";

/// Each namespace's listening sockets at one tick: accept-queue limit by socket inode, for the
/// namespaces whose sock_diag dump was read then (elsewhere a socket may exist unseen).
pub type Listening = BTreeMap<u64, BTreeMap<u32, u32>>;

/// The listening sockets of `sample`, by namespace.
pub fn listening(sample: &Sample) -> Listening {
    let mut by_netns: Listening = sample
        .namespaces
        .iter()
        .filter(|(_, read)| read.listeners)
        .map(|(&netns, _)| (netns, BTreeMap::new()))
        .collect();
    for (key, view) in &sample.listeners {
        if let Some(sockets) = by_netns.get_mut(&u64::from(key.netns)) {
            sockets.extend(view.sockets.iter().map(|(&inode, s)| (inode, s.limit)));
        }
    }
    by_netns
}

/// A raise waiting for a listener of its namespace to listen above the old value.
#[derive(Debug, Clone, PartialEq)]
struct Waiting {
    netns: u64,
    old: u32,
    /// Sockets above `old` at the write: they listened before it, and say nothing of it.
    above_then: BTreeSet<u32>,
    /// Sockets capped at `old` at the write: those the raise is for.
    capped_then: BTreeSet<u32>,
    /// A listener took the raise (or every capped socket is gone) in the window in progress:
    /// that window, partly from before, is not judged yet; the next ones are.
    ended: bool,
}

/// The raises of somaxconn waiting for a `listen()`, by journal key of the parameter.
#[derive(Debug, Default)]
pub struct RaisesAwaitingListen {
    waiting: BTreeMap<String, Waiting>,
}

impl RaisesAwaitingListen {
    /// A change was applied to `address` (in namespace `netns`) from `before` to `after`. A
    /// raise of somaxconn with a listener capped at the old value waits for it to listen again;
    /// a raise with none acts on the next listeners only, and is judged from the write. A raise
    /// on top of one still waiting waits for the same listeners, above the first old value (they
    /// are still capped there). Any other change of the key (a lowering, a revert) ends an
    /// earlier raise's wait: the guard judges the key's changes together from then.
    pub fn changed(
        &mut self,
        key: String,
        address: &ParamAddress,
        netns: u64,
        before: Option<&Value>,
        after: &Value,
        listening: &Listening,
    ) {
        if address.name != SOMAXCONN {
            return;
        }
        let raise = match (before.and_then(single), single(after)) {
            (Some(old), Some(new)) if new > old => Some(old),
            _ => None,
        };
        let Some(old) = raise else {
            self.waiting.remove(&key);
            return;
        };
        if self.waiting.get(&key).is_some_and(|w| w.netns == netns) {
            return;
        }
        self.waiting.remove(&key);
        let Some(sockets) = listening.get(&netns) else {
            return;
        };
        let capped_then: BTreeSet<u32> = (sockets.iter())
            .filter(|&(_, &limit)| u64::from(limit) == old)
            .map(|(&inode, _)| inode)
            .collect();
        if capped_then.is_empty() {
            return;
        }
        let above_then = (sockets.iter())
            .filter(|&(_, &limit)| u64::from(limit) > old)
            .map(|(&inode, _)| inode)
            .collect();
        self.waiting.insert(
            key,
            Waiting {
                netns,
                // `old` equals a socket's u32 limit.
                old: old as u32,
                above_then,
                capped_then,
                ended: false,
            },
        );
    }

    /// A tick's sockets: a raise ends its wait once a socket listens above the old value that
    /// was not above it at the write, or once no socket capped at the old value is left (the
    /// service stopped, or listened again with a smaller backlog): nothing waits for it then.
    pub fn tick(&mut self, listening: &Listening) {
        for waiting in self.waiting.values_mut() {
            let Some(sockets) = listening.get(&waiting.netns) else {
                continue;
            };
            let listened_above = (sockets.iter())
                .any(|(inode, &limit)| limit > waiting.old && !waiting.above_then.contains(inode));
            let still_capped =
                (waiting.capped_then.iter()).any(|inode| sockets.get(inode) == Some(&waiting.old));
            if listened_above || !still_capped {
                waiting.ended = true;
            }
        }
    }

    /// Why the window closing now is not judged for the change of `key`, if it is not: its raise
    /// still waits for a `listen()`, or a listener took it during the window.
    pub fn not_judged(&self, key: &str) -> Option<NotJudged> {
        self.waiting.get(key).map(|_| NotJudged::AwaitsListen)
    }

    /// A window closed: the raises a listener took in it are judged from the next.
    pub fn window_closed(&mut self) {
        self.waiting.retain(|_, waiting| !waiting.ended);
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

    fn somaxconn() -> ParamAddress {
        ParamAddress::sysctl(SOMAXCONN, Target::Host).unwrap()
    }

    fn value(v: i128) -> Value {
        Value::Int(v)
    }

    fn sockets(of: &[(u32, u32)]) -> Listening {
        BTreeMap::from([(NS, of.iter().copied().collect())])
    }

    fn raise(awaiting: &mut RaisesAwaitingListen, old: i128, new: i128, now: &Listening) {
        let (before, after) = (value(old), value(new));
        awaiting.changed("k".into(), &somaxconn(), NS, Some(&before), &after, now);
    }

    #[test]
    fn a_raise_waits_for_the_capped_listener_to_listen_again() {
        let mut awaiting = RaisesAwaitingListen::default();
        // Inode 7 capped at 64; inode 8 listened with a backlog of 16.
        raise(&mut awaiting, 64, 1024, &sockets(&[(7, 64), (8, 16)]));
        assert_eq!(awaiting.not_judged("k"), Some(NotJudged::AwaitsListen));
        awaiting.tick(&sockets(&[(7, 64), (8, 16)]));
        awaiting.window_closed();
        assert_eq!(awaiting.not_judged("k"), Some(NotJudged::AwaitsListen));
        // The service listens again: same socket, its limit now the service's backlog.
        awaiting.tick(&sockets(&[(7, 511), (8, 16)]));
        // The window it listened in holds time before it.
        assert_eq!(awaiting.not_judged("k"), Some(NotJudged::AwaitsListen));
        awaiting.window_closed();
        assert_eq!(awaiting.not_judged("k"), None);
    }

    #[test]
    fn a_new_socket_above_the_old_value_ends_the_wait_one_above_it_before_does_not() {
        let mut awaiting = RaisesAwaitingListen::default();
        // Inode 9 listened at 4096 before somaxconn was lowered to 64.
        raise(&mut awaiting, 64, 1024, &sockets(&[(7, 64), (9, 4096)]));
        awaiting.tick(&sockets(&[(7, 64), (9, 4096)]));
        awaiting.window_closed();
        assert_eq!(awaiting.not_judged("k"), Some(NotJudged::AwaitsListen));
        // A restarted worker's new socket takes the raise.
        awaiting.tick(&sockets(&[(7, 64), (9, 4096), (12, 1024)]));
        awaiting.window_closed();
        assert_eq!(awaiting.not_judged("k"), None);
    }

    #[test]
    fn a_capped_listener_gone_ends_the_wait() {
        let mut awaiting = RaisesAwaitingListen::default();
        raise(&mut awaiting, 64, 1024, &sockets(&[(7, 64)]));
        // A namespace not read at a tick says nothing.
        awaiting.tick(&BTreeMap::new());
        awaiting.window_closed();
        assert_eq!(awaiting.not_judged("k"), Some(NotJudged::AwaitsListen));
        awaiting.tick(&sockets(&[]));
        awaiting.window_closed();
        assert_eq!(awaiting.not_judged("k"), None);
    }

    #[test]
    fn only_a_raise_with_a_capped_listener_waits() {
        let mut awaiting = RaisesAwaitingListen::default();
        // No listener at the old value: the raise acts on the next listeners only.
        raise(&mut awaiting, 64, 1024, &sockets(&[(8, 16)]));
        assert_eq!(awaiting.not_judged("k"), None);
        // A lowering takes effect at the next listen too, but caps: judged from the write.
        raise(&mut awaiting, 1024, 64, &sockets(&[(7, 1024)]));
        assert_eq!(awaiting.not_judged("k"), None);
        // Another key.
        let other = ParamAddress::sysctl("net.ipv4.tcp_max_syn_backlog", Target::Host).unwrap();
        let (before, after) = (value(64), value(1024));
        let now = sockets(&[(7, 64)]);
        awaiting.changed("o".into(), &other, NS, Some(&before), &after, &now);
        assert_eq!(awaiting.not_judged("o"), None);
        // A raise on top of a raise still waiting waits for the same listeners.
        raise(&mut awaiting, 64, 1024, &now);
        raise(&mut awaiting, 1024, 4096, &now);
        assert_eq!(awaiting.not_judged("k"), Some(NotJudged::AwaitsListen));
        awaiting.tick(&sockets(&[(7, 1024)]));
        awaiting.window_closed();
        assert_eq!(
            awaiting.not_judged("k"),
            None,
            "listened above the first old value"
        );
        // A change back ends a raise's wait.
        raise(&mut awaiting, 64, 1024, &now);
        assert_eq!(awaiting.not_judged("k"), Some(NotJudged::AwaitsListen));
        raise(&mut awaiting, 1024, 64, &now);
        assert_eq!(awaiting.not_judged("k"), None);
    }
}
