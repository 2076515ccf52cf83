//! PEP 440 version specifiers: `>=1.0,<2`, `~=1.4`, `==1.2.*`, `===foo`.
//!
//! A specifier is a set of clauses that must all hold, so their order and repetitions carry no
//! meaning: the canonical form is the normalised clauses, sorted, deduplicated and joined by `,`
//! without spaces.

use super::version::{Version, VersionError};

/// Operators, longest first so that `===` is not read as `==` followed by `=`.
const OPERATORS: [&str; 8] = ["===", "~=", "==", "!=", "<=", ">=", "<", ">"];

/// Why a specifier clause is invalid. `op` and `version` are the clause's operator and the
/// version text as given.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecifierError {
    #[error("empty version clause (stray \",\")")]
    EmptyClause,
    #[error("expected a comparison operator (==, !=, <=, >=, <, >, ~=, ===) before {clause:?}")]
    NoOperator { clause: String },
    #[error("expected a version after {op:?}")]
    NoVersion { op: &'static str },
    #[error("unexpected text {extra:?} after version {version:?}")]
    TrailingText { version: String, extra: String },
    #[error(transparent)]
    Version(#[from] VersionError),
    /// `==1.0a1.*`: a prefix match names release numbers only.
    #[error("{op}{version}: a \".*\" prefix match takes only release numbers, like {op}1.2.*")]
    WildcardNotRelease { op: &'static str, version: String },
    /// `>=1.0.*`: ordered comparisons take no wildcard.
    #[error("{op}{version}: \".*\" is only allowed with == and !=")]
    WildcardWithOrdering { op: &'static str, version: String },
    /// `<=1.0+local`: ordered comparisons take no local label.
    #[error("{op}{version}: a local version label (+...) is only allowed with == and !=")]
    LocalWithOrdering { op: &'static str, version: String },
    /// `~=1`: a compatible release needs something to keep compatible with.
    #[error("~={version}: ~= needs at least two release numbers, like ~=1.4")]
    CompatibleNeedsTwo { version: String },
}

/// Parses a comma-separated specifier into its canonical clauses (unsorted).
pub fn parse_clauses(text: &str) -> Result<Vec<String>, SpecifierError> {
    text.split(',').map(parse_clause).collect()
}

/// Sorts, deduplicates and joins canonical clauses.
pub fn join_clauses(mut clauses: Vec<String>) -> String {
    clauses.retain(|c| !c.is_empty());
    clauses.sort();
    clauses.dedup();
    clauses.join(",")
}

/// Splits a canonical specifier string back into its clauses.
pub fn split_clauses(specifier: &str) -> impl Iterator<Item = &str> {
    specifier.split(',').filter(|c| !c.is_empty())
}

/// One clause, e.g. ` >= 1.0 ` -> `>=1.0`.
pub fn parse_clause(text: &str) -> Result<String, SpecifierError> {
    let text = text.trim();
    if text.is_empty() {
        return Err(SpecifierError::EmptyClause);
    }
    let Some(op) = OPERATORS.iter().copied().find(|op| text.starts_with(op)) else {
        return Err(SpecifierError::NoOperator {
            clause: text.to_string(),
        });
    };
    let raw = text[op.len()..].trim();
    if raw.is_empty() {
        return Err(SpecifierError::NoVersion { op });
    }
    if let Some((version, extra)) = raw.split_once(char::is_whitespace) {
        return Err(SpecifierError::TrailingText {
            version: version.to_string(),
            extra: extra.trim().to_string(),
        });
    }
    let version = match op {
        "===" => raw.to_ascii_lowercase(),
        "==" | "!=" => matching_version(op, raw)?,
        _ => ordered_version(op, raw)?,
    };
    Ok(format!("{op}{version}"))
}

/// `==`/`!=` take a full version (local labels allowed) or a release prefix with `.*`.
fn matching_version(op: &'static str, raw: &str) -> Result<String, SpecifierError> {
    let Some(prefix) = raw.strip_suffix(".*") else {
        return Ok(Version::parse(raw)?.to_string());
    };
    let version = Version::parse(prefix)?;
    if !version.is_release_only() {
        return Err(SpecifierError::WildcardNotRelease {
            op,
            version: raw.to_string(),
        });
    }
    Ok(format!("{version}.*"))
}

/// `<`, `>`, `<=`, `>=`, `~=`: no local label, no wildcard; `~=` needs two release numbers.
fn ordered_version(op: &'static str, raw: &str) -> Result<String, SpecifierError> {
    if raw.ends_with(".*") {
        return Err(SpecifierError::WildcardWithOrdering {
            op,
            version: raw.to_string(),
        });
    }
    let version = Version::parse(raw)?;
    if version.has_local() {
        return Err(SpecifierError::LocalWithOrdering {
            op,
            version: raw.to_string(),
        });
    }
    if op == "~=" && version.release_len() < 2 {
        return Err(SpecifierError::CompatibleNeedsTwo {
            version: raw.to_string(),
        });
    }
    Ok(version.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_clauses() {
        let cases = [
            (">= 1.0", ">=1.0"),
            ("==1.0.*", "==1.0.*"),
            ("!= v2.0.*", "!=2.0.*"),
            ("~=1.4.0", "~=1.4.0"),
            ("===Foo-Bar", "===foo-bar"),
            ("==1.0+Local.01", "==1.0+local.1"),
            ("<2.0RC1", "<2.0rc1"),
        ];
        for (input, want) in cases {
            assert_eq!(parse_clause(input).as_deref(), Ok(want), "{input}");
        }
    }

    #[test]
    fn joins_sorted_and_deduplicated() {
        let clauses = parse_clauses(">=1.0, <2 ,>=1.0").unwrap();
        assert_eq!(join_clauses(clauses), "<2,>=1.0");
    }

    #[test]
    fn rejects_bad_clauses() {
        let cases = [
            (">=", "expected a version after \">=\""),
            ("===", "expected a version after \"===\""),
            ("1.0", "expected a comparison operator"),
            (">=1.0 extra", "unexpected text \"extra\""),
            (">=1.0.*", "only allowed with == and !="),
            ("<=1.0+local", "local version label"),
            ("~=1", "two release numbers"),
            ("==1.0a1.*", "only release numbers"),
            ("=>1.0", "expected a comparison operator"),
            ("", "empty version clause"),
        ];
        for (input, want) in cases {
            let err = parse_clause(input).unwrap_err().to_string();
            assert!(err.contains(want), "{input}: {err}");
        }
    }

    #[test]
    fn says_what_is_wrong_with_a_clause() {
        let version = |s: &str| s.to_string();
        let cases = [
            ("  ", SpecifierError::EmptyClause),
            (
                "=>1.0",
                SpecifierError::NoOperator {
                    clause: version("=>1.0"),
                },
            ),
            ("~= ", SpecifierError::NoVersion { op: "~=" }),
            (
                ">=1.0 extra",
                SpecifierError::TrailingText {
                    version: version("1.0"),
                    extra: version("extra"),
                },
            ),
            (
                "==1.0a1.*",
                SpecifierError::WildcardNotRelease {
                    op: "==",
                    version: version("1.0a1.*"),
                },
            ),
            (
                "<1.*",
                SpecifierError::WildcardWithOrdering {
                    op: "<",
                    version: version("1.*"),
                },
            ),
            (
                ">1+l",
                SpecifierError::LocalWithOrdering {
                    op: ">",
                    version: version("1+l"),
                },
            ),
            (
                "~=1",
                SpecifierError::CompatibleNeedsTwo {
                    version: version("1"),
                },
            ),
            (
                "!=x",
                SpecifierError::Version(VersionError::NoRelease {
                    input: version("x"),
                }),
            ),
        ];
        for (input, want) in cases {
            assert_eq!(parse_clause(input), Err(want), "{input:?}");
        }
    }
}
