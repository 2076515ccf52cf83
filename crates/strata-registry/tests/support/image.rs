//! Test support: the blobs, config and manifest of small OCI images written to a directory, for
//! the registry tests to push. Needs `strata_oci` and `serde_json`.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::json;
use strata_oci::{BlobDescriptor, Digest};
use strata_oci::{MEDIA_TYPE_CONFIG, MEDIA_TYPE_MANIFEST};

/// Writes `bytes` to `dir/blobs/<hex digest>` and describes them.
pub fn store_blob(dir: &Path, media_type: &str, bytes: &[u8]) -> (BlobDescriptor, PathBuf) {
    let digest = Digest::of(bytes);
    let blobs = dir.join("blobs");
    std::fs::create_dir_all(&blobs).unwrap();
    let path = blobs.join(digest.hex());
    std::fs::write(&path, bytes).unwrap();
    let desc = BlobDescriptor {
        media_type: media_type.to_string(),
        digest,
        size: bytes.len() as u64,
    };
    (desc, path)
}

/// Stores an amd64/linux image config with `config` as its `config` and `diff_ids` as its
/// rootfs.
pub fn store_config(
    dir: &Path,
    diff_ids: &[Digest],
    config: serde_json::Value,
) -> (BlobDescriptor, PathBuf) {
    let config_json = json!({
        "architecture": "amd64",
        "os": "linux",
        "config": config,
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    });
    store_blob(
        dir,
        MEDIA_TYPE_CONFIG,
        &serde_json::to_vec(&config_json).unwrap(),
    )
}

/// An OCI image manifest of `config` and `layers` (stored blobs), with `annotations` when given (an empty map
/// still writes the key).
pub fn manifest(
    config: &BlobDescriptor,
    layers: &[(BlobDescriptor, PathBuf)],
    annotations: Option<&BTreeMap<&str, String>>,
) -> Vec<u8> {
    let descriptor =
        |d: &BlobDescriptor| json!({"mediaType": d.media_type, "digest": d.digest, "size": d.size});
    let mut manifest = json!({
        "schemaVersion": 2,
        "mediaType": MEDIA_TYPE_MANIFEST,
        "config": descriptor(config),
        "layers": layers.iter().map(|(d, _)| descriptor(d)).collect::<Vec<_>>(),
    });
    if let Some(annotations) = annotations {
        manifest["annotations"] = json!(annotations);
    }
    serde_json::to_vec(&manifest).unwrap()
}
