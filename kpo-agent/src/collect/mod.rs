//! One [`Sample`] per tick: the eBPF maps, every network namespace's listeners and counters
//! (sock_diag, netstat), and the host's /proc sources.
pub mod bpf_maps;
pub mod netns;
pub mod owners;
pub mod procfs;
pub mod sockdiag;

use std::{collections::BTreeMap, net::IpAddr, path::PathBuf, time::Instant};

use kpo_common::ListenerKey;
use time::OffsetDateTime;
use tracing::warn;

use crate::sensors::{SensorKind, Sensors};
use bpf_maps::BpfSnapshot;
use netns::NetnsSet;
use owners::OwnerCache;
use procfs::{HostSnapshot, ProcRoot};

/// A listener as sock_diag reports it, with its owner. Sockets sharing a (netns, port, family)
/// (SO_REUSEPORT, or bound to several addresses) are merged: drops summed, depth and limit the
/// largest.
#[derive(Debug, Clone, PartialEq)]
pub struct ListenerView {
    pub addresses: Vec<IpAddr>,
    pub depth: u32,
    pub limit: u32,
    pub drops: u64,
    pub pid: Option<u32>,
    pub comm: Option<String>,
}

/// Namespace-wide listen counters (`TcpExtListenOverflows`, `TcpExtListenDrops`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NetnsCounters {
    pub listen_overflows: u64,
    pub listen_drops: u64,
}

#[derive(Debug, Clone)]
pub struct Sample {
    pub at: Instant,
    pub wall: OffsetDateTime,
    /// None when no eBPF sensor is loaded.
    pub bpf: Option<BpfSnapshot>,
    pub listeners: BTreeMap<ListenerKey, ListenerView>,
    pub netns: BTreeMap<u64, NetnsCounters>,
    pub host: HostSnapshot,
    /// Whether the duty-cycled sensors were attached during the tick this sample closes.
    pub duty_attached: bool,
    /// Whether the accept-queue sensor is on (else `enqueued` is unknown, not zero).
    pub accept_queue_sensor: bool,
    /// Whether the accept-queue sensor was attached during the tick this sample closes.
    pub accept_queue_attached: bool,
}

pub struct Collector {
    pub sensors: Sensors,
    proc_root: PathBuf,
    netns: NetnsSet,
    owners: OwnerCache,
    epoch: u64,
    services: bpf_maps::ServiceIndex,
    /// Problems already reported, so a broken source is logged once, not every tick.
    reported: std::collections::BTreeSet<String>,
}

impl Collector {
    pub fn new(sensors: Sensors, proc_root: PathBuf) -> Self {
        Self {
            sensors,
            proc_root,
            netns: NetnsSet::default(),
            owners: OwnerCache::default(),
            epoch: 0,
            services: Default::default(),
            reported: Default::default(),
        }
    }

    pub fn sample(&mut self) -> Sample {
        let duty_attached = self.sensors.duty_attached();
        let accept_queue_attached = self.sensors.is_attached(SensorKind::AcceptQueue);
        let (epoch, services) = (&mut self.epoch, &self.services);
        let bpf = self
            .sensors
            .maps_mut()
            .map(|maps| maps.read(epoch, services));
        let (host, errors) = HostSnapshot::read(&ProcRoot(self.proc_root.clone()));
        for e in errors {
            self.report_once(e.to_string());
        }
        let (listeners, netns) = self.read_namespaces();
        if self.sensors.is_enabled(SensorKind::RequestLatency) {
            let ports: Vec<ListenerKey> = listeners.keys().copied().collect();
            if let Some(maps) = self.sensors.maps_mut() {
                maps.set_service_ports(&mut self.services, &ports);
            }
            if self.services.untimed > 0 {
                self.report_once(format!(
                    "request latency is timed for at most {} listening ports; {} are not",
                    kpo_common::MAX_SERVICES,
                    self.services.untimed
                ));
            }
        }
        Sample {
            at: Instant::now(),
            wall: OffsetDateTime::now_utc(),
            bpf,
            listeners,
            netns,
            host,
            duty_attached,
            accept_queue_sensor: self.sensors.is_enabled(SensorKind::AcceptQueue),
            accept_queue_attached,
        }
    }

    fn read_namespaces(
        &mut self,
    ) -> (
        BTreeMap<ListenerKey, ListenerView>,
        BTreeMap<u64, NetnsCounters>,
    ) {
        self.netns.refresh(&self.proc_root);
        let mut raw = Vec::new();
        let mut counters = BTreeMap::new();
        let mut problems = Vec::new();
        for handle in self.netns.handles_mut() {
            match handle.listeners() {
                Ok(list) => raw.extend(list.into_iter().map(|l| (handle.inum, l))),
                Err(e) => problems.push(format!("sock_diag in netns {}: {e}", handle.inum)),
            }
            match handle
                .netstat_text()
                .map(|t| procfs::netstat::parse_netstat(&t))
            {
                Ok(Ok(map)) => {
                    let get = |k: &str| map.get(k).copied().unwrap_or(0).max(0) as u64;
                    counters.insert(
                        handle.inum,
                        NetnsCounters {
                            listen_overflows: get("TcpExtListenOverflows"),
                            listen_drops: get("TcpExtListenDrops"),
                        },
                    );
                }
                Ok(Err(e)) => problems.push(format!("netstat in netns {}: {e}", handle.inum)),
                Err(e) => problems.push(format!("netstat in netns {}: {e}", handle.inum)),
            }
        }
        for p in problems {
            self.report_once(p);
        }
        let inodes: Vec<u32> = raw.iter().map(|(_, l)| l.inode).collect();
        self.owners.retain(&inodes);
        self.owners.resolve(&self.proc_root, &inodes);
        let mut listeners: BTreeMap<ListenerKey, ListenerView> = BTreeMap::new();
        for (inum, l) in raw {
            let key = ListenerKey {
                netns: inum as u32,
                port: l.port,
                family: l.family,
            };
            let owner = self.owners.get(l.inode).cloned();
            let view = listeners.entry(key).or_insert_with(|| ListenerView {
                addresses: Vec::new(),
                depth: 0,
                limit: 0,
                drops: 0,
                pid: owner.as_ref().map(|o| o.pid),
                comm: owner.as_ref().map(|o| o.comm.clone()),
            });
            view.addresses.push(l.address);
            view.depth = view.depth.max(l.depth);
            view.limit = view.limit.max(l.limit);
            view.drops += u64::from(l.drops);
        }
        (listeners, counters)
    }

    fn report_once(&mut self, problem: String) {
        if self.reported.insert(problem.clone()) {
            warn!("{problem}");
        }
    }
}
