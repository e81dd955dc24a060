//! Sysctl writes by other processes, seen by a `cgroup/sysctl` program on the root cgroup: how KPO
//! yields to people who change a parameter it manages.

/// `RingBuf` of [`SysctlWrite`].
pub const MAP_SYSCTL_WRITES: &str = "KPO_SYSCTL_WRITES";
/// The `cgroup/sysctl` program.
pub const PROG_SYSCTL_WATCH: &str = "kpo_sysctl_watch";

/// Room for a sysctl's full name (`net/ipv4/conf/<ifname>/...` fits with room to spare).
pub const SYSCTL_NAME_LEN: usize = 128;
/// Room for the written value; longer values arrive cut (`value_len` < 0 says so).
pub const SYSCTL_VALUE_LEN: usize = 64;

/// One write to a file under /proc/sys.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct SysctlWrite {
    /// Process (thread group) id of the writer.
    pub tgid: u32,
    /// Thread id of the writer.
    pub tid: u32,
    /// Length of `name` without its NUL, or a negative errno (-E2BIG: cut).
    pub name_len: i32,
    /// Length of `value` without its NUL, or a negative errno (-E2BIG: cut).
    pub value_len: i32,
    pub comm: [u8; 16],
    /// Slashed name as under /proc/sys (`net/core/somaxconn`), NUL-terminated.
    pub name: [u8; SYSCTL_NAME_LEN],
    /// The new value as written, NUL-terminated.
    pub value: [u8; SYSCTL_VALUE_LEN],
}

#[cfg(feature = "user")]
unsafe impl aya::Pod for SysctlWrite {}
