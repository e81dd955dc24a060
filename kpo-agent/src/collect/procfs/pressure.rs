//! /proc/pressure/{cpu,memory,io}: pressure stall information (PSI).
//!
//! ```text
//! some avg10=0.77 avg60=1.80 avg300=7.47 total=166104698
//! full avg10=0.00 avg60=0.00 avg300=0.00 total=0
//! ```
//! `some`: share of time at least one task was stalled on the resource; `full`: share of time all
//! non-idle tasks were. The averages are percentages; `total` is cumulative stall time in
//! microseconds. The `full` line of `cpu` exists only from Linux 5.13.
//!
//! PSI can be compiled out or turned off at boot (`psi=0`); the kernel then creates no
//! /proc/pressure directory. That is a configuration, not a failure, so it reads as `None`.
use std::io::ErrorKind;

use serde::Serialize;

use crate::kernel_file::limit;

use super::{
    fields::{finite_f64, number, numbered_lines},
    read_parsed, Parsed, ProcError, ProcRoot,
};

/// The parser cannot know which of the three files it was given; `read_pressure` relabels.
const PATH: &str = "/proc/pressure";

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct PressureLine {
    pub avg10: f64,
    pub avg60: f64,
    pub avg300: f64,
    pub total_us: u64,
}

/// One /proc/pressure file. A line that does not parse is `None`, with an error beside it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct PressureFile {
    pub some: Option<PressureLine>,
    /// Absent for `cpu` before Linux 5.13.
    pub full: Option<PressureLine>,
}

/// Each file on its own: one that cannot be read or parsed loses only its own resource.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Pressure {
    pub cpu: Option<PressureFile>,
    pub memory: Option<PressureFile>,
    pub io: Option<PressureFile>,
}

/// A bad `some` line loses `some`, a bad `full` line loses `full`. A missing `some` line is an
/// error (every kernel with PSI prints it); a missing `full` line is not (`cpu` before 5.13).
pub fn parse_pressure(text: &str) -> Parsed<PressureFile> {
    let mut file = PressureFile {
        some: None,
        full: None,
    };
    let mut errors = Vec::new();
    let mut some_seen = false;
    for (line_no, line) in numbered_lines(text) {
        let mut tokens = line.split_whitespace();
        let slot = match tokens.next() {
            Some("some") => {
                some_seen = true;
                &mut file.some
            }
            Some("full") => &mut file.full,
            _ => continue,
        };
        *slot = parse_line(line_no, tokens).map_err(|e| errors.push(e)).ok();
    }
    if !some_seen {
        errors.push(ProcError::parse(PATH, 0, "no `some` line"));
    }
    Parsed::new(file, errors)
}

/// Reads the three files; `None` when the kernel has no /proc/pressure (PSI off), which is not
/// an error.
pub fn read_pressure(root: &ProcRoot) -> Parsed<Option<Pressure>> {
    let dir = root.path("pressure");
    match std::fs::metadata(&dir) {
        Err(e) if e.kind() == ErrorKind::NotFound => return Parsed::new(None, Vec::new()),
        Err(source) => {
            let error = ProcError::Io {
                path: dir.display().to_string(),
                source,
            };
            return Parsed::new(None, vec![error]);
        }
        Ok(_) => {}
    }
    let mut errors = Vec::new();
    let pressure = Pressure {
        cpu: read_file(root, "pressure/cpu", &mut errors),
        memory: read_file(root, "pressure/memory", &mut errors),
        io: read_file(root, "pressure/io", &mut errors),
    };
    Parsed::new(Some(pressure), errors)
}

fn read_file(root: &ProcRoot, rel: &str, errors: &mut Vec<ProcError>) -> Option<PressureFile> {
    match read_parsed(root, rel, limit::FIXED, parse_pressure) {
        Ok(parsed) => Some(parsed.keep(errors)),
        Err(e) => {
            errors.push(e);
            None
        }
    }
}

/// `avg10=0.77 avg60=1.80 avg300=7.47 total=166104698`; unknown `key=value` pairs are ignored.
fn parse_line<'a>(
    line_no: usize,
    tokens: impl Iterator<Item = &'a str>,
) -> Result<PressureLine, ProcError> {
    let (mut avg10, mut avg60, mut avg300, mut total) = (None, None, None, None);
    for token in tokens {
        let Some((key, value)) = token.split_once('=') else {
            return Err(ProcError::parse(
                PATH,
                line_no,
                format!("expected key=value, found {token:?}"),
            ));
        };
        match key {
            "avg10" => avg10 = Some(finite_f64(PATH, line_no, key, value)?),
            "avg60" => avg60 = Some(finite_f64(PATH, line_no, key, value)?),
            "avg300" => avg300 = Some(finite_f64(PATH, line_no, key, value)?),
            "total" => total = Some(number(PATH, line_no, key, value)?),
            _ => {}
        }
    }
    let missing = |key: &str| ProcError::parse(PATH, line_no, format!("no {key}="));
    Ok(PressureLine {
        avg10: avg10.ok_or_else(|| missing("avg10"))?,
        avg60: avg60.ok_or_else(|| missing("avg60"))?,
        avg300: avg300.ok_or_else(|| missing("avg300"))?,
        total_us: total.ok_or_else(|| missing("total"))?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Captured on the build machine (Linux 6.18): /proc/pressure/cpu and /proc/pressure/io.
    const REAL_CPU: &str = "\
some avg10=0.77 avg60=1.80 avg300=7.47 total=166104698
full avg10=0.00 avg60=0.00 avg300=0.00 total=0
";
    const REAL_IO: &str = "\
some avg10=0.04 avg60=0.22 avg300=0.12 total=6418941
full avg10=0.03 avg60=0.18 avg300=0.09 total=5164702
";

    #[test]
    fn parses_the_real_files() {
        let cpu = parse_pressure(REAL_CPU).strict().unwrap();
        assert_eq!(
            cpu.some,
            Some(PressureLine {
                avg10: 0.77,
                avg60: 1.80,
                avg300: 7.47,
                total_us: 166104698
            })
        );
        let io = parse_pressure(REAL_IO).strict().unwrap();
        assert_eq!(
            io.full.map(|f| (f.avg10, f.total_us)),
            Some((0.03, 5164702))
        );
    }

    #[test]
    fn cpu_before_5_13_has_no_full_line() {
        let old = "some avg10=0.77 avg60=1.80 avg300=7.47 total=166104698\n";
        assert_eq!(parse_pressure(old).strict().unwrap().full, None);
    }

    #[test]
    fn unknown_lines_and_keys_are_ignored() {
        let text = "some avg10=0.77 avg60=1.80 avg300=7.47 total=166104698 avg1=3.0\nhalf x\n";
        let file = parse_pressure(text).strict().unwrap();
        assert_eq!(file.some.map(|s| s.total_us), Some(166104698));
    }

    #[test]
    fn malformed_values_are_errors() {
        let strict = |text: &str| parse_pressure(text).strict().unwrap_err();
        let e = strict(&REAL_IO.replace("total=5164702", "total=51x"));
        assert_eq!(
            e.to_string(),
            "/proc/pressure line 2: total: \"51x\" is not a valid number"
        );
        let e = strict("some avg10=0.77 avg60=1.80 total=1\n");
        assert_eq!(e.to_string(), "/proc/pressure line 1: no avg300=");
        let e = strict("some avg10 0.77\n");
        assert!(e.to_string().contains("key=value"), "{e}");
        assert_eq!(strict("").to_string(), "/proc/pressure: no `some` line");
    }

    #[test]
    fn a_bad_line_loses_only_itself() {
        let Parsed { value, errors } =
            parse_pressure(&REAL_IO.replace("total=5164702", "total=51x"));
        assert_eq!(errors.len(), 1);
        assert_eq!(value.full, None);
        assert_eq!(value.some.map(|s| s.total_us), Some(6418941));
    }

    #[test]
    fn no_pressure_directory_means_psi_is_off() {
        let dir = tempfile::tempdir().unwrap();
        let root = ProcRoot(dir.path().to_path_buf());
        let off = read_pressure(&root);
        assert_eq!((off.value, off.errors.len()), (None, 0));

        std::fs::create_dir(dir.path().join("pressure")).unwrap();
        std::fs::write(dir.path().join("pressure/cpu"), REAL_CPU).unwrap();
        std::fs::write(dir.path().join("pressure/memory"), REAL_CPU).unwrap();
        let Parsed { value, errors } = read_pressure(&root);
        assert_eq!(errors.len(), 1);
        assert!(
            errors[0].path().ends_with("pressure/io"),
            "a missing file inside is an error: {}",
            errors[0]
        );
        let value = value.unwrap();
        assert_eq!(value.io, None);
        assert_eq!(
            value.memory.and_then(|m| m.some).map(|s| s.total_us),
            Some(166104698),
            "the other files are still read"
        );
        std::fs::write(dir.path().join("pressure/io"), "some avg10=x\n").unwrap();
        let errors = read_pressure(&root).errors;
        assert!(
            errors[0].to_string().contains("pressure/io line 1"),
            "{}",
            errors[0]
        );
        std::fs::write(dir.path().join("pressure/io"), REAL_IO).unwrap();
        let io = read_pressure(&root).strict().unwrap().unwrap().io.unwrap();
        assert_eq!(io.some.map(|s| s.total_us), Some(6418941));
    }
}
