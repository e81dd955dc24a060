//! One agent per network namespace.
//!
//! The state directory's lock keeps two agents off one journal, and the control socket off one
//! path, but two agents started with different state directories and sockets (a host service and
//! a pod with host networking, or a second `kpo run --state-dir` for a try) would both change,
//! journal, guard and revert the same kernel parameters, each without knowing of the other. So
//! `kpo run` first binds an abstract unix socket, `@kpo-agent`, and holds it for its life.
//!
//! Why an abstract socket and not a lock file: its name lives in the network namespace, which is
//! what the agent's own net.* sysctls belong to, so it is shared by every agent in that namespace,
//! even from different mount namespaces (a pod's /run is not the host's); and the kernel releases
//! it when the process ends, however it ends, so a killed agent never leaves a stale claim. An
//! agent in another network namespace does not see it, though host-wide parameters (vm.*,
//! cpufreq) are shared: the README asks for one agent per node, in the host's namespace.
use std::{
    os::{
        linux::net::SocketAddrExt,
        unix::net::{SocketAddr, UnixListener},
    },
    sync::{Arc, Mutex},
    time::Duration,
};

use tracing::{error, info, warn};

use super::unix_holder;
use crate::api::client::may_be_the_agent;

use nix::sys::socket::{
    connect, getsockopt, socket, sockopt::PeerCredentials, AddressFamily, SockFlag, SockType,
    UnixAddr,
};

/// The abstract name the running agent holds.
pub const NAME: &str = "kpo-agent";

#[derive(Debug, thiserror::Error)]
pub enum ClaimError {
    #[error(
        "another kpo agent{holder} runs in this network namespace (it holds the abstract socket \
         @{name}): two agents would change, journal and revert the same kernel parameters without \
         knowing of each other; stop it first"
    )]
    AnotherAgent { name: String, holder: String },
    #[error("cannot bind the abstract socket @{name} that marks the running agent: {source}")]
    Io {
        name: String,
        source: std::io::Error,
    },
    #[error(
        "cannot tell whether another kpo agent runs in this network namespace: a process that \
         cannot be one holds the abstract socket @{name}, and the kernel's list of unix sockets, \
         where an agent started beside it shows, could not be read: {source}"
    )]
    Unseen {
        name: String,
        source: std::io::Error,
    },
}

/// Held for the agent's life.
#[derive(Debug)]
pub struct Claim {
    name: String,
    /// The name, once held. Shared with the thread that takes it once a squatter lets go.
    listener: Arc<Mutex<Option<UnixListener>>>,
    /// While a squatter holds the name: this agent's own name, `@NAME.standby.N` (N random), by
    /// which another agent started meanwhile finds it ([`stand_by`]). Given back once the name is
    /// held.
    standby: Arc<Mutex<Option<UnixListener>>>,
    /// Set when the name is held by a process that cannot be a kpo agent, which the agent
    /// starts beside (see [`claim`]): what to warn of.
    pub squatted: Option<String>,
}

/// How often an agent started beside a squatter tries to take the name.
const RETRY: Duration = Duration::from_secs(5);

impl Claim {
    /// Whether the name is held.
    pub fn holds(&self) -> bool {
        self.listener
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some()
    }

    /// Tries once to take the name; true when it is held (now or already).
    pub fn try_take(&self) -> bool {
        self.take() == Taken::Held
    }

    fn take(&self) -> Taken {
        let mut held = self.listener.lock().unwrap_or_else(|e| e.into_inner());
        if held.is_some() {
            return Taken::Held;
        }
        let Ok(addr) = SocketAddr::from_abstract_name(self.name.as_bytes()) else {
            return Taken::Waiting;
        };
        match UnixListener::bind_addr(&addr) {
            Ok(listener) => {
                *held = Some(listener);
                *self.standby.lock().unwrap_or_else(|e| e.into_inner()) = None;
                info!(
                    "the abstract socket @{} is free again and held now: a second agent in \
                     this network namespace is refused from here on",
                    self.name
                );
                Taken::Held
            }
            // Judged by the kernel's word alone: a connection to learn its pid would stay in
            // that agent's queue, which nobody accepts, at every try.
            Err(_) => match unix_holder::stream_holder(&self.name) {
                Ok(Some(h)) if may_be_the_agent(h.uid, nix::unistd::Uid::effective().as_raw()) => {
                    Taken::AnotherAgent
                }
                _ => Taken::Waiting,
            },
        }
    }

    /// Tries to take the name every [`RETRY`] until it is held or the claim is dropped. Another
    /// agent found holding it is said once: one started meanwhile finds this one's standby name
    /// and gives the name back as it stops (s48 review L6: taken for good, this one stopped
    /// trying), and one that keeps it runs beside this one.
    fn keep_trying(&self) {
        let claim = Claim {
            name: self.name.clone(),
            listener: Arc::clone(&self.listener),
            standby: Arc::clone(&self.standby),
            squatted: None,
        };
        let spawned = std::thread::Builder::new()
            .name("kpo-claim".into())
            .spawn(move || {
                let mut said = false;
                loop {
                    std::thread::sleep(RETRY);
                    // Only this thread's copy left: the agent's claim was dropped.
                    if Arc::strong_count(&claim.listener) == 1 {
                        return;
                    }
                    match claim.take() {
                        Taken::Held => return,
                        // Held by a squatter again: an agent found later is said again.
                        Taken::Waiting => said = false,
                        Taken::AnotherAgent if said => {}
                        Taken::AnotherAgent => {
                            said = true;
                            let holder = match judge(&claim.name) {
                                Judged::Agent(holder) => holder,
                                Judged::Squatter(_) | Judged::Unknown | Judged::Gone => {
                                    String::new()
                                }
                            };
                            error!(
                                "another kpo agent{holder} holds the abstract socket @{} that \
                                 this one, started beside a process that held it, waits for: \
                                 if it keeps it, two agents run in this network namespace and \
                                 change the same parameters; stop one (this one keeps trying \
                                 to take it)",
                                claim.name
                            );
                        }
                    }
                }
            });
        if let Err(e) = spawned {
            warn!(
                "the abstract socket @{} will not be taken later: {e}",
                self.name
            );
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Taken {
    Held,
    Waiting,
    AnotherAgent,
}

/// What holds the name, by the kernel's word.
enum Judged {
    /// Root's or this user's (listening, or bound by an agent that has not listened yet):
    /// ` (pid N: command)` when a connection gives the pid.
    Agent(String),
    /// Another user's, whatever it does with the name: not an agent. Its description.
    Squatter(String),
    /// The kernel did not say (no sock_diag for unix sockets): taken for an agent.
    Unknown,
    /// Nobody holds it by the time the kernel was asked: let go meanwhile.
    Gone,
}

fn judge(name: &str) -> Judged {
    let me = nix::unistd::Uid::effective().as_raw();
    let pid = peer_credentials(name).map(|(_, pid)| pid);
    let shown = pid.map(describe).unwrap_or_default();
    match unix_holder::stream_holder(name) {
        Ok(Some(h)) if !may_be_the_agent(h.uid, me) => {
            let listens = if h.listening { "" } else { ", not listening" };
            Judged::Squatter(format!("{shown}, uid {}{listens}", h.uid))
        }
        Ok(Some(_)) => Judged::Agent(shown),
        Ok(None) => Judged::Gone,
        // No answer: the conservative reading.
        Err(_) => Judged::Unknown,
    }
}

/// Claims this network namespace for this agent.
///
/// Abstract names have no permissions: any process in the namespace may take this one first.
/// One whose socket the kernel says is neither root's nor this process's user's (sock_diag,
/// [`unix_holder`]) cannot be a kpo agent (`kpo run` needs root), whether it listens or only
/// bound the name, and refusing to start beside it would let any user keep the node's agent from
/// running: the agent starts without the claim, says so, and takes the name as soon as it is
/// free; meanwhile it holds a name of its own, by which a second agent finds it ([`stand_by`]).
/// Root's, or one the kernel does not describe, is taken for an agent.
pub fn claim() -> Result<Claim, ClaimError> {
    let claim = claim_name(NAME)?;
    if !claim.holds() {
        claim.keep_trying();
    }
    Ok(claim)
}

/// Whether a kpo agent holds the name in this network namespace now (the claim is taken and
/// given back at once): for callers that must not run beside an agent, such as the integration
/// tests.
pub fn is_claimed() -> bool {
    matches!(claim_name(NAME), Err(ClaimError::AnotherAgent { .. }))
}

fn claim_name(name: &str) -> Result<Claim, ClaimError> {
    let io = |source| ClaimError::Io {
        name: name.to_string(),
        source,
    };
    let addr = SocketAddr::from_abstract_name(name.as_bytes()).map_err(io)?;
    let claim = |listener, standby, squatted| Claim {
        name: name.to_string(),
        listener: Arc::new(Mutex::new(listener)),
        standby: Arc::new(Mutex::new(standby)),
        squatted,
    };
    // A holder gone by the time the kernel is asked is asked again: a squatter that binds and
    // lets go in a rhythm made a start fail (s48 review2 N2).
    let mut tries = 0;
    let judged = loop {
        tries += 1;
        match UnixListener::bind_addr(&addr) {
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => match judge(name) {
                Judged::Gone if tries < BIND_TRIES => {
                    let wait = rand::Rng::gen_range(&mut rand::thread_rng(), 1..20);
                    std::thread::sleep(Duration::from_millis(wait));
                }
                Judged::Gone => break Err(Judged::Unknown),
                judged => break Err(judged),
            },
            bound => break Ok(bound),
        }
    };
    let bound = match judged {
        Ok(bound) => bound,
        Err(Judged::Squatter(holder)) => {
            let (standby, standby_name) = stand_by(name)?;
            if let Some(listener) = the_name_again(name)? {
                return Ok(claim(Some(listener), None, None));
            }
            let warning = squatted_warning(name, &holder, &standby_name);
            return Ok(claim(None, Some(standby), Some(warning)));
        }
        Err(Judged::Agent(holder)) => {
            return Err(ClaimError::AnotherAgent {
                name: name.to_string(),
                holder,
            })
        }
        Err(Judged::Unknown | Judged::Gone) => {
            return Err(ClaimError::AnotherAgent {
                name: name.to_string(),
                holder: String::new(),
            })
        }
    };
    match bound {
        // The name may be free while an agent started beside a squatter that has let go since
        // has not taken it yet (it tries every RETRY). When the kernel's list cannot be read,
        // the name is what there is to go by.
        Ok(listener) => match standing_by(name, None) {
            Ok(Some(other)) => Err(ClaimError::AnotherAgent {
                name: other.name,
                holder: other.holder,
            }),
            Ok(None) | Err(_) => Ok(claim(Some(listener), None, None)),
        },
        Err(e) => Err(io(e)),
    }
}

fn squatted_warning(name: &str, holder: &str, standby: &str) -> String {
    format!(
        "the abstract socket @{name} that marks the running kpo agent is held by a process that \
         cannot be one{holder}; starting without it, and taking it once it is free (meanwhile \
         this agent holds @{standby}, where another agent started in this network namespace \
         finds it)"
    )
}

/// Where agents started beside a squatter stand by: `@NAME.standby.` and a random number.
fn standby_prefix(name: &str) -> String {
    format!("{name}.standby.")
}

/// An agent found standing by: the name it holds, and ` (pid N: command)` when it tells.
#[derive(Debug, PartialEq, Eq)]
struct StandingBy {
    name: String,
    holder: String,
}

/// An agent (root's or this user's) standing by under a name other than `except`.
fn standing_by(name: &str, except: Option<&str>) -> std::io::Result<Option<StandingBy>> {
    let me = nix::unistd::Uid::effective().as_raw();
    let other = unix_holder::listening_with_prefix(&standby_prefix(name))?
        .into_iter()
        .find(|l| may_be_the_agent(l.uid, me) && Some(l.name.as_str()) != except);
    Ok(other.map(|l| StandingBy {
        holder: peer_credentials(&l.name)
            .map(|(_, pid)| describe(pid))
            .unwrap_or_default(),
        name: l.name,
    }))
}

/// How many times the name is bound while its holder is gone by the time the kernel is asked.
const BIND_TRIES: u32 = 8;

/// How many times an agent binds its standby name and looks for another's before it gives way.
const STANDBY_TRIES: u32 = 4;

/// Binds this agent's standby name, unless another agent stands by.
///
/// The kernel gives no order between two sockets to rank agents by (socket cookies come from
/// per-CPU batches: s48 review H1), so none is sought: an agent that finds another standing by
/// once its own name is bound gives way. Of two, the one that looks second sees the first, which
/// was bound before it looked. Started at once, each may see the other: each lets its name go,
/// waits a random moment and tries again, and refuses only when another still stands by at the
/// last try, so that one that has run for a while refuses the newcomer at once but for the waits
/// (two that keep meeting both refuse: safe, and rare). The caller then looks at the name itself.
fn stand_by(name: &str) -> Result<(UnixListener, String), ClaimError> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let (listener, standby) = bind_standby(name)?;
        match standing_by(name, Some(&standby)) {
            Ok(None) => return Ok((listener, standby)),
            Ok(Some(other)) if attempt >= STANDBY_TRIES => {
                return Err(ClaimError::AnotherAgent {
                    name: other.name,
                    holder: other.holder,
                })
            }
            Ok(Some(_)) => {
                drop(listener);
                let wait = rand::Rng::gen_range(&mut rand::thread_rng(), 20..200);
                std::thread::sleep(Duration::from_millis(wait));
            }
            Err(source) => {
                return Err(ClaimError::Unseen {
                    name: name.to_string(),
                    source,
                })
            }
        }
    }
}

/// The name itself, looked at once more by an agent now standing by: free since the squatter let
/// go (held now: the standby name can go), or taken meanwhile by an agent that did not see this
/// one standing by yet, which refuses this one (s48 review2 N1: both ran). `None`: still not an
/// agent's.
fn the_name_again(name: &str) -> Result<Option<UnixListener>, ClaimError> {
    let addr =
        SocketAddr::from_abstract_name(name.as_bytes()).map_err(|source| ClaimError::Io {
            name: name.to_string(),
            source,
        })?;
    match UnixListener::bind_addr(&addr) {
        Ok(listener) => Ok(Some(listener)),
        Err(_) => match judge(name) {
            Judged::Agent(holder) => Err(ClaimError::AnotherAgent {
                name: name.to_string(),
                holder,
            }),
            Judged::Squatter(_) | Judged::Unknown | Judged::Gone => Ok(None),
        },
    }
}

/// A listening socket bound to `@NAME.standby.N`, N random (a name anyone could foresee, anyone
/// could bind first: s48 review M1), and its name.
fn bind_standby(name: &str) -> Result<(UnixListener, String), ClaimError> {
    let io = |source| ClaimError::Io {
        name: format!("{}…", standby_prefix(name)),
        source,
    };
    // Taken already only by chance (one in 2^64): a new number then.
    const TRIES: usize = 4;
    for _ in 0..TRIES {
        let standby = format!("{}{:016x}", standby_prefix(name), rand::random::<u64>());
        let addr = SocketAddr::from_abstract_name(standby.as_bytes()).map_err(io)?;
        match UnixListener::bind_addr(&addr) {
            Ok(listener) => return Ok((listener, standby)),
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => continue,
            Err(e) => return Err(io(e)),
        }
    }
    Err(io(std::io::Error::new(
        std::io::ErrorKind::AddrInUse,
        format!("{TRIES} names in a row were held by others"),
    )))
}

/// The uid and pid the kernel gives a connection to `@name`: of whoever called listen() on it
/// (the holder need not accept, and they are given across PID namespaces). None when the holder
/// does not listen, or its queue of unaccepted connections is full (a connection does not wait
/// for room, since the agent never accepts; every refused start leaves one there for the
/// agent's life).
fn peer_credentials(name: &str) -> Option<(u32, i32)> {
    let fd = socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
        None,
    )
    .ok()?;
    connect(
        std::os::fd::AsRawFd::as_raw_fd(&fd),
        &UnixAddr::new_abstract(name.as_bytes()).ok()?,
    )
    .ok()?;
    let cred = getsockopt(&fd, PeerCredentials).ok()?;
    Some((cred.uid(), cred.pid()))
}

/// ` (pid N: its command line)`; empty when the holder is in a PID namespace this one does not
/// see (pid 0).
fn describe(pid: i32) -> String {
    if pid <= 0 {
        return String::new();
    }
    let command = std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|raw| shown_command(&raw))
        .unwrap_or_default();
    if command.is_empty() {
        format!(" (pid {pid})")
    } else {
        format!(" (pid {pid}: {command})")
    }
}

/// A /proc/PID/cmdline as one line to show: its arguments joined, cut at 200 characters (it
/// may be as long as ARG_MAX; what names the process is at its start), escaped.
fn shown_command(raw: &[u8]) -> String {
    const SHOWN_CHARS: usize = 200;
    let command = raw
        .split(|&b| b == 0)
        .filter(|arg| !arg.is_empty())
        .map(String::from_utf8_lossy)
        .collect::<Vec<_>>()
        .join(" ");
    let mut shown: String = command.chars().take(SHOWN_CHARS).collect();
    if command.chars().count() > SHOWN_CHARS {
        shown.push('…');
    }
    crate::shown::escaped(&shown).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A name of the test's own, so that a running agent or a parallel test cannot interfere.
    fn test_name(what: &str) -> String {
        format!("kpo-agent-test-{what}-{}", std::process::id())
    }

    /// A child forked while a claim is open holds its socket until it execs, so a test that
    /// gives a claim back does not run while another spawns its squatters.
    static FORKS: std::sync::Mutex<()> = std::sync::Mutex::new(());

    #[test]
    fn a_second_claim_is_refused_and_names_the_holder_until_the_first_ends() {
        let _forks = FORKS.lock().unwrap_or_else(|e| e.into_inner());
        let name = test_name("second");
        let first = claim_name(&name).expect("the name is free");
        // The holder is this process, so of this user: taken for an agent, root or not.
        let me = format!("(pid {}: ", std::process::id());
        match claim_name(&name) {
            Err(e @ ClaimError::AnotherAgent { .. }) => {
                let text = e.to_string();
                assert!(
                    text.starts_with(&format!("another kpo agent {me}")),
                    "{text}"
                );
                assert!(text.contains(&format!("@{name}")), "{text}");
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
        drop(first);
        claim_name(&name).expect("free again once the holder is gone");
    }

    /// `sleep 60` as uid 65534 holding `@name` (bound in the child before it runs sleep), and
    /// listening with `backlog` unless None; killed when dropped.
    struct Squatter(crate::test_child::Sleeper);

    impl Squatter {
        fn spawn(name: &str, backlog: Option<i32>) -> Self {
            let address = UnixAddr::new_abstract(name.as_bytes()).unwrap();
            // SAFETY: only async-signal-safe calls between fork and exec.
            let sleeper = unsafe {
                crate::test_child::Sleeper::spawn(60, move || {
                    crate::test_child::become_user(65534)?;
                    // Not close-on-exec: sleep holds it.
                    let fd = socket(
                        AddressFamily::Unix,
                        SockType::Stream,
                        SockFlag::empty(),
                        None,
                    )?;
                    nix::sys::socket::bind(std::os::fd::AsRawFd::as_raw_fd(&fd), &address)?;
                    if let Some(backlog) = backlog {
                        let backlog = nix::sys::socket::Backlog::new(backlog)?;
                        nix::sys::socket::listen(&fd, backlog)?;
                    }
                    std::mem::forget(fd);
                    Ok(())
                })
            };
            Squatter(sleeper.expect("the squatter starts"))
        }
    }

    /// Defect (s46 storyI F4): any user could keep the agent from starting by binding its
    /// abstract name first. A holder the kernel says is neither root's nor this user's is started
    /// beside, with a warning naming it, whether it listens, only bound the name, or listens
    /// with its queue full (so that a connection gives no credentials: s47 review2 N1), and the
    /// name is taken once it is free. (s47 review H1: /proc/net/unix, read at first, let any user
    /// forge the holder.)
    #[test]
    fn a_holder_that_cannot_be_an_agent_is_started_beside_and_given_back_later() {
        if !nix::unistd::Uid::effective().is_root() {
            kpo_test_skip::skip(
                "a holder of another user's is made by becoming that user, as root",
            );
            return;
        }
        let _forks = FORKS.lock().unwrap_or_else(|e| e.into_inner());
        for (what, backlog, says) in [
            ("listening", Some(8), "uid 65534"),
            ("bound", None, "uid 65534, not listening"),
            ("full", Some(0), "uid 65534"),
        ] {
            let name = test_name(what);
            let squatter = Squatter::spawn(&name, backlog);
            // Fills its queue: a connection the kernel refuses gives no credentials.
            let mut queued = Vec::new();
            while backlog == Some(0) {
                let fd = socket(
                    AddressFamily::Unix,
                    SockType::Stream,
                    SockFlag::SOCK_NONBLOCK,
                    None,
                )
                .unwrap();
                let address = UnixAddr::new_abstract(name.as_bytes()).unwrap();
                if connect(std::os::fd::AsRawFd::as_raw_fd(&fd), &address).is_err() {
                    break;
                }
                queued.push(fd);
            }
            if backlog != Some(8) {
                assert!(peer_credentials(&name).is_none(), "{what}");
            }
            let claim = claim_name(&name).expect("started beside it");
            assert!(!claim.holds(), "{what}");
            let warning = claim.squatted.clone().expect("a warning");
            assert!(warning.contains(says), "{what}: {warning}");
            assert!(warning.contains(&format!("@{name}")), "{what}: {warning}");
            if backlog == Some(8) {
                let pid = squatter.0.id();
                assert!(
                    warning.contains(&format!("cannot be one (pid {pid}: sleep 60), uid 65534")),
                    "{warning}"
                );
            }
            assert!(!claim.try_take(), "{what}: still held");
            drop(squatter);
            drop(queued);
            assert!(claim.try_take(), "{what}: free once the squatter is gone");
            assert!(claim.holds());
            assert!(
                matches!(claim_name(&name), Err(ClaimError::AnotherAgent { .. })),
                "{what}: held now"
            );
        }
    }

    /// s47, noticed: an agent started beside a squatter held no name, so a second agent started
    /// meanwhile did not see it, nor it the second, and both ran. It stands by under a name of
    /// its own: the second is refused, before and after the squatter lets go, and the name is
    /// given back once the first holds the real one.
    #[test]
    fn an_agent_started_beside_a_squatter_is_seen_by_the_next() {
        if !nix::unistd::Uid::effective().is_root() {
            kpo_test_skip::skip(
                "a holder of another user's is made by becoming that user, as root",
            );
            return;
        }
        let _forks = FORKS.lock().unwrap_or_else(|e| e.into_inner());
        let name = test_name("standby");
        let squatter = Squatter::spawn(&name, Some(8));
        let first = claim_name(&name).expect("started beside it");
        assert!(!first.holds());
        let warning = first.squatted.clone().unwrap();
        let standing: Vec<_> = unix_holder::listening_with_prefix(&standby_prefix(&name))
            .unwrap()
            .into_iter()
            .map(|l| l.name)
            .collect();
        assert_eq!(standing.len(), 1, "{standing:?}");
        assert!(
            warning.contains(&format!("this agent holds @{}, where", standing[0])),
            "{warning}"
        );
        let me = format!("another kpo agent (pid {}: ", std::process::id());
        let refused = |when: &str| match claim_name(&name) {
            Err(e @ ClaimError::AnotherAgent { .. }) => {
                let text = e.to_string();
                assert!(text.starts_with(&me), "{when}: {text}");
                assert!(
                    text.contains(&format!("(it holds the abstract socket @{})", standing[0])),
                    "{when}: {text}"
                );
            }
            other => panic!("{when}: expected a refusal, got {other:?}"),
        };
        refused("the squatter holds the name");
        drop(squatter);
        refused("the name is free, the first has not taken it yet");
        assert!(first.try_take());
        assert!(
            unix_holder::listening_with_prefix(&standby_prefix(&name))
                .unwrap()
                .is_empty(),
            "given back once the name is held"
        );
        drop(first);
        claim_name(&name).expect("free once the first is gone");
    }

    /// s48 review H1: agents were ranked by socket cookie, which the kernel hands out in per-CPU
    /// batches, so a later agent on another CPU could rank first and run beside the one standing
    /// by. Any other agent standing by is given way to, whatever its name, however long it has
    /// run.
    #[test]
    fn an_agent_standing_by_is_given_way_to_whatever_its_name() {
        let _forks = FORKS.lock().unwrap_or_else(|e| e.into_inner());
        let name = test_name("race");
        let me = format!(" (pid {}: ", std::process::id());
        // Names that sort before and after any random one the newcomer picks.
        for suffix in ["0000000000000000", "ffffffffffffffff"] {
            let first_name = format!("{}{suffix}", standby_prefix(&name));
            let first = UnixListener::bind_addr(
                &SocketAddr::from_abstract_name(first_name.as_bytes()).unwrap(),
            )
            .unwrap();
            let seen = standing_by(&name, None).unwrap().expect("the first");
            assert_eq!(seen.name, first_name);
            assert!(seen.holder.starts_with(&me), "{seen:?}");
            assert_eq!(standing_by(&name, Some(&first_name)).unwrap(), None);
            match stand_by(&name) {
                Err(ClaimError::AnotherAgent { name: n, holder }) => {
                    assert_eq!(n, first_name);
                    assert!(holder.starts_with(&me), "{holder}");
                }
                other => panic!("expected a refusal, got {other:?}"),
            }
            // The newcomer let its own name go.
            let left: Vec<_> = unix_holder::listening_with_prefix(&standby_prefix(&name))
                .unwrap()
                .into_iter()
                .map(|l| l.name)
                .collect();
            assert_eq!(left, std::slice::from_ref(&first_name));
            drop(first);
        }
        // Two at once: one stands by, the other gives way.
        let outcomes: Vec<_> = std::thread::scope(|scope| {
            let racers: Vec<_> = (0..2).map(|_| scope.spawn(|| stand_by(&name))).collect();
            racers.into_iter().map(|r| r.join().unwrap()).collect()
        });
        let standing = outcomes.iter().filter(|o| o.is_ok()).count();
        let refused = outcomes
            .iter()
            .filter(|o| matches!(o, Err(ClaimError::AnotherAgent { .. })))
            .count();
        assert_eq!((standing, refused), (1, 1), "{outcomes:?}");
    }

    /// s48 review2 N2: a holder gone by the time the kernel is asked was taken for an agent, so a
    /// squatter that binds and lets go in a rhythm could make a start fail; it reads as gone,
    /// and the name is bound again (claim_name, up to BIND_TRIES times).
    #[test]
    fn a_holder_gone_before_the_kernel_is_asked_is_gone() {
        let name = test_name("gone");
        assert!(matches!(judge(&name), Judged::Gone));
        let held =
            UnixListener::bind_addr(&SocketAddr::from_abstract_name(name.as_bytes()).unwrap())
                .unwrap();
        assert!(matches!(judge(&name), Judged::Agent(_)));
        drop(held);
        assert!(matches!(judge(&name), Judged::Gone));
    }

    /// s48 review2 N1: an agent that stood by looks at the name once more: free, it is taken; an
    /// agent's since, this one is refused.
    #[test]
    fn once_standing_by_the_name_is_looked_at_again() {
        let _forks = FORKS.lock().unwrap_or_else(|e| e.into_inner());
        let name = test_name("again");
        let held = the_name_again(&name).unwrap().expect("free: taken");
        assert!(matches!(
            the_name_again(&name),
            Err(ClaimError::AnotherAgent { .. })
        ));
        drop(held);
        if !nix::unistd::Uid::effective().is_root() {
            kpo_test_skip::skip(
                "the squatter's half: a holder of another user's is made by becoming that user, \
                 as root",
            );
            return;
        }
        let _squatter = Squatter::spawn(&name, Some(8));
        assert!(
            the_name_again(&name).unwrap().is_none(),
            "still a squatter's"
        );
    }

    /// s47 review2 N3: an agent waiting for the name that finds another agent holding it said
    /// an error (and queued a connection at that agent) every 5 s. s48 review L6: it then
    /// stopped trying for good, though an agent that finds this one's standby name gives the
    /// name back as it stops. The kernel's word says it is an agent, with no connection; the
    /// name is taken once it is free.
    #[test]
    fn a_waiting_claim_that_finds_an_agent_takes_the_name_once_it_is_free() {
        let _forks = FORKS.lock().unwrap_or_else(|e| e.into_inner());
        let name = test_name("waiting");
        let waiting = Claim {
            name: name.clone(),
            listener: Arc::new(Mutex::new(None)),
            standby: Arc::new(Mutex::new(None)),
            squatted: None,
        };
        assert_eq!(waiting.take(), Taken::Held, "free: taken");
        let agent = UnixListener::bind_addr(
            &SocketAddr::from_abstract_name(test_name("agent").as_bytes()).unwrap(),
        )
        .unwrap();
        let waiting = Claim {
            name: test_name("agent"),
            listener: Arc::new(Mutex::new(None)),
            standby: Arc::new(Mutex::new(None)),
            squatted: None,
        };
        // This process's own user holds it: an agent, and no connection was queued at it.
        assert_eq!(waiting.take(), Taken::AnotherAgent);
        agent.set_nonblocking(true).unwrap();
        assert!(agent.accept().is_err(), "nothing queued");
        drop(agent);
        assert_eq!(waiting.take(), Taken::Held);
    }

    /// s47 review L1: a holder's whole command line (up to ARG_MAX) went into one log line.
    #[test]
    fn a_long_command_line_is_cut() {
        let mut raw = b"sh\0-c\0sleep 60\0".to_vec();
        raw.extend(std::iter::repeat_n(b'x', 5000));
        raw.push(0);
        let shown = shown_command(&raw);
        assert!(shown.starts_with("sh -c sleep 60 xxx"), "{shown}");
        assert!(shown.ends_with("x…"), "{shown}");
        assert_eq!(shown.chars().count(), 201);
        assert_eq!(shown_command(b"sleep\x0060\x00"), "sleep 60");
        assert_eq!(shown_command(b"a\x1b[2J\0"), "a\\u{001b}[2J");
    }
}
