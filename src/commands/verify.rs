//! `strata verify`.

use std::path::PathBuf;

use clap::Args;
use strata_build::{verify, BaseRef, VerifyOptions};
use strata_python::Platform;

use crate::output::{self, Failure};
use crate::progress::TerminalProgress;

#[derive(Args)]
pub struct VerifyArgs {
    /// The image: REGISTRY/REPO:TAG or REGISTRY/REPO@sha256:DIGEST.
    pub reference: String,
    /// The base image it was built on, when the local store does not have it:
    /// oci:PATH[:TAG|@DIGEST] or REGISTRY/REPO[:TAG|@DIGEST] (its digest must be the one the
    /// image names).
    #[arg(long, value_name = "REF")]
    pub base: Option<String>,
    /// A directory of wheels, searched by file name after the local wheel cache (repeatable).
    #[arg(long = "find-links", short = 'f', value_name = "DIR")]
    pub find_links: Vec<PathBuf>,
    /// The image to verify when REF names an image index.
    #[arg(long, default_value = "linux/amd64")]
    pub platform: Platform,
    /// Parallel fetches and layer builds (default: number of CPUs).
    #[arg(long, short = 'j', env = "STRATA_JOBS")]
    pub jobs: Option<usize>,
    /// Allow plain HTTP to a non-loopback registry.
    #[arg(long)]
    pub insecure: bool,
    /// Print one JSON object with the result.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: VerifyArgs) -> Result<(), Failure> {
    let home = super::open_home()?;
    let base = match &args.base {
        Some(text) => Some(text.parse::<BaseRef>().map_err(Failure::build)?),
        None => None,
    };
    let jobs = args
        .jobs
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
    let options = VerifyOptions {
        reference: args.reference.clone(),
        insecure: args.insecure,
        base,
        find_links: args.find_links.clone(),
        platform: args.platform,
        jobs,
    };
    let progress = TerminalProgress::new(!args.json);
    let verification = verify(&home, &options, &progress).map_err(Failure::verify)?;
    progress.finish();
    output::print_verification(&verification, args.json);
    match verification.verified {
        true => Ok(()),
        false => Err(Failure::not_verified(&verification)),
    }
}
