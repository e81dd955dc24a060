//! Run-queue latency (wake-up or preemption to switch-in) and context switches. Duty-cycled.
use aya_ebpf::{
    helpers::bpf_get_current_pid_tgid,
    macros::{map, raw_tracepoint},
    maps::{LruHashMap, PerCpuArray},
    programs::RawTracePointContext,
};
use kpo_common::{bucket_of, Hist};

use crate::kernel::{now_ns, offsets, read, sample_start_ns};

#[map(name = "KPO_WAKE_TS")]
static WAKE_TS: LruHashMap<u32, u64> = LruHashMap::with_max_entries(16384, 0);

#[map(name = "KPO_RUNQ_HIST")]
static RUNQ_HIST: PerCpuArray<Hist> = PerCpuArray::with_max_entries(1, 0);

#[map(name = "KPO_CSW")]
static CSW: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

const TASK_RUNNING: u32 = 0;

#[raw_tracepoint(tracepoint = "sched_wakeup")]
pub fn kpo_sched_wakeup(ctx: RawTracePointContext) -> i32 {
    let _ = record_runnable(ctx.arg(0));
    0
}

#[raw_tracepoint(tracepoint = "sched_wakeup_new")]
pub fn kpo_sched_wakeup_new(ctx: RawTracePointContext) -> i32 {
    let _ = record_runnable(ctx.arg(0));
    0
}

#[inline(always)]
fn record_runnable(task: *const u8) -> Result<(), i64> {
    let pid: i32 = read(task, offsets().task_pid)?;
    if pid == 0 {
        return Ok(());
    }
    let _ = WAKE_TS.insert(pid as u32, now_ns(), 0);
    Ok(())
}

/// TP_PROTO(bool preempt, struct task_struct *prev, struct task_struct *next, unsigned int prev_state)
#[raw_tracepoint(tracepoint = "sched_switch")]
pub fn kpo_sched_switch(ctx: RawTracePointContext) -> i32 {
    if let Some(c) = CSW.get_ptr_mut(0) {
        unsafe { *c += 1 };
    }
    let prev_state: u32 = ctx.arg(3);
    // A preempted task goes straight back to the run queue: its wait starts now. It is still
    // `current` here, so its pid costs no read of kernel memory.
    if prev_state == TASK_RUNNING {
        let pid = bpf_get_current_pid_tgid() as u32;
        if pid != 0 {
            let _ = WAKE_TS.insert(pid, now_ns(), 0);
        }
    }
    let _ = record_switch_in(ctx.arg(2));
    0
}

#[inline(always)]
fn record_switch_in(task: *const u8) -> Result<(), i64> {
    let pid: i32 = read(task, offsets().task_pid)?;
    // The idle task is never recorded as waiting: skip the lookup on every switch to idle.
    if pid == 0 {
        return Ok(());
    }
    let pid = pid as u32;
    let Some(ts) = (unsafe { WAKE_TS.get(pid) }).copied() else {
        return Ok(());
    };
    let _ = WAKE_TS.remove(pid);
    if ts < sample_start_ns() {
        return Ok(());
    }
    let bucket = bucket_of(now_ns().saturating_sub(ts)) as u32;
    if let Some(hist) = RUNQ_HIST.get_ptr_mut(0) {
        if let Some(slot) = unsafe { (*hist).buckets.get_mut(bucket as usize) } {
            *slot += 1;
        }
    }
    Ok(())
}
