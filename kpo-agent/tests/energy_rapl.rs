//! RAPL through powercap sysfs, on temporary trees.

use std::path::Path;

use kpo_agent::energy::rapl::{counter_delta, RaplMeter, RaplReader};
use kpo_agent::energy::{EnergyError, EnergyMeter, EnergySource};

fn zone(root: &Path, id: &str, name: &str, energy_uj: u64, max_uj: u64) {
    let z = root.join("class/powercap").join(id);
    std::fs::create_dir_all(&z).unwrap();
    std::fs::write(z.join("name"), format!("{name}\n")).unwrap();
    std::fs::write(z.join("energy_uj"), format!("{energy_uj}\n")).unwrap();
    std::fs::write(z.join("max_energy_range_uj"), format!("{max_uj}\n")).unwrap();
}

fn set_energy(root: &Path, id: &str, energy_uj: u64) {
    std::fs::write(
        root.join("class/powercap").join(id).join("energy_uj"),
        format!("{energy_uj}\n"),
    )
    .unwrap();
}

const MAX: u64 = 262_143_328_850;

/// Two packages, each with core and dram subzones, and a psys zone.
fn server_tree(root: &Path) {
    zone(root, "intel-rapl:0", "package-0", 1_000_000, MAX);
    zone(root, "intel-rapl:0:0", "core", 500_000, MAX);
    zone(root, "intel-rapl:0:1", "dram", 200_000, 65_712_999_613);
    zone(root, "intel-rapl:1", "package-1", 3_000_000, MAX);
    zone(root, "intel-rapl:1:0", "core", 700_000, MAX);
    zone(root, "intel-rapl:2", "psys", 9_000_000, MAX);
    // Not RAPL zones: ignored.
    zone(root, "intel-rapl-mmio:0", "package-0", 1, MAX);
    std::fs::create_dir_all(root.join("class/powercap/dtpm")).unwrap();
}

#[test]
fn selects_package_zones_and_sums_their_energy() {
    let tmp = tempfile::tempdir().unwrap();
    server_tree(tmp.path());
    let reader = RaplReader::discover(tmp.path(), false).unwrap();
    let names: Vec<&str> = reader.zones().iter().map(|z| z.name.as_str()).collect();
    assert_eq!(
        names,
        vec!["package-0", "package-1"],
        "subzones and psys would double count"
    );
    assert_eq!(reader.zones()[0].max_energy_range_uj, MAX);

    let mut meter = RaplMeter::open(tmp.path(), false).unwrap();
    assert_eq!(meter.source(), EnergySource::Rapl);
    set_energy(tmp.path(), "intel-rapl:0", 1_000_000 + 2_500_000); // +2.5 J
    set_energy(tmp.path(), "intel-rapl:1", 3_000_000 + 1_250_000); // +1.25 J
    set_energy(tmp.path(), "intel-rapl:2", 99_000_000); // psys: not counted
    let r = meter.read().unwrap();
    assert!((r.joules - 3.75).abs() < 1e-12, "{r:?}");
    assert_eq!(r.source, EnergySource::Rapl);
    // Nothing used since: zero.
    assert_eq!(meter.read().unwrap().joules, 0.0);
    // The label travels with the reading.
    assert!(serde_json::to_string(&r)
        .unwrap()
        .contains(r#""source":"rapl""#));
}

#[test]
fn wrap_around_uses_max_energy_range() {
    assert_eq!(counter_delta(100, 250, 1000), 150);
    assert_eq!(counter_delta(900, 50, 1000), 150);
    assert_eq!(counter_delta(1000, 0, 1000), 0);
    assert_eq!(counter_delta(5, 5, 1000), 0);

    let tmp = tempfile::tempdir().unwrap();
    let max = 65_532_610_987u64;
    zone(
        tmp.path(),
        "intel-rapl:0",
        "package-0",
        max - 1_000_000,
        max,
    );
    let mut meter = RaplMeter::open(tmp.path(), false).unwrap();
    // The counter passes its maximum and restarts from 0: 1 J before the wrap, 2 J after.
    set_energy(tmp.path(), "intel-rapl:0", 2_000_000);
    let r = meter.read().unwrap();
    assert!((r.joules - 3.0).abs() < 1e-9, "{r:?}");
    set_energy(tmp.path(), "intel-rapl:0", 2_500_000);
    assert!((meter.read().unwrap().joules - 0.5).abs() < 1e-12);
}

#[test]
fn dram_on_request_and_psys_as_fallback() {
    let tmp = tempfile::tempdir().unwrap();
    server_tree(tmp.path());
    let with_dram = RaplReader::discover(tmp.path(), true).unwrap();
    let names: Vec<&str> = with_dram.zones().iter().map(|z| z.name.as_str()).collect();
    assert_eq!(names, vec!["package-0", "package-1", "dram"]);

    let tmp = tempfile::tempdir().unwrap();
    zone(tmp.path(), "intel-rapl:0", "psys", 10, MAX);
    zone(tmp.path(), "intel-rapl:0:0", "core", 10, MAX);
    let only_psys = RaplReader::discover(tmp.path(), false).unwrap();
    assert_eq!(only_psys.zones().len(), 1);
    assert_eq!(only_psys.zones()[0].name, "psys");
}

#[test]
fn clear_errors_without_rapl_or_with_bad_files() {
    let tmp = tempfile::tempdir().unwrap();
    let err = RaplMeter::open(tmp.path(), false).unwrap_err();
    assert!(err.to_string().contains("no powercap"), "{err}");

    std::fs::create_dir_all(tmp.path().join("class/powercap")).unwrap();
    assert!(matches!(
        RaplMeter::open(tmp.path(), false),
        Err(EnergyError::NoZones(_))
    ));

    zone(tmp.path(), "intel-rapl:0", "package-0", 0, MAX);
    std::fs::write(
        tmp.path().join("class/powercap/intel-rapl:0/energy_uj"),
        "lots\n",
    )
    .unwrap();
    let err = RaplMeter::open(tmp.path(), false).unwrap_err();
    assert!(matches!(err, EnergyError::Parse { .. }), "{err}");
    assert!(err.to_string().contains("energy_uj"), "{err}");
}

/// Replaces one of a zone's files with a directory: unreadable, even to root.
fn unreadable(root: &Path, id: &str, file: &str) {
    let f = root.join("class/powercap").join(id).join(file);
    std::fs::remove_file(&f).unwrap();
    std::fs::create_dir(&f).unwrap();
}

/// Defect: a zone discovery would not use (a core subzone, psys beside packages) whose name or
/// range could not be read made the whole of RAPL unusable, and the agent fell back to a worse
/// source.
#[test]
fn what_cannot_be_read_of_an_unused_zone_does_not_stop_discovery() {
    let tmp = tempfile::tempdir().unwrap();
    server_tree(tmp.path());
    unreadable(tmp.path(), "intel-rapl:0:0", "name");
    unreadable(tmp.path(), "intel-rapl:2", "max_energy_range_uj");
    let reader = RaplReader::discover(tmp.path(), false).unwrap();
    let names: Vec<&str> = reader.zones().iter().map(|z| z.name.as_str()).collect();
    assert_eq!(names, ["package-0", "package-1"]);
    // With DRAM wanted, a subzone whose name cannot be read may be one: not guessed.
    let err = RaplReader::discover(tmp.path(), true).unwrap_err();
    assert!(err.to_string().contains("intel-rapl:0:0"), "{err}");
    // A top-level zone whose name cannot be read may be a package: not left out of the sum.
    let tmp = tempfile::tempdir().unwrap();
    server_tree(tmp.path());
    unreadable(tmp.path(), "intel-rapl:1", "name");
    let err = RaplReader::discover(tmp.path(), false).unwrap_err();
    assert!(err.to_string().contains("intel-rapl:1"), "{err}");
    // A chosen zone's range still must be read.
    let tmp = tempfile::tempdir().unwrap();
    server_tree(tmp.path());
    unreadable(tmp.path(), "intel-rapl:1", "max_energy_range_uj");
    let err = RaplReader::discover(tmp.path(), false).unwrap_err();
    assert!(err.to_string().contains("max_energy_range_uj"), "{err}");
}
