//! Request latency per listening port: from reading a request to writing its response on the same
//! TCP socket. Only sockets whose local (namespace, port, family) is a listener that user space put
//! in the service-port map are timed, so client sockets and unrelated traffic cost one lookup.
use aya_ebpf::{
    macros::{map, raw_tracepoint},
    maps::{HashMap, LruHashMap, PerCpuArray, PerCpuHashMap},
    programs::RawTracePointContext,
};
use kpo_common::{bucket_of, Hist, ListenerKey};

use crate::kernel::{now_ns, offsets, sample_start_ns, tcp_socket_key};

#[map(name = "KPO_SERVICE_PORTS")]
static SERVICE_PORTS: HashMap<ListenerKey, u32> = HashMap::with_max_entries(4096, 0);

#[map(name = "KPO_REQ_PENDING")]
static REQ_PENDING: LruHashMap<u64, u64> = LruHashMap::with_max_entries(65536, 0);

#[map(name = "KPO_REQ_HIST")]
static REQ_HIST: PerCpuHashMap<ListenerKey, Hist> = PerCpuHashMap::with_max_entries(4096, 0);

/// Never written: an all-zero histogram to insert from, since one does not fit on the BPF stack.
#[map(name = "KPO_ZERO_HIST")]
static ZERO_HIST: PerCpuArray<Hist> = PerCpuArray::with_max_entries(1, 0);

const MSG_PEEK: i32 = 2;

/// TP_PROTO(struct sock *sk, int ret, int flags)
#[raw_tracepoint(tracepoint = "sock_recv_length")]
pub fn kpo_sock_recv(ctx: RawTracePointContext) -> i32 {
    match try_sock_recv(&ctx) {
        Ok(v) | Err(v) => v as i32,
    }
}

fn try_sock_recv(ctx: &RawTracePointContext) -> Result<i64, i64> {
    let sk: *const u8 = ctx.arg(0);
    let ret: i32 = ctx.arg(1);
    let flags: i32 = ctx.arg(2);
    let id = sk as u64;
    if ret == 0 {
        // Peer closed: no response will follow.
        let _ = REQ_PENDING.remove(id);
        return Ok(0);
    }
    if ret < 0 || flags & MSG_PEEK != 0 {
        return Ok(0);
    }
    let key = tcp_socket_key(sk, &offsets())?;
    if unsafe { SERVICE_PORTS.get(key) }.is_none() {
        return Ok(0);
    }
    // A request read in several pieces is timed from its first piece, unless that piece predates
    // the current sampling period (the response may have gone out while we were detached).
    if let Some(&started) = unsafe { REQ_PENDING.get(id) } {
        if started >= sample_start_ns() {
            return Ok(0);
        }
    }
    let _ = REQ_PENDING.insert(id, now_ns(), 0);
    Ok(0)
}

#[raw_tracepoint(tracepoint = "sock_send_length")]
pub fn kpo_sock_send(ctx: RawTracePointContext) -> i32 {
    match try_sock_send(&ctx) {
        Ok(v) | Err(v) => v as i32,
    }
}

fn try_sock_send(ctx: &RawTracePointContext) -> Result<i64, i64> {
    let sk: *const u8 = ctx.arg(0);
    let ret: i32 = ctx.arg(1);
    if ret <= 0 {
        return Ok(0);
    }
    let id = sk as u64;
    let Some(&started) = (unsafe { REQ_PENDING.get(id) }) else {
        return Ok(0);
    };
    let _ = REQ_PENDING.remove(id);
    if started < sample_start_ns() {
        return Ok(0);
    }
    let elapsed = now_ns().saturating_sub(started);
    let key = tcp_socket_key(sk, &offsets())?;
    let bucket = bucket_of(elapsed);
    let hist = match REQ_HIST.get_ptr_mut(key) {
        Some(hist) => hist,
        None => {
            let zero = ZERO_HIST.get(0).ok_or(0)?;
            let _ = REQ_HIST.insert(key, zero, 0);
            REQ_HIST.get_ptr_mut(key).ok_or(0)?
        }
    };
    if let Some(slot) = unsafe { (*hist).buckets.get_mut(bucket) } {
        *slot += 1;
    }
    Ok(0)
}
