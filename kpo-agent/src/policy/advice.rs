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

/// One bound for every element, as `ParamLimits::min` / `max` hold it: for a per-element bound,
/// the loosest (the lowest min, the highest max), while `min_each` / `max_each` carry the lists
/// that each element is checked against. The tightest would contradict itself for bounds that
/// grow along the vector (`tcp_rmem`'s min `[4096, 16384, 1048576]` and max
/// `[65536, 1048576, 33554432]` would make min 1048576 above max 65536).
fn scalar(bound: &Option<Bound>, loosest: fn(i128, i128) -> i128) -> Option<i128> {
    match bound {
        None => None,
        Some(Bound::All(v)) => Some(*v),
        Some(Bound::Each(v)) => v.iter().copied().reduce(loosest),
    }
}

/// A per-element bound as its list.
fn each(bound: &Option<Bound>) -> Option<Vec<i128>> {
    match bound {
        Some(Bound::Each(v)) => Some(v.clone()),
        _ => None,
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
        let mut l = ParamLimits::new(match rule.mode_for(source(by)) {
            Mode::Observe => limits::Mode::Observe,
            Mode::Recommend => limits::Mode::Recommend,
            Mode::Auto => limits::Mode::Auto,
        });
        l.min = scalar(&rule.min, i128::min);
        l.max = scalar(&rule.max, i128::max);
        l.min_each = each(&rule.min);
        l.max_each = each(&rule.max);
        l.max_step = rule.max_step.map(|s| match s {
            MaxStep::Absolute(v) => Step::Absolute(v),
            MaxStep::Relative(p) => Step::Percent(p),
        });
        Some(l)
    }

    fn is_denied(&self, policy_name: &str) -> bool {
        self.deny_list().denies(policy_name).is_some()
    }
}

#[cfg(test)]
mod tests {
    use crate::{
        actuate::param::Value,
        advise::{
            limits::AdvicePolicy,
            llm::{offered_params, validate::validate, DropKind},
            recommendation::{Source, WindowRef},
        },
        policy::Policy,
    };

    /// A relative `max_step` gives the rules and the policy one number: the rules' step is the
    /// largest the policy applies, and one more is refused. In floating point these percentages
    /// gave the policy one less than the rules (0.333 × 1000 = 332.99999999999994).
    #[test]
    fn a_relative_step_is_the_same_for_the_rules_and_the_policy() {
        use crate::{
            advise::rules::step,
            policy::{Context, Decision, Proposal, Refusal, Source as By},
        };
        let address: crate::actuate::param::ParamAddress =
            "net.core.netdev_max_backlog".parse().unwrap();
        for (percent, before, limit) in [
            ("33.3%", 1000i64, 333i64),
            ("10.1%", 1000, 101),
            ("41%", 300, 123),
            ("69%", 300, 207),
            ("82%", 300, 246),
        ] {
            let policy = Policy::parse(
                &format!(
                    "[params.\"net.core.netdev_max_backlog\"]\nmode = \"auto\"\n\
                     max_step = \"{percent}\"\nsources = [\"rules\"]\n"
                ),
                "policy.toml",
            )
            .unwrap();
            let limits = policy.allowed(&address, Source::Rules).unwrap();
            assert_eq!(
                limits.max_step.unwrap().allowed_from(before.into()),
                i128::from(limit),
                "{percent}"
            );
            assert_eq!(limits.max_step.unwrap().to_string(), percent);
            let proposed = step::raise(&address, before, before * 10, 16384, Some(&limits));
            assert_eq!(proposed, Some(before + limit), "{percent}");
            let decide = |value: i64| {
                let mut ctx = Context::new(std::time::SystemTime::now());
                ctx.before = Some(Value::Int(before.into()));
                let p = Proposal {
                    address: address.clone(),
                    value: Value::Int(value.into()),
                    source: By::Rules,
                    reason: "test".into(),
                };
                policy.decide(&p, &ctx)
            };
            assert_eq!(decide(before + limit), Decision::Apply, "{percent}");
            assert_eq!(
                decide(before + limit + 1),
                Decision::Refused(Refusal::StepTooLarge {
                    element: None,
                    from: before.into(),
                    to: (before + limit + 1).into(),
                    max_step: percent.into(),
                    limit: limit.into(),
                }),
                "{percent}"
            );
        }
    }

    /// Defect: a bound beyond `i64` (`kernel.shmmax`'s, an unsigned 64-bit value) was left out
    /// of the advisors' limits, so the model was not shown it and validation accepted a value
    /// above it that the change path then refused. Now it reaches the prompt and validation
    /// with its exact digits.
    #[test]
    fn a_bound_beyond_i64_reaches_the_prompt_and_validation_exactly() {
        let policy = Policy::parse(
            "[params.\"kernel.shmmax\"]\nmode = \"auto\"\nmin = 4294967296\n\
             max = \"18446744073692774399\"\nsources = [\"llm\"]\n",
            "policy.toml",
        )
        .unwrap();
        let shmmax: crate::actuate::param::ParamAddress = "kernel.shmmax".parse().unwrap();
        let offered = offered_params(&policy, [(shmmax, Value::Int(8589934592))]);
        assert_eq!(offered.len(), 1);
        let user = crate::advise::llm::prompt::build_prompt(&offered, &[], &[]).user;
        assert!(
            user.contains(r#""mode":"auto","min":4294967296,"max":18446744073692774399"#),
            "{user}"
        );
        let window = WindowRef {
            index: 1,
            end: "t".into(),
        };
        let v = validate(
            vec![
                serde_json::json!({"parameter": "kernel.shmmax", "value": 18446744073692774400u64}),
                serde_json::json!({"parameter": "kernel.shmmax", "value": 18446744073692774398u64}),
            ],
            &offered,
            &policy,
            &window,
        );
        assert_eq!(v.dropped.len(), 1);
        assert_eq!(v.dropped[0].kind, DropKind::OutOfBounds);
        assert_eq!(
            v.dropped[0].detail,
            "18446744073692774400 is outside the policy's bounds [4294967296, \
             18446744073692774399]"
        );
        assert_eq!(v.accepted.len(), 1);
        assert_eq!(
            v.accepted[0].recommended_value,
            Some(Value::Int(18446744073692774398))
        );
    }

    /// docs/policy.md's `tcp_rmem` entry, with the `llm` among its sources.
    const RMEM: &str = r#"
[params."net.ipv4.tcp_rmem"]
mode = "recommend"
min = [4096, 16384, 1048576]     # element by element
max = [65536, 1048576, 33554432]
max_step = 1048576
sources = ["llm"]
"#;

    #[test]
    fn per_element_bounds_do_not_contradict_themselves() {
        let policy = Policy::parse(RMEM, "policy.toml").unwrap();
        let rmem = "net.ipv4.tcp_rmem".parse().unwrap();
        let limits = policy.allowed(&rmem, Source::Llm).unwrap();
        assert_eq!((limits.min, limits.max), (Some(4096), Some(33554432)));
        let offered = offered_params(&policy, [(rmem, Value::Ints(vec![4096, 131072, 3145728]))]);
        let window = WindowRef {
            index: 1,
            end: "t".into(),
        };
        let v = validate(
            vec![
                serde_json::json!({"parameter": "net.ipv4.tcp_rmem", "value": [8192, 262144, 4194304]}),
                serde_json::json!({"parameter": "net.ipv4.tcp_rmem", "value": [1, 262144, 4194304]}),
            ],
            &offered,
            &policy,
            &window,
        );
        assert_eq!(v.accepted.len(), 1);
        assert_eq!(
            v.accepted[0].recommended_value,
            Some(Value::Ints(vec![8192, 262144, 4194304]))
        );
        assert_eq!(v.dropped.len(), 1);
        assert_eq!(v.dropped[0].kind, DropKind::OutOfBounds);
        assert!(
            v.dropped[0].detail.contains("element 0"),
            "{}",
            v.dropped[0].detail
        );
        // Each element is held to its own bound: 100000 is within the loosest (4096..33554432)
        // but above element 0's max of 65536.
        let v = validate(
            vec![
                serde_json::json!({"parameter": "net.ipv4.tcp_rmem", "value": [100000, 262144, 4194304]}),
            ],
            &offered,
            &policy,
            &window,
        );
        assert!(v.accepted.is_empty());
        assert_eq!(v.dropped[0].kind, DropKind::OutOfBounds);
        assert!(
            v.dropped[0].detail.contains("65536"),
            "{}",
            v.dropped[0].detail
        );
        // The prompt shows the lists, not the loosest numbers.
        let limits = policy
            .allowed(&"net.ipv4.tcp_rmem".parse().unwrap(), Source::Llm)
            .unwrap();
        assert_eq!(limits.min_each, Some(vec![4096, 16384, 1048576]));
        assert_eq!(limits.max_each, Some(vec![65536, 1048576, 33554432]));
        let prompt = crate::advise::llm::prompt::build_prompt(&offered, &[], &[]);
        assert!(
            prompt
                .user
                .contains(r#""min_each":[4096,16384,1048576],"max_each":[65536,1048576,33554432]"#)
                && !prompt.user.contains(r#""min":"#),
            "{}",
            prompt.user
        );
    }
}
