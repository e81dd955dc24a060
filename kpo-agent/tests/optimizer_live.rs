//! The live loop against fake actuators (a fake coalescing backend and the real cpufreq actuator
//! on a temporary sysfs tree) and a synthetic server with a noisy, load-dependent response
//! surface whose optimum is known.
//!
//! Surface (load L requests/s, rx-usecs r, max frequency f MHz):
//! - joules per request `1 + 0.8 ((f - f*)/1000)² + 0.5 ((r - r*)/50)²` with `f* = 1000 + 0.8 L`,
//!   `r* = 30 + L/100` (so (40 µs, 1800 MHz) at 1000 req/s, (50 µs, 2600 MHz) at 2000 req/s), 1% noise;
//! - p99 `80 + 2r + 120·1800/f` µs, 2% noise; the SLO is p99 <= 300 µs, which rules out long
//!   interrupt delays at low frequency;
//! - load with 2% noise.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use kpo_agent::actuate::coalesce::{AdaptiveMode, CoalesceSettings, FakeCoalesce, RxUsecsKnob};
use kpo_agent::actuate::cpufreq::{CpufreqMaxFreq, PolicySelect};
use kpo_agent::actuate::{ActuateError, KnobSet};
use kpo_agent::advise::optimizer::live::{
    Actuators, Change, Gate, LiveConfig, LiveEvent, LiveOptimizer, MeasureError, Measurement,
    MeasurementSource, Phase, Slo,
};
use kpo_agent::advise::optimizer::space::{KnobSpec, Space};
use kpo_agent::energy::EnergySource;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const SLO_P99: f64 = 300.0;

fn optimum(load: f64) -> (f64, f64) {
    (30.0 + load / 100.0, 1000.0 + 0.8 * load)
}

fn true_joules(rx: f64, f: f64, load: f64) -> f64 {
    let (r_opt, f_opt) = optimum(load);
    1.0 + 0.8 * ((f - f_opt) / 1000.0).powi(2) + 0.5 * ((rx - r_opt) / 50.0).powi(2)
}

fn true_p99(rx: f64, f: f64) -> f64 {
    80.0 + 2.0 * rx + 120.0 * 1800.0 / f
}

/// The synthetic server: reads the configuration from the fakes, not from the loop.
struct Server {
    nic: FakeCoalesce,
    max_freq_file: PathBuf,
    load: Arc<Mutex<f64>>,
    /// Multiplies energy (a machine that changed under the held configuration).
    energy_scale: Arc<Mutex<f64>>,
    rng: ChaCha8Rng,
}

impl MeasurementSource for Server {
    fn measure(&mut self) -> Result<Measurement, MeasureError> {
        let rx = self
            .nic
            .settings("eth0")
            .ok_or_else(|| MeasureError("no eth0".into()))?
            .rx_usecs as f64;
        let khz: f64 = std::fs::read_to_string(&self.max_freq_file)
            .map_err(|e| MeasureError(e.to_string()))?
            .trim()
            .parse()
            .map_err(|_| MeasureError("bad scaling_max_freq".into()))?;
        let f = khz / 1000.0;
        let nominal = *self.load.lock().unwrap();
        let load = nominal * (1.0 + 0.02 * self.rng.gen_range(-1.0..1.0));
        let j = true_joules(rx, f, nominal)
            * *self.energy_scale.lock().unwrap()
            * (1.0 + 0.01 * self.rng.gen_range(-1.0..1.0));
        let p99 = true_p99(rx, f) * (1.0 + 0.02 * self.rng.gen_range(-1.0..1.0));
        Ok(Measurement {
            energy_j: j * load,
            energy_source: EnergySource::Estimated,
            requests: load,
            window_s: 1.0,
            p99_us: p99,
            load_rps: load,
        })
    }
}

/// Records every configuration applied.
struct Recording {
    inner: KnobSet,
    history: Arc<Mutex<Vec<Vec<f64>>>>,
}

impl Actuators for Recording {
    fn read(&mut self) -> Result<Vec<f64>, ActuateError> {
        self.inner.read_all()
    }
    fn apply(&mut self, values: &[f64]) -> Result<(), ActuateError> {
        self.inner.apply_all(values)?;
        self.history.lock().unwrap().push(values.to_vec());
        Ok(())
    }
}

struct Rig {
    _tmp: tempfile::TempDir,
    nic: FakeCoalesce,
    max_freq_file: PathBuf,
    history: Arc<Mutex<Vec<Vec<f64>>>>,
    load: Arc<Mutex<f64>>,
    energy_scale: Arc<Mutex<f64>>,
}

impl Rig {
    /// Start: rx-usecs 0, maximum frequency 3000 MHz, 1000 req/s.
    fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let policy = tmp.path().join("devices/system/cpu/cpufreq/policy0");
        std::fs::create_dir_all(&policy).unwrap();
        for (f, v) in [
            ("cpuinfo_min_freq", "1200000"),
            ("cpuinfo_max_freq", "3000000"),
            ("scaling_min_freq", "1200000"),
            ("scaling_max_freq", "3000000"),
        ] {
            std::fs::write(policy.join(f), format!("{v}\n")).unwrap();
        }
        let nic = FakeCoalesce::new();
        nic.add_nic(
            "eth0",
            CoalesceSettings {
                rx_usecs: 0,
                adaptive_rx: false,
            },
        );
        Rig {
            max_freq_file: policy.join("scaling_max_freq"),
            _tmp: tmp,
            nic,
            history: Arc::default(),
            load: Arc::new(Mutex::new(1000.0)),
            energy_scale: Arc::new(Mutex::new(1.0)),
        }
    }

    fn sys_root(&self) -> &Path {
        self._tmp.path()
    }

    fn knobs(&self) -> KnobSet {
        let rx = RxUsecsKnob::take(self.nic.clone(), "eth0", AdaptiveMode::Respect, 1000).unwrap();
        let freq = CpufreqMaxFreq::open(self.sys_root(), PolicySelect::All).unwrap();
        KnobSet::new(vec![Box::new(rx), Box::new(freq)])
    }

    fn space() -> Space {
        Space::new(vec![
            KnobSpec::range("rx-usecs:eth0", 0.0, 100.0, 10.0),
            KnobSpec::range("cpufreq:max_mhz", 1200.0, 3000.0, 200.0),
        ])
        .unwrap()
    }

    fn config() -> LiveConfig {
        LiveConfig {
            slo: Slo {
                p99_us_max: Some(SLO_P99),
                min_throughput_rps: None,
            },
            budget: 20,
            recheck_every: 5,
            seed: 1,
            ..LiveConfig::default()
        }
    }

    fn loop_with<G: Gate>(&self, gate: G) -> LiveOptimizer<Recording, Server, G> {
        let server = Server {
            nic: self.nic.clone(),
            max_freq_file: self.max_freq_file.clone(),
            load: self.load.clone(),
            energy_scale: self.energy_scale.clone(),
            rng: ChaCha8Rng::seed_from_u64(42),
        };
        let act = Recording {
            inner: self.knobs(),
            history: self.history.clone(),
        };
        LiveOptimizer::new(Self::space(), act, server, gate, Self::config()).unwrap()
    }

    /// The configuration the fakes hold now.
    fn state(&self) -> Vec<f64> {
        let rx = self.nic.settings("eth0").unwrap().rx_usecs as f64;
        let khz: f64 = std::fs::read_to_string(&self.max_freq_file)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        vec![rx, khz / 1000.0]
    }
}

struct Allow;
impl Gate for Allow {
    fn review(&mut self, _: &Change) -> bool {
        true
    }
}

fn run_until_holding<A: Actuators, G: Gate>(
    lo: &mut LiveOptimizer<A, Server, G>,
    max: usize,
) -> usize {
    for i in 1..=max {
        lo.step().unwrap();
        if lo.phase() == Phase::Holding {
            return i;
        }
    }
    panic!("no convergence within {max} windows; log: {:#?}", lo.log());
}

fn assert_near_optimum(config: &[f64], load: f64) {
    let (r, f) = optimum(load);
    assert!(
        (config[0] - r).abs() <= 10.0 && (config[1] - f).abs() <= 200.0,
        "held {config:?}, optimum ({r}, {f}) at {load} req/s"
    );
    let j = true_joules(config[0], config[1], load);
    assert!(
        j <= 1.05,
        "held {config:?} costs {j} J/request, optimum 1.0"
    );
    assert!(true_p99(config[0], config[1]) <= SLO_P99);
}

/// Every breach is followed at once by a revert to a configuration measured feasible before.
fn assert_breaches_reverted(log: &[LiveEvent]) {
    let mut feasible_seen: Vec<Vec<f64>> = Vec::new();
    for (i, e) in log.iter().enumerate() {
        match e {
            LiveEvent::Measured {
                config,
                feasible: true,
                ..
            } => feasible_seen.push(config.clone()),
            LiveEvent::SloBreach { config, .. } => {
                // Within the same step: the revert, before anything else is applied.
                let next_change = log[i + 1..]
                    .iter()
                    .find(|e| {
                        matches!(
                            e,
                            LiveEvent::Reverted { .. }
                                | LiveEvent::Applied { .. }
                                | LiveEvent::Measured { .. }
                        )
                    })
                    .unwrap_or_else(|| panic!("breach at {config:?} is the last event"));
                match next_change {
                    LiveEvent::Reverted { from, to } => {
                        assert_eq!(from, config);
                        assert!(
                            feasible_seen.contains(to),
                            "reverted to {to:?}, never seen feasible"
                        );
                    }
                    other => panic!("after a breach at {config:?} came {other:?}, not a revert"),
                }
            }
            _ => {}
        }
    }
}

#[test]
fn a_point_breaking_the_slo_is_reverted_at_once() {
    let rig = Rig::new();
    let mut lo = rig.loop_with(Allow);
    assert_eq!(lo.start(), &[0.0, 3000.0]);
    // Window 1 measures the start; the first space-filling proposal is the far corner
    // (100 µs, 1200 MHz), whose p99 (about 460 µs) breaks the SLO.
    let ev = lo.step().unwrap();
    assert!(ev
        .iter()
        .any(|e| matches!(e, LiveEvent::Applied { config, .. } if config == &vec![100.0, 1200.0])));
    assert_eq!(rig.state(), vec![100.0, 1200.0]);
    let ev = lo.step().unwrap();
    assert!(
        matches!(
            ev[0],
            LiveEvent::Measured {
                feasible: false,
                ..
            }
        ),
        "{ev:?}"
    );
    assert!(ev.iter().any(|e| matches!(e, LiveEvent::SloBreach { .. })));
    assert!(ev
        .iter()
        .any(|e| matches!(e, LiveEvent::Reverted { to, .. } if to == &vec![0.0, 3000.0])));
    assert!(
        !ev.iter().any(|e| matches!(e, LiveEvent::Applied { .. })),
        "nothing new in the revert step"
    );
    // The actuators' history: the bad point, then straight back to the start.
    assert_eq!(
        *rig.history.lock().unwrap(),
        vec![vec![100.0, 1200.0], vec![0.0, 3000.0]]
    );
    assert_eq!(rig.state(), vec![0.0, 3000.0]);
    assert_eq!(rig.nic.history().last().unwrap().1.rx_usecs, 0);
}

#[test]
fn converges_to_the_optimum_region_and_holds_it() {
    let rig = Rig::new();
    let mut lo = rig.loop_with(Allow);
    let windows = run_until_holding(&mut lo, 60);
    let held = lo.held().unwrap().to_vec();
    assert_near_optimum(&held, 1000.0);
    assert_eq!(rig.state(), held, "the actuators hold the best");
    assert!(lo
        .log()
        .iter()
        .any(|e| matches!(e, LiveEvent::Converged { .. })));
    let evaluations = lo.optimizer().observations().len();
    assert!(
        evaluations <= 20,
        "budget 20, used {evaluations} in {windows} windows"
    );
    assert_breaches_reverted(lo.log());
    // Every applied configuration was inside the policy's space (bounds and steps).
    let space = Rig::space();
    for c in rig.history.lock().unwrap().iter() {
        assert!(space.contains(c), "{c:?} outside the space");
    }
    // Holding: the configuration no longer moves, and re-checks pass.
    let before = rig.history.lock().unwrap().len();
    let ev = lo.run(10).unwrap();
    assert_eq!(rig.history.lock().unwrap().len(), before);
    let rechecks: Vec<_> = ev
        .iter()
        .filter(|e| matches!(e, LiveEvent::Recheck { .. }))
        .collect();
    assert_eq!(rechecks.len(), 2);
    assert!(rechecks
        .iter()
        .all(|e| matches!(e, LiveEvent::Recheck { ok: true, .. })));
    // Energy in every event is labelled with its source.
    let json = serde_json::to_string(&lo.log()[0]).unwrap();
    assert!(json.contains(r#""energy_source":"estimated""#), "{json}");
}

#[test]
fn a_load_change_triggers_re_optimization() {
    let rig = Rig::new();
    let mut lo = rig.loop_with(Allow);
    run_until_holding(&mut lo, 60);
    assert_near_optimum(lo.held().unwrap(), 1000.0);
    assert_eq!(lo.restarts(), 0);

    *rig.load.lock().unwrap() = 2000.0;
    let ev = lo.step().unwrap();
    assert!(
        ev.iter().any(|e| matches!(e, LiveEvent::LoadChanged { from_rps, to_rps } if *from_rps < 1100.0 && *to_rps > 1900.0)),
        "{ev:?}"
    );
    assert!(ev.iter().any(|e| matches!(e, LiveEvent::Restarted { .. })));
    assert_eq!(lo.restarts(), 1);
    assert_eq!(lo.phase(), Phase::Exploring);
    run_until_holding(&mut lo, 60);
    let held = lo.held().unwrap().to_vec();
    assert_near_optimum(&held, 2000.0);
    assert_eq!(rig.state(), held);
    assert_breaches_reverted(lo.log());
}

#[test]
fn a_failed_recheck_restarts_the_search() {
    let rig = Rig::new();
    let mut lo = rig.loop_with(Allow);
    run_until_holding(&mut lo, 60);
    // Same load, but the held configuration now costs 30% more.
    *rig.energy_scale.lock().unwrap() = 1.3;
    let ev = lo.run(5).unwrap();
    assert!(
        ev.iter()
            .any(|e| matches!(e, LiveEvent::Recheck { ok: false, .. })),
        "{ev:?}"
    );
    assert!(ev.iter().any(|e| matches!(e, LiveEvent::Restarted { .. })));
    assert_eq!(lo.phase(), Phase::Exploring);
}

/// A policy that forbids frequencies below 1600 MHz.
struct FloorPolicy {
    refused: usize,
}

impl Gate for FloorPolicy {
    fn review(&mut self, change: &Change) -> bool {
        assert_eq!(change.knobs, vec!["rx-usecs:eth0", "cpufreq:max_mhz"]);
        let ok = change.to[1] >= 1600.0;
        if !ok {
            self.refused += 1;
        }
        ok
    }
}

#[test]
fn the_gate_decides_what_is_applied() {
    let rig = Rig::new();
    let mut lo = rig.loop_with(FloorPolicy { refused: 0 });
    run_until_holding(&mut lo, 60);
    assert!(lo
        .log()
        .iter()
        .any(|e| matches!(e, LiveEvent::Refused { .. })));
    for c in rig.history.lock().unwrap().iter() {
        assert!(c[1] >= 1600.0, "applied {c:?} although the gate refused it");
    }
    // The optimum (40 µs, 1800 MHz) is allowed, so it is still found.
    assert_near_optimum(lo.held().unwrap(), 1000.0);
}
