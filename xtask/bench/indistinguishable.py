"""A bound that holds for every method: how often can any search, at a budget, evaluate the one
good row of a table, over a family of tables the rest of the table cannot tell apart?
(docs/optimizer-tight-limits.md, "A bound for every method")

For a table T, a constraint and a regret threshold rho (1% for the median target, 5% for p90):
- G is the set of rows within rho of T's best feasible energy b (feasible, energy <= (1+rho) b).
- T0 is T with every row of G made not good: its energy raised to just above (1+rho) b, or its
  constraint value to just above the limit, whichever is closer to what the rows outside G
  predict for it.
- For a row j, Tj is T0 with row j made feasible at an energy of at most b (its energy lowered to
  b if above, its constraint value lowered to the limit if above; a row already so is left).
  In Tj, j is the only row within rho of the best feasible energy: every other feasible row of T0
  costs more than (1+rho) b.
- Any method (deterministic given its seed, whatever it models) evaluates on Tj exactly what it
  evaluates on T0 until it evaluates j, since the two differ only there. So with seeds S and
  budget B it gets within rho on Tj in exactly the runs whose T0 trajectory contains j, and
  summed over a set J of such rows that is at most B * |S| (each run evaluates at most B rows).
  Some Tj therefore sees at most floor(B * |S| / |J|) runs within rho, whatever the method.
  A median regret <= 1% needs at least ceil(|S|/2) runs within 1%, a p90 <= 5% at least
  ceil(0.9 |S|) runs within 5%.
- Which Tj count: those the rest of the table cannot tell from T. A GP (Matern-5/2, ARD, noise,
  on log energy and log constraint value, inputs by level index as the replay normalizes them,
  hyperparameters fitted once to the whole of T: the best a fit could learn) predicts each row
  of Tj from all its other rows (leave one out, closed form). Tj is in the family at level z when
  row j's values in Tj are within z predictive standard deviations, and so is every change T0
  makes (each row of G predicted from the rows outside G). For comparison the script prints how
  many standard deviations T's own good rows are from what the rest of T predicts: T itself is
  at that level of surprise.

Run from the repository root, in the venv `cargo xtask bench optimizer` creates:
    target/bench-venv/bin/python xtask/bench/indistinguishable.py [--budget 10] [--seeds 100]
"""
import argparse
import csv
import math
import warnings

import numpy as np
from sklearn.gaussian_process import GaussianProcessRegressor
from sklearn.gaussian_process.kernels import ConstantKernel, Matern, WhiteKernel

warnings.filterwarnings("ignore")  # sklearn's convergence notes on bounds
DATA = "kpo-agent/tests/data/seed-paper"
# The eight rows of the bench table (xtask/src/bench_optimizer.rs, PROBLEMS).
PROBLEMS = [
    ("NodeJS", "nodejs", "p99_us", 92.0),
    ("NetPIPE 64 B", "netpipe_64B", "time_s", 0.21),
    ("NetPIPE 8 KiB", "netpipe_8192B", "time_s", 0.366),
    ("NetPIPE 64 KiB", "netpipe_65536B", "time_s", 1.493),
    ("NetPIPE 512 KiB", "netpipe_524288B", "time_s", 5.454),
    ("NetPIPE 8 KiB", "netpipe_8192B", "time_s", 0.3294),
    ("NetPIPE 512 KiB", "netpipe_524288B", "time_s", 4.9086),
    ("NodeJS", "nodejs", "p99_us", 100.0),
]
LEVELS = [1.0, 1.5, 2.0, 2.5, 3.0]
NUDGE = 1e-4  # "just above": a relative step far below any row's noise


class Surface:
    """One output's GP, hyperparameters fitted once to the whole table, on the standardized log."""

    def __init__(self, x, values):
        self.x = x
        logs = np.log(values)
        self.mean, self.sd = logs.mean(), logs.std()
        kernel = ConstantKernel(1.0) * Matern(length_scale=[0.3, 0.3], nu=2.5) + WhiteKernel(1e-3)
        gp = GaussianProcessRegressor(kernel, n_restarts_optimizer=5, random_state=0)
        gp.fit(x, (logs - self.mean) / self.sd)
        # k(X) includes the fitted noise on its diagonal: a row's value is a noisy mean of runs.
        self.k = gp.kernel_(x)

    def standard(self, values):
        return (np.log(values) - self.mean) / self.sd

    def leave_one_out(self, values):
        """Each row's predictive mean and sd (standardized log) given every other row's value."""
        inverse = np.linalg.inv(self.k)
        y = self.standard(values)
        diag = np.diag(inverse)
        return y - (inverse @ y) / diag, 1.0 / np.sqrt(diag)

    def given_outside(self, values, held):
        """The predictive mean and sd of the rows `held` given the rows outside it."""
        out = ~held
        y = self.standard(values)
        k_oo = self.k[np.ix_(out, out)]
        k_ho = self.k[np.ix_(held, out)]
        mu = k_ho @ np.linalg.solve(k_oo, y[out])
        cov = self.k[np.ix_(held, held)] - k_ho @ np.linalg.solve(k_oo, k_ho.T)
        return mu, np.sqrt(np.diag(cov))

    def z(self, value, mu, sd):
        return abs(self.standard(np.array([value]))[0] - mu) / sd


def family(energy, limited, limit, rho, e_model, c_model):
    """The rows j whose Tj exists, each with the level z it needs; T0's own level; and the level
    of T's good rows (how far they are from what the rows outside G predict)."""
    feasible = limited <= limit
    best = energy[feasible].min()
    good = feasible & (energy <= (1 + rho) * best)
    e0, c0 = energy.copy(), limited.copy()
    e_mu, e_sd = e_model.given_outside(energy, good)
    c_mu, c_sd = c_model.given_outside(limited, good)
    t0_level, t_level = 0.0, 0.0
    for n, g in enumerate(np.flatnonzero(good)):
        t_level = max(t_level, e_model.z(energy[g], e_mu[n], e_sd[n]))
        raised_e = (1 + rho) * best * (1 + NUDGE)
        raised_c = limit * (1 + NUDGE)
        z_e = e_model.z(max(raised_e, energy[g]), e_mu[n], e_sd[n])
        z_c = c_model.z(raised_c, c_mu[n], c_sd[n])
        if z_e <= z_c:
            e0[g] = max(raised_e, energy[g])
        else:
            c0[g] = raised_c
        t0_level = max(t0_level, min(z_e, z_c))
    e_loo, e_loo_sd = e_model.leave_one_out(e0)
    c_loo, c_loo_sd = c_model.leave_one_out(c0)
    levels = {}
    for j in range(len(energy)):
        ej = min(energy[j], best)
        cj = min(limited[j], limit)
        levels[j] = max(
            e_model.z(ej, e_loo[j], e_loo_sd[j]),
            c_model.z(cj, c_loo[j], c_loo_sd[j]),
        )
    return levels, t0_level, t_level, int(good.sum())


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--budget", type=int, default=10)
    parser.add_argument("--seeds", type=int, default=100)
    args = parser.parse_args()
    evaluations = args.budget * args.seeds
    needs = {0.01: math.ceil(args.seeds / 2), 0.05: math.ceil(0.9 * args.seeds)}
    print(
        f"budget {args.budget}, {args.seeds} seeds: some Tj has at most floor({evaluations} / |J|) runs "
        f"within rho; median <= 1% needs {needs[0.01]} runs within 1%, p90 <= 5% needs "
        f"{needs[0.05]} within 5%"
    )
    header = " | ".join(f"z<={z:g}" for z in LEVELS)
    print(f"| table | constraint | target | rows within rho in T | T's own level | T0's level | {header} |")
    print("| --- " * (6 + len(LEVELS)) + "|")
    for label, table, column, limit in PROBLEMS:
        rows = list(csv.DictReader(open(f"{DATA}/{table}_linux_tuned.csv")))
        itrs = sorted({float(r["itr_us"]) for r in rows})
        freqs = sorted({float(r["freq_mhz"]) for r in rows})
        x = np.array(
            [
                [itrs.index(float(r["itr_us"])) / (len(itrs) - 1), freqs.index(float(r["freq_mhz"])) / (len(freqs) - 1)]
                for r in rows
            ]
        )
        energy = np.array([float(r["energy_j"]) for r in rows])
        limited = np.array([float(r[column]) for r in rows])
        e_model, c_model = Surface(x, energy), Surface(x, limited)
        for rho, target in ((0.01, "median <= 1%"), (0.05, "p90 <= 5%")):
            levels, t0_level, t_level, good = family(energy, limited, limit, rho, e_model, c_model)
            cells = []
            for z in LEVELS:
                size = sum(1 for v in levels.values() if v <= z) if t0_level <= z else 0
                bound = evaluations // size if size else None
                verdict = "" if bound is None else (" **unreachable**" if bound < needs[rho] else "")
                cells.append("-" if bound is None else f"{size} → ≤{bound}{verdict}")
            print(
                f"| {label} | {column}<={limit:g} | {target} | {good} | {t_level:.2f} | {t0_level:.2f} | "
                + " | ".join(cells)
                + " |"
            )


if __name__ == "__main__":
    main()
