//! The images of the local store and what they share: sizes that count a shared blob once,
//! and the bytes that deleting each image would free.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::Serialize;

use crate::index::{EnvRow, Index, IndexError};
use strata_oci::Digest;
use strata_oci::{Manifest, ManifestDocument};
use strata_oci::{Store, StoreError, REF_NAME};

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Index(#[from] IndexError),
}

/// Why an image's manifest cannot be listed. Reported in [`CatalogImage::problem`], not
/// fatal: the rest of the store is still worth listing.
#[derive(Debug, thiserror::Error)]
enum ManifestProblem {
    #[error(transparent)]
    Read(#[from] StoreError),
    /// A tag that names an image index: the catalog lists images.
    #[error("an image index, not an image")]
    Index,
    #[error("manifest is not valid JSON: {0}")]
    Json(#[source] serde_json::Error),
}

/// One tagged image of the store.
#[derive(Debug, Clone, Serialize)]
pub struct CatalogImage {
    pub tag: String,
    pub digest: Digest,
    /// The environment name, for strata images.
    pub name: Option<String>,
    pub spec_digest: Option<Digest>,
    pub lock_digest: Option<Digest>,
    pub created_at: Option<i64>,
    pub last_used_at: Option<i64>,
    /// When the spec that tagged it was last resolved (unix seconds).
    pub resolved_at: Option<i64>,
    /// Bytes of all blobs the image references (manifest, config, layers).
    pub size: u64,
    /// Bytes that only this image references: what deleting it would free.
    pub exclusive_size: u64,
    pub layers: Vec<CatalogLayer>,
    /// Set when the manifest cannot be read (missing or corrupt).
    pub problem: Option<String>,
    /// Every blob the image references: manifest, config, layers.
    #[serde(skip)]
    pub blobs: Vec<(Digest, u64)>,
}

#[derive(Debug, Clone, Serialize)]
pub struct CatalogLayer {
    pub digest: Digest,
    pub size: u64,
    pub packages: Vec<String>,
    /// Other tags whose images use this layer.
    pub shared_with: Vec<String>,
}

/// All tagged images and the store-wide totals.
#[derive(Debug, Clone, Serialize)]
pub struct Catalog {
    pub images: Vec<CatalogImage>,
    /// Sum of the sizes of distinct blobs referenced by any image.
    pub unique_bytes: u64,
    /// Sum of the images' sizes, as if nothing were shared.
    pub naive_bytes: u64,
}

const PACKAGES: &str = "dev.strata.packages";

impl Catalog {
    pub fn load(store: &Store, index: &Index) -> Result<Catalog, CatalogError> {
        let rows = index.envs()?;
        // Specs of one lock share one image, each under its own tag: a tag finds its spec's
        // row; a tag no spec made (a pull, `strata push --tag`) finds any row of its image.
        let by_tag: HashMap<(&str, &Digest), &EnvRow> = rows
            .iter()
            .map(|e| ((e.record.tag.as_str(), &e.record.manifest), e))
            .collect();
        let by_manifest: HashMap<&Digest, &EnvRow> =
            rows.iter().map(|e| (&e.record.manifest, e)).collect();
        let mut images = Vec::new();
        for entry in store.entries()? {
            let tag = entry.annotations.get(REF_NAME).cloned().unwrap_or_default();
            let env = by_tag
                .get(&(tag.as_str(), &entry.digest))
                .or_else(|| by_manifest.get(&entry.digest))
                .copied();
            let mut image = CatalogImage {
                tag,
                digest: entry.digest.clone(),
                name: env.map(|e| e.record.name.clone()),
                spec_digest: env.map(|e| e.record.spec.clone()),
                lock_digest: env.map(|e| e.record.lock.clone()),
                created_at: env.map(|e| e.created_at),
                last_used_at: env.map(|e| e.last_used_at),
                resolved_at: env.map(|e| e.resolved_at),
                size: entry.size,
                exclusive_size: 0,
                layers: Vec::new(),
                problem: None,
                blobs: vec![(entry.digest.clone(), entry.size)],
            };
            match read_manifest(store, &entry.digest) {
                Ok(manifest) => add_blobs(&mut image, &manifest),
                Err(problem) => image.problem = Some(problem.to_string()),
            }
            images.push(image);
        }
        Ok(share(images))
    }

    /// Only the images `keep` takes; what they share, and the totals, among themselves (so
    /// nothing is said of the others, not even their tags).
    pub fn only(self, keep: impl Fn(&CatalogImage) -> bool) -> Catalog {
        share(self.images.into_iter().filter(|i| keep(i)).collect())
    }

    /// The image a user names: a tag, a manifest digest (or its hex prefix of 12+), a spec
    /// digest, or an environment name (its most recently used image).
    pub fn find(&self, reference: &str) -> Option<&CatalogImage> {
        let hex = reference.strip_prefix("sha256:").unwrap_or(reference);
        let by_tag = self.images.iter().find(|i| i.tag == reference);
        let by_digest = || {
            (hex.len() >= 12).then(|| {
                self.images.iter().find(|i| {
                    i.digest.hex().starts_with(hex)
                        || i.spec_digest
                            .as_ref()
                            .is_some_and(|s| s.hex().starts_with(hex))
                })
            })?
        };
        let by_name = || {
            self.images
                .iter()
                .filter(|i| i.name.as_deref() == Some(reference))
                .max_by_key(|i| (i.last_used_at, i.created_at))
        };
        by_tag.or_else(by_digest).or_else(by_name)
    }
}

fn read_manifest(store: &Store, digest: &Digest) -> Result<Manifest, ManifestProblem> {
    let bytes = store.read_blob(digest)?;
    match ManifestDocument::parse(&bytes) {
        Ok(ManifestDocument::Image(m)) => Ok(m),
        Ok(ManifestDocument::Index(_)) => Err(ManifestProblem::Index),
        Err(e) => Err(ManifestProblem::Json(e)),
    }
}

fn add_blobs(image: &mut CatalogImage, manifest: &Manifest) {
    image
        .blobs
        .push((manifest.config.digest.clone(), manifest.config.size));
    image.size += manifest.config.size;
    for layer in &manifest.layers {
        image.blobs.push((layer.digest.clone(), layer.size));
        image.size += layer.size;
        image.layers.push(CatalogLayer {
            digest: layer.digest.clone(),
            size: layer.size,
            packages: layer
                .annotations
                .get(PACKAGES)
                .map(|p| p.split(',').map(String::from).collect())
                .unwrap_or_default(),
            shared_with: Vec::new(),
        });
    }
}

/// Fills in sharing, exclusive sizes and totals.
fn share(mut images: Vec<CatalogImage>) -> Catalog {
    // blob → (size, indexes of the images using it)
    let mut users: BTreeMap<Digest, (u64, BTreeSet<usize>)> = BTreeMap::new();
    for (i, image) in images.iter().enumerate() {
        for (digest, size) in &image.blobs {
            users
                .entry(digest.clone())
                .or_insert((*size, BTreeSet::new()))
                .1
                .insert(i);
        }
    }
    let unique_bytes = users.values().map(|(size, _)| size).sum();
    let naive_bytes = images.iter().map(|i| i.size).sum();
    let tags: Vec<String> = images.iter().map(|i| i.tag.clone()).collect();
    for (i, image) in images.iter_mut().enumerate() {
        let only_mine = |d: &Digest| users.get(d).is_some_and(|(_, u)| u.len() == 1);
        image.exclusive_size = image
            .blobs
            .iter()
            .map(|(d, size)| (d, *size))
            .collect::<BTreeMap<_, _>>()
            .into_iter()
            .filter(|(d, _)| only_mine(d))
            .map(|(_, size)| size)
            .sum();
        for layer in &mut image.layers {
            if let Some((_, u)) = users.get(&layer.digest) {
                layer.shared_with = u
                    .iter()
                    .filter(|&&j| j != i)
                    .map(|&j| tags[j].clone())
                    .collect();
            }
        }
    }
    Catalog {
        images,
        unique_bytes,
        naive_bytes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_oci::{MEDIA_TYPE_CONFIG, MEDIA_TYPE_INDEX, MEDIA_TYPE_MANIFEST};

    #[test]
    fn a_manifest_that_cannot_be_listed_says_why() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("oci"), &dir.path().join("tmp")).unwrap();
        let config = store.put_bytes(b"{}").unwrap();
        let image = format!(
            r#"{{"schemaVersion":2,"mediaType":"{MEDIA_TYPE_MANIFEST}","config":{{"mediaType":"{MEDIA_TYPE_CONFIG}","digest":"{config}","size":2}},"layers":[]}}"#
        );
        let image = store.put_bytes(image.as_bytes()).unwrap();
        assert_eq!(read_manifest(&store, &image).unwrap().config.digest, config);

        let index =
            format!(r#"{{"schemaVersion":2,"mediaType":"{MEDIA_TYPE_INDEX}","manifests":[]}}"#);
        let index = store.put_bytes(index.as_bytes()).unwrap();
        let err = read_manifest(&store, &index).unwrap_err();
        assert!(matches!(err, ManifestProblem::Index), "{err:?}");

        let junk = store.put_bytes(b"not json").unwrap();
        let err = read_manifest(&store, &junk).unwrap_err();
        assert!(matches!(err, ManifestProblem::Json(_)), "{err:?}");
        assert!(err.to_string().starts_with("manifest is not valid JSON: "));

        let missing = Digest::of(b"never stored");
        let err = read_manifest(&store, &missing).unwrap_err();
        assert!(matches!(err, ManifestProblem::Read(_)), "{err:?}");
    }
}
