//! Usage records of registry pushes (`pushes`): what strata pushed where and when, and when
//! it was last used through the registry, for registry GC to decide what to keep.

use std::collections::HashMap;

use rusqlite::{params, OptionalExtension};
use serde::Serialize;
use strata_oci::Digest;

use crate::index::{Index, IndexError};

/// A push of a manifest to a registry repository, as recorded in `pushes`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PushRecord {
    pub manifest: Digest,
    pub tag: Option<String>,
    pub pushed_at: i64,
    /// 0 when never recorded.
    pub last_used_at: i64,
    /// The environment name, empty when unknown.
    pub name: String,
    pub spec: Option<Digest>,
}

/// A push record with the local use of the same manifest (`env_index.last_used_at`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PushUsage {
    #[serde(flatten)]
    pub record: PushRecord,
    pub local_used_at: Option<i64>,
}

impl PushUsage {
    /// The latest sign of life: pushed, used through the registry, or used locally.
    pub fn last_active_at(&self) -> i64 {
        self.record
            .pushed_at
            .max(self.record.last_used_at)
            .max(self.local_used_at.unwrap_or(0))
    }
}

const USAGE_SELECT: &str = "SELECT p.manifest_digest, p.tag, p.pushed_at, p.last_used_at, p.name,
        p.spec_digest,
        (SELECT MAX(e.last_used_at) FROM env_index e WHERE e.manifest_digest = p.manifest_digest)
     FROM pushes p";

type UsageRow = (
    String,
    Option<String>,
    i64,
    i64,
    String,
    Option<String>,
    Option<i64>,
);

fn usage_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<UsageRow> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
        r.get(6)?,
    ))
}

impl Index {
    /// Every push to `target` (`REGISTRY/REPO`), by manifest digest.
    pub fn registry_pushes(&self, target: &str) -> Result<HashMap<Digest, PushUsage>, IndexError> {
        let mut stmt = self
            .conn
            .prepare(&format!("{USAGE_SELECT} WHERE p.target = ?1"))
            .map_err(self.err())?;
        let rows = stmt
            .query_map(params![target], usage_row)
            .map_err(self.err())?
            .collect::<Result<Vec<_>, _>>()
            .map_err(self.err())?;
        let mut usage = HashMap::with_capacity(rows.len());
        for row in rows {
            let u = self.usage_of(row)?;
            usage.insert(u.record.manifest.clone(), u);
        }
        Ok(usage)
    }

    /// The push of one manifest to `target`, if recorded.
    pub fn registry_push(
        &self,
        target: &str,
        manifest: &Digest,
    ) -> Result<Option<PushUsage>, IndexError> {
        let row = self
            .conn
            .query_row(
                &format!("{USAGE_SELECT} WHERE p.target = ?1 AND p.manifest_digest = ?2"),
                params![target, manifest.to_string()],
                usage_row,
            )
            .optional()
            .map_err(self.err())?;
        row.map(|r| self.usage_of(r)).transpose()
    }

    /// Records (or replaces) a push with explicit times, name and spec.
    pub fn record_registry_push(&self, target: &str, push: &PushRecord) -> Result<(), IndexError> {
        self.conn
            .execute(
                "INSERT INTO pushes
                 (target, manifest_digest, tag, pushed_at, last_used_at, name, spec_digest)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                 ON CONFLICT(target, manifest_digest) DO UPDATE SET
                   tag = excluded.tag, pushed_at = excluded.pushed_at,
                   last_used_at = excluded.last_used_at, name = excluded.name,
                   spec_digest = excluded.spec_digest",
                params![
                    target,
                    push.manifest.to_string(),
                    push.tag,
                    push.pushed_at,
                    push.last_used_at,
                    push.name,
                    push.spec.as_ref().map(Digest::to_string),
                ],
            )
            .map_err(self.err())?;
        Ok(())
    }

    /// Forgets a push whose manifest was deleted from the registry.
    pub fn forget_registry_push(&self, target: &str, manifest: &Digest) -> Result<(), IndexError> {
        self.conn
            .execute(
                "DELETE FROM pushes WHERE target = ?1 AND manifest_digest = ?2",
                params![target, manifest.to_string()],
            )
            .map_err(self.err())?;
        Ok(())
    }

    fn usage_of(&self, row: UsageRow) -> Result<PushUsage, IndexError> {
        let (manifest, tag, pushed_at, last_used_at, name, spec, local_used_at) = row;
        Ok(PushUsage {
            record: PushRecord {
                manifest: self.digest(manifest)?,
                tag,
                pushed_at,
                last_used_at,
                name,
                spec: spec.map(|s| self.digest(s)).transpose()?,
            },
            local_used_at,
        })
    }
}
