//! The run loop: sensors -> collector -> windows -> events, with duty-cycling, notable events at
//! once, and a clean flush on SIGINT/SIGTERM.
use std::{path::PathBuf, process::ExitCode, time::Duration};

use aya::maps::{MapData, RingBuf};
use kpo_common::{NotableEvent, NotableKind, MAP_NOTABLE};
use tokio::{io::unix::AsyncFd, signal::unix::SignalKind};
use tracing::{info, warn};

use crate::{
    collect::{Collector, Sample},
    config::{duty_tick, Config},
    output::events::{Event, EventWriter},
    sensors::{SensorOptions, Sensors},
    window::{family_name, WindowBuilder},
};

#[derive(Debug, Clone, clap::Args)]
pub struct RunArgs {
    /// TOML configuration file (see README); flags override it.
    #[arg(long, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// How often to read the kernel, e.g. 1s, 500ms.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub tick: Option<Duration>,
    /// Window length, a whole number of ticks, e.g. 60s.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub window: Option<Duration>,
    /// Where to write NDJSON events: a file (appended) or - for standard output.
    #[arg(long, value_name = "PATH")]
    pub events: Option<PathBuf>,
    /// Fraction of each window (0..=1) during which high-rate sensors are attached.
    #[arg(long, value_name = "FRACTION")]
    pub duty_fraction: Option<f64>,
    /// Keep a sensor off (repeatable): accept_queue, synack_retrans, irq, softirq, napi, sched,
    /// request_latency.
    #[arg(long = "disable-sensor", value_name = "SENSOR")]
    pub disable_sensor: Vec<String>,
    /// Kernel BTF file used for struct offsets.
    #[arg(long, value_name = "PATH")]
    pub btf: Option<PathBuf>,
    /// The /proc to read (a pod sees the host's /proc where it is mounted).
    #[arg(long, value_name = "PATH")]
    pub proc_root: Option<PathBuf>,
}

impl RunArgs {
    pub fn config(&self) -> anyhow::Result<Config> {
        let (mut config, origin) = match &self.config {
            Some(path) => (Config::from_file(path)?, path.display().to_string()),
            None => (Config::default(), "command line".to_string()),
        };
        if let Some(v) = self.tick {
            config.tick = v;
        }
        if let Some(v) = self.window {
            config.window = v;
        }
        if let Some(v) = &self.events {
            config.events = v.clone();
        }
        if let Some(v) = self.duty_fraction {
            config.duty_fraction = v;
        }
        config
            .disabled_sensors
            .extend(self.disable_sensor.iter().cloned());
        if let Some(v) = &self.btf {
            config.btf = v.clone();
        }
        if let Some(v) = &self.proc_root {
            config.proc_root = v.clone();
        }
        config.validate(&origin)?;
        Ok(config)
    }
}

pub fn run_blocking(args: RunArgs) -> anyhow::Result<ExitCode> {
    init_logging();
    let config = args.config()?;
    if !nix::unistd::Uid::effective().is_root() {
        anyhow::bail!("kpo run needs root (CAP_BPF and CAP_PERFMON to load eBPF, CAP_SYS_ADMIN to enter network namespaces); try: sudo kpo run");
    }
    let events = EventWriter::open(&config.events).map_err(|e| {
        anyhow::anyhow!(
            "cannot open the event stream {}: {e}",
            config.events.display()
        )
    })?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run(config, events))?;
    Ok(ExitCode::SUCCESS)
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Logs go to stderr so that stdout stays pure NDJSON.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

pub async fn run(config: Config, mut events: EventWriter) -> anyhow::Result<()> {
    // Handlers first: a signal during start-up still ends in a clean detach and a `stop` event.
    let mut sigterm = tokio::signal::unix::signal(SignalKind::terminate())?;
    let mut sigint = tokio::signal::unix::signal(SignalKind::interrupt())?;
    let mut opts = SensorOptions::new(config.btf.clone());
    opts.disabled = config.disabled();
    let mut sensors = Sensors::load(&opts);
    let _ebpf_log = crate::sensors::ebpf_log::spawn(&mut sensors);
    let notable = sensors
        .take_map(MAP_NOTABLE)
        .and_then(|m| RingBuf::try_from(m).ok());
    // SAFETY: the ring buffer owns its map fd and keeps it open, unchanged, for as long as the
    // AsyncFd holds it.
    let mut notable = notable.and_then(|rb| {
        unsafe { AsyncFd::register_with_interest(rb, tokio::io::Interest::READABLE) }.ok()
    });
    events.emit(&Event::Start {
        version: env!("CARGO_PKG_VERSION"),
        pid: std::process::id(),
        tick_s: config.tick.as_secs_f64(),
        window_s: config.window.as_secs_f64(),
        duty_fraction: config.duty_fraction,
    })?;
    events.emit(&Event::Sensors {
        sensors: sensors.status().to_vec(),
    })?;
    let mut reported_status = sensors.status().to_vec();

    let mut collector = Collector::new(sensors, config.proc_root.clone());
    let ticks_per_window = config.ticks_per_window();
    let mut tick_in_window = 0u64;
    let mut pressure = PressureWatch::new(ticks_per_window);
    collector
        .sensors
        .apply_duty(duty_tick(0, config.duty_fraction), false);
    let mut builder = WindowBuilder::new(collector.sample());
    let mut windows = 0u64;
    let mut interval = tokio::time::interval(config.tick);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    interval.tick().await; // the first tick completes at once
    info!(tick = ?config.tick, window = ?config.window, "kpo running");

    let reason = loop {
        tokio::select! {
            _ = interval.tick() => {
                let sample = collector.sample();
                pressure.observe(builder.last_sample(), &sample);
                // Without the eBPF hook attached this tick, a full queue is seen only here.
                if !sample.accept_queue_attached {
                    for event in full_listeners(&sample) {
                        events.emit(&event)?;
                    }
                }
                builder.push(sample);
                tick_in_window += 1;
                if tick_in_window == ticks_per_window {
                    tick_in_window = 0;
                    let (window, last) = builder.finish().expect("a window has ticks");
                    events.emit(&Event::Window { partial: false, window: Box::new(window) })?;
                    windows += 1;
                    builder = WindowBuilder::new(last);
                }
                collector
                    .sensors
                    .apply_duty(duty_tick(tick_in_window, config.duty_fraction), pressure.escalated());
                if collector.sensors.status() != reported_status.as_slice() {
                    reported_status = collector.sensors.status().to_vec();
                    events.emit(&Event::Sensors { sensors: reported_status.clone() })?;
                }
            }
            ready = readable(&mut notable) => {
                let mut guard = ready?;
                let last = builder.last_sample();
                let mut drained = Vec::new();
                while let Some(item) = guard.get_inner_mut().next() {
                    drained.push(decode_notable(&item));
                }
                guard.clear_ready();
                for event in drained.into_iter().flatten() {
                    events.emit(&notable_event(&event, last))?;
                }
            }
            _ = sigterm.recv() => break "SIGTERM",
            _ = sigint.recv() => break "SIGINT",
        }
    };
    // Flush what this window has so far, then detach before saying goodbye.
    builder.push(collector.sample());
    if let Some((window, _)) = builder.finish() {
        events.emit(&Event::Window {
            partial: true,
            window: Box::new(window),
        })?;
        windows += 1;
    }
    collector.sensors.detach_all();
    events.emit(&Event::Stop {
        reason: reason.into(),
        windows,
    })?;
    info!(reason, windows, "kpo stopped");
    Ok(())
}

/// Keeps the accept-queue sensor attached full time from the tick a listener shows pressure (queue
/// at half its limit or more, or new drops) until a whole window passes without any.
struct PressureWatch {
    ticks_per_window: u64,
    ticks_left: u64,
}

impl PressureWatch {
    fn new(ticks_per_window: u64) -> Self {
        Self {
            ticks_per_window,
            ticks_left: 0,
        }
    }

    fn observe(&mut self, previous: &Sample, now: &Sample) {
        let under_pressure = now.listeners.iter().any(|(key, l)| {
            (l.limit > 0 && l.depth.saturating_mul(2) >= l.limit)
                || previous
                    .listeners
                    .get(key)
                    .is_some_and(|p| l.drops > p.drops)
        });
        self.ticks_left = if under_pressure {
            self.ticks_per_window
        } else {
            self.ticks_left.saturating_sub(1)
        };
    }

    fn escalated(&self) -> bool {
        self.ticks_left > 0
    }
}

/// `listener_full` events for listeners sock_diag found at their limit.
fn full_listeners(sample: &Sample) -> Vec<Event> {
    sample
        .listeners
        .iter()
        .filter(|(_, l)| l.limit > 0 && l.depth >= l.limit)
        .map(|(key, l)| Event::ListenerFull {
            netns: u64::from(key.netns),
            port: key.port,
            family: family_name(key.family),
            backlog: l.depth,
            backlog_limit: l.limit,
            pid: l.pid,
            comm: l.comm.clone(),
        })
        .collect()
}

async fn readable(
    notable: &mut Option<AsyncFd<RingBuf<MapData>>>,
) -> std::io::Result<tokio::io::unix::AsyncFdReadyMutGuard<'_, RingBuf<MapData>>> {
    match notable {
        Some(fd) => fd.readable_mut().await,
        None => std::future::pending().await,
    }
}

fn decode_notable(bytes: &[u8]) -> Option<NotableEvent> {
    if bytes.len() < std::mem::size_of::<NotableEvent>() {
        warn!(len = bytes.len(), "short notable event ignored");
        return None;
    }
    // The ring buffer gives no alignment guarantee for our type: copy out.
    Some(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<NotableEvent>()) })
}

fn notable_event(e: &NotableEvent, last: &Sample) -> Event {
    debug_assert_eq!(e.kind, NotableKind::ListenerFull as u32);
    let owner = last.listeners.get(&e.key);
    Event::ListenerFull {
        netns: u64::from(e.key.netns),
        port: e.key.port,
        family: family_name(e.key.family),
        backlog: e.backlog,
        backlog_limit: e.backlog_limit,
        pid: owner.and_then(|o| o.pid),
        comm: owner.and_then(|o| o.comm.clone()),
    }
}

#[cfg(test)]
mod tests {
    use std::{collections::BTreeMap, time::Instant};

    use kpo_common::{ListenerKey, AF_INET};

    use super::*;
    use crate::collect::{procfs::HostSnapshot, ListenerView};

    fn sample(depth: u32, limit: u32, drops: u64) -> Sample {
        let key = ListenerKey {
            netns: 1,
            port: 80,
            family: AF_INET,
        };
        let view = ListenerView {
            addresses: vec![],
            depth,
            limit,
            drops,
            pid: None,
            comm: None,
        };
        Sample {
            at: Instant::now(),
            wall: time::OffsetDateTime::UNIX_EPOCH,
            bpf: None,
            listeners: [(key, view)].into(),
            netns: BTreeMap::new(),
            host: HostSnapshot::empty(Instant::now()),
            duty_attached: false,
            accept_queue_sensor: true,
            accept_queue_attached: false,
        }
    }

    #[test]
    fn pressure_escalates_for_a_window_then_relaxes() {
        let mut watch = PressureWatch::new(3);
        watch.observe(&sample(0, 128, 0), &sample(10, 128, 0));
        assert!(!watch.escalated(), "a queue below half its limit is calm");
        watch.observe(&sample(10, 128, 0), &sample(64, 128, 0));
        assert!(watch.escalated(), "half the limit is pressure");
        for _ in 0..2 {
            watch.observe(&sample(0, 128, 0), &sample(0, 128, 0));
            assert!(watch.escalated());
        }
        watch.observe(&sample(0, 128, 0), &sample(0, 128, 0));
        assert!(!watch.escalated(), "a whole calm window relaxes it");
        watch.observe(&sample(0, 128, 5), &sample(0, 128, 6));
        assert!(watch.escalated(), "new drops are pressure");
    }

    #[test]
    fn full_queues_are_reported_from_sock_diag() {
        assert!(full_listeners(&sample(8, 9, 0)).is_empty());
        let events = full_listeners(&sample(9, 9, 0));
        assert!(matches!(
            events.as_slice(),
            [Event::ListenerFull {
                port: 80,
                backlog: 9,
                backlog_limit: 9,
                ..
            }]
        ));
    }
}
