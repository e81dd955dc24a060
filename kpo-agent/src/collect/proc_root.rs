//! The start-up check of `--proc-root`: a directory that is not a procfs would otherwise be read
//! without complaint, and the host's listeners would vanish from the events without a word.
use std::{
    io,
    path::{Path, PathBuf},
};

/// What listener discovery reads in each process directory: the network namespace (`ns/net`, to
/// find every namespace in use) and the open files (`fd`, to find which process owns a socket).
pub const PER_PROCESS: [&str; 2] = ["ns/net", "fd"];

#[derive(Debug, thiserror::Error)]
pub enum ProcRootError {
    #[error("--proc-root {}: {source}", .path.display())]
    Unreadable {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "--proc-root {}: no process directory (<pid>/) in it, so no network namespace or \
         listener can be found; is procfs mounted there (e.g. the host's /proc at /host/proc)?",
        .path.display()
    )]
    NoProcesses { path: PathBuf },
    #[error(
        "--proc-root {}: no process directory has {}, which listener discovery reads \
         (<pid>/ns/net for network namespaces, <pid>/fd for socket owners)",
        .path.display(), .missing.join(" or ")
    )]
    Missing {
        path: PathBuf,
        missing: Vec<&'static str>,
    },
}

/// Why `root` cannot be the sysfs the actuators and energy meters read, if it cannot: a
/// mistyped root would otherwise read as a host without cpufreq, NICs or RAPL, silently.
pub fn check_sysfs_root(root: &Path) -> Result<(), String> {
    match std::fs::metadata(root) {
        Ok(m) if m.is_dir() => others_may_change_the_tree(root, nix::unistd::geteuid().as_raw()),
        Ok(_) => Err("not a directory".into()),
        Err(e) => Err(e.to_string()),
    }
}

/// Why another user than root or `me` could choose what the cpufreq actuator writes under `root`
/// as root, if they could: the way to it, or a directory of it down to each cpufreq policy,
/// that they may change. A link they placed there (`policy0/scaling_max_freq` to a file of
/// root's) would be followed by the write (s58 story BJ-2: a tree of another user's). /sys is
/// root's; a temporary tree must be too.
fn others_may_change_the_tree(root: &Path, me: u32) -> Result<(), String> {
    use crate::trusted_path::{others_may_change, unsafe_ancestor, Others, Weakness};
    let why_unsafe = "another user could place a link there, and the cpufreq actuator would \
                      write the file it leads to as root";
    match unsafe_ancestor(root, me) {
        Ok(None) => {}
        Ok(Some(Weakness::Directory(a))) => {
            return Err(format!(
                "{}, a directory on the way to it (owner uid {}, mode {:04o}), {} rename what \
                 is in it: {why_unsafe}",
                a.ancestor.display(),
                a.owner,
                a.mode & 0o7777,
                a.who
            ))
        }
        Ok(Some(Weakness::Link(l))) => {
            return Err(format!(
                "{}, a symbolic link on the way to it, is uid {}'s, in the sticky directory {}, \
                 who may point it elsewhere: {why_unsafe}",
                l.link.display(),
                l.owner,
                l.holder.display()
            ))
        }
        Err((what, e)) => return Err(format!("{what}: {e}")),
    }
    let cpufreq = root.join("devices/system/cpu/cpufreq");
    let mut dirs: Vec<PathBuf> = ["", "devices", "devices/system", "devices/system/cpu"]
        .iter()
        .map(|d| root.join(d))
        .chain(std::iter::once(cpufreq.clone()))
        .collect();
    if let Ok(entries) = std::fs::read_dir(&cpufreq) {
        dirs.extend(entries.flatten().map(|e| e.path()));
    }
    for dir in dirs {
        let Ok(meta) = std::fs::metadata(&dir) else {
            continue;
        };
        if !meta.is_dir() {
            continue;
        }
        let who = match others_may_change(&meta, me) {
            None => continue,
            Some(Others::Owner(uid)) => format!("belongs to uid {uid}"),
            Some(Others::Everyone) => "is writable by every user".into(),
            Some(Others::Group(gid)) => format!("is writable by group {gid}"),
        };
        return Err(format!(
            "{} {who}: {why_unsafe}; make the tree again as root (a `chown -R` keeps a link \
             already placed in it)",
            dir.display()
        ));
    }
    Ok(())
}

/// Checks that `root` holds what listener discovery needs: process directories, and among them
/// at least one with each of [`PER_PROCESS`] (the agent's own does, on a real /proc).
pub fn check_proc_root(root: &Path) -> Result<(), ProcRootError> {
    let unreadable = |source| ProcRootError::Unreadable {
        path: root.to_path_buf(),
        source,
    };
    let entries = std::fs::read_dir(root).map_err(unreadable)?;
    let mut processes = 0usize;
    let mut found = [false; PER_PROCESS.len()];
    for entry in entries {
        let entry = entry.map_err(unreadable)?;
        let is_pid = entry
            .file_name()
            .to_str()
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
        if !is_pid {
            continue;
        }
        processes += 1;
        for (seen, rel) in found.iter_mut().zip(PER_PROCESS) {
            // `ns/net` is a link to the namespace: following it proves it can be entered.
            *seen = *seen || std::fs::metadata(entry.path().join(rel)).is_ok();
        }
        if found.iter().all(|&f| f) {
            return Ok(());
        }
    }
    if processes == 0 {
        return Err(ProcRootError::NoProcesses {
            path: root.to_path_buf(),
        });
    }
    Err(ProcRootError::Missing {
        path: root.to_path_buf(),
        missing: PER_PROCESS
            .into_iter()
            .zip(found)
            .filter(|(_, seen)| !seen)
            .map(|(rel, _)| rel)
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;

    /// s58 story BJ-2: a sysfs root whose tree another user may change is refused, naming the
    /// directory; root's own tree passes.
    #[test]
    fn a_sysfs_tree_another_user_may_change_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let policy = tmp.path().join("devices/system/cpu/cpufreq/policy0");
        fs::create_dir_all(&policy).unwrap();
        let me = nix::unistd::geteuid().as_raw();
        assert_eq!(others_may_change_the_tree(tmp.path(), me), Ok(()));
        assert_eq!(check_sysfs_root(tmp.path()), Ok(()));
        fs::set_permissions(&policy, fs::Permissions::from_mode(0o777)).unwrap();
        let e = check_sysfs_root(tmp.path()).unwrap_err();
        assert!(
            e.starts_with(&format!("{} is writable by every user: ", policy.display())),
            "{e}"
        );
        assert_eq!(check_sysfs_root(Path::new("/sys")), Ok(()));
    }

    #[test]
    fn the_real_proc_passes() {
        check_proc_root(Path::new("/proc")).unwrap();
    }

    /// Defect: an empty or missing --proc-root was accepted, and the host's listeners vanished.
    #[test]
    fn a_wrong_proc_root_names_what_is_missing() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let e = check_proc_root(root).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "--proc-root {}: no process directory (<pid>/) in it, so no network namespace or \
                 listener can be found; is procfs mounted there (e.g. the host's /proc at \
                 /host/proc)?",
                root.display()
            )
        );

        let missing = root.join("nonexistent");
        let e = check_proc_root(&missing).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "--proc-root {}: No such file or directory (os error 2)",
                missing.display()
            )
        );

        // Host-wide files and process directories, but nothing in them.
        fs::write(root.join("stat"), "cpu 1 2 3 4\n").unwrap();
        fs::create_dir_all(root.join("42")).unwrap();
        let e = check_proc_root(root).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "--proc-root {}: no process directory has ns/net or fd, which listener discovery \
                 reads (<pid>/ns/net for network namespaces, <pid>/fd for socket owners)",
                root.display()
            )
        );
        fs::create_dir_all(root.join("42/fd")).unwrap();
        let e = check_proc_root(root).unwrap_err();
        assert!(
            matches!(&e, ProcRootError::Missing { missing, .. } if missing == &["ns/net"]),
            "{e}"
        );
        // Another process has the namespace link: between them, everything is there.
        fs::create_dir_all(root.join("43/ns")).unwrap();
        std::os::unix::fs::symlink("/proc/self/ns/net", root.join("43/ns/net")).unwrap();
        check_proc_root(root).unwrap();
    }

    #[test]
    fn a_dangling_namespace_link_does_not_count() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("7/ns")).unwrap();
        fs::create_dir_all(dir.path().join("7/fd")).unwrap();
        std::os::unix::fs::symlink("/nonexistent", dir.path().join("7/ns/net")).unwrap();
        let e = check_proc_root(dir.path()).unwrap_err();
        assert!(
            matches!(&e, ProcRootError::Missing { missing, .. } if missing == &["ns/net"]),
            "{e}"
        );
    }
}
