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

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

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

/// CPU time counters from `/proc/stat`, in jiffies: each online CPU's (its `cpuN` line), busy
/// time and all accounted time (busy, idle, iowait and steal).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CpuTimes {
    pub cpus: BTreeMap<u32, CpuTime>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CpuTime {
    pub busy: u64,
    pub total: u64,
}

/// Time between two readings over the CPUs online at both.
struct Between {
    cpus: usize,
    /// Jiffies, summed over those CPUs.
    total: u64,
    busy: u64,
}

impl CpuTimes {
    /// Over the CPUs online at both readings only. The aggregate `cpu` line sums every possible
    /// CPU, an offline one's idle time taken from elsewhere, so it jumps when a CPU goes offline
    /// or comes back (`chcpu`, SMT switched off, a vCPU added), and the estimate would jump with
    /// it; the host metrics sum the same lines for the same reason.
    fn since(&self, earlier: &CpuTimes) -> Between {
        let mut between = Between {
            cpus: 0,
            total: 0,
            busy: 0,
        };
        for (cpu, now) in &self.cpus {
            let Some(before) = earlier.cpus.get(cpu) else {
                continue;
            };
            between.cpus += 1;
            between.total += crate::counter::monotonic(before.total, now.total);
            between.busy += crate::counter::monotonic(before.busy, now.busy);
        }
        between
    }
}

/// The `cpuN` lines of `/proc/stat` text, parsed by the collector's own parser
/// (`collect::procfs::stat`): one parser for the file, so that the estimate and the host metrics
/// never disagree about what busy time is.
pub fn parse_proc_stat(text: &str, path: &Path) -> Result<CpuTimes, EnergyError> {
    let totals =
        crate::collect::procfs::stat::parse_cpu_totals(text).map_err(|e| EnergyError::Parse {
            path: path.to_path_buf(),
            text: e.to_string(),
            what: "/proc/stat with a cpu line and cpuN lines",
        })?;
    let cpus = totals
        .cpus
        .iter()
        .map(|c| {
            let t = &c.jiffies;
            let time = CpuTime {
                busy: t.busy(),
                total: t.total(),
            };
            (c.cpu, time)
        })
        .collect();
    Ok(CpuTimes { cpus })
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
        let between = now.since(&self.last);
        self.last = now;
        let n = between.cpus;
        if n == 0 {
            return Err(EnergyError::NoCpuOnlineThroughout(self.stat_path.clone()));
        }
        // The estimate's clock is /proc/stat's: without time there, 0 J would be a figure the
        // optimizer and a reader take as measured, not the absence of one.
        if between.total == 0 {
            return Err(EnergyError::NoTimeBetweenReadings(self.stat_path.clone()));
        }
        let interval_s = between.total as f64 / (n as f64 * self.model.user_hz);
        let busy_s = between.busy as f64 / self.model.user_hz;
        let joules = self.model.joules(n, interval_s, busy_s, self.freq_ratio());
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
