//! The window's per-CPU softirq and context-switch figures, from the eBPF maps' per-CPU values,
//! through the duty cycle and failed reads, and against docs/events.schema.json.
use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use kpo_common::SoftirqCounters;

use super::{tick_window, CpuRate, SoftirqCpu, Window, WindowBuilder};
use crate::collect::{
    bpf_maps::{hold_last_good, BpfSnapshot, PerCpu},
    procfs::HostSnapshot,
    Sample,
};

const NET_RX: usize = 3;
const CPUS: usize = 4;

/// What the eBPF maps hold at one read: NET_RX's counters and the context switches, per CPU.
#[derive(Clone)]
struct Maps {
    net_rx: PerCpu<SoftirqCounters>,
    switches: PerCpu<u64>,
}

fn net_rx(per_cpu: [(u64, u64, u64); CPUS]) -> PerCpu<SoftirqCounters> {
    per_cpu
        .iter()
        .map(|&(count, time_ns, timed)| SoftirqCounters {
            count,
            time_ns,
            timed,
        })
        .collect()
}

/// A sample `secs` after `t0` whose tick was attached for `attached` seconds.
fn sample(t0: Instant, secs: u64, attached: u64, maps: &Maps) -> Sample {
    let at = t0 + Duration::from_secs(secs);
    let mut softirqs = vec![vec![SoftirqCounters::default(); CPUS]; 10];
    softirqs[NET_RX] = maps.net_rx.clone();
    Sample {
        at,
        wall: time::OffsetDateTime::UNIX_EPOCH + Duration::from_secs(secs),
        bpf: Some(BpfSnapshot {
            softirqs,
            context_switches: maps.switches.clone(),
            ..BpfSnapshot::default()
        }),
        listeners: BTreeMap::new(),
        netns: BTreeMap::new(),
        namespaces: BTreeMap::new(),
        readings: BTreeMap::new(),
        netns_readings: BTreeMap::new(),
        napi_devices: BTreeMap::new(),
        host: HostSnapshot::empty(at),
        duty_sampled: Duration::from_secs(attached),
        accept_queue_sensor: false,
        accept_queue_attached: false,
        accept_queue_sampled: Duration::ZERO,
        synack_retrans_sensor: false,
        sched_sensor: true,
        untimed_ports: None,
    }
}

/// The events' JSON Schema (docs/events.schema.json), compiled.
fn schema_validator() -> jsonschema::Validator {
    let schema: serde_json::Value =
        serde_json::from_str(include_str!("../../../docs/events.schema.json")).unwrap();
    jsonschema::validator_for(&schema).unwrap()
}

/// `w` as the `window` event's JSON.
fn event(w: &Window) -> serde_json::Value {
    use crate::output::events::{encode, Event};
    let e = Event::Window {
        partial: false,
        window: Box::new(w.clone()),
    };
    let line = encode(&e, "host", time::OffsetDateTime::UNIX_EPOCH);
    serde_json::from_slice::<serde_json::Value>(&line).unwrap()
}

fn net_rx_of(w: &Window) -> Option<&super::SoftirqWindow> {
    w.softirqs.iter().find(|s| s.vector == "NET_RX")
}

fn cpu_counts(w: &Window) -> Vec<(u32, u64)> {
    net_rx_of(w).map_or(Vec::new(), |s| {
        s.per_cpu.iter().map(|c| (c.cpu, c.count)).collect()
    })
}

/// Baseline, a sampled tick, an unsampled one (detached: the maps do not move), a sampled one.
/// CPU 1 ran no NET_RX and CPU 3 switched no context: both are left out.
fn four_samples(t0: Instant) -> Vec<Sample> {
    let at = |counts, switches| Maps {
        net_rx: net_rx(counts),
        switches,
    };
    let read0 = at(
        [(100, 0, 0), (5, 0, 0), (0, 0, 0), (1, 0, 0)],
        vec![10, 0, 10, 0],
    );
    let read1 = at(
        [(900, 25_000, 100), (5, 0, 0), (0, 0, 0), (1, 0, 0)],
        vec![210, 50, 10, 0],
    );
    let read3 = at(
        [(1700, 50_000, 200), (5, 0, 0), (7, 0, 0), (17, 8_000, 2)],
        vec![410, 50, 70, 0],
    );
    vec![
        sample(t0, 0, 0, &read0),
        sample(t0, 1, 1, &read1),
        sample(t0, 2, 0, &read1),
        sample(t0, 3, 1, &read3),
    ]
}

#[test]
fn each_cpu_counts_its_own_runs_over_the_sampled_ticks_and_idle_cpus_are_left_out() {
    let samples = four_samples(Instant::now());
    let mut b = WindowBuilder::new(samples[0].clone());
    for s in &samples[1..] {
        b.push(s.clone());
    }
    let (w, _) = b.finish().unwrap();
    assert_eq!(w.sampled_fraction, 2.0 / 3.0);
    let rx = net_rx_of(&w).expect("NET_RX ran");
    assert_eq!(rx.count, 1623);
    assert_eq!(
        rx.per_cpu,
        [
            // 1600 runs, 200 timed at 250 ns: 400 µs.
            SoftirqCpu {
                cpu: 0,
                count: 1600,
                time_us: Some(400.0)
            },
            // 7 runs, none timed: unknown, not zero.
            SoftirqCpu {
                cpu: 2,
                count: 7,
                time_us: None
            },
            // 16 runs, 2 timed at 4 µs: 64 µs.
            SoftirqCpu {
                cpu: 3,
                count: 16,
                time_us: Some(64.0)
            },
        ]
    );
    assert_eq!(rx.per_cpu.iter().map(|c| c.count).sum::<u64>(), rx.count);
    // Per second of sampling (2 s), like the total.
    assert_eq!(w.sampled_context_switches_per_s, Some(255.0));
    assert_eq!(
        w.sampled_context_switches_per_cpu_per_s,
        Some(vec![
            CpuRate {
                cpu: 0,
                per_s: 200.0
            },
            CpuRate {
                cpu: 1,
                per_s: 25.0
            },
            CpuRate {
                cpu: 2,
                per_s: 30.0
            },
        ])
    );

    // The window's counts are the sums of its ticks' counts, CPU by CPU.
    let mut summed: BTreeMap<u32, u64> = BTreeMap::new();
    for pair in samples.windows(2) {
        for (cpu, n) in cpu_counts(&tick_window(&pair[0], &pair[1])) {
            *summed.entry(cpu).or_default() += n;
        }
    }
    assert_eq!(cpu_counts(&w), summed.into_iter().collect::<Vec<_>>());
}

/// A failed map read stands at the last good read on every CPU: the tick it closes counts
/// nothing on any CPU, and the next good read counts each CPU's runs since, once.
#[test]
fn a_failed_read_counts_nothing_and_the_next_good_read_counts_each_cpu_since() {
    let t0 = Instant::now();
    let mut held = None;
    let mut at = |secs: u64, read: Result<Vec<PerCpu<SoftirqCounters>>, String>| {
        let mut s = sample(
            t0,
            secs,
            1,
            &Maps {
                net_rx: Vec::new(),
                switches: vec![0; CPUS],
            },
        );
        let b = s.bpf.as_mut().unwrap();
        b.softirqs = hold_last_good(&mut held, read, "KPO_SOFTIRQS", &mut b.failed_reads);
        s
    };
    let read = |counts| {
        let mut all = vec![vec![SoftirqCounters::default(); CPUS]; 10];
        all[NET_RX] = net_rx(counts);
        Ok(all)
    };
    let s0 = at(0, read([(10, 0, 0), (20, 0, 0), (0, 0, 0), (0, 0, 0)]));
    let s1 = at(1, Err("EIO".into()));
    let s2 = at(2, read([(15, 0, 0), (20, 0, 0), (0, 0, 0), (9, 0, 0)]));
    assert_eq!(s1.bpf.as_ref().unwrap().failed_reads.len(), 1);
    assert_eq!(cpu_counts(&tick_window(&s0, &s1)), []);
    assert_eq!(cpu_counts(&tick_window(&s1, &s2)), [(0, 5), (3, 9)]);
    let mut b = WindowBuilder::new(s0);
    b.push(s1);
    b.push(s2);
    assert_eq!(cpu_counts(&b.finish().unwrap().0), [(0, 5), (3, 9)]);
}

#[test]
fn per_cpu_context_switches_are_null_exactly_when_the_total_is() {
    let t0 = Instant::now();
    let window = |sched: bool, attached: u64| {
        let maps = |n| Maps {
            net_rx: net_rx([(0, 0, 0); CPUS]),
            switches: vec![n, 0, 0, 0],
        };
        let mut first = sample(t0, 0, 0, &maps(0));
        let mut last = sample(t0, 1, attached, &maps(10));
        (first.sched_sensor, last.sched_sensor) = (sched, sched);
        let mut b = WindowBuilder::new(first);
        b.push(last);
        b.finish().unwrap().0
    };
    let both = |w: &Window| {
        (
            w.sampled_context_switches_per_s,
            w.sampled_context_switches_per_cpu_per_s.clone(),
        )
    };
    assert_eq!(both(&window(false, 1)), (None, None), "sched sensor off");
    assert_eq!(both(&window(true, 0)), (None, None), "not sampled");
    assert_eq!(
        both(&window(true, 1)),
        (
            Some(10.0),
            Some(vec![CpuRate {
                cpu: 0,
                per_s: 10.0
            }])
        )
    );
}

#[test]
fn window_events_with_per_cpu_figures_match_the_schema() {
    let validator = schema_validator();
    let samples = four_samples(Instant::now());
    let mut b = WindowBuilder::new(samples[0].clone());
    b.push(samples[1].clone());
    let (w, _) = b.finish().unwrap();
    let good = event(&w);
    assert_eq!(
        good["softirqs"][0]["per_cpu"],
        serde_json::json!([{"cpu": 0, "count": 800, "time_us": 200.0}])
    );
    assert_eq!(
        good["sampled_context_switches_per_cpu_per_s"],
        serde_json::json!([{"cpu": 0, "per_s": 200.0}, {"cpu": 1, "per_s": 50.0}])
    );
    let errors: Vec<String> = validator
        .iter_errors(&good)
        .map(|e| e.to_string())
        .collect();
    assert!(errors.is_empty(), "{errors:#?}\n{good:#}");

    // The schema holds the per-CPU rates null exactly when the total is.
    let mut off = w.clone();
    off.sampled_context_switches_per_cpu_per_s = None;
    assert!(!validator.is_valid(&event(&off)));
    off.sampled_context_switches_per_s = None;
    assert!(validator.is_valid(&event(&off)));
    off.sampled_context_switches_per_cpu_per_s = Some(Vec::new());
    assert!(!validator.is_valid(&event(&off)));
    // A per-CPU entry has exactly its three fields.
    let mut extra = good.clone();
    extra["softirqs"][0]["per_cpu"][0]["timed"] = 100.into();
    assert!(!validator.is_valid(&extra));
}

/// A window over `cpus` CPUs on each of which NET_RX ran `10 + cpu` times and the CPU switched
/// `20 + cpu` times, with as many IRQ lines, line `n` run `5 + n` times for 2 µs each (a
/// multiqueue device's line per CPU).
fn wide_window(cpus: u64) -> Window {
    let t0 = Instant::now();
    let at = |secs: u64, scale: u64| {
        let mut s = sample(
            t0,
            secs,
            secs,
            &Maps {
                net_rx: net_rx([(0, 0, 0); CPUS]),
                switches: Vec::new(),
            },
        );
        let b = s.bpf.as_mut().unwrap();
        b.softirqs[NET_RX] = (0..cpus)
            .map(|cpu| SoftirqCounters {
                count: scale * (10 + cpu),
                time_ns: 0,
                timed: 0,
            })
            .collect();
        b.context_switches = (0..cpus).map(|cpu| scale * (20 + cpu)).collect();
        b.irqs = (0..cpus as u32)
            .map(|irq| {
                let count = scale * (5 + u64::from(irq));
                let counters = kpo_common::IrqCounters {
                    count,
                    time_ns: count * 2000,
                    timed: count,
                };
                (irq, counters)
            })
            .collect();
        s
    };
    let mut b = WindowBuilder::new(at(0, 0));
    b.push(at(1, 1));
    b.finish().unwrap().0
}

/// On a host of many CPUs the event lists the 16 busiest and sums the rest, and the schema
/// holds both: at most 16 listed, and a rest that says how many CPUs it sums.
#[test]
fn a_window_of_many_cpus_lists_the_busiest_sixteen_and_matches_the_schema() {
    let validator = schema_validator();

    let w = wide_window(40);
    let rx = net_rx_of(&w).unwrap();
    let listed: Vec<u32> = rx.per_cpu.iter().map(|c| c.cpu).collect();
    assert_eq!(
        listed,
        (24..40).collect::<Vec<u32>>(),
        "the busiest, in CPU order"
    );
    let rest = rx.per_cpu_rest.as_ref().expect("24 CPUs summed");
    // CPUs 0..23 ran 10..33 times each.
    assert_eq!((rest.cpus, rest.count, rest.time_us), (24, 516, None));
    assert_eq!(
        rx.per_cpu.iter().map(|c| c.count).sum::<u64>() + rest.count,
        rx.count
    );
    let switches = w.sampled_context_switches_per_cpu_per_s.as_ref().unwrap();
    assert_eq!(switches.len(), 16);
    assert_eq!(switches[0].cpu, 24);
    // CPUs 0..23 switched 20..43 times each, over 1 s of sampling.
    assert_eq!(
        w.sampled_context_switches_per_cpu_rest,
        Some(super::RateRest {
            cpus: 24,
            per_s: 756.0
        })
    );
    // The IRQ lines too: the 16 with the most runs, in IRQ order, and the others together.
    let lines: Vec<u32> = w.irqs.iter().map(|i| i.irq).collect();
    assert_eq!(lines, (24..40).collect::<Vec<u32>>());
    // Lines 0..23 ran 5..28 times each, 2 µs a run, over the window's 1 s.
    assert_eq!(
        w.irqs_rest,
        Some(super::IrqRest {
            lines: 24,
            count: 396,
            per_s: 396.0,
            time_us: Some(792.0)
        })
    );
    let json = event(&w);
    let errors: Vec<String> = validator
        .iter_errors(&json)
        .map(|e| e.to_string())
        .collect();
    assert!(errors.is_empty(), "{errors:#?}\n{json:#}");

    // Sixteen CPUs: all listed, nothing summed, and the rests are null.
    let w = wide_window(16);
    assert_eq!(net_rx_of(&w).unwrap().per_cpu.len(), 16);
    assert_eq!(net_rx_of(&w).unwrap().per_cpu_rest, None);
    assert_eq!(w.sampled_context_switches_per_cpu_rest, None);
    assert_eq!((w.irqs.len(), &w.irqs_rest), (16, &None));
    assert!(validator.is_valid(&event(&w)));

    // The schema refuses a seventeenth entry, a rest of no CPU, and a rest beside a null list.
    let mut long = json.clone();
    long["softirqs"][0]["per_cpu"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({"cpu": 99, "count": 1, "time_us": null}));
    assert!(!validator.is_valid(&long));
    let mut many_lines = json.clone();
    many_lines["irqs"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({"irq": 99, "name": null, "count": 1, "per_s": 1.0, "time_us": 2.0, "mean_ns": 2000.0}));
    assert!(!validator.is_valid(&many_lines));
    let mut empty_rest = json.clone();
    empty_rest["sampled_context_switches_per_cpu_rest"]["cpus"] = 0.into();
    assert!(!validator.is_valid(&empty_rest));
    let mut orphan = json.clone();
    orphan["sampled_context_switches_per_s"] = serde_json::Value::Null;
    orphan["sampled_context_switches_per_cpu_per_s"] = serde_json::Value::Null;
    assert!(!validator.is_valid(&orphan));
    orphan["sampled_context_switches_per_cpu_rest"] = serde_json::Value::Null;
    assert!(validator.is_valid(&orphan));
}

/// Every handler run counts; only timed runs make the mean, which is scaled to the count, and a
/// line none of whose runs was timed has no time rather than none.
#[test]
fn an_irq_lines_untimed_runs_count_and_its_time_scales_the_timed_mean() {
    let t0 = Instant::now();
    let maps = Maps {
        net_rx: net_rx([(0, 0, 0); CPUS]),
        switches: vec![0; CPUS],
    };
    let at = |secs: u64, lines: &[(u32, u64, u64, u64)]| {
        let mut s = sample(t0, secs, secs, &maps);
        s.bpf.as_mut().unwrap().irqs = lines
            .iter()
            .map(|&(irq, count, time_ns, timed)| {
                let c = kpo_common::IrqCounters {
                    count,
                    time_ns,
                    timed,
                };
                (irq, c)
            })
            .collect();
        s
    };
    let mut b = WindowBuilder::new(at(0, &[(40, 5, 5_000, 5)]));
    // Line 40: 10 more runs, 8 of them timed at 3 µs each; line 41: 2 runs, none timed.
    b.push(at(2, &[(40, 15, 29_000, 13), (41, 2, 0, 0)]));
    let w = b.finish().unwrap().0;
    let line = |irq: u32| w.irqs.iter().find(|i| i.irq == irq).unwrap();
    assert_eq!(line(40).count, 10);
    assert_eq!(line(40).mean_ns, Some(3000.0));
    assert_eq!(line(40).time_us, Some(30.0));
    assert_eq!(line(40).per_s, 5.0);
    assert_eq!(
        (line(41).count, line(41).time_us, line(41).mean_ns),
        (2, None, None)
    );

    // The lines left out: each line's time added up, not one mean over their timed runs. Lines
    // 1..=16 are the busiest; line 50 ran 10 times at 1 µs, all timed; line 51 10 times, one
    // timed at 5 µs: 10 + 50 µs (a mean over both lines' timed runs would say 27.3).
    let mut lines: Vec<(u32, u64, u64, u64)> =
        (1..=16).map(|irq| (irq, 100, 100_000, 100)).collect();
    lines.extend([(50, 10, 10_000, 10), (51, 10, 5_000, 1)]);
    let mut b = WindowBuilder::new(at(0, &[]));
    b.push(at(1, &lines));
    let w = b.finish().unwrap().0;
    assert_eq!(w.irqs.len(), 16);
    assert_eq!(
        w.irqs_rest,
        Some(super::IrqRest {
            lines: 2,
            count: 20,
            per_s: 20.0,
            time_us: Some(60.0)
        })
    );
}
