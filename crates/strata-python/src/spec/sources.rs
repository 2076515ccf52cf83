//! Package sources: index URLs and find-links, in canonical form.

use std::io;
use std::path::{Component, Path, PathBuf};

use super::Sources;

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
        self
    }
}

/// Validates a URL and writes it canonically: scheme and host lowercased (by `url`), no
/// trailing `/`, so that `https://h/simple/` and `https://H/simple` are the same index.
pub fn normalise_url(raw: &str) -> Result<String, SourceError> {
    let url = url::Url::parse(raw).map_err(|source| SourceError::BadUrl {
        url: raw.to_string(),
        source,
    })?;
    let text = url.to_string();
    Ok(text.trim_end_matches('/').to_string())
}

/// A `--find-links` value: a URL (kept, normalised) or a local directory, made absolute
/// relative to `dir` (the directory of the file that names it) and cleaned lexically.
pub fn normalise_find_links(raw: &str, dir: &Path) -> Result<String, SourceError> {
    if raw.contains("://") {
        return normalise_url(raw);
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

    #[test]
    fn urls_lose_trailing_slash_and_case_of_host() {
        assert_eq!(
            normalise_url("HTTPS://Pypi.ORG/simple/").unwrap(),
            "https://pypi.org/simple"
        );
        assert_eq!(normalise_url("https://h").unwrap(), "https://h");
        assert!(matches!(
            normalise_url("not a url"),
            Err(SourceError::BadUrl { url, source: url::ParseError::RelativeUrlWithoutBase })
                if url == "not a url"
        ));
        assert!(matches!(
            normalise_find_links("https://[bad/", Path::new("/d")),
            Err(SourceError::BadUrl { .. })
        ));
    }

    #[test]
    fn find_links_dirs_become_absolute() {
        let dir = Path::new("/proj/reqs");
        assert_eq!(
            normalise_find_links("../wheels/", dir).unwrap(),
            "/proj/wheels"
        );
        assert_eq!(normalise_find_links("/abs/./w", dir).unwrap(), "/abs/w");
        assert_eq!(
            normalise_find_links("https://h/links/", dir).unwrap(),
            "https://h/links"
        );
        let relative = normalise_find_links("w", Path::new("")).unwrap();
        assert!(Path::new(&relative).is_absolute(), "{relative}");
    }

    #[test]
    fn a_find_links_path_that_is_not_utf8_is_named() {
        use std::os::unix::ffi::OsStrExt;
        let dir = Path::new(std::ffi::OsStr::from_bytes(b"/proj/\xff"));
        assert!(matches!(
            normalise_find_links("w", dir),
            Err(SourceError::NotUtf8 { path }) if path == "w"
        ));
    }
}
