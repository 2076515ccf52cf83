//! `pylock.toml` (PEP 751): read as a [`PinnedSet`], and written from a [`Lock`].

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::error::FormatError;
use super::pinned::{
    directory_source, git_source, location, parse_sha256, sdist_source, PinnedPackage, PinnedSet,
    PinnedWheel, WheelLocation,
};
use super::{package_name, syntax, RequiresPython};
use strata_oci::Digest;

use crate::lock::{Lock, LockedWheel};
use crate::name::PackageName;
use crate::sdist::SourcePackage;

#[derive(Deserialize)]
struct Pylock {
    #[serde(rename = "lock-version")]
    lock_version: Option<String>,
    #[serde(rename = "requires-python")]
    requires_python: Option<String>,
    #[serde(default)]
    environments: Vec<String>,
    #[serde(default)]
    packages: Vec<Package>,
}

#[derive(Deserialize)]
struct Package {
    name: String,
    version: Option<String>,
    marker: Option<String>,
    #[serde(default)]
    wheels: Vec<Wheel>,
    sdist: Option<Wheel>,
    vcs: Option<Vcs>,
    directory: Option<Directory>,
    archive: Option<Wheel>,
}

#[derive(Deserialize)]
struct Vcs {
    #[serde(rename = "type")]
    kind: String,
    url: Option<String>,
    path: Option<String>,
    #[serde(rename = "commit-id")]
    commit_id: Option<String>,
    subdirectory: Option<String>,
}

#[derive(Deserialize)]
struct Directory {
    path: String,
    subdirectory: Option<String>,
}

#[derive(Deserialize)]
struct Wheel {
    name: Option<String>,
    url: Option<String>,
    path: Option<String>,
    size: Option<u64>,
    #[serde(default)]
    hashes: BTreeMap<String, String>,
}

pub(super) fn read(file: &Path, text: &str) -> Result<PinnedSet, FormatError> {
    let doc: Pylock = toml::from_str(text).map_err(|e| syntax(file, e))?;
    match doc.lock_version.as_deref() {
        Some(v) if v == "1" || v.starts_with("1.") => {}
        Some(v) => {
            return Err(FormatError::Invalid {
                file: file.to_path_buf(),
                key: "lock-version".into(),
                message: format!("{v:?} is not a version strata reads (1.x)"),
            })
        }
        None => {
            return Err(FormatError::Invalid {
                file: file.to_path_buf(),
                key: "lock-version".into(),
                message: "missing (PEP 751 requires it)".into(),
            })
        }
    }
    let dir = file.parent().unwrap_or(Path::new("."));
    let mut packages = Vec::new();
    for (i, package) in doc.packages.iter().enumerate() {
        packages.push(read_package(file, dir, i, package)?);
    }
    Ok(PinnedSet {
        origin: file.to_path_buf(),
        requires_python: doc.requires_python.map(|specifier| RequiresPython {
            file: file.to_path_buf(),
            specifier,
        }),
        environments: doc.environments,
        packages,
        credentials: Default::default(),
    }
    .take_credentials())
}

fn read_package(
    file: &Path,
    dir: &Path,
    i: usize,
    package: &Package,
) -> Result<PinnedPackage, FormatError> {
    let name = package_name(file, &format!("packages[{i}].name"), &package.name)?;
    let bad = |message: String| FormatError::Package {
        file: file.to_path_buf(),
        package: name.to_string(),
        message,
    };
    let version = package.version.as_deref();
    let mut wheels = Vec::new();
    for wheel in &package.wheels {
        wheels.push(pinned_file(wheel, dir).map_err(|m| bad(format!("a wheel: {m}")))?);
    }
    let mut source = None;
    if let Some(vcs) = &package.vcs {
        source = Some(vcs_source(&name, version, vcs, dir).map_err(bad)?);
    } else if let Some(directory) = &package.directory {
        let path = match &directory.subdirectory {
            Some(sub) => format!("{}/{sub}", directory.path),
            None => directory.path.clone(),
        };
        source = Some(directory_source(&name, dir, &path).map_err(bad)?);
    } else if let Some(archive) = &package.archive {
        // A direct reference: a wheel (installed as the others) or an sdist (built).
        let file = pinned_file(archive, dir).map_err(|m| bad(format!("the archive: {m}")))?;
        if file.filename.ends_with(".whl") {
            wheels.push(file);
        } else {
            source = Some(
                sdist_source(&name, version, file.location, file.filename, file.sha256)
                    .map_err(bad)?,
            );
        }
    } else if let Some(sdist) = &package.sdist {
        let file = pinned_file(sdist, dir).map_err(|m| bad(format!("the sdist: {m}")))?;
        source = Some(
            sdist_source(&name, version, file.location, file.filename, file.sha256).map_err(bad)?,
        );
    }
    if wheels.is_empty() && source.is_none() {
        return Err(bad(
            "the lock gives no wheel, sdist, vcs or directory for it: lock again".into(),
        ));
    }
    // A wheel's version is its own; a source's may be left to its build (PEP 751).
    let version = match (version, &source) {
        (Some(v), _) => v.to_string(),
        (None, Some(_)) => String::new(),
        (None, None) => return Err(bad("no version".into())),
    };
    Ok(PinnedPackage {
        name,
        version,
        marker: package.marker.clone(),
        wheels,
        source,
    })
}

/// A wheel, sdist or archive entry: where it is, its file name and its sha256.
fn pinned_file(entry: &Wheel, dir: &Path) -> Result<PinnedWheel, String> {
    let (location, from_url) = location(entry.url.as_deref(), entry.path.as_deref(), dir)
        .ok_or("neither a url nor a path with a file name")?;
    let sha256 = match entry.hashes.get("sha256") {
        Some(hex) => Some(parse_sha256(hex)?),
        None => None,
    };
    Ok(PinnedWheel {
        filename: entry.name.clone().unwrap_or(from_url),
        location,
        sha256,
        size: entry.size,
    })
}

/// A `[packages.vcs]` entry: git only, at its `commit-id`; a local repository (`path`) is
/// named by its `file://` URL.
fn vcs_source(
    name: &PackageName,
    version: Option<&str>,
    vcs: &Vcs,
    dir: &Path,
) -> Result<SourcePackage, String> {
    if vcs.kind != "git" {
        return Err(format!(
            "version control {:?} is not supported; strata builds git sources only",
            vcs.kind
        ));
    }
    let url = match (&vcs.url, &vcs.path) {
        (Some(url), _) => url.clone(),
        (None, Some(path)) => match location(None, Some(path), dir) {
            Some((WheelLocation::Path(p), _)) => url::Url::from_file_path(&p)
                .map(String::from)
                .map_err(|()| format!("vcs path {path:?} is not absolute"))?,
            _ => return Err(format!("vcs path {path:?} cannot be made absolute")),
        },
        (None, None) => return Err("a vcs entry without url or path".into()),
    };
    git_source(
        name,
        version,
        &url,
        vcs.commit_id.as_deref(),
        vcs.subdirectory.as_deref(),
    )
}

#[derive(Serialize)]
struct OutLock {
    #[serde(rename = "lock-version")]
    lock_version: &'static str,
    #[serde(rename = "created-by")]
    created_by: &'static str,
    #[serde(rename = "requires-python")]
    requires_python: String,
    environments: Vec<String>,
    packages: Vec<OutPackage>,
}

#[derive(Serialize)]
struct OutPackage {
    name: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    version: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    wheels: Vec<OutFile>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sdist: Option<OutFile>,
    #[serde(skip_serializing_if = "Option::is_none")]
    vcs: Option<OutVcs>,
    #[serde(skip_serializing_if = "Option::is_none")]
    directory: Option<OutDirectory>,
}

/// A wheel or sdist entry.
#[derive(Serialize)]
struct OutFile {
    name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    path: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    size: Option<u64>,
    hashes: BTreeMap<String, String>,
}

#[derive(Serialize)]
struct OutVcs {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    path: Option<String>,
    #[serde(rename = "commit-id")]
    commit_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    subdirectory: Option<String>,
}

#[derive(Serialize)]
struct OutDirectory {
    path: String,
}

/// `lock` as a PEP 751 pylock.toml to be written to `output`. A file on this machine (a
/// `file://` URL) is written as a `path` relative to the output's directory, so the lock
/// names no machine's absolute paths and still builds where the files lie at the same place
/// relative to it; remote files keep their URL. A wheel strata built is written as what it
/// was built from (its sdist with the sdist's hash, its git commit, its directory), never as
/// its place in the wheel cache: the lock builds again on another machine. The lock is for
/// one target, which `environments` says.
pub fn pylock_text(lock: &Lock, output: &Path) -> Result<String, FormatError> {
    let dir = output.parent().unwrap_or(Path::new("/"));
    let target = &lock.target;
    let mut packages = Vec::new();
    for wheel in &lock.wheels {
        packages.push(
            out_package(wheel, dir).map_err(|message| FormatError::Package {
                file: output.to_path_buf(),
                package: wheel.name.to_string(),
                message,
            })?,
        );
    }
    let doc = OutLock {
        lock_version: "1.0",
        created_by: "strata",
        requires_python: format!("=={}.*", target.python),
        environments: vec![format!(
            "python_version == \"{}\" and sys_platform == \"linux\" and platform_machine == \"{}\"",
            target.python,
            target.platform.arch.wheel_name()
        )],
        packages,
    };
    let body = toml::to_string(&doc).unwrap_or_default();
    Ok(format!(
        "# Written by `strata lock`; strata builds it as it is, without resolving again.\n{body}"
    ))
}

fn out_package(wheel: &LockedWheel, dir: &Path) -> Result<OutPackage, String> {
    let mut out = OutPackage {
        name: wheel.name.to_string(),
        version: wheel.version.clone(),
        wheels: Vec::new(),
        sdist: None,
        vcs: None,
        directory: None,
    };
    let Some(built_from) = &wheel.built_from else {
        let (url, path) = url_or_path(&wheel.url, dir);
        out.wheels.push(OutFile {
            name: wheel.filename.clone(),
            url,
            path,
            size: wheel.size,
            hashes: sha256_table(&wheel.sha256),
        });
        return Ok(out);
    };
    let from = built_from.url.as_deref().ok_or(
        "it was built from a source whose place the stored lock does not record; lock again with --refresh",
    )?;
    match built_from.source.as_str() {
        "git" => {
            let commit_id = built_from
                .commit
                .clone()
                .ok_or("built from git, but no commit is recorded")?;
            let (url, path) = url_or_path(from, dir);
            out.vcs = Some(OutVcs {
                kind: "git",
                url,
                path,
                commit_id,
                subdirectory: built_from.subdirectory.clone(),
            });
        }
        "directory" => {
            let (_, path) = url_or_path(from, dir);
            let path = path.ok_or_else(|| format!("directory {from} is not on this machine"))?;
            out.directory = Some(OutDirectory { path });
        }
        sdist => {
            let sha256 = built_from
                .sha256
                .as_ref()
                .ok_or("built from an sdist, but its sha256 is not recorded")?;
            let (url, path) = url_or_path(from, dir);
            out.sdist = Some(OutFile {
                name: sdist.to_string(),
                url,
                path,
                size: None,
                hashes: sha256_table(sha256),
            });
        }
    }
    Ok(out)
}

/// A `file://` URL as a path relative to `dir` (`(None, Some(path))`), any other as a URL.
fn url_or_path(url: &str, dir: &Path) -> (Option<String>, Option<String>) {
    let local = url::Url::parse(url)
        .ok()
        .filter(|u| u.scheme() == "file")
        .and_then(|u| u.to_file_path().ok());
    match local {
        Some(file) => (None, Some(relative(&file, dir))),
        None => (Some(url.to_string()), None),
    }
}

fn sha256_table(sha256: &Digest) -> BTreeMap<String, String> {
    BTreeMap::from([("sha256".to_string(), sha256.hex().to_string())])
}

/// `file` relative to `dir` (both absolute), through `..` where needed.
fn relative(file: &Path, dir: &Path) -> String {
    let file: Vec<Component> = file.components().collect();
    let dir: Vec<Component> = dir.components().collect();
    let common = file.iter().zip(&dir).take_while(|(a, b)| a == b).count();
    let mut out = PathBuf::new();
    for _ in common..dir.len() {
        out.push("..");
    }
    for part in &file[common..] {
        out.push(part.as_os_str());
    }
    out.to_string_lossy().into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sdist::BuiltFrom;
    use crate::target::{PythonVersion, Target};

    fn built(name: &str, built_from: BuiltFrom) -> LockedWheel {
        LockedWheel {
            name: PackageName::new(name).unwrap(),
            version: "1.0".into(),
            filename: format!("{name}-1.0-py3-none-any.whl"),
            sha256: Digest::of(name.as_bytes()),
            size: Some(3),
            url: format!("file:///home/u/.strata/wheels/sha256/x/{name}-1.0-py3-none-any.whl"),
            built_from: Some(built_from),
        }
    }

    #[test]
    fn built_wheels_are_written_as_their_sources_and_read_back_as_them() {
        let commit = "c".repeat(40);
        let sdist_sha = Digest::of(b"sdist");
        let target = Target::new(PythonVersion::new(3, 11), "linux/amd64".parse().unwrap());
        let lock = Lock::new(
            target,
            vec![
                built(
                    "g",
                    BuiltFrom {
                        source: "git".into(),
                        sha256: None,
                        commit: Some(commit.clone()),
                        subdirectory: Some("sub".into()),
                        url: Some("https://host/g.git".into()),
                    },
                ),
                built(
                    "s",
                    BuiltFrom {
                        source: "s-1.0.tar.gz".into(),
                        sha256: Some(sdist_sha.clone()),
                        commit: None,
                        subdirectory: None,
                        url: Some("file:///proj/dist/s-1.0.tar.gz".into()),
                    },
                ),
            ],
        );
        let text = pylock_text(&lock, Path::new("/proj/locks/pylock.toml")).unwrap();
        assert!(!text.contains(".strata"), "{text}");
        assert!(text.contains(&commit), "{text}");
        assert!(text.contains("../dist/s-1.0.tar.gz"), "{text}");

        let set = read(Path::new("/proj/locks/pylock.toml"), &text).unwrap();
        let (wheels, sources) = set.plan_for(&target).unwrap();
        assert!(wheels.is_empty());
        assert_eq!(
            sources,
            [
                SourcePackage::Git {
                    name: PackageName::new("g").unwrap(),
                    version: "1.0".into(),
                    url: "https://host/g.git".into(),
                    commit,
                    subdirectory: Some("sub".into()),
                },
                SourcePackage::Sdist {
                    name: PackageName::new("s").unwrap(),
                    version: "1.0".into(),
                    filename: "s-1.0.tar.gz".into(),
                    url: "file:///proj/dist/s-1.0.tar.gz".into(),
                    sha256: sdist_sha,
                },
            ]
        );
    }

    #[test]
    fn a_built_wheel_whose_source_place_is_unknown_is_not_written() {
        let target = Target::new(PythonVersion::new(3, 11), "linux/amd64".parse().unwrap());
        let old = built(
            "g",
            BuiltFrom {
                source: "git".into(),
                sha256: None,
                commit: Some("c".repeat(40)),
                subdirectory: None,
                url: None,
            },
        );
        let err = pylock_text(&Lock::new(target, vec![old]), Path::new("/p/pylock.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("package g"), "{err}");
    }

    #[test]
    fn relative_paths() {
        assert_eq!(
            relative(Path::new("/a/b/w/x.whl"), Path::new("/a/b")),
            "w/x.whl"
        );
        assert_eq!(
            relative(Path::new("/a/w/x.whl"), Path::new("/a/b/c")),
            "../../w/x.whl"
        );
    }
}
