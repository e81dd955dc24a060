//! Sysctl writes by other processes, from the `cgroup/sysctl` program attached to the root cgroup
//! (v2). KPO uses them to yield: when a person changes a parameter KPO manages, KPO stops managing
//! it at that target and keeps the person's value.
//!
//! The program sees the writer's pid and comm, the slashed name and the value written, but not the
//! writer's network namespace. So a report is a prompt, not a verdict: the caller reads each managed
//! copy of that key (in each of its namespaces) and compares with what KPO last applied; a copy
//! that differs was changed by someone else, named by the report.
use std::{fs::File, os::fd::AsFd, path::Path};

use aya::{
    maps::{MapData, RingBuf},
    programs::{CgroupAttachMode, CgroupSysctl},
    Ebpf,
};
use kpo_common::sysctl_watch::{
    SysctlWrite, MAP_SYSCTL_WRITES, PROG_SYSCTL_WATCH, SYSCTL_NAME_LEN, SYSCTL_VALUE_LEN,
};

/// A cgroup2 mount to attach the watch to: `/sys/fs/cgroup` on unified hosts,
/// `/sys/fs/cgroup/unified` on hybrid ones (cgroup v1 controllers beside it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cgroup2Mount {
    pub path: std::path::PathBuf,
    /// Its root is this cgroup namespace's root (`/` in mountinfo), not above it: in a namespace
    /// of its own (a container's, mounted there by its runtime) that is the container's cgroup,
    /// so the watch sees only its processes.
    pub at_namespace_root: bool,
}

/// The cgroup2 mount whose root reaches furthest up: one whose root mountinfo shows above this
/// cgroup namespace's root (`/..`, `/../..`: a host's mount seen from a namespace of its own,
/// e.g. bind-mounted into a container), else one at the namespace's root (`/`; in the host's
/// namespace, the hierarchy's root). A bind mount of a sub-cgroup would see only its part.
pub fn cgroup2_mount(mountinfo: &str) -> Option<Cgroup2Mount> {
    // `ID PARENT MAJ:MIN ROOT MOUNT_POINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPER_OPTIONS`
    let mounts: Vec<(&str, &str, &str)> = mountinfo
        .lines()
        .filter_map(|line| {
            let (head, tail) = line.split_once(" - ")?;
            let mut head = head.split_whitespace().skip(3);
            let (root, mount_point) = (head.next()?, head.next()?);
            Some((tail.split_whitespace().next()?, root, mount_point))
        })
        .collect();
    mounts
        .iter()
        .enumerate()
        // A mount that a later one covers (the same mount point) is not what the path opens.
        .filter(|(i, (_, _, at))| mounts[i + 1..].iter().all(|(_, _, later)| later != at))
        .filter_map(|(_, &(fstype, root, mount_point))| {
            let above = root.len() > 1 && root.split('/').skip(1).all(|part| part == "..");
            (fstype == "cgroup2" && (root == "/" || above)).then(|| Cgroup2Mount {
                path: unescape_mount_path(mount_point).into(),
                at_namespace_root: !above,
            })
        })
        .min_by_key(|m| m.at_namespace_root)
}

/// mountinfo writes space, tab, newline and backslash in paths as octal escapes (`\040`).
fn unescape_mount_path(path: &str) -> String {
    let bytes = path.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes.get(i + 1..i + 4).and_then(|d| {
            std::str::from_utf8(d)
                .ok()
                .and_then(|d| u8::from_str_radix(d, 8).ok())
        });
        match (bytes[i], octal) {
            (b'\\', Some(b)) => {
                out.push(b);
                i += 4;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The path of [`this_cgroup2_mount`], for callers that only attach.
pub fn this_cgroup2_root() -> Result<std::path::PathBuf, WatchError> {
    this_cgroup2_mount().map(|mount| mount.path)
}

/// [`cgroup2_mount`] of this process's mountinfo.
pub fn this_cgroup2_mount() -> Result<Cgroup2Mount, WatchError> {
    let text =
        std::fs::read_to_string("/proc/self/mountinfo").map_err(|source| WatchError::Cgroup {
            path: "/proc/self/mountinfo".into(),
            source,
        })?;
    cgroup2_mount(&text).ok_or_else(|| {
        // PID 1's mounts say whether cgroup v2 is mounted on this host at all.
        let init = std::fs::read_to_string("/proc/1/mountinfo").ok();
        no_cgroup2(&text, init.as_deref())
    })
}

/// Why no cgroup2 mount is seen, from this process's mountinfo and PID 1's: where PID 1 has one,
/// this mount namespace hides it. `ip netns exec NAME` is the usual cause: it mounts a sysfs of
/// its own on /sys (its source is NAME), without the mounts beneath the host's.
fn no_cgroup2(own: &str, init: Option<&str>) -> WatchError {
    let Some(host) = init.and_then(cgroup2_mount) else {
        return WatchError::NoCgroup2;
    };
    let netns = own.lines().rev().find_map(|line| {
        let (head, tail) = line.split_once(" - ")?;
        let mount_point = head.split_whitespace().nth(4)?;
        let mut tail = tail.split_whitespace();
        let (fstype, source) = (tail.next()?, tail.next()?);
        (mount_point == "/sys" && fstype == "sysfs" && source != "sysfs")
            .then(|| unescape_mount_path(source))
    });
    WatchError::Cgroup2Hidden {
        host: host.path.display().to_string(),
        netns,
    }
}

/// The inode of the host's (the initial) cgroup namespace: fixed by the kernel
/// (`PROC_CGROUP_INIT_INO`, include/linux/proc_ns.h, Linux 4.6 and later).
const INIT_CGROUP_NAMESPACE: u64 = 0xEFFF_FFFB;

/// Whether the calling thread is in a cgroup namespace of its own, not the host's: `Some(true)`
/// then. In one (a container's: runtimes on cgroup v2 usually give a container its own), the
/// cgroup2 mount's root is the namespace's root cgroup, so a watch attached there sees only the
/// writes of processes in it, and nothing says so. `None` when it cannot be told (no cgroup
/// namespaces in this kernel, or /proc unreadable).
pub fn in_own_cgroup_namespace() -> Option<bool> {
    use std::os::unix::fs::MetadataExt;
    let namespace = std::fs::metadata("/proc/thread-self/ns/cgroup").ok()?;
    Some(namespace.ino() != INIT_CGROUP_NAMESPACE)
}

#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error("the eBPF object has no {0} (built without the sysctl watch?)")]
    Missing(&'static str),
    /// The object did not load at all: its error is logged with the sensors' (s60 story BS-3:
    /// said as "the eBPF object has no the eBPF object").
    #[error("the eBPF object did not load (the sensors' warning above says why)")]
    NotLoaded,
    #[error("loading the cgroup/sysctl program: {0}")]
    Load(#[source] aya::programs::ProgramError),
    #[error(
        "the kernel did not permit loading the cgroup/sysctl program ({0}): it needs CAP_BPF, \
         CAP_NET_ADMIN and CAP_PERFMON, or CAP_SYS_ADMIN (the start's log names what the agent \
         lacks); changes by others are found only by comparing values"
    )]
    NotPermitted(String),
    #[error("the verifier rejected the cgroup/sysctl program: {0}")]
    Rejected(String),
    #[error(
        "cgroup v2 is not mounted (no cgroup2 mount in /proc/self/mountinfo that another mount \
         does not cover); the sysctl watch \
         needs it, so changes by others are found only by comparing values"
    )]
    NoCgroup2,
    #[error(
        "cgroup v2 is not mounted in this mount namespace (no cgroup2 mount in \
         /proc/self/mountinfo that another mount does not cover), though PID 1 has it at \
         {host}{}; the sysctl watch needs it, so changes by others are found only by \
         comparing values: mount it here before the agent starts, e.g. `ip netns exec {} sh \
         -c 'mount -t cgroup2 none /sys/fs/cgroup && exec kpo run ...'` (the mount stays in \
         that command's mount namespace)",
        netns.as_ref().map_or(String::new(), |n| format!(
            ": /sys here is a sysfs of its own, mounted by `ip netns exec {n}`, without the \
             host's mounts beneath it"
        )),
        netns.as_deref().unwrap_or("NAME")
    )]
    Cgroup2Hidden { host: String, netns: Option<String> },
    #[error("opening the cgroup v2 root {path}: {source} (is cgroup v2 mounted there?)")]
    Cgroup {
        path: String,
        source: std::io::Error,
    },
    #[error("attaching the cgroup/sysctl program to {path}: {source}")]
    Attach {
        path: String,
        source: aya::programs::ProgramError,
    },
    #[error("taking the ring buffer {MAP_SYSCTL_WRITES}: {0}")]
    Map(#[source] aya::maps::MapError),
}

/// A sysctl write by a process other than this agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SysctlWriteEvent {
    pub pid: u32,
    pub comm: String,
    /// Dotted name (`net.core.somaxconn`).
    pub name: String,
    /// The value as written (trimmed); cut at 63 bytes.
    pub value: String,
    pub value_truncated: bool,
}

/// The attached watcher and its ring buffer. Dropping it detaches the program.
pub struct SysctlWatch {
    ring: RingBuf<MapData>,
    own_pid: u32,
}

impl SysctlWatch {
    /// Loads the program from `ebpf`, attaches it to the cgroup at `cgroup_root` alongside any
    /// other programs there (it never displaces them), and takes its ring buffer.
    ///
    /// The attach is a BPF link (kernel 5.7+), which the kernel always adds beside the cgroup's
    /// other programs; link creation refuses the `BPF_F_ALLOW_MULTI` flag (EINVAL), so the mode
    /// passed is aya's `Single`, meaning no flag.
    pub fn attach(ebpf: &mut Ebpf, cgroup_root: &Path) -> Result<Self, WatchError> {
        let program: &mut CgroupSysctl = ebpf
            .program_mut(PROG_SYSCTL_WATCH)
            .ok_or(WatchError::Missing(PROG_SYSCTL_WATCH))?
            .try_into()
            .map_err(WatchError::Load)?;
        program
            .load()
            .map_err(|e| match super::loader::LoadRefusal::of(&e) {
                super::loader::LoadRefusal::NotPermitted(why) => WatchError::NotPermitted(why),
                super::loader::LoadRefusal::Rejected(why) => WatchError::Rejected(why),
            })?;
        let path = cgroup_root.display().to_string();
        let cgroup = File::open(cgroup_root).map_err(|source| WatchError::Cgroup {
            path: path.clone(),
            source,
        })?;
        program
            .attach(cgroup.as_fd(), CgroupAttachMode::Single)
            .map_err(|source| WatchError::Attach { path, source })?;
        let map = ebpf
            .take_map(MAP_SYSCTL_WRITES)
            .ok_or(WatchError::Missing(MAP_SYSCTL_WRITES))?;
        let ring = RingBuf::try_from(map).map_err(WatchError::Map)?;
        Ok(Self {
            ring,
            own_pid: std::process::id(),
        })
    }

    /// Every write reported since the last call, except this agent's own.
    pub fn drain(&mut self) -> Vec<SysctlWriteEvent> {
        let mut out = Vec::new();
        while let Some(item) = self.ring.next() {
            if let Some(event) = decode(&item) {
                if event.tgid != self.own_pid {
                    out.push(to_event(&event));
                }
            }
        }
        out
    }

    /// The ring buffer, to wait on its file descriptor for readability.
    pub fn ring(&self) -> &RingBuf<MapData> {
        &self.ring
    }
}

fn decode(bytes: &[u8]) -> Option<SysctlWrite> {
    if bytes.len() < std::mem::size_of::<SysctlWrite>() {
        tracing::warn!(len = bytes.len(), "short sysctl write report ignored");
        return None;
    }
    // SAFETY: the size is checked; the ring buffer gives no alignment guarantee, so copy out.
    Some(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<SysctlWrite>()) })
}

/// Text up to the first NUL (or `len`, whichever is first), lossily decoded.
fn text(bytes: &[u8], len: i32, cap: usize) -> String {
    let limit = if len >= 0 {
        (len as usize).min(cap)
    } else {
        cap
    };
    let bytes = &bytes[..limit];
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

fn to_event(w: &SysctlWrite) -> SysctlWriteEvent {
    let slashed = text(&w.name, w.name_len, SYSCTL_NAME_LEN);
    SysctlWriteEvent {
        pid: w.tgid,
        comm: crate::shown::escaped(&text(&w.comm, -1, w.comm.len())).into_owned(),
        name: crate::actuate::param::canonical_sysctl(&slashed).unwrap_or(slashed),
        value: text(&w.value, w.value_len, SYSCTL_VALUE_LEN)
            .trim()
            .to_string(),
        value_truncated: w.value_len < 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(name: &str, value: &str, value_len: i32) -> SysctlWrite {
        let mut w = SysctlWrite {
            tgid: 42,
            tid: 43,
            name_len: name.len() as i32,
            value_len,
            comm: [0; 16],
            name: [0; SYSCTL_NAME_LEN],
            value: [0; SYSCTL_VALUE_LEN],
        };
        w.comm[..6].copy_from_slice(b"sysctl");
        w.name[..name.len()].copy_from_slice(name.as_bytes());
        w.value[..value.len()].copy_from_slice(value.as_bytes());
        w
    }

    #[test]
    fn reports_decode_to_dotted_names_and_trimmed_values() {
        let e = to_event(&write("net/core/somaxconn", "4096\n", 5));
        assert_eq!(
            e,
            SysctlWriteEvent {
                pid: 42,
                comm: "sysctl".into(),
                name: "net.core.somaxconn".into(),
                value: "4096".into(),
                value_truncated: false,
            }
        );
        // A VLAN interface's dot stays inside its component.
        let e = to_event(&write("net/ipv4/conf/eth0.100/rp_filter", "1", 1));
        assert_eq!(e.name, "net.ipv4.conf.eth0/100.rp_filter");
        // -E2BIG: the value was cut; what fitted is kept and marked.
        let e = to_event(&write("net/ipv4/tcp_rmem", "4096 131072 6291456", -7));
        assert!(e.value_truncated);
        assert_eq!(e.value, "4096 131072 6291456");
    }

    fn cgroup2_root(mountinfo: &str) -> Option<std::path::PathBuf> {
        cgroup2_mount(mountinfo).map(|m| m.path)
    }

    /// Defect (s39 fix #5): under `ip netns exec NAME kpo run`, the watch was off with "cgroup v2
    /// is not mounted", which is false of the host and named neither the cause (that command's
    /// own sysfs on /sys) nor the remedy.
    #[test]
    fn a_cgroup2_mount_hidden_by_ip_netns_exec_is_named_with_the_remedy() {
        // Seen under `ip netns exec kpoqa-fix-agent` on a hybrid host, and its PID 1's.
        let own = "357 354 0:51 / /sys rw,relatime - sysfs kpoqa-fix-agent rw\n";
        let init = "23 27 0:22 / /sys rw,relatime - sysfs sysfs rw\n\
                    31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755\n\
                    41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n";
        assert_eq!(
            no_cgroup2(own, Some(init)).to_string(),
            "cgroup v2 is not mounted in this mount namespace (no cgroup2 mount in \
             /proc/self/mountinfo that another mount does not cover), though PID 1 has it at \
             /sys/fs/cgroup/unified: /sys here is a sysfs of its own, mounted by `ip netns exec \
             kpoqa-fix-agent`, without the host's mounts beneath it; the sysctl watch needs it, so changes by others are found only by \
             comparing values: mount it here before the agent starts, e.g. `ip netns exec \
             kpoqa-fix-agent sh -c 'mount -t cgroup2 none /sys/fs/cgroup && exec kpo run ...'` \
             (the mount stays in that command's mount namespace)"
        );
        // Hidden some other way: no name to give.
        assert!(no_cgroup2("", Some(init))
            .to_string()
            .contains("PID 1 has it at /sys/fs/cgroup/unified; the sysctl watch needs it"));
        // Not mounted on the host either (or PID 1's mounts unreadable): as before.
        for init in [None, Some("23 27 0:22 / /sys rw - sysfs sysfs rw\n")] {
            assert!(matches!(no_cgroup2(own, init), WatchError::NoCgroup2));
        }
    }

    #[test]
    fn finds_the_cgroup2_root_on_unified_and_hybrid_hosts() {
        let hybrid = "\
25 31 0:22 / /sys/fs/cgroup ro,nosuid - tmpfs tmpfs ro,mode=755
26 25 0:23 / /sys/fs/cgroup/unified rw,nosuid shared:9 - cgroup2 cgroup2 rw,nsdelegate
27 25 0:24 / /sys/fs/cgroup/cpu rw,nosuid - cgroup cgroup rw,cpu
";
        assert_eq!(
            cgroup2_root(hybrid),
            Some(std::path::PathBuf::from("/sys/fs/cgroup/unified"))
        );
        let unified = "30 24 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n";
        assert_eq!(cgroup2_root(unified), Some("/sys/fs/cgroup".into()));
        // A container's view: its own sub-cgroup bind-mounted, not the root; and v1 only.
        let container = "40 30 0:26 /kubepods/pod1 /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n";
        assert_eq!(cgroup2_root(container), None);
        assert_eq!(
            cgroup2_root("27 25 0:24 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw\n"),
            None
        );
        // From a cgroup namespace of its own: its runtime's mount at the namespace's root, and
        // the host's bind-mounted, whose root is above it; the host's reaches every process.
        let namespaced = "\
40 30 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw
41 30 0:26 /../.. /host/cgroup rw - cgroup2 cgroup2 rw
42 30 0:26 /../x /other rw - cgroup2 cgroup2 rw
";
        assert_eq!(
            cgroup2_mount(namespaced),
            Some(Cgroup2Mount {
                path: "/host/cgroup".into(),
                at_namespace_root: false
            })
        );
        assert_eq!(
            cgroup2_mount(namespaced.lines().next().unwrap()),
            Some(Cgroup2Mount {
                path: "/sys/fs/cgroup".into(),
                at_namespace_root: true
            })
        );
        assert_eq!(cgroup2_mount(namespaced.lines().nth(2).unwrap()), None);
        // The host's mount covered by the runtime's at the same place: the path opens the latter.
        let covered = "\
41 30 0:26 /.. /sys/fs/cgroup rw - cgroup2 cgroup2 rw
43 41 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw
";
        assert_eq!(
            cgroup2_mount(covered),
            Some(Cgroup2Mount {
                path: "/sys/fs/cgroup".into(),
                at_namespace_root: true
            })
        );
        let spaced = "30 24 0:26 / /mnt/cg\\0402 rw - cgroup2 cgroup2 rw\n";
        assert_eq!(cgroup2_root(spaced), Some("/mnt/cg 2".into()));
    }

    #[test]
    fn short_reports_are_ignored() {
        assert!(decode(&[0u8; 8]).is_none());
    }
}
