//! wrk (the Debian package), bounded in connections and time, one new connection per request
//! (`Connection: close`) so that every request goes through the accept queue; its summary parsed.
use std::{
    process::{Child, Command, Stdio},
    time::Duration,
};

use anyhow::{bail, Context, Result};

use super::interrupt;

pub struct Load {
    pub url: String,
    pub connections: u32,
    pub duration: Duration,
    /// wrk's per-request timeout: a request slower than this counts as a timeout.
    pub timeout: Duration,
}

impl Load {
    pub fn describe(&self) -> String {
        format!(
            "wrk -t1 -c{} -d{}s --timeout {}s --latency -H 'Connection: close' {}",
            self.connections,
            self.duration.as_secs(),
            self.timeout.as_secs(),
            self.url
        )
    }
}

pub struct Running(Option<Child>);

impl Running {
    pub fn start(load: &Load) -> Result<Running> {
        let wrk = crate::bench::which("wrk").context("wrk is not installed")?;
        let mut cmd = Command::new(wrk);
        cmd.args([
            "-t1",
            &format!("-c{}", load.connections),
            &format!("-d{}s", load.duration.as_secs()),
            "--timeout",
            &format!("{}s", load.timeout.as_secs()),
            "--latency",
            "-H",
            "Connection: close",
            &load.url,
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        Ok(Running(Some(
            interrupt::own_group(&mut cmd)
                .spawn()
                .context("starting wrk")?,
        )))
    }

    /// Whether wrk has exited (its run is over).
    pub fn done(&mut self) -> Result<bool> {
        Ok(match &mut self.0 {
            Some(c) => c.try_wait()?.is_some(),
            None => true,
        })
    }

    pub fn finish(mut self) -> Result<WrkResult> {
        let child = self.0.take().context("wrk already collected")?;
        let out = child.wait_with_output()?;
        let text = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() {
            bail!(
                "wrk exited with {}: {}{}",
                out.status,
                text,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        parse(&text)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            // SAFETY: kill(2) on our own child, not yet reaped.
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            let _ = c.wait();
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct WrkResult {
    pub requests_per_s: f64,
    pub requests: u64,
    /// Latency of the requests that completed (wrk leaves timed-out ones out), ms.
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub connect_errors: u64,
    pub read_errors: u64,
    pub write_errors: u64,
    pub timeouts: u64,
    pub non_2xx: u64,
}

/// wrk's `--latency` summary.
pub fn parse(text: &str) -> Result<WrkResult> {
    let mut r = WrkResult::default();
    let mut rate = None;
    for line in text.lines() {
        let line = line.trim();
        if let Some(v) = line.strip_prefix("Requests/sec:") {
            rate = Some(v.trim().parse()?);
        } else if let Some(v) = line.strip_prefix("50%") {
            r.p50_ms = duration_ms(v.trim())?;
        } else if let Some(v) = line.strip_prefix("99%") {
            r.p99_ms = duration_ms(v.trim())?;
        } else if let Some(v) = line.strip_prefix("Socket errors:") {
            for part in v.split(',') {
                let mut words = part.split_whitespace();
                let (Some(what), Some(n)) = (words.next(), words.next()) else {
                    continue;
                };
                let n: u64 = n.parse()?;
                match what {
                    "connect" => r.connect_errors = n,
                    "read" => r.read_errors = n,
                    "write" => r.write_errors = n,
                    "timeout" => r.timeouts = n,
                    _ => {}
                }
            }
        } else if let Some(v) = line.strip_prefix("Non-2xx or 3xx responses:") {
            r.non_2xx = v.trim().parse()?;
        } else if line.contains(" requests in ") {
            r.requests = line
                .split_whitespace()
                .next()
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
        }
    }
    r.requests_per_s = rate.with_context(|| format!("wrk printed no Requests/sec:\n{text}"))?;
    Ok(r)
}

/// wrk's durations: `812.00us`, `1.23ms`, `1.05s`, `2.00m`.
fn duration_ms(v: &str) -> Result<f64> {
    let split = v
        .find(|c: char| c.is_ascii_alphabetic())
        .with_context(|| format!("no unit in `{v}`"))?;
    let (n, unit) = v.split_at(split);
    let n: f64 = n.parse().with_context(|| format!("`{v}`"))?;
    Ok(match unit {
        "us" => n / 1000.0,
        "ms" => n,
        "s" => n * 1000.0,
        "m" => n * 60_000.0,
        "h" => n * 3_600_000.0,
        _ => bail!("unknown unit in `{v}`"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// wrk 4.1's output, as printed on Debian 12 (numbers from a run of the scenario).
    const SAMPLE: &str = "Running 20s test @ http://10.213.1.2:18081/
  1 threads and 120 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency    95.21ms  250.11ms   1.99s    93.10%
    Req/Sec     2.10k   312.00     2.90k    70.00%
  Latency Distribution
     50%    8.12ms
     75%   12.40ms
     90%   30.00ms
     99%    1.03s
  41234 requests in 20.01s, 5.98MB read
  Socket errors: connect 0, read 3, write 0, timeout 41
  Non-2xx or 3xx responses: 2
Requests/sec:   2060.67
Transfer/sec:    306.00KB
";

    #[test]
    fn parses_the_summary() {
        let r = parse(SAMPLE).unwrap();
        assert_eq!(
            r,
            WrkResult {
                requests_per_s: 2060.67,
                requests: 41234,
                p50_ms: 8.12,
                p99_ms: 1030.0,
                connect_errors: 0,
                read_errors: 3,
                write_errors: 0,
                timeouts: 41,
                non_2xx: 2,
            }
        );
        assert_eq!(duration_ms("812.00us").unwrap(), 0.812);
        assert!(parse("no summary").is_err());
    }
}
