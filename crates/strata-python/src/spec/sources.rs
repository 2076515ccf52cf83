//! Package sources: index URLs and find-links, in canonical form.

use std::io;
use std::path::{Component, Path, PathBuf};

use super::Sources;
use crate::credentials::{redact_userinfo, take_userinfo, IndexCredentials};

/// An index URL or find-links location that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("invalid URL {url:?}: {source}")]
    BadUrl {
        url: String,
        #[source]
        source: url::ParseError,
    },
    /// A relative find-links directory, and no current directory to anchor it.
    #[error("cannot make {path:?} absolute: current directory: {source}")]
    NoCurrentDir {
        path: String,
        #[source]
        source: io::Error,
    },
    /// The absolute find-links directory does not fit in the spec's UTF-8 text.
    #[error("find-links path {path:?} is not valid UTF-8")]
    NotUtf8 { path: String },
}

impl Sources {
    /// Sorts and deduplicates the lists: their order carries no meaning for resolution.
    pub fn canonical(mut self) -> Sources {
        self.extra_index_urls.sort();
        self.extra_index_urls.dedup();
        self.find_links.sort();
        self.find_links.dedup();
        self.local_find_links.sort();
        self.local_find_links.dedup();
        self
    }

    /// Adds a find-links location made by [`normalise_find_links`]: a machine-local one to
    /// `local_find_links` (outside the spec's identity), an `http(s)` URL to `find_links`.
    pub fn add_find_links(&mut self, normalised: String) {
        if is_machine_local(&normalised) {
            self.local_find_links.push(normalised);
        } else {
            self.find_links.push(normalised);
        }
    }

    /// Every find-links location, shared ones first, for the resolver.
    pub fn all_find_links(&self) -> impl Iterator<Item = &String> {
        self.find_links.iter().chain(&self.local_find_links)
    }
}

/// A find-links location only this machine can read: a directory, or a `file:` URL.
fn is_machine_local(normalised: &str) -> bool {
    !normalised.contains("://") || normalised.starts_with("file://")
}

/// Validates a URL and writes it canonically: user info taken out (into `credentials`), scheme
/// and host lowercased (by `url`), no trailing `/`, so that `https://h/simple/`,
/// `https://H/simple` and `https://bot:TOKEN@h/simple` are the same index.
pub fn normalise_url(raw: &str, credentials: &mut IndexCredentials) -> Result<String, SourceError> {
    let mut url = url::Url::parse(raw).map_err(|source| SourceError::BadUrl {
        url: redact_userinfo(raw),
        source,
    })?;
    if let Some((origin, credential)) = take_userinfo(&mut url) {
        credentials.insert_if_absent(origin, credential);
    }
    let text = url.to_string();
    Ok(text.trim_end_matches('/').to_string())
}

/// A `--find-links` value: a URL (kept, normalised, its user info taken into `credentials`)
/// or a local directory, made absolute relative to `dir` (the directory of the file that names
/// it) and cleaned lexically.
pub fn normalise_find_links(
    raw: &str,
    dir: &Path,
    credentials: &mut IndexCredentials,
) -> Result<String, SourceError> {
    if raw.contains("://") {
        return normalise_url(raw, credentials);
    }
    let joined = dir.join(raw);
    let absolute = if joined.is_absolute() {
        joined
    } else {
        std::env::current_dir()
            .map_err(|source| SourceError::NoCurrentDir {
                path: raw.to_string(),
                source,
            })?
            .join(joined)
    };
    let clean = clean_path(&absolute);
    clean
        .to_str()
        .map(|s| s.to_string())
        .ok_or_else(|| SourceError::NotUtf8 {
            path: raw.to_string(),
        })
}

/// Removes `.` components and resolves `..` lexically (the directory need not exist yet).
pub fn clean_path(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other.as_os_str()),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn none() -> IndexCredentials {
        IndexCredentials::default()
    }

    #[test]
    fn user_info_leaves_the_url_for_the_credentials() {
        let mut credentials = IndexCredentials::default();
        let url = normalise_url("https://ci-bot:TOKEN@H/simple/", &mut credentials).unwrap();
        assert_eq!(url, "https://h/simple");
        let parsed = url::Url::parse(&url).unwrap();
        let kept = credentials.for_url(&parsed).unwrap();
        assert_eq!(
            (kept.username.as_str(), kept.password.expose()),
            ("ci-bot", "TOKEN")
        );
        let err = normalise_url("https://bot:TOKEN@[bad/", &mut credentials).unwrap_err();
        assert!(!err.to_string().contains("TOKEN"), "{err}");
    }

    #[test]
    fn urls_lose_trailing_slash_and_case_of_host() {
        assert_eq!(
            normalise_url("HTTPS://Pypi.ORG/simple/", &mut none()).unwrap(),
            "https://pypi.org/simple"
        );
        assert_eq!(
            normalise_url("https://h", &mut none()).unwrap(),
            "https://h"
        );
        assert!(matches!(
            normalise_url("not a url", &mut none()),
            Err(SourceError::BadUrl { url, source: url::ParseError::RelativeUrlWithoutBase })
                if url == "not a url"
        ));
        assert!(matches!(
            normalise_find_links("https://[bad/", Path::new("/d"), &mut none()),
            Err(SourceError::BadUrl { .. })
        ));
    }

    #[test]
    fn find_links_dirs_become_absolute() {
        let dir = Path::new("/proj/reqs");
        assert_eq!(
            normalise_find_links("../wheels/", dir, &mut none()).unwrap(),
            "/proj/wheels"
        );
        assert_eq!(
            normalise_find_links("/abs/./w", dir, &mut none()).unwrap(),
            "/abs/w"
        );
        assert_eq!(
            normalise_find_links("https://h/links/", dir, &mut none()).unwrap(),
            "https://h/links"
        );
        let relative = normalise_find_links("w", Path::new(""), &mut none()).unwrap();
        assert!(Path::new(&relative).is_absolute(), "{relative}");
    }

    #[test]
    fn a_find_links_path_that_is_not_utf8_is_named() {
        use std::os::unix::ffi::OsStrExt;
        let dir = Path::new(std::ffi::OsStr::from_bytes(b"/proj/\xff"));
        assert!(matches!(
            normalise_find_links("w", dir, &mut none()),
            Err(SourceError::NotUtf8 { path }) if path == "w"
        ));
    }
}
