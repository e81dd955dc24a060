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
use std::os::{
    linux::net::SocketAddrExt,
    unix::net::{SocketAddr, UnixListener},
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
    /// Abstract names have no permissions: any process in the namespace can take this one.
    #[error(
        "the abstract socket @{name} that marks the running kpo agent is held by a process that is \
         not root{holder}, so not by a kpo agent; stop that process"
    )]
    Squatted { name: String, holder: String },
    #[error("cannot bind the abstract socket @{name} that marks the running agent: {source}")]
    Io {
        name: String,
        source: std::io::Error,
    },
}

/// Held for the agent's life.
#[derive(Debug)]
pub struct Claim {
    _listener: UnixListener,
}

/// Claims this network namespace for this agent.
pub fn claim() -> Result<Claim, ClaimError> {
    claim_name(NAME)
}

/// Whether something holds the name in this network namespace now (the claim is taken and given
/// back at once): for callers that must not run beside an agent, such as the integration tests.
pub fn is_claimed() -> bool {
    matches!(
        claim_name(NAME),
        Err(ClaimError::AnotherAgent { .. } | ClaimError::Squatted { .. })
    )
}

fn claim_name(name: &str) -> Result<Claim, ClaimError> {
    let io = |source| ClaimError::Io {
        name: name.to_string(),
        source,
    };
    let addr = SocketAddr::from_abstract_name(name.as_bytes()).map_err(io)?;
    match UnixListener::bind_addr(&addr) {
        Ok(listener) => Ok(Claim {
            _listener: listener,
        }),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
            let name = name.to_string();
            Err(match holder(&name) {
                Some((uid, holder)) if uid != 0 => ClaimError::Squatted { name, holder },
                found => ClaimError::AnotherAgent {
                    name,
                    holder: found.map(|(_, h)| h).unwrap_or_default(),
                },
            })
        }
        Err(e) => Err(io(e)),
    }
}

/// The holder's uid and ` (pid N: its command line)`, from the credentials the kernel gives a
/// connection (the holder need not accept it). `None` when they cannot be read: among others when
/// the holder's queue of unaccepted connections is full (the connection does not wait for room,
/// since the agent never accepts; every refused start leaves one there until it exits). The
/// text is empty when the holder is in a PID namespace this one does not see (pid 0).
fn holder(name: &str) -> Option<(u32, String)> {
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
    Some((cred.uid(), describe(cred.pid())))
}

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
        format!(" (pid {pid}: {command})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_claim_is_refused_and_names_the_holder_until_the_first_ends() {
        // A name of this test's own, so that a running agent or a parallel test cannot interfere.
        let name = format!("kpo-agent-test-{}", std::process::id());
        let first = claim_name(&name).expect("the name is free");
        // The holder is this process: a kpo agent if it runs as root, a squatter otherwise.
        let me = format!("(pid {}: ", std::process::id());
        match (claim_name(&name), nix::unistd::Uid::effective().is_root()) {
            (Err(e @ ClaimError::AnotherAgent { .. }), true) => {
                let text = e.to_string();
                assert!(
                    text.starts_with(&format!("another kpo agent {me}")),
                    "{text}"
                );
                assert!(text.contains(&format!("@{name}")), "{text}");
            }
            (Err(e @ ClaimError::Squatted { .. }), false) => {
                let text = e.to_string();
                assert!(text.contains(&format!("not root {me}")), "{text}");
                assert!(text.contains(&format!("@{name}")), "{text}");
            }
            (other, root) => panic!("expected a refusal (root: {root}), got {other:?}"),
        }
        drop(first);
        claim_name(&name).expect("free again once the holder is gone");
    }
}
