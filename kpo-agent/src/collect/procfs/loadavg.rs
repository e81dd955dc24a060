//! /proc/loadavg: `0.39 0.96 0.99 2/87 14465`: the 1, 5 and 15 minute load averages, runnable
//! and total scheduling entities, and the last pid handed out (not used).
use serde::Serialize;

use crate::kernel_file::limit;

use super::{
    fields::{finite_f64, number},
    read_with, ProcError, ProcRoot,
};

const PATH: &str = "/proc/loadavg";

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Loadavg {
    pub load1: f64,
    pub load5: f64,
    pub load15: f64,
    /// Tasks runnable right now (running or waiting for a CPU).
    pub runnable: u64,
    /// Tasks (threads) in the system.
    pub total: u64,
}

pub fn parse_loadavg(text: &str) -> Result<Loadavg, ProcError> {
    // The whole file is one line; report problems on line 1.
    let line_no = 1;
    let tokens: Vec<&str> = text.split_whitespace().collect();
    let [l1, l5, l15, tasks, ..] = tokens.as_slice() else {
        return Err(ProcError::parse(
            PATH,
            line_no,
            format!("expected at least 4 fields, found {}", tokens.len()),
        ));
    };
    let (runnable, total) = tasks.split_once('/').ok_or_else(|| {
        ProcError::parse(
            PATH,
            line_no,
            format!("tasks: expected runnable/total, found {tasks:?}"),
        )
    })?;
    Ok(Loadavg {
        load1: finite_f64(PATH, line_no, "load1", l1)?,
        load5: finite_f64(PATH, line_no, "load5", l5)?,
        load15: finite_f64(PATH, line_no, "load15", l15)?,
        runnable: number(PATH, line_no, "runnable tasks", runnable)?,
        total: number(PATH, line_no, "total tasks", total)?,
    })
}

pub fn read_loadavg(root: &ProcRoot) -> Result<Loadavg, ProcError> {
    read_with(root, "loadavg", limit::FIXED, parse_loadavg)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Captured on the build machine.
    const REAL: &str = "0.39 0.96 0.99 2/87 14465\n";

    #[test]
    fn parses_the_real_file() {
        let l = parse_loadavg(REAL).unwrap();
        assert_eq!(
            l,
            Loadavg {
                load1: 0.39,
                load5: 0.96,
                load15: 0.99,
                runnable: 2,
                total: 87
            }
        );
    }

    #[test]
    fn extra_fields_are_ignored() {
        assert_eq!(
            parse_loadavg("0.39 0.96 0.99 2/87 14465 7 8\n").unwrap(),
            parse_loadavg(REAL).unwrap()
        );
    }

    #[test]
    fn malformed_fields_are_errors() {
        let e = parse_loadavg("0.39 0.96 0.99 2-87 14465\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "/proc/loadavg line 1: tasks: expected runnable/total, found \"2-87\""
        );
        let e = parse_loadavg("0.39 nan 0.99 2/87 1\n").unwrap_err();
        assert!(e.to_string().contains("load5"), "{e}");
        let e = parse_loadavg("0.39 0.96 0.99 2/x 1\n").unwrap_err();
        assert!(e.to_string().contains("total tasks"), "{e}");
    }

    #[test]
    fn an_empty_file_is_an_error() {
        let e = parse_loadavg("").unwrap_err();
        assert_eq!(
            e.to_string(),
            "/proc/loadavg line 1: expected at least 4 fields, found 0"
        );
    }
}
