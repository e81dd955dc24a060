//! /proc/stat: CPU time in jiffies (USER_HZ ticks, 100 per second on every mainstream
//! architecture), context switches, forks, and the running/blocked task counts.
//!
//! Only the lines the agent uses are read; `intr`, `softirq`, `btime` and any future line are
//! ignored (interrupts and softirqs come from their own, per-CPU files).
use serde::Serialize;

use crate::kernel_file::limit;

use super::{
    fields::{number, numbered_lines},
    read_parsed, read_with, Parsed, ProcError, ProcRoot,
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

    /// Time spent working: user + nice (guest time included) + system + irq + softirq. Idle and
    /// iowait are idle; steal is another guest's time.
    pub fn busy(&self) -> u64 {
        [self.user, self.nice, self.system, self.irq, self.softirq]
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

/// Each field is `None` when its line is missing or does not parse (the error is returned beside
/// it): a bad `cpu` line loses the CPU shares, not the context switches.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Stat {
    /// The `cpu` line: the sum over all CPUs.
    pub total: Option<CpuJiffies>,
    /// The `cpuN` lines that parse, in file order (offline CPUs are absent).
    pub cpus: Vec<CpuStat>,
    /// `ctxt`: context switches since boot.
    pub context_switches: Option<u64>,
    /// `processes`: tasks created (forks and clones) since boot.
    pub forks: Option<u64>,
    /// `procs_running`: tasks runnable right now.
    pub procs_running: Option<u64>,
    /// `procs_blocked`: tasks in uninterruptible sleep (usually waiting for I/O) right now.
    pub procs_blocked: Option<u64>,
    /// A `cpu` or `cpuN` line did not parse: shares over the CPUs that did would describe some
    /// CPUs as the machine's (s55 story AS-1: one CPU's 80% idle given for a machine 55% idle).
    #[serde(skip)]
    pub cpu_line_failed: bool,
}

/// Parses every line it uses on its own: a line that does not parse loses only its own field
/// (or, for a `cpuN` line, that CPU), with an error naming it.
pub fn parse_stat(text: &str) -> Parsed<Stat> {
    let mut stat = Stat {
        total: None,
        cpus: Vec::new(),
        context_switches: None,
        forks: None,
        procs_running: None,
        procs_blocked: None,
        cpu_line_failed: false,
    };
    let mut errors = Vec::new();
    for (line_no, line) in numbered_lines(text) {
        let mut tokens = line.split_whitespace();
        let Some(key) = tokens.next() else { continue };
        let single = |mut tokens: std::str::SplitWhitespace| {
            let token = tokens
                .next()
                .ok_or_else(|| ProcError::parse(PATH, line_no, format!("{key}: missing value")))?;
            number(PATH, line_no, key, token)
        };
        let slot = match key {
            "cpu" => {
                stat.total = parse_jiffies(line_no, key, tokens)
                    .map_err(|e| errors.push(e))
                    .ok();
                stat.cpu_line_failed |= stat.total.is_none();
                continue;
            }
            "ctxt" => &mut stat.context_switches,
            "processes" => &mut stat.forks,
            "procs_running" => &mut stat.procs_running,
            "procs_blocked" => &mut stat.procs_blocked,
            _ => {
                // `cpuN`; anything else starting with "cpu" is an unknown line.
                if let Some(id) = key.strip_prefix("cpu").filter(|id| is_decimal(id)) {
                    let cpu = number(PATH, line_no, "cpu id", id).and_then(|cpu| {
                        Ok(CpuStat {
                            cpu,
                            jiffies: parse_jiffies(line_no, key, tokens)?,
                        })
                    });
                    match cpu {
                        Ok(cpu) => stat.cpus.push(cpu),
                        Err(e) => {
                            stat.cpu_line_failed = true;
                            errors.push(e)
                        }
                    }
                }
                continue;
            }
        };
        *slot = single(tokens).map_err(|e| errors.push(e)).ok();
    }
    let mut missing = |what: &str, absent: bool| {
        if absent {
            errors.push(ProcError::parse(PATH, 0, format!("no `{what}` line")));
        }
    };
    // A line that was there but did not parse has its own error already.
    let seen = |key: &str| {
        text.lines()
            .any(|l| l.split_whitespace().next() == Some(key))
    };
    missing("cpu", !seen("cpu"));
    missing("ctxt", !seen("ctxt"));
    missing("processes", !seen("processes"));
    missing("procs_running", !seen("procs_running"));
    missing("procs_blocked", !seen("procs_blocked"));
    Parsed::new(stat, errors)
}

pub fn read_stat(root: &ProcRoot) -> Result<Parsed<Stat>, ProcError> {
    read_parsed(root, "stat", limit::PER_CPU, parse_stat)
}

/// CPU time of all CPUs together and of each online CPU: what an energy estimate from CPU
/// utilization needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpuTotals {
    /// The `cpu` line.
    pub total: CpuJiffies,
    /// The `cpuN` lines: the CPUs online now (at least one).
    pub cpus: Vec<CpuStat>,
}

/// [`CpuTotals`] from `<root>/stat`. Strict: an error if the `cpu` line or any `cpuN` line does
/// not parse, or there is no `cpuN` line, since the estimate divides by the CPU count. The other
/// lines are not looked at.
pub fn read_cpu_totals(root: &ProcRoot) -> Result<CpuTotals, ProcError> {
    read_with(root, "stat", limit::PER_CPU, parse_cpu_totals)
}

/// The parser behind [`read_cpu_totals`], for text read elsewhere.
pub fn parse_cpu_totals(text: &str) -> Result<CpuTotals, ProcError> {
    let mut total = None;
    let mut cpus = Vec::new();
    for (line_no, line) in numbered_lines(text) {
        let mut tokens = line.split_whitespace();
        match tokens.next() {
            Some(key @ "cpu") => total = Some(parse_jiffies(line_no, key, tokens)?),
            Some(key) if key.strip_prefix("cpu").is_some_and(is_decimal) => {
                let jiffies = parse_jiffies(line_no, key, tokens)?;
                let cpu = key[3..]
                    .parse()
                    .map_err(|_| ProcError::parse(PATH, line_no, "a CPU number out of range"))?;
                cpus.push(CpuStat { cpu, jiffies });
            }
            _ => {}
        }
    }
    let total = total.ok_or_else(|| ProcError::parse(PATH, 0, "no `cpu` line"))?;
    if cpus.is_empty() {
        return Err(ProcError::parse(PATH, 0, "no `cpuN` line"));
    }
    Ok(CpuTotals { total, cpus })
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
        let s = parse_stat(REAL).strict().unwrap();
        let total = CpuJiffies {
            user: 117390,
            system: 25211,
            idle: 1204897,
            iowait: 788,
            softirq: 4067,
            steal: 19,
            ..Default::default()
        };
        assert_eq!(s.total, Some(total));
        assert_eq!(s.cpus.len(), 2);
        assert_eq!((s.cpus[1].cpu, s.cpus[1].jiffies.idle), (1, 608673));
        assert_eq!((s.context_switches, s.forks), (Some(6518714), Some(46924)));
        assert_eq!((s.procs_running, s.procs_blocked), (Some(2), Some(0)));
        assert_eq!(total.total(), 117390 + 25211 + 1204897 + 788 + 4067 + 19);
        assert_eq!(total.busy(), 117390 + 25211 + 4067);
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
        assert_eq!(j.busy(), 15);
    }

    #[test]
    fn old_kernels_have_fewer_columns_and_new_ones_more() {
        let text = "cpu 1 2 3 4\ncpu0 1 2 3 4 5 6 7\nctxt 1\nprocesses 1\nprocs_running 1\nprocs_blocked 0\n";
        let s = parse_stat(text).strict().unwrap();
        assert_eq!(
            s.total,
            Some(CpuJiffies {
                user: 1,
                nice: 2,
                system: 3,
                idle: 4,
                ..Default::default()
            })
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
        let s = parse_stat(newer).strict().unwrap();
        assert_eq!(s.total.map(|t| t.guest_nice), Some(10));
        assert!(s.cpus.is_empty(), "`cpufreq` is an unknown line, not a CPU");
    }

    #[test]
    fn a_malformed_number_names_the_line_and_field() {
        let text = REAL.replace("cpu1 51829", "cpu1 51x29");
        let e = parse_stat(&text).strict().unwrap_err();
        assert_eq!(
            e.to_string(),
            "/proc/stat line 3: cpu1 user: \"51x29\" is not a valid number"
        );
        let e = parse_stat(&REAL.replace("ctxt 6518714", "ctxt -5"))
            .strict()
            .unwrap_err();
        assert!(matches!(e, ProcError::Parse { line: 5, .. }), "{e}");
        let e = parse_stat("cpu 1 2 3\n").strict().unwrap_err();
        assert!(e.to_string().contains("at least 4"), "{e}");
    }

    /// Defect: one bad line nulled every field of the file.
    #[test]
    fn a_bad_line_loses_only_its_own_field() {
        let Parsed { value: s, errors } = parse_stat(&REAL.replace("cpu  117390", "cpu  1x7390"));
        let messages: Vec<String> = errors.iter().map(ToString::to_string).collect();
        assert_eq!(
            messages,
            ["/proc/stat line 1: cpu user: \"1x7390\" is not a valid number"]
        );
        assert_eq!(s.total, None);
        assert_eq!(s.cpus.len(), 2);
        assert_eq!((s.context_switches, s.forks), (Some(6518714), Some(46924)));
        assert_eq!((s.procs_running, s.procs_blocked), (Some(2), Some(0)));

        let Parsed { value: s, errors } = parse_stat(
            &REAL
                .replace("cpu1 51829", "cpu1 51x29")
                .replace("ctxt 6518714", "ctxt"),
        );
        let messages: Vec<String> = errors.iter().map(ToString::to_string).collect();
        assert_eq!(
            messages,
            [
                "/proc/stat line 3: cpu1 user: \"51x29\" is not a valid number",
                "/proc/stat line 5: ctxt: missing value",
            ]
        );
        assert_eq!(s.cpus.iter().map(|c| c.cpu).collect::<Vec<_>>(), [0]);
        assert_eq!((s.context_switches, s.forks), (None, Some(46924)));
        assert!(s.total.is_some());
        assert!(s.cpu_line_failed, "a CPU's line lost");
        assert!(!parse_stat(REAL).value.cpu_line_failed);
    }

    #[test]
    fn an_empty_file_is_an_error() {
        let e = parse_stat("").strict().unwrap_err();
        assert_eq!(e.to_string(), "/proc/stat: no `cpu` line");
        let Parsed { value, errors } = parse_stat(&REAL.replace("procs_blocked 0\n", ""));
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].to_string(), "/proc/stat: no `procs_blocked` line");
        assert_eq!((value.procs_blocked, value.procs_running), (None, Some(2)));
    }

    #[test]
    fn cpu_totals_for_the_energy_estimate() {
        let t = parse_cpu_totals(REAL).unwrap();
        assert_eq!(t.cpus.len(), 2);
        assert_eq!(t.total.busy(), 117390 + 25211 + 4067);
        assert_eq!(t.total.total(), 117390 + 25211 + 1204897 + 788 + 4067 + 19);
        // Strict: a bad CPU line is an error, the other lines are not looked at.
        let e = parse_cpu_totals(&REAL.replace("cpu1 51829", "cpu1 51x29")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "/proc/stat line 3: cpu1 user: \"51x29\" is not a valid number"
        );
        assert!(parse_cpu_totals(&REAL.replace("ctxt 6518714", "ctxt x")).is_ok());
        let e = parse_cpu_totals("cpu 1 2 3 4\nctxt 1\n").unwrap_err();
        assert_eq!(e.to_string(), "/proc/stat: no `cpuN` line");

        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("stat"), REAL).unwrap();
        let root = ProcRoot(dir.path().to_path_buf());
        assert_eq!(read_cpu_totals(&root).unwrap(), t);
        std::fs::write(dir.path().join("stat"), "cpu 1 2\n").unwrap();
        let e = read_cpu_totals(&root).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "{} line 1: cpu: expected at least 4 time columns, found 2",
                dir.path().join("stat").display()
            )
        );
    }
}
