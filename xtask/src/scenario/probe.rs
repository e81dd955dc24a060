//! A paced probe beside wrk: one new connection and one HTTP request at a time, timed from
//! connect() to the end of the response. wrk times a request from its write, after the connection
//! is up, so it never sees what a listen overflow costs a client: its SYN is dropped and resent a
//! second later (then 3 s, 7 s). The probe, a fair sample of new connections, does.
use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

/// Requests per second the probe sends (sequentially; a slow one delays the next).
pub const RATE: u32 = 20;
/// A probe request slower than this counts as timed out.
pub const TIMEOUT: Duration = Duration::from_secs(5);

pub struct Probe {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<ProbeResult>>,
}

#[derive(Debug, Default, Clone)]
pub struct ProbeResult {
    /// When each completed request started, and its connect-to-response time in ms.
    pub latencies_ms: Vec<(Instant, f64)>,
    pub errors: u64,
    pub timeouts: u64,
}

impl ProbeResult {
    /// The `p`th percentile (nearest rank) of the requests that started at or after `since`.
    pub fn percentile(&self, p: f64, since: Option<Instant>) -> Option<f64> {
        let mut v: Vec<f64> = self
            .latencies_ms
            .iter()
            .filter(|(at, _)| since.is_none_or(|s| *at >= s))
            .map(|&(_, ms)| ms)
            .collect();
        if v.is_empty() {
            return None;
        }
        v.sort_by(|a, b| a.total_cmp(b));
        let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
        Some(v[rank.clamp(1, v.len()) - 1])
    }
}

impl Probe {
    pub fn start(addr: SocketAddr) -> Probe {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut result = ProbeResult::default();
            let interval = Duration::from_secs(1) / RATE;
            let mut next = Instant::now();
            while !flag.load(Ordering::Relaxed) {
                let started = Instant::now();
                match request(addr) {
                    Ok(()) => {
                        let ms = started.elapsed().as_secs_f64() * 1000.0;
                        if started.elapsed() > TIMEOUT {
                            result.timeouts += 1;
                        } else {
                            result.latencies_ms.push((started, ms));
                        }
                    }
                    Err(e) if is_timeout(&e) => result.timeouts += 1,
                    Err(_) => result.errors += 1,
                }
                next += interval;
                let now = Instant::now();
                if next > now {
                    std::thread::sleep(next - now);
                } else {
                    next = now;
                }
            }
            result
        });
        Probe {
            stop,
            thread: Some(thread),
        }
    }

    pub fn finish(mut self) -> ProbeResult {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .take()
            .and_then(|t| t.join().ok())
            .unwrap_or_default()
    }
}

impl Drop for Probe {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn request(addr: SocketAddr) -> std::io::Result<()> {
    let mut s = TcpStream::connect_timeout(&addr, TIMEOUT)?;
    s.set_read_timeout(Some(TIMEOUT))?;
    s.set_write_timeout(Some(TIMEOUT))?;
    s.write_all(b"GET / HTTP/1.0\r\nHost: probe\r\n\r\n")?;
    let mut response = Vec::new();
    s.read_to_end(&mut response)?;
    if !response.starts_with(b"HTTP/1.1 200") {
        return Err(std::io::Error::other("not a 200 response"));
    }
    Ok(())
}

fn is_timeout(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let t0 = Instant::now();
        let at = |i: u32| t0 + Duration::from_millis(u64::from(i));
        let r = ProbeResult {
            latencies_ms: (1..=100).map(|i| (at(i), f64::from(i))).collect(),
            ..ProbeResult::default()
        };
        assert_eq!(r.percentile(50.0, None), Some(50.0));
        assert_eq!(r.percentile(99.0, None), Some(99.0));
        // Only the last ten: 91..=100.
        assert_eq!(r.percentile(50.0, Some(at(91))), Some(95.0));
        assert_eq!(ProbeResult::default().percentile(50.0, None), None);
    }
}
