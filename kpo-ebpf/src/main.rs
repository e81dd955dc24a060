//! KPO's eBPF programs. Every hook is a raw tracepoint (cheaper dispatch than a classic one, see
//! DESIGN.md) and reads its arguments through struct offsets taken from the running kernel's BTF.
//! Everything is aggregated here; user space reads the maps once per tick.
#![no_std]
#![no_main]

mod accept_queue;
mod helpers;
mod irq;
mod request_latency;
mod sched;
mod sysctl_watch;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
