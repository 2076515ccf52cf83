//! Locks that name wheels by file name and hash only (poetry.lock, Pipfile.lock): turned
//! into requirements that pin every package with `==` and `--hash`, for which uv has
//! nothing to choose ([`crate::EnvSpec::pins_every_package`]); the wheels are found in the
//! file's indexes and the command line's find-links.

use std::path::Path;

use super::error::FormatError;
use super::pinned::parse_sha256;
use crate::spec::{parse_requirements_str, Requirement, RequirementsFile};

/// One pinned package of such a lock.
pub(super) struct Pin {
    /// Where in the file, for errors (`default.alpha`, `package alpha`).
    pub key: String,
    pub name: String,
    pub version: String,
    pub marker: Option<String>,
    /// `sha256:<hex>` or bare hex; other algorithms are skipped (sha256 is what strata checks).
    pub hashes: Vec<String>,
    /// A direct reference (`git+URL@COMMIT`, `file:///dir`, an archive's URL) for a package
    /// from no index: built from it, as the requirements path builds it.
    pub url: Option<String>,
}

/// The pins as requirements, with `indexes` (first the primary one) as the file's sources.
pub(super) fn requirements(
    file: &Path,
    pins: Vec<Pin>,
    indexes: &[String],
) -> Result<RequirementsFile, FormatError> {
    let options: String = indexes
        .iter()
        .enumerate()
        .map(|(i, url)| match i {
            0 => format!("--index-url {url}\n"),
            _ => format!("--extra-index-url {url}\n"),
        })
        .collect();
    let mut out = parse_requirements_str(&options, file)?;
    for pin in pins {
        let mut text = match &pin.url {
            Some(url) => format!("{} @ {url}", pin.name),
            None => format!("{}=={}", pin.name, pin.version.trim_start_matches("==")),
        };
        // `name @ URL ; marker`: the space keeps the marker out of the URL.
        if pin.url.is_some() {
            text.push(' ');
        }
        if let Some(marker) = pin.marker.as_deref().filter(|m| !m.trim().is_empty()) {
            text += &format!("; {marker}");
        }
        let mut requirement: Requirement =
            text.parse().map_err(|source| FormatError::Requirement {
                file: file.to_path_buf(),
                key: pin.key.clone(),
                source: Box::new(source),
            })?;
        for hash in pin
            .hashes
            .iter()
            .filter(|h| !h.contains(':') || h.starts_with("sha256:"))
        {
            let digest = parse_sha256(hash).map_err(|message| FormatError::Package {
                file: file.to_path_buf(),
                package: pin.name.clone(),
                message,
            })?;
            requirement.hashes.push(format!("sha256:{}", digest.hex()));
        }
        // A git commit or a directory has no file to hash; the commit pins the first.
        if requirement.hashes.is_empty() && pin.url.is_none() {
            return Err(FormatError::Package {
                file: file.to_path_buf(),
                package: pin.name,
                message: "the lock gives no sha256 hash for it; strata installs a lock's packages by hash: lock again with hashes".into(),
            });
        }
        out.requirements.push(requirement);
    }
    Ok(out)
}

/// `#subdirectory=DIR` for a direct reference, or nothing.
pub(super) fn subdirectory_fragment(subdirectory: Option<&str>) -> String {
    subdirectory
        .filter(|s| !s.is_empty())
        .map(|s| format!("#subdirectory={s}"))
        .unwrap_or_default()
}

/// `git+URL@COMMIT`: a git source at the full commit id its lock recorded (never the branch
/// or tag it names, which may have moved); `key` is the lock's field for it and `relock` the
/// command that writes it again, for the error.
pub(super) fn git_at_commit(
    url: &str,
    commit: Option<&str>,
    key: &str,
    relock: &str,
) -> Result<String, String> {
    let commit = commit
        .filter(|c| crate::git::is_commit_id(c))
        .ok_or_else(|| {
            format!(
                "git source {} names no full commit id ({key}); run `{relock}` again",
                crate::resolve::without_userinfo(url)
            )
        })?;
    let url = url.strip_prefix("git+").unwrap_or(url);
    Ok(format!("git+{url}@{commit}"))
}

/// `path` (relative to `dir`) as a `file://` URL.
pub(super) fn file_url(dir: &Path, path: &str) -> Result<String, String> {
    let absolute =
        std::path::absolute(dir.join(path)).map_err(|e| format!("path {path:?}: {e}"))?;
    url::Url::from_file_path(&absolute)
        .map(String::from)
        .map_err(|()| format!("path {} is not absolute", absolute.display()))
}
