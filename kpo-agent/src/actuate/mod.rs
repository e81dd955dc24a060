//! Actuators: the one way KPO changes a parameter (docs/actuators.md).
//!
//! Every parameter is changed through an [`Actuator`] (read, validate, apply with read-back,
//! revert), with typed values ([`param::Value`]) and an address ([`param::ParamAddress`]) that
//! says where it lives. [`open_actuator`] picks the implementation by the address's kind:
//!
//! - [`sysctl::SysctlActuator`]: `/proc/sys`, on the host or inside a network namespace (entered
//!   with setns on a short-lived thread); host-wide keys in a namespace are refused
//!   ([`sysctl::is_per_netns`]);
//! - [`cpufreq::CpufreqActuator`]: `cpufreq:policyN:ATTR` under a configurable sysfs root;
//! - [`coalesce::CoalesceActuator`]: `ethtool:IFACE:ATTR` over ethtool netlink, refusing a NIC
//!   under adaptive moderation unless allowed to turn it off.
//!
//! Every failure is an [`ActuateError`] whose message names the parameter and what to check.
//!
//! The optimizer's older `f64` interface stays: a [`Knob`] ([`cpufreq::CpufreqMaxFreq`],
//! [`coalesce::RxUsecsKnob`], or any integer actuator through [`ActuatorKnob`]) and [`KnobSet`],
//! which applies (or rolls back) a whole configuration as one.

pub mod coalesce;
pub mod cpufreq;
pub mod param;
pub mod sysctl;

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
    /// A sysctl that does not exist where it was asked for (ENOENT).
    #[error(
        "{param}: no such sysctl {where_} ({path} does not exist); check the name, that the \
         device exists there for a per-device key, and that the module providing it is loaded"
    )]
    NoSuchKey {
        param: String,
        path: PathBuf,
        where_: String,
    },
    /// A host-wide key addressed in a network namespace: refused, never mapped to the host.
    #[error(
        "{param}: {key} is a host-wide parameter, not one per network namespace; KPO does not \
         change the whole host on behalf of network namespace {netns} (address it without @netns \
         to change it for the host)"
    )]
    GlobalKey {
        param: String,
        key: String,
        netns: String,
    },
    /// The file has no write permission: the kernel only reports this value.
    #[error("{param}: {path} is read-only (mode {mode:o}); the kernel only reports this value")]
    ReadOnly {
        param: String,
        path: PathBuf,
        mode: u32,
    },
    /// EPERM or EACCES from the kernel.
    #[error("{param}: permission denied on {path}: {detail}")]
    PermissionDenied {
        param: String,
        path: PathBuf,
        detail: String,
    },
    /// The kernel refused the value (EINVAL, ERANGE, EOVERFLOW on write).
    #[error("{param}: the kernel refused {value:?} ({errno}): {hint}")]
    Refused {
        param: String,
        value: String,
        errno: String,
        hint: String,
    },
    /// A value whose shape differs from the parameter's current value.
    #[error("{param}: {given:?} does not fit: the current value {current:?} is {want}")]
    Shape {
        param: String,
        given: String,
        current: String,
        want: String,
    },
    /// A typed read-back that differs from what was written.
    #[error("{param}: wrote {wrote:?} but read back {read:?}; the kernel or driver did not take the value")]
    Mismatch {
        param: String,
        wrote: String,
        read: String,
    },
    /// A network namespace that cannot be found or entered.
    #[error("network namespace {netns}: {reason}")]
    Netns { netns: String, reason: String },
    /// Integer outside the range the hardware or kernel reports.
    #[error("{param}: {value} is outside [{min}, {max}] ({why})")]
    OutOfRange {
        param: String,
        value: i64,
        min: i64,
        max: i64,
        why: String,
    },
    /// A word not in the list the kernel offers (`scaling_available_governors`, ...).
    #[error("{param}: {value:?} is not available; {source_file} lists: {available}")]
    NotAvailable {
        param: String,
        value: String,
        source_file: PathBuf,
        available: String,
    },
    /// This machine has no support for the parameter family (no cpufreq driver, ...).
    #[error("{param}: unsupported on this machine: {reason}")]
    NotSupported { param: String, reason: String },
    /// The address names a parameter the actuator does not know.
    #[error("{param}: unknown parameter; {known}")]
    UnknownParam { param: String, known: String },
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
    /// Whether this actuator may turn the NIC's adaptive moderation (net_dim) off as part of a
    /// change. Only the coalescing actuator has such a thing; the policy sets it. Others ignore it.
    fn set_adaptive_off_allowed(&mut self, allowed: bool) {
        let _ = allowed;
    }
}

/// How [`open_actuator_with`] opens actuators: what the policy allows beyond the default.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ActuatorOptions {
    /// Coalescing: turn adaptive moderation (adaptive-rx / adaptive-tx) off when a change needs
    /// it. Off by default: a NIC under adaptive moderation is left alone.
    pub turn_off_adaptive: bool,
}

/// Reads a sysfs or /proc/sys attribute through the crate's one bounded reader
/// ([`crate::kernel_file`]), as an `io::Result` so that each actuator keeps mapping the kernel's
/// errno into its own errors. A file larger than an attribute can be is `InvalidData`.
pub(crate) fn read_attr(path: &std::path::Path) -> std::io::Result<String> {
    use crate::kernel_file::KernelFileError as E;
    crate::kernel_file::read_text(path, crate::kernel_file::limit::ATTRIBUTE).map_err(|e| match e {
        E::Io { source, .. } => source,
        other => std::io::Error::new(std::io::ErrorKind::InvalidData, other.to_string()),
    })
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
    open_actuator_with(address, roots, ActuatorOptions::default())
}

/// [`open_actuator`] with options the policy decides (see [`ActuatorOptions`]).
pub fn open_actuator_with(
    address: &param::ParamAddress,
    roots: &Roots,
    options: ActuatorOptions,
) -> Result<Box<dyn Actuator>, ActuateError> {
    match address.kind() {
        param::ParamKind::Sysctl => Ok(Box::new(sysctl::SysctlActuator::open(address, roots)?)),
        param::ParamKind::Cpufreq => Ok(Box::new(cpufreq::CpufreqActuator::open(address, roots)?)),
        param::ParamKind::Ethtool => Ok(Box::new(coalesce::CoalesceActuator::open(
            address,
            if options.turn_off_adaptive {
                coalesce::AdaptiveMode::TurnOff
            } else {
                coalesce::AdaptiveMode::Respect
            },
        )?)),
    }
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

/// An integer-valued [`Actuator`] seen as a [`Knob`], so the optimizer (which speaks `f64`) can
/// drive any actuator: `ethtool:eth0:rx-usecs`, `cpufreq:policy0:scaling_max_freq` (kHz), a
/// sysctl. A value that is not a whole number, or an actuator whose value is not one integer, is
/// [`ActuateError::InvalidValue`].
pub struct ActuatorKnob {
    name: String,
    inner: Box<dyn Actuator>,
    bounds: Option<(f64, f64)>,
}

impl ActuatorKnob {
    pub fn new(inner: Box<dyn Actuator>, bounds: Option<(f64, f64)>) -> Self {
        Self {
            name: inner.address().to_string(),
            inner,
            bounds,
        }
    }

    pub fn into_inner(self) -> Box<dyn Actuator> {
        self.inner
    }

    fn to_f64(&self, v: param::Value) -> Result<f64, ActuateError> {
        v.as_int()
            .map(|i| i as f64)
            .ok_or_else(|| ActuateError::InvalidValue {
                knob: self.name.clone(),
                value: f64::NAN,
                reason: format!("the value {v} is not one integer"),
            })
    }
}

impl Knob for ActuatorKnob {
    fn name(&self) -> &str {
        &self.name
    }
    fn bounds(&self) -> Option<(f64, f64)> {
        self.bounds
    }
    fn read(&mut self) -> Result<f64, ActuateError> {
        let v = self.inner.read()?;
        self.to_f64(v)
    }
    fn apply(&mut self, value: f64) -> Result<f64, ActuateError> {
        if !value.is_finite() || value.fract() != 0.0 {
            return Err(ActuateError::InvalidValue {
                knob: self.name.clone(),
                value,
                reason: "a whole number is needed".into(),
            });
        }
        if let Some((lo, hi)) = self.bounds {
            if value < lo || value > hi {
                return Err(ActuateError::OutOfBounds {
                    knob: self.name.clone(),
                    value,
                    min: lo,
                    max: hi,
                });
            }
        }
        let back = self.inner.apply(&param::Value::Int(value as i64))?;
        self.to_f64(back)
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

    #[test]
    fn open_actuator_dispatches_and_adapts_to_knob() {
        let tmp = tempfile::tempdir().unwrap();
        let proc_sys = tmp.path().join("proc_sys");
        std::fs::create_dir_all(proc_sys.join("net/core")).unwrap();
        std::fs::write(proc_sys.join("net/core/somaxconn"), "4096\n").unwrap();
        let roots = Roots {
            proc_sys,
            sys: tmp.path().join("sys"),
        };
        let addr: param::ParamAddress = "net/core/somaxconn".parse().unwrap();
        let a = open_actuator(&addr, &roots).unwrap();
        assert_eq!(a.address().to_string(), "net.core.somaxconn");
        let mut knob = ActuatorKnob::new(a, Some((128.0, 65535.0)));
        assert_eq!(knob.name(), "net.core.somaxconn");
        assert_eq!(knob.read().unwrap(), 4096.0);
        assert_eq!(knob.apply(8192.0).unwrap(), 8192.0);
        assert!(matches!(
            knob.apply(1.5),
            Err(ActuateError::InvalidValue { .. })
        ));
        assert!(matches!(
            knob.apply(70000.0),
            Err(ActuateError::OutOfBounds { .. })
        ));
        let mut set = KnobSet::new(vec![Box::new(knob)]);
        set.apply_all(&[1024.0]).unwrap();
        assert_eq!(set.read_all().unwrap(), vec![1024.0]);
        // cpufreq on a tree without cpufreq: unsupported, whatever the attribute.
        let err = open_actuator(&"cpufreq:policy0:scaling_governor".parse().unwrap(), &roots)
            .err()
            .unwrap();
        assert!(matches!(err, ActuateError::NotSupported { .. }), "{err}");
        // A global key in a namespace: refused before any namespace is looked up.
        let err = open_actuator(
            &"net.core.netdev_budget@netns:/run/netns/none"
                .parse()
                .unwrap(),
            &roots,
        )
        .err()
        .unwrap();
        assert!(matches!(err, ActuateError::GlobalKey { .. }), "{err}");
    }
}
