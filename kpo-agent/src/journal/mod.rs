//! The write-ahead journal, in the state directory (default [`DEFAULT_STATE_DIR`]): every change's
//! intent before the kernel is touched and its outcome after, the first original value of each
//! parameter at each target (kept until a reboot or the end of its network namespace), the
//! global pause, parameters yielded to people, and quarantined values. docs/journal.md explains the store and its crash safety.
//!
//! The journal is an append-only file of checksummed JSON lines ([`store`]), each appended with
//! fdatasync before the call returns. All state is a fold over the records, rebuilt on open.
//! [`Journal::open`] takes the state directory's lock ([`lock`]): one writer at a time.
//! The state is folded in `fold.rs`, a parameter's key is made in `keys.rs`, and `kpo journal`'s
//! listing is built in `entries.rs`.
pub mod archive;
mod entries;
pub mod events_mark;
mod fold;
mod keys;
pub mod lock;
pub mod store;

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use serde::{Deserialize, Serialize};

use entries::entry_of;
pub use entries::{reverted_by, Entry};
pub use keys::{key_netns_inode, names_param, own_namespace_as_host, reach, target_key};
use keys::{key_without_alias, keys_without_alias, optional_key_without_alias};
pub use lock::Holder;

use crate::{
    actuate::param::{NetnsRef, ParamAddress, Target, Value},
    policy::{netns_inode, own_netns_inode, Context, Source},
};

pub const DEFAULT_STATE_DIR: &str = "/var/lib/kpo";

/// What takes a journal that cannot be written up again, as [`JournalError::Unwritable`] says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resumes {
    /// A running agent, by itself.
    Agent,
    /// Nothing: the agent is stopping ([`Journal::set_stopping`]).
    AgentStopping,
    /// An operator's command (the agent down) that failed: it is run again.
    Command,
}

impl Resumes {
    fn says(self) -> &'static str {
        match self {
            Resumes::Agent => "and a running agent takes the journal up again by itself",
            Resumes::AgentStopping => {
                "then `kpo revert --all` puts back what the stopping agent could not"
            }
            Resumes::Command => "then run the command again",
        }
    }
}

#[cfg(test)]
thread_local! {
    /// Test hook: the next journal opened on this thread fails its first append like a full
    /// disk (a journal a command opens and reconciles before the test can reach it).
    pub(crate) static FAIL_APPENDS: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{dir}: the agent is running{} and holds the journal; stop it, or use its control socket", pid.map(|p| format!(" (pid {p})")).unwrap_or_default())]
    AgentRunning { dir: PathBuf, pid: Option<u32> },
    #[error("{dir}: another kpo ({holder}{}) holds the journal; try again", pid.map(|p| format!(", pid {p}")).unwrap_or_default())]
    Busy {
        dir: PathBuf,
        pid: Option<u32>,
        holder: String,
    },
    /// The state directory is on a read-only file system: nothing can be journaled, so nothing
    /// is changed; the reading commands read it as it is ([`Journal::open_read_only`]).
    #[error(
        "{dir}: the state directory is read-only ({source}): KPO journals every change before it \
         makes one, so it changes and records nothing here; remount it read-write (a file system \
         an error made read-only, as ext4 does, is not remounted while the agent holds its \
         journal open: stop the agent, whose on_exit reverts are then not made, unmount it, fsck \
         and mount it, then start the agent), or give --state-dir a writable one (kpo status, kpo \
         journal, kpo pending and kpo explain still read it as it is)"
    )]
    ReadOnly {
        dir: PathBuf,
        source: std::io::Error,
    },
    /// An append to the journal failed (a full disk, a quota, an I/O error) and was taken back:
    /// nothing was recorded, and nothing is changed without its record.
    #[error(
        "{dir}: the journal cannot be written ({}: {source}): KPO changes and records nothing \
         until it can; free space in the state directory (or fix what fails there), {}",
        path.file_name().map_or_else(|| path.display().to_string(), |n| n.to_string_lossy().into_owned()),
        then.says()
    )]
    Unwritable {
        dir: PathBuf,
        path: PathBuf,
        source: std::io::Error,
        /// Who takes the journal up again, if anyone.
        then: Resumes,
    },
    /// The file an append would go to has no name left: its state directory was removed (or the
    /// file replaced) under the process holding it open.
    #[error(
        "{path}: the file was deleted while open (its state directory removed or replaced under \
         the agent): a record written there would be lost with it, so KPO changes and records \
         nothing; restart the agent to journal in the state directory as it is now (what the \
         deleted journal held is lost: kpo revert --all no longer knows those originals; until \
         the restart, kpo status asks the running agent, which still knows them: save its \
         output, kpo status --json, to put them back by hand)"
    )]
    Deleted { path: PathBuf },
    /// The file's path names another file now: its state directory (or the file) was moved
    /// aside under the process holding it open and a copy put in its place.
    #[error(
        "{path} is another file now: the state directory (or the file) was replaced under the \
         agent (moved aside, and a copy put in its place?): a record written to the file KPO has \
         open would be missing when the journal is read again, so KPO changes and records \
         nothing; what KPO recorded since the copy was made is in the directory moved aside, not \
         in this one: stop the agent, put that directory back in place of the copy, and start it \
         again (started on the copy, KPO would not know those changes)"
    )]
    Replaced { path: PathBuf },
    /// The file's path names nothing now, though the open file still has a name: its state
    /// directory (or the file) was moved away under the process holding it open.
    #[error(
        "{path} is not there any more, though the file KPO has open still is, under another \
         name: the state directory (or the file) was moved away under the agent, and a record \
         written to it would not be read at the next start, so KPO changes and records nothing; \
         move it back (KPO takes it up again at its next record), or stop the agent and start \
         it on the state directory where it is now (started on an empty one, KPO would know \
         none of its changes)"
    )]
    MovedAway { path: PathBuf },
    #[error("no change #{0} in the journal or its archive (`kpo journal` lists the ids)")]
    NoSuchChange(u64),
    #[error("#{id} is not a change: {what}; nothing to revert")]
    NotAChange { id: u64, what: String },
    /// `kpo revert ID` of a change `kpo journal` lists from its outcome's copy: the intent's
    /// line, which names where the value was written (namespace, device, boot), was lost.
    #[error(
        "#{id}'s intent line was lost to damage (`kpo journal` lists it from its outcome's \
         copy), so where it wrote cannot be read and it is not reverted by id; the value it \
         replaced was {replaced}"
    )]
    IntentLost { id: u64, replaced: String },
    /// `kpo revert ID` of a change the kernel refused, or that was put back at once: the
    /// kernel kept the value it had, so writing that value "back" would overwrite whatever is
    /// there now (a person's value, a later change's).
    #[error("#{id} took no effect: {what}; nothing to revert")]
    TookNoEffect { id: u64, what: String },
    /// `kpo revert ID` of a revert: it would write the reverted change's value again, past the
    /// policy (pause, quarantine, bounds), since a revert is decided by the deny-list alone.
    #[error(
        "#{id} is a revert{}: reverting it would apply {value} again without the \
         policy's say (a pause, a quarantine, its bounds); kpo apply '{name}={value}' asks the \
         policy for it",
        of.map(|of| format!(" (of #{of})")).unwrap_or_default()
    )]
    IsARevert {
        id: u64,
        of: Option<u64>,
        name: String,
        value: String,
    },
    #[error("{dir}: refusing to keep the journal here: {why}")]
    UnsafeDir { dir: PathBuf, why: String },
}

impl JournalError {
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        JournalError::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    /// [`JournalError::io`] for `path` in the state directory `dir`, except that a read-only
    /// mount (ext4's errors=remount-ro) is [`JournalError::ReadOnly`], said by name rather than as
    /// a raw os error, so the reading commands can read the journal as it is and the others refuse.
    pub fn io_in_state_dir(dir: &Path, path: &Path, source: std::io::Error) -> Self {
        if source.raw_os_error() == Some(nix::errno::Errno::EROFS as i32) {
            JournalError::ReadOnly {
                dir: dir.to_path_buf(),
                source,
            }
        } else {
            JournalError::io(path, source)
        }
    }
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn to_time(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

/// Journal and approval ids are counted from 1; one at or above this is not KPO's (a damaged or
/// hand-made record) and is set aside, so that counting on from it can never overflow.
pub const MAX_ID: u64 = 1 << 53;

/// RFC 3339 with milliseconds, for people; a time RFC 3339 cannot write (past the year 9999, in a
/// damaged or hand-made record) as its raw milliseconds.
pub fn format_ms(ms: u64) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    match UNIX_EPOCH.checked_add(Duration::from_millis(ms)) {
        Some(t) if write!(out, "{}", humantime::format_rfc3339_millis(t)).is_ok() => out,
        _ => format!("{ms} ms after the epoch (not a date)"),
    }
}

/// Why an intent was written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum IntentKind {
    /// A new value.
    Change,
    /// Putting back a value the kernel had: change `of`'s value before, or (None) the original.
    Revert { of: Option<u64> },
}

/// Written, and on disk, before the kernel is touched.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Intent {
    pub id: u64,
    pub ts_ms: u64,
    #[serde(deserialize_with = "key_without_alias")]
    pub key: String,
    pub address: ParamAddress,
    pub before: Value,
    pub after: Value,
    pub source: Source,
    pub reason: String,
    #[serde(flatten)]
    pub kind: IntentKind,
    /// The parameter's original as the journal knew it when this intent was written (its own
    /// `before` for the first): every intent repeats it, so losing a damaged line never loses it.
    #[serde(default)]
    pub original: Option<Value>,
    /// Set on a switch KPO turned off so that a value it governs could be set (adaptive
    /// moderation, for a coalescing value): that value's address. `kpo revert --all` and
    /// `on_exit` turn such a switch back on after the values.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub made_way_for: Option<String>,
    /// The kernel's boot id when it was written (`/proc/sys/kernel/random/boot_id`): a change
    /// does not outlive a reboot, so what the journal knows of a parameter starts again at the
    /// first intent of a new boot. Absent in journals written before it was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot: Option<String>,
    /// For a parameter in another network namespace, that namespace's cookie when the intent was
    /// written (`SO_NETNS_COOKIE`; absent where it could not be read): the inode in its address
    /// may later name a new namespace, the cookie never does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netns_cookie: Option<u64>,
    /// For a NIC's parameter, the device its name named when the intent was written: its
    /// interface index and its network namespace's cookie (absent where either could not be
    /// read, and in journals written before it was recorded). A later "no such device" is told
    /// from a rename by it ([`crate::actuate::coalesce::device_now`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<crate::actuate::coalesce::DeviceSeen>,
    /// Set on an advisor's change an operator approved (`kpo approve`): a person's decision, which
    /// a colleague's `kpo revert` of an earlier change leaves as it leaves their `kpo apply`
    /// (s59 review2 R2-5). Absent otherwise, and in journals written before it was recorded.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub approved: bool,
}

impl Intent {
    /// Whether a person decided this change: an operator's own, or an advisor's they approved.
    pub fn a_persons_decision(&self) -> bool {
        self.source == Source::Operator || self.approved
    }
}

/// What an outcome repeats of its intent: what the fold needs of the change, so that an outcome
/// whose intent's line was lost to damage still sets the parameter's state (a lost applied
/// change would otherwise leave the previous value as KPO's, and the value check would take
/// KPO's own newer value for someone else's).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IntentCopy {
    #[serde(deserialize_with = "key_without_alias")]
    pub key: String,
    pub before: Value,
    pub after: Value,
    #[serde(flatten)]
    pub kind: IntentKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub original: Option<Value>,
    /// Who proposed it, so that `kpo journal` can list a change whose intent's line was lost.
    /// Absent in outcomes written before it was repeated (such a change is not listed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<Source>,
}

impl IntentCopy {
    pub fn of(i: &Intent) -> Self {
        IntentCopy {
            key: i.key.clone(),
            before: i.before.clone(),
            after: i.after.clone(),
            kind: i.kind.clone(),
            original: i.original.clone(),
            source: Some(i.source),
        }
    }
}

/// The reason `kpo journal` gives a change listed from the copy of its intent that its outcome
/// keeps: the intent's line, which held the reason, was lost.
pub const LOST_INTENT_REASON: &str =
    "not known: the intent's line was lost to damage; listed from its outcome's copy";

/// How a change ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Outcome {
    /// The kernel has the new value, read back. `reconciled`: found so at start-up after a crash.
    Applied {
        read_back: Value,
        reconciled: bool,
        /// Why reconciliation took it as applied, which `kpo journal` shows: an operator reading
        /// the listing later has neither the start's report nor its log. Absent when not
        /// reconciled, and in outcomes reconciled before it was recorded.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        why: Option<String>,
    },
    /// The kernel did not take it (or the write was interrupted before it); nothing changed, or
    /// the value before was put back. `left`: the value KPO's write left in the kernel when
    /// putting the value before back failed too (a driver that rounded the write, then refused
    /// the put-back): KPO's own value, so the parameter holds this change until it is reverted.
    Failed {
        error: String,
        reconciled: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        left: Option<Value>,
    },
    /// Written, then put back (a read-back mismatch or an error after the write).
    Reverted {
        why: String,
        read_back: Option<Value>,
    },
}

impl Outcome {
    pub fn name(&self) -> &'static str {
        match self {
            Outcome::Applied { .. } => "applied",
            Outcome::Failed { .. } => "failed",
            Outcome::Reverted { .. } => "reverted",
        }
    }
}

/// One journal line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Record {
    Intent(Intent),
    Outcome {
        id: u64,
        ts_ms: u64,
        #[serde(flatten)]
        outcome: Outcome,
        /// Absent in journals written before outcomes repeated it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        intent: Option<IntentCopy>,
    },
    /// The kernel read back `value` after KPO's write of intent `id`, not the value asked for;
    /// written before the value before is put back, so that a crash in between leaves the
    /// kernel's value known as KPO's own write (reconciliation puts the value before back).
    ReadBack {
        id: u64,
        ts_ms: u64,
        value: Value,
    },
    /// A proposal the policy refused (the kernel was not touched).
    Refused {
        id: u64,
        ts_ms: u64,
        address: ParamAddress,
        /// The kernel's value when it was refused; absent when it was not read (a revert refused
        /// before the read) and in journals written before it was recorded.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        before: Option<Value>,
        value: Value,
        source: Source,
        reason: String,
        refusal: String,
    },
    Pause {
        ts_ms: u64,
        by: String,
    },
    Resume {
        ts_ms: u64,
        by: String,
    },
    /// Someone else changed a managed parameter; KPO stops managing it at that target.
    Yield {
        ts_ms: u64,
        #[serde(deserialize_with = "key_without_alias")]
        key: String,
        address: ParamAddress,
        value: Option<Value>,
        by: String,
    },
    /// `kpo resume PARAM`: KPO manages it again.
    Manage {
        ts_ms: u64,
        #[serde(deserialize_with = "key_without_alias")]
        key: String,
    },
    /// The target this key named is gone: a network namespace whose inode now names another
    /// namespace (its cookie differs), or a NIC's device that no longer exists in the namespace
    /// KPO changed it in ([`Journal::forget_gone_device`]). What KPO knew of the parameter there
    /// is forgotten.
    Gone {
        ts_ms: u64,
        #[serde(deserialize_with = "key_without_alias")]
        key: String,
        why: String,
    },
    /// The guard reverted this value; not to be applied again before `until_ms`. One whose
    /// `until_ms` is its own time lifts the one before it ([`Journal::lift_quarantine`]).
    Quarantine {
        ts_ms: u64,
        #[serde(deserialize_with = "key_without_alias")]
        key: String,
        value: Value,
        until_ms: u64,
        why: String,
        /// On a lift: the value's quarantine before the lifted one, which a later quarantine
        /// doubles as if the lifted one had not been ([`quarantine_length`]). Carried in the
        /// record, not looked up at the next quarantine: archiving may have dropped the record it
        /// came from by then.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        earlier: Option<Span>,
    },
    /// Written at recovery for a damaged line dropped ([`Journal::open`]), from what it still
    /// showed: `id`, an id it named above every intact record's, which is never handed out again
    /// (the line may have been the only record of that change), or the change whose outcome it
    /// held, its intent intact (reconciliation says so, not "interrupted"); `key`, a parameter
    /// whose state the records that survived cannot settle (an outcome without its intent, in a
    /// journal written before outcomes repeated their intent, or a change none of whose records
    /// is left): its last applied value may not be KPO's latest, so the value check does not
    /// take a value there for someone else's until KPO's next change of it.
    Damaged {
        ts_ms: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
        #[serde(
            default,
            skip_serializing_if = "Option::is_none",
            deserialize_with = "optional_key_without_alias"
        )]
        key: Option<String>,
        why: String,
    },
    /// Written where old records were moved to `journal.archive.log` ([`archive`]): every
    /// record before it is also in the archive, except the changes in `held`. Only the latest
    /// counts; each archiving pass replaces it.
    Archived {
        ts_ms: u64,
        /// The archive's length once this pass's records were on disk: bytes past it at the next
        /// pass were appended by a pass that did not finish (their records are still here).
        archive_bytes: u64,
        /// Changes before this record that are not in the archive yet (interrupted, or with an
        /// outcome after the cut): listed from here, archived whole later.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        held: Vec<u64>,
        /// Per key, the applied changes moved to the archive (and earlier archives), which the
        /// journal no longer holds: `kpo status` still counts them.
        #[serde(
            default,
            skip_serializing_if = "BTreeMap::is_empty",
            deserialize_with = "keys_without_alias"
        )]
        changes: BTreeMap<String, usize>,
    },
}

impl Record {
    /// The change (or refusal) it belongs to, if any.
    pub fn id(&self) -> Option<u64> {
        match self {
            Record::Intent(i) => Some(i.id),
            Record::Outcome { id, .. }
            | Record::ReadBack { id, .. }
            | Record::Refused { id, .. } => Some(*id),
            _ => None,
        }
    }

    pub fn ts_ms(&self) -> u64 {
        match self {
            Record::Intent(i) => i.ts_ms,
            Record::Outcome { ts_ms, .. }
            | Record::ReadBack { ts_ms, .. }
            | Record::Refused { ts_ms, .. }
            | Record::Pause { ts_ms, .. }
            | Record::Resume { ts_ms, .. }
            | Record::Yield { ts_ms, .. }
            | Record::Manage { ts_ms, .. }
            | Record::Gone { ts_ms, .. }
            | Record::Quarantine { ts_ms, .. }
            | Record::Damaged { ts_ms, .. }
            | Record::Archived { ts_ms, .. } => *ts_ms,
        }
    }

    /// Whether `kpo journal` lists it (an intent or a refusal).
    fn is_listed(&self) -> bool {
        matches!(self, Record::Intent(_) | Record::Refused { .. })
    }

    /// Whether it is an outcome `kpo journal` can list in place of its intent, when the intent's
    /// line was lost: one that repeats the intent, its source included.
    fn can_stand_for_its_intent(&self) -> bool {
        matches!(self, Record::Outcome { intent: Some(copy), .. } if copy.source.is_some())
    }
}

/// A value the guard reverted, kept from being applied again until `until_ms`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Quarantined {
    pub value: Value,
    /// When the quarantine began (its record's time).
    pub since_ms: u64,
    pub until_ms: u64,
    /// The quarantine a later one of the value doubles ([`quarantine_length`]): this one, or for
    /// a lift the one before the lifted one (none if there was none).
    #[serde(skip)]
    pub doubles: Option<Span>,
    /// What the quarantine this one replaced gave to double (its `doubles`), for a lift of this
    /// one to carry on ([`Journal::lift_quarantine`]).
    #[serde(skip)]
    pub replaced: Option<Span>,
}

/// When a quarantine began and ended (or ends).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Span {
    pub since_ms: u64,
    pub until_ms: u64,
}

/// The longest a quarantine grows to by repeating (unless the policy's own is longer).
pub const QUARANTINE_REPEATED_AT_MOST: Duration = Duration::from_secs(7 * 24 * 3600);

/// How long a value the guard reverted stays quarantined: the policy's `base`, or, when the same
/// value was quarantined before and that ended less than a day ago (or has not ended), twice that
/// quarantine's length, at most [`QUARANTINE_REPEATED_AT_MOST`] (or `base` if longer). Why: the
/// advisors see the same kernel value again once a revert restores it, so a fixed length makes a
/// change that keeps regressing come back, and regress, once per `base`, forever; doubling makes
/// each return rarer. A day is how long the journal keeps an ended quarantine's record (see
/// docs/journal.md, archive), so the rule reads the same after an archive. `previous` is the
/// value's [`Quarantined::doubles`]: a lifted quarantine was a mistake and counts for nothing, the
/// one before it still does.
pub fn quarantine_length(previous: Option<Span>, base: Duration, now_ms: u64) -> Duration {
    const DAY_MS: u64 = 24 * 3600 * 1000;
    let Some(previous) = previous.filter(|q| q.until_ms.saturating_add(DAY_MS) > now_ms) else {
        return base;
    };
    let doubled = Duration::from_millis(previous.until_ms.saturating_sub(previous.since_ms))
        .saturating_mul(2)
        .min(QUARANTINE_REPEATED_AT_MOST);
    base.max(doubled)
}

/// What the journal knows of one parameter at one target.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ParamState {
    pub key: String,
    /// The address of its latest intent (used to reach it again).
    pub address: Option<ParamAddress>,
    /// The value before KPO first changed it: the `before` of its earliest intent, or of the
    /// first change made from another value while none of KPO's writes had taken effect there
    /// since (a value someone else wrote over one KPO only found:
    /// [`Folded::original_only_found`]). Otherwise never replaced, only forgotten when it stops
    /// describing the kernel (a reboot, a namespace that is gone).
    pub original: Option<Value>,
    pub original_id: Option<u64>,
    /// Applied changes (id, time), oldest first.
    pub applied: Vec<(u64, u64)>,
    /// Applied changes moved to the archive ([`Record::Archived`]), not in `applied`.
    pub archived_changes: usize,
    /// Changes written and put back (a wrong read-back: the driver rounded the value, or took
    /// another), (id, time), oldest first. Each wrote the kernel twice, so they count towards the
    /// cooldown and the hourly limit as applied ones do: a driver that rounds every value must
    /// not make those limits let through every proposal.
    #[serde(skip)]
    pub put_back: Vec<(u64, u64)>,
    /// The last value KPO applied and read back (or that a write whose put-back failed left).
    pub last_applied: Option<Value>,
    /// The change whose value the kernel has from KPO: set by an applied change (or one whose
    /// put-back failed, leaving its write), cleared by a revert that took effect, a yield or a
    /// reboot (a change put back after a failed read-back leaves it: the kernel still has this
    /// change's value).
    pub holding: Option<u64>,
    /// Set while yielded to a person: who and when.
    pub yielded: Option<(String, u64)>,
    /// Quarantined values: the latest quarantine of each (in force or ended).
    pub quarantine: Vec<Quarantined>,
    /// The boot of its latest intent (see [`Intent::boot`]).
    pub boot: Option<String>,
    /// The network namespace's cookie in its latest intent (see [`Intent::netns_cookie`]).
    pub netns_cookie: Option<u64>,
    /// When its latest intent was written (ms since the epoch).
    pub last_intent_ms: Option<u64>,
    /// Set when a damaged line may have held a change of KPO's here that the journal lost (see
    /// [`Record::Damaged`]): its last applied value may not be KPO's latest, so a kernel value
    /// that differs from it is not taken for someone else's change. Cleared by KPO's next change
    /// that sets a value, a yield, a hand-back, or the end of its namespace or boot.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unsettled: Option<String>,
}

/// Whether the parameter under journal `key` lives in the agent's own network namespace and dies
/// with it: a per-network-namespace sysctl without a namespace in its key. Not a NIC's
/// (`ethtool:`): a physical NIC or an SR-IOV function goes back to the machine's first namespace
/// when its namespace dies, with KPO's value, and the journal is what can put its original back
/// (s55 review2 N3); only a virtual device dies with it, and that the journal cannot tell. See
/// [`Journal::forget_dead_agent_namespace`].
pub fn dies_with_the_agents_namespace(key: &str) -> bool {
    !key.contains('@') && crate::actuate::sysctl::is_per_netns(key)
}

impl ParamState {
    /// Whether what is known of it comes from before boot `boot` (which started at `started_ms`,
    /// if known): its intents carry another boot id, or, written before boot ids were recorded,
    /// the latest is older than that boot.
    fn predates(&self, boot: &Option<String>, started_ms: Option<u64>) -> bool {
        match &self.boot {
            Some(mine) => boot.as_ref().is_some_and(|b| b != mine),
            None => started_ms.is_some_and(|s| self.last_intent_ms.is_some_and(|t| t < s)),
        }
    }

    /// The address that reaches it now (see [`reach`]): its latest address, or, for a network
    /// namespace whose path no longer names it, its inode.
    pub fn reach(&self) -> Option<ParamAddress> {
        self.address.as_ref().map(|a| reach(a, &self.key))
    }

    /// Whether change `change_id`, which set `value`, is what the kernel has from KPO now: the
    /// latest change KPO applied to this parameter (or left there by a failed put-back), in this
    /// boot, not reverted nor yielded to someone else since.
    pub fn still_holds(&self, change_id: u64, value: &Value) -> bool {
        self.holding == Some(change_id)
            && self.last_applied.as_ref() == Some(value)
            && self.yielded.is_none()
    }

    /// Whether a write of KPO's took effect here since its original was taken (in this boot, in
    /// this namespace): a change applied, or one whose put-back failed and left KPO's write. Not
    /// a change the kernel refused, nor one put back after a wrong read-back: the value there is
    /// still the one KPO found, and whoever writes it later is not overwriting KPO's. Stays after
    /// a revert or a hand-back (`kpo resume`): KPO changed it all the same, and `kpo revert --all`
    /// puts its original back.
    pub fn changed_by_kpo(&self) -> bool {
        // `original_id` is the first intent since the original was taken: a change applied
        // before it was in an earlier boot (a host parameter keeps its history for the rate
        // limits). The latest applied change stays live through archiving.
        match (self.applied.last(), self.original_id) {
            (Some((id, _)), Some(first)) => *id >= first,
            _ => false,
        }
    }

    /// Whether anything KPO knows of it would be forgotten by [`Record::Gone`]: an original, a
    /// change, a value held or yielded, a quarantine, a doubt from a damaged line. An intent
    /// records its original, so one interrupted counts.
    fn knows_anything(&self) -> bool {
        self.original.is_some()
            || !self.applied.is_empty()
            || self.archived_changes > 0
            || !self.put_back.is_empty()
            || self.last_applied.is_some()
            || self.holding.is_some()
            || self.yielded.is_some()
            || !self.quarantine.is_empty()
            || self.unsettled.is_some()
    }

    /// The namespace it was in is gone (a [`Record::Gone`], or an intent with another cookie):
    /// nothing KPO knew of it holds for the namespace that has the inode now. Likewise for a
    /// NIC's device that is gone from under its name (a [`Record::Gone`] of its key): the device
    /// that has the name now is another, with its own values.
    fn settle_for_gone_namespace(&mut self) {
        // Nor its rate limit: the dead namespace's changes are not the new one's.
        self.applied.clear();
        self.archived_changes = 0;
        self.put_back.clear();
        self.original = None;
        self.original_id = None;
        self.last_applied = None;
        self.holding = None;
        self.yielded = None;
        self.quarantine.clear();
        self.netns_cookie = None;
        self.unsettled = None;
    }

    /// A reboot took KPO's values away: see [`Journal::open_in_boot`]. A parameter in another
    /// network namespace (one with a cookie) is settled as gone: no namespace but the host's
    /// outlives a reboot, so its yield and quarantines go too.
    fn settle_for_new_boot(&mut self) {
        if self.netns_cookie.is_some() {
            self.settle_for_gone_namespace();
        }
        self.original = None;
        self.original_id = None;
        self.last_applied = None;
        self.holding = None;
        self.boot = None;
        self.unsettled = None;
    }
}

/// Which boot the journal is opened in.
#[derive(Debug, Clone, Default)]
pub struct Boot {
    /// The kernel's boot id (`None`: reboots are told only by `started_ms`, if at all).
    pub id: Option<String>,
    /// When it booted (ms since the epoch): intents without a boot id that are older came from
    /// an earlier boot.
    pub started_ms: Option<u64>,
}

/// When the running kernel booted, from `/proc/stat`'s `btime` (seconds since the epoch).
pub fn boot_started_ms() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().find(|l| l.starts_with("btime "))?;
    let seconds: u64 = line["btime ".len()..].trim().parse().ok()?;
    Some(seconds * 1000)
}

/// The running kernel's boot id, or `None` where it cannot be read (then reboots go unnoticed,
/// as in journals from before it was recorded).
pub fn current_boot() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

/// What the records say, folded in order: the state of every parameter, the pause, the ids. Kept
/// apart from the open file so that a candidate set of records can be folded and compared
/// ([`archive`]) without a lock or a file.
#[derive(Debug, Clone, Default)]
pub(crate) struct Folded {
    records: Vec<Record>,
    warnings: Vec<String>,
    next_id: u64,
    paused: Option<(String, u64)>,
    params: BTreeMap<String, ParamState>,
    intents: BTreeMap<u64, Intent>,
    /// Outcomes whose intent's line was lost (damaged), by the copy of it they carry.
    lost_intents: BTreeMap<u64, IntentCopy>,
    /// Changes whose outcome's line was dropped as damaged while their intent's was kept, with
    /// the [`Record::Damaged`] record's `why`: reconciliation says so, rather than "interrupted".
    lost_outcomes: BTreeMap<u64, String>,
    /// Outcomes that set a value whose intent's line was lost, written before outcomes repeated
    /// their intent: which parameter they changed is not known ([`Journal::open`] settles it).
    keyless: Vec<u64>,
    outcomes: BTreeMap<u64, (u64, Outcome)>,
    /// Values read back after KPO's write that were not what it asked for (`Record::ReadBack`).
    read_backs: BTreeMap<u64, Value>,
    /// This boot's id (`None` where the kernel does not say).
    boot: Option<String>,
    /// When this boot started (for intents written before boot ids were recorded).
    boot_started_ms: Option<u64>,
    /// The latest [`Record::Archived`]: its index in `records`, and the changes before it that
    /// are not in the archive.
    marker: Option<(usize, std::collections::BTreeSet<u64>)>,
    /// `journal.archive.log`'s length at open (0 when there is none).
    archive_len: u64,
    /// The guard's reverts whose quarantine was missing when the journal was opened, before
    /// archiving ([`Folded::unquarantined_reverts`]): the only ones
    /// [`Journal::restore_guard_quarantines`] restores.
    restorable: std::collections::BTreeSet<u64>,
    /// Those of `restorable` without an outcome at open: reconciled since, their outcome is dated
    /// at this start, not at the revert.
    restorable_unsettled: std::collections::BTreeSet<u64>,
}

/// A run of one source's changes at one key ([`Folded::runs`]): indices in `records`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Run {
    /// The run's first intent.
    pub first: usize,
    /// The latest record before it that broke an earlier run, if any.
    pub broken: Option<usize>,
}

/// The journal, open and locked; or, on a state directory that cannot be written, open to read
/// only, without the lock ([`Journal::open_read_only`]).
pub struct Journal {
    dir: PathBuf,
    /// `None` when read-only: every append is refused.
    appender: Option<store::Appender>,
    _lock: Option<lock::StateLock>,
    st: Folded,
    /// The agent's: an append that fails is logged once per outage, and so is the first that
    /// succeeds after it (a command reports its one error itself).
    holder: Holder,
    /// Why the last append failed, until one succeeds.
    unwritable: Option<String>,
    /// The agent is stopping: a failure is not outlived by an agent that resumes.
    stopping: bool,
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journal")
            .field("dir", &self.dir)
            .field("records", &self.st.records.len())
            .finish()
    }
}

impl Journal {
    /// Opens (creating) the journal in `dir` under its lock, waiting up to `wait` for another CLI.
    /// A damaged file is recovered with warnings ([`Journal::warnings`]); never fails on content.
    /// Incomplete intents are left for [`crate::change::ChangePath::reconcile`].
    pub fn open(dir: &Path, holder: Holder, wait: Duration) -> Result<Self, JournalError> {
        Self::open_in_boot(
            dir,
            holder,
            wait,
            Boot {
                id: current_boot(),
                started_ms: boot_started_ms(),
            },
        )
    }

    /// [`Journal::open`] as of boot `boot` (tests stand for a reboot with another id). What the
    /// journal knows of a parameter from an earlier boot is settled: a reboot took KPO's values
    /// away, so there is no last applied value (nothing to compare with, nothing to yield for) and
    /// no original to put back (the boot's own configuration is what the kernel has now); the
    /// next change of it starts a new original. Yields and quarantines stay, except for a
    /// parameter in another network namespace, which no reboot leaves.
    pub fn open_in_boot(
        dir: &Path,
        holder: Holder,
        wait: Duration,
        boot: Boot,
    ) -> Result<Self, JournalError> {
        Self::open_with(dir, holder, wait, boot, archive::Options::default())
    }

    /// [`Journal::open_in_boot`] with the archiving settings `options` (tests use a small
    /// threshold).
    pub(crate) fn open_with(
        dir: &Path,
        holder: Holder,
        wait: Duration,
        boot: Boot,
        options: archive::Options,
    ) -> Result<Self, JournalError> {
        store::ensure_dir(dir)?;
        let dir_warning = store::check_dir(dir)?;
        let lock = lock::acquire(dir, holder, wait)?;
        let mut loaded = Self::load_repaired(dir, &boot)?;
        loaded.warnings.extend(dir_warning);
        let mut st = Folded::of(loaded.records, &boot);
        st.warnings.splice(0..0, loaded.warnings);
        // Before archiving: a pass drops a quarantine that ended over a day ago and may keep the
        // revert it followed, which would then look as if its quarantine was lost.
        let restorable = st.unquarantined_reverts();
        let restorable_unsettled = restorable
            .iter()
            .copied()
            .filter(|id| !st.outcomes.contains_key(id))
            .collect();
        // Before the appender opens the file: archiving replaces it.
        let mut st = archive::at_open(dir, st, &boot, &options);
        st.restorable = restorable;
        st.restorable_unsettled = restorable_unsettled;
        #[allow(unused_mut)]
        let mut appender = store::Appender::open(dir, store::JOURNAL_FILE)?;
        #[cfg(test)]
        if FAIL_APPENDS.with(std::cell::Cell::take) {
            appender.fail_after = Some(0);
        }
        Ok(Journal {
            dir: dir.to_path_buf(),
            appender: Some(appender),
            _lock: Some(lock),
            st,
            holder,
            unwritable: None,
            stopping: false,
        }
        .keep_ids_named_elsewhere_at_open())
    }

    /// The journal in `dir` as it is on disk, for reading only, when the state directory cannot be
    /// written (a read-only mount, [`JournalError::ReadOnly`]): without the lock, which cannot be
    /// taken there (nor can anyone write the journal, so nothing changes under the read); without
    /// recovery's rewrite of a damaged file (its dropped lines are described in memory, as the
    /// rewrite would have recorded them) and without archiving. Interrupted changes stay as they
    /// were left ([`Journal::incomplete`]): reconciling them would journal. Every append fails.
    pub fn open_read_only(dir: &Path) -> Result<Self, JournalError> {
        Self::open_read_only_in_boot(
            dir,
            Boot {
                id: current_boot(),
                started_ms: boot_started_ms(),
            },
        )
    }

    /// [`Journal::open_read_only`] as of boot `boot`.
    pub fn open_read_only_in_boot(dir: &Path, boot: Boot) -> Result<Self, JournalError> {
        let dir_warning = store::check_dir(dir)?;
        let mut loaded = store::load_as_is(dir, store::JOURNAL_FILE, |found| {
            Folded::of(found.records.clone(), &boot).damage_records(&found.damaged)
        })?;
        loaded.warnings.extend(dir_warning);
        let mut st = Folded::of(loaded.records, &boot);
        st.warnings.splice(0..0, loaded.warnings);
        st.archive_len = std::fs::metadata(dir.join(archive::ARCHIVE_FILE)).map_or(0, |m| m.len());
        Ok(Journal {
            dir: dir.to_path_buf(),
            appender: None,
            _lock: None,
            st,
            holder: Holder::Cli,
            unwritable: None,
            stopping: false,
        }
        .keep_ids_named_elsewhere_at_open())
    }

    /// Another file of the state directory (`named_by`) names change `highest`, past every
    /// record the journal has: the journal lost records it had (restored from an older copy, cut
    /// short at a line's end, emptied or deleted: s50 storyW W2), which its own recovery cannot
    /// tell from a journal that never had them, and KPO's changes after its last record now read
    /// as someone else's. Said as recovery's warnings are, and the ids up to `highest` are kept
    /// from being handed out again (a `damaged` record, as for a lost line): a new change must
    /// not take the number the approvals, the event stream and an operator's notes give an
    /// older one. Opened to read only, it is said and kept in memory.
    fn keep_ids_named_elsewhere(&mut self, highest: u64, named_by: &str) {
        // An id past the largest the journal hands out names no change of its (s53 storyAL
        // F3: one at the largest made the next id one past it).
        if highest < self.st.next_id || highest.saturating_add(1) >= MAX_ID {
            return;
        }
        let last = match self.st.next_id - 1 {
            0 => "it has none".to_string(),
            n => format!("its last is #{n}"),
        };
        let why = format!(
            "{named_by} names change #{highest}, and {last}: the journal has lost records \
             (restored from an older copy, cut short, emptied or deleted?). KPO does not know the \
             changes it lost: a value one of them left in the kernel reads as someone else's, \
             and kpo revert --all does not put it back; compare kpo journal and kpo explain with \
             the kernel. No id up to #{highest} is handed out again"
        );
        self.st.warnings.push(why.clone());
        let kept = Record::Damaged {
            ts_ms: now_ms(),
            id: Some(highest),
            key: None,
            why,
        };
        // Not written (read-only, a full disk): kept in memory, and the next open says it again.
        if self.is_read_only() || self.append(kept).is_err() {
            self.st.next_id = highest + 1;
        }
    }

    /// [`Journal::keep_ids_named_elsewhere`] for what the approvals file names, and for the
    /// archive when it is longer than the journal's latest `archived` record says (or the journal
    /// has none): a pass the journal does not know of wrote it, so the journal lost the records
    /// of it (restored from an older copy: s50 review J1; or emptied). Read only then, and not
    /// once the loss is recorded since the archive last changed: the archive only grows.
    fn keep_ids_named_elsewhere_at_open(mut self) -> Self {
        let named = crate::approvals::store::ApprovalStore::highest_journal_id_in(&self.dir);
        if let Some(highest) = named {
            self.keep_ids_named_elsewhere(highest, crate::approvals::store::APPROVALS_FILE);
        }
        // An unreadable mark witnesses nothing; the agent's start says so.
        if let Ok(Some(highest)) = events_mark::load(&self.dir) {
            self.keep_ids_named_elsewhere(highest, events_mark::MARK_FILE);
        }
        let marked = (self.st.records.iter().rev()).find_map(|r| match r {
            Record::Archived { archive_bytes, .. } => Some(*archive_bytes),
            _ => None,
        });
        // Since the latest pass, and with the archive as it was then: an older loss says nothing
        // of a later restore (review2 N2, review3 R3). Reading it again only costs: ids it holds
        // at or below those kept already say nothing.
        let archive_changed_ms = std::fs::metadata(self.dir.join(archive::ARCHIVE_FILE))
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(u64::MAX, |d| d.as_millis() as u64);
        let recorded = (self.st.records.iter().rev())
            .take_while(|r| !matches!(r, Record::Archived { .. }))
            .any(|r| {
                matches!(r, Record::Damaged { why, ts_ms, .. }
                    if why.starts_with(archive::ARCHIVE_FILE) && *ts_ms > archive_changed_ms)
            });
        let unknown_pass = self.st.archive_len > marked.unwrap_or(0) && !recorded;
        let archived = unknown_pass
            .then(|| archive::highest_id(&self.dir))
            .flatten();
        if let Some(highest) = archived {
            self.keep_ids_named_elsewhere(highest, archive::ARCHIVE_FILE);
        }
        self
    }

    /// Whether this was opened to read only ([`Journal::open_read_only`]).
    pub fn is_read_only(&self) -> bool {
        self.appender.is_none()
    }

    /// Reads the journal (under the caller's lock), dropping damaged lines: the rewrite that
    /// drops them also holds the [`Record::Damaged`] records of what they still show
    /// ([`Folded::damage_records`]), judged from the intact records as found, before archiving
    /// moves any of them.
    fn load_repaired(dir: &Path, boot: &Boot) -> Result<store::Loaded<Record>, JournalError> {
        store::load_repairing(dir, store::JOURNAL_FILE, |found| {
            Folded::of(found.records.clone(), boot).damage_records(&found.damaged)
        })
    }

    /// This boot's id, as intents record it.
    pub fn boot(&self) -> Option<&str> {
        self.st.boot.as_deref()
    }

    /// Whether a later change or revert of the same parameter at the same target that set a
    /// value (applied, or reverted) follows intent `i`: the kernel's value is then that one's.
    pub fn superseded(&self, i: &Intent) -> bool {
        self.st.superseded(i)
    }

    /// The change of the same parameter right after intent `i` (its intent, or the copy its
    /// outcome carries), if any, with the NIC device its intent names (none when the intent's
    /// line was lost, or it names none).
    pub fn next_change(
        &self,
        i: &Intent,
    ) -> Option<(IntentCopy, Option<crate::actuate::coalesce::DeviceSeen>)> {
        self.st.next_change(i)
    }

    /// See [`fold::Folded::gone_after`].
    pub fn gone_after(&self, i: &Intent) -> Option<(&str, u64)> {
        self.st.gone_after(i)
    }

    /// Whether intent `i` was made before the machine last rebooted: its boot id differs from
    /// this boot's, or, written before boot ids were recorded, it is older than this boot.
    pub fn before_this_boot(&self, i: &Intent) -> bool {
        self.st.before_this_boot(i)
    }

    /// The first of `source`'s changes at `address`, in this boot, in the unbroken run of them
    /// that the journal ends with: the first applied (or left-holding) change of `source` after
    /// the last one of another source (or of an earlier boot) that took effect there, a yield, a
    /// hand-back or the end of its namespace. `None` when the latest of those is not `source`'s.
    /// The archive keeps every change of such a run live (and [`archive::differences`] checks
    /// the answer), so this reads the live journal only.
    pub fn first_of_run(&self, address: &ParamAddress, source: Source) -> Option<&Intent> {
        let key = target_key(address);
        let run = self
            .st
            .runs(source, Some(&key))
            .get(key.as_str())
            .copied()?;
        match &self.st.records[run.first] {
            Record::Intent(i) => Some(i),
            _ => None,
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// What recovery found on open (empty for a clean journal).
    pub fn warnings(&self) -> &[String] {
        &self.st.warnings
    }

    /// The live journal's records, in order: not the archived ones. Whatever a caller derives
    /// from them must come out the same after archiving: either [`archive::differences`] checks
    /// it (the fold's state, [`Journal::first_of_run`], ...), or it only reads records appended
    /// since the journal was opened (archiving happens at open only; the optimizer's window
    /// mark), or it reads [`Intent::made_way_for`] (each switch intent is kept).
    pub fn records(&self) -> &[Record] {
        &self.st.records
    }

    fn fold(&mut self, r: Record) {
        self.st.fold(r);
    }

    /// Appends (fsync) then folds a record.
    pub fn append(&mut self, r: Record) -> Result<(), JournalError> {
        let Some(appender) = self.appender.as_mut() else {
            return Err(JournalError::ReadOnly {
                dir: self.dir.clone(),
                source: std::io::Error::from_raw_os_error(nix::errno::Errno::EROFS as i32),
            });
        };
        // A failure that could not be taken back left the file unsafe to append to: opened again
        // (cut back to before that record, never acknowledged), as soon as the state directory
        // lets it be, so that a running agent resumes without a restart.
        // (Not reopened, it refuses the record, saying the failure that poisoned it.)
        if appender.is_poisoned() {
            if let Ok(reopened) = appender.reopen_after_failure(&self.dir, store::JOURNAL_FILE) {
                *appender = reopened;
            }
        }
        let appended = appender.append(&r);
        if let Err(e) = appended {
            let e = match e {
                JournalError::Io { path, source } => {
                    if source.raw_os_error() == Some(nix::errno::Errno::EROFS as i32) {
                        JournalError::ReadOnly {
                            dir: self.dir.clone(),
                            source,
                        }
                    } else {
                        JournalError::Unwritable {
                            dir: self.dir.clone(),
                            path,
                            source,
                            then: match (self.holder, self.stopping) {
                                (_, true) => Resumes::AgentStopping,
                                (Holder::Agent, false) => Resumes::Agent,
                                (Holder::Cli, false) => Resumes::Command,
                            },
                        }
                    }
                }
                e => e,
            };
            if self.unwritable.is_none() && self.holder == Holder::Agent && !self.stopping {
                tracing::error!(
                    "journal: {e} (the agent keeps observing and advising; this is said once, and \
                     again when the journal can be written)"
                );
            }
            self.unwritable = Some(e.to_string());
            return Err(e);
        }
        if self.unwritable.take().is_some() && self.holder == Holder::Agent {
            tracing::info!(
                "journal: {} can be written again: changes and their records resume",
                self.dir.display()
            );
        }
        self.fold(r);
        Ok(())
    }

    /// The agent is stopping (`on_exit`): a failure's error says what puts back what it leaves,
    /// not that the agent takes the journal up again.
    pub fn set_stopping(&mut self) {
        self.stopping = true;
    }

    /// Why the journal's last append failed, until one succeeds: while it is set, nothing that
    /// needs a record (a change, a pause) can be made.
    pub fn unwritable(&self) -> Option<&str> {
        self.unwritable.as_deref()
    }

    /// Test hook: after `pass` more appends, the next one writes `bytes` bytes and fails like a
    /// full disk.
    #[cfg(test)]
    pub(crate) fn fail_an_append(&mut self, pass: usize, bytes: usize) {
        let appender = self.appender.as_mut().expect("a journal open to write");
        appender.pass_first = pass;
        appender.fail_after = Some(bytes);
    }

    /// Makes an intent durable and returns its id. Call before touching the kernel.
    pub fn record_intent(
        &mut self,
        address: &ParamAddress,
        before: &Value,
        after: &Value,
        source: Source,
        reason: &str,
        kind: IntentKind,
    ) -> Result<u64, JournalError> {
        self.record_intent_making_way(
            address, before, after, source, reason, kind, None, None, None, false,
        )
    }

    /// [`Journal::record_intent`] of a switch turned off for the value at `made_way_for`, of a
    /// parameter in the network namespace with `netns_cookie`, or of a NIC's on `device`.
    #[allow(clippy::too_many_arguments)]
    pub fn record_intent_making_way(
        &mut self,
        address: &ParamAddress,
        before: &Value,
        after: &Value,
        source: Source,
        reason: &str,
        kind: IntentKind,
        made_way_for: Option<String>,
        netns_cookie: Option<u64>,
        device: Option<crate::actuate::coalesce::DeviceSeen>,
        approved: bool,
    ) -> Result<u64, JournalError> {
        let id = self.st.next_id;
        let key = target_key(address);
        let original = self.st.original_for(&key, before, &kind);
        self.append(Record::Intent(Intent {
            id,
            ts_ms: now_ms(),
            key,
            original: Some(original),
            address: address.clone(),
            before: before.clone(),
            after: after.clone(),
            source,
            reason: reason.to_string(),
            kind,
            made_way_for,
            boot: self.st.boot.clone(),
            netns_cookie,
            device,
            approved,
        }))?;
        Ok(id)
    }

    /// Records that the network namespace `address` named is gone (its inode now names another
    /// one), and forgets what KPO knew of the parameter there.
    pub fn forget_gone_namespace(
        &mut self,
        address: &ParamAddress,
        why: &str,
    ) -> Result<(), JournalError> {
        self.append(Record::Gone {
            ts_ms: now_ms(),
            key: target_key(address),
            why: why.to_string(),
        })
    }

    /// The agent's own network namespace, which the journal's keys without a namespace name, is
    /// gone (this agent starts in another within the same boot): each per-namespace sysctl KPO
    /// knew anything of there is settled as gone, as a namespace that dies under any other key
    /// is. Otherwise the new namespace's own values were taken for a person's change of KPO's
    /// (a yield), the guard judged the dead namespace's changes by the new one's health, and
    /// `kpo revert --all` wrote the dead namespace's originals here (s55 story AT-1). Keys of no
    /// network namespace (`vm.*`, `kernel.*`, cpufreq's), the `net.*` keys only the machine's
    /// first namespace has, and NICs' ([`dies_with_the_agents_namespace`]) stay. Returns the keys
    /// settled.
    pub fn forget_dead_agent_namespace(&mut self, why: &str) -> Result<Vec<String>, JournalError> {
        let keys: Vec<String> = self
            .st
            .params
            .values()
            .filter(|p| dies_with_the_agents_namespace(&p.key))
            .filter(|p| p.knows_anything())
            .map(|p| p.key.clone())
            .collect();
        for key in &keys {
            self.append(Record::Gone {
                ts_ms: now_ms(),
                key: key.clone(),
                why: why.to_string(),
            })?;
        }
        Ok(keys)
    }

    /// Records that the network device of the NIC parameter under `key` is gone from under its
    /// name (its index names nothing in the namespace KPO changed it in, and another device has
    /// its name), and forgets what KPO knew of the parameter: KPO's value is the old device's,
    /// and the device under the name now is another, with its own values.
    pub fn forget_gone_device(&mut self, key: &str, why: &str) -> Result<(), JournalError> {
        self.append(Record::Gone {
            ts_ms: now_ms(),
            key: key.to_string(),
            why: why.to_string(),
        })
    }

    /// What the running agent knows of an outcome the file could not take (see
    /// [`crate::change::ChangePath`]'s handling of a revert whose outcome could not be written):
    /// folded into the state, not written. The next start reconciles the intent against the
    /// kernel and writes it then.
    pub fn fold_unrecorded(&mut self, id: u64, outcome: Outcome) {
        let intent = self.intent(id).map(IntentCopy::of);
        self.fold(Record::Outcome {
            id,
            ts_ms: now_ms(),
            outcome,
            intent,
        });
    }

    pub fn record_outcome(&mut self, id: u64, outcome: Outcome) -> Result<(), JournalError> {
        let intent = self.intent(id).map(IntentCopy::of);
        self.append(Record::Outcome {
            id,
            ts_ms: now_ms(),
            outcome,
            intent,
        })
    }

    /// Journals a refused proposal; returns its id.
    pub fn record_refusal(
        &mut self,
        address: &ParamAddress,
        before: Option<&Value>,
        value: &Value,
        source: Source,
        reason: &str,
        refusal: &str,
    ) -> Result<u64, JournalError> {
        let id = self.st.next_id;
        self.append(Record::Refused {
            id,
            ts_ms: now_ms(),
            address: address.clone(),
            before: before.cloned(),
            value: value.clone(),
            source,
            reason: reason.to_string(),
            refusal: refusal.to_string(),
        })?;
        Ok(id)
    }

    pub fn paused(&self) -> Option<&(String, u64)> {
        self.st.paused.as_ref()
    }

    /// Sets the global pause; false if it already was in that state.
    pub fn set_paused(&mut self, paused: bool, by: &str) -> Result<bool, JournalError> {
        if paused == self.st.paused.is_some() {
            return Ok(false);
        }
        let ts_ms = now_ms();
        let by = by.to_string();
        self.append(if paused {
            Record::Pause { ts_ms, by }
        } else {
            Record::Resume { ts_ms, by }
        })?;
        Ok(true)
    }

    /// Someone else changed `address`: KPO stops managing it there.
    pub fn set_yielded(
        &mut self,
        address: &ParamAddress,
        value: Option<Value>,
        by: &str,
    ) -> Result<(), JournalError> {
        self.append(Record::Yield {
            ts_ms: now_ms(),
            key: target_key(address),
            address: address.clone(),
            value,
            by: by.to_string(),
        })
    }

    /// Hands back yielded parameters: every target of a parameter name (`net.core.somaxconn`), or
    /// one target (`net.core.somaxconn@netns:4026532281`). Returns the keys handed back.
    pub fn resume_param(&mut self, name: &str) -> Result<Vec<String>, JournalError> {
        let keys: Vec<String> = self
            .st
            .params
            .values()
            .filter(|p| p.yielded.is_some())
            .filter(|p| names_param(name, &p.key, p.address.as_ref()))
            .map(|p| p.key.clone())
            .collect();
        for key in &keys {
            self.append(Record::Manage {
                ts_ms: now_ms(),
                key: key.clone(),
            })?;
        }
        Ok(keys)
    }

    /// The guard reverted `value`: keep it from being applied again for `for_`, or longer when
    /// it was reverted before (see [`quarantine_length`]). Returns how long.
    pub fn quarantine(
        &mut self,
        address: &ParamAddress,
        value: &Value,
        for_: Duration,
        why: &str,
    ) -> Result<Duration, JournalError> {
        let now = now_ms();
        let key = target_key(address);
        let previous = self.st.doubled_quarantine(&key, value);
        let length = quarantine_length(previous, for_, now);
        self.append(Record::Quarantine {
            ts_ms: now,
            key,
            value: value.clone(),
            until_ms: now.saturating_add(length.as_millis().min(u128::from(u64::MAX)) as u64),
            why: why.to_string(),
            earlier: None,
        })?;
        Ok(length)
    }

    /// Ends `value`'s quarantine at `address` now, if one is in force: the guard saw that the
    /// change it was reverted for did not cause the regression ([`crate::guard::Cleared`]).
    /// Journaled as a quarantine that ends as it begins, so a later quarantine of the value
    /// starts again from the policy's length instead of doubling one that was a mistake
    /// ([`quarantine_length`]). Returns whether one was in force.
    pub fn lift_quarantine(
        &mut self,
        address: &ParamAddress,
        value: &Value,
        why: &str,
    ) -> Result<bool, JournalError> {
        let now = now_ms();
        let key = target_key(address);
        let in_force = (self.st.params.get(&key))
            .and_then(|p| {
                p.quarantine
                    .iter()
                    .find(|q| &q.value == value && q.until_ms > now)
            })
            .cloned();
        let Some(lifted) = in_force else {
            return Ok(false);
        };
        self.append(Record::Quarantine {
            ts_ms: now,
            key,
            value: value.clone(),
            until_ms: now,
            why: why.to_string(),
            earlier: lifted.replaced,
        })?;
        Ok(true)
    }

    /// Quarantines the guard's reverts are missing: the guard reverts a change, then quarantines
    /// its value, so an agent killed between the two left the value reverted but free to be
    /// applied again (and a later quarantine of it not doubled). For each revert of the guard
    /// whose quarantine was missing at open ([`Folded::unquarantined_reverts`]) that took effect,
    /// the quarantine is journaled as the guard would have, from the revert's time (its outcome's,
    /// or its intent's when the outcome was reconciled at this start) (its length by
    /// [`quarantine_length`] with `base`, the policy's). One that has ended already is journaled
    /// too, as ended: the revert then has its quarantine, and a later start does not judge it
    /// again (with a `guard.quarantine` raised since, it would come back). Not for a parameter
    /// whose namespace is gone since (or, for one in another namespace, which no reboot leaves,
    /// whose revert was in an earlier boot). Returns what was journaled, to log.
    pub fn restore_guard_quarantines(
        &mut self,
        base: Duration,
    ) -> Result<Vec<String>, JournalError> {
        let st = &self.st;
        let mut missing = Vec::new();
        for (at, r) in st.records.iter().enumerate() {
            let Record::Intent(i) = r else { continue };
            if !st.restorable.contains(&i.id) {
                continue;
            }
            let Some((reverted_ms, Outcome::Reverted { read_back, .. })) = st.outcomes.get(&i.id)
            else {
                continue;
            };
            // Put back after a wrong read-back: the revert did not take.
            if read_back.as_ref() == Some(&i.before) {
                continue;
            }
            let IntentKind::Revert { of: Some(of) } = i.kind else {
                continue;
            };
            let Some(value) = st.quarantine_missing(at, i) else {
                continue;
            };
            if i.netns_cookie.is_some() && st.before_this_boot(i) {
                continue;
            }
            // An outcome reconciled at this start is dated now, maybe long after the revert: its
            // intent's time is the revert's then.
            let since = if st.restorable_unsettled.contains(&i.id) {
                i.ts_ms
            } else {
                *reverted_ms
            };
            missing.push((i.clone(), of, value, since));
        }
        let now = now_ms();
        let mut restored = Vec::new();
        for (revert, of, value, since) in missing {
            let previous = self.st.doubled_quarantine(&revert.key, &value);
            let length = quarantine_length(previous, base, since);
            let until_ms =
                since.saturating_add(length.as_millis().min(u128::from(u64::MAX)) as u64);
            let ended = until_ms <= now;
            self.append(Record::Quarantine {
                ts_ms: since,
                key: revert.key.clone(),
                value: value.clone(),
                until_ms,
                why: format!(
                    "{} (journaled at the next start{}: the agent stopped between the guard's \
                     revert #{} and this quarantine)",
                    revert.reason,
                    if ended { ", ended already" } else { "" },
                    revert.id
                ),
                earlier: None,
            })?;
            restored.push(if ended {
                format!(
                    "{}: {value}, which the guard reverted (#{of} by #{}) just before the agent \
                     stopped, would have been quarantined until {}, which has passed; journaled \
                     as ended, as the guard would have done",
                    revert.key,
                    revert.id,
                    format_ms(until_ms)
                )
            } else {
                format!(
                    "{}: {value}, which the guard reverted (#{of} by #{}) just before the agent \
                     stopped, is quarantined until {}, as the guard would have done",
                    revert.key,
                    revert.id,
                    format_ms(until_ms)
                )
            });
        }
        Ok(restored)
    }

    /// The policy's view of a parameter: pause, yielded, last change, advisors' changes in the
    /// last hour, quarantine of `value`. `before` is left for the caller (the kernel's value).
    pub fn context(&self, address: &ParamAddress, value: &Value, now: SystemTime) -> Context {
        let mut ctx = Context::new(now);
        ctx.paused = self.st.paused.is_some();
        if let Some(p) = self.st.params.get(&target_key(address)) {
            ctx.yielded = p.yielded.is_some();
            let writes = || p.applied.iter().chain(&p.put_back);
            ctx.last_change = writes().map(|(_, ts)| to_time(*ts)).max();
            // The hourly limit stops advisors from oscillating: an operator's own changes
            // (`kpo apply`) are not theirs to count against it.
            let an_advisors = |id: &u64| {
                self.intent(*id)
                    .is_none_or(|i| i.source != Source::Operator)
            };
            // A change in the last hour, by the rule of [`crate::clock`] for a clock stepped back.
            let now_ms = crate::clock::ms(now);
            ctx.changes_last_hour = writes()
                .filter(|(id, ts)| crate::clock::runs(*ts, 3_600_000, now_ms) && an_advisors(id))
                .count() as u32;
            // One from before the clock stepped back ([`crate::clock`]) is over, however far
            // ahead its end lies.
            ctx.quarantined_until = p
                .quarantine
                .iter()
                .filter(|q| &q.value == value)
                .filter(|q| {
                    let length = q.until_ms.saturating_sub(q.since_ms);
                    !crate::clock::from_before_a_step(q.since_ms, length, now_ms)
                })
                .map(|q| to_time(q.until_ms))
                .max();
        }
        ctx
    }

    pub fn param_state(&self, address: &ParamAddress) -> Option<&ParamState> {
        self.st.params.get(&target_key(address))
    }

    /// A parameter by the key it is journaled under: an intent's or a state's own `key`, not one
    /// rebuilt from an address whose path may name another namespace now, or none.
    pub fn param_by_key(&self, key: &str) -> Option<&ParamState> {
        self.st.params.get(key)
    }

    /// Every parameter the journal knows, by key.
    pub fn params(&self) -> impl Iterator<Item = &ParamState> {
        self.st.params.values()
    }

    /// Change `id`'s intent, if it is in the live journal. An archived one is not: every change
    /// the state names (original, holder, latest, interrupted, each run's first) stays live;
    /// `kpo revert ID` reads the archive for the others ([`Journal::archived_intent`]); the guard's
    /// lookups of the change it watches fall back on the watch's own values.
    pub fn intent(&self, id: u64) -> Option<&Intent> {
        self.st.intents.get(&id)
    }

    /// The id of the latest intent in the live journal, if any.
    pub fn last_intent_id(&self) -> Option<u64> {
        self.st.intents.keys().next_back().copied()
    }

    /// The intents after intent `id` (all of them when `None`), oldest first.
    pub fn intents_after(&self, id: Option<u64>) -> impl Iterator<Item = &Intent> {
        let from = id.map_or(0, |id| id + 1);
        self.st.intents.range(from..).map(|(_, i)| i)
    }

    /// The value the kernel read back after change `id`'s write, when it was not the value asked
    /// for (journaled before the value before was put back).
    pub fn wrong_read_back(&self, id: u64) -> Option<&Value> {
        self.st.read_backs.get(&id)
    }

    /// Journals that change `id`'s write read back `value`, not what was asked, before the value
    /// before is put back.
    pub fn record_read_back(&mut self, id: u64, value: &Value) -> Result<(), JournalError> {
        self.append(Record::ReadBack {
            id,
            ts_ms: now_ms(),
            value: value.clone(),
        })
    }

    /// Why change `id` has no outcome, when its outcome's line was dropped as damaged (a
    /// [`Record::Damaged`] naming it): it was not interrupted, whatever reconciliation finds.
    pub fn lost_outcome(&self, id: u64) -> Option<&str> {
        self.st.lost_outcomes.get(&id).map(String::as_str)
    }

    pub fn outcome(&self, id: u64) -> Option<&Outcome> {
        self.st.outcomes.get(&id).map(|(_, o)| o)
    }

    /// Intents without an outcome: the process died between intent and outcome.
    pub fn incomplete(&self) -> Vec<Intent> {
        self.st.incomplete()
    }

    /// The live journal's entries (those not also in the archive), oldest first: intents and
    /// refusals with their outcomes.
    pub fn entries(&self) -> Vec<Entry> {
        self.entries_from(0).collect()
    }

    /// The highest id handed out (0 when none was): every change and refusal has one.
    pub fn last_id(&self) -> u64 {
        self.st.next_id.saturating_sub(1)
    }

    /// [`Journal::entries`] from the `from`-th on (0-based). Entries are only ever appended, so
    /// an index names the same entry for as long as the journal is open: a reader paging through
    /// them sees each once.
    pub fn entries_from(&self, from: usize) -> impl Iterator<Item = Entry> + '_ {
        self.st
            .live_listed()
            .skip(from)
            .filter_map(|r| entry_of(r, self.outcome(r.id()?)))
    }

    /// Every entry ever journaled, oldest first: the archive's, then the live journal's
    /// ([`archive::Listing`]). The whole archive is read.
    pub fn all_entries(&self) -> (Vec<Entry>, Vec<String>) {
        let mut listing = self.listing(0);
        let entries = listing.by_ref().map(|(_, e)| e).collect();
        (entries, listing.warnings())
    }

    /// Every entry from position `from` on, with its position: positions below the archive's
    /// length (at open) are byte offsets in `journal.archive.log`, the rest count the live
    /// journal's entries after it. The archive is read as the listing goes, not held.
    pub fn listing(&self, from: usize) -> archive::Listing<'_> {
        archive::Listing::new(self, from)
    }

    /// [`Journal::listing`] of every entry, owning what it reads: the live journal's entries are
    /// copied, and the archive is opened now (under the lock) and read as the listing goes, after
    /// the journal is closed. An operator command lists through it after letting go of the lock,
    /// so that a reader who takes their time (a pager) does not keep the agent from starting.
    pub fn detached_listing(&self) -> archive::Listing<'static> {
        archive::Listing::detached(self)
    }

    /// The archive's length when the journal was opened: where the live journal's entries start
    /// in [`Journal::listing`]'s positions.
    pub fn archive_len(&self) -> u64 {
        self.st.archive_len
    }

    /// Change `id`'s intent from `journal.archive.log` (read through; `None` when it is not
    /// there): history, for `kpo revert ID` of a change no longer in the live journal.
    pub fn archived_intent(&self, id: u64) -> Option<Intent> {
        archive::intent(&self.dir, id)
    }

    /// Why `kpo revert ID` finds no change under `id`, which has no intent in the journal or
    /// its archive: `kpo journal` lists refusals, with ids of their own, and changes whose
    /// intent's line was lost, from their outcome's copy; "no change #ID" of an id the operator
    /// can see listed reads as a lost journal.
    pub fn no_change_to_revert(&self, id: u64) -> JournalError {
        let refusal = |r: &Record| match r {
            Record::Refused {
                id: of,
                address,
                value,
                ..
            } if *of == id => Some(format!(
                "it is the refusal of {address} = {value}, which wrote nothing"
            )),
            _ => None,
        };
        let refused = (self.st.records.iter().find_map(refusal))
            .or_else(|| archive::find(&self.dir, id, |r| refusal(&r)));
        if let Some(what) = refused {
            return JournalError::NotAChange { id, what };
        }
        let copy = self.st.lost_intents.get(&id).cloned().or_else(|| {
            archive::find(&self.dir, id, |r| match r {
                Record::Outcome {
                    id: of,
                    intent: Some(copy),
                    ..
                } if of == id => Some(copy),
                _ => None,
            })
        });
        match copy {
            Some(c) => JournalError::IntentLost {
                id,
                replaced: format!("{} ({})", c.before, c.key),
            },
            None => JournalError::NoSuchChange(id),
        }
    }

    /// Change `id`'s outcome, from the live journal or else from `journal.archive.log` (read
    /// through): `None` while it has none.
    pub fn any_outcome(&self, id: u64) -> Option<Outcome> {
        self.outcome(id)
            .cloned()
            .or_else(|| archive::outcome(&self.dir, id))
    }
}

#[cfg(test)]
mod archive_tests;
#[cfg(test)]
mod tests;
