//! What a build adds to the store, taken back out if the build fails before its image is
//! recorded: a failed build (a full disk, say) leaves the store as it was.
//!
//! Only blobs this build created are removed, under the exclusive GC lock, and not those a
//! live lease of another process holds: it found them present and may be using them (the
//! lease protocol in `strata_cache::lease`). A blob that cannot be removed stays behind,
//! unreferenced, for GC.

use strata_cache::layout::StagedBlob;
use strata_cache::lease::Lease;
use strata_cache::Digest;

use crate::error::BuildError;
use crate::home::Home;

pub struct Additions<'a> {
    home: &'a Home,
    lease: &'a Lease<'a>,
    /// Blobs that were not in the store before this build put them there.
    created: Vec<Digest>,
    kept: bool,
}

impl<'a> Additions<'a> {
    pub fn new(home: &'a Home, lease: &'a Lease<'a>) -> Additions<'a> {
        Additions {
            home,
            lease,
            created: Vec::new(),
            kept: false,
        }
    }

    /// Notes the blobs among `digests` that the store lacks, before they are put there by
    /// other means (a base image import).
    pub fn expect(&mut self, digests: impl IntoIterator<Item = Digest>) {
        let missing = digests
            .into_iter()
            .filter(|d| !self.home.store.has_blob(d) && !self.created.contains(d));
        self.created.extend(missing.collect::<Vec<_>>());
    }

    /// Commits a staged blob.
    pub fn commit(&mut self, staged: StagedBlob) -> Result<Digest, BuildError> {
        self.expect([staged.digest.clone()]);
        Ok(self.home.store.commit(staged)?)
    }

    /// Writes a small blob (config, manifest).
    pub fn put(&mut self, bytes: &[u8]) -> Result<Digest, BuildError> {
        self.expect([Digest::of(bytes)]);
        Ok(self.home.store.put_bytes(bytes)?)
    }

    /// The build is recorded: everything stays. Returns the blobs it created.
    pub fn keep(mut self) -> Vec<Digest> {
        self.kept = true;
        std::mem::take(&mut self.created)
    }

    fn roll_back(&self) {
        if self.created.is_empty() {
            return;
        }
        let Some(own) = self.lease.id() else {
            return;
        };
        let _gc = match self.home.store.gc_lock_exclusive() {
            Ok(lock) => lock,
            Err(e) => return tracing::warn!("not removing what the failed build added: {e}"),
        };
        let others = match self.home.index.live_digests_except(own) {
            Ok(digests) => digests,
            Err(e) => return tracing::warn!("not removing what the failed build added: {e}"),
        };
        for digest in self.created.iter().filter(|d| !others.contains(*d)) {
            if let Err(e) = self.home.store.remove_blob(digest) {
                tracing::warn!("removing blob {digest} of the failed build: {e}");
            }
        }
    }
}

impl Drop for Additions<'_> {
    fn drop(&mut self) {
        if !self.kept {
            self.roll_back();
        }
    }
}
