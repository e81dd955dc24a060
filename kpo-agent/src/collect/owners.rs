//! Which process owns a listening socket: socket inode -> (pid, comm), found by scanning
//! /proc/<pid>/fd. The scan is costly, so it runs only when an unknown inode shows up, and its
//! answers are cached.
use std::{
    collections::{HashMap, HashSet},
    path::Path,
};

use crate::kernel_file::{self, limit};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    pub pid: u32,
    pub comm: String,
}

#[derive(Default)]
pub struct OwnerCache {
    known: HashMap<u32, Option<Owner>>,
}

impl OwnerCache {
    /// Resolves every inode, scanning /proc once if any is new. Inodes not found are remembered as
    /// ownerless (a socket handed between processes is re-resolved when it is retired and reused).
    pub fn resolve(&mut self, proc_root: &Path, inodes: &[u32]) {
        let unknown: Vec<u32> = inodes
            .iter()
            .copied()
            .filter(|i| !self.known.contains_key(i))
            .collect();
        if unknown.is_empty() {
            return;
        }
        let mut found = scan(proc_root, &unknown);
        for inode in unknown {
            self.known.insert(inode, found.remove(&inode));
        }
    }

    pub fn get(&self, inode: u32) -> Option<&Owner> {
        self.known.get(&inode).and_then(Option::as_ref)
    }

    /// Forgets inodes no longer listening.
    pub fn retain(&mut self, live: &[u32]) {
        // A set: thousands of listeners must not cost a search of every other each tick.
        let live: HashSet<u32> = live.iter().copied().collect();
        self.known.retain(|inode, _| live.contains(inode));
    }
}

fn scan(proc_root: &Path, wanted: &[u32]) -> HashMap<u32, Owner> {
    // Checked for every descriptor on the host: a set, not a list.
    let wanted: HashSet<u32> = wanted.iter().copied().collect();
    let mut found = HashMap::new();
    let Ok(procs) = std::fs::read_dir(proc_root) else {
        return found;
    };
    for proc_entry in procs.flatten() {
        let Some(pid) = proc_entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(proc_entry.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            let Ok(target) = std::fs::read_link(fd.path()) else {
                continue;
            };
            let Some(inode) = socket_inode(&target.to_string_lossy()) else {
                continue;
            };
            if wanted.contains(&inode) && !found.contains_key(&inode) {
                let comm = read_comm(&proc_entry.path().join("comm"));
                found.insert(inode, Owner { pid, comm });
            }
        }
        if found.len() == wanted.len() {
            break;
        }
    }
    found
}

/// A process's name as it set it: any bytes (`prctl(PR_SET_NAME)` takes no encoding), so it is
/// copied lossily, each invalid byte a U+FFFD, and control and format characters escaped
/// ([`crate::shown`]). Empty if the process is gone.
fn read_comm(path: &Path) -> String {
    kernel_file::read_bytes(path, limit::FIXED)
        .map(|bytes| {
            let name = bytes.strip_suffix(b"\n").unwrap_or(&bytes);
            crate::shown::escaped(&String::from_utf8_lossy(name)).into_owned()
        })
        .unwrap_or_default()
}

/// Parses a `socket:[12345]` link target.
fn socket_inode(target: &str) -> Option<u32> {
    target
        .strip_prefix("socket:[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_socket_link_targets() {
        assert_eq!(socket_inode("socket:[12345]"), Some(12345));
        assert_eq!(socket_inode("pipe:[1]"), None);
        assert_eq!(socket_inode("socket:[x]"), None);
        assert_eq!(socket_inode("/dev/null"), None);
    }

    /// Defect (s46 storyI F6): any user may name a process, and an escape sequence or a bidi
    /// override in the name reached `kpo explain`'s terminal and the webhooks as it was.
    #[test]
    fn control_and_format_characters_in_a_name_are_escaped() {
        let dir = tempfile::tempdir().unwrap();
        let proc_dir = dir.path().join("4242");
        std::fs::create_dir_all(proc_dir.join("fd")).unwrap();
        std::os::unix::fs::symlink("socket:[777]", proc_dir.join("fd/3")).unwrap();
        std::fs::write(proc_dir.join("comm"), "\u{1b}[2Jsrv\u{202e}gpj\n").unwrap();
        let mut cache = OwnerCache::default();
        cache.resolve(dir.path(), &[777]);
        assert_eq!(cache.get(777).unwrap().comm, "\\u{001b}[2Jsrv\\u{202e}gpj");
    }

    /// Defect: a name that is not UTF-8 became "".
    #[test]
    fn a_name_that_is_not_utf8_is_copied_lossily() {
        let dir = tempfile::tempdir().unwrap();
        let proc_dir = dir.path().join("4242");
        std::fs::create_dir_all(proc_dir.join("fd")).unwrap();
        std::os::unix::fs::symlink("socket:[777]", proc_dir.join("fd/3")).unwrap();
        std::fs::write(proc_dir.join("comm"), b"caf\xe9 srv\xff\n").unwrap();
        let mut cache = OwnerCache::default();
        cache.resolve(dir.path(), &[777]);
        assert_eq!(
            cache.get(777),
            Some(&Owner {
                pid: 4242,
                comm: "caf\u{fffd} srv\u{fffd}".to_string()
            })
        );
    }

    #[test]
    fn finds_the_owner_of_our_own_socket() {
        use std::os::unix::fs::MetadataExt;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let fd = std::os::fd::AsRawFd::as_raw_fd(&listener);
        let inode = std::fs::metadata(format!("/proc/self/fd/{fd}"))
            .unwrap()
            .ino() as u32;
        let mut cache = OwnerCache::default();
        cache.resolve(Path::new("/proc"), &[inode]);
        let owner = cache.get(inode).expect("owner found");
        assert_eq!(owner.pid, std::process::id());
    }
}
