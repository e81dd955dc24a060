"""Does the rest of the NetPIPE 512 KiB table point at its tight-limit best row?
(docs/optimizer-tight-limits.md, "Where the difficulty lies")

Fits a GP (Matern-5/2 with ARD and noise, on log time, inputs normalized by level index as the
replay does) to every row of the table but the one asked about (leave-one-out), then to every row
but the whole 1800 MHz column, and prints, for each row of that column, its run time against the
limit time_s<=4.9086, the prediction, and the probability of feasibility.

Run from the repository root, in the venv `cargo xtask bench optimizer` creates:
    target/bench-venv/bin/python xtask/bench/boundary_loo.py
"""
import csv
import warnings

import numpy as np
from scipy.stats import norm
from sklearn.gaussian_process import GaussianProcessRegressor
from sklearn.gaussian_process.kernels import ConstantKernel, Matern, WhiteKernel

warnings.filterwarnings("ignore")  # sklearn's convergence notes on bounds
TABLE = "kpo-agent/tests/data/seed-paper/netpipe_524288B_linux_tuned.csv"
LIMIT_S = 4.9086
COLUMN_MHZ = 1800

rows = list(csv.DictReader(open(TABLE)))
itrs = sorted({int(r["itr_us"]) for r in rows})
freqs = sorted({int(r["freq_mhz"]) for r in rows})
keys = [(int(r["itr_us"]), int(r["freq_mhz"])) for r in rows]
x = np.array([[itrs.index(i) / (len(itrs) - 1), freqs.index(f) / (len(freqs) - 1)] for i, f in keys])
log_time = np.log([float(r["time_s"]) for r in rows])
energy = [float(r["energy_j"]) for r in rows]
column = [j for j, (i, f) in enumerate(keys) if f == COLUMN_MHZ and i <= 40]


def fit_predict(train):
    y = log_time
    mean, sd = y[train].mean(), y[train].std()
    kernel = ConstantKernel(1.0) * Matern(length_scale=[0.3, 0.3], nu=2.5) + WhiteKernel(1e-3)
    gp = GaussianProcessRegressor(kernel, n_restarts_optimizer=3, random_state=0)
    gp.fit(x[train], (y[train] - mean) / sd)
    mu, std = gp.predict(x, return_std=True)
    return mu * sd + mean, std * sd


def line(j, mu, sd):
    pct = lambda v: 100 * (np.exp(v) / LIMIT_S - 1)
    feasible = norm.cdf((np.log(LIMIT_S) - mu[j]) / sd[j])
    return (
        f"  {keys[j]}: {energy[j]:6.1f} J, time {pct(log_time[j]):+.2f}% vs the limit, "
        f"predicted {pct(mu[j]):+.2f}% (sd {100 * sd[j]:.2f}%), P(feasible) {feasible:.2f}"
    )


print(f"leave one out, each row of the {COLUMN_MHZ} MHz column:")
for j in column:
    train = np.ones(len(keys), bool)
    train[j] = False
    print(line(j, *fit_predict(train)))
held = np.array([f == COLUMN_MHZ for _, f in keys])
print(f"without the whole {COLUMN_MHZ} MHz column ({held.sum()} rows):")
mu, sd = fit_predict(~held)
for j in column:
    print(line(j, mu, sd))
