//! Accept queue per listening socket: enqueues, peak depth per tick, limit, SYN-ACK retransmits.
//!
//! Always attached, and cheap because it runs per connection, not per packet: a listener's child
//! socket is born as a copy of the listener (`inet_csk_clone_lock`, traced by
//! `inet_sock_set_state` as LISTEN -> SYN_RECV), so the child carries the listener's namespace,
//! port, family, queue depth and limit at that instant, and joins the queue right after. The
//! obvious hook, `sk_data_ready`, fires on every data arrival of every socket and measurably cut
//! keep-alive throughput even when it returned at once (see `cargo xtask bench overhead`).
use aya_ebpf::{
    macros::{map, raw_tracepoint},
    maps::{LruPerCpuHashMap, PerCpuArray, RingBuf},
    programs::RawTracePointContext,
};
use kpo_common::{
    ListenerCounters, ListenerKey, NotableEvent, NotableKind, TCP_LISTEN, TCP_SYN_RECV,
};

use crate::helpers::{epoch, now_ns, offsets, read, report, socket_key, Exit};

/// 4096 is the least: the agent sizes it to the machine's CPUs at load
/// (`LISTENER_MAP_DECLARED` in kpo-agent/src/sensors/loader.rs must match).
#[map(name = "KPO_LISTENERS")]
static LISTENERS: LruPerCpuHashMap<ListenerKey, ListenerCounters> =
    LruPerCpuHashMap::with_max_entries(4096, 0);

#[map(name = "KPO_NOTABLE")]
pub(crate) static NOTABLE: RingBuf = RingBuf::with_byte_size(64 * 1024, 0);

/// Events [`NOTABLE`] had no room for. Per CPU, so counting one costs no atomic operation.
#[map(name = "KPO_NOTABLE_LOST")]
static NOTABLE_LOST: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// TP_PROTO(const struct sock *sk, const int oldstate, const int newstate)
#[raw_tracepoint(tracepoint = "inet_sock_set_state")]
pub fn kpo_sock_set_state(ctx: RawTracePointContext) -> i32 {
    // The states are arguments, not memory: every other transition leaves without a helper call.
    let old: i32 = ctx.arg(1);
    let new: i32 = ctx.arg(2);
    if old != TCP_LISTEN as i32 || new != TCP_SYN_RECV as i32 {
        return 0;
    }
    if let Err(exit) = try_sock_set_state(&ctx) {
        report(&ctx, "inet_sock_set_state", exit);
    }
    0
}

fn try_sock_set_state(ctx: &RawTracePointContext) -> Result<(), Exit> {
    let child: *const u8 = ctx.arg(0);
    let off = offsets();
    // LISTEN -> SYN_RECV is a TCP listener's child being cloned (MPTCP subflows are TCP too; SCTP
    // never enters SYN_RECV): no need to read the protocol.
    let key = socket_key(child, &off)?;
    // The copied depth is the listener's before this child is queued. Depth and limit are
    // adjacent u32s on current kernels: one read instead of two then.
    let (depth, limit) = if off.sk_max_ack_backlog == off.sk_ack_backlog + 4 {
        let pair: [u32; 2] = read(child, off.sk_ack_backlog)?;
        (pair[0], pair[1])
    } else {
        (
            read::<u32>(child, off.sk_ack_backlog)?,
            read::<u32>(child, off.sk_max_ack_backlog)?,
        )
    };
    let depth = depth + 1;
    let counters = counters_of(&key)?;
    // User space advances the epoch and then reads the finished slot. Read just before it
    // advanced, this epoch can be stale by the time the slot is written below, after user space
    // read it: that peak is dropped (the tick's sock_diag depth covers part of it). Rare, and
    // cheaper than any synchronisation with user space.
    let epoch = epoch();
    let slot = (epoch & 1) as usize;
    counters.enqueued += 1;
    counters.backlog_limit = limit;
    if counters.slot_epoch[slot] != epoch {
        counters.slot_epoch[slot] = epoch;
        counters.slot_max[slot] = depth;
    } else if depth > counters.slot_max[slot] {
        counters.slot_max[slot] = depth;
    }
    // The kernel drops a connection when the queue is already *above* the limit, so a depth at the
    // limit means the next connection may be lost: worth telling at once, once per tick per CPU.
    if depth >= limit && counters.full_reported_epoch != epoch as u32 {
        counters.full_reported_epoch = epoch as u32;
        if let Some(mut entry) = NOTABLE.reserve::<NotableEvent>(0) {
            entry.write(NotableEvent {
                kind: NotableKind::ListenerFull as u32,
                backlog: depth,
                backlog_limit: limit,
                _pad: 0,
                key,
                ts_ns: now_ns(),
            });
            entry.submit(0);
        } else if let Some(lost) = NOTABLE_LOST.get_ptr_mut(0) {
            // The ring is full (user space is not reading fast enough, or not at all).
            unsafe { *lost += 1 };
        }
    }
    Ok(())
}

#[raw_tracepoint(tracepoint = "tcp_retransmit_synack")]
pub fn kpo_synack_retrans(ctx: RawTracePointContext) -> i32 {
    if let Err(exit) = try_synack_retrans(&ctx) {
        report(&ctx, "tcp_retransmit_synack", exit);
    }
    0
}

fn try_synack_retrans(ctx: &RawTracePointContext) -> Result<(), Exit> {
    let sk: *const u8 = ctx.arg(0);
    let key = socket_key(sk, &offsets())?;
    let counters = counters_of(&key)?;
    counters.synack_retrans += 1;
    Ok(())
}

#[inline(always)]
fn counters_of(key: &ListenerKey) -> Result<&'static mut ListenerCounters, Exit> {
    if let Some(ptr) = LISTENERS.get_ptr_mut(key) {
        return Ok(unsafe { &mut *ptr });
    }
    // An LRU map evicts rather than refuse; an error here is the kernel's (memory).
    LISTENERS
        .insert(key, ListenerCounters::default(), 0)
        .map_err(|e| Exit::Full(e.into()))?;
    // Another CPU may have evicted it already: a lost event, not a failure.
    LISTENERS
        .get_ptr_mut(key)
        .map(|ptr| unsafe { &mut *ptr })
        .ok_or(Exit::Skip)
}
