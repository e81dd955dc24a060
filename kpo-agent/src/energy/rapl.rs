//! RAPL energy counters through powercap sysfs.
//!
//! Zones live at `<sys_root>/class/powercap/intel-rapl:<N>` (top level, one per package, plus
//! `psys` on some client parts) and `intel-rapl:<N>:<M>` (subzones: core, uncore, dram). Each has
//! `name`, `energy_uj` (a counter in µJ that wraps to 0 after `max_energy_range_uj`) and
//! `max_energy_range_uj`. Xeon 6 (Granite Rapids, Sierra Forest) reaches the same counters
//! through TPMI instead of MSRs; its mainline driver (`intel_rapl_tpmi`, Linux 6.5+) registers the
//! same control type, `intel-rapl`, so its zones are found here too. `intel-rapl-mmio:*` repeats
//! the MSR package zone and is not read.
//!
//! Which zones are summed: the top-level `package-*` zones (they contain core and uncore, so
//! subzones would count twice), plus `dram` zones when asked (DRAM is outside the package). `psys`
//! covers the packages too and is used only when there is no package zone. A counter that went
//! down between two reads wrapped once: the delta is `max - before + after`. Reads must therefore be
//! closer together than one wrap period: about 4 minutes for AMD's 65 kJ range at 280 W, tens of
//! minutes for Intel's 262 kJ. The agent reads at every tick ([`super::CheckedMeter`]) and refuses
//! a reading over an interval long enough for two wraps at 1 kW.

use std::path::{Path, PathBuf};

use super::{read_text, read_u64, EnergyError, EnergyMeter, EnergyReading, EnergySource};

/// One powercap zone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RaplZone {
    /// Directory name, e.g. `intel-rapl:0`.
    pub id: String,
    /// Contents of `name`, e.g. `package-0`.
    pub name: String,
    pub path: PathBuf,
    pub max_energy_range_uj: u64,
}

/// Counter values of the selected zones at one instant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RaplSnapshot {
    pub energy_uj: Vec<u64>,
}

/// Energy counted between two reads of one counter that wraps after `max_range` (the crate's one
/// wrapping delta, [`crate::counter::wrapping`]).
pub fn counter_delta(before: u64, after: u64, max_range: u64) -> u64 {
    crate::counter::wrapping(before, after, max_range)
}

/// The selected RAPL zones under a sysfs root.
#[derive(Debug, Clone)]
pub struct RaplReader {
    zones: Vec<RaplZone>,
}

impl RaplReader {
    /// Find zones under `<sys_root>/class/powercap`.
    pub fn discover(sys_root: &Path, include_dram: bool) -> Result<Self, EnergyError> {
        let dir = sys_root.join("class/powercap");
        let entries = std::fs::read_dir(&dir).map_err(|source| EnergyError::Io {
            path: dir.clone(),
            source,
            hint: " (no powercap: no RAPL on this machine or VM)",
        })?;
        // A zone's name is needed to choose it; its range, only once chosen. A subzone's name is
        // needed only to find `dram`: what cannot be read of a zone that would not be used
        // (a subzone without DRAM wanted, psys beside packages) does not stop discovery.
        let mut all: Vec<(String, PathBuf, Result<String, EnergyError>)> = Vec::new();
        for e in entries.filter_map(Result::ok) {
            let id = e.file_name().to_string_lossy().to_string();
            let Some(rest) = id.strip_prefix("intel-rapl:") else {
                continue;
            };
            if rest.is_empty() || !rest.split(':').all(|p| p.parse::<u32>().is_ok()) {
                continue;
            }
            let path = e.path();
            let name = read_text(&path.join("name")).map(|n| n.trim().to_string());
            all.push((id, path, name));
        }
        all.sort_by(|a, b| a.0.cmp(&b.0));
        let top = |id: &str| id.matches(':').count() == 1;
        // A top-level zone whose name cannot be read may be a package: summing the others would
        // report less energy than was used.
        let mut named = Vec::new();
        for (id, path, name) in all {
            match name {
                Ok(name) => named.push((id, path, name)),
                Err(e) if top(&id) || include_dram => return Err(e),
                Err(_) => {}
            }
        }
        let chosen = |want: &dyn Fn(&str, &str) -> bool| -> Vec<(String, PathBuf, String)> {
            named
                .iter()
                .filter(|(id, _, name)| want(id, name))
                .cloned()
                .collect()
        };
        let mut picked = chosen(&|id, name| top(id) && name.starts_with("package"));
        if picked.is_empty() {
            picked = chosen(&|id, name| top(id) && name == "psys");
        }
        if picked.is_empty() {
            return Err(EnergyError::NoZones(dir));
        }
        if include_dram {
            picked.extend(chosen(&|_, name| name == "dram"));
        }
        let mut zones = Vec::new();
        for (id, path, name) in picked {
            let max = read_u64(&path.join("max_energy_range_uj"), "a range in µJ")?;
            if max == 0 {
                // Without it a wrap cannot be told from a reset, and every reading could be one.
                return Err(EnergyError::NoRange(path.join("max_energy_range_uj")));
            }
            zones.push(RaplZone {
                id,
                name,
                path,
                max_energy_range_uj: max,
            });
        }
        Ok(Self { zones })
    }

    pub fn zones(&self) -> &[RaplZone] {
        &self.zones
    }

    pub fn snapshot(&self) -> Result<RaplSnapshot, EnergyError> {
        let energy_uj = self
            .zones
            .iter()
            .map(|z| read_u64(&z.path.join("energy_uj"), "an energy counter in µJ"))
            .collect::<Result<_, _>>()?;
        Ok(RaplSnapshot { energy_uj })
    }

    /// Joules used between two snapshots of this reader, with wrap-around.
    pub fn joules_between(&self, before: &RaplSnapshot, after: &RaplSnapshot) -> f64 {
        self.zone_joules_between(before, after).iter().sum()
    }

    /// Each zone's joules between two snapshots, with wrap-around.
    pub fn zone_joules_between(&self, before: &RaplSnapshot, after: &RaplSnapshot) -> Vec<f64> {
        self.zones
            .iter()
            .zip(before.energy_uj.iter().zip(&after.energy_uj))
            .map(|(z, (&b, &a))| counter_delta(b, a, z.max_energy_range_uj) as f64 / 1e6)
            .collect()
    }
}

/// An [`EnergyMeter`] over RAPL.
#[derive(Debug, Clone)]
pub struct RaplMeter {
    reader: RaplReader,
    last: RaplSnapshot,
}

impl RaplMeter {
    /// Discover zones and take the first snapshot.
    pub fn open(sys_root: &Path, include_dram: bool) -> Result<Self, EnergyError> {
        let reader = RaplReader::discover(sys_root, include_dram)?;
        let last = reader.snapshot()?;
        Ok(Self { reader, last })
    }

    pub fn reader(&self) -> &RaplReader {
        &self.reader
    }
}

impl EnergyMeter for RaplMeter {
    fn source(&self) -> EnergySource {
        EnergySource::Rapl
    }

    fn read(&mut self) -> Result<EnergyReading, EnergyError> {
        let now = self.reader.snapshot()?;
        let parts = self.reader.zone_joules_between(&self.last, &now);
        self.last = now;
        Ok(EnergyReading {
            joules: parts.iter().sum(),
            source: EnergySource::Rapl,
            parts,
        })
    }

    fn domains(&self) -> Vec<String> {
        self.reader.zones.iter().map(|z| z.name.clone()).collect()
    }

    fn wrap_joules(&self) -> Option<f64> {
        self.reader
            .zones
            .iter()
            .map(|z| z.max_energy_range_uj as f64 / 1e6)
            .min_by(f64::total_cmp)
    }

    fn packages(&self) -> usize {
        // DRAM zones sit beside their package, not beyond it.
        self.reader
            .zones
            .iter()
            .filter(|z| z.name != "dram")
            .count()
    }
}
