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

use super::{
    fields::{finite_f64, number, numbered_lines},
    read_with, ProcError, ProcRoot,
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

/// One /proc/pressure file.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct PressureFile {
    pub some: PressureLine,
    /// Absent for `cpu` before Linux 5.13.
    pub full: Option<PressureLine>,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Pressure {
    pub cpu: PressureFile,
    pub memory: PressureFile,
    pub io: PressureFile,
}

pub fn parse_pressure(text: &str) -> Result<PressureFile, ProcError> {
    let mut some = None;
    let mut full = None;
    for (line_no, line) in numbered_lines(text) {
        let mut tokens = line.split_whitespace();
        let slot = match tokens.next() {
            Some("some") => &mut some,
            Some("full") => &mut full,
            _ => continue,
        };
        *slot = Some(parse_line(line_no, tokens)?);
    }
    let some = some.ok_or_else(|| ProcError::parse(PATH, 0, "no `some` line"))?;
    Ok(PressureFile { some, full })
}

/// Reads the three files; `Ok(None)` when the kernel has no /proc/pressure (PSI off).
pub fn read_pressure(root: &ProcRoot) -> Result<Option<Pressure>, ProcError> {
    let dir = root.path("pressure");
    match std::fs::metadata(&dir) {
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(ProcError::Io {
                path: dir.display().to_string(),
                source,
            })
        }
        Ok(_) => {}
    }
    Ok(Some(Pressure {
        cpu: read_with(root, "pressure/cpu", parse_pressure)?,
        memory: read_with(root, "pressure/memory", parse_pressure)?,
        io: read_with(root, "pressure/io", parse_pressure)?,
    }))
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
        let cpu = parse_pressure(REAL_CPU).unwrap();
        assert_eq!(
            cpu.some,
            PressureLine {
                avg10: 0.77,
                avg60: 1.80,
                avg300: 7.47,
                total_us: 166104698
            }
        );
        let io = parse_pressure(REAL_IO).unwrap();
        assert_eq!(
            io.full.map(|f| (f.avg10, f.total_us)),
            Some((0.03, 5164702))
        );
    }

    #[test]
    fn cpu_before_5_13_has_no_full_line() {
        let old = "some avg10=0.77 avg60=1.80 avg300=7.47 total=166104698\n";
        assert_eq!(parse_pressure(old).unwrap().full, None);
    }

    #[test]
    fn unknown_lines_and_keys_are_ignored() {
        let text = "some avg10=0.77 avg60=1.80 avg300=7.47 total=166104698 avg1=3.0\nhalf x\n";
        assert_eq!(parse_pressure(text).unwrap().some.total_us, 166104698);
    }

    #[test]
    fn malformed_values_are_errors() {
        let e = parse_pressure(&REAL_IO.replace("total=5164702", "total=51x")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "/proc/pressure line 2: total: \"51x\" is not a valid number"
        );
        let e = parse_pressure("some avg10=0.77 avg60=1.80 total=1\n").unwrap_err();
        assert_eq!(e.to_string(), "/proc/pressure line 1: no avg300=");
        let e = parse_pressure("some avg10 0.77\n").unwrap_err();
        assert!(e.to_string().contains("key=value"), "{e}");
        assert_eq!(
            parse_pressure("").unwrap_err().to_string(),
            "/proc/pressure: no `some` line"
        );
    }

    #[test]
    fn no_pressure_directory_means_psi_is_off() {
        let dir = tempfile::tempdir().unwrap();
        let root = ProcRoot(dir.path().to_path_buf());
        assert_eq!(read_pressure(&root).unwrap(), None);

        std::fs::create_dir(dir.path().join("pressure")).unwrap();
        std::fs::write(dir.path().join("pressure/cpu"), REAL_CPU).unwrap();
        std::fs::write(dir.path().join("pressure/memory"), REAL_CPU).unwrap();
        let e = read_pressure(&root).unwrap_err();
        assert!(
            e.path().ends_with("pressure/io"),
            "a missing file inside is an error: {e}"
        );
        std::fs::write(dir.path().join("pressure/io"), "some avg10=x\n").unwrap();
        let e = read_pressure(&root).unwrap_err();
        assert!(e.to_string().contains("pressure/io line 1"), "{e}");
        std::fs::write(dir.path().join("pressure/io"), REAL_IO).unwrap();
        assert_eq!(
            read_pressure(&root).unwrap().unwrap().io.some.total_us,
            6418941
        );
    }
}
