//! `cargo xtask bench overhead`: what the agent costs the workloads it watches.
//!
//! Three loopback workloads, bounded in time: short HTTP connections and keep-alive requests
//! (nginx and wrk from Debian), and a 1-byte TCP ping-pong. Each runs with no agent, with the
//! agent in its default configuration, and with every sensor attached full time; configurations
//! alternate within each repetition so that drift affects all alike. Prints the median throughput
//! ratio against no agent, the agent's CPU share and peak RSS, and per-program mean run time per
//! event from the kernel's BPF statistics (enabled through BPF_ENABLE_STATS, which reverts when
//! its fd closes, so no sysctl is left changed), next to an empty program on each hook measured in
//! the same pass (see `floor.rs`).
use std::{
    collections::BTreeMap,
    io::{Read, Write},
    net::{TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};

use crate::scenario::interrupt;

#[derive(clap::Subcommand)]
pub enum Which {
    /// Agent overhead on loopback workloads.
    Overhead {
        /// Repetitions of the whole alternation.
        #[arg(long, default_value_t = 5, value_parser = crate::positive_usize())]
        reps: usize,
        /// Seconds per workload run.
        #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..))]
        seconds: u64,
        /// Seconds of idle agent for the idle CPU and RSS figures.
        #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
        idle_seconds: u64,
        /// An extra agent configuration to measure alongside, as `kpo run` arguments
        /// (e.g. "--duty-fraction 0.05"); used to choose the default duty fraction.
        #[arg(long, value_name = "ARGS", allow_hyphen_values = true)]
        also: Option<String>,
    },
    /// Latency of one policy-checked, journaled, verified sysctl change in a namespace, and the
    /// share of it that is the journal's durability.
    Actuate {
        /// Changes per configuration.
        #[arg(long, default_value_t = 300, value_parser = crate::positive_usize())]
        reps: usize,
    },
    /// The optimizer vs random search, Optuna TPE and skopt gp_minimize on the seed tables.
    Optimizer(crate::bench_optimizer::Args),
    /// From the first listen overflow in a namespace to the changed somaxconn readable there.
    Reaction(crate::bench_reaction::Args),
}

pub fn run(which: Which) -> Result<()> {
    match which {
        Which::Overhead {
            reps,
            seconds,
            idle_seconds,
            also,
        } => overhead(reps, seconds, idle_seconds, also.as_deref()),
        Which::Actuate { reps } => {
            // The example removes its namespace on SIGINT or SIGTERM; xtask waits for that, and a
            // SIGTERM sent to xtask alone (a service manager, `timeout`) reaches it too.
            interrupt::install()?;
            let mut child = interrupt::own_group(&mut actuate_command(reps))
                .spawn()
                .context("starting cargo run --example bench_actuate")?;
            let status = interrupt::wait_passing_on(&mut child)?;
            if !status.success() {
                bail!("bench_actuate failed");
            }
            Ok(())
        }
        Which::Optimizer(args) => crate::bench_optimizer::run(&args),
        Which::Reaction(args) => crate::bench_reaction::run(&args),
    }
}

/// The bench_actuate example, built in a target directory of its own: an example turns on
/// kpo-agent's dev-dependencies (its `test-util` feature among them), so built beside
/// `release/kpo` it made the next `cargo xtask build` or `run` rebuild kpo-agent, and this bench
/// rebuild it again after them (minutes each).
fn actuate_command(reps: usize) -> Command {
    let mut cmd = crate::cargo();
    cmd.env(
        "CARGO_TARGET_DIR",
        crate::target_dir().join("bench-actuate"),
    )
    .args([
        "run",
        "--release",
        "-p",
        "kpo-agent",
        "--example",
        "bench_actuate",
    ])
    .args(["--", "--reps", &reps.to_string()]);
    cmd
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Config {
    None,
    Default,
    FullTime,
    Also,
}

impl Config {
    fn name(self) -> &'static str {
        match self {
            Config::None => "no agent",
            Config::Default => "default",
            Config::FullTime => "full time",
            Config::Also => "--also",
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Workload {
    ShortConnections,
    KeepAlive,
    PingPong,
}

impl Workload {
    const ALL: [Workload; 3] = [
        Workload::ShortConnections,
        Workload::KeepAlive,
        Workload::PingPong,
    ];
    fn name(self) -> &'static str {
        match self {
            Workload::ShortConnections => "short connections (wrk, Connection: close)",
            Workload::KeepAlive => "keep-alive requests (wrk)",
            Workload::PingPong => "TCP ping-pong (1 byte)",
        }
    }
}

const NGINX_PORT: u16 = 18080;

fn overhead(reps: usize, seconds: u64, idle_seconds: u64, also: Option<&str>) -> Result<()> {
    let also_args: Vec<&str> = also
        .map(|a| a.split_whitespace().collect())
        .unwrap_or_default();
    let mut configs = vec![Config::None, Config::Default, Config::FullTime];
    if also.is_some() {
        configs.push(Config::Also);
    }
    if !crate::is_root() {
        bail!("the overhead benchmark loads the agent's eBPF programs: run it as root");
    }
    // Ctrl-C becomes an error returned from the next check, so that nginx, the agent and the
    // temporary directory are removed by their guards; children run in their own process groups
    // and are stopped by those guards, in order.
    interrupt::install()?;
    ensure_tools()?;
    let dir = std::env::temp_dir().join(format!("kpo-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let _cleanup = RemoveDir(dir.clone());
    let mut nginx = Nginx::start(&dir)?;
    let duration = Duration::from_secs(seconds);

    // One unmeasured pass first: the first runs after start-up are slower (caches, page faults).
    for workload in Workload::ALL {
        measure(workload, Duration::from_secs(2))?;
    }
    let mut throughput: BTreeMap<(Workload, Config), Vec<f64>> = BTreeMap::new();
    let mut agent_cpu: BTreeMap<Config, Vec<f64>> = BTreeMap::new();
    let mut prog_stats: BTreeMap<(Config, String), (u64, u64)> = BTreeMap::new();
    let mut log_tally = crate::bench_log::LogTally::default();
    for rep in 0..reps {
        for &config in &configs {
            let agent = match config {
                Config::None => None,
                Config::Default => Some(Agent::start(&dir, &[])?),
                Config::FullTime => Some(Agent::start(&dir, &["--duty-fraction", "1"])?),
                Config::Also => Some(Agent::start(&dir, &also_args)?),
            };
            let cpu_before = agent.as_ref().map(|a| a.cpu_seconds()).transpose()?;
            let started = Instant::now();
            for workload in Workload::ALL {
                let rate = measure(workload, duration)?;
                println!(
                    "rep {}/{reps} {:>9}: {:<45} {rate:>12.0}/s",
                    rep + 1,
                    config.name(),
                    workload.name()
                );
                throughput.entry((workload, config)).or_default().push(rate);
            }
            agent
                .iter()
                .for_each(|a| log_tally.add(config.name(), a.0.id()));
            if let (Some(agent), Some(before)) = (&agent, cpu_before) {
                let share = (agent.cpu_seconds()? - before) / started.elapsed().as_secs_f64();
                agent_cpu.entry(config).or_default().push(share * 100.0);
            }
        }
    }

    // Per-program run time needs the kernel's BPF statistics. They cost every program two clock
    // reads per run, so they are on only for this separate pass, not while throughput is measured.
    {
        let _stats = aya::sys::enable_stats(aya::sys::Stats::RunTime)
            .context("enabling BPF run-time statistics")?;
        for &config in &configs[1..] {
            let agent = match config {
                Config::FullTime => Agent::start(&dir, &["--duty-fraction", "1"])?,
                Config::Also => Agent::start(&dir, &also_args)?,
                _ => Agent::start(&dir, &[])?,
            };
            // The empty programs ride along in the full-time pass, where every hook is attached.
            let floor = (config == Config::FullTime)
                .then(crate::floor::attach_all)
                .transpose()?;
            for workload in Workload::ALL {
                measure(workload, duration)?;
            }
            for (name, time_ns, count) in measured_programs()? {
                let e = prog_stats.entry((config, name)).or_default();
                e.0 += time_ns;
                e.1 += count;
            }
            drop(floor);
            drop(agent);
        }
    }

    // Each repetition's no-agent run is the reference for that repetition's agent runs: pairs
    // measured minutes apart share the machine's state (other tenants, frequency), medians of such
    // paired ratios are steadier than ratios of medians.
    println!("\nThroughput relative to no agent (median over {reps} repetitions of each repetition's ratio; 1.000 = no cost):");
    let measured = &configs[1..];
    print!("{:<45}", "workload");
    for c in measured {
        print!(" {:>10}", c.name());
    }
    println!(" {:>14}", "no-agent spread");
    for workload in Workload::ALL {
        let base = &throughput[&(workload, Config::None)];
        print!("{:<45}", workload.name());
        for &c in measured {
            let ratios: Vec<f64> = throughput[&(workload, c)]
                .iter()
                .zip(base)
                .map(|(x, b)| x / b)
                .collect();
            print!(" {:>10.3}", median(&ratios));
        }
        // Run-to-run spread without the agent: differences smaller than this are noise.
        match spread(base) {
            Some(s) => println!(" {s:>13.1}%"),
            None => println!(" {:>14}", "- (1 rep)"),
        }
    }
    if let Some(also) = also {
        println!("(--also = kpo run {also})");
    }
    print!("\nAgent CPU under load, % of one core (median):");
    for c in measured {
        print!(" {} {:.2};", c.name(), median(&agent_cpu[c]));
    }
    println!();

    println!(
        "\nPer-program mean run time per event (kernel BPF stats, one pass of every workload):"
    );
    println!(
        "{:<18} {:>12} {:>14} {:>12} {:>14}",
        "program", "default ns", "default events", "full ns", "full events"
    );
    let names: std::collections::BTreeSet<&String> = prog_stats
        .keys()
        .map(|(_, n)| n)
        .filter(|n| n.starts_with("kpo_"))
        .collect();
    for name in names {
        let cell = |c: Config| {
            prog_stats
                .get(&(c, name.clone()))
                .map_or((f64::NAN, 0), |&(t, n)| {
                    (if n > 0 { t as f64 / n as f64 } else { f64::NAN }, n)
                })
        };
        let (d, dn) = cell(Config::Default);
        let (f, fnum) = cell(Config::FullTime);
        println!("{name:<18} {d:>12.1} {dn:>14} {f:>12.1} {fnum:>14}");
    }
    println!(
        "\nFloor: an empty program on each hook, same pass as full time (dispatch and statistics only):"
    );
    for (hook, floor_name) in crate::floor::HOOKS {
        if let Some(&(t, n)) = prog_stats.get(&(Config::FullTime, floor_name.to_string())) {
            let ns = if n > 0 { t as f64 / n as f64 } else { f64::NAN };
            println!("{hook:<22} {ns:>8.1} ns {n:>14} events");
        }
    }
    let kept_log = kept_agent_log();
    log_tally.print(&kept_log);

    let idle = Agent::start(&dir, &[])?;
    let before = idle.cpu_seconds()?;
    let t = Instant::now();
    interrupt::sleep(Duration::from_secs(idle_seconds))?;
    let idle_share = (idle.cpu_seconds()? - before) / t.elapsed().as_secs_f64() * 100.0;
    let rss_mb = idle.peak_rss_kb()? as f64 / 1024.0;
    println!("\nAgent at idle ({idle_seconds} s, default configuration): CPU {idle_share:.2}% of one core, peak RSS {rss_mb:.1} MB");
    drop(idle);
    if let Err(e) = keep_agent_log(&dir, &kept_log) {
        println!(
            "the agents' log could not be kept in {}: {e}",
            kept_log.display()
        );
    }
    // Stopped as nginx expects, and checked: nothing of ours still listens.
    nginx.stop()?;
    Ok(())
}

/// How far apart the fastest and slowest runs are, in % of the slowest; None for a single run,
/// which has no spread to show (0.0% would read as "no noise").
fn spread(runs: &[f64]) -> Option<f64> {
    if runs.len() < 2 {
        return None;
    }
    let (lo, hi) = runs
        .iter()
        .fold((f64::MAX, 0.0f64), |(lo, hi), &v| (lo.min(v), hi.max(v)));
    Some((hi / lo - 1.0) * 100.0)
}

pub(crate) fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() {
        return f64::NAN;
    }
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    }
}

pub(crate) fn ensure_tools() -> Result<()> {
    let mut missing = Vec::new();
    if which("nginx").is_none() {
        missing.push("nginx-light".to_string());
    }
    if which("wrk").is_none() {
        missing.push("wrk".to_string());
    }
    if !missing.is_empty() {
        crate::setup::apt_install(&missing)?;
    }
    Ok(())
}

pub(crate) fn which(name: &str) -> Option<PathBuf> {
    std::env::var("PATH")
        .ok()?
        .split(':')
        .map(|d| Path::new(d).join(name))
        .find(|p| p.exists())
        .or_else(|| {
            ["/usr/sbin", "/sbin"]
                .iter()
                .map(|d| Path::new(d).join(name))
                .find(|p| p.exists())
        })
}

fn measure(workload: Workload, duration: Duration) -> Result<f64> {
    interrupt::check()?;
    let rate = match workload {
        Workload::ShortConnections => wrk(duration, true),
        Workload::KeepAlive => wrk(duration, false),
        Workload::PingPong => Ok(ping_pong(duration)),
    }?;
    interrupt::check()?;
    Ok(rate)
}

fn wrk(duration: Duration, close: bool) -> Result<f64> {
    // Load generator on CPU 0, server on CPU 1 (see Nginx::start): stable placement, less noise.
    let mut cmd = Command::new("taskset");
    cmd.args(["-c", "0"]).arg(which("wrk").context("wrk")?);
    cmd.args(["-t1", "-c32", &format!("-d{}s", duration.as_secs())]);
    if close {
        cmd.args(["-H", "Connection: close"]);
    }
    let out = interrupt::own_group(&mut cmd)
        .arg(format!("http://127.0.0.1:{NGINX_PORT}/"))
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|l| l.strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
        .with_context(|| format!("wrk printed no rate:\n{text}"))
}

/// Round trips per second of a 1-byte ping-pong over loopback for `duration`.
fn ping_pong(duration: Duration) -> f64 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
    let addr = listener.local_addr().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let server = std::thread::spawn(move || {
        pin_to_cpu(1);
        let (mut s, _) = listener.accept().unwrap();
        s.set_nodelay(true).unwrap();
        let mut b = [0u8; 1];
        while s.read_exact(&mut b).is_ok() {
            if s.write_all(&b).is_err() {
                break;
            }
        }
    });
    let mut c = TcpStream::connect(addr).unwrap();
    c.set_nodelay(true).unwrap();
    pin_to_cpu(0);
    let stop_flag = stop.clone();
    let timer = std::thread::spawn(move || {
        std::thread::sleep(duration);
        stop_flag.store(true, Ordering::Relaxed);
    });
    let started = Instant::now();
    let mut trips = 0u64;
    let mut b = [1u8; 1];
    while !stop.load(Ordering::Relaxed) {
        c.write_all(&b).unwrap();
        c.read_exact(&mut b).unwrap();
        trips += 1;
    }
    let rate = trips as f64 / started.elapsed().as_secs_f64();
    unpin();
    drop(c);
    let _ = server.join();
    let _ = timer.join();
    rate
}

fn pin_to_cpu(cpu: usize) {
    let ncpu = std::thread::available_parallelism().map_or(1, |n| n.get());
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu % ncpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

fn unpin() {
    let ncpu = std::thread::available_parallelism().map_or(1, |n| n.get());
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        for cpu in 0..ncpu {
            libc::CPU_SET(cpu, &mut set);
        }
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

/// (name, run time ns, run count) of the agent's loaded programs and the empty floor programs.
fn measured_programs() -> Result<Vec<(String, u64, u64)>> {
    let mut out = Vec::new();
    for info in aya::programs::loaded_programs() {
        let info = info?;
        let Some(name) = info.name_as_str() else {
            continue;
        };
        if name.starts_with("kpo_") || name.starts_with("floor_") {
            out.push((
                name.to_string(),
                info.run_time().as_nanos() as u64,
                info.run_count(),
            ));
        }
    }
    Ok(out)
}

pub(crate) struct RemoveDir(pub(crate) PathBuf);
impl Drop for RemoveDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// nginx, master and worker, on 127.0.0.1:NGINX_PORT. Stopped the way nginx expects
/// ([`Nginx::stop`]); a SIGKILL to the master alone would orphan its worker, still listening.
struct Nginx {
    master: Child,
    stopped: bool,
}

impl Nginx {
    fn start(dir: &Path) -> Result<Nginx> {
        if let Some(owner) = listener_on(NGINX_PORT) {
            bail!(
                "something already listens on 127.0.0.1:{NGINX_PORT} ({owner}); an nginx left by an \
                 earlier run? Stop it first"
            );
        }
        let conf = dir.join("nginx.conf");
        std::fs::write(
            &conf,
            format!(
                "daemon off;\nworker_processes 1;\npid {dir}/nginx.pid;\nerror_log {dir}/error.log;\n\
                 events {{ worker_connections 4096; }}\n\
                 http {{ access_log off; server {{ listen 127.0.0.1:{NGINX_PORT} backlog=4096; \
                 location / {{ return 200 \"ok\\n\"; }} }} }}\n",
                dir = dir.display()
            ),
        )?;
        let ncpu = std::thread::available_parallelism().map_or(1, |n| n.get());
        // taskset execs nginx: the child is nginx's master.
        let mut cmd = Command::new("taskset");
        let child = interrupt::own_group(&mut cmd)
            .args(["-c", &(1 % ncpu).to_string()])
            .arg(which("nginx").context("nginx")?)
            .arg("-p")
            .arg(dir)
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting nginx")?;
        let mut nginx = Nginx {
            master: child,
            stopped: false,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", NGINX_PORT)).is_err() {
            if Instant::now() > deadline {
                nginx.stop()?;
                bail!("nginx did not start listening on 127.0.0.1:{NGINX_PORT}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(nginx)
    }

    /// SIGQUIT to the master (graceful: its workers finish and exit, then it does), SIGTERM if it
    /// lingers, SIGKILL to master and workers as a last resort; then checks that nothing is left
    /// listening on the port.
    fn stop(&mut self) -> Result<()> {
        if std::mem::replace(&mut self.stopped, true) {
            return Ok(());
        }
        stop_nginx(&mut self.master)?;
        if let Some(owner) = listener_on(NGINX_PORT) {
            bail!("the benchmark left a listener on 127.0.0.1:{NGINX_PORT} ({owner})");
        }
        Ok(())
    }
}

/// Stops the nginx whose master is `master`: SIGQUIT (graceful: its workers finish and exit, then
/// it does), SIGTERM if it lingers, SIGKILL to master and workers as a last resort.
pub(crate) fn stop_nginx(master_child: &mut Child) -> Result<()> {
    let master = master_child.id();
    let workers = children_of(master);
    for (signal, patience) in [
        (libc::SIGQUIT, Duration::from_secs(10)),
        (libc::SIGTERM, Duration::from_secs(5)),
        (libc::SIGKILL, Duration::from_secs(5)),
    ] {
        if master_child.try_wait()?.is_some() {
            break;
        }
        // SAFETY: kill(2) on our own child, which has not been reaped (try_wait said so).
        unsafe { libc::kill(master as i32, signal) };
        let deadline = Instant::now() + patience;
        while master_child.try_wait()?.is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    // Workers exit with their master; one that did not (the master was killed) goes now.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let alive: Vec<u32> = workers.iter().copied().filter(|&w| is_nginx(w)).collect();
        if alive.is_empty() {
            break;
        }
        if Instant::now() > deadline {
            for w in alive {
                // SAFETY: kill(2) on a process checked just above to be an nginx we started.
                unsafe { libc::kill(w as i32, libc::SIGKILL) };
            }
            std::thread::sleep(Duration::from_millis(100));
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

impl Drop for Nginx {
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            eprintln!("xtask: stopping nginx: {e:#}");
        }
    }
}

/// Processes whose parent is `pid` (from /proc/*/stat).
pub(crate) fn children_of(pid: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&p| stat_fields(p).is_some_and(|(_, ppid)| ppid == pid))
        .collect()
}

/// (comm, parent pid) of a live (not zombie) process.
pub(crate) fn stat_fields(pid: u32) -> Option<(String, u32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (head, rest) = stat.rsplit_once(')')?;
    let comm = head.split_once('(')?.1.to_string();
    let mut fields = rest.split_whitespace();
    let state = fields.next()?;
    let ppid = fields.next()?.parse().ok()?;
    (state != "Z").then_some((comm, ppid))
}

pub(crate) fn is_nginx(pid: u32) -> bool {
    stat_fields(pid).is_some_and(|(comm, _)| comm == "nginx")
}

/// Who listens on TCP `port` (any address, IPv4 or IPv6), as "pid N (comm)" when found, or None
/// if nobody does.
fn listener_on(port: u16) -> Option<String> {
    let mut inodes = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let text = std::fs::read_to_string(table).unwrap_or_default();
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            // sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
            let (Some(local), Some(state), Some(inode)) = (f.get(1), f.get(3), f.get(9)) else {
                continue;
            };
            let local_port = local
                .rsplit_once(':')
                .and_then(|(_, p)| u16::from_str_radix(p, 16).ok());
            if *state == "0A" && local_port == Some(port) {
                inodes.push(format!("socket:[{inode}]"));
            }
        }
    }
    if inodes.is_empty() {
        return None;
    }
    let owner = std::fs::read_dir("/proc").ok().and_then(|dir| {
        dir.flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
            .find(|pid| {
                std::fs::read_dir(format!("/proc/{pid}/fd")).is_ok_and(|fds| {
                    fds.flatten().any(|fd| {
                        std::fs::read_link(fd.path())
                            .is_ok_and(|t| inodes.iter().any(|i| t.as_os_str() == i.as_str()))
                    })
                })
            })
    });
    Some(match owner {
        Some(pid) => format!(
            "pid {pid} ({})",
            stat_fields(pid).map_or_else(|| "?".into(), |(comm, _)| comm)
        ),
        None => "owner not found".into(),
    })
}

/// Every agent's stderr during the bench, one after the other, in the bench's directory.
const AGENT_LOG: &str = "agents.log";

/// Where the agents' log is kept after the bench: in the target directory the agent was built in
/// (`$CARGO_TARGET_DIR` when set), not a `target/` of the source tree that nothing else uses.
fn kept_agent_log() -> PathBuf {
    crate::target_dir().join("bench-overhead").join(AGENT_LOG)
}

/// The agents' logs, copied out of the bench's directory (removed at the end) once the last
/// agent has stopped, so that an eBPF log record the tally counted can be read.
fn keep_agent_log(dir: &Path, kept: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(kept.parent().expect("has a parent"))?;
    std::fs::copy(dir.join(AGENT_LOG), kept).map(|_| ())
}

/// `kpo run` for one bench agent. Its policy (every parameter observed), state and socket live
/// in the bench's directory: the defaults are the host's own agent's (/etc/kpo/policy.toml may put
/// the host's parameters in auto; /var/lib/kpo holds its journal and lock), and a bench must
/// neither change the host nor write into, or wait on, a production agent's state.
fn agent_command(dir: &Path, extra: &[&str]) -> Result<Command> {
    let policy = dir.join("policy.toml");
    std::fs::write(&policy, "[defaults]\nmode = \"observe\"\n")
        .context("writing the bench agents' policy")?;
    let mut cmd = Command::new(crate::kpo_binary());
    cmd.args(["run", "--events"])
        .arg(dir.join("events.ndjson"))
        .arg("--policy")
        .arg(policy)
        .arg("--state-dir")
        .arg(dir.join("state"))
        .arg("--socket")
        .arg(dir.join("kpo.sock"))
        .args(extra);
    Ok(cmd)
}

struct Agent(Child);

impl Agent {
    fn start(dir: &Path, extra: &[&str]) -> Result<Agent> {
        let events = dir.join("events.ndjson");
        let _ = std::fs::remove_file(&events);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join(AGENT_LOG))
            .context("opening the agents' log")?;
        let child = interrupt::own_group(&mut agent_command(dir, extra)?)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("starting kpo")?;
        let mut agent = Agent(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        // Ready once it has reported its sensors (programs loaded and attached).
        while !std::fs::read_to_string(&events)
            .unwrap_or_default()
            .contains("\"kind\":\"sensors\"")
        {
            interrupt::check()?;
            if let Some(status) = agent.0.try_wait()? {
                // The bench's directory goes when the bench ends: the log's tail goes with the error.
                let log = std::fs::read_to_string(dir.join(AGENT_LOG)).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(10).collect();
                bail!(
                    "kpo run exited with {status} before reporting its sensors; its log ends:\n{}",
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                );
            }
            if Instant::now() > deadline {
                bail!("kpo did not report its sensors within 30 s");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(agent)
    }

    fn cpu_seconds(&self) -> Result<f64> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.0.id()))?;
        // Fields after the parenthesised command: utime and stime are the 12th and 13th.
        let after = stat.rsplit_once(')').context("stat format")?.1;
        let fields: Vec<&str> = after.split_whitespace().collect();
        let ticks: f64 = fields[11].parse::<f64>()? + fields[12].parse::<f64>()?;
        Ok(ticks / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64)
    }

    fn peak_rss_kb(&self) -> Result<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.0.id()))?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .context("VmHWM missing")
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = nix_kill(self.0.id());
        let _ = self.0.wait();
    }
}

fn nix_kill(pid: u32) -> i32 {
    unsafe { libc::kill(pid as i32, libc::SIGTERM) }
}

/// Why a test that starts nginx as the bench and the scenario do cannot run here, if it cannot.
#[cfg(test)]
pub(crate) fn nginx_test_cannot_run() -> Option<&'static str> {
    if !crate::is_root() {
        Some("not root: the test starts nginx")
    } else if which("nginx").is_none() {
        Some("no nginx (`cargo xtask setup` installs it)")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_who_listens_on_a_port() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let owner = listener_on(port).expect("our listener is found");
        assert!(
            owner.contains(&format!("pid {}", std::process::id())),
            "{owner}"
        );
        drop(listener);
        // A test on another thread that spawns a process holds a copy of every fd from fork to
        // exec, so the socket can outlive our close by that long: wait for it, within bounds.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while listener_on(port).is_some() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert_eq!(listener_on(port), None);
    }

    /// Every bench agent keeps to the bench's directory: an agent on the defaults would load the
    /// host's /etc/kpo/policy.toml and take /var/lib/kpo's lock and /run/kpo/kpo.sock.
    #[test]
    fn bench_agents_use_their_own_policy_state_and_socket() {
        let dir = tempfile::tempdir().unwrap();
        let cmd = agent_command(dir.path(), &["--duty-fraction", "1"]).unwrap();
        let args: Vec<String> = cmd
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        let d = dir.path().display();
        assert_eq!(
            args,
            [
                "run".to_string(),
                "--events".into(),
                format!("{d}/events.ndjson"),
                "--policy".into(),
                format!("{d}/policy.toml"),
                "--state-dir".into(),
                format!("{d}/state"),
                "--socket".into(),
                format!("{d}/kpo.sock"),
                "--duty-fraction".into(),
                "1".into(),
            ]
        );
        assert_eq!(
            std::fs::read_to_string(dir.path().join("policy.toml")).unwrap(),
            "[defaults]\nmode = \"observe\"\n"
        );
    }

    #[test]
    fn the_actuate_example_builds_apart_from_the_agent() {
        let cmd = actuate_command(30);
        let envs: Vec<_> = cmd.get_envs().collect();
        assert_eq!(
            envs,
            [(
                std::ffi::OsStr::new("CARGO_TARGET_DIR"),
                Some(crate::target_dir().join("bench-actuate").as_os_str())
            )]
        );
        let args: Vec<_> = cmd.get_args().collect();
        assert_eq!(
            args,
            [
                "run",
                "--release",
                "-p",
                "kpo-agent",
                "--example",
                "bench_actuate",
                "--",
                "--reps",
                "30"
            ]
        );
    }

    #[test]
    fn a_single_run_has_no_spread() {
        assert_eq!(spread(&[5504.0]), None);
        assert_eq!(spread(&[4000.0, 5000.0, 4500.0]), Some(25.0));
    }

    #[test]
    fn the_agents_log_is_kept_beside_the_binary() {
        let release = crate::kpo_binary().parent().unwrap().to_path_buf();
        assert_eq!(
            kept_agent_log(),
            release.parent().unwrap().join("bench-overhead/agents.log")
        );
    }

    /// The bench's nginx, stopped as the bench stops it: master and worker gone, nothing left
    /// listening (a SIGKILL to the master alone left its worker listening, adopted by init).
    #[test]
    fn nginx_stops_without_leaving_a_listener() {
        if let Some(why) = nginx_test_cannot_run() {
            kpo_test_skip::skip(why);
            return;
        }
        let dir = std::env::temp_dir().join(format!("kpo-bench-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let _cleanup = RemoveDir(dir.clone());
        let mut nginx = Nginx::start(&dir).unwrap();
        // In its own process group: a Ctrl-C in the terminal reaches only xtask, which stops
        // nginx as nginx expects and then removes the bench's directory.
        let master = nginx.master.id();
        assert_eq!(
            nix::unistd::getpgid(Some(nix::unistd::Pid::from_raw(master as i32)))
                .unwrap()
                .as_raw(),
            master as i32
        );
        let workers = children_of(nginx.master.id());
        assert!(!workers.is_empty(), "nginx has a worker");
        assert!(listener_on(NGINX_PORT).is_some());
        nginx.stop().unwrap();
        assert_eq!(listener_on(NGINX_PORT), None);
        let left: Vec<u32> = workers.into_iter().filter(|&w| is_nginx(w)).collect();
        assert!(left.is_empty(), "nginx workers left running: {left:?}");
    }
}
