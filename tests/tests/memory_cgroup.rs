//! The memory rule says swappiness reaches only the root cgroup when the memory controller is on
//! a cgroup v1 hierarchy. Whatever a process sees mounted at /sys/fs/cgroup (a pod's own mount)
//! must not change that answer: the kernel's /proc/cgroups is the same in every mount namespace.
use nix::{
    mount::{mount, MsFlags},
    sched::{unshare, CloneFlags},
};

pub fn requirement() -> Option<String> {
    (!nix::unistd::Uid::effective().is_root())
        .then(|| "needs root (makes a mount namespace)".to_string())
}

/// The memory line of /proc/cgroups: on a v1 hierarchy (ID not 0) and enabled.
fn proc_cgroups_says_v1() -> bool {
    let text = std::fs::read_to_string("/proc/cgroups").unwrap_or_default();
    let memory = text
        .lines()
        .find(|l| l.split('\t').next() == Some("memory"));
    memory.is_some_and(|l| {
        let columns: Vec<&str> = l.split('\t').collect();
        columns.len() == 4 && columns[1] != "0" && columns[3] == "1"
    })
}

pub fn the_answer_follows_proc_cgroups_not_what_is_mounted() {
    let expected = proc_cgroups_says_v1();
    // The same fact from another file: a process is in a cgroup of every v1 hierarchy, so memory
    // is among its v1 controllers exactly when the controller is bound to one.
    let own = std::fs::read_to_string("/proc/self/cgroup").unwrap();
    let in_v1_memory = own.lines().any(|l| {
        l.split(':')
            .nth(1)
            .is_some_and(|c| c.split(',').any(|c| c == "memory"))
    });
    assert_eq!(in_v1_memory, expected, "/proc/self/cgroup vs /proc/cgroups");
    let answer = std::thread::spawn(move || {
        // The thread's own mount namespace, gone when it ends; private, so nothing propagates out.
        unshare(CloneFlags::CLONE_NEWNS | CloneFlags::CLONE_FS)
            .expect("unshare the mount namespace");
        mount(
            None::<&str>,
            "/",
            None::<&str>,
            MsFlags::MS_REC | MsFlags::MS_PRIVATE,
            None::<&str>,
        )
        .expect("make / private");
        mount(
            Some("tmpfs"),
            "/sys/fs/cgroup",
            Some("tmpfs"),
            MsFlags::empty(),
            None::<&str>,
        )
        .expect("mount a tmpfs at /sys/fs/cgroup");
        // Make the mount look like the opposite of the truth: cgroup v2's root file where memory
        // is on v1, none where it is not.
        if expected {
            std::fs::write("/sys/fs/cgroup/cgroup.controllers", "cpu memory pids\n").unwrap();
        }
        kpo_agent::run::memory_cgroup_v1()
    })
    .join()
    .unwrap();
    assert_eq!(answer, expected, "agent vs /proc/cgroups");
}
