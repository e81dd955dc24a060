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
        // cgroup v2 mounted at the usual place has this file at its root; a v1 or hybrid host
        // (v1 controllers, memory among them, with v2 at /sys/fs/cgroup/unified) has not.
        !std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        change::tests::{kernel, path},
        policy::Proposal,
    };

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
