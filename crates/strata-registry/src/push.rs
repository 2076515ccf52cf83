//! Pushing a whole image: only the blobs the registry lacks, then the manifest by digest, then
//! the tag. A push that failed half way is resumed by pushing again: the blobs that landed are
//! found by HEAD and not sent twice.
//!
//! Several pushes sharing blobs may run at once against one repository (users, the Kubernetes
//! agent). Each may upload a shared blob the others also lack, and the registry can trip over
//! that: see `landed_anyway` and `push_manifest_confirmed`.

use std::collections::HashSet;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures_util::StreamExt;

use crate::client::Registry;
use crate::error::RegistryError;
use crate::reference::{ManifestRef, RegistryRepo, Tag};
use strata_oci::{BlobDescriptor, Digest};

/// An image ready to push: the manifest bytes and every blob it references (config and
/// layers) with the local file holding it.
#[derive(Debug, Clone, Copy)]
pub struct ImageUpload<'a> {
    pub manifest: &'a [u8],
    pub manifest_digest: &'a Digest,
    pub media_type: &'a str,
    pub tag: Option<&'a Tag>,
    pub blobs: &'a [(BlobDescriptor, PathBuf)],
}

#[derive(Debug, Clone)]
pub struct PushOptions {
    /// Blobs checked and uploaded at the same time.
    pub concurrency: usize,
    /// A repository of the same registry that may already hold some blobs: they are mounted
    /// instead of uploaded.
    pub mount_from: Option<RegistryRepo>,
    /// Blobs the caller downloaded from the target repository moments ago: counted present
    /// without a HEAD each. Should the registry refuse the manifest for an unknown blob
    /// anyway, every blob is checked before the manifest is offered again.
    pub known_present: HashSet<Digest>,
}

impl Default for PushOptions {
    fn default() -> Self {
        PushOptions {
            concurrency: 4,
            mount_from: None,
            known_present: HashSet::new(),
        }
    }
}

/// How often a manifest is offered to a registry that says one of its blobs, all confirmed
/// present, is unknown. The registry's window is a few microseconds; a few tries suffice.
const MANIFEST_ATTEMPTS: u32 = 4;
/// Wait before the second offer of a manifest; doubled for each further one.
const MANIFEST_RETRY_DELAY: Duration = Duration::from_millis(50);

/// Puts `bytes` (of `media_type`) as the manifest `reference` in `repo`, and again, a bounded
/// number of times with a growing wait, while the registry calls one of its blobs unknown
/// although every blob was confirmed; `confirm` runs before each new offer, and what it
/// returned each time is returned.
///
/// docker-registry 2.8 (filesystem storage) rewrites a repository's link file for a blob in
/// place, truncating it first, each time an upload of that blob commits. A manifest PUT that
/// reads the link in that instant finds it empty and answers 400 `MANIFEST_BLOB_UNKNOWN` (with
/// `DIGEST_INVALID` for the unparsable link) although the blob is there. `confirm` checks the
/// blobs again and uploads any really missing, so a blob deleted meanwhile (by GC, say) is
/// restored rather than retried against in vain.
pub(crate) async fn offer_manifest<T, F, Fut>(
    registry: &Registry,
    repo: &RegistryRepo,
    reference: &ManifestRef,
    (bytes, media_type): (&[u8], &str),
    mut confirm: F,
) -> Result<Vec<T>, RegistryError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, RegistryError>>,
{
    let mut confirmed = Vec::new();
    let mut attempt = 1;
    loop {
        let err = match registry
            .push_manifest(repo, reference, bytes, media_type)
            .await
        {
            Ok(_) => return Ok(confirmed),
            Err(e) => e,
        };
        if !err.has_code("MANIFEST_BLOB_UNKNOWN") || attempt == MANIFEST_ATTEMPTS {
            return Err(err);
        }
        let delay = MANIFEST_RETRY_DELAY * 2u32.pow(attempt - 1);
        tracing::warn!(registry = %registry.host(), %repo, %reference, attempt, error = %err, ?delay,
            "manifest refused for a blob unknown to the registry; checking the blobs and retrying");
        tokio::time::sleep(delay).await;
        confirmed.push(confirm().await?);
        attempt += 1;
    }
}

/// What a push did. `bytes_uploaded` counts the bytes of the blobs this push landed, not the
/// manifest.
/// `blobs_present` counts blobs found in place, among them any whose upload the registry
/// refused because a concurrent push had just landed it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PushReport {
    pub bytes_uploaded: u64,
    pub blobs_uploaded: usize,
    pub blobs_present: usize,
    pub blobs_mounted: usize,
}

enum BlobOutcome {
    Present,
    Mounted,
    Uploaded(u64),
    /// Not started, because another blob had failed.
    Skipped,
}

/// Puts the manifest `bytes` under `tag` in `repo`, where its blobs already are (an image
/// pushed a moment ago, tagged once more), offered again while the registry calls one of
/// them unknown for an instant: a concurrent push that shares a blob rewrites its link (see
/// [`offer_manifest`]).
pub async fn tag_pushed_manifest(
    registry: &Registry,
    repo: &RegistryRepo,
    tag: &Tag,
    (bytes, media_type): (&[u8], &str),
) -> Result<(), RegistryError> {
    let reference = ManifestRef::Tag(tag.clone());
    let confirm = || async { Ok::<(), RegistryError>(()) };
    offer_manifest(registry, repo, &reference, (bytes, media_type), confirm).await?;
    Ok(())
}

/// Pushes `image` to `repo`. The manifest goes up only after every blob is in place, so the
/// registry never holds a manifest whose blobs are missing.
pub async fn push_image(
    registry: &Registry,
    repo: &RegistryRepo,
    image: &ImageUpload<'_>,
    options: &PushOptions,
) -> Result<PushReport, RegistryError> {
    let actual = Digest::of(image.manifest);
    if &actual != image.manifest_digest {
        return Err(RegistryError::DigestMismatch {
            registry: registry.host().to_string(),
            what: format!("manifest to push to {repo}"),
            expected: image.manifest_digest.clone(),
            actual,
        });
    }
    let mut report =
        push_blobs(registry, repo, image.blobs, options, &options.known_present).await?;
    let by_digest = ManifestRef::Digest(image.manifest_digest.clone());
    push_manifest_confirmed(registry, repo, image, &by_digest, options, &mut report).await?;
    if let Some(tag) = image.tag {
        let by_tag = ManifestRef::Tag(tag.clone());
        push_manifest_confirmed(registry, repo, image, &by_tag, options, &mut report).await?;
    }
    Ok(report)
}

/// Pushes the image's manifest under `reference` ([`offer_manifest`]: the blobs are pushed
/// again between offers).
async fn push_manifest_confirmed(
    registry: &Registry,
    repo: &RegistryRepo,
    image: &ImageUpload<'_>,
    reference: &ManifestRef,
    options: &PushOptions,
    report: &mut PushReport,
) -> Result<(), RegistryError> {
    let manifest = (image.manifest, image.media_type);
    let nothing_known: HashSet<Digest> = HashSet::new();
    let again = offer_manifest(registry, repo, reference, manifest, || {
        push_blobs(registry, repo, image.blobs, options, &nothing_known)
    })
    .await?;
    // Only what was sent again counts: the rest was counted on the first pass.
    for pass in again {
        report.blobs_uploaded += pass.blobs_uploaded;
        report.bytes_uploaded += pass.bytes_uploaded;
    }
    Ok(())
}

async fn push_blobs(
    registry: &Registry,
    repo: &RegistryRepo,
    blobs: &[(BlobDescriptor, PathBuf)],
    options: &PushOptions,
    known_present: &HashSet<Digest>,
) -> Result<PushReport, RegistryError> {
    // The same blob listed twice (a config equal to a layer, say) is pushed once.
    let mut seen = HashSet::new();
    let unique: Vec<&(BlobDescriptor, PathBuf)> = blobs
        .iter()
        .filter(|(d, _)| seen.insert(d.digest.clone()))
        .collect();
    let (known, unique): (Vec<_>, Vec<_>) = unique
        .into_iter()
        .partition(|(d, _)| known_present.contains(&d.digest));
    let mount_from = options
        .mount_from
        .as_ref()
        .filter(|from| from.registry == repo.registry && *from != repo);
    // The futures are built up front (they do nothing until polled): a closure inside the
    // stream would make the whole push future lose `Send`.
    let failed = AtomicBool::new(false);
    let pushes: Vec<_> = unique
        .into_iter()
        .map(|(blob, path)| push_one(registry, repo, blob, path, mount_from, &failed))
        .collect();
    // After a failure no new blob is started, but those in flight finish before the first
    // error is reported: what lands now is not sent again when the push is resumed.
    let outcomes: Vec<Result<BlobOutcome, RegistryError>> = futures_util::stream::iter(pushes)
        .buffer_unordered(options.concurrency.max(1))
        .collect()
        .await;
    let mut report = PushReport {
        blobs_present: known.len(),
        ..PushReport::default()
    };
    for outcome in outcomes {
        match outcome? {
            BlobOutcome::Present => report.blobs_present += 1,
            BlobOutcome::Mounted => report.blobs_mounted += 1,
            BlobOutcome::Uploaded(n) => {
                report.blobs_uploaded += 1;
                report.bytes_uploaded += n;
            }
            BlobOutcome::Skipped => {}
        }
    }
    Ok(report)
}

async fn push_one(
    registry: &Registry,
    repo: &RegistryRepo,
    blob: &BlobDescriptor,
    path: &Path,
    mount_from: Option<&RegistryRepo>,
    failed: &AtomicBool,
) -> Result<BlobOutcome, RegistryError> {
    if failed.load(Ordering::SeqCst) {
        return Ok(BlobOutcome::Skipped);
    }
    let outcome = transfer_one(registry, repo, blob, path, mount_from).await;
    if outcome.is_err() {
        failed.store(true, Ordering::SeqCst);
    }
    outcome
}

async fn transfer_one(
    registry: &Registry,
    repo: &RegistryRepo,
    blob: &BlobDescriptor,
    path: &Path,
    mount_from: Option<&RegistryRepo>,
) -> Result<BlobOutcome, RegistryError> {
    if registry.blob_exists(repo, &blob.digest).await? {
        return Ok(BlobOutcome::Present);
    }
    if let Some(from) = mount_from {
        if registry.mount_blob(repo, from, &blob.digest).await? {
            return Ok(BlobOutcome::Mounted);
        }
    }
    if let Err(err) = registry.push_blob_file(repo, blob, path).await {
        return landed_anyway(registry, repo, blob, err).await;
    }
    tracing::debug!(digest = %blob.digest, size = blob.size, %repo, "uploaded blob");
    Ok(BlobOutcome::Uploaded(blob.size))
}

/// Decides an upload the registry refused. Another push of the same blob may have committed
/// while ours ran, and some registries then refuse the second commit. The blob is content
/// addressed and the registry verified it when it landed, so it is as good as ours: accepted
/// only when a HEAD shows it with the expected size. Otherwise (absent, another size, the HEAD
/// failing) the upload's own error stands, naming the blob and the registry; so does any
/// failure that is not the registry's answer (a local read error, a cut connection).
async fn landed_anyway(
    registry: &Registry,
    repo: &RegistryRepo,
    blob: &BlobDescriptor,
    err: RegistryError,
) -> Result<BlobOutcome, RegistryError> {
    if !matches!(err, RegistryError::Http { .. }) {
        return Err(err);
    }
    match registry.blob_size(repo, &blob.digest).await {
        Ok(Some(size)) if size == blob.size => {
            // DIGEST_INVALID may also mean our local copy is damaged: the registry's copy is
            // sound, but the user should hear of it.
            if err.has_code("DIGEST_INVALID") {
                tracing::warn!(digest = %blob.digest, %repo, error = %err,
                    "the registry found our upload did not match its digest; it holds the blob from another push");
            } else {
                tracing::info!(digest = %blob.digest, %repo, error = %err,
                    "upload refused but the blob is in place, landed by a concurrent push");
            }
            Ok(BlobOutcome::Present)
        }
        _ => Err(err),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Callers spawn pushes and pulls on a multi-threaded runtime: the futures must be Send.
    #[allow(dead_code)]
    fn futures_are_send(registry: &Registry, repo: &RegistryRepo, image: &ImageUpload<'_>) {
        fn is_send<T: Send>(_: T) {}
        is_send(push_image(registry, repo, image, &PushOptions::default()));
        let blob = &image.blobs[0];
        is_send(registry.pull_blob_to_file(repo, &blob.0, &blob.1));
        is_send(registry.push_blob_file(repo, &blob.0, &blob.1));
        is_send(registry.list_tags(repo));
        is_send(registry.delete_manifest(repo, image.manifest_digest));
    }
}
