//! Whether a directory is one only root (or this user) can change, all the way from `/`: the
//! control socket's (`api/socket_dir.rs`) and the state directory's (`journal/store.rs`). A
//! directory above one of them that another user may write lets that user rename it away and put
//! one of their own in its place: a socket that answers for the agent, or a journal that tells
//! the agent what to write back into the kernel. The rule is the usual one for trusted paths
//! (OpenSSH's `safe_path`): each directory is root's (or this user's), and writable by nobody
//! else unless it is sticky, as /tmp is, where others cannot rename what is not theirs. Written
//! here because no maintained crate checks a path this way (following links as the kernel does).
use std::{
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
};

/// Who besides root and the agent's own user may rename or remove what is in a directory.
#[derive(Debug, PartialEq, Eq)]
pub enum Others {
    /// Its owner, another user.
    Owner(u32),
    /// Every user: world-writable, not sticky.
    Everyone,
    /// The members of its group, not root's: group-writable, not sticky.
    Group(u32),
}

/// Root's group is root alone, as everywhere in KPO's checks (the state directory's too).
pub fn others_may_change(meta: &std::fs::Metadata, me: u32) -> Option<Others> {
    let sticky = meta.mode() & 0o1000 != 0;
    if meta.uid() != 0 && meta.uid() != me {
        // Sticky or not: the owner of a directory may rename anything in it.
        Some(Others::Owner(meta.uid()))
    } else if sticky {
        None
    } else if meta.mode() & 0o002 != 0 {
        Some(Others::Everyone)
    } else if meta.mode() & 0o020 != 0 && meta.gid() != 0 {
        Some(Others::Group(meta.gid()))
    } else {
        None
    }
}

/// Links followed on the way to a directory before giving up, as the kernel's
/// ELOOP does.
const MAX_LINKS: usize = 40;

/// Every directory whose entries lead to `dir`, from `/` down: each that holds a component of its
/// path, followed as the kernel follows it, links included (the directory holding a link decides
/// who may replace the link, and the link's target is then followed from where it points). `dir`
/// itself, checked on its own, is among them only where its path passes through it (`dir/x/..`).
pub fn ancestors(dir: &Path) -> Result<Vec<PathBuf>, (&'static str, std::io::Error)> {
    use std::path::Component;
    let io = |what: &'static str| move |source| (what, source);
    let given = std::path::absolute(dir).map_err(io("making its path absolute"))?;
    let mut left: std::collections::VecDeque<PathBuf> = given
        .components()
        .map(|c| PathBuf::from(c.as_os_str()))
        .collect();
    let mut here = PathBuf::from("/");
    let mut holders: Vec<PathBuf> = Vec::new();
    let mut links = 0;
    while let Some(part) = left.pop_front() {
        match part.components().next() {
            Some(Component::RootDir) => here = PathBuf::from("/"),
            Some(Component::ParentDir) => {
                here.pop();
            }
            Some(Component::Normal(name)) => {
                if !holders.contains(&here) {
                    holders.push(here.clone());
                }
                let next = here.join(name);
                let meta = std::fs::symlink_metadata(&next).map_err(io("reading its path"))?;
                if meta.file_type().is_symlink() {
                    links += 1;
                    if links > MAX_LINKS {
                        return Err((
                            "resolving its path",
                            std::io::Error::from_raw_os_error(nix::libc::ELOOP),
                        ));
                    }
                    let target =
                        std::fs::read_link(&next).map_err(io("reading a link on its path"))?;
                    for c in target.components().rev() {
                        left.push_front(PathBuf::from(c.as_os_str()));
                    }
                } else {
                    here = next;
                }
            }
            _ => {}
        }
    }
    Ok(holders)
}

/// A directory above a checked one that someone other than root or this user may change.
#[derive(Debug)]
pub struct UnsafeAncestor {
    pub ancestor: PathBuf,
    pub owner: u32,
    pub group: u32,
    pub mode: u32,
    /// Who else may change it, followed by "rename": "lets group G", "lets every user",
    /// "belongs to uid U, who may".
    pub who: String,
}

/// The first directory on the way to `dir` (from `/`, links followed) that someone other than
/// root or `me` may change, if any; or what could not be read, and why.
pub fn unsafe_ancestor(
    dir: &Path,
    me: u32,
) -> Result<Option<UnsafeAncestor>, (&'static str, std::io::Error)> {
    for ancestor in ancestors(dir)? {
        let meta = std::fs::metadata(&ancestor).map_err(|e| ("reading a directory above it", e))?;
        let Some(others) = others_may_change(&meta, me) else {
            continue;
        };
        let who = match others {
            Others::Owner(uid) => format!("belongs to uid {uid}, who may"),
            Others::Everyone => "lets every user".to_string(),
            Others::Group(gid) => format!("lets group {gid}"),
        };
        return Ok(Some(UnsafeAncestor {
            ancestor,
            owner: meta.uid(),
            group: meta.gid(),
            mode: meta.mode() & 0o7777,
            who,
        }));
    }
    Ok(None)
}
