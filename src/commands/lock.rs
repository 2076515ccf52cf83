//! `strata lock`.

use std::path::PathBuf;

use clap::Args;
use strata_build::lock_env;

use super::build::EnvArgs;
use crate::output::Failure;

#[derive(Args)]
pub struct LockArgs {
    #[command(flatten)]
    pub env: EnvArgs,
    /// Where to write the PEP 751 lock.
    #[arg(
        short = 'o',
        long = "output",
        value_name = "FILE",
        default_value = "pylock.toml"
    )]
    pub output: PathBuf,
}

pub fn run(args: LockArgs) -> Result<(), Failure> {
    let home = super::open_home()?;
    let options = args.env.options(None)?;
    let lock = lock_env(&home, &options).map_err(Failure::build)?;
    let output = std::path::absolute(&args.output).map_err(|e| Failure::io(&args.output, e))?;
    let text = strata_python::pylock_text(&lock, &output).map_err(Failure::build)?;
    std::fs::write(&output, text).map_err(|e| Failure::io(&output, e))?;
    eprintln!(
        "wrote {} ({} packages for {})",
        args.output.display(),
        lock.wheels.len(),
        lock.target.wheel_tags_summary()
    );
    Ok(())
}
