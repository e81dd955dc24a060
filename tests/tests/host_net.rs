//! Host metrics from /proc/net against the kernel's own counters, in a namespace the test made.
use std::{
    net::{Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket},
    path::Path,
};

use kpo_agent::collect::procfs::{HostMetrics, HostSnapshot, ProcRoot};
use kpo_integration::{netstat_value, Netns};

/// Datagrams each way, and their payload.
const DATAGRAMS: usize = 50;
const PAYLOAD: usize = 1000;

/// A /proc root whose `net` is the reading thread's own namespace's: run inside the test's
/// namespace, the agent's reader sees that namespace's counters, and nothing else of /proc
/// (the other sources are missing, which only nulls their fields).
fn net_only_root(dir: &Path) -> ProcRoot {
    std::os::unix::fs::symlink("/proc/thread-self/net", dir.join("net")).expect("symlink");
    ProcRoot(dir.to_path_buf())
}

/// One snapshot as the agent takes it, and the kernel's IPv4 and IPv6 octet counters
/// (in, out) read beside it with `cat` in the namespace.
fn read(ns: &Netns, root: &ProcRoot) -> (HostSnapshot, (u64, u64)) {
    let snapshot = ns.run(|| HostSnapshot::read(root).0);
    let netstat = ns.exec(&["cat", "/proc/net/netstat"]);
    let snmp6 = ns.exec(&["cat", "/proc/net/snmp6"]);
    let v6 = |name: &str| {
        snmp6
            .lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse::<u64>().ok())
            .unwrap_or_else(|| panic!("{name} not in snmp6"))
    };
    let v4 = |name: &str| netstat_value(&netstat, name).expect("IpExt in netstat");
    let octets = (
        v4("IpExtInOctets") + v6("Ip6InOctets"),
        v4("IpExtOutOctets") + v6("Ip6OutOctets"),
    );
    (snapshot, octets)
}

/// Sends and receives every datagram over loopback at `address`: once `recv` has returned it,
/// the kernel has counted it out and in.
fn udp_round(address: SocketAddr) {
    let receiver = UdpSocket::bind(address).expect("bind");
    let sender = UdpSocket::bind(SocketAddr::new(address.ip(), 0)).expect("bind");
    let to = receiver.local_addr().unwrap();
    let mut buf = [0u8; PAYLOAD];
    for _ in 0..DATAGRAMS {
        assert_eq!(sender.send_to(&[7u8; PAYLOAD], to).unwrap(), PAYLOAD);
        assert_eq!(receiver.recv(&mut buf).unwrap(), PAYLOAD);
    }
}

/// UDP over IPv4 and IPv6 loopback in a fresh namespace: `ip_in_bytes_per_s` and
/// `ip_out_bytes_per_s` over the span are exactly the datagrams' bytes, IPv4's (20-byte
/// header) and IPv6's (40-byte header) together, and the kernel's counters agree. Before, the
/// rates were IPv4's alone.
pub fn ip_bytes_count_ipv4_and_ipv6() {
    let ns = Netns::new();
    let dir = tempfile::tempdir().unwrap();
    let root = net_only_root(dir.path());
    let (first, before) = read(&ns, &root);
    ns.run(|| {
        udp_round(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)));
        udp_round(SocketAddr::from((Ipv6Addr::LOCALHOST, 0)));
    });
    let (last, after) = read(&ns, &root);
    let udp = 8 + PAYLOAD as u64;
    let sent = DATAGRAMS as u64 * ((20 + udp) + (40 + udp));
    assert_eq!(
        (after.0 - before.0, after.1 - before.1),
        (sent, sent),
        "the kernel's IpExt + Ip6 octets: nothing else moves in the namespace"
    );
    let m = HostMetrics::between(&first, &last);
    let secs = last.at.duration_since(first.at).as_secs_f64();
    // Rates are rounded to 3 decimals: times the span, within half a byte of the count.
    let bytes = |rate: Option<f64>| (rate.expect("read both times") * secs).round() as u64;
    assert_eq!(
        (bytes(m.ip_in_bytes_per_s), bytes(m.ip_out_bytes_per_s)),
        (sent, sent),
        "in, out over {secs} s"
    );
}
