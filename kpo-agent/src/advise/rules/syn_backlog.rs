//! The SYN-queue rule: `net.ipv4.tcp_max_syn_backlog`, per network namespace, and only where it
//! does anything.
//!
//! What the kernel does with a SYN (`tcp_conn_request`, Linux 4.4 to 6.18):
//! - the SYN queue of a listener is full at its *accept* backlog (`sk_max_ack_backlog`, the
//!   `listen()` backlog capped by `net.core.somaxconn`): then it sends a SYN cookie
//!   (`TcpExtTCPReqQFullDoCookies`) or, with `tcp_syncookies = 0`, drops the SYN
//!   (`TcpExtTCPReqQFullDrop`). That limit is the accept-queue rule's business: those drops count
//!   in the listener's own drops, which that rule reads;
//! - `tcp_max_syn_backlog` is read in one place only: with `tcp_syncookies = 0`, once a listener's
//!   SYN queue is past three quarters of it, SYNs from peers the host has not talked to before are
//!   dropped. Those drops are counted in `TcpExtListenDrops` and in no specific counter.
//!
//! Other drops count in `TcpExtListenDrops` alone too (no route for the SYN-ACK, an LSM's
//! refusal, no memory for the request sock), and no counter tells them from these; the SYN
//! queue's length is not sampled (a burst fills and drains it between ticks), so the advice
//! says so rather than judge (s52 storyAE F1).
//!
//! So: with `tcp_syncookies = 0` in the namespace, SYN drops that neither a full accept queue
//! (`ListenOverflows`) nor a full SYN queue (`TCPReqQFullDrop`) explain lead to a higher
//! `tcp_max_syn_backlog`, applied by the next SYN, up to ⌈4/3 × the namespace's largest listener
//! limit⌉, past which no SYN queue reaches three quarters of it before its own limit. Without
//! `TCPReqQFullDrop` nothing tells the drops apart, and there is no advice. With SYN cookies on
//! (the default) the key is unused, and the rule never recommends it.
//!
//! Every tick and every window; hysteresis by [`Latch`] per namespace; the window's end counts
//! only the drops its ticks saw at the value it ends with ([`DropsAtValue`]).
use std::collections::BTreeMap;

use super::{
    latch::{DropsAtValue, Latch},
    netns_address, netns_of, step, KernelView,
};
use crate::{
    actuate::param::ParamAddress,
    advise::{
        limits::AdvicePolicy,
        recommendation::{Recommendation, Source, WindowRef},
    },
    window::{NetnsWindow, Window},
};

pub const MAX_SYN_BACKLOG: &str = "net.ipv4.tcp_max_syn_backlog";
pub const SYNCOOKIES: &str = "net.ipv4.tcp_syncookies";
const DEFAULT_CEILING: i64 = 65535;

/// The least a raise goes to: the kernel's own floor for its default (s62 story CD-2, review1
/// R1-3: doubled from 0, a raise went nowhere; from 1, to a queue of 2).
const RAISE_AT_LEAST: i64 = 128;

pub const DESCS: &[(&str, &str)] = &[(
    MAX_SYN_BACKLOG,
    "SYN-queue reserve without SYN cookies; raised per network namespace when tcp_syncookies = 0 and SYNs are dropped short of a full queue",
)];

#[derive(Debug, Clone, PartialEq)]
pub struct SynBacklogConfig {
    /// Unexplained SYN drops, in a tick or a window, that trigger advice.
    pub min_drops: u64,
    pub rearm_windows: u32,
    pub repeat_windows: u64,
    pub raise_factor: i64,
}

impl Default for SynBacklogConfig {
    fn default() -> Self {
        Self {
            min_drops: 1,
            rearm_windows: 3,
            repeat_windows: super::REPEAT_WINDOWS,
            raise_factor: 2,
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct SynBacklogRule {
    pub cfg: SynBacklogConfig,
    /// Per namespace; the situation is the current tcp_max_syn_backlog.
    latches: BTreeMap<u64, Latch<i64>>,
    /// Per namespace: the window's unexplained drops by the value its ticks saw them at.
    seen: BTreeMap<u64, DropsAtValue>,
}

impl SynBacklogRule {
    /// Everything remembered of namespace `netns` (another namespace has its inode now).
    pub fn forget_netns(&mut self, netns: u64) {
        self.latches.remove(&netns);
        self.seen.remove(&netns);
    }
}

/// SYN drops a full accept queue or a full SYN queue do not explain; `None` when the full SYN
/// queue's count is unknown (then nothing tells the two apart).
fn unexplained(n: &NetnsWindow) -> Option<u64> {
    Some(
        n.listen_drops
            .saturating_sub(n.listen_overflows)
            .saturating_sub(n.syn_queue_full_drops?),
    )
}

/// The largest `tcp_max_syn_backlog` that can still matter in a namespace whose largest listener
/// limit is `largest_limit`: a listener's SYN queue is full at its own limit before it passes
/// three quarters of anything above `⌈4/3 × limit⌉`.
fn useful_ceiling(largest_limit: i64) -> i64 {
    (largest_limit.saturating_mul(4) + 2) / 3
}

impl SynBacklogRule {
    /// Advice for this namespace was refused for a reason that has passed: given again when
    /// drops next call for it.
    pub fn release(&mut self, address: &ParamAddress, kernel: &dyn KernelView) {
        let Some(netns) = netns_of(address, kernel).filter(|_| address.name == MAX_SYN_BACKLOG)
        else {
            return;
        };
        if let Some(latch) = self.latches.get_mut(&netns) {
            latch.release_if(|_| true);
        }
    }

    pub fn on_tick(
        &mut self,
        at: &WindowRef,
        tick: &Window,
        kernel: &mut dyn KernelView,
        policy: &dyn AdvicePolicy,
    ) -> Vec<Recommendation> {
        self.evaluate(at, tick, kernel, policy, false)
    }

    pub fn on_window(
        &mut self,
        at: &WindowRef,
        window: &Window,
        kernel: &mut dyn KernelView,
        policy: &dyn AdvicePolicy,
    ) -> Vec<Recommendation> {
        self.evaluate(at, window, kernel, policy, true)
    }

    fn evaluate(
        &mut self,
        at: &WindowRef,
        w: &Window,
        kernel: &mut dyn KernelView,
        policy: &dyn AdvicePolicy,
        closed: bool,
    ) -> Vec<Recommendation> {
        let mut out = Vec::new();
        for n in &w.netns {
            let whole = unexplained(n);
            let seen = self.seen.entry(n.netns).or_default();
            // The key's address is made (and the key read) only for a namespace with something
            // to tally: a quiet tick costs nothing per namespace.
            let current = |kernel: &mut dyn KernelView| {
                let addr = netns_address(MAX_SYN_BACKLOG, n.netns, kernel);
                kernel.current(&addr)
            };
            let drops = if closed {
                let counted = seen.window(whole.unwrap_or(0), || current(kernel));
                whole.map(|_| counted)
            } else {
                // Tallied only where the key is in use (SYN cookies off), as the advice reads it.
                if whole.is_some_and(|d| d > 0)
                    && kernel.current(&netns_address(SYNCOOKIES, n.netns, kernel)) == Some(0)
                {
                    if let Some(value) = current(kernel) {
                        seen.tick(value, whole.unwrap_or(0));
                    }
                }
                whole
            };
            let Some(drops) = drops else {
                continue;
            };
            let narrowed = closed && whole != Some(drops);
            if closed {
                // Calm is judged on the whole window: drops a raise answered are not calm.
                let latch = self.latches.entry(n.netns).or_default();
                if whole.unwrap_or(0) < self.cfg.min_drops {
                    latch.calm(self.cfg.rearm_windows);
                } else {
                    latch.pressed();
                }
            }
            out.extend(self.advise_netns(at, w, n, drops, narrowed, kernel, policy));
        }
        let live: Vec<u64> = w.netns.iter().map(|n| n.netns).collect();
        if closed {
            self.latches.retain(|ns, _| live.contains(ns));
            self.seen.retain(|ns, _| live.contains(ns));
        }
        out
    }

    /// Advice for one namespace's `drops` unexplained SYN drops (`narrowed`: only those the
    /// window's ticks saw at the current value).
    #[allow(clippy::too_many_arguments)]
    fn advise_netns(
        &mut self,
        at: &WindowRef,
        w: &Window,
        n: &NetnsWindow,
        drops: u64,
        narrowed: bool,
        kernel: &mut dyn KernelView,
        policy: &dyn AdvicePolicy,
    ) -> Option<Recommendation> {
        {
            let latch = self.latches.entry(n.netns).or_default();
            if drops < self.cfg.min_drops {
                return None;
            }
            // Read only now: a namespace without such drops costs nothing.
            if kernel.current(&netns_address(SYNCOOKIES, n.netns, kernel)) != Some(0) {
                return None;
            }
            let addr = netns_address(MAX_SYN_BACKLOG, n.netns, kernel);
            let current = kernel.current(&addr)?;
            let largest_limit = w
                .listeners
                .iter()
                .filter(|l| l.netns == n.netns && l.backlog_limit > 0)
                .map(|l| i64::from(l.backlog_limit))
                .max();
            // Past this, no listener's SYN queue can reach three quarters of the key before its
            // own limit: the drops come from elsewhere, and a higher value would change nothing.
            let ceiling = largest_limit.map_or(DEFAULT_CEILING, |l| {
                useful_ceiling(l).clamp(1, DEFAULT_CEILING)
            });
            if current >= ceiling {
                return None;
            }
            let limits = policy.allowed(&addr, Source::Rules);
            let mut dead_end = None;
            let wanted = (current.saturating_mul(self.cfg.raise_factor.max(2)))
                .max(RAISE_AT_LEAST)
                .min(ceiling);
            let target = latch.fire_with(
                at.index,
                current,
                vec![limits.clone()],
                self.cfg.repeat_windows,
                || {
                    step::try_raise(&addr, current, wanted, DEFAULT_CEILING, limits.as_ref())
                        .unwrap_or_else(|no| {
                            dead_end = Some(no);
                            None
                        })
                },
            );
            let Some(target) = target else {
                return dead_end
                    .map(|no| step::out_of_reach(at, addr, current, true, limits.as_ref(), &no));
            };
            let reason = format!(
                "{drops} SYN(s) dropped in netns {}{} in window {} (up to {}) short of a full queue: TcpExtListenDrops {} - ListenOverflows {} - TCPReqQFullDrop {}. \
With {SYNCOOKIES} = 0 the kernel drops SYNs from new peers once a listener's SYN queue is past three quarters of {MAX_SYN_BACKLOG} ({current}, so {}). \
Raising it to {target} applies to the next SYN, no restart needed{}. \
The kernel counts other SYNs it drops there too (no route back for the SYN-ACK, a security module's refusal, no memory for the request), which no value of it cures: drops that go on at the new value point there. \
(With SYN cookies on, the kernel default, this limit is not used at all.)",
                n.netns,
                if narrowed { " at the current value" } else { "" },
                at.index,
                at.end,
                n.listen_drops,
                n.listen_overflows,
                n.syn_queue_full_drops.map_or("unknown".to_string(), |v| v.to_string()),
                current - (current >> 2),
                largest_limit.map_or(String::new(), |l| format!(
                    "; above {ceiling} it would do nothing here, since the largest listener limit in the namespace is {l}"
                )),
            );
            Some(step::change(
                at,
                addr,
                current,
                wanted,
                target,
                limits.as_ref(),
                reason,
                0.7,
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        actuate::param::Value,
        advise::{
            limits::{Mode, ParamLimits, Percent, StaticPolicy, Step},
            rules::testing::{at, window, FakeKernel, NS},
        },
    };

    const BACKLOG: &str = "net.ipv4.tcp_max_syn_backlog@netns:4026532281";
    const COOKIES: &str = "net.ipv4.tcp_syncookies@netns:4026532281";

    fn with_netns(drops: u64, overflows: u64, qfull: Option<u64>) -> Window {
        let mut w = window(vec![]);
        w.netns = vec![NetnsWindow {
            netns: NS,
            listen_overflows: overflows,
            listen_drops: drops,
            syn_queue_full_drops: qfull,
            syn_queue_full_cookies: Some(0),
            defer_accept_drops: None,
            cookie: None,
        }];
        w
    }

    fn policy(limits: ParamLimits) -> StaticPolicy {
        StaticPolicy::new().with(MAX_SYN_BACKLOG, &[Source::Rules], limits)
    }

    #[test]
    fn without_syncookies_unexplained_drops_raise_it_in_the_namespace() {
        let mut k = FakeKernel::default().with(COOKIES, 0).with(BACKLOG, 256);
        let p = policy(ParamLimits::new(Mode::Auto).bounds(128, 8192));
        // 50 listen drops: 10 accept-queue overflows, 15 full SYN queue, 25 unexplained.
        let w = with_netns(50, 10, Some(15));
        let r = SynBacklogRule::default().on_window(&at(3), &w, &mut k, &p);
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].parameter.to_string(), BACKLOG);
        assert_eq!(r[0].current_value, Some(Value::Int(256)));
        assert_eq!(r[0].recommended_value, Some(Value::Int(512)));
        assert!(r[0].can_auto_apply);
        for needle in [
            "25 SYN(s)",
            "ListenDrops 50",
            "ListenOverflows 10",
            "TCPReqQFullDrop 15",
            "(256, so 192)",
            "no restart",
            // Not asserted as the only cause (s52 storyAE F1).
            "no route back for the SYN-ACK",
        ] {
            assert!(
                r[0].reason.contains(needle),
                "{needle:?} not in {}",
                r[0].reason
            );
        }
        assert!(
            !r[0].reason.contains("The rule's own step"),
            "{}",
            r[0].reason
        );
        // The policy's min lifts the 2x step: the reason says so (s44 storyC).
        let mut k = FakeKernel::default().with(COOKIES, 0).with(BACKLOG, 256);
        let p = policy(ParamLimits::new(Mode::Auto).bounds(1024, 8192));
        let r = SynBacklogRule::default().on_window(&at(3), &w, &mut k, &p);
        assert_eq!(r[0].recommended_value, Some(Value::Int(1024)));
        assert!(
            r[0].reason.ends_with(
                " The rule's own step is to 512; the policy's entry makes it 1024: its min 1024 \
                 lifts it."
            ),
            "{}",
            r[0].reason
        );
    }

    /// Raises stop where they can no longer matter: past ⌈4/3⌉ of the namespace's largest
    /// listener limit, a SYN queue is full at its own limit first. Without the full-SYN-queue
    /// count nothing tells the drops apart, and there is no advice. A tick's raise, applied, is
    /// not given again at the window's end for the same drops.
    #[test]
    fn raises_stop_where_they_cannot_matter_and_count_drops_once() {
        use crate::advise::rules::testing::listener;
        let p = policy(ParamLimits::new(Mode::Auto));
        let mut k = FakeKernel::default().with(COOKIES, 0).with(BACKLOG, 512);
        let mut w = with_netns(30, 0, Some(0));
        w.listeners = vec![listener(NS, 511, 10, 30), listener(NS, 128, 3, 0)];
        let mut rule = SynBacklogRule::default();
        let r = rule.on_tick(&at(1), &w, &mut k, &p);
        assert_eq!(r[0].recommended_value, Some(Value::Int(682)), "not 1024");
        assert!(
            r[0].reason.contains("above 682 it would do nothing here"),
            "{}",
            r[0].reason
        );
        k.set(BACKLOG, 682);
        assert!(
            rule.on_window(&at(1), &w, &mut k, &p).is_empty(),
            "the window's 30 drops were answered by the tick's raise"
        );
        assert!(
            rule.on_tick(&at(2), &w, &mut k, &p).is_empty(),
            "at the useful ceiling"
        );
        let unknown = with_netns(30, 0, None);
        let mut k = FakeKernel::default().with(COOKIES, 0).with(BACKLOG, 256);
        assert!(SynBacklogRule::default()
            .on_window(&at(1), &unknown, &mut k, &p)
            .is_empty());
        assert!(k.reads.is_empty());
    }

    /// s62 story CD-2: twice 0 is 0, no step; a raise goes to 128 at least.
    #[test]
    fn a_backlog_of_0_is_raised() {
        let mut k = FakeKernel::default().with(COOKIES, 0).with(BACKLOG, 0);
        let p = policy(ParamLimits::new(Mode::Auto).bounds(0, 8192));
        let w = with_netns(50, 10, Some(15));
        let r = SynBacklogRule::default().on_window(&at(3), &w, &mut k, &p);
        assert_eq!(r.len(), 1, "{r:#?}");
        assert_eq!(r[0].recommended_value, Some(Value::Int(128)));
    }

    #[test]
    fn with_syncookies_on_it_is_never_recommended() {
        let mut k = FakeKernel::default().with(COOKIES, 1).with(BACKLOG, 256);
        let p = policy(ParamLimits::new(Mode::Auto));
        let w = with_netns(50, 0, Some(0));
        assert!(SynBacklogRule::default()
            .on_tick(&at(1), &w, &mut k, &p)
            .is_empty());
        assert!(
            k.reads.iter().all(|r| r == COOKIES),
            "the limit itself is not even read: {:?}",
            k.reads
        );
    }

    #[test]
    fn drops_explained_by_full_queues_are_the_accept_queue_rules() {
        let mut k = FakeKernel::default().with(COOKIES, 0).with(BACKLOG, 256);
        let p = policy(ParamLimits::new(Mode::Auto));
        let w = with_netns(40, 25, Some(15));
        assert!(SynBacklogRule::default()
            .on_window(&at(1), &w, &mut k, &p)
            .is_empty());
        assert!(k.reads.is_empty(), "nothing read without a signal");
    }

    #[test]
    fn once_per_value_rearmed_by_calm_windows_and_stepped_within_policy() {
        let mut k = FakeKernel::default().with(COOKIES, 0).with(BACKLOG, 1000);
        let p = policy(ParamLimits::new(Mode::Recommend).step(Step::Percent(Percent::whole(50))));
        let mut rule = SynBacklogRule::default();
        let bad = with_netns(9, 0, Some(0));
        let r = rule.on_tick(&at(1), &bad, &mut k, &p);
        assert_eq!(r[0].recommended_value, Some(Value::Int(1500)), "50% step");
        assert!(!r[0].can_auto_apply, "recommend mode");
        assert!(rule.on_tick(&at(1), &bad, &mut k, &p).is_empty());
        assert!(rule.on_window(&at(1), &bad, &mut k, &p).is_empty());
        let calm = with_netns(0, 0, Some(0));
        // Ticks are not windows: calm ticks do not re-arm.
        for _ in 0..5 {
            rule.on_tick(&at(2), &calm, &mut k, &p);
        }
        assert!(rule.on_tick(&at(2), &bad, &mut k, &p).is_empty());
        for i in 2..5 {
            rule.on_window(&at(i), &calm, &mut k, &p);
        }
        assert_eq!(rule.on_tick(&at(5), &bad, &mut k, &p).len(), 1, "re-armed");
        // A value at the policy's max is no step: the operator's word only, without a value.
        let capped = policy(ParamLimits::new(Mode::Auto).bounds(128, 1000));
        let r = SynBacklogRule::default().on_tick(&at(1), &bad, &mut k, &capped);
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].recommended_value, None);
    }
}
