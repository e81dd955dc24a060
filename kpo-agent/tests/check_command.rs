//! `kpo check`: a policy and a configuration are loaded as `kpo run` loads them; a valid pair is
//! printed with exit status 0, a mistake is `kpo run`'s own error with exit status 2 and nothing on
//! standard output. No privileges needed.
use std::process::{Command, Output};

fn kpo_check(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kpo"))
        .arg("check")
        .args(args)
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).trim_end().to_string()
}

#[test]
fn a_valid_policy_and_config_are_printed_as_loaded() {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.toml");
    std::fs::write(
        &policy,
        "[params.\"net.core.somaxconn\"]\nmode = \"auto\"\nmin = 128\nmax = 65535\n\
         guard_signals = [\"listen_overflows\"]\n",
    )
    .unwrap();
    let config = dir.path().join("kpo.toml");
    std::fs::write(&config, "tick = \"500ms\"\nwindow = \"10s\"\n").unwrap();
    let (p, c) = (policy.to_str().unwrap(), config.to_str().unwrap());
    let out = kpo_check(&["--policy", p, "--config", c, "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["policy"]["origin"], p);
    assert_eq!(v["config"], c);
    let entry = &v["policy"]["params"][0];
    assert_eq!(entry["name"], "net.core.somaxconn");
    assert_eq!(entry["line"], 1);
    assert_eq!(entry["mode"], "auto");
    assert_eq!(entry["min"], 128);
    assert_eq!(
        entry["guard_signals"],
        serde_json::json!(["listen_overflows"])
    );
    let out = kpo_check(&["--policy", p, "--json", "--recommend-only"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        v["policy"]["params"][0]["mode"], "recommend",
        "as kpo run --recommend-only"
    );
    let out = kpo_check(&["--policy", p]);
    assert_eq!(out.status.code(), Some(0));
    let shown = text(&out.stdout);
    assert!(
        shown.starts_with(&format!("policy {p}: valid\n")),
        "{shown}"
    );
    assert!(
        shown.contains("[params.\"net.core.somaxconn\"] (line 1) mode auto; min 128; max 65535;"),
        "{shown}"
    );
}

#[test]
fn a_mistake_is_the_agents_own_error() {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.toml");
    std::fs::write(
        &policy,
        "[params.\"vm.swappiness\"]\nmode = \"auto\"\nmaxx = 10\n",
    )
    .unwrap();
    let p = policy.to_str().unwrap();
    let out = kpo_check(&["--policy", p]);
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());
    let err = text(&out.stderr);
    assert!(
        err.starts_with(&format!(
            "kpo: error: {p}:3: params.\"vm.swappiness\".maxx: unknown field `maxx`"
        )),
        "{err}"
    );
    // A configuration that parses but that `kpo run` would refuse.
    let config = dir.path().join("kpo.toml");
    std::fs::write(&config, "window = \"2h\"\n").unwrap();
    let out = kpo_check(&[
        "--config",
        config.to_str().unwrap(),
        "--policy",
        "/dev/null",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());
    assert!(
        text(&out.stderr).contains("`window` is 2h; it must be at most 30m"),
        "{}",
        text(&out.stderr)
    );
    // A policy named explicitly must exist.
    let out = kpo_check(&["--policy", "/nonexistent-kpo/policy.toml"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("/nonexistent-kpo/policy.toml: cannot read the policy"),
        "{}",
        text(&out.stderr)
    );
}

/// s40 soak O5: the approvals' expiry was checked against the LLM's period in the
/// configuration's windows (60 s by default) while `kpo run` was to be given `--window 5s`, so
/// `kpo check` warned of a period the agent would not have. `--window` counts as `kpo run`'s
/// does, over the file's, and is checked as it is (a whole number of ticks).
#[test]
fn window_is_taken_as_kpo_run_takes_it() {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.toml");
    std::fs::write(
        &policy,
        "[approvals]\nexpire_after = \"60s\"\n[params.\"net.core.somaxconn\"]\n\
         mode = \"recommend\"\nsources = [\"llm\"]\n",
    )
    .unwrap();
    let config = dir.path().join("kpo.toml");
    std::fs::write(
        &config,
        "tick = \"1s\"\n[llm]\nbase_url = \"http://127.0.0.1:9/v1\"\nevery_windows = 2\n\
         min_interval = \"0s\"\n",
    )
    .unwrap();
    let (p, c) = (policy.to_str().unwrap(), config.to_str().unwrap());
    let warned = |out: &Output| text(&out.stderr).contains("expire_after (1m) is not longer");
    let out = kpo_check(&["--policy", p, "--config", c]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(warned(&out), "2 windows of 1m: {}", text(&out.stderr));
    let out = kpo_check(&["--policy", p, "--config", c, "--window", "5s"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(!warned(&out), "2 windows of 5s: {}", text(&out.stderr));
    let out = kpo_check(&["--policy", p, "--config", c, "--window", "1500ms"]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        text(&out.stderr),
        format!(
            "kpo: error: command line (over {c}): `--window` (1s 500ms) must be a whole number of \
             ticks (1s)"
        )
    );
    assert!(out.stdout.is_empty());
}

/// `--json` lists the warnings standard error shows, so that a CI gate on the JSON sees them
/// (s60 story BR-5: they were only on standard error); none is `[]`.
#[test]
fn json_lists_the_warnings_standard_error_shows() {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.toml");
    // A name one letter off a key this machine has.
    std::fs::write(
        &policy,
        "[params.\"net.core.somaxcon\"]\nmode = \"recommend\"\n",
    )
    .unwrap();
    let p = policy.to_str().unwrap();
    let out = kpo_check(&["--policy", p, "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let on_stderr: Vec<String> = text(&out.stderr)
        .lines()
        .filter_map(|l| l.strip_prefix("kpo: warning: "))
        .map(str::to_string)
        .collect();
    assert!(
        on_stderr.iter().any(|w| w.contains("net.core.somaxcon")),
        "{on_stderr:?}"
    );
    assert_eq!(v["warnings"], serde_json::json!(on_stderr));
    std::fs::write(
        &policy,
        "[params.\"net.core.somaxconn\"]\nmode = \"recommend\"\n",
    )
    .unwrap();
    let out = kpo_check(&["--policy", p, "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(text(&out.stderr), "", "no warning");
    assert_eq!(v["warnings"], serde_json::json!([]));
}
