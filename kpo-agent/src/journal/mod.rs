//! The write-ahead journal, in the state directory (default [`DEFAULT_STATE_DIR`]): every change's
//! intent before the kernel is touched and its outcome after, the first original value of each
//! parameter at each target (kept until a reboot or the end of its network namespace), the
//! global pause, parameters yielded to people, and quarantined values. docs/journal.md explains the store and its crash safety.
//!
//! The journal is an append-only file of checksummed JSON lines ([`store`]), each appended with
//! fdatasync before the call returns. All state is a fold over the records, rebuilt on open.
//! [`Journal::open`] takes the state directory's lock ([`lock`]): one writer at a time.
pub mod archive;
pub mod lock;
pub mod store;

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use serde::{Deserialize, Serialize};

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
         makes one, so it changes and records nothing here; remount it read-write, or give \
         --state-dir a writable one (kpo status, kpo journal, kpo pending and kpo explain still \
         read it as it is)"
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
         deleted journal held is lost: kpo revert --all no longer knows those originals)"
    )]
    Deleted { path: PathBuf },
    #[error("journal has no change #{0}")]
    NoSuchChange(u64),
    #[error("journal #{id} is not a change: {what}; nothing to revert")]
    NotAChange { id: u64, what: String },
    /// `kpo revert ID` of a revert: it would write the reverted change's value again, past the
    /// policy (pause, quarantine, bounds), since a revert is decided by the deny-list alone.
    #[error(
        "journal #{id} is a revert{}: reverting it would apply {value} again without the \
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

/// Whether `name`, as `kpo resume` takes it, names the parameter journaled under `key` (at
/// `address`): its key, its address as written, or its policy name, which names every target.
pub fn names_param(name: &str, key: &str, address: Option<&ParamAddress>) -> bool {
    key == name
        || address.is_some_and(|a| a.policy_name() == name || a.to_string() == name)
        || name
            .parse::<ParamAddress>()
            .is_ok_and(|a| target_key(&a) == key)
}

/// The key a parameter's history is kept under: its address, with a namespace path replaced by
/// the namespace's inode when it resolves (so `/run/netns/web` and its inode are one target).
/// A per-namespace key in the agent's own namespace, by inode or by a path to it, is the host's
/// ([`own_namespace_as_host`]): one kernel value, so one original, one last value and one rate
/// limit, whichever way it was addressed.
pub fn target_key(address: &ParamAddress) -> String {
    if let Some(host) = own_namespace_as_host(address) {
        return host.to_string();
    }
    if let Target::Netns { netns } = &address.target {
        if let Some(inode) = netns_inode(netns) {
            return format!("{}@netns:{inode}", address.policy_name());
        }
    }
    address.to_string()
}

/// A journal key as read from disk, under the name KPO uses for a sysctl the kernel shows under
/// two names (`SYSCTL_ALIASES`): an earlier version journaled `net.nf_conntrack_max` under that
/// name, and read as it was written it would be a second parameter beside
/// `net.netfilter.nf_conntrack_max`, with KPO's own value as its original.
fn key_without_alias<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    String::deserialize(d).map(unalias)
}

/// [`key_without_alias`] for an optional key (`damaged`).
fn optional_key_without_alias<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<String>, D::Error> {
    Option::<String>::deserialize(d).map(|key| key.map(unalias))
}

/// [`key_without_alias`] for the keys of a count per key (`archived`); the counts of an alias and
/// its name add up.
fn keys_without_alias<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<BTreeMap<String, usize>, D::Error> {
    let mut counts = BTreeMap::new();
    for (key, n) in BTreeMap::<String, usize>::deserialize(d)? {
        *counts.entry(unalias(key)).or_insert(0) += n;
    }
    Ok(counts)
}

/// `key` with its sysctl name under the name KPO uses, when it is an alias.
fn unalias(key: String) -> String {
    let (name, target) = match key.split_once('@') {
        Some((name, target)) => (name, Some(target)),
        None => (key.as_str(), None),
    };
    if crate::actuate::param::sysctl_alias(name).is_none() {
        return key;
    }
    let name = crate::actuate::param::canonical_sysctl(name).unwrap_or_else(|_| name.into());
    match target {
        Some(target) => format!("{name}@{target}"),
        None => name,
    }
}

/// The inode of the network namespace a journal key names (`…@netns:INODE`), if it names one.
pub fn key_netns_inode(key: &str) -> Option<u64> {
    key.rsplit_once("@netns:")?.1.parse().ok()
}

/// The address that reaches the target of journal key `key` now, from `address`, the one it was
/// last reached by. A network namespace named by a path is kept under the inode the path named
/// ([`target_key`]); once the path no longer names that inode (`ip netns del NAME` while a process
/// keeps the namespace alive, or the name made again for another namespace), the path reaches
/// nothing, or another namespace, while the inode still names the one KPO changed: the actuator
/// finds it under /run/netns/* or /proc/*/ns/net, and the cookie check tells it from a namespace
/// that took the inode since. Any other address is returned as it is.
pub fn reach(address: &ParamAddress, key: &str) -> ParamAddress {
    let by_path = matches!(
        &address.target,
        Target::Netns {
            netns: NetnsRef::Path(_)
        }
    );
    match key_netns_inode(key) {
        Some(inode) if by_path && target_key(address) != key => ParamAddress {
            name: address.name.clone(),
            target: Target::Netns {
                netns: NetnsRef::Inode(inode),
            },
        },
        _ => address.clone(),
    }
}

/// The host's address of a per-namespace sysctl addressed to the agent's own network namespace
/// (by its inode or a path to it), as the rules and the policy take that namespace; `None` for
/// any other. A host-wide key addressed so is left as it is: the actuator refuses it
/// (docs/actuators.md), so that a change scoped to a namespace never becomes the whole host's.
pub fn own_namespace_as_host(address: &ParamAddress) -> Option<ParamAddress> {
    let Target::Netns { netns } = &address.target else {
        return None;
    };
    if !crate::actuate::sysctl::is_per_netns(&address.name) {
        return None;
    }
    let inode = netns_inode(netns)?;
    (Some(inode) == own_netns_inode()).then(|| ParamAddress {
        name: address.name.clone(),
        target: Target::Host,
    })
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
    /// The guard reverted this value; not to be applied again before `until_ms`.
    Quarantine {
        ts_ms: u64,
        #[serde(deserialize_with = "key_without_alias")]
        key: String,
        value: Value,
        until_ms: u64,
        why: String,
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
}

/// The longest a quarantine grows to by repeating (unless the policy's own is longer).
pub const QUARANTINE_REPEATED_AT_MOST: Duration = Duration::from_secs(7 * 24 * 3600);

/// How long a value the guard reverted stays quarantined: the policy's `base`, or, when the same
/// value was quarantined before and that ended less than a day ago (or has not ended), twice that
/// quarantine's length, at most [`QUARANTINE_REPEATED_AT_MOST`] (or `base` if longer). Why: the
/// advisors see the same kernel value again once a revert restores it, so a fixed length makes a
/// change that keeps regressing come back, and regress, once per `base`, forever; doubling makes
/// each return rarer. A day is how long the journal keeps an ended quarantine's record (see
/// docs/journal.md, archive), so the rule reads the same after an archive.
pub fn quarantine_length(previous: Option<&Quarantined>, base: Duration, now_ms: u64) -> Duration {
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

/// An intent or refusal with its outcome, as `kpo journal` lists them.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Entry {
    pub id: u64,
    pub ts_ms: u64,
    /// As the change named it: a namespace by path stays a path.
    pub address: ParamAddress,
    /// The journal's key of its target, as `kpo status` and the events name it (a namespace
    /// named by path as its inode, `@netns:INODE`). Absent for a refusal, whose key is not
    /// recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    pub before: Option<Value>,
    pub after: Value,
    pub source: Source,
    pub reason: String,
    /// `change`, `revert` or `refused`.
    pub kind: String,
    pub revert_of: Option<u64>,
    /// `applied`, `failed`, `reverted`, `refused`, or `incomplete`.
    pub status: String,
    pub detail: Option<String>,
    pub read_back: Option<Value>,
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

impl Folded {
    /// An empty state for boot `boot`.
    fn new(boot: &Boot) -> Self {
        Folded {
            next_id: 1,
            boot: boot.id.clone(),
            boot_started_ms: boot.started_ms,
            ..Default::default()
        }
    }

    /// Folds these records in order, then settles what predates this boot (see
    /// [`Journal::open_in_boot`]).
    fn of(records: Vec<Record>, boot: &Boot) -> Self {
        let mut st = Folded::new(boot);
        for r in records {
            st.fold(r);
        }
        for p in st.params.values_mut() {
            if p.predates(&boot.id, boot.started_ms) {
                p.settle_for_new_boot();
            }
        }
        st
    }

    /// Whether a later change or revert of the same parameter at the same target that set a
    /// value (applied, or reverted) follows intent `i`: the kernel's value is then that one's.
    pub fn superseded(&self, i: &Intent) -> bool {
        self.superseded_at(i.id, &i.key)
    }

    /// [`Folded::superseded`] for change `id` of `key`.
    fn superseded_at(&self, id: u64, key: &str) -> bool {
        self.later_changes(id, key)
            .any(|(id, later)| match self.outcomes.get(&id) {
                Some((_, Outcome::Applied { .. })) => true,
                // A revert that took; not a change put back after a wrong read-back, nor a revert
                // whose own write was put back (the kernel kept the value before them; journaled
                // so before such a revert became `failed`).
                Some((_, Outcome::Reverted { read_back, .. })) => {
                    matches!(later.kind, IntentKind::Revert { .. })
                        && read_back.as_ref() != Some(&later.before)
                }
                // Its put-back failed: its write is what the kernel has.
                Some((_, Outcome::Failed { left: Some(_), .. })) => true,
                _ => false,
            })
    }

    /// The changes of `key` after change `id`, oldest first: their intents, or the copies their
    /// outcomes carry where an intent's line was lost.
    fn later_changes<'a>(
        &'a self,
        id: u64,
        key: &'a str,
    ) -> impl Iterator<Item = (u64, IntentCopy)> + 'a {
        let kept = self
            .intents
            .range(id + 1..)
            .map(|(id, i)| (*id, IntentCopy::of(i)));
        let lost = self
            .lost_intents
            .range(id + 1..)
            .map(|(id, c)| (*id, c.clone()));
        let mut all: Vec<_> = kept.chain(lost).filter(|(_, c)| c.key == key).collect();
        all.sort_by_key(|(id, _)| *id);
        all.into_iter()
    }

    /// The change of the same parameter right after intent `i`, if any, with the NIC device it
    /// was made on where its intent's line is kept and names one.
    fn next_change(
        &self,
        i: &Intent,
    ) -> Option<(IntentCopy, Option<crate::actuate::coalesce::DeviceSeen>)> {
        self.later_changes(i.id, &i.key)
            .next()
            .map(|(id, c)| (c, self.intents.get(&id).and_then(|i| i.device)))
    }

    /// Whether intent `i` was made before the machine last rebooted ([`Journal::before_this_boot`]).
    fn before_this_boot(&self, i: &Intent) -> bool {
        match (&i.boot, &self.boot) {
            (Some(then), Some(now)) => then != now,
            (None, _) => self.boot_started_ms.is_some_and(|s| i.ts_ms < s),
            (Some(_), None) => false,
        }
    }

    /// Per key (or only `only`), the current unbroken run of `source`'s changes in this boot
    /// ([`Journal::first_of_run`]): where its first intent is in `records`, and where the record
    /// that ended what came before it is (another source's change that took effect, one of an
    /// earlier boot, a yield, a hand-back, a namespace gone), if any. One pass over the records.
    pub(crate) fn runs(&self, source: Source, only: Option<&str>) -> BTreeMap<&str, Run> {
        let took_effect = |i: &Intent| {
            matches!(
                self.outcomes.get(&i.id),
                Some((
                    _,
                    Outcome::Applied { .. } | Outcome::Failed { left: Some(_), .. }
                ))
            )
        };
        // Per key: the run's first record, and the latest record that broke a run.
        let mut at: BTreeMap<&str, (Option<usize>, Option<usize>)> = BTreeMap::new();
        for (index, record) in self.records.iter().enumerate() {
            let (key, extends) = match record {
                Record::Intent(i) if took_effect(i) => (
                    i.key.as_str(),
                    i.source == source && !self.before_this_boot(i),
                ),
                Record::Yield { key, .. }
                | Record::Manage { key, .. }
                | Record::Gone { key, .. } => (key.as_str(), false),
                _ => continue,
            };
            if only.is_some_and(|k| k != key) {
                continue;
            }
            let (first, broken) = at.entry(key).or_default();
            if extends {
                first.get_or_insert(index);
            } else {
                *first = None;
                *broken = Some(index);
            }
        }
        at.into_iter()
            .filter_map(|(key, (first, broken))| {
                Some((
                    key,
                    Run {
                        first: first?,
                        broken,
                    },
                ))
            })
            .collect()
    }

    /// Intents without an outcome: the process died between intent and outcome.
    pub fn incomplete(&self) -> Vec<Intent> {
        self.intents
            .values()
            .filter(|i| !self.outcomes.contains_key(&i.id))
            .cloned()
            .collect()
    }

    /// Whether `records[index]` is also in the archive: before the latest [`Record::Archived`],
    /// and not one of the changes it holds back.
    fn is_archived(&self, index: usize) -> bool {
        let r = &self.records[index];
        match &self.marker {
            Some((at, held)) => {
                index < *at
                    && !matches!(r, Record::Archived { .. })
                    && r.id().is_none_or(|id| !held.contains(&id))
            }
            None => false,
        }
    }

    /// The live records `kpo journal` lists from here (intents and refusals not also in the
    /// archive, and the outcomes that stand for an intent whose line was lost), in order.
    fn live_listed(&self) -> impl Iterator<Item = &Record> + '_ {
        self.records
            .iter()
            .enumerate()
            .filter(|(i, r)| {
                let lost = r.can_stand_for_its_intent()
                    && r.id().is_some_and(|id| !self.intents.contains_key(&id));
                (r.is_listed() || lost) && !self.is_archived(*i)
            })
            .map(|(_, r)| r)
    }

    fn fold(&mut self, r: Record) {
        if let Some(id) = r.id().filter(|&id| id >= MAX_ID) {
            self.warnings.push(format!(
                "a record with id {id} is set aside: KPO counts ids from 1, and one this large \
                 is not KPO's (nor would it leave an id to hand out after it)"
            ));
            return;
        }
        match &r {
            Record::Intent(i) => {
                self.next_id = self.next_id.max(i.id + 1);
                // Only this boot's start is known: for an intent of another boot, legacy intents
                // before it are left as they are.
                let started = self.boot_started_ms.filter(|_| i.boot == self.boot);
                let p = self.param(&i.key);
                if i.boot.is_some() && p.predates(&i.boot, started) {
                    p.settle_for_new_boot();
                }
                if i.boot.is_some() {
                    p.boot = i.boot.clone();
                }
                // An intent in a namespace with another cookie than the journal's: the earlier
                // one is gone, and this intent starts what is known of the new one.
                let replaced =
                    matches!((p.netns_cookie, i.netns_cookie), (Some(a), Some(b)) if a != b);
                if replaced {
                    p.settle_for_gone_namespace();
                }
                if i.netns_cookie.is_some() {
                    p.netns_cookie = i.netns_cookie;
                }
                p.last_intent_ms = Some(i.ts_ms);
                let first = p.original.is_none() || p.original_id.is_some_and(|o| o > i.id);
                let afresh =
                    !replaced && !first && self.starts_a_new_original(i.id, &IntentCopy::of(i));
                let p = self.param(&i.key);
                // The earliest intent's word on the original wins; in a new namespace, its own
                // `before` (an `original` written without the check may be the dead one's);
                // and the word of one that started a new original (none of KPO's writes had
                // taken effect since the one before was taken).
                if replaced {
                    p.original = Some(i.before.clone());
                    p.original_id = Some(i.id);
                } else if first || afresh {
                    p.original = Some(i.original.clone().unwrap_or_else(|| i.before.clone()));
                    p.original_id = Some(i.id);
                }
                p.address = Some(i.address.clone());
                self.intents.insert(i.id, i.clone());
            }
            Record::Outcome {
                id,
                ts_ms,
                outcome,
                intent,
            } => {
                // Its intent's line may have been lost to damage; its id must still not be
                // handed out again.
                self.next_id = self.next_id.max(id + 1);
                match (self.intents.get(id), intent) {
                    (Some(i), _) => {
                        let copy = IntentCopy::of(i);
                        self.fold_outcome(*id, *ts_ms, outcome, &copy);
                    }
                    (None, Some(copy)) => {
                        self.adopt_lost_intent(*id, copy);
                        self.fold_outcome(*id, *ts_ms, outcome, copy);
                    }
                    (None, None) => {
                        if !matches!(outcome, Outcome::Failed { left: None, .. }) {
                            self.keyless.push(*id);
                        }
                    }
                }
                self.outcomes.insert(*id, (*ts_ms, outcome.clone()));
            }
            Record::ReadBack { id, value, .. } => {
                self.next_id = self.next_id.max(id + 1);
                self.read_backs.insert(*id, value.clone());
            }
            Record::Refused { id, .. } => self.next_id = self.next_id.max(id + 1),
            Record::Pause { ts_ms, by } => self.paused = Some((by.clone(), *ts_ms)),
            Record::Resume { .. } => self.paused = None,
            Record::Yield {
                ts_ms,
                key,
                address,
                by,
                ..
            } => {
                let p = self.param(key);
                p.yielded = Some((by.clone(), *ts_ms));
                p.holding = None;
                p.unsettled = None;
                p.address.get_or_insert(address.clone());
            }
            Record::Manage { key, .. } => {
                // Handed back with the person's value in the kernel: KPO's last value is no
                // longer there to compare with (the next window would yield again) nor to
                // revert on exit. KPO manages it again from its next change.
                let p = self.param(key);
                p.yielded = None;
                p.last_applied = None;
                p.holding = None;
                p.unsettled = None;
            }
            Record::Gone { key, .. } => self.param(key).settle_for_gone_namespace(),
            Record::Damaged { id, key, why, .. } => {
                if let Some(id) = id.filter(|&id| id < MAX_ID) {
                    self.next_id = self.next_id.max(id + 1);
                    // An id kept from being handed out again has no intent left.
                    if self.intents.contains_key(&id) && !self.outcomes.contains_key(&id) {
                        self.lost_outcomes.insert(id, why.clone());
                    }
                }
                if let Some(key) = key {
                    self.param(key).unsettled = Some(why.clone());
                }
            }
            Record::Archived { changes, held, .. } => {
                for (key, n) in changes {
                    self.param(key).archived_changes += n;
                }
                self.marker = Some((self.records.len(), held.iter().copied().collect()));
            }
            Record::Quarantine {
                ts_ms,
                key,
                value,
                until_ms,
                ..
            } => {
                let p = self.param(key);
                p.quarantine.retain(|q| &q.value != value);
                p.quarantine.push(Quarantined {
                    value: value.clone(),
                    since_ms: *ts_ms,
                    until_ms: *until_ms,
                });
            }
        }
        self.records.push(r);
    }

    /// What the outcome of change `id` (`of`) does to its parameter's state. An outcome written
    /// after later changes of the parameter took effect (reconciled at a start after its own
    /// line was lost) counts among the changes, but the value and the holder stay the later
    /// one's: that is what the kernel has.
    fn fold_outcome(&mut self, id: u64, ts_ms: u64, outcome: &Outcome, of: &IntentCopy) {
        let late = self.superseded_at(id, &of.key);
        let p = self.param(&of.key);
        let count = |list: &mut Vec<(u64, u64)>| {
            let at = list.partition_point(|(other, _)| *other < id);
            list.insert(at, (id, ts_ms));
        };
        match outcome {
            Outcome::Applied { read_back, .. } => {
                count(&mut p.applied);
                if !late {
                    p.last_applied = Some(read_back.clone());
                    p.holding = Some(id);
                    p.unsettled = None;
                }
            }
            Outcome::Reverted { read_back, .. } => {
                if of.kind == IntentKind::Change {
                    count(&mut p.put_back);
                }
                if late {
                    return;
                }
                // A change put back after a wrong read-back restored what the kernel had: KPO's
                // only if KPO held the parameter then (else a person's later write would be
                // "overwriting KPO's value").
                let ours = matches!(of.kind, IntentKind::Revert { .. }) || p.holding.is_some();
                if ours {
                    p.last_applied = read_back.clone().or(p.last_applied.take());
                }
                // A revert that took effect; not one whose write read back wrong and was itself
                // put back, which leaves the change it undid in place (a journal written before
                // such a revert became `failed` says so).
                let put_back = read_back.as_ref() == Some(&of.before);
                if matches!(of.kind, IntentKind::Revert { .. }) && !put_back {
                    p.holding = None;
                    p.unsettled = None;
                }
            }
            Outcome::Failed { left: None, .. } => {}
            Outcome::Failed {
                left: Some(left), ..
            } => {
                // KPO's write is in the kernel, rounded: a change, it holds the parameter (a
                // revert puts the value before back); a revert, the change it undid is still
                // not gone.
                if matches!(of.kind, IntentKind::Change) {
                    count(&mut p.applied);
                }
                if late {
                    return;
                }
                p.last_applied = Some(left.clone());
                p.unsettled = None;
                if matches!(of.kind, IntentKind::Change) {
                    p.holding = Some(id);
                }
            }
        }
    }

    /// Whether the original of `key` is still only the value KPO found there: none of KPO's
    /// writes took effect since it was taken (each change since was refused, failed, or was put
    /// back after a wrong read-back; none is left without an outcome; no damaged line may have
    /// held one). A value written there since is then someone else's, and a change of KPO's
    /// from it starts a new original ([`Folded::original_for`]): the value its first write that
    /// takes effect replaces is what `kpo revert --all` puts back, not the older one. Once a
    /// write of KPO's took effect, the original stays (until a reboot or the end of its
    /// namespace).
    fn original_only_found(&self, key: &str) -> bool {
        let Some(p) = self.params.get(key) else {
            return false;
        };
        let (Some(_), Some(since)) = (&p.original, p.original_id) else {
            return false;
        };
        !p.changed_by_kpo()
            && p.holding.is_none()
            && p.unsettled.is_none()
            && !self
                .intents
                .range(since..)
                .any(|(id, i)| i.key == key && !self.outcomes.contains_key(id))
    }

    /// The original a new intent of `key` records: its own `before` for a change from another
    /// value than an original KPO only found ([`Folded::original_only_found`]; reverts never
    /// start one), else the parameter's original (its `before` when there is none).
    fn original_for(&self, key: &str, before: &Value, kind: &IntentKind) -> Value {
        match self.params.get(key).and_then(|p| p.original.as_ref()) {
            Some(original)
                if !(*kind == IntentKind::Change
                    && original != before
                    && self.original_only_found(key)) =>
            {
                original.clone()
            }
            _ => before.clone(),
        }
    }

    /// Whether intent `c` of change `id`, not the parameter's first, replaces its original with
    /// the one it records: it records another one ([`Folded::original_for`] gave it its own
    /// `before`), and the records before it agree that KPO only found the one there
    /// ([`Folded::original_only_found`]). Where they do not (a write of KPO's took effect
    /// since), the earliest original stays. An intent written after a change whose lines were
    /// both lost to damage may record the new original that change started, which the records
    /// left cannot show: its word is taken, so the original is not lost with the lines.
    fn starts_a_new_original(&self, id: u64, c: &IntentCopy) -> bool {
        let Some(p) = self.params.get(&c.key) else {
            return false;
        };
        let said = c.original.as_ref().unwrap_or(&c.before);
        p.original.as_ref().is_some_and(|o| o != said)
            && p.original_id.is_some_and(|since| since < id)
            && self.original_only_found(&c.key)
    }

    /// An outcome whose intent's line was lost: the copy it carries stands for the intent in
    /// the parameter's state (its original, if no intent of it is left or it started a new one,
    /// and its address).
    fn adopt_lost_intent(&mut self, id: u64, copy: &IntentCopy) {
        let afresh = self.starts_a_new_original(id, copy);
        self.lost_intents.insert(id, copy.clone());
        let p = self.param(&copy.key);
        if afresh || p.original.is_none() {
            p.original = Some(copy.original.clone().unwrap_or_else(|| copy.before.clone()));
            p.original_id = Some(id);
        }
        if p.address.is_none() {
            p.address = copy.key.parse().ok();
        }
    }

    /// The value guard revert `i` (at `records[at]`) took away, as the guard quarantines it, if
    /// no quarantine of it at that parameter follows the revert, nor the end of its namespace.
    fn quarantine_missing(&self, at: usize, i: &Intent) -> Option<Value> {
        let IntentKind::Revert { of: Some(of) } = &i.kind else {
            return None;
        };
        if i.source != Source::Guard {
            return None;
        }
        // The value the change asked for (or, archived, the value the revert replaced).
        let value = match (self.intents.get(of), self.lost_intents.get(of)) {
            (Some(change), _) => change.after.clone(),
            (None, Some(copy)) => copy.after.clone(),
            (None, None) => i.before.clone(),
        };
        let settled = self.records[at + 1..].iter().any(|later| match later {
            Record::Quarantine { key, value: v, .. } => key == &i.key && v == &value,
            Record::Gone { key, .. } => key == &i.key,
            _ => false,
        });
        (!settled).then_some(value)
    }

    /// The guard's reverts (done, or interrupted and not reconciled yet) with no quarantine of
    /// their value after them, that no earlier open has seen: not before the latest `archived`
    /// record. An earlier open (the agent's start, or an operator command's) journaled their
    /// quarantine, ended or not ([`Journal::restore_guard_quarantines`]); if one is missing now,
    /// a pass dropped it, a day or more after it ended, and it is not to come back (judged by a
    /// `guard.quarantine` raised since, it would).
    fn unquarantined_reverts(&self) -> std::collections::BTreeSet<u64> {
        self.records
            .iter()
            .enumerate()
            .filter(|(at, _)| !self.is_archived(*at))
            .filter_map(|(at, r)| match r {
                Record::Intent(i) => self.quarantine_missing(at, i).map(|_| i.id),
                _ => None,
            })
            .collect()
    }

    /// The [`Record::Damaged`] records of what the damaged lines just dropped still show, each
    /// with its warning, for the rewrite that drops them ([`store::load_repairing`]): the
    /// rewritten journal no longer has the lines, and the next open must not hand out their ids
    /// again, nor take a parameter whose state they may have held for settled. Judged on the
    /// journal as found (this state), not after archiving: a pass moves changes to the archive,
    /// and a change whose records it moved would look lost, or an outcome that names no
    /// parameter would be gone from [`Folded::keyless`].
    fn damage_records(&self, damaged: &[(usize, Vec<u8>)]) -> Vec<(Record, String)> {
        let seen: Vec<(usize, Option<u64>, Option<String>)> = damaged
            .iter()
            .map(|(line, bytes)| {
                let id = store::lenient_number(bytes, "id").filter(|&id| id < MAX_ID);
                (*line, id, store::lenient_text(bytes, "key"))
            })
            .collect();
        let mut out = Vec::new();
        let highest = seen
            .iter()
            .filter_map(|(line, id, _)| Some(((*id)?, *line)))
            .max();
        if let Some((id, line)) = highest.filter(|(id, _)| *id >= self.next_id) {
            let why = format!(
                "journal.log line {line}, damaged, named id {id}: it is not handed out again"
            );
            let record = Record::Damaged {
                ts_ms: now_ms(),
                id: Some(id),
                key: None,
                why: why.clone(),
            };
            out.push((record, why));
        }
        for (line, bytes) in damaged {
            let Some(i) = store::lenient_number(bytes, "id").and_then(|id| self.intents.get(&id))
            else {
                continue;
            };
            let outcome = store::lenient_text(bytes, "type").as_deref() == Some("outcome");
            if !outcome || self.outcomes.contains_key(&i.id) {
                continue;
            }
            let why = format!("its outcome's line (journal.log line {line}) was damaged");
            let warning = format!(
                "journal #{} ({}): {why}; it is reconciled from what the kernel has",
                i.id, i.key
            );
            let record = Record::Damaged {
                ts_ms: now_ms(),
                id: Some(i.id),
                key: None,
                why,
            };
            out.push((record, warning));
        }
        for (key, why) in self.unsettled_by(&seen) {
            let warning = format!("{key}: {why}");
            let record = Record::Damaged {
                ts_ms: now_ms(),
                id: None,
                key: Some(key),
                why,
            };
            out.push((record, warning));
        }
        out
    }

    /// The parameters whose state the damaged lines `seen` (line, id, key) may have held and the
    /// records that survived do not settle, with why: a change named by a damaged line none of
    /// whose records is left (an outcome with its copy of the intent settles it; an intent left
    /// settles it through reconciliation), and the parameter of each outcome that set a value
    /// without its intent or a copy of it (written before outcomes carried one): the damaged
    /// line with its id names it, or else every parameter a damaged line names, or else, none
    /// being readable, every one with a value of KPO's. Only parameters the value check would
    /// compare (a last applied value, not yielded).
    fn unsettled_by(&self, seen: &[(usize, Option<u64>, Option<String>)]) -> Vec<(String, String)> {
        let st = self;
        let mut keys: BTreeMap<String, usize> = BTreeMap::new();
        for (line, id, key) in seen {
            if let (Some(id), Some(key)) = (id, key) {
                let left = st.intents.contains_key(id) || st.lost_intents.contains_key(id);
                if !left {
                    keys.entry(key.clone()).or_insert(*line);
                }
            }
        }
        for id in &st.keyless {
            if seen.iter().any(|(_, i, k)| *i == Some(*id) && k.is_some()) {
                continue;
            }
            let named: Vec<(String, usize)> = seen
                .iter()
                .filter_map(|(line, _, key)| Some((key.clone()?, *line)))
                .collect();
            if named.is_empty() {
                let first = seen.first().map_or(0, |(line, _, _)| *line);
                keys.extend(st.params.keys().map(|k| (k.clone(), first)));
            } else {
                keys.extend(named);
            }
        }
        keys.into_iter()
            .filter(|(key, _)| {
                st.params.get(key).is_some_and(|p| {
                    p.last_applied.is_some() && p.yielded.is_none() && p.unsettled.is_none()
                })
            })
            .map(|(key, line)| {
                let why = format!(
                    "journal.log line {line}, damaged, may have held a change of KPO's here that \
                     the journal lost: a value other than KPO's last known one is not taken for \
                     someone else's change until KPO's next change of it"
                );
                (key, why)
            })
            .collect()
    }

    fn param(&mut self, key: &str) -> &mut ParamState {
        self.params
            .entry(key.to_string())
            .or_insert_with(|| ParamState {
                key: key.to_string(),
                ..Default::default()
            })
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
        let appender = store::Appender::open(dir, store::JOURNAL_FILE)?;
        Ok(Journal {
            dir: dir.to_path_buf(),
            appender: Some(appender),
            _lock: Some(lock),
            st,
            holder,
            unwritable: None,
            stopping: false,
        })
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
        })
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
            address, before, after, source, reason, kind, None, None, None,
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
        let previous = self
            .st
            .params
            .get(&key)
            .and_then(|p| p.quarantine.iter().find(|q| &q.value == value));
        let length = quarantine_length(previous, for_, now);
        self.append(Record::Quarantine {
            ts_ms: now,
            key,
            value: value.clone(),
            until_ms: now.saturating_add(length.as_millis().min(u128::from(u64::MAX)) as u64),
            why: why.to_string(),
        })?;
        Ok(length)
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
            let previous = self
                .st
                .params
                .get(&revert.key)
                .and_then(|p| p.quarantine.iter().find(|q| q.value == value));
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

    /// The policy's view of a parameter: pause, yielded, last change, changes in the last hour,
    /// quarantine of `value`. `before` is left for the caller (the kernel's value).
    pub fn context(&self, address: &ParamAddress, value: &Value, now: SystemTime) -> Context {
        let mut ctx = Context::new(now);
        ctx.paused = self.st.paused.is_some();
        if let Some(p) = self.st.params.get(&target_key(address)) {
            ctx.yielded = p.yielded.is_some();
            let writes = || p.applied.iter().chain(&p.put_back);
            ctx.last_change = writes().map(|(_, ts)| to_time(*ts)).max();
            let hour_ago = now
                .checked_sub(Duration::from_secs(3600))
                .unwrap_or(UNIX_EPOCH);
            ctx.changes_last_hour =
                writes().filter(|(_, ts)| to_time(*ts) > hour_ago).count() as u32;
            ctx.quarantined_until = p
                .quarantine
                .iter()
                .filter(|q| &q.value == value)
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
}

/// Intent or refusal `r` as `kpo journal` lists it, with the outcome of an intent (if any); or
/// an outcome whose intent's line was lost, from the copy of it the outcome keeps
/// ([`Record::can_stand_for_its_intent`]): its time is the outcome's, its reason
/// [`LOST_INTENT_REASON`].
fn entry_of(r: &Record, outcome: Option<&Outcome>) -> Option<Entry> {
    match r {
        Record::Intent(i) => {
            let (status, detail, read_back) = status_of(outcome);
            // A revert that took journals its reason as its outcome's `why`: said once, in
            // `reason`. (An outcome whose intent was lost keeps it: there it is the only copy.)
            let detail = detail.filter(|d| *d != i.reason);
            let (kind, revert_of) = kinds(&i.kind);
            Some(Entry {
                id: i.id,
                ts_ms: i.ts_ms,
                address: i.address.clone(),
                key: Some(i.key.clone()),
                before: Some(i.before.clone()),
                after: i.after.clone(),
                source: i.source,
                reason: i.reason.clone(),
                kind: kind.into(),
                revert_of,
                status,
                detail,
                read_back,
            })
        }
        Record::Outcome {
            id,
            ts_ms,
            outcome,
            intent: Some(copy),
        } => {
            let (status, detail, read_back) = status_of(Some(outcome));
            let (kind, revert_of) = kinds(&copy.kind);
            Some(Entry {
                id: *id,
                ts_ms: *ts_ms,
                address: copy.key.parse().ok()?,
                key: Some(copy.key.clone()),
                before: Some(copy.before.clone()),
                after: copy.after.clone(),
                source: copy.source?,
                reason: LOST_INTENT_REASON.into(),
                kind: kind.into(),
                revert_of,
                status,
                detail,
                read_back,
            })
        }
        Record::Refused {
            id,
            ts_ms,
            address,
            before,
            value,
            source,
            reason,
            refusal,
        } => Some(Entry {
            id: *id,
            ts_ms: *ts_ms,
            address: address.clone(),
            key: None,
            before: before.clone(),
            after: value.clone(),
            source: *source,
            reason: reason.clone(),
            kind: "refused".into(),
            revert_of: None,
            status: "refused".into(),
            detail: Some(refusal.clone()),
            read_back: None,
        }),
        _ => None,
    }
}

/// An intent's kind and the change it undoes, as listed.
fn kinds(kind: &IntentKind) -> (&'static str, Option<u64>) {
    match kind {
        IntentKind::Change => ("change", None),
        IntentKind::Revert { of } => ("revert", *of),
    }
}

/// A change's status, detail and value read back, as listed, from its outcome (if any).
fn status_of(outcome: Option<&Outcome>) -> (String, Option<String>, Option<Value>) {
    match outcome {
        None => ("incomplete".to_string(), None, None),
        Some(Outcome::Applied {
            read_back,
            reconciled,
            why,
        }) => (
            "applied".to_string(),
            why.clone()
                .or_else(|| reconciled.then(|| "found applied on restart".to_string())),
            Some(read_back.clone()),
        ),
        Some(Outcome::Failed { error, left, .. }) => {
            ("failed".to_string(), Some(error.clone()), left.clone())
        }
        Some(Outcome::Reverted { why, read_back }) => {
            ("reverted".to_string(), Some(why.clone()), read_back.clone())
        }
    }
}

#[cfg(test)]
mod archive_tests;
#[cfg(test)]
mod tests;
