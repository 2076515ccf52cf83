//! Registry GC against a real CNCF distribution registry on 127.0.0.1: the retention policy,
//! dry run against real run, bytes freed, the registry's own blob collection afterwards, and
//! the errors of a registry that refuses deletes or is not there.

#[path = "../../strata-registry/tests/support/image.rs"]
mod image_support;
#[path = "../../strata-registry/tests/support/registry.rs"]
mod test_registry;

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use image_support::{store_blob, store_config};
use serde_json::json;
use strata_gc::registry::{
    apply_registry, plan_registry, DeletedManifest, KeepReason, KeptManifest, RegistryGcError,
    ANNOTATION_LOCK, ANNOTATION_NAME, ANNOTATION_SPEC,
};
use strata_gc::{GcPolicy, TagPattern};
use strata_index::PushRecord;
use strata_index::{now, Index};
use strata_oci::{BlobDescriptor, Digest};
use strata_oci::{MEDIA_TYPE_LAYER_GZIP, MEDIA_TYPE_MANIFEST};
use strata_registry::{
    push_image, ImageUpload, ManifestRef, PushOptions, Registry, RegistryError, RegistryRepo,
    RetryPolicy,
};
use test_registry::TestRegistry;

const DAY: i64 = 86_400;
const REPO: &str = "team/envs";

fn client(addr: &str) -> Registry {
    Registry::new(addr, false)
        .unwrap()
        .with_retry_policy(RetryPolicy {
            attempts: 2,
            initial_backoff: Duration::from_millis(10),
        })
}

fn repo(addr: &str) -> RegistryRepo {
    format!("{addr}/{REPO}").parse().unwrap()
}

fn run(cmd: &mut Command) -> Vec<u8> {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Bytes gzip cannot shrink much.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// A one-file gzip tar layer made by GNU tar and gzip with fixed metadata (same content, same
/// blob). Returns the blob and its diff_id.
fn layer(dir: &Path, content: &[u8]) -> ((BlobDescriptor, PathBuf), Digest) {
    let work = dir.join(format!("layer-{}", Digest::of(content).short(16)));
    let src = work.join("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("data.bin"), content).unwrap();
    let tar_path = work.join("layer.tar");
    run(Command::new("tar")
        .args([
            "--sort=name",
            "--mtime=@0",
            "--owner=0",
            "--group=0",
            "--numeric-owner",
            "-cf",
        ])
        .arg(&tar_path)
        .arg("-C")
        .arg(&src)
        .arg("data.bin"));
    let tar = std::fs::read(&tar_path).unwrap();
    let gz = run(Command::new("gzip").args(["-n", "-c"]).arg(&tar_path));
    (
        store_blob(dir, MEDIA_TYPE_LAYER_GZIP, &gz),
        Digest::of(&tar),
    )
}

/// A small valid image, annotated like strata's when `strata` (spec and lock digests, name).
struct TestImage {
    label: String,
    manifest: Vec<u8>,
    digest: Digest,
    blobs: Vec<(BlobDescriptor, PathBuf)>,
    spec: Digest,
}

impl TestImage {
    fn blob_set(&self) -> BTreeMap<Digest, u64> {
        self.blobs
            .iter()
            .map(|(d, _)| (d.digest.clone(), d.size))
            .collect()
    }
}

fn build_image(dir: &Path, label: &str, layers: &[&[u8]], name: Option<&str>) -> TestImage {
    let mut blobs = Vec::new();
    let mut diff_ids = Vec::new();
    for content in layers {
        let (blob, diff_id) = layer(dir, content);
        blobs.push(blob);
        diff_ids.push(diff_id);
    }
    let config = store_config(dir, &diff_ids, json!({"Labels": {"test.label": label}}));
    let spec = Digest::of(format!("spec {label}").as_bytes());
    let mut annotations = BTreeMap::new();
    if let Some(name) = name {
        annotations.insert(ANNOTATION_SPEC, spec.to_string());
        annotations.insert(
            ANNOTATION_LOCK,
            Digest::of(format!("lock {label}").as_bytes()).to_string(),
        );
        if !name.is_empty() {
            annotations.insert(ANNOTATION_NAME, name.to_string());
        }
    }
    let manifest = image_support::manifest(&config.0, &blobs, Some(&annotations));
    blobs.push(config);
    TestImage {
        label: label.to_string(),
        digest: Digest::of(&manifest),
        manifest,
        blobs,
        spec,
    }
}

/// Pushes the image under every tag given.
async fn push(registry: &Registry, repo: &RegistryRepo, image: &TestImage, tags: &[&str]) {
    let upload = ImageUpload {
        manifest: &image.manifest,
        manifest_digest: &image.digest,
        media_type: MEDIA_TYPE_MANIFEST,
        tag: None,
        blobs: &image.blobs,
    };
    push_image(registry, repo, &upload, &PushOptions::default())
        .await
        .unwrap();
    for tag in tags {
        let reference = ManifestRef::Tag(tag.parse().unwrap());
        registry
            .push_manifest(repo, &reference, &image.manifest, MEDIA_TYPE_MANIFEST)
            .await
            .unwrap();
    }
}

fn record(index: &Index, repo: &RegistryRepo, image: &TestImage, pushed: i64, used: i64) {
    let push = PushRecord {
        manifest: image.digest.clone(),
        tag: Some(image.label.clone()),
        pushed_at: pushed,
        last_used_at: used,
        name: String::new(),
        spec: Some(image.spec.clone()),
    };
    index
        .record_registry_push(&repo.to_string(), &push)
        .unwrap();
}

fn digests_deleted(deleted: &[DeletedManifest]) -> BTreeSet<Digest> {
    deleted.iter().map(|d| d.manifest.digest.clone()).collect()
}

fn kept_for<'a>(kept: &'a [KeptManifest], image: &TestImage) -> &'a KeptManifest {
    kept.iter()
        .find(|k| k.manifest.digest == image.digest)
        .unwrap_or_else(|| panic!("{} was not kept", image.label))
}

/// Every file of an OCI layout's blob directory hashes to its name.
fn verify_layout_blobs(layout: &Path) -> usize {
    let dir = layout.join("blobs/sha256");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let bytes = std::fs::read(&path).unwrap();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        assert_eq!(Digest::of(&bytes).hex(), name, "{}", path.display());
        n += 1;
    }
    n
}

#[tokio::test]
async fn policy_dry_run_real_run_and_registry_blob_collection() {
    let mut reg = TestRegistry::start();
    let dir = tempfile::tempdir().unwrap();
    let index = Index::open(&dir.path().join("strata.db")).unwrap();
    let registry = client(&reg.addr());
    let r = repo(&reg.addr());
    let now = now();
    let old = now - 40 * DAY;

    let shared = noise(20_000, 1001);
    let shared_by_deleted = noise(9_000, 2001);
    let img = |label: &str, own: u64, extra: &[&[u8]], name: Option<&str>| {
        let own = noise(3_000, own * 2 + 1);
        let mut layers: Vec<&[u8]> = vec![&shared, &own];
        layers.extend_from_slice(extra);
        build_image(dir.path(), label, &layers, name)
    };
    // All in environment "exp": newest two by push time are e3 and e4.
    let e1 = img("e1", 11, &[&shared_by_deleted], Some("exp"));
    let e2 = img("e2", 12, &[&shared_by_deleted], Some("exp"));
    let e3 = img("e3", 13, &[], Some("exp"));
    let e4 = img("e4", 14, &[], Some("exp"));
    let recent = img("recent", 15, &[], Some("exp"));
    let release = img("release", 16, &[], Some("exp"));
    let leased = img("leased", 17, &[], Some("exp"));
    let unrecorded = img("unrecorded", 18, &[], Some("exp"));
    // Not built by strata: no annotations, and an old push record.
    let foreign = img("foreign", 19, &[], None);

    push(&registry, &r, &e1, &["env-e1", "e1-alias"]).await;
    push(&registry, &r, &e2, &["env-e2"]).await;
    push(&registry, &r, &e3, &["env-e3"]).await;
    push(&registry, &r, &e4, &["env-e4"]).await;
    push(&registry, &r, &recent, &["env-recent"]).await;
    push(&registry, &r, &release, &["env-release", "release-1"]).await;
    push(&registry, &r, &leased, &["env-leased"]).await;
    push(&registry, &r, &unrecorded, &["env-unrecorded"]).await;
    push(&registry, &r, &foreign, &["base"]).await;

    record(&index, &r, &e1, old - 10 * DAY, 0);
    record(&index, &r, &e2, old - 9 * DAY, old);
    record(&index, &r, &e3, old - DAY, 0);
    record(&index, &r, &e4, old, 0);
    record(&index, &r, &recent, old - 20 * DAY, now - DAY);
    record(&index, &r, &release, old - 30 * DAY, 0);
    record(&index, &r, &leased, old - 40 * DAY, 0);
    record(&index, &r, &foreign, old - 50 * DAY, 0);

    let policy = GcPolicy {
        keep_days: 14,
        keep_newest: 2,
        keep_tags: vec![TagPattern::new("release-*").unwrap()],
        ..GcPolicy::default()
    };
    let protected: HashSet<Digest> = [leased.digest.clone()].into_iter().collect();

    // Dry run: a plan, nothing changes.
    let dry = plan_registry(&registry, &r, &index, &policy, &protected, now)
        .await
        .unwrap();
    let expected: BTreeSet<Digest> = [e1.digest.clone(), e2.digest.clone()].into();
    assert_eq!(digests_deleted(&dry.deleted), expected);
    assert_eq!(dry.counts.tags, 11);
    assert_eq!(dry.counts.manifests, 9);
    assert_eq!(dry.counts.kept, 7);
    assert_eq!(dry.counts.tags_deleted, 3);
    assert!(kept_for(&dry.kept, &e3)
        .reasons
        .iter()
        .any(|r| matches!(r, KeepReason::Newest { rank: 2, .. })));
    assert!(kept_for(&dry.kept, &e4)
        .reasons
        .iter()
        .any(|r| matches!(r, KeepReason::Newest { rank: 1, .. })));
    assert!(kept_for(&dry.kept, &recent)
        .reasons
        .iter()
        .any(|r| matches!(r, KeepReason::Recent { .. })));
    assert!(kept_for(&dry.kept, &release)
        .reasons
        .contains(&KeepReason::TagPattern {
            tag: "release-1".into(),
            pattern: "release-*".into()
        }));
    assert_eq!(
        kept_for(&dry.kept, &leased).reasons,
        vec![KeepReason::Leased {
            digest: leased.digest.clone()
        }]
    );
    assert_eq!(
        kept_for(&dry.kept, &unrecorded).reasons,
        vec![KeepReason::NoUsageRecord]
    );
    assert_eq!(
        kept_for(&dry.kept, &foreign).reasons,
        vec![KeepReason::NotStrata]
    );
    let e1_plan = dry.deleted.iter().find(|d| d.manifest.digest == e1.digest);
    let e1_plan = e1_plan.unwrap();
    assert_eq!(e1_plan.manifest.tags, vec!["e1-alias", "env-e1"]);
    assert_eq!(e1_plan.manifest.name.as_deref(), Some("exp"));
    assert_eq!(dry.deleted[0].manifest.digest, e1.digest, "oldest first");

    // Bytes freed: blobs only deleted manifests reference, each once.
    let kept_images = [&e3, &e4, &recent, &release, &leased, &unrecorded, &foreign];
    let kept_blobs: BTreeSet<Digest> = kept_images
        .iter()
        .flat_map(|i| i.blob_set().into_keys())
        .collect();
    let mut freed: BTreeMap<Digest, u64> = e1.blob_set();
    freed.extend(e2.blob_set());
    freed.retain(|d, _| !kept_blobs.contains(d));
    let expected_bytes: u64 = freed.values().sum();
    assert_eq!(freed.len(), 5, "two own layers, two configs, one shared");
    assert_eq!(dry.bytes_freed, expected_bytes);
    let json = serde_json::to_value(dry.clone().into_report()).unwrap();
    assert_eq!(json["dry_run"], true);
    assert_eq!(json["bytes_freed"], expected_bytes);
    assert_eq!(json["deleted"][0]["why"]["reason"], "expired");
    assert_eq!(json["deleted"][0]["digest"], e1.digest.to_string());

    // The dry run changed nothing.
    let again = plan_registry(&registry, &r, &index, &policy, &protected, now)
        .await
        .unwrap();
    assert_eq!(again, dry);

    // Real run: the same deletions.
    let report = apply_registry(&registry, &r, &index, &again).await.unwrap();
    assert!(!report.dry_run);
    assert_eq!(digests_deleted(&report.deleted), expected);
    assert_eq!(report.bytes_freed, expected_bytes);
    for gone in [&e1, &e2] {
        let by_digest = ManifestRef::Digest(gone.digest.clone());
        assert_eq!(
            registry.manifest_exists(&r, &by_digest).await.unwrap(),
            None
        );
        assert!(index
            .registry_push(&r.to_string(), &gone.digest)
            .unwrap()
            .is_none());
    }
    let mut tags = registry.list_tags(&r).await.unwrap();
    tags.sort();
    assert_eq!(
        tags,
        vec![
            "base",
            "env-e3",
            "env-e4",
            "env-leased",
            "env-recent",
            "env-release",
            "env-unrecorded",
            "release-1"
        ]
    );
    assert!(index
        .registry_push(&r.to_string(), &e3.digest)
        .unwrap()
        .is_some());

    // A second run deletes nothing.
    let second = plan_registry(&registry, &r, &index, &policy, &protected, now)
        .await
        .unwrap();
    assert!(second.deleted.is_empty(), "{:?}", second.deleted);
    assert_eq!(second.bytes_freed, 0);
    let second = apply_registry(&registry, &r, &index, &second)
        .await
        .unwrap();
    assert!(second.deleted.is_empty());
    assert_eq!(second.counts.kept, 7);

    // The registry's own blob collection, with the registry stopped, frees what was planned
    // plus the deleted manifests themselves.
    let before = reg.storage_bytes();
    reg.stop();
    reg.garbage_collect();
    reg.restart();
    let after = reg.storage_bytes();
    let manifest_bytes = (e1.manifest.len() + e2.manifest.len()) as u64;
    assert_eq!(before - after, expected_bytes + manifest_bytes);

    // Every kept image still pulls completely, and its blobs verify.
    let pulled = dir.path().join("pulled");
    std::fs::create_dir_all(&pulled).unwrap();
    for image in kept_images {
        let reference = format!("docker://{}/{REPO}@{}", reg.addr(), image.digest);
        let inspect =
            run(Command::new("skopeo").args(["inspect", "--tls-verify=false", &reference]));
        let inspect: serde_json::Value = serde_json::from_slice(&inspect).unwrap();
        assert_eq!(inspect["Digest"], image.digest.to_string());
        let layout = pulled.join(&image.label);
        run(Command::new("skopeo")
            .args(["copy", "--src-tls-verify=false", &reference])
            .arg(format!("oci:{}:{}", layout.display(), image.label)));
        assert_eq!(verify_layout_blobs(&layout), image.blobs.len() + 1);
    }
    for gone in [&e1, &e2] {
        let reference = format!("docker://{}/{REPO}@{}", reg.addr(), gone.digest);
        let out = Command::new("skopeo")
            .args(["inspect", "--tls-verify=false", &reference])
            .output()
            .unwrap();
        assert!(!out.status.success(), "{} still pulls", gone.label);
    }
}

#[tokio::test]
async fn a_registry_without_deletes_fails_with_a_clear_error_and_keeps_records() {
    let reg = TestRegistry::without_deletes();
    let dir = tempfile::tempdir().unwrap();
    let index = Index::open(&dir.path().join("strata.db")).unwrap();
    let registry = client(&reg.addr());
    let r = repo(&reg.addr());
    let now = now();
    let a = build_image(dir.path(), "a", &[b"a layer"], Some(""));
    let b = build_image(dir.path(), "b", &[b"b layer"], Some(""));
    push(&registry, &r, &a, &["env-a"]).await;
    push(&registry, &r, &b, &["env-b"]).await;
    record(&index, &r, &a, now - 100 * DAY, 0);
    record(&index, &r, &b, now - 90 * DAY, 0);
    let policy = GcPolicy {
        keep_newest: 0,
        ..GcPolicy::default()
    };

    let plan = plan_registry(&registry, &r, &index, &policy, &HashSet::new(), now)
        .await
        .unwrap();
    assert_eq!(plan.deleted.len(), 2);
    // Unnamed images form one group: with keep_newest 1 the newer one stays.
    let one = GcPolicy {
        keep_newest: 1,
        ..policy.clone()
    };
    let plan_one = plan_registry(&registry, &r, &index, &one, &HashSet::new(), now)
        .await
        .unwrap();
    assert_eq!(
        digests_deleted(&plan_one.deleted),
        [a.digest.clone()].into()
    );

    let err = apply_registry(&registry, &r, &index, &plan)
        .await
        .unwrap_err();
    let RegistryGcError::Delete {
        planned,
        report,
        source,
        ..
    } = &err
    else {
        panic!("expected a delete failure, got {err}");
    };
    assert_eq!(*planned, 2);
    assert!(report.deleted.is_empty());
    assert!(
        matches!(source, RegistryError::DeletesDisabled { registry, .. } if *registry == reg.addr())
    );
    let text = format!("{err}: {source}");
    assert!(
        text.contains(&format!(
            "registry {} does not allow deletes (storage.delete.enabled)",
            reg.addr()
        )),
        "{text}"
    );
    // Nothing was deleted: the records and the tags stay.
    assert!(index
        .registry_push(&r.to_string(), &a.digest)
        .unwrap()
        .is_some());
    assert_eq!(registry.list_tags(&r).await.unwrap().len(), 2);
}

#[tokio::test]
async fn an_unreachable_registry_is_named_in_the_error() {
    // A port nothing listens on: bound, then released.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let dir = tempfile::tempdir().unwrap();
    let index = Index::open(&dir.path().join("strata.db")).unwrap();
    let err = plan_registry(
        &client(&addr),
        &repo(&addr),
        &index,
        &GcPolicy::default(),
        &HashSet::new(),
        now(),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(
            err,
            RegistryGcError::Registry(RegistryError::Unreachable { .. })
        ),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .contains(&format!("could not connect to registry {addr}")),
        "{err}"
    );
}

#[tokio::test]
async fn an_empty_or_unknown_repository_plans_nothing() {
    let reg = TestRegistry::start();
    let dir = tempfile::tempdir().unwrap();
    let index = Index::open(&dir.path().join("strata.db")).unwrap();
    let registry = client(&reg.addr());
    let plan = plan_registry(
        &registry,
        &repo(&reg.addr()),
        &index,
        &GcPolicy::default(),
        &HashSet::new(),
        now(),
    )
    .await
    .unwrap();
    assert!(plan.kept.is_empty() && plan.deleted.is_empty());
    // A plan for one repository is refused for another.
    let other: RegistryRepo = format!("{}/other", reg.addr()).parse().unwrap();
    let err = apply_registry(&registry, &other, &index, &plan)
        .await
        .unwrap_err();
    assert!(matches!(err, RegistryGcError::WrongPlan { .. }), "{err}");
}

#[tokio::test]
async fn a_delete_run_cut_half_way_reports_exactly_what_it_deleted() {
    let reg = TestRegistry::start();
    let dir = tempfile::tempdir().unwrap();
    let index = Index::open(&dir.path().join("strata.db")).unwrap();
    let direct = client(&reg.addr());
    let r = repo(&reg.addr());
    let now = now();
    let mut images = Vec::new();
    for i in 0..8u8 {
        let label = format!("old{i}");
        let image = build_image(dir.path(), &label, &[&[i; 64]], Some(""));
        push(&direct, &r, &image, &[&format!("env-{label}")]).await;
        record(&index, &r, &image, now - 100 * DAY + i64::from(i), 0);
        images.push(image);
    }
    let policy = GcPolicy {
        keep_newest: 0,
        ..GcPolicy::default()
    };
    // Through a proxy that lets about six deletes through, then drops every connection.
    let proxy = test_registry::FaultProxy::start(&reg.addr(), None);
    let registry = client(&proxy.addr());
    let proxied: RegistryRepo = format!("{}/{REPO}", proxy.addr()).parse().unwrap();
    // The proxy's port is another registry name: the records are copied to it.
    for image in &images {
        let push = index.registry_push(&r.to_string(), &image.digest).unwrap();
        index
            .record_registry_push(&proxied.to_string(), &push.unwrap().record)
            .unwrap();
    }
    let plan = plan_registry(&registry, &proxied, &index, &policy, &HashSet::new(), now)
        .await
        .unwrap();
    assert_eq!(plan.deleted.len(), 8);
    let absent = Digest::of(b"no such manifest");
    proxy.reset(None);
    let _ = registry.delete_manifest(&proxied, &absent).await;
    let one_delete = proxy.client_bytes();
    proxy.reset(Some(one_delete * 13 / 2));

    let err = apply_registry(&registry, &proxied, &index, &plan)
        .await
        .unwrap_err();
    let RegistryGcError::Delete {
        planned, report, ..
    } = &err
    else {
        panic!("expected a delete failure, got {err}");
    };
    assert_eq!(*planned, 8);
    assert!(report.deleted.len() <= 6, "{}", report.deleted.len());
    let reported: BTreeSet<Digest> = digests_deleted(&report.deleted);
    for image in &images {
        let by_digest = ManifestRef::Digest(image.digest.clone());
        let present = direct.manifest_exists(&r, &by_digest).await.unwrap();
        let record = index
            .registry_push(&proxied.to_string(), &image.digest)
            .unwrap();
        if reported.contains(&image.digest) {
            assert_eq!(present, None, "{} reported deleted", image.label);
            assert!(record.is_none(), "{} record kept", image.label);
        } else {
            // Not reported: its record stays (the registry may have acted on a request whose
            // answer was cut; the next run finds it gone).
            assert!(record.is_some(), "{} record lost", image.label);
        }
    }
}
