//! [`HostMetrics`]: what two [`HostSnapshot`]s say about the time between them. This is the
//! `system` object of the window event; docs/host-metrics.md documents every field and
//! `$defs/system` in docs/events.schema.json is its JSON Schema (a test keeps all three in step).
//!
//! Rules applied throughout:
//! - rates are window differences divided by the seconds between the snapshots (those of the
//!   32-bit per-CPU counters added up tick by tick: [`PerCpuSums`]);
//! - levels (memory, load, PSI averages) are the last snapshot's values;
//! - counter differences never go negative ([`super::deltas`] says how resets, 32-bit wraps and
//!   CPUs or devices present in only one snapshot are handled);
//! - a field whose source is missing from either snapshot, or a rate over a zero interval, is
//!   `None` and serializes as `null`: every field is always present, so the shape of the event
//!   never changes (the event stream uses null for "unknown" elsewhere too);
//! - floating-point values are rounded to 3 decimal places, like the rest of the window event.
use std::collections::BTreeMap;

use serde::Serialize;

use crate::counter;

use super::{
    deltas::{disk_deltas, net_delta, sched_deltas},
    per_cpu_sums::PerCpuSums,
    snapshot::HostSnapshot,
    stat::CpuJiffies,
    Pressure, PressureFile, Stat,
};

/// Diskstats sectors are 512 bytes whatever the device's sector size.
const SECTOR_BYTES: u64 = 512;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HostMetrics {
    // CPU time shares of all CPUs from /proc/stat; they add up to 100 with cpu_idle_pct.
    /// Idle including I/O wait, percent.
    pub cpu_idle_pct: Option<f64>,
    /// user + nice (guest time included), percent.
    pub cpu_user_pct: Option<f64>,
    pub cpu_system_pct: Option<f64>,
    /// Hard interrupt handlers, percent.
    pub cpu_irq_pct: Option<f64>,
    pub cpu_softirq_pct: Option<f64>,
    /// Time a hypervisor ran something else while this guest wanted the CPU, percent.
    pub cpu_steal_pct: Option<f64>,
    /// The part of cpu_idle_pct with I/O outstanding, percent.
    pub cpu_iowait_pct: Option<f64>,
    pub context_switches_per_s: Option<f64>,
    pub forks_per_s: Option<f64>,
    pub procs_running: Option<u64>,
    pub procs_blocked: Option<u64>,

    pub mem_total_bytes: Option<u64>,
    pub mem_free_bytes: Option<u64>,
    pub mem_available_bytes: Option<u64>,
    pub mem_buffers_bytes: Option<u64>,
    pub mem_cached_bytes: Option<u64>,
    pub mem_dirty_bytes: Option<u64>,
    pub swap_total_bytes: Option<u64>,
    pub swap_free_bytes: Option<u64>,
    // /proc/vmstat, pages per second: swap traffic, and pages read back soon after reclaim
    // evicted them (the working set did not fit).
    pub swap_in_pages_per_s: Option<f64>,
    pub swap_out_pages_per_s: Option<f64>,
    pub refault_anon_pages_per_s: Option<f64>,
    pub refault_file_pages_per_s: Option<f64>,

    pub load1: Option<f64>,
    pub load5: Option<f64>,
    pub load15: Option<f64>,
    pub tasks_total: Option<u64>,

    // PSI: `avg10` is the kernel's 10-second average (percent); `stall_pct` is the share of the
    // window spent stalled, from the `total` microseconds.
    pub psi_cpu_some_avg10: Option<f64>,
    pub psi_cpu_full_avg10: Option<f64>,
    pub psi_cpu_some_stall_pct: Option<f64>,
    pub psi_cpu_full_stall_pct: Option<f64>,
    pub psi_memory_some_avg10: Option<f64>,
    pub psi_memory_full_avg10: Option<f64>,
    pub psi_memory_some_stall_pct: Option<f64>,
    pub psi_memory_full_stall_pct: Option<f64>,
    pub psi_io_some_avg10: Option<f64>,
    pub psi_io_full_avg10: Option<f64>,
    pub psi_io_some_stall_pct: Option<f64>,
    pub psi_io_full_stall_pct: Option<f64>,

    // The agent's network namespace, from /proc/net/netstat, /proc/net/snmp and /proc/net/snmp6.
    /// TcpExtListenOverflows over the window.
    pub listen_overflows: Option<u64>,
    /// TcpExtListenDrops over the window.
    pub listen_drops: Option<u64>,
    pub listen_overflows_per_s: Option<f64>,
    pub listen_drops_per_s: Option<f64>,
    pub tcp_retrans_segs_per_s: Option<f64>,
    pub tcp_syn_retrans_per_s: Option<f64>,
    pub tcp_active_opens_per_s: Option<f64>,
    pub tcp_passive_opens_per_s: Option<f64>,
    pub tcp_in_segs_per_s: Option<f64>,
    pub tcp_out_segs_per_s: Option<f64>,
    /// IPv4 (`IpExtInOctets`, netstat) and IPv6 (`Ip6InOctets`, snmp6) bytes received.
    pub ip_in_bytes_per_s: Option<f64>,
    /// IPv4 (`IpExtOutOctets`) and IPv6 (`Ip6OutOctets`) bytes sent.
    pub ip_out_bytes_per_s: Option<f64>,

    // /proc/net/softnet_stat, summed over CPUs.
    pub softnet_processed_per_s: Option<f64>,
    /// Packets dropped over the window because a CPU's backlog was full.
    pub softnet_dropped: Option<u64>,
    pub softnet_dropped_per_s: Option<f64>,
    /// Of those, packets flow limiting shed (`net.core.flow_limit_cpu_bitmap`; column 11): a
    /// longer backlog does not cure them, and loosens the limit.
    pub softnet_flow_limited: Option<u64>,
    /// Times over the window the receive softirq stopped with work left.
    pub softnet_time_squeeze: Option<u64>,
    pub softnet_time_squeeze_per_s: Option<f64>,

    // /proc/diskstats, summed over whole disks.
    pub disk_reads_per_s: Option<f64>,
    pub disk_writes_per_s: Option<f64>,
    pub disk_read_bytes_per_s: Option<f64>,
    pub disk_write_bytes_per_s: Option<f64>,

    /// /proc/softirqs: vector name to runs per second, summed over CPUs.
    pub softirqs_per_s: Option<BTreeMap<String, f64>>,
    /// /proc/interrupts: all per-CPU lines (numbered IRQs and architecture counters such as
    /// LOC, RES, CAL), summed; ERR and MIS are error counts and left out.
    pub interrupts_per_s: Option<f64>,

    /// /proc/schedstat: nanoseconds tasks spent waiting on run queues per second, averaged over
    /// CPUs (1e9 means one task waiting all the time on every CPU).
    pub sched_run_delay_ns_per_s_per_cpu: Option<f64>,
    pub sched_timeslices_per_s: Option<f64>,
}

impl HostMetrics {
    /// Between two snapshots, one tick apart (or in tests), the 32-bit per-CPU counters compared
    /// directly.
    pub fn between(first: &HostSnapshot, last: &HostSnapshot) -> Self {
        Self::over(first, last, &PerCpuSums::between(first, last))
    }

    /// Over a window from `first` to `last`, whose 32-bit per-CPU counters (softnet, softirqs,
    /// interrupts) `per_cpu` added up tick by tick: compared first to last, a busy CPU's could
    /// wrap past what a difference can tell from a reset (see [`PerCpuSums`]). The other
    /// counters are 64-bit and compared first to last.
    pub fn over(first: &HostSnapshot, last: &HostSnapshot, per_cpu: &PerCpuSums) -> Self {
        let secs = last.at.saturating_duration_since(first.at).as_secs_f64();
        let span = Span((secs > 0.0).then_some(secs));
        let shares = both(&first.stat, &last.stat).and_then(|(a, b)| cpu_shares_between(a, b));
        let stat_rate = |field: fn(&Stat) -> Option<u64>| {
            both(&first.stat, &last.stat)
                .and_then(|(a, b)| span.rate(counter::monotonic(field(a)?, field(b)?)))
        };
        let last_stat = last.stat.as_ref();
        let mem = last.meminfo.as_ref();
        let load = last.loadavg.as_ref();
        let psi = |pick: fn(&Pressure) -> Option<&PressureFile>| {
            Psi::between(
                first.pressure.as_ref().and_then(pick),
                last.pressure.as_ref().and_then(pick),
                span,
            )
        };
        let (cpu, memory, io) = (
            psi(|p| p.cpu.as_ref()),
            psi(|p| p.memory.as_ref()),
            psi(|p| p.io.as_ref()),
        );
        let netstat =
            |key: &str| both(&first.netstat, &last.netstat).and_then(|(a, b)| net_delta(a, b, key));
        let snmp =
            |key: &str| both(&first.snmp, &last.snmp).and_then(|(a, b)| net_delta(a, b, key));
        // A kernel without IPv6 has no snmp6 and carries no IPv6: nothing to add.
        let ip6 = |key: &str| match both(&first.snmp6, &last.snmp6)? {
            (Some(a), Some(b)) => net_delta(a, b, key),
            (None, None) => Some(0),
            _ => None,
        };
        let (overflows, drops) = (
            netstat("TcpExtListenOverflows"),
            netstat("TcpExtListenDrops"),
        );
        let softnet = per_cpu.softnet();
        let vmstat_rate = |field: fn(&super::Vmstat) -> Option<u64>| {
            both(&first.vmstat, &last.vmstat)
                .and_then(|(a, b)| span.rate(counter::monotonic(field(a)?, field(b)?)))
        };
        let disks = both(&first.diskstats, &last.diskstats).map(|(a, b)| disk_deltas(a, b));
        let sched = both(&first.schedstat, &last.schedstat).and_then(|(a, b)| sched_deltas(a, b));
        Self {
            cpu_idle_pct: shares.map(|s| s.idle),
            cpu_user_pct: shares.map(|s| s.user),
            cpu_system_pct: shares.map(|s| s.system),
            cpu_irq_pct: shares.map(|s| s.irq),
            cpu_softirq_pct: shares.map(|s| s.softirq),
            cpu_steal_pct: shares.map(|s| s.steal),
            cpu_iowait_pct: shares.map(|s| s.iowait),
            context_switches_per_s: stat_rate(|s| s.context_switches),
            forks_per_s: stat_rate(|s| s.forks),
            procs_running: last_stat.and_then(|s| s.procs_running),
            procs_blocked: last_stat.and_then(|s| s.procs_blocked),

            mem_total_bytes: mem.and_then(|m| m.mem_total_bytes),
            mem_free_bytes: mem.and_then(|m| m.mem_free_bytes),
            mem_available_bytes: mem.and_then(|m| m.mem_available_bytes),
            mem_buffers_bytes: mem.and_then(|m| m.buffers_bytes),
            mem_cached_bytes: mem.and_then(|m| m.cached_bytes),
            mem_dirty_bytes: mem.and_then(|m| m.dirty_bytes),
            swap_total_bytes: mem.and_then(|m| m.swap_total_bytes),
            swap_free_bytes: mem.and_then(|m| m.swap_free_bytes),
            swap_in_pages_per_s: vmstat_rate(|v| v.pswpin),
            swap_out_pages_per_s: vmstat_rate(|v| v.pswpout),
            refault_anon_pages_per_s: vmstat_rate(|v| v.workingset_refault_anon),
            refault_file_pages_per_s: vmstat_rate(|v| v.workingset_refault_file),

            load1: load.map(|l| round3(l.load1)),
            load5: load.map(|l| round3(l.load5)),
            load15: load.map(|l| round3(l.load15)),
            tasks_total: load.map(|l| l.total),

            psi_cpu_some_avg10: cpu.some_avg10,
            psi_cpu_full_avg10: cpu.full_avg10,
            psi_cpu_some_stall_pct: cpu.some_stall_pct,
            psi_cpu_full_stall_pct: cpu.full_stall_pct,
            psi_memory_some_avg10: memory.some_avg10,
            psi_memory_full_avg10: memory.full_avg10,
            psi_memory_some_stall_pct: memory.some_stall_pct,
            psi_memory_full_stall_pct: memory.full_stall_pct,
            psi_io_some_avg10: io.some_avg10,
            psi_io_full_avg10: io.full_avg10,
            psi_io_some_stall_pct: io.some_stall_pct,
            psi_io_full_stall_pct: io.full_stall_pct,

            listen_overflows: overflows,
            listen_drops: drops,
            listen_overflows_per_s: span.rate_of(overflows),
            listen_drops_per_s: span.rate_of(drops),
            tcp_retrans_segs_per_s: span.rate_of(snmp("TcpRetransSegs")),
            tcp_syn_retrans_per_s: span.rate_of(netstat("TcpExtTCPSynRetrans")),
            tcp_active_opens_per_s: span.rate_of(snmp("TcpActiveOpens")),
            tcp_passive_opens_per_s: span.rate_of(snmp("TcpPassiveOpens")),
            tcp_in_segs_per_s: span.rate_of(snmp("TcpInSegs")),
            tcp_out_segs_per_s: span.rate_of(snmp("TcpOutSegs")),
            ip_in_bytes_per_s: span.rate_of(sum(netstat("IpExtInOctets"), ip6("Ip6InOctets"))),
            ip_out_bytes_per_s: span.rate_of(sum(netstat("IpExtOutOctets"), ip6("Ip6OutOctets"))),

            softnet_processed_per_s: span.rate_of(softnet.map(|s| s.processed)),
            softnet_dropped: softnet.map(|s| s.dropped),
            softnet_dropped_per_s: span.rate_of(softnet.map(|s| s.dropped)),
            softnet_flow_limited: softnet.map(|s| s.flow_limited),
            softnet_time_squeeze: softnet.map(|s| s.time_squeeze),
            softnet_time_squeeze_per_s: span.rate_of(softnet.map(|s| s.time_squeeze)),

            disk_reads_per_s: span.rate_of(disks.map(|d| d.reads)),
            disk_writes_per_s: span.rate_of(disks.map(|d| d.writes)),
            disk_read_bytes_per_s: span
                .rate_of(disks.map(|d| d.sectors_read.saturating_mul(SECTOR_BYTES))),
            disk_write_bytes_per_s: span
                .rate_of(disks.map(|d| d.sectors_written.saturating_mul(SECTOR_BYTES))),

            softirqs_per_s: per_cpu.softirqs().and_then(|runs| {
                let secs = span.0?;
                Some(
                    runs.iter()
                        .map(|(name, n)| (name.clone(), round3(*n as f64 / secs)))
                        .collect(),
                )
            }),
            interrupts_per_s: span.rate_of(per_cpu.interrupts()),

            sched_run_delay_ns_per_s_per_cpu: sched.and_then(|s| {
                span.0
                    .map(|secs| round3(s.run_delay_ns as f64 / secs / s.cpus as f64))
            }),
            sched_timeslices_per_s: sched.and_then(|s| span.rate(s.timeslices)),
        }
    }
}

/// Seconds between the snapshots, `None` when zero (no rate can be computed).
#[derive(Clone, Copy)]
struct Span(Option<f64>);

impl Span {
    fn rate(self, delta: u64) -> Option<f64> {
        self.0.map(|secs| round3(delta as f64 / secs))
    }

    fn rate_of(self, delta: Option<u64>) -> Option<f64> {
        delta.and_then(|d| self.rate(d))
    }
}

fn sum(a: Option<u64>, b: Option<u64>) -> Option<u64> {
    Some(a?.saturating_add(b?))
}

fn both<'a, T>(first: &'a Option<T>, last: &'a Option<T>) -> Option<(&'a T, &'a T)> {
    Some((first.as_ref()?, last.as_ref()?))
}

fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

#[derive(Clone, Copy)]
struct CpuShares {
    idle: f64,
    user: f64,
    system: f64,
    irq: f64,
    softirq: f64,
    steal: f64,
    iowait: f64,
}

/// Shares of CPU time over the CPUs online at both readings (their `cpuN` lines), or from the
/// `cpu` line when there are none. The `cpu` line sums idle and iowait over every possible CPU,
/// taken from other sources for offline ones, so it jumps when a CPU goes offline or comes back
/// (sysstat sums the `cpuN` lines for the same reason).
fn cpu_shares_between(first: &Stat, last: &Stat) -> Option<CpuShares> {
    // A lost line, of one CPU or of the sum, nulls the shares (docs/host-metrics.md).
    if first.cpu_line_failed || last.cpu_line_failed {
        return None;
    }
    let before: std::collections::HashMap<u32, &CpuJiffies> =
        first.cpus.iter().map(|c| (c.cpu, &c.jiffies)).collect();
    let online_at_both: Vec<(&CpuJiffies, &CpuJiffies)> = last
        .cpus
        .iter()
        .filter_map(|c| Some((*before.get(&c.cpu)?, &c.jiffies)))
        .collect();
    if online_at_both.is_empty() {
        return cpu_shares(&[(first.total.as_ref()?, last.total.as_ref()?)]);
    }
    cpu_shares(&online_at_both)
}

/// Shares of CPU time over `(first, last)` readings of CPUs. The total is the sum of each
/// column's own change, CPU by CPU, so a column that went backwards (iowait can, on tickless
/// kernels) counts as 0 and the shares still add up to 100.
fn cpu_shares(cpus: &[(&CpuJiffies, &CpuJiffies)]) -> Option<CpuShares> {
    let d = |column: fn(&CpuJiffies) -> u64| {
        cpus.iter()
            .map(|(first, last)| counter::monotonic(column(first), column(last)))
            .fold(0u64, u64::saturating_add)
    };
    let user = d(|j| j.user).saturating_add(d(|j| j.nice));
    let (system, idle, iowait) = (d(|j| j.system), d(|j| j.idle), d(|j| j.iowait));
    let (irq, softirq, steal) = (d(|j| j.irq), d(|j| j.softirq), d(|j| j.steal));
    let total = [user, system, idle, iowait, irq, softirq, steal]
        .into_iter()
        .fold(0u64, u64::saturating_add);
    if total == 0 {
        return None;
    }
    let pct = |n: u64| round3(n as f64 * 100.0 / total as f64);
    Some(CpuShares {
        idle: pct(idle.saturating_add(iowait)),
        user: pct(user),
        system: pct(system),
        irq: pct(irq),
        softirq: pct(softirq),
        steal: pct(steal),
        iowait: pct(iowait),
    })
}

struct Psi {
    some_avg10: Option<f64>,
    full_avg10: Option<f64>,
    some_stall_pct: Option<f64>,
    full_stall_pct: Option<f64>,
}

impl Psi {
    /// The stall share may read slightly above 100: the snapshot times are taken in user space,
    /// not when the kernel read its clock.
    fn between(first: Option<&PressureFile>, last: Option<&PressureFile>, span: Span) -> Self {
        let stall_pct = |before: Option<u64>, now: Option<u64>| {
            let (before, now, secs) = (before?, now?, span.0?);
            Some(round3(
                counter::monotonic(before, now) as f64 / (secs * 1e6) * 100.0,
            ))
        };
        Self {
            some_avg10: last.and_then(|p| p.some).map(|s| round3(s.avg10)),
            full_avg10: last.and_then(|p| p.full).map(|f| round3(f.avg10)),
            some_stall_pct: stall_pct(
                first.and_then(|p| p.some).map(|s| s.total_us),
                last.and_then(|p| p.some).map(|s| s.total_us),
            ),
            full_stall_pct: stall_pct(
                first.and_then(|p| p.full).map(|f| f.total_us),
                last.and_then(|p| p.full).map(|f| f.total_us),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;
    use crate::collect::procfs::{
        diskstats::parse_diskstats,
        interrupts::parse_interrupts,
        loadavg::parse_loadavg,
        meminfo::parse_meminfo,
        netstat::{parse_netstat, parse_snmp, parse_snmp6},
        pressure::parse_pressure,
        schedstat::parse_schedstat,
        softirqs::parse_softirqs,
        softnet::parse_softnet,
        stat::parse_stat,
        vmstat::parse_vmstat,
        NetCounters, Softnet,
    };

    const SCHEMA: &str = include_str!("../../../../docs/events.schema.json");
    const DOC: &str = include_str!("../../../../docs/host-metrics.md");

    fn stat(cpu: &str, ctxt: u64, forks: u64) -> Stat {
        parse_stat(&format!(
            "cpu {cpu}\nctxt {ctxt}\nprocesses {forks}\nprocs_running 3\nprocs_blocked 2\n"
        ))
        .strict()
        .unwrap()
    }

    fn pressure(cpu_some: u64, mem: (u64, u64), io: (u64, u64)) -> Pressure {
        let line = |kind: &str, total: u64| {
            format!("{kind} avg10=2.50 avg60=1.00 avg300=0.50 total={total}\n")
        };
        let file = |text: String| Some(parse_pressure(&text).strict().unwrap());
        Pressure {
            cpu: file(line("some", cpu_some)),
            memory: file(line("some", mem.0) + &line("full", mem.1)),
            io: file(line("some", io.0) + &line("full", io.1)),
        }
    }

    fn net(text: &str) -> NetCounters {
        parse_netstat(text).strict().unwrap()
    }

    fn snmp6(in_octets: u64, out_octets: u64) -> NetCounters {
        let text = format!(
            "Ip6InReceives 7\nIp6InOctets {in_octets}\nIp6OutOctets {out_octets}\nIcmp6InMsgs 0\n"
        );
        parse_snmp6(&text).strict().unwrap()
    }

    fn softnet(cpu0: (u32, u32, u32), cpu1: (u32, u32, u32)) -> Softnet {
        let line = |(p, d, s): (u32, u32, u32), id: u32| {
            format!("{p:08x} {d:08x} {s:08x} 0 0 0 0 0 0 0 0 0 {id:08x}\n")
        };
        parse_softnet(&(line(cpu0, 0) + &line(cpu1, 1))).unwrap()
    }

    /// s63 story CI-4: `softnet_flow_limited` is column 11's difference summed over CPUs, beside
    /// column 2's, which counts the same packets too.
    #[test]
    fn softnet_flow_limited_is_column_11s_difference() {
        let t0 = Instant::now();
        let mut a = HostSnapshot::empty(t0);
        let mut b = HostSnapshot::empty(t0 + Duration::from_secs(2));
        let line = |dropped: u32, flow: u32, id: u32| {
            format!("00000010 {dropped:08x} 00000000 0 0 0 0 0 0 0 {flow:08x} 0 {id:08x}\n")
        };
        a.softnet = Some(parse_softnet(&(line(1, 1, 0) + &line(0, 0, 1))).unwrap());
        b.softnet = Some(parse_softnet(&(line(9, 4, 0) + &line(5, 5, 1))).unwrap());
        let m = HostMetrics::between(&a, &b);
        assert_eq!(
            (m.softnet_dropped, m.softnet_flow_limited),
            (Some(13), Some(8))
        );
    }

    /// Two snapshots 2 s apart with every source, chosen so each metric has an exact value.
    fn window() -> (HostSnapshot, HostSnapshot) {
        let t0 = Instant::now();
        let mut a = HostSnapshot::empty(t0);
        let mut b = HostSnapshot::empty(t0 + Duration::from_secs(2));

        // Δ: user 100, system 50, idle 700, iowait 50, softirq 100 = 1000 jiffies.
        a.stat = Some(stat("100 0 50 800 50 0 0 0 0 0", 1000, 10));
        b.stat = Some(stat("200 0 100 1500 100 0 100 0 0 0", 3000, 30));
        b.meminfo = Some(
            parse_meminfo(
                "MemTotal: 1000 kB\nMemFree: 100 kB\nMemAvailable: 500 kB\nBuffers: 1 kB\n\
                 Cached: 2 kB\nSwapTotal: 0 kB\nSwapFree: 0 kB\nDirty: 3 kB\n",
            )
            .strict()
            .unwrap(),
        );
        b.loadavg = Some(parse_loadavg("1.50 0.75 0.25 3/200 99\n").unwrap());
        a.pressure = Some(pressure(1_000_000, (0, 0), (0, 0)));
        b.pressure = Some(pressure(1_500_000, (200_000, 100_000), (0, 0)));
        a.netstat = Some(net(
            "TcpExt: ListenOverflows ListenDrops TCPSynRetrans\nTcpExt: 10 10 0\n\
             IpExt: InOctets OutOctets\nIpExt: 1000 5000\n",
        ));
        b.netstat = Some(net(
            "TcpExt: ListenOverflows ListenDrops TCPSynRetrans\nTcpExt: 30 40 4\n\
             IpExt: InOctets OutOctets\nIpExt: 5000 1000\n",
        ));
        let snmp = |v: &str| {
            parse_snmp(&format!(
                "Tcp: MaxConn ActiveOpens PassiveOpens InSegs OutSegs RetransSegs\nTcp: -1 {v}\n"
            ))
            .strict()
            .unwrap()
        };
        a.snmp = Some(snmp("0 0 100 100 5"));
        b.snmp = Some(snmp("20 2 300 100 9"));
        a.snmp6 = Some(Some(snmp6(100, 50)));
        b.snmp6 = Some(Some(snmp6(2100, 450)));
        // CPU 1's processed counter wraps past 2^32: 0xfffffff0 -> 0x10 is 0x20 packets.
        a.softnet = Some(softnet((0x10, 1, 0), (0xffff_fff0, 0, 2)));
        b.softnet = Some(softnet((0x30, 5, 0), (0x10, 0, 6)));
        let vm = |text: &str| Some(parse_vmstat(text).strict().unwrap());
        a.vmstat =
            vm("pswpin 100\npswpout 10\nworkingset_refault_anon 0\nworkingset_refault_file 7\n");
        // The file refault counter went backwards (a reset): it counts 0.
        b.vmstat =
            vm("pswpin 300\npswpout 50\nworkingset_refault_anon 60\nworkingset_refault_file 5\n");
        // vda1 (a partition) and loop0 must not count; dm-0 does.
        let disks = |vda: &str, dm: &str| {
            parse_diskstats(&format!(
                " 254 0 vda {vda}\n 254 1 vda1 9999 0 99999 0 9999 0 99999 0 0 0 0\n\
                 7 0 loop0 500 0 5000 0 0 0 0 0 0 0 0\n 253 0 dm-0 {dm}\n"
            ))
            .unwrap()
        };
        a.diskstats = Some(disks(
            "100 0 1000 0 10 0 100 0 0 0 0",
            "0 0 0 0 0 0 0 0 0 0 0",
        ));
        b.diskstats = Some(disks(
            "300 0 3000 0 30 0 500 0 0 0 0",
            "2 0 8 0 0 0 0 0 0 0 0",
        ));
        a.softirqs = Some(parse_softirqs("CPU0 CPU1\nTIMER: 10 10\nNET_RX: 100 200\n").unwrap());
        b.softirqs = Some(
            parse_softirqs("CPU0 CPU1\nTIMER: 10 10\nNET_RX: 300 400\nNEWVEC: 9 9\n").unwrap(),
        );
        a.interrupts = Some(
            parse_interrupts(
                "CPU0 CPU1\n 24: 1 0 IO-APIC 5-edge x\nLOC: 100 100 Local timer\nERR: 5\n",
            )
            .unwrap(),
        );
        b.interrupts = Some(
            parse_interrupts(
                "CPU0 CPU1\n 24: 3 2 IO-APIC 5-edge x\nLOC: 200 300 Local timer\nERR: 50\n",
            )
            .unwrap(),
        );
        let sched = |cpu0: (u64, u64), cpu1: (u64, u64)| {
            parse_schedstat(&format!(
                "version 15\ncpu0 0 0 0 0 0 0 0 {} {}\ncpu1 0 0 0 0 0 0 0 {} {}\n",
                cpu0.0, cpu0.1, cpu1.0, cpu1.1
            ))
            .unwrap()
        };
        a.schedstat = Some(sched((1000, 10), (0, 0)));
        b.schedstat = Some(sched((2_001_000, 30), (1_000_000, 20)));
        (a, b)
    }

    #[test]
    fn between_gives_exact_rates_and_levels() {
        let (a, b) = window();
        let m = HostMetrics::between(&a, &b);
        let cpu = (
            m.cpu_idle_pct,
            m.cpu_user_pct,
            m.cpu_system_pct,
            m.cpu_softirq_pct,
            m.cpu_iowait_pct,
        );
        assert_eq!(
            cpu,
            (Some(75.0), Some(10.0), Some(5.0), Some(10.0), Some(5.0))
        );
        assert_eq!((m.cpu_irq_pct, m.cpu_steal_pct), (Some(0.0), Some(0.0)));
        assert_eq!(
            (m.context_switches_per_s, m.forks_per_s),
            (Some(1000.0), Some(10.0))
        );
        assert_eq!((m.procs_running, m.procs_blocked), (Some(3), Some(2)));

        assert_eq!(
            (m.mem_total_bytes, m.mem_free_bytes),
            (Some(1_024_000), Some(102_400))
        );
        assert_eq!(
            (m.mem_available_bytes, m.mem_dirty_bytes),
            (Some(512_000), Some(3072))
        );
        assert_eq!(
            (m.load1, m.load5, m.load15, m.tasks_total),
            (Some(1.5), Some(0.75), Some(0.25), Some(200))
        );

        // 500 000 µs stalled over 2 s is 25 %; memory: 200 000 and 100 000 µs.
        assert_eq!(
            (m.psi_cpu_some_avg10, m.psi_cpu_some_stall_pct),
            (Some(2.5), Some(25.0))
        );
        assert_eq!(
            (m.psi_cpu_full_avg10, m.psi_cpu_full_stall_pct),
            (None, None),
            "no cpu full line"
        );
        assert_eq!(
            (m.psi_memory_some_stall_pct, m.psi_memory_full_stall_pct),
            (Some(10.0), Some(5.0))
        );
        assert_eq!(
            (m.psi_io_full_avg10, m.psi_io_some_stall_pct),
            (Some(2.5), Some(0.0))
        );

        assert_eq!((m.listen_overflows, m.listen_drops), (Some(20), Some(30)));
        assert_eq!(
            (m.listen_overflows_per_s, m.listen_drops_per_s),
            (Some(10.0), Some(15.0))
        );
        assert_eq!(
            (m.tcp_syn_retrans_per_s, m.tcp_retrans_segs_per_s),
            (Some(2.0), Some(2.0))
        );
        assert_eq!(
            (m.tcp_active_opens_per_s, m.tcp_passive_opens_per_s),
            (Some(10.0), Some(1.0))
        );
        assert_eq!(
            (m.tcp_in_segs_per_s, m.tcp_out_segs_per_s),
            (Some(100.0), Some(0.0))
        );
        // IPv4 4000 and IPv6 2000 bytes received over 2 s.
        assert_eq!(m.ip_in_bytes_per_s, Some(3000.0));
        assert_eq!(
            m.ip_out_bytes_per_s,
            Some(200.0),
            "IPv6's 400; IPv4's went backwards and counts 0"
        );

        assert_eq!(
            m.softnet_processed_per_s,
            Some(32.0),
            "0x20 on each CPU, one of them wrapped"
        );
        assert_eq!(
            (m.softnet_dropped, m.softnet_dropped_per_s),
            (Some(4), Some(2.0))
        );
        assert_eq!(
            (m.softnet_time_squeeze, m.softnet_time_squeeze_per_s),
            (Some(4), Some(2.0))
        );

        assert_eq!(
            (m.swap_in_pages_per_s, m.swap_out_pages_per_s),
            (Some(100.0), Some(20.0))
        );
        assert_eq!(
            (m.refault_anon_pages_per_s, m.refault_file_pages_per_s),
            (Some(30.0), Some(0.0))
        );

        // vda + dm-0: 202 reads, 2008 sectors read; 20 writes, 400 sectors written.
        assert_eq!(
            (m.disk_reads_per_s, m.disk_writes_per_s),
            (Some(101.0), Some(10.0))
        );
        assert_eq!(m.disk_read_bytes_per_s, Some(2008.0 * 512.0 / 2.0));
        assert_eq!(m.disk_write_bytes_per_s, Some(400.0 * 512.0 / 2.0));

        let softirqs = m.softirqs_per_s.as_ref().unwrap();
        assert_eq!(softirqs.get("NET_RX"), Some(&200.0));
        assert_eq!(softirqs.get("TIMER"), Some(&0.0));
        assert_eq!(softirqs.get("NEWVEC"), None, "only in the last reading");
        // 24: 2 + 2, LOC: 100 + 200; ERR is an error count.
        assert_eq!(m.interrupts_per_s, Some(152.0));

        // Run delay 3 000 000 ns over 2 s and 2 CPUs; 40 timeslices over 2 s.
        assert_eq!(m.sched_run_delay_ns_per_s_per_cpu, Some(750_000.0));
        assert_eq!(m.sched_timeslices_per_s, Some(20.0));
    }

    /// CPU 1 goes offline between the readings: the `cpu` line's idle falls (the kernel sums
    /// offline CPUs from another source), which read alone would give 0% idle. The shares come
    /// from the CPU online at both, CPU 0: Δuser 100, Δsystem 50, Δidle 350.
    #[test]
    fn cpu_shares_are_those_of_the_cpus_online_at_both_readings() {
        let t0 = Instant::now();
        let mut a = HostSnapshot::empty(t0);
        let mut b = HostSnapshot::empty(t0 + Duration::from_secs(5));
        let parse = |text: &str| {
            let rest = "ctxt 1\nprocesses 1\nprocs_running 1\nprocs_blocked 0\n";
            Some(parse_stat(&format!("{text}{rest}")).strict().unwrap())
        };
        a.stat = parse(
            "cpu 200 0 100 1000 0 0 0 0 0 0\ncpu0 100 0 50 500 0 0 0 0 0 0\n\
             cpu1 100 0 50 500 0 0 0 0 0 0\n",
        );
        b.stat = parse("cpu 300 0 150 900 0 0 0 0 0 0\ncpu0 200 0 100 850 0 0 0 0 0 0\n");
        let m = HostMetrics::between(&a, &b);
        assert_eq!(
            (m.cpu_idle_pct, m.cpu_user_pct, m.cpu_system_pct),
            (Some(70.0), Some(20.0), Some(10.0))
        );
        // CPU 1 back (the `cpu` line jumps up by its idle time): CPU 0 alone again, Δuser 100,
        // Δidle 400.
        let mut c = HostSnapshot::empty(t0 + Duration::from_secs(10));
        c.stat = parse(
            "cpu 400 0 150 5000 0 0 0 0 0 0\ncpu0 300 0 100 1250 0 0 0 0 0 0\n\
             cpu1 100 0 50 3750 0 0 0 0 0 0\n",
        );
        let m = HostMetrics::between(&b, &c);
        assert_eq!(
            (m.cpu_idle_pct, m.cpu_user_pct, m.cpu_system_pct),
            (Some(80.0), Some(20.0), Some(0.0))
        );
        // CPU 1's line, or the sum's, does not parse (online or not is then unknown): no shares,
        // not CPU 0's given for the machine's (s55 story AS-1); the other fields stay.
        for bad in [
            "cpu1 1x0 0 50 3750 0 0 0 0 0 0",
            "cpu 4x00 0 150 5000 0 0 0 0 0 0",
        ] {
            let mut d = HostSnapshot::empty(t0 + Duration::from_secs(10));
            let text = "cpu 400 0 150 5000 0 0 0 0 0 0\ncpu0 300 0 100 1250 0 0 0 0 0 0\n\
                        cpu1 100 0 50 3750 0 0 0 0 0 0\n";
            let line = text.lines().find(|l| l.starts_with(&bad[..4])).unwrap();
            let rest = "ctxt 1\nprocesses 1\nprocs_running 1\nprocs_blocked 0\n";
            d.stat = Some(parse_stat(&format!("{}{rest}", text.replace(line, bad))).value);
            let m = HostMetrics::between(&b, &d);
            assert_eq!((m.cpu_idle_pct, m.cpu_user_pct), (None, None), "{bad}");
            assert_eq!(m.procs_running, Some(1), "{bad}");
        }
    }

    /// Defect: the IP byte rates were IPv4's alone (netstat's IpExt), so a host serving over
    /// IPv6 showed none of that traffic. A kernel without IPv6 has no snmp6 and counts IPv4's
    /// bytes; one whose snmp6 could not be read has an unknown total.
    #[test]
    fn ip_bytes_are_ipv4_and_ipv6_together() {
        let (mut a, mut b) = window();
        let m = HostMetrics::between(&a, &b);
        assert_eq!(
            (m.ip_in_bytes_per_s, m.ip_out_bytes_per_s),
            (Some(3000.0), Some(200.0))
        );
        (a.snmp6, b.snmp6) = (Some(None), Some(None));
        let m = HostMetrics::between(&a, &b);
        assert_eq!(
            (m.ip_in_bytes_per_s, m.ip_out_bytes_per_s),
            (Some(2000.0), Some(0.0)),
            "no IPv6 in the kernel"
        );
        for unread in [
            (None, Some(Some(snmp6(0, 0)))),
            (Some(Some(snmp6(0, 0))), None),
        ] {
            (a.snmp6, b.snmp6) = unread;
            let m = HostMetrics::between(&a, &b);
            assert_eq!((m.ip_in_bytes_per_s, m.ip_out_bytes_per_s), (None, None));
        }
    }

    #[test]
    fn counters_that_go_backwards_count_zero() {
        let (mut a, b) = window();
        a.stat = Some(stat(
            "1000 0 1000 9000 1000 0 1000 0 0 0",
            10_000_000,
            1_000_000,
        ));
        a.netstat = Some(net(
            "TcpExt: ListenOverflows ListenDrops\nTcpExt: 1000 1000\n",
        ));
        let m = HostMetrics::between(&a, &b);
        assert_eq!(
            (m.context_switches_per_s, m.forks_per_s),
            (Some(0.0), Some(0.0))
        );
        assert_eq!(
            (m.listen_overflows, m.listen_drops_per_s),
            (Some(0), Some(0.0))
        );
        assert_eq!(
            m.tcp_syn_retrans_per_s, None,
            "counter absent from the first reading"
        );
        // Every CPU column went backwards: no time passed as far as the shares can tell.
        assert_eq!(m.cpu_idle_pct, None);
    }

    /// Before Linux 5.10 softnet_stat has no CPU id and offline CPUs print no line. Defect: with
    /// CPU 1 gone offline, CPU 2's line was taken for CPU 1's and the difference of two CPUs'
    /// counters was reported as 0x502 packets dropped.
    #[test]
    fn softnet_lines_that_cannot_be_matched_to_cpus_give_no_delta() {
        let (mut a, mut b) = window();
        let old = |dropped: &[u32]| {
            let text: String = dropped
                .iter()
                .map(|d| format!("00000010 {d:08x} 00000000 0 0 0 0 0 0 00000000 00000000\n"))
                .collect();
            Some(parse_softnet(&text).unwrap())
        };
        a.softnet = old(&[1, 0x100, 0x600]);
        b.softnet = old(&[2, 0x601]);
        let m = HostMetrics::between(&a, &b);
        assert_eq!(
            (
                m.softnet_dropped,
                m.softnet_processed_per_s,
                m.softnet_time_squeeze
            ),
            (None, None, None)
        );
        // The same lines: every CPU still online, positions are CPU ids.
        b.softnet = old(&[2, 0x101, 0x603]);
        let m = HostMetrics::between(&a, &b);
        assert_eq!(m.softnet_dropped, Some(5));
        // With the kernel's ids, a CPU that went offline is left out and the rest still count.
        a.softnet = Some(softnet((0x10, 1, 0), (0x10, 0x100, 0)));
        let mut only_cpu0 = softnet((0x10, 3, 0), (0, 0, 0));
        only_cpu0.cpus.truncate(1);
        b.softnet = Some(only_cpu0);
        let m = HostMetrics::between(&a, &b);
        assert_eq!(m.softnet_dropped, Some(2));
    }

    #[test]
    fn missing_sources_and_a_zero_interval_give_nulls() {
        let (a, mut b) = window();
        b.at = a.at;
        b.schedstat = None;
        let m = HostMetrics::between(&a, &b);
        assert_eq!(
            (
                m.context_switches_per_s,
                m.interrupts_per_s,
                m.softirqs_per_s.as_ref()
            ),
            (None, None, None)
        );
        assert_eq!(m.sched_timeslices_per_s, None);
        assert_eq!(m.cpu_idle_pct, Some(75.0), "shares need no interval");
        assert_eq!(
            (m.listen_overflows, m.softnet_dropped),
            (Some(20), Some(4)),
            "totals need none"
        );
        assert_eq!((m.mem_total_bytes, m.load1), (Some(1_024_000), Some(1.5)));

        let empty = HostSnapshot::empty(a.at);
        let m = HostMetrics::between(&empty, &empty);
        let json = serde_json::to_value(&m).unwrap();
        assert!(
            json.as_object().unwrap().values().all(|v| v.is_null()),
            "{json}"
        );
    }

    /// The JSON shape is a contract: every field present (null when unknown), required by the
    /// schema fragment and documented in docs/host-metrics.md.
    #[test]
    fn json_matches_the_event_schema_and_the_doc() {
        let events: serde_json::Value = serde_json::from_str(SCHEMA).unwrap();
        let schema = events["$defs"]["system"].clone();
        let validator = jsonschema::validator_for(&schema).expect("schema compiles");
        let (a, b) = window();
        let full = serde_json::to_value(HostMetrics::between(&a, &b)).unwrap();
        let empty = HostSnapshot::empty(a.at);
        let nulls = serde_json::to_value(HostMetrics::between(&empty, &empty)).unwrap();
        for instance in [&full, &nulls] {
            let errors: Vec<String> = validator
                .iter_errors(instance)
                .map(|e| e.to_string())
                .collect();
            assert!(errors.is_empty(), "{errors:?}");
        }
        // Compared as sorted sets: serde_json's map does not keep field order.
        fn sorted(mut v: Vec<&str>) -> Vec<&str> {
            v.sort_unstable();
            v
        }
        let fields = sorted(
            full.as_object()
                .unwrap()
                .keys()
                .map(String::as_str)
                .collect(),
        );
        let required = sorted(
            schema["required"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_str().unwrap())
                .collect(),
        );
        assert_eq!(fields, required);
        let documented = sorted(
            DOC.lines()
                .filter_map(|l| l.strip_prefix("| `")?.split('`').next())
                .collect(),
        );
        assert_eq!(fields, documented);
    }
}
