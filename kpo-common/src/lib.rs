//! Types shared by the eBPF programs (`kpo-ebpf`) and the agent (`kpo-agent`).
//!
//! Every type is `#[repr(C)]`, `Copy` and free of implicit padding, so the kernel and user space
//! agree on its layout byte for byte. Map and program names are exported as constants so that user
//! code never spells them twice.
#![no_std]

pub mod hist;
pub mod maps;
pub mod offsets;
pub mod sysctl_watch;

pub use hist::{bucket_lower_ns, bucket_of, Hist, HIST_BUCKETS};
pub use maps::*;
pub use offsets::KernelOffsets;
