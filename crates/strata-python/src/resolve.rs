//! Resolution with uv: requirements in, a [`Lock`] out.
//!
//! uv resolves for the target (`--python-version`, `--python-platform`), never for the machine
//! it runs on, so no matching local interpreter is needed. It writes a `pylock.toml` (PEP 751)
//! listing each package's wheels with URL and sha256; strata picks the best wheel per package
//! for the target with [`Target::wheel_priority`]. When the only sources are local find-links
//! directories, uv writes plain pins instead and strata picks and hashes the wheels itself
//! (see [`crate::local_wheels`]). Only when some package has no wheel is the
//! resolution run again with sdists allowed; those packages, and project directories, are then
//! built into wheels (with a matching local interpreter: see [`crate::sdist`]).

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Deserialize;
use strata_oci::Digest;

use crate::credentials::{redact_userinfo, take_userinfo, IndexCredentials};
use crate::fetch::WheelCache;
use crate::local_wheels;
use crate::lock::{Lock, LockedWheel};
use crate::name::PackageName;
use crate::sdist::{BuildError, Builder, SourcePackage};
use crate::spec::Sources;
use crate::target::Target;
use crate::wheel_name::WheelFilename;

/// Runs `uv pip compile`.
#[derive(Debug, Clone)]
pub struct Resolver {
    /// The uv binary: `$STRATA_UV`, else `uv` from `PATH`.
    pub uv: PathBuf,
    /// uv's own cache (`--cache-dir`).
    pub cache_dir: PathBuf,
    /// The wheel cache, where wheels built from sdists and project directories go, and the
    /// wheels of local find-links directories are copied as they are hashed. Without it
    /// strata installs wheels only and a package without one is an error.
    pub build_cache: Option<WheelCache>,
}

#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error("uv was not found (looked for {uv:?}); install it (`pip install uv`) or set STRATA_UV to its path")]
    UvNotFound { uv: PathBuf },
    #[error("package {name} was not found in the configured sources")]
    UnknownPackage { name: PackageName },
    #[error("the requirements conflict: {detail}")]
    Conflict { detail: String },
    #[error("{} has no wheel for the target ({target}) and no sdist to build one from", describe(name, version.as_deref()))]
    NoWheel {
        name: PackageName,
        version: Option<String>,
        target: String,
    },
    /// An index refused the credentials it was given, or asked for some and had none.
    #[error("the package index refused access ({detail}); give credentials in the index URL (`https://user:${{TOKEN}}@host/simple`), in ~/.netrc (or $NETRC), or in a registry auth file")]
    Unauthorized { detail: String },
    /// A `git+URL@ref` whose branch, tag or commit (or repository) could not be fetched.
    #[error("could not fetch {reference} of `{requirement}`: {detail}; check that the repository is reachable and has that branch, tag or commit")]
    GitFetch {
        requirement: String,
        reference: String,
        detail: String,
    },
    #[error("uv failed: {stderr}")]
    Uv { stderr: String },
    /// `--compile` needs a CPython of the target's version on this machine.
    #[error("no Python {version} was found on this machine ({detail}); --compile writes .pyc files with a CPython of the target's version: install one (`uv python install {version}`) or build without --compile")]
    NoHostPython { version: String, detail: String },
    /// A package without a wheel whose source could not become one for the target.
    /// Boxed: its messages are long, and every `Result` of a build carries this enum.
    #[error(transparent)]
    Build(Box<BuildError>),
    #[error("could not {action}: {source}")]
    Io {
        action: &'static str,
        source: io::Error,
    },
    #[error("uv wrote a pylock.toml strata cannot read: {reason}")]
    Pylock { reason: String },
    #[error("uv wrote a pylock.toml strata cannot read: {name}: {source}")]
    PylockWheel {
        name: PackageName,
        #[source]
        source: WheelLocationError,
    },
}

impl From<BuildError> for ResolveError {
    fn from(error: BuildError) -> ResolveError {
        ResolveError::Build(Box::new(error))
    }
}

/// A pylock.toml wheel entry that does not say where the wheel is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WheelLocationError {
    #[error("a wheel has neither url nor path")]
    Missing,
    /// A `path` that cannot become a `file://` URL: strata runs uv in a temporary directory,
    /// so a relative path means nothing.
    #[error("wheel path {path:?} is not absolute")]
    RelativePath { path: String },
}

fn describe(name: &PackageName, version: Option<&str>) -> String {
    match version {
        Some(v) => format!("package {name}=={v}"),
        None => format!("package {name}"),
    }
}

/// uv settings that would silently change what a resolution means; strata passes its own.
const UV_ENV_OVERRIDES: &[&str] = &[
    "UV_INDEX_URL",
    "UV_EXTRA_INDEX_URL",
    "UV_INDEX",
    "UV_DEFAULT_INDEX",
    "UV_FIND_LINKS",
    "UV_NO_INDEX",
    "UV_CONSTRAINT",
    "UV_OVERRIDE",
    "UV_BUILD_CONSTRAINT",
    "UV_EXCLUDE_NEWER",
    "UV_PRERELEASE",
    "UV_RESOLUTION",
    "UV_INDEX_STRATEGY",
    "UV_CONFIG_FILE",
    "UV_PYTHON",
    "UV_TORCH_BACKEND",
    "UV_NO_BINARY",
    "UV_NO_BUILD",
    "UV_OFFLINE",
];

impl Resolver {
    /// uv from `$STRATA_UV` or `PATH`, with its cache at `cache_dir`.
    pub fn new(cache_dir: PathBuf) -> Resolver {
        let uv = std::env::var_os("STRATA_UV")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("uv"));
        Resolver {
            uv,
            cache_dir,
            build_cache: None,
        }
    }

    /// Builds wheels from source when a package has none, keeping them in the wheel `cache`
    /// (see [`crate::sdist`]); local wheels are hashed as they are copied into it.
    pub fn building_into(mut self, cache: WheelCache) -> Resolver {
        self.build_cache = Some(cache);
        self
    }

    /// A CPython `version` of this machine, as uv finds one (`uv python find`), never
    /// downloaded.
    pub fn host_python(&self, version: crate::PythonVersion) -> Result<PathBuf, ResolveError> {
        let output = Command::new(&self.uv)
            .args(["python", "find", "--no-config", "--no-python-downloads"])
            .arg(format!("cpython@{version}"))
            .env_remove_all(UV_ENV_OVERRIDES)
            .output()
            .map_err(|e| match e.kind() {
                io::ErrorKind::NotFound => ResolveError::UvNotFound {
                    uv: self.uv.clone(),
                },
                _ => ResolveError::Io {
                    action: "run uv python find",
                    source: e,
                },
            })?;
        let found = String::from_utf8_lossy(&output.stdout).trim().to_string();
        if !output.status.success() || found.is_empty() {
            let stderr = String::from_utf8_lossy(&output.stderr);
            return Err(ResolveError::NoHostPython {
                version: version.to_string(),
                detail: stderr
                    .trim()
                    .trim_start_matches("error:")
                    .trim()
                    .to_string(),
            });
        }
        Ok(PathBuf::from(found))
    }

    /// Resolves `requirements_txt` (and `constraints_txt`, if not empty) for `target`.
    /// `credentials` reach uv only through a netrc file that uv alone reads (see
    /// [`PrivateNetrc`]), never its command line.
    pub fn resolve(
        &self,
        requirements_txt: &str,
        constraints_txt: &str,
        sources: &Sources,
        target: &Target,
        credentials: &IndexCredentials,
    ) -> Result<Lock, ResolveError> {
        let work = tempfile::tempdir().map_err(io_err("create a temporary directory"))?;
        let netrc = PrivateNetrc::write(credentials)?;
        std::fs::write(work.path().join("requirements.txt"), requirements_txt)
            .map_err(io_err("write requirements.txt"))?;
        let has_constraints = !constraints_txt.trim().is_empty();
        if has_constraints {
            std::fs::write(work.path().join("constraints.txt"), constraints_txt)
                .map_err(io_err("write constraints.txt"))?;
        }
        let compile = |binary_only| {
            let args = self.uv_args(
                sources,
                target,
                has_constraints,
                binary_only,
                Output::Pylock,
            );
            self.compile(work.path(), &args, Output::Pylock, netrc.as_ref(), target)
        };
        // Wheels only first, as always: a set that resolves to wheels resolves as it did. Only
        // when a package has none is it resolved again with sdists allowed, to build those.
        let first = match local_wheels::local_directories(sources) {
            Some(directories) => {
                let args = self.uv_args(sources, target, has_constraints, true, Output::Pins);
                match self.compile(work.path(), &args, Output::Pins, netrc.as_ref(), target) {
                    Ok(pins) => match self.lock_from_pins(&pins, &directories, target)? {
                        Some(lock) => return Ok(lock),
                        None => compile(true),
                    },
                    Err(e) => Err(e),
                }
            }
            None => compile(true),
        };
        let pylock = match first {
            Err(first @ ResolveError::NoWheel { .. }) if self.build_cache.is_some() => {
                compile(false).map_err(|second| match second {
                    ResolveError::NoWheel { .. } => first,
                    other => other,
                })?
            }
            other => other?,
        };
        let (wheels, sources_to_build) = plan_from_pylock(&pylock, target)?;
        self.build_into_lock(
            wheels,
            &sources_to_build,
            sources,
            target,
            credentials,
            netrc.as_ref(),
        )
    }

    /// The lock of `wheels` and of wheels built from `to_build` (a lock file's sdist, git and
    /// directory entries: see [`crate::sdist`]), without resolving. `sources` (the command
    /// line's indexes and find-links) are where the build backends come from.
    pub fn lock_with_builds(
        &self,
        wheels: Vec<LockedWheel>,
        to_build: &[SourcePackage],
        sources: &Sources,
        target: &Target,
        credentials: &IndexCredentials,
    ) -> Result<Lock, ResolveError> {
        if to_build.is_empty() {
            return Ok(Lock::new(*target, wheels));
        }
        let netrc = PrivateNetrc::write(credentials)?;
        self.build_into_lock(
            wheels,
            to_build,
            sources,
            target,
            credentials,
            netrc.as_ref(),
        )
    }

    fn build_into_lock(
        &self,
        mut wheels: Vec<LockedWheel>,
        to_build: &[SourcePackage],
        sources: &Sources,
        target: &Target,
        credentials: &IndexCredentials,
        netrc: Option<&PrivateNetrc>,
    ) -> Result<Lock, ResolveError> {
        if to_build.is_empty() {
            return Ok(Lock::new(*target, wheels));
        }
        let Some(build_cache) = &self.build_cache else {
            return Err(no_wheel(&to_build[0], target));
        };
        let source_args = source_args(sources);
        let uv_cache = PathBuf::from(absolute(&self.cache_dir.to_string_lossy()));
        let netrc_path = netrc.map(|n| n.path());
        let builder = Builder {
            uv: &self.uv,
            uv_cache: &uv_cache,
            source_args: &source_args,
            netrc: netrc_path.as_deref(),
            env_removed: UV_ENV_OVERRIDES,
            wheels: build_cache,
            credentials,
            target,
        };
        for package in to_build {
            wheels.push(builder.wheel_for(package)?);
        }
        Ok(Lock::new(*target, wheels))
    }

    /// The lock of uv's plain pins, each wheel found in the local `directories` and hashed
    /// here; `None` when the pins need what only a pylock.toml says (see [`local_wheels`]).
    fn lock_from_pins(
        &self,
        pins: &str,
        directories: &[PathBuf],
        target: &Target,
    ) -> Result<Option<Lock>, ResolveError> {
        let Some(pins) = local_wheels::parse_pins(pins) else {
            tracing::debug!("uv's pins are not all name==version; resolving to a pylock.toml");
            return Ok(None);
        };
        let jobs = std::thread::available_parallelism().map_or(1, |n| n.get());
        let cache = self.build_cache.as_ref();
        let wheels = local_wheels::locked_wheels(&pins, directories, target, jobs, cache)
            .map_err(io_err("hash the wheels of the find-links directories"))?;
        Ok(wheels.map(|wheels| Lock::new(*target, wheels)))
    }

    /// Runs `uv pip compile` in `work` and returns the file it wrote (see [`Output`]).
    fn compile(
        &self,
        work: &Path,
        args: &[String],
        written: Output,
        netrc: Option<&PrivateNetrc>,
        target: &Target,
    ) -> Result<String, ResolveError> {
        tracing::debug!(uv = %self.uv.display(), ?args, "resolving");
        let mut command = Command::new(&self.uv);
        command
            .args(args)
            // Relative input names keep temporary paths out of uv's messages.
            .current_dir(work)
            .env_remove_all(UV_ENV_OVERRIDES);
        if let Some(netrc) = netrc {
            command.env("NETRC", netrc.path());
        }
        let output = command.output().map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => ResolveError::UvNotFound {
                uv: self.uv.clone(),
            },
            _ => ResolveError::Io {
                action: "run uv",
                source: e,
            },
        })?;
        if !output.status.success() {
            let stderr = String::from_utf8_lossy(&output.stderr);
            let stderr = redact_userinfo(&hide_path(&stderr, work));
            return Err(classify_failure(&stderr, target));
        }
        std::fs::read_to_string(work.join(written.file_name())).map_err(io_err("read uv's output"))
    }

    fn uv_args(
        &self,
        sources: &Sources,
        target: &Target,
        has_constraints: bool,
        binary_only: bool,
        output: Output,
    ) -> Vec<String> {
        let format = match output {
            Output::Pylock => "pylock.toml",
            Output::Pins => "requirements.txt",
        };
        let mut args: Vec<String> = ["pip", "compile", "requirements.txt"]
            .into_iter()
            .chain(["--format", format, "-o", output.file_name()])
            .chain([
                "--no-header",
                "--no-annotate",
                "--quiet",
                // Neither a project's nor the user's uv.toml may change the result.
                "--no-config",
            ])
            .map(String::from)
            .collect();
        if binary_only {
            args.extend(["--only-binary".into(), ":all:".into()]);
        }
        args.extend(["--python-version".into(), target.python.to_string()]);
        args.extend(["--python-platform".into(), target.uv_python_platform()]);
        args.push("--cache-dir".into());
        args.push(absolute(&self.cache_dir.to_string_lossy()));
        if has_constraints {
            args.extend(["-c".into(), "constraints.txt".into()]);
        }
        args.extend(source_args(sources));
        args
    }
}

/// What `uv pip compile` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Output {
    /// pylock.toml: every wheel and sdist of each package, with URL and sha256 (uv hashes
    /// every local find-links wheel for it).
    Pylock,
    /// requirements.txt: `name==version` pins only, no hashes (see [`local_wheels`]).
    Pins,
}

impl Output {
    fn file_name(self) -> &'static str {
        match self {
            Output::Pylock => "pylock.toml",
            Output::Pins => "pins.txt",
        }
    }
}

/// uv's arguments for where packages come from; the same for resolving and building.
fn source_args(sources: &Sources) -> Vec<String> {
    let mut args = Vec::new();
    if let Some(index) = &sources.index_url {
        args.extend(["--index-url".into(), index.clone()]);
    }
    for extra in &sources.extra_index_urls {
        args.extend(["--extra-index-url".into(), extra.clone()]);
    }
    for links in sources.all_find_links() {
        let links = if links.contains("://") {
            links.clone()
        } else {
            absolute(links)
        };
        args.extend(["--find-links".into(), links]);
    }
    if sources.no_index {
        args.push("--no-index".into());
    }
    args
}

/// The netrc file uv reads credentials from (uv honours `NETRC`): mode 0600 in a directory
/// of its own with mode 0700, removed when dropped. A file rather than the command line or
/// a URL, so the secret shows in no process list, no log line and nothing uv writes.
/// When there are no credentials there is no file, and uv reads the user's own netrc.
struct PrivateNetrc {
    dir: tempfile::TempDir,
}

impl PrivateNetrc {
    fn write(credentials: &IndexCredentials) -> Result<Option<PrivateNetrc>, ResolveError> {
        use std::io::Write;
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        if credentials.is_empty() {
            return Ok(None);
        }
        let dir = tempfile::Builder::new()
            .prefix("strata-netrc-")
            .permissions(std::fs::Permissions::from_mode(0o700))
            .tempdir()
            .map_err(io_err("create a private directory for uv's netrc"))?;
        let netrc = PrivateNetrc { dir };
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(netrc.path())
            .map_err(io_err("create uv's netrc file"))?;
        file.write_all(credentials.to_netrc().as_bytes())
            .map_err(io_err("write uv's netrc file"))?;
        Ok(Some(netrc))
    }

    fn path(&self) -> PathBuf {
        self.dir.path().join("netrc")
    }
}

/// `Command::env_remove` for a list.
trait EnvRemoveAll {
    fn env_remove_all(&mut self, keys: &[&str]) -> &mut Self;
}

impl EnvRemoveAll for Command {
    fn env_remove_all(&mut self, keys: &[&str]) -> &mut Self {
        for key in keys {
            self.env_remove(key);
        }
        self
    }
}

/// uv runs in a temporary directory, so relative paths are made absolute against ours first.
fn absolute(path: &str) -> String {
    let p = Path::new(path);
    if p.is_absolute() {
        return path.to_string();
    }
    std::env::current_dir()
        .map(|cwd| cwd.join(p).to_string_lossy().into_owned())
        .unwrap_or_else(|_| path.to_string())
}

fn io_err(action: &'static str) -> impl FnOnce(io::Error) -> ResolveError {
    move |source| ResolveError::Io { action, source }
}

fn hide_path(text: &str, dir: &Path) -> String {
    let dir = dir.to_string_lossy();
    text.replace(&format!("{dir}/"), "")
        .replace(dir.as_ref(), ".")
}

// ---------------------------------------------------------------------------------------------
// Classifying uv's failures. uv 0.13 words them like:
//   Because nosuch was not found in the provided package locations and you require nosuch, …
//   Because nosuch was not found in the package registry and …
//   Because sdonly==1.0 has no usable wheels and …
//   Because all versions of sdonly have no usable wheels and …
//   Because x==1.0 has no wheels with a matching platform tag (e.g., `manylinux_2_28_x86_64`) …
//   Because you require beta==1.0 and beta==2.0, we can conclude that …

const NOT_FOUND: &[&str] = &[
    " was not found in the provided package locations",
    " was not found in the package registry",
    " was not found in the cache",
];
const NO_WHEEL: &[&str] = &[
    " has no usable wheels",
    " have no usable wheels",
    " has no wheels with a matching",
    " have no wheels with a matching",
];
const NO_SOLUTION: &str = "No solution found when resolving dependencies";

/// How uv 0.13 words an index that wants (other) credentials, e.g. `An index URL
/// (http://h/simple) could not be queried due to a lack of valid authentication credentials
/// (401 Unauthorized).`
const UNAUTHORIZED: &[&str] = &[
    "lack of valid authentication credentials",
    "401 Unauthorized",
    "403 Forbidden",
];

fn classify_failure(stderr: &str, target: &Target) -> ResolveError {
    if let Some(line) = stderr
        .lines()
        .find(|line| UNAUTHORIZED.iter().any(|n| line.contains(n)))
    {
        let detail = line.trim();
        let detail = detail.strip_prefix("hint:").unwrap_or(detail).trim();
        return ResolveError::Unauthorized {
            detail: detail.trim_end_matches('.').to_string(),
        };
    }
    if let Some(git) = git_failure(stderr) {
        return git;
    }
    // The earliest clause is the root cause uv reports; later ones follow from it.
    let not_found = earliest(stderr, NOT_FOUND);
    let no_wheel = earliest(stderr, NO_WHEEL);
    let by_position = [not_found.map(|p| (p, true)), no_wheel.map(|p| (p, false))];
    if let Some((pos, is_not_found)) = by_position.into_iter().flatten().min() {
        let subject = subject_before(&stderr[..pos]);
        if let Some((name, version)) = parse_subject(subject) {
            if is_not_found {
                return ResolveError::UnknownPackage { name };
            }
            return ResolveError::NoWheel {
                name,
                version,
                target: target.wheel_tags_summary(),
            };
        }
    }
    if stderr.contains(NO_SOLUTION) {
        return ResolveError::Conflict {
            detail: explanation(stderr),
        };
    }
    ResolveError::Uv {
        stderr: stderr.trim().to_string(),
    }
}

/// uv 0.13 on a git reference it cannot fetch:
///   error: Failed to download and build `edgegit @ git+file:///r.git@nosuch`
///     cause: Git operation failed
///     cause: failed to fetch into: …
///     cause: failed to fetch branch or tag `nosuch`
///     cause: process didn't exit successfully: `git fetch …` (exit status: 128)
///            --- stderr
///            fatal: couldn't find remote ref refs/tags/nosuch
fn git_failure(stderr: &str) -> Option<ResolveError> {
    if !stderr.contains("Git operation failed") {
        return None;
    }
    let quoted = |after: &str| {
        let start = stderr.find(after)? + after.len();
        let rest = stderr[start..].strip_prefix('`')?;
        rest.find('`').map(|end| rest[..end].to_string())
    };
    let requirement = quoted("Failed to download and build ")
        .or_else(|| quoted("Failed to build "))
        .unwrap_or_default();
    let reference = [
        "failed to fetch branch or tag ",
        "failed to fetch commit ",
        "failed to fetch tag ",
        "failed to fetch branch ",
    ]
    .iter()
    .find_map(|prefix| {
        quoted(prefix).map(|r| format!("{}`{r}`", prefix.trim_start_matches("failed to fetch ")))
    })
    .unwrap_or_else(|| "the git reference".to_string());
    let detail = stderr
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("fatal:"))
        .map(|l| l.trim_start_matches("fatal:").trim().trim_end_matches('.'))
        .collect::<Vec<_>>()
        .join("; ");
    let detail = if detail.is_empty() {
        "git failed".to_string()
    } else {
        detail
    };
    Some(ResolveError::GitFetch {
        requirement,
        reference,
        detail,
    })
}

fn earliest(text: &str, needles: &[&str]) -> Option<usize> {
    needles.iter().filter_map(|n| text.find(n)).min()
}

/// The words between the last `Because`/`and`/`,` and a clause's verb: `sdonly==1.0`,
/// `all versions of sdonly`, `missingdep`.
fn subject_before(prefix: &str) -> &str {
    let line = prefix.rsplit('\n').next().unwrap_or(prefix);
    let start = ["Because ", " and ", ", "]
        .iter()
        .filter_map(|sep| line.rfind(sep).map(|i| i + sep.len()))
        .max()
        .unwrap_or(0);
    line[start..].trim()
}

/// `sdonly==1.0` -> (sdonly, Some(1.0)); `all versions of sdonly` / `sdonly>1` -> (sdonly, None).
fn parse_subject(subject: &str) -> Option<(PackageName, Option<String>)> {
    let subject = subject.strip_prefix("all versions of ").unwrap_or(subject);
    let end = subject
        .find(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
        .unwrap_or(subject.len());
    let name = PackageName::new(&subject[..end]).ok()?;
    let version = subject[end..]
        .strip_prefix("==")
        .filter(|v| !v.is_empty() && !v.contains(['*', ',', ' ']))
        .map(str::to_string);
    Some((name, version))
}

/// uv's `cause:` text without the `error:` banner, hints or indentation.
fn explanation(stderr: &str) -> String {
    let mut lines = Vec::new();
    for line in stderr.lines() {
        let line = line.trim();
        if line.starts_with("error:") || line.is_empty() {
            continue;
        }
        if line.starts_with("hint:") {
            break;
        }
        lines.push(line.strip_prefix("cause:").unwrap_or(line).trim());
    }
    lines.join(" ")
}

// ---------------------------------------------------------------------------------------------
// Reading pylock.toml (PEP 751): only the fields strata needs.

#[derive(Deserialize)]
struct Pylock {
    #[serde(default)]
    packages: Vec<PylockPackage>,
}

#[derive(Deserialize)]
struct PylockPackage {
    name: String,
    version: Option<String>,
    #[serde(default)]
    wheels: Vec<PylockWheel>,
    /// The same fields as a wheel's.
    sdist: Option<PylockWheel>,
    /// A direct reference (`name @ URL`): a wheel or an sdist, by its file name.
    archive: Option<PylockWheel>,
    directory: Option<PylockDirectory>,
    /// A git reference (`name @ git+URL@ref`), at the commit uv resolved it to.
    vcs: Option<PylockVcs>,
}

#[derive(Deserialize)]
#[serde(rename_all = "kebab-case")]
struct PylockVcs {
    #[serde(rename = "type")]
    kind: String,
    url: Option<String>,
    commit_id: Option<String>,
    subdirectory: Option<String>,
}

#[derive(Deserialize)]
struct PylockDirectory {
    path: String,
}

#[derive(Deserialize)]
struct PylockWheel {
    name: Option<String>,
    url: Option<String>,
    path: Option<String>,
    size: Option<u64>,
    #[serde(default)]
    hashes: BTreeMap<String, String>,
}

fn pylock_err(reason: String) -> ResolveError {
    ResolveError::Pylock { reason }
}

/// Turns uv's pylock.toml into a [`Lock`], choosing one wheel per package; a package without
/// one (only an sdist, or a project directory) is an error here.
#[cfg(test)]
pub fn lock_from_pylock(pylock: &str, target: &Target) -> Result<Lock, ResolveError> {
    let (wheels, sources) = plan_from_pylock(pylock, target)?;
    if let Some(source) = sources.first() {
        return Err(no_wheel(source, target));
    }
    Ok(Lock::new(*target, wheels))
}

fn no_wheel(source: &SourcePackage, target: &Target) -> ResolveError {
    let version = match source {
        SourcePackage::Sdist { version, .. } | SourcePackage::Git { version, .. } => {
            Some(version.clone())
        }
        SourcePackage::Directory { .. } => None,
    };
    ResolveError::NoWheel {
        name: source.name().clone(),
        version,
        target: target.wheel_tags_summary(),
    }
}

/// The best wheel of each package, and the packages that have to be built: those with only
/// an sdist for the target, and project directories.
fn plan_from_pylock(
    pylock: &str,
    target: &Target,
) -> Result<(Vec<LockedWheel>, Vec<SourcePackage>), ResolveError> {
    let parsed: Pylock = toml::from_str(pylock).map_err(|e| pylock_err(e.to_string()))?;
    let mut wheels = Vec::new();
    let mut sources = Vec::new();
    for package in &parsed.packages {
        let name = PackageName::new(&package.name)
            .map_err(|e| pylock_err(format!("package name: {e}")))?;
        if let Some(directory) = &package.directory {
            let path = PathBuf::from(&directory.path);
            if !path.is_absolute() {
                return Err(ResolveError::PylockWheel {
                    name,
                    source: WheelLocationError::RelativePath {
                        path: directory.path.clone(),
                    },
                });
            }
            sources.push(SourcePackage::Directory { name, path });
            continue;
        }
        let version = package
            .version
            .clone()
            .ok_or_else(|| pylock_err(format!("package {name} has no version")))?;
        if let Some(vcs) = &package.vcs {
            sources.push(git_of(vcs, name, version)?);
            continue;
        }
        if let Some(archive) = &package.archive {
            sources.extend(archive_of(archive, &name, &version, target, &mut wheels)?);
            continue;
        }
        match choose_wheel(&package.wheels, &name, &version, target)? {
            Some(wheel) => wheels.push(wheel),
            None => match &package.sdist {
                Some(sdist) => sources.push(sdist_of(sdist, name, version)?),
                None => {
                    return Err(ResolveError::NoWheel {
                        name,
                        version: Some(version),
                        target: target.wheel_tags_summary(),
                    })
                }
            },
        }
    }
    Ok((wheels, sources))
}

/// A direct reference's wheel (added to `wheels`, if the target accepts it) or its sdist.
fn archive_of(
    archive: &PylockWheel,
    name: &PackageName,
    version: &str,
    target: &Target,
    wheels: &mut Vec<LockedWheel>,
) -> Result<Option<SourcePackage>, ResolveError> {
    let url = wheel_url(archive).map_err(|source| ResolveError::PylockWheel {
        name: name.clone(),
        source,
    })?;
    let is_wheel = wheel_filename(archive, &url).is_some_and(|f| f.ends_with(".whl"));
    if !is_wheel {
        return sdist_of(archive, name.clone(), version.to_string()).map(Some);
    }
    match choose_wheel(std::slice::from_ref(archive), name, version, target)? {
        Some(wheel) => {
            wheels.push(wheel);
            Ok(None)
        }
        None => Err(ResolveError::NoWheel {
            name: name.clone(),
            version: Some(version.to_string()),
            target: target.wheel_tags_summary(),
        }),
    }
}

/// A git package at the commit uv resolved its branch or tag to.
fn git_of(
    vcs: &PylockVcs,
    name: PackageName,
    version: String,
) -> Result<SourcePackage, ResolveError> {
    if vcs.kind != "git" {
        return Err(pylock_err(format!(
            "{name}: version control {:?} is not git",
            vcs.kind
        )));
    }
    let url = vcs
        .url
        .as_deref()
        .ok_or_else(|| pylock_err(format!("{name}: a git source without url")))?;
    let commit = vcs
        .commit_id
        .clone()
        .filter(|c| crate::git::is_commit_id(c))
        .ok_or_else(|| pylock_err(format!("{name}: a git source without a full commit-id")))?;
    Ok(SourcePackage::Git {
        name,
        version,
        url: without_userinfo(url),
        commit,
        subdirectory: vcs.subdirectory.clone().filter(|s| !s.is_empty()),
    })
}

fn sdist_of(
    sdist: &PylockWheel,
    name: PackageName,
    version: String,
) -> Result<SourcePackage, ResolveError> {
    let url = wheel_url(sdist).map_err(|source| ResolveError::PylockWheel {
        name: name.clone(),
        source,
    })?;
    let filename = wheel_filename(sdist, &url)
        .ok_or_else(|| pylock_err(format!("{name}: no file name in sdist URL {url}")))?;
    let sha256 = sdist
        .hashes
        .get("sha256")
        .ok_or_else(|| pylock_err(format!("sdist {filename} has no sha256")))?;
    let sha256 = Digest::from_hex(&sha256.to_ascii_lowercase())
        .map_err(|e| pylock_err(format!("sdist {filename}: {e}")))?;
    Ok(SourcePackage::Sdist {
        name,
        version,
        filename,
        url,
        sha256,
    })
}

fn choose_wheel(
    candidates: &[PylockWheel],
    name: &PackageName,
    version: &str,
    target: &Target,
) -> Result<Option<LockedWheel>, ResolveError> {
    let name = name.clone();
    let version = version.to_string();
    let mut best: Option<(u32, &PylockWheel, String, String)> = None;
    for wheel in candidates {
        let url = wheel_url(wheel).map_err(|source| ResolveError::PylockWheel {
            name: name.clone(),
            source,
        })?;
        let filename = wheel_filename(wheel, &url)
            .ok_or_else(|| pylock_err(format!("{name}: no file name in wheel URL {url}")))?;
        let Ok(parsed) = WheelFilename::parse(&filename) else {
            tracing::debug!(%filename, "skipping a file whose name is not a wheel name");
            continue;
        };
        let Some(priority) = target.wheel_priority(&parsed) else {
            continue;
        };
        // Ties go to the first listed wheel, so the choice is stable.
        if best.as_ref().is_none_or(|(p, ..)| priority > *p) {
            best = Some((priority, wheel, filename, url));
        }
    }
    let Some((_, wheel, filename, url)) = best else {
        return Ok(None);
    };
    let sha256 = wheel
        .hashes
        .get("sha256")
        .ok_or_else(|| pylock_err(format!("wheel {filename} has no sha256")))?;
    let sha256 = Digest::from_hex(&sha256.to_ascii_lowercase())
        .map_err(|e| pylock_err(format!("wheel {filename}: {e}")))?;
    Ok(Some(LockedWheel {
        name,
        version,
        filename,
        sha256,
        size: wheel.size,
        url,
        built_from: None,
    }))
}

/// The wheel's absolute URL: `url` as given (without user info, which an index page may
/// carry and which must not enter the lock), or a `file://` URL for an absolute `path`.
fn wheel_url(wheel: &PylockWheel) -> Result<String, WheelLocationError> {
    if let Some(url) = &wheel.url {
        return Ok(without_userinfo(url));
    }
    let Some(path) = &wheel.path else {
        return Err(WheelLocationError::Missing);
    };
    url::Url::from_file_path(path)
        .map(String::from)
        .map_err(|()| WheelLocationError::RelativePath { path: path.clone() })
}

pub(crate) fn without_userinfo(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(parsed) if parsed.username().is_empty() && parsed.password().is_none() => {
            url.to_string()
        }
        Ok(mut parsed) => {
            take_userinfo(&mut parsed);
            parsed.to_string()
        }
        Err(_) => redact_userinfo(url),
    }
}

/// `name` if given, else the last segment of the URL, percent-decoded.
fn wheel_filename(wheel: &PylockWheel, url: &str) -> Option<String> {
    if let Some(name) = &wheel.name {
        return Some(name.clone());
    }
    crate::formats::url_filename(url)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::target::PythonVersion;

    fn target() -> Target {
        Target::new(PythonVersion::new(3, 11), "linux/amd64".parse().unwrap())
    }

    #[test]
    fn classifies_unknown_packages() {
        let stderr = "error: No solution found when resolving dependencies\n  cause: Because missingdep was not found in the provided package locations and all versions of delta depend on missingdep, we can conclude that all versions of delta cannot be used.\n";
        match classify_failure(stderr, &target()) {
            ResolveError::UnknownPackage { name } => assert_eq!(name.as_str(), "missingdep"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn classifies_missing_wheels() {
        let cases = [
            ("Because sdonly==1.0 has no usable wheels and only sdonly==1.0 is available", Some("1.0")),
            ("Because all versions of sdonly have no usable wheels and you require sdonly", None),
            ("Because sdonly==2.0 has no wheels with a matching platform tag (e.g., `manylinux_2_28_x86_64`) and", Some("2.0")),
            ("Because all versions of eps depend on x and sdonly==1.0 has no usable wheels", Some("1.0")),
        ];
        for (cause, want) in cases {
            let stderr = format!("error: {NO_SOLUTION}\n  cause: {cause}\n");
            match classify_failure(&stderr, &target()) {
                ResolveError::NoWheel {
                    name,
                    version,
                    target,
                } => {
                    assert_eq!(name.as_str(), "sdonly", "{cause}");
                    assert_eq!(version.as_deref(), want, "{cause}");
                    assert_eq!(target, "cp311 manylinux_2_28 x86_64");
                }
                other => panic!("{cause}: {other:?}"),
            }
        }
    }

    #[test]
    fn classifies_conflicts_and_other_failures() {
        let stderr = format!("error: {NO_SOLUTION}\n  cause: Because you require beta==1.0 and beta==2.0, we can\n         conclude that your requirements are unsatisfiable.\n\nhint: something\n");
        match classify_failure(&stderr, &target()) {
            ResolveError::Conflict { detail } => assert_eq!(
                detail,
                "Because you require beta==1.0 and beta==2.0, we can conclude that your requirements are unsatisfiable."
            ),
            other => panic!("{other:?}"),
        }
        let other = classify_failure(
            "error: Failed to read `--find-links` directory: /x\n",
            &target(),
        );
        assert!(matches!(other, ResolveError::Uv { .. }), "{other:?}");
    }

    #[test]
    fn classifies_git_references_that_cannot_be_fetched() {
        let stderr = "error: Failed to download and build `edgegit @ git+file:///r.git@nosuch`\n  cause: Git operation failed\n  cause: failed to fetch into: uvc/git-v2/db/3e4abcc3b2cac992\n  cause: failed to fetch branch or tag `nosuch`\n  cause: process didn't exit successfully: `/usr/bin/git fetch` (exit status: 128)\n         --- stderr\n         fatal: couldn't find remote ref refs/tags/nosuch\n";
        let err = classify_failure(stderr, &target());
        assert_eq!(
            err.to_string(),
            "could not fetch branch or tag `nosuch` of `edgegit @ git+file:///r.git@nosuch`: couldn't find remote ref refs/tags/nosuch; check that the repository is reachable and has that branch, tag or commit"
        );
    }

    #[test]
    fn git_sources_are_planned_at_their_commit() {
        let pylock = r#"
[[packages]]
name = "edgegit"
version = "1.0"
vcs = { type = "git", url = "https://u:secret@h/r.git", requested-revision = "main", commit-id = "2d783652074b3c9516b7af40e4ef6a5f63fe7cc1", subdirectory = "py" }
"#;
        let (wheels, sources) = plan_from_pylock(pylock, &target()).unwrap();
        assert!(wheels.is_empty());
        match &sources[..] {
            [SourcePackage::Git {
                name,
                version,
                url,
                commit,
                subdirectory,
            }] => {
                assert_eq!(name.as_str(), "edgegit");
                assert_eq!(version, "1.0");
                assert!(!url.contains("secret"), "{url}");
                assert_eq!(commit, "2d783652074b3c9516b7af40e4ef6a5f63fe7cc1");
                assert_eq!(subdirectory.as_deref(), Some("py"));
            }
            other => panic!("{other:?}"),
        }
        let short = pylock.replace("2d783652074b3c9516b7af40e4ef6a5f63fe7cc1", "main");
        assert!(plan_from_pylock(&short, &target()).is_err());
    }

    #[test]
    fn picks_the_best_compatible_wheel() {
        let pylock = r#"
lock-version = "1.0"
[[packages]]
name = "Gamma"
version = "1.0"
wheels = [
    { url = "file:///w/gamma-1.0-py3-none-any.whl", hashes = { sha256 = "aa00000000000000000000000000000000000000000000000000000000000000" } },
    { url = "file:///w/gamma-1.0-cp311-cp311-manylinux_2_17_aarch64.whl", hashes = { sha256 = "bb00000000000000000000000000000000000000000000000000000000000000" } },
    { url = "file:///w%20x/gamma-1.0-cp311-cp311-manylinux_2_17_x86_64.whl", size = 7, hashes = { sha256 = "cc00000000000000000000000000000000000000000000000000000000000000" } },
]
"#;
        let lock = lock_from_pylock(pylock, &target()).unwrap();
        let w = &lock.wheels[0];
        assert_eq!(w.name.as_str(), "gamma");
        assert_eq!(
            w.filename,
            "gamma-1.0-cp311-cp311-manylinux_2_17_x86_64.whl"
        );
        assert_eq!(w.size, Some(7));
        assert!(w.sha256.hex().starts_with("cc"));
        assert_eq!(
            w.url,
            "file:///w%20x/gamma-1.0-cp311-cp311-manylinux_2_17_x86_64.whl"
        );
    }

    #[test]
    fn a_wheel_without_a_location_is_named() {
        let lock = |wheel: &str| {
            let pylock =
                format!("[[packages]]\nname = \"Gamma\"\nversion = \"1.0\"\nwheels = [{wheel}]\n");
            lock_from_pylock(&pylock, &target()).unwrap_err()
        };
        let err = lock("{ name = \"gamma-1.0-py3-none-any.whl\" }");
        assert!(
            matches!(&err, ResolveError::PylockWheel { name, source: WheelLocationError::Missing } if name.as_str() == "gamma"),
            "{err:?}"
        );
        let err = lock("{ path = \"w/gamma-1.0-py3-none-any.whl\" }");
        assert!(
            matches!(&err, ResolveError::PylockWheel { source: WheelLocationError::RelativePath { path }, .. } if path == "w/gamma-1.0-py3-none-any.whl"),
            "{err:?}"
        );
        assert_eq!(
            err.to_string(),
            "uv wrote a pylock.toml strata cannot read: gamma: wheel path \"w/gamma-1.0-py3-none-any.whl\" is not absolute"
        );
    }

    #[test]
    fn sdists_directories_and_archives_are_planned() {
        let pylock = r#"
[[packages]]
name = "sdonly"
version = "1.0"
wheels = [{ url = "file:///w/sdonly-1.0-cp311-cp311-manylinux_2_17_aarch64.whl", hashes = { sha256 = "bb00000000000000000000000000000000000000000000000000000000000000" } }]
sdist = { url = "file:///w/sdonly-1.0.tar.gz", hashes = { sha256 = "cc00000000000000000000000000000000000000000000000000000000000000" } }

[[packages]]
name = "proj"
directory = { path = "/src/proj" }

[[packages]]
name = "direct"
version = "2.0"
archive = { path = "/d/direct-2.0-py3-none-any.whl", hashes = { sha256 = "dd00000000000000000000000000000000000000000000000000000000000000" } }

[[packages]]
name = "remote-src"
version = "3.0"
archive = { url = "https://h/remote_src-3.0.tar.gz", hashes = { sha256 = "ee00000000000000000000000000000000000000000000000000000000000000" } }
"#;
        let (wheels, sources) = plan_from_pylock(pylock, &target()).unwrap();
        assert_eq!(wheels.len(), 1);
        assert_eq!(wheels[0].filename, "direct-2.0-py3-none-any.whl");
        assert_eq!(wheels[0].url, "file:///d/direct-2.0-py3-none-any.whl");
        assert!(wheels[0].sha256.hex().starts_with("dd"));
        let names: Vec<(&str, String)> = sources
            .iter()
            .map(|s| match s {
                SourcePackage::Sdist { name, filename, .. } => (name.as_str(), filename.clone()),
                SourcePackage::Directory { name, path } => {
                    (name.as_str(), path.display().to_string())
                }
                SourcePackage::Git { name, url, .. } => (name.as_str(), url.clone()),
            })
            .collect();
        assert_eq!(
            names,
            [
                ("sdonly", "sdonly-1.0.tar.gz".to_string()),
                ("proj", "/src/proj".to_string()),
                ("remote-src", "remote_src-3.0.tar.gz".to_string()),
            ]
        );
        // Without building, each is a package without a wheel.
        let err = lock_from_pylock(pylock, &target()).unwrap_err();
        assert!(
            matches!(&err, ResolveError::NoWheel { name, .. } if name.as_str() == "sdonly"),
            "{err:?}"
        );
    }

    #[test]
    fn a_direct_wheel_for_another_platform_is_named() {
        let pylock = r#"
[[packages]]
name = "armonly"
version = "1.0"
archive = { path = "/d/armonly-1.0-cp311-cp311-manylinux_2_17_aarch64.whl", hashes = { sha256 = "dd00000000000000000000000000000000000000000000000000000000000000" } }
"#;
        let err = plan_from_pylock(pylock, &target()).unwrap_err();
        assert!(
            matches!(&err, ResolveError::NoWheel { name, .. } if name.as_str() == "armonly"),
            "{err:?}"
        );
    }

    #[test]
    fn a_package_without_a_compatible_wheel_is_named() {
        let pylock = r#"
[[packages]]
name = "armonly"
version = "1.0"
wheels = [{ url = "file:///w/armonly-1.0-cp311-cp311-manylinux_2_17_aarch64.whl", hashes = { sha256 = "bb00000000000000000000000000000000000000000000000000000000000000" } }]
"#;
        let err = lock_from_pylock(pylock, &target()).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("armonly==1.0") && msg.contains("cp311 manylinux_2_28 x86_64"),
            "{msg}"
        );
    }
}
