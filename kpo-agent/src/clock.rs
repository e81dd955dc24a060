//! Periods judged by the wall clock: cooldowns, quarantines, the hourly limit, approvals'
//! expiry, rejections' hold, advice made lately. Their times are kept in the state directory and
//! outlive a restart and a reboot, where no other clock goes on, so they are wall-clock times; and
//! the wall clock steps back (a VM restored from a snapshot, NTP correcting a clock that ran
//! ahead). A period that begins more than its own length ahead of the clock is taken for one from
//! before such a step, which is over: otherwise it would last as long as the step. So after a step
//! back a period lasts at most twice its length (docs/policy.md, Clocks).
use std::time::{SystemTime, UNIX_EPOCH};

/// Whether a period of `length` ms that began at `since` (ms since the epoch) runs at `now`.
pub fn runs(since: u64, length: u64, now: u64) -> bool {
    now < since.saturating_add(length) && !from_before_a_step(since, length, now)
}

/// Whether a period of `length` ms said to begin at `since` is taken for one from before the
/// clock stepped back: it begins more than its length after `now`.
pub fn from_before_a_step(since: u64, length: u64, now: u64) -> bool {
    since > now.saturating_add(length)
}

/// Milliseconds since the epoch (0 before it).
pub fn ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::runs;

    #[test]
    fn a_period_runs_from_its_start_and_one_far_ahead_is_over() {
        // 10 ms from 100.
        assert!(!runs(100, 10, 110), "over at its end");
        assert!(runs(100, 10, 109));
        assert!(runs(100, 10, 100));
        // Ahead by up to its length: it runs (the clock stepped back a little, or drifted).
        assert!(runs(100, 10, 90));
        // Further ahead: from before a step back, over.
        assert!(!runs(100, 10, 89));
        assert!(!runs(100, 0, 100), "an empty period never runs");
        assert!(runs(u64::MAX - 5, 10, u64::MAX - 1), "no overflow");
    }
}
