//! One agent per network namespace.
//!
//! The state directory's lock keeps two agents off one journal, and the control socket off one
//! path, but two agents started with different state directories and sockets (a host service and
//! a pod with host networking, or a second `kpo run --state-dir` for a try) would both change,
//! journal, guard and revert the same kernel parameters, each without knowing of the other. So
//! `kpo run` first binds an abstract unix socket, `@kpo-agent`, and holds it for its life.
//!
//! Why an abstract socket and not a lock file: its name lives in the network namespace, which is
//! what the agent's own net.* sysctls belong to, so it is shared by every agent in that namespace,
//! even from different mount namespaces (a pod's /run is not the host's); and the kernel releases
//! it when the process ends, however it ends, so a killed agent never leaves a stale claim. An
//! agent in another network namespace does not see it, though host-wide parameters (vm.*,
//! cpufreq) are shared: the README asks for one agent per node, in the host's namespace.
use std::{
    os::{
        linux::net::SocketAddrExt,
        unix::net::{SocketAddr, UnixListener},
    },
    path::Path,
};

use nix::sys::socket::{
    connect, getsockopt, socket, sockopt::PeerCredentials, AddressFamily, SockFlag, SockType,
    UnixAddr,
};

/// The abstract name the running agent holds.
pub const NAME: &str = "kpo-agent";

#[derive(Debug, thiserror::Error)]
pub enum ClaimError {
    #[error(
        "another kpo agent{holder} runs in this network namespace (it holds the abstract socket \
         @{name}): two agents would change, journal and revert the same kernel parameters without \
         knowing of each other; stop it first"
    )]
    AnotherAgent { name: String, holder: String },
    #[error("cannot bind the abstract socket @{name} that marks the running agent: {source}")]
    Io {
        name: String,
        source: std::io::Error,
    },
}

/// Held for the agent's life.
#[derive(Debug)]
pub struct Claim {
    _listener: Option<UnixListener>,
    /// Set when the name is held by a process that cannot be a kpo agent, which the agent
    /// starts beside (see [`claim`]): what to warn of.
    pub squatted: Option<String>,
}

/// Claims this network namespace for this agent.
///
/// Abstract names have no permissions: any process in the namespace may take this one first.
/// One that is neither root nor this process's user cannot be a kpo agent (`kpo run` needs
/// root), and refusing to start beside it would let any user keep the node's agent from
/// running, so the agent starts without the claim and says so: a second agent started while
/// that process holds the name is not seen.
pub fn claim() -> Result<Claim, ClaimError> {
    claim_name(NAME)
}

/// Whether a kpo agent holds the name in this network namespace now (the claim is taken and
/// given back at once): for callers that must not run beside an agent, such as the integration
/// tests.
pub fn is_claimed() -> bool {
    matches!(claim_name(NAME), Err(ClaimError::AnotherAgent { .. }))
}

fn claim_name(name: &str) -> Result<Claim, ClaimError> {
    let io = |source| ClaimError::Io {
        name: name.to_string(),
        source,
    };
    let addr = SocketAddr::from_abstract_name(name.as_bytes()).map_err(io)?;
    match UnixListener::bind_addr(&addr) {
        Ok(listener) => Ok(Claim {
            _listener: Some(listener),
            squatted: None,
        }),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
            let me = nix::unistd::Uid::effective().as_raw();
            match holder(name) {
                Holder::Process { uid, text } if uid != 0 && uid != me => Ok(Claim {
                    _listener: None,
                    squatted: Some(squatted_warning(name, &format!("{text}, uid {uid}"))),
                }),
                Holder::NotListening { text } => Ok(Claim {
                    _listener: None,
                    squatted: Some(squatted_warning(
                        name,
                        &format!("{text}, which does not listen on it as an agent does"),
                    )),
                }),
                Holder::Process { text, .. } | Holder::Unknown { text } => {
                    Err(ClaimError::AnotherAgent {
                        name: name.to_string(),
                        holder: text,
                    })
                }
            }
        }
        Err(e) => Err(io(e)),
    }
}

fn squatted_warning(name: &str, holder: &str) -> String {
    format!(
        "the abstract socket @{name} that marks the running kpo agent is held by a process that \
         cannot be one{holder}; starting without it: another agent started in this network \
         namespace meanwhile would not be seen (stop that process)"
    )
}

/// Who holds the name, as far as this process can tell.
enum Holder {
    /// The credentials the kernel gives a connection, or the process owning the socket.
    Process { uid: u32, text: String },
    /// Bound but not listening: a kpo agent listens.
    NotListening { text: String },
    /// Listening, and no process seen (another PID namespace, or its queue of unaccepted
    /// connections is full and the owner is out of sight): taken for an agent.
    Unknown { text: String },
}

/// First the credentials the kernel gives a connection (the holder need not accept it, and
/// they are given across PID namespaces). A connection fails when the holder does not listen,
/// or its queue of unaccepted connections is full (it does not wait for room, since the agent
/// never accepts; every refused start leaves one there until it exits): then /proc/net/unix
/// says whether the socket listens, and the processes' descriptors who holds it.
fn holder(name: &str) -> Holder {
    if let Some((uid, pid)) = peer_credentials(name) {
        return Holder::Process {
            uid,
            text: describe(pid),
        };
    }
    let Some((inode, listening)) = bound_socket(Path::new("/proc/self/net/unix"), name) else {
        return Holder::Unknown {
            text: String::new(),
        };
    };
    let owner = socket_owner(Path::new("/proc"), inode);
    let text = owner.map(|(pid, _)| describe(pid)).unwrap_or_default();
    match owner {
        _ if !listening => Holder::NotListening { text },
        Some((_, uid)) => Holder::Process { uid, text },
        None => Holder::Unknown { text },
    }
}

fn peer_credentials(name: &str) -> Option<(u32, i32)> {
    let fd = socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
        None,
    )
    .ok()?;
    connect(
        std::os::fd::AsRawFd::as_raw_fd(&fd),
        &UnixAddr::new_abstract(name.as_bytes()).ok()?,
    )
    .ok()?;
    let cred = getsockopt(&fd, PeerCredentials).ok()?;
    Some((cred.uid(), cred.pid()))
}

/// The inode of the socket bound to `@name` in `unix_table` (/proc/net/unix), and whether it
/// listens (`__SO_ACCEPTCON` in its flags). The server end of each connection made to it is
/// listed under the same name, so a listening one is taken first.
fn bound_socket(unix_table: &Path, name: &str) -> Option<(u64, bool)> {
    const SO_ACCEPTCON: u32 = 1 << 16;
    let table = std::fs::read_to_string(unix_table).ok()?;
    let path = format!("@{name}");
    let bound = table.lines().skip(1).filter_map(|line| {
        // Num RefCount Protocol Flags Type St Inode Path
        let fields: Vec<&str> = line.split_whitespace().collect();
        (fields.len() == 8 && fields[7] == path).then_some(())?;
        let flags = u32::from_str_radix(fields[3], 16).ok()?;
        let inode = fields[6].parse().ok()?;
        Some((inode, flags & SO_ACCEPTCON != 0))
    });
    bound.max_by_key(|&(_, listening)| listening)
}

/// The first process under `proc_root` with a descriptor on socket `inode`, and its uid.
fn socket_owner(proc_root: &Path, inode: u64) -> Option<(i32, u32)> {
    let target = format!("socket:[{inode}]");
    for entry in std::fs::read_dir(proc_root).ok()?.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|p| p.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else {
            continue;
        };
        let holds = fds.flatten().any(|fd| {
            std::fs::read_link(fd.path()).is_ok_and(|l| l.as_os_str() == target.as_str())
        });
        if holds {
            return Some((pid, effective_uid(&entry.path().join("status"))?));
        }
    }
    None
}

/// The effective uid in a /proc/PID/status (its directory's owner is root's while a process
/// that changed its user is not dumpable).
fn effective_uid(status: &Path) -> Option<u32> {
    let status = std::fs::read_to_string(status).ok()?;
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    line.split_whitespace().nth(2)?.parse().ok()
}

/// ` (pid N: its command line)`; empty when the holder is in a PID namespace this one does not
/// see (pid 0).
fn describe(pid: i32) -> String {
    if pid <= 0 {
        return String::new();
    }
    let command = std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|raw| {
            raw.split(|&b| b == 0)
                .filter(|arg| !arg.is_empty())
                .map(String::from_utf8_lossy)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default();
    if command.is_empty() {
        format!(" (pid {pid})")
    } else {
        format!(" (pid {pid}: {})", crate::shown::escaped(&command))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A name of the test's own, so that a running agent or a parallel test cannot interfere.
    fn test_name(what: &str) -> String {
        format!("kpo-agent-test-{what}-{}", std::process::id())
    }

    /// A child forked while a claim is open holds its socket until it execs, so a test that
    /// gives a claim back does not run while another spawns its squatters.
    static FORKS: std::sync::Mutex<()> = std::sync::Mutex::new(());

    #[test]
    fn a_second_claim_is_refused_and_names_the_holder_until_the_first_ends() {
        let _forks = FORKS.lock().unwrap_or_else(|e| e.into_inner());
        let name = test_name("second");
        let first = claim_name(&name).expect("the name is free");
        // The holder is this process, so of this user: taken for an agent, root or not.
        let me = format!("(pid {}: ", std::process::id());
        match claim_name(&name) {
            Err(e @ ClaimError::AnotherAgent { .. }) => {
                let text = e.to_string();
                assert!(
                    text.starts_with(&format!("another kpo agent {me}")),
                    "{text}"
                );
                assert!(text.contains(&format!("@{name}")), "{text}");
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
        drop(first);
        claim_name(&name).expect("free again once the holder is gone");
    }

    /// `sleep 60` as uid 65534 holding `@name` (bound in the child before it runs sleep), and
    /// listening with `backlog` unless None; killed when dropped.
    struct Squatter(std::process::Child);

    impl Squatter {
        fn spawn(name: &str, backlog: Option<i32>) -> Self {
            use std::os::unix::process::CommandExt;
            let address = UnixAddr::new_abstract(name.as_bytes()).unwrap();
            let mut command = std::process::Command::new("sleep");
            command.arg("60");
            // SAFETY: only async-signal-safe calls between fork and exec.
            unsafe {
                command.pre_exec(move || {
                    let nobody = 65534;
                    nix::unistd::setgroups(&[])?;
                    nix::unistd::setgid(nix::unistd::Gid::from_raw(nobody))?;
                    nix::unistd::setuid(nix::unistd::Uid::from_raw(nobody))?;
                    // Not close-on-exec: sleep holds it.
                    let fd = socket(
                        AddressFamily::Unix,
                        SockType::Stream,
                        SockFlag::empty(),
                        None,
                    )?;
                    nix::sys::socket::bind(std::os::fd::AsRawFd::as_raw_fd(&fd), &address)?;
                    if let Some(backlog) = backlog {
                        let backlog = nix::sys::socket::Backlog::new(backlog)?;
                        nix::sys::socket::listen(&fd, backlog)?;
                    }
                    std::mem::forget(fd);
                    Ok(())
                });
            }
            Squatter(command.spawn().expect("the squatter starts"))
        }
    }

    impl Drop for Squatter {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    /// Defect (s46 storyI F4): any user could keep the agent from starting by binding its
    /// abstract name first. A holder that cannot be an agent (not root, not this user, or not
    /// listening) is started beside, with a warning naming it: whether it listens, does not,
    /// or listens with its queue full, so that the kernel gives no credentials to a connection
    /// and the holder is found through /proc.
    #[test]
    fn a_holder_that_cannot_be_an_agent_is_started_beside_and_named() {
        if !nix::unistd::Uid::effective().is_root() {
            kpo_test_skip::skip(
                "a holder of another user's is made by becoming that user, as root",
            );
            return;
        }
        let _forks = FORKS.lock().unwrap_or_else(|e| e.into_inner());
        for (what, backlog, says) in [
            ("listening", Some(8), "uid 65534"),
            ("bound", None, "which does not listen on it"),
            ("full", Some(0), "uid 65534"),
        ] {
            let name = test_name(what);
            let squatter = Squatter::spawn(&name, backlog);
            // Fills its queue: a connection the kernel refuses gives no credentials.
            let mut queued = Vec::new();
            if backlog == Some(0) {
                loop {
                    let fd = socket(
                        AddressFamily::Unix,
                        SockType::Stream,
                        SockFlag::SOCK_NONBLOCK,
                        None,
                    )
                    .unwrap();
                    let address = UnixAddr::new_abstract(name.as_bytes()).unwrap();
                    if connect(std::os::fd::AsRawFd::as_raw_fd(&fd), &address).is_err() {
                        break;
                    }
                    queued.push(fd);
                }
                assert!(peer_credentials(&name).is_none(), "the queue is full");
            }
            let claim = claim_name(&name).expect("started beside it");
            let warning = claim.squatted.clone().expect("a warning");
            let pid = squatter.0.id();
            assert!(
                warning.contains(&format!("cannot be one (pid {pid}: sleep 60)")),
                "{what}: {warning}"
            );
            assert!(warning.contains(says), "{what}: {warning}");
            assert!(warning.contains(&format!("@{name}")), "{what}: {warning}");
            drop(squatter);
            drop(queued);
        }
    }

    #[test]
    fn the_bound_socket_and_whether_it_listens_are_read_from_proc_net_unix() {
        let dir = tempfile::tempdir().unwrap();
        let table = dir.path().join("unix");
        std::fs::write(
            &table,
            "Num       RefCount Protocol Flags    Type St Inode Path\n\
             0000000000000000: 00000003 00000000 00000000 0001 03 28337 @kpo-agent\n\
             0000000000000000: 00000002 00000000 00010000 0001 01 28334 @kpo-agent\n\
             0000000000000000: 00000002 00000000 00000000 0001 01 28335 @kpo-agent-x\n\
             0000000000000000: 00000002 00000000 00000000 0002 01 28336 /run/x.sock\n",
        )
        .unwrap();
        assert_eq!(bound_socket(&table, "kpo-agent"), Some((28334, true)));
        assert_eq!(bound_socket(&table, "kpo-agent-x"), Some((28335, false)));
        assert_eq!(bound_socket(&table, "kpo-agent-y"), None);
    }
}
