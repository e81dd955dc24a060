//! The change path end to end through the real `kpo` binary, on `net.core.somaxconn` inside a
//! network namespace this test creates: kill -9 at each step of a change (the test-only
//! `KPO_TEST_CRASH_AT` hook), restart, reconcile, `revert --all`; two CLIs racing; the deny-list.
//! The host's own somaxconn must never move.
use std::{
    os::unix::process::ExitStatusExt,
    path::PathBuf,
    process::{Command, Output},
    sync::atomic::{AtomicU32, Ordering},
};

use serde_json::Value;

fn kpo_binary() -> PathBuf {
    // target/<profile>/deps/integration-<hash> -> target/<profile>/kpo
    let exe = std::env::current_exe().unwrap();
    let bin = exe.parent().unwrap().parent().unwrap().join("kpo");
    assert!(
        bin.exists(),
        "{} missing: build it with cargo build -p kpo-agent (cargo xtask test does)",
        bin.display()
    );
    bin
}

/// Why these tests cannot run here, if they cannot: root, iproute2, and a sysctl actuator.
pub fn requirement() -> Option<String> {
    if !nix::unistd::Uid::effective().is_root() {
        return Some("needs root (creates network namespaces, writes their sysctls)".into());
    }
    if !kpo_integration::command_exists("ip") {
        return Some("iproute2 (ip) is not installed; run cargo xtask setup".into());
    }
    let probe: kpo_agent::actuate::param::ParamAddress = "net.core.somaxconn".parse().unwrap();
    if let Err(e) = kpo_agent::actuate::open_actuator(&probe, &Default::default()) {
        return Some(format!("no sysctl actuator in this build: {e}"));
    }
    None
}

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A network namespace `kpo-jr-<pid>-<n>`, deleted on drop (even after a panic).
struct Ns {
    name: String,
}

impl Ns {
    fn new() -> Ns {
        let name = format!(
            "kpo-jr-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        );
        kpo_integration::run_ok("ip", &["netns", "add", &name]);
        Ns { name }
    }
    fn path(&self) -> String {
        format!("/run/netns/{}", self.name)
    }
    fn somaxconn(&self) -> i64 {
        let out = kpo_integration::run_ok(
            "ip",
            &[
                "netns",
                "exec",
                &self.name,
                "cat",
                "/proc/sys/net/core/somaxconn",
            ],
        );
        String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
    }
}

impl Drop for Ns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

fn host_somaxconn() -> i64 {
    std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// A temporary state directory and policy file.
struct State {
    dir: PathBuf,
}

impl State {
    fn new(policy: &str) -> State {
        let dir = std::env::temp_dir().join(format!(
            "kpo-jr-state-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("policy.toml"), policy).unwrap();
        State { dir }
    }
    fn kpo(&self, args: &[&str], crash_at: Option<&str>) -> Output {
        let mut cmd = Command::new(kpo_binary());
        cmd.args(args)
            .arg("--policy")
            .arg(self.dir.join("policy.toml"))
            .arg("--state-dir")
            .arg(self.dir.join("state"));
        cmd.env_remove("KPO_TEST_CRASH_AT");
        if let Some(at) = crash_at {
            cmd.env("KPO_TEST_CRASH_AT", at);
        }
        cmd.output().unwrap()
    }
    fn kpo_ok(&self, args: &[&str]) -> Output {
        let out = self.kpo(args, None);
        assert!(
            out.status.success(),
            "kpo {args:?}: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }
    fn journal(&self) -> Vec<Value> {
        let out = self.kpo_ok(&["journal", "--json"]);
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

impl Drop for State {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

const POLICY: &str = "[params.\"net.core.somaxconn\"]\nmode = \"auto\"\nmin = 16\nmax = 1000000\n";

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

pub fn kill_at_each_step_then_reconcile_and_revert_all() {
    let host = host_somaxconn();
    for (stage, applied) in [
        ("after_intent", false),
        ("after_write", true),
        ("after_outcome", true),
    ] {
        let ns = Ns::new();
        let state = State::new(POLICY);
        let original = ns.somaxconn();
        let new = original + 1000;
        let assignment = format!("net.core.somaxconn={new}");
        let out = state.kpo(
            &[
                "apply",
                &assignment,
                "--netns",
                &ns.path(),
                "--reason",
                stage,
            ],
            Some(stage),
        );
        assert_eq!(
            out.status.signal(),
            Some(9),
            "{stage}: kpo apply must die of SIGKILL: {:?} {}",
            out.status,
            stderr(&out)
        );
        assert_eq!(
            ns.somaxconn(),
            if applied { new } else { original },
            "{stage}: the kernel after the kill"
        );
        assert_eq!(
            host_somaxconn(),
            host,
            "{stage}: the host's somaxconn moved"
        );
        // Restart: the next command recovers and reconciles.
        let status = state.kpo_ok(&["status", "--json"]);
        let err = stderr(&status);
        if stage != "after_outcome" {
            assert!(err.contains("reconciled"), "{stage}: {err}");
        } else {
            assert!(!err.contains("reconciled"), "{stage}: {err}");
        }
        let s: Value = serde_json::from_slice(&status.stdout).unwrap();
        assert_eq!(s["incomplete"], serde_json::json!([]), "{stage}: {s}");
        assert_eq!(s["params"][0]["original"], original, "{stage}: {s}");
        let entries = state.journal();
        assert_eq!(entries.len(), 1, "{stage}: {entries:?}");
        assert_eq!(
            entries[0]["status"],
            if applied { "applied" } else { "failed" },
            "{stage}: {entries:?}"
        );
        assert_eq!(entries[0]["before"], original);
        assert_eq!(entries[0]["after"], new);
        // revert --all restores the original.
        let out = state.kpo_ok(&["revert", "--all"]);
        assert_eq!(
            ns.somaxconn(),
            original,
            "{stage}: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        let entries = state.journal();
        if applied {
            assert_eq!(entries.len(), 2, "{stage}: {entries:?}");
            assert_eq!(entries[1]["kind"], "revert");
            assert_eq!(entries[1]["status"], "reverted");
            assert_eq!(entries[1]["after"], original);
        } else {
            assert_eq!(entries.len(), 1, "{stage}: nothing to revert: {entries:?}");
        }
        assert_eq!(
            host_somaxconn(),
            host,
            "{stage}: the host's somaxconn moved"
        );
    }
}

pub fn two_clis_racing_serialise() {
    let host = host_somaxconn();
    let ns = Ns::new();
    let state = State::new(POLICY);
    let original = ns.somaxconn();
    let (a, b) = (original + 111, original + 222);
    let path = ns.path();
    let outs: Vec<Output> = std::thread::scope(|s| {
        let handles: Vec<_> = [a, b]
            .into_iter()
            .map(|v| {
                let (state, path) = (&state, &path);
                s.spawn(move || {
                    state.kpo(
                        &["apply", &format!("net.core.somaxconn={v}"), "--netns", path],
                        None,
                    )
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for out in &outs {
        assert!(
            out.status.success(),
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            stderr(out)
        );
    }
    let entries = state.journal();
    assert_eq!(entries.len(), 2, "{entries:?}");
    assert!(
        entries.iter().all(|e| e["status"] == "applied"),
        "{entries:?}"
    );
    let afters: Vec<i64> = entries
        .iter()
        .map(|e| e["after"].as_i64().unwrap())
        .collect();
    assert!(afters.contains(&a) && afters.contains(&b), "{afters:?}");
    // Serialised: the second read the first's value as its before.
    assert_eq!(entries[0]["before"], original);
    assert_eq!(entries[1]["before"], entries[0]["after"]);
    assert_eq!(
        ns.somaxconn(),
        afters[1],
        "the last journaled value is the kernel's"
    );
    let s: Value = serde_json::from_slice(&state.kpo_ok(&["status", "--json"]).stdout).unwrap();
    assert_eq!(s["params"][0]["original"], original, "{s}");
    state.kpo_ok(&["revert", "--all"]);
    assert_eq!(ns.somaxconn(), original);
    assert_eq!(host_somaxconn(), host, "the host's somaxconn moved");
}

/// No root needed: the refusal comes before the kernel is read.
pub fn apply_of_core_pattern_is_refused() {
    let state = State::new("[defaults]\nmode = \"auto\"\n");
    let before = std::fs::read_to_string("/proc/sys/kernel/core_pattern").ok();
    let out = state.kpo(&["apply", "kernel.core_pattern=|/bin/false"], None);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("deny-listed"), "{text}");
    assert_eq!(
        std::fs::read_to_string("/proc/sys/kernel/core_pattern").ok(),
        before
    );
    let entries = state.journal();
    assert_eq!(entries[0]["status"], "refused", "{entries:?}");
    // And a policy naming it does not load.
    std::fs::write(
        state.dir.join("policy.toml"),
        "\n[params.\"kernel.core_pattern\"]\nmode = \"auto\"\n",
    )
    .unwrap();
    let out = state.kpo(&["status"], None);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains("policy.toml:2: params.\"kernel.core_pattern\"") && err.contains("deny-list"),
        "{err}"
    );
}
