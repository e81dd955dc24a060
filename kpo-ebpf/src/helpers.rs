//! Shared helpers: load-time offsets, the user-written config array, field reads, and the report
//! of a program's rare failures to the agent's log.
use aya_ebpf::{
    helpers::{bpf_ktime_get_ns, bpf_probe_read_kernel},
    macros::map,
    maps::Array,
    programs::RawTracePointContext,
    Global,
};
use aya_log_ebpf::{error, warn};
use kpo_common::{
    KernelOffsets, ListenerKey, CONFIG_EPOCH, CONFIG_LEN, CONFIG_SAMPLE_START_NS,
    CONFIG_UNTIMED_GENERATION, IPPROTO_TCP,
};

#[unsafe(no_mangle)]
pub static KPO_OFFSETS: Global<KernelOffsets> = Global::new(KernelOffsets::ALL_MISSING);

#[map(name = "KPO_CONFIG")]
pub static CONFIG: Array<u64> = Array::with_max_entries(CONFIG_LEN, 0);

#[inline(always)]
pub fn offsets() -> KernelOffsets {
    KPO_OFFSETS.load()
}

#[inline(always)]
pub fn now_ns() -> u64 {
    unsafe { bpf_ktime_get_ns() }
}

#[inline(always)]
pub fn config(index: u32) -> u64 {
    CONFIG.get(index).copied().unwrap_or(0)
}

#[inline(always)]
pub fn sample_start_ns() -> u64 {
    config(CONFIG_SAMPLE_START_NS)
}

/// Low 32 bits of `CONFIG_UNTIMED_GENERATION`.
#[inline(always)]
pub fn untimed_generation() -> u32 {
    config(CONFIG_UNTIMED_GENERATION) as u32
}

#[inline(always)]
pub fn epoch() -> u64 {
    config(CONFIG_EPOCH)
}

/// Why a program left before the end.
#[derive(Clone, Copy)]
pub enum Exit {
    /// Nothing to record for this event (not TCP, not a socket of interest): not a failure.
    Skip,
    /// `bpf_probe_read_kernel` failed, with this error.
    Read(i64),
    /// A table had no room for a new entry (the map update's error): its counts are lost.
    Full(i64),
    /// A value outside what the program was built for (an index past a table's end).
    Unexpected(u32),
}

/// Tells the agent's log why `hook` gave up, unless it simply had nothing to do. Only failures
/// reach aya-log's ring buffer, so a program that works never writes a record.
#[inline(always)]
pub fn report(ctx: &RawTracePointContext, hook: &str, exit: Exit) {
    match exit {
        Exit::Skip => {}
        Exit::Read(e) => warn!(ctx, "{}: reading kernel memory failed ({})", hook, e),
        Exit::Full(e) => warn!(
            ctx,
            "{}: table full, an entry was not recorded ({})", hook, e
        ),
        Exit::Unexpected(v) => error!(ctx, "{}: unexpected value {}", hook, v),
    }
}

/// Reads a `T` at `base + offset` in kernel memory.
#[inline(always)]
pub fn read<T>(base: *const u8, offset: u32) -> Result<T, Exit> {
    unsafe { bpf_probe_read_kernel(base.add(offset as usize) as *const T) }
        .map_err(|e| Exit::Read(e as i64))
}

/// The listener key and TCP state (`skc_state`) of a socket, if it is TCP.
#[inline(always)]
pub fn tcp_socket_key_and_state(
    sk: *const u8,
    off: &KernelOffsets,
) -> Result<(ListenerKey, u8), Exit> {
    let protocol: u16 = read(sk, off.sk_protocol)?;
    if protocol != IPPROTO_TCP {
        return Err(Exit::Skip);
    }
    let head = sock_head(sk, off, true)?;
    Ok((key_of(&head, off)?, head.state))
}

#[inline(always)]
pub fn socket_key(sk: *const u8, off: &KernelOffsets) -> Result<ListenerKey, Exit> {
    key_of(&sock_head(sk, off, false)?, off)
}

/// Bytes of `struct sock_common` read at once for [`sock_head`].
const SOCK_HEAD: usize = 64;

/// Fields of `struct sock_common`.
struct SockHead {
    family: u16,
    port: u16,
    net: *const u8,
    /// Only when asked for; 0 otherwise.
    state: u8,
}

#[inline(always)]
fn sock_head(sk: *const u8, off: &KernelOffsets, with_state: bool) -> Result<SockHead, Exit> {
    let fits = |offset: u32, size: usize| (offset as usize) + size <= SOCK_HEAD;
    // These fields sit in the first bytes of `sock_common` on every kernel we know: one read of
    // that head instead of one per field, since each read is a helper call.
    if fits(off.sk_family, 2)
        && fits(off.sk_num, 2)
        && fits(off.sk_net, 8)
        && (!with_state || fits(off.sk_state, 1))
    {
        let head: [u8; SOCK_HEAD] = read(sk, 0)?;
        let at = |offset: u32| unsafe { head.as_ptr().add(offset as usize) };
        unsafe {
            Ok(SockHead {
                family: core::ptr::read_unaligned(at(off.sk_family) as *const u16),
                port: core::ptr::read_unaligned(at(off.sk_num) as *const u16),
                net: core::ptr::read_unaligned(at(off.sk_net) as *const *const u8),
                state: if with_state { *at(off.sk_state) } else { 0 },
            })
        }
    } else {
        Ok(SockHead {
            family: read(sk, off.sk_family)?,
            port: read(sk, off.sk_num)?,
            net: read(sk, off.sk_net)?,
            state: if with_state {
                read(sk, off.sk_state)?
            } else {
                0
            },
        })
    }
}

#[inline(always)]
fn key_of(head: &SockHead, off: &KernelOffsets) -> Result<ListenerKey, Exit> {
    let netns: u32 = read(head.net, off.net_inum)?;
    Ok(ListenerKey {
        netns,
        port: head.port,
        family: head.family,
    })
}
