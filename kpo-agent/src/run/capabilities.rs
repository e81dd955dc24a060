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
    let ebpf = has(Capability::CAP_BPF) && has(Capability::CAP_PERFMON);
    if !(sys_admin || ebpf) {
        lost.push(
            "no CAP_BPF and CAP_PERFMON (nor CAP_SYS_ADMIN): the eBPF sensors and the sysctl \
             watch cannot load (the sensors event says which are off, with the kernel's error)"
                .to_string(),
        );
    }
    if !sys_admin {
        lost.push(
            "no CAP_SYS_ADMIN: no network namespace but the agent's own can be entered, so \
             other namespaces' listeners, counters and sysctls are out of reach (kpo apply there \
             fails)"
                .to_string(),
        );
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

/// [`missing`] for this process, each line ending with what to do.
pub fn missing_here() -> Vec<String> {
    let has = |cap| caps::has_cap(None, CapSet::Effective, cap).unwrap_or(true);
    missing(has)
        .into_iter()
        .map(|why| {
            format!(
                "kpo run lacks a capability it uses: {why}; run it with every capability \
                 (a privileged pod, as deploy/daemonset.yaml does, or add the capability to the \
                 container's securityContext)"
            )
        })
        .collect()
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
            [
                "no CAP_BPF and CAP_PERFMON (nor CAP_SYS_ADMIN)",
                "no CAP_SYS_ADMIN"
            ]
        );
    }
}
