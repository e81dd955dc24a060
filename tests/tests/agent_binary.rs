//! The `kpo` binary end to end: every line it writes validates against docs/events.schema.json,
//! an unparsable /proc file and a missing BTF are survived, and SIGTERM flushes a partial window
//! and exits 0.
use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use kpo_integration::Netns;
use serde_json::Value;

use crate::common::wait_until;

pub(crate) fn kpo_binary() -> PathBuf {
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

pub(crate) fn schema() -> jsonschema::Validator {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/events.schema.json");
    let schema: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    jsonschema::validator_for(&schema).expect("schema compiles")
}

/// A copy of /proc's host-wide files with one made unparsable.
struct FakeProc(PathBuf);

impl FakeProc {
    fn new(broken: &str) -> FakeProc {
        let root = std::env::temp_dir().join(format!("kpo-proc-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        for rel in [
            "stat",
            "meminfo",
            "loadavg",
            "pressure/cpu",
            "pressure/memory",
            "pressure/io",
            "net/netstat",
            "net/snmp",
            "net/softnet_stat",
            "diskstats",
            "softirqs",
            "interrupts",
            "schedstat",
        ] {
            let dst = root.join(rel);
            std::fs::create_dir_all(dst.parent().unwrap()).unwrap();
            if let Ok(text) = std::fs::read(Path::new("/proc").join(rel)) {
                std::fs::write(&dst, text).unwrap();
            }
        }
        std::fs::write(root.join(broken), "this is not a number at all\n").unwrap();
        // Process directories, which listener discovery needs (`kpo run` checks at start).
        for pid in [1, std::process::id()] {
            std::os::unix::fs::symlink(format!("/proc/{pid}"), root.join(pid.to_string())).unwrap();
        }
        FakeProc(root)
    }
}

impl Drop for FakeProc {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub(crate) struct Agent {
    pub(crate) child: Child,
    /// The agent's own policy, state directory and socket (removed with it).
    _own: tempfile::TempDir,
}

impl Agent {
    /// Starts `kpo run` with a 100 ms tick and 300 ms windows, writing events to `events` (removed
    /// first); `stderr` is where its logs go. Its policy, state directory and socket are its own
    /// unless `extra` names them ([`crate::common::own_state`]).
    pub(crate) fn spawn(duty: &[&str], extra: &[&str], events: &Path, stderr: Stdio) -> Agent {
        let _ = std::fs::remove_file(events);
        let (own, own_args) = crate::common::own_state(extra);
        let child = Command::new(kpo_binary())
            .args(["run", "--tick", "100ms", "--window", "300ms", "--events"])
            .arg(events)
            .args(own_args)
            .args(duty)
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap();
        Agent { child, _own: own }
    }

    /// Waits until the agent has reported its sensors (its second event). An agent that exits
    /// first fails the test at once, with its status and, when it is piped, its stderr.
    pub(crate) fn wait_reported(&mut self, events: &Path) {
        wait_until("sensors reported", Duration::from_secs(30), || {
            if let Some(status) = self.child.try_wait().unwrap() {
                let mut stderr = String::new();
                if let Some(pipe) = self.child.stderr.as_mut() {
                    let _ = std::io::Read::read_to_string(pipe, &mut stderr);
                }
                panic!("the agent exited ({status}) before reporting its sensors: {stderr}");
            }
            kinds(&lines(events)).len() >= 2
        });
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The events written so far: every line its newline ends. The file is read while the agent
/// appends to it, so its end may be a line half written (a CI run read one); the tests of a torn
/// last line look at the text itself (run_loop).
pub(crate) fn lines(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let whole = &text[..text.rfind('\n').map_or(0, |end| end + 1)];
    whole
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

pub(crate) fn kinds(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| e["kind"].as_str().unwrap_or("?").to_string())
        .collect()
}

/// Runs the agent, runs `during`, waits for two more full windows, then SIGTERM; returns every
/// event.
fn run_agent(extra: &[&str], events: &Path, during: impl FnOnce(&Path)) -> Vec<Value> {
    let mut agent = Agent::spawn(&["--duty-fraction", "0.5"], extra, events, Stdio::piped());
    agent.wait_reported(events);
    during(events);
    let windows = || {
        kinds(&lines(events))
            .iter()
            .filter(|k| *k == "window")
            .count()
    };
    let before = windows();
    wait_until("two more windows", Duration::from_secs(30), || {
        windows() >= before + 2
    });
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(agent.child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = agent.child.wait().unwrap();
    let mut stderr = String::new();
    std::io::Read::read_to_string(agent.child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert!(status.success(), "exit {status}; stderr:\n{stderr}");
    let events_out = lines(events);
    let _ = std::fs::remove_file(events);
    events_out
}

/// `frozen_proc`: the agent read a frozen copy of /proc, so CPU time never advanced.
fn check_stream(events: &[Value], frozen_proc: bool) {
    let validator = schema();
    for e in events {
        let errors: Vec<String> = validator
            .iter_errors(e)
            .map(|err| format!("{} at {}", err, err.instance_path))
            .collect();
        assert!(
            errors.is_empty(),
            "event does not match the schema: {errors:#?}\n{e:#}"
        );
        assert_eq!(e["schema"], "kpo.event/v1");
    }
    // The schema is strict: an unknown field or a wrong type is rejected.
    let mut bad = events
        .iter()
        .find(|e| e["kind"] == "window")
        .unwrap()
        .clone();
    bad["listners"] = serde_json::json!([]);
    assert!(!validator.is_valid(&bad), "schema accepts an unknown field");
    let mut bad = events
        .iter()
        .find(|e| e["kind"] == "window")
        .unwrap()
        .clone();
    bad["sampled_fraction"] = serde_json::json!("half");
    assert!(!validator.is_valid(&bad), "schema accepts a wrong type");
    check_energy(events, &validator, frozen_proc);
    let k = kinds(events);
    assert_eq!(&k[..2], ["start", "sensors"], "{k:?}");
    assert_eq!(k.last().unwrap(), "stop", "{k:?}");
    let windows: Vec<&Value> = events.iter().filter(|e| e["kind"] == "window").collect();
    assert!(
        windows.len() >= 3,
        "two full windows and the flushed one: {k:?}"
    );
    assert_eq!(
        windows.last().unwrap()["partial"],
        true,
        "SIGTERM flushes a partial window"
    );
    assert!(windows[..windows.len() - 1]
        .iter()
        .all(|w| w["partial"] == false));
    assert_eq!(events.last().unwrap()["reason"], "SIGTERM");
    assert_eq!(events.last().unwrap()["windows"], windows.len() as u64);
}

/// Every window carries energy from the source `start` named, labelled with it; a window without
/// its `energy` object is refused by the schema.
fn check_energy(events: &[Value], validator: &jsonschema::Validator, frozen_proc: bool) {
    let start = &events[0];
    let source = &start["energy"]["source"];
    assert!(
        ["rapl", "perf_power", "estimated"].contains(&source.as_str().unwrap()),
        "{start:#}"
    );
    let windows: Vec<&Value> = events.iter().filter(|e| e["kind"] == "window").collect();
    for w in &windows {
        let energy = &w["energy"];
        assert_eq!(&energy["source"], source, "{energy:#}");
        assert_eq!(energy["domains"], start["energy"]["domains"]);
        // The estimate's clock is /proc/stat's jiffies: a frozen copy gives no time, so no
        // figure, and the reason (the flushed partial window may be shorter than one jiffy).
        let no_time = "no CPU time passed between two readings";
        if source == "estimated"
            && (frozen_proc || w["partial"] == true)
            && energy["joules"].is_null()
        {
            assert!(
                energy["error"].as_str().unwrap().contains(no_time),
                "{energy:#}"
            );
            assert!(energy["watts"].is_null(), "{energy:#}");
            continue;
        }
        assert!(
            !(source == "estimated" && frozen_proc),
            "a figure from a frozen /proc: {energy:#}"
        );
        let (joules, watts) = (energy["joules"].as_f64(), energy["watts"].as_f64());
        let joules = joules.unwrap_or_else(|| panic!("no energy in a window: {energy:#}"));
        if w["partial"] == false {
            assert!(joules > 0.0, "{energy:#}");
        }
        // `watts` is over the window's exact length, `duration_s` that length to the millisecond;
        // both figures are written to six decimals.
        let (watts, duration_s) = (watts.unwrap(), w["duration_s"].as_f64().unwrap());
        assert!(
            (watts * duration_s - joules).abs() <= watts * 0.0005 + 1e-6 * (1.0 + duration_s),
            "watts {watts} × duration_s {duration_s} vs joules {joules}"
        );
    }
    let mut bad = windows[0].clone();
    bad.as_object_mut().unwrap().remove("energy");
    assert!(
        !validator.is_valid(&bad),
        "schema accepts a window without energy"
    );
}

pub fn events_match_schema_and_sigterm_flushes() {
    let dir = std::env::temp_dir();
    let fake = FakeProc::new("loadavg");

    // Real BTF, one unparsable /proc file: every sensor on, load average absent, the rest there.
    // Meanwhile a listener with backlog 4 in a namespace gets 12 connections: a `listener_full`
    // event must arrive at once, before any window closes it.
    let ns = Netns::new();
    let mut port = 0;
    // A policy file of its own, which the start event must name exactly.
    let own = tempfile::tempdir().unwrap();
    let policy = own.path().join("e2e-policy.toml");
    std::fs::write(&policy, "[defaults]\nmode = \"observe\"\n").unwrap();
    let events = run_agent(
        &[
            "--proc-root",
            fake.0.to_str().unwrap(),
            "--policy",
            policy.to_str().unwrap(),
        ],
        &dir.join("kpo-e2e-a.ndjson"),
        |path| {
            let listener = ns.run(|| std::net::TcpListener::bind("127.0.0.1:0").unwrap());
            // Re-listen with a small backlog (listen() may be called again to change it).
            assert_eq!(
                unsafe { libc::listen(std::os::fd::AsRawFd::as_raw_fd(&listener), 4) },
                0
            );
            port = listener.local_addr().unwrap().port();
            let clients: Vec<_> = ns.run(|| {
                (0..12)
                    .map(|_| {
                        std::net::TcpStream::connect_timeout(
                            &listener.local_addr().unwrap(),
                            Duration::from_millis(200),
                        )
                    })
                    .collect()
            });
            wait_until("listener_full event", Duration::from_secs(10), || {
                lines(path)
                    .iter()
                    .any(|e| e["kind"] == "listener_full" && e["port"] == port)
            });
            // Nobody accepts: the queue stays full, the SYNs that follow are dropped before any
            // connection is queued, so eBPF sees nothing new; each tick's reading that finds it
            // dropped since still reports it (before, one event and then silence while the sensor
            // was attached).
            wait_until(
                "listener_full events at later ticks",
                Duration::from_secs(10),
                || {
                    lines(path)
                        .iter()
                        .filter(|e| e["kind"] == "listener_full" && e["port"] == port)
                        .count()
                        >= 3
                },
            );
            drop(clients);
            drop(listener);
        },
    );
    let full = events
        .iter()
        .find(|e| e["kind"] == "listener_full" && e["port"] == port)
        .unwrap();
    assert_eq!(full["netns"], ns.inum());
    assert_eq!(full["backlog_limit"], 4);
    assert!(full["backlog"].as_u64().unwrap() >= 4);
    assert_eq!(full["family"], "ipv4");
    // Pressure keeps the accept-queue sensor attached for the following window.
    let after: Vec<&Value> = events
        .iter()
        .skip_while(|e| !(e["kind"] == "listener_full" && e["port"] == port))
        .filter(|e| e["kind"] == "window" && e["partial"] == false)
        .collect();
    assert!(
        after
            .iter()
            .any(|w| w["accept_queue_sampled_fraction"] == 1.0),
        "no fully attached window after pressure: {:?}",
        after
            .iter()
            .map(|w| &w["accept_queue_sampled_fraction"])
            .collect::<Vec<_>>()
    );
    check_stream(&events, true);
    // The start says under which policy (the test's own file) and that auto may apply.
    assert_eq!(
        events[0]["policy"],
        policy.to_str().unwrap(),
        "{:#}",
        events[0]
    );
    assert_eq!(events[0]["recommend_only"], false);
    let sensors = &events[1]["sensors"];
    assert!(
        sensors
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["enabled"] == true),
        "{sensors:#}"
    );
    let window = events.iter().find(|e| e["kind"] == "window").unwrap();
    assert!(
        window["system"]["load1"].is_null(),
        "unparsable loadavg must not produce a value"
    );
    // The tree is a frozen copy, so rates are undefined; levels still read.
    assert!(
        window["system"]["mem_available_bytes"].is_number(),
        "other sources still read"
    );

    // No BTF: the offset-free sensors stay, the others are off with a reason; windows go on.
    let events = run_agent(
        &["--btf", "/nonexistent/vmlinux", "--recommend-only"],
        &dir.join("kpo-e2e-b.ndjson"),
        |_| {},
    );
    check_stream(&events, false);
    assert_eq!(events[0]["recommend_only"], true);
    let sensors = events[1]["sensors"].as_array().unwrap();
    let off: Vec<&Value> = sensors.iter().filter(|s| s["enabled"] == false).collect();
    // accept_queue, synack_retrans, napi and request_latency read struct fields; irq, softirq
    // and sched do not.
    assert_eq!(off.len(), 4, "{sensors:#?}");
    assert!(off
        .iter()
        .all(|s| s["reason"].as_str().unwrap().contains("BTF")));
}

/// The ids of the eBPF programs `pid` holds (its file descriptors that are programs): its own,
/// never another agent's.
fn programs_of(pid: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return Vec::new();
    };
    dir.flatten()
        .filter(|e| {
            std::fs::read_link(e.path()).is_ok_and(|t| t.to_string_lossy() == "anon_inode:bpf-prog")
        })
        .filter_map(|e| {
            let fd = e.file_name().to_str()?.to_string();
            std::fs::read_to_string(format!("/proc/{pid}/fdinfo/{fd}"))
                .ok()?
                .lines()
                .find_map(|l| l.strip_prefix("prog_id:")?.trim().parse().ok())
        })
        .collect()
}

/// Which of the programs `ids` are still loaded, by name.
fn still_loaded(ids: &[u32]) -> Vec<String> {
    aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .filter(|p| ids.contains(&p.id()))
        .map(|p| p.name_as_str().unwrap_or_default().to_string())
        .collect()
}

/// A killed agent leaves nothing attached: its programs and links live in its file descriptors,
/// nothing is pinned, so the kernel releases them with the process.
///
/// Defect (s39 fix #6): it counted KPO's programs machine-wide, so it was skipped whenever another
/// agent ran anywhere on the machine; it now follows the programs its own agent held, by id.
pub fn sigkill_leaves_no_program_behind() {
    let events = std::env::temp_dir().join("kpo-e2e-kill.ndjson");
    let mut agent = Agent::spawn(&["--duty-fraction", "1"], &[], &events, Stdio::null());
    agent.wait_reported(&events);
    let ids = programs_of(agent.child.id());
    assert!(ids.len() >= 10, "programs held: {:?}", still_loaded(&ids));
    agent.child.kill().unwrap(); // SIGKILL
    agent.child.wait().unwrap();
    // Programs are freed after an RCU grace period: poll briefly.
    wait_until("programs released", Duration::from_secs(10), || {
        still_loaded(&ids).is_empty()
    });
    let _ = std::fs::remove_file(&events);
}

/// A second agent in the same network namespace is refused at once, whatever its state directory
/// and socket, and names the first; it opens nothing (no state directory, no events file). Once
/// the first is killed, the second starts.
pub fn a_second_agent_in_the_namespace_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let first_events = dir.path().join("first.ndjson");
    let mut first = Agent::spawn(&[], &[], &first_events, Stdio::null());
    first.wait_reported(&first_events);
    let state_dir = dir.path().join("second-state");
    let socket = dir.path().join("second.sock");
    let second_args = [
        "--state-dir",
        state_dir.to_str().unwrap(),
        "--socket",
        socket.to_str().unwrap(),
    ];
    let refused_events = dir.path().join("refused.ndjson");
    let mut refused = Agent::spawn(&[], &second_args, &refused_events, Stdio::piped());
    let status = refused.child.wait().unwrap();
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut refused.child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert_eq!(status.code(), Some(2), "{stderr}");
    let named = format!("another kpo agent (pid {}: ", first.child.id());
    assert!(stderr.contains(&named), "{stderr}");
    assert!(!state_dir.exists(), "it opened its journal");
    assert!(!refused_events.exists(), "it opened its events file");

    drop(first); // SIGKILL: the kernel releases the claim with the process
    let started_events = dir.path().join("second.ndjson");
    let mut started = Agent::spawn(&[], &second_args, &started_events, Stdio::null());
    started.wait_reported(&started_events);
    assert!(started.child.try_wait().unwrap().is_none(), "it stopped");
}

/// One HTTP/1.1 request to the agent's metrics address: the status code, the content type and
/// the body.
fn http(port: u16, method: &str, path: &str) -> (u16, String, String) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = String::new();
    stream.read_to_string(&mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    let content_type = head
        .lines()
        .find_map(|l| l.strip_prefix("content-type: "))
        .unwrap_or_default()
        .to_string();
    (status, content_type, body.to_string())
}

/// The value of the sample line `name` (with its labels, as printed) in an exposition.
fn sample(body: &str, name: &str) -> Option<f64> {
    body.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

/// A loopback port free now, for an agent's `--metrics` to bind.
fn free_loopback_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// An agent that starts under a pause (`kpo pause` survives restarts) says so in its `start`
/// event and in `kpo_paused`, which a restart's empty event count could not show (s52 storyAC
/// AC-6: only its log said so).
pub fn an_agent_started_under_a_pause_says_so() {
    let port = free_loopback_port();
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let socket = dir.path().join("kpo.sock");
    let (state_arg, socket_arg) = (state.to_str().unwrap(), socket.to_str().unwrap());
    let paused = Command::new(kpo_binary())
        .args(["pause", "--state-dir", state_arg, "--socket", socket_arg])
        .output()
        .unwrap();
    assert!(paused.status.success(), "{paused:?}");
    let events = dir.path().join("events.ndjson");
    let addr = format!("127.0.0.1:{port}");
    let mut agent = Agent::spawn(
        &[],
        &[
            "--metrics",
            &addr,
            "--state-dir",
            state_arg,
            "--socket",
            socket_arg,
        ],
        &events,
        Stdio::piped(),
    );
    agent.wait_reported(&events);
    let start = lines(&events).into_iter().next().unwrap();
    assert_eq!(start["kind"], "start");
    let by = start["paused"].as_str().unwrap_or_default().to_string();
    assert!(
        by.starts_with("operator (uid 0, pid ") && by.contains(") at 20"),
        "{start}"
    );
    let (status, _, body) = http(port, "GET", "/metrics");
    assert_eq!(status, 200, "{body}");
    assert_eq!(sample(&body, "kpo_paused"), Some(1.0), "{body}");
    let resumed = Command::new(kpo_binary())
        .args(["resume", "--state-dir", state_arg, "--socket", socket_arg])
        .output()
        .unwrap();
    assert!(resumed.status.success(), "{resumed:?}");
    wait_until("kpo_paused 0", Duration::from_secs(10), || {
        sample(&http(port, "GET", "/metrics").2, "kpo_paused") == Some(0.0)
    });
}

/// `kpo run --metrics`: the counts are those of the event stream, and a host gauge is the
/// kernel's own figure (MemTotal from /proc/meminfo).
pub fn metrics_match_the_event_stream_and_the_kernel() {
    let port = free_loopback_port();
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("events.ndjson");
    let addr = format!("127.0.0.1:{port}");
    let mut agent = Agent::spawn(&[], &["--metrics", &addr], &events, Stdio::piped());
    agent.wait_reported(&events);
    let windows = || {
        kinds(&lines(&events))
            .iter()
            .filter(|k| *k == "window")
            .count()
    };
    wait_until("two windows", Duration::from_secs(30), || windows() >= 2);
    let written_before = windows();
    // A client that connects and never asks holds no scrape up, and is closed.
    let mut idle = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    let (status, content_type, body) = http(port, "GET", "/metrics");
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        content_type,
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    assert_eq!(body.lines().last(), Some("# EOF"));
    let counted = sample(&body, "kpo_windows_total").expect("kpo_windows_total") as usize;
    assert!(counted >= written_before, "{counted} < {written_before}");
    // The last window counted is the counted-th window of the event stream: same end.
    let last_end = sample(&body, "kpo_last_window_end_seconds").expect("last window end");
    wait_until(
        "the counted windows written",
        Duration::from_secs(10),
        || windows() >= counted,
    );
    let ends: Vec<f64> = lines(&events)
        .iter()
        .filter(|e| e["kind"] == "window")
        .map(|e| {
            let end = e["end"].as_str().unwrap();
            time::OffsetDateTime::parse(end, &time::format_description::well_known::Rfc3339)
                .unwrap()
                .unix_timestamp_nanos() as f64
                / 1e9
        })
        .collect();
    assert!(
        (ends[counted - 1] - last_end).abs() < 1e-6,
        "window {counted} of the stream ended at {}, the metrics say {last_end}",
        ends[counted - 1]
    );
    assert_eq!(
        sample(&body, r#"kpo_events_total{kind="window"}"#),
        Some(counted as f64)
    );
    assert_eq!(
        sample(&body, r#"kpo_events_total{kind="start"}"#),
        Some(1.0)
    );
    // The approval webhook's counters are there from 0, a webhook set or not: an alert on
    // their increase sees the first loss.
    for result in [
        "delivered",
        "queue_full",
        "replaced",
        "given_up",
        "refused",
        "abandoned",
    ] {
        assert_eq!(
            sample(
                &body,
                &format!("kpo_approval_webhook_notifications_total{{result=\"{result}\"}}")
            ),
            Some(0.0),
            "{result}"
        );
    }
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap();
    let mem_total_kib: f64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    assert_eq!(
        sample(&body, "kpo_host_mem_total_bytes"),
        Some(mem_total_kib * 1024.0)
    );
    idle.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    // Closed by the server (after at most a 408), not left open: the read ends, it does not
    // time out.
    let mut said = Vec::new();
    let ended = std::io::Read::read_to_end(&mut idle, &mut said);
    assert!(
        ended.is_ok(),
        "the idle connection was still open after 20 s: {ended:?}"
    );
    let said = String::from_utf8_lossy(&said);
    assert!(
        said.is_empty() || said.starts_with("HTTP/1.1 408"),
        "{said}"
    );
    assert_eq!(http(port, "GET", "/").0, 404);
    assert_eq!(http(port, "POST", "/metrics").0, 405);
    assert!(agent.child.try_wait().unwrap().is_none(), "it stopped");
}

/// An address that cannot be listened on stops the agent at start, naming it. Defect (review s36
/// run #31): a start that failed after opening its events file (on its metrics address, its
/// policy, its state directory) left that file behind, empty; one it created is removed again,
/// and one that was there before stays as it was.
pub fn a_metrics_address_in_use_stops_the_agent() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("events.ndjson");
    let mut agent = Agent::spawn(&[], &["--metrics", &addr], &events, Stdio::piped());
    let mut status = None;
    wait_until("the agent stopped", Duration::from_secs(30), || {
        status = agent.child.try_wait().unwrap();
        status.is_some()
    });
    let status = status.unwrap();
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut agent.child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!("metrics address {addr}: cannot listen")),
        "{stderr}"
    );
    assert!(!events.exists(), "it left the empty events file it created");

    // A policy that does not load; the events file is there before, then not.
    let missing = dir.path().join("no-such-policy.toml");
    for before in [Some("a line of the operator's\n"), None] {
        let (_own, own_args) = crate::common::own_state(&["--policy"]);
        match before {
            Some(text) => std::fs::write(&events, text).unwrap(),
            None => std::fs::remove_file(&events).unwrap(),
        }
        let out = Command::new(kpo_binary())
            .args(["run", "--events"])
            .arg(&events)
            .args(own_args)
            .arg("--policy")
            .arg(&missing)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(stderr.contains("cannot read the policy"), "{stderr}");
        match before {
            Some(text) => assert_eq!(std::fs::read_to_string(&events).unwrap(), text),
            None => assert!(!events.exists(), "it left the empty events file it created"),
        }
    }
}

/// An `events` path from the configuration file that cannot be opened stops the agent naming the
/// file and the key, as `kpo check --config` names them; from `--events`, the flag's path alone
/// (s57 story BD-6: `kpo run` said only `cannot open the event stream PATH: ...`).
pub fn an_events_path_from_the_file_that_cannot_be_opened_names_the_file_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-dir/events.ndjson");
    let config = dir.path().join("kpo.toml");
    std::fs::write(
        &config,
        format!("events = {:?}\n", missing.display().to_string()),
    )
    .unwrap();
    // `kpo run` with `flag path` stops, exit status 2, saying `said`.
    let refused_saying = |flag: &str, path: &Path, said: String| {
        let (_own, own_args) = crate::common::own_state(&[]);
        let out = Command::new(kpo_binary())
            .arg("run")
            .args(own_args)
            .arg(flag)
            .arg(path)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(stderr.contains(&said), "{stderr}");
    };
    refused_saying(
        "--config",
        &config,
        format!(
            "{}: `events` = {:?}: cannot open the event stream {}: ",
            config.display(),
            missing,
            missing.display()
        ),
    );
    refused_saying(
        "--events",
        &missing,
        format!(
            "kpo: error: cannot open the event stream {}: ",
            missing.display()
        ),
    );
    assert!(!missing.parent().unwrap().exists());
}

/// s58 story BJ-5: another user than root running an operator command while no agent answers
/// was told that where the agent ran is unknown, and sent to nsenter and to removing a state
/// file: the state directory is root's, and running as root is what to do.
pub fn a_command_of_another_user_on_roots_state_directory_says_to_run_as_root() {
    use std::os::unix::{fs::PermissionsExt, process::CommandExt};
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let state = dir.path().join("state");
    let pause = Command::new(kpo_binary())
        .args(["pause", "--state-dir"])
        .arg(&state)
        .arg("--socket")
        .arg(dir.path().join("none.sock"))
        .output()
        .unwrap();
    assert!(pause.status.success(), "{pause:?}");
    // A copy the other user can run: the build's own may lie in a directory only root enters
    // (a CI clone under a private temporary directory).
    let kpo = dir.path().join("kpo");
    std::fs::copy(kpo_binary(), &kpo).unwrap();
    std::fs::set_permissions(&kpo, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = Command::new(&kpo)
        .args(["journal", "--state-dir"])
        .arg(&state)
        .arg("--socket")
        .arg(dir.path().join("none.sock"))
        .uid(65534)
        .gid(65534)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("the state directory is root's; run kpo as root"),
        "{stderr}"
    );
    assert!(!stderr.contains("nsenter"), "{stderr}");
}

/// The names and contents of the files in `dir` (none when it does not exist).
fn files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .map(|e| {
            let e = e.unwrap();
            let content = std::fs::read(e.path()).unwrap_or_default();
            (e.file_name().to_string_lossy().into_owned(), content)
        })
        .collect();
    out.sort();
    out
}

/// Defect: a mistake in the LLM's configuration that only the environment reveals stopped the
/// agent after it had opened its state directory (journal, approvals, guard log, lock) and
/// recorded the new `--policy` there, which the offline commands then followed; the error named
/// no file. Now it stops first, naming the variable, or the file whose key is at fault.
pub fn a_bad_llm_configuration_leaves_the_state_directory_alone() {
    let dir = tempfile::tempdir().unwrap();
    let old_policy = dir.path().join("old.toml");
    let new_policy = dir.path().join("new.toml");
    std::fs::write(&old_policy, "[defaults]\n").unwrap();
    std::fs::write(&new_policy, "[defaults]\n").unwrap();
    let used = dir.path().join("state");
    std::fs::create_dir(&used).unwrap();
    std::fs::set_permissions(&used, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    let recorded = std::fs::canonicalize(&old_policy).unwrap();
    std::fs::write(
        used.join("policy-path"),
        recorded.as_os_str().as_encoded_bytes(),
    )
    .unwrap();
    let fresh = dir.path().join("fresh-state");
    let cred = dir.path().join("cred.toml");
    let url = "https://bob:pw@127.0.0.1:9/v1";
    std::fs::write(&cred, format!("[llm]\nbase_url = \"{url}\"\n")).unwrap();
    let env_url = "environment variable `OPENAI_BASE_URL` is \"ftp://x\"; it must start with \
                   http:// or https://"
        .to_string();
    let file_url = format!(
        "{}: `llm.base_url` carries a user name and password, and an API key is set too \
         (OPENAI_API_KEY)",
        cred.display()
    );
    // The state directory, the environment, the configuration file, and the error.
    type Case<'a> = (
        &'a Path,
        &'a [(&'a str, &'a str)],
        Option<&'a Path>,
        &'a str,
    );
    let cases: [Case; 3] = [
        (&used, &[("OPENAI_BASE_URL", "ftp://x")], None, &env_url),
        (&fresh, &[("OPENAI_BASE_URL", "ftp://x")], None, &env_url),
        (
            &used,
            &[("OPENAI_BASE_URL", url), ("OPENAI_API_KEY", "sk-1")],
            Some(&cred),
            &file_url,
        ),
    ];
    for (state_dir, env, config, said) in cases {
        let before = files(state_dir);
        let events = dir.path().join("events.ndjson");
        let socket = dir.path().join("kpo.sock");
        let mut command = Command::new(kpo_binary());
        command
            .args(["run", "--events"])
            .arg(&events)
            .arg("--state-dir")
            .arg(state_dir)
            .arg("--socket")
            .arg(&socket)
            .arg("--policy")
            .arg(&new_policy)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if let Some(config) = config {
            command.arg("--config").arg(config);
        }
        let mut agent = Agent {
            child: command.spawn().unwrap(),
            _own: tempfile::tempdir().unwrap(),
        };
        let mut status = None;
        wait_until("the agent stopped", Duration::from_secs(30), || {
            status = agent.child.try_wait().unwrap();
            status.is_some()
        });
        let mut stderr = String::new();
        std::io::Read::read_to_string(&mut agent.child.stderr.take().unwrap(), &mut stderr)
            .unwrap();
        assert_eq!(status.unwrap().code(), Some(2), "{stderr}");
        assert!(stderr.contains(&format!("kpo: error: {said}")), "{stderr}");
        assert_eq!(
            files(state_dir),
            before,
            "{}: {stderr}",
            state_dir.display()
        );
        assert!(
            state_dir == used || !state_dir.exists(),
            "it created its state directory"
        );
        assert!(!events.exists(), "it opened its events file");
        assert!(!socket.exists(), "it bound its socket");
    }
    assert_eq!(
        std::fs::read(used.join("policy-path")).unwrap(),
        recorded.as_os_str().as_encoded_bytes()
    );
}

/// An agent without CAP_SYS_ADMIN (a pod given a list of capabilities that leaves it out) still
/// lists the listeners of its own network namespace: entering a namespace needs it, and the agent
/// is in its own already. Defect (s60 story BS-1): every window had `"listeners": []`, its own
/// namespace's included, and the log said only `setns ...: EPERM`.
pub fn without_cap_sys_admin_the_agents_own_listeners_are_seen() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    assert_eq!(
        unsafe { libc::listen(std::os::fd::AsRawFd::as_raw_fd(&listener), 7) },
        0
    );
    let own_netns = std::fs::metadata("/proc/self/ns/net")
        .map(|m| std::os::unix::fs::MetadataExt::ino(&m))
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("events.ndjson");
    let (_own, own_args) = crate::common::own_state(&[]);
    let mut child = run_without("-sys_admin", &events, own_args, &dir.path().join("log"));
    let seen = |events: &[Value]| {
        events.iter().any(|e| {
            e["kind"] == "window"
                && (e["listeners"].as_array().into_iter().flatten()).any(|l| {
                    l["netns"] == own_netns && l["port"] == port && l["backlog_limit"] == 7
                })
        })
    };
    let outcome = (0..300).find_map(|_| {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(Err(format!("the agent exited ({status})")));
        }
        let all = lines(&events);
        let windows = all.iter().filter(|e| e["kind"] == "window").count();
        if seen(&all) {
            return Some(Ok(()));
        }
        if windows >= 5 {
            return Some(Err(format!("{windows} windows without the listener")));
        }
        std::thread::sleep(Duration::from_millis(100));
        None
    });
    let _ = child.kill();
    let _ = child.wait();
    match outcome {
        Some(Ok(())) => {}
        Some(Err(why)) => panic!("{why}: {:#?}", lines(&events).last()),
        None => panic!("no window within 30 s"),
    }
    // Said once, at start, with what it costs.
    let log = std::fs::read_to_string(dir.path().join("log")).unwrap();
    assert_eq!(
        log.matches("kpo run lacks a capability it uses: no CAP_SYS_ADMIN: no network namespace but the agent's own can be entered")
            .count(),
        1,
        "{log}"
    );
    assert!(!log.contains("no CAP_SYS_PTRACE"), "{log}");
}

/// `kpo run` on a short tick and window without the capabilities `drop` names (setpriv's
/// `-cap,-cap`), in its bounding and inheritable sets, its log in `log`.
fn run_without(
    drop: &str,
    events: &std::path::Path,
    own_args: Vec<std::ffi::OsString>,
    log: &std::path::Path,
) -> std::process::Child {
    Command::new("setpriv")
        .args([
            &format!("--bounding-set={drop}"),
            &format!("--inh-caps={drop}"),
            "--",
        ])
        .arg(kpo_binary())
        .args(["run", "--tick", "100ms", "--window", "300ms", "--events"])
        .arg(events)
        .args(own_args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap()
}

/// s60 story BS-4: without CAP_PERFMON (and CAP_SYS_ADMIN, which stands in for it), every eBPF
/// sensor was off as "the verifier rejected ...: Operation not permitted", and the sysctl watch's
/// warning ran to 55 lines of verifier log: both pointed the operator at the programs, not at the
/// capability. Each says now that the kernel did not permit it, and which capabilities it needs,
/// in one line.
pub fn without_cap_perfmon_the_sensors_say_which_capability_is_missing() {
    // CAP_PERFMON (38) and CAP_BPF (39) came with Linux 5.8: before, CAP_SYS_ADMIN alone.
    let last_cap: u32 = std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or(0);
    if last_cap < 39 {
        kpo_test_skip::skip_test(
            "agent_binary::without_cap_perfmon_the_sensors_say_which_capability_is_missing",
            "this kernel has no CAP_BPF or CAP_PERFMON (before Linux 5.8)",
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("events.ndjson");
    let (_own, own_args) = crate::common::own_state(&[]);
    let mut child = run_without(
        "-perfmon,-sys_admin",
        &events,
        own_args,
        &dir.path().join("log"),
    );
    let first_window = (0..300).find_map(|_| {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(Err(format!("the agent exited ({status})")));
        }
        let all = lines(&events);
        if all.iter().any(|e| e["kind"] == "window") {
            return Some(Ok(all));
        }
        std::thread::sleep(Duration::from_millis(100));
        None
    });
    let _ = child.kill();
    let _ = child.wait();
    let log = std::fs::read_to_string(dir.path().join("log")).unwrap();
    let all = match first_window {
        Some(Ok(all)) => all,
        Some(Err(why)) => panic!("{why}: {log}"),
        None => panic!("no window within 30 s: {log}"),
    };
    let sensors = all
        .iter()
        .find(|e| e["kind"] == "sensors")
        .expect("a sensors event");
    let list = sensors["sensors"].as_array().unwrap();
    assert_eq!(list.len(), 7, "{sensors}");
    // Each sensor this kernel has what it needs for is refused at load; one it lacks a
    // tracepoint argument for (`sched` before Linux 5.18) is off for that, before any load.
    let mut refused = 0;
    for s in list {
        let reason = s["reason"].as_str().unwrap_or_default();
        assert_eq!(s["enabled"], false, "{s}");
        if reason.contains(" has no ") && !reason.starts_with("the kernel did not permit") {
            continue;
        }
        assert!(
            reason.starts_with("the kernel did not permit loading kpo_")
                && reason.contains("(Operation not permitted (os error 1))")
                && reason.contains(
                    "tracing programs need CAP_BPF and CAP_PERFMON, or CAP_SYS_ADMIN (the \
                     start's log names what the agent lacks"
                ),
            "{s}"
        );
        refused += 1;
    }
    assert!(refused >= 6, "{sensors}");
    // The start's own warning names the capability.
    assert_eq!(
        log.matches("kpo run lacks a capability it uses: no CAP_PERFMON (nor CAP_SYS_ADMIN)")
            .count(),
        1,
        "{log}"
    );
    // The sysctl watch (CAP_NET_ADMIN kept) is verified as unprivileged: said as the capability,
    // with the verifier's last line only.
    let watch: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("sysctl watch off"))
        .collect();
    assert_eq!(watch.len(), 1, "{log}");
    assert!(
        watch[0].contains(
            "sysctl watch off: the kernel did not permit loading the cgroup/sysctl program"
        ) && watch[0].contains("for !root"),
        "{log}"
    );
    assert!(
        !log.contains("R10=fp0"),
        "no verifier log beyond its last line: {log}"
    );
}
