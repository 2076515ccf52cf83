//! strata's indexes in SQLite (`strata.db`): which environment spec and which lock were built
//! into which manifest, which source blob was turned into which layer, and what was pushed
//! where. The indexes only ever point at content; the store holds the content itself.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use rusqlite::{params, Connection, OptionalExtension};

use strata_oci::LayerDescriptor;
use strata_oci::{Digest, DigestParseError};

#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("database {path}: {source}")]
    Sqlite {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error("database {path} holds an invalid digest: {source}")]
    BadDigest {
        path: PathBuf,
        #[source]
        source: DigestParseError,
    },
}

/// Schema migrations, applied in order; `PRAGMA user_version` counts those applied.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE env_index (
    spec_digest     TEXT PRIMARY KEY,
    lock_digest     TEXT NOT NULL,
    base_digest     TEXT NOT NULL,
    manifest_digest TEXT NOT NULL,
    tag             TEXT NOT NULL,
    size            INTEGER NOT NULL,
    spec_json       TEXT NOT NULL,
    created_at      INTEGER NOT NULL,
    last_used_at    INTEGER NOT NULL
);
CREATE INDEX env_index_manifest ON env_index(manifest_digest);
CREATE TABLE lock_index (
    lock_digest     TEXT NOT NULL,
    base_digest     TEXT NOT NULL,
    manifest_digest TEXT NOT NULL,
    lock_json       TEXT NOT NULL,
    created_at      INTEGER NOT NULL,
    PRIMARY KEY (lock_digest, base_digest)
);
CREATE TABLE layer_index (
    source_digest TEXT NOT NULL,
    scheme        TEXT NOT NULL,
    format        INTEGER NOT NULL,
    digest        TEXT NOT NULL,
    diff_id       TEXT NOT NULL,
    size          INTEGER NOT NULL,
    media_type    TEXT NOT NULL,
    PRIMARY KEY (source_digest, scheme, format)
);
CREATE TABLE pushes (
    target          TEXT NOT NULL,
    manifest_digest TEXT NOT NULL,
    tag             TEXT,
    pushed_at       INTEGER NOT NULL,
    PRIMARY KEY (target, manifest_digest)
);
"#,
    r#"
ALTER TABLE env_index ADD COLUMN name TEXT NOT NULL DEFAULT '';
ALTER TABLE pushes ADD COLUMN last_used_at INTEGER NOT NULL DEFAULT 0;
ALTER TABLE pushes ADD COLUMN name TEXT NOT NULL DEFAULT '';
ALTER TABLE pushes ADD COLUMN spec_digest TEXT;
CREATE TABLE leases (
    id          TEXT PRIMARY KEY,
    holder      TEXT NOT NULL,
    pid         INTEGER,
    pid_start   INTEGER,
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER
);
CREATE TABLE lease_refs (
    lease_id TEXT NOT NULL REFERENCES leases(id) ON DELETE CASCADE,
    digest   TEXT NOT NULL,
    PRIMARY KEY (lease_id, digest)
);
CREATE INDEX lease_refs_digest ON lease_refs(digest);
CREATE TABLE verified_blobs (
    digest   TEXT PRIMARY KEY,
    size     INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    inode    INTEGER NOT NULL
);
"#,
    // When each spec was last resolved to its lock: a spec with ranges is answered from the
    // cache until `--refresh` resolves it again. Rows from before were resolved when built.
    r#"
ALTER TABLE env_index ADD COLUMN resolved_at INTEGER NOT NULL DEFAULT 0;
UPDATE env_index SET resolved_at = created_at;
"#,
    // The files and symlinks of each package layer (JSON, as strata-build writes it), so that
    // the layers of an image are checked for clashing paths without reading them. A layer
    // without a row is read once from its blob.
    r#"
CREATE TABLE layer_paths (
    layer_digest TEXT PRIMARY KEY,
    paths_json   TEXT NOT NULL
);
"#,
    // What a scan of a base image's layers found (its Python interpreter, as JSON), keyed by
    // a digest of the blobs scanned and what was asked: a function of content, so never stale.
    r#"
CREATE TABLE base_scans (
    scan_key  TEXT PRIMARY KEY,
    result    TEXT NOT NULL
);
"#,
];

const ENV_COLUMNS: &str = "spec_digest, lock_digest, base_digest, manifest_digest, tag, size, \
     spec_json, name, created_at, last_used_at, resolved_at";

struct RawEnvRow {
    spec: String,
    lock: String,
    base: String,
    manifest: String,
    tag: String,
    size: i64,
    spec_json: String,
    name: String,
    created_at: i64,
    last_used_at: i64,
    resolved_at: i64,
}

fn raw_env_row(r: &rusqlite::Row) -> rusqlite::Result<RawEnvRow> {
    Ok(RawEnvRow {
        spec: r.get(0)?,
        lock: r.get(1)?,
        base: r.get(2)?,
        manifest: r.get(3)?,
        tag: r.get(4)?,
        size: r.get(5)?,
        spec_json: r.get(6)?,
        name: r.get(7)?,
        created_at: r.get(8)?,
        last_used_at: r.get(9)?,
        resolved_at: r.get(10)?,
    })
}

/// An environment that was built: spec → lock → manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvRecord {
    pub spec: Digest,
    pub lock: Digest,
    pub base: Digest,
    pub manifest: Digest,
    pub tag: String,
    /// Bytes of all blobs the image references.
    pub size: u64,
    /// The canonical spec, kept to explain later misses.
    pub spec_json: String,
    /// The environment's name (`--name`, else the requirements file's stem).
    pub name: String,
}

/// An environment row with its usage times (unix seconds).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvRow {
    pub record: EnvRecord,
    pub created_at: i64,
    pub last_used_at: i64,
    /// When the spec was last resolved to its lock (a build that resolved, or took the
    /// answer from a registry); a cache hit does not change it.
    pub resolved_at: i64,
}

/// A lock that was built on a base: enough to rebuild (the lock keeps its sources).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockRecord {
    pub lock: Digest,
    pub base: Digest,
    pub manifest: Digest,
    pub lock_json: String,
}

/// What a layer was made from: the source blob (a wheel), how (the install scheme) and in
/// which layer format version.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LayerKey {
    pub source: Digest,
    pub scheme: String,
    pub format: u32,
}

pub struct Index {
    pub(crate) conn: Connection,
    path: PathBuf,
}

/// Seconds since the Unix epoch.
pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

impl Index {
    /// Opens (creating and migrating) the database. WAL mode and a busy timeout let many
    /// strata processes share it.
    pub fn open(path: &Path) -> Result<Index, IndexError> {
        let schema = strata_db::Schema {
            counter: strata_db::Counter::UserVersion,
            migrations: MIGRATIONS,
        };
        let conn =
            strata_db::open_migrated(path, &schema).map_err(|source| IndexError::Sqlite {
                path: path.to_path_buf(),
                source,
            })?;
        let index = Index {
            conn,
            path: path.to_path_buf(),
        };
        index.configure()?;
        Ok(index)
    }

    pub(crate) fn err(&self) -> impl Fn(rusqlite::Error) -> IndexError + '_ {
        |source| IndexError::Sqlite {
            path: self.path.clone(),
            source,
        }
    }

    pub(crate) fn digest(&self, text: String) -> Result<Digest, IndexError> {
        text.parse().map_err(|source| IndexError::BadDigest {
            path: self.path.clone(),
            source,
        })
    }

    fn configure(&self) -> Result<(), IndexError> {
        self.conn
            .pragma_update(None, "foreign_keys", "ON")
            .map_err(self.err())?;
        Ok(())
    }

    /// The environment built from a spec, if any; marks it used.
    pub fn env_by_spec(&self, spec: &Digest) -> Result<Option<EnvRecord>, IndexError> {
        let row = self
            .conn
            .query_row(
                &format!("SELECT {ENV_COLUMNS} FROM env_index WHERE spec_digest = ?1"),
                params![spec.to_string()],
                raw_env_row,
            )
            .optional()
            .map_err(self.err())?;
        row.map(|raw| self.env_row(raw).map(|r| r.record))
            .transpose()
    }

    /// Every environment, oldest first.
    pub fn envs(&self) -> Result<Vec<EnvRow>, IndexError> {
        let mut stmt = self
            .conn
            .prepare(&format!(
                "SELECT {ENV_COLUMNS} FROM env_index ORDER BY created_at, spec_digest"
            ))
            .map_err(self.err())?;
        let raws = stmt
            .query_map([], raw_env_row)
            .map_err(self.err())?
            .collect::<Result<Vec<_>, _>>()
            .map_err(self.err())?;
        raws.into_iter().map(|raw| self.env_row(raw)).collect()
    }

    /// Environments whose image is `manifest`.
    pub fn envs_by_manifest(&self, manifest: &Digest) -> Result<Vec<EnvRow>, IndexError> {
        Ok(self
            .envs()?
            .into_iter()
            .filter(|e| &e.record.manifest == manifest)
            .collect())
    }

    fn env_row(&self, raw: RawEnvRow) -> Result<EnvRow, IndexError> {
        Ok(EnvRow {
            record: EnvRecord {
                spec: self.digest(raw.spec)?,
                lock: self.digest(raw.lock)?,
                base: self.digest(raw.base)?,
                manifest: self.digest(raw.manifest)?,
                tag: raw.tag,
                size: raw.size as u64,
                spec_json: raw.spec_json,
                name: raw.name,
            },
            created_at: raw.created_at,
            last_used_at: raw.last_used_at,
            resolved_at: raw.resolved_at,
        })
    }

    /// Records that an image was used now (a job launched on it), wherever it is recorded:
    /// the environments built into it and its pushes.
    pub fn touch_manifest(&self, manifest: &Digest) -> Result<(), IndexError> {
        let (m, t) = (manifest.to_string(), now());
        self.conn
            .execute(
                "UPDATE env_index SET last_used_at = ?2 WHERE manifest_digest = ?1",
                params![m, t],
            )
            .map_err(self.err())?;
        self.conn
            .execute(
                "UPDATE pushes SET last_used_at = ?2 WHERE manifest_digest = ?1",
                params![m, t],
            )
            .map_err(self.err())?;
        Ok(())
    }

    /// Records that an environment was used now (a build hit, a pull, a launch).
    pub fn touch_env(&self, spec: &Digest) -> Result<(), IndexError> {
        self.conn
            .execute(
                "UPDATE env_index SET last_used_at = ?2 WHERE spec_digest = ?1",
                params![spec.to_string(), now()],
            )
            .map_err(self.err())?;
        Ok(())
    }

    pub fn lock_on_base(
        &self,
        lock: &Digest,
        base: &Digest,
    ) -> Result<Option<LockRecord>, IndexError> {
        let row = self
            .conn
            .query_row(
                "SELECT manifest_digest, lock_json FROM lock_index
                 WHERE lock_digest = ?1 AND base_digest = ?2",
                params![lock.to_string(), base.to_string()],
                |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)),
            )
            .optional()
            .map_err(self.err())?;
        let Some((manifest, lock_json)) = row else {
            return Ok(None);
        };
        Ok(Some(LockRecord {
            lock: lock.clone(),
            base: base.clone(),
            manifest: self.digest(manifest)?,
            lock_json,
        }))
    }

    pub fn layer(&self, key: &LayerKey) -> Result<Option<LayerDescriptor>, IndexError> {
        let row = self
            .conn
            .query_row(
                "SELECT digest, diff_id, size, media_type FROM layer_index
                 WHERE source_digest = ?1 AND scheme = ?2 AND format = ?3",
                params![key.source.to_string(), key.scheme, key.format],
                |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, i64>(2)?,
                        r.get::<_, String>(3)?,
                    ))
                },
            )
            .optional()
            .map_err(self.err())?;
        let Some((digest, diff_id, size, media_type)) = row else {
            return Ok(None);
        };
        Ok(Some(LayerDescriptor {
            digest: self.digest(digest)?,
            diff_id: self.digest(diff_id)?,
            size: size as u64,
            media_type,
        }))
    }

    /// The layer index rows whose layer is one of `digests` (a key per row: one layer can be
    /// known under several keys): what a push publishes to the registry's layer index.
    pub fn layers_by_digest(
        &self,
        digests: &[Digest],
    ) -> Result<Vec<(LayerKey, LayerDescriptor)>, IndexError> {
        let mut statement = self
            .conn
            .prepare(
                "SELECT source_digest, scheme, format, diff_id, size, media_type
                 FROM layer_index WHERE digest = ?1 ORDER BY source_digest, scheme, format",
            )
            .map_err(self.err())?;
        let mut found = Vec::new();
        for digest in digests {
            let rows = statement
                .query_map(params![digest.to_string()], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, u32>(2)?,
                        r.get::<_, String>(3)?,
                        r.get::<_, i64>(4)?,
                        r.get::<_, String>(5)?,
                    ))
                })
                .map_err(self.err())?;
            for row in rows {
                let (source, scheme, format, diff_id, size, media_type) =
                    row.map_err(self.err())?;
                let key = LayerKey {
                    source: self.digest(source)?,
                    scheme,
                    format,
                };
                let layer = LayerDescriptor {
                    digest: digest.clone(),
                    diff_id: self.digest(diff_id)?,
                    size: size as u64,
                    media_type,
                };
                found.push((key, layer));
            }
        }
        Ok(found)
    }

    /// The paths of a layer, as recorded by [`Index::record_layer_paths`].
    pub fn layer_paths(&self, layer: &Digest) -> Result<Option<String>, IndexError> {
        self.conn
            .query_row(
                "SELECT paths_json FROM layer_paths WHERE layer_digest = ?1",
                params![layer.to_string()],
                |r| r.get(0),
            )
            .optional()
            .map_err(self.err())
    }

    /// What the base scan named by `key` found, as recorded by [`Index::record_base_scan`].
    pub fn base_scan(&self, key: &Digest) -> Result<Option<String>, IndexError> {
        self.conn
            .query_row(
                "SELECT result FROM base_scans WHERE scan_key = ?1",
                params![key.to_string()],
                |r| r.get(0),
            )
            .optional()
            .map_err(self.err())
    }

    /// Records what a scan of base image blobs found; `key` names the blobs and the question.
    pub fn record_base_scan(&self, key: &Digest, result: &str) -> Result<(), IndexError> {
        self.conn
            .execute(
                "INSERT OR REPLACE INTO base_scans (scan_key, result) VALUES (?1, ?2)",
                params![key.to_string(), result],
            )
            .map_err(self.err())?;
        Ok(())
    }

    /// Records the paths of a layer (a layer is named by its digest: they never change).
    pub fn record_layer_paths(&self, layer: &Digest, paths_json: &str) -> Result<(), IndexError> {
        self.conn
            .execute(
                "INSERT OR REPLACE INTO layer_paths (layer_digest, paths_json) VALUES (?1, ?2)",
                params![layer.to_string(), paths_json],
            )
            .map_err(self.err())?;
        Ok(())
    }

    /// Records that `manifest` is the image of `lock` on `base` (a pulled image), unless an
    /// image of that lock is known already. Its lock file is in its env layer, not here.
    pub fn record_lock_if_absent(
        &self,
        lock: &Digest,
        base: &Digest,
        manifest: &Digest,
    ) -> Result<(), IndexError> {
        self.conn
            .execute(
                "INSERT OR IGNORE INTO lock_index
                 (lock_digest, base_digest, manifest_digest, lock_json, created_at)
                 VALUES (?1, ?2, ?3, '', ?4)",
                params![
                    lock.to_string(),
                    base.to_string(),
                    manifest.to_string(),
                    now()
                ],
            )
            .map_err(self.err())?;
        Ok(())
    }

    /// Records a finished build in one transaction: its layers, its lock and its spec.
    pub fn record_build(
        &self,
        env: &EnvRecord,
        lock_json: &str,
        layers: &[(LayerKey, LayerDescriptor)],
    ) -> Result<(), IndexError> {
        let tx = self.conn.unchecked_transaction().map_err(self.err())?;
        let ts = now();
        for (key, layer) in layers {
            tx.execute(
                "INSERT OR REPLACE INTO layer_index
                 (source_digest, scheme, format, digest, diff_id, size, media_type)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    key.source.to_string(),
                    key.scheme,
                    key.format,
                    layer.digest.to_string(),
                    layer.diff_id.to_string(),
                    layer.size as i64,
                    layer.media_type
                ],
            )
            .map_err(self.err())?;
        }
        tx.execute(
            "INSERT OR REPLACE INTO lock_index
             (lock_digest, base_digest, manifest_digest, lock_json, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5)",
            params![
                env.lock.to_string(),
                env.base.to_string(),
                env.manifest.to_string(),
                lock_json,
                ts
            ],
        )
        .map_err(self.err())?;
        tx.execute(
            "INSERT INTO env_index
             (spec_digest, lock_digest, base_digest, manifest_digest, tag, size, spec_json,
              created_at, last_used_at, name, resolved_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?8, ?9, ?8)
             ON CONFLICT(spec_digest) DO UPDATE SET
               lock_digest = excluded.lock_digest, base_digest = excluded.base_digest,
               manifest_digest = excluded.manifest_digest, tag = excluded.tag,
               size = excluded.size, spec_json = excluded.spec_json,
               last_used_at = excluded.last_used_at, name = excluded.name,
               resolved_at = excluded.resolved_at",
            params![
                env.spec.to_string(),
                env.lock.to_string(),
                env.base.to_string(),
                env.manifest.to_string(),
                env.tag,
                env.size as i64,
                env.spec_json,
                ts,
                env.name
            ],
        )
        .map_err(self.err())?;
        tx.commit().map_err(self.err())
    }

    /// Releases every lease of `holder` (e.g. `job:ID`): a job's lease outlives the process
    /// that took it and is released by whoever ends the job.
    pub fn release_leases_of(&self, holder: &str) -> Result<usize, IndexError> {
        self.conn
            .execute("DELETE FROM leases WHERE holder = ?1", params![holder])
            .map_err(self.err())
    }

    /// Whether a manifest was pushed to `target` (`REGISTRY/REPO`) before.
    pub fn was_pushed(&self, target: &str, manifest: &Digest) -> Result<bool, IndexError> {
        self.conn
            .query_row(
                "SELECT 1 FROM pushes WHERE target = ?1 AND manifest_digest = ?2",
                params![target, manifest.to_string()],
                |_| Ok(()),
            )
            .optional()
            .map(|r| r.is_some())
            .map_err(self.err())
    }

    /// Other repositories of `registry` that strata pushed to, most recent first: candidates
    /// to mount blobs from.
    pub fn pushed_repos(&self, registry: &str, except: &str) -> Result<Vec<String>, IndexError> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT target, MAX(pushed_at) AS t FROM pushes
                 WHERE target LIKE ?1 || '/%' AND target != ?2
                 GROUP BY target ORDER BY t DESC",
            )
            .map_err(self.err())?;
        let rows = stmt
            .query_map(params![registry, except], |r| r.get::<_, String>(0))
            .map_err(self.err())?;
        rows.collect::<Result<_, _>>().map_err(self.err())
    }

    /// Records a use (pull, launch, build hit with push) of a manifest in a registry.
    pub fn touch_push(&self, target: &str, manifest: &Digest) -> Result<(), IndexError> {
        self.conn
            .execute(
                "UPDATE pushes SET last_used_at = ?3 WHERE target = ?1 AND manifest_digest = ?2",
                params![target, manifest.to_string(), now()],
            )
            .map_err(self.err())?;
        Ok(())
    }

    pub fn record_push(
        &self,
        target: &str,
        manifest: &Digest,
        tag: Option<&str>,
        name: &str,
        spec: Option<&Digest>,
    ) -> Result<(), IndexError> {
        self.conn
            .execute(
                "INSERT INTO pushes (target, manifest_digest, tag, pushed_at, last_used_at, name,
                                     spec_digest)
                 VALUES (?1, ?2, ?3, ?4, ?4, ?5, ?6)
                 ON CONFLICT(target, manifest_digest) DO UPDATE SET
                   tag = excluded.tag, last_used_at = excluded.last_used_at",
                params![
                    target,
                    manifest.to_string(),
                    tag,
                    now(),
                    name,
                    spec.map(|s| s.to_string())
                ],
            )
            .map_err(self.err())?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(spec: &[u8], manifest: &[u8]) -> EnvRecord {
        EnvRecord {
            spec: Digest::of(spec),
            lock: Digest::of(b"lock"),
            base: Digest::of(b"base"),
            manifest: Digest::of(manifest),
            tag: "env-x".into(),
            size: 10,
            spec_json: "{}".into(),
            name: "x".into(),
        }
    }

    #[test]
    fn records_and_finds_builds() {
        let dir = tempfile::tempdir().unwrap();
        let index = Index::open(&dir.path().join("strata.db")).unwrap();
        let env = record(b"spec", b"m1");
        let layer = LayerDescriptor {
            digest: Digest::of(b"l"),
            diff_id: Digest::of(b"d"),
            size: 3,
            media_type: "x".into(),
        };
        let key = LayerKey {
            source: Digest::of(b"wheel"),
            scheme: "s".into(),
            format: 1,
        };
        assert!(index.env_by_spec(&env.spec).unwrap().is_none());
        index
            .record_build(&env, "{\"lock\":1}", &[(key.clone(), layer.clone())])
            .unwrap();
        drop(index);
        let index = Index::open(&dir.path().join("strata.db")).unwrap();
        assert_eq!(index.env_by_spec(&env.spec).unwrap(), Some(env.clone()));
        assert_eq!(index.layer(&key).unwrap(), Some(layer));
        let other_format = LayerKey { format: 2, ..key };
        assert_eq!(index.layer(&other_format).unwrap(), None);
        let lock = index.lock_on_base(&env.lock, &env.base).unwrap().unwrap();
        assert_eq!(lock.manifest, env.manifest);
        assert!(index.lock_on_base(&env.lock, &env.spec).unwrap().is_none());
    }

    /// An index written before `resolved_at` existed: its rows were resolved when built.
    #[test]
    fn rows_of_an_older_index_were_resolved_when_built() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("strata.db");
        let old = strata_db::Schema {
            counter: strata_db::Counter::UserVersion,
            migrations: &MIGRATIONS[..2],
        };
        let conn = strata_db::open_migrated(&path, &old).unwrap();
        let d = |s: &[u8]| Digest::of(s).to_string();
        conn.execute(
            "INSERT INTO env_index (spec_digest, lock_digest, base_digest, manifest_digest, tag,
             size, spec_json, created_at, last_used_at) VALUES (?1, ?2, ?3, ?4, 't', 1, '{}', 100, 200)",
            params![d(b"s"), d(b"l"), d(b"b"), d(b"m")],
        )
        .unwrap();
        drop(conn);
        let index = Index::open(&path).unwrap();
        let rows = index.envs().unwrap();
        assert_eq!((rows[0].created_at, rows[0].resolved_at), (100, 100));
        // A new build of the spec (a refresh) resolves it now; its creation stays.
        let mut env = rows[0].record.clone();
        env.manifest = Digest::of(b"m2");
        index.record_build(&env, "{}", &[]).unwrap();
        let row = &index.envs().unwrap()[0];
        assert_eq!(row.created_at, 100);
        assert!(row.resolved_at >= now() - 5, "{}", row.resolved_at);
    }

    #[test]
    fn concurrent_opens_of_a_new_database_migrate_it_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("strata.db");
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let path = path.clone();
                std::thread::spawn(move || Index::open(&path).map(|_| ()))
            })
            .collect();
        for t in threads {
            t.join().unwrap().unwrap();
        }
    }

    #[test]
    fn pushes_are_remembered_per_target() {
        let dir = tempfile::tempdir().unwrap();
        let index = Index::open(&dir.path().join("strata.db")).unwrap();
        let m = Digest::of(b"m");
        index
            .record_push("reg/a", &m, Some("t"), "n", None)
            .unwrap();
        assert!(index.was_pushed("reg/a", &m).unwrap());
        assert!(!index.was_pushed("reg/b", &m).unwrap());
    }
}
