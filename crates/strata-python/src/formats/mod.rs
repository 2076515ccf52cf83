//! Every file a project writes its environment down in, read into one of two things:
//! requirements to resolve (a [`RequirementsFile`], from `requirements*.txt`,
//! `pyproject.toml` or `environment.yml`; poetry.lock and Pipfile.lock as requirements that
//! pin every package by hash, leaving uv nothing to choose) or wheels pinned already (a
//! [`PinnedSet`], from `pylock.toml` or `uv.lock`), installed as they are without resolving
//! again.
//!
//! A file is recognised by its name, else by its content; `-r DIR` takes the first of
//! [`PROJECT_FILES`] the directory has.

mod condayml;
mod error;
mod pinned;
mod pins;
mod pipfile;
mod poetry;
mod pylock;
mod pyproject;
mod uvlock;

use std::path::{Path, PathBuf};

pub use error::{FormatError, PROJECT_FILES};
pub(crate) use pinned::url_filename;
pub use pinned::{PinnedPackage, PinnedSet, PinnedWheel, WheelLocation};
pub use pylock::pylock_text;

use crate::name::PackageName;
use crate::spec::Version;
use crate::spec::{clause_matches, parse_clauses, parse_requirements_file, RequirementsFile};
use crate::target::PythonVersion;

/// Which optional parts of a project to install: `--extra NAME` (`[project.optional-dependencies]`,
/// uv.lock's extras), `--group NAME` (`[dependency-groups]`, uv.lock's groups) and
/// `--install-project` (the project itself, built from its directory, when it is a package).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selection {
    pub extras: Vec<String>,
    pub groups: Vec<String>,
    pub project: bool,
}

impl Selection {
    fn is_empty(&self) -> bool {
        self.extras.is_empty() && self.groups.is_empty() && !self.project
    }
}

/// The kinds of file strata reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Requirements,
    Pyproject,
    Pylock,
    UvLock,
    PoetryLock,
    PipfileLock,
    CondaEnvironment,
}

/// A project's `requires-python` (or a conda file's `python` pin), with where it was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequiresPython {
    pub file: PathBuf,
    pub specifier: String,
}

impl RequiresPython {
    /// Whether the target's `X.Y` satisfies it (checked as the version `X.Y`: the patch level
    /// of the base's interpreter is not part of a target).
    pub fn check(&self, python: PythonVersion) -> Result<(), FormatError> {
        let refused = || FormatError::RequiresPython {
            file: self.file.clone(),
            specifier: self.specifier.clone(),
            python: python.to_string(),
        };
        let clauses = parse_clauses(&self.specifier).map_err(|e| FormatError::Invalid {
            file: self.file.clone(),
            key: "requires-python".into(),
            message: e.to_string(),
        })?;
        let version = Version::parse(&python.to_string()).map_err(|_| refused())?;
        if clauses.iter().all(|c| clause_matches(c, &version)) {
            Ok(())
        } else {
            Err(refused())
        }
    }
}

/// What an environment file says.
#[derive(Debug, Clone)]
pub enum EnvFile {
    /// Requirements to resolve.
    Requirements {
        file: RequirementsFile,
        requires_python: Option<RequiresPython>,
        /// The Python version the file asks for (`python=3.11` in environment.yml): the
        /// target's unless the command line names one.
        python: Option<PythonVersion>,
    },
    /// A lock: wheels to install as they are.
    Pinned(PinnedSet),
}

/// The file `-r PATH` means: PATH itself, or for a directory the first of
/// [`PROJECT_FILES`] in it.
pub fn project_file(path: &Path) -> Result<PathBuf, FormatError> {
    if !path.is_dir() {
        return Ok(path.to_path_buf());
    }
    PROJECT_FILES
        .iter()
        .map(|name| path.join(name))
        .find(|candidate| candidate.is_file())
        .ok_or_else(|| FormatError::NoProjectFile {
            dir: path.to_path_buf(),
        })
}

/// The format of `path`: by its name, else by its content (`text`).
pub fn format_of(path: &Path, text: &str) -> Format {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    match name.as_str() {
        "pyproject.toml" => return Format::Pyproject,
        "uv.lock" => return Format::UvLock,
        "pylock.toml" => return Format::Pylock,
        "poetry.lock" => return Format::PoetryLock,
        "pipfile.lock" => return Format::PipfileLock,
        _ => {}
    }
    // PEP 751 names: `pylock.<name>.toml`.
    if name.starts_with("pylock.") && name.ends_with(".toml") {
        return Format::Pylock;
    }
    if name.ends_with(".yml") || name.ends_with(".yaml") {
        return Format::CondaEnvironment;
    }
    if name.ends_with(".txt") {
        return Format::Requirements;
    }
    format_of_content(text)
}

fn format_of_content(text: &str) -> Format {
    if let Ok(serde_json::Value::Object(doc)) = serde_json::from_str(text) {
        if doc.contains_key("_meta") {
            return Format::PipfileLock;
        }
    }
    if let Ok(doc) = text.parse::<toml::Table>() {
        if doc.contains_key("lock-version") {
            return Format::Pylock;
        }
        if doc.contains_key("package") && doc.contains_key("version") {
            return Format::UvLock;
        }
        if doc.contains_key("package") && doc.contains_key("metadata") {
            return Format::PoetryLock;
        }
        if doc.contains_key("project") || doc.contains_key("dependency-groups") {
            return Format::Pyproject;
        }
    }
    let yaml_keys = text
        .lines()
        .any(|l| l.starts_with("dependencies:") || l.starts_with("channels:"));
    if yaml_keys {
        return Format::CondaEnvironment;
    }
    Format::Requirements
}

/// Reads the environment file `path` (a directory: its project file) with the optional parts
/// `selection` names.
pub fn read_env(path: &Path, selection: &Selection) -> Result<EnvFile, FormatError> {
    let path = project_file(path)?;
    let text = std::fs::read_to_string(&path).map_err(|source| match source.kind() {
        std::io::ErrorKind::NotFound => FormatError::Missing { file: path.clone() },
        _ => FormatError::Io {
            file: path.clone(),
            source,
        },
    })?;
    let format = format_of(&path, &text);
    let not_applicable = |reason| {
        let option = match (selection.extras.first(), selection.groups.first()) {
            (Some(extra), _) => format!("--extra {extra}"),
            (None, Some(group)) => format!("--group {group}"),
            (None, None) if selection.project => "--install-project".to_string(),
            (None, None) => String::new(),
        };
        Err(FormatError::SelectionNotApplicable {
            file: path.clone(),
            option,
            reason,
        })
    };
    match format {
        Format::Requirements => {
            if !selection.is_empty() {
                return not_applicable("a requirements file has no extras or groups");
            }
            Ok(EnvFile::Requirements {
                file: parse_requirements_file(&path)?,
                requires_python: None,
                python: None,
            })
        }
        Format::Pyproject => pyproject::read(&path, &text, selection),
        Format::UvLock => uvlock::read(&path, &text, selection).map(EnvFile::Pinned),
        Format::PoetryLock | Format::PipfileLock if selection.project => not_applicable(
            "--install-project installs the project of a pyproject.toml or uv.lock; list it in the lock, or build from its pyproject.toml",
        ),
        Format::PoetryLock => poetry::read(&path, &text, selection),
        Format::PipfileLock => pipfile::read(&path, &text, selection),
        Format::Pylock => {
            if !selection.is_empty() {
                return not_applicable(
                    "strata installs a pylock.toml's packages as listed; lock the extras or groups in",
                );
            }
            pylock::read(&path, &text).map(EnvFile::Pinned)
        }
        Format::CondaEnvironment => {
            if !selection.is_empty() {
                return not_applicable("an environment.yml has no extras or groups");
            }
            condayml::read(&path, &text)
        }
    }
}

/// A name as a [`PackageName`], or an error naming the file and key.
fn package_name(file: &Path, key: &str, raw: &str) -> Result<PackageName, FormatError> {
    PackageName::new(raw).map_err(|e| FormatError::Invalid {
        file: file.to_path_buf(),
        key: key.to_string(),
        message: e.to_string(),
    })
}

/// A TOML document's deserialisation error, naming the file (toml's message has the line).
fn syntax(file: &Path, e: impl std::fmt::Display) -> FormatError {
    FormatError::Syntax {
        file: file.to_path_buf(),
        message: e.to_string().trim_end().to_string(),
    }
}
