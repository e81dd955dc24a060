//! A measured energy source that stops giving figures while the agent runs is set aside after
//! three windows in a row without one, and the sources after it are tried as at start
//! (`energy::handover::MeterWatch`): on powercap trees that freeze, with the estimate reading a
//! /proc of the test's making.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kpo_agent::energy::estimate::{EstimatedMeter, PowerModel};
use kpo_agent::energy::handover::{MeterWatch, Rechoose, SetAside, SET_ASIDE_AFTER_WINDOWS};
use kpo_agent::energy::{
    choose_meter_after, choose_meter_with, trust, EnergyError, EnergyMeter, EnergyReading,
    EnergySource, MeterChoice,
};
use kpo_agent::output::events::{encode, Event};

const TICK: Duration = Duration::from_secs(1);

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

/// A sysfs-like tree with one RAPL package zone at 0 µJ, and a /proc with a `stat`.
struct Machine {
    sys: tempfile::TempDir,
    proc_dir: tempfile::TempDir,
}

impl Machine {
    fn new() -> Self {
        let sys = tempfile::tempdir().unwrap();
        let z = sys.path().join("class/powercap/intel-rapl:0");
        write(&z.join("name"), "package-0\n");
        write(&z.join("energy_uj"), "0\n");
        write(&z.join("max_energy_range_uj"), &format!("{}\n", 1u64 << 40));
        let proc_dir = tempfile::tempdir().unwrap();
        write(
            &proc_dir.path().join("stat"),
            "cpu  10 0 10 100 0 0 0 0 0 0\ncpu0 10 0 10 100 0 0 0 0 0 0\n",
        );
        Self { sys, proc_dir }
    }

    /// The estimate's clock: CPU time in /proc/stat (one CPU, `busy` and `idle` jiffies).
    fn set_cpu_time(&self, busy: u64, idle: u64) {
        write(
            &self.proc_dir.path().join("stat"),
            &format!("cpu  {busy} 0 0 {idle} 0 0 0 0 0 0\ncpu0 {busy} 0 0 {idle} 0 0 0 0 0 0\n"),
        );
    }

    fn set_energy_uj(&self, uj: u64) {
        write(
            &self
                .sys
                .path()
                .join("class/powercap/intel-rapl:0/energy_uj"),
            &format!("{uj}\n"),
        );
    }

    /// RAPL, chosen as the agent does at start (the counter moves while the CPU works).
    fn rapl(&self) -> MeterChoice {
        let choice = choose_meter_with(
            self.sys.path(),
            self.proc_dir.path(),
            PowerModel::default(),
            TICK,
            &mut || self.set_energy_uj(300_000),
        )
        .unwrap();
        assert_eq!(choice.meter.source(), EnergySource::Rapl);
        choice
    }

    /// The agent's way of choosing again, on this machine's trees; the source each call was
    /// given goes into `asked`.
    fn rechoose(&self, asked: Arc<Mutex<Vec<EnergySource>>>) -> Rechoose {
        let (sys, proc_dir): (PathBuf, PathBuf) =
            (self.sys.path().into(), self.proc_dir.path().into());
        Box::new(move |after| {
            asked.lock().unwrap().push(after);
            choose_meter_after(
                Some(after),
                &sys,
                &proc_dir,
                PowerModel::default(),
                TICK,
                &mut || {},
            )
        })
    }
}

/// One window: its reading, told to the watch as the run loop does.
fn window(watch: &mut MeterWatch) -> (Result<EnergyReading, String>, Option<SetAside>) {
    let reading = watch
        .read()
        .expect("a meter")
        .map_err(|e: EnergyError| e.to_string());
    let set_aside = watch.after_window(reading.as_ref().map(|_| ()).map_err(Clone::clone));
    (reading, set_aside)
}

/// A window in which the RAPL counter did not move (judged once `MIN_JUDGED` has passed).
fn frozen_window(watch: &mut MeterWatch) -> Option<SetAside> {
    std::thread::sleep(trust::MIN_JUDGED);
    let (reading, set_aside) = window(watch);
    let error = reading.unwrap_err();
    assert!(error.contains("did not advance"), "{error}");
    set_aside
}

/// The `energy_source` event's line, checked against docs/events.schema.json.
fn event_line(watch: &MeterWatch, set_aside: SetAside) -> serde_json::Value {
    let schema: serde_json::Value =
        serde_json::from_str(include_str!("../../docs/events.schema.json")).unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    let line = encode(
        &Event::energy_source(watch, set_aside),
        "h",
        time::OffsetDateTime::UNIX_EPOCH,
    );
    let v: serde_json::Value = serde_json::from_slice(&line).unwrap();
    let errors: Vec<String> = validator.iter_errors(&v).map(|x| x.to_string()).collect();
    assert!(errors.is_empty(), "{errors:?}\n{v:#}");
    v
}

#[test]
fn a_counter_that_freezes_mid_run_is_handed_over_to_the_next_source() {
    let machine = Machine::new();
    let asked = Arc::new(Mutex::new(Vec::new()));
    let mut watch = MeterWatch::new(Some(machine.rapl().meter), machine.rechoose(asked.clone()));
    machine.set_energy_uj(400_000);
    let (reading, set_aside) = window(&mut watch);
    assert_eq!(reading.unwrap().joules, 0.1);
    assert!(set_aside.is_none());

    // The counter freezes: the first windows are null with the reason, the source stays.
    for _ in 1..SET_ASIDE_AFTER_WINDOWS {
        assert!(frozen_window(&mut watch).is_none());
        assert_eq!(watch.meter().unwrap().source(), EnergySource::Rapl);
    }
    assert!(asked.lock().unwrap().is_empty());
    let set_aside = frozen_window(&mut watch).expect("set aside at the third window");
    assert_eq!(*asked.lock().unwrap(), [EnergySource::Rapl]);
    assert_eq!(set_aside.from, EnergySource::Rapl);
    assert!(
        set_aside
            .reason
            .starts_with("no figure for 3 windows in a row; the last: rapl: package-0: the counter did not advance"),
        "{}",
        set_aside.reason
    );
    // The tree has no perf power PMU: it is skipped with why, and the estimate is used.
    assert_eq!(set_aside.skipped.len(), 1, "{:?}", set_aside.skipped);
    assert_eq!(set_aside.skipped[0].0, EnergySource::PerfPower);
    assert_eq!(set_aside.error, None);
    assert_eq!(watch.meter().unwrap().source(), EnergySource::Estimated);

    let v = event_line(&watch, set_aside);
    assert_eq!(v["kind"], "energy_source");
    assert_eq!(v["from"], "rapl");
    assert_eq!(v["energy"]["source"], "estimated");
    assert_eq!(v["energy"]["domains"], serde_json::json!(["cpu"]));
    assert_eq!(v["energy"]["skipped"][0]["source"], "perf_power");

    // The next window is the estimate's, opened after it began: no figure for it. The one after
    // has one, though the RAPL counter moves again: RAPL is not tried again.
    let (reading, set_aside) = window(&mut watch);
    assert!(reading
        .unwrap_err()
        .starts_with("estimated: chosen during this window"),);
    assert!(set_aside.is_none());
    machine.set_energy_uj(900_000);
    // (A /proc/stat that did not move gives the estimate nothing to go on: time passes.)
    machine.set_cpu_time(40, 200);
    let (reading, set_aside) = window(&mut watch);
    assert_eq!(reading.unwrap().source, EnergySource::Estimated);
    assert!(set_aside.is_none());
}

#[test]
fn windows_without_a_figure_must_come_in_a_row() {
    let machine = Machine::new();
    let asked = Arc::new(Mutex::new(Vec::new()));
    let mut watch = MeterWatch::new(Some(machine.rapl().meter), machine.rechoose(asked.clone()));
    let mut uj = 300_000;
    for _ in 0..3 {
        for _ in 1..SET_ASIDE_AFTER_WINDOWS {
            assert!(frozen_window(&mut watch).is_none());
        }
        uj += 100_000;
        machine.set_energy_uj(uj);
        let (reading, set_aside) = window(&mut watch);
        assert_eq!(reading.unwrap().joules, 0.1);
        assert!(set_aside.is_none());
    }
    assert!(asked.lock().unwrap().is_empty());
    assert_eq!(watch.meter().unwrap().source(), EnergySource::Rapl);
}

/// Nothing after the source set aside opens (no PMU, and no /proc/stat for the estimate): the
/// agent has no energy source from then on, and the event says why each one failed.
#[test]
fn no_source_left_leaves_the_agent_without_one() {
    let machine = Machine::new();
    let mut watch = MeterWatch::new(Some(machine.rapl().meter), machine.rechoose(Arc::default()));
    std::fs::remove_file(machine.proc_dir.path().join("stat")).unwrap();
    for _ in 1..SET_ASIDE_AFTER_WINDOWS {
        assert!(frozen_window(&mut watch).is_none());
    }
    let set_aside = frozen_window(&mut watch).expect("set aside");
    assert!(
        set_aside.error.as_deref().unwrap().contains("stat"),
        "{set_aside:?}"
    );
    assert!(watch.meter().is_none());
    assert!(watch.read().is_none());
    let v = event_line(&watch, set_aside);
    assert_eq!(v["energy"]["source"], serde_json::Value::Null);
    assert!(
        v["energy"]["error"].as_str().unwrap().contains("stat"),
        "{v}"
    );
}

/// The estimate has nothing after it: a reading that keeps failing stays its own (null, with
/// the reason), and nothing else is tried.
#[test]
fn the_estimate_is_never_set_aside() {
    let machine = Machine::new();
    let estimate = EstimatedMeter::open(
        machine.proc_dir.path(),
        machine.sys.path(),
        PowerModel::default(),
    )
    .unwrap();
    let mut watch = MeterWatch::new(
        Some(Box::new(estimate)),
        Box::new(|after| panic!("asked to choose after {after}")),
    );
    std::fs::remove_file(machine.proc_dir.path().join("stat")).unwrap();
    for _ in 0..2 * SET_ASIDE_AFTER_WINDOWS {
        let (reading, set_aside) = window(&mut watch);
        assert!(reading.unwrap_err().contains("stat"));
        assert!(set_aside.is_none());
    }
    assert_eq!(watch.meter().unwrap().source(), EnergySource::Estimated);
}

/// A meter whose readings the test gives (`None`: a failed read): a measured source after the
/// one set aside.
struct Moving {
    joules: Arc<Mutex<Option<f64>>>,
}

impl EnergyMeter for Moving {
    fn source(&self) -> EnergySource {
        EnergySource::PerfPower
    }
    fn read(&mut self) -> Result<EnergyReading, EnergyError> {
        let joules = self
            .joules
            .lock()
            .unwrap()
            .ok_or(EnergyError::AfterFailedRead {
                meter: EnergySource::PerfPower,
            })?;
        Ok(EnergyReading {
            joules,
            source: EnergySource::PerfPower,
            parts: vec![joules],
        })
    }
    fn domains(&self) -> Vec<String> {
        vec!["energy-pkg:cpu0".into()]
    }
    fn packages(&self) -> usize {
        1
    }
}

/// A measured source chosen in place of another checks itself (100 ms of CPU work) after the
/// next window began: that window's reading is refused, not short, and not counted as the new
/// source's failure; the one after counts.
#[test]
fn a_measured_source_chosen_mid_run_skips_the_window_it_was_checked_in() {
    let machine = Machine::new();
    let joules = Arc::new(Mutex::new(Some(2.5)));
    let counter = joules.clone();
    let mut watch = MeterWatch::new(
        Some(machine.rapl().meter),
        Box::new(move |_| {
            Ok(MeterChoice {
                meter: Box::new(Moving {
                    joules: counter.clone(),
                }),
                skipped: Vec::new(),
            })
        }),
    );
    for _ in 1..SET_ASIDE_AFTER_WINDOWS {
        assert!(frozen_window(&mut watch).is_none());
    }
    let set_aside = frozen_window(&mut watch).expect("set aside");
    assert_eq!(set_aside.from, EnergySource::Rapl);
    assert_eq!(watch.meter().unwrap().source(), EnergySource::PerfPower);

    let (reading, set_aside) = window(&mut watch);
    let error = reading.unwrap_err();
    assert!(
        error.starts_with("perf_power: chosen during this window"),
        "{error}"
    );
    assert!(set_aside.is_none());
    // Two failures of its own right after: two in a row, not three.
    *joules.lock().unwrap() = None;
    for _ in 1..SET_ASIDE_AFTER_WINDOWS {
        let (reading, set_aside) = window(&mut watch);
        assert!(reading.is_err());
        assert!(set_aside.is_none());
    }
    *joules.lock().unwrap() = Some(3.0);
    let (reading, _) = window(&mut watch);
    assert_eq!(reading.unwrap().joules, 3.0);

    // The third in a row sets it aside too.
    *joules.lock().unwrap() = None;
    for _ in 1..SET_ASIDE_AFTER_WINDOWS {
        let (reading, set_aside) = window(&mut watch);
        assert!(reading.is_err());
        assert!(set_aside.is_none());
    }
    let (_, set_aside) = window(&mut watch);
    assert_eq!(set_aside.expect("set aside").from, EnergySource::PerfPower);
}
