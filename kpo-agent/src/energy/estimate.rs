//! Energy estimate from CPU utilization and frequency, for machines without RAPL.
//!
//! Model (per interval):
//!
//! ```text
//! E = n_cpu · P_idle · T  +  busy_seconds · P_busy · (f / f_max)^α
//! ```
//!
//! - `T`: the interval, from the `/proc/stat` jiffies of all CPUs divided by the CPU count and
//!   `USER_HZ`; `busy_seconds`: user + nice + system + irq + softirq time over the interval, summed
//!   over CPUs (iowait counts as idle; steal is neither, it is another guest's time);
//! - `f`: the mean `scaling_cur_freq` over CPUs at the read (1.0 ratio if there is no cpufreq);
//!   `f_max`: the highest `cpuinfo_max_freq`, or `max_freq_mhz` from the model;
//! - constants ([`PowerModel::default`]), from the seed study's machine (Xeon E5-2690: 135 W
//!   TDP, 16 logical CPUs per package, about 20 W at idle): `P_idle` = 1.2 W per logical CPU,
//!   `P_busy` = 7.0 W extra per busy logical CPU at `f_max` (`(135 - 20) / 16`), `α` = 2 (dynamic
//!   power goes as `f·V²` and voltage falls with frequency, so the true exponent lies between 2 and
//!   3; 2 keeps the estimate from overstating what a lower frequency saves).
//!
//! Limits: it cannot see race-to-idle (package C-states, uncore, DRAM), so it always favours lower
//! frequencies for the same work. Readings are therefore labelled [`EnergySource::Estimated`] and
//! should be read as relative, not absolute, figures.

use std::path::{Path, PathBuf};

use crate::kernel_file::limit::{ATTRIBUTE, PER_CPU};

use serde::{Deserialize, Serialize};

use super::{read_bounded, EnergyError, EnergyMeter, EnergyReading, EnergySource};

/// Constants of the estimate (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PowerModel {
    /// Power of one idle logical CPU, watts.
    pub idle_watts_per_cpu: f64,
    /// Extra power of one busy logical CPU at the maximum frequency, watts.
    pub busy_watts_per_cpu: f64,
    /// Exponent of the frequency ratio.
    pub freq_exponent: f64,
    /// Maximum frequency when cpufreq does not say, MHz (`None`: the ratio is 1).
    pub max_freq_mhz: Option<f64>,
    /// Kernel clock ticks per second in `/proc/stat` (USER_HZ).
    pub user_hz: f64,
}

impl Default for PowerModel {
    fn default() -> Self {
        Self {
            idle_watts_per_cpu: 1.2,
            busy_watts_per_cpu: 7.0,
            freq_exponent: 2.0,
            max_freq_mhz: None,
            user_hz: 100.0,
        }
    }
}

impl PowerModel {
    /// Joules for an interval of `interval_s` seconds on `n_cpus` CPUs with `busy_s` CPU-seconds
    /// of work at frequency ratio `freq_ratio` (= f / f_max, clamped to [0, 1]).
    pub fn joules(&self, n_cpus: usize, interval_s: f64, busy_s: f64, freq_ratio: f64) -> f64 {
        let ratio = freq_ratio.clamp(0.0, 1.0);
        n_cpus as f64 * self.idle_watts_per_cpu * interval_s
            + busy_s * self.busy_watts_per_cpu * ratio.powf(self.freq_exponent)
    }
}

/// CPU time counters from `/proc/stat`, in jiffies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CpuTimes {
    pub busy: u64,
    pub idle: u64,
    pub steal: u64,
    pub n_cpus: usize,
}

impl CpuTimes {
    pub fn total(&self) -> u64 {
        self.busy + self.idle + self.steal
    }
}

/// The aggregate `cpu` line and the number of `cpuN` lines of `/proc/stat` text, parsed by the
/// collector's own parser (`collect::procfs::stat`): one parser for the file, so that the estimate
/// and the host metrics never disagree about what busy time is.
pub fn parse_proc_stat(text: &str, path: &Path) -> Result<CpuTimes, EnergyError> {
    let totals =
        crate::collect::procfs::stat::parse_cpu_totals(text).map_err(|e| EnergyError::Parse {
            path: path.to_path_buf(),
            text: e.to_string(),
            what: "/proc/stat with a cpu line and cpuN lines",
        })?;
    if totals.online_cpus == 0 {
        return Err(EnergyError::NoCpus(path.to_path_buf()));
    }
    let t = totals.total;
    Ok(CpuTimes {
        busy: t.busy(),
        idle: t.idle.saturating_add(t.iowait),
        steal: t.steal,
        n_cpus: totals.online_cpus,
    })
}

/// An [`EnergyMeter`] that estimates with a [`PowerModel`].
#[derive(Debug, Clone)]
pub struct EstimatedMeter {
    stat_path: PathBuf,
    cpu_dir: PathBuf,
    model: PowerModel,
    last: CpuTimes,
}

impl EstimatedMeter {
    /// Read `<proc_root>/stat` and `<sys_root>/devices/system/cpu/cpu*/cpufreq/`.
    pub fn open(proc_root: &Path, sys_root: &Path, model: PowerModel) -> Result<Self, EnergyError> {
        let stat_path = proc_root.join("stat");
        let last = parse_proc_stat(&read_bounded(&stat_path, PER_CPU)?, &stat_path)?;
        Ok(Self {
            stat_path,
            cpu_dir: sys_root.join("devices/system/cpu"),
            model,
            last,
        })
    }

    /// Mean current frequency over CPUs divided by the maximum; 1.0 without cpufreq.
    pub fn freq_ratio(&self) -> f64 {
        let Ok(entries) = std::fs::read_dir(&self.cpu_dir) else {
            return 1.0;
        };
        let mut cur = Vec::new();
        let mut max: f64 = 0.0;
        for e in entries.filter_map(Result::ok) {
            let name = e.file_name().to_string_lossy().to_string();
            if name
                .strip_prefix("cpu")
                .is_none_or(|n| n.parse::<u32>().is_err())
            {
                continue;
            }
            let read = |f: &str| -> Option<f64> {
                read_bounded(&e.path().join("cpufreq").join(f), ATTRIBUTE)
                    .ok()?
                    .trim()
                    .parse()
                    .ok()
            };
            if let Some(c) = read("scaling_cur_freq") {
                cur.push(c);
            }
            if let Some(m) = read("cpuinfo_max_freq") {
                max = max.max(m);
            }
        }
        if max <= 0.0 {
            max = self.model.max_freq_mhz.map_or(0.0, |m| m * 1000.0);
        }
        if cur.is_empty() || max <= 0.0 {
            return 1.0;
        }
        (cur.iter().sum::<f64>() / cur.len() as f64 / max).clamp(0.0, 1.0)
    }
}

impl EnergyMeter for EstimatedMeter {
    fn source(&self) -> EnergySource {
        EnergySource::Estimated
    }

    fn read(&mut self) -> Result<EnergyReading, EnergyError> {
        let now = parse_proc_stat(&read_bounded(&self.stat_path, PER_CPU)?, &self.stat_path)?;
        let d_total = crate::counter::monotonic(self.last.total(), now.total()) as f64;
        let d_busy = crate::counter::monotonic(self.last.busy, now.busy) as f64;
        let n = now.n_cpus;
        let interval_s = d_total / (n as f64 * self.model.user_hz);
        let busy_s = d_busy / self.model.user_hz;
        let joules = self.model.joules(n, interval_s, busy_s, self.freq_ratio());
        self.last = now;
        Ok(EnergyReading {
            joules,
            source: EnergySource::Estimated,
            parts: vec![joules],
        })
    }

    fn domains(&self) -> Vec<String> {
        vec!["cpu".to_string()]
    }

    fn packages(&self) -> usize {
        1
    }
}
