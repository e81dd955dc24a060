//! The CLI's side of the socket: [`SocketControl`] implements [`Control`] by sending each request
//! to the running agent.
use std::{
    io::{BufRead, BufReader, Read, Write},
    os::unix::net::UnixStream,
    path::{Path, PathBuf},
    time::Duration,
};

use serde::de::DeserializeOwned;

use super::{Reply, Request};
use crate::{
    change::ChangeReport,
    control::{ApplyRequest, Control, ControlError, RevertRequest, Status},
    journal::Entry,
};

/// How long the CLI waits for the agent's answer (a change includes fsyncs and a read-back).
const REPLY_TIMEOUT: Duration = Duration::from_secs(90);

/// The longest reply read: a journal of tens of thousands of changes reaches it.
const MAX_REPLY: u64 = 16 << 20;

/// A request could not be carried, or the agent refused it.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("control socket {path}: {what}: {source}")]
    Io {
        path: PathBuf,
        what: &'static str,
        source: std::io::Error,
    },
    #[error("control socket {path}: the agent says: {message}")]
    Agent { path: PathBuf, message: String },
    #[error("control socket {path}: unreadable reply: {detail}")]
    Reply { path: PathBuf, detail: String },
    #[error(
        "control socket {path}: no reply within {} s; the agent may be stuck (its event stream and \
         `kpo journal` say what it did)",
        waited.as_secs_f64()
    )]
    NoReply { path: PathBuf, waited: Duration },
    #[error(
        "control socket {path}: the agent closed the connection without a reply (it may be \
         stopping); whether the request was carried out, `kpo journal` says"
    )]
    Closed { path: PathBuf },
    /// The kernel resets a connection whose listener closed it with data unread: the agent
    /// exited (stopped, killed, crashed) before it had read the whole request line, so never
    /// parsed it.
    #[error(
        "control socket {path}: the agent went away before it read the request (it stopped, \
         was killed or crashed): the request was not carried out; run the command again (with no agent \
         answering, it acts on the state directory itself)"
    )]
    GoneUnread { path: PathBuf },
    #[error(
        "control socket {path}: the reply is over {} MiB and was cut off (`kpo journal` pages \
         through the journal; other replies are not expected to grow this large)",
        limit >> 20
    )]
    TooLarge { path: PathBuf, limit: u64 },
    #[error(
        "control socket {path}: answered by uid {uid}, not root: not the agent (someone may have \
         put a socket of their own there); nothing was sent"
    )]
    NotTheAgent { path: PathBuf, uid: u32 },
}

/// Whether a socket answered by `peer` may be the agent: it runs as root. A CLI run by the same
/// (non-root) user as the listener, as in a developer's own test, is talking to itself.
pub(crate) fn may_be_the_agent(peer: u32, own: u32) -> bool {
    peer == 0 || peer == own
}

/// The running agent, reached through its socket.
pub struct SocketControl {
    path: PathBuf,
    /// How long a reply is waited for ([`REPLY_TIMEOUT`]; shorter in tests).
    reply_timeout: Duration,
}

impl SocketControl {
    /// Connects to `path` if an agent answers there. `Ok(None)`: no agent (no socket, or a stale
    /// one nobody listens on), so the caller may open the state directory itself.
    pub fn connect(path: &Path) -> Result<Option<SocketControl>, ApiError> {
        match UnixStream::connect(path) {
            Ok(_) => Ok(Some(SocketControl {
                path: path.to_path_buf(),
                reply_timeout: REPLY_TIMEOUT,
            })),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
                ) =>
            {
                Ok(None)
            }
            Err(source) => Err(ApiError::Io {
                path: path.to_path_buf(),
                what: if source.kind() == std::io::ErrorKind::PermissionDenied {
                    "connecting (the socket is root's only, mode 0600: run kpo as root)"
                } else {
                    "connecting"
                },
                source,
            }),
        }
    }

    /// The same, waiting `timeout` for a reply (a test of a silent listener).
    #[cfg(test)]
    pub(crate) fn with_reply_timeout(mut self, timeout: Duration) -> Self {
        self.reply_timeout = timeout;
        self
    }

    /// Sends one request and returns the agent's result.
    pub fn call<T: DeserializeOwned>(&self, request: &Request) -> Result<T, ApiError> {
        let io = |what| {
            let path = self.path.clone();
            move |source| ApiError::Io { path, what, source }
        };
        let mut stream = UnixStream::connect(&self.path).map_err(io("connecting"))?;
        // Root's `kpo approve` must not tell another user's listener what it approves, nor
        // print that user's made-up reply as the agent's: who listens is checked first.
        let peer =
            nix::sys::socket::getsockopt(&stream, nix::sys::socket::sockopt::PeerCredentials)
                .map_err(|e| std::io::Error::from_raw_os_error(e as i32))
                .map_err(io("reading the listener's credentials"))?;
        if !may_be_the_agent(peer.uid(), nix::unistd::Uid::current().as_raw()) {
            return Err(ApiError::NotTheAgent {
                path: self.path.clone(),
                uid: peer.uid(),
            });
        }
        stream
            .set_read_timeout(Some(self.reply_timeout))
            .map_err(io("setting a timeout"))?;
        let mut line = serde_json::to_vec(request).map_err(|e| ApiError::Reply {
            path: self.path.clone(),
            detail: e.to_string(),
        })?;
        line.push(b'\n');
        stream.write_all(&line).map_err(io("sending the request"))?;
        let mut reply = Vec::new();
        BufReader::new(stream.take(MAX_REPLY))
            .read_until(b'\n', &mut reply)
            .map_err(|e| match e.kind() {
                // What a read timeout on a socket gives.
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => {
                    ApiError::NoReply {
                        path: self.path.clone(),
                        waited: self.reply_timeout,
                    }
                }
                std::io::ErrorKind::ConnectionReset => ApiError::GoneUnread {
                    path: self.path.clone(),
                },
                _ => io("reading the reply")(e),
            })?;
        if reply.is_empty() {
            return Err(ApiError::Closed {
                path: self.path.clone(),
            });
        }
        if reply.last() != Some(&b'\n') && reply.len() as u64 >= MAX_REPLY {
            return Err(ApiError::TooLarge {
                path: self.path.clone(),
                limit: MAX_REPLY,
            });
        }
        let reply: Reply = serde_json::from_slice(&reply).map_err(|e| ApiError::Reply {
            path: self.path.clone(),
            detail: e.to_string(),
        })?;
        match reply {
            Reply::Ok(value) => serde_json::from_value(value).map_err(|e| ApiError::Reply {
                path: self.path.clone(),
                detail: e.to_string(),
            }),
            Reply::Error(message) => Err(ApiError::Agent {
                path: self.path.clone(),
                message,
            }),
        }
    }
}

impl Control for SocketControl {
    fn guards_changes(&self) -> bool {
        true
    }

    fn apply(&mut self, req: &ApplyRequest) -> Result<ChangeReport, ControlError> {
        Ok(self.call(&Request::Apply(req.clone()))?)
    }

    fn revert(&mut self, req: &RevertRequest, by: &str) -> Result<Vec<ChangeReport>, ControlError> {
        Ok(self.call(&Request::Revert {
            revert: req.clone(),
            by: Some(by.into()),
        })?)
    }

    fn journal(&mut self) -> Result<Vec<Entry>, ControlError> {
        Ok(self.call(&Request::Journal)?)
    }

    fn journal_page(&mut self, from: usize) -> Result<crate::control::JournalPage, ControlError> {
        Ok(self.call(&Request::JournalPage { from })?)
    }

    fn status(&mut self) -> Result<Status, ControlError> {
        Ok(self.call(&Request::Status)?)
    }

    fn pause(&mut self, by: &str) -> Result<bool, ControlError> {
        Ok(self.call(&Request::Pause { by: by.into() })?)
    }

    fn resume(&mut self, param: Option<&str>, by: &str) -> Result<Vec<String>, ControlError> {
        Ok(self.call(&Request::Resume {
            param: param.map(str::to_string),
            by: by.into(),
        })?)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_root_or_the_callers_own_user_may_be_the_agent() {
        assert!(super::may_be_the_agent(0, 0));
        assert!(super::may_be_the_agent(0, 1000));
        assert!(super::may_be_the_agent(1000, 1000));
        assert!(!super::may_be_the_agent(65534, 0));
        assert!(!super::may_be_the_agent(1001, 1000));
    }
}
