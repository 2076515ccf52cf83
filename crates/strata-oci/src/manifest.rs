//! OCI image manifests and indexes as strata reads and writes them. Our own types rather
//! than oci-spec's because annotations must serialise in a fixed order (a `BTreeMap`), or the
//! same image would get a different manifest digest from run to run.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::descriptor::{BlobDescriptor, LayerDescriptor, MEDIA_TYPE_MANIFEST};
use crate::Digest;

/// The most bytes of a manifest, index or image config strata reads: the distribution spec
/// lets registries refuse manifests above 4 MiB, and a config that large is not one strata
/// or any builder writes. A bigger blob named as one is refused unread.
pub const MAX_DOCUMENT_BYTES: u64 = 4 << 20;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Descriptor {
    #[serde(rename = "mediaType")]
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Platform {
    pub architecture: String,
    pub os: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

impl Descriptor {
    pub fn new(blob: &BlobDescriptor) -> Self {
        Descriptor {
            media_type: blob.media_type.clone(),
            digest: blob.digest.clone(),
            size: blob.size,
            platform: None,
            annotations: BTreeMap::new(),
        }
    }

    pub fn blob(&self) -> BlobDescriptor {
        BlobDescriptor {
            media_type: self.media_type.clone(),
            digest: self.digest.clone(),
            size: self.size,
        }
    }
}

impl From<&LayerDescriptor> for Descriptor {
    fn from(layer: &LayerDescriptor) -> Self {
        Descriptor::new(&layer.blob())
    }
}

/// An image manifest (OCI, or Docker schema 2 which has the same shape).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    #[serde(rename = "schemaVersion")]
    pub schema_version: u32,
    #[serde(rename = "mediaType", default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

impl Manifest {
    pub fn new(config: Descriptor, layers: Vec<Descriptor>) -> Self {
        Manifest {
            schema_version: 2,
            media_type: Some(MEDIA_TYPE_MANIFEST.to_string()),
            config,
            layers,
            annotations: BTreeMap::new(),
        }
    }

    /// Canonical bytes: compact JSON with fields in a fixed order.
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// The blobs the manifest references: its config, then its layers.
    pub fn blobs(&self) -> impl Iterator<Item = &Descriptor> {
        std::iter::once(&self.config).chain(self.layers.iter())
    }

    /// Bytes of the blobs the manifest references: config and layers.
    pub fn blob_bytes(&self) -> u64 {
        self.blobs().map(|d| d.size).sum()
    }

    pub fn media_type(&self) -> &str {
        self.media_type.as_deref().unwrap_or(MEDIA_TYPE_MANIFEST)
    }
}

/// An image index (multi-platform list).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageIndex {
    #[serde(rename = "schemaVersion")]
    pub schema_version: u32,
    #[serde(rename = "mediaType", default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    pub manifests: Vec<Descriptor>,
}

impl ImageIndex {
    /// The manifest listed for `os`/`architecture` (the first, if several are).
    pub fn manifest_for(&self, os: &str, architecture: &str) -> Option<&Descriptor> {
        self.manifests.iter().find(|m| {
            m.platform
                .as_ref()
                .is_some_and(|p| p.os == os && p.architecture == architecture)
        })
    }
}

/// Either kind of document a reference can point at.
#[derive(Debug, Clone)]
pub enum ManifestDocument {
    Image(Manifest),
    Index(ImageIndex),
}

impl ManifestDocument {
    /// Parses a manifest or index, deciding by `mediaType` (or by shape when it is absent).
    pub fn parse(bytes: &[u8]) -> Result<ManifestDocument, serde_json::Error> {
        let value: serde_json::Value = serde_json::from_slice(bytes)?;
        let media_type = value
            .get("mediaType")
            .and_then(|m| m.as_str())
            .unwrap_or("");
        let is_index = media_type.contains("index") || media_type.contains("manifest.list");
        if is_index || value.get("manifests").is_some() {
            return serde_json::from_value(value).map(ManifestDocument::Index);
        }
        serde_json::from_value(value).map(ManifestDocument::Image)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_bytes_do_not_depend_on_annotation_insertion_order() {
        let config = Descriptor::new(&BlobDescriptor {
            media_type: "c".into(),
            digest: Digest::of(b"c"),
            size: 1,
        });
        let mut a = Manifest::new(config.clone(), vec![]);
        let mut b = Manifest::new(config, vec![]);
        for (k, v) in [("z", "1"), ("a", "2"), ("m", "3")] {
            a.annotations.insert(k.into(), v.into());
        }
        for (k, v) in [("m", "3"), ("z", "1"), ("a", "2")] {
            b.annotations.insert(k.into(), v.into());
        }
        assert_eq!(a.to_bytes(), b.to_bytes());
    }

    #[test]
    fn an_index_names_the_manifest_of_a_platform() {
        let entry = |seed: &[u8], arch: &str| Descriptor {
            platform: Some(Platform {
                architecture: arch.into(),
                os: "linux".into(),
                variant: None,
            }),
            ..Descriptor::new(&BlobDescriptor {
                media_type: MEDIA_TYPE_MANIFEST.into(),
                digest: Digest::of(seed),
                size: 1,
            })
        };
        let index = ImageIndex {
            schema_version: 2,
            media_type: None,
            manifests: vec![
                entry(b"a", "arm64"),
                entry(b"b", "amd64"),
                entry(b"c", "amd64"),
            ],
        };
        let found = index
            .manifest_for("linux", "amd64")
            .map(|d| d.digest.clone());
        assert_eq!(found, Some(Digest::of(b"b")));
        assert!(index.manifest_for("linux", "riscv64").is_none());
        assert!(index.manifest_for("windows", "amd64").is_none());
    }

    #[test]
    fn parses_indexes_and_manifests() {
        let index = br#"{"schemaVersion":2,"manifests":[]}"#;
        assert!(matches!(
            ManifestDocument::parse(index).unwrap(),
            ManifestDocument::Index(_)
        ));
        let d = Digest::of(b"x");
        let manifest = format!(
            r#"{{"schemaVersion":2,"config":{{"mediaType":"c","digest":"{d}","size":1}},"layers":[]}}"#
        );
        assert!(matches!(
            ManifestDocument::parse(manifest.as_bytes()).unwrap(),
            ManifestDocument::Image(_)
        ));
        assert!(ManifestDocument::parse(b"{").is_err());
    }
}
