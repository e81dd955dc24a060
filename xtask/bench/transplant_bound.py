"""A bound for every method, block by block: move the real table's valley elsewhere on the grid.
(docs/optimizer-tight-limits.md, "A bound for every method"; the one-row version is indistinguishable.py)

For a table T, a constraint, a regret threshold rho (1% for the median target, 5% for p90) and a
block shape a x b (a ITR levels by b frequency levels):
- Outputs are the standardized logs of energy and of the constraint's value, each modelled by a
  GP (Matern-5/2, ARD, noise; inputs by level index / (levels - 1), as the replay normalizes
  them) whose hyperparameters are fitted once to the whole real table T and then held fixed.
  K is its covariance over the rows, noise included, P = K^-1. For a set B of rows, the
  prediction of B from the rows outside it is mu_B = y_B - P_BB^-1 (P y)_B with covariance
  P_BB^-1 (exact Gaussian conditioning).
- A block is a x b consecutive levels whose a*b grid points are all rows of the table (the grids
  have holes; a block with a hole is not used). B* is the block that contains T's best feasible
  row and the most rows within 1% of it; ties go to the block whose centre is nearest the best
  row, then to the lowest levels.
- The dip D = y_B* - mu_B* (per output, per cell of the block): how much lower (or higher) the
  real rows of B* are than what the rest of T predicts for them. Its surprise is the Mahalanobis
  distance z* = sqrt(D_e' Pe_BB D_e + D_c' Pc_BB D_c) (the two outputs' GPs independent).
- T0 is T with B* replaced by mu_B*: the valley flattened to what the rest of the table says.
  Any row of T0 still feasible within rho of T's best b (the flattened rows included) is then
  made not good as indistinguishable.py does: its energy raised to just above (1 + rho) b or its
  constraint value to just above the limit, whichever is fewer standard deviations from what
  the rest of T0 predicts for it (the table prints how many rows and the largest such z).
- For every block B_j of the same shape, Tj is T0 with the same dip D added to B_j's values in
  log space (default, --mode add; the residual at B_j is then T0's own residual there plus D),
  or with --mode replace, B_j's values replaced by their prediction from T0's rows outside B_j
  plus D (the residual is exactly D). With --depth absolute the energy of the whole block is
  then shifted by one constant (in log) so that its best feasible row costs exactly b: the
  valley moved with its absolute depth rather than its depth below the local trend; the shift
  is part of the residual. Without nudges, T_B* is T itself in both modes at relative depth.
  Its surprise z_j is the same Mahalanobis distance of Tj's residual at B_j given Tj's rows
  outside B_j (which are T0's).
- Tj counts only if (separation) its best feasible energy b_j is on a row of B_j and every
  feasible row outside B_j costs more than (1 + rho) b_j, so a run is within rho on Tj only if
  it evaluates a row of B_j; and (plausibility) z_j <= z*: the moved valley is no more surprising,
  to the real table's own model, than the real valley is where it is.
- The count (every method deterministic given its seed, whatever it models): Tj and T0 differ
  only on B_j, so on Tj a run evaluates exactly what it evaluates on T0 until it first evaluates
  a row of B_j. So the runs within rho on Tj are among the runs whose T0 trajectory touches
  B_j. For a set J of counted blocks that are pairwise disjoint, each T0 run of B evaluations
  touches at most B of them, so sum over j in J of (runs within rho on Tj) <= B * seeds, and
  some Tj has at most floor(B * seeds / |J|) runs within rho. A median regret <= 1% needs
  ceil(seeds / 2) runs within 1%, a p90 <= 5% ceil(0.9 seeds) runs within 5%.
  J is a maximum set of pairwise disjoint counted blocks, found exactly (an integer program,
  scipy's HiGHS: one 0/1 variable per counted block, at most one block per row).
- What "as plausible" assumes: that the real table's valley is a feature a table may have at any
  block where the model finds it no more surprising; the model is the GP above with the real
  table's hyperparameters (not refitted to each Tj), and the comparison is of the block's
  residuals only: T0's other changes (B* flattened, which is the least surprising there is, and
  the nudges, whose z is printed) are not in z_j.
- Columns: B* and how many of T's rows within 1% it holds; the lowest energy residual of D in %;
  z* and, since under the model z*^2 is chi-square with 2ab degrees of freedom, the chance
  that noise alone gives a block residual at least that large; per rho: rows nudged in T0 (largest z); then blocks that separate / of those, blocks no
  more surprising than z* / largest disjoint set |J| -> floor(B * seeds / |J|), marked
  unreachable when that is below the runs the target needs; and the smallest surprise level z
  (in place of z*) at which the separating blocks would make the bound bite ("never": even
  every separating block, however surprising, is too few). Compare it with z*.

Run from the repository root, in the venv `cargo xtask bench optimizer` creates:
    target/bench-venv/bin/python xtask/bench/transplant_bound.py [--budget 10] [--seeds 100]
        [--shapes 1x1,2x2,2x3,3x2,3x3,2x4] [--mode add|replace] [--depth relative|absolute]
It fits ten GPs (five tables, two outputs each): a few minutes on a busy two-core machine.
"""
import argparse
import csv
import math
import warnings

import numpy as np
from scipy.optimize import Bounds, LinearConstraint, milp
from scipy.stats import chi2
from sklearn.gaussian_process import GaussianProcessRegressor
from sklearn.gaussian_process.kernels import ConstantKernel, Matern, WhiteKernel

warnings.filterwarnings("ignore")  # sklearn's convergence notes on bounds
# The tables, the eight constraints of the bench table and the nudge, as the one-row bound
# reads them (this script runs from xtask/bench/, where Python finds it).
from indistinguishable import DATA, NUDGE, PROBLEMS  # noqa: E402


class Surface:
    """One output's GP on the standardized log, hyperparameters fitted once to the real table."""

    def __init__(self, x, values):
        logs = np.log(values)
        self.mean, self.sd = logs.mean(), logs.std()
        kernel = ConstantKernel(1.0) * Matern(length_scale=[0.3, 0.3], nu=2.5) + WhiteKernel(1e-3)
        gp = GaussianProcessRegressor(kernel, n_restarts_optimizer=5, random_state=0)
        gp.fit(x, (logs - self.mean) / self.sd)
        # The noise is on the diagonal: a row's value is a noisy mean of runs.
        self.p = np.linalg.inv(gp.kernel_(x))

    def standard(self, values):
        return (np.log(values) - self.mean) / self.sd

    def value(self, standard):
        return np.exp(standard * self.sd + self.mean)

    def predict(self, y, block):
        """The block's predictive mean given every row outside it, and its precision P_BB."""
        p_bb = self.p[np.ix_(block, block)]
        return y[block] - np.linalg.solve(p_bb, (self.p @ y)[block]), p_bb


def blocks(cell, shape, n_itr, n_freq):
    """Every a x b block with no hole, as arrays of row indices in block order."""
    a, b = shape
    found = []
    for i0 in range(n_itr - a + 1):
        for f0 in range(n_freq - b + 1):
            rows = [cell.get((i0 + di, f0 + df)) for di in range(a) for df in range(b)]
            if None not in rows:
                found.append(((i0, f0), np.array(rows)))
    return found


def max_disjoint(chosen, n_rows):
    """The size of a largest set of pairwise disjoint blocks among `chosen` (exact)."""
    if not chosen:
        return 0
    cover = np.zeros((n_rows, len(chosen)))
    for k, rows in enumerate(chosen):
        cover[rows, k] = 1
    result = milp(
        c=-np.ones(len(chosen)),
        constraints=LinearConstraint(cover, 0, 1),
        integrality=np.ones(len(chosen)),
        bounds=Bounds(0, 1),
    )
    assert result.success, result.message
    return int(round(-result.fun))


def biting_level(levels, need, n_rows, evaluations):
    """The smallest surprise z such that the separating blocks with z_j <= z hold enough
    disjoint ones for the bound to bite (floor(evaluations / |J|) < need); None if even all of
    them do not. |J| only grows with z, so a bisection over the sorted z_j finds it."""
    levels = sorted(levels, key=lambda item: item[0])

    def bites(n):
        disjoint = max_disjoint([rows for _, rows in levels[:n]], n_rows)
        return disjoint > 0 and evaluations // disjoint < need

    if not levels or not bites(len(levels)):
        return None
    lo, hi = 0, len(levels)  # bites(hi), not bites(lo)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if bites(mid) else (mid, hi)
    return levels[hi - 1][0]


def analyse(table, shape, limit, needs, evaluations, mode, depth):
    rho_list = tuple(needs)
    e_model, c_model, energy, limited, cell, n_itr, n_freq, coords = table
    feasible = limited <= limit
    best = int(np.flatnonzero(feasible)[np.argmin(energy[feasible])])
    good = feasible & (energy <= 1.01 * energy[best])
    candidates = blocks(cell, shape, n_itr, n_freq)
    around = [(o, r) for o, r in candidates if best in r]
    if not around:
        return None
    bi, bf = coords[best]

    def rank(item):
        (i0, f0), rows = item
        centre = np.hypot(i0 + (shape[0] - 1) / 2 - bi, f0 + (shape[1] - 1) / 2 - bf)
        return (-int(good[rows].sum()), centre, i0, f0)

    origin, star = min(around, key=rank)
    ye, yc = e_model.standard(energy), c_model.standard(limited)
    mu_e, p_star = e_model.predict(ye, star)
    mu_c, pc_star = c_model.predict(yc, star)
    dip_e, dip_c = ye[star] - mu_e, yc[star] - mu_c
    z_star = math.sqrt(dip_e @ p_star @ dip_e + dip_c @ pc_star @ dip_c)
    y0e, y0c = ye.copy(), yc.copy()
    y0e[star], y0c[star] = mu_e, mu_c
    e0, c0 = e_model.value(y0e), c_model.value(y0c)
    f0 = c0 <= limit
    out = {
        "origin": origin,
        "rows_in_star": len(star),
        "good_in_star": int(good[star].sum()),
        "good": int(good.sum()),
        "z_star": z_star,
        # Under the model the residual is Gaussian with covariance P_BB^-1, so z*^2 is
        # chi-square with 2ab degrees of freedom: how often pure noise is at least this odd.
        "p_star": chi2.sf(z_star**2, 2 * len(star)),
        "dip_e": 100 * (math.exp(dip_e.min() * e_model.sd) - 1),
        "blocks": len(candidates),
    }
    for rho in rho_list:
        # Rows still within rho of b in T0 made not good, as indistinguishable.py does: energy
        # raised to just above (1 + rho) b or the constraint to just above the limit, whichever
        # is fewer standard deviations from what the rest of T0 predicts for the row.
        ne, nc = y0e.copy(), y0c.copy()
        raised_e = e_model.standard(np.array([(1 + rho) * energy[best] * (1 + NUDGE)]))[0]
        raised_c = c_model.standard(np.array([limit * (1 + NUDGE)]))[0]
        nudged, nudge_z = 0, 0.0
        for k in np.flatnonzero(f0 & (e0 <= (1 + rho) * energy[best])):
            mu_k, p_k = e_model.predict(y0e, [k])
            cmu_k, cp_k = c_model.predict(y0c, [k])
            z_e = abs(max(raised_e, y0e[k]) - mu_k[0]) * math.sqrt(p_k[0, 0])
            z_c = abs(raised_c - cmu_k[0]) * math.sqrt(cp_k[0, 0])
            if z_e <= z_c:
                ne[k] = max(raised_e, y0e[k])
            else:
                nc[k] = raised_c
            nudged, nudge_z = nudged + 1, max(nudge_z, min(z_e, z_c))
        separated, counted, levels = 0, [], []
        for _, rows in candidates:
            p_jj = e_model.p[np.ix_(rows, rows)]
            ej, cj = ne.copy(), nc.copy()
            if mode == "replace":
                ej[rows] = e_model.predict(ne, rows)[0] + dip_e
                cj[rows] = c_model.predict(nc, rows)[0] + dip_c
                re, rc = dip_e, dip_c
            else:
                ej[rows] += dip_e
                cj[rows] += dip_c
                re = ej[rows] - e_model.predict(ej, rows)[0]
                rc = cj[rows] - c_model.predict(cj, rows)[0]
            ok = c_model.value(cj) <= limit
            inside = np.zeros(len(ok), bool)
            inside[rows] = True
            if not (ok & inside).any():
                continue
            if depth == "absolute":
                # The whole block shifted so that its best feasible row costs T's best, b.
                shift = ye[best] - ej[ok & inside].min()
                ej[rows] += shift
                re = re + shift
            ev = e_model.value(ej)
            b_j = ev[ok & inside].min()
            outside = ok & ~inside
            if outside.any() and ev[outside].min() <= (1 + rho) * b_j:
                continue
            separated += 1
            p_cc = c_model.p[np.ix_(rows, rows)]
            z_j = math.sqrt(re @ p_jj @ re + rc @ p_cc @ rc)
            levels.append((z_j, rows))
            if z_j <= z_star * (1 + 1e-9):
                counted.append(rows)
        out[rho] = (nudged, nudge_z, separated, len(counted), max_disjoint(counted, len(energy)))
        out[rho, "level"] = biting_level(levels, needs[rho], len(energy), evaluations)
    return out


def load(name, column):
    rows = list(csv.DictReader(open(f"{DATA}/{name}_linux_tuned.csv")))
    itrs = sorted({float(r["itr_us"]) for r in rows})
    freqs = sorted({float(r["freq_mhz"]) for r in rows})
    coords = [(itrs.index(float(r["itr_us"])), freqs.index(float(r["freq_mhz"]))) for r in rows]
    x = np.array([[i / (len(itrs) - 1), f / (len(freqs) - 1)] for i, f in coords])
    energy = np.array([float(r["energy_j"]) for r in rows])
    limited = np.array([float(r[column]) for r in rows])
    cell = {c: k for k, c in enumerate(coords)}
    return energy, limited, x, cell, len(itrs), len(freqs), coords, itrs, freqs


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--budget", type=int, default=10)
    parser.add_argument("--seeds", type=int, default=100)
    parser.add_argument("--shapes", default="1x1,2x2,2x3,3x2,3x3,2x4")
    parser.add_argument("--mode", choices=["add", "replace"], default="add")
    parser.add_argument("--depth", choices=["relative", "absolute"], default="relative")
    args = parser.parse_args()
    shapes = [tuple(int(v) for v in s.split("x")) for s in args.shapes.split(",")]
    evaluations = args.budget * args.seeds
    needs = {0.01: math.ceil(args.seeds / 2), 0.05: math.ceil(0.9 * args.seeds)}
    print(
        f"mode {args.mode}, depth {args.depth}, budget {args.budget}, {args.seeds} seeds: some Tj has at most "
        f"floor({evaluations} / |J|) runs within rho; median <= 1% needs {needs[0.01]}, "
        f"p90 <= 5% needs {needs[0.05]}"
    )
    print(
        "| table | constraint | shape (ITR x MHz) | B* (rows within 1% in it / in T) | dip: lowest energy "
        "residual | z* (P(chi2 >= z*^2)) | 1%: T0 rows nudged (max z) | 1%: separated / plausible / disjoint J → bound | "
        "1%: z that bites | 5%: T0 rows nudged (max z) | 5%: separated / plausible / disjoint J → bound | "
        "5%: z that bites |"
    )
    print("| --- " * 12 + "|")
    models = {}
    for label, name, column, limit in PROBLEMS:
        energy, limited, x, cell, n_itr, n_freq, coords, itrs, freqs = load(name, column)
        if (name, "energy_j") not in models:
            models[(name, "energy_j")] = Surface(x, energy)
        if (name, column) not in models:
            models[(name, column)] = Surface(x, limited)
        table = (models[(name, "energy_j")], models[(name, column)], energy, limited, cell, n_itr, n_freq, coords)
        for shape in shapes:
            out = analyse(table, shape, limit, needs, evaluations, args.mode, args.depth)
            if out is None:
                print(f"| {label} | {column}<={limit:g} | {shape[0]}x{shape[1]} | no block without a hole around the best row |")
                continue
            i0, f0 = out["origin"]
            where = (
                f"{itrs[i0]:g}-{itrs[i0 + shape[0] - 1]:g} us x {freqs[f0]:g}-{freqs[f0 + shape[1] - 1]:g} MHz "
                f"({out['good_in_star']} / {out['good']})"
            )
            cells = []
            for rho in (0.01, 0.05):
                nudged, nudge_z, separated, plausible, disjoint = out[rho]
                bound = evaluations // disjoint if disjoint else None
                verdict = " **unreachable**" if bound is not None and bound < needs[rho] else ""
                shown = "-" if bound is None else f"≤{bound}"
                level = out[rho, "level"]
                level = "never" if level is None else f"{level:.2f}"
                cells.append(
                    f"{nudged} ({nudge_z:.2f}) | {separated} / {plausible} / {disjoint} → {shown}{verdict} | {level}"
                )
            print(
                f"| {label} | {column}<={limit:g} | {shape[0]}x{shape[1]} | {where} | {out['dip_e']:+.2f}% | "
                f"{out['z_star']:.2f} ({out['p_star']:.2f}) | " + " | ".join(cells) + " |",
                flush=True,
            )


if __name__ == "__main__":
    main()
