//! Verification of stored blobs without rehashing them on every use: a blob is hashed once,
//! and its (size, mtime, inode) recorded; later checks hash it again only if any of these
//! changed. A blob that does not hash to its name is moved out of the store (quarantined) so
//! that it is never served, and the caller repairs it by rebuilding or pulling again.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

use rusqlite::{params, OptionalExtension};

use crate::index::{Index, IndexError};
use strata_oci::Digest;
use strata_oci::{Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Index(#[from] IndexError),
    #[error("moving corrupt blob {path} to quarantine: {source}")]
    Quarantine {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// What a check found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BlobState {
    Ok,
    Missing,
    /// The bytes hashed to `actual`; the file now lies at `quarantined`.
    Corrupt {
        actual: Digest,
        quarantined: PathBuf,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    size: i64,
    mtime_ns: i64,
    inode: i64,
}

fn stamp(store: &Store, digest: &Digest) -> Option<Stamp> {
    let meta = fs::metadata(store.blob_path(digest)).ok()?;
    Some(Stamp {
        size: meta.len() as i64,
        mtime_ns: meta.mtime() * 1_000_000_000 + meta.mtime_nsec(),
        inode: meta.ino() as i64,
    })
}

impl Index {
    fn verified_stamp(&self, digest: &Digest) -> Result<Option<Stamp>, IndexError> {
        self.conn
            .query_row(
                "SELECT size, mtime_ns, inode FROM verified_blobs WHERE digest = ?1",
                params![digest.to_string()],
                |r| {
                    Ok(Stamp {
                        size: r.get(0)?,
                        mtime_ns: r.get(1)?,
                        inode: r.get(2)?,
                    })
                },
            )
            .optional()
            .map_err(self.err())
    }

    fn record_verified(&self, digest: &Digest, s: Stamp) -> Result<(), IndexError> {
        self.conn
            .execute(
                "INSERT OR REPLACE INTO verified_blobs (digest, size, mtime_ns, inode)
                 VALUES (?1, ?2, ?3, ?4)",
                params![digest.to_string(), s.size, s.mtime_ns, s.inode],
            )
            .map_err(self.err())?;
        Ok(())
    }

    fn forget_verified(&self, digest: &Digest) -> Result<(), IndexError> {
        self.conn
            .execute(
                "DELETE FROM verified_blobs WHERE digest = ?1",
                params![digest.to_string()],
            )
            .map_err(self.err())?;
        Ok(())
    }
}

/// Records blobs whose bytes were just hashed while written (a build's own output).
pub fn mark_verified(store: &Store, index: &Index, digests: &[Digest]) -> Result<(), VerifyError> {
    for digest in digests {
        if let Some(s) = stamp(store, digest) {
            index.record_verified(digest, s)?;
        }
    }
    Ok(())
}

/// Checks one blob, hashing it only if it changed since it was last verified.
pub fn check_blob(store: &Store, index: &Index, digest: &Digest) -> Result<BlobState, VerifyError> {
    let Some(now) = stamp(store, digest) else {
        return Ok(BlobState::Missing);
    };
    if index.verified_stamp(digest)? == Some(now) {
        return Ok(BlobState::Ok);
    }
    match store.verify_blob(digest) {
        Ok(_) => {
            index.record_verified(digest, now)?;
            Ok(BlobState::Ok)
        }
        Err(StoreError::CorruptBlob { path, actual, .. }) => {
            index.forget_verified(digest)?;
            let quarantined = quarantine(store, &path, digest)?;
            tracing::warn!(
                "blob {digest} was corrupt (hashes to {actual}); moved to {}",
                quarantined.display()
            );
            Ok(BlobState::Corrupt {
                actual,
                quarantined,
            })
        }
        Err(StoreError::MissingBlob { .. }) => Ok(BlobState::Missing),
        Err(e) => Err(e.into()),
    }
}

fn quarantine(
    store: &Store,
    path: &std::path::Path,
    digest: &Digest,
) -> Result<PathBuf, VerifyError> {
    let dir = store.work_dir().join("quarantine");
    let dest = dir.join(digest.hex());
    fs::create_dir_all(&dir)
        .and_then(|_| fs::rename(path, &dest))
        .map_err(|source| VerifyError::Quarantine {
            path: path.to_path_buf(),
            source,
        })?;
    Ok(dest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn corrupt_blob_is_detected_once_changed_and_quarantined() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("oci"), &dir.path().join("tmp")).unwrap();
        let index = Index::open(&dir.path().join("strata.db")).unwrap();
        let d = store.put_bytes(b"layer bytes").unwrap();
        assert_eq!(check_blob(&store, &index, &d).unwrap(), BlobState::Ok);
        fs::write(store.blob_path(&d), b"layer bytez").unwrap();
        let state = check_blob(&store, &index, &d).unwrap();
        let BlobState::Corrupt {
            actual,
            quarantined,
        } = state
        else {
            panic!("not detected: {state:?}");
        };
        assert_eq!(actual, Digest::of(b"layer bytez"));
        assert!(quarantined.is_file());
        assert!(
            !store.has_blob(&d),
            "a corrupt blob must not stay in the store"
        );
        assert_eq!(check_blob(&store, &index, &d).unwrap(), BlobState::Missing);
    }
}
