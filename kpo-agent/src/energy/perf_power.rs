//! RAPL energy counters through the perf `power` PMU (`perf stat -e power/energy-pkg/`).
//!
//! Some machines expose RAPL to perf but not through powercap (powercap disabled or not built,
//! or readable by root only while perf is allowed). The PMU is described under
//! `<sys_root>/bus/event_source/devices/power`:
//! - `type`: the PMU's dynamic perf type number;
//! - `events/energy-{pkg,cores,ram,gpu,psys}`: the event's config terms, e.g. `event=0x02`, placed
//!   into `perf_event_attr.config` as `format/<term>` says (`config:0-7`);
//! - `events/<event>.scale`: joules per count (e.g. `2.3283064365386962890625e-10`, 2^-32 J), and
//!   `events/<event>.unit`: `Joules`;
//! - `cpumask`: one CPU per package; the counters are per package and can only be opened on a
//!   CPU (`pid = -1`). Without `cpumask`, the first CPU of each `physical_package_id` is used.
//!
//! Which events are summed follows `rapl.rs`: `energy-pkg` (it contains the cores, so
//! `energy-cores` would count twice), `energy-psys` only when there is no `energy-pkg`, plus
//! `energy-ram` on request. The kernel accumulates the hardware's 32-bit counters into 64-bit
//! counts, so a delta is a plain (wrapping) subtraction.
//!
//! Opening system-wide events needs CAP_PERFMON (or CAP_SYS_ADMIN) or
//! `kernel.perf_event_paranoid <= 0`; the error says so.

use std::fs::File;
use std::io::Read;
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use super::{read_text, EnergyError, EnergyMeter, EnergyReading, EnergySource};

/// The energy events the power PMU may offer, in discovery order.
pub const POWER_EVENTS: [&str; 5] = [
    "energy-pkg",
    "energy-cores",
    "energy-ram",
    "energy-gpu",
    "energy-psys",
];

/// One event of the PMU.
#[derive(Debug, Clone, PartialEq)]
pub struct PowerEvent {
    /// e.g. `energy-pkg`.
    pub name: String,
    /// `perf_event_attr.config`.
    pub config: u64,
    /// Joules per count.
    pub scale: f64,
}

/// The perf power PMU as sysfs describes it.
#[derive(Debug, Clone, PartialEq)]
pub struct PowerPmu {
    pub dir: PathBuf,
    /// `perf_event_attr.type`.
    pub pmu_type: u32,
    /// Every energy event found.
    pub events: Vec<PowerEvent>,
    /// The events that are summed (indices into `events`).
    pub selected: Vec<usize>,
    /// One CPU per package to open the counters on.
    pub cpus: Vec<u32>,
}

fn pmu_error(path: &Path, reason: impl Into<String>) -> EnergyError {
    EnergyError::PerfPmu {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

impl PowerPmu {
    /// Read `<sys_root>/bus/event_source/devices/power` (CPUs from its `cpumask`, or from
    /// `<sys_root>/devices/system/cpu/cpu*/topology/physical_package_id`).
    pub fn discover(sys_root: &Path, include_ram: bool) -> Result<Self, EnergyError> {
        let dir = sys_root.join("bus/event_source/devices/power");
        if !dir.is_dir() {
            return Err(pmu_error(
                &dir,
                "no perf power PMU: the directory does not exist (the kernel exposes no RAPL \
                 energy events to perf on this machine or VM)",
            ));
        }
        let type_path = dir.join("type");
        let pmu_type = parse_num(&read_text(&type_path)?, &type_path, "a perf PMU type")?;
        let pmu_type = u32::try_from(pmu_type).map_err(|_| EnergyError::Parse {
            path: type_path.clone(),
            text: pmu_type.to_string(),
            what: "a perf PMU type",
        })?;

        let mut events = Vec::new();
        for name in POWER_EVENTS {
            let path = dir.join("events").join(name);
            if !path.exists() {
                continue;
            }
            let config = parse_config(&read_text(&path)?, &path, &dir)?;
            let scale_path = dir.join("events").join(format!("{name}.scale"));
            let text = read_text(&scale_path)?;
            let scale: f64 = text
                .trim()
                .parse()
                .ok()
                .filter(|s: &f64| s.is_finite() && *s > 0.0)
                .ok_or_else(|| EnergyError::Parse {
                    path: scale_path.clone(),
                    text: text.trim().to_string(),
                    what: "a positive scale (joules per count)",
                })?;
            // The scale gives joules only if the unit is joules; anything else is not energy.
            let unit_path = dir.join("events").join(format!("{name}.unit"));
            if unit_path.exists() {
                let unit = read_text(&unit_path)?;
                if unit.trim() != "Joules" {
                    return Err(EnergyError::Parse {
                        path: unit_path,
                        text: unit.trim().to_string(),
                        what: "the unit Joules",
                    });
                }
            }
            events.push(PowerEvent {
                name: name.to_string(),
                config,
                scale,
            });
        }
        let find = |n: &str| events.iter().position(|e| e.name == n);
        let mut selected: Vec<usize> = find("energy-pkg")
            .or_else(|| find("energy-psys"))
            .into_iter()
            .collect();
        if selected.is_empty() {
            return Err(pmu_error(
                &dir.join("events"),
                "the power PMU has neither energy-pkg nor energy-psys",
            ));
        }
        if include_ram {
            selected.extend(find("energy-ram"));
        }
        let cpus = package_cpus(sys_root, &dir)?;
        Ok(Self {
            dir,
            pmu_type,
            events,
            selected,
            cpus,
        })
    }

    /// The summed events.
    pub fn selected_events(&self) -> impl Iterator<Item = &PowerEvent> {
        self.selected.iter().map(|&i| &self.events[i])
    }

    /// The CPUs an event is read on: one per package, except `energy-psys`, which covers the
    /// whole platform and is read once (on a second package it would count twice, and on some
    /// multi-socket parts it reads 0 there).
    pub fn cpus_for(&self, event: &PowerEvent) -> &[u32] {
        if event.name == "energy-psys" {
            &self.cpus[..self.cpus.len().min(1)]
        } else {
            &self.cpus
        }
    }
}

/// Parse a number as sysfs writes it: decimal, or hexadecimal with `0x`.
fn parse_num(text: &str, path: &Path, what: &'static str) -> Result<u64, EnergyError> {
    let t = text.trim();
    let parsed = match t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => t.parse(),
    };
    parsed.map_err(|_| EnergyError::Parse {
        path: path.to_path_buf(),
        text: t.to_string(),
        what,
    })
}

/// `event=0x02[,term=value...]` into a config value, each term placed by `format/<term>`
/// (`config:LO-HI` or `config:BIT`). Without a format file, `event` is the low bits (as on every
/// power PMU so far).
pub fn parse_config(text: &str, path: &Path, pmu_dir: &Path) -> Result<u64, EnergyError> {
    let bad = |what: &'static str| EnergyError::Parse {
        path: path.to_path_buf(),
        text: text.trim().to_string(),
        what,
    };
    let mut config = 0u64;
    let mut any = false;
    for term in text.trim().split(',').filter(|t| !t.is_empty()) {
        let (name, value) = term
            .split_once('=')
            .ok_or_else(|| bad("perf event terms (name=value)"))?;
        let value = parse_num(value, path, "a perf event term value")?;
        let fmt_path = pmu_dir.join("format").join(name.trim());
        let (lo, hi) = if fmt_path.exists() {
            parse_format(&read_text(&fmt_path)?, &fmt_path)?
        } else if name.trim() == "event" {
            (0, 63)
        } else {
            return Err(bad("perf event terms with a format file for each"));
        };
        let width = hi - lo + 1;
        if width < 64 && value >> width != 0 {
            return Err(bad("perf event terms that fit their format bits"));
        }
        config |= value << lo;
        any = true;
    }
    if !any {
        return Err(bad("perf event terms (event=0x..)"));
    }
    Ok(config)
}

/// `config:0-7` or `config:5` into the bit range; other fields (config1, split ranges) are not
/// used by power PMUs and are refused.
fn parse_format(text: &str, path: &Path) -> Result<(u32, u32), EnergyError> {
    let bad = || EnergyError::Parse {
        path: path.to_path_buf(),
        text: text.trim().to_string(),
        what: "a perf format (config:LO-HI)",
    };
    let bits = text.trim().strip_prefix("config:").ok_or_else(bad)?;
    let (lo, hi) = match bits.split_once('-') {
        Some((lo, hi)) => (
            lo.parse().map_err(|_| bad())?,
            hi.parse().map_err(|_| bad())?,
        ),
        None => {
            let b = bits.parse().map_err(|_| bad())?;
            (b, b)
        }
    };
    if lo > hi || hi > 63 {
        return Err(bad());
    }
    Ok((lo, hi))
}

/// Parse a CPU list such as `0,18` or `0-3,8`.
pub fn parse_cpu_list(text: &str, path: &Path) -> Result<Vec<u32>, EnergyError> {
    let bad = || EnergyError::Parse {
        path: path.to_path_buf(),
        text: text.trim().to_string(),
        what: "a CPU list",
    };
    let mut cpus = Vec::new();
    for part in text.trim().split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (u32, u32) =
                    (a.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?);
                if a > b {
                    return Err(bad());
                }
                cpus.extend(a..=b);
            }
            None => cpus.push(part.parse().map_err(|_| bad())?),
        }
    }
    if cpus.is_empty() {
        return Err(bad());
    }
    Ok(cpus)
}

/// One CPU per package: the PMU's `cpumask`, else the lowest CPU of each package.
fn package_cpus(sys_root: &Path, pmu_dir: &Path) -> Result<Vec<u32>, EnergyError> {
    let mask = pmu_dir.join("cpumask");
    if mask.exists() {
        return parse_cpu_list(&read_text(&mask)?, &mask);
    }
    let cpu_dir = sys_root.join("devices/system/cpu");
    let entries = std::fs::read_dir(&cpu_dir).map_err(|source| EnergyError::Io {
        path: cpu_dir.clone(),
        source,
        hint: "",
    })?;
    let mut first: std::collections::BTreeMap<u64, u32> = Default::default();
    for e in entries.filter_map(Result::ok) {
        let name = e.file_name().to_string_lossy().to_string();
        let Some(cpu) = name.strip_prefix("cpu").and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        let pkg_path = e.path().join("topology/physical_package_id");
        let Ok(text) = super::read_text(&pkg_path) else {
            continue; // an offline CPU has no topology
        };
        let pkg = parse_num(&text, &pkg_path, "a package id")?;
        let slot = first.entry(pkg).or_insert(cpu);
        *slot = (*slot).min(cpu);
    }
    if first.is_empty() {
        return Err(pmu_error(
            &cpu_dir,
            "no cpumask for the power PMU and no CPU with topology/physical_package_id",
        ));
    }
    let mut cpus: Vec<u32> = first.into_values().collect();
    cpus.sort_unstable();
    Ok(cpus)
}

/// Joules between two counts of one event.
pub fn counts_to_joules(before: u64, after: u64, scale: f64) -> f64 {
    after.wrapping_sub(before) as f64 * scale
}

/// `struct perf_event_attr` up to `PERF_ATTR_SIZE_VER0` (64 bytes), which every kernel with
/// perf accepts; the fields after it stay zero. libc does not define this struct.
#[repr(C)]
#[derive(Default)]
struct PerfEventAttrV0 {
    type_: u32,
    size: u32,
    config: u64,
    sample_period: u64,
    sample_type: u64,
    read_format: u64,
    /// Bit field: disabled, inherit, pinned, ...; all zero: counting from the open.
    flags: u64,
    wakeup_events: u32,
    bp_type: u32,
    config1: u64,
}

const PERF_FLAG_FD_CLOEXEC: libc::c_ulong = 8;

/// Open one counting event on `cpu` for all processes. Public so that the root tests can check
/// the attribute layout and the read path with a software event on machines without the PMU.
pub fn perf_event_open(pmu_type: u32, config: u64, cpu: u32) -> std::io::Result<OwnedFd> {
    let attr = PerfEventAttrV0 {
        type_: pmu_type,
        size: std::mem::size_of::<PerfEventAttrV0>() as u32,
        config,
        ..Default::default()
    };
    // SAFETY: perf_event_open reads `attr.size` bytes from a valid, initialized struct; pid -1
    // with a CPU counts everything on that CPU; no group.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_perf_event_open,
            &attr as *const PerfEventAttrV0,
            -1 as libc::pid_t,
            cpu as libc::c_int,
            -1 as libc::c_int,
            PERF_FLAG_FD_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the syscall returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

fn open_hint(e: &std::io::Error) -> &'static str {
    match e.raw_os_error() {
        Some(libc::EACCES) | Some(libc::EPERM) => {
            " (system-wide perf events need CAP_PERFMON or kernel.perf_event_paranoid <= 0)"
        }
        Some(libc::ENOENT) | Some(libc::EINVAL) => {
            " (the kernel does not accept this PMU type and event)"
        }
        Some(libc::ENODEV) => " (the CPU is offline or outside the PMU's cpumask)",
        _ => "",
    }
}

struct Counter {
    file: File,
    scale: f64,
    last: u64,
}

impl Counter {
    fn read(&mut self) -> std::io::Result<u64> {
        let mut buf = [0u8; 8];
        // With read_format 0 a read returns the 64-bit count.
        self.file.read_exact(&mut buf)?;
        Ok(u64::from_ne_bytes(buf))
    }
}

/// An [`EnergyMeter`] over the perf power PMU.
pub struct PerfPowerMeter {
    pmu: PowerPmu,
    counters: Vec<Counter>,
}

impl std::fmt::Debug for PerfPowerMeter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PerfPowerMeter")
            .field("pmu", &self.pmu)
            .field("counters", &self.counters.len())
            .finish()
    }
}

impl PerfPowerMeter {
    /// Discover the PMU and open the selected events on one CPU per package.
    pub fn open(sys_root: &Path, include_ram: bool) -> Result<Self, EnergyError> {
        let pmu = PowerPmu::discover(sys_root, include_ram)?;
        let mut counters = Vec::new();
        for ev in pmu.selected_events() {
            for &cpu in pmu.cpus_for(ev) {
                let fd = perf_event_open(pmu.pmu_type, ev.config, cpu).map_err(|source| {
                    EnergyError::PerfOpen {
                        event: ev.name.clone(),
                        cpu,
                        hint: open_hint(&source),
                        source,
                    }
                })?;
                let mut c = Counter {
                    file: File::from(fd),
                    scale: ev.scale,
                    last: 0,
                };
                c.last = c.read().map_err(|source| EnergyError::PerfOpen {
                    event: ev.name.clone(),
                    cpu,
                    hint: "",
                    source,
                })?;
                counters.push(c);
            }
        }
        Ok(Self { pmu, counters })
    }

    pub fn pmu(&self) -> &PowerPmu {
        &self.pmu
    }
}

impl EnergyMeter for PerfPowerMeter {
    fn source(&self) -> EnergySource {
        EnergySource::PerfPower
    }

    fn read(&mut self) -> Result<EnergyReading, EnergyError> {
        // Read every counter before moving any forward: a failure part-way must not drop the
        // energy of the counters already read from the next interval.
        let mut now = Vec::with_capacity(self.counters.len());
        for c in &mut self.counters {
            now.push(c.read().map_err(|source| EnergyError::Io {
                path: self.pmu.dir.clone(),
                source,
                hint: " (reading a perf power counter)",
            })?);
        }
        let mut parts = Vec::with_capacity(self.counters.len());
        for (c, now) in self.counters.iter_mut().zip(now) {
            parts.push(counts_to_joules(c.last, now, c.scale));
            c.last = now;
        }
        Ok(EnergyReading {
            joules: parts.iter().sum(),
            source: EnergySource::PerfPower,
            parts,
        })
    }

    fn domains(&self) -> Vec<String> {
        self.pmu
            .selected_events()
            .flat_map(|e| {
                self.pmu
                    .cpus_for(e)
                    .iter()
                    .map(move |cpu| format!("{}:cpu{cpu}", e.name))
            })
            .collect()
    }

    fn packages(&self) -> usize {
        self.pmu.cpus.len()
    }
}
