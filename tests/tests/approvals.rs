//! Approvals end to end: the accept-queue rule in a namespace the test makes, with the policy in
//! recommend (or in auto under `kpo run --recommend-only`); a bounded burst makes a pending
//! approval; `kpo pending`, `approve`, `reject`, `explain` through the socket and on the state
//! directory; the webhook to a receiver on loopback that is down at first. The host's somaxconn
//! never moves.
use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    sync::{Arc, Mutex},
    time::Duration,
};

use kpo_integration::Netns;
use serde_json::Value;

use crate::{
    agent_binary::{kpo_binary, lines, schema},
    common::wait_until,
};

const WAIT: Duration = Duration::from_secs(30);

fn host_somaxconn() -> String {
    std::fs::read_to_string("/proc/sys/net/core/somaxconn").unwrap()
}

fn ns_somaxconn(ns: &Netns) -> i64 {
    ns.exec(&["cat", "/proc/sys/net/core/somaxconn"])
        .trim()
        .parse()
        .unwrap()
}

fn state_args(dir: &Path) -> Vec<PathBuf> {
    vec![
        "--policy".into(),
        dir.join("policy.toml"),
        "--state-dir".into(),
        dir.join("state"),
        "--socket".into(),
        dir.join("kpo.sock"),
    ]
}

fn kpo_output(dir: &Path, args: &[&str]) -> Output {
    Command::new(kpo_binary())
        .args(args)
        .args(state_args(dir))
        .output()
        .unwrap()
}

/// `kpo ...`, which must succeed; its standard output.
fn kpo(dir: &Path, args: &[&str]) -> String {
    let out = kpo_output(dir, args);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "kpo {args:?}: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

fn pending(dir: &Path) -> Vec<Value> {
    serde_json::from_str::<Vec<Value>>(&kpo(dir, &["pending", "--json"])).unwrap()
}

/// `kpo run` with a 100 ms tick and 500 ms windows; killed on drop.
struct Agent {
    child: std::process::Child,
    stderr: PathBuf,
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Agent {
    fn start(dir: &Path, events: &Path, extra: &[&str]) -> Agent {
        let stderr = dir.join(format!("stderr-{}.log", lines(events).len()));
        let child = Command::new(kpo_binary())
            .args(["run", "--tick", "100ms", "--window", "500ms", "--events"])
            .arg(events)
            .args(extra)
            .args(state_args(dir))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .unwrap();
        let agent = Agent { child, stderr };
        let started = lines(events)
            .iter()
            .filter(|e| e["kind"] == "sensors")
            .count();
        wait_until("the agent started", WAIT, || {
            lines(events)
                .iter()
                .filter(|e| e["kind"] == "sensors")
                .count()
                > started
        });
        agent
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    fn sigterm_and_wait(&mut self) {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap();
        assert!(self.child.wait().unwrap().success());
    }
}

/// somaxconn 16 in a new namespace, a listener there asking for 1024 (capped at 16), and 40
/// connections nobody accepts: the queue fills at 17 and the rest overflow. Keep the returned
/// values alive while the queue must stay full.
fn burst(ns: &Netns) -> (TcpListener, Vec<std::io::Result<TcpStream>>) {
    ns.run(|| std::fs::write("/proc/sys/net/core/somaxconn", "16").unwrap());
    let listener = ns.run(|| TcpListener::bind("127.0.0.1:0").unwrap());
    assert_eq!(
        unsafe { libc::listen(std::os::fd::AsRawFd::as_raw_fd(&listener), 1024) },
        0
    );
    let addr = listener.local_addr().unwrap();
    let clients = ns.run(|| {
        (0..40)
            .map(|_| TcpStream::connect_timeout(&addr, Duration::from_millis(200)))
            .collect()
    });
    (listener, clients)
}

/// A webhook receiver on loopback: answers 200 to each POST and keeps the JSON bodies.
struct Receiver {
    bodies: Arc<Mutex<Vec<Value>>>,
}

impl Receiver {
    fn start(addr: SocketAddr) -> Receiver {
        let listener = TcpListener::bind(addr).unwrap();
        let bodies = Arc::new(Mutex::new(Vec::new()));
        let keep = bodies.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                if let Some(body) = read_post(stream) {
                    keep.lock().unwrap().push(body);
                }
            }
        });
        Receiver { bodies }
    }

    fn find(&self, event: &str, id: &str) -> Option<Value> {
        self.bodies
            .lock()
            .unwrap()
            .iter()
            .find(|b| b["kpo"]["event"] == event && b["kpo"]["approval"]["id"] == id)
            .cloned()
    }
}

/// One HTTP request: headers, a Content-Length body; answered 200 and closed.
fn read_post(stream: TcpStream) -> Option<Value> {
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let mut reader = BufReader::new(stream.try_clone().ok()?);
    let mut length = 0usize;
    let mut first = String::new();
    reader.read_line(&mut first).ok()?;
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).ok()?;
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                length = v.trim().parse().ok()?;
            }
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    let mut stream = stream;
    let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    assert!(first.starts_with("POST "), "{first}");
    serde_json::from_slice(&body).ok()
}

fn check_schema(events: &Path) {
    let validator = schema();
    let all = lines(events);
    for e in &all {
        let errors: Vec<String> = validator.iter_errors(e).map(|x| x.to_string()).collect();
        assert!(errors.is_empty(), "{errors:?}\n{e:#}");
    }
    every_held_proposal_is_answered(&all);
}

/// Each change proposed with `needs_approval` (to a value the kernel does not have) is followed,
/// before the next proposal for its target, by `approval_required` or `approval_not_asked` for
/// it: a reader of the stream learns what became of every proposal that waited for a person.
fn every_held_proposal_is_answered(all: &[Value]) {
    for (i, e) in all.iter().enumerate() {
        let held = e["kind"] == "change"
            && e["phase"] == "proposed"
            && e["decision"] == "needs_approval"
            && e["before"] != e["after"];
        if !held {
            continue;
        }
        let answer = all[i + 1..]
            .iter()
            .take_while(|later| {
                !(later["kind"] == "change"
                    && later["phase"] == "proposed"
                    && later["target"] == e["target"])
            })
            .find(|later| {
                (later["kind"] == "approval_required" || later["kind"] == "approval_not_asked")
                    && later["parameter"] == e["target"]
            });
        assert!(answer.is_some(), "no approval event answers {e:#}");
    }
}

pub fn a_burst_makes_a_pending_approval_that_survives_a_restart_and_approve_applies() {
    let host_before = host_somaxconn();
    let ns = Netns::new();
    // Other namespaces on this machine may hold listeners too: only the test's is looked at.
    let target = format!("net.core.somaxconn@netns:{}", ns.inum());
    let dir = tempfile::tempdir().unwrap();
    // A port nobody listens on yet: the receiver is down when the approval is announced.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    std::fs::write(
        dir.path().join("policy.toml"),
        format!(
            r#"
# The guard is not under test here: the host-wide signals it watches move with whatever else
# this machine runs, and a revert would hide what the approval did.
[guard]
signals = []

[approvals]
webhook = "http://{port}/kpo"

# Other parameters and namespaces this machine has (another agent's load) make no approval here.
[defaults]
mode = "observe"

[params."net.core.somaxconn"]
mode = "recommend"
min = 16
max = 65535
max_step = "1000%"
sources = ["rules", "operator"]
namespaces = [{}]
"#,
            ns.inum()
        ),
    )
    .unwrap();
    let events = dir.path().join("events.ndjson");
    let mut agent = Agent::start(dir.path(), &events, &[]);
    let (listener, clients) = burst(&ns);

    wait_until("a pending approval", WAIT, || {
        !pending(dir.path()).is_empty()
    });
    let items = pending(dir.path());
    assert_eq!(items.len(), 1, "{items:#?}");
    let item = &items[0];
    let id = item["id"].as_str().unwrap().to_string();
    assert_eq!(item["parameter"], target);
    assert_eq!(item["current_value"], 16);
    assert_eq!(item["value"], 128);
    assert_eq!(item["state"], "pending");
    assert_eq!(item["source"], "rules");
    assert!(
        item["reason"].as_str().unwrap().contains("listen() again"),
        "{item}"
    );
    assert_eq!(ns_somaxconn(&ns), 16, "nothing applied before approval");
    assert!(lines(&events)
        .iter()
        .any(|e| e["kind"] == "approval_required" && e["id"] == id.as_str()));

    // The webhook receiver is down: the agent logs the failure, keeps going, and retries.
    wait_until("a failed webhook attempt", WAIT, || {
        agent
            .log()
            .contains(&format!("approval_required {id} failed (attempt 1 of"))
    });
    let windows = || {
        lines(&events)
            .iter()
            .filter(|e| e["kind"] == "window")
            .count()
    };
    let windows_then = windows();
    wait_until("windows while the receiver is down", WAIT, || {
        windows() >= windows_then + 2
    });
    let receiver = Receiver::start(port);
    wait_until("the webhook delivered after a retry", WAIT, || {
        receiver.find("approval_required", &id).is_some()
    });
    let body = receiver.find("approval_required", &id).unwrap();
    let text = body["text"].as_str().unwrap();
    assert!(text.contains(&format!("approval {id} required")), "{text}");
    assert!(text.contains(&format!("kpo approve {id}")), "{text}");
    assert_eq!(body["kpo"]["approval"]["value"], 128);
    wait_until("the delivery logged", WAIT, || {
        agent.log().contains("delivered (attempt")
    });
    assert!(
        !agent
            .log()
            .contains(&format!("approval_required {id} delivered (attempt 1)")),
        "the first attempt cannot have reached a receiver that was down"
    );

    // Stopped: the approval is in the state directory, read by the CLI itself.
    agent.sigterm_and_wait();
    let offline = pending(dir.path());
    assert_eq!(offline.len(), 1);
    assert_eq!(offline[0]["id"], id.as_str());
    // Started again: the agent serves it through its socket.
    let mut agent = Agent::start(dir.path(), &events, &[]);
    let again = pending(dir.path());
    assert_eq!(again[0]["id"], id.as_str(), "{again:#?}");
    // ... and announces it to the webhook again, marked as a repeat.
    let repeated = || {
        receiver
            .bodies
            .lock()
            .unwrap()
            .iter()
            .filter(|b| {
                b["kpo"]["event"] == "approval_required"
                    && b["kpo"]["approval"]["id"] == id.as_str()
            })
            .map(|b| b["kpo"]["repeat"] == true)
            .collect::<Vec<bool>>()
    };
    wait_until("the pending approval announced again", WAIT, || {
        repeated().len() == 2
    });
    assert_eq!(repeated(), [false, true]);

    let out = kpo(dir.path(), &["approve", &id, "--json"]);
    let approved: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(approved["report"]["status"], "applied", "{approved:#}");
    assert_eq!(approved["approval"]["state"], "approved");
    let journal_id = approved["report"]["journal_id"].as_u64().unwrap();
    assert_eq!(approved["approval"]["journal_id"], journal_id);
    assert_eq!(ns_somaxconn(&ns), 128, "applied in the namespace");
    let journal: Vec<Value> = kpo(dir.path(), &["journal", "--json"])
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let entry = journal.iter().find(|e| e["id"] == journal_id).unwrap();
    assert_eq!(entry["source"], "rules");
    assert_eq!(entry["status"], "applied");
    assert_eq!(entry["after"], 128);
    wait_until("the approval's end delivered", WAIT, || {
        receiver.find("approval_resolved", &id).is_some()
    });
    assert!(pending(dir.path()).is_empty());
    // Approved again (a script's second run): done, nothing journaled (s60 story BR-2).
    let out = kpo_output(dir.path(), &["approve", &id]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&format!("{id} was approved already, by ")),
        "{out:?}"
    );
    assert_eq!(
        kpo(dir.path(), &["journal", "--json"]).lines().count(),
        journal.len(),
        "nothing journaled"
    );

    let explained: Vec<Value> =
        serde_json::from_str(&kpo(dir.path(), &["explain", &target, "--json"])).unwrap();
    let with_approval = explained
        .iter()
        .find(|e| e["approval_id"] == id.as_str())
        .expect("the recommendation behind the approval");
    assert_eq!(with_approval["done"], "pending");
    assert_eq!(with_approval["approval"]["state"], "approved");
    assert_eq!(with_approval["approval"]["journal_id"], journal_id);
    agent.sigterm_and_wait();
    assert_eq!(host_somaxconn(), host_before);
    check_schema(&events);
    drop((listener, clients));
}

/// Defect (s36 story F3): an approval the CLI resolved while the agent was down (here rejected
/// after a `kill -KILL`) was never posted to the webhook, not even at the next start, nor in the
/// event stream. The next start reports it and posts it; the start after that reports it no more.
pub fn what_the_cli_resolved_while_the_agent_was_down_is_posted_at_the_next_start() {
    let host_before = host_somaxconn();
    let ns = Netns::new();
    let dir = tempfile::tempdir().unwrap();
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let receiver = Receiver::start(port);
    auto_policy(dir.path(), &ns, &format!("webhook = \"http://{port}/kpo\""));
    let events = dir.path().join("events.ndjson");
    let agent = Agent::start(dir.path(), &events, &["--recommend-only"]);
    let (listener, clients) = burst(&ns);
    let id = wait_for_new_approval(&events, &[], &agent)["id"]
        .as_str()
        .unwrap()
        .to_string();
    wait_until("the approval posted", WAIT, || {
        receiver.find("approval_required", &id).is_some()
    });
    drop(agent); // SIGKILL
    drop((listener, clients));

    // The agent is down: the CLI rejects it on the state directory.
    let rejected: Value = serde_json::from_str(&kpo(
        dir.path(),
        &["reject", &id, "--reason", "not while it is down", "--json"],
    ))
    .unwrap();
    assert_eq!(rejected["state"], "rejected");
    let ended = || -> Vec<Value> {
        lines(&events)
            .into_iter()
            .filter(|e| e["kind"] == "approval_resolved" && e["id"] == id.as_str())
            .collect()
    };
    assert!(ended().is_empty());

    // The next start reports it (before its first `sensors` event) and posts it.
    let mut agent = Agent::start(dir.path(), &events, &["--recommend-only"]);
    let reported = ended();
    assert_eq!(reported.len(), 1, "{reported:#?}");
    assert_eq!(reported[0]["state"], "rejected");
    assert_eq!(reported[0]["why"], "not while it is down");
    wait_until("the rejection posted", WAIT, || {
        receiver.find("approval_resolved", &id).is_some()
    });
    let body = receiver.find("approval_resolved", &id).unwrap();
    assert_eq!(body["kpo"]["approval"]["state"], "rejected", "{body}");
    assert_eq!(
        body["kpo"]["approval"]["why"], "not while it is down",
        "{body}"
    );
    let text = body["text"].as_str().unwrap();
    assert!(
        text.contains(&format!("approval {id} (")) && text.contains("rejected by"),
        "{text}"
    );
    agent.sigterm_and_wait();

    // The start after that does not report it again.
    let mut agent = Agent::start(dir.path(), &events, &["--recommend-only"]);
    assert_eq!(ended().len(), 1, "{:#?}", ended());
    agent.sigterm_and_wait();
    assert_eq!(ns_somaxconn(&ns), 16, "nothing applied");
    assert_eq!(host_somaxconn(), host_before);
    check_schema(&events);
}

/// An approval approved while the agent is down is applied by the CLI on the state directory,
/// and said to be unwatched, as `kpo apply` says it then (s53 story AN-9: it was not).
pub fn an_approval_approved_while_the_agent_is_down_is_said_to_be_unwatched() {
    let host_before = host_somaxconn();
    let ns = Netns::new();
    let dir = tempfile::tempdir().unwrap();
    auto_policy(dir.path(), &ns, "");
    let events = dir.path().join("events.ndjson");
    let agent = Agent::start(dir.path(), &events, &["--recommend-only"]);
    let (listener, clients) = burst(&ns);
    let advice = wait_for_new_approval(&events, &[], &agent);
    let id = advice["id"].as_str().unwrap().to_string();
    drop(agent); // SIGKILL
    drop((listener, clients));
    let out = kpo(dir.path(), &["approve", &id]);
    assert_eq!(ns_somaxconn(&ns), advice["value"], "applied: {out}");
    assert!(
        out.contains(&format!("{id}: approved by"))
            && out.contains(
                "not watched by the guard: no agent is running, and a change made while it is \
                 down is not judged when it starts (kpo revert "
            ),
        "{out}"
    );
    assert_eq!(host_somaxconn(), host_before);
}

/// The policy file of the second test: somaxconn in auto in the test's namespace only (other
/// namespaces on this machine are not the test's), and `[approvals]` as given.
fn auto_policy(dir: &Path, ns: &Netns, approvals: &str) {
    std::fs::write(
        dir.join("policy.toml"),
        format!(
            r#"
# The guard is not under test here: the host-wide signals it watches move with whatever else
# this machine runs, and a revert would hide what the approval did.
[guard]
signals = []

[approvals]
{approvals}

# Other parameters and namespaces this machine has (another agent's load) make no approval here.
[defaults]
mode = "observe"

[params."net.core.somaxconn"]
mode = "auto"
min = 16
max = 65535
max_step = "1000%"
sources = ["rules", "operator"]
namespaces = [{}]
"#,
            ns.inum()
        ),
    )
    .unwrap();
}

/// The first `approval_required` event whose id is not in `except`.
fn wait_for_new_approval(events: &Path, except: &[&str], agent: &Agent) -> Value {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        if let Some(e) = lines(events)
            .into_iter()
            .find(|e| e["kind"] == "approval_required" && !except.iter().any(|id| e["id"] == *id))
        {
            return e;
        }
        if std::time::Instant::now() > deadline {
            let decided: Vec<Value> = lines(events)
                .into_iter()
                .filter(|e| e["kind"] != "window" && e["kind"] != "sensors")
                .collect();
            panic!("no new approval:\n{decided:#?}\n{}", agent.log());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn recommend_only_holds_an_auto_change_and_rejected_or_expired_ones_are_not_applied() {
    let host_before = host_somaxconn();
    let ns = Netns::new();
    // Other namespaces on this machine may hold listeners too: only the test's is looked at.
    let target = format!("net.core.somaxconn@netns:{}", ns.inum());
    let dir = tempfile::tempdir().unwrap();
    auto_policy(dir.path(), &ns, "");
    let events = dir.path().join("events.ndjson");
    let mut agent = Agent::start(dir.path(), &events, &["--recommend-only"]);
    assert!(agent.log().contains("--recommend-only"), "{}", agent.log());
    let (listener, clients) = burst(&ns);

    let first = wait_for_new_approval(&events, &[], &agent);
    assert_eq!(first["held_by"], "recommend_only");
    assert_eq!(first["value"], 128);
    let id = first["id"].as_str().unwrap().to_string();
    let all = lines(&events);
    assert!(
        !all.iter()
            .any(|e| e["kind"] == "change" && e["phase"] == "applied"),
        "nothing applied under --recommend-only"
    );
    let proposed = all
        .iter()
        .find(|e| {
            e["kind"] == "change" && e["phase"] == "proposed" && e["target"] == target.as_str()
        })
        .unwrap();
    assert_eq!(proposed["decision"], "needs_approval");

    // A policy that lets approvals wait 1 s: once a second has passed since the advice, the CLI
    // (on the state directory, the agent being down) finds it expired and refuses to apply it.
    agent.sigterm_and_wait();
    auto_policy(dir.path(), &ns, "expire_after = \"1s\"");
    let advised = first["updated_ms"].as_u64().unwrap();
    wait_until("a second since the advice", WAIT, || {
        kpo_agent::journal::now_ms() > advised + 1000
    });
    // Defect (review s36 story): `kpo pending` recorded the expiry and said only "no approval
    // pending"; it names what it expired, once (on standard error, so `--json` stays an array).
    let out = kpo_output(dir.path(), &["pending"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "no approval pending\n"
    );
    assert!(
        err.contains(&format!(
            "kpo: expired now, while the agent is down: {id}  {target} 16 -> 128  (advised by rules, \
             expired "
        )) && err.contains("the agent's next start reports it (approval_resolved)"),
        "{err}"
    );
    let out = kpo_output(dir.path(), &["pending", "--json"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "[]");
    assert!(!String::from_utf8_lossy(&out.stderr).contains("expired now"));
    let out = kpo_output(dir.path(), &["approve", &id]);
    assert!(!out.status.success(), "an expired approval was approved");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("{id} expired at")) && err.contains("can no longer be approved"),
        "{err}"
    );
    assert!(pending(dir.path()).is_empty());

    // Started again (approvals wait 1 h again), the rule advises anew: a second approval.
    auto_policy(dir.path(), &ns, "");
    let mut agent = Agent::start(dir.path(), &events, &["--recommend-only"]);
    let second = wait_for_new_approval(&events, &[&id], &agent);
    let second_id = second["id"].as_str().unwrap().to_string();

    // Rejected through the agent: recorded, not applied, and no longer approvable.
    let rejected: Value = serde_json::from_str(&kpo(
        dir.path(),
        &["reject", &second_id, "--reason", "not now", "--json"],
    ))
    .unwrap();
    assert_eq!(rejected["state"], "rejected");
    assert_eq!(rejected["why"], "not now");
    wait_until("the rejection event", WAIT, || {
        lines(&events).iter().any(|e| {
            e["kind"] == "approval_resolved"
                && e["id"] == second_id.as_str()
                && e["state"] == "rejected"
        })
    });
    let out = kpo_output(dir.path(), &["approve", &second_id]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("can no longer be approved"));
    // The rule repeats its advice while the queue stays full (every 10 windows): not asked
    // again, and the stream says so after the proposal.
    wait_until("the rejected advice made again", WAIT, || {
        lines(&events).iter().any(|e| {
            e["kind"] == "approval_not_asked"
                && e["approval_id"] == second_id.as_str()
                && e["because"] == "rejected"
                && e["parameter"] == target.as_str()
                && e["value"] == second["value"]
        })
    });
    agent.sigterm_and_wait();
    assert_eq!(ns_somaxconn(&ns), 16, "nothing applied");

    let explained: Vec<Value> =
        serde_json::from_str(&kpo(dir.path(), &["explain", &target, "--json"])).unwrap();
    let states: Vec<&str> = explained
        .iter()
        .filter_map(|e| e["approval"]["state"].as_str())
        .collect();
    assert!(
        states.contains(&"rejected") && states.contains(&"expired"),
        "{explained:#?}"
    );
    assert!(
        explained
            .iter()
            .all(|e| e["done"] == "pending" || e["done"] == "rejected"),
        "{explained:#?}"
    );
    assert_eq!(host_somaxconn(), host_before);
    check_schema(&events);
    drop((listener, clients));
}
