//! Writing the event stream without ever holding up the run loop.
//!
//! The loop hands each event to [`EventSink::send`], which encodes it and queues the line for a
//! writer thread; it never blocks. The queue is bounded in bytes: while the reader does not keep
//! up (a stalled pipe, a slow log shipper) whole events past the bound are dropped and counted.
//! The writer thread writes one line at a time, whole (on a destination someone left
//! non-blocking it waits, as on a blocking one); a write that fails (a full disk) leaves no
//! partial line in a regular file (the file is cut back to its last whole line), the event is
//! counted as dropped, and the next one is tried as usual, so a transient error costs only the
//! events it hit. The next line that gets through carries `dropped_events`, the number lost since
//! the line before it, and `stop` carries `dropped_events_total`. Only a reader that went away for
//! good (EPIPE; EIO or ENXIO on anything but a regular file: a terminal that hung up) ends the
//! run, through [`EventSink::failed`].
//!
//! SIGHUP re-opens a file destination ([`EventSink::reopen`]), for logrotate.
use std::{
    fs::{File, OpenOptions},
    io::{self, Seek, SeekFrom, Write},
    os::{fd::AsFd, unix::fs::OpenOptionsExt},
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
        mpsc, Arc,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use tracing::{info, warn};

use super::events::{encode, finish_line, hostname, Event};

/// Bytes of encoded events that may wait for the writer (overridden by `KPO_EVENT_QUEUE_BYTES`).
pub const DEFAULT_QUEUE_BYTES: usize = 8 << 20;
pub const QUEUE_BYTES_ENV: &str = "KPO_EVENT_QUEUE_BYTES";
/// The bounds `KPO_EVENT_QUEUE_BYTES` may set: a few window events at least (one takes several
/// KB and grows with the listeners, namespaces and devices it reports: at 4096, the least this
/// was, a window queued behind any other event was dropped while its reader kept up; s45 storyE),
/// and no more memory than an agent should hold for a reader that is not there.
pub const MIN_QUEUE_BYTES: usize = 65536;
pub const MAX_QUEUE_BYTES: usize = 1 << 30;

#[derive(Debug, thiserror::Error)]
#[error(
    "{QUEUE_BYTES_ENV} is {value:?}; it must be a whole number of bytes, digits only, from \
     {MIN_QUEUE_BYTES} to {MAX_QUEUE_BYTES} (1 GiB); unset, it is {DEFAULT_QUEUE_BYTES} (8 MiB)"
)]
pub struct QueueBytesError {
    pub value: String,
}

/// The event queue's bound: `KPO_EVENT_QUEUE_BYTES` when set, else [`DEFAULT_QUEUE_BYTES`]. A
/// value that is not a plain integer in range is refused, not read as the default: `8M`
/// silently meaning 8 MiB, or `0` dropping every event queued behind another, would hide the
/// mistake.
pub fn queue_bytes_from_env() -> Result<usize, QueueBytesError> {
    parse_queue_bytes(std::env::var_os(QUEUE_BYTES_ENV).as_deref())
}

fn parse_queue_bytes(value: Option<&std::ffi::OsStr>) -> Result<usize, QueueBytesError> {
    let Some(value) = value else {
        return Ok(DEFAULT_QUEUE_BYTES);
    };
    let refused = || QueueBytesError {
        value: value.to_string_lossy().into_owned(),
    };
    let text = value.to_str().ok_or_else(refused)?;
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(refused());
    }
    match text.parse::<usize>() {
        Ok(n) if (MIN_QUEUE_BYTES..=MAX_QUEUE_BYTES).contains(&n) => Ok(n),
        _ => Err(refused()),
    }
}

/// Where events go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    Stdout,
    /// A file, appended to.
    File(PathBuf),
}

impl Destination {
    /// `-` is standard output; anything else a file.
    pub fn from_path(path: &Path) -> Destination {
        if path.as_os_str() == "-" {
            Destination::Stdout
        } else {
            Destination::File(path.to_path_buf())
        }
    }

    fn open(&self) -> io::Result<File> {
        self.open_noting_creation().map(|(file, _)| file)
    }

    /// The destination opened, and whether this open created the file.
    fn open_noting_creation(&self) -> io::Result<(File, bool)> {
        match self {
            // A duplicate of fd 1 without std's buffer: each line is one write of our own.
            Destination::Stdout => Ok((
                File::from(io::stdout().as_fd().try_clone_to_owned()?),
                false,
            )),
            Destination::File(path) => {
                if let Some(what) = device_refused(path) {
                    return Err(io::Error::other(what));
                }
                let (file, created, path) = match events_file_place(path)? {
                    Place::Shared(place) => open_in_shared_directory(&place)?,
                    Place::Root => {
                        // Opening writes nothing; the file system is checked before the first
                        // line.
                        let (file, created) = match OpenOptions::new()
                            .create_new(true)
                            .append(true)
                            .mode(EVENTS_FILE_MODE)
                            .open(path)
                        {
                            Ok(file) => (file, true),
                            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                                // A symbolic link is there (create_new does not follow it): its
                                // target is created when it does not exist yet.
                                let dangling = std::fs::metadata(path)
                                    .is_err_and(|e| e.kind() == io::ErrorKind::NotFound);
                                (
                                    OpenOptions::new()
                                        .create(true)
                                        .append(true)
                                        .mode(EVENTS_FILE_MODE)
                                        .open(path)?,
                                    dangling,
                                )
                            }
                            Err(e) => return Err(e),
                        };
                        (file, created, path.clone())
                    }
                };
                match kernel_interface(&file) {
                    Some(fs) => Err(io::Error::other(format!(
                        "it is on {fs}, where a write changes the kernel; the kernel is changed \
                         only through the policy and the journal"
                    ))),
                    None => {
                        if !created {
                            end_a_partial_last_line(&file, &path);
                        }
                        Ok((file, created))
                    }
                }
            }
        }
    }
}

/// Where the agent, as root, may open a file of events.
enum Place {
    /// Every directory on the way is root's alone: the path is opened as given, links followed.
    Root,
    /// The file (this path, links resolved) is in a directory others may make entries in, as
    /// /tmp: opened there without following a link.
    Shared(PathBuf),
}

/// Refused when someone other than root could point the events path elsewhere: a directory on
/// the way that another user owns or may write in (not sticky), or a symbolic link another user
/// made in a sticky directory (s46 storyI: a link planted in a shared directory had the agent
/// append events to a root-only file, or create one where it pointed, as root). The rule of the
/// state directory and the control socket (`trusted_path.rs`), whatever the path names (a link to
/// a FIFO may be pointed elsewhere after the check), but for a directory only a group other than
/// root's may write ([`tolerated`]).
fn events_file_place(path: &Path) -> io::Result<Place> {
    let me = nix::unistd::geteuid().as_raw();
    let way = match crate::trusted_path::file_way(path, me) {
        Ok(way) => way,
        // A missing directory: said as the open said it, and not opened (one made meantime
        // would not have been checked).
        Err((_, e)) if e.kind() == io::ErrorKind::NotFound => return Err(e),
        Err((what, e)) => {
            return Err(io::Error::other(format!(
                "the directories on the way to it cannot be checked ({what}: {e})"
            )))
        }
    };
    if let Some(weakness) = way.weaknesses.iter().find(|w| !tolerated(w)) {
        return Err(io::Error::other(events_path_weakness(weakness)));
    }
    for weakness in &way.weaknesses {
        if let crate::trusted_path::Weakness::Directory(a) = weakness {
            warn!(
                "events: {}: {}, a directory on the way to it (group {}, mode {:04o}), {} rename \
                 what is in it; used, as a log directory of the system's log group is",
                path.display(),
                a.ancestor.display(),
                a.group,
                a.mode,
                a.who
            );
        }
    }
    Ok(match way.in_shared_directory {
        Some(place) => Place::Shared(place),
        None => Place::Root,
    })
}

/// A directory on the way to the events file that a group other than root's may write is used,
/// with a warning: Ubuntu's /var/log is `root:syslog 0775`, and the unit's
/// `/var/log/kpo/events.ndjson` lies below it (the s46 review). That group is the system's own.
pub(crate) fn tolerated(weakness: &crate::trusted_path::Weakness) -> bool {
    matches!(weakness, crate::trusted_path::Weakness::Directory(a) if a.group_only)
}

/// Why a weakness on the way to the events file refuses it, and what to do.
pub(crate) fn events_path_weakness(weakness: &crate::trusted_path::Weakness) -> String {
    use crate::trusted_path::Weakness;
    match weakness {
        Weakness::Directory(a) => format!(
            "{}, a directory on the way to it (owner uid {}, group {}, mode {:04o}), {} rename \
             what is in it: they could put a link to a file of root's in its place, and the \
             agent, as root, would write events into that file; make {} root's and writable by \
             root alone (chown root:root, chmod go-w; or chmod +t, as /tmp is, if others must \
             write in it), or give --events a path whose every directory is so",
            a.ancestor.display(),
            a.owner,
            a.group,
            a.mode,
            a.who,
            a.ancestor.display()
        ),
        Weakness::Link(l) => format!(
            "{}, a symbolic link on the way to it, is uid {}'s, in the sticky directory {}, where \
             uid {} may point it at any file at any time, and the agent, as root, would write \
             events into that file; give --events the path it leads to, or make the link root's \
             (as root: ln -sfn TARGET {})",
            l.link.display(),
            l.owner,
            l.holder.display(),
            l.owner,
            l.link.display()
        ),
    }
}

/// The mode an events file is created with, at most (the umask takes from it): readable by a log
/// shipper running as another user, written by the agent alone; created with the process's
/// umask alone, `umask 000` made it writable by every user, who could then write events of their
/// own (s55 story AU-6).
const EVENTS_FILE_MODE: u32 = 0o644;

/// Opens (or creates) `place`, in a directory others may make entries in: without following a
/// link (one may appear there after the check), and refused unless the file is root's (or this
/// user's) with no other name (a hard link another user made to a file of root's is root's).
fn open_in_shared_directory(place: &Path) -> io::Result<(File, bool, PathBuf)> {
    use std::os::unix::fs::MetadataExt;
    let open = |create_new: bool| {
        let mut options = OpenOptions::new();
        options
            .append(true)
            .custom_flags(libc::O_NOFOLLOW)
            .mode(EVENTS_FILE_MODE);
        if create_new {
            options.create_new(true);
        }
        options.open(place)
    };
    let refused = |why: String| {
        io::Error::other(format!(
            "{} is in a directory every user may make entries in (sticky, as /tmp), and {why}; \
             give --events a path in a directory only root may write",
            place.display()
        ))
    };
    // Judged before it is opened: opening a FIFO another user left there would wait for its
    // reader. What is root's here, no one else may replace (sticky).
    let meta = match std::fs::symlink_metadata(place) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return match open(true) {
                Ok(file) => Ok((file, true, place.to_path_buf())),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Err(refused(
                    "something of that name appeared there while it was being created, which \
                     another user may have put there"
                        .into(),
                )),
                Err(e) => Err(e),
            };
        }
        Err(e) => return Err(e),
        Ok(meta) => meta,
    };
    let me = nix::unistd::geteuid().as_raw();
    if meta.file_type().is_symlink() {
        return Err(refused(
            "it is a symbolic link: one left there by another user could point at any file of \
             root's"
                .into(),
        ));
    }
    if meta.uid() != 0 && meta.uid() != me {
        return Err(refused(format!(
            "it is uid {}'s, who may remove it or rewrite what the agent writes",
            meta.uid()
        )));
    }
    if meta.is_file() && meta.nlink() > 1 {
        return Err(refused(format!(
            "it has {} names (hard links): another user may have made it one of a file of root's",
            meta.nlink()
        )));
    }
    Ok((open(false)?, false, place.to_path_buf()))
}

/// A regular file that ends inside a line (an agent killed in the middle of writing one, a
/// crash) would have the next event glued to that fragment, both lost to every reader (s38 chaos
/// F2: the next run's `start`). A fragment of an event line (it begins as every line does) is cut
/// off, so that the file holds only whole lines; anything else (not KPO's) is kept, ended with a
/// newline. Either is logged; a failure only costs the fragment's line.
fn end_a_partial_last_line(file: &File, path: &Path) {
    use std::os::unix::fs::FileExt;
    let ended = || -> io::Result<Option<(u64, bool)>> {
        let len = file.metadata()?.len();
        if len == 0 || !file.metadata()?.file_type().is_file() {
            return Ok(None);
        }
        // `file` is open for appending only.
        let reader = File::open(path)?;
        let mut last = [0u8; 1];
        reader.read_exact_at(&mut last, len - 1)?;
        if last[0] == b'\n' {
            return Ok(None);
        }
        // The last newline, read backwards a block at a time (a window's line can be long).
        let mut block = vec![0u8; 64 << 10];
        let mut end = len;
        let line_start = loop {
            let start = end.saturating_sub(block.len() as u64);
            let chunk = &mut block[..(end - start) as usize];
            reader.read_exact_at(chunk, start)?;
            if let Some(i) = chunk.iter().rposition(|&b| b == b'\n') {
                break start + i as u64 + 1;
            }
            if start == 0 {
                break 0;
            }
            end = start;
        };
        let head = format!("{{\"schema\":\"{}\",", super::events::SCHEMA);
        let mut fragment = vec![0u8; head.len().min((len - line_start) as usize)];
        reader.read_exact_at(&mut fragment, line_start)?;
        if head.as_bytes().starts_with(&fragment) {
            file.set_len(line_start)?;
            Ok(Some((len - line_start, true)))
        } else {
            (&*file).write_all(b"\n")?;
            Ok(Some((len - line_start, false)))
        }
    };
    match ended() {
        Ok(None) => {}
        Ok(Some((bytes, true))) => warn!(
            "{}: cut off the last {bytes} bytes, part of an event line left by a stop in the \
             middle of writing it",
            path.display()
        ),
        Ok(Some((bytes, false))) => warn!(
            "{}: its last {bytes} bytes were not a whole line and not an event; ended them with \
             a newline",
            path.display()
        ),
        Err(e) => warn!(
            "{}: it ends inside a line, which could not be ended ({e}); the first event may be \
             glued to it",
            path.display()
        ),
    }
}

/// Why events may not go to the device node `path` names (through symlinks: `/dev/stdout` is
/// whatever standard output is), found with stat: opening some devices acts on them, and a line
/// written to a disk or to memory would overwrite what is there. A terminal and the memory
/// devices that keep nothing (`/dev/null`, `/dev/zero`, `/dev/full`) take events; any other
/// character device (`/dev/kmsg`, `/dev/mem`) and every block device is refused. `None` for
/// anything that is not a device node (a file, a FIFO) or cannot be stat'ed.
pub fn device_refused(path: &Path) -> Option<String> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let meta = std::fs::metadata(path).ok()?;
    let kind = meta.file_type();
    if kind.is_block_device() {
        return Some(format!(
            "{} is a block device (a disk): events go to a file, a FIFO, a terminal, /dev/null, \
             /dev/zero or /dev/full",
            path.display()
        ));
    }
    if !kind.is_char_device() {
        return None;
    }
    let (major, minor) = (libc::major(meta.rdev()), libc::minor(meta.rdev()));
    // 1: null, zero, full; 4 and 5: virtual consoles, serial ports, /dev/tty, /dev/console;
    // 136-143: pseudo-terminals (a terminal's session, ssh); 166: USB modems (ttyACM); 188: USB
    // serial adapters (ttyUSB); 204: low-density serial ports (ttyAMA on ARM boards, ttymxc);
    // 229: hypervisor consoles (hvc). Known majors, not isatty(): that needs the node opened, and
    // opening some devices acts on them (a watchdog starts counting down).
    let takes_lines = matches!(
        (major, minor),
        (1, 3 | 5 | 7) | (4 | 5 | 136..=143 | 166 | 188 | 204 | 229, _)
    );
    (!takes_lines).then(|| {
        format!(
            "{} is a character device ({major}:{minor}) that is neither a terminal nor /dev/null, \
             /dev/zero or /dev/full: events go to a file, a FIFO, a terminal or one of those",
            path.display()
        )
    })
}

/// The kernel-interface file system `file` is on (procfs, sysfs and the like), if it is: an event
/// stream there would write its lines into kernel parameters.
pub fn kernel_interface(file: &File) -> Option<&'static str> {
    use std::os::fd::AsRawFd;
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `st` is a valid statfs buffer and the fd is open for the call's duration.
    if unsafe { libc::fstatfs(file.as_raw_fd(), &mut st) } != 0 {
        return None;
    }
    kernel_fs_name(st.f_type as u32)
}

/// The same for a path that may not exist yet: its nearest existing ancestor's file system.
pub fn kernel_interface_at(path: &Path) -> Option<&'static str> {
    use std::os::unix::ffi::OsStrExt;
    // statfs, not open: opening a FIFO (a log pipeline's) would wait for its reader.
    let mut at = Some(path);
    while let Some(p) = at {
        let c_path = std::ffi::CString::new(p.as_os_str().as_bytes()).ok()?;
        let mut st: libc::statfs = unsafe { std::mem::zeroed() };
        // SAFETY: a NUL-terminated path and a valid statfs buffer.
        if unsafe { libc::statfs(c_path.as_ptr(), &mut st) } == 0 {
            return kernel_fs_name(st.f_type as u32);
        }
        at = p.parent().map(|q| {
            if q.as_os_str().is_empty() {
                Path::new(".")
            } else {
                q
            }
        });
        if p == Path::new(".") {
            break;
        }
    }
    None
}

/// Magic numbers from linux/magic.h (32 bits: `f_type` is a signed word, sign-extended on 32-bit
/// targets).
fn kernel_fs_name(magic: u32) -> Option<&'static str> {
    Some(match magic {
        0x9fa0 => "procfs",
        0x6265_6572 => "sysfs",
        0x0027_e0eb => "cgroupfs",
        0x6367_7270 => "cgroup2fs",
        0x6462_6720 => "debugfs",
        0x7472_6163 => "tracefs",
        0x7363_6673 => "securityfs",
        0x6265_6570 => "configfs",
        0xcafe_4a11 => "bpffs",
        0x4249_4e4d => "binfmt_misc",
        0xde5e_81e4 => "efivarfs",
        0xf97c_ff8c => "selinuxfs",
        0x0765_5821 => "resctrl",
        0x6165_676c => "pstore",
        _ => return None,
    })
}

impl std::fmt::Display for Destination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Destination::Stdout => f.write_str("standard output"),
            Destination::File(path) => write!(f, "{}", path.display()),
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("cannot open the event stream {destination}: {source}")]
pub struct OpenError {
    pub destination: Destination,
    pub source: io::Error,
}

enum Msg {
    Line {
        object: Vec<u8>,
        /// Events dropped at the queue since the previous one that was queued.
        dropped_before: u64,
        /// The `stop` event: the writer adds the run's total of dropped events.
        last: bool,
    },
    /// Wakes the writer so that it sees a re-open request at once.
    Wake,
}

#[derive(Default)]
struct Shared {
    queued_bytes: AtomicUsize,
    written: AtomicU64,
    reopen: AtomicBool,
    /// A `stop` line was handled (written or lost): nothing is written after it, so that a
    /// forced stop's [`LastWords`] and the loop's own `stop` never both appear, nor events after.
    stopped: AtomicBool,
    /// Every event lost, at the queue or in the writer: `kpo_events_dropped_total`.
    lost: prometheus_client::metrics::counter::Counter,
}

/// The loop's side of the event stream. See the module documentation.
pub struct EventSink {
    destination: Destination,
    host: String,
    tx: Option<mpsc::Sender<Msg>>,
    shared: Arc<Shared>,
    writer: Option<JoinHandle<()>>,
    failed: tokio::sync::mpsc::UnboundedReceiver<String>,
    limit: usize,
    /// Events offered, written or not.
    offered: u64,
    dropped_since_queued: u64,
    dropped_at_queue: u64,
    /// While the queue is dropping events: how many it dropped since it began. It began with a
    /// warning, and ends with a note once the queue has drained below half its bound, not at the
    /// first event that fits again (a steadily slow reader would make the two alternate).
    dropping: Option<u64>,
    /// Warnings logged that the reader does not keep up: one per such episode.
    drop_warnings: u64,
    /// `--metrics`: every event offered is counted there, written or not.
    metrics: Option<Arc<std::sync::Mutex<super::metrics::Metrics>>>,
    /// The file's path, symbolic links resolved, device and inode when this open created it
    /// ([`EventSink::unused_file`]).
    created: Option<(PathBuf, u64, u64)>,
}

/// A file the event stream created and never wrote to: [`UnusedFile::remove`] after a failed
/// start.
pub struct UnusedFile {
    path: PathBuf,
    dev: u64,
    ino: u64,
}

impl UnusedFile {
    /// Removes the file if the path still names it and it is still empty: a start that failed
    /// before its first event leaves no empty file for a log pipeline to tail (or a typo'd path
    /// to linger). Called once the writer is closed, so that nothing writes to it after.
    pub fn remove(self) {
        use std::os::unix::fs::MetadataExt;
        match std::fs::symlink_metadata(&self.path) {
            Ok(m) if (m.dev(), m.ino(), m.len()) == (self.dev, self.ino, 0) => {
                if let Err(e) = std::fs::remove_file(&self.path) {
                    warn!(
                        "the event file {} this start created is left empty: {e}",
                        self.path.display()
                    );
                }
            }
            _ => {}
        }
    }
}

impl EventSink {
    /// Opens the destination (a start-up error names it) and starts the writer thread, with a
    /// queue of at most `limit` bytes ([`queue_bytes_from_env`]).
    pub fn open(target: &Path, limit: usize) -> Result<EventSink, OpenError> {
        use std::os::unix::fs::{FileTypeExt, MetadataExt};
        let destination = Destination::from_path(target);
        // Opening a FIFO for writing waits for its reader: said, or the start looks hung.
        if std::fs::metadata(target).is_ok_and(|m| m.file_type().is_fifo()) {
            info!(
                "events: {} is a FIFO: waiting for its reader to open it",
                target.display()
            );
        }
        let (file, created) = destination
            .open_noting_creation()
            .map_err(|source| OpenError {
                destination: destination.clone(),
                source,
            })?;
        // Where the file is: `--events` may be a symbolic link (left dangling, the open
        // created its target), which stays as it was.
        let created = match created {
            true => file.metadata().ok().map(|m| {
                let path = std::fs::canonicalize(target).unwrap_or_else(|_| target.into());
                (path, m.dev(), m.ino())
            }),
            false => None,
        };
        let mut sink = Self::start(destination, file, limit);
        sink.created = created;
        Ok(sink)
    }

    /// The file this sink created, when no event was offered to it: see [`UnusedFile::remove`].
    pub fn unused_file(&self) -> Option<UnusedFile> {
        let (Destination::File(_), Some((path, dev, ino)), 0) =
            (&self.destination, &self.created, self.offered)
        else {
            return None;
        };
        Some(UnusedFile {
            path: path.clone(),
            dev: *dev,
            ino: *ino,
        })
    }

    fn start(destination: Destination, file: File, limit: usize) -> EventSink {
        let (tx, rx) = mpsc::channel();
        let (failed_tx, failed) = tokio::sync::mpsc::unbounded_channel();
        let shared = Arc::new(Shared::default());
        let mut writer = Writer {
            destination: destination.clone(),
            file,
            shared: shared.clone(),
            failed: failed_tx,
            carry: 0,
            total_dropped: 0,
            failing: None,
            gone: false,
        };
        let handle = std::thread::Builder::new()
            .name("kpo-events".into())
            .spawn(move || writer.run(rx))
            .expect("spawning the event writer thread");
        Self::with_writer(destination, tx, shared, Some(handle), failed, limit)
    }

    fn with_writer(
        destination: Destination,
        tx: mpsc::Sender<Msg>,
        shared: Arc<Shared>,
        writer: Option<JoinHandle<()>>,
        failed: tokio::sync::mpsc::UnboundedReceiver<String>,
        limit: usize,
    ) -> EventSink {
        EventSink {
            destination,
            host: hostname(),
            tx: Some(tx),
            shared,
            writer,
            failed,
            limit,
            offered: 0,
            dropped_since_queued: 0,
            dropped_at_queue: 0,
            dropping: None,
            drop_warnings: 0,
            metrics: None,
            created: None,
        }
    }

    /// From now on every event offered is also counted in `metrics`.
    pub fn set_metrics(&mut self, metrics: Arc<std::sync::Mutex<super::metrics::Metrics>>) {
        metrics
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .register_events_dropped(self.shared.lost.clone());
        self.metrics = Some(metrics);
    }

    pub fn destination(&self) -> &Destination {
        &self.destination
    }

    /// A handle for a forced stop's `stop` event ([`LastWords`]); none once the sink is closing.
    pub fn last_words(&self) -> Option<LastWords> {
        Some(LastWords {
            tx: self.tx.clone()?,
            shared: self.shared.clone(),
            host: self.host.clone(),
        })
    }

    /// Events offered so far, written or not.
    pub fn offered(&self) -> u64 {
        self.offered
    }

    /// Whether the events offered up to `offered` (an earlier [`EventSink::offered`]) are all
    /// written: none dropped, failed or still queued. Once one was lost, never again in this
    /// run, which is the safe answer for what must not be lost: which one is not known, and
    /// the lines written after it would make up the count (s53 review3 H1).
    pub fn written_through(&self, offered: u64) -> bool {
        self.shared.lost.get() == 0 && self.shared.written.load(Ordering::Acquire) >= offered
    }

    /// Waits at most `timeout` for [`EventSink::written_through`].
    pub fn wait_written_through(&self, offered: u64, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while !self.written_through(offered) {
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        true
    }

    /// Queues an event; never blocks. Past the queue's bound the event is dropped and counted.
    pub fn send(&mut self, event: &Event) {
        self.offer(event, false);
    }

    /// Queues the `stop` event, past the bound if need be (it is one small line).
    pub fn send_last(&mut self, event: &Event) {
        self.offer(event, true);
    }

    fn offer(&mut self, event: &Event, last: bool) {
        self.offered += 1;
        if let Some(m) = &self.metrics {
            m.lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .observe(event);
        }
        let queued = self.shared.queued_bytes.load(Ordering::Acquire);
        // A full queue drops the event before encoding it. Below its bound, an event is queued
        // whatever its own size, so the bound may be passed by one event: measured with it, a
        // window event larger than the room left behind a small one was dropped while its
        // reader kept up (the s45 review of storyE's 4096-byte queue).
        if !last && queued > 0 && queued >= self.limit {
            return self.drop_one(queued);
        }
        let object = encode(event, &self.host, time::OffsetDateTime::now_utc());
        let len = object.len();
        self.shared.queued_bytes.fetch_add(len, Ordering::AcqRel);
        let msg = Msg::Line {
            object,
            dropped_before: self.dropped_since_queued,
            last,
        };
        let sent = self.tx.as_ref().is_some_and(|tx| tx.send(msg).is_ok());
        if !sent {
            // The writer is gone (it reported why through `failed`).
            self.shared.queued_bytes.fetch_sub(len, Ordering::AcqRel);
            self.shared.lost.inc();
            self.dropped_since_queued += 1;
            self.dropped_at_queue += 1;
            return;
        }
        self.dropped_since_queued = 0;
        if let Some(dropped) = self.dropping {
            if queued < self.limit / 2 {
                info!(
                    "the reader of events to {} caught up: {dropped} events were dropped while it \
                     did not keep up (each line written after a loss says how many it follows)",
                    self.destination
                );
                self.dropping = None;
            }
        }
    }

    fn drop_one(&mut self, queued: usize) {
        if self.dropping.is_none() {
            self.drop_warnings += 1;
            warn!(
                "events to {} are not being read fast enough: dropping events until the queue \
                 drains ({queued} bytes wait; each line written after a loss says how many it \
                 follows)",
                self.destination
            );
        }
        *self.dropping.get_or_insert(0) += 1;
        self.shared.lost.inc();
        self.dropped_since_queued += 1;
        self.dropped_at_queue += 1;
    }

    /// Asks the writer to re-open a file destination (logrotate's SIGHUP).
    pub fn reopen(&self) {
        self.shared.reopen.store(true, Ordering::Release);
        if let Some(tx) = &self.tx {
            let _ = tx.send(Msg::Wake);
        }
    }

    /// Resolves when the destination failed for good (the reader of a pipe went away), with the
    /// reason; pending otherwise.
    pub async fn failed(&mut self) -> String {
        match self.failed.recv().await {
            Some(reason) => reason,
            None => std::future::pending().await,
        }
    }

    /// Lets the writer drain the queue for at most `timeout`, then gives up on what is left.
    /// Returns how many of the events offered were never written (dropped, failed, or still
    /// queued at the deadline); a writer stuck on a stalled reader is abandoned, not waited for.
    pub fn close(mut self, timeout: Duration) -> u64 {
        drop(self.tx.take());
        let deadline = Instant::now() + timeout;
        if let Some(writer) = self.writer.take() {
            while !writer.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
            if writer.is_finished() {
                let _ = writer.join();
            }
        }
        let unwritten = self
            .offered
            .saturating_sub(self.shared.written.load(Ordering::Acquire));
        if unwritten > 0 {
            warn!(
                "{unwritten} of {} events could not be written to {} ({} dropped while it did \
                 not keep up, the rest failed or were still waiting when the agent stopped)",
                self.offered, self.destination, self.dropped_at_queue
            );
        }
        unwritten
    }
}

/// What a stop that cannot wait for the loop (a second SIGINT or SIGTERM while the agent stops)
/// needs of the event stream: its `stop` event, queued behind what the loop queued. Holding it
/// keeps the writer thread from ending, so [`EventSink::close`] must not be waited on while a
/// `LastWords` is alive.
pub struct LastWords {
    tx: mpsc::Sender<Msg>,
    shared: Arc<Shared>,
    host: String,
}

impl LastWords {
    /// Queues `stop` (unless a `stop` went already) and waits at most `timeout` for the writer
    /// to write it, or to fail to; whether it did within the time.
    pub fn send_stop(self, stop: &Event, timeout: Duration) -> bool {
        if !self.shared.stopped.load(Ordering::Acquire) {
            let object = encode(stop, &self.host, time::OffsetDateTime::now_utc());
            self.shared
                .queued_bytes
                .fetch_add(object.len(), Ordering::AcqRel);
            // The drops at the queue since the loop's last line are the loop's to know: the
            // writer counts them in for a last line (Writer::write_line_counted).
            let msg = Msg::Line {
                object,
                dropped_before: 0,
                last: true,
            };
            if self.tx.send(msg).is_err() {
                return false;
            }
        }
        let deadline = Instant::now() + timeout;
        while !self.shared.stopped.load(Ordering::Acquire) {
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        true
    }
}

/// The writer thread's state.
struct Writer {
    destination: Destination,
    file: File,
    shared: Arc<Shared>,
    failed: tokio::sync::mpsc::UnboundedSender<String>,
    /// Events lost since the last line written.
    carry: u64,
    total_dropped: u64,
    /// The error writes currently fail with (logged once per outage).
    failing: Option<String>,
    /// The reader went away for good: nothing more is written.
    gone: bool,
}

impl Writer {
    fn run(&mut self, rx: mpsc::Receiver<Msg>) {
        while let Ok(msg) = rx.recv() {
            if self.shared.reopen.swap(false, Ordering::AcqRel) {
                self.reopen();
            }
            if let Msg::Line {
                object,
                dropped_before,
                last,
            } = msg
            {
                self.shared
                    .queued_bytes
                    .fetch_sub(object.len(), Ordering::AcqRel);
                self.write(object, dropped_before, last);
            }
        }
    }

    fn write(&mut self, object: Vec<u8>, dropped_before: u64, last: bool) {
        if self.shared.stopped.load(Ordering::Acquire) {
            return;
        }
        self.write_line_counted(object, dropped_before, last);
        if last {
            // After the line: whoever waits on it then finds it written.
            self.shared.stopped.store(true, Ordering::Release);
        }
    }

    fn write_line_counted(&mut self, object: Vec<u8>, dropped_before: u64, last: bool) {
        self.carry += dropped_before;
        self.total_dropped += dropped_before;
        if last {
            // Every loss is in `lost` as it happens, but a drop at the queue reaches the writer
            // only with the next line queued after it: a forced stop's (LastWords) comes from
            // another thread and knows of none, and a line the loop queued after the drops may
            // be behind this one and never written. The stop accounts for all of them, so that
            // its total is the run's, as `kpo_events_dropped_total` counts it.
            let unannounced = self.shared.lost.get().saturating_sub(self.total_dropped);
            self.carry += unannounced;
            self.total_dropped += unannounced;
        }
        if self.gone {
            self.lose();
            return;
        }
        let mut extra = Vec::new();
        if self.carry > 0 {
            extra.push(("dropped_events", self.carry));
        }
        if last {
            extra.push(("dropped_events_total", self.total_dropped));
        }
        let line = finish_line(object, &extra);
        match write_line(&mut self.file, &line) {
            Ok(()) => {
                self.shared.written.fetch_add(1, Ordering::AcqRel);
                if let Some(error) = self.failing.take() {
                    info!(
                        "writing events to {} works again after: {error}; {} events were lost",
                        self.destination, self.carry
                    );
                }
                self.carry = 0;
            }
            Err(e) if reader_gone(&e, self.regular_file()) => {
                self.lose();
                self.gone = true;
                let _ = self.failed.send(format!(
                    "writing events to {}: the reader went away ({e})",
                    self.destination
                ));
            }
            Err(e) => {
                self.lose();
                let error = e.to_string();
                if self.failing.as_ref() != Some(&error) {
                    warn!(
                        "cannot write events to {}: {error}; dropping events (whole lines) and \
                         retrying with each next event",
                        self.destination
                    );
                    self.failing = Some(error);
                }
            }
        }
    }

    /// Whether the destination is a regular file (not a pipe, a terminal or a device).
    fn regular_file(&self) -> bool {
        self.file.metadata().is_ok_and(|m| m.file_type().is_file())
    }

    fn lose(&mut self) {
        self.shared.lost.inc();
        self.carry += 1;
        self.total_dropped += 1;
    }

    fn reopen(&mut self) {
        match &self.destination {
            Destination::Stdout => {
                info!("SIGHUP: events go to standard output, there is no file to re-open")
            }
            Destination::File(path) => match self.destination.open() {
                Ok(file) => {
                    self.file = file;
                    info!("SIGHUP: re-opened {}", path.display());
                }
                Err(e) => warn!(
                    "SIGHUP: cannot re-open {}: {e}; still writing to the file opened before",
                    path.display()
                ),
            },
        }
    }
}

/// Whether a failed write means the reader went away for good, so that the agent stops: EPIPE (a
/// pipe's reader closed it); EIO or ENXIO on what is not a regular file (a terminal that hung up,
/// a device that went away), which every later write would fail with too. Any other error, and a
/// regular file's EIO (the disk's), costs the event and the next one is tried.
fn reader_gone(error: &io::Error, regular_file: bool) -> bool {
    match error.raw_os_error() {
        Some(libc::EPIPE) => true,
        Some(libc::EIO | libc::ENXIO) => !regular_file,
        _ => error.kind() == io::ErrorKind::BrokenPipe,
    }
}

/// Writes one line. If the write fails part-way into a regular file, the file is cut back to
/// where the line began, so that it holds only whole lines; on a pipe, socket or terminal, which
/// cannot be cut, the part written is ended with a newline, so that the lines after it stay
/// whole.
fn write_line(file: &mut File, line: &[u8]) -> io::Result<()> {
    let start = file
        .metadata()
        .ok()
        .filter(|m| m.file_type().is_file())
        .map(|m| m.len());
    let (written, Err(error)) = write_waiting(file, line) else {
        return Ok(());
    };
    match start {
        Some(len) => {
            // Also seek: a file not opened for appending (`kpo run > file`) would otherwise get
            // a hole where the cut line was.
            let cut = file
                .set_len(len)
                .and_then(|()| file.seek(SeekFrom::Start(len)).map(|_| ()));
            if let Err(e) = cut {
                warn!("cannot remove a partly written line from the event file: {e}");
            }
        }
        None if written > 0 => {
            let _ = write_waiting(file, b"\n");
        }
        None => {}
    }
    Err(error)
}

/// `write_all` that also waits on a destination left non-blocking. `O_NONBLOCK` belongs to the
/// open file, which the agent shares with whoever opened its standard output or the pipe behind
/// `--events`: there a full pipe answers EAGAIN, and giving up would leave part of a line for the
/// next one to be glued to. Waiting is what a blocking destination does; this thread is the
/// writer's alone, and the queue in front of it drops whole events meanwhile. Returns the bytes
/// written, with the error that stopped it.
fn write_waiting(file: &mut File, mut rest: &[u8]) -> (usize, io::Result<()>) {
    let total = rest.len();
    while !rest.is_empty() {
        match file.write(rest) {
            Ok(0) => return (total - rest.len(), Err(io::ErrorKind::WriteZero.into())),
            Ok(n) => rest = &rest[n..],
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                let mut fds = [nix::poll::PollFd::new(
                    file.as_fd(),
                    nix::poll::PollFlags::POLLOUT,
                )];
                // POLLERR or POLLHUP end the wait too: the next write reports them.
                if let Err(e) = nix::poll::poll(&mut fds, nix::poll::PollTimeout::NONE) {
                    if e != nix::errno::Errno::EINTR {
                        return (total - rest.len(), Err(e.into()));
                    }
                }
            }
            Err(e) => return (total - rest.len(), Err(e)),
        }
    }
    (total, Ok(()))
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;

    fn stop(windows: u64) -> Event {
        Event::Stop {
            reason: "SIGTERM".into(),
            windows,
        }
    }

    fn lines(path: &Path) -> Vec<serde_json::Value> {
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    fn temp(name: &str) -> PathBuf {
        let p = std::env::temp_dir().join(format!("kpo-sink-{name}-{}", std::process::id()));
        let _ = std::fs::remove_file(&p);
        p
    }

    #[test]
    fn writes_whole_lines_and_a_total_in_stop() {
        let path = temp("ok");
        let mut sink = EventSink::open(&path, DEFAULT_QUEUE_BYTES).unwrap();
        sink.send(&stop(1));
        sink.send_last(&stop(2));
        assert_eq!(sink.close(Duration::from_secs(10)), 0);
        let events = lines(&path);
        assert_eq!(events.len(), 2);
        assert!(events[0].get("dropped_events").is_none());
        assert!(events[0].get("dropped_events_total").is_none());
        assert_eq!(events[1]["dropped_events_total"], 0);
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn a_failing_destination_counts_drops_and_never_blocks() {
        // /dev/full: every write fails with ENOSPC.
        let file = OpenOptions::new().write(true).open("/dev/full").unwrap();
        let mut sink = EventSink::start(Destination::File("/dev/full".into()), file, 1 << 20);
        let metrics = Arc::new(std::sync::Mutex::new(super::super::metrics::Metrics::new()));
        sink.set_metrics(metrics.clone());
        for i in 0..5 {
            sink.send(&stop(i));
        }
        sink.send_last(&stop(5));
        assert_eq!(sink.close(Duration::from_secs(10)), 6);
        let text = metrics.lock().unwrap().encode();
        assert!(text.contains("\nkpo_events_dropped_total 6\n"), "{text}");
    }

    #[test]
    fn a_stalled_reader_drops_whole_events_and_says_so() {
        let (read, write) = nix::unistd::pipe().unwrap();
        // Room for a few small lines in the queue; the pipe takes 64 KiB before it stalls.
        let mut sink = EventSink::start(Destination::Stdout, File::from(write), 2048);
        let metrics = Arc::new(std::sync::Mutex::new(super::super::metrics::Metrics::new()));
        sink.set_metrics(metrics.clone());
        let big = Event::Stop {
            reason: "x".repeat(4000),
            windows: 0,
        };
        for _ in 0..100 {
            sink.send(&big);
        }
        assert!(sink.dropped_at_queue > 0, "the queue's bound drops events");
        // The reader comes back: read everything until the writer closes its end.
        let mut reader = File::from(read);
        let drain = std::thread::spawn(move || {
            let mut all = String::new();
            reader.read_to_string(&mut all).unwrap();
            all
        });
        sink.send(&stop(1));
        sink.send_last(&stop(2));
        let dropped = sink.dropped_at_queue;
        let unwritten = sink.close(Duration::from_secs(30));
        assert_eq!(unwritten, dropped);
        let text = drain.join().unwrap();
        let events: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let announced: u64 = events
            .iter()
            .filter_map(|e| e["dropped_events"].as_u64())
            .sum();
        assert_eq!(announced, dropped);
        assert_eq!(events.last().unwrap()["dropped_events_total"], dropped);
        let text = metrics.lock().unwrap().encode();
        assert!(
            text.contains(&format!("\nkpo_events_dropped_total {dropped}\n")),
            "{text}"
        );
        assert_eq!(events.len() as u64, 102 - dropped);
    }

    /// Defect: a forced stop's `stop` line (LastWords, from the signal thread) left out of
    /// `dropped_events_total` the events dropped at the queue after the last line the loop
    /// queued: only that line's successor would have carried them to the writer. The total is
    /// now the run's, as `kpo_events_dropped_total` counts it, and the stop's `dropped_events`
    /// announces them.
    #[test]
    fn a_forced_stop_counts_the_drops_after_the_last_line_queued() {
        let (read, write) = nix::unistd::pipe().unwrap();
        let mut sink = EventSink::start(Destination::Stdout, File::from(write), 2048);
        let metrics = Arc::new(std::sync::Mutex::new(super::super::metrics::Metrics::new()));
        sink.set_metrics(metrics.clone());
        let big = Event::Stop {
            reason: "x".repeat(4000),
            windows: 0,
        };
        // Nobody reads, and the queue holds one line: a line offered while another waits there
        // is dropped, and once the pipe is full (64 KiB) and the writer waits on it, every one
        // is. Offered until one is dropped after the last line queued: a fixed count could end on
        // a line queued just after the writer, scheduled late on a busy machine, took the one
        // before it.
        let mut offered = 0;
        while sink.dropped_since_queued == 0 {
            assert!(offered < 10_000, "nothing dropped with nobody reading");
            sink.send(&big);
            offered += 1;
        }
        let words = sink.last_words().unwrap();
        let mut reader = File::from(read);
        let drain = std::thread::spawn(move || {
            let mut all = String::new();
            reader.read_to_string(&mut all).unwrap();
            all
        });
        assert!(words.send_stop(&stop(0), Duration::from_secs(60)));
        let lost = sink.shared.lost.get();
        assert_eq!(lost, sink.dropped_at_queue);
        sink.close(Duration::from_secs(60));
        let events: Vec<serde_json::Value> = drain
            .join()
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let last = events.last().unwrap();
        assert_eq!(last["reason"], "SIGTERM");
        assert_eq!(last["dropped_events_total"], lost);
        let announced: u64 = events
            .iter()
            .filter_map(|e| e["dropped_events"].as_u64())
            .sum();
        assert_eq!(announced, lost);
        let text = metrics.lock().unwrap().encode();
        assert!(
            text.contains(&format!("\nkpo_events_dropped_total {lost}\n")),
            "{text}"
        );
    }

    /// Defect: with a reader steadily slower than the events, every event that fit again logged
    /// "caught up" and the next one dropped logged the warning again: a pair per pair of events.
    /// (Counted by the sink: a test subscriber would race tracing's per-call-site cache with the
    /// other tests' threads.)
    #[test]
    fn a_steadily_slow_reader_gets_one_warning_not_one_per_event() {
        // The test is the writer: it takes lines off the queue when it says so.
        let (tx, rx) = mpsc::channel();
        let (_failed_tx, failed) = tokio::sync::mpsc::unbounded_channel();
        let shared = Arc::new(Shared::default());
        let line = encode(&stop(0), &hostname(), time::OffsetDateTime::now_utc()).len();
        let limit = 10 * line;
        let mut sink =
            EventSink::with_writer(Destination::Stdout, tx, shared.clone(), None, failed, limit);
        let mut announced = 0;
        let mut read_one = || match rx.try_recv() {
            Ok(Msg::Line {
                object,
                dropped_before,
                ..
            }) => {
                shared
                    .queued_bytes
                    .fetch_sub(object.len(), Ordering::AcqRel);
                announced += dropped_before;
                true
            }
            _ => false,
        };
        // Two events for every one read, for a long while.
        for _ in 0..200 {
            sink.send(&stop(0));
            sink.send(&stop(0));
            read_one();
        }
        assert!(sink.dropped_at_queue >= 100, "{}", sink.dropped_at_queue);
        assert_eq!(sink.drop_warnings, 1);
        assert_eq!(
            sink.dropping,
            Some(sink.dropped_at_queue),
            "not caught up yet"
        );
        // The reader catches up for real: the queue drains, and the next event says so.
        while read_one() {}
        sink.send(&stop(0));
        assert_eq!(sink.dropping, None);
        assert_eq!(sink.drop_warnings, 1);
        // Every drop is still announced by the line queued after it.
        while read_one() {}
        assert_eq!(announced, sink.dropped_at_queue);
    }

    /// The s45 review: an event larger than the room left in the queue was dropped though the
    /// queue was below its bound (a window event behind a small one, its reader keeping up). It
    /// is queued, past the bound by that one event; the next waits for the queue to drain.
    #[test]
    fn an_event_larger_than_the_room_left_is_queued_while_the_queue_is_below_its_bound() {
        let (tx, rx) = mpsc::channel();
        let (_failed_tx, failed) = tokio::sync::mpsc::unbounded_channel();
        let shared = Arc::new(Shared::default());
        let limit = MIN_QUEUE_BYTES;
        let mut sink =
            EventSink::with_writer(Destination::Stdout, tx, shared.clone(), None, failed, limit);
        let big = Event::Stop {
            reason: "x".repeat(limit),
            windows: 0,
        };
        sink.send(&stop(0));
        sink.send(&big);
        assert_eq!(sink.dropped_at_queue, 0, "below the bound: queued");
        assert!(shared.queued_bytes.load(Ordering::Acquire) > limit);
        sink.send(&stop(0));
        assert_eq!(sink.dropped_at_queue, 1, "at or past the bound: dropped");
        let queued: Vec<usize> = rx
            .try_iter()
            .filter_map(|m| match m {
                Msg::Line { object, .. } => Some(object.len()),
                _ => None,
            })
            .collect();
        assert_eq!(queued.len(), 2);
        assert!(queued[1] > limit, "{queued:?}");
    }

    /// Defect: `8M` or `8MiB` silently meant the default, and `0` dropped every event queued
    /// behind another.
    #[test]
    fn the_queue_bound_is_a_plain_number_in_range_or_refused() {
        use std::ffi::OsStr;
        assert_eq!(parse_queue_bytes(None).unwrap(), DEFAULT_QUEUE_BYTES);
        for (text, bytes) in [
            ("65536", 65536),
            ("8388608", 8 << 20),
            ("1073741824", 1 << 30),
        ] {
            assert_eq!(parse_queue_bytes(Some(OsStr::new(text))).unwrap(), bytes);
        }
        for text in [
            "",
            "0",
            "4096",
            "65535",
            "1073741825",
            "8M",
            "8MiB",
            "8_000_000",
            " 8388608",
            "+8388608",
            "-1",
            "99999999999999999999999",
        ] {
            let e = parse_queue_bytes(Some(OsStr::new(text))).unwrap_err();
            assert_eq!(
                e.to_string(),
                format!(
                    "KPO_EVENT_QUEUE_BYTES is {text:?}; it must be a whole number of bytes, \
                     digits only, from 65536 to 1073741824 (1 GiB); unset, it is 8388608 (8 MiB)"
                )
            );
        }
    }

    /// Defect: a terminal that hung up fails every write with EIO, which was taken for a
    /// transient error: the agent outlived its terminal, dropping every event.
    #[test]
    fn a_hung_up_terminal_is_a_reader_gone_and_a_disk_error_is_not() {
        let os = io::Error::from_raw_os_error;
        for gone in [libc::EPIPE, libc::EIO, libc::ENXIO] {
            assert!(reader_gone(&os(gone), false), "{gone}");
        }
        assert!(reader_gone(&os(libc::EPIPE), true));
        assert!(reader_gone(
            &io::Error::from(io::ErrorKind::BrokenPipe),
            false
        ));
        // A regular file's EIO is its disk's: retried with the next event, like ENOSPC.
        assert!(!reader_gone(&os(libc::EIO), true));
        assert!(!reader_gone(&os(libc::ENXIO), true));
        for transient in [libc::ENOSPC, libc::EDQUOT, libc::EAGAIN, libc::EFBIG] {
            assert!(!reader_gone(&os(transient), false), "{transient}");
            assert!(!reader_gone(&os(transient), true), "{transient}");
        }
    }

    /// A terminal that hung up: the writer stops as for EPIPE. A pseudo-terminal whose master is
    /// closed fails writes to its slave with EIO.
    #[test]
    fn a_terminal_that_hung_up_ends_the_event_stream() {
        use std::os::fd::FromRawFd;
        use std::os::unix::fs::OpenOptionsExt;
        // SAFETY: plain calls on a descriptor this test owns; `name` is a NUL-terminated buffer.
        let (master, slave) = unsafe {
            let master = libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY);
            assert!(master >= 0, "{}", io::Error::last_os_error());
            let master = File::from_raw_fd(master);
            use std::os::fd::AsRawFd;
            assert_eq!(libc::grantpt(master.as_raw_fd()), 0);
            assert_eq!(libc::unlockpt(master.as_raw_fd()), 0);
            let mut name = [0 as libc::c_char; 64];
            assert_eq!(
                libc::ptsname_r(master.as_raw_fd(), name.as_mut_ptr(), name.len()),
                0
            );
            let name = std::ffi::CStr::from_ptr(name.as_ptr()).to_str().unwrap();
            let slave = OpenOptions::new()
                .write(true)
                .custom_flags(libc::O_NOCTTY)
                .open(name)
                .unwrap();
            (master, slave)
        };
        drop(master);
        let mut sink = EventSink::start(Destination::Stdout, slave, 1 << 20);
        sink.send(&stop(1));
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let reason = runtime.block_on(async {
            tokio::time::timeout(Duration::from_secs(60), sink.failed())
                .await
                .expect("a hung-up terminal was taken for a transient error")
        });
        assert!(
            reason.starts_with("writing events to standard output: the reader went away"),
            "{reason}"
        );
    }

    #[test]
    fn reopen_follows_a_renamed_file() {
        let path = temp("hup");
        let rotated = path.with_extension("1");
        let mut sink = EventSink::open(&path, DEFAULT_QUEUE_BYTES).unwrap();
        sink.send(&stop(1));
        // Wait for the first line to land before rotating.
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::fs::read(&path).map_or(0, |b| b.len()) == 0 {
            assert!(Instant::now() < deadline, "first line never written");
            std::thread::sleep(Duration::from_millis(5));
        }
        std::fs::rename(&path, &rotated).unwrap();
        sink.reopen();
        sink.send_last(&stop(2));
        assert_eq!(sink.close(Duration::from_secs(10)), 0);
        assert_eq!(lines(&rotated)[0]["windows"], 1);
        assert_eq!(lines(&path)[0]["windows"], 2);
        let _ = std::fs::remove_file(&path);
        let _ = std::fs::remove_file(&rotated);
    }

    /// Defect: on a pipe left non-blocking (O_NONBLOCK belongs to the open file, shared with
    /// whoever made it), a full pipe's EAGAIN gave the line up part-way, and the next line was
    /// written straight after the part: two lines run together, neither JSON.
    #[test]
    fn a_non_blocking_pipe_is_waited_on_not_given_a_partial_line() {
        use std::os::fd::AsRawFd;
        let (read_end, write_end) = nix::unistd::pipe2(nix::fcntl::OFlag::O_NONBLOCK).unwrap();
        // The smallest pipe: one page.
        let capacity = unsafe { libc::fcntl(write_end.as_raw_fd(), libc::F_SETPIPE_SZ, 4096) };
        assert!(capacity >= 4096, "{}", io::Error::last_os_error());
        let mut file = File::from(write_end);
        let first = [vec![b'a'; 3 * capacity as usize], b"\n".to_vec()].concat();
        let second = b"{\"second\":true}\n".to_vec();
        let reader = std::thread::spawn(move || {
            // Only once the pipe is full, so the writer meets EAGAIN before any byte is read.
            loop {
                let mut queued: libc::c_int = 0;
                let rc = unsafe { libc::ioctl(read_end.as_raw_fd(), libc::FIONREAD, &mut queued) };
                assert_eq!(rc, 0);
                if queued >= capacity {
                    break;
                }
                std::thread::yield_now();
            }
            let mut fds = [nix::poll::PollFd::new(
                read_end.as_fd(),
                nix::poll::PollFlags::POLLIN,
            )];
            let mut got = Vec::new();
            let mut buf = [0u8; 1024];
            loop {
                match nix::unistd::read(read_end.as_raw_fd(), &mut buf) {
                    Ok(0) => return got,
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                    Err(nix::errno::Errno::EAGAIN) => {
                        nix::poll::poll(&mut fds, nix::poll::PollTimeout::NONE).unwrap();
                    }
                    Err(e) => panic!("{e}"),
                }
            }
        });
        write_line(&mut file, &first).unwrap();
        write_line(&mut file, &second).unwrap();
        drop(file);
        assert_eq!(reader.join().unwrap(), [first, second].concat());
    }

    #[test]
    fn a_partial_last_line_is_cut_off_or_ended_before_the_first_event() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.ndjson");
        let whole = "{\"schema\":\"kpo.event/v1\",\"kind\":\"stop\"}\n";
        let written = |before: &str| -> String {
            std::fs::write(&path, before).unwrap();
            let mut sink = EventSink::open(&path, 1 << 20).unwrap();
            sink.send(&stop(0));
            sink.close(Duration::from_secs(30));
            std::fs::read_to_string(&path).unwrap()
        };
        // An event line torn by a kill: cut off; and a fragment shorter than a line's start.
        for torn in [
            "{\"schema\":\"kpo.event/v1\",\"ts\":\"2026-12-05T07:4",
            "{\"sch",
        ] {
            let after = written(&format!("{whole}{torn}"));
            let lines: Vec<&str> = after.lines().collect();
            assert_eq!(lines.len(), 2, "{after}");
            assert_eq!(lines[0], whole.trim_end());
            let event: serde_json::Value = serde_json::from_str(lines[1]).unwrap();
            assert_eq!(event["kind"], "stop");
        }
        // Only a fragment, no whole line before it.
        let after = written("{\"schema\":\"kpo.ev");
        assert_eq!(after.lines().count(), 1, "{after}");
        serde_json::from_str::<serde_json::Value>(after.trim_end()).unwrap();
        // Someone else's text without its newline: kept, ended.
        let after = written("notes of the operator");
        let lines: Vec<&str> = after.lines().collect();
        assert_eq!(lines[0], "notes of the operator");
        serde_json::from_str::<serde_json::Value>(lines[1]).unwrap();
        // Whole lines: nothing touched.
        let after = written(whole);
        assert!(after.starts_with(whole), "{after}");
        assert_eq!(after.lines().count(), 2);
    }

    /// Defect (review s36 run #31): a start that failed on its policy or state directory left the
    /// empty `--events` file it had created. Only a file this open created, with no event offered
    /// and still empty, is removed; one that existed before stays as it was.
    #[test]
    fn only_an_event_file_this_start_created_and_never_used_is_removed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.ndjson");
        let sink = EventSink::open(&path, 1 << 20).unwrap();
        let unused = sink
            .unused_file()
            .expect("created by this open, no event offered");
        sink.close(Duration::from_secs(30));
        unused.remove();
        assert!(!path.exists());

        // An empty file that was there before: not this start's.
        std::fs::write(&path, "").unwrap();
        let sink = EventSink::open(&path, 1 << 20).unwrap();
        assert!(sink.unused_file().is_none());
        sink.close(Duration::from_secs(30));
        assert!(path.exists());
        std::fs::remove_file(&path).unwrap();

        // Created, then an event offered: the stream is in use.
        let mut sink = EventSink::open(&path, 1 << 20).unwrap();
        sink.send(&stop(0));
        assert!(sink.unused_file().is_none());
        sink.close(Duration::from_secs(30));
        assert!(std::fs::metadata(&path).unwrap().len() > 0);
        std::fs::remove_file(&path).unwrap();

        // Replaced at the path, or written to by someone else, before the removal: left alone.
        let sink = EventSink::open(&path, 1 << 20).unwrap();
        let unused = sink.unused_file().unwrap();
        sink.close(Duration::from_secs(30));
        std::fs::write(&path, "someone's\n").unwrap();
        unused.remove();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "someone's\n");
    }

    /// Defect (s46 storyI): another user's symbolic link at the `--events` path in a shared
    /// directory (sticky and world-writable, as /tmp) had the agent, as root, append events to the
    /// root-only file it named, or create the file a dangling one named. Such a link, a file of
    /// another user's there, a second name of a file (a hard link), and a directory on the way
    /// others may write in are refused, naming why; root's own file or link there is used.
    #[test]
    fn an_events_path_another_user_could_point_elsewhere_is_refused() {
        use std::os::unix::fs::{chown, lchown, symlink, PermissionsExt};
        if !nix::unistd::geteuid().is_root() {
            kpo_test_skip::skip("not root: the test makes files and links of another user");
            return;
        }
        let top = tempfile::tempdir().unwrap();
        let shared = top.path().join("shared");
        std::fs::create_dir(&shared).unwrap();
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o1777)).unwrap();
        let decoy = top.path().join("decoy");
        std::fs::write(&decoy, "root's own\n").unwrap();
        let refusal = |path: &Path| match EventSink::open(path, 1 << 20) {
            Err(e) => e.to_string(),
            Ok(sink) => {
                sink.close(Duration::from_secs(30));
                panic!("{} was opened", path.display())
            }
        };
        let nobody = 65534;

        let planted = shared.join("events.ndjson");
        symlink(&decoy, &planted).unwrap();
        lchown(&planted, Some(nobody), Some(nobody)).unwrap();
        let link_words = |link: &Path| {
            format!(
                "cannot open the event stream {link}: {link}, a symbolic link on the way to it, \
                 is uid 65534's, in the sticky directory {shared}, where uid 65534 may point it \
                 at any file at any time, and the agent, as root, would write events into that \
                 file; give --events the path it leads to, or make the link root's (as root: ln \
                 -sfn TARGET {link})",
                link = link.display(),
                shared = shared.display()
            )
        };
        assert_eq!(refusal(&planted), link_words(&planted));
        assert_eq!(std::fs::read_to_string(&decoy).unwrap(), "root's own\n");
        assert_eq!(
            crate::check::events_cannot_open(&planted).as_deref(),
            link_words(&planted).split_once(": ").map(|(_, why)| why),
            "kpo check --config refuses it alike"
        );

        // Dangling: the file it names is not created.
        let private = top.path().join("private");
        std::fs::create_dir(&private).unwrap();
        let dangling = shared.join("dangling.ndjson");
        symlink(private.join("planted"), &dangling).unwrap();
        lchown(&dangling, Some(nobody), Some(nobody)).unwrap();
        assert_eq!(refusal(&dangling), link_words(&dangling));
        assert!(!private.join("planted").exists());

        // A file of another user's, and a second name of root's file.
        let theirs = shared.join("theirs.ndjson");
        std::fs::write(&theirs, "").unwrap();
        chown(&theirs, Some(nobody), Some(nobody)).unwrap();
        let in_shared = |path: &Path, why: &str| {
            format!(
                "cannot open the event stream {path}: {path} is in a directory every user may \
                 make entries in (sticky, as /tmp), and {why}; give --events a path in a \
                 directory only root may write",
                path = path.display()
            )
        };
        assert_eq!(
            refusal(&theirs),
            in_shared(
                &theirs,
                "it is uid 65534's, who may remove it or rewrite what the agent writes"
            )
        );
        let hard = shared.join("hard.ndjson");
        std::fs::hard_link(&decoy, &hard).unwrap();
        assert_eq!(
            refusal(&hard),
            in_shared(
                &hard,
                "it has 2 names (hard links): another user may have made it one of a file of \
                 root's"
            )
        );
        assert_eq!(std::fs::read_to_string(&decoy).unwrap(), "root's own\n");
        // A link that appears between the check and the open is not followed.
        let appeared = shared.join("appeared.ndjson");
        symlink(&decoy, &appeared).unwrap();
        assert_eq!(
            format!(
                "cannot open the event stream {}: {}",
                appeared.display(),
                open_in_shared_directory(&appeared).unwrap_err()
            ),
            in_shared(
                &appeared,
                "it is a symbolic link: one left there by another user could point at any file \
                 of root's"
            )
        );

        // A directory on the way that every user may write in, not sticky.
        let open = top.path().join("open");
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
        let path = open.join("events.ndjson");
        assert_eq!(
            refusal(&path),
            format!(
                "cannot open the event stream {path}: {open}, a directory on the way to it \
                 (owner uid 0, group 0, mode 0777), lets every user rename what is in it: they \
                 could put a link to a file of root's in its place, and the agent, as root, \
                 would write events into that file; make {open} root's and writable by root \
                 alone (chown root:root, chmod go-w; or chmod +t, as /tmp is, if others must \
                 write in it), or give --events a path whose every directory is so",
                path = path.display(),
                open = open.display()
            )
        );
        assert!(!path.exists());

        // A directory of a group other than root's (Ubuntu's /var/log, root:syslog 0775): used.
        let logs = top.path().join("logs");
        std::fs::create_dir(&logs).unwrap();
        chown(&logs, Some(0), Some(nobody)).unwrap();
        std::fs::set_permissions(&logs, std::fs::Permissions::from_mode(0o775)).unwrap();
        let mut sink = EventSink::open(&logs.join("events.ndjson"), 1 << 20).unwrap();
        sink.send(&stop(0));
        sink.close(Duration::from_secs(30));
        assert_eq!(
            crate::check::events_cannot_open(&logs.join("events.ndjson")),
            None
        );
        // Below it, a directory every user may write in is still refused.
        let deeper = logs.join("open");
        std::fs::create_dir(&deeper).unwrap();
        std::fs::set_permissions(&deeper, std::fs::Permissions::from_mode(0o777)).unwrap();
        assert!(
            refusal(&deeper.join("events.ndjson")).contains(&format!(
                "{}, a directory on the way to it (owner uid 0, group 0, mode 0777), lets every \
                 user rename what is in it",
                deeper.display()
            )),
            "{}",
            refusal(&deeper.join("events.ndjson"))
        );
        // A directory on the way that does not exist: not opened (one made meantime would not
        // have been checked), said as the open said it.
        assert_eq!(
            refusal(&shared.join("missing/events.ndjson")),
            format!(
                "cannot open the event stream {}: No such file or directory (os error 2)",
                shared.join("missing/events.ndjson").display()
            )
        );

        // Root's own: a new file in the shared directory, and root's link there to its file.
        for path in [shared.join("new.ndjson"), shared.join("roots-link.ndjson")] {
            if path.ends_with("roots-link.ndjson") {
                symlink(private.join("events.ndjson"), &path).unwrap();
            }
            let mut sink = EventSink::open(&path, 1 << 20).unwrap();
            sink.send(&stop(0));
            sink.close(Duration::from_secs(30));
            assert_eq!(lines(&path).len(), 1, "{}", path.display());
        }
        assert_eq!(lines(&private.join("events.ndjson")).len(), 1);
    }

    /// `--events` a symbolic link whose target did not exist: the open created the target, and
    /// a failed start left it (the link's own inode was compared with the file's). The file is
    /// removed, the link, there before, stays.
    #[test]
    fn an_unused_event_file_created_through_a_symbolic_link_is_removed_and_the_link_kept() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("events.ndjson");
        let link = dir.path().join("link.ndjson");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let sink = EventSink::open(&link, 1 << 20).unwrap();
        let unused = sink
            .unused_file()
            .expect("created by this open, no event offered");
        sink.close(Duration::from_secs(30));
        assert!(target.exists());
        unused.remove();
        assert!(!target.exists());
        assert!(std::fs::symlink_metadata(&link).unwrap().is_symlink());
    }

    /// `--events` naming a device node: a terminal and the memory devices that keep nothing take
    /// events; a disk and any other character device (/dev/kmsg, /dev/mem) are refused, found
    /// with stat (the nodes made here are never opened).
    #[test]
    fn events_to_a_device_node_other_than_a_terminal_or_dev_null_are_refused() {
        use nix::sys::stat::{makedev, mknod, Mode, SFlag};
        let dir = tempfile::tempdir().unwrap();
        let node = |name: &str, kind: SFlag, major: u64, minor: u64| {
            let path = dir.path().join(name);
            mknod(
                &path,
                kind,
                Mode::from_bits_truncate(0o600),
                makedev(major, minor),
            )
            .map(|()| path)
        };
        let disk = match node("sda", SFlag::S_IFBLK, 8, 0) {
            Ok(path) => path,
            Err(e) => {
                kpo_test_skip::skip(&format!("cannot make device nodes ({e}; needs CAP_MKNOD)"));
                return;
            }
        };
        assert_eq!(
            device_refused(&disk).unwrap(),
            format!(
                "{} is a block device (a disk): events go to a file, a FIFO, a terminal, \
                 /dev/null, /dev/zero or /dev/full",
                disk.display()
            )
        );
        let kmsg = node("kmsg", SFlag::S_IFCHR, 1, 11).unwrap();
        assert_eq!(
            device_refused(&kmsg).unwrap(),
            format!(
                "{} is a character device (1:11) that is neither a terminal nor /dev/null, \
                 /dev/zero or /dev/full: events go to a file, a FIFO, a terminal or one of those",
                kmsg.display()
            )
        );
        let mem = node("mem", SFlag::S_IFCHR, 1, 1).unwrap();
        assert!(device_refused(&mem).is_some());
        let watchdog = node("watchdog", SFlag::S_IFCHR, 10, 130).unwrap();
        assert!(device_refused(&watchdog).is_some());
        for (name, major, minor) in [
            ("null", 1, 3),
            ("full", 1, 7),
            ("tty1", 4, 1),
            ("pts", 136, 3),
            // Serial consoles of other drivers (s38: ttyAMA0 was refused).
            ("ttyACM0", 166, 0),
            ("ttyUSB0", 188, 0),
            ("ttyAMA0", 204, 64),
            ("hvc0", 229, 0),
        ] {
            let path = node(name, SFlag::S_IFCHR, major, minor).unwrap();
            assert_eq!(device_refused(&path), None, "{name}");
        }
        // `kpo check --config` and the start refuse it before anything is opened.
        let c =
            crate::config::Config::from_toml(&format!("events = {kmsg:?}"), "kpo.toml").unwrap();
        let e = c.validate("kpo.toml").unwrap_err().to_string();
        assert!(
            e.starts_with(&format!(
                "kpo.toml: `events` {} is a character device",
                kmsg.display()
            )),
            "{e}"
        );
        // The sink refuses it before opening it too (a SIGHUP's re-open).
        let e = EventSink::open(&kmsg, 1 << 20).err().unwrap().to_string();
        assert!(e.contains("is a character device (1:11)"), "{e}");
        // A file, a FIFO, a path not there yet: not devices.
        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, Mode::from_bits_truncate(0o600)).unwrap();
        for path in [fifo, dir.path().join("new.ndjson")] {
            assert_eq!(device_refused(&path), None);
        }
    }

    /// Seen by hand (review s35 cli): `--events FIFO` with no reader held the start, after the
    /// open-files line, without a word. The start still waits for the reader (a log pipeline may
    /// start after the agent), and says so first.
    #[test]
    fn events_to_a_fifo_say_that_the_start_waits_for_its_reader() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("events.fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let reader_end = fifo.clone();
        let reader = std::thread::spawn(move || {
            let mut text = String::new();
            File::open(reader_end)
                .unwrap()
                .read_to_string(&mut text)
                .unwrap();
            text
        });
        let (sink, logged) = crate::logging::logged(|| EventSink::open(&fifo, 1 << 20).unwrap());
        assert!(
            logged.contains(&format!(
                "events: {} is a FIFO: waiting for its reader to open it",
                fifo.display()
            )),
            "{logged}"
        );
        sink.close(Duration::from_secs(30));
        assert_eq!(reader.join().unwrap(), "");
    }

    /// An event lost is never made up for by the lines written after it: the events mark moves
    /// only while nothing was lost (s53 review3 H1: `written` catching up with an `offered`
    /// taken before the loss moved it past the lost change).
    #[test]
    fn what_was_written_through_is_never_made_up_by_later_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.ndjson");
        let mut sink = EventSink::open(&path, 1 << 20).unwrap();
        sink.send(&stop(0));
        let first = sink.offered();
        assert!(sink.wait_written_through(first, Duration::from_secs(30)));
        // One lost (as a failed write or a full queue counts it), then more written.
        sink.shared.lost.inc();
        sink.send(&stop(1));
        sink.send(&stop(2));
        let deadline = Instant::now() + Duration::from_secs(30);
        while sink.shared.written.load(Ordering::Acquire) < 3 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(sink.shared.written.load(Ordering::Acquire), 3);
        assert!(!sink.written_through(first));
        assert!(!sink.written_through(sink.offered()));
        sink.close(Duration::from_secs(30));
    }
}
