//! Moving images between the local store and registries: pushing a built image, and pulling
//! a base image by reference.

use std::path::PathBuf;

use strata_cache::manifest::ManifestDocument;
use strata_cache::registry::{
    push_image, ImageRef, ImageUpload, ManifestRef, PushOptions, Registry, RegistryError,
    RegistryRepo, Tag,
};
use strata_cache::{BlobDescriptor, Digest};

use crate::base::BaseImage;
use crate::build::Built;
use crate::error::BuildError;
use crate::home::Home;
use crate::progress::Progress;
use crate::target::Platform;

/// What a push did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Pushed {
    /// `REGISTRY/REPO@DIGEST`: pullable, and never moves.
    pub image: String,
    pub repository: String,
    pub tag: String,
    pub bytes_uploaded: u64,
    pub blobs_uploaded: usize,
    pub blobs_present: usize,
    pub blobs_mounted: usize,
}

/// A push target, checked before any work is done so that an unreachable registry fails
/// the command before it touches the store.
pub struct PushTarget {
    registry: Registry,
    repo: RegistryRepo,
}

fn runtime() -> Result<tokio::runtime::Runtime, BuildError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|source| BuildError::Io {
            what: "starting the async runtime".into(),
            source,
        })
}

impl PushTarget {
    /// Parses `REGISTRY/REPO`; no request yet.
    pub fn new(target: &str, insecure: bool) -> Result<PushTarget, BuildError> {
        let repo: RegistryRepo = target.parse().map_err(RegistryError::from)?;
        let registry = Registry::new(&repo.registry, insecure)?;
        Ok(PushTarget { registry, repo })
    }

    /// Checks that the registry answers (one blob HEAD).
    pub fn check(&self) -> Result<(), BuildError> {
        runtime()?.block_on(self.registry.blob_exists(&self.repo, &Digest::of(b"")))?;
        Ok(())
    }

    /// Pushes a built image: nothing when the tag already names the digest (one HEAD),
    /// otherwise only the blobs the registry lacks, then the manifest and the tag.
    pub fn push(
        &self,
        home: &Home,
        built: &Built,
        progress: &dyn Progress,
    ) -> Result<Pushed, BuildError> {
        progress.stage("pushing");
        let tag: Tag = built.tag.parse().map_err(RegistryError::from)?;
        let rt = runtime()?;
        let by_tag = ManifestRef::Tag(tag.clone());
        let present = rt.block_on(self.registry.manifest_exists(&self.repo, &by_tag))?;
        let mut pushed = Pushed {
            image: format!("{}@{}", self.repo, built.digest),
            repository: self.repo.to_string(),
            tag: built.tag.clone(),
            bytes_uploaded: 0,
            blobs_uploaded: 0,
            blobs_present: 0,
            blobs_mounted: 0,
        };
        if present.as_ref() == Some(&built.digest) {
            return Ok(pushed);
        }
        let manifest_bytes = home.store.read_blob(&built.digest)?;
        let ManifestDocument::Image(manifest) = ManifestDocument::parse(&manifest_bytes)
            .map_err(|e| BuildError::Internal(format!("stored manifest {}: {e}", built.digest)))?
        else {
            return Err(BuildError::Internal(format!(
                "{} is not an image manifest",
                built.digest
            )));
        };
        let blobs: Vec<(BlobDescriptor, PathBuf)> = std::iter::once(&manifest.config)
            .chain(manifest.layers.iter())
            .map(|d| (d.blob(), home.store.blob_path(&d.digest)))
            .collect();
        let upload = ImageUpload {
            manifest: &manifest_bytes,
            manifest_digest: &built.digest,
            media_type: manifest.media_type(),
            tag: Some(&tag),
            blobs: &blobs,
        };
        let report = rt.block_on(push_image(
            &self.registry,
            &self.repo,
            &upload,
            &PushOptions::default(),
        ))?;
        progress.uploaded(report.bytes_uploaded);
        home.index
            .record_push(&pushed.repository, &built.digest, Some(&built.tag))?;
        pushed.bytes_uploaded = report.bytes_uploaded;
        pushed.blobs_uploaded = report.blobs_uploaded;
        pushed.blobs_present = report.blobs_present;
        pushed.blobs_mounted = report.blobs_mounted;
        Ok(pushed)
    }
}

/// Pulls a base image from a registry into a download area beside the store (not into the
/// store: a failed build must leave the store as it was; the build imports it on success).
pub fn pull_base(
    home: &Home,
    reference: &str,
    platform: Platform,
) -> Result<BaseImage, BuildError> {
    let image: ImageRef = reference.parse().map_err(RegistryError::from)?;
    let registry = Registry::new(&image.repo.registry, false)?;
    let selector = image
        .reference
        .clone()
        .unwrap_or_else(|| ManifestRef::Tag("latest".parse().expect("valid tag")));
    let rt = runtime()?;
    let blobs = home.tmp().join("pulled").join("blobs").join("sha256");
    std::fs::create_dir_all(&blobs).map_err(|source| BuildError::Io {
        what: format!("creating {}", blobs.display()),
        source,
    })?;
    rt.block_on(async {
        let mut pulled = registry.pull_manifest(&image.repo, &selector).await?;
        if let Ok(ManifestDocument::Index(index)) = ManifestDocument::parse(&pulled.bytes) {
            let arch = platform.arch.oci_name();
            let entry = index.manifests.iter().find(|m| {
                m.platform
                    .as_ref()
                    .is_some_and(|p| p.os == "linux" && p.architecture == arch)
            });
            let Some(entry) = entry else {
                return Err(BuildError::Base(crate::base::BaseError::NoPlatform {
                    reference: reference.to_string(),
                    platform,
                }));
            };
            pulled = registry
                .pull_manifest(&image.repo, &ManifestRef::Digest(entry.digest.clone()))
                .await?;
        }
        let ManifestDocument::Image(manifest) = ManifestDocument::parse(&pulled.bytes)
            .map_err(|e| BuildError::Internal(format!("manifest of {reference}: {e}")))?
        else {
            return Err(BuildError::Internal(format!("{reference} is not an image")));
        };
        std::fs::write(blobs.join(pulled.digest.hex()), &pulled.bytes).map_err(|source| {
            BuildError::Io {
                what: format!("writing into {}", blobs.display()),
                source,
            }
        })?;
        for d in std::iter::once(&manifest.config).chain(manifest.layers.iter()) {
            let dest = blobs.join(d.digest.hex());
            if !dest.is_file() {
                registry
                    .pull_blob_to_file(&image.repo, &d.blob(), &dest)
                    .await?;
            }
        }
        Ok(pulled.digest)
    })
    .and_then(|digest| {
        let dir = blobs
            .parent()
            .and_then(|p| p.parent())
            .map(PathBuf::from)
            .unwrap_or_default();
        Ok(BaseImage::from_blobs(&dir, &digest, reference)?)
    })
}
