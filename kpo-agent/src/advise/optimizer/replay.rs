//! `kpo optimize replay`: the optimizer against a CSV table of measured configurations.
//!
//! Each row of the table is one configuration (its knob columns) with its measured outcomes. The
//! table is the black box: evaluating a configuration returns its row. Only the rows present are
//! offered to the optimizer. For each seed the optimizer starts from a random row of the table
//! (the "current configuration", drawn per seed from a ChaCha8 stream seeded with the seed), runs
//! for the budget, and its best feasible pick is compared with the table's best feasible row. A
//! random-search baseline starts from the same row and evaluates `budget - 1` further distinct rows
//! drawn at random. See `docs/optimizer.md` for the report's fields.

use std::path::{Path, PathBuf};

use rand::seq::index::sample;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use serde_json::Value;

use super::bo::{BoConfig, BoError, Constraint, Optimizer};
use super::space::{KnobSpec, Space, SpaceError};
use super::stats::{median, percentile_nearest_rank};

/// Replay the optimizer against a CSV table of measured configurations.
#[derive(Debug, Clone, clap::Args)]
pub struct ReplayArgs {
    /// CSV table of measured configurations, one row per configuration, with a header line.
    #[arg(long, value_name = "FILE.csv")]
    pub grid: PathBuf,
    /// A knob column (repeat for each knob).
    #[arg(long = "knob", value_name = "COL", required = true)]
    pub knobs: Vec<String>,
    /// The outcome column to minimize (e.g. energy_j).
    #[arg(long, value_name = "COL")]
    pub minimize: String,
    /// A constraint on an outcome column, `COL<=X` or `COL>=X` (repeatable).
    #[arg(long = "constraint", value_name = "COL<=X|COL>=X")]
    pub constraints: Vec<String>,
    /// Evaluations per run, the start included.
    #[arg(long, default_value_t = 10, value_parser = at_least_one)]
    pub budget: u64,
    /// Number of seeded runs (seeds 0..S-1).
    #[arg(long, default_value_t = 20, value_parser = at_least_one)]
    pub seeds: u64,
    /// Print one JSON object instead of the human-readable report.
    #[arg(long)]
    pub json: bool,
    /// Optional CSV whose first row is the stock configuration (e.g. `*_linux_default.csv`);
    /// the report then gives the saving in the minimized column against it.
    #[arg(long, value_name = "FILE.csv")]
    pub baseline: Option<PathBuf>,
}

/// `--budget` and `--seeds`: clap's own range check names the type's upper bound ("0 is not in
/// 1..18446744073709551615"), which is no limit anyone meant.
fn at_least_one(text: &str) -> Result<u64, String> {
    match text.parse::<u64>() {
        Ok(0) => Err("0: at least 1 is needed".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(format!("{text:?} is not a whole number of 1 or more ({e})")),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: malformed CSV: {source}")]
    Csv { path: PathBuf, source: csv::Error },
    #[error("{path}: no column named '{column}' (columns: {available})")]
    UnknownColumn {
        path: PathBuf,
        column: String,
        available: String,
    },
    #[error("{path}, line {line}, column '{column}': '{value}' is not a finite number")]
    NotNumeric {
        path: PathBuf,
        line: u64,
        column: String,
        value: String,
    },
    #[error("{path}: the table has no rows")]
    NoRows { path: PathBuf },
    #[error("{path}: lines {first} and {second} have the same knob values")]
    DuplicateConfiguration {
        path: PathBuf,
        first: u64,
        second: u64,
    },
    #[error("malformed constraint '{0}': expected COL<=NUMBER or COL>=NUMBER, e.g. 'p99_us<=500'")]
    MalformedConstraint(String),
    #[error(
        "column '{0}' is used twice (knobs, objective and constraints must be distinct columns)"
    )]
    ColumnReused(String),
    #[error("no row satisfies the constraints {0}")]
    NoFeasibleRow(String),
    #[error("{path}: the baseline table has no rows")]
    EmptyBaseline { path: PathBuf },
    #[error("{path}: the baseline's '{column}' is 0; a saving against it is not defined")]
    BaselineZero { path: PathBuf, column: String },
    #[error("{path}: the header names column '{column}' twice")]
    DuplicateColumn { path: PathBuf, column: String },
    #[error("{path}: more than {MAX_TABLE_BYTES} bytes; a table of measured configurations is far smaller")]
    TooLarge { path: PathBuf },
    #[error(transparent)]
    Space(#[from] SpaceError),
    #[error(transparent)]
    Optimizer(#[from] BoError),
}

/// Parse `COL<=X` or `COL>=X` (spaces allowed around the parts).
pub fn parse_constraint(text: &str) -> Result<Constraint, ReplayError> {
    let bad = || ReplayError::MalformedConstraint(text.to_string());
    let (col, rest, le) = if let Some((c, r)) = text.split_once("<=") {
        (c, r, true)
    } else if let Some((c, r)) = text.split_once(">=") {
        (c, r, false)
    } else {
        return Err(bad());
    };
    let col = col.trim();
    let value: f64 = rest.trim().parse().map_err(|_| bad())?;
    if col.is_empty() || !value.is_finite() || col.contains(['<', '>', '=']) {
        return Err(bad());
    }
    Ok(if le {
        Constraint::at_most(col, value)
    } else {
        Constraint::at_least(col, value)
    })
}

/// A CSV table of measured configurations.
#[derive(Debug, Clone)]
pub struct Table {
    pub path: PathBuf,
    pub columns: Vec<String>,
    /// Raw cells, row by row.
    pub rows: Vec<Vec<String>>,
}

/// Largest table file read (the seed study's tables are about 20 KB; `/dev/zero` is not a table).
pub const MAX_TABLE_BYTES: u64 = 64 << 20;

impl Table {
    pub fn load(path: &Path) -> Result<Self, ReplayError> {
        use std::io::Read;
        let io_err = |source| ReplayError::Io {
            path: path.to_path_buf(),
            source,
        };
        if let Some(source) = crate::config::not_a_regular_file(path) {
            return Err(io_err(source));
        }
        let mut bytes = Vec::new();
        std::fs::File::open(path)
            .map_err(io_err)?
            .take(MAX_TABLE_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(io_err)?;
        if bytes.len() as u64 > MAX_TABLE_BYTES {
            return Err(ReplayError::TooLarge {
                path: path.to_path_buf(),
            });
        }
        let csv_err = |source| ReplayError::Csv {
            path: path.to_path_buf(),
            source,
        };
        let mut reader = csv::ReaderBuilder::new()
            .trim(csv::Trim::All)
            .from_reader(bytes.as_slice());
        let columns: Vec<String> = reader
            .headers()
            .map_err(csv_err)?
            .iter()
            .map(String::from)
            .collect();
        // Unnamed columns (a spreadsheet's trailing `,,`) are never used; named ones must be one.
        for (i, c) in columns.iter().enumerate() {
            if !c.is_empty() && columns[..i].contains(c) {
                return Err(ReplayError::DuplicateColumn {
                    path: path.to_path_buf(),
                    column: c.clone(),
                });
            }
        }
        let mut rows = Vec::new();
        for rec in reader.records() {
            let rec = rec.map_err(csv_err)?;
            rows.push(rec.iter().map(String::from).collect());
        }
        Ok(Self {
            path: path.to_path_buf(),
            columns,
            rows,
        })
    }

    pub fn column(&self, name: &str) -> Result<usize, ReplayError> {
        self.columns
            .iter()
            .position(|c| c == name)
            .ok_or_else(|| ReplayError::UnknownColumn {
                path: self.path.clone(),
                column: name.to_string(),
                available: self.columns.join(", "),
            })
    }

    /// Line number in the file of data row `i` (the header is line 1).
    fn line(i: usize) -> u64 {
        i as u64 + 2
    }

    /// The numeric values of column `col`, one per row.
    pub fn numeric(&self, col: usize) -> Result<Vec<f64>, ReplayError> {
        self.rows
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let cell = r.get(col).map(String::as_str).unwrap_or("");
                cell.parse::<f64>()
                    .ok()
                    .filter(|v| v.is_finite())
                    .ok_or_else(|| ReplayError::NotNumeric {
                        path: self.path.clone(),
                        line: Self::line(i),
                        column: self.columns[col].clone(),
                        value: cell.to_string(),
                    })
            })
            .collect()
    }

    /// Row `i` as a JSON object, numbers as numbers.
    pub fn row_json(&self, i: usize) -> Value {
        let map: serde_json::Map<String, Value> = self
            .columns
            .iter()
            .zip(&self.rows[i])
            .map(|(c, v)| {
                let val = v
                    .parse::<f64>()
                    .ok()
                    .and_then(serde_json::Number::from_f64)
                    .map(Value::Number)
                    .unwrap_or_else(|| Value::String(v.clone()));
                (c.clone(), val)
            })
            .collect();
        Value::Object(map)
    }

    fn row_text(&self, i: usize) -> String {
        self.columns
            .iter()
            .zip(&self.rows[i])
            .map(|(c, v)| format!("{c}={v}"))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// What to replay.
#[derive(Debug, Clone)]
pub struct ReplaySpec {
    pub knobs: Vec<String>,
    pub minimize: String,
    pub constraints: Vec<Constraint>,
    pub budget: usize,
    pub seeds: u64,
    pub bo: BoConfig,
}

impl ReplaySpec {
    pub fn new(
        knobs: &[&str],
        minimize: &str,
        constraints: Vec<Constraint>,
        budget: usize,
        seeds: u64,
    ) -> Self {
        Self {
            knobs: knobs.iter().map(|s| s.to_string()).collect(),
            minimize: minimize.to_string(),
            constraints,
            budget,
            seeds,
            bo: BoConfig::default(),
        }
    }
}

/// The table as a black box: knob values, objective and constraint values per row.
struct Problem {
    points: Vec<Vec<f64>>,
    objective: Vec<f64>,
    constraints: Vec<Vec<f64>>,
    feasible: Vec<bool>,
    best_row: usize,
}

impl Problem {
    fn build(table: &Table, spec: &ReplaySpec) -> Result<(Self, Space), ReplayError> {
        if table.rows.is_empty() {
            return Err(ReplayError::NoRows {
                path: table.path.clone(),
            });
        }
        let mut used: Vec<&str> = Vec::new();
        let names = spec
            .knobs
            .iter()
            .map(String::as_str)
            .chain(std::iter::once(spec.minimize.as_str()))
            .chain(spec.constraints.iter().map(|c| c.name.as_str()));
        for name in names {
            table.column(name)?;
            if used.contains(&name) {
                return Err(ReplayError::ColumnReused(name.to_string()));
            }
            used.push(name);
        }
        let knob_cols: Vec<Vec<f64>> = spec
            .knobs
            .iter()
            .map(|k| table.numeric(table.column(k)?))
            .collect::<Result<_, _>>()?;
        let objective = table.numeric(table.column(&spec.minimize)?)?;
        let cons_cols: Vec<Vec<f64>> = spec
            .constraints
            .iter()
            .map(|c| table.numeric(table.column(&c.name)?))
            .collect::<Result<_, _>>()?;
        let n = table.rows.len();
        let points: Vec<Vec<f64>> = (0..n)
            .map(|i| knob_cols.iter().map(|c| c[i]).collect())
            .collect();
        // By exact value (0 and -0 alike), in one pass: a pairwise check is quadratic in rows.
        let mut seen: std::collections::HashMap<Vec<u64>, usize> = std::collections::HashMap::new();
        for (i, p) in points.iter().enumerate() {
            let key = p.iter().map(|v| (v + 0.0).to_bits()).collect();
            if let Some(&j) = seen.get(&key) {
                return Err(ReplayError::DuplicateConfiguration {
                    path: table.path.clone(),
                    first: Table::line(j),
                    second: Table::line(i),
                });
            }
            seen.insert(key, i);
        }
        let constraints: Vec<Vec<f64>> = (0..n)
            .map(|i| cons_cols.iter().map(|c| c[i]).collect())
            .collect();
        let feasible: Vec<bool> = constraints
            .iter()
            .map(|vals| {
                spec.constraints
                    .iter()
                    .zip(vals)
                    .all(|(c, &v)| c.bound.holds(v))
            })
            .collect();
        let best_row = (0..n)
            .filter(|&i| feasible[i])
            .min_by(|&a, &b| objective[a].total_cmp(&objective[b]))
            .ok_or_else(|| {
                ReplayError::NoFeasibleRow(
                    spec.constraints
                        .iter()
                        .map(|c| c.to_string())
                        .collect::<Vec<_>>()
                        .join(", "),
                )
            })?;
        let space = Space::new(
            spec.knobs
                .iter()
                .zip(&knob_cols)
                .map(|(k, vals)| KnobSpec::discrete(k.clone(), vals.clone()))
                .collect(),
        )?;
        Ok((
            Self {
                points,
                objective,
                constraints,
                feasible,
                best_row,
            },
            space,
        ))
    }

    fn regret_pct(&self, value: f64) -> f64 {
        let best = self.objective[self.best_row];
        let denom = if best.abs() > 0.0 { best.abs() } else { 1.0 };
        100.0 * (value - best) / denom
    }

    /// Per evaluation: the best feasible objective so far, and the row holding it.
    fn trace(&self, rows: &[usize]) -> Vec<Option<usize>> {
        let mut best: Option<usize> = None;
        rows.iter()
            .map(|&r| {
                if self.feasible[r] && best.is_none_or(|b| self.objective[r] < self.objective[b]) {
                    best = Some(r);
                }
                best
            })
            .collect()
    }
}

/// One seeded run of one method.
#[derive(Debug, Clone, Serialize)]
pub struct MethodRun {
    /// Rows evaluated, in order (0-based data row indices).
    #[serde(skip)]
    pub rows: Vec<usize>,
    /// The best feasible row found (as an object), if any.
    pub pick: Option<Value>,
    /// Regret of the pick in percent; `null` when no feasible row was evaluated.
    pub regret_pct: Option<f64>,
    /// First evaluation (1-based) whose best feasible pick is within 1% of the table's best;
    /// `null` if never within the budget.
    pub evaluations_to_within_1pct: Option<usize>,
    /// Saving of the pick against the baseline row in percent (0 when nothing feasible was found,
    /// since the stock configuration is then kept); `null` without a baseline.
    pub saved_vs_baseline_pct: Option<f64>,
}

/// One seed: the optimizer and the random-search baseline.
#[derive(Debug, Clone, Serialize)]
pub struct SeedRun {
    pub seed: u64,
    /// The start row (the "current configuration").
    pub start: Value,
    pub optimizer: MethodRun,
    pub random: MethodRun,
}

/// The replay report; `--json` prints it as one object.
#[derive(Debug, Clone, Serialize)]
pub struct ReplayReport {
    /// Index of the table's best feasible row (0-based data row).
    #[serde(skip)]
    pub best_row: usize,
    pub grid: String,
    pub rows: usize,
    pub feasible_rows: usize,
    pub knobs: Vec<String>,
    pub minimize: String,
    pub constraints: Vec<String>,
    pub budget: usize,
    pub seeds: u64,
    /// How each run's start is chosen.
    pub start: &'static str,
    pub best_feasible: Value,
    pub median_regret_pct: Option<f64>,
    pub p90_regret_pct: Option<f64>,
    pub random_median_regret_pct: Option<f64>,
    pub random_p90_regret_pct: Option<f64>,
    pub evaluations_to_within_1pct_median: Option<f64>,
    pub random_evaluations_to_within_1pct_median: Option<f64>,
    pub runs_without_feasible_pick: usize,
    pub random_runs_without_feasible_pick: usize,
    pub baseline: Option<Value>,
    pub best_feasible_saved_vs_baseline_pct: Option<f64>,
    pub median_saved_vs_baseline_pct: Option<f64>,
    pub random_median_saved_vs_baseline_pct: Option<f64>,
    pub runs: Vec<SeedRun>,
}

fn finite(v: f64) -> Option<f64> {
    v.is_finite().then_some(v)
}

/// Run the replay. `baseline` is the stock configuration's value of the minimized column.
pub fn replay(
    table: &Table,
    spec: &ReplaySpec,
    baseline: Option<(Value, f64)>,
) -> Result<ReplayReport, ReplayError> {
    let (problem, space) = Problem::build(table, spec)?;
    let n = table.rows.len();
    let budget = spec.budget.clamp(1, n);
    let mut runs = Vec::new();
    for seed in 0..spec.seeds {
        let mut start_rng = ChaCha8Rng::seed_from_u64(seed);
        let start = start_rng.gen_range(0..n);

        // The optimizer.
        let mut opt = Optimizer::new(
            space.clone(),
            problem.points.clone(),
            spec.constraints.clone(),
            spec.bo.clone(),
            seed,
        )?;
        let mut bo_rows = vec![start];
        opt.tell(
            &problem.points[start],
            problem.objective[start],
            &problem.constraints[start],
        )?;
        while bo_rows.len() < budget {
            let Some(p) = opt.ask()? else { break };
            let r = p.index;
            opt.tell(
                &problem.points[r],
                problem.objective[r],
                &problem.constraints[r],
            )?;
            bo_rows.push(r);
        }

        // Random search from the same start.
        let mut rnd_rng = ChaCha8Rng::seed_from_u64(seed);
        rnd_rng.set_stream(1);
        let others: Vec<usize> = (0..n).filter(|&i| i != start).collect();
        let mut rnd_rows = vec![start];
        rnd_rows.extend(
            sample(&mut rnd_rng, others.len(), budget - 1)
                .into_iter()
                .map(|i| others[i]),
        );

        let method = |rows: Vec<usize>| -> MethodRun {
            let trace = problem.trace(&rows);
            let last = *trace.last().expect("budget >= 1");
            let within = trace
                .iter()
                .position(|b| b.is_some_and(|r| problem.regret_pct(problem.objective[r]) <= 1.0));
            let saved = baseline.as_ref().map(|(_, base)| match last {
                Some(r) => 100.0 * (base - problem.objective[r]) / base.abs(),
                None => 0.0,
            });
            MethodRun {
                pick: last.map(|r| table.row_json(r)),
                regret_pct: last.map(|r| problem.regret_pct(problem.objective[r])),
                evaluations_to_within_1pct: within.map(|i| i + 1),
                saved_vs_baseline_pct: saved,
                rows,
            }
        };
        runs.push(SeedRun {
            seed,
            start: table.row_json(start),
            optimizer: method(bo_rows),
            random: method(rnd_rows),
        });
    }

    let regrets = |f: fn(&SeedRun) -> &MethodRun| -> Vec<f64> {
        runs.iter()
            .map(|r| f(r).regret_pct.unwrap_or(f64::INFINITY))
            .collect()
    };
    let evals = |f: fn(&SeedRun) -> &MethodRun| -> Vec<f64> {
        runs.iter()
            .map(|r| {
                f(r).evaluations_to_within_1pct
                    .map_or(f64::INFINITY, |v| v as f64)
            })
            .collect()
    };
    let saved = |f: fn(&SeedRun) -> &MethodRun| -> Option<f64> {
        baseline.as_ref().map(|_| {
            median(
                &runs
                    .iter()
                    .filter_map(|r| f(r).saved_vs_baseline_pct)
                    .collect::<Vec<_>>(),
            )
        })
    };
    let best = problem.best_row;
    let bo: fn(&SeedRun) -> &MethodRun = |r| &r.optimizer;
    let rnd: fn(&SeedRun) -> &MethodRun = |r| &r.random;
    Ok(ReplayReport {
        grid: table.path.display().to_string(),
        rows: n,
        feasible_rows: problem.feasible.iter().filter(|f| **f).count(),
        knobs: spec.knobs.clone(),
        minimize: spec.minimize.clone(),
        constraints: spec.constraints.iter().map(|c| c.to_string()).collect(),
        budget,
        seeds: spec.seeds,
        start: "random_row_per_seed",
        best_row: best,
        best_feasible: table.row_json(best),
        median_regret_pct: finite(median(&regrets(bo))),
        p90_regret_pct: finite(percentile_nearest_rank(&regrets(bo), 90.0)),
        random_median_regret_pct: finite(median(&regrets(rnd))),
        random_p90_regret_pct: finite(percentile_nearest_rank(&regrets(rnd), 90.0)),
        evaluations_to_within_1pct_median: finite(median(&evals(bo))),
        random_evaluations_to_within_1pct_median: finite(median(&evals(rnd))),
        runs_without_feasible_pick: runs.iter().filter(|r| r.optimizer.pick.is_none()).count(),
        random_runs_without_feasible_pick: runs.iter().filter(|r| r.random.pick.is_none()).count(),
        best_feasible_saved_vs_baseline_pct: baseline
            .as_ref()
            .map(|(_, base)| 100.0 * (base - problem.objective[best]) / base.abs()),
        median_saved_vs_baseline_pct: saved(bo),
        random_median_saved_vs_baseline_pct: saved(rnd),
        baseline: baseline.map(|(row, _)| row),
        runs,
    })
}

fn load_baseline(path: &Path, column: &str) -> Result<(Value, f64), ReplayError> {
    let t = Table::load(path)?;
    if t.rows.is_empty() {
        return Err(ReplayError::EmptyBaseline {
            path: path.to_path_buf(),
        });
    }
    let v = t.numeric(t.column(column)?)?[0];
    if v == 0.0 {
        return Err(ReplayError::BaselineZero {
            path: path.to_path_buf(),
            column: column.to_string(),
        });
    }
    Ok((t.row_json(0), v))
}

/// `k=v k=v` for a JSON object (numbers without a needless `.0`).
fn object_text(v: &Value) -> String {
    match v {
        Value::Object(m) => m
            .iter()
            .map(|(k, v)| match v {
                Value::Number(n) => format!(
                    "{k}={}",
                    n.as_f64().map_or(n.to_string(), |f| f.to_string())
                ),
                Value::String(s) => format!("{k}={s}"),
                other => format!("{k}={other}"),
            })
            .collect::<Vec<_>>()
            .join(" "),
        other => other.to_string(),
    }
}

fn pct(v: Option<f64>, none: &str) -> String {
    v.map_or_else(|| none.to_string(), |v| format!("{v:.2}%"))
}

fn count(v: Option<f64>) -> String {
    v.map_or_else(|| "never".to_string(), |v| format!("{v}"))
}

/// Human-readable report.
pub fn render(report: &ReplayReport, table: &Table) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let cons = if report.constraints.is_empty() {
        "no constraints".to_string()
    } else {
        format!("subject to {}", report.constraints.join(", "))
    };
    let _ = writeln!(
        s,
        "replay of {} ({} rows, {} feasible)",
        report.grid, report.rows, report.feasible_rows
    );
    let _ = writeln!(
        s,
        "knobs: {}; minimize {} {}",
        report.knobs.join(", "),
        report.minimize,
        cons
    );
    let best = table.row_text(report.best_row);
    let _ = writeln!(s, "table's best feasible row: {best}");
    let _ = writeln!(
        s,
        "budget {} evaluations, {} seeds, each run starting from a random row\n",
        report.budget, report.seeds
    );
    let _ = writeln!(s, "{:<36}{:>14}{:>16}", "", "optimizer", "random search");
    let _ = writeln!(
        s,
        "{:<36}{:>14}{:>16}",
        "median regret",
        pct(report.median_regret_pct, "inf"),
        pct(report.random_median_regret_pct, "inf")
    );
    let _ = writeln!(
        s,
        "{:<36}{:>14}{:>16}",
        "p90 regret",
        pct(report.p90_regret_pct, "inf"),
        pct(report.random_p90_regret_pct, "inf")
    );
    let _ = writeln!(
        s,
        "{:<36}{:>14}{:>16}",
        "median evaluations to within 1%",
        count(report.evaluations_to_within_1pct_median),
        count(report.random_evaluations_to_within_1pct_median)
    );
    let _ = writeln!(
        s,
        "{:<36}{:>14}{:>16}",
        "runs without a feasible pick",
        report.runs_without_feasible_pick,
        report.random_runs_without_feasible_pick
    );
    if let Some(base) = &report.baseline {
        let _ = writeln!(
            s,
            "{:<36}{:>14}{:>16}",
            format!("median {} saved vs baseline", report.minimize),
            pct(report.median_saved_vs_baseline_pct, "-"),
            pct(report.random_median_saved_vs_baseline_pct, "-")
        );
        let _ = writeln!(
            s,
            "\nbaseline: {}; the table's best feasible row saves {}",
            object_text(base),
            pct(report.best_feasible_saved_vs_baseline_pct, "-")
        );
    }
    s
}

/// Entry point of `kpo optimize replay`.
pub fn run_replay(args: &ReplayArgs) -> anyhow::Result<()> {
    let constraints = args
        .constraints
        .iter()
        .map(|c| parse_constraint(c))
        .collect::<Result<Vec<_>, _>>()?;
    let table = Table::load(&args.grid)?;
    let spec = ReplaySpec::new(
        &args.knobs.iter().map(String::as_str).collect::<Vec<_>>(),
        &args.minimize,
        constraints,
        usize::try_from(args.budget).unwrap_or(usize::MAX),
        args.seeds,
    );
    let baseline = args
        .baseline
        .as_deref()
        .map(|p| load_baseline(p, &args.minimize))
        .transpose()?;
    let report = replay(&table, &spec, baseline)?;
    if args.json {
        crate::out!("{}", serde_json::to_string(&report)?);
    } else {
        crate::out!(no_newline; "{}", render(&report, &table));
    }
    Ok(())
}

/// Convenience for tests and benches: parse constraint strings.
pub fn constraints(texts: &[&str]) -> Result<Vec<Constraint>, ReplayError> {
    texts.iter().map(|t| parse_constraint(t)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::advise::optimizer::acquisition::Bound;

    #[test]
    fn constraint_parsing() {
        let c = parse_constraint("p99_us<=500").unwrap();
        assert_eq!(c.name, "p99_us");
        assert_eq!(c.bound, Bound::AtMost(500.0));
        let c = parse_constraint(" tput_mbps >= 7334.5 ").unwrap();
        assert_eq!(c.name, "tput_mbps");
        assert_eq!(c.bound, Bound::AtLeast(7334.5));
        for bad in [
            "p99_us<500",
            "p99_us<=",
            "<=5",
            "p99_us<=abc",
            "p99_us<=inf",
            "a<=b<=3",
            "p99",
        ] {
            assert!(
                matches!(
                    parse_constraint(bad),
                    Err(ReplayError::MalformedConstraint(_))
                ),
                "{bad}"
            );
        }
    }

    /// Seen by hand (s38): `--grid FIFO` (and `--baseline`) waited in open() for a writer.
    /// The bound only turns that wait into a failure; a passing run never reaches it.
    #[test]
    fn a_table_that_is_not_a_regular_file_is_refused_without_waiting() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("grid.csv");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let path = fifo.clone();
        std::thread::spawn(move || tx.send(Table::load(&path).map(|_| ())));
        let e = rx
            .recv_timeout(std::time::Duration::from_secs(60))
            .expect("Table::load waited for the FIFO's writer")
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "cannot read {}: it is a FIFO (named pipe), not a regular file: reading one \
                 waits for a writer",
                fifo.display()
            )
        );
    }
}
