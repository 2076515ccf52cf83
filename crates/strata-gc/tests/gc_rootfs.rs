//! Local GC of the unpacked layers under `$STRATA_HOME/rootfs/<hex>/`: a directory goes
//! once no kept image and no live lease reaches its layer, unless it is younger than the
//! grace or a launch holds its unpack lock. (Mounted directories are checked end to end in
//! the root package's `tests/gc_rootfs.rs`, with a real overlay mount.)

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use strata_gc::local::{self, SkipReason};
use strata_gc::{GcPolicy, TagPattern};
use strata_index::LeaseOwner;
use strata_index::{now, Index};
use strata_oci::Digest;
use strata_oci::Store;
use strata_oci::{BlobDescriptor, MEDIA_TYPE_CONFIG, MEDIA_TYPE_MANIFEST};
use strata_oci::{Descriptor, Manifest};

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
        fs::create_dir_all(dir.path().join("rootfs")).unwrap();
        Fixture { dir, store, index }
    }

    fn rootfs(&self) -> PathBuf {
        self.dir.path().join("rootfs")
    }

    fn put(&self, bytes: &[u8], media_type: &str) -> Descriptor {
        Descriptor::new(&BlobDescriptor {
            media_type: media_type.into(),
            digest: self.store.put_bytes(bytes).unwrap(),
            size: bytes.len() as u64,
        })
    }

    /// A tagged image (not an environment: foreign tags are always kept) of `layers`; or,
    /// untagged, only its blobs. Returns the manifest and layer digests.
    fn image(&self, tag: Option<&str>, layers: &[&str]) -> (Digest, Vec<Digest>) {
        let layers: Vec<Descriptor> = layers
            .iter()
            .map(|c| self.put(c.as_bytes(), "application/vnd.oci.image.layer.v1.tar"))
            .collect();
        let digests: Vec<Digest> = layers.iter().map(|l| l.digest.clone()).collect();
        let config = serde_json::json!({"architecture": "amd64", "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": digests}});
        let config = self.put(&serde_json::to_vec(&config).unwrap(), MEDIA_TYPE_CONFIG);
        let bytes = Manifest::new(config, layers).to_bytes();
        let digest = self.store.put_bytes(&bytes).unwrap();
        if let Some(tag) = tag {
            let desc = BlobDescriptor {
                media_type: MEDIA_TYPE_MANIFEST.into(),
                digest: digest.clone(),
                size: bytes.len() as u64,
            };
            self.store.tag(tag, &desc, BTreeMap::new()).unwrap();
        }
        (digest, digests)
    }

    /// An unpacked layer directory with a file of `size` bytes, unpacked `age` ago.
    fn unpack(&self, layer: &Digest, size: usize, age: Duration) -> PathBuf {
        let dir = self.rootfs().join(layer.hex());
        fs::create_dir_all(dir.join("usr/lib")).unwrap();
        fs::write(dir.join("usr/lib/data"), vec![7u8; size]).unwrap();
        File::open(&dir)
            .unwrap()
            .set_modified(SystemTime::now() - age)
            .unwrap();
        dir
    }

    fn unpacked(&self) -> BTreeSet<String> {
        fs::read_dir(self.rootfs())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| !n.ends_with(".lock"))
            .collect()
    }
}

fn policy() -> GcPolicy {
    GcPolicy {
        keep_days: 7,
        keep_newest: 0,
        keep_tags: vec![TagPattern::new("keep-*").unwrap()],
        grace: Duration::from_secs(3600),
    }
}

const OLD: Duration = Duration::from_secs(2 * 86_400);

fn hexes<'a>(digests: impl IntoIterator<Item = &'a Digest>) -> BTreeSet<String> {
    digests.into_iter().map(|d| d.hex().to_string()).collect()
}

#[test]
fn unpacked_layers_nothing_reaches_are_removed_and_reported() {
    let fx = Fixture::new();
    let (_, kept) = fx.image(Some("keep-a"), &["shared", "only a"]);
    let (leased_manifest, leased) = fx.image(None, &["only leased"]);
    let (_, dropped) = fx.image(None, &["shared", "only dropped", "also dropped"]);
    let young = Digest::of(b"unpacked a minute ago");
    let busy = Digest::of(b"being unpacked");
    for layer in kept.iter().chain(&leased).chain(&dropped[1..]) {
        fx.unpack(layer, 1000, OLD);
    }
    fx.unpack(&young, 10, Duration::from_secs(60));
    fx.unpack(&busy, 10, OLD);
    // An interrupted removal of an earlier GC.
    let leftover = fx.rootfs().join(format!(".gc-{}", Digest::of(b"x").hex()));
    fs::create_dir_all(leftover.join("d")).unwrap();
    let _lease = fx
        .index
        .lease_blobs(
            &fx.store,
            "job",
            LeaseOwner::current_process(),
            &[leased_manifest],
        )
        .unwrap();
    // A launch unpacking `busy` holds its lock.
    let lock = File::create(fx.rootfs().join(format!(".{}.lock", busy.hex()))).unwrap();
    lock.lock().unwrap();

    let plan = local::plan_in(&fx.store, &fx.index, &policy(), now(), Some(&fx.rootfs())).unwrap();
    assert_eq!(plan.counts.rootfs_layers, 7);
    let planned: BTreeSet<String> = hexes(plan.rootfs.iter().map(|u| &u.layer));
    let mut expected = hexes(&dropped[1..]);
    expected.insert(busy.hex().to_string());
    assert_eq!(planned, expected);
    assert!(plan.bytes_freed >= 2000);

    let report = local::sweep(&fx.store, &fx.index, &plan).unwrap();
    assert!(report.completed);
    assert_eq!(hexes(&report.deleted_rootfs_digests), hexes(&dropped[1..]));
    assert_eq!(report.deleted_rootfs_layers, 2);
    assert_eq!(report.deleted_rootfs_bytes, 2000);
    assert!(report.bytes_freed >= 2000);
    assert_eq!(report.skipped_rootfs.len(), 1);
    assert_eq!(report.skipped_rootfs[0].what, busy.to_string());
    assert_eq!(report.skipped_rootfs[0].why, SkipReason::Unpacking);
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["deleted_rootfs_bytes"], 2000);

    let mut left = hexes(kept.iter().chain(&leased));
    left.extend([young.hex().to_string(), busy.hex().to_string()]);
    assert_eq!(fx.unpacked(), left, "leftover .gc- dirs go too");

    // Unlocked, the next GC takes it; nothing else changes.
    drop(lock);
    let plan = local::plan_in(&fx.store, &fx.index, &policy(), now(), Some(&fx.rootfs())).unwrap();
    local::sweep(&fx.store, &fx.index, &plan).unwrap();
    left.remove(busy.hex());
    assert_eq!(fx.unpacked(), left);
}

#[test]
fn a_lease_taken_after_planning_keeps_its_unpacked_layers() {
    let fx = Fixture::new();
    let (manifest, layers) = fx.image(None, &["job layer"]);
    let dir = fx.unpack(&layers[0], 10, OLD);
    let plan = local::plan_in(&fx.store, &fx.index, &policy(), now(), Some(&fx.rootfs())).unwrap();
    assert_eq!(plan.rootfs.len(), 1);
    // A job is queued on the image between the plan and the sweep.
    let _lease = fx
        .index
        .lease_blobs(&fx.store, "job", LeaseOwner::current_process(), &[manifest])
        .unwrap();
    let report = local::sweep(&fx.store, &fx.index, &plan).unwrap();
    assert_eq!(report.deleted_rootfs_layers, 0);
    assert_eq!(report.skipped_rootfs[0].why, SkipReason::Leased);
    assert!(Path::new(&dir).is_dir());
}

#[test]
fn plan_without_a_rootfs_dir_leaves_unpacked_layers_alone() {
    let fx = Fixture::new();
    let orphan = fx.unpack(&Digest::of(b"orphan"), 10, OLD);
    let plan = local::plan(&fx.store, &fx.index, &policy(), now()).unwrap();
    assert!(plan.rootfs.is_empty());
    local::sweep(&fx.store, &fx.index, &plan).unwrap();
    assert!(orphan.is_dir());
}
