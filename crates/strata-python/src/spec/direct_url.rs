//! Direct references (`name @ URL`): what the URL may be before anything is fetched, so that a
//! wrong line is refused with its file and line instead of failing later inside uv.
//!
//! The rules follow what uv accepts: `http(s)` URLs name a wheel or a source archive by their
//! extension, `file:` URLs are absolute, VCS URLs are `git+...`; a wheel's file name must name
//! the same package, and a `#sha256=` fragment must be a whole digest.

use url::Url;

use super::requirements::{normalise_hash, HashError};
use crate::name::PackageName;
use crate::wheel_name::{WheelFilename, WheelNameError};

/// The file extensions uv accepts at the end of a remote direct URL.
const ARCHIVE_EXTENSIONS: [&str; 13] = [
    ".whl",
    ".tar.gz",
    ".zip",
    ".tar.bz2",
    ".tar.lz",
    ".tar.lzma",
    ".tar.xz",
    ".tar.zst",
    ".tar",
    ".tbz",
    ".tgz",
    ".tlz",
    ".txz",
];

/// Transports a `git+` URL may use.
const GIT_TRANSPORTS: [&str; 4] = ["https", "http", "ssh", "file"];

/// Why a direct URL cannot be used. `url` is the URL as written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DirectUrlError {
    #[error(
        "URL {url:?}: unsupported scheme {scheme:?}; use https://, http://, file:/// or git+https://"
    )]
    Scheme { url: String, scheme: String },
    #[error("URL {url:?}: a file URL must be absolute, like file:///path/to/pkg.whl")]
    RelativeFile { url: String },
    #[error(
        "URL {url:?}: a file URL cannot name another host; copy the file here and use file:///path"
    )]
    FileHost { url: String },
    #[error(
        "URL {url:?} does not end in a wheel or source archive (.whl, .tar.gz, .zip, ...){}",
        if url.contains(';') { "; a marker after a URL needs a space before \";\"" } else { "" }
    )]
    NotAnArchive { url: String },
    #[error("URL {url:?}: {source}")]
    WheelName {
        url: String,
        #[source]
        source: WheelNameError,
    },
    /// The wheel file name or `#egg=` names another package than the requirement.
    #[error("URL {url:?} is package {found:?}, not {name:?}")]
    NameMismatch {
        url: String,
        name: String,
        found: String,
    },
    #[error("URL {url:?}: invalid hash fragment: {source}")]
    Hash {
        url: String,
        #[source]
        source: HashError,
    },
}

/// Checks the direct URL of requirement `name`; `raw` is the URL as written (the parsed form
/// has already made `file:x` absolute and encoded what it did not expect).
pub fn check_direct_url(name: &PackageName, url: &Url, raw: &str) -> Result<(), DirectUrlError> {
    let at = || raw.to_string();
    match url.scheme() {
        "http" | "https" => check_remote(name, url, raw)?,
        "file" => check_file(url, raw)?,
        scheme => {
            let transport = scheme.strip_prefix("git+");
            if !transport.is_some_and(|t| GIT_TRANSPORTS.contains(&t)) {
                return Err(DirectUrlError::Scheme {
                    url: at(),
                    scheme: scheme.to_string(),
                });
            }
        }
    }
    check_fragment(name, url, raw)
}

/// `http(s)`: the last path segment names a wheel (of this package) or a source archive.
fn check_remote(name: &PackageName, url: &Url, raw: &str) -> Result<(), DirectUrlError> {
    let file = url.path().rsplit('/').next().unwrap_or_default();
    let lower = file.to_ascii_lowercase();
    if !ARCHIVE_EXTENSIONS.iter().any(|ext| lower.ends_with(ext)) {
        return Err(DirectUrlError::NotAnArchive {
            url: raw.to_string(),
        });
    }
    if lower.ends_with(".whl") {
        let wheel = WheelFilename::parse(file).map_err(|source| DirectUrlError::WheelName {
            url: raw.to_string(),
            source,
        })?;
        same_name(name, &wheel.name, raw)?;
    }
    Ok(())
}

/// `file:`: absolute, on this machine (`file:///p` or `file://localhost/p`).
fn check_file(url: &Url, raw: &str) -> Result<(), DirectUrlError> {
    let absolute = raw
        .get(..7)
        .is_some_and(|head| head.eq_ignore_ascii_case("file://"));
    if !absolute {
        return Err(DirectUrlError::RelativeFile {
            url: raw.to_string(),
        });
    }
    match url.host_str() {
        None | Some("") | Some("localhost") => Ok(()),
        Some(_) => Err(DirectUrlError::FileHost {
            url: raw.to_string(),
        }),
    }
}

/// `#sha256=<hex>` (and sha384/sha512) must be a whole digest; `#egg=` must name this package.
fn check_fragment(name: &PackageName, url: &Url, raw: &str) -> Result<(), DirectUrlError> {
    let Some(fragment) = url.fragment() else {
        return Ok(());
    };
    for pair in fragment.split('&') {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        match key.to_ascii_lowercase().as_str() {
            "egg" => {
                let egg = PackageName::new(value).map_err(|_| DirectUrlError::NameMismatch {
                    url: raw.to_string(),
                    name: name.to_string(),
                    found: value.to_string(),
                })?;
                same_name(name, &egg, raw)?;
            }
            "subdirectory" => {}
            algorithm => {
                normalise_hash(&format!("{algorithm}:{value}")).map_err(|source| {
                    DirectUrlError::Hash {
                        url: raw.to_string(),
                        source,
                    }
                })?;
            }
        }
    }
    Ok(())
}

fn same_name(name: &PackageName, found: &PackageName, raw: &str) -> Result<(), DirectUrlError> {
    if name == found {
        return Ok(());
    }
    Err(DirectUrlError::NameMismatch {
        url: raw.to_string(),
        name: name.to_string(),
        found: found.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(name: &str, raw: &str) -> Result<(), DirectUrlError> {
        let url = Url::parse(raw).unwrap();
        check_direct_url(&PackageName::new(name).unwrap(), &url, raw)
    }

    #[test]
    fn accepts_what_uv_accepts() {
        let sha = "0".repeat(64);
        for (name, raw) in [
            ("foo", "https://h/foo-1.0-py3-none-any.whl".to_string()),
            (
                "foo-bar",
                "https://h/Foo_Bar-1.0-py3-none-any.whl".to_string(),
            ),
            ("foo", "https://h/foo-1.0.tar.gz".to_string()),
            (
                "foo",
                format!("https://h/foo-1.0-py3-none-any.whl#sha256={sha}"),
            ),
            (
                "foo",
                "https://h/foo-1.0.zip#egg=foo&subdirectory=sub".to_string(),
            ),
            ("foo", "file:///tmp/foo-1.0-py3-none-any.whl".to_string()),
            ("foo", "file://localhost/tmp/project".to_string()),
            ("foo", "git+https://h/repo@v1.0".to_string()),
            ("foo", "git+ssh://git@h/repo".to_string()),
        ] {
            assert_eq!(check(name, &raw), Ok(()), "{raw}");
        }
    }

    #[test]
    fn refuses_each_kind_of_bad_url() {
        let cases = [
            (
                "ftp://h/foo-1.0-py3-none-any.whl",
                "unsupported scheme \"ftp\"",
            ),
            ("hg+https://h/repo", "unsupported scheme \"hg+https\""),
            ("file:foo-1.0-py3-none-any.whl", "must be absolute"),
            ("file://elsewhere/foo.whl", "cannot name another host"),
            (
                "https://h/x.txt",
                "does not end in a wheel or source archive",
            ),
            ("https://h/x.whl;os_name=='nt'", "needs a space before"),
            ("https://h/foo.whl", "invalid wheel file name"),
            (
                "https://h/bar-1.0-py3-none-any.whl",
                "is package \"bar\", not \"foo\"",
            ),
            (
                "https://h/foo-1.0.zip#egg=bar",
                "is package \"bar\", not \"foo\"",
            ),
            (
                "https://h/foo-1.0-py3-none-any.whl#sha256=zz",
                "expected 64 hex digits",
            ),
            (
                "https://h/foo-1.0-py3-none-any.whl#md5=00",
                "unsupported hash algorithm \"md5\"",
            ),
        ];
        for (raw, want) in cases {
            let err = check("foo", raw).unwrap_err().to_string();
            assert!(err.contains(want), "{raw}: {err}");
        }
    }
}
