//! The policy as the advisors see it ([`AdvicePolicy`]): which parameters a source may drive, in
//! which mode, within which bounds and step. The change path still decides every proposal; this
//! view lets an advisor drop advice early and word its reasons within the policy.
use super::{Bound, MaxStep, Mode, Policy, Source};
use crate::{
    actuate::param::ParamAddress,
    advise::{
        limits::{self, AdvicePolicy, ParamLimits, Step},
        recommendation,
    },
};

fn source(s: recommendation::Source) -> Source {
    match s {
        recommendation::Source::Rules => Source::Rules,
        recommendation::Source::Llm => Source::Llm,
        recommendation::Source::Optimizer => Source::Optimizer,
    }
}

/// One bound for every element: the tightest of a per-element bound.
fn scalar(bound: &Option<Bound>, tightest: fn(i64, i64) -> i64) -> Option<i64> {
    match bound {
        None => None,
        Some(Bound::All(v)) => Some(*v),
        Some(Bound::Each(v)) => v.iter().copied().reduce(tightest),
    }
}

impl AdvicePolicy for Policy {
    fn allowed(&self, addr: &ParamAddress, by: recommendation::Source) -> Option<ParamLimits> {
        if self.deny_list().denies(&addr.policy_name()).is_some() {
            return None;
        }
        let rule = self.rule_for(addr);
        if !rule.sources.contains(&source(by)) || !rule.namespaces.covers(&addr.target) {
            return None;
        }
        let mut l = ParamLimits::new(match rule.mode {
            Mode::Observe => limits::Mode::Observe,
            Mode::Recommend => limits::Mode::Recommend,
            Mode::Auto => limits::Mode::Auto,
        });
        l.min = scalar(&rule.min, i64::max);
        l.max = scalar(&rule.max, i64::min);
        l.max_step = rule.max_step.map(|s| match s {
            MaxStep::Absolute(v) => Step::Absolute(v),
            MaxStep::Relative(f) => Step::Percent(f * 100.0),
        });
        Some(l)
    }

    fn is_denied(&self, policy_name: &str) -> bool {
        self.deny_list().denies(policy_name).is_some()
    }
}
