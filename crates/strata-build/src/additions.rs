//! What a build adds to the store, taken back out if the build fails before its image is
//! recorded: a failed build (a full disk, say) leaves the store as it was.
//!
//! Only blobs this build created are removed, under the exclusive GC lock, and none that a
//! sweep would keep: reached from a tag, an index row or another process's live lease.
//! Another build may have found a blob we created present and adopted it (the lease protocol
//! in `strata_index::lease`), then tagged it and released its lease. A blob that cannot be
//! removed stays behind, unreferenced, for GC.

use strata_gc::local::reachable_except;
use strata_index::Lease;
use strata_oci::Digest;
use strata_oci::StagedBlob;

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

    /// Moves staged blobs into the store (one sync of its blob directory for all of them).
    pub fn commit_all(&mut self, staged: Vec<StagedBlob>) -> Result<Vec<Digest>, BuildError> {
        self.expect(staged.iter().map(|s| s.digest.clone()));
        Ok(self.home.store.commit_all(staged)?)
    }

    /// Writes a small blob.
    #[cfg(test)]
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
        let reachable = match reachable_except(&self.home.store, &self.home.index, own) {
            Ok(digests) => digests,
            Err(e) => return tracing::warn!("not removing what the failed build added: {e}"),
        };
        for digest in self.created.iter().filter(|d| !reachable.contains(*d)) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use strata_index::LeaseOwner;
    use strata_oci::BlobDescriptor;

    /// A manifest whose config is `config` (enough for GC's marker to follow it).
    fn manifest_of(config: &Digest, size: usize) -> Vec<u8> {
        format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{config}","size":{size}}},"layers":[]}}"#
        )
        .into_bytes()
    }

    #[test]
    fn a_failed_build_removes_only_what_nothing_else_reaches() {
        let (_dir, home) = fresh_home();
        let lease = build_lease(&home);
        let mut additions = Additions::new(&home, &lease);
        let alone = additions.put(b"only this build").unwrap();
        let tagged = additions
            .put(b"adopted, then tagged, by another build")
            .unwrap();
        let leased = additions.put(b"held by another live lease").unwrap();
        let indexed = additions.put(b"recorded by another build").unwrap();

        // Another build found `tagged` present, tagged an image of it and released its
        // lease; another holds `leased`; a third recorded `indexed` but has not tagged yet.
        let manifest = manifest_of(&tagged, 38);
        let manifest_digest = home.store.put_bytes(&manifest).unwrap();
        let descriptor = BlobDescriptor {
            media_type: "application/vnd.oci.image.manifest.v1+json".into(),
            digest: manifest_digest,
            size: manifest.len() as u64,
        };
        home.store
            .tag("env-other", &descriptor, Default::default())
            .unwrap();
        let other = home
            .index
            .lease("pull", LeaseOwner::current_process())
            .unwrap();
        other.add(std::slice::from_ref(&leased)).unwrap();
        let recorded = home.store.put_bytes(&manifest_of(&indexed, 25)).unwrap();
        record_env(&home, &recorded);

        drop(additions);
        assert!(
            !home.store.has_blob(&alone),
            "what only the failed build made goes"
        );
        assert!(
            home.store.has_blob(&tagged),
            "a tagged image keeps its blobs"
        );
        assert!(home.store.has_blob(&leased), "a live lease keeps its blob");
        assert!(
            home.store.has_blob(&indexed),
            "an index row keeps its image"
        );
    }

    #[test]
    fn a_kept_build_keeps_everything() {
        let (_dir, home) = fresh_home();
        let lease = build_lease(&home);
        let mut additions = Additions::new(&home, &lease);
        let blob = additions.put(b"recorded").unwrap();
        assert_eq!(additions.keep(), vec![blob.clone()]);
        assert!(home.store.has_blob(&blob));
    }

    fn fresh_home() -> (tempfile::TempDir, Home) {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::open(dir.path()).unwrap();
        (dir, home)
    }

    fn build_lease(home: &Home) -> Lease<'_> {
        home.index
            .lease("build", LeaseOwner::current_process())
            .unwrap()
    }

    fn record_env(home: &Home, manifest: &Digest) {
        let spec = Digest::of(b"spec");
        home.index
            .record_build(
                &strata_index::EnvRecord {
                    spec: spec.clone(),
                    lock: Digest::of(b"lock"),
                    base: Digest::of(b"base"),
                    manifest: manifest.clone(),
                    tag: "env-recorded".into(),
                    size: 0,
                    spec_json: "{}".into(),
                    name: "recorded".into(),
                },
                "{}",
                &[],
            )
            .unwrap();
    }
}
