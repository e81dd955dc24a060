//! How far a rule moves a parameter in one step, within the policy: the rule proposes a target,
//! the policy's bounds and `max_step` cap it, and a step that would not move is no advice. And
//! the recommendation that carries a step, the same for every rule.
use crate::{
    actuate::param::{ParamAddress, Value},
    advise::{
        limits::{Mode, ParamLimits},
        recommendation::{Recommendation, Source, WindowRef},
    },
};

/// Up from `current` toward `target` (at least to the policy's `min`, which the policy would
/// otherwise refuse), capped by its `max` (by `ceiling` without one) and its `max_step`. `None`
/// when that does not move it up.
pub fn raise(current: i64, target: i64, ceiling: i64, limits: Option<&ParamLimits>) -> Option<i64> {
    let min = limits.and_then(|l| l.min).unwrap_or(i64::MIN);
    let mut next = target
        .max(min)
        .min(limits.and_then(|l| l.max).unwrap_or(ceiling));
    if let Some(step) = limits.and_then(|l| l.max_step) {
        next = next.min(current.saturating_add(step.allowed_from(current)));
    }
    (next > current).then_some(next)
}

/// Down from `current` toward `target`, never below `floor` nor the policy's `min`, nor by more
/// than its `max_step`. `None` when that does not move it down.
pub fn lower(current: i64, target: i64, floor: i64, limits: Option<&ParamLimits>) -> Option<i64> {
    let mut next = target.max(floor);
    if let Some(min) = limits.and_then(|l| l.min) {
        next = next.max(min);
    }
    if let Some(step) = limits.and_then(|l| l.max_step) {
        next = next.max(current.saturating_sub(step.allowed_from(current)));
    }
    (next < current).then_some(next)
}

/// A recommendation to move `parameter` from `current` to `target`. It may be applied without a
/// person only when the policy has rules in `auto` for it; without the policy's leave, the reason
/// says so.
pub fn change(
    at: &WindowRef,
    parameter: ParamAddress,
    current: i64,
    target: i64,
    limits: Option<&ParamLimits>,
    mut reason: String,
    confidence: f64,
) -> Recommendation {
    if limits.is_none() {
        reason.push_str(" The policy does not let rules change this parameter.");
    }
    Recommendation {
        id: Recommendation::make_id(
            Source::Rules,
            at.index,
            &parameter,
            Some(&Value::Int(target)),
        ),
        parameter,
        current_value: Some(Value::Int(current)),
        recommended_value: Some(Value::Int(target)),
        can_auto_apply: limits.is_some_and(|l| l.mode == Mode::Auto),
        reason,
        confidence,
        source: Source::Rules,
        window: at.clone(),
        application: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::advise::limits::{Percent, Step};

    #[test]
    fn raise_is_capped_by_bounds_and_step() {
        let free = ParamLimits::new(Mode::Auto);
        assert_eq!(raise(1000, 2000, 16384, Some(&free)), Some(2000));
        assert_eq!(
            raise(1000, 99999, 16384, Some(&free)),
            Some(16384),
            "ceiling"
        );
        let bounded = ParamLimits::new(Mode::Auto).bounds(100, 1500);
        assert_eq!(raise(1000, 2000, 16384, Some(&bounded)), Some(1500));
        assert_eq!(raise(1500, 3000, 16384, Some(&bounded)), None, "at max");
        assert_eq!(
            raise(16, 32, 16384, Some(&bounded)),
            Some(100),
            "up to the min"
        );
        let stepped = ParamLimits::new(Mode::Auto).step(Step::Percent(Percent::whole(25)));
        assert_eq!(raise(1000, 2000, 16384, Some(&stepped)), Some(1250));
        let absolute = ParamLimits::new(Mode::Auto).step(Step::Absolute(100));
        assert_eq!(raise(1000, 2000, 16384, Some(&absolute)), Some(1100));
        assert_eq!(
            raise(1000, 2000, 16384, None),
            Some(2000),
            "no policy: ceiling only"
        );
    }

    #[test]
    fn lower_is_capped_by_floor_min_and_step() {
        let free = ParamLimits::new(Mode::Auto);
        assert_eq!(lower(60, 30, 10, Some(&free)), Some(30));
        assert_eq!(lower(12, 6, 10, Some(&free)), Some(10), "floor");
        assert_eq!(lower(10, 5, 10, Some(&free)), None, "at the floor");
        let min = ParamLimits::new(Mode::Auto).bounds(40, 100);
        assert_eq!(lower(60, 30, 10, Some(&min)), Some(40));
        let stepped = ParamLimits::new(Mode::Auto).step(Step::Absolute(10));
        assert_eq!(lower(60, 30, 10, Some(&stepped)), Some(50));
    }

    #[test]
    fn change_follows_the_policys_mode() {
        let at = WindowRef {
            index: 3,
            end: "e".into(),
        };
        let addr: ParamAddress = "vm.swappiness".parse().unwrap();
        let auto = ParamLimits::new(Mode::Auto);
        let r = change(&at, addr.clone(), 60, 30, Some(&auto), "why.".into(), 0.7);
        assert!(r.can_auto_apply);
        assert_eq!(r.recommended_value, Some(Value::Int(30)));
        assert_eq!(r.reason, "why.");
        let rec = ParamLimits::new(Mode::Recommend);
        assert!(!change(&at, addr.clone(), 60, 30, Some(&rec), "why.".into(), 0.7).can_auto_apply);
        let none = change(&at, addr, 60, 30, None, "why.".into(), 0.7);
        assert!(!none.can_auto_apply);
        assert!(none
            .reason
            .ends_with("does not let rules change this parameter."));
    }
}
