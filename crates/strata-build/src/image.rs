//! Image assembly: the base image's config and layers, plus one layer per wheel and the env
//! layer, as an OCI config and manifest. Everything here is a pure function of its inputs so
//! that the same inputs give the byte-identical manifest.
//!
//! The inputs are content only: the base, the lock (exact wheels by sha256), the layers made
//! of them and the layer format. Nothing of the spec that asked for the image (its digest,
//! its sources, how it was written) is in the manifest or the config: specs that resolve to
//! one lock share one image, and two machines fed the same wheels from different places push
//! one manifest. Which specs name an image is the index's knowledge (`env-<spec>` tags).

use std::collections::BTreeMap;

use serde_json::{json, Value};
use strata_oci::MEDIA_TYPE_CONFIG;
use strata_oci::{BlobDescriptor, Digest, LayerDescriptor};
use strata_oci::{Descriptor, Manifest};

use crate::base::BaseImage;
use strata_install::{LayerCompression, LAYER_FORMAT_VERSION};

/// A fixed timestamp: images carry no build time, or no two builds would agree.
pub const EPOCH: &str = "1970-01-01T00:00:00Z";

/// The spec digest, on images made by strata before spec version 2. Read only to recognise
/// such images (a lock hit does not answer with one; registry GC knows them as strata's).
pub const LEGACY_ANNOTATION_SPEC: &str = "dev.strata.spec-digest";
pub const ANNOTATION_LOCK: &str = "dev.strata.lock-digest";
pub const ANNOTATION_PACKAGES: &str = "dev.strata.packages";
pub const ANNOTATION_LAYER_FORMAT: &str = "dev.strata.layer-format";
/// The base image's manifest digest (the OCI annotation).
pub const ANNOTATION_BASE: &str = "org.opencontainers.image.base.digest";

/// The layer format an image names (`dev.strata.layer-format`): strata's layer format
/// version, and `+zstd` for zstd layers, so that the lock tags, lock hits and registry
/// lookups of the two compressions never answer for each other.
pub fn layer_format(compression: LayerCompression, compile: bool) -> String {
    let mut format = LAYER_FORMAT_VERSION.to_string();
    if compression != LayerCompression::Gzip {
        format = format!("{format}+{}", compression.as_str());
    }
    if compile {
        format.push_str(PYC_SUFFIX);
    }
    format
}

/// What `--compile` adds to the layer format: its layers hold unchecked-hash pycs.
const PYC_SUFFIX: &str = "+pyc";

/// The compression of the layers of an image that names `format`, and whether they hold
/// pycs, if this strata writes that layer format (the inverse of [`layer_format`]).
pub fn compression_of_format(format: &str) -> Option<(LayerCompression, bool)> {
    [LayerCompression::Gzip, LayerCompression::Zstd]
        .into_iter()
        .flat_map(|c| [(c, false), (c, true)])
        .find(|(c, compile)| layer_format(*c, *compile) == format)
}

/// One layer strata adds, and the packages (`name==version`) it installs.
#[derive(Debug, Clone)]
pub struct AddedLayer {
    pub layer: LayerDescriptor,
    pub packages: Vec<String>,
    pub created_by: String,
}

/// Everything the image is made of besides the base.
pub struct ImageInputs<'a> {
    pub base: &'a BaseImage,
    pub layers: &'a [AddedLayer],
    pub venv: &'a str,
    pub lock_digest: &'a Digest,
    pub packages: &'a [String],
    /// [`layer_format`] of the build: the layer format version and the compression.
    pub layer_format: String,
}

/// The config bytes and manifest of an assembled image.
pub struct Assembled {
    pub config: Vec<u8>,
    pub manifest: Manifest,
}

pub fn assemble(inputs: &ImageInputs) -> Assembled {
    let config = config_for(inputs);
    let config_bytes = serde_json::to_vec(&config).unwrap_or_default();
    let config_desc = Descriptor::new(&BlobDescriptor {
        media_type: MEDIA_TYPE_CONFIG.to_string(),
        digest: Digest::of(&config_bytes),
        size: config_bytes.len() as u64,
    });
    let mut layers: Vec<Descriptor> = inputs.base.layers().to_vec();
    for added in inputs.layers {
        let mut d = Descriptor::from(&added.layer);
        if !added.packages.is_empty() {
            d.annotations
                .insert(ANNOTATION_PACKAGES.to_string(), added.packages.join(","));
        }
        layers.push(d);
    }
    let mut manifest = Manifest::new(config_desc, layers);
    manifest.annotations = manifest_annotations(inputs);
    Assembled {
        config: config_bytes,
        manifest,
    }
}

fn manifest_annotations(inputs: &ImageInputs) -> BTreeMap<String, String> {
    let mut a = BTreeMap::new();
    a.insert("org.opencontainers.image.created".into(), EPOCH.into());
    a.insert(ANNOTATION_BASE.into(), inputs.base.digest.to_string());
    a.insert(
        "org.opencontainers.image.title".into(),
        format!("strata environment {}", inputs.lock_digest.short(12)),
    );
    a.insert(
        "org.opencontainers.image.description".into(),
        format!("Python virtual environment at {}", inputs.venv),
    );
    a.insert(ANNOTATION_LOCK.into(), inputs.lock_digest.to_string());
    a.insert(ANNOTATION_PACKAGES.into(), inputs.packages.join(","));
    a.insert(ANNOTATION_LAYER_FORMAT.into(), inputs.layer_format.clone());
    a
}

fn config_for(inputs: &ImageInputs) -> Value {
    let mut config = inputs.base.config.clone();
    let base_path = inputs
        .base
        .env("PATH")
        .unwrap_or_else(|| "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into());
    let env = env_with(
        &config["config"]["Env"],
        &[
            ("PATH", format!("{}/bin:{base_path}", inputs.venv)),
            ("VIRTUAL_ENV", inputs.venv.to_string()),
        ],
    );
    config["config"]["Env"] = env;
    config["config"]["Labels"][ANNOTATION_LOCK] = json!(inputs.lock_digest.to_string());
    config["created"] = json!(EPOCH);
    let diff_ids = config["rootfs"]["diff_ids"].as_array_mut();
    if let Some(ids) = diff_ids {
        ids.extend(
            inputs
                .layers
                .iter()
                .map(|l| json!(l.layer.diff_id.to_string())),
        );
    } else {
        config["rootfs"] = json!({
            "type": "layers",
            "diff_ids": inputs.layers.iter().map(|l| l.layer.diff_id.to_string()).collect::<Vec<_>>(),
        });
    }
    if let Some(history) = config["history"].as_array_mut() {
        history.extend(
            inputs.layers.iter().map(
                |l| json!({"created": EPOCH, "created_by": l.created_by, "comment": "strata"}),
            ),
        );
    }
    config
}

/// The base's `Env` with `updates` replacing (or adding) variables, order kept.
fn env_with(base: &Value, updates: &[(&str, String)]) -> Value {
    let mut env: Vec<String> = base
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    for (key, value) in updates {
        let entry = format!("{key}={value}");
        let prefix = format!("{key}=");
        match env.iter_mut().find(|e| e.starts_with(&prefix)) {
            Some(existing) => *existing = entry,
            None => env.push(entry),
        }
    }
    json!(env)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_layer_format_names_its_compression() {
        for c in [LayerCompression::Gzip, LayerCompression::Zstd] {
            for compile in [false, true] {
                assert_eq!(
                    compression_of_format(&layer_format(c, compile)),
                    Some((c, compile))
                );
            }
        }
        assert_eq!(compression_of_format("1"), None);
        assert_eq!(compression_of_format("2+brotli"), None);
    }

    #[test]
    fn env_replaces_path_and_keeps_order() {
        let base = json!(["PATH=/usr/bin", "LANG=C.UTF-8"]);
        let env = env_with(
            &base,
            &[
                ("PATH", "/opt/venv/bin:/usr/bin".into()),
                ("VIRTUAL_ENV", "/opt/venv".into()),
            ],
        );
        assert_eq!(
            env,
            json!([
                "PATH=/opt/venv/bin:/usr/bin",
                "LANG=C.UTF-8",
                "VIRTUAL_ENV=/opt/venv"
            ])
        );
    }
}
