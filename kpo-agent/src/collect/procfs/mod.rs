//! Parsers for the /proc files the agent reads, a [`HostSnapshot`] holding one reading of all of
//! them, and the [`HostMetrics`] computed between two snapshots.
//!
//! Every parser follows the same policy, because these files change between kernel versions:
//! - lines and columns it does not know are ignored (kernels add them);
//! - a number it does use that does not parse is an error naming the file, the 1-based line and
//!   the reason, never a silent zero;
//! - nothing panics on bad input: no unchecked indexing, no overflowing arithmetic.
//!
//! Each source has `parse_x(text)`, which labels errors with the canonical `/proc/...` path, and
//! `read_x(root)`, which reads the file under a [`ProcRoot`] and labels errors with the path it
//! actually read (tests point the root at a temporary tree).
mod deltas;
pub mod diskstats;
mod fields;
pub mod interrupts;
pub mod loadavg;
pub mod meminfo;
mod metrics;
pub mod netstat;
mod per_cpu_sums;
pub mod pressure;
pub mod schedstat;
mod snapshot;
pub mod softirqs;
pub mod softnet;
pub mod stat;
pub mod vmstat;

use std::{
    io::ErrorKind,
    path::{Path, PathBuf},
};

use crate::kernel_file::{self, KernelFileError};

pub use diskstats::{DiskDevice, Diskstats};
pub use interrupts::{InterruptLine, Interrupts};
pub use loadavg::Loadavg;
pub use meminfo::Meminfo;
pub use metrics::HostMetrics;
pub use netstat::NetCounters;
pub use per_cpu_sums::PerCpuSums;
pub use pressure::{Pressure, PressureFile, PressureLine};
pub use schedstat::{Schedstat, SchedstatCpu};
pub use snapshot::{irq_names, HostSnapshot};
pub use softirqs::Softirqs;
pub use softnet::{Softnet, SoftnetCpu};
pub use stat::{CpuJiffies, CpuStat, Stat};
pub use vmstat::Vmstat;

/// Where procfs is mounted: `/proc` in production, a temporary tree in tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcRoot(pub PathBuf);

impl Default for ProcRoot {
    fn default() -> Self {
        Self(PathBuf::from("/proc"))
    }
}

impl ProcRoot {
    /// `rel` is relative to the root, e.g. `"net/netstat"`.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.0.join(rel)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ProcError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// The file holds more than its source can (`/dev/zero`, or the wrong file); see
    /// [`crate::kernel_file::limit`].
    #[error(
        "{path} is larger than {limit} bytes, more than this file can hold; is it the right file?"
    )]
    TooLarge { path: String, limit: usize },
    /// `line` is 1-based; 0 means the problem is with the file as a whole (e.g. a missing line).
    #[error("{path}{}: {reason}", at_line(.line))]
    Parse {
        path: String,
        line: usize,
        reason: String,
    },
}

fn at_line(line: &usize) -> String {
    if *line == 0 {
        String::new()
    } else {
        format!(" line {line}")
    }
}

impl ProcError {
    pub(crate) fn parse(path: &str, line: usize, reason: impl Into<String>) -> Self {
        Self::Parse {
            path: path.to_string(),
            line,
            reason: reason.into(),
        }
    }

    /// The file the error is about.
    pub fn path(&self) -> &str {
        match self {
            Self::Io { path, .. } | Self::TooLarge { path, .. } | Self::Parse { path, .. } => path,
        }
    }

    /// Relabels a parse error with the file actually read (parsers only know the canonical path).
    fn in_file(self, file: &Path) -> Self {
        match self {
            Self::Parse { line, reason, .. } => Self::Parse {
                path: file.display().to_string(),
                line,
                reason,
            },
            other => other,
        }
    }
}

impl From<KernelFileError> for ProcError {
    fn from(e: KernelFileError) -> Self {
        let path = e.path().display().to_string();
        match e {
            KernelFileError::Io { source, .. } => Self::Io { path, source },
            KernelFileError::TooLarge { limit, .. } => Self::TooLarge { path, limit },
            parse @ KernelFileError::Parse { .. } => Self::Parse {
                path,
                line: 0,
                reason: parse.to_string(),
            },
        }
    }
}

/// What a parser kept of a file: the value, with an error for each part it lost. A bad line or
/// field loses only what depends on it; the rest of the file is still used.
#[derive(Debug)]
#[must_use]
pub struct Parsed<T> {
    pub value: T,
    pub errors: Vec<ProcError>,
}

impl<T> Parsed<T> {
    pub(crate) fn new(value: T, errors: Vec<ProcError>) -> Self {
        Self { value, errors }
    }

    /// The value if nothing was lost, else the first error: for callers that need all of it.
    pub fn strict(self) -> Result<T, ProcError> {
        match self.errors.into_iter().next() {
            None => Ok(self.value),
            Some(e) => Err(e),
        }
    }

    /// The value, with the errors moved into `errors`.
    pub fn keep(self, errors: &mut Vec<ProcError>) -> T {
        errors.extend(self.errors);
        self.value
    }

    fn in_file(self, file: &Path) -> Self {
        Self {
            value: self.value,
            errors: self.errors.into_iter().map(|e| e.in_file(file)).collect(),
        }
    }
}

/// Reads `rel` under `root`, at most `limit` bytes (see [`crate::kernel_file::limit`]). Bytes
/// that are not UTF-8 become U+FFFD: the kernel copies names into these files as they are (an
/// interface renamed to `eth\xff` names its IRQs so in /proc/interrupts), and one such name must
/// not lose every number beside it; the numbers and keywords are ASCII.
fn read_text(root: &ProcRoot, rel: &str, limit: usize) -> Result<(PathBuf, String), ProcError> {
    let path = root.path(rel);
    let bytes = kernel_file::read_bytes(&path, limit)?;
    let text = String::from_utf8(bytes)
        .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned());
    Ok((path, text))
}

/// Reads `rel` under `root` and parses it, labelling any error with the real path.
fn read_with<T>(
    root: &ProcRoot,
    rel: &str,
    limit: usize,
    parse: impl FnOnce(&str) -> Result<T, ProcError>,
) -> Result<T, ProcError> {
    let (path, text) = read_text(root, rel, limit)?;
    parse(&text).map_err(|e| e.in_file(&path))
}

/// Like [`read_with`], for parsers that keep what they can of a file ([`Parsed`]). An error
/// reading the file loses all of it.
fn read_parsed<T>(
    root: &ProcRoot,
    rel: &str,
    limit: usize,
    parse: impl FnOnce(&str) -> Parsed<T>,
) -> Result<Parsed<T>, ProcError> {
    let (path, text) = read_text(root, rel, limit)?;
    Ok(parse(&text).in_file(&path))
}

/// Like [`read_with`], for files whose absence means a kernel feature is off (schedstat): a
/// missing file is `Ok(None)`, not an error.
fn read_optional_with<T>(
    root: &ProcRoot,
    rel: &str,
    limit: usize,
    parse: impl FnOnce(&str) -> Result<T, ProcError>,
) -> Result<Option<T>, ProcError> {
    match read_with(root, rel, limit, parse) {
        Err(ProcError::Io { source, .. }) if source.kind() == ErrorKind::NotFound => Ok(None),
        other => other.map(Some),
    }
}

/// [`read_parsed`] for files whose absence means a kernel feature is off: `Ok(None)` then.
fn read_optional_parsed<T>(
    root: &ProcRoot,
    rel: &str,
    limit: usize,
    parse: impl FnOnce(&str) -> Parsed<T>,
) -> Result<Option<Parsed<T>>, ProcError> {
    match read_parsed(root, rel, limit, parse) {
        Err(ProcError::Io { source, .. }) if source.kind() == ErrorKind::NotFound => Ok(None),
        other => other.map(Some),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_the_file_and_line() {
        let e = ProcError::parse("/proc/stat", 3, "bad");
        assert_eq!(e.to_string(), "/proc/stat line 3: bad");
        let whole = ProcError::parse("/proc/stat", 0, "no `ctxt` line");
        assert_eq!(whole.to_string(), "/proc/stat: no `ctxt` line");
        assert_eq!(whole.path(), "/proc/stat");
    }

    #[test]
    fn read_relabels_parse_errors_with_the_real_path() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("loadavg"), "x\n").unwrap();
        let root = ProcRoot(dir.path().to_path_buf());
        let e = loadavg::read_loadavg(&root).unwrap_err();
        assert_eq!(e.path(), dir.path().join("loadavg").display().to_string());
        let missing = meminfo::read_meminfo(&root).unwrap_err();
        assert!(matches!(missing, ProcError::Io { .. }), "{missing}");
        assert!(missing.to_string().contains("meminfo"), "{missing}");
    }

    #[test]
    fn default_root_is_proc() {
        assert_eq!(
            ProcRoot::default().path("net/snmp"),
            PathBuf::from("/proc/net/snmp")
        );
    }
}
