//! Request latency per listening port: from reading a request to writing its response on the same
//! TCP socket. Only accepted sockets of listeners that user space put in the service-port map are
//! timed.
//!
//! `sock_recv_length` and `sock_send_length` fire for every socket read and write on the host, so
//! each socket's verdict (timed or not, and for which service) is worked out once per sampling
//! period from its fields and kept in a slot keyed by the socket pointer. After that, an event
//! costs one inlined array lookup; only timed sockets read the clock. A slot is cleared when its
//! socket closes (`inet_sock_set_state` to TCP_CLOSE), so a freed socket's memory reused by
//! another socket never inherits the verdict; verdicts also expire with the sampling period,
//! since closes are not seen while the sensor is detached.
//!
//! A verdict also holds only while the listener set it was made from does, as far as it matters
//! to that verdict: a timed one until its index's generation is bumped (its listener left the
//! set, the index went to another), an untimed one until keys are added. So a listener coming
//! or going elsewhere on the host does not re-judge, and lose the pending request of, every
//! timed socket: that would drop the longest requests most often and bias the tail low.
//!
//! A socket that begins to listen is reported at once through the notable ring buffer, so that
//! user space can time its port from its first request instead of from the next tick.
use aya_ebpf::{
    macros::{map, raw_tracepoint},
    maps::{Array, HashMap, PerCpuArray},
    programs::RawTracePointContext,
};
use kpo_common::{
    bucket_of, slot_of, Hist, ListenerKey, NotableEvent, NotableKind, ServicePort, SockSlot,
    MAX_SERVICES, SOCK_SLOTS, SOCK_SLOT_BITS, TCP_CLOSE, TCP_LISTEN,
};

use crate::{
    accept_queue::NOTABLE,
    helpers::{
        now_ns, offsets, report, sample_start_ns, tcp_socket_key_and_state, untimed_generation,
        Exit,
    },
};

#[map(name = "KPO_SERVICE_PORTS")]
static SERVICE_PORTS: HashMap<ListenerKey, ServicePort> =
    HashMap::with_max_entries(MAX_SERVICES, 0);

#[map(name = "KPO_SERVICE_GENS")]
static SERVICE_GENERATIONS: Array<u32> = Array::with_max_entries(MAX_SERVICES, 0);

#[map(name = "KPO_SOCK_SLOTS")]
static SOCKS: Array<SockSlot> = Array::with_max_entries(SOCK_SLOTS, 0);

#[map(name = "KPO_REQ_HIST")]
static REQ_HIST: PerCpuArray<Hist> = PerCpuArray::with_max_entries(MAX_SERVICES, 0);

const MSG_PEEK: i32 = 2;

/// How long a request waiting for its response keeps its slot from another socket: 10 s. Only
/// requests slower than this can be evicted, and only by a collision.
const PENDING_HOLDS_SLOT_NS: u64 = 10_000_000_000;

/// TP_PROTO(struct sock *sk, int ret, int flags)
#[raw_tracepoint(tracepoint = "sock_recv_length")]
pub fn kpo_sock_recv(ctx: RawTracePointContext) -> i32 {
    let sk: u64 = ctx.arg(0);
    let ret: i32 = ctx.arg(1);
    let flags: i32 = ctx.arg(2);
    if ret < 0 || flags & MSG_PEEK != 0 {
        return 0;
    }
    let Some(slot) = SOCKS.get_ptr_mut(slot_of(sk, SOCK_SLOT_BITS)) else {
        return 0;
    };
    let slot = unsafe { &mut *slot };
    let period = sample_start_ns();
    let current = |slot: &SockSlot| slot.period == period && verdict_holds(slot);
    if slot.sk != sk || !current(slot) {
        if ret == 0 || sk == 0 {
            return 0;
        }
        // A socket does not evict another waiting for its response, timed or not: the longer a
        // request waits, the likelier another socket's read lands on its slot, so evicting would
        // drop the slow requests first and bias the tail low (s63 story CJ-1: at 6000
        // connections, 15% of the 200 ms requests went uncounted, 0.02% of the 2 ms ones). This
        // socket's request goes untimed instead, whatever its latency. Up to a bound: a socket
        // read from and never answered (a stream, a long poll) would hold its slot for as long
        // as it lives.
        if slot.sk != 0
            && slot.pending_ns != 0
            && current(slot)
            && now_ns().saturating_sub(slot.pending_ns) < PENDING_HOLDS_SLOT_NS
        {
            return 0;
        }
        // Read before the lookup: keys added after it bump it, so an untimed verdict made from
        // a lookup that just missed a new key is stale once that bump is written.
        let untimed = untimed_generation();
        let (service, generation) = match service_of(sk as *const u8) {
            Ok(Some(port)) => (port.index + 1, port.generation),
            Ok(None) => (0, untimed),
            Err(exit) => {
                report(&ctx, "sock_recv_length", exit);
                (0, untimed)
            }
        };
        *slot = SockSlot {
            sk,
            period,
            pending_ns: 0,
            service,
            generation,
        };
    }
    if slot.service == 0 {
        return 0;
    }
    if ret == 0 {
        // The peer closed: no response will follow.
        slot.pending_ns = 0;
    } else if slot.pending_ns == 0 {
        // A request read in several pieces is timed from its first piece.
        slot.pending_ns = now_ns();
    }
    0
}

/// Whether `slot`'s verdict was made under the generation still current for it: its index's
/// when timed, the untimed one otherwise.
#[inline(always)]
fn verdict_holds(slot: &SockSlot) -> bool {
    match slot.service {
        0 => slot.generation == untimed_generation(),
        service => SERVICE_GENERATIONS
            .get(service - 1)
            .is_some_and(|&generation| generation == slot.generation),
    }
}

/// The entry of the timed listener this socket was accepted from, if any.
#[inline(always)]
fn service_of(sk: *const u8) -> Result<Option<ServicePort>, Exit> {
    let (key, state) = tcp_socket_key_and_state(sk, &offsets())?;
    // A socket already closed (reset, timed out) can still be read from, but its close has been
    // seen: a verdict cached now would outlive it and pass to whatever reuses its memory.
    if state == TCP_CLOSE {
        return Ok(None);
    }
    match unsafe { SERVICE_PORTS.get(key) } {
        Some(&port) if port.index < MAX_SERVICES => Ok(Some(port)),
        // User space hands out indices below MAX_SERVICES only.
        Some(port) => Err(Exit::Unexpected(port.index)),
        None => Ok(None),
    }
}

/// TP_PROTO(struct sock *sk, int ret, int flags)
#[raw_tracepoint(tracepoint = "sock_send_length")]
pub fn kpo_sock_send(ctx: RawTracePointContext) -> i32 {
    let sk: u64 = ctx.arg(0);
    let ret: i32 = ctx.arg(1);
    if ret <= 0 {
        return 0;
    }
    let Some(slot) = SOCKS.get_ptr_mut(slot_of(sk, SOCK_SLOT_BITS)) else {
        return 0;
    };
    let slot = unsafe { &mut *slot };
    // A read on another CPU may rewrite the slot while this runs (no lock: this is a hot path).
    // The fields the sample is made of are loaded once, so that what was checked is what is
    // used, and an untimed verdict beside another request's start (never written together) is a
    // lost sample, no error (s64 story CP-3: logged as `sock_send_length: unexpected value 0`
    // under loopback load; review2 R2-11: a second load of `service` after the checks).
    let service = unsafe { core::ptr::read_volatile(&slot.service) };
    let pending_ns = unsafe { core::ptr::read_volatile(&slot.pending_ns) };
    if slot.sk != sk
        || pending_ns == 0
        || service == 0
        || slot.period != sample_start_ns()
        || !verdict_holds(slot)
    {
        return 0;
    }
    let elapsed = now_ns().saturating_sub(pending_ns);
    slot.pending_ns = 0;
    match REQ_HIST.get_ptr_mut(service.wrapping_sub(1)) {
        Some(hist) => {
            if let Some(count) = unsafe { (*hist).buckets.get_mut(bucket_of(elapsed)) } {
                *count += 1;
            }
        }
        // A verdict is an index below MAX_SERVICES plus one.
        None => report(&ctx, "sock_send_length", Exit::Unexpected(service)),
    }
    0
}

/// TP_PROTO(const struct sock *sk, const int oldstate, const int newstate)
#[raw_tracepoint(tracepoint = "inet_sock_set_state")]
pub fn kpo_sock_closed(ctx: RawTracePointContext) -> i32 {
    let new: i32 = ctx.arg(2);
    if new == TCP_LISTEN as i32 {
        report_listening(&ctx, ctx.arg(0));
        return 0;
    }
    if new != TCP_CLOSE as i32 {
        return 0;
    }
    let sk: u64 = ctx.arg(0);
    if let Some(slot) = SOCKS.get_ptr_mut(slot_of(sk, SOCK_SLOT_BITS)) {
        unsafe {
            if (*slot).sk == sk {
                (*slot).sk = 0;
            }
        }
    }
    0
}

/// Tells user space at once that a TCP socket began to listen, so that its port is timed from its
/// first request rather than from the next tick whose listener discovery lists it (s53 story AK
/// F3: a new service's first tick of requests was never counted). The state is set before the
/// kernel takes an unbound socket's port: such a listener (port 0 here) waits for the tick.
#[inline(always)]
fn report_listening(ctx: &RawTracePointContext, sk: u64) {
    let key = match tcp_socket_key_and_state(sk as *const u8, &offsets()) {
        Ok((key, _)) if key.port != 0 => key,
        Ok(_) | Err(Exit::Skip) => return,
        Err(exit) => {
            report(ctx, "inet_sock_set_state", exit);
            return;
        }
    };
    if let Some(mut entry) = NOTABLE.reserve::<NotableEvent>(0) {
        entry.write(NotableEvent {
            kind: NotableKind::Listening as u32,
            backlog: 0,
            backlog_limit: 0,
            _pad: 0,
            key,
            ts_ns: now_ns(),
        });
        entry.submit(0);
    }
    // A full ring loses only the head start: the next tick's discovery times the port. Not
    // counted in NOTABLE_LOST, which counts the full accept queues not told (`listener_full_lost`).
}
