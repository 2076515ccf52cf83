//! `strata verify REF`: a reproducibility check. The image `REF` names in a registry is rebuilt
//! from its own lock on this machine and compared with it layer by layer; every blob of it is
//! downloaded and hashed, so a blob changed in the registry's storage shows too.
//!
//! The lock is the one the image carries (`strata-lock.json` in its env layer, the last layer),
//! checked against the lock digest the manifest names. The rebuild happens in a temporary
//! store with an empty layer index beside the user's (under `$STRATA_HOME/tmp`): a verify
//! that reused layers known to the user's index would compare them with themselves. Only the
//! wheel cache is shared: its entries are named by sha256 and verified when read, and a wheel
//! fetched here serves later builds.

use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::{Component, Path, PathBuf};

use serde::Serialize;
use strata_index::{Lease, LeaseOwner};
use strata_oci::{Descriptor, Digest, Manifest, ManifestDocument, MAX_DOCUMENT_BYTES};
use strata_python::{IndexCredentials, Lock, LockError, LockedWheel, Platform, WheelCache};
use strata_registry::{ImageRef, ManifestRef, Registry, RegistryError, RegistryRepo};

use crate::base::{BaseImage, BaseRef};
use crate::build::open_base;
use crate::credentials::{self, CredentialFiles};
use crate::error::BuildError;
use crate::home::Home;
use crate::image::{
    compression_of_format, layer_format, ANNOTATION_BASE, ANNOTATION_LAYER_FORMAT, ANNOTATION_LOCK,
    ANNOTATION_PACKAGES,
};
use crate::layers::hold;
use crate::layers::RemoteLayers;
use crate::lock_image::{image_from_lock, LockInputs, LOCK_FILE};
use crate::progress::Progress;
use crate::publish::runtime;
use crate::remote_cache::{Lookups, RegistryCache};
use strata_install::{InstallScheme, LayerCompression};

/// The biggest lock file read from an env layer.
const MAX_LOCK_BYTES: u64 = 64 << 20;

/// What to verify, and where the wheels and the base may come from.
#[derive(Debug, Clone)]
pub struct VerifyOptions {
    /// `REGISTRY/REPO:TAG` or `REGISTRY/REPO@sha256:…`.
    pub reference: String,
    pub insecure: bool,
    /// The base image, when the local store does not have the one the image names.
    pub base: Option<BaseRef>,
    /// Directories searched for wheels by file name, after the local wheel cache.
    pub find_links: Vec<PathBuf>,
    /// The image of an image index to verify.
    pub platform: Platform,
    /// Threads for fetching wheels and building layers.
    pub jobs: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("{image} is not a strata environment image: {reason}")]
    NotStrata { image: String, reason: String },
    #[error(
        "{image} has layer format {format}; this strata writes {supported} and cannot rebuild it"
    )]
    LayerFormat {
        image: String,
        format: String,
        supported: String,
    },
    #[error("the lock in the env layer of {image} hashes to {actual}, but the image names lock {expected}")]
    LockMismatch {
        image: String,
        expected: Digest,
        actual: Digest,
    },
    #[error("the lock in the env layer of {image} cannot be read")]
    BadLock {
        image: String,
        #[source]
        source: LockError,
    },
    #[error("the lock in the env layer of {image} is not in canonical form (read back, it hashes to {actual})")]
    NotCanonical { image: String, actual: Digest },
    #[error("the lock of {image} names a wheel file {filename:?} that is not a plain file name")]
    BadWheelName { image: String, filename: String },
    #[error("base image {base} of {image} is not in the local store: give it with --base")]
    NoBase { image: String, base: Digest },
    #[error("--base {reference} is {actual}, but {image} was built on {expected}")]
    BaseMismatch {
        image: String,
        reference: String,
        expected: Digest,
        actual: Digest,
    },
    #[error("{image} has {layers} layers, fewer than its base's {base_layers} and an env layer")]
    TooFewLayers {
        image: String,
        layers: usize,
        base_layers: usize,
    },
    #[error("{} wheel(s) of the lock found in none of the local wheel cache, --find-links or the lock recorded by this store: {}", .wheels.len(), .wheels.join(", "))]
    MissingWheels { wheels: Vec<String> },
    #[error("{what}")]
    Io {
        what: String,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Build(#[from] BuildError),
}

impl From<RegistryError> for VerifyError {
    fn from(e: RegistryError) -> Self {
        VerifyError::Build(e.into())
    }
}

impl VerifyError {
    /// What to do about it.
    pub fn hint(&self) -> Option<&'static str> {
        match self {
            VerifyError::NotStrata { .. } => {
                Some("name an image strata built (`strata build --push`)")
            }
            VerifyError::NoBase { .. } | VerifyError::BaseMismatch { .. } => Some(
                "give the base the image was built on with --base (oci:PATH[:TAG|@DIGEST] or REGISTRY/REPO@DIGEST)",
            ),
            VerifyError::MissingWheels { .. } => {
                Some("give the directory that holds them with --find-links DIR")
            }
            VerifyError::LockMismatch { .. } | VerifyError::NotCanonical { .. } => {
                Some("the image does not carry the lock it names: it was not made by strata as it is")
            }
            VerifyError::Build(e) => e.hint(),
            _ => None,
        }
    }
}

/// What the registry's bytes of a blob are.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ServedBytes {
    /// They hash to the descriptor's digest.
    Ok,
    /// They hash to another digest: the blob was changed where the registry keeps it.
    HashMismatch { actual: Digest },
    /// They are not as long as the descriptor says.
    SizeMismatch { expected: u64, actual: u64 },
}

impl ServedBytes {
    pub fn is_ok(&self) -> bool {
        *self == ServedBytes::Ok
    }
}

/// What a layer of the image is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum LayerKind {
    Base,
    Packages,
    Env,
}

/// One layer, as the registry has it and as this machine rebuilt it.
#[derive(Debug, Clone, Serialize)]
pub struct LayerCheck {
    /// Position in the manifest, from 0.
    pub index: usize,
    pub kind: LayerKind,
    /// The packages (`name==version`) the layer installs.
    pub packages: Vec<String>,
    /// `None` past the end of the registry's (or the rebuilt) list of layers.
    pub registry: Option<Digest>,
    pub rebuilt: Option<Digest>,
    /// From the registry's config; `None` when its bytes are damaged (then not compared).
    pub registry_diff_id: Option<Digest>,
    pub rebuilt_diff_id: Option<Digest>,
    /// The registry's bytes of the layer (`None` past the end of its layers).
    pub bytes: Option<ServedBytes>,
    pub matches: bool,
}

/// A digest of the registry's image and of the rebuilt one (`None` when nothing was rebuilt).
#[derive(Debug, Clone, Serialize)]
pub struct Compared {
    pub registry: Digest,
    pub rebuilt: Option<Digest>,
}

impl Compared {
    pub fn matches(&self) -> bool {
        self.rebuilt.as_ref() == Some(&self.registry)
    }
}

/// The outcome of a verify.
#[derive(Debug, Clone, Serialize)]
pub struct Verification {
    /// As the user gave it.
    pub reference: String,
    /// `REGISTRY/REPO@DIGEST`.
    pub image: String,
    pub verified: bool,
    pub lock_digest: Digest,
    pub base_digest: Digest,
    pub manifest: Compared,
    pub config: Compared,
    /// The registry's bytes of the config.
    pub config_bytes: ServedBytes,
    pub layers: Vec<LayerCheck>,
    /// Why nothing was rebuilt, if so (the env layer holding the lock was damaged).
    pub not_rebuilt: Option<String>,
}

impl Verification {
    /// The layers that differ or whose bytes are damaged.
    pub fn failed_layers(&self) -> impl Iterator<Item = &LayerCheck> {
        self.layers.iter().filter(|l| !l.matches)
    }

    /// The layers whose registry bytes do not hash to their digest or have another length.
    pub fn damaged_layers(&self) -> impl Iterator<Item = &LayerCheck> {
        self.layers
            .iter()
            .filter(|l| l.bytes.as_ref().is_some_and(|b| !b.is_ok()))
    }
}

/// Rebuilds the image `options.reference` names from its lock and compares.
pub fn verify(
    home: &Home,
    options: &VerifyOptions,
    progress: &dyn Progress,
) -> Result<Verification, VerifyError> {
    let image: ImageRef = options.reference.parse().map_err(RegistryError::from)?;
    let registry = Registry::new(&image.repo.registry, options.insecure)?;
    let rt = runtime()?;
    progress.stage("reading the image");
    let remote = rt.block_on(remote_manifest(&registry, &image, options.platform))?;
    let claims = Claims::of(&remote)?;
    let scratch = scratch_dir(home)?;
    // The env layer first: its lock says what the rebuild needs, and a base or wheel that
    // cannot be found fails before the other layers are downloaded.
    progress.stage("reading the lock");
    let env = remote.manifest.layers.len() - 1;
    let env_path = scratch.path().join("env-layer");
    let env_layer = &remote.manifest.layers[env];
    let env_bytes = rt.block_on(served(&registry, &image.repo, env_layer, &env_path))?;
    let plan = match env_bytes.is_ok() {
        true => {
            let lock = read_lock(&env_path, env_layer, &remote.name, &claims)?;
            Some(plan(home, options, &remote, &claims, lock, &scratch)?)
        }
        false => None,
    };
    progress.stage("downloading the image's blobs");
    let blobs = rt.block_on(download(
        &registry,
        &image.repo,
        &remote.manifest,
        (env, env_bytes),
        scratch.path(),
    ))?;
    // `None` when the config's bytes are damaged (reported as such): its diff_ids say nothing.
    let registry_diff_ids = blobs.config.as_deref().map(diff_ids);
    let rebuilt = match &plan {
        Some(plan) => Some(rebuild(plan, options, &claims, progress)?),
        None => None,
    };
    Ok(compare(
        options,
        &remote,
        &claims,
        &blobs,
        registry_diff_ids.as_deref(),
        rebuilt.as_ref(),
    ))
}

/// The image in the registry.
struct Remote {
    /// `REGISTRY/REPO@DIGEST`, for messages.
    name: String,
    digest: Digest,
    manifest: Manifest,
}

/// The manifest `image` names (for `platform`, if it names an index).
async fn remote_manifest(
    registry: &Registry,
    image: &ImageRef,
    platform: Platform,
) -> Result<Remote, VerifyError> {
    let selector = image
        .reference
        .clone()
        .unwrap_or_else(|| ManifestRef::Tag("latest".parse().expect("valid tag")));
    let mut pulled = registry.pull_manifest(&image.repo, &selector).await?;
    let not_strata = |reason: String| VerifyError::NotStrata {
        image: image.to_string(),
        reason,
    };
    if let Ok(ManifestDocument::Index(index)) = ManifestDocument::parse(&pulled.bytes) {
        let Some(entry) = index.manifest_for("linux", platform.arch.oci_name()) else {
            return Err(not_strata(format!(
                "an image index without an image for {platform}"
            )));
        };
        let by_digest = ManifestRef::Digest(entry.digest.clone());
        pulled = registry.pull_manifest(&image.repo, &by_digest).await?;
    }
    let Ok(ManifestDocument::Image(manifest)) = ManifestDocument::parse(&pulled.bytes) else {
        return Err(not_strata("not an image manifest".into()));
    };
    Ok(Remote {
        name: format!("{}@{}", image.repo, pulled.digest),
        digest: pulled.digest,
        manifest,
    })
}

/// What a strata image says it is made of (its annotations).
struct Claims {
    lock: Digest,
    base: Digest,
    compression: LayerCompression,
    compile: bool,
}

impl Claims {
    fn of(remote: &Remote) -> Result<Claims, VerifyError> {
        let manifest = &remote.manifest;
        let not_strata = |reason: String| VerifyError::NotStrata {
            image: remote.name.clone(),
            reason,
        };
        let digest = |key: &str| -> Result<Digest, VerifyError> {
            let value = manifest
                .annotations
                .get(key)
                .ok_or_else(|| not_strata(format!("no annotation {key}")))?;
            value
                .parse()
                .map_err(|_| not_strata(format!("annotation {key} is not a digest: {value:?}")))
        };
        let lock = digest(ANNOTATION_LOCK)?;
        let base = digest(ANNOTATION_BASE)?;
        let Some(format) = manifest.annotations.get(ANNOTATION_LAYER_FORMAT) else {
            return Err(not_strata(format!(
                "no annotation {ANNOTATION_LAYER_FORMAT}"
            )));
        };
        let Some((compression, compile)) = compression_of_format(format) else {
            return Err(VerifyError::LayerFormat {
                image: remote.name.clone(),
                format: format.clone(),
                supported: [LayerCompression::Gzip, LayerCompression::Zstd]
                    .map(|c| layer_format(c, false))
                    .join(" or "),
            });
        };
        if manifest.layers.is_empty() {
            return Err(not_strata(
                "no layers (a strata image ends in its env layer)".into(),
            ));
        }
        Ok(Claims {
            lock,
            base,
            compression,
            compile,
        })
    }
}

/// A temporary directory beside the store (same filesystem, removed on drop).
fn scratch_dir(home: &Home) -> Result<tempfile::TempDir, VerifyError> {
    let io = |source| VerifyError::Io {
        what: format!("creating a temporary directory in {}", home.tmp().display()),
        source,
    };
    std::fs::create_dir_all(home.tmp()).map_err(io)?;
    tempfile::Builder::new()
        .prefix(&format!("{}verify-", strata_oci::SCRATCH_DIR_PREFIX))
        .tempdir_in(home.tmp())
        .map_err(io)
}

/// The registry's blobs of the image, each downloaded and hashed.
struct Downloaded {
    /// The config's bytes, if they are the config's.
    config: Option<Vec<u8>>,
    config_bytes: ServedBytes,
    /// Per layer.
    layers: Vec<ServedBytes>,
}

/// Downloads the config and every layer but the one `done` says about into `dir` (a layer's
/// file is removed once hashed).
async fn download(
    registry: &Registry,
    repo: &RegistryRepo,
    manifest: &Manifest,
    done: (usize, ServedBytes),
    dir: &Path,
) -> Result<Downloaded, VerifyError> {
    let config_path = dir.join("config");
    if manifest.config.size > MAX_DOCUMENT_BYTES {
        return Err(VerifyError::NotStrata {
            image: repo.to_string(),
            reason: format!(
                "its config {} claims {} bytes, more than any image config ({MAX_DOCUMENT_BYTES})",
                manifest.config.digest, manifest.config.size
            ),
        });
    }
    let config_bytes = served(registry, repo, &manifest.config, &config_path).await?;
    let config = match config_bytes.is_ok() {
        true => Some(
            std::fs::read(&config_path).map_err(|source| VerifyError::Io {
                what: format!("reading {}", config_path.display()),
                source,
            })?,
        ),
        false => None,
    };
    let mut layers = Vec::with_capacity(manifest.layers.len());
    for (i, layer) in manifest.layers.iter().enumerate() {
        if i == done.0 {
            layers.push(done.1.clone());
            continue;
        }
        let path = dir.join(format!("layer-{i}"));
        layers.push(served(registry, repo, layer, &path).await?);
        // Only disk space is at stake if this fails.
        let _ = std::fs::remove_file(&path);
    }
    Ok(Downloaded {
        config,
        config_bytes,
        layers,
    })
}

/// Downloads one blob to `dest` and says whether its bytes are the ones its descriptor names.
async fn served(
    registry: &Registry,
    repo: &RegistryRepo,
    descriptor: &Descriptor,
    dest: &Path,
) -> Result<ServedBytes, VerifyError> {
    match registry
        .pull_blob_to_file(repo, &descriptor.blob(), dest)
        .await
    {
        Ok(()) => Ok(ServedBytes::Ok),
        Err(RegistryError::DigestMismatch { actual, .. }) => {
            Ok(ServedBytes::HashMismatch { actual })
        }
        Err(RegistryError::SizeMismatch {
            expected, actual, ..
        }) => Ok(ServedBytes::SizeMismatch { expected, actual }),
        Err(e) => Err(e.into()),
    }
}

/// `rootfs.diff_ids` of a config (empty if it has none).
fn diff_ids(config: &[u8]) -> Vec<Digest> {
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(config) else {
        return Vec::new();
    };
    value["rootfs"]["diff_ids"]
        .as_array()
        .map(|ids| {
            ids.iter()
                .filter_map(|id| id.as_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// The lock in the env layer at `path`, checked against the digest the image names.
fn read_lock(
    path: &Path,
    layer: &Descriptor,
    image: &str,
    claims: &Claims,
) -> Result<Lock, VerifyError> {
    let bytes = lock_file(path, &layer.media_type)
        .map_err(|source| VerifyError::Io {
            what: format!("reading the env layer {} of {image}", layer.digest),
            source,
        })?
        .ok_or_else(|| VerifyError::NotStrata {
            image: image.to_string(),
            reason: format!("its last layer holds no {LOCK_FILE}"),
        })?;
    let actual = Digest::of(&bytes);
    if actual != claims.lock {
        return Err(VerifyError::LockMismatch {
            image: image.to_string(),
            expected: claims.lock.clone(),
            actual,
        });
    }
    let lock = Lock::from_canonical_bytes(&bytes).map_err(|source| VerifyError::BadLock {
        image: image.to_string(),
        source,
    })?;
    let read_back = lock.digest().0;
    if read_back != claims.lock {
        return Err(VerifyError::NotCanonical {
            image: image.to_string(),
            actual: read_back,
        });
    }
    Ok(lock)
}

/// The bytes of the lock file in a layer blob, if it holds one.
fn lock_file(path: &Path, media_type: &str) -> io::Result<Option<Vec<u8>>> {
    let venv = InstallScheme::DEFAULT_VENV.trim_start_matches('/');
    let wanted = Path::new(venv).join(LOCK_FILE);
    let reader = strata_install::decompress(media_type, BufReader::new(File::open(path)?))?;
    let mut archive = tar::Archive::new(reader);
    for entry in archive.entries()? {
        let entry = entry?;
        let name = entry.path()?.into_owned();
        if name.strip_prefix("./").unwrap_or(&name) != wanted {
            continue;
        }
        if entry.size() > MAX_LOCK_BYTES {
            return Err(io::Error::other(format!(
                "{} is {} bytes, more than the {MAX_LOCK_BYTES} a lock may have",
                wanted.display(),
                entry.size()
            )));
        }
        let mut bytes = Vec::new();
        entry.take(MAX_LOCK_BYTES).read_to_end(&mut bytes)?;
        return Ok(Some(bytes));
    }
    Ok(None)
}

/// The rebuilt image.
struct Rebuilt {
    digest: Digest,
    manifest: Manifest,
    diff_ids: Vec<Digest>,
}

/// What a rebuild needs, found before the image's layers are downloaded.
struct Plan<'a> {
    /// The temporary home the rebuild writes to (its own store and index).
    work: Home,
    base: BaseImage,
    /// With every wheel's URL.
    lock: Lock,
    /// Most package layers.
    budget: usize,
    /// Holds a base read from the user's store against a concurrent GC.
    _held: Lease<'a>,
}

/// Opens a temporary home under `scratch`, finds the base and the wheels of `lock`.
fn plan<'a>(
    home: &'a Home,
    options: &VerifyOptions,
    remote: &Remote,
    claims: &Claims,
    lock: Lock,
    scratch: &tempfile::TempDir,
) -> Result<Plan<'a>, VerifyError> {
    let mut work = Home::open(&scratch.path().join("home")).map_err(BuildError::from)?;
    work.wheels = WheelCache::new(home.wheels.root().to_path_buf());
    let held = home
        .index
        .lease("verify", LeaseOwner::current_process())
        .map_err(BuildError::from)?;
    let base = find_base(home, &work, &held, options, remote, claims, &lock)?;
    let base_layers = base.layers().len();
    let layers = remote.manifest.layers.len();
    // The image's package layers say how many it was allowed (`group_wheels`).
    let Some(budget) = layers.checked_sub(base_layers + 1) else {
        return Err(VerifyError::TooFewLayers {
            image: remote.name.clone(),
            layers,
            base_layers,
        });
    };
    let lock = locate_wheels(home, &options.find_links, remote, claims, &lock)?;
    Ok(Plan {
        work,
        base,
        lock,
        budget: budget.max(1),
        _held: held,
    })
}

/// Rebuilds the image of the plan's lock in the plan's temporary home.
fn rebuild(
    plan: &Plan,
    options: &VerifyOptions,
    claims: &Claims,
    progress: &dyn Progress,
) -> Result<Rebuilt, VerifyError> {
    let mut credentials = IndexCredentials::default();
    credentials::for_lock(&mut credentials, &plan.lock, &CredentialFiles::from_env());
    let lease = plan
        .work
        .index
        .lease("verify", LeaseOwner::current_process())
        .map_err(BuildError::from)?;
    progress.stage("rebuilding");
    let image = image_from_lock(
        &plan.work,
        &lease,
        &LockInputs {
            base: &plan.base,
            lock: &plan.lock,
            credentials: &credentials,
            compression: claims.compression,
            compile: claims.compile,
            jobs: options.jobs,
            budget: plan.budget,
        },
        // Never from a registry: a verify must really rebuild every layer.
        RemoteLayers {
            cache: &RegistryCache::default(),
            lookups: &mut Lookups::default(),
        },
        progress,
    )?;
    let manifest = image.assembled.manifest;
    Ok(Rebuilt {
        digest: Digest::of(&manifest.to_bytes()),
        diff_ids: diff_ids(&image.assembled.config),
        manifest,
    })
}

/// The base the image names: from the user's store (held by `lease`), else `--base`, which
/// must be that very image.
fn find_base(
    home: &Home,
    work: &Home,
    lease: &Lease,
    options: &VerifyOptions,
    remote: &Remote,
    claims: &Claims,
    lock: &Lock,
) -> Result<BaseImage, VerifyError> {
    hold(home, lease, std::slice::from_ref(&claims.base))?;
    if home.store.has_blob(&claims.base) {
        let label = format!("oci:{}@{}", home.store.root().display(), claims.base);
        let base =
            BaseImage::from_store(&home.store, &claims.base, &label).map_err(BuildError::from)?;
        hold(home, lease, &base.blob_digests())?;
        if base.blob_digests().iter().all(|d| home.store.has_blob(d)) {
            return Ok(base);
        }
    }
    let Some(reference) = &options.base else {
        return Err(VerifyError::NoBase {
            image: remote.name.clone(),
            base: claims.base.clone(),
        });
    };
    let base = open_base(work, reference, lock.target.platform)?;
    if base.digest != claims.base {
        return Err(VerifyError::BaseMismatch {
            image: remote.name.clone(),
            reference: base.reference.clone(),
            expected: claims.base.clone(),
            actual: base.digest,
        });
    }
    Ok(base)
}

/// The lock with every wheel's URL set to where it lies: the local wheel cache, else a
/// `--find-links` directory (by file name), else the URL the lock this store recorded for
/// the same lock and base gives. Each is checked against the lock's sha256 when read.
fn locate_wheels(
    home: &Home,
    find_links: &[PathBuf],
    remote: &Remote,
    claims: &Claims,
    lock: &Lock,
) -> Result<Lock, VerifyError> {
    let recorded = home
        .index
        .lock_on_base(&claims.lock, &claims.base)
        .map_err(BuildError::from)?
        .and_then(|record| Lock::from_json(&record.lock_json).ok());
    let mut located = lock.clone();
    let mut missing = Vec::new();
    for wheel in &mut located.wheels {
        if !is_plain_file_name(&wheel.filename) {
            return Err(VerifyError::BadWheelName {
                image: remote.name.clone(),
                filename: wheel.filename.clone(),
            });
        }
        match wheel_source(&home.wheels, find_links, recorded.as_ref(), wheel) {
            Some(url) => wheel.url = url,
            None => missing.push(format!("{} ({})", wheel.filename, wheel.sha256)),
        }
    }
    if !missing.is_empty() {
        return Err(VerifyError::MissingWheels { wheels: missing });
    }
    Ok(located)
}

fn wheel_source(
    cache: &WheelCache,
    find_links: &[PathBuf],
    recorded: Option<&Lock>,
    wheel: &LockedWheel,
) -> Option<String> {
    let cached = cache.path_of(wheel);
    let local = std::iter::once(cached)
        .chain(find_links.iter().map(|dir| dir.join(&wheel.filename)))
        .find(|path| path.is_file());
    if let Some(path) = local {
        // The wheel fetcher reads absolute paths only.
        return std::path::absolute(&path)
            .ok()
            .map(|p| p.display().to_string());
    }
    recorded?
        .wheels
        .iter()
        .find(|w| w.sha256 == wheel.sha256 && !w.url.is_empty())
        .map(|w| w.url.clone())
}

/// A file name from the image's lock names a file, never a path.
fn is_plain_file_name(name: &str) -> bool {
    let mut components = Path::new(name).components();
    matches!(components.next(), Some(Component::Normal(n)) if n == name)
        && components.next().is_none()
        && !name.contains('\\')
}

fn compare(
    options: &VerifyOptions,
    remote: &Remote,
    claims: &Claims,
    blobs: &Downloaded,
    registry_diff_ids: Option<&[Digest]>,
    rebuilt: Option<&Rebuilt>,
) -> Verification {
    let theirs = &remote.manifest.layers;
    let ours: &[Descriptor] = rebuilt.map_or(&[], |r| &r.manifest.layers);
    let count = theirs.len().max(ours.len());
    let layers: Vec<LayerCheck> = (0..count)
        .map(|i| {
            let registry = theirs.get(i);
            let mine = ours.get(i);
            let bytes = blobs.layers.get(i).cloned();
            let registry_diff_id = registry_diff_ids.and_then(|ids| ids.get(i).cloned());
            let rebuilt_diff_id = rebuilt.and_then(|r| r.diff_ids.get(i).cloned());
            let diff_id_matches = match registry_diff_ids {
                Some(_) => registry_diff_id.is_some() && registry_diff_id == rebuilt_diff_id,
                None => true,
            };
            let matches = registry.is_some()
                && registry.map(|d| &d.digest) == mine.map(|d| &d.digest)
                && diff_id_matches
                && bytes.as_ref().is_some_and(ServedBytes::is_ok);
            let described = registry.or(mine);
            LayerCheck {
                index: i,
                kind: match described {
                    _ if i + 1 == theirs.len() => LayerKind::Env,
                    Some(d) if d.annotations.contains_key(ANNOTATION_PACKAGES) => {
                        LayerKind::Packages
                    }
                    _ => LayerKind::Base,
                },
                packages: described
                    .and_then(|d| d.annotations.get(ANNOTATION_PACKAGES))
                    .map(|p| p.split(',').map(String::from).collect())
                    .unwrap_or_default(),
                registry: registry.map(|d| d.digest.clone()),
                rebuilt: mine.map(|d| d.digest.clone()),
                registry_diff_id,
                rebuilt_diff_id,
                bytes,
                matches,
            }
        })
        .collect();
    let manifest = Compared {
        registry: remote.digest.clone(),
        rebuilt: rebuilt.map(|r| r.digest.clone()),
    };
    let config = Compared {
        registry: remote.manifest.config.digest.clone(),
        rebuilt: rebuilt.map(|r| r.manifest.config.digest.clone()),
    };
    let verified = manifest.matches()
        && config.matches()
        && blobs.config_bytes.is_ok()
        && layers.iter().all(|l| l.matches);
    Verification {
        reference: options.reference.clone(),
        image: remote.name.clone(),
        verified,
        lock_digest: claims.lock.clone(),
        base_digest: claims.base.clone(),
        manifest,
        config,
        config_bytes: blobs.config_bytes.clone(),
        layers,
        not_rebuilt: rebuilt
            .is_none()
            .then(|| "the env layer, which holds the lock, is damaged in the registry".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wheel_file_names_from_a_lock_must_be_plain() {
        assert!(is_plain_file_name("a-1.0-py3-none-any.whl"));
        for bad in [
            "",
            ".",
            "..",
            "../a.whl",
            "/etc/passwd",
            "a/b.whl",
            "a\\b.whl",
        ] {
            assert!(!is_plain_file_name(bad), "{bad:?}");
        }
    }

    #[test]
    fn diff_ids_are_read_from_a_config() {
        let d = Digest::of(b"x");
        let config = serde_json::json!({"rootfs": {"type": "layers", "diff_ids": [d.to_string()]}});
        assert_eq!(diff_ids(config.to_string().as_bytes()), vec![d]);
        assert!(diff_ids(b"not json").is_empty());
    }
}
