//! The independent observer of the reaction: a thread inside the namespace reads its
//! `TcpExt: ListenOverflows` and `net.core.somaxconn` every millisecond, and records when the
//! first overflow appeared and when somaxconn changed.
//!
//! Why poll the kernel rather than use the agent's own event timestamps: the agent stamps what it
//! saw at its tick, so its clock starts only when it noticed; the time that matters to a service
//! starts at the drop itself. Polling the namespace's own counter bounds the error by one poll
//! gap (reported as `resolution`), whatever the agent does.
use std::{
    fs::File,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::{Context, Result};

use super::netns::{listen_overflows, reread, Netns, SOMAXCONN};

pub const POLL: Duration = Duration::from_millis(1);

#[derive(Debug, Clone, Default)]
pub struct Observed {
    /// ListenOverflows when the watch started, and now.
    pub overflows_at_start: u64,
    pub overflows: u64,
    /// The first poll that saw ListenOverflows above its starting value.
    pub first_overflow: Option<Instant>,
    pub somaxconn_at_start: i64,
    pub somaxconn: i64,
    /// The first poll that saw somaxconn differ from its starting value, and the value.
    pub somaxconn_changed: Option<(Instant, i64)>,
    /// The longest gap between two polls: the precision of both instants above.
    pub resolution: Duration,
}

pub struct Watch {
    seen: Arc<Mutex<Observed>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Result<()>>>,
}

impl Watch {
    pub fn start(ns: &Netns) -> Result<Watch> {
        let ns_file = File::open(ns.path()).with_context(|| ns.path().display().to_string())?;
        let seen = Arc::new(Mutex::new(Observed::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let thread = {
            let (seen, stop) = (seen.clone(), stop.clone());
            std::thread::spawn(move || -> Result<()> {
                let opened = (|| -> Result<(File, File)> {
                    nix::sched::setns(&ns_file, nix::sched::CloneFlags::CLONE_NEWNET)
                        .context("setns")?;
                    Ok((
                        File::open("/proc/thread-self/net/netstat")?,
                        File::open(SOMAXCONN)?,
                    ))
                })();
                let (netstat, somaxconn) = match opened {
                    Ok(files) => files,
                    Err(e) => {
                        let _ = ready_tx.send(Err(format!("{e:#}")));
                        return Err(e);
                    }
                };
                let mut buf = Vec::new();
                let read = |buf: &mut Vec<u8>| -> Result<(u64, i64)> {
                    reread(&netstat, buf)?;
                    let overflows = listen_overflows(&String::from_utf8_lossy(buf))?;
                    reread(&somaxconn, buf)?;
                    let value = String::from_utf8_lossy(buf).trim().parse()?;
                    Ok((overflows, value))
                };
                let (o0, s0) = read(&mut buf)?;
                *seen.lock().unwrap() = Observed {
                    overflows_at_start: o0,
                    overflows: o0,
                    somaxconn_at_start: s0,
                    somaxconn: s0,
                    ..Observed::default()
                };
                let _ = ready_tx.send(Ok(()));
                let mut last = Instant::now();
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(POLL);
                    let (overflows, value) = read(&mut buf)?;
                    let now = Instant::now();
                    let mut s = seen.lock().unwrap();
                    s.resolution = s.resolution.max(now - last);
                    last = now;
                    s.overflows = overflows;
                    s.somaxconn = value;
                    if overflows > s.overflows_at_start && s.first_overflow.is_none() {
                        s.first_overflow = Some(now);
                    }
                    if value != s.somaxconn_at_start && s.somaxconn_changed.is_none() {
                        s.somaxconn_changed = Some((now, value));
                    }
                }
                Ok(())
            })
        };
        match ready_rx.recv_timeout(Duration::from_secs(10)) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => anyhow::bail!("the namespace watch could not start: {e}"),
            Err(_) => anyhow::bail!("the namespace watch did not start within 10 s"),
        }
        Ok(Watch {
            seen,
            stop,
            thread: Some(thread),
        })
    }

    pub fn now(&self) -> Observed {
        self.seen.lock().unwrap().clone()
    }

    /// Stops the thread; its last observation, or the error that stopped it early.
    pub fn finish(mut self) -> Result<Observed> {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join()
                .map_err(|_| anyhow::anyhow!("the namespace watch panicked"))?
                .context("the namespace watch")?;
        }
        Ok(self.now())
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
