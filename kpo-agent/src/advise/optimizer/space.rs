//! The search space: a set of knobs, each a list of allowed values or a range with a step.
//!
//! Every knob has a finite, sorted set of *levels*. A point is normalized into `[0, 1]^d` by the
//! position of each value among its knob's levels (level `i` of `k` maps to `i / (k - 1)`). For a
//! range with a step the levels are evenly spaced, so this is the usual linear scaling; for an
//! uneven list such as rx-usecs `0, 2, 4, ..., 40, 60, 80` it spreads the levels evenly, which is
//! how an operator who wrote the list thinks of it.

use serde::{Deserialize, Serialize};

/// Largest number of levels one knob may have.
pub const MAX_LEVELS: usize = 100_000;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum SpaceError {
    #[error("the search space has no knobs")]
    Empty,
    #[error("knob '{0}' appears twice")]
    Duplicate(String),
    #[error("knob '{knob}': {reason}")]
    Invalid { knob: String, reason: String },
    #[error("point has {got} values but the space has {want} knobs")]
    Arity { got: usize, want: usize },
}

/// The values one knob may take.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Domain {
    /// An explicit list of values (order and duplicates do not matter).
    Discrete { values: Vec<f64> },
    /// `min, min + step, min + 2 step, ...` up to `max` (values beyond `max` are not offered).
    Range { min: f64, max: f64, step: f64 },
}

/// One knob of the search space, as the policy bounds it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KnobSpec {
    /// The knob's name, e.g. `rx-usecs:eth0` or `cpufreq:max_mhz`.
    pub name: String,
    pub domain: Domain,
}

impl KnobSpec {
    pub fn discrete(name: impl Into<String>, values: Vec<f64>) -> Self {
        Self {
            name: name.into(),
            domain: Domain::Discrete { values },
        }
    }

    pub fn range(name: impl Into<String>, min: f64, max: f64, step: f64) -> Self {
        Self {
            name: name.into(),
            domain: Domain::Range { min, max, step },
        }
    }

    fn levels(&self) -> Result<Vec<f64>, SpaceError> {
        let invalid = |reason: String| SpaceError::Invalid {
            knob: self.name.clone(),
            reason,
        };
        let mut levels = match &self.domain {
            Domain::Discrete { values } => {
                if values.is_empty() {
                    return Err(invalid("the list of values is empty".into()));
                }
                if let Some(v) = values.iter().find(|v| !v.is_finite()) {
                    return Err(invalid(format!("value {v} is not finite")));
                }
                values.clone()
            }
            &Domain::Range { min, max, step } => {
                if !(min.is_finite() && max.is_finite() && step.is_finite()) {
                    return Err(invalid("min, max and step must be finite".into()));
                }
                if min > max {
                    return Err(invalid(format!("min {min} is above max {max}")));
                }
                if step <= 0.0 {
                    return Err(invalid(format!("step {step} must be positive")));
                }
                let count = ((max - min) / step + 1e-9).floor() + 1.0;
                if count > MAX_LEVELS as f64 {
                    return Err(invalid(format!(
                        "{count} levels is more than {MAX_LEVELS}; use a coarser step"
                    )));
                }
                (0..count as usize).map(|i| min + step * i as f64).collect()
            }
        };
        levels.sort_by(f64::total_cmp);
        levels.dedup();
        if levels.len() > MAX_LEVELS {
            return Err(invalid(format!("more than {MAX_LEVELS} values")));
        }
        Ok(levels)
    }
}

/// A validated search space.
#[derive(Debug, Clone, PartialEq)]
pub struct Space {
    knobs: Vec<KnobSpec>,
    levels: Vec<Vec<f64>>,
}

impl Space {
    pub fn new(knobs: Vec<KnobSpec>) -> Result<Self, SpaceError> {
        if knobs.is_empty() {
            return Err(SpaceError::Empty);
        }
        for (i, k) in knobs.iter().enumerate() {
            if knobs[..i].iter().any(|o| o.name == k.name) {
                return Err(SpaceError::Duplicate(k.name.clone()));
            }
        }
        let levels = knobs
            .iter()
            .map(KnobSpec::levels)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self { knobs, levels })
    }

    pub fn dims(&self) -> usize {
        self.knobs.len()
    }

    pub fn knobs(&self) -> &[KnobSpec] {
        &self.knobs
    }

    pub fn names(&self) -> Vec<&str> {
        self.knobs.iter().map(|k| k.name.as_str()).collect()
    }

    /// Sorted allowed values of knob `i`.
    pub fn levels(&self, i: usize) -> &[f64] {
        &self.levels[i]
    }

    /// Number of points in the space (saturating).
    pub fn size(&self) -> usize {
        self.levels
            .iter()
            .fold(1usize, |acc, l| acc.saturating_mul(l.len()))
    }

    fn check(&self, x: &[f64]) -> Result<(), SpaceError> {
        if x.len() != self.dims() {
            return Err(SpaceError::Arity {
                got: x.len(),
                want: self.dims(),
            });
        }
        Ok(())
    }

    /// Whether every value of `x` is one of its knob's levels.
    pub fn contains(&self, x: &[f64]) -> bool {
        x.len() == self.dims()
            && x.iter()
                .zip(&self.levels)
                .all(|(v, l)| l.binary_search_by(|p| p.total_cmp(v)).is_ok())
    }

    /// The nearest allowed point (per knob, the nearest level; ties go to the lower level).
    pub fn snap(&self, x: &[f64]) -> Result<Vec<f64>, SpaceError> {
        self.check(x)?;
        Ok(x.iter()
            .zip(&self.levels)
            .map(|(&v, l)| {
                *l.iter()
                    .min_by(|a, b| (*a - v).abs().total_cmp(&(*b - v).abs()))
                    .expect("levels are never empty")
            })
            .collect())
    }

    /// Map a point into `[0, 1]^d` by level position, interpolating between levels for values
    /// that are not levels and clamping outside the bounds.
    pub fn normalize(&self, x: &[f64]) -> Result<Vec<f64>, SpaceError> {
        self.check(x)?;
        Ok(x.iter()
            .zip(&self.levels)
            .map(|(&v, l)| normalize_one(l, v))
            .collect())
    }

    /// Every point of the space in lexicographic order, or `None` if there are more than `limit`.
    pub fn enumerate(&self, limit: usize) -> Option<Vec<Vec<f64>>> {
        let size = self.size();
        if size > limit {
            return None;
        }
        let mut out = Vec::with_capacity(size);
        let mut idx = vec![0usize; self.dims()];
        loop {
            out.push(idx.iter().zip(&self.levels).map(|(&i, l)| l[i]).collect());
            let mut d = self.dims();
            loop {
                if d == 0 {
                    return Some(out);
                }
                d -= 1;
                idx[d] += 1;
                if idx[d] < self.levels[d].len() {
                    break;
                }
                idx[d] = 0;
            }
        }
    }
}

fn normalize_one(levels: &[f64], v: f64) -> f64 {
    let k = levels.len();
    if k == 1 {
        return 0.5;
    }
    let last = (k - 1) as f64;
    if v <= levels[0] {
        return 0.0;
    }
    if v >= levels[k - 1] {
        return 1.0;
    }
    // First level strictly above v; v lies in [levels[j-1], levels[j]).
    let j = levels.partition_point(|&p| p <= v);
    let (lo, hi) = (levels[j - 1], levels[j]);
    ((j - 1) as f64 + (v - lo) / (hi - lo)) / last
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_levels_and_normalization() {
        let s = Space::new(vec![
            KnobSpec::range("freq", 1200.0, 2900.0, 100.0),
            KnobSpec::discrete("itr", vec![80.0, 0.0, 2.0, 4.0, 40.0, 4.0]),
        ])
        .unwrap();
        assert_eq!(s.levels(0).len(), 18);
        assert_eq!(s.levels(1), &[0.0, 2.0, 4.0, 40.0, 80.0]);
        assert_eq!(s.size(), 90);
        assert_eq!(s.normalize(&[1200.0, 0.0]).unwrap(), vec![0.0, 0.0]);
        assert_eq!(s.normalize(&[2900.0, 80.0]).unwrap(), vec![1.0, 1.0]);
        let n = s.normalize(&[2050.0, 60.0]).unwrap();
        assert!((n[0] - 0.5).abs() < 1e-12);
        assert!((n[1] - 0.875).abs() < 1e-12);
        assert_eq!(s.normalize(&[5000.0, -3.0]).unwrap(), vec![1.0, 0.0]);
        assert!(s.contains(&[1300.0, 40.0]));
        assert!(!s.contains(&[1350.0, 40.0]));
        assert_eq!(s.snap(&[1349.0, 50.0]).unwrap(), vec![1300.0, 40.0]);
        let all = s.enumerate(1000).unwrap();
        assert_eq!(all.len(), 90);
        assert_eq!(all[0], vec![1200.0, 0.0]);
        assert_eq!(all[1], vec![1200.0, 2.0]);
        assert!(all.iter().all(|p| s.contains(p)));
        assert!(s.enumerate(89).is_none());
    }

    #[test]
    fn invalid_spaces_are_refused() {
        assert_eq!(Space::new(vec![]), Err(SpaceError::Empty));
        assert!(matches!(
            Space::new(vec![KnobSpec::range("f", 2.0, 1.0, 1.0)]),
            Err(SpaceError::Invalid { .. })
        ));
        assert!(matches!(
            Space::new(vec![KnobSpec::range("f", 1.0, 2.0, 0.0)]),
            Err(SpaceError::Invalid { .. })
        ));
        assert!(matches!(
            Space::new(vec![KnobSpec::discrete("f", vec![])]),
            Err(SpaceError::Invalid { .. })
        ));
        assert!(matches!(
            Space::new(vec![
                KnobSpec::discrete("a", vec![1.0]),
                KnobSpec::discrete("a", vec![2.0])
            ]),
            Err(SpaceError::Duplicate(_))
        ));
        let s = Space::new(vec![KnobSpec::discrete("a", vec![1.0])]).unwrap();
        assert_eq!(
            s.normalize(&[1.0, 2.0]),
            Err(SpaceError::Arity { got: 2, want: 1 })
        );
        assert_eq!(s.normalize(&[1.0]).unwrap(), vec![0.5]);
    }

    #[test]
    fn domain_deserializes_from_policy_json() {
        let k: KnobSpec = serde_json::from_str(
            r#"{"name":"rx-usecs:eth0","domain":{"kind":"range","min":0,"max":100,"step":10}}"#,
        )
        .unwrap();
        assert_eq!(k.levels().unwrap().len(), 11);
    }
}
