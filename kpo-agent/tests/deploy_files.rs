//! The deployment files in deploy/ say what the code does: the example policy loads as `kpo run`
//! loads it and holds what its comments say; the systemd unit runs `kpo run` with the settings
//! the agent depends on (its reload signal, its stop budget, its open-files limit, the modes its
//! socket and state directories must have); the DaemonSet gives the pod what README.md's
//! "Running in a pod" names. Numbers are taken from the code, so that a longer timeout or a
//! stricter directory rule there fails here until the files follow.
use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(repo().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

// ---------------------------------------------------------------------------------------------
// The code's numbers

/// The waits of `kpo run`'s stop after SIGTERM that have a bound in the code, in the order they
/// happen (run/mod.rs `run` and `run_blocking`, main.rs), and their sum. What has no timer, the
/// last window's read and `on_exit`'s reverts, comes on top.
fn stop_waits() -> Vec<(&'static str, Duration)> {
    vec![
        (
            "queued control requests answered (run::TURN_AWAY_WAIT)",
            kpo_agent::run::TURN_AWAY_WAIT,
        ),
        (
            "the metrics server (output::metrics::STOP_TIMEOUT)",
            kpo_agent::output::metrics::STOP_TIMEOUT,
        ),
        (
            "work started off the loop (run::RUNTIME_STOP_TIMEOUT)",
            kpo_agent::run::RUNTIME_STOP_TIMEOUT,
        ),
        (
            "the event stream drained (run::STOP_FLUSH_TIMEOUT)",
            kpo_agent::run::STOP_FLUSH_TIMEOUT,
        ),
        (
            "the changes' mark moved (run::MARK_WAIT)",
            kpo_agent::run::MARK_WAIT,
        ),
        (
            "the approval webhook's last notifications (run::WEBHOOK_FINISH_WAIT)",
            kpo_agent::run::WEBHOOK_FINISH_WAIT,
        ),
        (
            "the log queue (logging::FLUSH_TIMEOUT)",
            kpo_agent::logging::FLUSH_TIMEOUT,
        ),
        (
            "the final error line (logging::LAST_WORDS_TIMEOUT)",
            kpo_agent::logging::LAST_WORDS_TIMEOUT,
        ),
    ]
}

fn stop_budget() -> Duration {
    stop_waits().iter().map(|(_, d)| *d).sum()
}

/// Time the unit and the pod leave for the last window and `on_exit` beyond the bounded waits:
/// each revert is two fsyncs, a kernel write and a read-back (a cpufreq limit may take
/// `LIMIT_SETTLE_WAIT` more to show); 10 s is ample for the handful of parameters a policy reverts.
const ON_EXIT_HEADROOM: Duration = Duration::from_secs(10);

#[test]
fn the_stop_budget_is_what_the_unit_says() {
    let budget = stop_budget();
    assert_eq!(
        budget,
        Duration::from_millis(13500),
        "the stop's bounded waits changed: {:?}; update deploy/kpo.service's comment, \
         deploy/daemonset.yaml's and README.md's Deploying",
        stop_waits()
    );
    let unit = read("deploy/kpo.service");
    for (what, wait) in stop_waits() {
        let name = what
            .split_whitespace()
            .last()
            .unwrap()
            .trim_end_matches(')');
        let name = name.rsplit("::").next().unwrap();
        let line = unit
            .lines()
            .find(|l| l.starts_with('#') && l.contains(&format!(" {name})")))
            .unwrap_or_else(|| panic!("deploy/kpo.service's stop comment lists {what}"));
        assert!(
            line.contains(&format!("{:.1} s", wait.as_secs_f64())),
            "deploy/kpo.service's stop comment gives {what} as {wait:?}: {line}"
        );
    }
    assert!(
        unit.contains("= 13.5 s"),
        "the unit's comment gives the sum"
    );
    assert!(read("deploy/daemonset.yaml").contains("at most 13.5 s of"));
    assert!(read("README.md").contains("13.5 s of waits the code bounds"));
}

// ---------------------------------------------------------------------------------------------
// The systemd unit

/// `[Section] Key=Value` lines of a unit file: comments and blank lines dropped, a key that
/// appears twice kept twice.
fn unit_settings(text: &str) -> Vec<(String, String, String)> {
    let mut section = String::new();
    let mut settings = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.to_string();
            continue;
        }
        assert!(
            !line.ends_with('\\'),
            "no continuation lines expected: {line}"
        );
        let (key, value) = line
            .split_once('=')
            .unwrap_or_else(|| panic!("not Key=Value: {line}"));
        settings.push((section.clone(), key.trim().into(), value.trim().into()));
    }
    settings
}

struct Unit(Vec<(String, String, String)>);

impl Unit {
    fn load() -> Self {
        Unit(unit_settings(&read("deploy/kpo.service")))
    }

    fn all(&self, section: &str, key: &str) -> Vec<&str> {
        self.0
            .iter()
            .filter(|(s, k, _)| s == section && k == key)
            .map(|(_, _, v)| v.as_str())
            .collect()
    }

    /// The one value of `[Service] key`.
    fn service(&self, key: &str) -> &str {
        match self.all("Service", key)[..] {
            [value] => value,
            ref values => panic!("[Service] {key}: expected one value, found {values:?}"),
        }
    }
}

/// A systemd time span as the unit uses it: `30s`, `1min`, `90` (seconds).
fn systemd_span(text: &str) -> Duration {
    let digits: String = text.chars().take_while(char::is_ascii_digit).collect();
    let n: u64 = digits
        .parse()
        .unwrap_or_else(|_| panic!("a time span: {text}"));
    match &text[digits.len()..] {
        "" | "s" | "sec" => Duration::from_secs(n),
        "min" | "m" => Duration::from_secs(n * 60),
        "ms" | "msec" => Duration::from_millis(n),
        unit => panic!("time span unit {unit:?} in {text}: extend this test"),
    }
}

/// A temporary directory with `mode`, for the agent's own checks.
fn dir_with_mode(mode: u32) -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(mode)).unwrap();
    dir
}

fn octal(text: &str) -> u32 {
    u32::from_str_radix(text, 8).unwrap_or_else(|_| panic!("an octal mode: {text}"))
}

#[test]
fn the_unit_runs_the_agent_and_reloads_it_with_sighup() {
    let unit = Unit::load();
    let exec: Vec<&str> = unit.service("ExecStart").split_whitespace().collect();
    assert!(
        exec[0].starts_with('/') && exec[0].ends_with("/kpo"),
        "an absolute path to kpo: {exec:?}"
    );
    assert_eq!(exec[1], "run", "{exec:?}");
    // The binary's place is the one README.md tells to install to.
    assert!(
        read("README.md").contains(&format!("target/release/kpo {}", exec[0])),
        "README.md's Deploying installs target/release/kpo to {}",
        exec[0]
    );
    // Root: no User=, DynamicUser=.
    assert!(unit.all("Service", "User").is_empty());
    assert!(unit.all("Service", "DynamicUser").is_empty());
    assert_eq!(unit.service("ExecReload"), "/bin/kill -HUP $MAINPID");
    // SIGHUP does reload the policy in the run loop (not only re-open the event file).
    let run = read("kpo-agent/src/run/mod.rs");
    let hup = &run[run.find("Sig::Hup =>").expect("the loop's SIGHUP arm")..];
    let arm = &hup[..hup.find("Sig::Term").unwrap()];
    assert!(arm.contains("reload_policy"), "{arm}");
    // ... and re-opens the events file, which the unit's and README's logrotate rely on.
    assert!(arm.contains("sink.reopen()"), "{arm}");
    assert!(
        run.contains("hup: signal(SignalKind::hangup())"),
        "SIGHUP is listened to"
    );
    assert_eq!(unit.service("Type"), "exec");
}

/// Events go to a file in the unit's LogsDirectory=, not to the journal, which cuts lines longer
/// than journald's LineMax= (48K) into several records; a window's event grows with the listeners it reports.
#[test]
fn the_unit_writes_events_to_a_file_in_its_logs_directory() {
    let unit = Unit::load();
    let exec: Vec<&str> = unit.service("ExecStart").split_whitespace().collect();
    let at = exec
        .iter()
        .position(|a| *a == "--events")
        .unwrap_or_else(|| panic!("ExecStart gives --events PATH: {exec:?}"));
    let events = Path::new(exec[at + 1]);
    let logs = unit.service("LogsDirectory");
    assert_eq!(
        events.parent(),
        Some(Path::new("/var/log").join(logs).as_path()),
        "--events {} directly in LogsDirectory={logs} (/var/log/{logs})",
        events.display()
    );
    // The logrotate snippet, in the unit's comment and README.md, rotates that file and sends
    // SIGHUP through the unit's ExecReload.
    let snippet_head = format!("{} {{", events.display());
    let text = read("deploy/kpo.service");
    let readme = read("README.md");
    let deploying = &readme[readme.find("## Deploying").unwrap()..];
    for (name, doc) in [
        ("deploy/kpo.service", text.as_str()),
        ("README.md", deploying),
    ] {
        let head = doc
            .find(&snippet_head)
            .unwrap_or_else(|| panic!("{name}: a logrotate entry for {}", events.display()));
        let entry = &doc[head..];
        let entry = &entry[..entry.find("endscript").expect("a postrotate script")];
        assert!(entry.contains("systemctl reload kpo"), "{name}: {entry}");
        assert!(entry.contains("delaycompress"), "{name}: {entry}");
        assert!(
            doc.contains(&format!("go to {}", events.display()))
                || doc.contains(&format!("go to `{}`", events.display())),
            "{name} says where events go"
        );
        assert!(doc.contains("LineMax="), "{name} says why not the journal");
    }
}

#[test]
fn the_unit_gives_the_stop_its_time() {
    let unit = Unit::load();
    assert_eq!(unit.service("KillSignal"), "SIGTERM");
    let timeout = systemd_span(unit.service("TimeoutStopSec"));
    assert!(
        timeout >= stop_budget() + ON_EXIT_HEADROOM,
        "TimeoutStopSec {timeout:?} leaves less than {ON_EXIT_HEADROOM:?} for on_exit after \
         the bounded waits ({:?})",
        stop_budget()
    );
    assert!(unit.all("Service", "TimeoutStopSec").len() == 1);
    // A stop is not cut short by another setting.
    for key in ["TimeoutSec", "SendSIGKILL", "KillMode", "FinalKillSignal"] {
        assert!(
            unit.all("Service", key).is_empty(),
            "{key} changes the stop"
        );
    }
}

#[test]
fn the_unit_restarts_on_failure_but_not_for_ever() {
    let unit = Unit::load();
    assert_eq!(unit.service("Restart"), "on-failure");
    // `kpo run` exits 2 for a start-up mistake and a failure of the running loop alike
    // (main.rs): no exit status tells a configuration error apart.
    let main = read("kpo-agent/src/main.rs");
    assert!(main.contains("std::process::ExitCode::from(2)"));
    assert!(
        unit.all("Service", "RestartPreventExitStatus").is_empty(),
        "status 2 is also a runtime failure worth a restart"
    );
    // The start limit ends a loop of restarts on a start-up mistake: 5 starts in 300 s.
    let burst: u32 = unit.all("Unit", "StartLimitBurst")[0].parse().unwrap();
    let interval = systemd_span(unit.all("Unit", "StartLimitIntervalSec")[0]);
    let restart_sec = systemd_span(unit.service("RestartSec"));
    assert!(
        restart_sec * burst < interval,
        "{burst} restarts {restart_sec:?} apart must fall within {interval:?} to be stopped"
    );
}

#[test]
fn the_units_open_files_limit_is_what_the_agent_asks_for() {
    let unit = Unit::load();
    let limit = unit.service("LimitNOFILE");
    // `N` is soft and hard; `SOFT:HARD` the agent raises to HARD.
    let hard: u64 = limit.rsplit(':').next().unwrap().parse().unwrap();
    assert!(
        hard >= kpo_agent::run::LOW_HARD_LIMIT,
        "LimitNOFILE {limit}: the agent warns below a hard limit of {}",
        kpo_agent::run::LOW_HARD_LIMIT
    );
}

/// Why the agent would refuse `dir` for its control socket: `api/socket_dir.rs`'s `check` is
/// these two calls (the directory itself, then every one above it), which the crate exports.
fn socket_dir_refusal(dir: &Path) -> Option<String> {
    use kpo_agent::trusted_path::{others_may_change, unsafe_ancestor};
    let me = nix::unistd::geteuid().as_raw();
    if let Some(others) = others_may_change(&std::fs::metadata(dir).unwrap(), me) {
        return Some(format!("{others:?} may change it"));
    }
    unsafe_ancestor(dir, me).unwrap().map(|w| format!("{w:?}"))
}

#[test]
fn the_units_directories_pass_the_agents_checks() {
    let unit = Unit::load();
    // The control socket's directory: /run/kpo, the default socket's.
    let socket_dir = Path::new(kpo_agent::api::DEFAULT_SOCKET).parent().unwrap();
    assert_eq!(
        Path::new("/run").join(unit.service("RuntimeDirectory")),
        socket_dir
    );
    let mode = octal(unit.service("RuntimeDirectoryMode"));
    let dir = dir_with_mode(mode);
    if let Some(why) = socket_dir_refusal(dir.path()) {
        panic!("RuntimeDirectoryMode {mode:04o} is refused for the socket: {why}");
    }
    // The rule does refuse something: a directory every user may write.
    let open = dir_with_mode(0o777);
    assert!(socket_dir_refusal(open.path()).is_some());

    // The state directory: /var/lib/kpo, the default, 0700 as the agent makes it.
    assert_eq!(
        Path::new("/var/lib").join(unit.service("StateDirectory")),
        Path::new(kpo_agent::journal::DEFAULT_STATE_DIR)
    );
    let mode = octal(unit.service("StateDirectoryMode"));
    assert_eq!(mode, 0o700);
    let dir = dir_with_mode(mode);
    let warning = kpo_agent::journal::store::check_dir(dir.path())
        .unwrap_or_else(|e| panic!("StateDirectoryMode {mode:04o} is refused: {e}"));
    assert_eq!(warning, None, "no warning that others can read the journal");
    // The rule does warn at 0755 and refuse at 0775.
    let readable = dir_with_mode(0o755);
    assert!(kpo_agent::journal::store::check_dir(readable.path())
        .unwrap()
        .is_some());
    let group = dir_with_mode(0o775);
    assert!(kpo_agent::journal::store::check_dir(group.path()).is_err());
}

#[test]
fn the_unit_has_no_hardening_that_breaks_the_agent() {
    let unit = Unit::load();
    for key in [
        // Its own network namespace: the wrong sysctls, listeners and one-agent claim.
        "PrivateNetwork",
        // /proc/sys and /sys read-only: no sysctl or cpufreq write.
        "ProtectKernelTunables",
        // setns(), bpf(), perf_event_open() and the capabilities behind them.
        "RestrictNamespaces",
        "SystemCallFilter",
        "CapabilityBoundingSet",
        "AmbientCapabilities",
        // A mount namespace of its own: untested with /run/netns mounts made while it runs.
        "ProtectSystem",
        "ProtectHome",
        "PrivateTmp",
        "PrivateMounts",
        "ProtectControlGroups",
        "ProtectProc",
        "ProcSubset",
        "ReadOnlyPaths",
        "InaccessiblePaths",
        "NetworkNamespacePath",
    ] {
        assert!(unit.all("Service", key).is_empty(), "{key} is set");
    }
}

/// `systemd-analyze verify` accepts the unit (with ExecStart pointing at the built binary, which
/// must exist for verify). It reports a bad setting as a warning naming the file, exit status 0,
/// so any line naming the unit fails the test.
#[test]
fn systemd_analyze_verifies_the_unit() {
    let probe = Command::new("systemd-analyze").arg("--version").output();
    if !probe.is_ok_and(|o| o.status.success()) {
        kpo_test_skip::skip("systemd-analyze is not installed");
        return;
    }
    let unit = read("deploy/kpo.service");
    let exec = Unit::load().service("ExecStart").to_string();
    let binary = exec.split_whitespace().next().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("kpo.service");
    std::fs::write(&copy, unit.replace(&binary, env!("CARGO_BIN_EXE_kpo"))).unwrap();
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&copy)
        .output()
        .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "systemd-analyze verify: {said}");
    let about_ours: Vec<&str> = said.lines().filter(|l| l.contains("kpo.service")).collect();
    assert!(
        about_ours.is_empty(),
        "systemd-analyze verify: {about_ours:#?}"
    );
}

// ---------------------------------------------------------------------------------------------
// The example policy

fn kpo_check(policy: &Path) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_kpo"))
        .args(["check", "--json", "--policy"])
        .arg(policy)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "kpo check --policy {}: {}",
        policy.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn the_example_policy_passes_kpo_check_and_says_what_its_comments_say() {
    let v = kpo_check(&repo().join("deploy/policy.example.toml"));
    let p = &v["policy"];
    // Everything not named is observed only.
    assert_eq!(p["defaults"]["mode"], "observe");
    assert_eq!(p["guard"]["windows"], 3);
    assert_eq!(p["guard"]["max_changes_per_hour"], 6);
    assert_eq!(p["guard"]["quarantine"], "1h");
    assert_eq!(p["approvals"]["webhook"], serde_json::Value::Null);
    let params = p["params"].as_array().unwrap();
    let entry = |name: &str| {
        params
            .iter()
            .find(|e| e["name"] == name)
            .unwrap_or_else(|| panic!("no entry {name}"))
    };
    let s = entry("net.core.somaxconn");
    assert_eq!(s["mode"], "auto");
    assert_eq!(s["min"], 128);
    assert_eq!(s["max"], 65535);
    assert_eq!(s["max_step"], "100%");
    assert_eq!(s["cooldown"], "5m");
    assert_eq!(s["sources"], serde_json::json!(["rules", "operator"]));
    assert_eq!(
        s["llm_mode"],
        serde_json::Value::Null,
        "the LLM may not drive it"
    );
    assert_eq!(s["on_exit"], "keep");
    assert_eq!(s["namespaces"], "all");
    assert_eq!(
        s["guard_signals"],
        serde_json::json!(["listen_overflows", "synack_retransmits", "request_p99"])
    );
    for name in [
        "net.ipv4.tcp_max_syn_backlog",
        "net.core.netdev_max_backlog",
    ] {
        let e = entry(name);
        assert_eq!(e["mode"], "recommend", "{name}");
        assert!(e["min"].is_u64() && e["max"].is_u64(), "{name} is bounded");
        assert_eq!(e["max_step"], "100%", "{name}");
    }
    // somaxconn is the only parameter applied without an approval.
    let auto: Vec<&serde_json::Value> = params.iter().filter(|e| e["mode"] == "auto").collect();
    assert_eq!(auto.len(), 1, "{auto:?}");
    assert_eq!(params.len(), 3);
}

/// The unit's and the pod's default policy path is where the example is to be installed.
#[test]
fn the_example_policy_goes_where_the_agent_looks() {
    assert_eq!(kpo_agent::policy::DEFAULT_PATH, "/etc/kpo/policy.toml");
    let unit = read("deploy/kpo.service");
    assert!(unit.contains("deploy/policy.example.toml /etc/kpo/policy.toml"));
    assert!(!Unit::load().service("ExecStart").contains("--policy"));
}

// ---------------------------------------------------------------------------------------------
// The DaemonSet (no YAML parser in the dependency tree: its lines are read as text)

/// The YAML without comments: whole-line ones, and ` # ...` after a value.
fn yaml_lines(text: &str) -> Vec<String> {
    text.lines()
        .filter(|l| !l.trim_start().starts_with('#') && !l.trim().is_empty())
        .map(|l| match l.find(" #") {
            Some(at) if !l.contains('"') => l[..at].trim_end().to_string(),
            _ => l.trim_end().to_string(),
        })
        .collect()
}

fn indent(line: &str) -> usize {
    line.len() - line.trim_start().len()
}

/// A list item's `key: value` pairs.
type Item = [(String, String)];

/// The items of the list under `key:` (the first such key after `after`), each as its
/// `key: value` lines flattened (nested keys such as `hostPath: path:` as `path`).
fn list_items(lines: &[String], key: &str, after: &str) -> Vec<Vec<(String, String)>> {
    let start = lines.iter().position(|l| l.trim() == after).unwrap_or(0);
    let head = start
        + lines[start..]
            .iter()
            .position(|l| l.trim() == format!("{key}:"))
            .unwrap_or_else(|| panic!("no {key}: after {after}"));
    let base = indent(&lines[head]);
    let mut items: Vec<Vec<(String, String)>> = Vec::new();
    for line in &lines[head + 1..] {
        if indent(line) <= base && !line.trim_start().starts_with("- ") {
            break;
        }
        if indent(line) < base {
            break;
        }
        let mut text = line.trim_start();
        if let Some(rest) = text.strip_prefix("- ") {
            if indent(line) <= base + 2 {
                items.push(Vec::new());
            }
            // The item's own text, as `-`: a bare item (`- run`) has nothing else.
            if let Some(item) = items.last_mut() {
                item.push(("-".into(), rest.trim().into()));
            }
            text = rest;
        }
        if let (Some(item), Some((k, v))) = (items.last_mut(), text.split_once(':')) {
            item.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    items
}

fn field<'a>(item: &'a Item, key: &str) -> Option<&'a str> {
    item.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

/// The scalar after `key:` in the pod spec (first occurrence).
fn scalar<'a>(lines: &'a [String], key: &str) -> Option<&'a str> {
    lines.iter().find_map(|l| {
        l.trim()
            .strip_prefix(&format!("{key}:"))
            .map(str::trim)
            .filter(|v| !v.is_empty())
    })
}

struct Pod {
    lines: Vec<String>,
    volumes: Vec<Vec<(String, String)>>,
    mounts: Vec<Vec<(String, String)>>,
    command: Vec<String>,
}

impl Pod {
    fn load() -> Self {
        let text = read("deploy/daemonset.yaml");
        let lines = yaml_lines(&text);
        let volumes = list_items(&lines, "volumes", "kind: DaemonSet");
        let mounts = list_items(&lines, "volumeMounts", "kind: DaemonSet");
        let command = list_items(&lines, "command", "kind: DaemonSet")
            .into_iter()
            .map(|item| field(&item, "-").unwrap_or_default().to_string())
            .collect();
        Pod {
            lines,
            volumes,
            mounts,
            command,
        }
    }

    /// The volume whose hostPath is `path`, and where it is mounted (mountPath, readOnly,
    /// mountPropagation).
    fn host_mount(&self, path: &str) -> (&Item, &Item) {
        let volume = self
            .volumes
            .iter()
            .find(|v| field(v, "hostPath").is_some() && field(v, "path") == Some(path))
            .unwrap_or_else(|| panic!("no hostPath volume of {path}: {:?}", self.volumes));
        let name = field(volume, "name").unwrap();
        let mount = self
            .mounts
            .iter()
            .find(|m| field(m, "name") == Some(name))
            .unwrap_or_else(|| panic!("volume {name} ({path}) is not mounted"));
        (volume, mount)
    }

    fn flag(&self, name: &str) -> Option<&str> {
        self.command
            .iter()
            .find_map(|a| a.strip_prefix(&format!("{name}=")))
    }
}

#[test]
fn the_daemonset_is_the_pod_the_readme_describes() {
    let pod = Pod::load();
    let lines = &pod.lines;
    assert!(lines.iter().any(|l| l.trim() == "kind: DaemonSet"));
    assert_eq!(scalar(lines, "hostPID"), Some("true"));
    assert_eq!(scalar(lines, "hostNetwork"), Some("true"));
    assert_eq!(scalar(lines, "privileged"), Some("true"));
    // Exec form: the agent itself gets SIGTERM.
    assert!(pod.command[0].ends_with("/kpo"), "{:?}", pod.command);
    assert_eq!(pod.command[1], "run");
    assert!(
        !lines.iter().any(|l| l.trim_start().starts_with("args:")),
        "the flags are in command"
    );

    // The host's /proc, read-only, named with --proc-root.
    let (_, proc) = pod.host_mount("/proc");
    let at = field(proc, "mountPath").unwrap();
    assert_eq!(field(proc, "readOnly"), Some("true"));
    assert_eq!(pod.flag("--proc-root"), Some(at));
    assert_ne!(at, "/proc", "not over the container's own /proc");
    // BTF.
    let (_, btf) = pod.host_mount("/sys/kernel/btf");
    assert_eq!(field(btf, "mountPath"), Some("/sys/kernel/btf"));
    // /run/netns at the same path, host to container.
    let (_, netns) = pod.host_mount("/run/netns");
    assert_eq!(field(netns, "mountPath"), Some("/run/netns"));
    assert_eq!(field(netns, "mountPropagation"), Some("HostToContainer"));
    // The host's cgroup2 hierarchy, not over the runtime's own mount of it.
    let (_, cgroup) = pod.host_mount("/sys/fs/cgroup");
    assert_ne!(field(cgroup, "mountPath"), Some("/sys/fs/cgroup"));
    // The state directory on the host, below the mount (the agent makes it 0700).
    let (_, state) = pod.host_mount(kpo_agent::journal::DEFAULT_STATE_DIR);
    let at = field(state, "mountPath").unwrap();
    let state_dir = pod.flag("--state-dir").expect("--state-dir");
    assert!(
        Path::new(state_dir).parent() == Some(Path::new(at)),
        "--state-dir {state_dir} directly below the hostPath mounted at {at}"
    );
    // The policy from a ConfigMap, where the agent looks by default.
    let policy = pod
        .volumes
        .iter()
        .find(|v| field(v, "configMap").is_some())
        .expect("a configMap volume");
    let name = field(policy, "name").unwrap();
    let mount = pod
        .mounts
        .iter()
        .find(|m| field(m, "name") == Some(name))
        .unwrap();
    let default = Path::new(kpo_agent::policy::DEFAULT_PATH);
    assert_eq!(
        field(mount, "mountPath").map(Path::new),
        default.parent(),
        "the ConfigMap is mounted as a directory (a subPath would not follow its edits)"
    );
    assert!(field(mount, "subPath").is_none());
    assert!(pod.flag("--policy").is_none());
}

#[test]
fn the_daemonset_gives_the_stop_the_units_time() {
    let pod = Pod::load();
    let grace: u64 = scalar(&pod.lines, "terminationGracePeriodSeconds")
        .expect("terminationGracePeriodSeconds")
        .parse()
        .unwrap();
    let grace = Duration::from_secs(grace);
    let unit = systemd_span(Unit::load().service("TimeoutStopSec"));
    assert!(grace >= stop_budget() + ON_EXIT_HEADROOM);
    assert_eq!(grace, unit, "the same stop path as the unit's");
}

/// How the ConfigMap is made: from the policy file, with apply (so that it can be run again
/// after an edit), in the DaemonSet's comment and in README.md alike.
const CONFIGMAP_COMMAND: &str = "kubectl -n kube-system create configmap kpo-policy \
    --from-file=policy.toml=deploy/policy.example.toml --dry-run=client -o yaml | kubectl apply -f -";

/// The ConfigMap is not in the DaemonSet's manifest (re-applying it would put that policy back
/// over the operator's); the command that makes it names the pod's volume and the agent's file,
/// and the policy file it takes loads as `kpo run` would load it.
#[test]
fn the_daemonsets_policy_is_made_apart_and_passes_kpo_check() {
    let text = read("deploy/daemonset.yaml");
    assert!(
        !yaml_lines(&text)
            .iter()
            .any(|l| l.trim() == "kind: ConfigMap"),
        "no ConfigMap in deploy/daemonset.yaml: applying it again would replace the policy"
    );
    assert!(!text.contains("policy.toml: |"), "no policy embedded");
    let readme = read("README.md");
    for (name, doc) in [("deploy/daemonset.yaml", &text), ("README.md", &readme)] {
        assert!(
            doc.contains(CONFIGMAP_COMMAND),
            "{name} gives the command: {CONFIGMAP_COMMAND}"
        );
    }
    // The name the pod mounts.
    let pod = Pod::load();
    let volume = pod
        .volumes
        .iter()
        .find(|v| field(v, "configMap").is_some())
        .expect("a configMap volume");
    let configmap = CONFIGMAP_COMMAND
        .split_whitespace()
        .skip_while(|w| *w != "configmap")
        .nth(1)
        .unwrap();
    assert_eq!(field(volume, "name"), Some("policy"));
    assert!(
        pod.lines
            .iter()
            .any(|l| l.trim() == format!("name: {configmap}")),
        "the pod's configMap volume is {configmap}"
    );
    // The key is the file name the agent reads in the mounted directory; the file passes.
    let from = CONFIGMAP_COMMAND
        .split_whitespace()
        .find_map(|w| w.strip_prefix("--from-file="))
        .unwrap();
    let (key, file) = from.split_once('=').unwrap();
    let default = Path::new(kpo_agent::policy::DEFAULT_PATH);
    assert_eq!(Some(std::ffi::OsStr::new(key)), default.file_name());
    let v = kpo_check(&repo().join(file));
    assert_eq!(v["policy"]["defaults"]["mode"], "observe");
}

/// SIGHUP in the pod: not `kill -HUP 1` (with hostPID, the node's init), but the agent's
/// `kpo run` in the pod's network namespace, where the one-agent claim allows only one.
#[test]
fn the_pods_reload_command_signals_only_its_agent() {
    const RELOAD: &str = "kubectl -n kube-system exec POD -- sh -c \
        'pkill -HUP --ns $$ --nslist net -f \"^/usr/local/bin/kpo run \"'";
    let text = read("deploy/daemonset.yaml");
    let readme = read("README.md");
    for (name, doc) in [("deploy/daemonset.yaml", &text), ("README.md", &readme)] {
        assert!(doc.contains(RELOAD), "{name} gives the command: {RELOAD}");
        assert!(
            doc.to_lowercase().contains("never `kill -hup 1`"),
            "{name} warns against kill -HUP 1"
        );
        assert!(doc.contains("procps"), "{name}: the image needs pkill");
    }
    // The pattern is the pod's own command line, `kpo run` and its flags.
    let pod = Pod::load();
    let pattern = RELOAD.split("\"^").nth(1).unwrap();
    let pattern = &pattern[..pattern.find("\"'").unwrap()];
    assert!(
        format!("{} ", pod.command.join(" ")).starts_with(pattern),
        "{pattern:?} matches {:?}",
        pod.command
    );
    assert!(
        pod.command.len() > 2,
        "a flag after run: the pattern's space"
    );
    // The claim the command relies on: the network namespace, which hostNetwork makes the host's.
    assert_eq!(scalar(&pod.lines, "hostNetwork"), Some("true"));
    let one_agent = read("kpo-agent/src/run/one_agent.rs");
    assert!(one_agent.contains("from_abstract_name"));
    let run = read("kpo-agent/src/run/mod.rs");
    assert!(run.contains("let _one_agent = one_agent::claim()?;"));
}

#[test]
fn the_readme_points_at_the_deploy_files() {
    let readme = read("README.md");
    let section = &readme[readme.find("## Deploying").expect("a Deploying section")..];
    for file in [
        "deploy/kpo.service",
        "deploy/policy.example.toml",
        "deploy/daemonset.yaml",
    ] {
        assert!(section.contains(file), "README's Deploying names {file}");
        assert!(repo().join(file).exists(), "{file}");
    }
}
