//! nginx (the Debian package) inside the scenario's namespace, with its own prefix and config in a
//! temp directory: one worker, few connections, `listen ADDR:PORT backlog=N`. Made to listen again
//! in one of three ways, to show which ones pick up a new somaxconn:
//!
//! - `reload-backlog`: rewrite `listen ... backlog=N` with N = the new somaxconn, then reload
//!   (SIGHUP, what `nginx -s reload` sends). nginx calls listen() again on a socket whose listen
//!   parameters changed, and the kernel takes min(N, somaxconn) as the new limit. No connection
//!   is lost.
//! - `restart`: stop (SIGQUIT: graceful) and start again; a new socket, the new limit. Connections
//!   waiting in the old queue are reset and connects fail while nothing listens.
//! - `reload`: a plain reload with the same config. nginx keeps its listening socket untouched, so
//!   the limit stays what it was: shown here so that nobody relies on it.
use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};

use super::{interrupt, netns::Netns};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Relisten {
    /// Set `listen ... backlog=N` to the new somaxconn and reload: takes the new limit.
    ReloadBacklog,
    /// Stop nginx and start it again: takes the new limit, drops what waits in the queue.
    Restart,
    /// Plain reload, config unchanged: keeps the old limit (nginx does not call listen() again).
    Reload,
}

impl Relisten {
    pub fn name(self) -> &'static str {
        match self {
            Relisten::ReloadBacklog => "reload after setting listen ... backlog=N",
            Relisten::Restart => "restart",
            Relisten::Reload => "plain reload (nginx -s reload)",
        }
    }
}

pub struct NginxConfig {
    pub address: String,
    pub port: u16,
    pub backlog: i64,
    pub worker_connections: u32,
}

pub struct NsNginx {
    master: Option<Child>,
    dir: PathBuf,
    netns: String,
    pub config: NginxConfig,
}

impl NsNginx {
    /// Writes the config into `dir` and starts nginx in `ns`; returns once it listens.
    pub fn start(ns: &Netns, dir: &Path, config: NginxConfig) -> Result<NsNginx> {
        std::fs::create_dir_all(dir)?;
        let mut nginx = NsNginx {
            master: None,
            dir: dir.to_path_buf(),
            netns: ns.name.clone(),
            config,
        };
        nginx.write_config()?;
        nginx.spawn(ns)?;
        Ok(nginx)
    }

    fn conf_path(&self) -> PathBuf {
        self.dir.join("nginx.conf")
    }

    fn write_config(&self) -> Result<()> {
        let c = &self.config;
        // One worker with few connections: the worker settings of a small service; the accept
        // queue absorbs what it cannot take at once, up to its limit.
        let conf = format!(
            "daemon off;\nmaster_process on;\nworker_processes 1;\npid {dir}/nginx.pid;\n\
             error_log {dir}/error.log;\n\
             events {{ worker_connections {wc}; }}\n\
             http {{\n  access_log off;\n  keepalive_timeout 0;\n\
             \x20 server {{\n    listen {addr}:{port} backlog={backlog};\n\
             \x20   location / {{ return 200 \"ok\\n\"; }}\n  }}\n}}\n",
            dir = self.dir.display(),
            wc = c.worker_connections,
            addr = c.address,
            port = c.port,
            backlog = c.backlog,
        );
        std::fs::write(self.conf_path(), conf)?;
        Ok(())
    }

    fn spawn(&mut self, ns: &Netns) -> Result<()> {
        let nginx = crate::bench::which("nginx").context("nginx is not installed")?;
        // `ip netns exec` execs nginx: the child is nginx's master.
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &ns.name])
            .arg(nginx)
            .arg("-p")
            .arg(&self.dir)
            .arg("-c")
            .arg(self.conf_path())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(self.dir.join("stderr.log"))?);
        let child = interrupt::own_group(&mut cmd)
            .spawn()
            .context("starting nginx")?;
        self.master = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while ns.ss_listener(self.config.port).is_err() {
            interrupt::check()?;
            if let Some(status) = self.master.as_mut().unwrap().try_wait()? {
                self.master = None;
                bail!(
                    "nginx exited with {status}: {}",
                    std::fs::read_to_string(self.dir.join("stderr.log")).unwrap_or_default()
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "nginx did not listen on port {} within 10 s",
                    self.config.port
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    pub fn master_pid(&self) -> Option<u32> {
        self.master.as_ref().map(|c| c.id())
    }

    /// Makes nginx listen again the chosen way, after somaxconn became `somaxconn`; returns when
    /// `ss -ltn` shows the limit it should now have, or, past 5 s, the limit it kept.
    pub fn relisten(&mut self, ns: &Netns, how: Relisten, somaxconn: i64) -> Result<Relistened> {
        let started = Instant::now();
        let expected = match how {
            Relisten::ReloadBacklog => {
                self.config.backlog = somaxconn;
                self.write_config()?;
                self.hangup()?;
                somaxconn.min(self.config.backlog)
            }
            Relisten::Reload => {
                self.hangup()?;
                somaxconn.min(self.config.backlog)
            }
            Relisten::Restart => {
                self.stop()?;
                self.spawn(ns)?;
                somaxconn.min(self.config.backlog)
            }
        };
        let deadline = started + Duration::from_secs(5);
        loop {
            interrupt::check()?;
            let (line, send_q) = ns.ss_listener(self.config.port)?;
            if i64::from(send_q) == expected || Instant::now() > deadline {
                return Ok(Relistened {
                    ss_line: line,
                    limit: send_q,
                    took_effect: i64::from(send_q) == expected,
                    elapsed: started.elapsed(),
                });
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// SIGHUP to the master: what `nginx -s reload` sends (it reads the pid file and signals).
    fn hangup(&self) -> Result<()> {
        let pid = self.master_pid().context("nginx is not running")?;
        // SAFETY: kill(2) on our own child (nginx's master), not yet reaped.
        if unsafe { libc::kill(pid as i32, libc::SIGHUP) } != 0 {
            bail!("SIGHUP to nginx: {}", std::io::Error::last_os_error());
        }
        Ok(())
    }

    /// Stops master and workers (SIGQUIT, SIGTERM, SIGKILL) and checks nothing listens on the
    /// port in the namespace any more.
    pub fn stop(&mut self) -> Result<()> {
        let Some(mut master) = self.master.take() else {
            return Ok(());
        };
        crate::bench::stop_nginx(&mut master)?;
        let left = Command::new("ip")
            .args(["netns", "exec", &self.netns, "ss", "-ltnH", "sport", "="])
            .arg(format!(":{}", self.config.port))
            .output()?;
        let left = String::from_utf8_lossy(&left.stdout);
        if left.contains("LISTEN") {
            bail!("nginx left a listener in {}: {}", self.netns, left.trim());
        }
        Ok(())
    }
}

impl Drop for NsNginx {
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            eprintln!("xtask: stopping nginx: {e:#}");
        }
    }
}

pub struct Relistened {
    /// `ss -ltn` inside the namespace afterwards.
    pub ss_line: String,
    /// Its Send-Q: the accept-queue limit now.
    pub limit: u32,
    pub took_effect: bool,
    pub elapsed: Duration,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What each way of listening again leaves as nginx's accept-queue limit, read with `ss` in
    /// the namespace: a plain reload keeps the old one, a reload after changing `backlog=` and a
    /// restart take min(backlog, somaxconn).
    #[test]
    fn only_a_new_listen_takes_a_raised_somaxconn() {
        if let Some(why) = crate::bench::nginx_test_cannot_run() {
            kpo_test_skip::skip(why);
            return;
        }
        let ns = Netns::create(false).unwrap();
        ns.set_somaxconn(64).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let mut nginx = NsNginx::start(
            &ns,
            dir.path(),
            NginxConfig {
                address: "127.0.0.1".into(),
                port: 18082,
                backlog: 4096,
                worker_connections: 64,
            },
        )
        .unwrap();
        assert_eq!(ns.ss_listener(18082).unwrap().1, 64);
        ns.set_somaxconn(128).unwrap();

        let plain = nginx.relisten(&ns, Relisten::Reload, 128).unwrap();
        assert_eq!(
            (plain.limit, plain.took_effect),
            (64, false),
            "{}",
            plain.ss_line
        );

        let with_backlog = nginx.relisten(&ns, Relisten::ReloadBacklog, 128).unwrap();
        assert_eq!((with_backlog.limit, with_backlog.took_effect), (128, true));

        // The config now asks for 128: a restart under somaxconn 256 takes min(128, 256).
        ns.set_somaxconn(256).unwrap();
        let restarted = nginx.relisten(&ns, Relisten::Restart, 256).unwrap();
        assert_eq!((restarted.limit, restarted.took_effect), (128, true));
        nginx.stop().unwrap();
        assert!(ns.ss_listener(18082).is_err(), "nothing listens after stop");
    }
}
