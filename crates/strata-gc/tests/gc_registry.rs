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
use strata_oci::{MEDIA_TYPE_INDEX, MEDIA_TYPE_LAYER_GZIP, MEDIA_TYPE_MANIFEST};
use strata_registry::{
    push_image, ImageUpload, ManifestRef, PushOptions, Registry, RegistryError, RegistryRepo,
    RetryPolicy, UsageUpdate,
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
    /// The tag strata's build gives it: `env-` and the start of its spec digest.
    fn env_tag(&self) -> String {
        format!("env-{}", self.spec.short(16))
    }

    /// The tag strata's Kubernetes launcher gives it.
    fn job_tag(&self) -> String {
        format!("job-{}", self.digest.short(16))
    }

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
        tag: Some(image.env_tag()),
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

    push(&registry, &r, &e1, &[&e1.env_tag(), &e1.job_tag()]).await;
    for image in [&e2, &e3, &e4, &recent, &leased, &unrecorded] {
        push(&registry, &r, image, &[&image.env_tag()]).await;
    }
    push(&registry, &r, &release, &[&release.env_tag(), "release-1"]).await;
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
    let mut e1_tags = vec![e1.env_tag(), e1.job_tag()];
    e1_tags.sort();
    assert_eq!(e1_plan.manifest.tags, e1_tags);
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
    let mut expected_tags: Vec<String> = [&e3, &e4, &leased, &recent, &release, &unrecorded]
        .iter()
        .map(|i| i.env_tag())
        .chain(["base".to_string(), "release-1".to_string()])
        .collect();
    expected_tags.sort();
    assert_eq!(tags, expected_tags);
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
    push(&registry, &r, &a, &[&a.env_tag()]).await;
    push(&registry, &r, &b, &[&b.env_tag()]).await;
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
        push(&direct, &r, &image, &[&image.env_tag()]).await;
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

/// Tags `digest` of the test repository as `tag` the way a person does: `skopeo copy`.
fn skopeo_tag(addr: &str, digest: &Digest, tag: &str) {
    run(Command::new("skopeo").args([
        "copy",
        "--preserve-digests",
        "--src-tls-verify=false",
        "--dest-tls-verify=false",
        &format!("docker://{addr}/{REPO}@{digest}"),
        &format!("docker://{addr}/{REPO}:{tag}"),
    ]));
}

async fn resolves_to(registry: &Registry, r: &RegistryRepo, tag: &str) -> Option<Digest> {
    let reference = ManifestRef::Tag(tag.parse().unwrap());
    registry.manifest_exists(r, &reference).await.unwrap()
}

/// Two builds of `exp`, the older one also tagged `prod` by a person: with keep-days 0 and
/// keep-newest 1 the older one is kept for its foreign tag, and `prod` survives the run.
#[tokio::test]
async fn a_manifest_with_a_tag_strata_did_not_make_is_kept() {
    let reg = TestRegistry::start();
    let dir = tempfile::tempdir().unwrap();
    let index = Index::open(&dir.path().join("strata.db")).unwrap();
    let registry = client(&reg.addr());
    let r = repo(&reg.addr());
    let now = now();
    let older = build_image(dir.path(), "older", &[b"older layer"], Some("exp"));
    let newer = build_image(dir.path(), "newer", &[b"newer layer"], Some("exp"));
    // Pushed by strata: the build tag, and the Kubernetes launcher's tag on the older one.
    push(&registry, &r, &older, &[&older.env_tag(), &older.job_tag()]).await;
    push(&registry, &r, &newer, &[&newer.env_tag()]).await;
    record(&index, &r, &older, now - 30 * DAY, 0);
    record(&index, &r, &newer, now - 20 * DAY, 0);
    skopeo_tag(&reg.addr(), &older.digest, "prod");
    // A tag shaped like strata's but naming another spec is not strata's either.
    let lookalike = format!("env-{}", Digest::of(b"another spec").short(16));
    let third = build_image(dir.path(), "third", &[b"third layer"], Some("exp"));
    push(&registry, &r, &third, &[&third.env_tag()]).await;
    record(&index, &r, &third, now - 40 * DAY, 0);
    skopeo_tag(&reg.addr(), &third.digest, &lookalike);
    let policy = GcPolicy {
        keep_days: 0,
        keep_newest: 1,
        ..GcPolicy::default()
    };

    let plan = plan_registry(&registry, &r, &index, &policy, &HashSet::new(), now)
        .await
        .unwrap();
    assert!(plan.deleted.is_empty(), "{:?}", plan.deleted);
    assert_eq!(
        kept_for(&plan.kept, &older).reasons,
        vec![KeepReason::ForeignTag { tag: "prod".into() }]
    );
    assert_eq!(
        kept_for(&plan.kept, &third).reasons,
        vec![KeepReason::ForeignTag { tag: lookalike }]
    );
    let report = apply_registry(&registry, &r, &index, &plan).await.unwrap();
    assert!(report.deleted.is_empty());
    assert_eq!(
        resolves_to(&registry, &r, "prod").await,
        Some(older.digest.clone())
    );
    let json = serde_json::to_value(&report).unwrap();
    let reasons = json["kept"].to_string();
    assert!(
        reasons.contains(r#"{"reason":"foreign_tag","tag":"prod"}"#),
        "{reasons}"
    );
    let text = KeepReason::ForeignTag { tag: "prod".into() }.to_string();
    assert_eq!(text, "tag prod was not made by strata");
}

/// Everything an image index references is kept with the index, nested indexes included.
#[tokio::test]
async fn what_a_kept_index_references_is_kept() {
    let reg = TestRegistry::start();
    let dir = tempfile::tempdir().unwrap();
    let index = Index::open(&dir.path().join("strata.db")).unwrap();
    let registry = client(&reg.addr());
    let r = repo(&reg.addr());
    let now = now();
    let amd = build_image(dir.path(), "amd", &[b"amd layer"], Some("exp"));
    let arm = build_image(dir.path(), "arm", &[b"arm layer"], Some("exp"));
    let loose = build_image(dir.path(), "loose", &[b"loose layer"], Some("exp"));
    for image in [&amd, &arm, &loose] {
        push(&registry, &r, image, &[&image.env_tag()]).await;
        record(&index, &r, image, now - 60 * DAY, 0);
    }
    let descriptor = |image: &TestImage, arch: &str| {
        json!({"mediaType": MEDIA_TYPE_MANIFEST, "digest": image.digest.to_string(),
               "size": image.manifest.len(), "platform": {"os": "linux", "architecture": arch}})
    };
    // inner index → arm; outer index (tagged) → amd and the inner index.
    let inner = serde_json::to_vec(&json!({"schemaVersion": 2, "mediaType": MEDIA_TYPE_INDEX,
        "manifests": [descriptor(&arm, "arm64")]}))
    .unwrap();
    let inner_digest = Digest::of(&inner);
    registry
        .push_manifest(
            &r,
            &ManifestRef::Digest(inner_digest.clone()),
            &inner,
            MEDIA_TYPE_INDEX,
        )
        .await
        .unwrap();
    let outer = serde_json::to_vec(&json!({"schemaVersion": 2, "mediaType": MEDIA_TYPE_INDEX,
        "manifests": [descriptor(&amd, "amd64"),
            {"mediaType": MEDIA_TYPE_INDEX, "digest": inner_digest.to_string(),
             "size": inner.len()}]}))
    .unwrap();
    let outer_digest = registry
        .push_manifest(
            &r,
            &ManifestRef::Tag("multi".parse().unwrap()),
            &outer,
            MEDIA_TYPE_INDEX,
        )
        .await
        .unwrap();
    let policy = GcPolicy {
        keep_days: 0,
        keep_newest: 0,
        ..GcPolicy::default()
    };

    let plan = plan_registry(&registry, &r, &index, &policy, &HashSet::new(), now)
        .await
        .unwrap();
    assert_eq!(
        digests_deleted(&plan.deleted),
        [loose.digest.clone()].into()
    );
    for child in [&amd, &arm] {
        assert_eq!(
            kept_for(&plan.kept, child).reasons,
            vec![KeepReason::InIndex {
                index: outer_digest.clone()
            }],
            "{}",
            child.label
        );
    }
    apply_registry(&registry, &r, &index, &plan).await.unwrap();
    // Everything the index references still pulls whole (skopeo cannot copy nested indexes
    // in one go, so each image is copied by digest).
    for digest in [&outer_digest, &inner_digest] {
        registry
            .pull_manifest(&r, &ManifestRef::Digest(digest.clone()))
            .await
            .unwrap();
    }
    for child in [&amd, &arm] {
        let copy = dir.path().join(format!("copy-{}", child.label));
        run(Command::new("skopeo")
            .args(["copy", "--src-tls-verify=false"])
            .arg(format!("docker://{}/{REPO}@{}", reg.addr(), child.digest))
            .arg(format!("oci:{}:x", copy.display())));
        assert_eq!(verify_layout_blobs(&copy), child.blobs.len() + 1);
    }
}

/// Machine A pushed two images and used one yesterday; a GC run from machine B (another
/// `STRATA_HOME`, no push records) reads the usage records in the registry: it keeps the one
/// used recently and deletes the one idle for 40 days, with its record.
#[tokio::test]
async fn usage_recorded_on_another_machine_is_shared_through_the_registry() {
    let reg = TestRegistry::start();
    let dir = tempfile::tempdir().unwrap();
    let index_b = Index::open(&dir.path().join("b.db")).unwrap();
    let registry = client(&reg.addr());
    let r = repo(&reg.addr());
    let now = now();
    let fresh = build_image(dir.path(), "fresh", &[b"fresh layer"], Some("exp"));
    let stale = build_image(dir.path(), "stale", &[b"stale layer"], Some("exp"));
    // Machine A: pushes (as `PushTarget::push` records them), then a launch of `fresh`.
    for (image, pushed) in [(&fresh, now - 50 * DAY), (&stale, now - 45 * DAY)] {
        push(&registry, &r, image, &[&image.env_tag()]).await;
        let tag = image.env_tag();
        let update = UsageUpdate {
            manifest: &image.digest,
            tag: Some(&tag),
            name: "exp",
            now: pushed,
        };
        registry.record_usage(&r, &update).await.unwrap();
    }
    let job_tag = fresh.job_tag();
    let launch = UsageUpdate {
        manifest: &fresh.digest,
        tag: Some(&job_tag),
        name: "",
        now: now - DAY,
    };
    let record = registry.record_usage(&r, &launch).await.unwrap();
    assert_eq!(record.pushed_at, now - 50 * DAY);
    assert_eq!(record.last_used_at, now - DAY);
    let policy = GcPolicy {
        keep_days: 14,
        keep_newest: 0,
        ..GcPolicy::default()
    };

    let plan = plan_registry(&registry, &r, &index_b, &policy, &HashSet::new(), now)
        .await
        .unwrap();
    assert_eq!(
        digests_deleted(&plan.deleted),
        [stale.digest.clone()].into()
    );
    assert!(kept_for(&plan.kept, &fresh).reasons.iter().any(
        |r| matches!(r, KeepReason::Recent { last_active_at, .. } if *last_active_at == now - DAY)
    ));
    // Usage records are neither environments nor tags of one.
    assert_eq!(plan.counts.manifests, 2);
    assert_eq!(plan.counts.tags, 2);
    assert_eq!(plan.deleted[0].manifest.name.as_deref(), Some("exp"));

    apply_registry(&registry, &r, &index_b, &plan)
        .await
        .unwrap();
    assert!(registry
        .read_usage(&r, &stale.digest)
        .await
        .unwrap()
        .is_none());
    assert!(registry
        .read_usage(&r, &fresh.digest)
        .await
        .unwrap()
        .is_some());
    let mut tags = registry.list_tags(&r).await.unwrap();
    tags.sort();
    assert_eq!(
        tags,
        vec![
            fresh.env_tag(),
            format!("strata-usage-{}", fresh.digest.hex())
        ]
    );
}

/// Between the plan and the delete, a person tags one planned image, a job leases another and
/// a third is used from another machine: all three are kept, the fourth goes.
#[tokio::test]
async fn a_change_between_plan_and_delete_keeps_the_image() {
    let reg = TestRegistry::start();
    let dir = tempfile::tempdir().unwrap();
    let index = Index::open(&dir.path().join("strata.db")).unwrap();
    let registry = client(&reg.addr());
    let r = repo(&reg.addr());
    let now = now();
    let mut images = Vec::new();
    for label in ["tagged", "leased", "used", "idle"] {
        let image = build_image(dir.path(), label, &[label.as_bytes()], Some("exp"));
        push(&registry, &r, &image, &[&image.env_tag()]).await;
        record(&index, &r, &image, now - 90 * DAY, 0);
        images.push(image);
    }
    let policy = GcPolicy {
        keep_days: 14,
        keep_newest: 0,
        ..GcPolicy::default()
    };
    let plan = plan_registry(&registry, &r, &index, &policy, &HashSet::new(), now)
        .await
        .unwrap();
    assert_eq!(plan.deleted.len(), 4);

    skopeo_tag(&reg.addr(), &images[0].digest, "prod");
    let lease = index.lease("job", Default::default()).unwrap();
    lease.add(&[images[1].digest.clone()]).unwrap();
    let tag = images[2].env_tag();
    let use_elsewhere = UsageUpdate {
        manifest: &images[2].digest,
        tag: Some(&tag),
        name: "exp",
        now: strata_index::now(),
    };
    registry.record_usage(&r, &use_elsewhere).await.unwrap();

    let report = apply_registry(&registry, &r, &index, &plan).await.unwrap();
    assert_eq!(
        digests_deleted(&report.deleted),
        [images[3].digest.clone()].into()
    );
    assert_eq!(
        kept_for(&report.kept, &images[0]).reasons,
        vec![KeepReason::TaggedSincePlan { tag: "prod".into() }]
    );
    assert_eq!(
        kept_for(&report.kept, &images[1]).reasons,
        vec![KeepReason::LeasedSincePlan {
            digest: images[1].digest.clone()
        }]
    );
    assert!(matches!(
        kept_for(&report.kept, &images[2]).reasons.as_slice(),
        [KeepReason::UsedSincePlan { .. }]
    ));
    assert_eq!(
        resolves_to(&registry, &r, "prod").await,
        Some(images[0].digest.clone())
    );
    for kept in &images[..3] {
        let by_digest = ManifestRef::Digest(kept.digest.clone());
        assert!(registry
            .manifest_exists(&r, &by_digest)
            .await
            .unwrap()
            .is_some());
    }
    drop(lease);
}
