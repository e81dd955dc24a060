//! `cargo xtask scenario backlog`: the seed's demo, end to end, on this machine.
//!
//! In a network namespace of its own (a veth pair gives it an address; the load stays on this
//! machine): `net.core.somaxconn` low, nginx asking for a large `listen ... backlog=N`, and wrk,
//! bounded in connections and time, driving it into listen overflows. Run once without KPO and once
//! with KPO (`kpo run`, policy: somaxconn in auto for that namespace only). When KPO's change event
//! says the service must listen again, the scenario makes nginx listen again (`--relisten`), checks
//! with `ss -ltn` in the namespace that the new limit took, and prints both runs side by side.
//! Everything it creates is removed by guards, on error and on Ctrl-C too; the host's somaxconn is
//! checked before and after.
pub mod agent;
pub mod interrupt;
pub mod netns;
pub mod nginx;
pub mod probe;
pub mod watch;
pub mod wrk;

use std::{
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{bail, Result};

use self::{
    agent::{Agent, AgentConfig},
    netns::Netns,
    nginx::{NginxConfig, NsNginx, Relisten},
    watch::Watch,
};

#[derive(clap::Subcommand)]
pub enum Which {
    /// somaxconn low in a namespace, nginx and wrk into listen overflows; without and with KPO.
    Backlog(BacklogArgs),
}

#[derive(clap::Args, Clone)]
pub struct BacklogArgs {
    /// net.core.somaxconn inside the namespace at the start.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(i64).range(1..))]
    pub somaxconn: i64,
    /// The backlog nginx asks for (`listen ... backlog=N`); the kernel caps it at somaxconn.
    #[arg(long, default_value_t = 4096, value_parser = clap::value_parser!(i64).range(1..))]
    pub backlog: i64,
    /// wrk's concurrent connections (each request on a new connection).
    #[arg(long, default_value_t = 120, value_parser = clap::value_parser!(u32).range(1..))]
    pub connections: u32,
    /// Seconds of load per run.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..))]
    pub seconds: u64,
    /// nginx `worker_connections` (one worker).
    #[arg(long, default_value_t = 512, value_parser = clap::value_parser!(u32).range(1..))]
    pub worker_connections: u32,
    /// How nginx is made to listen again once KPO raised somaxconn.
    #[arg(long, value_enum, default_value_t = Relisten::ReloadBacklog)]
    pub relisten: Relisten,
    /// The agent's tick.
    #[arg(long, default_value = "1s", value_parser = crate::duration_arg)]
    pub tick: String,
    /// The agent's window (its rules run every tick and at window end).
    #[arg(long, default_value = "10s", value_parser = crate::duration_arg)]
    pub window: String,
    /// Run with KPO first, then without (to tell the agent's effect from the order's).
    #[arg(long)]
    pub kpo_first: bool,
}

pub fn run(which: Which) -> Result<()> {
    match which {
        Which::Backlog(args) => backlog(&args),
    }
}

const PORT: u16 = 18081;

/// One run's figures.
#[derive(Default)]
struct RunResult {
    wrk: wrk::WrkResult,
    probe: probe::ProbeResult,
    /// When nginx had listened again with the new limit (KPO run only).
    relistened_at: Option<Instant>,
    overflows: u64,
    /// Overflows after nginx listened again with the new limit (KPO run only).
    overflows_after_relisten: Option<u64>,
    /// First overflow → somaxconn changed in the namespace.
    reaction: Option<Duration>,
    resolution: Duration,
    somaxconn_end: i64,
    limit_start: u32,
    limit_end: u32,
    relistens: Vec<String>,
    /// The agent's CPU during the load, % of one core.
    agent_cpu: Option<f64>,
    /// somaxconn changed in a run without our agent: someone else wrote it.
    foreign_write: bool,
}

fn backlog(args: &BacklogArgs) -> Result<()> {
    if !crate::is_root() {
        bail!("the scenario creates a network namespace and runs the agent: run it as root");
    }
    crate::bench::ensure_tools()?;
    interrupt::install()?;
    let host_before = netns::host_somaxconn()?;
    let agent_config = AgentConfig {
        tick: args.tick.clone(),
        window: args.window.clone(),
    };
    let dir = tempfile::Builder::new().prefix("kpo-scenario-").tempdir()?;
    println!("scenario backlog: the seed's demo, end to end");
    println!(
        "  namespace: its own, veth pair to the host; net.core.somaxconn = {} inside it (host: {host_before})",
        args.somaxconn
    );
    println!(
        "  nginx: 1 worker, worker_connections {}, listen NSADDR:{PORT} backlog={}",
        args.worker_connections, args.backlog
    );
    println!(
        "  load: wrk -t1 -c{} -d{}s --timeout 2s, Connection: close, from the host side; beside it \
         a probe, {} requests/s, each on a new connection timed from connect()",
        args.connections,
        args.seconds,
        probe::RATE
    );
    println!("  agent: {}", agent_config.describe());
    println!("  relisten: {}", args.relisten.name());

    let (without, with) = if args.kpo_first {
        println!("\n== run 1: with KPO");
        let with = one_run(args, &dir.path().join("with"), Some(&agent_config))?;
        println!("\n== run 2: without KPO");
        (one_run(args, &dir.path().join("without"), None)?, with)
    } else {
        println!("\n== run 1: without KPO");
        let without = one_run(args, &dir.path().join("without"), None)?;
        println!("\n== run 2: with KPO");
        (
            without,
            one_run(args, &dir.path().join("with"), Some(&agent_config))?,
        )
    };

    let host_after = netns::host_somaxconn()?;
    print_side_by_side(args, &without, &with);
    println!(
        "\nhost net.core.somaxconn: {host_before} before, {host_after} after{}",
        if host_before == host_after {
            " (unchanged)"
        } else {
            " (MOVED)"
        }
    );
    if host_before != host_after {
        bail!("the host's somaxconn moved from {host_before} to {host_after}");
    }
    Ok(())
}

/// One run in a fresh namespace: nginx, optionally the agent, wrk; all stopped before it returns.
fn one_run(args: &BacklogArgs, dir: &Path, agent: Option<&AgentConfig>) -> Result<RunResult> {
    // Declared first, dropped last: nginx, the watch and the agent leave the namespace before it
    // is deleted.
    let mut ns = Netns::create(true)?;
    let (_, ns_addr) = ns.addrs.clone().expect("veth addresses");
    let inode = ns.inode()?;
    ns.set_somaxconn(args.somaxconn)?;
    let mut nginx = NsNginx::start(
        &ns,
        &dir.join("nginx"),
        NginxConfig {
            address: ns_addr.clone(),
            port: PORT,
            backlog: args.backlog,
            worker_connections: args.worker_connections,
        },
    )?;
    let (line, limit_start) = ns.ss_listener(PORT)?;
    println!(
        "namespace {} (netns inode {inode}), somaxconn {}; nginx pid {}; ss -ltn: {line}",
        ns.name,
        ns.somaxconn()?,
        nginx.master_pid().unwrap_or(0)
    );
    let mut kpo = match agent {
        Some(config) => {
            let a = Agent::start(
                &dir.join("agent"),
                &agent::policy(&ns.path(), args.somaxconn),
                config,
            )?;
            println!(
                "kpo run started (pid {}), state in {}",
                a.pid(),
                a.dir.display()
            );
            Some(a)
        }
        None => None,
    };
    let watch = Watch::start(&ns)?;
    let load = wrk::Load {
        url: format!("http://{ns_addr}:{PORT}/"),
        connections: args.connections,
        duration: Duration::from_secs(args.seconds),
        timeout: Duration::from_secs(2),
    };
    println!("load: {}", load.describe());
    let started = Instant::now();
    let agent_cpu_before = kpo.as_ref().map(|a| a.cpu_seconds()).transpose()?;
    let mut running = wrk::Running::start(&load)?;
    let probe = probe::Probe::start(format!("{ns_addr}:{PORT}").parse()?);
    let mut relistens = Vec::new();
    let mut overflows_at_relisten = None;
    let mut relistened_at = None;
    while !running.done()? {
        interrupt::check()?;
        if let Some(kpo) = &mut kpo {
            for event in kpo.events.poll()? {
                if let Some(note) = agent::undo_note(&event, inode) {
                    println!("{:>6.2} s  {note}", started.elapsed().as_secs_f64());
                    println!(
                        "         (nginx keeps the limit it took at its last listen() until it listens again)"
                    );
                    continue;
                }
                let Some((value, reason)) = agent::rules_change(&event, inode) else {
                    continue;
                };
                let at = started.elapsed();
                println!(
                    "{:>6.2} s  KPO changed net.core.somaxconn to {value} in the namespace; reason: {reason}",
                    at.as_secs_f64()
                );
                if !reason.contains("listen() again") {
                    println!("         (the reason does not ask for a new listen(); nginx left as it is)");
                    continue;
                }
                let done = nginx.relisten(&ns, args.relisten, value)?;
                println!(
                    "{:>6.2} s  nginx: {} in {} ms; ss -ltn in the namespace: {}  -> accept-queue limit {} ({})",
                    started.elapsed().as_secs_f64(),
                    args.relisten.name(),
                    done.elapsed.as_millis(),
                    done.ss_line,
                    done.limit,
                    if done.took_effect {
                        "the new limit took"
                    } else {
                        "the OLD limit stayed: nginx did not call listen() again"
                    }
                );
                relistens.push(format!(
                    "{} → limit {}{}",
                    args.relisten.name(),
                    done.limit,
                    if done.took_effect {
                        ""
                    } else {
                        " (the old limit, kept)"
                    }
                ));
                if done.took_effect {
                    overflows_at_relisten = Some(watch.now().overflows);
                    relistened_at = Some(Instant::now());
                }
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let result = running.finish()?;
    let probed = probe.finish();
    let seen = watch.finish()?;
    let (_, limit_end) = ns.ss_listener(PORT)?;
    let agent_cpu = match (&kpo, agent_cpu_before) {
        (Some(a), Some(before)) => {
            Some((a.cpu_seconds()? - before) / started.elapsed().as_secs_f64() * 100.0)
        }
        _ => None,
    };
    if let Some(kpo) = &mut kpo {
        for event in kpo.events.poll()? {
            if let Some(note) = agent::undo_note(&event, inode) {
                println!("after the load: {note}");
            }
        }
        kpo.stop()?;
    }
    nginx.stop()?;
    ns.delete()?;
    // Without our agent nobody should write there; on a shared machine another `kpo run` whose
    // policy covers every namespace can. Said loudly: that run is then no clean baseline.
    let foreign_write = match (agent, seen.somaxconn_changed) {
        (None, Some((at, value))) => {
            println!(
                "WARNING: somaxconn in the namespace became {value} {:.2} s into the load although \
                 no agent of this scenario ran: another process wrote it (another kpo run on this \
                 machine with a policy covering all namespaces?); this run is not a clean baseline",
                at.saturating_duration_since(started).as_secs_f64()
            );
            true
        }
        _ => false,
    };
    let reaction = match (seen.first_overflow, seen.somaxconn_changed) {
        (Some(first), Some((changed, _))) => Some(changed.saturating_duration_since(first)),
        _ => None,
    };
    Ok(RunResult {
        wrk: result,
        probe: probed,
        relistened_at,
        overflows: seen.overflows - seen.overflows_at_start,
        overflows_after_relisten: overflows_at_relisten.map(|at| seen.overflows - at),
        reaction,
        resolution: seen.resolution,
        somaxconn_end: seen.somaxconn,
        limit_start,
        limit_end,
        relistens,
        agent_cpu,
        foreign_write,
    })
}

fn print_side_by_side(args: &BacklogArgs, without: &RunResult, with: &RunResult) {
    println!(
        "\n== side by side ({} s of load each, somaxconn {} at the start)",
        args.seconds, args.somaxconn
    );
    println!("{:<52} {:>14} {:>14}", "", "without KPO", "with KPO");
    let row = |name: &str, a: String, b: String| println!("{name:<52} {a:>14} {b:>14}");
    row(
        "wrk requests/s",
        format!("{:.0}", without.wrk.requests_per_s),
        format!("{:.0}", with.wrk.requests_per_s),
    );
    row(
        "wrk latency p50 (ms, from request write)",
        format!("{:.2}", without.wrk.p50_ms),
        format!("{:.2}", with.wrk.p50_ms),
    );
    row(
        "wrk latency p99 (ms, from request write)",
        format!("{:.2}", without.wrk.p99_ms),
        format!("{:.2}", with.wrk.p99_ms),
    );
    let probe = |r: &RunResult, p: f64, after: bool| {
        let since = if after {
            match r.relistened_at {
                Some(at) => Some(at),
                None => return "-".into(),
            }
        } else {
            None
        };
        r.probe
            .percentile(p, since)
            .map_or("-".into(), |ms| format!("{ms:.2}"))
    };
    row(
        "probe connect+request p50 (ms)",
        probe(without, 50.0, false),
        probe(with, 50.0, false),
    );
    row(
        "probe connect+request p99 (ms)",
        probe(without, 99.0, false),
        probe(with, 99.0, false),
    );
    row(
        "  p99 after nginx listened again",
        "-".into(),
        probe(with, 99.0, true),
    );
    row(
        "probe errors / timeouts (> 5 s)",
        format!("{} / {}", without.probe.errors, without.probe.timeouts),
        format!("{} / {}", with.probe.errors, with.probe.timeouts),
    );
    row(
        "wrk connect errors",
        without.wrk.connect_errors.to_string(),
        with.wrk.connect_errors.to_string(),
    );
    row(
        "wrk timeouts (> 2 s)",
        without.wrk.timeouts.to_string(),
        with.wrk.timeouts.to_string(),
    );
    row(
        "wrk read/write errors",
        (without.wrk.read_errors + without.wrk.write_errors).to_string(),
        (with.wrk.read_errors + with.wrk.write_errors).to_string(),
    );
    row(
        "listen overflows (namespace's TcpExt)",
        without.overflows.to_string(),
        with.overflows.to_string(),
    );
    row(
        "  of which after nginx listened again",
        "-".into(),
        with.overflows_after_relisten
            .map_or("-".into(), |n| n.to_string()),
    );
    let reaction = |r: &RunResult| match r.reaction {
        Some(d) if r.foreign_write => format!("{} ms (!)", d.as_millis()),
        Some(d) => format!("{} ms", d.as_millis()),
        None => "-".into(),
    };
    row(
        "first overflow -> somaxconn changed",
        reaction(without),
        reaction(with),
    );
    row(
        "somaxconn in the namespace at the end",
        without.somaxconn_end.to_string(),
        with.somaxconn_end.to_string(),
    );
    row(
        "nginx accept-queue limit (ss Send-Q), start -> end",
        format!("{} -> {}", without.limit_start, without.limit_end),
        format!("{} -> {}", with.limit_start, with.limit_end),
    );
    row(
        "agent CPU during the load (% of one core)",
        "-".into(),
        with.agent_cpu.map_or("-".into(), |c| format!("{c:.1}")),
    );
    println!(
        "(instants polled every {} ms inside the namespace; worst gap between polls {} ms)",
        watch::POLL.as_millis(),
        with.resolution.max(without.resolution).as_millis()
    );
    if without.foreign_write || with.foreign_write {
        println!("(!) somaxconn was written by a process other than this scenario's agent");
    }
    for r in &with.relistens {
        println!("after KPO's change: {r}");
    }
}
