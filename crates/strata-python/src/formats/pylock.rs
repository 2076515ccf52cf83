//! `pylock.toml` (PEP 751): read as a [`PinnedSet`], and written from a [`Lock`].

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::error::FormatError;
use super::pinned::{location, parse_sha256, PinnedPackage, PinnedSet, PinnedWheel};
use super::{package_name, syntax, RequiresPython};
use crate::lock::Lock;

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
    sdist: Option<toml::Value>,
    vcs: Option<toml::Value>,
    directory: Option<toml::Value>,
    archive: Option<toml::Value>,
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
    })
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
    if package.wheels.is_empty() {
        let kind = [
            (package.sdist.is_some(), "an sdist"),
            (package.vcs.is_some(), "a VCS checkout"),
            (package.directory.is_some(), "a local directory"),
            (package.archive.is_some(), "an archive"),
        ]
        .into_iter()
        .find_map(|(present, kind)| present.then_some(kind))
        .unwrap_or("nothing");
        return Err(bad(format!("the lock gives {kind} and no wheel; strata installs wheels only: build a wheel for it and lock again")));
    }
    let version = package
        .version
        .clone()
        .ok_or_else(|| bad("no version".into()))?;
    let mut wheels = Vec::new();
    for wheel in &package.wheels {
        let (location, from_url) = location(wheel.url.as_deref(), wheel.path.as_deref(), dir)
            .ok_or_else(|| bad("a wheel has neither a url nor a path with a file name".into()))?;
        let sha256 = match wheel.hashes.get("sha256") {
            Some(hex) => Some(parse_sha256(hex).map_err(bad)?),
            None => None,
        };
        wheels.push(PinnedWheel {
            filename: wheel.name.clone().unwrap_or(from_url),
            location,
            sha256,
            size: wheel.size,
        });
    }
    Ok(PinnedPackage {
        name,
        version,
        marker: package.marker.clone(),
        wheels,
    })
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
    version: String,
    wheels: Vec<OutWheel>,
}

#[derive(Serialize)]
struct OutWheel {
    name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    path: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    size: Option<u64>,
    hashes: BTreeMap<String, String>,
}

/// `lock` as a PEP 751 pylock.toml to be written into `dir`. A wheel on this machine
/// (a `file://` URL) is written as a `path` relative to `dir`, so the lock names no
/// machine's absolute paths and still builds where the wheels lie at the same place relative
/// to it; remote wheels keep their URL. The lock is for one target, which `environments`
/// says.
pub fn pylock_text(lock: &Lock, dir: &Path) -> String {
    let target = &lock.target;
    let doc = OutLock {
        lock_version: "1.0",
        created_by: "strata",
        requires_python: format!("=={}.*", target.python),
        environments: vec![format!(
            "python_version == \"{}\" and sys_platform == \"linux\" and platform_machine == \"{}\"",
            target.python,
            target.platform.arch.wheel_name()
        )],
        packages: lock
            .wheels
            .iter()
            .map(|w| {
                let local = url::Url::parse(&w.url)
                    .ok()
                    .filter(|u| u.scheme() == "file")
                    .and_then(|u| u.to_file_path().ok());
                let (url, path) = match local {
                    Some(file) => (None, Some(relative(&file, dir))),
                    None => (Some(w.url.clone()), None),
                };
                OutPackage {
                    name: w.name.to_string(),
                    version: w.version.clone(),
                    wheels: vec![OutWheel {
                        name: w.filename.clone(),
                        url,
                        path,
                        size: w.size,
                        hashes: BTreeMap::from([(
                            "sha256".to_string(),
                            w.sha256.hex().to_string(),
                        )]),
                    }],
                }
            })
            .collect(),
    };
    let body = toml::to_string(&doc).unwrap_or_default();
    format!(
        "# Written by `strata lock`; strata builds it as it is, without resolving again.\n{body}"
    )
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
