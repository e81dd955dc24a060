//! Operator control: apply, revert, journal, status, pause, resume. One trait, [`Control`], with
//! requests and replies that serialise to JSON, so the agent's local socket ([`crate::api`]) carries
//! them unchanged: the running agent serves them from its own [`ChangePath`], a socket client
//! implements the trait by sending them, and while the agent is down the CLI opens the state
//! directory itself under its lock ([`open_offline`]).
use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use serde::{Deserialize, Serialize};

use crate::{
    actuate::param::{ParamAddress, Value},
    change::{Actuators, ChangeError, ChangePath, ChangeReport, KernelActuators},
    journal::{format_ms, Entry, Holder, Journal, JournalError},
    output::change_events::{ChangePathEvent, PausedEvent, ResumedEvent},
    policy::{Policy, PolicyError, Proposal, Source},
};

/// `kpo apply PARAM=VALUE`: an operator's change, through the same policy and journal. Unknown
/// keys are refused ([`crate::api::Request`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApplyRequest {
    pub address: ParamAddress,
    pub value: Value,
    pub reason: String,
    /// Who asks (crate::who), journaled with the reason. The agent sets it from the socket's
    /// peer credentials, whatever the caller sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
}

/// The journaled reason of an operator's change or revert: what and who, on one line. A line
/// break in `--reason` split a `kpo journal` row in two, and an escape sequence reached the
/// terminal of whoever listed it (s53 storyAN AN-1), as in `kpo reject`'s reason before.
fn reason_by(reason: &str, by: Option<&str>) -> String {
    let reason = crate::shown::one_line(reason);
    match by.filter(|b| !b.is_empty()) {
        Some(by) => format!("{reason}; by {by}"),
        None => reason,
    }
}

/// `kpo revert ID` or `kpo revert --all`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RevertRequest {
    Id(u64),
    /// `kpo revert ID --force`: over someone else's value too (an agent older than this says
    /// "unknown variant").
    Forced(u64),
    All,
}

/// One parameter in `kpo status`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ParamStatus {
    pub key: String,
    pub address: Option<ParamAddress>,
    /// The value before KPO first changed it.
    pub original: Option<Value>,
    pub last_applied: Option<Value>,
    /// The kernel's value now (None with `current_error` when it cannot be read).
    pub current: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_error: Option<String>,
    pub changes_applied: usize,
    /// Who it was yielded to, if it was.
    pub yielded_to: Option<String>,
    /// Quarantined values and until when (RFC 3339).
    pub quarantined: Vec<(Value, String)>,
    /// The change whose value the kernel has from KPO (`kpo revert ID` takes it out), and who
    /// made it: `None` when KPO holds no value there (a revert put the value back, a yield).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub holder: Option<HoldingChange>,
}

/// [`ParamStatus::holder`] (s52 storyAC AC-3: who changed a parameter, and which id undoes it,
/// took a read of `kpo journal`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HoldingChange {
    pub change_id: u64,
    /// `rules`, `llm`, `optimizer`, `operator` (an approved change is its advisor's); `None`
    /// only if its intent is not in the live journal (a change that holds its parameter is not
    /// archived).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
}

impl ParamStatus {
    /// Whether it is a parameter of a network namespace that is gone, of which KPO holds
    /// nothing: the journal settled it (no original, no value of KPO's, no change, yield or
    /// quarantine left) and keeps it only for its history. On a node whose pods come and go
    /// these outnumber the rest, and the kernel's value on such a line is whatever namespace
    /// was given the inode since (s49 storyU U2).
    pub fn only_history_of_a_gone_namespace(&self) -> bool {
        self.key.contains("@netns:")
            && self.original.is_none()
            && self.last_applied.is_none()
            && self.changes_applied == 0
            && self.yielded_to.is_none()
            && self.quarantined.is_empty()
    }
}

/// A stretch of the journal's entries, so that no reply outgrows what the socket carries
/// (`kpo journal` pages through them).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JournalPage {
    pub entries: Vec<Entry>,
    /// Where the next page starts; `None` after the last entry. A position in
    /// [`Journal::listing`]'s order (the archive's, then the live journal's entries): opaque to
    /// the reader.
    pub next: Option<usize>,
    /// Damage found reading the archive for this page (the damaged lines are skipped).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// How much of the journal one page holds, as JSON: far below the CLI's 16 MiB reply cap, so
/// that one entry more (an operator's reason is at most 64 KiB) never crosses it.
pub const JOURNAL_PAGE_BYTES: usize = 4 << 20;

/// The entries from position `from` on (0: the first ever journaled, archived or not), up to
/// `budget` bytes of JSON, and at least one.
pub fn journal_page(journal: &Journal, from: usize, budget: usize) -> JournalPage {
    let mut entries = Vec::new();
    let mut bytes = 0;
    let mut listing = journal.listing(from);
    while let Some((at, entry)) = listing.next() {
        let size = serde_json::to_vec(&entry).map_or(0, |v| v.len() + 1);
        if !entries.is_empty() && bytes + size > budget {
            return JournalPage {
                next: Some(at),
                entries,
                warnings: listing.warnings(),
            };
        }
        bytes += size;
        entries.push(entry);
    }
    JournalPage {
        entries,
        next: None,
        warnings: listing.warnings(),
    }
}

/// `kpo status`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Status {
    pub policy: String,
    pub state_dir: PathBuf,
    /// Who paused and when, if paused.
    pub paused: Option<(String, String)>,
    pub params: Vec<ParamStatus>,
    /// Intents still without an outcome (their parameter could not be read to reconcile).
    pub incomplete: Vec<u64>,
    /// What journal recovery found on open.
    pub warnings: Vec<String>,
    /// Why the policy file no longer holds the policy in force (edited, a reload refused,
    /// removed), if it does not: `policy` alone would name a file whose text is not obeyed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_file_differs: Option<String>,
    /// The changes the running agent's guard is watching; none from a command run while the
    /// agent is down (the watches it saved are taken up, or dropped, when it starts).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub watches: Vec<WatchStatus>,
    /// From a command run while the agent is down: how many watches the agent saved, which its
    /// next start takes up (or drops, their change gone or saved too long ago).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub saved_watches: usize,
    /// The version of the KPO that answered ([`crate::VERSION`]): the running agent's through its
    /// socket, which may not be the binary installed since. `None` from an agent older than it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Who answered, set by the command that prints it (none in the agent's reply): without it
    /// `kpo status --json` read the same from a running agent as from a state directory no agent
    /// guards, and a health check could not tell them apart (s60 story BR-3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answered_by: Option<AnsweredBy>,
}

/// Who answered `kpo status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AnsweredBy {
    /// The running agent, through its control socket.
    Agent,
    /// The command itself, from the state directory, while no agent answered.
    StateDir,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// A change the guard is watching, in `kpo status`: without it an operator could not tell
/// whether a change is still to be judged, or by what (s50 storyX F6).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WatchStatus {
    /// The change's journal id.
    pub change_id: u64,
    /// Earlier changes of the parameter judged with it, oldest first: a revert takes them out
    /// too.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub judged_with: Vec<u64>,
    pub address: String,
    /// When the change (the first of `judged_with`, with them) was made, RFC 3339; `None` when
    /// its intent is no longer in the live journal (archived).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
    /// What it is judged by (`request_p99`, ...): words, so that a CLI older than a signal
    /// still reads the reply.
    pub signals: Vec<String>,
    /// Windows still to be counted before it is kept.
    pub windows_left: u32,
    /// Windows counted so far without a regression.
    pub clean_windows: u32,
    /// Consecutive windows that regressed so far (two in a row revert it).
    pub strikes: u32,
    /// Why the last window was not judged for it, when it was not (`made_within_it`,
    /// `without_effect`, `awaits_listen`, `blamed_on_later`, `blind`, `no_baseline`): words, as
    /// `signals`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_judged: Option<String>,
    /// The guard's revert of it did not take; the next window that regresses asks again.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub revert_failed: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error(transparent)]
    Policy(#[from] PolicyError),
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error(transparent)]
    Change(#[from] ChangeError),
    #[error(transparent)]
    Api(#[from] crate::api::client::ApiError),
    #[error(transparent)]
    Approval(#[from] crate::approvals::ApprovalError),
    /// The policy a command acting while the agent is down decides under does not load: the
    /// error, and the way to read the journal or put KPO's values back meanwhile (s38 chaos O5:
    /// a typo in the file blocked `kpo revert --all` during an incident, and nothing said how
    /// to go on).
    #[error(
        "{0}\n  (the agent is not answering, and this command decides under the policy file: fix \
         it, checking with kpo check --policy FILE; meanwhile --policy /dev/null, no policy, \
         reads the journal and lets kpo revert --all put back every value KPO changed, since a \
         revert passes only the deny-list)"
    )]
    OfflinePolicy(PolicyError),
    /// The agent's policy file changed since it was loaded ([`Policy::changed_on_disk`]).
    #[error("refused: {0}")]
    PolicyChanged(String),
    /// A command acting while the agent is down runs in another network namespace than the
    /// agent last ran in ([`AGENT_NETNS_FILE`]).
    #[error("refused: {0}")]
    OtherNetns(String),
    /// A request names no parameter (`kpo resume` on the socket with a malformed one).
    #[error("{0}")]
    NotAParameter(String),
    /// A command that only reads, or acts on what KPO did, found no state directory: a mistyped
    /// `--state-dir` would otherwise be created empty and read as a host KPO never touched.
    #[error(
        "{0}: no such state directory: KPO has not run with it (is --state-dir right? the default \
         is /var/lib/kpo); only kpo apply and kpo pause start a new one"
    )]
    NoStateDir(PathBuf),
    /// `--state-dir` names something that is not a directory (a file, say): every file under it
    /// fails to open, and the first one's error would name a file, not the mistake.
    #[error("{0}: not a directory: --state-dir names the directory KPO keeps its journal in")]
    NotAStateDir(PathBuf),
    /// `--state-dir` is a link that leads nowhere (a disk not mounted, a loop): told as such, not
    /// as "File exists" from creating it, or as whatever its first file fails with.
    #[error("{0}: not a state directory: {1}")]
    BrokenStateDirLink(PathBuf, String),
}

/// [`ControlError::NoStateDir`] unless `state_dir` exists, [`ControlError::NotAStateDir`] when
/// it is not a directory, [`ControlError::BrokenStateDirLink`] when it is a link to nothing
/// (opening it says what else is wrong).
pub fn require_state_dir(state_dir: &Path) -> Result<(), ControlError> {
    if let Some(why) = crate::journal::store::broken_link(state_dir) {
        return Err(ControlError::BrokenStateDirLink(
            state_dir.to_path_buf(),
            why,
        ));
    }
    match std::fs::symlink_metadata(state_dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Err(ControlError::NoStateDir(state_dir.to_path_buf()))
        }
        _ if std::fs::metadata(state_dir).is_ok_and(|m| !m.is_dir()) => {
            Err(ControlError::NotAStateDir(state_dir.to_path_buf()))
        }
        _ => Ok(()),
    }
}

/// What an operator can ask of KPO.
pub trait Control {
    fn apply(&mut self, req: &ApplyRequest) -> Result<ChangeReport, ControlError>;
    /// `by`: who asks, journaled with the revert's reason.
    fn revert(&mut self, req: &RevertRequest, by: &str) -> Result<Vec<ChangeReport>, ControlError>;
    /// The whole journal in one reply (`{"op":"journal"}`; the CLI pages instead).
    fn journal(&mut self) -> Result<Vec<Entry>, ControlError>;
    /// The entries from the `from`-th on, a page at a time.
    fn journal_page(&mut self, from: usize) -> Result<JournalPage, ControlError>;
    /// Every entry, in a listing that outlives this: the journal opened under the state
    /// directory's lock ([`open_offline`]) gives one, so that the command can let go of the lock
    /// before it prints (a reader at a pager would otherwise keep the agent from starting). `None`
    /// through the agent's socket, which pages instead.
    fn detached_listing(&mut self) -> Option<crate::journal::archive::Listing<'static>> {
        None
    }
    /// Whether a change made through it is watched by the guard: the running agent's are; one
    /// made while it is down is not, even once it starts.
    fn guards_changes(&self) -> bool {
        false
    }
    fn status(&mut self) -> Result<Status, ControlError>;
    /// True if this paused (false: already paused).
    fn pause(&mut self, by: &str) -> Result<bool, ControlError>;
    /// Without `param`, lifts the pause; with it, hands a yielded parameter back. Returns what was
    /// resumed (`"pause"` or the journal keys).
    fn resume(&mut self, param: Option<&str>, by: &str) -> Result<Vec<String>, ControlError>;
}

impl Control for ChangePath {
    fn apply(&mut self, req: &ApplyRequest) -> Result<ChangeReport, ControlError> {
        if let Some(why) = self.policy.changed_on_disk() {
            return Err(ControlError::PolicyChanged(why));
        }
        Ok(self.propose(&Proposal {
            address: req.address.clone(),
            value: req.value.clone(),
            source: Source::Operator,
            reason: reason_by(&req.reason, req.by.as_deref()),
        })?)
    }

    fn revert(&mut self, req: &RevertRequest, by: &str) -> Result<Vec<ChangeReport>, ControlError> {
        Ok(match req {
            RevertRequest::Id(id) => vec![ChangePath::revert(
                self,
                *id,
                Source::Operator,
                &reason_by(&format!("kpo revert {id}"), Some(by)),
            )?],
            RevertRequest::Forced(id) => vec![ChangePath::revert_over_theirs(
                self,
                *id,
                Source::Operator,
                &reason_by(&format!("kpo revert {id} --force"), Some(by)),
            )?],
            RevertRequest::All => self.revert_all(&reason_by(
                "kpo revert --all: back to the value before KPO",
                Some(by),
            ))?,
        })
    }

    fn journal(&mut self) -> Result<Vec<Entry>, ControlError> {
        let (entries, warnings) = self.journal.all_entries();
        for w in warnings {
            tracing::warn!("{w}");
        }
        Ok(entries)
    }

    fn journal_page(&mut self, from: usize) -> Result<JournalPage, ControlError> {
        Ok(journal_page(&self.journal, from, JOURNAL_PAGE_BYTES))
    }

    fn detached_listing(&mut self) -> Option<crate::journal::archive::Listing<'static>> {
        Some(self.journal.detached_listing())
    }

    /// The journal's status, with the watches the agent saved (a command run while it is down:
    /// the running agent answers with its guard's own, [`ChangePath::journal_status`]).
    fn status(&mut self) -> Result<Status, ControlError> {
        let saved_watches = crate::guard::saved_watches(self.journal.dir());
        self.journal_status().map(|s| Status { saved_watches, ..s })
    }

    fn pause(&mut self, by: &str) -> Result<bool, ControlError> {
        let changed = self.journal.set_paused(true, by)?;
        if changed {
            self.send_other(ChangePathEvent::Paused(PausedEvent { by: by.into() }));
        }
        Ok(changed)
    }

    fn resume(&mut self, param: Option<&str>, by: &str) -> Result<Vec<String>, ControlError> {
        let resumed = match param {
            None => {
                if self.journal.set_paused(false, by)? {
                    vec!["pause".to_string()]
                } else {
                    vec![]
                }
            }
            // The CLI checks its argument; a request on the socket may name nothing, and "not
            // yielded" of a typo would hide it.
            Some(name) => {
                let name = crate::cli::param_arg(name).map_err(|why| {
                    ControlError::NotAParameter(format!("{name:?} is not a parameter: {why}"))
                })?;
                self.journal.resume_param(&name)?
            }
        };
        if !resumed.is_empty() {
            self.send_other(ChangePathEvent::Resumed(ResumedEvent {
                param: param.map(str::to_string),
                keys: if param.is_some() {
                    resumed.clone()
                } else {
                    vec![]
                },
                by: by.into(),
            }));
        }
        Ok(resumed)
    }
}

/// How long a CLI waits for another CLI holding the state directory.
pub const CLI_LOCK_WAIT: Duration = Duration::from_secs(60);

/// The change path over the state directory, for a CLI while the agent is down: loads the policy,
/// takes the lock (failing at once if the agent holds it), recovers the journal and reconciles
/// interrupted changes. Returns the reconciliation reports too.
pub fn open_offline(
    policy: Option<&Path>,
    state_dir: &Path,
    actuators: Box<dyn Actuators>,
) -> Result<(ChangePath, Vec<ChangeReport>), ControlError> {
    let policy = Policy::load(policy).map_err(ControlError::OfflinePolicy)?;
    let journal = Journal::open(state_dir, Holder::Cli, CLI_LOCK_WAIT)?;
    let mut path = ChangePath::new(policy, journal, actuators);
    let reconciled = path.reconcile()?;
    path.restore_guard_quarantines()?;
    Ok((path, reconciled))
}

/// The change path over a state directory that cannot be written, to read only
/// ([`Journal::open_read_only`]): no lock, no recovery's rewrite, no reconciliation, no
/// quarantine restored. Whatever would journal is refused ([`JournalError::ReadOnly`]).
pub fn open_read_only(
    policy: Option<&Path>,
    state_dir: &Path,
    actuators: Box<dyn Actuators>,
) -> Result<ChangePath, ControlError> {
    let policy = Policy::load(policy).map_err(ControlError::OfflinePolicy)?;
    let journal = Journal::open_read_only(state_dir)?;
    Ok(ChangePath::new(policy, journal, actuators))
}

/// The state directory opened by a command that only reads.
pub struct OpenedToRead {
    pub path: ChangePath,
    /// What reconciliation did (none when read-only).
    pub reconciled: Vec<ChangeReport>,
    /// Set when the state directory is read-only and was read as it is on disk: the warning the
    /// command prints first.
    pub read_only: Option<String>,
}

/// [`open_offline`] for a command that only reads (`kpo status`, `kpo journal`, `kpo pending`,
/// `kpo explain`): on a read-only state directory, where the lock cannot be taken nor an
/// interrupted change reconciled, the journal as it is on disk instead ([`open_read_only`]), with
/// the warning to print. An operator reading what KPO did is most in need of it in exactly that
/// incident (ext4's errors=remount-ro).
pub fn open_offline_to_read(
    policy: Option<&Path>,
    state_dir: &Path,
    actuators: impl Fn() -> Box<dyn Actuators>,
) -> Result<OpenedToRead, ControlError> {
    match open_offline(policy, state_dir, actuators()) {
        Ok((path, reconciled)) => Ok(OpenedToRead {
            path,
            reconciled,
            read_only: None,
        }),
        Err(ControlError::Journal(JournalError::ReadOnly { dir, source })) => {
            let path = open_read_only(policy, state_dir, actuators())?;
            Ok(OpenedToRead {
                path,
                reconciled: Vec::new(),
                read_only: Some(read_only_warning(&dir, &source)),
            })
        }
        // A full disk (a quota, an I/O error) under an interrupted change: reconciling it needs
        // an append, but reading what KPO did does not (s46 storyL L1).
        Err(
            ControlError::Journal(JournalError::Unwritable {
                dir, path, source, ..
            })
            | ControlError::Change(crate::change::ChangeError::Journal(JournalError::Unwritable {
                dir,
                path,
                source,
                ..
            })),
        ) => {
            let opened = open_read_only(policy, state_dir, actuators())?;
            let file = path.file_name().map_or_else(
                || path.display().to_string(),
                |n| n.to_string_lossy().into_owned(),
            );
            Ok(OpenedToRead {
                path: opened,
                reconciled: Vec::new(),
                read_only: Some(format!(
                    "the state directory {} cannot be written ({file}: {source}), and what a \
                     stop left unfinished (an interrupted change, a quarantine) needs a record \
                     to be settled: showing the journal as it is on disk, as it was left; free \
                     space there (or fix what fails), then run a command again to settle it",
                    dir.display()
                )),
            })
        }
        Err(e) => Err(e),
    }
}

/// What a reading command says first on a read-only state directory.
pub fn read_only_warning(dir: &Path, source: &std::io::Error) -> String {
    let errno = source
        .raw_os_error()
        .map(|n| format!(" (os error {n})"))
        .unwrap_or_default();
    format!(
        "the state directory {} is read-only{errno}: showing the journal as it is on disk; an \
         interrupted change is shown as it was left, not reconciled",
        dir.display()
    )
}

/// The file in the state directory that names the sysfs tree the agent last ran with, when it was
/// not `/sys` (`kpo run --sysfs-root`): the journal's cpufreq addresses are relative to it, so the
/// CLI, acting while the agent is down, must act on the same tree.
pub const SYSFS_ROOT_FILE: &str = "sysfs-root";

/// Records (or, for `/sys`, forgets) the agent's sysfs tree in the state directory, durably: a
/// file left empty by a power loss would point the CLI at the current directory.
pub fn record_sysfs_root(state_dir: &Path, sys: &Path) -> Result<(), JournalError> {
    if sys == Path::new("/sys") {
        return crate::journal::store::remove(state_dir, SYSFS_ROOT_FILE);
    }
    // Absolute: the CLI may run from another directory.
    let absolute = std::path::absolute(sys).map_err(|e| JournalError::io(sys, e))?;
    crate::journal::store::replace_unless_same(
        state_dir,
        SYSFS_ROOT_FILE,
        absolute.as_os_str().as_encoded_bytes(),
    )
}

/// The file in the state directory that names the policy file the agent last ran with, when it
/// was given one (`kpo run --policy`): a CLI acting while the agent is down (`kpo approve`,
/// `kpo pending`, `kpo revert`) and given no `--policy` decides under the same policy, not the
/// default path's or the built-in one.
pub const POLICY_PATH_FILE: &str = "policy-path";

/// Records (or, with no `--policy`, forgets) the agent's policy file in the state directory. Its
/// directory is made canonical (the CLI may run from another directory), not the file: a file
/// that is a symbolic link, as a Kubernetes ConfigMap's is (`policy.toml -> ..data/policy.toml`,
/// `..data` swapped at each update, the old target deleted), is recorded as the link, which
/// outlives its targets (s45 storyG: the resolved path was gone after an update, and commands run
/// while the agent was down decided under the default).
pub fn record_policy_path(state_dir: &Path, policy: Option<&Path>) -> Result<(), JournalError> {
    let Some(policy) = policy else {
        return crate::journal::store::remove(state_dir, POLICY_PATH_FILE);
    };
    let absolute = canonical_dir_of(policy).map_err(|e| JournalError::io(policy, e))?;
    crate::journal::store::replace_unless_same(
        state_dir,
        POLICY_PATH_FILE,
        absolute.as_os_str().as_encoded_bytes(),
    )
}

/// `path` with its directory canonical and its file name as given (a link stays a link).
fn canonical_dir_of(path: &Path) -> std::io::Result<std::path::PathBuf> {
    let name = path
        .file_name()
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidInput, "names no file"))?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    // The file must be there, as canonicalize required of it.
    std::fs::metadata(path)?;
    Ok(std::fs::canonicalize(dir)?.join(name))
}

/// The policy an offline command decides under: `--policy` if given (with a warning when the
/// agent last ran with another one), else the one the agent last ran with, else the default.
fn offline_policy(given: Option<&Path>, state_dir: &Path) -> Option<std::path::PathBuf> {
    let recorded = std::fs::read(state_dir.join(POLICY_PATH_FILE))
        .ok()
        .filter(|b| !b.is_empty())
        .map(|b| {
            std::path::PathBuf::from(
                <std::ffi::OsString as std::os::unix::ffi::OsStringExt>::from_vec(b),
            )
        });
    // A recorded file since removed (an old release directory) is not an error for every
    // offline command, `kpo revert --all` included: the default path decides, with a warning.
    let recorded = recorded.filter(|r| {
        let there = r.exists();
        if !there {
            crate::say!(
                "kpo: warning: the agent last ran with the policy {}, which is gone; deciding \
                 under {}",
                r.display(),
                given.map_or("the default".to_string(), |g| format!(
                    "--policy {}",
                    g.display()
                ))
            );
        }
        there
    });
    match (given, recorded) {
        (Some(given), Some(recorded)) => {
            let same = std::fs::canonicalize(given).ok();
            if same.is_none() || same != std::fs::canonicalize(&recorded).ok() {
                crate::say!(
                    "kpo: warning: deciding under --policy {}, but the agent last ran with {}",
                    given.display(),
                    recorded.display()
                );
            }
            Some(given.to_path_buf())
        }
        (Some(given), None) => Some(given.to_path_buf()),
        (None, recorded) => recorded,
    }
}

/// The file in the state directory that names the network namespace the agent last ran in (its
/// inode and, from Linux 5.14, its cookie). The journal's host parameters (no `--netns`) are that
/// namespace's: `net.core.somaxconn` of a namespace is its own. A command acting while the agent
/// is down in another namespace would read (reconciling) and write that namespace's values
/// instead, and is refused.
pub const AGENT_NETNS_FILE: &str = "agent-netns";

/// The calling thread's network namespace: inode, and cookie where the kernel gives one.
fn this_netns() -> Result<(u64, Option<u64>), JournalError> {
    use std::os::unix::fs::MetadataExt;
    let ns = Path::new("/proc/thread-self/ns/net");
    let inode = std::fs::metadata(ns)
        .map_err(|e| JournalError::io(ns, e))?
        .ino();
    Ok((inode, crate::actuate::sysctl::this_netns_cookie().ok()))
}

fn describe_netns((inode, cookie): (u64, Option<u64>)) -> String {
    let ns = format!("net:[{inode}]");
    // The name `ip netns` gave it, if any, is what the operator types next.
    let named = named_under_run_netns(inode);
    match (cookie, named) {
        (Some(cookie), Some(path)) => format!("{ns} (cookie {cookie}, {})", path.display()),
        (Some(cookie), None) => format!("{ns} (cookie {cookie})"),
        (None, Some(path)) => format!("{ns} ({})", path.display()),
        (None, None) => ns,
    }
}

/// The file in `dir` that is the namespace `inode` on the device `dev` (nsfs), if one is: the
/// bind mounts `ip netns add` makes under /run/netns.
fn file_of(dir: &Path, inode: u64, dev: u64) -> Option<PathBuf> {
    use std::os::unix::fs::MetadataExt;
    let mut names: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| std::fs::metadata(p).is_ok_and(|m| m.ino() == inode && m.dev() == dev))
        .collect();
    names.sort();
    names.into_iter().next()
}

/// Records the agent's network namespace in the state directory, durably (as the sysfs root).
pub fn record_agent_netns(state_dir: &Path) -> Result<(), JournalError> {
    let (inode, cookie) = this_netns()?;
    let cookie = cookie.map_or("-".to_string(), |c| c.to_string());
    // The boot too: inodes start again from the same numbers after a reboot, where the
    // namespace recorded is gone whatever holds its inode now.
    let text = match crate::journal::current_boot() {
        Some(boot) => format!("{inode} {cookie} {boot}\n"),
        None => format!("{inode} {cookie}\n"),
    };
    crate::journal::store::replace_unless_same(state_dir, AGENT_NETNS_FILE, text.as_bytes())
}

/// Refuses a command acting while the agent is down from a network namespace other than the
/// one the agent last ran in. Without the file (an agent of an earlier version) it goes on.
fn refuse_if_other_netns(state_dir: &Path) -> Result<(), ControlError> {
    let file = state_dir.join(AGENT_NETNS_FILE);
    let how = format!(
        "run the command in the agent's namespace (`nsenter --net=FILE kpo ...` with a file of \
         it, such as /run/netns/NAME, or `ip netns exec NAME kpo ...`), or start the agent; if \
         that namespace is gone for good, start the agent here once (`kpo run \
         --recommend-only`, which changes nothing on its own, then stop it): it forgets what the \
         journal knew of that namespace's keys, and commands then act here (removing {} instead \
         would have them take that namespace's values for this one's)",
        file.display()
    );
    let Some((recorded, _)) = recorded_netns(&file, &how)? else {
        return Ok(());
    };
    let here = this_netns()?;
    if same_netns(recorded, here) {
        return Ok(());
    }
    Err(ControlError::OtherNetns(format!(
        "the agent last ran (or, before any agent, a command first changed a parameter) in \
         network namespace \
         {}, and this command runs in {}: the journal's \
         parameters without a namespace are the agent's namespace's, and read or changed here they \
         would be this one's; {how}",
        describe_netns(recorded),
        describe_netns(here)
    )))
}

/// Refuses to start the agent on a state directory that an agent last used from another network
/// namespace, one that still exists: the journal's parameters without a namespace are that
/// namespace's, and this agent would reconcile, judge and put them back in its own. When that
/// namespace is gone, the agent goes ahead (and [`record_agent_netns`] then names its own); gone
/// within this boot, the reason is returned, for the journal to settle what it knew of that
/// namespace's keys (`Journal::forget_dead_agent_namespace`; after a reboot the journal settles
/// what did not outlive it, as it does for every key).
/// Checked under the journal's lock, before anything is recorded.
pub fn refuse_start_in_other_netns(state_dir: &Path) -> Result<Option<String>, ControlError> {
    let file = state_dir.join(AGENT_NETNS_FILE);
    let how = format!(
        "start the agent in that namespace (`nsenter --net=FILE kpo run ...` with a file of it, \
         such as /run/netns/NAME, or `ip netns exec NAME kpo run ...`), or give this one a state \
         directory of its own (--state-dir); if the journal's parameters are to be taken as this \
         namespace's, removing {} lets it start here",
        file.display()
    );
    let Some((recorded, boot)) = recorded_netns(&file, &how)? else {
        return Ok(None);
    };
    let here = this_netns()?;
    if same_netns(recorded, here) {
        return Ok(None);
    }
    // No namespace outlives a reboot. Within one boot, inodes are unique among the namespaces
    // alive: the recorded one's inode, here with another cookie, means that namespace is gone.
    // Elsewhere, a namespace alive with that inode is taken for it: its cookie could be read only
    // by entering it, and a reused inode within a boot is rare (the refusal says how to go
    // ahead).
    let earlier_boot = boot.is_some_and(|b| Some(b) != crate::journal::current_boot());
    let gone = earlier_boot
        || recorded.0 == here.0
        || inode_given_to_another(recorded)
        || (crate::actuate::sysctl::sees_every_process()
            && !crate::actuate::sysctl::netns_in_use(recorded.0));
    if gone {
        // Not by the name under /run/netns that its inode may have now: that is another
        // namespace's (s55 story AW-5), and the reason stays in the journal.
        let dead = match recorded.1 {
            Some(cookie) => format!("net:[{}] (cookie {cookie})", recorded.0),
            None => format!("net:[{}]", recorded.0),
        };
        tracing::info!(
            "{} named network namespace {dead}{}, which is gone; this agent runs in {}",
            file.display(),
            if earlier_boot {
                " of an earlier boot"
            } else {
                ""
            },
            describe_netns(here)
        );
        return Ok((!earlier_boot).then(|| {
            format!(
                "the agent's network namespace {dead}, whose keys the journal names without a \
                 namespace, is gone (the agent runs in {} now): what KPO knew of it there is \
                 forgotten",
                describe_netns(here)
            )
        }));
    }
    // A name `ip netns` gave it (a bind mount under /run/netns) shows it alive even to an agent
    // that cannot see every process: said so, not "cannot be told" beside that very name (s45
    // storyG).
    if !crate::actuate::sysctl::sees_every_process() && named_under_run_netns(recorded.0).is_none()
    {
        return Err(ControlError::OtherNetns(format!(
            "an agent last ran (or, before any agent, a command first changed a parameter) on \
             this state directory in network namespace {}, and this one \
             would run in {}, in a PID namespace of its own, which hides the processes that may \
             hold that namespace: whether it still exists cannot be told from here (a pod needs \
             hostPID for that), and the journal's parameters without a namespace are that \
             namespace's; {how}",
            describe_netns(recorded),
            describe_netns(here)
        )));
    }
    Err(ControlError::OtherNetns(format!(
        "an agent last ran (or, before any agent, a command first changed a parameter) on \
         this state directory in network namespace {}, which still exists, \
         and this one would run in {}: the journal's parameters without a namespace are that \
         namespace's, and read or changed here they would be this one's; {how}",
        describe_netns(recorded),
        describe_netns(here)
    )))
}

/// Whether the namespace alive at the recorded inode is another one: its cookie is not the
/// recorded one. The kernel hands a dead namespace's inode to the next one made, so on a node
/// whose pods come and go this is common, not rare (s55 story AW-1: the agent's next pod was
/// refused for good, "which still exists", naming a stranger's namespace). Without a recorded
/// cookie, or one readable now, nothing is concluded.
fn inode_given_to_another((inode, recorded): (u64, Option<u64>)) -> bool {
    let Some(recorded) = recorded else {
        return false;
    };
    let now = crate::actuate::sysctl::netns_cookie(&crate::actuate::param::NetnsRef::Inode(inode));
    now.is_ok_and(|now| now != recorded)
}

/// The file under /run/netns (a bind mount `ip netns add` made) that is the namespace `inode`, if
/// one is.
fn named_under_run_netns(inode: u64) -> Option<PathBuf> {
    use std::os::unix::fs::MetadataExt;
    let dev = std::fs::metadata("/proc/self/ns/net").ok()?.dev();
    file_of(Path::new("/run/netns"), inode, dev)
}

/// A namespace as `agent-netns` records it (inode, cookie) and the boot it was recorded in
/// (absent in files of earlier versions).
type RecordedNetns = ((u64, Option<u64>), Option<String>);

/// The namespace `file` (`agent-netns`) records; `None` without the file. Unreadable or malformed,
/// it is refused with `how` (what to do): where the agent ran is then unknown.
fn recorded_netns(file: &Path, how: &str) -> Result<Option<RecordedNetns>, ControlError> {
    let text = match std::fs::read_to_string(file) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        // Another user than root cannot read a state directory that is root's: that is what
        // to say, not where the agent ran (s58 story BJ-5: a non-root `kpo journal` was sent to
        // nsenter and to removing a file).
        Err(e)
            if e.kind() == std::io::ErrorKind::PermissionDenied
                && !nix::unistd::geteuid().is_root() =>
        {
            return Err(ControlError::OtherNetns(format!(
                "{} cannot be read ({e}): the state directory is root's; run kpo as root",
                file.display()
            )));
        }
        // Unreadable is not absent: where the agent ran is then unknown.
        Err(e) => {
            return Err(ControlError::OtherNetns(format!(
                "{} cannot be read ({e}), so where the agent ran is unknown; {how}",
                file.display()
            )));
        }
    };
    let mut fields = text.split_whitespace();
    let (Some(Ok(inode)), Some(cookie), boot, None) = (
        fields.next().map(str::parse::<u64>),
        fields.next(),
        fields.next(),
        fields.next(),
    ) else {
        return Err(malformed(file, how));
    };
    let cookie = match cookie {
        "-" => None,
        cookie => Some(cookie.parse().map_err(|_| malformed(file, how))?),
    };
    // A boot id is a UUID: 36 characters of hex digits and dashes.
    let is_boot_id =
        |b: &str| b.len() == 36 && b.chars().all(|c| c.is_ascii_hexdigit() || c == '-');
    if boot.is_some_and(|b| !is_boot_id(b)) {
        return Err(malformed(file, how));
    }
    Ok(Some(((inode, cookie), boot.map(str::to_string))))
}

/// The same namespace: the same inode, and the same cookie where both are known (an inode is
/// reused once its namespace is gone; a cookie never is).
fn same_netns(a: (u64, Option<u64>), b: (u64, Option<u64>)) -> bool {
    let same_cookie = match (a.1, b.1) {
        (Some(a), Some(b)) => a == b,
        _ => true,
    };
    a.0 == b.0 && same_cookie
}

fn malformed(file: &Path, how: &str) -> ControlError {
    ControlError::OtherNetns(format!(
        "{} cannot be read as a network namespace (\"INODE COOKIE [BOOT_ID]\"), so where the agent ran \
         is unknown; {how}",
        file.display()
    ))
}

/// [`open_offline`] with the kernel's actuators, over the sysfs tree the agent last ran with, and
/// under its policy when no `--policy` is given; refused in another network namespace than the
/// agent's.
pub fn open_offline_kernel(
    policy: Option<&Path>,
    state_dir: &Path,
) -> Result<(ChangePath, Vec<ChangeReport>), ControlError> {
    refuse_if_other_netns(state_dir)?;
    let policy = offline_policy(policy, state_dir);
    let mut opened = open_offline(policy.as_deref(), state_dir, kernel_actuators(state_dir))?;
    // A state directory no agent has run on, whose journal holds no change yet: the first change
    // a command makes there (`kpo apply`) makes the journal's parameters without a namespace this
    // namespace's, and records it as an agent's start would. Without it, `kpo revert --all` run
    // later from another namespace (the host's shell after `nsenter --net=POD kpo apply`) wrote
    // the original there (s45 storyF). Not before a change: a `kpo pause` alone ties the state
    // directory to no namespace. A journal with changes and no file is an earlier version's,
    // acted on as before.
    let journal = &opened.0.journal;
    let no_change = journal
        .records()
        .iter()
        .all(|r| !matches!(r, crate::journal::Record::Intent(_)));
    if no_change && journal.archive_len() == 0 && !state_dir.join(AGENT_NETNS_FILE).exists() {
        opened.0.netns_unrecorded = true;
    }
    Ok(opened)
}

/// [`open_offline_to_read`] as [`open_offline_kernel`] opens.
pub fn open_offline_kernel_to_read(
    policy: Option<&Path>,
    state_dir: &Path,
) -> Result<OpenedToRead, ControlError> {
    refuse_if_other_netns(state_dir)?;
    let policy = offline_policy(policy, state_dir);
    open_offline_to_read(policy.as_deref(), state_dir, || kernel_actuators(state_dir))
}

/// The kernel's actuators, over the sysfs tree the agent last ran with. A tree another user could
/// change since (a /tmp emptied by a reboot and made again by someone else, a link placed in it)
/// is checked as `kpo run` checks it at start (s58 story BL-3, review2 R2-5: an offline `kpo
/// revert` wrote a frequency into a root-owned file through such a link): failing, cpufreq is
/// reached through a path that does not exist, in the state directory, so that each of its
/// parameters fails naming it, and nothing falls back to the real /sys, where the journal's
/// values were never written.
fn kernel_actuators(state_dir: &Path) -> Box<dyn Actuators> {
    let mut actuators = KernelActuators::default();
    if let Ok(sys) = std::fs::read_to_string(state_dir.join(SYSFS_ROOT_FILE)) {
        let sys = std::path::PathBuf::from(sys);
        actuators.roots.sys = match crate::collect::check_sysfs_root(&sys) {
            Ok(()) => sys,
            Err(why) => {
                tracing::warn!(
                    "the sysfs tree the agent last ran with, {}, is not used: {why}; its cpufreq \
                     parameters are neither read nor written by this command",
                    sys.display()
                );
                state_dir.join("sysfs-root-refused")
            }
        };
    }
    Box::new(actuators)
}

impl ChangePath {
    /// [`Control::status`] from the journal and the kernel alone: no watch of the guard's.
    pub fn journal_status(&mut self) -> Result<Status, ControlError> {
        let mut params = Vec::new();
        let states: Vec<_> = self.journal.params().cloned().collect();
        // The journal keeps the parameters of namespaces long gone; finding one by inode scans
        // every process, so the namespaces alive are listed once, not once per parameter.
        let mut live: Option<std::collections::HashSet<u64>> = None;
        for p in states {
            // A namespace whose path is deleted while it lives on is read by its inode.
            let address = p.reach();
            let gone = address.as_ref().and_then(|a| match &a.target {
                crate::actuate::param::Target::Netns {
                    netns: crate::actuate::param::NetnsRef::Inode(inode),
                } => (!live
                    .get_or_insert_with(crate::actuate::sysctl::live_netns_inodes)
                    .contains(inode))
                .then(|| crate::actuate::sysctl::netns_gone(*inode)),
                _ => None,
            });
            let (current, current_error) = match (&address, gone) {
                (Some(_), Some(gone)) => (None, Some(gone)),
                (Some(a), None) => match self.read_with_cookie(a) {
                    Ok((v, now)) => match (p.netns_cookie, now) {
                        // An inode taken by a namespace made since: its value is not this
                        // parameter's.
                        (Some(was), Some(now)) if was != now => (
                            None,
                            Some(format!(
                                "its network namespace is gone: the inode now names another \
                                 namespace (cookie {now}, was {was})"
                            )),
                        ),
                        _ => (Some(v), None),
                    },
                    Err(e) => (None, Some(e.to_string())),
                },
                (None, _) => (None, None),
            };
            params.push(ParamStatus {
                key: p.key.clone(),
                address,
                original: p.original.clone(),
                last_applied: p.last_applied.clone(),
                current,
                current_error,
                // With those moved to the archive.
                changes_applied: p.applied.len() + p.archived_changes,
                yielded_to: p
                    .yielded
                    .as_ref()
                    .map(|(by, ts)| format!("{by} at {}", format_ms(*ts))),
                quarantined: p
                    .quarantine
                    .iter()
                    .filter(|q| q.until_ms > crate::journal::now_ms())
                    .map(|q| (q.value.clone(), format_ms(q.until_ms)))
                    .collect(),
                holder: p.holding.map(|id| HoldingChange {
                    change_id: id,
                    source: self
                        .journal
                        .intent(id)
                        .map(|i| i.source.as_str().to_string()),
                }),
            });
        }
        Ok(Status {
            policy: self.policy.origin.to_string(),
            state_dir: self.journal.dir().to_path_buf(),
            paused: self
                .journal
                .paused()
                .map(|(by, ts)| (by.clone(), format_ms(*ts))),
            params,
            incomplete: self.journal.incomplete().iter().map(|i| i.id).collect(),
            warnings: self.journal.warnings().to_vec(),
            policy_file_differs: self.policy.changed_on_disk(),
            watches: Vec::new(),
            saved_watches: 0,
            version: Some(crate::VERSION.to_string()),
            answered_by: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::PolicyOrigin;
    use std::os::unix::fs::MetadataExt;

    /// s58 story BL-3, review2 R2-5: an offline command over the sysfs tree the agent last ran
    /// with reads and writes cpufreq there only while no other user could change it: a policy
    /// directory made writable by every user since, and the command reaches none of it (not the
    /// real /sys either).
    #[test]
    fn an_offline_command_does_not_use_a_recorded_sysfs_tree_others_may_change() {
        use std::os::unix::fs::PermissionsExt;
        let state = tempfile::tempdir().unwrap();
        let tree = tempfile::tempdir().unwrap();
        let policy =
            crate::actuate::cpufreq::fake_policy(tree.path(), 0, 800_000, 3_000_000, 3_000_000);
        std::fs::write(
            state.path().join(SYSFS_ROOT_FILE),
            tree.path().as_os_str().as_encoded_bytes(),
        )
        .unwrap();
        let address: crate::actuate::param::ParamAddress =
            "cpufreq:policy0:scaling_max_freq".parse().unwrap();
        let read = |state: &Path| {
            kernel_actuators(state)
                .open(&address)
                .and_then(|mut a| a.read())
        };
        assert_eq!(
            read(state.path()).unwrap(),
            crate::actuate::param::Value::Int(3_000_000)
        );
        std::fs::set_permissions(&policy, std::fs::Permissions::from_mode(0o777)).unwrap();
        let e = read(state.path()).unwrap_err().to_string();
        assert!(e.contains("sysfs-root-refused"), "{e}");
    }

    /// s43 (found by hand): a refusal named the agent's namespace `net:[N]` only, where
    /// `ip netns` had a name for it. The file found is the one whose inode and device are the
    /// namespace's (a temporary directory's files stand in for /run/netns's bind mounts).
    #[test]
    fn a_namespaces_file_under_run_netns_is_found_by_inode_and_device() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["web", "db"] {
            std::fs::write(dir.path().join(name), "").unwrap();
        }
        let web = std::fs::metadata(dir.path().join("web")).unwrap();
        assert_eq!(
            file_of(dir.path(), web.ino(), web.dev()),
            Some(dir.path().join("web"))
        );
        assert_eq!(file_of(dir.path(), web.ino(), web.dev() + 1), None);
        assert_eq!(
            file_of(&dir.path().join("none"), web.ino(), web.dev()),
            None
        );
    }

    /// An operator's reason is journaled on one line: a line break split a `kpo journal` row
    /// in two, and an escape sequence reached the terminal of whoever listed it (s53 storyAN
    /// AN-1).
    #[test]
    fn an_operators_reason_is_journaled_on_one_line() {
        assert_eq!(
            reason_by(
                "raise\nfor\tthe \u{1b}[31mbatch\u{202e}",
                Some("operator (uid 0)")
            ),
            "raise for the [31mbatch; by operator (uid 0)"
        );
        assert_eq!(reason_by("  plain  ", None), "plain");
    }

    /// A command acting while the agent is down acts only from the network namespace the agent
    /// last ran in: elsewhere the journal's host parameters would be read (reconciled) and written
    /// in another namespace, the wrong one. A state directory without the record (an older agent)
    /// is acted on as before.
    #[test]
    fn offline_commands_refuse_another_network_namespace_than_the_agents() {
        let state = tempfile::tempdir().unwrap();
        crate::journal::store::make_private(state.path());
        let file = state.path().join(AGENT_NETNS_FILE);
        // A command's first change on a state directory no agent ran on records its namespace,
        // as an agent's start would (change::tests::a_commands_first_change_records_...);
        // opening it, or a pause, does not.
        let (mut path, _) = open_offline_kernel(None, state.path()).expect("no record yet");
        assert!(path.netns_unrecorded);
        path.journal.set_paused(true, "op").unwrap();
        drop(path);
        assert!(!file.exists(), "a pause ties it to no namespace");
        let (mut path, _) = open_offline_kernel(None, state.path()).unwrap();
        assert!(path.netns_unrecorded, "no change in the journal yet");
        path.journal.set_paused(false, "op").unwrap();
        drop(path);
        record_agent_netns(state.path()).unwrap();
        let (inode, cookie) = this_netns().unwrap();
        let inode_here = std::fs::metadata("/proc/self/ns/net").unwrap().ino();
        assert_eq!(inode, inode_here);
        let recorded = std::fs::read_to_string(&file).unwrap();
        let cookie_text = cookie.map_or("-".to_string(), |c| c.to_string());
        match crate::journal::current_boot() {
            Some(boot) => assert_eq!(recorded, format!("{inode_here} {cookie_text} {boot}\n")),
            None => assert_eq!(recorded, format!("{inode_here} {cookie_text}\n")),
        }
        open_offline_kernel(None, state.path()).expect("the agent's own namespace");

        let refused = |text: &str| {
            std::fs::write(&file, text).unwrap();
            match open_offline_kernel(None, state.path()) {
                Err(e @ ControlError::OtherNetns(_)) => e.to_string(),
                other => panic!("{text}: {:?}", other.map(|_| ())),
            }
        };
        let other_inode = refused(&format!("{} -\n", inode_here + 1));
        assert!(
            other_inode.starts_with(&format!(
                "refused: the agent last ran (or, before any agent, a command first changed a \
                 parameter) in \
                 network namespace net:[{}], and this command runs in net:[{inode_here}]",
                inode_here + 1
            )),
            "{other_inode}"
        );
        assert!(other_inode.contains("nsenter --net=FILE"), "{other_inode}");
        // Not "remove the file" alone: the commands would then take the dead namespace's
        // values for this one's (s55 review M2).
        assert!(
            other_inode.contains("start the agent here once (`kpo run --recommend-only`"),
            "{other_inode}"
        );
        assert!(other_inode.ends_with(&format!(
            "(removing {} instead would have them take that namespace's values for this one's)",
            file.display()
        )));
        if let Some(c) = cookie {
            // The same inode, given to a namespace made after the agent's died.
            let reused = refused(&format!("{inode_here} {}\n", c + 1));
            assert!(
                reused.contains(&format!("net:[{inode_here}] (cookie {})", c + 1)),
                "{reused}"
            );
        }
        for garbage in ["", "x -\n", "12\n", "12 y\n", "12 - 3\n"] {
            assert!(
                refused(garbage).contains("cannot be read as a network namespace"),
                "{garbage:?}"
            );
        }
        // Unreadable (here a directory in its place) is not absent.
        std::fs::remove_file(&file).unwrap();
        std::fs::create_dir(&file).unwrap();
        let unreadable = match open_offline_kernel(None, state.path()) {
            Err(e @ ControlError::OtherNetns(_)) => e.to_string(),
            other => panic!("a directory: {:?}", other.map(|_| ())),
        };
        assert!(
            unreadable.contains("agent-netns cannot be read (Is a directory (os error 21))"),
            "{unreadable}"
        );
        std::fs::remove_dir(&file).unwrap();
        // Acting where it runs, once the operator removed the record.
        open_offline_kernel(None, state.path()).unwrap();
    }

    /// Set for [`pid_namespace_child`]: the state directory it checks.
    const PID_NS_CHILD_STATE: &str = "KPO_TEST_PID_NS_CHILD_STATE";

    /// Defect (review s29 run-output-api #1): an agent in a PID namespace of its own (a pod
    /// without hostPID) saw none of the processes that hold the namespace recorded, took it for
    /// gone and started, to put that namespace's parameters back in its own. It cannot tell
    /// there, and refuses.
    #[test]
    fn in_a_pid_namespace_of_its_own_the_agent_does_not_take_a_namespace_for_gone() {
        if !nix::unistd::geteuid().is_root() {
            kpo_test_skip::skip("not root: the test makes network and PID namespaces");
            return;
        }
        if std::process::Command::new("unshare")
            .arg("--version")
            .output()
            .is_err()
        {
            kpo_test_skip::skip("no unshare (util-linux) to start a PID namespace");
            return;
        }
        if !crate::actuate::sysctl::sees_every_process() {
            kpo_test_skip::skip(
                "this test runs in a PID namespace of its own already (a container \
                 without the host's PID namespace): the initial one's side cannot be checked",
            );
            return;
        }
        let other = crate::actuate::sysctl::ProcessInOtherNetns::spawn();
        let theirs = other.netns_inode();
        let state = tempfile::tempdir().unwrap();
        crate::journal::store::make_private(state.path());
        std::fs::write(state.path().join(AGENT_NETNS_FILE), format!("{theirs} -\n")).unwrap();
        // In the initial PID namespace the process holding it is seen.
        let here = refuse_start_in_other_netns(state.path())
            .unwrap_err()
            .to_string();
        assert!(here.contains("which still exists"), "{here}");
        assert!(dead_namespace_is_gone_for_certain());
        // The child half's standard output, run in a PID namespace of its own (`named`: the
        // /run/netns name the namespace has, if any).
        let child = |named: Option<&str>| {
            let mut run = std::process::Command::new("unshare");
            run.args(["--pid", "--fork", "--mount-proc", "--"])
                .arg(std::env::current_exe().unwrap())
                .args(["--exact", "control::tests::pid_namespace_child"])
                .args(["--ignored", "--nocapture", "--test-threads=1"])
                .env(PID_NS_CHILD_STATE, state.path());
            if let Some(name) = named {
                run.env(PID_NS_CHILD_NAMED, name);
            }
            let out = run.output().unwrap();
            let stdout = String::from_utf8_lossy(&out.stdout).to_string();
            assert!(
                out.status.success(),
                "{stdout}\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
            stdout
        };
        let stdout = child(None);
        assert!(
            stdout.contains("refused in a PID namespace of its own"),
            "{stdout}"
        );
        assert!(
            stdout.contains("a namespace nothing holds is not gone for certain here"),
            "{stdout}"
        );
        // Named by `ip netns` (a bind mount under /run/netns), it is seen alive from there too,
        // and said to be, not "cannot be told" beside its own name (s45 storyG).
        let name = format!("kpo-test-{}", std::process::id());
        struct Detach(String);
        impl Drop for Detach {
            fn drop(&mut self) {
                let _ = std::process::Command::new("ip")
                    .args(["netns", "del", &self.0])
                    .status();
            }
        }
        let attached = std::process::Command::new("ip")
            .args(["netns", "attach", &name, &other.pid().to_string()])
            .status();
        if !attached.is_ok_and(|s| s.success()) {
            kpo_test_skip::skip("ip netns attach failed: the named case is not checked");
            return;
        }
        let _detach = Detach(name.clone());
        let stdout = child(Some(&name));
        assert!(stdout.contains("refused, named and alive"), "{stdout}");
        drop(other);
    }

    /// s55 story AW-1: a recorded namespace whose inode another namespace has now is told from
    /// it by the cookie; without a cookie nothing is concluded. Asked here of the test's own
    /// namespace, whose inode is at hand and whose cookie is known.
    #[test]
    fn a_namespace_at_the_recorded_inode_with_another_cookie_is_another() {
        use std::os::unix::fs::MetadataExt;
        let Ok(own_cookie) = crate::actuate::sysctl::this_netns_cookie() else {
            kpo_test_skip::skip("no SO_NETNS_COOKIE before Linux 5.14");
            return;
        };
        let inode = std::fs::metadata("/proc/self/ns/net").unwrap().ino();
        assert!(!inode_given_to_another((inode, Some(own_cookie))));
        assert!(inode_given_to_another((inode, Some(own_cookie + 1))));
        assert!(!inode_given_to_another((inode, None)));
    }

    /// Set for [`pid_namespace_child`]: the /run/netns name the namespace has.
    const PID_NS_CHILD_NAMED: &str = "KPO_TEST_PID_NS_CHILD_NAMED";

    /// Run by [`in_a_pid_namespace_of_its_own_the_agent_does_not_take_a_namespace_for_gone`] in
    /// a PID namespace of its own; does nothing elsewhere.
    #[test]
    #[ignore = "child half: run in a PID namespace of its own by in_a_pid_namespace_of_its_own_..."]
    fn pid_namespace_child() {
        let Some(state) = std::env::var_os(PID_NS_CHILD_STATE) else {
            return;
        };
        assert!(!crate::actuate::sysctl::sees_every_process());
        let refused = refuse_start_in_other_netns(Path::new(&state))
            .unwrap_err()
            .to_string();
        if let Some(name) = std::env::var_os(PID_NS_CHILD_NAMED) {
            let name = name.to_string_lossy().to_string();
            assert!(
                refused.contains(&format!("/run/netns/{name}), which still exists")),
                "{refused}"
            );
            println!("refused, named and alive: {refused}");
            return;
        }
        assert!(
            refused.contains("in a PID namespace of its own, which hides the processes"),
            "{refused}"
        );
        println!("refused in a PID namespace of its own: {refused}");
        // Nor is a namespace KPO changed taken for gone there: what it knows of one would be
        // forgotten, its change never put back.
        assert!(!dead_namespace_is_gone_for_certain());
        println!("a namespace nothing holds is not gone for certain here");
    }

    /// Whether the change path takes a namespace that no process holds (inode 1, no network
    /// namespace's) for gone for certain.
    fn dead_namespace_is_gone_for_certain() -> bool {
        let state = tempfile::tempdir().unwrap();
        crate::journal::store::make_private(state.path());
        let (path, _) = open_offline_kernel(None, state.path()).unwrap();
        let key = "net.core.somaxconn@netns:1";
        path.namespace_gone_for_certain(&key.parse().unwrap(), key)
    }

    /// A resume naming no parameter (a request on the socket; the CLI checks its own argument)
    /// is an error, not "not yielded".
    #[test]
    fn a_resume_of_something_that_is_no_parameter_is_an_error() {
        let state = tempfile::tempdir().unwrap();
        crate::journal::store::make_private(state.path());
        let (mut path, _) = open_offline_kernel(None, state.path()).unwrap();
        for bad in ["", "net..core", "net.core.somaxconn@"] {
            match Control::resume(&mut path, Some(bad), "test") {
                Err(ControlError::NotAParameter(why)) => {
                    assert!(
                        why.starts_with(&format!("{bad:?} is not a parameter: ")),
                        "{why}"
                    )
                }
                other => panic!("{bad:?}: {other:?}"),
            }
        }
        assert_eq!(
            Control::resume(&mut path, Some("net.core.somaxconn"), "test").unwrap(),
            Vec::<String>::new()
        );
    }

    /// An offline command given no `--policy` decides under the policy the agent last ran with
    /// (recorded as a canonical path), not the default path's or the built-in one; `--policy`
    /// still wins; an agent run without `--policy` forgets it. The sysfs root is recorded and
    /// forgotten the same way.
    #[test]
    fn offline_commands_use_the_agents_policy_and_sysfs_tree() {
        let state = tempfile::tempdir().unwrap();
        crate::journal::store::make_private(state.path());
        let other = tempfile::tempdir().unwrap();
        let prod = other.path().join("prod.toml");
        std::fs::write(&prod, "[defaults]\nmode = \"observe\"\n").unwrap();
        let prod = std::fs::canonicalize(prod).unwrap();
        let origin = |given: Option<&Path>| {
            let (path, _) = open_offline_kernel(given, state.path()).unwrap();
            path.policy.origin.clone()
        };

        record_policy_path(state.path(), Some(&prod)).unwrap();
        assert_eq!(origin(None), PolicyOrigin::File(prod.clone()));
        let given = other.path().join("given.toml");
        std::fs::write(&given, "[defaults]\n").unwrap();
        assert_eq!(origin(Some(&given)), PolicyOrigin::File(given.clone()));

        // A relative path is recorded as a canonical one.
        let cwd = std::env::current_dir().unwrap();
        let relative = pathdiff(&prod, &cwd);
        record_policy_path(state.path(), Some(&relative)).unwrap();
        assert_eq!(offline_policy(None, state.path()), Some(prod.clone()));

        // A link (a ConfigMap's policy.toml -> ..data/policy.toml) is recorded as the link: its
        // target's directory, swapped at an update and deleted, is not (s45 storyG).
        let mount = other.path().join("configmap");
        std::fs::create_dir_all(mount.join("..2026_1")).unwrap();
        std::fs::write(mount.join("..2026_1/policy.toml"), "[defaults]\n").unwrap();
        std::os::unix::fs::symlink("..2026_1", mount.join("..data")).unwrap();
        std::os::unix::fs::symlink("..data/policy.toml", mount.join("policy.toml")).unwrap();
        record_policy_path(state.path(), Some(&mount.join("policy.toml"))).unwrap();
        let linked = std::fs::canonicalize(&mount).unwrap().join("policy.toml");
        std::fs::create_dir_all(mount.join("..2026_2")).unwrap();
        std::fs::write(mount.join("..2026_2/policy.toml"), "[defaults]\n").unwrap();
        std::os::unix::fs::symlink("..2026_2", mount.join("..data_tmp")).unwrap();
        std::fs::rename(mount.join("..data_tmp"), mount.join("..data")).unwrap();
        std::fs::remove_dir_all(mount.join("..2026_1")).unwrap();
        assert_eq!(offline_policy(None, state.path()), Some(linked.clone()));
        // Given as the link itself, it is the policy the agent ran with: no warning to give.
        assert_eq!(
            offline_policy(Some(&mount.join("policy.toml")), state.path()),
            Some(mount.join("policy.toml"))
        );

        // Removed since: the default decides.
        let moved = other.path().join("moved.toml");
        std::fs::write(&moved, "[defaults]\n").unwrap();
        record_policy_path(state.path(), Some(&moved)).unwrap();
        std::fs::remove_file(&moved).unwrap();
        assert_eq!(offline_policy(None, state.path()), None);

        record_policy_path(state.path(), None).unwrap();
        assert!(!state.path().join(POLICY_PATH_FILE).exists());
        assert_eq!(offline_policy(None, state.path()), None);

        record_sysfs_root(state.path(), Path::new("/tmp/tree")).unwrap();
        assert_eq!(
            std::fs::read_to_string(state.path().join(SYSFS_ROOT_FILE)).unwrap(),
            "/tmp/tree"
        );
        // A relative tree is recorded from the agent's working directory.
        record_sysfs_root(state.path(), Path::new("tree")).unwrap();
        assert_eq!(
            std::fs::read_to_string(state.path().join(SYSFS_ROOT_FILE)).unwrap(),
            std::env::current_dir()
                .unwrap()
                .join("tree")
                .to_str()
                .unwrap()
        );
        record_sysfs_root(state.path(), Path::new("/sys")).unwrap();
        assert!(!state.path().join(SYSFS_ROOT_FILE).exists());
        assert!(!state.path().join(format!("{SYSFS_ROOT_FILE}.tmp")).exists());
    }

    /// The state directory's files and their bytes, sorted by name.
    fn snapshot(dir: &Path) -> Vec<(std::ffi::OsString, Vec<u8>)> {
        let mut files: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (e.file_name(), std::fs::read(e.path()).unwrap())
            })
            .collect();
        files.sort();
        files
    }

    /// Defect (s46 storyL L1): with the agent down, a full state directory made `kpo status`,
    /// `kpo journal`, `kpo pending` and `kpo explain` fail (exit 2) while an interrupted change
    /// waited to be reconciled, since reconciling it needs an append; the same directory
    /// read-only was shown. They show the journal as it is on disk, the change as it was left,
    /// and say why; once the disk takes records again, the next command reconciles it.
    #[test]
    fn a_full_state_directory_is_read_as_it_is_when_reconciling_would_write() {
        use crate::journal::{store::JOURNAL_FILE, IntentKind, FAIL_APPENDS};
        let state = tempfile::tempdir().unwrap();
        crate::journal::store::make_private(state.path());
        let dir = state.path();
        const KEY: &str = "net.core.somaxconn";
        let mut j = Journal::open(dir, Holder::Cli, Duration::ZERO).unwrap();
        j.record_intent(
            &KEY.parse().unwrap(),
            &Value::Int(4096),
            &Value::Int(8192),
            Source::Operator,
            "t",
            IntentKind::Change,
        )
        .unwrap();
        drop(j);
        let k = crate::change::tests::kernel(&[(KEY, Value::Int(8192))]);
        let before = snapshot(dir);

        FAIL_APPENDS.set(true);
        let opened = open_offline_to_read(None, dir, || Box::new(k.clone())).unwrap();
        assert_eq!(
            opened.read_only.as_deref(),
            Some(
                format!(
                    "the state directory {} cannot be written ({JOURNAL_FILE}: No space left on \
                     device (os error 28)), and what a stop left unfinished (an interrupted \
                     change, a quarantine) needs a record to be settled: showing the journal as \
                     it is on disk, as it was left; free space there (or fix what fails), then \
                     run a command again to settle it",
                    dir.display()
                )
                .as_str()
            )
        );
        assert!(opened.reconciled.is_empty());
        let mut path = opened.path;
        assert_eq!(Control::status(&mut path).unwrap().incomplete, vec![1]);
        drop(path);
        assert_eq!(snapshot(dir), before, "nothing written");

        let opened = open_offline_to_read(None, dir, || Box::new(k.clone())).unwrap();
        assert_eq!(opened.read_only, None);
        assert_eq!(opened.reconciled.len(), 1);
    }

    /// Defect (review s32 qa-change #5): on a state directory remounted read-only (ext4's
    /// errors=remount-ro) even `kpo status` and `kpo journal` failed on the lock, when the
    /// operator most needs KPO's history. A command that only reads now reads the journal as it
    /// is on disk (archive included, a damaged line dropped in memory only, an interrupted change
    /// shown as interrupted), writing nothing; a command that would change something is refused,
    /// naming the read-only state directory.
    #[test]
    fn a_read_only_state_directory_is_read_as_it_is_and_nothing_is_written() {
        use crate::journal::{
            archive, lock::FAIL_OPEN, store::JOURNAL_FILE, Boot, IntentKind, Outcome,
        };
        use nix::errno::Errno;
        let state = tempfile::tempdir().unwrap();
        crate::journal::store::make_private(state.path());
        let dir = state.path();
        const KEY: &str = "net.core.somaxconn";
        let address: ParamAddress = KEY.parse().unwrap();
        let open = |options: archive::Options| {
            let boot = Boot {
                id: crate::journal::current_boot(),
                started_ms: crate::journal::boot_started_ms(),
            };
            Journal::open_with(dir, Holder::Cli, Duration::ZERO, boot, options).unwrap()
        };
        let intent = |j: &mut Journal, before: i64, after: i64| {
            j.record_intent(
                &address,
                &Value::Int(before.into()),
                &Value::Int(after.into()),
                Source::Operator,
                "t",
                IntentKind::Change,
            )
            .unwrap()
        };
        let change = |j: &mut Journal, before: i64, after: i64| {
            let id = intent(j, before, after);
            let applied = Outcome::Applied {
                read_back: Value::Int(after.into()),
                reconciled: false,
                why: None,
            };
            j.record_outcome(id, applied).unwrap();
        };
        let mut j = open(archive::Options {
            threshold: u64::MAX,
            ..Default::default()
        });
        change(&mut j, 4096, 4097);
        change(&mut j, 4097, 4098);
        drop(j);
        // Archived at the next open, as of a month later.
        let mut j = open(archive::Options {
            threshold: 1,
            now_ms: Some(crate::journal::now_ms() + 30 * 24 * 3600 * 1000),
            max_ahead: Duration::from_secs(365 * 24 * 3600),
            ..Default::default()
        });
        assert!(j.archive_len() > 0, "some changes are archived");
        change(&mut j, 4098, 4099);
        // Interrupted: the intent is on disk, the kernel has its value, no outcome.
        assert_eq!(intent(&mut j, 4099, 4100), 4);
        drop(j);
        // A damaged line, which a writable open keeps aside and rewrites the file without.
        let damaged_line = std::fs::read(dir.join(JOURNAL_FILE))
            .unwrap()
            .iter()
            .filter(|&&b| b == b'\n')
            .count()
            + 1;
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(dir.join(JOURNAL_FILE))
            .unwrap();
        std::io::Write::write_all(&mut file, b"00000000 {\"type\":\"pause\"}\n").unwrap();
        let k = crate::change::tests::kernel(&[(KEY, Value::Int(4100))]);
        let before = snapshot(dir);

        FAIL_OPEN.set(Some(Errno::EROFS));
        let opened = open_offline_to_read(None, dir, || Box::new(k.clone())).unwrap();
        assert_eq!(
            opened.read_only.as_deref(),
            Some(
                format!(
                    "the state directory {} is read-only (os error 30): showing the journal as \
                     it is on disk; an interrupted change is shown as it was left, not reconciled",
                    dir.display()
                )
                .as_str()
            )
        );
        assert!(opened.reconciled.is_empty());
        let mut path = opened.path;
        assert!(path.journal.is_read_only());
        let (entries, listing_warnings) = path.journal.all_entries();
        assert!(listing_warnings.is_empty(), "{listing_warnings:?}");
        let listed: Vec<_> = entries
            .iter()
            .map(|e| (e.id, e.after.to_string(), e.status.as_str()))
            .collect();
        let expected = [
            (1, "4097", "applied"),
            (2, "4098", "applied"),
            (3, "4099", "applied"),
            (4, "4100", "incomplete"),
        ]
        .map(|(id, after, status)| (id, after.to_string(), status));
        assert_eq!(listed, expected);
        let status = Control::status(&mut path).unwrap();
        assert_eq!(status.incomplete, vec![4]);
        let p = &status.params[..];
        assert_eq!(p.len(), 1);
        assert_eq!(
            (&p[0].original, &p[0].last_applied, &p[0].current),
            (
                &Some(Value::Int(4096)),
                &Some(Value::Int(4099)),
                &Some(Value::Int(4100))
            )
        );
        assert_eq!(p[0].changes_applied, 3);
        let journal = dir.join(JOURNAL_FILE);
        assert_eq!(
            status.warnings,
            [
                format!(
                    "{}: line {damaged_line} is damaged (checksum mismatch); dropped",
                    journal.display()
                ),
                format!(
                    "{}: the file is damaged, and not repaired: the state directory cannot be \
                     written",
                    journal.display()
                ),
                // The damaged line reads as a pause, after every intact record: kept in force
                // (journal::tests::a_damaged_pause_is_kept_in_force_unless_a_resume_follows_it).
                format!(
                    "journal.log line {damaged_line}, damaged, was a kpo pause: the pause is \
                     kept in force (kpo resume lifts it)"
                ),
            ]
        );
        assert!(status.paused.is_some());
        // Nothing is changed through it: the journal refuses the intent, the kernel is not
        // touched.
        let refused = Control::apply(
            &mut path,
            &ApplyRequest {
                address: address.clone(),
                value: Value::Int(8192),
                reason: "t".into(),
                by: None,
            },
        )
        .unwrap_err()
        .to_string();
        let read_only = format!(
            "{}: the state directory is read-only (Read-only file system (os error 30)): KPO \
             journals every change before it makes one, so it changes and records nothing here; \
             remount it read-write (a file system an error made read-only, as ext4 does, is not \
             remounted while the agent holds its journal open: stop the agent, whose on_exit \
             reverts are then not made, unmount it, fsck and mount it, then start the agent), or \
             give --state-dir a writable one (kpo status, kpo journal, kpo pending and kpo \
             explain still read it as it is)",
            dir.display()
        );
        assert_eq!(refused, format!("journal: {read_only}"));
        assert_eq!(k.0.lock().unwrap().values[KEY], Value::Int(4100));
        drop(path);
        assert_eq!(snapshot(dir), before, "nothing was written");

        // A command that would change something is refused, naming the state directory.
        FAIL_OPEN.set(Some(Errno::EROFS));
        match open_offline(None, dir, Box::new(k.clone())) {
            Err(e @ ControlError::Journal(JournalError::ReadOnly { .. })) => {
                assert_eq!(e.to_string(), read_only)
            }
            other => panic!("{:?}", other.map(|_| ())),
        }
        assert_eq!(snapshot(dir), before, "nothing was written");

        // Writable again, the interrupted change is reconciled as every open does.
        let opened = open_offline_to_read(None, dir, || Box::new(k.clone())).unwrap();
        assert_eq!(opened.read_only, None);
        assert_eq!(opened.reconciled.len(), 1);
        assert!(opened.path.journal.incomplete().is_empty());
    }

    /// `target` relative to `base`, through `..` components (both absolute).
    fn pathdiff(target: &Path, base: &Path) -> PathBuf {
        let mut up = PathBuf::new();
        for _ in base.components().skip(1) {
            up.push("..");
        }
        up.join(target.strip_prefix("/").unwrap())
    }
}
