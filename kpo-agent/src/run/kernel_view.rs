//! What the rules read of the kernel, through the change path: the current value of a sysctl
//! (host or namespace) and, from the journal, its value before KPO first changed it. Each value
//! is read at most once per evaluation (finding a namespace by inode walks /proc).
use std::collections::BTreeMap;

use crate::{
    actuate::param::{ParamAddress, Value},
    advise::rules::KernelView,
    change::ChangePath,
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
}
