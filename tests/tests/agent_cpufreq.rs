//! The running agent over a temporary cpufreq tree (`kpo run --sysfs-root`): an operator's change
//! of `scaling_max_freq` through the socket lands in the tree; another writer's value there is
//! found by comparing with the value KPO applied, and KPO yields (`admin_override` with no pid or
//! comm, `seen_by: "value_check"`) and writes it no more. Without an SLO the optimizer, given the
//! knob by the policy, says it is off and why; on a tree without cpufreq it says "unsupported".
//! The host's cpufreq is never touched: every path is under the test's directory.
use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use crate::{
    agent_binary::{kpo_binary, lines, schema},
    agent_decides::{has, kpo, Running},
    common::wait_until,
};

const MAX_FREQ: &str = "cpufreq:policy0:scaling_max_freq";

const POLICY: &str = r#"
[params."cpufreq:*:scaling_max_freq"]
mode = "auto"
min = 1200000
max = 3000000
"#;

/// `<dir>/sys` with cpufreq policy0 (1.2..3 GHz, limit 3 GHz) when `with_cpufreq`; returns the
/// sysfs root and the `scaling_max_freq` file.
fn sysfs(dir: &Path, with_cpufreq: bool) -> (PathBuf, PathBuf) {
    let sys = dir.join("sys");
    let policy = sys.join("devices/system/cpu/cpufreq/policy0");
    if with_cpufreq {
        std::fs::create_dir_all(&policy).unwrap();
        for (f, v) in [
            ("cpuinfo_min_freq", "1200000"),
            ("cpuinfo_max_freq", "3000000"),
            ("scaling_min_freq", "1200000"),
            ("scaling_max_freq", "3000000"),
        ] {
            std::fs::write(policy.join(f), format!("{v}\n")).unwrap();
        }
    } else {
        std::fs::create_dir_all(sys.join("devices/system/cpu")).unwrap();
    }
    (sys, policy.join("scaling_max_freq"))
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap().trim().to_string()
}

fn assert_schema(events: &Path) {
    let validator = schema();
    for e in lines(events) {
        let errors: Vec<String> = validator.iter_errors(&e).map(|x| x.to_string()).collect();
        assert!(errors.is_empty(), "{errors:?}\n{e:#}");
    }
}

pub fn another_writer_of_a_cpufreq_limit_is_yielded_to() {
    let dir = tempfile::tempdir().unwrap();
    let (sys, max_freq) = sysfs(dir.path(), true);
    std::fs::write(dir.path().join("policy.toml"), POLICY).unwrap();
    let events = dir.path().join("events.ndjson");
    let mut agent = Running::start_with(
        dir.path(),
        &events,
        &["--sysfs-root".as_ref(), sys.as_os_str()],
    );
    // The policy gives the optimizer the knob, but the agent has no SLO: off, with the reason.
    wait_until("the optimizer's off event", Duration::from_secs(10), || {
        has(&events, |e| {
            e["kind"] == "optimizer"
                && e["event"] == "off"
                && e["reason"].as_str().unwrap_or("").contains("no SLO")
        })
    });

    let out = kpo(dir.path(), &["apply", &format!("{MAX_FREQ}=2400000")]);
    assert!(out.starts_with("applied"), "{out}");
    assert_eq!(read(&max_freq), "2400000");

    // Someone else writes the limit: the agent sees it within a window and yields.
    std::fs::write(&max_freq, "2000000\n").unwrap();
    wait_until("admin_override", Duration::from_secs(10), || {
        has(&events, |e| e["kind"] == "admin_override")
    });
    let all = lines(&events);
    let over = all.iter().find(|e| e["kind"] == "admin_override").unwrap();
    assert_eq!(over["target"], MAX_FREQ, "{over}");
    assert_eq!(over["seen_by"], "value_check");
    assert!(over["pid"].is_null() && over["comm"].is_null(), "{over}");
    assert_eq!(over["value"], 2_000_000);
    assert_eq!(over["kpo_value"], 2_400_000);

    // KPO writes it no more: another change is refused as yielded, the person's value stays.
    let refused = Command::new(kpo_binary())
        .args(["apply", &format!("{MAX_FREQ}=1800000")])
        .args([
            "--policy".as_ref(),
            dir.path().join("policy.toml").as_os_str(),
            "--state-dir".as_ref(),
            dir.path().join("state").as_os_str(),
            "--socket".as_ref(),
            dir.path().join("kpo.sock").as_os_str(),
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&refused.stdout);
    assert!(!refused.status.success(), "{stdout}");
    assert!(stdout.contains("yielded"), "{stdout}");
    assert_eq!(read(&max_freq), "2000000");
    agent.sigterm_and_wait();
    assert_eq!(read(&max_freq), "2000000", "the person's value stays");
    assert_schema(&events);
}

pub fn an_optimizer_without_cpufreq_says_unsupported() {
    let dir = tempfile::tempdir().unwrap();
    let (sys, _) = sysfs(dir.path(), false);
    std::fs::write(dir.path().join("policy.toml"), POLICY).unwrap();
    let config = dir.path().join("kpo.toml");
    std::fs::write(&config, "[optimizer]\nslo_port = 8080\nslo_max_us = 2000\n").unwrap();
    let events = dir.path().join("events.ndjson");
    let mut agent = Running::start_with(
        dir.path(),
        &events,
        &[
            "--sysfs-root".as_ref(),
            sys.as_os_str(),
            "--config".as_ref(),
            config.as_os_str(),
        ],
    );
    wait_until("the optimizer's off event", Duration::from_secs(10), || {
        has(&events, |e| e["kind"] == "optimizer" && e["event"] == "off")
    });
    let all = lines(&events);
    let off = all.iter().find(|e| e["kind"] == "optimizer").unwrap();
    let reason = off["reason"].as_str().unwrap();
    assert!(
        reason.contains("unsupported on this machine")
            && reason.contains(&format!(
                "{}/devices/system/cpu/cpufreq does not exist",
                sys.display()
            )),
        "{reason}"
    );
    // An operator's change of it is as clearly unsupported.
    let out = Command::new(kpo_binary())
        .args(["apply", &format!("{MAX_FREQ}=2400000")])
        .args([
            "--policy".as_ref(),
            dir.path().join("policy.toml").as_os_str(),
            "--state-dir".as_ref(),
            dir.path().join("state").as_os_str(),
            "--socket".as_ref(),
            dir.path().join("kpo.sock").as_os_str(),
        ])
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("unsupported on this machine"), "{text}");
    agent.sigterm_and_wait();
    assert_schema(&events);
}
