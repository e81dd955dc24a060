//! The rules react within ticks, not windows: with a 30 s window and a 1 s tick, a bounded burst
//! of listen overflows in a namespace gets somaxconn raised there before the first window even
//! closes; a second burst, with the listener still holding its old limit, gets advice to listen
//! again and no second raise. A listener that asked for less than somaxconn gets advice for the
//! application and somaxconn is not touched. The host's somaxconn never moves.
use std::{
    net::{SocketAddr, TcpListener, TcpStream},
    os::fd::AsRawFd,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use kpo_integration::Netns;
use serde_json::Value;

use crate::{
    agent_binary::{kpo_binary, lines, schema},
    common::wait_until,
};

/// somaxconn in auto for the rules, in the test's namespace only: the machine runs other tests,
/// whose namespaces are not this agent's to change.
fn policy(ns: &Netns) -> String {
    format!(
        r#"
# The guard is not under test here: the host-wide signals it watches move with whatever else
# this machine runs, and a revert would hide what the rule did.
[guard]
signals = []

[params."net.core.somaxconn"]
mode = "auto"
min = 16
max = 65535
max_step = "1000%"
sources = ["rules", "operator"]
namespaces = ["/run/netns/{}"]
"#,
        ns.name
    )
}

fn host_somaxconn() -> String {
    std::fs::read_to_string("/proc/sys/net/core/somaxconn").unwrap()
}

fn ns_somaxconn(ns: &Netns) -> i64 {
    ns.exec(&["cat", "/proc/sys/net/core/somaxconn"])
        .trim()
        .parse()
        .unwrap()
}

/// A test's agent: policy, state, socket and events in a temporary directory; killed on drop.
struct Agent {
    child: std::process::Child,
    dir: tempfile::TempDir,
    events: PathBuf,
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Agent {
    /// `kpo run --tick 1s --window 30s` with [`policy`]; returns once its sensors are reported.
    fn start(ns: &Netns) -> Agent {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("policy.toml"), policy(ns)).unwrap();
        let events = dir.path().join("events.ndjson");
        let mut agent = Agent {
            child: Command::new("true").spawn().unwrap(),
            dir,
            events,
        };
        agent.child.wait().unwrap();
        agent.child = agent.spawn(None);
        agent
    }

    /// The agent again on the same state, or first: with `crash_at`, the test-only hook kills
    /// it there (`KPO_TEST_CRASH_AT`, as `kill -9` would). Returns once its sensors are reported.
    fn spawn(&self, crash_at: Option<&str>) -> std::process::Child {
        let started = self.started();
        let mut cmd = Command::new(kpo_binary());
        cmd.args(["run", "--tick", "1s", "--window", "30s", "--events"])
            .arg(&self.events)
            .args(state_args(self.dir.path()))
            .env_remove("KPO_TEST_CRASH_AT")
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some(at) = crash_at {
            cmd.env("KPO_TEST_CRASH_AT", at);
        }
        let child = cmd.spawn().unwrap();
        wait_until("the agent started", Duration::from_secs(30), || {
            self.started() > started
        });
        child
    }

    fn started(&self) -> usize {
        self.events()
            .iter()
            .filter(|e| e["kind"] == "sensors")
            .count()
    }

    fn events(&self) -> Vec<Value> {
        lines(&self.events)
    }

    fn wait_for(&self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let mut found = None;
        wait_until(what, Duration::from_secs(20), || {
            found = self.events().into_iter().find(&pred);
            found.is_some()
        });
        found.unwrap()
    }

    fn sigterm_and_wait(&mut self) {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap();
        assert!(self.child.wait().unwrap().success());
    }

    /// `kpo journal --json` on the agent's state directory (after it stopped).
    fn journal(&self) -> Vec<Value> {
        let out = Command::new(kpo_binary())
            .args(["journal", "--json"])
            .args(state_args(self.dir.path()))
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    fn all_match_the_schema(&self) {
        let validator = schema();
        for e in &self.events() {
            let errors: Vec<String> = validator.iter_errors(e).map(|x| x.to_string()).collect();
            assert!(errors.is_empty(), "{errors:?}\n{e:#}");
        }
    }
}

fn state_args(dir: &Path) -> [PathBuf; 6] {
    [
        "--policy".into(),
        dir.join("policy.toml"),
        "--state-dir".into(),
        dir.join("state"),
        "--socket".into(),
        dir.join("kpo.sock"),
    ]
}

/// A listener in `ns` on loopback that asked listen() for `backlog`.
fn listener(ns: &Netns, backlog: i32) -> (TcpListener, SocketAddr) {
    let l = ns.run(|| TcpListener::bind("127.0.0.1:0").unwrap());
    assert_eq!(unsafe { libc::listen(l.as_raw_fd(), backlog) }, 0);
    let addr = l.local_addr().unwrap();
    (l, addr)
}

/// `n` connections nobody accepts, each given 200 ms: bounded in count and time. Those past the
/// queue's limit overflow.
fn burst(ns: &Netns, addr: SocketAddr, n: usize) -> Vec<std::io::Result<TcpStream>> {
    ns.run(|| {
        (0..n)
            .map(|_| TcpStream::connect_timeout(&addr, Duration::from_millis(200)))
            .collect()
    })
}

fn position(events: &[Value], pred: impl Fn(&Value) -> bool) -> Option<usize> {
    events.iter().position(pred)
}

pub fn somaxconn_is_raised_within_ticks_of_a_long_window() {
    let host_before = host_somaxconn();
    let ns = Netns::new();
    ns.run(|| std::fs::write("/proc/sys/net/core/somaxconn", "16").unwrap());
    // Asks for 1024: the kernel caps it at 16.
    let (listener, addr) = listener(&ns, 1024);
    let mut agent = Agent::start(&ns);
    let ns_key = format!("net.core.somaxconn@netns:{}", ns.inum());

    let first = burst(&ns, addr, 40);
    let change = agent.wait_for("the rule's change", |e| {
        e["kind"] == "change" && e["phase"] == "verified" && e["source"] == "rules"
    });
    assert_eq!(change["target"], ns_key.as_str(), "{change}");
    assert_eq!(change["before"], 16);
    let raised = change["after"].as_i64().unwrap();
    assert_eq!(
        raised, 128,
        "twice the listener's limit (16), raised to the rules' least raise"
    );
    assert_eq!(change["read_back"], raised);
    assert_eq!(ns_somaxconn(&ns), raised);
    let events = agent.events();
    let changed_at = position(&events, |e| *e == change).unwrap();
    assert_eq!(
        position(&events, |e| e["kind"] == "window"),
        None,
        "changed before the first 30 s window closed"
    );
    let rec = &events[position(&events, |e| {
        e["kind"] == "recommendation"
            && e["recommended_value"] == raised
            && e["parameter"] == ns_key.as_str()
    })
    .expect("the recommendation behind the change")];
    assert_eq!(rec["window"]["index"], 1, "the window in progress");
    assert_eq!(rec["parameter"], ns_key.as_str());
    let reason = rec["reason"].as_str().unwrap();
    assert!(reason.contains("listen() again"), "{reason}");
    assert!(
        reason.contains(&format!("pid {}", std::process::id())),
        "{reason}"
    );
    assert!(changed_at > 0);
    drop(first);

    // More overflows (this burst guarantees some after the raise): the listener still has its
    // old limit of 16. The advice is to listen again (for the service), not another raise nor
    // "the application asked for less".
    let second = burst(&ns, addr, 40);
    let again = agent.wait_for("advice to listen again", |e| {
        e["kind"] == "recommendation"
            && e["recommended_value"].is_null()
            && e["application"]["netns"] == ns.inum()
    });
    let reason = again["reason"].as_str().unwrap();
    assert!(reason.contains(&format!("is now {raised}")), "{reason}");
    assert!(reason.contains("listen() again"), "{reason}");
    assert!(!reason.contains("would not help"), "{reason}");
    assert_eq!(again["application"]["port"], addr.port());
    assert_eq!(again["can_auto_apply"], false);
    drop(second);
    agent.sigterm_and_wait();

    let changes: Vec<Value> = agent
        .events()
        .into_iter()
        .filter(|e| e["kind"] == "change" && e["phase"] == "verified")
        .collect();
    assert_eq!(
        changes.len(),
        1,
        "one raise, not one per tick: {changes:#?}"
    );
    assert_eq!(ns_somaxconn(&ns), raised);
    // The journal holds the change the event reported.
    let journal = agent.journal();
    let entry = journal
        .iter()
        .find(|j| j["id"] == change["journal_id"])
        .unwrap_or_else(|| panic!("journal entry {}: {journal:#?}", change["journal_id"]));
    assert_eq!(entry["source"], "rules");
    assert_eq!(entry["status"], "applied");
    assert_eq!(entry["before"], 16);
    assert_eq!(entry["after"], raised);
    assert!(
        entry["address"].as_str().unwrap().contains("netns"),
        "{entry}"
    );
    assert_eq!(
        host_somaxconn(),
        host_before,
        "the host's somaxconn never moves"
    );
    agent.all_match_the_schema();
    drop(listener);
}

pub fn a_listener_asking_for_less_gets_application_advice() {
    let host_before = host_somaxconn();
    let ns = Netns::new();
    let somaxconn = ns_somaxconn(&ns);
    assert!(somaxconn > 8, "namespace default {somaxconn}");
    let (listener, addr) = listener(&ns, 8);
    let mut agent = Agent::start(&ns);

    let clients = burst(&ns, addr, 30);
    let rec = agent.wait_for("application advice", |e| {
        e["kind"] == "recommendation"
            && e["application"]["port"] == addr.port()
            && e["application"]["netns"] == ns.inum()
    });
    assert!(rec["recommended_value"].is_null(), "{rec}");
    assert_eq!(rec["can_auto_apply"], false);
    assert_eq!(rec["current_value"], somaxconn);
    assert_eq!(rec["application"]["pid"], std::process::id());
    let reason = rec["reason"].as_str().unwrap();
    assert!(reason.contains("backlog of 8"), "{reason}");
    assert!(reason.contains("would not help"), "{reason}");
    drop(clients);
    agent.sigterm_and_wait();

    // A listener dropping elsewhere on the machine (another test's, another program's) gets
    // the rules' proposal there, which this agent's policy refuses: only that may show.
    let own = format!("net.core.somaxconn@netns:{}", ns.inum());
    for e in agent.events().iter().filter(|e| e["kind"] == "change") {
        assert!(
            e["target"] != own.as_str() && (e["phase"] == "proposed" || e["phase"] == "refused"),
            "somaxconn was not touched here, and nothing elsewhere went past a refusal: {e}"
        );
    }
    assert_eq!(ns_somaxconn(&ns), somaxconn);
    assert_eq!(host_somaxconn(), host_before);
    agent.all_match_the_schema();
    drop(listener);
}

/// The agent is killed (the test-only hook, as `kill -9` would) after the kernel write of a
/// rule's raise, before the change path returns (s48 storyR R5: the recommendation behind the
/// change was then in no history). The restarted agent reconciles the change as applied and
/// `kpo explain` shows the recommendation with what was done: applied, and the journal's id.
pub fn a_rule_change_the_agent_was_killed_making_is_explained_after_the_restart() {
    use std::os::unix::process::ExitStatusExt;
    let host_before = host_somaxconn();
    let ns = Netns::new();
    ns.run(|| std::fs::write("/proc/sys/net/core/somaxconn", "16").unwrap());
    let (listener, addr) = listener(&ns, 1024);
    let mut agent = Agent::start(&ns);
    agent.sigterm_and_wait();
    agent.child = agent.spawn(Some("after_write"));
    let clients = burst(&ns, addr, 40);
    let status = agent.child.wait().unwrap();
    assert_eq!(status.signal(), Some(9), "{status}");
    assert_eq!(ns_somaxconn(&ns), 128, "the write happened");
    drop(clients);

    agent.child = agent.spawn(None);
    let ns_key = format!("net.core.somaxconn@netns:{}", ns.inum());
    let out = Command::new(kpo_binary())
        .args(["explain", &ns_key, "--json"])
        .args(state_args(agent.dir.path()))
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let explained: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    let journal = agent.journal();
    let change = journal
        .iter()
        .find(|j| j["kind"] == "change" && j["after"] == 128)
        .unwrap_or_else(|| panic!("{journal:#?}"));
    assert_eq!(change["status"], "applied", "reconciled: {change}");
    let raise = explained
        .iter()
        .find(|e| e["recommendation"]["recommended_value"] == 128)
        .unwrap_or_else(|| panic!("the raise's recommendation: {explained:#?}"));
    assert_eq!(raise["done"], "applied", "{raise:#}");
    assert_eq!(raise["journal_id"], change["id"], "{raise:#}");
    assert_eq!(raise["recommendation"]["source"], "rules");
    let detail = raise["detail"].as_str().unwrap();
    assert!(
        detail.starts_with("the agent stopped before recording how this change ended"),
        "{detail}"
    );
    assert!(
        raise["recommendation"]["reason"]
            .as_str()
            .unwrap()
            .contains("listen() again"),
        "{raise:#}"
    );
    agent.sigterm_and_wait();
    assert_eq!(host_somaxconn(), host_before);
    drop(listener);
}
