//! `cargo xtask`: setup | build | run | test | bench | scenario. The project's one entry point for developers
//! and CI, so that a fresh Debian machine needs nothing but this repository.
mod bench;
mod bench_log;
mod bench_optimizer;
mod bench_reaction;
mod floor;
mod scenario;
mod setup;
mod test_runner;

use std::process::{Command, ExitCode};

use anyhow::{bail, Result};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "xtask")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install what the eBPF build and the tests need (idempotent).
    Setup,
    /// Build the eBPF object and a release `target/release/kpo`.
    Build,
    /// Build and run `kpo run ARGS` (needs root).
    Run {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Unit tests, then the root integration tests that load the real eBPF programs.
    Test {
        /// Extra arguments for the test binaries (e.g. a test name filter).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Benchmarks; prints ratios measured side by side in one run.
    Bench {
        #[command(subcommand)]
        which: bench::Which,
    },
    /// End-to-end demos in network namespaces this command creates and removes.
    Scenario {
        #[command(subcommand)]
        which: scenario::Which,
    },
}

fn main() -> ExitCode {
    let result = run(Cli::parse());
    if let Err(e) = &result {
        eprintln!("xtask: error: {e:#}");
    }
    ExitCode::from(scenario::interrupt::exit_status(&result))
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Cmd::Setup => setup::install(),
        Cmd::Build => {
            setup::ensure()?;
            build_release()
        }
        Cmd::Run { args } => {
            setup::ensure()?;
            build_release()?;
            let kpo = kpo_binary();
            if !is_root() {
                bail!(
                    "kpo run needs root to load eBPF programs; run: sudo {} run {}",
                    kpo.display(),
                    args.join(" ")
                );
            }
            // The agent takes this process's place: a SIGTERM or Ctrl-C then reaches it, and it
            // stops through `on_exit`, instead of xtask dying and leaving it running as root.
            let error =
                std::os::unix::process::CommandExt::exec(Command::new(&kpo).arg("run").args(&args));
            Err(anyhow::Error::new(error).context(format!("running {}", kpo.display())))
        }
        Cmd::Test { args } => {
            setup::ensure()?;
            test_runner::run(&args)
        }
        Cmd::Bench { which } => {
            setup::ensure()?;
            // bench actuate builds its example on its own, and needs no target/release/kpo.
            if !matches!(which, bench::Which::Actuate { .. }) {
                build_release()?;
            }
            bench::run(which)
        }
        Cmd::Scenario { which } => {
            setup::ensure()?;
            build_release()?;
            scenario::run(which)
        }
    }
}

/// A count that must be at least 1 (`--reps`, `--trials`): 0 would spend minutes setting up and
/// then report nothing, or fail on an empty sample.
pub fn positive_usize() -> clap::builder::RangedU64ValueParser<usize> {
    clap::builder::RangedU64ValueParser::<usize>::new().range(1..)
}

/// A duration the agent is given as text (`--tick`, `--window`), checked when the command line is
/// read rather than after the build and the namespace are set up.
pub fn duration_arg(s: &str) -> Result<String, String> {
    match humantime::parse_duration(s) {
        Ok(d) if !d.is_zero() => Ok(s.to_string()),
        Ok(_) => Err("must be more than 0".into()),
        Err(e) => Err(format!("not a duration like 1s or 500ms: {e}")),
    }
}

/// The workspace `cargo xtask` runs in. `cargo run` names xtask's folder at run time; the path
/// compiled in is only the fallback, because cargo reuses a binary built from an identical tree
/// elsewhere (a shared `CARGO_TARGET_DIR`), whose folder may be gone.
pub fn workspace_root() -> std::path::PathBuf {
    let manifest_dir = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into());
    manifest_dir.parent().expect("xtask in workspace").into()
}

/// Cargo's target directory: `$CARGO_TARGET_DIR` when set, else the workspace's `target/`. What
/// the benches keep goes there too, beside the binary they measured.
pub fn target_dir() -> std::path::PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"))
}

pub fn kpo_binary() -> std::path::PathBuf {
    target_dir().join("release/kpo")
}

pub fn is_root() -> bool {
    unsafe { libc::geteuid() == 0 }
}

pub fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.current_dir(workspace_root());
    cmd
}

fn build_release() -> Result<()> {
    eprintln!(
        "xtask: building the eBPF object and {}",
        kpo_binary().display()
    );
    let status = cargo()
        .args(["build", "--release", "-p", "kpo-agent", "--bin", "kpo"])
        .status()?;
    if !status.success() {
        bail!("cargo build failed");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::error::ErrorKind;

    fn parse(args: &str) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("xtask").chain(args.split_whitespace()))
    }

    fn refused(args: &str) -> String {
        let e = parse(args)
            .err()
            .unwrap_or_else(|| panic!("`{args}` was accepted"));
        assert_eq!(e.kind(), ErrorKind::ValueValidation, "{args}: {e}");
        e.to_string().lines().next().unwrap().to_string()
    }

    /// Zero counts and durations are refused before anything is built or created.
    #[test]
    fn zero_counts_and_bad_durations_are_refused_at_once() {
        assert_eq!(
            refused("bench overhead --reps 0"),
            "error: invalid value '0' for '--reps <REPS>': 0 is not in 1..18446744073709551615"
        );
        for args in [
            "bench overhead --seconds 0",
            "bench overhead --idle-seconds 0",
            "bench actuate --reps 0",
            "bench optimizer --seeds 0",
            "bench optimizer --budget 0",
            "bench reaction --trials 0",
            "bench reaction --somaxconn 0",
            "scenario backlog --connections 0",
            "scenario backlog --seconds 0",
            "scenario backlog --somaxconn 0",
            "scenario backlog --backlog 0",
            "scenario backlog --worker-connections 0",
        ] {
            assert!(refused(args).contains("is not in 1.."), "{args}");
        }
        assert_eq!(
            refused("bench reaction --tick abc"),
            "error: invalid value 'abc' for '--tick <TICK>': not a duration like 1s or 500ms: \
             expected number at 0"
        );
        // 0 baseline seeds is not taken as 1: no baselines at all is another flag.
        assert_eq!(
            refused("bench optimizer --baseline-seeds 0"),
            "error: invalid value '0' for '--baseline-seeds <N>': must be at least 1 (for none, \
             --no-baselines)"
        );
        // Both say two things: one is not taken silently over the other.
        let both = parse("bench optimizer --no-baselines --baseline-seeds 5")
            .err()
            .expect("both were accepted");
        assert_eq!(both.kind(), ErrorKind::ArgumentConflict);
        assert_eq!(
            both.to_string().lines().next().unwrap(),
            "error: the argument '--no-baselines' cannot be used with '--baseline-seeds <N>'"
        );
        assert_eq!(
            refused("scenario backlog --window 0s"),
            "error: invalid value '0s' for '--window <WINDOW>': must be more than 0"
        );
        for args in [
            "bench overhead --reps 1 --seconds 1 --idle-seconds 1",
            "bench actuate --reps 1",
            "bench optimizer --seeds 1 --budget 1 --baseline-seeds 1",
            "bench reaction --trials 1 --tick 500ms --window 5s --somaxconn 1",
            "scenario backlog --connections 1 --seconds 1 --tick 1s --window 10s",
        ] {
            parse(args).unwrap_or_else(|e| panic!("{args}: {e}"));
        }
    }
}
