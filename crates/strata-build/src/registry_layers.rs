//! Step 3 of the registry cache: layers from the layer index kept in the cache's registries
//! (see [`strata_registry::LayerEntry`]). A build that found neither its spec nor its lock
//! there looks up each layer it lacks by its key (wheel sha256, install scheme, layer format)
//! and takes the blob from the registry instead of fetching the wheel and compressing it: a
//! one-package change on an empty CI runner builds one layer, not all of them.
//!
//! Found blobs are downloaded (verified against their digest) into staged files of the store,
//! like the layers the build makes itself, and committed with them; the image is whole in
//! the local store, so a push sends only what the registry lacks (the new layers, the env
//! layer, config and manifest) and a job can run it. The diff_id an entry names is taken as
//! it is (trust is the repository's, as for the images steps 1 and 2 find);
//! `strata verify` rebuilds an image and compares.
//!
//! Pushes write the entries ([`publish_entries`]) the repository lacks: one per package layer
//! of the image, in the repository pushed to. Entries are only read from the repositories of the build's
//! cache: the push target and the ones the user named (`--cache-from`, `[cache] registry`).
//!
//! A registry that fails here costs only the reuse: a warning, and the layer is built.

use std::sync::atomic::{AtomicBool, Ordering};

use futures_util::stream::{self, StreamExt};
use strata_index::LayerKey;
use strata_install::InstalledPath;
use strata_oci::{BlobDescriptor, Digest, LayerDescriptor, Manifest, StagedBlob};
use strata_registry::{
    EntryWrite, LayerEntry, LayerEntryKey, Registry, RegistryError, RegistryRepo,
};

use crate::error::BuildError;
use crate::home::Home;
use crate::overlap;
use crate::publish::runtime;
use crate::remote_cache::{DamagedBlob, Lookups, RegistryCache};

/// Lookups and downloads in flight at once: enough to hide the latency of a registry on
/// the network, few enough not to flood it.
const CONCURRENCY: usize = 8;

/// Entry writes in flight at once: mostly a HEAD each (an entry already there is left
/// alone), so more than the downloads.
const WRITE_CONCURRENCY: usize = 16;

/// The largest path list taken from an entry (scipy's is about 1 MB): past it, or when the
/// list cannot be read, the overlap check reads the layer itself.
const MAX_PATHS_BYTES: u64 = 64 << 20;

/// A layer found in a registry and downloaded into a staged blob.
pub(crate) struct FetchedLayer {
    pub layer: LayerDescriptor,
    pub staged: StagedBlob,
    /// Its files and symlinks, when the entry listed them.
    pub paths: Option<Vec<InstalledPath>>,
    /// `REGISTRY/REPO` it came from.
    pub repository: String,
}

fn entry_key(key: &LayerKey) -> LayerEntryKey {
    LayerEntryKey {
        source: key.source.clone(),
        scheme: key.scheme.clone(),
        format: key.format,
    }
}

/// What a build asks the layer index for.
pub(crate) struct Wanted<'a> {
    pub keys: &'a [&'a LayerKey],
    /// What messages call each layer of `keys` (its wheels).
    pub names: &'a [String],
    /// The media type of the layers the build makes (its compression): an entry naming
    /// another one is refused, as an image naming it could not be unpacked.
    pub media_type: &'a str,
    /// The bytes of each layer's wheels, when the lock knows them: an entry may not claim a
    /// layer much larger ([`layer_size_limit`]).
    pub wheel_bytes: &'a [Option<u64>],
}

/// The largest layer a layer index entry may claim for wheels of `wheel_bytes`. A layer
/// holds the wheels' files compressed again: gzip carries their own deflate streams and zstd
/// does as well, within 4% of the wheel for the data-science set; with `--compile` the
/// bytecode comes on top (sympy's layer is 3.3 times its wheel). Eight times the wheels and
/// 16 MiB of headers is more than any real layer, and bounds what a registry can make a
/// build download for one: past it the entry is not believed, and nothing is downloaded.
pub(crate) fn layer_size_limit(wheel_bytes: u64) -> u64 {
    wheel_bytes.saturating_mul(8).saturating_add(16 << 20)
}

/// The layers of `wanted` some repository of `cache` has, downloaded; `None` for the
/// others. Failures are warnings in `lookups`.
pub(crate) fn fetch(
    home: &Home,
    cache: &RegistryCache,
    wanted: &Wanted,
    lookups: &mut Lookups,
) -> Result<Vec<Option<FetchedLayer>>, BuildError> {
    let keys = wanted.keys;
    let mut found: Vec<Option<FetchedLayer>> = keys.iter().map(|_| None).collect();
    if keys.is_empty() {
        return Ok(found);
    }
    let rt = runtime()?;
    for source in &cache.sources {
        let (registry, repo) = source.client();
        if lookups.has_failed(&source.repository()) {
            continue;
        }
        let missing: Vec<usize> = (0..keys.len()).filter(|&i| found[i].is_none()).collect();
        if missing.is_empty() {
            break;
        }
        let results = rt.block_on(fetch_from(home, registry, repo, wanted, &missing));
        let mut down = None;
        for (i, result) in results {
            match result {
                Ok(Some((layer, staged, paths))) => {
                    found[i] = Some(FetchedLayer {
                        layer,
                        staged,
                        paths,
                        repository: source.repository(),
                    })
                }
                Ok(None) => {}
                Err(Failure::Damaged { layer, error }) => {
                    lookups.warn(not_reused(&wanted.names[i], &source.repository(), &error));
                    lookups.damaged.push(DamagedBlob {
                        repository: source.repository(),
                        layer,
                        what: wanted.names[i].clone(),
                    });
                }
                Err(Failure::Layer(e)) => {
                    lookups.warn(not_reused(&wanted.names[i], &source.repository(), &e))
                }
                Err(Failure::Repository(e)) => {
                    down.get_or_insert(e);
                }
            }
        }
        if let Some(e) = down {
            lookups.fail(
                source.repository(),
                format!(
                    "registry cache {} failed while its layer index was read ({}); the layers \
                     not found yet are built without it",
                    source.repository(),
                    strata_errors::chain(&e)
                ),
            );
        }
    }
    Ok(found)
}

/// The warning for a layer of `repository` that could not be taken.
fn not_reused(name: &str, repository: &str, error: &BuildError) -> String {
    format!(
        "{name} from {repository} was not reused ({}); building it",
        strata_errors::chain(error)
    )
}

/// Why a layer of a repository was not taken.
enum Failure {
    /// The layer's own (its blob cannot be read): the other layers are asked.
    Layer(BuildError),
    /// The registry served the layer's blob with other bytes than its digest: as
    /// [`Failure::Layer`], and remembered, so that no image naming it is pushed there.
    Damaged {
        layer: BlobDescriptor,
        error: BuildError,
    },
    /// The repository's (its layer index cannot be read, or it stopped answering): it is
    /// not asked again by this build, so an outage costs one wait for retries, not one per
    /// layer.
    Repository(BuildError),
}

type Outcome = Result<Option<(LayerDescriptor, StagedBlob, Option<Vec<InstalledPath>>)>, Failure>;

async fn fetch_from(
    home: &Home,
    registry: &Registry,
    repo: &RegistryRepo,
    wanted: &Wanted<'_>,
    indices: &[usize],
) -> Vec<(usize, Outcome)> {
    let down = &AtomicBool::new(false);
    stream::iter(indices.iter().copied())
        .map(|i| async move {
            // Lookups not started when the repository failed are not sent.
            if down.load(Ordering::Relaxed) {
                return (i, Ok(None));
            }
            let outcome = fetch_one(home, registry, repo, wanted, i).await;
            if let Err(Failure::Repository(_)) = outcome {
                down.store(true, Ordering::Relaxed);
            }
            (i, outcome)
        })
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await
}

async fn fetch_one(
    home: &Home,
    registry: &Registry,
    repo: &RegistryRepo,
    wanted: &Wanted<'_>,
    i: usize,
) -> Outcome {
    let media_type = wanted.media_type;
    let entry = registry
        .read_layer_entry(repo, &entry_key(wanted.keys[i]))
        .await;
    let Some(found) = entry.map_err(|e| Failure::Repository(e.into()))? else {
        return Ok(None);
    };
    let layer = found.layer;
    // The key names the compression, so a sound entry has its media type: another one is
    // a malformed entry (the blob would be announced as what it is not).
    if layer.media_type != media_type {
        tracing::warn!(%repo, layer = %layer.digest, media_type = %layer.media_type,
            "ignoring a layer index entry in another media type than {media_type}");
        return Ok(None);
    }
    if let Some(wheels) = wanted.wheel_bytes[i] {
        let limit = layer_size_limit(wheels);
        if layer.size > limit {
            return Err(Failure::Layer(BuildError::ImplausibleLayerSize {
                claimed: layer.size,
                wheels,
                limit,
            }));
        }
    }
    let slot = home
        .store
        .download_slot()
        .map_err(|e| Failure::Layer(e.into()))?;
    // The path list is fetched beside the layer, not after it: one round trip less per layer
    // on a distant registry.
    let blob = layer.blob();
    let (pulled, paths) = futures_util::join!(
        registry.pull_blob_to_file(repo, &blob, slot.path()),
        async {
            match &found.paths {
                Some(list) => entry_paths(registry, repo, list).await,
                None => None,
            }
        }
    );
    match pulled {
        Ok(()) => {}
        // The entry outlived its blob (deleted by hand or by a registry GC): a miss.
        Err(e) if e.status() == Some(404) => return Ok(None),
        // Retried and still failing, or stalled: the registry, not this blob (the other
        // lookups would wait as long).
        Err(e) if e.is_transient() || matches!(e, RegistryError::Stalled { .. }) => {
            return Err(Failure::Repository(e.into()))
        }
        // Bytes that hash to another digest: damaged where the registry keeps them, or on the
        // way (the push reads the target's copy again). A size alone that differs is the
        // entry's error.
        Err(e @ RegistryError::DigestMismatch { .. }) => {
            return Err(Failure::Damaged {
                layer: layer.blob(),
                error: e.into(),
            })
        }
        Err(e) => return Err(Failure::Layer(e.into())),
    }
    // pull_blob_to_file checked the bytes against the digest and size.
    let staged = slot.into_staged(layer.digest.clone(), layer.size);
    Ok(Some((layer, staged, paths)))
}

/// The path list an entry carries; `None` (the layer is read instead) when it is too large,
/// cannot be downloaded or is not a list.
async fn entry_paths(
    registry: &Registry,
    repo: &RegistryRepo,
    list: &BlobDescriptor,
) -> Option<Vec<InstalledPath>> {
    if list.size > MAX_PATHS_BYTES {
        tracing::debug!(%repo, blob = %list.digest, size = list.size,
            "a layer index entry's path list is too large; reading the layer instead");
        return None;
    }
    let bytes = match registry.pull_blob_bytes(repo, list).await {
        Ok(bytes) => bytes,
        Err(e) => {
            tracing::debug!(%repo, blob = %list.digest, error = %strata_errors::chain(&e),
                "could not read a layer index entry's path list; reading the layer instead");
            return None;
        }
    };
    let paths = std::str::from_utf8(&bytes)
        .ok()
        .and_then(overlap::paths_from_json);
    if paths.is_none() {
        tracing::debug!(%repo, blob = %list.digest,
            "a layer index entry's path list is not one; reading the layer instead");
    }
    paths
}

/// Writes the layer index entries of the package layers of `manifest` (every layer this
/// store knows the key of) into `repo`, after the image was pushed there and the config blob
/// the entries share was (`prepared_bytes` of it uploaded, counted with theirs). A failure is
/// returned for the caller to show as a warning: the image is pushed either way.
pub(crate) async fn publish_entries(
    home: &Home,
    registry: &Registry,
    repo: &RegistryRepo,
    manifest: &Manifest,
    prepared_bytes: u64,
) -> Result<EntriesWritten, BuildError> {
    let digests: Vec<Digest> = manifest.layers.iter().map(|l| l.digest.clone()).collect();
    let known = home.index.layers_by_digest(&digests)?;
    if known.is_empty() {
        return Ok(EntriesWritten::default());
    }
    let mut bytes_uploaded = prepared_bytes;
    let mut entries = Vec::with_capacity(known.len());
    for (key, layer) in &known {
        let entry = LayerEntry {
            key: entry_key(key),
            layer: layer.clone(),
        };
        entries.push((entry, home.index.layer_paths(&layer.digest)?));
    }
    let writes = entries.iter().map(|(entry, paths)| async move {
        registry
            .write_layer_entry(repo, entry, paths.as_deref().map(str::as_bytes))
            .await
    });
    let results: Vec<Result<EntryWrite, RegistryError>> = stream::iter(writes)
        .buffer_unordered(WRITE_CONCURRENCY)
        .collect()
        .await;
    let mut written = 0;
    for result in results {
        if let EntryWrite::Written { bytes_uploaded: b } = result? {
            written += 1;
            bytes_uploaded += b;
        }
    }
    Ok(EntriesWritten {
        entries: known.len(),
        written,
        bytes_uploaded,
    })
}

/// What [`publish_entries`] did: the entries in place, those it wrote (the others were there
/// already), and the bytes of their blobs it uploaded (path lists; counted apart from the
/// image's own).
#[derive(Debug, Default)]
pub(crate) struct EntriesWritten {
    pub entries: usize,
    pub written: usize,
    pub bytes_uploaded: u64,
}
