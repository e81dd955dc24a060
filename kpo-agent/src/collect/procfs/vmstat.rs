//! /proc/vmstat: the few virtual-memory event counters the memory rule reads (swap-ins and
//! -outs, and refaults of recently evicted pages), all in pages since boot.
//!
//! The file is `name value` per line; the kernel adds and renames counters between versions, so
//! unknown lines are skipped unread. The refault counters were split into `_anon` and `_file` in
//! Linux 5.9; before that there is only `workingset_refault` (file pages), read as the file one.
use serde::Serialize;

use crate::kernel_file::limit;

use super::{
    fields::{number, numbered_lines},
    read_parsed, Parsed, ProcError, ProcRoot,
};

const PATH: &str = "/proc/vmstat";

/// Each counter is `None` when its line is missing (kernels without swap support have no
/// `pswpin`) or does not parse (the error is returned beside it).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Vmstat {
    /// Pages read back from swap.
    pub pswpin: Option<u64>,
    /// Pages written to swap.
    pub pswpout: Option<u64>,
    /// Anonymous pages faulted back in soon after reclaim evicted them (5.9+).
    pub workingset_refault_anon: Option<u64>,
    /// Page-cache pages read back soon after reclaim evicted them.
    pub workingset_refault_file: Option<u64>,
}

pub fn parse_vmstat(text: &str) -> Parsed<Vmstat> {
    let mut v = Vmstat::default();
    let mut legacy_refault = None;
    let mut errors = Vec::new();
    for (line_no, line) in numbered_lines(text) {
        let mut fields = line.split_whitespace();
        let (Some(name), Some(value)) = (fields.next(), fields.next()) else {
            continue;
        };
        let slot = match name {
            "pswpin" => &mut v.pswpin,
            "pswpout" => &mut v.pswpout,
            "workingset_refault_anon" => &mut v.workingset_refault_anon,
            "workingset_refault_file" => &mut v.workingset_refault_file,
            "workingset_refault" => &mut legacy_refault,
            _ => continue,
        };
        *slot = number(PATH, line_no, name, value)
            .map_err(|e| errors.push(e))
            .ok();
    }
    if v.workingset_refault_file.is_none() {
        v.workingset_refault_file = legacy_refault;
    }
    Parsed::new(v, errors)
}

pub fn read_vmstat(root: &ProcRoot) -> Result<Parsed<Vmstat>, ProcError> {
    read_parsed(root, "vmstat", limit::FIXED, parse_vmstat)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_counters_it_uses_and_skips_the_rest() {
        let text = "nr_free_pages 1234\npswpin 10\npswpout 20\nworkingset_refault_anon 3\n\
                    workingset_refault_file 400\nsome_future_counter x\n";
        let p = parse_vmstat(text);
        assert!(p.errors.is_empty(), "{:?}", p.errors);
        assert_eq!(
            p.value,
            Vmstat {
                pswpin: Some(10),
                pswpout: Some(20),
                workingset_refault_anon: Some(3),
                workingset_refault_file: Some(400),
            }
        );
    }

    #[test]
    fn a_bad_value_loses_only_its_counter_and_names_the_line() {
        let p = parse_vmstat("pswpin 1x\npswpout 7\n");
        assert_eq!(p.value.pswpin, None);
        assert_eq!(p.value.pswpout, Some(7));
        let messages: Vec<String> = p.errors.iter().map(ToString::to_string).collect();
        assert_eq!(
            messages,
            ["/proc/vmstat line 1: pswpin: \"1x\" is not a valid number"]
        );
    }

    #[test]
    fn before_5_9_the_single_refault_counter_is_the_file_one() {
        let p = parse_vmstat("workingset_refault 55\n");
        assert_eq!(p.value.workingset_refault_file, Some(55));
        assert_eq!(p.value.workingset_refault_anon, None);
    }

    #[test]
    fn this_machines_vmstat_parses() {
        let p = read_vmstat(&ProcRoot::default()).unwrap();
        assert!(p.errors.is_empty(), "{:?}", p.errors);
        assert!(p.value.pswpin.is_some(), "CONFIG_SWAP kernels count pswpin");
    }
}
