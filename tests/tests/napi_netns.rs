//! NAPI polls of devices that share an ifindex in different network namespaces, as containers'
//! veths do: `kpo run` must report each under its own namespace and name, with the packets the
//! kernel counted on that device.
use std::{
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    path::Path,
    process::Stdio,
    time::Duration,
};

use kpo_integration::{command_exists, needs_root_and_btf, run_ok, Netns};
use serde_json::Value;

use crate::{
    agent_binary::{kinds, lines, schema, Agent},
    common::wait_until,
};

pub fn requirement() -> Option<String> {
    needs_root_and_btf().or_else(|| {
        (!command_exists("ethtool"))
            .then(|| "ethtool is not installed; run cargo xtask setup".to_string())
    })
}

/// Datagrams sent per batch: the receiving veth's ring holds 256, and each batch is received
/// before the next is sent, so none is dropped for want of room.
const BATCH: usize = 50;

/// A namespace with a veth pair made inside it, so the pair's indices are the namespace's first
/// (1 is loopback): the same in every namespace made this way.
struct Pair {
    ns: Netns,
    /// Receives, through NAPI (GRO on).
    rx: String,
    rx_index: u32,
    rx_mac: [u8; 6],
    /// Sends, from a packet socket.
    tx_index: u32,
    tx_mac: [u8; 6],
}

/// `ip -j link show dev DEV` in the namespace: the device's JSON object, with its statistics.
fn link(ns: &Netns, dev: &str) -> Value {
    let out = run_ok(
        "ip",
        &["-n", &ns.name, "-s", "-j", "link", "show", "dev", dev],
    );
    let all: Value = serde_json::from_slice(&out.stdout).expect("ip -j output");
    all[0].clone()
}

fn mac(link: &Value) -> [u8; 6] {
    let text = link["address"].as_str().expect("a MAC address");
    let bytes: Vec<u8> = text
        .split(':')
        .map(|b| u8::from_str_radix(b, 16).unwrap())
        .collect();
    bytes.try_into().expect("6 bytes")
}

impl Pair {
    fn new(rx: &str, tx: &str) -> Pair {
        let ns = Netns::new();
        // IPv6 would send router and neighbour solicitations over the pair whenever its timers
        // fire, and a packet the device received after the kernel's counter was read but before
        // the window closed would break the equality below. These are the namespace's own
        // settings (the thread writing them is inside it), not the host's.
        ns.run(|| {
            for conf in ["all", "default"] {
                let path = format!("/proc/sys/net/ipv6/conf/{conf}/disable_ipv6");
                if Path::new(&path).exists() {
                    std::fs::write(&path, "1").unwrap_or_else(|e| panic!("{path}: {e}"));
                }
            }
        });
        run_ok(
            "ip",
            &[
                "-n", &ns.name, "link", "add", tx, "type", "veth", "peer", "name", rx,
            ],
        );
        // The sender has no address: the datagrams' source, 10.77.0.1, must not be local to
        // the namespace, or the receiver's IP layer would take them for spoofed (a martian
        // source). Only the receiver's address is assigned, so they are delivered.
        run_ok(
            "ip",
            &["-n", &ns.name, "addr", "add", "10.77.0.2/24", "dev", rx],
        );
        for dev in [rx, tx] {
            run_ok("ip", &["-n", &ns.name, "link", "set", dev, "up"]);
        }
        // GRO gives the receiving veth a NAPI instance. A sender with TSO on hands the receiver's
        // NAPI only the packets GRO might merge (veth_skb_is_eligible_for_gro), and the others to
        // the per-CPU backlog; with TSO off, every packet goes through the receiver's NAPI.
        ns.exec(&["ethtool", "-K", rx, "gro", "on"]);
        ns.exec(&["ethtool", "-K", tx, "tso", "off"]);
        let (rx_link, tx_link) = (link(&ns, rx), link(&ns, tx));
        let index = |l: &Value| l["ifindex"].as_u64().expect("ifindex") as u32;
        Pair {
            rx: rx.to_string(),
            rx_index: index(&rx_link),
            rx_mac: mac(&rx_link),
            tx_index: index(&tx_link),
            tx_mac: mac(&tx_link),
            ns,
        }
    }

    /// The receiving veth's packet count, as the kernel keeps it (`ip -s link`).
    fn rx_packets(&self) -> u64 {
        link(&self.ns, &self.rx)["stats64"]["rx"]["packets"]
            .as_u64()
            .expect("rx packets")
    }

    /// Sends `count` UDP datagrams from the sender's end to the receiver's address, in batches
    /// that are each received before the next is sent. Returns the datagrams the socket bound
    /// on the receiver read.
    fn send(&self, count: usize) -> usize {
        let receiver = self
            .ns
            .run(|| std::net::UdpSocket::bind("10.77.0.2:7777").expect("bind on the receiver"));
        receiver.set_nonblocking(true).unwrap();
        let sender = self.ns.run(packet_socket);
        let frame = udp_frame(self.tx_mac, self.rx_mac, 7777);
        let start = self.rx_packets();
        let (mut sent, mut read) = (0, 0);
        let mut buf = [0u8; 64];
        while sent < count {
            for _ in 0..BATCH.min(count - sent) {
                send_frame(&sender, self.tx_index, self.rx_mac, &frame);
                sent += 1;
            }
            wait_until(
                "the batch received by the veth",
                Duration::from_secs(10),
                || self.rx_packets() == start + sent as u64,
            );
            while receiver.recv(&mut buf).is_ok() {
                read += 1;
            }
        }
        read
    }
}

/// A packet socket that only sends (protocol 0: it receives nothing). Sending below IP is the
/// only way over the pair: both ends are in one namespace, so a datagram sent through a UDP
/// socket to the receiver's address would be delivered locally, over loopback.
fn packet_socket() -> OwnedFd {
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0) };
    assert!(
        fd >= 0,
        "packet socket: {}",
        std::io::Error::last_os_error()
    );
    unsafe { OwnedFd::from_raw_fd(fd) }
}

fn send_frame(sock: &OwnedFd, ifindex: u32, dst: [u8; 6], frame: &[u8]) {
    let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    addr.sll_family = libc::AF_PACKET as u16;
    addr.sll_protocol = (libc::ETH_P_IP as u16).to_be();
    addr.sll_ifindex = ifindex as i32;
    addr.sll_halen = 6;
    addr.sll_addr[..6].copy_from_slice(&dst);
    let sent = unsafe {
        libc::sendto(
            sock.as_raw_fd(),
            frame.as_ptr().cast(),
            frame.len(),
            0,
            (&addr as *const libc::sockaddr_ll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as u32,
        )
    };
    assert_eq!(
        sent,
        frame.len() as isize,
        "sendto: {}",
        std::io::Error::last_os_error()
    );
}

/// An Ethernet frame carrying a UDP datagram from 10.77.0.1 to 10.77.0.2:`port`.
fn udp_frame(src: [u8; 6], dst: [u8; 6], port: u16) -> Vec<u8> {
    let payload = b"kpo napi netns test";
    let udp_len = 8 + payload.len() as u16;
    let ip_len = 20 + udp_len;
    let mut ip = vec![
        0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 17, 0, 0, 10, 77, 0, 1, 10, 77, 0, 2,
    ];
    ip[2..4].copy_from_slice(&ip_len.to_be_bytes());
    let sum = ip
        .chunks(2)
        .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
        .sum::<u32>();
    let folded = (sum & 0xffff) + (sum >> 16);
    let checksum = !(((folded & 0xffff) + (folded >> 16)) as u16);
    ip[10..12].copy_from_slice(&checksum.to_be_bytes());
    let mut frame = Vec::new();
    frame.extend_from_slice(&dst);
    frame.extend_from_slice(&src);
    frame.extend_from_slice(&0x0800u16.to_be_bytes());
    frame.extend_from_slice(&ip);
    frame.extend_from_slice(&40000u16.to_be_bytes());
    frame.extend_from_slice(&port.to_be_bytes());
    frame.extend_from_slice(&udp_len.to_be_bytes());
    // No UDP checksum (0 is allowed over IPv4).
    frame.extend_from_slice(&[0, 0]);
    frame.extend_from_slice(payload);
    frame
}

/// Every `napi[]` entry of `windows` for device `ifindex` of namespace `netns`.
fn entries(windows: &[Value], netns: u64, ifindex: u32) -> Vec<&Value> {
    windows
        .iter()
        .flat_map(|w| w["napi"].as_array().expect("napi[]"))
        .filter(|n| n["netns"] == netns && n["ifindex"] == ifindex)
        .collect()
}

fn sum(entries: &[&Value], field: &str) -> u64 {
    entries
        .iter()
        .map(|n| n[field].as_u64().unwrap_or_else(|| panic!("{field}: {n}")))
        .sum()
}

/// Two namespaces, each with a veth pair whose receiving end has the same ifindex in both, get
/// different amounts of UDP traffic: the agent's windows have one entry per namespace, named
/// after the device in that namespace, and the packets NAPI polled from each are exactly the
/// packets the kernel counted on that device.
pub fn devices_at_one_ifindex_in_two_namespaces_are_told_apart() {
    let a = Pair::new("kpo-rx-a", "kpo-tx-a");
    let b = Pair::new("kpo-rx-b", "kpo-tx-b");
    assert_eq!(
        a.rx_index, b.rx_index,
        "pairs made alike in fresh namespaces get the same indices"
    );
    let (a_before, b_before) = (a.rx_packets(), b.rx_packets());

    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("events.ndjson");
    // Duty fraction 1: the napi sensor stays attached, so it sees every poll, and its counts
    // can equal the kernel's.
    let mut agent = Agent::spawn(&["--duty-fraction", "1"], &[], &events, Stdio::piped());
    agent.wait_reported(&events);
    let windows_written = || {
        kinds(&lines(&events))
            .iter()
            .filter(|k| *k == "window")
            .count()
    };
    // The first window's baseline was read before any of the traffic.
    wait_until("a first window", Duration::from_secs(30), || {
        windows_written() >= 1
    });

    let (a_sent, b_sent) = (300, 700);
    let a_read = a.send(a_sent);
    let b_read = b.send(b_sent);
    let (a_after, b_after) = (a.rx_packets(), b.rx_packets());
    // The kernel increments the device's count as the poll ends, just before the tracepoint
    // fires: a window that starts after this point closes only after every poll was counted.
    let written = windows_written();
    wait_until("two more windows", Duration::from_secs(30), || {
        windows_written() >= written + 2
    });
    drop(agent);

    let all = lines(&events);
    let windows: Vec<Value> = all.into_iter().filter(|e| e["kind"] == "window").collect();
    let validator = schema();
    for w in &windows {
        let errors: Vec<String> = validator
            .iter_errors(w)
            .map(|e| format!("{e} at {}", e.instance_path))
            .collect();
        assert!(errors.is_empty(), "{errors:#?}\n{w:#}");
        assert_eq!(
            w["sampled_fraction"], 1.0,
            "the napi sensor missed part of a window: {w:#}"
        );
    }

    for (pair, sent, read, before, after) in [
        (&a, a_sent, a_read, a_before, a_after),
        (&b, b_sent, b_read, b_before, b_after),
    ] {
        let netns = pair.ns.inum();
        // Batches were each received before the next was sent, so the ring never overflowed:
        // the device received every frame, and nothing else (no IPv6, no replies to bound UDP).
        assert_eq!(after - before, sent as u64, "{}", pair.ns.name);
        // The socket may drop some if its buffer fills before it is drained: a bound only.
        assert!(read > 0 && read <= sent, "{read} of {sent} datagrams read");
        let found = entries(&windows, netns, pair.rx_index);
        assert!(
            !found.is_empty(),
            "no napi entry for netns {netns} ifindex {}: {:#?}",
            pair.rx_index,
            windows.iter().map(|w| &w["napi"]).collect::<Vec<_>>()
        );
        for n in &found {
            assert_eq!(n["device"], pair.rx.as_str(), "{n}");
        }
        // NAPI's work is the packets each poll took from the device's ring, and the veth adds the
        // same number to its receive count: exactly equal, over the windows the agent ran.
        assert_eq!(
            sum(&found, "packets"),
            after - before,
            "{}: napi packets vs the device's rx_packets",
            pair.ns.name
        );
        // No kernel counter of polls: a poll takes at most its budget (64 for veth), and a poll
        // that used all of it is one of the polls.
        let polls = sum(&found, "polls");
        assert!(
            polls >= (after - before).div_ceil(64),
            "{polls} polls for {} packets",
            after - before
        );
        assert!(sum(&found, "budget_exhausted") <= polls);
        // The other namespace's device of the same name and index is never reported as this one.
        let other = if std::ptr::eq(pair, &a) { &b } else { &a };
        let misnamed: Vec<&Value> = windows
            .iter()
            .flat_map(|w| w["napi"].as_array().unwrap())
            .filter(|n| n["device"] == other.rx.as_str() && n["netns"] == netns)
            .collect();
        assert!(misnamed.is_empty(), "{misnamed:#?}");
    }
    // The backlog has no namespace.
    for n in windows
        .iter()
        .flat_map(|w| w["napi"].as_array().unwrap())
        .filter(|n| n["ifindex"] == 0)
    {
        assert_eq!(
            (&n["netns"], &n["device"]),
            (&Value::Null, &Value::from("backlog"))
        );
    }
}
