//! Benchmark of registry GC against a real `docker-registry` on 127.0.0.1.
//!
//! For each N: a fresh registry, N tiny images (three shared fake layers and an own config)
//! each under its own tag, pushes recorded in strata.db (half of them 60 days old), then the
//! plan and the apply are timed, each next to a baseline measured in the same run against the
//! same registry with the same client:
//!
//! - plan: the tag list and a manifest HEAD of every tag, 8 at a time (what any plan must
//!   ask at least, to learn what each tag points at);
//! - apply: a manifest HEAD of as many manifests as the apply deleted, 4 at a time (the
//!   requests' round trips, without the registry's work of deleting).
//!
//! Prints ms per phase and per tag, the ratios to the baselines, the cost per 100 tags
//! against the smallest size run (1.00 = linear) and the least-squares slope (ms per 100
//! tags) over the sizes run.
//!
//! `cargo run --release -p strata-gc --example bench_registry_gc -- --tags 250,500,1000`
//! (`--tags` may be repeated; default 250, 500 and 1000). `--old K` makes only K images old
//! (spread evenly) instead of half: with K fixed, the apply time shows how the cost of one
//! delete grows with the number of tags in the repository.

use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures_util::{StreamExt, TryStreamExt};
use serde_json::json;
use strata_gc::registry::{apply_registry, plan_registry, ANNOTATION_SPEC};
use strata_gc::GcPolicy;
use strata_index::PushRecord;
use strata_index::{now, Index};
use strata_oci::{BlobDescriptor, Digest};
use strata_oci::{MEDIA_TYPE_CONFIG, MEDIA_TYPE_LAYER_GZIP, MEDIA_TYPE_MANIFEST};
use strata_registry::{
    push_image, ImageUpload, ManifestRef, PushOptions, Registry, RegistryRepo, Tag,
};

type Error = Box<dyn std::error::Error>;

const DAY: i64 = 86_400;
const NAMES: usize = 20;
const PUSH_CONCURRENCY: usize = 8;
/// As many requests in flight as the plan's (tag HEADs) and the apply's (deletes).
const PLAN_CONCURRENCY: usize = 8;
const APPLY_CONCURRENCY: usize = 4;

#[tokio::main]
async fn main() -> Result<(), Error> {
    let args = parse_args()?;
    println!("registry GC benchmark (docker-registry on 127.0.0.1, policy keep_days 14, keep_newest 2, {NAMES} names)");
    println!(
        "{:>6} {:>8} {:>8} {:>6} | {:>8} {:>8} {:>6} {:>7} | {:>11} {:>12} {:>6}",
        "tags",
        "base ms",
        "plan ms",
        "×base",
        "base ms",
        "apply ms",
        "×base",
        "deleted",
        "plan ms/tag",
        "apply ms/del",
        "push s"
    );
    let mut points = Vec::new();
    for &n in &args.sizes {
        let old = args.old.unwrap_or(n / 2).min(n);
        let run = run_one(n, old).await?;
        println!(
            "{:>6} {:>8.1} {:>8.1} {:>6.2} | {:>8.1} {:>8.1} {:>6.2} {:>7} | {:>11.3} {:>12.3} {:>6.1}",
            n,
            run.plan_base_ms,
            run.plan_ms,
            run.plan_ms / run.plan_base_ms,
            run.apply_base_ms,
            run.apply_ms,
            run.apply_ms / run.apply_base_ms,
            run.deleted,
            run.plan_ms / n as f64,
            run.apply_ms / run.deleted.max(1) as f64,
            run.push_s
        );
        points.push((n as f64, run));
    }
    print_scaling(&points);
    if points.len() >= 2 {
        let plan = slope(points.iter().map(|(n, r)| (*n, r.plan_ms)));
        let apply = slope(points.iter().map(|(n, r)| (*n, r.apply_ms)));
        let total = slope(points.iter().map(|(n, r)| (*n, r.plan_ms + r.apply_ms)));
        println!(
            "slope (least squares, ms per 100 tags): plan {:.1}, apply {:.1}, total {:.1}",
            plan * 100.0,
            apply * 100.0,
            total * 100.0
        );
    }
    Ok(())
}

struct Args {
    sizes: Vec<usize>,
    /// How many images are old; `None`: half.
    old: Option<usize>,
}

fn parse_args() -> Result<Args, Error> {
    let usage = "usage: --tags N[,N...] [--old K]";
    let mut parsed = Args {
        sizes: Vec::new(),
        old: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let value = args
            .next()
            .ok_or(format!("{arg} needs a value ({usage})"))?;
        match arg.as_str() {
            "--tags" => {
                for part in value.split(',') {
                    let n = part.trim().parse();
                    parsed
                        .sizes
                        .push(n.map_err(|e| format!("--tags {part:?}: {e}"))?);
                }
            }
            "--old" => {
                let k = value.parse().map_err(|e| format!("--old {value:?}: {e}"))?;
                parsed.old = Some(k);
            }
            _ => return Err(format!("unknown argument {arg:?} ({usage})").into()),
        }
    }
    if parsed.sizes.is_empty() {
        parsed.sizes = vec![250, 500, 1000];
    }
    Ok(parsed)
}

/// Least-squares slope of y over x.
fn slope(points: impl Iterator<Item = (f64, f64)> + Clone) -> f64 {
    let n = points.clone().count() as f64;
    let (sx, sy) = points
        .clone()
        .fold((0.0, 0.0), |(a, b), (x, y)| (a + x, b + y));
    let (mx, my) = (sx / n, sy / n);
    let (num, den) = points.fold((0.0, 0.0), |(num, den), (x, y)| {
        (num + (x - mx) * (y - my), den + (x - mx) * (x - mx))
    });
    if den == 0.0 {
        return 0.0;
    }
    num / den
}

/// Cost per 100 tags of each size against the smallest size of this run.
fn print_scaling(points: &[(f64, Run)]) {
    let Some((n0, first)) = points.iter().min_by(|a, b| a.0.total_cmp(&b.0)) else {
        return;
    };
    let per_100 = |ms: f64, n: f64| ms * 100.0 / n;
    let (plan0, apply0) = (per_100(first.plan_ms, *n0), per_100(first.apply_ms, *n0));
    println!("per 100 tags, against the smallest size ({n0} tags; 1.00 = linear):");
    println!(
        "{:>6} {:>13} {:>7} {:>14} {:>7}",
        "tags", "plan ms/100", "×first", "apply ms/100", "×first"
    );
    for (n, r) in points {
        let (plan, apply) = (per_100(r.plan_ms, *n), per_100(r.apply_ms, *n));
        println!(
            "{:>6} {:>13.1} {:>7.2} {:>14.1} {:>7.2}",
            n,
            plan,
            plan / plan0,
            apply,
            apply / apply0
        );
    }
}

struct Run {
    plan_base_ms: f64,
    plan_ms: f64,
    apply_base_ms: f64,
    apply_ms: f64,
    deleted: usize,
    push_s: f64,
}

/// Baseline of the plan: the tag list and a HEAD of every tag's manifest.
async fn plan_baseline(registry: &Registry, repo: &RegistryRepo) -> Result<f64, Error> {
    let started = Instant::now();
    let tags = registry.list_tags(repo).await?;
    let refs: Vec<ManifestRef> = tags
        .iter()
        .map(|t| Ok::<_, Error>(ManifestRef::Tag(t.parse()?)))
        .collect::<Result<_, _>>()?;
    heads(registry, repo, &refs, PLAN_CONCURRENCY).await?;
    Ok(started.elapsed().as_secs_f64() * 1000.0)
}

/// Baseline of the apply: a HEAD of each manifest the apply will delete.
async fn apply_baseline(
    registry: &Registry,
    repo: &RegistryRepo,
    digests: &[Digest],
) -> Result<f64, Error> {
    let refs: Vec<ManifestRef> = digests.iter().cloned().map(ManifestRef::Digest).collect();
    let started = Instant::now();
    heads(registry, repo, &refs, APPLY_CONCURRENCY).await?;
    Ok(started.elapsed().as_secs_f64() * 1000.0)
}

async fn heads(
    registry: &Registry,
    repo: &RegistryRepo,
    refs: &[ManifestRef],
    concurrency: usize,
) -> Result<(), Error> {
    let found: Vec<Option<Digest>> =
        futures_util::stream::iter(refs.iter().map(|r| registry.manifest_exists(repo, r)))
            .buffer_unordered(concurrency)
            .try_collect()
            .await?;
    if found.iter().any(Option::is_none) {
        return Err("a baseline HEAD found no manifest".into());
    }
    Ok(())
}

async fn run_one(n: usize, old: usize) -> Result<Run, Error> {
    let work = tempfile::tempdir()?;
    let server = RegistryProcess::start(work.path())?;
    let registry = Registry::new(&server.addr, false)?;
    let repo: RegistryRepo = format!("{}/bench/envs", server.addr).parse()?;
    let index = Index::open(&work.path().join("strata.db"))?;

    let started = Instant::now();
    let images = make_images(&work.path().join("blobs"), n)?;
    push_all(&registry, &repo, &images).await?;
    let push_s = started.elapsed().as_secs_f64();

    let now = now();
    let target = repo.to_string();
    for (i, image) in images.iter().enumerate() {
        // `old` images, spread evenly, are 60 days old; the others were pushed within the hour.
        let is_old = (i + 1) * old / n != i * old / n;
        let pushed_at = if is_old { now - 60 * DAY } else { now - 3600 } + i as i64;
        index.record_registry_push(
            &target,
            &PushRecord {
                manifest: image.digest.clone(),
                tag: Some(image.tag.to_string()),
                pushed_at,
                last_used_at: 0,
                name: format!("env{}", i % NAMES),
                spec: None,
            },
        )?;
    }

    let policy = GcPolicy {
        keep_days: 14,
        keep_newest: 2,
        ..GcPolicy::default()
    };
    let plan_base_ms = plan_baseline(&registry, &repo).await?;
    let started = Instant::now();
    let plan = plan_registry(&registry, &repo, &index, &policy, &HashSet::new(), now).await?;
    let plan_ms = started.elapsed().as_secs_f64() * 1000.0;
    if plan.counts.tags != n {
        return Err(format!("planned over {} tags, pushed {n}", plan.counts.tags).into());
    }
    let doomed: Vec<Digest> = plan
        .deleted
        .iter()
        .map(|d| d.manifest.digest.clone())
        .collect();
    let apply_base_ms = apply_baseline(&registry, &repo, &doomed).await?;
    let started = Instant::now();
    let report = apply_registry(&registry, &repo, &index, &plan).await?;
    let apply_ms = started.elapsed().as_secs_f64() * 1000.0;
    Ok(Run {
        plan_base_ms,
        plan_ms,
        apply_base_ms,
        apply_ms,
        deleted: report.counts.deleted,
        push_s,
    })
}

struct Image {
    tag: Tag,
    manifest: Vec<u8>,
    digest: Digest,
    blobs: Vec<(BlobDescriptor, PathBuf)>,
}

fn write_blob(
    dir: &Path,
    media_type: &str,
    bytes: &[u8],
) -> Result<(BlobDescriptor, PathBuf), Error> {
    let digest = Digest::of(bytes);
    let path = dir.join(digest.hex());
    std::fs::write(&path, bytes)?;
    let desc = BlobDescriptor {
        media_type: media_type.to_string(),
        digest,
        size: bytes.len() as u64,
    };
    Ok((desc, path))
}

/// N images annotated like strata's: three shared fake layers (the registry does not look
/// inside layers) and an own config.
fn make_images(dir: &Path, n: usize) -> Result<Vec<Image>, Error> {
    std::fs::create_dir_all(dir)?;
    let shared: Vec<(BlobDescriptor, PathBuf)> = (0..3)
        .map(|i| {
            write_blob(
                dir,
                MEDIA_TYPE_LAYER_GZIP,
                format!("shared layer {i}").as_bytes(),
            )
        })
        .collect::<Result<_, _>>()?;
    let descriptor =
        |d: &BlobDescriptor| json!({"mediaType": d.media_type, "digest": d.digest, "size": d.size});
    let mut images = Vec::with_capacity(n);
    for i in 0..n {
        let config = json!({
            "architecture": "amd64", "os": "linux", "config": {"Labels": {"i": i.to_string()}},
            "rootfs": {"type": "layers", "diff_ids": []},
        });
        let config = write_blob(dir, MEDIA_TYPE_CONFIG, &serde_json::to_vec(&config)?)?;
        let spec = Digest::of(format!("spec {i}").as_bytes());
        let manifest = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": MEDIA_TYPE_MANIFEST,
            "config": descriptor(&config.0),
            "layers": shared.iter().map(|(d, _)| descriptor(d)).collect::<Vec<_>>(),
            "annotations": {ANNOTATION_SPEC: spec.to_string()},
        }))?;
        let mut blobs = shared.clone();
        blobs.push(config);
        images.push(Image {
            tag: format!("env-{}", spec.short(16)).parse()?,
            digest: Digest::of(&manifest),
            manifest,
            blobs,
        });
    }
    Ok(images)
}

async fn push_all(registry: &Registry, repo: &RegistryRepo, images: &[Image]) -> Result<(), Error> {
    let options = &PushOptions::default();
    let pushes: Vec<_> = images
        .iter()
        .map(|image| {
            let upload = ImageUpload {
                manifest: &image.manifest,
                manifest_digest: &image.digest,
                media_type: MEDIA_TYPE_MANIFEST,
                tag: Some(&image.tag),
                blobs: &image.blobs,
            };
            async move { push_image(registry, repo, &upload, options).await }
        })
        .collect();
    futures_util::stream::iter(pushes)
        .buffer_unordered(PUSH_CONCURRENCY)
        .try_collect::<Vec<_>>()
        .await?;
    Ok(())
}

/// A `docker-registry serve` with its storage under `dir`; killed on drop.
struct RegistryProcess {
    child: Child,
    addr: String,
}

impl RegistryProcess {
    fn start(dir: &Path) -> Result<RegistryProcess, Error> {
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let storage = dir.join("storage");
        std::fs::create_dir_all(&storage)?;
        let config = dir.join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: true\n\
                 storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n\
                 http:\n  addr: 127.0.0.1:{port}\n",
                storage.display()
            ),
        )?;
        let log = std::fs::File::create(dir.join("registry.log"))?;
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log))
            .spawn()?;
        let mut process = RegistryProcess {
            child,
            addr: format!("127.0.0.1:{port}"),
        };
        let deadline = Instant::now() + Duration::from_secs(15);
        while !v2_answers(port) {
            if Instant::now() > deadline || process.child.try_wait()?.is_some() {
                let log = std::fs::read_to_string(dir.join("registry.log")).unwrap_or_default();
                return Err(format!("docker-registry did not start: {log}").into());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(process)
    }
}

impl Drop for RegistryProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn v2_answers(port: u16) -> bool {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(500)) else {
        return false;
    };
    let request = format!("GET /v2/ HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n\r\n");
    let mut head = [0u8; 12];
    stream.write_all(request.as_bytes()).is_ok()
        && stream.read_exact(&mut head).is_ok()
        && head.ends_with(b" 200")
}
