//! The cost floor of a raw tracepoint on this machine: an empty program (`r0 = 0; exit`) attached
//! to each hook the agent uses, measured by the same BPF statistics in the same pass. The kernel's
//! run time per event includes the statistics' own clock reads and, on CPUs with return-stack
//! mitigations, the thunked call into the program; this shows how much of a sensor's figure is
//! that floor and how much is its own work.
//!
//! Written against the raw `bpf(2)` syscall because aya loads programs only from ELF objects, and
//! a two-instruction program does not deserve a second eBPF build.
use std::{
    ffi::CString,
    os::fd::{FromRawFd, OwnedFd},
};

use anyhow::{Context, Result};

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_RAW_TRACEPOINT_OPEN: libc::c_long = 17;
const BPF_PROG_TYPE_RAW_TRACEPOINT: u32 = 17;

/// The hooks the agent's programs attach to, with the name each floor program gets (15 bytes max).
pub const HOOKS: [(&str, &str); 11] = [
    ("inet_sock_set_state", "floor_set_state"),
    ("tcp_retransmit_synack", "floor_synack"),
    ("irq_handler_entry", "floor_irq_entry"),
    ("irq_handler_exit", "floor_irq_exit"),
    ("softirq_entry", "floor_softirq_e"),
    ("softirq_exit", "floor_softirq_x"),
    ("napi_poll", "floor_napi_poll"),
    ("sched_wakeup", "floor_wakeup"),
    ("sched_switch", "floor_switch"),
    ("sock_recv_length", "floor_sock_recv"),
    ("sock_send_length", "floor_sock_send"),
];

#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    // The kernel accepts a shorter attr when the rest would be zero; pad to what it reads.
    _rest: [u64; 12],
}

#[repr(C)]
struct RawTracepointOpenAttr {
    name: u64,
    prog_fd: u32,
    _pad: u32,
    _rest: [u64; 4],
}

/// Attached empty programs; dropping it detaches them.
pub struct Floor {
    _links: Vec<OwnedFd>,
}

/// Loads and attaches an empty program on every hook in `HOOKS`.
pub fn attach_all() -> Result<Floor> {
    let mut links = Vec::new();
    for (hook, name) in HOOKS {
        links.push(attach(hook, name)?);
    }
    Ok(Floor { _links: links })
}

fn attach(hook: &str, name: &str) -> Result<OwnedFd> {
    // r0 = 0; exit
    let insns: [u64; 2] = [u64::from_le_bytes([0xb7, 0, 0, 0, 0, 0, 0, 0]), 0x95];
    let license = CString::new("GPL")?;
    let mut attr = ProgLoadAttr {
        prog_type: BPF_PROG_TYPE_RAW_TRACEPOINT,
        insn_cnt: insns.len() as u32,
        insns: insns.as_ptr() as u64,
        license: license.as_ptr() as u64,
        ..Default::default()
    };
    attr.prog_name[..name.len()].copy_from_slice(name.as_bytes());
    let prog = bpf(BPF_PROG_LOAD, &attr)
        .with_context(|| format!("loading the empty program for {hook}"))?;
    let hook_c = CString::new(hook)?;
    let open = RawTracepointOpenAttr {
        name: hook_c.as_ptr() as u64,
        prog_fd: std::os::fd::AsRawFd::as_raw_fd(&prog) as u32,
        _pad: 0,
        _rest: [0; 4],
    };
    bpf(BPF_RAW_TRACEPOINT_OPEN, &open)
        .with_context(|| format!("attaching the empty program to {hook}"))
}

/// One `bpf(2)` command that returns a new descriptor.
fn bpf<T>(cmd: libc::c_long, attr: &T) -> std::io::Result<OwnedFd> {
    // SAFETY: `attr` is a fully initialized, zero-padded attribute struct of its declared size.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *const T,
            std::mem::size_of::<T>(),
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the kernel returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}
