//! `cargo xtask bench optimizer`: KPO's optimizer side by side with what a user would reach for
//! instead, on the seed study's measured tables (`kpo-agent/tests/data/seed-paper/`).
//!
//! Methods, all on the same tables, budget, seeds and start rows:
//! - `kpo`: `kpo optimize replay` (the optimizer of `docs/optimizer.md`);
//! - `random`: the replay's random search from the same start;
//! - `tpe`: Optuna's TPE sampler with `constraints_func`;
//! - `gp_minimize`: scikit-optimize's GP minimizer, infeasible points penalised.
//!
//! Optuna and scikit-optimize run from `xtask/bench/optimizer_baselines.py` in a virtual
//! environment under `target/bench-venv`, created and filled from PyPI on first use with the
//! pinned versions below. Each seed's start row is the one the replay drew (`runs[].start` of its
//! JSON), so every method starts where the replay's runs started.
use std::{
    io::Write,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use crate::{kpo_binary, workspace_root};

/// Versions that install and run together on Python 3.11 (scikit-optimize 0.10.2, the 2024
/// revival of the unmaintained package, works with numpy 2 and recent scikit-learn).
const PIP_PINS: &[&str] = &[
    "optuna==4.1.0",
    "scikit-optimize==0.10.2",
    "scikit-learn==1.9.1",
    "numpy==2.4.6",
    "scipy==1.17.1",
];

/// One benchmark problem: a table and a constraint.
struct Problem {
    label: &'static str,
    table: &'static str,
    constraint: &'static str,
}

/// The five "no worse than stock" constraints and the three harder ones of `docs/optimizer.md`.
const PROBLEMS: &[Problem] = &[
    Problem {
        label: "NodeJS",
        table: "nodejs",
        constraint: "p99_us<=92",
    },
    Problem {
        label: "NetPIPE 64 B",
        table: "netpipe_64B",
        constraint: "time_s<=0.21",
    },
    Problem {
        label: "NetPIPE 8 KiB",
        table: "netpipe_8192B",
        constraint: "time_s<=0.366",
    },
    Problem {
        label: "NetPIPE 64 KiB",
        table: "netpipe_65536B",
        constraint: "time_s<=1.493",
    },
    Problem {
        label: "NetPIPE 512 KiB",
        table: "netpipe_524288B",
        constraint: "time_s<=5.454",
    },
    Problem {
        label: "NetPIPE 8 KiB",
        table: "netpipe_8192B",
        constraint: "time_s<=0.3294",
    },
    Problem {
        label: "NetPIPE 512 KiB",
        table: "netpipe_524288B",
        constraint: "time_s<=4.9086",
    },
    Problem {
        label: "NodeJS",
        table: "nodejs",
        constraint: "p99_us<=100",
    },
];

const KNOBS: &[&str] = &["itr_us", "freq_mhz"];
const METHODS: &[&str] = &["kpo", "random", "tpe", "gp_minimize"];

/// Arguments of `cargo xtask bench optimizer`.
#[derive(clap::Args)]
pub struct Args {
    /// Seeds 0..N-1 (one run per seed and method).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..))]
    seeds: u64,
    /// Evaluations per run, the start included.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    budget: u64,
    /// Only KPO and random search (no Python virtual environment).
    #[arg(long)]
    no_baselines: bool,
    /// Run TPE and gp_minimize on seeds 0..N-1 only (default: all seeds; gp_minimize costs about
    /// 2 s of CPU per run).
    #[arg(long, value_name = "N", value_parser = baseline_seeds, conflicts_with = "no_baselines")]
    baseline_seeds: Option<u64>,
}

/// `--baseline-seeds`: at least 1. Running the baselines on no seed is `--no-baselines` (which
/// skips the Python environment too); taking 0 as 1 would run them on a seed nobody asked for.
fn baseline_seeds(s: &str) -> Result<u64, String> {
    match s.parse::<u64>() {
        Ok(0) => Err("must be at least 1 (for none, --no-baselines)".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(e.to_string()),
    }
}

/// Run the benchmark and print the table.
pub fn run(args: &Args) -> Result<()> {
    let (seeds, budget) = (args.seeds, args.budget);
    let baselines = !args.no_baselines;
    let baseline_seeds = args.baseline_seeds.unwrap_or(seeds).min(seeds) as usize;
    let root = workspace_root();
    let data = root.join("kpo-agent/tests/data/seed-paper");
    let python = if baselines {
        Some(ensure_venv()?)
    } else {
        None
    };
    let script = root.join("xtask/bench/optimizer_baselines.py");
    let cache = crate::target_dir().join("bench-optimizer");
    println!(
        "optimizer benchmark: budget {budget}, seeds 0..{}, regret in % of the table's best \
         feasible energy (median / p90; inf = no feasible row found) and, in brackets, the runs \
         that ended within 1% of it",
        seeds - 1
    );
    if python.is_some() && baseline_seeds < seeds as usize {
        println!(
            "tpe and gp_minimize: seeds 0..{} only (--baseline-seeds)",
            baseline_seeds - 1
        );
    }
    let mut rows = Vec::new();
    for p in PROBLEMS {
        let grid = data.join(format!("{}_linux_tuned.csv", p.table));
        eprintln!("xtask: {} {}", p.label, p.constraint);
        let replay = replay_json(&grid, p.constraint, budget, seeds)?;
        let starts = start_rows(&grid, &replay)?;
        let mut regrets: Vec<Vec<Option<f64>>> = vec![
            method_regrets(&replay, "optimizer")?,
            method_regrets(&replay, "random")?,
        ];
        if let Some(py) = &python {
            let starts = &starts[..baseline_seeds];
            let out = baselines_json(py, &script, &grid, p.constraint, budget, starts, &cache)?;
            for m in ["tpe", "gp_minimize"] {
                let v = out
                    .get(m)
                    .and_then(Value::as_array)
                    .with_context(|| format!("baseline output lacks '{m}'"))?;
                regrets.push(v.iter().map(Value::as_f64).collect());
            }
        }
        let feasible = replay["feasible_rows"].as_u64().unwrap_or(0);
        let total = replay["rows"].as_u64().unwrap_or(0);
        rows.push((p, feasible, total, regrets));
    }
    // One table: per problem, median / p90 (runs within 1%) per method.
    let shown = if python.is_some() { 4 } else { 2 };
    print!("\n| table | constraint | feasible rows |");
    for m in &METHODS[..shown] {
        print!(" {m} |");
    }
    print!("\n| --- | --- | --- |");
    for _ in 0..shown {
        print!(" --- |");
    }
    println!();
    for (p, feasible, total, regrets) in &rows {
        print!("| {} | {} | {feasible} / {total} |", p.label, p.constraint);
        for r in regrets {
            let mut v: Vec<f64> = r.iter().map(|x| x.unwrap_or(f64::INFINITY)).collect();
            v.sort_by(f64::total_cmp);
            let within = v.iter().filter(|&&x| x <= WITHIN_PCT).count();
            print!(
                " {} / {} ({within}) |",
                fmt(rank(&v, 0.5)),
                fmt(rank(&v, 0.9))
            );
        }
        println!();
    }
    Ok(())
}

/// How close to the table's best a run must end to count towards the target's median: the
/// (lower) median is at most 1% only when at least half the runs are within it, so the count
/// says how far a row is from that where the median alone does not (2.29% with 6 runs or 49).
const WITHIN_PCT: f64 = 1.0;

/// The `⌈q·n⌉`-th smallest value (the replay's lower median and nearest-rank p90).
fn rank(sorted: &[f64], q: f64) -> f64 {
    let k = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[k - 1]
}

fn fmt(v: f64) -> String {
    if v.is_finite() {
        format!("{v:.2}%")
    } else {
        "inf".into()
    }
}

fn replay_json(grid: &Path, constraint: &str, budget: u64, seeds: u64) -> Result<Value> {
    let mut cmd = Command::new(kpo_binary());
    cmd.args(["optimize", "replay", "--grid"]).arg(grid);
    for k in KNOBS {
        cmd.args(["--knob", k]);
    }
    cmd.args(["--minimize", "energy_j", "--constraint", constraint])
        .args([
            "--budget",
            &budget.to_string(),
            "--seeds",
            &seeds.to_string(),
        ])
        .arg("--json");
    let out = cmd.output().context("running kpo optimize replay")?;
    if !out.status.success() {
        bail!(
            "kpo optimize replay failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    serde_json::from_slice(&out.stdout).context("parsing the replay's JSON")
}

fn method_regrets(replay: &Value, method: &str) -> Result<Vec<Option<f64>>> {
    Ok(replay["runs"]
        .as_array()
        .context("replay JSON without runs")?
        .iter()
        .map(|r| r[method]["regret_pct"].as_f64())
        .collect())
}

/// Data row index of each run's start (matched on the knob columns).
fn start_rows(grid: &Path, replay: &Value) -> Result<Vec<usize>> {
    let text = std::fs::read_to_string(grid).with_context(|| format!("reading {grid:?}"))?;
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().context("empty table")?.split(',').collect();
    let cols: Vec<usize> = KNOBS
        .iter()
        .map(|k| {
            header
                .iter()
                .position(|h| h.trim() == *k)
                .with_context(|| format!("no column {k}"))
        })
        .collect::<Result<_>>()?;
    let rows: Vec<Vec<f64>> = lines
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let cells: Vec<&str> = l.split(',').collect();
            cols.iter()
                .map(|&c| cells[c].trim().parse::<f64>().unwrap_or(f64::NAN))
                .collect()
        })
        .collect();
    replay["runs"]
        .as_array()
        .context("replay JSON without runs")?
        .iter()
        .map(|r| {
            let want: Vec<f64> = KNOBS
                .iter()
                .map(|k| r["start"][k].as_f64().unwrap_or(f64::NAN))
                .collect();
            rows.iter()
                .position(|row| *row == want)
                .with_context(|| format!("start {want:?} is not a row of {grid:?}"))
        })
        .collect()
}

/// `target/bench-venv` with Optuna and scikit-optimize; created on first use.
fn ensure_venv() -> Result<PathBuf> {
    let venv = crate::target_dir().join("bench-venv");
    let python = venv.join("bin/python");
    let ready = |py: &Path| {
        Command::new(py)
            .args(["-c", "import optuna, skopt"])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if python.exists() && ready(&python) {
        return Ok(python);
    }
    eprintln!(
        "xtask: creating {} with {}",
        venv.display(),
        PIP_PINS.join(" ")
    );
    let status = Command::new("python3")
        .args(["-m", "venv"])
        .arg(&venv)
        .status()
        .context("running python3 -m venv (Debian: apt-get install python3-venv)")?;
    if !status.success() {
        bail!("python3 -m venv {} failed", venv.display());
    }
    let status = Command::new(venv.join("bin/pip"))
        .args(["install", "--quiet"])
        .args(PIP_PINS)
        .status()
        .context("running pip")?;
    if !status.success() || !ready(&python) {
        bail!(
            "installing {} into {} failed",
            PIP_PINS.join(" "),
            venv.display()
        );
    }
    Ok(python)
}

/// The baselines' regrets per seed. They depend only on the table, constraint, budget and start
/// rows (not on KPO's optimizer), and scikit-optimize takes seconds per run, so results are kept
/// in `target/bench-optimizer/` together with their input and reused while the input (and the
/// script) is unchanged.
fn baselines_json(
    python: &Path,
    script: &Path,
    grid: &Path,
    constraint: &str,
    budget: u64,
    starts: &[usize],
    cache: &Path,
) -> Result<Value> {
    let (col, op, x) = if let Some((c, x)) = constraint.split_once("<=") {
        (c, "<=", x)
    } else if let Some((c, x)) = constraint.split_once(">=") {
        (c, ">=", x)
    } else {
        bail!("malformed constraint {constraint}");
    };
    let x: f64 = x.trim().parse().context("constraint threshold")?;
    let input = json!({
        "grid": grid,
        "knobs": KNOBS,
        "minimize": "energy_j",
        "constraints": [[col.trim(), op, x]],
        "budget": budget,
        "starts": starts,
        "methods": ["tpe", "gp_minimize"],
        "jobs": 2,
    });
    let script_text =
        std::fs::read_to_string(script).with_context(|| format!("reading {}", script.display()))?;
    let key = json!({"input": input, "script": script_text});
    let name: String = format!(
        "{}_{constraint}_b{budget}_s{}",
        grid_stem(grid),
        starts.len()
    )
    .chars()
    .map(|c| {
        if c.is_ascii_alphanumeric() || c == '.' {
            c
        } else {
            '_'
        }
    })
    .collect();
    let file = cache.join(format!("{name}.json"));
    if let Ok(text) = std::fs::read_to_string(&file) {
        if let Ok(saved) = serde_json::from_str::<Value>(&text) {
            if saved["key"] == key {
                eprintln!("xtask: baselines from {}", file.display());
                return Ok(saved["output"].clone());
            }
        }
    }
    let mut child = Command::new(python)
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("running {}", script.display()))?;
    child
        .stdin
        .take()
        .expect("piped")
        .write_all(input.to_string().as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!("{} failed", script.display());
    }
    let output: Value =
        serde_json::from_slice(&out.stdout).context("parsing the baselines' JSON")?;
    std::fs::create_dir_all(cache)?;
    std::fs::write(&file, json!({"key": key, "output": output}).to_string())?;
    Ok(output)
}

fn grid_stem(grid: &Path) -> String {
    grid.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}
