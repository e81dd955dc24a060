//! Listener pressure, read from each tick's sample: it keeps the accept-queue sensor attached
//! full time from the tick a listener shows pressure (queue at half its limit or more, or new
//! drops) until a whole window passes without any.
use super::Sample;

pub struct PressureWatch {
    ticks_per_window: u64,
    ticks_left: u64,
}

impl PressureWatch {
    pub fn new(ticks_per_window: u64) -> Self {
        Self {
            ticks_per_window,
            ticks_left: 0,
        }
    }

    /// Takes in the sample that closes a tick (`previous` is the one before it).
    pub fn observe(&mut self, previous: &Sample, now: &Sample) {
        let under_pressure = now.listeners.iter().any(|(key, l)| {
            (l.limit > 0 && l.depth.saturating_mul(2) >= l.limit)
                || previous
                    .listeners
                    .get(key)
                    .is_some_and(|p| l.drops > p.drops)
        });
        self.ticks_left = if under_pressure {
            self.ticks_per_window
        } else {
            self.ticks_left.saturating_sub(1)
        };
    }

    /// Whether the accept-queue sensor stays attached full time for the next tick.
    pub fn escalated(&self) -> bool {
        self.ticks_left > 0
    }

    /// Whether the next tick is escalated whatever the next sample shows (one calm tick would not
    /// end it). Decides, before a sample is read, whether the accept-queue sensor may stay.
    pub fn stays_escalated(&self) -> bool {
        self.ticks_left > 1
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::{collections::BTreeMap, time::Instant};

    use kpo_common::{ListenerKey, AF_INET};

    use super::*;
    use crate::collect::{procfs::HostSnapshot, ListenerView};

    /// A sample with one listener (netns 1, port 80).
    pub(crate) fn sample(depth: u32, limit: u32, drops: u64) -> Sample {
        let key = ListenerKey {
            netns: 1,
            port: 80,
            family: AF_INET,
        };
        let view = ListenerView {
            addresses: vec![],
            depth,
            limit,
            drops,
            socket_drops: [(1, drops)].into(),
            sockets: BTreeMap::new(),
            pid: None,
            comm: None,
            full: (depth >= limit.max(1)).then_some((depth, limit)),
        };
        Sample {
            at: Instant::now(),
            wall: time::OffsetDateTime::UNIX_EPOCH,
            bpf: None,
            listeners: [(key, view)].into(),
            netns: BTreeMap::new(),
            namespaces: BTreeMap::new(),
            readings: BTreeMap::new(),
            netns_readings: BTreeMap::new(),
            napi_devices: BTreeMap::new(),
            host: HostSnapshot::empty(Instant::now()),
            duty_sampled: std::time::Duration::ZERO,
            accept_queue_sensor: true,
            accept_queue_attached: false,
            accept_queue_sampled: std::time::Duration::ZERO,
            synack_retrans_sensor: true,
            sched_sensor: true,
            untimed_ports: None,
        }
    }

    #[test]
    fn pressure_escalates_for_a_window_then_relaxes() {
        let mut watch = PressureWatch::new(3);
        watch.observe(&sample(0, 128, 0), &sample(10, 128, 0));
        assert!(!watch.escalated(), "a queue below half its limit is calm");
        watch.observe(&sample(10, 128, 0), &sample(64, 128, 0));
        assert!(watch.escalated(), "half the limit is pressure");
        assert!(watch.stays_escalated());
        for _ in 0..2 {
            watch.observe(&sample(0, 128, 0), &sample(0, 128, 0));
            assert!(watch.escalated());
        }
        assert!(!watch.stays_escalated(), "one more calm tick would end it");
        watch.observe(&sample(0, 128, 0), &sample(0, 128, 0));
        assert!(!watch.escalated(), "a whole calm window relaxes it");
        watch.observe(&sample(0, 128, 5), &sample(0, 128, 6));
        assert!(watch.escalated(), "new drops are pressure");
    }
}
