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
//! attribute back; for the two limits, a read-back that still shows the value before the write is
//! read again for a short while ([`LIMIT_SETTLE_WAIT`]), since the kernel applies them after the
//! write returns.
//!
//! A `scaling_max_freq` below the policy's current `scaling_min_freq` (or a min above the max) is
//! refused before writing, a revert's value too: the kernel had that value with another value of
//! the other limit. Kernels whose limits are frequency QoS requests (Linux 5.3/5.4 on)
//! take such a write: the request is stored and the limits in force are resolved from all the
//! requests, the min clamped to the max (`cpufreq_set_policy`), so the attribute written then
//! shows another value than its request and the read-back is a mismatch. Older kernels return
//! EINVAL. Refusing first keeps the stored request and the shown value the same, on either. A
//! max put back below the min would read back as written while the kernel pulls the min down:
//! a revert must not succeed by moving the other limit.
//!
//! A policy whose CPUs are all offline is inactive: the kernel answers every read and write of
//! it with EBUSY, which is reported as that (`inactive_policy`), not as a refused value.

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

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
    // Every file KPO reads or writes is in the policy's directory.
    let dir = path.parent().unwrap_or(path);
    // EBUSY from Linux 5.19 on; before, a write to an inactive policy is EINVAL (reads work).
    let may_be_inactive = match e.raw_os_error() {
        Some(libc::EBUSY) => true,
        Some(libc::EINVAL) => value.is_some(),
        _ => false,
    };
    let inactive = may_be_inactive
        .then(|| inactive_policy(dir, super::read_attr(&dir.join("affected_cpus"))))
        .flatten();
    sysfs_error_in(param, path, e, value, inactive)
}

/// Why writing a cpufreq file was refused: root is needed, and root itself is refused where the
/// file is immutable or a security module forbids the write (a /sys mounted read-only, in a
/// container without write access to it, says EROFS instead: "Read-only file system").
fn permission_hint() -> &'static str {
    if nix::unistd::Uid::effective().is_root() {
        "refused to root: the file made immutable (chattr +i) or a security module (SELinux, \
         AppArmor) forbids the write"
    } else {
        "changing cpufreq limits needs root"
    }
}

/// [`sysfs_error`] once it is known whether the policy is inactive (`inactive`: why).
fn sysfs_error_in(
    param: &str,
    path: &Path,
    e: std::io::Error,
    value: Option<&Value>,
    inactive: Option<String>,
) -> ActuateError {
    match (e.raw_os_error(), inactive) {
        (Some(libc::EACCES) | Some(libc::EPERM), _) => ActuateError::PermissionDenied {
            param: param.into(),
            path: path.into(),
            detail: format!("{e}; {}", permission_hint()),
        },
        // s54 story AP F5: a bare OS error, where the operator needs to know what to remount.
        (Some(libc::EROFS), _) => ActuateError::PermissionDenied {
            param: param.into(),
            path: path.into(),
            detail: format!(
                "{e}; the file system holding it is mounted read-only here (a container given \
                 /sys read-only): mount it read-write for the agent"
            ),
        },
        (Some(libc::EBUSY | libc::EINVAL), Some(inactive)) => match value {
            Some(value) => ActuateError::Refused {
                param: param.into(),
                value: value.to_string(),
                errno: super::errno_name(&e),
                hint: inactive,
            },
            None => ActuateError::NotFound {
                knob: param.into(),
                reason: format!("{}: {e}: {inactive}", path.display()),
            },
        },
        (Some(errno @ (libc::EINVAL | libc::EBUSY | libc::ERANGE)), _) if value.is_some() => {
            let attr = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            ActuateError::Refused {
                param: param.into(),
                value: value.map(Value::to_string).unwrap_or_default(),
                errno: super::errno_name(&e),
                hint: refusal_hint(attr, errno),
            }
        }
        _ => ActuateError::Io {
            path: path.into(),
            source: e,
        },
    }
}

/// What the driver's refusal (`errno`) of a write of `attr` most likely means.
fn refusal_hint(attr: &str, errno: i32) -> String {
    match (attr, errno) {
        ("energy_performance_preference", libc::EBUSY) => {
            "the cpufreq driver refused it: intel_pstate and amd-pstate refuse a preference \
             other than performance while the policy's governor is performance (set another \
             governor first)"
                .into()
        }
        ("scaling_max_freq" | "scaling_min_freq", libc::EINVAL) => {
            "the cpufreq driver refused it (kernels before 5.3 refuse a scaling_max_freq below \
             scaling_min_freq, and the reverse)"
                .into()
        }
        _ => "the cpufreq driver refused it".into(),
    }
}

/// Why the cpufreq policy in `dir` is inactive, if its `affected_cpus` (read as `affected`)
/// shows it is: all of its CPUs are offline. From Linux 5.19 the kernel answers every read and
/// write of an inactive policy's attributes with EBUSY (drivers/cpufreq/cpufreq.c,
/// `show()`/`store()`: `policy_is_inactive`, its `cpus` mask empty) while its directory and files
/// stay, so the write is not refused for its value; `affected_cpus` (that mask) gets the same
/// EBUSY, and nothing else makes reading it busy. Before 5.19 a write is EINVAL (its `store()`
/// needs the policy's CPU online), reads work, and `affected_cpus` reads as an empty line.
fn inactive_policy(dir: &Path, affected: std::io::Result<String>) -> Option<String> {
    let (how, refuses) = match &affected {
        Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
            ("is refused (EBUSY) too", "every read and write")
        }
        // Before 5.19: reads show the last values.
        Ok(text) if text.trim().is_empty() => ("lists no CPU", "every write"),
        _ => return None,
    };
    let policy = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    // `<sys>/devices/system/cpu/online`, two levels above the policy.
    let online = dir
        .parent()
        .and_then(Path::parent)
        .map(|cpu| cpu.join("online"))
        .and_then(|file| {
            let text = super::read_attr(&file).ok()?;
            Some(format!(
                "; {} lists the CPUs online: {}",
                file.display(),
                text.trim()
            ))
        })
        .unwrap_or_default();
    Some(format!(
        "{policy} is inactive: all of its CPUs are offline ({} {how}){online}; the kernel \
         refuses {refuses} of the policy until one of its CPUs is online again",
        dir.join("affected_cpus").display()
    ))
}

fn read_attr(param: &str, path: &Path) -> Result<Value, ActuateError> {
    let text = super::read_attr(path).map_err(|e| sysfs_error(param, path, e, None))?;
    let value = Value::parse(&text);
    // The attributes KPO changes hold one integer or one word; other text is none of them.
    if matches!(&value, Value::Word(w) if w.is_empty() || w.contains(' ')) {
        return Err(ActuateError::Parse {
            path: path.into(),
            text: text.trim().to_string(),
            what: "an integer or one word",
        });
    }
    Ok(value)
}

fn read_int(param: &str, path: &Path) -> Result<i128, ActuateError> {
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

/// The file in which a cpufreq driver with a frequency table lists it (kHz, space-separated).
pub const AVAILABLE_FREQUENCIES: &str = "scaling_available_frequencies";

/// The directory of cpufreq policy `policy` under the sysfs root `sys`.
pub fn policy_dir(sys: &Path, policy: &str) -> PathBuf {
    sys.join("devices/system/cpu/cpufreq").join(policy)
}

/// The frequencies of the driver's table for the policy in `dir`, from
/// [`AVAILABLE_FREQUENCIES`], ascending and without repeats. `Ok(None)`: the driver has no table
/// (intel_pstate, amd-pstate), and a limit takes any value in the hardware range. A driver with
/// one (acpi-cpufreq and others) resolves a limit written to a frequency of its table
/// (`cpufreq_set_policy` → `__resolve_freq`), so a value between two of them reads back as
/// another one. `Err`: the file is there but cannot be read, or is not a list of kHz.
pub fn frequency_table(dir: &Path) -> Result<Option<Vec<i64>>, String> {
    let path = dir.join(AVAILABLE_FREQUENCIES);
    let text = match super::read_attr(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    let mut table = text
        .split_whitespace()
        .map(|w| w.parse::<i64>().ok().filter(|&khz| khz > 0))
        .collect::<Option<Vec<i64>>>()
        .filter(|t| !t.is_empty())
        .ok_or_else(|| {
            format!(
                "{}: {:?} is not a list of frequencies in kHz",
                path.display(),
                text.trim()
            )
        })?;
    table.sort_unstable();
    table.dedup();
    Ok(Some(table))
}

/// The drivers whose own `performance` policy holds the energy-performance preference at
/// `performance` (and refuses another, EBUSY): intel_pstate and amd-pstate in active mode.
const HOLDS_EPP_UNDER_PERFORMANCE: [&str; 2] = ["intel_pstate", "amd-pstate-epp"];

/// The name of the policy's cpufreq driver (`scaling_driver`), or `unknown`.
fn driver_name(dir: &Path) -> String {
    super::read_attr(&dir.join("scaling_driver"))
        .map(|d| d.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
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
                    // "Not offered" alone was wrong of an attribute KPO changed before and gone
                    // since (s54 story AP F5).
                    "{} does not exist now: the cpufreq driver ({}) does not offer it, or no \
                     longer does (a driver or governor changed since)",
                    dir.join(&attr).display(),
                    driver_name(&dir)
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
                self.check_hardware_range(*khz)?;
                self.check_in_the_table(*khz)?;
                self.check_against_the_other_limit(*khz)
            }
            "scaling_governor" => {
                let Value::Word(w) = value else {
                    return Err(shape("a governor name (one word)"));
                };
                self.check_listed(w, "scaling_available_governors")
            }
            "energy_performance_preference" => match value {
                // Listed by intel_pstate and amd-pstate, but it selects the firmware's own
                // preference, which reads back by its name or number, never as `default`: the
                // change could only be put back after a read-back said the driver did not take
                // it, which it did (s63 story CK-3).
                Value::Word(w) if w == "default" => Err(ActuateError::NeverReadsBack {
                    param: param.clone(),
                    value: w.clone(),
                    why: "the driver shows the firmware's default preference by its name (most \
                          often balance_performance) or number, never as `default`; write that \
                          name"
                        .into(),
                }),
                Value::Word(w) => {
                    self.check_listed(w, "energy_performance_available_preferences")?;
                    self.check_governor_allows(value)
                }
                // intel_pstate also takes a raw EPP value.
                Value::Int(v) if (0..=255).contains(v) => self.check_governor_allows(value),
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

    /// Whether this is a preference the policy's driver holds at `performance` under the
    /// `performance` governor ([`HOLDS_EPP_UNDER_PERFORMANCE`]; a driver that cannot be read
    /// does not).
    fn driver_holds_preference(&self) -> bool {
        self.attr == "energy_performance_preference"
            && HOLDS_EPP_UNDER_PERFORMANCE.contains(&driver_name(&self.dir).as_str())
    }

    /// Refuses a preference other than `performance` while the policy's governor is
    /// `performance`: intel_pstate and amd-pstate hold the preference there and refuse the write
    /// (EBUSY), so the change could only be journaled and fail, again at every proposal (a failed
    /// change counts toward no cooldown). Only in their active mode (`scaling_driver` is
    /// `intel_pstate` or `amd-pstate-epp`), where `performance` is the driver's own policy: in
    /// passive mode (`intel_cpufreq`) it is the generic governor, and the driver takes the
    /// preference under it. A governor or driver that cannot be read leaves it to the driver.
    fn check_governor_allows(&self, value: &Value) -> Result<(), ActuateError> {
        let performance =
            matches!(value, Value::Word(w) if w == "performance") || *value == Value::Int(0);
        let governor = super::read_attr(&self.dir.join("scaling_governor"));
        if performance || !matches!(&governor, Ok(g) if g.trim() == "performance") {
            return Ok(());
        }
        if !self.driver_holds_preference() {
            return Ok(());
        }
        Err(ActuateError::RefusedWhile {
            param: self.param(),
            value: value.to_string(),
            why: "scaling_governor is performance: intel_pstate and amd-pstate hold the \
                  preference at performance under that governor and refuse another (set \
                  another governor first)"
                .into(),
        })
    }

    /// Refuses `khz` for this limit (one of the two) when it crosses the policy's other limit as
    /// it is now: a max below the min, or a min above the max. Kernels whose limits are frequency
    /// QoS requests take such a write and resolve the limits in force with the min clamped to the
    /// max, so the write would show another value than its own (the min), or move the other limit
    /// with no write of its own (the max); older kernels return EINVAL.
    fn check_hardware_range(&self, khz: i128) -> Result<(), ActuateError> {
        let param = self.param();
        let lo = read_int(&param, &self.dir.join("cpuinfo_min_freq"))?;
        let hi = read_int(&param, &self.dir.join("cpuinfo_max_freq"))?;
        if khz < lo || khz > hi {
            return Err(ActuateError::OutOfRange {
                param,
                value: khz,
                min: lo,
                max: hi,
                why: "the hardware range, cpuinfo_min_freq..cpuinfo_max_freq, in kHz".into(),
            });
        }
        Ok(())
    }

    /// Refuses a frequency the driver's table does not list, before any write: the driver
    /// resolves a limit to one of its frequencies, so such a write reads back as another and is
    /// put back (two writes for nothing), and an approval of it could never be carried out (s63
    /// story CK-2). Without a table, or with one that cannot be read, the write's read-back
    /// decides.
    fn check_in_the_table(&self, khz: i128) -> Result<(), ActuateError> {
        // Boost frequencies (cpufreq-dt's turbo OPPs) are listed apart, and are as much the
        // driver's (s63 review1 R1-6).
        let boost = || {
            let text = super::read_attr(&self.dir.join("scaling_boost_frequencies")).ok()?;
            Some(
                text.split_whitespace()
                    .any(|w| w.parse::<i128>() == Ok(khz)),
            )
        };
        match frequency_table(&self.dir) {
            Ok(Some(table))
                if !table.iter().any(|&f| i128::from(f) == khz) && boost() != Some(true) =>
            {
                let listed: Vec<String> = table.iter().map(i64::to_string).collect();
                Err(ActuateError::NotAvailable {
                    param: self.param(),
                    value: khz.to_string(),
                    source_file: self.dir.join(AVAILABLE_FREQUENCIES),
                    available: listed.join(" "),
                })
            }
            _ => Ok(()),
        }
    }

    fn check_against_the_other_limit(&self, khz: i128) -> Result<(), ActuateError> {
        let param = self.param();
        let other = other_limit_attr(&self.attr);
        let now = read_int(&param, &self.dir.join(other))?;
        let Some(why) = crossing_why(&self.attr, khz, now) else {
            return Ok(());
        };
        // The range's other end is the hardware's, when it can be read: a revert needs only the
        // other limit.
        let hardware = |file: &str| read_int(&param, &self.dir.join(file)).unwrap_or(now);
        let (min, max) = if self.attr == "scaling_max_freq" {
            (now, hardware("cpuinfo_max_freq"))
        } else {
            (hardware("cpuinfo_min_freq"), now)
        };
        Err(ActuateError::OutOfRange {
            param,
            value: khz,
            min,
            max,
            why,
        })
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
        self.write_verify_reading(value, || read_attr(&param, &path))
    }

    /// Writes `value` and reads it back through `read` (the attribute; a test's own view of it).
    fn write_verify_reading(
        &self,
        value: &Value,
        mut read: impl FnMut() -> Result<Value, ActuateError>,
    ) -> Result<Value, ActuateError> {
        let param = self.param();
        let path = self.path();
        // The limits show the value in force, which the kernel updates after the write returns.
        let before = if is_limit(&self.attr) {
            read().ok()
        } else {
            None
        };
        // Never created: an attribute gone since it was read (a policy unplugged) is a failed
        // write, not a new file that reads back as written on a tree that is not sysfs.
        // Truncated for such trees; sysfs ignores it. Never through a link: sysfs attributes are
        // none, and one placed in a temporary tree would have root write the file it leads to
        // (s58 review2 R2-6; ELOOP, a failed write naming the path).
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path)
            .and_then(|mut file| {
                std::io::Write::write_all(
                    &mut file,
                    format!("{}\n", value.kernel_text()).as_bytes(),
                )
            })
            .map_err(|e| sysfs_error(&param, &path, e, Some(value)))?;
        let back = settled_read_back(value, before.as_ref(), read)?;
        if &back != value {
            let why = if before.as_ref() == Some(&back) {
                format!(
                    "the kernel still showed the value before the write {} ms after it: \
                     another frequency limit (a thermal or firmware cap, another frequency QoS \
                     request) may hold the policy there",
                    LIMIT_SETTLE_WAIT.as_millis()
                )
            } else if is_limit(&self.attr) {
                self.limit_mismatch_why()
            } else {
                mismatch_why(&self.attr, value, &back)
            };
            return Err(ActuateError::Mismatch {
                param,
                wrote: value.to_string(),
                read: back.to_string(),
                why,
            });
        }
        Ok(back)
    }

    /// Writes `value` as [`Actuator::apply`] does, `read_min` reading the policy's
    /// `scaling_min_freq` as shown (a test's own view of it). Since Linux 5.4 the kernel keeps a
    /// min request above the max and shows the min clamped to the max, so a raise of
    /// `scaling_max_freq` can bring back a request the old max held down: the min moves with no
    /// write of its own, nothing reports it, and the raise can never be put back, every revert
    /// being refused as below the min it brought back (s63 story CK-1). Such a raise is put back
    /// at once (the min shows as before) and refused, naming the request to lower first.
    fn apply_watching_the_min(
        &self,
        value: &Value,
        mut read_min: impl FnMut() -> Result<i128, ActuateError>,
    ) -> Result<Value, ActuateError> {
        if self.attr != "scaling_max_freq" {
            return self.write_verify(value);
        }
        let param = self.param();
        let min_before = read_min().ok();
        let max_before = read_attr(&param, &self.path()).ok();
        let back = self.write_verify(value)?;
        // The update that showed the new max showed the min it resolved with it.
        let (Some(was), Ok(now), Some(max_before)) = (min_before, read_min(), max_before) else {
            return Ok(back);
        };
        if now == was {
            return Ok(back);
        }
        let put_back = match self.write_verify(&max_before) {
            Ok(_) => match read_min() {
                Ok(min) => format!("put back {max_before}: the min shows {min} kHz"),
                Err(e) => format!("put back {max_before}; the min could not be read: {e}"),
            },
            Err(e) => format!("putting back {max_before} failed: {e}"),
        };
        Err(ActuateError::RefusedWhile {
            param,
            value: value.to_string(),
            why: format!(
                "scaling_min_freq holds a request above the max: the raise brought the min \
                 shown from {was} to {now} kHz with no write of its own (Linux 5.4 on keeps a \
                 min request above the max and shows the min clamped to it), and kept, the \
                 raise could never be reverted (the max put back would be below that min); \
                 {put_back}. Write scaling_min_freq below {was} first (writing the value it \
                 shows, {was}, changes nothing KPO can see)"
            ),
        })
    }

    /// What a limit that reads back another value than the one written (and than the one
    /// before) means: with a frequency table, the driver resolved it to one of the table's
    /// frequencies, which the message lists, so that the operator (or a policy's bounds) can
    /// pick one of them.
    fn limit_mismatch_why(&self) -> String {
        match frequency_table(&self.dir) {
            Ok(Some(table)) => {
                let list: Vec<String> = table.iter().map(i64::to_string).collect();
                format!(
                    "the cpufreq driver ({}) resolves a limit to a frequency of its table, \
                     {} (kHz): {}; write one of those",
                    driver_name(&self.dir),
                    self.dir.join(AVAILABLE_FREQUENCIES).display(),
                    list.join(" ")
                )
            }
            Ok(None) | Err(_) => super::NOT_TAKEN.into(),
        }
    }
}

/// Whether `attr` is one of a policy's two frequency limits.
pub(crate) fn is_limit(attr: &str) -> bool {
    matches!(attr, "scaling_max_freq" | "scaling_min_freq")
}

/// The other frequency limit of a policy than `attr` (one of the two).
fn other_limit_attr(attr: &str) -> &'static str {
    if attr == "scaling_max_freq" {
        "scaling_min_freq"
    } else {
        "scaling_max_freq"
    }
}

/// The other frequency limit of the same cpufreq policy: `scaling_min_freq` for
/// `scaling_max_freq` and the reverse; `None` for any other parameter.
pub fn other_limit(address: &ParamAddress) -> Option<ParamAddress> {
    match &address.target {
        Target::Cpufreq { .. } if is_limit(&address.name) => Some(ParamAddress {
            name: other_limit_attr(&address.name).to_string(),
            target: address.target.clone(),
        }),
        _ => None,
    }
}

/// Why `khz` for limit `attr` crosses the policy's other limit, now `other` kHz, if it does (a
/// `scaling_max_freq` below the `scaling_min_freq`, or a min above the max), with what to change
/// first.
pub fn crossing_why(attr: &str, khz: i128, other: i128) -> Option<String> {
    match attr {
        "scaling_max_freq" if khz < other => Some(format!(
            "below scaling_min_freq ({other} kHz); lower scaling_min_freq first"
        )),
        "scaling_min_freq" if khz > other => Some(format!(
            "above scaling_max_freq ({other} kHz); raise scaling_max_freq first"
        )),
        _ => None,
    }
}

/// What a write of `khz` to limit `attr` across the other limit (now `other` kHz) would do on a
/// kernel whose limits are frequency QoS requests (Linux 5.3/5.4 on), which resolves the limits
/// in force with the min clamped to the max (`cpufreq_verify_within_limits`); older kernels
/// return EINVAL.
pub fn crossing_effect(attr: &str, khz: i128, other: i128) -> String {
    if attr == "scaling_max_freq" {
        format!(
            "written, the kernel would show scaling_min_freq at {khz} too, its request \
             ({other}) coming back whenever the max goes up again (Linux 5.4 on; older \
             kernels refuse it)"
        )
    } else {
        format!(
            "written, the kernel would show scaling_min_freq at {other}, the max, not at {khz} \
             (Linux 5.4 on; older kernels refuse it)"
        )
    }
}

/// How long a frequency limit's read-back that still shows the value before the write is read
/// again, every [`LIMIT_SETTLE_POLL`], before it counts as a mismatch.
///
/// Since the limits became frequency QoS requests (Linux 5.3/5.4), a write of `scaling_max_freq`
/// or `scaling_min_freq` only updates the request (drivers/cpufreq/cpufreq.c, `store_one` →
/// `freq_qos_update_request`); the QoS notifier (`cpufreq_notifier_max`/`_min`) only queues the
/// policy's update work (`schedule_work(&policy->update)`; a kthread work in some vendor
/// kernels), and `policy->max`/`policy->min`, which the attribute shows (`show_one`), change when
/// that work runs: `handle_update` → `refresh_frequency_limits` → `cpufreq_set_policy`. It waits
/// for the policy's rwsem, which the sysfs write holds until it returns, so a read right after
/// the write may still show the value before. The work normally runs within a millisecond; on a
/// busy CPU a kworker may wait a few scheduler ticks (4 ms at HZ=250, 10 ms at HZ=100), and the
/// update itself calls the driver and the governor on the policy's CPUs. 100 ms covers that many
/// times over, while bounding what a limit that never moves costs the change path (a write under
/// another limit that holds the value in force, e.g. a thermal cap, changes nothing shown): the
/// deciding half waits that long, once per such write. Reading the attribute is cheap, so every
/// 2 ms (at most 50 reads).
///
/// The governor and the energy-performance preference are set within the write
/// (`store_scaling_governor` → `cpufreq_set_policy`; the driver's own `store_` for the
/// preference), so their read-back is taken at once.
pub const LIMIT_SETTLE_WAIT: Duration = Duration::from_millis(100);

/// How often a frequency limit's stale read-back is read again ([`LIMIT_SETTLE_WAIT`]).
pub const LIMIT_SETTLE_POLL: Duration = Duration::from_millis(2);

/// The read-back of a write of `wrote` over `before`: while it still shows `before` (and that is
/// not what was written), read again every [`LIMIT_SETTLE_POLL`] up to [`LIMIT_SETTLE_WAIT`]. Any
/// other read-back, the value written or another one (a driver's rounding to a frequency of its
/// table), is taken at once; so is every read-back when `before` is `None`.
fn settled_read_back(
    wrote: &Value,
    before: Option<&Value>,
    mut read: impl FnMut() -> Result<Value, ActuateError>,
) -> Result<Value, ActuateError> {
    let stale = |back: &Value| before.is_some_and(|b| b == back && b != wrote);
    let deadline = Instant::now() + LIMIT_SETTLE_WAIT;
    loop {
        let back = read()?;
        if !stale(&back) || Instant::now() >= deadline {
            return Ok(back);
        }
        std::thread::sleep(LIMIT_SETTLE_POLL);
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

    fn held_by_driver_under_performance(&mut self) -> bool {
        self.driver_holds_preference()
    }

    fn read(&mut self) -> Result<Value, ActuateError> {
        read_attr(&self.param(), &self.path())
    }

    fn validate(&mut self, value: &Value) -> Result<(), ActuateError> {
        self.check(value)
    }

    fn validate_alone(&mut self, value: &Value) -> Result<(), ActuateError> {
        match (is_limit(&self.attr), value) {
            (true, Value::Int(khz)) => self.check_hardware_range(*khz),
            _ => self.check(value),
        }
    }

    fn apply(&mut self, value: &Value) -> Result<Value, ActuateError> {
        self.check(value)?;
        let param = self.param();
        let min_path = self.dir.join("scaling_min_freq");
        self.apply_watching_the_min(value, || read_int(&param, &min_path))
    }

    /// Puts `original` back without the hardware range check (it was the kernel's own value),
    /// but a limit is still refused when it would cross the policy's other limit as it is now:
    /// the kernel had `original` with another value of the other limit, and written now, it
    /// would be taken by clamping (Linux 5.3/5.4 on: a max put back below the min pulls the
    /// min down with it while the read-back of the max passes) or refused (older kernels).
    fn revert(&mut self, original: &Value) -> Result<Value, ActuateError> {
        if let (true, Value::Int(khz)) = (is_limit(&self.attr), original) {
            self.check_against_the_other_limit(*khz)?;
        }
        self.write_verify(original)
    }
}

/// Whether this limit is written after the other limit of its cpufreq policy when both move the
/// same way (`lowering`: to a smaller value): KPO refuses a `scaling_max_freq` below its policy's
/// `scaling_min_freq` and the reverse (older kernels return EINVAL; newer ones take it and clamp
/// the min to the max, so the read-back differs), so going down the min is written first, going
/// up the max. (Moved apart or together, either order passes.) False for every other parameter.
pub fn written_later(address: &ParamAddress, lowering: bool) -> bool {
    match (&address.target, address.name.as_str()) {
        (Target::Cpufreq { .. }, "scaling_min_freq") => !lowering,
        (Target::Cpufreq { .. }, "scaling_max_freq") => lowering,
        _ => false,
    }
}

/// A policy's governor attribute.
pub const GOVERNOR: &str = "scaling_governor";

/// A policy's energy-performance preference attribute.
pub const PREFERENCE: &str = "energy_performance_preference";

/// The governor, and the preference, that intel_pstate and amd-pstate couple.
pub const PERFORMANCE: &str = "performance";

/// The governor of the policy whose energy-performance preference `address` is; `None` for any
/// other parameter.
///
/// intel_pstate (`intel_pstate_hwp_set`) and amd-pstate couple the two: switching the governor
/// to `performance` saves the preference and sets it to `performance`, a write of another
/// preference under that governor is refused with EBUSY, and switching the governor back gives
/// the saved preference back (while it still reads `performance`).
pub fn governor_of(address: &ParamAddress) -> Option<ParamAddress> {
    match &address.target {
        Target::Cpufreq { .. } if address.name == PREFERENCE => Some(ParamAddress {
            name: GOVERNOR.to_string(),
            target: address.target.clone(),
        }),
        _ => None,
    }
}

/// Whether this parameter is written after the other of its policy's governor and
/// energy-performance preference when both are written together ([`governor_of`]), the governor
/// going to `governor_to`: the preference is written while the governor is not `performance`,
/// under which the driver refuses it. So after the governor when the governor goes to another
/// one (leaving `performance` gives the preference saved then back, which the preference's own
/// write then replaces), and before it when the governor goes to `performance` (which saves the
/// preference just written, given back when it leaves). `governor_to`: where this policy's
/// governor goes, `None` when it is not written. False for every other parameter.
pub fn written_after_its_coupled_attr(address: &ParamAddress, governor_to: Option<&Value>) -> bool {
    let Target::Cpufreq { .. } = &address.target else {
        return false;
    };
    let to_performance = match governor_to {
        Some(to) => *to == Value::Word(PERFORMANCE.into()),
        None => return false,
    };
    match address.name.as_str() {
        PREFERENCE => !to_performance,
        GOVERNOR => to_performance,
        _ => false,
    }
}

/// The order in which to make `writes` so that each passes, as indices into `writes`: the two
/// limits of one cpufreq policy ordered by [`written_later`], each taking one of the places its
/// policy's limits held, so that nothing else moves. `writes[i]`: the address written and whether
/// the write lowers its value, or `None` for an item that is not such a write (it keeps its place).
pub fn passing_order(writes: &[Option<(&ParamAddress, bool)>]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..writes.len()).collect();
    let mut policies: std::collections::BTreeMap<&str, Vec<usize>> = Default::default();
    for (i, write) in writes.iter().enumerate() {
        if let Some((address, _)) = write {
            if let Target::Cpufreq { policy } = &address.target {
                if is_limit(&address.name) {
                    policies.entry(policy).or_default().push(i);
                }
            }
        }
    }
    for places in policies.values() {
        let mut limits = places.clone();
        limits.sort_by_key(|&i| writes[i].is_some_and(|(a, lowering)| written_later(a, lowering)));
        for (&place, i) in places.iter().zip(limits) {
            order[place] = i;
        }
    }
    order
}

/// For tests over a temporary sysfs-like tree: cpufreq policy `n` under `sys` (the tree's
/// `/sys`), its hardware range `min` to `max` kHz and its limits `min` to `cur_max`; its
/// directory.
#[cfg(any(test, feature = "test-util"))]
pub fn fake_policy(sys: &Path, n: u32, min: u64, max: u64, cur_max: u64) -> PathBuf {
    let p = sys.join(format!("devices/system/cpu/cpufreq/policy{n}"));
    std::fs::create_dir_all(&p).unwrap();
    std::fs::write(p.join("cpuinfo_min_freq"), format!("{min}\n")).unwrap();
    std::fs::write(p.join("cpuinfo_max_freq"), format!("{max}\n")).unwrap();
    std::fs::write(p.join("scaling_min_freq"), format!("{min}\n")).unwrap();
    std::fs::write(p.join("scaling_max_freq"), format!("{cur_max}\n")).unwrap();
    p
}

#[cfg(test)]
mod tests {
    use super::fake_policy as policy;
    use std::sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    };

    use super::*;

    /// A refused write says what would let it through: root, or for root a file without the
    /// immutable flag and a security module's leave (s40 review: it said "needs root" to root;
    /// s51 story AA F2: it blamed a read-only /sys, which says EROFS, not EPERM).
    #[test]
    fn a_refused_write_says_what_it_needs_for_who_runs_it() {
        let e = sysfs_error_in(
            "cpufreq:policy0:scaling_max_freq",
            Path::new("/x"),
            std::io::Error::from_raw_os_error(libc::EPERM),
            Some(&Value::Int(2_000_000)),
            None,
        );
        let expected = if nix::unistd::Uid::effective().is_root() {
            "refused to root: the file made immutable (chattr +i) or a security module"
        } else {
            "changing cpufreq limits needs root"
        };
        assert!(e.to_string().contains(expected), "{e}");
        // s54 story AP F5: EROFS was a bare "Read-only file system (os error 30)". Said what to
        // remount, and still a refusal that may pass later (the optimizer keeps the value).
        let e = sysfs_error_in(
            "cpufreq:policy0:scaling_max_freq",
            Path::new("/x"),
            std::io::Error::from_raw_os_error(libc::EROFS),
            Some(&Value::Int(2_000_000)),
            None,
        );
        assert!(
            e.to_string().ends_with(
                "Read-only file system (os error 30); the file system holding it is mounted \
                 read-only here (a container given /sys read-only): mount it read-write for the \
                 agent"
            ) && e.is_passing(),
            "{e}"
        );
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

    /// Policy 0 of acpi-cpufreq, with a frequency table.
    fn acpi_policy(root: &Path) -> PathBuf {
        let p = full_policy(root, 0);
        std::fs::write(p.join("scaling_driver"), "acpi-cpufreq\n").unwrap();
        std::fs::write(
            p.join(AVAILABLE_FREQUENCIES),
            "3000000 2400000 1800000 1200000 800000 \n",
        )
        .unwrap();
        p
    }

    fn act(text: &str, root: &Path) -> Result<CpufreqActuator, ActuateError> {
        CpufreqActuator::open(&text.parse().unwrap(), &roots(root))
    }

    /// s63 story CK-2: a limit the driver's table does not list is refused before any write (it
    /// would read back as another frequency and be put back); one it lists passes.
    #[test]
    fn a_limit_off_the_drivers_table_is_refused_before_a_write() {
        let tmp = tempfile::tempdir().unwrap();
        let p = acpi_policy(tmp.path());
        let mut max = act("cpufreq:policy0:scaling_max_freq", tmp.path()).unwrap();
        let err = max.apply(&Value::Int(2_000_000)).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "cpufreq:policy0:scaling_max_freq: \"2000000\" is not available; {} lists: \
                 800000 1200000 1800000 2400000 3000000",
                p.join(AVAILABLE_FREQUENCIES).display()
            )
        );
        let shown = std::fs::read_to_string(p.join("scaling_max_freq")).unwrap();
        assert_eq!(shown.trim(), "3000000", "nothing written");
        max.validate(&Value::Int(2_400_000)).unwrap();
        // A boost frequency, listed apart (cpufreq-dt), is the driver's too.
        std::fs::write(p.join("scaling_boost_frequencies"), "2000000 \n").unwrap();
        max.validate(&Value::Int(2_000_000)).unwrap();
    }

    /// s63 story CK-3: `default`, which intel_pstate and amd-pstate list, is refused before any
    /// write: the driver shows the firmware's preference by its name, never as `default`, and the
    /// change could only be put back after a read-back that blamed the driver.
    #[test]
    fn the_listed_default_preference_is_refused_before_a_write() {
        let tmp = tempfile::tempdir().unwrap();
        let p = full_policy(tmp.path(), 0);
        let mut epp = act("cpufreq:policy0:energy_performance_preference", tmp.path()).unwrap();
        let default = Value::Word("default".into());
        let err = epp.apply(&default).unwrap_err();
        assert!(matches!(err, ActuateError::NeverReadsBack { .. }), "{err}");
        assert!(err.to_string().contains("write that name"), "{err}");
        assert_eq!(
            std::fs::read_to_string(p.join("energy_performance_preference")).unwrap(),
            "balance_performance\n",
            "nothing written"
        );
        epp.validate(&Value::Word("balance_power".into())).unwrap();
    }

    /// s63 story CK-1: a raise of the max that brings back a min request the old max held down
    /// (the kernel shows the min clamped to the max) is put back and refused: kept, it could
    /// never be reverted. A raise that leaves the min as it was is applied.
    #[test]
    fn a_max_raise_that_brings_back_a_held_down_min_is_put_back_and_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let p = policy(tmp.path(), 2, 800_000, 3_000_000, 2_200_000);
        std::fs::write(p.join("scaling_min_freq"), "2200000\n").unwrap();
        let a = act("cpufreq:policy2:scaling_max_freq", tmp.path()).unwrap();
        let reads = std::cell::Cell::new(0);
        let surfacing = || {
            reads.set(reads.get() + 1);
            // Before the raise, after it, after the put-back.
            Ok(if reads.get() == 2 {
                3_000_000
            } else {
                2_200_000
            })
        };
        let err = a
            .apply_watching_the_min(&Value::Int(3_000_000), surfacing)
            .unwrap_err();
        assert!(matches!(err, ActuateError::RefusedWhile { .. }), "{err}");
        let text = err.to_string();
        assert!(
            text.contains("brought the min shown from 2200000 to 3000000 kHz")
                && text.contains("put back 2200000: the min shows 2200000 kHz")
                && text.contains("Write scaling_min_freq below 2200000 first"),
            "{text}"
        );
        let max = std::fs::read_to_string(p.join("scaling_max_freq")).unwrap();
        assert_eq!(max.trim(), "2200000");
        let steady = || Ok(2_200_000);
        assert_eq!(
            a.apply_watching_the_min(&Value::Int(3_000_000), steady)
                .unwrap(),
            Value::Int(3_000_000)
        );
    }

    /// s58 review2 R2-6: a limit file that is a link (placed in a temporary tree) is not written
    /// through: the file it leads to stays as it was, and the write fails naming the path.
    #[test]
    fn a_limit_file_that_is_a_link_is_not_written_through() {
        let tmp = tempfile::tempdir().unwrap();
        let p = full_policy(tmp.path(), 0);
        let victim = tmp.path().join("victim");
        std::fs::write(&victim, "root's own\n").unwrap();
        std::fs::remove_file(p.join("scaling_max_freq")).unwrap();
        std::os::unix::fs::symlink(&victim, p.join("scaling_max_freq")).unwrap();
        let mut max = act("cpufreq:policy0:scaling_max_freq", tmp.path()).unwrap();
        let e = max.revert(&Value::Int(2_000_000)).unwrap_err();
        assert!(e.to_string().contains("scaling_max_freq"), "{e}");
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "root's own\n");
    }

    /// Defect: under the performance governor (intel_pstate, amd-pstate: the preference is held
    /// at performance and another is EBUSY), a proposed preference passed the checks, was
    /// journaled, and failed at the write, again at every proposal.
    #[test]
    fn a_preference_is_refused_before_writing_while_the_governor_holds_it() {
        let tmp = tempfile::tempdir().unwrap();
        let p = full_policy(tmp.path(), 0);
        let mut epp = act("cpufreq:policy0:energy_performance_preference", tmp.path()).unwrap();
        epp.validate(&Value::Word("power".into())).unwrap();
        std::fs::write(p.join("scaling_governor"), "performance\n").unwrap();
        for value in [Value::Word("power".into()), Value::Int(128)] {
            let err = epp.validate(&value).unwrap_err();
            assert!(matches!(err, ActuateError::RefusedWhile { .. }), "{err}");
            assert!(
                err.to_string().contains("scaling_governor is performance"),
                "{err}"
            );
            assert!(matches!(
                epp.apply(&value),
                Err(ActuateError::RefusedWhile { .. })
            ));
        }
        assert_eq!(
            std::fs::read_to_string(p.join("energy_performance_preference")).unwrap(),
            "balance_performance\n",
            "nothing written"
        );
        // performance itself is what the driver holds; a governor that cannot be read says
        // nothing.
        epp.validate(&Value::Word("performance".into())).unwrap();
        epp.validate(&Value::Int(0)).unwrap();
        // amd-pstate in active mode holds it too; intel_pstate in passive mode (intel_cpufreq),
        // where performance is the generic governor, takes another preference, and so does a
        // driver that cannot be read.
        std::fs::write(p.join("scaling_driver"), "amd-pstate-epp\n").unwrap();
        assert!(epp.validate(&Value::Word("power".into())).is_err());
        std::fs::write(p.join("scaling_driver"), "intel_cpufreq\n").unwrap();
        epp.validate(&Value::Word("power".into())).unwrap();
        std::fs::remove_file(p.join("scaling_driver")).unwrap();
        epp.validate(&Value::Word("power".into())).unwrap();
        std::fs::write(p.join("scaling_driver"), "intel_pstate\n").unwrap();
        std::fs::remove_file(p.join("scaling_governor")).unwrap();
        epp.validate(&Value::Word("power".into())).unwrap();
    }

    /// s48 storyP P-3: the write created the attribute (O_CREAT) when it was gone since it was
    /// read, and the new regular file read back as written.
    #[test]
    fn an_attribute_gone_before_the_write_is_not_created() {
        let tmp = tempfile::tempdir().unwrap();
        let p = full_policy(tmp.path(), 0);
        let max = act("cpufreq:policy0:scaling_max_freq", tmp.path()).unwrap();
        max.write_verify(&Value::Int(2_000_000)).unwrap();
        assert_eq!(
            std::fs::read_to_string(p.join("scaling_max_freq")).unwrap(),
            "2000000\n"
        );
        std::fs::remove_file(p.join("scaling_max_freq")).unwrap();
        let err = max.write_verify(&Value::Int(2_500_000)).unwrap_err();
        assert!(err.to_string().contains("No such file"), "{err}");
        assert!(!p.join("scaling_max_freq").exists());
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

    /// A reader of `shown`, standing for what a limit shows (the kernel's `policy->max`) apart from
    /// the attribute file KPO writes (its frequency QoS request): it counts the reads it has
    /// finished.
    fn shown_reader(
        shown: &Path,
        reads: &Arc<AtomicUsize>,
    ) -> impl FnMut() -> Result<Value, ActuateError> {
        let (shown, reads) = (shown.to_path_buf(), Arc::clone(reads));
        move || {
            let v = read_attr("test", &shown);
            reads.fetch_add(1, Ordering::SeqCst);
            v
        }
    }

    /// The kernel's work item updating what a limit shows: all at once, as a read never sees a
    /// file half written.
    fn kernel_shows(shown: &Path, khz: i64) {
        let tmp = shown.with_extension("next");
        std::fs::write(&tmp, format!("{khz}\n")).unwrap();
        std::fs::rename(&tmp, shown).unwrap();
    }

    fn read_khz(path: &Path) -> Option<i64> {
        std::fs::read_to_string(path).ok()?.trim().parse().ok()
    }

    /// The kernel applies a limit after the write returns: a read-back that still shows the value
    /// before is read again until it shows the new one. The "kernel" (a thread) waits until the
    /// write has landed in the request and the first read-back has seen the old value, then
    /// updates what the limit shows; only the actuator's bounded wait is timed.
    #[test]
    fn a_limit_the_kernel_shows_after_the_write_returns_is_taken() {
        let tmp = tempfile::tempdir().unwrap();
        let p = full_policy(tmp.path(), 0);
        let request = p.join("scaling_max_freq");
        let shown = p.join("shown_max_freq");
        kernel_shows(&shown, 3_000_000);
        let max = act("cpufreq:policy0:scaling_max_freq", tmp.path()).unwrap();
        let reads = Arc::new(AtomicUsize::new(0));
        let kernel = {
            let (request, shown, reads) = (request.clone(), shown.clone(), Arc::clone(&reads));
            std::thread::spawn(move || {
                let give_up = Instant::now() + Duration::from_secs(30);
                // The value before, then the first read-back: both saw 3000000.
                while !(read_khz(&request) == Some(2_000_000) && reads.load(Ordering::SeqCst) >= 2)
                {
                    assert!(Instant::now() < give_up, "the write never landed");
                    std::thread::sleep(Duration::from_micros(200));
                }
                kernel_shows(&shown, 2_000_000);
            })
        };
        let back = max.write_verify_reading(&Value::Int(2_000_000), shown_reader(&shown, &reads));
        kernel.join().unwrap();
        assert_eq!(back.unwrap(), Value::Int(2_000_000));
        assert!(reads.load(Ordering::SeqCst) >= 3, "read again");
    }

    /// The driver's refusal names the errno it was: ERANGE is not reported as EINVAL.
    #[test]
    fn a_refusal_names_its_own_errno() {
        let tmp = tempfile::tempdir().unwrap();
        let p = &full_policy(tmp.path(), 0).join("scaling_max_freq");
        let v = Value::Int(1);
        for (errno, name) in [
            (libc::EINVAL, "EINVAL"),
            (libc::ERANGE, "ERANGE"),
            (libc::EBUSY, "EBUSY"),
        ] {
            let e = sysfs_error("x", p, std::io::Error::from_raw_os_error(errno), Some(&v));
            match &e {
                ActuateError::Refused { errno, .. } => assert_eq!(errno, name),
                other => panic!("{name}: {other:?}"),
            }
            assert!(e.to_string().contains(name), "{e}");
        }
    }

    /// A limit is put back without the hardware range check, but not across the policy's other
    /// limit as it is now: a max below the min (which Linux 5.4 on takes by pulling the min down
    /// while the max reads back as written), or a min above the max. Nothing is written.
    #[test]
    fn a_limit_is_not_put_back_across_the_other_limit() {
        let tmp = tempfile::tempdir().unwrap();
        let p = full_policy(tmp.path(), 0);
        let khz = |f: &str| read_khz(&p.join(f)).unwrap();
        let mut max = act("cpufreq:policy0:scaling_max_freq", tmp.path()).unwrap();
        let mut min = act("cpufreq:policy0:scaling_min_freq", tmp.path()).unwrap();
        min.apply(&Value::Int(2_500_000)).unwrap();
        let err = max.revert(&Value::Int(2_000_000)).unwrap_err();
        match &err {
            ActuateError::OutOfRange {
                value, min, why, ..
            } => {
                assert_eq!((*value, *min), (2_000_000, 2_500_000));
                assert!(why.contains("lower scaling_min_freq first"), "{why}");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(khz("scaling_max_freq"), 3_000_000, "nothing written");
        // The mirror case.
        max.apply(&Value::Int(2_600_000)).unwrap();
        min.apply(&Value::Int(1_000_000)).unwrap();
        let err = min.revert(&Value::Int(2_700_000)).unwrap_err();
        assert!(
            err.to_string().contains("raise scaling_max_freq first"),
            "{err}"
        );
        assert_eq!(khz("scaling_min_freq"), 1_000_000, "nothing written");
        // Up to the other limit, and outside the hardware range (the kernel's own value once),
        // a revert is written.
        assert_eq!(
            max.revert(&Value::Int(1_000_000)).unwrap(),
            Value::Int(1_000_000)
        );
        assert_eq!(
            min.revert(&Value::Int(700_000)).unwrap(),
            Value::Int(700_000)
        );
    }

    /// A policy whose CPUs are all offline gives EBUSY on every read and write, `affected_cpus`
    /// included: the error says so, and names the CPUs online, not a refused value. EBUSY from
    /// an active policy keeps the driver's refusal, with the EPP hint on the preference only.
    #[test]
    fn an_inactive_policy_is_named_as_such() {
        let tmp = tempfile::tempdir().unwrap();
        let p = full_policy(tmp.path(), 3);
        std::fs::write(tmp.path().join("devices/system/cpu/online"), "0-2\n").unwrap();
        let busy = || std::io::Error::from_raw_os_error(libc::EBUSY);
        let inactive = inactive_policy(&p, Err(busy())).unwrap();
        assert!(inactive.starts_with("policy3 is inactive: all of its CPUs are offline"));
        assert!(
            inactive.contains("affected_cpus is refused (EBUSY) too"),
            "{inactive}"
        );
        assert!(
            inactive.contains("lists the CPUs online: 0-2"),
            "{inactive}"
        );
        assert!(
            inactive.contains("the kernel refuses every read and write of the policy"),
            "{inactive}"
        );
        assert_eq!(inactive_policy(&p, Ok("3\n".into())), None);
        assert_eq!(
            inactive_policy(&p, Err(std::io::Error::from_raw_os_error(libc::EIO))),
            None
        );

        let max = p.join("scaling_max_freq");
        let v = Value::Int(2_000_000);
        let param = "cpufreq:policy3:scaling_max_freq";
        let write = sysfs_error_in(param, &max, busy(), Some(&v), Some(inactive.clone()));
        assert!(matches!(write, ActuateError::Refused { .. }), "{write:?}");
        let text = write.to_string();
        assert!(
            text.contains("EBUSY") && text.contains("policy3 is inactive"),
            "{text}"
        );
        assert!(!text.contains("energy_performance_preference"), "{text}");
        let read = sysfs_error_in(param, &max, busy(), None, Some(inactive));
        assert!(read.to_string().contains("policy3 is inactive"), "{read}");

        // Through the files: an empty affected_cpus is an inactive policy, one with its CPU is not.
        std::fs::write(p.join("affected_cpus"), "\n").unwrap();
        let e = sysfs_error(param, &max, busy(), Some(&v));
        assert!(e.to_string().contains("affected_cpus lists no CPU"), "{e}");
        // Before Linux 5.19 the write is EINVAL: the same inactive policy, not a refused value.
        let einval = || std::io::Error::from_raw_os_error(libc::EINVAL);
        let e = sysfs_error(param, &max, einval(), Some(&v)).to_string();
        assert!(
            e.contains("EINVAL") && e.contains("policy3 is inactive"),
            "{e}"
        );
        // There reads work (showing the last values): only writes are said to be refused.
        assert!(
            e.contains("the kernel refuses every write of the policy"),
            "{e}"
        );
        assert!(!e.contains("kernels before 5.3"), "{e}");
        std::fs::write(p.join("affected_cpus"), "3\n").unwrap();
        let e = sysfs_error(param, &max, busy(), Some(&v)).to_string();
        assert!(e.contains("the cpufreq driver refused it"), "{e}");
        assert!(
            !e.contains("inactive") && !e.contains("energy_performance"),
            "{e}"
        );
        let epp = p.join("energy_performance_preference");
        let w = Value::Word("power".into());
        let e = sysfs_error("x", &epp, busy(), Some(&w)).to_string();
        assert!(
            e.contains("while the policy's governor is performance"),
            "{e}"
        );
    }

    /// A limit that still shows the value before after the wait is a mismatch, saying so; one that
    /// shows another value (a driver's rounding to its table) is taken at once, as is the value
    /// written; and an unchanged limit reads back as written at once.
    #[test]
    fn a_limit_that_never_moves_is_a_mismatch_and_any_other_read_back_is_taken_at_once() {
        let tmp = tempfile::tempdir().unwrap();
        let p = full_policy(tmp.path(), 0);
        let shown = p.join("shown_max_freq");
        let max = act("cpufreq:policy0:scaling_max_freq", tmp.path()).unwrap();

        // Never moves (another limit holds it, or the work never ran).
        kernel_shows(&shown, 3_000_000);
        let reads = Arc::new(AtomicUsize::new(0));
        let err = max
            .write_verify_reading(&Value::Int(2_000_000), shown_reader(&shown, &reads))
            .unwrap_err();
        match &err {
            ActuateError::Mismatch {
                wrote, read, why, ..
            } => {
                assert_eq!((wrote.as_str(), read.as_str()), ("2000000", "3000000"));
                assert!(why.contains("still showed the value before"), "{why}");
            }
            other => panic!("{other:?}"),
        }
        assert!(reads.load(Ordering::SeqCst) > 3, "read again while waiting");

        // Each of these is judged on its first read-back: the value before, then one read.
        for (shows_after, wrote, ok) in [
            (1_995_000, 2_000_000, false), // rounded to the driver's table
            (2_000_000, 2_000_000, true),  // as written
            (3_000_000, 3_000_000, true),  // written what it had
        ] {
            kernel_shows(&shown, 3_000_000);
            let reads = Arc::new(AtomicUsize::new(0));
            let mut read = shown_reader(&shown, &reads);
            let mut calls = 0;
            let result = max.write_verify_reading(&Value::Int(wrote), || {
                calls += 1;
                if calls == 2 {
                    kernel_shows(&shown, shows_after);
                }
                read()
            });
            assert_eq!(reads.load(Ordering::SeqCst), 2, "{shows_after}");
            match (result, ok) {
                (Ok(v), true) => assert_eq!(v, Value::Int(wrote)),
                (Err(ActuateError::Mismatch { read, why, .. }), false) => {
                    assert_eq!(read, shows_after.to_string());
                    assert_eq!(why, super::super::NOT_TAKEN);
                }
                (other, _) => panic!("{shows_after}: {other:?}"),
            }
        }

        // The governor is set within the write: its read-back is taken at once, without a
        // value before.
        let gov = act("cpufreq:policy0:scaling_governor", tmp.path()).unwrap();
        let shown_gov = p.join("shown_governor");
        std::fs::write(&shown_gov, "schedutil\n").unwrap();
        let reads = Arc::new(AtomicUsize::new(0));
        let err = gov
            .write_verify_reading(
                &Value::Word("powersave".into()),
                shown_reader(&shown_gov, &reads),
            )
            .unwrap_err();
        assert!(matches!(err, ActuateError::Mismatch { .. }), "{err}");
        assert_eq!(reads.load(Ordering::SeqCst), 1);
    }

    /// A limit that reads back another frequency of the driver's table than the one written
    /// names both values, the driver and its table; an unreadable table leaves the plain
    /// reason.
    #[test]
    fn a_limit_rounded_to_the_drivers_table_names_the_values_and_the_table() {
        let tmp = tempfile::tempdir().unwrap();
        let p = acpi_policy(tmp.path());
        let shown = p.join("shown_max_freq");
        let max = act("cpufreq:policy0:scaling_max_freq", tmp.path()).unwrap();
        let rounded = |table: &str| {
            std::fs::write(p.join(AVAILABLE_FREQUENCIES), table).unwrap();
            kernel_shows(&shown, 3_000_000);
            let reads = Arc::new(AtomicUsize::new(0));
            let mut read = shown_reader(&shown, &reads);
            let mut calls = 0;
            max.write_verify_reading(&Value::Int(2_000_000), || {
                calls += 1;
                if calls == 2 {
                    kernel_shows(&shown, 1_800_000);
                }
                read()
            })
            .unwrap_err()
        };
        let err = rounded("3000000 2400000 1800000 1200000 800000 \n");
        assert_eq!(
            err.to_string(),
            format!(
                "cpufreq:policy0:scaling_max_freq: wrote \"2000000\" but read back \"1800000\"; \
                 the cpufreq driver (acpi-cpufreq) resolves a limit to a frequency of its table, \
                 {} (kHz): 800000 1200000 1800000 2400000 3000000; write one of those",
                p.join(AVAILABLE_FREQUENCIES).display()
            )
        );
        let err = rounded("fast slow\n");
        assert!(
            matches!(&err, ActuateError::Mismatch { why, .. } if why == super::super::NOT_TAKEN),
            "{err}"
        );
    }

    /// The driver's table: sorted and without repeats; none without the file; an error for
    /// text that is not a list of kHz.
    #[test]
    fn frequency_table_reads_the_drivers_list() {
        let tmp = tempfile::tempdir().unwrap();
        let p = full_policy(tmp.path(), 0);
        assert_eq!(frequency_table(&p), Ok(None));
        std::fs::write(
            p.join(AVAILABLE_FREQUENCIES),
            "2400000 800000 1600000 800000 \n",
        )
        .unwrap();
        assert_eq!(
            frequency_table(&p),
            Ok(Some(vec![800_000, 1_600_000, 2_400_000]))
        );
        for bad in ["\n", "800000 fast\n", "-800000\n"] {
            std::fs::write(p.join(AVAILABLE_FREQUENCIES), bad).unwrap();
            let err = frequency_table(&p).unwrap_err();
            assert!(err.contains("is not a list of frequencies in kHz"), "{err}");
        }
    }

    /// Each policy's two limits in an order each write passes, in the places they held; the
    /// rest stays where it was.
    #[test]
    fn passing_order_orders_each_policys_limits_in_their_places() {
        let a = |s: &str| s.parse::<ParamAddress>().unwrap();
        let (min0, max0) = (
            a("cpufreq:policy0:scaling_min_freq"),
            a("cpufreq:policy0:scaling_max_freq"),
        );
        let (min1, max1) = (
            a("cpufreq:policy1:scaling_min_freq"),
            a("cpufreq:policy1:scaling_max_freq"),
        );
        let gov = a("cpufreq:policy0:scaling_governor");
        let rx = a("ethtool:eth0:rx-usecs");
        // Both policies going up, written min first: the max goes first in each.
        let up = [
            Some((&min0, false)),
            Some((&rx, true)),
            Some((&min1, false)),
            None,
            Some((&max0, false)),
            Some((&gov, false)),
            Some((&max1, false)),
        ];
        assert_eq!(passing_order(&up), [4, 1, 6, 3, 0, 5, 2]);
        // Going down, min first already: nothing moves; nor with one limit of a policy.
        let down = [
            Some((&min0, true)),
            Some((&max0, true)),
            Some((&max1, false)),
        ];
        assert_eq!(passing_order(&down), [0, 1, 2]);
        // Going down, max first: swapped.
        let down = [Some((&max0, true)), Some((&min0, true))];
        assert_eq!(passing_order(&down), [1, 0]);
        assert!(passing_order(&[]).is_empty());
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
