//! `poetry.lock` with its `pyproject.toml` (beside it): the project's dependencies
//! (`[project] dependencies` or `[tool.poetry.dependencies]`), the groups named by `--group`
//! (`[tool.poetry.group.NAME.dependencies]`), the extras named by `--extra`, followed through
//! the lock's `[package.dependencies]`. The lock names files and hashes only, so the result is
//! requirements pinning every package by hash (uv has nothing to choose), found in the
//! project's `[[tool.poetry.source]]` indexes (or the command line's find-links).

use std::collections::{BTreeMap, VecDeque};
use std::path::Path;

use serde::Deserialize;

use super::error::FormatError;
use super::pins::{requirements, Pin};
use super::{package_name, syntax, EnvFile, RequiresPython, Selection};
use crate::name::PackageName;
use crate::spec::Requirement;

#[derive(Deserialize)]
struct PoetryLock {
    #[serde(default)]
    package: Vec<Package>,
}

#[derive(Deserialize)]
struct Package {
    name: String,
    version: String,
    #[serde(default)]
    files: Vec<LockedFile>,
    #[serde(default)]
    dependencies: BTreeMap<String, toml::Value>,
    #[serde(default)]
    extras: BTreeMap<String, Vec<String>>,
    source: Option<PackageSource>,
}

#[derive(Deserialize)]
struct LockedFile {
    file: String,
    hash: String,
}

#[derive(Deserialize)]
struct PackageSource {
    #[serde(rename = "type")]
    kind: String,
}

#[derive(Deserialize, Default)]
struct Pyproject {
    #[serde(default)]
    project: Option<Project>,
    #[serde(default)]
    tool: Tool,
}

#[derive(Deserialize, Default)]
struct Project {
    #[serde(default)]
    dependencies: Vec<String>,
    #[serde(rename = "optional-dependencies", default)]
    optional_dependencies: BTreeMap<String, Vec<String>>,
    #[serde(rename = "requires-python")]
    requires_python: Option<String>,
}

#[derive(Deserialize, Default)]
struct Tool {
    #[serde(default)]
    poetry: Poetry,
}

#[derive(Deserialize, Default)]
struct Poetry {
    #[serde(default)]
    dependencies: BTreeMap<String, toml::Value>,
    #[serde(rename = "dev-dependencies", default)]
    dev_dependencies: BTreeMap<String, toml::Value>,
    #[serde(default)]
    group: BTreeMap<String, PoetryGroup>,
    #[serde(default)]
    extras: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    source: Vec<PoetrySource>,
}

#[derive(Deserialize, Default)]
struct PoetryGroup {
    #[serde(default)]
    dependencies: BTreeMap<String, toml::Value>,
}

#[derive(Deserialize)]
struct PoetrySource {
    url: Option<String>,
    priority: Option<String>,
}

/// A dependency to follow: a package name, the marker of the edge, the extras asked of it.
struct Edge {
    name: PackageName,
    marker: Option<String>,
    extras: Vec<String>,
}

pub(super) fn read(file: &Path, text: &str, selection: &Selection) -> Result<EnvFile, FormatError> {
    let lock: PoetryLock = toml::from_str(text).map_err(|e| syntax(file, e))?;
    let pyproject_path = file.with_file_name("pyproject.toml");
    let pyproject_text =
        std::fs::read_to_string(&pyproject_path).map_err(|source| FormatError::Io {
            file: pyproject_path.clone(),
            source,
        })?;
    let pyproject: Pyproject =
        toml::from_str(&pyproject_text).map_err(|e| syntax(&pyproject_path, e))?;
    let roots = roots(&pyproject_path, &pyproject, selection)?;
    let packages: BTreeMap<PackageName, &Package> = lock
        .package
        .iter()
        .map(|p| Ok((package_name(file, "[[package]] name", &p.name)?, p)))
        .collect::<Result<_, FormatError>>()?;
    let mut pins: BTreeMap<PackageName, Option<String>> = BTreeMap::new();
    let mut extras_seen = std::collections::BTreeSet::new();
    let mut queue: VecDeque<Edge> = roots.into();
    while let Some(edge) = queue.pop_front() {
        let Some(package) = packages.get(&edge.name) else {
            return Err(FormatError::Package {
                file: file.to_path_buf(),
                package: edge.name.to_string(),
                message: "is a dependency but the lock has no [[package]] for it: run `poetry lock` again".into(),
            });
        };
        let first = !pins.contains_key(&edge.name);
        let marker = pins.entry(edge.name.clone()).or_insert(edge.marker.clone());
        if edge.marker.is_none() {
            *marker = None;
        }
        let mut follow: Vec<(&String, &toml::Value, bool)> = Vec::new();
        if first {
            follow.extend(package.dependencies.iter().map(|(n, v)| (n, v, false)));
        }
        for extra in &edge.extras {
            if extras_seen.insert((edge.name.clone(), extra.clone())) {
                let wanted: Vec<&String> =
                    package.extras.get(extra).into_iter().flatten().collect();
                for spec in wanted {
                    // `gamma (>=1.0)`: the name is the first word.
                    let dep = spec.split([' ', '(', '[', ';']).next().unwrap_or(spec);
                    if let Some((n, v)) = package.dependencies.get_key_value(dep) {
                        follow.push((n, v, true));
                    }
                }
            }
        }
        for (name, value, activated) in follow {
            for constraint in constraints(value) {
                if constraint.optional && !activated {
                    continue;
                }
                queue.push_back(Edge {
                    name: package_name(file, &format!("{} dependencies", package.name), name)?,
                    marker: constraint.marker,
                    extras: constraint.extras,
                });
            }
        }
    }
    let mut out = Vec::new();
    for (name, marker) in pins {
        let package = packages[&name];
        if let Some(source) = &package.source {
            if source.kind != "legacy" {
                return Err(FormatError::Package {
                    file: file.to_path_buf(),
                    package: name.to_string(),
                    message: format!("comes from a {} source, not an index; strata installs indexed wheels from a poetry.lock: build a wheel, publish it to an index or a find-links directory, and lock again", source.kind),
                });
            }
        }
        let only_sdists =
            !package.files.is_empty() && !package.files.iter().any(|f| f.file.ends_with(".whl"));
        if only_sdists {
            return Err(FormatError::Package {
                file: file.to_path_buf(),
                package: name.to_string(),
                message: format!("the lock lists only sdists for {}; strata installs wheels only: build a wheel for it and lock again", package.version),
            });
        }
        out.push(Pin {
            key: format!("package {name}"),
            name: name.to_string(),
            version: package.version.clone(),
            marker,
            hashes: package
                .files
                .iter()
                .filter(|f| f.file.ends_with(".whl"))
                .map(|f| f.hash.clone())
                .collect(),
        });
    }
    let indexes = indexes(&pyproject.tool.poetry.source);
    let requires_python = pyproject
        .project
        .as_ref()
        .and_then(|p| p.requires_python.clone())
        .or_else(|| {
            pyproject
                .tool
                .poetry
                .dependencies
                .get("python")
                .and_then(|v| v.as_str())
                .and_then(poetry_python)
        })
        .map(|specifier| RequiresPython {
            file: pyproject_path.clone(),
            specifier,
        });
    Ok(EnvFile::Requirements {
        file: requirements(file, out, &indexes)?,
        requires_python,
        python: None,
    })
}

/// The project's own dependencies and the groups and extras asked for.
fn roots(
    file: &Path,
    pyproject: &Pyproject,
    selection: &Selection,
) -> Result<Vec<Edge>, FormatError> {
    let poetry = &pyproject.tool.poetry;
    let mut edges = Vec::new();
    let project = pyproject.project.as_ref();
    for (i, text) in project
        .map(|p| &p.dependencies)
        .into_iter()
        .flatten()
        .enumerate()
    {
        edges.push(pep508_edge(
            file,
            &format!("[project] dependencies[{i}]"),
            text,
        )?);
    }
    edges.extend(table_edges(
        file,
        "[tool.poetry.dependencies]",
        &poetry.dependencies,
    )?);
    for extra in &selection.extras {
        let key = package_name(file, "--extra", extra)?;
        let in_project = project.and_then(|p| {
            p.optional_dependencies
                .iter()
                .find(|(k, _)| PackageName::new(k).is_ok_and(|k| k == key))
        });
        let in_poetry = poetry
            .extras
            .iter()
            .find(|(k, _)| PackageName::new(k).is_ok_and(|k| k == key));
        match (in_project, in_poetry) {
            (Some((name, list)), _) => {
                for (i, text) in list.iter().enumerate() {
                    edges.push(pep508_edge(
                        file,
                        &format!("[project.optional-dependencies] {name}[{i}]"),
                        text,
                    )?);
                }
            }
            (None, Some((name, list))) => {
                for dep in list {
                    edges.push(Edge {
                        name: package_name(file, &format!("[tool.poetry.extras] {name}"), dep)?,
                        marker: None,
                        extras: Vec::new(),
                    });
                }
            }
            (None, None) => {
                let mut known: Vec<String> = poetry.extras.keys().cloned().collect();
                known.extend(
                    project
                        .into_iter()
                        .flat_map(|p| p.optional_dependencies.keys().cloned()),
                );
                return Err(FormatError::UnknownSelection {
                    file: file.to_path_buf(),
                    kind: "extra",
                    name: extra.clone(),
                    known,
                });
            }
        }
    }
    for group in &selection.groups {
        if let Some(table) = poetry.group.get(group) {
            edges.extend(table_edges(
                file,
                &format!("[tool.poetry.group.{group}.dependencies]"),
                &table.dependencies,
            )?);
        } else if group == "dev" && !poetry.dev_dependencies.is_empty() {
            edges.extend(table_edges(
                file,
                "[tool.poetry.dev-dependencies]",
                &poetry.dev_dependencies,
            )?);
        } else {
            return Err(FormatError::UnknownSelection {
                file: file.to_path_buf(),
                kind: "dependency group",
                name: group.clone(),
                known: poetry.group.keys().cloned().collect(),
            });
        }
    }
    Ok(edges)
}

fn pep508_edge(file: &Path, key: &str, text: &str) -> Result<Edge, FormatError> {
    let requirement: Requirement = text.parse().map_err(|source| FormatError::Requirement {
        file: file.to_path_buf(),
        key: key.to_string(),
        source: Box::new(source),
    })?;
    Ok(Edge {
        name: requirement.name,
        marker: requirement.marker,
        extras: requirement.extras,
    })
}

/// Poetry's dependency tables (`name = "^1.0"` or `{ version, markers, optional, extras }`,
/// or a list of those), less `python` and optional entries (those come with extras).
fn table_edges(
    file: &Path,
    key: &str,
    table: &BTreeMap<String, toml::Value>,
) -> Result<Vec<Edge>, FormatError> {
    let mut edges = Vec::new();
    for (name, value) in table.iter().filter(|(n, _)| n.as_str() != "python") {
        for constraint in constraints(value) {
            if constraint.optional {
                continue;
            }
            edges.push(Edge {
                name: package_name(file, key, name)?,
                marker: constraint.marker,
                extras: constraint.extras,
            });
        }
    }
    Ok(edges)
}

struct Constraint {
    marker: Option<String>,
    optional: bool,
    extras: Vec<String>,
}

fn constraints(value: &toml::Value) -> Vec<Constraint> {
    match value {
        toml::Value::Array(items) => items.iter().flat_map(constraints).collect(),
        toml::Value::Table(t) => vec![Constraint {
            marker: t.get("markers").and_then(|m| m.as_str()).map(String::from),
            optional: t.get("optional").and_then(|o| o.as_bool()).unwrap_or(false),
            extras: t
                .get("extras")
                .and_then(|e| e.as_array())
                .map(|a| {
                    a.iter()
                        .filter_map(|e| e.as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default(),
        }],
        _ => vec![Constraint {
            marker: None,
            optional: false,
            extras: Vec::new(),
        }],
    }
}

/// Poetry's `python = "^3.11"` / `">=3.10,<3.13"` as a PEP 440 specifier (caret and tilde
/// ranges written out); `None` for what it cannot say in PEP 440 (`||`).
fn poetry_python(text: &str) -> Option<String> {
    if text.contains("||") {
        return None;
    }
    let clauses: Vec<String> = text
        .split(',')
        .map(|c| {
            let c = c.trim();
            if let Some(v) = c.strip_prefix('^') {
                let major: u32 = v.split('.').next()?.parse().ok()?;
                Some(format!(">={v},<{}", major + 1))
            } else if let Some(v) = c.strip_prefix('~').filter(|v| !v.starts_with('=')) {
                let mut parts = v.split('.');
                let major = parts.next()?;
                let minor: u32 = parts.next()?.parse().ok()?;
                Some(format!(">={v},<{major}.{}", minor + 1))
            } else if c == "*" {
                Some(String::new())
            } else {
                Some(c.to_string())
            }
        })
        .collect::<Option<_>>()?;
    let joined = clauses
        .into_iter()
        .filter(|c| !c.is_empty())
        .collect::<Vec<_>>()
        .join(",");
    (!joined.is_empty()).then_some(joined)
}

/// The project's indexes: a `primary`/`default` source first, then `supplemental` ones
/// (explicit sources serve only packages that name them; strata pins by hash, so they are
/// extra indexes too). None: PyPI (or the command line's).
fn indexes(sources: &[PoetrySource]) -> Vec<String> {
    let rank = |s: &PoetrySource| match s.priority.as_deref() {
        Some("default") | Some("primary") | None => 0,
        _ => 1,
    };
    let mut ordered: Vec<&PoetrySource> = sources.iter().filter(|s| s.url.is_some()).collect();
    ordered.sort_by_key(|s| rank(s));
    ordered.into_iter().filter_map(|s| s.url.clone()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn poetry_python_ranges() {
        assert_eq!(poetry_python("^3.11").as_deref(), Some(">=3.11,<4"));
        assert_eq!(poetry_python("~3.10").as_deref(), Some(">=3.10,<3.11"));
        assert_eq!(poetry_python(">=3.9,<3.13").as_deref(), Some(">=3.9,<3.13"));
        assert_eq!(poetry_python("*"), None);
        assert_eq!(poetry_python("^2.7 || ^3.8"), None);
    }
}
