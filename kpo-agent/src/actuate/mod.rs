//! Actuators: the knobs KPO can move, behind one trait.
//!
//! A [`Knob`] reads its current value and applies a new one, verifying by reading it back; every
//! failure is an [`ActuateError`] whose message says what to check. Implementations:
//!
//! - [`cpufreq::CpufreqMaxFreq`]: the `scaling_max_freq` limit of one, several or all cpufreq
//!   policies, under a configurable sysfs root;
//! - [`coalesce::RxUsecsKnob`]: a NIC's `rx-usecs` interrupt coalescing, over a
//!   [`coalesce::CoalesceBackend`]: `coalesce::EthtoolCoalesce` (ethtool generic netlink) or
//!   `coalesce::FakeCoalesce` for tests. It models adaptive moderation and refuses a NIC whose adaptive-rx is on unless allowed
//!   to turn it off.
//!
//! [`KnobSet`] groups knobs so that a whole configuration is applied (or rolled back) as one.

pub mod coalesce;
pub mod cpufreq;
pub mod param;

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ActuateError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: cannot parse '{text}' as {what}")]
    Parse {
        path: PathBuf,
        text: String,
        what: &'static str,
    },
    #[error("{knob}: not available: {reason}")]
    NotFound { knob: String, reason: String },
    #[error("{knob}: {value} is outside the allowed range [{min}, {max}]")]
    OutOfBounds {
        knob: String,
        value: f64,
        min: f64,
        max: f64,
    },
    #[error("{knob}: {value} is not a valid value: {reason}")]
    InvalidValue {
        knob: String,
        value: f64,
        reason: String,
    },
    #[error(
        "{knob}: wrote {wrote} but read back {read}; the kernel or driver did not take the value"
    )]
    Verify { knob: String, wrote: f64, read: f64 },
    #[error(
        "{iface}: adaptive-rx is on, so the kernel already moves rx-usecs; KPO leaves this NIC alone \
         (allow KPO to turn adaptive mode off to let it own coalescing)"
    )]
    AdaptiveOn { iface: String },
    #[error("{iface}: the driver does not support changing interrupt coalescing ({detail})")]
    Unsupported { iface: String, detail: String },
    #[error("{knob}: the knob has been released")]
    Released { knob: String },
    #[error("configuration has {got} values for {want} knobs")]
    Arity { got: usize, want: usize },
}

/// The one way any parameter is changed: sysctls, NIC coalescing and cpufreq attributes each
/// implement it (`sysctl`, `coalesce`, `cpufreq`). Values are typed ([`param::Value`]); the policy,
/// journal and guard sit in front of it and never write a parameter by another path.
pub trait Actuator: Send {
    /// The parameter and where it lives.
    fn address(&self) -> &param::ParamAddress;
    /// The value the kernel has now.
    fn read(&mut self) -> Result<param::Value, ActuateError>;
    /// Whether the kernel or hardware could take `value` (shape, range the driver or cpufreq
    /// reports, available governors), without writing anything.
    fn validate(&mut self, value: &param::Value) -> Result<(), ActuateError>;
    /// Write `value`, read it back, and return what was read back. A read-back that differs is an
    /// error ([`ActuateError::Verify`]) after which the caller reverts.
    fn apply(&mut self, value: &param::Value) -> Result<param::Value, ActuateError>;
    /// Put back a value read earlier (the journal's original). Unlike `apply` it skips the checks a
    /// new value gets: the original was the kernel's own.
    fn revert(&mut self, original: &param::Value) -> Result<param::Value, ActuateError> {
        self.apply(original)
    }
}

/// Where the actuators find the kernel's files: the real `/proc/sys` and `/sys` in production,
/// temporary trees in tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Roots {
    pub proc_sys: PathBuf,
    pub sys: PathBuf,
}

impl Default for Roots {
    fn default() -> Self {
        Self {
            proc_sys: PathBuf::from("/proc/sys"),
            sys: PathBuf::from("/sys"),
        }
    }
}

/// The actuator for a parameter address: a sysctl (in its network namespace), a NIC's coalescing
/// attribute, or a cpufreq policy's attribute.
pub fn open_actuator(
    address: &param::ParamAddress,
    roots: &Roots,
) -> Result<Box<dyn Actuator>, ActuateError> {
    let _ = roots;
    // Filled in by the actuation work (sysctl, coalescing, cpufreq on the Actuator trait).
    Err(ActuateError::NotFound {
        knob: address.to_string(),
        reason: "no actuator for this kind of parameter yet".into(),
    })
}

/// One tunable parameter.
pub trait Knob {
    /// Stable name, e.g. `cpufreq:max_mhz` or `rx-usecs:eth0`.
    fn name(&self) -> &str;
    /// The range the hardware or driver accepts, if known.
    fn bounds(&self) -> Option<(f64, f64)>;
    /// The current value.
    fn read(&mut self) -> Result<f64, ActuateError>;
    /// Apply `value`, read it back, and return the value read back (equal to `value` on success).
    fn apply(&mut self, value: f64) -> Result<f64, ActuateError>;
}

impl<K: Knob + ?Sized> Knob for Box<K> {
    fn name(&self) -> &str {
        (**self).name()
    }
    fn bounds(&self) -> Option<(f64, f64)> {
        (**self).bounds()
    }
    fn read(&mut self) -> Result<f64, ActuateError> {
        (**self).read()
    }
    fn apply(&mut self, value: f64) -> Result<f64, ActuateError> {
        (**self).apply(value)
    }
}

/// Knobs that are set together, one value per knob in order.
#[derive(Default)]
pub struct KnobSet {
    knobs: Vec<Box<dyn Knob + Send>>,
}

impl std::fmt::Debug for KnobSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.knobs.iter().map(|k| k.name().to_string()))
            .finish()
    }
}

impl KnobSet {
    pub fn new(knobs: Vec<Box<dyn Knob + Send>>) -> Self {
        Self { knobs }
    }

    pub fn push(&mut self, knob: Box<dyn Knob + Send>) {
        self.knobs.push(knob);
    }

    pub fn names(&self) -> Vec<String> {
        self.knobs.iter().map(|k| k.name().to_string()).collect()
    }

    pub fn len(&self) -> usize {
        self.knobs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.knobs.is_empty()
    }

    pub fn read_all(&mut self) -> Result<Vec<f64>, ActuateError> {
        self.knobs.iter_mut().map(|k| k.read()).collect()
    }

    /// Apply a whole configuration. Knobs already at the value are not written. If one knob
    /// fails, the knobs changed before it are put back (best effort) and the error is returned.
    pub fn apply_all(&mut self, values: &[f64]) -> Result<(), ActuateError> {
        if values.len() != self.knobs.len() {
            return Err(ActuateError::Arity {
                got: values.len(),
                want: self.knobs.len(),
            });
        }
        let mut changed: Vec<(usize, f64)> = Vec::new();
        for (i, &v) in values.iter().enumerate() {
            let before = self.knobs[i].read()?;
            if before == v {
                continue;
            }
            if let Err(e) = self.knobs[i].apply(v) {
                for (j, old) in changed.into_iter().rev() {
                    if let Err(undo) = self.knobs[j].apply(old) {
                        tracing::error!(knob = self.knobs[j].name(), error = %undo, "rollback failed");
                    }
                }
                return Err(e);
            }
            changed.push((i, before));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    struct Mem {
        name: String,
        value: Arc<Mutex<f64>>,
        fail_on: Option<f64>,
    }

    impl Knob for Mem {
        fn name(&self) -> &str {
            &self.name
        }
        fn bounds(&self) -> Option<(f64, f64)> {
            None
        }
        fn read(&mut self) -> Result<f64, ActuateError> {
            Ok(*self.value.lock().unwrap())
        }
        fn apply(&mut self, value: f64) -> Result<f64, ActuateError> {
            if Some(value) == self.fail_on {
                return Err(ActuateError::InvalidValue {
                    knob: self.name.clone(),
                    value,
                    reason: "test".into(),
                });
            }
            *self.value.lock().unwrap() = value;
            Ok(value)
        }
    }

    #[test]
    fn apply_all_rolls_back_on_failure() {
        let a = Arc::new(Mutex::new(1.0));
        let b = Arc::new(Mutex::new(2.0));
        let mut set = KnobSet::new(vec![
            Box::new(Mem {
                name: "a".into(),
                value: a.clone(),
                fail_on: None,
            }),
            Box::new(Mem {
                name: "b".into(),
                value: b.clone(),
                fail_on: Some(9.0),
            }),
        ]);
        set.apply_all(&[5.0, 6.0]).unwrap();
        assert_eq!(set.read_all().unwrap(), vec![5.0, 6.0]);
        let err = set.apply_all(&[7.0, 9.0]).unwrap_err();
        assert!(matches!(err, ActuateError::InvalidValue { .. }));
        assert_eq!(*a.lock().unwrap(), 5.0, "first knob rolled back");
        assert_eq!(*b.lock().unwrap(), 6.0);
        assert!(matches!(
            set.apply_all(&[1.0]),
            Err(ActuateError::Arity { got: 1, want: 2 })
        ));
        assert_eq!(set.names(), vec!["a", "b"]);
    }
}
