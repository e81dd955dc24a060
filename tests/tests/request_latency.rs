//! Request latency: a small request/response server in a namespace serves requests that take a
//! fixed time, and the eBPF sensor's percentiles are checked against bounds the test's own clock
//! sets on every request.
//!
//! The sensor times each request from `sock_recv_length` (the end of the read that returned its
//! first byte) to `sock_send_length` (the end of the write of its response), both inside the
//! syscalls. So for request `i`, on one monotonic clock (`Instant` and `bpf_ktime_get_ns` are both
//! CLOCK_MONOTONIC):
//! - it starts no later than the server's read returned, and no earlier than both the server's
//!   read was called and the client's write was called (the bytes cannot arrive before);
//! - it ends no earlier than the server's write was called, and no later than it returned.
//!
//! Hence `lower_i ≤ span_i ≤ upper_i` for every request, and the r-th smallest span lies between
//! the r-th smallest lower and upper bound. That holds however long the scheduler keeps either
//! thread off the CPU, so the test has no wall-clock tolerance to be flaky about.
use std::{
    io::{Read, Write},
    net::{TcpListener, TcpStream},
    sync::mpsc,
    time::{Duration, Instant},
};

use kpo_agent::{collect::Collector, window::WindowBuilder};
use kpo_common::{bucket_lower_ns, bucket_of};
use kpo_integration::Netns;

use crate::common::start;

const REQUESTS: usize = 200;
const SERVICE: Duration = Duration::from_micros(2000);

/// What the server's clock saw of one request.
struct Served {
    read_called: Instant,
    read_returned: Instant,
    write_called: Instant,
    write_returned: Instant,
}

pub fn matches_server_service_time() {
    let ns = Netns::new();
    let (mut collector, mut builder) = start(true);
    let listener = ns.run(|| TcpListener::bind("127.0.0.1:0").unwrap());
    let addr = listener.local_addr().unwrap();
    // The sensor times only ports that sock_diag has seen listening: one tick registers it.
    builder.push(collector.sample());

    let server = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        s.set_nodelay(true).unwrap();
        let mut served = Vec::with_capacity(REQUESTS);
        let mut request = [0u8; 64];
        for _ in 0..REQUESTS {
            let read_called = Instant::now();
            s.read_exact(&mut request).unwrap();
            let read_returned = Instant::now();
            while read_returned.elapsed() < SERVICE {
                std::hint::spin_loop();
            }
            let write_called = Instant::now();
            s.write_all(&request).unwrap();
            served.push(Served {
                read_called,
                read_returned,
                write_called,
                write_returned: Instant::now(),
            });
        }
        served
    });
    let mut client = ns.run(|| TcpStream::connect(addr).unwrap());
    client.set_nodelay(true).unwrap();
    let (sent_tx, sent_rx) = mpsc::channel();
    let mut buf = [3u8; 64];
    for _ in 0..REQUESTS {
        sent_tx.send(Instant::now()).unwrap();
        client.write_all(&buf).unwrap();
        client.read_exact(&mut buf).unwrap();
    }
    drop(sent_tx);
    let served = server.join().unwrap();
    let sent: Vec<Instant> = sent_rx.iter().collect();
    let ns_of = |d: Duration| u64::try_from(d.as_nanos()).unwrap();
    let mut lower: Vec<u64> = served
        .iter()
        .map(|s| ns_of(s.write_called - s.read_returned))
        .collect();
    let mut upper: Vec<u64> = served
        .iter()
        .zip(&sent)
        .map(|(s, &sent)| ns_of(s.write_returned - s.read_called.max(sent)))
        .collect();
    lower.sort_unstable();
    upper.sort_unstable();

    builder.push(collector.sample());
    let (window, _) = builder.finish().unwrap();
    let measured = window
        .request_latency
        .iter()
        .find(|r| r.netns == ns.inum() && r.port == addr.port())
        .unwrap_or_else(|| {
            panic!(
                "no latency for port {}: {:?}",
                addr.port(),
                window.request_latency
            )
        });
    let latency = &measured.latency;
    assert_eq!(latency.samples, REQUESTS as u64, "one sample per request");
    // A percentile is interpolated inside the bucket of its rank's span, and printed to 0.01 µs.
    let rounding_ns = 5.0;
    for (q, reported_us) in [
        (0.50, latency.p50_us),
        (0.90, latency.p90_us),
        (0.99, latency.p99_us),
    ] {
        let rank = (q * REQUESTS as f64).ceil() as usize;
        let (lo, hi) = (lower[rank - 1], upper[rank - 1]);
        let floor = bucket_lower_ns(bucket_of(lo)) as f64;
        let ceiling = bucket_lower_ns(bucket_of(hi) + 1) as f64;
        let reported = reported_us * 1000.0;
        assert!(
            floor - rounding_ns <= reported && reported <= ceiling + rounding_ns,
            "p{} {reported_us} µs outside [{floor} ns, {ceiling} ns], the buckets of its rank's \
             bounds {lo} and {hi} ns",
            q * 100.0
        );
    }
    // The largest span's bucket: its upper edge is what max_us reports.
    let max_floor = bucket_lower_ns(bucket_of(lower[REQUESTS - 1]) + 1) as f64;
    let max_ceiling = bucket_lower_ns(bucket_of(upper[REQUESTS - 1]) + 1) as f64;
    let reported_max = latency.max_us * 1000.0;
    assert!(
        max_floor - rounding_ns <= reported_max && reported_max <= max_ceiling + rounding_ns,
        "max {} µs outside [{max_floor} ns, {max_ceiling} ns]",
        latency.max_us
    );
}

const HELD_REQUESTS: usize = 20;

/// Every request in flight while the timed listener set changes elsewhere on the host is still
/// counted: the server holds each request's response until the collector has sampled a tick in
/// which a listener in another namespace appeared and the one of the previous tick vanished (an
/// index freed, a key added). The server's read is over, so its request is pending in the sensor,
/// when the set changes; its write comes after. Counts only, no clock: the window must hold one
/// sample per request, as many as were driven.
pub fn requests_in_flight_survive_listener_churn_elsewhere() {
    let (served_ns, churn_ns) = (Netns::new(), Netns::new());
    let (mut collector, mut builder) = start(true);
    let listener = served_ns.run(|| TcpListener::bind("127.0.0.1:0").unwrap());
    let addr = listener.local_addr().unwrap();
    builder.push(collector.sample());

    let (read_tx, read_rx) = mpsc::channel();
    let (answer_tx, answer_rx) = mpsc::channel::<()>();
    let server = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        s.set_nodelay(true).unwrap();
        let mut request = [0u8; 64];
        for _ in 0..HELD_REQUESTS {
            s.read_exact(&mut request).unwrap();
            read_tx.send(()).unwrap();
            answer_rx.recv().unwrap();
            s.write_all(&request).unwrap();
        }
    });
    let mut client = served_ns.run(|| TcpStream::connect(addr).unwrap());
    client.set_nodelay(true).unwrap();
    let mut buf = [5u8; 64];
    let mut churned: Option<TcpListener> = None;
    for _ in 0..HELD_REQUESTS {
        client.write_all(&buf).unwrap();
        read_rx.recv().unwrap();
        let opened = churn_ns.run(|| TcpListener::bind("127.0.0.1:0").unwrap());
        let key_of = |l: &TcpListener| (churn_ns.inum(), l.local_addr().unwrap().port());
        let (new, old) = (key_of(&opened), churned.as_ref().map(key_of));
        drop(churned.replace(opened));
        let sample = collector.sample();
        let listed: Vec<(u64, u16)> = sample
            .listeners
            .keys()
            .map(|k| (u64::from(k.netns), k.port))
            .collect();
        // The change this test is about did happen at this tick.
        assert!(listed.contains(&new), "{new:?} not listed: {listed:?}");
        assert!(
            old.is_none_or(|old| !listed.contains(&old)),
            "{old:?} still listed"
        );
        builder.push(sample);
        answer_tx.send(()).unwrap();
        client.read_exact(&mut buf).unwrap();
    }
    server.join().unwrap();

    let samples = samples_at(collector, builder, served_ns.inum(), addr.port());
    assert_eq!(
        samples, HELD_REQUESTS as u64,
        "requests timed, of {HELD_REQUESTS} answered while the listener set changed"
    );
}

const RESTARTED_REQUESTS: usize = 50;

/// s53 story AK F3: a service restarted on its port is timed from its first request. The
/// collector samples a tick while the port is closed (the restart a tick falls into), then the
/// service listens again on the same port and answers every request before the next tick. The
/// window must hold one sample per request; when the tick that found the port closed removed its
/// entry, none was counted until the next tick listed the port again.
pub fn a_service_restarted_on_its_port_is_timed_from_its_first_request() {
    let ns = Netns::new();
    let (mut collector, mut builder) = start(true);
    let first = ns.run(|| TcpListener::bind("127.0.0.1:0").unwrap());
    let addr = first.local_addr().unwrap();
    builder.push(collector.sample());
    drop(first);
    let sample = collector.sample();
    let listed = |sample: &kpo_agent::collect::Sample| {
        sample
            .listeners
            .keys()
            .any(|k| u64::from(k.netns) == ns.inum() && k.port == addr.port())
    };
    // The tick this test is about did find the port closed.
    assert!(!listed(&sample), "{addr} still listed");
    builder.push(sample);

    let listener = ns.run(|| TcpListener::bind(addr).unwrap());
    answer(&ns, listener, RESTARTED_REQUESTS);
    let samples = samples_at(collector, builder, ns.inum(), addr.port());
    assert_eq!(
        samples, RESTARTED_REQUESTS as u64,
        "requests timed, of {RESTARTED_REQUESTS} answered after the restart"
    );
}

const NEW_SERVICE_REQUESTS: usize = 50;

/// s53 story AK F3: a new service is timed from its `listen()`, not from the first tick whose
/// discovery lists it. The kernel reports the socket that began to listen through the notable
/// ring buffer (read here as the agent's loop reads it), the collector times its port then, and
/// every request answered before the next tick is counted. No tick lists the port before the
/// requests: before, none of them was.
pub fn a_new_service_is_timed_from_its_listen() {
    let ns = Netns::new();
    let (mut collector, builder) = start(true);
    let ring = collector
        .sensors
        .take_map(kpo_common::MAP_NOTABLE)
        .expect("the notable ring buffer");
    let mut ring = aya::maps::RingBuf::try_from(ring).unwrap();
    let listener = ns.run(|| TcpListener::bind("127.0.0.1:0").unwrap());
    let addr = listener.local_addr().unwrap();
    let mut seen = None;
    crate::common::wait_until(
        "the kernel's report of the new listener",
        Duration::from_secs(10),
        || {
            while let Some(item) = ring.next() {
                assert!(item.len() >= std::mem::size_of::<kpo_common::NotableEvent>());
                // SAFETY: the length was checked; NotableEvent is plain old data, read unaligned.
                let event: kpo_common::NotableEvent =
                    unsafe { std::ptr::read_unaligned(item.as_ptr().cast()) };
                let key = event.key;
                if event.kind == kpo_common::NotableKind::Listening as u32
                    && u64::from(key.netns) == ns.inum()
                    && key.port == addr.port()
                {
                    seen = Some(key);
                }
            }
            seen.is_some()
        },
    );
    collector.time_listeners(&[seen.expect("seen")]);

    answer(&ns, listener, NEW_SERVICE_REQUESTS);
    let samples = samples_at(collector, builder, ns.inum(), addr.port());
    assert_eq!(
        samples, NEW_SERVICE_REQUESTS as u64,
        "requests timed, of {NEW_SERVICE_REQUESTS} answered before any tick listed the port"
    );
}

/// s63 story CJ-1: a request waiting for its response keeps its socket slot when another socket's
/// request lands on it. Each round, a new connection's request is read and held; then a request
/// is read (and answered) on every one of many other connections, whose sockets cover most of the
/// sensor's 8192 slots; then the held request is answered. The window must hold one sample per
/// held request: when another socket's read evicted a waiting one, the slow requests of a busy
/// host were the ones lost (15% of 200 ms requests at 6000 connections).
///
/// With `n` other sockets, a held request's slot is another's with probability 1 - e^(-n/8192);
/// the rounds are as many as make an evicting sensor pass with a probability below 1e-4. `n` is
/// what the limit of open files allows (raised to its hard limit), up to 16384.
pub fn a_request_waiting_for_its_response_keeps_its_slot_from_other_sockets() {
    let files = raise_open_files();
    let others_n = usize::try_from(files.saturating_sub(512) / 2)
        .unwrap_or(usize::MAX)
        .min(16_384);
    assert!(
        others_n >= 1024,
        "the limit of open files ({files}) leaves room for {others_n} connections, of 1024 at least"
    );
    let slots = f64::from(kpo_common::SOCK_SLOTS);
    let rounds = (1e-4f64.ln() / (-(others_n as f64) / slots)).ceil() as usize;
    let ns = Netns::new();
    let (mut collector, mut builder) = start(true);
    let waiting = ns.run(|| TcpListener::bind("127.0.0.1:0").unwrap());
    let others = ns.run(|| TcpListener::bind("127.0.0.1:0").unwrap());
    let (waiting_addr, others_addr) = (waiting.local_addr().unwrap(), others.local_addr().unwrap());
    builder.push(collector.sample());
    let mut pairs: Vec<(TcpStream, TcpStream)> = Vec::with_capacity(others_n);
    ns.run(|| {
        // In batches below the listen backlog (128), each accepted before the next.
        while pairs.len() < others_n {
            let clients: Vec<TcpStream> = (0..64.min(others_n - pairs.len()))
                .map(|_| TcpStream::connect(others_addr).unwrap())
                .collect();
            for client in clients {
                pairs.push((client, others.accept().unwrap().0));
            }
        }
    });
    let mut byte = [0u8; 1];
    // Each round's connection is kept open after it: closed, the next would most often be given
    // the same kernel socket, and land in the same slot round after round (s63 review1 R1-3).
    let mut held = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let mut client = ns.run(|| TcpStream::connect(waiting_addr).unwrap());
        let (mut server, _) = waiting.accept().unwrap();
        let mut request = [9u8; 64];
        client.write_all(&request).unwrap();
        server.read_exact(&mut request).unwrap();
        for (client, _) in &mut pairs {
            client.write_all(&[1]).unwrap();
        }
        for (_, server) in &mut pairs {
            server.read_exact(&mut byte).unwrap();
            server.write_all(&byte).unwrap();
        }
        for (client, _) in &mut pairs {
            client.read_exact(&mut byte).unwrap();
        }
        server.write_all(&request).unwrap();
        client.read_exact(&mut request).unwrap();
        held.push((client, server));
    }
    builder.push(collector.sample());
    let (window, _) = builder.finish().unwrap();
    let samples = |port: u16| -> u64 {
        (window.request_latency.iter())
            .filter(|r| r.netns == ns.inum() && r.port == port)
            .map(|r| r.latency.samples)
            .sum()
    };
    // The other sockets are timed too: only a timed socket ever evicted a waiting one.
    assert!(
        samples(others_addr.port()) > 0,
        "the other service is not timed"
    );
    assert_eq!(
        samples(waiting_addr.port()),
        rounds as u64,
        "requests timed, of {rounds} held while {others_n} other sockets read"
    );
    drop(held);
}

/// s63 story CJ-2: the listening ports the sensor has no place for (it times `MAX_SERVICES`,
/// first come) are counted in the window: such a port is absent from `request_latency` however
/// busy, as an idle one is, and only a log line said so. The count is the listening ports the
/// sample found, every namespace's, less the places.
pub fn the_ports_the_sensor_has_no_place_for_are_counted() {
    const PORTS: usize = 140;
    let ns = Netns::new();
    let (mut collector, mut builder) = start(true);
    let held: Vec<TcpListener> = ns.run(|| {
        (0..PORTS)
            .map(|_| TcpListener::bind("127.0.0.1:0").unwrap())
            .collect()
    });
    let sample = collector.sample();
    let inum = ns.inum();
    let here = (sample.listeners.keys())
        .filter(|k| u64::from(k.netns) == inum)
        .count();
    assert_eq!(
        here, PORTS,
        "the namespace's listeners, as ss -ltn lists them"
    );
    let places = kpo_common::MAX_SERVICES as usize;
    let beyond = u32::try_from(sample.listeners.len().saturating_sub(places)).unwrap();
    assert!(beyond as usize >= PORTS - places);
    assert_eq!(sample.untimed_ports, Some(beyond));
    builder.push(sample);
    let (window, _) = builder.finish().unwrap();
    assert_eq!(window.request_latency_untimed_ports, Some(beyond));
    drop(held);
}

/// What [`a_request_waiting_for_its_response_keeps_its_slot_from_other_sockets`] needs besides
/// root and BTF: a hard limit of open files that leaves room for 1024 other connections, both
/// their ends (a host or container that caps it lower cannot run it, which is no failure).
pub fn open_files_requirement() -> Option<String> {
    crate::needs_root_and_btf().or_else(|| {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit on a live rlimit of this process.
        let read = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) };
        (read != 0 || limit.rlim_max < 2 * 1024 + 512).then(|| {
            format!(
                "the hard limit of open files ({}) leaves no room for 1024 connections, both ends",
                limit.rlim_max
            )
        })
    })
}

/// Raises this process's limit of open files to its hard limit; returns the limit.
fn raise_open_files() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit on a live rlimit of this process.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit), 0);
        limit.rlim_cur = limit.rlim_max;
        let set = libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        assert_eq!(set, 0, "setrlimit: {}", std::io::Error::last_os_error());
    }
    limit.rlim_cur
}

/// Answers `n` requests of 64 bytes, one at a time, on the first connection to `listener`, from a
/// client in `ns`.
fn answer(ns: &Netns, listener: TcpListener, n: usize) {
    let addr = listener.local_addr().unwrap();
    let server = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut request = [0u8; 64];
        for _ in 0..n {
            s.read_exact(&mut request).unwrap();
            s.write_all(&request).unwrap();
        }
    });
    let mut client = ns.run(|| TcpStream::connect(addr).unwrap());
    let mut buf = [7u8; 64];
    for _ in 0..n {
        client.write_all(&buf).unwrap();
        client.read_exact(&mut buf).unwrap();
    }
    server.join().unwrap();
}

/// One more tick, then the window's request-latency samples of `port` in namespace `netns`.
fn samples_at(mut collector: Collector, mut builder: WindowBuilder, netns: u64, port: u16) -> u64 {
    builder.push(collector.sample());
    let (window, _) = builder.finish().unwrap();
    window
        .request_latency
        .iter()
        .filter(|r| r.netns == netns && r.port == port)
        .map(|r| r.latency.samples)
        .sum()
}
