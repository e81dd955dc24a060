//! The ask/tell optimizer on synthetic problems with known answers.

use kpo_agent::advise::optimizer::bo::{BoConfig, Constraint, Optimizer, ProposalKind};
use kpo_agent::advise::optimizer::space::{KnobSpec, Space};

fn unit_grid(step: f64) -> (Space, Vec<Vec<f64>>) {
    let space = Space::new(vec![
        KnobSpec::range("x0", 0.0, 1.0, step),
        KnobSpec::range("x1", 0.0, 1.0, step),
    ])
    .unwrap();
    let cands = space.enumerate(100_000).unwrap();
    (space, cands)
}

fn dist(a: &[f64], b: &[f64]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).powi(2))
        .sum::<f64>()
        .sqrt()
}

#[test]
fn acquisition_prefers_the_obviously_better_region() {
    // Objective: a bowl centred at (0.2, 0.2). Evaluated: the corners, the centre and two points
    // on the far side. The next proposal must lie near the bowl's bottom.
    let f = |p: &[f64]| 1.0 + 4.0 * ((p[0] - 0.2).powi(2) + (p[1] - 0.2).powi(2));
    let (space, cands) = unit_grid(0.05);
    let cfg = BoConfig {
        initial_points: 0,
        ..BoConfig::default()
    };
    let mut o = Optimizer::new(space, cands, vec![], cfg, 7).unwrap();
    for p in [
        [0.0, 0.0],
        [1.0, 0.0],
        [0.0, 1.0],
        [1.0, 1.0],
        [0.5, 0.5],
        [0.8, 0.6],
        [0.6, 0.9],
    ] {
        o.tell(&p, f(&p), &[]).unwrap();
    }
    let p = o.ask().unwrap().unwrap();
    assert_eq!(p.kind, ProposalKind::ExpectedImprovement);
    assert!(dist(&p.point, &[0.2, 0.2]) <= 0.2, "proposed {:?}", p.point);
    // Its score beats that of a point in the region known to be bad.
    let bad = o.candidate_index(&[0.9, 0.9]).unwrap();
    let scores = o.score(&[p.index, bad]).unwrap();
    assert!(scores[0].value > 10.0 * scores[1].value, "{scores:?}");
}

#[test]
fn infeasible_observations_steer_the_search_towards_the_feasible_region() {
    // Constraint x0 <= 0.3; every observation so far is infeasible (x0 >= 0.5). Before any
    // feasible point exists the proposal maximizes the probability of feasibility, which the
    // infeasible points alone must have taught to be at low x0.
    let (space, cands) = unit_grid(0.1);
    let cfg = BoConfig {
        initial_points: 0,
        ..BoConfig::default()
    };
    let mut o = Optimizer::new(space, cands, vec![Constraint::at_most("c", 0.3)], cfg, 3).unwrap();
    for p in [[0.5, 0.5], [0.7, 0.1], [0.9, 0.9], [0.6, 0.8], [1.0, 0.3]] {
        let obs = o.tell(&p, 1.0 + p[1], &[p[0]]).unwrap();
        assert!(!obs.feasible);
    }
    assert!(o.best_feasible().is_none());
    let p = o.ask().unwrap().unwrap();
    assert_eq!(p.kind, ProposalKind::Feasibility);
    assert!(p.point[0] < 0.5, "proposed {:?}", p.point);
}

/// Objective `(x0-0.8)² + (x1-0.8)²` (unconstrained optimum (0.8, 0.8)) subject to
/// `x0 + x1 <= 1` (constrained optimum (0.5, 0.5), objective 0.19 with the offset), on a 0.05
/// grid, from a start that depends on the seed.
fn constrained_run(seed: u64, budget: usize) -> (Optimizer, usize) {
    let f = |p: &[f64]| (p[0] - 0.8).powi(2) + (p[1] - 0.8).powi(2) + 0.01;
    let g = |p: &[f64]| p[0] + p[1];
    let (space, cands) = unit_grid(0.05);
    let mut o = Optimizer::new(
        space,
        cands,
        vec![Constraint::at_most("sum", 1.0)],
        BoConfig::default(),
        seed,
    )
    .unwrap();
    let start = [[0.0, 0.0], [0.0, 1.0], [1.0, 0.0]][seed as usize % 3];
    o.tell(&start, f(&start), &[g(&start)]).unwrap();
    let mut infeasible_late = 0;
    for i in 1..budget {
        let p = o.ask().unwrap().unwrap();
        let obs = o.tell(&p.point, f(&p.point), &[g(&p.point)]).unwrap();
        if i >= budget / 2 && !obs.feasible {
            infeasible_late += 1;
        }
    }
    (o, infeasible_late)
}

#[test]
fn the_constraint_keeps_the_pick_feasible_and_near_the_constrained_optimum() {
    for seed in 0..3 {
        let (o, infeasible_late) = constrained_run(seed, 16);
        let best = o.best_feasible().expect("a feasible point");
        assert!(
            best.point[0] + best.point[1] <= 1.0 + 1e-12,
            "seed {seed}: {best:?}"
        );
        // Constrained optimum 0.19 at (0.5, 0.5); the unconstrained one (0.01) is infeasible.
        assert!(best.objective <= 0.19 * 1.05, "seed {seed}: best {best:?}");
        // The search learned the boundary: most late proposals are feasible.
        assert!(
            infeasible_late <= 4,
            "seed {seed}: {infeasible_late} late infeasible proposals"
        );
    }
}

#[test]
fn never_proposes_outside_the_candidates_or_twice() {
    let space = Space::new(vec![
        KnobSpec::discrete("rx_usecs", vec![0.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0]),
        KnobSpec::range("freq", 1200.0, 2000.0, 200.0),
    ])
    .unwrap();
    // A grid with holes, as in the seed-paper tables.
    let cands: Vec<Vec<f64>> = space
        .enumerate(1000)
        .unwrap()
        .into_iter()
        .filter(|p| p[0] != 8.0 || p[1] != 1600.0)
        .collect();
    let n = cands.len();
    let mut o = Optimizer::new(space, cands.clone(), vec![], BoConfig::default(), 11).unwrap();
    let mut seen: Vec<Vec<f64>> = Vec::new();
    o.tell(&[16.0, 1400.0], 3.0, &[]).unwrap();
    seen.push(vec![16.0, 1400.0]);
    while let Some(p) = o.ask().unwrap() {
        assert!(cands.contains(&p.point), "{:?} is not a candidate", p.point);
        assert!(!seen.contains(&p.point), "{:?} proposed twice", p.point);
        seen.push(p.point.clone());
        let v = (p.point[0] - 4.0).abs() + (p.point[1] - 1800.0).abs() / 100.0;
        o.tell(&p.point, v, &[]).unwrap();
    }
    assert_eq!(seen.len(), n);
    assert_eq!(o.best_feasible().unwrap().point, vec![4.0, 1800.0]);
}
