//! One way to take a counter's delta: the change of a counter between two readings, by what a
//! counter that went down means for it. Every difference of two counter readings in the agent
//! goes through one of these functions, so the policy is a name at the call site.
//!
//! | function | the counter | a fall means | delta after a fall |
//! | --- | --- | --- | --- |
//! | [`monotonic`] | kernel counter that only grows while it exists (/proc/stat, diskstats, schedstat, netstat) | it was reset (device re-created, CPU unplugged) | 0: what was counted since is unknown |
//! | [`monotonic_signed`] | the same, printed signed (net/snmp, for `TcpMaxConn` = -1) | as [`monotonic`] | 0 |
//! | [`restarted`] | counter the agent's eBPF programs keep in a map slot | the slot was re-created and counts from 0 | the new value |
//! | [`wrapping_u32`] | kernel counter kept in 32 bits, per CPU (softnet_stat, softirqs, interrupts) | a wrap past 2^32 if the wrapped distance is under half the range and could have been counted in the time between the readings at [`MAX_U32_RATE`], else a reset | the wrapped distance, or 0 |
//! | [`wrapping`] | counter that wraps to 0 after a known range (RAPL `energy_uj` after `max_energy_range_uj`; a listening socket's `sk_drops`, 32 bits in sock_diag, by socket inode) | one wrap | `range - before + now` |
//!
//! None of them panics or overflows, whatever the readings.

/// A kernel counter that only grows while it exists; a fall is a reset, and what was counted
/// since is unknown, so it counts 0.
pub fn monotonic(before: u64, now: u64) -> u64 {
    now.saturating_sub(before)
}

/// [`monotonic`] for counters printed signed (net/snmp's `TcpMaxConn` is -1): a fall counts 0.
pub fn monotonic_signed(before: i64, now: i64) -> u64 {
    u64::try_from(i128::from(now) - i128::from(before)).unwrap_or(0)
}

/// A counter that starts again from 0 when its slot is re-created (an eBPF map entry): after a
/// fall, the new value is everything counted since the restart.
pub fn restarted(before: u64, now: u64) -> u64 {
    if now >= before {
        now - before
    } else {
        now
    }
}

/// A counter that wraps to 0 after reaching `range` (RAPL's `energy_uj` after
/// `max_energy_range_uj`, a socket's 32-bit `sk_drops`). A fall is one wrap, so readings must be closer together than one wrap
/// period.
pub fn wrapping(before: u64, now: u64, range: u64) -> u64 {
    if now >= before {
        now - before
    } else {
        range.saturating_sub(before).saturating_add(now)
    }
}

/// The most events a second that one CPU's 32-bit kernel counter is taken to count (2^24, about
/// 16.8 million): several times what one CPU's receive path, softirq handler or interrupt line
/// gets through (a few million a second at most). A fall whose wrapped distance would need more
/// is a reset.
pub const MAX_U32_RATE: f64 = (1u64 << 24) as f64;

/// A counter the kernel keeps in 32 bits (per-CPU softnet, softirq and interrupt counts), read
/// twice `secs` seconds apart. A fall is one wrap when the wrapped distance is under half the
/// range (at 1 M/s a 32-bit counter wraps every 72 minutes, and readings are compared a tick
/// apart, a tick being at most the longest window, 30 minutes, or across failed reads) and no
/// more than [`MAX_U32_RATE`] a second over `secs` could count: a counter re-created (an IRQ
/// freed and requested again under the same name, a driver reload) falls to a small value from
/// wherever it was, and from above 2^31 the wrapped distance would pass the first test. Any other
/// fall is not a plausible wrap between two readings (a reset, or lines matched to the wrong CPU)
/// and counts 0. A value above 32 bits means the kernel widened the counter, and then a fall is a
/// reset.
pub fn wrapping_u32(before: u64, now: u64, secs: f64) -> u64 {
    const RANGE: u64 = 1 << 32;
    if now >= before {
        return now - before;
    }
    if before >= RANGE {
        return 0;
    }
    let wrapped = RANGE - before + now;
    if wrapped < RANGE / 2 && (wrapped as f64) <= MAX_U32_RATE * secs.max(0.0) {
        wrapped
    } else {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn monotonic_counts_a_reset_as_zero() {
        assert_eq!(monotonic(4, 10), 6);
        assert_eq!(monotonic(10, 4), 0);
        assert_eq!(monotonic(0, u64::MAX), u64::MAX);
        assert_eq!(monotonic_signed(-1, 5), 6);
        assert_eq!(monotonic_signed(10, 4), 0);
        assert_eq!(monotonic_signed(i64::MIN, i64::MAX), u64::MAX);
        assert_eq!(monotonic_signed(i64::MAX, i64::MIN), 0);
    }

    #[test]
    fn restarted_counts_the_new_value() {
        assert_eq!(restarted(4, 10), 6);
        assert_eq!(restarted(10, 4), 4);
        assert_eq!(restarted(u64::MAX, 0), 0);
    }

    #[test]
    fn wrapping_at_a_range() {
        assert_eq!(wrapping(100, 250, 1000), 150);
        assert_eq!(wrapping(900, 50, 1000), 150);
        assert_eq!(wrapping(1000, 0, 1000), 0);
        assert_eq!(wrapping(5, 5, 1000), 0);
        // A reading above the advertised range (a buggy driver) does not underflow.
        assert_eq!(wrapping(2000, 5, 1000), 5);
        assert_eq!(wrapping(10, 5, u64::MAX), u64::MAX - 5);
    }

    #[test]
    fn wrapping_u32_tells_wraps_from_resets() {
        assert_eq!(wrapping_u32(4, 10, 1.0), 6);
        assert_eq!(wrapping_u32(u64::from(u32::MAX) - 1, 3, 1.0), 5, "wrapped");
        assert_eq!(wrapping_u32(1000, 10, 1.0), 0, "a small fall is a reset");
        assert_eq!(wrapping_u32(1 << 40, 5, 1.0), 0, "wider than 32 bits");
        assert_eq!(wrapping_u32(0, 1 << 40, 1.0), 1 << 40);
    }

    /// Defect: a counter re-created from above 2^31 (an IRQ requested again under the same
    /// name) passed for a wrap: 3e9 to 5 counted 1.29e9 events in a 10 s tick.
    #[test]
    fn wrapping_u32_takes_a_fall_from_above_half_the_range_too_fast_to_wrap_for_a_reset() {
        let range = 1u64 << 32;
        // Reset: 1.29e9 in 10 s would be 129 M/s on one CPU.
        assert_eq!(wrapping_u32(3_000_000_000, 5, 10.0), 0);
        assert_eq!(wrapping_u32(range / 2 + 1, 0, 60.0), 0);
        // A real wrap near 2^32 counts across it, at any tick length.
        assert_eq!(wrapping_u32(range - 1000, 500, 1.0), 1500);
        assert_eq!(wrapping_u32(range - 1000, 500, 0.001), 1500);
        // The same fall as the reset above, over a 30-minute window: 0.77 M/s, a wrap.
        assert_eq!(
            wrapping_u32(3_000_000_000, 100_000_000, 1800.0),
            range - 3_000_000_000 + 100_000_000
        );
        // At the ceiling: counted; one more event: a reset.
        let most = MAX_U32_RATE as u64 * 10;
        assert_eq!(wrapping_u32(range - most, 0, 10.0), most);
        assert_eq!(wrapping_u32(range - most, 1, 10.0), 0);
        // No time between the readings: nothing could have wrapped.
        assert_eq!(wrapping_u32(range - 10, 5, 0.0), 0);
    }
}
