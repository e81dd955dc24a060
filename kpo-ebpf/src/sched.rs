//! Run-queue latency (wake-up or preemption to switch-in) and context switches. Duty-cycled.
//!
//! Waiting tasks are keyed by their `task_struct` pointer, which every hook receives as an
//! argument, in an array of slots (see `kpo_common::slot_of`): no kernel memory is read and no
//! helper is called on a switch to a task that was not recorded, which is most of them.
use aya_ebpf::{
    helpers::bpf_get_current_pid_tgid,
    macros::{map, raw_tracepoint},
    maps::{Array, PerCpuArray},
    programs::RawTracePointContext,
};
use kpo_common::{bucket_of, slot_of, Hist, WaitSlot, WAIT_SLOTS, WAIT_SLOT_BITS};

use crate::helpers::{now_ns, sample_start_ns};

const TASK_RUNNING: u32 = 0;

#[map(name = "KPO_WAIT_SLOTS")]
static WAIT: Array<WaitSlot> = Array::with_max_entries(WAIT_SLOTS, 0);

#[map(name = "KPO_RUNQ_HIST")]
static RUNQ_HIST: PerCpuArray<Hist> = PerCpuArray::with_max_entries(1, 0);

/// This CPU's idle task (`struct task_struct *`), once seen.
#[map(name = "KPO_IDLE_TASK")]
static IDLE_TASK: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

#[map(name = "KPO_CSW")]
static CSW: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

#[raw_tracepoint(tracepoint = "sched_wakeup")]
pub fn kpo_sched_wakeup(ctx: RawTracePointContext) -> i32 {
    record_runnable(ctx.arg(0));
    0
}

#[raw_tracepoint(tracepoint = "sched_wakeup_new")]
pub fn kpo_sched_wakeup_new(ctx: RawTracePointContext) -> i32 {
    record_runnable(ctx.arg(0));
    0
}

#[inline(always)]
fn record_runnable(task: u64) {
    if let Some(slot) = WAIT.get_ptr_mut(slot_of(task, WAIT_SLOT_BITS)) {
        unsafe {
            // Another task still waiting keeps its slot, and this wait goes untimed: the longer
            // a task waits, the likelier another's wake-up lands on its slot, so evicting it
            // would drop the longest waits first and bias the tail low (the request sensor's
            // s63 story CJ-1). A wait from before this sampling period is stale: its switch-in
            // was not seen.
            let held = (*slot).task;
            if held != 0 && held != task && (*slot).since_ns >= sample_start_ns() {
                return;
            }
            // The time first: a reader on another CPU matches on `task`, then reads the time.
            (*slot).since_ns = now_ns();
            (*slot).task = task;
        }
    }
}

/// TP_PROTO(bool preempt, struct task_struct *prev, struct task_struct *next, unsigned int prev_state)
#[raw_tracepoint(tracepoint = "sched_switch")]
pub fn kpo_sched_switch(ctx: RawTracePointContext) -> i32 {
    if let Some(c) = CSW.get_ptr_mut(0) {
        unsafe { *c += 1 };
    }
    let preempt: u64 = ctx.arg(0);
    let prev: u64 = ctx.arg(1);
    let prev_state: u64 = ctx.arg(3);
    // A preempted task, or one leaving while still runnable (preemption on return to user space
    // is a plain schedule() with TASK_RUNNING), goes straight back to the run queue: its wait
    // starts now. A task that blocks forgets any wake-up recorded while it was still running
    // (a wake-up between prepare_to_wait and schedule), which would otherwise time its next wait
    // from then.
    if preempt & 0xff != 0 || prev_state as u32 == TASK_RUNNING {
        if !is_idle_task(prev) {
            record_runnable(prev);
        }
    } else {
        forget(prev);
    }
    record_switch_in(ctx.arg(2));
    0
}

/// Whether `task` is this CPU's idle task, which leaves in TASK_RUNNING on every wake-up of an
/// idle CPU and must not fill the slots. Learned once per CPU: the first time a runnable task
/// leaves, the current pid tells (the idle task is pid 0), and its pointer is kept.
#[inline(always)]
fn is_idle_task(task: u64) -> bool {
    let Some(idle) = IDLE_TASK.get_ptr_mut(0) else {
        return false;
    };
    unsafe {
        if *idle != 0 {
            return *idle == task;
        }
        if bpf_get_current_pid_tgid() as u32 == 0 {
            *idle = task;
            return true;
        }
    }
    false
}

#[inline(always)]
fn forget(task: u64) {
    if let Some(slot) = WAIT.get_ptr_mut(slot_of(task, WAIT_SLOT_BITS)) {
        unsafe {
            if (*slot).task == task {
                (*slot).task = 0;
            }
        }
    }
}

#[inline(always)]
fn record_switch_in(task: u64) {
    let Some(slot) = WAIT.get_ptr_mut(slot_of(task, WAIT_SLOT_BITS)) else {
        return;
    };
    let since = unsafe {
        if (*slot).task != task {
            return;
        }
        (*slot).task = 0;
        (*slot).since_ns
    };
    // A wait recorded before this sampling period began would count the detached time.
    if since < sample_start_ns() {
        return;
    }
    let bucket = bucket_of(now_ns().saturating_sub(since));
    if let Some(hist) = RUNQ_HIST.get_ptr_mut(0) {
        if let Some(count) = unsafe { (*hist).buckets.get_mut(bucket) } {
            *count += 1;
        }
    }
}
