//! The rows garbage collection reads and deletes: every environment row with its size and
//! times, and the removal of the rows of pruned images (with the lock rows nothing uses any
//! more) in one transaction.

use std::collections::HashSet;

use rusqlite::{params, Transaction, TransactionBehavior};
use strata_oci::Digest;

use crate::index::{Index, IndexError};

/// An environment row as GC sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRow {
    pub spec: Digest,
    pub manifest: Digest,
    pub tag: String,
    pub name: String,
    pub size: u64,
    pub created_at: i64,
    pub last_used_at: i64,
}

/// The rows of one pruned image, as planned: rows used after `last_used_at` are kept.
pub struct PrunedRows<'a> {
    pub specs: &'a [Digest],
    pub manifest: &'a Digest,
    pub last_used_at: i64,
}

impl Index {
    /// Every environment row.
    pub fn image_rows(&self) -> Result<Vec<ImageRow>, IndexError> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT spec_digest, manifest_digest, tag, name, size, created_at, last_used_at
                 FROM env_index",
            )
            .map_err(self.err())?;
        let raw = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, i64>(4)?,
                    r.get::<_, i64>(5)?,
                    r.get::<_, i64>(6)?,
                ))
            })
            .map_err(self.err())?;
        let mut rows = Vec::new();
        for row in raw {
            let (spec, manifest, tag, name, size, created_at, last_used_at) =
                row.map_err(self.err())?;
            rows.push(ImageRow {
                spec: self.digest(spec)?,
                manifest: self.digest(manifest)?,
                tag,
                name,
                size: size.max(0) as u64,
                created_at,
                last_used_at,
            });
        }
        Ok(rows)
    }

    /// Deletes the rows of `pruned` (only as planned), and the lock rows of the `unkept`
    /// manifests that no environment row uses any more, in one transaction.
    pub fn delete_pruned(
        &self,
        pruned: &[PrunedRows<'_>],
        unkept: &HashSet<&Digest>,
    ) -> Result<(), IndexError> {
        let tx = Transaction::new_unchecked(&self.conn, TransactionBehavior::Immediate)
            .map_err(self.err())?;
        for image in pruned {
            for spec in image.specs {
                tx.execute(
                    "DELETE FROM env_index
                     WHERE spec_digest = ?1 AND manifest_digest = ?2 AND last_used_at <= ?3",
                    params![
                        spec.to_string(),
                        image.manifest.to_string(),
                        image.last_used_at
                    ],
                )
                .map_err(self.err())?;
            }
        }
        let manifests: HashSet<String> = unkept.iter().map(|d| d.to_string()).collect();
        self.delete_lock_rows(&tx, &manifests)?;
        tx.commit().map_err(self.err())?;
        Ok(())
    }

    /// The lock rows of `manifests` that no environment row uses any more. `lock_index` has
    /// no index on the manifest, so it is scanned once rather than once per manifest.
    fn delete_lock_rows(
        &self,
        tx: &Transaction,
        manifests: &HashSet<String>,
    ) -> Result<(), IndexError> {
        if manifests.is_empty() {
            return Ok(());
        }
        let rows: Vec<(i64, String)> = {
            let mut stmt = tx
                .prepare("SELECT rowid, manifest_digest FROM lock_index")
                .map_err(self.err())?;
            let rows = stmt
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
                .map_err(self.err())?;
            rows.collect::<Result<_, _>>().map_err(self.err())?
        };
        for (rowid, manifest) in rows.into_iter().filter(|(_, m)| manifests.contains(m)) {
            tx.execute(
                "DELETE FROM lock_index WHERE rowid = ?1
                 AND NOT EXISTS (SELECT 1 FROM env_index WHERE manifest_digest = ?2)",
                params![rowid, manifest],
            )
            .map_err(self.err())?;
        }
        Ok(())
    }
}
