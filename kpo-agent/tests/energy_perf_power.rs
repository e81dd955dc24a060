//! The perf `power` PMU: discovery and parsing on temporary sysfs-like trees, the order of
//! `open_meter` (powercap RAPL, perf power PMU, estimate). The real machine's PMU is checked as root
//! in the integration tests (`energy_trust::this_machines_power_pmu_is_read_or_reported_absent`).
//!
//! No counter is read from a fake tree: a tree's PMU type is given a number no PMU has, so
//! `perf_event_open` on the running kernel refuses it and the meter falls back, as it would on a
//! machine whose PMU cannot be opened.

use std::path::Path;

use kpo_agent::energy::estimate::PowerModel;
use kpo_agent::energy::perf_power::{
    counts_to_joules, parse_config, parse_cpu_list, PerfPowerMeter, PowerPmu,
};
use kpo_agent::energy::{choose_meter, choose_meter_with, open_meter, EnergyError, EnergySource};

/// No PMU has this type (types are small dynamic numbers), so opening it fails with ENOENT.
/// How often the agent reads the meter (its default tick).
const TICK: std::time::Duration = std::time::Duration::from_secs(1);
const ABSENT_TYPE: u32 = 0x7fff_fff0;
const PKG_SCALE: &str = "2.3283064365386962890625e-10";

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

fn event(pmu: &Path, name: &str, terms: &str, scale: &str) {
    write(&pmu.join("events").join(name), &format!("{terms}\n"));
    write(
        &pmu.join("events").join(format!("{name}.scale")),
        &format!("{scale}\n"),
    );
    write(&pmu.join("events").join(format!("{name}.unit")), "Joules\n");
}

/// A two-package server's power PMU, as the intel rapl perf driver lays it out.
fn power_pmu(sys: &Path) -> std::path::PathBuf {
    let pmu = sys.join("bus/event_source/devices/power");
    write(&pmu.join("type"), &format!("{ABSENT_TYPE}\n"));
    write(&pmu.join("cpumask"), "0,18\n");
    write(&pmu.join("format/event"), "config:0-7\n");
    event(&pmu, "energy-cores", "event=0x01", PKG_SCALE);
    event(&pmu, "energy-pkg", "event=0x02", PKG_SCALE);
    event(&pmu, "energy-ram", "event=0x03", "1.52587890625e-05");
    pmu
}

fn proc_stat(dir: &Path) {
    write(
        &dir.join("stat"),
        "cpu  10 0 10 100 0 0 0 0 0 0\ncpu0 5 0 5 50 0 0 0 0 0 0\ncpu1 5 0 5 50 0 0 0 0 0 0\n",
    );
}

#[test]
fn discovers_events_scale_and_package_cpus() {
    let tmp = tempfile::tempdir().unwrap();
    power_pmu(tmp.path());
    let pmu = PowerPmu::discover(tmp.path(), false).unwrap();
    assert_eq!(pmu.pmu_type, ABSENT_TYPE);
    let names: Vec<&str> = pmu.events.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, vec!["energy-pkg", "energy-cores", "energy-ram"]);
    let pkg = &pmu.events[0];
    assert_eq!(pkg.config, 0x02);
    assert_eq!(pkg.scale, 2f64.powi(-32));
    assert_eq!(pmu.events[1].config, 0x01);
    assert_eq!(pmu.events[2].scale, 2f64.powi(-16));
    // Only the package is summed: the cores are inside it.
    let summed: Vec<&str> = pmu.selected_events().map(|e| e.name.as_str()).collect();
    assert_eq!(summed, vec!["energy-pkg"]);
    assert_eq!(pmu.cpus, vec![0, 18]);

    let with_ram = PowerPmu::discover(tmp.path(), true).unwrap();
    let summed: Vec<&str> = with_ram
        .selected_events()
        .map(|e| e.name.as_str())
        .collect();
    assert_eq!(summed, vec!["energy-pkg", "energy-ram"]);
}

#[test]
fn without_cpumask_one_cpu_per_package_from_topology() {
    let tmp = tempfile::tempdir().unwrap();
    let pmu = power_pmu(tmp.path());
    std::fs::remove_file(pmu.join("cpumask")).unwrap();
    for (cpu, pkg) in [(0, 0), (1, 1), (2, 0), (3, 1), (10, 2)] {
        write(
            &tmp.path().join(format!(
                "devices/system/cpu/cpu{cpu}/topology/physical_package_id"
            )),
            &format!("{pkg}\n"),
        );
    }
    // Not CPUs, or offline without topology: ignored.
    std::fs::create_dir_all(tmp.path().join("devices/system/cpu/cpufreq")).unwrap();
    std::fs::create_dir_all(tmp.path().join("devices/system/cpu/cpu11")).unwrap();
    assert_eq!(
        PowerPmu::discover(tmp.path(), false).unwrap().cpus,
        vec![0, 1, 10]
    );
}

#[test]
fn parses_config_terms_formats_and_cpu_lists() {
    let tmp = tempfile::tempdir().unwrap();
    let pmu = tmp.path();
    let p = Path::new("events/x");
    // Without a format file, event is the low bits.
    assert_eq!(parse_config("event=0x02\n", p, pmu).unwrap(), 2);
    assert_eq!(parse_config("event=7", p, pmu).unwrap(), 7);
    write(&pmu.join("format/event"), "config:0-7\n");
    write(&pmu.join("format/umask"), "config:8-15\n");
    assert_eq!(
        parse_config("event=0x02,umask=0x1", p, pmu).unwrap(),
        0x0102
    );
    for bad in ["", "event", "event=zz", "event=0x100", "foo=1"] {
        assert!(
            matches!(parse_config(bad, p, pmu), Err(EnergyError::Parse { .. })),
            "{bad:?}"
        );
    }
    write(&pmu.join("format/event"), "config1:0-7\n");
    assert!(
        parse_config("event=1", p, pmu).is_err(),
        "config1 is not ours"
    );

    assert_eq!(parse_cpu_list("0,18\n", p).unwrap(), vec![0, 18]);
    assert_eq!(parse_cpu_list("0-3,8", p).unwrap(), vec![0, 1, 2, 3, 8]);
    for bad in ["", "a", "3-1", "1,,x"] {
        assert!(parse_cpu_list(bad, p).is_err(), "{bad:?}");
    }
}

#[test]
fn counts_convert_to_joules_with_the_scale() {
    let s = 2f64.powi(-32);
    assert_eq!(counts_to_joules(0, 1 << 32, s), 1.0);
    assert_eq!(counts_to_joules(1 << 33, 3 << 33, s), 4.0);
    // The kernel's 64-bit count wraps only after centuries, but the subtraction is modular.
    assert_eq!(counts_to_joules(u64::MAX, (1 << 32) - 1, s), 1.0);
}

#[test]
fn malformed_scale_missing_event_and_wrong_unit_are_clear_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let pmu = power_pmu(tmp.path());

    write(&pmu.join("events/energy-pkg.scale"), "lots\n");
    let err = PowerPmu::discover(tmp.path(), false).unwrap_err();
    assert!(matches!(err, EnergyError::Parse { .. }), "{err}");
    assert!(err.to_string().contains("energy-pkg.scale"), "{err}");
    write(&pmu.join("events/energy-pkg.scale"), "-1\n");
    assert!(PowerPmu::discover(tmp.path(), false).is_err());
    std::fs::remove_file(pmu.join("events/energy-pkg.scale")).unwrap();
    let err = PowerPmu::discover(tmp.path(), false).unwrap_err();
    assert!(matches!(err, EnergyError::Io { .. }), "{err}");

    let tmp = tempfile::tempdir().unwrap();
    let pmu = power_pmu(tmp.path());
    write(&pmu.join("events/energy-ram.unit"), "Watts\n");
    let err = PowerPmu::discover(tmp.path(), false).unwrap_err();
    assert!(err.to_string().contains("Joules"), "{err}");

    // No energy-pkg (and no psys): nothing that covers the package.
    let tmp = tempfile::tempdir().unwrap();
    let pmu = power_pmu(tmp.path());
    std::fs::remove_file(pmu.join("events/energy-pkg")).unwrap();
    let err = PowerPmu::discover(tmp.path(), false).unwrap_err();
    assert!(matches!(err, EnergyError::PerfPmu { .. }), "{err}");
    assert!(err.to_string().contains("neither energy-pkg"), "{err}");
    // psys stands in for the package when it is all there is.
    event(&pmu, "energy-psys", "event=0x05", PKG_SCALE);
    let p = PowerPmu::discover(tmp.path(), false).unwrap();
    let summed: Vec<&str> = p.selected_events().map(|e| e.name.as_str()).collect();
    assert_eq!(summed, vec!["energy-psys"]);
    // It covers the platform: read once, not once per package (0 and 18 here).
    let psys = p.selected_events().next().unwrap();
    assert_eq!(p.cpus_for(psys), &[0]);
    let pkg = &power_pmu_events(tmp.path())[0];
    assert_eq!(p.cpus_for(pkg), &[0, 18]);

    let tmp = tempfile::tempdir().unwrap();
    let pmu = power_pmu(tmp.path());
    write(&pmu.join("type"), "power\n");
    assert!(matches!(
        PowerPmu::discover(tmp.path(), false),
        Err(EnergyError::Parse { .. })
    ));
}

#[test]
fn open_meter_order_rapl_then_perf_then_labelled_estimate() {
    let proc_dir = tempfile::tempdir().unwrap();
    proc_stat(proc_dir.path());

    // A power PMU that the kernel does not know: the meter says why and falls back.
    let sys = tempfile::tempdir().unwrap();
    power_pmu(sys.path());
    let err = PerfPowerMeter::open(sys.path(), false).unwrap_err();
    assert!(matches!(err, EnergyError::PerfOpen { .. }), "{err}");
    assert!(err.to_string().contains("power/energy-pkg/"), "{err}");
    let choice = choose_meter(sys.path(), proc_dir.path(), PowerModel::default(), TICK).unwrap();
    assert_eq!(choice.meter.source(), EnergySource::Estimated);
    let sources: Vec<EnergySource> = choice.skipped.iter().map(|(s, _)| *s).collect();
    assert_eq!(sources, vec![EnergySource::Rapl, EnergySource::PerfPower]);
    assert!(
        choice.skipped[0].1.contains("no powercap"),
        "{:?}",
        choice.skipped
    );
    assert!(
        choice.skipped[1].1.contains("perf_event_open"),
        "{:?}",
        choice.skipped
    );
    let mut meter = open_meter(sys.path(), proc_dir.path(), PowerModel::default(), TICK).unwrap();
    // CPU time passes (the estimate gives no figure over a /proc/stat that did not move).
    write(
        &proc_dir.path().join("stat"),
        "cpu  20 0 20 200 0 0 0 0 0 0\ncpu0 10 0 10 100 0 0 0 0 0 0\ncpu1 10 0 10 100 0 0 0 0 0 0\n",
    );
    assert_eq!(meter.read().unwrap().source, EnergySource::Estimated);

    // A malformed PMU tree: also the estimate, with the parse error as the reason.
    write(
        &sys.path()
            .join("bus/event_source/devices/power/events/energy-pkg.scale"),
        "x\n",
    );
    let choice = choose_meter(sys.path(), proc_dir.path(), PowerModel::default(), TICK).unwrap();
    assert_eq!(choice.meter.source(), EnergySource::Estimated);
    assert!(
        choice.skipped[1].1.contains("energy-pkg.scale"),
        "{:?}",
        choice.skipped
    );

    // Powercap RAPL comes first: with a package zone that advances while the CPU works, the perf
    // PMU is not even tried.
    let z = sys.path().join("class/powercap/intel-rapl:0");
    write(&z.join("name"), "package-0\n");
    write(&z.join("energy_uj"), "5\n");
    write(&z.join("max_energy_range_uj"), "262143328850\n");
    let energy = z.join("energy_uj");
    let choice = choose_meter_with(
        sys.path(),
        proc_dir.path(),
        PowerModel::default(),
        TICK,
        &mut || {
            write(&energy, "1000005\n") // 1 J during the check
        },
    )
    .unwrap();
    assert_eq!(choice.meter.source(), EnergySource::Rapl);
    assert!(choice.skipped.is_empty());

    // Without any PMU directory the reason says there is none.
    let bare = tempfile::tempdir().unwrap();
    let choice = choose_meter(bare.path(), proc_dir.path(), PowerModel::default(), TICK).unwrap();
    assert_eq!(choice.meter.source(), EnergySource::Estimated);
    assert!(
        choice.skipped[1].1.contains("no perf power PMU"),
        "{:?}",
        choice.skipped
    );
}

/// The events of a freshly made PMU tree under `sys` (its `energy-pkg` first).
fn power_pmu_events(sys: &Path) -> Vec<kpo_agent::energy::perf_power::PowerEvent> {
    let other = sys.join("other");
    power_pmu(&other);
    PowerPmu::discover(&other, false).unwrap().events
}
