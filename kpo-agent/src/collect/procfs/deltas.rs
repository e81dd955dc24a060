//! Differences of kernel counters between two readings, summed the way [`super::HostMetrics`]
//! reports them. Per-CPU and per-device counters are matched by CPU id or device name; one
//! present in only one reading (hotplug, a new disk) is left out rather than guessed.
use std::collections::BTreeMap;

use super::{Diskstats, Interrupts, NetCounters, Schedstat, Softirqs, Softnet, SoftnetCpu};

/// Change of a 64-bit counter; backwards (a reset) counts as 0.
pub(super) fn delta(before: u64, now: u64) -> u64 {
    now.saturating_sub(before)
}

/// Change of a counter the kernel keeps in 32 bits. A fall of more than half the range is one
/// wrap (at 1 M/s a 32-bit counter wraps every 72 minutes); a smaller fall is not a plausible
/// wrap within a window (a reset, or lines matched to the wrong CPU) and counts as 0. A value
/// above 32 bits means the kernel widened the counter, and then a fall is a reset.
pub(super) fn delta32(before: u64, now: u64) -> u64 {
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

/// Change of a netstat/snmp counter, `None` if either reading lacks it. These are signed only
/// because of snmp's `TcpMaxConn` (-1); a fall is a reset and counts as 0.
pub(super) fn net_delta(first: &NetCounters, last: &NetCounters, key: &str) -> Option<u64> {
    let (before, now) = (*first.get(key)?, *last.get(key)?);
    Some(
        now.checked_sub(before)
            .and_then(|d| u64::try_from(d).ok())
            .unwrap_or(0),
    )
}

#[derive(Clone, Copy)]
pub(super) struct SoftnetDeltas {
    pub(super) processed: u64,
    pub(super) dropped: u64,
    pub(super) time_squeeze: u64,
}

pub(super) fn softnet_deltas(first: &Softnet, last: &Softnet) -> SoftnetDeltas {
    let mut sum = SoftnetDeltas {
        processed: 0,
        dropped: 0,
        time_squeeze: 0,
    };
    for now in &last.cpus {
        let Some(before) = first.cpus.iter().find(|c| c.cpu == now.cpu) else {
            continue;
        };
        let d = |f: fn(&SoftnetCpu) -> u32| delta32(u64::from(f(before)), u64::from(f(now)));
        sum.processed = sum.processed.saturating_add(d(|c| c.processed));
        sum.dropped = sum.dropped.saturating_add(d(|c| c.dropped));
        sum.time_squeeze = sum.time_squeeze.saturating_add(d(|c| c.time_squeeze));
    }
    sum
}

#[derive(Clone, Copy)]
pub(super) struct DiskDeltas {
    pub(super) reads: u64,
    pub(super) writes: u64,
    pub(super) sectors_read: u64,
    pub(super) sectors_written: u64,
}

pub(super) fn disk_deltas(first: &Diskstats, last: &Diskstats) -> DiskDeltas {
    let mut sum = DiskDeltas {
        reads: 0,
        writes: 0,
        sectors_read: 0,
        sectors_written: 0,
    };
    for now in last.whole_disks() {
        let Some(before) = first.devices.iter().find(|d| d.name == now.name) else {
            continue;
        };
        sum.reads = sum
            .reads
            .saturating_add(delta(before.reads_completed, now.reads_completed));
        sum.writes = sum
            .writes
            .saturating_add(delta(before.writes_completed, now.writes_completed));
        sum.sectors_read = sum
            .sectors_read
            .saturating_add(delta(before.sectors_read, now.sectors_read));
        sum.sectors_written = sum
            .sectors_written
            .saturating_add(delta(before.sectors_written, now.sectors_written));
    }
    sum
}

/// Sum over the CPUs both readings list of the 32-bit per-CPU counts, matched by CPU id.
pub(super) fn per_cpu_delta(
    first_cpus: &[u32],
    first: &[u64],
    last_cpus: &[u32],
    last: &[u64],
) -> u64 {
    last_cpus
        .iter()
        .zip(last)
        .filter_map(|(cpu, now)| {
            let i = first_cpus.iter().position(|c| c == cpu)?;
            Some(delta32(*first.get(i)?, *now))
        })
        .fold(0, u64::saturating_add)
}

pub(super) fn softirq_deltas(first: &Softirqs, last: &Softirqs) -> BTreeMap<String, u64> {
    last.vectors
        .iter()
        .filter_map(|(name, now)| {
            let before = first.vectors.get(name)?;
            Some((
                name.clone(),
                per_cpu_delta(&first.cpus, before, &last.cpus, now),
            ))
        })
        .collect()
}

pub(super) fn interrupt_delta(first: &Interrupts, last: &Interrupts) -> u64 {
    last.lines
        .iter()
        .filter(|l| !l.is_error_count())
        .filter_map(|now| {
            let before = first.lines.iter().find(|l| l.id == now.id)?;
            Some(per_cpu_delta(
                &first.cpus,
                &before.counts,
                &last.cpus,
                &now.counts,
            ))
        })
        .fold(0, u64::saturating_add)
}

#[derive(Clone, Copy)]
pub(super) struct SchedDeltas {
    pub(super) run_delay_ns: u64,
    pub(super) timeslices: u64,
    pub(super) cpus: u64,
}

/// `None` when no CPU is in both readings (nothing to average over).
pub(super) fn sched_deltas(first: &Schedstat, last: &Schedstat) -> Option<SchedDeltas> {
    let mut sum = SchedDeltas {
        run_delay_ns: 0,
        timeslices: 0,
        cpus: 0,
    };
    for now in &last.cpus {
        let Some(before) = first.cpus.iter().find(|c| c.cpu == now.cpu) else {
            continue;
        };
        sum.run_delay_ns = sum
            .run_delay_ns
            .saturating_add(delta(before.run_delay_ns, now.run_delay_ns));
        sum.timeslices = sum
            .timeslices
            .saturating_add(delta(before.timeslices, now.timeslices));
        sum.cpus += 1;
    }
    (sum.cpus > 0).then_some(sum)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counter_deltas_handle_resets_and_32_bit_wraps() {
        assert_eq!(delta(10, 4), 0);
        assert_eq!(delta(4, 10), 6);
        assert_eq!(delta32(u64::from(u32::MAX) - 1, 3), 5, "wrapped");
        assert_eq!(delta32(1000, 10), 0, "a small fall is a reset, not a wrap");
        assert_eq!(
            delta32(1 << 40, 5),
            0,
            "a counter wider than 32 bits does not wrap there"
        );
    }
}
