//! `strata config check`.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use strata_config::ConfigError;

use crate::output::{self, Failure};

#[derive(Args)]
pub struct ConfigArgs {
    #[command(subcommand)]
    pub command: ConfigCommand,
}

#[derive(Subcommand)]
pub enum ConfigCommand {
    /// Check a configuration file as strata reads it: TOML syntax, unknown sections and
    /// keys, values. Errors name the line and column.
    Check(CheckArgs),
}

#[derive(Args)]
pub struct CheckArgs {
    /// The file [default: strata.toml]
    pub file: Option<PathBuf>,
}

pub fn run(args: ConfigArgs) -> Result<(), Failure> {
    let ConfigCommand::Check(args) = args.command;
    let file = args
        .file
        .unwrap_or_else(|| PathBuf::from(strata_config::PROJECT_FILE));
    let failure = |e: ConfigError| Failure {
        hint: match e {
            ConfigError::Io { .. } | ConfigError::Missing { .. } => None,
            _ => Some("fix the file at the place shown"),
        },
        error: Box::new(e),
        exit_code: output::EXIT_BAD_INPUT,
    };
    let sections = strata_agent::check_config(&file).map_err(failure)?;
    // `[server]` is the server's, above the agent.
    strata_config::Config::from_file(&file)
        .and_then(|config| strata_server::ServerSettings::from_config(&config))
        .map_err(failure)?;
    let sections = match sections.is_empty() {
        true => "no sections".to_string(),
        false => format!("[{}]", sections.join("], [")),
    };
    println!("{}: ok ({sections})", file.display());
    Ok(())
}
