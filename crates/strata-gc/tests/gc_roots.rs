//! A local sweep never takes for garbage what an unreadable root might reference: a tag whose
//! manifest is missing or is not a manifest, an index row or a lease with an invalid digest.
//! The sweep fails naming the root, and nothing is deleted.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File};
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use strata_gc::local::{self, GcError};
use strata_gc::GcPolicy;
use strata_index::{now, EnvRecord, Index};
use strata_oci::Digest;
use strata_oci::Store;
use strata_oci::{BlobDescriptor, MEDIA_TYPE_CONFIG, MEDIA_TYPE_MANIFEST};
use strata_oci::{Descriptor, Manifest};

const DAY: u64 = 86_400;

struct Fixture {
    dir: tempfile::TempDir,
    store: Store,
    index: Index,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("oci"), &dir.path().join("tmp")).unwrap();
        let index = Index::open(&dir.path().join("strata.db")).unwrap();
        Fixture { dir, store, index }
    }

    fn db(&self) -> rusqlite::Connection {
        rusqlite::Connection::open(self.dir.path().join("strata.db")).unwrap()
    }

    fn put(&self, bytes: &[u8], media_type: &str) -> Descriptor {
        Descriptor::new(&BlobDescriptor {
            media_type: media_type.into(),
            digest: self.store.put_bytes(bytes).unwrap(),
            size: bytes.len() as u64,
        })
    }

    /// A tagged image of one layer holding `content`, recorded as environment `name`, unused
    /// for 30 days.
    fn image(&self, tag: &str, content: &str) -> Digest {
        let layer = self.put(content.as_bytes(), "application/vnd.oci.image.layer.v1.tar");
        let config = serde_json::json!({
            "architecture": "amd64", "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": [layer.digest.to_string()]},
        });
        let config = self.put(&serde_json::to_vec(&config).unwrap(), MEDIA_TYPE_CONFIG);
        let bytes = Manifest::new(config, vec![layer]).to_bytes();
        let digest = self.store.put_bytes(&bytes).unwrap();
        let desc = BlobDescriptor {
            media_type: MEDIA_TYPE_MANIFEST.into(),
            digest: digest.clone(),
            size: bytes.len() as u64,
        };
        self.store.tag(tag, &desc, BTreeMap::new()).unwrap();
        let spec = Digest::of(format!("spec {tag}").as_bytes());
        let env = EnvRecord {
            spec: spec.clone(),
            lock: Digest::of(format!("lock {tag}").as_bytes()),
            base: Digest::of(b"base"),
            manifest: digest.clone(),
            tag: tag.into(),
            size: 100,
            spec_json: "{}".into(),
            name: tag.into(),
        };
        self.index.record_build(&env, "{}", &[]).unwrap();
        let old = now() - 30 * DAY as i64;
        self.db()
            .execute(
                "UPDATE env_index SET last_used_at = ?1, created_at = ?1 WHERE spec_digest = ?2",
                rusqlite::params![old, spec.to_string()],
            )
            .unwrap();
        digest
    }

    fn age_blobs(&self) {
        let when = SystemTime::now() - Duration::from_secs(2 * DAY);
        for entry in fs::read_dir(self.blob_dir()).unwrap() {
            File::options()
                .write(true)
                .open(entry.unwrap().path())
                .unwrap()
                .set_modified(when)
                .unwrap();
        }
    }

    fn blob_dir(&self) -> PathBuf {
        self.store.root().join("blobs").join("sha256")
    }

    fn blobs(&self) -> BTreeSet<String> {
        fs::read_dir(self.blob_dir())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect()
    }

    fn tags(&self) -> BTreeSet<String> {
        self.store
            .entries()
            .unwrap()
            .iter()
            .filter_map(|e| e.annotations.get(strata_oci::REF_NAME).cloned())
            .collect()
    }

    /// Plans and sweeps at once (as `strata gc` does).
    fn gc(&self) -> Result<local::GcReport, GcError> {
        let plan = local::plan(&self.store, &self.index, &policy(), now())?;
        local::sweep(&self.store, &self.index, &plan)
    }
}

/// Keeps nothing by age or rank: every untagged-by-policy image goes.
fn policy() -> GcPolicy {
    GcPolicy {
        keep_days: 7,
        keep_newest: 0,
        keep_tags: Vec::new(),
        grace: Duration::from_secs(3600),
    }
}

#[test]
fn a_tag_whose_manifest_is_missing_or_garbled_stops_the_sweep() {
    for garble in [false, true] {
        let fx = Fixture::new();
        // A foreign tag (kept whatever the policy) whose manifest cannot be read, and an
        // environment the policy drops.
        let broken = fx.image("broken", "layer of broken");
        fx.db()
            .execute("DELETE FROM env_index WHERE tag = 'broken'", [])
            .unwrap();
        fx.image("old", "layer of old");
        let path = fx.store.blob_path(&broken);
        if garble {
            fs::write(&path, b"not a manifest").unwrap();
        } else {
            fs::remove_file(&path).unwrap();
        }
        fx.age_blobs();
        let (blobs, tags) = (fx.blobs(), fx.tags());

        let err = fx.gc().expect_err("the sweep must refuse");
        let text = err.to_string();
        assert!(matches!(err, GcError::UnreadableRoots(_)), "{text}");
        assert!(
            text.contains("\"broken\"") && text.contains(&broken.to_string()),
            "{text}"
        );
        assert!(text.contains("nothing was deleted"), "{text}");
        assert_eq!(fx.blobs(), blobs, "a blob was deleted (garbled: {garble})");
        assert_eq!(fx.tags(), tags, "a tag was removed (garbled: {garble})");
    }
}

#[test]
fn an_index_row_or_lease_with_an_invalid_digest_stops_the_sweep() {
    for (table, sql) in [
        (
            "the environment index",
            "UPDATE env_index SET manifest_digest = 'sha256:zz' WHERE tag = 'other'",
        ),
        (
            "the leases",
            "INSERT INTO lease_refs (lease_id, digest) VALUES (?1, 'sha256:zz')",
        ),
    ] {
        let fx = Fixture::new();
        fx.image("old", "layer of old");
        fx.image("other", "layer of other");
        let lease = fx
            .index
            .lease("test", strata_index::LeaseOwner::current_process())
            .unwrap();
        let lease_id = lease.id().unwrap().as_str().to_string();
        if sql.contains("?1") {
            fx.db().execute(sql, [&lease_id]).unwrap();
        } else {
            fx.db().execute(sql, []).unwrap();
        }
        fx.age_blobs();
        let (blobs, tags) = (fx.blobs(), fx.tags());
        let err = fx.gc().expect_err("the sweep must refuse");
        let text = strata_errors_chain(&err);
        assert!(text.contains(table), "{text}");
        assert!(
            text.contains("sha256:zz") || text.contains("invalid digest"),
            "{text}"
        );
        assert_eq!(fx.blobs(), blobs, "{table}: a blob was deleted");
        assert_eq!(fx.tags(), tags, "{table}: a tag was removed");
        drop(lease);
    }
}

/// The error and its causes on one line.
fn strata_errors_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(e) = source {
        text.push_str(": ");
        text.push_str(&e.to_string());
        source = e.source();
    }
    text
}
