//! The registry as a shared cache: before a build resolves, the spec's tag (`env-…`) is looked
//! up in the registries the user named (the push target first, then `--cache-from` /
//! `[cache] registry`); after it resolves, the lock's tag (`lock-…`, see
//! [`strata_registry::lock_tag`]), which every push sets next to the spec's. Each lookup is
//! one manifest GET per repository.
//!
//! Trust is the repository's: only repositories the user pushes to or names are read, and an
//! image found there is taken as it is (its layers are not rebuilt or hashed here; a pull
//! verifies every blob it downloads).
//!
//! What lands in the local store: by default nothing. A CI step that pushes needs only the
//! answer (the image in the registry), and a runner that never runs the image would download
//! its layers for nothing. With `pull` (`strata build --pull`), or when the image must then be
//! pushed to another repository than the one it was found in, every blob the store lacks is
//! downloaded and verified, and the image is recorded and tagged for its spec as a local
//! build would be, so later builds of the spec are local hits and jobs can run it.
//!
//! Errors: a repository that cannot be read (down, refusing, answering garbage) is a warning
//! and the build goes on locally, unless it is the push target, whose errors are the push's.

use strata_index::{EnvRecord, LeaseOwner};
use strata_oci::{BlobDescriptor, Digest, Manifest, ManifestDocument};
use strata_registry::{ImageRef, ManifestRef, Registry, RegistryError, RegistryRepo, Tag};

use crate::build::TAG_ANNOTATION_SPEC;
use crate::error::BuildError;
use crate::home::Home;
use crate::image::{layer_format, ANNOTATION_LAYER_FORMAT, ANNOTATION_LOCK};
use crate::publish::{connect, fetch_image, runtime};
use strata_install::LayerCompression;
use strata_python::Platform;

const ANNOTATION_BASE: &str = "org.opencontainers.image.base.digest";

/// One repository a build may take its image from.
#[derive(Debug, Clone)]
pub struct CacheSource {
    registry: Registry,
    repo: RegistryRepo,
    /// The build pushes here: its errors fail the build, and a lock hit is tagged here.
    push_target: bool,
}

impl CacheSource {
    /// `REGISTRY/REPO`; no request yet.
    pub fn new(target: &str, insecure: bool) -> Result<CacheSource, BuildError> {
        let (registry, repo) = connect(target, insecure)?;
        Ok(CacheSource {
            registry,
            repo,
            push_target: false,
        })
    }

    pub(crate) fn push_target(registry: Registry, repo: RegistryRepo) -> CacheSource {
        CacheSource {
            registry,
            repo,
            push_target: true,
        }
    }

    /// `REGISTRY/REPO`.
    pub fn repository(&self) -> String {
        self.repo.to_string()
    }

    pub(crate) fn client(&self) -> (&Registry, &RegistryRepo) {
        (&self.registry, &self.repo)
    }
}

/// Where a build looks for its image in registries.
#[derive(Debug, Clone, Default)]
pub struct RegistryCache {
    /// In lookup order: the push target first.
    pub sources: Vec<CacheSource>,
    /// Bring a registry hit's blobs into the local store (what a job needs).
    pub pull: bool,
}

impl RegistryCache {
    pub fn is_empty(&self) -> bool {
        self.sources.is_empty()
    }

    /// Whether an image found in `source` must be brought into the store: asked for, or to
    /// be pushed to another repository from there.
    fn must_pull(&self, source: &CacheSource) -> bool {
        self.pull || (!source.push_target && self.sources.iter().any(|s| s.push_target))
    }
}

/// The answer a registry gave a build.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RegistryImage {
    /// `REGISTRY/REPO@DIGEST`.
    pub image: String,
    pub repository: String,
    /// The image is in the local store too (pulled).
    pub pulled: bool,
}

/// An image a lookup found.
pub(crate) struct Found<'a> {
    pub source: &'a CacheSource,
    pub digest: Digest,
    pub bytes: Vec<u8>,
    pub media_type: String,
    pub manifest: Manifest,
    /// The lock the image names (every accepted image names one).
    pub lock: Digest,
}

impl Found<'_> {
    pub fn is_push_target(&self) -> bool {
        self.source.push_target
    }
}

/// What an image must be to answer a build: read from its own annotations.
pub(crate) struct Wanted<'a> {
    pub base: &'a Digest,
    /// `None` for a spec lookup: the spec's tag names the image, whatever its lock (and
    /// whatever spec its annotations name: a lock hit tags one image for many specs).
    pub lock: Option<&'a Digest>,
    pub layer_limit: usize,
    /// Its layers' compression (part of the layer format it names).
    pub compression: LayerCompression,
    /// Whether its layers hold pycs (`--compile`, part of the layer format too).
    pub compile: bool,
}

impl Wanted<'_> {
    /// The lock `manifest` names, if it answers this build.
    fn accepts(&self, manifest: &Manifest) -> Option<Digest> {
        let annotation = |key: &str| manifest.annotations.get(key).map(String::as_str);
        let digest = |key: &str| annotation(key).and_then(|v| v.parse::<Digest>().ok());
        let lock = digest(ANNOTATION_LOCK)?;
        let format = layer_format(self.compression, self.compile);
        let accepted = digest(ANNOTATION_BASE).as_ref() == Some(self.base)
            && self.lock.is_none_or(|l| *l == lock)
            && annotation(ANNOTATION_LAYER_FORMAT) == Some(format.as_str())
            && manifest.layers.len() <= self.layer_limit;
        accepted.then_some(lock)
    }
}

/// The lock tag of an image of `lock` on `base` in this strata's layer format, in
/// `compression`.
pub(crate) fn lock_tag(
    lock: &Digest,
    base: &Digest,
    compression: LayerCompression,
    compile: bool,
) -> Tag {
    strata_registry::lock_tag(lock, base, &layer_format(compression, compile))
}

/// The lock tag of a strata image, from its annotations (`None` for another image).
pub(crate) fn lock_tag_of(manifest: &Manifest) -> Option<Tag> {
    let digest = |key: &str| manifest.annotations.get(key)?.parse::<Digest>().ok();
    let format = manifest.annotations.get(ANNOTATION_LAYER_FORMAT)?;
    Some(strata_registry::lock_tag(
        &digest(ANNOTATION_LOCK)?,
        &digest(ANNOTATION_BASE)?,
        format,
    ))
}

/// What the registry lookups of one build learnt: the warnings to show, and the repositories
/// that failed (not asked again by the lookup after resolution: one warning, one wait for
/// retries).
#[derive(Debug, Default)]
pub(crate) struct Lookups {
    pub warnings: Vec<String>,
    /// Blobs a registry served with other bytes than their digest.
    pub damaged: Vec<DamagedBlob>,
    failed: Vec<String>,
}

/// A layer blob a registry of the cache served with bytes that do not hash to its digest:
/// changed where the registry keeps it, or on the way. A registry keeps the bytes it has for
/// a digest when the digest is uploaded again (docker-registry, for all its repositories),
/// so a push target holding the blob is read again before an image naming it is pushed.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DamagedBlob {
    /// `REGISTRY/REPO` it was read from.
    pub repository: String,
    pub layer: BlobDescriptor,
    /// What the layer installs (its wheels), for messages.
    pub what: String,
}

impl Lookups {
    /// Whether a lookup of this build found `repository` failing (not asked again).
    pub fn has_failed(&self, repository: &str) -> bool {
        self.failed.iter().any(|r| r == repository)
    }

    pub fn warn(&mut self, warning: String) {
        self.warnings.push(warning);
    }

    /// Records that `repository` failed (with the warning that says so): not asked again.
    pub fn fail(&mut self, repository: String, warning: String) {
        self.failed.push(repository);
        self.warnings.push(warning);
    }
}

/// The first image under `tag` in the cache's repositories that `wanted` accepts. A
/// repository that fails is a warning (in `lookups`), unless it is the push target.
pub(crate) fn find<'a>(
    cache: &'a RegistryCache,
    tag: &Tag,
    wanted: &Wanted,
    lookups: &mut Lookups,
) -> Result<Option<Found<'a>>, BuildError> {
    let rt = runtime()?;
    for source in &cache.sources {
        if lookups.failed.contains(&source.repository()) {
            continue;
        }
        let reference = ManifestRef::Tag(tag.clone());
        let pulled = match rt.block_on(source.registry.pull_manifest(&source.repo, &reference)) {
            Ok(pulled) => pulled,
            Err(e) if e.status() == Some(404) => continue,
            Err(e) if source.push_target => return Err(e.into()),
            Err(e) => {
                lookups.failed.push(source.repository());
                lookups.warnings.push(format!(
                    "registry cache {} was not read ({}); building without it",
                    source.repo,
                    strata_errors::chain(&e)
                ));
                continue;
            }
        };
        let Ok(ManifestDocument::Image(manifest)) = ManifestDocument::parse(&pulled.bytes) else {
            continue;
        };
        if let Some(lock) = wanted.accepts(&manifest) {
            return Ok(Some(Found {
                source,
                digest: pulled.digest,
                bytes: pulled.bytes,
                media_type: pulled.media_type,
                manifest,
                lock,
            }));
        }
    }
    Ok(None)
}

/// Points `tag` at the found image in its repository (a lock hit in the push target): one
/// manifest PUT of the same bytes, nothing uploaded.
pub(crate) fn retag(found: &Found, tag: &Tag) -> Result<(), BuildError> {
    let source = found.source;
    runtime()?.block_on(source.registry.push_manifest(
        &source.repo,
        &ManifestRef::Tag(tag.clone()),
        &found.bytes,
        &found.media_type,
    ))?;
    Ok(())
}

/// What the local store records for a pulled answer.
pub(crate) struct LocalRecord<'a> {
    pub spec: &'a Digest,
    pub spec_json: &'a str,
    pub lock_json: &'a str,
    pub name: &'a str,
    pub tag: &'a str,
}

/// Brings the found image into the store if the cache says so (every blob the store lacks,
/// verified), recorded for the spec and tagged as a local build is; says where it is.
pub(crate) fn answer(
    home: &Home,
    cache: &RegistryCache,
    found: &Found,
    platform: Platform,
    record: &LocalRecord,
) -> Result<RegistryImage, BuildError> {
    let repository = found.source.repository();
    let image = format!("{repository}@{}", found.digest);
    let pulled = cache.must_pull(found.source);
    if pulled {
        pull_into_store(home, found, &image, platform, record)?;
    }
    Ok(RegistryImage {
        image,
        repository,
        pulled,
    })
}

fn pull_into_store(
    home: &Home,
    found: &Found,
    image: &str,
    platform: Platform,
    record: &LocalRecord,
) -> Result<(), BuildError> {
    let reference: ImageRef = image.parse().map_err(RegistryError::from)?;
    let lease = home.index.lease("build", LeaseOwner::current_process())?;
    let staging = home.store.pull_staging_dir();
    let fetched = runtime()?.block_on(fetch_image(
        &found.source.registry,
        &reference,
        image,
        platform,
        home,
        &staging,
        Some(&lease),
    ))?;
    fetched.adopt_into(home)?;
    let manifest = &fetched.manifest;
    let lock = manifest
        .annotations
        .get(ANNOTATION_LOCK)
        .and_then(|v| v.parse::<Digest>().ok());
    let base = manifest
        .annotations
        .get(ANNOTATION_BASE)
        .and_then(|v| v.parse::<Digest>().ok());
    let (Some(lock), Some(base)) = (lock, base) else {
        return Err(BuildError::Internal(format!(
            "{image} lost its strata annotations between two reads"
        )));
    };
    home.index.record_build(
        &EnvRecord {
            spec: record.spec.clone(),
            lock,
            base,
            manifest: fetched.digest.clone(),
            tag: record.tag.to_string(),
            size: manifest.blob_bytes(),
            spec_json: record.spec_json.to_string(),
            name: record.name.to_string(),
        },
        record.lock_json,
        &[],
    )?;
    let mut annotations = std::collections::BTreeMap::new();
    annotations.insert(TAG_ANNOTATION_SPEC.to_string(), record.spec.to_string());
    home.store.tag(
        record.tag,
        &BlobDescriptor {
            media_type: manifest.media_type().to_string(),
            digest: fetched.digest.clone(),
            size: fetched.manifest_bytes.len() as u64,
        },
        annotations,
    )?;
    home.index
        .touch_push(&found.source.repository(), &fetched.digest)?;
    lease.release()?;
    Ok(())
}
