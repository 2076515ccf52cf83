//! Wheels built from source: a package the resolver found only as an sdist, a local project
//! directory (`name @ file:///path/to/project`, `-e ./project`), or a git repository at the
//! commit the resolution chose (`name @ git+https://host/repo@branch`).
//!
//! uv builds each in an isolated build environment (`uv build --wheel`), with the same sources
//! as the resolution (so offline builds take their backend from `--find-links`) and the host's
//! CPython of the target's version. The wheel must then be one the target accepts: a native
//! extension built on an x86-64 host is refused for an arm64 target, naming the package.
//!
//! Built wheels go into the wheel cache by their sha256, like downloaded ones. For an sdist the
//! cache also records which wheel it became for a target (`built/<sdist sha256>/<target>.json`),
//! so building the same sdist again reuses that wheel and the lock (and the image) stays the
//! same even though wheel builds are rarely reproducible. A git commit names its content as an
//! sdist's sha256 does, so it is kept the same way (`built/<sha256 of commit and
//! subdirectory>/<target>.json`): a second build from the same commit is not built again.
//! A directory is built every time: its content has no digest to key a cache with; builds
//! get a fixed `SOURCE_DATE_EPOCH`, so a backend that honours it gives the same wheel (and
//! image) while the directory's files are the same.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::{Deserialize, Serialize};
use strata_oci::Digest;

use crate::credentials::IndexCredentials;
use crate::fetch::{FetchError, WheelCache};
use crate::lock::LockedWheel;
use crate::name::PackageName;
use crate::target::Target;
use crate::wheel_name::WheelFilename;

/// The time source builds stamp into wheels unless the user set `SOURCE_DATE_EPOCH`:
/// 1980-01-01, the earliest a zip can hold.
const SOURCE_DATE_EPOCH: &str = "315532800";

/// What a locked wheel was built from; recorded in the lock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuiltFrom {
    /// The sdist's file name, `directory` for a local project, or `git` for a repository.
    pub source: String,
    /// The sdist's sha256; none for a directory or a repository.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<Digest>,
    /// The git commit built (the one a branch or tag resolved to). The repository's URL is
    /// not recorded: like a wheel's URL it says where, not what, and stays out of the digest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    /// The project's directory inside the repository, if not its root.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subdirectory: Option<String>,
    /// Where the source was taken from (the sdist's URL, the repository's URL, the directory's
    /// `file://` URL), so `strata lock` can write an entry that builds again elsewhere. Like a
    /// wheel's URL it says where, not what: it is not part of the lock digest (see
    /// [`crate::lock::Lock::canonical_bytes`]) and is set anew on every build.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

/// A package the resolution can only install by building it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourcePackage {
    Sdist {
        name: PackageName,
        version: String,
        filename: String,
        url: String,
        sha256: Digest,
    },
    Directory {
        name: PackageName,
        path: PathBuf,
    },
    /// A git repository at a full commit id (uv resolved the branch or tag to it).
    Git {
        name: PackageName,
        version: String,
        /// The repository, without `git+`, user info or revision.
        url: String,
        commit: String,
        subdirectory: Option<String>,
    },
}

impl SourcePackage {
    pub fn name(&self) -> &PackageName {
        match self {
            SourcePackage::Sdist { name, .. }
            | SourcePackage::Directory { name, .. }
            | SourcePackage::Git { name, .. } => name,
        }
    }

    /// Where the source is: the sdist's URL, the repository's URL, or the directory's
    /// `file://` URL.
    pub fn url(&self) -> String {
        match self {
            SourcePackage::Sdist { url, .. } | SourcePackage::Git { url, .. } => url.clone(),
            SourcePackage::Directory { path, .. } => url::Url::from_directory_path(path)
                .map(String::from)
                .unwrap_or_else(|()| path.to_string_lossy().into_owned()),
        }
    }

    fn describe(&self) -> String {
        match self {
            SourcePackage::Sdist { name, version, .. } => format!("package {name}=={version}"),
            SourcePackage::Directory { name, path } => {
                format!("package {name} (directory {})", path.display())
            }
            SourcePackage::Git {
                name, url, commit, ..
            } => format!("package {name} (git {url} at {commit})"),
        }
    }

    fn source_name(&self) -> String {
        match self {
            SourcePackage::Sdist { filename, .. } => format!("sdist {filename}"),
            SourcePackage::Directory { path, .. } => format!("project {}", path.display()),
            SourcePackage::Git { commit, .. } => format!("git commit {commit}"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("{package} has no wheel for the target ({target}) and building a wheel from its {source_name} failed: {detail}; publish a wheel for the target, or make the build requirements available (an index or --find-links)")]
    Failed {
        package: String,
        source_name: String,
        target: String,
        detail: String,
    },
    #[error("{package} has no wheel for the target ({target}); the wheel built from its {source_name} on this host is {built}, which the target cannot install (a native extension is built for the machine that builds it); build the wheel on a machine of the target's platform and give it with --find-links")]
    NotForTarget {
        package: String,
        source_name: String,
        target: String,
        built: String,
    },
    #[error("{package}: building its {source_name} gave {built}, a wheel of another package")]
    OtherPackage {
        package: String,
        source_name: String,
        built: String,
    },
    #[error("could not check out commit {commit} of {url} for package {name}: {detail}")]
    Checkout {
        name: PackageName,
        url: String,
        commit: String,
        detail: String,
    },
    #[error("could not fetch the sdist of package {name}: {source}")]
    Fetch {
        name: PackageName,
        #[source]
        source: FetchError,
    },
    #[error("could not {action} for package {name}: {source}")]
    Io {
        name: PackageName,
        action: &'static str,
        source: io::Error,
    },
}

/// How to run `uv build`: the binary, its cache, the sources' arguments and the environment
/// (a private netrc) the resolution used.
pub(crate) struct Builder<'a> {
    pub uv: &'a Path,
    pub uv_cache: &'a Path,
    pub source_args: &'a [String],
    pub netrc: Option<&'a Path>,
    pub env_removed: &'a [&'a str],
    pub wheels: &'a WheelCache,
    pub credentials: &'a IndexCredentials,
    pub target: &'a Target,
}

impl Builder<'_> {
    /// The wheel for `package`: from the cache for an sdist built before for this target,
    /// else built now.
    pub fn wheel_for(&self, package: &SourcePackage) -> Result<LockedWheel, BuildError> {
        let record = self.record_path(package);
        if let Some(mut wheel) = record.as_deref().and_then(|r| self.recorded(r)) {
            tracing::debug!(name = %package.name(), wheel = %wheel.filename, "reusing the wheel built before");
            // The same content may have been fetched from elsewhere the first time.
            if let Some(built_from) = &mut wheel.built_from {
                built_from.url = Some(package.url());
            }
            return Ok(wheel);
        }
        let wheel = self.build(package)?;
        if let Some(record) = record {
            self.write_record(package.name(), &record, &wheel)?;
        }
        Ok(wheel)
    }

    /// `built/<sdist sha256>/<target>.json` for an sdist, `built/<sha256 of "git commit
    /// subdirectory">/<target>.json` for a git commit; none for a directory.
    fn record_path(&self, package: &SourcePackage) -> Option<PathBuf> {
        let key = match package {
            SourcePackage::Sdist { sha256, .. } => sha256.clone(),
            SourcePackage::Git {
                commit,
                subdirectory,
                ..
            } => Digest::of(
                format!("git {commit} {}", subdirectory.as_deref().unwrap_or("")).as_bytes(),
            ),
            SourcePackage::Directory { .. } => return None,
        };
        let target = format!(
            "cp{}{}-{}",
            self.target.python.major,
            self.target.python.minor,
            self.target.uv_python_platform()
        );
        Some(
            self.wheels
                .root()
                .join("built")
                .join(key.hex())
                .join(format!("{target}.json")),
        )
    }

    /// The recorded wheel, if the record reads and the wheel is still in the cache intact.
    fn recorded(&self, record: &Path) -> Option<LockedWheel> {
        let json = fs::read_to_string(record).ok()?;
        let wheel: LockedWheel = serde_json::from_str(&json).ok()?;
        let path = self.wheels.path_of(&wheel);
        let file = fs::File::open(&path).ok()?;
        let (digest, _) = Digest::of_reader(io::BufReader::new(file)).ok()?;
        (digest == wheel.sha256).then_some(wheel)
    }

    fn write_record(
        &self,
        name: &PackageName,
        record: &Path,
        wheel: &LockedWheel,
    ) -> Result<(), BuildError> {
        let io_err = |action| {
            move |source| BuildError::Io {
                name: name.clone(),
                action,
                source,
            }
        };
        let dir = record.parent().unwrap_or(self.wheels.root());
        fs::create_dir_all(dir).map_err(io_err("create the built-wheel record directory"))?;
        let tmp = tempfile::NamedTempFile::new_in(dir)
            .map_err(io_err("create the built-wheel record"))?;
        fs::write(
            tmp.path(),
            serde_json::to_vec_pretty(wheel).unwrap_or_default(),
        )
        .map_err(io_err("write the built-wheel record"))?;
        tmp.persist(record)
            .map_err(|e| io_err("store the built-wheel record")(e.error))?;
        Ok(())
    }

    fn build(&self, package: &SourcePackage) -> Result<LockedWheel, BuildError> {
        let name = package.name();
        let io_err = |action| {
            move |source| BuildError::Io {
                name: name.clone(),
                action,
                source,
            }
        };
        let tmp_root = self.wheels.root().join("tmp");
        fs::create_dir_all(&tmp_root).map_err(io_err("create the wheel cache's tmp directory"))?;
        // A git checkout lives here until the build is over.
        let checkout =
            tempfile::tempdir_in(&tmp_root).map_err(io_err("create a build directory"))?;
        let input = self.input_path(package, checkout.path())?;
        let out = tempfile::tempdir_in(&tmp_root).map_err(io_err("create a build directory"))?;
        let mut command = Command::new(self.uv);
        command
            .args([
                "build",
                "--wheel",
                "--quiet",
                "--no-config",
                "--no-python-downloads",
            ])
            .arg(&input)
            .arg("--out-dir")
            .arg(out.path())
            .args(["--python", &self.target.python.to_string()])
            .arg("--cache-dir")
            .arg(self.uv_cache)
            .args(self.source_args)
            .current_dir(out.path());
        for key in self.env_removed {
            command.env_remove(key);
        }
        // Backends that stamp times into a wheel (setuptools, flit, ...) take this one: a
        // directory, built again at every build, then gives the same wheel, lock and image
        // while its files are the same. A value the user set is theirs.
        if std::env::var_os("SOURCE_DATE_EPOCH").is_none() {
            command.env("SOURCE_DATE_EPOCH", SOURCE_DATE_EPOCH);
        }
        if let Some(netrc) = self.netrc {
            command.env("NETRC", netrc);
        }
        tracing::info!(name = %name, "building a wheel from source");
        let output = command.output().map_err(io_err("run uv build"))?;
        if !output.status.success() {
            let stderr = String::from_utf8_lossy(&output.stderr);
            // The sdist's place in the cache means nothing to the user; its name does.
            let stderr = match package {
                SourcePackage::Sdist { filename, .. } => {
                    stderr.replace(&*input.to_string_lossy(), filename)
                }
                SourcePackage::Directory { .. } | SourcePackage::Git { .. } => stderr.into_owned(),
            };
            return Err(self.failed(package, &stderr));
        }
        let built = single_wheel(out.path()).map_err(io_err("find the built wheel"))?;
        let filename = built
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default();
        self.check_wheel(package, &filename)?;
        self.keep(package, &built, filename)
    }

    /// The sdist, fetched into the wheel cache and verified, the project directory, or the
    /// git commit checked out in `checkout`.
    fn input_path(&self, package: &SourcePackage, checkout: &Path) -> Result<PathBuf, BuildError> {
        match package {
            SourcePackage::Directory { path, .. } => Ok(path.clone()),
            SourcePackage::Git {
                name,
                url,
                commit,
                subdirectory,
                ..
            } => {
                crate::git::checkout(url, commit, checkout).map_err(|detail| {
                    BuildError::Checkout {
                        name: name.clone(),
                        url: url.clone(),
                        commit: commit.clone(),
                        detail,
                    }
                })?;
                Ok(match subdirectory {
                    Some(sub) => checkout.join(sub),
                    None => checkout.to_path_buf(),
                })
            }
            SourcePackage::Sdist {
                name,
                version,
                filename,
                url,
                sha256,
            } => {
                let sdist = LockedWheel {
                    name: name.clone(),
                    version: version.clone(),
                    filename: filename.clone(),
                    sha256: sha256.clone(),
                    size: None,
                    url: url.clone(),
                    built_from: None,
                };
                self.wheels
                    .fetch(&sdist, self.credentials)
                    .map_err(|source| BuildError::Fetch {
                        name: name.clone(),
                        source,
                    })
            }
        }
    }

    fn failed(&self, package: &SourcePackage, stderr: &str) -> BuildError {
        // uv's last lines say what failed; the backend's traceback before them is noise here.
        let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
        let tail = lines[lines.len().saturating_sub(6)..].join(" / ");
        BuildError::Failed {
            package: package.describe(),
            source_name: package.source_name(),
            target: self.target.wheel_tags_summary(),
            detail: tail.split_whitespace().collect::<Vec<_>>().join(" "),
        }
    }

    fn check_wheel(&self, package: &SourcePackage, filename: &str) -> Result<(), BuildError> {
        let parsed = WheelFilename::parse(filename).map_err(|e| BuildError::Failed {
            package: package.describe(),
            source_name: package.source_name(),
            target: self.target.wheel_tags_summary(),
            detail: format!("uv built {filename:?}, which is not a wheel name: {e}"),
        })?;
        if &parsed.name != package.name() {
            return Err(BuildError::OtherPackage {
                package: package.describe(),
                source_name: package.source_name(),
                built: filename.to_string(),
            });
        }
        if self.target.wheel_priority(&parsed).is_none() {
            return Err(BuildError::NotForTarget {
                package: package.describe(),
                source_name: package.source_name(),
                target: self.target.wheel_tags_summary(),
                built: filename.to_string(),
            });
        }
        Ok(())
    }

    /// Moves the built wheel into the cache under its sha256.
    fn keep(
        &self,
        package: &SourcePackage,
        built: &Path,
        filename: String,
    ) -> Result<LockedWheel, BuildError> {
        let name = package.name();
        let io_err = |action| {
            move |source| BuildError::Io {
                name: name.clone(),
                action,
                source,
            }
        };
        let file = fs::File::open(built).map_err(io_err("open the built wheel"))?;
        let (sha256, size) =
            Digest::of_reader(io::BufReader::new(file)).map_err(io_err("hash the built wheel"))?;
        let version = WheelFilename::parse(&filename)
            .map(|w| w.version.clone())
            .unwrap_or_default();
        let (version, built_from) = match package {
            SourcePackage::Sdist {
                version,
                filename,
                sha256,
                ..
            } => (
                version.clone(),
                BuiltFrom {
                    source: filename.clone(),
                    sha256: Some(sha256.clone()),
                    commit: None,
                    subdirectory: None,
                    url: Some(package.url()),
                },
            ),
            SourcePackage::Directory { .. } => (
                version,
                BuiltFrom {
                    source: "directory".to_string(),
                    sha256: None,
                    commit: None,
                    subdirectory: None,
                    url: Some(package.url()),
                },
            ),
            SourcePackage::Git {
                version: locked,
                commit,
                subdirectory,
                ..
            } => (
                // A lock's git entry may leave the version to the build (PEP 751: optional).
                if locked.is_empty() {
                    version
                } else {
                    locked.clone()
                },
                BuiltFrom {
                    source: "git".to_string(),
                    sha256: None,
                    commit: Some(commit.clone()),
                    subdirectory: subdirectory.clone(),
                    url: Some(package.url()),
                },
            ),
        };
        let mut wheel = LockedWheel {
            name: name.clone(),
            version,
            filename,
            sha256,
            size: Some(size),
            url: String::new(),
            built_from: Some(built_from),
        };
        let dest = self.wheels.path_of(&wheel);
        let dir = dest.parent().unwrap_or(self.wheels.root());
        fs::create_dir_all(dir).map_err(io_err("create the cache entry directory"))?;
        fs::rename(built, &dest).map_err(io_err("move the built wheel into the cache"))?;
        wheel.url = url::Url::from_file_path(&dest)
            .map(String::from)
            .unwrap_or_else(|()| dest.to_string_lossy().into_owned());
        Ok(wheel)
    }
}

fn single_wheel(dir: &Path) -> io::Result<PathBuf> {
    let mut wheels = Vec::new();
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "whl") {
            wheels.push(path);
        }
    }
    match wheels.len() {
        1 => Ok(wheels.remove(0)),
        n => Err(io::Error::other(format!(
            "uv build left {n} wheels instead of one"
        ))),
    }
}
