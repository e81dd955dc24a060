//! Whether a directory is one only root (or this user) can change, all the way from `/`: the
//! control socket's (`api/socket_dir.rs`), the state directory's (`journal/store.rs`) and the
//! `--events` file's (`output/sink.rs`). A
//! directory above one of them that another user may write lets that user rename it away and put
//! one of their own in its place: a socket that answers for the agent, or a journal that tells
//! the agent what to write back into the kernel. The rule is the usual one for trusted paths
//! (OpenSSH's `safe_path`): each directory is root's (or this user's), and writable by nobody
//! else unless it is sticky, as /tmp is, where others cannot rename what is not theirs (so a
//! link there that another user made is theirs to replace, and refused). Written
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

/// One step of the way to a path, as the kernel walks it.
#[derive(Debug)]
enum Step {
    /// A directory that holds a component of the path.
    Holder(PathBuf),
    /// A symbolic link on the way, its owner, and the directory that holds it.
    Link {
        link: PathBuf,
        owner: u32,
        holder: PathBuf,
    },
}

/// The way to `path`, links followed: its steps from `/` down, and the path reached (links
/// resolved). With `last_may_be_missing`, a last component that does not exist ends the walk
/// there (a file about to be created, or the dangling target of a link); any other missing
/// component is an error.
fn walk(
    path: &Path,
    last_may_be_missing: bool,
) -> Result<(Vec<Step>, PathBuf), (&'static str, std::io::Error)> {
    use std::os::unix::fs::MetadataExt;
    use std::path::Component;
    let io = |what: &'static str| move |source| (what, source);
    let given = std::path::absolute(path).map_err(io("making its path absolute"))?;
    let mut left: std::collections::VecDeque<PathBuf> = given
        .components()
        .map(|c| PathBuf::from(c.as_os_str()))
        .collect();
    let mut here = PathBuf::from("/");
    let mut steps: Vec<Step> = Vec::new();
    let mut links = 0;
    while let Some(part) = left.pop_front() {
        match part.components().next() {
            Some(Component::RootDir) => here = PathBuf::from("/"),
            Some(Component::ParentDir) => {
                here.pop();
            }
            Some(Component::Normal(name)) => {
                let held = |s: &Step| matches!(s, Step::Holder(h) if *h == here);
                if !steps.iter().any(held) {
                    steps.push(Step::Holder(here.clone()));
                }
                let next = here.join(name);
                let meta = match std::fs::symlink_metadata(&next) {
                    Ok(meta) => meta,
                    Err(e)
                        if last_may_be_missing
                            && left.is_empty()
                            && e.kind() == std::io::ErrorKind::NotFound =>
                    {
                        return Ok((steps, next));
                    }
                    Err(e) => return Err(("reading its path", e)),
                };
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
                    steps.push(Step::Link {
                        link: next,
                        owner: meta.uid(),
                        holder: here.clone(),
                    });
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
    Ok((steps, here))
}

/// Every directory whose entries lead to `dir`, from `/` down: each that holds a component of its
/// path, followed as the kernel follows it, links included (the directory holding a link decides
/// who may replace the link, and the link's target is then followed from where it points). `dir`
/// itself, checked on its own, is among them only where its path passes through it (`dir/x/..`).
pub fn ancestors(dir: &Path) -> Result<Vec<PathBuf>, (&'static str, std::io::Error)> {
    let (steps, _) = walk(dir, false)?;
    Ok(steps
        .into_iter()
        .filter_map(|s| match s {
            Step::Holder(h) => Some(h),
            Step::Link { .. } => None,
        })
        .collect())
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
    /// Only the members of a group other than root's may (group-writable, not sticky).
    pub group_only: bool,
}

/// A symbolic link on the way to a checked path that another user made in a sticky directory
/// (/tmp): the sticky bit keeps others from renaming what is not theirs, so the link is its
/// owner's to replace, with one to a directory of their own, whenever they like. The directory's
/// own check passes it; the kernel's `fs.protected_symlinks` refuses to follow such a link for
/// the same reason, but is off by default in the kernel and cannot be relied on.
#[derive(Debug)]
pub struct ForeignLink {
    pub link: PathBuf,
    pub owner: u32,
    /// The sticky directory it is in.
    pub holder: PathBuf,
}

/// What on the way to a path someone other than root or this user may change.
#[derive(Debug)]
pub enum Weakness {
    Directory(UnsafeAncestor),
    Link(ForeignLink),
}

/// The weaknesses on the way to `steps`' path, from `/` down.
fn weaknesses(steps: &[Step], me: u32) -> Result<Vec<Weakness>, (&'static str, std::io::Error)> {
    let mut found = Vec::new();
    for step in steps {
        match step {
            Step::Holder(ancestor) => {
                let meta =
                    std::fs::metadata(ancestor).map_err(|e| ("reading a directory above it", e))?;
                let Some(others) = others_may_change(&meta, me) else {
                    continue;
                };
                let group_only = matches!(others, Others::Group(_));
                let who = match others {
                    Others::Owner(uid) => format!("belongs to uid {uid}, who may"),
                    Others::Everyone => "lets every user".to_string(),
                    Others::Group(gid) => format!("lets group {gid}"),
                };
                found.push(Weakness::Directory(UnsafeAncestor {
                    ancestor: ancestor.clone(),
                    owner: meta.uid(),
                    group: meta.gid(),
                    mode: meta.mode() & 0o7777,
                    who,
                    group_only,
                }));
            }
            Step::Link {
                link,
                owner,
                holder,
            } => {
                if *owner == 0 || *owner == me {
                    continue;
                }
                // A link in a directory that is not sticky is replaceable only by who may write
                // there, which the directory's own step has judged.
                let meta =
                    std::fs::metadata(holder).map_err(|e| ("reading a directory above it", e))?;
                if meta.mode() & 0o1000 != 0 {
                    found.push(Weakness::Link(ForeignLink {
                        link: link.clone(),
                        owner: *owner,
                        holder: holder.clone(),
                    }));
                }
            }
        }
    }
    Ok(found)
}

/// The first directory (or link) on the way to `dir` (from `/`, links followed) that someone
/// other than root or `me` may change, if any; or what could not be read, and why.
pub fn unsafe_ancestor(
    dir: &Path,
    me: u32,
) -> Result<Option<Weakness>, (&'static str, std::io::Error)> {
    let (steps, _) = walk(dir, false)?;
    Ok(weaknesses(&steps, me)?.into_iter().next())
}

/// The way to a file root is about to create or append to (the `--events` file): the weaknesses
/// on the way to it, and where it is, links resolved, when the directory that holds it lets
/// others make entries (sticky and writable by others, as /tmp): there a file of that name may
/// appear between this check and the open, a link included, so it must be opened at that place
/// without following a link. `None` for that place where only root (or `me`) may make entries.
pub struct FileWay {
    /// Every weakness on the way, from `/` down.
    pub weaknesses: Vec<Weakness>,
    pub in_shared_directory: Option<PathBuf>,
}

pub fn file_way(path: &Path, me: u32) -> Result<FileWay, (&'static str, std::io::Error)> {
    let (steps, reached) = walk(path, true)?;
    let weaknesses = weaknesses(&steps, me)?;
    let holder = reached.parent().unwrap_or(Path::new("/"));
    let meta = std::fs::metadata(holder).map_err(|e| ("reading its directory", e))?;
    let shared = meta.mode() & 0o1000 != 0 && meta.mode() & 0o022 != 0;
    Ok(FileWay {
        weaknesses,
        in_shared_directory: shared.then_some(reached),
    })
}

/// Why a file KPO takes its instructions from as root (the policy, the configuration) is one
/// another user could have written, if it is: owned by another user, writable by a group other
/// than root's or by everyone, or reached through a directory (or a link) another user may
/// change, who could put a file of their own in its place. Whoever writes the policy decides what
/// KPO changes in the kernel (s46 storyI F3: a policy another user could edit widened its bounds
/// at the next SIGHUP). `what` names the file's role in the message ("the policy").
pub fn others_may_write_file(path: &Path, me: u32, what: &str) -> Option<String> {
    let meta = std::fs::metadata(path).ok()?;
    let mode = meta.mode() & 0o7777;
    // A device (/dev/null, 0666) is not rewritten by writing it; the way to it still counts.
    let who = if !meta.is_file() {
        None
    } else if meta.uid() != 0 && meta.uid() != me {
        Some(format!(
            "it is owned by uid {}, who may rewrite it",
            meta.uid()
        ))
    } else if mode & 0o002 != 0 {
        Some(format!("its mode {mode:04o} lets every user rewrite it"))
    } else if mode & 0o020 != 0 && meta.gid() != 0 {
        Some(format!(
            "its mode {mode:04o} lets group {} rewrite it",
            meta.gid()
        ))
    } else {
        None
    };
    let who = match who {
        Some(who) => who,
        None => match file_way(path, me).ok()?.weaknesses.into_iter().next()? {
            Weakness::Directory(a) => format!(
                "{}, a directory on the way to it (owner uid {}, group {}, mode {:04o}), {} \
                 rename what is in it, and put a file of their own in its place",
                a.ancestor.display(),
                a.owner,
                a.group,
                a.mode,
                a.who
            ),
            Weakness::Link(l) => format!(
                "{}, a symbolic link on the way to it, is uid {}'s, in the sticky directory {}, \
                 where uid {} may point it at a file of their own",
                l.link.display(),
                l.owner,
                l.holder.display(),
                l.owner
            ),
        },
    };
    Some(format!(
        "refusing it: {who}, and {what} decides what KPO changes in the kernel as root; make it \
         root's and writable by root alone (chown root:root, chmod go-w), in a directory only \
         root may write"
    ))
}
