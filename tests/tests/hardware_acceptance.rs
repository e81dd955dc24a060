//! Hardware acceptance on this machine's own NIC or cpufreq policy, opted in by an operator
//! (docs/actuators.md, "Hardware acceptance"): the routines of `kpo_agent::actuate::acceptance`,
//! whose unit tests run them over `FakeCoalesce` and temporary cpufreq trees, here through the
//! real ethtool netlink backend and the real `/sys`.
//!
//! They change the host's own hardware for a moment, so they run only when asked for: without
//! `KPO_TEST_COALESCE_NIC` (or `KPO_TEST_CPUFREQ`) they are listed as ignored, with the reason.
//! Asked for, anything that stops them (not root, no such NIC or policy, a driver without the
//! parameters) is a failure that says so: the operator wanted an answer for this hardware.

use std::path::Path;

use kpo_agent::actuate::acceptance::{accept_coalescing, accept_cpufreq};
use kpo_agent::actuate::coalesce::{CoalesceAttrBackend, EthtoolCoalesce};
use kpo_agent::actuate::{ActuateError, Roots};
use kpo_agent::run::one_agent::{self, Claim};

/// The NIC whose coalescing is checked.
pub const NIC_VAR: &str = "KPO_TEST_COALESCE_NIC";
/// `1` (the first cpufreq policy) or a policy's name (`policy4`).
pub const CPUFREQ_VAR: &str = "KPO_TEST_CPUFREQ";

/// The variable's value when it asks for a run: set, not empty, not `0`.
fn asked(var: &str) -> Option<String> {
    std::env::var(var)
        .ok()
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty() && v != "0")
}

fn not_asked(var: &str, value: &str, changes: &str) -> Option<String> {
    asked(var).is_none().then(|| {
        format!(
            "changes this machine's own {changes} for a moment: set {var}={value} (as root) to \
             run it on real hardware"
        )
    })
}

pub fn coalescing_requirement() -> Option<String> {
    not_asked(NIC_VAR, "<nic>", "NIC coalescing")
}

pub fn cpufreq_requirement() -> Option<String> {
    not_asked(CPUFREQ_VAR, "1", "CPU frequency limits")
}

/// Root, and no kpo agent here: its value check would take the acceptance's writes for a
/// person's and yield the parameter. The agent's claim is held until the returned value is
/// dropped, at the end of the run, so an agent started meanwhile (systemd's `Restart=`, a
/// rescheduled pod) refuses to start.
fn may_run(var: &str, value: &str) -> Claim {
    assert!(
        nix::unistd::Uid::effective().is_root(),
        "{var}={value} asks for a change of this machine's hardware, which needs root: run the \
         test as root"
    );
    hold_off_agents(var, value).unwrap_or_else(|e| panic!("{e}"))
}

/// Takes the claim a kpo agent takes at start, in this network namespace (an agent in another
/// one is not seen: for cpufreq, whose policies are host-wide, the operator must check).
fn hold_off_agents(var: &str, value: &str) -> Result<Claim, String> {
    one_agent::claim().map_err(|e| {
        format!(
            "{var}={value}: {e} (it would take the acceptance's changes for a person's and yield \
             the parameter)"
        )
    })
}

pub fn coalescing_on_a_real_nic() {
    let nic = asked(NIC_VAR).expect("run only when asked for");
    let _claim = may_run(NIC_VAR, &nic);
    let driver = std::fs::read_link(format!("/sys/class/net/{nic}/device/driver"))
        .ok()
        .and_then(|d| d.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "unknown".into());
    let mut backend = || -> Result<Box<dyn CoalesceAttrBackend>, ActuateError> {
        Ok(Box::new(EthtoolCoalesce::open()?))
    };
    match accept_coalescing(&nic, &mut backend, &mut |line| println!("{line}")) {
        Ok(report) => println!("driver {driver}: {report}"),
        Err(e) => panic!(
            "hardware acceptance of NIC {nic} (driver {driver}) failed: {e}\ndo not give the \
             optimizer this NIC's coalescing in auto mode"
        ),
    }
}

/// The policy `value` names: `1` is the lowest-numbered policy under `sys`.
fn policy_named(value: &str, sys: &Path) -> String {
    if value != "1" {
        assert!(
            value.starts_with("policy"),
            "{CPUFREQ_VAR}={value}: give 1 (the first policy) or a policy's name, such as policy0"
        );
        return value.to_string();
    }
    let dir = sys.join("devices/system/cpu/cpufreq");
    let mut numbers: Vec<u32> = std::fs::read_dir(&dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter_map(|e| e.file_name().to_str()?.strip_prefix("policy")?.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    numbers.sort_unstable();
    let first = numbers.first().unwrap_or_else(|| {
        panic!(
            "{CPUFREQ_VAR}=1, but {} lists no cpufreq policy: this machine has no cpufreq driver \
             (common in VMs)",
            dir.display()
        )
    });
    format!("policy{first}")
}

pub fn cpufreq_on_a_real_policy() {
    let value = asked(CPUFREQ_VAR).expect("run only when asked for");
    let _claim = may_run(CPUFREQ_VAR, &value);
    let roots = Roots::default();
    let policy = policy_named(&value, &roots.sys);
    match accept_cpufreq(&roots, &policy, &mut |line| println!("{line}")) {
        Ok(report) => println!("{report}"),
        Err(e) => panic!(
            "hardware acceptance of cpufreq {policy} failed: {e}\ndo not give the optimizer \
             this policy's frequency limits in auto mode"
        ),
    }
}

/// `KPO_TEST_CPUFREQ=1` is the lowest-numbered policy (policy2 before policy10, whatever else the
/// directory holds); a name is taken as given.
pub fn the_first_policy_is_the_lowest_numbered() {
    let tmp = tempfile::tempdir().unwrap();
    let cpufreq = tmp.path().join("devices/system/cpu/cpufreq");
    for dir in ["policy10", "policy2", "ondemand"] {
        std::fs::create_dir_all(cpufreq.join(dir)).unwrap();
    }
    assert_eq!(policy_named("1", tmp.path()), "policy2");
    assert_eq!(policy_named("policy10", tmp.path()), "policy10");
}

/// The claim the run takes keeps an agent from starting until the run ends; one already there
/// stops the run, saying why. Needs no root (the claim is an abstract socket of this namespace),
/// but no agent running here.
pub fn the_run_holds_off_agents_until_it_ends() {
    let claim = hold_off_agents(NIC_VAR, "eth1").unwrap();
    let started = one_agent::claim().expect_err("an agent starting during the run refuses");
    assert!(
        matches!(started, one_agent::ClaimError::AnotherAgent { .. }),
        "{started}"
    );
    drop(claim);
    let agent = one_agent::claim().expect("the run over, an agent may start");
    let e = one_agent::claim().unwrap_err();
    assert_eq!(
        hold_off_agents(CPUFREQ_VAR, "1").unwrap_err(),
        format!(
            "KPO_TEST_CPUFREQ=1: {e} (it would take the acceptance's changes for a person's and \
             yield the parameter)"
        )
    );
    drop(agent);
}
