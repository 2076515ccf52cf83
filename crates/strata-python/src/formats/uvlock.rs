//! `uv.lock`: the project's dependencies (with the extras and groups asked for) followed
//! through the lock's dependency graph, markers evaluated for the target at build time by
//! [`PinnedSet::lock_for`]. The project itself (`source = { virtual | editable = "." }`) is
//! not installed.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::Path;

use serde::Deserialize;

use super::error::FormatError;
use super::pinned::{
    self, directory_source, git_source, location, parse_sha256, sdist_source, PinnedPackage,
    PinnedSet, PinnedWheel,
};
use super::{package_name, syntax, RequiresPython, Selection};
use strata_oci::Digest;

use crate::name::PackageName;
use crate::sdist::SourcePackage;

#[derive(Deserialize)]
struct UvLock {
    #[serde(rename = "requires-python")]
    requires_python: Option<String>,
    #[serde(default)]
    package: Vec<Package>,
}

#[derive(Deserialize)]
struct Package {
    name: String,
    version: Option<String>,
    #[serde(default)]
    source: BTreeMap<String, toml::Value>,
    #[serde(default)]
    dependencies: Vec<Dependency>,
    #[serde(rename = "optional-dependencies", default)]
    optional_dependencies: BTreeMap<String, Vec<Dependency>>,
    #[serde(rename = "dev-dependencies", default)]
    dev_dependencies: BTreeMap<String, Vec<Dependency>>,
    #[serde(default)]
    wheels: Vec<Wheel>,
    sdist: Option<Wheel>,
}

#[derive(Deserialize, Clone)]
struct Dependency {
    name: String,
    version: Option<String>,
    #[serde(default)]
    extra: Vec<String>,
    marker: Option<String>,
}

/// A wheel or sdist entry (an sdist of a `url` or `path` source has only its hash).
#[derive(Deserialize)]
struct Wheel {
    url: Option<String>,
    path: Option<String>,
    filename: Option<String>,
    hash: Option<String>,
    size: Option<u64>,
}

impl Package {
    /// The project the lock is for: a virtual or editable package at the lock's directory.
    fn is_root(&self) -> bool {
        ["virtual", "editable"].iter().any(|kind| {
            self.source
                .get(*kind)
                .and_then(|v| v.as_str())
                .is_some_and(|p| p == "." || p.is_empty())
        })
    }

    fn source_str(&self, kind: &str) -> Option<&str> {
        self.source.get(kind).and_then(|v| v.as_str())
    }
}

pub(super) fn read(
    file: &Path,
    text: &str,
    selection: &Selection,
) -> Result<PinnedSet, FormatError> {
    let doc: UvLock = toml::from_str(text).map_err(|e| syntax(file, e))?;
    let roots: Vec<&Package> = doc.package.iter().filter(|p| p.is_root()).collect();
    let [root] = roots.as_slice() else {
        return Err(FormatError::Invalid {
            file: file.to_path_buf(),
            key: "[[package]]".into(),
            message: format!(
                "expected exactly one project (source = {{ virtual = \".\" }} or {{ editable = \".\" }}), found {}",
                roots.len()
            ),
        });
    };
    let start = root_dependencies(file, root, selection)?;
    let chosen = closure(file, &doc, start)?;
    let dir = file.parent().unwrap_or(Path::new("."));
    let mut packages = Vec::new();
    for (index, marker) in chosen {
        packages.push(pinned(file, dir, &doc.package[index], marker)?);
    }
    if selection.project {
        packages.push(the_project(file, dir, root)?);
    }
    Ok(PinnedSet {
        origin: file.to_path_buf(),
        requires_python: doc.requires_python.map(|specifier| RequiresPython {
            file: file.to_path_buf(),
            specifier,
        }),
        // uv.lock's `resolution-markers` describe forks, not a restriction: none checked.
        environments: Vec::new(),
        packages,
        credentials: Default::default(),
    }
    .take_credentials())
}

/// The project itself (`--install-project`), built from its directory: it must be a
/// package (`source = { editable = "." }` or a directory), not a virtual project.
fn the_project(file: &Path, dir: &Path, root: &Package) -> Result<PinnedPackage, FormatError> {
    let name = package_name(file, "[[package]] name", &root.name)?;
    let bad = |message: String| FormatError::Package {
        file: file.to_path_buf(),
        package: name.to_string(),
        message,
    };
    let path = root
        .source_str("editable")
        .or_else(|| root.source_str("directory"))
        .ok_or_else(|| {
            bad("is a virtual project (no build system): it has nothing of its own to install; leave out --install-project".into())
        })?;
    let source = directory_source(&name, dir, path).map_err(bad)?;
    Ok(PinnedPackage {
        name,
        version: root.version.clone().unwrap_or_default(),
        marker: None,
        wheels: Vec::new(),
        source: Some(source),
    })
}

/// The root's dependencies, extras and groups asked for.
fn root_dependencies(
    file: &Path,
    root: &Package,
    selection: &Selection,
) -> Result<Vec<Dependency>, FormatError> {
    let mut out = root.dependencies.clone();
    let pick = |kind: &'static str,
                table: &BTreeMap<String, Vec<Dependency>>,
                wanted: &[String],
                out: &mut Vec<Dependency>| {
        for name in wanted {
            let key = package_name(
                file,
                &format!("--{}", kind.split(' ').next_back().unwrap_or(kind)),
                name,
            )?;
            let found = table
                .iter()
                .find(|(k, _)| PackageName::new(k).is_ok_and(|k| k == key));
            let Some((_, deps)) = found else {
                return Err(FormatError::UnknownSelection {
                    file: file.to_path_buf(),
                    kind,
                    name: name.clone(),
                    known: table.keys().cloned().collect(),
                });
            };
            out.extend(deps.iter().cloned());
        }
        Ok(())
    };
    pick(
        "extra",
        &root.optional_dependencies,
        &selection.extras,
        &mut out,
    )?;
    pick(
        "dependency group",
        &root.dev_dependencies,
        &selection.groups,
        &mut out,
    )?;
    Ok(out)
}

/// Every package reachable from `start`, by index into the lock, with the marker under which
/// it is needed: `None` when some path needs it everywhere. Markers of a path are not
/// combined: a package reached through a conditional dependency carries that dependency's
/// marker (uv writes the full condition on each edge).
fn closure(
    file: &Path,
    doc: &UvLock,
    start: Vec<Dependency>,
) -> Result<BTreeMap<usize, Option<String>>, FormatError> {
    let mut chosen: BTreeMap<usize, Option<String>> = BTreeMap::new();
    let mut seen_extras: BTreeSet<(usize, String)> = BTreeSet::new();
    let mut queue: VecDeque<Dependency> = start.into();
    while let Some(dep) = queue.pop_front() {
        let index = find(file, doc, &dep)?;
        let package = &doc.package[index];
        let first = !chosen.contains_key(&index);
        match chosen.get_mut(&index) {
            Some(existing) => {
                // Needed everywhere once any edge is unconditional.
                if dep.marker.is_none() {
                    *existing = None;
                }
            }
            None => {
                chosen.insert(index, dep.marker.clone());
            }
        }
        if first {
            queue.extend(package.dependencies.iter().cloned());
        }
        for extra in &dep.extra {
            if seen_extras.insert((index, extra.clone())) {
                if let Some(deps) = package.optional_dependencies.get(extra) {
                    queue.extend(deps.iter().cloned());
                }
            }
        }
    }
    Ok(chosen)
}

/// The package a dependency names (by version too when the lock has several).
fn find(file: &Path, doc: &UvLock, dep: &Dependency) -> Result<usize, FormatError> {
    let name = package_name(file, "dependencies", &dep.name)?;
    doc.package
        .iter()
        .position(|p| {
            PackageName::new(&p.name).is_ok_and(|n| n == name)
                && dep
                    .version
                    .as_ref()
                    .is_none_or(|v| p.version.as_ref() == Some(v))
        })
        .ok_or_else(|| FormatError::Package {
            file: file.to_path_buf(),
            package: dep.name.clone(),
            message: "is a dependency but has no [[package]] entry".into(),
        })
}

fn pinned(
    file: &Path,
    dir: &Path,
    package: &Package,
    marker: Option<String>,
) -> Result<PinnedPackage, FormatError> {
    let name = package_name(file, "[[package]] name", &package.name)?;
    let bad = |message: String| FormatError::Package {
        file: file.to_path_buf(),
        package: name.to_string(),
        message,
    };
    if package.source.contains_key("virtual") {
        return Err(bad("is a virtual package (a project that is not installed), which another package depends on; strata has nothing to install for it: make it a package (a build system) and lock again".into()));
    }
    let version = package.version.as_deref();
    // A wheel's `path` is relative to its registry when that is a local directory (a
    // find-links directory: `source = { registry = "../wheels" }`), itself relative to the lock.
    let local_registry = package
        .source
        .get("registry")
        .and_then(|r| r.as_str())
        .filter(|r| !r.contains("://"));
    let wheel_dir = match local_registry {
        Some(registry) => dir.join(registry),
        None => dir.to_path_buf(),
    };
    let mut wheels = Vec::new();
    for wheel in &package.wheels {
        let (location, from_url) =
            location(wheel.url.as_deref(), wheel.path.as_deref(), &wheel_dir).ok_or_else(|| {
                bad("a wheel has neither a url nor a path with a file name".into())
            })?;
        wheels.push(PinnedWheel {
            filename: wheel.filename.clone().unwrap_or(from_url),
            location,
            sha256: sha256_of(wheel.hash.as_deref()).map_err(bad)?,
            size: wheel.size,
        });
    }
    let source = source(&name, version, package, dir, &wheel_dir).map_err(bad)?;
    if wheels.is_empty() && source.is_none() {
        return Err(bad(
            "the lock lists no wheel and no sdist, git or directory source for it: lock again"
                .into(),
        ));
    }
    let version = match (version, &source) {
        (Some(v), _) => v.to_string(),
        (None, Some(_)) => String::new(),
        (None, None) => return Err(bad("no version".into())),
    };
    Ok(PinnedPackage {
        name,
        version,
        marker,
        wheels,
        source,
    })
}

fn sha256_of(hash: Option<&str>) -> Result<Option<Digest>, String> {
    match hash {
        Some(hash) if hash.starts_with("sha256:") => parse_sha256(hash).map(Some),
        Some(hash) => Err(format!("hash {hash:?} is not sha256")),
        None => Ok(None),
    }
}

/// What to build the package from when no wheel fits: its git commit (`source = { git =
/// "URL?rev=main#COMMIT" }`), its directory (`directory`, `editable`, or a `path` that is
/// one), or its sdist (from the registry, a direct `url`, or a `path` to the archive).
fn source(
    name: &PackageName,
    version: Option<&str>,
    package: &Package,
    dir: &Path,
    wheel_dir: &Path,
) -> Result<Option<SourcePackage>, String> {
    if let Some(git) = package.source_str("git") {
        return git_reference(name, version, git).map(Some);
    }
    let directory = package
        .source_str("directory")
        .or_else(|| package.source_str("editable"))
        .or_else(|| {
            package
                .source_str("path")
                .filter(|p| package.wheels.is_empty() && dir.join(p).is_dir())
        });
    if let Some(path) = directory {
        return directory_source(name, dir, path).map(Some);
    }
    let Some(sdist) = &package.sdist else {
        return Ok(None);
    };
    let sha256 = sha256_of(sdist.hash.as_deref())?;
    // The archive itself is the source for `url` and `path` sources; the sdist entry then
    // holds its hash only.
    let (location, filename) = match (package.source_str("url"), package.source_str("path")) {
        (Some(url), _) => pinned::location(Some(url), None, dir),
        (None, Some(path)) => pinned::location(None, Some(path), dir),
        (None, None) => pinned::location(sdist.url.as_deref(), sdist.path.as_deref(), wheel_dir),
    }
    .ok_or("the sdist has neither a url nor a path with a file name")?;
    let filename = sdist.filename.clone().unwrap_or(filename);
    sdist_source(name, version, location, filename, sha256).map(Some)
}

/// uv.lock's git source: `URL?subdirectory=DIR&rev=REF#COMMIT` (the query says what was
/// asked, the fragment what it resolved to: the commit, which is what is built).
fn git_reference(
    name: &PackageName,
    version: Option<&str>,
    reference: &str,
) -> Result<SourcePackage, String> {
    let (rest, commit) = reference
        .split_once('#')
        .map_or((reference, None), |(r, c)| (r, Some(c)));
    let (url, query) = rest.split_once('?').unwrap_or((rest, ""));
    let subdirectory = query
        .split('&')
        .find_map(|pair| pair.strip_prefix("subdirectory="));
    git_source(name, version, url, commit, subdirectory)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_git_source_is_its_commit_not_its_branch() {
        let name = PackageName::new("g").unwrap();
        let commit = "a".repeat(40);
        let source = git_reference(
            &name,
            Some("1.0"),
            &format!("https://host/g.git?subdirectory=pkg&rev=main#{commit}"),
        )
        .unwrap();
        assert_eq!(
            source,
            SourcePackage::Git {
                name: name.clone(),
                version: "1.0".into(),
                url: "https://host/g.git".into(),
                commit,
                subdirectory: Some("pkg".into()),
            }
        );
        let err = git_reference(&name, None, "https://host/g.git?rev=main").unwrap_err();
        assert!(err.contains("names no full commit id"), "{err}");
    }
}
