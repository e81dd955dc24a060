//! Listeners at their accept-queue limit, reported at once rather than at window end: from the
//! eBPF ring buffer while the accept-queue sensor is attached ([`NotableStream`]), and from each
//! tick's sock_diag reading for those eBPF did not report since the tick before
//! ([`NotableStream::full_from_tick`]): a queue that stays full, a detached sensor, no ring buffer.
use std::collections::HashSet;

use aya::maps::{MapData, RingBuf};
use kpo_common::{ListenerKey, NotableEvent, NotableKind, MAP_NOTABLE};
use tokio::io::unix::AsyncFd;
use tracing::warn;

use super::Sample;
use crate::sensors::Sensors;

/// A listener whose accept queue reached its limit.
#[derive(Debug, Clone, PartialEq)]
pub struct ListenerFull {
    pub key: ListenerKey,
    /// Depth when it was seen.
    pub backlog: u32,
    pub backlog_limit: u32,
    /// Owner as of the last tick.
    pub pid: Option<u32>,
    pub comm: Option<String>,
}

/// Listeners sock_diag found at their limit in this sample.
fn full_listeners(sample: &Sample) -> Vec<ListenerFull> {
    sample
        .listeners
        .iter()
        .filter_map(|(key, l)| {
            let (backlog, backlog_limit) = l.full?;
            let (pid, comm) = l.owner_at(backlog_limit);
            Some(ListenerFull {
                key: *key,
                backlog,
                backlog_limit,
                pid,
                comm,
            })
        })
        .collect()
}

/// The programs' ring buffer of rare events, polled on its own beside the tick: full accept
/// queues, and sockets that began to listen (whose requests are then timed at once:
/// [`super::Collector::time_listeners`]).
pub struct NotableStream {
    ring: Option<AsyncFd<RingBuf<MapData>>>,
    /// Listeners eBPF reported full since the last tick's reading: not reported again from it.
    reported_since_tick: HashSet<ListenerKey>,
    /// The listeners the last tick found full, with their drops then: one still full that
    /// dropped nothing since is not reported again (s63 story CJ-4: 198 queues full with no
    /// connection coming sent 198 events a second, 3.5 GB a day).
    full_at_last_tick: std::collections::HashMap<ListenerKey, u64>,
}

impl NotableStream {
    /// Takes the ring buffer out of the loaded object (none if eBPF is not loaded).
    pub fn take(sensors: &mut Sensors) -> NotableStream {
        let ring = sensors
            .take_map(MAP_NOTABLE)
            .and_then(|m| RingBuf::try_from(m).ok())
            .and_then(|rb| {
                // SAFETY: the ring buffer owns its map fd and keeps it open, unchanged, for as long
                // as the AsyncFd holds it.
                let registered =
                    unsafe { AsyncFd::register_with_interest(rb, tokio::io::Interest::READABLE) };
                match registered {
                    Ok(fd) => Some(fd),
                    Err(e) => {
                        warn!(
                            "cannot poll the notable-event ring buffer: {e}; full accept queues \
                             are seen at each tick only"
                        );
                        None
                    }
                }
            });
        NotableStream {
            ring,
            reported_since_tick: HashSet::new(),
            full_at_last_tick: Default::default(),
        }
    }

    /// The full queues to report from this tick's sock_diag reading: every one eBPF did not
    /// report since the last tick, unless the last tick found it full too and it dropped nothing
    /// since. eBPF sees a queue fill (a connection queued at the limit), not one that stays full:
    /// the kernel drops the SYNs that come next before any connection is queued, so while nobody
    /// accepts, only this reading sees the queue still full, and its drops say it still overflows.
    pub fn full_from_tick(&mut self, sample: &Sample) -> Vec<ListenerFull> {
        let reported = std::mem::take(&mut self.reported_since_tick);
        let before = std::mem::take(&mut self.full_at_last_tick);
        let drops = |key: &ListenerKey| sample.listeners.get(key).map(|l| l.drops);
        let full = full_listeners(sample);
        self.full_at_last_tick = (full.iter())
            .filter_map(|f| Some((f.key, drops(&f.key)?)))
            .collect();
        full.into_iter()
            .filter(|full| !reported.contains(&full.key))
            .filter(|full| {
                before
                    .get(&full.key)
                    .is_none_or(|&d| drops(&full.key) != Some(d))
            })
            .collect()
    }

    /// Waits until events arrive and returns them, each with its owner from `owners` (the last
    /// sample). Pending forever without a ring buffer.
    pub async fn next(&mut self) -> std::io::Result<Vec<NotableEvent>> {
        let Some(ring) = &mut self.ring else {
            return std::future::pending().await;
        };
        let mut guard = ring.readable_mut().await?;
        let mut events = Vec::new();
        while let Some(item) = guard.get_inner_mut().next() {
            events.extend(decode(&item));
        }
        guard.clear_ready();
        self.reported_since_tick.extend(
            (events.iter())
                .filter(|e: &&NotableEvent| e.kind == NotableKind::ListenerFull as u32)
                .map(|e| e.key),
        );
        Ok(events)
    }
}

/// One ring-buffer record, checked for size before it is read.
fn decode(bytes: &[u8]) -> Option<NotableEvent> {
    if bytes.len() < std::mem::size_of::<NotableEvent>() {
        warn!(len = bytes.len(), "short notable event ignored");
        return None;
    }
    // SAFETY: the length was checked, NotableEvent is plain old data, and the ring buffer gives no
    // alignment guarantee for it, hence the unaligned copy.
    let event = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<NotableEvent>()) };
    let known = [NotableKind::ListenerFull, NotableKind::Listening].map(|k| k as u32);
    if !known.contains(&event.kind) {
        warn!(kind = event.kind, "unknown notable event ignored");
        return None;
    }
    Some(event)
}

impl ListenerFull {
    /// A ring-buffer event, with the owner as of `last` (the most recent sample).
    pub fn from_notable(e: &NotableEvent, last: &Sample) -> ListenerFull {
        let (pid, comm) = (last.listeners.get(&e.key))
            .map(|l| l.owner_at(e.backlog_limit))
            .unwrap_or_default();
        ListenerFull {
            key: e.key,
            backlog: e.backlog,
            backlog_limit: e.backlog_limit,
            pid,
            comm,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collect::pressure_watch::tests::sample;

    #[test]
    fn full_queues_are_reported_from_sock_diag() {
        assert!(full_listeners(&sample(8, 9, 0)).is_empty());
        // listen(0): empty is not full, one queued is.
        assert!(full_listeners(&sample(0, 0, 0)).is_empty());
        assert_eq!(full_listeners(&sample(1, 0, 0)).len(), 1);
        let full = full_listeners(&sample(9, 9, 0));
        assert!(matches!(
            full.as_slice(),
            [ListenerFull {
                key: ListenerKey { port: 80, .. },
                backlog: 9,
                backlog_limit: 9,
                ..
            }]
        ));
    }

    /// Defect: without a ring buffer to poll, the tick fell back to sock_diag only while the
    /// sensor was detached, so a full queue while it was attached was never reported.
    #[test]
    fn without_a_ring_buffer_the_tick_reports_full_queues_even_while_attached() {
        let mut unpolled = NotableStream {
            ring: None,
            reported_since_tick: HashSet::new(),
            full_at_last_tick: Default::default(),
        };
        for attached in [false, true] {
            // Dropping at each tick: reported at each.
            let mut full = sample(9, 9, u64::from(attached));
            full.accept_queue_attached = attached;
            let reported = unpolled.full_from_tick(&full);
            assert_eq!(
                reported
                    .iter()
                    .map(|f| (f.key.port, f.backlog, f.backlog_limit))
                    .collect::<Vec<_>>(),
                [(80, 9, 9)],
                "attached: {attached}"
            );
        }
        assert_eq!(unpolled.full_from_tick(&sample(8, 9, 0)), []);
    }

    /// Defect: while the sensor was attached, the tick reported no full queue, leaving them to
    /// eBPF, which sees a queue fill but not one that stays full (the SYNs that follow are
    /// dropped before any connection is queued): one event, then silence while it overflowed.
    /// And s63 story CJ-4: a queue that stays full with nothing arriving (nothing dropped since
    /// the last tick) was reported at every tick all the same.
    #[test]
    fn a_queue_that_stays_full_is_reported_every_tick_it_drops_unless_ebpf_just_did() {
        let mut stream = NotableStream {
            ring: None,
            reported_since_tick: HashSet::new(),
            full_at_last_tick: Default::default(),
        };
        let full = |drops| {
            let mut s = sample(9, 9, drops);
            s.accept_queue_attached = true;
            s
        };
        let key = *full(0).listeners.keys().next().unwrap();
        // eBPF saw the queue fill during this tick: the tick does not say it again.
        stream.reported_since_tick.insert(key);
        assert_eq!(stream.full_from_tick(&full(0)), []);
        // Still full at the next tick, and dropping since: the tick says so.
        let reported = stream.full_from_tick(&full(5));
        assert_eq!(reported.iter().map(|f| f.key).collect::<Vec<_>>(), [key]);
        assert_eq!(
            stream.full_from_tick(&full(9)).len(),
            1,
            "and while it drops"
        );
        assert_eq!(
            stream.full_from_tick(&full(9)),
            [],
            "not while nothing comes"
        );
        assert_eq!(stream.full_from_tick(&full(10)).len(), 1);
        // Drained, then full again: reported again.
        assert_eq!(stream.full_from_tick(&sample(0, 9, 10)), []);
        assert_eq!(stream.full_from_tick(&full(10)).len(), 1);
    }

    #[test]
    fn short_records_are_ignored() {
        assert!(decode(&[0u8; 3]).is_none());
    }
}
