//! PEP 508 requirement strings: `name[extras] specifier ; marker` or `name[extras] @ url ; marker`,
//! parsed straight into the canonical [`Requirement`].

use std::fmt;
use std::str::FromStr;

use super::direct_url::{check_direct_url, DirectUrlError};
use super::error::InvalidRequirement;
use super::marker::{canonical_marker, MarkerError};
use super::specifier::{join_clauses, parse_clauses, SpecifierError};
use super::Requirement;
use crate::name::{InvalidName, PackageName};

/// Why a text is not a PEP 508 requirement. The callers add the text (and file and line).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequirementError {
    #[error("expected a package name at the start")]
    NoName,
    #[error(transparent)]
    Name(#[from] InvalidName),
    #[error("unclosed extras: expected \"]\"")]
    UnclosedExtras,
    #[error("invalid extra name {extra:?}")]
    BadExtra { extra: String },
    #[error("expected a URL after \"@\"")]
    NoUrl,
    #[error("invalid URL {url:?}: {source}")]
    BadUrl {
        url: String,
        #[source]
        source: url::ParseError,
    },
    #[error(transparent)]
    DirectUrl(#[from] DirectUrlError),
    /// Text after a direct URL that is not `; marker`.
    #[error("expected \";\" and a marker after the URL, found {found:?}")]
    AfterUrl { found: String },
    /// Text after the name that starts no specifier, URL or marker.
    #[error(
        "expected a version specifier (like \">=1.0\"), \"@ URL\" or \";\" after the name, found {found:?}"
    )]
    NoSpecifier { found: String },
    #[error("unclosed \"(\": expected \")\" after the version specifier")]
    UnclosedParenthesis,
    #[error(transparent)]
    Specifier(#[from] SpecifierError),
    #[error("expected a marker after \";\"")]
    NoMarker,
    #[error(transparent)]
    Marker(#[from] MarkerError),
}

/// PEP 685 extra names: lowercase, runs of `-`, `_`, `.` become `-`.
pub fn normalise_extra(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut in_separator = false;
    for c in raw.trim().chars() {
        if matches!(c, '-' | '_' | '.') {
            in_separator = true;
            continue;
        }
        if in_separator && !out.is_empty() {
            out.push('-');
        }
        in_separator = false;
        out.push(c.to_ascii_lowercase());
    }
    out
}

impl FromStr for Requirement {
    type Err = InvalidRequirement;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        parse_requirement(text).map_err(|source| InvalidRequirement {
            text: text.trim().to_string(),
            source,
        })
    }
}

/// The canonical PEP 508 line (without hashes; see [`Requirement::to_requirements_line`]).
impl fmt::Display for Requirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name.as_str())?;
        if !self.extras.is_empty() {
            write!(f, "[{}]", self.extras.join(","))?;
        }
        match &self.url {
            // A URL may itself contain `;`, so a marker after it needs the space.
            Some(url) => write!(f, " @ {url}")?,
            None => f.write_str(&self.specifier)?,
        }
        if let Some(marker) = &self.marker {
            let sep = if self.url.is_some() { " ; " } else { "; " };
            write!(f, "{sep}{marker}")?;
        }
        Ok(())
    }
}

impl Requirement {
    /// The line for a requirements file uv reads: the PEP 508 form plus `--hash=` options.
    pub fn to_requirements_line(&self) -> String {
        let mut line = self.to_string();
        for hash in &self.hashes {
            line.push_str(" --hash=");
            line.push_str(hash);
        }
        line
    }
}

/// Parses a PEP 508 requirement into canonical form.
pub fn parse_requirement(text: &str) -> Result<Requirement, RequirementError> {
    let text = text.trim();
    let name_len = text
        .find(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
        .unwrap_or(text.len());
    if name_len == 0 {
        return Err(RequirementError::NoName);
    }
    let name = PackageName::new(&text[..name_len])?;
    let mut rest = text[name_len..].trim_start();
    let mut extras = Vec::new();
    if let Some(after) = rest.strip_prefix('[') {
        let (inner, tail) = after
            .split_once(']')
            .ok_or(RequirementError::UnclosedExtras)?;
        extras = parse_extras(inner)?;
        rest = tail.trim_start();
    }
    let mut requirement = Requirement {
        name,
        extras,
        specifier: String::new(),
        url: None,
        marker: None,
        hashes: Vec::new(),
    };
    if let Some(after_at) = rest.strip_prefix('@') {
        let (url, tail) = parse_url(&requirement.name, after_at)?;
        requirement.url = Some(url);
        rest = tail;
        if !rest.is_empty() && !rest.starts_with(';') {
            return Err(RequirementError::AfterUrl {
                found: rest.to_string(),
            });
        }
    }
    let (spec_text, marker_text) = match rest.split_once(';') {
        Some((spec, marker)) => (spec, Some(marker)),
        None => (rest, None),
    };
    if requirement.url.is_none() {
        requirement.specifier = parse_specifier(spec_text)?;
    }
    if let Some(marker) = marker_text {
        if marker.trim().is_empty() {
            return Err(RequirementError::NoMarker);
        }
        requirement.marker = Some(canonical_marker(marker)?);
    }
    Ok(requirement)
}

fn parse_extras(inner: &str) -> Result<Vec<String>, RequirementError> {
    if inner.trim().is_empty() {
        return Ok(Vec::new());
    }
    let mut extras = Vec::new();
    for raw in inner.split(',') {
        let raw = raw.trim();
        let valid = PackageName::new(raw).is_ok();
        if !valid {
            return Err(RequirementError::BadExtra {
                extra: raw.to_string(),
            });
        }
        extras.push(normalise_extra(raw));
    }
    extras.sort();
    extras.dedup();
    Ok(extras)
}

/// The URL after `@`: everything up to whitespace. Returns it normalised and the rest.
fn parse_url<'t>(
    name: &PackageName,
    after_at: &'t str,
) -> Result<(String, &'t str), RequirementError> {
    let after_at = after_at.trim_start();
    let end = after_at.find(char::is_whitespace).unwrap_or(after_at.len());
    let raw = &after_at[..end];
    if raw.is_empty() {
        return Err(RequirementError::NoUrl);
    }
    let url = url::Url::parse(raw).map_err(|source| RequirementError::BadUrl {
        url: raw.to_string(),
        source,
    })?;
    check_direct_url(name, &url, raw)?;
    Ok((url.to_string(), after_at[end..].trim_start()))
}

/// The specifier between the name (and extras) and the marker, optionally in parentheses.
fn parse_specifier(text: &str) -> Result<String, RequirementError> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(String::new());
    }
    let inner = match text.strip_prefix('(') {
        Some(open) => open
            .trim_end()
            .strip_suffix(')')
            .ok_or(RequirementError::UnclosedParenthesis)?,
        None => text,
    };
    let starts_like_operator = inner.trim_start().starts_with(['<', '>', '=', '!', '~']);
    if !starts_like_operator {
        return Err(RequirementError::NoSpecifier {
            found: inner.to_string(),
        });
    }
    Ok(join_clauses(parse_clauses(inner)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canon(text: &str) -> String {
        parse_requirement(text).unwrap().to_string()
    }

    #[test]
    fn canonical_lines() {
        let cases = [
            ("Foo_Bar", "foo-bar"),
            ("foo [Extra_One, b , extra.one]", "foo[b,extra-one]"),
            ("foo[]>=1", "foo>=1"),
            ("foo ( >= 1.0 , < 2 )", "foo<2,>=1.0"),
            (
                "foo>=1.0;python_version<'3.12'",
                "foo>=1.0; python_version < \"3.12\"",
            ),
            (
                "foo@https://EXAMPLE.com/foo-1.0-py3-none-any.whl ; os_name=='posix'",
                "foo @ https://example.com/foo-1.0-py3-none-any.whl ; os_name == \"posix\"",
            ),
            (
                "foo[x] @ https://h/foo-1.0-py3-none-any.whl",
                "foo[x] @ https://h/foo-1.0-py3-none-any.whl",
            ),
        ];
        for (input, want) in cases {
            assert_eq!(canon(input), want, "{input}");
        }
    }

    #[test]
    fn round_trips_through_display() {
        for line in [
            "foo[a,b]<2,>=1.0; python_version >= \"3.8\"",
            "x @ https://h/x-1.0-py3-none-any.whl ; os_name == \"nt\"",
        ] {
            let once = parse_requirement(line).unwrap();
            let twice = parse_requirement(&once.to_string()).unwrap();
            assert_eq!(once, twice);
        }
    }

    #[test]
    fn rejects_malformed() {
        let cases = [
            ("==1.0", "expected a package name"),
            ("foo===", "expected a version after \"===\""),
            ("foo>=1.0 extra", "unexpected text \"extra\""),
            ("foo[bar", "unclosed extras"),
            ("foo[b ar]", "invalid extra name"),
            ("foo bar", "expected a version specifier"),
            ("foo @", "expected a URL"),
            ("foo @ not-a-url", "invalid URL"),
            (
                "foo @ https://h/foo-1.0-py3-none-any.whl extra",
                "expected \";\" and a marker",
            ),
            ("foo;", "expected a marker"),
            ("foo; python_version >= ", "expected a marker variable"),
            ("foo (>=1", "unclosed \"(\""),
            ("-foo", "invalid package name"),
            ("foo.", "invalid package name"),
        ];
        for (input, want) in cases {
            let err = parse_requirement(input).unwrap_err().to_string();
            assert!(err.contains(want), "{input}: {err}");
        }
    }

    #[test]
    fn says_which_part_is_wrong() {
        let text = |s: &str| s.to_string();
        let cases = [
            ("==1.0", RequirementError::NoName),
            ("foo.", RequirementError::Name(InvalidName(text("foo.")))),
            ("foo[bar", RequirementError::UnclosedExtras),
            (
                "foo[a, -b]",
                RequirementError::BadExtra { extra: text("-b") },
            ),
            ("foo @ ", RequirementError::NoUrl),
            (
                "foo @ https://h/foo-1.0-py3-none-any.whl extra",
                RequirementError::AfterUrl {
                    found: text("extra"),
                },
            ),
            (
                "foo bar",
                RequirementError::NoSpecifier { found: text("bar") },
            ),
            ("foo (>=1", RequirementError::UnclosedParenthesis),
            (
                "foo>=1,",
                RequirementError::Specifier(SpecifierError::EmptyClause),
            ),
            ("foo ; ", RequirementError::NoMarker),
            (
                "foo; nope == 'x'",
                RequirementError::Marker(MarkerError::UnknownVariable { name: text("nope") }),
            ),
        ];
        for (input, want) in cases {
            assert_eq!(parse_requirement(input), Err(want), "{input:?}");
        }
        assert!(matches!(
            parse_requirement("foo @ not-a-url"),
            Err(RequirementError::BadUrl { url, source: url::ParseError::RelativeUrlWithoutBase })
                if url == "not-a-url"
        ));
    }
}
