//! Requirements a project declares: the first of the files `strata build -r DIR` reads, in
//! the same order ([`strata_python::PROJECT_FILES`]: pylock.toml, uv.lock, poetry.lock,
//! Pipfile.lock, pyproject.toml, requirements.txt, environment.yml), else the first other
//! `requirements*.txt` by name. A pyproject.toml counts only when it has `[project]
//! dependencies` (many hold only tool settings).
//!
//! A lock's packages are listed as `name==version` pins; a build reads the declared file
//! itself ([`Detection::declared_file`]), so what it installs is exactly what `-r FILE`
//! installs.

use std::fs;
use std::path::{Path, PathBuf};

use strata_python::{
    parse_requirements_file, read_env, EnvFile, PythonVersion, Requirement, RequirementsFile,
    Selection, PROJECT_FILES,
};

use crate::detection::{DetectedRequirement, Detection, Origin, Source};
use crate::DetectError;

/// The detection from the project's declared file, if it has one.
pub fn find(root: &Path, python: Option<PythonVersion>) -> Result<Option<Detection>, DetectError> {
    let others = other_requirement_files(root)?;
    let present: Vec<PathBuf> = PROJECT_FILES
        .iter()
        .map(|name| root.join(name))
        .filter(|file| file.is_file())
        .collect();
    let mut chosen = None;
    for file in &present {
        if file.ends_with("pyproject.toml") && !declares_dependencies(file)? {
            continue;
        }
        chosen = Some((file.clone(), read_declared(file)?));
        break;
    }
    let (file, declared) = match (chosen, others.first()) {
        (Some(found), _) => found,
        (None, Some(first)) => (first.clone(), parse_requirements_file(first)?),
        (None, None) => return Ok(None),
    };
    let shown = file.strip_prefix(root).unwrap_or(&file).to_path_buf();
    let mut detection = Detection::new(
        root.to_path_buf(),
        python,
        Origin::File {
            file: shown.clone(),
        },
    );
    for requirement in &declared.requirements {
        let source = Source::File {
            file: shown.clone(),
        };
        detection.requirements.push(DetectedRequirement::new(
            requirement.clone(),
            None,
            vec![source],
        ));
    }
    let unused = present.iter().chain(&others).filter(|o| **o != file);
    for other in unused {
        let other = other.strip_prefix(root).unwrap_or(other);
        detection.note(
            Some(other.to_path_buf()),
            None,
            format!("not used: {} comes first", shown.display()),
        );
    }
    detection.declared_file = Some(file);
    detection.declared = Some(declared);
    detection.finish();
    Ok(Some(detection))
}

/// The requirements of a declared file as `strata build -r FILE` reads it; a lock's packages
/// as `name==version` pins.
fn read_declared(file: &Path) -> Result<RequirementsFile, DetectError> {
    match read_env(file, &Selection::default())? {
        EnvFile::Requirements { file, .. } => Ok(file),
        EnvFile::Pinned(set) => {
            let mut requirements = Vec::new();
            for package in &set.packages {
                // A git or directory entry may leave its version to the build.
                let mut line = match package.version.as_str() {
                    "" => package.name.to_string(),
                    version => format!("{}=={version}", package.name),
                };
                if let Some(marker) = &package.marker {
                    line = format!("{line} ; {marker}");
                }
                let requirement: Requirement =
                    line.parse().map_err(|e| DetectError::Pyproject {
                        file: file.to_path_buf(),
                        message: format!("package {}: {e}", package.name),
                    })?;
                requirements.push(requirement);
            }
            Ok(RequirementsFile {
                requirements,
                ..RequirementsFile::default()
            })
        }
    }
}

/// `requirements*.txt` at the root other than `requirements.txt`, sorted by name.
fn other_requirement_files(root: &Path) -> Result<Vec<PathBuf>, DetectError> {
    let entries = fs::read_dir(root).map_err(|source| DetectError::Io {
        path: root.to_path_buf(),
        source,
    })?;
    let mut found: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            name.starts_with("requirements")
                && name.ends_with(".txt")
                && name != "requirements.txt"
                && p.is_file()
        })
        .collect();
    found.sort();
    Ok(found)
}

/// Whether `pyproject.toml` has a `[project] dependencies` key.
fn declares_dependencies(file: &Path) -> Result<bool, DetectError> {
    let Ok(text) = fs::read_to_string(file) else {
        return Ok(false);
    };
    let doc: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| DetectError::Pyproject {
            file: file.to_path_buf(),
            message: e.to_string(),
        })?;
    Ok(doc
        .get("project")
        .and_then(|p| p.as_table())
        .is_some_and(|p| p.contains_key("dependencies")))
}
