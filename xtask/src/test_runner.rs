//! `cargo xtask test`: the unit tests, then the root integration tests, and one summary over both
//! in which a test that could not run here counts as skipped, never as passed.
//!
//! Two kinds of test report themselves skipped: the integration tests (libtest-mimic, listed as
//! ignored with the reason) and the unit tests that find out at run time that they cannot run
//! (`kpo_test_skip::skip`, recorded in a file this runner names and reads afterwards). A
//! `#[ignore = "child half: ..."]` test is half of another test, run in a child process by its
//! parent: it is not counted.
use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::SystemTime;

use anyhow::{bail, Context, Result};

use crate::cargo;

pub fn run(args: &[String]) -> Result<()> {
    let record = tempfile::Builder::new()
        .prefix("kpo-test-skips.")
        .tempfile()
        .context("creating the file the tests record their skips in")?;
    let mut tally = Tally::default();
    // An agent of the host's own serving there changes these files by itself while we run.
    let host_agent = Path::new(HOST_SOCKET).exists();
    let host_before = host_files(&HOST_STATE);
    println!("xtask: unit tests");
    let unit = run_tests(
        cargo()
            .args(["test", "-p", "kpo-common", "-p", "kpo-agent"])
            .args(["-p", "kpo-test-skip", "-p", "xtask"])
            .arg("--")
            .args(args)
            .env(kpo_test_skip::RECORD_VAR, record.path()),
        &mut tally,
    )?;
    // The end-to-end test runs the `kpo` binary next to the test executable.
    let status = cargo()
        .args(["build", "-p", "kpo-agent", "--bin", "kpo"])
        .status()?;
    if !status.success() {
        bail!("building kpo failed");
    }
    // The integration tests share kernel state (tracepoints, namespaces): one at a time. When not
    // root they report themselves as ignored, with the reason, rather than passing.
    println!("xtask: integration tests (real eBPF, network namespaces)");
    let integration = run_tests(
        cargo()
            .args(["test", "-p", "kpo-integration"])
            .arg("--")
            .arg("--test-threads=1")
            .args(args)
            .env(kpo_test_skip::RECORD_VAR, record.path()),
        &mut tally,
    )?;
    let skips = kpo_test_skip::read_record(record.path())
        .with_context(|| format!("reading the tests' skips from {}", record.path().display()))?;
    let totals = tally.totals(&skips);
    for skip in &skips {
        println!("skipped: {}: {}", skip.test, skip.reason);
    }
    if tally.child_halves > 0 {
        println!(
            "not counted: {} child halves (each run in a child process by the test it is half of)",
            tally.child_halves
        );
    }
    println!(
        "summary: {} passed, {} failed, {} skipped",
        totals.passed, totals.failed, totals.skipped
    );
    if host_agent {
        println!(
            "not checked: whether the tests left this host's own KPO files alone ({}): an agent \
             serves on {HOST_SOCKET}",
            HOST_STATE.join(", ")
        );
    } else {
        let touched = changed(&host_before, &host_files(&HOST_STATE));
        if !touched.is_empty() {
            bail!(
                "the tests changed this host's own KPO files, which a test must never use (give \
                 every agent and command its own --policy, --state-dir and --socket): {}",
                touched.join(", ")
            );
        }
    }
    if !unit {
        bail!("unit tests failed");
    }
    if !integration {
        bail!("integration tests failed");
    }
    Ok(())
}

/// The host's own agent's state directory and socket directory (`kpo run`'s defaults).
const HOST_STATE: [&str; 2] = ["/var/lib/kpo", "/run/kpo"];
const HOST_SOCKET: &str = "/run/kpo/kpo.sock";

/// Every file and directory under `roots`, with its length and modification time (none for a
/// root that does not exist).
fn host_files(roots: &[&str]) -> BTreeMap<PathBuf, (u64, Option<SystemTime>)> {
    let mut found = BTreeMap::new();
    let mut todo: Vec<PathBuf> = roots.iter().map(PathBuf::from).collect();
    while let Some(path) = todo.pop() {
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        if meta.is_dir() {
            if let Ok(entries) = std::fs::read_dir(&path) {
                todo.extend(entries.flatten().map(|e| e.path()));
            }
        }
        found.insert(path, (meta.len(), meta.modified().ok()));
    }
    found
}

/// The paths made, removed or changed between two [`host_files`].
fn changed(
    before: &BTreeMap<PathBuf, (u64, Option<SystemTime>)>,
    after: &BTreeMap<PathBuf, (u64, Option<SystemTime>)>,
) -> Vec<String> {
    let mut paths: Vec<&PathBuf> = before.keys().chain(after.keys()).collect();
    paths.sort();
    paths.dedup();
    paths
        .into_iter()
        .filter_map(|p| match (before.get(p), after.get(p)) {
            (Some(a), Some(b)) if a == b => None,
            (Some(_), Some(_)) => Some(format!("{} (changed)", p.display())),
            (None, _) => Some(format!("{} (made)", p.display())),
            (_, None) => Some(format!("{} (removed)", p.display())),
        })
        .collect()
}

/// The counts of one `cargo xtask test`, over every test binary.
#[derive(Debug, Default, PartialEq, Eq)]
struct Totals {
    passed: u64,
    failed: u64,
    skipped: u64,
}

/// What the test binaries printed, added up line by line.
#[derive(Debug, Default)]
struct Tally {
    /// The sums of their `test result:` lines.
    passed: u64,
    failed: u64,
    ignored: u64,
    /// Tests listed `ignored, child half: ...`, within `ignored`.
    child_halves: u64,
    /// Tests listed `FAILED`: one that recorded a skip and then failed is counted failed only.
    failed_names: HashSet<String>,
}

impl Tally {
    fn add(&mut self, line: &str) {
        if let Some(result) = line.strip_prefix("test result: ") {
            let count = |word: &str| {
                result
                    .split(';')
                    .find_map(|part| {
                        part.trim()
                            .strip_suffix(word)?
                            .trim()
                            .rsplit(' ')
                            .next()?
                            .parse::<u64>()
                            .ok()
                    })
                    .unwrap_or(0)
            };
            self.passed += count("passed");
            self.failed += count("failed");
            self.ignored += count("ignored");
        } else if let Some((name, outcome)) = line
            .strip_prefix("test ")
            .and_then(|rest| rest.split_once(" ... "))
        {
            if outcome.starts_with("ignored, child half:") {
                self.child_halves += 1;
            } else if outcome == "FAILED" {
                self.failed_names.insert(name.to_owned());
            }
        }
    }

    /// The summary's counts: a test that recorded a skip (and did not fail) moves from passed to
    /// skipped; child halves are not counted.
    fn totals(&self, skips: &[kpo_test_skip::Skipped]) -> Totals {
        let skipped_at_run_time = skips
            .iter()
            .filter(|skip| !self.failed_names.contains(&skip.test))
            .count() as u64;
        Totals {
            passed: self.passed.saturating_sub(skipped_at_run_time),
            failed: self.failed,
            skipped: self.ignored.saturating_sub(self.child_halves) + skipped_at_run_time,
        }
    }
}

/// Runs a `cargo test` command, echoing its output and adding it up.
fn run_tests(cmd: &mut std::process::Command, tally: &mut Tally) -> Result<bool> {
    use std::io::BufRead;
    let mut child = cmd
        .stdout(Stdio::piped())
        .spawn()
        .context("running cargo test")?;
    let stdout = child.stdout.take().expect("piped");
    for line in std::io::BufReader::new(stdout).lines() {
        let line = line?;
        println!("{line}");
        tally.add(&line);
    }
    Ok(child.wait()?.success())
}

#[cfg(test)]
mod tests {
    use super::*;
    use kpo_test_skip::Skipped;

    fn skipped(test: &str) -> Skipped {
        Skipped {
            test: test.into(),
            reason: "not root".into(),
        }
    }

    /// libtest's output as this runner reads it: per-binary `test result:` sums; a child half
    /// not counted; a test that recorded a skip moved from passed to skipped, unless it failed.
    /// The host's own KPO files told apart before and after: made, changed, removed, and a
    /// tree that did not move is no change.
    #[test]
    fn the_host_files_a_run_made_changed_or_removed_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("kpo");
        let roots = [root.to_str().unwrap()];
        let nothing = host_files(&roots);
        assert!(nothing.is_empty());
        std::fs::create_dir(&root).unwrap();
        std::fs::write(root.join("journal.log"), "").unwrap();
        std::fs::write(root.join("lock"), "1 agent").unwrap();
        let first = host_files(&roots);
        assert_eq!(first.len(), 3);
        assert!(changed(&first, &host_files(&roots)).is_empty());
        assert_eq!(
            changed(&nothing, &first),
            vec![
                format!("{} (made)", root.display()),
                format!("{} (made)", root.join("journal.log").display()),
                format!("{} (made)", root.join("lock").display()),
            ]
        );
        std::fs::write(root.join("journal.log"), "1 {}\n").unwrap();
        std::fs::remove_file(root.join("lock")).unwrap();
        let second = host_files(&roots);
        let said = changed(&first, &second);
        assert!(
            said.contains(&format!("{} (changed)", root.join("journal.log").display())),
            "{said:?}"
        );
        assert!(
            said.contains(&format!("{} (removed)", root.join("lock").display())),
            "{said:?}"
        );
    }

    #[test]
    fn skips_recorded_at_run_time_count_as_skipped_and_child_halves_not_at_all() {
        let mut tally = Tally::default();
        for line in [
            "running 5 tests",
            "test logging::tests::panicking_child ... ignored, child half: run in a child process by x",
            "test journal::tests::a_root_test ... ok",
            "test api::tests::another_root_test ... FAILED",
            "test api::tests::plain ... ok",
            "test api::tests::ignored_for_a_reason ... ignored, needs a NIC",
            "test result: FAILED. 2 passed; 1 failed; 2 ignored; 0 measured; 0 filtered out; finished in 0.10s",
            "test result: ok. 7 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; finished in 1.00s",
        ] {
            tally.add(line);
        }
        assert_eq!(tally.child_halves, 1);
        assert_eq!(
            tally.totals(&[
                skipped("journal::tests::a_root_test"),
                skipped("api::tests::another_root_test"),
            ]),
            Totals {
                passed: 8,
                failed: 1,
                skipped: 3,
            }
        );
        assert_eq!(
            tally.totals(&[]),
            Totals {
                passed: 9,
                failed: 1,
                skipped: 2,
            }
        );
    }
}
