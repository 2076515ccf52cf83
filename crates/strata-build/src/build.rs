//! The build pipeline: requirements → canonical spec → (index) → lock → (index) → one layer
//! per wheel → image → store. Nothing is visible in the store until every step succeeded:
//! layers are staged in temporary files and committed together at the end, and the index
//! is written in one transaction after the blobs it points at.

use std::path::PathBuf;

use strata_index::EnvRecord;
use strata_index::{check_blob, mark_verified, BlobState};
use strata_index::{Lease, LeaseOwner};
use strata_oci::{BlobDescriptor, Digest};
use strata_oci::{Manifest, ManifestDocument};

use crate::additions::Additions;
use crate::base::{BaseImage, BaseRef, Selector};
use crate::credentials::{self, CredentialFiles};
use crate::error::{BuildError, OptionError};
use crate::explain::Explanation;
use crate::home::Home;
use crate::image;
use crate::layers::hold;
use crate::layers::RemoteLayers;
use crate::lock_image::{image_from_lock, LockImage, LockInputs};
use crate::progress::Progress;
use crate::remote_cache::{
    self, DamagedBlob, LocalRecord, Lookups, RegistryCache, RegistryImage, Wanted,
};
use strata_install::LayerCompression;
use strata_python::IndexCredentials;
use strata_python::Lock;
use strata_python::{
    normalise_find_links, read_env, EnvFile, EnvSpec, Selection, Sources, SpecDigest,
};
use strata_python::{Platform, PythonVersion, Target};

/// What the user asked to build.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    /// The environment file (requirements*.txt, pyproject.toml, pylock.toml, uv.lock,
    /// environment.yml) or a project directory holding one.
    pub requirements: PathBuf,
    /// The extras and dependency groups of a pyproject.toml or uv.lock to install.
    pub selection: Selection,
    pub base: BaseRef,
    pub python: Option<PythonVersion>,
    pub platform: Platform,
    /// Extra `--find-links` from the command line (added to the file's own).
    pub find_links: Vec<String>,
    pub no_index: bool,
    /// Threads for fetching wheels and building layers.
    pub jobs: usize,
    /// The environment's name, for retention per name; default: the requirements file stem.
    pub name: Option<String>,
    /// Most layers the image may have, base and env layer included.
    pub layer_limit: usize,
    /// How the layers strata writes are compressed (base layers stay as they are).
    pub compression: LayerCompression,
    /// Write unchecked-hash `.pyc` files into each package's layer (`--compile`): another
    /// image than without, with its own layers.
    pub compile: bool,
    /// Registries to take the image from before building it (`--push`, `--cache-from`).
    pub registry_cache: RegistryCache,
    /// Resolve again even when the spec was built before (`--refresh`): a spec with ranges
    /// is otherwise answered by the lock it got the first time. A new lock builds a new image
    /// under the spec's tag; the old image loses the tag and is left to GC.
    pub refresh: bool,
}

impl BuildOptions {
    /// The `--name`, else the file's stem; for a project directory, or a file whose name only
    /// says its format (`pyproject.toml`, `uv.lock`, ...), the project directory's name.
    pub fn env_name(&self) -> String {
        if let Some(name) = &self.name {
            return name.clone();
        }
        let path = std::path::absolute(&self.requirements).unwrap_or_default();
        let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned());
        let generic = [
            "pyproject",
            "uv",
            "pylock",
            "poetry",
            "Pipfile",
            "environment",
        ];
        let project = match stem.as_deref() {
            Some(s) if !self.requirements.is_dir() && !generic.contains(&s) => return s.into(),
            _ if self.requirements.is_dir() => Some(path.as_path()),
            _ => path.parent(),
        };
        project
            .and_then(|p| p.file_name())
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default()
    }
}

/// How much of the build the cache answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CacheOutcome {
    /// The spec was built before: no resolution, no wheel read.
    Hit,
    /// The spec resolved to a lock built before: no wheel read.
    LockHit,
    /// The spec's tag was in a registry of the cache: no resolution, no wheel read.
    RegistryHit,
    /// The spec resolved to a lock whose image was in a registry of the cache: tagged there
    /// for this spec, nothing built or uploaded.
    RegistryLockHit,
    Miss,
}

impl CacheOutcome {
    /// The name `--json` and the documentation use (`registry-hit`).
    pub fn as_str(self) -> &'static str {
        match self {
            CacheOutcome::Hit => "hit",
            CacheOutcome::LockHit => "lock-hit",
            CacheOutcome::RegistryHit => "registry-hit",
            CacheOutcome::RegistryLockHit => "registry-lock-hit",
            CacheOutcome::Miss => "miss",
        }
    }
}

impl std::fmt::Display for CacheOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One layer of the result, base layers included.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LayerReport {
    pub digest: Digest,
    pub size: u64,
    pub packages: Vec<String>,
    /// Not made by this build: in the store before it, or downloaded from a registry.
    pub reused: bool,
    /// `REGISTRY/REPO` the layer was downloaded from (a registry's layer index).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub registry: Option<String>,
}

/// The result of a build.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Built {
    pub digest: Digest,
    pub tag: String,
    pub spec_digest: SpecDigest,
    pub lock_digest: Digest,
    pub cache: CacheOutcome,
    pub layers: Vec<LayerReport>,
    pub media_type: String,
    pub size: u64,
    /// Where the image is when a registry answered (registry hit or lock hit).
    pub registry: Option<RegistryImage>,
    /// What went wrong without failing the build (a cache registry that did not answer).
    pub warnings: Vec<String>,
    /// Blobs a registry of the cache served damaged (the build made those layers itself):
    /// a push to that registry is refused.
    pub damaged_blobs: Vec<DamagedBlob>,
}

/// The identity of what is built from `env`: the spec's digest for gzip layers (the images
/// of earlier versions keep their identity), a digest of it and the compression otherwise,
/// since a zstd image is another image than the gzip one of the same spec.
pub fn spec_identity(env: &EnvSpec, compression: LayerCompression, compile: bool) -> SpecDigest {
    let spec = env.digest();
    let mut identity = match compression {
        LayerCompression::Gzip => spec,
        other => SpecDigest(Digest::of(
            format!("{}\ncompression={}", spec.0, other.as_str()).as_bytes(),
        )),
    };
    if compile {
        identity = SpecDigest(Digest::of(
            format!("{}\npyc=unchecked-hash", identity.0).as_bytes(),
        ));
    }
    identity
}

/// `env-` and the first 16 hex digits of the spec digest.
pub fn tag_for(spec: &SpecDigest) -> String {
    format!("env-{}", spec.0.short(16))
}

pub fn build(
    home: &Home,
    options: &BuildOptions,
    progress: &dyn Progress,
) -> Result<Built, BuildError> {
    build_checked(home, options, progress, || Ok(()))
}

/// Like [`build`], calling `before_work` once it is clear the cache cannot answer (before
/// resolution): the CLI checks there that a push target answers, so that a miss fails
/// before it writes anything and a hit costs no extra request.
pub fn build_checked(
    home: &Home,
    options: &BuildOptions,
    progress: &dyn Progress,
    before_work: impl FnOnce() -> Result<(), BuildError>,
) -> Result<Built, BuildError> {
    let mut lookups = Lookups::default();
    let mut built = build_with(home, options, progress, before_work, &mut lookups)?;
    built.warnings = lookups.warnings;
    built.damaged_blobs = lookups.damaged;
    Ok(built)
}

fn build_with(
    home: &Home,
    options: &BuildOptions,
    progress: &dyn Progress,
    before_work: impl FnOnce() -> Result<(), BuildError>,
    lookups: &mut Lookups,
) -> Result<Built, BuildError> {
    progress.stage("reading requirements");
    let Prepared {
        env,
        base,
        credentials: from_urls,
        lock: pinned,
        warnings,
    } = prepare_with_credentials(home, options)?;
    lookups.warnings.extend(warnings);
    let spec_digest = spec_identity(&env, options.compression, options.compile);
    // Checked first: a hit must not hide a limit that cannot be met.
    let budget = layer_budget(options.layer_limit, base.layers().len())?;
    if !options.refresh {
        if let Some(built) = cache_hit(home, &spec_digest, options.layer_limit, progress)? {
            return Ok(built);
        }
    }
    let spec_json = String::from_utf8_lossy(&env.canonical_bytes()).into_owned();
    let name = options.env_name();
    let remote = RemoteKey {
        options,
        base: &base,
        spec: &spec_digest,
        spec_json: &spec_json,
        name: &name,
    };
    if !options.refresh {
        if let Some(built) = registry_spec_hit(home, &remote, progress, lookups)? {
            return Ok(built);
        }
    }
    before_work()?;
    // Everything this build reuses or writes is held against a concurrent GC until the
    // image is tagged (a root of its own); released on any error by the guard.
    let lease = home.index.lease("build", LeaseOwner::current_process())?;
    let files = CredentialFiles::from_env();
    let mut credentials = credentials::for_spec(from_urls, &env, &files);
    // The base's blobs the store lacks are copied (and verified) meanwhile, to be committed
    // with the image; a build that ends otherwise drops the copies.
    let (lock, base_blobs) = std::thread::scope(|s| {
        let store = &home.store;
        let staging = s.spawn(|| {
            crate::background::lower_priority();
            base.stage_missing(store)
        });
        let lock = match pinned {
            Some(lock) => Ok(lock),
            None => {
                progress.stage("resolving");
                base.find_interpreter_during(&home.index, env.target.python, || {
                    resolve(home, &env, &credentials, &options.requirements)
                })
            }
        };
        let staged = staging
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        (lock, staged)
    });
    let lock = lock?;
    let base_blobs = base_blobs?;
    let lock_digest = lock.digest().0;
    let hit = LockHitKey {
        spec: &spec_digest,
        spec_json: &spec_json,
        name: &name,
        limit: options.layer_limit,
        compression: options.compression,
        compile: options.compile,
    };
    if let Some(built) = lock_hit(home, &lease, &base, &lock, &hit)? {
        return Ok(built);
    }
    if let Some(built) = registry_lock_hit(home, &remote, &lock, progress, lookups)? {
        return Ok(built);
    }
    credentials::for_lock(&mut credentials, &lock, &files);
    let LockImage {
        layers,
        env_staged,
        assembled,
    } = image_from_lock(
        home,
        &lease,
        &LockInputs {
            base: &base,
            lock: &lock,
            credentials: &credentials,
            compression: options.compression,
            compile: options.compile,
            jobs: options.jobs,
            budget,
        },
        RemoteLayers {
            cache: &options.registry_cache,
            lookups,
        },
        progress,
    )?;

    // Commit: base blobs, layers, config, manifest, then the index, then the tag. Until the
    // index has the build, a failure takes back out what this build added.
    let manifest_bytes = assembled.manifest.to_bytes();
    let manifest_digest = Digest::of(&manifest_bytes);
    let mut held = crate::publish::image_digests(&manifest_digest, &assembled.manifest);
    held.extend([base.digest.clone(), base.manifest.config.digest.clone()]);
    hold(home, &lease, &held)?;
    let mut reused: Vec<bool> = base
        .layers()
        .iter()
        .map(|l| home.store.has_blob(&l.digest))
        .collect();
    let mut additions = Additions::new(home, &lease);
    additions.expect(base.blob_digests());
    // Another build may have committed some of the base's blobs meanwhile: then ours are
    // the same bytes, and committing them leaves those in place.
    let mut staged = base_blobs;
    let mut records = Vec::new();
    let mut from_registries = Vec::new();
    for built in layers {
        reused.push(built.reused());
        from_registries.push(built.from_registry.clone());
        staged.extend(built.staged);
        records.push((built.key, built.added.layer));
    }
    reused.push(false);
    staged.push(env_staged);
    staged.push(home.store.stage_bytes(&assembled.config)?);
    staged.push(home.store.stage_bytes(&manifest_bytes)?);
    additions.commit_all(staged)?;
    let digest = manifest_digest.clone();
    let tag = tag_for(&spec_digest);
    let size = assembled.manifest.blob_bytes();
    home.index.record_build(
        &EnvRecord {
            spec: spec_digest.0.clone(),
            lock: lock_digest.clone(),
            base: base.digest.clone(),
            manifest: digest.clone(),
            tag: tag.clone(),
            size,
            spec_json,
            name: options.env_name(),
        },
        &lock.to_json(),
        &records,
    )?;
    // Blobs this build wrote (hashed on the way in): only these are stamped as verified;
    // a blob that was already there keeps whatever verification it had.
    let written = additions.keep();
    tag_image(home, &assembled.manifest, &digest, &tag, &spec_digest)?;
    // The image is recorded and tagged: what follows cannot fail the build. Without the
    // stamps the new blobs are hashed again when first read; a lease left behind dies with
    // this process.
    if let Err(e) = mark_verified(&home.store, &home.index, &written) {
        tracing::warn!("recording that the new blobs are verified: {e}");
    }
    if let Err(e) = lease.release() {
        tracing::warn!("releasing the build's lease: {e}");
    }
    let mut report = report_layers(&assembled.manifest, &reused);
    let base_layers = base.layers().len();
    for (layer, from) in report[base_layers..].iter_mut().zip(from_registries) {
        layer.registry = from;
    }
    Ok(Built {
        digest,
        tag,
        spec_digest,
        lock_digest,
        cache: CacheOutcome::Miss,
        layers: report,
        media_type: assembled.manifest.media_type().to_string(),
        size,
        registry: None,
        warnings: Vec::new(),
        damaged_blobs: Vec::new(),
    })
}

/// How many package layers fit under `limit` next to the base's layers and the env layer.
fn layer_budget(limit: usize, base_layers: usize) -> Result<usize, BuildError> {
    match limit.checked_sub(base_layers + 1) {
        Some(budget) if budget > 0 => Ok(budget),
        _ => Err(BuildError::BadOption {
            option: format!("--max-layers {limit}"),
            reason: OptionError::TooFewLayers { base_layers },
        }),
    }
}

/// The lock of a spec that is not a lock file, resolved by uv. Requirements that pin every
/// package with `==` and `--hash` (pip's hash-checking mode; what poetry.lock and
/// Pipfile.lock become) leave uv no choice; the lock must then hold nothing they do not pin.
fn resolve(
    home: &Home,
    env: &EnvSpec,
    credentials: &IndexCredentials,
    file: &std::path::Path,
) -> Result<Lock, BuildError> {
    let lock = home.resolver.resolve(
        &env.requirements_txt(),
        &env.constraints_txt(),
        &env.sources,
        &env.target,
        credentials,
    )?;
    if env.pins_every_package() {
        check_every_package_pinned(env, &lock, file)?;
    }
    check_pinned_hashes(env, &lock)?;
    Ok(lock)
}

/// A package of the lock that a hash-pinned file does not pin is a dependency the file
/// forgot: refused as pip's hash-checking mode refuses it, rather than installed unpinned.
fn check_every_package_pinned(
    env: &EnvSpec,
    lock: &Lock,
    file: &std::path::Path,
) -> Result<(), BuildError> {
    let missing: Vec<String> = lock
        .wheels
        .iter()
        .filter(|w| !env.requirements.iter().any(|r| r.name == w.name))
        .map(|w| format!("{}=={}", w.name, w.version))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    Err(BuildError::UnpinnedDependency {
        file: file.to_path_buf(),
        packages: missing.join(", "),
    })
}

/// The lock `options` name: the lock file's own, or the requirements resolved (for
/// `strata lock`). Nothing is written to the store.
pub fn lock_env(home: &Home, options: &BuildOptions) -> Result<Lock, BuildError> {
    let prepared = prepare_with_credentials(home, options)?;
    if let Some(lock) = prepared.lock {
        return Ok(lock);
    }
    let files = CredentialFiles::from_env();
    let credentials = credentials::for_spec(prepared.credentials, &prepared.env, &files);
    resolve(home, &prepared.env, &credentials, &options.requirements)
}

/// The canonical spec of what `options` ask for, and the base image it names.
pub fn prepare(home: &Home, options: &BuildOptions) -> Result<(EnvSpec, BaseImage), BuildError> {
    prepare_with_credentials(home, options).map(|p| (p.env, p.base))
}

/// What a build starts from.
struct Prepared {
    env: EnvSpec,
    base: BaseImage,
    /// Taken out of the URLs of the requirements (and the command line's `--find-links`):
    /// kept beside the spec, never in it.
    credentials: IndexCredentials,
    /// A lock file's lock for the target: installed as it is.
    lock: Option<Lock>,
    /// What the user should know about the file (`-e` installed as a regular package).
    warnings: Vec<String>,
}

/// Like [`prepare`], with the credentials and a lock file's lock.
fn prepare_with_credentials(home: &Home, options: &BuildOptions) -> Result<Prepared, BuildError> {
    let input = read_env(&options.requirements, &options.selection)?;
    let base = open_base(home, &options.base, options.platform)?;
    let asked = match &input {
        EnvFile::Requirements { python, .. } => *python,
        EnvFile::Pinned(_) => None,
    };
    // The command line's Python, else the one the file asks for if the base has it (a base
    // without it fails the file's own check below, naming the file), else the base's.
    let asked = asked.filter(|v| base.has_python(&home.index, *v));
    let python = options.python.or(asked).or_else(|| base.declared_python());
    let python = match python {
        Some(v) => v,
        None => base.find_interpreter_in(&home.index, None)?.version,
    };
    // The file's own bound first (its error names the file), then the base.
    if let EnvFile::Requirements {
        requires_python: Some(requires),
        ..
    } = &input
    {
        requires.check(python)?;
    }
    if let Some(python) = options.python {
        base.check_python(&home.index, python)?;
    }
    let target = Target::new(python, options.platform);
    match input {
        EnvFile::Requirements { mut file, .. } => {
            add_cli_sources(&mut file.sources, &mut file.credentials, options)?;
            let credentials = std::mem::take(&mut file.credentials);
            let warnings = std::mem::take(&mut file.warnings);
            Ok(Prepared {
                env: EnvSpec::new(file, base.digest.clone(), target),
                base,
                credentials,
                lock: None,
                warnings,
            })
        }
        EnvFile::Pinned(mut set) => {
            // What the lock's URLs carried, for the downloads (never stored).
            let mut credentials = std::mem::take(&mut set.credentials);
            let (wheels, to_build) = set.plan_for(&target)?;
            // The lock's sdist, git and directory entries are built as the requirements path
            // builds them (cached by sdist sha256 or commit, and target), so the lock, and
            // with it the spec, is known before any cache lookup. The command line's
            // find-links and indexes are where the build backends come from.
            let mut sources = Sources::default();
            add_cli_sources(&mut sources, &mut credentials, options)?;
            let lock = home.resolver.lock_with_builds(
                wheels,
                &to_build,
                &sources,
                &target,
                &credentials,
            )?;
            Ok(Prepared {
                env: EnvSpec::locked(&lock, base.digest.clone()),
                base,
                credentials,
                lock: Some(lock),
                warnings: Vec::new(),
            })
        }
    }
}

/// Why the spec `options` describe is, or is not, a cache hit.
pub fn explain(home: &Home, options: &BuildOptions) -> Result<Explanation, BuildError> {
    let (env, _) = prepare(home, options)?;
    let identity = spec_identity(&env, options.compression, options.compile);
    let envs = home.index.envs()?;
    let mut explanation = crate::explain::explain(&env, &identity, &envs);
    for candidate in [&mut explanation.hit, &mut explanation.nearest]
        .into_iter()
        .flatten()
    {
        let Some(row) = envs.iter().find(|r| r.record.tag == candidate.tag) else {
            continue;
        };
        let stored = home
            .index
            .lock_on_base(&row.record.lock, &row.record.base)?;
        if let Some(lock) = stored.and_then(|s| Lock::from_json(&s.lock_json).ok()) {
            *candidate = candidate.clone().with_lock(&lock);
        }
    }
    Ok(explanation)
}

fn add_cli_sources(
    sources: &mut Sources,
    credentials: &mut IndexCredentials,
    options: &BuildOptions,
) -> Result<(), BuildError> {
    let cwd = std::env::current_dir().map_err(|source| BuildError::Io {
        what: "reading the current directory".into(),
        source,
    })?;
    for link in &options.find_links {
        let normalised = normalise_find_links(link, &cwd, credentials).map_err(|source| {
            BuildError::BadOption {
                option: format!("--find-links {}", strata_python::redact_userinfo(link)),
                reason: source.into(),
            }
        })?;
        sources.add_find_links(normalised);
    }
    sources.no_index |= options.no_index;
    Ok(())
}

/// Opens the base image by reference: a layout on disk, or (by digest) one imported before.
/// Its config must name the target's platform.
pub(crate) fn open_base(
    home: &Home,
    base: &BaseRef,
    platform: Platform,
) -> Result<BaseImage, BuildError> {
    let image = open_base_any_platform(home, base, platform)?;
    image.check_platform(platform)?;
    Ok(image)
}

fn open_base_any_platform(
    home: &Home,
    base: &BaseRef,
    platform: Platform,
) -> Result<BaseImage, BuildError> {
    match base {
        BaseRef::Layout { path, reference } => {
            if let Selector::Digest(d) = reference {
                if home.store.has_blob(d) {
                    return Ok(BaseImage::from_store(
                        &home.store,
                        d,
                        &format!("oci:{}@{d}", path.display()),
                    )?);
                }
            }
            Ok(BaseImage::from_layout(path, reference, platform)?)
        }
        BaseRef::Registry(reference) => {
            // Pinned by digest and imported before: no network (a tag needs a lookup).
            let pinned = reference
                .rsplit_once('@')
                .and_then(|(_, d)| d.parse::<Digest>().ok())
                .filter(|d| home.store.has_blob(d));
            match pinned {
                Some(d) => Ok(BaseImage::from_store(&home.store, &d, reference)?),
                None => crate::publish::pull_base(home, reference, platform),
            }
        }
    }
}

/// Requirements that carry `--hash` options (pip's hash-checking mode) only accept a wheel
/// whose sha256 is among them: uv computes the lock's hashes from the bytes it saw, so the
/// user's pins are checked here.
fn check_pinned_hashes(env: &EnvSpec, lock: &Lock) -> Result<(), BuildError> {
    for requirement in env.requirements.iter().filter(|r| !r.hashes.is_empty()) {
        let Some(wheel) = lock.wheels.iter().find(|w| w.name == requirement.name) else {
            continue;
        };
        // A wheel strata built is pinned by its sdist's hash, the file the user can know.
        let pinned = wheel
            .built_from
            .as_ref()
            .and_then(|b| b.sha256.as_ref())
            .unwrap_or(&wheel.sha256);
        let actual = format!("sha256:{}", pinned.hex());
        if !requirement.hashes.contains(&actual) {
            return Err(BuildError::PinnedHash {
                package: requirement.name.to_string(),
                wheel: wheel.filename.clone(),
                expected: requirement.hashes.join(", "),
                actual,
            });
        }
    }
    Ok(())
}

/// The spec was built before and its image is still in the store.
/// An image with more layers than `limit` allows does not answer (it is rebuilt merged).
///
/// As a lock hit does, the image is leased before its blobs are checked and until the
/// answer is recorded (used now): a sweep planned before would otherwise untag and delete
/// the very image this hit is about to return.
fn cache_hit(
    home: &Home,
    spec: &SpecDigest,
    limit: usize,
    progress: &dyn Progress,
) -> Result<Option<Built>, BuildError> {
    let Some(record) = home.index.env_by_spec(&spec.0)? else {
        return Ok(None);
    };
    // Released when this returns (the guard), by which time the image counts as used.
    let lease = home.index.lease("build", LeaseOwner::current_process())?;
    hold(home, &lease, std::slice::from_ref(&record.manifest))?;
    let Some(manifest) = stored_manifest(home, Some(&lease), &record.manifest)? else {
        return Ok(None);
    };
    if manifest.layers.len() > limit {
        return Ok(None);
    }
    if !ensure_tagged(home, &manifest, &record.manifest, &record.tag, spec)? {
        return Ok(None);
    }
    progress.stage("cache hit");
    home.index.touch_env(&spec.0)?;
    let reused = vec![true; manifest.layers.len()];
    Ok(Some(Built {
        digest: record.manifest,
        tag: record.tag,
        spec_digest: spec.clone(),
        lock_digest: record.lock,
        cache: CacheOutcome::Hit,
        layers: report_layers(&manifest, &reused),
        media_type: manifest.media_type().to_string(),
        size: record.size,
        registry: None,
        warnings: Vec::new(),
        damaged_blobs: Vec::new(),
    }))
}

/// What a lock hit records for the new spec.
struct LockHitKey<'a> {
    spec: &'a SpecDigest,
    spec_json: &'a str,
    name: &'a str,
    limit: usize,
    compression: LayerCompression,
    compile: bool,
}

/// The lock was built on this base before: the image is the same image (a function of its
/// content), so the spec gets its own tag on it and nothing is written but the index row.
fn lock_hit(
    home: &Home,
    lease: &Lease,
    base: &BaseImage,
    lock: &Lock,
    key: &LockHitKey,
) -> Result<Option<Built>, BuildError> {
    let LockHitKey {
        spec,
        spec_json,
        name,
        limit,
        compression,
        compile,
    } = *key;
    let lock_digest = lock.digest().0;
    let Some(record) = home.index.lock_on_base(&lock_digest, &base.digest)? else {
        return Ok(None);
    };
    hold(home, lease, std::slice::from_ref(&record.manifest))?;
    let Some(manifest) = stored_manifest(home, Some(lease), &record.manifest)? else {
        return Ok(None);
    };
    if manifest.layers.len() > limit || !is_current_format(&manifest, compression, compile) {
        return Ok(None);
    }
    let tag = tag_for(spec);
    let digest = record.manifest;
    let size = manifest.blob_bytes();
    home.index.record_build(
        &EnvRecord {
            spec: spec.0.clone(),
            lock: lock_digest.clone(),
            base: base.digest.clone(),
            manifest: digest.clone(),
            tag: tag.clone(),
            size,
            spec_json: spec_json.to_string(),
            name: name.to_string(),
        },
        &record.lock_json,
        &[],
    )?;
    tag_image(home, &manifest, &digest, &tag, spec)?;
    let reused = vec![true; manifest.layers.len()];
    Ok(Some(Built {
        digest,
        tag,
        spec_digest: spec.clone(),
        lock_digest,
        cache: CacheOutcome::LockHit,
        layers: report_layers(&manifest, &reused),
        media_type: manifest.media_type().to_string(),
        size,
        registry: None,
        warnings: Vec::new(),
        damaged_blobs: Vec::new(),
    }))
}

/// Whether this strata would make `manifest` from its lock: the current layer format (in
/// `compression`: the lock's image in another compression is another image), and
/// none of the spec annotations older versions wrote. An older image of the lock is not
/// shared with a new spec; the build makes the current one (reusing its layers).
fn is_current_format(manifest: &Manifest, compression: LayerCompression, compile: bool) -> bool {
    let format = image::layer_format(compression, compile);
    !manifest
        .annotations
        .contains_key(image::LEGACY_ANNOTATION_SPEC)
        && manifest.annotations.get(image::ANNOTATION_LAYER_FORMAT) == Some(&format)
}

/// What a registry lookup needs to know of the build.
struct RemoteKey<'a> {
    options: &'a BuildOptions,
    base: &'a BaseImage,
    spec: &'a SpecDigest,
    spec_json: &'a str,
    name: &'a str,
}

impl RemoteKey<'_> {
    /// What an image must be to answer this build (of `lock`, when it is known).
    fn wanted<'a>(&'a self, lock: Option<&'a Digest>) -> Wanted<'a> {
        Wanted {
            base: &self.base.digest,
            lock,
            layer_limit: self.options.layer_limit,
            compression: self.options.compression,
            compile: self.options.compile,
        }
    }
}

/// Step 1 of the registry cache: the spec's tag in a registry of the cache.
fn registry_spec_hit(
    home: &Home,
    key: &RemoteKey,
    progress: &dyn Progress,
    lookups: &mut Lookups,
) -> Result<Option<Built>, BuildError> {
    let cache = &key.options.registry_cache;
    if cache.is_empty() {
        return Ok(None);
    }
    progress.stage("looking in the registry");
    let tag = tag_for(key.spec);
    let wanted = key.wanted(None);
    let Some(found) = remote_cache::find(cache, &registry_tag(&tag)?, &wanted, lookups)? else {
        return Ok(None);
    };
    progress.stage("registry hit");
    let lock = found.lock.clone();
    registry_answer(
        home,
        key,
        &found,
        (tag, lock, ""),
        CacheOutcome::RegistryHit,
    )
    .map(Some)
}

/// Step 2 of the registry cache: an image of the lock in a registry of the cache, tagged for
/// this spec where the build pushes to.
fn registry_lock_hit(
    home: &Home,
    key: &RemoteKey,
    lock: &Lock,
    progress: &dyn Progress,
    lookups: &mut Lookups,
) -> Result<Option<Built>, BuildError> {
    let cache = &key.options.registry_cache;
    if cache.is_empty() {
        return Ok(None);
    }
    let lock_digest = lock.digest().0;
    let wanted = key.wanted(Some(&lock_digest));
    let lock_tag = remote_cache::lock_tag(
        &lock_digest,
        &key.base.digest,
        key.options.compression,
        key.options.compile,
    );
    let Some(found) = remote_cache::find(cache, &lock_tag, &wanted, lookups)? else {
        return Ok(None);
    };
    progress.stage("registry lock hit");
    let tag = tag_for(key.spec);
    if found.is_push_target() {
        remote_cache::retag(&found, &registry_tag(&tag)?)?;
    }
    let lock_json = lock.to_json();
    let answer = (tag, lock_digest, lock_json.as_str());
    registry_answer(home, key, &found, answer, CacheOutcome::RegistryLockHit).map(Some)
}

/// The build's result when a registry answered with `found` (tag, lock digest, lock JSON
/// if known), pulled into the store if the cache says so.
fn registry_answer(
    home: &Home,
    key: &RemoteKey,
    found: &remote_cache::Found,
    (tag, lock, lock_json): (String, Digest, &str),
    cache: CacheOutcome,
) -> Result<Built, BuildError> {
    let record = LocalRecord {
        spec: &key.spec.0,
        spec_json: key.spec_json,
        lock_json,
        name: key.name,
        tag: &tag,
    };
    let registry = remote_cache::answer(
        home,
        &key.options.registry_cache,
        found,
        key.options.platform,
        &record,
    )?;
    let manifest = &found.manifest;
    // Every layer is reused (nothing built), from the store when pulled or the registry.
    let reused = vec![true; manifest.layers.len()];
    Ok(Built {
        digest: found.digest.clone(),
        tag,
        spec_digest: key.spec.clone(),
        lock_digest: lock,
        cache,
        layers: report_layers(manifest, &reused),
        media_type: manifest.media_type().to_string(),
        size: manifest.blob_bytes(),
        registry: Some(registry),
        warnings: Vec::new(),
        damaged_blobs: Vec::new(),
    })
}

/// A strata tag as a registry tag.
fn registry_tag(tag: &str) -> Result<strata_registry::Tag, BuildError> {
    Ok(tag.parse().map_err(strata_registry::RegistryError::from)?)
}

/// A manifest in the store whose blobs are all present; `None` if anything is missing, so
/// that the caller rebuilds rather than serving a broken image.
fn stored_manifest(
    home: &Home,
    lease: Option<&Lease>,
    digest: &Digest,
) -> Result<Option<Manifest>, BuildError> {
    if !home.store.has_blob(digest) {
        return Ok(None);
    }
    let bytes = home.store.read_blob(digest)?;
    let Ok(ManifestDocument::Image(manifest)) = ManifestDocument::parse(&bytes) else {
        return Ok(None);
    };
    if let Some(lease) = lease {
        hold(
            home,
            lease,
            &crate::publish::image_digests(digest, &manifest),
        )?;
    }
    // Every blob is checked (hashed again only if it changed on disk since it was last
    // verified): a corrupt blob is quarantined and the image rebuilt, never served.
    let mut complete = true;
    for d in manifest.blobs() {
        match check_blob(&home.store, &home.index, &d.digest)? {
            BlobState::Ok => {}
            BlobState::Missing => complete = false,
            BlobState::Corrupt { actual, .. } => {
                complete = false;
                home.note_repair(format!(
                    "blob {} of image {digest} was corrupt on disk (its bytes hash to {actual}): quarantined, rebuilding it",
                    d.digest
                ));
            }
        }
    }
    Ok(complete.then_some(manifest))
}

/// Tags a recorded image again if its tag is gone: a build that failed between recording
/// and tagging (a full disk) is whole on the next hit. False if the image is no longer
/// whole: a sweep that began after the hit checked the blobs may have taken some (the build
/// then makes it again).
fn ensure_tagged(
    home: &Home,
    manifest: &Manifest,
    digest: &Digest,
    tag: &str,
    spec: &SpecDigest,
) -> Result<bool, BuildError> {
    let current = home.store.resolve_tag(tag)?;
    if current.is_some_and(|entry| &entry.digest == digest) {
        return Ok(true);
    }
    let _gc = home.store.gc_lock_shared()?;
    let whole =
        home.store.has_blob(digest) && manifest.blobs().all(|b| home.store.has_blob(&b.digest));
    if whole {
        tag_image(home, manifest, digest, tag, spec)?;
    }
    Ok(whole)
}

/// The spec a tag of the local store names (an annotation of the tag, not of the image).
pub(crate) const TAG_ANNOTATION_SPEC: &str = "dev.strata.spec-digest";

/// Points the spec's tag at the image (whose blobs are in the store).
fn tag_image(
    home: &Home,
    manifest: &Manifest,
    digest: &Digest,
    tag: &str,
    spec: &SpecDigest,
) -> Result<(), BuildError> {
    // On the tag in the layout's index.json, not in the image: the image is shared by every
    // spec of its lock, each tag names one spec.
    let mut annotations = std::collections::BTreeMap::new();
    annotations.insert(TAG_ANNOTATION_SPEC.to_string(), spec.0.to_string());
    home.store.tag(
        tag,
        &BlobDescriptor {
            media_type: manifest.media_type().to_string(),
            digest: digest.clone(),
            size: manifest.to_bytes().len() as u64,
        },
        annotations,
    )?;
    Ok(())
}

fn report_layers(manifest: &Manifest, reused: &[bool]) -> Vec<LayerReport> {
    manifest
        .layers
        .iter()
        .zip(reused.iter().chain(std::iter::repeat(&false)))
        .map(|(d, reused)| LayerReport {
            digest: d.digest.clone(),
            size: d.size,
            packages: d
                .annotations
                .get(image::ANNOTATION_PACKAGES)
                .map(|p| p.split(',').map(String::from).collect())
                .unwrap_or_default(),
            reused: *reused,
            registry: None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cache_outcome_is_shown_as_json_names_it() {
        use CacheOutcome::*;
        for outcome in [Hit, LockHit, RegistryHit, RegistryLockHit, Miss] {
            let json = serde_json::to_value(outcome).unwrap();
            assert_eq!(json.as_str(), Some(outcome.to_string().as_str()));
        }
    }

    #[test]
    fn an_environment_is_named_for_its_file_or_project() {
        let dir = tempfile::tempdir().unwrap();
        let project = dir.path().join("forecast");
        std::fs::create_dir_all(&project).unwrap();
        let name = |requirements: PathBuf| {
            BuildOptions {
                requirements,
                selection: Selection::default(),
                base: BaseRef::Registry("r/base:1".into()),
                python: None,
                platform: "linux/amd64".parse().unwrap(),
                find_links: Vec::new(),
                no_index: false,
                jobs: 1,
                name: None,
                layer_limit: 10,
                compression: LayerCompression::Gzip,
                compile: false,
                registry_cache: RegistryCache::default(),
                refresh: false,
            }
            .env_name()
        };
        assert_eq!(
            name(project.join("requirements-gpu.txt")),
            "requirements-gpu"
        );
        assert_eq!(name(project.join("uv.lock")), "forecast");
        assert_eq!(name(project.join("pyproject.toml")), "forecast");
        assert_eq!(name(project.clone()), "forecast");
    }

    #[test]
    fn a_layer_limit_without_room_for_packages_is_a_bad_option() {
        assert_eq!(layer_budget(10, 3).unwrap(), 6);
        let err = layer_budget(4, 3).unwrap_err();
        assert!(
            matches!(
                &err,
                BuildError::BadOption {
                    reason: OptionError::TooFewLayers { base_layers: 3 },
                    ..
                }
            ),
            "{err:?}"
        );
        assert_eq!(
            err.to_string(),
            "invalid option --max-layers 4: the base image alone has 3 layers; at least 5 are needed"
        );
    }
}
