//! /proc/interrupts: interrupts delivered per CPU since boot, one line per IRQ.
//!
//! ```text
//!            CPU0       CPU1
//!  26:          0         14  IO-APIC   4-edge      ttyS0
//! NMI:          0          0   Non-maskable interrupts
//! ERR:          0
//! ```
//! The header lists online CPUs only. Each line is an id (an IRQ number, or an architecture
//! counter such as `NMI`, `LOC`, `RES`), one count per CPU (32-bit, so they wrap), then a
//! description: for numbered IRQs the chip, hardware IRQ and flow handler, then the names of the
//! handlers (`actions`) sharing it. `ERR` and `MIS` (x86) and `Err` (arm) carry a single total.
use std::collections::BTreeMap;

use serde::Serialize;

use crate::kernel_file::limit;

use super::{
    fields::{cpu_header, number, numbered_lines},
    read_with, ProcError, ProcRoot,
};

const PATH: &str = "/proc/interrupts";

/// Ids of lines holding one system-wide error count instead of per-CPU deliveries.
const ERROR_COUNT_IDS: [&str; 3] = ["ERR", "MIS", "Err"];

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InterruptLine {
    /// `"24"`, `"NMI"`, `"LOC"`, ...
    pub id: String,
    /// One per CPU of [`Interrupts::cpus`], in that order; a single total for error-count lines.
    pub counts: Vec<u64>,
    /// The text after the counts, whitespace collapsed; may be empty.
    pub description: String,
}

impl InterruptLine {
    /// Whether this line counts errors (`ERR`, `MIS`) rather than interrupts delivered per CPU.
    pub fn is_error_count(&self) -> bool {
        ERROR_COUNT_IDS.contains(&self.id.as_str())
    }

    /// The numeric IRQ, for lines that have one.
    pub fn irq(&self) -> Option<u32> {
        self.id.parse().ok()
    }

    /// The handler names of a numbered IRQ (`"virtio3-rx"`, `"ehci_hcd:usb1, i801_smbus"`): what
    /// the `irq:irq_handler_entry` tracepoint calls `name`. The kernel prints them after the chip
    /// name, the hardware IRQ number and the flow handler (`4-edge`, or `27 Level` on arm), so they
    /// are the words after the last word that starts with a digit or is `Level`/`Edge`. A
    /// description without such a word is taken to be a chip name followed by the handler names.
    pub fn action_names(&self) -> Option<String> {
        let words: Vec<&str> = self.description.split_whitespace().collect();
        let is_hw_word =
            |w: &&str| w.starts_with(|c: char| c.is_ascii_digit()) || *w == "Level" || *w == "Edge";
        let start = match words.iter().rposition(is_hw_word) {
            Some(i) => i + 1,
            None => 1,
        };
        let names = words.get(start..).unwrap_or_default().join(" ");
        (!names.is_empty()).then_some(names)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Interrupts {
    /// CPU ids from the header.
    pub cpus: Vec<u32>,
    pub lines: Vec<InterruptLine>,
}

impl Interrupts {
    /// Numbered IRQ to its handler names, for IRQs that have any.
    pub fn action_names(&self) -> BTreeMap<u32, String> {
        self.lines
            .iter()
            .filter_map(|l| Some((l.irq()?, l.action_names()?)))
            .collect()
    }
}

pub fn parse_interrupts(text: &str) -> Result<Interrupts, ProcError> {
    let mut lines = numbered_lines(text);
    let Some((header_no, header)) = lines.next() else {
        return Err(ProcError::parse(PATH, 0, "empty file: no CPU header"));
    };
    let cpus = cpu_header(PATH, header_no, header)?;
    let mut parsed = Vec::new();
    for (line_no, line) in lines {
        let Some((id, rest)) = line.split_once(':') else {
            return Err(ProcError::parse(
                PATH,
                line_no,
                format!("expected `ID: counts`, found {line:?}"),
            ));
        };
        let id = id.trim();
        if id.is_empty() || id.contains(char::is_whitespace) {
            return Err(ProcError::parse(
                PATH,
                line_no,
                format!("bad interrupt id {id:?}"),
            ));
        }
        let mut words = rest.split_whitespace().peekable();
        let mut counts = Vec::with_capacity(cpus.len());
        // Up to one count per CPU; the first word not starting with a digit begins the
        // description. A word that starts with a digit but is not a number is a broken count.
        while counts.len() < cpus.len() {
            match words.peek() {
                Some(w) if w.starts_with(|c: char| c.is_ascii_digit()) => {
                    counts.push(number::<u64>(PATH, line_no, id, w)?);
                    words.next();
                }
                _ => break,
            }
        }
        if counts.is_empty() {
            return Err(ProcError::parse(PATH, line_no, format!("{id}: no counts")));
        }
        let is_error_count = ERROR_COUNT_IDS.contains(&id);
        if counts.len() != cpus.len() && !is_error_count {
            return Err(ProcError::parse(
                PATH,
                line_no,
                format!("{id}: {} counts for {} CPUs", counts.len(), cpus.len()),
            ));
        }
        parsed.push(InterruptLine {
            id: id.to_string(),
            counts,
            description: words.collect::<Vec<_>>().join(" "),
        });
    }
    Ok(Interrupts {
        cpus,
        lines: parsed,
    })
}

pub fn read_interrupts(root: &ProcRoot) -> Result<Interrupts, ProcError> {
    read_with(root, "interrupts", limit::PER_CPU, parse_interrupts)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Captured on the build machine (Linux 6.18, x86_64 VM, 2 CPUs), some lines cut.
    const REAL: &str = "\
           CPU0       CPU1       
 24:          1          0  IO-APIC   5-edge      ACPI:Ged
 26:          0         14  IO-APIC   4-edge      ttyS0
 31:          0       1356 PCI-MSIX-0000:00:01.0   3-edge      virtio0-stats
 36:          0      89513 PCI-MSIX-0000:00:02.0   1-edge      virtio1-req.0
 41:       2587          0 PCI-MSIX-0000:00:04.0   1-edge      virtio3-rx
 42:          0       7489 PCI-MSIX-0000:00:04.0   2-edge      virtio3-tx
NMI:          0          0   Non-maskable interrupts
LOC:     275421     235295   Local timer interrupts
RES:      60173      53130   Rescheduling interrupts
CAL:     559975     587496   Function call interrupts
ERR:          0
MIS:          0
PIW:          0          0   Posted-interrupt wakeup event
";

    #[test]
    fn parses_the_real_file() {
        let i = parse_interrupts(REAL).unwrap();
        assert_eq!(i.cpus, [0, 1]);
        assert_eq!(i.lines.len(), 13);
        let l = &i.lines[3];
        assert_eq!(
            (l.id.as_str(), l.counts.as_slice()),
            ("36", &[0, 89513][..])
        );
        assert_eq!(l.description, "PCI-MSIX-0000:00:02.0 1-edge virtio1-req.0");
        let loc = &i.lines[7];
        assert_eq!(
            (loc.id.as_str(), loc.description.as_str()),
            ("LOC", "Local timer interrupts")
        );
        let err = &i.lines[10];
        assert_eq!(
            (
                err.counts.as_slice(),
                err.description.as_str(),
                err.is_error_count()
            ),
            (&[0][..], "", true)
        );
    }

    #[test]
    fn action_names_are_the_handler_names() {
        let names = parse_interrupts(REAL).unwrap().action_names();
        assert_eq!(names.get(&24).map(String::as_str), Some("ACPI:Ged"));
        assert_eq!(names.get(&41).map(String::as_str), Some("virtio3-rx"));
        assert_eq!(names.len(), 6, "architecture counters have no IRQ number");

        let line = |d: &str| InterruptLine {
            id: "5".into(),
            counts: vec![0],
            description: d.into(),
        };
        assert_eq!(
            line("GICv3 27 Level arch_timer").action_names().as_deref(),
            Some("arch_timer")
        );
        assert_eq!(
            line("IO-APIC 18-fasteoi ehci_hcd:usb1, i801_smbus")
                .action_names()
                .as_deref(),
            Some("ehci_hcd:usb1, i801_smbus")
        );
        assert_eq!(
            line("XT-PIC cascade").action_names().as_deref(),
            Some("cascade")
        );
        assert_eq!(
            line("IO-APIC 9-fasteoi").action_names(),
            None,
            "no handler attached"
        );
        assert_eq!(line("").action_names(), None);
    }

    #[test]
    fn lines_with_a_count_short_or_broken_are_errors() {
        let e = parse_interrupts(&REAL.replace("89513", "895x3")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "/proc/interrupts line 5: 36: \"895x3\" is not a valid number"
        );
        let e = parse_interrupts(&REAL.replace(" 26:          0         14", " 26:          0"))
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "/proc/interrupts line 3: 26: 1 counts for 2 CPUs"
        );
        let e = parse_interrupts(&REAL.replace("NMI:", "NMI ")).unwrap_err();
        assert!(matches!(e, ProcError::Parse { line: 8, .. }), "{e}");
    }

    #[test]
    fn more_cpus_than_counts_in_description_are_not_counts() {
        // A description word that starts with a digit after all CPUs' counts stays description.
        let i = parse_interrupts("   CPU0\n 11:   5   27 Level arch_timer\n").unwrap();
        assert_eq!(
            (
                i.lines[0].counts.as_slice(),
                i.lines[0].description.as_str()
            ),
            (&[5][..], "27 Level arch_timer")
        );
    }

    /// An interface renamed with a byte that is not UTF-8 names its IRQs so: the file is still
    /// read, the name with U+FFFD in its place.
    #[test]
    fn a_name_that_is_not_utf8_does_not_lose_the_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("interrupts"),
            b"           CPU0       CPU1\n 24:        100        200   PCI-MSI 1-edge      eth\xff-rx-0\n",
        )
        .unwrap();
        let i = read_interrupts(&ProcRoot(dir.path().to_path_buf())).unwrap();
        assert_eq!(i.lines.len(), 1);
        assert_eq!(i.lines[0].counts, vec![100, 200]);
        assert!(
            i.lines[0].description.contains("eth\u{FFFD}-rx-0"),
            "{:?}",
            i.lines[0]
        );
    }

    #[test]
    fn an_empty_file_is_an_error() {
        assert_eq!(
            parse_interrupts("").unwrap_err().to_string(),
            "/proc/interrupts: empty file: no CPU header"
        );
    }
}
