//! A listener with backlog 8 in a fresh namespace, a bounded burst of 60 connections nobody
//! accepts: the window must report what `ss -ltnm` reports, then show the queue drained.
use std::{
    net::{Ipv4Addr, Ipv6Addr, SocketAddrV6, TcpListener},
    os::fd::{AsRawFd, OwnedFd},
    time::Duration,
};

use kpo_integration::{ss_listener, Netns};

use crate::common::{close_window, start, wait_until};

const BACKLOG: i32 = 8;
const CONNECTIONS: usize = 60;
const PORT: u16 = 4100;

/// A listener on 127.0.0.1:PORT with the given backlog (listen() again to set it: std uses 128).
fn listen(backlog: i32) -> TcpListener {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, PORT)).unwrap();
    assert_eq!(unsafe { libc::listen(listener.as_raw_fd(), backlog) }, 0);
    listener
}

pub fn burst_matches_ss_and_drains() {
    let ns = Netns::new();
    let (mut collector, builder) = start(false);
    let listener = ns.run(|| listen(BACKLOG));
    let clients: Vec<OwnedFd> = ns.run(|| {
        (0..CONNECTIONS)
            .map(|_| kpo_integration::connect_nonblocking(PORT))
            .collect()
    });

    let ss = || ss_listener(&ns.exec(&["ss", "-ltnm"]), PORT).expect("listener in ss");
    // The queue fills to limit + 1 (the kernel drops only when depth > limit).
    wait_until("accept queue full", Duration::from_secs(5), || {
        ss().0 == BACKLOG as u32 + 1
    });
    let peak = ss().0;
    // Closing the clients ends their SYN retries; wait until no handshake is left in flight so
    // the drop counter is final.
    drop(clients);
    wait_until("handshakes settled", Duration::from_secs(10), || {
        ns.exec(&["ss", "-tnH", "state", "syn-recv"])
            .trim()
            .is_empty()
            && ns
                .exec(&["ss", "-tnH", "state", "syn-sent"])
                .trim()
                .is_empty()
    });
    let (recv_q, send_q, drops) = ss();
    assert_eq!(recv_q, peak, "queue unchanged while nobody accepts");
    assert_eq!(send_q, BACKLOG as u32);
    assert!(
        drops > 0,
        "a burst of {CONNECTIONS} into backlog {BACKLOG} must drop"
    );
    let ns_drops = ns.netstat("TcpExtListenDrops");

    let (window, builder) = close_window(&mut collector, builder);
    let key = (ns.inum(), PORT);
    let l = window
        .listeners
        .iter()
        .find(|l| (l.netns, l.port) == key)
        .unwrap_or_else(|| panic!("listener {key:?} missing from {:#?}", window.listeners));
    assert_eq!(l.family, "ipv4");
    assert_eq!(l.backlog_limit, BACKLOG as u32);
    assert_eq!(l.backlog_max, peak, "backlog_max vs ss Recv-Q peak");
    assert_eq!(l.overflows, Some(drops), "overflows vs ss -ltnm d<N>");
    assert_eq!(l.pid, Some(std::process::id()));
    let netns = window
        .netns
        .iter()
        .find(|n| n.netns == ns.inum())
        .expect("netns counters");
    assert_eq!(
        netns.listen_drops, ns_drops,
        "namespace ListenDrops cross-check"
    );
    assert_eq!(
        netns.listen_drops, drops,
        "the only listener accounts for every drop"
    );

    // Accept everything: the eBPF enqueue count must equal what was accepted.
    listener.set_nonblocking(true).unwrap();
    let mut accepted = 0u64;
    while listener.accept().is_ok() {
        accepted += 1;
    }
    assert_eq!(accepted, u64::from(peak));
    assert_eq!(
        l.enqueued,
        Some(accepted),
        "eBPF enqueues vs connections accepted"
    );

    let (drained, _) = close_window(&mut collector, builder);
    let l = drained
        .listeners
        .iter()
        .find(|l| (l.netns, l.port) == key)
        .expect("listener");
    assert_eq!(l.backlog_now, 0, "queue drained");
    assert_eq!(l.backlog_max, 0, "no connection waited in the next window");
    assert_eq!(l.overflows, Some(0));
    assert_eq!(l.enqueued, Some(0));
}

/// Defect (s59 story BN-2): one port's link-local listeners on two links were one `fe80::1` in
/// the window, an address nobody can connect to, with nothing to tell there were two. Each must
/// be listed with its device, as `ss -ltn` names them (`[fe80::1]%d0:4101`).
pub fn link_local_listeners_are_listed_with_their_device() {
    const LINK_PORT: u16 = 4101;
    let ns = Netns::new();
    // Two links of its own (a veth pair each, both ends inside; no dummy module here).
    for device in ["d0", "d1"] {
        let peer = format!("{device}p");
        ns.exec(&[
            "ip", "link", "add", device, "type", "veth", "peer", "name", &peer,
        ]);
        ns.exec(&["ip", "link", "set", device, "up"]);
        ns.exec(&["ip", "link", "set", &peer, "up"]);
        ns.exec(&[
            "ip",
            "-6",
            "addr",
            "add",
            "fe80::1/64",
            "dev",
            device,
            "nodad",
        ]);
    }
    let (mut collector, builder) = start(false);
    let _listeners: Vec<TcpListener> = ns.run(|| {
        [("d0", 4), ("d1", 16)]
            .into_iter()
            .map(|(device, backlog)| {
                let index = nix::net::if_::if_nametoindex(device).expect("device index");
                let address = SocketAddrV6::new(
                    Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1),
                    LINK_PORT,
                    0,
                    index,
                );
                let listener = TcpListener::bind(address).expect("bind fe80::1 on its link");
                assert_eq!(unsafe { libc::listen(listener.as_raw_fd(), backlog) }, 0);
                listener
            })
            .collect()
    });
    // `[fe80::1]%d0:4101` in ss is `fe80::1%d0` in the window.
    let mut in_ss: Vec<String> = ns
        .exec(&["ss", "-ltnH", "sport", "=", &format!(":{LINK_PORT}")])
        .lines()
        .filter_map(|line| line.split_whitespace().nth(3))
        .map(|local| {
            let local = local.trim_end_matches(&format!(":{LINK_PORT}"));
            local.replace(['[', ']'], "")
        })
        .collect();
    in_ss.sort();
    assert_eq!(in_ss, ["fe80::1%d0", "fe80::1%d1"], "what ss lists");

    let (window, _) = close_window(&mut collector, builder);
    let l = window
        .listeners
        .iter()
        .find(|l| (l.netns, l.port) == (ns.inum(), LINK_PORT))
        .unwrap_or_else(|| panic!("listener missing from {:#?}", window.listeners));
    let mut listed = l.addresses.clone();
    listed.sort();
    assert_eq!(listed, in_ss, "the window's addresses vs ss -ltn");
    assert_eq!(l.family, "ipv6");
    assert_eq!(l.backlog_limit, 16, "the group's largest limit");
}
