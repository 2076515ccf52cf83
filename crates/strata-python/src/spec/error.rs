//! Errors of requirements parsing. Each one names the file and the 1-based line it is about,
//! so a user can jump straight to the culprit.

use std::io;
use std::path::PathBuf;

use super::local::LocalPathError;

use super::lines::ShellSplitError;
use super::pep508::RequirementError;
use super::requirements::HashError;
use super::sources::SourceError;

#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    /// The top-level requirements file could not be read.
    #[error("cannot read requirements file {}: {source}", file.display())]
    Io {
        file: PathBuf,
        #[source]
        source: io::Error,
    },

    /// A requirement line that is not valid PEP 508. The cause is boxed: it is the largest
    /// part of any variant, and every `Result` carrying a `SpecError` (or a build error
    /// holding one) would pay for it.
    #[error("{}:{line}: invalid requirement {text:?}: {source}", file.display())]
    Malformed {
        file: PathBuf,
        line: usize,
        text: String,
        #[source]
        source: Box<RequirementError>,
    },

    /// An option strata knows but refuses (editable installs, `--pre`, ...) or does not know.
    #[error("{}:{line}: option {option:?} is not supported: {reason}", file.display())]
    UnsupportedOption {
        file: PathBuf,
        line: usize,
        option: String,
        #[source]
        reason: Unsupported,
    },

    /// A local path that names no installable project or wheel.
    #[error("{}:{line}: local path {text:?} cannot be installed: {reason}", file.display())]
    LocalPath {
        file: PathBuf,
        line: usize,
        text: String,
        #[source]
        reason: LocalPathError,
    },

    /// A bare URL where a named requirement was expected.
    #[error(
        "{}:{line}: {text:?} is not supported: strata needs named requirements \
         (`name`, `name>=1.0`, or `name @ URL`) or local paths, not bare URLs",
        file.display()
    )]
    UnsupportedPath {
        file: PathBuf,
        line: usize,
        text: String,
    },

    /// A supported option with a missing or invalid value.
    #[error("{}:{line}: invalid option {option:?}: {source}", file.display())]
    InvalidOption {
        file: PathBuf,
        line: usize,
        option: String,
        #[source]
        source: OptionError,
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

    /// A `${VAR}` whose variable is not set. Refused rather than left as written (pip leaves
    /// it): a literal `${TOKEN}` sent as a password would fail far from its cause.
    #[error("{}:{line}: environment variable {variable} is not set (the line uses ${{{variable}}})", file.display())]
    UnsetVariable {
        file: PathBuf,
        line: usize,
        variable: String,
    },

    /// An error about a line that holds a secret (a `${VAR}` value or a URL's user info):
    /// its whole message, causes included, with the values shown as `${NAME}` and user info
    /// as `***`. The typed cause is not kept, since its text would show the secret.
    #[error("{message}")]
    Hidden {
        file: PathBuf,
        line: usize,
        message: String,
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

/// Why strata refuses an option it recognises (or does not).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Unsupported {
    #[error(
        "editable installs cannot go into an image layer; build a wheel and name it (`name @ URL`)"
    )]
    Editable,
    #[error("it changes resolution globally; pin the pre-release explicitly (e.g. foo==2.0rc1)")]
    Pre,
    /// `--hash` on a line of its own.
    #[error("--hash must follow a requirement on the same line")]
    HashWithoutRequirement,
    /// `-r`, `-i`, ... after a requirement on the same line.
    #[error("file options must be on their own line, not after a requirement")]
    FileOptionAfterRequirement,
    #[error("remote requirement files are not supported; download the file first")]
    RemoteInclude,
    #[error("unknown option; strata supports -r, -c, -i/--index-url, --extra-index-url, -f/--find-links, --no-index and --hash")]
    Unknown,
}

/// Why the value of a supported option is missing or invalid.
#[derive(Debug, thiserror::Error)]
pub enum OptionError {
    #[error("expected a value after it")]
    MissingValue,
    #[error("expected a value like sha256:<hex>")]
    MissingHash,
    #[error("takes no value")]
    TakesNoValue,
    #[error(transparent)]
    Quote(#[from] ShellSplitError),
    #[error(transparent)]
    Hash(#[from] HashError),
    #[error(transparent)]
    Source(#[from] SourceError),
}

/// A single requirement string that is not valid PEP 508 (no file context).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid requirement {text:?}: {source}")]
pub struct InvalidRequirement {
    pub text: String,
    #[source]
    pub source: RequirementError,
}
