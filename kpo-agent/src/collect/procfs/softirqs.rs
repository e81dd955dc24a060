//! /proc/softirqs: how many times each softirq vector ran on each CPU since boot.
//!
//! ```text
//!                     CPU0       CPU1
//!           HI:          0          0
//!        TIMER:      70553      57826
//! ```
//! The vectors are HI, TIMER, NET_TX, NET_RX, BLOCK, IRQ_POLL, TASKLET, SCHED, HRTIMER and RCU
//! today; a vector a future kernel adds is kept like the others. The kernel keeps each count in
//! 32 bits (it prints `%10u`), so counts wrap.
use std::collections::BTreeMap;

use serde::Serialize;

use crate::kernel_file::limit;

use super::{
    fields::{cpu_header, number, numbered_lines},
    read_with, ProcError, ProcRoot,
};

const PATH: &str = "/proc/softirqs";

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Softirqs {
    /// CPU ids from the header; every vector's counts are in this order.
    pub cpus: Vec<u32>,
    /// Vector name to per-CPU counts.
    pub vectors: BTreeMap<String, Vec<u64>>,
}

pub fn parse_softirqs(text: &str) -> Result<Softirqs, ProcError> {
    let mut lines = numbered_lines(text);
    let Some((header_no, header)) = lines.next() else {
        return Err(ProcError::parse(PATH, 0, "empty file: no CPU header"));
    };
    let cpus = cpu_header(PATH, header_no, header)?;
    let mut vectors = BTreeMap::new();
    for (line_no, line) in lines {
        let Some((name, counts)) = line.split_once(':') else {
            return Err(ProcError::parse(
                PATH,
                line_no,
                format!("expected `NAME: counts`, found {line:?}"),
            ));
        };
        let name = name.trim();
        let counts = counts
            .split_whitespace()
            .map(|token| number::<u64>(PATH, line_no, name, token))
            .collect::<Result<Vec<_>, _>>()?;
        // The kernel prints the header and every row over the same CPUs; a row of another width
        // cannot be matched to CPUs.
        if counts.len() != cpus.len() {
            return Err(ProcError::parse(
                PATH,
                line_no,
                format!("{name}: {} counts for {} CPUs", counts.len(), cpus.len()),
            ));
        }
        vectors.insert(name.to_string(), counts);
    }
    Ok(Softirqs { cpus, vectors })
}

pub fn read_softirqs(root: &ProcRoot) -> Result<Softirqs, ProcError> {
    read_with(root, "softirqs", limit::PER_CPU, parse_softirqs)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Captured on the build machine (Linux 6.18, 2 CPUs).
    const REAL: &str = "\
                    CPU0       CPU1       
          HI:          0          0
       TIMER:      70553      57826
      NET_TX:         12          2
      NET_RX:    6581203    7284148
       BLOCK:          0      89503
    IRQ_POLL:          0          0
     TASKLET:        339         21
       SCHED:      85261      79891
     HRTIMER:          0          0
         RCU:     234001     212504
";

    #[test]
    fn parses_the_real_file() {
        let s = parse_softirqs(REAL).unwrap();
        assert_eq!(s.cpus, [0, 1]);
        assert_eq!(s.vectors.len(), 10);
        assert_eq!(s.vectors["NET_RX"], [6581203, 7284148]);
        assert_eq!(s.vectors["HI"], [0, 0]);
    }

    #[test]
    fn new_vectors_are_kept() {
        let s = parse_softirqs(&format!("{REAL}     NEWVEC:          1          2\n")).unwrap();
        assert_eq!(s.vectors["NEWVEC"], [1, 2]);
    }

    #[test]
    fn malformed_rows_are_errors() {
        let e = parse_softirqs(&REAL.replace("7284148", "72841x8")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "/proc/softirqs line 5: NET_RX: \"72841x8\" is not a valid number"
        );
        let e = parse_softirqs(&REAL.replace(
            "      NET_TX:         12          2",
            "      NET_TX:         12",
        ))
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "/proc/softirqs line 4: NET_TX: 1 counts for 2 CPUs"
        );
        let e = parse_softirqs(&REAL.replace("       BLOCK:", "       BLOCK ")).unwrap_err();
        assert!(matches!(e, ProcError::Parse { line: 6, .. }), "{e}");
    }

    #[test]
    fn an_empty_file_is_an_error() {
        assert_eq!(
            parse_softirqs("").unwrap_err().to_string(),
            "/proc/softirqs: empty file: no CPU header"
        );
    }
}
