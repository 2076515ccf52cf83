//! The requirement set of a Python script, package or project directory, each requirement
//! with where it came from.
//!
//! 1. A file the project declares wins, in the order `strata build -r DIR` takes them:
//!    `pylock.toml`, `uv.lock`, `poetry.lock`, `Pipfile.lock`, `pyproject.toml` (with a
//!    `[project] dependencies` key), `requirements.txt`, `environment.yml`, then the first
//!    other `requirements*.txt` by name (all at the project root).
//! 2. Otherwise the imports of the code ([`imports`]), minus the standard library of the
//!    target Python ([`stdlib`]) and the project's own modules ([`project`]), are mapped to the
//!    distributions installed in the environment ([`installed`], [`PythonEnv`]), pinned to
//!    their installed versions and closed over their installed `Requires-Dist` (markers
//!    evaluated in that environment, extras honoured). Distributions installed from a local
//!    path or editable are reported apart, as code to ship.

mod closure;
mod declared;
mod detection;
mod env;
pub mod imports;
pub mod installed;
pub mod project;
pub mod stdlib;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use strata_python::{PythonVersion, SpecError};

pub use detection::{DetectedRequirement, Detection, Finding, LocalPackage, Origin, Source};
pub use env::{EnvError, EnvOrigin, PythonEnv};

use imports::Import;
use installed::Installed;
use project::{Own, Roots};
use stdlib::Stdlib;

/// How to detect.
#[derive(Debug, Clone, Default)]
pub struct DetectOptions {
    /// The Python the requirements are for (its standard library is left out); default: the
    /// environment's.
    pub python: Option<PythonVersion>,
}

/// Why there is no detection. Nothing is half-detected: any of these ends it.
#[derive(Debug, thiserror::Error)]
pub enum DetectError {
    #[error("{} does not exist", path.display())]
    NoSuchPath { path: PathBuf },
    #[error("{}:{line}:{column}: syntax error: {message}", file.display())]
    Syntax {
        file: PathBuf,
        line: u32,
        column: u32,
        message: String,
    },
    #[error("reading {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("walking {}: {source}", root.display())]
    Walk {
        root: PathBuf,
        #[source]
        source: ignore::Error,
    },
    #[error(transparent)]
    Env(#[from] EnvError),
    #[error(transparent)]
    Requirements(#[from] SpecError),
    /// A declared project file (a lock, pyproject.toml, environment.yml) strata cannot read.
    #[error(transparent)]
    Format(#[from] strata_python::FormatError),
    #[error("{}: {message}", file.display())]
    Pyproject { file: PathBuf, message: String },
    #[error(
        "no standard library list for Python {version}: strata knows {}",
        stdlib::SUPPORTED
    )]
    UnsupportedPython { version: PythonVersion },
}

/// The requirements of `path` (a script or a directory): a declared requirements file if
/// the project has one, else its imports mapped through the environment `env` gives (asked
/// only then, so a project with a requirements file needs no environment).
pub fn detect(
    path: &Path,
    env: impl FnOnce() -> Result<PythonEnv, EnvError>,
    options: &DetectOptions,
) -> Result<Detection, DetectError> {
    if let Some(found) = declared(path, options)? {
        return Ok(found);
    }
    from_imports(path, &env()?, options)
}

/// The project's declared requirements, if it declares any (see the crate's documentation
/// for the order).
pub fn declared(path: &Path, options: &DetectOptions) -> Result<Option<Detection>, DetectError> {
    let root = project_root(path)?;
    declared::find(&root, options.python)
}

/// The project's requirements from its imports, whatever files it declares.
pub fn from_imports(
    path: &Path,
    env: &PythonEnv,
    options: &DetectOptions,
) -> Result<Detection, DetectError> {
    let root = project_root(path)?;
    let python = options.python.unwrap_or(env.version);
    let stdlib = Stdlib::of(python).ok_or(DetectError::UnsupportedPython { version: python })?;
    let all = project::python_files(&root).map_err(|source| DetectError::Walk {
        root: root.clone(),
        source,
    })?;
    let roots = Roots::new(&root);
    let parsed = if path.is_file() {
        reachable_from(path, &all, &roots)?
    } else {
        parse_all(&all)?
    };
    let (installed, bad) = Installed::scan(&env.site_packages);
    let mut detection = Detection::new(root.clone(), Some(python), Origin::Imports);
    detection.environment = Some(env.prefix.clone());
    for dist_info in bad {
        detection.warn(None, None, dist_info.to_string());
    }
    let mut direct: BTreeMap<usize, Vec<Source>> = BTreeMap::new();
    for (file, imports) in &parsed {
        let shown = relative(&root, file);
        for import in imports {
            classify(
                import,
                file,
                &shown,
                &roots,
                &stdlib,
                &installed,
                &mut direct,
                &mut detection,
            );
        }
    }
    closure::close(&installed, &env.markers, direct, &mut detection);
    detection.finish();
    Ok(detection)
}

/// The directory a path's project is rooted at: the directory itself, or a script's.
fn project_root(path: &Path) -> Result<PathBuf, DetectError> {
    let path = fs::canonicalize(path).map_err(|_| DetectError::NoSuchPath {
        path: path.to_path_buf(),
    })?;
    if path.is_dir() {
        return Ok(path);
    }
    Ok(path
        .parent()
        .map_or_else(|| PathBuf::from("/"), Path::to_path_buf))
}

fn relative(root: &Path, file: &Path) -> PathBuf {
    file.strip_prefix(root).unwrap_or(file).to_path_buf()
}

/// What one import is: the project's, the standard library's, an installed distribution's
/// (recorded in `direct`), or nothing installed (a warning, or a note when optional).
#[allow(clippy::too_many_arguments)]
fn classify(
    import: &Import,
    file: &Path,
    shown: &Path,
    roots: &Roots,
    stdlib: &Stdlib,
    installed: &Installed,
    direct: &mut BTreeMap<usize, Vec<Source>>,
    detection: &mut Detection,
) {
    let top = import.top();
    let own = roots.own(file, top);
    if matches!(own, Some(Own::Regular(_))) || stdlib.contains(top) {
        return;
    }
    let owners = import
        .candidates()
        .map(|c| installed.owners(&c))
        .find(|o| !o.is_empty());
    if let Some(owners) = owners {
        for &id in owners {
            direct.entry(id).or_default().push(Source::Import {
                file: shown.to_path_buf(),
                line: import.line,
                module: import.module.clone(),
                statement: import.statement.clone(),
                optional: import.optional,
            });
        }
        return;
    }
    if own.is_some() {
        return;
    }
    let line = Some(import.line);
    let file = Some(shown.to_path_buf());
    if import.optional {
        detection.note(
            file,
            line,
            format!(
                "optional import {:?} ({}) is not installed: skipped",
                import.module, import.statement
            ),
        );
    } else {
        detection.warn(
            file,
            line,
            format!(
                "{}: no installed distribution provides {:?}, so it is not in the requirements",
                import.statement, import.module
            ),
        );
    }
}

type Parsed = Vec<(PathBuf, Vec<Import>)>;

/// Every file's imports, parsed in parallel; the first file (in path order) that does not
/// parse is the error.
fn parse_all(files: &[PathBuf]) -> Result<Parsed, DetectError> {
    files
        .par_iter()
        .map(|file| Ok((file.clone(), parse_file(file)?)))
        .collect::<Result<Vec<_>, DetectError>>()
}

fn parse_file(file: &Path) -> Result<Vec<Import>, DetectError> {
    let bytes = fs::read(file).map_err(|source| DetectError::Io {
        path: file.to_path_buf(),
        source,
    })?;
    let source = String::from_utf8_lossy(&bytes);
    imports::imports_of(&source).map_err(|e| DetectError::Syntax {
        file: file.to_path_buf(),
        line: e.line,
        column: e.column,
        message: e.message,
    })
}

/// A script's imports and those of the project modules it reaches, transitively.
fn reachable_from(script: &Path, all: &[PathBuf], roots: &Roots) -> Result<Parsed, DetectError> {
    let script = fs::canonicalize(script).map_err(|source| DetectError::Io {
        path: script.to_path_buf(),
        source,
    })?;
    let mut seen: BTreeSet<PathBuf> = BTreeSet::from([script.clone()]);
    let mut batch = vec![script];
    let mut parsed = Vec::new();
    while !batch.is_empty() {
        let results = parse_all(&batch)?;
        let mut next = BTreeSet::new();
        for (file, imports) in &results {
            for import in imports {
                let path = match roots.own(file, import.top()) {
                    Some(Own::Regular(path) | Own::Namespace(path)) => path,
                    None => continue,
                };
                next.extend(
                    project::files_of(&path, all)
                        .into_iter()
                        .filter(|f| !seen.contains(f)),
                );
            }
        }
        parsed.extend(results);
        seen.extend(next.iter().cloned());
        batch = next.into_iter().collect();
    }
    parsed.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(parsed)
}
