//! Kernel struct field offsets, resolved from the running kernel's BTF at start-up and handed to
//! the eBPF programs as load-time globals. Never constants: struct layouts change between builds.

/// Offsets in bytes. A value of `u32::MAX` means "not found": the sensors that need it are off.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KernelOffsets {
    /// `struct sock_common.skc_family` (u16), as seen from `struct sock`.
    pub sk_family: u32,
    /// `struct sock_common.skc_num` (u16, local port in host order).
    pub sk_num: u32,
    /// `struct sock_common.skc_state` (u8, the TCP state).
    pub sk_state: u32,
    /// `struct sock_common.skc_net` (a `struct net *`).
    pub sk_net: u32,
    /// `struct net.ns.inum` (u32): the network namespace inode number.
    pub net_inum: u32,
    /// `struct sock.sk_protocol` (u16).
    pub sk_protocol: u32,
    /// `struct sock.sk_ack_backlog` (u32): current accept-queue depth.
    pub sk_ack_backlog: u32,
    /// `struct sock.sk_max_ack_backlog` (u32): accept-queue limit.
    pub sk_max_ack_backlog: u32,
    /// `struct napi_struct.dev` (a `struct net_device *`).
    pub napi_dev: u32,
    /// `struct net_device.ifindex` (i32): unique only within the device's network namespace.
    pub dev_ifindex: u32,
    /// `struct net_device.nd_net.net` (a `struct net *`; `possible_net_t` has the pointer only
    /// with CONFIG_NET_NS): with [`Self::net_inum`], the device's namespace.
    pub dev_nd_net: u32,
}

impl KernelOffsets {
    pub const MISSING: u32 = u32::MAX;
    pub const ALL_MISSING: Self = Self {
        sk_family: Self::MISSING,
        sk_num: Self::MISSING,
        sk_state: Self::MISSING,
        sk_net: Self::MISSING,
        net_inum: Self::MISSING,
        sk_protocol: Self::MISSING,
        sk_ack_backlog: Self::MISSING,
        sk_max_ack_backlog: Self::MISSING,
        napi_dev: Self::MISSING,
        dev_ifindex: Self::MISSING,
        dev_nd_net: Self::MISSING,
    };
}

#[cfg(feature = "user")]
unsafe impl aya::Pod for KernelOffsets {}
