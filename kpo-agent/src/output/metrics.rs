//! Prometheus metrics (`kpo run --metrics ADDR`): every event the agent emits is also counted
//! here, and each window's figures become gauges, served at `GET /metrics` in the OpenMetrics text
//! format (docs/metrics.md). The event stream stays the record; the metrics are its summary for
//! dashboards and alerts, and they keep counting when the event stream's reader stalls.
use std::{
    collections::{BTreeMap, HashMap},
    net::SocketAddr,
    sync::{atomic::AtomicU64, Arc, Mutex},
};

use http_body_util::Full;
use hyper::{body::Bytes, Method, Request, Response, StatusCode};
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};
use tracing::{debug, info};

use super::events::Event;
use crate::window::Window;

type FloatGauge = Gauge<f64, AtomicU64>;
type FloatCounter = Counter<f64, AtomicU64>;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ListenerLabels {
    netns: String,
    port: String,
    family: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ServiceLatencyLabels {
    netns: String,
    port: String,
    family: String,
    quantile: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct QuantileLabels {
    quantile: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SourceLabels {
    source: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ChangeLabels {
    source: String,
    phase: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LlmLabels {
    outcome: String,
    breaker: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VerdictLabels {
    verdict: String,
}

/// The event stream's schema, whose enums name the label values of the counters of events.
const EVENT_SCHEMA: &str = include_str!("../../../docs/events.schema.json");

/// Windows after which a listener no longer listed loses its `kpo_listener_overflows_total`
/// series (long enough for a scrape or several to see its last increase).
pub const FORGET_LISTENER_AFTER_WINDOWS: u64 = 60;

/// The registry and every metric in it.
pub struct Metrics {
    registry: Registry,
    windows: Counter,
    last_window_end: FloatGauge,
    events: Family<KindLabels, Counter>,
    /// `kpo_host_<field>`, registered as fields first appear (the window's `system` object).
    host: BTreeMap<String, FloatGauge>,
    listener_backlog: Family<ListenerLabels, Gauge>,
    listener_backlog_max: Family<ListenerLabels, Gauge>,
    listener_backlog_limit: Family<ListenerLabels, Gauge>,
    listener_overflows: Family<ListenerLabels, Counter>,
    /// The window (`kpo_windows_total`) in which each listener with an overflow series was last
    /// listed: a series is removed [`FORGET_LISTENER_AFTER_WINDOWS`] windows after that.
    listener_overflows_seen: HashMap<ListenerLabels, u64>,
    listener_full_lost: Counter,
    request_latency: Family<ServiceLatencyLabels, FloatGauge>,
    request_latency_samples: Family<ListenerLabels, Gauge>,
    runq_latency: Family<QuantileLabels, FloatGauge>,
    runq_latency_samples: Gauge,
    request_latency_untimed_ports: Gauge,
    energy: Family<SourceLabels, FloatCounter>,
    power: Family<SourceLabels, FloatGauge>,
    changes: Family<ChangeLabels, Counter>,
    guard: Family<VerdictLabels, Counter>,
    llm: Family<LlmLabels, Counter>,
    /// 1 while changes are paused: a restart under a pause emits no `paused` event, and
    /// `kpo_events_total{kind="paused"}` starts again from 0.
    paused: Gauge,
    /// Approvals pending, and values quarantined, at the last window's end: an alert on them
    /// needs no event stream, and holds across a restart, which the event counters do not (s59
    /// story BO-6).
    approvals_pending: Gauge,
    quarantines: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("kpo");
        let m = Metrics {
            windows: Counter::default(),
            last_window_end: FloatGauge::default(),
            events: Family::default(),
            host: BTreeMap::new(),
            listener_backlog: Family::default(),
            listener_backlog_max: Family::default(),
            listener_backlog_limit: Family::default(),
            listener_overflows: Family::default(),
            listener_overflows_seen: HashMap::new(),
            listener_full_lost: Counter::default(),
            request_latency: Family::default(),
            request_latency_samples: Family::default(),
            runq_latency: Family::default(),
            runq_latency_samples: Gauge::default(),
            request_latency_untimed_ports: Gauge::default(),
            energy: Family::default(),
            power: Family::default(),
            changes: Family::default(),
            guard: Family::default(),
            llm: Family::default(),
            paused: Gauge::default(),
            approvals_pending: Gauge::default(),
            quarantines: Gauge::default(),
            registry: Registry::default(),
        };
        registry.register("windows", "Windows closed", m.windows.clone());
        registry.register(
            "last_window_end_seconds",
            "When the last window ended, in seconds since the Unix epoch (NaN before the first)",
            m.last_window_end.clone(),
        );
        m.last_window_end.set(f64::NAN);
        registry.register(
            "events",
            "Events emitted, by kind (counted even when the event stream drops them)",
            m.events.clone(),
        );
        registry.register(
            "listener_backlog",
            "A listener's accept queue at the end of the last window",
            m.listener_backlog.clone(),
        );
        registry.register(
            "listener_backlog_max",
            "A listener's largest accept queue seen in the last window",
            m.listener_backlog_max.clone(),
        );
        registry.register(
            "listener_backlog_limit",
            "A listener's accept-queue limit",
            m.listener_backlog_limit.clone(),
        );
        registry.register(
            "listener_overflows",
            "Packets a listener dropped (SYNs or handshake ACKs), whatever the cause (its sk_drops: full accept or SYN queue, no memory)",
            m.listener_overflows.clone(),
        );
        registry.register(
            "listener_full_lost",
            "listener_full events the accept-queue sensor could not send because its ring buffer was full",
            m.listener_full_lost.clone(),
        );
        registry.register(
            "request_latency_microseconds",
            "A service's request latency quantile in the last window",
            m.request_latency.clone(),
        );
        // A quantile of five requests alerts like one of ten thousand without its count
        // (s48 storyQ Q-6): an alert can ask for enough samples beside it.
        registry.register(
            "request_latency_samples",
            "Requests a service's latency quantiles in the last window were measured over",
            m.request_latency_samples.clone(),
        );
        registry.register(
            "request_latency_untimed_ports",
            "Listening ports the request-latency sensor had no place for at the last window's end (it times 128; 0 when the sensor is off)",
            m.request_latency_untimed_ports.clone(),
        );
        registry.register(
            "runq_latency_samples",
            "Switch-ins (after a wake-up, a preemption or a yield) the run-queue latency quantiles in the last window were measured over (0 when not measured)",
            m.runq_latency_samples.clone(),
        );
        registry.register(
            "runq_latency_microseconds",
            "Run-queue latency quantile in the last window (NaN when not measured)",
            m.runq_latency.clone(),
        );
        registry.register(
            "energy_joules",
            "Energy over the windows, by source (rapl, perf_power, estimated)",
            m.energy.clone(),
        );
        registry.register(
            "power_watts",
            "Mean power over the last window, by source",
            m.power.clone(),
        );
        registry.register(
            "changes",
            "Phases of parameter changes, by source and phase",
            m.changes.clone(),
        );
        registry.register(
            "guard_verdicts",
            "The guard's verdicts: kept, revert, or cleared (a revert whose change was not the cause)",
            m.guard.clone(),
        );
        registry.register(
            "paused",
            "1 while changes are paused (kpo pause), 0 otherwise",
            m.paused.clone(),
        );
        registry.register(
            "approvals_pending",
            "Approvals pending (kpo pending) at the last window's end",
            m.approvals_pending.clone(),
        );
        registry.register(
            "quarantines",
            "Values quarantined (kpo status) at the last window's end, over every parameter",
            m.quarantines.clone(),
        );
        registry.register(
            "llm_consultations",
            "LLM advisor consultations (the llm events) by outcome and the breaker's state after it",
            m.llm.clone(),
        );
        m.born_at_zero();
        Metrics { registry, ..m }
    }

    /// Every series of a counter whose labels the event schema lists, created at 0 at the start:
    /// Prometheus takes a series' first sample as its base, so one born at its first count would
    /// hide that count from `increase()` and `rate()`, and an alert on the first refused change,
    /// guard revert or failing consultation would never fire (s48 storyQ Q-7).
    fn born_at_zero(&self) {
        let schema: serde_json::Value = serde_json::from_str(EVENT_SCHEMA).unwrap_or_default();
        let words = |kind: Option<&str>, field: &str| -> Vec<String> {
            let properties = match kind {
                None => Some(&schema["properties"]),
                Some(kind) => schema["oneOf"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find(|k| k["properties"]["kind"]["const"] == kind)
                    .map(|k| &k["properties"]),
            };
            properties
                .and_then(|p| p[field]["enum"].as_array())
                .into_iter()
                .flatten()
                .filter_map(|w| w.as_str().map(str::to_string))
                .collect()
        };
        for kind in words(None, "kind") {
            self.events.get_or_create(&KindLabels { kind }).inc_by(0);
        }
        for source in words(Some("change"), "source") {
            for phase in words(Some("change"), "phase") {
                let (source, phase) = (source.clone(), phase);
                self.changes
                    .get_or_create(&ChangeLabels { source, phase })
                    .inc_by(0);
            }
        }
        for verdict in words(Some("guard"), "verdict") {
            self.guard
                .get_or_create(&VerdictLabels { verdict })
                .inc_by(0);
        }
        for outcome in words(Some("llm"), "outcome") {
            for breaker in words(Some("llm"), "breaker") {
                let outcome = outcome.clone();
                self.llm
                    .get_or_create(&LlmLabels { outcome, breaker })
                    .inc_by(0);
            }
        }
    }

    /// The event stream's count of lost events (its queue's drops and failed writes), kept by the
    /// sink, which alone sees them.
    pub fn register_events_dropped(&mut self, dropped: Counter) {
        self.registry.register(
            "events_dropped",
            "Events the event stream lost: dropped at its full queue, or a write that failed (the lines' dropped_events)",
            dropped,
        );
    }

    /// What became of the approval webhook's notifications (approvals, and advice for
    /// applications, counted together), counted by its delivery task, which alone sees them
    /// (they are in no event).
    pub fn register_approval_webhook(&mut self, outcomes: &crate::approvals::webhook::Outcomes) {
        use crate::approvals::webhook::{ATTEMPTS, QUEUE};
        self.registry.register(
            "approval_webhook_notifications",
            format!(
                "Approval webhook notifications (approvals, and advice: for applications, the LLM's suggestions, and the rules' word that the policy leaves them no step) by what became of them: delivered (2xx), queue_full (dropped unsent, the oldest of more than {QUEUE} waiting), replaced (dropped unsent for a later one about the same approval or advice), given_up (failed {ATTEMPTS} tries), refused (a 4xx, not retried), abandoned (dropped unsent, or not known delivered, when a reload removed or replaced the URL or the agent stopped)"
            ),
            outcomes.family(),
        );
    }

    /// What the deciding half holds at a window's end ([`crate::run::deciding::Deciding::held`]).
    pub fn set_held(&mut self, approvals_pending: usize, quarantines: usize) {
        let count = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
        self.approvals_pending.set(count(approvals_pending));
        self.quarantines.set(count(quarantines));
    }

    /// Counts one event; a window also sets the gauges.
    pub fn observe(&mut self, event: &Event) {
        let json = serde_json::to_value(event).unwrap_or_default();
        let kind = json["kind"].as_str().unwrap_or("unknown").to_string();
        self.events.get_or_create(&KindLabels { kind }).inc();
        match event {
            Event::Window { window, .. } => self.window(window, &json),
            Event::Change(c) => {
                let labels = ChangeLabels {
                    source: c.source.to_string(),
                    phase: json["phase"].as_str().unwrap_or("unknown").to_string(),
                };
                self.changes.get_or_create(&labels).inc();
            }
            // Whether changes are paused: `start` says so of a pause the agent starts under.
            Event::Start { paused, .. } => {
                self.paused.set(i64::from(paused.is_some()));
            }
            Event::Paused(_) => {
                self.paused.set(1);
            }
            Event::Resumed(r) if r.param.is_none() => {
                self.paused.set(0);
            }
            Event::Guard(_) => {
                let verdict = json["verdict"].as_str().unwrap_or("unknown").to_string();
                self.guard.get_or_create(&VerdictLabels { verdict }).inc();
            }
            // A model that answers prose every time (`parse_error`, which does not open the
            // breaker) is asked at every consultation: only a count by outcome can alert on it.
            Event::Llm(_) => {
                let labels = LlmLabels {
                    outcome: json["outcome"].as_str().unwrap_or("unknown").to_string(),
                    breaker: json["breaker"].as_str().unwrap_or("unknown").to_string(),
                };
                self.llm.get_or_create(&labels).inc();
            }
            _ => {}
        }
    }

    fn window(&mut self, w: &Window, json: &serde_json::Value) {
        self.windows.inc();
        let end =
            time::OffsetDateTime::parse(&w.end, &time::format_description::well_known::Rfc3339)
                .map_or(f64::NAN, |t| t.unix_timestamp_nanos() as f64 / 1e9);
        self.last_window_end.set(end);
        // Gauges describe the last window: a listener or service absent from it is gone.
        for family in [
            &self.listener_backlog,
            &self.listener_backlog_max,
            &self.listener_backlog_limit,
        ] {
            family.clear();
        }
        self.request_latency.clear();
        self.request_latency_samples.clear();
        self.listener_full_lost
            .inc_by(w.listener_full_lost.unwrap_or(0));
        for l in &w.listeners {
            let labels = ListenerLabels {
                netns: l.netns.to_string(),
                port: l.port.to_string(),
                family: l.family.to_string(),
            };
            self.listener_backlog
                .get_or_create(&labels)
                .set(l.backlog_now.into());
            self.listener_backlog_max
                .get_or_create(&labels)
                .set(l.backlog_max.into());
            self.listener_backlog_limit
                .get_or_create(&labels)
                .set(l.backlog_limit.into());
            // Every listener listed gets its series, at 0 when it dropped nothing yet: one born
            // at its first drops would hide them from `increase()` (s48 storyQ Q-7). Only the
            // drops of the window a listener is first listed in are its base so, unseen by rates.
            self.listener_overflows
                .get_or_create(&labels)
                .inc_by(l.overflows.unwrap_or(0));
            self.listener_overflows_seen
                .insert(labels, self.windows.get());
        }
        // A listener gone for a while loses its series, so that a node's churn of pods and
        // ports does not grow the exposition (and Prometheus) for the agent's life, and a
        // namespace inode used again later starts from 0 instead of continuing the dead one's.
        let now = self.windows.get();
        let family = &self.listener_overflows;
        self.listener_overflows_seen.retain(|labels, seen| {
            let keep = now - *seen < FORGET_LISTENER_AFTER_WINDOWS;
            if !keep {
                family.remove(labels);
            }
            keep
        });
        let quantiles = |s: &crate::window::hist::LatencySummary| {
            [("0.5", s.p50_us), ("0.9", s.p90_us), ("0.99", s.p99_us)]
        };
        for r in &w.request_latency {
            for (q, v) in quantiles(&r.latency) {
                let labels = ServiceLatencyLabels {
                    netns: r.netns.to_string(),
                    port: r.port.to_string(),
                    family: r.family.to_string(),
                    quantile: q.to_string(),
                };
                self.request_latency.get_or_create(&labels).set(v);
            }
            let service = ListenerLabels {
                netns: r.netns.to_string(),
                port: r.port.to_string(),
                family: r.family.to_string(),
            };
            self.request_latency_samples
                .get_or_create(&service)
                .set(i64::try_from(r.latency.samples).unwrap_or(i64::MAX));
        }
        self.request_latency_untimed_ports
            .set(i64::from(w.request_latency_untimed_ports.unwrap_or(0)));
        self.runq_latency_samples.set(
            w.runq_latency
                .as_ref()
                .map_or(0, |s| i64::try_from(s.samples).unwrap_or(i64::MAX)),
        );
        let runq = w.runq_latency.as_ref().map_or(
            [("0.5", f64::NAN), ("0.9", f64::NAN), ("0.99", f64::NAN)],
            quantiles,
        );
        for (q, v) in runq {
            let labels = QuantileLabels {
                quantile: q.to_string(),
            };
            self.runq_latency.get_or_create(&labels).set(v);
        }
        // Only the window's source has a power series: one set aside (an `energy_source`
        // handover) has no last window any more, and with none left at all there is none (s60
        // story BT-2, review2 R2-5: the one set aside kept its NaN beside the new figure).
        let current = w.energy.as_ref().map(|e| e.source);
        for source in crate::energy::EnergySource::ALL {
            if Some(source) != current {
                self.power.remove(&SourceLabels {
                    source: source.as_str().to_string(),
                });
            }
        }
        if let Some(e) = &w.energy {
            let labels = SourceLabels {
                source: e.source.as_str().to_string(),
            };
            if let Some(j) = e.joules {
                self.energy.get_or_create(&labels).inc_by(j);
            }
            self.power
                .get_or_create(&labels)
                .set(e.watts.unwrap_or(f64::NAN));
        }
        // Every number of the window's `system` object (docs/host-metrics.md), by its own name,
        // registered when it is first a number; a field measured before and not in this window
        // (null) is NaN. Objects (per-softirq rates) are not numbers and stay out.
        if let Some(system) = json["system"].as_object() {
            for (field, value) in system {
                let gauge = match (self.host.get(field), value.as_f64()) {
                    (Some(g), _) => g.clone(),
                    (None, Some(_)) => {
                        let g = FloatGauge::default();
                        self.registry.register(
                            format!("host_{}", metric_name(field)),
                            format!("{field} of the last window (docs/host-metrics.md)"),
                            g.clone(),
                        );
                        self.host.insert(field.clone(), g.clone());
                        g
                    }
                    (None, None) => continue,
                };
                gauge.set(value.as_f64().unwrap_or(f64::NAN));
            }
        }
    }

    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}

/// A field name as a metric name: anything but `[a-zA-Z0-9_]` becomes `_`, so that a renamed
/// field can never make the whole exposition unparseable. A `_total` suffix is dropped
/// (`tasks_total` → `kpo_host_tasks`): these are gauges, and Prometheus keeps that suffix for
/// counters (`promtool check metrics` flags a gauge that carries it).
fn metric_name(field: &str) -> String {
    field
        .strip_suffix("_total")
        .unwrap_or(field)
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Scrapes served at once; more wait in the kernel's accept queue.
const MAX_CONNECTIONS: usize = 8;
/// A connection that has not sent its request by then is closed (slow or idle clients must not
/// hold the agent's descriptors).
const REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);
/// A whole connection, response included.
const CONNECTION_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Serves `GET /metrics` on `listener` until dropped; anything else is 404, a method other than
/// GET 405.
/// Who holds `addr`'s port when the bind found it in use, and what keeps another user from it
/// (s58 story BJ-3: any user could stop the agent's start by listening on its metrics port
/// first, and the error did not say who).
fn held_by(addr: SocketAddr, e: &std::io::Error) -> String {
    if e.kind() != std::io::ErrorKind::AddrInUse {
        return String::new();
    }
    let listeners = crate::collect::sockdiag::open_socket().and_then(|mut s| s.dump_listeners());
    let owners: Vec<u32> = (listeners.iter().flatten())
        .filter(|l| l.port == addr.port())
        .map(|l| l.uid)
        .collect();
    match owners.iter().find(|uid| **uid != 0) {
        Some(uid) => format!(
            " (held by {}, not root); a port below net.ipv4.ip_unprivileged_port_start (1024 by \
             default) cannot be taken by another user first",
            crate::endpoint_owner::user_named(*uid)
        ),
        None if owners.is_empty() => String::new(),
        None => " (held by root: another agent, or another service of root's)".into(),
    }
}

pub async fn serve(listener: tokio::net::TcpListener, metrics: Arc<Mutex<Metrics>>) {
    if let Ok(addr) = listener.local_addr() {
        info!("metrics: serving http://{addr}/metrics");
    }
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        // A slot first: past the limit, connections wait in the listen backlog, not in memory.
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let (stream, peer) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                debug!("metrics: accept: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                let metrics = metrics.clone();
                async move { Ok::<_, std::convert::Infallible>(answer(&req, &metrics)) }
            });
            let io = hyper_util::rt::TokioIo::new(stream);
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(REQUEST_TIMEOUT)
                .keep_alive(false)
                .serve_connection(io, service);
            match tokio::time::timeout(CONNECTION_TIMEOUT, connection).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => debug!("metrics: connection from {peer}: {e}"),
                Err(_) => {
                    debug!("metrics: connection from {peer}: closed after {CONNECTION_TIMEOUT:?}")
                }
            }
        });
    }
}

fn answer(req: &Request<hyper::body::Incoming>, metrics: &Mutex<Metrics>) -> Response<Full<Bytes>> {
    let reply = |status: StatusCode, content_type: &str, body: String| {
        Response::builder()
            .status(status)
            .header(hyper::header::CONTENT_TYPE, content_type)
            .body(Full::new(Bytes::from(body)))
            .expect("a valid response")
    };
    if req.uri().path() != "/metrics" {
        return reply(
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found: the metrics are at /metrics\n".into(),
        );
    }
    if req.method() != Method::GET {
        let mut r = reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "only GET\n".into(),
        );
        r.headers_mut().insert(
            hyper::header::ALLOW,
            hyper::header::HeaderValue::from_static("GET"),
        );
        return r;
    }
    let body = metrics
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .encode();
    reply(StatusCode::OK, CONTENT_TYPE, body)
}

/// How long dropping a [`MetricsServer`] waits for its thread to end; past that it is left to
/// end with the process.
pub const STOP_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);

/// What stopped the metrics thread before it served.
enum ThreadStart {
    Runtime(std::io::Error),
    Listen(std::io::Error),
}

/// The metrics and the thread that serves them, until dropped.
///
/// The thread has its own runtime: the run loop's runs its stages synchronously on its one
/// thread, so a stage that takes long or hangs in the kernel (a write, an fsync) would leave
/// scrapes unanswered, and the liveness gauge (`kpo_last_window_end_seconds`) with no value at
/// all, exactly when it should show its age growing. The two sides share only the `Metrics`
/// lock: the loop takes it to count an event, a scrape to encode the exposition in memory (its
/// answer is written after the lock is let go, and 8 scrapes at most are served at once), so
/// the loop waits at most for an encoding or a few, never for a client or the network.
pub struct MetricsServer {
    metrics: Arc<Mutex<Metrics>>,
    addr: SocketAddr,
    /// Dropped to stop serving.
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl MetricsServer {
    /// Binds the metrics address (an error names it) and starts serving from a thread of its
    /// own.
    pub fn start(addr: SocketAddr) -> anyhow::Result<MetricsServer> {
        let metrics = Arc::new(Mutex::new(Metrics::new()));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (ready_tx, ready) = std::sync::mpsc::channel();
        let served = metrics.clone();
        let thread = std::thread::Builder::new()
            .name("kpo-metrics".into())
            .spawn(move || {
                // Built here, not on the loop's thread: a spawn that fails drops its closure
                // where it was called, and a runtime dropped inside the loop's runtime panics.
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime,
                    Err(e) => {
                        let _ = ready_tx.send(Err(ThreadStart::Runtime(e)));
                        return;
                    }
                };
                runtime.block_on(async move {
                    let listener = match tokio::net::TcpListener::bind(addr).await {
                        Ok(listener) => listener,
                        Err(e) => {
                            let _ = ready_tx.send(Err(ThreadStart::Listen(e)));
                            return;
                        }
                    };
                    let _ = ready_tx.send(listener.local_addr().map_err(ThreadStart::Listen));
                    tokio::select! {
                        () = serve(listener, served) => {}
                        _ = stopped => {}
                    }
                });
                // The runtime dropped here ends the connections still open.
            })
            .map_err(|e| anyhow::anyhow!("metrics: cannot start their thread: {e}"))?;
        let bound = ready.recv().unwrap_or_else(|_| {
            Err(ThreadStart::Listen(std::io::Error::other(
                "the metrics thread ended before listening",
            )))
        });
        let addr = match bound {
            Ok(bound) => bound,
            Err(e) => {
                let _ = thread.join();
                return Err(match e {
                    ThreadStart::Runtime(e) => {
                        anyhow::anyhow!("metrics: cannot start their runtime: {e}")
                    }
                    ThreadStart::Listen(e) => {
                        anyhow::anyhow!(
                            "metrics address {addr}: cannot listen: {e}{}",
                            held_by(addr, &e)
                        )
                    }
                });
            }
        };
        Ok(MetricsServer {
            metrics,
            addr,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// The metrics served, for the event sink and the webhook to count into.
    pub fn metrics(&self) -> Arc<Mutex<Metrics>> {
        self.metrics.clone()
    }

    /// The address listened on (the port chosen, for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops serving: the listener is closed, connections still open are ended. Waits at most
    /// `timeout` for the thread to end (a thread that does not is left to end with the process);
    /// whether it did.
    fn stop_within(&mut self, timeout: std::time::Duration) -> bool {
        drop(self.stop.take());
        let Some(thread) = self.thread.take() else {
            return true;
        };
        let deadline = std::time::Instant::now() + timeout;
        while !thread.is_finished() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        let ended = thread.is_finished();
        if ended {
            let _ = thread.join();
        }
        ended
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.stop_within(STOP_TIMEOUT);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        advise::rules::testing::{listener, window},
        energy::EnergySource,
        window::{energy::WindowEnergy, hist::LatencySummary, RequestLatencyWindow},
    };

    fn lines(m: &Metrics) -> Vec<String> {
        m.encode().lines().map(str::to_string).collect()
    }

    /// The deciding half's holdings at a window's end, as gauges (s59 story BO-6).
    #[test]
    fn approvals_pending_and_quarantines_are_gauges() {
        let mut m = Metrics::new();
        has(&m, "kpo_approvals_pending 0");
        has(&m, "kpo_quarantines 0");
        m.set_held(2, 3);
        has(&m, "kpo_approvals_pending 2");
        has(&m, "kpo_quarantines 3");
        has(&m, "# TYPE kpo_approvals_pending gauge");
    }

    /// `kpo_paused` follows the pause: set by a `start` under one (no `paused` event is sent
    /// again after a restart: s52 storyAC AC-6), by `paused`, and lifted only by a `resumed`
    /// without `param` (a parameter handed back leaves the pause).
    #[test]
    fn the_paused_gauge_follows_the_pause_a_restart_included() {
        use crate::output::change_events::{PausedEvent, ResumedEvent};
        let start = |paused: Option<&str>| Event::Start {
            version: "0.1.0",
            commit: "test",
            pid: 1,
            tick_s: 1.0,
            window_s: 10.0,
            duty_fraction: 1.0,
            energy: crate::window::energy::EnergySourceChoice {
                source: None,
                domains: Vec::new(),
                skipped: Vec::new(),
                error: Some("none".into()),
            },
            policy: "built-in".into(),
            recommend_only: false,
            paused: paused.map(str::to_string),
        };
        let resumed = |param: Option<&str>| {
            Event::Resumed(ResumedEvent {
                param: param.map(str::to_string),
                keys: Vec::new(),
                by: "operator".into(),
            })
        };
        let mut m = Metrics::new();
        has(&m, "kpo_paused 0");
        m.observe(&start(Some(
            "operator (uid 0, pid 7) at 2026-12-06T18:59:18.879Z",
        )));
        has(&m, "kpo_paused 1");
        m.observe(&resumed(Some("net.core.somaxconn")));
        has(&m, "kpo_paused 1");
        m.observe(&resumed(None));
        has(&m, "kpo_paused 0");
        m.observe(&Event::Paused(PausedEvent {
            by: "operator".into(),
        }));
        has(&m, "kpo_paused 1");
        let mut m = Metrics::new();
        m.observe(&start(None));
        has(&m, "kpo_paused 0");
    }

    fn has(m: &Metrics, line: &str) {
        let all = lines(m);
        assert!(
            all.iter().any(|l| l == line),
            "no {line:?} in\n{}",
            all.join("\n")
        );
    }

    fn latency(p50: f64, p90: f64, p99: f64) -> LatencySummary {
        LatencySummary {
            samples: 100,
            p50_us: p50,
            p90_us: p90,
            p99_us: p99,
            max_us: p99,
        }
    }

    /// A listener's overflow series stays while the listener is listed, and goes
    /// FORGET_LISTENER_AFTER_WINDOWS windows after it was last listed.
    #[test]
    fn a_gone_listener_loses_its_overflow_series() {
        let mut m = Metrics::new();
        let observe = |m: &mut Metrics, w: Window| {
            m.observe(&Event::Window {
                partial: false,
                window: Box::new(w),
            })
        };
        let mut staying = listener(7, 128, 0, 3);
        staying.port = 9090;
        observe(
            &mut m,
            window(vec![listener(7, 128, 0, 5), staying.clone()]),
        );
        let gone = r#"kpo_listener_overflows_total{netns="7",port="8080",family="ipv4"} 5"#;
        let kept = r#"kpo_listener_overflows_total{netns="7",port="9090",family="ipv4"} 3"#;
        has(&m, gone);
        staying.overflows = Some(0);
        for _ in 1..FORGET_LISTENER_AFTER_WINDOWS {
            observe(&mut m, window(vec![staying.clone()]));
        }
        has(&m, gone);
        observe(&mut m, window(vec![staying.clone()]));
        assert!(!m.encode().contains(r#"port="8080""#), "{}", m.encode());
        has(&m, kept);
        // Listed again later: a new series, from its new drops only.
        observe(
            &mut m,
            window(vec![listener(7, 128, 0, 2), staying.clone()]),
        );
        has(
            &m,
            r#"kpo_listener_overflows_total{netns="7",port="8080",family="ipv4"} 2"#,
        );
    }

    /// Every family the agent exposes is in docs/metrics.md's table under the name a scrape
    /// shows (a counter's with `_total`); `kpo_host_<field>` is documented as one row.
    #[test]
    fn every_metric_is_documented() {
        const DOC: &str = include_str!("../../../docs/metrics.md");
        let mut m = Metrics::new();
        let mut w = window(vec![listener(7, 128, 120, 10)]);
        w.request_latency = vec![RequestLatencyWindow {
            netns: 7,
            port: 8080,
            family: "ipv4",
            latency: latency(100.0, 400.0, 900.0),
        }];
        w.runq_latency = Some(latency(5.0, 8.0, 40.0));
        w.energy = Some(WindowEnergy {
            source: EnergySource::Rapl,
            domains: vec!["package-0".into()],
            joules: Some(1.0),
            watts: Some(1.0),
            joules_per_request: None,
            error: None,
        });
        m.observe(&Event::Window {
            partial: false,
            window: Box::new(w),
        });
        let text = m.encode();
        let families: Vec<String> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .map(|l| match l.split_once(' ') {
                Some((name, "counter")) => format!("{name}_total"),
                Some((name, _)) => name.to_string(),
                None => l.to_string(),
            })
            .filter(|name| !name.starts_with("kpo_host_"))
            .collect();
        assert_eq!(families.len(), 21, "{text}");
        for name in &families {
            assert!(
                DOC.contains(&format!("| `{name}` |")),
                "{name} is exposed but not in docs/metrics.md"
            );
        }
    }

    /// s48 storyQ Q-7: a counter's series was born at its first count, which Prometheus takes
    /// for its base: `increase()` never saw a listener's first drops, the first refused change,
    /// guard revert, failing consultation or energy_source event. The schema's label values are
    /// there at 0 from the start, and a listener's series from the first window that lists it.
    #[test]
    fn counters_are_born_at_zero() {
        let mut m = Metrics::new();
        for series in [
            r#"kpo_events_total{kind="energy_source"} 0"#,
            r#"kpo_events_total{kind="listener_full"} 0"#,
            r#"kpo_changes_total{source="operator",phase="refused"} 0"#,
            r#"kpo_changes_total{source="guard",phase="reverted"} 0"#,
            r#"kpo_guard_verdicts_total{verdict="revert"} 0"#,
            r#"kpo_llm_consultations_total{outcome="parse_error",breaker="closed"} 0"#,
        ] {
            has(&m, series);
        }
        let l = r#"{netns="7",port="8080",family="ipv4"}"#;
        m.observe(&Event::Window {
            partial: false,
            window: Box::new(window(vec![listener(7, 128, 3, 0)])),
        });
        has(&m, &format!("kpo_listener_overflows_total{l} 0"));
        m.observe(&Event::Window {
            partial: false,
            window: Box::new(window(vec![listener(7, 128, 128, 9)])),
        });
        has(&m, &format!("kpo_listener_overflows_total{l} 9"));
    }

    #[test]
    fn windows_become_gauges_and_counters() {
        let mut m = Metrics::new();
        let mut busy = listener(7, 128, 120, 10);
        busy.backlog_now = 33;
        let mut w = window(vec![busy, listener(7, 64, 0, 0)]);
        w.listeners[1].port = 9090;
        w.request_latency = vec![RequestLatencyWindow {
            netns: 7,
            port: 8080,
            family: "ipv4",
            latency: LatencySummary {
                samples: 439,
                ..latency(100.0, 400.0, 900.0)
            },
        }];
        w.runq_latency = Some(latency(5.0, 8.0, 40.0));
        w.energy = Some(WindowEnergy {
            source: EnergySource::Rapl,
            domains: vec!["package-0".into()],
            joules: Some(120.5),
            watts: Some(2.0),
            joules_per_request: None,
            error: None,
        });
        w.system.load1 = Some(0.75);
        w.system.tasks_total = Some(412);
        w.listener_full_lost = Some(5);
        let event = |w: &Window| Event::Window {
            partial: false,
            window: Box::new(w.clone()),
        };
        m.observe(&event(&w));
        // The second window: the listener dropped 4 more; the service and the listener on 9090
        // are gone.
        let mut second = window(vec![listener(7, 128, 64, 4)]);
        second.energy = w.energy.clone();
        second.listener_full_lost = Some(2);
        second.request_latency_untimed_ports = Some(3);
        m.observe(&event(&second));
        has(&m, "kpo_request_latency_untimed_ports 3");
        let l = r#"{netns="7",port="8080",family="ipv4"}"#;
        has(&m, "kpo_windows_total 2");
        has(&m, "kpo_listener_full_lost_total 7");
        // 2026-12-01T03:01:00Z, the test windows' end.
        has(&m, "kpo_last_window_end_seconds 1796094060.0");
        let gone = r#"{netns="7",port="9090",family="ipv4"}"#;
        assert!(
            !m.encode().contains(&format!("kpo_listener_backlog{gone}")),
            "a listener absent from the last window has no gauges"
        );
        // Its counter stays, for FORGET_LISTENER_AFTER_WINDOWS windows.
        has(&m, &format!("kpo_listener_overflows_total{gone} 0"));
        has(&m, r#"kpo_events_total{kind="window"} 2"#);
        has(&m, &format!("kpo_listener_overflows_total{l} 14"));
        has(&m, &format!("kpo_listener_backlog_max{l} 64"));
        has(&m, &format!("kpo_listener_backlog_limit{l} 128"));
        has(&m, &format!("kpo_listener_backlog{l} 0"));
        for family in [
            "kpo_request_latency_microseconds{",
            "kpo_request_latency_samples{",
        ] {
            assert!(
                !m.encode().contains(family),
                "a service absent from the last window is gone: {family}"
            );
        }
        has(&m, "kpo_runq_latency_samples 0");
        has(&m, r#"kpo_runq_latency_microseconds{quantile="0.99"} NaN"#);
        has(&m, r#"kpo_energy_joules_total{source="rapl"} 241.0"#);
        has(&m, r#"kpo_power_watts{source="rapl"} 2.0"#);
        // A handover to another source: the one set aside has no power series left, its
        // energy counter stays (s60 story BT-2: its NaN stayed beside the new figure).
        let mut handed = window(vec![]);
        handed.energy = w.energy.clone().map(|e| WindowEnergy {
            source: EnergySource::Estimated,
            joules: Some(1.5),
            watts: Some(3.0),
            ..e
        });
        let mut after = Metrics::new();
        after.observe(&event(&second));
        after.observe(&event(&handed));
        has(&after, r#"kpo_power_watts{source="estimated"} 3.0"#);
        assert!(
            !after.encode().contains(r#"kpo_power_watts{source="rapl"}"#),
            "{}",
            after.encode()
        );
        has(&after, r#"kpo_energy_joules_total{source="rapl"} 120.5"#);
        // No source left at all: no power series either.
        let mut none = window(vec![]);
        none.energy = None;
        after.observe(&event(&none));
        assert!(
            !after.encode().contains("kpo_power_watts{"),
            "{}",
            after.encode()
        );
        has(&m, "kpo_host_load1 NaN");
        assert!(
            !m.encode().contains("kpo_host_mem_total_bytes"),
            "a field never measured has no gauge"
        );
        // The first window alone: every value as it was.
        let mut first = Metrics::new();
        first.observe(&event(&w));
        let s = r#"netns="7",port="8080",family="ipv4""#;
        has(
            &first,
            &format!("kpo_request_latency_microseconds{{{s},quantile=\"0.99\"}} 900.0"),
        );
        has(
            &first,
            &format!("kpo_request_latency_microseconds{{{s},quantile=\"0.5\"}} 100.0"),
        );
        has(
            &first,
            r#"kpo_runq_latency_microseconds{quantile="0.99"} 40.0"#,
        );
        has(&first, &format!("kpo_request_latency_samples{{{s}}} 439"));
        has(&first, "kpo_runq_latency_samples 100");
        has(&first, "kpo_host_load1 0.75");
        has(&first, "kpo_host_tasks 412.0");
        has(&first, "# TYPE kpo_host_tasks gauge");
        has(&first, &format!("kpo_listener_backlog{l} 33"));
        let quiet = r#"{netns="7",port="9090",family="ipv4"}"#;
        has(&first, &format!("kpo_listener_backlog_limit{quiet} 64"));
        // A listener that never dropped has its series at 0 (s48 storyQ Q-7).
        has(&first, &format!("kpo_listener_overflows_total{quiet} 0"));
        assert_eq!(lines(&first).last().map(String::as_str), Some("# EOF"));

        // A window without the accept-queue sensor adds nothing; the counter is there from 0.
        let mut off = window(vec![]);
        off.listener_full_lost = None;
        let mut without = Metrics::new();
        without.observe(&event(&off));
        has(&without, "kpo_listener_full_lost_total 0");
    }

    /// Defect: the help said the drops were all of a full accept queue; the value is the
    /// listener's sk_drops, which also counts full SYN queues and lack of memory.
    #[test]
    fn listener_overflows_are_described_as_every_drop() {
        let mut m = Metrics::new();
        m.observe(&Event::Window {
            partial: false,
            window: Box::new(window(vec![listener(7, 128, 120, 10)])),
        });
        let help: Vec<String> = lines(&m)
            .into_iter()
            .filter(|l| l.starts_with("# HELP kpo_listener_overflows "))
            .collect();
        assert_eq!(
            help,
            [
                "# HELP kpo_listener_overflows Packets a listener dropped (SYNs or handshake ACKs), whatever the cause \
              (its sk_drops: full accept or SYN queue, no memory)."
            ]
        );
    }

    #[test]
    fn changes_and_verdicts_are_counted_by_source_phase_and_verdict() {
        let mut m = Metrics::new();
        m.observe(&Event::Guard(crate::guard::GuardEvent::kept(
            crate::guard::Verdict::Kept {
                change_id: 1,
                address: "net.core.somaxconn".into(),
                judged: vec![],
                figures: vec![],
            },
        )));
        m.observe(&Event::Stop {
            reason: "SIGTERM".into(),
            windows: 0,
        });
        has(&m, r#"kpo_guard_verdicts_total{verdict="kept"} 1"#);
        has(&m, r#"kpo_events_total{kind="guard"} 1"#);
        has(&m, r#"kpo_events_total{kind="stop"} 1"#);
        has(&m, "kpo_windows_total 0");
        has(&m, "kpo_last_window_end_seconds NaN");
    }

    /// LLM consultations are counted by outcome and breaker state (seen by hand, qa-story: a
    /// model answering prose is consulted for good, `parse_error` not opening the breaker, and
    /// nothing in the metrics showed it).
    #[test]
    fn llm_consultations_are_counted_by_outcome_and_breaker() {
        use crate::advise::llm::{client::BreakerState, client::Outcome, Consultation};
        let mut m = Metrics::new();
        for (outcome, breaker) in [
            (Outcome::ParseError, BreakerState::Closed),
            (Outcome::ParseError, BreakerState::Closed),
            (Outcome::Ok, BreakerState::Open),
        ] {
            m.observe(&Event::Llm(Box::new(Consultation::ended(outcome, breaker))));
        }
        has(
            &m,
            r#"kpo_llm_consultations_total{outcome="parse_error",breaker="closed"} 2"#,
        );
        has(
            &m,
            r#"kpo_llm_consultations_total{outcome="ok",breaker="open"} 1"#,
        );
        has(&m, r#"kpo_events_total{kind="llm"} 3"#);
    }

    /// The webhook's own counters (not events), every result from 0, under a name and help
    /// that say what they count.
    #[test]
    fn approval_webhook_outcomes_are_exposed_by_result() {
        use crate::approvals::webhook::{Outcome, Outcomes};
        let outcomes = Outcomes::default();
        let mut m = Metrics::new();
        m.register_approval_webhook(&outcomes);
        // Every outcome (the binary's test names them one by one).
        for result in Outcome::ALL.map(Outcome::as_str) {
            has(
                &m,
                &format!("kpo_approval_webhook_notifications_total{{result=\"{result}\"}} 0"),
            );
        }
        outcomes.count(Outcome::QueueFull);
        outcomes.count(Outcome::QueueFull);
        outcomes.count(Outcome::GivenUp);
        has(
            &m,
            r#"kpo_approval_webhook_notifications_total{result="queue_full"} 2"#,
        );
        has(
            &m,
            r#"kpo_approval_webhook_notifications_total{result="given_up"} 1"#,
        );
        has(
            &m,
            r#"kpo_approval_webhook_notifications_total{result="delivered"} 0"#,
        );
        has(&m, "# TYPE kpo_approval_webhook_notifications counter");
        has(
            &m,
            "# HELP kpo_approval_webhook_notifications Approval webhook notifications (approvals, \
             and advice: for applications, the LLM's suggestions, and the rules' word that the policy leaves them \
             no step) by what became of them: delivered (2xx), queue_full \
             (dropped unsent, the oldest of more than 64 waiting), replaced (dropped unsent for \
             a later one about the same approval or advice), given_up (failed 8 tries), refused (a 4xx, not retried), abandoned (dropped \
             unsent, or not known delivered, when a reload removed or replaced the URL or the agent stopped).",
        );
    }

    /// A request over a plain socket, and the whole reply. The read's long timeout only turns a
    /// server that never answers into a failure instead of a test that hangs.
    fn http(addr: SocketAddr, method: &str, path: &str) -> std::io::Result<String> {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(addr)?;
        stream.set_read_timeout(Some(std::time::Duration::from_secs(30)))?;
        write!(
            stream,
            "{method} {path} HTTP/1.1\r\nHost: kpo\r\nConnection: close\r\n\r\n"
        )?;
        let mut reply = String::new();
        stream.read_to_string(&mut reply)?;
        Ok(reply)
    }

    /// Defect: the metrics were served on the run loop's own single-threaded runtime, so a stage
    /// that held the loop's thread (a write stuck in the kernel) left every scrape unanswered:
    /// the target went down and `kpo_last_window_end_seconds`, the gauge to alert on the age of,
    /// had no value at all. Served from their own thread, a scrape while the loop's thread is
    /// held gets the last values; 404, 405 and the stop are as before.
    #[test]
    fn scrapes_are_answered_while_the_loop_is_stuck() {
        let loop_runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        loop_runtime.block_on(async {
            let mut server = MetricsServer::start("127.0.0.1:0".parse().unwrap()).unwrap();
            server.metrics().lock().unwrap().observe(&Event::Window {
                partial: false,
                window: Box::new(window(vec![])),
            });
            let addr = server.local_addr();
            let (held_tx, held) = std::sync::mpsc::channel::<()>();
            let (release, released) = std::sync::mpsc::channel::<()>();
            let scraper = std::thread::spawn(move || {
                held.recv().unwrap();
                let reply = http(addr, "GET", "/metrics");
                let _ = release.send(());
                reply
            });
            // A stage stuck on the loop's thread, in the middle of the loop's runtime, until the
            // scrape is over.
            held_tx.send(()).unwrap();
            released.recv().unwrap();
            let reply = scraper
                .join()
                .unwrap()
                .expect("a scrape while the loop is stuck is answered");
            assert!(reply.starts_with("HTTP/1.1 200 OK\r\n"), "{reply}");
            assert!(
                reply.contains(&format!("content-type: {CONTENT_TYPE}\r\n")),
                "{reply}"
            );
            // 2026-12-01T03:01:00Z, the test window's end.
            assert!(
                reply.contains("\nkpo_last_window_end_seconds 1796094060.0\n"),
                "{reply}"
            );
            let reply = http(addr, "GET", "/").unwrap();
            assert!(reply.starts_with("HTTP/1.1 404 Not Found\r\n"), "{reply}");
            let reply = http(addr, "POST", "/metrics").unwrap();
            assert!(
                reply.starts_with("HTTP/1.1 405 Method Not Allowed\r\n"),
                "{reply}"
            );
            assert!(reply.contains("allow: GET\r\n"), "{reply}");
            assert!(server.stop_within(std::time::Duration::from_secs(60)));
            let refused = std::net::TcpStream::connect(addr).unwrap_err();
            assert_eq!(refused.kind(), std::io::ErrorKind::ConnectionRefused);
        });
    }

    /// An address that cannot be listened on is an error at start that names it.
    #[test]
    fn an_address_in_use_is_an_error_naming_it() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = taken.local_addr().unwrap();
        let e = MetricsServer::start(addr)
            .err()
            .expect("the address is taken");
        assert!(
            e.to_string()
                .starts_with(&format!("metrics address {addr}: cannot listen: ")),
            "{e}"
        );
        // Who holds it, and how to keep others from it (s58 story BJ-3).
        let me = nix::unistd::geteuid().as_raw();
        let by = match me {
            0 => "(held by root: another agent, or another service of root's)".to_string(),
            uid => format!(
                "(held by {}, not root); a port below net.ipv4.ip_unprivileged_port_start (1024 \
                 by default) cannot be taken by another user first",
                crate::endpoint_owner::user_named(uid)
            ),
        };
        assert!(e.to_string().ends_with(&by), "{e}");
    }

    #[test]
    fn field_names_become_valid_metric_names() {
        assert_eq!(metric_name("mem_total_bytes"), "mem_total_bytes");
        assert_eq!(metric_name("a.b-c"), "a_b_c");
    }
}
