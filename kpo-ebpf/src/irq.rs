//! Hard IRQ handlers (count and time per IRQ; low rate, always attached), softirq time per vector
//! and NAPI polls per device (high rate, duty-cycled).
use aya_ebpf::{
    macros::{map, raw_tracepoint},
    maps::{PerCpuArray, PerCpuHashMap},
    programs::RawTracePointContext,
};
use kpo_common::{IrqCounters, NapiCounters, SoftirqCounters, NR_SOFTIRQS};

use crate::kernel::{now_ns, offsets, read, sample_start_ns};

#[map(name = "KPO_IRQS")]
static IRQS: PerCpuHashMap<u32, IrqCounters> = PerCpuHashMap::with_max_entries(1024, 0);

#[map(name = "KPO_IRQ_START")]
static IRQ_START: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

#[map(name = "KPO_SOFTIRQS")]
static SOFTIRQS: PerCpuArray<SoftirqCounters> = PerCpuArray::with_max_entries(NR_SOFTIRQS, 0);

#[map(name = "KPO_SOFTIRQ_START")]
static SOFTIRQ_START: PerCpuArray<u64> = PerCpuArray::with_max_entries(NR_SOFTIRQS, 0);

#[map(name = "KPO_NAPI")]
static NAPI: PerCpuHashMap<u32, NapiCounters> = PerCpuHashMap::with_max_entries(1024, 0);

#[raw_tracepoint(tracepoint = "irq_handler_entry")]
pub fn kpo_irq_entry(_ctx: RawTracePointContext) -> i32 {
    if let Some(start) = IRQ_START.get_ptr_mut(0) {
        unsafe { *start = now_ns() };
    }
    0
}

#[raw_tracepoint(tracepoint = "irq_handler_exit")]
pub fn kpo_irq_exit(ctx: RawTracePointContext) -> i32 {
    let irq: i32 = ctx.arg(0);
    let Some(start) = IRQ_START.get_ptr_mut(0) else {
        return 0;
    };
    let started = unsafe { *start };
    if started == 0 {
        return 0;
    }
    unsafe { *start = 0 };
    let elapsed = now_ns().saturating_sub(started);
    let irq = irq as u32;
    match IRQS.get_ptr_mut(irq) {
        Some(c) => unsafe {
            (*c).count += 1;
            (*c).time_ns += elapsed;
        },
        None => {
            let _ = IRQS.insert(
                irq,
                IrqCounters {
                    count: 1,
                    time_ns: elapsed,
                },
                0,
            );
        }
    }
    0
}

#[raw_tracepoint(tracepoint = "softirq_entry")]
pub fn kpo_softirq_entry(ctx: RawTracePointContext) -> i32 {
    let vec: u32 = ctx.arg(0);
    if let Some(start) = SOFTIRQ_START.get_ptr_mut(vec) {
        unsafe { *start = now_ns() };
    }
    0
}

#[raw_tracepoint(tracepoint = "softirq_exit")]
pub fn kpo_softirq_exit(ctx: RawTracePointContext) -> i32 {
    let vec: u32 = ctx.arg(0);
    let Some(start) = SOFTIRQ_START.get_ptr_mut(vec) else {
        return 0;
    };
    let started = unsafe { *start };
    // An entry recorded before this sampling period began would count the detached time.
    if started == 0 || started < sample_start_ns() {
        return 0;
    }
    unsafe { *start = 0 };
    if let Some(c) = SOFTIRQS.get_ptr_mut(vec) {
        unsafe {
            (*c).count += 1;
            (*c).time_ns += now_ns().saturating_sub(started);
        }
    }
    0
}

#[raw_tracepoint(tracepoint = "napi_poll")]
pub fn kpo_napi_poll(ctx: RawTracePointContext) -> i32 {
    match try_napi_poll(&ctx) {
        Ok(v) | Err(v) => v as i32,
    }
}

fn try_napi_poll(ctx: &RawTracePointContext) -> Result<i64, i64> {
    let napi: *const u8 = ctx.arg(0);
    let work: i32 = ctx.arg(1);
    let budget: i32 = ctx.arg(2);
    let off = offsets();
    let dev: *const u8 = read(napi, off.napi_dev)?;
    // The per-CPU backlog (loopback, RPS) polls without a device: ifindex 0.
    let ifindex: u32 = if dev.is_null() {
        0
    } else {
        read::<i32>(dev, off.dev_ifindex)? as u32
    };
    let exhausted = (work >= budget) as u64;
    match NAPI.get_ptr_mut(ifindex) {
        Some(c) => unsafe {
            (*c).polls += 1;
            (*c).packets += work as u64;
            (*c).budget_exhausted += exhausted;
        },
        None => {
            let first = NapiCounters {
                polls: 1,
                packets: work as u64,
                budget_exhausted: exhausted,
            };
            let _ = NAPI.insert(ifindex, first, 0);
        }
    }
    Ok(0)
}
