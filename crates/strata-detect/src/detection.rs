//! What a detection found, in the form `strata detect --json` prints (documented in the
//! README; fields are only ever added) and as a requirements file the build reads.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Serialize;
use strata_python::{PackageName, PythonVersion, Requirement, RequirementsFile};

/// The requirement set of a project.
#[derive(Debug, Clone, Serialize)]
pub struct Detection {
    /// The project's root directory (a script's directory).
    pub root: PathBuf,
    /// The Python the set is for, when known (always, from imports).
    pub python: Option<PythonVersion>,
    /// The environment's prefix (from imports only).
    pub environment: Option<PathBuf>,
    /// Where the set came from.
    pub from: Origin,
    /// Sorted by name.
    pub requirements: Vec<DetectedRequirement>,
    /// Distributions installed from a local path or editable: shipped as code, not looked up
    /// on an index. Sorted by name.
    pub local_packages: Vec<LocalPackage>,
    /// Imports that map to nothing installed, unusable metadata: the set may be incomplete.
    pub warnings: Vec<Finding>,
    /// Optional imports skipped, declared files not used.
    pub notes: Vec<Finding>,
    #[serde(skip)]
    pub(crate) declared: Option<RequirementsFile>,
    #[serde(skip)]
    pub(crate) declared_file: Option<PathBuf>,
}

/// Where a requirement set came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum Origin {
    /// A declared file, relative to the root (`requirements.txt`, `pyproject.toml`).
    File {
        file: PathBuf,
    },
    Imports,
}

/// One requirement and why it is there.
#[derive(Debug, Clone, Serialize)]
pub struct DetectedRequirement {
    pub name: PackageName,
    /// The installed version it is pinned to (from imports).
    pub version: Option<String>,
    /// The requirement line (`name==version`, or as declared).
    pub requirement: String,
    /// Only optional imports lead to it.
    pub optional: bool,
    /// Sorted: imports by file and line, then the distributions requiring it.
    pub sources: Vec<Source>,
    #[serde(skip)]
    pub(crate) parsed: Requirement,
}

/// A distribution whose code is local (a path, or an editable install).
#[derive(Debug, Clone, Serialize)]
pub struct LocalPackage {
    pub name: PackageName,
    pub version: String,
    /// Its source directory (or the wheel or sdist file it was installed from).
    pub path: PathBuf,
    pub editable: bool,
    pub sources: Vec<Source>,
}

/// Why a requirement is in the set.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum Source {
    /// An import of the project's code; `file` is relative to the root.
    Import {
        file: PathBuf,
        line: u32,
        module: String,
        statement: String,
        optional: bool,
    },
    /// A `Requires-Dist` of an installed distribution in the set.
    RequiredBy {
        dist: PackageName,
        requirement: String,
    },
    /// A declared requirements file, relative to the root.
    File { file: PathBuf },
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Import {
                file,
                line,
                statement,
                optional,
                ..
            } => {
                write!(f, "{}:{line} {statement}", file.display())?;
                if *optional {
                    f.write_str(" (optional)")?;
                }
                Ok(())
            }
            Source::RequiredBy { dist, requirement } => {
                write!(f, "required by {dist} ({requirement})")
            }
            Source::File { file } => write!(f, "{}", file.display()),
        }
    }
}

/// A warning or note, with the file and line it is about when there is one.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Finding {
    pub file: Option<PathBuf>,
    pub line: Option<u32>,
    pub message: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.file, self.line) {
            (Some(file), Some(line)) => write!(f, "{}:{line}: ", file.display())?,
            (Some(file), None) => write!(f, "{}: ", file.display())?,
            _ => {}
        }
        f.write_str(&self.message)
    }
}

impl Detection {
    pub(crate) fn new(root: PathBuf, python: Option<PythonVersion>, from: Origin) -> Detection {
        Detection {
            root,
            python,
            environment: None,
            from,
            requirements: Vec::new(),
            local_packages: Vec::new(),
            warnings: Vec::new(),
            notes: Vec::new(),
            declared: None,
            declared_file: None,
        }
    }

    pub(crate) fn warn(&mut self, file: Option<PathBuf>, line: Option<u32>, message: String) {
        self.warnings.push(Finding {
            file,
            line,
            message,
        });
    }

    pub(crate) fn note(&mut self, file: Option<PathBuf>, line: Option<u32>, message: String) {
        self.notes.push(Finding {
            file,
            line,
            message,
        });
    }

    /// Sorts and deduplicates everything, so equal projects give equal output.
    pub(crate) fn finish(&mut self) {
        self.requirements.sort_by(|a, b| a.name.cmp(&b.name));
        for r in &mut self.requirements {
            r.sources.sort();
            r.sources.dedup();
        }
        self.local_packages.sort_by(|a, b| a.name.cmp(&b.name));
        for p in &mut self.local_packages {
            p.sources.sort();
            p.sources.dedup();
        }
        for findings in [&mut self.warnings, &mut self.notes] {
            findings.sort();
            findings.dedup();
        }
    }

    /// The declared file the set came from (a requirements file, pyproject.toml, a lock,
    /// environment.yml): a build should read it itself (`-r FILE`), with its includes,
    /// constraints, pins and options relative to its own directory.
    pub fn declared_file(&self) -> Option<&Path> {
        self.declared_file.as_deref()
    }

    /// The set as strata's build reads it: the declared file's content, or one `name==version`
    /// pin per requirement.
    pub fn requirements_file(&self) -> RequirementsFile {
        if let Some(declared) = &self.declared {
            return declared.clone();
        }
        RequirementsFile {
            requirements: self.requirements.iter().map(|r| r.parsed.clone()).collect(),
            ..RequirementsFile::default()
        }
    }

    /// [`Detection::requirements_file`] as the text of a requirements file: source options,
    /// then one requirement a line. Constraints of a declared file cannot be written inline;
    /// build from [`Detection::declared_file`] when there is one.
    pub fn requirements_txt(&self) -> String {
        let file = self.requirements_file();
        let mut text = String::new();
        if let Some(index) = &file.sources.index_url {
            text.push_str(&format!("--index-url {index}\n"));
        }
        for extra in &file.sources.extra_index_urls {
            text.push_str(&format!("--extra-index-url {extra}\n"));
        }
        for links in &file.sources.find_links {
            text.push_str(&format!("--find-links {links}\n"));
        }
        if file.sources.no_index {
            text.push_str("--no-index\n");
        }
        for requirement in &file.requirements {
            text.push_str(&requirement.to_requirements_line());
            text.push('\n');
        }
        text
    }
}

impl DetectedRequirement {
    pub(crate) fn new(parsed: Requirement, version: Option<String>, sources: Vec<Source>) -> Self {
        let optional = !sources.is_empty()
            && sources
                .iter()
                .all(|s| matches!(s, Source::Import { optional: true, .. }));
        DetectedRequirement {
            name: parsed.name.clone(),
            version,
            requirement: parsed.to_string(),
            optional,
            sources,
            parsed,
        }
    }
}
