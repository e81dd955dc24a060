//! The agent's side of the socket: bind it safely, check every caller, hand requests to the run
//! loop. Nothing here blocks the loop: each connection is its own task, bounded in size and time.
use std::{
    os::{
        fd::{AsFd, BorrowedFd, OwnedFd},
        unix::fs::{DirBuilderExt, FileTypeExt, PermissionsExt},
    },
    path::{Path, PathBuf},
    time::Duration,
};

use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader},
    net::{UnixListener, UnixStream},
    sync::{mpsc, oneshot},
};
use tracing::{info, warn};

use super::{Reply, Request, MAX_REQUEST_BYTES};

/// How long a caller may take to send its request, and the loop to answer it.
const IO_TIMEOUT: Duration = Duration::from_secs(10);
const ANSWER_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the caller's login name may take to look up: NSS may ask a directory service that
/// does not answer.
const NAMING_TIMEOUT: Duration = Duration::from_secs(5);

/// The answer to a request the agent will not take up because it is stopping.
pub const STOPPING: &str = "the agent is stopping; the request was not carried out";

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("{path}: {what}: {source}")]
    Io {
        path: PathBuf,
        what: &'static str,
        source: std::io::Error,
    },
    #[error(
        "{0}: another agent (in another network namespace) answers on this socket; stop it \
         first or give this one its own --socket"
    )]
    InUse(PathBuf),
    #[error("{0} exists and is not a socket; refusing to replace it")]
    NotASocket(PathBuf),
    #[error(
        "{path}: a process of uid {uid} (pid {pid}) listens on this socket, not an agent (agents \
         run as root); it was not put there by KPO: remove it, or give --socket another path"
    )]
    NotAnAgent { path: PathBuf, uid: u32, pid: i32 },
    #[error(
        "{dir}: refusing to put the control socket here: {why}; give --socket a path in a \
         directory only root can write (the default is /run/kpo/kpo.sock)"
    )]
    UnsafeDir { dir: PathBuf, why: String },
    #[error(
        "{dir}: refusing to put the control socket here: {ancestor}, a directory above it \
         (owner uid {owner}, group {group}, mode {mode:04o}), {who} rename what is in it: they \
         could move the socket's directory away and put one of their own in its place; make \
         {ancestor} root's and writable by root alone (chown root:root, chmod go-w; or chmod +t, \
         as /tmp is, if others must write in it), or give --socket a path whose every directory \
         is so (the default is /run/kpo/kpo.sock)"
    )]
    UnsafeAncestor {
        dir: PathBuf,
        ancestor: PathBuf,
        owner: u32,
        group: u32,
        mode: u32,
        /// Who else may change it, followed by "rename": "lets group G", "lets every user",
        /// "belongs to uid U, who may".
        who: String,
    },
    #[error(
        "{dir}: refusing to put the control socket here: {link}, a symbolic link on the way to \
         it, is uid {owner}'s, in the sticky directory {holder}, where uid {owner} may replace it \
         at any time with a link to a directory of their own; give --socket the path it leads \
         to, or make the link root's (as root: ln -sfn TARGET {link})"
    )]
    ForeignLink {
        dir: PathBuf,
        link: PathBuf,
        owner: u32,
        holder: PathBuf,
    },
}

/// A request from a root caller, with where its answer goes.
pub struct Incoming {
    pub request: Request,
    /// The caller as the kernel names it (crate::who::who_is on the connection's peer
    /// credentials): what the agent journals as `by`, not what the request says. A request
    /// that journals no `by` ([`Request::journals_who_asks`]) gets only the uid and pid, its
    /// name not looked up.
    pub caller: String,
    pub answer: oneshot::Sender<Reply>,
    /// The connection the request came on, to ask when it is taken up whether the caller still
    /// waits for the answer. None: nothing to ask (a request made in-process, as tests do; or a
    /// connection whose descriptor could not be duplicated, which the log says).
    pub connection: Option<Connection>,
}

impl Incoming {
    /// Whether the caller has given up on its answer: it dropped the request's answer channel
    /// (the connection's own 60 s passed), or it closed the connection (the CLI's 90 s passed
    /// while the loop was stalled, so the connection's timers had not even started). Either way
    /// acting now would do what the caller was told, or will assume, did not happen.
    pub fn caller_gave_up(&self) -> bool {
        self.answer.is_closed() || self.connection.as_ref().is_some_and(Connection::hung_up)
    }
}

/// The agent's end of a caller's connection (its own descriptor: the connection's task may
/// close the stream first).
pub struct Connection(OwnedFd);

impl Connection {
    /// A descriptor of its own on `stream`'s socket.
    pub fn of(stream: impl AsFd) -> std::io::Result<Connection> {
        stream.as_fd().try_clone_to_owned().map(Connection)
    }

    /// Whether the caller has closed its end (see [`hung_up`]).
    pub fn hung_up(&self) -> bool {
        hung_up(self.0.as_fd())
    }
}

/// Whether the peer of the Unix stream socket `fd` has closed its end, asked without waiting.
///
/// POLLHUP is set once both directions are shut down: the peer's close (or exit, or kill) does
/// that. A peer that only closed its sending side (`shutdown(SHUT_WR)`, as `socat` does at the
/// end of its input, then waits for `-t` seconds) sets POLLRDHUP alone, and still waits for its
/// answer: it is not taken as gone. A poll that fails
/// cannot tell, and counts as not gone (the request is served, as before this check).
fn hung_up(fd: BorrowedFd<'_>) -> bool {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    // POLLHUP is reported whatever is asked for.
    let mut fds = [PollFd::new(fd, PollFlags::empty())];
    loop {
        match poll(&mut fds, PollTimeout::ZERO) {
            Ok(_) => {
                return fds[0]
                    .revents()
                    .is_some_and(|r| r.contains(PollFlags::POLLHUP))
            }
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => {
                warn!(error = %e, "control socket: cannot tell whether the caller still waits");
                return false;
            }
        }
    }
}

/// The bound socket; removed on drop.
pub struct Server {
    path: PathBuf,
    /// Every connection's task holds a clone (the accept loop holds only a weak one): once this
    /// one is dropped, the channel closes when the last connection has written its answer.
    connections_open: Option<mpsc::Sender<()>>,
    all_connections_done: mpsc::Receiver<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

impl Server {
    /// Binds `path` (mode 0600; its directory created 0755 if missing), replacing a stale socket
    /// left by a killed agent, and starts accepting. Requests arrive on the returned receiver.
    pub fn bind(path: &Path) -> Result<(Server, mpsc::Receiver<Incoming>), ServeError> {
        let io = |what| {
            move |source| ServeError::Io {
                path: path.to_path_buf(),
                what,
                source,
            }
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            if !dir.exists() {
                // What is there already is checked before anything is made under it: a refused
                // path leaves no new directory behind.
                refuse_unusable(path)?;
            }
            // At most 0755 (the umask may take more): created 0777 less the umask, under `umask
            // 000` the directory was then refused by the check below and left behind, writable
            // by every user (s55 story AU-6).
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o755)
                .create(dir)
                .map_err(io("creating its directory"))?;
        }
        let stale = refuse_unusable(path)?;
        if stale {
            std::fs::remove_file(path).map_err(io("removing the stale socket"))?;
        }
        // Created with no access for anyone but the owner, then set exactly: there is no moment
        // at which another user could connect.
        let listener = bind_owner_only(path).map_err(io("binding"))?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .map_err(io("setting mode 0600"))?;
        let (tx, rx) = mpsc::channel(16);
        let (connections_open, all_connections_done) = mpsc::channel(1);
        tokio::spawn(accept_loop(listener, tx, connections_open.downgrade()));
        info!(socket = %path.display(), "control socket listening");
        Ok((
            Server {
                path: path.to_path_buf(),
                connections_open: Some(connections_open),
                all_connections_done,
            },
            rx,
        ))
    }

    /// Whether `kpo run` would be refused this socket path, checked before the agent makes its
    /// state directory: a start refused at the bind left a new state directory behind (s55
    /// story AV-8). [`Server::bind`] checks again.
    pub fn refuse_before_start(path: &Path) -> Result<(), ServeError> {
        refuse_unusable(path).map(|_stale| ())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// At shutdown: answers every request still queued in `requests` with [`STOPPING`] (none is
    /// carried out), then gives the connections up to `within` to write their answers, since
    /// the runtime ends with the agent and an unwritten answer leaves the caller guessing.
    /// Callers that connect from now on get [`STOPPING`] too. Returns how many were turned away.
    pub async fn turn_away(
        &mut self,
        requests: &mut mpsc::Receiver<Incoming>,
        within: Duration,
    ) -> usize {
        requests.close();
        let mut turned_away = 0;
        while let Ok(incoming) = requests.try_recv() {
            let _ = incoming.answer.send(Reply::Error(STOPPING.into()));
            turned_away += 1;
        }
        self.connections_open = None;
        // None once every connection's task has ended; a caller still sending its request
        // (up to IO_TIMEOUT) is not waited for past `within`.
        let _ = tokio::time::timeout(within, self.all_connections_done.recv()).await;
        turned_away
    }
}

async fn accept_loop(
    listener: UnixListener,
    tx: mpsc::Sender<Incoming>,
    connections_open: mpsc::WeakSender<()>,
) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                // Not counted once the agent is stopping: such a caller is answered STOPPING at
                // once, and nothing waits for it.
                let open = connections_open.upgrade();
                let tx = tx.clone();
                tokio::spawn(async move {
                    serve_one(stream, tx).await;
                    drop(open);
                });
            }
            Err(e) => {
                warn!(error = %e, "control socket accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Refuses a socket path the agent must not serve on: another agent's (or anyone's) listener,
/// something that is not a socket, or a directory someone else could change (where it does not
/// exist yet, the nearest one above that does). Returns whether a stale socket is there to remove.
fn refuse_unusable(path: &Path) -> Result<bool, ServeError> {
    // sun_path's 108 bytes, its last a NUL: a longer path fails only at the bind, after the
    // state directory was made (s56 review1 R1-9).
    if path.as_os_str().len() > 107 {
        return Err(ServeError::Io {
            path: path.to_path_buf(),
            what: "binding",
            source: std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "a unix socket's path is at most 107 bytes; give --socket a shorter one",
            ),
        });
    }
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    if !dir.exists() {
        let there = dir
            .ancestors()
            .find(|a| a.as_os_str().is_empty() || a.exists())
            .filter(|a| !a.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        super::socket_dir::check(there)?;
        return Ok(false);
    }
    let stale = match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => {
            if let Ok(stream) = std::os::unix::net::UnixStream::connect(path) {
                // Another agent runs as root; anyone else's listener is no agent, and saying
                // "another agent answers" would send the operator looking for the wrong thing.
                let peer = nix::sys::socket::getsockopt(
                    &stream,
                    nix::sys::socket::sockopt::PeerCredentials,
                );
                let own = nix::unistd::Uid::current().as_raw();
                return Err(match peer {
                    Ok(p) if p.uid() != 0 && p.uid() != own => ServeError::NotAnAgent {
                        path: path.to_path_buf(),
                        uid: p.uid(),
                        pid: p.pid(),
                    },
                    _ => ServeError::InUse(path.to_path_buf()),
                });
            }
            true
        }
        Ok(_) => return Err(ServeError::NotASocket(path.to_path_buf())),
        Err(_) => false,
    };
    // After the look at a listener already there, which names its owner more usefully.
    // The socket's directory and every one above it (super::socket_dir).
    super::socket_dir::check(dir)?;
    Ok(stale)
}

async fn serve_one(mut stream: UnixStream, tx: mpsc::Sender<Incoming>) {
    let reply = match answer(&mut stream, tx, crate::who::who_is).await {
        Ok(reply) => reply,
        Err(reply) => reply,
    };
    let mut line =
        serde_json::to_vec(&reply).unwrap_or_else(|_| b"{\"error\":\"encoding\"}".to_vec());
    line.push(b'\n');
    let _ = tokio::time::timeout(IO_TIMEOUT, async {
        stream.write_all(&line).await?;
        // The end of the answer, now: the request the loop has not taken up yet keeps a
        // descriptor of this socket ([`Connection`]), so dropping the stream would not end it,
        // and a client that reads until the end would wait for the loop.
        stream.shutdown().await
    })
    .await;
}

/// How much of an oversized request is read and thrown away so that its caller gets the answer.
const MAX_DISCARDED_BYTES: u64 = 16 * 1024 * 1024;

/// How long the rest of an oversized request may pause before the refusal is sent anyway: a
/// caller that sent no newline and waits for the answer is not kept waiting for [`IO_TIMEOUT`].
const DISCARD_PAUSE: Duration = Duration::from_millis(500);

/// Reads what is left of an oversized request line, up to [`MAX_DISCARDED_BYTES`] and
/// [`IO_TIMEOUT`] (and until it pauses for [`DISCARD_PAUSE`]), and throws it away. Answering while
/// the caller is still writing would close the socket under its write: it would see only
/// "Broken pipe", never the refusal (s55 story AU-7, a 1 MiB line by socat).
async fn discard_rest_of_line(
    reader: impl tokio::io::AsyncBufRead + Unpin,
    at_most: u64,
    within: Duration,
) {
    let mut rest = reader.take(at_most);
    let _ = tokio::time::timeout(within, async {
        loop {
            let Ok(chunk) = tokio::time::timeout(DISCARD_PAUSE, rest.fill_buf()).await else {
                return Ok(());
            };
            let chunk = chunk?;
            if chunk.is_empty() {
                return Ok::<_, std::io::Error>(());
            }
            let (used, ended) = match chunk.iter().position(|&b| b == b'\n') {
                Some(at) => (at + 1, true),
                None => (chunk.len(), false),
            };
            rest.consume(used);
            if ended {
                return Ok(());
            }
        }
    })
    .await;
}

/// Reads one request from a root caller and hands it to the loop with the caller's name, by
/// `name` (its pid and uid: crate::who::who_is, which asks NSS) for a request that journals who
/// asks.
async fn answer(
    stream: &mut UnixStream,
    tx: mpsc::Sender<Incoming>,
    name: impl FnOnce(u32, u32) -> String + Send + 'static,
) -> Result<Reply, Reply> {
    let cred = stream
        .peer_cred()
        .map_err(|e| Reply::Error(format!("cannot read the caller's credentials: {e}")))?;
    if cred.uid() != 0 {
        warn!(uid = cred.uid(), pid = %pid_of(&cred), "control socket: refused a caller that is not root");
        // Its request is read and dropped first (at most a request's length, for at most a
        // second: a caller trickling bytes does not hold the connection for long; s59 review1
        // R1-9): closed with it unread, the connection is reset, and a caller reading to the end,
        // or still writing, gets the reset instead of the refusal (s58 story BJ-6).
        let (read, _) = stream.split();
        discard_rest_of_line(
            BufReader::new(read),
            MAX_REQUEST_BYTES as u64 + 1,
            2 * DISCARD_PAUSE,
        )
        .await;
        return Err(Reply::Error(format!(
            "refused: the KPO control socket serves root only (caller uid {})",
            cred.uid()
        )));
    }
    let mut line = Vec::new();
    let (read, _) = stream.split();
    let mut reader = BufReader::new(read).take(MAX_REQUEST_BYTES as u64 + 1);
    let n = tokio::time::timeout(IO_TIMEOUT, reader.read_until(b'\n', &mut line))
        .await
        .map_err(|_| Reply::Error("timed out waiting for the request line".into()))?
        .map_err(|e| Reply::Error(format!("reading the request: {e}")))?;
    if n > MAX_REQUEST_BYTES {
        discard_rest_of_line(reader.into_inner(), MAX_DISCARDED_BYTES, IO_TIMEOUT).await;
        return Err(Reply::Error(format!(
            "request longer than {MAX_REQUEST_BYTES} bytes"
        )));
    }
    let request: Request =
        serde_json::from_slice(&line).map_err(|e| Reply::Error(format!("not a request: {e}")))?;
    if let Some(why) = request.reason_too_long() {
        return Err(Reply::Error(why));
    }
    // The line may have waited in the socket while the loop was stalled, past the time the
    // caller waits (the timers here start only now): a caller that has closed the connection
    // was told there was no answer, and its request is not taken up.
    if hung_up(stream.as_fd()) {
        warn!(
            uid = cred.uid(),
            pid = %pid_of(&cred),
            "control socket: the caller closed the connection before its request was read; \
             dropped, not carried out"
        );
        return Err(Reply::Error(
            "the connection was closed before the request was read; not carried out".into(),
        ));
    }
    let connection = Connection::of(&*stream)
        .inspect_err(|e| {
            warn!(
                error = %e,
                "control socket: cannot keep the connection's descriptor; the request will be \
                 carried out even if its caller leaves before it is taken up"
            )
        })
        .ok();
    // Read while the caller waits for its answer, so its /proc entries are there. Only a
    // request that journals who asks waits on (and spends a blocking thread for) the login
    // name: NSS may ask a directory service that does not answer.
    let uid = cred.uid();
    let caller = match cred.pid().and_then(|p| u32::try_from(p).ok()) {
        Some(pid) if request.journals_who_asks() => {
            name_caller(pid, uid, NAMING_TIMEOUT, move || name(pid, uid)).await
        }
        // Unused (nothing is journaled), so not even /proc is read for it.
        Some(pid) => format!("operator (uid {uid}, pid {pid})"),
        None => format!("operator (uid {uid}, pid unknown)"),
    };
    let (answer_tx, answer_rx) = oneshot::channel();
    // One deadline for queueing and answering: a full queue counts against it too. A request
    // still queued when it passes is dropped by the agent (its answer channel is closed).
    let exchange = async {
        tx.send(Incoming {
            request,
            caller,
            answer: answer_tx,
            connection,
        })
        .await
        .map_err(|_| Reply::Error(STOPPING.into()))?;
        answer_rx
            .await
            .map_err(|_| Reply::Error("the agent dropped the request".into()))
    };
    tokio::time::timeout(ANSWER_TIMEOUT, exchange)
        .await
        .map_err(|_| {
            Reply::Error(
                "the agent did not answer in time (a request it had not taken up yet is not \
                 carried out; kpo journal shows what was)"
                    .into(),
            )
        })?
}

/// The caller's pid as the log shows it: a number (`pid=4711`, not `pid=Some(4711)`).
fn pid_of(cred: &tokio::net::unix::UCred) -> String {
    cred.pid()
        .map_or_else(|| "unknown".to_string(), |p| p.to_string())
}

/// The caller as `name` gives it, off the run loop's thread, or by its ids alone when `name` has
/// not answered `within` (a directory service that hangs): waiting on it would hold the request
/// past the CLI's own wait, and carry it out after the operator was told it had not answered.
async fn name_caller(
    pid: u32,
    uid: u32,
    within: Duration,
    name: impl FnOnce() -> String + Send + 'static,
) -> String {
    match tokio::time::timeout(within, tokio::task::spawn_blocking(name)).await {
        Ok(Ok(named)) => named,
        Ok(Err(_)) => format!("operator (uid {uid}, pid {pid})"),
        Err(_) => {
            warn!(
                uid,
                pid,
                "control socket: the caller's login name was not found within {} s (NSS); \
                 named by its ids",
                within.as_secs_f64()
            );
            crate::who::who_is_by_ids(pid, uid)
        }
    }
}

/// A listening socket at `path` whose file is created with mode 0600 (less the umask). Linux
/// creates a socket's file with the socket's own mode, so setting that mode before the bind
/// leaves no moment at which the file allows more. Setting the umask instead, as is usual, would
/// set it for every thread of the agent at once, and files other threads create meanwhile would
/// get the socket's mode.
fn bind_owner_only(path: &Path) -> std::io::Result<UnixListener> {
    use nix::sys::socket::{bind, listen, socket, AddressFamily, Backlog, SockFlag, SockType};
    use std::os::fd::AsRawFd;
    let socket = socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        None,
    )?;
    nix::sys::stat::fchmod(
        socket.as_raw_fd(),
        nix::sys::stat::Mode::from_bits_truncate(0o600),
    )?;
    bind(socket.as_raw_fd(), &nix::sys::socket::UnixAddr::new(path)?)?;
    listen(&socket, Backlog::MAXCONN)?;
    UnixListener::from_std(std::os::unix::net::UnixListener::from(socket))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    /// The socket's file is the owner's alone from the moment the bind creates it, by the
    /// socket's own mode rather than the umask. (The umask was set to 0177 around the bind
    /// before: it is the whole process's, and the directories other threads created meanwhile,
    /// other tests' temporary ones among them, came out without their owner's execute bit.)
    #[tokio::test]
    async fn the_socket_file_is_the_owners_alone_from_its_creation() {
        use std::os::unix::fs::PermissionsExt;
        let umask = || {
            let status = std::fs::read_to_string("/proc/self/status").unwrap();
            let line = status.lines().find(|l| l.starts_with("Umask:")).unwrap();
            u32::from_str_radix(line["Umask:".len()..].trim(), 8).unwrap()
        };
        let umask = umask();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kpo.sock");
        let _listener = super::bind_owner_only(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o600 & !umask, "umask {umask:03o}");
    }

    /// Defect: every request's caller was named through NSS (up to NAMING_TIMEOUT, and a
    /// blocking thread left stuck in a lookup that does not answer), the requests that only read
    /// too, which do not use the name. Only the requests that journal who asks look it up now.
    #[tokio::test]
    async fn only_requests_that_journal_who_asks_look_the_caller_up() {
        use std::sync::{
            atomic::{AtomicUsize, Ordering},
            Arc,
        };
        use tokio::io::AsyncWriteExt;
        if crate::api::socket_test_skipped_unless_root() {
            return;
        }
        let pid = std::process::id();
        let lookups = Arc::new(AtomicUsize::new(0));
        for (line, journals_who_asks) in [
            (r#"{"op":"status"}"#, false),
            (r#"{"op":"journal"}"#, false),
            (r#"{"op":"journal_page","from":0}"#, false),
            (r#"{"op":"pending"}"#, false),
            (
                r#"{"op":"explain","param":"net.core.somaxconn","limit":10}"#,
                false,
            ),
            (
                r#"{"op":"apply","address":"net.core.somaxconn","value":4096,"reason":"t"}"#,
                true,
            ),
            (r#"{"op":"revert","revert":{"id":7}}"#, true),
            (r#"{"op":"pause","by":"x"}"#, true),
            (r#"{"op":"resume","param":null,"by":"x"}"#, true),
            (r#"{"op":"approve","id":"ap-3","by":"x"}"#, true),
            (
                r#"{"op":"reject","id":"ap-3","by":"x","reason":null}"#,
                true,
            ),
        ] {
            let (mut agent_end, mut caller_end) = tokio::net::UnixStream::pair().unwrap();
            caller_end
                .write_all(format!("{line}\n").as_bytes())
                .await
                .unwrap();
            let (tx, mut requests) = tokio::sync::mpsc::channel::<super::Incoming>(1);
            let before = lookups.load(Ordering::SeqCst);
            let counted = lookups.clone();
            let lookup = move |pid: u32, uid: u32| {
                counted.fetch_add(1, Ordering::SeqCst);
                format!("operator from-nss (uid {uid}, pid {pid})")
            };
            let the_loop = async {
                let incoming = requests.recv().await.expect("the request");
                let _ = incoming
                    .answer
                    .send(super::Reply::Ok(serde_json::json!(null)));
                incoming.caller
            };
            let (reply, caller) = tokio::join!(super::answer(&mut agent_end, tx, lookup), the_loop);
            assert_eq!(
                reply,
                Ok(super::Reply::Ok(serde_json::json!(null))),
                "{line}"
            );
            let looked_up = lookups.load(Ordering::SeqCst) - before;
            if journals_who_asks {
                assert_eq!(looked_up, 1, "{line}");
                assert_eq!(
                    caller,
                    format!("operator from-nss (uid 0, pid {pid})"),
                    "{line}"
                );
            } else {
                assert_eq!(looked_up, 0, "{line}");
                assert_eq!(caller, format!("operator (uid 0, pid {pid})"), "{line}");
            }
        }
    }

    /// Defect: a request line that waited in the socket while the loop was stalled was carried
    /// out even when its caller had given up and closed the connection (the timers here start
    /// only once the line is read). A closed connection's request is not handed on; a caller
    /// that only finished sending (shutdown of its writing side) still waits, and is served.
    #[tokio::test]
    async fn a_request_whose_caller_closed_the_connection_is_not_handed_on() {
        use tokio::io::AsyncWriteExt;
        if crate::api::socket_test_skipped_unless_root() {
            return;
        }
        let line = "{\"op\":\"apply\",\"address\":\"net.core.somaxconn\",\"value\":4096,\"reason\":\"t\"}\n";
        let name = |uid: u32, pid: u32| format!("operator (uid {uid}, pid {pid})");

        // Closed before the agent read the line: refused, the loop never sees it.
        let (mut agent_end, mut caller_end) = tokio::net::UnixStream::pair().unwrap();
        caller_end.write_all(line.as_bytes()).await.unwrap();
        drop(caller_end);
        let (tx, mut requests) = tokio::sync::mpsc::channel::<super::Incoming>(1);
        let reply = super::answer(&mut agent_end, tx, name).await;
        assert_eq!(
            reply,
            Err(super::Reply::Error(
                "the connection was closed before the request was read; not carried out".into()
            ))
        );
        assert!(requests.try_recv().is_err(), "handed on to the loop");

        // Only its writing side shut: handed on, and not taken as gone until it closes.
        let (mut agent_end, mut caller_end) = tokio::net::UnixStream::pair().unwrap();
        caller_end.write_all(line.as_bytes()).await.unwrap();
        caller_end.shutdown().await.unwrap();
        let (tx, mut requests) = tokio::sync::mpsc::channel::<super::Incoming>(1);
        let the_loop = async {
            let incoming = requests.recv().await.expect("the request");
            assert!(!incoming.caller_gave_up());
            // Closed while the request waits for the loop: the loop sees it gone.
            drop(caller_end);
            assert!(incoming.caller_gave_up());
            let _ = incoming
                .answer
                .send(super::Reply::Ok(serde_json::json!(null)));
        };
        let (reply, ()) = tokio::join!(super::answer(&mut agent_end, tx, name), the_loop);
        assert_eq!(reply, Ok(super::Reply::Ok(serde_json::json!(null))));
    }

    /// Defect (s35 apr, by hand): the warning for a dropped request named the caller's pid as
    /// `pid=Some(26107)`. It is the number.
    #[test]
    fn a_dropped_requests_warning_names_the_callers_pid() {
        use tokio::io::AsyncWriteExt;
        if crate::api::socket_test_skipped_unless_root() {
            return;
        }
        let (reply, log) = crate::logging::logged(|| {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let (mut agent_end, mut caller_end) = tokio::net::UnixStream::pair().unwrap();
                caller_end
                    .write_all(b"{\"op\":\"status\"}\n")
                    .await
                    .unwrap();
                drop(caller_end);
                let (tx, _requests) = tokio::sync::mpsc::channel::<super::Incoming>(1);
                let name = |uid: u32, pid: u32| format!("operator (uid {uid}, pid {pid})");
                super::answer(&mut agent_end, tx, name).await
            })
        });
        assert!(reply.is_err(), "{reply:?}");
        assert!(log.contains("dropped, not carried out"), "{log}");
        assert!(
            log.contains(&format!("pid={}", std::process::id())),
            "{log}"
        );
    }

    /// Defect (review s29 run-output-api #5): the connection stayed open after the answer for as
    /// long as the request's descriptor was kept (a request the loop had not taken up when the
    /// answer timed out), so a client reading until the end (`socat -t 90`, `nc -U`) waited on
    /// the loop. The answer is followed by the end of the stream.
    #[tokio::test]
    async fn the_answer_ends_the_stream_while_the_request_is_still_held() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        if crate::api::socket_test_skipped_unless_root() {
            return;
        }
        let (agent_end, mut caller_end) = tokio::net::UnixStream::pair().unwrap();
        caller_end
            .write_all(b"{\"op\":\"status\"}\n")
            .await
            .unwrap();
        let (tx, mut requests) = tokio::sync::mpsc::channel::<super::Incoming>(1);
        let served = tokio::spawn(super::serve_one(agent_end, tx));
        let incoming = requests.recv().await.expect("the request");
        let _ = incoming
            .answer
            .send(super::Reply::Ok(serde_json::json!(null)));
        // Still held, as by a loop that has not got to it.
        let _held = incoming.connection;
        served.await.unwrap();
        let mut text = String::new();
        // Bounded so that a stream that does not end fails the test instead of hanging it.
        tokio::time::timeout(
            Duration::from_secs(30),
            caller_end.read_to_string(&mut text),
        )
        .await
        .expect("the stream ended after the answer")
        .unwrap();
        assert_eq!(text, "{\"ok\":null}\n");
    }

    /// A caller's close is told from a half close (POLLHUP needs both directions shut), on a
    /// descriptor of the agent's own that outlives the connection's task closing its stream.
    #[test]
    fn a_closed_connection_is_told_from_one_that_only_finished_sending() {
        use std::{net::Shutdown, os::unix::net::UnixStream};
        let (agent_end, caller_end) = UnixStream::pair().unwrap();
        let connection = super::Connection::of(&agent_end).unwrap();
        assert!(!connection.hung_up());
        caller_end.shutdown(Shutdown::Write).unwrap();
        assert!(!connection.hung_up());
        drop(caller_end);
        assert!(connection.hung_up());
        drop(agent_end);
        assert!(connection.hung_up());
    }

    /// A login name lookup that hangs does not hold the request: the caller is named by the
    /// ids the kernel and /proc give, and the request goes on.
    #[tokio::test]
    async fn a_caller_whose_name_does_not_come_is_named_by_its_ids() {
        let (release, released) = std::sync::mpsc::channel::<()>();
        let pid = std::process::id();
        let named = super::name_caller(pid, 0, Duration::from_millis(50), move || {
            // Ends the blocked lookup when the test is done (or, without the time limit, after
            // far longer than it: then its answer is the one returned, and the test fails).
            let _ = released.recv_timeout(Duration::from_secs(30));
            "operator from-nss (uid 0, pid 1)".to_string()
        })
        .await;
        let _ = release.send(());
        assert_eq!(named, crate::who::who_is_by_ids(pid, 0));
        assert!(named.ends_with(&format!("(uid 0, pid {pid})")), "{named}");
        assert!(!named.contains("from-nss"), "{named}");
    }
}
