//! Package names, normalised as PEP 503 says: lowercase, runs of `-`, `_` and `.` become `-`.

use std::fmt;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PackageName(String);

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[error("invalid package name {0:?}: names are letters, digits, '-', '_' and '.', starting and ending with a letter or digit")]
pub struct InvalidName(pub String);

impl PackageName {
    pub fn new(raw: &str) -> Result<PackageName, InvalidName> {
        let valid_chars = raw
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        let ends_ok = raw
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric())
            && raw
                .chars()
                .last()
                .is_some_and(|c| c.is_ascii_alphanumeric());
        if !valid_chars || !ends_ok {
            return Err(InvalidName(raw.to_string()));
        }
        let mut out = String::with_capacity(raw.len());
        let mut in_separator = false;
        for c in raw.chars() {
            if matches!(c, '-' | '_' | '.') {
                in_separator = true;
                continue;
            }
            if in_separator {
                out.push('-');
                in_separator = false;
            }
            out.push(c.to_ascii_lowercase());
        }
        Ok(PackageName(out))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The form used in wheel file names and `.dist-info` directories (`-` becomes `_`).
    pub fn as_dist_info_name(&self) -> String {
        self.0.replace('-', "_")
    }
}

impl fmt::Display for PackageName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for PackageName {
    type Error = InvalidName;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        PackageName::new(&value)
    }
}

impl From<PackageName> for String {
    fn from(value: PackageName) -> Self {
        value.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_case_and_separators() {
        for raw in ["Foo.Bar", "foo_bar", "FOO--bar", "foo-._bar"] {
            assert_eq!(PackageName::new(raw).unwrap().as_str(), "foo-bar", "{raw}");
        }
        assert_eq!(PackageName::new("a").unwrap().as_str(), "a");
    }

    #[test]
    fn rejects_invalid_names() {
        for raw in ["", "-foo", "foo-", "foo bar", "foo/bar", "../x"] {
            assert!(PackageName::new(raw).is_err(), "{raw}");
        }
    }
}
