//! `cgroup/sysctl` on the root cgroup: every write to /proc/sys by any process, so that KPO can
//! stop managing a parameter a person changed. It only watches: every access is allowed.
use aya_ebpf::{
    helpers::{
        bpf_get_current_comm, bpf_get_current_pid_tgid,
        generated::{bpf_sysctl_get_name, bpf_sysctl_get_new_value},
    },
    macros::{cgroup_sysctl, map},
    maps::RingBuf,
    programs::SysctlContext,
};
use kpo_common::sysctl_watch::{SysctlWrite, SYSCTL_NAME_LEN, SYSCTL_VALUE_LEN};

#[map(name = "KPO_SYSCTL_WRITES")]
static SYSCTL_WRITES: RingBuf = RingBuf::with_byte_size(64 * 1024, 0);

/// Allow the access (1); a program of this type that returned 0 would refuse it with EPERM.
const ALLOW: i32 = 1;

#[cgroup_sysctl]
pub fn kpo_sysctl_watch(ctx: SysctlContext) -> i32 {
    report_write(&ctx);
    ALLOW
}

fn report_write(ctx: &SysctlContext) {
    // SAFETY: the context is the kernel's `struct bpf_sysctl`, valid for this call.
    if unsafe { (*ctx.sysctl).write } == 0 {
        return;
    }
    // A full ring loses this report; user space also compares managed values with what it wrote.
    let Some(mut entry) = SYSCTL_WRITES.reserve::<SysctlWrite>(0) else {
        return;
    };
    let event = entry.as_mut_ptr();
    let pid_tgid = bpf_get_current_pid_tgid();
    // SAFETY: `event` points at reserved ring-buffer memory the size of `SysctlWrite`; the helpers
    // write at most the lengths given.
    unsafe {
        (*event).tgid = (pid_tgid >> 32) as u32;
        (*event).tid = pid_tgid as u32;
        (*event).comm = bpf_get_current_comm().unwrap_or([0; 16]);
        (*event).name_len = bpf_sysctl_get_name(
            ctx.sysctl,
            (*event).name.as_mut_ptr().cast(),
            SYSCTL_NAME_LEN as _,
            0,
        ) as i32;
        (*event).value_len = bpf_sysctl_get_new_value(
            ctx.sysctl,
            (*event).value.as_mut_ptr().cast(),
            SYSCTL_VALUE_LEN as _,
        ) as i32;
    }
    entry.submit(0);
}
