//! The operator's policy: which parameters may change, how far, how often, on whose advice and in
//! which namespaces; and the [`Decision`] for each proposed change. Format and reasons in
//! docs/policy.md.
//!
//! - [`Policy::load`] reads a TOML file (default [`DEFAULT_PATH`]; a missing default file means the
//!   built-in default: every parameter observed and recommended, nothing automatic).
//! - [`deny::DenyList`] is the built-in deny-list no policy can lift.
//! - [`Policy::decide`] turns a [`Proposal`] and the journal's view of that parameter
//!   ([`Context`]) into a [`Decision`].
mod advice;
pub mod deny;
mod file;

use std::{
    fmt,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    time::{Duration, SystemTime},
};

use globset::{Glob, GlobMatcher};
use serde::{Deserialize, Serialize};

use crate::actuate::param::{NetnsRef, ParamAddress, Target, Value};

pub const DEFAULT_PATH: &str = "/etc/kpo/policy.toml";

/// What KPO may do with a parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Watch and record advice, never change.
    Observe,
    /// Advice waits for an operator's approval; an operator's own `kpo apply` is that approval.
    Recommend,
    /// Apply automatically within the bounds.
    Auto,
}

/// Who proposes a change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    Rules,
    Llm,
    Optimizer,
    Operator,
    /// The guard, reverting a change after which health regressed. Not a proposer: a policy
    /// cannot name it in `sources`, and it is not in [`Source::ALL`].
    Guard,
}

impl Source {
    /// Every proposer a policy can allow.
    pub const ALL: [Source; 4] = [
        Source::Rules,
        Source::Llm,
        Source::Optimizer,
        Source::Operator,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Rules => "rules",
            Source::Llm => "llm",
            Source::Optimizer => "optimizer",
            Source::Operator => "operator",
            Source::Guard => "guard",
        }
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An advisor proposes as itself.
impl From<crate::advise::recommendation::Source> for Source {
    fn from(s: crate::advise::recommendation::Source) -> Self {
        use crate::advise::recommendation::Source as Advisor;
        match s {
            Advisor::Rules => Source::Rules,
            Advisor::Llm => Source::Llm,
            Advisor::Optimizer => Source::Optimizer,
        }
    }
}

/// What happens to a parameter when the agent stops (SIGTERM).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum OnExit {
    #[default]
    Keep,
    Revert,
}

/// A health signal the guard watches after a change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HealthSignal {
    RequestP99,
    RunqP99,
    ListenOverflows,
    SynackRetransmits,
    SoftnetDrops,
    TcpRetransmits,
}

impl HealthSignal {
    /// The unit of its values: a latency's microseconds, or a count per second.
    pub fn unit(self) -> &'static str {
        match self {
            HealthSignal::RequestP99 | HealthSignal::RunqP99 => "µs",
            HealthSignal::ListenOverflows
            | HealthSignal::SynackRetransmits
            | HealthSignal::SoftnetDrops
            | HealthSignal::TcpRetransmits => "/s",
        }
    }

    pub const ALL: [HealthSignal; 6] = [
        HealthSignal::RequestP99,
        HealthSignal::RunqP99,
        HealthSignal::ListenOverflows,
        HealthSignal::SynackRetransmits,
        HealthSignal::SoftnetDrops,
        HealthSignal::TcpRetransmits,
    ];

    /// A latency, which the optimizer's trials move on purpose (a lower frequency or a longer
    /// coalescing delay is slower): its live loop judges latency itself, against the SLO.
    pub fn is_latency(self) -> bool {
        matches!(self, HealthSignal::RequestP99 | HealthSignal::RunqP99)
    }
}

/// The policy's name (`runq_p99`), as in `[guard] signals` and the `guard` event (the same as
/// serde's: `policy::tests::a_signal_is_shown_by_its_policy_name`).
impl fmt::Display for HealthSignal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            HealthSignal::RequestP99 => "request_p99",
            HealthSignal::RunqP99 => "runq_p99",
            HealthSignal::ListenOverflows => "listen_overflows",
            HealthSignal::SynackRetransmits => "synack_retransmits",
            HealthSignal::SoftnetDrops => "softnet_drops",
            HealthSignal::TcpRetransmits => "tcp_retransmits",
        })
    }
}

/// The global `[guard]` settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GuardSettings {
    /// Windows watched after each change.
    pub windows: u32,
    /// Signals whose regression reverts a change.
    pub signals: Vec<HealthSignal>,
    /// At most this many changes per parameter and target per hour (advisors; see [`Policy::decide`]).
    pub max_changes_per_hour: u32,
    /// How long a reverted value stays quarantined.
    pub quarantine: Duration,
}

impl Default for GuardSettings {
    fn default() -> Self {
        Self {
            windows: 3,
            signals: HealthSignal::ALL.to_vec(),
            max_changes_per_hour: 6,
            quarantine: Duration::from_secs(3600),
        }
    }
}

/// The global `[approvals]` settings: how long a pending approval waits, when it is dropped because
/// the situation cleared, and where it is announced (docs/approvals.md).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ApprovalSettings {
    /// A pending approval not approved, rejected or refreshed within this long expires.
    pub expire_after: Duration,
    /// A pending approval its advisor has not recommended again for this many consecutive windows
    /// is cleared: the situation that caused it is over.
    pub clear_after_windows: u32,
    /// An `http://` or `https://` URL that receives a JSON POST for each approval (optional).
    pub webhook: Option<String>,
    /// The user (a name or a uid, as written), besides root and the agent's own, whose listener
    /// on this host may be posted to over plain `http://` (`webhook_user`;
    /// [`crate::endpoint_owner`]). Looked up at each try, not here: a policy that names a user
    /// not known yet (a service's dynamic user, a directory not up at boot) must not keep the
    /// agent or an offline `kpo revert --all` from starting (s59 review1 R1-1).
    pub webhook_user: Option<String>,
}

impl Default for ApprovalSettings {
    fn default() -> Self {
        Self {
            expire_after: Duration::from_secs(3600),
            clear_after_windows: 30,
            webhook: None,
            webhook_user: None,
        }
    }
}

/// The least integer a kernel parameter holds (a signed 64-bit one's least)...
pub const KERNEL_INT_MIN: i128 = i64::MIN as i128;
/// ...and the largest (an unsigned 64-bit one's largest: `kernel.shmmax`'s default is near it).
pub const KERNEL_INT_MAX: i128 = u64::MAX as i128;

/// An integer of a policy written as text (`max = "18446744073692774399"`: TOML's integers are
/// signed 64-bit, a kernel's may be unsigned), or why it is none.
pub fn parse_kernel_int(text: &str) -> Result<i128, String> {
    let v: i128 = Some(text)
        .filter(|t| is_plain_decimal(t))
        .and_then(|t| t.parse().ok())
        .ok_or_else(|| {
            format!(
                "{text:?} is not an integer: write one as a number, or in quotes as plain decimal \
             digits (\"18446744073692774399\") when it is beyond TOML's signed 64 bits"
            )
        })?;
    if !(KERNEL_INT_MIN..=KERNEL_INT_MAX).contains(&v) {
        return Err(format!(
            "{text} is outside the integers a kernel parameter holds ({KERNEL_INT_MIN} to \
             {KERNEL_INT_MAX})"
        ));
    }
    Ok(v)
}

/// Digits, with a `-` before them or not: what the error above asks for (Rust's parse would take
/// `"+5"` too, and `"+5"` is no value the kernel prints).
pub(crate) fn is_plain_decimal(text: &str) -> bool {
    let digits = text.strip_prefix('-').unwrap_or(text);
    !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
}

/// A lower or upper bound: one integer for every element, or one per element. `i128`, as the
/// kernel's values ([`Value`]): a bound may be any signed or unsigned 64-bit integer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Bound {
    All(i128),
    Each(Vec<i128>),
}

impl Bound {
    fn at(&self, i: usize) -> Option<i128> {
        match self {
            Bound::All(v) => Some(*v),
            Bound::Each(v) => v.get(i).copied(),
        }
    }
    fn len(&self) -> Option<usize> {
        match self {
            Bound::All(_) => None,
            Bound::Each(v) => Some(v.len()),
        }
    }
    /// Why `self` (min) and `max` admit no value, if they do not.
    fn impossible_with(&self, max: &Bound) -> Option<String> {
        if let (Some(a), Some(b)) = (self.len(), max.len()) {
            if a != b {
                return Some(format!("min has {a} elements and max has {b}"));
            }
        }
        let n = self.len().or(max.len()).unwrap_or(1);
        (0..n).find_map(|i| match (self.at(i), max.at(i)) {
            (Some(lo), Some(hi)) if lo > hi => Some(if n == 1 {
                format!("min {lo} is above max {hi}")
            } else {
                format!("element {i}: min {lo} is above max {hi}")
            }),
            _ => None,
        })
    }
}

impl fmt::Display for Bound {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Bound::All(v) => write!(f, "{v}"),
            Bound::Each(v) => write!(f, "{v:?}"),
        }
    }
}

/// The largest change allowed in one step, per element.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MaxStep {
    Absolute(i128),
    /// A percentage of the value before (`"50%"`).
    Relative(Percent),
}

impl MaxStep {
    fn parse(text: &str) -> Result<MaxStep, String> {
        let t = text.trim();
        if let Some(p) = t.strip_suffix('%') {
            let p = p.strip_prefix('+').unwrap_or(p);
            return Percent::parse(p).map(MaxStep::Relative).ok_or_else(|| {
                format!(
                    "{text:?}: a relative step is a positive percentage in plain digits, like \
                     \"50%\" or \"33.3%\" (no exponent, at most {MAX_PERCENT_DECIMALS} decimals)"
                )
            });
        }
        match parse_kernel_int(t) {
            Ok(v) if v > 0 => Ok(MaxStep::Absolute(v)),
            Err(why) if t.parse::<i128>().is_ok() => Err(why),
            _ => Err(format!(
                "{text:?}: a step is a positive integer or a percentage like \"50%\""
            )),
        }
    }
    /// The largest allowed change from `before`.
    pub fn limit(self, before: i128) -> i128 {
        match self {
            MaxStep::Absolute(v) => v,
            MaxStep::Relative(p) => p.of(before),
        }
    }
}

impl fmt::Display for MaxStep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MaxStep::Absolute(v) => write!(f, "{v}"),
            MaxStep::Relative(p) => write!(f, "{p}"),
        }
    }
}

/// Decimals a percentage may have (`"33.333333333%"`).
pub const MAX_PERCENT_DECIMALS: u32 = 9;

/// A percentage as the policy writes it (`"33.3%"`), kept as the decimal it is. The advisors cap
/// their steps with it and the policy checks them with it, and both must get the same number to
/// the unit: in floating point 33.3% of 1000 is 332.99999999999994 one way and 333 another, and
/// a step one side allows the other would refuse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Percent {
    /// The digits without the decimal point (`333`)...
    digits: u64,
    /// ...and how many of them come after it (`1`).
    decimals: u32,
}

impl Percent {
    pub const fn whole(percent: u64) -> Self {
        Self {
            digits: percent,
            decimals: 0,
        }
    }

    /// A positive decimal number without the `%` (`"33.3"`), at most [`MAX_PERCENT_DECIMALS`]
    /// decimals; `None` for anything else.
    pub fn parse(text: &str) -> Option<Self> {
        let t = text.trim();
        let (int, frac) = t.split_once('.').unwrap_or((t, ""));
        if (int.is_empty() && frac.is_empty())
            || !int.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit())
        {
            return None;
        }
        // `50.0%` is `50%`: one number, one way of showing it.
        let frac = frac.trim_end_matches('0');
        let decimals = u32::try_from(frac.len())
            .ok()
            .filter(|d| *d <= MAX_PERCENT_DECIMALS)?;
        let mut digits: u64 = 0;
        for b in int.bytes().chain(frac.bytes()) {
            digits = digits.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
        }
        (digits > 0).then_some(Self { digits, decimals })
    }

    /// `⌊|before| × this / 100⌋`, exactly (at most `i64::MAX`): the one computation of a relative
    /// step, for the advisors and the policy alike.
    pub fn of(self, before: i128) -> i128 {
        let scale = 100 * 10u128.pow(self.decimals);
        let v = before
            .unsigned_abs()
            .saturating_mul(u128::from(self.digits))
            / scale;
        i128::try_from(v).unwrap_or(i128::MAX)
    }
}

impl fmt::Display for Percent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scale = 10u64.pow(self.decimals);
        let (int, frac) = (self.digits / scale, self.digits % scale);
        if self.decimals == 0 {
            write!(f, "{int}%")
        } else {
            write!(f, "{int}.{frac:0w$}%", w = self.decimals as usize)
        }
    }
}

impl Serialize for Percent {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Percent {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.strip_suffix('%')
            .and_then(Percent::parse)
            .ok_or_else(|| serde::de::Error::custom(format!("{text:?} is not a percentage")))
    }
}

/// One namespace a rule covers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum NamespaceSel {
    /// The agent's own network namespace (`"host"`).
    Host,
    Inode(u64),
    Path(PathBuf),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
pub enum Namespaces {
    #[default]
    All,
    List(Vec<NamespaceSel>),
}

/// The inode of a network namespace reference: the number itself, or the inode of the namespace
/// file ([`netns_path_inode`]).
pub fn netns_inode(r: &NetnsRef) -> Option<u64> {
    match r {
        NetnsRef::Inode(i) => Some(*i),
        NetnsRef::Path(p) => netns_path_inode(p).ok(),
    }
}

/// The inode of the network namespace `path` names, or why it names none (to follow the path).
/// Only a file on nsfs, as /proc/self/ns/net is, names one: any other file's inode number can
/// equal a namespace's, and `namespaces = ["/some/file"]` would then cover that namespace.
pub fn netns_path_inode(path: &Path) -> Result<u64, String> {
    use std::os::unix::fs::FileTypeExt;
    let meta = std::fs::metadata(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => "no such file now".to_string(),
        _ => format!("cannot be read now: {e}"),
    })?;
    let nsfs = std::fs::metadata("/proc/self/ns/net").map_err(|e| {
        format!("cannot be told a network namespace: /proc/self/ns/net cannot be read: {e}")
    })?;
    if meta.dev() == nsfs.dev() {
        // Every kind of namespace is on nsfs, and inode numbers are shared among the kinds.
        return match crate::actuate::sysctl::other_namespace_kind(path) {
            Some(kind) => Err(format!("not a network namespace: {kind}")),
            None => Ok(meta.ino()),
        };
    }
    #[cfg(test)]
    if STAND_IN_NETNS.with(|s| s.borrow().iter().any(|p| p == path)) {
        return Ok(meta.ino());
    }
    let kind = meta.file_type();
    let what = if kind.is_file() {
        "a regular file"
    } else if kind.is_dir() {
        "a directory"
    } else if kind.is_fifo() {
        "a FIFO"
    } else if kind.is_socket() {
        "a socket"
    } else {
        "a device"
    };
    Err(format!(
        "not a network namespace: {what}, where a namespace is a file on nsfs (/run/netns/NAME, \
         /proc/PID/ns/net)"
    ))
}

#[cfg(test)]
thread_local! {
    static STAND_IN_NETNS: std::cell::RefCell<Vec<PathBuf>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Test-only: in this thread, `path` (a file of the test's) stands for a network namespace's
/// name, its inode for the namespace's, as the fake kernels stand for the kernel; a real
/// namespace needs root.
#[cfg(test)]
pub(crate) fn stand_in_netns(path: &Path) {
    STAND_IN_NETNS.with(|s| s.borrow_mut().push(path.to_path_buf()));
}

/// The inode of the agent's own network namespace, whose keys are addressed as the host's.
pub fn own_netns_inode() -> Option<u64> {
    std::fs::metadata("/proc/self/ns/net").ok().map(|m| m.ino())
}

impl Namespaces {
    /// Whether a target is covered. NIC and cpufreq targets are not in a namespace and always are.
    pub fn covers(&self, target: &Target) -> bool {
        self.covers_in(target, own_netns_inode)
    }

    /// As [`Namespaces::covers`], with `host` giving the inode of the agent's own namespace (read
    /// only when the list needs it). The host's keys live in that namespace: `"host"`, its inode
    /// and a path to it are three names for one namespace, and each covers what the others do.
    fn covers_in(&self, target: &Target, host: impl Fn() -> Option<u64>) -> bool {
        let list = match self {
            Namespaces::All => return true,
            Namespaces::List(list) => list,
        };
        let inode_of = |sel: &NamespaceSel| match sel {
            NamespaceSel::Host => host(),
            NamespaceSel::Inode(i) => Some(*i),
            NamespaceSel::Path(p) => netns_inode(&NetnsRef::Path(p.clone())),
        };
        match target {
            Target::Host => {
                list.contains(&NamespaceSel::Host)
                    || host().is_some_and(|h| list.iter().any(|sel| inode_of(sel) == Some(h)))
            }
            Target::Netns { netns } => {
                let want = netns_inode(netns);
                list.iter().any(|sel| match (sel, netns) {
                    (NamespaceSel::Path(p), NetnsRef::Path(q)) if p == q => true,
                    _ => want.is_some() && inode_of(sel) == want,
                })
            }
            Target::Nic { .. } | Target::Cpufreq { .. } => true,
        }
    }
}

/// The policy for the parameters one `[params."NAME"]` entry (or `[defaults]`) covers.
#[derive(Debug, Clone)]
pub struct ParamRule {
    /// The name or glob as written (slashed sysctl names made dotted).
    pub name: String,
    /// Line in the policy file (0 for built-in).
    pub line: usize,
    matcher: GlobMatcher,
    literal: bool,
    pub mode: Mode,
    pub min: Option<Bound>,
    pub max: Option<Bound>,
    pub max_step: Option<MaxStep>,
    pub cooldown: Duration,
    pub sources: Vec<Source>,
    pub on_exit: OnExit,
    pub namespaces: Namespaces,
    /// Whether `namespaces` was written, in the entry or in the `[defaults]` it inherits: an
    /// `auto` entry covering every namespace by the default alone is warned of.
    pub namespaces_written: bool,
    /// Coalescing: a change may turn the NIC's adaptive moderation off.
    pub allow_adaptive_off: bool,
    /// The signals the guard judges this parameter's changes by, instead of `[guard] signals`
    /// (`None`): an operator who knows a change cannot move a host-wide signal keeps that
    /// signal's noise from reverting it.
    pub guard_signals: Option<Vec<HealthSignal>>,
    /// The values the optimizer tries, in increasing order, within `min` and `max`, instead of
    /// `[optimizer] levels` spread over them (`None`).
    pub optimizer_levels: Option<Vec<i128>>,
}

impl ParamRule {
    /// Whether the entry names one parameter exactly rather than a glob.
    pub fn is_exact(&self) -> bool {
        self.literal
    }

    /// Whether the entry covers the parameter `name` (its policy name), by name or glob.
    pub fn covers(&self, name: &str) -> bool {
        if self.literal {
            self.name == name
        } else {
            self.matcher.is_match(name)
        }
    }

    /// Observe and recommend, any source, any namespace, no bounds, keep on exit.
    pub fn builtin_default() -> Self {
        Self {
            name: "*".into(),
            line: 0,
            matcher: Glob::new("*").expect("glob").compile_matcher(),
            literal: false,
            mode: Mode::Recommend,
            min: None,
            max: None,
            max_step: None,
            cooldown: Duration::ZERO,
            sources: Source::ALL.to_vec(),
            on_exit: OnExit::Keep,
            namespaces: Namespaces::All,
            namespaces_written: false,
            allow_adaptive_off: false,
            guard_signals: None,
            optimizer_levels: None,
        }
    }

    /// The mode for proposals from `source`. The LLM's advice is applied without a person only
    /// where the entry bounds the value (`min` and `max`): a model's number is not checked by any
    /// rule of ours, so `auto` without bounds would let any value it names be written. There its
    /// advice waits for approval instead.
    pub fn mode_for(&self, source: Source) -> Mode {
        match (self.mode, source) {
            (Mode::Auto, Source::Llm) if self.min.is_none() || self.max.is_none() => {
                Mode::Recommend
            }
            (mode, _) => mode,
        }
    }
}

/// Where the policy came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PolicyOrigin {
    BuiltIn,
    File(PathBuf),
}

impl fmt::Display for PolicyOrigin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PolicyOrigin::BuiltIn => f.write_str("built-in default (observe and recommend)"),
            PolicyOrigin::File(p) => write!(f, "{}", p.display()),
        }
    }
}

pub struct Policy {
    pub origin: PolicyOrigin,
    pub guard: GuardSettings,
    pub approvals: ApprovalSettings,
    /// `[defaults]`, for parameters no entry names.
    pub defaults: ParamRule,
    /// `[params.*]` in file order.
    pub params: Vec<ParamRule>,
    deny: deny::DenyList,
    /// The file's text as [`Policy::load`] read it: the agent reads its policy at start and on
    /// SIGHUP, and an operator's request is refused while the file says something else
    /// ([`Policy::changed_on_disk`]).
    loaded_text: Option<String>,
    /// The default file that was not there when the built-in default was taken instead: one
    /// created since is an edit like any other ([`Policy::changed_on_disk`]).
    missing_file: Option<PathBuf>,
    /// `kpo run --recommend-only` lowered every entry in mode auto ([`Policy::force_recommend`]).
    forced_recommend: bool,
}

impl fmt::Debug for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Policy")
            .field("origin", &self.origin)
            .field("guard", &self.guard)
            .field("approvals", &self.approvals)
            .field("defaults", &self.defaults)
            .field("params", &self.params)
            .finish()
    }
}

/// What kind of mistake a policy file has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicyErrorClass {
    Syntax,
    UnknownKey,
    BadType,
    BadValue,
    ImpossibleBounds,
    BadGlob,
    DenyListed,
}

#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("{file}: cannot read the policy: {source}")]
    Read {
        file: String,
        source: std::io::Error,
    },
    #[error("{file}:{line}: {key}: {message}")]
    Invalid {
        file: String,
        line: usize,
        key: String,
        class: PolicyErrorClass,
        message: String,
    },
}

impl Default for Policy {
    fn default() -> Self {
        Self::builtin()
    }
}

/// Largest policy file read, as for the agent's configuration (a policy is a few KB; a path such as
/// `/dev/zero` would otherwise be read until memory runs out).
pub const MAX_POLICY_BYTES: u64 = 1024 * 1024;

/// Every read of the policy file goes through here (start, every command, SIGHUP, and the check
/// at each window and operator request of whether it changed), so a FIFO put in its place is
/// refused by what it is ([`crate::config::not_a_regular_file`]) before it can hold any of them
/// in open() or read() until something writes to it (the running agent would stop answering,
/// SIGTERM included). Opened non-blocking too, for a FIFO swapped in after the check.
fn read_policy_text(path: &Path) -> std::io::Result<String> {
    use std::{
        io::Read,
        os::unix::fs::{FileTypeExt, OpenOptionsExt},
    };
    if let Some(e) = crate::config::not_a_regular_file(path) {
        return Err(e);
    }
    // As root only: the agent runs as root, and a file a user checks as themselves (a
    // checkout, `kpo check` under umask 002) is theirs to write.
    let me = nix::unistd::geteuid().as_raw();
    let untrusted = (me == 0)
        .then(|| crate::trusted_path::others_may_write_file(path, me, "the policy"))
        .flatten();
    if let Some(why) = untrusted {
        return Err(std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            why,
        ));
    }
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)?;
    if file.metadata()?.file_type().is_fifo() {
        return Err(crate::config::not_a_regular_file(path).unwrap_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::InvalidInput, "it is not a regular file")
        }));
    }
    let mut bytes = Vec::new();
    file.take(MAX_POLICY_BYTES + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_POLICY_BYTES {
        return Err(std::io::Error::other(format!(
            "larger than {MAX_POLICY_BYTES} bytes; a policy is a few KB"
        )));
    }
    String::from_utf8(bytes).map_err(|e| crate::kernel_file::not_utf8(&e))
}

/// `text` of the policy file `path`, unless it holds nothing but blank lines and comments and is
/// a regular file: loaded, it would put the built-in default in force (recommend everywhere, an
/// operator's `kpo apply` of any key in any namespace), and such a file is more often cut short
/// (a failed template render, a shell `>` slip) than meant (s57 story BD-1: a truncated file and
/// a SIGHUP lifted a host-protecting policy without a word). `/dev/null` asks for the default.
fn refuse_if_empty(path: &Path, text: String) -> std::io::Result<String> {
    // A byte-order mark alone is no content either (s57 review2 R2-8).
    let empty = (text.trim_start_matches('\u{feff}').lines())
        .all(|l| file::without_comment(l).trim().is_empty());
    if empty && std::fs::metadata(path).is_ok_and(|m| m.is_file()) {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "refusing it: it holds nothing but blank lines and comments, which would put the \
             built-in default in force (recommend in every namespace, and an operator's kpo \
             apply of any key), and is more often a file cut short than meant; write at least \
             its [defaults] table, or give --policy /dev/null for the built-in default",
        ));
    }
    Ok(text)
}

impl Policy {
    /// The built-in default: every parameter observed and recommended, nothing automatic.
    pub fn builtin() -> Self {
        Self {
            origin: PolicyOrigin::BuiltIn,
            guard: GuardSettings::default(),
            approvals: ApprovalSettings::default(),
            defaults: ParamRule::builtin_default(),
            params: Vec::new(),
            deny: deny::DenyList::new(),
            loaded_text: None,
            missing_file: None,
            forced_recommend: false,
        }
    }

    /// Loads `path`, or [`DEFAULT_PATH`] when `None`; a missing default file is the built-in
    /// default, a missing file named explicitly is an error.
    pub fn load(path: Option<&Path>) -> Result<Self, PolicyError> {
        match path {
            Some(p) => Self::load_from(p, true),
            None => Self::load_from(Path::new(DEFAULT_PATH), false),
        }
    }

    /// Loads `path`; a missing file is the built-in default unless it was named (`explicit`).
    pub fn load_from(path: &Path, explicit: bool) -> Result<Self, PolicyError> {
        match read_policy_text(path).and_then(|text| refuse_if_empty(path, text)) {
            Ok(text) => {
                let mut policy = Self::parse(&text, &path.display().to_string())?;
                policy.loaded_text = Some(text);
                Ok(policy)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => Ok(Self {
                missing_file: Some(path.to_path_buf()),
                ..Self::builtin()
            }),
            Err(source) => Err(PolicyError::Read {
                file: path.display().to_string(),
                source,
            }),
        }
    }

    /// The default path where no file was found, when this is the built-in default for that.
    pub fn missing_file(&self) -> Option<&Path> {
        self.missing_file.as_deref()
    }

    /// What the agent logs at its start about the policy in force: the file, or the built-in
    /// default with the default file it did not find (an operator who meant to write one learns
    /// it from the log, not from the first change that does not happen).
    pub fn in_force(&self) -> String {
        match &self.missing_file {
            Some(path) => format!(
                "policy: no file at {}: the built-in default (observe and recommend) is in \
                 force; write one and send the agent SIGHUP ({}) to load it",
                path.display(),
                sighup_command()
            ),
            None => format!("policy: {}", self.origin),
        }
    }

    /// Why the policy file no longer holds what was loaded from it (edited, removed,
    /// unreadable), or `None` (unchanged, or not loaded from a file). A policy read at start
    /// decides an operator's `kpo apply` or `kpo approve` only while the file still says it:
    /// otherwise the operator would be deciding under a file the agent does not follow.
    pub fn changed_on_disk(&self) -> Option<String> {
        if let Some(path) = &self.missing_file {
            // Anything there now, even an unreadable file, is not the built-in default the agent
            // decides under. Followed through a symlink: a dangling one reads as no file, as it
            // did at the load, and a reload would load the built-in default again.
            return std::fs::metadata(path).is_ok().then(|| {
                format!(
                    "the policy file {} was created since the agent started on the built-in \
                     default: send the agent SIGHUP ({}) to load it, then ask again",
                    path.display(),
                    sighup_command()
                )
            });
        }
        let (PolicyOrigin::File(path), Some(loaded)) = (&self.origin, &self.loaded_text) else {
            return None;
        };
        let what = match read_policy_text(path) {
            Ok(now) if now == *loaded => return None,
            // As a reload would load it: an emptied file is refused too (s60 story BQ-1: the
            // operator was sent to SIGHUP, which refused it, and back).
            Ok(now) => {
                match (refuse_if_empty(path, now).map_err(|e| e.to_string())).and_then(|now| {
                    (Self::parse(&now, &path.display().to_string())).map_err(|e| e.to_string())
                }) {
                    Ok(_) => "was edited".to_string(),
                    // SIGHUP alone would be refused too (the reload keeps the policy in force): the
                    // operator who sent it already would otherwise be told to send it again.
                    Err(e) => {
                        return Some(format!(
                        "the policy file {} was edited since the agent loaded it, and does not \
                         load as it is now ({e}): fix it (kpo check --policy {}), then send the \
                         agent SIGHUP ({}) and ask again",
                        path.display(),
                        path.display(),
                        sighup_command()
                    ))
                    }
                }
            }
            // SIGHUP cannot load what cannot be read: a reload keeps the policy in force, or, at
            // the default path with no file, loads the built-in default instead.
            Err(e) => {
                return Some(format!(
                    "the policy file {} cannot be read now ({e}), though the agent loaded it: \
                     put it back (the agent still decides under what it loaded), then ask again",
                    path.display()
                ))
            }
        };
        Some(format!(
            "the policy file {} {what} since the agent loaded it: send the agent SIGHUP \
             ({}) to load it, then ask again",
            path.display(),
            sighup_command()
        ))
    }

    /// Entries whose `namespaces` list one namespace twice (`["host", "host"]`): harmless, but
    /// more likely a typo for another namespace, which the entry then does not cover and which
    /// an operator would find only at the first refusal. For `kpo check` and `kpo run`'s warnings.
    pub fn repeated_namespaces(&self) -> Vec<String> {
        let file = self.origin.to_string();
        let entries = std::iter::once(("[defaults]".to_string(), &self.defaults)).chain(
            self.params
                .iter()
                .map(|r| (format!("params.\"{}\"", r.name), r)),
        );
        let mut found = Vec::new();
        for (entry, rule) in entries {
            let Namespaces::List(list) = &rule.namespaces else {
                continue;
            };
            for (i, sel) in list.iter().enumerate() {
                // Once per namespace, as first written (`/run/netns/a` and `/run/netns/a/` are
                // one path).
                let times = list.iter().filter(|s| *s == sel).count();
                if times < 2 || list[..i].contains(sel) {
                    continue;
                }
                let named = match sel {
                    NamespaceSel::Host => "\"host\"".to_string(),
                    NamespaceSel::Inode(n) => n.to_string(),
                    NamespaceSel::Path(p) => p.display().to_string(),
                };
                let times = match times {
                    2 => "twice".to_string(),
                    n => format!("{n} times"),
                };
                found.push(format!(
                    "{file}:{}: {entry}: namespaces names {named} {times}: a typo for another \
                     namespace? The entry covers only the namespaces it names",
                    rule.line
                ));
            }
        }
        found
    }

    /// Whether `other` was loaded from the same file text (or both are the built-in default): a
    /// reload that finds this has nothing to do.
    pub fn same_source(&self, other: &Policy) -> bool {
        self.loaded_text == other.loaded_text && self.origin.to_string() == other.origin.to_string()
    }

    /// Parses policy text; `file` names it in errors.
    pub fn parse(text: &str, file: &str) -> Result<Self, PolicyError> {
        file::parse(text, file)
    }

    /// `kpo run --recommend-only`: every parameter in mode auto is treated as recommend, so nothing
    /// is applied without an operator's approval. Observe stays observe: this never loosens.
    pub fn force_recommend(&mut self) {
        self.forced_recommend = true;
        for rule in std::iter::once(&mut self.defaults).chain(self.params.iter_mut()) {
            if rule.mode == Mode::Auto {
                rule.mode = Mode::Recommend;
            }
        }
    }

    /// Whether `kpo run --recommend-only` lowered the entries in mode auto to recommend.
    pub fn forced_recommend(&self) -> bool {
        self.forced_recommend
    }

    pub fn deny_list(&self) -> &deny::DenyList {
        &self.deny
    }

    /// The rule for a parameter: an entry naming it exactly, else the matching glob with the
    /// longest pattern (the earliest in the file on a tie), else `[defaults]`.
    pub fn rule_for(&self, address: &ParamAddress) -> &ParamRule {
        let name = address.policy_name();
        if let Some(r) = self.params.iter().find(|r| r.literal && r.name == name) {
            return r;
        }
        self.params
            .iter()
            .filter(|r| !r.literal && r.matcher.is_match(&name))
            .fold(None::<&ParamRule>, |best, r| match best {
                Some(b) if b.name.len() >= r.name.len() => Some(b),
                _ => Some(r),
            })
            .unwrap_or(&self.defaults)
    }

    /// The signals the guard judges a change of `address` by `source` by, where they are not
    /// simply `[guard] signals` (`None`): the entry's `guard_signals`, and for the optimizer's
    /// trials either list less its latencies. A trial trades latency for energy on purpose, within
    /// the SLO, and the live loop reverts one that breaks the SLO at once; judged by a latency's
    /// rise, the guard would revert, and quarantine, the very levels the search is there to try.
    pub fn guard_signals_for(
        &self,
        address: &ParamAddress,
        source: Source,
    ) -> Option<Vec<HealthSignal>> {
        let own = self.rule_for(address).guard_signals.as_deref();
        if source != Source::Optimizer {
            return own.map(<[HealthSignal]>::to_vec);
        }
        Some(
            own.unwrap_or(&self.guard.signals)
                .iter()
                .copied()
                .filter(|s| !s.is_latency())
                .collect(),
        )
    }

    /// Which entry `rule` is and the namespaces it covers, for a refusal: a path in `namespaces`
    /// that names nothing now (a typo, a namespace not made yet) is said to.
    fn covered_by(&self, rule: &ParamRule) -> String {
        let entry = if std::ptr::eq(rule, &self.defaults) {
            "[defaults]".to_string()
        } else {
            format!("params.\"{}\" (line {})", rule.name, rule.line)
        };
        let list = match &rule.namespaces {
            Namespaces::All => "all".to_string(),
            Namespaces::List(list) => list
                .iter()
                .map(|sel| match sel {
                    NamespaceSel::Host => "host".to_string(),
                    NamespaceSel::Inode(i) => i.to_string(),
                    NamespaceSel::Path(p) => match netns_path_inode(p) {
                        Ok(_) => p.display().to_string(),
                        Err(why) => format!("{} ({why})", p.display()),
                    },
                })
                .collect::<Vec<_>>()
                .join(", "),
        };
        format!("{entry} covers only {list}")
    }

    /// The decision for a proposed change, given what the journal knows of the parameter.
    ///
    /// Order: deny-list, the order of a TCP memory triple, sources, namespaces, yielded, paused, quarantine, bounds, step, then for
    /// advisors (not an operator) cooldown and the hourly limit, unless the proposal waits for a
    /// person (mode recommend, or held by its advisor, and not yet approved), then the mode. A revert to an
    /// original or earlier value is decided by [`Policy::decide_revert`] instead.
    pub fn decide(&self, p: &Proposal, ctx: &Context) -> Decision {
        let name = p.address.policy_name();
        if let Some(d) = self.deny.denies(&name) {
            return Decision::Refused(Refusal::DenyListed {
                pattern: d.pattern.to_string(),
                why: d.why.to_string(),
            });
        }
        // Bounds hold each element on its own; a TCP memory triple must also be in order.
        if let Some(i) = crate::actuate::sysctl::decreasing_element(&p.address, &p.value) {
            return Decision::Refused(Refusal::Invalid {
                why: format!(
                    "{} = {} is out of order: element {i} is below element {}, and it needs \
                     min <= default <= max",
                    p.address.name,
                    p.value,
                    i - 1
                ),
            });
        }
        let rule = self.rule_for(&p.address);
        if !rule.sources.contains(&p.source) {
            return Decision::Refused(Refusal::SourceNotAllowed {
                proposer: p.source,
                allowed: rule.sources.clone(),
            });
        }
        if !rule.namespaces.covers(&p.address.target) {
            return Decision::Refused(Refusal::NamespaceNotCovered {
                target: p.address.to_string(),
                covered: self.covered_by(rule),
            });
        }
        if ctx.yielded {
            return Decision::Refused(Refusal::Yielded);
        }
        if ctx.paused {
            return Decision::Refused(Refusal::Paused);
        }
        if let Some(until) = ctx.quarantined_until {
            if until > ctx.now {
                return Decision::Refused(Refusal::Quarantined {
                    until: crate::journal::format_ms(
                        until
                            .duration_since(std::time::UNIX_EPOCH)
                            .map_or(0, |d| d.as_millis() as u64),
                    ),
                });
            }
        }
        if let Some(refusal) = check_bounds(rule, &p.value) {
            return Decision::Refused(refusal);
        }
        if let (Some(step), Some(before)) = (rule.max_step, &ctx.before) {
            if let (Some(b), Some(a)) = (before.ints(), p.value.ints()) {
                if a.len() == b.len() {
                    for (i, (x, y)) in b.iter().zip(&a).enumerate() {
                        let limit = step.limit(*x);
                        // Not `(y - x).abs()`: from i64::MAX to -1 that overflows.
                        if y.abs_diff(*x) > limit.unsigned_abs() {
                            return Decision::Refused(Refusal::StepTooLarge {
                                element: (a.len() > 1).then_some(i),
                                from: *x,
                                to: *y,
                                max_step: step.to_string(),
                                limit,
                            });
                        }
                    }
                }
            }
        }
        // Advice that waits for a person writes nothing until approved: the cooldown and the
        // hourly limit bound what is written, so they are asked when it is approved, and the
        // advice is shown meanwhile rather than refused unseen (s49 storyS S-2: in mode
        // recommend, approvals of the rules' advice used up the hourly limit, and the rules' next
        // advice was refused as rate-limited, in no `kpo pending` and no webhook).
        let waits = !ctx.approved && (ctx.held || rule.mode_for(p.source) == Mode::Recommend);
        if p.source != Source::Operator && !waits {
            // One from before the clock stepped back is over ([`crate::clock`]).
            let cooldown = rule.cooldown.as_millis() as u64;
            let now = crate::clock::ms(ctx.now);
            if let Some(last) = ctx
                .last_change
                .filter(|last| crate::clock::runs(crate::clock::ms(*last), cooldown, now))
            {
                let ready = last + rule.cooldown;
                if ready > ctx.now {
                    let left = ready.duration_since(ctx.now).unwrap_or_default();
                    return Decision::Refused(Refusal::Cooldown {
                        remaining_s: left.as_secs_f64(),
                    });
                }
            }
            if ctx.changes_last_hour >= self.guard.max_changes_per_hour {
                return Decision::Refused(Refusal::RateLimited {
                    changes: ctx.changes_last_hour,
                    limit: self.guard.max_changes_per_hour,
                });
            }
        }
        match (rule.mode_for(p.source), p.source) {
            (Mode::Observe, _) => Decision::RecordOnly,
            (Mode::Recommend, Source::Operator) | (Mode::Auto, _) => Decision::Apply,
            (Mode::Recommend, _) => Decision::NeedsApproval,
        }
    }

    /// Whether `value` is within the bounds of the entry for `address` (none set: any value).
    pub fn within_bounds(&self, address: &ParamAddress, value: &Value) -> bool {
        check_bounds(self.rule_for(address), value).is_none()
    }

    /// A revert (to a value the kernel had before) passes only the deny-list: it undoes a change,
    /// so pause, bounds, step, cooldown and the hourly limit do not hold it back.
    pub fn decide_revert(&self, address: &ParamAddress) -> Decision {
        match self.deny.denies(&address.policy_name()) {
            Some(d) => Decision::Refused(Refusal::DenyListed {
                pattern: d.pattern.to_string(),
                why: d.why.to_string(),
            }),
            None => Decision::Apply,
        }
    }
}

fn check_bounds(rule: &ParamRule, value: &Value) -> Option<Refusal> {
    if rule.min.is_none() && rule.max.is_none() {
        return None;
    }
    let Some(ints) = value.ints() else {
        return Some(Refusal::OutOfBounds {
            element: None,
            value: value.to_string(),
            min: rule.min.as_ref().map(Bound::to_string),
            max: rule.max.as_ref().map(Bound::to_string),
            why: None,
        });
    };
    for (i, v) in ints.iter().enumerate() {
        let lo = rule.min.as_ref().and_then(|b| b.at(i));
        let hi = rule.max.as_ref().and_then(|b| b.at(i));
        if lo.is_some_and(|lo| *v < lo) || hi.is_some_and(|hi| *v > hi) {
            return Some(Refusal::OutOfBounds {
                element: (ints.len() > 1).then_some(i),
                value: v.to_string(),
                min: lo.map(|x| x.to_string()),
                max: hi.map(|x| x.to_string()),
                why: None,
            });
        }
    }
    for (which, b) in [("min", &rule.min), ("max", &rule.max)] {
        let Some(b) = b else { continue };
        if let Some(n) = b.len() {
            if n != ints.len() {
                return Some(Refusal::OutOfBounds {
                    element: None,
                    value: value.to_string(),
                    min: rule.min.as_ref().map(Bound::to_string),
                    max: rule.max.as_ref().map(Bound::to_string),
                    why: Some(format!(
                        "the policy's {which} {b} has {n} elements and {value} has {}: a list \
                         bounds each element, so its length must be the value's",
                        ints.len()
                    )),
                });
            }
        }
    }
    None
}

/// A proposed change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Proposal {
    pub address: ParamAddress,
    pub value: Value,
    pub source: Source,
    pub reason: String,
}

/// What the journal (and the kernel) say about the parameter at decision time.
#[derive(Debug, Clone)]
pub struct Context {
    pub now: SystemTime,
    /// The kernel's value now.
    pub before: Option<Value>,
    pub paused: bool,
    /// An administrator changed it; KPO yielded until `kpo resume PARAM`.
    pub yielded: bool,
    /// When KPO last applied a change to this parameter at this target.
    pub last_change: Option<SystemTime>,
    /// Changes applied to it in the last hour.
    pub changes_last_hour: u32,
    /// This value is quarantined until then.
    pub quarantined_until: Option<SystemTime>,
    /// Held for a person's approval whatever the mode (its advisor's `can_auto_apply` false, or
    /// the same value rejected lately there): nothing is written before someone approves it.
    pub held: bool,
    /// A person approved it: what is written now.
    pub approved: bool,
}

impl Context {
    pub fn new(now: SystemTime) -> Self {
        Self {
            now,
            before: None,
            paused: false,
            yielded: false,
            last_change: None,
            changes_last_hour: 0,
            quarantined_until: None,
            held: false,
            approved: false,
        }
    }
}

/// The policy's answer to a proposal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "decision", rename_all = "snake_case")]
pub enum Decision {
    Apply,
    /// Mode recommend: waits for an operator.
    NeedsApproval,
    /// Mode observe: recorded, never applied.
    RecordOnly,
    Refused(Refusal),
}

/// Why a change is refused.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, thiserror::Error)]
#[serde(tag = "refusal", rename_all = "snake_case")]
pub enum Refusal {
    #[error("deny-listed: matches {pattern} ({why}); no policy can allow it")]
    DenyListed { pattern: String, why: String },
    #[error("out of bounds: {}", match why {
        Some(why) => why.clone(),
        None => format!("{value}{} is outside [{}, {}]", element.map(|i| format!(" (element {i})")).unwrap_or_default(), min.as_deref().unwrap_or("-inf"), max.as_deref().unwrap_or("+inf")),
    })]
    OutOfBounds {
        element: Option<usize>,
        value: String,
        min: Option<String>,
        max: Option<String>,
        /// Said instead of "is outside": a bound list of another length than the value's.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        why: Option<String>,
    },
    #[error("step too large: {from} -> {to}{} moves more than max_step {max_step} (at most {limit})", element.map(|i| format!(" (element {i})")).unwrap_or_default())]
    StepTooLarge {
        element: Option<usize>,
        #[serde(deserialize_with = "crate::actuate::param::wide_int")]
        from: i128,
        #[serde(deserialize_with = "crate::actuate::param::wide_int")]
        to: i128,
        max_step: String,
        #[serde(deserialize_with = "crate::actuate::param::wide_int")]
        limit: i128,
    },
    #[error("cooldown: the last change was too recent; {remaining_s:.0}s to wait")]
    Cooldown { remaining_s: f64 },
    #[error(
        "source not allowed: {proposer} may not drive this parameter (allowed: {})",
        sources_allowed(allowed)
    )]
    SourceNotAllowed {
        proposer: Source,
        allowed: Vec<Source>,
    },
    #[error(
        "namespace not covered: the policy does not cover {target}{}",
        if covered.is_empty() { String::new() } else { format!(": {covered}") }
    )]
    NamespaceNotCovered {
        target: String,
        /// The entry that decided and the namespaces it covers, so that a mistyped path in
        /// `namespaces` shows in the refusal itself.
        #[serde(default)]
        covered: String,
    },
    #[error("paused: all changes are paused (kpo resume)")]
    Paused,
    #[error(
        "quarantined: this value was reverted here (by the guard, or by an operator's kpo revert \
         of an advisor's change); quarantined until {until}"
    )]
    Quarantined { until: String },
    #[error("rate-limited: {changes} changes in the last hour, the limit is {limit}")]
    RateLimited { changes: u32, limit: u32 },
    // Named by the line that quotes it (`refused #301 NAME: ...: yielded: ...`); `kpo status`
    // names the writer (s58 story BH-4: a literal PARAM).
    #[error(
        "yielded: someone else (a person, a tool) wrote this parameter over KPO's value; `kpo \
         resume` with its name hands it back"
    )]
    Yielded,
    #[error("invalid: {why}")]
    Invalid { why: String },
}

impl Refusal {
    /// Whether it passes with time or an operator, the advice unchanged: a cooldown or the hourly
    /// limit runs out, a pause is lifted, a yielded parameter handed back (`kpo resume`). An
    /// advisor waits for those rather than giving its advice up.
    pub fn passes(&self) -> bool {
        matches!(
            self,
            Refusal::Cooldown { .. }
                | Refusal::RateLimited { .. }
                | Refusal::Paused
                | Refusal::Yielded
        )
    }

    /// A short machine name (`deny_listed`, `out_of_bounds`, ...), as in events.
    pub fn code(&self) -> &'static str {
        match self {
            Refusal::DenyListed { .. } => "deny_listed",
            Refusal::OutOfBounds { .. } => "out_of_bounds",
            Refusal::StepTooLarge { .. } => "step_too_large",
            Refusal::Cooldown { .. } => "cooldown",
            Refusal::SourceNotAllowed { .. } => "source_not_allowed",
            Refusal::NamespaceNotCovered { .. } => "namespace_not_covered",
            Refusal::Paused => "paused",
            Refusal::Quarantined { .. } => "quarantined",
            Refusal::RateLimited { .. } => "rate_limited",
            Refusal::Yielded => "yielded",
            Refusal::Invalid { .. } => "invalid",
        }
    }
}

#[cfg(test)]
mod tests;

/// The `sources` a refusal names: `none` for `sources = []`, which lets nobody change the
/// parameter (`kpo check` shows it so too), rather than nothing after the colon.
fn sources_allowed(allowed: &[Source]) -> String {
    if allowed.is_empty() {
        return "none: the policy's sources for it is an empty list".to_string();
    }
    allowed
        .iter()
        .map(|s| s.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The command that reloads this agent's policy, with its own PID: these messages are written by
/// the agent (its log, its answers over the socket), so the PID is the one to signal; a literal
/// `PID` left the operator to find it.
fn sighup_command() -> String {
    format!("kill -HUP {}", std::process::id())
}
