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
    /// `===<<1`: an arbitrary-equality version is still made of version characters (PEP 508:
    /// letters, digits and `-_.*+!`).
    #[error(
        "==={version}: {found:?} cannot be part of a version (letters, digits and -_.*+! only)"
    )]
    ArbitraryChar { version: String, found: char },
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
        "===" => arbitrary_version(raw)?,
        "==" | "!=" => matching_version(op, raw)?,
        _ => ordered_version(op, raw)?,
    };
    Ok(format!("{op}{version}"))
}

/// `===` compares strings, but PEP 508's grammar still limits them to version characters.
fn arbitrary_version(raw: &str) -> Result<String, SpecifierError> {
    let allowed =
        |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '*' | '+' | '!');
    if let Some(found) = raw.chars().find(|c| !allowed(*c)) {
        return Err(SpecifierError::ArbitraryChar {
            version: raw.to_string(),
            found,
        });
    }
    Ok(raw.to_ascii_lowercase())
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

/// Whether `version` satisfies one clause (`>=3.8`, `==1.2.*`, `~=1.4`), as PEP 440 says;
/// pre-releases are allowed (markers compare with them allowed). A clause that does not
/// parse matches nothing.
pub fn clause_matches(clause: &str, version: &Version) -> bool {
    let Ok(clause) = parse_clause(clause) else {
        return false;
    };
    let Some(op) = OPERATORS.iter().copied().find(|op| clause.starts_with(op)) else {
        return false;
    };
    let text = &clause[op.len()..];
    if op == "===" {
        return version.to_string().eq_ignore_ascii_case(text);
    }
    if let Some(prefix) = text.strip_suffix(".*") {
        let Ok(prefix) = Version::parse(prefix) else {
            return false;
        };
        return version.starts_with_release(&prefix) == (op == "==");
    }
    let Ok(spec) = Version::parse(text) else {
        return false;
    };
    // A specifier without a local label ignores the candidate's.
    let candidate = if spec.has_local() {
        version.clone()
    } else {
        version.public()
    };
    let order = candidate.cmp_pep440(&spec);
    match op {
        "==" => order.is_eq(),
        "!=" => order.is_ne(),
        "<=" => order.is_le(),
        ">=" => order.is_ge(),
        // `<V` keeps out V's own pre-releases unless V is one; `>V` its post-releases.
        "<" => {
            order.is_lt()
                && !(candidate.is_prerelease()
                    && !spec.is_prerelease()
                    && candidate.same_release(&spec))
        }
        ">" => {
            order.is_gt()
                && !(candidate.is_postrelease()
                    && !spec.is_postrelease()
                    && candidate.same_release(&spec))
        }
        "~=" => order.is_ge() && candidate.starts_with_release(&spec.release_without_last()),
        _ => false,
    }
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
    fn matches_versions() {
        let cases = [
            (">=3.8", "3.11", true),
            (">=3.8", "3.7", false),
            ("<3.10", "3.9", true),
            ("<3.10", "3.10", false),
            ("<3.10", "3.10rc1", false),
            ("<3.10rc2", "3.10rc1", true),
            (">3.10", "3.10.post1", false),
            (">3.10", "3.10.1", true),
            ("==3.11", "3.11.0", true),
            ("==3.11", "3.11+local", true),
            ("==3.11+other", "3.11+local", false),
            ("!=3.11", "3.12", true),
            ("==3.*", "3.12.1", true),
            ("==3.1.*", "3.12", false),
            ("!=3.1.*", "3.12", true),
            ("~=1.4.2", "1.4.9", true),
            ("~=1.4.2", "1.5", false),
            ("~=1.4", "1.9", true),
            ("===1.0", "1.0", true),
            ("===1.0", "1.0.0", false),
            ("<=2", "2.0.0", true),
            ("nonsense", "1.0", false),
        ];
        for (clause, version, want) in cases {
            let v = Version::parse(version).unwrap();
            assert_eq!(clause_matches(clause, &v), want, "{version} {clause}");
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
            ("===<<1", "'<' cannot be part of a version"),
            ("===1;0", "';' cannot be part of a version"),
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
