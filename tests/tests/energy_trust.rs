//! The perf power PMU kinds that machines of this kind show, with real kernel counters: a fake
//! PMU tree names the kernel's *software* PMU, so `perf_event_open` opens a real counter that
//! advances (`cpu-clock`), never moves (`emulation-faults`, always 0 on x86), or moves far faster
//! than any package draws power (`cpu-clock` scaled to a joule per nanosecond). `choose_meter`
//! must take the first, and set the other two aside with the reason, falling back to the estimate.
use std::path::Path;

use kpo_agent::energy::{
    choose_meter,
    estimate::PowerModel,
    perf_power::{PerfPowerMeter, PowerPmu},
    trust, EnergyError, EnergyMeter, EnergySource,
};

/// How often the agent reads the meter (its default tick).
const TICK: std::time::Duration = std::time::Duration::from_secs(1);
const PERF_TYPE_SOFTWARE: u32 = 1;
const PERF_COUNT_SW_CPU_CLOCK: u32 = 0;
const PERF_COUNT_SW_EMULATION_FAULTS: u32 = 8;

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

/// A sysfs tree whose power PMU is the software PMU with one `energy-psys` event (like the frozen
/// machine's), on CPU 0, and a /proc with the host's `stat` for the estimate.
fn machine(event: u32, scale: &str) -> (tempfile::TempDir, tempfile::TempDir) {
    let sys = tempfile::tempdir().unwrap();
    let pmu = sys.path().join("bus/event_source/devices/power");
    write(&pmu.join("type"), &format!("{PERF_TYPE_SOFTWARE}\n"));
    write(&pmu.join("cpumask"), "0\n");
    write(&pmu.join("format/event"), "config:0-7\n");
    write(
        &pmu.join("events/energy-psys"),
        &format!("event=0x{event:02x}\n"),
    );
    write(&pmu.join("events/energy-psys.scale"), &format!("{scale}\n"));
    write(&pmu.join("events/energy-psys.unit"), "Joules\n");
    let proc_dir = tempfile::tempdir().unwrap();
    std::fs::copy("/proc/stat", proc_dir.path().join("stat")).unwrap();
    (sys, proc_dir)
}

fn perf_reason(choice: &kpo_agent::energy::MeterChoice) -> String {
    choice
        .skipped
        .iter()
        .find(|(s, _)| *s == EnergySource::PerfPower)
        .map(|(_, r)| r.clone())
        .unwrap_or_default()
}

/// cpu-clock counts nanoseconds; at 1e-9 J per count that is 1 W: a live counter.
pub fn an_advancing_pmu_is_chosen() {
    let (sys, proc_dir) = machine(PERF_COUNT_SW_CPU_CLOCK, "1e-9");
    let mut choice =
        choose_meter(sys.path(), proc_dir.path(), PowerModel::default(), TICK).unwrap();
    assert_eq!(
        choice.meter.source(),
        EnergySource::PerfPower,
        "{:?}",
        choice.skipped
    );
    assert_eq!(choice.meter.domains(), vec!["energy-psys:cpu0".to_string()]);
    // RAPL was tried first and is absent from this tree.
    assert_eq!(choice.skipped.len(), 1);
    assert_eq!(choice.skipped[0].0, EnergySource::Rapl);
    let reading = choice.meter.read().unwrap();
    assert!(reading.joules > 0.0, "{reading:?}");
}

/// emulation-faults never counts on x86: the frozen `energy-psys` of the hypervisor.
pub fn a_frozen_pmu_is_set_aside() {
    let (sys, proc_dir) = machine(
        PERF_COUNT_SW_EMULATION_FAULTS,
        "2.3283064365386962890625e-10",
    );
    let choice = choose_meter(sys.path(), proc_dir.path(), PowerModel::default(), TICK).unwrap();
    assert_eq!(choice.meter.source(), EnergySource::Estimated);
    let reason = perf_reason(&choice);
    assert!(
        reason.contains("set aside") && reason.contains("did not advance"),
        "{reason}"
    );
    let sources: Vec<EnergySource> = choice.skipped.iter().map(|(s, _)| *s).collect();
    assert_eq!(sources, vec![EnergySource::Rapl, EnergySource::PerfPower]);
}

/// cpu-clock at 1 J per nanosecond is a billion watts: not a package.
pub fn an_impossible_pmu_is_set_aside() {
    let (sys, proc_dir) = machine(PERF_COUNT_SW_CPU_CLOCK, "1");
    let choice = choose_meter(sys.path(), proc_dir.path(), PowerModel::default(), TICK).unwrap();
    assert_eq!(choice.meter.source(), EnergySource::Estimated);
    let reason = perf_reason(&choice);
    assert!(
        reason.contains("set aside") && reason.contains("above the ceiling"),
        "{reason}"
    );
}

/// The machine at hand is one of three kinds, and each must get its own right outcome:
/// - no power PMU: the reason says there is none;
/// - a PMU that advances: it is chosen, and a reading over CPU work is energy between nothing and
///   the ceiling;
/// - a PMU that is present but frozen (a hypervisor that never advances `energy-psys`): it is set
///   aside with the reason, and an independent raw reading confirms that it really did not move.
///
/// The other kinds are covered on every machine by `kpo-agent/tests/energy_trust.rs` (fake
/// powercap trees) and by the tests above (real perf counters behind fake PMU trees).
pub fn this_machines_power_pmu_is_read_or_reported_absent() {
    let sys = Path::new("/sys");
    if !sys.join("bus/event_source/devices/power").exists() {
        let err = PowerPmu::discover(sys, false).unwrap_err();
        assert!(matches!(err, EnergyError::PerfPmu { .. }), "{err}");
        let text = err.to_string();
        assert!(
            text.contains("/sys/bus/event_source/devices/power")
                && text.contains("no perf power PMU"),
            "{text}"
        );
        let err = PerfPowerMeter::open(sys, false).unwrap_err();
        assert!(matches!(err, EnergyError::PerfPmu { .. }), "{err}");
        let choice = choose_meter(sys, Path::new("/proc"), PowerModel::default(), TICK).unwrap();
        let reason = choice
            .skipped
            .iter()
            .find(|(s, _)| *s == EnergySource::PerfPower)
            .map(|(_, r)| r.clone())
            .expect("the perf power PMU is listed as skipped");
        assert!(reason.contains("no perf power PMU"), "{reason}");
        println!("kind met here: no power PMU ({reason})");
        return;
    }
    let pmu = PowerPmu::discover(sys, false).unwrap();
    assert!(!pmu.cpus.is_empty());
    let choice = choose_meter(sys, Path::new("/proc"), PowerModel::default(), TICK).unwrap();
    let perf_reason = choice
        .skipped
        .iter()
        .find(|(s, _)| *s == EnergySource::PerfPower)
        .map(|(_, r)| r.clone());
    match (choice.meter.source(), perf_reason) {
        (EnergySource::Rapl, _) => println!("kind met here: powercap RAPL, perf PMU not needed"),
        (EnergySource::PerfPower, _) => {
            let mut meter = choice.meter;
            let started = std::time::Instant::now();
            trust::busy_work(std::time::Duration::from_millis(200));
            let reading = meter.read().unwrap();
            let seconds = started.elapsed().as_secs_f64();
            assert!(
                reading.joules > 0.0
                    && reading.joules
                        < trust::MAX_WATTS_PER_PACKAGE * pmu.cpus.len() as f64 * seconds,
                "{} J over {seconds} s",
                reading.joules
            );
            println!(
                "kind met here: a power PMU that advances ({} J over {seconds:.3} s)",
                reading.joules
            );
        }
        (EnergySource::Estimated, Some(reason)) => {
            let mut raw = match PerfPowerMeter::open(sys, false) {
                Ok(raw) => raw,
                Err(e) => {
                    assert!(reason.contains("perf_event_open"), "{reason}");
                    println!("kind met here: a power PMU the kernel will not open ({e})");
                    return;
                }
            };
            assert!(
                reason.contains("set aside"),
                "a PMU that opens but is not used must be set aside with a reason: {reason}"
            );
            // Confirm independently that the counter really is unusable, not just misjudged.
            let started = std::time::Instant::now();
            trust::busy_work(std::time::Duration::from_millis(200));
            let parts = raw.read().unwrap().parts;
            let seconds = started.elapsed().as_secs_f64();
            let verdicts: Vec<_> = parts.iter().map(|&j| trust::check(j, seconds)).collect();
            assert!(
                verdicts.iter().any(Result::is_err),
                "the PMU was set aside ({reason}) but its counters read {parts:?} J over {seconds} s"
            );
            println!("kind met here: a power PMU present but not trusted ({reason})");
        }
        (source, reason) => panic!("unexpected choice {source} (perf: {reason:?})"),
    }
}
