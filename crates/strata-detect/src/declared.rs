//! Requirements a project declares: `requirements.txt`, else `pyproject.toml`'s
//! `[project] dependencies`, else the first other `requirements*.txt` by name.

use std::fs;
use std::path::{Path, PathBuf};

use strata_python::{parse_requirements_file, PythonVersion, Requirement, RequirementsFile};

use crate::detection::{DetectedRequirement, Detection, Origin, Source};
use crate::DetectError;

/// The detection from the project's declared file, if it has one.
pub fn find(root: &Path, python: Option<PythonVersion>) -> Result<Option<Detection>, DetectError> {
    let others = other_requirement_files(root)?;
    let plain = root.join("requirements.txt");
    let (file, declared) = if plain.is_file() {
        (plain.clone(), parse_requirements_file(&plain)?)
    } else if let Some(from_pyproject) = pyproject(root)? {
        (root.join("pyproject.toml"), from_pyproject)
    } else if let Some(first) = others.first() {
        (first.clone(), parse_requirements_file(first)?)
    } else {
        return Ok(None);
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
    for other in others.iter().filter(|o| **o != file) {
        let other = other.strip_prefix(root).unwrap_or(other);
        detection.note(
            Some(other.to_path_buf()),
            None,
            format!("not used: {} comes first", shown.display()),
        );
    }
    if file.extension().is_some_and(|e| e == "txt") {
        detection.declared_file = Some(file);
    }
    detection.declared = Some(declared);
    detection.finish();
    Ok(Some(detection))
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

/// `[project] dependencies` of `pyproject.toml`, when the file has that key.
fn pyproject(root: &Path) -> Result<Option<RequirementsFile>, DetectError> {
    let file = root.join("pyproject.toml");
    let Ok(text) = fs::read_to_string(&file) else {
        return Ok(None);
    };
    let bad = |message: String| DetectError::Pyproject {
        file: file.clone(),
        message,
    };
    let doc: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| bad(e.to_string()))?;
    let Some(dependencies) = doc
        .get("project")
        .and_then(|p| p.as_table())
        .and_then(|p| p.get("dependencies"))
    else {
        return Ok(None);
    };
    let list = dependencies
        .as_array()
        .ok_or_else(|| bad("[project] dependencies is not a list".to_string()))?;
    let mut requirements = Vec::new();
    for item in list {
        let text = item
            .as_str()
            .ok_or_else(|| bad(format!("[project] dependencies: {item} is not a string")))?;
        let requirement: Requirement = text
            .parse()
            .map_err(|e| bad(format!("[project] dependencies: {e}")))?;
        requirements.push(requirement);
    }
    Ok(Some(RequirementsFile {
        requirements,
        ..RequirementsFile::default()
    }))
}
