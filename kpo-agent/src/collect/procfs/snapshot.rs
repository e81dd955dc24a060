//! One reading of every /proc source, taken once per tick.
use std::{collections::BTreeMap, time::Instant};

use super::{
    diskstats::{read_diskstats, Diskstats},
    interrupts::{read_interrupts, Interrupts},
    loadavg::{read_loadavg, Loadavg},
    meminfo::{read_meminfo, Meminfo},
    netstat::{read_netstat, read_snmp, NetCounters},
    pressure::{read_pressure, Pressure},
    schedstat::{read_schedstat, Schedstat},
    softirqs::{read_softirqs, Softirqs},
    softnet::{read_softnet, Softnet},
    stat::{read_stat, Stat},
    ProcError, ProcRoot,
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
    pub softnet: Option<Softnet>,
    pub diskstats: Option<Diskstats>,
    pub softirqs: Option<Softirqs>,
    pub interrupts: Option<Interrupts>,
    pub schedstat: Option<Schedstat>,
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
            softnet: None,
            diskstats: None,
            softirqs: None,
            interrupts: None,
            schedstat: None,
        }
    }

    /// Reads every source. A source that fails is `None` and its error is in the list; the
    /// others are still read, so one broken file never blinds the agent to the rest.
    pub fn read(root: &ProcRoot) -> (Self, Vec<ProcError>) {
        let mut errors = Vec::new();
        let mut snapshot = Self::empty(Instant::now());
        snapshot.stat = keep(&mut errors, read_stat(root));
        snapshot.meminfo = keep(&mut errors, read_meminfo(root));
        snapshot.loadavg = keep(&mut errors, read_loadavg(root));
        snapshot.netstat = keep(&mut errors, read_netstat(root));
        snapshot.snmp = keep(&mut errors, read_snmp(root));
        snapshot.softnet = keep(&mut errors, read_softnet(root));
        snapshot.diskstats = keep(&mut errors, read_diskstats(root));
        snapshot.softirqs = keep(&mut errors, read_softirqs(root));
        snapshot.interrupts = keep(&mut errors, read_interrupts(root));
        // These two are Ok(None) when the kernel lacks the feature.
        snapshot.pressure = keep(&mut errors, read_pressure(root)).flatten();
        snapshot.schedstat = keep(&mut errors, read_schedstat(root)).flatten();
        (snapshot, errors)
    }
}

fn keep<T>(errors: &mut Vec<ProcError>, result: Result<T, ProcError>) -> Option<T> {
    result.map_err(|e| errors.push(e)).ok()
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
        tree(dir.path(), &["meminfo"], &[("stat", "cpu 1 2 x 4\n")]);
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

        assert!(s.stat.is_none() && s.meminfo.is_none());
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
        assert_eq!(s.pressure.map(|p| p.io.some.total_us), Some(10));
        assert_eq!(s.schedstat.map(|x| x.cpus[0].run_delay_ns), Some(2));
        assert_eq!(s.meminfo.map(|m| m.mem_total_bytes), Some(8192));
    }

    /// Whatever kernel runs the tests, its own /proc must parse without a single error.
    #[test]
    fn this_machines_proc_parses() {
        let (s, errors) = HostSnapshot::read(&ProcRoot::default());
        let messages: Vec<String> = errors.iter().map(ToString::to_string).collect();
        assert!(messages.is_empty(), "{messages:?}");
        assert!(s.stat.is_some_and(|st| !st.cpus.is_empty()));
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
