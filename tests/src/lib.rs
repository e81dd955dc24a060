//! Helpers for KPO's root integration tests: requirements that decide whether a test can run here,
//! network namespaces removed on drop (even after a panic), and the kernel's own counters.
use std::{
    fs::File,
    os::unix::fs::MetadataExt,
    process::{Command, Output},
    sync::atomic::{AtomicU32, Ordering},
};

pub use libtest_mimic::{Arguments, Trial};

/// A reason the test cannot run here, or None if it can.
pub fn needs_root_and_btf() -> Option<String> {
    if !nix::unistd::Uid::effective().is_root() {
        return Some("needs root (loads eBPF, creates network namespaces)".into());
    }
    if !std::path::Path::new("/sys/kernel/btf/vmlinux").exists() {
        return Some("this kernel has no BTF at /sys/kernel/btf/vmlinux".into());
    }
    if !command_exists("ip") || !command_exists("ss") {
        return Some("iproute2 (ip, ss) is not installed; run cargo xtask setup".into());
    }
    no_agent_running()
}

/// For tests that load KPO's programs or start `kpo run`: an agent already running here would
/// mix its programs with theirs and refuse the agents they start.
pub fn no_agent_running() -> Option<String> {
    kpo_agent::run::one_agent::is_claimed().then(|| {
        format!(
            "a kpo agent already runs in this network namespace (it holds @{})",
            kpo_agent::run::one_agent::NAME
        )
    })
}

/// Root alone (system-wide perf events).
pub fn needs_root() -> Option<String> {
    (!nix::unistd::Uid::effective().is_root())
        .then(|| "needs root (system-wide perf events)".to_string())
}

/// For the ethtool netlink tests: root and iproute2 (namespaces), the `ethtool` tool as the
/// reference, and `device` if one is to be read.
pub fn needs_root_and_ethtool(device: Option<&str>) -> Option<String> {
    if !nix::unistd::Uid::effective().is_root() {
        return Some("needs root (creates network namespaces, opens netlink)".into());
    }
    if !command_exists("ip") {
        return Some("iproute2 (ip) is not installed; run cargo xtask setup".into());
    }
    if !command_exists("ethtool") {
        return Some("ethtool is not installed; run cargo xtask setup".into());
    }
    if let Some(dev) = device {
        if !std::path::Path::new("/sys/class/net").join(dev).exists() {
            return Some(format!("this machine has no {dev}"));
        }
    }
    None
}

/// Raises this process's open-file limit to `needed` descriptors (the soft limit up to the hard
/// one, the hard one too where allowed); the reason when it cannot.
pub fn needs_descriptors(needed: u64) -> Option<String> {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (soft, hard) = match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok(limits) => limits,
        Err(e) => return Some(format!("cannot read RLIMIT_NOFILE: {e}")),
    };
    if soft >= needed {
        return None;
    }
    match setrlimit(Resource::RLIMIT_NOFILE, needed, hard.max(needed)) {
        Ok(()) => None,
        Err(e) => Some(format!(
            "needs {needed} open files; RLIMIT_NOFILE is {soft} (hard {hard}) and could not be \
             raised: {e}"
        )),
    }
}

pub fn command_exists(name: &str) -> bool {
    Command::new(name).arg("-V").output().is_ok()
}

/// A test that runs only when `requirement` is met; otherwise it is listed as ignored and the
/// reason is printed.
pub fn trial(name: &str, requirement: Option<String>, test: fn()) -> Trial {
    let ignored = requirement.is_some();
    if let Some(reason) = &requirement {
        println!("SKIPPED {name}: {reason}");
    }
    Trial::test(name, move || {
        test();
        Ok(())
    })
    .with_ignored_flag(ignored)
}

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A network namespace with loopback up, deleted on drop.
pub struct Netns {
    pub name: String,
}

impl Default for Netns {
    fn default() -> Self {
        Self::new()
    }
}

impl Netns {
    pub fn new() -> Netns {
        let name = format!(
            "kpo-t{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        );
        run_ok("ip", &["netns", "add", &name]);
        let ns = Netns { name };
        run_ok("ip", &["-n", &ns.name, "link", "set", "lo", "up"]);
        ns
    }

    pub fn inum(&self) -> u64 {
        std::fs::metadata(format!("/run/netns/{}", self.name))
            .expect("netns file")
            .ino()
    }

    /// Runs `f` on a thread inside the namespace; sockets it creates belong to the namespace.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        let ns = File::open(format!("/run/netns/{}", self.name)).expect("open netns");
        std::thread::scope(|s| {
            s.spawn(|| {
                nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
                f()
            })
            .join()
            .expect("namespace thread")
        })
    }

    /// Runs a command inside the namespace and returns its standard output.
    pub fn exec(&self, cmd: &[&str]) -> String {
        let mut args = vec!["netns", "exec", &self.name];
        args.extend_from_slice(cmd);
        String::from_utf8(run_ok("ip", &args).stdout).expect("utf-8 output")
    }

    /// The namespace's `/proc/net/netstat` counter `name` (e.g. "TcpExtListenDrops").
    pub fn netstat(&self, name: &str) -> u64 {
        let text = self.exec(&["cat", "/proc/net/netstat"]);
        netstat_value(&text, name).unwrap_or_else(|| panic!("{name} not in netstat"))
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Quietly: a test may have deleted the name itself (`ip netns del`).
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .stderr(std::process::Stdio::null())
            .status();
    }
}

pub fn run_ok(cmd: &str, args: &[&str]) -> Output {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{cmd}: {e}"));
    assert!(
        out.status.success(),
        "{cmd} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Looks up `TcpExtListenDrops`-style names in /proc/net/netstat text.
pub fn netstat_value(text: &str, name: &str) -> Option<u64> {
    let lines: Vec<&str> = text.lines().collect();
    for pair in lines.chunks(2) {
        let [header, values] = pair else { continue };
        let (prefix, names) = header.split_once(':')?;
        let (_, vals) = values.split_once(':')?;
        for (n, v) in names.split_whitespace().zip(vals.split_whitespace()) {
            if format!("{prefix}{n}") == name {
                return v.parse().ok();
            }
        }
    }
    None
}

/// One listener line of `ss -ltnm`: (Recv-Q, Send-Q, drops `d<N>`), for the local port.
pub fn ss_listener(ss_ltnm: &str, port: u16) -> Option<(u32, u32, u64)> {
    let lines: Vec<&str> = ss_ltnm.lines().collect();
    for (i, line) in lines.iter().enumerate() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() < 4 || fields[0] != "LISTEN" {
            continue;
        }
        if !fields[3].ends_with(&format!(":{port}")) {
            continue;
        }
        let recv_q = fields[1].parse().ok()?;
        let send_q = fields[2].parse().ok()?;
        // skmem is on the same line or the next: skmem:(r0,rb..,d12)
        let skmem = fields
            .iter()
            .find(|f| f.starts_with("skmem:"))
            .map(|s| s.to_string())
            .or_else(|| lines.get(i + 1).map(|l| l.trim().to_string()))?;
        let drops = skmem
            .trim_start_matches("skmem:(")
            .trim_end_matches(')')
            .split(',')
            .find_map(|f| f.strip_prefix('d'))
            .and_then(|d| d.parse().ok())?;
        return Some((recv_q, send_q, drops));
    }
    None
}

/// Starts a non-blocking connect to 127.0.0.1:`port` in the calling thread's namespace; the
/// socket is returned whether or not the handshake completes (std has no non-blocking connect).
pub fn connect_nonblocking(port: u16) -> std::os::fd::OwnedFd {
    use std::os::fd::FromRawFd;
    // SAFETY: plain socket calls on a descriptor this function owns from its creation; the
    // address is a live, fully initialised sockaddr_in whose size is passed with it.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_NONBLOCK, 0) };
    assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
    let addr = libc::sockaddr_in {
        sin_family: libc::AF_INET as u16,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(std::net::Ipv4Addr::LOCALHOST).to_be(),
        },
        sin_zero: [0; 8],
    };
    let len = std::mem::size_of::<libc::sockaddr_in>() as u32;
    unsafe {
        libc::connect(fd, (&addr as *const libc::sockaddr_in).cast(), len);
        std::os::fd::OwnedFd::from_raw_fd(fd)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ss_ltnm() {
        let text = "State  Recv-Q Send-Q Local Address:Port Peer Address:PortProcess\n\
LISTEN 9      8          127.0.0.1:4000      0.0.0.0:*    \n\
\t skmem:(r0,rb131072,t0,tb16384,f0,w0,o0,bl0,d51)\n";
        assert_eq!(ss_listener(text, 4000), Some((9, 8, 51)));
        assert_eq!(ss_listener(text, 4001), None);
    }

    #[test]
    fn parses_netstat() {
        let text = "TcpExt: SyncookiesSent ListenOverflows ListenDrops\nTcpExt: 0 7 9\n";
        assert_eq!(netstat_value(text, "TcpExtListenDrops"), Some(9));
        assert_eq!(netstat_value(text, "TcpExtListenOverflows"), Some(7));
    }
}
