"""How local is the 8 KiB tight valley? (docs/optimizer-tight-limits.md, "fifth round")

Fits a GP (Matern-5/2 with ARD and noise, on log energy and log time, inputs normalized by level
index as the replay does) to every row of the NetPIPE 8 KiB table except a block around the
valley, and prints what it predicts for the four rows within 1% of the best under time_s<=0.3294.

Run from the repository root, in the venv `cargo xtask bench optimizer` creates:
    target/bench-venv/bin/python xtask/bench/valley_locality.py
"""
import csv
import warnings

import numpy as np
from scipy.stats import norm
from sklearn.gaussian_process import GaussianProcessRegressor
from sklearn.gaussian_process.kernels import ConstantKernel, Matern, WhiteKernel

warnings.filterwarnings("ignore")  # sklearn's convergence notes on bounds
TABLE = "kpo-agent/tests/data/seed-paper/netpipe_8192B_linux_tuned.csv"
LIMIT_S = 0.3294
EDGE_J = 6.983  # (2 us, 1700 MHz): where kpo ends in most runs, 2.29% above the best
TARGETS = [(10, 1800), (10, 1900), (10, 2000), (12, 1700)]
BLOCKS = [(10, 12, 1700, 2000), (8, 12, 1600, 2100), (6, 14, 1500, 2200)]

rows = list(csv.DictReader(open(TABLE)))
itrs = sorted({int(r["itr_us"]) for r in rows})
freqs = sorted({int(r["freq_mhz"]) for r in rows})
keys = [(int(r["itr_us"]), int(r["freq_mhz"])) for r in rows]
x = np.array([[itrs.index(i) / (len(itrs) - 1), freqs.index(f) / (len(freqs) - 1)] for i, f in keys])
log_energy = np.log([float(r["energy_j"]) for r in rows])
log_time = np.log([float(r["time_s"]) for r in rows])
best = min(float(r["energy_j"]) for r in rows if float(r["time_s"]) <= LIMIT_S)


def fit_predict(y, train):
    mean, sd = y[train].mean(), y[train].std()
    kernel = ConstantKernel(1.0) * Matern(length_scale=[0.3, 0.3], nu=2.5) + WhiteKernel(1e-3)
    gp = GaussianProcessRegressor(kernel, n_restarts_optimizer=5, random_state=0)
    gp.fit(x[train], (y[train] - mean) / sd)
    mu, std = gp.predict(x, return_std=True)
    return mu * sd + mean, std * sd


for lo, hi, flo, fhi in BLOCKS:
    held = np.array([lo <= i <= hi and flo <= f <= fhi for i, f in keys])
    e_mu, e_sd = fit_predict(log_energy, ~held)
    t_mu, t_sd = fit_predict(log_time, ~held)
    print(f"without {lo}-{hi} us x {flo}-{fhi} MHz ({held.sum()} rows), fitted on {(~held).sum()}:")
    for t in TARGETS:
        j = keys.index(t)
        below_edge = norm.cdf((np.log(EDGE_J) - e_mu[j]) / e_sd[j])
        feasible = norm.cdf((np.log(LIMIT_S) - t_mu[j]) / t_sd[j])
        print(
            f"  {t}: energy {100 * (np.exp(log_energy[j]) / best - 1):5.2f}% above the best, "
            f"predicted {100 * (np.exp(e_mu[j]) / best - 1):5.2f}% (sd {100 * e_sd[j]:.2f}%); "
            f"P(below the 2 us edge) {below_edge:.2f}, P(feasible) {feasible:.2f}"
        )
