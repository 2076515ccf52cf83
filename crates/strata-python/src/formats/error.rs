//! Errors of reading an environment file. Each names the file, and the key, line or package
//! it is about, and says what to do instead where strata refuses something on purpose.

use std::io;
use std::path::PathBuf;

use crate::spec::{InvalidRequirement, SpecError};

#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    /// The file named does not exist (a typo, or another directory): said plainly, not as an
    /// OS error.
    #[error("{} does not exist", file.display())]
    Missing { file: PathBuf },
    #[error("cannot read {}: {source}", file.display())]
    Io {
        file: PathBuf,
        #[source]
        source: io::Error,
    },
    /// A requirements file (the existing parser's error names file and line).
    #[error(transparent)]
    Requirements(#[from] SpecError),
    /// Not valid TOML/YAML, or a key of the wrong type (the parser names line and column).
    #[error("{}: {message}", file.display())]
    Syntax { file: PathBuf, message: String },
    /// A key that is missing or unusable.
    #[error("{}: {key}: {message}", file.display())]
    Invalid {
        file: PathBuf,
        key: String,
        message: String,
    },
    #[error("{}: {key}: {source}", file.display())]
    Requirement {
        file: PathBuf,
        key: String,
        /// Boxed: the largest cause, and every `Result` of this module would pay for it.
        #[source]
        source: Box<InvalidRequirement>,
    },
    #[error("{}: no {kind} {name:?} (the file has: {})", file.display(), list_or_none(known))]
    UnknownSelection {
        file: PathBuf,
        /// `extra` or `dependency group`.
        kind: &'static str,
        name: String,
        known: Vec<String>,
    },
    #[error("{}: {option} does not apply to this file: {reason}", file.display())]
    SelectionNotApplicable {
        file: PathBuf,
        option: String,
        reason: &'static str,
    },
    #[error("{}: [dependency-groups] {group} includes itself (through {})", file.display(), path.join(" -> "))]
    GroupCycle {
        file: PathBuf,
        group: String,
        path: Vec<String>,
    },
    #[error("{}: requires-python {specifier:?} excludes the target's Python {python}; choose a base image (or --python) with a matching Python, or change requires-python", file.display())]
    RequiresPython {
        file: PathBuf,
        specifier: String,
        python: String,
    },
    #[error("{}: package {package}=={version} has no wheel for the target ({target}); the lock must list one (lock again for this target, e.g. `strata lock -r pyproject.toml`)", file.display())]
    NoWheel {
        file: PathBuf,
        package: String,
        version: String,
        target: String,
    },
    #[error("{}: package {package}: {message}", file.display())]
    Package {
        file: PathBuf,
        package: String,
        message: String,
    },
    #[error("{}: conda packages strata cannot install: {}; strata builds from PyPI wheels only: move those that exist on PyPI to the `pip:` section (e.g. `- pip:` / `  - numpy==1.26.4`), and drop or replace the others", file.display(), packages.join(", "))]
    CondaOnly {
        file: PathBuf,
        packages: Vec<String>,
    },
    #[error("{} has none of the files strata reads ({})", dir.display(), PROJECT_FILES.join(", "))]
    NoProjectFile { dir: PathBuf },
}

fn list_or_none(known: &[String]) -> String {
    if known.is_empty() {
        "none".to_string()
    } else {
        known.join(", ")
    }
}

/// The files `-r DIR` looks for, in this order: locks before what they were made from.
pub const PROJECT_FILES: &[&str] = &[
    "pylock.toml",
    "uv.lock",
    "poetry.lock",
    "Pipfile.lock",
    "pyproject.toml",
    "requirements.txt",
    "environment.yml",
    "environment.yaml",
];
