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
    handshakes_settled(&ns);
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

/// s63 story CM-1: an SO_REUSEPORT group whose workers listened with different backlogs (8 and
/// 200), of which only the small one's queue overflows under a burst nobody accepts (the kernel
/// spreads connections over the group by their addresses). The window's entry merges both: its
/// limit is the largest, its overflows the sum of their d<N>, and `dropping_limit` the limit of the
/// socket that dropped, as `ss -ltnm` shows each.
pub fn a_reuseport_group_names_the_limit_of_its_socket_that_dropped() {
    const GROUP_PORT: u16 = 4102;
    let ns = Netns::new();
    let (mut collector, builder) = start(false);
    let group: Vec<OwnedFd> = ns.run(|| {
        [8, 200]
            .into_iter()
            .map(|backlog| reuseport_listener(GROUP_PORT, backlog))
            .collect()
    });
    let clients: Vec<OwnedFd> = ns.run(|| {
        (0..CONNECTIONS)
            .map(|_| kpo_integration::connect_nonblocking(GROUP_PORT))
            .collect()
    });
    let sockets = || -> Vec<(u32, u32, u64)> {
        let out = ns.exec(&["ss", "-ltnm"]);
        let lines: Vec<&str> = out.lines().collect();
        let ours = |line: &str| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            fields.first() == Some(&"LISTEN")
                && fields
                    .get(3)
                    .is_some_and(|a| a.ends_with(&format!(":{GROUP_PORT}")))
        };
        // Each socket's line (and its skmem line after it).
        (0..lines.len())
            .filter(|&i| ours(lines[i]))
            .filter_map(|i| ss_listener(&lines[i..].join("\n"), GROUP_PORT))
            .collect()
    };
    wait_until("the small queue full", Duration::from_secs(5), || {
        sockets()
            .iter()
            .any(|&(depth, limit, _)| limit == 8 && depth == 9)
    });
    drop(clients);
    handshakes_settled(&ns);
    let each = sockets();
    let (small, large): (Vec<(u32, u32, u64)>, Vec<_>) = each.iter().partition(|s| s.1 == 8);
    assert_eq!((small.len(), large.len()), (1, 1), "{each:?}");
    assert!(
        small[0].2 > 0 && large[0].2 == 0,
        "only the small one drops: {each:?}"
    );
    let (window, _) = close_window(&mut collector, builder);
    let l = (window.listeners.iter())
        .find(|l| (l.netns, l.port) == (ns.inum(), GROUP_PORT))
        .expect("the group's entry");
    assert_eq!(l.backlog_limit, 200);
    assert_eq!(
        l.overflows,
        Some(small[0].2),
        "vs ss -ltnm d<N> of each socket"
    );
    assert_eq!(l.dropping_limit, Some(8));
    drop(group);
}

/// Waits until no handshake is left in flight in `ns`, so that the drop counters are final.
fn handshakes_settled(ns: &Netns) {
    wait_until("handshakes settled", Duration::from_secs(10), || {
        ns.exec(&["ss", "-tnH", "state", "syn-recv"])
            .trim()
            .is_empty()
            && ns
                .exec(&["ss", "-tnH", "state", "syn-sent"])
                .trim()
                .is_empty()
    });
}

/// A listener on 127.0.0.1:`port` in an SO_REUSEPORT group, with `backlog`.
fn reuseport_listener(port: u16, backlog: i32) -> OwnedFd {
    use std::os::fd::FromRawFd;
    // SAFETY: plain socket calls on a descriptor this function owns from its creation; the
    // option is an int of its size, the address a live sockaddr_in of its size.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
        assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
        let owned = OwnedFd::from_raw_fd(fd);
        let one: libc::c_int = 1;
        let size = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        let on = std::ptr::from_ref(&one).cast();
        assert_eq!(
            libc::setsockopt(fd, libc::SOL_SOCKET, libc::SO_REUSEPORT, on, size),
            0
        );
        let addr = libc::sockaddr_in {
            sin_family: libc::AF_INET as u16,
            sin_port: port.to_be(),
            sin_addr: libc::in_addr {
                s_addr: u32::from(Ipv4Addr::LOCALHOST).to_be(),
            },
            sin_zero: [0; 8],
        };
        let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        let bound = libc::bind(fd, std::ptr::from_ref(&addr).cast(), len);
        assert_eq!(bound, 0, "bind: {}", std::io::Error::last_os_error());
        assert_eq!(libc::listen(fd, backlog), 0);
        owned
    }
}
