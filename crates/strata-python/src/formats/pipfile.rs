//! `Pipfile.lock` (pipenv): the `default` packages, and `develop` with `--group dev`;
//! `_meta.sources` are the indexes. Every package is pinned with its hashes, so nothing is
//! resolved.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

use super::error::FormatError;
use super::pins::{requirements, Pin};
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
    if entry.git.is_some() || entry.path.is_some() || entry.file.is_some() {
        return Err(refuse("comes from a VCS checkout, a local path or a file, not an index; strata installs indexed wheels from a Pipfile.lock: build a wheel, publish it to an index or a find-links directory, and lock again"));
    }
    let version = entry
        .version
        .clone()
        .ok_or_else(|| refuse("has no version"))?;
    Ok(Pin {
        url: None,
        key: format!("{section}.{name}"),
        name: name.to_string(),
        version,
        marker: entry.markers.clone(),
        hashes: entry.hashes.clone(),
    })
}
