//! One reading of every /proc source, taken once per tick.
use std::{collections::BTreeMap, time::Instant};

use super::{
    diskstats::{read_diskstats, Diskstats},
    interrupts::{read_interrupts, Interrupts},
    loadavg::{read_loadavg, Loadavg},
    meminfo::{read_meminfo, Meminfo},
    netstat::{read_netstat, read_snmp, read_snmp6, NetCounters},
    pressure::{read_pressure, Pressure},
    schedstat::{read_schedstat, Schedstat},
    softirqs::{read_softirqs, Softirqs},
    softnet::{read_softnet, Softnet},
    stat::{read_stat, Stat},
    vmstat::{read_vmstat, Vmstat},
    Parsed, ProcError, ProcRoot,
};

/// Each source is `None` when it could not be read or parsed (the error is returned beside the
/// snapshot), or when the kernel does not provide it (PSI off, no schedstat; not an error).
#[derive(Debug, Clone)]
pub struct HostSnapshot {
    /// When the reading started. Reading every file takes about a millisecond, small against
    /// the seconds between snapshots, so one time stands for all of them.
    pub at: Instant,
    pub stat: Option<Stat>,
    pub meminfo: Option<Meminfo>,
    pub loadavg: Option<Loadavg>,
    pub pressure: Option<Pressure>,
    pub netstat: Option<NetCounters>,
    pub snmp: Option<NetCounters>,
    /// IPv6's counters; `Some(None)` when the kernel has no IPv6 (no snmp6, and no IPv6
    /// traffic), `None` when they could not be read.
    pub snmp6: Option<Option<NetCounters>>,
    pub softnet: Option<Softnet>,
    pub diskstats: Option<Diskstats>,
    pub softirqs: Option<Softirqs>,
    pub interrupts: Option<Interrupts>,
    pub schedstat: Option<Schedstat>,
    pub vmstat: Option<Vmstat>,
}

impl HostSnapshot {
    /// A snapshot with no source, e.g. a baseline before the first reading.
    pub fn empty(at: Instant) -> Self {
        Self {
            at,
            stat: None,
            meminfo: None,
            loadavg: None,
            pressure: None,
            netstat: None,
            snmp: None,
            snmp6: None,
            softnet: None,
            diskstats: None,
            softirqs: None,
            interrupts: None,
            schedstat: None,
            vmstat: None,
        }
    }

    /// Reads every source. A source that fails is `None` and its error is in the list; the
    /// others are still read, so one broken file never blinds the agent to the rest. Within a
    /// file, a line or value that does not parse loses only what depends on it (see
    /// [`super::Parsed`]).
    pub fn read(root: &ProcRoot) -> (Self, Vec<ProcError>) {
        let mut errors = Vec::new();
        let mut snapshot = Self::empty(Instant::now());
        snapshot.stat = keep_parsed(&mut errors, read_stat(root));
        snapshot.meminfo = keep_parsed(&mut errors, read_meminfo(root));
        snapshot.loadavg = keep(&mut errors, read_loadavg(root));
        snapshot.netstat = keep_parsed(&mut errors, read_netstat(root));
        snapshot.snmp = keep_parsed(&mut errors, read_snmp(root));
        snapshot.snmp6 =
            keep(&mut errors, read_snmp6(root)).map(|read| read.map(|p| p.keep(&mut errors)));
        snapshot.softnet = keep(&mut errors, read_softnet(root));
        snapshot.diskstats = keep(&mut errors, read_diskstats(root));
        snapshot.softirqs = keep(&mut errors, read_softirqs(root));
        snapshot.interrupts = keep(&mut errors, read_interrupts(root));
        snapshot.vmstat = keep_parsed(&mut errors, read_vmstat(root));
        // These two are None when the kernel lacks the feature.
        snapshot.pressure = read_pressure(root).keep(&mut errors);
        snapshot.schedstat = keep(&mut errors, read_schedstat(root)).flatten();
        (snapshot, errors)
    }
}

fn keep<T>(errors: &mut Vec<ProcError>, result: Result<T, ProcError>) -> Option<T> {
    result.map_err(|e| errors.push(e)).ok()
}

fn keep_parsed<T>(errors: &mut Vec<ProcError>, result: Result<Parsed<T>, ProcError>) -> Option<T> {
    keep(errors, result).map(|parsed| parsed.keep(errors))
}

/// Numbered IRQ to its handler names (`"virtio3-rx"`), from the snapshot's /proc/interrupts;
/// empty when that could not be read.
pub fn irq_names(host: &HostSnapshot) -> BTreeMap<u32, String> {
    host.interrupts
        .as_ref()
        .map(Interrupts::action_names)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use std::{fs, path::Path};

    use super::*;

    /// A small but complete /proc tree; `skip` files are left out, `replace` overrides contents.
    fn tree(dir: &Path, skip: &[&str], replace: &[(&str, &str)]) {
        let files = [
            ("stat", "cpu 1 2 3 4 5 6 7 8 0 0\ncpu0 1 2 3 4 5 6 7 8 0 0\nctxt 9\nprocesses 3\nprocs_running 1\nprocs_blocked 0\n"),
            ("meminfo", "MemTotal: 8 kB\nMemFree: 4 kB\nBuffers: 0 kB\nCached: 1 kB\nSwapTotal: 0 kB\nSwapFree: 0 kB\nDirty: 0 kB\n"),
            ("loadavg", "0.10 0.20 0.30 1/50 123\n"),
            ("net/netstat", "TcpExt: ListenOverflows ListenDrops\nTcpExt: 1 2\n"),
            ("net/snmp", "Tcp: MaxConn InSegs\nTcp: -1 5\n"),
            ("net/softnet_stat", "00000010 00000000 00000000 0 0 0 0 0 0 0 0 0 00000000\n"),
            ("diskstats", " 254 0 vda 1 0 2 0 3 0 4 0 0 0 0\n"),
            ("softirqs", "CPU0\nNET_RX: 7\n"),
            ("interrupts", "CPU0\n 24: 1 IO-APIC 5-edge virtio3-rx\nLOC: 5 Local timer interrupts\n"),
            ("vmstat", "pswpin 0\npswpout 0\nworkingset_refault_anon 0\nworkingset_refault_file 0\n"),
        ];
        for (rel, text) in files {
            if skip.contains(&rel) {
                continue;
            }
            let text = replace
                .iter()
                .find(|(r, _)| *r == rel)
                .map_or(text, |(_, t)| t);
            let path = dir.join(rel);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(path, text).unwrap();
        }
    }

    #[test]
    fn one_missing_and_one_malformed_file_do_not_stop_the_others() {
        let dir = tempfile::tempdir().unwrap();
        let stat = "cpu 1 2 x 4\nctxt 9\nprocesses 3\nprocs_running 1\nprocs_blocked 0\n";
        tree(dir.path(), &["meminfo"], &[("stat", stat)]);
        let (s, errors) = HostSnapshot::read(&ProcRoot(dir.path().to_path_buf()));

        let messages: Vec<String> = errors.iter().map(ToString::to_string).collect();
        assert_eq!(errors.len(), 2, "{messages:?}");
        let stat = dir.path().join("stat").display().to_string();
        assert_eq!(
            messages[0],
            format!("{stat} line 1: cpu system: \"x\" is not a valid number")
        );
        assert!(
            matches!(&errors[1], ProcError::Io { path, .. } if path.ends_with("/meminfo")),
            "{messages:?}"
        );

        let stat = s.stat.as_ref().expect("the lines that parse are kept");
        assert_eq!((stat.total, stat.context_switches), (None, Some(9)));
        assert!(s.meminfo.is_none());
        assert_eq!(s.loadavg.map(|l| l.total), Some(50));
        assert_eq!(
            s.netstat
                .as_ref()
                .and_then(|n| n.get("TcpExtListenDrops").copied()),
            Some(2)
        );
        assert_eq!(
            s.snmp.as_ref().and_then(|n| n.get("TcpMaxConn").copied()),
            Some(-1)
        );
        assert_eq!(s.softnet.as_ref().map(|n| n.cpus[0].processed), Some(16));
        assert_eq!(
            s.diskstats.as_ref().map(|d| d.devices[0].sectors_written),
            Some(4)
        );
        assert_eq!(
            s.softirqs.as_ref().map(|v| v.vectors["NET_RX"].clone()),
            Some(vec![7])
        );
        assert_eq!(
            irq_names(&s).get(&24).map(String::as_str),
            Some("virtio3-rx")
        );
        // No pressure directory and no schedstat: features off, not errors.
        assert!(s.pressure.is_none() && s.schedstat.is_none());
    }

    #[test]
    fn optional_sources_are_read_when_present() {
        let dir = tempfile::tempdir().unwrap();
        tree(dir.path(), &[], &[]);
        let psi = "some avg10=1.00 avg60=0.00 avg300=0.00 total=10\n";
        fs::create_dir(dir.path().join("pressure")).unwrap();
        for resource in ["cpu", "memory", "io"] {
            fs::write(dir.path().join("pressure").join(resource), psi).unwrap();
        }
        fs::write(
            dir.path().join("schedstat"),
            "version 16\ncpu0 0 0 0 0 0 0 1 2 3\n",
        )
        .unwrap();
        let (s, errors) = HostSnapshot::read(&ProcRoot(dir.path().to_path_buf()));
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(
            s.pressure.and_then(|p| p.io?.some).map(|l| l.total_us),
            Some(10)
        );
        assert_eq!(s.schedstat.map(|x| x.cpus[0].run_delay_ns), Some(2));
        assert_eq!(s.meminfo.and_then(|m| m.mem_total_bytes), Some(8192));
    }

    const PSI_LINE: &str = "some avg10=1.00 avg60=0.00 avg300=0.00 total={some}\n\
                            full avg10=2.00 avg60=0.00 avg300=0.00 total={full}\n";

    fn psi(some: u64, full: u64) -> String {
        PSI_LINE
            .replace("{some}", &some.to_string())
            .replace("{full}", &full.to_string())
    }

    /// Two readings of a tree 2 s apart; `first` and `second` override files in each.
    fn two_readings(
        first: &[(&str, &str)],
        second: &[(&str, &str)],
    ) -> (super::super::HostMetrics, Vec<String>) {
        let dir = tempfile::tempdir().unwrap();
        let root = ProcRoot(dir.path().to_path_buf());
        fs::create_dir(dir.path().join("pressure")).unwrap();
        for resource in ["cpu", "memory", "io"] {
            fs::write(dir.path().join("pressure").join(resource), psi(0, 0)).unwrap();
        }
        let mut messages = Vec::new();
        let mut read = |files: &[(&str, &str)]| {
            tree(dir.path(), &[], &[]);
            for (rel, text) in files {
                fs::write(dir.path().join(rel), text).unwrap();
            }
            let (s, errors) = HostSnapshot::read(&root);
            messages.extend(errors.iter().map(|e| {
                e.to_string()
                    .replace(&dir.path().display().to_string(), "<root>")
            }));
            s
        };
        let a = read(first);
        let mut b = read(second);
        b.at = a.at + std::time::Duration::from_secs(2);
        (super::super::HostMetrics::between(&a, &b), messages)
    }

    /// Defect: a garbage line in pressure/cpu nulled memory and I/O PSI too.
    #[test]
    fn a_bad_pressure_cpu_line_loses_only_cpu_psi() {
        let (first_mem, first_io) = (psi(0, 0), psi(1_000_000, 0));
        let (mem, io) = (psi(200_000, 100_000), psi(1_400_000, 600_000));
        let bad_cpu = "some avg10=garbage avg60=0.00 avg300=0.00 total=1\n";
        let (m, errors) = two_readings(
            &[
                ("pressure/cpu", &psi(0, 0)),
                ("pressure/memory", &first_mem),
                ("pressure/io", &first_io),
            ],
            &[
                ("pressure/cpu", bad_cpu),
                ("pressure/memory", &mem),
                ("pressure/io", &io),
            ],
        );
        assert_eq!(
            errors,
            ["<root>/pressure/cpu line 1: avg10: \"garbage\" is not a valid number"]
        );
        assert_eq!(
            (m.psi_cpu_some_avg10, m.psi_cpu_some_stall_pct),
            (None, None)
        );
        assert_eq!(
            (m.psi_memory_some_avg10, m.psi_memory_full_avg10),
            (Some(1.0), Some(2.0))
        );
        assert_eq!(
            (m.psi_memory_some_stall_pct, m.psi_memory_full_stall_pct),
            (Some(10.0), Some(5.0))
        );
        assert_eq!(
            (m.psi_io_some_stall_pct, m.psi_io_full_stall_pct),
            (Some(20.0), Some(30.0))
        );
    }

    /// Defect: a bad TcpExtEmbryonicRsts, which nothing uses, nulled listen_overflows, IP bytes
    /// and SYN retransmits.
    #[test]
    fn a_bad_unused_netstat_counter_loses_nothing_used() {
        let header = "TcpExt: EmbryonicRsts ListenOverflows ListenDrops TCPSynRetrans\n\
                      IpExt: InOctets OutOctets\n";
        let netstat = |embryonic: &str, overflows: u64, syn: u64, octets: u64| {
            let mut lines = header.lines();
            format!(
                "{}\nTcpExt: {embryonic} {overflows} 0 {syn}\n{}\nIpExt: {octets} {octets}\n",
                lines.next().unwrap(),
                lines.next().unwrap()
            )
        };
        let (m, errors) = two_readings(
            &[("net/netstat", &netstat("0", 10, 4, 1000))],
            &[("net/netstat", &netstat("1x", 30, 10, 5000))],
        );
        assert_eq!(
            errors,
            ["<root>/net/netstat line 2: TcpExtEmbryonicRsts: \"1x\" is not a valid number"]
        );
        assert_eq!(m.listen_overflows, Some(20));
        assert_eq!(m.listen_overflows_per_s, Some(10.0));
        assert_eq!(m.listen_drops, Some(0));
        assert_eq!(m.tcp_syn_retrans_per_s, Some(3.0));
        assert_eq!(
            (m.ip_in_bytes_per_s, m.ip_out_bytes_per_s),
            (Some(2000.0), Some(2000.0))
        );
    }

    /// Defect: a bad `cpu` line nulled context switches, forks and procs.
    #[test]
    fn a_bad_cpu_line_loses_only_the_cpu_shares() {
        let stat = |cpu: &str, ctxt: u64, forks: u64| {
            format!(
                "cpu {cpu}\ncpu0 1 2 3 4 5 6 7 8 0 0\nctxt {ctxt}\nprocesses {forks}\n\
                 procs_running 7\nprocs_blocked 3\n"
            )
        };
        let (m, errors) = two_readings(
            &[("stat", &stat("1 2 3 4 5 6 7 8 0 0", 1000, 100))],
            &[("stat", &stat("1 2 3 x 5 6 7 8 0 0", 3000, 140))],
        );
        assert_eq!(
            errors,
            ["<root>/stat line 1: cpu idle: \"x\" is not a valid number"]
        );
        assert_eq!((m.cpu_idle_pct, m.cpu_user_pct), (None, None));
        assert_eq!(m.context_switches_per_s, Some(1000.0));
        assert_eq!(m.forks_per_s, Some(20.0));
        assert_eq!((m.procs_running, m.procs_blocked), (Some(7), Some(3)));
    }

    /// Defect: a /proc file that is a link to /dev/zero was read until memory ran out. Now it
    /// stops at the bound, and the other files are read as usual.
    #[test]
    fn a_file_linked_to_dev_zero_is_read_only_up_to_its_bound() {
        let dir = tempfile::tempdir().unwrap();
        tree(dir.path(), &["stat", "loadavg"], &[]);
        std::os::unix::fs::symlink("/dev/zero", dir.path().join("stat")).unwrap();
        std::os::unix::fs::symlink("/dev/zero", dir.path().join("loadavg")).unwrap();
        let (s, errors) = HostSnapshot::read(&ProcRoot(dir.path().to_path_buf()));
        let messages: Vec<String> = errors.iter().map(ToString::to_string).collect();
        let path = |rel: &str| dir.path().join(rel).display().to_string();
        assert_eq!(
            messages,
            [
                format!(
                    "{} is larger than 33554432 bytes, more than this file can hold; is it the \
                     right file?",
                    path("stat")
                ),
                format!(
                    "{} is larger than 262144 bytes, more than this file can hold; is it the \
                     right file?",
                    path("loadavg")
                ),
            ]
        );
        assert!(s.stat.is_none() && s.loadavg.is_none());
        assert_eq!(s.meminfo.and_then(|m| m.mem_total_bytes), Some(8192));
    }

    /// Whatever kernel runs the tests, its own /proc must parse without a single error.
    #[test]
    fn this_machines_proc_parses() {
        let (s, errors) = HostSnapshot::read(&ProcRoot::default());
        let messages: Vec<String> = errors.iter().map(ToString::to_string).collect();
        assert!(messages.is_empty(), "{messages:?}");
        assert!(s
            .stat
            .is_some_and(|st| !st.cpus.is_empty() && st.total.is_some()));
        assert!(s.interrupts.is_some() && s.softirqs.is_some() && s.diskstats.is_some());
    }

    /// Two real readings a moment apart give metrics in range (no exact values: the machine is
    /// live).
    #[test]
    fn metrics_between_two_real_readings_are_in_range() {
        let (first, _) = HostSnapshot::read(&ProcRoot::default());
        std::thread::sleep(std::time::Duration::from_millis(50));
        let (last, _) = HostSnapshot::read(&ProcRoot::default());
        let m = super::super::HostMetrics::between(&first, &last);
        println!("{}", serde_json::to_string_pretty(&m).unwrap());
        let idle = m.cpu_idle_pct.expect("/proc/stat read twice");
        assert!((0.0..=100.0).contains(&idle), "{idle}");
        assert!(m.mem_total_bytes.unwrap_or(0) > 0);
        assert!(m.context_switches_per_s.is_some_and(|r| r >= 0.0));
    }
}
