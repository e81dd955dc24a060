//! /proc/schedstat: per-CPU scheduler statistics (Documentation/scheduler/sched-stats.rst).
//!
//! ```text
//! version 15
//! timestamp 4486170100
//! cpu0 0 0 0 0 0 0 59501267037720 16902762382193 1319621004
//! domain0 00,00100001 0 0 0 ...
//! ```
//! Of a `cpuN` line the agent uses the 7th, 8th and 9th numbers: time tasks spent running on the
//! CPU (ns), time tasks spent waiting on its run queue (run delay, ns) and the number of
//! timeslices run. These come from sched_info and keep counting when `kernel.sched_schedstats`
//! is 0, which leaves the first six at zero (as in the capture in the tests). `domainN` lines
//! are ignored.
//!
//! Versions 15 to 17 lay out the `cpu` lines the same way (16 and 17 changed the domain lines).
//! Another version is parsed the same way and flagged in [`Schedstat::version_supported`].
//! The file exists only with CONFIG_SCHEDSTATS; when it is absent, [`read_schedstat`] returns
//! `None`.
use serde::Serialize;

use crate::kernel_file::limit;

use super::{
    fields::{number, numbered_lines},
    read_optional_with, ProcError, ProcRoot,
};

const PATH: &str = "/proc/schedstat";
const SUPPORTED_VERSIONS: std::ops::RangeInclusive<u32> = 15..=17;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct SchedstatCpu {
    pub cpu: u32,
    pub running_ns: u64,
    pub run_delay_ns: u64,
    pub timeslices: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Schedstat {
    pub version: u32,
    /// False when `version` is outside 15..=17: the fields were read from the usual places, but
    /// the format has not been checked against that version.
    pub version_supported: bool,
    pub cpus: Vec<SchedstatCpu>,
}

pub fn parse_schedstat(text: &str) -> Result<Schedstat, ProcError> {
    let mut version = None;
    let mut cpus = Vec::new();
    for (line_no, line) in numbered_lines(text) {
        let mut words = line.split_whitespace();
        let Some(key) = words.next() else { continue };
        if key == "version" {
            let token = words.next().unwrap_or_default();
            version = Some(number::<u32>(PATH, line_no, "version", token)?);
            continue;
        }
        // `cpuN`; `domainN`, `timestamp` and unknown lines are skipped.
        let Some(id) = key
            .strip_prefix("cpu")
            .filter(|id| !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()))
        else {
            continue;
        };
        let fields = words
            .map(|token| number::<u64>(PATH, line_no, key, token))
            .collect::<Result<Vec<_>, _>>()?;
        let [_, _, _, _, _, _, running_ns, run_delay_ns, timeslices, ..] = fields.as_slice() else {
            return Err(ProcError::parse(
                PATH,
                line_no,
                format!("{key}: expected at least 9 numbers, found {}", fields.len()),
            ));
        };
        cpus.push(SchedstatCpu {
            cpu: number(PATH, line_no, "cpu id", id)?,
            running_ns: *running_ns,
            run_delay_ns: *run_delay_ns,
            timeslices: *timeslices,
        });
    }
    // Without the version line there is no telling what the columns mean.
    let version = version.ok_or_else(|| ProcError::parse(PATH, 0, "no `version` line"))?;
    Ok(Schedstat {
        version,
        version_supported: SUPPORTED_VERSIONS.contains(&version),
        cpus,
    })
}

/// `Ok(None)` when the kernel has no /proc/schedstat (CONFIG_SCHEDSTATS off, as on the build
/// machine).
pub fn read_schedstat(root: &ProcRoot) -> Result<Option<Schedstat>, ProcError> {
    read_optional_with(root, "schedstat", limit::PER_CPU, parse_schedstat)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The build machine has no /proc/schedstat; this is a real capture from an Intel Xeon
    /// E5-2690 v2 posted to the kernel mailing list (version 15), domain lines shortened.
    const REAL: &str = "\
version 15
timestamp 4486170100
cpu0 0 0 0 0 0 0 59501267037720 16902762382193 1319621004
domain0 00,00100001 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0
domain1 00,3ff003ff 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0
cpu1 0 0 0 0 0 0 56045879920164 16758983055410 1318489275
domain0 00,00200002 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0
";

    #[test]
    fn parses_the_real_file() {
        let s = parse_schedstat(REAL).unwrap();
        assert_eq!((s.version, s.version_supported), (15, true));
        assert_eq!(
            s.cpus,
            [
                SchedstatCpu {
                    cpu: 0,
                    running_ns: 59501267037720,
                    run_delay_ns: 16902762382193,
                    timeslices: 1319621004
                },
                SchedstatCpu {
                    cpu: 1,
                    running_ns: 56045879920164,
                    run_delay_ns: 16758983055410,
                    timeslices: 1318489275
                },
            ]
        );
    }

    #[test]
    fn version_17_with_named_domains_parses() {
        // 6.x layout: domain lines carry the domain name; extra cpu columns are ignored.
        let text = "version 17\ntimestamp 4295\ncpu0 0 0 5 1 9 3 1000 200 30 77\n\
                    domain0 SMT 00000003 0 0 0 0 0\n";
        let s = parse_schedstat(text).unwrap();
        assert_eq!((s.version, s.version_supported), (17, true));
        assert_eq!(
            s.cpus[0],
            SchedstatCpu {
                cpu: 0,
                running_ns: 1000,
                run_delay_ns: 200,
                timeslices: 30
            }
        );
    }

    #[test]
    fn an_unknown_version_is_parsed_and_flagged() {
        let s = parse_schedstat(&REAL.replace("version 15", "version 18")).unwrap();
        assert_eq!(
            (s.version, s.version_supported, s.cpus.len()),
            (18, false, 2)
        );
    }

    #[test]
    fn malformed_lines_are_errors() {
        let e = parse_schedstat(&REAL.replace("16758983055410", "1675898305541x")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "/proc/schedstat line 6: cpu1: \"1675898305541x\" is not a valid number"
        );
        let e = parse_schedstat("version 15\ncpu0 1 2 3\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "/proc/schedstat line 2: cpu0: expected at least 9 numbers, found 3"
        );
        let e = parse_schedstat("version\n").unwrap_err();
        assert!(matches!(e, ProcError::Parse { line: 1, .. }), "{e}");
    }

    #[test]
    fn an_empty_file_is_an_error_and_a_missing_one_is_none() {
        assert_eq!(
            parse_schedstat("").unwrap_err().to_string(),
            "/proc/schedstat: no `version` line"
        );
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            read_schedstat(&ProcRoot(dir.path().to_path_buf())).unwrap(),
            None
        );
    }
}
