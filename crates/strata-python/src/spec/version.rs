//! PEP 440 versions: parsing and the normalised form.
//!
//! Normalisation follows PEP 440 ("Normalization" section): lowercase, no leading `v`,
//! `alpha`/`beta`/`c`/`pre`/`preview` spelled `a`/`b`/`rc`, implicit numbers made explicit,
//! separators of pre/post/dev releases normalised, implicit post releases (`1.0-1`) spelled
//! `1.0.post1`, leading zeros dropped. Trailing `.0` release components are kept: `1.0` and
//! `1` compare equal but are written differently by users, and the resolver treats them alike.
//! Numbers are kept as digit strings so no input can overflow.

use std::cmp::Ordering;
use std::fmt;

/// Why a text is not a PEP 440 version. `input` is the text as given (trimmed).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VersionError {
    #[error("empty version")]
    Empty,
    /// No release number where one must start (after an optional `v`).
    #[error("invalid version {input:?}: expected a digit")]
    NoRelease { input: String },
    /// `N!` with no release number after the epoch.
    #[error("invalid version {input:?}: expected a release number after the epoch \"!\"")]
    NoReleaseAfterEpoch { input: String },
    /// An empty segment in the local label (`1.0+`, `1.0+a..b`); `rest` is where it is.
    #[error("invalid version {input:?}: invalid local version label at {rest:?}")]
    BadLocalLabel { input: String, rest: String },
    /// A valid version followed by text that belongs to no part of it.
    #[error("invalid version {input:?}: unexpected {rest:?}")]
    TrailingText { input: String, rest: String },
}

/// A parsed PEP 440 version; `Display` prints its normalised form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Version {
    epoch: String,
    release: Vec<String>,
    pre: Option<(&'static str, String)>,
    post: Option<String>,
    dev: Option<String>,
    local: Option<Vec<String>>,
}

impl Version {
    /// Parses a version.
    pub fn parse(input: &str) -> Result<Version, VersionError> {
        let input = input.trim();
        let lower = input.to_ascii_lowercase();
        if lower.is_empty() {
            return Err(VersionError::Empty);
        }
        let mut c = Cursor::new(input, &lower);
        let version = parse_public(&mut c)?;
        if !c.done() {
            return Err(VersionError::TrailingText {
                input: input.to_string(),
                rest: c.rest().to_string(),
            });
        }
        Ok(version)
    }

    /// Number of release components (`1.2.3` has 3).
    pub fn release_len(&self) -> usize {
        self.release.len()
    }

    pub fn has_local(&self) -> bool {
        self.local.is_some()
    }

    /// True when the version is only an epoch and a release (what `==1.2.*` may use).
    pub fn is_release_only(&self) -> bool {
        self.pre.is_none() && self.post.is_none() && self.dev.is_none() && self.local.is_none()
    }
}

impl Version {
    /// PEP 440 ordering ("Summary of permitted suffixes and relative ordering"): `1.0` and
    /// `1.0.0` are equal here though not `==` as values (they print differently), which is
    /// why this is a method and not `Ord`.
    pub fn cmp_pep440(&self, other: &Version) -> Ordering {
        self.key().cmp(&other.key())
    }

    /// A pre-release or development release (what `<V` keeps out unless V is one).
    pub fn is_prerelease(&self) -> bool {
        self.pre.is_some() || self.dev.is_some()
    }

    pub fn is_postrelease(&self) -> bool {
        self.post.is_some()
    }

    /// The same version without its local label.
    pub fn public(&self) -> Version {
        Version {
            local: None,
            ..self.clone()
        }
    }

    /// Same epoch and release numbers (trailing zeros ignored).
    pub fn same_release(&self, other: &Version) -> bool {
        Num::of(&self.epoch) == Num::of(&other.epoch)
            && cmp_release(&self.release, &other.release) == Ordering::Equal
    }

    /// Whether this version's epoch and first release numbers are `prefix`'s (the
    /// `==1.2.*` match; missing numbers count as 0).
    pub fn starts_with_release(&self, prefix: &Version) -> bool {
        Num::of(&self.epoch) == Num::of(&prefix.epoch)
            && prefix.release.iter().enumerate().all(|(i, n)| {
                Num::of(self.release.get(i).map_or("0", String::as_str)) == Num::of(n)
            })
    }

    /// The release numbers but the last (`~=1.4.2` means `>=1.4.2, ==1.4.*`).
    pub fn release_without_last(&self) -> Version {
        let mut release = self.release.clone();
        release.pop();
        Version {
            epoch: self.epoch.clone(),
            release,
            pre: None,
            post: None,
            dev: None,
            local: None,
        }
    }

    fn key(&self) -> Key<'_> {
        let pre = match (&self.pre, &self.post, &self.dev) {
            // `1.0.dev0` sorts before `1.0a0`.
            (None, None, Some(_)) => Bound::Low,
            (None, _, _) => Bound::High,
            (Some((label, n)), _, _) => Bound::Value((pre_rank(label), Num::of(n))),
        };
        Key {
            epoch: Num::of(&self.epoch),
            release: ReleaseKey(&self.release),
            pre,
            post: self
                .post
                .as_deref()
                .map_or(Bound::Low, |n| Bound::Value(Num::of(n))),
            dev: self
                .dev
                .as_deref()
                .map_or(Bound::High, |n| Bound::Value(Num::of(n))),
            local: self.local.as_ref().map_or(Bound::Low, |segments| {
                Bound::Value(segments.iter().map(|s| LocalSegment::of(s)).collect())
            }),
        }
    }
}

/// A number kept as digits without leading zeros: more digits is larger, then the digits
/// compare as text, so no size of number can overflow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Num<'a>(usize, &'a str);

impl<'a> Num<'a> {
    fn of(digits: &'a str) -> Num<'a> {
        let digits = digits.trim_start_matches('0');
        Num(digits.len(), digits)
    }
}

/// Below or above every value (declaration order is the order).
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Bound<T> {
    Low,
    Value(T),
    High,
}

/// A local label segment: numeric segments sort after alphanumeric ones.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
enum LocalSegment<'a> {
    Text(&'a str),
    Number(Num<'a>),
}

impl<'a> LocalSegment<'a> {
    fn of(segment: &'a str) -> LocalSegment<'a> {
        if segment.bytes().all(|b| b.is_ascii_digit()) {
            LocalSegment::Number(Num::of(segment))
        } else {
            LocalSegment::Text(segment)
        }
    }
}

/// Release numbers compared with the shorter padded by zeros.
#[derive(Debug, PartialEq, Eq)]
struct ReleaseKey<'a>(&'a [String]);

impl PartialOrd for ReleaseKey<'_> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for ReleaseKey<'_> {
    fn cmp(&self, other: &Self) -> Ordering {
        cmp_release(self.0, other.0)
    }
}

fn cmp_release(a: &[String], b: &[String]) -> Ordering {
    fn at(r: &[String], i: usize) -> Num<'_> {
        Num::of(r.get(i).map_or("0", String::as_str))
    }
    (0..a.len().max(b.len()))
        .map(|i| at(a, i).cmp(&at(b, i)))
        .find(|o| o.is_ne())
        .unwrap_or(Ordering::Equal)
}

fn pre_rank(label: &str) -> u8 {
    match label {
        "a" => 0,
        "b" => 1,
        _ => 2,
    }
}

/// Field order is comparison order.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Key<'a> {
    epoch: Num<'a>,
    release: ReleaseKey<'a>,
    pre: Bound<(u8, Num<'a>)>,
    post: Bound<Num<'a>>,
    dev: Bound<Num<'a>>,
    local: Bound<Vec<LocalSegment<'a>>>,
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.epoch != "0" {
            write!(f, "{}!", self.epoch)?;
        }
        f.write_str(&self.release.join("."))?;
        if let Some((label, n)) = &self.pre {
            write!(f, "{label}{n}")?;
        }
        if let Some(n) = &self.post {
            write!(f, ".post{n}")?;
        }
        if let Some(n) = &self.dev {
            write!(f, ".dev{n}")?;
        }
        if let Some(local) = &self.local {
            write!(f, "+{}", local.join("."))?;
        }
        Ok(())
    }
}

/// Everything but the local part, then the optional local part.
fn parse_public(c: &mut Cursor) -> Result<Version, VersionError> {
    c.eat("v");
    let first = c.number().ok_or_else(|| VersionError::NoRelease {
        input: c.input.to_string(),
    })?;
    let (epoch, first) = if c.eat("!") {
        let release = c
            .number()
            .ok_or_else(|| VersionError::NoReleaseAfterEpoch {
                input: c.input.to_string(),
            })?;
        (first, release)
    } else {
        ("0".to_string(), first)
    };
    let mut release = vec![first];
    while c.peek() == Some(b'.') && c.peek_at(1).is_some_and(|b| b.is_ascii_digit()) {
        c.pos += 1;
        release.extend(c.number());
    }
    let pre = c
        .labelled(&["preview", "alpha", "beta", "pre", "rc", "a", "b", "c"])
        .map(|(label, n)| (pre_label(label), n));
    let post = parse_post(c);
    let dev = c.labelled(&["dev"]).map(|(_, n)| n);
    let local = if c.eat("+") {
        Some(parse_local(c)?)
    } else {
        None
    };
    Ok(Version {
        epoch,
        release,
        pre,
        post,
        dev,
        local,
    })
}

fn pre_label(label: &str) -> &'static str {
    match label {
        "a" | "alpha" => "a",
        "b" | "beta" => "b",
        _ => "rc",
    }
}

/// `-N` (implicit post release) or `[sep]post|rev|r[sep][N]`.
fn parse_post(c: &mut Cursor) -> Option<String> {
    if c.peek() == Some(b'-') && c.peek_at(1).is_some_and(|b| b.is_ascii_digit()) {
        c.pos += 1;
        return c.number();
    }
    c.labelled(&["post", "rev", "r"]).map(|(_, n)| n)
}

/// Local segments: alphanumerics separated by `-`, `_` or `.`; numeric ones lose leading zeros.
fn parse_local(c: &mut Cursor) -> Result<Vec<String>, VersionError> {
    let mut segments = Vec::new();
    loop {
        let start = c.pos;
        while c.peek().is_some_and(|b| b.is_ascii_alphanumeric()) {
            c.pos += 1;
        }
        let segment = &c.text[start..c.pos];
        if segment.is_empty() {
            return Err(VersionError::BadLocalLabel {
                input: c.input.to_string(),
                rest: c.rest().to_string(),
            });
        }
        segments.push(if segment.bytes().all(|b| b.is_ascii_digit()) {
            strip_zeros(segment)
        } else {
            segment.to_string()
        });
        if !c.separator() {
            return Ok(segments);
        }
    }
}

fn strip_zeros(digits: &str) -> String {
    let trimmed = digits.trim_start_matches('0');
    if trimmed.is_empty() {
        "0".to_string()
    } else {
        trimmed.to_string()
    }
}

/// A position in a lowercase ASCII-ish version string.
struct Cursor<'a> {
    /// The version as given, for errors.
    input: &'a str,
    /// `input` lowercased: what is parsed.
    text: &'a str,
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn new(input: &'a str, text: &'a str) -> Self {
        Cursor {
            input,
            text,
            pos: 0,
        }
    }

    fn peek(&self) -> Option<u8> {
        self.peek_at(0)
    }

    fn peek_at(&self, offset: usize) -> Option<u8> {
        self.text.as_bytes().get(self.pos + offset).copied()
    }

    fn rest(&self) -> &'a str {
        self.text.get(self.pos..).unwrap_or("")
    }

    fn done(&self) -> bool {
        self.pos >= self.text.len()
    }

    fn eat(&mut self, literal: &str) -> bool {
        if self.rest().starts_with(literal) {
            self.pos += literal.len();
            return true;
        }
        false
    }

    fn separator(&mut self) -> bool {
        if matches!(self.peek(), Some(b'-' | b'_' | b'.')) {
            self.pos += 1;
            return true;
        }
        false
    }

    /// `[0-9]+`, leading zeros dropped.
    fn number(&mut self) -> Option<String> {
        let start = self.pos;
        while self.peek().is_some_and(|b| b.is_ascii_digit()) {
            self.pos += 1;
        }
        (self.pos > start).then(|| strip_zeros(&self.text[start..self.pos]))
    }

    /// `[sep]LABEL[sep][N]` with the first matching label (longest listed first); the number
    /// defaults to 0. A separator is only consumed when what follows it belongs to this part.
    fn labelled(&mut self, labels: &[&'static str]) -> Option<(&'static str, String)> {
        let start = self.pos;
        self.separator();
        let Some(label) = labels.iter().copied().find(|l| self.eat(l)) else {
            self.pos = start;
            return None;
        };
        let before_number = self.pos;
        self.separator();
        if let Some(n) = self.number() {
            return Some((label, n));
        }
        self.pos = before_number;
        Some((label, "0".to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_versions() {
        let cases = [
            ("1.0", "1.0"),
            ("1", "1"),
            ("1.0.0", "1.0.0"),
            ("V1.0", "1.0"),
            ("v01.002", "1.2"),
            ("0!1.0", "1.0"),
            ("2!1.0", "2!1.0"),
            ("1.0alpha1", "1.0a1"),
            ("1.0-ALPHA-1", "1.0a1"),
            ("1.0a", "1.0a0"),
            ("1.0.beta.2", "1.0b2"),
            ("1.0c1", "1.0rc1"),
            ("1.0pre1", "1.0rc1"),
            ("1.0preview_3", "1.0rc3"),
            ("1.0RC1", "1.0rc1"),
            ("1.0-1", "1.0.post1"),
            ("1.0post", "1.0.post0"),
            ("1.0-r2", "1.0.post2"),
            ("1.0rev3", "1.0.post3"),
            ("1.0.post_04", "1.0.post4"),
            ("1.0dev", "1.0.dev0"),
            ("1.0-dev-2", "1.0.dev2"),
            ("1.0a1.post2.dev3", "1.0a1.post2.dev3"),
            ("1.0a.dev1", "1.0a0.dev1"),
            ("1.0+Ubuntu-1_02", "1.0+ubuntu.1.2"),
            ("  1.0  ", "1.0"),
            ("99999999999999999999999.0", "99999999999999999999999.0"),
        ];
        for (input, want) in cases {
            let got = Version::parse(input).map(|v| v.to_string());
            assert_eq!(got.as_deref(), Ok(want), "{input}");
        }
    }

    #[test]
    fn orders_as_pep440_says() {
        let ascending = [
            "1.0.dev0",
            "1.0a0.dev0",
            "1.0a0",
            "1.0a1",
            "1.0b1",
            "1.0rc1",
            "1.0",
            "1.0+a",
            "1.0+1",
            "1.0+1.a",
            "1.0.post0.dev0",
            "1.0.post0",
            "1.0.1",
            "1.1",
            "1.10",
            "99999999999999999999",
            "1!0.1",
        ];
        for pair in ascending.windows(2) {
            let (a, b) = (
                Version::parse(pair[0]).unwrap(),
                Version::parse(pair[1]).unwrap(),
            );
            assert_eq!(
                a.cmp_pep440(&b),
                Ordering::Less,
                "{} < {}",
                pair[0],
                pair[1]
            );
            assert_eq!(
                b.cmp_pep440(&a),
                Ordering::Greater,
                "{} > {}",
                pair[1],
                pair[0]
            );
        }
        let eq = |a: &str, b: &str| {
            Version::parse(a)
                .unwrap()
                .cmp_pep440(&Version::parse(b).unwrap())
        };
        assert_eq!(eq("1.0", "1.0.0"), Ordering::Equal);
        assert_eq!(eq("0!1.0", "1"), Ordering::Equal);
    }

    #[test]
    fn rejects_invalid_versions() {
        for bad in [
            "", "a", "1.", "1..0", "1.0+", "1.0+a..b", "1.0 1", "1.0-", "1!", "1.0a1a2", "1.*",
        ] {
            assert!(Version::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn says_which_part_is_wrong() {
        let owned = |s: &str| s.to_string();
        assert_eq!(Version::parse("  "), Err(VersionError::Empty));
        assert_eq!(
            Version::parse("vX1"),
            Err(VersionError::NoRelease {
                input: owned("vX1")
            })
        );
        assert_eq!(
            Version::parse("2!"),
            Err(VersionError::NoReleaseAfterEpoch { input: owned("2!") })
        );
        assert_eq!(
            Version::parse("1.0+a..b"),
            Err(VersionError::BadLocalLabel {
                input: owned("1.0+a..b"),
                rest: owned(".b"),
            })
        );
        assert_eq!(
            Version::parse(" 1.0Junk "),
            Err(VersionError::TrailingText {
                input: owned("1.0Junk"),
                rest: owned("junk"),
            })
        );
    }
}
