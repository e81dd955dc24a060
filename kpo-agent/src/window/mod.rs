//! Samples into windows. A window spans from the last sample of the previous window (its baseline)
//! to its own last sample; counters become differences and rates, peaks are taken over its ticks.
pub mod energy;
pub mod hist;
#[cfg(test)]
mod host_tests;
pub mod per_cpu;
#[cfg(test)]
mod per_cpu_tests;

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use kpo_common::{IrqCounters, ListenerKey, NapiKey, AF_INET6};
use serde::Serialize;

use crate::{
    collect::{
        bpf_maps::BpfSnapshot,
        carry::{CounterReading, ListenerReading},
        procfs::{HostMetrics, PerCpuSums},
        NetnsCounters, NetnsRead, Sample,
    },
    counter,
};
pub use hist::LatencySummary;
pub use per_cpu::{CpuRate, RateRest, SoftirqCpu, SoftirqRest};

const SOFTIRQ_NAMES: [&str; 10] = [
    "HI", "TIMER", "NET_TX", "NET_RX", "BLOCK", "IRQ_POLL", "TASKLET", "SCHED", "HRTIMER", "RCU",
];

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ListenerWindow {
    pub netns: u64,
    pub port: u16,
    pub family: &'static str,
    pub addresses: Vec<String>,
    /// Accept-queue limit: min(backlog given to listen(), net.core.somaxconn) at listen() time.
    pub backlog_limit: u32,
    /// Largest accept-queue depth seen in the window (eBPF peaks at each enqueue, and the depth
    /// sock_diag reported at each tick).
    pub backlog_max: u32,
    /// Depth at the end of the window.
    pub backlog_now: u32,
    /// Connections added to the accept queue while the accept-queue sensor was attached (see
    /// `accept_queue_sampled_fraction`); null when that sensor is off.
    pub enqueued: Option<u64>,
    /// SYN-ACK retransmits (eBPF); null when the accept-queue sensor is off.
    pub synack_retrans: Option<u64>,
    /// Connections this listener dropped (its sockets' sk_drops, via sock_diag) since the dump
    /// of its namespace the window counts from (see [`WindowBuilder`]); null when its
    /// namespace's dump failed at the window's end (the next window whose end is read counts
    /// them), or none of a namespace known at the start had succeeded yet.
    pub overflows: Option<u64>,
    /// When that dump was, if before the window's `start` (the dump at the start failed); `None`
    /// when `overflows` counts from the window's start.
    pub overflows_since: Option<String>,
    /// The accept-queue limit of the socket of the group that dropped most in the window: the
    /// sockets of an SO_REUSEPORT group, or of a port bound on several addresses, each have their
    /// own, and `backlog_limit` is the largest. `None` when none of them dropped (or the end's
    /// dump was not read).
    pub dropping_limit: Option<u32>,
    /// A process holding the socket that dropped most in the window, else one of the group's.
    pub pid: Option<u32>,
    pub comm: Option<String>,
}

impl ListenerWindow {
    /// The drops known to have happened: an unknown count is no evidence of any.
    pub fn known_overflows(&self) -> u64 {
        self.overflows.unwrap_or(0)
    }
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct NetnsWindow {
    pub netns: u64,
    pub listen_overflows: u64,
    pub listen_drops: u64,
    /// SYNs dropped because the listener's SYN queue was full and SYN cookies were off
    /// (`TcpExtTCPReqQFullDrop`); null when the kernel does not count them.
    pub syn_queue_full_drops: Option<u64>,
    /// SYN cookies sent because a SYN queue was full (`TcpExtTCPReqQFullDoCookies`).
    pub syn_queue_full_cookies: Option<u64>,
    /// Handshake ACKs a `TCP_DEFER_ACCEPT` listener held back (`TcpExtTCPDeferAcceptDrop`): no
    /// connection is lost, but each counts in the listener's `sk_drops`
    /// ([`Window::without_deferred_acks`]); null when the kernel does not count them.
    pub defer_accept_drops: Option<u64>,
    /// The namespace's cookie at the window's end (None: unknown, before Linux 5.14): what the
    /// rules remember of an inode is forgotten when another namespace has it. Not in the event.
    #[serde(skip)]
    pub cookie: Option<u64>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct IrqWindow {
    pub irq: u32,
    /// The line's action names in /proc/interrupts (`"a, b"` on a shared line).
    pub name: Option<String>,
    /// Handler runs (`irq_handler_exit`), not interrupts: the kernel runs every handler of a
    /// shared line for each interrupt, each with its own entry and exit, so on a line shared by
    /// N handlers this is N times the line's /proc/interrupts difference. Telling the first
    /// handler of an interrupt from the others would take the line's descriptor in the eBPF
    /// program.
    pub count: u64,
    /// `count` per second of the window.
    pub per_s: f64,
    /// Total handler time: the timed runs' mean times `count`; null when no run was timed.
    pub time_us: Option<f64>,
    /// Mean time of one timed handler run (not of one interrupt on a shared line).
    pub mean_ns: Option<f64>,
}

/// At most this many IRQ lines are listed in a window, the busiest. A multiqueue NIC or NVMe
/// drive has a line per queue, usually one per CPU: listed whole, a large host's lines would
/// make one event longer than a log pipeline takes as one line (containerd splits at 16 KiB).
pub const LISTED_IRQS: usize = 16;

/// The IRQ lines that fired that a window does not list, together.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct IrqRest {
    pub lines: u32,
    pub count: u64,
    pub per_s: f64,
    /// The sum of each line's `time_us`, of the lines with a timed run; null when none has one.
    pub time_us: Option<f64>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SoftirqWindow {
    pub vector: &'static str,
    /// Handler runs seen while sampling.
    pub count: u64,
    /// Runs whose duration was measured; `time_us` scales their mean to `count`.
    pub timed: u64,
    pub per_s: f64,
    pub time_us: Option<f64>,
    pub mean_ns: Option<f64>,
    /// Share of all CPUs' time spent in this vector while sampling, percent.
    pub cpu_pct: Option<f64>,
    /// The CPUs on which it ran, in CPU order: one CPU saturated by NET_RX (IRQ or RPS
    /// affinity) hides in the sum over all. The busiest [`per_cpu::LISTED_CPUS`] of them.
    pub per_cpu: Vec<SoftirqCpu>,
    /// The CPUs on which it ran that `per_cpu` leaves out, together; null when none is.
    pub per_cpu_rest: Option<SoftirqRest>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct NapiWindow {
    /// The device's network namespace inode, as `listeners[].netns`; null for the per-CPU
    /// backlog, which has no device and serves every namespace.
    pub netns: Option<u64>,
    /// The device's index in its namespace (0: the backlog).
    pub ifindex: u32,
    /// The device's name in its own namespace; "backlog" for the per-CPU backlog (loopback, RPS);
    /// null when the agent could not enter that namespace or the device was gone when looked up.
    pub device: Option<String>,
    pub polls: u64,
    pub packets: u64,
    pub budget_exhausted: u64,
    pub polls_per_s: f64,
    pub packets_per_s: f64,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct RequestLatencyWindow {
    pub netns: u64,
    pub port: u16,
    pub family: &'static str,
    #[serde(flatten)]
    pub latency: LatencySummary,
}

/// A listening port by network namespace, port and family (a service of the other family may
/// listen on the same port number): the agent's own metrics endpoint.
pub type Endpoint = (u64, u16, &'static str);

impl RequestLatencyWindow {
    /// Whether these are the requests of `endpoint`.
    pub fn is_at(&self, endpoint: Option<Endpoint>) -> bool {
        Some((self.netns, self.port, self.family)) == endpoint
    }
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Window {
    pub start: String,
    pub end: String,
    /// Exact, since it divides energy and counts; rounded to the millisecond when written.
    #[serde(serialize_with = "round3_field")]
    pub duration_s: f64,
    /// The longest time between two of its samples: a window lasts as long as its ticks take,
    /// and an agent stopped (SIGSTOP, a frozen VM) or starved of CPU ticks late; a freeze lands
    /// whole in one tick (s62 story CE-1: a 19 s window of 5 said nothing of it).
    #[serde(serialize_with = "round3_field")]
    pub longest_tick_s: f64,
    /// Fraction of the window during which the duty-cycled sensors (softirq, napi, sched,
    /// request_latency) were attached. Their counts cover only that time; their rates are per
    /// second of sampling. Kept exact, since it divides request counts; rounded when written.
    #[serde(serialize_with = "round6_field")]
    pub sampled_fraction: f64,
    /// Fraction of the window during which the accept-queue sensor was attached: the duty fraction,
    /// or 1 while a listener was under pressure.
    pub accept_queue_sampled_fraction: f64,
    pub listeners: Vec<ListenerWindow>,
    /// `listener_full` events the accept-queue sensor could not send in the window because its
    /// ring buffer was full (each one a full queue reported late, from sock_diag at a tick, or
    /// not at all); null when that sensor is off.
    pub listener_full_lost: Option<u64>,
    pub netns: Vec<NetnsWindow>,
    /// The lines that fired, the [`LISTED_IRQS`] with the most handler runs.
    pub irqs: Vec<IrqWindow>,
    /// The lines that fired that `irqs` leaves out, together; null when none is.
    pub irqs_rest: Option<IrqRest>,
    pub softirqs: Vec<SoftirqWindow>,
    pub napi: Vec<NapiWindow>,
    pub runq_latency: Option<LatencySummary>,
    /// Context switches per second of sampling (eBPF); `system.context_switches_per_s` is the
    /// kernel's count over the whole window.
    pub sampled_context_switches_per_s: Option<f64>,
    /// The same by CPU, for the busiest CPUs that switched (null exactly when the total is).
    pub sampled_context_switches_per_cpu_per_s: Option<Vec<CpuRate>>,
    /// The CPUs that switched that the list leaves out, together; null when none is.
    pub sampled_context_switches_per_cpu_rest: Option<RateRest>,
    pub request_latency: Vec<RequestLatencyWindow>,
    /// Listening ports the request-latency sensor had no place for at the window's end (it
    /// times 128): absent from `request_latency` however busy (s63 story CJ-2: only a log line
    /// said so). Null when that sensor is off.
    pub request_latency_untimed_ports: Option<u32>,
    pub system: HostMetrics,
    /// Energy over the window; `None` when the agent has no energy source at all.
    pub energy: Option<energy::WindowEnergy>,
}

impl Window {
    /// The handshake ACKs `TCP_DEFER_ACCEPT` listeners of namespace `netns` held back in the
    /// window (0 when unknown).
    pub fn deferred_acks(&self, netns: u64) -> u64 {
        (self.netns.iter())
            .find(|n| n.netns == netns)
            .and_then(|n| n.defer_accept_drops)
            .unwrap_or(0)
    }

    /// The window with each listener group that dropped seen as its socket that dropped most:
    /// its limit (`dropping_limit`), and a depth no deeper than that socket's queue can be. The
    /// rules judge a listener by it: one worker's `listen(8)` socket dropping beside another's
    /// `listen(4096)` read as a queue of 9 under a limit of 4096 capped by somaxconn, and
    /// somaxconn was raised, then raised again as each worker listened again, to the policy's
    /// maximum, for drops no raise could touch (s63 story CM-1, CM-2).
    pub fn by_dropping_socket(&self) -> std::borrow::Cow<'_, Window> {
        let smaller = |l: &ListenerWindow| l.dropping_limit.is_some_and(|d| d < l.backlog_limit);
        if !self.listeners.iter().any(smaller) {
            return std::borrow::Cow::Borrowed(self);
        }
        let mut w = self.clone();
        for l in w.listeners.iter_mut() {
            if let Some(limit) = l.dropping_limit.filter(|&d| d < l.backlog_limit) {
                l.backlog_limit = limit;
                // A queue holds one more than its limit before it drops.
                l.backlog_max = l.backlog_max.min(limit.saturating_add(1));
                l.backlog_now = l.backlog_now.min(limit.saturating_add(1));
            }
        }
        std::borrow::Cow::Owned(w)
    }

    /// The window with each listener's `overflows` less the handshake ACKs a `TCP_DEFER_ACCEPT`
    /// listener held back, as far as they can be told apart: what the deciding half takes for
    /// drops. `tcp_check_req` answers a bare ACK to such a listener by holding the request back
    /// until data comes, and `tcp_v4_rcv` then discards the packet into the listener's
    /// `sk_drops`: every connection to nginx `deferred` or HAProxy `defer-accept` counted as a
    /// drop, and the guard reverted a change for drops the kernel never made (s63 story CI-1).
    /// The namespace counts them (`TcpExtTCPDeferAcceptDrop`), not each listener: its listeners
    /// dropped their sum less them, and none more. Those drops are handed out once, to the
    /// listeners whose queue was seen at its limit first (the most dropping first), each up to
    /// its own count, and what is left to the others. Each listener cut only to the sum, a
    /// deferred listener kept its held-back ACKs as drops up to another's real overflows, and the
    /// rules raised somaxconn for it (s63 story CL-1). Exact when one listener of the namespace
    /// counted drops. The copy's `defer_accept_drops` are 0: taken out already.
    pub fn without_deferred_acks(&self) -> std::borrow::Cow<'_, Window> {
        if self
            .netns
            .iter()
            .all(|n| n.defer_accept_drops.unwrap_or(0) == 0)
        {
            return std::borrow::Cow::Borrowed(self);
        }
        let mut w = self.clone();
        let seen_full = |l: &ListenerWindow| l.backlog_max >= l.backlog_limit.max(1);
        for netns in self.netns.iter().map(|n| n.netns) {
            let deferred = self.deferred_acks(netns);
            if deferred == 0 {
                continue;
            }
            let all: u64 = (self.listeners.iter())
                .filter(|l| l.netns == netns)
                .map(ListenerWindow::known_overflows)
                .sum();
            // Handed out once, so that the listeners' counts sum to the real drops (s63 review1
            // R1-1: each took up to all of them): those seen at their limit first, the most
            // dropping first.
            let mut left = all.saturating_sub(deferred);
            let mut order: Vec<usize> = (0..w.listeners.len())
                .filter(|&i| w.listeners[i].netns == netns)
                .collect();
            order.sort_by_key(|&i| {
                let l = &w.listeners[i];
                (!seen_full(l), std::cmp::Reverse(l.known_overflows()))
            });
            for i in order {
                let l = &mut w.listeners[i];
                let counted = l.known_overflows().min(left);
                l.overflows = l.overflows.map(|_| counted);
                left -= counted;
            }
        }
        for n in &mut w.netns {
            n.defer_accept_drops = n.defer_accept_drops.map(|_| 0);
        }
        std::borrow::Cow::Owned(w)
    }

    /// The window as the deciding half judges it: without the requests of `endpoint` (the
    /// agent's own metrics endpoint: network namespace, port, family), which the
    /// request-latency sensor times like any service's but are no work of the host's. One slow
    /// scrape (any local user may take seconds to send one) made the guard revert a change for
    /// `request_p99` (s61 story BZ-2), as it would have counted in `joules_per_request`.
    pub fn without_endpoint(&self, endpoint: Option<Endpoint>) -> std::borrow::Cow<'_, Window> {
        if !self.request_latency.iter().any(|r| r.is_at(endpoint)) {
            return std::borrow::Cow::Borrowed(self);
        }
        let mut judged = self.clone();
        judged.request_latency.retain(|r| !r.is_at(endpoint));
        std::borrow::Cow::Owned(judged)
    }
}

/// Each namespace's sock_diag dump a window counts its listeners' drops from.
pub type References = BTreeMap<u64, Arc<ListenerReading>>;

/// What a window has counted of each listener socket's drops, per namespace: from its
/// reference, dump by dump through every good dump of the window (its end's included). Counted
/// dump by dump, not as the change from the reference to the end, because a socket that closes
/// before the end is in no later dump: what the window's dumps saw of it would be lost.
type Dropped = BTreeMap<u64, NetnsDrops>;

#[derive(Debug, Clone, Default)]
struct NetnsDrops {
    /// The namespace's cookie in the dumps counted (None: unknown): a namespace later given
    /// its inode adds nothing to what this one counted, nor takes from it.
    cookie: Option<u64>,
    sockets: BTreeMap<(ListenerKey, u32), SocketDrops>,
    /// What namespaces that had this inode earlier in the window counted, per listener: one died
    /// and another was given its inode (a pod restarted at once). Their drops are the inode's as
    /// the new one's are, as `kpo_listener_overflows_total` sums them; set aside, not lost (s46
    /// storyJ F2), and apart from `sockets`, where a socket inode the new namespace reuses would
    /// be taken for the dead one's.
    died: BTreeMap<ListenerKey, u64>,
    /// The last dump each listener was in: what is known of one that closed in the window.
    seen_in: BTreeMap<ListenerKey, Arc<ListenerReading>>,
}

#[derive(Debug, Clone, Copy)]
struct SocketDrops {
    /// `sk_drops` in the socket's latest dump.
    last: u64,
    /// Drops since the reference.
    counted: u64,
}

impl NetnsDrops {
    /// The drops counted of `key`'s sockets, those closed since included.
    fn of(&self, key: ListenerKey) -> u64 {
        self.sockets
            .range((key, 0)..=(key, u32::MAX))
            .map(|(_, s)| s.counted)
            .fold(
                self.died.get(&key).copied().unwrap_or(0),
                u64::saturating_add,
            )
    }
}

/// Takes in one good dump of namespace `netns`: each socket's drops since its previous dump in
/// the window, or since `reference` for its first (a socket the reference does not have was
/// created since, and counts from 0).
fn count_dump(
    dropped: &mut Dropped,
    reference: Option<&ListenerReading>,
    netns: u64,
    dump: &Arc<ListenerReading>,
) {
    let d = dropped.entry(netns).or_default();
    if let (Some(then), Some(now)) = (d.cookie, dump.cookie) {
        if then != now {
            // The namespace counted so far died, and this one was given its inode.
            for ((key, _), socket) in std::mem::take(&mut d.sockets) {
                let died = d.died.entry(key).or_default();
                *died = died.saturating_add(socket.counted);
            }
        }
    }
    d.cookie = dump.cookie.or(d.cookie);
    let reference = reference.filter(|r| r.same_namespace(dump.cookie));
    for (key, view) in &dump.listeners {
        d.seen_in.insert(*key, dump.clone());
        for (&inode, &now) in &view.socket_drops {
            let socket = d.sockets.entry((*key, inode)).or_insert_with(|| {
                let was = reference
                    .and_then(|r| r.listeners.get(key)?.socket_drops.get(&inode))
                    .copied();
                SocketDrops {
                    last: was.unwrap_or(0),
                    counted: 0,
                }
            });
            socket.counted = socket
                .counted
                .saturating_add(socket_drops_delta(socket.last, now));
            socket.last = now;
        }
    }
}

/// sock_diag gives a socket's `sk_drops` in 32 bits.
const SOCKET_DROPS_RANGE: u64 = 1 << 32;

/// The change of one socket's `sk_drops` between two dumps. A fall on the same inode is the
/// 32-bit counter wrapping: the inode cannot be another socket's, since one is given again only
/// after 2^32 more inodes were handed out (sockets, pipes and the like share one counter), and
/// a window's dumps are never that far apart.
fn socket_drops_delta(before: u64, now: u64) -> u64 {
    counter::wrapping(before, now, SOCKET_DROPS_RANGE)
}

/// Takes in the dumps that succeeded at `sample`.
fn count_dumps(dropped: &mut Dropped, reference: &References, sample: &Sample) {
    for (inum, read) in &sample.namespaces {
        if !read.listeners {
            continue;
        }
        if let Some(dump) = sample.readings.get(inum) {
            count_dump(dropped, reference.get(inum).map(|r| &**r), *inum, dump);
        }
    }
}

/// Accumulates the samples of one window.
pub struct WindowBuilder {
    baseline: Sample,
    /// The dumps this window counts drops from: the baseline's own where it was read, else the
    /// one the window before counted from (the drops since are uncounted yet).
    reference: References,
    /// Drops counted from `reference` by the window's good dumps so far; carried into the next
    /// window with the reference where the end's dump failed.
    dropped: Dropped,
    last: Option<Sample>,
    peaks: BTreeMap<ListenerKey, u32>,
    /// Requests timed in the window so far, per service, added up tick by tick.
    requests: Requests,
    /// The host's 32-bit per-CPU counters' changes so far, added up tick by tick.
    per_cpu: PerCpuSums,
    sampled: Duration,
    accept_queue_sampled: Duration,
    elapsed: Duration,
    longest_tick: Duration,
}

impl WindowBuilder {
    /// The first window from `baseline`: where its dump failed, it counts from the namespace's
    /// last good dump before (the collector's carry), since no window counted from it.
    pub fn new(baseline: Sample) -> Self {
        let reference = baseline.readings.clone();
        Self::with_reference(baseline, reference, Dropped::new())
    }

    fn with_reference(baseline: Sample, reference: References, dropped: Dropped) -> Self {
        Self {
            per_cpu: PerCpuSums::new(&baseline.host),
            baseline,
            reference,
            dropped,
            last: None,
            peaks: BTreeMap::new(),
            requests: Requests::new(),
            sampled: Duration::ZERO,
            accept_queue_sampled: Duration::ZERO,
            elapsed: Duration::ZERO,
            longest_tick: Duration::ZERO,
        }
    }

    /// The most recent sample (the baseline until the first tick).
    pub fn last_sample(&self) -> &Sample {
        self.last.as_ref().unwrap_or(&self.baseline)
    }

    pub fn push(&mut self, sample: Sample) {
        let previous = self.last.as_ref().unwrap_or(&self.baseline);
        let tick = sample.at.saturating_duration_since(previous.at);
        self.elapsed += tick;
        self.longest_tick = self.longest_tick.max(tick);
        self.sampled += sample.duty_sampled;
        self.accept_queue_sampled += sample.accept_queue_sampled;
        observe_peaks(&mut self.peaks, &sample);
        add_requests(&mut self.requests, previous, &sample);
        self.per_cpu.add_tick(&previous.host, &sample.host);
        count_dumps(&mut self.dropped, &self.reference, &sample);
        self.last = Some(sample);
    }

    /// Closes the window. Returns it and the sample that becomes the next window's baseline
    /// (for a last window: [`WindowBuilder::finish_and_continue`] opens the next one).
    pub fn finish(self) -> Option<(Window, Sample)> {
        let window = self.window()?;
        Some((window, self.last?))
    }

    fn window(&self) -> Option<Window> {
        let last = self.last.as_ref()?;
        let spans = Spans {
            elapsed: self.elapsed,
            longest_tick: self.longest_tick,
            sampled: self.sampled,
            accept_queue_sampled: self.accept_queue_sampled,
        };
        Some(assemble(
            &self.baseline,
            last,
            &self.peaks,
            &self.requests,
            spans,
            &self.reference,
            &self.dropped,
            HostMetrics::over(&self.baseline.host, &last.host, &self.per_cpu),
        ))
    }

    /// Closes the window and opens the next, from its last sample. Where that sample's dump
    /// failed, this window's drops were not counted, so the next window counts from the dump
    /// this one counted from: every drop once.
    pub fn finish_and_continue(self) -> Option<(Window, WindowBuilder)> {
        let window = self.window()?;
        let Self {
            baseline,
            mut reference,
            mut dropped,
            last,
            ..
        } = self;
        let last = last?;
        let known_at_start: Vec<u64> = baseline.namespaces.keys().copied().collect();
        let baseline = (baseline.at, baseline.wall);
        let read_at_end = |inum: &u64| last.namespaces.get(inum).is_some_and(|r| r.listeners);
        for (inum, reading) in &last.readings {
            // Counted by this window: to the end, or, for a namespace vanished, to its last good
            // dump (the reading carried), which the next count starts from should it come back.
            if read_at_end(inum) || vanished(&last, *inum) {
                reference.insert(*inum, reading.clone());
                dropped.remove(inum);
            }
        }
        for inum in last.namespaces.keys().chain(last.readings.keys()) {
            if read_at_end(inum) || reference.contains_key(inum) {
                continue;
            }
            if !known_at_start.contains(inum) {
                // Not known at the start: created since, counted from 0 from the start.
                let empty = ListenerReading {
                    at: baseline.0,
                    wall: baseline.1,
                    cookie: last.readings.get(inum).and_then(|r| r.cookie),
                    listeners: BTreeMap::new(),
                };
                reference.insert(*inum, Arc::new(empty));
            } else if let Some(r) = last.readings.get(inum) {
                // Known at the start and never read before it: nothing counted this window, and
                // nothing earlier can be: from its last good dump (what the window's dumps
                // counted before it had no reference, and is dropped).
                reference.insert(*inum, r.clone());
                dropped.remove(inum);
            }
        }
        // What discovery no longer finds and the collector no longer carries is gone.
        reference.retain(|inum, _| {
            last.namespaces.contains_key(inum) || last.readings.contains_key(inum)
        });
        // Where the reference is carried, so is what the window's dumps counted from it: the
        // next window whose end is read counts it, with the sockets that closed meanwhile.
        dropped.retain(|inum, _| reference.contains_key(inum));
        Some((
            window,
            WindowBuilder::with_reference(last, reference, dropped),
        ))
    }
}

/// The window of one tick, from the previous sample to this one, borrowed (nothing is cloned):
/// what the rules read every tick to react before the window closes. Same fields and semantics
/// as a full window.
pub fn tick_window(previous: &Sample, sample: &Sample) -> Window {
    let mut peaks = BTreeMap::new();
    observe_peaks(&mut peaks, sample);
    let mut requests = Requests::new();
    add_requests(&mut requests, previous, sample);
    let mut dropped = Dropped::new();
    count_dumps(&mut dropped, &previous.readings, sample);
    let tick = sample.at.saturating_duration_since(previous.at);
    let spans = Spans {
        elapsed: tick,
        longest_tick: tick,
        sampled: sample.duty_sampled,
        accept_queue_sampled: sample.accept_queue_sampled,
    };
    assemble(
        previous,
        sample,
        &peaks,
        &requests,
        spans,
        &previous.readings,
        &dropped,
        HostMetrics::between(&previous.host, &sample.host),
    )
}

/// The deepest accept queue of each listener during the tick a sample closes (eBPF peaks at each
/// enqueue, and the depth sock_diag reported).
fn observe_peaks(peaks: &mut BTreeMap<ListenerKey, u32>, sample: &Sample) {
    let mut observe = |key: ListenerKey, depth: u32| {
        let peak = peaks.entry(key).or_insert(0);
        *peak = (*peak).max(depth);
    };
    if let Some(bpf) = &sample.bpf {
        for (key, l) in &bpf.listeners {
            if let Some(p) = l.tick_peak {
                observe(*key, p);
            }
        }
    }
    for (key, l) in &sample.listeners {
        observe(*key, l.depth);
    }
}

/// Request-latency histograms, per service, of the requests timed in a window.
type Requests = BTreeMap<ListenerKey, Vec<u64>>;

/// Adds to `requests` those timed during the tick `sample` closes: per service, its cumulative
/// histogram's growth since `previous`. Counted tick by tick, not as the change between a window's
/// first and last sample, so that a service whose index was given to another listener during the
/// window keeps what it was timed at until then (its last histogram, read while its index was
/// freed), and the new owner's counts are not taken for its own.
///
/// A service absent from `previous` restarts from 0 (see `bpf_maps::read_request_hists`): newly
/// timed, or on a new index; one absent from `sample` adds nothing in this tick.
fn add_requests(requests: &mut Requests, previous: &Sample, sample: &Sample) {
    let Some(b) = &sample.bpf else {
        return;
    };
    for (key, h) in &b.request_hist {
        let before = previous.bpf.as_ref().and_then(|f| f.request_hist.get(key));
        let tick = hist::delta(before.map(Vec::as_slice), h);
        let total = requests.entry(*key).or_default();
        if total.len() < tick.len() {
            total.resize(tick.len(), 0);
        }
        for (t, n) in total.iter_mut().zip(tick) {
            *t += n;
        }
    }
}

/// How long a window lasted, and how much of it each group of sensors was attached.
struct Spans {
    elapsed: Duration,
    longest_tick: Duration,
    sampled: Duration,
    accept_queue_sampled: Duration,
}

#[allow(clippy::too_many_arguments)]
fn assemble(
    first: &Sample,
    last: &Sample,
    peaks: &BTreeMap<ListenerKey, u32>,
    requests: &Requests,
    spans: Spans,
    reference: &References,
    dropped: &Dropped,
    system: HostMetrics,
) -> Window {
    let secs = spans.elapsed.as_secs_f64().max(1e-9);
    let sampled = Sampled(spans.sampled.as_secs_f64());
    let (listed_irqs, irqs_rest) = irqs(first, last, secs);
    let per_cpu_switches = sched_counted(first, last, sampled).map_or((None, None), |(f, b)| {
        let before = f.map_or(&[][..], |f| f.context_switches.as_slice());
        let (listed, rest) = per_cpu::rates(before, &b.context_switches, |n| sampled.rate(n));
        (Some(listed), rest)
    });
    Window {
        start: rfc3339(first.wall),
        end: rfc3339(last.wall),
        duration_s: secs,
        longest_tick_s: spans.longest_tick.as_secs_f64(),
        sampled_fraction: sampled.0 / secs,
        accept_queue_sampled_fraction: round3(spans.accept_queue_sampled.as_secs_f64() / secs),
        listeners: listeners(first, last, peaks, reference, dropped),
        listener_full_lost: last
            .bpf
            .as_ref()
            .filter(|_| last.accept_queue_sensor)
            .map(|b| {
                counter::restarted(bpf_before(first, |f| Some(f.notable_lost)), b.notable_lost)
            }),
        netns: netns(first, last),
        irqs: listed_irqs,
        irqs_rest,
        softirqs: softirqs(first, last, sampled),
        napi: napi(first, last, sampled),
        runq_latency: last.bpf.as_ref().and_then(|b| {
            let before = first.bpf.as_ref().map(|f| f.runq_hist.as_slice());
            hist::summarize(&hist::delta(before, &b.runq_hist))
        }),
        sampled_context_switches_per_s: sched_counted(first, last, sampled).map(|(f, b)| {
            let before = f.map_or(0, BpfSnapshot::context_switches_total);
            sampled.rate(counter::restarted(before, b.context_switches_total()))
        }),
        sampled_context_switches_per_cpu_per_s: per_cpu_switches.0,
        sampled_context_switches_per_cpu_rest: per_cpu_switches.1,
        request_latency: request_latency(requests),
        request_latency_untimed_ports: last.untimed_ports,
        system,
        // The run loop reads the meter when the window closes.
        energy: None,
    }
}

/// The baseline's eBPF counters (if read) and the end's, when the sched sensor counted the
/// window's context switches: on at both ends and sampled (off, it counts nothing).
fn sched_counted<'a>(
    first: &'a Sample,
    last: &'a Sample,
    sampled: Sampled,
) -> Option<(Option<&'a BpfSnapshot>, &'a BpfSnapshot)> {
    let b = last.bpf.as_ref()?;
    (sampled.0 > 0.0 && first.sched_sensor && last.sched_sensor).then_some((first.bpf.as_ref(), b))
}

/// Seconds during which the duty-cycled sensors were attached.
#[derive(Clone, Copy)]
struct Sampled(f64);

impl Sampled {
    /// Per second of sampling.
    fn rate(self, n: u64) -> f64 {
        if self.0 > 0.0 {
            round3(n as f64 / self.0)
        } else {
            0.0
        }
    }
}

/// The baseline's value of an eBPF counter, or its default if it was not there yet.
fn bpf_before<T: Default>(first: &Sample, get: impl FnOnce(&BpfSnapshot) -> Option<T>) -> T {
    first.bpf.as_ref().and_then(get).unwrap_or_default()
}

/// Whether a listener or namespace's counters absent from `sample` were really not there: the
/// sample read that namespace's sock_diag dump or counters (`read`), or did not know the
/// namespace at all. Absent after a failed read, they are unknown.
fn absence_is_real(sample: &Sample, inum: u64, read: fn(&NetnsRead) -> bool) -> bool {
    sample.namespaces.get(&inum).is_none_or(read)
}

/// Each namespace's counters over the window: those read at the end, and those of a namespace
/// that discovery no longer finds there (deleted, most often: no later window would read it)
/// through its last reading, if that was in the window. They count from the start's reading, or,
/// for a namespace that discovery did not find at the start either (held only by a descriptor
/// meanwhile), from its last reading before, which the windows before counted through.
fn netns(first: &Sample, last: &Sample) -> Vec<NetnsWindow> {
    fn carried<'a>(s: &'a Sample, inum: &u64) -> Option<&'a CounterReading> {
        vanished(s, *inum)
            .then(|| s.netns_readings.get(inum))
            .flatten()
    }
    let vanished_at_end = last
        .netns_readings
        .iter()
        .filter(|(inum, r)| !last.netns.contains_key(inum) && r.at >= first.at)
        .filter_map(|(inum, _)| Some((inum, &carried(last, inum)?.counters)));
    let mut windows = last
        .netns
        .iter()
        .chain(vanished_at_end)
        .filter_map(|(inum, c)| {
            let seen = first
                .netns
                .get(inum)
                .or_else(|| Some(&carried(first, inum)?.counters))
                .copied();
            // A namespace new in this window has no baseline: its counters began at 0 with it.
            // One whose counters could not be read at the baseline has no difference to give:
            // from 0 it would count everything since the namespace was created.
            if seen.is_none() && !absence_is_real(first, *inum, |r| r.counters) {
                return None;
            }
            // One that has the inode of the baseline's, but another cookie, was created since
            // that one died (the kernel hands out the lowest free inode): new in this window
            // too. Taken for the same one, its counters would be compared with the dead one's:
            // a fall counts 0, a rise only what exceeds them.
            let same = |b: &NetnsCounters| match (b.cookie, c.cookie) {
                (Some(then), Some(now)) => then == now,
                _ => true,
            };
            let seen = seen.filter(same);
            let before = seen.unwrap_or_default();
            // One that had a baseline without the counter (a line that did not parse) does not
            // count from 0 either.
            let syn = |pick: fn(&NetnsCounters) -> Option<u64>| {
                let before = match seen {
                    Some(b) => pick(&b)?,
                    None => 0,
                };
                Some(counter::monotonic(before, pick(c)?))
            };
            Some(NetnsWindow {
                netns: *inum,
                listen_overflows: counter::monotonic(before.listen_overflows, c.listen_overflows),
                listen_drops: counter::monotonic(before.listen_drops, c.listen_drops),
                syn_queue_full_drops: syn(|c| c.syn_queue_full_drops),
                syn_queue_full_cookies: syn(|c| c.syn_queue_full_cookies),
                defer_accept_drops: syn(|c| c.defer_accept_drops),
                cookie: c.cookie,
            })
        })
        .collect::<Vec<_>>();
    windows.sort_by_key(|w| w.netns);
    windows
}

fn softirqs(first: &Sample, last: &Sample, sampled: Sampled) -> Vec<SoftirqWindow> {
    let Some(b) = &last.bpf else {
        return Vec::new();
    };
    let ncpus = num_cpus();
    (0..b.softirqs.len())
        .filter_map(|vec| {
            let c = b.softirq(vec)?;
            let before = bpf_before(first, |f| f.softirq(vec));
            let count = counter::restarted(before.count, c.count);
            let timed = counter::restarted(before.timed, c.timed);
            // Only some runs are timed (see SOFTIRQ_TIME_EVERY): their mean times the count.
            // No timed run (a rare vector): the duration is unknown, not zero.
            let mean_ns = (timed > 0)
                .then(|| counter::restarted(before.time_ns, c.time_ns) as f64 / timed as f64);
            let time_ns = mean_ns.map(|m| m * count as f64);
            if count == 0 {
                return None;
            }
            let (per_cpu, per_cpu_rest) = per_cpu::softirq_cpus(
                first
                    .bpf
                    .as_ref()
                    .and_then(|f| f.softirqs.get(vec))
                    .map_or(&[][..], Vec::as_slice),
                &b.softirqs[vec],
            );
            Some(SoftirqWindow {
                vector: SOFTIRQ_NAMES.get(vec).copied().unwrap_or("?"),
                count,
                timed,
                per_s: sampled.rate(count),
                time_us: time_ns.map(|t| round3(t / 1000.0)),
                mean_ns: mean_ns.map(round3),
                cpu_pct: time_ns.map(|t| {
                    if sampled.0 > 0.0 {
                        round3(t / (sampled.0 * 1e9 * ncpus) * 100.0)
                    } else {
                        0.0
                    }
                }),
                per_cpu,
                per_cpu_rest,
            })
        })
        .collect()
}

fn napi(first: &Sample, last: &Sample, sampled: Sampled) -> Vec<NapiWindow> {
    let Some(b) = &last.bpf else {
        return Vec::new();
    };
    b.napi
        .iter()
        .filter_map(|(key, c)| {
            // The reader holds each device's totals at their highest (`hold_high_water`) until
            // a device no longer polled has its entry deleted (`collect::idle_napi`); polled
            // again, it counts from 0 in another entry (`EntryIds`), whose counts are all new.
            let entry = b.napi_entries.get(key);
            let before = bpf_before(first, |f| {
                f.napi
                    .get(key)
                    .filter(|_| f.napi_entries.get(key) == entry)
                    .copied()
            });
            let polls = counter::restarted(before.polls, c.polls);
            let packets = counter::restarted(before.packets, c.packets);
            let backlog = *key == NapiKey::BACKLOG;
            (polls > 0).then(|| NapiWindow {
                netns: (!backlog).then_some(u64::from(key.netns)),
                ifindex: key.ifindex,
                device: if backlog {
                    Some("backlog".into())
                } else {
                    last.napi_devices.get(key).cloned()
                },
                polls,
                packets,
                budget_exhausted: counter::restarted(before.budget_exhausted, c.budget_exhausted),
                polls_per_s: sampled.rate(polls),
                packets_per_s: sampled.rate(packets),
            })
        })
        .collect()
}

fn request_latency(requests: &Requests) -> Vec<RequestLatencyWindow> {
    requests
        .iter()
        .filter_map(|(key, h)| {
            let latency = hist::summarize(h)?;
            Some(RequestLatencyWindow {
                netns: u64::from(key.netns),
                port: key.port,
                family: family_name(key.family),
                latency,
            })
        })
        .collect()
}

fn listeners(
    first: &Sample,
    last: &Sample,
    peaks: &BTreeMap<ListenerKey, u32>,
    reference: &References,
    dropped: &Dropped,
) -> Vec<ListenerWindow> {
    let bpf_of =
        |s: &Sample, key: &ListenerKey| s.bpf.as_ref().and_then(|b| b.listeners.get(key)).copied();
    // The baseline's counts of the entry read at the end: of another entry (deleted by the agent
    // and re-created since, see `bpf_maps::EntryIds`) they are not subtracted.
    let bpf_before = |key: &ListenerKey| {
        let now = bpf_of(last, key).map(|b| b.entry);
        bpf_of(first, key).filter(|f| Some(f.entry) == now)
    };
    let bpf_on = last.accept_queue_sensor;
    let mut keys: Vec<ListenerKey> = last.listeners.keys().copied().collect();
    // Listeners that closed during the window but were active in it.
    if let Some(b) = &last.bpf {
        for (key, l) in &b.listeners {
            let before = bpf_before(key).map_or(0, |f| f.enqueued);
            if !last.listeners.contains_key(key) && l.enqueued > before {
                keys.push(*key);
            }
        }
    }
    for (inum, d) in dropped {
        if dump_read(last, *inum) || vanished(last, *inum) {
            keys.extend(
                d.sockets
                    .iter()
                    .filter(|(_, s)| s.counted > 0)
                    .map(|((key, _), _)| *key),
            );
            // And those of a namespace that died in the window and gave its inode away.
            keys.extend(d.died.iter().filter(|(_, n)| **n > 0).map(|(key, _)| *key));
        }
    }
    // Listeners of a namespace whose dump failed at the end are unknown, not gone: left out,
    // their namespace's sum (the guard's signal) would read as no drops at all. What is known of
    // them is the namespace's last good dump.
    for (inum, reading) in &last.readings {
        if !absence_is_real(last, *inum, |r| r.listeners) {
            keys.extend(reading.listeners.keys());
        }
    }
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .map(|key| {
            let view = last.listeners.get(&key);
            let netns = u64::from(key.netns);
            // What is known of it: the end's dump, else the last good one, else the last of the
            // window's dumps it was in (it closed), else the baseline's.
            let known = view
                .or_else(|| last.readings.get(&netns)?.listeners.get(&key))
                .or_else(|| dropped.get(&netns)?.seen_in.get(&key)?.listeners.get(&key))
                .or_else(|| first.listeners.get(&key));
            let (overflows, since) = overflows(first, last, reference, dropped, key);
            let now_bpf = bpf_of(last, &key);
            let before_bpf = bpf_before(&key).unwrap_or_default();
            // Each socket's count at the end against the start's (from 0 for one opened since).
            let dropping = view.and_then(|v| {
                let before = |inode: &u32| {
                    (first.listeners.get(&key))
                        .and_then(|b| b.socket_drops.get(inode))
                        .copied()
                        .unwrap_or(0)
                };
                (v.socket_drops.iter())
                    .map(|(inode, &now)| (inode, now.saturating_sub(before(inode))))
                    .filter(|&(_, dropped)| dropped > 0)
                    .max_by_key(|&(inode, dropped)| (dropped, std::cmp::Reverse(*inode)))
                    .and_then(|(inode, _)| v.sockets.get(inode))
            });
            ListenerWindow {
                netns: u64::from(key.netns),
                port: key.port,
                family: family_name(key.family),
                addresses: known
                    .map(|v| v.addresses.iter().map(ToString::to_string).collect())
                    .unwrap_or_default(),
                backlog_limit: known
                    .map(|v| v.limit)
                    .or(now_bpf.map(|b| b.backlog_limit))
                    .unwrap_or(0),
                backlog_max: peaks.get(&key).copied().unwrap_or(0),
                // The end's dump, else, where it failed, the last good one; not the baseline's:
                // a listener that closed has no queue, nor has one whose namespace vanished
                // (deleted, most often: its sockets closed first).
                backlog_now: view
                    .or_else(|| {
                        let failed = !vanished(last, netns);
                        failed.then(|| last.readings.get(&netns)?.listeners.get(&key))?
                    })
                    .map_or(0, |v| v.depth),
                enqueued: bpf_on.then(|| {
                    now_bpf.map_or(0, |b| counter::restarted(before_bpf.enqueued, b.enqueued))
                }),
                synack_retrans: (bpf_on && last.synack_retrans_sensor).then(|| {
                    now_bpf.map_or(0, |b| {
                        counter::restarted(before_bpf.synack_retrans, b.synack_retrans)
                    })
                }),
                overflows,
                overflows_since: since.map(rfc3339),
                dropping_limit: dropping.map(|s| s.limit),
                pid: dropping.and_then(|s| s.pid).or(view.and_then(|v| v.pid)),
                comm: (dropping.and_then(|s| s.comm.clone()))
                    .or_else(|| view.and_then(|v| v.comm.clone())),
            }
        })
        .collect()
}

/// Whether `sample` read namespace `inum`'s sock_diag dump.
fn dump_read(sample: &Sample, inum: u64) -> bool {
    sample.namespaces.get(&inum).is_some_and(|r| r.listeners)
}

/// Whether discovery did not find namespace `inum` at `sample`: deleted, most often, or held only
/// by a descriptor. A dump that failed is read again by a later window, which counts what this
/// one could not; a namespace deleted never is. So a window that ends with it vanished counts its
/// drops through its last good dump, and should it come back, the next count starts there.
fn vanished(sample: &Sample, inum: u64) -> bool {
    !sample.namespaces.contains_key(&inum)
}

/// A listener's drops over a window from `first` to `last`, and since when they are counted, if
/// that is before `first`: they count from `reference`, its namespace's dump the window counts
/// from (`first`'s own, or when that failed, the one the window before counted from), so drops
/// that happened while dumps failed are counted, once, by the first window whose end was read.
/// `dropped` holds what the window's dumps counted of each of its sockets since then, those
/// closed before the end included.
fn overflows(
    first: &Sample,
    last: &Sample,
    reference: &References,
    dropped: &Dropped,
    key: ListenerKey,
) -> (Option<u64>, Option<time::OffsetDateTime>) {
    let netns = u64::from(key.netns);
    if !dump_read(last, netns) && !vanished(last, netns) {
        // Its namespace's dump failed at the end: unknown, until a dump succeeds; what the
        // window's dumps counted stays with the reference, for that window to count.
        return (None, None);
    }
    let drops = dropped.get(&netns).map_or(0, |d| d.of(key));
    let now = last.readings.get(&netns).and_then(|r| r.cookie);
    match reference.get(&netns) {
        // A reference of the namespace that had this inode before: this one was created since,
        // and its listeners count from 0 (its earlier windows, unread, counted none of it).
        Some(reading) if !reading.same_namespace(now) => (Some(drops), None),
        Some(reading) => {
            let read_at_start = first.namespaces.get(&netns).is_some_and(|r| r.listeners);
            (Some(drops), (!read_at_start).then_some(reading.wall))
        }
        // No good dump of the namespace yet at the start: if it was not known then, it was
        // created in the window and its listeners counted from 0 with it. If it was known, a
        // listener may have been there all along, and from 0 it would count every drop since it
        // was created.
        None => (
            (!first.namespaces.contains_key(&netns)).then_some(drops),
            None,
        ),
    }
}

/// The busiest [`LISTED_IRQS`] lines that fired (by handler runs, then time), in IRQ order,
/// and the others together.
fn irqs(first: &Sample, last: &Sample, secs: f64) -> (Vec<IrqWindow>, Option<IrqRest>) {
    let Some(b) = &last.bpf else {
        return (Vec::new(), None);
    };
    let moved: Vec<(u32, IrqCounters)> = b
        .irqs
        .iter()
        .map(|(irq, c)| {
            let before = bpf_before(first, |f| f.irqs.get(irq).copied());
            let delta = IrqCounters {
                count: counter::restarted(before.count, c.count),
                time_ns: counter::restarted(before.time_ns, c.time_ns),
                timed: counter::restarted(before.timed, c.timed),
            };
            (*irq, delta)
        })
        .filter(|(_, d)| d.count > 0)
        .collect();
    let (listed, rest) = per_cpu::busiest(moved, LISTED_IRQS, |d| (d.count as f64, d.time_ns));
    // As for softirqs: the timed runs' mean times the exact count.
    let mean_ns = |d: &IrqCounters| (d.timed > 0).then(|| d.time_ns as f64 / d.timed as f64);
    let time_us = |d: &IrqCounters| per_cpu::scaled_time_us(d.count, d.time_ns, d.timed);
    let names = crate::collect::procfs::irq_names(&last.host);
    let listed = listed
        .into_iter()
        .map(|(irq, d)| IrqWindow {
            irq,
            name: names.get(&irq).cloned(),
            count: d.count,
            per_s: round3(d.count as f64 / secs),
            time_us: time_us(&d),
            mean_ns: mean_ns(&d).map(round3),
        })
        .collect();
    let rest = (!rest.is_empty()).then(|| {
        let count: u64 = rest.iter().map(|(_, d)| d.count).sum();
        // Each line's own estimate, added up: lines differ in how many of their runs were timed,
        // so one mean over all of them would weigh a line by its timed runs, not its runs.
        let timed: Vec<f64> = rest
            .iter()
            .filter_map(|(_, d)| mean_ns(d).map(|m| m * d.count as f64))
            .collect();
        IrqRest {
            lines: rest.len() as u32,
            count,
            per_s: round3(count as f64 / secs),
            time_us: (!timed.is_empty()).then(|| round3(timed.iter().sum::<f64>() / 1000.0)),
        }
    });
    (listed, rest)
}

pub fn family_name(family: u16) -> &'static str {
    if family == AF_INET6 {
        "ipv6"
    } else {
        "ipv4"
    }
}

/// [`family_name`] of a socket bound to `addr` (an IPv4-mapped IPv6 address is an IPv6 socket's).
pub fn family_of(addr: &std::net::SocketAddr) -> &'static str {
    family_name(if addr.is_ipv4() {
        kpo_common::AF_INET
    } else {
        AF_INET6
    })
}

/// CPUs online on the host (not this process's affinity or cgroup share: the sensors see all).
fn num_cpus() -> f64 {
    cpus_online().unwrap_or(1) as f64
}

/// The CPUs online (the host's, not a container's CPU set); None when the kernel does not say.
pub fn cpus_online() -> Option<u64> {
    match nix::unistd::sysconf(nix::unistd::SysconfVar::_NPROCESSORS_ONLN) {
        Ok(Some(n)) if n > 0 => Some(n as u64),
        _ => None,
    }
}

pub(crate) fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

fn round3_field<S: serde::Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(round3(*v))
}

/// Six decimals, so that one tick of a long window (1 s of an hour) is not written as 0.
fn round6_field<S: serde::Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64((v * 1e6).round() / 1e6)
}

/// RFC 3339 in UTC with all nine fraction digits: the default format trims trailing zeros, so
/// its strings neither sort as text (`.5Z` after `.50001Z`) nor suit fixed-width parsers.
pub fn rfc3339(t: time::OffsetDateTime) -> String {
    const UTC_NANOS: &[time::format_description::FormatItem<'static>] = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:9]Z"
    );
    t.to_offset(time::UtcOffset::UTC)
        .format(UTC_NANOS)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use kpo_common::{ListenerKey, SoftirqCounters, AF_INET};

    use super::*;
    use crate::collect::{
        bpf_maps::{read_request_hists, BpfSnapshot, ListenerBpf, ServiceIndex},
        carry::Carry,
        procfs::{HostSnapshot, ProcRoot},
        ListenerView,
    };

    const KEY: ListenerKey = ListenerKey {
        netns: 7,
        port: 80,
        family: AF_INET,
    };

    fn sample(
        at: Instant,
        secs: u64,
        duty: bool,
        depth: u32,
        drops: u64,
        bpf: ListenerBpf,
    ) -> Sample {
        let host: HostSnapshot = HostSnapshot::read(&ProcRoot("/proc".into())).0;
        let mut snapshot = BpfSnapshot::default();
        snapshot.listeners.insert(KEY, bpf);
        // Per CPU, as the map holds them: all on CPU 1.
        snapshot.context_switches = vec![0, secs * 1000];
        let mut s = Sample {
            at: at + Duration::from_secs(secs),
            wall: time::OffsetDateTime::UNIX_EPOCH + Duration::from_secs(secs),
            bpf: Some(snapshot),
            listeners: [(
                KEY,
                ListenerView {
                    addresses: vec!["0.0.0.0".parse().unwrap()],
                    depth,
                    limit: 128,
                    drops,
                    socket_drops: [(4242, drops)].into(),
                    sockets: BTreeMap::new(),
                    pid: Some(42),
                    comm: Some("nginx".into()),
                    full: (depth >= 128).then_some((depth, 128)),
                },
            )]
            .into(),
            netns: BTreeMap::new(),
            namespaces: [(7, READ)].into(),
            readings: BTreeMap::new(),
            netns_readings: BTreeMap::new(),
            napi_devices: BTreeMap::new(),
            host,
            // Samples a second apart: a sampled tick is attached all of it.
            duty_sampled: if duty {
                Duration::from_secs(1)
            } else {
                Duration::ZERO
            },
            accept_queue_sensor: true,
            accept_queue_attached: true,
            accept_queue_sampled: Duration::from_secs(1),
            synack_retrans_sensor: true,
            sched_sensor: true,
            untimed_ports: None,
        };
        reread(&mut s, &mut Carry::default());
        s
    }

    /// Sets the sample's readings as the collector would, after `carry` saw the samples before
    /// it: tests that change a sample's listeners or namespaces call it again.
    fn reread(s: &mut Sample, carry: &mut Carry) {
        s.readings = carry.update(s.at, s.wall, &s.namespaces, &BTreeMap::new(), &s.listeners);
    }

    /// The samples in order, each with the readings the collector would give it.
    fn collected(mut samples: Vec<Sample>) -> Vec<Sample> {
        let mut carry = Carry::default();
        for s in &mut samples {
            reread(s, &mut carry);
        }
        samples
    }

    /// The windows of consecutive samples, one tick each.
    fn windows_of(samples: &[Sample]) -> Vec<Window> {
        samples
            .windows(2)
            .map(|pair| {
                let mut b = WindowBuilder::new(pair[0].clone());
                b.push(pair[1].clone());
                b.finish().unwrap().0
            })
            .collect()
    }

    fn bpf(enqueued: u64, peak: Option<u32>) -> ListenerBpf {
        ListenerBpf {
            enqueued,
            synack_retrans: 0,
            backlog_limit: 128,
            tick_peak: peak,
            entry: 1,
        }
    }

    /// The partial window at SIGTERM can be shorter than a millisecond: its length stays exact
    /// for what divides by it (the energy's watts), and only the event's figure is rounded.
    #[test]
    fn a_window_under_a_millisecond_keeps_its_exact_length() {
        let t0 = Instant::now();
        let mut b = WindowBuilder::new(sample(t0, 0, false, 3, 10, bpf(100, None)));
        let mut last = sample(t0, 0, false, 3, 10, bpf(100, None));
        last.at = t0 + Duration::from_micros(400);
        b.push(last);
        let (w, _) = b.finish().unwrap();
        assert_eq!(w.duration_s, 0.0004);
        let json = serde_json::to_value(&w).unwrap();
        assert_eq!(json["duration_s"], 0.0);
    }

    /// s62 story CE-1: an agent stopped for 15 s closed a 19 s window of 5 with no word of it.
    /// The window says its longest tick.
    #[test]
    fn a_window_says_its_longest_tick() {
        let t0 = Instant::now();
        let mut b = WindowBuilder::new(sample(t0, 0, false, 3, 10, bpf(100, None)));
        b.push(sample(t0, 1, false, 3, 10, bpf(100, None)));
        let mut frozen = sample(t0, 0, false, 3, 10, bpf(100, None));
        frozen.at = t0 + Duration::from_millis(16_250);
        b.push(frozen);
        let mut last = sample(t0, 0, false, 3, 10, bpf(100, None));
        last.at = t0 + Duration::from_millis(17_250);
        b.push(last);
        let (w, _) = b.finish().unwrap();
        assert_eq!((w.duration_s, w.longest_tick_s), (17.25, 15.25));
        let json = serde_json::to_value(&w).unwrap();
        assert_eq!(json["longest_tick_s"], 15.25);
    }

    #[test]
    fn windows_take_differences_peaks_and_roll_over() {
        let t0 = Instant::now();
        let mut b = WindowBuilder::new(sample(t0, 0, false, 3, 10, bpf(100, Some(50))));
        b.push(sample(t0, 1, true, 5, 12, bpf(130, Some(20))));
        b.push(sample(t0, 2, false, 4, 15, bpf(150, None)));
        b.push(sample(t0, 3, false, 1, 15, bpf(160, Some(7))));
        b.push(sample(t0, 4, true, 0, 15, bpf(160, None)));
        let (w, last) = b.finish().unwrap();
        assert_eq!(w.duration_s, 4.0);
        assert_eq!(w.sampled_fraction, 0.5, "two of four ticks attached");
        assert_eq!(w.accept_queue_sampled_fraction, 1.0);
        let l = &w.listeners[0];
        assert_eq!((l.netns, l.port, l.family), (7, 80, "ipv4"));
        // The baseline's own peak (50) belongs to the previous window.
        assert_eq!(l.backlog_max, 20);
        assert_eq!(l.backlog_now, 0);
        assert_eq!(l.enqueued, Some(60));
        assert_eq!(l.overflows, Some(5));
        assert_eq!((l.pid, l.comm.as_deref()), (Some(42), Some("nginx")));
        // 4000 switches over 2 sampled seconds.
        assert_eq!(w.sampled_context_switches_per_s, Some(2000.0));

        // The last sample is the next window's baseline.
        let mut b = WindowBuilder::new(last);
        b.push(sample(t0, 5, true, 2, 16, bpf(161, Some(2))));
        let (w2, _) = b.finish().unwrap();
        let l = &w2.listeners[0];
        assert_eq!(
            (l.enqueued, l.overflows, l.backlog_max),
            (Some(1), Some(1), 2)
        );
    }

    #[test]
    fn softirq_time_scales_the_timed_mean_to_the_count() {
        let t0 = Instant::now();
        let with_net_rx = |secs, count, time_ns, timed| {
            let mut s = sample(t0, secs, true, 0, 0, bpf(0, None));
            s.duty_sampled = Duration::from_secs(secs); // attached since the baseline, at 0 s
            let mut counters = vec![vec![SoftirqCounters::default()]; 10];
            counters[3] = vec![SoftirqCounters {
                count,
                time_ns,
                timed,
            }];
            s.bpf.as_mut().unwrap().softirqs = counters;
            s
        };
        let mut b = WindowBuilder::new(with_net_rx(0, 100, 5_000, 10));
        // 800 more runs, 100 of them timed, 250 ns on average.
        b.push(with_net_rx(2, 900, 30_000, 110));
        let (w, _) = b.finish().unwrap();
        let net_rx = &w.softirqs[0];
        assert_eq!(net_rx.vector, "NET_RX");
        assert_eq!((net_rx.count, net_rx.timed), (800, 100));
        assert_eq!(net_rx.mean_ns, Some(250.0));
        assert_eq!(net_rx.time_us, Some(200.0));
        assert_eq!(net_rx.per_s, 400.0);
    }

    /// Defect: a sampled tick counted whole, though the sensors are attached only after the
    /// previous tick's read and processing: rates read low by that share of the tick.
    #[test]
    fn rates_are_per_second_attached_not_per_second_of_the_tick() {
        let t0 = Instant::now();
        let mut b = WindowBuilder::new(sample(t0, 0, false, 0, 0, bpf(0, None)));
        let mut attached_late = sample(t0, 1, true, 0, 0, bpf(0, None));
        attached_late.duty_sampled = Duration::from_millis(800);
        attached_late.accept_queue_sampled = Duration::from_millis(900);
        b.push(attached_late);
        b.push(sample(t0, 2, false, 0, 0, bpf(0, None)));
        let (w, _) = b.finish().unwrap();
        assert_eq!(w.sampled_fraction, 0.4);
        assert_eq!(w.accept_queue_sampled_fraction, 0.95);
        // 2000 context switches (the helper's count at 2 s) over 0.8 s attached.
        assert_eq!(w.sampled_context_switches_per_s, Some(2500.0));
    }

    #[test]
    fn one_sampled_tick_of_a_long_window_is_not_rounded_away() {
        // One tick of 3,600 attached: 1/3600 of the window, which three decimals would make 0 and
        // every division by it (requests per second, joules per request) undefined.
        let t0 = Instant::now();
        let base = sample(t0, 0, false, 0, 10, bpf(0, None));
        let at = |secs: u64, duty: bool| {
            let mut s = base.clone();
            s.at = t0 + Duration::from_secs(secs);
            s.wall = time::OffsetDateTime::UNIX_EPOCH + Duration::from_secs(secs);
            s.duty_sampled = Duration::from_secs(u64::from(duty));
            s
        };
        let mut b = WindowBuilder::new(at(0, false));
        b.push(at(1, true));
        for secs in 2..=3600 {
            b.push(at(secs, false));
        }
        let (w, _) = b.finish().unwrap();
        assert_eq!(w.sampled_fraction, 1.0 / 3600.0);
        let json = serde_json::to_value(&w).unwrap();
        assert_eq!(json["sampled_fraction"], 0.000278);
    }

    #[test]
    fn a_listener_born_in_the_window_counts_from_zero() {
        let t0 = Instant::now();
        let mut first = sample(t0, 0, false, 0, 0, bpf(0, None));
        first.listeners.clear();
        first.bpf.as_mut().unwrap().listeners.clear();
        reread(&mut first, &mut Carry::default());
        let mut b = WindowBuilder::new(first);
        b.push(sample(t0, 1, false, 9, 51, bpf(9, Some(9))));
        let (w, _) = b.finish().unwrap();
        let l = &w.listeners[0];
        assert_eq!(
            (l.overflows, l.enqueued, l.backlog_max),
            (Some(51), Some(9), 9)
        );
    }

    fn counters(listen_overflows: u64) -> NetnsCounters {
        NetnsCounters {
            listen_overflows,
            listen_drops: listen_overflows,
            syn_queue_full_drops: Some(0),
            syn_queue_full_cookies: Some(0),
            defer_accept_drops: None,
            cookie: None,
        }
    }

    const READ: NetnsRead = NetnsRead {
        listeners: true,
        counters: true,
    };
    const UNREAD: NetnsRead = NetnsRead {
        listeners: false,
        counters: false,
    };

    /// Defect: a namespace whose sock_diag dump and netstat read failed at the baseline looked
    /// like one created in the window, and its listener's 40000 drops since creation were
    /// reported as this window's.
    #[test]
    fn a_failed_read_at_the_baseline_gives_no_phantom_overflows() {
        let t0 = Instant::now();
        let mut carry = Carry::default();
        let mut failed = sample(t0, 0, false, 0, 0, bpf(0, None));
        failed.listeners.clear();
        failed.namespaces.insert(7, UNREAD);
        reread(&mut failed, &mut carry);
        let mut read = sample(t0, 1, false, 2, 40_000, bpf(5, Some(2)));
        read.namespaces.insert(7, READ);
        read.netns.insert(7, counters(40_000));
        reread(&mut read, &mut carry);
        let mut b = WindowBuilder::new(failed);
        b.push(read);
        let (w, last) = b.finish().unwrap();
        let l = &w.listeners[0];
        assert_eq!(
            (l.overflows, l.enqueued, l.backlog_max),
            (None, Some(5), 2),
            "what eBPF and this tick's dump saw still counts"
        );
        assert_eq!(w.netns, [], "no baseline for the namespace's counters");

        // From a baseline that was read, the differences are back.
        let mut next = sample(t0, 2, false, 0, 40_003, bpf(5, None));
        next.namespaces.insert(7, READ);
        next.netns.insert(7, counters(40_003));
        reread(&mut next, &mut carry);
        let mut b = WindowBuilder::new(last);
        b.push(next);
        let (w, _) = b.finish().unwrap();
        assert_eq!(w.listeners[0].overflows, Some(3));
        assert_eq!((w.netns[0].netns, w.netns[0].listen_overflows), (7, 3));
    }

    #[test]
    fn a_listener_or_namespace_new_where_the_baseline_read_counts_from_zero() {
        let t0 = Instant::now();
        let mut carry = Carry::default();
        let mut first = sample(t0, 0, false, 0, 0, bpf(0, None));
        first.listeners.clear();
        first.namespaces.insert(7, READ);
        reread(&mut first, &mut carry);
        let mut next = sample(t0, 1, false, 1, 51, bpf(0, None));
        next.namespaces.insert(7, READ);
        // Namespace 9 was not known at the baseline: it was created (or first entered) since.
        next.namespaces.insert(9, READ);
        next.netns.insert(9, counters(12));
        reread(&mut next, &mut carry);
        let mut b = WindowBuilder::new(first);
        b.push(next);
        let (w, _) = b.finish().unwrap();
        assert_eq!(w.listeners[0].overflows, Some(51));
        assert_eq!((w.netns[0].netns, w.netns[0].listen_overflows), (9, 12));
    }

    /// Defect: namespace counters were matched by inode alone, so a namespace created in the
    /// window with the inode of one that died there was compared with the dead one's counters:
    /// 1000 then 40 gave 0 overflows, 1000 then 1200 gave 200. Its cookie tells it apart.
    #[test]
    fn a_namespace_given_a_dead_ones_inode_counts_its_counters_from_zero() {
        let t0 = Instant::now();
        let with = |secs, overflows, syn_drops, cookie| {
            let mut s = sample(t0, secs, false, 0, 0, bpf(0, None));
            s.namespaces.insert(9, READ);
            let c = NetnsCounters {
                syn_queue_full_drops: Some(syn_drops),
                cookie,
                ..counters(overflows)
            };
            s.netns.insert(9, c);
            s
        };
        let window = |first: Sample, last: Sample| {
            let mut b = WindowBuilder::new(first);
            b.push(last);
            let w = b.finish().unwrap().0;
            let n = &w.netns[0];
            (n.listen_overflows, n.listen_drops, n.syn_queue_full_drops)
        };
        let old = with(0, 1000, 30, Some(70));
        assert_eq!(
            window(old.clone(), with(1, 40, 2, Some(71))),
            (40, 40, Some(2))
        );
        assert_eq!(
            window(old.clone(), with(1, 1200, 35, Some(71))),
            (1200, 1200, Some(35))
        );
        // The same namespace: the difference.
        assert_eq!(
            window(old.clone(), with(1, 1200, 35, Some(70))),
            (200, 200, Some(5))
        );
        // No cookie (before Linux 5.14): the inode is all there is.
        assert_eq!(
            window(with(0, 1000, 30, None), with(1, 1200, 35, None)),
            (200, 200, Some(5))
        );
    }

    /// A listener gone from a last sample whose dump failed may still be there: its drops are
    /// unknown, where one that closed has nothing more to count.
    #[test]
    fn a_failed_read_at_the_end_is_unknown_and_a_closed_listener_counts_nothing() {
        let t0 = Instant::now();
        // 6 waiting at the start.
        let mut first = sample(t0, 0, false, 6, 10, bpf(0, None));
        first.namespaces.insert(7, READ);
        let mut carry = Carry::default();
        reread(&mut first, &mut carry);
        // Unread at the end: the depth of its last good dump; closed: no queue (the baseline's
        // depth was reported for it).
        for (read, overflows, backlog_now) in [(UNREAD, None, 6), (READ, Some(0), 0)] {
            let mut next = sample(t0, 1, false, 0, 0, bpf(4, None));
            next.listeners.clear();
            next.namespaces.insert(7, read);
            reread(&mut next, &mut carry);
            let mut b = WindowBuilder::new(first.clone());
            b.push(next);
            let (w, _) = b.finish().unwrap();
            let l = &w.listeners[0];
            assert_eq!(
                (l.enqueued, l.overflows, l.backlog_now),
                (Some(4), overflows, backlog_now)
            );
            // What is known of it stays: its addresses and limit.
            assert_eq!(
                (l.addresses.clone(), l.backlog_limit),
                (vec!["0.0.0.0".to_string()], 128)
            );
        }
        // A quiet listener (nothing enqueued) whose namespace's dump failed at the end is
        // listed as unknown, with what its last good dump knew of it; closed, it is gone.
        for (read, listed) in [(UNREAD, 1), (READ, 0)] {
            let mut carry = Carry::default();
            reread(&mut first, &mut carry);
            let mut next = sample(t0, 1, false, 0, 0, bpf(0, None));
            next.listeners.clear();
            next.namespaces.insert(7, read);
            reread(&mut next, &mut carry);
            let mut b = WindowBuilder::new(first.clone());
            b.push(next);
            let (w, _) = b.finish().unwrap();
            assert_eq!(w.listeners.len(), listed);
            if let Some(l) = w.listeners.first() {
                assert_eq!(
                    (l.overflows, l.backlog_limit, l.addresses.clone()),
                    (None, 128, vec!["0.0.0.0".to_string()])
                );
            }
        }
    }

    /// A sample of namespace 7 whose listener KEY has these sockets (inode, sk_drops); `read`
    /// false: its dump failed. Readings are set by [`collected`].
    fn dump(t0: Instant, secs: u64, sockets: &[(u32, u64)], read: bool) -> Sample {
        let mut s = sample(t0, secs, false, 0, 0, bpf(0, None));
        let view = s.listeners.get_mut(&KEY).unwrap();
        view.socket_drops = sockets.iter().copied().collect();
        view.drops = sockets.iter().map(|(_, d)| d).sum();
        if sockets.is_empty() || !read {
            s.listeners.clear();
        }
        if !read {
            s.namespaces.insert(7, UNREAD);
        }
        s
    }

    fn overflows_of(w: &Window) -> Option<(Option<u64>, Option<String>)> {
        let l = w.listeners.iter().find(|l| (l.netns, l.port) == (7, 80))?;
        Some((l.overflows, l.overflows_since.clone()))
    }

    /// Defect: a window whose end's dump failed had null overflows, and the next window started
    /// from that failed reading, so the drops of both windows were counted nowhere.
    #[test]
    fn drops_while_dumps_failed_are_counted_once_by_the_next_window_read_at_its_end() {
        let t0 = Instant::now();
        let samples = collected(vec![
            dump(t0, 0, &[(1, 10)], true),
            dump(t0, 1, &[(1, 12)], false),
            dump(t0, 2, &[(1, 15)], false),
            dump(t0, 3, &[(1, 22)], true),
            dump(t0, 4, &[(1, 25)], true),
        ]);
        let since = Some(rfc3339(samples[0].wall));
        let windows = windows_of(&samples);
        let seen: Vec<_> = windows.iter().map(|w| overflows_of(w).unwrap()).collect();
        assert_eq!(
            seen,
            [
                (None, None),
                (None, None),
                (Some(12), since),
                (Some(3), None)
            ],
            "unknown while the ends fail, then everything since the last good dump"
        );
        let total: u64 = windows.iter().filter_map(|w| overflows_of(w)?.0).sum();
        assert_eq!(total, 25 - 10, "every drop counted once");
        // Listed while unknown, with what the last good dump knew.
        assert_eq!(windows[1].listeners[0].addresses, ["0.0.0.0"]);

        // The rules' tick windows count the same.
        let ticks: Vec<_> = samples
            .windows(2)
            .map(|p| overflows_of(&tick_window(&p[0], &p[1])).unwrap().0)
            .collect();
        assert_eq!(ticks, [None, None, Some(12), Some(3)]);

        // A window of several ticks whose start was read is not marked as reaching back.
        let mut b = WindowBuilder::new(samples[0].clone());
        for s in &samples[1..4] {
            b.push(s.clone());
        }
        let (w, _) = b.finish().unwrap();
        assert_eq!(overflows_of(&w).unwrap(), (Some(12), None));
    }

    /// A window whose end failed after good ticks inside it: the next window counts from the
    /// dump this one counted from (its start), not from the last good tick, whose drops since
    /// this window's start nobody counted; the rules' tick windows chain tick by tick.
    #[test]
    fn the_window_after_a_failed_end_counts_from_that_window_s_start() {
        let t0 = Instant::now();
        let samples = collected(vec![
            dump(t0, 0, &[(1, 10)], true),
            dump(t0, 1, &[(1, 14)], true),
            dump(t0, 2, &[(1, 16)], false),
            dump(t0, 3, &[(1, 20)], true),
        ]);
        let mut b = WindowBuilder::new(samples[0].clone());
        b.push(samples[1].clone());
        b.push(samples[2].clone());
        let (first, mut b) = b.finish_and_continue().unwrap();
        b.push(samples[3].clone());
        let (second, _) = b.finish_and_continue().unwrap();
        assert_eq!(overflows_of(&first).unwrap(), (None, None));
        assert_eq!(
            overflows_of(&second).unwrap(),
            (Some(10), Some(rfc3339(samples[0].wall)))
        );
        let ticks: Vec<_> = samples
            .windows(2)
            .map(|p| overflows_of(&tick_window(&p[0], &p[1])).unwrap())
            .collect();
        assert_eq!(
            ticks,
            [
                (Some(4), None),
                (None, None),
                (Some(6), Some(rfc3339(samples[1].wall)))
            ]
        );
    }

    /// A listener closed and re-created under the same address while dumps failed is a new
    /// socket: its drops count from 0, never from the old socket's count (which would make the
    /// merged sum fall and count nothing, or a negative).
    #[test]
    fn sockets_re_created_or_closed_while_dumps_failed_count_each_drop_once() {
        let t0 = Instant::now();
        // (sockets before, sockets after: (inode, sk_drops)), overflows after.
        type Case = (&'static [(u32, u64)], &'static [(u32, u64)], Option<u64>);
        let cases: [Case; 5] = [
            // Re-created: another inode, fewer drops than the old socket had.
            (&[(1, 100)], &[(2, 4)], Some(4)),
            // The same inode with a lower count: its 32-bit counter wrapped.
            (&[(1, 100)], &[(1, 4)], Some((1 << 32) - 100 + 4)),
            // An SO_REUSEPORT group: one socket closed, one kept (10 more), one new (7).
            (&[(1, 100), (2, 50)], &[(2, 60), (3, 7)], Some(17)),
            // Nothing new, nothing negative.
            (&[(1, 100)], &[(1, 100)], Some(0)),
            // Closed for good: not listed (it enqueued nothing).
            (&[(1, 100)], &[], None),
        ];
        for (before, after, want) in cases {
            let samples = collected(vec![
                dump(t0, 0, before, true),
                dump(t0, 1, &[(9, 1_000_000)], false),
                dump(t0, 2, after, true),
            ]);
            let windows = windows_of(&samples);
            assert_eq!(overflows_of(&windows[0]).unwrap().0, None);
            assert_eq!(
                overflows_of(&windows[1]).and_then(|o| o.0),
                want,
                "{before:?} -> {after:?}"
            );
        }
    }

    /// One namespace-7 dump of KEY's sockets (inode, sk_drops); None: the dump failed.
    type Dump = Option<&'static [(u32, u64)]>;

    /// The windows of `runs` of dumps, each run a window of one tick per dump after the first
    /// (None: that dump failed), chained as the agent chains them.
    fn windows_of_runs(t0: Instant, runs: &[&[Dump]]) -> Vec<Window> {
        let mut secs = 0;
        let mut raw = Vec::new();
        for (i, run) in runs.iter().enumerate() {
            // Each run after the first starts from the last dump of the run before.
            for d in &run[usize::from(i > 0)..] {
                raw.push(dump(t0, secs, d.unwrap_or(&[]), d.is_some()));
                secs += 1;
            }
        }
        let samples = collected(raw);
        let mut at = 0;
        let mut b = WindowBuilder::new(samples[0].clone());
        let mut windows = Vec::new();
        for run in runs {
            let ticks = run.len() - 1;
            for s in &samples[at + 1..=at + ticks] {
                b.push(s.clone());
            }
            at += ticks;
            let (w, following) = b.finish_and_continue().unwrap();
            windows.push(w);
            b = following;
        }
        windows
    }

    /// Defect: a listener socket that closed before the window's end was in no dump at the
    /// end, and the drops the window's tick dumps had seen of it were lost: a service restarted
    /// mid-window (100 at the start, 130 and 150 at the ticks, then a new socket with 7 at the
    /// end) gave 7 where the kernel counted 57.
    #[test]
    fn a_socket_closed_mid_window_keeps_the_drops_its_dumps_saw() {
        let t0 = Instant::now();
        let cases: [(&[Dump], Option<u64>); 5] = [
            (
                &[
                    Some(&[(1, 100)]),
                    Some(&[(1, 130)]),
                    Some(&[(1, 150)]),
                    Some(&[(2, 7)]),
                ],
                Some(57),
            ),
            // One member of an SO_REUSEPORT group replaced: 30 + 15 + 4.
            (
                &[
                    Some(&[(1, 100), (2, 10)]),
                    Some(&[(1, 130), (2, 20)]),
                    Some(&[(2, 25), (3, 4)]),
                ],
                Some(49),
            ),
            // Closed for good: listed, with what its dumps saw.
            (&[Some(&[(1, 100)]), Some(&[(1, 150)]), Some(&[])], Some(50)),
            // Created and closed within the window: from 0.
            (
                &[
                    Some(&[(1, 100)]),
                    Some(&[(1, 100), (5, 9)]),
                    Some(&[(1, 101)]),
                ],
                Some(10),
            ),
            // A failed dump between: the socket's drops until its last good dump.
            (
                &[Some(&[(1, 100)]), Some(&[(1, 120)]), None, Some(&[(2, 3)])],
                Some(23),
            ),
        ];
        for (dumps, want) in cases {
            let w = &windows_of_runs(t0, &[dumps])[0];
            assert_eq!(overflows_of(w), Some((want, None)), "{dumps:?}");
            let l = &w.listeners[0];
            assert_eq!(
                (l.addresses.clone(), l.backlog_limit),
                (vec!["0.0.0.0".to_string()], 128),
                "{dumps:?}"
            );
        }

        // A window whose end failed: the next window read at its end counts what the first
        // one's dumps saw of the socket that closed, once.
        let runs: &[&[Dump]] = &[
            &[Some(&[(1, 100)]), Some(&[(1, 150)]), None],
            &[None, Some(&[(2, 7)]), Some(&[(2, 9)])],
            &[Some(&[(2, 9)]), Some(&[(2, 10)])],
        ];
        let windows = windows_of_runs(t0, runs);
        let seen: Vec<_> = windows.iter().map(|w| overflows_of(w).unwrap()).collect();
        assert_eq!(
            seen,
            [
                (None, None),
                (Some(59), Some(rfc3339(time::OffsetDateTime::UNIX_EPOCH))),
                (Some(1), None)
            ]
        );
    }

    /// Defect: sock_diag gives `sk_drops` in 32 bits, and a socket's count that wrapped was
    /// taken for a new socket that reused the inode: 4294967290 then 10 counted 10, not 16.
    #[test]
    fn a_socket_drop_counter_that_wraps_counts_across_the_wrap() {
        let t0 = Instant::now();
        const NEAR: u64 = u32::MAX as u64 - 5;
        let cases: [(&[Dump], u64); 3] = [
            (&[Some(&[(1, NEAR)]), Some(&[(1, 10)])], 16),
            // Wrapped between two ticks of the window.
            (
                &[Some(&[(1, NEAR)]), Some(&[(1, NEAR + 5)]), Some(&[(1, 3)])],
                9,
            ),
            // Wrapped while the dump between failed.
            (&[Some(&[(1, NEAR)]), None, Some(&[(1, 0)])], 6),
        ];
        for (dumps, want) in cases {
            let w = &windows_of_runs(t0, &[dumps])[0];
            assert_eq!(overflows_of(w), Some((Some(want), None)), "{dumps:?}");
        }
        // The rules' tick windows count the same.
        let samples = collected(vec![
            dump(t0, 0, &[(1, NEAR)], true),
            dump(t0, 1, &[(1, 10)], true),
        ]);
        let tick = tick_window(&samples[0], &samples[1]);
        assert_eq!(overflows_of(&tick).unwrap().0, Some(16));
    }

    /// A namespace that discovery missed (unread for a tick, then forgotten) and that came back
    /// counts from its last dump, not from 0: from 0 it would count every drop since its
    /// listeners were created.
    #[test]
    fn a_namespace_back_after_discovery_lost_it_counts_from_its_last_dump() {
        let t0 = Instant::now();
        let mut forgotten = dump(t0, 2, &[], true);
        forgotten.namespaces.clear();
        let samples = collected(vec![
            dump(t0, 0, &[(1, 10)], true),
            dump(t0, 1, &[(1, 12)], false),
            forgotten,
            dump(t0, 3, &[(1, 30)], true),
        ]);
        let windows = windows_of(&samples);
        assert_eq!(overflows_of(&windows[0]), Some((None, None)));
        assert_eq!(overflows_of(&windows[1]), None, "not known: not listed");
        assert_eq!(
            overflows_of(&windows[2]),
            Some((Some(20), Some(rfc3339(samples[0].wall))))
        );
    }

    /// Defect: a namespace deleted mid-window (its listeners overflowing) left the window's
    /// listeners with its drops unlisted, and at the window's end what its dumps had counted was
    /// kept for a later window that never came: the drops were counted nowhere.
    #[test]
    fn a_namespace_deleted_mid_window_has_its_drops_counted_through_its_last_dump() {
        let t0 = Instant::now();
        let mut deleted = dump(t0, 2, &[], true);
        deleted.namespaces.clear();
        let mut full = dump(t0, 1, &[(1, 150)], true);
        full.listeners.get_mut(&KEY).unwrap().depth = 129;
        let samples = collected(vec![
            dump(t0, 0, &[(1, 100)], true),
            full,
            deleted,
            // Held by a descriptor after all, and found again: from its last dump, once.
            dump(t0, 3, &[(1, 170)], true),
        ]);
        let mut b = WindowBuilder::new(samples[0].clone());
        b.push(samples[1].clone());
        b.push(samples[2].clone());
        let (w, mut b) = b.finish_and_continue().unwrap();
        assert_eq!(overflows_of(&w), Some((Some(50), None)));
        assert_eq!(w.listeners[0].addresses, ["0.0.0.0"], "from its last dump");
        // Defect: its last dump's depth, for a listener whose namespace is gone.
        assert_eq!(w.listeners[0].backlog_now, 0, "no queue: closed with it");
        b.push(samples[3].clone());
        let (w, _) = b.finish_and_continue().unwrap();
        assert_eq!(
            overflows_of(&w),
            Some((Some(20), Some(rfc3339(samples[1].wall))))
        );
    }

    /// Defect: a namespace deleted mid-window was left out of that window's `netns[]`: the
    /// overflows its netstat counted between the start and its last reading were counted
    /// nowhere. Now through its last reading; found again (held by a descriptor), the next
    /// window counts from that reading, once; and a window that ends with it still gone does
    /// not list it again.
    #[test]
    fn a_namespace_deleted_mid_window_has_its_counters_counted_through_its_last_reading() {
        use crate::collect::carry::CounterCarry;
        let t0 = Instant::now();
        let counters = |n: u64| NetnsCounters {
            listen_overflows: n,
            listen_drops: n + 1,
            syn_queue_full_drops: Some(n / 2),
            syn_queue_full_cookies: None,
            defer_accept_drops: None,
            cookie: Some(70),
        };
        let mut carry = CounterCarry::default();
        // `n`: its counters at `secs`, or None: discovery does not find it.
        let mut at = |secs: u64, n: Option<u64>| {
            let mut s = sample(t0, secs, false, 0, 0, bpf(0, None));
            s.namespaces.clear();
            s.netns.clear();
            if let Some(n) = n {
                s.namespaces.insert(7, READ);
                s.netns.insert(7, counters(n));
            }
            s.netns_readings =
                carry.update(s.at, &s.namespaces, &BTreeMap::from([(7, 70)]), &s.netns);
            s
        };
        let s0 = at(0, Some(100));
        let s1 = at(1, Some(130));
        let s2 = at(2, None);
        let s3 = at(3, None);
        let s4 = at(4, Some(135));
        let of = |w: &Window| {
            w.netns
                .iter()
                .find(|n| n.netns == 7)
                .map(|n| (n.listen_overflows, n.listen_drops, n.syn_queue_full_drops))
        };
        let mut b = WindowBuilder::new(s0.clone());
        b.push(s1.clone());
        b.push(s2.clone());
        let (w, mut b) = b.finish_and_continue().unwrap();
        assert_eq!(of(&w), Some((30, 30, Some(15))));
        // Still gone at the next window's end: nothing more, and not listed.
        b.push(s3.clone());
        let (w, mut b) = b.finish_and_continue().unwrap();
        assert_eq!(of(&w), None);
        // Back: from its last reading, once.
        b.push(s4.clone());
        let (w, _) = b.finish_and_continue().unwrap();
        assert_eq!(of(&w), Some((5, 5, Some(2))));
        // The rules' tick windows count the same.
        assert_eq!(of(&tick_window(&s1, &s2)), Some((0, 0, Some(0))));
        assert_eq!(of(&tick_window(&s2, &s3)), None);
        assert_eq!(of(&tick_window(&s3, &s4)), Some((5, 5, Some(2))));
        // A namespace created in the window and deleted before its end counts from 0.
        let mut carry = CounterCarry::default();
        let mut at = |secs: u64, n: Option<u64>| {
            let mut s = sample(t0, secs, false, 0, 0, bpf(0, None));
            s.namespaces.clear();
            s.netns.clear();
            if let Some(n) = n {
                s.namespaces.insert(7, READ);
                s.netns.insert(7, counters(n));
            }
            s.netns_readings = carry.update(s.at, &s.namespaces, &BTreeMap::new(), &s.netns);
            s
        };
        let mut b = WindowBuilder::new(at(0, None));
        b.push(at(1, Some(4)));
        b.push(at(2, None));
        assert_eq!(of(&b.finish().unwrap().0), Some((4, 5, Some(2))));
    }

    /// Any run of good and failed dumps, window lengths and sockets replaced after a good dump:
    /// the windows' overflows add up to the drops between the first and the last dump, each
    /// window's is null exactly when its end failed, and `overflows_since` is set exactly when
    /// its start failed.
    #[test]
    fn windows_over_any_run_of_failed_dumps_add_up_to_every_drop() {
        let mut rng = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = move |n: u64| {
            rng = rng
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (rng >> 33) % n
        };
        let t0 = Instant::now();
        for _ in 0..200 {
            let ticks = 2 + next(30);
            let mut drops = next(1000);
            let mut inode = 1;
            let mut expected = 0;
            let mut raw = vec![dump(t0, 0, &[(inode, drops)], true)];
            for secs in 1..=ticks {
                // A socket replaced (a service restarted) right after a good dump loses
                // nothing: every drop of the old one was seen, and the new one counts from 0.
                if raw.last().unwrap().namespaces[&7].listeners && next(4) == 0 {
                    inode += 1;
                    drops = 0;
                }
                let more = next(50);
                drops += more;
                expected += more;
                // The last dump succeeds, so that the total is known.
                let read = secs == ticks || next(3) != 0;
                raw.push(dump(t0, secs, &[(inode, drops)], read));
            }
            let samples = collected(raw);
            let mut total = 0;
            let mut start = 0;
            let mut b = WindowBuilder::new(samples[0].clone());
            while start + 1 < samples.len() {
                let end = (start + 1 + next(4) as usize).min(samples.len() - 1);
                for s in &samples[start + 1..=end] {
                    b.push(s.clone());
                }
                let (w, following) = b.finish_and_continue().unwrap();
                b = following;
                let (overflows, since) = overflows_of(&w).unwrap();
                let read = |i: usize| samples[i].namespaces[&7].listeners;
                assert_eq!(overflows.is_some(), read(end));
                if overflows.is_some() {
                    assert_eq!(since.is_some(), !read(start));
                }
                total += overflows.unwrap_or(0);
                start = end;
            }
            assert_eq!(total, expected);
        }
    }

    #[test]
    fn listener_full_events_lost_are_the_window_s_difference() {
        let t0 = Instant::now();
        let with_lost = |secs, lost| {
            let mut s = sample(t0, secs, false, 0, 0, bpf(0, None));
            s.bpf.as_mut().unwrap().notable_lost = lost;
            s
        };
        let mut b = WindowBuilder::new(with_lost(0, 40));
        b.push(with_lost(1, 45));
        b.push(with_lost(2, 52));
        let (w, last) = b.finish().unwrap();
        assert_eq!(w.listener_full_lost, Some(12));
        let mut b = WindowBuilder::new(last);
        let mut off = with_lost(3, 52);
        off.accept_queue_sensor = false;
        b.push(off);
        assert_eq!(b.finish().unwrap().0.listener_full_lost, None);
        let json = serde_json::to_value(&w).unwrap();
        assert_eq!(json["listener_full_lost"], 12);
    }

    #[test]
    fn unknown_stays_unknown_when_the_sensor_is_off() {
        let t0 = Instant::now();
        let mut off = sample(t0, 0, false, 0, 0, bpf(0, None));
        off.accept_queue_sensor = false;
        let mut next = sample(t0, 1, false, 1, 0, bpf(0, None));
        next.accept_queue_sensor = false;
        let mut b = WindowBuilder::new(off);
        b.push(next);
        let (w, _) = b.finish().unwrap();
        assert_eq!(w.listeners[0].enqueued, None);
        assert_eq!(
            w.listeners[0].backlog_max, 1,
            "sock_diag depth still counts"
        );
    }

    #[test]
    fn context_switches_are_unknown_when_the_sched_sensor_is_off() {
        // The other duty-cycled sensors sampled this window; sched did not count.
        let t0 = Instant::now();
        let mut off = sample(t0, 0, false, 0, 0, bpf(0, None));
        off.sched_sensor = false;
        let mut next = sample(t0, 1, true, 0, 0, bpf(0, None));
        next.sched_sensor = false;
        let mut b = WindowBuilder::new(off);
        b.push(next);
        let (w, _) = b.finish().unwrap();
        assert_eq!(w.sampled_fraction, 1.0);
        assert_eq!(w.sampled_context_switches_per_s, None);
    }

    #[test]
    fn synack_retransmits_are_unknown_when_their_sensor_is_off() {
        let t0 = Instant::now();
        let mut first = sample(t0, 0, false, 0, 0, bpf(0, None));
        first.synack_retrans_sensor = false;
        let mut next = sample(t0, 1, false, 1, 0, bpf(0, None));
        next.synack_retrans_sensor = false;
        let mut b = WindowBuilder::new(first);
        b.push(next);
        let (w, _) = b.finish().unwrap();
        assert_eq!(w.listeners[0].synack_retrans, None);
        assert!(
            w.listeners[0].enqueued.is_some(),
            "the accept-queue sensor is on"
        );
    }

    /// Defect: entries were keyed and named by ifindex alone, so two namespaces' veths at the
    /// same index were one entry named after the agent's own interface at that index.
    #[test]
    fn napi_entries_are_per_namespace_and_device_with_their_own_names() {
        use kpo_common::NapiCounters;
        let t0 = Instant::now();
        let a = NapiKey {
            netns: 4026532001,
            ifindex: 3,
        };
        let b = NapiKey {
            netns: 4026532002,
            ifindex: 3,
        };
        let unnamed = NapiKey {
            netns: 4026532003,
            ifindex: 3,
        };
        let with_napi = |secs, counts: [(NapiKey, u64, u64); 4]| {
            let mut s = sample(t0, secs, true, 0, 0, bpf(0, None));
            s.bpf.as_mut().unwrap().napi = counts
                .iter()
                .map(|&(key, polls, packets)| {
                    let c = NapiCounters {
                        polls,
                        packets,
                        budget_exhausted: polls / 4,
                    };
                    (key, c)
                })
                .collect();
            s.napi_devices = BTreeMap::from([(a, "rx-a".to_string()), (b, "rx-b".to_string())]);
            s
        };
        let mut builder = WindowBuilder::new(with_napi(
            0,
            [
                (a, 4, 40),
                (b, 8, 80),
                (unnamed, 1, 1),
                (NapiKey::BACKLOG, 2, 2),
            ],
        ));
        let mut two_seconds_on = with_napi(
            2,
            [
                (a, 8, 340),
                (b, 16, 780),
                (unnamed, 1, 1),
                (NapiKey::BACKLOG, 6, 10),
            ],
        );
        two_seconds_on.duty_sampled = Duration::from_secs(2);
        builder.push(two_seconds_on);
        let (w, _) = builder.finish().unwrap();
        let json = serde_json::to_value(&w.napi).unwrap();
        assert_eq!(
            json,
            serde_json::json!([
                {"netns": null, "ifindex": 0, "device": "backlog", "polls": 4, "packets": 8,
                 "budget_exhausted": 1, "polls_per_s": 2.0, "packets_per_s": 4.0},
                {"netns": 4026532001u64, "ifindex": 3, "device": "rx-a", "polls": 4,
                 "packets": 300, "budget_exhausted": 1, "polls_per_s": 2.0,
                 "packets_per_s": 150.0},
                {"netns": 4026532002u64, "ifindex": 3, "device": "rx-b", "polls": 8,
                 "packets": 700, "budget_exhausted": 2, "polls_per_s": 4.0,
                 "packets_per_s": 350.0},
            ]),
            "the unnamed device was not polled in the window"
        );
        // docs/events.schema.json says the same: a device's entry has its namespace, the backlog
        // none and no other name.
        const SCHEMA: &str = include_str!("../../../docs/events.schema.json");
        let schema: serde_json::Value = serde_json::from_str(SCHEMA).unwrap();
        let napi_schema = &schema["$defs"]["window"]["properties"]["napi"];
        let validator = jsonschema::validator_for(napi_schema).unwrap();
        assert!(validator.is_valid(&json), "{json:#}");
        for (entry, field, wrong) in [
            (0, "netns", serde_json::json!(4026531840u64)),
            (0, "device", serde_json::json!("lo")),
            (1, "netns", serde_json::Value::Null),
        ] {
            let mut bad = json.clone();
            bad[entry][field] = wrong;
            assert!(!validator.is_valid(&bad), "{bad:#}");
        }

        // A device polled in a namespace the agent could not enter has no name, not another's.
        let mut next = with_napi(
            3,
            [
                (a, 8, 340),
                (b, 16, 780),
                (unnamed, 2, 5),
                (NapiKey::BACKLOG, 6, 10),
            ],
        );
        next.napi_devices.remove(&unnamed);
        let mut builder = WindowBuilder::new(with_napi(
            2,
            [
                (a, 8, 340),
                (b, 16, 780),
                (unnamed, 1, 1),
                (NapiKey::BACKLOG, 6, 10),
            ],
        ));
        builder.push(next);
        let (w, _) = builder.finish().unwrap();
        assert_eq!(w.napi.len(), 1);
        let n = &w.napi[0];
        assert_eq!(
            (n.netns, n.ifindex, n.device.as_deref(), n.packets),
            (Some(4026532003), 3, None, 4)
        );
    }

    /// A device whose overflow entry was deleted while it was idle (`collect::idle_napi`), and
    /// that is polled again within the window, counts from 0 in its new entry. Defect: taken
    /// for the old entry's continuation, it was counted short by the old totals once its new
    /// ones passed them (1500 polls counted 500).
    #[test]
    fn a_napi_device_polled_again_after_its_entry_went_counts_from_zero() {
        use kpo_common::NapiCounters;
        let t0 = Instant::now();
        let key = NapiKey {
            netns: 4026532001,
            ifindex: 3,
        };
        let with_polls = |secs, polls, entry| {
            let mut s = sample(t0, secs, true, 0, 0, bpf(0, None));
            let counts = NapiCounters {
                polls,
                packets: 2 * polls,
                budget_exhausted: 0,
            };
            let b = s.bpf.as_mut().unwrap();
            b.napi = BTreeMap::from([(key, counts)]);
            b.napi_entries = BTreeMap::from([(key, entry)]);
            s
        };
        let polls = |first, last| {
            let mut b = WindowBuilder::new(first);
            b.push(last);
            let (w, _) = b.finish().unwrap();
            (w.napi[0].polls, w.napi[0].packets)
        };
        assert_eq!(polls(with_polls(0, 1000, 1), with_polls(1, 6, 2)), (6, 12));
        assert_eq!(
            polls(with_polls(0, 1000, 1), with_polls(1, 1500, 2)),
            (1500, 3000)
        );
        // The same entry: the difference.
        assert_eq!(
            polls(with_polls(0, 1000, 1), with_polls(1, 1500, 1)),
            (500, 1000)
        );
    }

    /// Defect: a listener whose accept-queue entry the agent deleted (idle for the longest
    /// window, `collect::stale_listeners`) and that listened again within the window counted
    /// from 0 in a new entry, but the window took it for the old entry's continuation: short
    /// by the old count once the new one passed it (150 connections counted 50).
    #[test]
    fn a_listener_back_after_its_entry_was_deleted_counts_its_new_entry_whole() {
        let t0 = Instant::now();
        let old = ListenerBpf {
            synack_retrans: 7,
            ..bpf(100, None)
        };
        let new = ListenerBpf {
            entry: 2,
            synack_retrans: 9,
            ..bpf(150, Some(3))
        };
        let first = sample(t0, 0, true, 0, 0, old);
        let last = sample(t0, 1, true, 0, 0, new);
        let w = &tick_window(&first, &last).listeners[0];
        assert_eq!((w.enqueued, w.synack_retrans), (Some(150), Some(9)));
        let mut b = WindowBuilder::new(first.clone());
        b.push(sample(t0, 1, true, 0, 0, bpf(100, None)));
        b.push(last);
        let w = &b.finish().unwrap().0.listeners[0];
        assert_eq!((w.enqueued, w.synack_retrans), (Some(150), Some(9)));
        // The same entry: the difference.
        let same = sample(t0, 1, true, 0, 0, ListenerBpf { entry: 1, ..new });
        let w = &tick_window(&first, &same).listeners[0];
        assert_eq!((w.enqueued, w.synack_retrans), (Some(50), Some(2)));
    }

    /// A fake `MAP_REQ_HIST`: each index's cumulative histogram (a count in one bucket), kept
    /// as the collector keeps the map: a reused index is zeroed. `failing`: indices whose read
    /// fails; `held`: the reader's last good reads.
    struct ReqSlots(Vec<u64>);

    #[derive(Default)]
    struct ReqReader {
        held: BTreeMap<(ListenerKey, u32), Vec<u64>>,
        failing: Vec<u32>,
    }

    impl ReqSlots {
        fn update(&mut self, services: &mut ServiceIndex, ports: &[ListenerKey]) {
            for index in services.update(ports, std::time::Instant::now()).reused {
                self.0[index as usize] = 0;
            }
        }

        /// A sample at `secs` with the histograms the collector would read now.
        fn sample(&self, t0: Instant, secs: u64, services: &ServiceIndex) -> Sample {
            self.sample_read(t0, secs, services, &mut ReqReader::default())
        }

        /// The same, read through `reader`, whose failing indices fail.
        fn sample_read(
            &self,
            t0: Instant,
            secs: u64,
            services: &ServiceIndex,
            reader: &mut ReqReader,
        ) -> Sample {
            let mut s = sample(t0, secs, true, 0, 0, bpf(0, None));
            let b = s.bpf.as_mut().unwrap();
            let failing = reader.failing.clone();
            b.request_hist = read_request_hists(
                services,
                &mut reader.held,
                |index| {
                    if failing.contains(&index) {
                        return Err("EIO".into());
                    }
                    let mut h = vec![0; kpo_common::HIST_BUCKETS];
                    h[60] = *self.0.get(index as usize).ok_or("no such index")?;
                    Ok(h)
                },
                &mut b.failed_reads,
            );
            s
        }
    }

    fn requests_of(w: &Window, key: ListenerKey) -> Option<u64> {
        w.request_latency
            .iter()
            .find(|r| (r.netns, r.port) == (u64::from(key.netns), key.port))
            .map(|r| r.latency.samples)
    }

    /// Defect: a service missing from one tick's dump (nginx restarting, its namespace's dump
    /// failing) was not read in the next sample; back on its own index, its histogram had no
    /// earlier reading to subtract, and the window counted every request since it was first
    /// timed (1005 instead of 5).
    #[test]
    fn a_service_missing_from_one_dump_counts_only_its_new_requests() {
        let t0 = Instant::now();
        let mut services = ServiceIndex::default();
        let mut slots = ReqSlots(vec![0; kpo_common::MAX_SERVICES as usize]);
        // Each tick reads the maps with the services of the tick before, then updates them.
        slots.update(&mut services, &[KEY]);
        slots.0[0] = 1000;
        let s0 = slots.sample(t0, 0, &services);
        slots.update(&mut services, &[]);
        let s1 = slots.sample(t0, 1, &services);
        slots.update(&mut services, &[KEY]);
        slots.0[0] = 1005;
        let s2 = slots.sample(t0, 2, &services);
        assert_eq!(services.readable().collect::<Vec<_>>(), [(KEY, 0)]);

        let mut b = WindowBuilder::new(s1.clone());
        b.push(s2.clone());
        assert_eq!(requests_of(&b.finish().unwrap().0, KEY), Some(5));
        let mut b = WindowBuilder::new(s0.clone());
        b.push(s1.clone());
        b.push(s2.clone());
        assert_eq!(requests_of(&b.finish().unwrap().0, KEY), Some(5));
        // The rules' tick windows count the same.
        assert_eq!(requests_of(&tick_window(&s0, &s1), KEY), None);
        assert_eq!(requests_of(&tick_window(&s1, &s2), KEY), Some(5));
    }

    /// Defect: a histogram whose read failed for one tick was left out of that sample, and the
    /// next tick, with nothing to subtract, counted every request since the listener was first
    /// timed (1008 instead of 8). A failed read gives the last good one: the next good read
    /// counts what came since, once, in the window (or tick) it closes.
    #[test]
    fn a_request_histogram_whose_read_fails_for_a_tick_counts_from_its_last_good_read() {
        let t0 = Instant::now();
        let mut services = ServiceIndex::default();
        let mut slots = ReqSlots(vec![0; kpo_common::MAX_SERVICES as usize]);
        let mut reader = ReqReader::default();
        slots.update(&mut services, &[KEY]);
        slots.0[0] = 1000;
        let s0 = slots.sample_read(t0, 0, &services, &mut reader);
        slots.0[0] = 1003;
        reader.failing = vec![0];
        let s1 = slots.sample_read(t0, 1, &services, &mut reader);
        assert_eq!(s1.bpf.as_ref().unwrap().failed_reads.len(), 1);
        assert_eq!(
            s1.bpf.as_ref().unwrap().failed_reads[0].0,
            format!("{} index 0", kpo_common::MAP_REQ_HIST)
        );
        reader.failing.clear();
        slots.0[0] = 1008;
        let s2 = slots.sample_read(t0, 2, &services, &mut reader);
        assert!(s2.bpf.as_ref().unwrap().failed_reads.is_empty());

        // One window over all three: the 8 requests.
        let mut b = WindowBuilder::new(s0.clone());
        b.push(s1.clone());
        b.push(s2.clone());
        assert_eq!(requests_of(&b.finish().unwrap().0, KEY), Some(8));
        // A window ending on the failed read counts none; the next, all 8 since the last good.
        let mut b = WindowBuilder::new(s0.clone());
        b.push(s1.clone());
        let (w, next) = b.finish_and_continue().unwrap();
        assert_eq!(requests_of(&w, KEY), None);
        let mut next = next;
        next.push(s2.clone());
        assert_eq!(requests_of(&next.finish().unwrap().0, KEY), Some(8));
        // The rules' tick windows count the same.
        assert_eq!(requests_of(&tick_window(&s0, &s1), KEY), None);
        assert_eq!(requests_of(&tick_window(&s1, &s2), KEY), Some(8));

        // A listener whose first read under it fails is left out until read (its histogram
        // counts from 0 then: all of it since it was timed).
        let other = ListenerKey { port: 81, ..KEY };
        slots.update(&mut services, &[KEY, other]);
        slots.0[1] = 4;
        reader.failing = vec![1];
        let s3 = slots.sample_read(t0, 3, &services, &mut reader);
        assert!(!s3.bpf.as_ref().unwrap().request_hist.contains_key(&other));
        reader.failing.clear();
        let s4 = slots.sample_read(t0, 4, &services, &mut reader);
        assert_eq!(requests_of(&tick_window(&s3, &s4), other), Some(4));
    }

    /// The run-queue histogram and the eBPF counters read the same way: a failed read is the
    /// last good one, so neither the tick it closes nor the next counts from 0.
    #[test]
    fn a_runq_histogram_whose_read_fails_counts_from_its_last_good_read() {
        use crate::collect::bpf_maps::hold_last_good;
        let t0 = Instant::now();
        let hist = |n: u64| {
            let mut h = vec![0; kpo_common::HIST_BUCKETS];
            h[40] = n;
            h
        };
        let mut held = None;
        let mut at = |secs: u64, read: Result<Vec<u64>, String>| {
            let mut s = sample(t0, secs, true, 0, 0, bpf(0, None));
            let b = s.bpf.as_mut().unwrap();
            b.runq_hist = hold_last_good(&mut held, read, "KPO_RUNQ_HIST", &mut b.failed_reads);
            s
        };
        let s0 = at(0, Ok(hist(500)));
        let s1 = at(1, Err("EIO".into()));
        let s2 = at(2, Ok(hist(520)));
        assert_eq!(s1.bpf.as_ref().unwrap().runq_hist, hist(500));
        let samples = |w: &Window| w.runq_latency.map(|l| l.samples);
        assert_eq!(samples(&tick_window(&s0, &s1)), None);
        assert_eq!(samples(&tick_window(&s1, &s2)), Some(20));
        let mut b = WindowBuilder::new(s0);
        b.push(s1);
        let (w, mut next) = b.finish_and_continue().unwrap();
        assert_eq!(samples(&w), None);
        next.push(s2);
        assert_eq!(samples(&next.finish().unwrap().0), Some(20));
        // Nothing read yet: nothing held, an empty histogram.
        let mut none: Option<Vec<u64>> = None;
        let mut failed = Vec::new();
        assert!(hold_last_good(&mut none, Err("EIO".into()), "x", &mut failed).is_empty());
        assert_eq!(failed, [("x".to_string(), "EIO".to_string())]);
    }

    /// A service whose index is given to another listener during the window keeps the requests
    /// it was timed at until then, and the new owner's requests are its own, not a change of
    /// the old owner's; back later on another index, it counts from 0 there.
    #[test]
    fn a_service_whose_index_is_reused_keeps_its_requests_and_lends_none() {
        let t0 = Instant::now();
        let key = |port| ListenerKey { port, ..KEY };
        let (old, new) = (key(80), key(81));
        let mut services = ServiceIndex::default();
        let mut slots = ReqSlots(vec![0; kpo_common::MAX_SERVICES as usize]);
        // Every index taken: `old` has index 0, the others the rest.
        let others: Vec<ListenerKey> = (1..kpo_common::MAX_SERVICES as u16)
            .map(|p| key(1000 + p))
            .collect();
        let all = |first: ListenerKey| [vec![first], others.clone()].concat();
        slots.update(&mut services, &all(old));
        slots.0[0] = 1000;
        let s0 = slots.sample(t0, 0, &services);
        slots.0[0] = 1010;
        let s1 = slots.sample(t0, 1, &services);
        // `old` is gone and `new` takes its index, zeroed.
        slots.update(&mut services, &all(new));
        slots.0[0] = 3;
        let s2 = slots.sample(t0, 2, &services);
        let mut b = WindowBuilder::new(s0.clone());
        b.push(s1.clone());
        b.push(s2.clone());
        let (w, _) = b.finish().unwrap();
        assert_eq!(
            requests_of(&w, old),
            Some(10),
            "timed before its index went"
        );
        assert_eq!(requests_of(&w, new), Some(3));

        // Back, `old` gets the only free index, the one `new` leaves, zeroed: from 0 there.
        slots.update(&mut services, &all(old));
        let s3 = slots.sample(t0, 3, &services);
        slots.0[0] = 7;
        let s4 = slots.sample(t0, 4, &services);
        let mut b = WindowBuilder::new(s2);
        b.push(s3);
        b.push(s4);
        let (w, _) = b.finish().unwrap();
        assert_eq!(requests_of(&w, old), Some(7));
        assert_eq!(requests_of(&w, new), None);
    }

    #[test]
    fn an_empty_builder_has_no_window() {
        let b = WindowBuilder::new(sample(Instant::now(), 0, false, 0, 0, bpf(0, None)));
        assert!(b.finish().is_none());
    }

    /// Defect (s46 storyJ F2): a namespace deleted and its inode given to a new one within a
    /// window (a pod restarted at once) lost the drops its dumps had counted in that window,
    /// from `listeners[]` and so from `kpo_listener_overflows_total`. They stay the inode's,
    /// beside the new one's, even where the new one's socket has the dead one's socket inode.
    #[test]
    fn a_namespace_that_dies_and_gives_its_inode_away_in_a_window_keeps_its_drops() {
        let t0 = Instant::now();
        let (key, read) = port_80_in_netns_7();
        let view = one_socket;
        for new_socket in [99, 1] {
            let mut carry = Carry::default();
            let mut sample = |secs, cookie, l| {
                in_netns_7(&mut carry, t0, secs, [(7, read)].into(), Some(cookie), l)
            };
            let s0 = sample(0, 70, [(key, view(1, 500))].into());
            let s1 = sample(1, 70, [(key, view(1, 504))].into());
            let s2 = sample(2, 71, [(key, view(new_socket, 3))].into());
            let s3 = sample(3, 71, [(key, view(new_socket, 5))].into());
            let mut b = WindowBuilder::new(s0);
            b.push(s1);
            b.push(s2);
            b.push(s3);
            let (w, _) = b.finish_and_continue().unwrap();
            assert_eq!(w.listeners[0].overflows, Some(4 + 5), "socket {new_socket}");
        }
        // The new one without that listener: the dead one's drops are still listed (the review).
        let mut carry = Carry::default();
        let mut sample =
            |secs, cookie, l| in_netns_7(&mut carry, t0, secs, [(7, read)].into(), Some(cookie), l);
        let s0 = sample(0, 70, [(key, view(1, 500))].into());
        let s1 = sample(1, 70, [(key, view(1, 504))].into());
        let s2 = sample(2, 71, BTreeMap::new());
        let mut b = WindowBuilder::new(s0);
        b.push(s1);
        b.push(s2);
        let (w, _) = b.finish_and_continue().unwrap();
        assert_eq!(w.listeners.len(), 1);
        assert_eq!(w.listeners[0].overflows, Some(4));
    }

    /// Port 80's listener in namespace 7, and a namespace read in full.
    fn port_80_in_netns_7() -> (ListenerKey, NetnsRead) {
        let key = ListenerKey {
            netns: 7,
            port: 80,
            family: kpo_common::AF_INET,
        };
        let read = NetnsRead {
            listeners: true,
            counters: true,
        };
        (key, read)
    }

    /// A listener of one socket (`inode`) that has dropped `drops`.
    fn one_socket(inode: u32, drops: u64) -> ListenerView {
        ListenerView {
            addresses: vec!["0.0.0.0".parse().unwrap()],
            depth: 0,
            limit: 128,
            drops,
            socket_drops: [(inode, drops)].into(),
            sockets: BTreeMap::new(),
            pid: None,
            comm: None,
            full: None,
        }
    }

    /// A sample `secs` after `t0` with namespace 7's state `ns`, its cookie and its listeners
    /// `l`, read through `carry` as the collector would.
    fn in_netns_7(
        carry: &mut Carry,
        t0: Instant,
        secs: u64,
        ns: BTreeMap<u64, NetnsRead>,
        cookie: Option<u64>,
        l: BTreeMap<ListenerKey, ListenerView>,
    ) -> Sample {
        let mut s = sample(t0, secs, false, 0, 0, ListenerBpf::default());
        s.bpf = None;
        let cookies: BTreeMap<u64, u64> = cookie.map(|c| (7, c)).into_iter().collect();
        s.readings = carry.update(s.at, s.wall, &ns, &cookies, &l);
        s.namespaces = ns;
        s.listeners = l;
        s
    }

    /// s63 story CM-1: a group of two sockets (an SO_REUSEPORT group: one `listen(8)`
    /// worker, one `listen(4096)`) of which the small one drops: the window names its limit and
    /// its owner, and the rules' view of the group is that socket.
    #[test]
    fn a_groups_dropping_socket_gives_its_limit_and_owner() {
        let t0 = Instant::now();
        let (key, read) = port_80_in_netns_7();
        let group = |small_drops: u64| {
            let mut v = one_socket(1, small_drops);
            v.socket_drops.insert(2, 0);
            v.drops = small_drops;
            v.limit = 4096;
            v.pid = Some(200);
            v.comm = Some("fast".into());
            let socket = |limit, pid: u32, comm: &str| crate::collect::SocketFacts {
                limit,
                pid: Some(pid),
                comm: Some(comm.into()),
            };
            v.sockets = [(1, socket(8, 100, "slow")), (2, socket(4096, 200, "fast"))].into();
            v
        };
        let mut carry = Carry::default();
        let mut sample = |secs, drops| {
            in_netns_7(&mut carry, t0, secs, [(7, read)].into(), Some(70), {
                [(key, group(drops))].into()
            })
        };
        let mut b = WindowBuilder::new(sample(0, 5));
        b.push(sample(10, 5));
        let (calm, mut b) = b.finish_and_continue().unwrap();
        assert_eq!(calm.listeners[0].dropping_limit, None);
        assert_eq!(calm.listeners[0].comm.as_deref(), Some("fast"));
        b.push(sample(20, 45));
        let (w, _) = b.finish_and_continue().unwrap();
        let l = &w.listeners[0];
        assert_eq!((l.overflows, l.backlog_limit), (Some(40), 4096));
        assert_eq!(l.dropping_limit, Some(8));
        assert_eq!((l.pid, l.comm.as_deref()), (Some(100), Some("slow")));
        let seen = w.by_dropping_socket();
        assert_eq!(seen.listeners[0].backlog_limit, 8);
        assert!(matches!(
            calm.by_dropping_socket(),
            std::borrow::Cow::Borrowed(_)
        ));
    }

    /// A namespace that died, and minutes later a new one given its inode (the kernel hands
    /// out the lowest free one): its listener is new, counts from 0, and its count does not
    /// reach back to the dead namespace's last dump. Cookies tell the two apart; where the
    /// kernel gives none (before 5.14) the inode is all there is.
    #[test]
    fn a_namespace_given_a_dead_ones_inode_counts_as_new() {
        let t0 = Instant::now();
        let (key, read) = port_80_in_netns_7();
        let view = one_socket;
        for (old_cookie, new_cookie, since_is_late) in
            [(Some(70), Some(71), false), (None, None, true)]
        {
            let mut carry = Carry::default();
            let mut sample = |secs, ns, cookie, l| in_netns_7(&mut carry, t0, secs, ns, cookie, l);
            let s0 = sample(
                0,
                [(7, read)].into(),
                old_cookie,
                [(key, view(1, 500))].into(),
            );
            // Unread for a tick, then gone for ten minutes.
            let s1 = sample(
                10,
                [(7, NetnsRead::default())].into(),
                old_cookie,
                BTreeMap::new(),
            );
            let s2 = sample(600, BTreeMap::new(), None, BTreeMap::new());
            let s3 = sample(
                610,
                [(7, read)].into(),
                new_cookie,
                [(key, view(99, 3))].into(),
            );
            let mut b = WindowBuilder::new(s0);
            b.push(s1);
            let (_, mut b) = b.finish_and_continue().unwrap();
            b.push(s2);
            let (_, mut b) = b.finish_and_continue().unwrap();
            b.push(s3);
            let (w, _) = b.finish_and_continue().unwrap();
            let l = &w.listeners[0];
            assert_eq!(l.overflows, Some(3));
            assert_eq!(l.overflows_since.is_some(), since_is_late, "{old_cookie:?}");

            // Given the inode at once: unread for a tick, then the new one, in one window.
            let mut carry_now = Carry::default();
            let mut at_once =
                |secs, ns, cookie, l| in_netns_7(&mut carry_now, t0, secs, ns, cookie, l);
            let s0 = at_once(
                0,
                [(7, read)].into(),
                old_cookie,
                [(key, view(1, 500))].into(),
            );
            let s1 = at_once(
                1,
                [(7, NetnsRead::default())].into(),
                old_cookie,
                BTreeMap::new(),
            );
            let s2 = at_once(
                2,
                [(7, read)].into(),
                new_cookie,
                [(key, view(99, 3))].into(),
            );
            let mut b = WindowBuilder::new(s0);
            b.push(s1);
            b.push(s2);
            let (w, _) = b.finish_and_continue().unwrap();
            assert_eq!(w.listeners[0].overflows, Some(3), "{old_cookie:?}");
        }
    }
}
