"""What the tight NetPIPE limits ask of any method, from the tables alone.
(docs/optimizer.md, "Target not met on the two tight NetPIPE limits")

No optimizer runs here: every figure follows from a table and its limit, so it holds for every
method replayed on it.
- The target in runs: a median regret of at most 1% needs at least 50 of 100 runs (the replay's
  lower median is the 50th smallest) to evaluate a row within 1% of the best feasible one, and a
  p90 of at most 5% needs 90 of 100 to evaluate a row within 5%. Printed with those rows.
- The constraint side: the rows cheaper than the best feasible one are all infeasible; a method
  that knew every energy exactly and every run time to within +-delta could rule out only the
  rows more than delta over the limit, so it must evaluate the others, cheapest first, and the
  best row itself. Printed for several delta.
- How well a row's run time and energy can be told from its neighbours: the robust spread
  (1.4826 x median absolute deviation) and the standard deviation of a row's log value minus the
  mean of its two neighbours' along one knob, both divided by sqrt(1.5), the factor by which that
  difference enlarges independent noise. Also for log power (energy / run time), and the
  correlation of the energy's and the run time's differences: energy = power x run time, and
  where power is smooth a dip in energy is a dip in run time, the constrained output.

Run from the repository root with Python 3.10 or later (standard library only;
statistics.correlation is 3.10's):
    python3 xtask/bench/tight_limits.py
"""
import csv
import math
import statistics as st

DATA = "kpo-agent/tests/data/seed-paper"
TABLES = [
    ("NetPIPE 512 KiB", f"{DATA}/netpipe_524288B_linux_tuned.csv", 4.9086),
    ("NetPIPE 8 KiB", f"{DATA}/netpipe_8192B_linux_tuned.csv", 0.3294),
]
DELTAS_PCT = [0.1, 0.2, 0.5, 1, 2, 5]
RUNS = 100


def load(path):
    return {
        (int(r["itr_us"]), int(r["freq_mhz"])): (float(r["energy_j"]), float(r["time_s"]))
        for r in csv.DictReader(open(path))
    }


def pct(x):
    return f"{100 * x:.2f}%"


def target_rows(table, limit):
    best_energy, best_key = min((e, k) for k, (e, t) in table.items() if t <= limit)
    print(f"  best feasible row {best_key}: {best_energy} J, run time {pct(table[best_key][1] / limit - 1)} against the limit")
    for within, needed, stat in ((0.01, RUNS // 2, "median <= 1%"), (0.05, RUNS * 9 // 10, "p90 <= 5%")):
        rows = sorted(
            k for k, (e, t) in table.items() if t <= limit and e <= best_energy * (1 + within)
        )
        print(f"  {stat}: {needed} of {RUNS} runs must evaluate one of {len(rows)} rows {rows}")
    return best_energy


def rows_to_evaluate(table, limit, best_energy):
    """With energies exact and run times known to +-delta: the rows a method must evaluate."""
    cheaper = sorted(t / limit - 1 for e, t in table.values() if e < best_energy)
    assert all(excess > 0 for excess in cheaper), "a cheaper row is feasible"
    shown = ", ".join(pct(x) for x in cheaper[:8])
    print(f"  {len(cheaper)} rows are cheaper and infeasible; their run times exceed the limit by {shown}, ...")
    counts = [
        f"{1 + sum(x <= d / 100 for x in cheaper)} for delta {d}%" for d in DELTAS_PCT
    ]
    print(f"  rows to evaluate, the best one included: {', '.join(counts)}")


def neighbour_diffs(table, value):
    """log(value(row)) minus the mean of its two neighbours' along each knob."""
    itrs = sorted({i for i, _ in table})
    freqs = sorted({f for _, f in table})
    out = {}
    for knob, levels, other in (("ITR", itrs, freqs), ("frequency", freqs, itrs)):
        diffs = []
        for o in other:
            for a, b, c in zip(levels, levels[1:], levels[2:]):
                keys = [(a, o), (b, o), (c, o)] if knob == "ITR" else [(o, a), (o, b), (o, c)]
                if all(k in table for k in keys):
                    lo, mid, hi = (math.log(value(table[k])) for k in keys)
                    diffs.append(mid - (lo + hi) / 2)
        out[knob] = diffs
    return out


def spread(diffs):
    """Robust spread and standard deviation of neighbour differences, as noise per row."""
    med = st.median(diffs)
    mad = st.median(abs(d - med) for d in diffs)
    return 1.4826 * mad / math.sqrt(1.5), st.stdev(diffs) / math.sqrt(1.5), len(diffs)


for name, path, limit in TABLES:
    table = load(path)
    print(f"{name}, time_s<={limit} ({len(table)} rows)")
    best_energy = target_rows(table, limit)
    rows_to_evaluate(table, limit, best_energy)
    diffs = {}
    for what, value in (
        ("log energy", lambda row: row[0]),
        ("log run time", lambda row: row[1]),
        ("log power", lambda row: row[0] / row[1]),
    ):
        diffs[what] = neighbour_diffs(table, value)
        parts = [
            f"along {knob} robust spread {100 * r:.2f}% (sd {100 * sd:.2f}%, {n} triples)"
            for knob, (r, sd, n) in ((k, spread(d)) for k, d in diffs[what].items())
        ]
        print(f"  {what} against its neighbours' mean: {'; '.join(parts)}")
    for knob in ("ITR", "frequency"):
        r = st.correlation(diffs["log energy"][knob], diffs["log run time"][knob])
        print(f"  along {knob}, correlation of the energy's and the run time's differences: {r:.3f}")
