//! `strata explain`.

use clap::Args;
use strata_build::explain;

use super::build::EnvArgs;
use crate::output::{self, Failure};

#[derive(Args)]
pub struct ExplainArgs {
    #[command(flatten)]
    pub env: EnvArgs,
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: ExplainArgs) -> Result<(), Failure> {
    let home = super::open_home()?;
    let options = args.env.options(None)?;
    let explanation = explain(&home, &options).map_err(Failure::build)?;
    output::print_explanation(&explanation, args.json);
    Ok(())
}
