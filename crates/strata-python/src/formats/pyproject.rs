//! `pyproject.toml`: `[project] dependencies`, `[project.optional-dependencies]` chosen by
//! `--extra`, `[dependency-groups]` (PEP 735, `{include-group = "..."}` too) chosen by
//! `--group`, and `requires-python`. The project itself is not installed: strata builds its
//! environment, the code comes with the job.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

use super::error::FormatError;
use super::{package_name, syntax, EnvFile, RequiresPython, Selection};
use crate::name::PackageName;
use crate::spec::{Requirement, RequirementsFile};

#[derive(Deserialize)]
struct Pyproject {
    project: Option<Project>,
    /// Only whether there is one: a project with a build system is a package.
    #[serde(rename = "build-system")]
    build_system: Option<toml::Table>,
    #[serde(rename = "dependency-groups", default)]
    dependency_groups: BTreeMap<String, Vec<GroupItem>>,
}

#[derive(Deserialize)]
struct Project {
    name: Option<String>,
    dependencies: Option<Vec<String>>,
    #[serde(rename = "optional-dependencies", default)]
    optional_dependencies: BTreeMap<String, Vec<String>>,
    #[serde(rename = "requires-python")]
    requires_python: Option<String>,
    #[serde(default)]
    dynamic: Vec<String>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum GroupItem {
    Requirement(String),
    Include {
        #[serde(rename = "include-group")]
        include_group: String,
    },
}

pub(super) fn read(file: &Path, text: &str, selection: &Selection) -> Result<EnvFile, FormatError> {
    let doc: Pyproject = toml::from_str(text).map_err(|e| syntax(file, e))?;
    let groups = normalised_groups(file, &doc.dependency_groups)?;
    let mut requirements = Vec::new();
    let mut requires_python = None;
    match &doc.project {
        Some(project) => {
            if project.dynamic.iter().any(|d| d == "dependencies") {
                return Err(FormatError::Invalid {
                    file: file.to_path_buf(),
                    key: "[project] dynamic".into(),
                    message: "the dependencies are computed by the build backend, strata cannot read them; list them under [project] dependencies, or give a lock file (pylock.toml, uv.lock)".into(),
                });
            }
            for (i, text) in project.dependencies.iter().flatten().enumerate() {
                requirements.push(requirement(
                    file,
                    &format!("[project] dependencies[{i}]"),
                    text,
                )?);
            }
            requirements.extend(extras(file, project, &selection.extras)?);
            if selection.project {
                requirements.push(the_project(file, project, doc.build_system.is_some())?);
            }
            requires_python = project
                .requires_python
                .clone()
                .map(|specifier| RequiresPython {
                    file: file.to_path_buf(),
                    specifier,
                });
        }
        None if doc.dependency_groups.is_empty() => {
            return Err(FormatError::Invalid {
                file: file.to_path_buf(),
                key: "[project]".into(),
                message: "missing: strata reads [project] dependencies (PEP 621) and [dependency-groups]; a Poetry-only project can be built from its lock exported as pylock.toml or requirements.txt".into(),
            });
        }
        None => {
            if let Some(extra) = selection.extras.first() {
                return Err(unknown(file, "extra", extra, Vec::new()));
            }
            if selection.project {
                return Err(FormatError::Invalid {
                    file: file.to_path_buf(),
                    key: "[project]".into(),
                    message:
                        "missing, so there is no project to install: leave out --install-project"
                            .into(),
                });
            }
        }
    }
    // Every group is checked (names, requirements, cycles), not only those asked for: a
    // broken group is an error in the file whoever uses it.
    for group in groups.keys() {
        collect_group(file, &groups, group, &mut Vec::new(), &mut Vec::new())?;
    }
    for group in &selection.groups {
        let mut path = Vec::new();
        collect_group(
            file,
            &groups,
            &normalise(file, "--group", group)?,
            &mut path,
            &mut requirements,
        )?;
    }
    Ok(EnvFile::Requirements {
        file: RequirementsFile {
            requirements,
            ..RequirementsFile::default()
        },
        requires_python,
        python: None,
    })
}

/// The project itself, as a direct reference to its directory (built like any local
/// project: installed as a copy, never as a link to the host).
fn the_project(file: &Path, project: &Project, package: bool) -> Result<Requirement, FormatError> {
    let invalid = |key: &str, message: &str| FormatError::Invalid {
        file: file.to_path_buf(),
        key: key.to_string(),
        message: message.to_string(),
    };
    if !package {
        return Err(invalid(
            "[build-system]",
            "missing: the project is not a package, so it has nothing of its own to install; leave out --install-project",
        ));
    }
    let name = project
        .name
        .as_deref()
        .ok_or_else(|| invalid("[project] name", "missing: --install-project needs it"))?;
    let dir = std::path::absolute(file.parent().unwrap_or(Path::new(".")))
        .map_err(|e| invalid("[project]", &format!("its directory: {e}")))?;
    let url = url::Url::from_directory_path(&dir).map_err(|()| {
        invalid(
            "[project]",
            "its directory cannot be named by a file:// URL",
        )
    })?;
    requirement(file, "[project] name", &format!("{name} @ {url}"))
}

fn requirement(file: &Path, key: &str, text: &str) -> Result<Requirement, FormatError> {
    text.parse().map_err(|source| FormatError::Requirement {
        file: file.to_path_buf(),
        key: key.to_string(),
        source: Box::new(source),
    })
}

fn normalise(file: &Path, key: &str, raw: &str) -> Result<PackageName, FormatError> {
    package_name(file, key, raw)
}

fn unknown(file: &Path, kind: &'static str, name: &str, known: Vec<String>) -> FormatError {
    FormatError::UnknownSelection {
        file: file.to_path_buf(),
        kind,
        name: name.to_string(),
        known,
    }
}

/// The optional dependencies of the extras asked for (names compared normalised).
fn extras(
    file: &Path,
    project: &Project,
    wanted: &[String],
) -> Result<Vec<Requirement>, FormatError> {
    let mut by_name = BTreeMap::new();
    for (name, list) in &project.optional_dependencies {
        by_name.insert(
            normalise(file, "[project.optional-dependencies]", name)?,
            (name, list),
        );
    }
    let mut out = Vec::new();
    for extra in wanted {
        let key = normalise(file, "--extra", extra)?;
        let Some((name, list)) = by_name.get(&key) else {
            let known = project.optional_dependencies.keys().cloned().collect();
            return Err(unknown(file, "extra", extra, known));
        };
        for (i, text) in list.iter().enumerate() {
            out.push(requirement(
                file,
                &format!("[project.optional-dependencies] {name}[{i}]"),
                text,
            )?);
        }
    }
    Ok(out)
}

type Groups<'a> = BTreeMap<PackageName, (&'a String, &'a Vec<GroupItem>)>;

/// The groups by normalised name (PEP 735 compares names normalised; two that normalise
/// alike are an error).
fn normalised_groups<'a>(
    file: &Path,
    groups: &'a BTreeMap<String, Vec<GroupItem>>,
) -> Result<Groups<'a>, FormatError> {
    let mut out = Groups::new();
    for (name, items) in groups {
        let key = normalise(file, "[dependency-groups]", name)?;
        if let Some((other, _)) = out.insert(key, (name, items)) {
            return Err(FormatError::Invalid {
                file: file.to_path_buf(),
                key: "[dependency-groups]".into(),
                message: format!("groups {other:?} and {name:?} have the same normalised name"),
            });
        }
    }
    Ok(out)
}

/// The requirements of `group` and the groups it includes, refusing cycles.
fn collect_group(
    file: &Path,
    groups: &Groups,
    group: &PackageName,
    path: &mut Vec<String>,
    out: &mut Vec<Requirement>,
) -> Result<(), FormatError> {
    let Some((name, items)) = groups.get(group) else {
        let known = groups.values().map(|(n, _)| (*n).clone()).collect();
        return Err(unknown(file, "dependency group", group.as_str(), known));
    };
    if path.iter().any(|p| p == group.as_str()) {
        path.push(group.to_string());
        return Err(FormatError::GroupCycle {
            file: file.to_path_buf(),
            group: group.to_string(),
            path: path.clone(),
        });
    }
    path.push(group.to_string());
    for (i, item) in items.iter().enumerate() {
        match item {
            GroupItem::Requirement(text) => {
                out.push(requirement(
                    file,
                    &format!("[dependency-groups] {name}[{i}]"),
                    text,
                )?);
            }
            GroupItem::Include { include_group } => {
                let included = normalise(
                    file,
                    &format!("[dependency-groups] {name}[{i}]"),
                    include_group,
                )?;
                collect_group(file, groups, &included, path, out)?;
            }
        }
    }
    path.pop();
    Ok(())
}
