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
use super::pins::{file_url, git_at_commit, requirements, subdirectory_fragment, Pin};
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
    hash: String,
}

#[derive(Deserialize)]
struct PackageSource {
    #[serde(rename = "type")]
    kind: String,
    url: Option<String>,
    /// The commit a git `reference` (branch, tag) resolved to.
    resolved_reference: Option<String>,
    subdirectory: Option<String>,
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
        let url = match &package.source {
            Some(source) => {
                direct_url(&pyproject_path, source).map_err(|message| FormatError::Package {
                    file: file.to_path_buf(),
                    package: name.to_string(),
                    message,
                })?
            }
            None => None,
        };
        out.push(Pin {
            key: format!("package {name}"),
            name: name.to_string(),
            version: package.version.clone(),
            marker,
            // An sdist's hash too: a package with only an sdist is built, and the built
            // wheel is checked against its sdist's hash.
            hashes: package.files.iter().map(|f| f.hash.clone()).collect(),
            url,
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
            marker: table_marker(t),
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

/// The marker of a Poetry dependency table: its `markers`, its `python` constraint
/// (`python = "<3.10"`: the dependency only for those Pythons) and its `platform`
/// (`sys_platform`), all of which must hold. A `python` constraint strata cannot read
/// becomes a marker that holds nowhere (`python_version < "0"`): dropping it would install
/// the dependency where Poetry would not.
fn table_marker(table: &toml::map::Map<String, toml::Value>) -> Option<String> {
    let text = |key: &str| table.get(key).and_then(|v| v.as_str()).map(str::trim);
    let mut parts = Vec::new();
    if let Some(markers) = text("markers").filter(|m| !m.is_empty()) {
        parts.push(markers.to_string());
    }
    if let Some(python) = text("python").filter(|p| !p.is_empty() && *p != "*") {
        parts.push(python_marker(python).unwrap_or_else(|| "python_version < \"0\"".into()));
    }
    if let Some(platform) = text("platform").filter(|p| !p.is_empty()) {
        parts.push(format!("sys_platform == \"{platform}\""));
    }
    match parts.len() {
        0 => None,
        1 => parts.pop(),
        _ => Some(
            parts
                .iter()
                .map(|p| format!("({p})"))
                .collect::<Vec<_>>()
                .join(" and "),
        ),
    }
}

/// A Poetry python constraint (`^3.8`, `>=3.9,<3.12`, `~3.10`, `3.11.*`, `^2.7 || ^3.8`) as a
/// PEP 508 marker on `python_full_version` (`python_version` for `X.Y`); `None` for what it
/// cannot read.
fn python_marker(text: &str) -> Option<String> {
    let alternatives: Vec<String> = text
        .split("||")
        .map(|alternative| {
            let specifier = poetry_python(alternative.trim())?;
            let clauses: Vec<String> = specifier
                .split(',')
                .map(|clause| clause_marker(clause.trim()))
                .collect::<Option<_>>()?;
            Some(clauses.join(" and "))
        })
        .collect::<Option<_>>()?;
    match alternatives.len() {
        1 => alternatives.into_iter().next(),
        _ => Some(
            alternatives
                .iter()
                .map(|a| format!("({a})"))
                .collect::<Vec<_>>()
                .join(" or "),
        ),
    }
}

/// `>=3.9` -> `python_version >= "3.9"`; `==3.11.*` -> `python_version == "3.11"`;
/// `<3.10.2` -> `python_full_version < "3.10.2"`; a bare version is `==`.
fn clause_marker(clause: &str) -> Option<String> {
    let ops = ["===", "==", "!=", "~=", ">=", "<=", ">", "<"];
    let (op, version) = ops
        .iter()
        .find_map(|op| clause.strip_prefix(op).map(|v| (*op, v.trim())))
        .unwrap_or(("==", clause));
    let (version, wildcard) = match version.strip_suffix(".*") {
        Some(v) => (v, true),
        None => (version, false),
    };
    let parts: Vec<&str> = version.split('.').collect();
    if parts.is_empty() || parts.iter().any(|p| p.parse::<u32>().is_err()) {
        return None;
    }
    let variable = match (wildcard, parts.len()) {
        (true, 2) | (false, 1..=2) => "python_version",
        (true, _) => return None,
        (false, _) => "python_full_version",
    };
    Some(format!("{variable} {op} \"{version}\""))
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

/// A package from somewhere other than an index, as a PEP 508 direct reference: a git
/// repository at the commit the lock resolved (never the branch it names), a directory or
/// archive (relative to the project, whose `pyproject.toml` is `pyproject`), or a URL. None
/// for an index (`legacy`).
fn direct_url(pyproject: &Path, source: &PackageSource) -> Result<Option<String>, String> {
    if source.kind == "legacy" {
        return Ok(None);
    }
    let url = source
        .url
        .as_deref()
        .ok_or_else(|| format!("a {} source without url", source.kind))?;
    let subdirectory = subdirectory_fragment(source.subdirectory.as_deref());
    match source.kind.as_str() {
        "git" => {
            let git = git_at_commit(
                url,
                source.resolved_reference.as_deref(),
                "resolved_reference",
                "poetry lock",
            )?;
            Ok(Some(format!("{git}{subdirectory}")))
        }
        "directory" | "file" => {
            let dir = pyproject.parent().unwrap_or(Path::new("."));
            Ok(Some(format!("{}{subdirectory}", file_url(dir, url)?)))
        }
        "url" => Ok(Some(format!("{url}{subdirectory}"))),
        other => Err(format!(
            "comes from a {other} source, which strata does not read from a poetry.lock; use an index, git, a directory or a file"
        )),
    }
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

    fn marker_of(table: &str) -> Option<String> {
        let value: toml::Value = toml::from_str(&format!("x = {table}")).unwrap();
        table_marker(value["x"].as_table().unwrap())
    }

    #[test]
    fn python_and_platform_constraints_become_markers() {
        assert_eq!(
            marker_of(r#"{ version = "^1", python = "<3.10" }"#).as_deref(),
            Some(r#"python_version < "3.10""#)
        );
        assert_eq!(
            marker_of(r#"{ version = "^1", python = "^3.8" }"#).as_deref(),
            Some(r#"python_version >= "3.8" and python_version < "4""#)
        );
        assert_eq!(
            marker_of(r#"{ version = "*", python = "^2.7 || >=3.12.1" }"#).as_deref(),
            Some(
                r#"(python_version >= "2.7" and python_version < "3") or (python_full_version >= "3.12.1")"#
            )
        );
        assert_eq!(
            marker_of(r#"{ version = "*", python = "3.11.*", platform = "linux", markers = "implementation_name == 'cpython'" }"#).as_deref(),
            Some(r#"(implementation_name == 'cpython') and (python_version == "3.11") and (sys_platform == "linux")"#)
        );
        assert_eq!(marker_of(r#"{ version = "*", python = "*" }"#), None);
        assert_eq!(
            marker_of(r#"{ version = "*", python = "nonsense" }"#).as_deref(),
            Some(r#"python_version < "0""#)
        );
    }

    #[test]
    fn markers_are_evaluated_for_the_target() {
        let target = crate::target::Target::new(
            crate::target::PythonVersion::new(3, 11),
            "linux/amd64".parse().unwrap(),
        );
        let env = target.marker_environment();
        for (table, wanted) in [
            (r#"{ version = "*", python = "<3.10" }"#, false),
            (r#"{ version = "*", python = "^3.8" }"#, true),
            (r#"{ version = "*", platform = "win32" }"#, false),
            (
                r#"{ version = "*", platform = "linux", python = "~3.11" }"#,
                true,
            ),
        ] {
            let marker = marker_of(table).unwrap();
            let holds = crate::spec::evaluate_marker(&marker, &env, &[]).unwrap();
            assert_eq!(holds, wanted, "{table}: {marker}");
        }
    }
}
