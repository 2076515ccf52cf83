//! A job's image: its environment's image with the code layer on top, working directory at
//! the code. Only a config and a manifest are new (a few kB); every environment layer stays
//! shared, and the launchers run it as any other image, by digest.

use std::collections::BTreeMap;

use serde_json::{json, Value};
use strata_index::Lease;
use strata_oci::{BlobDescriptor, Descriptor, Digest, LayerDescriptor, Manifest};
use strata_oci::{ManifestDocument, Store, MEDIA_TYPE_CONFIG};

use crate::error::CodeError;

/// The manifest annotation naming the environment image a job's image was composed from.
pub const ANNOTATION_ENV: &str = "dev.strata.env-manifest";
/// The manifest annotation (and layer annotation) naming where the code is.
pub const ANNOTATION_CODE: &str = "dev.strata.code";
/// Annotations of an environment image that must not be copied: an image with code in it
/// does not answer builds of the environment's spec (see `strata-build::publish::pull`).
const ENV_ONLY: [&str; 3] = [
    "dev.strata.spec-digest",
    "dev.strata.lock-digest",
    "org.opencontainers.image.title",
];

/// Where a job's code is: the layer and the directory it unpacks to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodeRef<'a> {
    pub layer: &'a LayerDescriptor,
    /// Absolute (`/work`).
    pub dest: &'a str,
}

/// Writes the image `env` + `code` into the store, held by `lease`, and returns its
/// manifest digest. The same inputs give the same digest.
pub fn compose(
    store: &Store,
    lease: &Lease,
    env: &Digest,
    code: &CodeRef,
) -> Result<Digest, CodeError> {
    let (manifest, config) = read_image(store, env)?;
    // Everything the new image references is held before it is checked or written, so a
    // GC between here and the job's own lease takes none of it.
    let mut held: Vec<Digest> = manifest.blobs().map(|d| d.digest.clone()).collect();
    held.push(env.clone());
    held.push(code.layer.digest.clone());
    hold(store, lease, &held)?;
    if !store.has_blob(&code.layer.digest) {
        return Err(CodeError::CodeLayerGone {
            digest: code.layer.digest.clone(),
        });
    }
    let config = composed_config(config, code).ok_or_else(|| CodeError::BadConfig {
        digest: env.clone(),
    })?;
    let config_bytes = serde_json::to_vec(&config).unwrap_or_default();
    let config_digest = put(store, lease, &config_bytes)?;
    let composed = composed_manifest(&manifest, env, code, config_digest, &config_bytes);
    put(store, lease, &composed.to_bytes())
}

fn read_image(store: &Store, env: &Digest) -> Result<(Manifest, Value), CodeError> {
    let not_image = |detail: String| CodeError::NotAnImage {
        digest: env.clone(),
        detail,
    };
    let bytes = store.read_blob(env)?;
    let manifest = match ManifestDocument::parse(&bytes) {
        Ok(ManifestDocument::Image(m)) => m,
        Ok(_) => return Err(not_image("an image index".into())),
        Err(e) => return Err(not_image(e.to_string())),
    };
    let config_bytes = store.read_blob(&manifest.config.digest)?;
    let config: Value =
        serde_json::from_slice(&config_bytes).map_err(|e| not_image(format!("its config: {e}")))?;
    Ok((manifest, config))
}

/// The environment's config with the code layer's diff_id and history entry added and the
/// working directory at the code. Env, user and entrypoint stay as they are.
fn composed_config(mut config: Value, code: &CodeRef) -> Option<Value> {
    let object = config.as_object_mut()?;
    let diff_id = json!(code.layer.diff_id.to_string());
    match object
        .get_mut("rootfs")
        .and_then(|r| r.get_mut("diff_ids"))
        .and_then(Value::as_array_mut)
    {
        Some(ids) => ids.push(diff_id),
        None => {
            object.insert(
                "rootfs".into(),
                json!({"type": "layers", "diff_ids": [diff_id]}),
            );
        }
    }
    if let Some(history) = object.get_mut("history").and_then(Value::as_array_mut) {
        history.push(json!({
            "created": "1970-01-01T00:00:00Z",
            "created_by": format!("strata: code at {}", code.dest),
            "comment": "strata",
        }));
    }
    let process = object.entry("config").or_insert_with(|| json!({}));
    process
        .as_object_mut()?
        .insert("WorkingDir".into(), json!(code.dest));
    Some(config)
}

fn composed_manifest(
    env_manifest: &Manifest,
    env: &Digest,
    code: &CodeRef,
    config_digest: Digest,
    config_bytes: &[u8],
) -> Manifest {
    let config = Descriptor::new(&BlobDescriptor {
        media_type: MEDIA_TYPE_CONFIG.to_string(),
        digest: config_digest,
        size: config_bytes.len() as u64,
    });
    let mut layers = env_manifest.layers.clone();
    let mut code_layer = Descriptor::from(code.layer);
    code_layer
        .annotations
        .insert(ANNOTATION_CODE.into(), code.dest.into());
    layers.push(code_layer);
    // Always an OCI manifest: a Docker schema 2 environment's config and layers have the
    // same bytes as OCI's, and OCI manifests may reference either media type.
    let mut manifest = Manifest::new(config, layers);
    let mut annotations: BTreeMap<String, String> = env_manifest
        .annotations
        .iter()
        .filter(|(k, _)| !ENV_ONLY.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    annotations.insert(ANNOTATION_ENV.into(), env.to_string());
    annotations.insert(ANNOTATION_CODE.into(), code.dest.into());
    annotations.insert(
        "org.opencontainers.image.title".into(),
        format!("strata job image: code at {}", code.dest),
    );
    manifest.annotations = annotations;
    manifest
}

/// Adds digests to the lease under the shared GC lock (`strata-index`'s lease protocol).
pub(crate) fn hold(store: &Store, lease: &Lease, digests: &[Digest]) -> Result<(), CodeError> {
    let _gc = store.gc_lock_shared()?;
    lease.add(digests)?;
    Ok(())
}

/// Stages, holds, then commits a small blob.
fn put(store: &Store, lease: &Lease, bytes: &[u8]) -> Result<Digest, CodeError> {
    let digest = Digest::of(bytes);
    hold(store, lease, std::slice::from_ref(&digest))?;
    store.put_bytes(bytes)?;
    Ok(digest)
}
