//! Hardware acceptance: one change and its restore, through the actuators the optimizer and the
//! change path use, on one NIC or one cpufreq policy (docs/actuators.md, "Hardware acceptance").
//!
//! Real drivers do not keep every value they are given: a NIC rounds a coalescing delay to its
//! hardware tick, a cpufreq driver resolves a limit to a frequency of its table. What the
//! actuators do with such a driver is only known once one has written to it, and that first
//! write should be an operator's check, not a customer's optimizer. For each parameter the
//! optimizer may be given, the routines here read the value, write a neighbouring value, check
//! that what the actuator reports is what the driver then shows (the value written, or the
//! driver's rounding, reported as such), put the original back and check that the driver shows
//! exactly it. A guard puts the original back when a step fails or panics; a run that is killed
//! runs no guard, so each routine first says what it found, for the operator to put back.
//!
//! The same routines run in the unit tests over `FakeCoalesce` and temporary cpufreq trees, and,
//! opted in by an operator, on real hardware (the root test `hardware_acceptance::*`).

use std::fmt;
use std::path::Path;

use super::coalesce::{
    AdaptiveMode, CoalesceActuator, CoalesceAttrBackend, CoalesceAttrs, CoalesceParam,
};
use super::cpufreq::{self, CpufreqActuator};
use super::param::{ParamAddress, Target, Value};
use super::{ActuateError, Actuator, Roots};

/// What one parameter's acceptance found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checked {
    pub address: ParamAddress,
    /// The value before, put back at the end.
    pub original: Value,
    /// The neighbouring value written.
    pub wrote: Value,
    /// What the driver kept for it: `wrote`, or the driver's rounding of it.
    pub kept: Value,
    /// Neighbouring values tried before `wrote`, with what became of each: refused by the
    /// driver, or kept at the original (a rounding that lands there).
    pub passed_over: Vec<String>,
}

impl Checked {
    /// Whether the driver kept another value than the one written.
    pub fn rounded(&self) -> bool {
        self.kept != self.wrote
    }
}

impl fmt::Display for Checked {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Checked {
            address,
            original,
            wrote,
            kept,
            ..
        } = self;
        if self.rounded() {
            write!(
                f,
                "{address}: {original}, wrote {wrote}, the driver keeps {kept} (its rounding: \
                 KPO reports such a write as a mismatch and reverts it, so give the policy entry \
                 optimizer_levels the driver keeps); put back {original}"
            )?;
        } else {
            write!(
                f,
                "{address}: {original}, wrote {wrote}, the driver keeps it; put back {original}"
            )?;
        }
        for tried in &self.passed_over {
            write!(f, "\n  passed over: {tried}")?;
        }
        Ok(())
    }
}

/// What a whole acceptance run found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Acceptance {
    /// What was checked: `NIC eth1`, `cpufreq policy0 (driver acpi-cpufreq)`.
    pub target: String,
    /// Each parameter changed and put back, in order (an adaptive switch turned off for the
    /// others comes last, when it is put back).
    pub checked: Vec<Checked>,
    /// Parameters the driver does not offer, with why: nothing was written to them.
    pub not_offered: Vec<(ParamAddress, String)>,
    /// What the operator should look at although the run passed.
    pub warnings: Vec<String>,
}

impl fmt::Display for Acceptance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "hardware acceptance of {}: passed", self.target)?;
        for c in &self.checked {
            writeln!(f, "- {c}")?;
        }
        for (address, why) in &self.not_offered {
            writeln!(f, "- {address}: not offered ({why})")?;
        }
        for warning in &self.warnings {
            writeln!(f, "warning: {warning}")?;
        }
        Ok(())
    }
}

/// Why an acceptance run failed: the parameter and the step.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{param}: {what}")]
pub struct AcceptanceError {
    pub param: String,
    pub what: String,
}

fn fail(param: &impl fmt::Display, what: impl Into<String>) -> AcceptanceError {
    AcceptanceError {
        param: param.to_string(),
        what: what.into(),
    }
}

/// Where a run tells the operator, before its first write, what it found (the root test
/// prints it): a run killed half-way runs no guard, and leaves these to be put back by hand.
pub type Say<'a> = &'a mut dyn FnMut(String);

/// What became of a value written through [`Restorer::write_checked`].
enum Written {
    /// The driver shows what the actuator reported: the value, or its rounding of it.
    Kept(Value),
    /// The driver (or the actuator, for it) refused the value and shows the original still.
    Refused(ActuateError),
}

/// Puts a parameter's original value back when dropped before [`Restorer::restore`]: a step
/// that fails, or panics, leaves the hardware as it was found.
struct Restorer<'a> {
    actuator: &'a mut dyn Actuator,
    original: Value,
    restored: bool,
}

impl<'a> Restorer<'a> {
    /// Reads the original value of `actuator`'s parameter.
    fn read(actuator: &'a mut dyn Actuator) -> Result<Self, AcceptanceError> {
        let original = actuator
            .read()
            .map_err(|e| fail(actuator.address(), format!("reading it: {e}")))?;
        Ok(Self {
            actuator,
            original,
            restored: false,
        })
    }

    fn address(&self) -> ParamAddress {
        self.actuator.address().clone()
    }

    /// What the driver shows now.
    fn read_now(&mut self, when: &str) -> Result<Value, AcceptanceError> {
        self.actuator
            .read()
            .map_err(|e| fail(&self.address(), format!("reading it {when}: {e}")))
    }

    /// Writes `value` as the change path does (validate, then apply) and checks that the driver
    /// then shows what the actuator reported: the value, or the driver's rounding of it (the
    /// actuator's `Mismatch`). A refused value must leave the original in place.
    fn write_checked(&mut self, value: &Value) -> Result<Written, AcceptanceError> {
        let address = self.address();
        let applied = self
            .actuator
            .validate(value)
            .and_then(|()| self.actuator.apply(value));
        let reported = match applied {
            Ok(back) => back,
            Err(ActuateError::Mismatch { read, .. }) => Value::parse(&read),
            Err(e) if refused_value(&e) => {
                let now = self.read_now("after the driver refused a value")?;
                if now != self.original {
                    return Err(fail(
                        &address,
                        format!(
                            "the driver refused {value} ({e}) but shows {now}, not {}",
                            self.original
                        ),
                    ));
                }
                return Ok(Written::Refused(e));
            }
            Err(e) => return Err(fail(&address, format!("writing {value}: {e}"))),
        };
        let now = self.read_now(&format!("after writing {value}"))?;
        if now != reported {
            return Err(fail(
                &address,
                format!(
                    "wrote {value}: the actuator reported {reported} but the driver shows {now}"
                ),
            ));
        }
        Ok(Written::Kept(reported))
    }

    /// Puts the original back through the actuator's revert and checks that the driver shows
    /// exactly it.
    fn restore(mut self) -> Result<Value, AcceptanceError> {
        self.restored = true;
        let original = self.original.clone();
        let address = self.address();
        let back = self.actuator.revert(&original).map_err(|e| {
            fail(
                &address,
                format!("putting back the original {original}: {e}; put it back by hand"),
            )
        })?;
        let now = self.read_now("after putting the original back")?;
        if back != original || now != original {
            return Err(fail(
                &address,
                format!(
                    "putting back the original {original}: the actuator reported {back} and the \
                     driver shows {now}; put it back by hand"
                ),
            ));
        }
        Ok(now)
    }
}

impl Drop for Restorer<'_> {
    fn drop(&mut self) {
        if self.restored {
            return;
        }
        let address = self.actuator.address().to_string();
        // On the way out of a failed or panicking step: no caller to hand an error to.
        match self.actuator.revert(&self.original) {
            Ok(_) => crate::say!(
                "hardware acceptance: {address} put back to {} after a failed step",
                self.original
            ),
            Err(e) => crate::say!(
                "hardware acceptance: {address} could not be put back to {} after a failed step: \
                 {e}; put it back by hand",
                self.original
            ),
        }
    }
}

/// Whether the actuator's error is the driver (or the actuator, for it) refusing this value,
/// after which another neighbour may be taken.
fn refused_value(e: &ActuateError) -> bool {
    matches!(
        e,
        ActuateError::InvalidValue { .. }
            | ActuateError::Refused { .. }
            | ActuateError::OutOfRange { .. }
    )
}

/// One parameter: read it, write the first of `neighbours(original)` that the driver takes
/// (the value itself, or a rounding of it other than the original), check the driver shows what
/// the actuator reported, put the original back and check it is exactly what the driver shows.
pub fn accept_value(
    actuator: &mut dyn Actuator,
    neighbours: &dyn Fn(&Value) -> Result<Vec<Value>, String>,
) -> Result<Checked, AcceptanceError> {
    let mut guard = Restorer::read(actuator)?;
    let address = guard.address();
    let original = guard.original.clone();
    let candidates = match neighbours(&original) {
        Ok(candidates) => candidates,
        Err(why) => {
            // Nothing written yet: nothing to put back.
            guard.restored = true;
            return Err(fail(
                &address,
                format!("no neighbouring value to write: {why}"),
            ));
        }
    };
    let mut passed_over = Vec::new();
    let mut taken = None;
    for wrote in candidates {
        match guard.write_checked(&wrote)? {
            Written::Refused(e) => passed_over.push(format!("{wrote}: {e}")),
            Written::Kept(kept) if kept == original => {
                passed_over.push(format!("{wrote}: the driver kept {original}"));
            }
            Written::Kept(kept) => {
                taken = Some((wrote, kept));
                break;
            }
        }
    }
    let Some((wrote, kept)) = taken else {
        return Err(fail(
            &address,
            format!(
                "the driver took none of the neighbouring values of {original} (tried: {}); the \
                 optimizer cannot move this parameter here",
                passed_over.join("; ")
            ),
        ));
    };
    guard.restore()?;
    Ok(Checked {
        address,
        original,
        wrote,
        kept,
        passed_over,
    })
}

/// The coalescing counts KPO's optimizer may be given, in the order they are checked.
pub const COALESCE_COUNTS: [CoalesceParam; 4] = [
    CoalesceParam::RxUsecs,
    CoalesceParam::TxUsecs,
    CoalesceParam::RxFrames,
    CoalesceParam::TxFrames,
];

/// Steps from a coalescing count: 2 first (a delay the optimizer's levels move by), then wider
/// ones for a driver whose tick rounds a step of 2 back to the value before.
const COALESCE_STEPS: [i128; 4] = [2, 4, 8, 16];

/// The neighbours of a coalescing count: each step up, then down, within 0..=u32::MAX.
pub fn coalesce_neighbours(original: &Value) -> Result<Vec<Value>, String> {
    let Value::Int(n) = *original else {
        return Err(format!("{original} is not a count"));
    };
    Ok(COALESCE_STEPS
        .iter()
        .flat_map(|step| [n + step, n - step])
        .filter(|v| (0..=i128::from(u32::MAX)).contains(v))
        .map(Value::Int)
        .collect())
}

/// Opens a coalescing backend; the real one is `EthtoolCoalesce::open`.
pub type OpenBackend<'a> =
    &'a mut dyn FnMut() -> Result<Box<dyn CoalesceAttrBackend>, ActuateError>;

/// The NIC under acceptance, each read and write over a backend of its own, as each actuator
/// has one.
struct Nic<'a> {
    iface: &'a str,
    backend: OpenBackend<'a>,
}

impl Nic<'_> {
    /// `ethtool:IFACE`, as the NIC-wide failures name it.
    fn name(&self) -> String {
        format!("ethtool:{}", self.iface)
    }

    fn address(&self, param: CoalesceParam) -> ParamAddress {
        ParamAddress {
            name: param.name().into(),
            target: Target::Nic {
                iface: self.iface.into(),
            },
        }
    }

    fn open(&mut self, at: &ParamAddress) -> Result<CoalesceActuator, ActuateError> {
        CoalesceActuator::with_backend(at, (self.backend)()?, AdaptiveMode::Respect)
    }

    fn read(&mut self) -> Result<CoalesceAttrs, ActuateError> {
        (self.backend)()?.get_attrs(self.iface)
    }

    /// All six values, `when` naming the step for a read that fails.
    fn attrs(&mut self, when: &str) -> Result<CoalesceAttrs, AcceptanceError> {
        self.read().map_err(|e| {
            fail(
                &self.name(),
                format!("reading the NIC's coalescing {when}: {e}"),
            )
        })
    }

    fn set(&mut self, change: &CoalesceAttrs) -> Result<(), ActuateError> {
        (self.backend)()?.set_attrs(self.iface, change)
    }
}

fn shown(v: Option<Value>) -> String {
    v.map_or_else(|| "n/a".to_string(), |v| v.to_string())
}

/// The parameters whose values differ between `was` and `is`.
fn moved(was: &CoalesceAttrs, is: &CoalesceAttrs) -> Vec<CoalesceParam> {
    CoalesceParam::ALL
        .into_iter()
        .filter(|p| p.get(was) != p.get(is))
        .collect()
}

/// `tx-usecs 50, not 30` for each of `params`.
fn moved_text(params: &[CoalesceParam], was: &CoalesceAttrs, is: &CoalesceAttrs) -> String {
    params
        .iter()
        .map(|p| {
            format!(
                "{} {}, not {}",
                p.name(),
                shown(p.get(is)),
                shown(p.get(was))
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The line a coalescing run says before its first write.
fn coalescing_found(iface: &str, found: &CoalesceAttrs) -> String {
    let values = CoalesceParam::ALL
        .map(|p| format!("{} {}", p.name(), shown(p.get(found))))
        .join(", ");
    let command: String = CoalesceParam::ALL
        .into_iter()
        .filter_map(|p| Some(format!(" {} {}", p.name(), p.get(found)?)))
        .collect();
    format!(
        "ethtool:{iface} before any change: {values}; if this run is killed, put them back with \
         `ethtool -C {iface}{command}`"
    )
}

/// Accepts the coalescing counts of NIC `iface` that its driver reports (`COALESCE_COUNTS`)
/// through [`CoalesceActuator`], each over a backend `backend` opens. Adaptive moderation that
/// is on and governs one of them is turned off first through its own actuator, as the change
/// path does, and put back on last. Before the first write, `say` gets the NIC's six values.
pub fn accept_coalescing(
    iface: &str,
    backend: OpenBackend<'_>,
    say: Say<'_>,
) -> Result<Acceptance, AcceptanceError> {
    let mut nic = Nic { iface, backend };
    let found = nic.read().map_err(|e| {
        fail(
            &nic.name(),
            format!("reading the NIC's coalescing: {e}; it cannot be accepted"),
        )
    })?;
    let mut values = Vec::new();
    let mut not_offered = Vec::new();
    for param in COALESCE_COUNTS {
        let at = nic.address(param);
        match nic.open(&at) {
            Ok(a) => values.push(a),
            Err(e @ ActuateError::Unsupported { .. }) => not_offered.push((at, e.to_string())),
            Err(e) => return Err(fail(&at, format!("opening its actuator: {e}"))),
        }
    }
    if values.is_empty() {
        return Err(fail(
            &nic.name(),
            format!(
                "the driver offers none of {}: the optimizer has nothing to move here",
                COALESCE_COUNTS.map(CoalesceParam::name).join(", ")
            ),
        ));
    }
    let mut switches: Vec<(CoalesceActuator, Value)> = Vec::new();
    for value in &mut values {
        let way = value
            .switch_in_the_way()
            .map_err(|e| fail(value.address(), format!("reading its adaptive mode: {e}")))?;
        if let Some((switch, off)) = way {
            if switches.iter().all(|(s, _)| *s.address() != switch) {
                let a = nic
                    .open(&switch)
                    .map_err(|e| fail(&switch, format!("opening its actuator: {e}")))?;
                switches.push((a, off));
            }
        }
    }
    say(coalescing_found(iface, &found));
    let mut turned_off = Vec::new();
    for (switch, off) in &mut switches {
        let mut guard = Restorer::read(switch)?;
        let at = guard.address();
        match guard.write_checked(off)? {
            Written::Kept(kept) if kept == *off => {}
            Written::Kept(kept) => {
                return Err(fail(
                    &at,
                    format!("turning it off: the driver keeps {kept}"),
                ))
            }
            Written::Refused(e) => return Err(fail(&at, format!("turning it off: {e}"))),
        }
        turned_off.push((guard, off.clone()));
    }
    // With adaptive moderation off nothing moves the NIC's values but these writes, so the NIC
    // as a whole must come back: a driver that couples two of them (one write moving another)
    // would otherwise pass each parameter's own check.
    let before = nic.attrs("before the changes")?;
    let mut checked = Vec::new();
    for value in &mut values {
        checked.push(accept_value(value, &coalesce_neighbours)?);
    }
    let after = nic.attrs("after putting every value back")?;
    let moved_now = moved(&before, &after);
    if !moved_now.is_empty() {
        return Err(put_back_moved(&mut nic, &before, &after, &moved_now));
    }
    // The values are back; adaptive moderation goes back on over them.
    for (guard, off) in turned_off {
        let (address, original) = (guard.address(), guard.original.clone());
        guard.restore()?;
        checked.push(Checked {
            address,
            original,
            kept: off.clone(),
            wrote: off,
            passed_over: Vec::new(),
        });
    }
    Ok(Acceptance {
        target: format!("NIC {iface}"),
        checked,
        not_offered,
        warnings: Vec::new(),
    })
}

/// A write of one value moved another, which no value's own guard puts back: writes the
/// `moved` values of `before` back in one change, and says whether the NIC then shows `before`.
/// The run fails either way (the driver couples values the optimizer moves one at a time); the
/// adaptive switches' guards turn moderation back on after this.
fn put_back_moved(
    nic: &mut Nic<'_>,
    before: &CoalesceAttrs,
    after: &CoalesceAttrs,
    moved_now: &[CoalesceParam],
) -> AcceptanceError {
    let found = format!(
        "after every value was put back the NIC shows {}: a write of one moved another",
        moved_text(moved_now, before, after)
    );
    let mut change = CoalesceAttrs::default();
    for p in moved_now {
        if let Some(v) = p.get(before) {
            p.put(&mut change, &v);
        }
    }
    let outcome = nic
        .set(&change)
        .map_err(|e| format!("writing them back failed: {e}; put them back by hand"))
        .and_then(|()| {
            nic.read().map_err(|e| {
                format!("reading the NIC after writing them back failed: {e}; check it by hand")
            })
        })
        .map(|again| match moved(before, &again) {
            still if still.is_empty() => "written back, the NIC shows them as before".to_string(),
            still => format!(
                "written back, the NIC still shows {}: put them back by hand",
                moved_text(&still, before, &again)
            ),
        });
    fail(
        &nic.name(),
        format!("{found}; {}", outcome.unwrap_or_else(|e| e)),
    )
}

/// How far a limit moves on a driver without a frequency table (intel_pstate, amd-pstate):
/// 100 MHz, a whole P-state on most CPUs those drivers run (one that rounds it anyway is
/// reported as rounding).
pub const CPUFREQ_STEP_KHZ: i128 = 100_000;

/// The neighbours of limit `attr` (`scaling_max_freq` or `scaling_min_freq`) at `original` kHz:
/// the frequencies next to it in the driver's `table` (or [`CPUFREQ_STEP_KHZ`] away without one),
/// lower first, that stay within the hardware range `hardware` and on this limit's side of the
/// policy's other limit, now `other`.
pub fn cpufreq_neighbours(
    attr: &str,
    original: i128,
    other: i128,
    hardware: (i128, i128),
    table: Option<&[i64]>,
) -> Vec<Value> {
    let (down, up) = match table {
        Some(t) => (
            t.iter()
                .rev()
                .map(|&f| i128::from(f))
                .find(|&f| f < original),
            t.iter().map(|&f| i128::from(f)).find(|&f| f > original),
        ),
        None => (
            Some(original - CPUFREQ_STEP_KHZ),
            Some(original + CPUFREQ_STEP_KHZ),
        ),
    };
    let (lo, hi) = if attr == "scaling_max_freq" {
        (other.max(hardware.0), hardware.1)
    } else {
        (hardware.0, other.min(hardware.1))
    };
    [down, up]
        .into_iter()
        .flatten()
        .filter(|f| (lo..=hi).contains(f))
        .map(Value::Int)
        .collect()
}

/// The files of a policy a run compares before and after, in the order they are written back.
const POLICY_FILES: [&str; 3] = ["scaling_min_freq", "scaling_max_freq", "scaling_governor"];

/// `POLICY_FILES`' contents, trimmed.
fn policy_state(dir: &Path, name: &str) -> Result<Vec<String>, AcceptanceError> {
    POLICY_FILES
        .iter()
        .map(|file| {
            let path = dir.join(file);
            super::read_attr(&path)
                .map(|text| text.trim().to_string())
                .map_err(|e| fail(&name, format!("reading {}: {e}", path.display())))
        })
        .collect()
}

/// Accepts the two frequency limits of cpufreq policy `policy` under `roots.sys` through
/// [`CpufreqActuator`], the max first: each moves to a neighbouring frequency
/// ([`cpufreq_neighbours`]) and back, the other limit staying where it is. Before the first
/// write, `say` gets both limits and the governor; after the last, the policy must show them.
pub fn accept_cpufreq(
    roots: &Roots,
    policy: &str,
    say: Say<'_>,
) -> Result<Acceptance, AcceptanceError> {
    accept_policy(roots, policy, say, &mut |at| {
        Ok(Box::new(CpufreqActuator::open(at, roots)?))
    })
}

/// Opens a limit's actuator; the real one is `CpufreqActuator::open`.
type OpenLimit<'a> = &'a mut dyn FnMut(&ParamAddress) -> Result<Box<dyn Actuator>, ActuateError>;

/// [`accept_cpufreq`] with each limit's actuator from `open`.
fn accept_policy(
    roots: &Roots,
    policy: &str,
    say: Say<'_>,
    open: OpenLimit<'_>,
) -> Result<Acceptance, AcceptanceError> {
    let dir = cpufreq::policy_dir(&roots.sys, policy);
    let name = format!("cpufreq:{policy}");
    let mut limits = Vec::new();
    for attr in ["scaling_max_freq", "scaling_min_freq"] {
        let at = ParamAddress {
            name: attr.into(),
            target: Target::Cpufreq {
                policy: policy.into(),
            },
        };
        let limit = open(&at).map_err(|e| fail(&at, format!("opening its actuator: {e}")))?;
        limits.push((attr, limit));
    }
    let khz = |file: &str| read_khz(&dir.join(file)).map_err(|e| fail(&name, e));
    let hardware = (khz("cpuinfo_min_freq")?, khz("cpuinfo_max_freq")?);
    let found = policy_state(&dir, &name)?;
    let back_with = POLICY_FILES
        .iter()
        .zip(&found)
        .map(|(file, v)| format!("echo {v} > {}", dir.join(file).display()))
        .collect::<Vec<_>>()
        .join("; ");
    say(format!(
        "{name} before any change: {}; if this run is killed, put them back with `{back_with}`",
        POLICY_FILES
            .iter()
            .zip(&found)
            .map(|(file, v)| format!("{file} {v}"))
            .collect::<Vec<_>>()
            .join(", ")
    ));
    let mut checked = Vec::new();
    for (attr, limit) in &mut limits {
        let attr = *attr;
        let other = khz(if attr == "scaling_max_freq" {
            "scaling_min_freq"
        } else {
            "scaling_max_freq"
        })?;
        let table = cpufreq::frequency_table(&dir).map_err(|e| fail(&name, e))?;
        let neighbours = |original: &Value| match *original {
            Value::Int(f) => {
                let n = cpufreq_neighbours(attr, f, other, hardware, table.as_deref());
                if n.is_empty() {
                    Err(format!(
                        "{f} kHz has no neighbour within the hardware range {}..{} kHz and the \
                         policy's other limit ({other} kHz){}",
                        hardware.0,
                        hardware.1,
                        if table.is_some() {
                            " among the driver's frequencies"
                        } else {
                            ""
                        }
                    ))
                } else {
                    Ok(n)
                }
            }
            _ => Err(format!("{original} is not a frequency in kHz")),
        };
        checked.push(accept_value(limit.as_mut(), &neighbours)?);
    }
    // Each limit's own check takes its original after the other's round trip: a write of one
    // that moved the other (a driver's or the kernel's clamp) shows only here.
    let now = policy_state(&dir, &name)?;
    let changed: Vec<String> = POLICY_FILES
        .iter()
        .zip(found.iter().zip(&now))
        .filter(|(_, (was, is))| was != is)
        .map(|(file, (was, is))| format!("{file} {is}, not {was}"))
        .collect();
    if !changed.is_empty() {
        return Err(fail(
            &name,
            format!(
                "after both limits were put back the policy shows {}: a write of one moved \
                 another; put them back by hand with `{back_with}`",
                changed.join(", ")
            ),
        ));
    }
    let mut warnings = Vec::new();
    let max = khz("scaling_max_freq")?;
    if max < hardware.1 {
        warnings.push(format!(
            "scaling_max_freq is {max} kHz, below cpuinfo_max_freq ({} kHz): if a frequency cap \
             (thermal, the firmware's _PPC) holds it there rather than a limit someone wrote, \
             this run wrote the capped value back as the request, which stays once the cap \
             lifts; write the limit you mean to scaling_max_freq (docs/actuators.md, \"Known \
             limit: frequency caps\")",
            hardware.1
        ));
    }
    let driver = super::read_attr(&dir.join("scaling_driver"))
        .map(|d| d.trim().to_string())
        .unwrap_or_else(|_| "unknown".into());
    Ok(Acceptance {
        target: format!("cpufreq {policy} (driver {driver})"),
        checked,
        not_offered: Vec::new(),
        warnings,
    })
}

fn read_khz(path: &Path) -> Result<i128, String> {
    let text = super::read_attr(path).map_err(|e| format!("{}: {e}", path.display()))?;
    text.trim()
        .parse()
        .map_err(|_| format!("{}: {:?} is not kHz", path.display(), text.trim()))
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    use super::*;
    use crate::actuate::coalesce::{CoalesceAttrs, CoalesceSettings, FakeCoalesce};

    fn nic_address(attr: &str) -> ParamAddress {
        format!("ethtool:eth0:{attr}").parse().unwrap()
    }

    fn checked(address: &str, original: i128, wrote: i128, kept: i128) -> Checked {
        Checked {
            address: address.parse().unwrap(),
            original: Value::Int(original),
            wrote: Value::Int(wrote),
            kept: Value::Int(kept),
            passed_over: Vec::new(),
        }
    }

    fn over(fake: &FakeCoalesce) -> Result<Acceptance, AcceptanceError> {
        let fake = fake.clone();
        accept_coalescing("eth0", &mut || Ok(Box::new(fake.clone())), &mut |_| {})
    }

    fn attrs(rx: u32, tx: Option<u32>, adaptive_rx: bool) -> CoalesceAttrs {
        CoalesceAttrs {
            rx_usecs: Some(rx),
            rx_max_frames: None,
            tx_usecs: tx,
            tx_max_frames: Some(1),
            use_adaptive_rx: Some(adaptive_rx),
            use_adaptive_tx: Some(false),
        }
    }

    #[test]
    fn coalescing_moves_each_offered_count_by_two_and_puts_it_back() {
        let fake = FakeCoalesce::new();
        fake.add_nic_attrs("eth0", attrs(50, Some(30), false));
        let report = over(&fake).unwrap();
        assert_eq!(
            report,
            Acceptance {
                target: "NIC eth0".into(),
                checked: vec![
                    checked("ethtool:eth0:rx-usecs", 50, 52, 52),
                    checked("ethtool:eth0:tx-usecs", 30, 32, 32),
                    checked("ethtool:eth0:tx-frames", 1, 3, 3),
                ],
                not_offered: vec![(
                    nic_address("rx-frames"),
                    "eth0: the driver does not support changing interrupt coalescing (the \
                     driver does not report rx-frames)"
                        .into()
                )],
                warnings: Vec::new(),
            }
        );
        assert_eq!(fake.attrs("eth0"), Some(attrs(50, Some(30), false)));
        assert_eq!(
            report.to_string(),
            "hardware acceptance of NIC eth0: passed\n\
             - ethtool:eth0:rx-usecs: 50, wrote 52, the driver keeps it; put back 50\n\
             - ethtool:eth0:tx-usecs: 30, wrote 32, the driver keeps it; put back 30\n\
             - ethtool:eth0:tx-frames: 1, wrote 3, the driver keeps it; put back 1\n\
             - ethtool:eth0:rx-frames: not offered (eth0: the driver does not support changing \
             interrupt coalescing (the driver does not report rx-frames))\n"
        );
    }

    /// Adaptive moderation that governs a count is turned off through its own actuator, as the
    /// change path does, and back on only once the values it governs are back.
    #[test]
    fn adaptive_moderation_is_off_while_the_values_move_and_back_on_after_them() {
        let fake = FakeCoalesce::new();
        fake.add_nic_attrs("eth0", attrs(50, None, true));
        let mut said = Vec::new();
        let report = accept_coalescing("eth0", &mut || Ok(Box::new(fake.clone())), &mut |line| {
            said.push((line, fake.history().len()))
        })
        .unwrap();
        // Said before the first write, for an operator whose run is killed half-way.
        assert_eq!(
            said,
            [(
                "ethtool:eth0 before any change: rx-usecs 50, rx-frames n/a, tx-usecs n/a, \
                 tx-frames 1, adaptive-rx on, adaptive-tx off; if this run is killed, put them \
                 back with `ethtool -C eth0 rx-usecs 50 tx-frames 1 adaptive-rx on adaptive-tx \
                 off`"
                    .to_string(),
                0
            )]
        );
        let switch = Checked {
            address: nic_address("adaptive-rx"),
            original: Value::Word("on".into()),
            wrote: Value::Word("off".into()),
            kept: Value::Word("off".into()),
            passed_over: Vec::new(),
        };
        assert_eq!(
            report.checked,
            vec![
                checked("ethtool:eth0:rx-usecs", 50, 52, 52),
                checked("ethtool:eth0:tx-frames", 1, 3, 3),
                switch,
            ]
        );
        assert_eq!(fake.attrs("eth0"), Some(attrs(50, None, true)));
        let s = |rx_usecs, adaptive_rx| {
            (
                "eth0".to_string(),
                CoalesceSettings {
                    rx_usecs,
                    adaptive_rx,
                },
            )
        };
        assert_eq!(
            fake.history(),
            [
                s(50, false),
                s(52, false),
                s(50, false),
                s(50, false),
                s(50, false),
                s(50, true),
            ]
        );
    }

    /// A driver that rounds (rx-usecs to multiples of 4 here): a step it rounds back to the
    /// original is passed over, the next one is reported with the value the driver keeps.
    #[test]
    fn a_rounding_driver_is_reported_as_such_and_the_original_comes_back_exactly() {
        let fake = FakeCoalesce::new();
        fake.add_nic_attrs("eth0", attrs(8, None, false))
            .set_granularity(4);
        let report = over(&fake).unwrap();
        let mut rx = checked("ethtool:eth0:rx-usecs", 8, 6, 4);
        rx.passed_over = vec!["10: the driver kept 8".into()];
        assert_eq!(report.checked[0], rx);
        assert!(rx.rounded());
        assert_eq!(fake.attrs("eth0"), Some(attrs(8, None, false)));
        assert_eq!(
            rx.to_string(),
            "ethtool:eth0:rx-usecs: 8, wrote 6, the driver keeps 4 (its rounding: KPO reports \
             such a write as a mismatch and reverts it, so give the policy entry \
             optimizer_levels the driver keeps); put back 8\n  passed over: 10: the driver kept 8"
        );
    }

    /// An original the driver cannot be given back (7 where it keeps multiples of 4) fails the
    /// acceptance, and says so: the routine's own check of the put-back can fail.
    #[test]
    fn an_original_that_does_not_come_back_fails_the_acceptance() {
        let fake = FakeCoalesce::new();
        fake.add_nic_attrs("eth0", attrs(7, None, false))
            .set_granularity(4);
        assert_eq!(
            over(&fake).unwrap_err(),
            AcceptanceError {
                param: "ethtool:eth0:rx-usecs".into(),
                what: "putting back the original 7: ethtool:eth0:rx-usecs: wrote \"7\" but read \
                       back \"4\"; the kernel or driver did not take the value; put it back by \
                       hand"
                    .into(),
            }
        );
    }

    #[test]
    fn a_driver_that_keeps_no_neighbour_fails_naming_what_was_tried() {
        let fake = FakeCoalesce::new();
        fake.add_nic_attrs("eth0", attrs(0, None, false))
            .set_granularity(1000);
        assert_eq!(
            over(&fake).unwrap_err(),
            AcceptanceError {
                param: "ethtool:eth0:rx-usecs".into(),
                what: "the driver took none of the neighbouring values of 0 (tried: 2: the \
                       driver kept 0; 4: the driver kept 0; 8: the driver kept 0; 16: the driver \
                       kept 0); the optimizer cannot move this parameter here"
                    .into(),
            }
        );
        assert_eq!(fake.attrs("eth0"), Some(attrs(0, None, false)));
    }

    #[test]
    fn a_nic_that_cannot_be_accepted_fails_clearly() {
        let fake = FakeCoalesce::new();
        let err = over(&fake).unwrap_err();
        assert_eq!(
            err.to_string(),
            "ethtool:eth0: reading the NIC's coalescing: ethtool:eth0: not available: no such \
             device; it cannot be accepted"
        );
        fake.add_nic_attrs(
            "eth0",
            CoalesceAttrs {
                use_adaptive_rx: Some(false),
                ..CoalesceAttrs::default()
            },
        );
        assert_eq!(
            over(&fake).unwrap_err().to_string(),
            "ethtool:eth0: the driver offers none of rx-usecs, tx-usecs, rx-frames, tx-frames: \
             the optimizer has nothing to move here"
        );
        // virtio-net without notification coalescing: its GET works, its SET does not.
        fake.add_nic_attrs("eth0", attrs(50, None, false))
            .make_unsupported("eth0");
        assert_eq!(
            over(&fake).unwrap_err().to_string(),
            "ethtool:eth0:rx-usecs: writing 52: eth0: the driver does not support changing \
             interrupt coalescing (Operation not supported)"
        );
        assert_eq!(fake.attrs("eth0"), Some(attrs(50, None, false)));
    }

    /// A backend whose first read after rx-usecs was written panics, as a bug in a step would.
    struct PanicsOnce {
        inner: FakeCoalesce,
        fired: Arc<AtomicBool>,
        armed: bool,
    }

    impl CoalesceAttrBackend for PanicsOnce {
        fn get_attrs(&mut self, iface: &str) -> Result<CoalesceAttrs, ActuateError> {
            if self.armed && !self.fired.swap(true, Ordering::SeqCst) {
                panic!("a step panics while rx-usecs is moved");
            }
            self.inner.get_attrs(iface)
        }
        fn set_attrs(&mut self, iface: &str, change: &CoalesceAttrs) -> Result<(), ActuateError> {
            self.inner.set_attrs(iface, change)?;
            self.armed |= change.rx_usecs.is_some();
            Ok(())
        }
        fn ifindex(&mut self, iface: &str) -> Result<Option<u32>, ActuateError> {
            self.inner.ifindex(iface)
        }
        fn ifname(&mut self, ifindex: u32) -> Result<Option<String>, ActuateError> {
            self.inner.ifname(ifindex)
        }
        fn netns_cookie(&mut self) -> Option<u64> {
            self.inner.netns_cookie()
        }
    }

    /// A driver that refuses rx-usecs above `max` (EINVAL, as the ethtool backend reports it),
    /// and whose reads after a write of `drifts_from` show one more (a value that moves after
    /// the actuator's own read-back).
    struct Picky {
        inner: FakeCoalesce,
        max: u32,
        drifts_from: Option<u32>,
        reads_since_write: usize,
    }

    impl CoalesceAttrBackend for Picky {
        fn get_attrs(&mut self, iface: &str) -> Result<CoalesceAttrs, ActuateError> {
            let mut attrs = self.inner.get_attrs(iface)?;
            self.reads_since_write += 1;
            if self.reads_since_write > 1 && attrs.rx_usecs == self.drifts_from {
                attrs.rx_usecs = attrs.rx_usecs.map(|v| v + 1);
            }
            Ok(attrs)
        }
        fn set_attrs(&mut self, iface: &str, change: &CoalesceAttrs) -> Result<(), ActuateError> {
            if let Some(v) = change.rx_usecs.filter(|&v| v > self.max) {
                return Err(ActuateError::InvalidValue {
                    knob: format!("ethtool:{iface}:rx-usecs"),
                    value: v.into(),
                    reason: format!("the driver's maximum is {} (EINVAL)", self.max),
                });
            }
            self.reads_since_write = 0;
            self.inner.set_attrs(iface, change)
        }
        fn ifindex(&mut self, iface: &str) -> Result<Option<u32>, ActuateError> {
            self.inner.ifindex(iface)
        }
        fn ifname(&mut self, ifindex: u32) -> Result<Option<String>, ActuateError> {
            self.inner.ifname(ifindex)
        }
        fn netns_cookie(&mut self) -> Option<u64> {
            self.inner.netns_cookie()
        }
    }

    fn over_picky(
        fake: &FakeCoalesce,
        max: u32,
        drifts_from: Option<u32>,
    ) -> Result<Acceptance, AcceptanceError> {
        accept_coalescing(
            "eth0",
            &mut || {
                Ok(Box::new(Picky {
                    inner: fake.clone(),
                    max,
                    drifts_from,
                    reads_since_write: 0,
                }))
            },
            &mut |_| {},
        )
    }

    /// A neighbour the driver refuses is passed over, naming the refusal, and the next one is
    /// taken; a value that the driver shows otherwise than the actuator reported fails.
    #[test]
    fn a_refused_neighbour_is_passed_over_and_a_value_shown_otherwise_fails() {
        let fake = FakeCoalesce::new();
        fake.add_nic_attrs("eth0", attrs(100, None, false));
        let report = over_picky(&fake, 100, None).unwrap();
        let mut rx = checked("ethtool:eth0:rx-usecs", 100, 98, 98);
        rx.passed_over = vec![
            "102: ethtool:eth0:rx-usecs: 102 is not a valid value: the driver's maximum is 100 \
             (EINVAL)"
                .into(),
        ];
        assert_eq!(report.checked[0], rx);
        assert_eq!(fake.attrs("eth0"), Some(attrs(100, None, false)));

        fake.add_nic_attrs("eth0", attrs(50, None, false));
        assert_eq!(
            over_picky(&fake, 100, Some(52)).unwrap_err(),
            AcceptanceError {
                param: "ethtool:eth0:rx-usecs".into(),
                what: "wrote 52: the actuator reported 52 but the driver shows 53".into(),
            }
        );
        assert_eq!(fake.attrs("eth0"), Some(attrs(50, None, false)));
    }

    /// A driver whose rx-usecs write moves tx-usecs with it (as some pair a queue's two
    /// delays), and, `both_ways`, whose tx-usecs write moves rx-usecs too: each value's own
    /// put-back passes, the NIC as a whole does not come back.
    struct Coupled {
        inner: FakeCoalesce,
        both_ways: bool,
    }

    impl CoalesceAttrBackend for Coupled {
        fn get_attrs(&mut self, iface: &str) -> Result<CoalesceAttrs, ActuateError> {
            self.inner.get_attrs(iface)
        }
        fn set_attrs(&mut self, iface: &str, change: &CoalesceAttrs) -> Result<(), ActuateError> {
            let mut change = *change;
            if change.rx_usecs.is_some() {
                change.tx_usecs = change.rx_usecs;
            } else if self.both_ways && change.tx_usecs.is_some() {
                change.rx_usecs = change.tx_usecs;
            }
            self.inner.set_attrs(iface, &change)
        }
        fn ifindex(&mut self, iface: &str) -> Result<Option<u32>, ActuateError> {
            self.inner.ifindex(iface)
        }
        fn ifname(&mut self, ifindex: u32) -> Result<Option<String>, ActuateError> {
            self.inner.ifname(ifindex)
        }
        fn netns_cookie(&mut self) -> Option<u64> {
            self.inner.netns_cookie()
        }
    }

    fn over_coupled(fake: &FakeCoalesce, both_ways: bool) -> AcceptanceError {
        accept_coalescing(
            "eth0",
            &mut || {
                Ok(Box::new(Coupled {
                    inner: fake.clone(),
                    both_ways,
                }))
            },
            &mut |_| {},
        )
        .unwrap_err()
    }

    /// The value a coupled write moved is written back (then adaptive moderation goes back on),
    /// and the run still fails; what does not come back is left to the operator, by name.
    #[test]
    fn a_write_that_moves_another_value_fails_the_acceptance_and_is_written_back() {
        let fake = FakeCoalesce::new();
        fake.add_nic_attrs("eth0", attrs(50, Some(30), true));
        assert_eq!(
            over_coupled(&fake, false).to_string(),
            "ethtool:eth0: after every value was put back the NIC shows tx-usecs 50, not 30: a \
             write of one moved another; written back, the NIC shows them as before"
        );
        assert_eq!(fake.attrs("eth0"), Some(attrs(50, Some(30), true)));

        fake.add_nic_attrs("eth0", attrs(50, Some(30), false));
        assert_eq!(
            over_coupled(&fake, true).to_string(),
            "ethtool:eth0: after every value was put back the NIC shows tx-usecs 50, not 30: a \
             write of one moved another; written back, the NIC still shows rx-usecs 30, not 50: \
             put them back by hand"
        );
        assert_eq!(fake.attrs("eth0"), Some(attrs(30, Some(30), false)));
    }

    /// A panic mid-way still puts back the value moved and then turns adaptive moderation on.
    #[test]
    fn a_panic_mid_way_leaves_the_nic_as_it_was() {
        let fake = FakeCoalesce::new();
        fake.add_nic_attrs("eth0", attrs(50, None, true));
        let fired = Arc::new(AtomicBool::new(false));
        let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            accept_coalescing(
                "eth0",
                &mut || {
                    Ok(Box::new(PanicsOnce {
                        inner: fake.clone(),
                        fired: fired.clone(),
                        armed: false,
                    }))
                },
                &mut |_| {},
            )
        }));
        assert!(run.is_err(), "the step panicked");
        assert!(fired.load(Ordering::SeqCst));
        assert_eq!(fake.attrs("eth0"), Some(attrs(50, None, true)));
        assert!(fake.history().last().unwrap().1.adaptive_rx);
    }

    fn roots(tmp: &Path) -> Roots {
        Roots {
            proc_sys: tmp.join("proc_sys"),
            sys: tmp.to_path_buf(),
        }
    }

    /// `policy0` with the hardware range 0.8..3 GHz, the given limits and driver, and a
    /// frequency table when given one.
    fn policy(tmp: &Path, min: i128, max: i128, driver: &str, table: Option<&str>) -> PathBuf {
        let p = cpufreq::policy_dir(tmp, "policy0");
        std::fs::create_dir_all(&p).unwrap();
        for (file, text) in [
            ("cpuinfo_min_freq", "800000".to_string()),
            ("cpuinfo_max_freq", "3000000".to_string()),
            ("scaling_min_freq", min.to_string()),
            ("scaling_max_freq", max.to_string()),
            ("scaling_driver", driver.to_string()),
            ("scaling_governor", "schedutil".to_string()),
        ] {
            std::fs::write(p.join(file), format!("{text}\n")).unwrap();
        }
        if let Some(t) = table {
            std::fs::write(p.join(cpufreq::AVAILABLE_FREQUENCIES), t).unwrap();
        }
        p
    }

    fn limits(p: &Path) -> (String, String) {
        let read = |f: &str| std::fs::read_to_string(p.join(f)).unwrap();
        (read("scaling_min_freq"), read("scaling_max_freq"))
    }

    #[test]
    fn cpufreq_limits_move_to_the_next_frequency_of_the_table_and_back() {
        let tmp = tempfile::tempdir().unwrap();
        let table = "3000000 2400000 1800000 1200000 800000 \n";
        let p = policy(tmp.path(), 800_000, 3_000_000, "acpi-cpufreq", Some(table));
        let before = limits(&p);
        let mut said = Vec::new();
        let report = accept_cpufreq(&roots(tmp.path()), "policy0", &mut |line| {
            said.push((line, limits(&p)))
        })
        .unwrap();
        // Said before the first write, for an operator whose run is killed half-way.
        let file = |f: &str| p.join(f).display().to_string();
        assert_eq!(
            said,
            [(
                format!(
                    "cpufreq:policy0 before any change: scaling_min_freq 800000, \
                     scaling_max_freq 3000000, scaling_governor schedutil; if this run is \
                     killed, put them back with `echo 800000 > {}; echo 3000000 > {}; echo \
                     schedutil > {}`",
                    file("scaling_min_freq"),
                    file("scaling_max_freq"),
                    file("scaling_governor")
                ),
                before.clone()
            )]
        );
        assert_eq!(
            report,
            Acceptance {
                target: "cpufreq policy0 (driver acpi-cpufreq)".into(),
                checked: vec![
                    checked(
                        "cpufreq:policy0:scaling_max_freq",
                        3_000_000,
                        2_400_000,
                        2_400_000
                    ),
                    checked(
                        "cpufreq:policy0:scaling_min_freq",
                        800_000,
                        1_200_000,
                        1_200_000
                    ),
                ],
                not_offered: Vec::new(),
                warnings: Vec::new(),
            }
        );
        assert_eq!(limits(&p), before);
        assert_eq!(before, ("800000\n".into(), "3000000\n".into()));
    }

    /// Without a table a limit moves by 100 MHz, lower first, never across the other limit nor
    /// out of the hardware range; a policy pinned at both ends of it has nothing to move to.
    #[test]
    fn cpufreq_limits_without_a_table_move_by_100_mhz_within_the_other_limit() {
        let tmp = tempfile::tempdir().unwrap();
        let p = policy(tmp.path(), 2_000_000, 2_000_000, "intel_pstate", None);
        let report = accept_cpufreq(&roots(tmp.path()), "policy0", &mut |_| {}).unwrap();
        assert_eq!(
            report.checked,
            vec![
                checked(
                    "cpufreq:policy0:scaling_max_freq",
                    2_000_000,
                    2_100_000,
                    2_100_000
                ),
                checked(
                    "cpufreq:policy0:scaling_min_freq",
                    2_000_000,
                    1_900_000,
                    1_900_000
                ),
            ]
        );
        assert_eq!(limits(&p), ("2000000\n".into(), "2000000\n".into()));
        assert_eq!(
            cpufreq_neighbours(
                "scaling_max_freq",
                3_000_000,
                800_000,
                (800_000, 3_000_000),
                None
            ),
            [Value::Int(2_900_000)]
        );
        assert_eq!(
            cpufreq_neighbours(
                "scaling_min_freq",
                800_000,
                3_000_000,
                (800_000, 3_000_000),
                None
            ),
            [Value::Int(900_000)]
        );
        assert_eq!(
            cpufreq_neighbours(
                "scaling_max_freq",
                1_800_000,
                800_000,
                (800_000, 3_000_000),
                Some(&[800_000, 1_200_000, 1_800_000, 2_400_000])
            ),
            [Value::Int(1_200_000), Value::Int(2_400_000)]
        );

        std::fs::write(p.join("cpuinfo_min_freq"), "2000000\n").unwrap();
        std::fs::write(p.join("cpuinfo_max_freq"), "2000000\n").unwrap();
        assert_eq!(
            accept_cpufreq(&roots(tmp.path()), "policy0", &mut |_| {}).unwrap_err(),
            AcceptanceError {
                param: "cpufreq:policy0:scaling_max_freq".into(),
                what: "no neighbouring value to write: 2000000 kHz has no neighbour within the \
                       hardware range 2000000..2000000 kHz and the policy's other limit \
                       (2000000 kHz)"
                    .into(),
            }
        );
        assert_eq!(limits(&p), ("2000000\n".into(), "2000000\n".into()));
    }

    /// The real actuator, with `on_write` called before each write it makes: `true` for an
    /// apply, `false` for a revert.
    struct Hooked {
        inner: CpufreqActuator,
        on_write: Box<dyn FnMut(bool) + Send>,
    }

    impl Actuator for Hooked {
        fn address(&self) -> &ParamAddress {
            self.inner.address()
        }
        fn read(&mut self) -> Result<Value, ActuateError> {
            self.inner.read()
        }
        fn validate(&mut self, value: &Value) -> Result<(), ActuateError> {
            self.inner.validate(value)
        }
        fn apply(&mut self, value: &Value) -> Result<Value, ActuateError> {
            (self.on_write)(true);
            self.inner.apply(value)
        }
        fn revert(&mut self, original: &Value) -> Result<Value, ActuateError> {
            (self.on_write)(false);
            self.inner.revert(original)
        }
    }

    /// The min's own check takes its original after the max's round trip, so a max write that
    /// moved the min passes it: the policy as a whole, read before the first write, does not.
    #[test]
    fn a_limit_write_that_moves_the_other_limit_fails_the_acceptance() {
        let tmp = tempfile::tempdir().unwrap();
        let table = "3000000 2400000 1800000 1200000 800000 \n";
        let p = policy(tmp.path(), 800_000, 3_000_000, "acpi-cpufreq", Some(table));
        let roots = roots(tmp.path());
        let err = accept_policy(&roots, "policy0", &mut |_| {}, &mut |at| {
            let inner = CpufreqActuator::open(at, &roots)?;
            Ok(if at.name == "scaling_max_freq" {
                let min_file = p.join("scaling_min_freq");
                Box::new(Hooked {
                    inner,
                    // The driver clamps the min on every write of the max.
                    on_write: Box::new(move |apply| {
                        if apply {
                            std::fs::write(&min_file, "1200000\n").unwrap();
                        }
                    }),
                })
            } else {
                Box::new(inner)
            })
        })
        .unwrap_err();
        let file = |f: &str| p.join(f).display().to_string();
        assert_eq!(
            err,
            AcceptanceError {
                param: "cpufreq:policy0".into(),
                what: format!(
                    "after both limits were put back the policy shows scaling_min_freq 1200000, \
                     not 800000: a write of one moved another; put them back by hand with `echo \
                     800000 > {}; echo 3000000 > {}; echo schedutil > {}`",
                    file("scaling_min_freq"),
                    file("scaling_max_freq"),
                    file("scaling_governor")
                ),
            }
        );
        assert_eq!(limits(&p), ("1200000\n".into(), "3000000\n".into()));
    }

    /// A run killed half-way runs no guard: the policy's values are said before the first write.
    #[test]
    fn the_policy_is_said_before_the_first_write() {
        let tmp = tempfile::tempdir().unwrap();
        policy(tmp.path(), 800_000, 3_000_000, "intel_pstate", None);
        let roots = roots(tmp.path());
        let writes = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let mut said = Vec::new();
        accept_policy(
            &roots,
            "policy0",
            &mut |line| {
                said.push((
                    line.split(';').next().unwrap().to_string(),
                    writes.load(Ordering::SeqCst),
                ))
            },
            &mut |at| {
                let writes = writes.clone();
                Ok(Box::new(Hooked {
                    inner: CpufreqActuator::open(at, &roots)?,
                    on_write: Box::new(move |_| {
                        writes.fetch_add(1, Ordering::SeqCst);
                    }),
                }))
            },
        )
        .unwrap();
        assert_eq!(
            said,
            [(
                "cpufreq:policy0 before any change: scaling_min_freq 800000, scaling_max_freq \
                 3000000, scaling_governor schedutil"
                    .to_string(),
                0
            )]
        );
        assert_eq!(writes.load(Ordering::SeqCst), 4);
    }

    /// A max below the hardware's may be a cap the run wrote back as the request: it passes,
    /// saying so.
    #[test]
    fn a_max_below_the_hardware_max_passes_with_a_warning() {
        let tmp = tempfile::tempdir().unwrap();
        let table = "3000000 2400000 1800000 1200000 800000 \n";
        let p = policy(tmp.path(), 800_000, 2_400_000, "acpi-cpufreq", Some(table));
        let report = accept_cpufreq(&roots(tmp.path()), "policy0", &mut |_| {}).unwrap();
        let warning = "scaling_max_freq is 2400000 kHz, below cpuinfo_max_freq (3000000 kHz): if \
                       a frequency cap (thermal, the firmware's _PPC) holds it there rather than \
                       a limit someone wrote, this run wrote the capped value back as the \
                       request, which stays once the cap lifts; write the limit you mean to \
                       scaling_max_freq (docs/actuators.md, \"Known limit: frequency caps\")";
        assert_eq!(report.warnings, [warning]);
        assert!(report
            .to_string()
            .ends_with(&format!("\nwarning: {warning}\n")));
        assert_eq!(limits(&p), ("800000\n".into(), "2400000\n".into()));
    }

    #[test]
    fn a_machine_without_cpufreq_fails_clearly() {
        let tmp = tempfile::tempdir().unwrap();
        let err = accept_cpufreq(&roots(tmp.path()), "policy0", &mut |_| {}).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "cpufreq:policy0:scaling_max_freq: opening its actuator: \
                 cpufreq:policy0:scaling_max_freq: unsupported on this machine: {} does not \
                 exist: no cpufreq driver (common in VMs), so CPU frequency cannot be changed \
                 here",
                tmp.path().join("devices/system/cpu/cpufreq").display()
            )
        );
    }
}
