//! The live loop's search against an in-memory machine (its `Knobs`) and a synthetic server with a
//! noisy, load-dependent response surface whose optimum is known. The loop inside the agent,
//! through the real policy, journal, actuators and guard, is tested in
//! `src/run/deciding_tests.rs`.
//!
//! Surface (load L requests/s, rx-usecs r, max frequency f MHz):
//! - joules per request `1 + 0.8 ((f - f*)/1000)² + 0.5 ((r - r*)/50)²` with `f* = 1000 + 0.8 L`,
//!   `r* = 30 + L/100` (so (40 µs, 1800 MHz) at 1000 req/s, (50 µs, 2600 MHz) at 2000 req/s), 1% noise;
//! - p99 `80 + 2r + 120·1800/f` µs, 2% noise; the SLO is p99 <= 300 µs, which rules out long
//!   interrupt delays at low frequency;
//! - load with 2% noise.

use std::sync::{Arc, Mutex};

use kpo_agent::advise::optimizer::live::{
    ChangeReason, GoBack, Knobs, LiveConfig, LiveEvent, LiveOptimizer, Measurement, Phase,
    RevertFailure, Slo, Tried,
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

/// The machine: the configuration the knobs hold, and every configuration applied.
#[derive(Clone)]
struct Machine {
    state: Arc<Mutex<Vec<f64>>>,
    history: Arc<Mutex<Vec<Vec<f64>>>>,
    /// The lowest frequency the policy allows (refuses below it for good), if any.
    floor_mhz: Option<f64>,
    refused: Arc<Mutex<usize>>,
    /// Converge moves refused for now (a cooldown, the hourly limit) before one is allowed.
    converge_refusals: Arc<Mutex<usize>>,
    /// Converge moves fail (the kernel does not take them).
    converge_fails: Arc<Mutex<bool>>,
    /// A configuration the loop may not go back to (quarantined by the guard since).
    quarantined: Arc<Mutex<Option<Vec<f64>>>>,
}

impl Knobs for Machine {
    fn try_config(&mut self, from: &[f64], to: &[f64], why: ChangeReason) -> Tried {
        assert_eq!(
            from,
            self.state.lock().unwrap().as_slice(),
            "the loop knows the state"
        );
        if why == ChangeReason::Converge && *self.converge_fails.lock().unwrap() {
            return Tried::Failed {
                error: "the kernel did not take it".into(),
                rolled_back: true,
                retry: false,
            };
        }
        let mut left = self.converge_refusals.lock().unwrap();
        if why == ChangeReason::Converge && *left > 0 {
            *left -= 1;
            return Tried::Refused {
                reason: "cooldown".into(),
                retry: true,
            };
        }
        drop(left);
        if self.floor_mhz.is_some_and(|f| to[1] < f) {
            *self.refused.lock().unwrap() += 1;
            return Tried::Refused {
                reason: "out of bounds".into(),
                retry: false,
            };
        }
        *self.state.lock().unwrap() = to.to_vec();
        self.history.lock().unwrap().push(to.to_vec());
        Tried::Applied
    }
    fn allowed(&mut self, to: &[f64]) -> bool {
        self.quarantined.lock().unwrap().as_deref() != Some(to)
    }
    fn revert_to(
        &mut self,
        from: &[f64],
        to: &[f64],
        _why: GoBack,
    ) -> Result<Vec<f64>, RevertFailure> {
        assert_eq!(from, self.state.lock().unwrap().as_slice());
        assert!(
            self.allowed(to),
            "went back to {to:?}, which is quarantined"
        );
        *self.state.lock().unwrap() = to.to_vec();
        self.history.lock().unwrap().push(to.to_vec());
        Ok(to.to_vec())
    }
}

/// The synthetic server: measures whatever the machine holds.
struct Server {
    machine: Machine,
    load: f64,
    /// Multiplies energy (a machine that changed under the held configuration).
    energy_scale: f64,
    /// Added to the next measurement's latency only (a burst that breaks the SLO).
    spike_us: f64,
    /// Clients that wait for each answer (a fixed number of connections): the rate completed is
    /// `load` at a p99 of 200 µs and falls as the configuration makes answers slower.
    closed_loop: bool,
    rng: ChaCha8Rng,
}

impl Server {
    fn measure(&mut self) -> Measurement {
        let (rx, f) = {
            let s = self.machine.state.lock().unwrap();
            (s[0], s[1])
        };
        let served = if self.closed_loop {
            self.load * 200.0 / true_p99(rx, f)
        } else {
            self.load
        };
        let load = served * (1.0 + 0.02 * self.rng.gen_range(-1.0..1.0));
        let j = true_joules(rx, f, self.load)
            * self.energy_scale
            * (1.0 + 0.01 * self.rng.gen_range(-1.0..1.0));
        let p99 = true_p99(rx, f) * (1.0 + 0.02 * self.rng.gen_range(-1.0..1.0))
            + std::mem::take(&mut self.spike_us);
        Measurement {
            energy_j: j * load,
            energy_source: EnergySource::Estimated,
            requests: load,
            window_s: 1.0,
            latency_us: p99,
            load_rps: load,
        }
    }
}

/// The loop, its machine and its server, with every event kept.
struct Rig {
    lo: LiveOptimizer,
    machine: Machine,
    server: Server,
    log: Vec<LiveEvent>,
}

impl Rig {
    /// Start: rx-usecs 0, maximum frequency 3000 MHz, 1000 req/s.
    fn new(floor_mhz: Option<f64>) -> Self {
        Self::starting_at(vec![0.0, 3000.0], floor_mhz)
    }

    fn starting_at(start: Vec<f64>, floor_mhz: Option<f64>) -> Self {
        let machine = Machine {
            state: Arc::new(Mutex::new(start.clone())),
            history: Arc::default(),
            floor_mhz,
            refused: Arc::default(),
            converge_refusals: Arc::default(),
            converge_fails: Arc::default(),
            quarantined: Arc::default(),
        };
        let lo = LiveOptimizer::new(Self::space(), start, Self::config()).unwrap();
        Rig {
            lo,
            server: Server {
                machine: machine.clone(),
                load: 1000.0,
                energy_scale: 1.0,
                spike_us: 0.0,
                closed_loop: false,
                rng: ChaCha8Rng::seed_from_u64(42),
            },
            machine,
            log: Vec::new(),
        }
    }

    /// [`Rig::new`] with `budget` evaluations instead of the default.
    fn with_budget(budget: usize) -> Self {
        let mut rig = Self::new(None);
        let config = LiveConfig {
            budget,
            ..Self::config()
        };
        rig.lo = LiveOptimizer::new(Self::space(), vec![0.0, 3000.0], config).unwrap();
        rig
    }

    fn space() -> Space {
        Space::new(vec![
            KnobSpec::range("ethtool:eth0:rx-usecs", 0.0, 100.0, 10.0),
            KnobSpec::range("cpufreq:policy0:scaling_max_freq", 1200.0, 3000.0, 200.0),
        ])
        .unwrap()
    }

    fn config() -> LiveConfig {
        LiveConfig {
            slo: Slo {
                latency_us_max: Some(SLO_P99),
                min_throughput_rps: None,
            },
            budget: 20,
            recheck_every: 5,
            seed: 1,
            ..LiveConfig::default()
        }
    }

    fn step(&mut self) -> Vec<LiveEvent> {
        let m = self.server.measure();
        let ev = self.lo.step(&m, &mut self.machine).unwrap();
        self.log.extend(ev.iter().cloned());
        ev
    }

    fn run(&mut self, n: usize) -> Vec<LiveEvent> {
        (0..n).flat_map(|_| self.step()).collect()
    }

    fn state(&self) -> Vec<f64> {
        self.machine.state.lock().unwrap().clone()
    }

    fn history(&self) -> Vec<Vec<f64>> {
        self.machine.history.lock().unwrap().clone()
    }
}

fn run_until_holding(rig: &mut Rig, max: usize) -> usize {
    for i in 1..=max {
        rig.step();
        if rig.lo.phase() == Phase::Holding {
            return i;
        }
    }
    panic!("no convergence within {max} windows; log: {:#?}", rig.log);
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
    let mut rig = Rig::new(None);
    assert_eq!(rig.lo.start(), &[0.0, 3000.0]);
    // Window 1 measures the start; the first space-filling proposal is the far corner
    // (100 µs, 1200 MHz), whose p99 (about 460 µs) breaks the SLO.
    let ev = rig.step();
    assert!(ev
        .iter()
        .any(|e| matches!(e, LiveEvent::Applied { config, .. } if config == &vec![100.0, 1200.0])));
    assert_eq!(rig.state(), vec![100.0, 1200.0]);
    let ev = rig.step();
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
    // The machine's history: the bad point, then straight back to the start.
    assert_eq!(rig.history(), vec![vec![100.0, 1200.0], vec![0.0, 3000.0]]);
    assert_eq!(rig.state(), vec![0.0, 3000.0]);
}

/// `budget = 2` is the start and one trial. The trial breaks the SLO: it is measured, and the
/// loop goes back to the start, whose measurement there would be a third evaluation; it is not
/// learned, and `converged` says 2. The machine was written twice (the trial, its revert), then
/// not again.
#[test]
fn a_budget_of_two_ends_at_two_evaluations_after_a_breach() {
    let mut rig = Rig::with_budget(2);
    // The start measured; the first proposal (100 µs, 1200 MHz) breaks the SLO.
    rig.step();
    assert_eq!(rig.history(), [[100.0, 1200.0]]);
    let ev = rig.step();
    assert!(
        ev.iter().any(|e| matches!(e, LiveEvent::SloBreach { .. })),
        "{ev:?}"
    );
    assert_eq!(rig.history(), [[100.0, 1200.0], [0.0, 3000.0]]);
    // The window right after the return is the breach's as much: neither judged nor learned.
    let ev = rig.step();
    assert!(
        matches!(ev.as_slice(), [LiveEvent::Measured { learned: false, .. }]),
        "{ev:?}"
    );
    let ev = rig.step();
    assert!(
        matches!(
            ev.as_slice(),
            [
                LiveEvent::Measured { learned: false, .. },
                LiveEvent::Converged { best, evaluations: 2, .. },
            ] if *best == [0.0, 3000.0]
        ),
        "{ev:?}"
    );
    assert_eq!(rig.lo.phase(), Phase::Holding);
    rig.run(10);
    assert_eq!(rig.history(), [[100.0, 1200.0], [0.0, 3000.0]]);
}

/// A trial sent back before it was measured (no request completed under it, or a window without
/// an energy reading broke the SLO) is one of the budget's evaluations all the same: at
/// `budget = 2` it is the only trial, and the machine is written twice (the trial, its revert).
#[test]
fn a_trial_sent_back_unmeasured_counts_against_the_budget() {
    for no_requests in [true, false] {
        let mut rig = Rig::with_budget(2);
        rig.step();
        assert_eq!(rig.history(), [[100.0, 1200.0]]);
        let ev = if no_requests {
            rig.lo.no_requests_under_trial(&mut rig.machine)
        } else {
            rig.lo
                .breach_unmeasured(SLO_P99 + 100.0, 1000.0, &mut rig.machine)
        };
        assert!(
            matches!(ev.last(), Some(LiveEvent::Reverted { .. })),
            "no_requests {no_requests}: {ev:?}"
        );
        // The window right after the return: neither judged nor learned.
        let ev = rig.step();
        assert!(
            matches!(ev.as_slice(), [LiveEvent::Measured { learned: false, .. }]),
            "no_requests {no_requests}: {ev:?}"
        );
        let ev = rig.step();
        assert!(
            matches!(
                ev.as_slice(),
                [
                    LiveEvent::Measured { .. },
                    LiveEvent::Converged { best, evaluations: 2, .. },
                ] if *best == [0.0, 3000.0]
            ),
            "no_requests {no_requests}: {ev:?}"
        );
        rig.run(10);
        assert_eq!(
            rig.history(),
            [[100.0, 1200.0], [0.0, 3000.0]],
            "no_requests {no_requests}"
        );
    }
}

#[test]
fn converges_to_the_optimum_region_and_holds_it() {
    let mut rig = Rig::new(None);
    let windows = run_until_holding(&mut rig, 60);
    let held = rig.lo.held().unwrap().to_vec();
    assert_near_optimum(&held, 1000.0);
    assert_eq!(rig.state(), held, "the machine holds the best");
    assert!(rig
        .log
        .iter()
        .any(|e| matches!(e, LiveEvent::Converged { .. })));
    let evaluations = rig.lo.optimizer().observations().len();
    assert!(
        evaluations <= 20,
        "budget 20, used {evaluations} in {windows} windows"
    );
    assert_breaches_reverted(&rig.log);
    // Every applied configuration was inside the space (bounds and steps).
    let space = Rig::space();
    for c in rig.history() {
        assert!(space.contains(&c), "{c:?} outside the space");
    }
    // Holding: the configuration no longer moves, and re-checks pass.
    let before = rig.history().len();
    let ev = rig.run(10);
    assert_eq!(rig.history().len(), before);
    let rechecks: Vec<_> = ev
        .iter()
        .filter(|e| matches!(e, LiveEvent::Recheck { .. }))
        .collect();
    assert_eq!(rechecks.len(), 2);
    assert!(rechecks
        .iter()
        .all(|e| matches!(e, LiveEvent::Recheck { ok: true, .. })));
    // Energy in every measurement is labelled with its source.
    let json = serde_json::to_string(&rig.log[0]).unwrap();
    assert!(json.contains(r#""energy_source":"estimated""#), "{json}");
}

#[test]
fn a_load_change_triggers_re_optimization() {
    let mut rig = Rig::new(None);
    run_until_holding(&mut rig, 60);
    assert_near_optimum(rig.lo.held().unwrap(), 1000.0);
    assert_eq!(rig.lo.restarts(), 0);

    rig.server.load = 2000.0;
    let ev = rig.step();
    assert!(
        ev.iter().any(|e| matches!(e, LiveEvent::LoadChanged { from_rps, to_rps } if *from_rps < 1100.0 && *to_rps > 1900.0)),
        "{ev:?}"
    );
    assert!(ev.iter().any(|e| matches!(e, LiveEvent::Restarted { .. })));
    assert_eq!(rig.lo.restarts(), 1);
    assert_eq!(rig.lo.phase(), Phase::Exploring);
    run_until_holding(&mut rig, 60);
    let held = rig.lo.held().unwrap().to_vec();
    assert_near_optimum(&held, 2000.0);
    assert_eq!(rig.state(), held);
    assert_breaches_reverted(&rig.log);
}

/// Under clients that wait for each answer, the rate completed moves with the configuration (here
/// from 0.59 to 1.3 times the rate at a p99 of 200 µs): that is no change of load, and the search
/// runs to its end without a restart. A change of the clients' number is still seen, at the
/// configuration held.
#[test]
fn a_rate_that_moves_with_the_configuration_is_no_load_change() {
    let mut rig = Rig::new(None);
    rig.server.closed_loop = true;
    run_until_holding(&mut rig, 60);
    assert!(
        !rig.log.iter().any(|e| matches!(
            e,
            LiveEvent::LoadChanged { .. } | LiveEvent::Restarted { .. }
        )),
        "{:#?}",
        rig.log
    );
    assert_eq!(rig.lo.restarts(), 0);
    rig.server.load = 2000.0;
    let ev = rig.step();
    assert!(
        ev.iter().any(
            |e| matches!(e, LiveEvent::LoadChanged { from_rps, to_rps } if to_rps / from_rps > 1.9)
        ),
        "{ev:?}"
    );
    assert_eq!(rig.lo.restarts(), 1);
}

#[test]
fn a_failed_recheck_restarts_the_search() {
    let mut rig = Rig::new(None);
    run_until_holding(&mut rig, 60);
    // Same load, but the held configuration now costs 30% more.
    rig.server.energy_scale = 1.3;
    let ev = rig.run(5);
    assert!(
        ev.iter()
            .any(|e| matches!(e, LiveEvent::Recheck { ok: false, .. })),
        "{ev:?}"
    );
    assert!(ev.iter().any(|e| matches!(e, LiveEvent::Restarted { .. })));
    assert_eq!(rig.lo.phase(), Phase::Exploring);
}

#[test]
fn refused_configurations_are_never_applied() {
    // A policy that forbids frequencies below 1600 MHz.
    let mut rig = Rig::new(Some(1600.0));
    run_until_holding(&mut rig, 60);
    assert!(*rig.machine.refused.lock().unwrap() > 0);
    assert!(rig
        .log
        .iter()
        .any(|e| matches!(e, LiveEvent::Refused { retry: false, .. })));
    for c in rig.history() {
        assert!(c[1] >= 1600.0, "applied {c:?} although it was refused");
    }
    // The optimum (40 µs, 1800 MHz) is allowed, so it is still found.
    assert_near_optimum(rig.lo.held().unwrap(), 1000.0);
}

/// The search converged but moving to its best was refused for now (a cooldown): the last trial is
/// not left applied; the best is tried again each trial and held once allowed.
#[test]
fn a_best_refused_for_now_is_applied_once_allowed() {
    // A start from which the search's last trial is not its best (found by trying starts; the
    // search is deterministic).
    let mut rig = Rig::starting_at(vec![50.0, 2000.0], None);
    *rig.machine.converge_refusals.lock().unwrap() = 2;
    run_until_holding(&mut rig, 60);
    let best = rig.lo.optimizer().best_feasible().unwrap().point;
    assert_eq!(*rig.machine.converge_refusals.lock().unwrap(), 1);
    assert_ne!(rig.state(), best, "the last trial is still applied");
    rig.step();
    assert_eq!(*rig.machine.converge_refusals.lock().unwrap(), 0);
    assert_ne!(rig.state(), best, "refused once more");
    rig.step();
    assert_eq!(rig.state(), best);
    assert_eq!(rig.lo.held(), Some(best.as_slice()));
}

/// The search converged but moving to its best failed: the loop holds the last trial, and still
/// re-checks it against what it was measured at, so a machine that changed under it restarts the
/// search (before, nothing was re-checked until the load changed).
#[test]
fn a_trial_held_because_the_best_failed_is_still_rechecked() {
    // A start from which the search's last trial is not its best, and well within the SLO
    // (found by trying starts; the search is deterministic).
    let mut rig = Rig::starting_at(vec![0.0, 1600.0], None);
    *rig.machine.converge_fails.lock().unwrap() = true;
    run_until_holding(&mut rig, 60);
    let best = rig.lo.optimizer().best_feasible().unwrap().point;
    let held = rig.state();
    assert_ne!(held, best, "the last trial is still applied");
    assert_eq!(rig.lo.held(), Some(held.as_slice()));
    assert!(rig
        .log
        .iter()
        .any(|e| matches!(e, LiveEvent::ApplyFailed { config, .. } if *config == best)));
    rig.server.energy_scale = 1.3;
    let events = rig.run(Rig::config().recheck_every);
    assert!(
        events.iter().any(|e| matches!(
            e,
            LiveEvent::Recheck { config, ok: false, .. } if *config == held
        )),
        "{events:?}"
    );
    assert!(events
        .iter()
        .any(|e| matches!(e, LiveEvent::Restarted { .. })));
}

/// A start that breaks the SLO, with nothing known to meet it: the loop changes nothing (no
/// configuration is known to be safer) and learns the start once, however long it stays there.
#[test]
fn a_start_that_breaks_the_slo_is_left_and_learned_once() {
    // 100 µs at 1200 MHz: p99 460 µs against 300.
    let mut rig = Rig::starting_at(vec![100.0, 1200.0], None);
    let events = rig.run(30);
    assert_eq!(
        events
            .iter()
            .filter(|e| matches!(e, LiveEvent::SloBreach { .. }))
            .count(),
        30
    );
    assert!(rig.history().is_empty(), "{:?}", rig.history());
    assert_eq!(rig.lo.optimizer().observations().len(), 1);
}

/// A trial the loop could not measure (no energy reading) that breaks the SLO goes back at once,
/// as a measured one does; one within the SLO changes nothing.
#[test]
fn an_unmeasured_trial_that_breaks_the_slo_goes_back() {
    let mut rig = Rig::new(None);
    rig.run(4);
    let before = rig.state();
    assert!(rig
        .lo
        .breach_unmeasured(SLO_P99 - 1.0, 1000.0, &mut rig.machine)
        .is_empty());
    assert_eq!(rig.state(), before);
    let target = rig
        .lo
        .optimizer()
        .best_feasible()
        .map_or_else(|| rig.lo.start().to_vec(), |o| o.point);
    assert_ne!(before, target, "the trial held is not the best");
    let events = rig
        .lo
        .breach_unmeasured(SLO_P99 + 100.0, 1000.0, &mut rig.machine);
    assert!(
        matches!(events[0], LiveEvent::SloBreach { .. }),
        "{events:?}"
    );
    assert!(
        matches!(&events[1], LiveEvent::Reverted { to, .. } if *to == target),
        "{events:?}"
    );
    assert_eq!(rig.state(), target);
    assert_eq!(rig.lo.current(), target.as_slice());
}

/// Every proposal refused for good (a policy floor above the whole range): one step gives up
/// after a few instead of going through every candidate, each journaled, in one window.
#[test]
fn one_step_sets_aside_at_most_a_few_proposals() {
    use kpo_agent::advise::optimizer::live::MAX_SET_ASIDE_PER_STEP;
    let mut rig = Rig::new(Some(4000.0));
    for step in 1..=5 {
        rig.step();
        assert_eq!(
            *rig.machine.refused.lock().unwrap(),
            step * MAX_SET_ASIDE_PER_STEP,
            "after step {step}"
        );
    }
    assert!(rig.history().is_empty());
}

/// Going back after a breach, the loop skips a best it may no longer go to (quarantined by the
/// guard since it was measured) for the next one.
#[test]
fn a_breach_goes_back_to_the_best_not_quarantined() {
    let mut rig = Rig::new(None);
    // Until the best measured is neither the start nor the trial in place.
    let mut found = None;
    for _ in 0..15 {
        rig.step();
        let points = rig.lo.optimizer().feasible_points();
        if points.len() >= 2 && points[0].point != rig.state() && points[0].point != rig.lo.start()
        {
            found = Some(points);
            break;
        }
        if rig.lo.phase() == Phase::Holding {
            break;
        }
    }
    let points = found.expect("a trial in place while a better point is known");
    *rig.machine.quarantined.lock().unwrap() = Some(points[0].point.clone());
    let trial = rig.state();
    rig.server.spike_us = 10_000.0;
    let events = rig.step();
    let to = events
        .iter()
        .find_map(|e| match e {
            LiveEvent::Reverted { from, to } if *from == trial => Some(to.clone()),
            _ => None,
        })
        .unwrap_or_else(|| panic!("{events:?}"));
    let next = points
        .iter()
        .map(|o| o.point.clone())
        .find(|p| *p != points[0].point && *p != trial)
        .unwrap_or_else(|| rig.lo.start().to_vec());
    assert_eq!(to, next, "the next best allowed");
}

/// At shutdown a trial in place makes way for the best measured; a measured best the loop holds
/// stays, and nothing is written.
#[test]
fn settle_replaces_a_trial_and_keeps_a_held_best() {
    let mut rig = Rig::new(None);
    // Start, a first trial that breaks the SLO, the window after going back, a second trial.
    rig.run(4);
    assert_eq!(rig.lo.phase(), Phase::Exploring);
    let best = rig.lo.optimizer().best_feasible().unwrap().point;
    assert_ne!(rig.state(), best, "a trial is in place");
    let events = rig.lo.settle(&mut rig.machine);
    assert!(
        matches!(events.as_slice(), [LiveEvent::Settled { to, .. }] if *to == best),
        "{events:?}"
    );
    assert_eq!(rig.state(), best);
    let mut rig = Rig::new(None);
    run_until_holding(&mut rig, 60);
    let held = rig.state();
    let writes = rig.history().len();
    assert!(rig.lo.settle(&mut rig.machine).is_empty());
    assert_eq!(rig.state(), held);
    assert_eq!(rig.history().len(), writes);
}
