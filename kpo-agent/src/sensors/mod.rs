//! Sensors: the eBPF programs, gated on what the running kernel offers, attached as raw
//! tracepoints, with the high-rate ones duty-cycled.
pub mod btf;
mod loader;
pub mod sysctl_watch;

pub use loader::{SensorOptions, Sensors};

use kpo_common::*;
use serde::Serialize;

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

    pub fn name(self) -> &'static str {
        match self {
            SensorKind::AcceptQueue => "accept_queue",
            SensorKind::SynackRetrans => "synack_retrans",
            SensorKind::Irq => "irq",
            SensorKind::Softirq => "softirq",
            SensorKind::Napi => "napi",
            SensorKind::Sched => "sched",
            SensorKind::RequestLatency => "request_latency",
        }
    }

    pub fn from_name(name: &str) -> Option<SensorKind> {
        Self::ALL.into_iter().find(|k| k.name() == name)
    }

    /// (program, raw tracepoint) pairs.
    pub fn programs(self) -> &'static [(&'static str, &'static str)] {
        match self {
            SensorKind::AcceptQueue => &[PROG_SOCK_SET_STATE],
            SensorKind::SynackRetrans => &[PROG_SYNACK_RETRANS],
            SensorKind::Irq => &[PROG_IRQ_ENTRY, PROG_IRQ_EXIT],
            SensorKind::Softirq => &[PROG_SOFTIRQ_ENTRY, PROG_SOFTIRQ_EXIT],
            SensorKind::Napi => &[PROG_NAPI_POLL],
            SensorKind::Sched => &[PROG_SCHED_WAKEUP, PROG_SCHED_WAKEUP_NEW, PROG_SCHED_SWITCH],
            // The close hook first: a socket must not close unseen while recv and send run.
            SensorKind::RequestLatency => &[PROG_SOCK_CLOSED, PROG_SOCK_RECV, PROG_SOCK_SEND],
        }
    }

    /// High-rate sensors are attached only for a fraction of each window: a program that returns
    /// early still pays the dispatch, so detaching is the only way to save that cost. The accept
    /// queue's hook runs on every TCP state change (about ten per short connection), so it is
    /// duty-cycled too, but stays attached full time while a listener is under pressure.
    pub fn duty_cycled(self) -> bool {
        matches!(
            self,
            SensorKind::AcceptQueue
                | SensorKind::Softirq
                | SensorKind::Napi
                | SensorKind::Sched
                | SensorKind::RequestLatency
        )
    }

    /// Names of the BTF-resolved offsets this sensor's programs read that are missing.
    pub fn missing_offsets(self, off: &KernelOffsets) -> Vec<&'static str> {
        let sock = [
            ("sock.skc_family", off.sk_family),
            ("sock.skc_num", off.sk_num),
            ("sock.skc_net", off.sk_net),
            ("net.ns.inum", off.net_inum),
            ("sock.sk_protocol", off.sk_protocol),
        ];
        let socket_key = sock[..4].to_vec();
        let needed: Vec<(&'static str, u32)> = match self {
            SensorKind::AcceptQueue => {
                let mut v = socket_key.clone();
                v.extend([
                    ("sock.sk_ack_backlog", off.sk_ack_backlog),
                    ("sock.sk_max_ack_backlog", off.sk_max_ack_backlog),
                ]);
                v
            }
            SensorKind::SynackRetrans => socket_key,
            SensorKind::RequestLatency => {
                let mut v = sock.to_vec();
                v.push(("sock.skc_state", off.sk_state));
                v
            }
            SensorKind::Napi => {
                vec![
                    ("napi_struct.dev", off.napi_dev),
                    ("net_device.ifindex", off.dev_ifindex),
                ]
            }
            // Run-queue latency keys waiting tasks by their task_struct pointer: no field read.
            SensorKind::Irq | SensorKind::Softirq | SensorKind::Sched => vec![],
        };
        needed
            .into_iter()
            .filter(|(_, v)| *v == KernelOffsets::MISSING)
            .map(|(n, _)| n)
            .collect()
    }
}

/// What the `sensors` event says about one sensor.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SensorStatus {
    pub sensor: SensorKind,
    pub enabled: bool,
    pub duty_cycled: bool,
    /// Why it is off; absent when enabled.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}
