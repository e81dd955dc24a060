//! Merging one batch of recommendations: for one parameter at one target, only the most
//! conservative is considered; the others are set aside, each with why.
//!
//! "More conservative", in this order:
//! 1. one its advisor did not allow to apply automatically (`can_auto_apply: false`) wins over one
//!    it did: a person looks at it either way;
//! 2. then the value closest to the current value (the sum of the elements' distances for a
//!    vector; a word is 0 from itself and 1 from any other);
//! 3. then, on a tie, the advisor in the order rules, optimizer, llm (deterministic first), then
//!    the earliest in the batch.
//!
//! Recommendations that agree on the value still go through once: the others are set aside as
//! duplicates. Advice for an application (no value) is never merged.
use std::collections::BTreeMap;

use crate::{
    actuate::param::Value,
    advise::recommendation::{Recommendation, Source},
    journal::target_key,
};

/// One recommendation to consider, and the ones it won over.
#[derive(Debug, Clone, PartialEq)]
pub struct Merged {
    pub kept: Recommendation,
    /// Each set-aside recommendation and why it lost.
    pub set_aside: Vec<(Recommendation, String)>,
}

/// How far `value` moves from `current`; `u128::MAX` when they cannot be compared.
fn distance(current: Option<&Value>, value: Option<&Value>) -> u128 {
    match (current, value) {
        (_, None) | (None, _) => 0,
        (Some(c), Some(v)) => match (c.ints(), v.ints()) {
            (Some(a), Some(b)) if a.len() == b.len() => a
                .iter()
                .zip(&b)
                .map(|(x, y)| x.abs_diff(*y))
                .fold(0u128, u128::saturating_add),
            (Some(_), Some(_)) => u128::MAX,
            _ => u128::from(c != v),
        },
    }
}

fn source_rank(s: Source) -> u8 {
    match s {
        Source::Rules => 0,
        Source::Optimizer => 1,
        Source::Llm => 2,
    }
}

/// The merging order's key, lowest the most conservative (the module's rules 1 to 3, less the
/// batch position): also what a pending approval is kept over another advisor's value by.
pub(crate) fn rank(
    can_auto_apply: bool,
    current: Option<&Value>,
    value: Option<&Value>,
    source: Source,
) -> (bool, u128, u8) {
    (
        can_auto_apply,
        distance(current, value),
        source_rank(source),
    )
}

fn show(v: Option<&Value>) -> String {
    v.map(|v| v.to_string()).unwrap_or_else(|| "none".into())
}

/// Why `kept` won over `lost`.
fn why(kept: &Recommendation, lost: &Recommendation, current: Option<&Value>) -> String {
    let (k, l) = (
        show(kept.recommended_value.as_ref()),
        show(lost.recommended_value.as_ref()),
    );
    let head = format!(
        "{} from {} kept over {} from {} for {}",
        k, kept.source, l, lost.source, kept.parameter
    );
    if kept.recommended_value == lost.recommended_value {
        if kept.can_auto_apply != lost.can_auto_apply {
            return format!("{head}: the same value; the one that waits for a person wins");
        }
        return format!("{head}: the same value, advised twice; considered once");
    }
    if !kept.can_auto_apply && lost.can_auto_apply {
        return format!(
            "{head}: a recommendation that waits for a person wins over one that may apply itself"
        );
    }
    let (dk, dl) = (
        distance(current, kept.recommended_value.as_ref()),
        distance(current, lost.recommended_value.as_ref()),
    );
    if dk < dl {
        return format!(
            "{head}: {k} is closer to the current value {}",
            show(current)
        );
    }
    format!("{head}: as close to the current value; the first advisor in the order rules, optimizer, llm wins")
}

/// Reduces a batch to one recommendation per parameter and target, in the batch's order (each
/// group where its first member was).
pub fn merge(recommendations: Vec<Recommendation>) -> Vec<Merged> {
    let mut groups: Vec<Vec<(usize, Recommendation)>> = Vec::new();
    let mut by_key: BTreeMap<String, usize> = BTreeMap::new();
    for (i, rec) in recommendations.into_iter().enumerate() {
        if !rec.is_change() {
            groups.push(vec![(i, rec)]);
            continue;
        }
        let key = target_key(&rec.parameter);
        match by_key.get(&key) {
            Some(&g) => groups[g].push((i, rec)),
            None => {
                by_key.insert(key, groups.len());
                groups.push(vec![(i, rec)]);
            }
        }
    }
    groups
        .into_iter()
        .map(|mut group| {
            // The kernel's value as the advisors saw it: the first that says.
            let current = group.iter().find_map(|(_, r)| r.current_value.clone());
            group.sort_by_key(|(i, r)| {
                (
                    rank(
                        r.can_auto_apply,
                        current.as_ref(),
                        r.recommended_value.as_ref(),
                        r.source,
                    ),
                    *i,
                )
            });
            let mut members = group.into_iter().map(|(_, r)| r);
            let kept = members.next().expect("a group has a member");
            let set_aside = members
                .map(|r| {
                    let w = why(&kept, &r, current.as_ref());
                    (r, w)
                })
                .collect();
            Merged { kept, set_aside }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::advise::recommendation::WindowRef;

    fn rec(source: Source, param: &str, current: i64, value: i64, auto: bool) -> Recommendation {
        let parameter = param.parse().unwrap();
        Recommendation {
            id: Recommendation::make_id(source, 1, &parameter, Some(&Value::Int(value.into()))),
            parameter,
            current_value: Some(Value::Int(current.into())),
            recommended_value: Some(Value::Int(value.into())),
            can_auto_apply: auto,
            reason: format!("{source} says {value}"),
            confidence: 0.5,
            source,
            window: WindowRef {
                index: 1,
                end: "2026-01-01T00:00:00Z".into(),
            },
            application: None,
            netns_cookie: None,
        }
    }

    const NS: &str = "net.core.somaxconn@netns:4026531999";

    #[test]
    fn the_value_closest_to_the_current_one_wins() {
        let merged = merge(vec![
            rec(Source::Llm, NS, 128, 1024, true),
            rec(Source::Rules, NS, 128, 256, true),
            rec(Source::Optimizer, NS, 128, 4096, true),
        ]);
        assert_eq!(merged.len(), 1);
        assert_eq!(merged[0].kept.source, Source::Rules);
        assert_eq!(merged[0].kept.recommended_value, Some(Value::Int(256)));
        let lost: Vec<_> = merged[0]
            .set_aside
            .iter()
            .map(|(r, w)| (r.recommended_value.clone().unwrap(), w.clone()))
            .collect();
        assert_eq!(lost[0].0, Value::Int(1024));
        assert_eq!(lost[1].0, Value::Int(4096));
        assert!(
            lost[0].1.contains("256 is closer to the current value 128"),
            "{}",
            lost[0].1
        );
    }

    #[test]
    fn a_recommendation_that_waits_for_a_person_wins_over_a_closer_automatic_one() {
        let merged = merge(vec![
            rec(Source::Rules, NS, 128, 256, true),
            rec(Source::Llm, NS, 128, 2048, false),
        ]);
        assert_eq!(merged[0].kept.source, Source::Llm);
        assert!(!merged[0].kept.can_auto_apply);
        assert!(merged[0].set_aside[0].1.contains("waits for a person"));
    }

    #[test]
    fn a_step_down_closer_to_the_current_value_wins_over_a_raise() {
        let merged = merge(vec![
            rec(Source::Optimizer, NS, 1000, 1500, true),
            rec(Source::Rules, NS, 1000, 900, true),
        ]);
        assert_eq!(merged[0].kept.recommended_value, Some(Value::Int(900)));
    }

    #[test]
    fn targets_are_merged_apart_and_the_batch_order_is_kept() {
        let merged = merge(vec![
            rec(
                Source::Llm,
                "net.core.somaxconn@netns:4026531001",
                128,
                512,
                true,
            ),
            rec(
                Source::Rules,
                "net.core.netdev_max_backlog",
                1000,
                2000,
                true,
            ),
            rec(
                Source::Rules,
                "net.core.somaxconn@netns:4026531002",
                128,
                512,
                true,
            ),
            rec(
                Source::Rules,
                "net.core.somaxconn@netns:4026531001",
                128,
                512,
                true,
            ),
        ]);
        assert_eq!(merged.len(), 3);
        assert_eq!(
            merged[0].kept.parameter.to_string(),
            "net.core.somaxconn@netns:4026531001"
        );
        // The same value twice: the rules' one is kept, the other set aside as a duplicate.
        assert_eq!(merged[0].kept.source, Source::Rules);
        assert!(merged[0].set_aside[0].1.contains("advised twice"));
        assert!(merged[1].set_aside.is_empty() && merged[2].set_aside.is_empty());
    }

    #[test]
    fn application_advice_is_never_merged() {
        let mut a = rec(Source::Rules, NS, 128, 0, false);
        a.recommended_value = None;
        let b = a.clone();
        let merged = merge(vec![a, b, rec(Source::Rules, NS, 128, 256, true)]);
        assert_eq!(merged.len(), 3);
        assert!(merged.iter().all(|m| m.set_aside.is_empty()));
    }

    #[test]
    fn vectors_compare_by_the_sum_of_their_distances() {
        let c = Value::Ints(vec![4096, 131072, 6291456]);
        assert_eq!(
            distance(Some(&c), Some(&Value::Ints(vec![4096, 262144, 6291456]))),
            131072
        );
        assert_eq!(distance(Some(&c), Some(&Value::Int(4))), u128::MAX);
        let w = Value::Word("schedutil".into());
        assert_eq!(distance(Some(&w), Some(&w)), 0);
        assert_eq!(
            distance(Some(&w), Some(&Value::Word("performance".into()))),
            1
        );
    }
}
