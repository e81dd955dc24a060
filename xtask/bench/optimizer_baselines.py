#!/usr/bin/env python3
"""Baselines for `cargo xtask bench optimizer`: Optuna's TPE sampler (with `constraints_func`) and
scikit-optimize's `gp_minimize` (infeasible points penalised), replayed against a measured table.

The rules match `kpo optimize replay` (docs/optimizer.md):
- only the table's rows can be evaluated; each knob is searched over its level indices
  (0..k-1, the same coordinates the replay normalizes by), and a suggestion that is not a row of
  the table is snapped to the nearest row in normalized coordinates (level index / (k-1)); every
  suggestion counts as an evaluation, also when it snaps to a row evaluated before;
- each seed's run starts from the row the replay started from (given on the command line) and
  evaluates it first; the budget includes the start;
- regret is 100 * (best feasible evaluated objective - table's best feasible) / |table's best|,
  infinite when no feasible row was evaluated.

Input: one JSON object on stdin:
  {"grid": PATH, "knobs": [COL...], "minimize": COL, "constraints": [[COL, "<=" | ">=", X]...],
   "budget": N, "starts": [row index per seed, seeds 0..S-1], "methods": ["tpe", "gp_minimize"]}
Output: one JSON object on stdout: {"tpe": [regret or null per seed], "gp_minimize": [...]}.
"""

import csv
import json
import math
import os
import sys
import warnings

# One BLAS thread per process: the models are tiny, and threads only add contention.
for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "1")


def load(spec):
    with open(spec["grid"], newline="") as f:
        rows = list(csv.DictReader(f))
    knobs = spec["knobs"]
    levels = [sorted({float(r[k]) for r in rows}) for k in knobs]
    pos = []
    for r in rows:
        p = []
        for k, lv in zip(knobs, levels):
            i = lv.index(float(r[k]))
            p.append(i / (len(lv) - 1) if len(lv) > 1 else 0.0)
        pos.append(p)
    obj = [float(r[spec["minimize"]]) for r in rows]

    def holds(r):
        for col, op, x in spec["constraints"]:
            v = float(r[col])
            if op == "<=" and not v <= x:
                return False
            if op == ">=" and not v >= x:
                return False
        return True

    def violation(r):
        """Relative violation summed over constraints (0 when feasible)."""
        s = 0.0
        for col, op, x in spec["constraints"]:
            v = float(r[col])
            d = (v - x) if op == "<=" else (x - v)
            s += max(d, 0.0) / (abs(x) if x != 0 else 1.0)
        return s

    feasible = [holds(r) for r in rows]
    viol = [violation(r) for r in rows]
    cons = [
        [(float(r[col]) - x) if op == "<=" else (x - float(r[col])) for col, op, x in spec["constraints"]]
        for r in rows
    ]
    best = min(o for o, f in zip(obj, feasible) if f)
    return rows, levels, pos, obj, feasible, viol, cons, best


def snap(pos, idx, levels):
    """The row nearest to level indices `idx` in normalized coordinates (first on ties)."""
    q = [i / (len(lv) - 1) if len(lv) > 1 else 0.0 for i, lv in zip(idx, levels)]
    best, bd = 0, math.inf
    for j, p in enumerate(pos):
        d = sum((a - b) ** 2 for a, b in zip(p, q))
        if d < bd - 1e-15:
            best, bd = j, d
    return best


def row_levels(pos, j, levels):
    return [round(p * (len(lv) - 1)) for p, lv in zip(pos[j], levels)]


def regret(evaluated, obj, feasible, best):
    vals = [obj[j] for j in evaluated if feasible[j]]
    if not vals:
        return None
    return 100.0 * (min(vals) - best) / (abs(best) if best != 0 else 1.0)


def run_tpe(data, budget, start, seed):
    import optuna

    rows, levels, pos, obj, feasible, viol, cons, best = data
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # Three startup trials (the start and two random ones), as gp_minimize's n_initial_points and
    # KPO's start plus two space-filling points: with Optuna's default of 10, TPE would be random
    # search at this budget.
    sampler = optuna.samplers.TPESampler(
        seed=seed,
        n_startup_trials=min(3, budget),
        constraints_func=lambda t: t.user_attrs["c"],
    )
    study = optuna.create_study(direction="minimize", sampler=sampler)
    names = [f"k{i}" for i in range(len(levels))]
    study.enqueue_trial(dict(zip(names, row_levels(pos, start, levels))))
    evaluated = []
    for _ in range(budget):
        t = study.ask()
        idx = [t.suggest_int(n, 0, len(lv) - 1) for n, lv in zip(names, levels)]
        j = snap(pos, idx, levels)
        evaluated.append(j)
        # Optuna's convention: a constraint value <= 0 is satisfied.
        t.set_user_attr("c", cons[j])
        study.tell(t, obj[j])
    assert evaluated[0] == start
    return regret(evaluated, obj, feasible, best)


def run_gp_minimize(data, budget, start, seed):
    from skopt import gp_minimize
    from skopt.space import Integer

    rows, levels, pos, obj, feasible, viol, cons, best = data
    evaluated = []
    seen = []

    def f(x):
        j = snap(pos, [int(v) for v in x], levels)
        evaluated.append(j)
        seen.append(obj[j])
        if feasible[j]:
            return obj[j]
        # Penalty: the worst objective seen so far, scaled up by the relative violation, so an
        # infeasible point is never better than any feasible one and a larger miss costs more.
        return max(seen) * (1.0 + viol[j])

    dims = [Integer(0, len(lv) - 1) for lv in levels]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gp_minimize(
            f,
            dims,
            n_calls=budget,
            n_initial_points=min(3, budget),
            x0=[row_levels(pos, start, levels)],
            random_state=seed,
        )
    assert evaluated[0] == start and len(evaluated) == budget, (evaluated, budget)
    return regret(evaluated, obj, feasible, best)


_DATA = None
_BUDGET = None


def _task(t):
    method, seed, start = t
    runner = {"tpe": run_tpe, "gp_minimize": run_gp_minimize}[method]
    return runner(_DATA, _BUDGET, start, seed)


def main():
    warnings.simplefilter("ignore")  # Optuna: constraints_func is "experimental"
    spec = json.load(sys.stdin)
    data = load(spec)
    methods = spec.get("methods", ["tpe", "gp_minimize"])
    tasks = [(m, seed, start) for m in methods for seed, start in enumerate(spec["starts"])]
    jobs = max(1, int(spec.get("jobs", 1)))
    global _DATA, _BUDGET
    _DATA, _BUDGET = data, spec["budget"]
    if jobs > 1:
        import multiprocessing

        with multiprocessing.get_context("fork").Pool(jobs) as pool:
            results = pool.map(_task, tasks, chunksize=1)
    else:
        results = [_task(t) for t in tasks]
    out = {m: [] for m in methods}
    for (m, _, _), r in zip(tasks, results):
        out[m].append(r)
    json.dump(out, sys.stdout)
    print()


if __name__ == "__main__":
    main()
