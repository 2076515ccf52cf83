//! `strata detect`.

use std::path::PathBuf;

use clap::Args;
use strata_detect::{DetectOptions, PythonEnv};
use strata_python::PythonVersion;

use crate::output::{self, Failure};

#[derive(Args)]
pub struct DetectArgs {
    /// A script, package or project directory.
    #[arg(default_value = ".")]
    pub path: PathBuf,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
    /// The Python the requirements are for (X.Y; its standard library is left out); default:
    /// the environment's.
    #[arg(long, value_name = "X.Y")]
    pub python: Option<PythonVersion>,
}

pub fn run(args: DetectArgs) -> Result<(), Failure> {
    let options = DetectOptions {
        python: args.python,
    };
    let detection = strata_detect::detect(&args.path, PythonEnv::discover, &options)
        .map_err(Failure::detect)?;
    output::print_detection(&detection, args.json);
    Ok(())
}
