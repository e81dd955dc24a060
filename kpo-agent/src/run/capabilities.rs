//! The capabilities `kpo run` uses beyond being uid 0. A pod given a list of capabilities in
//! place of `privileged: true` (or a container runtime's default set) may leave some out, and each
//! one missing loses something without any failure to show it (s60 story BS-1, BS-2, BS-4: no
//! listener's owner, no namespace only other processes hold, sensors "rejected by the verifier").
//! Said once at start, each with what it costs and what to add.
use caps::{CapSet, Capability};

/// What each capability `kpo run` lacks costs it, in words for the log, from `has` (the
/// process's effective set).
pub fn missing(has: impl Fn(Capability) -> bool) -> Vec<String> {
    let mut lost = Vec::new();
    let sys_admin = has(Capability::CAP_SYS_ADMIN);
    // CAP_SYS_ADMIN stands in for both where the kernel is older than 5.8, or is given alone.
    // Named as they are missing (s60 story BU-3: "no CAP_BPF and CAP_PERFMON" with CAP_BPF held).
    let ebpf_missing: Vec<&str> = [
        (Capability::CAP_BPF, "CAP_BPF"),
        (Capability::CAP_PERFMON, "CAP_PERFMON"),
    ]
    .into_iter()
    .filter(|(cap, _)| !has(*cap))
    .map(|(_, name)| name)
    .collect();
    if !sys_admin && !ebpf_missing.is_empty() {
        lost.push(format!(
            "no {} (nor CAP_SYS_ADMIN): the eBPF sensors and the sysctl watch cannot load (the \
             sensors event says which are off, with the kernel's error)",
            ebpf_missing.join(" or ")
        ));
    }
    if !sys_admin {
        lost.push(
            "no CAP_SYS_ADMIN: no network namespace but the agent's own can be entered, so \
             other namespaces' listeners, counters and sysctls are out of reach (kpo apply there \
             fails)"
                .to_string(),
        );
    }
    if !has(Capability::CAP_NET_ADMIN) {
        let watch = if sys_admin {
            ""
        } else {
            ", nor the sysctl watch loaded (it needs CAP_NET_ADMIN or CAP_SYS_ADMIN: changes by \
             others are then found only by comparing values)"
        };
        lost.push(format!(
            "no CAP_NET_ADMIN: NIC coalescing cannot be changed{watch}"
        ));
    }
    if !has(Capability::CAP_SYS_PTRACE) {
        lost.push(
            "no CAP_SYS_PTRACE: other processes' descriptors and namespaces (/proc/PID/fd, \
             /proc/PID/ns/net) cannot be read, so listeners show no owner (pid and comm null) \
             and a network namespace only other processes hold is not watched"
                .to_string(),
        );
    }
    lost
}

/// Whether `uid_map` (`/proc/self/uid_map`) maps every uid to itself: the initial user
/// namespace, where capabilities are the host's.
fn initial_user_namespace(uid_map: &str) -> bool {
    let fields: Vec<&str> = uid_map.split_whitespace().collect();
    fields == ["0", "0", "4294967295"]
}

/// [`missing`] for this process, each line ending with what to do.
pub fn missing_here() -> Vec<String> {
    let has = |cap| caps::has_cap(None, CapSet::Effective, cap).unwrap_or(true);
    // In a user namespace of its own (rootless podman, `unshare -Ur`) every capability reads as
    // held, and holds only over what that namespace owns (s60 review2 R2-3).
    let own_user_namespace = std::fs::read_to_string("/proc/self/uid_map")
        .is_ok_and(|map| !initial_user_namespace(&map));
    let user_namespace = own_user_namespace.then(|| {
        "kpo run runs in a user namespace of its own: its capabilities hold only over what that \
         namespace owns, so the eBPF sensors, other network namespaces and the host's parameters \
         are out of reach; run it in the host's user namespace (as root, or a privileged pod \
         without a user namespace of its own)"
            .to_string()
    });
    let lacking = missing(has).into_iter().map(|why| {
        format!(
            "kpo run lacks a capability it uses: {why}; run it with every capability (a \
             privileged pod, as deploy/daemonset.yaml does, or add the capability to the \
             container's securityContext)"
        )
    });
    lacking.chain(user_namespace).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each capability left out is named once, with what it costs; CAP_SYS_ADMIN stands in for
    /// CAP_BPF and CAP_PERFMON, as the kernel lets it.
    #[test]
    fn each_capability_left_out_is_named_with_its_cost() {
        let all = |_| true;
        assert!(missing(all).is_empty());
        let without = |left_out: &'static [Capability]| move |c| !left_out.contains(&c);
        let named = |lost: Vec<String>| -> Vec<String> {
            lost.iter()
                .map(|l| l.split(':').next().unwrap().to_string())
                .collect()
        };
        assert_eq!(
            named(missing(without(&[Capability::CAP_SYS_PTRACE]))),
            ["no CAP_SYS_PTRACE"]
        );
        assert_eq!(
            named(missing(without(&[Capability::CAP_SYS_ADMIN]))),
            ["no CAP_SYS_ADMIN"]
        );
        assert!(
            missing(without(&[Capability::CAP_BPF])).is_empty(),
            "CAP_SYS_ADMIN covers it"
        );
        assert_eq!(
            named(missing(without(&[
                Capability::CAP_SYS_ADMIN,
                Capability::CAP_PERFMON
            ]))),
            ["no CAP_PERFMON (nor CAP_SYS_ADMIN)", "no CAP_SYS_ADMIN"]
        );
        assert_eq!(
            named(missing(without(&[
                Capability::CAP_SYS_ADMIN,
                Capability::CAP_BPF,
                Capability::CAP_PERFMON
            ]))),
            [
                "no CAP_BPF or CAP_PERFMON (nor CAP_SYS_ADMIN)",
                "no CAP_SYS_ADMIN"
            ]
        );
        // Coalescing, and the sysctl watch unless CAP_SYS_ADMIN stands in (s60 review2 R2-2).
        assert_eq!(
            missing(without(&[Capability::CAP_NET_ADMIN])),
            ["no CAP_NET_ADMIN: NIC coalescing cannot be changed"]
        );
        assert!(missing(without(&[
            Capability::CAP_NET_ADMIN,
            Capability::CAP_SYS_ADMIN
        ]))
        .iter()
        .any(|l| l.starts_with(
            "no CAP_NET_ADMIN: NIC coalescing cannot be changed, nor the sysctl watch \
                     loaded"
        )),);
    }

    #[test]
    fn only_the_identity_map_is_the_initial_user_namespace() {
        assert!(initial_user_namespace("         0          0 4294967295\n"));
        assert!(!initial_user_namespace(
            "         0       1000          1\n"
        ));
        assert!(!initial_user_namespace("0 100000 65536\n"));
    }
}
