//! One way to take a counter's delta: the change of a counter between two readings, by what a
//! counter that went down means for it. Every difference of two counter readings in the agent
//! goes through one of these functions, so the policy is a name at the call site.
//!
//! | function | the counter | a fall means | delta after a fall |
//! | --- | --- | --- | --- |
//! | [`monotonic`] | kernel counter that only grows while it exists (/proc/stat, diskstats, schedstat, netstat) | it was reset (device re-created, CPU unplugged) | 0: what was counted since is unknown |
//! | [`monotonic_signed`] | the same, printed signed (net/snmp, for `TcpMaxConn` = -1) | as [`monotonic`] | 0 |
//! | [`restarted`] | counter the agent's eBPF programs keep in a map slot | the slot was re-created and counts from 0 | the new value |
//! | [`wrapping_u32`] | kernel counter kept in 32 bits (softnet_stat, softirqs, interrupts) | a wrap past 2^32 if it fell by more than half the range, else a reset | the wrapped distance, or 0 |
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

/// A counter the kernel keeps in 32 bits (per-CPU softnet, softirq and interrupt counts). A fall
/// of more than half the range is one wrap (at 1 M/s a 32-bit counter wraps every 72 minutes); a
/// smaller fall is not a plausible wrap between two readings (a reset, or lines matched to the
/// wrong CPU) and counts 0. A value above 32 bits means the kernel widened the counter, and then a
/// fall is a reset.
pub fn wrapping_u32(before: u64, now: u64) -> u64 {
    const RANGE: u64 = 1 << 32;
    if now >= before {
        return now - before;
    }
    if before >= RANGE {
        return 0;
    }
    let wrapped = RANGE - before + now;
    if wrapped < RANGE / 2 {
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
        assert_eq!(wrapping_u32(4, 10), 6);
        assert_eq!(wrapping_u32(u64::from(u32::MAX) - 1, 3), 5, "wrapped");
        assert_eq!(wrapping_u32(1000, 10), 0, "a small fall is a reset");
        assert_eq!(wrapping_u32(1 << 40, 5), 0, "wider than 32 bits");
        assert_eq!(wrapping_u32(0, 1 << 40), 1 << 40);
    }
}
