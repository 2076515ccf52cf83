//! Pre-resolved environments (pylock.toml, uv.lock): the packages a lock file names, each
//! with the wheels it lists, turned into a [`Lock`] for one target without resolving again.
//! A package the lock gives as an sdist, a git commit or a local directory (and no wheel the
//! target accepts) is a [`SourcePackage`] to build, as the requirements path builds one.

use crate::IndexCredentials;
use std::fs::File;
use std::path::{Component, Path, PathBuf};

use strata_oci::Digest;

use super::error::FormatError;
use super::RequiresPython;
use crate::lock::{Lock, LockedWheel};
use crate::name::PackageName;
use crate::sdist::SourcePackage;
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
    /// Credentials the lock's URLs carried (`https://USER:TOKEN@host/...`), taken out of
    /// them when the lock is read: used for the downloads, never stored.
    pub credentials: IndexCredentials,
}

/// One package of a lock file.
#[derive(Debug, Clone)]
pub struct PinnedPackage {
    pub name: PackageName,
    pub version: String,
    /// A PEP 508 marker: the package is installed only where it holds.
    pub marker: Option<String>,
    pub wheels: Vec<PinnedWheel>,
    /// What to build when none of `wheels` fits the target: the lock's sdist, git commit or
    /// directory.
    pub source: Option<SourcePackage>,
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
    /// Takes the user info out of every wheel and sdist URL of the lock into
    /// [`PinnedSet::credentials`] (the first credential per origin wins).
    pub(super) fn take_credentials(mut self) -> PinnedSet {
        let mut credentials = std::mem::take(&mut self.credentials);
        let mut take = |url: &mut String| {
            let Ok(mut parsed) = url::Url::parse(url) else {
                *url = crate::resolve::without_userinfo(url);
                return;
            };
            if let Some((origin, credential)) = crate::credentials::take_userinfo(&mut parsed) {
                credentials.insert_if_absent(origin, credential);
                *url = parsed.to_string();
            }
        };
        for package in &mut self.packages {
            for wheel in &mut package.wheels {
                if let WheelLocation::Url(url) = &mut wheel.location {
                    take(url);
                }
            }
            if let Some(SourcePackage::Sdist { url, .. }) = &mut package.source {
                take(url);
            }
        }
        self.credentials = credentials;
        self
    }

    /// One wheel per package whose marker holds for `target`, the best the target accepts;
    /// a package that has to be built first is an error here (see [`PinnedSet::plan_for`]).
    pub fn lock_for(&self, target: &Target) -> Result<Lock, FormatError> {
        let (wheels, to_build) = self.plan_for(target)?;
        if let Some(source) = to_build.first() {
            return Err(self.package_error(
                source.name(),
                "has to be built from source, which reading a lock does not do".into(),
            ));
        }
        Ok(Lock::new(*target, wheels))
    }

    /// The wheels of the packages whose marker holds for `target` (the best the target
    /// accepts), and the packages to build from the lock's sources instead.
    pub fn plan_for(
        &self,
        target: &Target,
    ) -> Result<(Vec<LockedWheel>, Vec<SourcePackage>), FormatError> {
        if let Some(requires) = &self.requires_python {
            requires.check(target.python)?;
        }
        let env = target.marker_environment();
        self.check_environments(&env, target)?;
        let mut wheels = Vec::new();
        let mut to_build = Vec::new();
        for package in &self.packages {
            if let Some(marker) = &package.marker {
                let holds = evaluate_marker(marker, &env, &[]).map_err(|e| {
                    self.package_error(&package.name, format!("marker {marker:?}: {e}"))
                })?;
                if !holds {
                    continue;
                }
            }
            match (self.choose(package, target)?, &package.source) {
                (Some(wheel), _) => wheels.push(wheel),
                (None, Some(source)) => to_build.push(source.clone()),
                (None, None) => {
                    return Err(FormatError::NoWheel {
                        file: self.origin.clone(),
                        package: package.name.to_string(),
                        version: package.version.clone(),
                        target: target.wheel_tags_summary(),
                    })
                }
            }
        }
        Ok((wheels, to_build))
    }

    /// The best wheel the target accepts, if the lock lists one.
    fn choose(
        &self,
        package: &PinnedPackage,
        target: &Target,
    ) -> Result<Option<LockedWheel>, FormatError> {
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
            return Ok(None);
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
        Ok(Some(LockedWheel {
            name: package.name.clone(),
            version: package.version.clone(),
            filename: wheel.filename.clone(),
            sha256,
            size,
            url,
            built_from: None,
        }))
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
        // The user info stays until `PinnedSet::take_credentials`, which the reader calls
        // before anything else sees the URL.
        return Some((WheelLocation::Url(url.to_string()), filename));
    }
    let path = Path::new(path?);
    let filename = path.file_name()?.to_string_lossy().into_owned();
    // `dir` may be relative (the `-r` argument's directory).
    Some((WheelLocation::Path(absolute_under(dir, path)?), filename))
}

/// An sdist a lock names, to build: one fetched from a URL must carry its sha256 (the fetch
/// checks the bytes against it); a local one without a hash is hashed now.
pub(super) fn sdist_source(
    name: &PackageName,
    version: Option<&str>,
    location: WheelLocation,
    filename: String,
    sha256: Option<Digest>,
) -> Result<SourcePackage, String> {
    let version = version
        .filter(|v| !v.is_empty())
        .ok_or("an sdist without a version")?
        .to_string();
    let (url, sha256) = match location {
        WheelLocation::Url(url) => {
            let sha256 = sha256.ok_or_else(|| {
                format!("sdist {filename} has no sha256 hash; an sdist fetched from a URL must be pinned by its hash")
            })?;
            (url, sha256)
        }
        WheelLocation::Path(path) => {
            let url = url::Url::from_file_path(&path)
                .map(String::from)
                .map_err(|()| format!("sdist path {} is not absolute", path.display()))?;
            let sha256 = match sha256 {
                Some(sha256) => sha256,
                None => {
                    let file = File::open(&path)
                        .map_err(|e| format!("cannot read sdist {}: {e}", path.display()))?;
                    Digest::of_reader(file)
                        .map_err(|e| format!("cannot read sdist {}: {e}", path.display()))?
                        .0
                }
            };
            (url, sha256)
        }
    };
    Ok(SourcePackage::Sdist {
        name: name.clone(),
        version,
        filename,
        url,
        sha256,
    })
}

/// A git repository at the commit the lock names: never a branch or tag, which may have
/// moved since the lock was written.
pub(super) fn git_source(
    name: &PackageName,
    version: Option<&str>,
    url: &str,
    commit: Option<&str>,
    subdirectory: Option<&str>,
) -> Result<SourcePackage, String> {
    let commit = commit
        .filter(|c| crate::git::is_commit_id(c))
        .ok_or_else(|| {
            format!(
                "git source {} names no full commit id; a lock must pin a git dependency to its commit: lock again",
                crate::resolve::without_userinfo(url)
            )
        })?;
    let url = url.strip_prefix("git+").unwrap_or(url);
    if url.starts_with('-') || !url.contains("://") {
        return Err(format!("git source {url:?} is not a repository URL"));
    }
    Ok(SourcePackage::Git {
        name: name.clone(),
        version: version.unwrap_or_default().to_string(),
        url: crate::resolve::without_userinfo(url),
        commit: commit.to_string(),
        subdirectory: subdirectory.filter(|s| !s.is_empty()).map(str::to_string),
    })
}

/// A local project directory (relative to the lock's directory `dir`), built every time.
pub(super) fn directory_source(
    name: &PackageName,
    dir: &Path,
    path: &str,
) -> Result<SourcePackage, String> {
    let absolute = absolute_under(dir, Path::new(path))
        .ok_or_else(|| format!("directory {path:?} cannot be made absolute"))?;
    if !absolute.is_dir() {
        return Err(format!("directory {} does not exist", absolute.display()));
    }
    Ok(SourcePackage::Directory {
        name: name.clone(),
        path: absolute,
    })
}

/// `path` against `dir` (itself against the current directory), `..` folded lexically (as
/// the lock's writer meant it).
fn absolute_under(dir: &Path, path: &Path) -> Option<PathBuf> {
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
    Some(absolute)
}
