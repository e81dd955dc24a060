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

use serde::{Deserialize, Serialize};

use super::{read_text, EnergyError, EnergyMeter, EnergyReading, EnergySource};

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

/// Parse the aggregate `cpu` line and count the `cpuN` lines of `/proc/stat` text.
pub fn parse_proc_stat(text: &str, path: &Path) -> Result<CpuTimes, EnergyError> {
    let mut times = None;
    let mut n = 0;
    for line in text.lines() {
        let mut it = line.split_whitespace();
        match it.next() {
            Some("cpu") => {
                let v: Vec<u64> = it
                    .map(|f| {
                        f.parse().map_err(|_| EnergyError::Parse {
                            path: path.to_path_buf(),
                            text: line.to_string(),
                            what: "a /proc/stat cpu line",
                        })
                    })
                    .collect::<Result<_, _>>()?;
                if v.len() < 4 {
                    return Err(EnergyError::Parse {
                        path: path.to_path_buf(),
                        text: line.to_string(),
                        what: "a /proc/stat cpu line (at least 4 fields)",
                    });
                }
                let f = |i: usize| v.get(i).copied().unwrap_or(0);
                // user nice system idle iowait irq softirq steal (guest time is inside user).
                times = Some(CpuTimes {
                    busy: f(0) + f(1) + f(2) + f(5) + f(6),
                    idle: f(3) + f(4),
                    steal: f(7),
                    n_cpus: 0,
                });
            }
            Some(t) if t.starts_with("cpu") && t[3..].parse::<u32>().is_ok() => n += 1,
            _ => {}
        }
    }
    let mut t = times.ok_or_else(|| EnergyError::Parse {
        path: path.to_path_buf(),
        text: text.lines().next().unwrap_or("").to_string(),
        what: "/proc/stat (no aggregate cpu line)",
    })?;
    if n == 0 {
        return Err(EnergyError::NoCpus(path.to_path_buf()));
    }
    t.n_cpus = n;
    Ok(t)
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
        let last = parse_proc_stat(&read_text(&stat_path)?, &stat_path)?;
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
                std::fs::read_to_string(e.path().join("cpufreq").join(f))
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
        let now = parse_proc_stat(&read_text(&self.stat_path)?, &self.stat_path)?;
        let d_total = now.total().saturating_sub(self.last.total()) as f64;
        let d_busy = now.busy.saturating_sub(self.last.busy) as f64;
        let n = now.n_cpus;
        let interval_s = d_total / (n as f64 * self.model.user_hz);
        let busy_s = d_busy / self.model.user_hz;
        let joules = self.model.joules(n, interval_s, busy_s, self.freq_ratio());
        self.last = now;
        Ok(EnergyReading {
            joules,
            source: EnergySource::Estimated,
        })
    }

    fn domains(&self) -> Vec<String> {
        vec!["cpu".to_string()]
    }

    fn packages(&self) -> usize {
        1
    }
}
