//! CPU frequency limit: `scaling_max_freq` of cpufreq policies, under a configurable sysfs root.
//!
//! Two things live here:
//!
//! - [`CpufreqActuator`]: one attribute of one cpufreq policy (`cpufreq:policyN:ATTR`) on the
//!   [`Actuator`] trait: `scaling_max_freq` and `scaling_min_freq` (kHz, checked against
//!   `cpuinfo_min_freq`/`cpuinfo_max_freq` and against each other), `scaling_governor` (checked
//!   against `scaling_available_governors`) and `energy_performance_preference` where the driver
//!   has it (checked against `energy_performance_available_preferences`). A tree without
//!   `devices/system/cpu/cpufreq` is [`ActuateError::NotSupported`].
//! - [`CpufreqMaxFreq`]: the optimizer's [`Knob`] over `scaling_max_freq` of several policies.
//!
//! Files (kHz): `<root>/devices/system/cpu/cpufreq/policy<N>/{scaling_max_freq, scaling_min_freq,
//! cpuinfo_min_freq, cpuinfo_max_freq}`. The knob's values are in MHz, like the seed study's
//! `freq_mhz`. Bounds are the intersection of the selected policies' `cpuinfo_*` ranges. A write is
//! verified by reading `scaling_max_freq` back; a value below a policy's current
//! `scaling_min_freq` is refused before writing, because the kernel would reject it.

use std::path::{Path, PathBuf};

use super::param::{ParamAddress, Target, Value};
use super::{ActuateError, Actuator, Knob, Roots};

/// Which policies the knob drives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PolicySelect {
    /// Every `policy*` directory.
    All,
    /// The given policy numbers.
    Ids(Vec<u32>),
}

/// The maximum-frequency limit of a set of cpufreq policies, as one knob in MHz.
#[derive(Debug, Clone)]
pub struct CpufreqMaxFreq {
    name: String,
    policies: Vec<PathBuf>,
    min_mhz: f64,
    max_mhz: f64,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ActuateError + '_ {
    move |source| ActuateError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn read_khz(path: &Path) -> Result<u64, ActuateError> {
    let text = super::read_attr(path).map_err(io(path))?;
    text.trim().parse().map_err(|_| ActuateError::Parse {
        path: path.to_path_buf(),
        text: text.trim().to_string(),
        what: "a frequency in kHz",
    })
}

impl CpufreqMaxFreq {
    /// Find the policies under `<sys_root>/devices/system/cpu/cpufreq`.
    pub fn open(sys_root: &Path, select: PolicySelect) -> Result<Self, ActuateError> {
        let dir = sys_root.join("devices/system/cpu/cpufreq");
        let name = match &select {
            PolicySelect::All => "cpufreq:max_mhz".to_string(),
            PolicySelect::Ids(ids) => format!(
                "cpufreq:policy{}:max_mhz",
                ids.iter().map(u32::to_string).collect::<Vec<_>>().join(",")
            ),
        };
        let not_found = |reason: String| ActuateError::NotFound {
            knob: name.clone(),
            reason,
        };
        let mut found: Vec<(u32, PathBuf)> = match std::fs::read_dir(&dir) {
            Ok(entries) => entries
                .filter_map(Result::ok)
                .filter_map(|e| {
                    let n = e
                        .file_name()
                        .to_str()?
                        .strip_prefix("policy")?
                        .parse::<u32>()
                        .ok()?;
                    Some((n, e.path()))
                })
                .collect(),
            Err(e) => {
                return Err(not_found(format!(
                    "{}: {e} (no cpufreq driver; common in VMs)",
                    dir.display()
                )))
            }
        };
        found.sort();
        let policies: Vec<PathBuf> = match &select {
            PolicySelect::All => found.into_iter().map(|(_, p)| p).collect(),
            PolicySelect::Ids(ids) => ids
                .iter()
                .map(|id| {
                    found
                        .iter()
                        .find(|(n, _)| n == id)
                        .map(|(_, p)| p.clone())
                        .ok_or_else(|| {
                            not_found(format!("{}/policy{id} does not exist", dir.display()))
                        })
                })
                .collect::<Result<_, _>>()?,
        };
        if policies.is_empty() {
            return Err(not_found(format!(
                "no policy* directories in {}",
                dir.display()
            )));
        }
        let mut min_khz = 0u64;
        let mut max_khz = u64::MAX;
        for p in &policies {
            min_khz = min_khz.max(read_khz(&p.join("cpuinfo_min_freq"))?);
            max_khz = max_khz.min(read_khz(&p.join("cpuinfo_max_freq"))?);
        }
        if min_khz > max_khz {
            return Err(not_found(
                "the selected policies have no common frequency range".into(),
            ));
        }
        Ok(Self {
            name,
            policies,
            min_mhz: min_khz as f64 / 1000.0,
            max_mhz: max_khz as f64 / 1000.0,
        })
    }

    pub fn policies(&self) -> &[PathBuf] {
        &self.policies
    }
}

impl Knob for CpufreqMaxFreq {
    fn name(&self) -> &str {
        &self.name
    }

    fn bounds(&self) -> Option<(f64, f64)> {
        Some((self.min_mhz, self.max_mhz))
    }

    /// The highest `scaling_max_freq` among the selected policies, in MHz.
    fn read(&mut self) -> Result<f64, ActuateError> {
        let mut max = 0u64;
        for p in &self.policies {
            max = max.max(read_khz(&p.join("scaling_max_freq"))?);
        }
        Ok(max as f64 / 1000.0)
    }

    fn apply(&mut self, mhz: f64) -> Result<f64, ActuateError> {
        if !mhz.is_finite() || mhz < self.min_mhz || mhz > self.max_mhz {
            return Err(ActuateError::OutOfBounds {
                knob: self.name.clone(),
                value: mhz,
                min: self.min_mhz,
                max: self.max_mhz,
            });
        }
        let khz = (mhz * 1000.0).round() as u64;
        for p in &self.policies {
            let min_path = p.join("scaling_min_freq");
            if let Ok(min) = read_khz(&min_path) {
                if khz < min {
                    return Err(ActuateError::InvalidValue {
                        knob: self.name.clone(),
                        value: mhz,
                        reason: format!(
                            "below {} = {} MHz; lower scaling_min_freq first",
                            min_path.display(),
                            min as f64 / 1000.0
                        ),
                    });
                }
            }
        }
        for p in &self.policies {
            let path = p.join("scaling_max_freq");
            std::fs::write(&path, format!("{khz}\n")).map_err(io(&path))?;
            let back = read_khz(&path)?;
            if back != khz {
                return Err(ActuateError::Verify {
                    knob: format!("{} ({})", self.name, path.display()),
                    wrote: khz as f64 / 1000.0,
                    read: back as f64 / 1000.0,
                });
            }
        }
        Ok(khz as f64 / 1000.0)
    }
}

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
            });
        }
        Ok(back)
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

    #[test]
    fn reads_bounds_applies_and_verifies() {
        let tmp = tempfile::tempdir().unwrap();
        let p0 = policy(tmp.path(), 0, 1_200_000, 2_900_000, 2_900_000);
        let p1 = policy(tmp.path(), 1, 1_000_000, 3_000_000, 2_500_000);
        let mut k = CpufreqMaxFreq::open(tmp.path(), PolicySelect::All).unwrap();
        assert_eq!(k.name(), "cpufreq:max_mhz");
        assert_eq!(k.bounds(), Some((1200.0, 2900.0)));
        assert_eq!(k.read().unwrap(), 2900.0);
        assert_eq!(k.apply(1800.0).unwrap(), 1800.0);
        for p in [&p0, &p1] {
            assert_eq!(
                std::fs::read_to_string(p.join("scaling_max_freq"))
                    .unwrap()
                    .trim(),
                "1800000"
            );
        }
        assert!(matches!(
            k.apply(1100.0),
            Err(ActuateError::OutOfBounds { .. })
        ));
        assert!(matches!(
            k.apply(3000.0),
            Err(ActuateError::OutOfBounds { .. })
        ));
        // Below the current minimum limit is refused before writing.
        std::fs::write(p1.join("scaling_min_freq"), "2000000\n").unwrap();
        assert!(matches!(
            k.apply(1500.0),
            Err(ActuateError::InvalidValue { .. })
        ));
        assert_eq!(k.read().unwrap(), 1800.0);

        let mut one = CpufreqMaxFreq::open(tmp.path(), PolicySelect::Ids(vec![1])).unwrap();
        assert_eq!(one.name(), "cpufreq:policy1:max_mhz");
        assert_eq!(one.bounds(), Some((1000.0, 3000.0)));
        one.apply(2600.0).unwrap();
        assert_eq!(
            std::fs::read_to_string(p0.join("scaling_max_freq"))
                .unwrap()
                .trim(),
            "1800000"
        );
    }

    #[test]
    fn missing_driver_and_policy_are_clear_errors() {
        let tmp = tempfile::tempdir().unwrap();
        let err = CpufreqMaxFreq::open(tmp.path(), PolicySelect::All).unwrap_err();
        assert!(err.to_string().contains("no cpufreq driver"), "{err}");
        policy(tmp.path(), 0, 1_200_000, 2_900_000, 2_900_000);
        let err = CpufreqMaxFreq::open(tmp.path(), PolicySelect::Ids(vec![3])).unwrap_err();
        assert!(err.to_string().contains("policy3 does not exist"), "{err}");
        std::fs::write(
            tmp.path()
                .join("devices/system/cpu/cpufreq/policy0/cpuinfo_max_freq"),
            "fast",
        )
        .unwrap();
        assert!(matches!(
            CpufreqMaxFreq::open(tmp.path(), PolicySelect::All),
            Err(ActuateError::Parse { .. })
        ));
    }

    #[test]
    fn a_failed_write_names_the_file() {
        // A directory in place of the file: the write fails with an I/O error naming it.
        let tmp = tempfile::tempdir().unwrap();
        let p = policy(tmp.path(), 0, 1_200_000, 2_900_000, 2_900_000);
        let mut k = CpufreqMaxFreq::open(tmp.path(), PolicySelect::All).unwrap();
        std::fs::remove_file(p.join("scaling_max_freq")).unwrap();
        std::fs::create_dir(p.join("scaling_max_freq")).unwrap();
        let err = k.apply(2000.0).unwrap_err();
        assert!(matches!(err, ActuateError::Io { .. }));
        assert!(err.to_string().contains("scaling_max_freq"));
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
        // acpi-cpufreq has no EPP.
        let err = act("cpufreq:policy0:energy_performance_preference", tmp.path()).unwrap_err();
        assert!(matches!(err, ActuateError::NotSupported { .. }), "{err}");
        let err = act("cpufreq:..:scaling_max_freq", tmp.path()).unwrap_err();
        assert!(matches!(err, ActuateError::NotFound { .. }), "{err}");
    }
}
