//! Moving images between the local store and registries: pushing an image of the store,
//! pulling one into it, and fetching a base image by reference.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use strata_index::{Lease, LeaseOwner};
use strata_oci::{BlobDescriptor, Digest};
use strata_oci::{Manifest, ManifestDocument};
use strata_registry::{
    push_image, tag_pushed_manifest, ImageRef, ImageUpload, ManifestRef, PushOptions, Registry,
    RegistryError, RegistryRepo, Tag, UsageUpdate,
};

use crate::base::{BaseError, BaseImage};
use crate::build::Built;
use crate::error::BuildError;
use crate::home::Home;
use crate::image::{ANNOTATION_LAYER_FORMAT, ANNOTATION_LOCK};
use crate::layers::hold;
use crate::progress::Progress;
use crate::registry_layers::publish_entries;
use crate::remote_cache::{lock_tag_of, CacheSource, DamagedBlob};
use strata_python::Platform;

/// What a push did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Pushed {
    /// `REGISTRY/REPO@DIGEST`: pullable, and never moves.
    pub image: String,
    pub repository: String,
    pub tag: String,
    pub bytes_uploaded: u64,
    pub blobs_uploaded: usize,
    pub blobs_present: usize,
    pub blobs_mounted: usize,
    /// Layer index entries in place after the push (one per package layer whose key this
    /// store knows).
    pub layer_entries: usize,
    /// Of `layer_entries`, those this push wrote: the others were in the registry already,
    /// and were left as they were.
    pub layer_entries_written: usize,
    /// Bytes of the layer index's own blobs uploaded (the entries' path lists), apart from
    /// `bytes_uploaded`, which counts the image's blobs.
    pub layer_entry_bytes_uploaded: u64,
    /// What went wrong without failing the push (layer index entries not written).
    pub warnings: Vec<String>,
}

/// What a pull did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Pulled {
    pub image: String,
    pub digest: Digest,
    /// The local tag it was given.
    pub tag: String,
    pub bytes_downloaded: u64,
    pub blobs_downloaded: usize,
    pub blobs_present: usize,
    /// The image is a strata environment and now answers builds of any spec of its lock.
    pub environment: bool,
}

/// A single-threaded runtime for the registry calls of one command.
pub(crate) fn runtime() -> Result<tokio::runtime::Runtime, BuildError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|source| BuildError::Io {
            what: "starting the async runtime".into(),
            source,
        })
}

/// The client of `REGISTRY/REPO` (a push target or a cache repository); no request yet.
pub(crate) fn connect(
    target: &str,
    insecure: bool,
) -> Result<(Registry, RegistryRepo), BuildError> {
    let repo: RegistryRepo = target.parse().map_err(RegistryError::from)?;
    let registry = Registry::new(&repo.registry, insecure)?;
    Ok((registry, repo))
}

/// A push target: `REGISTRY/REPO`.
pub struct PushTarget {
    registry: Registry,
    repo: RegistryRepo,
}

impl PushTarget {
    /// Parses `REGISTRY/REPO`; no request yet.
    pub fn new(target: &str, insecure: bool) -> Result<PushTarget, BuildError> {
        let (registry, repo) = connect(target, insecure)?;
        Ok(PushTarget { registry, repo })
    }

    /// This target as the first place a build looks for its image.
    pub fn cache_source(&self) -> CacheSource {
        CacheSource::push_target(self.registry.clone(), self.repo.clone())
    }

    /// Pushes what `build` built, unless the build's answer came from this repository (a
    /// registry hit or lock hit), where it already is under its tag: then nothing is sent.
    pub fn push_built(
        &self,
        home: &Home,
        built: &Built,
        progress: &dyn Progress,
    ) -> Result<Pushed, BuildError> {
        let target = self.repo.to_string();
        if let Some(blob) = self.damaged_here(home, built)? {
            return Err(BuildError::DamagedRegistryBlob {
                target,
                blob: Box::new(blob),
            });
        }
        match &built.registry {
            Some(found) if found.repository == target => Ok(Pushed {
                image: found.image.clone(),
                repository: target,
                tag: built.tag.clone(),
                ..Pushed::default()
            }),
            _ => {
                // Layers the build took from this very repository are there: no HEAD each.
                let known_present = built
                    .layers
                    .iter()
                    .filter(|l| l.registry.as_deref() == Some(target.as_str()))
                    .map(|l| l.digest.clone())
                    .collect();
                self.push_knowing(home, &built.digest, &built.tag, known_present, progress)
            }
        }
    }

    /// The first layer of `built` that a registry of the cache served damaged and that this
    /// target holds damaged too. The target keeps the bytes it has on a new upload of the
    /// digest, so the push would name them; its copy is read again, since the first read
    /// may have come through another address, a proxy's copy or a bad transfer.
    fn damaged_here(&self, home: &Home, built: &Built) -> Result<Option<DamagedBlob>, BuildError> {
        let named =
            |blob: &&DamagedBlob| built.layers.iter().any(|l| l.digest == blob.layer.digest);
        let suspects: Vec<&DamagedBlob> = built.damaged_blobs.iter().filter(named).collect();
        if suspects.is_empty() {
            return Ok(None);
        }
        let rt = runtime()?;
        for blob in suspects {
            let digest = &blob.layer.digest;
            if !rt.block_on(self.registry.blob_exists(&self.repo, digest))? {
                continue;
            }
            // Dropped unused: the bytes are only read to be checked.
            let slot = home.store.download_slot()?;
            let read = self
                .registry
                .pull_blob_to_file(&self.repo, &blob.layer, slot.path());
            match rt.block_on(read) {
                Ok(()) => {}
                Err(RegistryError::DigestMismatch { .. }) => return Ok(Some(blob.clone())),
                Err(e) => return Err(e.into()),
            }
        }
        Ok(None)
    }

    /// Checks that the registry answers (one blob HEAD).
    pub fn check(&self) -> Result<(), BuildError> {
        runtime()?.block_on(self.registry.blob_exists(&self.repo, &Digest::of(b"")))?;
        Ok(())
    }

    /// Pushes an image of the store under `tag`: nothing when the tag already names the
    /// digest (one HEAD), otherwise only the blobs the registry lacks (mounted from another
    /// repository of the registry where strata pushed them before), then the manifest by
    /// digest and the tag.
    pub fn push(
        &self,
        home: &Home,
        digest: &Digest,
        tag: &str,
        progress: &dyn Progress,
    ) -> Result<Pushed, BuildError> {
        self.push_knowing(home, digest, tag, HashSet::new(), progress)
    }

    /// [`PushTarget::push`], counting the blobs of `known_present` in the target already.
    fn push_knowing(
        &self,
        home: &Home,
        digest: &Digest,
        tag: &str,
        known_present: HashSet<Digest>,
        progress: &dyn Progress,
    ) -> Result<Pushed, BuildError> {
        progress.stage("pushing");
        let tag: Tag = tag.parse().map_err(RegistryError::from)?;
        let rt = runtime()?;
        let target = self.repo.to_string();
        let mut pushed = Pushed {
            image: format!("{target}@{digest}"),
            repository: target.clone(),
            tag: tag.as_str().to_string(),
            ..Pushed::default()
        };
        let by_tag = ManifestRef::Tag(tag.clone());
        let present = rt.block_on(self.registry.manifest_exists(&self.repo, &by_tag))?;
        let (manifest_bytes, manifest) = stored_manifest(home, digest)?;
        let (name, spec) = env_of(home, digest, tag.as_str())?;
        if present.as_ref() == Some(digest) {
            // Already there: one HEAD, nothing else sent (a build hit with `--push`). A caller
            // for whom this is a use of the image in the registry (a Kubernetes launch) says
            // so with `record_use`.
            home.index
                .record_push(&target, digest, Some(tag.as_str()), &name, spec.as_ref())?;
            return Ok(pushed);
        }
        // Hold the blobs against a concurrent GC while they are read.
        let lease = home.index.lease("push", LeaseOwner::current_process())?;
        hold(home, &lease, &image_digests(digest, &manifest))?;
        refuse_corrupt(home, digest, &manifest)?;
        let blobs: Vec<(BlobDescriptor, PathBuf)> = manifest
            .blobs()
            .map(|d| (d.blob(), home.store.blob_path(&d.digest)))
            .collect();
        let upload = ImageUpload {
            manifest: &manifest_bytes,
            manifest_digest: digest,
            media_type: manifest.media_type(),
            tag: Some(&tag),
            blobs: &blobs,
        };
        let mount_from = home
            .index
            .pushed_repos(&self.repo.registry, &target)?
            .into_iter()
            .find_map(|r| r.parse::<RegistryRepo>().ok());
        let options = PushOptions {
            mount_from,
            known_present,
            ..PushOptions::default()
        };
        let report = rt.block_on(push_image(&self.registry, &self.repo, &upload, &options))?;
        // What follows the image goes out at once (on a distant registry each request is a
        // round trip), after the config blob the layer index entries and the usage record
        // share: their manifests, pushed together, must not race its upload.
        let shared = rt.block_on(self.registry.prepare_layer_entries(&self.repo));
        let (lock_tagged, entries, used) = rt.block_on(async {
            futures_util::join!(
                self.push_lock_tag(&manifest, &manifest_bytes),
                async {
                    let bytes = shared?;
                    publish_entries(home, &self.registry, &self.repo, &manifest, bytes).await
                },
                self.record_usage(digest, &tag, &name),
            )
        });
        lock_tagged?;
        // The layer index: later builds of other environments, on any machine pushing here,
        // take these layers instead of building them. A failure costs only that reuse, and is
        // reported (`--json` too), so that a CI job can tell.
        match entries {
            Ok(written) => {
                pushed.layer_entries = written.entries;
                pushed.layer_entries_written = written.written;
                pushed.layer_entry_bytes_uploaded = written.bytes_uploaded;
            }
            Err(e) => pushed.warnings.push(format!(
                "the layer index entries of {digest} were not written to {target} (builds \
                 elsewhere will build these layers again): {}",
                strata_errors::chain(&e)
            )),
        }
        progress.uploaded(report.bytes_uploaded);
        home.index
            .record_push(&target, digest, Some(tag.as_str()), &name, spec.as_ref())?;
        used?;
        lease.release()?;
        pushed.bytes_uploaded = report.bytes_uploaded;
        pushed.blobs_uploaded = report.blobs_uploaded;
        pushed.blobs_present = report.blobs_present;
        pushed.blobs_mounted = report.blobs_mounted;
        Ok(pushed)
    }
}

impl PushTarget {
    /// Records a use of the image (pushed before under `tag`) in the registry's usage record,
    /// which registry GC runs on every machine read: a Kubernetes launch is such a use.
    pub fn record_use(&self, home: &Home, digest: &Digest, tag: &str) -> Result<(), BuildError> {
        let tag: Tag = tag.parse().map_err(RegistryError::from)?;
        let name = home
            .index
            .envs_by_manifest(digest)?
            .into_iter()
            .next()
            .map(|row| row.record.name)
            .unwrap_or_default();
        home.index.touch_push(&self.repo.to_string(), digest)?;
        runtime()?.block_on(self.record_usage(digest, &tag, &name))
    }

    /// Records the push or use in the registry itself (`strata-registry::usage`), where a
    /// registry GC run from any machine reads it; the local `pushes` row only this machine
    /// sees.
    /// The lock's tag on the image too, so that a build of another spec with the same lock
    /// finds it.
    async fn push_lock_tag(&self, manifest: &Manifest, bytes: &[u8]) -> Result<(), BuildError> {
        let Some(lock_tag) = lock_tag_of(manifest) else {
            return Ok(());
        };
        let pushed = (bytes, manifest.media_type());
        tag_pushed_manifest(&self.registry, &self.repo, &lock_tag, pushed).await?;
        Ok(())
    }

    async fn record_usage(&self, digest: &Digest, tag: &Tag, name: &str) -> Result<(), BuildError> {
        let update = UsageUpdate {
            manifest: digest,
            tag: Some(tag.as_str()),
            name,
            now: strata_index::now(),
        };
        self.registry.record_usage(&self.repo, &update).await?;
        Ok(())
    }
}

/// A corrupt or missing blob is never pushed: it is quarantined and the push refused, with
/// the image to rebuild or pull named.
fn refuse_corrupt(home: &Home, digest: &Digest, manifest: &Manifest) -> Result<(), BuildError> {
    for d in manifest.blobs() {
        let state = strata_index::check_blob(&home.store, &home.index, &d.digest)?;
        if state != strata_index::BlobState::Ok {
            return Err(BuildError::DamagedImage {
                image: digest.clone(),
                blob: d.digest.clone(),
            });
        }
    }
    Ok(())
}

/// The digests an image consists of: manifest, config, layers.
pub fn image_digests(digest: &Digest, manifest: &Manifest) -> Vec<Digest> {
    std::iter::once(digest.clone())
        .chain(std::iter::once(manifest.config.digest.clone()))
        .chain(manifest.layers.iter().map(|l| l.digest.clone()))
        .collect()
}

fn stored_manifest(home: &Home, digest: &Digest) -> Result<(Vec<u8>, Manifest), BuildError> {
    let bytes = home.store.read_blob(digest)?;
    match ManifestDocument::parse(&bytes) {
        Ok(ManifestDocument::Image(m)) => Ok((bytes, m)),
        _ => Err(BuildError::NotAnImage {
            digest: digest.clone(),
        }),
    }
}

/// The environment name and spec digest of an image pushed under `tag`, from the index: the
/// spec whose tag it is, else any spec of the image (specs of one lock share it). The image
/// carries no spec, so one this store did not build has neither.
fn env_of(home: &Home, digest: &Digest, tag: &str) -> Result<(String, Option<Digest>), BuildError> {
    let mut rows = home.index.envs_by_manifest(digest)?;
    let chosen = match rows.iter().position(|row| row.record.tag == tag) {
        Some(i) => Some(rows.swap_remove(i)),
        None => rows.into_iter().next(),
    };
    Ok(match chosen {
        Some(row) => (row.record.name, Some(row.record.spec)),
        None => (String::new(), None),
    })
}

/// Pulls `REGISTRY/REPO[:TAG|@DIGEST]` into the store and tags it locally (the remote tag,
/// else `pulled-<digest prefix>`). Blobs the store has are not downloaded; blobs are staged
/// beside the store, verified, and survive a failed pull, so a retry downloads only the rest.
pub fn pull(
    home: &Home,
    reference: &str,
    insecure: bool,
    platform: Platform,
    progress: &dyn Progress,
) -> Result<Pulled, BuildError> {
    progress.stage("pulling");
    let image: ImageRef = reference.parse().map_err(RegistryError::from)?;
    let registry = Registry::new(&image.repo.registry, insecure)?;
    let staging = home.store.pull_staging_dir();
    let rt = runtime()?;
    let lease = home.index.lease("pull", LeaseOwner::current_process())?;
    let fetched = rt.block_on(fetch_image(
        &registry,
        &image,
        reference,
        platform,
        home,
        &staging,
        Some(&lease),
    ))?;
    fetched.adopt_into(home)?;
    let tag = match &image.reference {
        Some(ManifestRef::Tag(t)) => t.as_str().to_string(),
        _ => format!("pulled-{}", fetched.digest.short(12)),
    };
    home.store.tag(
        &tag,
        &BlobDescriptor {
            media_type: fetched.manifest.media_type().to_string(),
            digest: fetched.digest.clone(),
            size: fetched.manifest_bytes.len() as u64,
        },
        Default::default(),
    )?;
    let environment = record_pulled_env(home, &fetched)?;
    home.index
        .touch_push(&image.repo.to_string(), &fetched.digest)?;
    lease.release()?;
    Ok(Pulled {
        image: format!("{}@{}", image.repo, fetched.digest),
        digest: fetched.digest,
        tag,
        bytes_downloaded: fetched.bytes_downloaded,
        blobs_downloaded: fetched.staged.len(),
        blobs_present: fetched.present,
        environment,
    })
}

/// A pulled strata environment answers later builds of any spec that resolves to its lock on
/// its base (a lock hit: re-tagged, nothing built). The image names its lock, base and layer
/// format, never a spec.
fn record_pulled_env(home: &Home, fetched: &Fetched) -> Result<bool, BuildError> {
    let annotations = &fetched.manifest.annotations;
    let digest = |key: &str| annotations.get(key).and_then(|v| v.parse::<Digest>().ok());
    let (Some(lock), Some(base), Some(_format)) = (
        digest(ANNOTATION_LOCK),
        digest("org.opencontainers.image.base.digest"),
        annotations.get(ANNOTATION_LAYER_FORMAT),
    ) else {
        return Ok(false);
    };
    home.index
        .record_lock_if_absent(&lock, &base, &fetched.digest)?;
    Ok(true)
}

/// An image fetched from a registry: its manifest, and the blobs downloaded for it.
pub(crate) struct Fetched {
    pub digest: Digest,
    pub manifest: Manifest,
    pub manifest_bytes: Vec<u8>,
    /// Downloaded (verified) blobs waiting in the staging area.
    pub staged: Vec<(Digest, PathBuf)>,
    pub present: usize,
    pub bytes_downloaded: u64,
}

impl Fetched {
    /// Moves the downloaded blobs and the manifest into the store, and stamps the blobs as
    /// verified (each was hashed on its way in): the next hit does not hash the image again.
    /// A failed stamp only costs that hashing.
    pub(crate) fn adopt_into(&self, home: &Home) -> Result<(), BuildError> {
        for (digest, path) in &self.staged {
            home.store.adopt_file(path, digest)?;
        }
        home.store.put_bytes(&self.manifest_bytes)?;
        let downloaded: Vec<Digest> = self.staged.iter().map(|(d, _)| d.clone()).collect();
        if let Err(e) = strata_index::mark_verified(&home.store, &home.index, &downloaded) {
            tracing::warn!("recording that the pulled blobs are verified: {e}");
        }
        Ok(())
    }
}

/// Fetches the manifest for `platform` and every blob the store lacks into `staging`
/// (`blobs/sha256/<hex>`, each verified before it is renamed into place).
pub(crate) async fn fetch_image(
    registry: &Registry,
    image: &ImageRef,
    reference: &str,
    platform: Platform,
    home: &Home,
    staging: &Path,
    lease: Option<&Lease<'_>>,
) -> Result<Fetched, BuildError> {
    let blobs = staging.join("blobs").join("sha256");
    std::fs::create_dir_all(&blobs).map_err(|source| BuildError::Io {
        what: format!("creating {}", blobs.display()),
        source,
    })?;
    let selector = image
        .reference
        .clone()
        .unwrap_or_else(|| ManifestRef::Tag("latest".parse().expect("valid tag")));
    let mut pulled = registry.pull_manifest(&image.repo, &selector).await?;
    if let Ok(ManifestDocument::Index(index)) = ManifestDocument::parse(&pulled.bytes) {
        let Some(entry) = index.manifest_for("linux", platform.arch.oci_name()) else {
            return Err(BuildError::Base(BaseError::NoPlatform {
                reference: reference.to_string(),
                platform,
            }));
        };
        pulled = registry
            .pull_manifest(&image.repo, &ManifestRef::Digest(entry.digest.clone()))
            .await?;
    }
    let manifest = match ManifestDocument::parse(&pulled.bytes) {
        Ok(ManifestDocument::Image(m)) => m,
        _ => {
            return Err(BuildError::Base(BaseError::Invalid {
                reference: reference.to_string(),
                detail: "not an image manifest".into(),
            }))
        }
    };
    // Held before looking at what the store has: a blob found present stays present.
    if let Some(lease) = lease {
        hold(home, lease, &image_digests(&pulled.digest, &manifest))?;
    }
    let mut fetched = Fetched {
        digest: pulled.digest.clone(),
        manifest_bytes: pulled.bytes,
        manifest: manifest.clone(),
        staged: Vec::new(),
        present: 0,
        bytes_downloaded: 0,
    };
    for d in manifest.blobs() {
        // A blob the store has is not downloaded again, unless it no longer verifies.
        let state = strata_index::check_blob(&home.store, &home.index, &d.digest)?;
        if state == strata_index::BlobState::Ok {
            fetched.present += 1;
            continue;
        }
        let dest = blobs.join(d.digest.hex());
        if dest.is_file() {
            // Staged by an earlier pull: young again, so gc leaves it to this one.
            touch(&dest)?;
        } else {
            registry
                .pull_blob_to_file(&image.repo, &d.blob(), &dest)
                .await?;
            fetched.bytes_downloaded += d.size;
        }
        fetched.staged.push((d.digest.clone(), dest));
    }
    Ok(fetched)
}

/// Fetches a base image from a registry into the staging area beside the store (not into
/// the store: a failed build must leave the store as it was; the build imports it on
/// success).
pub fn pull_base(
    home: &Home,
    reference: &str,
    platform: Platform,
) -> Result<BaseImage, BuildError> {
    let image: ImageRef = reference.parse().map_err(RegistryError::from)?;
    let registry = Registry::new(&image.repo.registry, false)?;
    let staging = home.store.pull_staging_dir();
    // The build that asked holds the base's blobs from the moment it imports them.
    let fetched = runtime()?.block_on(fetch_image(
        &registry, &image, reference, platform, home, &staging, None,
    ))?;
    let manifest_path = staging.join("blobs/sha256").join(fetched.digest.hex());
    std::fs::write(&manifest_path, &fetched.manifest_bytes).map_err(|source| BuildError::Io {
        what: format!("writing {}", manifest_path.display()),
        source,
    })?;
    // Blobs the store already had are read from the store.
    let base = BaseImage::from_blobs_in(
        &[staging.as_path(), home.store.root()],
        &fetched.digest,
        reference,
    )?;
    Ok(base)
}

/// Sets a file's modification time to now.
fn touch(path: &Path) -> Result<(), BuildError> {
    std::fs::File::open(path)
        .and_then(|file| file.set_modified(std::time::SystemTime::now()))
        .map_err(|source| BuildError::Io {
            what: format!("touching {}", path.display()),
            source,
        })
}
