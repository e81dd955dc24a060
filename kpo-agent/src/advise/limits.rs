//! What an advisor needs to know of the operator's policy, as a small trait: which parameters a
//! source may drive, within which bounds, in which mode, and which keys are never written.
//!
//! The real policy (`/etc/kpo/policy.toml`, the actuation path) implements [`AdvicePolicy`]; this
//! module also has [`StaticPolicy`], an in-memory implementation for tests and for embedding.
//! The checks here are the advisor's own: the actuation path checks the policy and the deny-list
//! again on every write.
use std::fmt;

use serde::{Deserialize, Serialize};

use super::recommendation::Source;
use crate::actuate::{
    param::{ParamAddress, Value},
    sysctl::decreasing_element,
};
pub use crate::policy::Percent;

/// What the policy lets happen to a parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Record only.
    Observe,
    /// Wait for a person to approve.
    Recommend,
    /// Apply without asking (within bounds, step and cooldown).
    Auto,
}

/// The largest change allowed in one step.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    /// In the parameter's own units.
    Absolute(i128),
    /// Percent of the current value.
    Percent(Percent),
}

impl Step {
    /// The largest allowed distance from `current`.
    pub fn allowed_from(self, current: i128) -> i128 {
        match self {
            Step::Absolute(n) => n.saturating_abs(),
            // The policy's own computation: a step it would refuse is never proposed.
            Step::Percent(p) => p.of(current),
        }
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Step::Absolute(n) => write!(f, "{n}"),
            Step::Percent(p) => write!(f, "{p}"),
        }
    }
}

/// The policy's limits for one parameter at one target, for one source.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ParamLimits {
    pub mode: Mode,
    /// Bounds, inclusive, for integers (each element of a vector such as `tcp_rmem`).
    pub min: Option<i128>,
    pub max: Option<i128>,
    /// Bounds element by element (`tcp_rmem`'s `min = [4096, 16384, 1048576]`), where the policy
    /// gives lists: element `i` is held to `min_each[i]` / `max_each[i]` instead of `min` / `max`
    /// (which then hold the loosest element, for a reader that knows one number only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_each: Option<Vec<i128>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_each: Option<Vec<i128>>,
    pub max_step: Option<Step>,
    /// For word-valued parameters (`scaling_governor`): the words allowed. `None` accepts any
    /// plain word (letters, digits, `_`, `-`), which the actuator validates against the kernel.
    #[serde(default)]
    pub words: Option<Vec<String>>,
}

impl ParamLimits {
    pub fn new(mode: Mode) -> Self {
        Self {
            mode,
            min: None,
            max: None,
            min_each: None,
            max_each: None,
            max_step: None,
            words: None,
        }
    }

    /// The bounds element `i` is held to.
    fn bounds_of(&self, i: usize) -> (Option<i128>, Option<i128>) {
        let each = |list: &Option<Vec<i128>>, all: Option<i128>| {
            list.as_ref().and_then(|l| l.get(i).copied()).or(all)
        };
        (
            each(&self.min_each, self.min),
            each(&self.max_each, self.max),
        )
    }

    /// Whether some value within one `max_step` of `current` is within the bounds, element by
    /// element: not when an element is outside them and farther than a step from them (16 under
    /// `min` 128 with `max_step` 100%), where every value would be refused. A word has no bounds.
    pub fn within_reach(&self, current: &Value) -> bool {
        let elements = match current {
            Value::Int(c) => std::slice::from_ref(c),
            Value::Ints(cs) => cs.as_slice(),
            Value::Word(_) => return true,
        };
        elements.iter().enumerate().all(|(i, &c)| {
            let (min, max) = self.bounds_of(i);
            let step = self.max_step.map(|s| s.allowed_from(c));
            let lo = step.map_or(i128::MIN, |a| c.saturating_sub(a));
            let hi = step.map_or(i128::MAX, |a| c.saturating_add(a));
            lo.max(min.unwrap_or(i128::MIN)) <= hi.min(max.unwrap_or(i128::MAX))
        })
    }

    pub fn bounds(mut self, min: i128, max: i128) -> Self {
        self.min = Some(min);
        self.max = Some(max);
        self
    }

    pub fn step(mut self, step: Step) -> Self {
        self.max_step = Some(step);
        self
    }

    /// Checks `proposed` for `address` against these limits, given the parameter's `current`
    /// value (which also fixes the expected type: an integer, a vector of that many integers, or
    /// a word). Bounds hold each element on its own, so a TCP memory triple is also checked to be
    /// in order (min <= default <= max).
    pub fn check(
        &self,
        address: &ParamAddress,
        current: &Value,
        proposed: &Value,
    ) -> Result<(), ValueRejection> {
        if !current.same_shape(proposed) {
            return Err(ValueRejection::WrongType {
                expected: shape(current),
                got: shape(proposed),
            });
        }
        match (current, proposed) {
            (Value::Word(_), Value::Word(w)) => {
                let plain = !w.is_empty()
                    && w.len() <= 64
                    && w.chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
                let listed = self
                    .words
                    .as_ref()
                    .is_none_or(|ws| ws.iter().any(|x| x == w));
                if !(plain && listed) {
                    Err(ValueRejection::WordNotAllowed(w.clone()))
                } else if self.min.is_some() || self.max.is_some() {
                    // As the policy decides (`check_bounds`): validation would otherwise
                    // accept, as automatic, a word the change path then always refuses.
                    Err(ValueRejection::WordAgainstBounds(w.clone()))
                } else {
                    Ok(())
                }
            }
            _ => {
                let (Some(cur), Some(new)) = (current.ints(), proposed.ints()) else {
                    return Err(ValueRejection::WrongType {
                        expected: shape(current),
                        got: shape(proposed),
                    });
                };
                for (i, (&c, &n)) in cur.iter().zip(&new).enumerate() {
                    let position = (cur.len() > 1).then_some(i);
                    let (min, max) = self.bounds_of(i);
                    if min.is_some_and(|min| n < min) || max.is_some_and(|max| n > max) {
                        return Err(ValueRejection::OutOfBounds {
                            value: n,
                            position,
                            min,
                            max,
                        });
                    }
                    if let Some(step) = self.max_step {
                        let allowed = step.allowed_from(c);
                        if n.abs_diff(c) > allowed.unsigned_abs() {
                            return Err(ValueRejection::StepTooLarge {
                                from: c,
                                to: n,
                                position,
                                max_step: step,
                            });
                        }
                    }
                }
                if let Some(position) = decreasing_element(address, proposed) {
                    return Err(ValueRejection::OutOfOrder {
                        name: address.name.clone(),
                        value: proposed.to_string(),
                        position,
                    });
                }
                Ok(())
            }
        }
    }
}

fn shape(v: &Value) -> String {
    match v {
        Value::Int(_) => "an integer".into(),
        Value::Ints(v) => format!("{} integers", v.len()),
        Value::Word(_) => "a word".into(),
    }
}

/// Why a value is refused by [`ParamLimits::check`].
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ValueRejection {
    #[error("wrong type: expected {expected}, got {got}")]
    WrongType { expected: String, got: String },
    #[error("{value}{} is outside the policy's bounds [{}, {}]", at(*.position), opt(*.min), opt(*.max))]
    OutOfBounds {
        value: i128,
        position: Option<usize>,
        min: Option<i128>,
        max: Option<i128>,
    },
    #[error("{from} -> {to}{} is a larger step than the policy's max_step {max_step}", at(*.position))]
    StepTooLarge {
        from: i128,
        to: i128,
        position: Option<usize>,
        max_step: Step,
    },
    #[error("word {0:?} is not allowed for this parameter")]
    WordNotAllowed(String),
    /// The policy refuses every word where it sets `min` or `max` (bounds are for numbers).
    #[error("word {0:?} is out of bounds: the policy sets min or max for this parameter, which only numbers meet")]
    WordAgainstBounds(String),
    #[error("{name} = {value} is out of order: element {position} is below element {}, and it needs min <= default <= max", position - 1)]
    OutOfOrder {
        name: String,
        value: String,
        position: usize,
    },
}

fn at(position: Option<usize>) -> String {
    position
        .map(|i| format!(" (element {i})"))
        .unwrap_or_default()
}

fn opt(v: Option<i128>) -> String {
    v.map_or_else(|| "-".to_string(), |v| v.to_string())
}

/// What validation needs from the operator's policy. Implemented by the real policy at the
/// actuation layer, and by [`StaticPolicy`].
pub trait AdvicePolicy: Send + Sync {
    /// The limits for `addr` when `source` proposes a change, or `None` when that source may not
    /// drive it (not in the policy, or the source is not among those allowed).
    fn allowed(&self, addr: &ParamAddress, source: Source) -> Option<ParamLimits>;

    /// Whether a parameter (by its policy name, `ParamAddress::policy_name`) is on the built-in
    /// deny-list that no policy can lift.
    fn is_denied(&self, policy_name: &str) -> bool {
        is_builtin_denied(policy_name)
    }
}

/// Whether the change path's deny-list ([`crate::policy::deny::DENY_LIST`], the one list) refuses
/// this parameter: advisors drop such advice early, before it could be proposed.
pub fn is_builtin_denied(policy_name: &str) -> bool {
    static LIST: std::sync::OnceLock<crate::policy::deny::DenyList> = std::sync::OnceLock::new();
    LIST.get_or_init(crate::policy::deny::DenyList::new)
        .denies(policy_name)
        .is_some()
}

/// `*` matches any run of characters (including none); everything else matches itself.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == text;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !text.starts_with(first) || text.len() < first.len() + last.len() {
        return false;
    }
    let mut rest = &text[first.len()..];
    for mid in &parts[1..parts.len() - 1] {
        match rest.find(mid) {
            Some(i) => rest = &rest[i + mid.len()..],
            None => return false,
        }
    }
    rest.ends_with(last)
}

/// One entry of a [`StaticPolicy`].
#[derive(Debug, Clone)]
pub struct StaticEntry {
    /// A full address (`net.core.somaxconn@netns:4026532281`) or a policy-name glob
    /// (`net.core.*`, `cpufreq:*:scaling_max_freq`), which then covers every target.
    pub pattern: String,
    pub sources: Vec<Source>,
    pub limits: ParamLimits,
}

/// An in-memory policy: the first matching entry wins; the built-in deny-list always applies.
#[derive(Debug, Clone, Default)]
pub struct StaticPolicy {
    pub entries: Vec<StaticEntry>,
}

impl StaticPolicy {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn with(mut self, pattern: &str, sources: &[Source], limits: ParamLimits) -> Self {
        self.entries.push(StaticEntry {
            pattern: pattern.to_string(),
            sources: sources.to_vec(),
            limits,
        });
        self
    }
}

impl AdvicePolicy for StaticPolicy {
    fn allowed(&self, addr: &ParamAddress, source: Source) -> Option<ParamLimits> {
        let full = addr.to_string();
        let name = addr.policy_name();
        let entry = self.entries.iter().find(|e| {
            e.pattern == full || (!e.pattern.contains('@') && glob_match(&e.pattern, &name))
        })?;
        entry
            .sources
            .contains(&source)
            .then(|| entry.limits.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deny_list_globs() {
        assert!(is_builtin_denied("kernel.core_pattern"));
        assert!(is_builtin_denied("kernel.usermodehelper.bset"));
        assert!(is_builtin_denied("net.core.bpf_jit_enable"));
        assert!(is_builtin_denied("user.max_user_namespaces"));
        assert!(is_builtin_denied("fs.protected_symlinks"));
        assert!(!is_builtin_denied("net.core.somaxconn"));
        assert!(!is_builtin_denied("kernel.core_patterns_are_fine"));
        // The same list as the change path's: what the actuation refuses, advisors drop.
        for name in [
            "kernel.poweroff_cmd",
            "kernel.kexec_load_limit_panic",
            "kernel.io_uring_disabled",
        ] {
            assert!(is_builtin_denied(name), "{name}");
        }
        assert!(glob_match("a*b*c", "aXXbYYc"));
        assert!(!glob_match("a*b*c", "aXXcYYb"));
        assert!(glob_match("*", ""));
    }

    #[test]
    fn limits_check_type_bounds_and_step() {
        let somaxconn: ParamAddress = "net.core.somaxconn".parse().unwrap();
        let l = ParamLimits::new(Mode::Auto)
            .bounds(128, 65535)
            .step(Step::Percent(Percent::whole(100)));
        let cur = Value::Int(4096);
        assert_eq!(l.check(&somaxconn, &cur, &Value::Int(8192)), Ok(()));
        assert!(matches!(
            l.check(&somaxconn, &cur, &Value::Int(100_000)),
            Err(ValueRejection::OutOfBounds { .. })
        ));
        assert!(matches!(
            l.check(&somaxconn, &cur, &Value::Int(9000)),
            Err(ValueRejection::StepTooLarge { .. })
        ));
        assert!(matches!(
            l.check(&somaxconn, &cur, &Value::Word("big".into())),
            Err(ValueRejection::WrongType { .. })
        ));
        let rmem = Value::Ints(vec![4096, 131072, 6291456]);
        let tcp_rmem: ParamAddress = "net.ipv4.tcp_rmem".parse().unwrap();
        let wide = ParamLimits::new(Mode::Recommend).bounds(4096, 16 << 20);
        assert!(matches!(
            wide.check(&tcp_rmem, &rmem, &Value::Ints(vec![4096, 262144])),
            Err(ValueRejection::WrongType { .. })
        ));
        assert_eq!(
            wide.check(&tcp_rmem, &rmem, &Value::Ints(vec![4096, 262144, 8388608])),
            Ok(())
        );
        let err = wide
            .check(&tcp_rmem, &rmem, &Value::Ints(vec![4096, 262144, 1 << 30]))
            .unwrap_err();
        assert!(err.to_string().contains("element 2"), "{err}");
        // Each element within bounds, but min above max: the kernel would take it.
        let backwards = Value::Ints(vec![8 << 20, 4096, 4096]);
        let err = wide.check(&tcp_rmem, &rmem, &backwards).unwrap_err();
        assert_eq!(
            err,
            ValueRejection::OutOfOrder {
                name: "net.ipv4.tcp_rmem".into(),
                value: "8388608 4096 4096".into(),
                position: 1
            }
        );
        assert_eq!(
            err.to_string(),
            "net.ipv4.tcp_rmem = 8388608 4096 4096 is out of order: element 1 is below element 0, \
             and it needs min <= default <= max"
        );
        for (name, value) in [
            ("net.ipv4.tcp_wmem@netns:7", vec![4096, 1 << 20, 65536]),
            ("net.ipv4.tcp_mem", vec![200_000, 100_000, 300_000]),
        ] {
            let a: ParamAddress = name.parse().unwrap();
            assert!(
                matches!(
                    wide.check(&a, &rmem, &Value::Ints(value)),
                    Err(ValueRejection::OutOfOrder { .. })
                ),
                "{name}"
            );
        }
        let equal = Value::Ints(vec![65536, 65536, 65536]);
        assert_eq!(wide.check(&tcp_rmem, &rmem, &equal), Ok(()));
        let words = ParamLimits {
            words: Some(vec!["performance".into(), "schedutil".into()]),
            ..ParamLimits::new(Mode::Auto)
        };
        let gov = Value::Word("schedutil".into());
        assert_eq!(
            words.check(&somaxconn, &gov, &Value::Word("performance".into())),
            Ok(())
        );
        assert!(words
            .check(&somaxconn, &gov, &Value::Word("powersave".into()))
            .is_err());
        let any = ParamLimits::new(Mode::Auto);
        assert!(any
            .check(&somaxconn, &gov, &Value::Word("a;rm".into()))
            .is_err());
        // Bounds (from `[defaults]`, say) refuse every word, as the policy does when it decides.
        let bounded = ParamLimits::new(Mode::Auto).bounds(0, 10);
        assert_eq!(
            bounded.check(&somaxconn, &gov, &Value::Word("performance".into())),
            Err(ValueRejection::WordAgainstBounds("performance".into()))
        );
    }

    #[test]
    fn static_policy_matches_addresses_and_globs() {
        let p = StaticPolicy::new()
            .with(
                "net.core.somaxconn@netns:7",
                &[Source::Llm],
                ParamLimits::new(Mode::Auto),
            )
            .with(
                "net.core.*",
                &[Source::Rules],
                ParamLimits::new(Mode::Recommend),
            );
        let ns7: ParamAddress = "net.core.somaxconn@netns:7".parse().unwrap();
        let host: ParamAddress = "net.core.somaxconn".parse().unwrap();
        assert_eq!(p.allowed(&ns7, Source::Llm).unwrap().mode, Mode::Auto);
        assert!(p.allowed(&host, Source::Llm).is_none());
        assert_eq!(
            p.allowed(&host, Source::Rules).unwrap().mode,
            Mode::Recommend
        );
        assert!(p.is_denied("kernel.core_pattern"));
    }
}
