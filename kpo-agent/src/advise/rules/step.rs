//! How far a rule moves a parameter in one step, within the policy: the rule proposes a target,
//! the policy's bounds and `max_step` cap it, and a step that would not move, or that cannot reach
//! the policy's bounds, is no advice. And the recommendation that carries a step, the same for
//! every rule.
use tracing::warn;

use crate::{
    actuate::param::{ParamAddress, Value},
    advise::{
        limits::{Mode, ParamLimits},
        recommendation::{Recommendation, Source, WindowRef},
    },
};

/// Why the policy leaves a rule no step: every value within one `max_step` would be refused as
/// out of bounds, or the step allows no move at all. Logged as a warning, and given to the
/// operator as advice without a value ([`out_of_reach`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutOfReach(pub String);

/// Up from `current` toward `target` (at least to the policy's `min`, which the policy would
/// otherwise refuse), capped by its `max` (by `ceiling` without one) and its `max_step`. `None`
/// when that does not move it up; an error when the `min` is out of reach in one step: every value
/// the step allows would be refused as out of bounds (a warning says why).
pub fn try_raise(
    address: &ParamAddress,
    current: i64,
    target: i64,
    ceiling: i64,
    limits: Option<&ParamLimits>,
) -> Result<Option<i64>, OutOfReach> {
    within_reach(address, raised(current, target, ceiling, limits))
}

/// Down from `current` toward `target`, never below `floor` nor the policy's `min`, at most to its
/// `max` (which the policy would otherwise refuse), nor by more than its `max_step`. `None` when
/// that does not move it down; an error when no value at or above `floor` within one step is at
/// or below the `max` (a warning says why).
pub fn try_lower(
    address: &ParamAddress,
    current: i64,
    target: i64,
    floor: i64,
    limits: Option<&ParamLimits>,
) -> Result<Option<i64>, OutOfReach> {
    within_reach(address, lowered(current, target, floor, limits))
}

/// [`try_raise`]'s step, `None` when there is none (out of reach or not).
pub fn raise(
    address: &ParamAddress,
    current: i64,
    target: i64,
    ceiling: i64,
    limits: Option<&ParamLimits>,
) -> Option<i64> {
    try_raise(address, current, target, ceiling, limits)
        .ok()
        .flatten()
}

/// [`lower`]'s value without its warning, for a rule that weighs a step before it advises one
/// (the warning is given when it does).
pub fn lower_to(
    current: i64,
    target: i64,
    floor: i64,
    limits: Option<&ParamLimits>,
) -> Option<i64> {
    lowered(current, target, floor, limits).ok().flatten()
}

fn within_reach(
    address: &ParamAddress,
    step: Result<Option<i64>, String>,
) -> Result<Option<i64>, OutOfReach> {
    step.map_err(|why| {
        warn!("rules: no step for {address}: {why}");
        OutOfReach(why)
    })
}

/// Advice without a value for a parameter the rule would move `up` (or down) from `current` but
/// the policy leaves no step for: without it an operator reading events saw the signal (drops)
/// and silence. It names the policy's entry and what to change there; it is latched as the
/// rule's dead end (`Latch::no_step`), so it is said once per situation and policy, and a reload
/// that widens the entry is answered at once.
pub fn out_of_reach(
    at: &WindowRef,
    parameter: ParamAddress,
    current: i64,
    up: bool,
    limits: Option<&ParamLimits>,
    why: &OutOfReach,
) -> Recommendation {
    let show = |v: Option<i128>| v.map_or("-".to_string(), |v| v.to_string());
    let entry = limits.map_or(String::new(), |l| {
        format!(
            " (the policy's entry for it: min {}, max {}, max_step {})",
            show(l.min),
            show(l.max),
            l.max_step.map_or("-".to_string(), |s| s.to_string())
        )
    });
    let reason = format!(
        "The rules would {} {parameter} from {current}, but the policy allows no step{entry}: {}. \
Nothing is proposed until the policy is changed (a reload is answered at the next tick or window).",
        if up { "raise" } else { "lower" },
        why.0,
    );
    Recommendation {
        id: Recommendation::make_id(Source::Rules, at.index, &parameter, None),
        parameter,
        current_value: Some(Value::Int(current.into())),
        recommended_value: None,
        can_auto_apply: false,
        reason,
        confidence: 1.0,
        source: Source::Rules,
        window: at.clone(),
        application: None,
        netns_cookie: None,
    }
}

/// A policy bound in the rules' `i64`, which their values are read in: a bound beyond it is no
/// bound for them, and held within it their saturating arithmetic cannot overflow.
fn narrow(bound: Option<i128>) -> Option<i64> {
    bound.map(|b| i64::try_from(b).unwrap_or(if b < 0 { i64::MIN } else { i64::MAX }))
}

/// [`raise`]'s step, or why the policy's bounds are out of its reach.
fn raised(
    current: i64,
    target: i64,
    ceiling: i64,
    limits: Option<&ParamLimits>,
) -> Result<Option<i64>, String> {
    let min = narrow(limits.and_then(|l| l.min));
    let max = narrow(limits.and_then(|l| l.max));
    let mut next = target
        .max(min.unwrap_or(i64::MIN))
        .min(max.unwrap_or(ceiling));
    // The policy's max, not the rule's own ceiling, stands between the value and the target:
    // a dead end the operator made (a reload that narrowed max, or max reached), said as the
    // min side's is (s47 storyN N-1: the rules went silent while the drops went on).
    if let Some(max) = max.filter(|max| *max <= current && target > current && *max < ceiling) {
        return Err(format!(
            "the policy refuses anything above its max {max}, and the value is {current} now: \
             raise max"
        ));
    }
    if next <= current {
        return Ok(None);
    }
    let step = limits.and_then(|l| l.max_step);
    if let Some(step) = step {
        stuck(step, current)?;
        next = next.min(current.saturating_add(allowed(step, current)));
    }
    if let Some(min) = min.filter(|min| next < *min) {
        let why = match step {
            Some(step) if next < max.unwrap_or(ceiling) => format!(
                "max_step {step} allows at most {} from {current}",
                current.saturating_add(allowed(step, current))
            ),
            _ => format!("the rule goes no higher than {ceiling}"),
        };
        return Err(format!(
            "the policy refuses anything below its min {min}, and {why}: widen max_step or lower \
             min"
        ));
    }
    Ok((next > current).then_some(next))
}

/// [`lower`]'s step, or why the policy's bounds are out of its reach.
fn lowered(
    current: i64,
    target: i64,
    floor: i64,
    limits: Option<&ParamLimits>,
) -> Result<Option<i64>, String> {
    let max = narrow(limits.and_then(|l| l.max));
    // At the policy's min, a lowering (a step back after calm, less swapping) is no advice and
    // no word: unlike a raise against drops, nothing is lost by not taking it, and an operator
    // who pinned min would be told to lower it every `repeat_windows` (s47 review2 N6).
    let mut next = target
        .max(floor)
        .max(narrow(limits.and_then(|l| l.min)).unwrap_or(i64::MIN));
    if next >= current {
        return Ok(None);
    }
    if let Some(step) = limits.and_then(|l| l.max_step) {
        stuck(step, current)?;
    }
    if let Some(max) = max.filter(|max| next > *max) {
        if max < floor {
            return Err(format!(
                "the policy refuses anything above its max {max}, and the rule goes no lower than \
                 {floor}"
            ));
        }
        next = max;
    }
    let step = limits.and_then(|l| l.max_step);
    if let Some(step) = step {
        next = next.max(current.saturating_sub(allowed(step, current)));
    }
    if let (Some(max), Some(step)) = (max.filter(|max| next > *max), step) {
        return Err(format!(
            "the policy refuses anything above its max {max}, and max_step {step} allows no lower \
             than {} from {current}: widen max_step or raise max",
            current.saturating_sub(allowed(step, current))
        ));
    }
    Ok((next < current).then_some(next))
}

/// Why the policy's `max_step` allows no move at all from `current`: a percentage of a small
/// value (or of 0) rounds down to 0, and the policy refuses any change larger than that, so the
/// parameter could never move. Not a step of 1 instead: the policy would refuse it.
fn stuck(step: crate::advise::limits::Step, current: i64) -> Result<(), String> {
    if allowed(step, current) > 0 {
        return Ok(());
    }
    let how = match step {
        crate::advise::limits::Step::Percent(_) => "an absolute max_step, or a larger one",
        crate::advise::limits::Step::Absolute(_) => "a larger max_step",
    };
    Err(format!(
        "max_step {step} allows no change at all from {current}: the parameter cannot move; \
         set {how}"
    ))
}

/// The policy's step from `current`, in the rules' `i64` (a step beyond it is no limit).
fn allowed(step: crate::advise::limits::Step, current: i64) -> i64 {
    i64::try_from(step.allowed_from(current.into())).unwrap_or(i64::MAX)
}

/// A recommendation to move `parameter` from `current` to `target`, the rule's own step being to
/// `wanted` (the reason says which of the policy's limits made it `target` instead). It may be
/// applied without a person only when the policy has rules in `auto` for it; without the
/// policy's leave, the reason says so.
#[allow(clippy::too_many_arguments)]
pub fn change(
    at: &WindowRef,
    parameter: ParamAddress,
    current: i64,
    wanted: i64,
    target: i64,
    limits: Option<&ParamLimits>,
    mut reason: String,
    confidence: f64,
) -> Recommendation {
    reason.push_str(&shaped_by_the_policy(current, wanted, target, limits));
    if limits.is_none() {
        // Its entry's `sources` or its `namespaces` (s49 storyV V1: an operator told only the
        // first added `rules` to `sources` while `namespaces` left the pod's namespace out).
        reason.push_str(
            " The policy does not let rules change this parameter here: its entry leaves rules \
             out of `sources`, or this namespace out of `namespaces`.",
        );
    }
    Recommendation {
        id: Recommendation::make_id(
            Source::Rules,
            at.index,
            &parameter,
            Some(&Value::Int(target.into())),
        ),
        parameter,
        current_value: Some(Value::Int(current.into())),
        recommended_value: Some(Value::Int(target.into())),
        can_auto_apply: limits.is_some_and(|l| l.mode == Mode::Auto),
        reason,
        confidence,
        source: Source::Rules,
        window: at.clone(),
        application: None,
        netns_cookie: None,
    }
}

/// Which of the policy's limits made the step `target` where the rule's own was to `wanted`: its
/// `min` lifting it, its `max` capping it, or its `max_step` cutting it short. Empty when the step
/// is the rule's, or its own ceiling or floor made it (its reason says those). Without these
/// words a raise of 128 to 1024 under a 2x rule read as the rule's own choice (s44 storyC).
fn shaped_by_the_policy(
    current: i64,
    wanted: i64,
    target: i64,
    limits: Option<&ParamLimits>,
) -> String {
    let Some(l) = limits.filter(|_| target != wanted) else {
        return String::new();
    };
    let (min, max) = (narrow(l.min), narrow(l.max));
    let stepped = l.max_step.map(|step| {
        let by = allowed(step, current);
        let end = if target > current {
            current.saturating_add(by)
        } else {
            current.saturating_sub(by)
        };
        (step, end)
    });
    let why = if min == Some(target) && target > wanted {
        format!("its min {target} lifts it")
    } else if max == Some(target) && target < wanted {
        format!("its max {target} caps it")
    } else if let Some((step, _)) = stepped.filter(|&(_, end)| end == target) {
        format!("its max_step {step} allows no farther from {current}")
    } else {
        return String::new();
    };
    format!(" The rule's own step is to {wanted}; the policy's entry makes it {target}: {why}.")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::advise::limits::{Percent, Step};

    #[test]
    fn the_reason_says_which_policy_limit_shaped_the_step() {
        let free = ParamLimits::new(Mode::Auto);
        assert_eq!(shaped_by_the_policy(128, 256, 256, Some(&free)), "");
        let lifted = ParamLimits::new(Mode::Auto).bounds(1024, 65535);
        assert_eq!(
            shaped_by_the_policy(128, 256, 1024, Some(&lifted)),
            " The rule's own step is to 256; the policy's entry makes it 1024: its min 1024 \
             lifts it."
        );
        let capped = ParamLimits::new(Mode::Auto).bounds(0, 300);
        assert_eq!(
            shaped_by_the_policy(128, 512, 300, Some(&capped)),
            " The rule's own step is to 512; the policy's entry makes it 300: its max 300 caps \
             it."
        );
        let stepped = ParamLimits::new(Mode::Auto).step(Step::Percent(Percent::whole(25)));
        assert_eq!(
            shaped_by_the_policy(1000, 2000, 1250, Some(&stepped)),
            " The rule's own step is to 2000; the policy's entry makes it 1250: its max_step \
             25% allows no farther from 1000."
        );
        assert_eq!(
            shaped_by_the_policy(1000, 500, 750, Some(&stepped)),
            " The rule's own step is to 500; the policy's entry makes it 750: its max_step 25% \
             allows no farther from 1000."
        );
        // The rule's own ceiling (or floor): its reason says so, not the policy's words.
        assert_eq!(shaped_by_the_policy(1000, 99999, 16384, Some(&free)), "");
        // No policy entry for rules: nothing of the policy shaped it.
        assert_eq!(shaped_by_the_policy(128, 256, 1024, None), "");
    }

    #[test]
    fn raise_is_capped_by_bounds_and_step() {
        let addr: ParamAddress = "net.core.somaxconn".parse().unwrap();
        let free = ParamLimits::new(Mode::Auto);
        assert_eq!(
            try_raise(&addr, 1000, 2000, 16384, Some(&free)),
            Ok(Some(2000))
        );
        assert_eq!(
            try_raise(&addr, 1000, 99999, 16384, Some(&free)),
            Ok(Some(16384)),
            "ceiling"
        );
        let bounded = ParamLimits::new(Mode::Auto).bounds(100, 1500);
        assert_eq!(
            try_raise(&addr, 1000, 2000, 16384, Some(&bounded)),
            Ok(Some(1500))
        );
        // At the policy's max (or above it, after a reload that narrowed it): said, as a step
        // the min keeps out of reach is (s47 storyN N-1).
        for current in [1500, 1600] {
            assert_eq!(
                try_raise(&addr, current, 3000, 16384, Some(&bounded)),
                Err(OutOfReach(format!(
                    "the policy refuses anything above its max 1500, and the value is {current} \
                     now: raise max"
                ))),
                "at max"
            );
        }
        // No raise wanted, or the rule's own ceiling reached: nothing to say.
        assert_eq!(
            try_raise(&addr, 1500, 1400, 16384, Some(&bounded)),
            Ok(None)
        );
        let at_ceiling = ParamLimits::new(Mode::Auto).bounds(100, 16384);
        assert_eq!(
            try_raise(&addr, 16384, 99999, 16384, Some(&at_ceiling)),
            Ok(None)
        );
        assert_eq!(
            try_raise(&addr, 16, 32, 16384, Some(&bounded)),
            Ok(Some(100)),
            "up to the min"
        );
        let stepped = ParamLimits::new(Mode::Auto).step(Step::Percent(Percent::whole(25)));
        assert_eq!(
            try_raise(&addr, 1000, 2000, 16384, Some(&stepped)),
            Ok(Some(1250))
        );
        let absolute = ParamLimits::new(Mode::Auto).step(Step::Absolute(100));
        assert_eq!(
            try_raise(&addr, 1000, 2000, 16384, Some(&absolute)),
            Ok(Some(1100))
        );
        assert_eq!(
            try_raise(&addr, 1000, 2000, 16384, None),
            Ok(Some(2000)),
            "no policy: ceiling only"
        );
    }

    /// The policy's bounds and step reach the rules whole (beyond `i64`, an unsigned 64-bit
    /// one); the rules' values are `i64`, so such a bound is no bound for them, and their
    /// arithmetic at the ends of `i64` does not overflow.
    #[test]
    fn a_bound_beyond_i64_is_no_bound_for_the_rules() {
        let addr: ParamAddress = "net.core.somaxconn".parse().unwrap();
        let wide = ParamLimits::new(Mode::Auto)
            .bounds(i128::from(i64::MIN) - 1, u64::MAX.into())
            .step(Step::Absolute(u64::MAX.into()));
        assert_eq!(
            try_raise(&addr, i64::MAX - 1, i64::MAX, 16384, Some(&wide)),
            Ok(Some(i64::MAX))
        );
        assert_eq!(
            try_lower(&addr, i64::MIN + 1, i64::MIN, i64::MIN, Some(&wide)),
            Ok(Some(i64::MIN))
        );
    }

    /// A bound the step cannot reach is no advice: every value within the step would be refused
    /// as out of bounds. Within reach, the step goes to the bound.
    #[test]
    fn a_bound_out_of_reach_in_one_step_is_no_step_and_says_why() {
        let addr: ParamAddress = "net.core.somaxconn".parse().unwrap();
        let below_min = ParamLimits::new(Mode::Auto)
            .bounds(128, 65535)
            .step(Step::Percent(Percent::whole(50)));
        assert_eq!(
            raised(16, 32, 16384, Some(&below_min)),
            Err(
                "the policy refuses anything below its min 128, and max_step 50% allows at most 24 \
                 from 16: widen max_step or lower min"
                    .into()
            )
        );
        assert!(try_raise(&addr, 16, 32, 16384, Some(&below_min)).is_err());
        assert_eq!(
            try_raise(&addr, 100, 32, 16384, Some(&below_min)),
            Ok(Some(128)),
            "within reach: to the min"
        );
        let no_max = ParamLimits {
            min: Some(128),
            ..ParamLimits::new(Mode::Auto)
        };
        assert_eq!(
            raised(16, 32, 100, Some(&no_max)),
            Err(
                "the policy refuses anything below its min 128, and the rule goes no higher than \
                 100: widen max_step or lower min"
                    .into()
            )
        );
        let above_max = ParamLimits::new(Mode::Auto).bounds(0, 500);
        assert_eq!(
            try_lower(&addr, 2000, 1000, 10, Some(&above_max)),
            Ok(Some(500)),
            "down to the max"
        );
        let stepped = above_max.clone().step(Step::Percent(Percent::whole(10)));
        assert_eq!(
            lowered(2000, 1000, 10, Some(&stepped)),
            Err(
                "the policy refuses anything above its max 500, and max_step 10% allows no lower \
                 than 1800 from 2000: widen max_step or raise max"
                    .into()
            )
        );
        assert!(try_lower(&addr, 2000, 1000, 10, Some(&stepped)).is_err());
        assert_eq!(
            lowered(2000, 1000, 1024, Some(&above_max)),
            Err(
                "the policy refuses anything above its max 500, and the rule goes no lower than \
                 1024"
                    .into()
            )
        );
        assert_eq!(
            lowered(8, 4, 10, Some(&above_max)),
            Ok(None),
            "below the floor already: nothing to lower, nothing to say"
        );
    }

    /// Defect: a percentage max_step of a small value (or of 0) allows a step of 0, and the
    /// rules gave no advice without a word. Now it is out of reach like a bound, and says why;
    /// not a step of 1, which the policy would refuse.
    #[test]
    fn a_step_that_allows_no_change_says_so() {
        let ten = ParamLimits::new(Mode::Auto).step(Step::Percent(Percent::whole(10)));
        let why = |from: i64| {
            format!(
                "max_step 10% allows no change at all from {from}: the parameter cannot move; set \
                 an absolute max_step, or a larger one"
            )
        };
        assert_eq!(raised(5, 10, 100, Some(&ten)), Err(why(5)));
        assert_eq!(lowered(5, 2, 0, Some(&ten)), Err(why(5)));
        assert_eq!(raised(0, 10, 100, Some(&ten)), Err(why(0)));
        assert_eq!(
            raised(10, 20, 100, Some(&ten)),
            Ok(Some(11)),
            "10% of 10 is 1"
        );
        assert_eq!(
            raised(5, 5, 100, Some(&ten)),
            Ok(None),
            "nothing to move: nothing to say"
        );
        let addr: ParamAddress = "vm.swappiness".parse().unwrap();
        assert!(try_raise(&addr, 5, 10, 100, Some(&ten)).is_err());
    }

    #[test]
    fn lower_is_capped_by_floor_min_and_step() {
        let addr: ParamAddress = "vm.swappiness".parse().unwrap();
        let free = ParamLimits::new(Mode::Auto);
        assert_eq!(try_lower(&addr, 60, 30, 10, Some(&free)), Ok(Some(30)));
        assert_eq!(
            try_lower(&addr, 12, 6, 10, Some(&free)),
            Ok(Some(10)),
            "floor"
        );
        assert_eq!(
            try_lower(&addr, 10, 5, 10, Some(&free)),
            Ok(None),
            "at the floor"
        );
        let min = ParamLimits::new(Mode::Auto).bounds(40, 100);
        assert_eq!(try_lower(&addr, 60, 30, 10, Some(&min)), Ok(Some(40)));
        let stepped = ParamLimits::new(Mode::Auto).step(Step::Absolute(10));
        assert_eq!(try_lower(&addr, 60, 30, 10, Some(&stepped)), Ok(Some(50)));
    }

    #[test]
    fn change_follows_the_policys_mode() {
        let at = WindowRef {
            index: 3,
            end: "e".into(),
        };
        let addr: ParamAddress = "vm.swappiness".parse().unwrap();
        let auto = ParamLimits::new(Mode::Auto);
        let r = change(
            &at,
            addr.clone(),
            60,
            30,
            30,
            Some(&auto),
            "why.".into(),
            0.7,
        );
        assert!(r.can_auto_apply);
        assert_eq!(r.recommended_value, Some(Value::Int(30)));
        assert_eq!(r.reason, "why.");
        let rec = ParamLimits::new(Mode::Recommend);
        assert!(
            !change(
                &at,
                addr.clone(),
                60,
                30,
                30,
                Some(&rec),
                "why.".into(),
                0.7
            )
            .can_auto_apply
        );
        let none = change(&at, addr, 60, 30, 30, None, "why.".into(), 0.7);
        assert!(!none.can_auto_apply);
        assert!(none.reason.ends_with(
            "The policy does not let rules change this parameter here: its entry leaves rules \
             out of `sources`, or this namespace out of `namespaces`."
        ));
    }
}
