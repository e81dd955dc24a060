//! Whether a directory may hold the control socket: nobody but root (or the agent's own user)
//! may change it, nor any directory on the way to it from `/`.
//!
//! The socket's own directory: another user could remove the socket (the CLI then finds no
//! agent), or swap the path for a link between the bind and its chmod, which follows links, and
//! have root's chmod make a file of their choosing 0600. A directory above it: another user could
//! rename the socket's directory (or one between) away and put one of their own in its place, so
//! that the agent's socket is no longer where the CLI looks, and theirs is. The rule is the usual
//! one for trusted paths (OpenSSH's `safe_path`): each directory is root's (or this user's), and
//! writable by nobody else unless it is sticky, as /tmp is, where others cannot rename what is
//! not theirs.
use std::{os::unix::fs::MetadataExt, path::Path};

use super::server::ServeError;
use crate::trusted_path::{self, others_may_change, Others};

fn metadata(dir: &Path) -> Result<std::fs::Metadata, ServeError> {
    std::fs::metadata(dir).map_err(|source| ServeError::Io {
        path: dir.to_path_buf(),
        what: "reading its directory",
        source,
    })
}

/// Refuses `dir` for the socket if someone other than root or this user could change it or any
/// directory above it.
pub fn check(dir: &Path) -> Result<(), ServeError> {
    let me = nix::unistd::geteuid().as_raw();
    let meta = metadata(dir)?;
    let why = match others_may_change(&meta, me) {
        None => return check_ancestors(dir, me),
        Some(Others::Owner(uid)) => format!("it is owned by uid {uid}, not by root"),
        Some(Others::Everyone) => format!(
            "its mode {:04o} lets every user remove or replace the socket",
            meta.mode() & 0o7777
        ),
        Some(Others::Group(gid)) => format!(
            "its mode {:04o} lets group {gid} remove or replace the socket",
            meta.mode() & 0o7777
        ),
    };
    Err(ServeError::UnsafeDir {
        dir: dir.to_path_buf(),
        why,
    })
}

fn check_ancestors(dir: &Path, me: u32) -> Result<(), ServeError> {
    let found =
        trusted_path::unsafe_ancestor(dir, me).map_err(|(what, source)| ServeError::Io {
            path: dir.to_path_buf(),
            what,
            source,
        })?;
    let found = match found {
        None => return Ok(()),
        Some(trusted_path::Weakness::Link(l)) => {
            return Err(ServeError::ForeignLink {
                dir: dir.to_path_buf(),
                link: l.link,
                owner: l.owner,
                holder: l.holder,
            })
        }
        Some(trusted_path::Weakness::Directory(found)) => found,
    };
    Err(ServeError::UnsafeAncestor {
        dir: dir.to_path_buf(),
        ancestor: found.ancestor,
        owner: found.owner,
        group: found.group,
        mode: found.mode,
        who: found.who,
    })
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::{chown, PermissionsExt};

    use std::path::PathBuf;

    use super::*;
    use crate::trusted_path::ancestors;

    fn chmod(path: &Path, mode: u32) {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    /// A tree `TMP/parent/run` with `parent` as given (owner, group, mode) and `run` root's,
    /// 0755, as the agent creates it. Root only (chown); None, said why, otherwise.
    fn tree(owner: u32, group: u32, mode: u32) -> Option<(tempfile::TempDir, PathBuf, PathBuf)> {
        if !nix::unistd::geteuid().is_root() {
            kpo_test_skip::skip("not root: the test makes directories of other users and groups");
            return None;
        }
        let top = tempfile::tempdir().unwrap();
        chmod(top.path(), 0o700);
        let parent = top.path().join("parent");
        let run = parent.join("run");
        std::fs::create_dir_all(&run).unwrap();
        chmod(&run, 0o755);
        chown(&parent, Some(owner), Some(group)).unwrap();
        chmod(&parent, mode);
        Some((top, parent, run))
    }

    /// A group other than root's may write in the directory above the socket's: they could
    /// rename `run` away and make their own. Refused, naming it, its owner and mode, and what to do.
    #[test]
    fn a_group_writable_parent_is_refused() {
        let Some((_top, parent, run)) = tree(0, 65534, 0o775) else {
            return;
        };
        let err = check(&run).unwrap_err().to_string();
        assert_eq!(
            err,
            format!(
                "{run}: refusing to put the control socket here: {parent}, a directory above it \
                 (owner uid 0, group 65534, mode 0775), lets group 65534 rename what is in it: \
                 they could move the socket's directory away and put one of their own in its \
                 place; make {parent} root's and writable by root alone (chown root:root, chmod \
                 go-w; or chmod +t, as /tmp is, if others must write in it), or give --socket a \
                 path whose every directory is so (the default is /run/kpo/kpo.sock)",
                run = run.display(),
                parent = parent.display(),
            )
        );
        // Root's group is root alone.
        chown(&parent, None, Some(0)).unwrap();
        check(&run).unwrap();
    }

    /// Every user may write in the directory above, but it is sticky (/tmp's 1777): nobody can
    /// rename what is not theirs, and `run` is root's.
    #[test]
    fn a_sticky_world_writable_parent_is_accepted() {
        let Some((_top, parent, run)) = tree(0, 0, 0o1777) else {
            return;
        };
        check(&run).unwrap();
        // Without the sticky bit, every user could.
        chmod(&parent, 0o777);
        let err = check(&run).unwrap_err().to_string();
        assert!(
            err.contains(&format!(
                "{}, a directory above it (owner uid 0, group 0, mode 0777), lets every user \
                 rename what is in it",
                parent.display()
            )),
            "{err}"
        );
    }

    /// The directory above belongs to another user: sticky or not, its owner may rename what is
    /// in it.
    #[test]
    fn a_parent_owned_by_another_user_is_refused() {
        for mode in [0o755, 0o1777] {
            let Some((_top, parent, run)) = tree(65534, 0, mode) else {
                return;
            };
            let err = check(&run).unwrap_err().to_string();
            assert!(
                err.contains(&format!(
                    "{}, a directory above it (owner uid 65534, group 0, mode {mode:04o}), \
                     belongs to uid 65534, who may rename what is in it",
                    parent.display()
                )),
                "{err}"
            );
        }
    }

    /// Defect (s46 storyI): a socket directory reached through another user's link in a sticky
    /// directory passed; they could point it at a directory of their own after the start.
    #[test]
    fn another_users_link_in_a_sticky_directory_is_refused() {
        let Some((top, _parent, run)) = tree(0, 0, 0o755) else {
            return;
        };
        let shared = top.path().join("shared");
        std::fs::create_dir(&shared).unwrap();
        chmod(&shared, 0o1777);
        let link = shared.join("run");
        std::os::unix::fs::symlink(&run, &link).unwrap();
        std::os::unix::fs::lchown(&link, Some(65534), Some(65534)).unwrap();
        assert_eq!(
            check(&link).unwrap_err().to_string(),
            format!(
                "{link}: refusing to put the control socket here: {link}, a symbolic link on the \
                 way to it, is uid 65534's, in the sticky directory {shared}, where uid 65534 may \
                 replace it at any time with a link to a directory of their own; give --socket \
                 the path it leads to, or make the link root's (as root: ln -sfn TARGET {link})",
                link = link.display(),
                shared = shared.display()
            )
        );
        std::os::unix::fs::lchown(&link, Some(0), Some(0)).unwrap();
        check(&link).unwrap();
    }

    /// Not only the parent: any directory on the way from `/`, and those a link leads through.
    #[test]
    fn every_directory_up_to_the_root_is_checked_links_followed() {
        let Some((top, parent, run)) = tree(0, 0, 0o755) else {
            return;
        };
        let deeper = run.join("a/b");
        std::fs::create_dir_all(&deeper).unwrap();
        chmod(&parent, 0o777);
        let err = check(&deeper).unwrap_err().to_string();
        assert!(
            err.contains(&format!("{}, a directory above it", parent.display())),
            "{err}"
        );
        // Reached through links in safe directories: the directories above each link's target
        // are checked too (`safe/link` -> `safe/via` -> `parent/run`).
        let safe = top.path().join("safe");
        std::fs::create_dir(&safe).unwrap();
        let link = safe.join("link");
        std::os::unix::fs::symlink("via", &link).unwrap();
        std::os::unix::fs::symlink(&run, safe.join("via")).unwrap();
        let err = check(&link).unwrap_err().to_string();
        assert!(
            err.contains(&format!("{}, a directory above it", parent.display())),
            "{err}"
        );
        chmod(&parent, 0o755);
        check(&link).unwrap();
        check(&deeper).unwrap();
        // A link's own directory decides who may replace the link: `open/link` -> `parent/run`,
        // `parent` safe, `open` writable by every user.
        let open = top.path().join("open");
        std::fs::create_dir(&open).unwrap();
        chmod(&open, 0o777);
        std::os::unix::fs::symlink(&run, open.join("link")).unwrap();
        let err = check(&open.join("link")).unwrap_err().to_string();
        assert!(
            err.contains(&format!("{}, a directory above it", open.display())),
            "{err}"
        );
        // `..` after a link goes up from where the link led, as the kernel's lookup does.
        std::fs::create_dir(run.join("up")).unwrap();
        std::os::unix::fs::symlink(run.join("up"), safe.join("up")).unwrap();
        let holders = ancestors(&safe.join("up/..")).unwrap();
        assert_eq!(
            holders[holders.len() - 3..],
            [safe.clone(), parent.clone(), run.clone()],
            "safe holds the link up, parent holds run, run holds up; .. from up is run: {holders:?}"
        );
    }

    /// The default socket's directory (or, before the agent made it, the one it is made in)
    /// and a test's temporary directory pass on this host, as they must for the agent and the
    /// tests to run.
    #[test]
    fn the_default_socket_directory_and_temporary_directories_pass() {
        let default = Path::new(crate::api::DEFAULT_SOCKET).parent().unwrap();
        match [default, default.parent().unwrap()]
            .into_iter()
            .find(|d| d.exists())
        {
            Some(dir) => check(dir).unwrap(),
            None => eprintln!(
                "skipped for {}: neither it nor its parent exists",
                default.display()
            ),
        }
        let dir = tempfile::tempdir().unwrap();
        chmod(dir.path(), 0o755);
        check(dir.path()).unwrap();
    }
}
