//! The agent's limit on open files.
//!
//! Each network namespace the agent watches keeps descriptors open (its sock_diag socket, its
//! netstat file, its interface-name socket), so a node with a few hundred pods needs more than
//! the soft limit of 1024 that systemd and container runtimes give by default. Past it, every
//! open in the agent fails alike: /proc reads, the journal, new namespaces. The hard limit is
//! what the operator allows; the agent takes all of it, as Go's runtime does for every program.
use nix::sys::resource::{getrlimit, setrlimit, Resource};
use tracing::{info, warn};

/// Below this hard limit a large node's namespaces can still run out of descriptors.
pub const LOW_HARD_LIMIT: u64 = 65_536;

/// Below this hard limit the namespaces watched are few, or none.
const FEW_NAMESPACES_BELOW: u64 = 1024;

/// Raises the soft limit on open files to the hard limit. Returns the limits in force after.
pub fn raise_to_hard_limit() -> nix::Result<(u64, u64)> {
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard)?;
        info!("open files: soft limit raised from {soft} to the hard limit, {hard}");
    }
    if hard < LOW_HARD_LIMIT {
        // Below about 320 not one namespace fits beside the 256 kept for the agent's own work
        // and the 60 or so it holds (s60 story BS-5: the warning read as a risk for large nodes
        // while nothing at all was watched).
        let how_many = if hard < FEW_NAMESPACES_BELOW {
            "so few network namespaces are watched, and below about 320 none at all, the agent's \
             own included (no listener or namespace counter in any window)"
        } else {
            "so a node with many pods may run out"
        };
        warn!(
            "open files: the hard limit is {hard}; each watched network namespace keeps 3 open \
             and 256 are kept for the agent's own work, {how_many} (raise LimitNOFILE, or the \
             runtime's ulimit)"
        );
    }
    getrlimit(Resource::RLIMIT_NOFILE)
}

#[cfg(test)]
mod tests {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};

    /// The soft limit ends at the hard one. (This process's own limit, not a host setting: it is
    /// first set to half the hard limit, far more than any test here opens at once.)
    #[test]
    fn the_soft_limit_is_raised_to_the_hard_limit() {
        let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
        setrlimit(Resource::RLIMIT_NOFILE, hard / 2, hard).unwrap();
        let (soft, hard) = super::raise_to_hard_limit().unwrap();
        assert_eq!(soft, hard);
        assert_eq!(getrlimit(Resource::RLIMIT_NOFILE).unwrap(), (hard, hard));
    }
}
