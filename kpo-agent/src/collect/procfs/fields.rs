//! Number and header parsing shared by the /proc parsers, so every file reports a bad number the
//! same way: which file, which line, which field and what was found.
use std::str::FromStr;

use super::ProcError;

/// Parses one decimal field. `what` names the field in the error ("ctxt", "cpu3 user").
pub(super) fn number<T: FromStr>(
    path: &str,
    line: usize,
    what: &str,
    token: &str,
) -> Result<T, ProcError> {
    // `from_str` accepts a leading '+', which /proc never prints; reject it to stay strict.
    if token.starts_with('+') {
        return Err(not_a_number(path, line, what, token));
    }
    token
        .parse()
        .map_err(|_| not_a_number(path, line, what, token))
}

/// Parses a hexadecimal field (softnet_stat prints `%08x`).
pub(super) fn hex_u32(path: &str, line: usize, what: &str, token: &str) -> Result<u32, ProcError> {
    if token.is_empty() || !token.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(ProcError::parse(
            path,
            line,
            format!("{what}: {token:?} is not a hexadecimal number"),
        ));
    }
    u32::from_str_radix(token, 16).map_err(|_| {
        ProcError::parse(
            path,
            line,
            format!("{what}: {token:?} does not fit in 32 bits"),
        )
    })
}

/// Parses a decimal fraction such as a load average or a PSI average. `f64::from_str` also
/// accepts "inf" and "NaN", which would poison every sum downstream, so only finite values pass.
pub(super) fn finite_f64(
    path: &str,
    line: usize,
    what: &str,
    token: &str,
) -> Result<f64, ProcError> {
    match token.parse::<f64>() {
        Ok(v) if v.is_finite() && !token.starts_with('+') => Ok(v),
        _ => Err(not_a_number(path, line, what, token)),
    }
}

fn not_a_number(path: &str, line: usize, what: &str, token: &str) -> ProcError {
    ProcError::parse(
        path,
        line,
        format!("{what}: {token:?} is not a valid number"),
    )
}

/// Parses the `CPU0 CPU1 ...` header of /proc/softirqs and /proc/interrupts into CPU ids.
/// The ids matter: /proc/interrupts lists only online CPUs, so a position is not an id.
pub(super) fn cpu_header(path: &str, line: usize, header: &str) -> Result<Vec<u32>, ProcError> {
    let cpus = header
        .split_whitespace()
        .map(|token| match token.strip_prefix("CPU") {
            Some(id) => number::<u32>(path, line, "CPU header", id),
            None => Err(ProcError::parse(
                path,
                line,
                format!("header: expected CPU<n>, found {token:?}"),
            )),
        })
        .collect::<Result<Vec<_>, _>>()?;
    if cpus.is_empty() {
        return Err(ProcError::parse(path, line, "header lists no CPU"));
    }
    Ok(cpus)
}

/// The lines of a file numbered from 1, blank lines skipped.
pub(super) fn numbered_lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l))
        .filter(|(_, l)| !l.trim().is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_strict() {
        assert_eq!(number::<u64>("f", 1, "x", "42").unwrap(), 42);
        assert!(number::<u64>("f", 1, "x", "+42").is_err());
        assert!(number::<u64>("f", 1, "x", "-1").is_err());
        assert_eq!(number::<i64>("f", 1, "x", "-1").unwrap(), -1);
        assert!(number::<u64>("f", 1, "x", "99999999999999999999").is_err());
        assert_eq!(hex_u32("f", 1, "x", "00799e44").unwrap(), 0x0079_9e44);
        assert!(hex_u32("f", 1, "x", "0x10").is_err());
        assert!(hex_u32("f", 1, "x", "100000000").is_err());
        assert!(finite_f64("f", 1, "x", "inf").is_err());
        assert!(finite_f64("f", 1, "x", "NaN").is_err());
        assert_eq!(finite_f64("f", 1, "x", "0.39").unwrap(), 0.39);
    }

    #[test]
    fn cpu_header_reads_ids() {
        assert_eq!(
            cpu_header("f", 1, "   CPU0  CPU2   CPU3").unwrap(),
            vec![0, 2, 3]
        );
        let e = cpu_header("f", 1, "CPU0 foo").unwrap_err();
        assert_eq!(
            e.to_string(),
            "f line 1: header: expected CPU<n>, found \"foo\""
        );
        assert!(cpu_header("f", 1, "   ").is_err());
    }
}
