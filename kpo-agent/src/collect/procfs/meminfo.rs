//! /proc/meminfo: the memory levels the agent reports, in bytes (the file prints kB, which are
//! KiB: the kernel multiplies pages by 4 for a 4 KiB page).
use serde::Serialize;

use crate::kernel_file::limit;

use super::{
    fields::{number, numbered_lines},
    read_with, ProcError, ProcRoot,
};

const PATH: &str = "/proc/meminfo";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Meminfo {
    pub mem_total_bytes: u64,
    pub mem_free_bytes: u64,
    /// The kernel's estimate of memory available for new work without swapping. Absent before
    /// Linux 3.14.
    pub mem_available_bytes: Option<u64>,
    pub buffers_bytes: u64,
    pub cached_bytes: u64,
    pub swap_total_bytes: u64,
    pub swap_free_bytes: u64,
    pub dirty_bytes: u64,
}

pub fn parse_meminfo(text: &str) -> Result<Meminfo, ProcError> {
    let mut found: [Option<u64>; KEYS.len()] = [None; KEYS.len()];
    for (line_no, line) in numbered_lines(text) {
        // Lines we do not use are skipped unread: their format is not ours to police.
        let Some((key, rest)) = line.split_once(':') else {
            continue;
        };
        let Some(slot) = KEYS.iter().position(|k| *k == key.trim()) else {
            continue;
        };
        found[slot] = Some(bytes(line_no, key.trim(), rest)?);
    }
    let get = |key: &str| -> Result<u64, ProcError> {
        KEYS.iter()
            .position(|k| *k == key)
            .and_then(|i| found[i])
            .ok_or_else(|| ProcError::parse(PATH, 0, format!("no `{key}` line")))
    };
    Ok(Meminfo {
        mem_total_bytes: get("MemTotal")?,
        mem_free_bytes: get("MemFree")?,
        mem_available_bytes: get("MemAvailable").ok(),
        buffers_bytes: get("Buffers")?,
        cached_bytes: get("Cached")?,
        swap_total_bytes: get("SwapTotal")?,
        swap_free_bytes: get("SwapFree")?,
        dirty_bytes: get("Dirty")?,
    })
}

pub fn read_meminfo(root: &ProcRoot) -> Result<Meminfo, ProcError> {
    read_with(root, "meminfo", limit::FIXED, parse_meminfo)
}

const KEYS: [&str; 8] = [
    "MemTotal",
    "MemFree",
    "MemAvailable",
    "Buffers",
    "Cached",
    "SwapTotal",
    "SwapFree",
    "Dirty",
];

/// `"   24684100 kB"` to bytes. A value without a unit is taken as-is (the kernel prints counts
/// such as `HugePages_Total` that way); any other unit is an error rather than a guess.
fn bytes(line_no: usize, key: &str, rest: &str) -> Result<u64, ProcError> {
    let mut tokens = rest.split_whitespace();
    let value: u64 = match tokens.next() {
        Some(token) => number(PATH, line_no, key, token)?,
        None => {
            return Err(ProcError::parse(
                PATH,
                line_no,
                format!("{key}: missing value"),
            ))
        }
    };
    match tokens.next() {
        None => Ok(value),
        Some("kB") => value.checked_mul(1024).ok_or_else(|| {
            ProcError::parse(
                PATH,
                line_no,
                format!("{key}: {value} kB overflows 64 bits"),
            )
        }),
        Some(unit) => Err(ProcError::parse(
            PATH,
            line_no,
            format!("{key}: unknown unit {unit:?}"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Captured on the build machine (Linux 6.18), trimmed.
    const REAL: &str = "\
MemTotal:       24684100 kB
MemFree:        20938932 kB
MemAvailable:   24187180 kB
Buffers:            7360 kB
Cached:          3341896 kB
SwapCached:            0 kB
Active(anon):       1524 kB
SwapTotal:             0 kB
SwapFree:              0 kB
Zswap:                 0 kB
Dirty:            124552 kB
Writeback:             0 kB
VmallocTotal:   34359738367 kB
HugePages_Total:       0
Hugepagesize:       2048 kB
DirectMap1G:    25165824 kB
";

    #[test]
    fn parses_the_real_file_into_bytes() {
        let m = parse_meminfo(REAL).unwrap();
        assert_eq!(m.mem_total_bytes, 24684100 * 1024);
        assert_eq!(m.mem_free_bytes, 20938932 * 1024);
        assert_eq!(m.mem_available_bytes, Some(24187180 * 1024));
        assert_eq!(
            (m.buffers_bytes, m.cached_bytes),
            (7360 * 1024, 3341896 * 1024)
        );
        assert_eq!((m.swap_total_bytes, m.swap_free_bytes), (0, 0));
        assert_eq!(m.dirty_bytes, 124552 * 1024);
    }

    #[test]
    fn kernels_before_3_14_have_no_mem_available() {
        let m = parse_meminfo(&REAL.replace("MemAvailable:   24187180 kB\n", "")).unwrap();
        assert_eq!(m.mem_available_bytes, None);
    }

    #[test]
    fn unknown_lines_are_ignored_even_if_odd() {
        let text = format!("{REAL}NewThing:  12 MB\nnot a meminfo line\nOther: x kB\n");
        assert_eq!(parse_meminfo(&text).unwrap(), parse_meminfo(REAL).unwrap());
    }

    #[test]
    fn bad_values_are_errors_with_the_line() {
        let e = parse_meminfo(&REAL.replace("20938932 kB", "209389x2 kB")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "/proc/meminfo line 2: MemFree: \"209389x2\" is not a valid number"
        );
        let e = parse_meminfo(&REAL.replace("124552 kB", "124552 MB")).unwrap_err();
        assert!(matches!(e, ProcError::Parse { line: 11, .. }), "{e}");
        let e = parse_meminfo(&REAL.replace("Cached:          3341896 kB", "Cached:")).unwrap_err();
        assert!(e.to_string().contains("Cached: missing value"), "{e}");
        let e = parse_meminfo("MemTotal: 18446744073709551615 kB\n").unwrap_err();
        assert!(e.to_string().contains("overflows"), "{e}");
    }

    #[test]
    fn an_empty_file_is_an_error() {
        assert_eq!(
            parse_meminfo("").unwrap_err().to_string(),
            "/proc/meminfo: no `MemTotal` line"
        );
    }
}
