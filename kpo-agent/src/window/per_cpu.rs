//! The eBPF counters a window reports per CPU (softirq runs and time, context switches): the
//! sums over all CPUs hide the classic production fault, one CPU saturated by NET_RX because
//! of IRQ or RPS affinity.
//!
//! Each CPU's counter is taken apart exactly as the sum is (see `softirqs` in the parent):
//! the change from the window's baseline to its end, a fall being the slot counting again
//! from 0 (`counter::restarted`). The duty cycle and failed reads need nothing more here: the
//! sensors count only while attached, and a failed read stands at its last good one for every
//! CPU at once (`bpf_maps::Held`). CPUs where nothing happened are left out.
use kpo_common::SoftirqCounters;
use serde::Serialize;

use super::round3;
use crate::counter;

/// One softirq vector on one CPU over a window.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SoftirqCpu {
    pub cpu: u32,
    /// Runs on this CPU while sampling.
    pub count: u64,
    /// This CPU's timed runs' mean (one run in `SOFTIRQ_TIME_EVERY` is timed, on each CPU)
    /// times its `count`; null when none of its runs was timed.
    pub time_us: Option<f64>,
}

/// A per-second rate on one CPU.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct CpuRate {
    pub cpu: u32,
    pub per_s: f64,
}

/// Each CPU's value at the baseline and at the end, in CPU order (a CPU the baseline lacks
/// counts from 0).
fn by_cpu<'a, V: Copy + Default>(
    before: &'a [V],
    now: &'a [V],
) -> impl Iterator<Item = (u32, V, V)> + 'a {
    (0u32..).zip(now).map(|(cpu, &n)| {
        (
            cpu,
            before.get(cpu as usize).copied().unwrap_or_default(),
            n,
        )
    })
}

/// One softirq vector's runs and time on each CPU where it ran between two reads.
pub(super) fn softirq_cpus(before: &[SoftirqCounters], now: &[SoftirqCounters]) -> Vec<SoftirqCpu> {
    by_cpu(before, now)
        .filter_map(|(cpu, b, n)| {
            let count = counter::restarted(b.count, n.count);
            if count == 0 {
                return None;
            }
            let timed = counter::restarted(b.timed, n.timed);
            // As for the vector's total: the timed runs' mean times the exact count; with no
            // timed run the duration is unknown, not zero.
            let time_us = (timed > 0).then(|| {
                let mean_ns = counter::restarted(b.time_ns, n.time_ns) as f64 / timed as f64;
                round3(mean_ns * count as f64 / 1000.0)
            });
            Some(SoftirqCpu {
                cpu,
                count,
                time_us,
            })
        })
        .collect()
}

/// Each CPU's rate of one counter between two reads (`rate` turns a count into per second of
/// sampling), for the CPUs where it moved.
pub(super) fn rates(before: &[u64], now: &[u64], rate: impl Fn(u64) -> f64) -> Vec<CpuRate> {
    by_cpu(before, now)
        .map(|(cpu, b, n)| (cpu, counter::restarted(b, n)))
        .filter(|&(_, n)| n > 0)
        .map(|(cpu, n)| CpuRate {
            cpu,
            per_s: rate(n),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counters(count: u64, time_ns: u64, timed: u64) -> SoftirqCounters {
        SoftirqCounters {
            count,
            time_ns,
            timed,
        }
    }

    #[test]
    fn a_cpu_whose_count_did_not_move_is_left_out() {
        let before = [counters(10, 800, 1), counters(5, 0, 0), counters(0, 0, 0)];
        let now = [
            counters(10, 800, 1),
            counters(21, 400, 2),
            counters(0, 0, 0),
        ];
        assert_eq!(
            softirq_cpus(&before, &now),
            [SoftirqCpu {
                cpu: 1,
                count: 16,
                // 2 runs timed, 200 ns each, scaled to 16 runs.
                time_us: Some(3.2),
            }]
        );
    }

    #[test]
    fn each_cpu_scales_its_own_timed_mean_to_its_own_count() {
        // CPU 0: 800 runs, 100 timed at 250 ns. CPU 1: 8 runs, 1 timed at 10 µs.
        let now = [counters(800, 25_000, 100), counters(8, 10_000, 1)];
        let cpus = softirq_cpus(&[], &now);
        assert_eq!(cpus[0].time_us, Some(200.0));
        assert_eq!(cpus[1].time_us, Some(80.0));
        // Seven runs and none timed: the time is unknown, not zero.
        assert_eq!(softirq_cpus(&[], &[counters(7, 0, 0)])[0].time_us, None);
    }

    #[test]
    fn a_cpu_slot_that_fell_counts_again_from_zero_and_a_new_cpu_from_nothing() {
        let before = [counters(1000, 0, 0)];
        let now = [counters(30, 0, 0), counters(4, 0, 0)];
        let counts: Vec<(u32, u64)> = softirq_cpus(&before, &now)
            .iter()
            .map(|c| (c.cpu, c.count))
            .collect();
        assert_eq!(counts, [(0, 30), (1, 4)]);
        let r = rates(&[100, 7, 0], &[300, 7, 50], |n| n as f64 / 2.0);
        assert_eq!(
            r,
            [
                CpuRate {
                    cpu: 0,
                    per_s: 100.0
                },
                CpuRate {
                    cpu: 2,
                    per_s: 25.0
                }
            ]
        );
    }
}
