//! The receive-path rule: the host's per-CPU receive backlog and the receive softirq's budget,
//! from /proc/net/softnet_stat (the window's `system.softnet_*`).
//!
//! - **Drops** (`softnet_dropped`, column 2): a packet arrived at a CPU whose backlog queue
//!   (`input_pkt_queue`: RPS, loopback, veth, `netif_rx` drivers) already held
//!   `net.core.netdev_max_backlog` packets, and was dropped. Packets are lost: advice on the
//!   first tick with drops. A CPU that cannot drain its backlog fills any queue, so a raise is
//!   judged by the first whole window at its value before the next, and one that did not cut the
//!   drops per second by a quarter is not followed by another.
//! - **Time squeezes** (`softnet_time_squeeze`, column 3): a round of the receive softirq
//!   stopped with work left because it had handled `net.core.netdev_budget` packets or run
//!   `net.core.netdev_budget_usecs`. A few are normal under load; a steady share of the rounds
//!   means packets wait for the next round. The kernel does not say which of the two limits ended
//!   a round, so both are raised together. A larger budget lets one round hold a CPU longer, so
//!   this must last `squeeze_windows` windows before advice, and a raise that did not cut the
//!   squeezes (a saturated CPU squeezes whatever the budgets) is not followed by another.
//!
//! All three are host parameters (not per network namespace). Hysteresis: [`Latch`] per
//! parameter, keyed by its current value.
use tracing::warn;

use super::{
    host_address,
    latch::{DropsAtValue, Latch},
    step, KernelView,
};
use crate::{
    actuate::param::ParamAddress,
    advise::{
        limits::AdvicePolicy,
        recommendation::{Recommendation, Source, WindowRef},
    },
    window::Window,
};

pub const MAX_BACKLOG: &str = "net.core.netdev_max_backlog";
pub const BUDGET: &str = "net.core.netdev_budget";
pub const BUDGET_USECS: &str = "net.core.netdev_budget_usecs";

/// The least a raise of each key goes to: the kernel's default (`netdev_budget_usecs`'s at HZ
/// 1000: two ticks, 8000 at HZ 250). Doubled from 0, a raise went nowhere, without a word (s62
/// story CD-2); from 1, to 2, which no queue or budget of a busy receive path can use (review1
/// R1-3).
fn raise_at_least(key: &str) -> i64 {
    match key {
        MAX_BACKLOG => 1000,
        BUDGET => 300,
        _ => 2000,
    }
}

pub const DESCS: &[(&str, &str)] = &[
    (
        MAX_BACKLOG,
        "per-CPU receive backlog; raised when softnet_stat counts drops",
    ),
    (
        BUDGET,
        "packets one receive softirq round may handle; raised with time squeezes that last",
    ),
    (
        BUDGET_USECS,
        "time one receive softirq round may run; raised with time squeezes that last",
    ),
];

#[derive(Debug, Clone, PartialEq)]
pub struct ReceivePathConfig {
    /// Softnet drops in a tick or window that trigger advice.
    pub min_drops: u64,
    /// The share by which a raise of `netdev_max_backlog` must cut the drops per second (over a
    /// whole window at its value) for it to be raised again.
    pub drops_cut: f64,
    /// Time squeezes per second that count as squeezed...
    pub squeeze_per_s: f64,
    /// ...when they are also at least this share of the receive softirq's rounds (NET_RX runs,
    /// from /proc/softirqs; the rate alone when that is unknown).
    pub squeeze_share: f64,
    /// Squeezed windows in a row before advice.
    pub squeeze_windows: u32,
    /// The share by which a raise must cut the squeezes (over as many windows at the new
    /// budgets as led to it) for the budgets to be raised again.
    pub squeeze_cut: f64,
    pub rearm_windows: u32,
    pub repeat_windows: u64,
    pub raise_factor: i64,
    /// Ceilings when the policy sets no `max`. The time budget's is the kernel's default (two
    /// ticks) at HZ 250, and under it at HZ 100: there only the packet budget is raised.
    pub max_backlog_ceiling: i64,
    pub budget_ceiling: i64,
    pub budget_usecs_ceiling: i64,
}

impl Default for ReceivePathConfig {
    fn default() -> Self {
        Self {
            min_drops: 1,
            drops_cut: 0.25,
            squeeze_per_s: 1.0,
            squeeze_share: 0.01,
            squeeze_windows: 2,
            squeeze_cut: 0.25,
            rearm_windows: 3,
            repeat_windows: super::REPEAT_WINDOWS,
            raise_factor: 2,
            max_backlog_ceiling: 16384,
            budget_ceiling: 2400,
            budget_usecs_ceiling: 8000,
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct ReceivePathRule {
    pub cfg: ReceivePathConfig,
    drops: Latch<i64>,
    /// The window's drops by the `netdev_max_backlog` its ticks saw them at.
    drops_seen: DropsAtValue,
    /// The last raise of `netdev_max_backlog`, until a whole window at its value judges it.
    backlog_raised: Option<BacklogRaised>,
    /// The window of the last tick or window end seen: the next one's first call is its start.
    last_window: Option<u64>,
    /// A `netdev_max_backlog` a raise to which did not cut the drops: no raise from it while the
    /// kernel has it (forgotten once the rule reads another).
    backlog_futile: Option<i64>,
    /// Keyed by (budget, budget_usecs).
    squeeze: Latch<(i64, i64)>,
    /// Squeezed windows in a row since the last advice.
    run: Tally,
    /// The squeezed windows in a row that led to the last advice, while the run lasts: should
    /// that advice be refused for a passing reason, they still count.
    run_before: Option<Tally>,
    /// The last raise of the budgets, until the windows at its values judge it.
    raised: Option<Raised>,
    /// Budgets a raise to which did not cut the squeezes: no raise from them while the kernel
    /// has them (forgotten once the rule reads others).
    futile: Option<(i64, i64)>,
    /// The rule saw drops or squeezes it could not advise on, its keys unreadable: said once.
    unreadable_said: bool,
}

impl ReceivePathRule {
    /// The rule saw what it would advise on, but cannot read `addr`: said once a run, since the
    /// usual cause lasts (the kernel shows the host-wide net keys in the machine's first network
    /// namespace only), and without a word the drops would go unanswered silently (s44 storyC).
    fn unreadable(&mut self, addr: &ParamAddress) {
        if !std::mem::replace(&mut self.unreadable_said, true) {
            warn!(
                "rules: receive path: {addr} cannot be read, so the softnet drops and time \
                 squeezes the windows count are not advised on; the kernel shows host-wide net \
                 keys in the machine's first network namespace only: run the agent there (a pod \
                 with host networking)"
            );
        }
    }

    /// The budgets a raise to which did not cut the squeezes, if any: kept in the state
    /// directory (`run/rules_state.rs`), so that a restart does not try that raise's successor.
    pub fn futile(&self) -> Option<(i64, i64)> {
        self.futile
    }

    /// The `netdev_max_backlog` a raise to which did not cut the drops, if any: kept in the state
    /// directory (`run/rules_state.rs`), so that a restart does not raise from it again.
    pub fn backlog_futile(&self) -> Option<i64> {
        self.backlog_futile
    }

    /// Takes up the `netdev_max_backlog` a raise to which did not help, as an earlier run judged
    /// it. One no raise can have reached (under 1, or past what the kernel's `int` holds: a file
    /// edited by hand) is left out, with the reason returned. Whether the kernel still has it is
    /// seen when the rule next reads the value, as for a mark judged in this run.
    pub fn restore_backlog_futile(&mut self, futile: Option<i64>) -> Option<String> {
        self.backlog_futile = None;
        let value = futile?;
        if !(1..=i64::from(i32::MAX)).contains(&value) {
            return Some(format!(
                "a futile raise of {MAX_BACKLOG} to {value}, a value no raise can reach: left out"
            ));
        }
        self.backlog_futile = Some(value);
        None
    }

    /// Takes up the budgets a raise to which did not help, as an earlier run judged them. At a
    /// known tick rate, a mark whose time budget is in the same tick as the value a raise to it
    /// came from (one `raise_factor` below) is dropped, with the reason returned: such a raise
    /// moved the round's time limit not at all (an earlier version raised it so: 2000 to 4000 µs
    /// at HZ 250), so it says nothing of what a longer round would do.
    pub fn restore_futile(
        &mut self,
        futile: Option<(i64, i64)>,
        hz: Option<u32>,
    ) -> Option<String> {
        if let (Some((budget, usecs)), Some(hz)) = (futile, hz) {
            let from = usecs / self.cfg.raise_factor.max(2);
            if ticks(usecs, hz) <= ticks(from, hz) {
                self.futile = None;
                return Some(format!(
                    "the raise to {BUDGET} = {budget}, {BUDGET_USECS} = {usecs} µs was judged \
                     futile, but at HZ {hz} it left a round's time limit where it was ({} \
                     tick(s) from {from} µs); the budgets may be raised again",
                    ticks(usecs, hz)
                ));
            }
        }
        self.futile = futile;
        None
    }

    /// Advice for one of these parameters was refused for a reason that has passed: given again
    /// when the condition next holds. Squeezes need no new run of windows if the budgets are
    /// still those advised on (none was taken) and the run that led to it has not broken.
    pub fn release(&mut self, address: &ParamAddress, kernel: &mut dyn KernelView) {
        if address.target != crate::actuate::param::Target::Host {
            return;
        }
        match address.name.as_str() {
            MAX_BACKLOG => self.drops.release_if(|_| true),
            BUDGET | BUDGET_USECS => {
                let now = (
                    kernel.current(&host_address(BUDGET)),
                    kernel.current(&host_address(BUDGET_USECS)),
                );
                if self
                    .squeeze
                    .advised()
                    .is_some_and(|&(b, u)| now == (Some(b), Some(u)))
                {
                    self.squeeze.release_if(|_| true);
                    // Not taken: nothing to judge.
                    self.raised = None;
                    if let Some(before) = self.run_before.take() {
                        self.run.merge(&before);
                    }
                }
            }
            _ => {}
        }
    }

    /// Drops in the tick advise at once.
    pub fn on_tick(
        &mut self,
        at: &WindowRef,
        tick: &Window,
        kernel: &mut dyn KernelView,
        policy: &dyn AdvicePolicy,
    ) -> Vec<Recommendation> {
        self.window_starts(at, kernel);
        let dropped = backlog_drops(tick);
        if let Some(d) = dropped.filter(|&d| d > 0) {
            if let Some(value) = kernel.current(&host_address(MAX_BACKLOG)) {
                self.drops_seen.tick(value, d);
            }
        }
        let span = format!("in {:.1} s", tick.duration_s);
        self.drops_advice(at, tick, dropped, true, &span, kernel, policy)
            .into_iter()
            .collect()
    }

    pub fn on_window(
        &mut self,
        at: &WindowRef,
        w: &Window,
        kernel: &mut dyn KernelView,
        policy: &dyn AdvicePolicy,
    ) -> Vec<Recommendation> {
        self.window_starts(at, kernel);
        let in_window = backlog_drops(w);
        let addr = host_address(MAX_BACKLOG);
        let counted = self
            .drops_seen
            .window(in_window.unwrap_or(0), || kernel.current(&addr));
        let span = if in_window == Some(counted) {
            format!("in {:.1} s", w.duration_s)
        } else {
            format!(
                "in the window's ticks at the current value (of {} in the window)",
                in_window.unwrap_or(0)
            )
        };
        self.judge_backlog_raise(at, w, kernel);
        let mut out: Vec<Recommendation> = self
            .drops_advice(
                at,
                w,
                in_window.map(|_| counted),
                in_window == Some(counted),
                &span,
                kernel,
                policy,
            )
            .into_iter()
            .collect();
        // Calm is judged on the whole window: drops a raise answered are not calm. A window
        // whose drops are unknown (CPUs that could not be matched) is neither.
        match in_window {
            None => {}
            Some(n) if n < self.cfg.min_drops => self.drops.calm(self.cfg.rearm_windows),
            Some(_) => self.drops.pressed(),
        }
        out.extend(self.squeeze_advice(at, w, kernel, policy));
        out
    }

    /// Advice on `dropped` packets seen over `span`: all of `w` (`whole`), or part of it.
    #[allow(clippy::too_many_arguments)]
    fn drops_advice(
        &mut self,
        at: &WindowRef,
        w: &Window,
        dropped: Option<u64>,
        whole: bool,
        span: &str,
        kernel: &mut dyn KernelView,
        policy: &dyn AdvicePolicy,
    ) -> Option<Recommendation> {
        let dropped = dropped?;
        if dropped < self.cfg.min_drops {
            return None;
        }
        let addr = host_address(MAX_BACKLOG);
        let Some(current) = kernel.current(&addr) else {
            self.unreadable(&addr);
            return None;
        };
        // The mark holds while the kernel has the value judged; another (someone else's, or one
        // the guard put back) is judged afresh if a raise from it comes.
        if self.backlog_futile.is_some_and(|futile| futile != current) {
            self.backlog_futile = None;
        }
        // A raise waits for a whole window at the last one's value, which judges it: on a CPU
        // that cannot drain its backlog (saturated) any queue fills, and a longer one only
        // delays packets more. One that did not cut the drops ends the raises.
        if self.backlog_futile == Some(current)
            || self.backlog_raised.is_some_and(|r| r.to == current)
        {
            return None;
        }
        let limits = policy.allowed(&addr, Source::Rules);
        let ceiling = self.cfg.max_backlog_ceiling;
        let mut dead_end = None;
        let wanted =
            (current.saturating_mul(self.cfg.raise_factor.max(2))).max(raise_at_least(MAX_BACKLOG));
        let target = self.drops.fire_with(
            at.index,
            current,
            vec![limits.clone()],
            self.cfg.repeat_windows,
            || {
                step::try_raise(&addr, current, wanted, ceiling, limits.as_ref()).unwrap_or_else(
                    |no| {
                        dead_end = Some(no);
                        None
                    },
                )
            },
        );
        let Some(target) = target else {
            return dead_end
                .map(|no| step::out_of_reach(at, addr, current, true, limits.as_ref(), &no));
        };
        let reason = format!(
            "{dropped} packet(s) dropped {span} up to {} (window {}) because a CPU's receive backlog held {MAX_BACKLOG} = {current} packets (/proc/net/softnet_stat column 2){}. \
Raising it to {target} lets each CPU queue more packets before dropping; it applies at once. If one CPU takes all the traffic, spreading it (RPS/RSS) helps more. \
If the drops per second do not fall by a quarter over a whole window at the new value, it is not raised again.",
            at.end,
            at.index,
            w.system
                .softnet_processed_per_s
                .map_or(String::new(), |p| format!(", with {p} packets/s processed")),
        );
        self.backlog_raised = Some(BacklogRaised {
            from: current,
            to: target,
            before: whole.then(|| per_s(dropped, w.duration_s)),
            seen: None,
        });
        Some(step::change(
            at,
            addr,
            current,
            wanted,
            target,
            limits.as_ref(),
            reason,
            0.8,
        ))
    }

    fn squeeze_advice(
        &mut self,
        at: &WindowRef,
        w: &Window,
        kernel: &mut dyn KernelView,
        policy: &dyn AdvicePolicy,
    ) -> Vec<Recommendation> {
        let (Some(squeezes), Some(rate)) = (
            w.system.softnet_time_squeeze,
            w.system.softnet_time_squeeze_per_s,
        ) else {
            return Vec::new();
        };
        let rounds = w
            .system
            .softirqs_per_s
            .as_ref()
            .and_then(|s| s.get("NET_RX").copied())
            .map(|per_s| per_s * w.duration_s);
        let share = rounds.filter(|r| *r > 0.0).map(|r| squeezes as f64 / r);
        let (budget_addr, usecs_addr) = (host_address(BUDGET), host_address(BUDGET_USECS));
        self.judge_raise(rate, share, kernel);
        let squeezed =
            rate >= self.cfg.squeeze_per_s && share.is_none_or(|s| s >= self.cfg.squeeze_share);
        if !squeezed {
            self.run = Tally::default();
            self.run_before = None;
            self.squeeze.calm(self.cfg.rearm_windows);
            return Vec::new();
        }
        self.squeeze.pressed();
        self.run.add(rate, share);
        if self.run.windows < self.cfg.squeeze_windows {
            return Vec::new();
        }
        let (Some(budget), Some(usecs)) =
            (kernel.current(&budget_addr), kernel.current(&usecs_addr))
        else {
            self.unreadable(&budget_addr);
            return Vec::new();
        };
        // The mark holds while the kernel has the budgets judged; others (someone else's, or
        // those the guard put back) are judged afresh if a raise from them comes, and so are the
        // marked ones should the kernel come back to them: a raise to them may help this time.
        if self.futile.is_some_and(|futile| futile != (budget, usecs)) {
            self.futile = None;
        }
        // The last raise is judged first (by as many windows at its budgets as led to it); one
        // that did not cut the squeezes leaves nothing to gain by raising further: the CPU is
        // busy, not short of budget, and longer rounds would only delay its other tasks.
        if self
            .raised
            .as_ref()
            .is_some_and(|r| r.taken((budget, usecs)))
            || self.futile == Some((budget, usecs))
        {
            return Vec::new();
        }
        let limits = vec![
            policy.allowed(&budget_addr, Source::Rules),
            policy.allowed(&usecs_addr, Source::Rules),
        ];
        if !self
            .squeeze
            .ready(at.index, &(budget, usecs), &limits, self.cfg.repeat_windows)
        {
            return Vec::new();
        }
        let seen = format!(
            "the receive softirq stopped with work left {squeezes} time(s) in window {} ({rate}/s{}, /proc/net/softnet_stat column 3), for {} windows in a row",
            at.index,
            share.map_or(String::new(), |s| format!(", {:.1}% of its rounds", s * 100.0)),
            self.run.windows,
        );
        let mut out = Vec::new();
        let mut dead_ends = Vec::new();
        let mut to = (budget, usecs);
        let hz = kernel.hz();
        for ((addr, current, ceiling, what), limits) in [
            (budget_addr, budget, self.cfg.budget_ceiling, "packets"),
            (
                usecs_addr,
                usecs,
                self.cfg.budget_usecs_ceiling,
                "microseconds",
            ),
        ]
        .into_iter()
        .zip(&limits)
        {
            // The kernel ends a round at a whole tick (`usecs_to_jiffies` rounds up): a time
            // budget raised within the tick it ends in would change nothing (2000 and 4000 µs are
            // both one tick at HZ 250), so the raise reaches the next tick or is no step.
            let mut wanted = (current.saturating_mul(self.cfg.raise_factor.max(2)))
                .max(raise_at_least(&addr.name));
            let hz = hz.filter(|_| addr.name == BUDGET_USECS);
            if let Some(hz) = hz.filter(|&hz| ticks(wanted, hz) <= ticks(current, hz)) {
                wanted = last_usec_of(ticks(current, hz) + 1, hz);
            }
            let stepped = match step::try_raise(&addr, current, wanted, ceiling, limits.as_ref()) {
                Ok(stepped) => stepped,
                Err(no) => {
                    dead_ends.push(step::out_of_reach(
                        at,
                        addr,
                        current,
                        true,
                        limits.as_ref(),
                        &no,
                    ));
                    continue;
                }
            };
            let Some(target) = stepped
                .filter(|&target| hz.is_none_or(|hz| ticks(target, hz) > ticks(current, hz)))
            else {
                continue;
            };
            let in_ticks = hz.map_or(String::new(), |hz| {
                format!(
                    " (the kernel counts it in whole ticks: at HZ {hz}, {} tick(s) at {current} µs, {} at {target} µs)",
                    ticks(current, hz),
                    ticks(target, hz)
                )
            });
            if addr.name == BUDGET {
                to.0 = target;
            } else {
                to.1 = target;
            }
            let reason = format!(
                "{seen}. A round ends after {BUDGET} = {budget} packets or {BUDGET_USECS} = {usecs} µs, whichever comes first (the kernel does not say which); \
raising {} from {current} to {target} {what}{in_ticks} lets a round finish more of its work. It applies at once; a longer round can delay other tasks on that CPU. \
If the squeezes do not fall by a quarter at the new values, the budgets are not raised again.",
                addr.name,
            );
            out.push(step::change(
                at,
                addr,
                current,
                wanted,
                target,
                limits.as_ref(),
                reason,
                0.6,
            ));
        }
        if out.is_empty() {
            self.squeeze.no_step(at.index, (budget, usecs), limits);
            return dead_ends;
        }
        self.squeeze.record(at.index, (budget, usecs), limits);
        self.raised = Some(Raised {
            from: (budget, usecs),
            to,
            at: None,
            before: self.run,
            after: Tally::default(),
        });
        // The next step waits for `squeeze_windows` windows under the new budgets.
        self.run_before = Some(self.run);
        self.run = Tally::default();
        out
    }

    /// The first tick (or window end) of window `at.index`: if a raise of `netdev_max_backlog`
    /// waits to be taken, whether the kernel has it as the window starts, when that window is the
    /// first whole one at its value (a raise given at a window's end and applied at once).
    fn window_starts(&mut self, at: &WindowRef, kernel: &mut dyn KernelView) {
        if self.last_window.replace(at.index) == Some(at.index) {
            return;
        }
        if let Some(raised) = self.backlog_raised.as_mut().filter(|r| r.seen.is_none()) {
            if kernel.current(&host_address(MAX_BACKLOG)) == Some(raised.to) {
                raised.seen = Some(at.index);
            }
        }
    }

    /// Judges the last raise of `netdev_max_backlog` by the first whole window at its value:
    /// one the kernel had it at as the window started, else the window after the one whose end
    /// first sees it (taken during that window). Drops per second not cut by `drops_cut` make it
    /// futile. Not while the kernel still has the value before (not taken yet); a value someone
    /// else set ends the judgement; a window whose drops or value are unknown counts for nothing.
    fn judge_backlog_raise(&mut self, at: &WindowRef, w: &Window, kernel: &mut dyn KernelView) {
        let Some(raised) = &mut self.backlog_raised else {
            return;
        };
        let Some(current) = kernel.current(&host_address(MAX_BACKLOG)) else {
            return;
        };
        if current == raised.from {
            return;
        }
        if current != raised.to {
            self.backlog_raised = None;
            return;
        }
        let Some(first) = raised.seen else {
            raised.seen = Some(at.index + 1);
            return;
        };
        let Some(dropped) = backlog_drops(w).filter(|_| at.index >= first) else {
            return;
        };
        if let Some(before) = raised.before {
            if per_s(dropped, w.duration_s) > before * (1.0 - self.cfg.drops_cut) {
                self.backlog_futile = Some(raised.to);
            }
        }
        self.backlog_raised = None;
    }

    /// Counts this window toward the judgement of the last raise if the kernel has taken it,
    /// wholly or one budget of it (the other waiting for an approval, refused, or reverted by the
    /// guard: the budget taken is the raise), and not while it still has both budgets before;
    /// once there are as many as led to it, a raise that did not cut the squeezes by
    /// `squeeze_cut` is futile at the budgets the kernel has. Windows at one half do not count
    /// for the whole once the other is taken. Budgets someone else set end the judgement.
    fn judge_raise(&mut self, rate: f64, share: Option<f64>, kernel: &mut dyn KernelView) {
        let Some(raised) = &mut self.raised else {
            return;
        };
        let now = (
            kernel.current(&host_address(BUDGET)),
            kernel.current(&host_address(BUDGET_USECS)),
        );
        let (Some(budget), Some(usecs)) = now else {
            self.raised = None;
            return;
        };
        let now = (budget, usecs);
        if now == raised.from {
            return;
        }
        if !raised.taken(now) {
            self.raised = None;
            return;
        }
        if raised.at != Some(now) {
            raised.at = Some(now);
            raised.after = Tally::default();
        }
        raised.after.add(rate, share);
        if raised.after.windows >= raised.before.windows.max(1) {
            if !raised.before.cut_by(&raised.after, self.cfg.squeeze_cut) {
                self.futile = Some(now);
            }
            self.raised = None;
        }
    }
}

/// `n` per second over `seconds` (a span of none counted as a millisecond).
fn per_s(n: u64, seconds: f64) -> f64 {
    n as f64 / seconds.max(0.001)
}

/// The ticks a round may run with `netdev_budget_usecs = usecs` at `hz` (`usecs_to_jiffies`:
/// rounded up).
fn ticks(usecs: i64, hz: u32) -> i64 {
    usecs
        .saturating_mul(hz.into())
        .saturating_add(999_999)
        .div_euclid(1_000_000)
}

/// The largest `netdev_budget_usecs` that is still `n` ticks at `hz`.
fn last_usec_of(n: i64, hz: u32) -> i64 {
    n.saturating_mul(1_000_000) / i64::from(hz)
}

/// Squeezes over a run of windows.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Tally {
    windows: u32,
    /// Sum of the windows' squeezes per second.
    rate: f64,
    /// Sum of their shares of the receive softirq's rounds, over the `shared` windows that know it.
    share: f64,
    shared: u32,
}

impl Tally {
    fn merge(&mut self, other: &Tally) {
        self.windows += other.windows;
        self.rate += other.rate;
        self.share += other.share;
        self.shared += other.shared;
    }

    fn add(&mut self, rate: f64, share: Option<f64>) {
        self.windows += 1;
        self.rate += rate;
        if let Some(s) = share {
            self.share += s;
            self.shared += 1;
        }
    }

    /// Whether `after` has fewer squeezes than these by at least `cut` (a fraction): compared by
    /// share of the rounds when every window of both knows it (a busier CPU runs more rounds, and
    /// squeezes more of them in number only), by rate otherwise.
    fn cut_by(&self, after: &Tally, cut: f64) -> bool {
        let mean = |sum: f64, n: u32| sum / f64::from(n.max(1));
        let (before, now) = if self.shared == self.windows && after.shared == after.windows {
            (
                mean(self.share, self.windows),
                mean(after.share, after.windows),
            )
        } else {
            (
                mean(self.rate, self.windows),
                mean(after.rate, after.windows),
            )
        };
        now <= before * (1.0 - cut)
    }
}

/// The last raise of `netdev_max_backlog`, until it is judged.
#[derive(Debug, Clone, Copy)]
struct BacklogRaised {
    /// The value before it, and advised.
    from: i64,
    to: i64,
    /// Drops per second in the tick or window that led to it; `None` when the drops that led to
    /// it were those of part of a window (the ticks at the value now), whose length is not
    /// known: divided by the whole window's, the rate would be understated and a raise that
    /// helped could be judged futile. Such a raise is not judged.
    before: Option<f64>,
    /// The first window wholly at `to`, once the kernel is seen to have it.
    seen: Option<u64>,
}

/// The last squeeze advice, until it is judged.
#[derive(Debug, Clone, Copy)]
struct Raised {
    /// (netdev_budget, netdev_budget_usecs) before it, and advised.
    from: (i64, i64),
    to: (i64, i64),
    /// The budgets the windows in `after` were at: `to`, or one of its budgets with the other
    /// still at `from`.
    at: Option<(i64, i64)>,
    /// The squeezed windows that led to it, and the windows since at its budgets.
    before: Tally,
    after: Tally,
}

impl Raised {
    /// Whether the kernel's budgets `now` are this raise taken, wholly or in part: each is the
    /// advised value or the one before, and not both the one before.
    fn taken(&self, now: (i64, i64)) -> bool {
        now != self.from
            && (now.0 == self.to.0 || now.0 == self.from.0)
            && (now.1 == self.to.1 || now.1 == self.from.1)
    }
}

/// The packets dropped in `w` because a CPU's backlog was full: the softnet drops less those flow
/// limiting shed, which the kernel counts in the same column (`enqueue_to_backlog`) but a longer
/// backlog does not cure, and whose threshold (half of it) a raise would loosen (s63 story CI-4).
fn backlog_drops(w: &Window) -> Option<u64> {
    let dropped = w.system.softnet_dropped?;
    Some(dropped.saturating_sub(w.system.softnet_flow_limited.unwrap_or(0)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        actuate::param::Value,
        advise::{
            limits::{Mode, ParamLimits, Percent, StaticPolicy, Step},
            rules::testing::{at, window, FakeKernel},
        },
    };

    fn kernel() -> FakeKernel {
        FakeKernel::default()
            .with(MAX_BACKLOG, 1000)
            .with(BUDGET, 300)
            .with(BUDGET_USECS, 2000)
    }

    fn auto() -> StaticPolicy {
        StaticPolicy::new().with(
            "net.core.netdev_*",
            &[Source::Rules],
            ParamLimits::new(Mode::Auto),
        )
    }

    /// A recorded window: 60 s, softnet drops and squeezes, NET_RX runs per second.
    fn softnet(dropped: u64, squeezes: u64, net_rx_per_s: f64) -> Window {
        let mut w = window(vec![]);
        w.system.softnet_dropped = Some(dropped);
        w.system.softnet_dropped_per_s = Some(dropped as f64 / 60.0);
        w.system.softnet_time_squeeze = Some(squeezes);
        w.system.softnet_time_squeeze_per_s = Some(squeezes as f64 / 60.0);
        w.system.softnet_processed_per_s = Some(120000.0);
        w.system.softirqs_per_s = Some([("NET_RX".to_string(), net_rx_per_s)].into());
        w
    }

    /// Defect (s44 storyC): with the agent outside the machine's first network namespace (a pod
    /// without host networking), where the kernel does not show netdev_*, drops and squeezes
    /// went unanswered without a word. Said once a run.
    #[test]
    fn drops_whose_keys_cannot_be_read_are_said_once() {
        let mut rule = ReceivePathRule::default();
        let mut k = FakeKernel::default();
        let mut tick = softnet(37, 0, 100.0);
        tick.duration_s = 1.0;
        let (advice, log) = crate::logging::logged(|| {
            let mut advice = rule.on_tick(&at(4), &tick, &mut k, &auto());
            advice.extend(rule.on_tick(&at(5), &tick, &mut k, &auto()));
            advice
        });
        assert!(advice.is_empty());
        assert_eq!(
            log.matches("rules: receive path: net.core.netdev_max_backlog cannot be read")
                .count(),
            1,
            "{log}"
        );
        assert!(log.contains("first network namespace only"), "{log}");
    }

    /// s62 story CD-2: twice 0 is 0, no step; a raise goes to the kernel's default at least.
    #[test]
    fn a_backlog_of_0_is_raised() {
        let mut rule = ReceivePathRule::default();
        let mut k = kernel().with(MAX_BACKLOG, 0);
        let mut tick = softnet(37, 0, 100.0);
        tick.duration_s = 1.0;
        let policy = StaticPolicy::new().with(
            MAX_BACKLOG,
            &[Source::Rules],
            ParamLimits::new(Mode::Auto).bounds(0, 16384),
        );
        let r = rule.on_tick(&at(4), &tick, &mut k, &policy);
        assert_eq!(r.len(), 1, "{r:#?}");
        assert_eq!(r[0].recommended_value, Some(Value::Int(1000)));
    }

    #[test]
    fn drops_raise_the_backlog_on_the_first_tick_once() {
        let mut rule = ReceivePathRule::default();
        let mut k = kernel();
        let mut tick = softnet(37, 0, 100.0);
        tick.duration_s = 1.0;
        let r = rule.on_tick(&at(4), &tick, &mut k, &auto());
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].parameter.to_string(), MAX_BACKLOG);
        assert_eq!(r[0].recommended_value, Some(Value::Int(2000)));
        assert!(r[0].can_auto_apply);
        for needle in [
            "37 packet(s)",
            "in 1.0 s",
            "= 1000",
            "120000 packets/s",
            "RPS",
        ] {
            assert!(
                r[0].reason.contains(needle),
                "{needle:?} not in {}",
                r[0].reason
            );
        }
        assert!(rule.on_tick(&at(4), &tick, &mut k, &auto()).is_empty());
        assert!(rule
            .on_window(&at(4), &softnet(80, 0, 100.0), &mut k, &auto())
            .is_empty());
        // Applied: a new value is a new situation, once a whole window at it (window 5, which
        // started with it) judged the raise: 80 drops in 60 s, down from 37 in a second.
        k.set(MAX_BACKLOG, 2000);
        assert!(
            rule.on_tick(&at(5), &tick, &mut k, &auto()).is_empty(),
            "not judged yet"
        );
        let r = rule.on_window(&at(5), &softnet(80, 0, 100.0), &mut k, &auto());
        assert_eq!(r[0].recommended_value, Some(Value::Int(4000)));
    }

    /// s63 story CI-4: the packets flow limiting shed count in the same softnet column as a full
    /// backlog's, but a longer backlog does not cure them (and loosens the limit): the rule
    /// leaves them out, of its trigger and of its reason.
    #[test]
    fn drops_flow_limiting_shed_do_not_raise_the_backlog() {
        let mut k = kernel();
        let mut tick = softnet(37, 0, 100.0);
        tick.duration_s = 1.0;
        tick.system.softnet_flow_limited = Some(37);
        let mut rule = ReceivePathRule::default();
        assert!(rule.on_tick(&at(4), &tick, &mut k, &auto()).is_empty());
        tick.system.softnet_flow_limited = Some(30);
        let r = rule.on_tick(&at(4), &tick, &mut k, &auto());
        assert_eq!(r.len(), 1, "{r:?}");
        assert!(r[0].reason.contains("7 packet(s)"), "{}", r[0].reason);
    }

    /// Defect: a CPU that drops whatever its backlog (saturated: packets arrive faster than it
    /// drains them) had `netdev_max_backlog` doubled on every tick that still dropped, 1000 to
    /// 16384 in four ticks, within one window and never judged: only more queueing delay. A raise
    /// now waits for a whole window at its value, which judges it: drops per second cut by a
    /// quarter, the next raise may come; not, no raise from that value while the kernel has it.
    #[test]
    fn a_backlog_raise_waits_for_a_window_at_its_value_and_one_that_did_not_help_ends_them() {
        // Windows of four 1 s ticks, each dropping `drops_at` the backlog it has; each advice
        // applied at once.
        let run = |drops_at: fn(i64) -> u64| {
            let mut rule = ReceivePathRule::default();
            let mut k = kernel();
            let mut advised = Vec::new();
            let mut take = |r: Vec<Recommendation>, k: &mut FakeKernel, i: u64| {
                for r in r {
                    let v = r.recommended_value.as_ref().unwrap().as_int().unwrap();
                    k.set(MAX_BACKLOG, v);
                    advised.push((i, v));
                }
            };
            for i in 1..=8 {
                let mut in_window = 0;
                for _ in 0..4 {
                    let mut tick = softnet(drops_at(k.values[MAX_BACKLOG]), 0, 100.0);
                    tick.duration_s = 1.0;
                    in_window += tick.system.softnet_dropped.unwrap();
                    let r = rule.on_tick(&at(i), &tick, &mut k, &auto());
                    take(r, &mut k, i);
                }
                let mut w = softnet(in_window, 0, 100.0);
                w.duration_s = 4.0;
                let r = rule.on_window(&at(i), &w, &mut k, &auto());
                take(r, &mut k, i);
            }
            advised
        };
        // Saturated: as many drops per second at 2000 as at 1000.
        assert_eq!(run(|_| 37), [(1, 2000)]);
        // Drops cut by more than a quarter at each value until 16000: the window a raise is
        // taken in on a tick is not counted, the next judges it; one given at a window's end and
        // taken at once is judged by the next.
        assert_eq!(
            run(|backlog| match backlog {
                1000 => 37,
                2000 => 20,
                4000 => 10,
                8000 => 5,
                _ => 4,
            }),
            [(1, 2000), (2, 4000), (3, 8000), (4, 16000)]
        );
    }

    /// The judgement that a raise did not help is what a restart takes up (through `rules.json`):
    /// a rule given it gives no raise from that value while the kernel has it, and forgets it
    /// once it reads another (someone else's value: a raise from it is judged afresh). A value no
    /// raise can reach (a file edited by hand) is left out, and says so.
    #[test]
    fn a_futile_backlog_mark_is_taken_up_and_forgotten_at_another_value() {
        // Saturated: as many drops per second at 2000 as at 1000 (a whole window each).
        let mut rule = ReceivePathRule::default();
        let mut k = kernel();
        assert_eq!(
            rule.on_window(&at(1), &softnet(2220, 0, 100.0), &mut k, &auto())
                .len(),
            1
        );
        k.set(MAX_BACKLOG, 2000);
        assert!(rule
            .on_window(&at(2), &softnet(2220, 0, 100.0), &mut k, &auto())
            .is_empty());
        assert_eq!(rule.backlog_futile(), Some(2000));

        let mut restarted = ReceivePathRule::default();
        assert_eq!(
            restarted.restore_backlog_futile(rule.backlog_futile()),
            None
        );
        let mut tick = softnet(37, 0, 100.0);
        tick.duration_s = 1.0;
        assert!(restarted.on_tick(&at(1), &tick, &mut k, &auto()).is_empty());
        assert!(restarted
            .on_window(&at(1), &softnet(2220, 0, 100.0), &mut k, &auto())
            .is_empty());
        assert_eq!(restarted.backlog_futile(), Some(2000));
        k.set(MAX_BACKLOG, 3000);
        let r = restarted.on_tick(&at(2), &tick, &mut k, &auto());
        assert_eq!(r[0].recommended_value, Some(Value::Int(6000)));
        assert_eq!(restarted.backlog_futile(), None, "3000 is another value");

        for odd in [0, -4, i64::from(i32::MAX) + 1] {
            let why = restarted.restore_backlog_futile(Some(odd)).unwrap();
            assert!(
                why.contains(&format!("to {odd}, a value no raise can reach")),
                "{why}"
            );
            assert_eq!(restarted.backlog_futile(), None);
        }
        assert_eq!(restarted.restore_backlog_futile(None), None);
        assert_eq!(restarted.backlog_futile(), None);
    }

    /// A window whose drops are unknown (softnet lines that could not be matched to CPUs) is not
    /// one of the calm windows in a row that re-arm the advice.
    #[test]
    fn a_window_of_unknown_drops_does_not_rearm_the_advice() {
        let mut rule = ReceivePathRule::default();
        let mut k = kernel();
        let mut tick = softnet(37, 0, 100.0);
        tick.duration_s = 1.0;
        assert_eq!(rule.on_tick(&at(1), &tick, &mut k, &auto()).len(), 1);
        let mut unknown = softnet(0, 0, 100.0);
        unknown.system.softnet_dropped = None;
        for (i, w) in [softnet(0, 0, 100.0), softnet(0, 0, 100.0), unknown]
            .iter()
            .enumerate()
        {
            rule.on_window(&at(2 + i as u64), w, &mut k, &auto());
        }
        assert!(
            rule.drops.is_set(),
            "two calm windows and an unknown one do not re-arm"
        );
        rule.on_window(&at(5), &softnet(0, 0, 100.0), &mut k, &auto());
        assert!(!rule.drops.is_set(), "the third calm window does");
        assert_eq!(rule.on_tick(&at(6), &tick, &mut k, &auto()).len(), 1);
    }

    /// A raise a tick gave, once applied, is not given again at the window's end for the drops
    /// it answered (the window's count includes them, and the new value is a new situation); nor
    /// when the value changes later in the window (an operator setting another). A window whose
    /// ticks could not count drops is judged on its own count.
    #[test]
    fn the_windows_end_counts_only_drops_seen_at_the_value_it_ends_with() {
        let mut rule = ReceivePathRule::default();
        let mut k = kernel();
        let mut tick = softnet(37, 0, 100.0);
        tick.duration_s = 1.0;
        let mut quiet = softnet(0, 0, 100.0);
        quiet.duration_s = 1.0;
        let r = rule.on_tick(&at(4), &tick, &mut k, &auto());
        assert_eq!(r[0].recommended_value, Some(Value::Int(2000)));
        k.set(MAX_BACKLOG, 2000);
        assert!(rule.on_tick(&at(4), &quiet, &mut k, &auto()).is_empty());
        assert!(
            rule.on_window(&at(4), &softnet(37, 0, 100.0), &mut k, &auto())
                .is_empty(),
            "the 37 drops were answered by the raise to 2000"
        );
        // An operator sets 3000 (the raise to 2000 is no longer judged). Advice not applied at
        // once; more drops at 3000; then the operator sets 5000.
        k.set(MAX_BACKLOG, 3000);
        let r = rule.on_tick(&at(5), &tick, &mut k, &auto());
        assert_eq!(r[0].recommended_value, Some(Value::Int(6000)));
        let mut later = softnet(3, 0, 100.0);
        later.duration_s = 1.0;
        assert!(
            rule.on_tick(&at(5), &later, &mut k, &auto()).is_empty(),
            "same value"
        );
        k.set(MAX_BACKLOG, 5000);
        assert!(
            rule.on_window(&at(5), &softnet(40, 0, 100.0), &mut k, &auto())
                .is_empty(),
            "all 40 were seen at 3000, and answered by 5000"
        );
        // A window with drops no tick counted (their counters were unknown).
        let r = rule.on_window(&at(6), &softnet(5, 0, 100.0), &mut k, &auto());
        assert_eq!(r[0].recommended_value, Some(Value::Int(10000)));
        assert!(
            r[0].reason.contains("5 packet(s) dropped in 60.0 s"),
            "{}",
            r[0].reason
        );
    }

    #[test]
    fn a_quiet_tick_reads_nothing() {
        let mut k = kernel();
        let r = ReceivePathRule::default().on_tick(&at(1), &softnet(0, 500, 10.0), &mut k, &auto());
        assert!(r.is_empty());
        assert!(k.reads.is_empty(), "{:?}", k.reads);
    }

    #[test]
    fn squeezes_must_last_two_windows_and_raise_budget_and_usecs() {
        let mut rule = ReceivePathRule::default();
        let mut k = kernel();
        // 600 squeezes in 60 s (10/s) of 60000 rounds (1000/s): 1%.
        let squeezed = softnet(0, 600, 1000.0);
        assert!(rule
            .on_window(&at(1), &squeezed, &mut k, &auto())
            .is_empty());
        let r = rule.on_window(&at(2), &squeezed, &mut k, &auto());
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].parameter.to_string(), BUDGET);
        assert_eq!(r[0].recommended_value, Some(Value::Int(600)));
        assert_eq!(r[1].parameter.to_string(), BUDGET_USECS);
        assert_eq!(r[1].recommended_value, Some(Value::Int(4000)));
        for needle in [
            "600 time(s)",
            "10/s",
            "1.0% of its rounds",
            "2 windows in a row",
            "does not say which",
        ] {
            assert!(
                r[0].reason.contains(needle),
                "{needle:?} not in {}",
                r[0].reason
            );
        }
        assert!(
            rule.on_window(&at(3), &squeezed, &mut k, &auto())
                .is_empty(),
            "once"
        );
    }

    /// Defect: on a saturated CPU the squeezes never fall, and the rule doubled both budgets
    /// every two windows up to its ceilings (2400 packets, 32000 µs). A raise is now judged by as
    /// many windows at its budgets as led to it: one that cut the share of squeezed rounds by a
    /// quarter may be followed by another, one that did not ends the raises.
    /// Defect: the time budget was doubled in microseconds, but the kernel ends a round at a
    /// whole tick (`usecs_to_jiffies`, rounded up): at HZ 250, 2000 and 4000 µs are both one
    /// tick, so the raise changed nothing, and the squeezes it could not cut could mark the
    /// budgets futile. The raise now reaches the next tick, or is no step at all.
    #[test]
    fn the_time_budget_is_raised_by_whole_ticks() {
        let squeezed = softnet(0, 600, 1000.0);
        let advised = |hz: Option<u32>, usecs: i64| {
            let mut k = kernel().with(BUDGET_USECS, usecs);
            k.hz = hz;
            let mut rule = ReceivePathRule::default();
            rule.on_window(&at(1), &squeezed, &mut k, &auto());
            rule.on_window(&at(2), &squeezed, &mut k, &auto())
                .into_iter()
                .map(|r| {
                    let to = r.recommended_value.and_then(|v| v.as_int()).unwrap();
                    (r.parameter.name, to, r.reason)
                })
                .collect::<Vec<_>>()
        };
        let r = advised(Some(250), 2000);
        assert_eq!(
            r.iter()
                .map(|(p, v, _)| (p.as_str(), *v))
                .collect::<Vec<_>>(),
            [(BUDGET, 600), (BUDGET_USECS, 8000)]
        );
        assert!(
            r[1].2
                .contains("at HZ 250, 1 tick(s) at 2000 µs, 2 at 8000 µs"),
            "{}",
            r[1].2
        );
        // HZ 1000 counts in milliseconds: doubling is a longer round already.
        let r = advised(Some(1000), 2000);
        assert_eq!((r[1].0.as_str(), r[1].1), (BUDGET_USECS, 4000));
        // HZ 300: 2000 µs is one tick, 4000 two: doubled as it is.
        assert_eq!(advised(Some(300), 2000)[1].1, 4000);
        // HZ 100: a tick is 10 ms, past the ceiling of 8000: only the packet budget.
        let r = advised(Some(100), 2000);
        assert_eq!(
            r.iter()
                .map(|(p, v, _)| (p.as_str(), *v))
                .collect::<Vec<_>>(),
            [(BUDGET, 600)]
        );
        // HZ 250 at 6000 µs (two ticks): 8000 is still two, so no time step.
        assert_eq!(advised(Some(250), 6000).len(), 1);
        // The rate unknown: doubled, as the kernel may count it in milliseconds.
        assert_eq!(advised(None, 2000)[1].1, 4000);
        // At the kernel's default of two ticks, the ceiling already at HZ 250 and above it at HZ
        // 100 (docs/rules.md): only the packet budget, the time budget never lowered.
        for (hz, default) in [(250, 8000), (100, 20000)] {
            let r = advised(Some(hz), default);
            assert_eq!(
                r.iter()
                    .map(|(p, v, _)| (p.as_str(), *v))
                    .collect::<Vec<_>>(),
                [(BUDGET, 600)],
                "HZ {hz}"
            );
        }
    }

    /// A futile mark an earlier version left for a raise of the time budget within one tick
    /// (2000 to 4000 µs at HZ 250, which changed nothing) is dropped at start; one that moved
    /// the tick, or at an unknown rate, stands.
    #[test]
    fn a_futile_mark_from_a_raise_within_one_tick_is_dropped() {
        let mut rule = ReceivePathRule::default();
        let why = rule.restore_futile(Some((600, 4000)), Some(250)).unwrap();
        assert_eq!(rule.futile(), None);
        assert!(
            why.contains(
                "at HZ 250 it left a round's time limit where it was (1 tick(s) from 2000 µs)"
            ),
            "{why}"
        );
        assert_eq!(rule.restore_futile(Some((600, 8000)), Some(250)), None);
        assert_eq!(rule.futile(), Some((600, 8000)));
        assert_eq!(rule.restore_futile(Some((600, 4000)), Some(1000)), None);
        assert_eq!(rule.futile(), Some((600, 4000)));
        assert_eq!(rule.restore_futile(Some((600, 4000)), None), None);
        assert_eq!(rule.futile(), Some((600, 4000)));
        assert_eq!(rule.restore_futile(None, Some(250)), None);
        assert_eq!(rule.futile(), None);
    }

    /// Defect: the mark of budgets a raise to which did not help was kept whatever budgets the
    /// kernel had since, so once someone else set others, a raise back to the marked ones that
    /// did cut the squeezes was followed by no other: the stale mark held. It is forgotten when
    /// the rule reads other budgets (as the backlog's mark), and the raise is judged afresh.
    #[test]
    fn a_futile_budgets_mark_is_forgotten_once_the_kernel_has_other_budgets() {
        // The share of squeezed rounds at each netdev_budget: 3% at 300, 1.2% at 600 and above.
        let share_at = |budget: i64| if budget <= 300 { 1800 } else { 720 };
        let mut rule = ReceivePathRule::default();
        assert_eq!(rule.restore_futile(Some((600, 4000)), None), None);
        let mut k = kernel();
        k.set(BUDGET, 600);
        k.set(BUDGET_USECS, 4000);
        let mut advised = Vec::new();
        for i in 1..=30 {
            if i == 5 {
                // Someone else's budgets, and a calm window: the squeezes at the marked budgets
                // do not count in the run that leads to the next raise.
                k.set(BUDGET, 300);
                k.set(BUDGET_USECS, 2000);
            }
            // 60000 rounds in the 60 s window.
            let squeezes = if i == 5 {
                0
            } else {
                share_at(k.values[BUDGET])
            };
            let w = softnet(0, squeezes, 1000.0);
            for r in rule.on_window(&at(i), &w, &mut k, &auto()) {
                let v = r.recommended_value.as_ref().unwrap().as_int().unwrap();
                k.set(&r.parameter.to_string(), v);
                advised.push((i, r.parameter.name.clone(), v));
            }
            if i == 4 {
                assert_eq!(advised, [], "no raise from the marked budgets");
                assert_eq!(rule.futile(), Some((600, 4000)));
            }
        }
        let raise = |i, budget, usecs| {
            [
                (i, BUDGET.to_string(), budget),
                (i, BUDGET_USECS.to_string(), usecs),
            ]
        };
        assert_eq!(
            advised,
            [raise(7, 600, 4000), raise(9, 1200, 8000)].concat(),
            "3% to 1.2% is a cut: the next raise comes"
        );
        assert_eq!(rule.futile(), Some((1200, 8000)), "1.2% to 1.2% is not");
    }

    #[test]
    fn budgets_are_not_raised_again_after_a_raise_that_did_not_cut_the_squeezes() {
        // The share of squeezed rounds at each netdev_budget: 3% at 300, then 1.2% however high.
        let share_at = |budget: i64| if budget <= 300 { 1800 } else { 720 };
        let mut rule = ReceivePathRule::default();
        let mut k = kernel();
        let mut advised = Vec::new();
        for i in 1..=100 {
            let budget = k.values[BUDGET];
            // 60000 rounds in the 60 s window.
            let w = softnet(0, share_at(budget), 1000.0);
            let r = rule.on_window(&at(i), &w, &mut k, &auto());
            for r in &r {
                let v = r.recommended_value.as_ref().unwrap().as_int().unwrap();
                k.set(&r.parameter.to_string(), v);
                advised.push((i, r.parameter.name.clone(), v));
            }
        }
        let raise = |i, budget, usecs| {
            [
                (i, BUDGET.to_string(), budget),
                (i, BUDGET_USECS.to_string(), usecs),
            ]
        };
        assert_eq!(
            advised,
            [raise(2, 600, 4000), raise(4, 1200, 8000)].concat(),
            "3% to 1.2% is a cut; 1.2% to 1.2% is not, and the budgets stay"
        );
        assert!(
            advised.iter().all(|(_, _, v)| *v <= 8000),
            "8000 µs at most"
        );
    }

    /// Defect: a raise of which the kernel took one budget only (the other waiting for an
    /// approval, refused, or reverted by the guard) was taken for someone else's budgets and
    /// never judged, so the packet budget doubled every two windows (300, 600, 1200, 2400) with
    /// the squeezes never cut. The half taken is now judged as the raise.
    #[test]
    fn a_raise_of_which_only_the_packet_budget_is_taken_is_judged() {
        let budgets = |share_at: fn(i64) -> u64| {
            let mut rule = ReceivePathRule::default();
            let mut k = kernel();
            let mut advised = Vec::new();
            for i in 1..=60 {
                // 60000 rounds in the 60 s window.
                let w = softnet(0, share_at(k.values[BUDGET]), 1000.0);
                for r in rule.on_window(&at(i), &w, &mut k, &auto()) {
                    if r.parameter.name == BUDGET {
                        let v = r.recommended_value.as_ref().unwrap().as_int().unwrap();
                        k.set(BUDGET, v);
                        advised.push((i, v));
                    }
                }
                assert_eq!(k.values[BUDGET_USECS], 2000, "never taken");
            }
            (advised, rule.futile())
        };
        // A saturated CPU: 3% of its rounds squeezed whatever the budget.
        assert_eq!(budgets(|_| 1800), (vec![(2, 600)], Some((600, 2000))));
        // 3% at 300, 1.2% above: the first raise helped, the second did not.
        assert_eq!(
            budgets(|b| if b <= 300 { 1800 } else { 720 }),
            (vec![(2, 600), (4, 1200)], Some((1200, 2000)))
        );
    }

    /// A raise not yet taken (waiting for an approval) is judged only from the windows at its
    /// budgets: the windows before it still has the old ones do not count against it.
    #[test]
    fn a_raise_is_judged_only_by_windows_at_its_budgets() {
        let mut rule = ReceivePathRule::default();
        let mut k = kernel();
        let squeezed = softnet(0, 1800, 1000.0);
        rule.on_window(&at(1), &squeezed, &mut k, &auto());
        assert_eq!(rule.on_window(&at(2), &squeezed, &mut k, &auto()).len(), 2);
        for i in 3..5 {
            assert!(rule
                .on_window(&at(i), &squeezed, &mut k, &auto())
                .is_empty());
        }
        k.set(BUDGET, 600);
        k.set(BUDGET_USECS, 4000);
        let better = softnet(0, 720, 1000.0);
        rule.on_window(&at(5), &better, &mut k, &auto());
        let r = rule.on_window(&at(6), &better, &mut k, &auto());
        assert_eq!(r.len(), 2, "judged by windows 5 and 6: a cut");
        assert_eq!(r[0].recommended_value, Some(Value::Int(1200)));
    }

    #[test]
    fn a_small_share_of_rounds_is_not_squeezed_and_a_calm_window_restarts_the_count() {
        let mut rule = ReceivePathRule::default();
        let mut k = kernel();
        // 10/s but of 100000 rounds/s: 0.01%.
        let busy_but_fine = softnet(0, 600, 100000.0);
        let squeezed = softnet(0, 600, 1000.0);
        for i in 0..4 {
            assert!(rule
                .on_window(&at(i), &busy_but_fine, &mut k, &auto())
                .is_empty());
        }
        assert!(rule
            .on_window(&at(4), &squeezed, &mut k, &auto())
            .is_empty());
        assert!(rule
            .on_window(&at(5), &busy_but_fine, &mut k, &auto())
            .is_empty());
        assert!(rule
            .on_window(&at(6), &squeezed, &mut k, &auto())
            .is_empty());
        assert_eq!(rule.on_window(&at(7), &squeezed, &mut k, &auto()).len(), 2);
    }

    #[test]
    fn steps_stay_within_policy() {
        let mut k = kernel();
        let p = StaticPolicy::new()
            .with(
                MAX_BACKLOG,
                &[Source::Rules],
                ParamLimits::new(Mode::Recommend).step(Step::Percent(Percent::whole(25))),
            )
            .with(
                BUDGET,
                &[Source::Rules],
                ParamLimits::new(Mode::Auto).bounds(100, 300),
            )
            .with(
                BUDGET_USECS,
                &[Source::Rules],
                ParamLimits::new(Mode::Auto).bounds(1000, 10000),
            );
        let r = ReceivePathRule::default().on_tick(&at(1), &softnet(5, 0, 1.0), &mut k, &p);
        assert_eq!(r[0].recommended_value, Some(Value::Int(1250)));
        assert!(!r[0].can_auto_apply);
        let mut rule = ReceivePathRule::default();
        let squeezed = softnet(0, 600, 1000.0);
        rule.on_window(&at(1), &squeezed, &mut k, &p);
        let r = rule.on_window(&at(2), &squeezed, &mut k, &p);
        assert_eq!(r.len(), 1, "budget is at its max: only usecs");
        assert_eq!(r[0].parameter.to_string(), BUDGET_USECS);
        assert_eq!(r[0].recommended_value, Some(Value::Int(4000)));
        // Without a policy max, the rule's own ceiling.
        k.set(MAX_BACKLOG, 12000);
        let r = ReceivePathRule::default().on_tick(&at(1), &softnet(5, 0, 1.0), &mut k, &auto());
        assert_eq!(r[0].recommended_value, Some(Value::Int(16384)));
    }
}
