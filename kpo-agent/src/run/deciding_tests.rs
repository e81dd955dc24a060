//! The agent's deciding half ([`Deciding::on_window`], [`Deciding::serve`]): the optimizer's live
//! loop and the guard, against
//! the real cpufreq actuator on a temporary sysfs tree and a fake coalescing backend, behind the
//! real policy, journal (a temporary state directory) and guard. Windows are synthetic: the
//! request latency and the energy follow from the values the fake knobs hold.
use std::{
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use super::deciding::Deciding;
use crate::{
    actuate::{
        coalesce::{AdaptiveMode, CoalesceActuator, CoalesceSettings, FakeCoalesce},
        cpufreq::CpufreqActuator,
        param::{ParamAddress, ParamKind, Value},
        sysctl::SysctlActuator,
        ActuateError, Actuator, Roots,
    },
    advise::optimizer::live::LiveEvent,
    change::{Actuators, ChangePath},
    collect::procfs::{HostMetrics, HostSnapshot},
    config::Config,
    energy::EnergySource,
    journal::{format_ms, Holder, IntentKind, Journal, Outcome, Record},
    output::{change_events::ChangePhase, events::Event},
    policy::{HealthSignal, Policy, Source},
    window::{energy::WindowEnergy, hist::LatencySummary, RequestLatencyWindow, Window},
};

const MAX_FREQ: &str = "cpufreq:policy0:scaling_max_freq";
const RX: &str = "ethtool:eth0:rx-usecs";
const PORT: u16 = 8080;
const SLO_US: f64 = 300.0;
/// Who the kernel says is on the other end of the socket in these tests.
const CALLER: &str = "operator tester (uid 0, pid 4242)";

/// The policy that gives the optimizer both knobs; `extra` goes into the cpufreq entry.
fn policy(extra: &str) -> String {
    format!(
        r#"
[guard]
max_changes_per_hour = 1000

[params."cpufreq:*:scaling_max_freq"]
mode = "auto"
min = 1200000
max = 3000000
sources = ["optimizer"]
{extra}

[params."ethtool:eth0:rx-usecs"]
mode = "auto"
min = 0
max = 100
sources = ["optimizer"]
"#
    )
}

/// cpufreq and sysctls from the temporary tree, coalescing from the fake.
struct TestActuators {
    roots: Roots,
    nic: FakeCoalesce,
    after_read: AfterRead,
}

/// Done once, right after the next read of this parameter through an actuator: a person's write
/// landing between two of the agent's reads (its check of the values, then its revert).
type AfterRead = Arc<Mutex<Option<(ParamAddress, Box<dyn FnOnce() + Send>)>>>;

/// An actuator whose reads of its parameter may be followed by [`AfterRead`]'s write.
struct Hooked {
    inner: Box<dyn Actuator>,
    after_read: AfterRead,
}

impl Actuator for Hooked {
    fn address(&self) -> &ParamAddress {
        self.inner.address()
    }

    fn read(&mut self) -> Result<Value, ActuateError> {
        let value = self.inner.read();
        let mut hook = self.after_read.lock().unwrap();
        if hook
            .as_ref()
            .is_some_and(|(a, _)| a == self.inner.address())
        {
            let (_, write) = hook.take().unwrap();
            write();
        }
        value
    }

    fn validate(&mut self, value: &Value) -> Result<(), ActuateError> {
        self.inner.validate(value)
    }

    fn validate_alone(&mut self, value: &Value) -> Result<(), ActuateError> {
        self.inner.validate_alone(value)
    }

    fn apply(&mut self, value: &Value) -> Result<Value, ActuateError> {
        self.inner.apply(value)
    }

    fn revert(&mut self, original: &Value) -> Result<Value, ActuateError> {
        self.inner.revert(original)
    }

    fn netns_cookie(&self) -> Option<u64> {
        self.inner.netns_cookie()
    }

    fn set_adaptive_off_allowed(&mut self, allowed: bool) {
        self.inner.set_adaptive_off_allowed(allowed)
    }

    fn switch_in_the_way(&mut self) -> Result<Option<(ParamAddress, Value)>, ActuateError> {
        self.inner.switch_in_the_way()
    }

    fn device_seen(&mut self) -> Option<crate::actuate::coalesce::DeviceSeen> {
        self.inner.device_seen()
    }

    fn held_by_driver_under_performance(&mut self) -> bool {
        self.inner.held_by_driver_under_performance()
    }
}

impl Actuators for TestActuators {
    fn coalesce_backend(
        &self,
    ) -> Result<Box<dyn crate::actuate::coalesce::CoalesceAttrBackend>, ActuateError> {
        Ok(Box::new(self.nic.clone()))
    }

    fn open(&self, address: &ParamAddress) -> Result<Box<dyn Actuator>, ActuateError> {
        let inner: Box<dyn Actuator> = match address.kind() {
            ParamKind::Cpufreq => Box::new(CpufreqActuator::open(address, &self.roots)?),
            ParamKind::Ethtool => Box::new(CoalesceActuator::with_backend(
                address,
                Box::new(self.nic.clone()),
                AdaptiveMode::Respect,
            )?),
            // The host's keys under the temporary tree's `proc_sys`.
            ParamKind::Sysctl => Box::new(SysctlActuator::open(address, &self.roots)?),
        };
        Ok(Box::new(Hooked {
            inner,
            after_read: self.after_read.clone(),
        }))
    }
}

/// The deciding half over `tmp`'s state directory and sysfs tree and the fake NIC. It waits for
/// the state directory's lock a little, as a restarted agent would for the one it replaces.
fn open_deciding(
    tmp: &Path,
    policy_text: &str,
    nic: &FakeCoalesce,
    after_read: &AfterRead,
) -> Deciding {
    let journal = Journal::open(&tmp.join("state"), Holder::Agent, Duration::from_secs(5)).unwrap();
    let policy = Policy::parse(policy_text, "policy.toml").unwrap();
    let actuators = TestActuators {
        roots: Roots {
            proc_sys: tmp.join("proc_sys"),
            sys: tmp.join("sys"),
        },
        nic: nic.clone(),
        after_read: after_read.clone(),
    };
    let path = ChangePath::new(policy, journal, Box::new(actuators));
    Deciding::with_path(path, false).unwrap().0
}

struct Rig {
    _tmp: tempfile::TempDir,
    policy_text: String,
    config: Config,
    max_freq_file: PathBuf,
    nic: FakeCoalesce,
    after_read: AfterRead,
    deciding: Deciding,
    /// Every event so far, as written to the stream.
    json: Vec<serde_json::Value>,
    /// Every optimizer event so far.
    live: Vec<LiveEvent>,
    /// Energy in the windows is an estimate.
    estimated: bool,
    /// The windows' energy reads 0 J (an objective that is not a positive number).
    zero_joules: bool,
    /// Microseconds added to the windows' p99: a load the knobs do not explain.
    extra_p99_us: f64,
    /// Requests the latency sensor times in each window (none: no entry for the port).
    timed_requests: u64,
}

impl Rig {
    /// policy0 at 3000 MHz (range 1200..3000 MHz), eth0 at rx-usecs 0.
    fn new(policy_text: &str, with_cpufreq: bool, settings: &str) -> Rig {
        Self::with_top(policy_text, with_cpufreq, "", settings)
    }

    /// [`Rig::new`] with `top`, keys of kpo.toml outside `[optimizer]`.
    fn with_top(policy_text: &str, with_cpufreq: bool, top: &str, settings: &str) -> Rig {
        let tmp = tempfile::tempdir().unwrap();
        let sys = tmp.path().join("sys");
        let dir = sys.join("devices/system/cpu/cpufreq/policy0");
        if with_cpufreq {
            crate::actuate::cpufreq::fake_policy(&sys, 0, 1_200_000, 3_000_000, 3_000_000);
        } else {
            std::fs::create_dir_all(sys.join("devices/system/cpu")).unwrap();
        }
        let nic = FakeCoalesce::new();
        nic.add_nic(
            "eth0",
            CoalesceSettings {
                rx_usecs: 0,
                adaptive_rx: false,
            },
        );
        let after_read = AfterRead::default();
        let mut deciding = open_deciding(tmp.path(), policy_text, &nic, &after_read);
        let config = Config::from_toml(
            &format!(
                "sysfs_root = {:?}\n{top}[optimizer]\nslo_port = {PORT}\nslo_max_us = {SLO_US}\n\
                 levels = 6\n{settings}",
                sys.display().to_string()
            ),
            "kpo.toml",
        )
        .unwrap();
        config.validate("kpo.toml").unwrap();
        let started = deciding.start_optimizer(&config);
        let mut rig = Rig {
            max_freq_file: dir.join("scaling_max_freq"),
            _tmp: tmp,
            policy_text: policy_text.to_string(),
            config,
            nic,
            after_read,
            deciding,
            json: Vec::new(),
            live: Vec::new(),
            estimated: false,
            zero_joules: false,
            extra_p99_us: 0.0,
            timed_requests: 1000,
        };
        rig.record(&started);
        rig
    }

    /// The agent killed and started again over the same state directory, kernel and policy:
    /// the old deciding half is dropped without `on_exit`, and the new one has seen no window.
    fn restarted(self) -> Rig {
        self.restarted_after(|_| {})
    }

    /// [`Rig::restarted`], with `meanwhile` done to the state directory while the agent is down.
    fn restarted_after(self, meanwhile: impl FnOnce(&Path)) -> Rig {
        let Rig {
            _tmp,
            policy_text,
            config,
            max_freq_file,
            nic,
            after_read,
            deciding,
            json,
            live,
            estimated,
            zero_joules,
            extra_p99_us,
            timed_requests,
        } = self;
        drop(deciding);
        meanwhile(&_tmp.path().join("state"));
        let mut deciding = open_deciding(_tmp.path(), &policy_text, &nic, &after_read);
        let started = deciding.start_optimizer(&config);
        let mut rig = Rig {
            _tmp,
            policy_text,
            config,
            max_freq_file,
            nic,
            after_read,
            deciding,
            json,
            live,
            estimated,
            zero_joules,
            extra_p99_us,
            timed_requests,
        };
        rig.record(&started);
        rig
    }

    /// Policies 1..n beside policy0 in the temporary cpufreq tree, alike (intel_pstate has one
    /// per CPU); the loop sees them at its next start. The tree's directory.
    fn more_policies(&self, n: usize) -> PathBuf {
        let base = self._tmp.path().join("sys/devices/system/cpu/cpufreq");
        for i in 1..n {
            let dir = base.join(format!("policy{i}"));
            std::fs::create_dir_all(&dir).unwrap();
            for f in [
                "cpuinfo_min_freq",
                "cpuinfo_max_freq",
                "scaling_min_freq",
                "scaling_max_freq",
            ] {
                std::fs::copy(base.join("policy0").join(f), dir.join(f)).unwrap();
            }
        }
        base
    }

    /// The optimizer's latest `started` event.
    fn last_started(&self) -> serde_json::Value {
        self.json
            .iter()
            .rev()
            .find(|e| e["event"] == "started")
            .expect("a started event")
            .clone()
    }

    /// The optimizer's search space (its knobs' levels); panics without a loop.
    fn space(&self) -> crate::advise::optimizer::space::Space {
        self.deciding
            .optimizer_for_tests()
            .expect("a loop")
            .live()
            .optimizer()
            .space()
            .clone()
    }

    /// The latest `started` event's `left_out`, as text, after checking it started over `knobs`.
    fn left_out_of_start_over(&self, knobs: &[&str]) -> String {
        let started = self.last_started();
        assert_eq!(started["knobs"], serde_json::json!(knobs), "{started}");
        started["left_out"].to_string()
    }

    fn max_freq(&self) -> i64 {
        std::fs::read_to_string(&self.max_freq_file)
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    }

    /// eth0's rx-usecs; 0 once it is gone (no interrupt delay of its own).
    fn rx(&self) -> u32 {
        self.nic.settings("eth0").map_or(0, |s| s.rx_usecs)
    }

    /// The p99 a window reports under the knobs' values now: `80 + 2 rx + 216000 / MHz` µs (the
    /// SLO of 300 µs rules out long interrupt delays at low frequency).
    fn p99(&self) -> f64 {
        80.0 + 2.0 * self.rx() as f64 + 216_000.0 / (self.max_freq() as f64 / 1000.0)
    }

    /// Whether the loop has said so, in any event so far.
    fn saw(&self, f: impl Fn(&LiveEvent) -> bool) -> bool {
        self.live.iter().any(f)
    }

    /// One window under the knobs' values now: p99 as [`Rig::p99`], 1000 requests, joules per
    /// request lowest at (40 µs, 1800 MHz).
    /// One window's `guard` events.
    fn window_guard_events(&mut self) -> Vec<crate::guard::GuardEvent> {
        self.window()
            .into_iter()
            .filter_map(|e| match e {
                Event::Guard(g) => Some(g),
                _ => None,
            })
            .collect()
    }

    /// The `guard` events of the first window, of at most `windows`, that has any.
    fn first_guard_events(&mut self, windows: usize) -> Vec<crate::guard::GuardEvent> {
        (0..windows)
            .map(|_| self.window_guard_events())
            .find(|events| !events.is_empty())
            .unwrap_or_default()
    }

    fn window(&mut self) -> Vec<Event> {
        let (rx, mhz) = (self.rx() as f64, self.max_freq() as f64 / 1000.0);
        let p99 = self.p99() + self.extra_p99_us;
        let joules = if self.zero_joules { 0.0 } else { 1000.0 }
            * (1.0 + 0.8 * ((mhz - 1800.0) / 1000.0).powi(2) + 0.5 * ((rx - 40.0) / 50.0).powi(2));
        let t = Instant::now();
        let window = Window {
            start: "2026-12-01T05:00:00Z".into(),
            end: "2026-12-01T05:00:01Z".into(),
            duration_s: 1.0,
            longest_tick_s: 1.0,
            sampled_fraction: 1.0,
            accept_queue_sampled_fraction: 1.0,
            listeners: vec![],
            listener_full_lost: Some(0),
            netns: vec![],
            irqs: vec![],
            irqs_rest: None,
            softirqs: vec![],
            napi: vec![],
            runq_latency: None,
            sampled_context_switches_per_s: None,
            sampled_context_switches_per_cpu_per_s: None,
            sampled_context_switches_per_cpu_rest: None,
            request_latency: [RequestLatencyWindow {
                netns: 4026531840,
                port: PORT,
                family: "ipv4",
                latency: LatencySummary {
                    samples: self.timed_requests,
                    p50_us: p99 / 2.0,
                    p90_us: p99 * 0.8,
                    p99_us: p99,
                    max_us: p99 * 1.5,
                },
            }]
            .into_iter()
            .filter(|_| self.timed_requests > 0)
            .collect(),
            request_latency_untimed_ports: Some(0),
            system: HostMetrics::between(&HostSnapshot::empty(t), &HostSnapshot::empty(t)),
            energy: Some(WindowEnergy {
                source: if self.estimated {
                    EnergySource::Estimated
                } else {
                    EnergySource::Rapl
                },
                domains: vec!["package-0".into()],
                joules: Some(joules),
                watts: Some(joules),
                joules_per_request: Some(joules / 1000.0),
                error: None,
            }),
        };
        let events = self.deciding.on_window(&window);
        self.record(&events);
        events
    }

    /// `kpo apply` of `scaling_max_freq` through the agent's control socket, as an operator.
    fn operator_sets_max_freq(&mut self, khz: i64) -> crate::api::Reply {
        self.operator_applies(MAX_FREQ, khz)
    }

    /// [`Rig::operator_sets_max_freq`], which must apply: its journal id.
    fn operator_applied_max_freq(&mut self, khz: i64) -> u64 {
        match self.operator_sets_max_freq(khz) {
            crate::api::Reply::Ok(report) => {
                assert_eq!(report["status"], "applied", "{khz}: {report}");
                report["journal_id"].as_u64().unwrap()
            }
            other => panic!("{other:?}"),
        }
    }

    /// `kpo apply ADDRESS=VALUE` through the agent's control socket, as an operator.
    fn operator_applies(&mut self, address: &str, value: i64) -> crate::api::Reply {
        self.operator(crate::api::Request::Apply(crate::control::ApplyRequest {
            address: address.parse().unwrap(),
            value: Value::Int(value.into()),
            reason: "test".into(),
            by: None,
        }))
    }

    fn operator(&mut self, request: crate::api::Request) -> crate::api::Reply {
        let (answer, mut reply) = tokio::sync::oneshot::channel();
        let events = self.deciding.serve(crate::api::server::Incoming {
            request,
            caller: CALLER.into(),
            answer,
            connection: None,
        });
        self.record(&events);
        reply.try_recv().expect("answered")
    }

    fn nic_now(&self) -> CoalesceSettings {
        self.nic.settings("eth0").unwrap()
    }

    fn record(&mut self, events: &[Event]) {
        self.json.extend(as_written(events));
        for e in events {
            if let Event::Optimizer(o) = e {
                self.live.push(o.event.clone());
            }
        }
    }

    /// Windows until `want` holds for a window's events (at most `max` windows).
    fn until(&mut self, max: usize, want: impl Fn(&[Event]) -> bool) -> Vec<Event> {
        for _ in 0..max {
            let events = self.window();
            if want(&events) {
                return events;
            }
        }
        panic!("not within {max} windows; events: {:#?}", self.json);
    }

    fn journal(&self) -> &Journal {
        &self.deciding.path_for_tests().journal
    }

    fn intents(&self) -> Vec<crate::journal::Intent> {
        self.journal()
            .records()
            .iter()
            .filter_map(|r| match r {
                Record::Intent(i) => Some(i.clone()),
                _ => None,
            })
            .collect()
    }

    /// The policy as the agent loaded it from a file at start, so that SIGHUP reads it again.
    fn policy_from_file(&mut self) {
        let file = self._tmp.path().join("policy.toml");
        std::fs::write(&file, &self.policy_text).unwrap();
        self.deciding.path_for_tests_mut().policy = Policy::load(Some(&file)).unwrap();
        self.deciding.set_policy_file_for_tests(file, true);
    }

    /// The policy file edited to `text`, then SIGHUP: the reload's events.
    fn reload(&mut self, text: &str) -> Vec<Event> {
        std::fs::write(self._tmp.path().join("policy.toml"), text).unwrap();
        self.policy_text = text.to_string();
        let events = self.deciding.reload_policy(&self.config);
        self.record(&events);
        events
    }

    /// Every configuration measured within the SLO so far, and its objective.
    fn measured_within_slo(&self) -> Vec<(Vec<f64>, f64)> {
        self.live
            .iter()
            .filter_map(|e| match e {
                LiveEvent::Measured {
                    config,
                    objective,
                    feasible: true,
                    learned: true,
                    ..
                } => Some((config.clone(), *objective)),
                _ => None,
            })
            .collect()
    }

    /// The cheapest configuration measured within the SLO so far that the loop may go back to:
    /// none of its values quarantined by the guard since.
    fn best_measured(&self) -> Option<Vec<f64>> {
        let now = std::time::SystemTime::now();
        let quarantined = |address: &str, v: f64| {
            self.journal()
                .context(&address.parse().unwrap(), &Value::Int(v as i128), now)
                .quarantined_until
                .is_some_and(|until| until > now)
        };
        self.measured_within_slo()
            .into_iter()
            .filter(|(c, _)| !quarantined(MAX_FREQ, c[0]) && !quarantined(RX, c[1]))
            .min_by(|a, b| a.1.total_cmp(&b.1))
            .map(|(config, _)| config)
    }

    /// Windows until a trial is in place (the last window applied one) and `want` holds for the
    /// rig (at most `max` windows).
    fn until_a_trial(&mut self, max: usize, want: impl Fn(&Rig) -> bool) {
        for _ in 0..max {
            let events = self.window();
            if has(&events, |e| matches!(e, LiveEvent::Applied { .. })) && want(self) {
                return;
            }
        }
        panic!("not within {max} windows; events: {:#?}", self.live);
    }

    /// The knobs' values now, as the loop's configurations list them.
    fn config_now(&self) -> Vec<f64> {
        vec![self.max_freq() as f64, self.rx() as f64]
    }

    /// Every event so far is valid against docs/events.schema.json.
    fn assert_schema(&self) {
        assert_valid(&self.json);
    }
}

/// Every event, as written to the stream, is valid against docs/events.schema.json.
fn assert_valid(json: &[serde_json::Value]) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/events.schema.json");
    let schema: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    for e in json {
        let errors: Vec<String> = validator.iter_errors(e).map(|x| x.to_string()).collect();
        assert!(errors.is_empty(), "{errors:#?}\n{e:#}");
    }
}

/// The events as written to the stream.
fn as_written(events: &[Event]) -> Vec<serde_json::Value> {
    events
        .iter()
        .map(|e| {
            let bytes = crate::output::events::encode(e, "test", time::OffsetDateTime::UNIX_EPOCH);
            serde_json::from_slice(&bytes).unwrap()
        })
        .collect()
}

/// The guard's `revert` verdicts among a window's events.
fn guard_reverts(events: &[Event]) -> usize {
    events
        .iter()
        .filter(|e| matches!(e, Event::Guard(g) if matches!(g.verdict, crate::guard::Verdict::Revert { .. })))
        .count()
}

/// The first guard verdict, which must be a revert: its change id, and the signal before and
/// after the change.
fn first_guard_revert(events: &[Event]) -> (u64, f64, f64) {
    match events.iter().find_map(|e| match e {
        Event::Guard(g) => Some(&g.verdict),
        _ => None,
    }) {
        Some(crate::guard::Verdict::Revert {
            change_id,
            before,
            after,
            ..
        }) => (*change_id, *before, *after),
        other => panic!("{other:?}"),
    }
}

fn loop_events(events: &[Event]) -> Vec<&LiveEvent> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Optimizer(o) => Some(&o.event),
            _ => None,
        })
        .collect()
}

fn has(events: &[Event], f: impl Fn(&LiveEvent) -> bool) -> bool {
    loop_events(events).into_iter().any(f)
}

fn last_applied(rig: &Rig, address: &str) -> Option<Value> {
    rig.journal()
        .param_state(&address.parse().unwrap())
        .and_then(|p| p.last_applied.clone())
}

#[test]
fn the_policy_gives_the_optimizer_its_knobs_and_it_starts_from_the_kernel() {
    let rig = Rig::new(&policy(""), true, "");
    assert!(
        matches!(
            rig.live.as_slice(),
            [LiveEvent::Started { config, slo_port: PORT, slo_max_us, left_out, .. }]
                if config == &vec![3_000_000.0, 0.0] && *slo_max_us == SLO_US && left_out.is_empty()
        ),
        "{:?}",
        rig.live
    );
    assert_eq!(rig.json[0]["kind"], "optimizer");
    assert_eq!(rig.json[0]["knobs"], serde_json::json!([MAX_FREQ, RX]));
    rig.assert_schema();
}

#[test]
fn a_proposal_the_policy_refuses_is_not_applied() {
    // At most 400 MHz per step: the search's far proposals are refused, and with them the whole
    // configuration (rx-usecs included).
    let mut rig = Rig::new(&policy("max_step = 400000"), true, "");
    let mut refused_seen = 0;
    for _ in 0..25 {
        let (freq, rx, intents) = (rig.max_freq(), rig.rx(), rig.intents().len());
        let events = rig.window();
        let refused: Vec<_> = loop_events(&events)
            .into_iter()
            .filter_map(|e| match e {
                LiveEvent::Refused { config, retry, .. } => Some((config.clone(), *retry)),
                _ => None,
            })
            .collect();
        if refused.is_empty() {
            continue;
        }
        refused_seen += refused.len();
        for (config, retry) in &refused {
            assert!(!retry, "a step too large is given up, not waited for");
            assert!((config[0] - freq as f64).abs() > 400_000.0, "{config:?}");
        }
        // The path refused the cpufreq proposal, as the optimizer, with the policy's reason.
        assert!(events.iter().any(|e| matches!(e,
            Event::Change(c) if c.phase == ChangePhase::Refused
                && c.source == Source::Optimizer
                && c.target.to_string() == MAX_FREQ
                && c.refusal.as_deref() == Some("step_too_large")
                && c.journal_id.is_none())));
        // Nothing of a refused configuration reached the kernel or the journal; what was applied
        // in the same window (a later proposal) is within the step.
        let applied: Vec<_> = loop_events(&events)
            .into_iter()
            .filter_map(|e| match e {
                LiveEvent::Applied { config, .. } => Some(config.clone()),
                _ => None,
            })
            .collect();
        match applied.as_slice() {
            [] => {
                assert_eq!((rig.max_freq(), rig.rx()), (freq, rx));
                assert_eq!(rig.intents().len(), intents);
            }
            [config] => {
                assert_eq!(
                    (rig.max_freq() as f64, rig.rx() as f64),
                    (config[0], config[1])
                );
                assert!((config[0] - freq as f64).abs() <= 400_000.0);
            }
            more => panic!("{more:?}"),
        }
        for (config, _) in &refused {
            assert!(
                !rig.intents()
                    .iter()
                    .any(|i| i.address.to_string() == MAX_FREQ
                        && i.after == Value::Int(config[0] as i128)
                        && i.kind == IntentKind::Change
                        && i.before == Value::Int(freq.into())),
                "a refused value was journaled: {config:?}"
            );
        }
    }
    assert!(refused_seen > 0, "no proposal was refused: {:#?}", rig.json);
    // Every change KPO made stayed within the step.
    for i in rig.intents() {
        if i.address.to_string() == MAX_FREQ && i.kind == IntentKind::Change {
            let (Value::Int(a), Value::Int(b)) = (&i.before, &i.after) else {
                panic!("{i:?}")
            };
            assert!((a - b).abs() <= 400_000, "{i:?}");
        }
    }
    rig.assert_schema();
}

#[test]
fn a_pause_holds_the_trials_until_resumed() {
    let mut rig = Rig::new(&policy(""), true, "");
    rig.window(); // measures the start, applies the first trial (both knobs)
    assert_eq!(rig.intents().len(), 2);
    rig.deciding
        .path_for_tests_mut()
        .journal
        .set_paused(true, "test")
        .unwrap();
    // The trial is measured (a revert after an SLO breach is not held back by the pause).
    rig.window();
    let held = (rig.max_freq(), rig.rx());
    for _ in 0..3 {
        rig.window();
        assert_eq!((rig.max_freq(), rig.rx()), held);
    }
    let changes = rig
        .intents()
        .iter()
        .filter(|i| i.kind == IntentKind::Change)
        .count();
    assert_eq!(changes, 2, "no trial applied while paused");
    assert!(rig.live.iter().any(
        |e| matches!(e, LiveEvent::Refused { retry: true, reason, .. } if reason.contains("paused"))
    ));
    rig.deciding
        .path_for_tests_mut()
        .journal
        .set_paused(false, "test")
        .unwrap();
    rig.until(5, |ev| has(ev, |e| matches!(e, LiveEvent::Applied { .. })));
    rig.assert_schema();
}

#[test]
fn an_slo_breach_is_reverted_through_the_journal() {
    let mut rig = Rig::new(&policy(""), true, "");
    let events = rig.until(30, |ev| {
        has(ev, |e| matches!(e, LiveEvent::SloBreach { .. }))
    });
    let (from, to) = loop_events(&events)
        .into_iter()
        .find_map(|e| match e {
            LiveEvent::Reverted { from, to } => Some((from.clone(), to.clone())),
            _ => None,
        })
        .expect("a breach is reverted in the same window");
    // The knobs are back where they were before the breaching trial.
    assert_eq!((rig.max_freq() as f64, rig.rx() as f64), (to[0], to[1]));
    // Through the journal: a revert of each change that left `to`, by the optimizer, done.
    let intents = rig.intents();
    let reverts: Vec<_> = intents
        .iter()
        .filter(|i| matches!(i.kind, IntentKind::Revert { .. }))
        .collect();
    let moved = from.iter().zip(&to).filter(|(a, b)| a != b).count();
    assert_eq!(reverts.len(), moved, "{reverts:#?}");
    for r in reverts {
        let IntentKind::Revert { of: Some(of) } = r.kind else {
            panic!("{r:?}")
        };
        let change = rig.journal().intent(of).unwrap();
        assert_eq!(change.source, Source::Optimizer);
        assert_eq!(r.source, Source::Optimizer);
        assert_eq!(r.after, change.before, "back to the value before the trial");
        assert!(matches!(
            rig.journal().outcome(r.id),
            Some(Outcome::Reverted { .. })
        ));
        let knob = if r.address.to_string() == MAX_FREQ {
            0
        } else {
            1
        };
        assert_eq!(r.after, Value::Int(to[knob] as i128));
        assert_eq!(r.before, Value::Int(from[knob] as i128));
    }
    assert!(events.iter().any(|e| matches!(e,
        Event::Change(c) if c.phase == ChangePhase::Reverted && c.source == Source::Optimizer)));
    rig.assert_schema();
}

/// A trial under which no request completes (responses held longer than a window) breaks no
/// percentile: the silence sends the loop back, and the trial is not proposed again. A quiet
/// window without a trial in place, or at a rate too low for the sampled time to tell, does not.
#[test]
fn a_trial_under_which_no_request_completes_is_reverted() {
    let mut rig = Rig::new(&policy(""), true, "");
    rig.timed_requests = 0;
    let quiet = rig.window();
    assert!(has(&quiet, |e| matches!(e, LiveEvent::Unmeasured { .. })));
    assert!(!has(&quiet, |e| matches!(e, LiveEvent::NoRequests { .. })));
    rig.timed_requests = 1000;
    rig.until_a_trial(10, |_| true);
    let trial = rig.config_now();
    let before = rig.live.clone();
    let back_to = before
        .iter()
        .rev()
        .find_map(|e| match e {
            LiveEvent::Measured { config, .. } => Some(config.clone()),
            _ => None,
        })
        .unwrap();
    rig.timed_requests = 0;
    let events = rig.window();
    let loop_events: Vec<_> = loop_events(&events).into_iter().cloned().collect();
    assert!(
        matches!(
            &loop_events[..],
            [LiveEvent::NoRequests { config }, LiveEvent::Reverted { from, to }]
                if *config == trial && *from == trial && *to == back_to
        ) || matches!(
            &loop_events[..],
            [LiveEvent::Unmeasured { .. }, LiveEvent::NoRequests { config }, LiveEvent::Reverted { from, to }]
                if *config == trial && *from == trial && *to == back_to
        ),
        "{loop_events:#?}"
    );
    assert_eq!(rig.config_now(), back_to);
    // Silent again at the configuration measured: nothing more to undo.
    let events = rig.window();
    assert!(!has(&events, |e| matches!(
        e,
        LiveEvent::NoRequests { .. } | LiveEvent::Reverted { .. }
    )));
    rig.timed_requests = 1000;
    for _ in 0..15 {
        let events = rig.window();
        assert!(
            !has(
                &events,
                |e| matches!(e, LiveEvent::Applied { config, .. } if *config == trial)
            ),
            "proposed again: {:#?}",
            rig.live
        );
    }
    rig.assert_schema();

    // Ten requests a second timed over a whole window: 10 expected, under the 20 a silence
    // needs to be told from chance.
    let mut rig = Rig::new(&policy(""), true, "");
    rig.timed_requests = 10;
    rig.until_a_trial(10, |_| true);
    rig.timed_requests = 0;
    let events = rig.window();
    assert!(!has(&events, |e| matches!(
        e,
        LiveEvent::NoRequests { .. } | LiveEvent::Reverted { .. }
    )));
}

#[test]
fn another_writer_of_scaling_max_freq_is_yielded_to() {
    let mut rig = Rig::new(&policy(""), true, "");
    // Until KPO has changed the frequency limit (and not put it back).
    let mut ours = None;
    for _ in 0..30 {
        rig.window();
        ours = last_applied(&rig, MAX_FREQ).filter(|v| *v != Value::Int(3_000_000));
        if ours.is_some() {
            break;
        }
    }
    let ours = ours.expect("KPO changed scaling_max_freq");
    assert_eq!(Value::Int(rig.max_freq().into()), ours);
    // Someone else writes a value off the optimizer's grid.
    std::fs::write(&rig.max_freq_file, "2000000\n").unwrap();
    let events = rig.window();
    let overrides = of_kind(&rig.json, "admin_override");
    assert_eq!(overrides.len(), 1, "{:#?}", rig.json);
    let o = overrides[0];
    assert_eq!(o["target"], MAX_FREQ);
    assert_eq!(o["value"], 2_000_000);
    assert_eq!(o["kpo_value"], serde_json::to_value(&ours).unwrap());
    assert!(o["pid"].is_null() && o["comm"].is_null());
    assert_eq!(o["seen_by"], "value_check");
    assert!(events
        .iter()
        .any(|e| matches!(e, Event::AdminOverride { .. })));
    let address: ParamAddress = MAX_FREQ.parse().unwrap();
    let state = rig.journal().param_state(&address).unwrap();
    assert_eq!(
        state.yielded.as_ref().map(|(by, _)| by.as_str()),
        Some(super::yielding::BY_VALUE_CHECK)
    );
    // The loop sets the knob aside at the person's value and searches the other one.
    let regrouped = rig
        .json
        .iter()
        .rfind(|e| e["event"] == "regrouped")
        .expect("a regrouped event")
        .clone();
    assert_eq!(regrouped["knobs"], serde_json::json!([RX]), "{regrouped}");
    assert_eq!(
        regrouped["set_aside"],
        serde_json::json!([format!("{MAX_FREQ} = 2000000 (yielded)")]),
    );
    assert_eq!(regrouped["config"], serde_json::json!([rig.rx() as f64]));
    // KPO writes it no more: the person's value stays, the journal has no new intent for it, and
    // the loop does not even ask (no refusal); rx-usecs trials go on.
    let count = |rig: &Rig, target: &str| {
        rig.intents()
            .iter()
            .filter(|i| i.address.to_string() == target)
            .count()
    };
    let (before, rx_before) = (count(&rig, MAX_FREQ), count(&rig, RX));
    let json_before = rig.json.len();
    for _ in 0..10 {
        rig.window();
        assert_eq!(rig.max_freq(), 2_000_000);
    }
    assert_eq!(count(&rig, MAX_FREQ), before);
    assert!(
        count(&rig, RX) > rx_before,
        "the search goes on over rx-usecs"
    );
    assert!(
        !rig.json[json_before..]
            .iter()
            .any(|e| e["kind"] == "change" && e["target"] == MAX_FREQ),
        "no proposal moves the yielded knob"
    );
    // Handed back, it is searched again, from the kernel's values.
    rig.operator(crate::api::Request::Resume {
        param: Some(MAX_FREQ.into()),
        by: "test".into(),
    });
    let events = rig.window();
    let back = loop_events(&events)
        .into_iter()
        .find_map(|e| match e {
            LiveEvent::Regrouped { config, set_aside } => Some((config.clone(), set_aside.clone())),
            _ => None,
        })
        .expect("regrouped once handed back");
    assert!(back.1.is_empty(), "{back:?}");
    assert_eq!(
        back.0[0], 2_000_000.0,
        "the search starts from the person's value"
    );
    let regrouped = rig
        .json
        .iter()
        .rfind(|e| e["event"] == "regrouped")
        .unwrap();
    assert_eq!(regrouped["knobs"], serde_json::json!([MAX_FREQ, RX]));
    rig.assert_schema();
}

#[test]
fn a_tree_without_cpufreq_is_unsupported() {
    let only_cpufreq = r#"
[params."cpufreq:*:scaling_max_freq"]
mode = "auto"
min = 1200000
max = 3000000
sources = ["optimizer"]
"#;
    let rig = Rig::new(only_cpufreq, false, "");
    match rig.live.as_slice() {
        [LiveEvent::Off { reason }] => assert!(
            reason.contains("unsupported on this machine")
                && reason.contains("devices/system/cpu/cpufreq does not exist"),
            "{reason}"
        ),
        other => panic!("{other:?}"),
    }
    rig.assert_schema();
}

/// Defect (s44 storyB): with the request_latency sensor disabled (or no sensor attached at all)
/// the loop said "live loop on" and then, every window, that no request was timed: it can never
/// measure its SLO. It is off from the start, saying why, and writes nothing.
#[test]
fn without_the_request_latency_sensor_the_loop_is_off() {
    for (top, why) in [
        (
            "disabled_sensors = [\"request_latency\"]\n",
            "the request_latency sensor is disabled (disabled_sensors, or --disable-sensor \
             request_latency), and the SLO's latency is its measurement",
        ),
        (
            "duty_fraction = 0.0\n",
            "duty_fraction is 0: no sensor is attached, and the SLO's latency is the \
             request_latency sensor's measurement",
        ),
    ] {
        let mut rig = Rig::with_top(&policy(""), true, top, "");
        match rig.live.as_slice() {
            [LiveEvent::Off { reason }] => assert_eq!(reason, why),
            other => panic!("{other:?}"),
        }
        rig.window();
        assert_eq!(rig.intents().len(), 0, "nothing written");
        assert_eq!(rig.max_freq(), 3_000_000);
        rig.assert_schema();
    }
    // The rig's own configuration runs the loop.
    let rig = Rig::new(&policy(""), true, "");
    assert!(
        matches!(rig.live.as_slice(), [LiveEvent::Started { .. }, ..]),
        "{:?}",
        rig.live
    );
}

/// A knob in mode recommend (or auto made recommend by --recommend-only) is not searched: the
/// trials would wait for approvals nobody is asked for. The loop says so and touches nothing.
#[test]
fn a_knob_in_mode_recommend_is_left_out_with_the_reason() {
    let recommend = policy("").replace("mode = \"auto\"", "mode = \"recommend\"");
    let mut rig = Rig::new(&recommend, true, "");
    match rig.live.as_slice() {
        [LiveEvent::Off { reason }] => assert!(
            reason.contains("cpufreq:*:scaling_max_freq: mode recommend")
                && reason.contains("ethtool:eth0:rx-usecs: mode recommend")
                && reason.contains("do not wait for approvals"),
            "{reason}"
        ),
        other => panic!("{other:?}"),
    }
    rig.window();
    rig.window();
    assert!(rig.intents().is_empty());
    assert_eq!(rig.max_freq(), 3_000_000);
    rig.assert_schema();
}

/// s48 storyP P-2: a knob left out because its device cannot be read was named by the device
/// alone, which its rx-usecs and tx-usecs entries share.
#[test]
fn a_knob_left_out_is_named_by_its_address() {
    let text = format!(
        "{}\n[params.\"ethtool:eth9:rx-usecs\"]\nmode = \"auto\"\nmin = 0\nmax = 100\nsources = [\"optimizer\"]\n",
        policy("")
    );
    let mut rig = Rig::new(&text, true, "");
    rig.window();
    let left_out = rig.left_out_of_start_over(&[MAX_FREQ, RX]);
    assert!(left_out.contains("\"ethtool:eth9:rx-usecs: "), "{left_out}");
}

#[test]
fn an_estimated_energy_is_not_optimized_on_unless_allowed() {
    let mut rig = Rig::new(&policy(""), true, "");
    rig.estimated = true;
    rig.window();
    rig.window();
    let unmeasured: Vec<_> = rig
        .live
        .iter()
        .filter(|e| matches!(e, LiveEvent::Unmeasured { .. }))
        .collect();
    assert_eq!(unmeasured.len(), 1, "said once: {unmeasured:?}");
    assert!(rig.intents().is_empty());
    let mut rig = Rig::new(&policy(""), true, "allow_estimated_energy = true");
    rig.estimated = true;
    rig.window();
    assert!(rig.live.iter().any(|e| matches!(
        e,
        LiveEvent::Measured {
            energy_source: EnergySource::Estimated,
            ..
        }
    )));
    assert_eq!(rig.intents().len(), 2, "the first trial moved both knobs");
    assert!(rig
        .json
        .iter()
        .any(|e| e["event"] == "measured" && e["energy_source"] == "estimated"));
    rig.assert_schema();
}

/// The operator may set the cpufreq max limit, and the guard judges by request p99 alone.
const OPERATORS_MAX_FREQ_BY_P99: &str = r#"
[guard]
signals = ["request_p99"]
max_changes_per_hour = 1000

[params."cpufreq:*:scaling_max_freq"]
mode = "auto"
min = 1200000
max = 3000000
sources = ["operator"]
"#;

/// The guard in the agent: an operator's change followed by windows whose request p99 regresses
/// is reverted through the journal as source `guard`, and the value is quarantined (the same
/// change asked again is refused).
#[test]
fn a_regression_after_a_change_is_reverted_by_the_guard_and_quarantined() {
    let mut rig = Rig::new(OPERATORS_MAX_FREQ_BY_P99, true, "");
    assert!(rig.live.is_empty(), "the optimizer has no knobs here");
    // The baseline window: p99 = 80 + 216000 / 3000 = 152 µs.
    rig.window();
    let apply = |rig: &mut Rig| rig.operator_sets_max_freq(1_200_000);
    assert!(matches!(apply(&mut rig), crate::api::Reply::Ok(_)));
    assert_eq!(rig.max_freq(), 1_200_000);
    // At 1200 MHz p99 is 260 µs: more than 20% + 50 µs above 152, in every window after.
    rig.until(4, |events| guard_reverts(events) > 0);
    assert_eq!(rig.max_freq(), 3_000_000);
    let revert = rig.intents().pop().expect("a revert intent");
    assert_eq!(revert.source, Source::Guard);
    assert!(matches!(revert.kind, IntentKind::Revert { of: Some(_) }));
    assert_eq!(
        revert.reason,
        "the guard saw request_p99 go from 152 µs (the window before the change, the highest of the \
         services busy then) to 260 µs at port 8080 (netns 4026531840)"
    );
    assert!(rig
        .json
        .iter()
        .any(|e| e["kind"] == "change" && e["phase"] == "reverted" && e["source"] == "guard"));
    let verdict = rig.json.iter().find(|e| e["kind"] == "guard").unwrap();
    assert_eq!(verdict["verdict"], "revert", "{verdict}");
    assert_eq!(verdict["reverted"], true, "{verdict}");
    assert!(verdict.get("error").is_none(), "{verdict}");
    // Quarantined: the same value is refused, and the kernel is not touched.
    match apply(&mut rig) {
        crate::api::Reply::Ok(report) => {
            assert_eq!(report["status"], "refused", "{report}");
            assert_eq!(report["refusal"]["refusal"], "quarantined", "{report}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(rig.max_freq(), 3_000_000);
    // What `kpo_quarantines` shows (s59 story BO-6).
    assert_eq!(rig.deciding.held(), (0, 1));
    rig.assert_schema();
}

/// A change reverted for a load that arrived with it, and stays: in the first window wholly
/// after the revert, request p99 is still past what counted as the change's regression, so the
/// change was not its cause. Its value's quarantine is lifted (journaled as ended, said in a
/// `guard` event `cleared`), and the same change is accepted again. When the load leaves with
/// the revert, the quarantine stays (s56 story AZ-3: under a real overload the rules' raise of
/// somaxconn was reverted and quarantined, doubling, for the overload's own latency).
#[test]
fn a_revert_the_signal_outlasts_has_its_quarantine_lifted() {
    for load_stays in [true, false] {
        let mut rig = Rig::new(OPERATORS_MAX_FREQ_BY_P99, true, "");
        // The baseline window at 3000 MHz: p99 152 µs; its bar 152 × 1.2 + 50 = 232.4.
        rig.window();
        let change = rig.operator_applied_max_freq(2_400_000);
        // A load arrives with the change: 170 + 200 = 370 µs.
        rig.extra_p99_us = 200.0;
        rig.until(4, |events| guard_reverts(events) > 0);
        assert_eq!(rig.max_freq(), 3_000_000);
        if !load_stays {
            rig.extra_p99_us = 0.0;
        }
        // The window the revert was made in, then the first wholly after it.
        let mut events = rig.window();
        events.extend(rig.window());
        let cleared: Vec<serde_json::Value> = (events.iter())
            .filter_map(|e| match e {
                Event::Guard(g) => Some(serde_json::to_value(g).unwrap()),
                _ => None,
            })
            .filter(|g| g["verdict"] == "cleared")
            .collect();
        let again = rig.operator_sets_max_freq(2_400_000);
        let crate::api::Reply::Ok(again) = again else {
            panic!("{again:?}")
        };
        let address: ParamAddress = MAX_FREQ.parse().unwrap();
        let quarantine = (rig.journal().param_state(&address).unwrap().quarantine)
            .iter()
            .find(|q| q.value == Value::Int(2_400_000))
            .cloned()
            .unwrap();
        if load_stays {
            assert_eq!(
                cleared,
                [serde_json::json!({
                    "verdict": "cleared",
                    "change_id": change,
                    "address": MAX_FREQ,
                    "values": [2_400_000],
                    "still_past": [{
                        "signal": "request_p99",
                        "after": 352.0,
                        "bar": 232.4,
                        "service": {"netns": 4026531840_u64, "port": PORT}
                    }],
                })]
            );
            // Named with its service and units (s62 story CF-1).
            let lifted = (rig.journal().records().iter())
                .rev()
                .find_map(|r| match r {
                    Record::Quarantine { why, .. } => Some(why.clone()),
                    _ => None,
                })
                .unwrap();
            assert!(
                lifted.starts_with(
                    "the guard saw request_p99 still at 352.000 µs at port 8080 (netns \
                     4026531840) (past 232.400 µs) in the first window wholly after"
                ),
                "{lifted}"
            );
            assert_eq!(
                quarantine.until_ms, quarantine.since_ms,
                "ended as it began"
            );
            // The schema ties the fields to the verdict (s57 story BF-5): a `cleared` without
            // `values`, a `revert` without `signal`, are not events KPO writes.
            let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/events.schema.json");
            let schema: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
            let validator = jsonschema::validator_for(&schema).unwrap();
            for (verdict, field) in [("cleared", "values"), ("revert", "signal")] {
                let mut e = (rig.json.iter())
                    .find(|e| e["kind"] == "guard" && e["verdict"] == verdict)
                    .unwrap()
                    .clone();
                assert!(validator.is_valid(&e), "{e}");
                e.as_object_mut().unwrap().remove(field);
                assert!(!validator.is_valid(&e), "{e}");
            }
            assert_eq!(again["status"], "applied", "{again}");
            assert_eq!(rig.max_freq(), 2_400_000);
            // Reverted again, for more than the load the baseline holds now (170 + 600 µs), the
            // load staying: not cleared twice in a day, and quarantined for guard.quarantine,
            // the lifted one counting for no doubling.
            rig.extra_p99_us = 600.0;
            let mut events = rig.until(4, |events| guard_reverts(events) > 0);
            assert_eq!(rig.max_freq(), 3_000_000);
            events.extend(rig.window());
            events.extend(rig.window());
            assert!(
                !(events.iter()).any(|e| matches!(e, Event::Guard(g)
                    if matches!(g.verdict, crate::guard::Verdict::Cleared { .. }))),
                "{events:?}"
            );
            let quarantine = (rig.journal().param_state(&address).unwrap().quarantine)
                .iter()
                .find(|q| q.value == Value::Int(2_400_000))
                .cloned()
                .unwrap();
            assert_eq!(quarantine.until_ms - quarantine.since_ms, 3_600_000);
            let again = rig.operator_sets_max_freq(2_400_000);
            let crate::api::Reply::Ok(again) = again else {
                panic!("{again:?}")
            };
            assert_eq!(again["refusal"]["refusal"], "quarantined", "{again}");
        } else {
            assert_eq!(cleared, Vec::<serde_json::Value>::new());
            assert!(quarantine.until_ms > crate::journal::now_ms());
            assert_eq!(again["refusal"]["refusal"], "quarantined", "{again}");
            assert_eq!(rig.max_freq(), 3_000_000);
        }
        rig.assert_schema();
    }
}

/// Two changes of one parameter in one window: the second is judged with the first, from the
/// health before the first, and the guard puts back the value before the first, quarantining
/// both (s50 storyX F2: each alone was within the tolerance of its own baseline, the first was
/// never judged, and its value stayed).
#[test]
fn a_change_made_before_the_last_was_judged_is_reverted_with_it() {
    let mut rig = Rig::new(OPERATORS_MAX_FREQ_BY_P99, true, "");
    // The baseline window at 3000 MHz: p99 152 µs; at 1500 MHz 224 µs, at 1200 MHz 260 µs. Each
    // step alone is within 20% + 50 µs of the window before it; the two are not.
    rig.window();
    let first = rig.operator_applied_max_freq(1_500_000);
    let second = rig.operator_applied_max_freq(1_200_000);
    rig.until(4, |events| guard_reverts(events) > 0);
    assert_eq!(rig.max_freq(), 3_000_000, "the value before the first");
    let revert = rig.intents().pop().expect("a revert intent");
    assert_eq!(revert.source, Source::Guard);
    assert_eq!(revert.kind, IntentKind::Revert { of: Some(first) });
    assert_eq!(
        revert.reason,
        format!(
            "the guard saw request_p99 go from 152 µs (the window before the change, the highest of the \
         services busy then) to 260 µs at port 8080 (netns 4026531840); \
             #{second} was made on top of #{first}, not yet judged, and was judged with it \
             from the health before #{first}: the value before #{first} goes back"
        )
    );
    let verdict = rig.json.iter().find(|e| e["kind"] == "guard").unwrap();
    assert_eq!(verdict["change_id"], second, "{verdict}");
    assert_eq!(
        verdict["judged_with"],
        serde_json::json!([first]),
        "{verdict}"
    );
    assert_eq!(verdict["reverted"], true, "{verdict}");
    for khz in [1_500_000, 1_200_000] {
        match rig.operator_sets_max_freq(khz) {
            crate::api::Reply::Ok(report) => {
                assert_eq!(
                    report["refusal"]["refusal"], "quarantined",
                    "{khz}: {report}"
                )
            }
            other => panic!("{other:?}"),
        }
    }
    rig.assert_schema();
}

/// `kpo status` through the agent names the changes the guard is watching: what, since when,
/// judged by what, with which earlier changes, and how far along (s50 storyX F6: nothing showed
/// that a change was still to be judged).
#[test]
fn the_agents_status_names_the_open_watches() {
    let mut rig = Rig::new(OPERATORS_MAX_FREQ_BY_P99, true, "");
    rig.window();
    let watches = |rig: &mut Rig| match rig.operator(crate::api::Request::Status) {
        crate::api::Reply::Ok(status) => {
            serde_json::from_value::<Vec<crate::control::WatchStatus>>(
                status
                    .get("watches")
                    .cloned()
                    .unwrap_or(serde_json::json!([])),
            )
            .unwrap()
        }
        other => panic!("{other:?}"),
    };
    assert_eq!(watches(&mut rig), [], "none before a change");
    match rig.operator(crate::api::Request::Status) {
        crate::api::Reply::Ok(status) => {
            assert_eq!(status["version"], crate::VERSION);
            assert!(
                status.get("saved_watches").is_none(),
                "the agent's own list: {status}"
            );
        }
        other => panic!("{other:?}"),
    }
    // p99 152 -> 157 -> 160 µs: within the tolerance, so each window counts clean.
    let first = rig.operator_applied_max_freq(2_800_000);
    let second = rig.operator_applied_max_freq(2_700_000);
    let since = format_ms(rig.journal().intent(first).unwrap().ts_ms);
    let mut want = crate::control::WatchStatus {
        change_id: second,
        judged_with: vec![first],
        address: MAX_FREQ.into(),
        since: Some(since.clone()),
        signals: vec!["request_p99".into()],
        windows_left: 3,
        clean_windows: 0,
        strikes: 0,
        not_judged: None,
        revert_failed: false,
    };
    assert_eq!(watches(&mut rig), [want.clone()]);
    match rig.operator(crate::api::Request::Status) {
        crate::api::Reply::Ok(status) => assert!(status.get("saved_watches").is_none()),
        other => panic!("{other:?}"),
    }
    // What a command run while the agent is down reads: the watch the guard saved.
    let offline =
        |rig: &mut Rig| crate::control::Control::status(rig.deciding.path_for_tests_mut()).unwrap();
    assert_eq!(
        (
            offline(&mut rig).watches.len(),
            offline(&mut rig).saved_watches
        ),
        (0, 1)
    );
    rig.window(); // the window the changes were made in: not counted, and said so
    want.not_judged = Some("made_within_it".into());
    let shown = watches(&mut rig);
    assert_eq!(shown, [want.clone()]);
    assert!(
        crate::cli::watch_line(&shown[0])
            .ends_with("; last window not judged: the change was made within it"),
        "{}",
        crate::cli::watch_line(&shown[0])
    );
    rig.window();
    (want.windows_left, want.clean_windows, want.not_judged) = (2, 1, None);
    let shown = watches(&mut rig);
    assert_eq!(shown, [want]);
    assert_eq!(
        crate::cli::watch_line(&shown[0]),
        format!(
            "guard watching #{second} (with #{first}): {MAX_FREQ} since {since}, judged by \
             request_p99; 2 window(s) to go, 1 clean, 0 strike(s)"
        )
    );
    rig.window();
    rig.window();
    assert_eq!(watches(&mut rig), [], "kept after its windows");
    assert_eq!(offline(&mut rig).saved_watches, 0);
}

/// A change made on top of an undo (1500 MHz, back to 3000, then 1200, in one window) is judged
/// alone, and its revert puts back 3000, not the 1500 the undo took out (s50 review2 N1).
#[test]
fn a_change_made_on_top_of_an_undo_is_reverted_alone() {
    let mut rig = Rig::new(OPERATORS_MAX_FREQ_BY_P99, true, "");
    rig.window();
    rig.operator_applied_max_freq(1_500_000);
    rig.operator_applied_max_freq(3_000_000);
    let last = rig.operator_applied_max_freq(1_200_000);
    rig.until(4, |events| guard_reverts(events) > 0);
    assert_eq!(rig.max_freq(), 3_000_000);
    let revert = rig.intents().pop().expect("a revert intent");
    assert_eq!(revert.kind, IntentKind::Revert { of: Some(last) });
    let verdict = rig.json.iter().find(|e| e["kind"] == "guard").unwrap();
    assert!(verdict.get("judged_with").is_none(), "{verdict}");
    rig.assert_schema();
}

/// A guard revert that finds someone else's value in place (written after the window's check of
/// the values, before the revert read the parameter) leaves it: the verdict says `"reverted":
/// false` with the revert's report as `error`, the parameter is yielded to them, and the change's
/// value is quarantined all the same.
#[test]
fn a_guard_revert_that_finds_someone_elses_value_is_not_reverted() {
    let policy = r#"
[guard]
signals = ["request_p99"]
max_changes_per_hour = 1000

[params."cpufreq:*:scaling_max_freq"]
mode = "auto"
min = 1200000
max = 3000000
sources = ["operator"]
"#;
    let mut rig = Rig::new(policy, true, "");
    rig.window();
    assert!(matches!(
        rig.operator_sets_max_freq(1_200_000),
        crate::api::Reply::Ok(_)
    ));
    let change_id = rig.intents().last().unwrap().id;
    // At 1200 MHz every window regresses; the guard gives its verdict in the second one after
    // the window the change was made in.
    assert_eq!(guard_reverts(&rig.window()), 0);
    assert_eq!(guard_reverts(&rig.window()), 0);
    // The window's check of the values reads 1200000, KPO's; a person writes 2000000 right after.
    let file = rig.max_freq_file.clone();
    *rig.after_read.lock().unwrap() = Some((
        MAX_FREQ.parse().unwrap(),
        Box::new(move || std::fs::write(file, "2000000\n").unwrap()),
    ));
    assert_eq!(guard_reverts(&rig.window()), 1);
    assert!(rig.after_read.lock().unwrap().is_none(), "the person wrote");
    assert_eq!(rig.max_freq(), 2_000_000, "their value stays");
    let verdict = rig.json.iter().find(|e| e["kind"] == "guard").unwrap();
    assert_eq!(
        (
            &verdict["verdict"],
            &verdict["change_id"],
            &verdict["reverted"],
            &verdict["error"]
        ),
        (
            &serde_json::json!("revert"),
            &serde_json::json!(change_id),
            &serde_json::json!(false),
            &serde_json::json!(format!(
                "skipped {MAX_FREQ}: 2000000 -> 3000000 (now 2000000): the kernel has \
                 2000000, not the 1200000 KPO applied: someone else changed it, and their value \
                 stays"
            ))
        ),
        "{verdict}"
    );
    let yielded: Vec<_> = rig
        .json
        .iter()
        .filter(|e| e["kind"] == "admin_override")
        .map(|e| {
            (
                e["target"].clone(),
                e["value"].clone(),
                e["kpo_value"].clone(),
            )
        })
        .collect();
    assert_eq!(
        yielded,
        [(
            serde_json::json!(MAX_FREQ),
            serde_json::json!(2_000_000),
            serde_json::json!(1_200_000)
        )],
        "yielded to them"
    );
    assert!(rig
        .journal()
        .param_state(&MAX_FREQ.parse().unwrap())
        .unwrap()
        .yielded
        .is_some());
    assert_eq!(rig.deciding.guard_watching(), 0);
    assert!(rig.journal().records().iter().any(|r| matches!(
        r,
        Record::Quarantine { value, .. } if *value == Value::Int(1_200_000.into())
    )));
    rig.assert_schema();
}

/// A guard revert of a NIC's value whose device goes between the window's check of the values
/// and the revert. Only absent (unplugged, a veth deleted, or moved to another network
/// namespace, which keeps its settings): nothing is written, the verdict says `"reverted":
/// false` and why, nothing is forgotten nor quarantined, and the guard keeps watching the change.
/// A new device under its name: nothing is written to it either, the journal settles the old
/// device as gone, and the guard stops watching the change, with no quarantine of its value (the
/// device under the name now is another, with its own).
#[test]
fn a_guard_revert_on_a_nic_that_is_gone_writes_nothing_and_stops_watching() {
    let policy = r#"
[guard]
signals = ["request_p99"]
max_changes_per_hour = 1000

[params."ethtool:eth0:rx-usecs"]
mode = "auto"
min = 0
max = 100
sources = ["operator"]
"#;
    for comes_back in [false, true] {
        let mut rig = Rig::new(policy, true, "");
        rig.window();
        assert!(matches!(
            rig.operator_applies(RX, 100),
            crate::api::Reply::Ok(_)
        ));
        assert_eq!(rig.nic_now().rx_usecs, 100);
        let change_id = rig.intents().last().unwrap().id;
        let index = rig.nic.index_of("eth0").unwrap();
        // At rx-usecs 100 every window regresses; the guard gives its verdict in the second one
        // after the window the change was made in.
        assert_eq!(guard_reverts(&rig.window()), 0);
        assert_eq!(guard_reverts(&rig.window()), 0);
        // The window's check of the values reads 100, KPO's; the device goes right after.
        let nic = rig.nic.clone();
        *rig.after_read.lock().unwrap() = Some((
            RX.parse().unwrap(),
            Box::new(move || {
                nic.remove_nic("eth0");
                if comes_back {
                    nic.add_nic(
                        "eth0",
                        CoalesceSettings {
                            rx_usecs: 8,
                            adaptive_rx: false,
                        },
                    );
                }
            }),
        ));
        let written = rig.nic.history().len();
        assert_eq!(guard_reverts(&rig.window()), 1);
        assert!(rig.after_read.lock().unwrap().is_none(), "the device went");
        assert_eq!(rig.nic.history().len(), written, "nothing written");
        if comes_back {
            assert_eq!(rig.nic_now().rx_usecs, 8);
        }
        let verdict = rig.json.iter().find(|e| e["kind"] == "guard").unwrap();
        assert_eq!(
            (&verdict["change_id"], &verdict["reverted"]),
            (&serde_json::json!(change_id), &serde_json::json!(false)),
            "{verdict}"
        );
        let error = verdict["error"].as_str().unwrap();
        let records = rig.journal().records();
        assert!(!records
            .iter()
            .any(|r| matches!(r, Record::Quarantine { .. })));
        if !comes_back {
            assert!(
                error.contains(&format!("no device has the name eth0 or the index {index}"))
                    && error.contains("not put back"),
                "{error}"
            );
            assert_eq!(rig.deciding.guard_watching(), 1);
            assert!(!records.iter().any(|r| matches!(r, Record::Gone { .. })));
            let state = rig.journal().param_by_key(RX).unwrap().clone();
            assert_eq!(state.holding, Some(change_id));
            for _ in 0..3 {
                rig.window();
            }
            assert_eq!(rig.nic.history().len(), written);
            assert!(!rig.json.iter().any(|e| e["kind"] == "admin_override"));
            rig.assert_schema();
            continue;
        }
        assert!(
            error.contains(&format!(
                "the network device eth0 (index {index}) is gone from under its name"
            )) && error.contains("nothing put back"),
            "{error}"
        );
        assert_eq!(rig.deciding.guard_watching(), 0);
        let records = rig.journal().records();
        assert!(!records
            .iter()
            .any(|r| matches!(r, Record::Quarantine { .. })));
        assert_eq!(
            records
                .iter()
                .filter(|r| matches!(r, Record::Gone { .. }))
                .count(),
            1
        );
        // Nothing more of it in later windows, nor any write.
        for _ in 0..3 {
            assert_eq!(guard_reverts(&rig.window()), 0);
        }
        assert_eq!(rig.nic.history().len(), written);
        assert!(!rig.json.iter().any(|e| e["kind"] == "admin_override"));
        rig.assert_schema();
    }
}

/// The agent killed between the guard's revert (its outcome on disk) and the quarantine of the
/// value: started again, it journals the quarantine the guard would have, from the revert's
/// time, so the same value is still refused; once, not at every start.
#[test]
fn a_quarantine_lost_to_a_kill_after_the_guards_revert_is_journaled_at_the_next_start() {
    let policy = r#"
[guard]
signals = ["request_p99"]
max_changes_per_hour = 1000
quarantine = "2h"

[params."cpufreq:*:scaling_max_freq"]
mode = "auto"
min = 1200000
max = 3000000
sources = ["operator"]
"#;
    let mut rig = Rig::new(policy, true, "");
    rig.window();
    assert!(matches!(
        rig.operator_sets_max_freq(1_200_000),
        crate::api::Reply::Ok(_)
    ));
    rig.until(4, |events| guard_reverts(events) > 0);
    let revert = rig.intents().pop().unwrap();
    let reverted_ms = match rig.journal().records().last() {
        Some(Record::Quarantine { .. }) => rig
            .journal()
            .records()
            .iter()
            .rev()
            .find_map(|r| match r {
                Record::Outcome { id, ts_ms, .. } if *id == revert.id => Some(*ts_ms),
                _ => None,
            })
            .unwrap(),
        other => panic!("the guard's quarantine is the last record: {other:?}"),
    };
    // As a kill -9 right after the revert's outcome leaves the journal.
    let without_quarantine = |state: &Path| {
        let file = state.join(crate::journal::store::JOURNAL_FILE);
        let text = std::fs::read_to_string(&file).unwrap();
        let kept: String = text
            .split_inclusive('\n')
            .filter(|l| !l.contains(r#""type":"quarantine""#))
            .collect();
        assert_ne!(kept, text);
        std::fs::write(&file, kept).unwrap();
    };
    let quarantines = |rig: &Rig| -> Vec<(u64, u64)> {
        rig.journal()
            .records()
            .iter()
            .filter_map(|r| match r {
                Record::Quarantine {
                    ts_ms, until_ms, ..
                } => Some((*ts_ms, *until_ms)),
                _ => None,
            })
            .collect()
    };
    let mut rig = rig.restarted_after(without_quarantine);
    assert_eq!(
        quarantines(&rig),
        [(reverted_ms, reverted_ms + 2 * 3_600_000)],
        "from the revert's time, for the policy's length"
    );
    match rig.operator_sets_max_freq(1_200_000) {
        crate::api::Reply::Ok(report) => {
            assert_eq!(report["refusal"]["refusal"], "quarantined", "{report}")
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(rig.max_freq(), 3_000_000);
    let rig = rig.restarted();
    assert_eq!(quarantines(&rig).len(), 1, "not journaled again");
}

/// s61 story BW-2: with the guard's file unwritable (a full disk that left the journal's last
/// block room for the intent), `kpo apply` was applied, exit 0, and a kill before the next window
/// left it unjudged for good. The change is not made now, and says why; once the file can be
/// written, it is, watched on disk before any window.
#[test]
fn a_change_whose_guard_watch_cannot_be_kept_is_not_made() {
    let policy = r#"
[guard]
signals = ["request_p99"]
windows = 3
max_changes_per_hour = 1000

[params."cpufreq:*:scaling_max_freq"]
mode = "auto"
min = 1200000
max = 3000000
sources = ["operator"]
"#;
    let mut rig = Rig::new(policy, true, "");
    rig.window();
    let state = rig._tmp.path().join("state");
    // Where the file is written first, then renamed: a directory there fails the write.
    let blocker = state.join(format!("{}.tmp", crate::guard::WATCHES_FILE));
    std::fs::create_dir(&blocker).unwrap();
    match rig.operator_sets_max_freq(1_200_000) {
        crate::api::Reply::Ok(report) => {
            assert_eq!(report["status"], "failed", "{report}");
            let detail = report["detail"].as_str().unwrap();
            assert!(
                detail.starts_with(
                    "not written: the guard cannot keep its watch in the state directory ("
                ) && detail.ends_with(
                    "and a change a restart would forget unjudged is not made; once the state \
                     directory can be written again (a full disk, most often), try again"
                ),
                "{report}"
            );
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(rig.max_freq(), 3_000_000, "not written");
    assert_eq!(rig.deciding.guard_watching(), 0, "nothing to judge");
    std::fs::remove_dir(&blocker).unwrap();
    rig.operator_applied_max_freq(1_200_000);
    assert_eq!(rig.max_freq(), 1_200_000);
    assert!(state.join(crate::guard::WATCHES_FILE).exists());
    let rig = rig.restarted();
    assert_eq!(rig.deciding.guard_watching(), 1, "judged after a restart");
}

/// The agent killed right after a change, before any window judged it: started again, the guard
/// takes the watch up from the state directory, against the health from before the change, and
/// reverts the regression. A change reverted while the agent was down is not watched again.
#[test]
fn a_change_made_before_a_restart_is_still_judged_by_the_guard() {
    let policy = r#"
[guard]
signals = ["request_p99"]
windows = 3
max_changes_per_hour = 1000

[params."cpufreq:*:scaling_max_freq"]
mode = "auto"
min = 1200000
max = 3000000
sources = ["operator"]
"#;
    let mut rig = Rig::new(policy, true, "");
    // The baseline window: p99 152 µs at 3000 MHz.
    rig.window();
    assert!(matches!(
        rig.operator_sets_max_freq(1_200_000),
        crate::api::Reply::Ok(_)
    ));
    let change_id = rig.intents().pop().unwrap().id;
    let watches = rig
        ._tmp
        .path()
        .join("state")
        .join(crate::guard::WATCHES_FILE);
    assert!(watches.exists(), "the watch is on disk before any window");
    let mut rig = rig.restarted();
    assert_eq!(rig.deciding.guard_watching(), 1);
    // 260 µs at 1200 MHz in the first two windows after the restart: reverted, quarantined.
    let events = rig.until(2, |events| guard_reverts(events) > 0);
    assert_eq!(first_guard_revert(&events), (change_id, 152.0, 260.0));
    assert_eq!(rig.max_freq(), 3_000_000);
    let revert = rig.intents().pop().unwrap();
    assert_eq!(revert.source, Source::Guard);
    assert_eq!(
        revert.kind,
        IntentKind::Revert {
            of: Some(change_id)
        }
    );
    assert_eq!(rig.deciding.guard_watching(), 0);
    rig.assert_schema();

    // A second change, reverted by an operator while the agent is down (an intent the journal
    // holds that leaves the change no longer the latest): the next start drops its watch.
    assert!(matches!(
        rig.operator_sets_max_freq(2_400_000),
        crate::api::Reply::Ok(_)
    ));
    let second = rig.intents().pop().unwrap().id;
    assert_eq!(rig.deciding.guard_watching(), 1);
    let rig = rig.restarted();
    assert_eq!(rig.deciding.guard_watching(), 1, "still in place");
    let rig = {
        let Rig { _tmp, deciding, .. } = rig;
        drop(deciding);
        let (mut path, _) = crate::control::open_offline(
            None,
            &_tmp.path().join("state"),
            Box::new(TestActuators {
                roots: Roots {
                    proc_sys: _tmp.path().join("proc_sys"),
                    sys: _tmp.path().join("sys"),
                },
                nic: FakeCoalesce::new(),
                after_read: AfterRead::default(),
            }),
        )
        .unwrap();
        let r = path.revert(second, Source::Operator, "test").unwrap();
        assert_eq!(r.status, crate::change::ChangeStatus::Reverted, "{r:?}");
        drop(path);
        _tmp
    };
    let nic = FakeCoalesce::new();
    let deciding = open_deciding(rig.path(), policy, &nic, &AfterRead::default());
    assert_eq!(
        deciding.guard_watching(),
        0,
        "reverted while the agent was down"
    );
}

/// The agent is killed after a change's outcome is journaled and before its caller has the guard
/// watch it: the change path wrote the watch into the guard's file before the kernel write, so
/// the change is still judged after the restart, against the window before it. A watch written
/// ahead for a call that returned long ago (a window closed since) is not taken up.
#[test]
fn a_change_whose_agent_was_killed_before_watching_it_is_still_judged() {
    let policy = r#"
[guard]
signals = ["request_p99"]
windows = 3
max_changes_per_hour = 1000

[params."cpufreq:*:scaling_max_freq"]
mode = "auto"
min = 1200000
max = 3000000
sources = ["operator"]
"#;
    let proposal = |khz: i64| crate::policy::Proposal {
        address: MAX_FREQ.parse().unwrap(),
        value: Value::Int(khz.into()),
        source: Source::Operator,
        reason: "test".into(),
    };
    let mut rig = Rig::new(policy, true, "");
    // The baseline window: p99 152 µs at 3000 MHz.
    rig.window();
    // The change path alone, as if the agent died on its return: nobody called the guard.
    let r = rig
        .deciding
        .path_for_tests_mut()
        .propose(&proposal(1_200_000))
        .unwrap();
    assert_eq!(r.status, crate::change::ChangeStatus::Applied, "{r:?}");
    let change_id = r.journal_id.unwrap();
    assert_eq!(rig.deciding.guard_watching(), 0);
    let mut rig = rig.restarted();
    assert_eq!(rig.deciding.guard_watching(), 1);
    let events = rig.until(2, |events| guard_reverts(events) > 0);
    assert_eq!(
        first_guard_revert(&events),
        (change_id, 152.0, 260.0),
        "judged against the window before"
    );
    assert_eq!(rig.max_freq(), 3_000_000);

    // A change the caller did not watch, with a window closed since: its watch written ahead is
    // gone from the file, and the restart does not take it up.
    rig.window();
    let r = rig
        .deciding
        .path_for_tests_mut()
        .propose(&proposal(2_400_000))
        .unwrap();
    assert_eq!(r.status, crate::change::ChangeStatus::Applied, "{r:?}");
    rig.window();
    let rig = rig.restarted();
    assert_eq!(rig.deciding.guard_watching(), 0);
    rig.assert_schema();
}

/// A watched change an operator reverts through the socket is no longer judged (its regression
/// would otherwise revert a change already undone and quarantine its value); a guard revert the
/// kernel refuses leaves the change watched, unquarantined, and tried again.
#[test]
fn the_guard_judges_only_changes_still_in_place() {
    let policy = r#"
[guard]
signals = ["request_p99"]
windows = 5
max_changes_per_hour = 1000

[params."cpufreq:*:scaling_max_freq"]
mode = "auto"
min = 1200000
max = 3000000
sources = ["operator"]

[params."ethtool:eth0:rx-usecs"]
mode = "auto"
min = 0
max = 100
sources = ["operator"]
"#;
    let mut rig = Rig::new(policy, true, "");
    rig.window();
    assert!(matches!(
        rig.operator_sets_max_freq(1_200_000),
        crate::api::Reply::Ok(_)
    ));
    let id = rig.intents().pop().unwrap().id;
    assert_eq!(rig.deciding.guard_watching(), 1);
    assert!(matches!(
        rig.operator(crate::api::Request::Revert {
            revert: crate::control::RevertRequest::Id(id),
            by: None,
        }),
        crate::api::Reply::Ok(_)
    ));
    assert_eq!(rig.max_freq(), 3_000_000);
    // Not listed as watched meanwhile (s52 storyAC AC-8: until the next window it was).
    match rig.operator(crate::api::Request::Status) {
        crate::api::Reply::Ok(status) => assert!(status.get("watches").is_none(), "{status}"),
        other => panic!("{other:?}"),
    }
    rig.window();
    assert_eq!(rig.deciding.guard_watching(), 0);
    assert!(!rig.json.iter().any(|e| e["kind"] == "guard"));

    // rx-usecs 100 makes p99 352 µs against 152; the NIC then refuses every change.
    assert!(matches!(
        rig.operator_applies(RX, 100),
        crate::api::Reply::Ok(_)
    ));
    assert_eq!(rig.rx(), 100);
    rig.nic.make_unsupported("eth0");
    rig.until(3, |events| guard_reverts(events) == 1);
    assert_eq!(rig.rx(), 100);
    assert_eq!(
        rig.deciding.guard_watching(),
        1,
        "still applied: still watched"
    );
    assert!(
        !rig.journal()
            .records()
            .iter()
            .any(|r| matches!(r, Record::Quarantine { .. })),
        "not quarantined while applied"
    );
    // Still regressing: the next window tries again.
    assert_eq!(guard_reverts(&rig.window()), 1);
    rig.assert_schema();
}

/// A guard revert whose write reads back wrong, so that the change's value is put back, has not
/// reverted anything: the change stays watched and its value is not quarantined.
#[test]
fn a_guard_revert_put_back_after_a_wrong_read_back_is_not_done() {
    let policy = r#"
[guard]
signals = ["request_p99"]
windows = 5
max_changes_per_hour = 1000

[params."ethtool:eth0:rx-usecs"]
mode = "auto"
min = 0
max = 100
sources = ["operator"]
"#;
    let mut rig = Rig::new(policy, true, "");
    rig.nic.set_externally(
        "eth0",
        CoalesceSettings {
            rx_usecs: 3,
            adaptive_rx: false,
        },
    );
    rig.window();
    assert!(matches!(
        rig.operator_applies(RX, 100),
        crate::api::Reply::Ok(_)
    ));
    // From now on the NIC rounds to even values: putting back 3 reads back 2.
    rig.nic.set_granularity(2);
    rig.until(3, |events| guard_reverts(events) > 0);
    assert_eq!(rig.rx(), 100, "put back after the wrong read-back");
    assert_eq!(rig.deciding.guard_watching(), 1);
    // The event says so: a pipeline must not read the change as undone.
    let verdict = rig.json.iter().find(|e| e["kind"] == "guard").unwrap();
    assert_eq!(verdict["verdict"], "revert", "{verdict}");
    assert_eq!(verdict["reverted"], false, "{verdict}");
    assert!(
        verdict["error"]
            .as_str()
            .unwrap()
            .contains("read back \"2\""),
        "{verdict}"
    );
    rig.assert_schema();
    assert!(!rig
        .journal()
        .records()
        .iter()
        .any(|r| matches!(r, Record::Quarantine { .. })));
    let p = rig
        .journal()
        .param_state(&RX.parse().unwrap())
        .unwrap()
        .clone();
    assert_eq!(p.last_applied, Some(Value::Int(100)));
    assert!(p.holding.is_some(), "the change is still in place");
}

/// The same regression under an entry whose own `guard_signals` leave request p99 out: the guard
/// judges the change by those signals only, keeps it after its windows, and the kernel keeps the
/// value.
#[test]
fn a_parameters_guard_signals_decide_what_reverts_it() {
    let policy = r#"
[guard]
signals = ["request_p99"]
windows = 3
max_changes_per_hour = 1000

[params."cpufreq:*:scaling_max_freq"]
mode = "auto"
min = 1200000
max = 3000000
sources = ["operator"]
guard_signals = ["listen_overflows"]
"#;
    let mut rig = Rig::new(policy, true, "");
    rig.window();
    assert!(matches!(
        rig.operator_sets_max_freq(1_200_000),
        crate::api::Reply::Ok(_)
    ));
    // p99 goes from 152 to 260 µs in each of the three watched windows (after the one the change
    // was made in): kept all the same.
    let mut verdicts = Vec::new();
    for _ in 0..4 {
        for e in rig.window() {
            if let Event::Guard(g) = e {
                verdicts.push(g.verdict);
            }
        }
    }
    match verdicts.as_slice() {
        [crate::guard::Verdict::Kept { judged, .. }] => {
            assert!(
                judged.is_empty(),
                "no listener: listen_overflows is unmeasured, not 0 ({judged:?})"
            )
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(rig.max_freq(), 1_200_000);
    assert!(rig.intents().iter().all(|i| i.source != Source::Guard));
    rig.assert_schema();
}

/// An operator's `kpo apply net.ipv4.tcp_rmem=4096,131072,8388608` (one word, applied as three
/// integers) is watched by the guard as what it wrote, and judged after its windows. Watched as
/// the word, it was dropped at the next window as "no longer in place", never judged.
#[test]
fn an_operators_comma_list_is_watched_as_the_integers_it_wrote() {
    let policy = r#"
[guard]
signals = ["request_p99"]
windows = 2
max_changes_per_hour = 1000

[params."net.ipv4.tcp_rmem"]
mode = "auto"
sources = ["operator"]
"#;
    let mut rig = Rig::new(policy, true, "");
    let file = rig._tmp.path().join("proc_sys/net/ipv4/tcp_rmem");
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    std::fs::write(&file, "4096\t131072\t6291456\n").unwrap();
    rig.window();
    let applied = rig.operator(crate::api::Request::Apply(crate::control::ApplyRequest {
        address: "net.ipv4.tcp_rmem".parse().unwrap(),
        value: Value::Word("4096,131072,8388608".into()),
        reason: "test".into(),
        by: None,
    }));
    assert!(matches!(applied, crate::api::Reply::Ok(_)), "{applied:?}");
    let written = std::fs::read_to_string(&file).unwrap();
    assert_eq!(
        written.split_whitespace().collect::<Vec<_>>(),
        ["4096", "131072", "8388608"]
    );
    let mut verdicts = Vec::new();
    for _ in 0..3 {
        for e in rig.window() {
            if let Event::Guard(g) = e {
                verdicts.push(g.verdict);
            }
        }
    }
    assert!(
        matches!(verdicts.as_slice(), [crate::guard::Verdict::Kept { address, .. }]
            if address == "net.ipv4.tcp_rmem"),
        "{verdicts:?}"
    );
    rig.assert_schema();
}

/// `on_exit = "revert"` when someone else has written the parameter since KPO's change, and no
/// window has read it since: their value stays, and KPO yields to them (an `admin_override` seen
/// by the value check) instead of writing back the value from before its change.
/// The frequency limit, driven by the operator alone and put back at exit.
const OPERATOR_MAX_FREQ_REVERTED_AT_EXIT: &str = r#"
[params."cpufreq:*:scaling_max_freq"]
mode = "auto"
min = 1200000
max = 3000000
sources = ["operator"]
on_exit = "revert"
"#;

/// The events of `kind`, in order.
fn of_kind<'a>(json: &'a [serde_json::Value], kind: &str) -> Vec<&'a serde_json::Value> {
    json.iter().filter(|e| e["kind"] == kind).collect()
}

#[test]
fn on_exit_leaves_a_value_someone_else_wrote_since() {
    let policy = OPERATOR_MAX_FREQ_REVERTED_AT_EXIT;
    let mut rig = Rig::new(policy, true, "");
    assert!(matches!(
        rig.operator_sets_max_freq(2_000_000),
        crate::api::Reply::Ok(_)
    ));
    assert_eq!(rig.max_freq(), 2_000_000);
    std::fs::write(&rig.max_freq_file, "2500000\n").unwrap();
    let events = rig.deciding.on_exit();
    rig.record(&events);
    assert_eq!(rig.max_freq(), 2_500_000, "their value stays");
    let overrides = of_kind(&rig.json, "admin_override");
    assert_eq!(overrides.len(), 1, "{:#?}", rig.json);
    assert_eq!(overrides[0]["value"], 2_500_000);
    assert_eq!(overrides[0]["kpo_value"], 2_000_000);
    assert_eq!(overrides[0]["seen_by"], "value_check");
    let address: ParamAddress = MAX_FREQ.parse().unwrap();
    assert!(rig
        .journal()
        .param_state(&address)
        .unwrap()
        .yielded
        .is_some());
    assert!(
        rig.intents().iter().all(|i| i.kind == IntentKind::Change),
        "no revert was journaled"
    );
    rig.assert_schema();

    // Without the other writer, on_exit puts the value from before KPO back.
    let mut rig = Rig::new(policy, true, "");
    rig.operator_sets_max_freq(2_000_000);
    let events = rig.deciding.on_exit();
    rig.record(&events);
    assert_eq!(rig.max_freq(), 3_000_000);
}

/// An approval pending for a value advised against the one `on_exit` puts back is cleared at
/// the stop, as the next window would have, not left listed by `kpo pending` while the agent is
/// down for an approval that can no longer be approved (s49 storyS S-1).
#[test]
fn on_exit_clears_an_approval_its_revert_took_the_ground_from() {
    let policy = OPERATOR_MAX_FREQ_REVERTED_AT_EXIT.replace(
        r#"sources = ["operator"]"#,
        r#"sources = ["operator", "llm"]"#,
    );
    let mut rig = Rig::new(&policy, true, "");
    rig.operator_sets_max_freq(2_000_000);
    let parameter: ParamAddress = MAX_FREQ.parse().unwrap();
    let value = Value::Int(2_400_000);
    let rec = crate::advise::recommendation::Recommendation {
        id: crate::advise::recommendation::Recommendation::make_id(
            crate::advise::recommendation::Source::Llm,
            1,
            &parameter,
            Some(&value),
        ),
        parameter: parameter.clone(),
        current_value: Some(Value::Int(2_000_000)),
        recommended_value: Some(value),
        can_auto_apply: false,
        reason: "the model's".into(),
        confidence: 0.8,
        source: crate::advise::recommendation::Source::Llm,
        window: crate::advise::recommendation::WindowRef {
            index: 1,
            end: "2026-12-01T03:01:00Z".into(),
        },
        application: None,
        netns_cookie: None,
    };
    assert_eq!(rig.deciding.held(), (0, 0));
    let events = rig.deciding.consider(vec![rec]);
    rig.record(&events);
    assert!(
        rig.json.iter().any(|e| e["kind"] == "approval_required"),
        "{:#?}",
        rig.json
    );
    // What `kpo_approvals_pending` shows (s59 story BO-6).
    assert_eq!(rig.deciding.held(), (1, 0));
    let events = rig.deciding.on_exit();
    rig.record(&events);
    assert_eq!(rig.max_freq(), 3_000_000, "put back");
    let resolved = of_kind(&rig.json, "approval_resolved");
    assert_eq!(resolved.len(), 1, "{:#?}", rig.json);
    assert_eq!(
        (&resolved[0]["state"], &resolved[0]["why"]),
        (
            &serde_json::json!("cleared"),
            &serde_json::json!(
                "the kernel now has 3000000, and the advice was made against 2000000"
            )
        ),
        "{}",
        resolved[0]
    );
    rig.assert_schema();
}

/// `on_exit = "revert"` leaves a value a person set, yielded to or handed back with it, and the
/// log says so, with the original it did not put back (s40 soak O4: the log said nothing).
#[test]
fn on_exit_says_which_values_it_leaves_to_people() {
    let policy = OPERATOR_MAX_FREQ_REVERTED_AT_EXIT;
    for handed_back in [false, true] {
        let mut rig = Rig::new(policy, true, "");
        rig.operator_sets_max_freq(2_000_000);
        std::fs::write(&rig.max_freq_file, "2500000\n").unwrap();
        rig.window();
        if handed_back {
            rig.operator(crate::api::Request::Resume {
                param: Some(MAX_FREQ.into()),
                by: "test".into(),
            });
        }
        let (events, log) = crate::logging::logged(|| rig.deciding.on_exit());
        rig.record(&events);
        assert_eq!(rig.max_freq(), 2_500_000, "their value stays");
        let expected = if handed_back {
            format!(
                "on exit: {MAX_FREQ} is left at 2500000, not put back to 3000000: KPO has not \
                 changed it since it was handed back (kpo resume) with that value"
            )
        } else {
            format!(
                "on exit: {MAX_FREQ} is left as the kernel has it, not put back to 3000000: \
                 yielded to "
            )
        };
        assert!(log.contains(&expected), "{expected}\n{log}");
    }
}

/// Noticed in s47: a policy file edited less than a window before SIGTERM was not what `on_exit`
/// followed, and nothing said so. The exit says it follows the policy loaded.
#[test]
fn on_exit_says_when_the_policy_file_differs_from_the_one_followed() {
    let mut rig = Rig::new(OPERATOR_MAX_FREQ_REVERTED_AT_EXIT, true, "");
    rig.policy_from_file();
    rig.operator_sets_max_freq(2_000_000);
    rig.window();
    let edited = OPERATOR_MAX_FREQ_REVERTED_AT_EXIT.replace("\"revert\"", "\"keep\"");
    assert_ne!(edited, OPERATOR_MAX_FREQ_REVERTED_AT_EXIT);
    std::fs::write(rig._tmp.path().join("policy.toml"), edited).unwrap();
    let (events, log) = crate::logging::logged(|| rig.deciding.on_exit());
    rig.record(&events);
    assert!(
        log.contains("on exit: the policy file differs from the policy the agent loaded ("),
        "{log}"
    );
    // The policy loaded is followed: its on_exit reverts.
    assert_eq!(rig.max_freq(), 3_000_000);
    // Unchanged: not said.
    let mut rig = Rig::new(OPERATOR_MAX_FREQ_REVERTED_AT_EXIT, true, "");
    rig.policy_from_file();
    let (_, log) = crate::logging::logged(|| rig.deciding.on_exit());
    assert!(!log.contains("differs from the policy"), "{log}");
}

/// A change of KPO's that failed leaves no value of KPO's either, but was never handed back:
/// on_exit does not say it was (s40 review R2: it did).
#[test]
fn on_exit_does_not_take_a_failed_change_for_a_hand_back() {
    let mut rig = Rig::new(OPERATOR_MAX_FREQ_REVERTED_AT_EXIT, true, "");
    let file = rig.max_freq_file.clone();
    // Taken off again however the test ends, the probe below included.
    let immutable = Immutable::new(&file);
    if immutable.is_none() || std::fs::write(&file, "3000000\n").is_ok() {
        kpo_test_skip::skip("no chattr +i here (root on a file system with the immutable flag)");
        return;
    }
    let reply = rig.operator_sets_max_freq(2_000_000);
    assert!(
        matches!(&reply, crate::api::Reply::Ok(v) if v["status"] == "failed"),
        "the write fails: {reply:?}"
    );
    drop(immutable);
    std::fs::write(&file, "2500000\n").unwrap();
    let (events, log) = crate::logging::logged(|| rig.deciding.on_exit());
    rig.record(&events);
    assert_eq!(rig.max_freq(), 2_500_000);
    assert!(!log.contains("handed back"), "{log}");
}

/// With `allow_adaptive_off`, a coalescing change under adaptive moderation turns it off as a
/// journaled change of its own (`made_way_for`). Reverting the change alone leaves it off (on, the
/// NIC would move the value just put back); `kpo revert --all` and `on_exit` turn it back on after
/// the value, and not while a value it governs is someone else's. A value the NIC moves under
/// adaptive moderation is nobody's: no yield.
#[test]
fn adaptive_moderation_turned_off_for_a_change_comes_back_with_revert_all_and_on_exit() {
    let policy = r#"
[params."ethtool:eth0:rx-usecs"]
mode = "auto"
min = 0
max = 100
sources = ["operator"]
allow_adaptive_off = true
on_exit = "revert"
"#;
    let adaptive = CoalesceSettings {
        rx_usecs: 0,
        adaptive_rx: true,
    };
    let set_rx = |rig: &mut Rig, usecs: i64| rig.operator_applies(RX, usecs);
    let revert = |rig: &mut Rig, which: crate::control::RevertRequest| {
        rig.operator(crate::api::Request::Revert {
            revert: which,
            by: None,
        })
    };
    let mut rig = Rig::new(policy, true, "");
    rig.nic.add_nic("eth0", adaptive);
    assert!(matches!(set_rx(&mut rig, 50), crate::api::Reply::Ok(_)));
    assert_eq!(
        rig.nic_now(),
        CoalesceSettings {
            rx_usecs: 50,
            adaptive_rx: false
        }
    );
    let intents = rig.intents();
    assert_eq!(intents.len(), 2, "{intents:#?}");
    let (switch, change) = (&intents[0], &intents[1]);
    assert_eq!(switch.address.to_string(), "ethtool:eth0:adaptive-rx");
    assert_eq!(
        (switch.before.clone(), switch.after.clone()),
        (Value::Word("on".into()), Value::Word("off".into()))
    );
    assert_eq!(switch.made_way_for.as_deref(), Some(RX));
    assert!(
        switch.reason.contains("allow_adaptive_off"),
        "{}",
        switch.reason
    );
    assert_eq!(change.address.to_string(), RX);
    // 1. Reverting the change puts the value back and leaves adaptive moderation off.
    revert(&mut rig, crate::control::RevertRequest::Id(change.id));
    assert_eq!(
        rig.nic_now(),
        CoalesceSettings {
            rx_usecs: 0,
            adaptive_rx: false
        }
    );
    // 2. `kpo revert --all`: the value, then the switch.
    set_rx(&mut rig, 60);
    revert(&mut rig, crate::control::RevertRequest::All);
    assert_eq!(rig.nic_now(), adaptive);
    // The NIC now moves rx-usecs by itself: nobody is yielded to.
    rig.nic.add_nic(
        "eth0",
        CoalesceSettings {
            rx_usecs: 18,
            adaptive_rx: true,
        },
    );
    rig.window();
    assert!(
        rig.json.iter().all(|e| e["kind"] != "admin_override"),
        "{:#?}",
        rig.json
    );
    // 3. on_exit, though the policy has no entry for adaptive-rx.
    set_rx(&mut rig, 70);
    assert!(!rig.nic_now().adaptive_rx);
    let events = rig.deciding.on_exit();
    rig.record(&events);
    assert_eq!(
        rig.nic_now(),
        adaptive,
        "the value from before KPO, then the switch"
    );
    rig.assert_schema();

    // 4. A value someone else set since stays, and so does the switch: on, it would move it.
    let mut rig = Rig::new(policy, false, "");
    rig.nic.add_nic("eth0", adaptive);
    set_rx(&mut rig, 50);
    rig.nic.add_nic(
        "eth0",
        CoalesceSettings {
            rx_usecs: 33,
            adaptive_rx: false,
        },
    );
    let events = rig.deciding.on_exit();
    rig.record(&events);
    assert_eq!(
        rig.nic_now(),
        CoalesceSettings {
            rx_usecs: 33,
            adaptive_rx: false
        }
    );
    assert!(rig
        .json
        .iter()
        .any(|e| e["kind"] == "admin_override" && e["target"] == RX));
}

/// The edges of adaptive moderation KPO turned off: a person turning it back on makes the value
/// and the switch theirs (an advisor neither overwrites the value nor turns the switch off); a
/// second `kpo revert --all` after the NIC moved the value does not fail; a governed value whose
/// `on_exit` keeps it keeps the switch off at exit.
#[test]
fn adaptive_moderation_turned_on_by_a_person_or_still_needed_stays_on_or_off() {
    let policy = r#"
[params."ethtool:eth0:rx-usecs"]
mode = "auto"
min = 0
max = 100
sources = ["operator", "rules"]
allow_adaptive_off = true
on_exit = "revert"

[params."ethtool:eth0:rx-frames"]
mode = "auto"
min = 0
max = 1000
sources = ["operator"]
allow_adaptive_off = true
on_exit = "keep"
"#;
    let nic = |usecs: u32, frames: u32, adaptive: bool| crate::actuate::coalesce::CoalesceAttrs {
        rx_usecs: Some(usecs),
        rx_max_frames: Some(frames),
        use_adaptive_rx: Some(adaptive),
        ..Default::default()
    };
    let apply = |rig: &mut Rig, address: &str, v: i64| rig.operator_applies(address, v);
    let revert_all = |rig: &mut Rig| match rig.operator(crate::api::Request::Revert {
        revert: crate::control::RevertRequest::All,
        by: None,
    }) {
        crate::api::Reply::Ok(reports) => reports,
        other => panic!("{other:?}"),
    };
    const FRAMES: &str = "ethtool:eth0:rx-frames";

    // 1. A person turns adaptive moderation on again after KPO turned it off.
    let mut rig = Rig::new(policy, true, "");
    rig.nic.add_nic_attrs("eth0", nic(0, 0, true));
    apply(&mut rig, RX, 50);
    assert_eq!(rig.nic.attrs("eth0").unwrap(), nic(50, 0, false));
    rig.nic.add_nic_attrs("eth0", nic(12, 0, true));
    rig.window();
    let overrides: Vec<_> = rig
        .json
        .iter()
        .filter(|e| e["kind"] == "admin_override")
        .map(|e| e["target"].as_str().unwrap().to_string())
        .collect();
    assert!(
        overrides.contains(&RX.to_string())
            && overrides.contains(&"ethtool:eth0:adaptive-rx".to_string()),
        "{overrides:?}"
    );
    let rules = crate::policy::Proposal {
        address: RX.parse().unwrap(),
        value: Value::Int(60),
        source: Source::Rules,
        reason: "test".into(),
    };
    let r = rig.deciding.path_for_tests_mut().propose(&rules).unwrap();
    assert_eq!(r.refusal.map(|r| r.code()), Some("yielded"));
    assert_eq!(rig.nic.attrs("eth0").unwrap(), nic(12, 0, true), "theirs");

    // 2. `kpo revert --all` twice: the second finds the NIC moving the value and does not fail.
    let mut rig = Rig::new(policy, true, "");
    rig.nic.add_nic_attrs("eth0", nic(0, 0, true));
    apply(&mut rig, RX, 50);
    revert_all(&mut rig);
    assert_eq!(rig.nic.attrs("eth0").unwrap(), nic(0, 0, true));
    rig.nic.add_nic_attrs("eth0", nic(18, 0, true));
    let reports = revert_all(&mut rig);
    assert!(
        reports
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["status"] != "failed"),
        "{reports}"
    );
    assert_eq!(rig.nic.attrs("eth0").unwrap(), nic(18, 0, true));

    // 3. rx-frames, which KPO also changed and whose on_exit keeps it, holds the switch off.
    let mut rig = Rig::new(policy, true, "");
    rig.nic.add_nic_attrs("eth0", nic(0, 0, true));
    apply(&mut rig, RX, 50);
    apply(&mut rig, FRAMES, 64);
    assert_eq!(rig.nic.attrs("eth0").unwrap(), nic(50, 64, false));
    let events = rig.deciding.on_exit();
    rig.record(&events);
    assert_eq!(rig.nic.attrs("eth0").unwrap(), nic(0, 64, false));
    rig.assert_schema();
}

/// A request whose client stopped waiting (the connection's 60 s passed while it was queued, or
/// the CLI closed the connection) is dropped, not carried out later behind the operator's back.
#[test]
fn a_request_nobody_waits_for_any_more_is_not_carried_out() {
    let policy = r#"
[params."cpufreq:*:scaling_max_freq"]
mode = "auto"
min = 1200000
max = 3000000
sources = ["operator"]
"#;
    let mut rig = Rig::new(policy, true, "");
    let (answer, reply) = tokio::sync::oneshot::channel();
    drop(reply);
    let events = rig.deciding.serve(crate::api::server::Incoming {
        request: crate::api::Request::Apply(crate::control::ApplyRequest {
            address: MAX_FREQ.parse().unwrap(),
            value: Value::Int(2_000_000),
            reason: "test".into(),
            by: None,
        }),
        caller: CALLER.into(),
        answer,
        connection: None,
    });
    assert!(events.is_empty(), "{events:?}");
    assert_eq!(rig.max_freq(), 3_000_000);
    assert!(rig.intents().is_empty());
    // Its answer channel still open, but the caller closed the connection (the CLI gave up
    // while the loop was stalled, before the connection's own timers had started): dropped too.
    let (agent_end, caller_end) = std::os::unix::net::UnixStream::pair().unwrap();
    drop(caller_end);
    let (answer, _reply) = tokio::sync::oneshot::channel();
    let events = rig.deciding.serve(crate::api::server::Incoming {
        request: crate::api::Request::Apply(crate::control::ApplyRequest {
            address: MAX_FREQ.parse().unwrap(),
            value: Value::Int(2_000_000),
            reason: "test".into(),
            by: None,
        }),
        caller: CALLER.into(),
        answer,
        connection: Some(crate::api::server::Connection::of(&agent_end).unwrap()),
    });
    assert!(events.is_empty(), "{events:?}");
    assert_eq!(rig.max_freq(), 3_000_000);
    assert!(rig.intents().is_empty());
    // The same request, waited for, is carried out.
    assert!(matches!(
        rig.operator_sets_max_freq(2_000_000),
        crate::api::Reply::Ok(_)
    ));
    assert_eq!(rig.max_freq(), 2_000_000);
}

/// `kpo revert --all` and `on_exit` put a cpufreq policy's two limits back in an order each write
/// passes: after an upward shift, the min goes down first (the max first would be below the
/// min, which older kernels refuse and newer ones take by pulling the min down with it, so that
/// the min's own revert then finds a value that is not KPO's). A revert is refused across the
/// other limit as a new value is, so the order, read from the journal, is what lets both pass.
#[test]
fn a_cpufreq_policys_limits_go_back_in_an_order_each_write_passes() {
    const MIN_FREQ: &str = "cpufreq:policy0:scaling_min_freq";
    let policy = r#"
[params."cpufreq:*:*"]
mode = "auto"
min = 1200000
max = 3000000
sources = ["operator"]
on_exit = "revert"
"#;
    for on_exit in [false, true] {
        let mut rig = Rig::new(policy, true, "");
        let dir = rig.max_freq_file.parent().unwrap().to_path_buf();
        let read = |f: &str| {
            std::fs::read_to_string(dir.join(f))
                .unwrap()
                .trim()
                .parse::<i64>()
                .unwrap()
        };
        // The boot's limits, then both shifted up by an operator (max first, as they must be).
        std::fs::write(dir.join("scaling_max_freq"), "1500000\n").unwrap();
        std::fs::write(dir.join("scaling_min_freq"), "1300000\n").unwrap();
        for (address, khz) in [(MAX_FREQ, 2_000_000), (MIN_FREQ, 1_800_000)] {
            let reply = rig.operator_applies(address, khz);
            assert!(matches!(reply, crate::api::Reply::Ok(_)), "{reply:?}");
        }
        if on_exit {
            let events = rig.deciding.on_exit();
            rig.record(&events);
        } else {
            let reply = rig.operator(crate::api::Request::Revert {
                revert: crate::control::RevertRequest::All,
                by: None,
            });
            assert!(matches!(reply, crate::api::Reply::Ok(_)), "{reply:?}");
        }
        assert_eq!(
            (read("scaling_max_freq"), read("scaling_min_freq")),
            (1_500_000, 1_300_000),
            "on_exit {on_exit}"
        );
        let reverted: Vec<String> = rig
            .intents()
            .iter()
            .filter(|i| matches!(i.kind, crate::journal::IntentKind::Revert { .. }))
            .map(|i| i.address.to_string())
            .collect();
        assert_eq!(reverted, [MIN_FREQ, MAX_FREQ], "on_exit {on_exit}");
    }
}

/// The guard reverts a cpufreq policy's two limits in an order each write passes: after both
/// were lowered (the min first, as they must be) and the window regresses, the guard's verdicts
/// come min first, but the max goes back up first, then the min (the min first would be above the
/// max still low, which the kernel clamps, or refuses). The journal shows both reverts done, as
/// source `guard`; neither change is watched any more, and the values are quarantined.
#[test]
fn the_guard_reverts_a_cpufreq_policys_limits_in_an_order_each_write_passes() {
    const MIN_FREQ: &str = "cpufreq:policy0:scaling_min_freq";
    let policy = r#"
[guard]
signals = ["request_p99"]
max_changes_per_hour = 1000

[params."cpufreq:*:*"]
mode = "auto"
min = 1200000
max = 3000000
sources = ["operator"]
"#;
    let mut rig = Rig::new(policy, true, "");
    let dir = rig.max_freq_file.parent().unwrap().to_path_buf();
    let read = |f: &str| {
        std::fs::read_to_string(dir.join(f))
            .unwrap()
            .trim()
            .parse::<i64>()
            .unwrap()
    };
    std::fs::write(dir.join("scaling_min_freq"), "2000000\n").unwrap();
    // The baseline window: p99 152 µs at 3000 MHz.
    rig.window();
    for (address, khz) in [(MIN_FREQ, 1_200_000), (MAX_FREQ, 1_200_000)] {
        let reply = rig.operator_applies(address, khz);
        assert!(matches!(reply, crate::api::Reply::Ok(_)), "{reply:?}");
    }
    assert_eq!(
        (read("scaling_max_freq"), read("scaling_min_freq")),
        (1_200_000, 1_200_000)
    );
    let changes: Vec<u64> = rig.intents().iter().map(|i| i.id).collect();
    assert_eq!(rig.deciding.guard_watching(), 2);
    // 260 µs at 1200 MHz: both regress in the same window.
    let events = rig.until(4, |events| guard_reverts(events) > 0);
    assert_eq!(guard_reverts(&events), 2);
    assert_eq!(
        (read("scaling_max_freq"), read("scaling_min_freq")),
        (3_000_000, 2_000_000)
    );
    let reverts: Vec<_> = rig
        .intents()
        .into_iter()
        .filter(|i| matches!(i.kind, IntentKind::Revert { .. }))
        .collect();
    let order: Vec<(String, IntentKind)> = reverts
        .iter()
        .map(|i| (i.address.to_string(), i.kind.clone()))
        .collect();
    assert_eq!(
        order,
        [
            (
                MAX_FREQ.to_string(),
                IntentKind::Revert {
                    of: Some(changes[1])
                }
            ),
            (
                MIN_FREQ.to_string(),
                IntentKind::Revert {
                    of: Some(changes[0])
                }
            ),
        ]
    );
    for revert in &reverts {
        assert_eq!(revert.source, Source::Guard);
        assert!(
            matches!(
                rig.journal().outcome(revert.id),
                Some(Outcome::Reverted { .. })
            ),
            "revert #{} done",
            revert.id
        );
    }
    assert_eq!(rig.deciding.guard_watching(), 0);
    let quarantined = rig
        .journal()
        .records()
        .iter()
        .filter(|r| matches!(r, Record::Quarantine { .. }))
        .count();
    assert_eq!(quarantined, 2);
    rig.assert_schema();
}

/// Defect: a guard revert that only someone else could let through (a limit put back across the
/// other limit, which a person holds) was retried, refused, in every regressing window for as
/// long as they held it, with a `guard` event each time. Now it is said once and the change is
/// no longer watched (and not quarantined: it was not reverted).
#[test]
fn a_guard_revert_a_persons_other_limit_blocks_is_said_once_and_not_watched_again() {
    const MIN_FREQ: &str = "cpufreq:policy0:scaling_min_freq";
    let policy = r#"
[guard]
signals = ["request_p99"]
max_changes_per_hour = 1000

[params."cpufreq:*:*"]
mode = "auto"
min = 1200000
max = 3000000
sources = ["operator"]
"#;
    let mut rig = Rig::new(policy, true, "");
    let dir = rig.max_freq_file.parent().unwrap().to_path_buf();
    std::fs::write(dir.join("scaling_min_freq"), "2000000\n").unwrap();
    // The baseline window: p99 152 µs at 3000 MHz.
    rig.window();
    for (address, khz) in [(MIN_FREQ, 1_200_000), (MAX_FREQ, 1_200_000)] {
        let reply = rig.operator_applies(address, khz);
        assert!(matches!(reply, crate::api::Reply::Ok(_)), "{reply:?}");
    }
    // A person sets the max to 1250 MHz: yielded to them, its watch dropped; p99 253 µs
    // regresses, and the min's revert (back to 2000 MHz) would cross the person's max.
    std::fs::write(dir.join("scaling_max_freq"), "1250000\n").unwrap();
    let guard_events: Vec<_> = (0..5).flat_map(|_| rig.window_guard_events()).collect();
    assert_eq!(guard_events.len(), 1, "{guard_events:#?}");
    assert_eq!(guard_events[0].reverted, Some(false));
    let error = guard_events[0].error.as_deref().unwrap();
    assert!(
        error.contains(
            "cannot be reverted while scaling_max_freq is not KPO's to move, and putting 2000000 \
             back would cross it: no longer watched"
        ),
        "{error}"
    );
    assert_eq!(rig.deciding.guard_watching(), 0);
    let read = |f: &str| std::fs::read_to_string(dir.join(f)).unwrap();
    assert_eq!(
        (read("scaling_max_freq"), read("scaling_min_freq")),
        ("1250000\n".into(), "1200000\n".into())
    );
    assert!(!rig
        .journal()
        .records()
        .iter()
        .any(|r| matches!(r, Record::Quarantine { .. })));
    rig.assert_schema();
}

/// A value that adaptive moderation was turned off for, yielded to a person and handed back by
/// `kpo resume` with their value in it: `on_exit` does not turn adaptive moderation back on (the
/// NIC would move their value).
#[test]
fn on_exit_leaves_adaptive_moderation_off_under_a_value_handed_back() {
    let policy = r#"
[params."ethtool:eth0:rx-usecs"]
mode = "auto"
min = 0
max = 100
sources = ["operator"]
allow_adaptive_off = true
on_exit = "revert"
"#;
    let mut rig = Rig::new(policy, true, "");
    rig.nic.add_nic(
        "eth0",
        CoalesceSettings {
            rx_usecs: 0,
            adaptive_rx: true,
        },
    );
    assert!(matches!(
        rig.operator_applies(RX, 50),
        crate::api::Reply::Ok(_)
    ));
    let persons = CoalesceSettings {
        rx_usecs: 33,
        adaptive_rx: false,
    };
    rig.nic.add_nic("eth0", persons);
    rig.window();
    assert!(rig.json.iter().any(|e| e["kind"] == "admin_override"));
    rig.operator(crate::api::Request::Resume {
        param: Some(RX.into()),
        by: "test".into(),
    });
    let events = rig.deciding.on_exit();
    rig.record(&events);
    assert_eq!(rig.nic_now(), persons);
}

/// A trial whose window has no usable energy (here an estimate the loop may not run on) is not a
/// measurement, but it is still held to the SLO: one that breaks it goes back at once.
#[test]
fn an_unmeasured_trial_that_breaks_the_slo_is_reverted() {
    let mut rig = Rig::new(&policy(""), true, "");
    rig.window();
    let trial = (rig.max_freq(), rig.rx());
    assert_ne!(trial, (3_000_000, 0), "the first trial moved the knobs");
    let p99 = rig.p99();
    assert!(
        p99 > SLO_US,
        "the trial {trial:?} breaks the SLO ({p99} µs)"
    );
    rig.estimated = true;
    rig.window();
    assert!(rig.saw(|e| matches!(e, LiveEvent::Unmeasured { .. })));
    assert!(rig.saw(|e| matches!(e, LiveEvent::SloBreach { .. })));
    assert_eq!(
        (rig.max_freq(), rig.rx()),
        (3_000_000, 0),
        "back to the start"
    );
    rig.assert_schema();
}

/// With several windows per trial, a window that breaks the SLO ends its trial at once: the loop
/// goes back after that window, not at the trial's end.
#[test]
fn a_window_that_breaks_the_slo_ends_its_trial() {
    let mut rig = Rig::new(&policy(""), true, "windows_per_trial = 3");
    for _ in 0..3 {
        rig.window();
    }
    let trial = (rig.max_freq(), rig.rx());
    assert_ne!(trial, (3_000_000, 0), "the first trial moved the knobs");
    let p99 = rig.p99();
    assert!(
        p99 > SLO_US,
        "the trial {trial:?} breaks the SLO ({p99} µs)"
    );
    rig.window();
    assert!(rig.saw(|e| matches!(e, LiveEvent::SloBreach { .. })));
    assert_eq!(
        (rig.max_freq(), rig.rx()),
        (3_000_000, 0),
        "back to the start"
    );
    rig.assert_schema();
}

/// The agent set its energy meter aside mid-trial and the windows now come from the estimate:
/// the trial's windows of the old source are dropped (joules of two sources do not add up), so
/// it takes `windows_per_trial` windows of the new one, and its measurement, of the estimate,
/// restarts the search.
#[test]
fn a_trial_spanning_a_new_energy_source_starts_over() {
    let mut rig = Rig::new(
        &policy(""),
        true,
        "windows_per_trial = 3\nallow_estimated_energy = true",
    );
    for _ in 0..3 {
        rig.window();
    }
    let measured = |rig: &Rig| {
        rig.live
            .iter()
            .filter(|e| matches!(e, LiveEvent::Measured { .. }))
            .count()
    };
    assert_eq!(measured(&rig), 1, "the start, measured over 3 windows");
    // The first trial breaks the SLO in its first window (as in
    // a_window_that_breaks_the_slo_ends_its_trial): measured at once, and back to the start,
    // which meets it.
    rig.window();
    assert_eq!(measured(&rig), 2);
    assert_eq!((rig.max_freq(), rig.rx()), (3_000_000, 0));
    assert!(rig.p99() <= SLO_US);
    rig.window();
    rig.estimated = true;
    rig.window();
    rig.window();
    assert_eq!(
        measured(&rig),
        2,
        "1 window of rapl and 2 of the estimate are no trial"
    );
    rig.window();
    assert_eq!(measured(&rig), 3);
    assert!(matches!(
        rig.live
            .iter()
            .rev()
            .find(|e| matches!(e, LiveEvent::Measured { .. })),
        Some(LiveEvent::Measured {
            energy_source: EnergySource::Estimated,
            ..
        })
    ));
    assert!(rig.saw(|e| matches!(e, LiveEvent::Restarted { reason } if reason.starts_with("the energy source changed from rapl to estimated"))));
    rig.assert_schema();
}

/// A rig whose NICs eth0 and eth1 are one knob (`ethtool:*:rx-usecs`, with `entry_extra` lines
/// in its entry), judged by the guard on no signal these windows move, so that the guard leaves
/// a trial's value to the loop; the loop started over both.
fn two_nics_as_one_knob(entry_extra: &str) -> Rig {
    let policy = policy("").replace(
        r#"[params."ethtool:eth0:rx-usecs"]"#,
        &format!(
            "[params.\"ethtool:*:rx-usecs\"]\nguard_signals = [\"listen_overflows\"]\n{entry_extra}"
        ),
    );
    let rig = Rig::new(&policy, true, "");
    for nic in ["eth0", "eth1"] {
        std::fs::create_dir_all(rig._tmp.path().join("sys/class/net").join(nic)).unwrap();
    }
    rig.nic.add_nic(
        "eth1",
        CoalesceSettings {
            rx_usecs: 0,
            adaptive_rx: false,
        },
    );
    let rig = rig.restarted();
    let started = rig.last_started();
    assert_eq!(
        started["knobs"],
        serde_json::json!(["cpufreq:policy0:scaling_max_freq", "ethtool:*:rx-usecs"]),
        "{started}"
    );
    rig
}

/// The NIC's rx-usecs now.
fn rx(rig: &Rig, nic: &str) -> u32 {
    rig.nic.settings(nic).unwrap().rx_usecs
}

/// Windows until a trial leaves eth0 and eth1 apart.
fn until_the_nics_differ(rig: &mut Rig) {
    let mut windows = 0;
    while rx(rig, "eth0") == rx(rig, "eth1") {
        windows += 1;
        assert!(windows <= 10, "no trial moved the NICs: {:#?}", rig.json);
        rig.window();
    }
}

/// A group trial whose second member's write fails, and whose roll-back of the first fails too
/// (the driver refused both), leaves the members apart. The loop tries the roll-back again at the
/// next window, and after each failed try waits a window more than before, unless a window breaks
/// the SLO; the knob is one configuration again without waiting for a restart.
#[test]
fn a_roll_back_that_failed_is_tried_again_at_later_windows() {
    let mut rig = two_nics_as_one_knob("");
    // The next trial to move the NICs writes eth0, then eth1 fails, then putting eth0 back fails
    // (and so would any write after, for now). The loop tries no other trial over the members
    // apart.
    rig.nic.fail_sets_after(1, 1000);
    until_the_nics_differ(&mut rig);
    let failed = rig
        .live
        .iter()
        .filter(|e| matches!(e, LiveEvent::ApplyFailed { .. }))
        .count();
    assert_eq!(failed, 1, "{:#?}", rig.live);
    let trial = rx(&rig, "eth0");
    assert_ne!(trial, 0);
    assert_eq!(rx(&rig, "eth1"), 0);
    let owed_tries = |rig: &Rig| {
        rig.intents()
            .iter()
            .filter(|i| i.reason.contains("its roll-back failed before"))
            .count()
    };
    assert_eq!(owed_tries(&rig), 0);

    // Windows within the SLO from here on, the trial's value left in place or not: the waits
    // apply.
    rig.extra_p99_us = -250.0;
    assert_eq!(owed_tries(&rig), 0);
    // The next window's try fails too (the driver is still being reset).
    rig.nic.fail_sets_after(0, 1);
    rig.window();
    assert_eq!(owed_tries(&rig), 1);
    assert_eq!(rx(&rig, "eth0"), trial);
    // One window's wait, no try; then the next try fails again.
    rig.window();
    assert_eq!(owed_tries(&rig), 1);
    rig.nic.fail_sets_after(0, 1);
    rig.window();
    assert_eq!(owed_tries(&rig), 2);
    assert_eq!(rx(&rig, "eth0"), trial);
    // Two windows to wait now; in the first, no try.
    rig.window();
    assert_eq!(owed_tries(&rig), 2);
    // A window that breaks the SLO does not wait: the value left may be what broke it. The
    // try takes, and the members agree again, at what they held before the trial.
    rig.extra_p99_us = 1000.0;
    rig.window();
    assert_eq!(owed_tries(&rig), 3);
    assert_eq!((rx(&rig, "eth0"), rx(&rig, "eth1")), (0, 0));
    // The window itself was not the loop's configuration: resynced, to the kernel's values now,
    // not to the members apart as the window closed.
    let kernel = vec![rig.max_freq() as f64, 0.0];
    assert!(
        matches!(rig.live.iter().rev().find(|e| matches!(e, LiveEvent::Resynced { .. })),
            Some(LiveEvent::Resynced { config, .. }) if *config == kernel),
        "{:#?}",
        rig.live
    );
    rig.extra_p99_us = 0.0;
    // The loop goes on over the knob: no window after is resynced for members apart.
    let mark = rig.live.len();
    for _ in 0..3 {
        rig.window();
    }
    assert!(
        !rig.live[mark..]
            .iter()
            .any(|e| matches!(e, LiveEvent::Resynced { reason, .. } if reason.contains("differ"))),
        "{:#?}",
        &rig.live[mark..]
    );
    rig.assert_schema();
}

/// A roll-back the driver keeps refusing while every window breaks the SLO is tried at once at
/// each such window for its 8 tries, then slows down to one try every 64 windows (s51 review3
/// N2: tried and journaled at every window that broke the SLO, for as long as it failed).
#[test]
fn a_roll_back_refused_at_every_breaking_window_slows_down() {
    let mut rig = two_nics_as_one_knob("");
    rig.nic.fail_sets_after(1, 100_000);
    until_the_nics_differ(&mut rig);
    let owed_tries = |rig: &Rig| {
        rig.intents()
            .iter()
            .filter(|i| i.reason.contains("failed before"))
            .count()
    };
    rig.extra_p99_us = 1000.0;
    for _ in 0..30 {
        rig.window();
    }
    assert_eq!(owed_tries(&rig), 8, "{:#?}", rig.live);
    assert_eq!(
        rig.deciding
            .optimizer_for_tests()
            .unwrap()
            .slowed_for_tests(),
        1
    );
}

/// A roll-back still owed when the agent stops gets a last try, waits aside: the members agree
/// again at the exit, not only at the next start.
#[test]
fn an_owed_roll_back_gets_a_last_try_at_exit() {
    let mut rig = two_nics_as_one_knob("on_exit = \"keep\"");
    rig.extra_p99_us = -250.0;
    rig.nic.fail_sets_after(1, 2);
    until_the_nics_differ(&mut rig);
    rig.nic.fail_sets_after(0, 1);
    rig.window();
    assert_ne!(
        rx(&rig, "eth0"),
        rx(&rig, "eth1"),
        "the first try failed; the next waits"
    );
    let events = rig.deciding.on_exit();
    rig.record(&events);
    assert_eq!((rx(&rig, "eth0"), rx(&rig, "eth1")), (0, 0));
}

/// The same with one parameter per knob: a trial writes eth0's knob, eth1's fails, and eth0's
/// roll-back fails. The windows read eth0 at the trial's value, which is not taken for someone
/// else's change while its roll-back is owed: each is resynced to the loop's configuration, the
/// one before the trial, while the roll-back is tried again (its first try fails, then a window's
/// wait) until it takes.
#[test]
fn an_owed_roll_back_of_a_one_parameter_knob_is_tried_until_it_takes() {
    let policy = format!(
        "{}\n[params.\"ethtool:eth1:rx-usecs\"]\nmode = \"auto\"\nmin = 0\nmax = 100\n\
         sources = [\"optimizer\"]\nguard_signals = [\"listen_overflows\"]\n",
        policy("").replace(
            "[params.\"ethtool:eth0:rx-usecs\"]",
            "[params.\"ethtool:eth0:rx-usecs\"]\nguard_signals = [\"listen_overflows\"]",
        )
    );
    let rig = Rig::new(&policy, true, "");
    rig.nic.add_nic(
        "eth1",
        CoalesceSettings {
            rx_usecs: 0,
            adaptive_rx: false,
        },
    );
    let mut rig = rig.restarted();
    assert_eq!(
        rig.last_started()["knobs"],
        serde_json::json!([
            "cpufreq:policy0:scaling_max_freq",
            "ethtool:eth0:rx-usecs",
            "ethtool:eth1:rx-usecs"
        ])
    );
    rig.extra_p99_us = -250.0;
    // eth1's write, eth0's roll-back, and the roll-back's first try fail.
    rig.nic.fail_sets_after(1, 3);
    let mut windows = 0;
    while !rig.saw(|e| matches!(e, LiveEvent::ApplyFailed { .. })) {
        windows += 1;
        assert!(windows <= 10, "no trial failed: {:#?}", rig.live);
        rig.window();
    }
    let trial = rx(&rig, "eth0");
    assert_ne!(
        trial, 0,
        "eth0 written, its roll-back failed: {:#?}",
        rig.live
    );
    assert_eq!(rx(&rig, "eth1"), 0);
    let before: Vec<f64> = rig
        .live
        .iter()
        .rev()
        .find_map(|e| match e {
            LiveEvent::ApplyFailed { .. } => None,
            LiveEvent::Measured { config, .. } => Some(config.clone()),
            _ => None,
        })
        .unwrap();
    let last_resynced = |rig: &Rig| {
        rig.live
            .iter()
            .rev()
            .find_map(|e| match e {
                LiveEvent::Resynced { config, .. } => Some(config.clone()),
                _ => None,
            })
            .expect("the window was not the loop's configuration")
    };
    // The first try fails; the next window waits; the one after, the try takes.
    for (tried, eth0) in [(1, trial), (1, trial), (2, 0)] {
        let mark = rig.live.len();
        rig.window();
        assert_eq!(
            rig.intents()
                .iter()
                .filter(|i| i.reason.contains("its roll-back failed before"))
                .count(),
            tried
        );
        assert_eq!(rx(&rig, "eth0"), eth0);
        assert!(
            rig.live[mark..]
                .iter()
                .any(|e| matches!(e, LiveEvent::Resynced { .. })),
            "{:#?}",
            &rig.live[mark..]
        );
        assert_eq!(last_resynced(&rig), before, "{:#?}", rig.live);
    }
    assert_eq!(before[1], 0.0);
    rig.assert_schema();
}

/// A glob over cpufreq policies is one knob: intel_pstate has a policy per CPU, and a dimension
/// each would make a search no budget can cover (with 16, the candidates would not even fit).
/// Every policy takes each trial's value, and an SLO breach puts every one back.
#[test]
fn one_knob_moves_every_cpufreq_policy_its_entry_matches() {
    let rig = Rig::new(&policy(""), true, "");
    let base = rig.more_policies(16);
    let max_freqs = || -> Vec<i64> {
        (0..16)
            .map(|n| {
                std::fs::read_to_string(base.join(format!("policy{n}/scaling_max_freq")))
                    .unwrap()
                    .trim()
                    .parse()
                    .unwrap()
            })
            .collect()
    };
    let mut rig = rig.restarted();
    let started = rig.last_started();
    assert_eq!(
        started["knobs"],
        serde_json::json!(["cpufreq:*:scaling_max_freq", "ethtool:eth0:rx-usecs"]),
        "{started}"
    );
    rig.window();
    let trial = rig.max_freq();
    assert_ne!(trial, 3_000_000, "the first trial moved the frequency");
    assert_eq!(max_freqs(), vec![trial; 16]);
    let p99 = rig.p99();
    assert!(p99 > SLO_US, "the trial breaks the SLO ({p99} µs)");
    rig.window();
    assert_eq!(max_freqs(), vec![3_000_000; 16], "every policy put back");
    assert_eq!(
        rig.intents().len(),
        2 * (16 + 1),
        "16 policies and the NIC, there and back"
    );

    // Someone else sets one policy apart from KPO's value: it is yielded, and the whole knob
    // leaves the search (the others are searched on).
    std::fs::write(base.join("policy5/scaling_max_freq"), "2000000\n").unwrap();
    rig.window();
    let set_aside = rig.live.iter().find_map(|e| match e {
        LiveEvent::Regrouped { set_aside, .. } => Some(set_aside.clone()),
        _ => None,
    });
    assert_eq!(
        set_aside,
        Some(vec![
            "cpufreq:*:scaling_max_freq (yielded: cpufreq:policy5:scaling_max_freq = 2000000)"
                .to_string()
        ]),
        "{:?}",
        rig.live
    );
    rig.assert_schema();

    // Handed back (kpo resume), the knob's parameters still differ: the search cannot start
    // over it until they agree, and says how (s44 storyB: told only that "someone else changed
    // one", while kpo resume had said KPO manages it again).
    let resumed = rig.operator(crate::api::Request::Resume {
        param: Some("cpufreq:policy5:scaling_max_freq".into()),
        by: "test".into(),
    });
    assert!(matches!(resumed, crate::api::Reply::Ok(_)), "{resumed:?}");
    rig.window();
    let unmeasured = rig.live.iter().rev().find_map(|e| match e {
        LiveEvent::Unmeasured { reason } => Some(reason.clone()),
        _ => None,
    });
    assert!(
        unmeasured.as_deref().is_some_and(|r| r.starts_with(
            "cannot start the search over: cpufreq:*:scaling_max_freq: its parameters differ ("
        ) && r.ends_with(
            "); the optimizer moves them together from one value: set them alike (kpo apply \
             each to one value), or give each its own policy entry; the search starts over the \
             window they agree"
        )),
        "{unmeasured:?}"
    );

    // Set apart before KPO ever changed it (nothing of KPO's to yield): the knob has no one
    // value, and each window says so.
    let rig = Rig::new(&policy(""), true, "");
    let base = rig.more_policies(4);
    let mut rig = rig.restarted();
    std::fs::write(base.join("policy2/scaling_max_freq"), "2000000\n").unwrap();
    rig.window();
    assert!(
        rig.live.iter().any(|e| matches!(
            e,
            LiveEvent::Resynced { reason, .. } if reason.contains("its parameters differ")
        )),
        "{:?}",
        rig.live
    );
    assert_eq!(rig.intents().len(), 0, "nothing written");
    rig.assert_schema();
}

/// Two entries for one attribute are two knobs, each named after its entry; a group whose
/// parameters differ when the loop starts is left out, with the values.
#[test]
fn each_entry_is_its_own_knob_and_a_group_set_apart_is_left_out() {
    let rig = Rig::new(&policy(""), true, "");
    let base = rig.more_policies(4);
    let two_entries = r#"
[guard]
max_changes_per_hour = 1000

[params."cpufreq:policy[01]:scaling_max_freq"]
mode = "auto"
min = 1200000
max = 3000000
sources = ["optimizer"]

[params."cpufreq:policy[23]:scaling_max_freq"]
mode = "auto"
min = 1200000
max = 3000000
sources = ["optimizer"]
"#;
    let mut rig = rig;
    rig.policy_text = two_entries.to_string();
    let rig = rig.restarted();
    let started = rig.last_started();
    assert_eq!(
        started["knobs"],
        serde_json::json!([
            "cpufreq:policy[01]:scaling_max_freq",
            "cpufreq:policy[23]:scaling_max_freq"
        ]),
        "{started}"
    );
    // Set apart before a start: that group is left out, the other searched.
    std::fs::write(base.join("policy3/scaling_max_freq"), "2000000\n").unwrap();
    let rig = rig.restarted();
    let left_out = rig.left_out_of_start_over(&["cpufreq:policy[01]:scaling_max_freq"]);
    assert!(
        left_out.contains("cpufreq:policy[23]:scaling_max_freq: its parameters differ")
            && left_out.contains("cpufreq:policy3:scaling_max_freq = 2000000")
            && left_out.contains("moves them together from one value: set them alike"),
        "{left_out}"
    );
}

/// A policy giving the optimizer each of `entries` (cpufreq limits, 1.2 to 3 GHz, mode auto).
fn cpufreq_entries(entries: &[&str]) -> String {
    let mut text = "[guard]\nmax_changes_per_hour = 1000\n".to_string();
    for entry in entries {
        text.push_str(&format!(
            "\n[params.\"{entry}\"]\nmode = \"auto\"\nmin = 1200000\nmax = 3000000\n\
             sources = [\"optimizer\"]\n"
        ));
    }
    text
}

impl Rig {
    /// A rig over `policy_text` on two cpufreq policies, `file` of policy1 holding `value`
    /// before the agent starts.
    fn over_two_policies(policy_text: &str, file: &str, value: &str) -> (Rig, PathBuf) {
        let rig = Rig::new(policy_text, true, "");
        let base = rig.more_policies(2);
        std::fs::write(base.join("policy1").join(file), format!("{value}\n")).unwrap();
        (rig.restarted(), base)
    }
}

/// s48 storyP P-4: a trial one member of a group cannot take (below its `scaling_min_freq`, or
/// beyond its hardware range) passed the preview, which asked the policy only: it was written to
/// the members before, refused at that member, and taken back, up to three times a window. The
/// kernel's own checks are made before anything is written, and the value is refused through
/// the path as invalid.
#[test]
fn a_value_one_member_cannot_take_is_not_written_to_the_others() {
    let (mut rig, _) = Rig::over_two_policies(
        &cpufreq_entries(&["cpufreq:*:scaling_max_freq"]),
        "scaling_min_freq",
        "2000000",
    );
    for _ in 0..12 {
        rig.window();
    }
    let intents = rig.intents();
    let lowered_below = intents.iter().filter(|i| {
        i.kind == IntentKind::Change && matches!(i.after, Value::Int(v) if v < 2_000_000)
    });
    assert_eq!(lowered_below.count(), 0, "{intents:#?}");
    let refused_invalid = rig.json.iter().filter(|e| {
        e["kind"] == "change"
            && e["phase"] == "refused"
            && e["target"] == "cpufreq:policy1:scaling_max_freq"
            && e["refusal"] == "invalid"
    });
    assert!(refused_invalid.count() > 0, "{:#?}", rig.json);
    let set_aside = rig.live.iter().filter(|e| {
        matches!(e, LiveEvent::Refused { retry: false, reason, .. }
            if reason.contains("below scaling_min_freq (2000000 kHz)"))
    });
    assert!(set_aside.count() > 0, "{:?}", rig.live);
    assert!(
        !rig.live
            .iter()
            .any(|e| matches!(e, LiveEvent::ApplyFailed { .. })),
        "{:?}",
        rig.live
    );
    rig.assert_schema();
}

/// s48 storyP P-7: a loop off at start because a group's parameters differed stayed off for
/// good, though its reason asked the operator to set them alike: it starts at the window after
/// they agree, and its reason is said once meanwhile.
#[test]
fn a_loop_off_for_a_group_apart_starts_once_they_agree() {
    let (mut rig, base) = Rig::over_two_policies(
        &cpufreq_entries(&["cpufreq:*:scaling_max_freq"]),
        "scaling_max_freq",
        "2000000",
    );
    let offs = |rig: &Rig| {
        rig.json
            .iter()
            .filter(|e| e["event"] == "off")
            .map(|e| e["reason"].as_str().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    let off = offs(&rig);
    assert_eq!(off.len(), 1, "{off:?}");
    assert!(
        off[0].contains("its parameters differ")
            && off[0].ends_with("(asked again at each window: the loop starts once they agree)"),
        "{off:?}"
    );
    for _ in 0..2 {
        rig.window();
    }
    // Another value, still apart (s48 review L4: the reason names the values, and was said
    // again).
    std::fs::write(base.join("policy1/scaling_max_freq"), "2200000\n").unwrap();
    rig.window();
    rig.window();
    assert_eq!(offs(&rig).len(), 1, "said once");
    assert!(rig.deciding.optimizer_for_tests().is_none());
    std::fs::write(base.join("policy1/scaling_max_freq"), "3000000\n").unwrap();
    let seen = rig.json.len();
    rig.window();
    let started: Vec<_> = rig.json[seen..]
        .iter()
        .filter(|e| e["event"] == "started")
        .collect();
    assert_eq!(started.len(), 1, "{:?}", &rig.json[seen..]);
    assert_eq!(
        started[0]["knobs"],
        serde_json::json!(["cpufreq:*:scaling_max_freq"])
    );
    assert_eq!(started[0]["config"], serde_json::json!([3000000.0]));
    // And it searches from the next window on.
    rig.window();
    rig.window();
    assert!(
        rig.live
            .iter()
            .any(|e| matches!(e, LiveEvent::Applied { .. })),
        "{:?}",
        rig.live
    );
    rig.assert_schema();
}

/// s58 story BG-1: a member whose hardware range cannot be read (`cpuinfo_max_freq` holding a
/// word, or gone) refused every candidate of the group as invalid, and the search spent its whole
/// budget so, reported as converged. It is left out at start, named with why, as an unreadable
/// value is, and the search goes on over the others.
#[test]
fn a_member_whose_hardware_range_cannot_be_read_is_left_out_at_start() {
    for broken in ["fast", ""] {
        let (rig, base) = Rig::over_two_policies(
            &cpufreq_entries(&["cpufreq:*:scaling_max_freq"]),
            "cpuinfo_max_freq",
            broken,
        );
        let mut rig = if broken.is_empty() {
            std::fs::remove_file(base.join("policy1/cpuinfo_max_freq")).unwrap();
            rig.restarted()
        } else {
            rig
        };
        let left_out = rig.left_out_of_start_over(&["cpufreq:policy0:scaling_max_freq"]);
        assert!(
            left_out.contains("cpufreq:policy1:scaling_max_freq")
                && left_out.contains("cpuinfo_max_freq"),
            "{left_out}"
        );
        for _ in 0..6 {
            rig.window();
        }
        let invalid = rig.live.iter().filter(|e| {
            matches!(e, LiveEvent::Refused { reason, .. } if reason.contains("cpuinfo_max_freq"))
        });
        assert_eq!(invalid.count(), 0, "{:?}", rig.live);
        assert!(
            (rig.intents().iter()).any(|i| i.kind == IntentKind::Change),
            "the search goes on over policy0: {:?}",
            rig.live
        );
    }
}

/// s48 review M2: with both limits of the policies as knobs, the check was left out whole where
/// only the other limit's part depends on the write order: a value beyond one member's hardware
/// range was written to the others first again. (The levels lie within the range read at the
/// loop's start since s58 story BG-4: here the range narrows after it.)
#[test]
fn a_value_beyond_one_members_hardware_range_is_not_written_with_both_limits_moving() {
    let (mut rig, base) = Rig::over_two_policies(
        &cpufreq_entries(&["cpufreq:*:scaling_max_freq", "cpufreq:*:scaling_min_freq"]),
        "cpuinfo_max_freq",
        "3000000",
    );
    std::fs::write(base.join("policy1/cpuinfo_max_freq"), "2400000\n").unwrap();
    for _ in 0..16 {
        rig.window();
    }
    let intents = rig.intents();
    let beyond = intents.iter().filter(|i| {
        i.kind == IntentKind::Change && matches!(i.after, Value::Int(v) if v > 2_400_000)
    });
    assert_eq!(beyond.count(), 0, "{intents:#?}");
    let refused = rig.live.iter().filter(|e| {
        matches!(e, LiveEvent::Refused { retry: false, reason, .. }
            if reason.contains("(the hardware range, cpuinfo_min_freq..cpuinfo_max_freq, in kHz)"))
    });
    assert!(refused.count() > 0, "{:?}", rig.live);
    rig.assert_schema();
}

/// s48 review2 N4: whether the other limit moves was asked per knob, not per member: with the
/// min limits of every policy as one knob and only policy0's max as another, policy1's min was
/// not checked against policy1's max, which no knob moves, and the group was written and taken
/// back again.
#[test]
fn a_member_whose_own_other_limit_does_not_move_is_checked_against_it() {
    let (mut rig, _) = Rig::over_two_policies(
        &cpufreq_entries(&[
            "cpufreq:policy0:scaling_max_freq",
            "cpufreq:*:scaling_min_freq",
        ]),
        "scaling_max_freq",
        "2000000",
    );
    for _ in 0..16 {
        rig.window();
    }
    let intents = rig.intents();
    let min_above = intents.iter().filter(|i| {
        i.kind == IntentKind::Change
            && i.address.name == "scaling_min_freq"
            && matches!(i.after, Value::Int(v) if v > 2_000_000)
    });
    assert_eq!(min_above.count(), 0, "{intents:#?}");
    let refused = rig.live.iter().filter(|e| {
        matches!(e, LiveEvent::Refused { retry: false, reason, .. }
            if reason.contains("cpufreq:policy1:scaling_min_freq"))
    });
    assert!(refused.count() > 0, "{:?}", rig.live);
    rig.assert_schema();
}

/// Each policy's `scaling_max_freq` in the temporary tree `base`, policy0 to policy`n-1`.
fn max_freqs(base: &Path, n: usize) -> Vec<i64> {
    (0..n)
        .map(|i| {
            std::fs::read_to_string(base.join(format!("policy{i}/scaling_max_freq")))
                .unwrap()
                .trim()
                .parse()
                .unwrap()
        })
        .collect()
}

impl Rig {
    /// The optimizer's change of one group member, journaled and written as `try_config` makes
    /// it: what an agent killed between two members' writes leaves of its trial. The change id.
    fn the_loop_writes(&mut self, address: &str, value: i64) -> u64 {
        let p = crate::policy::Proposal {
            address: address.parse().unwrap(),
            value: Value::Int(value.into()),
            source: Source::Optimizer,
            reason: format!("optimizer explore: trial [{value}.0, 0.0]"),
        };
        let r = self.deciding.path_for_tests_mut().propose(&p).unwrap();
        assert_eq!(r.status, crate::change::ChangeStatus::Applied, "{r:?}");
        r.journal_id.unwrap()
    }

    /// The intents journaled after the first `from` records.
    fn intents_since(&self, from: usize) -> Vec<crate::journal::Intent> {
        self.journal().records()[from..]
            .iter()
            .filter_map(|r| match r {
                Record::Intent(i) => Some(i.clone()),
                _ => None,
            })
            .collect()
    }

    /// Checks `reverts` is one journaled revert by the optimizer of each change of `of`, at its
    /// address, back to `to`, carried out.
    fn assert_the_loops_reverts(&self, reverts: &[crate::journal::Intent], of: &[u64], to: i64) {
        assert_eq!(reverts.len(), of.len(), "{reverts:#?}");
        for (r, &id) in reverts.iter().zip(of) {
            let change = self.journal().intent(id).unwrap();
            assert!(
                matches!(r.kind, IntentKind::Revert { of: Some(of) } if of == id),
                "{r:?}"
            );
            assert_eq!(r.source, Source::Optimizer, "{r:?}");
            assert_eq!(r.address, change.address, "{r:?}");
            assert_eq!(r.after, Value::Int(to.into()), "{r:?}");
            assert!(
                r.reason.contains("a trial left half-applied"),
                "{}",
                r.reason
            );
            assert!(
                matches!(self.journal().outcome(r.id), Some(Outcome::Reverted { .. })),
                "{r:?}"
            );
        }
    }
}

/// A group trial cut short by a kill between two members' writes leaves the members apart; the
/// next start takes the loop's values back through the journal, to what the members held before
/// the loop's trials, and the loop starts with the knob (not left out, unwatched at the trial).
#[test]
fn a_group_trial_a_kill_left_half_applied_is_taken_back_at_the_next_start() {
    let rig = Rig::new(&policy(""), true, "");
    let base = rig.more_policies(4);
    let mut rig = rig.restarted();
    assert_eq!(
        rig.last_started()["knobs"],
        serde_json::json!(["cpufreq:*:scaling_max_freq", "ethtool:eth0:rx-usecs"])
    );

    // Killed after writing the first trial to two of the four policies.
    let cut_short: Vec<u64> = (0..2)
        .map(|i| rig.the_loop_writes(&format!("cpufreq:policy{i}:scaling_max_freq"), 2_280_000))
        .collect();
    assert_eq!(
        max_freqs(&base, 4),
        vec![2_280_000, 2_280_000, 3_000_000, 3_000_000]
    );
    let mark = rig.journal().records().len();
    let mut rig = rig.restarted();
    assert_eq!(
        max_freqs(&base, 4),
        vec![3_000_000; 4],
        "every policy agrees"
    );
    let intents = rig.intents_since(mark);
    rig.assert_the_loops_reverts(&intents, &cut_short, 3_000_000);
    let started = rig.last_started();
    assert_eq!(
        started["knobs"],
        serde_json::json!(["cpufreq:*:scaling_max_freq", "ethtool:eth0:rx-usecs"]),
        "{started}"
    );
    assert_eq!(started["config"], serde_json::json!([3_000_000.0, 0.0]));
    assert_eq!(started["left_out"], serde_json::json!([]), "{started}");
    // The reverts' `change` events come before `started`.
    let started_at = rig.json.iter().rposition(|e| e["event"] == "started");
    let reverted = rig
        .json
        .iter()
        .enumerate()
        .filter(|(_, e)| {
            e["kind"] == "change" && e["phase"] == "reverted" && e["source"] == "optimizer"
        })
        .map(|(at, _)| at)
        .collect::<Vec<_>>();
    assert_eq!(reverted.len(), 2, "{:#?}", rig.json);
    assert!(reverted.iter().all(|&at| Some(at) < started_at));
    // The loop runs over the knob: its next trial moves every policy together.
    rig.window();
    let trial = max_freqs(&base, 4);
    assert!(trial.iter().all(|&f| f == trial[0]), "{trial:?}");

    // Killed while a later trial was half written over an earlier one: every policy holds the
    // loop's value, two of them the cut-short trial's; all go back to what they held before the
    // loop's run of changes (the first trial's `before`), through the first of that run.
    let rig2 = Rig::new(&policy(""), true, "");
    let base = rig2.more_policies(4);
    let mut rig = rig2.restarted();
    let first: Vec<u64> = (0..4)
        .map(|i| rig.the_loop_writes(&format!("cpufreq:policy{i}:scaling_max_freq"), 2_640_000))
        .collect();
    for i in 0..2 {
        rig.the_loop_writes(&format!("cpufreq:policy{i}:scaling_max_freq"), 1_920_000);
    }
    assert_eq!(
        max_freqs(&base, 4),
        vec![1_920_000, 1_920_000, 2_640_000, 2_640_000]
    );
    let mark = rig.journal().records().len();
    let rig = rig.restarted();
    assert_eq!(max_freqs(&base, 4), vec![3_000_000; 4]);
    rig.assert_the_loops_reverts(&rig.intents_since(mark), &first, 3_000_000);
    let started = rig.last_started();
    assert_eq!(
        started["knobs"],
        serde_json::json!(["cpufreq:*:scaling_max_freq", "ethtool:eth0:rx-usecs"]),
        "{started}"
    );
    assert_eq!(started["config"], serde_json::json!([3_000_000.0, 0.0]));
    rig.assert_schema();
}

/// A group member someone else set apart is theirs: at the next start it is left as it is, and
/// the knob is left out, as for any group set apart; only the loop's own values, left by a trial
/// cut short, go back.
#[test]
fn a_group_member_someone_else_set_apart_is_left_alone_at_the_next_start() {
    // A person set policy2 apart: nothing of the loop's there, nothing written.
    let operator_too = policy("").replacen(
        r#"sources = ["optimizer"]"#,
        r#"sources = ["optimizer", "operator"]"#,
        1,
    );
    let rig = Rig::new(&operator_too, true, "");
    let base = rig.more_policies(4);
    let rig = rig.restarted();
    std::fs::write(base.join("policy2/scaling_max_freq"), "2000000\n").unwrap();
    let mark = rig.journal().records().len();
    let rig = rig.restarted();
    assert_eq!(
        max_freqs(&base, 4),
        vec![3_000_000, 3_000_000, 2_000_000, 3_000_000]
    );
    let written = rig.intents_since(mark);
    assert!(written.is_empty(), "nothing written: {written:#?}");
    let left_out = rig.left_out_of_start_over(&["ethtool:eth0:rx-usecs"]);
    assert!(
        left_out.contains("cpufreq:*:scaling_max_freq: its parameters differ")
            && left_out.contains("cpufreq:policy2:scaling_max_freq = 2000000"),
        "{left_out}"
    );

    // An operator set policy3 apart (`kpo apply`), and a kill cut a trial short after
    // policy0: the trial's value goes back, the operator's and the person's stay, and the knob
    // is left out (its parameters still differ), saying what went back.
    let mut rig = rig;
    let reply = rig.operator_applies("cpufreq:policy3:scaling_max_freq", 2_640_000);
    assert!(
        matches!(&reply, crate::api::Reply::Ok(r) if r["status"] == "applied"),
        "the operator's apply: {reply:?}"
    );
    let cut_short = rig.the_loop_writes("cpufreq:policy0:scaling_max_freq", 1_560_000);
    assert_eq!(
        max_freqs(&base, 4),
        vec![1_560_000, 3_000_000, 2_000_000, 2_640_000]
    );
    let mark = rig.journal().records().len();
    let rig = rig.restarted();
    assert_eq!(
        max_freqs(&base, 4),
        vec![3_000_000, 3_000_000, 2_000_000, 2_640_000]
    );
    rig.assert_the_loops_reverts(&rig.intents_since(mark), &[cut_short], 3_000_000);
    let left_out = rig.left_out_of_start_over(&["ethtool:eth0:rx-usecs"]);
    assert!(
        left_out.contains("cpufreq:*:scaling_max_freq: its parameters differ")
            && left_out.contains("cpufreq:policy0:scaling_max_freq = 3000000")
            && left_out.contains("cpufreq:policy2:scaling_max_freq = 2000000")
            && left_out.contains("cpufreq:policy3:scaling_max_freq = 2640000")
            && left_out.contains("were taken back")
            && left_out.contains("cpufreq:policy0:scaling_max_freq = 1560000"),
        "{left_out}"
    );
    rig.assert_schema();
}

/// Taking back a trial a kill left half-applied can fail: here a person writes policy1 between
/// the start's read of it and the revert, which then leaves their value (and KPO yields it to
/// them). The knob is left out with a reason that says what failed; policy0's revert is done.
#[test]
fn a_half_applied_trial_whose_revert_fails_is_left_out_saying_why() {
    let rig = Rig::new(&policy(""), true, "");
    let base = rig.more_policies(3);
    let mut rig = rig.restarted();
    let cut_short: Vec<u64> = (0..2)
        .map(|i| rig.the_loop_writes(&format!("cpufreq:policy{i}:scaling_max_freq"), 2_280_000))
        .collect();
    let file = base.join("policy1/scaling_max_freq");
    *rig.after_read.lock().unwrap() = Some((
        "cpufreq:policy1:scaling_max_freq".parse().unwrap(),
        Box::new(move || std::fs::write(file, "1920000\n").unwrap()),
    ));
    let mark = rig.journal().records().len();
    let rig = rig.restarted();
    assert!(rig.after_read.lock().unwrap().is_none(), "the person wrote");
    assert_eq!(max_freqs(&base, 3), vec![3_000_000, 1_920_000, 3_000_000]);
    let intents = rig.intents_since(mark);
    rig.assert_the_loops_reverts(&intents, &cut_short[..1], 3_000_000);
    let left_out = rig.left_out_of_start_over(&["ethtool:eth0:rx-usecs"]);
    assert!(
        left_out.contains("cpufreq:*:scaling_max_freq: its parameters differ")
            && left_out.contains("taking the loop's values back failed")
            && left_out.contains("cpufreq:policy1:scaling_max_freq"),
        "{left_out}"
    );
    // The person's value is theirs from now on.
    assert!(
        rig.json
            .iter()
            .any(|e| e["kind"] == "admin_override" && e["seen_by"] == "value_check"),
        "{:#?}",
        rig.json
    );
    let p1: ParamAddress = "cpufreq:policy1:scaling_max_freq".parse().unwrap();
    assert!(rig
        .journal()
        .param_state(&p1)
        .is_some_and(|p| p.yielded.is_some()));
    rig.assert_schema();
}

/// At shutdown a trial in place makes way, through the journal, for the best configuration
/// measured within the SLO (here the start): no experiment outlives the agent unwatched. A best
/// the loop holds is left as it is.
#[test]
fn a_trial_in_place_at_shutdown_makes_way_for_the_best_measured() {
    let mut rig = Rig::new(&policy(""), true, "");
    rig.window();
    let trial = (rig.max_freq(), rig.rx());
    assert_ne!(trial, (3_000_000, 0), "the first trial moved the knobs");
    let before = rig.intents().len();
    let events = rig.deciding.on_exit();
    rig.record(&events);
    let settled = loop_events(&events)
        .into_iter()
        .find_map(|e| match e {
            LiveEvent::Settled { from, to } => Some((from.clone(), to.clone())),
            _ => None,
        })
        .expect("a settled event");
    assert_eq!(settled.0, vec![trial.0 as f64, trial.1 as f64]);
    assert_eq!(settled.1, vec![3_000_000.0, 0.0]);
    assert_eq!(
        (rig.max_freq(), rig.rx()),
        (3_000_000, 0),
        "back to the start"
    );
    let reverts = &rig.intents()[before..];
    assert_eq!(reverts.len(), 2, "{reverts:#?}");
    for r in reverts {
        assert!(
            matches!(r.kind, IntentKind::Revert { of: Some(_) }),
            "{r:?}"
        );
        assert_eq!(r.source, Source::Optimizer);
        assert!(r.reason.contains("agent stopping"), "{}", r.reason);
        assert!(matches!(
            rig.journal().outcome(r.id),
            Some(Outcome::Reverted { .. })
        ));
    }
    rig.assert_schema();

    // Converged (a budget of 2) and holding its best: nothing to settle, nothing written.
    let mut rig = Rig::new(&policy(""), true, "budget = 2");
    rig.until(10, |ev| {
        has(ev, |e| matches!(e, LiveEvent::Converged { .. }))
    });
    let held = (rig.max_freq(), rig.rx());
    let before = rig.intents().len();
    let events = rig.deciding.on_exit();
    rig.record(&events);
    assert!(
        !has(&events, |e| matches!(e, LiveEvent::Settled { .. })),
        "{events:?}"
    );
    assert_eq!(rig.intents().len(), before);
    assert_eq!((rig.max_freq(), rig.rx()), held);
    rig.assert_schema();
}

/// When every knob's parameters go back to their originals at exit (`on_exit = "revert"`), the
/// trial is not settled first: one revert per parameter, to the value from before KPO.
#[test]
fn a_trial_whose_knobs_all_revert_on_exit_is_not_settled_first() {
    let text = policy("on_exit = \"revert\"").replace(
        "max = 100\nsources = [\"optimizer\"]",
        "max = 100\nsources = [\"optimizer\"]\non_exit = \"revert\"",
    );
    assert_eq!(text.matches("on_exit").count(), 2, "{text}");
    let mut rig = Rig::new(&text, true, "");
    rig.window();
    assert_ne!((rig.max_freq(), rig.rx()), (3_000_000, 0));
    let before = rig.intents().len();
    let events = rig.deciding.on_exit();
    rig.record(&events);
    assert!(!has(&events, |e| matches!(e, LiveEvent::Settled { .. })));
    assert_eq!((rig.max_freq(), rig.rx()), (3_000_000, 0), "the originals");
    let reverts = &rig.intents()[before..];
    assert_eq!(reverts.len(), 2, "{reverts:#?}");
    assert!(reverts
        .iter()
        .all(|r| r.reason == "agent stopping: on_exit = revert"));
    rig.assert_schema();
}

/// `[optimizer]` sets how often the held best is re-checked: every 2 trials here, where the
/// default would wait 10.
#[test]
fn the_recheck_interval_comes_from_the_configuration() {
    let recheck = |e: &LiveEvent| matches!(e, LiveEvent::Recheck { .. });
    for (settings, rechecked_by) in [("recheck_every = 2", Some(2)), ("", None)] {
        let mut rig = Rig::new(&policy(""), true, &format!("budget = 2\n{settings}"));
        rig.until(10, |ev| {
            has(ev, |e| matches!(e, LiveEvent::Converged { .. }))
        });
        let first = (1..=3).find(|_| {
            let events = rig.window();
            has(&events, recheck)
        });
        assert_eq!(first, rechecked_by, "{settings:?}: {:?}", rig.live);
        rig.assert_schema();
    }
}

/// At shutdown the loop takes back only what is its own: a knob an operator set since (through
/// the journal, so KPO's value but not the loop's) stays; one whose parameters go back to their
/// originals next (`on_exit = "revert"`) is written once, by that.
#[test]
fn settling_at_shutdown_leaves_values_that_are_not_the_loops_own() {
    let text = policy("").replace(
        "max = 3000000\nsources = [\"optimizer\"]",
        "max = 3000000\nsources = [\"optimizer\", \"operator\"]",
    );
    let mut rig = Rig::new(&text, true, "");
    rig.window();
    let trial = (rig.max_freq(), rig.rx());
    assert_ne!(trial.0, 3_000_000);
    assert_ne!(trial.1, 0);
    assert!(matches!(
        rig.operator_sets_max_freq(2_500_000),
        crate::api::Reply::Ok(_)
    ));
    let before = rig.intents().len();
    let events = rig.deciding.on_exit();
    rig.record(&events);
    assert!(has(&events, |e| matches!(e, LiveEvent::Settled { .. })));
    assert_eq!(rig.max_freq(), 2_500_000, "the operator's value stays");
    assert_eq!(rig.rx(), 0, "the loop's trial made way");
    let after: Vec<String> = rig.intents()[before..]
        .iter()
        .map(|i| i.address.to_string())
        .collect();
    assert_eq!(after, vec![RX.to_string()]);
    rig.assert_schema();

    // cpufreq reverts at exit, rx-usecs keeps: each is written once.
    let mut rig = Rig::new(&policy("on_exit = \"revert\""), true, "");
    rig.window();
    assert_ne!((rig.max_freq(), rig.rx()), (3_000_000, 0));
    let before = rig.intents().len();
    let events = rig.deciding.on_exit();
    rig.record(&events);
    let reasons: Vec<(String, String)> = rig.intents()[before..]
        .iter()
        .map(|i| (i.address.to_string(), i.reason.clone()))
        .collect();
    assert_eq!(reasons.len(), 2, "{reasons:?}");
    assert!(reasons.contains(&(
        MAX_FREQ.to_string(),
        "agent stopping: on_exit = revert".to_string()
    )));
    assert!(reasons
        .iter()
        .any(|(a, r)| a == RX && r.starts_with("optimizer: agent stopping")));
    assert_eq!((rig.max_freq(), rig.rx()), (3_000_000, 0));
    rig.assert_schema();
}

/// A settle whose revert finds a value a person wrote since (no window has read it yet) leaves
/// it and yields the parameter to them, as the guard's reverts and `on_exit`'s do: an
/// `admin_override` seen by the value check, and the journal's yield. At a stop there is no next
/// window to find it; at a reload, the new loop would start over a parameter KPO still manages.
#[test]
fn the_loops_settle_yields_to_a_value_a_person_wrote() {
    for reload in [false, true] {
        let mut rig = Rig::new(&policy(""), true, "");
        rig.policy_from_file();
        rig.window();
        let trial = rig.config_now();
        assert_ne!(trial[0], 3_000_000.0, "the first trial moved the limit");
        assert_ne!(trial[1], 0.0, "the first trial moved rx-usecs");
        // A person writes the limit, off the optimizer's grid.
        std::fs::write(&rig.max_freq_file, "2222000\n").unwrap();
        let events = if reload {
            rig.reload(&policy_with_max_freq(2_900_000))
        } else {
            let events = rig.deciding.on_exit();
            rig.record(&events);
            events
        };
        let overrides: Vec<&Event> = events
            .iter()
            .filter(|e| matches!(e, Event::AdminOverride { .. }))
            .collect();
        assert_eq!(overrides.len(), 1, "reload {reload}: {events:#?}");
        let Event::AdminOverride {
            target,
            seen_by,
            value,
            kpo_value,
            ..
        } = overrides[0]
        else {
            unreachable!()
        };
        assert_eq!(target, MAX_FREQ);
        assert_eq!(*seen_by, "value_check");
        assert_eq!(*value, Value::Int(2_222_000));
        assert_eq!(*kpo_value, Some(Value::Int(trial[0] as i128)));
        let state = rig
            .journal()
            .param_state(&MAX_FREQ.parse().unwrap())
            .unwrap();
        assert!(state.yielded.is_some(), "reload {reload}: {state:?}");
        assert_eq!(rig.max_freq(), 2_222_000, "the person's value stays");
        assert_eq!(rig.rx(), 0, "the loop's trial made way");
        rig.assert_schema();
    }
}

const BACKLOG: &str = "net.core.netdev_max_backlog";

/// `net.core.netdev_max_backlog` in auto for the rules, judged by request p99 only.
const BACKLOG_IN_AUTO: &str = r#"
[params."net.core.netdev_max_backlog"]
mode = "auto"
sources = ["rules"]
guard_signals = ["request_p99"]
"#;

/// A deciding half under `policy` over a kernel with `net.core.netdev_max_backlog` at 1000 (its
/// journal in the returned directory), and a window of 37 softnet drops, for which the
/// receive-path rule raises it to 2000.
fn backlog_rig(
    policy: &str,
) -> (
    tempfile::TempDir,
    crate::change::tests::FakeActuators,
    Deciding,
    Window,
) {
    let tmp = tempfile::tempdir().unwrap();
    let k = crate::change::tests::kernel(&[(BACKLOG, Value::Int(1000))]);
    crate::journal::store::make_private(tmp.path());
    let journal = Journal::open(tmp.path(), Holder::Agent, Duration::ZERO).unwrap();
    let policy = Policy::parse(policy, "policy.toml").unwrap();
    let path = ChangePath::new(policy, journal, Box::new(k.clone()));
    let deciding = Deciding::with_path(path, false).unwrap().0;
    let mut drops = crate::advise::rules::testing::window(vec![]);
    drops.system.softnet_dropped = Some(37);
    (tmp, k, deciding, drops)
}

/// What each window proposed for the backlog, and what became of it: the drops of `drops` in
/// the first window, 20 in each after (fewer at 2000: the raise helped by more than a quarter,
/// so the next may be given; docs/rules.md, *Receive path*).
fn backlog_outcomes(
    drops: Window,
) -> impl FnMut(&mut Deciding) -> Vec<(i64, ChangePhase, Option<String>)> {
    let mut fewer = drops.clone();
    fewer.system.softnet_dropped = Some(20);
    let mut first = Some(drops);
    move |deciding: &mut Deciding| {
        deciding
            .on_window(&first.take().unwrap_or_else(|| fewer.clone()))
            .into_iter()
            .filter_map(|e| match e {
                Event::Change(c)
                    if matches!(c.phase, ChangePhase::Verified | ChangePhase::Refused) =>
                {
                    Some((c.after.as_int().unwrap(), c.phase, c.refusal))
                }
                _ => None,
            })
            .collect()
    }
}

/// A rule's advice the policy refuses for a cooldown is asked again as soon as the cooldown is
/// over (at the next window with the same drops), not `repeat_windows` later; while it lasts,
/// the advice is not repeated (a refusal per tick or window).
#[test]
fn a_rules_advice_refused_for_a_cooldown_is_given_again_when_it_ends() {
    let (_tmp, k, mut deciding, drops) = backlog_rig(
        r#"
[guard]
max_changes_per_hour = 1000

[params."net.core.netdev_max_backlog"]
mode = "auto"
cooldown = "3s"
sources = ["rules"]
guard_signals = ["request_p99"]
"#,
    );
    let mut outcome = backlog_outcomes(drops);
    let backlog = || k.0.lock().unwrap().values[BACKLOG].clone();
    assert_eq!(
        outcome(&mut deciding),
        [(2000, ChangePhase::Verified, None)]
    );
    let started = Instant::now();
    // These two windows must come while the cooldown lasts: checked before each, so that a host
    // too slow for that says so instead of failing on what the window did.
    let within_cooldown = || {
        assert!(
            started.elapsed() < Duration::from_millis(2500),
            "the host took over 2.5 s for two windows: the 3 s cooldown cannot be checked"
        )
    };
    within_cooldown();
    assert_eq!(
        outcome(&mut deciding),
        [(4000, ChangePhase::Refused, Some("cooldown".into()))]
    );
    within_cooldown();
    assert_eq!(
        outcome(&mut deciding),
        [],
        "not again while the cooldown lasts"
    );
    std::thread::sleep(Duration::from_millis(3100).saturating_sub(started.elapsed()));
    assert_eq!(
        outcome(&mut deciding),
        [(4000, ChangePhase::Verified, None)],
        "the cooldown is over"
    );
    assert_eq!(backlog(), Value::Int(4000));
}

/// s61 story BY-3: a rule's advice held for a cooldown, and then, once the cooldown was over, for
/// the hourly limit, left the cooldown's refusal on record ("19s to wait", what `kpo explain`
/// showed) while the limit held it for up to an hour, with no word. The refusal in force is
/// recorded when it changes: once, and not again while it holds.
#[test]
fn a_rules_advice_held_for_another_reason_is_refused_again_with_it() {
    let (_tmp, _k, mut deciding, drops) = backlog_rig(
        r#"
[guard]
max_changes_per_hour = 1

[params."net.core.netdev_max_backlog"]
mode = "auto"
cooldown = "2s"
sources = ["rules"]
guard_signals = ["request_p99"]
"#,
    );
    let mut outcome = backlog_outcomes(drops);
    assert_eq!(
        outcome(&mut deciding),
        [(2000, ChangePhase::Verified, None)]
    );
    let started = Instant::now();
    let refused = outcome(&mut deciding);
    if started.elapsed() > Duration::from_millis(1500) {
        kpo_test_skip::skip(
            "this host took over 1.5 s for a window: the 2 s cooldown cannot be seen holding",
        );
        return;
    }
    assert_eq!(
        refused,
        [(4000, ChangePhase::Refused, Some("cooldown".into()))]
    );
    std::thread::sleep(Duration::from_millis(2100).saturating_sub(started.elapsed()));
    assert_eq!(
        outcome(&mut deciding),
        [(4000, ChangePhase::Refused, Some("rate_limited".into()))],
        "the cooldown is over, the hourly limit holds it: said so"
    );
    assert_eq!(outcome(&mut deciding), [], "not again while it holds");
}

/// The journal names whoever the kernel says is on the other end of the socket, not who the
/// request says it is from: an apply's and a revert's reason, and the pause.
#[test]
fn the_journal_names_the_caller_the_kernel_gives() {
    let policy = r#"
[params."cpufreq:*:scaling_max_freq"]
mode = "auto"
min = 1200000
max = 3000000
sources = ["operator"]
"#;
    let mut rig = Rig::new(policy, true, "");
    let claimed = Some("operator mallory (uid 0, pid 1)".to_string());
    let applied = rig.operator(crate::api::Request::Apply(crate::control::ApplyRequest {
        address: MAX_FREQ.parse().unwrap(),
        value: Value::Int(2_000_000),
        reason: "for the test".into(),
        by: claimed.clone(),
    }));
    assert!(matches!(applied, crate::api::Reply::Ok(_)), "{applied:?}");
    let reverted = rig.operator(crate::api::Request::Revert {
        revert: crate::control::RevertRequest::All,
        by: claimed,
    });
    assert!(matches!(reverted, crate::api::Reply::Ok(_)), "{reverted:?}");
    let reasons: Vec<String> = rig.intents().into_iter().map(|i| i.reason).collect();
    assert_eq!(
        reasons,
        [
            format!("for the test; by {CALLER}"),
            format!("kpo revert --all: back to the value before KPO; by {CALLER}"),
        ]
    );
    let paused = rig.operator(crate::api::Request::Pause {
        by: "operator mallory (uid 0, pid 1)".into(),
    });
    assert!(matches!(paused, crate::api::Reply::Ok(_)), "{paused:?}");
    assert_eq!(
        rig.journal().paused().map(|(by, _)| by.as_str()),
        Some(CALLER)
    );
}

/// `policy()` with the operator allowed to set cpufreq limits too.
fn policy_with_operator() -> String {
    policy("").replacen(
        r#"sources = ["optimizer"]"#,
        r#"sources = ["optimizer", "operator"]"#,
        1,
    )
}

/// While a group knob cannot be read as one value (an operator set one policy of
/// `cpufreq:*:scaling_max_freq` apart, or a policy's limit cannot be read), every window is
/// `resynced`; a window that breaks the SLO still takes the loop's own trial values back, and
/// leaves the operator's.
#[test]
fn a_breach_is_reverted_while_a_group_knob_cannot_be_read_as_one() {
    for variant in ["operator", "unreadable"] {
        let rig = Rig::new(&policy_with_operator(), true, "");
        let base = rig.more_policies(4);
        let mut rig = rig.restarted();
        let start = (rig.max_freq(), rig.rx());
        assert!(rig.p99() <= SLO_US, "{variant}: the start meets the SLO");
        rig.window();
        assert!(
            rig.p99() > SLO_US,
            "{variant}: the first trial, {:?}, breaks the SLO",
            (rig.max_freq(), rig.rx())
        );
        let policy2 = base.join("policy2/scaling_max_freq");
        if variant == "operator" {
            let reply = rig.operator_applies("cpufreq:policy2:scaling_max_freq", 2_400_000);
            assert!(matches!(reply, crate::api::Reply::Ok(_)), "{reply:?}");
        } else {
            std::fs::remove_file(&policy2).unwrap();
        }
        let seen = rig.live.len();
        rig.window();
        let after = &rig.live[seen..];
        assert!(
            matches!(after.first(), Some(LiveEvent::Resynced { .. })),
            "{variant}: {after:?}"
        );
        assert!(
            after
                .iter()
                .any(|e| matches!(e, LiveEvent::SloBreach { .. })),
            "{variant}: {after:?}"
        );
        assert_eq!(
            (rig.max_freq(), rig.rx()),
            start,
            "{variant}: back to the start"
        );
        for i in [1, 3] {
            let other = base.join(format!("policy{i}/scaling_max_freq"));
            assert_eq!(
                std::fs::read_to_string(other).unwrap().trim(),
                start.0.to_string(),
                "{variant}: policy{i}"
            );
        }
        if variant == "operator" {
            assert_eq!(std::fs::read_to_string(&policy2).unwrap().trim(), "2400000");
        }
        // Back within the SLO, the loop writes nothing more while the group stays apart.
        let intents = rig.intents().len();
        rig.window();
        rig.window();
        assert_eq!(rig.intents().len(), intents, "{variant}");
        assert_eq!((rig.max_freq(), rig.rx()), start, "{variant}");
    }
}

/// The search converged while its best waited (the move to it refused for now: a pause), the
/// last trial still in place, when a group knob stopped reading as one value (an operator set
/// one policy of `cpufreq:*:scaling_max_freq` apart, or a policy's limit cannot be read) and a
/// window broke the SLO: the loop's own values go to the best that waited, which it then holds,
/// as after any breach while the best waits; the search is not restarted (the model is kept, the
/// loop not sent back to the start). The operator's value stays; a policy whose file is gone
/// cannot be written (`revert_failed`), the others still go to the best's value.
#[test]
fn a_breach_while_a_group_knob_cannot_be_read_as_one_goes_to_the_best_that_waits() {
    for variant in ["operator", "unreadable"] {
        let (mut rig, base, best, last) = converged_with_the_best_waiting(variant);
        let policy2 = base.join("policy2/scaling_max_freq");
        if variant == "operator" {
            let reply = rig.operator_applies("cpufreq:policy2:scaling_max_freq", 2_400_000);
            assert!(matches!(reply, crate::api::Reply::Ok(_)), "{reply:?}");
        } else {
            std::fs::remove_file(&policy2).unwrap();
        }
        let restarts = waiting_live(&rig).restarts();
        // A load the knobs do not explain breaks the SLO under the last trial.
        rig.extra_p99_us = SLO_US;
        let seen = rig.live.len();
        rig.window();
        rig.extra_p99_us = 0.0;
        let after = &rig.live[seen..];
        let back = match after {
            [LiveEvent::Resynced {
                config: resynced, ..
            }, LiveEvent::SloBreach {
                config: breached, ..
            }, back] => {
                assert_eq!((resynced, breached), (&last, &last), "{variant}: {after:?}");
                back
            }
            _ => panic!("{variant}: {after:?}"),
        };
        if variant == "operator" {
            assert!(
                matches!(back, LiveEvent::Reverted { from, to } if *from == last && *to == best),
                "{variant}: {after:?}"
            );
            assert_eq!(std::fs::read_to_string(&policy2).unwrap().trim(), "2400000");
        } else {
            // The policy that cannot be read cannot be written either: the revert did not take
            // there, as a revert of any knob whose write fails.
            assert!(
                matches!(back, LiveEvent::RevertFailed { from, to, error }
                    if *from == last && *to == best && error.contains("policy2")),
                "{variant}: {after:?}"
            );
        }
        // The group's other policies, and rx-usecs, at the best's values.
        for i in [0, 1, 3] {
            let limit = base.join(format!("policy{i}/scaling_max_freq"));
            assert_eq!(
                std::fs::read_to_string(limit).unwrap().trim(),
                (best[0] as i64).to_string(),
                "{variant}: policy{i}"
            );
        }
        assert_eq!(rig.rx() as f64, best[1], "{variant}");
        let held = waiting_live(&rig);
        assert_eq!(held.restarts(), restarts, "{variant}: no restart");
        assert_eq!(held.phase(), crate::advise::optimizer::live::Phase::Holding);
        assert_eq!(
            configurations_learned(held),
            WAITING_BUDGET,
            "{variant}: the model kept"
        );
        if variant == "operator" {
            assert_eq!(held.held(), Some(&best[..]), "{variant}");
        }
        // Within the SLO, the best stays while the group stays apart; nothing more is written.
        let intents = rig.intents().len();
        rig.window();
        rig.window();
        assert_eq!(rig.intents().len(), intents, "{variant}");
        assert_eq!(rig.config_now(), best, "{variant}");
        rig.assert_schema();
    }
}

/// The budget of [`converged_with_the_best_waiting`]'s loop.
const WAITING_BUDGET: usize = 11;

/// The budget's evaluations so far: the configurations learned (a return after a breach is
/// learned again, and is none).
fn configurations_learned(live: &crate::advise::optimizer::live::LiveOptimizer) -> usize {
    let mut points: Vec<&Vec<f64>> = Vec::new();
    for o in live.optimizer().observations() {
        if !points.contains(&&o.point) {
            points.push(&o.point);
        }
    }
    points.len()
}

/// The rig of [`a_breach_while_a_group_knob_cannot_be_read_as_one_goes_to_the_best_that_waits`]
/// up to where that test's group stops reading as one: four policies under
/// `cpufreq:*:scaling_max_freq`, the search converged with its best waiting (the move refused
/// for a pause, lifted since) and the last trial in place, within the SLO. The rig, the cpufreq
/// tree's directory, the best and the last trial.
fn converged_with_the_best_waiting(variant: &str) -> (Rig, PathBuf, Vec<f64>, Vec<f64>) {
    let rig = Rig::new(
        &policy_with_operator(),
        true,
        // The whole budget explored: where the search converges does not hang on when its
        // expected improvement falls below `ei_stop`.
        &format!("budget = {WAITING_BUDGET}\nei_stop = 0"),
    );
    let base = rig.more_policies(4);
    let mut rig = rig.restarted();
    let start = rig.config_now();
    let learned = |rig: &Rig| configurations_learned(waiting_live(rig));
    let in_place_untried = |rig: &Rig| {
        let now = rig.config_now();
        waiting_live(rig)
            .optimizer()
            .observations()
            .iter()
            .all(|o| o.point != now)
    };
    for _ in 0..30 {
        if learned(&rig) == WAITING_BUDGET - 1 && in_place_untried(&rig) {
            break;
        }
        rig.window();
    }
    assert_eq!(
        learned(&rig),
        WAITING_BUDGET - 1,
        "{variant}: {:?}",
        rig.live
    );
    assert!(in_place_untried(&rig), "{variant}: {:?}", rig.live);
    assert!(
        rig.p99() <= SLO_US,
        "{variant}: the last trial meets the SLO"
    );
    rig.deciding
        .path_for_tests_mut()
        .journal
        .set_paused(true, "test")
        .unwrap();
    let last = rig.config_now();
    let seen = rig.live.len();
    rig.window();
    let best = rig.live[seen..]
        .iter()
        .find_map(|e| match e {
            LiveEvent::Converged { best, .. } => Some(best.clone()),
            _ => None,
        })
        .unwrap_or_else(|| panic!("{variant}: converged: {:?}", &rig.live[seen..]));
    assert!(
        rig.live[seen..].iter().any(
            |e| matches!(e, LiveEvent::Refused { config, retry: true, .. } if *config == best)
        ),
        "{variant}: {:?}",
        &rig.live[seen..]
    );
    assert_eq!(rig.config_now(), last, "{variant}: the last trial stays");
    assert!(
        best[0] != last[0] && best != start,
        "{variant}: the best {best:?} moves the group from the last trial {last:?} and is not \
         the start {start:?}"
    );
    rig.deciding
        .path_for_tests_mut()
        .journal
        .set_paused(false, "test")
        .unwrap();
    (rig, base, best, last)
}

fn waiting_live(rig: &Rig) -> &crate::advise::optimizer::live::LiveOptimizer {
    rig.deciding.optimizer_for_tests().unwrap().live()
}

/// As [`a_breach_while_a_group_knob_cannot_be_read_as_one_goes_to_the_best_that_waits`], but the
/// windows while the group cannot be read as one stay within the SLO: the best keeps waiting (a
/// resync dropped it, and the loop held the last trial for good). Its move writes the group, so
/// it is not tried while the group cannot be read as one (it would write over the operator's
/// value, or fail on the file that is gone); once the group reads as one again, at the loop's
/// value, the next window moves to the best, which the loop then holds, with no restart.
#[test]
fn a_best_that_waits_is_kept_while_a_group_knob_cannot_be_read_as_one() {
    for variant in ["operator", "unreadable"] {
        let (mut rig, base, best, last) = converged_with_the_best_waiting(variant);
        let policy2 = base.join("policy2/scaling_max_freq");
        if variant == "operator" {
            let reply = rig.operator_applies("cpufreq:policy2:scaling_max_freq", 2_400_000);
            assert!(matches!(reply, crate::api::Reply::Ok(_)), "{reply:?}");
        } else {
            std::fs::remove_file(&policy2).unwrap();
        }
        let restarts = waiting_live(&rig).restarts();
        let intents = rig.intents().len();
        let seen = rig.live.len();
        rig.window();
        rig.window();
        assert!(
            rig.live[seen..]
                .iter()
                .all(|e| matches!(e, LiveEvent::Resynced { config, .. } if *config == last)),
            "{variant}: {:?}",
            &rig.live[seen..]
        );
        assert_eq!(rig.intents().len(), intents, "{variant}: nothing written");
        assert_eq!(rig.config_now(), last, "{variant}");
        // The group reads as one again, at the last trial's value.
        if variant == "operator" {
            let reply = rig.operator_applies("cpufreq:policy2:scaling_max_freq", last[0] as i64);
            assert!(matches!(reply, crate::api::Reply::Ok(_)), "{reply:?}");
        } else {
            std::fs::write(&policy2, format!("{}\n", last[0] as i64)).unwrap();
        }
        let seen = rig.live.len();
        rig.window();
        let after = &rig.live[seen..];
        assert!(
            after
                .iter()
                .any(|e| matches!(e, LiveEvent::Applied { config, .. } if *config == best)),
            "{variant}: the move to the best that waited: {after:?}"
        );
        assert_eq!(rig.config_now(), best, "{variant}");
        for i in 0..4 {
            let limit = base.join(format!("policy{i}/scaling_max_freq"));
            assert_eq!(
                std::fs::read_to_string(limit).unwrap().trim(),
                (best[0] as i64).to_string(),
                "{variant}: policy{i}"
            );
        }
        let held = waiting_live(&rig);
        assert_eq!(held.held(), Some(&best[..]), "{variant}");
        assert_eq!(held.restarts(), restarts, "{variant}: no restart");
        rig.assert_schema();
    }
}

/// The converged best waiting, policy2's limit file gone, and a window that breaks the SLO: the
/// revert from the last trial to the best fails there (`revert_failed`, its `error` returned).
fn breach_with_a_policy_gone() -> (Rig, PathBuf, Vec<f64>, Vec<f64>, String) {
    let (mut rig, base, best, last) = converged_with_the_best_waiting("unreadable");
    std::fs::remove_file(base.join("policy2/scaling_max_freq")).unwrap();
    rig.extra_p99_us = SLO_US;
    let seen = rig.live.len();
    rig.window();
    rig.extra_p99_us = 0.0;
    let error = rig.live[seen..]
        .iter()
        .find_map(|e| match e {
            LiveEvent::RevertFailed { from, to, error } if *from == last && *to == best => {
                Some(error.clone())
            }
            _ => None,
        })
        .unwrap_or_else(|| panic!("{:?}", &rig.live[seen..]));
    (rig, base, best, last, error)
}

/// A breach while a policy's limit cannot be read, with the converged best waiting: the revert
/// to the best fails on that policy (`revert_failed`) and takes on the others and on rx-usecs.
/// The loop's record then says what the kernel has where it can be read, the best's values, not
/// the last trial's: the next window is `resynced` to the best, which the loop then holds as
/// measured (a settle has nothing to take back), rather than take the last trial for what the
/// kernel holds, drop the best and hold that trial.
#[test]
fn after_a_revert_that_failed_on_an_unreadable_policy_the_loop_holds_what_the_kernel_has() {
    let (mut rig, _, best, _, _) = breach_with_a_policy_gone();
    assert_eq!(rig.config_now(), best);
    let intents = rig.intents().len();
    let seen = rig.live.len();
    rig.window();
    let after = &rig.live[seen..];
    assert!(
        matches!(after, [LiveEvent::Resynced { config, .. }] if *config == best),
        "{after:?}"
    );
    let live = waiting_live(&rig);
    assert_eq!(live.current(), &best[..]);
    assert_eq!(live.held(), Some(&best[..]));
    rig.window();
    assert_eq!(rig.intents().len(), intents, "nothing written");
    assert_eq!(rig.config_now(), best);
    rig.assert_schema();
}

/// A revert of the loop's that failed is owed, as a failed trial's roll-back is: tried again at
/// the next window and after a wait that doubles, until it takes (s48 storyP P-6: the policy
/// whose file was gone came back with the last trial's value, and the group stayed apart, every
/// window `resynced` with "its parameters differ", until an operator set them alike).
#[test]
fn a_revert_that_failed_is_tried_again_until_it_takes() {
    let (mut rig, base, best, last, error) = breach_with_a_policy_gone();
    let policy2 = base.join("policy2/scaling_max_freq");
    assert!(
        error.ends_with(crate::advise::optimizer::live::OWED),
        "{error}"
    );
    // Still gone at the next window: tried, and failed again (journaled), then waited for.
    rig.window();
    // Back, with the last trial's value, KPO's last applied there.
    std::fs::write(&policy2, format!("{}\n", last[0] as i64)).unwrap();
    for _ in 0..3 {
        rig.window();
    }
    let retried: Vec<_> = rig
        .journal()
        .entries()
        .into_iter()
        .filter(|e| e.reason.ends_with("(its revert failed before)"))
        .map(|e| (e.reason, e.status))
        .collect();
    assert_eq!(
        retried,
        [(
            format!("optimizer: SLO breach; back to {best:?} (its revert failed before)"),
            "reverted".to_string()
        )],
        "the revert's own reason"
    );
    for i in 0..4 {
        let limit = base.join(format!("policy{i}/scaling_max_freq"));
        assert_eq!(
            std::fs::read_to_string(limit).unwrap().trim(),
            (best[0] as i64).to_string(),
            "policy{i}: the group alike again, at the best's value"
        );
    }
    let seen = rig.live.len();
    rig.window();
    assert!(
        !rig.live[seen..]
            .iter()
            .any(|e| matches!(e, LiveEvent::Resynced { .. })),
        "the windows are the loop's configuration again: {:?}",
        &rig.live[seen..]
    );
    rig.assert_schema();
}

/// An owed revert that keeps failing (the file stays gone, so no try is journaled: each fails
/// before anything is written) slows down after MAX_OWED_REVERT_TRIES tries to one every 64
/// windows (s51 story AA F3: given up, as s49 review M2 had it, it left the trial's value).
#[test]
fn an_owed_revert_slows_down_after_its_tries() {
    let (mut rig, ..) = breach_with_a_policy_gone();
    let optimizer = |rig: &Rig| {
        let o = rig.deciding.optimizer_for_tests().unwrap();
        (o.owed_for_tests(), o.slowed_for_tests())
    };
    assert_eq!(optimizer(&rig), (1, 0));
    // Tried at windows 1, 3, 6, 11, 20, 37, 70 (waits of 1, 2, 4 ... windows between), and the
    // 8th time at window 135.
    for _ in 0..134 {
        rig.window();
    }
    assert_eq!(optimizer(&rig), (1, 0), "7 tries");
    rig.window();
    assert_eq!(optimizer(&rig), (1, 1), "slowed at the 8th, still owed");
    rig.assert_schema();
}

/// An owed revert whose tries are used up is not given up: it is tried every 64 windows, not at
/// once at each window that breaks the SLO, and at the agent's stop. Given up, eight windows
/// breaking the SLO used its tries within a minute, and the trial that broke the SLO stayed, at
/// every later window and through the stop with `on_exit = "keep"` (s51 story AA F3).
#[test]
fn an_owed_revert_past_its_tries_is_tried_every_64_windows_and_at_the_stop() {
    let limit = |base: &Path, i: usize| {
        let text = std::fs::read_to_string(base.join(format!("policy{i}/scaling_max_freq")));
        text.unwrap().trim().to_string()
    };
    for at_the_stop in [false, true] {
        let (mut rig, base, _, last, _) = breach_with_a_policy_gone();
        let slowed = |rig: &Rig| {
            rig.deciding
                .optimizer_for_tests()
                .unwrap()
                .slowed_for_tests()
        };
        rig.extra_p99_us = SLO_US;
        // The first breaking window sends the loop back to its start, which policy2 owes now;
        // then each breaking window tries at once, and counts.
        let windows = (1..=12)
            .find(|_| {
                rig.window();
                slowed(&rig) == 1
            })
            .expect("slowed within 12 breaking windows");
        assert_eq!(windows, 9, "1 + 8 tries");
        // Back, with the last trial's value, while windows still break the SLO: not tried at
        // once any more.
        std::fs::write(
            base.join("policy2/scaling_max_freq"),
            format!("{}\n", last[0] as i64),
        )
        .unwrap();
        let held = limit(&base, 0);
        assert_ne!(held, limit(&base, 2));
        for _ in 0..10 {
            rig.window();
        }
        assert_eq!(limit(&base, 2), (last[0] as i64).to_string());
        rig.extra_p99_us = 0.0;
        if at_the_stop {
            rig.deciding.on_exit();
        } else {
            for _ in 0..53 {
                rig.window();
            }
            assert_eq!(
                limit(&base, 2),
                (last[0] as i64).to_string(),
                "63 windows after"
            );
            rig.window();
        }
        for i in 0..4 {
            assert_eq!(
                limit(&base, i),
                held,
                "policy{i}, at the stop: {at_the_stop}"
            );
        }
        assert_eq!(
            rig.deciding.optimizer_for_tests().unwrap().owed_for_tests(),
            0
        );
        rig.assert_schema();
    }
}

/// A revert refused because someone else's other limit is in the way (a person's
/// scaling_min_freq above the max it goes back to) would be refused at every try: it is not
/// owed, and the loop stays where it was (s49 review M2).
#[test]
fn a_revert_someone_elses_limit_blocks_is_not_owed() {
    // Alone, and beside a revert that fails on another policy whose file is gone: then that one
    // is not owed either, since the loop stays where it was (s49 review2 N1).
    for beside_a_failure in [false, true] {
        let (mut rig, base, best, last) = converged_with_the_best_waiting("unreadable");
        let min = base.join("policy2/scaling_min_freq");
        std::fs::write(&min, format!("{}\n", best[0] as i64 + 80_000)).unwrap();
        if beside_a_failure {
            std::fs::remove_file(base.join("policy1/scaling_max_freq")).unwrap();
        }
        rig.extra_p99_us = SLO_US;
        let seen = rig.live.len();
        rig.window();
        rig.extra_p99_us = 0.0;
        let error = rig.live[seen..]
            .iter()
            .find_map(|e| match e {
                LiveEvent::RevertFailed { from, error, .. } if *from == last => Some(error.clone()),
                _ => None,
            })
            .unwrap_or_else(|| panic!("{:?}", &rig.live[seen..]));
        assert!(
            error.contains("below scaling_min_freq (2000000 kHz)"),
            "{error}"
        );
        assert_eq!(error.contains("policy1"), beside_a_failure, "{error}");
        assert!(
            !error.ends_with(crate::advise::optimizer::live::OWED),
            "{error}"
        );
        let owed = rig.deciding.optimizer_for_tests().unwrap().owed_for_tests();
        assert_eq!(owed, 0, "beside a failure: {beside_a_failure}");
        rig.assert_schema();
    }
}

/// A window whose objective is not a positive number (0 J) is no measurement, but a breach in it
/// still takes the trial back, as docs/events.md (`unmeasured`) says.
#[test]
fn a_breach_is_reverted_when_the_objective_is_not_a_number() {
    let mut rig = Rig::new(&policy(""), true, "");
    let start = (rig.max_freq(), rig.rx());
    rig.window();
    assert!(rig.p99() > SLO_US, "the first trial breaks the SLO");
    rig.zero_joules = true;
    let seen = rig.live.len();
    rig.window();
    let after = &rig.live[seen..];
    assert!(
        matches!(after.first(), Some(LiveEvent::Unmeasured { reason }) if reason.contains("objective")),
        "{after:?}"
    );
    assert!(
        after
            .iter()
            .any(|e| matches!(e, LiveEvent::SloBreach { .. })),
        "{after:?}"
    );
    assert_eq!((rig.max_freq(), rig.rx()), start);
}

/// A trial that breaks the SLO, left in place by a killed agent, is the next start's start: the
/// first window that breaks the SLO takes it back to what the knobs held before the loop's
/// trials (from the journal), instead of staying there for good.
#[test]
fn a_breaching_trial_a_killed_agent_left_is_taken_back_after_the_restart() {
    let mut rig = Rig::new(&policy(""), true, "");
    let before = (rig.max_freq(), rig.rx());
    rig.window();
    let trial = (rig.max_freq(), rig.rx());
    assert!(
        rig.p99() > SLO_US,
        "the first trial, {trial:?}, breaks the SLO"
    );
    let trial_ids: Vec<u64> = rig.intents().iter().map(|i| i.id).collect();
    let mut rig = rig.restarted();
    assert_eq!((rig.max_freq(), rig.rx()), trial, "a kill leaves the trial");
    let seen = rig.live.len();
    rig.window();
    let after = &rig.live[seen..];
    assert!(
        after
            .iter()
            .any(|e| matches!(e, LiveEvent::SloBreach { .. })),
        "{after:?}"
    );
    assert!(
        after
            .iter()
            .any(|e| matches!(e, LiveEvent::Reverted { to, .. }
            if *to == vec![before.0 as f64, before.1 as f64])),
        "{after:?}"
    );
    assert_eq!((rig.max_freq(), rig.rx()), before);
    let reverts: Vec<(Option<u64>, Source)> = rig
        .intents()
        .iter()
        .filter_map(|i| match i.kind {
            crate::journal::IntentKind::Revert { of } => Some((of, i.source)),
            _ => None,
        })
        .collect();
    assert_eq!(reverts.len(), trial_ids.len(), "{reverts:?}");
    assert!(reverts
        .iter()
        .all(|(of, source)| *source == Source::Optimizer
            && of.is_some_and(|id| trial_ids.contains(&id))));
    // Measured there next, within the SLO.
    let seen = rig.live.len();
    rig.window();
    let next = &rig.live[seen..];
    assert!(
        next.iter().any(
            |e| matches!(e, LiveEvent::Measured { config, feasible: true, .. }
            if *config == vec![before.0 as f64, before.1 as f64])
        ),
        "{next:?}"
    );
}

/// After a restart whose start is the killed agent's trial T0: T0 breaks the SLO and the loop
/// goes back to B0, what the knobs held before the trials; B0's first window breaks the SLO too
/// (a load the knobs do not explain), so nothing is measured within it; the next window meets it
/// and the loop applies a trial P1. Stopping before P1 is measured settles on B0, not on T0:
/// T0 was measured beyond the SLO, and the journal has no change of the loop's from T0 to take P1
/// back through. Defect: the settle went to T0, failed (`revert_failed`), and left P1.
#[test]
fn a_settle_after_a_restart_goes_back_to_before_the_trials_not_to_the_killed_agents_trial() {
    let mut rig = Rig::new(&policy(""), true, "");
    let b0 = rig.config_now();
    rig.window();
    let t0 = rig.config_now();
    assert!(
        rig.p99() > SLO_US,
        "the first trial, {t0:?}, breaks the SLO"
    );
    let mut rig = rig.restarted();
    assert_eq!(rig.config_now(), t0, "a kill leaves the trial");
    let seen = rig.live.len();
    // T0 breaks the SLO: back to B0.
    let events = rig.window();
    assert!(
        has(
            &events,
            |e| matches!(e, LiveEvent::Reverted { to, .. } if *to == b0)
        ),
        "{events:#?}"
    );
    // B0's first window is T0's breach's as well: neither judged nor learned, nothing tried.
    rig.extra_p99_us = 1000.0;
    let events = rig.window();
    assert!(!has(&events, |e| matches!(e, LiveEvent::SloBreach { .. })));
    assert_eq!(rig.config_now(), b0);
    // B0 breaks it too, under a load: nothing is known to be safer, it stays.
    let events = rig.window();
    assert!(has(&events, |e| matches!(e, LiveEvent::SloBreach { .. })));
    assert_eq!(rig.config_now(), b0);
    // The load gone, B0 meets the SLO (told already, not learned again) and P1 is tried.
    rig.extra_p99_us = 0.0;
    let events = rig.window();
    assert!(
        has(&events, |e| matches!(e, LiveEvent::Applied { .. })),
        "{events:#?}"
    );
    let p1 = rig.config_now();
    assert_ne!(p1, b0);
    assert_ne!(p1, t0);
    assert!(
        !rig.live[seen..].iter().any(|e| matches!(
            e,
            LiveEvent::Measured {
                feasible: true,
                learned: true,
                ..
            }
        )),
        "nothing learned within the SLO since the restart: {:#?}",
        &rig.live[seen..]
    );
    let events = rig.deciding.on_exit();
    rig.record(&events);
    assert!(
        !has(&events, |e| matches!(e, LiveEvent::RevertFailed { .. })),
        "{events:#?}"
    );
    assert!(
        has(
            &events,
            |e| matches!(e, LiveEvent::Settled { from, to } if *from == p1 && *to == b0)
        ),
        "{events:#?}"
    );
    assert_eq!(rig.config_now(), b0, "the trial P1 taken back");
    rig.assert_schema();
}

/// A clean stop keeps the best measured configuration M (`on_exit = "keep"`); the next start,
/// which the journal cannot tell from a start after a kill, takes M as its start. Stopped again
/// before any window, it leaves M: M was never measured beyond the SLO, so it is not a trial to
/// take back to before the loop's trials.
#[test]
fn a_configuration_kept_at_a_clean_stop_stays_through_a_quick_restart() {
    let mut rig = Rig::new(&policy(""), true, "");
    let b0 = rig.config_now();
    rig.until_a_trial(40, |r| r.best_measured().is_some_and(|best| best != b0));
    let events = rig.deciding.on_exit();
    rig.record(&events);
    let kept = rig.config_now();
    assert_ne!(
        kept, b0,
        "the stop kept a measured configuration of the loop's"
    );
    assert_eq!(Some(kept.clone()), rig.best_measured());
    let mut rig = rig.restarted();
    assert_eq!(rig.config_now(), kept);
    let events = rig.deciding.on_exit();
    rig.record(&events);
    assert!(
        !has(&events, |e| matches!(
            e,
            LiveEvent::Settled { .. } | LiveEvent::RevertFailed { .. }
        )),
        "{events:#?}"
    );
    assert_eq!(rig.config_now(), kept, "what the operator kept stays");
}

/// Only the knobs whose value is the loop's go back after a restart: a limit an operator set
/// after the trial stays, and the trial's rx-usecs goes back to its value before.
#[test]
fn after_a_restart_only_the_loops_values_go_back() {
    let mut rig = Rig::new(&policy_with_operator(), true, "");
    let before_rx = rig.rx();
    rig.window();
    let trial_rx = rig.rx();
    assert!(
        trial_rx > 30,
        "the first trial, rx-usecs {trial_rx}, is a long delay"
    );
    let reply = rig.operator_sets_max_freq(1_300_000);
    assert!(matches!(reply, crate::api::Reply::Ok(_)), "{reply:?}");
    let mut rig = rig.restarted();
    assert!(rig.p99() > SLO_US, "the start breaks the SLO");
    rig.window();
    assert!(rig.saw(|e| matches!(e, LiveEvent::SloBreach { .. })));
    assert_eq!(rig.max_freq(), 1_300_000, "the operator's limit stays");
    assert_eq!(rig.rx(), before_rx, "the loop's trial value goes back");
    assert!(rig.p99() <= SLO_US);
}

/// `policy()` with the operator allowed to set rx-usecs too.
fn policy_with_operator_on_rx() -> String {
    policy("").replace(
        "max = 100\nsources = [\"optimizer\"]",
        "max = 100\nsources = [\"optimizer\", \"operator\"]",
    )
}

/// The first trial in place, moving both knobs, then an operator's `kpo apply` of rx-usecs to
/// the value `operators` picks from the trial's (before the next window closes). The rig, the
/// start and the trial.
fn a_trial_then_an_operators_rx(operators: impl Fn(u32) -> u32) -> (Rig, (i64, u32), (i64, u32)) {
    let mut rig = Rig::new(&policy_with_operator_on_rx(), true, "");
    let start = (rig.max_freq(), rig.rx());
    assert!(rig.p99() <= SLO_US, "the start meets the SLO");
    rig.window();
    let trial = (rig.max_freq(), rig.rx());
    assert!(
        trial.0 != start.0 && trial.1 != start.1,
        "the first trial, {trial:?}, moves both knobs from {start:?}"
    );
    let reply = rig.operator_applies(RX, operators(trial.1).into());
    assert!(matches!(reply, crate::api::Reply::Ok(_)), "{reply:?}");
    (rig, start, trial)
}

/// A window that breaks the SLO while an operator moved one knob of the trial in place is not
/// learned, but the trial's other value (a low frequency limit, likely what broke it) goes back
/// to the best measured at once, through the journal, as after any breach: not after one more
/// window under it. The operator's value stays, and the loop continues from the mix.
#[test]
fn a_breach_while_an_operator_moved_one_knob_takes_the_trials_other_values_back_at_once() {
    // Shorter than the trial's, but still a delay the SLO cannot take at its frequency.
    let (mut rig, start, trial) = a_trial_then_an_operators_rx(|rx| rx - 10);
    let operators = trial.1 - 10;
    assert!(
        rig.p99() > SLO_US,
        "the mix {:?} breaks the SLO",
        rig.config_now()
    );
    let best = rig.best_measured().expect("the start was measured");
    assert_eq!(best, vec![start.0 as f64, start.1 as f64]);
    let intents = rig.intents().len();
    let seen = rig.live.len();
    rig.window();
    assert_eq!(
        rig.max_freq() as f64,
        best[0],
        "the trial's limit went back to the best's"
    );
    assert_eq!(rig.rx(), operators, "the operator's value stays");
    let mix = vec![trial.0 as f64, operators as f64];
    let to = vec![best[0], operators as f64];
    let after = &rig.live[seen..];
    assert!(
        matches!(after, [
            LiveEvent::Resynced { config: resynced, .. },
            LiveEvent::SloBreach { config: breached, .. },
            LiveEvent::Reverted { from, to: reverted },
        ] if *resynced == mix && *breached == mix && *from == mix && *reverted == to),
        "{after:?}"
    );
    // One write, the loop's revert of its trial's limit; none over the operator's value.
    let written = &rig.intents()[intents..];
    assert_eq!(written.len(), 1, "{written:#?}");
    let revert = &written[0];
    assert_eq!(revert.address.to_string(), MAX_FREQ);
    assert_eq!(revert.source, Source::Optimizer);
    assert!(
        matches!(revert.kind, IntentKind::Revert { of: Some(_) }),
        "{revert:?}"
    );
    assert_eq!(revert.after, Value::Int(start.0.into()));
    assert!(matches!(
        rig.journal().outcome(revert.id),
        Some(Outcome::Reverted { .. })
    ));
    // The loop continues from what the kernel has now.
    let live = rig.deciding.optimizer_for_tests().unwrap().live();
    assert_eq!(live.current(), &to[..]);
    assert!(
        rig.json.iter().all(|e| e["kind"] != "admin_override"),
        "the operator's value is not taken for a person's"
    );
    rig.assert_schema();
}

/// A window in which an operator moved one knob of the trial in place, within the SLO, is only
/// `resynced`: the trial's other value stays, nothing is written, and the loop continues from
/// the mix.
#[test]
fn a_window_an_operator_disturbed_within_the_slo_is_only_resynced() {
    let (mut rig, _, trial) = a_trial_then_an_operators_rx(|_| 0);
    assert!(
        rig.p99() <= SLO_US,
        "the mix {:?} meets the SLO",
        rig.config_now()
    );
    let mix = rig.config_now();
    let intents = rig.intents().len();
    let seen = rig.live.len();
    rig.window();
    let after = &rig.live[seen..];
    assert!(
        matches!(after, [LiveEvent::Resynced { config, .. }] if *config == mix),
        "{after:?}"
    );
    assert_eq!((rig.max_freq(), rig.rx()), (trial.0, 0));
    assert_eq!(rig.intents().len(), intents, "nothing written");
    // The loop continues from the mix, as before.
    let live = rig.deciding.optimizer_for_tests().unwrap().live();
    assert_eq!(live.current(), &mix[..]);
    rig.assert_schema();
}

/// A window (or tick, of `secs` seconds) with one host listener at its limit of 128 that dropped
/// `drops` connections, and requests on it at `p99_us`.
fn pressure(host: u64, secs: f64, drops: u64, p99_us: f64) -> Window {
    let mut w =
        crate::advise::rules::testing::window(vec![crate::advise::rules::testing::listener(
            host, 128, 128, drops,
        )]);
    w.duration_s = secs;
    w.request_latency = vec![RequestLatencyWindow {
        netns: host,
        port: 8080,
        family: "ipv4",
        latency: LatencySummary {
            samples: 1000,
            p50_us: p99_us / 2.0,
            p90_us: p99_us * 0.8,
            p99_us,
            max_us: p99_us * 1.5,
        },
    }];
    w
}

/// The rules raise somaxconn on the first tick of an overflow burst (a listener at its limit of
/// 128). The burst goes on, and grows, until the service listens again, and its requests wait
/// longer meanwhile: the guard judges the raise neither by the overflows (a longer queue does not
/// drop more) nor by the tick's latency (the pressure was there before the change, in the tick
/// that prompted it), so it is kept; a latency far worse than the tick's is still a regression.
#[test]
fn a_raise_made_on_a_tick_is_not_reverted_for_the_burst_that_prompted_it() {
    let host =
        std::os::unix::fs::MetadataExt::ino(&std::fs::metadata("/proc/self/ns/net").unwrap());
    for later_p99_us in [5_000.0, 50_000.0] {
        let tmp = tempfile::tempdir().unwrap();
        let k = crate::change::tests::kernel(&[("net.core.somaxconn", Value::Int(128))]);
        let journal =
            Journal::open(&tmp.path().join("state"), Holder::Agent, Duration::ZERO).unwrap();
        let policy = Policy::parse(
            r#"
[params."net.core.somaxconn"]
mode = "auto"
min = 128
max = 65535
sources = ["rules"]
guard_signals = ["listen_overflows", "request_p99"]
"#,
            "policy.toml",
        )
        .unwrap();
        let mut d =
            Deciding::with_path(ChangePath::new(policy, journal, Box::new(k.clone())), false)
                .unwrap()
                .0;
        let somaxconn = || k.0.lock().unwrap().values["net.core.somaxconn"].clone();
        d.on_window(&pressure(host, 10.0, 0, 1_000.0));
        d.on_tick_window(&pressure(host, 1.0, 50, 5_000.0));
        assert_eq!(somaxconn(), Value::Int(256), "raised on the tick");
        let mut verdicts = Vec::new();
        // The window in progress at the tick is not judged; the three watched ones follow it.
        for _ in 0..4 {
            if !verdicts.is_empty() {
                break;
            }
            let events = d.on_window(&pressure(host, 10.0, 3_000, later_p99_us));
            verdicts.extend(events.into_iter().filter_map(|e| match e {
                Event::Guard(g) => Some(g.verdict),
                _ => None,
            }));
        }
        if later_p99_us <= 5_000.0 {
            assert!(
                matches!(&verdicts[..], [crate::guard::Verdict::Kept { judged, .. }]
                    if judged == &[crate::policy::HealthSignal::RequestP99]),
                "{verdicts:?}"
            );
            assert_eq!(somaxconn(), Value::Int(256));
        } else {
            assert!(
                matches!(&verdicts[0], crate::guard::Verdict::Revert {
                    signal: crate::policy::HealthSignal::RequestP99, before, .. } if *before == 5_000.0),
                "{verdicts:?}"
            );
            assert_eq!(somaxconn(), Value::Int(128));
        }
    }
}

/// With both of a policy's limits as knobs, the search never tries a configuration with the min
/// above the max: nothing is written and undone for it, and nothing fails.
#[test]
fn the_search_leaves_out_a_min_above_the_max() {
    let mut rig = Rig::new(&limits_policy("keep", "keep"), true, "budget = 12");
    let min_file = rig.max_freq_file.with_file_name("scaling_min_freq");
    let read = |f: &Path| -> i64 { std::fs::read_to_string(f).unwrap().trim().parse().unwrap() };
    for _ in 0..15 {
        rig.window();
        assert!(read(&min_file) <= rig.max_freq());
    }
    let tried: Vec<&LiveEvent> = rig
        .live
        .iter()
        .filter(|e| matches!(e, LiveEvent::Applied { .. }))
        .collect();
    assert!(tried.len() >= 5, "{:?}", rig.live);
    assert!(
        !rig.saw(|e| matches!(e, LiveEvent::ApplyFailed { .. } | LiveEvent::Refused { .. })),
        "{:?}",
        rig.live
    );
    for e in tried {
        let LiveEvent::Applied { config, .. } = e else {
            unreachable!()
        };
        assert!(
            config[1] <= config[0],
            "min {} above max {}",
            config[1],
            config[0]
        );
    }
    let undone = rig
        .intents()
        .iter()
        .filter(|i| i.reason.contains("undoing"))
        .count();
    assert_eq!(undone, 0);
}

/// Both of policy0's limits as optimizer knobs, each with its own `on_exit`.
fn limits_policy(max_on_exit: &str, min_on_exit: &str) -> String {
    format!(
        r#"
[guard]
max_changes_per_hour = 1000

[params."cpufreq:policy0:scaling_max_freq"]
mode = "auto"
min = 1200000
max = 3000000
sources = ["optimizer"]
on_exit = "{max_on_exit}"

[params."cpufreq:policy0:scaling_min_freq"]
mode = "auto"
min = 1200000
max = 2400000
sources = ["optimizer"]
on_exit = "{min_on_exit}"
"#
    )
}

/// A cpufreq policy's limits with different `on_exit`: at shutdown the kept limit goes back to
/// the best measured (here the start) and the other to its original, each write in an order that
/// passes. Defect: the limit that reverts on exit was left to that step, so the kept one was
/// written first against the other still at the trial (a max below the trial's min, a min above
/// the trial's max), which older kernels refuse (the kept limit stays at a trial nobody measures)
/// and newer ones take by clamping the other limit (whose `on_exit` revert then finds a value
/// that is not KPO's). The temporary tree takes any write, so the order is read from the journal.
#[test]
fn a_policys_limits_with_different_on_exit_both_leave_the_trial_at_shutdown() {
    // (on_exit of the max, of the min, the start's max and min in kHz, set before the start).
    for (max_on_exit, min_on_exit, start) in [
        ("keep", "revert", (1_500_000, 1_200_000)),
        ("revert", "keep", (3_000_000, 2_400_000)),
    ] {
        let case = format!("max {max_on_exit}, min {min_on_exit}");
        let rig = Rig::new(&limits_policy(max_on_exit, min_on_exit), true, "");
        let min_file = rig.max_freq_file.with_file_name("scaling_min_freq");
        std::fs::write(&rig.max_freq_file, format!("{}\n", start.0)).unwrap();
        std::fs::write(&min_file, format!("{}\n", start.1)).unwrap();
        let mut rig = rig.restarted();
        let read =
            |f: &Path| -> i64 { std::fs::read_to_string(f).unwrap().trim().parse().unwrap() };
        let now = |rig: &Rig| (rig.max_freq(), read(&min_file));
        assert_eq!(now(&rig), start, "{case}");
        rig.window();
        let trial = now(&rig);
        // The start is the only configuration measured; the trial crosses it: its min above
        // the start's max, or its max below the start's min.
        assert!(
            trial.1 > start.0 || trial.0 < start.1,
            "{case}: the trial {trial:?} does not cross the start {start:?}"
        );
        let before = rig.intents().len();
        let events = rig.deciding.on_exit();
        rig.record(&events);
        assert!(
            has(&events, |e| matches!(e, LiveEvent::Settled { .. })),
            "{case}: {events:#?}"
        );
        // Each write from the trial on leaves the max at or above the min.
        let mut limits = trial;
        for intent in &rig.intents()[before..] {
            // A revert that took is journaled `reverted`.
            let took = matches!(
                (&intent.kind, rig.journal().outcome(intent.id)),
                (_, Some(Outcome::Applied { .. }))
                    | (IntentKind::Revert { .. }, Some(Outcome::Reverted { .. }))
            );
            if !took {
                continue;
            }
            let Value::Int(khz) = intent.after else {
                panic!("{intent:?}")
            };
            match intent.address.name.as_str() {
                "scaling_max_freq" => limits.0 = khz as i64,
                _ => limits.1 = khz as i64,
            }
            assert!(
                limits.0 >= limits.1,
                "{case}: {} to {khz} leaves the max below the min: {limits:?}",
                intent.address
            );
        }
        // The kept limit at the best measured, the other at its original: both the start's.
        assert_eq!(now(&rig), start, "{case}: {events:#?}");
        rig.assert_schema();
    }
}

/// SIGHUP loads an edited policy file: decisions follow it at once, a file that does not load
/// leaves the policy in force (with a `refused` event), and an unchanged one does nothing.
#[test]
fn sighup_loads_the_edited_policy_and_a_broken_file_changes_nothing() {
    let entry = |max: i64| {
        format!(
            "[params.\"cpufreq:*:scaling_max_freq\"]\nmode = \"auto\"\nmin = 1200000\n\
             max = {max}\nsources = [\"operator\"]\n"
        )
    };
    let mut rig = Rig::new(&entry(3_000_000), true, "");
    let file = rig._tmp.path().join("policy.toml");
    std::fs::write(&file, entry(3_000_000)).unwrap();
    rig.deciding.path_for_tests_mut().policy = Policy::load(Some(&file)).unwrap();
    rig.deciding.set_policy_file_for_tests(file.clone(), true);
    let status = |reply: &crate::api::Reply| match reply {
        crate::api::Reply::Ok(v) => v["status"].as_str().unwrap_or_default().to_string(),
        crate::api::Reply::Error(e) => format!("error: {e}"),
    };
    // Unchanged: nothing to do, nothing said.
    assert!(rig.deciding.reload_policy(&rig.config).is_empty());

    std::fs::write(&file, entry(2_500_000)).unwrap();
    // Edited and not loaded yet: an operator's apply is refused, and says how to load it.
    let refused = status(&rig.operator_sets_max_freq(2_000_000));
    assert!(refused.contains("send the agent SIGHUP"), "{refused}");
    assert_eq!(rig.max_freq(), 3_000_000);

    let events = rig.deciding.reload_policy(&rig.config);
    let json: Vec<serde_json::Value> = events
        .iter()
        .map(|e| serde_json::to_value(e).unwrap())
        .collect();
    assert_eq!(
        json,
        vec![serde_json::json!({
            "kind": "policy",
            "outcome": "reloaded",
            "source": file.display().to_string(),
            "error": null,
            "optimizer_knobs_changed": false,
        })]
    );
    assert_eq!(status(&rig.operator_sets_max_freq(2_000_000)), "applied");
    assert_eq!(rig.max_freq(), 2_000_000);
    // Offline commands will decide under the file reloaded.
    let recorded = rig
        ._tmp
        .path()
        .join("state")
        .join(crate::control::POLICY_PATH_FILE);
    assert_eq!(
        std::fs::read(&recorded).unwrap(),
        std::fs::canonicalize(&file)
            .unwrap()
            .as_os_str()
            .as_encoded_bytes()
    );
    // The new bound holds.
    assert_eq!(status(&rig.operator_sets_max_freq(2_800_000)), "refused");
    assert_eq!(rig.max_freq(), 2_000_000);

    // A file with a mistake is not loaded: the policy in force stays, and the event says why.
    std::fs::write(&file, format!("{}min_step = \"fast\"\n", entry(2_900_000))).unwrap();
    let events = rig.deciding.reload_policy(&rig.config);
    assert_eq!(events.len(), 1, "{events:?}");
    let json = serde_json::to_value(&events[0]).unwrap();
    assert_eq!(json["outcome"], "refused");
    let error = json["error"].as_str().unwrap();
    assert!(
        error.starts_with(&format!("{}:6: ", file.display())),
        "{error}"
    );
    assert_eq!(
        rig.deciding
            .path_for_tests()
            .policy
            .rule_for(&MAX_FREQ.parse().unwrap())
            .max,
        Some(crate::policy::Bound::All(2_500_000))
    );
    // Put back as it was loaded: unchanged again, and operators are served again.
    std::fs::write(&file, entry(2_500_000)).unwrap();
    assert!(rig.deciding.reload_policy(&rig.config).is_empty());
    assert_eq!(status(&rig.operator_sets_max_freq(2_400_000)), "applied");
}

/// Without `--policy`, SIGHUP reads the default path again. A file removed there since one was
/// loaded is a refused reload, the policy in force staying (s57 review1 R1-10: as an emptied
/// file, it put the built-in default in force, lifting every limit); an agent that started on
/// the built-in default (no file) reloads it as before. The optimizer's entries are compared
/// without their lines: a comment added above them changes nothing for it.
#[test]
fn a_reload_from_the_default_path_without_its_file_keeps_the_policy_in_force() {
    let mut rig = Rig::new(&policy(""), true, "");
    let file = rig._tmp.path().join("default-policy.toml");
    std::fs::write(&file, policy("")).unwrap();
    rig.deciding.path_for_tests_mut().policy = Policy::load_from(&file, false).unwrap();
    rig.deciding.set_policy_file_for_tests(file.clone(), false);

    std::fs::write(&file, format!("# moved down a line\n{}", policy(""))).unwrap();
    let events = rig.deciding.reload_policy(&rig.config);
    let json = serde_json::to_value(&events[0]).unwrap();
    assert_eq!(json["outcome"], "reloaded");
    assert_eq!(json["optimizer_knobs_changed"], false, "{json}");

    std::fs::write(&file, policy("max_step = \"10%\"")).unwrap();
    let json = serde_json::to_value(&rig.deciding.reload_policy(&rig.config)[0]).unwrap();
    assert_eq!(json["optimizer_knobs_changed"], true, "{json}");

    std::fs::remove_file(&file).unwrap();
    let json = serde_json::to_value(&rig.deciding.reload_policy(&rig.config)[0]).unwrap();
    assert_eq!(json["outcome"], "refused", "{json}");
    assert_eq!(
        json["error"],
        format!(
            "{}: the policy file was removed since the agent loaded it: refusing to fall back \
             to the built-in default at a reload (recommend in every namespace, and an \
             operator's kpo apply of any key); write the file again, with at least its \
             [defaults] table for the built-in default",
            file.display()
        )
    );
    assert!(!rig.deciding.path_for_tests().policy.params.is_empty());
    // Started on the built-in default (no file there): a reload without one is no refusal, and
    // a file made since is loaded.
    rig.deciding.path_for_tests_mut().policy = Policy::load_from(&file, false).unwrap();
    let events = rig.deciding.reload_policy(&rig.config);
    assert!(
        (events.iter()).all(|e| serde_json::to_value(e).unwrap()["outcome"] != "refused"),
        "{events:?}"
    );
    std::fs::write(&file, policy("")).unwrap();
    let json = serde_json::to_value(&rig.deciding.reload_policy(&rig.config)[0]).unwrap();
    assert_eq!(json["outcome"], "reloaded", "{json}");
    assert!(!rig.deciding.path_for_tests().policy.params.is_empty());
    // Nothing was named: the offline commands are told to use the default path.
    let recorded = rig
        ._tmp
        .path()
        .join("state")
        .join(crate::control::POLICY_PATH_FILE);
    assert!(!recorded.exists());
}

/// The policy with the optimizer's cpufreq entry bounded at `max` kHz.
fn policy_with_max_freq(max: i64) -> String {
    policy("").replace("max = 3000000", &format!("max = {max}"))
}

/// The optimizer's `settled` among `events`: from, to.
fn settled(events: &[Event]) -> Option<(Vec<f64>, Vec<f64>)> {
    loop_events(events).into_iter().find_map(|e| match e {
        LiveEvent::Settled { from, to } => Some((from.clone(), to.clone())),
        _ => None,
    })
}

/// A reload's events: the `policy` event first (saying the optimizer's entries changed), then the
/// settle's `change` events, then the `optimizer` events named in `optimizer`, in that order.
fn assert_reload_order(events: &[Event], optimizer: &[&str]) {
    let json: Vec<serde_json::Value> = events
        .iter()
        .map(|e| serde_json::to_value(e).unwrap())
        .collect();
    assert_eq!(json[0]["optimizer_knobs_changed"], true, "{json:#?}");
    let kinds: Vec<String> = json
        .iter()
        .map(|v| match v["kind"].as_str().unwrap() {
            "optimizer" => format!("optimizer {}", v["event"].as_str().unwrap()),
            kind => kind.to_string(),
        })
        .collect();
    let changes = kinds.iter().filter(|k| *k == "change").count();
    let mut want = vec!["policy".to_string()];
    want.extend(std::iter::repeat_n("change".to_string(), changes));
    want.extend(optimizer.iter().map(|e| format!("optimizer {e}")));
    assert_eq!(kinds, want, "{json:#?}");
}

/// A reload that gives the optimizer knobs, where it had none, starts its loop from the kernel's
/// values, as a start would.
#[test]
fn a_reload_that_gives_the_optimizer_knobs_starts_its_loop() {
    let without = policy("").replace("sources = [\"optimizer\"]", "sources = [\"operator\"]");
    let mut rig = Rig::new(&without, true, "");
    rig.policy_from_file();
    assert!(rig.live.is_empty(), "{:?}", rig.live);
    rig.window();
    assert!(rig.intents().is_empty());

    let events = rig.reload(&policy(""));
    assert_reload_order(&events, &["started"]);
    assert!(
        matches!(
            loop_events(&events).as_slice(),
            [LiveEvent::Started { config, .. }] if config == &vec![3_000_000.0, 0.0]
        ),
        "{events:?}"
    );
    assert_eq!(rig.json[1]["knobs"], serde_json::json!([MAX_FREQ, RX]));
    let events = rig.window();
    assert!(has(&events, |e| matches!(e, LiveEvent::Applied { .. })));
    assert_ne!(rig.config_now(), vec![3_000_000.0, 0.0]);
    rig.assert_schema();
}

/// A reload that narrows the bounds below the trial in place and below the best measured: the
/// trial makes way for the cheapest configuration measured within the SLO that the new bounds
/// allow (not the best of the old ones, which they exclude), and a new loop starts from there
/// over levels spread over the new bounds; its trials stay within them.
#[test]
fn a_reload_that_narrows_the_bounds_settles_within_them_and_restarts_over_the_new_levels() {
    const NARROWED: i64 = 1_800_000;
    let within = |c: &[f64]| c[0] <= NARROWED as f64;
    let mut rig = Rig::new(&policy(""), true, "");
    rig.policy_from_file();
    rig.until_a_trial(20, |rig| {
        let best = rig.best_measured().unwrap();
        !within(&rig.config_now())
            && !within(&best)
            && rig
                .measured_within_slo()
                .iter()
                .any(|(c, _)| within(c) && c != &best)
    });
    let trial = rig.config_now();
    let best = rig.best_measured().unwrap();

    let events = rig.reload(&policy_with_max_freq(NARROWED));
    assert_reload_order(&events, &["settled", "started"]);
    let (from, to) = settled(&events).expect("a settled event");
    assert_eq!(from, trial);
    assert!(within(&to), "settled on {to:?}, above {NARROWED}");
    assert!(
        rig.measured_within_slo().iter().any(|(c, _)| c == &to),
        "{to:?} was not measured within the SLO"
    );
    assert_ne!(to, best, "the old policy's best is excluded");
    assert_eq!(
        rig.config_now(),
        to,
        "the kernel holds the settled configuration"
    );
    let reasons: Vec<String> = rig
        .intents()
        .iter()
        .rev()
        .take_while(|i| matches!(i.kind, IntentKind::Revert { .. }))
        .map(|i| i.reason.clone())
        .collect();
    assert!(!reasons.is_empty());
    assert!(
        reasons
            .iter()
            .all(|r| r.starts_with("optimizer: policy reloaded; back to")),
        "{reasons:?}"
    );

    // The new loop: from the settled values, over the new levels.
    let started = rig.last_started();
    assert_eq!(started["config"], serde_json::json!(to));
    let space = rig
        .deciding
        .optimizer_for_tests()
        .expect("a new loop")
        .live()
        .optimizer()
        .space()
        .clone();
    let levels = [
        1_200_000.0,
        1_320_000.0,
        1_440_000.0,
        1_560_000.0,
        1_680_000.0,
        1_800_000.0,
    ];
    assert_eq!(space.levels(0), levels);
    assert_eq!(space.levels(1), [0.0, 20.0, 40.0, 60.0, 80.0, 100.0]);
    let events = rig.until(5, |ev| has(ev, |e| matches!(e, LiveEvent::Applied { .. })));
    let first = loop_events(&events)
        .into_iter()
        .find_map(|e| match e {
            LiveEvent::Applied { config, .. } => Some(config.clone()),
            _ => None,
        })
        .unwrap();
    assert!(levels.contains(&first[0]), "{first:?}");
    assert_eq!(rig.max_freq() as f64, first[0]);
    rig.assert_schema();
}

/// A cpufreq driver with a frequency table (acpi-cpufreq) resolves a limit to one of its
/// frequencies: the loop tries `scaling_max_freq` only at frequencies of policy0's
/// `scaling_available_frequencies` within the policy's bounds (6 levels, spread by index), and
/// its trials write those; the NIC knob keeps its even grid.
#[test]
fn a_policy_with_a_frequency_table_is_searched_at_its_frequencies() {
    let rig = Rig::new(&policy(""), true, "");
    let dir = rig.max_freq_file.parent().unwrap().to_path_buf();
    std::fs::write(
        dir.join("scaling_available_frequencies"),
        "3400000 3000000 2800000 2600000 2400000 2200000 2000000 1800000 1600000 1400000 \
         1200000 1000000 \n",
    )
    .unwrap();
    let mut rig = rig.restarted();
    let space = rig.space();
    // 1200000..=3000000 holds 10 of them; indices 0, 1.8, 3.6, 5.4, 7.2, 9 rounded.
    let levels = [
        1_200_000.0,
        1_600_000.0,
        2_000_000.0,
        2_200_000.0,
        2_600_000.0,
        3_000_000.0,
    ];
    assert_eq!(space.levels(0), levels);
    assert_eq!(space.levels(1), [0.0, 20.0, 40.0, 60.0, 80.0, 100.0]);
    for _ in 0..4 {
        rig.until_a_trial(5, |_| true);
        let now = rig.config_now();
        assert!(levels.contains(&now[0]), "{now:?}");
    }
    rig.assert_schema();
}

/// An entry's `optimizer_levels` are the values the loop tries, instead of `[optimizer] levels`
/// spread over the bounds, less an odd coalescing delay (several drivers round it, and it would
/// fail its read-back, as the computed grid avoids).
#[test]
fn an_entrys_optimizer_levels_are_the_values_searched() {
    let text = policy("optimizer_levels = [1200000, 2000000, 3000000]").replace(
        "max = 100\nsources = [\"optimizer\"]\n",
        "max = 100\nsources = [\"optimizer\"]\noptimizer_levels = [0, 5, 24, 100]\n",
    );
    let mut rig = Rig::new(&text, true, "");
    let space = rig.space();
    assert_eq!(space.levels(0), [1_200_000.0, 2_000_000.0, 3_000_000.0]);
    assert_eq!(space.levels(1), [0.0, 24.0, 100.0]);
    for _ in 0..3 {
        rig.until_a_trial(5, |_| true);
        let now = rig.config_now();
        assert!(space.levels(0).contains(&now[0]), "{now:?}");
        assert!(space.levels(1).contains(&now[1]), "{now:?}");
    }
    rig.assert_schema();
    // A reload that changes them restarts the loop over the new ones.
    rig.policy_from_file();
    let events = rig.reload(&text.replace("[0, 5, 24, 100]", "[0, 10, 100]"));
    assert!(
        events.iter().any(|e| matches!(
            e,
            Event::Policy {
                optimizer_knobs_changed: true,
                ..
            }
        )),
        "{events:?}"
    );
    let space = rig.space();
    assert_eq!(space.levels(1), [0.0, 10.0, 100.0]);
}

/// Given levels a cpufreq driver with a frequency table would not read back (not in its
/// `scaling_available_frequencies`) are left out; a knob left with fewer than two is left out,
/// saying why, and the loop searches the others.
#[test]
fn optimizer_levels_the_driver_would_not_read_back_are_left_out() {
    let text = policy("optimizer_levels = [1200000, 1250000, 3000000]").replace(
        "max = 100\nsources = [\"optimizer\"]\n",
        "max = 100\nsources = [\"optimizer\"]\noptimizer_levels = [1, 4, 33]\n",
    );
    let rig = Rig::new(&text, true, "");
    std::fs::write(
        rig.max_freq_file
            .parent()
            .unwrap()
            .join("scaling_available_frequencies"),
        "3000000 2000000 1200000\n",
    )
    .unwrap();
    let rig = rig.restarted();
    let space = rig.space();
    assert_eq!(space.dims(), 1);
    assert_eq!(space.levels(0), [1_200_000.0, 3_000_000.0]);
    let started = rig.last_started();
    let left_out = started["left_out"].to_string();
    assert!(
        left_out.contains("ethtool:eth0:rx-usecs: fewer than two of the policy entry's optimizer_levels [1, 4, 33]"),
        "{started}"
    );
}

/// A reload that leaves the optimizer no knobs settles its loop (the trial makes way for the
/// best measured within the SLO) and turns it off: nothing is written after.
#[test]
fn a_reload_that_gives_the_optimizer_no_knobs_settles_its_loop_and_stops_it() {
    let mut rig = Rig::new(&policy(""), true, "");
    rig.policy_from_file();
    rig.until_a_trial(20, |rig| {
        let best = rig.best_measured().unwrap();
        best[0] != rig.max_freq() as f64 && best != vec![3_000_000.0, 0.0]
    });
    let trial = rig.config_now();
    let best = rig.best_measured().unwrap();

    let without = policy("").replace("sources = [\"optimizer\"]", "sources = [\"operator\"]");
    let events = rig.reload(&without);
    assert_reload_order(&events, &["settled"]);
    assert_eq!(settled(&events), Some((trial, best.clone())));
    assert!(rig.deciding.optimizer_for_tests().is_none());
    // What the sysfs file holds is the settled value, and it stays.
    assert_eq!(rig.max_freq() as f64, best[0]);
    assert_eq!(rig.config_now(), best);
    let intents = rig.intents().len();
    for _ in 0..3 {
        let events = rig.window();
        assert!(loop_events(&events).is_empty(), "{events:?}");
    }
    assert_eq!(rig.intents().len(), intents);
    assert_eq!(rig.config_now(), best);
    rig.assert_schema();
}

/// A trial in place at a reload that changes the optimizer's entries is settled, not left for the
/// new loop to start from, even when every knob's parameters revert on exit (the agent is not
/// stopping: nothing puts the originals back after); the new loop starts from the settled values.
#[test]
fn a_trial_in_place_at_a_reload_is_settled_even_when_its_knobs_revert_on_exit() {
    let text = policy("on_exit = \"revert\"").replace(
        "max = 100\nsources = [\"optimizer\"]",
        "max = 100\nsources = [\"optimizer\"]\non_exit = \"revert\"",
    );
    assert_eq!(text.matches("on_exit").count(), 2, "{text}");
    let mut rig = Rig::new(&text, true, "");
    rig.policy_from_file();
    rig.window();
    let trial = rig.config_now();
    assert_ne!(
        trial,
        vec![3_000_000.0, 0.0],
        "the first trial moved the knobs"
    );
    let before = rig.intents().len();

    let edited = text.replacen(
        "on_exit = \"revert\"",
        "on_exit = \"revert\"\ncooldown = \"1s\"",
        1,
    );
    let events = rig.reload(&edited);
    assert_reload_order(&events, &["settled", "started"]);
    assert_eq!(
        settled(&events),
        Some((trial, vec![3_000_000.0, 0.0])),
        "{events:?}"
    );
    assert_eq!(rig.config_now(), vec![3_000_000.0, 0.0]);
    let reverts = &rig.intents()[before..];
    assert_eq!(reverts.len(), 2, "{reverts:#?}");
    for r in reverts {
        assert!(
            matches!(r.kind, IntentKind::Revert { of: Some(_) }),
            "{r:?}"
        );
        assert_eq!(r.source, Source::Optimizer);
        assert!(
            r.reason.starts_with("optimizer: policy reloaded"),
            "{}",
            r.reason
        );
    }
    assert_eq!(
        rig.last_started()["config"],
        serde_json::json!([3_000_000.0, 0.0])
    );
    // The window open at the reload ran under the trial until the settle: the new loop does not
    // take it for a measurement of its start.
    let next = rig.window();
    assert!(
        has(&next, |e| matches!(e, LiveEvent::Resynced { .. })),
        "{next:?}"
    );
    assert!(
        !has(&next, |e| matches!(e, LiveEvent::Measured { .. })),
        "{next:?}"
    );
    rig.assert_schema();
}

/// Defect: only entries naming the optimizer were compared, so an entry that takes a parameter
/// out of the optimizer's glob (a more specific one, for the operator) left the old loop
/// searching a knob whose every trial is then refused.
#[test]
fn a_reload_with_an_entry_that_takes_a_knob_from_the_optimizer_restarts_its_loop() {
    let text = policy("");
    let mut rig = Rig::new(&text, true, "");
    rig.policy_from_file();
    assert_eq!(rig.json[0]["knobs"], serde_json::json!([MAX_FREQ, RX]));
    let edited =
        format!("{text}\n[params.\"{MAX_FREQ}\"]\nmode = \"auto\"\nsources = [\"operator\"]\n");
    let events = rig.reload(&edited);
    let policy_event = serde_json::to_value(&events[0]).unwrap();
    assert_eq!(
        policy_event["optimizer_knobs_changed"], true,
        "{policy_event}"
    );
    assert_eq!(rig.last_started()["knobs"], serde_json::json!([RX]));
    rig.assert_schema();
}

/// A change in a network namespace that was deleted since: the window's check of KPO's values
/// finds it gone for good (no namespace on its inode, in use nowhere KPO looks) and ends its
/// watch without a verdict, before the regression of that window (here the host's run queue,
/// which judges every change) could ask for a revert that cannot reach it (s49 storyU U3).
#[test]
fn a_watch_in_a_deleted_namespace_ends_when_its_revert_cannot_reach_it() {
    // Never the test's own namespace (inodes are 32-bit), so scoped to that namespace.
    let address = format!("net.core.somaxconn@netns:{}", 1u64 << 40);
    let tmp = tempfile::tempdir().unwrap();
    let k = crate::change::tests::kernel(&[(&address, Value::Int(128))]);
    let journal = Journal::open(&tmp.path().join("state"), Holder::Agent, Duration::ZERO).unwrap();
    let policy = Policy::parse(
        r#"
[guard]
signals = ["runq_p99"]
windows = 3

[params."net.core.somaxconn"]
mode = "auto"
min = 128
max = 65535
sources = ["operator"]
"#,
        "policy.toml",
    )
    .unwrap();
    let mut d = Deciding::with_path(ChangePath::new(policy, journal, Box::new(k.clone())), false)
        .unwrap()
        .0;
    let runq = |p99_us: f64| {
        let mut w = crate::advise::rules::testing::window(vec![]);
        w.runq_latency = Some(LatencySummary {
            samples: 1000,
            p50_us: p99_us / 4.0,
            p90_us: p99_us / 2.0,
            p99_us,
            max_us: p99_us,
        });
        w
    };
    d.on_window(&runq(100.0));
    let (answer, mut reply) = tokio::sync::oneshot::channel();
    d.serve(crate::api::server::Incoming {
        request: crate::api::Request::Apply(crate::control::ApplyRequest {
            address: address.parse().unwrap(),
            value: Value::Int(256.into()),
            reason: "test".into(),
            by: None,
        }),
        caller: CALLER.into(),
        answer,
        connection: None,
    });
    assert!(matches!(reply.try_recv(), Ok(crate::api::Reply::Ok(_))));
    assert_eq!(d.guard_watching(), 1);
    k.0.lock().unwrap().netns_gone = true;
    let reverts = |events: Vec<Event>| guard_reverts(&events);
    let verdicts = |events: &[Event]| {
        events
            .iter()
            .map(|e| serde_json::to_value(e).unwrap())
            .filter(|e| e["kind"] == "guard")
            .count()
    };
    let events = d.on_window(&runq(5_000.0));
    if !crate::actuate::sysctl::sees_every_process() {
        // In a PID namespace of its own nothing is taken for gone: the watch stays.
        assert_eq!(d.guard_watching(), 1);
        return;
    }
    assert_eq!(verdicts(&events), 0, "ended without a verdict");
    assert_eq!(d.guard_watching(), 0, "nothing left there to judge");
    for _ in 0..3 {
        assert_eq!(reverts(d.on_window(&runq(5_000.0))), 0);
    }
}

/// Defect: once the guard reverted a step back of the rules (putting their raise back, its own
/// revert in the journal), the value in place was no longer the rules' own, so they never
/// stepped back again and the raise stayed for good. Now the raise the guard put back is still
/// theirs: no step back while the stepped-back value is quarantined (the policy would refuse it),
/// and the first calm window after the quarantine ends steps back again.
#[test]
fn a_step_back_the_guard_reverted_is_tried_again_once_its_quarantine_ends() {
    let host =
        std::os::unix::fs::MetadataExt::ino(&std::fs::metadata("/proc/self/ns/net").unwrap());
    let tmp = tempfile::tempdir().unwrap();
    let k = crate::change::tests::kernel(&[("net.core.somaxconn", Value::Int(128))]);
    let journal = Journal::open(&tmp.path().join("state"), Holder::Agent, Duration::ZERO).unwrap();
    let policy = Policy::parse(
        r#"
[guard]
max_changes_per_hour = 1000

[params."net.core.somaxconn"]
mode = "auto"
min = 128
max = 65535
sources = ["rules"]
guard_signals = ["request_p99"]
"#,
        "policy.toml",
    )
    .unwrap();
    let mut d = Deciding::with_path(ChangePath::new(policy, journal, Box::new(k.clone())), false)
        .unwrap()
        .0;
    let somaxconn = || k.0.lock().unwrap().values["net.core.somaxconn"].clone();
    // The service has not listened again since the raise: its limit is still 128, its queue
    // nearly empty.
    let calm = |p99_us: f64| {
        let mut w = pressure(host, 10.0, 0, p99_us);
        w.listeners[0].backlog_max = 5;
        w
    };
    // What each window proposed for somaxconn, and what became of it.
    let changes = |events: Vec<Event>| -> Vec<(Value, Source, ChangePhase)> {
        events
            .into_iter()
            .filter_map(|e| match e {
                Event::Change(c)
                    if matches!(
                        c.phase,
                        ChangePhase::Verified | ChangePhase::Refused | ChangePhase::Reverted
                    ) =>
                {
                    Some((c.after, c.source, c.phase))
                }
                _ => None,
            })
            .collect()
    };
    d.on_window(&pressure(host, 10.0, 0, 1_000.0));
    d.on_tick_window(&pressure(host, 1.0, 50, 1_000.0));
    assert_eq!(somaxconn(), Value::Int(256), "raised on the tick");
    // The calm that steps back (60 windows), the raise judged and kept meanwhile.
    let mut windows = 0;
    while somaxconn() == Value::Int(256) {
        windows += 1;
        assert!(windows <= 60, "no step back after 60 calm windows");
        d.on_window(&calm(1_000.0));
    }
    assert_eq!(somaxconn(), Value::Int(128), "stepped back");
    // Requests wait far longer after the step back: the guard puts the raise back.
    let mut reverted = Vec::new();
    for _ in 0..4 {
        reverted.extend(changes(d.on_window(&calm(50_000.0))));
        if !reverted.is_empty() {
            break;
        }
    }
    assert_eq!(
        reverted,
        [(Value::Int(256), Source::Guard, ChangePhase::Reverted)]
    );
    // The quarantine of 128 lasts an hour: no step back meanwhile, not even one refused.
    for _ in 0..100 {
        assert_eq!(changes(d.on_window(&calm(1_000.0))), []);
    }
    assert_eq!(somaxconn(), Value::Int(256));
    // An hour on, the quarantine is over (journaled as ended, as a restart's would be).
    let journal = &mut d.path_for_tests_mut().journal;
    let now = crate::journal::now_ms();
    journal
        .append(Record::Quarantine {
            ts_ms: now,
            key: "net.core.somaxconn".into(),
            value: Value::Int(128),
            until_ms: now,
            why: "test: an hour has passed".into(),
            earlier: None,
        })
        .unwrap();
    assert_eq!(
        changes(d.on_window(&calm(1_000.0))),
        [(Value::Int(128), Source::Rules, ChangePhase::Verified)],
        "the rules step back again"
    );
    assert_eq!(somaxconn(), Value::Int(128));
}

/// Defect: the receive-path rule's judgement that a raise of the budgets did not cut the
/// squeezes lived in memory only, so after a restart it raised them again from the budgets that
/// had not helped. It is kept in the state directory (`rules.json`) and taken up at start.
#[test]
fn a_budget_raise_that_did_not_help_is_not_followed_by_another_after_a_restart() {
    const BUDGET: &str = "net.core.netdev_budget";
    const USECS: &str = "net.core.netdev_budget_usecs";
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    let k = crate::change::tests::kernel(&[(BUDGET, Value::Int(300)), (USECS, Value::Int(2000))]);
    let policy = r#"
[guard]
max_changes_per_hour = 1000

[params."net.core.netdev_budget"]
mode = "auto"
sources = ["rules"]
guard_signals = ["request_p99"]

[params."net.core.netdev_budget_usecs"]
mode = "auto"
sources = ["rules"]
guard_signals = ["request_p99"]
"#;
    // Whatever this host's tick rate: at HZ 1000 doubling 2000 µs is a longer round.
    let open = || deciding_at_hz_1000(&state, policy, &k);
    // 1.2% of the NET_RX rounds squeezed, whatever the budgets: the CPU is busy.
    let mut squeezed = crate::advise::rules::testing::window(vec![]);
    squeezed.system.softnet_time_squeeze = Some(720);
    squeezed.system.softnet_time_squeeze_per_s = Some(12.0);
    squeezed.system.softirqs_per_s = Some([("NET_RX".to_string(), 1000.0)].into());
    let applied = |d: &mut Deciding, windows: usize| -> Vec<(String, Value)> {
        (0..windows)
            .flat_map(|_| d.on_window(&squeezed))
            .filter_map(|e| match e {
                Event::Change(c) if c.phase == ChangePhase::Verified => {
                    Some((c.target.name.clone(), c.after))
                }
                _ => None,
            })
            .collect()
    };
    let mut d = open();
    // The first saves fail (a directory where the file goes: rename cannot replace it).
    std::fs::create_dir(state.join("rules.json")).unwrap();
    assert_eq!(
        applied(&mut d, 10),
        [
            (BUDGET.to_string(), Value::Int(600)),
            (USECS.to_string(), Value::Int(4000))
        ],
        "one raise, judged by two windows at its budgets: no cut"
    );
    assert!(state.join("rules.json").is_dir(), "the save failed");
    // Defect: a failed save was taken for done and never tried again.
    std::fs::remove_dir(state.join("rules.json")).unwrap();
    assert_eq!(applied(&mut d, 1), []);
    assert_eq!(
        std::fs::read_to_string(state.join("rules.json")).unwrap(),
        "{\"receive_path_futile\":[600,4000],\"whole_ticks\":true}\n"
    );
    drop(d);
    let mut d = open();
    assert_eq!(applied(&mut d, 10), [], "not again after a restart");
}

/// A `Deciding` over the journal in `state`, `policy` and kernel `k` (opened again for a
/// restart), with the tick rate taken as HZ 1000.
fn deciding_at_hz_1000(
    state: &std::path::Path,
    policy: &str,
    k: &crate::change::tests::FakeActuators,
) -> Deciding {
    let journal = Journal::open(state, Holder::Agent, Duration::ZERO).unwrap();
    let policy = Policy::parse(policy, "policy.toml").unwrap();
    let mut d = Deciding::with_path(ChangePath::new(policy, journal, Box::new(k.clone())), false)
        .unwrap()
        .0;
    d.set_hz_for_tests(Some(1000));
    d
}

/// Defect: the receive-path rule's judgement that a raise of `netdev_max_backlog` did not cut the
/// drops lived in memory only, so after a restart it raised the backlog again from the value that
/// had not helped. It is kept in the state directory (`rules.json`) and taken up at start.
#[test]
fn a_backlog_raise_that_did_not_help_is_not_followed_by_another_after_a_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    let k = crate::change::tests::kernel(&[(BACKLOG, Value::Int(1000))]);
    let policy = r#"
[guard]
max_changes_per_hour = 1000

[params."net.core.netdev_max_backlog"]
mode = "auto"
sources = ["rules"]
guard_signals = ["request_p99"]
"#;
    // The file says whether the tick rate was known: the same whatever this host's.
    let open = || deciding_at_hz_1000(&state, policy, &k);
    // 37 drops a second, whatever the backlog: the CPU cannot drain it.
    let mut dropping = crate::advise::rules::testing::window(vec![]);
    dropping.system.softnet_dropped = Some(2220);
    dropping.system.softnet_dropped_per_s = Some(37.0);
    let applied = |d: &mut Deciding, windows: usize| -> Vec<Value> {
        (0..windows)
            .flat_map(|_| d.on_window(&dropping))
            .filter_map(|e| match e {
                Event::Change(c) if c.phase == ChangePhase::Verified => Some(c.after),
                _ => None,
            })
            .collect()
    };
    let mut d = open();
    assert_eq!(
        applied(&mut d, 5),
        [Value::Int(2000)],
        "one raise, judged by the window at its value: no cut"
    );
    assert_eq!(
        std::fs::read_to_string(state.join("rules.json")).unwrap(),
        "{\"receive_path_futile\":null,\"whole_ticks\":true,\"receive_path_backlog_futile\":2000}\n"
    );
    drop(d);
    let mut d = open();
    assert_eq!(applied(&mut d, 5), [], "not again after a restart");
}

/// The accept-queue rule's judgement that a raise of somaxconn did not cut a listener's drops is
/// kept in the state directory (`rules.json`) and taken up at start: after a restart the
/// listener's drops at the raised limit get advice for the application, not another raise.
#[test]
fn a_somaxconn_raise_that_did_not_help_is_not_followed_by_another_after_a_restart() {
    use crate::advise::rules::testing::{listener, window};
    let host =
        std::os::unix::fs::MetadataExt::ino(&std::fs::metadata("/proc/self/ns/net").unwrap());
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    let k = crate::change::tests::kernel(&[("net.core.somaxconn", Value::Int(128))]);
    let policy = r#"
[guard]
max_changes_per_hour = 1000

[params."net.core.somaxconn"]
mode = "auto"
min = 128
max = 65535
sources = ["rules"]
guard_signals = ["request_p99"]
"#;
    let open = || {
        let journal = Journal::open(&state, Holder::Agent, Duration::ZERO).unwrap();
        let policy = Policy::parse(policy, "policy.toml").unwrap();
        Deciding::with_path(ChangePath::new(policy, journal, Box::new(k.clone())), false)
            .unwrap()
            .0
    };
    let somaxconn = || k.0.lock().unwrap().values["net.core.somaxconn"].clone();
    // What each event proposed: a change's new value, or a recommendation's (null for advice to
    // the service or application).
    let proposed = |events: Vec<Event>| -> Vec<Option<Value>> {
        events
            .into_iter()
            .filter_map(|e| match e {
                Event::Recommendation(r) => Some(r.recommended_value),
                _ => None,
            })
            .collect()
    };
    let at = |limit: u32, max: u32, drops: u64| window(vec![listener(host, limit, max, drops)]);
    let mut d = open();
    assert_eq!(
        proposed(d.on_tick_window(&at(128, 128, 40))),
        [Some(Value::Int(256))]
    );
    assert_eq!(somaxconn(), Value::Int(256));
    assert_eq!(
        proposed(d.on_window(&at(128, 128, 1200))),
        [None],
        "listen again"
    );
    assert_eq!(proposed(d.on_window(&at(128, 128, 1200))), []);
    // It listened again at 256 and drops as much.
    assert_eq!(proposed(d.on_window(&at(256, 256, 1000))), []);
    assert_eq!(proposed(d.on_window(&at(256, 257, 1150))), []);
    assert_eq!(proposed(d.on_window(&at(256, 256, 1200))), [None], "futile");
    let saved = std::fs::read_to_string(state.join("rules.json")).unwrap();
    assert!(
        saved.contains(&format!(
            "\"accept_queue_futile\":[{{\"netns\":{host},\"port\":8080,\"family\":\"ipv4\",\"from\":128,\"to\":256"
        )),
        "{saved}"
    );
    drop(d);
    let mut d = open();
    let events = d.on_tick_window(&at(256, 256, 40));
    let reasons: Vec<String> = events
        .iter()
        .filter_map(|e| match e {
            Event::Recommendation(r) => Some(r.reason.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(proposed(events), [None], "not a raise after the restart");
    assert!(
        reasons[0].contains("drops went from 1200 to 1175 per window"),
        "{}",
        reasons[0]
    );
    assert_eq!(somaxconn(), Value::Int(256));
}

/// [`Deciding::open`] as `kpo run` calls it, with `policy` and `sysfs_root`, on a runtime as the
/// agent's (the control socket's accept loop is a task of it); the agent is dropped at once.
fn open_agent(
    state_dir: &Path,
    socket: &Path,
    policy: &Path,
    sysfs_root: &Path,
) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let _in_runtime = runtime.enter();
    let state = crate::cli::StateArgs {
        policy: Some(policy.into()),
        state_dir: Some(state_dir.into()),
        socket: Some(socket.into()),
    };
    let config = Config {
        sysfs_root: sysfs_root.into(),
        ..Config::default()
    };
    Deciding::open(&state, &config, false).map(drop)
}

/// A state directory's record, as the offline commands read it.
fn record(state_dir: &Path, name: &str) -> Option<String> {
    std::fs::read_to_string(state_dir.join(name)).ok()
}

/// `parent/open`, mode 0777: a directory the control socket is refused in.
fn a_directory_every_user_may_write(parent: &Path) -> PathBuf {
    let dir = parent.join("open");
    std::fs::create_dir(&dir).unwrap();
    std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    dir
}

/// Defect (review s28 run-config #4): the records the offline commands follow (the agent's
/// policy and sysfs tree) were written before the control socket was bound, so a start refused
/// there (a socket directory anyone may change, another agent on the socket) re-pointed them at
/// a policy and a tree no agent ran with, and `kpo revert --all` then acted on those.
#[test]
fn a_start_refused_at_the_control_socket_leaves_the_records_as_they_were() {
    if !nix::unistd::geteuid().is_root() {
        kpo_test_skip::skip("not root: the control socket's directories must be root's");
        return;
    }
    let top = tempfile::tempdir().unwrap();
    let state = top.path().join("state");
    let socket = top.path().join("run/kpo.sock");
    let (p1, p2) = (top.path().join("p1.toml"), top.path().join("p2.toml"));
    let (sys1, sys2) = (top.path().join("sys1"), top.path().join("sys2"));
    for policy in [&p1, &p2] {
        std::fs::write(policy, "[guard]\nmax_changes_per_hour = 10\n").unwrap();
    }
    for sys in [&sys1, &sys2] {
        std::fs::create_dir(sys).unwrap();
    }
    // The agent ran with P1 over sys1.
    open_agent(&state, &socket, &p1, &sys1).unwrap();
    let as_before = |why: &str| {
        assert_eq!(
            record(&state, crate::control::POLICY_PATH_FILE).as_deref(),
            Some(p1.to_str().unwrap()),
            "{why}"
        );
        assert_eq!(
            record(&state, crate::control::SYSFS_ROOT_FILE).as_deref(),
            Some(sys1.to_str().unwrap()),
            "{why}"
        );
    };
    as_before("the agent's own start");
    // A start with P2 over sys2 whose socket's directory lets every user replace the socket.
    let open_dir = a_directory_every_user_may_write(top.path());
    let refused = open_agent(&state, &open_dir.join("kpo.sock"), &p2, &sys2)
        .unwrap_err()
        .to_string();
    assert!(refused.contains("mode 0777 lets every user"), "{refused}");
    as_before("a start refused at its socket");
    // Started, it points them at its own.
    open_agent(&state, &socket, &p2, &sys2).unwrap();
    assert_eq!(
        record(&state, crate::control::POLICY_PATH_FILE).as_deref(),
        Some(p2.to_str().unwrap())
    );
    assert_eq!(
        record(&state, crate::control::SYSFS_ROOT_FILE).as_deref(),
        Some(sys2.to_str().unwrap())
    );
}

/// A start refused its control socket (a directory every user may change, or another agent on
/// it) made its new state directory first and left it behind (s55 story AV-8).
#[test]
fn a_start_refused_its_socket_makes_no_state_directory() {
    if !nix::unistd::geteuid().is_root() {
        kpo_test_skip::skip("not root: the control socket's directories must be root's");
        return;
    }
    let top = tempfile::tempdir().unwrap();
    let policy = top.path().join("p.toml");
    std::fs::write(&policy, "[defaults]\n").unwrap();
    let sys = top.path().join("sys");
    std::fs::create_dir(&sys).unwrap();
    let open_dir = a_directory_every_user_may_write(top.path());
    let state = top.path().join("new-state");
    for (socket, why) in [
        (open_dir.join("kpo.sock"), "mode 0777 lets every user"),
        // Missing, under the open directory: refused before anything is made under it.
        (open_dir.join("run/kpo.sock"), "mode 0777 lets every user"),
        // Longer than a unix socket's path may be (s56 review1 R1-9).
        (
            top.path().join("x".repeat(110)).join("kpo.sock"),
            "at most 107 bytes",
        ),
    ] {
        let refused = open_agent(&state, &socket, &policy, &sys)
            .unwrap_err()
            .to_string();
        assert!(refused.contains(why), "{refused}");
        assert!(!state.exists(), "{} was made", state.display());
        assert!(!open_dir.join("run").exists());
    }
    // Another agent (root's listener) answers on the socket: the same.
    std::fs::create_dir(top.path().join("run")).unwrap();
    let socket = top.path().join("run/kpo.sock");
    let _other = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    let refused = open_agent(&state, &socket, &policy, &sys)
        .unwrap_err()
        .to_string();
    assert!(refused.contains("another agent"), "{refused}");
    assert!(!state.exists(), "{} was made", state.display());
}

/// Defect (review s28 run-config #3): `kpo run` started on a state directory an agent last used
/// from another network namespace, one still alive, and re-pointed `agent-netns` at its own
/// without a word: the journal's parameters without a namespace (that namespace's) were then
/// judged, yielded and put back in this one, and the offline commands refused in the first.
/// Once that namespace is gone, the agent starts and names its own.
#[test]
fn the_agent_refuses_a_state_directory_last_used_from_another_network_namespace_still_alive() {
    use std::os::unix::fs::MetadataExt;
    if !nix::unistd::geteuid().is_root() {
        kpo_test_skip::skip("not root: the test makes a network namespace");
        return;
    }
    if !crate::actuate::sysctl::sees_every_process() {
        kpo_test_skip::skip(
            "this test runs in a PID namespace of its own (a container without the \
             host's PID namespace), where the agent refuses to start whatever holds the \
             namespace: what this test checks needs the initial PID namespace",
        );
        return;
    }
    let other = crate::actuate::sysctl::ProcessInOtherNetns::spawn();
    let theirs = other.netns_inode();
    let here = std::fs::metadata("/proc/thread-self/ns/net").unwrap().ino();
    assert_ne!(theirs, here);

    let top = tempfile::tempdir().unwrap();
    let state = top.path().join("state");
    let socket = top.path().join("run/kpo.sock");
    let policy = top.path().join("policy.toml");
    std::fs::write(&policy, "[defaults]\n").unwrap();
    crate::journal::store::ensure_dir(&state).unwrap();
    let file = state.join(crate::control::AGENT_NETNS_FILE);
    std::fs::write(&file, format!("{theirs} -\n")).unwrap();
    let refused = open_agent(&state, &socket, &policy, Path::new("/sys"))
        .unwrap_err()
        .to_string();
    assert!(
        refused.starts_with(&format!(
            "refused: an agent last ran (or, before any agent, a command first changed a \
             parameter) on this state directory in network namespace \
             net:[{theirs}], which still exists, and this one would run in net:[{here}]"
        )),
        "{refused}"
    );
    assert!(
        refused.contains("`ip netns exec NAME kpo run ...`"),
        "{refused}"
    );
    assert!(
        refused.ends_with(&format!("removing {} lets it start here", file.display())),
        "{refused}"
    );
    // Nothing recorded.
    assert_eq!(
        record(&state, crate::control::AGENT_NETNS_FILE),
        Some(format!("{theirs} -\n"))
    );
    assert_eq!(record(&state, crate::control::POLICY_PATH_FILE), None);
    assert!(!socket.exists());
    // Recorded in this boot: the same refusal. In an earlier boot, the namespace it named is
    // gone whatever holds its inode now (inodes start again from the same numbers at a boot).
    if let Some(boot) = crate::journal::current_boot() {
        std::fs::write(&file, format!("{theirs} - {boot}\n")).unwrap();
        assert!(open_agent(&state, &socket, &policy, Path::new("/sys")).is_err());
        let earlier = if boot.starts_with('0') { "1" } else { "0" }.to_string() + &boot[1..];
        std::fs::write(&file, format!("{theirs} - {earlier}\n")).unwrap();
        open_agent(&state, &socket, &policy, Path::new("/sys")).expect("an earlier boot's");
        std::fs::write(&file, format!("{theirs} -\n")).unwrap();
    }

    drop(other);
    open_agent(&state, &socket, &policy, Path::new("/sys")).unwrap();
    let recorded = record(&state, crate::control::AGENT_NETNS_FILE).unwrap();
    assert!(recorded.starts_with(&format!("{here} ")), "{recorded}");
}

/// Defect (review s29 second and third rounds): the guard judged a preference the cpufreq driver
/// held at performance under KPO's performance governor, where it had no effect: a regression
/// gave it a verdict whose revert was skipped (again at every regressing window), or its watch
/// ran out to "kept". The agent now leaves it unjudged while held: the governor's change is
/// reverted, the driver gives KPO's preference back, and that is then judged and reverted.
#[test]
fn a_preference_the_driver_holds_under_kpos_governor_is_judged_once_it_has_its_effect_again() {
    const GOVERNOR: &str = "cpufreq:policy0:scaling_governor";
    use crate::guard::{GuardEvent, Verdict};
    const EPP: &str = "cpufreq:policy0:energy_performance_preference";
    let policy = r#"
[guard]
signals = ["request_p99"]
max_changes_per_hour = 1000

[params."cpufreq:*:*"]
mode = "auto"
sources = ["operator"]
"#;
    let mut rig = Rig::new(policy, true, "");
    let dir = rig.max_freq_file.parent().unwrap().to_path_buf();
    for (file, text) in [
        ("scaling_governor", "powersave"),
        ("scaling_available_governors", "performance powersave"),
        ("energy_performance_preference", "balance_performance"),
        (
            "energy_performance_available_preferences",
            "default performance balance_performance balance_power power",
        ),
        ("scaling_driver", "intel_pstate"),
    ] {
        std::fs::write(dir.join(file), format!("{text}\n")).unwrap();
    }
    let read = |f: &str| {
        std::fs::read_to_string(dir.join(f))
            .unwrap()
            .trim()
            .to_string()
    };
    rig.window();
    for (address, value) in [(EPP, "power"), (GOVERNOR, "performance")] {
        let reply = rig.operator(crate::api::Request::Apply(crate::control::ApplyRequest {
            address: address.parse().unwrap(),
            value: Value::Word(value.into()),
            reason: "test".into(),
            by: None,
        }));
        assert!(matches!(reply, crate::api::Reply::Ok(_)), "{reply:?}");
    }
    // intel_pstate under its performance policy: the preference held at performance.
    std::fs::write(dir.join("energy_performance_preference"), "performance\n").unwrap();
    rig.extra_p99_us = 5000.0;
    let held = rig.first_guard_events(6);
    // Only the governor was judged, and reverted.
    assert!(
        held.iter().all(|g| matches!(
            &g.verdict,
            Verdict::Revert { address, .. } if address == GOVERNOR
        )) && held.len() == 1,
        "{held:#?}"
    );
    assert_eq!(held[0].reverted, Some(true), "{held:#?}");
    assert_eq!(read("scaling_governor"), "powersave");
    // The governor gone, the driver gives KPO's preference back: judged now, and reverted.
    std::fs::write(dir.join("energy_performance_preference"), "power\n").unwrap();
    let (cleared, back): (Vec<_>, Vec<_>) = (rig.first_guard_events(6).into_iter())
        .partition(|g| matches!(g.verdict, Verdict::Cleared { .. }));
    // The load outlasted the governor's revert, but the preference's change, still watched,
    // may hold it up: the governor's quarantine stays (s57 review2 R2-1).
    assert!(cleared.is_empty(), "{cleared:#?}");
    assert!(
        matches!(
            back.as_slice(),
            [GuardEvent { verdict: Verdict::Revert { address, .. }, reverted: Some(true), .. }]
                if address == EPP
        ),
        "{back:#?}"
    );
    assert_eq!(read("energy_performance_preference"), "balance_performance");
    rig.assert_schema();
}

/// The policy `kpo run` starts with and each policy a SIGHUP loads is checked as `kpo check`
/// checks it: an exact sysctl this machine lacks and a `namespaces` path that names no file are
/// logged, each with its file and line, since such an entry otherwise decides nothing (or refuses
/// every change it covers) without a word. A policy naming only what exists logs no warning.
#[test]
fn the_policy_loaded_at_start_and_at_sighup_warns_of_names_this_machine_lacks() {
    let dir = tempfile::tempdir().unwrap();
    let no_namespace = dir.path().join("netns-wbe");
    let in_vain = format!(
        "[params.\"net.core.kpo_no_such_sysctl\"]\nmode = \"recommend\"\n\
         [params.\"net.core.somaxconn\"]\nmode = \"recommend\"\nnamespaces = [{:?}]\n",
        no_namespace.display().to_string()
    );
    let fine = "[params.\"net.core.somaxconn\"]\nmode = \"recommend\"\n";
    let warned = |file: &Path| {
        vec![
            format!(
                "policy: {}:1: params.\"net.core.kpo_no_such_sysctl\": this machine has no such \
                 sysctl (/proc/sys/net/core/kpo_no_such_sysctl): a typo?",
                file.display()
            ),
            format!(
                "policy: {}:3: params.\"net.core.somaxconn\": namespaces names {}, which does \
                 not exist now: a typo?",
                file.display(),
                no_namespace.display()
            ),
        ]
    };
    let warnings = |log: &str| -> Vec<String> {
        log.lines()
            .filter(|l| l.contains(" WARN ") && l.contains("policy: "))
            .map(|l| {
                let from = l.find("policy: ").unwrap();
                // Up to the first sentence's end: the rest is check.rs's own tested wording.
                let to = l[from..].find("a typo?").map_or(l.len(), |i| from + i + 7);
                l[from..to].to_string()
            })
            .collect()
    };

    // At each SIGHUP: the file the agent was started with, edited.
    let mut rig = Rig::new(fine, true, "");
    let file = rig._tmp.path().join("policy.toml");
    std::fs::write(&file, fine).unwrap();
    rig.deciding.path_for_tests_mut().policy = Policy::load(Some(&file)).unwrap();
    rig.deciding.set_policy_file_for_tests(file.clone(), true);
    std::fs::write(&file, in_vain.as_bytes()).unwrap();
    let (_, log) = crate::logging::logged(|| rig.deciding.reload_policy(&rig.config));
    assert_eq!(warnings(&log), warned(&file), "{log}");
    // Put right: loaded without a warning.
    std::fs::write(&file, format!("{fine}# fixed\n")).unwrap();
    let (_, log) = crate::logging::logged(|| rig.deciding.reload_policy(&rig.config));
    assert!(warnings(&log).is_empty(), "{log}");
    assert!(log.contains("policy reloaded from"), "it was loaded: {log}");

    // At start, as `kpo run` opens its deciding half.
    if !nix::unistd::geteuid().is_root() {
        kpo_test_skip::skip("not root: the control socket's directories must be root's");
        return;
    }
    let (policy, sys) = (dir.path().join("p.toml"), dir.path().join("sys"));
    std::fs::create_dir(&sys).unwrap();
    let started_with = |text: &str| -> String {
        std::fs::write(&policy, text).unwrap();
        let (started, log) = crate::logging::logged(|| {
            open_agent(
                &dir.path().join("state"),
                &dir.path().join("run/kpo.sock"),
                &policy,
                &sys,
            )
        });
        started.unwrap();
        log
    };
    let log = started_with(&in_vain);
    assert_eq!(warnings(&log), warned(&policy), "{log}");
    let log = started_with(fine);
    assert!(warnings(&log).is_empty(), "{log}");
}

/// The optimizer's trials trade latency for energy on purpose, within the SLO, and the loop takes
/// back a trial that breaks it at once: the guard judges them by `[guard] signals` less
/// `request_p99` and `runq_p99`, while an operator's change of the same parameter is judged by all
/// of them. Defect (s33 qa-optimizer #1): with the default `[guard] signals`, a 1.2 GHz trial within
/// the SLO was reverted by the guard for its run-queue p99, and its value quarantined, so the loop
/// never tried it again.
#[test]
fn the_guard_does_not_judge_the_optimizers_trials_by_latency() {
    let mut rig = Rig::new(&policy(""), true, "");
    let mut within_slo_slower = 0;
    for _ in 0..20 {
        let before = rig.p99();
        let events = rig.window();
        assert_eq!(guard_reverts(&events), 0, "{events:#?}");
        // A trial whose p99 rose past what the guard reverts for (20% and 50 µs) and met the SLO.
        within_slo_slower += usize::from(rig.p99() <= SLO_US && rig.p99() > before * 1.2 + 50.0);
    }
    assert!(
        within_slo_slower > 0,
        "no trial slowed requests: {:?}",
        rig.live
    );
    let kept: Vec<&serde_json::Value> = rig
        .json
        .iter()
        .filter(|e| e["kind"] == "guard" && e["verdict"] == "kept")
        .collect();
    assert!(!kept.is_empty(), "the trials are still watched");
    for k in &kept {
        assert!(
            k["judged"]
                .as_array()
                .unwrap()
                .iter()
                .all(|s| s != "request_p99" && s != "runq_p99"),
            "{k}"
        );
    }
    let policy = &rig.deciding.path_for_tests_mut().policy;
    let address: ParamAddress = MAX_FREQ.parse().unwrap();
    assert_eq!(
        policy.guard_signals_for(&address, Source::Optimizer),
        Some(vec![
            HealthSignal::ListenOverflows,
            HealthSignal::SynackRetransmits,
            HealthSignal::SoftnetDrops,
            HealthSignal::TcpRetransmits,
        ])
    );
    assert_eq!(policy.guard_signals_for(&address, Source::Operator), None);
    rig.assert_schema();
}

/// Defect (review s33 qa-statefail #1): a rule's raise the journal could not record (a full
/// state directory) was latched as advice given, so after the disk was freed the rule stayed
/// quiet for `REPEAT_WINDOWS` windows while the drops went on. Now the advice is given again at
/// the next window, and applied once the journal can be written; while it cannot, once a window.
#[test]
fn a_rules_advice_the_journal_could_not_record_is_given_again_at_the_next_window() {
    let (_tmp, k, mut deciding, drops) = backlog_rig(BACKLOG_IN_AUTO);
    let outcome = |deciding: &mut Deciding| -> Vec<(i64, ChangePhase, Option<u64>)> {
        deciding
            .on_window(&drops)
            .into_iter()
            .filter_map(|e| match e {
                Event::Change(c) if c.phase != ChangePhase::Proposed => {
                    Some((c.after.as_int().unwrap(), c.phase, c.journal_id))
                }
                _ => None,
            })
            .collect()
    };
    let backlog = || k.0.lock().unwrap().values[BACKLOG].clone();
    // Two windows with a full disk: the raise fails each time, and nothing is written.
    for _ in 0..2 {
        deciding.path_for_tests_mut().journal.fail_an_append(0, 0);
        assert_eq!(outcome(&mut deciding), [(2000, ChangePhase::Failed, None)]);
        assert_eq!(backlog(), Value::Int(1000));
    }
    assert_eq!(
        outcome(&mut deciding),
        [
            (2000, ChangePhase::Applied, Some(1)),
            (2000, ChangePhase::Verified, Some(1))
        ],
        "the journal can be written again"
    );
    assert_eq!(backlog(), Value::Int(2000));
    assert_eq!(deciding.path_for_tests().journal.unwritable(), None);
}

/// s61 review2 R2-3: a rule's raise not made because the guard's file could not take its watch
/// (a full state directory) was held for the rules' repeat of 10 windows, while advice the
/// journal could not record is given again at the next window. Both wait for the same disk.
#[test]
fn a_rules_advice_the_guard_could_not_watch_is_given_again_at_the_next_window() {
    let (tmp, k, mut deciding, drops) = backlog_rig(BACKLOG_IN_AUTO);
    let phases = |deciding: &mut Deciding| -> Vec<(i64, ChangePhase)> {
        deciding
            .on_window(&drops)
            .into_iter()
            .filter_map(|e| match e {
                Event::Change(c) if c.phase != ChangePhase::Proposed => {
                    Some((c.after.as_int().unwrap(), c.phase))
                }
                _ => None,
            })
            .collect()
    };
    let backlog = || k.0.lock().unwrap().values[BACKLOG].clone();
    // Where the file is written first, then renamed: a directory there fails the write.
    let blocker = tmp
        .path()
        .join(format!("{}.tmp", crate::guard::WATCHES_FILE));
    std::fs::create_dir(&blocker).unwrap();
    for _ in 0..2 {
        assert_eq!(phases(&mut deciding), [(2000, ChangePhase::Failed)]);
        assert_eq!(backlog(), Value::Int(1000));
    }
    std::fs::remove_dir(&blocker).unwrap();
    assert_eq!(
        phases(&mut deciding),
        [(2000, ChangePhase::Applied), (2000, ChangePhase::Verified)],
        "the guard's file can be written again"
    );
    assert_eq!(backlog(), Value::Int(2000));
}

/// `file` bind-mounted read-only over itself, undone on drop (even after a panic): its writes
/// fail with EROFS, as on a file system the kernel remounted read-only.
struct ReadOnlyBind(PathBuf);

impl ReadOnlyBind {
    fn new(file: &Path) -> ReadOnlyBind {
        let mount = |args: &[&str]| {
            let done = std::process::Command::new("mount")
                .args(args)
                .arg(file)
                .arg(file)
                .status()
                .unwrap();
            assert!(done.success(), "mount {args:?}");
        };
        mount(&["--bind"]);
        let bind = ReadOnlyBind(file.to_path_buf());
        mount(&["-o", "remount,bind,ro"]);
        bind
    }
}

impl Drop for ReadOnlyBind {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

/// Defect (s33 qa-optimizer #6): a trial whose write failed for a reason that was not its value
/// (a cpufreq file on a file system remounted read-only for a few seconds) was given up for
/// good, and so was every other trial tried while the file stayed read-only: the search ran out
/// of candidates and converged after 3 of its 20 evaluations. Now the loop waits, as for a
/// refusal that passes, and applies the same configuration once the file can be written.
/// s48 storyP P-1: it was tried again every window, however long the file stayed read-only (a
/// container's /sys), each try writing and undoing a group's other members and journaling; the
/// tries are now spaced by a wait that doubles.
#[test]
fn a_trial_that_fails_for_a_while_is_tried_again_not_given_up() {
    if !nix::unistd::geteuid().is_root() {
        kpo_test_skip::skip("not root: a read-only bind mount needs CAP_SYS_ADMIN");
        return;
    }
    a_trial_refused_for_a_while(
        |file| Box::new(ReadOnlyBind::new(file)),
        "Read-only file system",
    );
}

/// s51 story AA F2: a limit file root cannot write (made immutable: EPERM) set aside every
/// candidate written to it as its value's fault, and the search ended after 3 of its 10
/// evaluations. It is waited for, as a read-only one is.
#[test]
fn a_trial_refused_to_root_is_tried_again_not_given_up() {
    if !nix::unistd::geteuid().is_root() {
        kpo_test_skip::skip("not root: root alone is refused by an immutable file");
        return;
    }
    let probe = tempfile::NamedTempFile::new().unwrap();
    if Immutable::new(probe.path()).is_none() {
        kpo_test_skip::skip(
            "chattr +i does not work here (no chattr, or a file system without the flag)",
        );
        return;
    }
    a_trial_refused_for_a_while(
        |file| Box::new(Immutable::new(file).expect("chattr +i worked on the probe")),
        "Operation not permitted",
    );
}

/// `file` made immutable (`chattr +i`: root's writes fail with EPERM), made mutable again on
/// drop, even after a panic. `None` when `chattr` fails.
struct Immutable(PathBuf);

impl Immutable {
    fn new(file: &Path) -> Option<Immutable> {
        let done = std::process::Command::new("chattr")
            .arg("+i")
            .arg(file)
            .stderr(std::process::Stdio::null())
            .status();
        done.is_ok_and(|s| s.success())
            .then(|| Immutable(file.to_path_buf()))
    }
}

impl Drop for Immutable {
    fn drop(&mut self) {
        let _ = std::process::Command::new("chattr")
            .arg("-i")
            .arg(&self.0)
            .status();
    }
}

/// The loop's first trial fails on the max frequency file while `refuse` holds it (its error
/// naming `error_text`): tried again after waits that double, not given up, and applied once the
/// file can be written.
fn a_trial_refused_for_a_while(refuse: impl Fn(&Path) -> Box<dyn std::any::Any>, error_text: &str) {
    let mut rig = Rig::new(&policy(""), true, "");
    let start = rig.config_now();
    let read_only = refuse(&rig.max_freq_file);
    let failed_config = |rig: &Rig, from: usize| -> Vec<Vec<f64>> {
        rig.live[from..]
            .iter()
            .filter_map(|e| match e {
                LiveEvent::ApplyFailed { config, error } => {
                    assert!(error.contains(error_text), "{error}");
                    assert!(error.ends_with("(not the value's fault: tried again later)"));
                    Some(config.clone())
                }
                _ => None,
            })
            .collect()
    };
    let seen = rig.live.len();
    rig.window();
    let first = failed_config(&rig, seen);
    assert_eq!(first.len(), 1, "{:?}", &rig.live[seen..]);
    // The trial's other knob was rolled back: the kernel holds the start.
    assert_eq!(rig.config_now(), start);
    let mut tried_in = Vec::new();
    for window in 1..=10 {
        let (seen, intents) = (rig.live.len(), rig.intents().len());
        rig.window();
        match failed_config(&rig, seen).as_slice() {
            [] => assert_eq!(
                rig.intents().len(),
                intents,
                "window {window}: nothing written"
            ),
            failed => {
                assert_eq!(failed, first.as_slice(), "window {window}: the same");
                tried_in.push(window);
            }
        }
        assert_eq!(rig.config_now(), start);
    }
    // At the next trial (a window each here), then after waits of 1, 2 and 4.
    assert_eq!(tried_in, [1, 3, 6]);
    drop(read_only);
    // The file writable again is found at the next try, window 11.
    let seen = rig.live.len();
    rig.window();
    assert!(
        rig.live[seen..]
            .iter()
            .any(|e| matches!(e, LiveEvent::Applied { config, .. } if *config == first[0])),
        "{:?}",
        &rig.live[seen..]
    );
    assert_eq!(rig.config_now(), first[0]);
    rig.assert_schema();
}

/// The event stream says once that the journal cannot be written, with why, and once that it can
/// again, not at each change it stopped: a log pipeline alerting on the stream need not infer it
/// from `failed` changes (s33 qa-statefail, "not done").
#[test]
fn the_stream_says_once_that_the_journal_cannot_be_written_and_once_that_it_can() {
    let (tmp, _k, mut deciding, drops) = backlog_rig(BACKLOG_IN_AUTO);
    let mut json = Vec::new();
    let said = |events: Vec<Event>, json: &mut Vec<serde_json::Value>| {
        let written = as_written(&events);
        json.extend(written.clone());
        written
            .into_iter()
            .filter(|e| e["kind"] == "journal")
            .collect::<Vec<_>>()
    };
    let dir = tmp.path().display().to_string();
    for window in 0..3 {
        deciding.path_for_tests_mut().journal.fail_an_append(0, 0);
        let journal = said(deciding.on_window(&drops), &mut json);
        if window == 0 {
            assert_eq!(journal.len(), 1, "{journal:?}");
            assert_eq!(journal[0]["writable"], false);
            assert_eq!(journal[0]["dir"], dir.as_str());
            let error = journal[0]["error"].as_str().unwrap();
            assert!(
                error.starts_with(&format!(
                    "{dir}: the journal cannot be written (journal.log: "
                )),
                "{error}"
            );
        } else {
            assert_eq!(journal, Vec::<serde_json::Value>::new(), "once per outage");
        }
    }
    let journal = said(deciding.on_window(&drops), &mut json);
    assert_eq!(
        journal,
        [serde_json::json!({
            "schema": journal[0]["schema"],
            "ts": journal[0]["ts"],
            "host": "test",
            "kind": "journal",
            "writable": true,
            "dir": dir,
            "error": null
        })]
    );
    assert!(
        json.iter()
            .any(|e| e["kind"] == "change" && e["phase"] == "verified"),
        "the raise was made once the journal could record it"
    );
    let journal = said(deciding.on_window(&drops), &mut json);
    assert!(journal.is_empty(), "said once: {journal:?}");
    assert_valid(&json);
}

/// Seen by hand: a rate the guard reverted on was journaled as `382.9667845248446`, shown so by
/// `kpo journal` and in `change` events; three decimals, as the window events give rates.
#[test]
fn the_guards_revert_reason_gives_three_decimals() {
    use crate::policy::HealthSignal;
    assert_eq!(
        super::deciding::revert_reason(
            HealthSignal::ListenOverflows,
            None,
            0.0,
            "the window before the change",
            382.9667845248446
        ),
        "the guard saw listen_overflows go from 0 /s (the window before the change) to 382.967 /s"
    );
    assert_eq!(
        super::deciding::revert_reason(
            HealthSignal::RequestP99,
            Some(&crate::guard::Service {
                netns: 4026531840,
                port: 8080,
            }),
            152.0,
            "the highest of the 5 windows before the change",
            260.0
        ),
        "the guard saw request_p99 go from 152 µs (the highest of the 5 windows before the \
         change, the highest of the services busy then) to 260 µs at port 8080 (netns 4026531840)"
    );
}

/// Defect (review s36 run): at a stop with the journal failing (a full state directory),
/// `on_exit` logged only the journal's error, which ends "a running agent takes the journal up
/// again by itself" (none will: it is stopping), named no parameter, and the ones after the first
/// were not even tried. The warning names each value that may stay and what puts it back.
#[test]
fn on_exit_with_a_failing_journal_names_what_stays_and_how_to_put_it_back() {
    let policy = format!("{BACKLOG_IN_AUTO}on_exit = \"revert\"\n");
    let (_tmp, k, mut deciding, drops) = backlog_rig(&policy);
    let applied = deciding
        .on_window(&drops)
        .into_iter()
        .any(|e| matches!(e, Event::Change(c) if c.phase == ChangePhase::Verified));
    assert!(applied, "the rule raised the backlog");
    assert_eq!(k.0.lock().unwrap().values[BACKLOG], Value::Int(2000));
    deciding.path_for_tests_mut().journal.fail_an_append(0, 0);
    let (_, logged) = crate::logging::logged(|| deciding.on_exit());
    assert_eq!(k.0.lock().unwrap().values[BACKLOG], Value::Int(2000));
    assert!(
        logged.contains(&format!(
            "on exit: not put back, so KPO's values may stay in the kernel after the agent \
             stops: {BACKLOG}; "
        )),
        "{logged}"
    );
    assert!(
        logged.contains(
            "free space in the state directory (or fix what fails there), then `kpo revert \
             --all` puts back what the stopping agent could not"
        ),
        "{logged}"
    );
}

/// Defect (review s36 run): an agent started on a state directory left paused (`kpo pause`
/// survives restarts) said nothing of it, in its log or its events, and then changed nothing.
#[test]
fn a_start_on_a_paused_state_directory_says_so() {
    let open = |dir: &Path| {
        let journal = Journal::open(dir, Holder::Agent, Duration::ZERO).unwrap();
        let policy = Policy::parse(BACKLOG_IN_AUTO, "policy.toml").unwrap();
        let k = crate::change::tests::kernel(&[(BACKLOG, Value::Int(1000))]);
        ChangePath::new(policy, journal, Box::new(k))
    };
    let logged = |dir: &Path| {
        crate::logging::logged(|| drop(Deciding::with_path(open(dir), false).unwrap())).1
    };
    let tmp = tempfile::tempdir().unwrap();
    crate::journal::store::make_private(tmp.path());
    assert!(!logged(tmp.path()).contains("paused"));
    let mut path = open(tmp.path());
    assert!(path.journal.set_paused(true, "operator alice").unwrap());
    let ts_ms = path.journal.paused().unwrap().1;
    drop(path);
    let text = logged(tmp.path());
    assert!(
        text.contains(&format!(
            "changes are paused (kpo pause by operator alice at {}): the agent observes and \
             advises, and changes nothing until kpo resume",
            crate::journal::format_ms(ts_ms)
        )),
        "{text}"
    );
}

/// Seen by hand (review s35 cli): a policy path that became a FIFO would hold SIGHUP's reload, and
/// the loop with it, in open() until something wrote to it. It is refused by what it is, and the
/// policy in force stays. Should the reload wait all the same, a helper thread opens the FIFO's
/// other end after a generous bound, so that the test fails instead of hanging.
#[test]
fn a_reload_from_a_policy_path_that_became_a_fifo_is_refused_without_waiting() {
    let mut rig = Rig::new(&policy(""), true, "");
    rig.policy_from_file();
    let file = rig._tmp.path().join("policy.toml");
    std::fs::remove_file(&file).unwrap();
    nix::unistd::mkfifo(&file, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let (done, finished) = std::sync::mpsc::channel::<()>();
    let writer_end = file.clone();
    let unblock = std::thread::spawn(move || {
        if finished.recv_timeout(Duration::from_secs(60)).is_err() {
            drop(std::fs::OpenOptions::new().write(true).open(writer_end));
        }
    });
    let events = rig.deciding.reload_policy(&rig.config);
    done.send(()).unwrap();
    unblock.join().unwrap();
    let json: Vec<serde_json::Value> = events
        .iter()
        .map(|e| serde_json::to_value(e).unwrap())
        .collect();
    let error = format!(
        "{}: cannot read the policy: it is a FIFO (named pipe), not a regular file: reading one \
         waits for a writer",
        file.display()
    );
    assert_eq!(
        json,
        vec![serde_json::json!({
            "kind": "policy",
            "outcome": "refused",
            "source": file.display().to_string(),
            "error": error,
            "optimizer_knobs_changed": false,
        })]
    );
}

const SOMAXCONN: &str = "net.core.somaxconn";

/// An agent whose operator raised BACKLOG from 1000 to 2000 and somaxconn from 4096 to 8192, both
/// `on_exit = "revert"`, a window after: for the tests of `on_exit` on a failing journal.
fn two_values_to_put_back_at_exit() -> (
    tempfile::TempDir,
    crate::change::tests::FakeActuators,
    Deciding,
) {
    let policy = format!(
        "[defaults]\non_exit = \"revert\"\n\n[params.\"{BACKLOG}\"]\nmode = \"auto\"\n\
         sources = [\"operator\"]\n\n[params.\"{SOMAXCONN}\"]\nmode = \"auto\"\n\
         sources = [\"operator\"]\n"
    );
    let tmp = tempfile::tempdir().unwrap();
    let k =
        crate::change::tests::kernel(&[(BACKLOG, Value::Int(1000)), (SOMAXCONN, Value::Int(4096))]);
    crate::journal::store::make_private(tmp.path());
    let journal = Journal::open(tmp.path(), Holder::Agent, Duration::ZERO).unwrap();
    let policy = Policy::parse(&policy, "policy.toml").unwrap();
    let path = ChangePath::new(policy, journal, Box::new(k.clone()));
    let mut deciding = Deciding::with_path(path, false).unwrap().0;
    for (name, value) in [(BACKLOG, 2000), (SOMAXCONN, 8192)] {
        let p = crate::policy::Proposal {
            address: name.parse().unwrap(),
            value: Value::Int(value.into()),
            source: Source::Operator,
            reason: "test".into(),
        };
        let r = deciding.path_for_tests_mut().propose(&p).unwrap();
        assert_eq!(r.status, crate::change::ChangeStatus::Applied, "{r:?}");
    }
    let _ = deciding.on_window(&crate::advise::rules::testing::window(vec![]));
    (tmp, k, deciding)
}

/// Defect (review s36 run #20): `on_exit` on a failing journal gave only the first parameter it
/// tried a `failed` event (the log named them all): the event stream did not say which others
/// KPO's values stay in the kernel. Every parameter not put back gets its own.
#[test]
fn on_exit_with_a_failing_journal_gives_every_parameter_left_a_failed_event() {
    let (tmp, k, mut deciding) = two_values_to_put_back_at_exit();
    deciding.path_for_tests_mut().journal.fail_an_append(0, 0);
    let events = deciding.on_exit();
    let failed: Vec<serde_json::Value> = events
        .iter()
        .filter_map(|e| match e {
            Event::Change(c) if c.phase == ChangePhase::Failed => {
                Some(serde_json::to_value(c).unwrap())
            }
            _ => None,
        })
        .collect();
    assert_eq!(failed.len(), 2, "{events:?}");
    // The first tried has the journal's own error; the other, not tried, says so.
    let (tried, untried) = match failed[0]["target"] == BACKLOG {
        true => (&failed[0], &failed[1]),
        false => (&failed[1], &failed[0]),
    };
    assert_eq!(tried["target"], BACKLOG);
    // Defect (s39 fix #2): the error said "a running agent takes the journal up again by
    // itself" at a stop, where no agent is left to: it says what puts the values back instead.
    let error = format!(
        "{}: the journal cannot be written (journal.log: No space left on device (os error 28)): \
         KPO changes and records nothing until it can; free space in the state directory (or fix \
         what fails there), then `kpo revert --all` puts back what the stopping agent could not",
        tmp.path().display()
    );
    assert_eq!(
        tried["detail"],
        format!("not written: the journal could not record its intent ({error})"),
    );
    assert_eq!(
        *untried,
        serde_json::json!({
            "phase": "failed",
            "target": SOMAXCONN,
            "key": SOMAXCONN,
            "before": 8192,
            "after": 4096,
            "source": "operator",
            "reason": "agent stopping: on_exit = revert",
            "journal_id": null,
            "detail": format!(
                "not put back: not tried, the journal failed before it (journal: {error})"
            ),
        })
    );
    assert_eq!(k.0.lock().unwrap().values[SOMAXCONN], Value::Int(8192));
}

/// Defect (s39 fix #1): `on_exit` stopped at a journal failure dropped the reports of what it had
/// put back before it: their log lines (and what follows a revert) were lost. The first value is
/// put back and logged; the next, whose intent the journal refuses, stays and is named.
#[test]
fn on_exit_with_a_journal_failing_midway_still_logs_what_it_put_back() {
    let (_journal_dir, k, mut deciding) = two_values_to_put_back_at_exit();
    // The first revert's intent and outcome are recorded, the second's intent is not.
    deciding.path_for_tests_mut().journal.fail_an_append(2, 0);
    let (events, logged) = crate::logging::logged(|| deciding.on_exit());
    let phases: Vec<(String, ChangePhase)> = events
        .iter()
        .filter_map(|e| match e {
            Event::Change(c) if matches!(c.phase, ChangePhase::Reverted | ChangePhase::Failed) => {
                Some((c.target.to_string(), c.phase))
            }
            _ => None,
        })
        .collect();
    assert_eq!(
        phases,
        [
            (BACKLOG.to_string(), ChangePhase::Reverted),
            (SOMAXCONN.to_string(), ChangePhase::Failed)
        ],
        "{events:?}"
    );
    assert!(
        logged.contains(&format!(
            "on exit: reverted #3 {BACKLOG}: 2000 -> 1000 (read back 1000)"
        )),
        "{logged}"
    );
    assert!(
        logged.contains(&format!(
            "on exit: not put back: failed {SOMAXCONN}: 8192 -> 4096: not put back: journal: "
        )),
        "{logged}"
    );
    let values = &k.0.lock().unwrap().values;
    assert_eq!(
        (&values[BACKLOG], &values[SOMAXCONN]),
        (&Value::Int(1000), &Value::Int(8192))
    );
}

/// A change path over `tmp`'s state directory (`state`) and sysctl tree (`proc_sys`), its journal
/// held as `holder`: the agent's start, or a command run while no agent runs.
fn path_over(tmp: &Path, holder: Holder, policy_text: &str) -> ChangePath {
    let journal = Journal::open(&tmp.join("state"), holder, Duration::from_secs(5)).unwrap();
    let actuators = TestActuators {
        roots: Roots {
            proc_sys: tmp.join("proc_sys"),
            sys: tmp.join("sys"),
        },
        nic: FakeCoalesce::new(),
        after_read: AfterRead::default(),
    };
    ChangePath::new(
        Policy::parse(policy_text, "policy.toml").unwrap(),
        journal,
        Box::new(actuators),
    )
}

/// Changes journaled while no agent ran (an operator's `kpo apply`, `kpo revert --all` with the
/// agent down) reach the event stream at the next start, once, each as it ended and when
/// (story AJ, session 53: they never did, and an audit through the stream missed kernel
/// writes). A state directory no agent of this version ran on has no mark: its history is not
/// sent (an upgrade).
#[test]
fn changes_journaled_while_no_agent_ran_are_sent_at_the_next_start() {
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    let address: ParamAddress = "net.core.somaxconn".parse().unwrap();
    let offline = |journal_it: &dyn Fn(&mut Journal)| {
        let mut j = Journal::open(&state, Holder::Cli, Duration::from_secs(5)).unwrap();
        journal_it(&mut j);
    };
    let applied = |j: &mut Journal, before: i128, after: i128, kind: IntentKind| {
        // As the change path journals them: a revert carried out is `reverted`.
        let outcome = match &kind {
            IntentKind::Change => Outcome::Applied {
                read_back: Value::Int(after),
                reconciled: false,
                why: None,
            },
            IntentKind::Revert { .. } => Outcome::Reverted {
                why: "offline".into(),
                read_back: Some(Value::Int(after)),
            },
        };
        let id = j
            .record_intent(
                &address,
                &Value::Int(before),
                &Value::Int(after),
                Source::Operator,
                "offline",
                kind,
            )
            .unwrap();
        j.record_outcome(id, outcome).unwrap();
    };
    // `written`: the loop wrote the start's events to the stream (and marked them sent).
    let start = |written: bool| {
        let path = path_over(tmp.path(), Holder::Agent, &policy(""));
        let (mut deciding, events) = Deciding::with_path(path, false).unwrap();
        if written {
            let last = deciding.journal_last_id();
            deciding.save_events_mark(last);
        }
        drop(deciding);
        assert_valid(&as_written(&events));
        events
            .into_iter()
            .filter_map(|e| match e {
                Event::Change(c) => Some((c.phase, c.journal_id, c.detail)),
                _ => None,
            })
            .collect::<Vec<_>>()
    };
    offline(&|j| applied(j, 4096, 4097, IntentKind::Change));
    assert_eq!(start(true), [], "no mark: an upgrade sends no history");
    offline(&|j| {
        applied(j, 4097, 8192, IntentKind::Change);
        j.record_refusal(
            &address,
            Some(&Value::Int(8192)),
            &Value::Int(99999),
            Source::Operator,
            "too big",
            "out of bounds: 99999 is outside [128, 65535]",
        )
        .unwrap();
        applied(j, 8192, 4096, IntentKind::Revert { of: Some(2) });
    });
    // Killed before the events were written: the next start sends them again.
    let lost = start(false);
    let sent = start(true);
    assert_eq!(sent, lost);
    let phases: Vec<_> = sent.iter().map(|(p, id, _)| (*p, *id)).collect();
    assert_eq!(
        phases,
        [
            (ChangePhase::Applied, Some(2)),
            (ChangePhase::Refused, Some(3)),
            (ChangePhase::Reverted, Some(4)),
        ]
    );
    for (_, _, detail) in &sent {
        let detail = detail.as_deref().unwrap();
        assert!(
            detail.starts_with("sent at start from the journal (journaled at 20"),
            "{detail}"
        );
    }
    assert!(sent[1]
        .2
        .as_deref()
        .unwrap()
        .ends_with("): out of bounds: 99999 is outside [128, 65535]"));
    assert_eq!(start(true), [], "sent once");
    let mark = state.join(crate::journal::events_mark::MARK_FILE);
    assert_eq!(
        std::fs::read_to_string(&mark).unwrap(),
        "{\"journal_id\":4}\n"
    );
    // A journal that lost its records (emptied, restored from an older copy) does not hand out
    // the ids the stream carried again: the next change is #5, and it is sent.
    std::fs::remove_file(state.join("journal.log")).unwrap();
    offline(&|j| applied(j, 4096, 5000, IntentKind::Change));
    let sent = start(true);
    assert_eq!(
        sent.iter().map(|(p, id, _)| (*p, *id)).collect::<Vec<_>>(),
        [(ChangePhase::Applied, Some(5))]
    );
}

/// The mark of the changes the stream carried moves once their events are written, not when
/// they are queued (s53 review2 M-A): a stream that loses them (here `/dev/full`, whose every
/// write fails) leaves the mark where it was, so the next start sends them again.
#[test]
fn the_events_mark_moves_only_once_the_events_are_written() {
    use super::offline_changes::MarkKeeper;
    use crate::output::sink::{EventSink, DEFAULT_QUEUE_BYTES};
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    let open =
        || Deciding::with_path(path_over(tmp.path(), Holder::Agent, &policy("")), false).unwrap();
    let offline_change = || {
        let mut j = Journal::open(&state, Holder::Cli, Duration::from_secs(5)).unwrap();
        let address: ParamAddress = "net.core.somaxconn".parse().unwrap();
        let id = j
            .record_intent(
                &address,
                &Value::Int(4096),
                &Value::Int(8192),
                Source::Operator,
                "offline",
                IntentKind::Change,
            )
            .unwrap();
        j.record_refusal(&address, None, &Value::Int(1), Source::Operator, "x", "y")
            .unwrap();
        id
    };
    let mark = || crate::journal::events_mark::load(&state).unwrap();
    drop(open());
    assert_eq!(mark(), Some(0));
    offline_change();
    // A stream that loses every event: the mark stays, however many windows go by.
    let (mut deciding, events) = open();
    assert_eq!(events.len(), 1, "the refusal; the intent is reconciled");
    let mut lost = EventSink::open(Path::new("/dev/full"), DEFAULT_QUEUE_BYTES).unwrap();
    for e in &events {
        lost.send(e);
    }
    let mut keeper = MarkKeeper::default();
    for _ in 0..3 {
        keeper.after_queued(&mut deciding, &lost);
        lost.wait_written_through(lost.offered(), Duration::from_millis(50));
    }
    keeper.at_stop(&mut deciding, &lost, Duration::from_millis(50));
    assert_eq!(mark(), Some(0));
    drop(deciding);
    lost.close(Duration::from_secs(1));
    // A stream that writes them: the mark moves at the window after they are written.
    let (mut deciding, events) = open();
    assert_eq!(events.len(), 1, "sent again");
    let file = tmp.path().join("events.ndjson");
    let mut sink = EventSink::open(&file, DEFAULT_QUEUE_BYTES).unwrap();
    for e in &events {
        sink.send(e);
    }
    let mut keeper = MarkKeeper::default();
    keeper.after_queued(&mut deciding, &sink);
    assert_eq!(mark(), Some(0), "queued, not yet known written");
    assert!(sink.wait_written_through(sink.offered(), Duration::from_secs(10)));
    keeper.after_queued(&mut deciding, &sink);
    assert_eq!(mark(), Some(2));
    drop(deciding);
    sink.close(Duration::from_secs(1));
    let (_, events) = open();
    assert_eq!(events.len(), 0, "not sent again");
}

/// An operator's revert made while no agent ran, which took an advisor's value out, is sent at
/// the next start with the quarantine's words, as its `reverted` event gives them through a
/// running agent (s53 storyAL F7: the journal keeps the quarantine, not the words).
#[test]
fn an_offline_revert_is_sent_with_its_quarantine() {
    let tmp = tempfile::tempdir().unwrap();
    let proc_sys = tmp.path().join("proc_sys");
    std::fs::create_dir_all(proc_sys.join("net/core")).unwrap();
    std::fs::write(proc_sys.join("net/core/somaxconn"), "4096\n").unwrap();
    let text = "[params.\"net.core.somaxconn\"]\nmode = \"auto\"\nmin = 128\nmax = 65535\n\
                max_step = \"100%\"\n";
    let path_as = |holder: Holder| path_over(tmp.path(), holder, text);
    drop(Deciding::with_path(path_as(Holder::Agent), false).unwrap());
    let words = {
        let mut p = path_as(Holder::Cli);
        let rules = crate::policy::Proposal {
            address: "net.core.somaxconn".parse().unwrap(),
            value: Value::Int(8192),
            source: Source::Rules,
            reason: "rules".into(),
        };
        let id = p.propose(&rules).unwrap().journal_id.unwrap();
        let r = p.revert(id, Source::Operator, "kpo revert").unwrap();
        r.detail.unwrap()
    };
    assert!(words.starts_with("8192 is quarantined until "), "{words}");
    let (_, events) = Deciding::with_path(path_as(Holder::Agent), false).unwrap();
    let reverted: Vec<String> = (events.iter())
        .filter_map(|e| match e {
            Event::Change(c) if c.phase == ChangePhase::Reverted => c.detail.clone(),
            _ => None,
        })
        .collect();
    assert_eq!(reverted.len(), 1, "{reverted:?}");
    assert!(
        reverted[0].ends_with(&format!("): {words}")),
        "{reverted:?}"
    );
}
