//! One agent per network namespace.
//!
//! The state directory's lock keeps two agents off one journal, and the control socket off one
//! path, but two agents started with different state directories and sockets (a host service and
//! a pod with host networking, or a second `kpo run --state-dir` for a try) would both change,
//! journal, guard and revert the same kernel parameters, each without knowing of the other. So
//! `kpo run` first binds an abstract unix socket, `@kpo-agent`, and holds it for its life.
//!
//! Why an abstract socket and not a lock file: its name lives in the network namespace, which is
//! what the agent's own sysctls belong to, so it is shared by every agent that manages them, even
//! from different mount namespaces (a pod's /run is not the host's); and the kernel releases it
//! when the process ends, however it ends, so a killed agent never leaves a stale claim.
use std::os::{
    linux::net::SocketAddrExt,
    unix::net::{SocketAddr, UnixListener, UnixStream},
};

use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};

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
    _listener: UnixListener,
}

/// Claims this network namespace for this agent.
pub fn claim() -> Result<Claim, ClaimError> {
    claim_name(NAME)
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
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => Err(ClaimError::AnotherAgent {
            name: name.to_string(),
            holder: describe_holder(&addr),
        }),
        Err(e) => Err(io(e)),
    }
}

/// ` (pid N: its command line)` of the socket's holder, from the credentials the kernel gives a
/// connection (the holder need not accept it); empty when they cannot be read, or when the holder
/// is in a PID namespace this one does not see (pid 0).
fn describe_holder(addr: &SocketAddr) -> String {
    let Ok(stream) = UnixStream::connect_addr(addr) else {
        return String::new();
    };
    let Ok(cred) = getsockopt(&stream, PeerCredentials) else {
        return String::new();
    };
    let pid = cred.pid();
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
        match claim_name(&name) {
            Err(e @ ClaimError::AnotherAgent { .. }) => {
                let text = e.to_string();
                let me = format!("another kpo agent (pid {}: ", std::process::id());
                assert!(text.starts_with(&me), "{text}");
                assert!(text.contains(&format!("@{name}")), "{text}");
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
        drop(first);
        claim_name(&name).expect("free again once the holder is gone");
    }
}
