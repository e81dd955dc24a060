//! CPU frequency limits and preferences of cpufreq policies, under a configurable sysfs root.
//!
//! [`CpufreqActuator`]: one attribute of one cpufreq policy (`cpufreq:policyN:ATTR`) on the
//! [`Actuator`] trait: `scaling_max_freq` and `scaling_min_freq` (kHz, checked against
//! `cpuinfo_min_freq`/`cpuinfo_max_freq` and against each other), `scaling_governor` (checked
//! against `scaling_available_governors`) and `energy_performance_preference` where the driver
//! has it (checked against `energy_performance_available_preferences`). A tree without
//! `devices/system/cpu/cpufreq` is [`ActuateError::NotSupported`].
//!
//! Files: `<root>/devices/system/cpu/cpufreq/policy<N>/ATTR`. A write is verified by reading the
//! attribute back; a `scaling_max_freq` below the policy's current `scaling_min_freq` (or the
//! reverse) is refused before writing, because the kernel would reject it.

use std::path::{Path, PathBuf};

use super::param::{ParamAddress, Target, Value};
use super::{ActuateError, Actuator, Roots};

/// The attributes [`CpufreqActuator`] can change.
pub const CPUFREQ_ATTRS: &[&str] = &[
    "scaling_max_freq",
    "scaling_min_freq",
    "scaling_governor",
    "energy_performance_preference",
];

/// One attribute of one cpufreq policy, `cpufreq:policyN:ATTR`, under `Roots.sys`.
#[derive(Debug)]
pub struct CpufreqActuator {
    address: ParamAddress,
    dir: PathBuf,
    attr: String,
}

fn sysfs_error(param: &str, path: &Path, e: std::io::Error, value: Option<&Value>) -> ActuateError {
    match e.raw_os_error() {
        Some(libc::EACCES) | Some(libc::EPERM) => ActuateError::PermissionDenied {
            param: param.into(),
            path: path.into(),
            detail: format!("{e}; changing cpufreq limits needs root"),
        },
        Some(libc::EINVAL) | Some(libc::EBUSY) | Some(libc::ERANGE) if value.is_some() => {
            ActuateError::Refused {
                param: param.into(),
                value: value.map(Value::to_string).unwrap_or_default(),
                errno: if e.raw_os_error() == Some(libc::EBUSY) {
                    "EBUSY".into()
                } else {
                    "EINVAL".into()
                },
                hint: "the cpufreq driver refused it (an energy_performance_preference other \
                       than performance is refused while the governor is performance; limits \
                       must keep scaling_min_freq <= scaling_max_freq)"
                    .into(),
            }
        }
        _ => ActuateError::Io {
            path: path.into(),
            source: e,
        },
    }
}

fn read_attr(param: &str, path: &Path) -> Result<Value, ActuateError> {
    let text = super::read_attr(path).map_err(|e| sysfs_error(param, path, e, None))?;
    Value::parse(&text).map_err(|_| ActuateError::Parse {
        path: path.into(),
        text: text.trim().to_string(),
        what: "an integer or one word",
    })
}

fn read_int(param: &str, path: &Path) -> Result<i64, ActuateError> {
    match read_attr(param, path)? {
        Value::Int(v) => Ok(v),
        other => Err(ActuateError::Parse {
            path: path.into(),
            text: other.to_string(),
            what: "a frequency in kHz",
        }),
    }
}

fn read_list(param: &str, path: &Path) -> Result<Vec<String>, ActuateError> {
    let text = super::read_attr(path).map_err(|e| sysfs_error(param, path, e, None))?;
    Ok(text.split_whitespace().map(str::to_string).collect())
}

impl CpufreqActuator {
    /// The actuator for `cpufreq:POLICY:ATTR` under `roots.sys`.
    pub fn open(address: &ParamAddress, roots: &Roots) -> Result<Self, ActuateError> {
        let param = address.to_string();
        let Target::Cpufreq { policy } = &address.target else {
            return Err(ActuateError::NotFound {
                knob: param,
                reason: "not a cpufreq:POLICY:ATTR address".into(),
            });
        };
        let base = roots.sys.join("devices/system/cpu/cpufreq");
        if !base.is_dir() {
            return Err(ActuateError::NotSupported {
                param,
                reason: format!(
                    "{} does not exist: no cpufreq driver (common in VMs), so CPU frequency \
                     cannot be changed here",
                    base.display()
                ),
            });
        }
        if policy.contains('/') || policy.starts_with('.') {
            return Err(ActuateError::NotFound {
                knob: param,
                reason: "a cpufreq policy is a directory name such as policy0".into(),
            });
        }
        let dir = base.join(policy);
        if !dir.is_dir() {
            let mut have: Vec<String> = std::fs::read_dir(&base)
                .map(|d| {
                    d.filter_map(Result::ok)
                        .filter_map(|e| e.file_name().to_str().map(str::to_string))
                        .filter(|n| n.starts_with("policy"))
                        .collect()
                })
                .unwrap_or_default();
            have.sort();
            return Err(ActuateError::NotFound {
                knob: param,
                reason: format!(
                    "{} does not exist; this machine has: {}",
                    dir.display(),
                    if have.is_empty() {
                        "no policies".to_string()
                    } else {
                        have.join(", ")
                    }
                ),
            });
        }
        let attr = address.name.clone();
        if !CPUFREQ_ATTRS.contains(&attr.as_str()) {
            return Err(ActuateError::UnknownParam {
                param,
                known: format!(
                    "KPO changes the cpufreq attributes {}",
                    CPUFREQ_ATTRS.join(", ")
                ),
            });
        }
        if !dir.join(&attr).exists() {
            return Err(ActuateError::NotSupported {
                param,
                reason: format!(
                    "{} does not exist: the cpufreq driver ({}) does not offer it",
                    dir.join(&attr).display(),
                    super::read_attr(&dir.join("scaling_driver"))
                        .map(|d| d.trim().to_string())
                        .unwrap_or_else(|_| "unknown".into())
                ),
            });
        }
        Ok(Self {
            address: address.clone(),
            dir,
            attr,
        })
    }

    fn param(&self) -> String {
        self.address.to_string()
    }

    fn path(&self) -> PathBuf {
        self.dir.join(&self.attr)
    }

    fn check(&self, value: &Value) -> Result<(), ActuateError> {
        let param = self.param();
        let shape = |want: &str| ActuateError::Shape {
            param: param.clone(),
            given: value.to_string(),
            current: String::new(),
            want: want.into(),
        };
        match self.attr.as_str() {
            "scaling_max_freq" | "scaling_min_freq" => {
                let Value::Int(khz) = value else {
                    return Err(shape("a frequency in kHz (one integer)"));
                };
                let khz = *khz;
                let lo = read_int(&param, &self.dir.join("cpuinfo_min_freq"))?;
                let hi = read_int(&param, &self.dir.join("cpuinfo_max_freq"))?;
                if khz < lo || khz > hi {
                    return Err(ActuateError::OutOfRange {
                        param,
                        value: khz,
                        min: lo,
                        max: hi,
                        why: "the hardware range, cpuinfo_min_freq..cpuinfo_max_freq, in kHz"
                            .into(),
                    });
                }
                if self.attr == "scaling_max_freq" {
                    let min = read_int(&param, &self.dir.join("scaling_min_freq"))?;
                    if khz < min {
                        return Err(ActuateError::OutOfRange {
                            param,
                            value: khz,
                            min,
                            max: hi,
                            why: format!(
                                "below scaling_min_freq ({min} kHz); lower scaling_min_freq first"
                            ),
                        });
                    }
                } else {
                    let max = read_int(&param, &self.dir.join("scaling_max_freq"))?;
                    if khz > max {
                        return Err(ActuateError::OutOfRange {
                            param,
                            value: khz,
                            min: lo,
                            max,
                            why: format!(
                                "above scaling_max_freq ({max} kHz); raise scaling_max_freq first"
                            ),
                        });
                    }
                }
                Ok(())
            }
            "scaling_governor" => {
                let Value::Word(w) = value else {
                    return Err(shape("a governor name (one word)"));
                };
                self.check_listed(w, "scaling_available_governors")
            }
            "energy_performance_preference" => match value {
                Value::Word(w) => self.check_listed(w, "energy_performance_available_preferences"),
                // intel_pstate also takes a raw EPP value.
                Value::Int(v) if (0..=255).contains(v) => Ok(()),
                Value::Int(v) => Err(ActuateError::OutOfRange {
                    param,
                    value: *v,
                    min: 0,
                    max: 255,
                    why: "a raw energy-performance preference is 0..=255".into(),
                }),
                Value::Ints(_) => Err(shape("a preference name (one word) or 0..=255")),
            },
            _ => unreachable!("checked at open"),
        }
    }

    fn check_listed(&self, word: &str, list: &str) -> Result<(), ActuateError> {
        let path = self.dir.join(list);
        let available = read_list(&self.param(), &path)?;
        if available.iter().any(|a| a == word) {
            Ok(())
        } else {
            Err(ActuateError::NotAvailable {
                param: self.param(),
                value: word.into(),
                source_file: path,
                available: available.join(" "),
            })
        }
    }

    fn write_verify(&self, value: &Value) -> Result<Value, ActuateError> {
        let param = self.param();
        let path = self.path();
        std::fs::write(&path, format!("{value}\n"))
            .map_err(|e| sysfs_error(&param, &path, e, Some(value)))?;
        let back = read_attr(&param, &path)?;
        if &back != value {
            return Err(ActuateError::Mismatch {
                param,
                wrote: value.to_string(),
                read: back.to_string(),
                why: mismatch_why(&self.attr, value, &back),
            });
        }
        Ok(back)
    }
}

/// What a read-back that differs from the write means. intel_pstate takes a raw
/// `energy_performance_preference` (0..=255) but shows one that equals a preference's value by
/// that preference's name (128 reads back as `balance_performance` on most CPUs): the kernel took
/// it, yet KPO cannot tell, without the driver's table, that the two agree. The name, written as
/// such, reads back as written.
fn mismatch_why(attr: &str, wrote: &Value, read: &Value) -> String {
    match (attr, wrote, read) {
        ("energy_performance_preference", Value::Int(_), Value::Word(name)) => format!(
            "the driver may show a raw preference by its name (intel_pstate does): if {name:?} is \
             the one meant, write the name instead of the number"
        ),
        _ => super::NOT_TAKEN.into(),
    }
}

impl Actuator for CpufreqActuator {
    fn address(&self) -> &ParamAddress {
        &self.address
    }

    fn read(&mut self) -> Result<Value, ActuateError> {
        read_attr(&self.param(), &self.path())
    }

    fn validate(&mut self, value: &Value) -> Result<(), ActuateError> {
        self.check(value)
    }

    fn apply(&mut self, value: &Value) -> Result<Value, ActuateError> {
        self.check(value)?;
        self.write_verify(value)
    }

    fn revert(&mut self, original: &Value) -> Result<Value, ActuateError> {
        self.write_verify(original)
    }
}

/// Whether this limit is written after the other limit of its cpufreq policy when both move the
/// same way (`lowering`: to a smaller value): a policy refuses a `scaling_max_freq` below its
/// `scaling_min_freq` and the reverse, so going down the min is written first, going up the max.
/// (Moved apart or together, either order passes.) False for every other parameter.
pub fn written_later(address: &ParamAddress, lowering: bool) -> bool {
    match (&address.target, address.name.as_str()) {
        (Target::Cpufreq { .. }, "scaling_min_freq") => !lowering,
        (Target::Cpufreq { .. }, "scaling_max_freq") => lowering,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(root: &Path, n: u32, min: u64, max: u64, cur_max: u64) -> PathBuf {
        let p = root.join(format!("devices/system/cpu/cpufreq/policy{n}"));
        std::fs::create_dir_all(&p).unwrap();
        std::fs::write(p.join("cpuinfo_min_freq"), format!("{min}\n")).unwrap();
        std::fs::write(p.join("cpuinfo_max_freq"), format!("{max}\n")).unwrap();
        std::fs::write(p.join("scaling_min_freq"), format!("{min}\n")).unwrap();
        std::fs::write(p.join("scaling_max_freq"), format!("{cur_max}\n")).unwrap();
        p
    }

    fn roots(tmp: &Path) -> Roots {
        Roots {
            proc_sys: tmp.join("proc_sys"),
            sys: tmp.to_path_buf(),
        }
    }

    fn full_policy(root: &Path, n: u32) -> PathBuf {
        let p = policy(root, n, 800_000, 3_000_000, 3_000_000);
        std::fs::write(p.join("scaling_governor"), "schedutil\n").unwrap();
        std::fs::write(
            p.join("scaling_available_governors"),
            "conservative ondemand userspace powersave performance schedutil \n",
        )
        .unwrap();
        std::fs::write(
            p.join("energy_performance_preference"),
            "balance_performance\n",
        )
        .unwrap();
        std::fs::write(
            p.join("energy_performance_available_preferences"),
            "default performance balance_performance balance_power power \n",
        )
        .unwrap();
        std::fs::write(p.join("scaling_driver"), "intel_pstate\n").unwrap();
        p
    }

    fn act(text: &str, root: &Path) -> Result<CpufreqActuator, ActuateError> {
        CpufreqActuator::open(&text.parse().unwrap(), &roots(root))
    }

    #[test]
    fn actuator_sets_limits_governor_and_epp() {
        let tmp = tempfile::tempdir().unwrap();
        let p = full_policy(tmp.path(), 0);
        let mut max = act("cpufreq:policy0:scaling_max_freq", tmp.path()).unwrap();
        assert_eq!(max.read().unwrap(), Value::Int(3_000_000));
        assert_eq!(
            max.apply(&Value::Int(2_000_000)).unwrap(),
            Value::Int(2_000_000)
        );
        assert_eq!(
            std::fs::read_to_string(p.join("scaling_max_freq"))
                .unwrap()
                .trim(),
            "2000000"
        );
        let mut min = act("cpufreq:policy0:scaling_min_freq", tmp.path()).unwrap();
        min.apply(&Value::Int(1_000_000)).unwrap();
        let mut gov = act("cpufreq:policy0:scaling_governor", tmp.path()).unwrap();
        assert_eq!(gov.read().unwrap(), Value::Word("schedutil".into()));
        gov.apply(&Value::Word("powersave".into())).unwrap();
        assert_eq!(
            gov.revert(&Value::Word("schedutil".into())).unwrap(),
            Value::Word("schedutil".into())
        );
        let mut epp = act("cpufreq:policy0:energy_performance_preference", tmp.path()).unwrap();
        epp.apply(&Value::Word("power".into())).unwrap();
        epp.validate(&Value::Int(128)).unwrap();
        assert!(matches!(
            epp.validate(&Value::Word("turbo".into())),
            Err(ActuateError::NotAvailable { .. })
        ));
        // Through the factory too.
        let mut boxed = crate::actuate::open_actuator(
            &"cpufreq:policy0:scaling_max_freq".parse().unwrap(),
            &roots(tmp.path()),
        )
        .unwrap();
        assert_eq!(boxed.read().unwrap(), Value::Int(2_000_000));
    }

    #[test]
    fn actuator_refuses_what_the_policy_files_forbid() {
        let tmp = tempfile::tempdir().unwrap();
        let p = full_policy(tmp.path(), 0);
        let mut gov = act("cpufreq:policy0:scaling_governor", tmp.path()).unwrap();
        let err = gov.apply(&Value::Word("turbo".into())).unwrap_err();
        assert!(matches!(err, ActuateError::NotAvailable { .. }), "{err}");
        assert!(
            err.to_string().contains("schedutil"),
            "lists what is available: {err}"
        );
        assert!(matches!(
            gov.validate(&Value::Int(3)),
            Err(ActuateError::Shape { .. })
        ));
        assert_eq!(
            std::fs::read_to_string(p.join("scaling_governor"))
                .unwrap()
                .trim(),
            "schedutil",
            "untouched"
        );

        let mut max = act("cpufreq:policy0:scaling_max_freq", tmp.path()).unwrap();
        let mut min = act("cpufreq:policy0:scaling_min_freq", tmp.path()).unwrap();
        for bad in [700_000, 3_100_000] {
            let err = max.validate(&Value::Int(bad)).unwrap_err();
            assert!(matches!(err, ActuateError::OutOfRange { .. }), "{err}");
            assert!(err.to_string().contains("cpuinfo_min_freq"), "{err}");
        }
        // min > max, both ways.
        max.apply(&Value::Int(1_500_000)).unwrap();
        let err = min.apply(&Value::Int(2_000_000)).unwrap_err();
        assert!(matches!(err, ActuateError::OutOfRange { .. }), "{err}");
        assert!(
            err.to_string().contains("raise scaling_max_freq first"),
            "{err}"
        );
        min.apply(&Value::Int(1_200_000)).unwrap();
        let err = max.apply(&Value::Int(1_000_000)).unwrap_err();
        assert!(
            err.to_string().contains("lower scaling_min_freq first"),
            "{err}"
        );
        assert_eq!(max.read().unwrap(), Value::Int(1_500_000));
        assert!(matches!(
            max.validate(&Value::Word("fast".into())),
            Err(ActuateError::Shape { .. })
        ));
    }

    #[test]
    fn actuator_errors_without_cpufreq_policy_or_attribute() {
        let tmp = tempfile::tempdir().unwrap();
        let err = act("cpufreq:policy0:scaling_max_freq", tmp.path()).unwrap_err();
        assert!(matches!(err, ActuateError::NotSupported { .. }), "{err}");
        assert!(err.to_string().contains("unsupported"), "{err}");
        assert!(err.to_string().contains("no cpufreq driver"), "{err}");
        // The same through the factory.
        assert!(matches!(
            crate::actuate::open_actuator(
                &"cpufreq:policy0:scaling_governor".parse().unwrap(),
                &roots(tmp.path())
            ),
            Err(ActuateError::NotSupported { .. })
        ));

        policy(tmp.path(), 0, 800_000, 3_000_000, 3_000_000);
        let err = act("cpufreq:policy7:scaling_max_freq", tmp.path()).unwrap_err();
        assert!(matches!(err, ActuateError::NotFound { .. }), "{err}");
        assert!(
            err.to_string().contains("policy0"),
            "names what exists: {err}"
        );
        let err = act("cpufreq:policy0:scaling_setspeed", tmp.path()).unwrap_err();
        assert!(matches!(err, ActuateError::UnknownParam { .. }), "{err}");
        // A raw preference that intel_pstate shows by its name is reported as such; any other
        // read-back that differs is a value not taken.
        let epp = "energy_performance_preference";
        let named = mismatch_why(
            epp,
            &Value::Int(128),
            &Value::Word("balance_performance".into()),
        );
        assert!(
            named.contains("\"balance_performance\" is the one meant"),
            "{named}"
        );
        for (attr, wrote, read) in [
            (epp, Value::Int(100), Value::Int(128)),
            (
                epp,
                Value::Word("power".into()),
                Value::Word("performance".into()),
            ),
            (
                "scaling_max_freq",
                Value::Int(2_000_000),
                Value::Int(1_800_000),
            ),
        ] {
            assert_eq!(mismatch_why(attr, &wrote, &read), super::super::NOT_TAKEN);
        }
        // acpi-cpufreq has no EPP.
        let err = act("cpufreq:policy0:energy_performance_preference", tmp.path()).unwrap_err();
        assert!(matches!(err, ActuateError::NotSupported { .. }), "{err}");
        let err = act("cpufreq:..:scaling_max_freq", tmp.path()).unwrap_err();
        assert!(matches!(err, ActuateError::NotFound { .. }), "{err}");
    }
}
