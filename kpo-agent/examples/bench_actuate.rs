//! `cargo xtask bench actuate`: what one policy-checked, journaled, verified sysctl change costs,
//! and how much of that is the journal's durability. Run as root; it changes
//! `net.core.somaxconn` only inside a network namespace it creates (and deletes, even on panic).
//!
//! Measured side by side in one run, on the same namespace:
//! - `actuator`: write + read-back through the sysctl actuator alone (setns thread, /proc/sys);
//! - `change path (tmpfs)`: policy, journal and actuator, the journal on /dev/shm, where fsync
//!   costs next to nothing;
//! - `change path (disk)`: the same with the journal on the disk under /var/tmp: the production
//!   case. Its difference from the tmpfs line is the price of durability.
use std::{
    process::Command,
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use kpo_agent::{
    actuate::{open_actuator, param::Value, Roots},
    change::{ChangePath, ChangeStatus, KernelActuators},
    journal::{Holder, Journal},
    policy::{Policy, Proposal, Source},
};

const POLICY: &str = r#"
[params."net.core.somaxconn"]
mode = "auto"
min = 128
max = 65535
max_step = "1000%"
"#;

struct Netns(String);

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    // Only an atomic store: async-signal-safe.
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Ctrl-C or SIGTERM would end the process at once and leave the namespace behind: they set a
/// flag instead, and the next change unwinds ([`stop_if_interrupted`]), which deletes it.
fn on_interrupt_unwind() {
    use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
    let action = SigAction::new(
        SigHandler::Handler(on_signal),
        SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    for signal in [Signal::SIGINT, Signal::SIGTERM] {
        // SAFETY: the handler only stores to an atomic.
        unsafe { sigaction(signal, &action) }.expect("sigaction");
    }
}

fn stop_if_interrupted() {
    if INTERRUPTED.load(Ordering::SeqCst) {
        panic!("interrupted: the namespace and temporary directories are removed");
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn summary(name: &str, mut t: Vec<Duration>) -> Duration {
    t.sort();
    let (p50, p99) = (percentile(&t, 0.5), percentile(&t, 0.99));
    println!(
        "{name:<22} {:>10.1} {:>10.1} {:>10.1}",
        p50.as_secs_f64() * 1e6,
        p99.as_secs_f64() * 1e6,
        t.last().unwrap().as_secs_f64() * 1e6
    );
    p50
}

fn change_path_times(dir: &std::path::Path, address: &str, reps: usize) -> Vec<Duration> {
    let policy = Policy::parse(POLICY, "bench").unwrap();
    let journal = Journal::open(dir, Holder::Agent, Duration::ZERO).unwrap();
    let mut path = ChangePath::new(policy, journal, Box::new(KernelActuators::default()));
    (0..reps)
        .map(|i| {
            stop_if_interrupted();
            let proposal = Proposal {
                address: address.parse().unwrap(),
                value: Value::Int(1000 + (i % 2) as i128),
                source: Source::Operator,
                reason: "bench".into(),
            };
            let started = Instant::now();
            let report = path.propose(&proposal).unwrap();
            let took = started.elapsed();
            assert_eq!(
                report.status,
                ChangeStatus::Applied,
                "{}",
                report.describe()
            );
            took
        })
        .collect()
}

fn main() {
    let reps: usize = std::env::args()
        .skip_while(|a| a != "--reps")
        .nth(1)
        .map(|n| n.parse().expect("--reps N"))
        .unwrap_or(300);
    assert!(
        nix::unistd::geteuid().is_root(),
        "needs root (creates a network namespace)"
    );
    on_interrupt_unwind();
    let name = format!("kpo-bench-act-{}", std::process::id());
    assert!(Command::new("ip")
        .args(["netns", "add", &name])
        .status()
        .unwrap()
        .success());
    let ns = Netns(name);
    let address = format!("net.core.somaxconn@netns:/run/netns/{}", ns.0);
    let host_before = std::fs::read_to_string("/proc/sys/net/core/somaxconn").unwrap();

    let mut actuator = open_actuator(&address.parse().unwrap(), &Roots::default()).unwrap();
    let direct: Vec<Duration> = (0..reps)
        .map(|i| {
            stop_if_interrupted();
            let started = Instant::now();
            actuator.apply(&Value::Int(1000 + (i % 2) as i128)).unwrap();
            started.elapsed()
        })
        .collect();
    let shm = tempfile::tempdir_in("/dev/shm").unwrap();
    let tmpfs = change_path_times(shm.path(), &address, reps);
    let disk_dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let disk = change_path_times(disk_dir.path(), &address, reps);

    println!("{reps} changes each, µs        p50        p99        max");
    let a = summary("actuator", direct);
    let t = summary("change path (tmpfs)", tmpfs);
    let d = summary("change path (disk)", disk);
    println!(
        "at p50: the change path costs {:.1}x the bare write; durability (disk - tmpfs) is {:.0}% of it",
        d.as_secs_f64() / a.as_secs_f64(),
        100.0 * (d.as_secs_f64() - t.as_secs_f64()).max(0.0) / d.as_secs_f64()
    );
    assert_eq!(
        std::fs::read_to_string("/proc/sys/net/core/somaxconn").unwrap(),
        host_before,
        "the host's somaxconn moved"
    );
}
