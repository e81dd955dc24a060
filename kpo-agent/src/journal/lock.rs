//! One writer at a time: an exclusive `flock` on `STATE_DIR/lock`, held by the running agent for
//! its whole life, or by one CLI command while the agent is down. The holder writes its pid and
//! role into the file so that a refused caller can say who holds it.
use std::{
    fs::{File, OpenOptions},
    io::{Read, Seek, Write},
    os::unix::fs::OpenOptionsExt,
    path::Path,
    time::{Duration, Instant},
};

use nix::{
    errno::Errno,
    fcntl::{Flock, FlockArg},
};
use serde::{Deserialize, Serialize};

use super::JournalError;

pub const LOCK_FILE: &str = "lock";

/// Who holds the state directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Holder {
    /// `kpo run`: holds the lock for its life; other callers go through its socket.
    Agent,
    /// A `kpo` command working on the journal directly while the agent is down.
    Cli,
}

impl Holder {
    fn as_str(self) -> &'static str {
        match self {
            Holder::Agent => "agent",
            Holder::Cli => "cli",
        }
    }
}

pub struct StateLock {
    _lock: Flock<File>,
}

impl std::fmt::Debug for StateLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StateLock")
    }
}

/// Takes the lock, waiting up to `wait` while another CLI holds it. If the agent holds it, fails at
/// once with [`JournalError::AgentRunning`]: the agent never lets go while it runs.
pub fn acquire(dir: &Path, holder: Holder, wait: Duration) -> Result<StateLock, JournalError> {
    let path = dir.join(LOCK_FILE);
    let deadline = Instant::now() + wait;
    // On a read-only mount the lock cannot be made or opened to write, whether the file is
    // there or not.
    let mut file =
        open_lock_file(&path).map_err(|e| JournalError::io_in_state_dir(dir, &path, e))?;
    loop {
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(mut lock) => {
                let me = format!("{} {}\n", std::process::id(), holder.as_str());
                lock.set_len(0)
                    .and_then(|()| lock.rewind())
                    .and_then(|()| lock.write_all(me.as_bytes()))
                    .map_err(|e| JournalError::io(&path, e))?;
                return Ok(StateLock { _lock: lock });
            }
            Err((f, Errno::EWOULDBLOCK)) => {
                file = f;
                let (pid, who) = owner(&mut file);
                if who.as_deref() == Some("agent") {
                    return Err(JournalError::AgentRunning {
                        dir: dir.to_path_buf(),
                        pid,
                    });
                }
                if Instant::now() >= deadline {
                    return Err(JournalError::Busy {
                        dir: dir.to_path_buf(),
                        pid,
                        holder: who.unwrap_or_else(|| "unknown".into()),
                    });
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            Err((_, errno)) => return Err(JournalError::io(&path, errno.into())),
        }
    }
}

#[cfg(test)]
thread_local! {
    /// Test hook: the next lock file opened on this thread fails with this errno (a read-only
    /// mount, without mounting one).
    pub(crate) static FAIL_OPEN: std::cell::Cell<Option<Errno>> = const { std::cell::Cell::new(None) };
}

fn open_lock_file(path: &Path) -> std::io::Result<File> {
    #[cfg(test)]
    if let Some(errno) = FAIL_OPEN.with(std::cell::Cell::take) {
        return Err(std::io::Error::from_raw_os_error(errno as i32));
    }
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)
}

fn owner(file: &mut File) -> (Option<u32>, Option<String>) {
    let mut text = String::new();
    if file.rewind().is_err() || file.read_to_string(&mut text).is_err() {
        return (None, None);
    }
    let mut words = text.split_whitespace();
    let pid = words.next().and_then(|p| p.parse().ok());
    (pid, words.next().map(str::to_string))
}
