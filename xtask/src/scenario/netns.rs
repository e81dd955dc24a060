//! A network namespace the scenario creates and deletes (on drop, even on error or Ctrl-C), with
//! loopback up and optionally a veth pair to the host: the namespace gets its own address, the load
//! generator stays on the host side, and nothing leaves this machine.
//!
//! Reads inside the namespace go through a thread that entered it with setns(2) (a network
//! namespace can be entered per thread), so they cost a file read, not an `ip netns exec`.
use std::{
    fs::File,
    os::unix::fs::{FileExt, MetadataExt},
    path::PathBuf,
    process::Command,
    sync::atomic::{AtomicU32, Ordering},
};

use anyhow::{bail, Context, Result};

static NEXT: AtomicU32 = AtomicU32::new(0);

pub struct Netns {
    pub name: String,
    /// The host side of the veth pair, when there is one.
    host_if: Option<String>,
    /// (host address, namespace address) on the veth pair.
    pub addrs: Option<(String, String)>,
}

impl Netns {
    /// A fresh namespace `kpo-scn-PID-N` with loopback up; with `veth`, also a /30 veth pair
    /// 10.213.X.1 (host) – 10.213.X.2 (namespace).
    pub fn create(veth: bool) -> Result<Netns> {
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let pid = std::process::id();
        let name = format!("kpo-scn-{pid}-{n}");
        if PathBuf::from("/run/netns").join(&name).exists() {
            bail!("/run/netns/{name} already exists");
        }
        ip(&["netns", "add", &name])?;
        let mut ns = Netns {
            name,
            host_if: None,
            addrs: None,
        };
        ip(&["-n", &ns.name, "link", "set", "lo", "up"])?;
        if veth {
            // Interface names hold 15 bytes: "kpo" + n + "h" + pid fits.
            let host_if = format!("kpo{}h{}", n % 10, pid % 1_000_000);
            let ns_if = format!("kpo{}n{}", n % 10, pid % 1_000_000);
            let subnet = format!("10.213.{}", (pid as usize * 7 + n as usize) % 250);
            let (host_addr, ns_addr) = (format!("{subnet}.1"), format!("{subnet}.2"));
            let taken = String::from_utf8_lossy(
                &Command::new("ip")
                    .args(["-o", "-4", "addr", "show"])
                    .output()?
                    .stdout,
            )
            .contains(&format!(" {subnet}."));
            if taken {
                bail!("the host already has an address in {subnet}.0/24; pick another run");
            }
            ip(&[
                "link", "add", &host_if, "type", "veth", "peer", "name", &ns_if, "netns", &ns.name,
            ])?;
            ns.host_if = Some(host_if.clone());
            ip(&["addr", "add", &format!("{host_addr}/30"), "dev", &host_if])?;
            ip(&["link", "set", &host_if, "up"])?;
            ip(&[
                "-n",
                &ns.name,
                "addr",
                "add",
                &format!("{ns_addr}/30"),
                "dev",
                &ns_if,
            ])?;
            ip(&["-n", &ns.name, "link", "set", &ns_if, "up"])?;
            ns.addrs = Some((host_addr, ns_addr));
        }
        Ok(ns)
    }

    pub fn path(&self) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.name)
    }

    /// The namespace's inode, as KPO's events name it (`net.core.somaxconn@netns:INODE`).
    pub fn inode(&self) -> Result<u64> {
        Ok(std::fs::metadata(self.path())
            .with_context(|| self.path().display().to_string())?
            .ino())
    }

    /// Runs `f` on a thread inside the namespace.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> Result<T> + Send) -> Result<T> {
        let ns = File::open(self.path()).with_context(|| self.path().display().to_string())?;
        std::thread::scope(|s| {
            s.spawn(|| {
                nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET)
                    .context("setns into the scenario's namespace")?;
                f()
            })
            .join()
            .map_err(|_| anyhow::anyhow!("namespace thread panicked"))?
        })
    }

    /// `net.core.somaxconn` inside the namespace.
    pub fn somaxconn(&self) -> Result<i64> {
        self.run(read_somaxconn)
    }

    pub fn set_somaxconn(&self, value: i64) -> Result<()> {
        self.run(|| {
            std::fs::write(SOMAXCONN, value.to_string()).context("writing somaxconn")?;
            Ok(())
        })?;
        let now = self.somaxconn()?;
        if now != value {
            bail!(
                "somaxconn in {} reads {now} after writing {value}",
                self.name
            );
        }
        Ok(())
    }

    /// Runs a command inside the namespace (`ip netns exec`); its standard output.
    pub fn exec(&self, args: &[&str]) -> Result<String> {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.name])
            .args(args)
            .output()
            .with_context(|| format!("ip netns exec {} {args:?}", self.name))?;
        if !out.status.success() {
            bail!(
                "{args:?} in {}: {}",
                self.name,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The listener on `port` as `ss -ltn` prints it inside the namespace, and its Send-Q (for a
    /// listener: the accept-queue limit, min(backlog, somaxconn) at its last listen()).
    pub fn ss_listener(&self, port: u16) -> Result<(String, u32)> {
        let out = self.exec(&["ss", "-ltnH", "sport", "=", &format!(":{port}")])?;
        let line = out
            .lines()
            .find(|l| l.starts_with("LISTEN"))
            .with_context(|| format!("nothing listens on port {port} in the namespace"))?;
        let send_q = line
            .split_whitespace()
            .nth(2)
            .and_then(|v| v.parse().ok())
            .with_context(|| format!("no Send-Q in `{line}`"))?;
        Ok((
            line.split_whitespace().collect::<Vec<_>>().join(" "),
            send_q,
        ))
    }

    /// Deletes the namespace (and with it the veth pair) and checks it is gone.
    pub fn delete(&mut self) -> Result<()> {
        if !self.path().exists() {
            return Ok(());
        }
        ip(&["netns", "del", &self.name])?;
        if let Some(host_if) = self.host_if.take() {
            // Deleting the namespace deletes its end, and the pair with it; make sure.
            if std::path::Path::new("/sys/class/net")
                .join(&host_if)
                .exists()
            {
                let _ = ip(&["link", "del", &host_if]);
            }
        }
        if self.path().exists() {
            bail!("{} still exists after ip netns del", self.path().display());
        }
        Ok(())
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if let Err(e) = self.delete() {
            eprintln!("xtask: deleting namespace {}: {e:#}", self.name);
        }
    }
}

pub const SOMAXCONN: &str = "/proc/sys/net/core/somaxconn";

fn read_somaxconn() -> Result<i64> {
    Ok(std::fs::read_to_string(SOMAXCONN)?.trim().parse()?)
}

/// The host's somaxconn (this process's own namespace), which the scenario must never move.
pub fn host_somaxconn() -> Result<i64> {
    read_somaxconn()
}

/// `TcpExt: ListenOverflows` from /proc/net/netstat text (a header line of names, then values).
pub fn listen_overflows(text: &str) -> Result<u64> {
    let lines: Vec<&str> = text.lines().collect();
    for pair in lines.chunks(2) {
        let [names, values] = pair else { continue };
        let (Some(names), Some(values)) = (
            names.strip_prefix("TcpExt:"),
            values.strip_prefix("TcpExt:"),
        ) else {
            continue;
        };
        if let Some((_, v)) = names
            .split_whitespace()
            .zip(values.split_whitespace())
            .find(|(n, _)| *n == "ListenOverflows")
        {
            return Ok(v.parse()?);
        }
    }
    bail!("no TcpExt ListenOverflows in /proc/net/netstat")
}

/// Reads a /proc file again from its start, into `buf` (no reopening: an open /proc/sys/net or
/// /proc/thread-self/net file stays bound to the namespace it was opened in).
pub fn reread(file: &File, buf: &mut Vec<u8>) -> std::io::Result<()> {
    buf.clear();
    let mut chunk = [0u8; 4096];
    loop {
        let n = file.read_at(&mut chunk, buf.len() as u64)?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn ip(args: &[&str]) -> Result<()> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .context("running ip (iproute2)")?;
    if !out.status.success() {
        bail!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_listen_overflows_from_netstat() {
        let text = "TcpExt: SyncookiesSent ListenOverflows ListenDrops\nTcpExt: 0 17 19\n\
                    IpExt: InNoRoutes\nIpExt: 3\n";
        assert_eq!(listen_overflows(text).unwrap(), 17);
        assert!(listen_overflows("IpExt: A\nIpExt: 1\n").is_err());
    }
}
