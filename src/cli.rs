//! Commands and their arguments; each command's code is in `commands/`.

use clap::{Parser, Subcommand};

use crate::commands;
use crate::output::Failure;

/// `strata --version`: the package version and the commit it was built from (build.rs).
const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (", env!("STRATA_COMMIT"), ")");

#[derive(Parser)]
#[command(
    name = "strata",
    version = VERSION,
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
    Build(commands::build::BuildArgs),
    /// The requirement set of a script or project: its declared file, or its imports pinned
    /// to the active environment's versions.
    Detect(commands::detect::DetectArgs),
    /// Resolve an environment file and write its PEP 751 lock (pylock.toml) to commit.
    Lock(commands::lock::LockArgs),
    /// Say why a requirement set is or is not a cache hit.
    Explain(commands::explain::ExplainArgs),
    /// List the images of the local store with their sizes.
    Images(commands::images::ImagesArgs),
    /// Show an image's packages, layers and who shares them.
    Inspect(commands::images::InspectArgs),
    /// Push an image of the local store to a registry.
    Push(commands::sync::PushArgs),
    /// Pull an image from a registry into the local store.
    Pull(commands::sync::PullArgs),
    /// Rebuild a registry image from its lock on this machine and compare it layer by layer.
    Verify(commands::verify::VerifyArgs),
    /// Delete what the retention policy does not keep, locally or in a registry.
    Gc(commands::gc::GcArgs),
    /// Queue a job; prints its id at once.
    Submit(Box<commands::jobs::SubmitArgs>),
    /// List jobs, with why each waiting job waits.
    Jobs(commands::jobs::JobsArgs),
    /// Show one job: state, position, reason, outcome, history.
    Status(commands::jobs::JobArgs),
    /// Cancel a job (SIGTERM, grace period, SIGKILL when it runs).
    Cancel(commands::jobs::JobArgs),
    /// Print a job's output.
    Logs(commands::jobs::LogsArgs),
    /// List a job's collected outputs, or copy them out (--to DIR).
    Outputs(commands::jobs::OutputsArgs),
    /// Show the metrics jobs reported (`strata:metric {...}` lines).
    Metrics(commands::jobs::MetricsArgs),
    /// Run the local agent: admit jobs and run them with runc.
    Agent(commands::jobs::AgentArgs),
    /// Print the Kubernetes objects that run strata for a set of teams (YAML, to apply).
    Deploy(commands::deploy::DeployArgs),
    /// Serve the queue of this machine's strata.db to the teams holding tokens (HTTP API).
    Server(commands::server::ServerArgs),
    /// Create, list and revoke the tokens of `strata server` (run where its database is).
    Token(commands::server::TokenArgs),
    /// Keep a server and its token (read from stdin) for the job commands.
    Login(commands::server::LoginArgs),
    /// Forget the server `strata login` kept.
    Logout,
    /// Check strata.toml (or another configuration file).
    Config(commands::config::ConfigArgs),
    /// Print a shell's completion script (bash, zsh, fish).
    Completions(commands::shell::CompletionsArgs),
    /// Print the man page, or write one per command into a directory.
    Man(commands::shell::ManArgs),
}

pub fn run(cli: Cli) -> Result<(), Failure> {
    match cli.command {
        Command::Build(args) => commands::build::run(args),
        Command::Detect(args) => commands::detect::run(args),
        Command::Explain(args) => commands::explain::run(args),
        Command::Lock(args) => commands::lock::run(args),
        Command::Images(args) => commands::images::run_images(args),
        Command::Inspect(args) => commands::images::run_inspect(args),
        Command::Push(args) => commands::sync::run_push(args),
        Command::Pull(args) => commands::sync::run_pull(args),
        Command::Verify(args) => commands::verify::run(args),
        Command::Gc(args) => commands::gc::run(args),
        Command::Submit(args) => commands::jobs::submit(*args),
        Command::Jobs(args) => commands::jobs::jobs(args),
        Command::Status(args) => commands::jobs::status(args),
        Command::Cancel(args) => commands::jobs::cancel(args),
        Command::Logs(args) => commands::jobs::logs(args),
        Command::Outputs(args) => commands::jobs::outputs(args),
        Command::Metrics(args) => commands::jobs::metrics(args),
        Command::Agent(args) => commands::jobs::agent(args),
        Command::Deploy(args) => commands::deploy::run(args),
        Command::Server(args) => commands::server::server(args),
        Command::Token(args) => commands::server::token(args),
        Command::Login(args) => commands::server::login(args),
        Command::Logout => commands::server::logout(),
        Command::Config(args) => commands::config::run(args),
        Command::Completions(args) => commands::shell::completions(args),
        Command::Man(args) => commands::shell::man(args),
    }
}
