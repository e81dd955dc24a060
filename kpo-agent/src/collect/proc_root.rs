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
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err("not a directory".into()),
        Err(e) => Err(e.to_string()),
    }
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
