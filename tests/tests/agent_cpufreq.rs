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
    assert!(
        !out.contains("not watched by the guard"),
        "the agent watches it: {out}"
    );
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

/// The optimizer's live loop in the running agent: a request/response server in a namespace gives
/// it request latency on its port, the agent's meter gives energy (an estimate allowed here), and
/// the policy gives it `scaling_max_freq` of the temporary tree. Within a few windows it measures
/// a trial and applies the next through the change path: the tree's value is one the optimizer
/// applied, and the journal has the change, of source `optimizer`.
pub fn the_optimizer_moves_a_knob_in_the_running_agent() {
    use std::{
        io::{Read, Write},
        net::{TcpListener, TcpStream},
        sync::{
            atomic::{AtomicBool, Ordering},
            Arc,
        },
        time::Instant,
    };

    let dir = tempfile::tempdir().unwrap();
    let (sys, max_freq) = sysfs(dir.path(), true);
    std::fs::write(
        dir.path().join("policy.toml"),
        format!("[guard]\nmax_changes_per_hour = 1000\n{POLICY}"),
    )
    .unwrap();
    let ns = kpo_integration::Netns::new();
    let listener = ns.run(|| TcpListener::bind("127.0.0.1:0").unwrap());
    let addr = listener.local_addr().unwrap();
    let config = dir.path().join("kpo.toml");
    std::fs::write(
        &config,
        format!(
            "duty_fraction = 1.0\n[optimizer]\nslo_port = {}\nslo_max_us = 1000000\n\
             allow_estimated_energy = true\nlevels = 4\n",
            addr.port()
        ),
    )
    .unwrap();
    // Bounded load on the namespace's loopback: at most 60 s or 300 000 requests.
    let stop = Arc::new(AtomicBool::new(false));
    let server = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        s.set_nodelay(true).unwrap();
        let mut request = [0u8; 64];
        while s.read_exact(&mut request).is_ok() {
            let started = Instant::now();
            while started.elapsed() < Duration::from_micros(100) {
                std::hint::spin_loop();
            }
            if s.write_all(&request).is_err() {
                break;
            }
        }
    });
    let client_stop = stop.clone();
    let mut client = ns.run(|| TcpStream::connect(addr).unwrap());
    let client = std::thread::spawn(move || {
        client.set_nodelay(true).unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut buf = [3u8; 64];
        for _ in 0..300_000 {
            if client_stop.load(Ordering::Relaxed) || Instant::now() > deadline {
                break;
            }
            client.write_all(&buf).unwrap();
            client.read_exact(&mut buf).unwrap();
        }
    });
    struct StopLoad(Arc<AtomicBool>);
    impl Drop for StopLoad {
        fn drop(&mut self) {
            self.0.store(true, Ordering::Relaxed);
        }
    }
    let _stop = StopLoad(stop.clone());

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
    wait_until(
        "a measured trial and the next applied",
        Duration::from_secs(30),
        || {
            has(&events, |e| {
                e["kind"] == "optimizer" && e["event"] == "measured"
            }) && has(&events, |e| {
                e["kind"] == "optimizer" && e["event"] == "applied"
            })
        },
    );
    agent.sigterm_and_wait();
    stop.store(true, Ordering::Relaxed);
    client.join().unwrap();
    server.join().unwrap();

    let all = lines(&events);
    let started = all
        .iter()
        .find(|e| e["kind"] == "optimizer" && e["event"] == "started")
        .expect("the loop started");
    assert_eq!(started["knobs"], serde_json::json!([MAX_FREQ]));
    assert_eq!(started["config"], serde_json::json!([3_000_000.0]));
    let measured = all
        .iter()
        .find(|e| e["kind"] == "optimizer" && e["event"] == "measured")
        .unwrap();
    assert!(measured["energy_source"].is_string(), "{measured}");
    assert!(measured["latency_us"].as_f64().unwrap() > 0.0, "{measured}");
    // The tree holds the last configuration the loop applied, reverted to, found, or settled on
    // when the agent stopped.
    let last = all
        .iter()
        .rev()
        .filter(|e| e["kind"] == "optimizer")
        .find_map(|e| match e["event"].as_str() {
            Some("applied") | Some("resynced") => Some(e["config"][0].as_f64().unwrap()),
            Some("reverted") | Some("settled") => Some(e["to"][0].as_f64().unwrap()),
            _ => None,
        })
        .unwrap();
    assert_eq!(read(&max_freq), format!("{}", last as i64));
    // With `on_exit` keeping KPO's values, what outlives the agent is a configuration the loop
    // measured within the SLO, not a trial nobody measured.
    let measured_within: Vec<f64> = all
        .iter()
        .filter(|e| e["kind"] == "optimizer" && e["event"] == "measured" && e["feasible"] == true)
        .map(|e| e["config"][0].as_f64().unwrap())
        .collect();
    assert!(
        measured_within.contains(&last),
        "{last} was not measured within the SLO: {measured_within:?}"
    );
    // Through the change path: journaled, as the optimizer.
    let journal = kpo(dir.path(), &["journal", "--json"]);
    let entries: Vec<serde_json::Value> = journal
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(
        entries.iter().any(|e| e["source"] == "optimizer"
            && e["kind"] == "change"
            && e["status"] == "applied"
            && e["address"] == MAX_FREQ),
        "{journal}"
    );
    assert!(all
        .iter()
        .any(|e| e["kind"] == "change" && e["source"] == "optimizer" && e["phase"] == "verified"));
    assert_schema(&events);
}

/// `kpo revert --all` while the agent is down acts on the sysfs tree the agent ran with (recorded
/// in the state directory), not on the host's `/sys`: the journal's cpufreq addresses are relative
/// to that tree.
pub fn revert_all_after_the_agent_stopped_acts_on_its_sysfs_tree() {
    let dir = tempfile::tempdir().unwrap();
    let (sys, max_freq) = sysfs(dir.path(), true);
    std::fs::write(dir.path().join("policy.toml"), POLICY).unwrap();
    let events = dir.path().join("events.ndjson");
    let mut agent = Running::start_with(
        dir.path(),
        &events,
        &["--sysfs-root".as_ref(), sys.as_os_str()],
    );
    let out = kpo(dir.path(), &["apply", &format!("{MAX_FREQ}=2400000")]);
    assert!(out.starts_with("applied"), "{out}");
    agent.sigterm_and_wait();
    assert_eq!(read(&max_freq), "2400000", "on_exit keeps it (the default)");
    assert_eq!(
        std::fs::read_to_string(dir.path().join("state/sysfs-root")).unwrap(),
        sys.to_str().unwrap()
    );
    // No agent answers now: the CLI opens the state directory itself.
    let out = kpo(dir.path(), &["revert", "--all"]);
    assert!(out.contains("reverted"), "{out}");
    assert_eq!(read(&max_freq), "3000000");
}

/// Serves the FIFO that stands for `scaling_max_freq` to process `pid`: each of its reads gets
/// `value`; a write waits for a reader that never comes. Dropped (the test's end, or its panic),
/// it stops and is joined.
struct FifoLimit {
    path: PathBuf,
    done: std::sync::Arc<std::sync::atomic::AtomicBool>,
    server: Option<std::thread::JoinHandle<()>>,
}

impl FifoLimit {
    fn replace(path: &Path, value: &'static str, pid: u32) -> FifoLimit {
        std::fs::remove_file(path).unwrap();
        nix::unistd::mkfifo(path, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (fifo, stop) = (path.to_path_buf(), done.clone());
        let server = std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Acquire) {
                // Only a reader waiting in its open: opened while a reader still reads, the FIFO
                // would pair with that one and give it the value twice. The agent reads from one
                // thread, so a read waiting to open means the one before is closed.
                if fifo_opener(pid) != Some(libc::O_RDONLY) {
                    std::thread::sleep(Duration::from_millis(1));
                    continue;
                }
                let mut f = std::fs::OpenOptions::new().write(true).open(&fifo).unwrap();
                let _ = std::io::Write::write_all(&mut f, value.as_bytes());
            }
        });
        FifoLimit {
            path: path.to_path_buf(),
            done,
            server: Some(server),
        }
    }
}

impl Drop for FifoLimit {
    fn drop(&mut self) {
        self.done.store(true, std::sync::atomic::Ordering::Release);
        if let Some(server) = self.server.take() {
            let _ = server.join();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The access mode (`O_RDONLY`, `O_WRONLY`) of a thread of process `pid` that waits in `openat`
/// for the other end of a FIFO, if one does.
fn fifo_opener(pid: u32) -> Option<i32> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    tasks.filter_map(Result::ok).find_map(|task| {
        let wchan = std::fs::read_to_string(task.path().join("wchan")).ok()?;
        let syscall = std::fs::read_to_string(task.path().join("syscall")).ok()?;
        let fields: Vec<&str> = syscall.split_whitespace().collect();
        if wchan != "wait_for_partner" || fields.first()? != &libc::SYS_openat.to_string() {
            return None;
        }
        let flags = i64::from_str_radix(fields.get(3)?.trim_start_matches("0x"), 16).ok()?;
        Some((flags & i64::from(libc::O_ACCMODE)) as i32)
    })
}

/// A second SIGTERM while the agent stops, its `on_exit` revert hanging on a write that cannot
/// finish, stops it at once: exit status 143 (128 + SIGTERM), a `stop` event saying it was
/// forced. The next start settles the interrupted revert from the journal, and its own stop puts
/// the original back.
pub fn a_second_sigterm_stops_an_agent_whose_stop_hangs() {
    let dir = tempfile::tempdir().unwrap();
    let (sys, max_freq) = sysfs(dir.path(), true);
    std::fs::write(
        dir.path().join("policy.toml"),
        format!("{POLICY}on_exit = \"revert\"\n"),
    )
    .unwrap();
    let events = dir.path().join("events.ndjson");
    let mut agent = Running::start_with(
        dir.path(),
        &events,
        &["--sysfs-root".as_ref(), sys.as_os_str()],
    );
    let out = kpo(dir.path(), &["apply", &format!("{MAX_FREQ}=2400000")]);
    assert!(out.starts_with("applied"), "{out}");
    let fifo = FifoLimit::replace(&max_freq, "2400000\n", agent.0.id());
    let pid = nix::unistd::Pid::from_raw(agent.0.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    wait_until(
        "on_exit's revert waits to write the limit",
        Duration::from_secs(30),
        || {
            if let Some(status) = agent.0.try_wait().unwrap() {
                panic!(
                    "the agent exited ({status}) before reverting: {:#?}",
                    lines(&events)
                );
            }
            fifo_opener(agent.0.id()) == Some(libc::O_WRONLY)
        },
    );
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let mut status = None;
    wait_until("the agent exited", Duration::from_secs(30), || {
        status = agent.0.try_wait().unwrap();
        status.is_some()
    });
    assert_eq!(status.unwrap().code(), Some(143));
    let all = lines(&events);
    let last = all.last().unwrap();
    assert_eq!(
        (&last["kind"], &last["reason"]),
        (
            &serde_json::json!("stop"),
            &serde_json::json!("SIGTERM again while stopping: forced")
        ),
        "{last}"
    );
    assert_eq!(all.iter().filter(|e| e["kind"] == "stop").count(), 1);
    assert_schema(&events);

    // The write never happened: the limit is still KPO's value.
    drop(fifo);
    std::fs::write(&max_freq, "2400000\n").unwrap();
    let mut agent = Running::start_with(
        dir.path(),
        &dir.path().join("events-2.ndjson"),
        &["--sysfs-root".as_ref(), sys.as_os_str()],
    );
    agent.sigterm_and_wait();
    assert_eq!(
        read(&max_freq),
        "3000000",
        "on_exit's revert, at the next stop"
    );
}
