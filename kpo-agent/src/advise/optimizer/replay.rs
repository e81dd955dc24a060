//! Placeholder: `kpo optimize replay` (being written).
#[derive(Debug, clap::Args)]
pub struct ReplayArgs {}

pub fn run_replay(_args: &ReplayArgs) -> anyhow::Result<()> {
    anyhow::bail!("not implemented yet")
}
