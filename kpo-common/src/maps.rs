//! Map keys and values, and the names of every map and program.

/// Global holding [`crate::KernelOffsets`].
pub const GLOBAL_OFFSETS: &str = "KPO_OFFSETS";

/// `Array<u64>` written by user space: see the `CONFIG_*` indices.
pub const MAP_CONFIG: &str = "KPO_CONFIG";
/// Index in [`MAP_CONFIG`]: monotonic ns at which the current sampling period of the duty-cycled
/// sensors began. State recorded before it (a wake-up, a pending request) is stale and ignored.
pub const CONFIG_SAMPLE_START_NS: u32 = 0;
/// Index in [`MAP_CONFIG`]: the current tick epoch, which picks the slot of each per-tick peak
/// (see [`ListenerCounters`]).
pub const CONFIG_EPOCH: u32 = 1;
/// The epoch user space writes at [`CONFIG_EPOCH`] when it takes the maps, before any program is
/// attached. Not 0: per-CPU values are created zeroed, on every CPU at once, so epoch 0 would
/// match the `slot_epoch` of CPUs that never enqueued (a false peak of 0 for the first tick) and
/// the zero `full_reported_epoch` of every new entry (no `listener_full` event in the first tick).
pub const FIRST_EPOCH: u64 = 1;
/// Index in [`MAP_CONFIG`]: the generation of "not timed" verdicts (service 0 in a [`SockSlot`]),
/// bumped by user space once keys are added to [`MAP_SERVICE_PORTS`], so that sockets judged
/// untimed under the old set are judged again. Timed verdicts have their own generation per
/// index ([`MAP_SERVICE_GENERATIONS`]): a change elsewhere in the set leaves them, and the
/// requests they are timing, alone.
pub const CONFIG_UNTIMED_GENERATION: u32 = 2;
pub const CONFIG_LEN: u32 = 3;

/// `LruPerCpuHashMap<ListenerKey, ListenerCounters>`.
pub const MAP_LISTENERS: &str = "KPO_LISTENERS";
/// `RingBuf` of [`NotableEvent`].
pub const MAP_NOTABLE: &str = "KPO_NOTABLE";
/// `PerCpuArray<u64>`, one entry: [`NotableEvent`]s that could not be sent because
/// [`MAP_NOTABLE`] was full (its reservation failed), so that a loss is counted, not silent.
pub const MAP_NOTABLE_LOST: &str = "KPO_NOTABLE_LOST";
/// `PerCpuHashMap<u32 irq, IrqCounters>`.
pub const MAP_IRQS: &str = "KPO_IRQS";
/// `PerCpuArray<u64>`: the entry time of the handler running on this CPU.
pub const MAP_IRQ_START: &str = "KPO_IRQ_START";
/// `PerCpuArray<SoftirqCounters>`, indexed by softirq vector.
pub const MAP_SOFTIRQS: &str = "KPO_SOFTIRQS";
/// `PerCpuArray<u64>`, indexed by softirq vector: entry time on this CPU.
pub const MAP_SOFTIRQ_START: &str = "KPO_SOFTIRQ_START";
/// `PerCpuArray<NapiTable>`, one entry: where NAPI polls are counted. One entry holding the
/// whole table, so user space reads it with one syscall per tick.
pub const MAP_NAPI_SLOTS: &str = "KPO_NAPI_SLOTS";
/// `PerCpuHashMap<NapiKey, NapiCounters>`: counts moved out of a [`MAP_NAPI_SLOTS`] entry that
/// another napi instance took over.
pub const MAP_NAPI: &str = "KPO_NAPI";
/// `Array<WaitSlot>` of [`WAIT_SLOTS`] entries, indexed by [`slot_of`] the task pointer: when
/// the task became runnable.
pub const MAP_WAIT_SLOTS: &str = "KPO_WAIT_SLOTS";
/// `PerCpuArray<Hist>`, one entry: run-queue latency.
pub const MAP_RUNQ_HIST: &str = "KPO_RUNQ_HIST";
/// `PerCpuArray<u64>`, one entry: context switches.
pub const MAP_CSW: &str = "KPO_CSW";
/// `HashMap<ListenerKey, ServicePort>` written by user space: listening ports whose requests are
/// timed, each with its index in [`MAP_REQ_HIST`] (below [`MAX_SERVICES`]) and that index's
/// generation when the key was inserted.
pub const MAP_SERVICE_PORTS: &str = "KPO_SERVICE_PORTS";
/// `Array<u32>` of [`MAX_SERVICES`] entries written by user space: each service index's current
/// generation. Bumped when the index's listener leaves the set (and again when the index is
/// handed to another), so that sockets of that listener stop writing under it; a verdict holds
/// while its index's generation is the one it was made under.
pub const MAP_SERVICE_GENERATIONS: &str = "KPO_SERVICE_GENS";
/// `Array<SockSlot>` of [`SOCK_SLOTS`] entries, indexed by [`slot_of`] the socket pointer.
pub const MAP_SOCK_SLOTS: &str = "KPO_SOCK_SLOTS";
/// `PerCpuArray<Hist>` of [`MAX_SERVICES`] entries: request latency per service index.
pub const MAP_REQ_HIST: &str = "KPO_REQ_HIST";

/// Programs, as (program name, tracepoint name). All are raw tracepoints.
pub const PROG_SOCK_SET_STATE: (&str, &str) = ("kpo_sock_set_state", "inet_sock_set_state");
pub const PROG_SYNACK_RETRANS: (&str, &str) = ("kpo_synack_retrans", "tcp_retransmit_synack");
pub const PROG_IRQ_ENTRY: (&str, &str) = ("kpo_irq_entry", "irq_handler_entry");
pub const PROG_IRQ_EXIT: (&str, &str) = ("kpo_irq_exit", "irq_handler_exit");
pub const PROG_SOFTIRQ_ENTRY: (&str, &str) = ("kpo_softirq_entry", "softirq_entry");
pub const PROG_SOFTIRQ_EXIT: (&str, &str) = ("kpo_softirq_exit", "softirq_exit");
pub const PROG_NAPI_POLL: (&str, &str) = ("kpo_napi_poll", "napi_poll");
pub const PROG_SCHED_WAKEUP: (&str, &str) = ("kpo_sched_wakeup", "sched_wakeup");
pub const PROG_SCHED_WAKEUP_NEW: (&str, &str) = ("kpo_sched_wakeup_new", "sched_wakeup_new");
pub const PROG_SCHED_SWITCH: (&str, &str) = ("kpo_sched_switch", "sched_switch");
pub const PROG_SOCK_RECV: (&str, &str) = ("kpo_sock_recv", "sock_recv_length");
pub const PROG_SOCK_SEND: (&str, &str) = ("kpo_sock_send", "sock_send_length");
pub const PROG_SOCK_CLOSED: (&str, &str) = ("kpo_sock_closed", "inet_sock_set_state");

pub const AF_INET: u16 = 2;
pub const AF_INET6: u16 = 10;
pub const IPPROTO_TCP: u16 = 6;
pub const TCP_LISTEN: u8 = 10;
pub const TCP_SYN_RECV: u8 = 3;
pub const TCP_CLOSE: u8 = 7;
pub const NR_SOFTIRQS: u32 = 10;

/// A listening socket: network namespace inode, local port, address family.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ListenerKey {
    pub netns: u32,
    pub port: u16,
    pub family: u16,
}

/// Per-CPU counters of one listener.
///
/// `enqueued` and `synack_retrans` only grow; user space takes differences. The peak depth uses two
/// slots chosen by the tick epoch (`CONFIG_EPOCH`): the kernel writes the slot of the current epoch,
/// user space advances the epoch and then reads the finished slot, so nothing has to be reset
/// between reading and writing. That does not make every peak seen: a program on another CPU
/// that read epoch e just before user space wrote e+1 can still write slot e&1 after user space
/// read it, and that peak is counted in no tick (two ticks later the slot is taken over for
/// e+2). The depth sock_diag reads at each tick covers part of it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct ListenerCounters {
    pub enqueued: u64,
    pub synack_retrans: u64,
    pub slot_epoch: [u64; 2],
    pub slot_max: [u32; 2],
    pub backlog_limit: u32,
    /// Epoch in which a "listener full" event was last sent, to send at most one per tick.
    pub full_reported_epoch: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct IrqCounters {
    /// Handler runs that ended (`irq_handler_exit`), timed or not.
    pub count: u64,
    /// The timed runs' total duration.
    pub time_ns: u64,
    /// Runs whose entry this CPU saw since its previous exit: not the one under way when the
    /// sensor attached, nor one a nested handler interrupted (its entry's time was taken by the
    /// nested one's exit).
    pub timed: u64,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct SoftirqCounters {
    pub count: u64,
    /// Total duration of the `timed` runs.
    pub time_ns: u64,
    /// Runs whose duration was measured: one in [`SOFTIRQ_TIME_EVERY`] per vector and CPU.
    pub timed: u64,
}

/// The softirq sensor times one run in this many of each vector on each CPU.
pub const SOFTIRQ_TIME_EVERY: u64 = 8;

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct NapiCounters {
    pub polls: u64,
    pub packets: u64,
    pub budget_exhausted: u64,
}

/// The device a napi instance polls for: an ifindex is unique only within its network namespace
/// (every new namespace numbers its devices from 1), so the namespace is part of the key.
/// `{ netns: 0, ifindex: 0 }` is the per-CPU backlog, which has no device and serves every
/// namespace.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NapiKey {
    /// The device's network namespace inode (`nd_net->ns.inum`).
    pub netns: u32,
    pub ifindex: u32,
}

impl NapiKey {
    pub const BACKLOG: NapiKey = NapiKey {
        netns: 0,
        ifindex: 0,
    };
}

/// Entries of [`MAP_WAIT_SLOTS`]: 2^12.
pub const WAIT_SLOT_BITS: u32 = 12;
pub const WAIT_SLOTS: u32 = 1 << WAIT_SLOT_BITS;
/// Entries of [`MAP_SOCK_SLOTS`]: 2^13.
pub const SOCK_SLOT_BITS: u32 = 13;
pub const SOCK_SLOTS: u32 = 1 << SOCK_SLOT_BITS;
/// Listening ports whose request latency can be timed at once.
pub const MAX_SERVICES: u32 = 128;

/// The slot of a kernel pointer in a table of `2^bits` entries (Fibonacci hashing).
///
/// The high-rate programs keep per-task and per-socket state in arrays indexed this way instead
/// of hash maps: an array lookup is inlined by the verifier, while a hash map costs helper calls
/// that this machine's return-stack mitigations make dear. Two live objects sharing a slot evict
/// each other, which loses a sample, never invents one: every entry stores its full key.
#[inline(always)]
pub fn slot_of(pointer: u64, bits: u32) -> u32 {
    (pointer.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - bits)) as u32
}

/// Entries of [`MAP_NAPI_SLOTS`] per CPU: 2^6; a CPU polls few napi instances.
pub const NAPI_SLOT_BITS: u32 = 6;
pub const NAPI_SLOTS: u32 = 1 << NAPI_SLOT_BITS;

/// A CPU's napi instances, at [`slot_of`] their pointer.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct NapiTable {
    pub slots: [NapiSlot; NAPI_SLOTS as usize],
}

impl Default for NapiTable {
    fn default() -> Self {
        Self {
            slots: [NapiSlot::default(); NAPI_SLOTS as usize],
        }
    }
}

/// One napi instance polled on this CPU, with its device and counts.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct NapiSlot {
    /// The `struct napi_struct *`; 0 when free.
    pub napi: u64,
    /// The sampling period in which `key` was last read (see [`SockSlot::period`]).
    pub period: u64,
    pub key: NapiKey,
    pub counters: NapiCounters,
}

/// A task waiting on a run queue.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct WaitSlot {
    /// The `struct task_struct *`; 0 when free.
    pub task: u64,
    pub since_ns: u64,
}

/// A timed listening port's entry in [`MAP_SERVICE_PORTS`].
///
/// The generation travels with the index, read in the same lookup, so a verdict made from an
/// entry that user space removes a moment later carries the generation from before the removal's
/// bump, and is stale as soon as that bump is written. Reading the index's generation after the
/// lookup instead could see the bumped one and keep the verdict of a listener already gone.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ServicePort {
    /// Index in [`MAP_REQ_HIST`] and [`MAP_SERVICE_GENERATIONS`], below [`MAX_SERVICES`].
    pub index: u32,
    /// [`MAP_SERVICE_GENERATIONS`]`[index]` when this entry was inserted.
    pub generation: u32,
}

/// What the request-latency sensor knows of one socket in the current sampling period.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct SockSlot {
    /// The `struct sock *`; 0 when free.
    pub sk: u64,
    /// The sampling period (its start, `CONFIG_SAMPLE_START_NS`) the verdict below belongs to:
    /// a verdict from an earlier period may describe a socket since freed and reused.
    pub period: u64,
    /// When the first piece of a request not yet answered was read; 0 if none.
    pub pending_ns: u64,
    /// Service index + 1 in [`MAP_REQ_HIST`], or 0: not an accepted socket of a timed listener.
    pub service: u32,
    /// The generation the verdict was made under: for `service` 0, `CONFIG_UNTIMED_GENERATION`
    /// (its low 32 bits) read before the lookup; else the [`ServicePort::generation`] found.
    pub generation: u32,
}

/// Kinds of [`NotableEvent`], explicitly numbered so both sides agree.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NotableKind {
    /// A listener's accept queue reached its limit.
    ListenerFull = 1,
    /// A TCP socket began to listen (`key`; `backlog` and `backlog_limit` are 0): its requests
    /// are timed from then, not from the next tick that lists it.
    Listening = 2,
}

/// A rare event sent at once through the ring buffer.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct NotableEvent {
    pub kind: u32,
    pub backlog: u32,
    pub backlog_limit: u32,
    pub _pad: u32,
    pub key: ListenerKey,
    pub ts_ns: u64,
}

#[cfg(feature = "user")]
mod pod {
    use super::*;
    unsafe impl aya::Pod for ListenerKey {}
    unsafe impl aya::Pod for ListenerCounters {}
    unsafe impl aya::Pod for IrqCounters {}
    unsafe impl aya::Pod for SoftirqCounters {}
    unsafe impl aya::Pod for NapiCounters {}
    unsafe impl aya::Pod for NapiKey {}
    unsafe impl aya::Pod for NotableEvent {}
    unsafe impl aya::Pod for WaitSlot {}
    unsafe impl aya::Pod for NapiSlot {}
    unsafe impl aya::Pod for NapiTable {}
    unsafe impl aya::Pod for SockSlot {}
    unsafe impl aya::Pod for ServicePort {}
}
