//! Sensors: the eBPF programs, gated on what the running kernel offers, attached as raw
//! tracepoints, with the high-rate ones duty-cycled.
//!
//! Everything the agent knows about a sensor is one row of [`SENSORS`]: its name, its programs and
//! their tracepoints, whether it is duty-cycled, and the BTF fields its programs read. Why a sensor
//! is off is an [`OffReason`], rendered as text in the `sensors` event (kunai's `compat.rs` keeps
//! the same kind of per-program table).
mod attached_time;
pub mod btf;
pub mod ebpf_log;
mod loader;
pub mod sysctl_watch;

#[cfg(test)]
pub(crate) use loader::EBPF_OBJECT;
pub use loader::{SensorOptions, Sensors};

use kpo_common::*;
use serde::{Serialize, Serializer};

/// A group of programs switched on and off together.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SensorKind {
    AcceptQueue,
    SynackRetrans,
    Irq,
    Softirq,
    Napi,
    Sched,
    RequestLatency,
}

/// A kernel struct field a program reads, resolved from BTF into [`KernelOffsets`].
#[derive(Clone, Copy)]
pub struct Field {
    /// As the `sensors` event names it when missing.
    pub name: &'static str,
    pub offset: fn(&KernelOffsets) -> u32,
}

impl std::fmt::Debug for Field {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name)
    }
}

const SK_FAMILY: Field = Field {
    name: "sock.skc_family",
    offset: |o| o.sk_family,
};
const SK_NUM: Field = Field {
    name: "sock.skc_num",
    offset: |o| o.sk_num,
};
const SK_NET: Field = Field {
    name: "sock.skc_net",
    offset: |o| o.sk_net,
};
const NET_INUM: Field = Field {
    name: "net.ns.inum",
    offset: |o| o.net_inum,
};
const SK_PROTOCOL: Field = Field {
    name: "sock.sk_protocol",
    offset: |o| o.sk_protocol,
};
const SK_STATE: Field = Field {
    name: "sock.skc_state",
    offset: |o| o.sk_state,
};
const SK_ACK_BACKLOG: Field = Field {
    name: "sock.sk_ack_backlog",
    offset: |o| o.sk_ack_backlog,
};
const SK_MAX_ACK_BACKLOG: Field = Field {
    name: "sock.sk_max_ack_backlog",
    offset: |o| o.sk_max_ack_backlog,
};
const NAPI_DEV: Field = Field {
    name: "napi_struct.dev",
    offset: |o| o.napi_dev,
};
const DEV_IFINDEX: Field = Field {
    name: "net_device.ifindex",
    offset: |o| o.dev_ifindex,
};
const DEV_ND_NET: Field = Field {
    name: "net_device.nd_net.net",
    offset: |o| o.dev_nd_net,
};

/// A tracepoint argument a program reads that older kernels do not pass. The kernel refuses to
/// attach a raw tracepoint program that reads past its tracepoint's arguments, with a bare
/// EINVAL, so the sensor is switched off at load with this as the reason instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TracepointArg {
    pub tracepoint: &'static str,
    /// 0-based, as the program's `ctx.arg(n)` reads it.
    pub index: usize,
    pub name: &'static str,
    /// The first Linux release whose tracepoint passes it.
    pub since: &'static str,
}

/// Added to `sched_switch` in Linux 5.18 ("sched/tracing: Don't re-read p->state when emitting
/// sched_switch event").
const SCHED_SWITCH_PREV_STATE: TracepointArg = TracepointArg {
    tracepoint: "sched_switch",
    index: 3,
    name: "prev_state",
    since: "5.18",
};

/// One sensor's facts.
#[derive(Debug)]
pub struct SensorSpec {
    pub kind: SensorKind,
    /// As the configuration, the command line and the `sensors` event spell it.
    pub name: &'static str,
    /// (program, raw tracepoint) pairs, attached in this order.
    pub programs: &'static [(&'static str, &'static str)],
    /// Attached only for a fraction of each window (see [`SensorKind::duty_cycled`]).
    pub duty_cycled: bool,
    /// The BTF-resolved fields its programs read.
    pub fields: &'static [Field],
    /// Tracepoint arguments its programs read that not every supported kernel passes.
    pub args: &'static [TracepointArg],
}

/// Every sensor, one row each, in [`SensorKind`] order.
pub const SENSORS: [SensorSpec; 7] = [
    SensorSpec {
        kind: SensorKind::AcceptQueue,
        name: "accept_queue",
        programs: &[PROG_SOCK_SET_STATE],
        duty_cycled: true,
        fields: &[
            SK_FAMILY,
            SK_NUM,
            SK_NET,
            NET_INUM,
            SK_ACK_BACKLOG,
            SK_MAX_ACK_BACKLOG,
        ],
        args: &[],
    },
    SensorSpec {
        kind: SensorKind::SynackRetrans,
        name: "synack_retrans",
        programs: &[PROG_SYNACK_RETRANS],
        duty_cycled: false,
        fields: &[SK_FAMILY, SK_NUM, SK_NET, NET_INUM],
        args: &[],
    },
    SensorSpec {
        kind: SensorKind::Irq,
        name: "irq",
        programs: &[PROG_IRQ_ENTRY, PROG_IRQ_EXIT],
        duty_cycled: false,
        fields: &[],
        args: &[],
    },
    SensorSpec {
        kind: SensorKind::Softirq,
        name: "softirq",
        programs: &[PROG_SOFTIRQ_ENTRY, PROG_SOFTIRQ_EXIT],
        duty_cycled: true,
        fields: &[],
        args: &[],
    },
    SensorSpec {
        kind: SensorKind::Napi,
        name: "napi",
        programs: &[PROG_NAPI_POLL],
        duty_cycled: true,
        // The namespace too: an ifindex alone names a device only within its namespace.
        fields: &[NAPI_DEV, DEV_IFINDEX, DEV_ND_NET, NET_INUM],
        args: &[],
    },
    SensorSpec {
        kind: SensorKind::Sched,
        name: "sched",
        programs: &[PROG_SCHED_WAKEUP, PROG_SCHED_WAKEUP_NEW, PROG_SCHED_SWITCH],
        duty_cycled: true,
        // Run-queue latency keys waiting tasks by their task_struct pointer: no field read.
        fields: &[],
        args: &[SCHED_SWITCH_PREV_STATE],
    },
    SensorSpec {
        kind: SensorKind::RequestLatency,
        name: "request_latency",
        // The close hook first: a socket must not close unseen while recv and send run.
        programs: &[PROG_SOCK_CLOSED, PROG_SOCK_RECV, PROG_SOCK_SEND],
        duty_cycled: true,
        fields: &[SK_FAMILY, SK_NUM, SK_NET, NET_INUM, SK_PROTOCOL, SK_STATE],
        args: &[],
    },
];

impl SensorKind {
    pub const ALL: [SensorKind; 7] = [
        SensorKind::AcceptQueue,
        SensorKind::SynackRetrans,
        SensorKind::Irq,
        SensorKind::Softirq,
        SensorKind::Napi,
        SensorKind::Sched,
        SensorKind::RequestLatency,
    ];

    /// This sensor's row of [`SENSORS`].
    pub fn spec(self) -> &'static SensorSpec {
        &SENSORS[self as usize]
    }

    pub fn name(self) -> &'static str {
        self.spec().name
    }

    pub fn from_name(name: &str) -> Option<SensorKind> {
        SENSORS.iter().find(|s| s.name == name).map(|s| s.kind)
    }

    /// (program, raw tracepoint) pairs.
    pub fn programs(self) -> &'static [(&'static str, &'static str)] {
        self.spec().programs
    }

    /// High-rate sensors are attached only for a fraction of each window: a program that returns
    /// early still pays the dispatch, so detaching is the only way to save that cost. The accept
    /// queue's hook runs on every TCP state change (about ten per short connection), so it is
    /// duty-cycled too, but stays attached full time while a listener is under pressure.
    pub fn duty_cycled(self) -> bool {
        self.spec().duty_cycled
    }

    /// Names of the BTF-resolved offsets this sensor's programs read that are missing.
    pub fn missing_offsets(self, off: &KernelOffsets) -> Vec<&'static str> {
        self.spec()
            .fields
            .iter()
            .filter(|f| (f.offset)(off) == KernelOffsets::MISSING)
            .map(|f| f.name)
            .collect()
    }

    /// The first tracepoint argument this sensor's programs read that the kernel does not pass,
    /// given each tracepoint's argument count (`None`: unknown, and the attach decides).
    pub fn missing_arg(self, args_of: impl Fn(&str) -> Option<usize>) -> Option<TracepointArg> {
        self.spec()
            .args
            .iter()
            .copied()
            .find(|a| args_of(a.tracepoint).is_some_and(|n| n <= a.index))
    }
}

/// Why a sensor is off. Rendered as text (its `Display`) in the `sensors` event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OffReason {
    /// The operator listed it in `disabled_sensors` / `--disable-sensor`.
    #[error("disabled by configuration")]
    Disabled,
    /// A duty-cycled sensor with `duty_fraction` 0: never attached, so never loaded.
    #[error("duty_fraction is 0: never attached")]
    NeverSampled,
    /// The eBPF object could not be loaded at all (every sensor is off); the text says why.
    #[error("{0}")]
    ObjectNotLoaded(String),
    /// The eBPF object does not match this agent (a map is missing or of another type): a build
    /// defect, reported loudly at load rather than read as zeros every tick.
    #[error("the eBPF object does not match the agent: {0}")]
    ObjectMismatch(String),
    /// Kernel BTF lacks fields the programs read.
    #[error("kernel BTF lacks {}", .0.join(", "))]
    MissingFields(Vec<&'static str>),
    /// The BTF file could not be read at all: its own error.
    #[error("{0}")]
    BtfUnreadable(String),
    #[error("tracepoint {0} does not exist on this kernel")]
    NoTracepoint(&'static str),
    /// The tracepoint exists but does not pass an argument a program reads (an older kernel).
    #[error("{} has no {} before Linux {}", .0.tracepoint, .0.name, .0.since)]
    MissingTracepointArg(TracepointArg),
    #[error("program {0} missing from the eBPF object")]
    ProgramMissing(&'static str),
    /// The program exists but is not a raw tracepoint.
    #[error("program {program}: {error}")]
    WrongProgramType {
        program: &'static str,
        error: String,
    },
    /// EPERM, or the verifier's refusal of what it passes for root: a capability missing.
    #[error(
        "the kernel did not permit loading {program} ({error}): tracing programs need CAP_BPF \
         and CAP_PERFMON, or CAP_SYS_ADMIN (the start's log names what the agent lacks; a \
         seccomp filter refusing bpf(), such as systemd's SystemCallFilter=, and before Linux \
         5.11 a locked-memory limit too low, refuse the same way)"
    )]
    NotPermitted {
        program: &'static str,
        error: String,
    },
    #[error("the verifier rejected {program}: {error}")]
    Rejected {
        program: &'static str,
        error: String,
    },
    #[error("attaching {program} to {tracepoint} failed: {error}")]
    AttachFailed {
        program: &'static str,
        tracepoint: &'static str,
        error: String,
    },
}

/// What the `sensors` event says about one sensor.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SensorStatus {
    pub sensor: SensorKind,
    pub enabled: bool,
    pub duty_cycled: bool,
    /// Why it is off; absent when enabled.
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "reason_text"
    )]
    pub reason: Option<OffReason>,
}

fn reason_text<S: Serializer>(reason: &Option<OffReason>, s: S) -> Result<S::Ok, S::Error> {
    match reason {
        Some(r) => s.collect_str(r),
        None => s.serialize_none(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_rows_are_in_kind_order_with_unique_names() {
        for (i, kind) in SensorKind::ALL.into_iter().enumerate() {
            assert_eq!(SENSORS[i].kind, kind);
            assert_eq!(SensorKind::from_name(kind.name()), Some(kind));
        }
        assert_eq!(SensorKind::from_name("no_such_sensor"), None);
    }

    /// The table says what the three `match`es it replaced said.
    #[test]
    fn table_keeps_programs_duty_cycling_and_fields() {
        let duty: Vec<&str> = SENSORS
            .iter()
            .filter(|s| s.duty_cycled)
            .map(|s| s.name)
            .collect();
        assert_eq!(
            duty,
            [
                "accept_queue",
                "softirq",
                "napi",
                "sched",
                "request_latency"
            ]
        );
        assert_eq!(
            SensorKind::RequestLatency.programs(),
            &[PROG_SOCK_CLOSED, PROG_SOCK_RECV, PROG_SOCK_SEND]
        );
        let none = KernelOffsets::ALL_MISSING;
        assert_eq!(
            SensorKind::AcceptQueue.missing_offsets(&none),
            [
                "sock.skc_family",
                "sock.skc_num",
                "sock.skc_net",
                "net.ns.inum",
                "sock.sk_ack_backlog",
                "sock.sk_max_ack_backlog"
            ]
        );
        assert_eq!(
            SensorKind::RequestLatency.missing_offsets(&none),
            [
                "sock.skc_family",
                "sock.skc_num",
                "sock.skc_net",
                "net.ns.inum",
                "sock.sk_protocol",
                "sock.skc_state"
            ]
        );
        assert_eq!(
            SensorKind::Napi.missing_offsets(&none),
            [
                "napi_struct.dev",
                "net_device.ifindex",
                "net_device.nd_net.net",
                "net.ns.inum"
            ]
        );
        // A kernel without CONFIG_NET_NS (possible_net_t has no pointer) turns napi off, naming
        // the one field, rather than keying devices by an ifindex shared across namespaces.
        let mut no_net_ns = KernelOffsets::ALL_MISSING;
        no_net_ns.napi_dev = 8;
        no_net_ns.dev_ifindex = 16;
        no_net_ns.net_inum = 24;
        let missing = SensorKind::Napi.missing_offsets(&no_net_ns);
        assert_eq!(missing, ["net_device.nd_net.net"]);
        assert_eq!(
            OffReason::MissingFields(missing).to_string(),
            "kernel BTF lacks net_device.nd_net.net"
        );
        assert_eq!(
            SensorKind::SynackRetrans.missing_offsets(&none).len(),
            4,
            "the socket key's four fields"
        );
        for kind in [SensorKind::Irq, SensorKind::Softirq, SensorKind::Sched] {
            assert!(kind.missing_offsets(&none).is_empty(), "{kind:?}");
        }
        // Every field getter reads its own field: one found offset clears exactly one name.
        let mut one = KernelOffsets::ALL_MISSING;
        one.sk_state = 12;
        assert!(!SensorKind::RequestLatency
            .missing_offsets(&one)
            .contains(&"sock.skc_state"));
        assert_eq!(SensorKind::RequestLatency.missing_offsets(&one).len(), 5);
    }

    /// Each reason renders as the text the `sensors` event carried before reasons were typed.
    #[test]
    fn off_reasons_render_as_before() {
        let cases: [(OffReason, &str); 11] = [
            (OffReason::Disabled, "disabled by configuration"),
            (
                OffReason::ObjectNotLoaded(
                    "the eBPF object is empty (built with AYA_BUILD_SKIP=1)".into(),
                ),
                "the eBPF object is empty (built with AYA_BUILD_SKIP=1)",
            ),
            (
                OffReason::ObjectNotLoaded(
                    "loading the eBPF object failed: failed to create map KPO_CONFIG".into(),
                ),
                "loading the eBPF object failed: failed to create map KPO_CONFIG",
            ),
            (
                OffReason::MissingFields(vec!["napi_struct.dev", "net_device.ifindex"]),
                "kernel BTF lacks napi_struct.dev, net_device.ifindex",
            ),
            (
                OffReason::NoTracepoint("napi_poll"),
                "tracepoint napi_poll does not exist on this kernel",
            ),
            (
                OffReason::MissingTracepointArg(SCHED_SWITCH_PREV_STATE),
                "sched_switch has no prev_state before Linux 5.18",
            ),
            (
                OffReason::ProgramMissing("kpo_napi_poll"),
                "program kpo_napi_poll missing from the eBPF object",
            ),
            (
                OffReason::WrongProgramType {
                    program: "kpo_napi_poll",
                    error: "unexpected program type".into(),
                },
                "program kpo_napi_poll: unexpected program type",
            ),
            (
                OffReason::Rejected {
                    program: "kpo_sched_switch",
                    error: "the BPF_PROG_LOAD syscall failed".into(),
                },
                "the verifier rejected kpo_sched_switch: the BPF_PROG_LOAD syscall failed",
            ),
            (
                OffReason::NotPermitted {
                    program: "kpo_sched_switch",
                    error: "Operation not permitted (os error 1)".into(),
                },
                "the kernel did not permit loading kpo_sched_switch (Operation not permitted (os \
                 error 1)): tracing programs need CAP_BPF and CAP_PERFMON, or CAP_SYS_ADMIN (the \
                 start's log names what the agent lacks; a seccomp filter refusing bpf(), such \
                 as systemd's SystemCallFilter=, and before Linux 5.11 a locked-memory limit too \
                 low, refuse the same way)",
            ),
            (
                OffReason::AttachFailed {
                    program: "kpo_napi_poll",
                    tracepoint: "napi_poll",
                    error: "EBUSY".into(),
                },
                "attaching kpo_napi_poll to napi_poll failed: EBUSY",
            ),
        ];
        for (reason, text) in cases {
            assert_eq!(reason.to_string(), text);
            // And in the event, as a plain string under `reason`.
            let status = SensorStatus {
                sensor: SensorKind::Napi,
                enabled: false,
                duty_cycled: true,
                reason: Some(reason),
            };
            assert_eq!(
                serde_json::to_value(&status).unwrap(),
                serde_json::json!({
                    "sensor": "napi", "enabled": false, "duty_cycled": true, "reason": text
                })
            );
        }
        let on = SensorStatus {
            sensor: SensorKind::Irq,
            enabled: true,
            duty_cycled: false,
            reason: None,
        };
        assert_eq!(
            serde_json::to_value(&on).unwrap(),
            serde_json::json!({"sensor": "irq", "enabled": true, "duty_cycled": false})
        );
    }
}
