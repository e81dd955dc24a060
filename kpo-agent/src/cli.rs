//! Command-line definitions for the `kpo` binary.
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::advise::optimizer::replay::{run_replay, ReplayArgs};

#[derive(Debug, Parser)]
#[command(name = "kpo", version, about = "KPO: kernel parameter optimizer")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the agent: observe the kernel and write the event stream.
    Run(crate::run::RunArgs),
    /// Energy/performance optimizer tools.
    Optimize {
        #[command(subcommand)]
        command: OptimizeCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum OptimizeCommand {
    /// Replay the optimizer against a CSV table of measured configurations.
    Replay(ReplayArgs),
}

pub fn dispatch(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Run(args) => crate::run::run_blocking(args),
        Command::Optimize {
            command: OptimizeCommand::Replay(args),
        } => {
            run_replay(&args)?;
            Ok(ExitCode::SUCCESS)
        }
    }
}
