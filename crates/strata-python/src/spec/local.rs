//! Requirements named by a local path: `./pkg` or `/abs/pkg` (a project directory with a
//! pyproject.toml), `./dist/x.whl` (a wheel file), and `-e ./pkg`. Each becomes a requirement
//! on the package it holds, by its absolute `file://` URL: a directory is built into a wheel
//! like an sdist (see `crate::sdist`), a wheel is installed as it is.
//!
//! An editable install would be a link from the image to the host's source tree, which an
//! image cannot hold: `-e` installs the project normally and says so in a warning.

use std::fs;
use std::path::Path;

use serde::Deserialize;

use super::Requirement;
use crate::name::PackageName;
use crate::wheel_name::WheelFilename;

/// Why a local path cannot be a requirement.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LocalPathError {
    #[error("it does not exist or cannot be read ({0})")]
    Missing(String),
    #[error("a directory needs a pyproject.toml with [project] name to be installed ({0})")]
    NoProjectName(String),
    #[error("only project directories and wheel files (.whl) can be named by path; name an sdist as `name @ file:///path/to/x.tar.gz`")]
    NotAProject,
    #[error("{0}")]
    WheelName(String),
}

#[derive(Deserialize)]
struct Pyproject {
    project: Option<Project>,
}

#[derive(Deserialize)]
struct Project {
    name: Option<String>,
}

/// The requirement for the project directory or wheel at `path` (relative to `base_dir`).
pub(super) fn local_requirement(
    path: &str,
    base_dir: &Path,
) -> Result<Requirement, LocalPathError> {
    let joined = base_dir.join(path);
    let absolute = fs::canonicalize(&joined).map_err(|e| LocalPathError::Missing(e.to_string()))?;
    let name = if absolute.is_dir() {
        project_name(&absolute)?
    } else if absolute.extension().is_some_and(|e| e == "whl") {
        let file = absolute
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default();
        WheelFilename::parse(&file)
            .map_err(|e| LocalPathError::WheelName(e.to_string()))?
            .name
    } else {
        return Err(LocalPathError::NotAProject);
    };
    let url = url::Url::from_file_path(&absolute)
        .map_err(|()| LocalPathError::Missing(format!("{} is not absolute", absolute.display())))?;
    Ok(Requirement {
        name,
        extras: Vec::new(),
        specifier: String::new(),
        url: Some(url.to_string()),
        marker: None,
        hashes: Vec::new(),
    })
}

fn project_name(dir: &Path) -> Result<PackageName, LocalPathError> {
    let pyproject = dir.join("pyproject.toml");
    let text = fs::read_to_string(&pyproject)
        .map_err(|e| LocalPathError::NoProjectName(format!("{}: {e}", pyproject.display())))?;
    let parsed: Pyproject = toml::from_str(&text)
        .map_err(|e| LocalPathError::NoProjectName(format!("{}: {e}", pyproject.display())))?;
    let name = parsed.project.and_then(|p| p.name).ok_or_else(|| {
        LocalPathError::NoProjectName(format!("{} has none", pyproject.display()))
    })?;
    PackageName::new(&name)
        .map_err(|e| LocalPathError::NoProjectName(format!("{}: {e}", pyproject.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn projects_and_wheels_are_named_by_their_metadata() {
        let dir = tempfile::tempdir().unwrap();
        let proj = dir.path().join("proj");
        fs::create_dir_all(&proj).unwrap();
        fs::write(
            proj.join("pyproject.toml"),
            "[project]\nname = \"My_Proj\"\nversion = \"1\"\n",
        )
        .unwrap();
        let req = local_requirement("./proj", dir.path()).unwrap();
        assert_eq!(req.name.as_str(), "my-proj");
        let canonical = fs::canonicalize(&proj).unwrap();
        assert_eq!(
            req.url.as_deref(),
            Some(url::Url::from_file_path(&canonical).unwrap().as_str())
        );

        fs::write(dir.path().join("w-1.0-py3-none-any.whl"), b"").unwrap();
        let req = local_requirement("w-1.0-py3-none-any.whl", dir.path()).unwrap();
        assert_eq!(req.name.as_str(), "w");
    }

    #[test]
    fn paths_naming_no_project_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("empty")).unwrap();
        fs::write(dir.path().join("x.tar.gz"), b"").unwrap();
        let nameless = dir.path().join("nameless");
        fs::create_dir_all(&nameless).unwrap();
        fs::write(
            nameless.join("pyproject.toml"),
            "[project]\nversion = \"1\"\n",
        )
        .unwrap();
        for (path, want) in [
            ("missing", "does not exist"),
            ("empty", "pyproject.toml"),
            ("nameless", "has none"),
            ("x.tar.gz", "name an sdist as"),
        ] {
            let err = local_requirement(path, dir.path()).unwrap_err();
            assert!(err.to_string().contains(want), "{path}: {err}");
        }
    }
}
