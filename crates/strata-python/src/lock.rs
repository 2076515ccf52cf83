//! A resolved environment: exactly one wheel per package, for one target.
//!
//! The lock has two serialisations. [`Lock::canonical_bytes`] is what the lock digest is the
//! hash of: it leaves out URLs, paths and index hosts, because the same wheels fetched from a
//! different mirror or a `--find-links` directory at another path are the same environment.
//! [`Lock::to_json`] keeps the URLs, so a stored lock can be fetched again later.

use std::fmt;

use serde::{Deserialize, Serialize};
use strata_oci::Digest;

use crate::name::PackageName;
use crate::sdist::BuiltFrom;
use crate::target::Target;

/// Bumped whenever the canonical form changes meaning, so old and new digests never collide.
const CANONICAL_FORMAT: u32 = 1;

/// One wheel chosen for the environment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockedWheel {
    pub name: PackageName,
    pub version: String,
    /// The wheel's file name, e.g. `numpy-2.0.0-cp311-cp311-manylinux_2_17_x86_64.whl`.
    pub filename: String,
    pub sha256: Digest,
    /// Size in bytes, when the index told us.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// Where to fetch it: `https://…` or `file:///…` (for a wheel strata built, its place in
    /// the wheel cache).
    pub url: String,
    /// The sdist or project directory strata built this wheel from, if it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub built_from: Option<BuiltFrom>,
}

/// The resolved wheels for a target, sorted by package name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lock {
    pub target: Target,
    pub wheels: Vec<LockedWheel>,
}

/// sha256 of a lock's canonical bytes.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct LockDigest(pub Digest);

impl fmt::Display for LockDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("stored lock is not valid JSON for a lock: {0}")]
    Json(#[from] serde_json::Error),
    #[error("the lock is in canonical format {found}; this strata reads format {supported}")]
    Format { found: u32, supported: u32 },
}

/// The machine-independent view of a wheel: no URL, no size (an index may or may not report
/// it; the digest already pins the bytes).
#[derive(Serialize)]
struct CanonicalWheel<'a> {
    name: &'a PackageName,
    version: &'a str,
    filename: &'a str,
    sha256: &'a Digest,
    /// Only for built wheels, so the digests of locks without them are what they were.
    #[serde(skip_serializing_if = "Option::is_none")]
    built_from: Option<BuiltFrom>,
}

/// What a wheel was built from, without where the source was found.
fn canonical_built_from(built_from: &BuiltFrom) -> BuiltFrom {
    BuiltFrom {
        url: None,
        ..built_from.clone()
    }
}

#[derive(Serialize)]
struct CanonicalLock<'a> {
    format: u32,
    target: &'a Target,
    wheels: Vec<CanonicalWheel<'a>>,
}

/// [`CanonicalLock`] read back (from an image's env layer): nothing more is accepted.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReadCanonicalLock {
    format: u32,
    target: Target,
    wheels: Vec<ReadCanonicalWheel>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReadCanonicalWheel {
    name: PackageName,
    version: String,
    filename: String,
    sha256: Digest,
    #[serde(default)]
    built_from: Option<BuiltFrom>,
}

impl Lock {
    /// Builds a lock, sorting the wheels by package name (then file name) so the order of
    /// resolution never shows in the result.
    pub fn new(target: Target, mut wheels: Vec<LockedWheel>) -> Lock {
        wheels.sort_by(|a, b| (&a.name, &a.filename).cmp(&(&b.name, &b.filename)));
        Lock { target, wheels }
    }

    /// Deterministic JSON of the target and each wheel's name, version, file name and sha256.
    pub fn canonical_bytes(&self) -> Vec<u8> {
        let canonical = CanonicalLock {
            format: CANONICAL_FORMAT,
            target: &self.target,
            wheels: self
                .wheels
                .iter()
                .map(|w| CanonicalWheel {
                    name: &w.name,
                    version: &w.version,
                    filename: &w.filename,
                    sha256: &w.sha256,
                    built_from: w.built_from.as_ref().map(canonical_built_from),
                })
                .collect(),
        };
        // Serialising plain structs of strings and numbers to a Vec cannot fail.
        serde_json::to_vec(&canonical).unwrap_or_default()
    }

    pub fn digest(&self) -> LockDigest {
        LockDigest(Digest::of(&self.canonical_bytes()))
    }

    /// The full lock, URLs included, for the local database.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// A lock from its canonical bytes (the `strata-lock.json` of an image). Those carry no
    /// URLs or sizes: every wheel's `url` is empty, for the caller to say where it lies.
    /// The caller compares [`Lock::digest`] with the digest it expects.
    pub fn from_canonical_bytes(bytes: &[u8]) -> Result<Lock, LockError> {
        let read: ReadCanonicalLock = serde_json::from_slice(bytes)?;
        if read.format != CANONICAL_FORMAT {
            return Err(LockError::Format {
                found: read.format,
                supported: CANONICAL_FORMAT,
            });
        }
        let wheels = read
            .wheels
            .into_iter()
            .map(|w| LockedWheel {
                name: w.name,
                version: w.version,
                filename: w.filename,
                sha256: w.sha256,
                size: None,
                url: String::new(),
                built_from: w.built_from,
            })
            .collect();
        Ok(Lock::new(read.target, wheels))
    }

    pub fn from_json(json: &str) -> Result<Lock, LockError> {
        let lock: Lock = serde_json::from_str(json)?;
        Ok(Lock::new(lock.target, lock.wheels))
    }

    /// `name==version` for every package, in lock order.
    pub fn packages(&self) -> Vec<String> {
        self.wheels
            .iter()
            .map(|w| format!("{}=={}", w.name, w.version))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::target::PythonVersion;

    fn wheel(name: &str, version: &str, url: &str) -> LockedWheel {
        let filename = format!("{name}-{version}-py3-none-any.whl");
        LockedWheel {
            name: PackageName::new(name).unwrap(),
            version: version.to_string(),
            sha256: Digest::of(filename.as_bytes()),
            filename,
            size: None,
            url: url.to_string(),
            built_from: None,
        }
    }

    fn target() -> Target {
        Target::new(PythonVersion::new(3, 11), "linux/amd64".parse().unwrap())
    }

    #[test]
    fn wheels_are_sorted_by_name() {
        let lock = Lock::new(
            target(),
            vec![
                wheel("zeta", "1", "file:///a"),
                wheel("alpha", "2", "file:///a"),
            ],
        );
        assert_eq!(lock.packages(), ["alpha==2", "zeta==1"]);
    }

    #[test]
    fn digest_ignores_urls_sizes_and_order() {
        let a = Lock::new(
            target(),
            vec![
                wheel("b", "1", "file:///x/b.whl"),
                wheel("a", "1", "file:///x/a.whl"),
            ],
        );
        let mut moved = vec![
            wheel("a", "1", "https://mirror.example/a.whl"),
            wheel("b", "1", "file:///elsewhere/b.whl"),
        ];
        moved[0].size = Some(123);
        let b = Lock::new(target(), moved);
        assert_eq!(a.digest(), b.digest());
        let bytes = String::from_utf8(a.canonical_bytes()).unwrap();
        assert!(!bytes.contains("file://"), "{bytes}");
    }

    #[test]
    fn digest_changes_with_meaning() {
        let base = Lock::new(target(), vec![wheel("a", "1", "file:///a")]);
        let other_version = Lock::new(target(), vec![wheel("a", "2", "file:///a")]);
        let mut other_target = base.clone();
        other_target.target.python = PythonVersion::new(3, 12);
        let mut other_hash = base.clone();
        other_hash.wheels[0].sha256 = Digest::of(b"other");
        for other in [other_version, other_target, other_hash] {
            assert_ne!(base.digest(), other.digest());
        }
    }

    #[test]
    fn json_round_trip_keeps_urls() {
        let mut w = wheel("a", "1", "file:///x/a-1-py3-none-any.whl");
        w.size = Some(42);
        let lock = Lock::new(target(), vec![w]);
        let json = lock.to_json();
        assert!(json.contains("file:///x/a-1-py3-none-any.whl"));
        let back = Lock::from_json(&json).unwrap();
        assert_eq!(back, lock);
        assert_eq!(back.digest(), lock.digest());
        assert!(Lock::from_json("{").is_err());
    }

    #[test]
    fn canonical_bytes_read_back_to_the_same_lock_without_urls() {
        let mut w = wheel("a", "1", "file:///x/a-1-py3-none-any.whl");
        w.size = Some(42);
        let lock = Lock::new(target(), vec![w, wheel("b", "2", "https://h/b.whl")]);
        let back = Lock::from_canonical_bytes(&lock.canonical_bytes()).unwrap();
        assert_eq!(back.digest(), lock.digest());
        assert_eq!(back.canonical_bytes(), lock.canonical_bytes());
        assert!(back
            .wheels
            .iter()
            .all(|w| w.url.is_empty() && w.size.is_none()));
        let newer = String::from_utf8(lock.canonical_bytes())
            .unwrap()
            .replace("\"format\":1", "\"format\":9");
        assert!(matches!(
            Lock::from_canonical_bytes(newer.as_bytes()),
            Err(LockError::Format { found: 9, .. })
        ));
        assert!(Lock::from_canonical_bytes(lock.to_json().as_bytes()).is_err());
    }

    #[test]
    fn where_a_source_was_found_is_not_part_of_the_digest() {
        let built = |url: &str| {
            let mut w = wheel("a", "1", "file:///cache/a.whl");
            w.built_from = Some(BuiltFrom {
                source: "git".into(),
                sha256: None,
                commit: Some("c".repeat(40)),
                subdirectory: None,
                url: Some(url.into()),
            });
            Lock::new(target(), vec![w])
        };
        let here = built("https://host/repo.git");
        let there = built("file:///mirror/repo.git");
        assert_eq!(here.digest(), there.digest());
        let bytes = String::from_utf8(here.canonical_bytes()).unwrap();
        assert!(!bytes.contains("host/repo"), "{bytes}");
        // The full lock keeps it, for `strata lock`.
        assert!(here.to_json().contains("https://host/repo.git"));
    }

    #[test]
    fn lock_digest_serialises_as_a_plain_digest() {
        let lock = Lock::new(target(), vec![]);
        let d = lock.digest();
        let json = serde_json::to_string(&d).unwrap();
        assert_eq!(json, format!("\"{d}\""));
        assert!(d.to_string().starts_with("sha256:"));
    }
}
