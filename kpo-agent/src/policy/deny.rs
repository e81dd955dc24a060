//! The built-in deny-list: sysctls that can run code as root, or weaken the host's security, and
//! that no policy can lift. Checked on every write path, in the change path itself
//! ([`crate::change`]), whoever asks. docs/policy.md gives the reason for each entry.
use globset::{Glob, GlobMatcher};

/// One denied key or family of keys, with why it is denied.
#[derive(Debug, Clone, Copy)]
pub struct Denied {
    /// A glob over canonical dotted sysctl names.
    pub pattern: &'static str,
    pub why: &'static str,
    /// Real names this pattern covers, used to tell whether a policy glob could reach it.
    pub examples: &'static [&'static str],
}

/// The list. Patterns are globs over dotted sysctl names (`*` crosses dots).
pub const DENY_LIST: &[Denied] = &[
    Denied {
        pattern: "kernel.core_pattern",
        why: "a leading '|' runs a program as root on every crash",
        examples: &[],
    },
    Denied {
        pattern: "kernel.modprobe",
        why: "the program the kernel runs as root to load a module",
        examples: &[],
    },
    Denied {
        pattern: "kernel.hotplug",
        why: "the program the kernel runs as root on each device event",
        examples: &[],
    },
    Denied {
        pattern: "kernel.poweroff_cmd",
        why: "the program the kernel runs as root on an orderly power-off",
        examples: &[],
    },
    Denied {
        pattern: "kernel.usermodehelper.*",
        why: "the capabilities of programs the kernel starts as root",
        examples: &[
            "kernel.usermodehelper.bset",
            "kernel.usermodehelper.inheritable",
        ],
    },
    Denied {
        pattern: "fs.binfmt_misc.*",
        why: "registers interpreters the kernel runs for matching executables",
        examples: &["fs.binfmt_misc.register", "fs.binfmt_misc.status"],
    },
    Denied {
        pattern: "kernel.kexec_*",
        why: "loading a new kernel; the switch is one-way",
        examples: &[
            "kernel.kexec_load_disabled",
            "kernel.kexec_load_limit_panic",
            "kernel.kexec_load_limit_reboot",
        ],
    },
    Denied {
        pattern: "kernel.modules_disabled",
        why: "one-way: once set, no module can ever load until reboot",
        examples: &[],
    },
    Denied {
        pattern: "kernel.unprivileged_bpf_disabled",
        why: "lets unprivileged users load eBPF",
        examples: &[],
    },
    Denied {
        pattern: "kernel.unprivileged_userns_clone",
        why: "lets unprivileged users create user namespaces (Debian)",
        examples: &[],
    },
    Denied {
        pattern: "kernel.apparmor_*",
        why: "AppArmor restrictions on unprivileged user namespaces (Ubuntu)",
        examples: &["kernel.apparmor_restrict_unprivileged_userns"],
    },
    Denied {
        pattern: "kernel.unprivileged_userns_apparmor_policy",
        why: "AppArmor policy for unprivileged user namespaces (Ubuntu)",
        examples: &[],
    },
    Denied {
        pattern: "kernel.io_uring_disabled",
        why: "io_uring is a large attack surface the operator chose to close",
        examples: &[],
    },
    Denied {
        pattern: "vm.unprivileged_userfaultfd",
        why: "userfaultfd lets unprivileged users stall the kernel in exploits",
        examples: &[],
    },
    Denied {
        pattern: "kernel.kptr_restrict",
        why: "hides kernel addresses from users (defeats KASLR if lifted)",
        examples: &[],
    },
    Denied {
        pattern: "kernel.dmesg_restrict",
        why: "hides the kernel log, which leaks addresses, from users",
        examples: &[],
    },
    Denied {
        pattern: "kernel.yama.*",
        why: "ptrace restrictions between processes",
        examples: &["kernel.yama.ptrace_scope"],
    },
    Denied {
        pattern: "kernel.randomize_va_space",
        why: "address space layout randomisation",
        examples: &[],
    },
    Denied {
        pattern: "vm.mmap_rnd_*bits",
        why: "the entropy of address space layout randomisation",
        examples: &["vm.mmap_rnd_bits", "vm.mmap_rnd_compat_bits"],
    },
    Denied {
        pattern: "kernel.sysrq",
        why: "magic SysRq keys can reboot, crash or kill everything",
        examples: &[],
    },
    Denied {
        pattern: "kernel.ctrl-alt-del",
        why: "what Ctrl-Alt-Del does: an immediate reboot",
        examples: &[],
    },
    Denied {
        pattern: "kernel.cad_pid",
        why: "which process receives Ctrl-Alt-Del",
        examples: &[],
    },
    Denied {
        pattern: "kernel.perf_event_paranoid",
        why: "what unprivileged users may observe with perf",
        examples: &[],
    },
    Denied {
        pattern: "kernel.*panic*",
        why: "panic (and reboot) on oops, warnings, lockups, hung tasks or NMIs",
        examples: &[
            "kernel.panic",
            "kernel.panic_on_oops",
            "kernel.panic_on_warn",
            "kernel.softlockup_panic",
            "kernel.hardlockup_panic",
            "kernel.hung_task_panic",
            "kernel.unknown_nmi_panic",
            "kernel.panic_print",
            "kernel.panic_on_rcu_stall",
            "kernel.max_rcu_stall_to_panic",
            "kernel.panic_on_io_nmi",
            "kernel.panic_on_unrecovered_nmi",
            "kernel.panic_sys_info",
        ],
    },
    Denied {
        pattern: "kernel.warn_limit",
        why: "panics after this many kernel warnings: 1 is panic_on_warn",
        examples: &[],
    },
    Denied {
        pattern: "kernel.oops_limit",
        why: "panics after this many oopses: 1 is panic_on_oops, 0 lifts a limit against \
              oops-based exploits",
        examples: &[],
    },
    Denied {
        pattern: "vm.panic_on_oom",
        why: "panic instead of killing a task when memory runs out",
        examples: &[],
    },
    Denied {
        pattern: "kernel.tainted",
        why: "writing taints the kernel; support and crash analysis rely on it",
        examples: &[],
    },
    Denied {
        pattern: "kernel.ftrace_*",
        why: "turns function tracing off (breaking other tools) or dumps it on oops",
        examples: &["kernel.ftrace_enabled", "kernel.ftrace_dump_on_oops"],
    },
    Denied {
        pattern: "fs.suid_dumpable",
        why: "core dumps of set-uid programs leak their secrets",
        examples: &[],
    },
    Denied {
        pattern: "fs.protected_*",
        why: "link, FIFO and regular-file protections in sticky directories",
        examples: &[
            "fs.protected_symlinks",
            "fs.protected_hardlinks",
            "fs.protected_fifos",
            "fs.protected_regular",
        ],
    },
    Denied {
        pattern: "net.core.bpf_jit_*",
        why: "the eBPF JIT, its hardening and its address exposure",
        examples: &[
            "net.core.bpf_jit_enable",
            "net.core.bpf_jit_harden",
            "net.core.bpf_jit_kallsyms",
            "net.core.bpf_jit_limit",
        ],
    },
    Denied {
        pattern: "vm.mmap_min_addr",
        why: "protects against NULL-pointer dereference exploits",
        examples: &[],
    },
    Denied {
        pattern: "user.max_*_namespaces",
        why: "limits on namespaces users may create (0 turns a kind off)",
        examples: &[
            "user.max_user_namespaces",
            "user.max_net_namespaces",
            "user.max_mnt_namespaces",
            "user.max_pid_namespaces",
            "user.max_ipc_namespaces",
            "user.max_uts_namespaces",
            "user.max_cgroup_namespaces",
            "user.max_time_namespaces",
        ],
    },
    Denied {
        pattern: "dev.tty.ldisc_autoload",
        why: "lets users autoload TTY line-discipline modules",
        examples: &[],
    },
    Denied {
        pattern: "dev.tty.legacy_tiocsti",
        why: "lets users push keystrokes into other users' terminals (TIOCSTI)",
        examples: &[],
    },
];

/// Compiled deny-list.
pub struct DenyList {
    matchers: Vec<(GlobMatcher, &'static Denied)>,
}

impl Default for DenyList {
    fn default() -> Self {
        Self::new()
    }
}

impl DenyList {
    pub fn new() -> Self {
        let matchers = DENY_LIST
            .iter()
            .map(|d| {
                let glob = Glob::new(d.pattern).expect("deny-list patterns are valid globs");
                (glob.compile_matcher(), d)
            })
            .collect();
        Self { matchers }
    }

    /// The entry that denies this canonical dotted sysctl name, if any. Names that are not sysctls
    /// (`ethtool:...`, `cpufreq:...`) are never denied here.
    pub fn denies(&self, name: &str) -> Option<&'static Denied> {
        if name.starts_with("ethtool:") || name.starts_with("cpufreq:") {
            return None;
        }
        self.matchers
            .iter()
            .find(|(m, _)| m.is_match(name))
            .map(|(_, d)| *d)
    }

    /// The first denied key that a policy name or glob could reach: one of the deny-list's own
    /// names, one of its examples, a pattern's text, or a denied key this host has. So
    /// `kernel.*` or `*` are refused, while `kernel.sched_*` is not.
    pub fn reached_by(
        &self,
        policy_glob: &GlobMatcher,
        policy_text: &str,
    ) -> Option<(String, &'static Denied)> {
        if let Some(d) = self.denies(policy_text) {
            return Some((policy_text.to_string(), d));
        }
        for d in DENY_LIST {
            let literal = d.pattern.replace('*', "x");
            for name in std::iter::once(d.pattern)
                .chain(std::iter::once(literal.as_str()))
                .chain(d.examples.iter().copied())
            {
                if policy_glob.is_match(name) {
                    return Some((name.to_string(), d));
                }
            }
        }
        denied_here(self)
            .iter()
            .find(|name| policy_glob.is_match(name))
            .and_then(|name| Some((name.clone(), self.denies(name)?)))
    }
}

/// The denied keys this host has, read once from /proc/sys: the examples cannot keep up with
/// every kernel (6.x added `kernel.panic_sys_info`), and a glob such as
/// `kernel.max_rcu_stall_to_pani?` reaches a real key that no example names. The examples still
/// cover keys a host lacks, so a policy checked on one machine holds on another.
fn denied_here(deny: &DenyList) -> &'static [String] {
    static NAMES: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    NAMES.get_or_init(|| denied_under(std::path::Path::new("/proc/sys"), deny))
}

/// The denied keys under `root` (a /proc/sys tree), as dotted names. Only the directories the
/// deny patterns name before their first wildcard are listed, one level each: every denied key
/// lies there (`kernel/`, `kernel/yama/`, `net/core/`, ...), while a walk of the whole tree would
/// list every interface's `net.ipv4.conf.*` and, on systemd hosts, mount binfmt_misc by opening
/// its automount point, which has been seen to hang. `fs.binfmt_misc.*` needs no listing: its
/// pattern's own text already stands for every key under it.
fn denied_under(root: &std::path::Path, deny: &DenyList) -> Vec<String> {
    let mut dirs: Vec<String> = DENY_LIST
        .iter()
        .filter_map(|d| {
            let literal = &d.pattern[..d
                .pattern
                .find(['*', '?', '[', '{'])
                .unwrap_or(d.pattern.len())];
            literal.rfind('.').map(|end| literal[..end].to_string())
        })
        .filter(|dir| dir != "fs.binfmt_misc")
        .collect();
    dirs.sort();
    dirs.dedup();
    let mut names = Vec::new();
    for dir in dirs {
        let Ok(entries) = std::fs::read_dir(root.join(dir.replace('.', "/"))) else {
            continue;
        };
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_file()) {
                // A dot inside a component is written `/`, as `sysctl` does.
                let key = entry.file_name().to_string_lossy().replace('.', "/");
                let name = format!("{dir}.{key}");
                if deny.denies(&name).is_some() {
                    names.push(name);
                }
            }
        }
    }
    names.sort();
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deny_list_matches_names_and_families() {
        let deny = DenyList::new();
        for name in [
            "kernel.core_pattern",
            "kernel.modprobe",
            "kernel.usermodehelper.bset",
            "kernel.yama.ptrace_scope",
            "fs.protected_symlinks",
            "net.core.bpf_jit_harden",
            "user.max_user_namespaces",
            "kernel.panic_on_oops",
            "kernel.softlockup_panic",
            "fs.binfmt_misc.register",
            // Panic keys whose names lack "panic" (kernel.*panic* misses them), and keys that
            // weaken ASLR or the TTY as their neighbours on the list do.
            "kernel.warn_limit",
            "kernel.oops_limit",
            "vm.mmap_rnd_bits",
            "vm.mmap_rnd_compat_bits",
            "dev.tty.legacy_tiocsti",
        ] {
            assert!(deny.denies(name).is_some(), "{name} must be denied");
        }
        for name in [
            "net.core.somaxconn",
            "net.ipv4.tcp_rmem",
            "kernel.sched_migration_cost_ns",
            "vm.swappiness",
            "ethtool:eth0:rx-usecs",
        ] {
            assert!(deny.denies(name).is_none(), "{name} must not be denied");
        }
        for pattern in DENY_LIST {
            assert!(
                pattern.examples.iter().all(|e| deny.denies(e).is_some()),
                "{}: examples are covered",
                pattern.pattern
            );
        }
    }

    #[test]
    fn broad_globs_reach_denied_keys() {
        let deny = DenyList::new();
        let reach = |g: &str| {
            let m = Glob::new(g).unwrap().compile_matcher();
            deny.reached_by(&m, g).map(|(n, _)| n)
        };
        assert_eq!(reach("kernel.*").as_deref(), Some("kernel.core_pattern"));
        assert!(reach("*").is_some());
        assert!(reach("fs.*").is_some());
        assert!(reach("user.*").is_some());
        assert!(reach("kernel.yama.ptrace_scope").is_some());
        assert!(reach("net.core.bpf_*").is_some());
        assert!(reach("kernel.sched_*").is_none());
        assert!(reach("net.*").is_some(), "net.core.bpf_jit_*");
        assert!(reach("net.ipv4.*").is_none());
        // net.core.* would reach net.core.bpf_jit_*: name the keys instead.
        assert!(reach("net.core.*").is_some());
        assert!(reach("net.core.netdev_*").is_none());
        assert!(reach("vm.dirty_*").is_none());
        assert!(reach("kernel.max_rcu_stall_to_pani?").is_some());
        assert!(reach("kernel.pani[c]_on_rcu_stall").is_some());
    }

    /// Every denied key this host has is reached by a glob that differs from its name in the
    /// last character, whether or not an example names it.
    #[test]
    fn a_glob_reaching_any_denied_key_of_this_host_is_refused() {
        let deny = DenyList::new();
        let here = denied_here(&deny);
        assert!(
            here.iter().any(|n| n == "kernel.panic"),
            "/proc/sys is walked: {here:?}"
        );
        for name in here {
            let glob = format!("{}?", &name[..name.len() - 1]);
            let m = Glob::new(&glob).unwrap().compile_matcher();
            assert!(deny.reached_by(&m, &glob).is_some(), "{glob}");
        }
    }

    /// Only the deny patterns' own directories are listed, and only their denied keys kept;
    /// binfmt_misc is never opened (on systemd hosts, an automount point).
    #[test]
    fn denied_keys_are_read_from_the_deny_patterns_directories_only() {
        let dir = tempfile::tempdir().unwrap();
        for d in [
            "kernel/yama",
            "fs/binfmt_misc",
            "net/core",
            "net/ipv4/conf/eth0",
        ] {
            std::fs::create_dir_all(dir.path().join(d)).unwrap();
        }
        for f in [
            "kernel/panic_sys_info",
            "kernel/sched_child_runs_first",
            "kernel/yama/ptrace_scope",
            "fs/binfmt_misc/register",
            "net/core/bpf_jit_enable",
            "net/core/somaxconn",
            "net/ipv4/conf/eth0/rp_filter",
        ] {
            std::fs::write(dir.path().join(f), "").unwrap();
        }
        assert_eq!(
            denied_under(dir.path(), &DenyList::new()),
            [
                "kernel.panic_sys_info",
                "kernel.yama.ptrace_scope",
                "net.core.bpf_jit_enable"
            ]
        );
    }
}
