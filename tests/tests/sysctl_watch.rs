//! Yielding to people starts with seeing them: a `sysctl -w` by another process inside a namespace
//! the test made is reported with its pid, comm, name and value; the agent's own writes are not.
use std::{path::PathBuf, process::Command, time::Duration};

use kpo_agent::sensors::{
    sysctl_watch::{this_cgroup2_root, SysctlWriteEvent},
    SensorKind, SensorOptions, Sensors,
};
use kpo_integration::Netns;

use crate::common::wait_until;

fn host_somaxconn() -> String {
    std::fs::read_to_string("/proc/sys/net/core/somaxconn").unwrap()
}

pub fn writes_by_others_are_reported_with_pid_comm_and_value() {
    let host_before = host_somaxconn();
    let mut opts = SensorOptions::new(PathBuf::from("/sys/kernel/btf/vmlinux"));
    opts.disabled = SensorKind::ALL.to_vec();
    let mut sensors = Sensors::load(&opts);
    let root = this_cgroup2_root().expect("cgroup v2 mounted");
    let mut watch = sensors
        .attach_sysctl_watch(&root)
        .expect("attach the cgroup/sysctl watch");
    let ns = Netns::new();

    // The agent's own write (any of its threads) is not someone else's.
    ns.run(|| std::fs::write("/proc/sys/net/core/somaxconn", "555").unwrap());
    // A person's, through procps in the namespace (`ip netns exec` execs in place: same pid).
    let mut child = Command::new("ip")
        .args(["netns", "exec", &ns.name, "sysctl", "-q", "-w"])
        .arg("net.core.somaxconn=1234")
        .spawn()
        .unwrap();
    let writer = child.id();
    assert!(child.wait().unwrap().success());

    let mut seen: Vec<SysctlWriteEvent> = Vec::new();
    wait_until("the write reported", Duration::from_secs(5), || {
        seen.extend(watch.drain());
        seen.iter().any(|e| e.pid == writer)
    });
    let report = seen.iter().find(|e| e.pid == writer).unwrap();
    assert_eq!(report.comm, "sysctl");
    assert_eq!(report.name, "net.core.somaxconn");
    assert_eq!(report.value, "1234");
    assert!(!report.value_truncated);
    assert!(
        seen.iter().all(|e| e.pid != std::process::id()),
        "own write reported: {seen:?}"
    );
    // Watching never refuses: the person's value is in place, the host's untouched.
    assert_eq!(
        ns.exec(&["cat", "/proc/sys/net/core/somaxconn"]).trim(),
        "1234"
    );
    assert_eq!(host_somaxconn(), host_before);
}
