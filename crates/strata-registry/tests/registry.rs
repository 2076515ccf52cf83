//! The registry client against a real CNCF distribution registry on 127.0.0.1.

#[path = "support/answer_proxy.rs"]
mod answer_proxy;
#[path = "support/image.rs"]
mod image_support;
#[path = "support/registry.rs"]
mod test_registry;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use answer_proxy::{error_body, Answer, AnswerProxy, Refusal};
use image_support::{store_blob, store_config};
use serde_json::json;
use strata_oci::{BlobDescriptor, Digest, LayerDescriptor};
use strata_oci::{MEDIA_TYPE_CONFIG, MEDIA_TYPE_LAYER_GZIP, MEDIA_TYPE_MANIFEST};
use strata_registry::{
    push_image, tag_pushed_manifest, EntryWrite, ImageUpload, LayerEntry, LayerEntryKey,
    ManifestRef, PushOptions, PushReport, Registry, RegistryError, RegistryRepo, RetryPolicy,
    Scheme, Tag, UsageUpdate,
};
use test_registry::{FaultProxy, TestRegistry};

/// Retries short enough to keep failing tests fast.
fn fast_retry() -> RetryPolicy {
    RetryPolicy {
        attempts: 2,
        initial_backoff: Duration::from_millis(10),
    }
}

fn client(addr: &str) -> Registry {
    Registry::new(addr, false)
        .unwrap()
        .with_retry_policy(fast_retry())
}

fn repo(addr: &str, name: &str) -> RegistryRepo {
    format!("{addr}/{name}").parse().unwrap()
}

fn tag(t: &str) -> Tag {
    t.parse().unwrap()
}

/// A small, valid OCI image on disk: gzip tar layers, a config and a manifest.
struct TestImage {
    manifest: Vec<u8>,
    digest: Digest,
    layers: Vec<(BlobDescriptor, PathBuf)>,
    config: (BlobDescriptor, PathBuf),
}

impl TestImage {
    fn blobs(&self) -> Vec<(BlobDescriptor, PathBuf)> {
        let mut all = self.layers.clone();
        all.push(self.config.clone());
        all
    }

    fn upload<'a>(
        &'a self,
        blobs: &'a [(BlobDescriptor, PathBuf)],
        tag: Option<&'a Tag>,
    ) -> ImageUpload<'a> {
        ImageUpload {
            manifest: &self.manifest,
            manifest_digest: &self.digest,
            media_type: MEDIA_TYPE_MANIFEST,
            tag,
            blobs,
        }
    }
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

/// A one-file gzip tar layer, made by GNU tar and gzip with fixed metadata so the same content
/// always gives the same blob. Returns the blob and the layer's diff_id.
fn layer(dir: &Path, file_name: &str, content: &[u8]) -> ((BlobDescriptor, PathBuf), Digest) {
    let work = dir.join(format!("layer-{}", Digest::of(content).short(16)));
    let src = work.join("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join(file_name), content).unwrap();
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
        .arg(file_name));
    let tar = std::fs::read(&tar_path).unwrap();
    let gz = run(Command::new("gzip").args(["-n", "-c"]).arg(&tar_path));
    (
        store_blob(dir, MEDIA_TYPE_LAYER_GZIP, &gz),
        Digest::of(&tar),
    )
}

fn build_image(dir: &Path, files: &[(&str, &[u8])]) -> TestImage {
    let layers: Vec<_> = files
        .iter()
        .map(|(name, content)| layer(dir, name, content))
        .collect();
    image_on_layers(dir, &layers, json!({}))
}

/// An image of `layers` (blob and diff_id each) whose config holds `config`: images on the
/// same layers with different `config` share every layer blob but have their own config.
fn image_on_layers(
    dir: &Path,
    layers: &[((BlobDescriptor, PathBuf), Digest)],
    config: serde_json::Value,
) -> TestImage {
    let diff_ids: Vec<Digest> = layers.iter().map(|(_, d)| d.clone()).collect();
    let layers: Vec<_> = layers.iter().map(|(blob, _)| blob.clone()).collect();
    let config = store_config(dir, &diff_ids, config);
    let manifest = image_support::manifest(&config.0, &layers, None);
    TestImage {
        digest: Digest::of(&manifest),
        manifest,
        layers,
        config,
    }
}

/// Bytes that gzip cannot shrink much, so a layer of them is about as big on the wire.
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

async fn push(
    registry: &Registry,
    repo: &RegistryRepo,
    image: &TestImage,
    t: Option<&Tag>,
) -> PushReport {
    let blobs = image.blobs();
    push_image(
        registry,
        repo,
        &image.upload(&blobs, t),
        &PushOptions::default(),
    )
    .await
    .unwrap()
}

/// A one-file image in a work directory, pushed to `env`, and the client that pushed it.
struct Pushed {
    dir: tempfile::TempDir,
    registry: Registry,
    r: RegistryRepo,
    image: TestImage,
}

/// Builds an image of the one file `name` holding `content` and pushes it to `env` on `reg`,
/// under tag `t` if given.
async fn push_one_file(reg: &TestRegistry, name: &str, content: &[u8], t: Option<&str>) -> Pushed {
    let dir = tempfile::tempdir().unwrap();
    let (registry, r) = env_client(&reg.addr());
    let image = build_image(dir.path(), &[(name, content)]);
    push(&registry, &r, &image, t.map(tag).as_ref()).await;
    Pushed {
        dir,
        registry,
        r,
        image,
    }
}

#[tokio::test]
async fn pushed_image_reads_back_and_skopeo_agrees() {
    let reg = TestRegistry::start();
    let dir = tempfile::tempdir().unwrap();
    let image = build_image(dir.path(), &[("hello.txt", b"hello strata\n")]);
    let registry = client(&reg.addr());
    let r = repo(&reg.addr(), "team/env");
    let v1 = tag("v1");

    let report = push(&registry, &r, &image, Some(&v1)).await;
    let total: u64 = image.blobs().iter().map(|(d, _)| d.size).sum();
    assert_eq!(
        report,
        PushReport {
            bytes_uploaded: total,
            blobs_uploaded: 2,
            blobs_present: 0,
            blobs_mounted: 0
        }
    );
    assert!(reg.storage_bytes() >= total);

    let by_tag = ManifestRef::Tag(v1.clone());
    let by_digest = ManifestRef::Digest(image.digest.clone());
    assert_eq!(
        registry.manifest_exists(&r, &by_tag).await.unwrap(),
        Some(image.digest.clone())
    );
    assert_eq!(
        registry.manifest_exists(&r, &by_digest).await.unwrap(),
        Some(image.digest.clone())
    );
    assert_eq!(
        registry
            .manifest_exists(&r, &ManifestRef::Tag(tag("nope")))
            .await
            .unwrap(),
        None
    );
    for reference in [&by_tag, &by_digest] {
        let pulled = registry.pull_manifest(&r, reference).await.unwrap();
        assert_eq!(pulled.bytes, image.manifest);
        assert_eq!(pulled.digest, image.digest);
        assert_eq!(pulled.media_type, MEDIA_TYPE_MANIFEST);
    }
    assert_eq!(
        registry.list_tags(&r).await.unwrap(),
        vec!["v1".to_string()]
    );

    for (desc, path) in image.blobs() {
        assert!(registry.blob_exists(&r, &desc.digest).await.unwrap());
        let dest = dir.path().join(format!("pulled-{}", desc.digest.short(12)));
        registry.pull_blob_to_file(&r, &desc, &dest).await.unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), std::fs::read(&path).unwrap());
    }

    // skopeo reads what we pushed, independently of our code.
    let reference = format!("docker://{}/team/env:v1", reg.addr());
    let raw =
        run(Command::new("skopeo").args(["inspect", "--tls-verify=false", "--raw", &reference]));
    assert_eq!(raw, image.manifest);
    let inspect = run(Command::new("skopeo").args(["inspect", "--tls-verify=false", &reference]));
    let inspect: serde_json::Value = serde_json::from_slice(&inspect).unwrap();
    assert_eq!(inspect["Digest"], image.digest.to_string());
    assert_eq!(
        inspect["Layers"],
        json!([image.layers[0].0.digest.to_string()])
    );
    assert_eq!(inspect["Os"], "linux");
}

#[tokio::test]
async fn pushing_again_uploads_nothing_and_a_shared_blob_is_not_resent() {
    let reg = TestRegistry::start();
    let Pushed {
        dir,
        registry,
        r,
        image: first,
    } = push_one_file(&reg, "shared.txt", b"shared layer\n", Some("a")).await;
    let stored = reg.storage_bytes();

    let again = push(&registry, &r, &first, Some(&tag("a"))).await;
    assert_eq!(again.bytes_uploaded, 0);
    assert_eq!(again.blobs_uploaded, 0);
    assert_eq!(again.blobs_present, 2);
    assert_eq!(reg.storage_bytes(), stored);

    let second = build_image(
        dir.path(),
        &[
            ("shared.txt", b"shared layer\n"),
            ("own.txt", b"only in b\n"),
        ],
    );
    assert_eq!(
        second.layers[0].0, first.layers[0].0,
        "same content, same layer blob"
    );
    let report = push(&registry, &r, &second, Some(&tag("b"))).await;
    let new_bytes = second.layers[1].0.size + second.config.0.size;
    assert_eq!(report.bytes_uploaded, new_bytes);
    assert_eq!(report.blobs_uploaded, 2);
    assert_eq!(report.blobs_present, 1);
    let mut tags = registry.list_tags(&r).await.unwrap();
    tags.sort();
    assert_eq!(tags, vec!["a", "b"]);
}

#[tokio::test]
async fn blobs_mount_from_another_repository_of_the_registry() {
    let reg = TestRegistry::start();
    let dir = tempfile::tempdir().unwrap();
    let registry = client(&reg.addr());
    let source = repo(&reg.addr(), "team/source");
    let target = repo(&reg.addr(), "team/target");
    let image = build_image(dir.path(), &[("m.txt", b"mount me\n")]);
    push(&registry, &source, &image, None).await;

    let layer = &image.layers[0].0;
    assert!(!registry.blob_exists(&target, &layer.digest).await.unwrap());
    assert!(registry
        .mount_blob(&target, &source, &layer.digest)
        .await
        .unwrap());
    assert!(registry.blob_exists(&target, &layer.digest).await.unwrap());

    // The source lacks this blob: the registry declines and the caller must upload.
    let absent = Digest::of(b"not pushed anywhere");
    assert!(!registry
        .mount_blob(&target, &source, &absent)
        .await
        .unwrap());

    // A whole push with a mount source: the layer is there, the config gets mounted.
    let blobs = image.blobs();
    let options = PushOptions {
        mount_from: Some(source.clone()),
        ..PushOptions::default()
    };
    let report = push_image(
        &registry,
        &target,
        &image.upload(&blobs, Some(&tag("m"))),
        &options,
    )
    .await
    .unwrap();
    assert_eq!(report.bytes_uploaded, 0);
    assert_eq!(report.blobs_present, 1);
    assert_eq!(report.blobs_mounted, 1);
    let pulled = registry
        .pull_manifest(&target, &ManifestRef::Tag(tag("m")))
        .await
        .unwrap();
    assert_eq!(pulled.digest, image.digest);
}

#[tokio::test]
async fn an_unreachable_registry_is_named_in_the_error() {
    let registry = client("127.0.0.1:1");
    let r = repo("127.0.0.1:1", "env");
    let err = registry
        .blob_exists(&r, &Digest::of(b"x"))
        .await
        .unwrap_err();
    assert!(matches!(err, RegistryError::Unreachable { .. }), "{err:?}");
    let text = err.to_string();
    assert!(text.contains("127.0.0.1:1"), "{text}");
    assert!(text.contains("could not connect"), "{text}");

    let err = registry.list_tags(&r).await.unwrap_err();
    assert!(matches!(err, RegistryError::Unreachable { .. }), "{err:?}");
    let err = registry
        .manifest_exists(&r, &ManifestRef::Tag(tag("v1")))
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("could not connect to registry 127.0.0.1:1"),
        "{err}"
    );
}

#[tokio::test]
async fn tls_to_a_plain_http_registry_fails_with_the_insecure_hint() {
    let reg = TestRegistry::start();
    let registry = Registry::with_scheme(&reg.addr(), Scheme::Https)
        .unwrap()
        .with_retry_policy(fast_retry());
    let r = repo(&reg.addr(), "env");
    let err = registry
        .blob_exists(&r, &Digest::of(b"x"))
        .await
        .unwrap_err();
    assert!(matches!(err, RegistryError::Tls { .. }), "{err:?}");
    assert!(err.to_string().contains("--insecure"), "{err}");
    let err = registry.list_tags(&r).await.unwrap_err();
    assert!(matches!(err, RegistryError::Tls { .. }), "{err:?}");
}

#[tokio::test]
async fn a_push_cut_mid_upload_resumes_without_resending_landed_blobs() {
    let reg = TestRegistry::start();
    let dir = tempfile::tempdir().unwrap();
    let big = noise(3 * 1024 * 1024, 7);
    let image = build_image(
        dir.path(),
        &[("small.txt", &[b'x'; 1024][..]), ("big.bin", &big[..])],
    );
    // Small layer and config first, the big layer last: the cut lands inside the big upload.
    let blobs = vec![
        image.layers[0].clone(),
        image.config.clone(),
        image.layers[1].clone(),
    ];
    let big_layer = &image.layers[1].0;
    assert!(
        big_layer.size > 2 * 1024 * 1024,
        "the big layer must outlast the budget"
    );
    let sequential = PushOptions {
        concurrency: 1,
        ..PushOptions::default()
    };

    let proxy = FaultProxy::start(&reg.addr(), Some(1024 * 1024));
    let via_proxy = client(&proxy.addr());
    let proxied_repo = repo(&proxy.addr(), "team/env");
    let err = push_image(
        &via_proxy,
        &proxied_repo,
        &image.upload(&blobs, Some(&tag("v1"))),
        &sequential,
    )
    .await
    .unwrap_err();
    assert!(proxy.is_tripped());
    assert!(err.is_transient(), "{err:?}");
    assert!(err.to_string().contains(&proxy.addr()), "{err}");

    let direct = client(&reg.addr());
    let r = repo(&reg.addr(), "team/env");
    assert!(direct
        .blob_exists(&r, &image.layers[0].0.digest)
        .await
        .unwrap());
    assert!(direct
        .blob_exists(&r, &image.config.0.digest)
        .await
        .unwrap());
    assert!(!direct.blob_exists(&r, &big_layer.digest).await.unwrap());
    assert_eq!(
        direct
            .manifest_exists(&r, &ManifestRef::Tag(tag("v1")))
            .await
            .unwrap(),
        None
    );

    let report = push_image(
        &direct,
        &r,
        &image.upload(&blobs, Some(&tag("v1"))),
        &sequential,
    )
    .await
    .unwrap();
    assert_eq!(report.bytes_uploaded, big_layer.size);
    assert_eq!(report.blobs_uploaded, 1);
    assert_eq!(report.blobs_present, 2);
    let pulled = direct
        .pull_manifest(&r, &ManifestRef::Tag(tag("v1")))
        .await
        .unwrap();
    assert_eq!(pulled.digest, image.digest);

    // After a reset the proxy forwards again, and everything is already there.
    proxy.reset(None);
    let again = push_image(
        &via_proxy,
        &proxied_repo,
        &image.upload(&blobs, None),
        &sequential,
    )
    .await
    .unwrap();
    assert_eq!(again.bytes_uploaded, 0);
}

#[tokio::test]
async fn delete_is_refused_clearly_when_the_registry_disables_it() {
    let reg = TestRegistry::without_deletes();
    let Pushed {
        registry, r, image, ..
    } = push_one_file(&reg, "d.txt", b"keep\n", Some("v1")).await;

    let err = registry
        .delete_manifest(&r, &image.digest)
        .await
        .unwrap_err();
    assert!(
        matches!(err, RegistryError::DeletesDisabled { .. }),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(
        text.contains(&format!(
            "registry {} does not allow deletes (storage.delete.enabled)",
            reg.addr()
        )),
        "{text}"
    );
    let by_digest = ManifestRef::Digest(image.digest.clone());
    assert!(registry
        .manifest_exists(&r, &by_digest)
        .await
        .unwrap()
        .is_some());
}

#[tokio::test]
async fn delete_removes_the_manifest_and_its_tags() {
    let reg = TestRegistry::start();
    let Pushed {
        registry, r, image, ..
    } = push_one_file(&reg, "d.txt", b"delete me\n", Some("v1")).await;

    registry.delete_manifest(&r, &image.digest).await.unwrap();
    let by_digest = ManifestRef::Digest(image.digest.clone());
    assert_eq!(
        registry.manifest_exists(&r, &by_digest).await.unwrap(),
        None
    );
    assert_eq!(tagged(&registry, &r, "v1").await, None);
    assert!(registry.list_tags(&r).await.unwrap().is_empty());

    let err = registry
        .delete_manifest(&r, &image.digest)
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(404), "{err:?}");
}

#[tokio::test]
async fn pulls_are_verified_and_leave_nothing_behind_on_failure() {
    let reg = TestRegistry::start();
    let Pushed {
        dir,
        registry,
        r,
        image,
    } = push_one_file(&reg, "v.txt", b"verify me\n", None).await;
    let layer = image.layers[0].0.clone();
    let out = dir.path().join("out");
    std::fs::create_dir_all(&out).unwrap();

    for wrong_size in [layer.size - 1, layer.size + 1] {
        let lying = BlobDescriptor {
            size: wrong_size,
            ..layer.clone()
        };
        let dest = out.join("layer");
        let err = registry
            .pull_blob_to_file(&r, &lying, &dest)
            .await
            .unwrap_err();
        assert!(matches!(err, RegistryError::SizeMismatch { .. }), "{err:?}");
        assert!(err.to_string().contains(&layer.digest.to_string()), "{err}");
    }
    let missing = BlobDescriptor {
        digest: Digest::of(b"never pushed"),
        ..layer.clone()
    };
    let err = registry
        .pull_blob_to_file(&r, &missing, &out.join("missing"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("BLOB_UNKNOWN"), "{err}");
    assert_eq!(
        std::fs::read_dir(&out).unwrap().count(),
        0,
        "no partial or wrong file is left"
    );

    let err = registry
        .pull_manifest(&r, &ManifestRef::Digest(Digest::of(b"no manifest")))
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(404));
    assert_eq!(err.registry_code(), Some("MANIFEST_UNKNOWN"));
    assert!(
        err.to_string()
            .contains(&format!("pulling manifest {}/env@sha256:", reg.addr())),
        "{err}"
    );
}

#[tokio::test]
async fn bad_pushes_are_refused_before_any_traffic() {
    // Port 1 refuses connections: any request would fail with Unreachable instead.
    let registry = client("127.0.0.1:1");
    let r = repo("127.0.0.1:1", "env");
    let manifest = br#"{"schemaVersion":2}"#;
    let wrong = ManifestRef::Digest(Digest::of(b"something else"));
    let err = registry
        .push_manifest(&r, &wrong, manifest, MEDIA_TYPE_MANIFEST)
        .await
        .unwrap_err();
    assert!(
        matches!(err, RegistryError::DigestMismatch { .. }),
        "{err:?}"
    );

    let other = repo("10.0.0.1:5000", "env");
    let err = registry
        .blob_exists(&other, &Digest::of(b"x"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, RegistryError::WrongRegistry { .. }),
        "{err:?}"
    );

    let dir = tempfile::tempdir().unwrap();
    let (mut desc, path) = store_blob(dir.path(), MEDIA_TYPE_CONFIG, b"{}");
    desc.size = 3;
    let err = registry.push_blob_file(&r, &desc, &path).await.unwrap_err();
    assert!(matches!(err, RegistryError::SizeMismatch { .. }), "{err:?}");
    assert!(
        err.to_string().contains(&path.display().to_string()),
        "{err}"
    );
}

/// Images pushed at once into one repository, all on the same layers.
const CONCURRENT_IMAGES: usize = 16;
/// Fresh registries the concurrent pushes are repeated on. Without the retries in `push`,
/// 19 of 30 such rounds failed against docker-registry 2.8.2, so a regression fails this test
/// almost surely (0.4^6).
const CONCURRENT_ROUNDS: usize = 6;

/// Several pushes (users, the Kubernetes agent) upload the same layers into one repository at
/// the same moment. docker-registry rewrites the repository's link for a blob in place each
/// time an upload of it commits, and a manifest PUT reading the link meanwhile is refused
/// (MANIFEST_BLOB_UNKNOWN) though the blob is there. Every push must still land.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_pushes_sharing_layers_into_one_repository_all_land() {
    let dir = tempfile::tempdir().unwrap();
    let shared: Vec<_> = (0..4u64)
        .map(|i| {
            layer(
                dir.path(),
                &format!("shared-{i}.bin"),
                &noise(16 * 1024, i + 1),
            )
        })
        .collect();
    let images: Vec<TestImage> = (0..CONCURRENT_IMAGES)
        .map(|i| {
            image_on_layers(
                dir.path(),
                &shared,
                json!({"Labels": {"job": i.to_string()}}),
            )
        })
        .collect();
    let tags: Vec<Tag> = (0..CONCURRENT_IMAGES)
        .map(|i| tag(&format!("job-{i:02}")))
        .collect();
    let blobs: Vec<_> = images.iter().map(TestImage::blobs).collect();

    for round in 0..CONCURRENT_ROUNDS {
        let reg = TestRegistry::start();
        // The default retry policy: what users run with.
        let registry = Registry::new(&reg.addr(), false).unwrap();
        let r = repo(&reg.addr(), "team/jobs");
        let options = PushOptions::default();
        let pushes = images.iter().enumerate().map(|(i, image)| {
            let upload = image.upload(&blobs[i], Some(&tags[i]));
            let (registry, r, options) = (&registry, &r, &options);
            async move { push_image(registry, r, &upload, options).await }
        });
        let results = futures_util::future::join_all(pushes).await;
        let failures: Vec<String> = results
            .iter()
            .zip(&tags)
            .filter_map(|(result, t)| result.as_ref().err().map(|e| format!("{t}: {e}")))
            .collect();
        assert!(
            failures.is_empty(),
            "round {round}: {} of {CONCURRENT_IMAGES} pushes failed:\n{}",
            failures.len(),
            failures.join("\n")
        );

        for (image, t) in images.iter().zip(&tags) {
            let by_tag = ManifestRef::Tag(t.clone());
            assert_eq!(
                registry.manifest_exists(&r, &by_tag).await.unwrap(),
                Some(image.digest.clone()),
                "round {round}: {t}"
            );
        }
        for ((blob, _), _) in &shared {
            assert_eq!(
                registry.blob_size(&r, &blob.digest).await.unwrap(),
                Some(blob.size)
            );
        }
        let mut listed = registry.list_tags(&r).await.unwrap();
        listed.sort();
        let expected: Vec<String> = tags.iter().map(Tag::to_string).collect();
        assert_eq!(listed, expected, "round {round}");
    }
}

/// The upload PUT of `blob` (its digest is in the query, percent-encoded).
fn is_upload_of(request: &answer_proxy::Request, blob: &BlobDescriptor) -> bool {
    request.method == "PUT"
        && request.target.contains("/blobs/uploads/")
        && request.target.contains(blob.digest.hex())
}

/// A manifest PUT, by tag or digest.
fn is_manifest_put(request: &answer_proxy::Request) -> bool {
    request.method == "PUT" && request.target.contains("/manifests/")
}

/// A 400 with a registry error body.
fn bad_request(code: &str, message: &str, detail: &str) -> Refusal {
    Refusal {
        status: 400,
        body: error_body(code, message, detail),
    }
}

/// A proxy in front of `upstream` that answers `answer` to the requests `pick` chooses and
/// forwards the others.
fn proxy_answering(
    upstream: &str,
    pick: impl Fn(&answer_proxy::Request) -> bool + Send + Sync + 'static,
    answer: Answer,
) -> AnswerProxy {
    AnswerProxy::start(upstream, move |request| {
        if pick(request) {
            return answer.clone();
        }
        Answer::Forward
    })
}

/// A proxy in front of `upstream` that answers `answer` to its first `count` manifest PUTs.
fn refusing_first_manifest_puts(upstream: &str, count: usize, answer: Answer) -> AnswerProxy {
    let refusals_left = AtomicUsize::new(count);
    let pick = move |request: &answer_proxy::Request| {
        is_manifest_put(request)
            && refusals_left
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
    };
    proxy_answering(upstream, pick, answer)
}

/// A client of the registry (or proxy) at `addr` and its repository `env`.
fn env_client(addr: &str) -> (Registry, RegistryRepo) {
    (client(addr), repo(addr, "env"))
}

/// Pushes `image` with `blobs` (its own, or stand-ins) under tag `t` with default options.
async fn try_push(
    registry: &Registry,
    repo: &RegistryRepo,
    image: &TestImage,
    blobs: &[(BlobDescriptor, PathBuf)],
    t: &str,
) -> Result<PushReport, RegistryError> {
    let t = tag(t);
    push_image(
        registry,
        repo,
        &image.upload(blobs, Some(&t)),
        &PushOptions::default(),
    )
    .await
}

/// The digest tag `t` names in `repo`, if any.
async fn tagged(registry: &Registry, repo: &RegistryRepo, t: &str) -> Option<Digest> {
    registry
        .manifest_exists(repo, &ManifestRef::Tag(tag(t)))
        .await
        .unwrap()
}

#[tokio::test]
async fn an_upload_refused_after_the_blob_landed_counts_as_present() {
    let reg = TestRegistry::start();
    let dir = tempfile::tempdir().unwrap();
    let image = build_image(dir.path(), &[("landed.txt", b"landed anyway\n")]);
    let layer = image.layers[0].0.clone();
    // The registry commits the layer, then the client hears what a registry answers the
    // loser of two concurrent uploads of one blob.
    let refused = layer.clone();
    let detail = layer.digest.to_string();
    let proxy = proxy_answering(
        &reg.addr(),
        move |request| is_upload_of(request, &refused),
        Answer::ForwardThenRefuse(bad_request("DIGEST_INVALID", "digest invalid", &detail)),
    );
    let (registry, r) = env_client(&proxy.addr());

    let report = push(&registry, &r, &image, Some(&tag("v1"))).await;
    assert_eq!(proxy.refused(), 1);
    assert_eq!(
        report,
        PushReport {
            bytes_uploaded: image.config.0.size,
            blobs_uploaded: 1,
            blobs_present: 1,
            blobs_mounted: 0
        }
    );
    assert_eq!(
        registry.blob_size(&r, &layer.digest).await.unwrap(),
        Some(layer.size)
    );
    assert_eq!(
        tagged(&registry, &r, "v1").await.as_ref(),
        Some(&image.digest)
    );
}

#[tokio::test]
async fn a_refused_upload_of_a_blob_the_registry_lacks_stays_an_error_naming_it() {
    let reg = TestRegistry::start();
    let dir = tempfile::tempdir().unwrap();
    let image = build_image(dir.path(), &[("lost.txt", b"never lands\n")]);
    let layer = image.layers[0].0.clone();
    let blobs = image.blobs();

    // A real digest mismatch: the local file has the layer's size but other bytes.
    let corrupt_dir = dir.path().join("corrupt");
    std::fs::create_dir_all(&corrupt_dir).unwrap();
    let corrupt = corrupt_dir.join(layer.digest.hex());
    std::fs::write(&corrupt, vec![b'!'; layer.size as usize]).unwrap();
    let corrupt_blobs = vec![(layer.clone(), corrupt), image.config.clone()];
    let (registry, r) = env_client(&reg.addr());
    let err = try_push(&registry, &r, &image, &corrupt_blobs, "v1")
        .await
        .unwrap_err();
    assert!(err.has_code("DIGEST_INVALID"), "{err:?}");
    let text = err.to_string();
    assert!(text.contains(&layer.digest.to_string()), "{text}");
    assert!(text.contains(&format!("registry {}", reg.addr())), "{text}");
    assert_eq!(registry.blob_size(&r, &layer.digest).await.unwrap(), None);

    // A refusal the registry never got to act on: the blob is absent, so the refusal stands.
    let refused = layer.clone();
    let proxy = proxy_answering(
        &reg.addr(),
        move |request| is_upload_of(request, &refused),
        Answer::Refuse(bad_request(
            "BLOB_UPLOAD_INVALID",
            "blob upload invalid",
            "",
        )),
    );
    let (via_proxy, proxied) = env_client(&proxy.addr());
    let err = try_push(&via_proxy, &proxied, &image, &blobs, "v1")
        .await
        .unwrap_err();
    assert!(err.has_code("BLOB_UPLOAD_INVALID"), "{err:?}");
    let text = err.to_string();
    assert!(text.contains(&layer.digest.to_string()), "{text}");
    assert!(text.contains(&proxy.addr()), "{text}");
    assert_eq!(registry.blob_size(&r, &layer.digest).await.unwrap(), None);
    assert_eq!(tagged(&registry, &r, "v1").await, None);
}

#[tokio::test]
async fn a_manifest_refused_for_an_unknown_blob_is_retried_a_bounded_number_of_times() {
    let reg = TestRegistry::start();
    let dir = tempfile::tempdir().unwrap();
    let image = build_image(dir.path(), &[("retry.txt", b"manifest retry\n")]);
    let layer = image.layers[0].0.digest.to_string();

    // Refused once, as docker-registry does while a concurrent upload rewrites the blob's link.
    let unknown_blob = Answer::Refuse(bad_request(
        "MANIFEST_BLOB_UNKNOWN",
        "blob unknown to registry",
        &layer,
    ));
    let once = refusing_first_manifest_puts(&reg.addr(), 1, unknown_blob.clone());
    let (registry, r) = env_client(&once.addr());
    let report = push(&registry, &r, &image, Some(&tag("v1"))).await;
    assert_eq!(once.refused(), 1);
    assert_eq!(
        report.blobs_uploaded, 2,
        "nothing is uploaded twice: {report:?}"
    );
    assert_eq!(
        tagged(&registry, &r, "v1").await,
        Some(image.digest.clone())
    );

    // Refused every time: the push gives up after a few tries, naming the registry and blob.
    let always = proxy_answering(&reg.addr(), is_manifest_put, unknown_blob);
    let (registry, r) = env_client(&always.addr());
    let err = try_push(&registry, &r, &image, &image.blobs(), "v2")
        .await
        .unwrap_err();
    assert!(err.has_code("MANIFEST_BLOB_UNKNOWN"), "{err:?}");
    // MANIFEST_ATTEMPTS in push.rs: a few tries, then the registry's answer stands.
    assert_eq!(always.refused(), 4, "tries of the manifest");
    let text = err.to_string();
    assert!(
        text.contains(&format!("registry {}", always.addr())),
        "{text}"
    );
    assert!(text.contains(&layer), "{text}");
}

#[tokio::test]
async fn a_usage_record_or_tag_refused_for_an_unknown_blob_is_written_on_a_later_try() {
    let reg = TestRegistry::start();
    let pushed = push_one_file(&reg, "used.txt", b"a used image\n", Some("v1")).await;
    // Refused once each, as docker-registry does while another push into the repository
    // rewrites the link of a blob the manifest names (the `{}` config, a shared layer).
    let unknown_blob = Answer::Refuse(bad_request(
        "MANIFEST_BLOB_UNKNOWN",
        "blob unknown to registry",
        &Digest::of(b"{}").to_string(),
    ));
    let once = refusing_first_manifest_puts(&reg.addr(), 1, unknown_blob.clone());
    let (registry, r) = env_client(&once.addr());
    let update = UsageUpdate {
        manifest: &pushed.image.digest,
        tag: Some("v1"),
        name: "env",
        now: 1_800_000_000,
    };
    registry.record_usage(&r, &update).await.unwrap();
    assert_eq!(once.refused(), 1);
    let record = registry.read_usage(&r, &pushed.image.digest).await.unwrap();
    assert!(record.is_some(), "the usage record was written");

    let again = refusing_first_manifest_puts(&reg.addr(), 1, unknown_blob);
    let (registry, r) = env_client(&again.addr());
    let upload = pushed.image.upload(&[], None);
    let manifest = (upload.manifest, upload.media_type);
    tag_pushed_manifest(&registry, &r, &tag("v2"), manifest)
        .await
        .unwrap();
    assert_eq!(again.refused(), 1);
    assert_eq!(
        tagged(&registry, &r, "v2").await.as_ref(),
        Some(&pushed.image.digest)
    );
}

/// A layer index entry for `layer`, as if built from a wheel.
fn entry_for(layer: &BlobDescriptor) -> LayerEntry {
    LayerEntry {
        key: LayerEntryKey {
            source: Digest::of(b"a wheel"),
            scheme: "venv=/opt/venv;python=3.11".into(),
            format: 3,
        },
        layer: LayerDescriptor {
            digest: layer.digest.clone(),
            diff_id: Digest::of(b"its tar"),
            size: layer.size,
            media_type: layer.media_type.clone(),
        },
    }
}

#[tokio::test]
async fn a_layer_index_entry_refused_for_an_unknown_blob_is_written_on_a_later_try() {
    let reg = TestRegistry::start();
    let pushed = push_one_file(&reg, "indexed.txt", b"an indexed layer\n", Some("v1")).await;
    let layer = &pushed.image.layers[0].0;
    let entry = entry_for(layer);
    let paths = b"opt/venv/indexed.txt\n";

    // Refused once, as docker-registry does while another push into the repository rewrites
    // the link of a blob the entry names (its config).
    let unknown_blob = Answer::Refuse(bad_request(
        "MANIFEST_BLOB_UNKNOWN",
        "blob unknown to registry",
        &Digest::of(paths).to_string(),
    ));
    let once = refusing_first_manifest_puts(&reg.addr(), 1, unknown_blob.clone());
    let (registry, r) = env_client(&once.addr());
    registry.prepare_layer_entries(&r).await.unwrap();
    registry
        .write_layer_entry(&r, &entry, Some(paths))
        .await
        .unwrap();
    assert_eq!(once.refused(), 1);
    let found = registry
        .read_layer_entry(&r, &entry.key)
        .await
        .unwrap()
        .expect("the entry was written");
    assert_eq!(found.layer, entry.layer);
    assert_eq!(found.paths.map(|p| p.digest), Some(Digest::of(paths)));

    // Refused every time: a few tries, then the registry's answer stands.
    let other = LayerEntry {
        key: LayerEntryKey {
            source: Digest::of(b"another wheel"),
            ..entry.key.clone()
        },
        ..entry.clone()
    };
    let always = proxy_answering(&reg.addr(), is_manifest_put, unknown_blob);
    let (registry, r) = env_client(&always.addr());
    let err = registry
        .write_layer_entry(&r, &other, None)
        .await
        .unwrap_err();
    assert!(err.has_code("MANIFEST_BLOB_UNKNOWN"), "{err:?}");
    assert_eq!(always.refused(), 4, "tries of the entry");
    assert_eq!(
        registry.read_layer_entry(&r, &other.key).await.unwrap(),
        None
    );
}

#[tokio::test]
async fn a_blob_said_present_that_is_not_is_uploaded_once_the_manifest_is_refused() {
    let reg = TestRegistry::start();
    let dir = tempfile::tempdir().unwrap();
    let image = build_image(dir.path(), &[("gone.txt", b"said present, never pushed\n")]);
    let (registry, r) = env_client(&reg.addr());
    let blobs = image.blobs();
    let layer = image.layers[0].0.clone();
    let options = PushOptions {
        known_present: [layer.digest.clone()].into(),
        ..PushOptions::default()
    };
    let v1 = tag("v1");
    let report = push_image(&registry, &r, &image.upload(&blobs, Some(&v1)), &options)
        .await
        .unwrap();
    // The first pass took the layer as present; the refusal made the next pass upload it.
    assert_eq!(report.blobs_uploaded, 2, "{report:?}");
    assert!(registry.blob_exists(&r, &layer.digest).await.unwrap());
    let pulled = registry
        .pull_manifest(&r, &ManifestRef::Tag(v1))
        .await
        .unwrap();
    assert_eq!(pulled.digest, image.digest);
}

#[tokio::test]
async fn blob_checks_and_downloads_cost_one_request_each() {
    let reg = TestRegistry::start();
    let pushed = push_one_file(&reg, "one.txt", b"one request per blob\n", None).await;
    let proxy = AnswerProxy::forwarding(&reg.addr());
    let (registry, r) = env_client(&proxy.addr());
    let dir = tempfile::tempdir().unwrap();
    let blobs = pushed.image.blobs();
    for (i, (blob, _)) in blobs.iter().enumerate() {
        assert!(registry.blob_exists(&r, &blob.digest).await.unwrap());
        let dest = dir.path().join(format!("blob-{i}"));
        registry.pull_blob_to_file(&r, blob, &dest).await.unwrap();
        let bytes = registry.pull_blob_bytes(&r, blob).await.unwrap();
        assert_eq!(Digest::of(&bytes), blob.digest);
    }
    // No request besides the blobs' own: no `/v2/` asked before each (a round trip per blob
    // on a distant registry).
    let requests = proxy.take_requests();
    assert_eq!(requests.len(), 3 * blobs.len(), "{requests:?}");
    assert!(
        requests
            .iter()
            .all(|(_, path)| path.contains("/blobs/sha256:")),
        "{requests:?}"
    );
}

#[tokio::test]
async fn a_push_asks_nothing_but_its_blobs_and_manifests() {
    let reg = TestRegistry::start();
    let proxy = AnswerProxy::forwarding(&reg.addr());
    let (registry, r) = env_client(&proxy.addr());
    let dir = tempfile::tempdir().unwrap();
    let image = build_image(dir.path(), &[("a.txt", b"a\n"), ("b.txt", b"b\n")]);
    let report = push(&registry, &r, &image, Some(&tag("v1"))).await;
    assert_eq!(report.blobs_uploaded, 3);
    // Per blob a HEAD, the POST that opens its upload and the PUT that closes it; then the
    // manifest by digest and by tag. Nothing else (no `/v2/` before each blob call).
    let requests = proxy.take_requests();
    let count = |method: &str, part: &str| {
        requests
            .iter()
            .filter(|(m, p)| m == method && p.contains(part))
            .count()
    };
    assert_eq!(count("HEAD", "/blobs/sha256:"), 3, "{requests:?}");
    assert_eq!(count("POST", "/blobs/uploads/"), 3, "{requests:?}");
    assert_eq!(count("PUT", "/blobs/uploads/"), 3, "{requests:?}");
    assert_eq!(count("PUT", "/manifests/"), 2, "{requests:?}");
    assert_eq!(requests.len(), 11, "{requests:?}");
    assert_eq!(
        tagged(&registry, &r, "v1").await.as_ref(),
        Some(&image.digest)
    );
}

#[tokio::test]
async fn a_layer_index_entry_already_in_place_is_not_written_again() {
    let reg = TestRegistry::start();
    let pushed = push_one_file(&reg, "kept.txt", b"a kept layer\n", Some("v1")).await;
    let layer = &pushed.image.layers[0].0;
    let entry = entry_for(layer);
    let paths = b"opt/venv/kept.txt\n";
    let proxy = AnswerProxy::forwarding(&reg.addr());
    let (registry, r) = env_client(&proxy.addr());
    registry.prepare_layer_entries(&r).await.unwrap();
    let first = registry.write_layer_entry(&r, &entry, Some(paths)).await;
    let written = EntryWrite::Written {
        bytes_uploaded: paths.len() as u64,
    };
    assert_eq!(first.unwrap(), written);
    proxy.take_requests();

    // The same entry again (the next push of an image with this layer): one HEAD, no write.
    let again = registry.write_layer_entry(&r, &entry, Some(paths)).await;
    assert_eq!(again.unwrap(), EntryWrite::Present);
    let requests = proxy.take_requests();
    assert!(
        requests.iter().all(|(method, _)| method == "HEAD"),
        "{requests:?}"
    );
    assert_eq!(requests.len(), 1, "{requests:?}");

    // Another path list for the same key is another entry: it replaces the one in place.
    let other_paths = b"opt/venv/kept.txt\nopt/venv/more.txt\n";
    let replaced = registry
        .write_layer_entry(&r, &entry, Some(other_paths))
        .await;
    let written = EntryWrite::Written {
        bytes_uploaded: other_paths.len() as u64,
    };
    assert_eq!(replaced.unwrap(), written);
    let found = registry.read_layer_entry(&r, &entry.key).await.unwrap();
    assert_eq!(
        found.and_then(|f| f.paths).map(|p| p.digest),
        Some(Digest::of(other_paths))
    );
}

#[tokio::test]
async fn a_missing_tag_or_repository_is_hinted_as_a_name_not_an_address() {
    let reg = TestRegistry::start();
    let pushed = push_one_file(&reg, "here.txt", b"here\n", Some("v1")).await;
    let missing_tag = pushed
        .registry
        .pull_manifest(&pushed.r, &ManifestRef::Tag(tag("absent")))
        .await
        .unwrap_err();
    let missing_repo = pushed
        .registry
        .pull_manifest(&repo(&reg.addr(), "nowhere"), &ManifestRef::Tag(tag("v1")))
        .await
        .unwrap_err();
    for err in [&missing_tag, &missing_repo] {
        assert_eq!(err.status(), Some(404), "{err:?}");
        assert!(
            err.hint().contains("no such repository, tag or digest"),
            "{err:?}"
        );
    }
    // Nothing listens on port 1: there the address is what to check.
    let down = client("127.0.0.1:1")
        .pull_manifest(&repo("127.0.0.1:1", "env"), &ManifestRef::Tag(tag("v1")))
        .await
        .unwrap_err();
    assert!(
        down.hint().contains("check the registry address"),
        "{down:?}"
    );
}
