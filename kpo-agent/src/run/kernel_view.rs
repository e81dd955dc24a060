//! What the rules read of the kernel, through the change path: the current value of a sysctl
//! (host or namespace) and, from the journal, its value before KPO first changed it, the values
//! it had in this boot, whether the value there is the rules' own, and whether the guard's
//! quarantine holds a value. Each value is
//! read at most once per evaluation (finding a namespace by inode walks /proc).
use std::{collections::BTreeMap, time::SystemTime};

use crate::{
    actuate::param::{ParamAddress, Value},
    advise::rules::KernelView,
    change::ChangePath,
    journal::{Intent, IntentKind, Journal, Outcome, Record},
    policy::Source,
};

pub struct PathView<'a> {
    path: &'a ChangePath,
    host_netns: u64,
    hz: Option<u32>,
    read: BTreeMap<String, Option<i64>>,
}

impl<'a> PathView<'a> {
    /// `hz`: the kernel's tick rate, [`kernel_hz`] read once for the kernel's life.
    pub fn new(path: &'a ChangePath, host_netns: u64, hz: Option<u32>) -> Self {
        Self {
            path,
            host_netns,
            hz,
            read: BTreeMap::new(),
        }
    }
}

impl KernelView for PathView<'_> {
    fn host_netns(&self) -> u64 {
        self.host_netns
    }

    fn current(&mut self, address: &ParamAddress) -> Option<i64> {
        let path = self.path;
        *self
            .read
            .entry(address.to_string())
            .or_insert_with(|| path.read(address).ok().as_ref().and_then(Value::as_int))
    }

    fn original(&mut self, address: &ParamAddress) -> Option<i64> {
        let key = crate::journal::target_key(address);
        self.path
            .journal
            .params()
            .find(|p| p.key == key)
            .and_then(|p| p.original.as_ref())
            .and_then(Value::as_int)
    }

    fn held_in_this_boot(&mut self, address: &ParamAddress, value: i64) -> bool {
        let key = crate::journal::target_key(address);
        let journal = &self.path.journal;
        let value = Value::Int(value.into());
        for record in journal.records().iter().rev() {
            let intent = match record {
                Record::Intent(i) if i.key == key => i,
                // A namespace's inode may name another namespace after this record.
                Record::Gone { key: k, .. } if k == &key => return false,
                _ => continue,
            };
            if journal.before_this_boot(intent) {
                return false;
            }
            let left = match journal.outcome(intent.id) {
                Some(Outcome::Applied { read_back, .. }) => Some(read_back),
                Some(Outcome::Failed {
                    left: Some(left), ..
                }) => Some(left),
                _ => None,
            };
            if intent.before == value || left == Some(&value) {
                return true;
            }
        }
        false
    }

    fn set_by_rules(&mut self, address: &ParamAddress) -> Option<i64> {
        let key = crate::journal::target_key(address);
        let journal = &self.path.journal;
        let state = journal.params().find(|p| p.key == key)?;
        let Some(id) = state.holding else {
            // No change holds it after a revert; one of the guard's may have put back a value of
            // the rules' own.
            let value = state.last_applied.as_ref()?;
            return (state.yielded.is_none()
                && state.unsettled.is_none()
                && guard_put_back_rules_own(journal, &key, value))
            .then(|| value.as_int())
            .flatten();
        };
        let change = journal.intent(id)?;
        // An operator's `kpo apply`, the LLM's or the optimizer's value is theirs to keep.
        (change.source == Source::Rules && state.still_holds(id, &change.after))
            .then(|| change.after.as_int())
            .flatten()
    }

    fn rules_base(&mut self, address: &ParamAddress) -> Option<i64> {
        let key = crate::journal::target_key(address);
        let journal = &self.path.journal;
        let records = journal.records();
        // The rules' current run of changes in this boot, which archiving keeps live whole; from
        // its first, the writes before are walked back while they are the guard's reverts of
        // the rules' changes and the rules' changes before those.
        let (mut end, mut base) = match journal.first_of_run(address, Source::Rules) {
            Some(first) => (
                records
                    .iter()
                    .position(|r| matches!(r, Record::Intent(i) if i.id == first.id))?,
                Some(first.before.clone()),
            ),
            None => (records.len(), None),
        };
        while let Some((at, write, left)) = latest_write(journal, &records[..end], &key) {
            // Each write must have left the value the next one started from: else someone's
            // write came between, and the value after it is theirs.
            if journal.before_this_boot(write) || base.as_ref().is_some_and(|b| b != &left) {
                break;
            }
            match (write.source, &write.kind) {
                (Source::Rules, IntentKind::Change) => {
                    base = Some(write.before.clone());
                    end = at;
                }
                (Source::Guard, IntentKind::Revert { of: Some(undone) }) => {
                    let Some((at_undone, change, _)) = latest_write(journal, &records[..at], &key)
                    else {
                        break;
                    };
                    if change.id != *undone
                        || change.source != Source::Rules
                        || change.kind != IntentKind::Change
                        || change.before != left
                    {
                        break;
                    }
                    base = Some(change.before.clone());
                    end = at_undone;
                }
                _ => break,
            }
        }
        base.as_ref().and_then(Value::as_int)
    }

    fn quarantined(&mut self, address: &ParamAddress, value: i64) -> bool {
        let now = SystemTime::now();
        self.path
            .journal
            .context(address, &Value::Int(value.into()), now)
            .quarantined_until
            .is_some_and(|until| until > now)
    }

    fn cgroup_v1(&mut self) -> bool {
        memory_cgroup_v1()
    }

    fn hz(&mut self) -> Option<u32> {
        self.hz
    }
}

/// `CONFIG_HZ` of the running kernel: from its config in /boot when that is there, else worked
/// out from /proc/timer_list (a container rarely has the host's /boot).
pub fn kernel_hz() -> Option<u32> {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").ok()?;
    std::fs::read_to_string(format!("/boot/config-{}", release.trim()))
        .ok()
        .and_then(|config| hz_from_config(&config))
        .or_else(|| hz_from_timer_list(&timer_list_head()?))
}

/// `CONFIG_HZ` of a kernel config, when it is a rate a kernel can be built with: a damaged
/// file's 0 would be divided by.
fn hz_from_config(config: &str) -> Option<u32> {
    config
        .lines()
        .find_map(|l| l.strip_prefix("CONFIG_HZ="))
        .and_then(|hz| hz.trim().parse().ok())
        .filter(|hz| (10..=10_000).contains(hz))
}

/// /proc/timer_list up to its first `jiffies:` line, which is all [`hz_from_timer_list`] needs:
/// the whole file lists every CPU's timers, megabytes on a large host, made by the kernel as it
/// is read.
fn timer_list_head() -> Option<String> {
    use std::io::BufRead;
    const MAX_BYTES: usize = 1 << 20;
    let file = std::fs::File::open("/proc/timer_list").ok()?;
    let mut head = String::new();
    for line in std::io::BufReader::new(file).lines() {
        let line = line.ok()?;
        head.push_str(&line);
        head.push('\n');
        if line.starts_with("jiffies: ") || head.len() > MAX_BYTES {
            break;
        }
    }
    Some(head)
}

/// Jiffies start 300 s short of wrapping 32 bits (`INITIAL_JIFFIES`, include/linux/jiffies.h),
/// so `jiffies - 2^32 = HZ × (seconds since boot - 300)`, less the fraction of a second of boot
/// before they count: near enough, once the uptime is a minute away from 300 s, to tell apart
/// the rates kernels are built with. (On a 32-bit kernel jiffies have wrapped: no rate fits.)
fn hz_from_timer_list(text: &str) -> Option<u32> {
    let field = |name: &str| text.lines().find_map(|l| l.strip_prefix(name));
    let now_ns: f64 = field("now at ")?.strip_suffix(" nsecs")?.parse().ok()?;
    let jiffies = field("jiffies: ")?.trim().parse::<u64>().ok()? as f64;
    let counted_s = now_ns / 1e9 - 300.0;
    if counted_s.abs() < 60.0 {
        return None;
    }
    let hz = (jiffies - 2f64.powi(32)) / counted_s;
    [100, 250, 300, 1000]
        .into_iter()
        .find(|&rate| (hz / f64::from(rate) - 1.0).abs() < 0.05)
}

/// Whether `value`, which KPO's latest write at `key` left, was put there by the guard undoing a
/// change of the rules made over a value of their own: a step back the guard reverted puts the
/// rules' raise back, and that raise is still theirs to step back once the stepped-back value's
/// quarantine ends (else it would stay for ever). Read from the live journal, newest first: the
/// write before the guard's revert must be the change it undid, and the write before that the
/// rules' own (a change of theirs, or again the guard undoing one of theirs). A yield, a
/// hand-back, a namespace gone, another proposer's change or revert, a write of an earlier boot,
/// or a history archived since ends the walk: the value is not taken for theirs.
fn guard_put_back_rules_own(journal: &Journal, key: &str, value: &Value) -> bool {
    let records = journal.records();
    let mut end = records.len();
    let mut put_back_by_guard = false;
    loop {
        let Some((at, write, left)) = latest_write(journal, &records[..end], key) else {
            return false;
        };
        if journal.before_this_boot(write) || &left != value {
            return false;
        }
        match (write.source, &write.kind) {
            (Source::Rules, IntentKind::Change) => return put_back_by_guard && left == write.after,
            (Source::Guard, IntentKind::Revert { of: Some(undone) }) => {
                let Some((at_undone, change, _)) = latest_write(journal, &records[..at], key)
                else {
                    return false;
                };
                if change.id != *undone
                    || change.source != Source::Rules
                    || change.kind != IntentKind::Change
                    || &change.before != value
                {
                    return false;
                }
                put_back_by_guard = true;
                end = at_undone;
            }
            _ => return false,
        }
    }
}

/// The latest of `records` that set `key`'s value: an intent that took effect, where it is, and
/// the value it left. `None` at a yield, a hand-back, the end of its namespace or an intent
/// still without an outcome, before any: what came before is not the value there now.
fn latest_write<'a>(
    journal: &'a Journal,
    records: &[Record],
    key: &str,
) -> Option<(usize, &'a Intent, Value)> {
    for (at, record) in records.iter().enumerate().rev() {
        let id = match record {
            Record::Intent(i) if i.key == key => i.id,
            Record::Yield { key: k, .. }
            | Record::Manage { key: k, .. }
            | Record::Gone { key: k, .. }
                if k == key =>
            {
                return None
            }
            // Before an archiving pass's marker the journal keeps a selection of each key's
            // records (its first change, its latest...): ones never next to each other there.
            Record::Archived { .. } => return None,
            _ => continue,
        };
        let intent = journal.intent(id)?;
        let left = match (journal.outcome(id)?, &intent.kind) {
            (Outcome::Applied { read_back, .. }, _) => read_back,
            (
                Outcome::Failed {
                    left: Some(left), ..
                },
                _,
            ) => left,
            // A revert that took; not one whose write was put back.
            (
                Outcome::Reverted {
                    read_back: Some(v), ..
                },
                IntentKind::Revert { .. },
            ) if v != &intent.before => v,
            // Nothing written, or written and put back: the value before it stayed.
            _ => continue,
        };
        return Some((at, intent, left.clone()));
    }
    None
}

/// Whether the memory controller is bound to a cgroup v1 hierarchy, system-wide: from
/// /proc/cgroups, which no mount or cgroup namespace changes, unlike what is mounted at
/// /sys/fs/cgroup (a pod's own mount, or none, and cgroup2 may be mounted anywhere).
///
/// No file means a kernel without cgroups or without their v1 part, so no v1 memory cgroups. An
/// unreadable one leaves the answer unknown, and the rule's reason then claims nothing.
pub fn memory_cgroup_v1() -> bool {
    std::fs::read_to_string("/proc/cgroups").is_ok_and(|text| memory_on_v1(&text))
}

/// From /proc/cgroups (`#subsys_name hierarchy num_cgroups enabled`): the memory line's
/// hierarchy ID is 0 when the controller is on the v2 hierarchy or on none (`cgroup_no_v1=`
/// included), and `enabled` is 0 after `cgroup_disable=memory`. A missing memory line (kernels
/// built without v1 memory cgroups list no such line) or one that does not parse reads as no.
fn memory_on_v1(proc_cgroups: &str) -> bool {
    proc_cgroups.lines().any(|line| {
        let mut fields = line.split_whitespace();
        let number = |f: Option<&str>| f.and_then(|f| f.parse::<u32>().ok());
        fields.next() == Some("memory")
            && number(fields.next()).is_some_and(|hierarchy| hierarchy != 0)
            && number(fields.next()).is_some()
            && number(fields.next()) == Some(1)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        change::tests::{kernel, path},
        policy::Proposal,
    };

    const HEADER: &str = "#subsys_name\thierarchy\tnum_cgroups\tenabled\n";

    /// The head of /proc/timer_list and a CPU's jiffies line, `now` seconds after boot with
    /// `jiffies`.
    fn timer_list(now_ns: u64, jiffies: u64) -> String {
        format!(
            "Timer List Version: v0.10\nHRTIMER_MAX_CLOCK_BASES: 8\nnow at {now_ns} nsecs\n\n\
             cpu: 0\n  .idle_jiffies   : {jiffies}\njiffies: {jiffies}\n"
        )
    }

    #[test]
    fn the_tick_rate_is_worked_out_from_the_timer_list() {
        // Read on a kernel built with CONFIG_HZ=250, 10677.8 s after boot.
        assert_eq!(
            hz_from_timer_list(&timer_list(10677801503051, 4297561684)),
            Some(250)
        );
        let wrap = 1u64 << 32;
        assert_eq!(
            hz_from_timer_list(&timer_list(1_000_000_000_000, wrap + 700 * 1000)),
            Some(1000)
        );
        assert_eq!(
            hz_from_timer_list(&timer_list(40_000_000_000, wrap - 260 * 100)),
            Some(100),
            "jiffies not yet past 2^32"
        );
        // Too near 300 s to tell, or no rate kernels are built with.
        assert_eq!(
            hz_from_timer_list(&timer_list(320_000_000_000, wrap + 20 * 250)),
            None
        );
        assert_eq!(
            hz_from_timer_list(&timer_list(1_000_000_000_000, wrap + 700 * 500)),
            None
        );
        assert_eq!(hz_from_timer_list("now at 5 nsecs\n"), None);
    }

    #[test]
    fn a_config_gives_its_rate_unless_no_kernel_could_run_at_it() {
        let config = |hz: &str| format!("CONFIG_NO_HZ=y\nCONFIG_HZ_250=y\nCONFIG_HZ={hz}\n");
        assert_eq!(hz_from_config(&config("250")), Some(250));
        assert_eq!(hz_from_config(&config("0")), None);
        assert_eq!(hz_from_config(&config("-1")), None);
        assert_eq!(hz_from_config("CONFIG_HZ_1000=y\n"), None);
    }

    /// The rate agrees with the running kernel's own CONFIG_HZ (/proc/config.gz, where the kernel
    /// has one, else its config in /boot, as Debian and Red Hat install it).
    #[test]
    fn the_tick_rate_is_the_running_kernels() {
        let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
        let config = std::process::Command::new("zcat")
            .arg("/proc/config.gz")
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .or_else(|| std::fs::read_to_string(format!("/boot/config-{}", release.trim())).ok());
        let Some(config) = config else {
            kpo_test_skip::skip("neither /proc/config.gz nor /boot/config-RELEASE to compare with");
            return;
        };
        let configured = hz_from_config(&config);
        let Some(text) = timer_list_head() else {
            kpo_test_skip::skip("/proc/timer_list unreadable");
            return;
        };
        let uptime: f64 = std::fs::read_to_string("/proc/uptime")
            .unwrap()
            .split_whitespace()
            .next()
            .and_then(|s| s.parse().ok())
            .unwrap();
        if (uptime - 300.0).abs() < 70.0 {
            kpo_test_skip::skip("booted about 300 s ago, when the timer list cannot tell");
            return;
        }
        assert_eq!(hz_from_timer_list(&text), configured);
        assert_eq!(kernel_hz(), configured);
    }

    /// /proc/cgroups with this memory line among a few controllers on the v2 hierarchy.
    fn proc_cgroups(memory: &str) -> String {
        format!("{HEADER}cpuset\t0\t1\t1\ncpu\t0\t1\t1\n{memory}\npids\t0\t1\t1\n")
    }

    #[test]
    fn memory_on_a_v1_hierarchy_is_v1() {
        // A v1 host (every controller on its own hierarchy).
        let v1 = "#subsys_name\thierarchy\tnum_cgroups\tenabled\ncpuset\t3\t1\t1\ncpu\t1\t93\t1\n\
                  cpuacct\t2\t93\t1\nblkio\t7\t93\t1\nmemory\t4\t135\t1\ndevices\t5\t93\t1\n\
                  freezer\t6\t1\t1\nnet_cls\t9\t1\t1\nperf_event\t10\t1\t1\npids\t8\t100\t1\n";
        assert!(memory_on_v1(v1));
        // Hybrid: v1 controllers, memory among them, with cgroup2 (hierarchy 0) for systemd.
        assert!(memory_on_v1(&proc_cgroups("memory\t4\t32\t1")));
    }

    #[test]
    fn memory_on_the_v2_hierarchy_or_none_is_not_v1() {
        // cgroup v2 only: every controller on hierarchy 0.
        let v2 = "#subsys_name\thierarchy\tnum_cgroups\tenabled\ncpuset\t0\t78\t1\ncpu\t0\t78\t1\n\
                  cpuacct\t0\t78\t1\nblkio\t0\t78\t1\nmemory\t0\t78\t1\ndevices\t0\t78\t1\n\
                  freezer\t0\t78\t1\nnet_cls\t0\t1\t1\nperf_event\t0\t78\t1\nhugetlb\t0\t78\t1\n\
                  pids\t0\t78\t1\nrdma\t0\t78\t1\nmisc\t0\t78\t1\n";
        assert!(!memory_on_v1(v2));
        // Hybrid with only other controllers on v1 (`cgroup_no_v1=memory`, or never mounted).
        let others = "#subsys_name\thierarchy\tnum_cgroups\tenabled\ncpu\t2\t40\t1\n\
                      memory\t0\t60\t1\npids\t3\t40\t1\n";
        assert!(!memory_on_v1(others));
        // `cgroup_disable=memory`: no memory cgroups at all.
        assert!(!memory_on_v1(&proc_cgroups("memory\t0\t1\t0")));
        // A kernel without v1 memory cgroups lists no memory line.
        assert!(!memory_on_v1(&proc_cgroups("hugetlb\t0\t1\t1")));
        assert!(!memory_on_v1(""));
    }

    #[test]
    fn a_memory_line_that_does_not_parse_is_not_v1() {
        for line in [
            "memory",
            "memory\t4",
            "memory\t4\t32",
            "memory\tfour\t32\t1",
            "memory\t-4\t32\t1",
            "memory\t4\t32\tyes",
            "memory\t4\t\t1",
            "memory_x\t4\t32\t1",
            "#memory\t4\t32\t1",
        ] {
            assert!(!memory_on_v1(&proc_cgroups(line)), "{line:?}");
        }
        // Spaces instead of tabs, trailing fields a later kernel might add: still read.
        assert!(memory_on_v1(&proc_cgroups("memory 4 32 1 extra")));
    }

    const SOMAX: &str = "net.core.somaxconn@netns:4026539999";
    const POLICY: &str = r#"
[params."net.core.somaxconn"]
mode = "auto"
sources = ["rules", "operator"]
min = 128
max = 65535
"#;

    fn propose(p: &mut ChangePath, source: Source, v: i64) -> u64 {
        let r = p
            .propose(&Proposal {
                address: SOMAX.parse().unwrap(),
                value: Value::Int(v.into()),
                source,
                reason: "test".into(),
            })
            .unwrap();
        assert!(r.refusal.is_none(), "{}", r.describe());
        r.journal_id.unwrap()
    }

    fn revert(p: &mut ChangePath, id: u64, source: Source) {
        let r = p.revert_own(id, source, "test").unwrap();
        assert_eq!(
            r.status,
            crate::change::ChangeStatus::Reverted,
            "{}",
            r.describe()
        );
    }

    /// Defect: after the guard reverted a step back of the rules, the raise it put back was no
    /// longer theirs, and never stepped back again. A value the guard put back by undoing a
    /// change of the rules' made over their own value is theirs; one it put back from before
    /// their changes, or one another proposer's revert put back, is not.
    #[test]
    fn a_raise_the_guard_put_back_by_undoing_the_rules_step_back_is_theirs() {
        let dir = tempfile::tempdir().unwrap();
        let k = kernel(&[(SOMAX, Value::Int(1024))]);
        let policy = format!("[guard]\nmax_changes_per_hour = 1000\n{POLICY}");
        let (mut p, _) = path(dir.path(), &policy, &k);
        let a: ParamAddress = SOMAX.parse().unwrap();
        let by_rules = |p: &ChangePath| PathView::new(p, 1, None).set_by_rules(&a);
        let raise = propose(&mut p, Source::Rules, 4096);
        let step_back = propose(&mut p, Source::Rules, 2048);
        revert(&mut p, step_back, Source::Guard);
        assert_eq!(by_rules(&p), Some(4096), "the guard undid the step back");
        // Stepped back again (the quarantine over), and undone again.
        let step_back = propose(&mut p, Source::Rules, 2048);
        revert(&mut p, step_back, Source::Guard);
        assert_eq!(by_rules(&p), Some(4096), "twice");
        // The guard undoes the raise itself: 1024 is the original, nobody's change.
        let raise_again = propose(&mut p, Source::Rules, 8192);
        revert(&mut p, raise_again, Source::Guard);
        assert_eq!(by_rules(&p), Some(4096), "back to the first raise");
        revert(&mut p, raise, Source::Guard);
        assert_eq!(by_rules(&p), None, "the original");
        // Over an operator's value, the guard's revert of the rules' raise puts theirs back.
        propose(&mut p, Source::Operator, 8192);
        let raise = propose(&mut p, Source::Rules, 16384);
        revert(&mut p, raise, Source::Guard);
        assert_eq!(by_rules(&p), None, "the operator's");
        // An operator's `kpo revert` of the rules' step back is theirs to keep.
        propose(&mut p, Source::Rules, 16384);
        let step_back = propose(&mut p, Source::Rules, 8192);
        revert(&mut p, step_back, Source::Operator);
        assert_eq!(by_rules(&p), None, "the operator undid it");
        // A person's value handed back after the guard's revert is theirs.
        propose(&mut p, Source::Rules, 32768);
        let step_back = propose(&mut p, Source::Rules, 16384);
        revert(&mut p, step_back, Source::Guard);
        assert_eq!(by_rules(&p), Some(32768));
        p.journal
            .set_yielded(&a, Some(Value::Int(32768)), "pid 9 sysctl")
            .unwrap();
        assert_eq!(by_rules(&p), None, "yielded");
        p.journal.resume_param(SOMAX).unwrap();
        assert_eq!(by_rules(&p), None, "handed back");
    }

    /// Defect: the walk went on past an archiving pass's marker, where the journal keeps only a
    /// selection of each key's records, and linked writes that were never next to each other.
    /// What came before the marker is archived history: the raise is no longer taken for theirs.
    #[test]
    fn a_raise_the_guard_put_back_is_not_theirs_once_its_history_is_archived() {
        let dir = tempfile::tempdir().unwrap();
        let k = kernel(&[(SOMAX, Value::Int(1024))]);
        let policy = format!("[guard]\nmax_changes_per_hour = 1000\n{POLICY}");
        let a: ParamAddress = SOMAX.parse().unwrap();
        {
            let (mut p, _) = path(dir.path(), &policy, &k);
            propose(&mut p, Source::Rules, 4096);
            let step_back = propose(&mut p, Source::Rules, 2048);
            revert(&mut p, step_back, Source::Guard);
            assert_eq!(PathView::new(&p, 1, None).set_by_rules(&a), Some(4096));
        }
        let p = reopened_two_days_later(dir.path(), &policy, &k);
        assert_eq!(PathView::new(&p, 1, None).set_by_rules(&a), None);
    }

    /// The journal in `dir` reopened two days later, past a one-byte threshold: the pass moves
    /// the history to the archive.
    fn reopened_two_days_later(
        dir: &std::path::Path,
        policy: &str,
        k: &crate::change::tests::FakeActuators,
    ) -> ChangePath {
        let now = crate::journal::now_ms() + 2 * 24 * 3600 * 1000;
        let options = crate::journal::archive::Options {
            threshold: 1,
            now_ms: Some(now),
            max_ahead: std::time::Duration::from_secs(365 * 24 * 3600),
            ..Default::default()
        };
        let boot = crate::journal::Boot {
            id: crate::journal::current_boot(),
            started_ms: crate::journal::boot_started_ms(),
        };
        let journal = Journal::open_with(
            dir,
            crate::journal::Holder::Cli,
            std::time::Duration::ZERO,
            boot,
            options,
        )
        .unwrap();
        assert!(
            journal
                .records()
                .iter()
                .any(|r| matches!(r, Record::Archived { .. })),
            "archived"
        );
        ChangePath::new(
            crate::policy::Policy::parse(policy, "test.toml").unwrap(),
            journal,
            Box::new(k.clone()),
        )
    }

    /// The rules' run of changes is kept live by archiving: the value they raised from is still
    /// known after it.
    #[test]
    fn the_rules_base_outlives_an_archive() {
        let dir = tempfile::tempdir().unwrap();
        let k = kernel(&[(SOMAX, Value::Int(1024))]);
        let policy = format!("[guard]\nmax_changes_per_hour = 1000\n{POLICY}");
        let a: ParamAddress = SOMAX.parse().unwrap();
        {
            let (mut p, _) = path(dir.path(), &policy, &k);
            propose(&mut p, Source::Operator, 8192);
            propose(&mut p, Source::Rules, 16384);
            propose(&mut p, Source::Rules, 32768);
            assert_eq!(PathView::new(&p, 1, None).rules_base(&a), Some(8192));
        }
        let p = reopened_two_days_later(dir.path(), &policy, &k);
        assert_eq!(PathView::new(&p, 1, None).set_by_rules(&a), Some(32768));
        assert_eq!(PathView::new(&p, 1, None).rules_base(&a), Some(8192));
    }

    /// The value the rules raised from is the one before their own changes: the original when
    /// every change since was theirs, else the value of the last write that was not (an
    /// operator's, a person's handed back); a step back the guard reverted is walked past.
    #[test]
    fn the_rules_base_is_the_value_their_own_changes_started_from() {
        let dir = tempfile::tempdir().unwrap();
        let k = kernel(&[(SOMAX, Value::Int(1024))]);
        let policy = format!("[guard]\nmax_changes_per_hour = 1000\n{POLICY}");
        let (mut p, _) = path(dir.path(), &policy, &k);
        let a: ParamAddress = SOMAX.parse().unwrap();
        let base = |p: &ChangePath| PathView::new(p, 1, None).rules_base(&a);
        assert_eq!(base(&p), None, "never changed");
        propose(&mut p, Source::Rules, 4096);
        assert_eq!(base(&p), Some(1024));
        let step_back = propose(&mut p, Source::Rules, 2048);
        assert_eq!(base(&p), Some(1024));
        revert(&mut p, step_back, Source::Guard);
        assert_eq!(base(&p), Some(1024), "the guard undid the step back");
        propose(&mut p, Source::Operator, 8192);
        assert_eq!(base(&p), None, "the operator's value");
        propose(&mut p, Source::Rules, 16384);
        assert_eq!(base(&p), Some(8192), "raised from the operator's value");
        let step_back = propose(&mut p, Source::Rules, 8192);
        revert(&mut p, step_back, Source::Guard);
        assert_eq!(base(&p), Some(8192));
        // A person's 2048 handed back, then raised by the rules.
        k.0.lock()
            .unwrap()
            .values
            .insert(SOMAX.into(), Value::Int(2048));
        p.journal
            .set_yielded(&a, Some(Value::Int(2048)), "pid 9 sysctl")
            .unwrap();
        p.journal.resume_param(SOMAX).unwrap();
        propose(&mut p, Source::Rules, 4096);
        assert_eq!(base(&p), Some(2048), "raised from the person's value");
        assert_eq!(PathView::new(&p, 1, None).original(&a), Some(1024));
    }

    /// Defect: the accept-queue rule stepped somaxconn back toward the journal's original, below
    /// a value an operator set before the rules raised over it: 16384, 8192, then 4096 and on
    /// to 1024. It now stops at the operator's 8192.
    #[test]
    fn a_step_back_stops_at_the_value_the_rules_raised_from() {
        use crate::advise::{
            limits::{Mode, ParamLimits, StaticPolicy},
            rules::{
                accept_queue::{AcceptQueueConfig, AcceptQueueRule},
                testing::{at, listener, window},
            },
        };
        let dir = tempfile::tempdir().unwrap();
        let k = kernel(&[(SOMAX, Value::Int(1024))]);
        let policy = format!("[guard]\nmax_changes_per_hour = 1000\n{POLICY}");
        let (mut p, _) = path(dir.path(), &policy, &k);
        propose(&mut p, Source::Operator, 8192);
        propose(&mut p, Source::Rules, 16384);
        let mut rule = AcceptQueueRule::new(AcceptQueueConfig {
            calm_windows: 5,
            ..AcceptQueueConfig::default()
        });
        let auto = StaticPolicy::new().with(
            "net.core.somaxconn",
            &[crate::advise::recommendation::Source::Rules],
            ParamLimits::new(Mode::Auto),
        );
        let calm = window(vec![listener(4026539999, 16384, 40, 0)]);
        let mut advised = Vec::new();
        for i in 1..=30 {
            let r = rule.evaluate(&at(i), &calm, &mut PathView::new(&p, 1, None), &auto);
            for r in r {
                let v = r.recommended_value.as_ref().unwrap().as_int().unwrap();
                assert!(
                    r.reason
                        .contains("toward 8192, the value the rules raised it from"),
                    "{}",
                    r.reason
                );
                propose(&mut p, Source::Rules, v);
                advised.push(v);
            }
        }
        assert_eq!(advised, [8192]);
    }

    /// A value the guard reverted is quarantined for the rules until its quarantine ends.
    #[test]
    fn quarantined_until_the_quarantine_ends() {
        let dir = tempfile::tempdir().unwrap();
        let k = kernel(&[(SOMAX, Value::Int(1024))]);
        let (mut p, _) = path(dir.path(), POLICY, &k);
        let a: ParamAddress = SOMAX.parse().unwrap();
        let quarantined = |p: &ChangePath, v| PathView::new(p, 1, None).quarantined(&a, v);
        assert!(!quarantined(&p, 2048));
        p.journal
            .quarantine(
                &a,
                &Value::Int(2048),
                std::time::Duration::from_secs(3600),
                "t",
            )
            .unwrap();
        assert!(quarantined(&p, 2048));
        assert!(!quarantined(&p, 4096), "another value");
        let now = crate::journal::now_ms();
        p.journal
            .append(crate::journal::Record::Quarantine {
                ts_ms: now,
                key: SOMAX.into(),
                value: Value::Int(2048),
                until_ms: now,
                why: "ended".into(),
                earlier: None,
            })
            .unwrap();
        assert!(!quarantined(&p, 2048), "ended");
    }

    /// The accept-queue rule takes a listener's limit for an old somaxconn when the journal shows
    /// the namespace had it: every value before a write and every value one left, whoever wrote
    /// it, until the namespace's inode is recorded gone.
    #[test]
    fn held_in_this_boot_is_every_value_the_journal_shows_there() {
        let dir = tempfile::tempdir().unwrap();
        let k = kernel(&[(SOMAX, Value::Int(1024))]);
        let (mut p, _) = path(dir.path(), POLICY, &k);
        let a: ParamAddress = SOMAX.parse().unwrap();
        let held = |p: &ChangePath, v| PathView::new(p, 1, None).held_in_this_boot(&a, v);
        assert!(!held(&p, 1024), "never changed: nothing in the journal");
        propose(&mut p, Source::Rules, 2048);
        propose(&mut p, Source::Operator, 4096);
        propose(&mut p, Source::Rules, 8192);
        for v in [1024, 2048, 4096, 8192] {
            assert!(held(&p, v), "{v}");
        }
        assert!(!held(&p, 3000));
        p.journal.forget_gone_namespace(&a, "test").unwrap();
        assert!(!held(&p, 2048), "another namespace's now");
    }

    /// The accept-queue rule steps back only the rules' own value: the latest change applied
    /// came from the rules and still holds.
    #[test]
    fn set_by_rules_is_the_rules_own_change_while_it_holds() {
        let dir = tempfile::tempdir().unwrap();
        let k = kernel(&[(SOMAX, Value::Int(1024))]);
        let (mut p, _) = path(dir.path(), POLICY, &k);
        let a: ParamAddress = SOMAX.parse().unwrap();
        assert_eq!(
            PathView::new(&p, 1, None).set_by_rules(&a),
            None,
            "never changed"
        );
        propose(&mut p, Source::Rules, 2048);
        assert_eq!(PathView::new(&p, 1, None).set_by_rules(&a), Some(2048));
        // `kpo apply net.core.somaxconn=8192`.
        propose(&mut p, Source::Operator, 8192);
        assert_eq!(
            PathView::new(&p, 1, None).set_by_rules(&a),
            None,
            "the operator's"
        );
        propose(&mut p, Source::Rules, 16384);
        assert_eq!(PathView::new(&p, 1, None).set_by_rules(&a), Some(16384));
        // A person writes 8192, KPO yields, and the person hands it back (`kpo resume`).
        k.0.lock()
            .unwrap()
            .values
            .insert(SOMAX.into(), Value::Int(8192));
        p.journal
            .set_yielded(&a, Some(Value::Int(8192)), "pid 9 sysctl")
            .unwrap();
        assert_eq!(PathView::new(&p, 1, None).set_by_rules(&a), None, "yielded");
        p.journal.resume_param(SOMAX).unwrap();
        assert_eq!(
            PathView::new(&p, 1, None).set_by_rules(&a),
            None,
            "handed back"
        );
        assert_eq!(PathView::new(&p, 1, None).original(&a), Some(1024), "kept");
    }
}
