//! `Pipfile.lock` (pipenv): the `default` packages, and `develop` with `--group dev`;
//! `_meta.sources` are the indexes. Every package is pinned with its hashes, so nothing is
//! resolved.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

use super::error::FormatError;
use super::pins::{file_url, git_at_commit, requirements, subdirectory_fragment, Pin};
use super::{EnvFile, Selection};

#[derive(Deserialize)]
struct PipfileLock {
    #[serde(rename = "_meta", default)]
    meta: Meta,
    #[serde(default)]
    default: BTreeMap<String, Entry>,
    #[serde(default)]
    develop: BTreeMap<String, Entry>,
}

#[derive(Deserialize, Default)]
struct Meta {
    #[serde(default)]
    sources: Vec<Source>,
}

#[derive(Deserialize)]
struct Source {
    url: String,
}

#[derive(Deserialize)]
struct Entry {
    version: Option<String>,
    #[serde(default)]
    hashes: Vec<String>,
    markers: Option<String>,
    git: Option<String>,
    /// The commit a `git` entry was locked at (pipenv writes the resolved sha).
    #[serde(rename = "ref")]
    git_ref: Option<String>,
    subdirectory: Option<String>,
    path: Option<String>,
    file: Option<String>,
}

pub(super) fn read(file: &Path, text: &str, selection: &Selection) -> Result<EnvFile, FormatError> {
    let doc: PipfileLock = serde_json::from_str(text).map_err(|e| FormatError::Syntax {
        file: file.to_path_buf(),
        message: e.to_string(),
    })?;
    if let Some(extra) = selection.extras.first() {
        return Err(FormatError::SelectionNotApplicable {
            file: file.to_path_buf(),
            option: format!("--extra {extra}"),
            reason: "Pipfile.lock has no extras (its sections are default and, with --group dev, develop)",
        });
    }
    let mut sections = vec![("default", &doc.default)];
    for group in &selection.groups {
        match group.as_str() {
            "dev" | "develop" => sections.push(("develop", &doc.develop)),
            other => {
                return Err(FormatError::UnknownSelection {
                    file: file.to_path_buf(),
                    kind: "dependency group",
                    name: other.to_string(),
                    known: vec!["dev".into()],
                })
            }
        }
    }
    let mut pins = Vec::new();
    for (section, entries) in sections {
        for (name, entry) in entries {
            pins.push(pin(file, section, name, entry)?);
        }
    }
    let indexes: Vec<String> = doc.meta.sources.into_iter().map(|s| s.url).collect();
    Ok(EnvFile::Requirements {
        file: requirements(file, pins, &indexes)?,
        requires_python: None,
        python: None,
    })
}

fn pin(file: &Path, section: &str, name: &str, entry: &Entry) -> Result<Pin, FormatError> {
    let refuse = |message: &str| FormatError::Package {
        file: file.to_path_buf(),
        package: name.to_string(),
        message: message.to_string(),
    };
    let url = direct_url(file, entry).map_err(|m| refuse(&m))?;
    let version = match (&entry.version, &url) {
        (Some(v), _) => v.clone(),
        // A git checkout or a directory is built: its version is its own.
        (None, Some(_)) => String::new(),
        (None, None) => return Err(refuse("has no version")),
    };
    Ok(Pin {
        url,
        key: format!("{section}.{name}"),
        name: name.to_string(),
        version,
        marker: entry.markers.clone(),
        hashes: entry.hashes.clone(),
    })
}

/// A package from no index, as a PEP 508 direct reference: a git repository at the commit
/// the lock recorded (`ref`, never a branch), a directory (`path`, relative to the lock) or
/// an archive (`file`, a URL or a path, checked against its hashes). `None` for an index.
fn direct_url(lock: &Path, entry: &Entry) -> Result<Option<String>, String> {
    let subdirectory = subdirectory_fragment(entry.subdirectory.as_deref());
    let dir = lock.parent().unwrap_or(Path::new("."));
    let url = match (&entry.git, &entry.path, entry.file.as_deref()) {
        (Some(git), _, _) => git_at_commit(git, entry.git_ref.as_deref(), "ref", "pipenv lock")?,
        (None, Some(path), _) => file_url(dir, path)?,
        (None, None, Some(file)) if file.contains("://") => file.to_string(),
        (None, None, Some(file)) => file_url(dir, file)?,
        (None, None, None) => return Ok(None),
    };
    Ok(Some(format!("{url}{subdirectory}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(json: &str) -> Entry {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn git_path_and_file_entries_are_direct_references() {
        let lock = Path::new("/project/Pipfile.lock");
        let commit = "0123456789abcdef0123456789abcdef01234567";
        let git = entry(&format!(
            r#"{{"git": "https://example.com/r.git", "ref": "{commit}", "subdirectory": "pkg"}}"#
        ));
        assert_eq!(
            direct_url(lock, &git).unwrap().unwrap(),
            format!("git+https://example.com/r.git@{commit}#subdirectory=pkg")
        );
        let branch = entry(r#"{"git": "https://t:secret@example.com/r.git", "ref": "main"}"#);
        let err = direct_url(lock, &branch).unwrap_err();
        assert!(
            err.contains("no full commit id") && !err.contains("secret"),
            "{err}"
        );
        let path = entry(r#"{"path": "./libs/one"}"#);
        assert_eq!(
            direct_url(lock, &path).unwrap().unwrap(),
            "file:///project/libs/one"
        );
        let file = entry(r#"{"file": "https://example.com/one-1.0.tar.gz"}"#);
        assert_eq!(
            direct_url(lock, &file).unwrap().unwrap(),
            "https://example.com/one-1.0.tar.gz"
        );
        assert_eq!(
            direct_url(lock, &entry(r#"{"version": "==1.0"}"#)).unwrap(),
            None
        );
    }
}
