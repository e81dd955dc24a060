//! The `kpo` binary: parses arguments and hands over to the library.
use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = kpo_agent::cli::Cli::parse();
    match kpo_agent::cli::dispatch(cli) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("kpo: error: {err:#}");
            std::process::ExitCode::from(2)
        }
    }
}
