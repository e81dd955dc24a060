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
//! `after_intent`, `after_write` or `after_outcome`, the process sends itself SIGKILL at that point
//! of every change, as `kill -9` would. It is compiled in (the root tests drive the real binary),
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
    AfterOutcome,
}

impl CrashPoint {
    pub const ENV: &'static str = "KPO_TEST_CRASH_AT";
    pub fn as_str(self) -> &'static str {
        match self {
            CrashPoint::AfterIntent => "after_intent",
            CrashPoint::AfterWrite => "after_write",
            CrashPoint::AfterOutcome => "after_outcome",
        }
    }
}

fn crash_point(at: CrashPoint) {
    static WANT: OnceLock<Option<String>> = OnceLock::new();
    let want = WANT.get_or_init(|| std::env::var(CrashPoint::ENV).ok());
    if want.as_deref() == Some(at.as_str()) {
        eprintln!(
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
    /// The write failed for a while, not for its value ([`ActuateError::is_passing`]), and
    /// changed nothing: the same change may pass later.
    #[serde(skip)]
    pub failed_for_a_while: bool,
}

impl ChangeReport {
    fn new(address: &ParamAddress, after: &Value, status: ChangeStatus) -> Self {
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
        if let Some(rb) = &self.read_back {
            s.push_str(&format!(" (read back {rb})"));
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
        }
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
        self.propose_inner(p, Approval::Approved(advised_in), None, None)
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
        if let Some(why) = names_its_opener(&p.address) {
            let report = ChangeReport::new(&p.address, &p.value, ChangeStatus::Refused);
            let r = match self.policy.decide_revert(&p.address) {
                Decision::Refused(r) => r,
                _ => Refusal::Invalid { why },
            };
            return self.refuse(p, None, r, report);
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
            return self.refuse(p, None, r, report);
        }
        let mut actuator = match self.actuators.open(&p.address) {
            Ok(a) => a,
            Err(e) => return Ok(self.fail_early(p, None, e.to_string(), report)),
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
                return self.refuse(p, None, Refusal::Invalid { why }, report);
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
        let value = match p.value.commas_as_integers(&before) {
            Some(value) => value,
            None => match &p.value {
                Value::Word(w) if crate::actuate::sysctl::is_integer_list(&p.address) => {
                    Value::parse(w)
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
                return self.refuse(p, Some(&before), r, report);
            }
        }
        if !shape_fits(&p.address, &before, &p.value) {
            let r = Refusal::Invalid {
                why: shape_mismatch(&p.address, &before, &p.value),
            };
            return self.refuse(p, Some(&before), r, report);
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
            return self.refuse(p, Some(&before), Refusal::Invalid { why }, report);
        }
        if let Err(e) = actuator.validate(&p.value) {
            let r = Refusal::Invalid { why: e.to_string() };
            return self.refuse(p, Some(&before), r, report);
        }
        let mut ctx = self
            .journal
            .context(&p.address, &p.value, SystemTime::now());
        ctx.yielded |= self.someone_elses(p, &before);
        ctx.before = Some(before.clone());
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
                report.detail = Some("mode recommend: waits for an operator's approval".into());
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
        // An operator's refusals are journaled; an advisor's would flood it (events carry them).
        let recorded = if p.source == Source::Operator {
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

    /// Intent, write, read-back, outcome. `before` is the kernel's value just read.
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
    ) -> Result<ChangeReport, ChangeError> {
        let is_revert = matches!(kind, IntentKind::Revert { .. });
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
        let id = match self.journal.record_intent_making_way(
            address,
            before,
            after,
            source,
            reason,
            kind.clone(),
            made_way_for,
            netns_cookie,
            device,
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
        if let (true, Some(ahead)) = (watched, &self.before_write) {
            let signals = self.policy.guard_signals_for(address, source);
            ahead.before_write(id, address, before, after, signals.as_deref());
        }
        let written = if is_revert {
            actuator.revert(after)
        } else {
            actuator.apply(after)
        };
        crash_point(CrashPoint::AfterWrite);
        let outcome = match written {
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
                let detail =
                    format!("{what}; the journal could not record it ({e}): the next start will");
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
            if let Err(e) = self.journal.record_read_back(id, seen) {
                tracing::warn!(
                    "{}: the journal could not record that {seen} was read back ({e}); putting \
                     {before} back anyway",
                    actuator.address()
                );
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
                        IntentKind::Revert { of: Some(of) } => {
                            format!("kpo revert {of} tries again")
                        }
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

    /// Puts back the value change `id` replaced: an operator's `kpo revert ID`, whatever the
    /// kernel has now.
    pub fn revert(
        &mut self,
        id: u64,
        source: Source,
        reason: &str,
    ) -> Result<ChangeReport, ChangeError> {
        self.revert_change(id, source, reason, false)
    }

    /// Reverts change `id` only while the kernel still has the value KPO last applied to that
    /// parameter. The agent's own reverts (the guard, the optimizer) go through here: a value
    /// someone else wrote since is theirs, and is not overwritten with KPO's old one. Such a
    /// revert is `Skipped`, with `read_back` the kernel's value; the caller yields to them.
    pub fn revert_own(
        &mut self,
        id: u64,
        source: Source,
        reason: &str,
    ) -> Result<ChangeReport, ChangeError> {
        self.revert_change(id, source, reason, true)
    }

    fn revert_change(
        &mut self,
        id: u64,
        source: Source,
        reason: &str,
        only_ours: bool,
    ) -> Result<ChangeReport, ChangeError> {
        // An archived change is history like a live one: reverting it is the same request,
        // read from the archive (docs/journal.md, "Archiving").
        let intent = match self.journal.intent(id) {
            Some(i) => i.clone(),
            None => match self.journal.archived_intent(id) {
                Some(i) => i,
                // `kpo journal` lists refusals among the changes, with ids of their own: "no
                // change #2" of a line the operator can see reads as a lost journal.
                None => {
                    let refusal = self.journal.records().iter().find_map(|r| match r {
                        crate::journal::Record::Refused {
                            id: rid,
                            address,
                            value,
                            ..
                        } if *rid == id => Some(format!(
                            "it is the refusal of {address} = {value}, which wrote nothing"
                        )),
                        _ => None,
                    });
                    return Err(match refusal {
                        Some(what) => JournalError::NotAChange { id, what },
                        None => JournalError::NoSuchChange(id),
                    }
                    .into());
                }
            },
        };
        if let (false, IntentKind::Revert { of }) = (only_ours, &intent.kind) {
            return Err(JournalError::IsARevert {
                id,
                of: *of,
                name: intent.address.to_string(),
                value: intent.before.to_string(),
            }
            .into());
        }
        // Its namespace by the inode it was changed in when the path no longer names it.
        let address = reach(&intent.address, &intent.key);
        if self.journal.before_this_boot(&intent) {
            // The reboot took its value away; what it found before is not this boot's to have
            // back, and this boot's own value stays.
            let mut report = ChangeReport::new(&address, &intent.before, ChangeStatus::Skipped);
            report.detail = Some(format!(
                "change {id} was made before the machine rebooted; the reboot undid it, and this \
                 boot's value stays"
            ));
            return Ok(report);
        }
        let ours = only_ours
            .then(|| self.journal.param_by_key(&intent.key))
            .flatten()
            .and_then(|p| p.last_applied.clone());
        if only_ours && ours.is_none() {
            // Handed back by `kpo resume`, or taken by a reboot: nothing in the kernel is KPO's
            // to take back, and writing `before` would overwrite whoever's value is there.
            let mut report = ChangeReport::new(&address, &intent.before, ChangeStatus::Skipped);
            report.detail =
                Some("KPO has no value of its own there now; nothing to take back".into());
            return Ok(report);
        }
        if let Some(why) = only_ours.then(|| self.held_by_another(&intent)).flatten() {
            let mut report = ChangeReport::new(&address, &intent.before, ChangeStatus::Skipped);
            report.detail = Some(why);
            return Ok(report);
        }
        if let Some(report) = self.not_on_its_device(&address, &intent.before, &intent)? {
            return Ok(report);
        }
        self.restore(
            &address,
            &intent.before,
            source,
            reason,
            Some((id, intent.netns_cookie)),
            ours,
        )
    }

    /// Why a revert of `intent` would undo someone else's decision, if it would: the parameter is
    /// yielded to a person, or a later change of another source holds it (an operator's `kpo
    /// apply` after an optimizer trial). A later change of the same source is the same
    /// decision-maker's, as is a value a revert put back (no change holds it).
    fn held_by_another(&self, intent: &Intent) -> Option<String> {
        let p = self.journal.param_by_key(&intent.key)?;
        if p.yielded.is_some() {
            return Some("yielded to a person; left as it is".into());
        }
        let holder = self.journal.intent(p.holding?)?;
        (holder.id != intent.id && holder.source != intent.source).then(|| {
            format!(
                "change #{} by {} holds it since; left as it is",
                holder.id,
                holder.source.as_str()
            )
        })
    }

    /// The journal keys with an intent not settled yet (an interrupted write: its value unknown).
    fn keys_with_an_unsettled_intent(&self) -> std::collections::BTreeSet<String> {
        self.journal
            .incomplete()
            .into_iter()
            .map(|i| i.key)
            .collect()
    }

    /// Puts every parameter KPO changed back to its original value (the value before KPO first
    /// changed it), except those yielded to a person: `kpo revert --all`.
    ///
    /// Every intent records an original, even one whose write the kernel refused or that was put
    /// back: such a parameter still has the value KPO found, and a value written there since is
    /// someone else's, not KPO's to overwrite (and a change of KPO's from it starts a new
    /// original, that value). Only a parameter KPO's write took effect on, or whose interrupted
    /// write is not settled yet (its value unknown), is put back.
    pub fn revert_all(&mut self, reason: &str) -> Result<Vec<ChangeReport>, ChangeError> {
        let unsettled = self.keys_with_an_unsettled_intent();
        let all: Vec<ParamAddress> = self
            .journal
            .params()
            .filter(|p| p.original.is_some())
            .filter(|p| p.changed_by_kpo() || unsettled.contains(&p.key))
            .filter_map(ParamState::reach)
            .collect();
        // Every parameter has its report, what was done before a journal failure too.
        Ok(self
            .restore_originals(all, Source::Operator, reason, false)
            .unwrap_or_else(|mut stopped| {
                stopped.reports.append(&mut stopped.not_tried);
                stopped.reports
            }))
    }

    /// Puts these parameters back to their originals. With `only_ours`, each only while the
    /// kernel still has KPO's last value ([`ChangePath::revert_own`]): the agent's
    /// `on_exit = "revert"`, which is journaled as source `operator`.
    ///
    /// Switches (adaptive moderation) go last, after the values they govern: turned on first, they
    /// would refuse those writes. A cpufreq policy's two limits go in an order each write passes,
    /// and its governor and energy-performance preference in one the driver takes (the
    /// preference while the governor is not `performance`:
    /// [`crate::actuate::cpufreq::written_after_its_coupled_attr`]). A switch stays off while a
    /// value it governs was not put back (yielded to a person, left, failed): turned on, the NIC
    /// would move that value.
    ///
    /// A journal failure stops it ([`Stopped`]): every write is journaled first.
    pub fn restore_originals(
        &mut self,
        addresses: Vec<ParamAddress>,
        source: Source,
        reason: &str,
        only_ours: bool,
    ) -> Result<Vec<ChangeReport>, Stopped> {
        // A cpufreq policy's two limits in an order each write passes (as the optimizer's
        // trials do): the direction is from the kernel's value now to the original.
        let lowering: Vec<bool> = addresses
            .iter()
            .map(|a| {
                // Only cpufreq limits are ordered: nothing else is read (a namespace entered) for it.
                if a.kind() != crate::actuate::param::ParamKind::Cpufreq {
                    return false;
                }
                let original = self.journal.param_state(a).and_then(|s| s.original.clone());
                match (
                    self.read(a).ok().and_then(|v| v.as_int()),
                    original.and_then(|v| v.as_int()),
                ) {
                    (Some(now), Some(original)) => original < now,
                    _ => false,
                }
            })
            .collect();
        // A policy's governor and energy-performance preference in an order the driver takes:
        // by where the governor goes back to.
        let governors_to: Vec<(ParamAddress, Value)> = addresses
            .iter()
            .filter(|a| a.kind() == crate::actuate::param::ParamKind::Cpufreq)
            .filter(|a| a.name == crate::actuate::cpufreq::GOVERNOR)
            .filter_map(|a| {
                let original = self.journal.param_state(a)?.original.clone()?;
                Some((a.clone(), original))
            })
            .collect();
        let mut ordered: Vec<(ParamAddress, bool)> = addresses.into_iter().zip(lowering).collect();
        ordered.sort_by_key(|(a, lowering)| {
            // The governor of a preference's policy, or the governor itself.
            let governor = crate::actuate::cpufreq::governor_of(a).unwrap_or_else(|| a.clone());
            let governor_to = governors_to
                .iter()
                .find(|(g, _)| *g == governor)
                .map(|(_, to)| to);
            (
                is_switch(a),
                crate::actuate::cpufreq::written_later(a, *lowering),
                crate::actuate::cpufreq::written_after_its_coupled_attr(a, governor_to),
            )
        });
        let addresses: Vec<ParamAddress> = ordered.into_iter().map(|(a, _)| a).collect();
        let mut out: Vec<ChangeReport> = Vec::new();
        let mut addresses = addresses.into_iter();
        while let Some(address) = addresses.next() {
            let original = self
                .journal
                .param_state(&address)
                .and_then(|s| s.original.clone());
            match self.restore_original(&address, source, reason, only_ours, &out) {
                Ok(report) => out.push(report),
                Err(error) => {
                    // Nothing more is written without its record; what was done stays reported.
                    out.push(self.stopped_at(&address, original, &error));
                    let not_tried = addresses.map(|a| self.not_tried(&a, &error)).collect();
                    return Err(Stopped {
                        reports: out,
                        not_tried,
                        error,
                    });
                }
            }
        }
        Ok(out)
    }

    /// One parameter of [`ChangePath::restore_originals`]; `out`: the reports of those before it.
    fn restore_original(
        &mut self,
        address: &ParamAddress,
        source: Source,
        reason: &str,
        only_ours: bool,
        out: &[ChangeReport],
    ) -> Result<ChangeReport, ChangeError> {
        let address = address.clone();
        // Not left out without a word: `kpo revert --all` would say there was nothing to do.
        let Some((state, original)) = self
            .journal
            .param_state(&address)
            .and_then(|s| Some((s.clone(), s.original.clone()?)))
        else {
            let mut r =
                ChangeReport::new(&address, &Value::Word(String::new()), ChangeStatus::Failed);
            r.detail = Some(format!(
                "the journal has no original for {} (key {}); not put back",
                address,
                target_key(&address)
            ));
            return Ok(r);
        };
        let skipped = |why: String| {
            let mut r = ChangeReport::new(&address, &original, ChangeStatus::Skipped);
            r.detail = Some(why);
            r
        };
        if self.settle_if_namespace_gone(&address)? {
            return Ok(skipped(
                "its network namespace is gone (the inode names another one now); nothing to put back"
                    .into(),
            ));
        }
        if state.yielded.is_some() {
            // The value that stays, as the other skipped reports show it: the report's own
            // value is the original that was not written.
            let mut r = skipped(
                "yielded to an administrator; their value stays (kpo resume PARAM hands it back)"
                    .into(),
            );
            r.read_back = self.read(&address).ok();
            return Ok(r);
        }
        // The original is the value of the device its first change was made on; with that
        // change archived, the device of the latest (not read from the archive: a pass over
        // every parameter would read it through for each). Asked before a switch is read by
        // its name: the name may name another device now.
        let first = state
            .original_id
            .and_then(|id| self.journal.intent(id))
            .or_else(|| {
                self.journal.records().iter().rev().find_map(|r| match r {
                    crate::journal::Record::Intent(i) if i.key == state.key => Some(i),
                    _ => None,
                })
            })
            .cloned();
        if let Some(first) = first {
            if let Some(report) = self.not_on_its_device(&address, &original, &first)? {
                return Ok(report);
            }
        }
        if is_switch(&address) && !self.read(&address).is_ok_and(|now| now == original) {
            use crate::actuate::coalesce::switch_governs;
            // A governed value this pass did not put back, or one outside it that is a
            // person's (yielded) or that KPO still holds away from its original (its
            // `on_exit` keeps it).
            let in_pass = out.iter().find(|r| {
                switch_governs(&address, &r.address)
                    && !matches!(r.status, ChangeStatus::Reverted | ChangeStatus::Unchanged)
            });
            let passed: Vec<String> = out.iter().map(|r| ChangePath::key(&r.address)).collect();
            let held = in_pass.map(|r| r.address.to_string()).or_else(|| {
                self.journal
                    .params()
                    // Only what the switch governs is looked at (and read).
                    .filter(|p| {
                        p.address
                            .as_ref()
                            .is_some_and(|a| switch_governs(&address, a))
                    })
                    .filter(|p| {
                        let kept = !passed.contains(&p.key);
                        p.yielded.is_some()
                            || (kept
                                && p.last_applied.is_some()
                                && p.last_applied != p.original)
                            // Handed back by `kpo resume` with a person's value in it.
                            || (kept
                                && p.last_applied.is_none()
                                && p.original.as_ref().is_some_and(|original| {
                                    // Unreadable counts as held: turned on, the switch
                                    // would move whatever is there.
                                    p.address.as_ref().is_some_and(|a| {
                                        self.read(a).map_or(true, |now| &now != original)
                                    })
                                }))
                    })
                    .find_map(|p| p.address.as_ref().map(ToString::to_string))
            });
            if let Some(value) = held {
                return Ok(skipped(format!(
                    "stays as it is: {value} was not put back, and turned on this would move it"
                )));
            }
        }
        let only_over = if only_ours { state.last_applied } else { None };
        self.restore(
            &address,
            &original,
            source,
            reason,
            state.original_id.map(|id| {
                let cookie = self.journal.intent(id).and_then(|i| i.netns_cookie);
                (id, cookie)
            }),
            only_over,
        )
    }

    /// The report of the parameter a journal failure stopped `restore_originals` on: its
    /// `change` event says what became of the write; the kernel says whether it was put back.
    fn stopped_at(
        &self,
        address: &ParamAddress,
        original: Option<Value>,
        error: &ChangeError,
    ) -> ChangeReport {
        let original = original.unwrap_or(Value::Word(String::new()));
        let now = self.read(address).ok();
        let mut r = ChangeReport::new(address, &original, ChangeStatus::Failed);
        if now.as_ref() == Some(&original) {
            // The revert was written and its outcome could not be recorded.
            r.status = ChangeStatus::Reverted;
            r.read_back = now;
            r.detail = Some(format!(
                "put back; the journal could not record it ({error}): the next start will"
            ));
        } else {
            r.before = now;
            r.detail = Some(format!("not put back: {error}"));
        }
        r
    }

    /// The report of a parameter `restore_originals` did not try after a journal failure.
    fn not_tried(&self, address: &ParamAddress, error: &ChangeError) -> ChangeReport {
        let original = self
            .journal
            .param_state(address)
            .and_then(|s| s.original.clone())
            .unwrap_or(Value::Word(String::new()));
        let mut r = ChangeReport::new(address, &original, ChangeStatus::Failed);
        r.before = self.read(address).ok();
        r.detail = Some(format!(
            "not put back: not tried, the journal failed before it ({error}){}",
            remedy_unless_said(error, "it")
        ));
        r
    }

    /// Writes `value` back as a revert; `of`: the change it undoes, and that change's network
    /// namespace cookie (read by the caller, from the archive for an archived change).
    fn restore(
        &mut self,
        address: &ParamAddress,
        value: &Value,
        source: Source,
        reason: &str,
        of: Option<(u64, Option<u64>)>,
        only_over: Option<Value>,
    ) -> Result<ChangeReport, ChangeError> {
        let mut report = ChangeReport::new(address, value, ChangeStatus::Refused);
        if let Decision::Refused(r) = self.policy.decide_revert(address) {
            report.refusal = Some(r);
            return Ok(report);
        }
        let p = Proposal {
            address: address.clone(),
            value: value.clone(),
            source,
            reason: reason.to_string(),
        };
        let mut actuator = match self.actuators.open(address) {
            Ok(a) => a,
            Err(e) if self.namespace_gone_for_certain(address, &target_key(address)) => {
                // Its values died with it: nothing is left to put back, now or later.
                report.status = ChangeStatus::Skipped;
                report.detail = Some(format!("{NAMESPACE_GONE}; nothing to put back ({e})"));
                return Ok(report);
            }
            Err(e) => return Ok(self.fail_early(&p, None, e.to_string(), report)),
        };
        // What is put back belongs to the namespace it was taken from: not into one that has
        // its inode now (the journal settled already, or settles now, or the change undone was
        // made in another namespace than the one there now).
        let cookie = actuator.netns_cookie();
        let replaced = self.namespace_replaced(address, cookie)?;
        let made_elsewhere = of
            .and_then(|(_, cookie)| cookie)
            .zip(cookie)
            .is_some_and(|(then, now)| then != now);
        if replaced || made_elsewhere {
            report.status = ChangeStatus::Skipped;
            report.detail = Some(
                "its network namespace is gone (the inode names another one now); nothing to put back"
                    .into(),
            );
            return Ok(report);
        }
        let before = match actuator.read() {
            Ok(v) => v,
            Err(e) => return Ok(self.fail_early(&p, None, e.to_string(), report)),
        };
        if &before == value {
            report.status = ChangeStatus::Unchanged;
            report.before = Some(before);
            report.detail = Some("the kernel already has this value".into());
            return Ok(report);
        }
        if let Ok(Some((switch, _))) = actuator.switch_in_the_way() {
            // A revert never turns a switch off: with adaptive moderation on, the NIC sets it.
            report.status = ChangeStatus::Skipped;
            report.before = Some(before);
            report.detail = Some(format!(
                "{switch} is on and sets it; a revert does not turn it off"
            ));
            return Ok(report);
        }
        if let Some(ours) = only_over.filter(|ours| ours != &before) {
            report.status = ChangeStatus::Skipped;
            let unsettled = self
                .journal
                .param_state(address)
                .is_some_and(|p| p.unsettled.is_some());
            report.detail = Some(if unsettled {
                // Left as it is all the same: it may be a person's value, which is not KPO's to
                // overwrite. But not said to be theirs: it may be KPO's own.
                format!(
                    "the kernel has {before}, not the {ours} KPO last applied as far as the \
                     journal knows; a damaged journal line may have lost a later change of KPO's \
                     own here, so {before} may be KPO's value as well as someone else's: left as \
                     it is ({} puts {value} back)",
                    self.put_back_command(value, of.map(|(id, _)| id))
                )
            } else if crate::actuate::cpufreq::governor_of(address).is_some()
                && self.moved_by_the_kernel(address)
            {
                // Nobody's value: written now, it would be refused (EBUSY).
                format!(
                    "the kernel has {before}, not the {ours} KPO applied: the cpufreq driver holds \
                     it at {before} under the performance governor KPO set, and gives {ours} \
                     back when the governor leaves performance; left as it is"
                )
            } else {
                format!(
                    "the kernel has {before}, not the {ours} KPO applied: someone else changed \
                     it, and their value stays"
                )
            });
            report.read_back = Some(before.clone());
            report.before = Some(before);
            return Ok(report);
        }
        if let Some(why) = self.crosses_the_other_limit(address, value) {
            return self.refuse(&p, Some(&before), Refusal::Invalid { why }, report);
        }
        self.execute(
            actuator,
            address,
            &before,
            value,
            source,
            reason,
            IntentKind::Revert {
                of: of.map(|(id, _)| id),
            },
            report,
            None,
        )
    }

    /// Why putting `value` back into a cpufreq frequency limit would cross the other limit of its
    /// policy as it is now, if it would, naming what holds the other limit there as far as the
    /// journal knows. The kernel had `value` with another value of the other limit: written now,
    /// it would be taken by moving that one (the actuator refuses it too, after the intent; here
    /// it is refused before, with the change to undo first).
    fn crosses_the_other_limit(&self, address: &ParamAddress, value: &Value) -> Option<String> {
        use crate::actuate::cpufreq::{crossing_effect, crossing_why, other_limit};
        let other = other_limit(address)?;
        let khz = i128::from(value.as_int()?);
        // Unreadable: the actuator's own check, which reads it again, decides.
        let now = i128::from(self.read(&other).ok()?.as_int()?);
        let why = crossing_why(&address.name, khz, now)?;
        let state = self.journal.param_state(&other);
        let holder = match state {
            Some(s) if s.yielded.is_some() => {
                format!(" (a person's value: {} is yielded to them)", other.name)
            }
            Some(s) => s
                .holding
                .map(|id| format!(" (change #{id} set it: kpo revert {id} first)"))
                .unwrap_or_default(),
            None => String::new(),
        };
        Some(format!(
            "putting back {value}: {why}{holder}; {}",
            crossing_effect(&address.name, khz, now)
        ))
    }

    /// The operator's command that writes `value` back whatever the kernel has: `kpo revert ID`
    /// of change `of` when the value it replaced is `value` (its intent live or archived), else
    /// `kpo revert --all` (which puts every parameter's original back).
    fn put_back_command(&self, value: &Value, of: Option<u64>) -> String {
        let replaced = |id: u64| {
            let before = match self.journal.intent(id) {
                Some(i) => Some(i.before.clone()),
                None => self.journal.archived_intent(id).map(|i| i.before),
            };
            before.as_ref() == Some(value)
        };
        match of.filter(|&id| replaced(id)) {
            Some(id) => format!("kpo revert {id}"),
            None => "kpo revert --all, with every other parameter's original,".into(),
        }
    }

    /// Settles intents that have no outcome (the process died mid-change) against the kernel's
    /// value now: the new value means applied, the value before means not applied, anything else
    /// is journaled as failed with what was found. An intent whose parameter cannot be read is
    /// left for the next start, with a warning.
    pub fn reconcile(&mut self) -> Result<Vec<ChangeReport>, ChangeError> {
        let mut out = Vec::new();
        // Newest first: an older incomplete intent of the same parameter is judged knowing what
        // the newer ones did (one that took effect owns the kernel's value now).
        let mut incomplete = self.journal.incomplete();
        incomplete.sort_by_key(|i| std::cmp::Reverse(i.id));
        for intent in incomplete {
            out.push(self.reconcile_one(&intent)?);
        }
        out.reverse();
        self.turn_back_on_switches_left_off(&mut out)?;
        Ok(out)
    }

    /// Turns back on each switch KPO turned off to make way for a value (`made_way_for`) that was
    /// then never set: the agent stopped between the two changes (killed, or a power loss), or
    /// the journal could not record the value's change and then not the switch's way back
    /// either. The running agent turns such a switch back on at once when the value does not
    /// take; this ends a stop in between the same way, at the next start, after the interrupted
    /// changes are settled. Only a switch KPO still holds off (not yielded, not turned back on
    /// since) over values none of which KPO set after it (no change of theirs took effect
    /// since, none left unsettled): a value set with it off relies on it. Each is a revert of
    /// the switch's change, journaled and reported with the interrupted changes; one the kernel
    /// has on already (someone else's doing) is left to the value check.
    fn turn_back_on_switches_left_off(
        &mut self,
        out: &mut Vec<ChangeReport>,
    ) -> Result<(), ChangeError> {
        use crate::actuate::coalesce::switch_governs;
        let unsettled = self.keys_with_an_unsettled_intent();
        let left_off: Vec<Intent> = self
            .journal
            .records()
            .iter()
            .filter_map(|r| match r {
                crate::journal::Record::Intent(i) if i.made_way_for.is_some() => Some(i),
                _ => None,
            })
            .filter(|s| {
                let holds = self
                    .journal
                    .param_by_key(&s.key)
                    .is_some_and(|state| state.still_holds(s.id, &s.after));
                let switch = reach(&s.address, &s.key);
                let relied_on = self.journal.params().any(|p| {
                    p.address
                        .as_ref()
                        .is_some_and(|a| switch_governs(&switch, a))
                        && (unsettled.contains(&p.key)
                            // A damaged line may have held a change of it made with the switch
                            // off: unknown counts as relied on.
                            || p.unsettled.is_some()
                            || p.applied.last().is_some_and(|(id, _)| *id > s.id))
                });
                holds && !relied_on
            })
            .cloned()
            .collect();
        for s in left_off {
            let value = s.made_way_for.as_deref().unwrap_or_default();
            let stopped = format!(
                "{value} was not set after {} was turned off for it (#{}): the agent stopped, or \
                 the journal could not record the change, in between",
                s.address, s.id
            );
            // The device it was turned off on, where the journal knows it: a name that names
            // nothing, or another device, is not written to.
            let left = match s.device.map(|seen| self.device_now(&s.address, &seen)) {
                None | Some(DeviceNow::Here) => None,
                Some(DeviceNow::Gone(gone)) => Some(self.settle_gone_switch(&s, &stopped, &gone)?),
                Some(DeviceNow::Unsure(why)) => {
                    let mut report = switch_report(&s, ChangeStatus::Failed);
                    report.detail = Some(format!(
                        "{stopped}; not turned back on: {why}; tried again at the next start"
                    ));
                    Some(report)
                }
            };
            if let Some(report) = left {
                tracing::warn!("journal #{} ({}): {}", s.id, s.address, report.describe());
                out.push(report);
                continue;
            }
            let why = format!("{stopped}; turning it back on");
            let mut report = self.revert_own(s.id, s.source, &why)?;
            // Said with it, as a reconciled change says why (`kpo: reconciled: ...`).
            report.detail.get_or_insert(why);
            // Unchanged: the kernel has it on already (someone else's doing), nothing written,
            // nothing to say at every start.
            if report.status != ChangeStatus::Unchanged {
                tracing::warn!("journal #{} ({}): {}", s.id, s.address, report.describe());
                out.push(report);
            }
        }
        Ok(())
    }

    /// Switch `s`, left off by a stop (`stopped` says how), on a device gone for certain from
    /// under its name (`gone` says how): settled once, journaled as gone, so that KPO no longer
    /// holds it and no later start tries again. The switch left off is the old device's
    /// (deleted, or moved elsewhere with its settings), not the new one's under the name.
    fn settle_gone_switch(
        &mut self,
        s: &Intent,
        stopped: &str,
        gone: &str,
    ) -> Result<ChangeReport, ChangeError> {
        let why = format!(
            "{stopped}; {gone}: the switch left off is the old device's (deleted, or moved \
             elsewhere with its settings), not the new one's: nothing to turn back on"
        );
        self.journal.forget_gone_device(&s.key, &why)?;
        let mut report = switch_report(s, ChangeStatus::Skipped);
        report.detail = Some(why);
        Ok(report)
    }

    /// An intent without an outcome whose parameter's next change, which took effect, found the
    /// value it wrote in place: it was done, and its outcome's line was lost (damaged) or never
    /// written (a revert whose outcome the running agent could not record is left done; a change
    /// whose outcome it could not record, and whose value before it could not put back, leaves
    /// its write). Journaled as done without reading the kernel, whose value now is the later
    /// changes'. A running agent that cannot write a change's outcome otherwise puts its value
    /// before back, so the next change of one it could not record finds the value before, not
    /// this one's.
    fn found_in_place_by_the_next_change(
        &mut self,
        i: &Intent,
        report: &mut ChangeReport,
    ) -> Result<Option<ChangeReport>, ChangeError> {
        if self.journal.before_this_boot(i) || !self.journal.superseded(i) {
            return Ok(None);
        }
        // On the same device: a NIC's next change made on a new device under the name found
        // that device's value, which says nothing of the old one's write. An intent without a
        // device (an old journal's) is taken as on the same one.
        let same_device = |d: Option<DeviceSeen>| match (d, i.device) {
            (Some(next), Some(this)) => next == this,
            _ => true,
        };
        let Some(next) = self
            .journal
            .next_change(i)
            .filter(|(n, d)| n.before == i.after && same_device(*d))
            .map(|(n, _)| n)
        else {
            return Ok(None);
        };
        // Its outcome's line was dropped as damaged, or never written: a running agent that
        // could not record a revert's outcome leaves the revert done, and one that could not
        // record a change's, nor put its value before back, leaves its write.
        let why = if self.journal.lost_outcome(i.id).is_some() {
            format!(
                "its outcome line was damaged; the next change found its value ({}) in place",
                next.before
            )
        } else {
            format!(
                "its outcome was not recorded; the next change found its value ({}) in place",
                next.before
            )
        };
        tracing::warn!("journal #{} ({}): {why}", i.id, i.address);
        report.detail = Some(why.clone());
        report.read_back = Some(i.after.clone());
        let outcome = match i.kind {
            IntentKind::Revert { .. } => {
                report.status = ChangeStatus::Reverted;
                Outcome::Reverted {
                    why,
                    read_back: Some(i.after.clone()),
                }
            }
            IntentKind::Change => {
                report.status = ChangeStatus::Applied;
                Outcome::Applied {
                    read_back: i.after.clone(),
                    reconciled: true,
                    why: Some(why),
                }
            }
        };
        self.journal.record_outcome(i.id, outcome)?;
        Ok(Some(report.clone()))
    }

    /// Journals the quarantines of guard reverts that an agent killed right after the revert
    /// left out ([`crate::journal::Journal::restore_guard_quarantines`]), with the policy's
    /// length, each logged. Run at start, after [`ChangePath::reconcile`] (a guard revert it
    /// found done counts).
    pub fn restore_guard_quarantines(&mut self) -> Result<(), ChangeError> {
        let base = self.policy.guard.quarantine;
        for restored in self.journal.restore_guard_quarantines(base)? {
            tracing::warn!("journal: {restored}");
        }
        Ok(())
    }

    fn reconcile_one(&mut self, i: &Intent) -> Result<ChangeReport, ChangeError> {
        // Its namespace by the inode it was changed in when the path no longer names it.
        let address = reach(&i.address, &i.key);
        let mut report = ChangeReport::new(&address, &i.after, ChangeStatus::Skipped);
        report.journal_id = Some(i.id);
        report.before = Some(i.before.clone());
        if let Some(found) = self.found_in_place_by_the_next_change(i, &mut report)? {
            return Ok(found);
        }
        // Its outcome's line was dropped as damaged: the change ran to its end, and saying it was
        // interrupted would mislead whoever reads `kpo journal` later.
        let lost = self.journal.lost_outcome(i.id).map(str::to_string);
        // What the kernel has now says nothing about the interrupted write when the kernel was
        // restarted since (this boot's value), or when the namespace it went to is gone (the
        // inode names another one now): failed, without reading.
        let what = lost.as_deref().unwrap_or("interrupted");
        let gone = if self.journal.before_this_boot(i) {
            Some(format!(
                "{what}, then the machine rebooted: the change did not outlive the boot"
            ))
        } else if self.journal.superseded(i) {
            // Left without an outcome by a running agent whose journal could not record it (the
            // change was put back then), and followed by later changes of the same parameter: the
            // kernel's value now is theirs, not this one's.
            Some(match &lost {
                Some(lost) => format!(
                    "{lost}, and later changes of the parameter followed, not from its value"
                ),
                None => {
                    "its outcome could not be recorded, and later changes of the parameter followed"
                        .to_string()
                }
            })
        } else {
            match (i.netns_cookie, self.netns_cookie(&address)) {
                (Some(then), Some(now)) if then != now => Some(format!(
                    "{what}, then its network namespace went away (the inode names another one now)"
                )),
                // Gone with its values: no later start could read them either.
                (_, None) if self.namespace_gone_for_certain(&address, &i.key) => {
                    Some(format!("{what}, then {NAMESPACE_GONE}"))
                }
                _ => None,
            }
        };
        // A NIC's device, where the journal knows which it was: gone for certain from under its
        // name, the write's value is the old device's (no later start could read it either, the
        // name is another device's); renamed, or not known (absent: deleted or moved away),
        // the name is not read (it may name another device), and a later start tries again.
        let mut device_gone = false;
        let gone = match gone {
            Some(e) => Some(e),
            None => match i.device.map(|seen| self.device_now(&address, &seen)) {
                None | Some(DeviceNow::Here) => None,
                Some(DeviceNow::Gone(g)) => {
                    device_gone = true;
                    Some(format!(
                        "{what}, then {g}: the value is the old device's (deleted, or moved \
                         elsewhere with its settings), not the new one's"
                    ))
                }
                Some(DeviceNow::Unsure(why)) => {
                    let msg = format!(
                        "journal #{} ({}): interrupted change not reconciled: {why}; will retry \
                         at the next start",
                        i.id, i.address
                    );
                    tracing::warn!("{msg}");
                    report.detail = Some(msg);
                    return Ok(report);
                }
            },
        };
        if let Some(e) = gone {
            report.status = ChangeStatus::Failed;
            report.detail = Some(e.clone());
            tracing::warn!("journal #{} ({}): {e}", i.id, i.address);
            if device_gone {
                // Nothing KPO knew of it holds for the new device under the name. Journaled
                // before the outcome: a stop in between leaves the intent incomplete, so the next
                // start settles it again (a second `gone` changes nothing), where the other order
                // would lose the `gone` for good.
                self.journal.forget_gone_device(&i.key, &e)?;
            }
            self.journal.record_outcome(
                i.id,
                Outcome::Failed {
                    error: e.clone(),
                    reconciled: true,
                    left: None,
                },
            )?;
            return Ok(report);
        }
        let now = self.actuators.open(&address).and_then(|mut a| a.read());
        let now = match now {
            Ok(v) => v,
            Err(e) => {
                let msg = format!(
                    "journal #{} ({}): interrupted change not reconciled, the kernel cannot be read: {e}; will retry at the next start",
                    i.id, i.address
                );
                tracing::warn!("{msg}");
                report.detail = Some(msg);
                return Ok(report);
            }
        };
        report.read_back = Some(now.clone());
        let outcome = if now == i.after && matches!(i.kind, IntentKind::Revert { .. }) {
            report.status = ChangeStatus::Reverted;
            let why = match &lost {
                Some(lost) => format!("{lost}; the kernel has the value it put back: found done"),
                None => "revert interrupted after the kernel write; found done".to_string(),
            };
            report.detail = Some(why.clone());
            Outcome::Reverted {
                why,
                read_back: Some(now),
            }
        } else if now == i.after {
            report.status = ChangeStatus::Applied;
            let why = match &lost {
                Some(lost) => format!("{lost}; the kernel has its new value: found applied"),
                None => "interrupted after the kernel write; found applied".to_string(),
            };
            report.detail = Some(why.clone());
            Outcome::Applied {
                read_back: now,
                reconciled: true,
                why: Some(why),
            }
        } else if now == i.before {
            report.status = ChangeStatus::Failed;
            let e = match &lost {
                Some(lost) => format!(
                    "{lost}; the kernel has the value before: the write did not take, or was \
                     undone since"
                ),
                None => "interrupted before the kernel took the value; nothing changed".to_string(),
            };
            // A failed change's read-back is what KPO's write left, and this one left nothing.
            report.read_back = None;
            report.detail = Some(e.clone());
            Outcome::Failed {
                error: e,
                reconciled: true,
                left: None,
            }
        } else if self.journal.wrong_read_back(i.id) == Some(&now) {
            // KPO's own write, read back wrong, and the agent died before putting the value
            // before back: finish that.
            let why = format!(
                "interrupted after its write read back {now}, before the value before was put back"
            );
            // A put-back is a revert: only the deny-list stops it (a policy changed since).
            if let Decision::Refused(r) = self.policy.decide_revert(&i.address) {
                report.status = ChangeStatus::Failed;
                let error = format!("{why}; not put back: {r}; KPO's {now} stays");
                report.detail = Some(error.clone());
                tracing::warn!("journal #{} ({}): {error}", i.id, i.address);
                self.journal.record_outcome(
                    i.id,
                    Outcome::Failed {
                        error,
                        reconciled: true,
                        left: Some(now),
                    },
                )?;
                return Ok(report);
            }
            let mut actuator = match self.actuators.open(&address) {
                Ok(a) => a,
                Err(e) => {
                    report.detail = Some(format!(
                        "journal #{} ({}): {why}; cannot open it to put {} back: {e}; will retry \
                         at the next start",
                        i.id, i.address, i.before
                    ));
                    tracing::warn!("{}", report.detail.as_deref().unwrap_or(""));
                    return Ok(report);
                }
            };
            match self.put_back(
                &mut *actuator,
                i.id,
                &i.kind,
                &i.before,
                None,
                why,
                &mut report,
            ) {
                Outcome::Failed { error, left, .. } => Outcome::Failed {
                    error,
                    reconciled: true,
                    left,
                },
                done => done,
            }
        } else {
            report.status = ChangeStatus::Failed;
            // Without a read-back record this is either someone's value written while KPO was
            // down, or KPO's write stored as another value (rounded) just before the crash: the
            // two cannot be told apart, and only the first is ever written over by mistake, so
            // the value is left as someone else's.
            let e = format!(
                "{}; the kernel has {now}, neither the value before nor the new one \
                 (someone else changed it, or the kernel stored KPO's write as another value \
                 before it was recorded: left alone as someone else's)",
                lost.as_deref().unwrap_or("interrupted")
            );
            report.read_back = None;
            report.detail = Some(e.clone());
            Outcome::Failed {
                error: e,
                reconciled: true,
                left: None,
            }
        };
        // Info: the agent reports it as a `change` event too, and a command prints it itself
        // (`kpo: reconciled: ...`).
        tracing::info!(
            "journal #{} ({}): reconciled an interrupted change: {}",
            i.id,
            i.address,
            report.detail.as_deref().unwrap_or("")
        );
        self.journal.record_outcome(i.id, outcome)?;
        Ok(report)
    }

    /// Before a revert writes `value` to a NIC's parameter `address` by its name: where the
    /// device change `of` was made on is now, if the journal recorded it. `None`: written as
    /// before (not a NIC's, no device recorded, or the same device is there). Otherwise nothing
    /// is written, and the report is `failed`, with why: not `skipped`, which the optimizer's
    /// live loop takes for a revert whose value is in place, and nothing was put back. A device
    /// gone for certain from under its name (its index on no device, its name on another, which
    /// KPO never changed) is settled in the journal, once (a `gone` record, as reconciliation
    /// settles it), so that no later revert, guard or `on_exit` tries again. One not known to
    /// be there (renamed, neither its name nor its index here, which a device moved to another
    /// namespace with its settings looks like too, another namespace, a lookup that failed) is
    /// left as it is, for the next revert to try.
    fn not_on_its_device(
        &mut self,
        address: &ParamAddress,
        value: &Value,
        of: &Intent,
    ) -> Result<Option<ChangeReport>, ChangeError> {
        let Some(seen) = of.device else {
            return Ok(None);
        };
        let mut report = ChangeReport::new(address, value, ChangeStatus::Failed);
        match self.device_now(address, &seen) {
            DeviceNow::Here => return Ok(None),
            DeviceNow::Gone(gone) => {
                let why = format!(
                    "{gone}: KPO's value is the old device's (deleted, or moved elsewhere with \
                     its settings), not the new one's: nothing put back"
                );
                // Only what the journal holds of that device: not a newer device's changes
                // under the name, nor a second `gone` for a device settled already.
                if self.journal_holds_device(&of.key, &seen) {
                    tracing::info!("{address}: {why}; what KPO knew of it there is forgotten");
                    self.journal.forget_gone_device(&of.key, &why)?;
                }
                report.detail = Some(why);
            }
            DeviceNow::Unsure(why) => {
                report.detail = Some(format!("not put back: {why}"));
            }
        }
        Ok(Some(report))
    }

    /// Settles, after `key`'s own `gone` record, every other parameter of the same NIC name whose
    /// latest change was made on the device `seen`, gone from under its name (`why`): a device
    /// gone is gone for all its parameters, and a yield, a quarantine or a held switch left on
    /// the old device must not bind the new one under the name (a yielded key is never looked
    /// up again by the value check, nor put back, so nothing else would settle it). Each once:
    /// a parameter settled already, or changed on another device since, is left as it is.
    fn forget_the_devices_other_parameters(
        &mut self,
        key: &str,
        seen: &DeviceSeen,
        why: &str,
    ) -> Result<(), ChangeError> {
        let Some((iface, _)) = key.rsplit_once(':') else {
            return Ok(());
        };
        let prefix = format!("{iface}:");
        let mut others: Vec<String> = self
            .journal
            .records()
            .iter()
            .filter_map(|r| match r {
                crate::journal::Record::Intent(i)
                    if i.key != key
                        && i.key.starts_with(&prefix)
                        && matches!(i.address.target, Target::Nic { .. }) =>
                {
                    Some(i.key.clone())
                }
                _ => None,
            })
            .collect();
        others.sort();
        others.dedup();
        for other in others {
            if self.journal_holds_device(&other, seen) {
                tracing::info!("{other}: {why}; what KPO knew of it there is forgotten");
                self.journal.forget_gone_device(&other, why)?;
            }
        }
        Ok(())
    }

    /// Whether what the journal holds of NIC parameter `key` is of the device `seen`: its latest
    /// change was made on it, and no `gone` record settled it since. With every change of it
    /// archived, whether the journal still holds anything of it.
    fn journal_holds_device(&self, key: &str, seen: &DeviceSeen) -> bool {
        let latest = self.journal.records().iter().rev().find_map(|r| match r {
            crate::journal::Record::Intent(i) if i.key == key => {
                Some(i.device.as_ref() == Some(seen))
            }
            crate::journal::Record::Gone { key: gone, .. } if gone == key => Some(false),
            _ => None,
        });
        latest.unwrap_or_else(|| {
            self.journal
                .param_by_key(key)
                .is_some_and(|p| p.original.is_some() || p.last_applied.is_some())
        })
    }

    /// Where the device of NIC parameter `address` is now, for the agent's value check: the
    /// device its latest change was made on, where the journal recorded it. One gone for certain
    /// from under its name is settled in the journal (a `gone` record), once: the value under
    /// its name now is another device's, nobody's change. `Here` for a
    /// parameter the journal recorded no device of (not a NIC's, an old journal, settled
    /// already): it is read by its name, as before.
    pub fn settle_if_device_gone(
        &mut self,
        address: &ParamAddress,
    ) -> Result<DeviceNow, ChangeError> {
        if !matches!(address.target, Target::Nic { .. }) {
            return Ok(DeviceNow::Here);
        }
        let key = target_key(address);
        let Some(seen) = self.latest_device(&key) else {
            return Ok(DeviceNow::Here);
        };
        let now = self.device_now(address, &seen);
        if let DeviceNow::Gone(gone) = &now {
            let why = format!(
                "{gone}: KPO's value is the old device's (deleted, or moved elsewhere with its \
                 settings), not the new one's"
            );
            tracing::info!("{address}: {why}; what KPO knew of it there is forgotten");
            self.journal.forget_gone_device(&key, &why)?;
            self.forget_the_devices_other_parameters(&key, &seen, &why)?;
        }
        Ok(now)
    }

    /// The device the journal's latest change of NIC parameter `key` was made on, unless a
    /// `gone` record settled it since (or the change recorded none).
    fn latest_device(&self, key: &str) -> Option<DeviceSeen> {
        self.journal
            .records()
            .iter()
            .rev()
            .find_map(|r| match r {
                crate::journal::Record::Intent(i) if i.key == key => Some(i.device),
                crate::journal::Record::Gone { key: gone, .. } if gone == key => Some(None),
                _ => None,
            })
            .flatten()
    }

    /// Whether the device of NIC parameter `address`'s latest change is gone for certain from
    /// under its name now, asked without settling it ([`ChangePath::preview`]).
    fn nic_device_gone(&self, address: &ParamAddress) -> bool {
        if !matches!(address.target, Target::Nic { .. }) {
            return false;
        }
        self.latest_device(&target_key(address))
            .is_some_and(|seen| matches!(self.device_now(address, &seen), DeviceNow::Gone(_)))
    }

    /// Whether the device of NIC parameter `key` was settled as gone after change `id` (a
    /// revert of it found the device gone, [`ChangePath::revert_own`]): nothing of that change
    /// is left to revert, watch or quarantine.
    pub fn device_gone_since(&self, key: &str, id: u64) -> bool {
        // A NIC's key: its `gone` records are all of its device (a namespace's are not).
        let mut a_nics = false;
        self.journal.records().iter().any(|r| match r {
            crate::journal::Record::Intent(i) if i.id == id => {
                a_nics = matches!(i.address.target, Target::Nic { .. });
                false
            }
            crate::journal::Record::Gone { key: gone, .. } => a_nics && gone == key,
            _ => false,
        })
    }

    /// Where the device of NIC parameter `address`, `seen` when KPO changed it, is now
    /// ([`coalesce::device_now`]), asked in the network namespace the NICs' actuators act in.
    fn device_now(&self, address: &ParamAddress, seen: &DeviceSeen) -> DeviceNow {
        let Target::Nic { iface } = &address.target else {
            return DeviceNow::Unsure(format!("{address} is not a NIC's parameter"));
        };
        match self.actuators.coalesce_backend() {
            Ok(mut backend) => coalesce::device_now(&mut *backend, iface, seen),
            Err(e) => DeviceNow::Unsure(e.to_string()),
        }
    }

    /// Whether adaptive moderation is on over this parameter now (whoever turned it on): the NIC
    /// moves the value by itself.
    pub fn under_adaptive_moderation(&self, address: &ParamAddress) -> bool {
        self.switch_on_over(address).is_some()
    }

    /// Why a revert that did not take cannot take until someone else acts, if that is so: a
    /// cpufreq limit put back across the other limit where that limit is not KPO's (a person's,
    /// yielded to them, or never changed by KPO: KPO moves neither). A revert refused across a
    /// limit KPO holds, or a preference the cpufreq driver holds under KPO's performance governor
    /// (its own revert of the governor lets it through, and the driver then gives KPO's
    /// preference back), or one that failed, may take later: watched on.
    pub fn revert_blocked_by_others(&self, r: &ChangeReport) -> Option<String> {
        match r.status {
            ChangeStatus::Refused => {
                let other = crate::actuate::cpufreq::other_limit(&r.address)?;
                let kpos = self
                    .journal
                    .param_state(&other)
                    .is_some_and(|s| s.yielded.is_none() && s.holding.is_some());
                (!kpos && self.crosses_the_other_limit(&r.address, &r.after).is_some()).then(|| {
                    format!(
                        "{} is not KPO's to move, and putting {} back would cross it",
                        other.name, r.after
                    )
                })
            }
            _ => None,
        }
    }

    /// Whether an `on_exit` revert's report leaves KPO's value to outlive the agent, which the
    /// operator must hear of: one not put back (failed, refused), or a preference the cpufreq
    /// driver holds under KPO's performance governor (kept there, or the governor not put back),
    /// which comes back when the governor leaves performance.
    pub fn stays_after_exit(&self, r: &ChangeReport) -> bool {
        match r.status {
            ChangeStatus::Failed | ChangeStatus::Refused => true,
            ChangeStatus::Skipped => {
                crate::actuate::cpufreq::governor_of(&r.address).is_some()
                    && self.moved_by_the_kernel(&r.address)
            }
            _ => false,
        }
    }

    /// Whether the kernel itself moves this parameter now: a coalescing value under adaptive
    /// moderation that KPO turned back on (`revert --all`, `on_exit`). Such a value is nobody's:
    /// it differs from KPO's without anyone having written it.
    ///
    /// Likewise a cpufreq policy's energy-performance preference that reads `performance` while
    /// the policy's governor is `performance` and KPO set it so: intel_pstate and amd-pstate (in
    /// active mode) hold the preference at `performance` under that governor (saving the one before, which they
    /// give back when the governor leaves it), so nobody wrote it.
    pub fn moved_by_the_kernel(&self, address: &ParamAddress) -> bool {
        if let Some(governor) = crate::actuate::cpufreq::governor_of(address) {
            return self.preference_held_by_kpos_governor(address, &governor);
        }
        let Some(switch) = self.switch_on_over(address) else {
            return false;
        };
        // Only a switch KPO itself turned back on: one a person turned on makes the value
        // theirs, as any other write would.
        self.journal.param_state(&switch).is_some_and(|s| {
            s.yielded.is_none()
                && s.last_applied
                    .as_ref()
                    .is_some_and(|v| *v == Value::Word("on".into()))
        })
    }

    /// Whether the energy-performance preference at `epp` reads `performance` because the
    /// driver holds it there under the `performance` governor KPO set on its policy
    /// (`governor`). Only a governor KPO set: one a person set makes the preference's value
    /// theirs, as any other write would.
    fn preference_held_by_kpos_governor(
        &self,
        epp: &ParamAddress,
        governor: &ParamAddress,
    ) -> bool {
        let performance = Value::Word(crate::actuate::cpufreq::PERFORMANCE.into());
        let kpos = self.journal.param_state(governor).is_some_and(|s| {
            s.yielded.is_none()
                && s.unsettled.is_none()
                && s.last_applied.as_ref() == Some(&performance)
        });
        kpos && self.read(governor).is_ok_and(|v| v == performance)
            && self.read(epp).is_ok_and(|v| v == performance)
            // In passive mode (intel_cpufreq) the driver does not hold it: someone wrote it.
            && self
                .actuators
                .open(epp)
                .is_ok_and(|mut a| a.held_by_driver_under_performance())
    }

    /// The switch that is on over this parameter now, if any ([`Actuator::switch_in_the_way`]).
    fn switch_on_over(&self, address: &ParamAddress) -> Option<ParamAddress> {
        let switch = self
            .actuators
            .open(address)
            .and_then(|mut a| a.switch_in_the_way());
        switch.ok().flatten().map(|(switch, _)| switch)
    }

    /// The kernel's value of a parameter now, if it can be read.
    pub fn read(&self, address: &ParamAddress) -> Result<Value, ActuateError> {
        self.actuators.open(address).and_then(|mut a| a.read())
    }

    /// [`ChangePath::read`] with the cookie of the network namespace the value was read in
    /// ([`ChangePath::netns_cookie`]), both through one open of it: an advisor that acts on the
    /// value later hands the cookie to [`ChangePath::propose_advice`].
    pub fn read_with_cookie(
        &self,
        address: &ParamAddress,
    ) -> Result<(Value, Option<u64>), ActuateError> {
        let mut actuator = self.actuators.open(address)?;
        let cookie = match &address.target {
            Target::Netns { .. } => actuator.netns_cookie(),
            _ => None,
        };
        Ok((actuator.read()?, cookie))
    }

    /// The cookie of the network namespace a parameter is in, when it is addressed to one and
    /// the cookie can be read: through the actuator, as every write reads it.
    pub fn netns_cookie(&self, address: &ParamAddress) -> Option<u64> {
        self.netns_now(address).ok().flatten()
    }

    /// [`ChangePath::netns_cookie`], telling a namespace that can no longer be opened (gone, or
    /// never there) from one without a readable cookie: the former is an `Err`.
    pub fn netns_now(&self, address: &ParamAddress) -> Result<Option<u64>, ActuateError> {
        match &address.target {
            Target::Netns { .. } => Ok(self.actuators.open(address)?.netns_cookie()),
            _ => Ok(None),
        }
    }

    /// Whether the network namespace a parameter was changed in is gone, its inode now naming
    /// another namespace: the journal's cookie and the namespace's differ. If so it is recorded
    /// in the journal (what KPO knew of the parameter is forgotten) and `true` is returned.
    /// Without both cookies nothing is concluded. Every write checks the same way first
    /// (`execute`, through the namespace its actuator holds).
    pub fn settle_if_namespace_gone(
        &mut self,
        address: &ParamAddress,
    ) -> Result<bool, ChangeError> {
        if self
            .journal
            .param_state(address)
            .and_then(|p| p.netns_cookie)
            .is_none()
        {
            return Ok(false);
        }
        let now = self.netns_cookie(address);
        self.namespace_replaced(address, now)
    }

    /// [`ChangePath::settle_if_namespace_gone`] with the namespace's cookie `now` already read.
    fn namespace_replaced(
        &mut self,
        address: &ParamAddress,
        now: Option<u64>,
    ) -> Result<bool, ChangeError> {
        let Some(recorded) = self
            .journal
            .param_state(address)
            .and_then(|p| p.netns_cookie)
        else {
            return Ok(false);
        };
        let Some(now) = now else {
            return Ok(false);
        };
        if now == recorded {
            return Ok(false);
        }
        let why = format!(
            "the network namespace KPO changed {address} in is gone: its inode now names another \
             namespace (cookie {now}, was {recorded})"
        );
        tracing::info!("{why}; what KPO knew of it there is forgotten");
        self.journal.forget_gone_namespace(address, &why)?;
        Ok(true)
    }

    /// Whether the network namespace of `address` (journaled under `key`) is gone for certain:
    /// it cannot be opened, and its inode (the one in `key`, which a path named when KPO changed
    /// it) is in use nowhere, no /run/netns/* entry and no process being in it, which only an
    /// agent that sees every process can tell. A namespace that
    /// merely cannot be opened (a descriptor limit, a race with /proc) is not: what needs it is
    /// tried again later.
    pub fn namespace_gone_for_certain(&self, address: &ParamAddress, key: &str) -> bool {
        let Target::Netns { netns } = &address.target else {
            return false;
        };
        let nowhere = match key_netns_inode(key) {
            // Where not every process can be seen, nothing is in use "nowhere": forgetting what
            // KPO changed there would leave it unreverted for good.
            Some(inode) => {
                crate::actuate::sysctl::sees_every_process()
                    && !crate::actuate::sysctl::netns_in_use(inode)
            }
            // A path that never named a namespace KPO changed.
            None => matches!(netns, NetnsRef::Path(path) if !path.exists()),
        };
        nowhere && self.netns_now(&reach(address, key)).is_err()
    }

    /// The journal key of an address (see [`crate::journal::target_key`]).
    pub fn key(address: &ParamAddress) -> String {
        target_key(address)
    }
}

/// Why a namespace path does not say which namespace was meant: `/proc/self/...` and
/// `/proc/thread-self/...` name the namespace of whichever process opens them, the agent, not
/// the shell where `kpo apply --netns /proc/self/ns/net` was typed.
fn names_its_opener(address: &ParamAddress) -> Option<String> {
    let Target::Netns {
        netns: NetnsRef::Path(path),
    } = &address.target
    else {
        return None;
    };
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
