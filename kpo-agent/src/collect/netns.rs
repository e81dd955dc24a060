//! Network namespaces on the host, each with a sock_diag socket and its own /proc/net/netstat,
//! opened once from inside the namespace.
//!
//! Netlink sockets and /proc/<tid>/net files bind to the namespace of the thread that opens them,
//! so a short-lived thread enters each new namespace (setns), opens both, and leaves; the handles
//! keep reporting on that namespace afterwards without any further setns.
use std::{
    collections::BTreeMap,
    fs::File,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
};

use netlink_sys::Socket;
use tracing::debug;

use super::sockdiag::{self, DiagListener, SockDiagError};
use crate::kernel_file::{self, limit, KernelFileError};

/// The namespace's netstat, opened from a thread inside it (`self` follows the main thread).
const NETSTAT_IN_NETNS: &str = "/proc/thread-self/net/netstat";

pub struct NetnsHandle {
    pub inum: u64,
    diag: Socket,
    netstat: File,
}

impl NetnsHandle {
    pub fn listeners(&self) -> Result<Vec<DiagListener>, SockDiagError> {
        sockdiag::dump_listeners(&self.diag)
    }

    /// The namespace's `TcpExt` counters (`/proc/net/netstat` as seen from inside).
    pub fn netstat_text(&mut self) -> Result<String, KernelFileError> {
        kernel_file::reread_text(&mut self.netstat, Path::new(NETSTAT_IN_NETNS), limit::FIXED)
    }
}

#[derive(Default)]
pub struct NetnsSet {
    handles: BTreeMap<u64, NetnsHandle>,
    /// Namespaces that could not be entered, with the reason, so it is logged once.
    failed: BTreeMap<u64, String>,
}

impl NetnsSet {
    /// Finds the namespaces in use (by any process, or bind-mounted under /run/netns), opens
    /// handles for new ones and drops those that are gone.
    pub fn refresh(&mut self, proc_root: &Path) {
        let found = discover(proc_root);
        self.handles.retain(|inum, _| found.contains_key(inum));
        self.failed.retain(|inum, _| found.contains_key(inum));
        for (inum, path) in found {
            if self.handles.contains_key(&inum) || self.failed.contains_key(&inum) {
                continue;
            }
            match open_in(&path) {
                Ok((diag, netstat)) => {
                    self.handles.insert(
                        inum,
                        NetnsHandle {
                            inum,
                            diag,
                            netstat,
                        },
                    );
                }
                Err(reason) => {
                    tracing::warn!(netns = inum, %reason, "cannot watch network namespace");
                    self.failed.insert(inum, reason);
                }
            }
        }
    }

    pub fn handles_mut(&mut self) -> impl Iterator<Item = &mut NetnsHandle> {
        self.handles.values_mut()
    }

    /// Namespaces found that could not be entered.
    pub fn unwatched(&self) -> impl Iterator<Item = u64> + '_ {
        self.failed.keys().copied()
    }
}

/// Namespace inode -> a path that refers to it.
fn discover(proc_root: &Path) -> BTreeMap<u64, PathBuf> {
    let mut found = BTreeMap::new();
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Ok(entries) = std::fs::read_dir("/run/netns") {
        candidates.extend(entries.flatten().map(|e| e.path()));
    }
    if let Ok(entries) = std::fs::read_dir(proc_root) {
        for entry in entries.flatten() {
            let name = entry.file_name();
            if name.to_string_lossy().bytes().all(|b| b.is_ascii_digit()) {
                candidates.push(entry.path().join("ns/net"));
            }
        }
    }
    for path in candidates {
        if let Ok(meta) = std::fs::metadata(&path) {
            found.entry(meta.ino()).or_insert(path);
        }
    }
    found
}

fn open_in(ns_path: &Path) -> Result<(Socket, File), String> {
    let ns = File::open(ns_path).map_err(|e| format!("open {}: {e}", ns_path.display()))?;
    std::thread::scope(|scope| {
        scope
            .spawn(|| -> Result<(Socket, File), String> {
                nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET)
                    .map_err(|e| format!("setns into {}: {e}", ns_path.display()))?;
                let diag = sockdiag::open_socket().map_err(|e| e.to_string())?;
                // thread-self, not self: /proc/self/net follows the main thread's namespace.
                let netstat = File::open(NETSTAT_IN_NETNS)
                    .map_err(|e| format!("open netstat in {}: {e}", ns_path.display()))?;
                debug!(ns = %ns_path.display(), "watching network namespace");
                Ok((diag, netstat))
            })
            .join()
            .map_err(|_| "namespace thread panicked".to_string())?
    })
}
