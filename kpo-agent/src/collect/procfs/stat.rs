//! /proc/stat: CPU time in jiffies (USER_HZ ticks, 100 per second on every mainstream
//! architecture), context switches, forks, and the running/blocked task counts.
//!
//! Only the lines the agent uses are read; `intr`, `softirq`, `btime` and any future line are
//! ignored (interrupts and softirqs come from their own, per-CPU files).
use serde::Serialize;

use super::{
    fields::{number, numbered_lines},
    read_with, ProcError, ProcRoot,
};

const PATH: &str = "/proc/stat";

/// The ten time columns of a `cpu` line, in jiffies. Older kernels print fewer columns (4 before
/// 2.6, 7 before 2.6.11, 8 before 2.6.24, 9 before 2.6.33); missing trailing columns are 0.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct CpuJiffies {
    pub user: u64,
    pub nice: u64,
    pub system: u64,
    pub idle: u64,
    pub iowait: u64,
    pub irq: u64,
    pub softirq: u64,
    pub steal: u64,
    pub guest: u64,
    pub guest_nice: u64,
}

impl CpuJiffies {
    /// All accounted time. `guest` and `guest_nice` are left out because the kernel already
    /// counts them inside `user` and `nice`.
    pub fn total(&self) -> u64 {
        [
            self.user,
            self.nice,
            self.system,
            self.idle,
            self.iowait,
            self.irq,
            self.softirq,
            self.steal,
        ]
        .into_iter()
        .fold(0u64, u64::saturating_add)
    }
}

/// One `cpuN` line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct CpuStat {
    pub cpu: u32,
    #[serde(flatten)]
    pub jiffies: CpuJiffies,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Stat {
    /// The `cpu` line: the sum over all CPUs.
    pub total: CpuJiffies,
    /// The `cpuN` lines, in file order (offline CPUs are absent).
    pub cpus: Vec<CpuStat>,
    /// `ctxt`: context switches since boot.
    pub context_switches: u64,
    /// `processes`: tasks created (forks and clones) since boot.
    pub forks: u64,
    /// `procs_running`: tasks runnable right now.
    pub procs_running: u64,
    /// `procs_blocked`: tasks in uninterruptible sleep (usually waiting for I/O) right now.
    pub procs_blocked: u64,
}

pub fn parse_stat(text: &str) -> Result<Stat, ProcError> {
    let mut total = None;
    let mut cpus = Vec::new();
    let (mut ctxt, mut processes, mut running, mut blocked) = (None, None, None, None);
    for (line_no, line) in numbered_lines(text) {
        let mut tokens = line.split_whitespace();
        let Some(key) = tokens.next() else { continue };
        let single = |slot: &mut Option<u64>, mut tokens: std::str::SplitWhitespace| {
            let token = tokens
                .next()
                .ok_or_else(|| ProcError::parse(PATH, line_no, format!("{key}: missing value")))?;
            *slot = Some(number(PATH, line_no, key, token)?);
            Ok::<(), ProcError>(())
        };
        match key {
            "cpu" => total = Some(parse_jiffies(line_no, key, tokens)?),
            "ctxt" => single(&mut ctxt, tokens)?,
            "processes" => single(&mut processes, tokens)?,
            "procs_running" => single(&mut running, tokens)?,
            "procs_blocked" => single(&mut blocked, tokens)?,
            _ => {
                // `cpuN`; anything else starting with "cpu" is an unknown line.
                if let Some(id) = key.strip_prefix("cpu").filter(|id| is_decimal(id)) {
                    cpus.push(CpuStat {
                        cpu: number(PATH, line_no, "cpu id", id)?,
                        jiffies: parse_jiffies(line_no, key, tokens)?,
                    });
                }
            }
        }
    }
    let missing = |what: &str| ProcError::parse(PATH, 0, format!("no `{what}` line"));
    Ok(Stat {
        total: total.ok_or_else(|| missing("cpu"))?,
        cpus,
        context_switches: ctxt.ok_or_else(|| missing("ctxt"))?,
        forks: processes.ok_or_else(|| missing("processes"))?,
        procs_running: running.ok_or_else(|| missing("procs_running"))?,
        procs_blocked: blocked.ok_or_else(|| missing("procs_blocked"))?,
    })
}

pub fn read_stat(root: &ProcRoot) -> Result<Stat, ProcError> {
    read_with(root, "stat", parse_stat)
}

fn is_decimal(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

const COLUMNS: [&str; 10] = [
    "user",
    "nice",
    "system",
    "idle",
    "iowait",
    "irq",
    "softirq",
    "steal",
    "guest",
    "guest_nice",
];

fn parse_jiffies<'a>(
    line_no: usize,
    key: &str,
    tokens: impl Iterator<Item = &'a str>,
) -> Result<CpuJiffies, ProcError> {
    let mut values = [0u64; 10];
    let mut found = 0;
    // Columns past the tenth would be a future kernel's addition: ignored.
    for ((slot, column), token) in values.iter_mut().zip(COLUMNS).zip(tokens) {
        *slot = number(PATH, line_no, &format!("{key} {column}"), token)?;
        found += 1;
    }
    // user, nice, system and idle have been there since the first kernels that had the file.
    if found < 4 {
        return Err(ProcError::parse(
            PATH,
            line_no,
            format!("{key}: expected at least 4 time columns, found {found}"),
        ));
    }
    let [user, nice, system, idle, iowait, irq, softirq, steal, guest, guest_nice] = values;
    Ok(CpuJiffies {
        user,
        nice,
        system,
        idle,
        iowait,
        irq,
        softirq,
        steal,
        guest,
        guest_nice,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Captured on the build machine (Linux 6.18, 2 CPUs); the `intr` line is cut short.
    const REAL: &str = "\
cpu  117390 0 25211 1204897 788 0 4067 19 0 0
cpu0 65560 0 12125 596224 185 0 1978 9 0 0
cpu1 51829 0 13086 608673 603 0 2088 9 0 0
intr 1882988 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 1 1 14 0 0 0 0 1355 289
ctxt 6518714
btime 1795523089
processes 46924
procs_running 2
procs_blocked 0
softirq 14694940 0 128312 14 13865351 89472 0 360 165016 0 446415
";

    #[test]
    fn parses_the_real_file() {
        let s = parse_stat(REAL).unwrap();
        assert_eq!(
            s.total,
            CpuJiffies {
                user: 117390,
                system: 25211,
                idle: 1204897,
                iowait: 788,
                softirq: 4067,
                steal: 19,
                ..Default::default()
            }
        );
        assert_eq!(s.cpus.len(), 2);
        assert_eq!((s.cpus[1].cpu, s.cpus[1].jiffies.idle), (1, 608673));
        assert_eq!((s.context_switches, s.forks), (6518714, 46924));
        assert_eq!((s.procs_running, s.procs_blocked), (2, 0));
        assert_eq!(s.total.total(), 117390 + 25211 + 1204897 + 788 + 4067 + 19);
    }

    #[test]
    fn guest_time_is_not_counted_twice() {
        let j = CpuJiffies {
            user: 10,
            nice: 5,
            guest: 7,
            guest_nice: 3,
            ..Default::default()
        };
        assert_eq!(j.total(), 15);
    }

    #[test]
    fn old_kernels_have_fewer_columns_and_new_ones_more() {
        let text = "cpu 1 2 3 4\ncpu0 1 2 3 4 5 6 7\nctxt 1\nprocesses 1\nprocs_running 1\nprocs_blocked 0\n";
        let s = parse_stat(text).unwrap();
        assert_eq!(
            s.total,
            CpuJiffies {
                user: 1,
                nice: 2,
                system: 3,
                idle: 4,
                ..Default::default()
            }
        );
        assert_eq!(
            (
                s.cpus[0].jiffies.iowait,
                s.cpus[0].jiffies.softirq,
                s.cpus[0].jiffies.steal
            ),
            (5, 7, 0)
        );

        let newer = "cpu 1 2 3 4 5 6 7 8 9 10 11 12\nctxt 1\nprocesses 1\nprocs_running 1\n\
                     procs_blocked 0\nnew_line 9 9\ncpufreq whatever\n";
        let s = parse_stat(newer).unwrap();
        assert_eq!(s.total.guest_nice, 10);
        assert!(s.cpus.is_empty(), "`cpufreq` is an unknown line, not a CPU");
    }

    #[test]
    fn a_malformed_number_names_the_line_and_field() {
        let text = REAL.replace("cpu1 51829", "cpu1 51x29");
        let e = parse_stat(&text).unwrap_err();
        assert_eq!(
            e.to_string(),
            "/proc/stat line 3: cpu1 user: \"51x29\" is not a valid number"
        );
        let e = parse_stat(&REAL.replace("ctxt 6518714", "ctxt -5")).unwrap_err();
        assert!(matches!(e, ProcError::Parse { line: 5, .. }), "{e}");
        let e = parse_stat("cpu 1 2 3\n").unwrap_err();
        assert!(e.to_string().contains("at least 4"), "{e}");
    }

    #[test]
    fn an_empty_file_is_an_error() {
        let e = parse_stat("").unwrap_err();
        assert_eq!(e.to_string(), "/proc/stat: no `cpu` line");
        let e = parse_stat(&REAL.replace("procs_blocked 0\n", "")).unwrap_err();
        assert_eq!(e.to_string(), "/proc/stat: no `procs_blocked` line");
    }
}
