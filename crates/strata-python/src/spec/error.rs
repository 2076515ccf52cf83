//! Errors of requirements parsing. Each one names the file and the 1-based line it is about,
//! so a user can jump straight to the culprit.

use std::io;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    /// The top-level requirements file could not be read.
    #[error("cannot read requirements file {}: {source}", file.display())]
    Io {
        file: PathBuf,
        #[source]
        source: io::Error,
    },

    /// A requirement line that is not valid PEP 508.
    #[error("{}:{line}: invalid requirement {text:?}: {reason}", file.display())]
    Malformed {
        file: PathBuf,
        line: usize,
        text: String,
        reason: String,
    },

    /// An option strata knows but refuses (editable installs, `--pre`, ...) or does not know.
    #[error("{}:{line}: option {option:?} is not supported: {reason}", file.display())]
    UnsupportedOption {
        file: PathBuf,
        line: usize,
        option: String,
        reason: String,
    },

    /// A local path or a bare URL where a named requirement was expected.
    #[error(
        "{}:{line}: {text:?} is not supported: strata needs named requirements \
         (`name`, `name>=1.0`, or `name @ URL`), not local paths, archives or bare URLs",
        file.display()
    )]
    UnsupportedPath {
        file: PathBuf,
        line: usize,
        text: String,
    },

    /// A supported option with a missing or invalid value.
    #[error("{}:{line}: invalid option {option:?}: {reason}", file.display())]
    InvalidOption {
        file: PathBuf,
        line: usize,
        option: String,
        reason: String,
    },

    /// An `-r`/`-c` include that cannot be read.
    #[error("{}:{line}: cannot read included file {}: {source}", file.display(), include.display())]
    MissingInclude {
        file: PathBuf,
        line: usize,
        include: PathBuf,
        #[source]
        source: io::Error,
    },

    /// An `-r`/`-c` include that leads back to a file being parsed.
    #[error("{}:{line}: include cycle: {} is already being read", file.display(), include.display())]
    IncludeCycle {
        file: PathBuf,
        line: usize,
        include: PathBuf,
    },

    /// Two different `--index-url`s: only one primary index can be used.
    #[error(
        "{}:{line}: conflicting --index-url {second:?}: {first:?} was given before",
        file.display()
    )]
    ConflictingIndexUrl {
        file: PathBuf,
        line: usize,
        first: String,
        second: String,
    },
}

/// A single requirement string that is not valid PEP 508 (no file context).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid requirement {text:?}: {reason}")]
pub struct InvalidRequirement {
    pub text: String,
    pub reason: String,
}
