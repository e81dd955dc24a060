//! Energy sensing: RAPL through powercap sysfs, or a labelled estimate.
//!
//! An [`EnergyMeter`] returns the energy used since its previous read. Every [`EnergyReading`]
//! carries its [`EnergySource`], serialized as `"rapl"` or `"estimated"`, so that every event and
//! metric derived from it can say whether it was measured.
//!
//! - [`rapl::RaplMeter`]: `<sys>/class/powercap/intel-rapl:*/energy_uj`, wrap-around handled with
//!   `max_energy_range_uj`.
//! - [`estimate::EstimatedMeter`]: CPU time from `<proc>/stat` and frequency from cpufreq, through
//!   the documented [`estimate::PowerModel`]; used where no RAPL exists (most VMs).
//!
//! [`open_meter`] picks RAPL when it is readable and falls back to the estimate. The perf `power`
//! PMU is not used yet.

pub mod estimate;
pub mod rapl;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Where an energy figure comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EnergySource {
    /// Measured by RAPL (powercap).
    Rapl,
    /// Modelled from CPU utilization and frequency.
    Estimated,
}

impl EnergySource {
    pub fn as_str(&self) -> &'static str {
        match self {
            EnergySource::Rapl => "rapl",
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
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct EnergyReading {
    pub joules: f64,
    pub source: EnergySource,
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
    #[error("{0}: no per-CPU lines")]
    NoCpus(PathBuf),
}

pub(crate) fn read_text(path: &Path) -> Result<String, EnergyError> {
    std::fs::read_to_string(path).map_err(|source| {
        let hint = if source.kind() == std::io::ErrorKind::PermissionDenied {
            " (energy_uj is readable by root only since Linux 5.10)"
        } else {
            ""
        };
        EnergyError::Io {
            path: path.to_path_buf(),
            source,
            hint,
        }
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
}

/// RAPL under `sys_root` if it is present and readable, else the estimate from `proc_root` and
/// `sys_root` with `model`.
pub fn open_meter(
    sys_root: &Path,
    proc_root: &Path,
    model: estimate::PowerModel,
) -> Result<Box<dyn EnergyMeter + Send>, EnergyError> {
    match rapl::RaplMeter::open(sys_root, false) {
        Ok(m) => Ok(Box::new(m)),
        Err(e) => {
            tracing::info!(error = %e, "RAPL unavailable; energy will be estimated and labelled so");
            Ok(Box::new(estimate::EstimatedMeter::open(
                proc_root, sys_root, model,
            )?))
        }
    }
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
        };
        assert_eq!(
            serde_json::to_string(&r).unwrap(),
            r#"{"joules":1.5,"source":"estimated"}"#
        );
        assert_eq!(EnergySource::Rapl.to_string(), "rapl");
    }
}
