//! /proc/meminfo: the memory levels the agent reports, in bytes (the file prints kB, which are
//! KiB: the kernel multiplies pages by 4 for a 4 KiB page).
use serde::Serialize;

use crate::kernel_file::limit;

use super::{
    fields::{number, numbered_lines},
    read_parsed, Parsed, ProcError, ProcRoot,
};

const PATH: &str = "/proc/meminfo";

/// Each field is `None` when its line is missing or does not parse (the error is returned beside
/// it): a bad `Dirty` line loses only `dirty_bytes`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Meminfo {
    pub mem_total_bytes: Option<u64>,
    pub mem_free_bytes: Option<u64>,
    /// The kernel's estimate of memory available for new work without swapping. Absent before
    /// Linux 3.14 (not an error).
    pub mem_available_bytes: Option<u64>,
    pub buffers_bytes: Option<u64>,
    pub cached_bytes: Option<u64>,
    pub swap_total_bytes: Option<u64>,
    pub swap_free_bytes: Option<u64>,
    pub dirty_bytes: Option<u64>,
}

pub fn parse_meminfo(text: &str) -> Parsed<Meminfo> {
    let mut found: [Option<u64>; KEYS.len()] = [None; KEYS.len()];
    let mut seen = [false; KEYS.len()];
    let mut errors = Vec::new();
    for (line_no, line) in numbered_lines(text) {
        // Lines we do not use are skipped unread: their format is not ours to police.
        let Some((key, rest)) = line.split_once(':') else {
            continue;
        };
        let Some(slot) = KEYS.iter().position(|k| *k == key.trim()) else {
            continue;
        };
        seen[slot] = true;
        found[slot] = bytes(line_no, key.trim(), rest)
            .map_err(|e| errors.push(e))
            .ok();
    }
    for (key, seen) in KEYS.iter().zip(seen) {
        // MemAvailable is new in 3.14: its absence is not an error.
        if !seen && *key != "MemAvailable" {
            errors.push(ProcError::parse(PATH, 0, format!("no `{key}` line")));
        }
    }
    let [mem_total_bytes, mem_free_bytes, mem_available_bytes, buffers_bytes, cached_bytes, swap_total_bytes, swap_free_bytes, dirty_bytes] =
        found;
    Parsed::new(
        Meminfo {
            mem_total_bytes,
            mem_free_bytes,
            mem_available_bytes,
            buffers_bytes,
            cached_bytes,
            swap_total_bytes,
            swap_free_bytes,
            dirty_bytes,
        },
        errors,
    )
}

pub fn read_meminfo(root: &ProcRoot) -> Result<Parsed<Meminfo>, ProcError> {
    read_parsed(root, "meminfo", limit::FIXED, parse_meminfo)
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

    fn strict(text: &str) -> Result<Meminfo, ProcError> {
        parse_meminfo(text).strict()
    }

    #[test]
    fn parses_the_real_file_into_bytes() {
        let m = strict(REAL).unwrap();
        assert_eq!(m.mem_total_bytes, Some(24684100 * 1024));
        assert_eq!(m.mem_free_bytes, Some(20938932 * 1024));
        assert_eq!(m.mem_available_bytes, Some(24187180 * 1024));
        assert_eq!(
            (m.buffers_bytes, m.cached_bytes),
            (Some(7360 * 1024), Some(3341896 * 1024))
        );
        assert_eq!((m.swap_total_bytes, m.swap_free_bytes), (Some(0), Some(0)));
        assert_eq!(m.dirty_bytes, Some(124552 * 1024));
    }

    #[test]
    fn kernels_before_3_14_have_no_mem_available() {
        let m = strict(&REAL.replace("MemAvailable:   24187180 kB\n", "")).unwrap();
        assert_eq!(m.mem_available_bytes, None);
    }

    #[test]
    fn unknown_lines_are_ignored_even_if_odd() {
        let text = format!("{REAL}NewThing:  12 MB\nnot a meminfo line\nOther: x kB\n");
        assert_eq!(strict(&text).unwrap(), strict(REAL).unwrap());
    }

    #[test]
    fn bad_values_are_errors_with_the_line() {
        let e = strict(&REAL.replace("20938932 kB", "209389x2 kB")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "/proc/meminfo line 2: MemFree: \"209389x2\" is not a valid number"
        );
        let e = strict(&REAL.replace("124552 kB", "124552 MB")).unwrap_err();
        assert!(matches!(e, ProcError::Parse { line: 11, .. }), "{e}");
        let e = strict(&REAL.replace("Cached:          3341896 kB", "Cached:")).unwrap_err();
        assert!(e.to_string().contains("Cached: missing value"), "{e}");
        let e = strict("MemTotal: 18446744073709551615 kB\n").unwrap_err();
        assert!(e.to_string().contains("overflows"), "{e}");
    }

    #[test]
    fn a_bad_line_loses_only_its_own_field() {
        let Parsed { value, errors } = parse_meminfo(&REAL.replace("124552 kB", "124552 MB"));
        let messages: Vec<String> = errors.iter().map(ToString::to_string).collect();
        assert_eq!(
            messages,
            ["/proc/meminfo line 11: Dirty: unknown unit \"MB\""]
        );
        assert_eq!(value.dirty_bytes, None);
        assert_eq!(value.mem_total_bytes, Some(24684100 * 1024));
        assert_eq!(value.cached_bytes, Some(3341896 * 1024));
    }

    #[test]
    fn an_empty_file_is_an_error() {
        let Parsed { value, errors } = parse_meminfo("");
        assert_eq!(errors[0].to_string(), "/proc/meminfo: no `MemTotal` line");
        assert_eq!(errors.len(), 7, "every line but MemAvailable is expected");
        assert_eq!(value.mem_total_bytes, None);
    }
}
