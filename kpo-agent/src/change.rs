//! The one path by which anything is changed on a host, used by every source (rules, the LLM,
//! the optimizer, an operator, the guard's reverts):
//!
//! policy decision → journal intent (fsync) → actuator apply → read-back → journal outcome;
//! a read-back that differs, or an error after the write, puts the value before back.
//!
//! [`ChangePath`] owns the policy, the journal and the actuators. The agent loop keeps one for its
//! life; the CLI opens one under the state directory's lock while the agent is down
//! ([`crate::control::Offline`]).
//!
//! **Test-only crash hook**: when the environment variable `KPO_TEST_CRASH_AT` is
//! `after_intent`, `after_write`, `after_read_back` or `after_outcome`, the process sends itself
//! SIGKILL at that point of every change, as `kill -9` would. It is compiled in (the root tests drive the real binary),
//! costs one environment lookup per process, and must never be set in production.
use std::{sync::OnceLock, time::SystemTime};

use serde::{Deserialize, Serialize};

use crate::{
    actuate::{
        coalesce::{self, CoalesceAttrBackend, DeviceNow, DeviceSeen},
        open_actuator,
        param::{NetnsRef, ParamAddress, Target, Value},
        sysctl::{exclusive_pair, shape_fits, shape_mismatch, switches_form},
        ActuateError, Actuator, Roots,
    },
    journal::{
        key_netns_inode, own_namespace_as_host, reach, target_key, Intent, IntentKind, Journal,
        JournalError, Outcome, ParamState,
    },
    output::change_events::{ChangeEvent, ChangePathEvent, ChangePhase},
    policy::{Decision, Policy, Proposal, Refusal, Source},
};

// What follows a change, each an `impl ChangePath` of its own: putting values back, settling at
// a start what a killed process left, and where a changed parameter is now.
mod reconcile;
mod revert;
mod whereabouts;

pub(crate) use revert::{quarantine_words, OPERATORS_QUARANTINE};

/// Why nothing is done in a network namespace that is gone for certain
/// ([`ChangePath::namespace_gone_for_certain`]).
pub const NAMESPACE_GONE: &str =
    "its network namespace is gone (no /run/netns entry and no process is in it)";

/// Opens the actuator for an address: the kernel's ([`KernelActuators`]) or a test's.
pub trait Actuators: Send {
    fn open(&self, address: &ParamAddress) -> Result<Box<dyn Actuator>, ActuateError>;
    /// The coalescing backend the NICs' actuators act through, in the same network namespace:
    /// asked where a NIC KPO changed is now ([`coalesce::device_now`]). None by default.
    fn coalesce_backend(&self) -> Result<Box<dyn CoalesceAttrBackend>, ActuateError> {
        Err(ActuateError::NotSupported {
            param: "ethtool".into(),
            reason: "these actuators change no NIC".into(),
        })
    }
}

/// The real actuators, under these roots.
#[derive(Debug, Clone, Default)]
pub struct KernelActuators {
    pub roots: Roots,
}

impl Actuators for KernelActuators {
    fn open(&self, address: &ParamAddress) -> Result<Box<dyn Actuator>, ActuateError> {
        open_actuator(address, &self.roots)
    }

    fn coalesce_backend(&self) -> Result<Box<dyn CoalesceAttrBackend>, ActuateError> {
        Ok(Box::new(coalesce::EthtoolCoalesce::open()?))
    }
}

/// The points at which the test-only crash hook can kill the process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrashPoint {
    AfterIntent,
    AfterWrite,
    /// After a read-back that differs is journaled, before the value before is put back.
    AfterReadBack,
    AfterOutcome,
}

impl CrashPoint {
    pub const ENV: &'static str = "KPO_TEST_CRASH_AT";
    pub fn as_str(self) -> &'static str {
        match self {
            CrashPoint::AfterIntent => "after_intent",
            CrashPoint::AfterWrite => "after_write",
            CrashPoint::AfterReadBack => "after_read_back",
            CrashPoint::AfterOutcome => "after_outcome",
        }
    }
}

fn crash_point(at: CrashPoint) {
    static WANT: OnceLock<Option<String>> = OnceLock::new();
    let want = WANT.get_or_init(|| std::env::var(CrashPoint::ENV).ok());
    if want.as_deref() == Some(at.as_str()) {
        crate::say!(
            "kpo: {}={}: killing myself (test hook)",
            CrashPoint::ENV,
            at.as_str()
        );
        let _ = nix::sys::signal::kill(nix::unistd::getpid(), nix::sys::signal::Signal::SIGKILL);
        std::process::abort();
    }
}

/// Whose word a proposal carries beyond the policy's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Approval {
    /// The policy's mode decides.
    AsPolicy,
    /// An operator approved it: mode recommend applies. With the cookie of the network
    /// namespace the advice was about, if known.
    Approved(Option<u64>),
    /// Its advisor asked for a person: mode auto waits for approval too.
    Held,
}

/// What became of a proposal or revert.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeStatus {
    /// Written, read back equal; outcome journaled.
    Applied,
    /// The kernel already has the value; nothing written or journaled.
    Unchanged,
    /// Mode recommend: waits for an operator's approval.
    NeedsApproval,
    /// Mode observe: not applied.
    RecordOnly,
    /// The policy refused it; the kernel was not touched.
    Refused,
    /// The kernel did not take it, or it could not be read; nothing changed (or it was put back).
    Failed,
    /// A change written then put back (read-back mismatch or error), or a revert that was
    /// carried out. A revert whose own write was put back is `Failed`: the value it meant to undo
    /// is still there.
    Reverted,
    /// Left alone (`revert --all` of a parameter yielded to a person, an agent's revert of a value
    /// someone else has changed since ([`ChangePath::revert_own`]), or reconciliation that could
    /// not read the kernel and will try again).
    Skipped,
}

/// The report of one proposal, revert or reconciliation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChangeReport {
    pub address: ParamAddress,
    pub status: ChangeStatus,
    pub journal_id: Option<u64>,
    pub before: Option<Value>,
    pub after: Value,
    pub read_back: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refusal: Option<Refusal>,
    pub detail: Option<String>,
    /// The cookie of the network namespace the proposal's actuator held (`None`: not a namespace
    /// target, the agent's own, or unreadable): read once with the value, so that an approval
    /// records the namespace the advice was about, not one opened again later.
    #[serde(skip)]
    pub netns_cookie: Option<u64>,
    /// The write failed for a while, not for its value ([`ActuateError::is_passing`], or the
    /// guard's watch could not be written ahead of it), and changed nothing: the same change may
    /// pass later.
    #[serde(skip)]
    pub failed_for_a_while: bool,
    /// Not made because the guard could not write its watch ahead of it: the state directory
    /// could not be written, as for a journal that cannot be, and the same change may be made
    /// once it can.
    #[serde(skip)]
    pub unwatched: bool,
    /// A revert left a value someone else wrote, or a later operator's change, or skipped a
    /// value quarantined there (for `kpo revert ID`, which `--force` writes over: not done as
    /// asked, so the command exits 1; s52 review M1). An older CLI ignores it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub theirs_left: bool,
}

impl ChangeReport {
    pub(crate) fn new(address: &ParamAddress, after: &Value, status: ChangeStatus) -> Self {
        Self {
            address: address.clone(),
            status,
            journal_id: None,
            before: None,
            after: after.clone(),
            read_back: None,
            refusal: None,
            detail: None,
            netns_cookie: None,
            failed_for_a_while: false,
            unwatched: false,
            theirs_left: false,
        }
    }

    /// One line for people.
    pub fn describe(&self) -> String {
        let id = self
            .journal_id
            .map(|i| format!(" #{i}"))
            .unwrap_or_default();
        let before = self
            .before
            .as_ref()
            .map(|b| format!("{b} -> "))
            .unwrap_or_default();
        let status = serde_json::to_value(self.status)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        let mut s = format!("{status}{id} {}: {before}{}", self.address, self.after);
        // A skipped change wrote nothing: its value is the kernel's as found, not a read-back
        // (s55 story AT-4: "(read back X)" read as if a write was made).
        match (&self.read_back, self.status) {
            (Some(now), ChangeStatus::Skipped) => s.push_str(&format!(" (now {now})")),
            (Some(rb), _) => s.push_str(&format!(" (read back {rb})")),
            (None, _) => {}
        }
        if let Some(r) = &self.refusal {
            s.push_str(&format!(": {r}"));
        } else if let Some(d) = &self.detail {
            s.push_str(&format!(": {d}"));
        }
        s
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ChangeError {
    /// The journal could not be written: nothing was (or will be) changed without it, and a
    /// change whose outcome it could not record was put back.
    #[error("journal: {0}")]
    Journal(#[from] JournalError),
}

/// What puts back values a journal failure left (`it`: one, or `them`), unless the error says it
/// already: a full journal's does (`JournalError::Unwritable`: run again, or `kpo revert --all`
/// after a stop); another's (a read-only state directory) does not.
pub fn remedy_unless_said(error: &ChangeError, it: &str) -> String {
    match error {
        ChangeError::Journal(JournalError::Unwritable { .. }) => String::new(),
        _ => {
            format!("; once the state directory can be written, `kpo revert --all` puts {it} back")
        }
    }
}

/// [`ChangePath::restore_originals`] stopped at a journal failure: nothing more is written
/// without its record.
#[derive(Debug)]
pub struct Stopped {
    /// Those done before the failure, then the one it stopped at.
    pub reports: Vec<ChangeReport>,
    /// Each parameter not tried after it (`failed`, with the journal's error).
    pub not_tried: Vec<ChangeReport>,
    pub error: ChangeError,
}

type Sink = Box<dyn FnMut(ChangePathEvent) + Send>;

/// Policy, journal and actuators: the change path.
pub struct ChangePath {
    pub policy: Policy,
    pub journal: Journal,
    actuators: Box<dyn Actuators>,
    sink: Sink,
    /// Called with each change (not a revert) between its intent's fsync and its kernel write.
    before_write: Option<crate::guard::WriteAhead>,
    /// A command acting on a state directory no agent has run on, whose journal holds no change
    /// yet: its first change records this namespace as the journal's (`agent-netns`) before its
    /// intent ([`crate::control::open_offline_kernel`]).
    pub(crate) netns_unrecorded: bool,
    /// An operator's approval is being proposed: its refusal is the operator's, journaled.
    approving: bool,
}

impl std::fmt::Debug for ChangePath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChangePath")
            .field("policy", &self.policy.origin)
            .field("journal", &self.journal)
            .finish()
    }
}

impl ChangePath {
    pub fn new(policy: Policy, journal: Journal, actuators: Box<dyn Actuators>) -> Self {
        Self {
            policy,
            journal,
            actuators,
            sink: Box::new(|_| {}),
            before_write: None,
            netns_unrecorded: false,
            approving: false,
        }
    }

    /// The journal key of an address (see [`crate::journal::target_key`]).
    pub fn key(address: &ParamAddress) -> String {
        target_key(address)
    }

    /// The guard's file, where each change's watch is written before the kernel write (the agent
    /// sets it; the CLI's offline path has no guard).
    pub fn set_before_write(&mut self, ahead: crate::guard::WriteAhead) {
        self.before_write = Some(ahead);
    }

    /// Where `change`, `paused` and `resumed` events go (the agent's event stream).
    pub fn set_event_sink(&mut self, sink: impl FnMut(ChangePathEvent) + Send + 'static) {
        self.sink = Box::new(sink);
    }

    #[allow(clippy::too_many_arguments)]
    fn event(
        &self,
        phase: ChangePhase,
        address: &ParamAddress,
        before: Option<&Value>,
        after: &Value,
        source: Source,
        reason: &str,
        id: Option<u64>,
    ) -> ChangeEvent {
        ChangeEvent {
            phase,
            target: address.clone(),
            before: before.cloned(),
            after: after.clone(),
            source,
            reason: reason.to_string(),
            journal_id: id,
            decision: None,
            refusal: None,
            read_back: None,
            detail: None,
        }
    }

    fn send(&mut self, e: ChangeEvent) {
        (self.sink)(ChangePathEvent::Change(e))
    }

    pub(crate) fn send_other(&mut self, e: ChangePathEvent) {
        (self.sink)(e)
    }

    /// Proposes a change: the policy decides, and an allowed change is journaled, applied, read
    /// back and journaled again. Errors only when the journal cannot be written.
    pub fn propose(&mut self, p: &Proposal) -> Result<ChangeReport, ChangeError> {
        self.propose_inner(p, Approval::AsPolicy, None, None)
    }

    /// What the policy would decide for `p` now, without writing, journaling or sending events:
    /// an advisor whose change spans several parameters asks about each before making any.
    /// The actuator's own validation is left to [`ChangePath::propose`].
    pub fn preview(&self, p: &Proposal) -> Decision {
        self.preview_as(p, false)
    }

    /// [`ChangePath::preview`] of `p` approved by an operator now: the policy's decision `kpo
    /// approve` would meet (the cooldown and the hourly limit are asked of advice that waits for
    /// a person only at approval), not what only the write finds.
    pub fn preview_approved(&self, p: &Proposal) -> Decision {
        self.preview_as(p, true)
    }

    fn preview_as(&self, p: &Proposal, approved: bool) -> Decision {
        if let Decision::Refused(r) = self.policy.decide_revert(&p.address) {
            return Decision::Refused(r);
        }
        // A namespace given a dead one's inode inherits nothing of it (the proposal itself
        // forgets it in the journal): not its yield, quarantines or rate count either.
        let recorded = self
            .journal
            .param_state(&p.address)
            .and_then(|s| s.netns_cookie);
        let replaced = matches!((recorded, self.netns_cookie(&p.address)),
            (Some(was), Some(now)) if was != now)
            // Likewise a NIC's device gone for certain from under its name, which `propose`
            // settles before the policy reads the journal: the new device inherits nothing.
            || self.nic_device_gone(&p.address);
        let mut ctx = self
            .journal
            .context(&p.address, &p.value, SystemTime::now());
        if replaced {
            ctx.yielded = false;
            ctx.last_change = None;
            ctx.changes_last_hour = 0;
            ctx.quarantined_until = None;
        }
        ctx.before = self.read(&p.address).ok();
        if let Some(before) = ctx.before.as_ref().filter(|_| !replaced) {
            ctx.yielded |= self.someone_elses(p, before);
        }
        ctx.approved = approved;
        self.policy.decide(p, &ctx)
    }

    /// Someone else has changed the parameter since KPO's last write, and nothing has journaled
    /// that yet (the window's value check will): an advisor's change would overwrite their value,
    /// so it is refused as yielded. An operator's own `kpo apply` is theirs to make. A value moved
    /// by adaptive moderation KPO turned back on is nobody's.
    fn someone_elses(&self, p: &Proposal, before: &Value) -> bool {
        let ours = self
            .journal
            .param_state(&p.address)
            .and_then(|s| s.last_applied.as_ref());
        p.source != Source::Operator
            && ours.is_some_and(|ours| ours != before)
            && !self.moved_by_the_kernel(&p.address)
    }

    /// As [`ChangePath::propose`] for a proposal an operator approved: mode recommend applies.
    /// `advised_in` is the cookie of the network namespace the advice was about: a namespace
    /// that has its inode now (another cookie) is not written to.
    pub fn propose_approved(
        &mut self,
        p: &Proposal,
        advised_in: Option<u64>,
    ) -> Result<ChangeReport, ChangeError> {
        self.approving = true;
        let report = self.propose_inner(p, Approval::Approved(advised_in), None, None);
        self.approving = false;
        report
    }

    /// As [`ChangePath::propose`] for advice its advisor did not allow to apply automatically: a
    /// change the policy would apply waits for an operator's approval instead (`needs_approval`),
    /// and one the policy refuses or only observes is reported as such. Never touches the kernel.
    pub fn propose_held(&mut self, p: &Proposal) -> Result<ChangeReport, ChangeError> {
        self.propose_inner(p, Approval::Held, None, None)
    }

    /// An advisor's advice: [`ChangePath::propose`], or [`ChangePath::propose_held`] when `held`,
    /// for advice made from a value read in the network namespace whose cookie is `read_in`
    /// (`None`: not read with one; nothing more is checked). The LLM's advice is applied up to
    /// `llm.timeout` after its value was read, and the namespace its `@netns:INODE` named may be
    /// gone by then, its inode reused by another: then the cookie differs (or cannot be read)
    /// and the proposal is refused (`invalid`), with nothing written and no approval asked for.
    /// Checked through the same open of the namespace as the write, so an approval a held one
    /// becomes records the namespace the value was read in.
    ///
    /// `against`: the value the advice was made against, for advice that lags its read (the
    /// LLM's). A kernel that has moved since to another value than the advised one (a rule
    /// raised it meanwhile, or a person) refuses it (`invalid`): applied, advice to raise could
    /// become a cut; held, the approval would name a value the reason is not about.
    pub fn propose_advice(
        &mut self,
        p: &Proposal,
        held: bool,
        read_in: Option<u64>,
        against: Option<&Value>,
    ) -> Result<ChangeReport, ChangeError> {
        let mode = if held {
            Approval::Held
        } else {
            Approval::AsPolicy
        };
        self.propose_inner(p, mode, read_in, against)
    }

    /// `read_in`, `against`: see [`ChangePath::propose_advice`].
    fn propose_inner(
        &mut self,
        p: &Proposal,
        mode: Approval,
        read_in: Option<u64>,
        against: Option<&Value>,
    ) -> Result<ChangeReport, ChangeError> {
        if let Some(why) = names_no_namespace_of_its_own(&p.address) {
            let report = ChangeReport::new(&p.address, &p.value, ChangeStatus::Refused);
            let r = match self.policy.decide_revert(&p.address) {
                Decision::Refused(r) => r,
                _ => Refusal::Invalid { why },
            };
            return self.refuse_undecided(p, None, r, report);
        }
        // The agent's own namespace is the host's: addressed by its inode or a path to it, the
        // parameter is the host's one kernel value, reported, watched and journaled as such (a
        // second address would start a second original from KPO's own value).
        let as_host;
        let p = match own_namespace_as_host(&p.address) {
            Some(address) => {
                as_host = Proposal {
                    address,
                    ..p.clone()
                };
                &as_host
            }
            None => p,
        };
        let (approved, advised_in) = match mode {
            Approval::Approved(cookie) => (true, cookie),
            _ => (false, None),
        };
        let mut report = ChangeReport::new(&p.address, &p.value, ChangeStatus::Refused);
        // The deny-list first, before the kernel is even read.
        if let Decision::Refused(r) = self.policy.decide_revert(&p.address) {
            return self.refuse_undecided(p, None, r, report);
        }
        let mut actuator = match self.actuators.open(&p.address) {
            Ok(a) => a,
            Err(e) => return Ok(self.fail_early(p, None, e.to_string(), report)),
        };
        // From here on the namespace is the one the actuator holds, by its inode when the path
        // names another or none by now: what the journal holds of it, the policy's word on it,
        // and the report, are that namespace's (s54 review M2).
        let pinned;
        let p = match pinned_to_held_namespace(&p.address, actuator.netns_inode()) {
            Some(address) => {
                report.address = address.clone();
                pinned = Proposal {
                    address,
                    ..p.clone()
                };
                &pinned
            }
            None => p,
        };
        // A namespace that replaced a dead one inherits nothing: settled before the policy reads
        // its yields, quarantines and rate limits.
        let cookie = actuator.netns_cookie();
        report.netns_cookie = cookie;
        if let Some(advised) = advised_in {
            let why = match cookie {
                Some(now) if now != advised => Some(format!(
                    "the network namespace this was advised for is gone: its inode now names \
                     another one (cookie {now}, was {advised})"
                )),
                Some(_) => None,
                // Not known to be the same one: nothing is written (the approval stays pending).
                None => Some("the network namespace's cookie cannot be read now".to_string()),
            };
            if let Some(why) = why {
                return Ok(self.fail_early(p, None, why, report));
            }
        }
        // Advice whose value was read in another namespace than the one this inode names now
        // (`propose_advice`): refused like any proposal the policy refuses, before the journal
        // settles the gone namespace's state (the next write does that) and before the policy.
        if let Some(read) = read_in {
            let why = match cookie {
                Some(now) if now != read => Some(format!(
                    "the network namespace this was advised for is gone: its inode now names \
                     another one (cookie {now}, was {read} when the value was read)"
                )),
                Some(_) => None,
                None => Some(
                    "the network namespace's cookie cannot be read now: not known to be the one \
                     this was advised for"
                        .to_string(),
                ),
            };
            if let Some(why) = why {
                return self.refuse_undecided(p, None, Refusal::Invalid { why }, report);
            }
        }
        self.namespace_replaced(&p.address, cookie)?;
        // Likewise a NIC whose name names a new device now: what the journal holds (the
        // original, the yield, the quarantines, the rate limit) was the old device's, and the
        // change starts a new original from the new device's value.
        self.settle_if_device_gone(&p.address)?;
        // Coalescing: the policy says whether a change may turn adaptive moderation off.
        actuator.set_adaptive_off_allowed(self.policy.rule_for(&p.address).allow_adaptive_off);
        let before = match actuator.read() {
            Ok(v) => v,
            Err(e) => return Ok(self.fail_early(p, None, e.to_string(), report)),
        };
        report.before = Some(before.clone());
        // A list with commas (`kpo apply net.ipv4.tcp_rmem=4096,131072,6291456`) arrives as one
        // word; integers when the kernel's value is several integers, else the word the kernel
        // takes (`ip_local_reserved_ports = 8080,9000-9100`). Converted before the policy sees it.
        // For such a list, which the kernel prints as an integer while it holds one element, a
        // string of digits (`"8080"` in the API's JSON) is that integer: as a word it would read
        // back as another value than the one written, and be put back.
        // Such a list is written in the form the kernel prints it, so that it reads back as
        // written (`8091,8090` is `8090-8091`).
        let value = match p.value.commas_as_integers(&before) {
            Some(value) => value,
            None => match &p.value {
                Value::Word(w) if crate::actuate::sysctl::is_integer_list(&p.address) => {
                    match crate::actuate::sysctl::integer_list_in_kernel_form(w) {
                        Some(kernel_form) => Value::parse(&kernel_form),
                        None => Value::parse(w),
                    }
                }
                value => value.clone(),
            },
        };
        let converted;
        let p = if value != p.value {
            converted = Proposal { value, ..p.clone() };
            report.after = converted.value.clone();
            &converted
        } else {
            p
        };
        if let Some(was) = against {
            if *was != before && before != p.value && !self.under_adaptive_moderation(&p.address) {
                let r = Refusal::Invalid {
                    why: format!(
                        "the kernel now has {before}, and the advice was made against {was}"
                    ),
                };
                return self.refuse_undecided(p, Some(&before), r, report);
            }
        }
        if !shape_fits(&p.address, &before, &p.value) {
            let r = Refusal::Invalid {
                why: shape_mismatch(&p.address, &before, &p.value),
            };
            return self.refuse_undecided(p, Some(&before), r, report);
        }
        // The other form of a two-form limit (host-wide `vm.*`), read only when it matters.
        let pair_value = match exclusive_pair(&p.address) {
            Some(pair) if before == Value::Int(0) => pair
                .parse::<ParamAddress>()
                .ok()
                .and_then(|pair| self.actuators.open(&pair).ok())
                .and_then(|mut pair| pair.read().ok()),
            _ => None,
        };
        if let Some(why) = switches_form(&p.address, &before, &p.value, pair_value.as_ref()) {
            return self.refuse_undecided(p, Some(&before), Refusal::Invalid { why }, report);
        }
        if let Err(e) = actuator.validate(&p.value) {
            let r = Refusal::Invalid { why: e.to_string() };
            return self.refuse_undecided(p, Some(&before), r, report);
        }
        let mut ctx = self
            .journal
            .context(&p.address, &p.value, SystemTime::now());
        ctx.yielded |= self.someone_elses(p, &before);
        ctx.before = Some(before.clone());
        ctx.held = mode == Approval::Held;
        ctx.approved = approved;
        let decision = match self.policy.decide(p, &ctx) {
            Decision::Apply if mode == Approval::Held => Decision::NeedsApproval,
            d => d,
        };
        let mut ev = self.event(
            ChangePhase::Proposed,
            &p.address,
            Some(&before),
            &p.value,
            p.source,
            &p.reason,
            None,
        );
        ev.decision = Some(
            match &decision {
                Decision::Apply => "apply",
                Decision::NeedsApproval if approved => "apply",
                Decision::NeedsApproval => "needs_approval",
                Decision::RecordOnly => "record_only",
                Decision::Refused(_) => "refused",
            }
            .into(),
        );
        self.send(ev);
        match decision {
            Decision::Refused(r) => return self.refuse(p, Some(&before), r, report),
            Decision::RecordOnly => {
                report.status = ChangeStatus::RecordOnly;
                report.detail = Some(format!(
                    "the policy ({}) observes {} only",
                    self.policy.origin,
                    p.address.policy_name()
                ));
                return Ok(report);
            }
            Decision::NeedsApproval if !approved => {
                report.status = ChangeStatus::NeedsApproval;
                // Said as it is (s49 storyV V2: `--recommend-only` and an advisor's own hold
                // read "mode recommend" over an entry in mode auto).
                let recommend = self.policy.rule_for(&p.address).mode_for(p.source)
                    == crate::policy::Mode::Recommend;
                report.detail = Some(
                    if recommend && self.policy.forced_recommend() {
                        "mode recommend (kpo run --recommend-only treats auto as recommend): \
                         waits for an operator's approval"
                    } else if recommend {
                        "mode recommend: waits for an operator's approval"
                    } else {
                        "its advisor asked for a person (can_auto_apply false): waits for an \
                         operator's approval"
                    }
                    .into(),
                );
                return Ok(report);
            }
            Decision::NeedsApproval | Decision::Apply => {}
        }
        if before == p.value {
            report.status = ChangeStatus::Unchanged;
            report.detail = Some("the kernel already has this value".into());
            return Ok(report);
        }
        let switch = match self.clear_the_way(&mut *actuator, p, &before)? {
            Ok(switch) => switch,
            Err(why) => return Ok(self.fail_early(p, Some(&before), why, report)),
        };
        // Turning adaptive moderation off is the journaled change `clear_the_way` made (or it was
        // off). A person who turns it on again before the value is written makes the write
        // refused (AdaptiveOn): the value's own SET must never turn it off unjournaled.
        actuator.set_adaptive_off_allowed(false);
        let executed = self.execute(
            actuator,
            &p.address,
            &before,
            &p.value,
            p.source,
            &p.reason,
            IntentKind::Change,
            report,
            None,
            true,
        );
        let report = match executed {
            Ok(report) => report,
            Err(e) => {
                // The journal could not record the value's change (its intent: nothing was
                // written; or its outcome: the value before was put back). The switch was turned
                // off for nothing, as when the value does not take: back on, if the journal
                // takes that; if not, the next start does it ([`ChangePath::reconcile`]).
                if let Some(switch) = switch {
                    let why = format!(
                        "{} was not set (the journal could not record it: {e}); turning back on",
                        p.address
                    );
                    match self.revert_own(switch, p.source, &why) {
                        Ok(undone) => tracing::info!("{}", undone.describe()),
                        Err(again) => tracing::warn!(
                            "journal #{switch}: not turned back on ({again}); the next start \
                             turns it back on"
                        ),
                    }
                }
                return Err(e);
            }
        };
        if let Some(switch) = switch.filter(|_| report.status != ChangeStatus::Applied) {
            // What it was turned off for did not take: back on.
            let why = format!("{} was not set; turning back on", p.address);
            let undone = self.revert_own(switch, p.source, &why)?;
            tracing::info!("{}", undone.describe());
        }
        Ok(report)
    }

    /// Turns off what is in the way of `p` (adaptive moderation, where the policy allows it) as a
    /// journaled change of its own (`made_way_for`), so that `revert --all` and `on_exit` turn it
    /// back on after the values, across restarts. A revert of `p` alone leaves it off: turned on,
    /// the NIC would move the value KPO just put back. Its journal id, or why not.
    fn clear_the_way(
        &mut self,
        actuator: &mut dyn Actuator,
        p: &Proposal,
        before: &Value,
    ) -> Result<Result<Option<u64>, String>, ChangeError> {
        if !self.policy.rule_for(&p.address).allow_adaptive_off {
            return Ok(Ok(None));
        }
        let (address, off) = match actuator.switch_in_the_way() {
            Ok(Some(switch)) => switch,
            Ok(None) => return Ok(Ok(None)),
            Err(e) => return Ok(Err(e.to_string())),
        };
        // A switch that is a person's now (yielded, or on while KPO last left it off) stays on.
        if let Some(state) = self.journal.param_state(&address) {
            let on = Value::Word("on".into());
            if state.yielded.is_some() || state.last_applied.as_ref().is_some_and(|v| *v != on) {
                return Ok(Err(format!(
                    "{address} is on, and not because of KPO: someone else turned it on, and KPO \
                     does not turn it off"
                )));
            }
        }
        let mut switch = match self.actuators.open(&address) {
            Ok(a) => a,
            Err(e) => return Ok(Err(format!("{address}: {e}"))),
        };
        let on = match switch.read() {
            Ok(v) => v,
            Err(e) => return Ok(Err(format!("{address}: {e}"))),
        };
        let reason = format!(
            "turned off so that {} can go from {before} to {} (allow_adaptive_off): {}",
            p.address, p.value, p.reason
        );
        let report = ChangeReport::new(&address, &off, ChangeStatus::Refused);
        let r = self.execute(
            switch,
            &address,
            &on,
            &off,
            p.source,
            &reason,
            IntentKind::Change,
            report,
            Some(p.address.to_string()),
            true,
        )?;
        if r.status == ChangeStatus::Applied {
            Ok(Ok(r.journal_id))
        } else {
            Ok(Err(format!(
                "{address} had to be turned off first, and was not: {}",
                r.describe()
            )))
        }
    }

    fn refuse(
        &mut self,
        p: &Proposal,
        before: Option<&Value>,
        r: Refusal,
        mut report: ChangeReport,
    ) -> Result<ChangeReport, ChangeError> {
        // An operator's refusals are journaled, an approval's included (s47 storyN N-3: a refused
        // `kpo approve` left no record); an advisor's would flood it (events carry them).
        let recorded = if p.source == Source::Operator || self.approving {
            self.journal
                .record_refusal(
                    &p.address,
                    before,
                    &p.value,
                    p.source,
                    &p.reason,
                    &r.to_string(),
                )
                .map(Some)
        } else {
            Ok(None)
        };
        let (id, unrecorded) = match recorded {
            Ok(id) => (id, None),
            Err(e) => (None, Some(e)),
        };
        let mut ev = self.event(
            ChangePhase::Refused,
            &p.address,
            before,
            &p.value,
            p.source,
            &p.reason,
            id,
        );
        ev.refusal = Some(r.code().into());
        ev.detail = Some(match &unrecorded {
            None => r.to_string(),
            Some(e) => format!("{r}; the journal could not record the refusal ({e})"),
        });
        self.send(ev);
        // The `proposed` event went out: the `refused` one above tells a reader of the stream
        // how it ended, and the operator gets the journal's error.
        if let Some(e) = unrecorded {
            return Err(e.into());
        }
        report.status = ChangeStatus::Refused;
        report.journal_id = id;
        report.before = before.cloned();
        report.refusal = Some(r);
        Ok(report)
    }

    /// Refuses `p` as invalid for `why` (an advisor's own check of it failed, writing nothing),
    /// with the events of a proposal refused before the policy's decision.
    pub fn refuse_invalid(&mut self, p: &Proposal, why: String) -> ChangeReport {
        let report = ChangeReport::new(&p.address, &p.value, ChangeStatus::Refused);
        let before = self.read(&p.address).ok();
        let refused = self.refuse_undecided(p, before.as_ref(), Refusal::Invalid { why }, report);
        refused.unwrap_or_else(|e| {
            let mut report = ChangeReport::new(&p.address, &p.value, ChangeStatus::Refused);
            report.detail = Some(e.to_string());
            report
        })
    }

    /// [`ChangePath::refuse`] of a proposal refused before the policy decided (the deny-list, a
    /// value the parameter cannot take, a namespace gone): its `proposed` event first, decision
    /// `refused`, as the policy's own refusals have, so that a reader of the stream sees every
    /// refusal's proposal (s45 storyF: an `invalid` one had no `proposed`).
    fn refuse_undecided(
        &mut self,
        p: &Proposal,
        before: Option<&Value>,
        r: Refusal,
        report: ChangeReport,
    ) -> Result<ChangeReport, ChangeError> {
        let mut ev = self.event(
            ChangePhase::Proposed,
            &p.address,
            before,
            &p.value,
            p.source,
            &p.reason,
            None,
        );
        ev.decision = Some("refused".into());
        self.send(ev);
        self.refuse(p, before, r, report)
    }

    fn fail_early(
        &mut self,
        p: &Proposal,
        before: Option<&Value>,
        error: String,
        mut report: ChangeReport,
    ) -> ChangeReport {
        let mut ev = self.event(
            ChangePhase::Failed,
            &p.address,
            before,
            &p.value,
            p.source,
            &p.reason,
            None,
        );
        ev.detail = Some(error.clone());
        self.send(ev);
        report.status = ChangeStatus::Failed;
        report.detail = Some(error);
        report
    }

    /// Intent, write, read-back, outcome. `before` is the kernel's value just read. A namespace
    /// named by a path is journaled and reported by the inode of the one the actuator holds when
    /// the path no longer names it ([`pinned_to_held_namespace`]). `only_over_before`: nothing is
    /// written over another value found in place of `before` just before the write (a sysctl's,
    /// [`Actuator::holds_still`]); false for a revert that writes over someone else's value
    /// anyway.
    #[allow(clippy::too_many_arguments)]
    fn execute(
        &mut self,
        mut actuator: Box<dyn Actuator>,
        address: &ParamAddress,
        before: &Value,
        after: &Value,
        source: Source,
        reason: &str,
        kind: IntentKind,
        mut report: ChangeReport,
        made_way_for: Option<String>,
        only_over_before: bool,
    ) -> Result<ChangeReport, ChangeError> {
        let is_revert = matches!(kind, IntentKind::Revert { .. });
        let pinned = pinned_to_held_namespace(address, actuator.netns_inode());
        let address = pinned.as_ref().unwrap_or(address);
        report.address = address.clone();
        // A switch turned off to make way for a value is that value's business, not the guard's.
        let watched = !is_revert && made_way_for.is_none();
        let netns_cookie = actuator.netns_cookie();
        if self.namespace_replaced(address, netns_cookie)? && is_revert {
            // What is to be put back was the dead namespace's; the one there now never had it.
            report.status = ChangeStatus::Skipped;
            report.detail = Some(
                "its network namespace is gone (the inode names another one now); nothing to put back"
                    .into(),
            );
            return Ok(report);
        }
        // The device a NIC's name names now, so that a later start can tell it gone from renamed.
        let device = actuator.device_seen();
        if self.netns_unrecorded {
            crate::control::record_agent_netns(self.journal.dir())?;
            self.netns_unrecorded = false;
        }
        let id = match self.journal.record_intent_making_way(
            address,
            before,
            after,
            source,
            reason,
            kind.clone(),
            made_way_for,
            // Journaled under the host's key, the agent's own namespace keeps no cookie: a key
            // with one is settled at a reboot as a namespace that did not outlive it.
            netns_cookie.filter(|_| own_namespace_as_host(address).is_none()),
            device,
            self.approving && !is_revert,
        ) {
            Ok(id) => id,
            Err(e) => {
                // Nothing is written without its intent on disk. The `proposed` event already
                // went out: this one says how it ended.
                let mut ev = self.event(
                    ChangePhase::Failed,
                    address,
                    Some(before),
                    after,
                    source,
                    reason,
                    None,
                );
                ev.detail = Some(format!(
                    "not written: the journal could not record its intent ({e})"
                ));
                self.send(ev);
                return Err(e.into());
            }
        };
        report.journal_id = Some(id);
        report.before = Some(before.clone());
        crash_point(CrashPoint::AfterIntent);
        let unwatched = match (watched, &self.before_write) {
            (true, Some(ahead)) => {
                let signals = self.policy.guard_signals_for(address, source);
                (ahead.before_write(id, address, before, after, signals.as_deref())).err()
            }
            _ => None,
        };
        // Another writer (a configuration tool, `sysctl -p`) may have written the parameter
        // since `before` was read: the intent's fsync takes milliseconds. Its value is not
        // written over (s58 story BH-2: a lost write, and a `before` that was not the kernel's),
        // unless the caller writes over someone else's value anyway (`kpo revert --force`,
        // `--all`: `only_over_before` false).
        let moved = match unwatched.is_none() && only_over_before && actuator.holds_still() {
            true => actuator.read().ok().filter(|now| now != before),
            false => None,
        };
        let written = match &moved {
            _ if unwatched.is_some() => None,
            Some(_) => None,
            None if is_revert => Some(actuator.revert(after)),
            None => Some(actuator.apply(after)),
        };
        crash_point(CrashPoint::AfterWrite);
        let outcome = match written {
            None if unwatched.is_some() => {
                let error = format!(
                    "not written: the guard cannot keep its watch in the state directory ({}), \
                     and a change a restart would forget unjudged is not made; once the state \
                     directory can be written again (a full disk, most often), try again",
                    unwatched.unwrap_or_default()
                );
                report.detail = Some(error.clone());
                report.status = ChangeStatus::Failed;
                // It passes once the file can be written: the optimizer waits for it rather
                // than setting its configuration aside (s61 review1 R1-3).
                report.failed_for_a_while = true;
                report.unwatched = true;
                Outcome::Failed {
                    error,
                    reconciled: false,
                    left: None,
                }
            }
            None => {
                let now = moved.unwrap_or_else(|| before.clone());
                let error = format!(
                    "not written: the kernel has {now}, not the {before} read before the intent \
                     was journaled: someone else wrote it meanwhile, and their value stays"
                );
                report.detail = Some(error.clone());
                if is_revert {
                    // As a revert that found someone else's value before its intent is reported
                    // ([`ChangePath::restore`]): its caller yields to them, and the guard
                    // quarantines what it was reverting (s58 review1 R1-1). The journal keeps
                    // the intent's outcome, `failed`: nothing was written.
                    report.status = ChangeStatus::Skipped;
                    report.theirs_left = true;
                    report.read_back = Some(now.clone());
                } else {
                    report.status = ChangeStatus::Failed;
                }
                Outcome::Failed {
                    error,
                    reconciled: false,
                    left: None,
                }
            }
            Some(written) => match written {
                Ok(read_back) if &read_back == after => {
                    let ev = self.event(
                        ChangePhase::Applied,
                        address,
                        Some(before),
                        after,
                        source,
                        reason,
                        Some(id),
                    );
                    self.send(ev);
                    report.read_back = Some(read_back.clone());
                    if is_revert {
                        report.status = ChangeStatus::Reverted;
                        Outcome::Reverted {
                            why: reason.to_string(),
                            read_back: Some(read_back),
                        }
                    } else {
                        report.status = ChangeStatus::Applied;
                        Outcome::Applied {
                            read_back,
                            reconciled: false,
                            why: None,
                        }
                    }
                }
                Ok(read_back) => {
                    let why = format!("wrote {after} but read back {read_back}");
                    self.put_back(
                        &mut *actuator,
                        id,
                        &kind,
                        before,
                        Some(&read_back),
                        why,
                        &mut report,
                    )
                }
                Err(e) => {
                    // Did anything change? Read, and put the value before back if it did.
                    match actuator.read() {
                        Ok(now) if &now == before => {
                            report.status = ChangeStatus::Failed;
                            report.detail = Some(e.to_string());
                            report.failed_for_a_while = e.is_passing();
                            Outcome::Failed {
                                error: e.to_string(),
                                reconciled: false,
                                left: None,
                            }
                        }
                        now => {
                            let seen = now.ok();
                            self.put_back(
                                &mut *actuator,
                                id,
                                &kind,
                                before,
                                seen.as_ref(),
                                e.to_string(),
                                &mut report,
                            )
                        }
                    }
                }
            },
        };
        let phase = match &outcome {
            Outcome::Applied { .. } => ChangePhase::Verified,
            Outcome::Reverted { .. } => ChangePhase::Reverted,
            Outcome::Failed { .. } => ChangePhase::Failed,
        };
        let recorded = self.journal.record_outcome(id, outcome.clone());
        let (phase, detail) = match &recorded {
            Ok(()) => (phase, report.detail.clone()),
            // A change: the kernel may have the new value while the journal has only the intent.
            // The value before goes back, so that both say "not applied" (the intent is
            // reconciled at the next start against the kernel), and no later value check takes
            // KPO's write for a person's.
            // A revert is left done: what it undid must not come back because the disk is full.
            // The running agent goes on knowing it (else the next value check would take the
            // value it put back for a person's); the next start reconciles it as done.
            Err(e) if is_revert => {
                self.journal.fold_unrecorded(id, outcome);
                let what = report.detail.clone().unwrap_or_else(|| "done".into());
                let detail = format!(
                    "{what}; the journal could not record it ({e}): the next start records it, \
                     as done, from what the kernel has"
                );
                tracing::warn!("{address}: {detail}");
                (phase, Some(detail))
            }
            Err(e) => {
                let detail = match actuator.read() {
                    Ok(now) if &now != before => match actuator.revert(before) {
                        Ok(_) => format!(
                            "the journal could not record the outcome ({e}); put back {before}"
                        ),
                        Err(w) => {
                            // KPO's write stays: the running agent holds it as KPO's, so that no
                            // value check takes it for a person's (the next start reconciles it).
                            let error = format!(
                                "the journal could not record the outcome ({e}), and putting \
                                 back {before} failed: {w}; the kernel keeps {now}, written by \
                                 KPO (kpo revert {id} puts {before} back)"
                            );
                            self.journal.fold_unrecorded(
                                id,
                                Outcome::Failed {
                                    error: error.clone(),
                                    reconciled: false,
                                    left: Some(now),
                                },
                            );
                            error
                        }
                    },
                    _ => format!("the journal could not record the outcome ({e})"),
                };
                tracing::warn!("{address}: {detail}");
                (ChangePhase::Failed, Some(detail))
            }
        };
        let mut ev = self.event(
            phase,
            address,
            Some(before),
            after,
            source,
            reason,
            Some(id),
        );
        ev.read_back = recorded.is_ok().then(|| report.read_back.clone()).flatten();
        ev.detail = detail;
        self.send(ev);
        recorded?;
        crash_point(CrashPoint::AfterOutcome);
        Ok(report)
    }

    /// Puts the value before back after change `id`'s write left `seen` (a read-back that
    /// differs, or a write that failed after changing something). `seen` is journaled first: if
    /// the agent dies before the put-back, the next start knows the kernel's value as KPO's own
    /// write and puts the value before back, instead of taking it for someone else's. If the
    /// put-back fails, what the kernel keeps is KPO's value, and the outcome says so (`left`).
    #[allow(clippy::too_many_arguments)]
    fn put_back(
        &mut self,
        actuator: &mut dyn Actuator,
        id: u64,
        kind: &IntentKind,
        before: &Value,
        seen: Option<&Value>,
        why: String,
        report: &mut ChangeReport,
    ) -> Outcome {
        if let Some(seen) = seen.filter(|v| *v != before) {
            match self.journal.record_read_back(id, seen) {
                Ok(()) => crash_point(CrashPoint::AfterReadBack),
                Err(e) => tracing::warn!(
                    "{}: the journal could not record that {seen} was read back ({e}); putting \
                     {before} back anyway",
                    actuator.address()
                ),
            }
        }
        match actuator.revert(before) {
            Ok(rb) if rb == *before && matches!(kind, IntentKind::Revert { .. }) => {
                // The revert did not take: the kernel has the value it meant to undo again (KPO's
                // change, which the journal still holds). Reported as a failure, so that `kpo
                // revert` exits non-zero, `on_exit` warns that KPO's value outlives the agent, and
                // `revert --all` leaves adaptive moderation off over that value.
                let error = format!("{why}; put back {before}: the revert did not take");
                report.status = ChangeStatus::Failed;
                report.detail = Some(error.clone());
                Outcome::Failed {
                    error,
                    reconciled: false,
                    left: None,
                }
            }
            Ok(rb) => {
                report.status = ChangeStatus::Reverted;
                report.read_back = Some(rb.clone());
                report.detail = Some(format!("{why}; put back {before}"));
                Outcome::Reverted {
                    why,
                    read_back: Some(rb),
                }
            }
            Err(e) => {
                let mut error = format!("{why}; putting back {before} failed too: {e}");
                let left = actuator.read().ok().filter(|now| now != before);
                if let Some(left) = &left {
                    let again = match kind {
                        IntentKind::Change => format!("kpo revert {id} puts {before} back"),
                        // `kpo revert OF` writes OF's value before: the same again only where
                        // that is what this revert wrote (not a put-back of the original over
                        // changes made one after another: the s46 review).
                        IntentKind::Revert { of: Some(of) }
                            if self.journal.intent(*of).map(|i| &i.before)
                                == self.journal.intent(id).map(|i| &i.after) =>
                        {
                            format!("kpo revert {of} tries again")
                        }
                        IntentKind::Revert { of: Some(_) } => "kpo revert --all tries again".into(),
                        IntentKind::Revert { of: None } => "kpo revert --all tries again".into(),
                    };
                    error.push_str(&format!(
                        "; the kernel keeps {left}, written by KPO ({again})"
                    ));
                }
                report.status = ChangeStatus::Failed;
                report.read_back = left.clone();
                report.detail = Some(error.clone());
                Outcome::Failed {
                    error,
                    reconciled: false,
                    left,
                }
            }
        }
    }
}

/// Why a namespace path does not say which network namespace was meant: a file of another kind
/// of namespace (`/proc/PID/ns/mnt`) names none, whoever opens it; `/proc/self/...` and
/// `/proc/thread-self/...` name the namespace of whichever process opens them, the agent, not
/// the shell where `kpo apply --netns /proc/self/ns/net` was typed.
fn names_no_namespace_of_its_own(address: &ParamAddress) -> Option<String> {
    let Target::Netns {
        netns: NetnsRef::Path(path),
    } = &address.target
    else {
        return None;
    };
    if let Some(kind) = crate::actuate::sysctl::other_namespace_kind(path) {
        return Some(format!(
            "{}: not a network namespace: {kind}; give /proc/PID/ns/net with the \
             PID, /run/netns/NAME, or the network namespace's inode (`stat -L -c %i \
             /proc/PID/ns/net`)",
            path.display()
        ));
    }
    use std::path::Component;
    let mut parts = path
        .components()
        .filter(|c| !matches!(c, Component::RootDir | Component::CurDir));
    let proc = matches!(parts.next(), Some(Component::Normal(p)) if p == "proc");
    let opener =
        matches!(parts.next(), Some(Component::Normal(p)) if p == "self" || p == "thread-self");
    (proc && opener).then(|| {
        format!(
            "{} names the network namespace of whichever process opens it (the agent, when one \
             runs), not necessarily the one the command was run in: give /proc/PID/ns/net with \
             the PID, /run/netns/NAME, or the namespace's inode (`stat -L -c %i {}`)",
            path.display(),
            path.display()
        )
    })
}

/// `address` by the inode of `held`, the namespace its actuator holds open, when `address`
/// names a namespace by a path that no longer names that one: deleted or made again for another
/// namespace between the actuator's open and now (`ip netns del` while a change is made). The
/// journal keys a path by the inode it names ([`target_key`]); a path that names none was
/// journaled as itself, and the value check then took the next namespace of that name for
/// someone's change, every window (s54 story AP F2). `None`: `address` as it is.
fn pinned_to_held_namespace(address: &ParamAddress, held: Option<u64>) -> Option<ParamAddress> {
    let held = held?;
    let Target::Netns {
        netns: NetnsRef::Path(_),
    } = &address.target
    else {
        return None;
    };
    let by_inode = ParamAddress {
        name: address.name.clone(),
        target: Target::Netns {
            netns: NetnsRef::Inode(held),
        },
    };
    (target_key(address) != target_key(&by_inode)).then_some(by_inode)
}

/// The report of turning switch `s` (a change that turned it off) back on, not written.
fn switch_report(s: &Intent, status: ChangeStatus) -> ChangeReport {
    let mut report = ChangeReport::new(&s.address, &s.before, status);
    report.before = Some(s.after.clone());
    report
}

/// A parameter that [`Actuator::switch_in_the_way`] can name: adaptive moderation.
pub fn is_switch(address: &ParamAddress) -> bool {
    address.kind() == crate::actuate::param::ParamKind::Ethtool
        && address.name.starts_with("adaptive-")
}

#[cfg(test)]
pub(crate) mod cpufreq_tests;
#[cfg(test)]
pub(crate) mod tests;
