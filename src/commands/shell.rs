//! `strata completions` and `strata man`: generated from the command line's definition, so
//! they cannot drift from it.

use std::io::Write;
use std::path::{Path, PathBuf};

use clap::{Args, CommandFactory};
use clap_complete::Shell;

use crate::cli::Cli;
use crate::output::Failure;

#[derive(Args)]
pub struct CompletionsArgs {
    /// The shell: bash, zsh, fish (also elvish, powershell).
    pub shell: Shell,
}

#[derive(Args)]
pub struct ManArgs {
    /// Write strata.1 and one page per command (strata-build.1, ...) into DIR; without it,
    /// print strata.1.
    pub dir: Option<PathBuf>,
}

pub fn completions(args: CompletionsArgs) -> Result<(), Failure> {
    let mut command = Cli::command();
    // Into a buffer first: clap_complete panics when its writer fails (a closed pipe).
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut command, "strata", &mut script);
    std::io::stdout()
        .write_all(&script)
        .map_err(|e| Failure::io(Path::new("stdout"), e))
}

pub fn man(args: ManArgs) -> Result<(), Failure> {
    let command = Cli::command();
    let Some(dir) = args.dir else {
        let page = clap_mangen::Man::new(command);
        return page
            .render(&mut std::io::stdout())
            .map_err(|e| Failure::io(Path::new("stdout"), e));
    };
    std::fs::create_dir_all(&dir).map_err(|e| Failure::io(&dir, e))?;
    clap_mangen::generate_to(command, &dir).map_err(|e| Failure::io(&dir, e))
}
