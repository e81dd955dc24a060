//! Hard IRQ handlers (count and time per IRQ; low rate, always attached), softirq time per vector
//! and NAPI polls per device (high rate, duty-cycled).
use aya_ebpf::{
    macros::{map, raw_tracepoint},
    maps::{PerCpuArray, PerCpuHashMap},
    programs::RawTracePointContext,
};
use kpo_common::{
    slot_of, IrqCounters, NapiCounters, NapiKey, NapiSlot, NapiTable, SoftirqCounters,
    NAPI_SLOT_BITS, NR_SOFTIRQS, SOFTIRQ_TIME_EVERY,
};

use crate::helpers::{now_ns, offsets, read, report, sample_start_ns, Exit};

/// 1024 is the least: the agent sizes it to the machine at load (`IRQ_MAP_DECLARED` in
/// kpo-agent/src/sensors/loader.rs must match).
#[map(name = "KPO_IRQS")]
static IRQS: PerCpuHashMap<u32, IrqCounters> = PerCpuHashMap::with_max_entries(1024, 0);

#[map(name = "KPO_IRQ_START")]
static IRQ_START: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

#[map(name = "KPO_SOFTIRQS")]
static SOFTIRQS: PerCpuArray<SoftirqCounters> = PerCpuArray::with_max_entries(NR_SOFTIRQS, 0);

#[map(name = "KPO_SOFTIRQ_START")]
static SOFTIRQ_START: PerCpuArray<u64> = PerCpuArray::with_max_entries(NR_SOFTIRQS, 0);

#[map(name = "KPO_NAPI_SLOTS")]
static NAPI_TABLE: PerCpuArray<NapiTable> = PerCpuArray::with_max_entries(1, 0);

#[map(name = "KPO_NAPI")]
static NAPI: PerCpuHashMap<NapiKey, NapiCounters> = PerCpuHashMap::with_max_entries(1024, 0);

#[raw_tracepoint(tracepoint = "irq_handler_entry")]
pub fn kpo_irq_entry(_ctx: RawTracePointContext) -> i32 {
    if let Some(start) = IRQ_START.get_ptr_mut(0) {
        unsafe { *start = now_ns() };
    }
    0
}

/// Counts handler runs, not interrupts: on a shared line the kernel runs each handler of the
/// line for one interrupt, with its own entry and exit, and which run is an interrupt's first
/// is not in the tracepoint's arguments. Every run is counted; only one whose entry left its
/// start here is timed. The start is one slot per CPU, so a run whose start was taken by another
/// exit (a nested handler's) is counted and not timed. Counting only timed runs lost runs of a
/// vsock line on a CI machine under load while no program missed a call.
#[raw_tracepoint(tracepoint = "irq_handler_exit")]
pub fn kpo_irq_exit(ctx: RawTracePointContext) -> i32 {
    let irq: i32 = ctx.arg(0);
    let started = match IRQ_START.get_ptr_mut(0) {
        Some(start) => unsafe {
            let started = *start;
            *start = 0;
            started
        },
        None => 0,
    };
    let (elapsed, timed) = if started == 0 {
        (0, 0)
    } else {
        (now_ns().saturating_sub(started), 1)
    };
    let irq = irq as u32;
    match IRQS.get_ptr_mut(irq) {
        Some(c) => unsafe {
            (*c).count += 1;
            (*c).time_ns += elapsed;
            (*c).timed += timed;
        },
        None => {
            let added = IRQS.insert(
                irq,
                IrqCounters {
                    count: 1,
                    time_ns: elapsed,
                    timed,
                },
                0,
            );
            if let Err(e) = added {
                report(&ctx, "irq_handler_exit", Exit::Full(e.into()));
            }
        }
    }
    0
}

#[raw_tracepoint(tracepoint = "softirq_entry")]
pub fn kpo_softirq_entry(ctx: RawTracePointContext) -> i32 {
    let vec: u32 = ctx.arg(0);
    let Some(c) = SOFTIRQS.get_ptr(vec) else {
        return 0;
    };
    // Only every SOFTIRQ_TIME_EVERY-th run of a vector on a CPU reads the clock: the clock read is
    // most of this sensor's cost, and the mean duration of a sample of runs times the exact count
    // estimates the time without bias.
    if unsafe { (*c).count } % SOFTIRQ_TIME_EVERY == 0 {
        if let Some(start) = SOFTIRQ_START.get_ptr_mut(vec) {
            unsafe { *start = now_ns() };
        }
    }
    0
}

#[raw_tracepoint(tracepoint = "softirq_exit")]
pub fn kpo_softirq_exit(ctx: RawTracePointContext) -> i32 {
    let vec: u32 = ctx.arg(0);
    let Some(c) = SOFTIRQS.get_ptr_mut(vec) else {
        // A vector past NR_SOFTIRQS: a kernel newer than this table.
        report(&ctx, "softirq_exit", Exit::Unexpected(vec));
        return 0;
    };
    unsafe { (*c).count += 1 };
    let Some(start) = SOFTIRQ_START.get_ptr_mut(vec) else {
        return 0;
    };
    let started = unsafe { *start };
    if started == 0 {
        return 0;
    }
    unsafe { *start = 0 };
    // An entry recorded before this sampling period began would count the detached time.
    if started < sample_start_ns() {
        return 0;
    }
    unsafe {
        (*c).time_ns += now_ns().saturating_sub(started);
        (*c).timed += 1;
    }
    0
}

/// TP_PROTO(struct napi_struct *napi, int work, int budget)
#[raw_tracepoint(tracepoint = "napi_poll")]
pub fn kpo_napi_poll(ctx: RawTracePointContext) -> i32 {
    if let Err(exit) = try_napi_poll(&ctx) {
        report(&ctx, "napi_poll", exit);
    }
    0
}

/// Counts go into a per-CPU slot keyed by the napi pointer, so the device's namespace and ifindex
/// are read from kernel memory once per napi instance and sampling period, not on every poll.
/// They are re-read each period (and every 65536 polls) because a napi_struct freed with its
/// device may be reused by another, and a device may move to another namespace.
fn try_napi_poll(ctx: &RawTracePointContext) -> Result<(), Exit> {
    let napi: u64 = ctx.arg(0);
    let work: i32 = ctx.arg(1);
    let budget: i32 = ctx.arg(2);
    let table = NAPI_TABLE.get_ptr_mut(0).ok_or(Exit::Skip)?;
    let slot = unsafe { &mut *table }
        .slots
        .get_mut(slot_of(napi, NAPI_SLOT_BITS) as usize)
        .ok_or(Exit::Skip)?;
    let period = sample_start_ns();
    let mut moved = Ok(());
    // Also every 65536 polls, for agents that never start a new period (duty fraction 1).
    if slot.napi != napi || slot.period != period || slot.counters.polls & 0xffff == 0xffff {
        let key = key_of(napi as *const u8)?;
        if slot.napi != napi || slot.key != key {
            moved = move_to_overflow(slot);
            slot.napi = napi;
            slot.key = key;
        }
        slot.period = period;
    }
    slot.counters.polls += 1;
    slot.counters.packets += work as u64;
    slot.counters.budget_exhausted += (work >= budget) as u64;
    moved
}

/// The device's namespace and ifindex: ifindex alone is ambiguous, each namespace numbers its
/// devices from 1.
#[inline(always)]
fn key_of(napi: *const u8) -> Result<NapiKey, Exit> {
    let off = offsets();
    let dev: *const u8 = read(napi, off.napi_dev)?;
    // The per-CPU backlog (loopback, RPS) polls without a device, for every namespace.
    if dev.is_null() {
        return Ok(NapiKey::BACKLOG);
    }
    let ifindex = read::<i32>(dev, off.dev_ifindex)? as u32;
    let net: *const u8 = read(dev, off.dev_nd_net)?;
    if net.is_null() {
        return Err(Exit::Unexpected(ifindex));
    }
    Ok(NapiKey {
        netns: read(net, off.net_inum)?,
        ifindex,
    })
}

/// Keeps the counts of the napi instance leaving `slot` (rare: another took its slot, or its
/// device changed), under its key in the overflow map. The slot is free for the newcomer
/// even when the overflow map is full (those counts are lost, and reported).
#[inline(always)]
fn move_to_overflow(slot: &mut NapiSlot) -> Result<(), Exit> {
    let moving = slot.counters;
    slot.counters = NapiCounters::default();
    if slot.napi == 0 || moving.polls == 0 {
        return Ok(());
    }
    match NAPI.get_ptr_mut(slot.key) {
        Some(c) => unsafe {
            (*c).polls += moving.polls;
            (*c).packets += moving.packets;
            (*c).budget_exhausted += moving.budget_exhausted;
        },
        None => {
            NAPI.insert(slot.key, moving, 0)
                .map_err(|e| Exit::Full(e.into()))?;
        }
    }
    Ok(())
}
