//! /proc/net/softnet_stat: one line per online CPU of 32-bit hexadecimal counters for the
//! receive path (net/core/net-procfs.c):
//!
//! | column | meaning |
//! | --- | --- |
//! | 1 | packets processed by net_rx_action |
//! | 2 | packets dropped because the backlog queue was full (`net.core.netdev_max_backlog`) |
//! | 3 | time_squeeze: net_rx_action stopped with work left (budget or time ran out) |
//! | 4-9 | always 0 (removed fastroute and cpu_collision counters) |
//! | 10 | received_rps: RPS inter-processor interrupts received |
//! | 11 | flow_limit_count (since 3.11) |
//! | 12 | backlog length (since 5.10) |
//! | 13 | CPU id (since 5.10) |
//! | 14, 15 | input and process queue lengths (since 6.x) |
//!
//! Offline CPUs have no line, so without the CPU id column a line's position is the CPU id only
//! when every CPU is online.
use serde::Serialize;

use crate::kernel_file::limit;

use super::{
    fields::{hex_u32, numbered_lines},
    read_with, ProcError, ProcRoot,
};

const PATH: &str = "/proc/net/softnet_stat";

/// Columns every supported kernel prints (up to flow_limit_count).
const MIN_COLUMNS: usize = 11;
/// 1-based column of the CPU id, on kernels that print it.
const CPU_ID_COLUMN: usize = 13;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct SoftnetCpu {
    pub cpu: u32,
    pub processed: u32,
    pub dropped: u32,
    pub time_squeeze: u32,
    pub received_rps: u32,
    pub flow_limit_count: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Softnet {
    pub cpus: Vec<SoftnetCpu>,
    /// Whether `cpu` came from the kernel (13+ columns) or is the line's position.
    pub cpu_ids_from_kernel: bool,
}

pub fn parse_softnet(text: &str) -> Result<Softnet, ProcError> {
    let mut cpus = Vec::new();
    let mut ids_from_kernel = true;
    for (position, (line_no, line)) in numbered_lines(text).enumerate() {
        let columns: Vec<&str> = line.split_whitespace().collect();
        if columns.len() < MIN_COLUMNS {
            return Err(ProcError::parse(
                PATH,
                line_no,
                format!(
                    "expected at least {MIN_COLUMNS} columns, found {}",
                    columns.len()
                ),
            ));
        }
        // 1-based column reader; every index used is below the length checked above, except the
        // CPU id, which is looked up with `get`.
        let column = |n: usize, what: &str| hex_u32(PATH, line_no, what, columns[n - 1]);
        let cpu = match columns.get(CPU_ID_COLUMN - 1) {
            Some(id) => hex_u32(PATH, line_no, "cpu id", id)?,
            None => {
                ids_from_kernel = false;
                u32::try_from(position).unwrap_or(u32::MAX)
            }
        };
        cpus.push(SoftnetCpu {
            cpu,
            processed: column(1, "processed")?,
            dropped: column(2, "dropped")?,
            time_squeeze: column(3, "time_squeeze")?,
            received_rps: column(10, "received_rps")?,
            flow_limit_count: column(11, "flow_limit_count")?,
        });
    }
    Ok(Softnet {
        cpus,
        cpu_ids_from_kernel: ids_from_kernel,
    })
}

pub fn read_softnet(root: &ProcRoot) -> Result<Softnet, ProcError> {
    read_with(root, "net/softnet_stat", limit::PER_CPU, parse_softnet)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Captured on the build machine (Linux 6.18, 2 CPUs, 15 columns).
    const REAL: &str = "\
00799e44 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000
007ea16e 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000001 00000000 00000000
";

    #[test]
    fn parses_the_real_file() {
        let s = parse_softnet(REAL).unwrap();
        assert!(s.cpu_ids_from_kernel);
        assert_eq!(s.cpus.len(), 2);
        assert_eq!((s.cpus[0].cpu, s.cpus[0].processed), (0, 0x0079_9e44));
        assert_eq!(
            (s.cpus[1].cpu, s.cpus[1].processed, s.cpus[1].dropped),
            (1, 0x007e_a16e, 0)
        );
    }

    #[test]
    fn the_cpu_id_column_names_the_cpu_when_present() {
        // CPU 1 offline: the second line is CPU 2 (13 columns, 5.10 layout).
        let text = "\
00000010 00000001 00000002 00000000 00000000 00000000 00000000 00000000 00000000 00000003 00000004 00000000 00000000
00000020 00000005 00000006 00000000 00000000 00000000 00000000 00000000 00000000 00000007 00000008 00000000 00000002
";
        let s = parse_softnet(text).unwrap();
        assert_eq!(
            s.cpus[1],
            SoftnetCpu {
                cpu: 2,
                processed: 0x20,
                dropped: 5,
                time_squeeze: 6,
                received_rps: 7,
                flow_limit_count: 8
            }
        );
    }

    #[test]
    fn older_kernels_without_the_id_use_the_position() {
        let text = "\
00000010 00000001 00000002 00000000 00000000 00000000 00000000 00000000 00000000 00000003 00000004
00000020 00000005 00000006 00000000 00000000 00000000 00000000 00000000 00000000 00000007 000000ff
";
        let s = parse_softnet(text).unwrap();
        assert!(!s.cpu_ids_from_kernel);
        assert_eq!((s.cpus[1].cpu, s.cpus[1].flow_limit_count), (1, 255));
    }

    #[test]
    fn too_few_columns_or_bad_hex_are_errors() {
        let e = parse_softnet("00000010 00000001 00000002\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "/proc/net/softnet_stat line 1: expected at least 11 columns, found 3"
        );
        let e = parse_softnet(&REAL.replace("007ea16e", "007ea16g")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "/proc/net/softnet_stat line 2: processed: \"007ea16g\" is not a hexadecimal number"
        );
    }

    #[test]
    fn an_empty_file_has_no_cpus() {
        assert!(parse_softnet("").unwrap().cpus.is_empty());
    }
}
