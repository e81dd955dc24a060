//! CPU frequency limit: `scaling_max_freq` of cpufreq policies, under a configurable sysfs root.
//!
//! Files (kHz): `<root>/devices/system/cpu/cpufreq/policy<N>/{scaling_max_freq, scaling_min_freq,
//! cpuinfo_min_freq, cpuinfo_max_freq}`. The knob's values are in MHz, like the seed study's
//! `freq_mhz`. Bounds are the intersection of the selected policies' `cpuinfo_*` ranges. A write is
//! verified by reading `scaling_max_freq` back; a value below a policy's current
//! `scaling_min_freq` is refused before writing, because the kernel would reject it.

use std::path::{Path, PathBuf};

use super::{ActuateError, Knob};

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
    let text = std::fs::read_to_string(path).map_err(io(path))?;
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
}
