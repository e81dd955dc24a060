//! `cargo xtask bench reaction`: from the first listen overflow in a namespace to the changed
//! `net.core.somaxconn` being readable there, with the rules in auto; median and worst over trials.
//!
//! Each trial is fresh: a new namespace (somaxconn low), a new agent with its own state directory,
//! a listener asking for a large backlog that never accepts (so the first overflow happens exactly
//! when the burst arrives, not whenever a server happens to fall behind), then a burst of twice
//! the limit in connections. The burst starts at a different point of the agent's tick in each
//! trial (spread evenly over one tick), so the figures cover every phase. The instants come from
//! the kernel, polled inside the namespace every millisecond (`scenario::watch`, which says why not
//! the agent's own timestamps).
use std::{
    net::{SocketAddr, TcpListener},
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};

use crate::scenario::{
    agent::{self, Agent, AgentConfig},
    interrupt,
    netns::{self, Netns},
    watch::{self, Watch},
};

#[derive(clap::Args)]
pub struct Args {
    /// Trials (each with a fresh namespace and agent).
    #[arg(long, default_value_t = 10, value_parser = crate::positive_usize())]
    pub trials: usize,
    /// The agent's tick.
    #[arg(long, default_value = "1s", value_parser = crate::duration_arg)]
    pub tick: String,
    /// The agent's window (its rules run every tick and at window end).
    #[arg(long, default_value = "10s", value_parser = crate::duration_arg)]
    pub window: String,
    /// net.core.somaxconn inside the namespace at the start of each trial.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(i64).range(1..))]
    pub somaxconn: i64,
}

/// How long a trial waits for the change before it counts as a miss.
const GIVE_UP: Duration = Duration::from_secs(30);

pub fn run(args: &Args) -> Result<()> {
    if !crate::is_root() {
        bail!("the reaction bench creates network namespaces and runs the agent: run it as root");
    }
    interrupt::install()?;
    let tick = parse_duration(&args.tick)?;
    let config = AgentConfig {
        tick: args.tick.clone(),
        window: args.window.clone(),
    };
    let host_before = netns::host_somaxconn()?;
    let dir = tempfile::Builder::new()
        .prefix("kpo-bench-reaction-")
        .tempdir()?;
    println!(
        "bench reaction: first listen overflow -> changed somaxconn readable in the namespace"
    );
    println!(
        "  {}; policy: net.core.somaxconn auto for the rules, in the trial's namespace only",
        config.describe()
    );
    println!(
        "  per trial: fresh namespace (somaxconn {}), fresh agent and state; a listener asking for \
         backlog 4096 that never accepts; a burst of {} connections at tick phase i/{} of a tick",
        args.somaxconn,
        2 * args.somaxconn,
        args.trials
    );
    println!(
        "  instants: ListenOverflows and somaxconn polled every {} ms inside the namespace",
        watch::POLL.as_millis()
    );
    let mut reactions = Vec::new();
    let mut misses = 0;
    for i in 0..args.trials {
        interrupt::check()?;
        let phase = tick.mul_f64(i as f64 / args.trials.max(1) as f64);
        match trial(args, &config, &dir.path().join(format!("trial-{i}")), phase)? {
            Some(t) => {
                println!(
                    "trial {:>2}/{}: {:>5} ms (somaxconn {} -> {}, poll resolution {} ms)",
                    i + 1,
                    args.trials,
                    t.reaction.as_millis(),
                    args.somaxconn,
                    t.value,
                    t.resolution.as_millis()
                );
                reactions.push(t.reaction.as_secs_f64());
            }
            None => {
                misses += 1;
                println!(
                    "trial {:>2}/{}: no change within {} s",
                    i + 1,
                    args.trials,
                    GIVE_UP.as_secs()
                );
            }
        }
    }
    let host_after = netns::host_somaxconn()?;
    if reactions.is_empty() {
        bail!("no trial saw the change");
    }
    let worst = reactions.iter().copied().fold(0.0, f64::max);
    let best = reactions.iter().copied().fold(f64::MAX, f64::min);
    println!(
        "\nreaction over {} trials ({} missed): median {:.0} ms, worst {:.0} ms, best {:.0} ms \
         (target: under 2 s with a 1 s tick; tick {}, window {})",
        reactions.len(),
        misses,
        crate::bench::median(&reactions) * 1000.0,
        worst * 1000.0,
        best * 1000.0,
        args.tick,
        args.window
    );
    println!(
        "host net.core.somaxconn: {host_before} before, {host_after} after{}",
        if host_before == host_after {
            " (unchanged)"
        } else {
            " (MOVED)"
        }
    );
    if host_before != host_after {
        bail!("the host's somaxconn moved from {host_before} to {host_after}");
    }
    if misses > 0 {
        bail!("{misses} trial(s) saw no change");
    }
    Ok(())
}

struct Trial {
    reaction: Duration,
    value: i64,
    resolution: Duration,
}

fn trial(
    args: &Args,
    config: &AgentConfig,
    dir: &std::path::Path,
    phase: Duration,
) -> Result<Option<Trial>> {
    let ns = Netns::create(false)?;
    let inode = ns.inode()?;
    ns.set_somaxconn(args.somaxconn)?;
    let listener = ns.run(|| {
        let l = TcpListener::bind("127.0.0.1:0")?;
        // Ask for more than somaxconn: the kernel caps it, the rule's case (a).
        // SAFETY: listen(2) on a socket we own.
        if unsafe { libc::listen(l.as_raw_fd(), 4096) } != 0 {
            bail!("listen: {}", std::io::Error::last_os_error());
        }
        Ok(l)
    })?;
    let addr = listener.local_addr()?;
    let mut kpo = Agent::start(dir, &agent::policy(&ns.path(), args.somaxconn), config)?;
    let watch = Watch::start(&ns)?;
    // Let the agent see the listener for a tick or two, then start the burst at this trial's phase.
    let tick = parse_duration(&config.tick)?;
    interrupt::sleep(tick * 2 + phase)?;
    let clients = ns.run(|| burst(addr, 2 * args.somaxconn as usize))?;
    let deadline = Instant::now() + GIVE_UP;
    while watch.now().somaxconn_changed.is_none() && Instant::now() < deadline {
        interrupt::check()?;
        std::thread::sleep(Duration::from_millis(5));
    }
    drop(clients);
    let seen = watch.finish()?;
    // The change the kernel shows is the agent's, by its rules (nobody else writes there). Its
    // events are written by their own thread, after the kernel: stopped first, the agent has
    // written them all.
    kpo.stop()?;
    kpo.events.poll()?;
    let by_rules = kpo
        .events
        .all
        .iter()
        .find_map(|e| agent::rules_change(e, inode));
    drop(listener);
    drop(ns);
    let (Some(first), Some((changed, value))) = (seen.first_overflow, seen.somaxconn_changed)
    else {
        return Ok(None);
    };
    match by_rules {
        Some((v, _)) if v == value => {}
        other => bail!(
            "somaxconn became {value} in the namespace, but the agent reported {other:?} as its rules' change"
        ),
    }
    Ok(Some(Trial {
        reaction: changed.saturating_duration_since(first),
        value,
        resolution: seen.resolution,
    }))
}

/// `n` non-blocking connects to `addr` from the calling thread's namespace; the sockets stay open
/// (their SYNs are retried) until dropped.
fn burst(addr: SocketAddr, n: usize) -> Result<Vec<OwnedFd>> {
    let SocketAddr::V4(v4) = addr else {
        bail!("IPv4 only");
    };
    let sin = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: v4.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(*v4.ip()).to_be(),
        },
        sin_zero: [0; 8],
    };
    let mut fds = Vec::with_capacity(n);
    for _ in 0..n {
        // SAFETY: socket(2) and connect(2) with a valid sockaddr_in; the fd is owned at once.
        let fd = unsafe {
            libc::socket(
                libc::AF_INET,
                libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                0,
            )
        };
        if fd < 0 {
            bail!("socket: {}", std::io::Error::last_os_error());
        }
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let rc = unsafe {
            libc::connect(
                fd.as_raw_fd(),
                &sin as *const libc::sockaddr_in as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
            )
        };
        let err = std::io::Error::last_os_error();
        if rc != 0 && err.raw_os_error() != Some(libc::EINPROGRESS) {
            return Err(err).context("connect");
        }
        fds.push(fd);
    }
    Ok(fds)
}

fn parse_duration(s: &str) -> Result<Duration> {
    humantime::parse_duration(s).with_context(|| format!("`{s}` is not a duration (1s, 500ms)"))
}
