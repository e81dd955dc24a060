//! IRQ, softirq, NAPI and scheduler sensors against the kernel's own counters, under bounded
//! loopback load inside a namespace, and when idle.
use std::{
    collections::BTreeMap,
    io::{Read, Write},
    net::{TcpListener, TcpStream},
    path::PathBuf,
    time::{Duration, Instant},
};

use kpo_agent::{collect::Collector, window::WindowBuilder};
use kpo_integration::Netns;

use crate::common::{close_window, sensors, start};

const ROUND_TRIPS: usize = 20_000;

/// TCP ping-pong of `ROUND_TRIPS` one-byte messages over the namespace's loopback.
fn ping_pong(ns: &Netns) {
    ping_pong_on(ns, None);
}

/// The ping-pong with the client held on one CPU and the server on another (`cpus`), when
/// given. Loopback raises NET_RX on the sending CPU, so each of the two gets about half of it:
/// a per-CPU count put on the wrong CPU shows. Left to the scheduler, the two wake each other
/// onto the same CPU.
fn ping_pong_on(ns: &Netns, cpus: Option<(usize, usize)>) {
    let listener = ns.run(|| TcpListener::bind("127.0.0.1:0").unwrap());
    let addr = listener.local_addr().unwrap();
    let server = std::thread::spawn(move || {
        if let Some((_, server_cpu)) = cpus {
            pin_to(server_cpu);
        }
        let (mut s, _) = listener.accept().unwrap();
        s.set_nodelay(true).unwrap();
        let mut b = [0u8; 1];
        for _ in 0..ROUND_TRIPS {
            s.read_exact(&mut b).unwrap();
            s.write_all(&b).unwrap();
        }
    });
    let client = std::thread::scope(|scope| {
        scope
            .spawn(|| {
                if let Some((client_cpu, _)) = cpus {
                    pin_to(client_cpu);
                }
                let mut c = ns.run(|| TcpStream::connect(addr).unwrap());
                c.set_nodelay(true).unwrap();
                let mut b = [7u8; 1];
                for _ in 0..ROUND_TRIPS {
                    c.write_all(&b).unwrap();
                    c.read_exact(&mut b).unwrap();
                }
            })
            .join()
    });
    client.unwrap();
    server.join().unwrap();
}

/// Holds the calling thread on `cpu`.
fn pin_to(cpu: usize) {
    let mut set = nix::sched::CpuSet::new();
    set.set(cpu).unwrap();
    nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set)
        .unwrap_or_else(|e| panic!("pin to CPU {cpu}: {e}"));
}

/// Two CPUs this process may run on, if it has two.
fn two_cpus() -> Option<(usize, usize)> {
    let set = nix::sched::sched_getaffinity(nix::unistd::Pid::from_raw(0)).unwrap();
    let mut cpus = (0..nix::sched::CpuSet::count()).filter(|&c| set.is_set(c).unwrap_or(false));
    Some((cpus.next()?, cpus.next()?))
}

/// Some block-device interrupts: a file in the build directory, written and synced.
fn disk_io() {
    let path = std::env::current_dir()
        .unwrap()
        .join(format!("kpo-irq-{}.tmp", std::process::id()));
    struct Remove(std::path::PathBuf);
    impl Drop for Remove {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
    let _guard = Remove(path.clone());
    let mut f = std::fs::File::create(&path).unwrap();
    for _ in 0..8 {
        f.write_all(&vec![1u8; 256 * 1024]).unwrap();
        f.sync_all().unwrap();
    }
}

fn softirqs() -> BTreeMap<String, u64> {
    softirqs_per_cpu()
        .into_iter()
        .map(|(name, cpus)| (name, cpus.values().sum()))
        .collect()
}

/// /proc/softirqs: each vector's runs on each CPU, by the CPU numbers of its header.
fn softirqs_per_cpu() -> BTreeMap<String, BTreeMap<u32, u64>> {
    let text = std::fs::read_to_string("/proc/softirqs").unwrap();
    let mut lines = text.lines();
    let cpus: Vec<u32> = lines
        .next()
        .unwrap()
        .split_whitespace()
        .map(|c| c.strip_prefix("CPU").unwrap().parse().unwrap())
        .collect();
    lines
        .filter_map(|l| {
            let (name, counts) = l.split_once(':')?;
            let counts = counts.split_whitespace().map(|c| c.parse::<u64>().unwrap());
            Some((
                name.trim().to_string(),
                cpus.iter().copied().zip(counts).collect(),
            ))
        })
        .collect()
}

fn context_switches() -> u64 {
    std::fs::read_to_string("/proc/stat")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("ctxt ")?.trim().parse().ok())
        .unwrap()
}

fn interrupts() -> BTreeMap<u32, u64> {
    let text = std::fs::read_to_string("/proc/interrupts").unwrap();
    let ncpu = text.lines().next().unwrap().split_whitespace().count();
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let (irq, rest) = l.split_once(':')?;
            let irq = irq.trim().parse::<u32>().ok()?;
            let total = rest
                .split_whitespace()
                .take(ncpu)
                .filter_map(|c| c.parse::<u64>().ok())
                .sum();
            Some((irq, total))
        })
        .collect()
}

/// How many handlers share each IRQ line: the sensor counts each one's run, so a line shared
/// by N counts N per interrupt.
fn handlers() -> BTreeMap<u32, u64> {
    let text = std::fs::read_to_string("/proc/interrupts").unwrap();
    let parsed = kpo_agent::collect::procfs::interrupts::parse_interrupts(&text).unwrap();
    parsed
        .action_names()
        .into_iter()
        .map(|(irq, names)| (irq, names.split(", ").count() as u64))
        .collect()
}

/// What a failed IRQ comparison needs to be explained (it has failed twice in many runs, each
/// time under load, with the eBPF count above and once below the kernel's): the line in
/// /proc/interrupts now, and how often each of this process's eBPF programs was skipped because
/// it was already running on its CPU (`recursion_misses`, in the programs' fdinfo).
fn irq_diagnostics(irq: u32) -> String {
    let line = std::fs::read_to_string("/proc/interrupts")
        .unwrap_or_default()
        .lines()
        .find(|l| l.trim_start().starts_with(&format!("{irq}:")))
        .unwrap_or("(gone)")
        .to_string();
    let mut misses = Vec::new();
    if let Ok(fds) = std::fs::read_dir("/proc/self/fdinfo") {
        for fd in fds.flatten() {
            let info = std::fs::read_to_string(fd.path()).unwrap_or_default();
            let field = |name: &str| {
                info.lines()
                    .find_map(|l| l.strip_prefix(name))
                    .map(|v| v.trim().to_string())
            };
            if let (Some(tag), Some(missed)) = (field("prog_tag:"), field("recursion_misses:")) {
                misses.push(format!("{tag}: {missed}"));
            }
        }
    }
    format!(
        "/proc/interrupts now: {}; eBPF programs' recursion_misses: [{}]",
        line.split_whitespace().collect::<Vec<_>>().join(" "),
        misses.join(", ")
    )
}

fn within(what: &str, got: u64, expected: u64, rel: f64, abs: u64) {
    let diff = got.abs_diff(expected);
    assert!(
        diff <= abs || diff as f64 <= rel * expected as f64,
        "{what}: eBPF {got} vs kernel {expected} (tolerance {:.0}% or {abs})",
        rel * 100.0
    );
}

/// Tolerances: the kernel's counters are read a few microseconds apart from the collector's map
/// reads, so counts may differ by what happens in between: 5% (or a small absolute slack).
pub fn irq_softirq_sched_agree_with_proc() {
    let ns = Netns::new();
    // Interrupts also come from devices the test does not drive (a busy disk or NIC of the
    // machine): what they raise between the sensor's start and the inner reading, and between
    // the last reading and the window's close, is the sensor's and not the inner interval's.
    // So each IRQ's count is held between the inner interval and the outer one, around the
    // whole window.
    let irq_outer0 = interrupts();
    let (mut collector, builder) = start(true);
    let (soft0, ctxt0, irq0) = (softirqs_per_cpu(), context_switches(), interrupts());
    ping_pong_on(&ns, two_cpus());
    disk_io();
    let (soft1, ctxt1, irq1) = (softirqs_per_cpu(), context_switches(), interrupts());
    let kernel_on = |vector: &str, cpu: u32| soft1[vector][&cpu] - soft0[vector][&cpu];
    let kernel = |vector: &str| {
        soft1[vector]
            .keys()
            .map(|&c| kernel_on(vector, c))
            .sum::<u64>()
    };
    let (window, _) = close_window(&mut collector, builder);
    let irq_outer1 = interrupts();

    assert_eq!(window.sampled_fraction, 1.0);
    let net_rx = window
        .softirqs
        .iter()
        .find(|s| s.vector == "NET_RX")
        .expect("NET_RX sampled");
    let kernel_net_rx = kernel("NET_RX");
    assert!(
        kernel_net_rx > 1000,
        "loopback ping-pong raises NET_RX ({kernel_net_rx})"
    );
    within("NET_RX", net_rx.count, kernel_net_rx, 0.05, 50);
    // Each listed CPU's runs against its column of /proc/softirqs over the same interval, as
    // the total; a CPU the window leaves out ran none, or (on a host of more than 16 CPUs) is
    // in the rest, which holds the other CPUs' runs together.
    let mut unlisted = 0;
    for &cpu in soft1["NET_RX"].keys() {
        let Some(listed) = net_rx.per_cpu.iter().find(|c| c.cpu == cpu) else {
            unlisted += kernel_on("NET_RX", cpu);
            continue;
        };
        within(
            &format!("NET_RX on CPU {cpu}"),
            listed.count,
            kernel_on("NET_RX", cpu),
            0.05,
            50,
        );
    }
    within(
        "NET_RX on the CPUs not listed",
        net_rx.per_cpu_rest.as_ref().map_or(0, |r| r.count),
        unlisted,
        0.05,
        50,
    );
    if let Some((a, b)) = two_cpus() {
        // The client's and the server's CPUs each raised about half: the comparison above
        // tells one CPU's count from another's.
        for cpu in [a, b] {
            let cpu = u32::try_from(cpu).unwrap();
            assert!(
                kernel_on("NET_RX", cpu) > 1000,
                "NET_RX on CPU {cpu}: {soft1:?}"
            );
        }
    }
    for s in &window.softirqs {
        let cpus: Vec<u32> = s.per_cpu.iter().map(|c| c.cpu).collect();
        assert!(cpus.windows(2).all(|p| p[0] < p[1]), "{s:?}: CPU order");
        assert!(s
            .per_cpu
            .iter()
            .all(|c| c.count > 0 && soft1[s.vector].contains_key(&c.cpu)));
        // The listed CPUs and the rest (on a host of more than 16) add up to the vector.
        assert_eq!(
            s.per_cpu.iter().map(|c| c.count).sum::<u64>()
                + s.per_cpu_rest.as_ref().map_or(0, |r| r.count),
            s.count,
            "{s:?}"
        );
    }
    // One run in SOFTIRQ_TIME_EVERY of each vector on each CPU is timed.
    within(
        "timed NET_RX runs",
        net_rx.timed,
        net_rx.count / kpo_common::SOFTIRQ_TIME_EVERY,
        0.05,
        4,
    );
    assert!(net_rx.time_us.is_some_and(|t| t > 0.0), "{net_rx:?}");

    let csw = window.sampled_context_switches_per_s.expect("sched on") * window.duration_s;
    // The per-CPU rates and the rest add up to the total, but for each one's rounding to 1/1000.
    let per_cpu = window
        .sampled_context_switches_per_cpu_per_s
        .as_ref()
        .expect("sched on");
    let summed: f64 = per_cpu.iter().map(|c| c.per_s).sum::<f64>()
        + window
            .sampled_context_switches_per_cpu_rest
            .as_ref()
            .map_or(0.0, |r| r.per_s);
    let total = window.sampled_context_switches_per_s.unwrap();
    assert!(
        (summed - total).abs() <= 0.0005 * (per_cpu.len() + 2) as f64,
        "per-CPU context switches {per_cpu:?} add up to {summed}, not {total}"
    );
    within(
        "context switches",
        csw.round() as u64,
        ctxt1 - ctxt0,
        0.05,
        200,
    );
    let runq = window.runq_latency.expect("run-queue latency sampled");
    assert!(
        runq.samples > (ROUND_TRIPS / 10) as u64,
        "runq samples {}",
        runq.samples
    );
    assert!(runq.p50_us > 0.0 && runq.p99_us >= runq.p50_us && runq.max_us >= runq.p99_us);

    let backlog = window
        .napi
        .iter()
        .find(|n| n.ifindex == 0)
        .expect("backlog NAPI polls");
    assert!(backlog.polls > 0 && backlog.packets >= backlog.polls / 2);

    let mut compared = 0;
    let shared = handlers();
    for irq in &window.irqs {
        let runs = |from: &BTreeMap<u32, u64>, to: &BTreeMap<u32, u64>| {
            let kernel =
                to.get(&irq.irq).copied().unwrap_or(0) - from.get(&irq.irq).copied().unwrap_or(0);
            kernel * shared.get(&irq.irq).copied().unwrap_or(1)
        };
        let (inner, outer) = (runs(&irq0, &irq1), runs(&irq_outer0, &irq_outer1));
        // Within tolerance of the inner interval, or between it and the outer one.
        let diff = irq.count.abs_diff(inner);
        assert!(
            (inner..=outer).contains(&irq.count) || diff <= 3 || diff as f64 <= 0.05 * inner as f64,
            "irq {}: eBPF {} vs kernel {inner} over the inner interval, {outer} over the outer (tolerance 5% or 3); {}",
            irq.irq,
            irq.count,
            irq_diagnostics(irq.irq)
        );
        compared += irq.count;
    }
    assert!(
        compared > 0,
        "disk writes with fsync raise block-device interrupts"
    );
    // The lines not listed (on a host where more than 16 fired) are in the rest, together.
    let unlisted = |from: &BTreeMap<u32, u64>, to: &BTreeMap<u32, u64>| -> u64 {
        to.iter()
            .filter(|(n, _)| !window.irqs.iter().any(|i| i.irq == **n))
            .map(|(n, c)| {
                (c - from.get(n).copied().unwrap_or(0)) * shared.get(n).copied().unwrap_or(1)
            })
            .sum()
    };
    let (inner, outer) = (unlisted(&irq0, &irq1), unlisted(&irq_outer0, &irq_outer1));
    let rest = window.irqs_rest.as_ref().map_or(0, |r| r.count);
    let diff = rest.abs_diff(inner);
    assert!(
        (inner..=outer).contains(&rest) || diff <= 3 || diff as f64 <= 0.05 * inner as f64,
        "the lines not listed: eBPF {rest} vs kernel {inner} over the inner interval, {outer} \
         over the outer: {:?}",
        window.irqs_rest
    );
    let busiest = irq1
        .iter()
        .map(|(n, c)| (c - irq0.get(n).copied().unwrap_or(0), *n))
        .max()
        .unwrap();
    let reported = window.irqs.iter().find(|i| i.irq == busiest.1);
    assert!(
        reported.is_some(),
        "the busiest IRQ ({}: {} interrupts) is reported",
        busiest.1,
        busiest.0
    );
    // Its handler runs were timed (all but one under way at an attach, or one a nested handler
    // interrupted).
    assert!(
        reported.is_some_and(|i| i.time_us.is_some_and(|t| t > 0.0) && i.mean_ns.is_some()),
        "{reported:?}"
    );
}

/// With no traffic, the network sensors stay near zero: at most 1/20 of the loaded NET_RX count.
pub fn idle_namespace_traffic_is_quiet() {
    let ns = Netns::new();
    let (mut collector, builder) = start(true);
    ping_pong(&ns);
    let (loaded, builder) = close_window(&mut collector, builder);
    let count = |w: &kpo_agent::window::Window| {
        w.softirqs
            .iter()
            .find(|s| s.vector == "NET_RX")
            .map_or(0, |s| s.count)
    };
    std::thread::sleep(Duration::from_millis(500));
    let (idle, _) = close_window(&mut collector, builder);
    let (loaded_rx, idle_rx) = (count(&loaded), count(&idle));
    assert!(loaded_rx > 1000, "loaded NET_RX {loaded_rx}");
    assert!(
        idle_rx * 20 <= loaded_rx,
        "idle NET_RX {idle_rx} vs loaded {loaded_rx}"
    );
    let idle_backlog = idle
        .napi
        .iter()
        .find(|n| n.ifindex == 0)
        .map_or(0, |n| n.packets);
    let loaded_backlog = loaded
        .napi
        .iter()
        .find(|n| n.ifindex == 0)
        .map_or(0, |n| n.packets);
    assert!(
        idle_backlog * 20 <= loaded_backlog,
        "backlog packets idle {idle_backlog} vs {loaded_backlog}"
    );
}

/// Defect: a sampled tick's rates were per second of the whole tick, though the agent attaches
/// the duty-cycled sensors after one read and detaches them before the next, so they read low by
/// that gap (and the tick of this test, detached at its read, counted as not sampled at all).
/// The window's sampled span is now the time they were attached, from attach to detach.
pub fn a_sampled_span_runs_from_attach_to_detach() {
    let ns = Netns::new();
    let mut collector = Collector::new(
        sensors(false),
        PathBuf::from("/proc"),
        kpo_agent::config::MAX_WINDOW,
    );
    let before_baseline = Instant::now();
    let mut builder = WindowBuilder::new(collector.sample());
    let after_baseline = Instant::now();
    // Attached after the baseline's read, as the agent attaches a sampled tick's sensors.
    let before_attach = Instant::now();
    collector.sensors.apply_duty(true, true);
    let after_attach = Instant::now();
    let soft0 = softirqs();
    ping_pong(&ns);
    let soft1 = softirqs();
    let before_detach = Instant::now();
    collector.sensors.apply_duty(false, true);
    let after_detach = Instant::now();
    // Traffic the kernel counts and the detached sensor does not.
    ping_pong(&ns);
    let before_read = Instant::now();
    builder.push(collector.sample());
    let after_read = Instant::now();
    let (window, _) = builder.finish().unwrap();

    let secs = |d: Duration| d.as_secs_f64();
    let sampled = window.sampled_fraction * window.duration_s;
    let (shortest, longest) = (
        secs(before_detach - after_attach),
        secs(after_detach - before_attach),
    );
    assert!(
        sampled >= shortest - 1e-9 && sampled <= longest + 1e-9,
        "sampled {sampled} s, attached between {shortest} and {longest} s"
    );
    let (shortest, longest) = (
        secs(before_read - after_baseline),
        secs(after_read - before_baseline),
    );
    assert!(
        window.duration_s >= shortest && window.duration_s <= longest,
        "window of {} s, read between {shortest} and {longest} s apart",
        window.duration_s
    );
    let net_rx = window
        .softirqs
        .iter()
        .find(|s| s.vector == "NET_RX")
        .expect("NET_RX sampled");
    within(
        "NET_RX while attached",
        net_rx.count,
        soft1["NET_RX"] - soft0["NET_RX"],
        0.05,
        50,
    );
    let per_s = net_rx.count as f64 / sampled;
    assert!(
        (net_rx.per_s - per_s).abs() <= 0.0005 + per_s * 1e-9,
        "NET_RX per second attached: {} vs {per_s}",
        net_rx.per_s
    );
}
