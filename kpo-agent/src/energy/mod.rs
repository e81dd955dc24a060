//! Energy sensing: RAPL through powercap sysfs or through the perf `power` PMU, or a labelled
//! estimate.
//!
//! An [`EnergyMeter`] returns the energy used since its previous read. Every [`EnergyReading`]
//! carries its [`EnergySource`], serialized as `"rapl"`, `"perf_power"` or `"estimated"`, so that
//! every event and metric derived from it can say whether and how it was measured.
//!
//! - [`rapl::RaplMeter`]: `<sys>/class/powercap/intel-rapl:*/energy_uj`, wrap-around handled with
//!   `max_energy_range_uj`.
//! - [`perf_power::PerfPowerMeter`]: the same hardware counters through `perf_event_open` on the
//!   PMU described by `<sys>/bus/event_source/devices/power`, one CPU per package.
//! - [`estimate::EstimatedMeter`]: CPU time from `<proc>/stat` and frequency from cpufreq, through
//!   the documented [`estimate::PowerModel`]; used where no RAPL exists (most VMs).
//!
//! [`open_meter`] tries powercap RAPL, then the perf power PMU, then falls back to the estimate.
//! A measured source is used only if it advances while the CPU works and reports possible power
//! ([`trust`]); it is then read at every tick and every counter is checked the same way
//! ([`CheckedMeter`]). A running agent sets a source aside the same way when it gives no figure
//! for several windows in a row, and falls back to the next in the order ([`handover`]).

pub mod estimate;
pub mod handover;
pub mod perf_power;
pub mod rapl;
pub mod trust;

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use serde::{Deserialize, Serialize};

/// Where an energy figure comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EnergySource {
    /// Measured by RAPL (powercap).
    Rapl,
    /// Measured by RAPL through the perf `power` PMU.
    #[serde(rename = "perf_power")]
    PerfPower,
    /// Modelled from CPU utilization and frequency.
    Estimated,
}

impl EnergySource {
    pub const ALL: [EnergySource; 3] = [Self::Rapl, Self::PerfPower, Self::Estimated];

    /// The source's place in the order of preference ([`choose_meter`]): measured before
    /// estimated, powercap before the perf PMU.
    fn rank(self) -> u8 {
        match self {
            EnergySource::Rapl => 0,
            EnergySource::PerfPower => 1,
            EnergySource::Estimated => 2,
        }
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            EnergySource::Rapl => "rapl",
            EnergySource::PerfPower => "perf_power",
            EnergySource::Estimated => "estimated",
        }
    }
}

impl std::fmt::Display for EnergySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Energy used over one interval.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EnergyReading {
    pub joules: f64,
    pub source: EnergySource,
    /// The energy of each counter summed into `joules`, in the order of [`EnergyMeter::domains`]:
    /// each is checked on its own, so one package whose counter froze is not hidden by another
    /// that still moves.
    #[serde(skip)]
    pub parts: Vec<f64>,
}

#[derive(Debug, thiserror::Error)]
pub enum EnergyError {
    #[error("{path}: {source}{hint}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
        hint: &'static str,
    },
    #[error("{path}: cannot parse '{text}' as {what}")]
    Parse {
        path: PathBuf,
        text: String,
        what: &'static str,
    },
    #[error("no RAPL package zones under {0}")]
    NoZones(PathBuf),
    #[error("{0}: no CPU was online at both readings")]
    NoCpuOnlineThroughout(PathBuf),
    #[error("{0}: no CPU time passed between two readings (a copy that does not move, or an interval shorter than one tick of its clock): nothing to estimate from")]
    NoTimeBetweenReadings(PathBuf),
    #[error("{path}: {reason}")]
    PerfPmu { path: PathBuf, reason: String },
    #[error("{meter}: {domain}: {reason}")]
    Untrusted {
        meter: EnergySource,
        /// The counter judged, as named in [`EnergyMeter::domains`].
        domain: String,
        reason: trust::Untrusted,
    },
    #[error(
        "{meter}: the read before this interval failed, so the energy counted since reaches back \
         into the interval before and cannot be split between them"
    )]
    AfterFailedRead { meter: EnergySource },
    #[error(
        "{0}: 0, so the counter's wrap point is unknown and a wrap cannot be told from a reset"
    )]
    NoRange(PathBuf),
    #[error(
        "{meter}: reads {tick_s} s apart, or twice that when one comes late, are long enough \
         for the counter to wrap more than once ({wrap_joules:.0} J range at up to {ceiling:.0} \
         W); it needs a shorter tick"
    )]
    MayHaveWrapped {
        meter: EnergySource,
        tick_s: f64,
        wrap_joules: f64,
        ceiling: f64,
    },
    /// At run time the tick is known to be short enough ([`MayHaveWrapped`] at the start): a
    /// gap this long is the agent or the machine held up between two reads.
    #[error(
        "{meter}: {seconds:.1} s passed between two reads (the agent or the machine was held \
         up), long enough for the counter to wrap more than once ({wrap_joules:.0} J range at up \
         to {ceiling:.0} W), so the energy over that gap is not known"
    )]
    StalledBetweenReads {
        meter: EnergySource,
        seconds: f64,
        wrap_joules: f64,
        ceiling: f64,
    },
    #[error(
        "{meter}: chosen during this window, after the source before it was set aside, so its \
         energy covers only part of the window"
    )]
    ChosenMidWindow { meter: EnergySource },
    #[error("perf_event_open of power/{event}/ on CPU {cpu}: {source}{hint}")]
    PerfOpen {
        event: String,
        cpu: u32,
        source: std::io::Error,
        hint: &'static str,
    },
}

pub(crate) fn read_text(path: &Path) -> Result<String, EnergyError> {
    read_bounded(path, crate::kernel_file::limit::ATTRIBUTE)
}

/// A kernel file read through the crate's one bounded reader ([`crate::kernel_file`]), its
/// errors in this module's terms.
pub(crate) fn read_bounded(path: &Path, limit: usize) -> Result<String, EnergyError> {
    use crate::kernel_file::KernelFileError as E;
    crate::kernel_file::read_text(path, limit).map_err(|e| match e {
        E::Io { path, source, .. } => {
            let hint = if source.kind() == std::io::ErrorKind::PermissionDenied
                && path.ends_with("energy_uj")
            {
                " (energy_uj is readable by root only since Linux 5.10)"
            } else {
                ""
            };
            EnergyError::Io { path, source, hint }
        }
        E::TooLarge { path, limit } => EnergyError::Parse {
            path,
            text: format!("more than {limit} bytes"),
            what: "a kernel file of its usual size",
        },
        E::Parse { path, text, what } => EnergyError::Parse { path, text, what },
    })
}

pub(crate) fn read_u64(path: &Path, what: &'static str) -> Result<u64, EnergyError> {
    let text = read_text(path)?;
    text.trim().parse().map_err(|_| EnergyError::Parse {
        path: path.to_path_buf(),
        text: text.trim().to_string(),
        what,
    })
}

/// A source of energy readings.
pub trait EnergyMeter {
    fn source(&self) -> EnergySource;
    /// Energy used since the previous read (or since the meter was opened).
    fn read(&mut self) -> Result<EnergyReading, EnergyError>;
    /// What is summed, e.g. `package-0` (powercap zone names), `energy-pkg:cpu0` (perf event and
    /// the CPU it is read on), or `cpu` for the estimate.
    fn domains(&self) -> Vec<String>;
    /// How many CPU packages (or platforms) the reading covers.
    fn packages(&self) -> usize;
    /// The least energy after which one of the counters wraps back to 0, for counters that wrap
    /// within hours (RAPL through powercap); `None` for the others.
    fn wrap_joules(&self) -> Option<f64> {
        None
    }
    /// Called on every tick between two [`read`](Self::read)s. A checked meter reads its
    /// counters here, so that a window spans many short reads: a wrap is seen in each, a reset
    /// shows up as impossible power over one tick, and the window's energy is their sum.
    fn sample(&mut self) {}
}

/// A measured meter whose every reading is checked by [`trust`]: a counter that stopped
/// advancing or jumped gives an [`EnergyError::Untrusted`], never a figure.
///
/// The inner meter is read at every [`sample`](EnergyMeter::sample) (every tick) and at every
/// [`read`](EnergyMeter::read); each counter's energy over each of those short intervals must be
/// possible for one package, and over the whole interval since the previous `read` it must have
/// moved. Reading often is what makes both checks work on RAPL: a counter reset reads as a wrap
/// (`range − before + after`), which over one tick is far above any package's power but over a
/// long window can look like ordinary energy; and a window longer than one wrap period (65 kJ on
/// AMD: about 4 minutes at 280 W) would silently lose whole wraps.
pub struct CheckedMeter {
    inner: Box<dyn EnergyMeter + Send>,
    /// When the inner meter last read successfully: its next reading covers the time since.
    last_ok: Instant,
    /// Start of the interval the next `read` returns.
    interval_start: Instant,
    /// Each counter's energy since `interval_start`, or why the interval has no figure (the first
    /// failure in it).
    interval: Result<Vec<f64>, EnergyError>,
    /// The last inner read failed: the next one reaches back before it.
    behind: bool,
    /// Per counter, how long it has stood still over the reads up to now, and the longest such
    /// stretch in this interval (from its start, or carried in from the previous one).
    still_s: Vec<f64>,
    longest_still_s: Vec<f64>,
}

impl CheckedMeter {
    /// Checks the meter now: one read to start the interval, `work` (which must keep a CPU busy),
    /// another read that must pass the checks.
    pub fn verify(
        mut inner: Box<dyn EnergyMeter + Send>,
        work: &mut dyn FnMut(),
    ) -> Result<Self, EnergyError> {
        let before = Instant::now();
        inner.read()?;
        let mut checked = Self {
            inner,
            last_ok: before,
            interval_start: before,
            interval: Ok(Vec::new()),
            behind: false,
            still_s: Vec::new(),
            longest_still_s: Vec::new(),
        };
        work();
        // The work is known, however short a test makes it: a counter that did not move over it
        // is frozen.
        checked.read_interval(true)?;
        Ok(checked)
    }

    /// The interval since the previous read: every counter's energy, checked to have moved
    /// (`strict`: however short the interval).
    fn read_interval(&mut self, strict: bool) -> Result<EnergyReading, EnergyError> {
        self.sample_now();
        let seconds = self.interval_start.elapsed().as_secs_f64();
        self.interval_start = Instant::now();
        // The next interval starts with no stretch of its own: one still at this end goes on
        // counting (`still_s` is kept) only if the next read finds the counter still too, so a
        // stall that ended at this read is charged to this interval alone.
        let zeros = vec![0.0; self.longest_still_s.len()];
        let longest_still = std::mem::replace(&mut self.longest_still_s, zeros);
        let parts = std::mem::replace(&mut self.interval, Ok(Vec::new()))?;
        let meter = self.inner.source();
        for (i, &joules) in parts.iter().enumerate() {
            let still = longest_still.get(i).copied().unwrap_or(0.0);
            let judged = if strict && joules == 0.0 {
                Err(trust::Untrusted::Frozen { seconds })
            } else if still >= trust::MAX_STILL.as_secs_f64() {
                Err(trust::Untrusted::Frozen { seconds: still })
            } else {
                trust::check_moved(joules, seconds)
            };
            if let Err(reason) = judged {
                return Err(self.untrusted(i, reason));
            }
        }
        Ok(EnergyReading {
            joules: parts.iter().sum(),
            source: meter,
            parts,
        })
    }

    /// Counter `i` (named as in `domains`, which are built only here: this runs every tick) is
    /// not a measurement.
    fn untrusted(&self, i: usize, reason: trust::Untrusted) -> EnergyError {
        let domain = self.inner.domains().get(i).cloned();
        EnergyError::Untrusted {
            meter: self.inner.source(),
            domain: domain.unwrap_or_else(|| format!("#{i}")),
            reason,
        }
    }

    fn fail(&mut self, error: EnergyError) {
        if self.interval.is_ok() {
            self.interval = Err(error);
        }
    }

    /// One read of the inner meter, added to the interval if every counter's share is possible.
    fn sample_now(&mut self) {
        // The counters are read somewhere between `before` and the end of the read: measured
        // from the previous `before` to the end, the interval is never shorter than the one
        // the energy covers, so a read that stalls is not taken for impossible power.
        let before = Instant::now();
        let meter = self.inner.source();
        let read = self.inner.read();
        let seconds = self.last_ok.elapsed().as_secs_f64();
        let reading = match read {
            Ok(reading) => reading,
            Err(e) => {
                self.behind = true;
                return self.fail(e);
            }
        };
        self.last_ok = before;
        if std::mem::take(&mut self.behind) {
            return self.fail(EnergyError::AfterFailedRead { meter });
        }
        if let Some(wrap_joules) = may_wrap_twice(self.inner.as_ref(), seconds) {
            return self.fail(EnergyError::StalledBetweenReads {
                meter,
                seconds,
                wrap_joules,
                ceiling: trust::MAX_WATTS_PER_PACKAGE,
            });
        }
        for (i, &joules) in reading.parts.iter().enumerate() {
            if let Err(reason) = trust::check_possible(joules, seconds) {
                let error = self.untrusted(i, reason);
                return self.fail(error);
            }
        }
        let n = reading.parts.len();
        self.still_s.resize(n, 0.0);
        self.longest_still_s.resize(n, 0.0);
        for (i, &joules) in reading.parts.iter().enumerate() {
            self.still_s[i] = if joules == 0.0 {
                self.still_s[i] + seconds
            } else {
                0.0
            };
            self.longest_still_s[i] = self.longest_still_s[i].max(self.still_s[i]);
        }
        if let Ok(sums) = &mut self.interval {
            sums.resize(reading.parts.len(), 0.0);
            for (sum, part) in sums.iter_mut().zip(&reading.parts) {
                *sum += part;
            }
        }
    }
}

impl EnergyMeter for CheckedMeter {
    fn source(&self) -> EnergySource {
        self.inner.source()
    }

    fn sample(&mut self) {
        self.sample_now();
    }

    fn read(&mut self) -> Result<EnergyReading, EnergyError> {
        self.read_interval(false)
    }

    fn domains(&self) -> Vec<String> {
        self.inner.domains()
    }

    fn packages(&self) -> usize {
        self.inner.packages()
    }

    fn wrap_joules(&self) -> Option<f64> {
        self.inner.wrap_joules()
    }
}

/// The best energy meter for a machine, and why the better ones were not used.
pub struct MeterChoice {
    pub meter: Box<dyn EnergyMeter + Send>,
    /// For each source tried before the chosen one: the source and why it was not used.
    pub skipped: Vec<(EnergySource, String)>,
}

/// No source could be opened, not even the estimate: why, and why each measured source was
/// skipped before it (what an operator can fix is usually there).
#[derive(Debug)]
pub struct NoMeter {
    pub error: EnergyError,
    pub skipped: Vec<(EnergySource, String)>,
}

/// RAPL through powercap under `sys_root` if it is present, readable and advancing, else RAPL
/// through the perf power PMU described under `sys_root` (counters opened on the running kernel)
/// if it advances, else the estimate from `proc_root` and `sys_root` with `model`. Each measured
/// source is checked while one CPU works for [`trust::PROBE_WORK`]. `read_every` is how often the
/// meter will be read (the tick): a source whose counter could wrap twice in that time is set
/// aside.
pub fn choose_meter(
    sys_root: &Path,
    proc_root: &Path,
    model: estimate::PowerModel,
    read_every: Duration,
) -> Result<MeterChoice, NoMeter> {
    choose_meter_with(sys_root, proc_root, model, read_every, &mut || {
        trust::busy_work(trust::PROBE_WORK)
    })
}

/// Opens one measured source.
type OpenMeter<'a> = dyn Fn() -> Result<Box<dyn EnergyMeter + Send>, EnergyError> + 'a;

/// [`choose_meter`] with the work done during each trust check given by the caller (tests advance
/// a fake counter there).
pub fn choose_meter_with(
    sys_root: &Path,
    proc_root: &Path,
    model: estimate::PowerModel,
    read_every: Duration,
    work: &mut dyn FnMut(),
) -> Result<MeterChoice, NoMeter> {
    choose_meter_after(None, sys_root, proc_root, model, read_every, work)
}

/// [`choose_meter_with`] among the sources that come after `after` in the order (all of them for
/// `None`): what a running agent falls back to when the source it used stops giving figures
/// ([`handover`]).
pub fn choose_meter_after(
    after: Option<EnergySource>,
    sys_root: &Path,
    proc_root: &Path,
    model: estimate::PowerModel,
    read_every: Duration,
    work: &mut dyn FnMut(),
) -> Result<MeterChoice, NoMeter> {
    let mut skipped = Vec::new();
    let measured: [(EnergySource, &OpenMeter); 2] = [
        (EnergySource::Rapl, &|| {
            Ok(Box::new(rapl::RaplMeter::open(sys_root, false)?) as Box<dyn EnergyMeter + Send>)
        }),
        (EnergySource::PerfPower, &|| {
            Ok(Box::new(perf_power::PerfPowerMeter::open(sys_root, false)?)
                as Box<dyn EnergyMeter + Send>)
        }),
    ];
    for (source, open) in measured {
        if after.is_some_and(|after| source.rank() <= after.rank()) {
            continue;
        }
        let opened = open().and_then(|meter| {
            too_long_between_reads(meter.as_ref(), read_every)?;
            CheckedMeter::verify(meter, work)
        });
        match opened {
            Ok(meter) => {
                return Ok(MeterChoice {
                    meter: Box::new(meter),
                    skipped,
                })
            }
            Err(EnergyError::Untrusted { domain, reason, .. }) => {
                skipped.push((source, format!("set aside: {domain}: {reason}")))
            }
            Err(e) => skipped.push((source, e.to_string())),
        }
    }
    let meter = match estimate::EstimatedMeter::open(proc_root, sys_root, model) {
        Ok(m) => Box::new(m),
        Err(error) => return Err(NoMeter { error, skipped }),
    };
    Ok(MeterChoice { meter, skipped })
}

/// Refuses a meter whose counter could wrap twice between two reads `read_every` apart. Reads
/// come a tick apart plus whatever the loop did before each, so the tick is given room to be
/// late by as much again: otherwise a tick just under the limit would lose a window each time
/// one read came a little late.
fn too_long_between_reads(
    meter: &dyn EnergyMeter,
    read_every: Duration,
) -> Result<(), EnergyError> {
    let tick_s = read_every.as_secs_f64();
    match may_wrap_twice(meter, 2.0 * tick_s) {
        Some(wrap_joules) => Err(EnergyError::MayHaveWrapped {
            meter: meter.source(),
            tick_s,
            wrap_joules,
            ceiling: trust::MAX_WATTS_PER_PACKAGE,
        }),
        None => Ok(()),
    }
}

/// The meter's wrap, in joules, when its counter could wrap more than once in `seconds` at the
/// most power a package can draw.
fn may_wrap_twice(meter: &dyn EnergyMeter, seconds: f64) -> Option<f64> {
    meter
        .wrap_joules()
        .filter(|&wrap_joules| seconds * trust::MAX_WATTS_PER_PACKAGE >= wrap_joules)
}

/// [`choose_meter`], logging why better sources were skipped.
pub fn open_meter(
    sys_root: &Path,
    proc_root: &Path,
    model: estimate::PowerModel,
    read_every: Duration,
) -> Result<Box<dyn EnergyMeter + Send>, EnergyError> {
    let choice = match choose_meter(sys_root, proc_root, model, read_every) {
        Ok(choice) => choice,
        Err(no) => {
            // Say why the measured sources were skipped too: that is what the operator can fix.
            let skipped: Vec<String> = no
                .skipped
                .iter()
                .map(|(source, reason)| format!("{source}: {reason}"))
                .collect();
            tracing::warn!(skipped = %skipped.join("; "), "no energy source");
            return Err(no.error);
        }
    };
    for (source, reason) in &choice.skipped {
        tracing::info!(%source, %reason, chosen = %choice.meter.source(), "energy source unavailable");
    }
    if choice.meter.source() == EnergySource::Estimated {
        tracing::info!("no RAPL counters; energy will be estimated and labelled so");
    }
    Ok(choice.meter)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_serializes_as_label() {
        assert_eq!(
            serde_json::to_string(&EnergySource::Rapl).unwrap(),
            "\"rapl\""
        );
        assert_eq!(
            serde_json::to_string(&EnergySource::Estimated).unwrap(),
            "\"estimated\""
        );
        let r = EnergyReading {
            joules: 1.5,
            source: EnergySource::Estimated,
            parts: vec![1.5],
        };
        assert_eq!(
            serde_json::to_string(&r).unwrap(),
            r#"{"joules":1.5,"source":"estimated"}"#
        );
        assert_eq!(EnergySource::Rapl.to_string(), "rapl");
        assert_eq!(
            serde_json::to_string(&EnergySource::PerfPower).unwrap(),
            "\"perf_power\""
        );
        assert_eq!(
            serde_json::from_str::<EnergySource>("\"perf_power\"").unwrap(),
            EnergySource::PerfPower
        );
        assert_eq!(EnergySource::PerfPower.to_string(), "perf_power");
    }
}
