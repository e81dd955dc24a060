//! /proc/diskstats: I/O counters per block device (Documentation/admin-guide/iostats.rst).
//!
//! `major minor name` then 11 fields; Linux 4.18 added 4 discard fields (18 columns) and 5.5 two
//! flush fields (20). Fields past the eleventh are not used and any count from 14 up is accepted.
//! Sectors are always 512-byte units here, whatever the device's real sector size.
//!
//! Which devices count as disks ([`is_whole_disk`]): the file lists partitions and virtual
//! devices beside the disks, and summing them all would count the same I/O several times. Without
//! sysfs (which this module does not read) the rule is:
//! - `loop*`, `ram*` and `zram*` are skipped: memory or file backed, not storage I/O;
//! - a name that is another listed device's name plus a number (`sda1` of `sda`, `vda3` of
//!   `vda`), or plus `p` and a number (`nvme0n1p2` of `nvme0n1`, `mmcblk0p1` of `mmcblk0`), is a
//!   partition and is skipped;
//! - everything else is kept, including device-mapper (`dm-*`) and md RAID (`md*`) devices,
//!   as node_exporter and iostat do. I/O through LVM or RAID is therefore counted both on the
//!   virtual device and on the disks beneath it.
use serde::Serialize;

use crate::kernel_file::limit;

use super::{
    fields::{number, numbered_lines},
    read_with, ProcError, ProcRoot,
};

const PATH: &str = "/proc/diskstats";

/// major, minor, name and the 11 original fields.
const MIN_COLUMNS: usize = 14;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DiskDevice {
    pub major: u32,
    pub minor: u32,
    pub name: String,
    pub reads_completed: u64,
    pub sectors_read: u64,
    pub read_ms: u64,
    pub writes_completed: u64,
    pub sectors_written: u64,
    pub write_ms: u64,
    /// A level, not a counter: requests in flight right now.
    pub ios_in_progress: u64,
    /// Time the device had at least one request in flight.
    pub io_ms: u64,
    /// `io_ms` weighted by the number of requests in flight.
    pub weighted_io_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Diskstats {
    pub devices: Vec<DiskDevice>,
}

impl Diskstats {
    /// The devices [`is_whole_disk`] keeps.
    pub fn whole_disks(&self) -> impl Iterator<Item = &DiskDevice> {
        let names: Vec<&str> = self.devices.iter().map(|d| d.name.as_str()).collect();
        self.devices
            .iter()
            .filter(move |d| is_whole_disk(&d.name, &names))
    }
}

/// Whether `name` is a storage device rather than a partition of one of `all_names` or a
/// memory/file-backed device; the module documentation gives the rule.
pub fn is_whole_disk(name: &str, all_names: &[&str]) -> bool {
    if ["loop", "ram", "zram"]
        .iter()
        .any(|prefix| name.starts_with(prefix))
    {
        return false;
    }
    let base = name.trim_end_matches(|c: char| c.is_ascii_digit());
    if base.len() == name.len() || base.is_empty() {
        return true;
    }
    let listed = |candidate: &str| candidate != name && all_names.contains(&candidate);
    if listed(base) {
        return false;
    }
    // `nvme0n1p2`, `mmcblk0p1`: the parent name ends in a digit, so the kernel inserts a `p`.
    match base.strip_suffix('p') {
        Some(parent) if parent.ends_with(|c: char| c.is_ascii_digit()) => !listed(parent),
        _ => true,
    }
}

pub fn parse_diskstats(text: &str) -> Result<Diskstats, ProcError> {
    let mut devices = Vec::new();
    for (line_no, line) in numbered_lines(text) {
        let columns: Vec<&str> = line.split_whitespace().collect();
        let [major, minor, name, fields @ ..] = columns.as_slice() else {
            return Err(too_few(line_no, columns.len()));
        };
        // reads, reads merged, sectors read, ms reading, writes, writes merged, sectors
        // written, ms writing, ios in progress, ms doing io, weighted ms doing io.
        if columns.len() < MIN_COLUMNS {
            return Err(too_few(line_no, columns.len()));
        }
        let field = |index: usize, what: &str| -> Result<u64, ProcError> {
            let token = fields.get(index).copied().unwrap_or_default();
            number(PATH, line_no, &format!("{name} {what}"), token)
        };
        devices.push(DiskDevice {
            major: number(PATH, line_no, "major", major)?,
            minor: number(PATH, line_no, "minor", minor)?,
            name: name.to_string(),
            reads_completed: field(0, "reads completed")?,
            sectors_read: field(2, "sectors read")?,
            read_ms: field(3, "ms reading")?,
            writes_completed: field(4, "writes completed")?,
            sectors_written: field(6, "sectors written")?,
            write_ms: field(7, "ms writing")?,
            ios_in_progress: field(8, "ios in progress")?,
            io_ms: field(9, "ms doing io")?,
            weighted_io_ms: field(10, "weighted ms doing io")?,
        });
    }
    Ok(Diskstats { devices })
}

pub fn read_diskstats(root: &ProcRoot) -> Result<Diskstats, ProcError> {
    read_with(root, "diskstats", limit::PER_CPU, parse_diskstats)
}

fn too_few(line_no: usize, found: usize) -> ProcError {
    ProcError::parse(
        PATH,
        line_no,
        format!("expected at least {MIN_COLUMNS} columns, found {found}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Captured on the build machine (Linux 6.18, 20 columns), loop2..loop7 cut.
    const REAL: &str = "\
   7       0 loop0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0
   7       1 loop1 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0
 254       0 vda 228965 11611 17642490 210818 21207 57149 22248736 65116 0 15464 277487 13501 50 2721720 1526 631 26
 253       0 zram0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0
";

    #[test]
    fn parses_the_real_file() {
        let d = parse_diskstats(REAL).unwrap();
        assert_eq!(d.devices.len(), 4);
        assert_eq!(
            d.devices[2],
            DiskDevice {
                major: 254,
                minor: 0,
                name: "vda".into(),
                reads_completed: 228965,
                sectors_read: 17642490,
                read_ms: 210818,
                writes_completed: 21207,
                sectors_written: 22248736,
                write_ms: 65116,
                ios_in_progress: 0,
                io_ms: 15464,
                weighted_io_ms: 277487,
            }
        );
        let whole: Vec<&str> = d.whole_disks().map(|d| d.name.as_str()).collect();
        assert_eq!(whole, ["vda"]);
    }

    #[test]
    fn fourteen_and_eighteen_column_layouts_parse_the_same() {
        let v14 = "   8       0 sda 1 2 3 4 5 6 7 8 9 10 11\n";
        let v18 = "   8       0 sda 1 2 3 4 5 6 7 8 9 10 11 0 0 0 0\n";
        let a = parse_diskstats(v14).unwrap();
        assert_eq!(a, parse_diskstats(v18).unwrap());
        let sda = &a.devices[0];
        assert_eq!(
            (sda.reads_completed, sda.sectors_read, sda.writes_completed),
            (1, 3, 5)
        );
        assert_eq!(
            (sda.ios_in_progress, sda.io_ms, sda.weighted_io_ms),
            (9, 10, 11)
        );
    }

    #[test]
    fn malformed_lines_are_errors() {
        let e = parse_diskstats("   8       0 sda 1 2 3\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "/proc/diskstats line 1: expected at least 14 columns, found 6"
        );
        let e = parse_diskstats(&REAL.replace("22248736", "2224873x")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "/proc/diskstats line 3: vda sectors written: \"2224873x\" is not a valid number"
        );
    }

    #[test]
    fn an_empty_file_has_no_devices() {
        assert!(parse_diskstats("").unwrap().devices.is_empty());
    }

    #[test]
    fn whole_disks_are_told_from_partitions_and_virtual_devices() {
        let names = [
            "sda",
            "sda1",
            "sda15",
            "nvme0n1",
            "nvme0n1p1",
            "mmcblk0",
            "mmcblk0p2",
            "vda",
            "vda1",
            "dm-0",
            "dm-1",
            "md0",
            "md0p1",
            "loop0",
            "ram0",
            "zram0",
            "sr0",
            "xvdb",
        ];
        let whole: Vec<&str> = names
            .iter()
            .copied()
            .filter(|n| is_whole_disk(n, &names))
            .collect();
        assert_eq!(
            whole,
            ["sda", "nvme0n1", "mmcblk0", "vda", "dm-0", "dm-1", "md0", "sr0", "xvdb"]
        );
        // A partition whose disk is not listed cannot be recognised as one.
        assert!(is_whole_disk("sdb1", &["sdb1"]));
    }
}
