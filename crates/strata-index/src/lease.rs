//! Leases: a build in flight, a pull or a job says "I use these digests", and GC keeps them
//! (and, for manifests, everything they reference) until the lease is released, expires, or
//! its process dies.
//!
//! # Protocol (why a lease is taken *before* checking a blob exists)
//!
//! A caller that wants to reuse blobs already in the store does, in this order:
//!
//! 1. take the store's GC lock shared ([`Store::gc_lock_shared`]),
//! 2. create a lease and add the digests to it ([`Index::lease_blobs`] does 1–3),
//! 3. drop the GC lock,
//! 4. only then check that the blobs exist (and write or fetch those that do not).
//!
//! A sweep holds the GC lock exclusively from its re-read of the live leases to its last
//! deletion. So either the lease was committed before the sweep read the leases (the sweep
//! sees it and skips the blobs), or the sweep finished before the lease was taken (step 4
//! then sees the blob is gone and recreates it). Checking first and leasing after would let
//! a sweep delete the blob between the two.
//!
//! Process leases record the pid and the process start time (`/proc/PID/stat`, field 22), so
//! a pid reused by an unrelated process does not keep a dead build's lease alive.

use std::collections::HashSet;
use std::fs;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use rusqlite::{params, OptionalExtension, Transaction, TransactionBehavior};
use serde::Serialize;

use crate::index::{now, Index, IndexError};
use strata_oci::Digest;
use strata_oci::{Store, StoreError};

/// Start time recorded for a process that was not running when the lease was taken: such a
/// lease is dead from the start.
const NOT_RUNNING: i64 = -1;

/// The name of a lease (random hex).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct LeaseId(String);

impl LeaseId {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    fn generate() -> LeaseId {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let seed = format!(
            "{}-{}-{}",
            std::process::id(),
            nanos,
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        LeaseId(Digest::of(seed.as_bytes()).hex()[..32].to_string())
    }
}

impl std::fmt::Display for LeaseId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// What keeps a lease alive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LeaseOwner {
    /// As long as this process runs (the same process: pid and start time).
    Process { pid: u32 },
    /// Until this time (unix seconds).
    Until(i64),
    /// Until released.
    Manual,
}

impl LeaseOwner {
    /// The current process.
    pub fn current_process() -> LeaseOwner {
        LeaseOwner::Process {
            pid: std::process::id(),
        }
    }
}

impl Default for LeaseOwner {
    fn default() -> Self {
        LeaseOwner::current_process()
    }
}

/// A lease as reported by [`Index::leases`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LeaseInfo {
    pub id: LeaseId,
    pub holder: String,
    pub owner: LeaseOwner,
    pub created_at: i64,
    /// Number of digests it holds.
    pub refs: u64,
    /// False for a lease whose process died or which expired (the next GC removes it).
    pub live: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Index(#[from] IndexError),
}

/// A lease released when dropped.
pub struct Lease<'a> {
    index: &'a Index,
    id: Option<LeaseId>,
}

impl Lease<'_> {
    pub fn id(&self) -> Option<&LeaseId> {
        self.id.as_ref()
    }

    /// Adds digests to the lease. Take the GC lock shared around this if the digests are
    /// blobs you are about to reuse (see the module docs).
    pub fn add(&self, digests: &[Digest]) -> Result<(), IndexError> {
        match &self.id {
            Some(id) => self.index.add_lease_refs(id, digests),
            None => Ok(()),
        }
    }

    /// Releases now, reporting a failure that dropping would only log.
    pub fn release(mut self) -> Result<(), IndexError> {
        match self.id.take() {
            Some(id) => self.index.release_lease(&id),
            None => Ok(()),
        }
    }

    /// Keeps the lease after the guard goes away (e.g. a job lease released by another
    /// process later); returns its id.
    pub fn into_id(mut self) -> Option<LeaseId> {
        self.id.take()
    }
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        if let Some(id) = self.id.take() {
            if let Err(e) = self.index.release_lease(&id) {
                tracing::warn!("releasing lease {id}: {e}");
            }
        }
    }
}

impl Index {
    /// Creates an empty lease.
    pub fn create_lease(&self, holder: &str, owner: LeaseOwner) -> Result<LeaseId, IndexError> {
        let id = LeaseId::generate();
        let (pid, pid_start, expires_at) = match owner {
            LeaseOwner::Process { pid } => (
                Some(pid as i64),
                Some(process_start(pid).unwrap_or(NOT_RUNNING)),
                None,
            ),
            LeaseOwner::Until(t) => (None, None, Some(t)),
            LeaseOwner::Manual => (None, None, None),
        };
        self.conn
            .execute(
                "INSERT INTO leases (id, holder, pid, pid_start, created_at, expires_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![id.0, holder, pid, pid_start, now(), expires_at],
            )
            .map_err(self.err())?;
        Ok(id)
    }

    /// A guard around [`Index::create_lease`] that releases the lease when dropped.
    pub fn lease(&self, holder: &str, owner: LeaseOwner) -> Result<Lease<'_>, IndexError> {
        let id = self.create_lease(holder, owner)?;
        Ok(Lease {
            index: self,
            id: Some(id),
        })
    }

    /// Steps 1–3 of the protocol in the module docs: under the shared GC lock, a new lease
    /// holding `digests`. The caller checks the blobs exist afterwards.
    pub fn lease_blobs(
        &self,
        store: &Store,
        holder: &str,
        owner: LeaseOwner,
        digests: &[Digest],
    ) -> Result<Lease<'_>, LeaseError> {
        let _gc = store.gc_lock_shared()?;
        let lease = self.lease(holder, owner)?;
        lease.add(digests)?;
        Ok(lease)
    }

    /// Adds digests to a lease (in one transaction). Fails if the lease is gone.
    pub fn add_lease_refs(&self, id: &LeaseId, digests: &[Digest]) -> Result<(), IndexError> {
        let tx = self.conn.unchecked_transaction().map_err(self.err())?;
        for digest in digests {
            tx.execute(
                "INSERT OR IGNORE INTO lease_refs (lease_id, digest) VALUES (?1, ?2)",
                params![id.0, digest.to_string()],
            )
            .map_err(self.err())?;
        }
        tx.commit().map_err(self.err())
    }

    /// Releases a lease and its refs. Releasing a lease that is gone is not an error.
    pub fn release_lease(&self, id: &LeaseId) -> Result<(), IndexError> {
        let tx = self.conn.unchecked_transaction().map_err(self.err())?;
        tx.execute("DELETE FROM lease_refs WHERE lease_id = ?1", params![id.0])
            .map_err(self.err())?;
        tx.execute("DELETE FROM leases WHERE id = ?1", params![id.0])
            .map_err(self.err())?;
        tx.commit().map_err(self.err())
    }

    /// The digests held by live leases other than `own`. Read only (dead leases are skipped,
    /// not deleted), so it works on a full disk.
    pub fn live_digests_except(&self, own: &LeaseId) -> Result<HashSet<Digest>, IndexError> {
        let at = now();
        let mut digests = HashSet::new();
        for lease in self.lease_rows()? {
            if lease.id == own.0 || !lease.is_live(at) {
                continue;
            }
            let mut stmt = self
                .conn
                .prepare_cached("SELECT digest FROM lease_refs WHERE lease_id = ?1")
                .map_err(self.err())?;
            let rows = stmt
                .query_map(params![lease.id], |row| row.get::<_, String>(0))
                .map_err(self.err())?;
            for text in rows {
                digests.insert(self.digest(text.map_err(self.err())?)?);
            }
        }
        Ok(digests)
    }

    /// The digests held by live leases, after deleting the leases that are dead (process
    /// gone or restarted under the same pid) or expired.
    pub fn live_lease_refs(&self) -> Result<HashSet<Digest>, IndexError> {
        // Immediate: this transaction reads then writes, and a deferred one could not
        // upgrade if another connection wrote in between.
        let tx = Transaction::new_unchecked(&self.conn, TransactionBehavior::Immediate)
            .map_err(self.err())?;
        let at = now();
        for lease in self.lease_rows()? {
            if lease.is_live(at) {
                continue;
            }
            tx.execute(
                "DELETE FROM lease_refs WHERE lease_id = ?1",
                params![lease.id],
            )
            .map_err(self.err())?;
            tx.execute("DELETE FROM leases WHERE id = ?1", params![lease.id])
                .map_err(self.err())?;
        }
        let digests = {
            let mut stmt = tx
                .prepare("SELECT DISTINCT digest FROM lease_refs")
                .map_err(self.err())?;
            let rows = stmt
                .query_map([], |r| r.get::<_, String>(0))
                .map_err(self.err())?;
            let mut digests = HashSet::new();
            for row in rows {
                digests.insert(self.digest(row.map_err(self.err())?)?);
            }
            digests
        };
        tx.commit().map_err(self.err())?;
        Ok(digests)
    }

    /// All leases, live or not, for reporting.
    pub fn leases(&self) -> Result<Vec<LeaseInfo>, IndexError> {
        let at = now();
        let mut infos = Vec::new();
        for row in self.lease_rows()? {
            let refs: i64 = self
                .conn
                .query_row(
                    "SELECT COUNT(*) FROM lease_refs WHERE lease_id = ?1",
                    params![row.id],
                    |r| r.get(0),
                )
                .map_err(self.err())?;
            infos.push(LeaseInfo {
                live: row.is_live(at),
                owner: row.owner(),
                id: LeaseId(row.id),
                holder: row.holder,
                created_at: row.created_at,
                refs: refs as u64,
            });
        }
        Ok(infos)
    }

    /// Whether a lease exists (live or not yet collected).
    pub fn lease_exists(&self, id: &LeaseId) -> Result<bool, IndexError> {
        self.conn
            .query_row("SELECT 1 FROM leases WHERE id = ?1", params![id.0], |_| {
                Ok(())
            })
            .optional()
            .map(|r| r.is_some())
            .map_err(self.err())
    }

    fn lease_rows(&self) -> Result<Vec<LeaseRow>, IndexError> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT id, holder, pid, pid_start, created_at, expires_at FROM leases
                 ORDER BY created_at, id",
            )
            .map_err(self.err())?;
        let rows = stmt
            .query_map([], |r| {
                Ok(LeaseRow {
                    id: r.get(0)?,
                    holder: r.get(1)?,
                    pid: r.get(2)?,
                    pid_start: r.get(3)?,
                    created_at: r.get(4)?,
                    expires_at: r.get(5)?,
                })
            })
            .map_err(self.err())?;
        rows.collect::<Result<_, _>>().map_err(self.err())
    }
}

struct LeaseRow {
    id: String,
    holder: String,
    pid: Option<i64>,
    pid_start: Option<i64>,
    created_at: i64,
    expires_at: Option<i64>,
}

impl LeaseRow {
    fn owner(&self) -> LeaseOwner {
        match (self.pid, self.expires_at) {
            (Some(pid), _) => LeaseOwner::Process { pid: pid as u32 },
            (None, Some(t)) => LeaseOwner::Until(t),
            (None, None) => LeaseOwner::Manual,
        }
    }

    fn is_live(&self, now: i64) -> bool {
        if let Some(t) = self.expires_at {
            if t <= now {
                return false;
            }
        }
        let Some(pid) = self.pid else {
            return true;
        };
        let recorded = self.pid_start.unwrap_or(NOT_RUNNING);
        if recorded == NOT_RUNNING {
            return false;
        }
        if !proc_available() {
            // Without /proc we cannot tell a dead process from a live one: keep the lease.
            return true;
        }
        u32::try_from(pid)
            .ok()
            .and_then(process_start)
            .is_some_and(|start| start == recorded)
    }
}

fn proc_available() -> bool {
    fs::metadata("/proc/self/stat").is_ok()
}

/// Field 22 of `/proc/PID/stat` (start time in clock ticks after boot), if the process runs.
pub(crate) fn process_start(pid: u32) -> Option<i64> {
    let stat = procfs::process::Process::new(i32::try_from(pid).ok()?)
        .ok()?
        .stat()
        .ok()?;
    // A zombie has exited; its lease is dead even though /proc still lists it.
    if matches!(stat.state, 'Z' | 'X') {
        return None;
    }
    i64::try_from(stat.starttime).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index() -> (tempfile::TempDir, Index) {
        let dir = tempfile::tempdir().unwrap();
        let index = Index::open(&dir.path().join("strata.db")).unwrap();
        (dir, index)
    }

    #[test]
    fn reads_the_start_time_of_this_process() {
        let start = process_start(std::process::id()).unwrap();
        assert!(start > 0);
        assert_eq!(process_start(std::process::id()), Some(start));
    }

    #[test]
    fn released_and_dropped_leases_hold_nothing() {
        let (_dir, index) = index();
        let d = Digest::of(b"x");
        let id = index.create_lease("build", LeaseOwner::Manual).unwrap();
        index.add_lease_refs(&id, &[d.clone(), d.clone()]).unwrap();
        assert!(index.live_lease_refs().unwrap().contains(&d));
        index.release_lease(&id).unwrap();
        assert!(index.live_lease_refs().unwrap().is_empty());
        {
            let guard = index.lease("pull", LeaseOwner::default()).unwrap();
            guard.add(std::slice::from_ref(&d)).unwrap();
            assert!(index.live_lease_refs().unwrap().contains(&d));
            let info = index.leases().unwrap();
            assert_eq!(info.len(), 1);
            assert_eq!(info[0].refs, 1);
            assert!(info[0].live);
        }
        assert!(index.leases().unwrap().is_empty());
    }

    #[test]
    fn dead_and_expired_leases_are_collected() {
        let (_dir, index) = index();
        let d = Digest::of(b"y");
        let expired = index
            .create_lease("old", LeaseOwner::Until(now() - 1))
            .unwrap();
        index
            .add_lease_refs(&expired, std::slice::from_ref(&d))
            .unwrap();
        let dead = index
            .create_lease("gone", LeaseOwner::Process { pid: u32::MAX - 1 })
            .unwrap();
        index
            .add_lease_refs(&dead, std::slice::from_ref(&d))
            .unwrap();
        assert_eq!(index.leases().unwrap().iter().filter(|l| l.live).count(), 0);
        assert!(index.live_lease_refs().unwrap().is_empty());
        assert!(!index.lease_exists(&expired).unwrap());
        assert!(!index.lease_exists(&dead).unwrap());
        assert!(index.add_lease_refs(&dead, &[d]).is_err());
    }
}
