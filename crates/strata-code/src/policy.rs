//! What is never shipped without being asked for: files that look like secrets by their
//! name, and a tree too large to be code.

use std::path::Path;

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};

use crate::error::CodeError;
use crate::walk::{FileKind, TreeFile};

/// File names (matched case-insensitively against the last path component) that hold
/// credentials often enough that shipping one by accident is worse than asking.
pub const SECRET_NAMES: &[&str] = &[
    ".env",
    ".env.*",
    "*.pem",
    "*.key",
    "id_rsa*",
    "id_dsa*",
    "id_ecdsa*",
    "id_ed25519*",
    ".netrc",
    "_netrc",
    ".pypirc",
    ".npmrc",
    ".pgpass",
    ".git-credentials",
    "credentials*.json",
    "*.p12",
    "*.pfx",
    "*.jks",
    "*.keystore",
];

/// Names that match a secret pattern but are published by design: public keys and the
/// templates of `.env` files that projects commit.
const NOT_SECRET_NAMES: &[&str] = &[
    "*.pub",
    ".env.example",
    ".env.sample",
    ".env.template",
    ".env.dist",
];

/// How many of the largest files a refusal for size lists.
pub const LARGEST_LISTED: usize = 10;

/// The `--include` patterns: a pattern with a `/` matches the path from the root, one
/// without matches a file name at any depth (as in `.gitignore`).
pub struct Includes {
    by_path: GlobSet,
    by_name: GlobSet,
}

impl Includes {
    pub fn new(patterns: &[String]) -> Result<Includes, CodeError> {
        let mut by_path = GlobSetBuilder::new();
        let mut by_name = GlobSetBuilder::new();
        for pattern in patterns {
            let trimmed = pattern.trim_start_matches('/');
            let glob = GlobBuilder::new(trimmed)
                .literal_separator(true)
                .build()
                .map_err(|source| CodeError::BadPattern {
                    pattern: pattern.clone(),
                    source,
                })?;
            if pattern.contains('/') {
                by_path.add(glob);
            } else {
                by_name.add(glob);
            }
        }
        let build = |b: GlobSetBuilder| {
            b.build().map_err(|source| CodeError::BadPattern {
                pattern: patterns.join(" "),
                source,
            })
        };
        Ok(Includes {
            by_path: build(by_path)?,
            by_name: build(by_name)?,
        })
    }

    pub fn matches(&self, rel: &str) -> bool {
        self.by_path.is_match(rel) || self.by_name.is_match(file_name(rel))
    }
}

fn file_name(rel: &str) -> &str {
    rel.rsplit('/').next().unwrap_or(rel)
}

fn name_set(patterns: &[&str]) -> GlobSet {
    let mut set = GlobSetBuilder::new();
    for p in patterns {
        // The patterns are constants: one that does not compile is caught by the tests.
        if let Ok(glob) = GlobBuilder::new(p).case_insensitive(true).build() {
            set.add(glob);
        }
    }
    set.build().unwrap_or_else(|_| GlobSet::empty())
}

/// Whether a file name looks like a secret.
pub fn looks_secret(rel: &str) -> bool {
    let name = file_name(rel);
    name_set(SECRET_NAMES).is_match(name) && !name_set(NOT_SECRET_NAMES).is_match(name)
}

/// The secrets of the tree not asked for by `--include`, and the ones that were.
/// Only regular files count: a symlink ships its target's name, never its bytes.
pub fn check_secrets(files: &[TreeFile], includes: &Includes) -> Result<Vec<String>, CodeError> {
    let secrets = name_set(SECRET_NAMES);
    let not_secrets = name_set(NOT_SECRET_NAMES);
    let mut refused = Vec::new();
    let mut included = Vec::new();
    for file in files {
        if !matches!(file.kind, FileKind::Regular { .. }) {
            continue;
        }
        let name = file_name(&file.rel);
        if !secrets.is_match(name) || not_secrets.is_match(name) {
            continue;
        }
        if includes.matches(&file.rel) {
            included.push(file.rel.clone());
        } else {
            refused.push(file.rel.clone());
        }
    }
    if refused.is_empty() {
        Ok(included)
    } else {
        Err(CodeError::Secrets { files: refused })
    }
}

/// Bytes of the tree's regular files; over `max`, a refusal listing the largest files.
pub fn check_size(root: &Path, files: &[TreeFile], max: u64) -> Result<u64, CodeError> {
    let total: u64 = files.iter().map(size_of).sum();
    if total <= max {
        return Ok(total);
    }
    let mut by_size: Vec<(u64, &str)> = files.iter().map(|f| (size_of(f), &*f.rel)).collect();
    by_size.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(b.1)));
    Err(CodeError::TooLarge {
        root: root.to_path_buf(),
        total,
        files: files.len(),
        max,
        largest: by_size
            .into_iter()
            .take(LARGEST_LISTED)
            .map(|(size, rel)| (rel.to_string(), size))
            .collect(),
    })
}

fn size_of(file: &TreeFile) -> u64 {
    match file.kind {
        FileKind::Regular { size, .. } => size,
        FileKind::Symlink { .. } => 0,
    }
}

/// Checks the constant patterns compile.
#[cfg(test)]
fn patterns_compile() -> bool {
    SECRET_NAMES
        .iter()
        .chain(NOT_SECRET_NAMES)
        .all(|p| globset::Glob::new(p).is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_names() {
        assert!(patterns_compile());
        for secret in [
            ".env",
            "app/.env.production",
            "certs/server.PEM",
            "tls.key",
            "id_rsa",
            "home/id_ed25519_work",
            ".netrc",
            "gcp/credentials-prod.json",
            "store.p12",
            ".pypirc",
        ] {
            assert!(looks_secret(secret), "{secret}");
        }
        for fine in [
            "id_rsa.pub",
            ".env.example",
            "environment.py",
            "keys.py",
            "monkey.txt",
            "credentials.py",
            "README.md",
        ] {
            assert!(!looks_secret(fine), "{fine}");
        }
    }

    #[test]
    fn includes_match_names_anywhere_and_paths_from_the_root() {
        let inc = Includes::new(&[".env".into(), "config/*.pem".into()]).unwrap();
        assert!(inc.matches(".env"));
        assert!(inc.matches("sub/.env"));
        assert!(inc.matches("config/a.pem"));
        assert!(!inc.matches("other/a.pem"));
        assert!(!inc.matches("config/deep/a.pem"));
        assert!(Includes::new(&["[".into()]).is_err());
    }
}

/// A `--max-code-size` that is not a size.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid size {0:?}: expected a number with a unit B, kB, MB, GB (powers of 1000) or KiB, MiB, GiB (powers of 1024), e.g. 100MB")]
pub struct SizeError(pub String);

/// "100MB", "1.5GB", "512MiB", "20000" (bytes). `K`, `M`, `G` alone are powers of 1000, as
/// the sizes strata prints.
pub fn parse_size(text: &str) -> Result<u64, SizeError> {
    let err = || SizeError(text.to_string());
    let trimmed = text.trim();
    let split = trimmed
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(trimmed.len());
    let (number, unit) = trimmed.split_at(split);
    let number: f64 = number.parse().map_err(|_| err())?;
    let factor: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" => 1e3,
        "m" | "mb" => 1e6,
        "g" | "gb" => 1e9,
        "t" | "tb" => 1e12,
        "kib" => 1024.0,
        "mib" => 1024.0 * 1024.0,
        "gib" => 1024.0 * 1024.0 * 1024.0,
        _ => return Err(err()),
    };
    let bytes = (number * factor).round();
    if !number.is_finite() || bytes > u64::MAX as f64 {
        return Err(err());
    }
    Ok(bytes as u64)
}

#[cfg(test)]
mod size_tests {
    use super::parse_size;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("100MB"), Ok(100_000_000));
        assert_eq!(parse_size("1.5 GB"), Ok(1_500_000_000));
        assert_eq!(parse_size("512MiB"), Ok(512 << 20));
        assert_eq!(parse_size("20000"), Ok(20_000));
        for bad in ["", "MB", "10 parsecs", "-1MB", "1..2MB"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
    }
}
