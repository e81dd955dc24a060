//! One [`Sample`] per tick: the eBPF maps, every network namespace's listeners and counters
//! (sock_diag, netstat), and the host's /proc sources.
pub mod bpf_maps;
pub mod carry;
pub mod health;
pub mod idle_napi;
pub mod napi_names;
pub mod netns;
pub mod notable;
pub mod owners;
pub mod pressure_watch;
mod proc_root;
pub mod procfs;
pub mod sockdiag;
pub mod stale_listeners;

pub use proc_root::{check_proc_root, check_sysfs_root, ProcRootError};

use std::{
    collections::BTreeMap,
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

use kpo_common::{ListenerKey, NapiKey};
use time::OffsetDateTime;

use crate::sensors::{SensorKind, Sensors};
use bpf_maps::BpfSnapshot;
use carry::{Carry, CounterCarry, CounterReading, ListenerReading};
use health::Health;
use napi_names::NapiNames;
use netns::NetnsSet;
use owners::OwnerCache;
use procfs::{HostSnapshot, ProcRoot};
use stale_listeners::StaleListeners;

/// A listener as sock_diag reports it, with its owner. Sockets sharing a (netns, port, family)
/// (SO_REUSEPORT, or bound to several addresses) are merged: drops summed, depth and limit the
/// largest.
#[derive(Debug, Clone, PartialEq)]
pub struct ListenerView {
    /// As `ss` shows them: a socket bound to a device with its name (`fe80::1%eth0`), so that
    /// one port's sockets on two links are told apart, and the address can be connected to.
    pub addresses: Vec<String>,
    pub depth: u32,
    pub limit: u32,
    pub drops: u64,
    /// `sk_drops` of each socket merged here, by socket inode: windows count each socket's drops
    /// since its own earlier reading, so a socket re-created under the same address counts from
    /// 0, not as a fall of the merged sum.
    pub socket_drops: BTreeMap<u32, u64>,
    /// Each socket's accept-queue limit and owner, by socket inode: a group's sockets may each
    /// have their own (one `listen()` per worker), and the one that drops is what matters
    /// (s63 story CM-1).
    pub sockets: BTreeMap<u32, SocketFacts>,
    pub pid: Option<u32>,
    pub comm: Option<String>,
    /// The queue depth and limit of the fullest socket of the group at its limit, if one is: a
    /// port bound on two addresses with different backlogs has one full while the merged depth
    /// is below the merged limit (s55 story AR-2: no `listener_full` for it).
    pub full: Option<(u32, u32)>,
}

/// One socket of a listener group: its accept-queue limit, and a process holding it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SocketFacts {
    pub limit: u32,
    pub pid: Option<u32>,
    pub comm: Option<String>,
}

/// Namespace-wide listen counters (`TcpExtListenOverflows`, `TcpExtListenDrops`), and the SYN
/// queue's: `TcpExtTCPReqQFullDrop` (SYNs dropped because the queue was full and SYN cookies were
/// off) and `TcpExtTCPReqQFullDoCookies` (SYN cookies sent instead); `None` when the kernel does
/// not print them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NetnsCounters {
    pub listen_overflows: u64,
    pub listen_drops: u64,
    pub syn_queue_full_drops: Option<u64>,
    pub syn_queue_full_cookies: Option<u64>,
    /// `TcpExtTCPDeferAcceptDrop`: handshake ACKs a `TCP_DEFER_ACCEPT` listener held back.
    pub defer_accept_drops: Option<u64>,
    /// The namespace's cookie when these were read (None: not readable, before Linux 5.14): a
    /// namespace that died and whose inode a new one got has another, and the new one's
    /// counters start from 0, not from the dead one's.
    pub cookie: Option<u64>,
}

/// Which of a namespace's reads succeeded at one tick.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NetnsRead {
    /// Its sock_diag dump: listeners absent from a sample whose dump failed were not counted, and
    /// may well exist.
    pub listeners: bool,
    /// Its `TcpExtListenOverflows` and `TcpExtListenDrops`.
    pub counters: bool,
}

#[derive(Debug, Clone)]
pub struct Sample {
    pub at: Instant,
    pub wall: OffsetDateTime,
    /// None when no eBPF sensor is loaded.
    pub bpf: Option<BpfSnapshot>,
    pub listeners: BTreeMap<ListenerKey, ListenerView>,
    pub netns: BTreeMap<u64, NetnsCounters>,
    /// Every namespace discovery found at this tick, watched or not (one that could not be
    /// entered has both reads false): a listener or namespace missing from a sample is new only
    /// if its namespace was read there, or was not known at all.
    pub namespaces: BTreeMap<u64, NetnsRead>,
    /// Each namespace's last sock_diag dump that succeeded: this sample's own where it succeeded,
    /// else an earlier one (see [`carry`]). Windows count listener drops from the start's entry,
    /// so drops during failed dumps are counted by the next window whose end was read.
    pub readings: BTreeMap<u64, Arc<ListenerReading>>,
    /// Each namespace's last netstat counters that were read: this sample's own (`netns`) where
    /// read, else an earlier reading (see [`carry::CounterCarry`]). A window counts a namespace
    /// that discovery no longer finds at its end through its last reading.
    pub netns_readings: BTreeMap<u64, CounterReading>,
    /// The name of each device NAPI polled (`bpf.napi`'s keys), in the device's own namespace;
    /// absent when that namespace could not be entered or no longer has the device.
    pub napi_devices: BTreeMap<NapiKey, String>,
    pub host: HostSnapshot,
    /// How long the duty-cycled sensors other than the accept queue were attached during the
    /// tick this sample closes: the span their counts cover.
    pub duty_sampled: Duration,
    /// Whether the accept-queue sensor is on (else `enqueued` is unknown, not zero).
    pub accept_queue_sensor: bool,
    /// Whether the accept-queue sensor was attached during the tick this sample closes.
    pub accept_queue_attached: bool,
    /// How long the accept-queue sensor was attached during that tick.
    pub accept_queue_sampled: Duration,
    /// Whether the SYN-ACK retransmit sensor is on (else `synack_retrans` is unknown, not zero).
    pub synack_retrans_sensor: bool,
    /// Whether the sched sensor is on (else its context switches are unknown, not zero).
    pub sched_sensor: bool,
    /// Listening ports the request-latency sensor has no place for (beyond `MAX_SERVICES`);
    /// `None` when that sensor is off.
    pub untimed_ports: Option<u32>,
}

pub struct Collector {
    pub sensors: Sensors,
    proc_root: PathBuf,
    netns: NetnsSet,
    owners: OwnerCache,
    services: bpf_maps::ServiceIndex,
    /// The listeners the last warning named as untimed (request latency): one that joins them
    /// later is warned of too, by name.
    untimed_warned: std::collections::BTreeSet<ListenerKey>,
    carry: Carry,
    counter_carry: CounterCarry,
    napi_names: NapiNames,
    stale_listeners: StaleListeners,
    /// Which sources are broken, so the log says when one breaks and when it recovers, not
    /// every tick.
    health: Health,
}

impl Collector {
    /// For windows of `window` (how long a closed listener's counts are kept: `stale_listeners`).
    pub fn new(mut sensors: Sensors, proc_root: PathBuf, window: std::time::Duration) -> Self {
        if let Some(maps) = sensors.maps_mut() {
            maps.set_window(window);
        }
        Self {
            sensors,
            proc_root,
            netns: NetnsSet::default(),
            owners: OwnerCache::default(),
            // A window: as long as a closed listener's counts are kept (`stale_listeners`).
            services: bpf_maps::ServiceIndex::with_grace(window),
            untimed_warned: Default::default(),
            carry: Carry::default(),
            counter_carry: CounterCarry::default(),
            napi_names: NapiNames::default(),
            stale_listeners: StaleListeners::for_windows_of(window),
            health: Health::default(),
        }
    }

    /// Times the requests of `keys`, sockets the kernel just saw begin to listen, from now on
    /// rather than from the next tick whose discovery lists them (s53 story AK F3). Only those in
    /// a namespace the agent watches (found by discovery at an earlier tick): any process on the
    /// machine may listen, and a namespace discovery holds back or has not found yet waits for
    /// it (s54 review2 L3). Writes that fail are owed and tried again at the next tick, which
    /// reports them.
    pub fn time_listeners(&mut self, keys: &[ListenerKey]) {
        if !self.sensors.is_enabled(SensorKind::RequestLatency) {
            return;
        }
        let read: Vec<ListenerKey> = (keys.iter())
            .filter(|k| self.netns.get(u64::from(k.netns)).is_some())
            .copied()
            .collect();
        if let (false, Some(maps)) = (read.is_empty(), self.sensors.maps_mut()) {
            maps.add_service_ports(&mut self.services, &read);
        }
    }

    pub fn sample(&mut self) -> Sample {
        // The sample's instant is the map read's: the eBPF counts and the sensors' attached
        // time end there, so a tick's length and its sampled span are measured between the same
        // instants (at a duty fraction of 1 they are equal).
        let (at, wall) = (Instant::now(), OffsetDateTime::now_utc());
        let (duty_sampled, accept_queue_sampled) = self.sensors.take_attached_times(at);
        let accept_queue_attached = self.sensors.is_attached(SensorKind::AcceptQueue);
        let services = &self.services;
        let bpf = self.sensors.maps_mut().map(|maps| maps.read(services));
        if let Some(b) = &bpf {
            // A failed read gives the last good one (`bpf_maps::Held`): logged, once, here.
            let failed = b.failed_reads.iter().map(|(what, e)| {
                let problem = format!("reading {what} failed (its last good read stands): {e}");
                (what.clone(), problem)
            });
            self.health.round("eBPF maps", failed);
        }
        let (host, errors) = HostSnapshot::read(&ProcRoot(self.proc_root.clone()));
        self.health.round(
            "host",
            errors.iter().map(|e| (e.path().to_string(), e.to_string())),
        );
        let (listeners, netns, namespaces) = self.read_namespaces();
        // After the namespaces' refresh, so a namespace made since the last tick is entered.
        let napi_devices = match &bpf {
            Some(b) => {
                let set = &self.netns;
                self.napi_names.update(&b.napi, |key| {
                    set.get(u64::from(key.netns))?.device_name(key.ifindex).ok()
                })
            }
            None => BTreeMap::new(),
        };
        if self.sensors.is_enabled(SensorKind::RequestLatency) {
            let ports: Vec<ListenerKey> = listeners.keys().copied().collect();
            let unwritten = match self.sensors.maps_mut() {
                Some(maps) => maps.set_service_ports(&mut self.services, &ports, at),
                None => Default::default(),
            };
            let untimed = &self.services.untimed;
            // The health record warns when some first go untimed, and when all are timed again;
            // a listener that goes untimed in between is named here (s46 storyJ F1: a pod
            // created later was never timed, and the warning kept its first count).
            if let Some(newly) = newly_untimed(&mut self.untimed_warned, untimed) {
                tracing::warn!(
                    "request latency: {} more listening ports are not timed ({} of them now, \
                     at most {} are): {}",
                    newly.len(),
                    untimed.len(),
                    kpo_common::MAX_SERVICES,
                    named_listeners(&newly)
                );
            }
            let untimed = (!untimed.is_empty()).then(|| {
                let problem = format!(
                    "request latency is timed for at most {} listening ports, handed out first \
                     come; {} are not: {}",
                    kpo_common::MAX_SERVICES,
                    untimed.len(),
                    named_listeners(untimed)
                );
                (health::UNTIMED_PORTS.to_string(), problem)
            });
            // Logged when a write first fails and when none fails any more, not every tick.
            let unbumped = unwritten.generations.into_iter().map(|failed| {
                let problem = format!(
                    "the generation of request latency index {} in {} could not be bumped ({}): \
                     sockets of the listener that had it may still count there, and no entry \
                     naming it is written until it is; tried again every tick",
                    failed.index,
                    kpo_common::MAP_SERVICE_GENERATIONS,
                    failed.error
                );
                ("request latency generations".to_string(), problem)
            });
            let unwritten = unwritten.ports.into_iter().map(|failed| {
                let (key, error, table) = (failed.key, failed.error, kpo_common::MAP_SERVICE_PORTS);
                let port = format!(
                    "port {} ({}, netns {})",
                    key.port,
                    crate::window::family_name(key.family),
                    key.netns
                );
                if failed.removal {
                    let problem = format!(
                        "the entry in {table} of {port}, no longer listening, could not be \
                         removed ({error}); tried again every tick"
                    );
                    ("request latency port removals".to_string(), problem)
                } else {
                    let problem = format!(
                        "request latency of {port} is not timed: its entry in {table} could not \
                         be written ({error}); tried again every tick"
                    );
                    ("request latency port entries".to_string(), problem)
                }
            });
            self.health.round(
                "request latency",
                untimed.into_iter().chain(unwritten).chain(unbumped),
            );
        }
        if let Some(b) = &bpf {
            let stale = self
                .stale_listeners
                .update(at, &b.listeners, &listeners, &namespaces);
            if let Some(maps) = self.sensors.maps_mut() {
                maps.delete_listeners(&stale);
            }
        }
        let cookies: BTreeMap<u64, u64> = self
            .netns
            .handles_mut()
            .filter_map(|h| Some((h.inum, h.cookie?)))
            .collect();
        let readings = self
            .carry
            .update(at, wall, &namespaces, &cookies, &listeners);
        let netns_readings = self.counter_carry.update(at, &namespaces, &cookies, &netns);
        Sample {
            at,
            wall,
            bpf,
            listeners,
            netns,
            namespaces,
            readings,
            netns_readings,
            napi_devices,
            host,
            duty_sampled,
            accept_queue_sensor: self.sensors.is_enabled(SensorKind::AcceptQueue),
            accept_queue_attached,
            accept_queue_sampled,
            synack_retrans_sensor: self.sensors.is_enabled(SensorKind::SynackRetrans),
            sched_sensor: self.sensors.is_enabled(SensorKind::Sched),
            untimed_ports: (self.sensors.is_enabled(SensorKind::RequestLatency))
                .then(|| u32::try_from(self.services.untimed.len()).unwrap_or(u32::MAX)),
        }
    }

    fn read_namespaces(
        &mut self,
    ) -> (
        BTreeMap<ListenerKey, ListenerView>,
        BTreeMap<u64, NetnsCounters>,
        BTreeMap<u64, NetnsRead>,
    ) {
        self.netns.refresh(&self.proc_root);
        let mut raw = Vec::new();
        let mut counters = BTreeMap::new();
        let mut namespaces: BTreeMap<u64, NetnsRead> = self
            .netns
            .unwatched()
            .map(|inum| (inum, NetnsRead::default()))
            .collect();
        let mut rounds = Vec::new();
        for handle in self.netns.handles_mut() {
            let inum = handle.inum;
            let read = namespaces.entry(inum).or_default();
            let mut problems = Vec::new();
            match handle.listeners() {
                Ok(mut list) => {
                    read.listeners = true;
                    for l in list.iter_mut().filter(|l| l.interface != 0) {
                        l.device = handle.device_name(l.interface).ok();
                    }
                    raw.extend(list.into_iter().map(|l| (inum, l)));
                }
                Err(e) => problems.push((
                    format!("sock_diag in netns {inum}"),
                    format!("sock_diag in netns {inum}: {e}"),
                )),
            }
            let netstat = format!("netstat in netns {inum}");
            match handle.netstat_text() {
                Ok(text) => {
                    let parsed = procfs::netstat::parse_netstat(&text);
                    problems.extend(
                        parsed
                            .errors
                            .iter()
                            .map(|e| (netstat.clone(), format!("{netstat}: {e}"))),
                    );
                    let get = |k: &str| parsed.value.get(k).map(|&v| v.max(0) as u64);
                    // Both or neither: a counter missing for a tick would read as a fall to 0,
                    // then as everything since boot.
                    if let (Some(listen_overflows), Some(listen_drops)) =
                        (get("TcpExtListenOverflows"), get("TcpExtListenDrops"))
                    {
                        let c = NetnsCounters {
                            listen_overflows,
                            listen_drops,
                            syn_queue_full_drops: get("TcpExtTCPReqQFullDrop"),
                            syn_queue_full_cookies: get("TcpExtTCPReqQFullDoCookies"),
                            defer_accept_drops: get("TcpExtTCPDeferAcceptDrop"),
                            cookie: handle.cookie,
                        };
                        counters.insert(inum, c);
                        read.counters = true;
                    }
                }
                Err(e) => problems.push((netstat.clone(), format!("{netstat}: {e}"))),
            }
            rounds.push((format!("netns {inum}"), problems));
        }
        let live: Vec<&String> = rounds.iter().map(|(scope, _)| scope).collect();
        let gone: Vec<String> = self
            .health
            .scopes()
            .filter(|s| s.starts_with("netns ") && !live.iter().any(|l| l.as_str() == *s))
            .map(str::to_string)
            .collect();
        for scope in gone {
            self.health.forget(&scope);
        }
        for (scope, problems) in rounds {
            self.health.round(&scope, problems);
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
                socket_drops: BTreeMap::new(),
                sockets: BTreeMap::new(),
                pid: owner.as_ref().map(|o| o.pid),
                comm: owner.as_ref().map(|o| o.comm.clone()),
                full: None,
            });
            view.add_socket(&l);
            if let (Some(socket), Some(o)) = (view.sockets.get_mut(&l.inode), owner) {
                socket.pid = Some(o.pid);
                socket.comm = Some(o.comm);
            }
        }
        (listeners, counters, namespaces)
    }
}

/// `fe80::1%eth0` for a socket bound to a device (`ss` prints `[fe80::1]%eth0:80`; an address
/// with its zone inside the brackets is what clients and URLs take), the device's index when no
/// device of the namespace has it now (deleted, or moved to another namespace: the socket keeps
/// the index for its life).
fn shown_address(l: &sockdiag::DiagListener) -> String {
    match (l.interface, &l.device) {
        (0, _) => l.address.to_string(),
        (_, Some(name)) => format!("{}%{name}", l.address),
        (index, None) => format!("{}%{index}", l.address),
    }
}

impl ListenerView {
    /// A process holding a socket of the group with accept-queue limit `limit` (the one found
    /// full), else one holding any of its sockets: the group's first socket named another
    /// worker than the one whose queue was full (s63 story CM-4).
    pub fn owner_at(&self, limit: u32) -> (Option<u32>, Option<String>) {
        (self.sockets.values())
            .find(|s| s.limit == limit && s.pid.is_some())
            .map_or((self.pid, self.comm.clone()), |s| (s.pid, s.comm.clone()))
    }

    /// Merges one socket of the group in.
    fn add_socket(&mut self, l: &sockdiag::DiagListener) {
        // An SO_REUSEPORT group's sockets share an address: it is listed once.
        let address = shown_address(l);
        // Sorted: the dump's order changes when a socket is opened again, and the rules' reasons
        // (and the approvals desk's key for advice, made from their words) name every address
        // (s60 review2 R2-4: the same advice posted again for an order flipped).
        if let Err(at) = self.addresses.binary_search(&address) {
            self.addresses.insert(at, address);
        }
        self.depth = self.depth.max(l.depth);
        self.limit = self.limit.max(l.limit);
        // A limit of 0 (`listen(fd, 0)`, or somaxconn 0) still queues one connection, and drops
        // the next (the kernel's queue is full above its limit): full at one (s48 storyQ Q-5).
        if l.depth >= l.limit.max(1) && self.full.is_none_or(|(depth, _)| l.depth > depth) {
            self.full = Some((l.depth, l.limit));
        }
        self.drops += u64::from(l.drops);
        *self.socket_drops.entry(l.inode).or_default() += u64::from(l.drops);
        self.sockets.entry(l.inode).or_default().limit = l.limit;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A listener's view before any of its sockets is merged in.
    fn no_sockets() -> ListenerView {
        ListenerView {
            addresses: Vec::new(),
            depth: 0,
            limit: 0,
            drops: 0,
            socket_drops: BTreeMap::new(),
            sockets: BTreeMap::new(),
            pid: None,
            comm: None,
            full: None,
        }
    }

    #[test]
    fn a_reuseport_group_lists_each_address_once() {
        let socket = |address: &str, inode, drops| sockdiag::DiagListener {
            family: libc::AF_INET6 as u16,
            port: 8084,
            address: address.parse().unwrap(),
            interface: 0,
            device: None,
            inode,
            depth: 2,
            limit: 1,
            drops,
            uid: 0,
        };
        let mut view = no_sockets();
        for l in [
            socket("::1", 10, 40),
            socket("::1", 11, 24),
            socket("::1", 12, 32),
            socket("fe80::1", 13, 0),
        ] {
            view.add_socket(&l);
        }
        assert_eq!(view.addresses, ["::1", "fe80::1"]);
        assert_eq!(view.drops, 96);
        assert_eq!(view.socket_drops.len(), 4);
        assert_eq!((view.depth, view.limit), (2, 1));
    }

    /// s63 story CM-4: a group's owner for a full queue is a process holding the socket at that
    /// limit, not whichever socket the dump listed first.
    #[test]
    fn a_full_groups_owner_is_the_full_sockets() {
        let mut view = no_sockets();
        view.pid = Some(200);
        view.comm = Some("fast".into());
        view.sockets = [
            (
                1,
                SocketFacts {
                    limit: 4096,
                    pid: Some(200),
                    comm: Some("fast".into()),
                },
            ),
            (
                2,
                SocketFacts {
                    limit: 8,
                    pid: Some(100),
                    comm: Some("slow".into()),
                },
            ),
        ]
        .into();
        assert_eq!(view.owner_at(8), (Some(100), Some("slow".into())));
        assert_eq!(view.owner_at(64), (Some(200), Some("fast".into())));
    }

    /// Defect (s59 story BN-2): one port's link-local sockets on two links were listed as one
    /// `fe80::1`, an address nobody can connect to, with nothing to say there were two. Each is
    /// listed with its device as `ss` names it, or its index when the name is gone.
    #[test]
    fn sockets_bound_to_devices_are_listed_with_them() {
        let socket =
            |address: &str, inode, interface, device: Option<&str>| sockdiag::DiagListener {
                family: libc::AF_INET6 as u16,
                port: 8086,
                address: address.parse().unwrap(),
                interface,
                device: device.map(str::to_string),
                inode,
                depth: 0,
                limit: 16,
                drops: 0,
                uid: 0,
            };
        let mut view = no_sockets();
        for l in [
            socket("fe80::1", 1, 2, Some("d0")),
            socket("fe80::1", 2, 3, Some("d1")),
            socket("fe80::1", 3, 2, Some("d0")),
            socket("fe80::1", 4, 7, None),
            socket("::1", 5, 0, None),
        ] {
            view.add_socket(&l);
        }
        assert_eq!(
            view.addresses,
            ["::1", "fe80::1%7", "fe80::1%d0", "fe80::1%d1"]
        );
    }

    /// Defect (s55 story AR-2): a port bound on two addresses with different backlogs, the one
    /// with the smaller full, had no `listener_full`: the merged depth (the largest) was below
    /// the merged limit (the largest). The full socket's depth and limit are kept; a group with
    /// none full has none.
    #[test]
    fn a_group_with_one_socket_full_is_full_at_that_sockets_limit() {
        let socket = |address: &str, inode, depth, limit| sockdiag::DiagListener {
            family: libc::AF_INET as u16,
            port: 8085,
            address: address.parse().unwrap(),
            interface: 0,
            device: None,
            inode,
            depth,
            limit,
            drops: 0,
            uid: 0,
        };
        let mut view = no_sockets();
        view.add_socket(&socket("127.0.0.1", 1, 3, 128));
        view.add_socket(&socket("127.0.0.2", 2, 4, 4));
        assert_eq!((view.depth, view.limit), (4, 128));
        assert_eq!(view.full, Some((4, 4)));
        let mut view = no_sockets();
        view.add_socket(&socket("127.0.0.1", 1, 3, 128));
        view.add_socket(&socket("127.0.0.2", 2, 3, 4));
        assert_eq!(view.full, None);
        // `listen(fd, 0)` queues one connection: full at one.
        let mut view = no_sockets();
        view.add_socket(&socket("127.0.0.1", 1, 1, 0));
        assert_eq!(view.full, Some((1, 0)));
    }
}

/// The listeners in `untimed` that `warned` (those named last) did not have, when some were
/// named already: those the health record's first warning did not name. `warned` becomes
/// `untimed`.
fn newly_untimed(
    warned: &mut std::collections::BTreeSet<ListenerKey>,
    untimed: &[ListenerKey],
) -> Option<Vec<ListenerKey>> {
    let newly: Vec<ListenerKey> = untimed
        .iter()
        .filter(|k| !warned.contains(k))
        .copied()
        .collect();
    let some_named = !warned.is_empty();
    *warned = untimed.iter().copied().collect();
    (some_named && !newly.is_empty()).then_some(newly)
}

/// Listeners named for a log line: the first few, and how many more.
fn named_listeners(keys: &[ListenerKey]) -> String {
    const NAMED: usize = 8;
    let mut named: Vec<String> = keys
        .iter()
        .take(NAMED)
        .map(|k| {
            format!(
                "port {} ({}) in net:[{}]",
                k.port,
                crate::window::family_name(k.family),
                k.netns
            )
        })
        .collect();
    if keys.len() > NAMED {
        named.push(format!("and {} more", keys.len() - NAMED));
    }
    named.join(", ")
}

#[cfg(test)]
mod untimed_tests {
    use super::*;

    /// s46 storyJ F1: the warning said how many listeners request latency could not time, never
    /// which, and kept its first count as more went untimed (a pod created later was never
    /// timed, unsaid). The first eight are named, then how many more; each one later, by name.
    #[test]
    fn untimed_listeners_are_named() {
        let key = |port| ListenerKey {
            netns: 4026532281,
            port,
            family: kpo_common::AF_INET6,
        };
        assert_eq!(
            named_listeners(&[key(8085), key(8086)]),
            "port 8085 (ipv6) in net:[4026532281], port 8086 (ipv6) in net:[4026532281]"
        );
        // The first that go untimed are the health record's warning; one more later is named.
        let mut warned = Default::default();
        assert_eq!(newly_untimed(&mut warned, &[key(1), key(2)]), None);
        assert_eq!(newly_untimed(&mut warned, &[key(1), key(2)]), None);
        assert_eq!(
            newly_untimed(&mut warned, &[key(1), key(2), key(3)]),
            Some(vec![key(3)])
        );
        assert_eq!(newly_untimed(&mut warned, &[key(3)]), None);
        assert_eq!(newly_untimed(&mut warned, &[]), None);
        assert_eq!(newly_untimed(&mut warned, &[key(4)]), None, "warned afresh");
        let ten: Vec<ListenerKey> = (1..=10).map(key).collect();
        assert!(named_listeners(&ten).ends_with("port 8 (ipv6) in net:[4026532281], and 2 more"));
    }
}
