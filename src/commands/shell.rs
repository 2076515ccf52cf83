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
    print_all(&script)
}

/// Writes `bytes` to stdout. A reader that closed the pipe early (`| head`, `| grep -q`) has
/// all it wanted: that is not an error, as for any Unix filter.
fn print_all(bytes: &[u8]) -> Result<(), Failure> {
    match std::io::stdout().write_all(bytes) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        result => result.map_err(|e| Failure::io(Path::new("stdout"), e)),
    }
}

pub fn man(args: ManArgs) -> Result<(), Failure> {
    let command = Cli::command();
    let Some(dir) = args.dir else {
        let mut page = Vec::new();
        clap_mangen::Man::new(command)
            .render(&mut page)
            .map_err(|e| Failure::io(Path::new("stdout"), e))?;
        return print_all(&page);
    };
    std::fs::create_dir_all(&dir).map_err(|e| Failure::io(&dir, e))?;
    clap_mangen::generate_to(command, &dir).map_err(|e| Failure::io(&dir, e))
}
