//! Differences of kernel counters between two readings, summed the way [`super::HostMetrics`]
//! reports them. Per-CPU and per-device counters are matched by CPU id or device name; one
//! present in only one reading (hotplug, a new disk) is left out rather than guessed. What a
//! counter that went down means is [`crate::counter`]'s: 64-bit counters are
//! [`counter::monotonic`], the 32-bit per-CPU ones [`counter::wrapping_u32`].
use std::collections::BTreeMap;

use crate::counter;

use super::{Diskstats, Interrupts, NetCounters, Schedstat, Softirqs, Softnet, SoftnetCpu};

/// Change of a netstat/snmp counter, `None` if either reading lacks it. These are signed only
/// because of snmp's `TcpMaxConn` (-1); a fall is a reset and counts as 0.
pub(super) fn net_delta(first: &NetCounters, last: &NetCounters, key: &str) -> Option<u64> {
    Some(counter::monotonic_signed(*first.get(key)?, *last.get(key)?))
}

#[derive(Clone, Copy)]
pub(super) struct SoftnetDeltas {
    pub(super) processed: u64,
    pub(super) dropped: u64,
    pub(super) time_squeeze: u64,
}

/// `None` when the CPUs cannot be matched: before Linux 5.10 a line's CPU is only its position
/// and offline CPUs print no line, so once the number of lines changes (a CPU went offline or
/// came back) the lines after it belong to other CPUs than before, and their differences
/// would be other CPUs' counters subtracted from each other.
pub(super) fn softnet_deltas(first: &Softnet, last: &Softnet) -> Option<SoftnetDeltas> {
    let by_position = !(first.cpu_ids_from_kernel && last.cpu_ids_from_kernel);
    if by_position && first.cpus.len() != last.cpus.len() {
        return None;
    }
    let mut sum = SoftnetDeltas {
        processed: 0,
        dropped: 0,
        time_squeeze: 0,
    };
    for now in &last.cpus {
        let Some(before) = first.cpus.iter().find(|c| c.cpu == now.cpu) else {
            continue;
        };
        let d = |f: fn(&SoftnetCpu) -> u32| {
            counter::wrapping_u32(u64::from(f(before)), u64::from(f(now)))
        };
        sum.processed = sum.processed.saturating_add(d(|c| c.processed));
        sum.dropped = sum.dropped.saturating_add(d(|c| c.dropped));
        sum.time_squeeze = sum.time_squeeze.saturating_add(d(|c| c.time_squeeze));
    }
    Some(sum)
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
        sum.reads = sum.reads.saturating_add(counter::monotonic(
            before.reads_completed,
            now.reads_completed,
        ));
        sum.writes = sum.writes.saturating_add(counter::monotonic(
            before.writes_completed,
            now.writes_completed,
        ));
        sum.sectors_read = sum
            .sectors_read
            .saturating_add(counter::monotonic(before.sectors_read, now.sectors_read));
        sum.sectors_written = sum.sectors_written.saturating_add(counter::monotonic(
            before.sectors_written,
            now.sectors_written,
        ));
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
            Some(counter::wrapping_u32(*first.get(i)?, *now))
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
            .saturating_add(counter::monotonic(before.run_delay_ns, now.run_delay_ns));
        sum.timeslices = sum
            .timeslices
            .saturating_add(counter::monotonic(before.timeslices, now.timeslices));
        sum.cpus += 1;
    }
    (sum.cpus > 0).then_some(sum)
}
