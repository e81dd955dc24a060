//! The perf power PMU kinds that machines of this kind show, with real kernel counters: a fake
//! PMU tree names the kernel's *software* PMU, so `perf_event_open` opens a real counter that
//! advances (`cpu-clock`), never moves (`emulation-faults`, always 0 on x86), or moves far faster
//! than any package draws power (`cpu-clock` scaled to a joule per nanosecond). `choose_meter`
//! must take the first, and set the other two aside with the reason, falling back to the estimate.
use std::path::Path;

use kpo_agent::energy::{choose_meter, estimate::PowerModel, EnergyMeter, EnergySource};

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
    let mut choice = choose_meter(sys.path(), proc_dir.path(), PowerModel::default()).unwrap();
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
    let choice = choose_meter(sys.path(), proc_dir.path(), PowerModel::default()).unwrap();
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
    let choice = choose_meter(sys.path(), proc_dir.path(), PowerModel::default()).unwrap();
    assert_eq!(choice.meter.source(), EnergySource::Estimated);
    let reason = perf_reason(&choice);
    assert!(
        reason.contains("set aside") && reason.contains("above the ceiling"),
        "{reason}"
    );
}
