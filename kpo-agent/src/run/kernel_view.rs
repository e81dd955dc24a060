//! What the rules read of the kernel, through the change path: the current value of a sysctl
//! (host or namespace) and, from the journal, its value before KPO first changed it and whether
//! the value there is the rules' own. Each value is read at most once per evaluation (finding a
//! namespace by inode walks /proc).
use std::collections::BTreeMap;

use crate::{
    actuate::param::{ParamAddress, Value},
    advise::rules::KernelView,
    change::ChangePath,
    policy::Source,
};

pub struct PathView<'a> {
    path: &'a ChangePath,
    host_netns: u64,
    read: BTreeMap<String, Option<i64>>,
}

impl<'a> PathView<'a> {
    pub fn new(path: &'a ChangePath, host_netns: u64) -> Self {
        Self {
            path,
            host_netns,
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

    fn set_by_rules(&mut self, address: &ParamAddress) -> Option<i64> {
        let key = crate::journal::target_key(address);
        let journal = &self.path.journal;
        let state = journal.params().find(|p| p.key == key)?;
        let id = state.holding?;
        let change = journal.intent(id)?;
        // An operator's `kpo apply`, the LLM's or the optimizer's value is theirs to keep.
        (change.source == Source::Rules && state.still_holds(id, &change.after))
            .then(|| change.after.as_int())
            .flatten()
    }

    fn cgroup_v1(&mut self) -> bool {
        memory_cgroup_v1()
    }
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

    fn propose(p: &mut ChangePath, source: Source, v: i64) {
        let r = p
            .propose(&Proposal {
                address: SOMAX.parse().unwrap(),
                value: Value::Int(v.into()),
                source,
                reason: "test".into(),
            })
            .unwrap();
        assert!(r.refusal.is_none(), "{}", r.describe());
    }

    /// The accept-queue rule steps back only the rules' own value: the latest change applied
    /// came from the rules and still holds.
    #[test]
    fn set_by_rules_is_the_rules_own_change_while_it_holds() {
        let dir = tempfile::tempdir().unwrap();
        let k = kernel(&[(SOMAX, Value::Int(1024))]);
        let (mut p, _) = path(dir.path(), POLICY, &k);
        let a: ParamAddress = SOMAX.parse().unwrap();
        assert_eq!(PathView::new(&p, 1).set_by_rules(&a), None, "never changed");
        propose(&mut p, Source::Rules, 2048);
        assert_eq!(PathView::new(&p, 1).set_by_rules(&a), Some(2048));
        // `kpo apply net.core.somaxconn=8192`.
        propose(&mut p, Source::Operator, 8192);
        assert_eq!(
            PathView::new(&p, 1).set_by_rules(&a),
            None,
            "the operator's"
        );
        propose(&mut p, Source::Rules, 16384);
        assert_eq!(PathView::new(&p, 1).set_by_rules(&a), Some(16384));
        // A person writes 8192, KPO yields, and the person hands it back (`kpo resume`).
        k.0.lock()
            .unwrap()
            .values
            .insert(SOMAX.into(), Value::Int(8192));
        p.journal
            .set_yielded(&a, Some(Value::Int(8192)), "pid 9 sysctl")
            .unwrap();
        assert_eq!(PathView::new(&p, 1).set_by_rules(&a), None, "yielded");
        p.journal.resume_param(SOMAX).unwrap();
        assert_eq!(PathView::new(&p, 1).set_by_rules(&a), None, "handed back");
        assert_eq!(PathView::new(&p, 1).original(&a), Some(1024), "kept");
    }
}
