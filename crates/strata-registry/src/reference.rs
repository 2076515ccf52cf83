//! Names of things in a registry: `REGISTRY/REPO`, tags, and `REGISTRY/REPO[:TAG|@sha256:..]`.
//!
//! strata always names the registry explicitly (there is no implicit `docker.io`), so the first
//! path component is always the registry host, with an optional port.

use std::fmt;
use std::str::FromStr;

use strata_oci::{Digest, DigestParseError};

/// What a valid tag looks like, for the errors that reject one.
const TAG_RULE: &str = "a tag is 1 to 128 of [A-Za-z0-9_.-] and does not start with '.' or '-'";

/// The grammar errors of names; every message quotes the input it rejects.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReferenceError {
    #[error("invalid repository {input:?}: {reason} (expected REGISTRY/REPO, e.g. 127.0.0.1:5000/team/env)")]
    Repo {
        input: String,
        #[source]
        reason: NameError,
    },
    #[error(
        "invalid image reference {input:?}: {reason} (expected REGISTRY/REPO[:TAG|@sha256:DIGEST])"
    )]
    Image {
        input: String,
        #[source]
        reason: NameError,
    },
    #[error("invalid tag {input:?}: {TAG_RULE}")]
    Tag { input: String },
}

/// Which part of a `REGISTRY/REPO[:TAG|@DIGEST]` name is wrong, and how.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// A tag or digest where only a repository is wanted.
    #[error("a repository takes no tag or digest here")]
    TagOrDigestGiven,
    #[error("no '/' between the registry and the repository")]
    NoSlash,
    #[error("bad port {port:?} in registry {registry:?}")]
    BadPort { registry: String, port: String },
    #[error("bad IPv6 address in registry {registry:?}")]
    BadIpv6 { registry: String },
    #[error("unclosed '[' in registry {registry:?}")]
    UnclosedBracket { registry: String },
    #[error("unexpected {rest:?} after ']' in registry {registry:?}")]
    AfterBracket { registry: String, rest: String },
    #[error("bad registry host {host:?}")]
    BadHost { host: String },
    #[error("empty repository name")]
    EmptyRepository,
    #[error("repository name longer than 255 characters")]
    LongRepository,
    #[error("bad path component {component:?}: use lowercase letters, digits and single '.', '_', '__' or '-' separators")]
    BadComponent { component: String },
    #[error("invalid tag {tag:?}: {TAG_RULE}")]
    BadTag { tag: String },
    #[error(transparent)]
    BadDigest(#[from] DigestParseError),
}

/// A repository in a given registry: `registry` is `host[:port]`, `repository` is `team/env`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RegistryRepo {
    pub registry: String,
    pub repository: String,
}

/// A validated tag.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tag(String);

/// What names a manifest inside a repository.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ManifestRef {
    Tag(Tag),
    Digest(Digest),
}

/// `REGISTRY/REPO` with an optional tag or digest.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ImageRef {
    pub repo: RegistryRepo,
    pub reference: Option<ManifestRef>,
}

impl RegistryRepo {
    pub fn new(registry: &str, repository: &str) -> Result<RegistryRepo, ReferenceError> {
        format!("{registry}/{repository}").parse()
    }
}

impl FromStr for RegistryRepo {
    type Err = ReferenceError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        parse_repo(input).map_err(|reason| ReferenceError::Repo {
            input: input.to_string(),
            reason,
        })
    }
}

/// `REGISTRY/REPO`, no tag or digest.
fn parse_repo(input: &str) -> Result<RegistryRepo, NameError> {
    if input.contains('@') || last_component(input).contains(':') {
        return Err(NameError::TagOrDigestGiven);
    }
    let Some((registry, repository)) = input.split_once('/') else {
        return Err(NameError::NoSlash);
    };
    check_registry(registry)?;
    check_repository(repository)?;
    Ok(RegistryRepo {
        registry: registry.to_string(),
        repository: repository.to_string(),
    })
}

impl fmt::Display for RegistryRepo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)
    }
}

impl Tag {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Tag {
    /// A tag the caller built from characters a tag allows (a fixed prefix and digest hex).
    pub(crate) fn from_validated(tag: String) -> Tag {
        debug_assert!(tag.parse::<Tag>().is_ok(), "{tag}");
        Tag(tag)
    }
}

impl FromStr for Tag {
    type Err = ReferenceError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let mut bytes = input.bytes();
        let first_ok = bytes
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_');
        let rest_ok = bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
        if !first_ok || !rest_ok || input.len() > 128 {
            return Err(ReferenceError::Tag {
                input: input.to_string(),
            });
        }
        Ok(Tag(input.to_string()))
    }
}

impl Tag {
    /// A tag inside a longer name: its error is that name's.
    fn parse_part(tag: &str) -> Result<Tag, NameError> {
        tag.parse().map_err(|_| NameError::BadTag {
            tag: tag.to_string(),
        })
    }
}

impl fmt::Display for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl ManifestRef {
    /// The path segment after `/manifests/`.
    pub fn as_path_segment(&self) -> String {
        self.to_string()
    }

    pub fn digest(&self) -> Option<&Digest> {
        match self {
            ManifestRef::Digest(d) => Some(d),
            ManifestRef::Tag(_) => None,
        }
    }
}

/// `sha256:...` is a digest, anything else must be a valid tag.
impl FromStr for ManifestRef {
    type Err = ReferenceError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        if input.contains(':') {
            let digest = input.parse().map_err(|e| ReferenceError::Image {
                input: input.to_string(),
                reason: NameError::BadDigest(e),
            })?;
            return Ok(ManifestRef::Digest(digest));
        }
        Ok(ManifestRef::Tag(input.parse()?))
    }
}

impl fmt::Display for ManifestRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ManifestRef::Tag(t) => write!(f, "{t}"),
            ManifestRef::Digest(d) => write!(f, "{d}"),
        }
    }
}

impl From<Digest> for ManifestRef {
    fn from(d: Digest) -> Self {
        ManifestRef::Digest(d)
    }
}

impl From<Tag> for ManifestRef {
    fn from(t: Tag) -> Self {
        ManifestRef::Tag(t)
    }
}

impl FromStr for ImageRef {
    type Err = ReferenceError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let parse = || -> Result<ImageRef, NameError> {
            let (name, reference) = split_reference(input)?;
            let repo = parse_repo(name)?;
            Ok(ImageRef { repo, reference })
        };
        parse().map_err(|reason| ReferenceError::Image {
            input: input.to_string(),
            reason,
        })
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.reference {
            None => write!(f, "{}", self.repo),
            Some(ManifestRef::Tag(t)) => write!(f, "{}:{t}", self.repo),
            Some(ManifestRef::Digest(d)) => write!(f, "{}@{d}", self.repo),
        }
    }
}

/// Splits `NAME[:TAG|@DIGEST]`; the tag colon is the one after the last '/', so a port is never
/// mistaken for a tag.
fn split_reference(input: &str) -> Result<(&str, Option<ManifestRef>), NameError> {
    if let Some((name, digest)) = input.split_once('@') {
        let digest: Digest = digest.parse()?;
        return Ok((name, Some(ManifestRef::Digest(digest))));
    }
    let last = last_component(input);
    let Some((_, tag)) = last.split_once(':') else {
        return Ok((input, None));
    };
    let name = &input[..input.len() - tag.len() - 1];
    let tag = Tag::parse_part(tag)?;
    Ok((name, Some(ManifestRef::Tag(tag))))
}

/// The text after the last '/', or an empty string when there is no '/' (then the only
/// component is the registry, whose ':' is a port).
fn last_component(input: &str) -> &str {
    input.rsplit_once('/').map(|(_, last)| last).unwrap_or("")
}

/// `host[:port]` where host is a DNS name, an IPv4 address or a bracketed IPv6 address.
fn check_registry(registry: &str) -> Result<(), NameError> {
    let (host, port) = split_host_port(registry)?;
    if let Some(port) = port {
        if port.is_empty() || port.len() > 5 || !port.bytes().all(|b| b.is_ascii_digit()) {
            return Err(NameError::BadPort {
                registry: registry.to_string(),
                port: port.to_string(),
            });
        }
    }
    if host.starts_with('[') {
        let inner = &host[1..host.len() - 1];
        return inner
            .parse::<std::net::Ipv6Addr>()
            .map(|_| ())
            .map_err(|_| NameError::BadIpv6 {
                registry: registry.to_string(),
            });
    }
    let label_ok = |l: &str| {
        !l.is_empty()
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    };
    if host.is_empty() || !host.split('.').all(label_ok) {
        return Err(NameError::BadHost {
            host: host.to_string(),
        });
    }
    Ok(())
}

/// Splits `host:port` / `[v6]:port`; the returned host keeps its brackets.
pub(crate) fn split_host_port(registry: &str) -> Result<(&str, Option<&str>), NameError> {
    if registry.starts_with('[') {
        let Some(end) = registry.find(']') else {
            return Err(NameError::UnclosedBracket {
                registry: registry.to_string(),
            });
        };
        let host = &registry[..=end];
        return match &registry[end + 1..] {
            "" => Ok((host, None)),
            rest => match rest.strip_prefix(':') {
                Some(port) => Ok((host, Some(port))),
                None => Err(NameError::AfterBracket {
                    registry: registry.to_string(),
                    rest: rest.to_string(),
                }),
            },
        };
    }
    Ok(match registry.split_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (registry, None),
    })
}

/// Path components of lowercase alphanumerics joined by single separators (`.`, `_`, `__`,
/// dashes), as the distribution spec allows.
fn check_repository(repository: &str) -> Result<(), NameError> {
    if repository.is_empty() {
        return Err(NameError::EmptyRepository);
    }
    if repository.len() > 255 {
        return Err(NameError::LongRepository);
    }
    match repository.split('/').find(|c| !component_ok(c)) {
        Some(component) => Err(NameError::BadComponent {
            component: component.to_string(),
        }),
        None => Ok(()),
    }
}

fn component_ok(component: &str) -> bool {
    let is_alnum = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    if !component.starts_with(is_alnum) || !component.ends_with(is_alnum) {
        return false;
    }
    // Splitting at every alphanumeric leaves the separator runs; anything else (uppercase,
    // spaces, '..') shows up in a run and is rejected.
    component
        .split(is_alnum)
        .filter(|run| !run.is_empty())
        .all(|run| run == "." || run == "_" || run == "__" || run.bytes().all(|b| b == b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repo_parses_registry_with_port_and_nested_path() {
        let r: RegistryRepo = "127.0.0.1:5000/team/env".parse().unwrap();
        assert_eq!(r.registry, "127.0.0.1:5000");
        assert_eq!(r.repository, "team/env");
        assert_eq!(r.to_string(), "127.0.0.1:5000/team/env");
        let r: RegistryRepo = "[::1]:5000/a/b_c/d-e.f".parse().unwrap();
        assert_eq!(r.registry, "[::1]:5000");
        let r: RegistryRepo = "registry.example.com/x".parse().unwrap();
        assert_eq!(r.registry, "registry.example.com");
    }

    #[test]
    fn repo_rejects_bad_input_and_names_it() {
        for bad in [
            "noslash",
            "host:5000/",
            "host/Upper",
            "host/a//b",
            "host/-a",
            "host/a..b",
            "host:port/a",
            "host/a:tag",
            "host/a@sha256:00",
            "[::1/a",
            "ho st/a",
        ] {
            let err = bad.parse::<RegistryRepo>().unwrap_err();
            assert!(err.to_string().contains(&format!("{bad:?}")), "{err}");
        }
    }

    #[test]
    fn image_ref_tag_digest_and_port_are_told_apart() {
        let i: ImageRef = "127.0.0.1:5000/team/env".parse().unwrap();
        assert_eq!(i.reference, None);
        let i: ImageRef = "127.0.0.1:5000/team/env:v1.2_x".parse().unwrap();
        assert_eq!(i.repo.repository, "team/env");
        assert_eq!(
            i.reference,
            Some(ManifestRef::Tag("v1.2_x".parse().unwrap()))
        );
        let d = Digest::of(b"x");
        let i: ImageRef = format!("localhost:5000/env@{d}").parse().unwrap();
        assert_eq!(i.reference, Some(ManifestRef::Digest(d.clone())));
        assert_eq!(i.to_string(), format!("localhost:5000/env@{d}"));
    }

    #[test]
    fn image_ref_rejects_bad_tags_and_digests() {
        for bad in [
            "h:5000/env:",
            "h:5000/env:-x",
            "h:5000/env@sha256:abc",
            "h:5000/env:a:b",
            "h:5000",
        ] {
            let err = bad.parse::<ImageRef>().unwrap_err();
            assert!(err.to_string().contains(&format!("{bad:?}")), "{err}");
        }
    }

    #[test]
    fn manifest_ref_parses_digest_or_tag() {
        let d = Digest::of(b"m");
        assert_eq!(
            d.to_string().parse::<ManifestRef>().unwrap(),
            ManifestRef::Digest(d)
        );
        assert!(matches!(
            "latest".parse::<ManifestRef>().unwrap(),
            ManifestRef::Tag(_)
        ));
        assert!("md5:00".parse::<ManifestRef>().is_err());
        assert!("x".repeat(129).parse::<Tag>().is_err());
    }

    #[test]
    fn repo_errors_say_which_part_is_wrong() {
        let s = |s: &str| s.to_string();
        let cases = [
            ("h/a:tag", NameError::TagOrDigestGiven),
            ("noslash", NameError::NoSlash),
            (
                "h:50000x/a",
                NameError::BadPort {
                    registry: s("h:50000x"),
                    port: s("50000x"),
                },
            ),
            (
                "[::g]/a",
                NameError::BadIpv6 {
                    registry: s("[::g]"),
                },
            ),
            (
                "[::1/a",
                NameError::UnclosedBracket {
                    registry: s("[::1"),
                },
            ),
            (
                "[::1]x/a",
                NameError::AfterBracket {
                    registry: s("[::1]x"),
                    rest: s("x"),
                },
            ),
            ("ho st/a", NameError::BadHost { host: s("ho st") }),
            ("h/", NameError::EmptyRepository),
            (&format!("h/{}", "a".repeat(256)), NameError::LongRepository),
            (
                "h/ok/Upper",
                NameError::BadComponent {
                    component: s("Upper"),
                },
            ),
        ];
        for (input, reason) in cases {
            let want = ReferenceError::Repo {
                input: input.to_string(),
                reason,
            };
            assert_eq!(input.parse::<RegistryRepo>(), Err(want), "{input:?}");
        }
    }

    #[test]
    fn image_ref_errors_say_which_part_is_wrong() {
        let image = |input: &str, reason| ReferenceError::Image {
            input: input.to_string(),
            reason,
        };
        let bad_tag = NameError::BadTag { tag: "-x".into() };
        assert_eq!(
            "h:5000/env:-x".parse::<ImageRef>(),
            Err(image("h:5000/env:-x", bad_tag))
        );
        let bad_digest = NameError::BadDigest(DigestParseError {
            input: "sha256:abc".into(),
        });
        assert_eq!(
            "h/env@sha256:abc".parse::<ImageRef>(),
            Err(image("h/env@sha256:abc", bad_digest.clone()))
        );
        assert_eq!(
            "sha256:abc".parse::<ManifestRef>(),
            Err(image("sha256:abc", bad_digest))
        );
        assert_eq!(
            "h_x/env:v1".parse::<ImageRef>(),
            Err(image(
                "h_x/env:v1",
                NameError::BadHost { host: "h_x".into() }
            ))
        );
        assert_eq!(
            "-x".parse::<Tag>(),
            Err(ReferenceError::Tag { input: "-x".into() })
        );
        let err = "h:5000/env:-x".parse::<ImageRef>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid image reference \"h:5000/env:-x\": invalid tag \"-x\": a tag is 1 to 128 of [A-Za-z0-9_.-] and does not start with '.' or '-' (expected REGISTRY/REPO[:TAG|@sha256:DIGEST])"
        );
    }
}
