//! Shared set-up: a collector over the real sensors, driven tick by tick.
use std::path::PathBuf;

use kpo_agent::{
    collect::Collector,
    sensors::{SensorOptions, Sensors},
    window::{Window, WindowBuilder},
};

pub fn sensors(duty_full_time: bool) -> Sensors {
    let opts = SensorOptions::new(PathBuf::from("/sys/kernel/btf/vmlinux"));
    let mut sensors = Sensors::load(&opts);
    let off: Vec<_> = sensors
        .status()
        .iter()
        .filter(|s| !s.enabled)
        .cloned()
        .collect();
    assert!(
        off.is_empty(),
        "sensors off on a kernel that should have them all: {off:?}"
    );
    // The accept-queue sensor is attached full time, as the agent does under pressure.
    sensors.apply_duty(duty_full_time, true);
    sensors
}

/// A collector and the builder of its first window.
pub fn start(duty_full_time: bool) -> (Collector, WindowBuilder) {
    let mut collector = Collector::new(
        sensors(duty_full_time),
        PathBuf::from("/proc"),
        kpo_agent::config::MAX_WINDOW,
    );
    let baseline = collector.sample();
    (collector, WindowBuilder::new(baseline))
}

/// One tick then close the window; returns it and the next window's builder.
pub fn close_window(collector: &mut Collector, builder: WindowBuilder) -> (Window, WindowBuilder) {
    let mut builder = builder;
    builder.push(collector.sample());
    builder.finish_and_continue().expect("window has a tick")
}

/// Polls `condition` every 20 ms for at most `limit`; panics with `what` if it never holds.
pub fn wait_until(what: &str, limit: std::time::Duration, mut condition: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + limit;
    while !condition() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// A policy (everything observed), state directory and socket of a test agent's own, as `kpo
/// run` arguments, for each of `--policy`, `--state-dir` and `--socket` that `given` does not
/// name already; the directory holding them goes when the returned guard does. Without them an
/// agent takes the host's defaults (/etc/kpo/policy.toml, /var/lib/kpo, /run/kpo/kpo.sock): it
/// would decide under the host's policy, changing what that puts in auto, and write its history.
pub fn own_state(given: &[&str]) -> (tempfile::TempDir, Vec<std::ffi::OsString>) {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.toml");
    std::fs::write(&policy, "[defaults]\nmode = \"observe\"\n").unwrap();
    let mut args = Vec::new();
    for (flag, path) in [
        ("--policy", policy),
        ("--state-dir", dir.path().join("state")),
        ("--socket", dir.path().join("kpo.sock")),
    ] {
        if !given.contains(&flag) {
            args.push(flag.into());
            args.push(path.into_os_string());
        }
    }
    (dir, args)
}
