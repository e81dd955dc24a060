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
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            ExitCode::FAILURE
        }
    }
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
            build_release()?;
            bench::run(which)
        }
        Cmd::Scenario { which } => {
            setup::ensure()?;
            build_release()?;
            scenario::run(which)
        }
    }
}

pub fn workspace_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask in workspace")
        .into()
}

pub fn kpo_binary() -> std::path::PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"));
    target.join("release/kpo")
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
    eprintln!("xtask: building the eBPF object and target/release/kpo");
    let status = cargo()
        .args(["build", "--release", "-p", "kpo-agent", "--bin", "kpo"])
        .status()?;
    if !status.success() {
        bail!("cargo build failed");
    }
    Ok(())
}
