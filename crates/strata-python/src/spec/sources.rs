//! Package sources: index URLs and find-links, in canonical form.

use std::path::{Component, Path, PathBuf};

use super::Sources;

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
pub fn normalise_url(raw: &str) -> Result<String, String> {
    let url = url::Url::parse(raw).map_err(|e| format!("invalid URL {raw:?}: {e}"))?;
    let text = url.to_string();
    Ok(text.trim_end_matches('/').to_string())
}

/// A `--find-links` value: a URL (kept, normalised) or a local directory, made absolute
/// relative to `dir` (the directory of the file that names it) and cleaned lexically.
pub fn normalise_find_links(raw: &str, dir: &Path) -> Result<String, String> {
    if raw.contains("://") {
        return normalise_url(raw);
    }
    let joined = dir.join(raw);
    let absolute = if joined.is_absolute() {
        joined
    } else {
        std::env::current_dir()
            .map_err(|e| format!("cannot make {raw:?} absolute: current directory: {e}"))?
            .join(joined)
    };
    let clean = clean_path(&absolute);
    clean
        .to_str()
        .map(|s| s.to_string())
        .ok_or_else(|| format!("find-links path {raw:?} is not valid UTF-8"))
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
        assert!(normalise_url("not a url").is_err());
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
}
