//! The memory rule: `vm.swappiness` (a host parameter) from memory pressure and what reclaim is
//! getting wrong, once per window.
//!
//! `vm.swappiness` weighs what reclaim takes when memory runs short: anonymous memory (written
//! to swap) against the page cache (dropped, re-read from disk when needed). The seed lowered it
//! because a high value "causes needless disk I/O". That is right only half the time, so this rule
//! looks at which side reclaim is hurting, from /proc/vmstat and PSI (the window's `system`):
//!
//! - **Lower** when memory is under pressure (PSI memory stall) *and* pages are read back from
//!   swap (`swap_in_pages_per_s`) at least as much as the page cache is re-read
//!   (`refault_anon` ≥ `refault_file`): reclaim is swapping out memory the programs still use.
//!   A lower value makes it prefer the page cache.
//! - **Raise** when memory is under pressure, swap-ins are low, swap has room, and the page
//!   cache is re-read (`refault_file`) many times more than anonymous pages: reclaim is
//!   dropping files the programs read again while idle anonymous memory stays. A higher value
//!   lets it swap those out instead.
//! - Nothing without swap (`swap_total_bytes` 0: the value has almost no effect), nor without
//!   pressure: swapping that stalls nobody is not a problem to fix.
//!
//! Memory signals are averages over seconds, so it runs per window only, and a direction must
//! hold `windows` windows in a row, counted again after each advice, and twice as long against
//! the direction of the last advice. Steps are halving down (to `floor`, 10 by default: 0 would
//! keep anonymous memory until the system is near OOM) and half again up (to `ceiling`, 100,
//! where both kinds cost the same), within the policy, and never past halfway to a value an
//! earlier step moved away from, nor smaller than `min_step`: reclaim that answers each step with
//! the other side's pattern narrows the value down until it settles. Hysteresis: [`Latch`]
//! keyed by direction and current value.
//!
//! On cgroup v1 hosts `vm.swappiness` reaches only the root memory cgroup (each other keeps its
//! own copy); the reason says so.
use tracing::warn;

use super::{host_address, latch::Latch, step, KernelView};
use crate::{
    actuate::param::ParamAddress,
    advise::{
        limits::AdvicePolicy,
        recommendation::{Recommendation, Source, WindowRef},
    },
    collect::procfs::HostMetrics,
    window::Window,
};

pub const SWAPPINESS: &str = "vm.swappiness";

pub const DESCS: &[(&str, &str)] = &[(
    SWAPPINESS,
    "reclaim's balance between swapping anonymous memory and dropping page cache; lowered when reclaim swaps out memory in use, raised when it thrashes the page cache",
)];

#[derive(Debug, Clone, PartialEq)]
pub struct MemoryConfig {
    /// Memory pressure: the share of the window some task stalled on memory (PSI `some`), or...
    pub some_stall_pct: f64,
    /// ...the share in which every task did (PSI `full`).
    pub full_stall_pct: f64,
    /// Swap-ins per second that count as swapping memory back.
    pub swap_in_pages_per_s: f64,
    /// Page-cache refaults per second, and their ratio to anonymous refaults, that count as the
    /// page cache thrashing.
    pub file_refault_pages_per_s: f64,
    pub file_to_anon_ratio: f64,
    /// Free swap, as a share of total, needed before raising.
    pub min_swap_free_share: f64,
    /// Windows in a row a direction must hold.
    pub windows: u32,
    /// The smallest step advised: a few points hardly shift reclaim's balance (it weighs
    /// anonymous memory against files as swappiness against 200 − swappiness), and between two
    /// values already tried they would only churn.
    pub min_step: i64,
    pub rearm_windows: u32,
    pub repeat_windows: u64,
    pub floor: i64,
    pub ceiling: i64,
}

impl Default for MemoryConfig {
    fn default() -> Self {
        Self {
            some_stall_pct: 10.0,
            full_stall_pct: 2.0,
            swap_in_pages_per_s: 50.0,
            file_refault_pages_per_s: 200.0,
            file_to_anon_ratio: 4.0,
            min_swap_free_share: 0.25,
            windows: 2,
            min_step: 5,
            rearm_windows: 3,
            repeat_windows: super::REPEAT_WINDOWS,
            floor: 10,
            ceiling: 100,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Direction {
    Lower,
    Raise,
}

#[derive(Debug, Clone, Default)]
pub struct MemoryRule {
    pub cfg: MemoryConfig,
    /// The direction seen in the last windows since the last advice, and for how many in a row.
    streak: Option<(Direction, u32)>,
    latch: Latch<(Direction, i64)>,
    /// The direction of the last advice, until calm re-arms: going back the other way takes
    /// twice the windows.
    last_advice: Option<Direction>,
    /// What the last advice replaced, while its direction still holds: the windows in a row that
    /// led to it and the direction of the advice before. Should it be refused for a passing
    /// reason, they are what counts again.
    before_advice: Option<(u32, Option<Direction>)>,
    /// Values the rule's steps moved the kernel away from, until calm forgets the last advice:
    /// one it lowered from was too high for this load (`above`), one it raised from too low
    /// (`below`). Later steps stay strictly between them, going at most halfway to one, so a
    /// load that answers each step with the other side's pattern narrows the value down
    /// instead of swinging it.
    above: Option<i64>,
    below: Option<i64>,
    /// The last advice, (direction, from, to), until the kernel is seen with one of the two.
    moving: Option<(Direction, i64, i64)>,
}

impl MemoryRule {
    pub fn on_window(
        &mut self,
        at: &WindowRef,
        w: &Window,
        kernel: &mut dyn KernelView,
        policy: &dyn AdvicePolicy,
    ) -> Vec<Recommendation> {
        let s = &w.system;
        let Some(direction) = self.direction(s) else {
            self.streak = None;
            self.before_advice = None;
            self.latch.calm(self.cfg.rearm_windows);
            if !self.latch.is_set() {
                // Re-armed by calm: the last advice is history, either way is a fresh onset.
                self.last_advice = None;
                self.above = None;
                self.below = None;
                self.moving = None;
            }
            return Vec::new();
        };
        self.latch.pressed();
        let count = match self.streak {
            Some((d, n)) if d == direction => n + 1,
            _ => {
                self.before_advice = None;
                1
            }
        };
        self.streak = Some((direction, count));
        // Against the last advice, the pattern must hold twice as long: reclaim moved by that
        // advice can show the other side for a while, and the value must not swing with it.
        let needed = if self.last_advice.is_some_and(|d| d != direction) {
            self.cfg.windows.saturating_mul(2)
        } else {
            self.cfg.windows
        };
        if count < needed {
            return Vec::new();
        }
        let addr = host_address(SWAPPINESS);
        let Some(current) = kernel.current(&addr) else {
            return Vec::new();
        };
        self.follow(current);
        let limits = policy.allowed(&addr, Source::Rules);
        let situation = (direction, current);
        if !self.latch.ready(
            at.index,
            &situation,
            std::slice::from_ref(&limits),
            self.cfg.repeat_windows,
        ) {
            return Vec::new();
        }
        let (wanted, target) = match direction {
            Direction::Lower => {
                // Rounded up: never down to a value raised from.
                let half_way = self.below.map_or(i64::MIN, |b| (b + current + 1) / 2);
                let wanted = (current / 2).max(half_way).max(self.cfg.floor);
                let step = (current - wanted >= self.cfg.min_step).then(|| {
                    step::try_lower(&addr, current, wanted, self.cfg.floor, limits.as_ref())
                });
                (wanted, step)
            }
            // Not above the rule's ceiling even where the policy's `max` is higher: past 100
            // reclaim prefers swapping anonymous memory to dropping files, which this rule has no
            // signal to judge.
            Direction::Raise => {
                let half_way = self.above.map_or(i64::MAX, |a| (current + a) / 2);
                let wanted = (current + (current / 2).max(10))
                    .min(self.cfg.ceiling)
                    .min(half_way);
                let step = (wanted - current >= self.cfg.min_step).then(|| {
                    step::try_raise(&addr, current, wanted, self.cfg.ceiling, limits.as_ref())
                });
                (wanted, step)
            }
        };
        // The policy's `max_step` or bounds can shrink a step the rule judged worth making:
        // under `min_step` it is no advice either.
        let target = match target {
            Some(Ok(Some(target))) if (target - current).abs() < self.cfg.min_step => {
                let why = format!(
                    "the policy allows {current} to move only to {target}, under the rule's min_step {}: a smaller step hardly shifts reclaim; widen max_step or the bounds",
                    self.cfg.min_step
                );
                warn!("rules: no step for {addr}: {why}");
                Err(step::OutOfReach(why))
            }
            Some(Ok(target)) => Ok(target),
            Some(Err(no)) => Err(no),
            None => Ok(None),
        };
        let target = match target {
            Ok(Some(target)) => target,
            dead_end => {
                self.latch
                    .no_step(at.index, situation, vec![limits.clone()]);
                let up = direction == Direction::Raise;
                return dead_end
                    .err()
                    .map(|no| step::out_of_reach(at, addr, current, up, limits.as_ref(), &no))
                    .into_iter()
                    .collect();
            }
        };
        self.latch.record(at.index, situation, vec![limits.clone()]);
        self.moving = Some((direction, current, target));
        // The next step waits for `windows` windows under the new value: none yet, in this
        // direction (a window the other way or without one breaks the run, as before).
        self.streak = Some((direction, 0));
        self.before_advice = Some((count, self.last_advice));
        self.last_advice = Some(direction);
        let seen = format!(
            "for {count} windows up to window {} ({}); in that window, memory stalls {} of the time, {} pages/s read back from swap, page-cache refaults {} pages/s, anonymous refaults {} pages/s",
            at.index,
            at.end,
            stalls(s),
            num(s.swap_in_pages_per_s),
            num(s.refault_file_pages_per_s),
            num(s.refault_anon_pages_per_s),
        );
        let why = match direction {
            Direction::Lower => format!(
                "Reclaim is swapping out memory that programs still use: lowering {SWAPPINESS} from {current} to {target} makes it drop page cache first and keep anonymous memory. It applies at once."
            ),
            Direction::Raise => format!(
                "Reclaim keeps dropping files that programs read again while swap has room and little comes back from it: raising {SWAPPINESS} from {current} to {target} lets it swap out idle anonymous memory instead. It applies at once."
            ),
        };
        let v1 = if kernel.cgroup_v1() {
            format!(
                " This host's memory cgroups are cgroup v1's: each keeps its own memory.swappiness (copied from its parent when it was made), and {SWAPPINESS} reaches only the root cgroup, not existing containers or services."
            )
        } else {
            String::new()
        };
        vec![step::change(
            at,
            addr,
            current,
            wanted,
            target,
            limits.as_ref(),
            format!("{seen}. {why}{v1}"),
            0.6,
        )]
    }

    /// Advice for swappiness was refused for a reason that has passed. If the kernel still has
    /// the value advised on and the run that led to the advice has not broken, that run counts
    /// again (with the windows since) and the advice before it is the last: the next window in
    /// the same direction advises again.
    pub fn release(&mut self, address: &ParamAddress, kernel: &mut dyn KernelView) {
        if *address != host_address(SWAPPINESS) {
            return;
        }
        let Some(&(direction, value)) = self.latch.advised() else {
            return;
        };
        if kernel.current(address) != Some(value) {
            return;
        }
        self.latch.release_if(|_| true);
        if let (Some((count, before)), Some((d, since))) = (self.before_advice.take(), self.streak)
        {
            if d == direction {
                self.streak = Some((d, count.saturating_add(since)));
                self.last_advice = before;
            }
        }
    }

    /// Learns from the kernel's value `current` whether the last advice was taken: a value
    /// stepped away from bounds the later steps. A value outside those bounds was set by someone
    /// else, and what the rule learnt no longer frames it.
    fn follow(&mut self, current: i64) {
        if let Some((direction, from, to)) = self.moving {
            if current == to {
                match direction {
                    Direction::Lower => self.above = Some(self.above.map_or(from, |a| a.min(from))),
                    Direction::Raise => self.below = Some(self.below.map_or(from, |b| b.max(from))),
                }
                self.moving = None;
            } else if current != from {
                self.moving = None;
            }
        }
        if self.above.is_some_and(|a| current >= a) || self.below.is_some_and(|b| current <= b) {
            self.above = None;
            self.below = None;
        }
    }

    /// Which way this window points, if any.
    fn direction(&self, s: &HostMetrics) -> Option<Direction> {
        let swap_total = s.swap_total_bytes?;
        if swap_total == 0 {
            return None;
        }
        let pressed = s
            .psi_memory_some_stall_pct
            .is_some_and(|p| p >= self.cfg.some_stall_pct)
            || s.psi_memory_full_stall_pct
                .is_some_and(|p| p >= self.cfg.full_stall_pct);
        if !pressed {
            return None;
        }
        let swap_in = s.swap_in_pages_per_s?;
        let anon = s.refault_anon_pages_per_s;
        let file = s.refault_file_pages_per_s;
        if swap_in >= self.cfg.swap_in_pages_per_s && anon.zip(file).is_none_or(|(a, f)| a >= f) {
            return Some(Direction::Lower);
        }
        let (Some(anon), Some(file)) = (anon, file) else {
            return None;
        };
        let room = s
            .swap_free_bytes
            .is_some_and(|free| free as f64 >= self.cfg.min_swap_free_share * swap_total as f64);
        let thrashing = file >= self.cfg.file_refault_pages_per_s
            && file >= self.cfg.file_to_anon_ratio * anon.max(1.0);
        (swap_in < self.cfg.swap_in_pages_per_s && room && thrashing).then_some(Direction::Raise)
    }
}

fn stalls(s: &HostMetrics) -> String {
    format!(
        "some {}% / full {}%",
        num(s.psi_memory_some_stall_pct),
        num(s.psi_memory_full_stall_pct)
    )
}

fn num(v: Option<f64>) -> String {
    v.map_or_else(|| "unknown".into(), |v| format!("{v}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        actuate::param::Value,
        advise::{
            limits::{Mode, ParamLimits, StaticPolicy, Step},
            rules::testing::{at, window, FakeKernel},
        },
    };

    const GIB: u64 = 1 << 30;

    /// A recorded window: PSI memory some/full %, swap-ins, anon and file refaults (pages/s).
    fn memory(some: f64, full: f64, swap_in: f64, anon: f64, file: f64) -> Window {
        let mut w = window(vec![]);
        let s = &mut w.system;
        s.swap_total_bytes = Some(4 * GIB);
        s.swap_free_bytes = Some(3 * GIB);
        s.psi_memory_some_stall_pct = Some(some);
        s.psi_memory_full_stall_pct = Some(full);
        s.swap_in_pages_per_s = Some(swap_in);
        s.refault_anon_pages_per_s = Some(anon);
        s.refault_file_pages_per_s = Some(file);
        w
    }

    fn auto() -> StaticPolicy {
        StaticPolicy::new().with(
            SWAPPINESS,
            &[Source::Rules],
            ParamLimits::new(Mode::Auto).bounds(0, 200),
        )
    }

    #[test]
    fn swapping_back_under_pressure_lowers_it_after_two_windows_and_says_why() {
        let mut rule = MemoryRule::default();
        let mut k = FakeKernel::default().with(SWAPPINESS, 60);
        let w = memory(18.5, 3.0, 900.0, 850.0, 120.0);
        assert!(rule.on_window(&at(1), &w, &mut k, &auto()).is_empty());
        let r = rule.on_window(&at(2), &w, &mut k, &auto());
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].parameter.to_string(), SWAPPINESS);
        assert_eq!(r[0].recommended_value, Some(Value::Int(30)));
        assert!(r[0].can_auto_apply);
        for needle in [
            // The figures are the last window's, not the run's (s44 storyC).
            "for 2 windows up to window 2 (",
            "; in that window, memory stalls some 18.5% / full 3%",
            "900 pages/s read back",
            "swapping out memory that programs still use",
            "drop page cache first",
        ] {
            assert!(
                r[0].reason.contains(needle),
                "{needle:?} not in {}",
                r[0].reason
            );
        }
        assert!(
            rule.on_window(&at(3), &w, &mut k, &auto()).is_empty(),
            "once per value"
        );
        k.set(SWAPPINESS, 30);
        let r = rule.on_window(&at(4), &w, &mut k, &auto());
        assert_eq!(
            r[0].recommended_value,
            Some(Value::Int(15)),
            "applied, still bad: next step"
        );
        k.set(SWAPPINESS, 15);
        assert!(
            rule.on_window(&at(5), &w, &mut k, &auto()).is_empty(),
            "one window under the new value is not yet a judgement of it"
        );
        let r = rule.on_window(&at(6), &w, &mut k, &auto());
        assert_eq!(r[0].recommended_value, Some(Value::Int(10)), "the floor");
        k.set(SWAPPINESS, 10);
        for i in 7..10 {
            assert!(
                rule.on_window(&at(i), &w, &mut k, &auto()).is_empty(),
                "at the floor"
            );
        }
    }

    /// Going back the other way after advice takes twice the windows, and a raise stops at the
    /// rule's ceiling even under a policy that allows more.
    #[test]
    fn a_reversal_waits_longer_and_a_raise_stops_at_the_ceiling() {
        let mut rule = MemoryRule::default();
        let mut k = FakeKernel::default().with(SWAPPINESS, 60);
        let lower = memory(18.5, 3.0, 900.0, 850.0, 100.0);
        let raise = memory(12.0, 0.5, 2.0, 20.0, 3000.0);
        rule.on_window(&at(1), &lower, &mut k, &auto());
        assert_eq!(
            rule.on_window(&at(2), &lower, &mut k, &auto())[0].recommended_value,
            Some(Value::Int(30))
        );
        k.set(SWAPPINESS, 30);
        for i in 3..6 {
            assert!(
                rule.on_window(&at(i), &raise, &mut k, &auto()).is_empty(),
                "window {i}: against the last advice, 4 windows are needed"
            );
        }
        assert_eq!(
            rule.on_window(&at(6), &raise, &mut k, &auto())[0].recommended_value,
            Some(Value::Int(45))
        );
        let mut rule = MemoryRule::default();
        let mut k = FakeKernel::default().with(SWAPPINESS, 90);
        let wide = StaticPolicy::new().with(
            SWAPPINESS,
            &[Source::Rules],
            ParamLimits::new(Mode::Auto).bounds(0, 200),
        );
        rule.on_window(&at(1), &raise, &mut k, &wide);
        assert_eq!(
            rule.on_window(&at(2), &raise, &mut k, &wide)[0].recommended_value,
            Some(Value::Int(100)),
            "not 135: the policy's max does not lift the rule's ceiling"
        );
        k.set(SWAPPINESS, 100);
        rule.on_window(&at(3), &raise, &mut k, &wide);
        assert!(rule.on_window(&at(4), &raise, &mut k, &wide).is_empty());
    }

    /// Defect: when reclaim answers each step with the other side's pattern (the page cache
    /// thrashes after a lower, swap-ins follow a raise), the value swung for ever:
    /// 60→30→45→22→33→16→26→13→23→11→21→10→20→10→20… a change every 4 windows. Steps now stay
    /// between the values already stepped away from, and a step under 5 is no advice: it settles.
    #[test]
    fn a_load_that_answers_every_step_settles_instead_of_swinging() {
        let mut rule = MemoryRule::default();
        let mut k = FakeKernel::default().with(SWAPPINESS, 60);
        let lower = memory(18.5, 3.0, 900.0, 850.0, 100.0);
        let raise = memory(12.0, 0.5, 2.0, 20.0, 3000.0);
        let mut lowered_last = false;
        let mut advised = Vec::new();
        for i in 1..=200 {
            let w = if lowered_last { &raise } else { &lower };
            for r in rule.on_window(&at(i), w, &mut k, &auto()) {
                let v = r.recommended_value.and_then(|v| v.as_int()).unwrap();
                lowered_last = v < k.values[SWAPPINESS];
                k.set(SWAPPINESS, v);
                advised.push((i, v));
            }
        }
        assert_eq!(
            advised,
            [(2, 30), (6, 45), (10, 38)],
            "halfway between 30 (too low) and 45 (too high), then a step of 3 is not worth it"
        );
    }

    /// What the rule learnt of the values tried is forgotten with the last advice (calm), and
    /// does not hold a value someone else set outside them.
    #[test]
    fn the_values_stepped_away_from_are_forgotten_by_calm_or_a_value_outside_them() {
        let lower = memory(18.5, 3.0, 900.0, 850.0, 100.0);
        let raise = memory(12.0, 0.5, 2.0, 20.0, 3000.0);
        let calm = memory(0.0, 0.0, 0.0, 0.0, 0.0);
        let mut rule = MemoryRule::default();
        let mut k = FakeKernel::default().with(SWAPPINESS, 60);
        rule.on_window(&at(1), &lower, &mut k, &auto());
        rule.on_window(&at(2), &lower, &mut k, &auto());
        k.set(SWAPPINESS, 30);
        for i in 3..7 {
            rule.on_window(&at(i), &raise, &mut k, &auto());
        }
        k.set(SWAPPINESS, 45);
        assert_eq!((rule.above, rule.below), (Some(60), None));
        for i in 7..11 {
            rule.on_window(&at(i), &lower, &mut k, &auto());
        }
        assert_eq!((rule.above, rule.below), (Some(60), Some(30)));
        for i in 11..14 {
            rule.on_window(&at(i), &calm, &mut k, &auto());
        }
        assert_eq!((rule.above, rule.below), (None, None), "calm");
        let mut rule = MemoryRule::default();
        let mut k = FakeKernel::default().with(SWAPPINESS, 60);
        rule.on_window(&at(1), &lower, &mut k, &auto());
        rule.on_window(&at(2), &lower, &mut k, &auto());
        k.set(SWAPPINESS, 30);
        rule.on_window(&at(3), &lower, &mut k, &auto());
        rule.on_window(&at(4), &lower, &mut k, &auto());
        assert_eq!(rule.above, Some(60));
        k.set(SWAPPINESS, 80);
        rule.on_window(&at(5), &lower, &mut k, &auto());
        let r = rule.on_window(&at(6), &lower, &mut k, &auto());
        assert_eq!(rule.above, None, "80, set by someone else, is outside");
        assert_eq!(r[0].recommended_value, Some(Value::Int(40)));
    }

    #[test]
    fn on_cgroup_v1_the_reason_says_existing_cgroups_keep_their_own_swappiness() {
        let w = memory(18.5, 3.0, 900.0, 850.0, 120.0);
        for v1 in [false, true] {
            let mut rule = MemoryRule::default();
            let mut k = FakeKernel::default().with(SWAPPINESS, 60);
            k.cgroup_v1 = v1;
            rule.on_window(&at(1), &w, &mut k, &auto());
            let r = rule.on_window(&at(2), &w, &mut k, &auto());
            assert_eq!(
                r[0].reason.contains(
                    "memory cgroups are cgroup v1's: each keeps its own memory.swappiness"
                ),
                v1,
                "{}",
                r[0].reason
            );
        }
    }

    #[test]
    fn page_cache_thrashing_with_idle_swap_raises_it() {
        let mut rule = MemoryRule::default();
        let mut k = FakeKernel::default().with(SWAPPINESS, 10);
        let w = memory(12.0, 0.5, 2.0, 20.0, 3000.0);
        rule.on_window(&at(1), &w, &mut k, &auto());
        let r = rule.on_window(&at(2), &w, &mut k, &auto());
        assert_eq!(r[0].recommended_value, Some(Value::Int(20)));
        assert!(
            r[0].reason
                .contains("dropping files that programs read again"),
            "{}",
            r[0].reason
        );
    }

    #[test]
    fn no_swap_no_pressure_or_a_full_swap_gives_nothing() {
        let mut k = FakeKernel::default().with(SWAPPINESS, 60);
        let mut no_swap = memory(30.0, 5.0, 900.0, 850.0, 0.0);
        no_swap.system.swap_total_bytes = Some(0);
        let calm = memory(1.0, 0.0, 900.0, 850.0, 0.0);
        let mut full_swap = memory(12.0, 0.5, 2.0, 20.0, 3000.0);
        full_swap.system.swap_free_bytes = Some(GIB / 2);
        for w in [no_swap, calm, full_swap] {
            let mut rule = MemoryRule::default();
            for i in 0..4 {
                assert!(rule.on_window(&at(i), &w, &mut k, &auto()).is_empty());
            }
        }
        assert!(k.reads.is_empty(), "nothing read without a direction");
    }

    #[test]
    fn directions_must_hold_in_a_row_and_calm_rearms() {
        let mut rule = MemoryRule::default();
        let mut k = FakeKernel::default().with(SWAPPINESS, 60);
        let lower = memory(18.0, 3.0, 900.0, 850.0, 120.0);
        let raise = memory(12.0, 0.5, 2.0, 20.0, 3000.0);
        let calm = memory(0.0, 0.0, 0.0, 0.0, 0.0);
        assert!(rule.on_window(&at(1), &lower, &mut k, &auto()).is_empty());
        assert!(
            rule.on_window(&at(2), &raise, &mut k, &auto()).is_empty(),
            "direction changed"
        );
        assert!(rule.on_window(&at(3), &lower, &mut k, &auto()).is_empty());
        assert_eq!(rule.on_window(&at(4), &lower, &mut k, &auto()).len(), 1);
        for i in 5..8 {
            assert!(rule.on_window(&at(i), &calm, &mut k, &auto()).is_empty());
        }
        assert!(rule.on_window(&at(8), &lower, &mut k, &auto()).is_empty());
        assert_eq!(
            rule.on_window(&at(9), &lower, &mut k, &auto()).len(),
            1,
            "re-armed"
        );
    }

    /// Calm windows forget the last advice only in a row: windows pointing the other way between
    /// them break the run, so going back still takes the longer streak.
    #[test]
    fn calm_between_windows_of_the_other_direction_does_not_forget_the_last_advice() {
        let mut rule = MemoryRule::default();
        let mut k = FakeKernel::default().with(SWAPPINESS, 60);
        let lower = memory(18.5, 3.0, 900.0, 850.0, 100.0);
        let raise = memory(12.0, 0.5, 2.0, 20.0, 3000.0);
        let calm = memory(0.0, 0.0, 0.0, 0.0, 0.0);
        rule.on_window(&at(1), &lower, &mut k, &auto());
        assert_eq!(
            rule.on_window(&at(2), &lower, &mut k, &auto())[0].recommended_value,
            Some(Value::Int(30))
        );
        k.set(SWAPPINESS, 30);
        for (i, w) in [(3, &calm), (4, &raise), (5, &calm), (6, &raise), (7, &calm)] {
            assert!(rule.on_window(&at(i), w, &mut k, &auto()).is_empty(), "{i}");
        }
        for i in 8..11 {
            assert!(
                rule.on_window(&at(i), &raise, &mut k, &auto()).is_empty(),
                "window {i}: three calm windows, not in a row, keep the lower advice"
            );
        }
        let r = rule.on_window(&at(11), &raise, &mut k, &auto());
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].recommended_value, Some(Value::Int(45)));
    }

    /// Defect: `min_step` was checked before the policy's `max_step` and bounds cut the step,
    /// so a policy allowing 4 points moved swappiness 60 → 56 → 52 …, steps the docs call no
    /// advice (a few points hardly shift reclaim), each one a change to apply and guard.
    #[test]
    fn a_step_the_policy_cuts_under_min_step_is_no_advice() {
        let w = memory(18.0, 3.0, 900.0, 850.0, 120.0);
        let advised = |limits: ParamLimits| {
            let mut k = FakeKernel::default().with(SWAPPINESS, 60);
            let p = StaticPolicy::new().with(SWAPPINESS, &[Source::Rules], limits);
            let mut rule = MemoryRule::default();
            (1..=2)
                .flat_map(|i| rule.on_window(&at(i), &w, &mut k, &p))
                .map(|r| r.recommended_value.and_then(|v| v.as_int()))
                .collect::<Vec<_>>()
        };
        let auto = || ParamLimits::new(Mode::Auto);
        // No step: only the advice without a value that tells the operator so.
        assert_eq!(advised(auto().step(Step::Absolute(4))), [None]);
        assert_eq!(advised(auto().bounds(57, 100)), [None]);
        assert_eq!(advised(auto().step(Step::Absolute(5))), [Some(55)]);
        assert_eq!(advised(auto().bounds(55, 100)), [Some(55)]);
    }

    #[test]
    fn steps_stay_within_policy() {
        let mut k = FakeKernel::default().with(SWAPPINESS, 60);
        let w = memory(18.0, 3.0, 900.0, 850.0, 120.0);
        let stepped = StaticPolicy::new().with(
            SWAPPINESS,
            &[Source::Rules],
            ParamLimits::new(Mode::Recommend).step(Step::Absolute(10)),
        );
        let mut rule = MemoryRule::default();
        rule.on_window(&at(1), &w, &mut k, &stepped);
        let r = rule.on_window(&at(2), &w, &mut k, &stepped);
        assert_eq!(r[0].recommended_value, Some(Value::Int(50)));
        assert!(!r[0].can_auto_apply);
        let min = StaticPolicy::new().with(
            SWAPPINESS,
            &[Source::Rules],
            ParamLimits::new(Mode::Auto).bounds(40, 100),
        );
        let mut rule = MemoryRule::default();
        rule.on_window(&at(1), &w, &mut k, &min);
        let r = rule.on_window(&at(2), &w, &mut k, &min);
        assert_eq!(r[0].recommended_value, Some(Value::Int(40)));
    }
}
