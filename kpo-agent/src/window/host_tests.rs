//! The window's `system` figures from the kernel's 32-bit per-CPU counters (softnet_stat,
//! /proc/softirqs, /proc/interrupts), which a window adds up tick by tick.
use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use super::{Window, WindowBuilder};
use crate::collect::{
    procfs::{
        interrupts::parse_interrupts, softirqs::parse_softirqs, HostSnapshot, Softnet, SoftnetCpu,
    },
    Sample,
};

const RANGE: u64 = 1 << 32;

/// A sample `secs` after `t0` with no sensor, whose host snapshot `host` fills in.
fn sample(t0: Instant, secs: u64, host: impl FnOnce(&mut HostSnapshot)) -> Sample {
    let at = t0 + Duration::from_secs(secs);
    let mut snapshot = HostSnapshot::empty(at);
    host(&mut snapshot);
    Sample {
        at,
        wall: time::OffsetDateTime::UNIX_EPOCH + Duration::from_secs(secs),
        bpf: None,
        listeners: BTreeMap::new(),
        netns: BTreeMap::new(),
        namespaces: BTreeMap::new(),
        readings: BTreeMap::new(),
        netns_readings: BTreeMap::new(),
        napi_devices: BTreeMap::new(),
        host: snapshot,
        duty_sampled: Duration::ZERO,
        accept_queue_sensor: false,
        accept_queue_attached: false,
        accept_queue_sampled: Duration::ZERO,
        synack_retrans_sensor: false,
        sched_sensor: false,
        untimed_ports: None,
    }
}

/// The window of `samples` (the first its baseline).
fn window(samples: impl IntoIterator<Item = Sample>) -> Window {
    let mut samples = samples.into_iter();
    let mut b = WindowBuilder::new(samples.next().unwrap());
    samples.for_each(|s| b.push(s));
    b.finish().unwrap().0
}

/// softnet_stat with the kernel's CPU ids, each CPU's `processed` given (32 bits, as printed).
fn softnet(processed: &[u64]) -> Softnet {
    let cpus = processed.iter().enumerate().map(|(cpu, &p)| SoftnetCpu {
        cpu: cpu as u32,
        processed: (p % RANGE) as u32,
        dropped: 0,
        time_squeeze: 0,
        received_rps: 0,
        flow_limit_count: 0,
    });
    Softnet {
        cpus: cpus.collect(),
        cpu_ids_from_kernel: true,
    }
}

/// Defect (review "observe" #3): the window compared each 32-bit counter between its first and
/// last readings. A CPU processing 1.5 million packets a second from 3e9 counts 2.7e9 in a
/// 30-minute window and ends at 1.4e9: a fall whose wrapped distance is over 2^31, taken for a
/// reset, so the CPU counted 0; one at 3 million a second wraps twice and loses 2^32. Tick by
/// tick, each counts its whole traffic.
#[test]
fn a_busy_cpu_s_softnet_count_over_a_long_window_counts_across_its_wraps() {
    let t0 = Instant::now();
    let w = window((0..=1800).map(|secs| {
        sample(t0, secs, |h| {
            h.softnet = Some(softnet(&[
                3_000_000_000 + 1_500_000 * secs,
                7 + 3_000_000 * secs,
            ]))
        })
    }));
    assert_eq!(w.duration_s, 1800.0);
    assert_eq!(
        w.system.softnet_processed_per_s,
        Some(1_500_000.0 + 3_000_000.0)
    );
    assert_eq!(w.system.softnet_dropped, Some(0));
}

/// The same for /proc/softirqs and /proc/interrupts lines: NET_RX at 2 million runs a second on
/// CPU 1 and an interrupt line at 1.5 million, over 30 minutes.
#[test]
fn busy_softirq_and_interrupt_counts_over_a_long_window_count_across_their_wraps() {
    let t0 = Instant::now();
    let w = window((0..=1800).map(|secs| {
        sample(t0, secs, |h| {
            let net_rx = (3_500_000_000 + 2_000_000 * secs) % RANGE;
            let rx_queue = (4_000_000_000 + 1_500_000 * secs) % RANGE;
            h.softirqs = Some(
                parse_softirqs(&format!(
                    "CPU0 CPU1\nTIMER: {} 0\nNET_RX: 0 {net_rx}\n",
                    1000 * secs
                ))
                .unwrap(),
            );
            h.interrupts = Some(
                parse_interrupts(&format!(
                    "CPU0 CPU1\n 24: 5 {rx_queue} PCI-MSI 1-edge eth0-rx-0\nLOC: {} 0 Local \
                     timer interrupts\n",
                    250 * secs
                ))
                .unwrap(),
            );
        })
    }));
    let softirqs = w.system.softirqs_per_s.unwrap();
    assert_eq!(
        (softirqs.get("NET_RX"), softirqs.get("TIMER")),
        (Some(&2_000_000.0), Some(&1000.0))
    );
    assert_eq!(w.system.interrupts_per_s, Some(1_500_000.0 + 250.0));
}

/// A read of softnet_stat that fails counts neither 0 nor twice: the next good one counts from
/// the last good one (across a wrap, here), whatever other files did. One that fails at the
/// window's end or start leaves the window's figure unknown, as for every other field.
#[test]
fn a_failed_read_mid_window_is_spanned_by_the_next_good_one() {
    let t0 = Instant::now();
    let reads = |failed: &[u64]| {
        let failed = failed.to_vec();
        (0..=6).map(move |secs| {
            sample(t0, secs, |h| {
                h.interrupts = Some(
                    parse_interrupts(&format!("CPU0\n 24: {} PCI-MSI x\n", 10 * secs)).unwrap(),
                );
                if !failed.contains(&secs) {
                    h.softnet = Some(softnet(&[RANGE - 250 + 100 * secs]));
                }
            })
        })
    };
    let rates = |w: Window| (w.system.softnet_processed_per_s, w.system.interrupts_per_s);
    assert_eq!(rates(window(reads(&[]))), (Some(100.0), Some(10.0)));
    assert_eq!(rates(window(reads(&[2]))), (Some(100.0), Some(10.0)));
    assert_eq!(
        rates(window(reads(&[2, 3, 5]))),
        (Some(100.0), Some(10.0)),
        "a run of failed reads, the counter wrapping in it"
    );
    assert_eq!(rates(window(reads(&[6]))), (None, Some(10.0)));
    assert_eq!(rates(window(reads(&[0]))), (None, Some(10.0)));
}
