//! Local GC benchmark: a synthetic store of N images over M tiny blobs (each image: a config,
//! ~5 layers drawn from a shared pool, its manifest; index rows with varied last use so the
//! policy prunes about half), timing `plan` and `sweep` separately.
//!
//! ```text
//! cargo run --release -p strata-cache --example bench_gc                      # N = 1000, 5000, 10000; M = 5N
//! cargo run --release -p strata-cache --example bench_gc -- --images 2000 --blobs 10000
//! cargo run --release -p strata-cache --example bench_gc -- --images 1000,5000,10000
//! ```

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use strata_gc::local;
use strata_gc::GcPolicy;
use strata_index::index::{now, Index};
use strata_oci::descriptor::{BlobDescriptor, MEDIA_TYPE_CONFIG, MEDIA_TYPE_LAYER_GZIP};
use strata_oci::layout::{Store, REF_NAME};
use strata_oci::manifest::{Descriptor, Manifest};
use strata_oci::Digest;

const DAY: i64 = 86_400;
const LAYERS_PER_IMAGE: usize = 5;
const IMAGES_PER_NAME: usize = 20;

type BoxError = Box<dyn std::error::Error>;

struct Row {
    images: usize,
    blobs: usize,
    plan_ms: f64,
    sweep_ms: f64,
    pruned: usize,
    deleted: u64,
    left_after: usize,
}

fn main() -> Result<(), BoxError> {
    let (images, blobs) = parse_args()?;
    println!(
        "{:>7} {:>7} {:>9} {:>11} {:>9} {:>11} {:>7} {:>8} {:>6}",
        "images",
        "blobs",
        "plan ms",
        "plan µs/img",
        "sweep ms",
        "sweep µs/img",
        "pruned",
        "deleted",
        "rerun"
    );
    let mut rows = Vec::new();
    for (i, &n) in images.iter().enumerate() {
        let m = blobs.get(i).copied().unwrap_or(5 * n);
        let row = run(n, m)?;
        println!(
            "{:>7} {:>7} {:>9.1} {:>11.1} {:>9.1} {:>11.1} {:>7} {:>8} {:>6}",
            row.images,
            row.blobs,
            row.plan_ms,
            row.plan_ms * 1000.0 / row.images as f64,
            row.sweep_ms,
            row.sweep_ms * 1000.0 / row.images as f64,
            row.pruned,
            row.deleted,
            row.left_after,
        );
        rows.push(row);
    }
    if rows.len() >= 2 {
        let xs: Vec<f64> = rows.iter().map(|r| r.images as f64 / 1000.0).collect();
        let plan: Vec<f64> = rows.iter().map(|r| r.plan_ms).collect();
        let sweep: Vec<f64> = rows.iter().map(|r| r.sweep_ms).collect();
        println!(
            "slope (least squares): plan {:.1} ms per 1000 images, sweep {:.1} ms per 1000 images",
            slope(&xs, &plan),
            slope(&xs, &sweep)
        );
    }
    Ok(())
}

fn parse_args() -> Result<(Vec<usize>, Vec<usize>), BoxError> {
    let mut images = vec![1000, 5000, 10000];
    let mut blobs = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let value = args.next().ok_or(format!("{arg} needs a value"))?;
        let list = value
            .split(',')
            .map(|v| v.trim().parse::<usize>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("{arg} {value}: {e}"))?;
        match arg.as_str() {
            "--images" => images = list,
            "--blobs" => blobs = list,
            _ => {
                return Err(
                    format!("unknown option {arg} (use --images N[,N..] --blobs M[,M..])").into(),
                )
            }
        }
    }
    Ok((images, blobs))
}

fn run(n: usize, m: usize) -> Result<Row, BoxError> {
    let dir = tempfile::tempdir()?;
    let store = Store::open(&dir.path().join("oci"), &dir.path().join("tmp"))?;
    let index = Index::open(&dir.path().join("strata.db"))?;
    // Judge the store two hours from now so that the blobs just written are past the grace.
    let at = now() + 2 * 3600;
    synthesize(&store, &dir.path().join("strata.db"), n, m, at)?;
    let policy = GcPolicy {
        keep_days: 14,
        keep_newest: 1,
        keep_tags: Vec::new(),
        grace: Duration::from_secs(3600),
    };

    let started = Instant::now();
    let plan = local::plan(&store, &index, &policy, at)?;
    let plan_ms = started.elapsed().as_secs_f64() * 1000.0;
    let started = Instant::now();
    let report = local::sweep(&store, &index, &plan)?;
    let sweep_ms = started.elapsed().as_secs_f64() * 1000.0;
    let rerun = local::plan(&store, &index, &policy, at)?;
    Ok(Row {
        images: n,
        blobs: m,
        plan_ms,
        sweep_ms,
        pruned: report.deleted_images.len(),
        deleted: report.deleted_blobs,
        left_after: rerun.blobs.len() + rerun.pruned.len(),
    })
}

/// A deterministic xorshift generator: the same store for the same N and M.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n.max(1) as u64) as usize
    }
}

/// Writes the blobs straight into the layout (no fsync: setup is not what is measured), then
/// `index.json` and the index rows in one go.
fn synthesize(store: &Store, db: &Path, n: usize, m: usize, at: i64) -> Result<(), BoxError> {
    let pool_size = m.saturating_sub(2 * n).max(LAYERS_PER_IMAGE);
    let mut pool = Vec::with_capacity(pool_size);
    for i in 0..pool_size {
        let bytes = format!("layer {i}").into_bytes();
        pool.push(put(store, &bytes, MEDIA_TYPE_LAYER_GZIP)?);
    }
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut entries = Vec::with_capacity(n);
    let conn = rusqlite::Connection::open(db)?;
    let tx = conn.unchecked_transaction()?;
    for i in 0..n {
        let layers: Vec<Descriptor> = (0..LAYERS_PER_IMAGE)
            .map(|_| pool[rng.below(pool.len())].clone())
            .collect();
        let config = put(
            store,
            format!(r#"{{"image":{i},"os":"linux","architecture":"amd64"}}"#).as_bytes(),
            MEDIA_TYPE_CONFIG,
        )?;
        let manifest = Manifest::new(config, layers);
        let manifest_bytes = manifest.to_bytes();
        let desc = put(store, &manifest_bytes, manifest.media_type())?;
        let tag = format!("env-{i}");
        let mut annotations = BTreeMap::new();
        annotations.insert(REF_NAME.to_string(), tag.clone());
        entries.push(serde_json::json!({
            "mediaType": desc.media_type, "digest": desc.digest, "size": desc.size,
            "annotations": annotations,
        }));
        // Last used 0–27 days ago: about half within the 14 kept days.
        let last_used = at - rng.below(28) as i64 * DAY - rng.below(DAY as usize) as i64;
        tx.execute(
            "INSERT INTO env_index (spec_digest, lock_digest, base_digest, manifest_digest, tag,
               size, spec_json, created_at, last_used_at, name)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, '{}', ?7, ?7, ?8)",
            rusqlite::params![
                Digest::of(format!("spec {i}").as_bytes()).to_string(),
                Digest::of(format!("lock {i}").as_bytes()).to_string(),
                Digest::of(b"base").to_string(),
                desc.digest.to_string(),
                tag,
                1000,
                last_used,
                format!("name-{}", i / IMAGES_PER_NAME),
            ],
        )?;
        tx.execute(
            "INSERT INTO lock_index (lock_digest, base_digest, manifest_digest, lock_json,
               created_at) VALUES (?1, ?2, ?3, '{}', ?4)",
            rusqlite::params![
                Digest::of(format!("lock {i}").as_bytes()).to_string(),
                Digest::of(b"base").to_string(),
                desc.digest.to_string(),
                last_used,
            ],
        )?;
    }
    tx.commit()?;
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": entries,
    });
    fs::write(store.root().join("index.json"), serde_json::to_vec(&index)?)?;
    Ok(())
}

fn put(store: &Store, bytes: &[u8], media_type: &str) -> Result<Descriptor, BoxError> {
    let digest = Digest::of(bytes);
    fs::write(store.blob_path(&digest), bytes)?;
    Ok(Descriptor::new(&BlobDescriptor {
        media_type: media_type.to_string(),
        digest,
        size: bytes.len() as u64,
    }))
}

fn slope(xs: &[f64], ys: &[f64]) -> f64 {
    let n = xs.len() as f64;
    let (mx, my) = (xs.iter().sum::<f64>() / n, ys.iter().sum::<f64>() / n);
    let num: f64 = xs.iter().zip(ys).map(|(x, y)| (x - mx) * (y - my)).sum();
    let den: f64 = xs.iter().map(|x| (x - mx) * (x - mx)).sum();
    if den == 0.0 {
        0.0
    } else {
        num / den
    }
}
