//! The `kpo` binary: parses arguments and hands over to the library.
use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = kpo_agent::cli::Cli::parse();
    // `kpo run` sets up its own, never-blocking logger.
    if !matches!(cli.command, kpo_agent::cli::Command::Run(_)) {
        kpo_agent::logging::init_command();
    }
    match kpo_agent::cli::dispatch(cli) {
        Ok(code) => code,
        Err(err) => {
            // Bounded: a standard error nobody reads (`kpo run 2>&1 | stalled-reader`) must not
            // keep the process from exiting once `kpo run` has stopped.
            kpo_agent::logging::write_bounded(
                std::io::stderr(),
                format!("kpo: error: {}\n", describe(&err)),
                kpo_agent::logging::LAST_WORDS_TIMEOUT,
            );
            std::process::ExitCode::from(2)
        }
    }
}

/// The error and its causes, skipping a cause whose text the message before it already includes
/// (our error messages name their source).
fn describe(err: &anyhow::Error) -> String {
    let mut text = err.to_string();
    for cause in err.chain().skip(1) {
        let cause = cause.to_string();
        if !text.contains(&cause) {
            text = format!("{text}: {cause}");
        }
    }
    text
}
