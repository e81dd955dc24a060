//! The run loop. It only wires the stages, in data-flow order, once per tick:
//!
//! sensors (duty cycle) → collect (a [`Sample`]) → the rules on the tick ([`deciding`]) → window
//! (a [`Window`] every few ticks)
//! → energy (the window's joules) → guard, then advise → policy → actuate ([`deciding`]) →
//! output (events, written off the loop). The LLM advisor ([`llm`]) is consulted off the loop and
//! its advice joins the deciding stage when it arrives.
//!
//! Beside the tick it forwards the kernel's notable events (full accept queues) at once, serves
//! the operator's requests from the control socket, passes other processes' sysctl writes to the
//! deciding stage (which yields to people), and handles signals: SIGTERM and SIGINT flush the
//! partial window, settle an optimizer trial still in place, put back the parameters whose policy
//! says `on_exit = "revert"`, and stop; SIGHUP re-opens the event file and loads a changed policy
//! (a `policy` event; the optimizer's loop restarts when its entries changed). A failure (the
//! event stream's reader gone, the kernel's ring buffer, a stage's panic) stops the loop too,
//! with `on_exit` carried out but no partial window. Nothing in the loop waits on the output: a
//! stalled reader costs dropped events, not ticks (see [`crate::output::sink`]).
mod args;
mod capabilities;
mod deciding;
#[cfg(test)]
mod deciding_tests;
mod duty;
mod kernel_view;
mod listen_again;
pub(crate) mod llm;
mod offline_changes;
pub mod one_agent;
mod open_files;
mod pace;
mod rules_state;
mod second_signal;
mod unix_holder;
mod yielding;

use std::{process::ExitCode, time::Duration};

use tokio::signal::unix::{signal, Signal, SignalKind};
use tracing::{info, warn};

pub use args::RunArgs;
// The stop's bounded waits and the open-files limit, which deploy/kpo.service is held to.
pub(crate) use deciding::slo_unmeasured;
use deciding::Deciding;
pub use deciding::{TURN_AWAY_WAIT, WEBHOOK_FINISH_WAIT};
use duty::DutyCycle;
pub use kernel_view::memory_cgroup_v1;
pub use open_files::LOW_HARD_LIMIT;

use crate::{
    collect::{
        notable::{ListenerFull, NotableStream},
        pressure_watch::PressureWatch,
        Collector, Sample,
    },
    config::Config,
    energy::{
        choose_meter, choose_meter_after,
        estimate::PowerModel,
        handover::{MeterWatch, SetAside},
        trust::{busy_work, PROBE_WORK},
        EnergyError, EnergyReading,
    },
    output::{events::Event, sink::EventSink},
    sensors::{SensorKind, SensorOptions, SensorStatus, Sensors},
    window::{
        energy::{EnergySourceChoice, WindowEnergy},
        Window, WindowBuilder,
    },
};

/// Where the energy counters are (powercap, the perf power PMU, cpufreq): sysfs is the host's
/// even in a pod.
const SYS_ROOT: &str = "/sys";

/// How long the writer may take to drain the queue at shutdown, after the sensors are detached.
/// A reader stalled for longer costs the events still queued (their count goes to stderr).
pub const STOP_FLUSH_TIMEOUT: Duration = Duration::from_secs(2);

/// How long the stop waits for its events to be written before it moves the mark of the changes
/// the stream carried (`offline_changes::MarkKeeper`): a writer that keeps up takes milliseconds,
/// and a stalled reader costs the stop this much more before [`STOP_FLUSH_TIMEOUT`].
pub const MARK_WAIT: Duration = Duration::from_secs(1);

/// How long the runtime's blocking threads may take to finish at shutdown.
pub const RUNTIME_STOP_TIMEOUT: Duration = Duration::from_millis(500);

pub fn run_blocking(args: RunArgs) -> anyhow::Result<ExitCode> {
    // Never blocks on a standard error nobody reads; dropped on return, which writes what is
    // still queued (bounded) before the caller prints an error and the process exits.
    let _logging = crate::logging::init();
    // Panics' messages through that queue too: std's hook writes them to standard error on the
    // panicking thread, which an unread standard error blocks before a stage's `catch_unwind`.
    let _panics = crate::logging::route_panics(&_logging);
    // SIGHUP (a log rotation's re-open) must not kill an agent still starting: its handler is
    // installed with the others in `run`, and until then the signal is ignored.
    // SAFETY: SIG_IGN installs no handler code.
    if let Err(e) = unsafe {
        nix::sys::signal::signal(
            nix::sys::signal::Signal::SIGHUP,
            nix::sys::signal::SigHandler::SigIgn,
        )
    } {
        warn!("SIGHUP cannot be ignored during start-up: {e}");
    }
    let config = args.config()?;
    for w in &config.warnings {
        warn!("{w}");
    }
    let queue_bytes = crate::output::sink::queue_bytes_from_env()?;
    // A root the configuration file sets is named by the file and key, as kpo check names it
    // (s60 story BS-6: named by a flag nobody gave).
    let file = args.config.as_ref().map(|p| p.display().to_string());
    let set_by_file = |flag_given: bool| file.as_deref().filter(|_| !flag_given);
    crate::check::proc_root_from(set_by_file(args.proc_root.is_some()), &config.proc_root)?;
    crate::check::sysfs_root_from(set_by_file(args.sysfs_root.is_some()), &config.sysfs_root)?;
    if !nix::unistd::Uid::effective().is_root() {
        anyhow::bail!("kpo run needs root (CAP_BPF and CAP_PERFMON to load eBPF, CAP_SYS_ADMIN to enter network namespaces); try: sudo kpo run");
    }
    for lost in capabilities::missing_here() {
        warn!("{lost}");
    }
    // With the environment's part, before anything is opened or recorded: a mistake there must
    // leave the state directory as it was, the policy path the offline commands follow included.
    let llm = llm::LlmStage::start(&config.llm, &args.config_origin())?;
    // One agent per network namespace, before anything is opened: a second one, whatever its
    // state directory, would change the same parameters behind the first one's back.
    let _one_agent = one_agent::claim()?;
    if let Some(squatted) = &_one_agent.squatted {
        warn!("{squatted}");
    }
    if let Err(e) = open_files::raise_to_hard_limit() {
        warn!("open files: the limit could not be read or raised: {e}");
    }
    let mut sink = EventSink::open(&config.events, queue_bytes).map_err(|e| {
        // From the file, named as `kpo check --config` names it: the file and its key. Standard
        // output is the default, which a file without the key leaves (s57 review2 R2-9).
        match (&args.events, &args.config) {
            (None, Some(file)) if config.events != std::path::Path::new("-") => {
                anyhow::anyhow!("{}: `events` = {:?}: {e}", file.display(), config.events)
            }
            _ => anyhow::Error::from(e),
        }
    })?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let outcome = runtime.block_on(run(config, llm, &args, &mut sink, Some(_logging.writer())));
    // Dropping a runtime waits for its blocking threads without bound (a DNS lookup of an LLM or
    // webhook request in flight, a login-name lookup for a control request): the agent stops
    // within a bound instead, and those threads end with the process.
    runtime.shutdown_timeout(RUNTIME_STOP_TIMEOUT);
    // A start that failed before its first event (its policy, its state directory) leaves no
    // empty event file it created behind.
    let unused = outcome.is_err().then(|| sink.unused_file()).flatten();
    // Bounded: a writer stuck on a stalled reader is abandoned, and what it could not write is
    // counted on stderr.
    sink.close(STOP_FLUSH_TIMEOUT);
    if let Some(unused) = unused {
        unused.remove();
    }
    let reason = outcome?;
    info!(reason, "kpo stopped");
    Ok(ExitCode::SUCCESS)
}

/// Runs until SIGTERM or SIGINT (returns its name) or until a failure (an error): the event
/// stream's reader gone for good, the kernel's ring buffer, a stage's panic. Events go to `sink`; the caller closes it.
pub async fn run(
    config: Config,
    mut llm: llm::LlmStage,
    args: &RunArgs,
    sink: &mut EventSink,
    logs: Option<crate::logging::LogWriter>,
) -> anyhow::Result<&'static str> {
    crate::advise::recommendation::set_run(crate::journal::now_ms());
    // Handlers first: a signal during start-up still ends in a clean detach and a `stop` event.
    let mut signals = Signals::new()?;
    let second_signal = second_signal::SecondSignal::watch(sink, logs)?;
    let ticks_per_window = config.ticks_per_window();
    let duty = DutyCycle::new(ticks_per_window, config.duty_fraction);
    report_duty(&config, &duty);

    // Prometheus metrics, counted from every event from the first on. Bound before anything with
    // side effects, so that an address in use stops the agent before it reconciles the journal.
    // Served from a thread of their own, so that a stuck loop shows as a growing age of the last
    // window rather than as failed scrapes, until `run` returns (the server is dropped).
    let metrics_server = match config.metrics {
        Some(addr) => Some(crate::output::metrics::MetricsServer::start(addr)?),
        None => None,
    };
    // Its scrapes are timed by the request-latency sensor like any service's requests, but are
    // not the host's work: `joules_per_request` leaves them out. The port bound (`:0` picks one),
    // and the family: a service of the other family may listen on the same port number.
    let own_endpoint = metrics_server
        .as_ref()
        .map(crate::output::metrics::MetricsServer::local_addr)
        .zip(crate::policy::own_netns_inode())
        .map(|(addr, netns)| (netns, addr.port(), crate::window::family_of(&addr)));
    let metrics = metrics_server
        .as_ref()
        .map(crate::output::metrics::MetricsServer::metrics);
    if let Some(metrics) = &metrics {
        sink.set_metrics(metrics.clone());
    }
    // The deciding half first: without its journal and socket the agent must not start.
    let (mut deciding, reconciled) = Deciding::open(&args.state, &config, args.recommend_only)?;
    deciding.set_own_endpoint(own_endpoint);
    if let Some(metrics) = &metrics {
        metrics
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .register_approval_webhook(deciding.webhook_outcomes());
    }

    // Sensors.
    let mut sensors = Sensors::load(&sensor_options(&config));
    // People's sysctl writes, so that KPO yields to them.
    let mut sysctl_watch = match crate::sensors::sysctl_watch::this_cgroup2_mount()
        .and_then(|mount| Ok((sensors.attach_sysctl_watch(&mount.path)?, mount)))
    {
        Ok((watch, mount)) => {
            use crate::sensors::sysctl_watch::in_own_cgroup_namespace;
            if mount.at_namespace_root && in_own_cgroup_namespace() == Some(true) {
                warn!(
                    "sysctl watch: the agent is in a cgroup namespace of its own (a \
                     container's), and {} is that namespace's root, so the watch sees only the \
                     sysctl writes of processes in it; others' changes are found by comparing \
                     values each window (run it in the host's cgroup namespace, e.g. docker or \
                     podman --cgroupns=host, or mount the host's cgroup2 hierarchy into it, to \
                     see them as they happen)",
                    mount.path.display()
                );
            } else {
                // Said as each sensor is (`sensor on`): after README's remedy for `ip netns exec`
                // only a missing warning told that it worked (s55 story AV-5).
                info!(
                    "sysctl watch on: sysctl writes are seen as they happen, under the cgroup2 \
                     hierarchy at {}",
                    mount.path.display()
                );
            }
            Some(watch)
        }
        Err(e) => {
            warn!("sysctl watch off: {e}");
            None
        }
    };
    let mut notable = NotableStream::take(&mut sensors);
    let _ebpf_log = crate::sensors::ebpf_log::spawn(&mut sensors);
    // Energy: chosen before the first window; measured sources are checked with a moment of CPU
    // work.
    let energy_choice = choose_meter(
        std::path::Path::new(SYS_ROOT),
        &config.proc_root,
        PowerModel::default(),
        config.tick,
    );
    let energy_source = EnergySourceChoice::new(&energy_choice);
    // In the log too: an operator reading it should not need the event stream to know whether
    // the figures are measured or estimated, and why.
    match &energy_source.source {
        Some(source) => info!(
            %source,
            domains = ?energy_source.domains,
            // A reason that names its source already is not prefixed again (s60 story BT-1).
            skipped = ?energy_source.skipped.iter().map(|s| {
                let source = format!("{}: ", s.source);
                format!("{source}{}", s.reason.strip_prefix(&source).unwrap_or(&s.reason))
            }).collect::<Vec<_>>(),
            "energy source"
        ),
        None => warn!(
            error = energy_source.error.as_deref().unwrap_or(""),
            "no energy source: windows carry no energy figure"
        ),
    }
    let (proc_root, tick) = (config.proc_root.clone(), config.tick);
    let mut energy = MeterWatch::new(
        energy_choice.ok().map(|choice| choice.meter),
        Box::new(move |after| {
            choose_meter_after(
                Some(after),
                std::path::Path::new(SYS_ROOT),
                &proc_root,
                PowerModel::default(),
                tick,
                &mut || busy_work(PROBE_WORK),
            )
        }),
    );
    sink.send(&Event::Start {
        version: env!("CARGO_PKG_VERSION"),
        commit: env!("KPO_COMMIT"),
        pid: std::process::id(),
        tick_s: config.tick.as_secs_f64(),
        window_s: config.window.as_secs_f64(),
        duty_fraction: config.duty_fraction,
        energy: energy_source,
        policy: deciding.change_path().policy.origin.to_string(),
        recommend_only: args.recommend_only,
        paused: (deciding.change_path().journal.paused())
            .map(|(by, ts)| format!("{by} at {}", crate::journal::format_ms(*ts))),
    });
    for event in reconciled {
        sink.send(&event);
    }
    let mut mark = offline_changes::MarkKeeper::default();
    mark.after_queued(&mut deciding, sink);
    let mut reported = sensor_report(&sensors, &config);
    sink.send(&Event::Sensors {
        sensors: reported.clone(),
    });

    // Collect, then windows; the first sample is the first window's baseline.
    let mut collector = Collector::new(sensors, config.proc_root.clone(), config.window);
    let mut pressure = PressureWatch::new(ticks_per_window);
    // What the first tick samples is attached before the baseline's read, not after it as at
    // every other tick: what it counts before that read is in the baseline, which windows count
    // from, so at a duty fraction of 1 the sensors count the whole of every window.
    duty.after_read(&mut collector.sensors, 0, false);
    // The meter's interval starts with the first window. Read just before each sample, as every
    // window's: a sample is stamped when it starts, and the work after it (a sock_diag walk, the
    // tick's rules, a window's decisions) would otherwise move energy between windows, by up to
    // a tick on a loaded machine.
    let _ = energy.read();
    let mut windows = Windows::new(collector.sample(), ticks_per_window);

    let mut pace = pace::Pace::new(config.window);
    let mut interval = tokio::time::interval(config.tick);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    interval.tick().await; // the first tick completes at once
    info!(tick = ?config.tick, window = ?config.window, "kpo running");

    let ended: anyhow::Result<&'static str> = loop {
        tokio::select! {
            _ = interval.tick() => if let Err(e) = stage("the tick", || {
                // People's sysctl writes since the last tick, before anything of KPO's acts on
                // this tick: a rule or the guard must not overwrite a value that is theirs now.
                if let Some(watch) = sysctl_watch.as_mut() {
                    for event in deciding.on_sysctl_writes(&watch.drain()) {
                        sink.send(&event);
                    }
                }
                let next = windows.next_tick();
                // Sensors: what the next tick leaves off is detached before the read.
                let attached = duty.before_read(
                    &mut collector.sensors,
                    next,
                    pressure.stays_escalated(),
                );
                // Energy at the sample's instant (above): the window's reading when this tick
                // closes one, else a measured counter's tick reading (see CheckedMeter).
                let window_energy = if windows.closes_with_next_push() {
                    energy.read()
                } else {
                    energy.sample();
                    None
                };
                // Collect.
                let mut sample = collector.sample();
                attached.stamp(&mut sample);
                pressure.observe(windows.last_sample(), &sample);
                // Without the eBPF hook this tick, or its ring buffer, a full queue is seen only
                // here.
                for full in notable.full_from_tick(&sample) {
                    sink.send(&full.into());
                }
                // Rules that react within a tick (advise → policy → actuate).
                for event in deciding.on_tick(windows.last_sample(), &sample) {
                    sink.send(&event);
                }
                // Window.
                if let Some(mut window) = windows.push(sample) {
                    pace.window_closed(&window);
                    // Energy over the same span; then the deciding half: the guard judges the
                    // changes it watches, the rules advise, the policy decides, actuators act.
                    let set_aside =
                        add_energy(&mut window, &mut energy, window_energy, own_endpoint);
                    let judged = window.without_endpoint(own_endpoint);
                    let decided = deciding.on_window(&judged);
                    if let Some(metrics) = &metrics {
                        let (pending, quarantines) = deciding.held();
                        (metrics.lock())
                            .unwrap_or_else(std::sync::PoisonError::into_inner)
                            .set_held(pending, quarantines);
                    }
                    // The LLM advisor: consulted off the loop when due.
                    llm.after_window(windows.count, &judged, &deciding);
                    drop(judged);
                    sink.send(&Event::Window { partial: false, window: Box::new(window) });
                    if let Some(set_aside) = set_aside {
                        sink.send(&energy_source_set_aside(&energy, set_aside));
                    }
                    for event in decided {
                        sink.send(&event);
                    }
                    mark.after_queued(&mut deciding, sink);
                }
                // Sensors: what the next tick samples is attached after the read.
                duty.after_read(&mut collector.sensors, next, pressure.escalated());
                let status = sensor_report(&collector.sensors, &config);
                if status != reported {
                    reported = status;
                    sink.send(&Event::Sensors { sensors: reported.clone() });
                }
            }) {
                break Err(e);
            },
            batch = notable.next() => {
                let batch = match batch {
                    Ok(batch) => batch,
                    Err(e) => break Err(e.into()),
                };
                if let Err(e) = stage("a kernel notice", || {
                    let listening = kpo_common::NotableKind::Listening as u32;
                    let (new, full): (Vec<_>, Vec<_>) =
                        batch.into_iter().partition(|e| e.kind == listening);
                    let keys: Vec<_> = new.iter().map(|e| e.key).collect();
                    collector.time_listeners(&keys);
                    for event in full {
                        let full = ListenerFull::from_notable(&event, windows.last_sample());
                        sink.send(&full.into());
                    }
                }) {
                    break Err(e);
                }
            }
            consultation = llm.finished() => if let Err(e) = stage("the LLM's advice", || {
                for event in llm.settle(consultation, &mut deciding) {
                    sink.send(&event);
                }
            }) {
                break Err(e);
            },
            Some(incoming) = deciding.next_request() => if let Err(e) = stage("an operator's request", || {
                for event in deciding.serve(incoming) {
                    sink.send(&event);
                }
            }) {
                break Err(e);
            },
            signal = signals.recv() => match signal {
                Sig::Hup => if let Err(e) = stage("SIGHUP", || {
                    info!("SIGHUP: re-opening the event stream {}", sink.destination());
                    sink.reopen();
                    if let Some(edited) = args.config_edited_note(&config) {
                        warn!("SIGHUP: {edited}");
                    }
                    for event in deciding.reload_policy(&config) {
                        sink.send(&event);
                    }
                }) {
                    break Err(e);
                },
                Sig::Term => break Ok("SIGTERM"),
                Sig::Int => break Ok("SIGINT"),
            },
            reason = sink.failed() => break Err(anyhow::anyhow!("{reason}")),
        }
    };

    second_signal.set_windows(windows.count);
    match &ended {
        Ok(signal) => info!(
            "{signal}: stopping (last window, on_exit); a second SIGINT or SIGTERM stops at once"
        ),
        Err(_) => second_signal.loop_failed(),
    }
    llm.stop();
    deciding.turn_away_requests().await;
    let reason = match ended {
        Ok(reason) => reason,
        Err(e) => {
            // Stopped by a failure (the event stream's reader gone, the kernel's ring buffer, a
            // stage that panicked): `on_exit` still holds, and its reverts are journaled even
            // where their events cannot be written. No partial window: the collector may be
            // what failed.
            collector.sensors.detach_all();
            carry_out_on_exit(&mut deciding, sink);
            deciding.finish_webhook().await;
            sink.send_last(&Event::Stop {
                reason: format!("error: {e:#}"),
                windows: windows.count,
            });
            drop(second_signal);
            return Err(e);
        }
    };
    // The partial window: detach the duty-cycled sensors, read once more, then the rest. A stage
    // like the loop's: its panic (a defect) must not unwind past `on_exit` and the `stop` event.
    let last_window = stage("the last window", || {
        let attached = duty.before_last_read(&mut collector.sensors);
        let last_energy = energy.read();
        let mut sample = collector.sample();
        attached.stamp(&mut sample);
        if let Some(mut window) = windows.finish_partial(sample) {
            // The last window: nothing is set aside (choosing another source would only hold up
            // the exit).
            add_last_energy(&mut window, &energy, last_energy, own_endpoint);
            sink.send(&Event::Window {
                partial: true,
                window: Box::new(window),
            });
        }
    });
    if let Err(e) = last_window {
        tracing::error!("{e:#}; no partial window");
    }
    second_signal.set_windows(windows.count);
    collector.sensors.detach_all();
    carry_out_on_exit(&mut deciding, sink);
    deciding.finish_webhook().await;
    sink.send_last(&Event::Stop {
        reason: reason.into(),
        windows: windows.count,
    });
    mark.at_stop(&mut deciding, sink, MARK_WAIT);
    drop(second_signal);
    Ok(reason)
}

/// `on_exit`, whose panic (a defect) is logged rather than unwinding past the `stop` event.
fn carry_out_on_exit(deciding: &mut Deciding, sink: &mut EventSink) {
    match stage("on_exit", || deciding.on_exit()) {
        Ok(events) => {
            for event in events {
                sink.send(&event);
            }
        }
        Err(e) => tracing::error!("{e:#}; parameters it had not put back yet stay as they are"),
    }
}

/// Runs one stage of the loop, turning a panic into an error: the loop then stops the way it
/// stops on any failure, with `on_exit` carried out, rather than unwinding past it and leaving
/// trials and `on_exit = "revert"` values in the kernel. The panic's message and place are on
/// stderr already (the panic hook).
fn stage<T>(what: &str, f: impl FnOnce() -> T) -> anyhow::Result<T> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).map_err(|payload| {
        let message = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic without a message".into());
        anyhow::anyhow!("{what} panicked: {message}")
    })
}

/// The meter's reading since the previous window closed, as the window's `energy`; and the
/// source, if this window was the last it was given to give a figure ([`MeterWatch`]).
fn add_energy(
    window: &mut Window,
    energy: &mut MeterWatch,
    reading: Option<Result<EnergyReading, EnergyError>>,
    own_endpoint: Option<crate::window::Endpoint>,
) -> Option<SetAside> {
    let (Some(reading), Some(meter)) = (reading, energy.meter()) else {
        window.energy = None;
        return None;
    };
    let w = WindowEnergy::new(meter, reading, window, own_endpoint);
    let figure = match &w.error {
        Some(e) => Err(e.clone()),
        None => Ok(()),
    };
    window.energy = Some(w);
    energy.after_window(figure)
}

/// The meter's reading over the partial window at shutdown.
fn add_last_energy(
    window: &mut Window,
    energy: &MeterWatch,
    reading: Option<Result<EnergyReading, EnergyError>>,
    own_endpoint: Option<crate::window::Endpoint>,
) {
    window.energy = reading
        .zip(energy.meter())
        .map(|(reading, meter)| WindowEnergy::new(meter, reading, window, own_endpoint));
}

/// The `energy_source` event for a source set aside mid-run, logged too.
fn energy_source_set_aside(energy: &MeterWatch, set_aside: SetAside) -> Event {
    warn!(
        from = %set_aside.from,
        to = %energy.meter().map_or("none", |m| m.source().as_str()),
        reason = %set_aside.reason,
        "energy source set aside"
    );
    Event::energy_source(energy, set_aside)
}

/// The window stage's clock: samples into windows of `ticks_per_window` ticks.
struct Windows {
    /// Always Some between calls (closing a window consumes its builder).
    builder: Option<WindowBuilder>,
    ticks_per_window: u64,
    /// Ticks pushed into the current window.
    ticks: u64,
    /// Windows closed, the partial one included.
    count: u64,
}

impl Windows {
    fn new(baseline: Sample, ticks_per_window: u64) -> Self {
        Self {
            builder: Some(WindowBuilder::new(baseline)),
            ticks_per_window,
            ticks: 0,
            count: 0,
        }
    }

    fn builder(&mut self) -> &mut WindowBuilder {
        self.builder.as_mut().expect("a window is open")
    }

    /// Whether the next [`push`](Self::push) completes a window.
    fn closes_with_next_push(&self) -> bool {
        self.ticks + 1 >= self.ticks_per_window
    }

    /// The index, within its window, of the tick after the one now ending.
    fn next_tick(&self) -> u64 {
        (self.ticks + 1) % self.ticks_per_window
    }

    fn last_sample(&self) -> &Sample {
        self.builder
            .as_ref()
            .expect("a window is open")
            .last_sample()
    }

    /// Adds the sample that closes a tick; returns the window it completes, if it does.
    fn push(&mut self, sample: Sample) -> Option<Window> {
        self.builder().push(sample);
        self.ticks += 1;
        if self.ticks < self.ticks_per_window {
            return None;
        }
        self.ticks = 0;
        let (window, next) = self
            .builder
            .take()?
            .finish_and_continue()
            .expect("a window has ticks");
        self.builder = Some(next);
        self.count += 1;
        Some(window)
    }

    /// The last, shorter window at shutdown (counted).
    fn finish_partial(&mut self, sample: Sample) -> Option<Window> {
        let mut builder = self.builder.take()?;
        builder.push(sample);
        let (window, _) = builder.finish()?;
        self.count += 1;
        Some(window)
    }
}

/// Sensor options from the configuration. A duty fraction of 0 never attaches the duty-cycled
/// sensors (the accept queue's still attaches under pressure), so they are not even loaded.
fn sensor_options(config: &Config) -> SensorOptions {
    let mut opts = SensorOptions::new(config.btf.clone());
    opts.disabled = config.disabled();
    if config.duty_fraction <= 0.0 {
        opts.never_sampled.extend(never_sampled());
    }
    opts
}

/// Whether `kind` is attached only during part of each window when the duty cycle samples `on`
/// of its `ticks` ticks (the `sensors` event's `duty_cycled`): a duty-cycled kind sampled on fewer
/// than all of them, where all of them (a fraction of 1, or a window of one tick) keep it
/// attached, and none keep it off, but the accept queue's hook, which then attaches under
/// pressure only. It said the kind's nature, `true` at a fraction of 1 (s45 storyE).
fn attached_part_of_each_window(kind: SensorKind, on: u64, ticks: u64) -> bool {
    kind.duty_cycled() && on < ticks && (on > 0 || kind == SensorKind::AcceptQueue)
}

/// The sensors a duty fraction of 0 leaves off.
fn never_sampled() -> impl Iterator<Item = SensorKind> {
    SensorKind::ALL
        .into_iter()
        .filter(|k| k.duty_cycled() && *k != SensorKind::AcceptQueue)
}

/// What the `sensors` event says: the sensors' own status, each said duty-cycled or not at the
/// fraction in force.
fn sensor_report(sensors: &Sensors, config: &Config) -> Vec<SensorStatus> {
    let mut status = sensors.status().to_vec();
    let on = crate::config::duty_ticks(config.ticks_per_window(), config.duty_fraction);
    for s in &mut status {
        s.duty_cycled =
            s.enabled && attached_part_of_each_window(s.sensor, on, config.ticks_per_window());
    }
    status
}

fn report_duty(config: &Config, duty: &DutyCycle) {
    if let Some(warning) = duty_warning(config, duty) {
        warn!("{warning}");
    }
}

/// A fraction below one tick samples more than asked, which is said, unless the configuration
/// keeps every duty-cycled sensor off (nothing is sampled then).
fn duty_warning(config: &Config, duty: &DutyCycle) -> Option<String> {
    let ticks = config.ticks_per_window();
    let wanted = ticks as f64 * config.duty_fraction;
    let disabled = config.disabled();
    let none_sampled = SensorKind::ALL
        .into_iter()
        .filter(|k| k.duty_cycled())
        .all(|k| disabled.contains(&k));
    (config.duty_fraction > 0.0 && wanted < 1.0 && !none_sampled).then(|| {
        format!(
            "duty_fraction {} of {ticks} ticks per window is less than one tick: sampling {} tick \
             per window ({:.3} of it)",
            config.duty_fraction,
            duty.ticks_on(),
            duty.ticks_on() as f64 / ticks as f64
        )
    })
}

enum Sig {
    Term,
    Int,
    Hup,
}

struct Signals {
    term: Signal,
    int: Signal,
    hup: Signal,
}

impl Signals {
    fn new() -> std::io::Result<Self> {
        Ok(Self {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            hup: signal(SignalKind::hangup())?,
        })
    }

    async fn recv(&mut self) -> Sig {
        tokio::select! {
            _ = self.term.recv() => Sig::Term,
            _ = self.int.recv() => Sig::Int,
            _ = self.hup.recv() => Sig::Hup,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collect::pressure_watch::tests::sample;

    /// s45 storyE: at `--duty-fraction 1` the `sensors` event said `duty_cycled: true` of
    /// sensors attached the whole window (`sampled_fraction` 1), and of sensors a fraction of 0
    /// keeps off.
    #[test]
    fn duty_cycled_says_whether_a_sensor_is_attached_only_part_of_each_window() {
        let at = |ticks: u64, fraction: f64| -> Vec<&str> {
            let on = crate::config::duty_ticks(ticks, fraction);
            SensorKind::ALL
                .into_iter()
                .filter(|&k| attached_part_of_each_window(k, on, ticks))
                .map(|k| k.name())
                .collect()
        };
        let cycled = [
            "accept_queue",
            "softirq",
            "napi",
            "sched",
            "request_latency",
        ];
        assert_eq!(at(10, 0.05), cycled);
        assert_eq!(at(10, 0.9), cycled);
        assert!(at(10, 1.0).is_empty(), "{:?}", at(10, 1.0));
        // Whole ticks, rounded down, at least one: 0.99 of 10 ticks is 9, of 2 ticks 1.
        assert_eq!(at(10, 0.99), cycled);
        assert_eq!(at(2, 0.99), cycled);
        // A window of one tick: every fraction above 0 samples it whole (the review of 66efb0a).
        assert!(at(1, 0.05).is_empty());
        assert_eq!(at(10, 0.0), ["accept_queue"], "under pressure only");
    }

    /// Defect: a panic in a stage unwound out of the loop, past `on_exit`, leaving trials and
    /// `on_exit = "revert"` values in the kernel; it is now the loop's error.
    #[test]
    fn a_stage_that_panics_is_an_error_naming_the_stage_and_the_message() {
        assert_eq!(stage("the tick", || 7).unwrap(), 7);
        let e = stage("the tick", || -> u32 { panic!("boom") }).unwrap_err();
        assert_eq!(e.to_string(), "the tick panicked: boom");
        let n = 3;
        let e = stage("an operator's request", || -> u32 {
            panic!("index {n} out of range")
        })
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "an operator's request panicked: index 3 out of range"
        );
    }

    #[test]
    fn windows_close_every_n_ticks_and_name_the_next_tick() {
        let mut windows = Windows::new(sample(0, 128, 0), 3);
        let mut closed = Vec::new();
        for _ in 0..7 {
            let next = windows.next_tick();
            closed.push((next, windows.push(sample(0, 128, 0)).is_some()));
        }
        assert_eq!(
            closed,
            [
                (1, false),
                (2, false),
                (0, true),
                (1, false),
                (2, false),
                (0, true),
                (1, false)
            ]
        );
        assert_eq!(windows.count, 2);
        assert!(windows.finish_partial(sample(0, 128, 0)).is_some());
        assert_eq!(windows.count, 3, "the partial window counts");
    }

    /// Defect (review s36 run): with every duty-cycled sensor disabled, the agent still warned
    /// that it samples one tick per window, more than asked, when it samples nothing.
    #[test]
    fn no_duty_warning_when_every_duty_cycled_sensor_is_disabled() {
        let all: Vec<String> = SensorKind::ALL
            .into_iter()
            .filter(|k| k.duty_cycled())
            .map(|k| k.name().to_string())
            .collect();
        let mut config = Config {
            tick: Duration::from_secs(1),
            window: Duration::from_secs(2),
            duty_fraction: 0.05,
            ..Config::default()
        };
        let duty = DutyCycle::new(config.ticks_per_window(), config.duty_fraction);
        assert_eq!(
            duty_warning(&config, &duty).as_deref(),
            Some(
                "duty_fraction 0.05 of 2 ticks per window is less than one tick: sampling 1 tick \
                 per window (0.500 of it)"
            )
        );
        config.disabled_sensors = all[1..].to_vec();
        assert!(
            duty_warning(&config, &duty).is_some(),
            "one is still sampled"
        );
        config.disabled_sensors = all;
        assert_eq!(duty_warning(&config, &duty), None);
    }

    #[test]
    fn a_zero_duty_fraction_leaves_the_duty_cycled_sensors_unloaded() {
        let config = Config {
            duty_fraction: 0.0,
            disabled_sensors: vec!["napi".into()],
            ..Config::default()
        };
        let opts = sensor_options(&config);
        for kind in [
            SensorKind::Softirq,
            SensorKind::Napi,
            SensorKind::Sched,
            SensorKind::RequestLatency,
        ] {
            assert!(opts.never_sampled.contains(&kind), "{kind:?}");
        }
        // The operator's own list stays theirs (its reason: disabled by configuration); the
        // fraction's are said as the fraction's, in the start's log as in the event (s44).
        assert_eq!(opts.disabled, [SensorKind::Napi]);
        assert!(!opts.never_sampled.contains(&SensorKind::AcceptQueue));
        let default = sensor_options(&Config::default());
        assert!(default.never_sampled.is_empty() && default.disabled.is_empty());
    }
}
