//! The layer index kept in a registry: for each layer strata built and pushed, a small entry
//! that says which blob holds the installed wheel (by the wheel's sha256, the install scheme
//! and the layer format), so that a build on another machine, with an empty store, takes the
//! layer from the registry instead of fetching and compressing the wheel again.
//!
//! One entry per layer key, under the tag `strata-layer-<32 hex of the key>` of the repository
//! the layer was pushed to. The entry is a tiny OCI image manifest, shaped like a usage record
//! (see `usage`): its config is the two-byte blob `{}` with the media type
//! [`MEDIA_TYPE_LAYER_ENTRY`], the annotation [`ANNOTATION_LAYER_ENTRY`] carries the entry as
//! JSON, and its one layer is the layer itself. Why this shape:
//! - one GET of a small manifest answers a lookup, with no blob download;
//! - the entry references the layer, so the registry keeps the blob (its own
//!   `garbage-collect` marks what tagged manifests reference) as long as the entry is there,
//!   and the blob is in the repository where a push of the next image finds it;
//! - concurrent writers never corrupt it: an entry names one reproducible layer, so two CI
//!   runners that push the same layer PUT the same entry (or, at worst, one whose path list
//!   credits a merged layer's files differently), and runners that push different layers write
//!   different tags. A reader checks that the entry names the key it asked for and the layer
//!   its tag promises, and treats anything else as a miss.
//!
//! The config blob may carry the layer's path list (its files and symlinks with their
//! content, as JSON: [`LayerEntry`] leaves its form to the caller), so that a build taking the
//! layer checks it for overlaps with the image's other layers without inflating it. Entries
//! of strata before that have the config `{}` and no list ([`FoundLayer::paths`] is `None`);
//! they read as before, and older strata reads the new ones (it checks the config's media
//! type only).

use serde::{Deserialize, Serialize};

use crate::client::Registry;
use crate::error::RegistryError;
use crate::push::offer_manifest;
use crate::reference::{ManifestRef, RegistryRepo, Tag};
use strata_oci::{BlobDescriptor, Digest, LayerDescriptor, MEDIA_TYPE_MANIFEST};

/// Prefix of the tags of layer index entries; never an environment's tag.
pub const LAYER_ENTRY_TAG_PREFIX: &str = "strata-layer-";
/// Media type of a layer index entry's config (the blob `{}`): marks the manifest as an entry.
pub const MEDIA_TYPE_LAYER_ENTRY: &str = "application/vnd.dev.strata.layer-entry.v1+json";
/// The annotation holding the entry's JSON.
pub const ANNOTATION_LAYER_ENTRY: &str = "dev.strata.layer-entry";
const EMPTY_CONFIG: &[u8] = b"{}";

/// What a layer was made from: the same key as the local layer index.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerEntryKey {
    /// The wheel's sha256 (or a digest of a merged group's wheel digests).
    pub source: Digest,
    /// The install scheme: venv path, Python, layer format, compression.
    pub scheme: String,
    pub format: u32,
}

/// One entry: the key and the layer built from it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerEntry {
    pub key: LayerEntryKey,
    pub layer: LayerDescriptor,
}

/// What [`Registry::write_layer_entry`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryWrite {
    /// The registry already held this very entry: nothing was sent.
    Present,
    /// The entry was written; `bytes_uploaded` counts its blobs (the path list), not the
    /// manifest, as for images.
    Written { bytes_uploaded: u64 },
}

/// What a lookup found: the layer, and the blob of its path list when the entry has one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundLayer {
    pub layer: LayerDescriptor,
    /// The entry's config when it is not `{}`: the path list, to fetch with
    /// [`Registry::pull_blob_bytes`] (bound its size first: it comes from the registry).
    pub paths: Option<BlobDescriptor>,
}

/// The tag of the entry of `key`: 128 bits of a digest of the key, so two keys never share
/// a tag in practice (and a reader checks the key anyway).
pub fn layer_entry_tag(key: &LayerEntryKey) -> Tag {
    let digest = Digest::of(
        format!(
            "strata layer\n{}\n{}\n{}",
            key.source, key.scheme, key.format
        )
        .as_bytes(),
    );
    Tag::from_validated(format!("{LAYER_ENTRY_TAG_PREFIX}{}", digest.short(32)))
}

/// Whether `tag` names a layer index entry (never an environment).
pub fn is_layer_entry_tag(tag: &str) -> bool {
    tag.starts_with(LAYER_ENTRY_TAG_PREFIX)
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct EntryManifest {
    schema_version: u32,
    media_type: String,
    config: EntryBlob,
    layers: Vec<EntryBlob>,
    annotations: std::collections::BTreeMap<String, String>,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct EntryBlob {
    media_type: String,
    digest: Digest,
    size: u64,
}

impl EntryManifest {
    /// The manifest of `entry`, whose config blob is `config` (`{}`, or the path list).
    fn new(entry: &LayerEntry, json: String, config: &[u8]) -> EntryManifest {
        EntryManifest {
            schema_version: 2,
            media_type: MEDIA_TYPE_MANIFEST.to_string(),
            config: EntryBlob {
                media_type: MEDIA_TYPE_LAYER_ENTRY.to_string(),
                digest: Digest::of(config),
                size: config.len() as u64,
            },
            layers: vec![EntryBlob {
                media_type: entry.layer.media_type.clone(),
                digest: entry.layer.digest.clone(),
                size: entry.layer.size,
            }],
            annotations: [(ANNOTATION_LAYER_ENTRY.to_string(), json)].into(),
        }
    }

    /// The entry this manifest holds, if it is a well-formed one whose one layer is the
    /// layer its annotation names.
    fn entry(&self) -> Option<LayerEntry> {
        if self.config.media_type != MEDIA_TYPE_LAYER_ENTRY {
            return None;
        }
        let json = self.annotations.get(ANNOTATION_LAYER_ENTRY)?;
        let entry: LayerEntry = serde_json::from_str(json).ok()?;
        let [layer] = self.layers.as_slice() else {
            return None;
        };
        let same = layer.digest == entry.layer.digest
            && layer.size == entry.layer.size
            && layer.media_type == entry.layer.media_type;
        same.then_some(entry)
    }

    /// The config blob, when it is a path list rather than `{}`.
    fn paths(&self) -> Option<BlobDescriptor> {
        let empty = self.config.digest == Digest::of(EMPTY_CONFIG);
        (!empty).then(|| BlobDescriptor {
            media_type: self.config.media_type.clone(),
            digest: self.config.digest.clone(),
            size: self.config.size,
        })
    }
}

impl Registry {
    /// The layer the entry of `key` in `repo` names; `None` when there is no entry, or the
    /// entry is not a well-formed one for `key` (a miss: the caller builds the layer).
    pub async fn read_layer_entry(
        &self,
        repo: &RegistryRepo,
        key: &LayerEntryKey,
    ) -> Result<Option<FoundLayer>, RegistryError> {
        let reference = ManifestRef::Tag(layer_entry_tag(key));
        let pulled = match self.pull_manifest(repo, &reference).await {
            Ok(pulled) => pulled,
            Err(e) if e.status() == Some(404) => return Ok(None),
            Err(e) => return Err(e),
        };
        let Ok(manifest) = serde_json::from_slice::<EntryManifest>(&pulled.bytes) else {
            tracing::warn!(%repo, tag = %layer_entry_tag(key), "ignoring a malformed layer index entry");
            return Ok(None);
        };
        Ok(manifest
            .entry()
            .filter(|entry| &entry.key == key)
            .map(|entry| FoundLayer {
                layer: entry.layer,
                paths: manifest.paths(),
            }))
    }

    /// The layer the entry under `tag` names (a tag [`is_layer_entry_tag`] says is one);
    /// `None` when the tag is gone or holds no well-formed entry for the key its tag is made
    /// from. What registry GC reads to know which blobs the layer index keeps.
    pub async fn read_layer_entry_tag(
        &self,
        repo: &RegistryRepo,
        tag: &str,
    ) -> Result<Option<LayerDescriptor>, RegistryError> {
        let reference = ManifestRef::Tag(Tag::from_validated(tag.to_string()));
        let pulled = match self.pull_manifest(repo, &reference).await {
            Ok(pulled) => pulled,
            Err(e) if e.status() == Some(404) => return Ok(None),
            Err(e) => return Err(e),
        };
        let Ok(manifest) = serde_json::from_slice::<EntryManifest>(&pulled.bytes) else {
            return Ok(None);
        };
        Ok(manifest
            .entry()
            .filter(|entry| layer_entry_tag(&entry.key).as_str() == tag)
            .map(|entry| entry.layer))
    }

    /// Writes the entry of `entry.key` in `repo`, whose layer blob must already be there (the
    /// registry refuses a manifest naming a blob it lacks), with the layer's path list as its
    /// config when `paths` is given (uploaded unless `repo` has it). Idempotent: the same
    /// entry gives the same bytes, so an entry already in place is left as it is (one HEAD:
    /// a push that reuses most layers rewrites none of their entries).
    pub async fn write_layer_entry(
        &self,
        repo: &RegistryRepo,
        entry: &LayerEntry,
        paths: Option<&[u8]>,
    ) -> Result<EntryWrite, RegistryError> {
        let config = paths.unwrap_or(EMPTY_CONFIG);
        let json = serde_json::to_string(entry).map_err(|e| {
            self.protocol_error("writing a layer index entry", format!("serialising: {e}"))
        })?;
        let bytes = serde_json::to_vec(&EntryManifest::new(entry, json, config)).map_err(|e| {
            self.protocol_error("writing a layer index entry", format!("serialising: {e}"))
        })?;
        let reference = ManifestRef::Tag(layer_entry_tag(&entry.key));
        if self.manifest_exists(repo, &reference).await? == Some(Digest::of(&bytes)) {
            return Ok(EntryWrite::Present);
        }
        let mut uploaded = 0;
        if paths.is_some() {
            uploaded += self.ensure_blob(repo, config).await?;
        }
        // Pushes of other images into `repo` rewrite the links of the blobs they share with
        // this entry (the config); the registry may call one unknown for an instant.
        let manifest = (bytes.as_slice(), MEDIA_TYPE_MANIFEST);
        let again = offer_manifest(self, repo, &reference, manifest, || {
            self.ensure_blob(repo, config)
        })
        .await?;
        Ok(EntryWrite::Written {
            bytes_uploaded: uploaded + again.iter().sum::<u64>(),
        })
    }

    /// Uploads the config blob every entry shares, unless `repo` has it: once before a batch
    /// of [`Registry::write_layer_entry`].
    /// Returns the bytes it uploaded.
    pub async fn prepare_layer_entries(&self, repo: &RegistryRepo) -> Result<u64, RegistryError> {
        self.ensure_blob(repo, EMPTY_CONFIG).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> LayerEntry {
        LayerEntry {
            key: LayerEntryKey {
                source: Digest::of(b"wheel"),
                scheme: "venv=/opt/venv;python=3.11".into(),
                format: 2,
            },
            layer: LayerDescriptor {
                digest: Digest::of(b"layer"),
                diff_id: Digest::of(b"tar"),
                size: 5,
                media_type: "application/vnd.oci.image.layer.v1.tar+gzip".into(),
            },
        }
    }

    #[test]
    fn the_tag_changes_with_each_part_of_the_key() {
        let e = entry();
        let tag = layer_entry_tag(&e.key);
        assert!(is_layer_entry_tag(tag.as_str()));
        assert_eq!(tag.as_str().len(), LAYER_ENTRY_TAG_PREFIX.len() + 32);
        let mut other = e.key.clone();
        other.format = 3;
        assert_ne!(layer_entry_tag(&other), tag);
        let mut other = e.key.clone();
        other.scheme.push('x');
        assert_ne!(layer_entry_tag(&other), tag);
    }

    #[test]
    fn an_entry_round_trips_and_a_mismatched_layer_is_refused() {
        let e = entry();
        let json = serde_json::to_string(&e).unwrap();
        let manifest = EntryManifest::new(&e, json.clone(), EMPTY_CONFIG);
        let bytes = serde_json::to_vec(&manifest).unwrap();
        let parsed: EntryManifest = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(parsed.entry(), Some(e.clone()));
        assert_eq!(parsed.paths(), None);
        let with_paths = EntryManifest::new(&e, json.clone(), b"[]");
        assert_eq!(with_paths.entry(), Some(e.clone()));
        let paths = with_paths.paths().unwrap();
        assert_eq!((paths.digest, paths.size), (Digest::of(b"[]"), 2));
        let mut forged = EntryManifest::new(&e, json, EMPTY_CONFIG);
        forged.layers[0].digest = Digest::of(b"other");
        assert_eq!(forged.entry(), None);
    }
}
