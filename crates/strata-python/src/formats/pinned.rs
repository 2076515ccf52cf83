//! Pre-resolved environments (pylock.toml, uv.lock): the packages a lock file names, each
//! with the wheels it lists, turned into a [`Lock`] for one target without resolving again.

use std::fs::File;
use std::path::{Component, Path, PathBuf};

use strata_oci::Digest;

use super::error::FormatError;
use super::RequiresPython;
use crate::lock::{Lock, LockedWheel};
use crate::name::PackageName;
use crate::spec::evaluate_marker;
use crate::target::Target;
use crate::wheel_name::WheelFilename;

/// What a lock file pins.
#[derive(Debug, Clone)]
pub struct PinnedSet {
    /// The lock file, for errors and relative paths.
    pub origin: PathBuf,
    pub requires_python: Option<RequiresPython>,
    /// PEP 751 `environments`: markers of which one must hold for the target (none: any).
    pub environments: Vec<String>,
    pub packages: Vec<PinnedPackage>,
}

/// One package of a lock file.
#[derive(Debug, Clone)]
pub struct PinnedPackage {
    pub name: PackageName,
    pub version: String,
    /// A PEP 508 marker: the package is installed only where it holds.
    pub marker: Option<String>,
    pub wheels: Vec<PinnedWheel>,
}

/// One wheel a lock file lists for a package.
#[derive(Debug, Clone)]
pub struct PinnedWheel {
    pub filename: String,
    pub location: WheelLocation,
    /// Required for a URL; a local file without one is hashed when the lock is read.
    pub sha256: Option<Digest>,
    pub size: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WheelLocation {
    Url(String),
    /// Absolute (relative paths are resolved against the lock file's directory on reading).
    Path(PathBuf),
}

impl PinnedSet {
    /// One wheel per package whose marker holds for `target`, the best the target accepts.
    pub fn lock_for(&self, target: &Target) -> Result<Lock, FormatError> {
        if let Some(requires) = &self.requires_python {
            requires.check(target.python)?;
        }
        let env = target.marker_environment();
        self.check_environments(&env, target)?;
        let mut wheels = Vec::new();
        for package in &self.packages {
            if let Some(marker) = &package.marker {
                let holds = evaluate_marker(marker, &env, &[]).map_err(|e| {
                    self.package_error(&package.name, format!("marker {marker:?}: {e}"))
                })?;
                if !holds {
                    continue;
                }
            }
            wheels.push(self.choose(package, target)?);
        }
        Ok(Lock::new(*target, wheels))
    }

    fn choose(&self, package: &PinnedPackage, target: &Target) -> Result<LockedWheel, FormatError> {
        let mut best: Option<(u32, &PinnedWheel)> = None;
        for wheel in &package.wheels {
            let Ok(parsed) = WheelFilename::parse(&wheel.filename) else {
                return Err(self.package_error(
                    &package.name,
                    format!("{:?} is not a wheel file name", wheel.filename),
                ));
            };
            let Some(priority) = target.wheel_priority(&parsed) else {
                continue;
            };
            // Ties go to the first listed wheel, so the choice is stable.
            if best.is_none_or(|(p, _)| priority > p) {
                best = Some((priority, wheel));
            }
        }
        let Some((_, wheel)) = best else {
            return Err(FormatError::NoWheel {
                file: self.origin.clone(),
                package: package.name.to_string(),
                version: package.version.clone(),
                target: target.wheel_tags_summary(),
            });
        };
        let (url, sha256, size) = match &wheel.location {
            WheelLocation::Url(url) => {
                let Some(sha256) = wheel.sha256.clone() else {
                    return Err(self.package_error(
                        &package.name,
                        format!("wheel {} has no sha256 hash; a wheel fetched from a URL must be pinned by its hash", wheel.filename),
                    ));
                };
                (url.clone(), sha256, wheel.size)
            }
            WheelLocation::Path(path) => self.local_wheel(package, wheel, path)?,
        };
        Ok(LockedWheel {
            name: package.name.clone(),
            version: package.version.clone(),
            filename: wheel.filename.clone(),
            sha256,
            size,
            url,
            built_from: None,
        })
    }

    /// A wheel on this machine: its `file://` URL, and its sha256 (hashed now if the lock
    /// gives none; the fetch checks it against the bytes again).
    fn local_wheel(
        &self,
        package: &PinnedPackage,
        wheel: &PinnedWheel,
        path: &Path,
    ) -> Result<(String, Digest, Option<u64>), FormatError> {
        let url = url::Url::from_file_path(path)
            .map(String::from)
            .map_err(|()| {
                self.package_error(
                    &package.name,
                    format!("wheel path {} is not absolute", path.display()),
                )
            })?;
        if let Some(sha256) = &wheel.sha256 {
            return Ok((url, sha256.clone(), wheel.size));
        }
        let file = File::open(path).map_err(|e| {
            self.package_error(
                &package.name,
                format!("cannot read wheel {}: {e}", path.display()),
            )
        })?;
        let (sha256, size) = Digest::of_reader(file).map_err(|e| {
            self.package_error(
                &package.name,
                format!("cannot read wheel {}: {e}", path.display()),
            )
        })?;
        Ok((url, sha256, Some(size)))
    }

    /// A lock made for other environments is refused rather than half installed.
    fn check_environments(
        &self,
        env: &crate::MarkerEnvironment,
        target: &Target,
    ) -> Result<(), FormatError> {
        if self.environments.is_empty() {
            return Ok(());
        }
        for marker in &self.environments {
            let holds = evaluate_marker(marker, env, &[]).map_err(|e| FormatError::Invalid {
                file: self.origin.clone(),
                key: "environments".into(),
                message: format!("{marker:?}: {e}"),
            })?;
            if holds {
                return Ok(());
            }
        }
        Err(FormatError::Invalid {
            file: self.origin.clone(),
            key: "environments".into(),
            message: format!(
                "the lock is for {}, not the target ({}); lock again for it (`strata lock`)",
                self.environments.join(" | "),
                target.wheel_tags_summary()
            ),
        })
    }

    fn package_error(&self, package: &PackageName, message: String) -> FormatError {
        FormatError::Package {
            file: self.origin.clone(),
            package: package.to_string(),
            message,
        }
    }
}

/// `sha256:<hex>` or bare hex (pylock's `hashes.sha256`) as a digest.
pub(super) fn parse_sha256(text: &str) -> Result<Digest, String> {
    let hex = text.strip_prefix("sha256:").unwrap_or(text);
    Digest::from_hex(&hex.to_ascii_lowercase()).map_err(|e| format!("sha256 {text:?}: {e}"))
}

/// The last segment of a URL, percent-decoded: a wheel's file name.
pub(crate) fn url_filename(url: &str) -> Option<String> {
    let parsed = url::Url::parse(url).ok()?;
    let last = parsed.path_segments()?.next_back()?;
    let decoded = percent_encoding::percent_decode_str(last)
        .decode_utf8()
        .ok()?;
    (!decoded.is_empty()).then(|| decoded.into_owned())
}

/// A wheel location from a lock file's `url` or `path` (relative to `dir`).
pub(super) fn location(
    url: Option<&str>,
    path: Option<&str>,
    dir: &Path,
) -> Option<(WheelLocation, String)> {
    if let Some(url) = url {
        let filename = url_filename(url)?;
        if let Ok(parsed) = url::Url::parse(url) {
            if parsed.scheme() == "file" {
                if let Ok(path) = parsed.to_file_path() {
                    return Some((WheelLocation::Path(path), filename));
                }
            }
        }
        return Some((
            WheelLocation::Url(crate::resolve::without_userinfo(url)),
            filename,
        ));
    }
    let path = Path::new(path?);
    let filename = path.file_name()?.to_string_lossy().into_owned();
    // `dir` may be relative (the `-r` argument's directory): made absolute against the
    // current directory, `..` folded lexically (as the lock's writer meant it).
    let joined = std::path::absolute(dir.join(path)).ok()?;
    let mut absolute = PathBuf::new();
    for part in joined.components() {
        match part {
            Component::ParentDir => {
                absolute.pop();
            }
            Component::CurDir => {}
            other => absolute.push(other.as_os_str()),
        }
    }
    Some((WheelLocation::Path(absolute), filename))
}
