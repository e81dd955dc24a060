//! The eBPF counters a window reports per CPU (softirq runs and time, context switches): the
//! sums over all CPUs hide the classic production fault, one CPU saturated by NET_RX because
//! of IRQ or RPS affinity.
//!
//! Each CPU's counter is taken apart exactly as the sum is (see `softirqs` in the parent):
//! the change from the window's baseline to its end, a fall being the slot counting again
//! from 0 (`counter::restarted`). The duty cycle and failed reads need nothing more here: the
//! sensors count only while attached, and a failed read stands at its last good one for every
//! CPU at once (`bpf_maps::Held`). CPUs where nothing happened are left out.
//!
//! At most [`LISTED_CPUS`] CPUs are listed per figure, the busiest; the others are summed.
use kpo_common::SoftirqCounters;
use serde::Serialize;

use super::round3;
use crate::counter;

/// At most this many CPUs are listed in each per-CPU figure. A window's event must stay one line
/// that a log pipeline takes whole (containerd splits lines at 16 KiB, journald at 48 KiB): ten
/// vectors listed CPU by CPU come to about 450 bytes per CPU, over 40 KiB on a 96-CPU host. A
/// saturated CPU is among the busiest, so those are listed and the rest summed.
pub const LISTED_CPUS: usize = 16;

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

/// One softirq vector on the CPUs where it ran that the window does not list, together.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SoftirqRest {
    pub cpus: u32,
    pub count: u64,
    /// Their timed runs' mean times their `count`, as for the vector; null when none was timed.
    pub time_us: Option<f64>,
}

/// A per-second rate on the CPUs where it moved that the window does not list, together.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct RateRest {
    pub cpus: u32,
    pub per_s: f64,
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

/// The total time of `count` runs of which `timed` took `time_ns` together: their mean times
/// the exact count (as for a vector's total); with no timed run the duration is unknown, not
/// zero. Softirqs time one run in `SOFTIRQ_TIME_EVERY`, IRQ lines every run whose entry was seen.
pub(super) fn scaled_time_us(count: u64, time_ns: u64, timed: u64) -> Option<f64> {
    (timed > 0).then(|| round3(time_ns as f64 / timed as f64 * count as f64 / 1000.0))
}

/// The scaled time of a softirq vector's change on one CPU, or summed over several CPUs.
fn softirq_time_us(d: &SoftirqCounters) -> Option<f64> {
    scaled_time_us(d.count, d.time_ns, d.timed)
}

/// Figures by number (a CPU's, an IRQ's), in that order.
type Numbered<T> = Vec<(u32, T)>;

/// Splits `moved` into the `listed` with the largest `load`, still in order of number, and the
/// rest (empty when none is left out). Ties go to the lower number. The window's IRQ lines are
/// capped with it too (`LISTED_IRQS`).
pub(super) fn busiest<T>(
    moved: Numbered<T>,
    listed: usize,
    load: impl Fn(&T) -> (f64, u64),
) -> (Numbered<T>, Numbered<T>) {
    if moved.len() <= listed {
        return (moved, Vec::new());
    }
    let mut ranked: Vec<usize> = (0..moved.len()).collect();
    ranked.sort_by(|&a, &b| {
        let (la, lb) = (load(&moved[a].1), load(&moved[b].1));
        lb.0.total_cmp(&la.0).then(lb.1.cmp(&la.1)).then(a.cmp(&b))
    });
    let mut is_listed = vec![false; moved.len()];
    for &i in &ranked[..listed] {
        is_listed[i] = true;
    }
    let (kept, rest): (Vec<_>, Vec<_>) = moved
        .into_iter()
        .enumerate()
        .partition(|(i, _)| is_listed[*i]);
    let strip = |v: Vec<(usize, (u32, T))>| v.into_iter().map(|(_, e)| e).collect();
    (strip(kept), strip(rest))
}

/// One softirq vector's runs and time on each of the busiest CPUs where it ran between two
/// reads (by time, then runs), and the other CPUs' together.
pub(super) fn softirq_cpus(
    before: &[SoftirqCounters],
    now: &[SoftirqCounters],
) -> (Vec<SoftirqCpu>, Option<SoftirqRest>) {
    let moved: Vec<(u32, SoftirqCounters)> = by_cpu(before, now)
        .map(|(cpu, b, n)| {
            let delta = SoftirqCounters {
                count: counter::restarted(b.count, n.count),
                time_ns: counter::restarted(b.time_ns, n.time_ns),
                timed: counter::restarted(b.timed, n.timed),
            };
            (cpu, delta)
        })
        .filter(|(_, d)| d.count > 0)
        .collect();
    let (listed, rest) = busiest(moved, LISTED_CPUS, |d| {
        (softirq_time_us(d).unwrap_or(0.0), d.count)
    });
    let listed = listed
        .into_iter()
        .map(|(cpu, d)| SoftirqCpu {
            cpu,
            count: d.count,
            time_us: softirq_time_us(&d),
        })
        .collect();
    let rest = (!rest.is_empty()).then(|| {
        let summed = rest
            .iter()
            .fold(SoftirqCounters::default(), |s, (_, d)| SoftirqCounters {
                count: s.count + d.count,
                time_ns: s.time_ns + d.time_ns,
                timed: s.timed + d.timed,
            });
        SoftirqRest {
            cpus: rest.len() as u32,
            count: summed.count,
            time_us: softirq_time_us(&summed),
        }
    });
    (listed, rest)
}

/// Each of the busiest CPUs' rate of one counter between two reads (`rate` turns a count into
/// per second of sampling), for the CPUs where it moved, and the other CPUs' together.
pub(super) fn rates(
    before: &[u64],
    now: &[u64],
    rate: impl Fn(u64) -> f64,
) -> (Vec<CpuRate>, Option<RateRest>) {
    let moved: Vec<(u32, u64)> = by_cpu(before, now)
        .map(|(cpu, b, n)| (cpu, counter::restarted(b, n)))
        .filter(|&(_, n)| n > 0)
        .collect();
    let (listed, rest) = busiest(moved, LISTED_CPUS, |&n| (n as f64, n));
    let listed = listed
        .into_iter()
        .map(|(cpu, n)| CpuRate {
            cpu,
            per_s: rate(n),
        })
        .collect();
    let rest = (!rest.is_empty()).then(|| RateRest {
        cpus: rest.len() as u32,
        per_s: rate(rest.iter().map(|&(_, n)| n).sum()),
    });
    (listed, rest)
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
            (
                vec![SoftirqCpu {
                    cpu: 1,
                    count: 16,
                    // 2 runs timed, 200 ns each, scaled to 16 runs.
                    time_us: Some(3.2),
                }],
                None
            )
        );
    }

    #[test]
    fn each_cpu_scales_its_own_timed_mean_to_its_own_count() {
        // CPU 0: 800 runs, 100 timed at 250 ns. CPU 1: 8 runs, 1 timed at 10 µs.
        let now = [counters(800, 25_000, 100), counters(8, 10_000, 1)];
        let (cpus, _) = softirq_cpus(&[], &now);
        assert_eq!(cpus[0].time_us, Some(200.0));
        assert_eq!(cpus[1].time_us, Some(80.0));
        // Seven runs and none timed: the time is unknown, not zero.
        assert_eq!(softirq_cpus(&[], &[counters(7, 0, 0)]).0[0].time_us, None);
    }

    #[test]
    fn a_cpu_slot_that_fell_counts_again_from_zero_and_a_new_cpu_from_nothing() {
        let before = [counters(1000, 0, 0)];
        let now = [counters(30, 0, 0), counters(4, 0, 0)];
        let counts: Vec<(u32, u64)> = softirq_cpus(&before, &now)
            .0
            .iter()
            .map(|c| (c.cpu, c.count))
            .collect();
        assert_eq!(counts, [(0, 30), (1, 4)]);
        let (r, rest) = rates(&[100, 7, 0], &[300, 7, 50], |n| n as f64 / 2.0);
        assert_eq!(rest, None);
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

    /// A host of 40 CPUs: the 16 busiest are listed in CPU order, the other 24 summed, and the
    /// listed and the rest add up to every CPU's runs.
    #[test]
    fn past_sixteen_cpus_the_busiest_are_listed_and_the_rest_summed() {
        // CPU i ran 100 + i runs, all at 1 µs, one timed in 10 (so time ranks as runs do);
        // CPU 3 ran few runs but long ones (20 µs each), CPU 5 many but none timed.
        let mut now: Vec<SoftirqCounters> = (0..40u64)
            .map(|i| counters(100 + i, (100 + i) / 10 * 1000, (100 + i) / 10))
            .collect();
        now[3] = counters(60, 6 * 20_000, 6);
        now[5] = counters(10_000, 0, 0);
        let (listed, rest) = softirq_cpus(&[], &now);
        let cpus: Vec<u32> = listed.iter().map(|c| c.cpu).collect();
        // By time: CPU 3 (1.2 ms) first, then CPUs 39 down to 25 (139..125 µs); CPU 5's
        // unknown time ranks by its runs among the unknowns, below every known time.
        let mut expected: Vec<u32> = vec![3];
        expected.extend(25..40);
        assert_eq!(cpus, expected);
        let rest = rest.expect("24 CPUs left out");
        assert_eq!(rest.cpus, 24);
        let all: u64 = now.iter().map(|c| c.count).sum();
        assert_eq!(
            listed.iter().map(|c| c.count).sum::<u64>() + rest.count,
            all
        );
        // The rest's time: its timed runs' mean times its runs, as for a vector.
        let rest_cpus: Vec<&SoftirqCounters> = (0..40)
            .filter(|i| !expected.contains(&(*i as u32)))
            .map(|i| &now[i])
            .collect();
        let (count, time_ns, timed) = rest_cpus.iter().fold((0, 0, 0), |a, c| {
            (a.0 + c.count, a.1 + c.time_ns, a.2 + c.timed)
        });
        assert_eq!(rest.count, count);
        assert_eq!(
            rest.time_us,
            Some(round3(
                time_ns as f64 / timed as f64 * count as f64 / 1000.0
            ))
        );

        // Exactly 16 CPUs: all listed, nothing summed.
        assert_eq!(softirq_cpus(&[], &now[..16]).1, None);
        assert_eq!(softirq_cpus(&[], &now[..16]).0.len(), 16);
    }

    #[test]
    fn past_sixteen_cpus_the_busiest_rates_are_listed_and_ties_go_to_the_lower_cpu() {
        // 20 CPUs switched 10 times each, CPU 17 twice as often: CPU 17 and, of the tied
        // others, the 15 lowest (0..15); CPUs 15, 16, 18 and 19 are summed.
        let mut now = vec![10u64; 20];
        now[17] = 20;
        let (listed, rest) = rates(&[], &now, |n| n as f64);
        let cpus: Vec<u32> = listed.iter().map(|c| c.cpu).collect();
        let mut expected: Vec<u32> = (0..15).collect();
        expected.push(17);
        assert_eq!(cpus, expected);
        assert_eq!(listed[15].per_s, 20.0);
        assert_eq!(
            rest,
            Some(RateRest {
                cpus: 4,
                per_s: 40.0
            })
        );
    }
}
