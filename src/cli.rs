//! Commands and their arguments.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use strata_builder::base::BaseRef;
use strata_builder::build::{self, BuildOptions};
use strata_builder::home::Home;
use strata_builder::publish::PushTarget;
use strata_builder::target::{Platform, PythonVersion};

use crate::output::{self, Failure};
use crate::progress::TerminalProgress;

#[derive(Parser)]
#[command(
    name = "strata",
    version,
    about = "Reproducible, layered OCI images for Python environments"
)]
pub struct Cli {
    /// More log output (-v, -vv, -vvv).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Build a requirement set into an image in the local store (and push it).
    Build(BuildArgs),
}

#[derive(Args)]
pub struct BuildArgs {
    /// The requirements file.
    #[arg(short = 'r', long = "requirements", value_name = "FILE")]
    pub requirements: PathBuf,
    /// Base image: oci:PATH[:TAG|@DIGEST] or REGISTRY/REPO[:TAG|@DIGEST].
    #[arg(long, env = "STRATA_BASE", value_name = "REF")]
    pub base: String,
    /// Target Python version (X.Y); default: the base image's.
    #[arg(long, value_name = "X.Y")]
    pub python: Option<PythonVersion>,
    /// Target platform.
    #[arg(long, default_value = "linux/amd64")]
    pub platform: Platform,
    /// Extra directory or URL of wheels (repeatable).
    #[arg(long = "find-links", short = 'f', value_name = "DIR")]
    pub find_links: Vec<String>,
    /// Do not use any package index (only --find-links).
    #[arg(long)]
    pub no_index: bool,
    /// Push the image to REGISTRY/REPO.
    #[arg(long, value_name = "REGISTRY/REPO")]
    pub push: Option<String>,
    /// Allow plain HTTP to a non-loopback registry.
    #[arg(long)]
    pub insecure: bool,
    /// Parallel fetches and layer builds (default: number of CPUs).
    #[arg(long, short = 'j', env = "STRATA_JOBS")]
    pub jobs: Option<usize>,
    /// Print one JSON object with the result.
    #[arg(long)]
    pub json: bool,
}

pub fn run(cli: Cli) -> Result<(), Failure> {
    match cli.command {
        Command::Build(args) => run_build(args),
    }
}

fn run_build(args: BuildArgs) -> Result<(), Failure> {
    let base: BaseRef = args.base.parse().map_err(Failure::build)?;
    let root = Home::default_root().map_err(Failure::home)?;
    let home = Home::open(&root).map_err(Failure::home)?;
    let jobs = args
        .jobs
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
    let options = BuildOptions {
        requirements: args.requirements,
        base,
        python: args.python,
        platform: args.platform,
        find_links: args.find_links,
        no_index: args.no_index,
        jobs,
    };
    let target = match &args.push {
        Some(target) => Some(PushTarget::new(target, args.insecure).map_err(Failure::build)?),
        None => None,
    };
    let progress = TerminalProgress::new(!args.json);
    // On a miss, check the registry before any work: an unreachable one then fails before
    // the store is touched. A hit needs no check (the push itself is one HEAD).
    let check = || target.as_ref().map_or(Ok(()), PushTarget::check);
    let built = build::build_checked(&home, &options, &progress, check).map_err(Failure::build)?;
    let pushed = match &target {
        Some(target) => Some(
            target
                .push(&home, &built, &progress)
                .map_err(Failure::build)?,
        ),
        None => None,
    };
    progress.finish();
    output::print_build(&home, &built, pushed.as_ref(), args.json);
    Ok(())
}
