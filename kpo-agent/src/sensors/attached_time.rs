//! How long a group of duty-cycled sensors was attached between two map reads.
//!
//! A duty-cycled sensor counts only while it is attached, so its rates are per second *attached*.
//! A tick's length overstates that time: the sensors are attached after the tick's read and
//! processing and detached before the next read, so a sampled tick's counts cover less than the
//! tick. This measures the attached span itself, from the attach and detach instants.
use std::time::{Duration, Instant};

#[derive(Debug, Default, Clone, Copy)]
pub struct AttachedTime {
    /// Attached time of spans already ended since the last [`AttachedTime::take`].
    ended: Duration,
    /// When the current span began (or the last take within it); None while detached.
    since: Option<Instant>,
}

impl AttachedTime {
    /// Notes the group's state after an attach or detach: a span starts at `attached_at` (once
    /// the attach has returned, the probes count) and ends at `detaching_at` (a probe stops
    /// counting as its detach begins).
    pub fn follow(&mut self, attached: bool, detaching_at: Instant, attached_at: Instant) {
        match (attached, self.since) {
            (true, None) => self.since = Some(attached_at),
            (false, Some(since)) => {
                self.ended += detaching_at.saturating_duration_since(since);
                self.since = None;
            }
            _ => {}
        }
    }

    /// The time attached since the previous take, up to `now` (the map read): what the counts
    /// read at `now` cover.
    pub fn take(&mut self, now: Instant) -> Duration {
        let running = self
            .since
            .map_or(Duration::ZERO, |since| now.saturating_duration_since(since));
        if self.since.is_some() {
            self.since = Some(now);
        }
        std::mem::take(&mut self.ended) + running
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn takes_add_up_to_the_attached_spans_only() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut time = AttachedTime::default();
        assert_eq!(time.take(at(100)), Duration::ZERO, "never attached");
        // Attached at 130 ms (the attach returned), read at 1100 and 2100 while attached.
        time.follow(true, at(120), at(130));
        assert_eq!(time.take(at(1100)), Duration::from_millis(970));
        assert_eq!(time.take(at(2100)), Duration::from_millis(1000));
        // Detached at 3090 (before the read at 3100): the span ends at the detach.
        time.follow(false, at(3090), at(3095));
        assert_eq!(time.take(at(3100)), Duration::from_millis(990));
        assert_eq!(time.take(at(4100)), Duration::ZERO, "detached all tick");
        // Attached and detached within one tick, twice.
        time.follow(true, at(4110), at(4120));
        time.follow(false, at(4620), at(4630));
        time.follow(true, at(4700), at(4700));
        time.follow(false, at(4800), at(4810));
        assert_eq!(time.take(at(5100)), Duration::from_millis(600));
        // A state that does not change moves nothing.
        time.follow(false, at(5200), at(5210));
        assert_eq!(time.take(at(6100)), Duration::ZERO);
    }
}
