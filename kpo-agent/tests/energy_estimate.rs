//! The estimate path (no RAPL): CPU time and frequency through the documented power model, always
//! labelled "estimated".

use std::{collections::BTreeMap, path::Path};

use kpo_agent::energy::estimate::{parse_proc_stat, CpuTime, EstimatedMeter, PowerModel};
use kpo_agent::energy::{choose_meter, open_meter, EnergyMeter, EnergySource};

/// How often the agent reads the meter (its default tick).
const TICK: std::time::Duration = std::time::Duration::from_secs(1);

/// `/proc/stat` with 2 CPUs sharing the given totals (the aggregate line holds them); fields:
/// user nice system idle iowait irq softirq steal.
fn stat(user: u64, system: u64, idle: u64, iowait: u64, steal: u64) -> String {
    let half = |v: u64| (v / 2, v - v / 2);
    let (u, s, i, w, t) = (
        half(user),
        half(system),
        half(idle),
        half(iowait),
        half(steal),
    );
    format!(
        "cpu  {user} 0 {system} {idle} {iowait} 0 0 {steal} 0 0\n\
         cpu0 {} 0 {} {} {} 0 0 {} 0 0\n\
         cpu1 {} 0 {} {} {} 0 0 {} 0 0\n\
         intr 12345\nctxt 999\n",
        u.0, s.0, i.0, w.0, t.0, u.1, s.1, i.1, w.1, t.1
    )
}

fn freq(sys: &Path, cpu: u32, cur_khz: u64, max_khz: u64) {
    let d = sys.join(format!("devices/system/cpu/cpu{cpu}/cpufreq"));
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(d.join("scaling_cur_freq"), format!("{cur_khz}\n")).unwrap();
    std::fs::write(d.join("cpuinfo_max_freq"), format!("{max_khz}\n")).unwrap();
}

#[test]
fn model_closed_form() {
    let m = PowerModel::default();
    // 4 CPUs, 10 s, 15 CPU-seconds busy at half the maximum frequency:
    // 4·1.2·10 + 15·7·0.5² = 48 + 26.25.
    assert!((m.joules(4, 10.0, 15.0, 0.5) - 74.25).abs() < 1e-12);
    // Idle machine: only the idle term.
    assert!((m.joules(2, 1.0, 0.0, 1.0) - 2.4).abs() < 1e-12);
    // The ratio is clamped to [0, 1].
    assert_eq!(m.joules(1, 1.0, 1.0, 3.0), m.joules(1, 1.0, 1.0, 1.0));
}

#[test]
fn parses_proc_stat() {
    let t = parse_proc_stat(&stat(100, 50, 800, 20, 30), Path::new("/proc/stat")).unwrap();
    // Each CPU: busy 50 + 25, all of it 75 + idle 400 + iowait 10 + steal 15.
    let each = CpuTime {
        busy: 75,
        total: 500,
    };
    assert_eq!(t.cpus, BTreeMap::from([(0, each), (1, each)]));
    assert!(parse_proc_stat("intr 1\n", Path::new("x")).is_err());
    assert!(parse_proc_stat("cpu  1 2 x 4\ncpu0 1 2 3 4\n", Path::new("x")).is_err());
    assert!(
        parse_proc_stat("cpu  1 2 3 4\n", Path::new("x")).is_err(),
        "no per-CPU lines"
    );
}

#[test]
fn estimated_meter_reads_utilization_and_frequency_and_labels_every_reading() {
    let proc_dir = tempfile::tempdir().unwrap();
    let sys_dir = tempfile::tempdir().unwrap();
    std::fs::write(proc_dir.path().join("stat"), stat(1000, 0, 1000, 0, 0)).unwrap();
    freq(sys_dir.path(), 0, 1_500_000, 3_000_000);
    freq(sys_dir.path(), 1, 1_500_000, 3_000_000);
    let mut meter =
        EstimatedMeter::open(proc_dir.path(), sys_dir.path(), PowerModel::default()).unwrap();
    assert_eq!(meter.source(), EnergySource::Estimated);
    assert!((meter.freq_ratio() - 0.5).abs() < 1e-12);

    // 10 s on 2 CPUs = 2000 jiffies: 500 busy (5 CPU-seconds), 1500 idle.
    std::fs::write(proc_dir.path().join("stat"), stat(1400, 100, 2000, 500, 0)).unwrap();
    let r = meter.read().unwrap();
    assert_eq!(r.source, EnergySource::Estimated);
    let want = 2.0 * 1.2 * 10.0 + 5.0 * 7.0 * 0.25;
    assert!((r.joules - want).abs() < 1e-9, "{} vs {want}", r.joules);
    let json = serde_json::to_string(&r).unwrap();
    assert!(json.contains(r#""source":"estimated""#), "{json}");

    // At full frequency the same work costs more.
    freq(sys_dir.path(), 0, 3_000_000, 3_000_000);
    freq(sys_dir.path(), 1, 3_000_000, 3_000_000);
    std::fs::write(proc_dir.path().join("stat"), stat(1800, 200, 3000, 1000, 0)).unwrap();
    let r2 = meter.read().unwrap();
    assert!((r2.joules - (2.0 * 1.2 * 10.0 + 5.0 * 7.0)).abs() < 1e-9);
}

#[test]
fn without_cpufreq_the_ratio_is_one_and_steal_is_not_work() {
    let proc_dir = tempfile::tempdir().unwrap();
    let sys_dir = tempfile::tempdir().unwrap();
    std::fs::write(proc_dir.path().join("stat"), stat(0, 0, 0, 0, 0)).unwrap();
    let mut meter =
        EstimatedMeter::open(proc_dir.path(), sys_dir.path(), PowerModel::default()).unwrap();
    assert_eq!(meter.freq_ratio(), 1.0);
    // 1 s on 2 CPUs: 100 busy, 50 idle, 50 stolen by the hypervisor.
    std::fs::write(proc_dir.path().join("stat"), stat(100, 0, 50, 0, 50)).unwrap();
    let r = meter.read().unwrap();
    assert!(
        (r.joules - (2.0 * 1.2 * 1.0 + 1.0 * 7.0)).abs() < 1e-9,
        "{r:?}"
    );
}

#[test]
fn open_meter_falls_back_to_the_labelled_estimate_without_rapl() {
    let proc_dir = tempfile::tempdir().unwrap();
    let sys_dir = tempfile::tempdir().unwrap();
    std::fs::write(proc_dir.path().join("stat"), stat(0, 0, 0, 0, 0)).unwrap();
    let meter = open_meter(sys_dir.path(), proc_dir.path(), PowerModel::default(), TICK).unwrap();
    assert_eq!(meter.source(), EnergySource::Estimated);

    // With a package zone present, RAPL wins, but only if it advances while the CPU works: this
    // fake one stays at 5 µJ, so the estimate is still used (energy_trust.rs covers the rest).
    let z = sys_dir.path().join("class/powercap/intel-rapl:0");
    std::fs::create_dir_all(&z).unwrap();
    std::fs::write(z.join("name"), "package-0\n").unwrap();
    std::fs::write(z.join("energy_uj"), "5\n").unwrap();
    std::fs::write(z.join("max_energy_range_uj"), "262143328850\n").unwrap();
    let meter = open_meter(sys_dir.path(), proc_dir.path(), PowerModel::default(), TICK).unwrap();
    assert_eq!(meter.source(), EnergySource::Estimated);
    let choice =
        choose_meter(sys_dir.path(), proc_dir.path(), PowerModel::default(), TICK).unwrap();
    assert!(
        choice.skipped[0].1.contains("did not advance"),
        "{:?}",
        choice.skipped
    );
}

/// Defect: the estimate took its times from the aggregate `cpu` line, which sums every possible
/// CPU, an offline one's idle time taken from elsewhere: a CPU going offline made a window's
/// time fall to nothing, and one coming back made it jump. Only CPUs online at both readings
/// count now.
#[test]
fn a_cpu_going_offline_or_coming_back_does_not_move_the_estimate() {
    let proc_dir = tempfile::tempdir().unwrap();
    let sys_dir = tempfile::tempdir().unwrap();
    let write = |text: &str| std::fs::write(proc_dir.path().join("stat"), text).unwrap();
    write("cpu  2000 0 0 2000 0 0 0 0 0 0\ncpu0 1000 0 0 1000 0 0 0 0 0 0\ncpu1 1000 0 0 1000 0 0 0 0 0 0\n");
    let mut meter =
        EstimatedMeter::open(proc_dir.path(), sys_dir.path(), PowerModel::default()).unwrap();
    // cpu1 offline; the aggregate line falls. cpu0: 1 s (100 jiffies), half of it busy.
    write("cpu  1050 0 0 1500 0 0 0 0 0 0\ncpu0 1050 0 0 1050 0 0 0 0 0 0\n");
    let one_cpu_half_busy = 1.0 * 1.2 * 1.0 + 0.5 * 7.0;
    let r = meter.read().unwrap();
    assert!((r.joules - one_cpu_half_busy).abs() < 1e-9, "{r:?}");
    // cpu1 back, with counts from before (or from elsewhere); the aggregate line jumps.
    write("cpu  6100 0 0 91100 0 0 0 0 0 0\ncpu0 1100 0 0 1100 0 0 0 0 0 0\ncpu1 5000 0 0 90000 0 0 0 0 0 0\n");
    let r = meter.read().unwrap();
    assert!((r.joules - one_cpu_half_busy).abs() < 1e-9, "{r:?}");
    // Both online at both readings again: both count, 1 s each, half of it busy.
    write("cpu  6200 0 0 91200 0 0 0 0 0 0\ncpu0 1150 0 0 1150 0 0 0 0 0 0\ncpu1 5050 0 0 90050 0 0 0 0 0 0\n");
    let r = meter.read().unwrap();
    let two = 2.0 * 1.2 * 1.0 + 1.0 * 7.0;
    assert!((r.joules - two).abs() < 1e-9, "{r:?}");
}

/// A /proc/stat that does not move (a frozen copy given as --proc-root, or two reads within one
/// jiffy) gives no figure, with the reason, not 0 J that a reader would take as measured.
#[test]
fn no_cpu_time_between_readings_is_no_figure_not_zero_joules() {
    let proc_dir = tempfile::tempdir().unwrap();
    let sys_dir = tempfile::tempdir().unwrap();
    std::fs::write(proc_dir.path().join("stat"), stat(100, 0, 100, 0, 0)).unwrap();
    let mut meter =
        EstimatedMeter::open(proc_dir.path(), sys_dir.path(), PowerModel::default()).unwrap();
    let e = meter.read().unwrap_err().to_string();
    assert!(
        e.ends_with(
            "stat: no CPU time passed between two readings (a copy that does not move, or an \
             interval shorter than one tick of its clock): nothing to estimate from"
        ),
        "{e}"
    );
    // Time passing again gives a figure again, from the last reading.
    std::fs::write(proc_dir.path().join("stat"), stat(200, 0, 200, 0, 0)).unwrap();
    let r = meter.read().unwrap();
    assert!(
        (r.joules - (2.0 * 1.2 * 1.0 + 1.0 * 7.0)).abs() < 1e-9,
        "{r:?}"
    );
}
