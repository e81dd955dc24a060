//! `kpo run` for the scenario and the reaction bench: fresh state (policy, journal, socket, events)
//! in its own directory, a policy that puts `net.core.somaxconn` in auto for one namespace only,
//! stopped with SIGTERM (SIGKILL past a deadline) on drop.
use std::{
    io::{Read, Seek, SeekFrom},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use serde_json::Value;

use super::interrupt;

pub struct AgentConfig {
    pub tick: String,
    pub window: String,
}

impl AgentConfig {
    pub fn describe(&self) -> String {
        format!("kpo run --tick {} --window {}", self.tick, self.window)
    }
}

/// The policy: somaxconn in auto for the rules, only in the namespace at `netns_path`, from
/// `min` up to 65535, at most doubling per step, judged by the guard through the listeners and
/// request latency (the load generator itself raises the host's run-queue p99 on a small
/// machine). Everything else stays at the built-in default (observe and recommend only).
pub fn policy(netns_path: &Path, min: i64) -> String {
    format!(
        r#"[params."net.core.somaxconn"]
mode = "auto"
min = {min}
max = 65535
max_step = "100%"
sources = ["rules"]
namespaces = ["{}"]
guard_signals = ["listen_overflows", "synack_retransmits", "request_p99"]
"#,
        netns_path.display()
    )
}

pub struct Agent {
    child: Option<Child>,
    pub dir: PathBuf,
    pub events: Events,
}

impl Agent {
    /// Starts `kpo run` with its state in `dir` (which must be fresh) and returns once it has
    /// reported its sensors (programs loaded and attached).
    pub fn start(dir: &Path, policy: &str, config: &AgentConfig) -> Result<Agent> {
        std::fs::create_dir_all(dir)?;
        let policy_path = dir.join("policy.toml");
        std::fs::write(&policy_path, policy)?;
        let events_path = dir.join("events.ndjson");
        let log = std::fs::File::create(dir.join("agent.log"))?;
        let mut cmd = Command::new(crate::kpo_binary());
        cmd.args(["run", "--tick", &config.tick, "--window", &config.window])
            .arg("--events")
            .arg(&events_path)
            .arg("--policy")
            .arg(&policy_path)
            .arg("--state-dir")
            .arg(dir.join("state"))
            .arg("--socket")
            .arg(dir.join("kpo.sock"))
            .stdout(Stdio::null())
            .stderr(log);
        let child = interrupt::own_group(&mut cmd)
            .spawn()
            .context("starting kpo run")?;
        let mut agent = Agent {
            child: Some(child),
            dir: dir.to_path_buf(),
            events: Events::new(events_path),
        };
        // Loading and attaching the eBPF programs takes seconds on a busy machine.
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            interrupt::check()?;
            if agent.events.poll()?.iter().any(|e| e["kind"] == "sensors") {
                return Ok(agent);
            }
            if let Some(status) = agent.child.as_mut().unwrap().try_wait()? {
                bail!(
                    "kpo run exited with {status} before reporting its sensors:\n{}",
                    agent.log_tail()
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "kpo run did not report its sensors within 90 s:\n{}",
                    agent.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, |c| c.id())
    }

    /// CPU time the agent has used so far (user + system), seconds.
    pub fn cpu_seconds(&self) -> Result<f64> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid()))?;
        // After the parenthesised command, utime and stime are the 12th and 13th fields.
        let after = stat.rsplit_once(')').context("stat format")?.1;
        let fields: Vec<&str> = after.split_whitespace().collect();
        let ticks: f64 = fields[11].parse::<f64>()? + fields[12].parse::<f64>()?;
        // SAFETY: sysconf has no preconditions.
        Ok(ticks / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64)
    }

    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.dir.join("agent.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// SIGTERM, then SIGKILL if it has not exited within 10 s; its exit status.
    pub fn stop(&mut self) -> Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        if child.try_wait()?.is_none() {
            // SAFETY: kill(2) on our own child, not yet reaped.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = child.try_wait()? {
                if !status.success() {
                    bail!("kpo run exited with {status}:\n{}", self.log_tail());
                }
                return Ok(());
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                bail!("kpo run did not stop within 10 s of SIGTERM; killed");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            eprintln!("xtask: stopping the agent: {e:#}");
        }
    }
}

/// The agent's NDJSON events file, read as it grows (whole lines only).
pub struct Events {
    path: PathBuf,
    offset: u64,
    partial: String,
    pub all: Vec<Value>,
}

impl Events {
    pub fn new(path: PathBuf) -> Events {
        Events {
            path,
            offset: 0,
            partial: String::new(),
            all: Vec::new(),
        }
    }

    /// The events written since the last call (also kept in `all`).
    pub fn poll(&mut self) -> Result<Vec<Value>> {
        let Ok(mut file) = std::fs::File::open(&self.path) else {
            return Ok(Vec::new());
        };
        file.seek(SeekFrom::Start(self.offset))?;
        let mut text = String::new();
        let n = file.read_to_string(&mut text)?;
        self.offset += n as u64;
        self.partial.push_str(&text);
        let mut new = Vec::new();
        while let Some(end) = self.partial.find('\n') {
            let line: String = self.partial.drain(..=end).collect();
            if line.trim().is_empty() {
                continue;
            }
            let event: Value = serde_json::from_str(&line)
                .with_context(|| format!("an event line that is not JSON: {line}"))?;
            new.push(event);
        }
        self.all.extend(new.iter().cloned());
        Ok(new)
    }
}

/// A verified change of somaxconn by the rules in the namespace `inode`: (value, reason).
pub fn rules_change(event: &Value, inode: u64) -> Option<(i64, String)> {
    (event["kind"] == "change"
        && event["phase"] == "verified"
        && event["source"] == "rules"
        && event["target"] == format!("net.core.somaxconn@netns:{inode}"))
    .then(|| {
        Some((
            event["read_back"].as_i64()?,
            event["reason"].as_str().unwrap_or_default().to_string(),
        ))
    })
    .flatten()
}

/// A change of somaxconn in the namespace `inode` being undone: the guard's revert verdict (with
/// the health signal that regressed) or a `reverted` change event; a line saying so.
pub fn undo_note(event: &Value, inode: u64) -> Option<String> {
    let target = format!("net.core.somaxconn@netns:{inode}");
    if event["kind"] == "guard" && event["verdict"] == "revert" && event["address"] == target {
        return Some(format!(
            "KPO's guard reverted its change to {}: {} went from {} to {} (guard event)",
            event["value"], event["signal"], event["before"], event["after"]
        ));
    }
    if event["kind"] == "change" && event["phase"] == "reverted" && event["target"] == target {
        return Some(format!(
            "KPO put net.core.somaxconn back to {} in the namespace: {}",
            event["read_back"],
            event["reason"].as_str().unwrap_or_default()
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_rules_change_in_its_namespace_only() {
        let e: Value = serde_json::json!({"kind": "change", "phase": "verified", "source": "rules",
            "target": "net.core.somaxconn@netns:42", "read_back": 128,
            "reason": "... calls listen() again ..."});
        assert_eq!(
            rules_change(&e, 42),
            Some((128, "... calls listen() again ...".into()))
        );
        assert_eq!(rules_change(&e, 43), None);
        let mut proposed = e.clone();
        proposed["phase"] = "proposed".into();
        assert_eq!(rules_change(&proposed, 42), None);
    }

    #[test]
    fn reads_only_whole_lines_as_they_are_written() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("e.ndjson");
        let mut events = Events::new(path.clone());
        assert!(events.poll().unwrap().is_empty(), "no file yet");
        std::fs::write(&path, "{\"kind\":\"start\"}\n{\"kind\":\"sens").unwrap();
        assert_eq!(events.poll().unwrap().len(), 1);
        std::fs::write(&path, "{\"kind\":\"start\"}\n{\"kind\":\"sensors\"}\n").unwrap();
        let new = events.poll().unwrap();
        assert_eq!(new.len(), 1);
        assert_eq!(new[0]["kind"], "sensors");
        assert_eq!(events.all.len(), 2);
    }
}
