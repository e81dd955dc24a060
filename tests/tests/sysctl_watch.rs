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

/// What [`an_agent_in_its_own_cgroup_namespace_says_what_its_watch_cannot_see`] needs besides: the
/// tests in the host's cgroup namespace, whose agent it compares with one in a namespace of its
/// own (from a container's, "the host's" is not at hand).
pub fn host_cgroup_namespace_requirement() -> Option<String> {
    cgroup_namespace_requirement().or_else(|| {
        (kpo_agent::sensors::sysctl_watch::in_own_cgroup_namespace() == Some(true))
            .then(|| "the tests run in a cgroup namespace of their own, not the host's".into())
    })
}

/// A cgroup made for a test under the cgroup2 root, removed when dropped (its processes gone).
struct TestCgroup(PathBuf);

impl Drop for TestCgroup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.0);
    }
}

/// `kpo run` in a cgroup namespace of its own, placed as a container runtime would place it (in a
/// cgroup made for it), attaches its watch to the cgroup2 mount that reaches furthest up, and
/// says so when that is only its namespace's root: started in the host's namespace, or in one of
/// its own that still sees the host's mount (root `/..` in mountinfo), it attaches with nothing
/// to say; with only a cgroup2 mount of its own namespace's root (what a runtime mounts), it
/// says what the watch cannot see.
pub fn an_agent_in_its_own_cgroup_namespace_says_what_its_watch_cannot_see() {
    const WARNING: &str = "sysctl watch: the agent is in a cgroup namespace of its own";
    const OFF: &str = "sysctl watch off";
    const ON: &str = "sysctl watch on: sysctl writes are seen as they happen";
    let hierarchy = this_cgroup2_root().expect("cgroup v2 mounted");
    let cgroup = TestCgroup(hierarchy.join(format!("kpo-test-{}", std::process::id())));
    std::fs::create_dir(&cgroup.0).unwrap();
    let procs = cgroup.0.join("cgroup.procs");
    let kpo = crate::agent_binary::kpo_binary();
    // How the agent is started: the shell puts itself in the test's cgroup, then execs.
    let placements = [
        ("the host's namespace".to_string(), false),
        (format!("exec unshare --cgroup {}", kpo.display()), false),
        (
            format!(
                "exec unshare --cgroup --mount --propagation private sh -c 'umount -l {h} && \
                 mount -t cgroup2 none {h} && exec {kpo} \"$@\"' sh",
                h = hierarchy.display(),
                kpo = kpo.display()
            ),
            true,
        ),
    ];
    for (how, warns) in placements {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("policy.toml"), "[defaults]\n").unwrap();
        let (events, stderr) = (dir.path().join("events.ndjson"), dir.path().join("stderr"));
        let start = if how.starts_with("exec") {
            format!("echo $$ > {} && {how} \"$@\"", procs.display())
        } else {
            format!("exec {} \"$@\"", kpo.display())
        };
        let child = Command::new("sh")
            .args(["-c", &start, "sh"])
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
        wait_until(
            &format!("the agent started ({how})"),
            Duration::from_secs(30),
            || {
                crate::agent_binary::lines(&events)
                    .iter()
                    .any(|e| e["kind"] == "sensors")
            },
        );
        agent.sigterm_and_wait();
        let text = std::fs::read_to_string(&stderr).unwrap();
        assert!(!text.contains(OFF), "{how}: {text}");
        assert_eq!(text.contains(WARNING), warns, "{how}: {text}");
        // Attached and seeing every process's writes: said so (s55 story AV-5).
        assert_eq!(text.contains(ON), !warns, "{how}: {text}");
    }
}
