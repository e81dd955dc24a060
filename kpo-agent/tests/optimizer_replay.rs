//! `kpo optimize replay` against the seed study's measured tables (tests/data/seed-paper).
//!
//! Constraint per table: "no worse than stock Linux", i.e. the stock row's p99 latency (NodeJS) or
//! run time (NetPIPE, fixed work) as the limit; the threshold is read from the table's
//! `*_linux_default.csv`. Budget 10, seeds 0..19: deterministic.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::{json, Value};

fn data(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/seed-paper")
        .join(file)
}

fn kpo(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kpo"))
        .args(["optimize", "replay"])
        .args(args)
        .output()
        .expect("run kpo")
}

/// The value of `column` in the stock Linux row of `table`.
fn stock(table: &str, column: &str) -> String {
    let text = std::fs::read_to_string(data(&format!("{table}_linux_default.csv"))).unwrap();
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let row: Vec<&str> = lines.next().unwrap().split(',').collect();
    let i = header.iter().position(|h| *h == column).unwrap();
    row[i].to_string()
}

/// (table, constraint column) for each seed-paper table.
const TABLES: &[(&str, &str)] = &[
    ("nodejs", "p99_us"),
    ("netpipe_64B", "time_s"),
    ("netpipe_8192B", "time_s"),
    ("netpipe_65536B", "time_s"),
    ("netpipe_524288B", "time_s"),
];

fn replay_json(table: &str, constraint: &str, extra: &[&str]) -> Value {
    let grid = data(&format!("{table}_linux_tuned.csv"));
    let baseline = data(&format!("{table}_linux_default.csv"));
    let mut args = vec![
        "--grid",
        grid.to_str().unwrap(),
        "--knob",
        "itr_us",
        "--knob",
        "freq_mhz",
        "--minimize",
        "energy_j",
        "--constraint",
        constraint,
        "--baseline",
        baseline.to_str().unwrap(),
        "--json",
    ];
    args.extend_from_slice(extra);
    let out = kpo(&args);
    assert!(
        out.status.success(),
        "kpo failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(
        stdout.trim().lines().count(),
        1,
        "exactly one JSON object: {stdout}"
    );
    serde_json::from_str(&stdout).expect("valid JSON")
}

fn report_schema() -> Value {
    let num_or_null = json!({"type": ["number", "null"]});
    json!({
        "type": "object",
        "required": [
            "budget", "seeds", "best_feasible", "median_regret_pct", "p90_regret_pct",
            "random_median_regret_pct", "random_p90_regret_pct",
            "evaluations_to_within_1pct_median", "random_evaluations_to_within_1pct_median",
            "runs_without_feasible_pick", "random_runs_without_feasible_pick",
            "grid", "rows", "feasible_rows", "knobs", "minimize", "constraints", "start",
            "baseline", "best_feasible_saved_vs_baseline_pct", "median_saved_vs_baseline_pct",
            "random_median_saved_vs_baseline_pct", "runs"
        ],
        "properties": {
            "budget": {"type": "integer", "minimum": 1},
            "seeds": {"type": "integer", "minimum": 1},
            "rows": {"type": "integer"},
            "feasible_rows": {"type": "integer"},
            "best_feasible": {"type": "object", "required": ["itr_us", "freq_mhz", "energy_j"]},
            "median_regret_pct": num_or_null,
            "p90_regret_pct": num_or_null,
            "random_median_regret_pct": num_or_null,
            "random_p90_regret_pct": num_or_null,
            "evaluations_to_within_1pct_median": num_or_null,
            "random_evaluations_to_within_1pct_median": num_or_null,
            "knobs": {"type": "array", "items": {"type": "string"}},
            "constraints": {"type": "array", "items": {"type": "string"}},
            "runs": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["seed", "start", "optimizer", "random"],
                    "properties": {
                        "optimizer": {"$ref": "#/$defs/method"},
                        "random": {"$ref": "#/$defs/method"}
                    }
                }
            }
        },
        "$defs": {
            "method": {
                "type": "object",
                "required": ["pick", "regret_pct", "evaluations_to_within_1pct", "saved_vs_baseline_pct"],
                "properties": {
                    "pick": {"type": ["object", "null"]},
                    "regret_pct": num_or_null,
                    "evaluations_to_within_1pct": {"type": ["integer", "null"]}
                }
            }
        }
    })
}

#[test]
fn beats_random_search_on_every_seed_paper_table_at_budget_10() {
    let schema = report_schema();
    for &(table, column) in TABLES {
        let constraint = format!("{column}<={}", stock(table, column));
        let r = replay_json(table, &constraint, &["--budget", "10", "--seeds", "20"]);
        if let Err(e) = jsonschema::validate(&schema, &r) {
            panic!("{table}: report does not match the schema: {e}\n{r}");
        }
        assert_eq!(r["budget"], 10);
        assert_eq!(r["seeds"], 20);
        assert_eq!(r["runs"].as_array().unwrap().len(), 20);
        let best = &r["best_feasible"];
        assert!(best[column].as_f64().unwrap() <= stock(table, column).parse::<f64>().unwrap());

        let median = r["median_regret_pct"]
            .as_f64()
            .unwrap_or_else(|| panic!("{table}: {r}"));
        // No feasible pick in half the random runs counts as an infinite median (null).
        let random = r["random_median_regret_pct"]
            .as_f64()
            .unwrap_or(f64::INFINITY);
        assert!(
            median <= 2.0,
            "{table}: median regret {median}% above the 2% target"
        );
        assert!(
            median < random,
            "{table}: optimizer {median}% vs random {random}%"
        );
        assert_eq!(r["runs_without_feasible_pick"], 0, "{table}");
        // The stock row is not in the grid; saving against it must be positive at the pick.
        let saved = r["median_saved_vs_baseline_pct"].as_f64().unwrap();
        let best_saved = r["best_feasible_saved_vs_baseline_pct"].as_f64().unwrap();
        assert!(
            saved > 0.0 && saved <= best_saved + 1e-9,
            "{table}: saved {saved} best {best_saved}"
        );
        // Each run's regret is consistent with its pick.
        for run in r["runs"].as_array().unwrap() {
            let pick = run["optimizer"]["pick"]["energy_j"].as_f64().unwrap();
            let regret = run["optimizer"]["regret_pct"].as_f64().unwrap();
            let want = 100.0 * (pick - best["energy_j"].as_f64().unwrap())
                / best["energy_j"].as_f64().unwrap();
            assert!((regret - want).abs() < 1e-9);
            assert!(
                run["optimizer"]["pick"][column].as_f64().unwrap()
                    <= stock(table, column).parse().unwrap()
            );
        }
    }
}

#[test]
fn replay_is_deterministic_and_budget_bounds_evaluations() {
    let a = replay_json(
        "netpipe_8192B",
        "time_s<=0.366",
        &["--budget", "4", "--seeds", "3"],
    );
    let b = replay_json(
        "netpipe_8192B",
        "time_s<=0.366",
        &["--budget", "4", "--seeds", "3"],
    );
    assert_eq!(a, b);
    for run in a["runs"].as_array().unwrap() {
        if let Some(e) = run["optimizer"]["evaluations_to_within_1pct"].as_u64() {
            assert!((1..=4).contains(&e));
        }
    }
    // A budget as large as the table evaluates every row: the best row is always found.
    let dir = tempfile::tempdir().unwrap();
    let small = dir.path().join("small.csv");
    let mut csv = String::from("a,b,cost,lat\n");
    for a in 0..4 {
        for b in 0..4 {
            let cost = 10.0 + ((a as f64) - 2.0).powi(2) + 2.0 * ((b as f64) - 1.0).powi(2);
            csv.push_str(&format!("{a},{b},{cost},{}\n", 10 * (a + b)));
        }
    }
    std::fs::write(&small, csv).unwrap();
    let out = kpo(&[
        "--grid",
        small.to_str().unwrap(),
        "--knob",
        "a",
        "--knob",
        "b",
        "--minimize",
        "cost",
        "--constraint",
        "lat<=20",
        "--budget",
        "1000",
        "--seeds",
        "3",
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let all: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(all["budget"], 16);
    assert_eq!(all["feasible_rows"], 6);
    // The unconstrained best (2,1) has lat 30; the constrained best is (1,1) with cost 11.
    assert_eq!(
        all["best_feasible"],
        json!({"a": 1.0, "b": 1.0, "cost": 11.0, "lat": 20.0})
    );
    assert_eq!(all["median_regret_pct"].as_f64(), Some(0.0));
    assert_eq!(all["random_median_regret_pct"].as_f64(), Some(0.0));
}

#[test]
fn human_readable_report_and_ge_constraints() {
    let grid = data("netpipe_65536B_linux_tuned.csv");
    let out = kpo(&[
        "--grid",
        grid.to_str().unwrap(),
        "--knob",
        "itr_us",
        "--knob",
        "freq_mhz",
        "--minimize",
        "energy_j",
        "--constraint",
        "tput_mbps>=3606.803",
        "--budget",
        "6",
        "--seeds",
        "3",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    for needle in [
        "median regret",
        "p90 regret",
        "random search",
        "tput_mbps>=3606.803",
        "best feasible row",
    ] {
        assert!(text.contains(needle), "missing '{needle}' in:\n{text}");
    }
    assert!(
        serde_json::from_str::<Value>(text.trim()).is_err(),
        "not JSON without --json"
    );
}

fn fails_with(args: &[&str], needle: &str) {
    let out = kpo(args);
    assert!(!out.status.success(), "expected failure for {args:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(needle),
        "stderr for {args:?} lacks '{needle}':\n{err}"
    );
    assert!(out.stdout.is_empty(), "nothing on stdout on error");
}

#[test]
fn clear_errors() {
    let grid = data("nodejs_linux_tuned.csv");
    let g = grid.to_str().unwrap();
    let base = |extra: &[&'static str]| -> Vec<String> {
        let mut v: Vec<String> = [
            "--grid",
            g,
            "--knob",
            "itr_us",
            "--knob",
            "freq_mhz",
            "--minimize",
            "energy_j",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    };
    let run = |v: Vec<String>, needle: &str| {
        fails_with(&v.iter().map(String::as_str).collect::<Vec<_>>(), needle)
    };
    fails_with(
        &[
            "--grid",
            "/nonexistent/table.csv",
            "--knob",
            "a",
            "--minimize",
            "b",
        ],
        "cannot read /nonexistent/table.csv",
    );
    run(
        base(&["--constraint", "latency<=5"]),
        "no column named 'latency'",
    );
    let mut v = base(&[]);
    v[3] = "itr".into();
    run(v, "no column named 'itr'");
    run(
        base(&["--constraint", "p99_us<92"]),
        "malformed constraint 'p99_us<92'",
    );
    run(
        base(&["--constraint", "p99_us<=fast"]),
        "malformed constraint",
    );
    run(
        base(&["--constraint", "p99_us<=10"]),
        "no row satisfies the constraints p99_us<=10",
    );
    run(base(&["--constraint", "energy_j<=300"]), "used twice");
    run(base(&["--budget", "0"]), "budget");

    let dir = tempfile::tempdir().unwrap();
    // A table replayed over itr_us and freq_mhz to minimize energy_j, then `extra`.
    let over = |grid: &Path, extra: &[&str]| -> Vec<String> {
        let grid = grid.to_str().unwrap();
        [
            "--grid",
            grid,
            "--knob",
            "itr_us",
            "--knob",
            "freq_mhz",
            "--minimize",
            "energy_j",
        ]
        .iter()
        .chain(extra)
        .map(|s| s.to_string())
        .collect()
    };
    let table = |name: &str, csv: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, csv).unwrap();
        path
    };
    let fails = |args: Vec<String>, needle: &str| {
        fails_with(&args.iter().map(String::as_str).collect::<Vec<_>>(), needle)
    };
    let grid_fails_with =
        |name: &str, csv: &str, needle: &str| fails(over(&table(name, csv), &[]), needle);
    grid_fails_with(
        "bad.csv",
        "itr_us,freq_mhz,energy_j\n2,1200,10.5\n4,1300,n/a\n",
        "line 3, column 'energy_j': 'n/a' is not a finite number",
    );
    grid_fails_with(
        "dup.csv",
        "itr_us,freq_mhz,energy_j\n2,1200,10.5\n2,1200,11\n",
        "lines 2 and 3 have the same knob values",
    );
    grid_fails_with("empty.csv", "itr_us,freq_mhz,energy_j\n", "has no rows");
    // -0 and 0 are one value.
    grid_fails_with(
        "zeros.csv",
        "itr_us,freq_mhz,energy_j\n0,1200,10.5\n-0,1200,11\n",
        "lines 2 and 3 have the same knob values",
    );
    grid_fails_with(
        "header.csv",
        "itr_us,freq_mhz,energy_j,itr_us\n2,1200,10.5,9\n",
        "the header names column 'itr_us' twice",
    );
    let good = table(
        "good.csv",
        "itr_us,freq_mhz,energy_j\n2,1200,10.5\n4,1300,9\n",
    );
    let zero = table("zero.csv", "itr_us,freq_mhz,energy_j\n0,0,0\n");
    let good_baseline = ["--baseline", good.to_str().unwrap()];
    fails(
        over(&good, &["--baseline", zero.to_str().unwrap()]),
        "the baseline's 'energy_j' is 0; a saving against it is not defined",
    );
    // A file that never ends is not read to the end.
    fails(
        over(Path::new("/dev/zero"), &good_baseline),
        "/dev/zero: more than 67108864 bytes",
    );
    // Unnamed columns (a spreadsheet's trailing commas) are not names used twice.
    let trailing = table(
        "trailing.csv",
        "itr_us,freq_mhz,energy_j,,\n2,1200,10.5,,\n4,1300,9,,\n",
    );
    let args = over(&trailing, &["--budget", "2", "--seeds", "1"]);
    let out = kpo(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
