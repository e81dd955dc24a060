//! The journal file: one record per line, `CRC32 JSON\n`, appended and fsynced one at a time, and
//! read back with torn-tail and corruption recovery. docs/journal.md. Generic over the record,
//! so that the approvals store keeps its file the same way.
use std::{
    fs::{self, File, OpenOptions},
    io::{self, Write},
    os::unix::fs::{DirBuilderExt, OpenOptionsExt},
    path::{Path, PathBuf},
};

use serde::{de::DeserializeOwned, Serialize};

use super::{JournalError, Record};

pub const JOURNAL_FILE: &str = "journal.log";

/// One line: the CRC32 (IEEE) of the JSON in 8 hex digits, a space, the JSON, a newline. The
/// approvals store (crate::approvals::store) keeps its own records in the same format.
pub fn encode<T: Serialize>(record: &T) -> Vec<u8> {
    let json = serde_json::to_string(record).expect("records serialise");
    let crc = crc32fast::hash(json.as_bytes());
    format!("{crc:08x} {json}\n").into_bytes()
}

/// A line (without its newline) back to a record, or why not.
pub fn decode<T: DeserializeOwned>(line: &[u8]) -> Result<T, String> {
    let text = std::str::from_utf8(line).map_err(|_| "not UTF-8".to_string())?;
    let (crc, json) = text
        .split_once(' ')
        .ok_or_else(|| "no checksum".to_string())?;
    let crc = u32::from_str_radix(crc, 16).map_err(|_| "bad checksum field".to_string())?;
    if crc != crc32fast::hash(json.as_bytes()) {
        return Err("checksum mismatch".into());
    }
    serde_json::from_str(json).map_err(|e| format!("unreadable record: {e}"))
}

/// What reading a file of records found.
pub struct Loaded<T> {
    pub records: Vec<T>,
    pub warnings: Vec<String>,
    /// How many intact records came before the first damaged whole line, if one was dropped (a
    /// torn last line is not one: it was never acknowledged). A record after it may have been
    /// superseded by the one lost.
    pub first_damage: Option<usize>,
    /// Each damaged whole line dropped (its number from 1, and its bytes): what it still shows,
    /// read without trusting it, keeps ids from being handed out twice.
    pub damaged: Vec<(usize, Vec<u8>)>,
}

/// The number after the first `"FIELD":` in a line that may be damaged (no checksum to trust).
pub fn lenient_number(line: &[u8], field: &str) -> Option<u64> {
    let at = find(line, format!("\"{field}\":").as_bytes())?;
    let digits: Vec<u8> = line[at..]
        .iter()
        .copied()
        .take_while(u8::is_ascii_digit)
        .collect();
    std::str::from_utf8(&digits).ok()?.parse().ok()
}

/// The string after the first `"FIELD":"` in a line that may be damaged (no escapes: a key or
/// an id never has one).
pub fn lenient_text(line: &[u8], field: &str) -> Option<String> {
    let at = find(line, format!("\"{field}\":\"").as_bytes())?;
    let end = line[at..].iter().position(|&b| b == b'"')?;
    String::from_utf8(line[at..at + end].to_vec()).ok()
}

/// Where what follows `needle`'s first occurrence starts.
fn find(line: &[u8], needle: &[u8]) -> Option<usize> {
    line.windows(needle.len())
        .position(|w| w == needle)
        .map(|at| at + needle.len())
}

/// Creates the state directory (0700) if needed.
pub fn ensure_dir(dir: &Path) -> Result<(), JournalError> {
    if let Some(why) = broken_link(dir) {
        return Err(JournalError::UnsafeDir {
            dir: dir.to_path_buf(),
            why,
        });
    }
    if !dir.exists() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            // A new state directory on a read-only mount: refused by name, as the lock is.
            .map_err(|e| JournalError::io_in_state_dir(dir, dir, e))?;
        if let Some(parent) = dir.parent() {
            sync_dir(parent).ok();
        }
    }
    Ok(())
}

/// Why `dir` is a symbolic link that leads to no directory, or lies below one, if it does: a
/// link into a disk that is not mounted, or a loop. Creating the directory would fail with "File
/// exists" (the link is there), and creating the link's target instead would put the journal
/// where the mount will later hide it. Each part of the path is looked at (`LINK/`, and
/// `LINK/kpo` with the link higher up, were missed: s51 review L1).
pub fn broken_link(dir: &Path) -> Option<String> {
    let mut at = std::path::PathBuf::new();
    for part in dir.components() {
        at.push(part);
        if !fs::symlink_metadata(&at).is_ok_and(|m| m.file_type().is_symlink()) {
            continue;
        }
        let target = fs::read_link(&at)
            .map(|t| t.display().to_string())
            .unwrap_or_else(|_| "?".into());
        let link = if at.as_os_str() == dir.components().collect::<std::path::PathBuf>().as_os_str()
        {
            "it".to_string()
        } else {
            at.display().to_string()
        };
        match fs::metadata(&at) {
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Some(format!(
                    "{link} is a symbolic link to {target}, which does not exist (a disk not \
                     mounted?); KPO does not create a directory at the end of a link"
                ))
            }
            Err(e) if e.raw_os_error() == Some(nix::libc::ELOOP) => {
                return Some(format!(
                    "{link} is a symbolic link to {target} that loops back on itself"
                ))
            }
            Err(e) => {
                return Some(format!(
                    "{link} is a symbolic link to {target}, which cannot be followed: {e}"
                ))
            }
        }
    }
    None
}

/// Refuses a state directory someone other than this user can change, or one below a directory
/// someone else can change (`trusted_path`): another user could then swap the journal or plant a
/// link where the agent, as root, writes. A directory others may only
/// read (an existing one made 0755) is used with a warning, returned here: the journal holds the
/// host's configuration history. The directory is not chmod-ed: `--state-dir` may name a
/// directory that has other users, which is to be refused, not changed.
pub fn check_dir(dir: &Path) -> Result<Option<String>, JournalError> {
    use std::os::unix::fs::MetadataExt;
    let meta = fs::metadata(dir).map_err(|e| JournalError::io(dir, e))?;
    let unsafe_dir = |why: String| JournalError::UnsafeDir {
        dir: dir.to_path_buf(),
        why,
    };
    if !meta.is_dir() {
        return Err(unsafe_dir("not a directory".into()));
    }
    let me = nix::unistd::geteuid().as_raw();
    if meta.uid() != me {
        return Err(unsafe_dir(format!(
            "it is owned by uid {}, not by this user (uid {me})",
            meta.uid()
        )));
    }
    let mode = meta.mode() & 0o777;
    if mode & 0o022 != 0 {
        return Err(unsafe_dir(format!(
            "its mode {mode:04o} lets {} write in it (chmod 700 {})",
            if mode & 0o002 != 0 {
                "every user"
            } else {
                "its group"
            },
            dir.display()
        )));
    }
    // A directory above it that another user may write lets them rename the state directory
    // away and put one of their own in its place: a journal of their making, which the agent
    // would reconcile and revert the kernel to.
    use crate::trusted_path::Weakness;
    match crate::trusted_path::unsafe_ancestor(dir, me) {
        Ok(None) => {}
        Ok(Some(Weakness::Link(l))) => {
            return Err(unsafe_dir(format!(
                "{}, a symbolic link on the way to it, is uid {}'s, in the sticky directory {}, \
                 where uid {} may replace it at any time with a link to a directory of their \
                 own, with a journal of their making; give --state-dir the path it leads to, or \
                 make the link root's (as root: ln -sfn TARGET {})",
                l.link.display(),
                l.owner,
                l.holder.display(),
                l.owner,
                l.link.display()
            )));
        }
        Ok(Some(Weakness::Directory(a))) => {
            return Err(unsafe_dir(format!(
                "{}, a directory above it (owner uid {}, group {}, mode {:04o}), {} rename what \
                 is in it: they could move the state directory away and put one of their own, \
                 with a journal of their making, in its place; make {} root's and writable by \
                 root alone (chown root:root, chmod go-w; or chmod +t, as /tmp is, if others must \
                 write in it), or give --state-dir a path whose every directory is so",
                a.ancestor.display(),
                a.owner,
                a.group,
                a.mode,
                a.who,
                a.ancestor.display()
            )));
        }
        Err((what, e)) => {
            return Err(unsafe_dir(format!(
                "the directories above it cannot be checked ({what}: {e})"
            )));
        }
    }
    Ok((mode & 0o077 != 0).then(|| {
        format!(
            "{}: the state directory's mode is {mode:04o}: others can read the journal of this \
             host's changes (chmod 700 {} to keep it private; new directories are made 0700)",
            dir.display(),
            dir.display()
        )
    }))
}

/// Tests: makes a temporary directory private (0700), as a state directory the agent creates is;
/// `tempfile::tempdir()` follows the umask, and under umask 002 its 0775 would be refused.
#[cfg(test)]
pub(crate) fn make_private(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).unwrap();
}

pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Reads the journal. See [`load_records`].
pub fn load(dir: &Path) -> Result<Loaded<Record>, JournalError> {
    load_records(dir, JOURNAL_FILE)
}

/// Reads `dir/name`, keeping every intact record. A torn last line (a crash mid-append), garbage
/// appended, or a damaged line in the middle are dropped with a warning; the damaged file is kept
/// beside it as `NAME.corrupt-<ms>` and the file is rewritten (temporary file, fsync, rename,
/// fsync of the directory) with the intact records only. Never fails on content.
pub fn load_records<T: Serialize + DeserializeOwned>(
    dir: &Path,
    name: &str,
) -> Result<Loaded<T>, JournalError> {
    load_repairing(dir, name, |_| Vec::new())
}

/// [`load_records`], where the rewrite after damage also holds the records `describe` returns
/// (each with the warning it gives), after the intact ones: what the dropped lines still show
/// that must outlive them (an id never to be handed out again, a parameter left unsettled). In
/// the same atomic rewrite, so that no crash leaves the damaged lines gone and those records not
/// written: the next load would find an intact file, and nothing left to work them out from.
/// `describe` is called only when something was dropped, with what was found (the intact
/// records, and the damaged lines); the records it returns are in the [`Loaded`] returned.
pub fn load_repairing<T, F>(dir: &Path, name: &str, describe: F) -> Result<Loaded<T>, JournalError>
where
    T: Serialize + DeserializeOwned,
    F: FnOnce(&Loaded<T>) -> Vec<(T, String)>,
{
    let path = dir.join(name);
    let bytes = read_or_empty(&path)?;
    let mut loaded = parse(&path, &bytes);
    if !loaded.warnings.is_empty() {
        let intact = loaded.records.len();
        let described = describe(&loaded);
        let ms = super::now_ms();
        let saved = dir.join(format!("{name}.corrupt-{ms}"));
        // As private as the file it copies: records name parameters, values and who changed them.
        OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&saved)
            .and_then(|mut f| std::io::Write::write_all(&mut f, &bytes))
            .map_err(|e| JournalError::io(&saved, e))?;
        let (extra, said): (Vec<T>, Vec<String>) = described.into_iter().unzip();
        loaded.records.extend(extra);
        rewrite(dir, name, &loaded.records)?;
        loaded.warnings.push(format!(
            "{}: recovered {intact} intact records; the damaged file is kept as {}",
            path.display(),
            saved.display()
        ));
        // Not logged here: the holders (the journal, the approvals store, the guard) log their
        // file's warnings, the agent with a prefix of its own; logged here too, each came twice.
        loaded.warnings.extend(said);
    }
    Ok(loaded)
}

/// The file's bytes; none when there is no file.
fn read_or_empty(path: &Path) -> Result<Vec<u8>, JournalError> {
    match fs::read(path) {
        Ok(b) => Ok(b),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(JournalError::io(path, e)),
    }
}

/// The intact records of a file's bytes, and what was dropped: a torn last line, damaged lines.
pub(crate) fn parse<T: DeserializeOwned>(path: &Path, bytes: &[u8]) -> Loaded<T> {
    let mut records = Vec::new();
    let mut warnings = Vec::new();
    let mut first_damage = None;
    let mut damaged = Vec::new();
    let mut start = 0usize;
    let mut line_no = 0usize;
    while start < bytes.len() {
        line_no += 1;
        let (line, next, complete) = match bytes[start..].iter().position(|&b| b == b'\n') {
            Some(i) => (&bytes[start..start + i], start + i + 1, true),
            None => (&bytes[start..], bytes.len(), false),
        };
        if !complete {
            warnings.push(format!(
                "{}: line {line_no} is a torn record ({} bytes without an end; a crash mid-write); dropped",
                path.display(),
                line.len()
            ));
        } else if line.is_empty() {
            // A stray newline: nothing to keep, nothing lost.
        } else {
            match decode(line) {
                Ok(r) => records.push(r),
                Err(why) => {
                    first_damage.get_or_insert(records.len());
                    damaged.push((line_no, line.to_vec()));
                    warnings.push(format!(
                        "{}: line {line_no} is damaged ({why}); dropped",
                        path.display()
                    ));
                }
            }
        }
        start = next;
    }
    Loaded {
        records,
        warnings,
        first_damage,
        damaged,
    }
}

/// [`load_repairing`] on a state directory that cannot be written (a read-only mount): the file
/// as it is on disk, its damaged lines dropped and what `describe` makes of them folded in
/// memory, as a repair would have written them; nothing is written, kept aside or rewritten.
pub fn load_as_is<T, F>(dir: &Path, name: &str, describe: F) -> Result<Loaded<T>, JournalError>
where
    T: DeserializeOwned,
    F: FnOnce(&Loaded<T>) -> Vec<(T, String)>,
{
    let path = dir.join(name);
    let mut loaded = parse(&path, &read_or_empty(&path)?);
    if !loaded.warnings.is_empty() {
        let (extra, said): (Vec<T>, Vec<String>) = describe(&loaded).into_iter().unzip();
        loaded.records.extend(extra);
        loaded.warnings.push(format!(
            "{}: the file is damaged, and not repaired: the state directory cannot be written",
            path.display()
        ));
        loaded.warnings.extend(said);
    }
    Ok(loaded)
}

/// Replaces `dir/name` with exactly these records, atomically: a crash leaves the old file or
/// the new one.
pub fn rewrite<T: Serialize>(dir: &Path, name: &str, records: &[T]) -> Result<(), JournalError> {
    let bytes: Vec<u8> = records.iter().flat_map(encode).collect();
    replace(dir, name, &bytes)
}

/// Replaces `dir/name` with `bytes` (mode 0600), atomically and durably: a temporary file synced,
/// renamed over it, the directory synced. A crash or a power loss leaves the old file or the new
/// one, never an empty or partial one.
pub fn replace(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), JournalError> {
    let tmp = dir.join(format!("{name}.tmp"));
    let path = dir.join(name);
    let written = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()
    })();
    if let Err(e) = written {
        // Not left behind half-written (s61 story BW-1: an empty `.tmp` on a full disk).
        let _ = fs::remove_file(&tmp);
        return Err(JournalError::io(&tmp, e));
    }
    fs::rename(&tmp, &path).map_err(|e| JournalError::io(&path, e))?;
    sync_dir(dir).map_err(|e| JournalError::io(dir, e))
}

/// [`replace`], unless `dir/name` holds `bytes` already: what every start records (the sysfs
/// root, the policy's path, the agent's namespace) is most often what the last start did, and
/// rewriting it on a full disk stopped the agent from starting at all, where it could still
/// observe and advise (s61 story BW-1).
pub fn replace_unless_same(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), JournalError> {
    if fs::read(dir.join(name)).is_ok_and(|now| now == bytes) {
        return Ok(());
    }
    replace(dir, name, bytes)
}

/// Removes `dir/name` durably (the directory synced); a file already absent is no error.
pub fn remove(dir: &Path, name: &str) -> Result<(), JournalError> {
    let path = dir.join(name);
    match fs::remove_file(&path) {
        Ok(()) => sync_dir(dir).map_err(|e| JournalError::io(dir, e)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(JournalError::io(&path, e)),
    }
}

/// A file of records open for appending.
pub struct Appender {
    file: File,
    path: PathBuf,
    /// Set when a failed append could not be taken back: the file may end in a partial line that
    /// the next record would be glued to (and both lost on reload), so nothing more is appended
    /// until the file is opened again (by loading it, or [`Appender::open_trimmed`], which drop
    /// the torn tail).
    poisoned: bool,
    /// The failure that poisoned it, when an append did: said again by every append refused
    /// after it, so that the operator learns the cause (a read-only file system), not only that
    /// the file takes no more.
    poisoned_by: Option<(Option<i32>, String)>,
    /// The file's length before the append that poisoned it: everything from there on was never
    /// acknowledged, a whole line included (written, then its fsync failed).
    unacknowledged_from: Option<u64>,
    /// Test hook: the next append writes only this many bytes, then fails like a full disk.
    #[cfg(test)]
    pub fail_after: Option<usize>,
    /// Test hook: this many appends pass before `fail_after` takes effect.
    #[cfg(test)]
    pub pass_first: usize,
}

impl Appender {
    /// Opens (creating, 0600, with a durable directory entry) `dir/name`.
    pub fn open(dir: &Path, name: &str) -> Result<Self, JournalError> {
        let path = dir.join(name);
        let existed = path.exists();
        let file = OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| JournalError::io(&path, e))?;
        if !existed {
            // The new file's directory entry must be durable too.
            file.sync_all().map_err(|e| JournalError::io(&path, e))?;
            sync_dir(dir).map_err(|e| JournalError::io(dir, e))?;
        }
        Ok(Self {
            file,
            path,
            poisoned: false,
            poisoned_by: None,
            unacknowledged_from: None,
            #[cfg(test)]
            fail_after: None,
            #[cfg(test)]
            pass_first: 0,
        })
    }

    /// [`Appender::open`], first cutting the file back to the end of its last complete line: after
    /// an append that failed and could not be taken back, the partial line it left would have the
    /// next record glued to it, and both would be dropped as damaged at the next load. What is cut
    /// was never acknowledged.
    pub fn open_trimmed(dir: &Path, name: &str) -> Result<Self, JournalError> {
        let appender = Self::open(dir, name)?;
        let bytes = fs::read(&appender.path).map_err(|e| JournalError::io(&appender.path, e))?;
        let whole = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        appender.cut_back_to(whole as u64)?;
        Ok(appender)
    }

    /// This appender's file opened again after a failure poisoned it: cut back to its length
    /// before the failed append (what follows was never acknowledged, however much of it was
    /// written), or, not knowing it, to its last complete line.
    pub fn reopen_after_failure(&self, dir: &Path, name: &str) -> Result<Self, JournalError> {
        let Some(length) = self.unacknowledged_from else {
            return Self::open_trimmed(dir, name);
        };
        let appender = Self::open(dir, name)?;
        appender.cut_back_to(length)?;
        Ok(appender)
    }

    /// Drops (durably) whatever the file holds past `length`: a record never acknowledged.
    fn cut_back_to(&self, length: u64) -> Result<(), JournalError> {
        let io = |e| JournalError::io(&self.path, e);
        let now = self.file.metadata().map_err(io)?.len();
        if now > length {
            self.file
                .set_len(length)
                .and_then(|()| self.file.sync_data())
                .map_err(io)?;
            tracing::warn!(
                "{}: cut {} bytes of a record whose write failed and could not be taken back",
                self.path.display(),
                now - length
            );
        }
        Ok(())
    }

    /// Appends one record and returns once it is on disk (fdatasync). On failure (a full disk,
    /// a file size limit, an fsync error) the file is cut back to where it was and synced, so a
    /// record that was not acknowledged leaves nothing behind: neither a partial line that the
    /// next record would be glued to, nor a whole line whose id the caller will hand out again.
    pub fn append<T: Serialize>(&mut self, record: &T) -> Result<(), JournalError> {
        if self.poisoned {
            let error = match &self.poisoned_by {
                // Still the cause: the caller says it as it said the first time (a read-only
                // state directory by name).
                Some((Some(errno), _)) if *errno == nix::errno::Errno::EROFS as i32 => {
                    io::Error::from_raw_os_error(*errno)
                }
                Some((_, cause)) => io::Error::other(format!(
                    "an earlier write failed ({cause}) and could not be taken back, so this file \
                     takes no more until it is opened again, which the agent does at its next record \
                     once the state directory can be written"
                )),
                None => io::Error::other(
                    "an earlier failure left this file unsafe to append to (a write that could not be taken back, or a rewrite whose new file could not be opened); open it again (restart the agent)",
                ),
            };
            return Err(JournalError::io(&self.path, error));
        }
        let metadata = self
            .file
            .metadata()
            .map_err(|e| JournalError::io(&self.path, e))?;
        // Appended to a deleted file, a record would be acknowledged and gone: `kpo apply` would
        // say "applied" with no original left to put back.
        if std::os::unix::fs::MetadataExt::nlink(&metadata) == 0 {
            return Err(JournalError::Deleted {
                path: self.path.clone(),
            });
        }
        // Moved away with its state directory (a copy restored in its place), the file still has
        // a name, but not the one read at the next start: a record would be acknowledged and
        // missing then, the change taken for someone else's and its id handed out again (s50
        // storyW W9).
        self.still_named_by_its_path(&metadata)?;
        let length = metadata.len();
        let line = encode(record);
        match self.write_line(&line).and_then(|()| self.file.sync_data()) {
            Ok(()) => Ok(()),
            Err(e) => {
                if self
                    .file
                    .set_len(length)
                    .and_then(|()| self.file.sync_data())
                    .is_err()
                {
                    self.poisoned = true;
                    self.poisoned_by = Some((e.raw_os_error(), e.to_string()));
                    self.unacknowledged_from = Some(length);
                }
                Err(JournalError::io(&self.path, e))
            }
        }
    }

    /// Whether the path it was opened by still names the open file (`open`: its metadata).
    fn still_named_by_its_path(&self, open: &std::fs::Metadata) -> Result<(), JournalError> {
        use std::os::unix::fs::MetadataExt;
        match std::fs::metadata(&self.path) {
            Ok(named) if (named.dev(), named.ino()) == (open.dev(), open.ino()) => Ok(()),
            Ok(_) => Err(JournalError::Replaced {
                path: self.path.clone(),
            }),
            // Its open file still has a name (`nlink` above): moved away, not deleted.
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(JournalError::MovedAway {
                path: self.path.clone(),
            }),
            Err(e) => Err(JournalError::io(&self.path, e)),
        }
    }

    /// Test hook: as an append that wrote past `length` and could be neither synced nor taken
    /// back leaves the appender.
    #[cfg(test)]
    pub(crate) fn poison_from(&mut self, length: u64) {
        self.poisoned = true;
        self.unacknowledged_from = Some(length);
    }

    /// Test hook: as an append that failed with `error` and could not be taken back leaves it.
    #[cfg(test)]
    pub(crate) fn poison_from_error(&mut self, length: u64, error: io::Error) {
        self.poison_from(length);
        self.poisoned_by = Some((error.raw_os_error(), error.to_string()));
    }

    /// Refuses every later append, until the file is opened again.
    pub fn poison(&mut self) {
        self.poisoned = true;
    }

    pub fn is_poisoned(&self) -> bool {
        self.poisoned
    }

    fn write_line(&mut self, line: &[u8]) -> io::Result<()> {
        #[cfg(test)]
        if self.fail_after.is_some() && self.pass_first > 0 {
            self.pass_first -= 1;
        } else if let Some(n) = self.fail_after.take() {
            self.file.write_all(&line[..n.min(line.len())])?;
            return Err(io::Error::from_raw_os_error(28)); // ENOSPC
        }
        self.file.write_all(line)
    }
}
