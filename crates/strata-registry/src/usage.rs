//! Usage records: when an image was pushed and last used, kept in the registry itself so that
//! every machine sees them (a registry GC run from one machine must keep what another pushed
//! or launched yesterday).
//!
//! One record per image manifest, under the tag `strata-usage-<manifest hex>` of the image's
//! own repository. The record is a tiny OCI image manifest: its config is the two-byte blob
//! `{}` with the media type [`MEDIA_TYPE_USAGE`], it has no layers (so it holds no image blob
//! alive), and the annotation [`ANNOTATION_USAGE`] carries the record as JSON. Why this shape:
//! - it is a plain tagged manifest, which docker-registry 2.8 (no referrers API, no artifact
//!   manifests) accepts, and which the registry's own `garbage-collect` never removes;
//! - one record per manifest rather than per environment: registry GC decides per manifest
//!   digest, and two machines updating records of different images never overwrite each
//!   other's entries. Two machines updating the same record at once may lose one update, and
//!   both carry (nearly) the same time, so nothing that matters is lost;
//! - reading a record is one GET of a small manifest, with no blob download.
//!
//! Updates are read-modify-write: the first push time is kept, the last use is the latest
//! seen, and the tags strata pushed accumulate (registry GC uses them to tell strata's own
//! tags from the ones people added).

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::client::Registry;
use crate::error::RegistryError;
use crate::push::offer_manifest;
use crate::reference::{ManifestRef, RegistryRepo, Tag};
use strata_oci::Digest;
use strata_oci::MEDIA_TYPE_MANIFEST;

/// Prefix of the tags of usage records; never an environment's tag.
pub const USAGE_TAG_PREFIX: &str = "strata-usage-";
/// Media type of a usage record's config (the blob `{}`): marks the manifest as a record.
pub const MEDIA_TYPE_USAGE: &str = "application/vnd.dev.strata.usage.v1+json";
/// The annotation holding the record's JSON.
pub const ANNOTATION_USAGE: &str = "dev.strata.usage";
const EMPTY_CONFIG: &[u8] = b"{}";

/// What the registry knows of one image's usage, from every machine that pushed or used it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageRecord {
    pub manifest: Digest,
    /// First push, seconds since the epoch.
    pub pushed_at: i64,
    /// Latest push or use (a Kubernetes launch), seconds since the epoch.
    pub last_used_at: i64,
    /// The environment name, empty when unknown.
    #[serde(default)]
    pub name: String,
    /// Every tag strata pushed this manifest under.
    #[serde(default)]
    pub tags: BTreeSet<String>,
}

impl UsageRecord {
    pub fn last_active_at(&self) -> i64 {
        self.pushed_at.max(self.last_used_at)
    }
}

/// A push or a use to record.
#[derive(Debug, Clone, Copy)]
pub struct UsageUpdate<'a> {
    pub manifest: &'a Digest,
    /// The tag strata pushed it under, if any.
    pub tag: Option<&'a str>,
    pub name: &'a str,
    pub now: i64,
}

/// The tag of the usage record of `manifest`.
pub fn usage_tag(manifest: &Digest) -> Tag {
    Tag::from_validated(format!("{USAGE_TAG_PREFIX}{}", manifest.hex()))
}

/// Whether `tag` names a usage record (never an environment).
pub fn is_usage_tag(tag: &str) -> bool {
    tag.starts_with(USAGE_TAG_PREFIX)
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RecordManifest {
    schema_version: u32,
    media_type: String,
    config: RecordConfig,
    layers: Vec<serde_json::Value>,
    annotations: std::collections::BTreeMap<String, String>,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RecordConfig {
    media_type: String,
    digest: Digest,
    size: u64,
}

impl Registry {
    /// The usage record of `manifest` in `repo`, or `None` if there is none.
    pub async fn read_usage(
        &self,
        repo: &RegistryRepo,
        manifest: &Digest,
    ) -> Result<Option<UsageRecord>, RegistryError> {
        let tag = usage_tag(manifest);
        let Some(record) = self.read_usage_tag(repo, tag.as_str()).await? else {
            return Ok(None);
        };
        if &record.manifest != manifest {
            let action = format!("reading usage record {repo}:{tag}");
            return Err(self.protocol_error(
                &action,
                format!("the record is for {}, not {manifest}", record.manifest),
            ));
        }
        Ok(Some(record))
    }

    /// The usage record under `tag` (a `strata-usage-` tag), or `None` if the tag is gone.
    pub async fn read_usage_tag(
        &self,
        repo: &RegistryRepo,
        tag: &str,
    ) -> Result<Option<UsageRecord>, RegistryError> {
        let action = format!("reading usage record {repo}:{tag}");
        let reference = ManifestRef::Tag(tag.parse()?);
        let pulled = match self.pull_manifest(repo, &reference).await {
            Ok(pulled) => pulled,
            Err(e) if e.status() == Some(404) => return Ok(None),
            Err(e) => return Err(e),
        };
        let parsed: RecordManifest = serde_json::from_slice(&pulled.bytes)
            .map_err(|e| self.protocol_error(&action, format!("not a usage record: {e}")))?;
        let json = parsed
            .annotations
            .get(ANNOTATION_USAGE)
            .filter(|_| parsed.config.media_type == MEDIA_TYPE_USAGE)
            .ok_or_else(|| self.protocol_error(&action, "not a usage record"))?;
        let record: UsageRecord = serde_json::from_str(json)
            .map_err(|e| self.protocol_error(&action, format!("bad usage record: {e}")))?;
        if tag != usage_tag(&record.manifest).as_str() {
            return Err(
                self.protocol_error(&action, format!("the record is for {}", record.manifest))
            );
        }
        Ok(Some(record))
    }

    /// Records a push or use of `update.manifest` in `repo`: merged with the record there
    /// (first push kept, latest use, tags accumulated). A record that cannot be read is
    /// replaced.
    pub async fn record_usage(
        &self,
        repo: &RegistryRepo,
        update: &UsageUpdate<'_>,
    ) -> Result<UsageRecord, RegistryError> {
        let existing = match self.read_usage(repo, update.manifest).await {
            Ok(found) => found,
            Err(e) if matches!(e, RegistryError::Protocol { .. }) => {
                tracing::warn!(error = %e, "replacing an unreadable usage record");
                None
            }
            Err(e) => return Err(e),
        };
        let record = merged(existing, update);
        self.write_usage(repo, &record).await?;
        Ok(record)
    }

    async fn write_usage(
        &self,
        repo: &RegistryRepo,
        record: &UsageRecord,
    ) -> Result<(), RegistryError> {
        let config = Digest::of(EMPTY_CONFIG);
        self.ensure_blob(repo, EMPTY_CONFIG).await?;
        let annotation = serde_json::to_string(record).map_err(|e| {
            self.protocol_error("writing a usage record", format!("serialising: {e}"))
        })?;
        let manifest = RecordManifest {
            schema_version: 2,
            media_type: MEDIA_TYPE_MANIFEST.to_string(),
            config: RecordConfig {
                media_type: MEDIA_TYPE_USAGE.to_string(),
                digest: config,
                size: EMPTY_CONFIG.len() as u64,
            },
            layers: Vec::new(),
            annotations: [(ANNOTATION_USAGE.to_string(), annotation)].into(),
        };
        let bytes = serde_json::to_vec(&manifest).map_err(|e| {
            self.protocol_error("writing a usage record", format!("serialising: {e}"))
        })?;
        let reference = ManifestRef::Tag(usage_tag(&record.manifest));
        // Another push into `repo` that uploads the config blob too rewrites its link; the
        // registry may call it unknown for an instant.
        let manifest = (bytes.as_slice(), MEDIA_TYPE_MANIFEST);
        offer_manifest(self, repo, &reference, manifest, || {
            self.ensure_blob(repo, EMPTY_CONFIG)
        })
        .await?;
        Ok(())
    }

    /// Deletes the usage record of `manifest` (after the image itself was deleted). A record
    /// already gone is fine.
    pub async fn delete_usage(
        &self,
        repo: &RegistryRepo,
        manifest: &Digest,
    ) -> Result<(), RegistryError> {
        let reference = ManifestRef::Tag(usage_tag(manifest));
        let Some(digest) = self.manifest_exists(repo, &reference).await? else {
            return Ok(());
        };
        match self.delete_manifest(repo, &digest).await {
            Err(e) if e.status() == Some(404) => Ok(()),
            other => other,
        }
    }
}

fn merged(existing: Option<UsageRecord>, update: &UsageUpdate<'_>) -> UsageRecord {
    let mut record = existing.unwrap_or_else(|| UsageRecord {
        manifest: update.manifest.clone(),
        pushed_at: update.now,
        last_used_at: update.now,
        name: String::new(),
        tags: BTreeSet::new(),
    });
    record.pushed_at = record.pushed_at.min(update.now);
    record.last_used_at = record.last_used_at.max(update.now);
    if !update.name.is_empty() {
        record.name = update.name.to_string();
    }
    if let Some(tag) = update.tag {
        record.tags.insert(tag.to_string());
    }
    record
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_keeps_first_push_latest_use_and_every_tag() {
        let m = Digest::of(b"m");
        let first = merged(
            None,
            &UsageUpdate {
                manifest: &m,
                tag: Some("env-a"),
                name: "exp",
                now: 100,
            },
        );
        let second = merged(
            Some(first),
            &UsageUpdate {
                manifest: &m,
                tag: Some("job-b"),
                name: "",
                now: 200,
            },
        );
        assert_eq!(second.pushed_at, 100);
        assert_eq!(second.last_used_at, 200);
        assert_eq!(second.name, "exp");
        assert_eq!(
            second.tags.iter().map(String::as_str).collect::<Vec<_>>(),
            vec!["env-a", "job-b"]
        );
        assert!(is_usage_tag(usage_tag(&m).as_str()));
        assert!(usage_tag(&m).as_str().len() <= 128);
    }
}
