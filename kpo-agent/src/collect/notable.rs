//! Listeners at their accept-queue limit, reported at once rather than at window end: from the
//! eBPF ring buffer while the accept-queue sensor is attached ([`NotableStream`]), otherwise, or
//! without a ring buffer to poll, from each tick's sock_diag reading
//! ([`NotableStream::full_from_tick`]).
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
        .filter(|(_, l)| l.limit > 0 && l.depth >= l.limit)
        .map(|(key, l)| ListenerFull {
            key: *key,
            backlog: l.depth,
            backlog_limit: l.limit,
            pid: l.pid,
            comm: l.comm.clone(),
        })
        .collect()
}

/// The programs' ring buffer of rare events, polled on its own beside the tick.
pub struct NotableStream {
    ring: Option<AsyncFd<RingBuf<MapData>>>,
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
        NotableStream { ring }
    }

    /// The full queues to report from this tick's sock_diag reading: none while the ring buffer
    /// reports them, that is while it is polled and the sensor was attached all tick.
    pub fn full_from_tick(&self, sample: &Sample) -> Vec<ListenerFull> {
        if sample.accept_queue_attached && self.ring.is_some() {
            return Vec::new();
        }
        full_listeners(sample)
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
    if event.kind != NotableKind::ListenerFull as u32 {
        warn!(kind = event.kind, "unknown notable event ignored");
        return None;
    }
    Some(event)
}

impl ListenerFull {
    /// A ring-buffer event, with the owner as of `last` (the most recent sample).
    pub fn from_notable(e: &NotableEvent, last: &Sample) -> ListenerFull {
        let owner = last.listeners.get(&e.key);
        ListenerFull {
            key: e.key,
            backlog: e.backlog,
            backlog_limit: e.backlog_limit,
            pid: owner.and_then(|o| o.pid),
            comm: owner.and_then(|o| o.comm.clone()),
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
        let unpolled = NotableStream { ring: None };
        let mut full = sample(9, 9, 0);
        for attached in [false, true] {
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

    #[test]
    fn short_records_are_ignored() {
        assert!(decode(&[0u8; 3]).is_none());
    }
}
