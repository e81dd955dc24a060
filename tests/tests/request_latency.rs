//! Request latency: a small request/response server in a namespace times its own service (from
//! the end of reading a request to just before writing the response); the eBPF sensor times from
//! the read's return to the write's return on the same socket.
use std::{
    io::{Read, Write},
    net::{TcpListener, TcpStream},
    time::{Duration, Instant},
};

use kpo_integration::Netns;

use crate::common::start;

const REQUESTS: usize = 200;
const SERVICE: Duration = Duration::from_micros(2000);

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
            s.read_exact(&mut request).unwrap();
            let started = Instant::now();
            while started.elapsed() < SERVICE {
                std::hint::spin_loop();
            }
            served.push(started.elapsed());
            s.write_all(&request).unwrap();
        }
        served
    });
    let mut client = ns.run(|| TcpStream::connect(addr).unwrap());
    client.set_nodelay(true).unwrap();
    let mut buf = [3u8; 64];
    for _ in 0..REQUESTS {
        client.write_all(&buf).unwrap();
        client.read_exact(&mut buf).unwrap();
    }
    let mut served = server.join().unwrap();
    served.sort();
    let server_p50_us = served[REQUESTS / 2].as_secs_f64() * 1e6;

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
    assert_eq!(
        measured.latency.samples, REQUESTS as u64,
        "one sample per request"
    );
    // Tolerance: the histogram's buckets are at most 25% wide, and the kernel's span adds the
    // read's return and the write itself (tens of µs on loopback): 25% + 100 µs.
    let diff = (measured.latency.p50_us - server_p50_us).abs();
    assert!(
        diff <= 0.25 * server_p50_us + 100.0,
        "eBPF p50 {} µs vs server {server_p50_us:.1} µs",
        measured.latency.p50_us
    );
    assert!(measured.latency.p50_us >= SERVICE.as_secs_f64() * 1e6 * 0.75);
}
