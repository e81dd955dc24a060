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

/// An agent in a cgroup namespace of its own (a container's) is told apart from one in the
/// host's: the watch it attaches there sees only that namespace's writes, which the agent must
/// say. The same process, one thread moved into a new cgroup namespace.
pub fn a_cgroup_namespace_of_its_own_is_told_apart() {
    use kpo_agent::sensors::sysctl_watch::in_own_cgroup_namespace;
    use std::os::unix::fs::MetadataExt;
    let host = std::fs::metadata("/proc/thread-self/ns/cgroup")
        .unwrap()
        .ino();
    assert_eq!(
        in_own_cgroup_namespace(),
        Some(host != 0xEFFF_FFFB),
        "this thread's namespace, inode {host}"
    );
    let (inode, answer) = std::thread::spawn(|| {
        // Namespaces are per thread: this one's goes when the thread ends.
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWCGROUP)
            .expect("unshare the cgroup namespace");
        let inode = std::fs::metadata("/proc/thread-self/ns/cgroup")
            .unwrap()
            .ino();
        (inode, in_own_cgroup_namespace())
    })
    .join()
    .unwrap();
    assert_ne!(inode, host, "a new cgroup namespace");
    assert_eq!(answer, Some(true));
}

/// What [`a_cgroup_namespace_of_its_own_is_told_apart`] needs: root (a new cgroup namespace) and a
/// kernel with cgroup namespaces (Linux 4.6 and later).
pub fn cgroup_namespace_requirement() -> Option<String> {
    if !nix::unistd::Uid::effective().is_root() {
        return Some("needs root (makes a cgroup namespace)".into());
    }
    (!std::path::Path::new("/proc/thread-self/ns/cgroup").exists())
        .then(|| "this kernel has no cgroup namespaces (/proc/thread-self/ns/cgroup)".into())
}

/// `kpo run` started in a cgroup namespace of its own (`unshare --cgroup`, as a container runtime
/// would) says at start that its watch sees only that namespace's writes; started in the host's,
/// it says nothing of the kind.
pub fn an_agent_in_its_own_cgroup_namespace_says_what_its_watch_cannot_see() {
    const WARNING: &str = "sysctl watch: the agent is in a cgroup namespace of its own";
    let stderr_of = |own_namespace: bool| {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("policy.toml"), "").unwrap();
        let (events, stderr) = (dir.path().join("events.ndjson"), dir.path().join("stderr"));
        // `unshare` without --fork executes the agent in its place: the child is the agent.
        let mut command = if own_namespace {
            let mut c = Command::new("unshare");
            c.arg("--cgroup").arg(crate::agent_binary::kpo_binary());
            c
        } else {
            Command::new(crate::agent_binary::kpo_binary())
        };
        let child = command
            .args(["run", "--tick", "100ms", "--window", "500ms", "--events"])
            .arg(&events)
            .arg("--policy")
            .arg(dir.path().join("policy.toml"))
            .arg("--state-dir")
            .arg(dir.path().join("state"))
            .arg("--socket")
            .arg(dir.path().join("kpo.sock"))
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .unwrap();
        // Killed if the wait below panics.
        let mut agent = crate::agent_decides::Running(child);
        wait_until("the agent started", Duration::from_secs(30), || {
            crate::agent_binary::lines(&events)
                .iter()
                .any(|e| e["kind"] == "sensors")
        });
        agent.sigterm_and_wait();
        std::fs::read_to_string(&stderr).unwrap()
    };
    let host = stderr_of(false);
    assert!(!host.contains(WARNING), "{host}");
    let own = stderr_of(true);
    assert!(own.contains(WARNING), "{own}");
}
