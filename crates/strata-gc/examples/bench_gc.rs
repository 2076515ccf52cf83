//! Local GC benchmark over a store written the way builds write it: every blob goes through
//! the store's API (`Store::writer`, `BlobWriter::finish`, `Store::commit`: hashed, fsynced,
//! renamed in), with real sizes: layers drawn from a pool where most are small and some are
//! MB-sized, a JSON config and a manifest per image, index rows with varied last use so that
//! the policy prunes about half. Times `plan` and `sweep` separately, each next to a baseline
//! measured in the same run on the same store:
//!
//! - walk: a plain directory walk of the blobs (`read_dir` + `stat` of each), the least any
//!   plan must do;
//! - unlink: removing files of the sizes the sweep deleted (written and fsynced first, not
//!   timed), the least any sweep must do.
//!
//! and the cost per 1000 images against the smallest size run (1.00 = linear).
//!
//! ```text
//! cargo run --release -p strata-gc --example bench_gc                       # N = 250, 500, 1000
//! cargo run --release -p strata-gc --example bench_gc -- --images 100,200,400
//! ```
//!
//! With the defaults the largest store holds about 0.7 GB and the whole run writes about
//! 1.5 GB (each store is removed after its run) in about a minute and a half, most of it the
//! setup's fsyncs (two per blob, as in a build).

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use strata_gc::local;
use strata_gc::GcPolicy;
use strata_index::{now, Index};
use strata_oci::Digest;
use strata_oci::{BlobDescriptor, MEDIA_TYPE_CONFIG, MEDIA_TYPE_LAYER_GZIP};
use strata_oci::{Descriptor, Manifest};
use strata_oci::{Store, REF_NAME};

const DAY: i64 = 86_400;
const LAYERS_PER_IMAGE: usize = 6;
const IMAGES_PER_NAME: usize = 20;
const KIB: usize = 1 << 10;
const MIB: usize = 1 << 20;

type BoxError = Box<dyn std::error::Error>;

struct Row {
    images: usize,
    blobs: usize,
    bytes: u64,
    setup_s: f64,
    walk_ms: f64,
    plan_ms: f64,
    unlink_ms: f64,
    sweep_ms: f64,
    pruned: usize,
    deleted: u64,
    freed: u64,
    left_after: usize,
}

fn main() -> Result<(), BoxError> {
    let images = parse_args()?;
    println!(
        "local GC benchmark: {LAYERS_PER_IMAGE} layers per image from a pool of 1.5 × images \
         (60% 1–64 KiB, 30% 64 KiB–1 MiB, 10% 1–8 MiB), policy keep_days 14, keep_newest 1"
    );
    println!(
        "{:>6} {:>6} {:>7} {:>7} | {:>8} {:>8} {:>6} | {:>9} {:>8} {:>6} | {:>6} {:>6} {:>7} {:>5}",
        "images",
        "blobs",
        "GB",
        "setup s",
        "walk ms",
        "plan ms",
        "×walk",
        "unlink ms",
        "sweep ms",
        "×unl",
        "pruned",
        "deleted",
        "GB freed",
        "rerun"
    );
    let mut rows = Vec::new();
    for &n in &images {
        let row = run(n)?;
        println!(
            "{:>6} {:>6} {:>7.2} {:>7.1} | {:>8.1} {:>8.1} {:>6.1} | {:>9.1} {:>8.1} {:>6.1} | {:>6} {:>7} {:>8.2} {:>5}",
            row.images,
            row.blobs,
            gb(row.bytes),
            row.setup_s,
            row.walk_ms,
            row.plan_ms,
            row.plan_ms / row.walk_ms,
            row.unlink_ms,
            row.sweep_ms,
            row.sweep_ms / row.unlink_ms,
            row.pruned,
            row.deleted,
            gb(row.freed),
            row.left_after,
        );
        rows.push(row);
    }
    print_scaling(&rows);
    Ok(())
}

/// Cost per 1000 images of each size against the smallest size of this run.
fn print_scaling(rows: &[Row]) {
    let Some(smallest) = rows.iter().min_by_key(|r| r.images) else {
        return;
    };
    let per_1000 = |ms: f64, r: &Row| ms * 1000.0 / r.images as f64;
    let (plan0, sweep0) = (
        per_1000(smallest.plan_ms, smallest),
        per_1000(smallest.sweep_ms, smallest),
    );
    println!(
        "per 1000 images, against the smallest size ({} images; 1.00 = linear):",
        smallest.images
    );
    println!(
        "{:>6} {:>14} {:>7} {:>15} {:>7}",
        "images", "plan ms/1000", "×first", "sweep ms/1000", "×first"
    );
    for r in rows {
        let (plan, sweep) = (per_1000(r.plan_ms, r), per_1000(r.sweep_ms, r));
        println!(
            "{:>6} {:>14.1} {:>7.2} {:>15.1} {:>7.2}",
            r.images,
            plan,
            plan / plan0,
            sweep,
            sweep / sweep0
        );
    }
}

fn gb(bytes: u64) -> f64 {
    bytes as f64 / 1e9
}

fn parse_args() -> Result<Vec<usize>, BoxError> {
    let mut images = vec![250, 500, 1000];
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        if arg != "--images" {
            return Err(format!("unknown option {arg} (use --images N[,N..])").into());
        }
        let value = args.next().ok_or("--images needs a value")?;
        images = value
            .split(',')
            .map(|v| v.trim().parse::<usize>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("--images {value}: {e}"))?;
    }
    Ok(images)
}

fn run(n: usize) -> Result<Row, BoxError> {
    let dir = tempfile::tempdir()?;
    let store = Store::open(&dir.path().join("oci"), &dir.path().join("tmp"))?;
    let index = Index::open(&dir.path().join("strata.db"))?;
    // Judge the store two hours from now so that the blobs just written are past the grace.
    let at = now() + 2 * 3600;
    let started = Instant::now();
    synthesize(&store, &dir.path().join("strata.db"), n, at)?;
    let setup_s = started.elapsed().as_secs_f64();
    let policy = GcPolicy {
        keep_days: 14,
        keep_newest: 1,
        keep_tags: Vec::new(),
        grace: Duration::from_secs(3600),
    };

    let started = Instant::now();
    let (blobs, bytes) = walk_blobs(&store)?;
    let walk_ms = ms_since(started);
    let started = Instant::now();
    let plan = local::plan(&store, &index, &policy, at)?;
    let plan_ms = ms_since(started);
    let started = Instant::now();
    let report = local::sweep(&store, &index, &plan)?;
    let sweep_ms = ms_since(started);
    let sizes: Vec<u64> = plan.blobs.iter().map(|b| b.size).collect();
    let filler = filler(&mut Rng(0x2545_f491_4f6c_dd1d));
    let unlink_ms = unlink_baseline(&dir.path().join("unlink"), &sizes, &filler)?;
    let rerun = local::plan(&store, &index, &policy, at)?;
    Ok(Row {
        images: n,
        blobs,
        bytes,
        setup_s,
        walk_ms,
        plan_ms,
        unlink_ms,
        sweep_ms,
        pruned: report.deleted_images.len(),
        deleted: report.deleted_blobs,
        freed: report.deleted_blob_bytes,
        left_after: rerun.blobs.len() + rerun.pruned.len(),
    })
}

fn ms_since(started: Instant) -> f64 {
    started.elapsed().as_secs_f64() * 1000.0
}

/// Baseline of the plan: every blob listed and stat'ed, nothing else.
fn walk_blobs(store: &Store) -> Result<(usize, u64), BoxError> {
    let (mut count, mut bytes) = (0, 0);
    for entry in fs::read_dir(store.root().join("blobs").join("sha256"))? {
        bytes += entry?.metadata()?.len();
        count += 1;
    }
    Ok((count, bytes))
}

/// Baseline of the sweep: the time to remove files of the sizes the sweep deleted, from one
/// directory of the same filesystem (written and fsynced first, untimed, like the blobs).
fn unlink_baseline(dir: &Path, sizes: &[u64], filler: &[u8]) -> Result<f64, BoxError> {
    fs::create_dir_all(dir)?;
    let mut paths = Vec::with_capacity(sizes.len());
    for (i, &size) in sizes.iter().enumerate() {
        let path = dir.join(format!("{i:08}"));
        let mut file = fs::File::create(&path)?;
        let mut left = size as usize;
        while left > 0 {
            let n = left.min(filler.len());
            file.write_all(&filler[..n])?;
            left -= n;
        }
        file.sync_all()?;
        paths.push(path);
    }
    let started = Instant::now();
    for path in &paths {
        fs::remove_file(path)?;
    }
    Ok(ms_since(started))
}

/// A deterministic xorshift generator: the same store for the same N.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    /// Log-uniform in `[lo, hi)`.
    fn log_uniform(&mut self, lo: usize, hi: usize) -> usize {
        let u = self.below(1 << 20) as f64 / (1 << 20) as f64;
        (lo as f64 * (hi as f64 / lo as f64).powf(u)) as usize
    }

    /// A layer size: many small, some MB-sized (like wheels: most pure Python, a few with
    /// native libraries).
    fn layer_size(&mut self) -> usize {
        match self.below(100) {
            0..60 => self.log_uniform(KIB, 64 * KIB),
            60..90 => self.log_uniform(64 * KIB, MIB),
            _ => self.log_uniform(MIB, 8 * MIB),
        }
    }
}

/// Incompressible filler, shared by all blobs (each blob starts with its own header, so
/// every digest differs).
fn filler(rng: &mut Rng) -> Vec<u8> {
    (0..(8 * MIB / 8))
        .flat_map(|_| rng.next().to_le_bytes())
        .collect()
}

/// Writes one blob through the store, as a build writes a layer: `header`, then `size`
/// bytes of filler (from `offset` on, wrapping).
fn put_blob(
    store: &Store,
    header: &[u8],
    size: usize,
    filler: &[u8],
    offset: usize,
    media_type: &str,
) -> Result<Descriptor, BoxError> {
    let mut writer = store.writer()?;
    writer.write_all(header)?;
    let mut left = size.saturating_sub(header.len());
    let mut at = offset % filler.len();
    while left > 0 {
        let n = left.min(filler.len() - at).min(MIB);
        writer.write_all(&filler[at..at + n])?;
        left -= n;
        at = (at + n) % filler.len();
    }
    let staged = writer.finish()?;
    let size = staged.size;
    let digest = store.commit(staged)?;
    Ok(Descriptor::new(&BlobDescriptor {
        media_type: media_type.to_string(),
        digest,
        size,
    }))
}

/// The store of N images. Blobs go through the store's API; the tags are written as one
/// `index.json` and the index rows in one transaction, because tagging image by image
/// rewrites the whole `index.json` each time (quadratic setup that measures nothing of GC).
fn synthesize(store: &Store, db: &Path, n: usize, at: i64) -> Result<(), BoxError> {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let filler = filler(&mut rng);
    let pool_size = (n * 3 / 2).max(LAYERS_PER_IMAGE);
    let mut pool = Vec::with_capacity(pool_size);
    for i in 0..pool_size {
        let size = rng.layer_size();
        let header = format!("layer {i}\n");
        let offset = rng.below(filler.len());
        pool.push(put_blob(
            store,
            header.as_bytes(),
            size,
            &filler,
            offset,
            MEDIA_TYPE_LAYER_GZIP,
        )?);
    }
    let mut entries = Vec::with_capacity(n);
    let conn = rusqlite::Connection::open(db)?;
    let tx = conn.unchecked_transaction()?;
    for i in 0..n {
        let layers = pick_layers(&mut rng, &pool);
        let config = serde_json::json!({
            "architecture": "amd64", "os": "linux",
            "config": {"Env": ["PATH=/opt/venv/bin:/usr/bin"], "Labels": {"image": i.to_string()}},
            "rootfs": {"type": "layers", "diff_ids": layers.iter().map(|l| l.digest.to_string()).collect::<Vec<_>>()},
        });
        let config = serde_json::to_vec(&config)?;
        let config = put_blob(store, &config, 0, &filler, 0, MEDIA_TYPE_CONFIG)?;
        let manifest = Manifest::new(config, layers);
        let manifest_bytes = manifest.to_bytes();
        let desc = put_blob(store, &manifest_bytes, 0, &filler, 0, manifest.media_type())?;
        let tag = format!("env-{i}");
        let mut annotations = BTreeMap::new();
        annotations.insert(REF_NAME.to_string(), tag.clone());
        entries.push(serde_json::json!({
            "mediaType": desc.media_type, "digest": desc.digest, "size": desc.size,
            "annotations": annotations,
        }));
        // Last used 0–27 days ago: about half within the 14 kept days.
        let last_used = at - rng.below(28) as i64 * DAY - rng.below(DAY as usize) as i64;
        insert_rows(&tx, i, &desc.digest, &tag, last_used)?;
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

/// An image's layers: distinct, skewed towards the start of the pool (a few layers, like a
/// popular wheel, are in many images; most are in a few).
fn pick_layers(rng: &mut Rng, pool: &[Descriptor]) -> Vec<Descriptor> {
    let mut picked: Vec<Descriptor> = Vec::with_capacity(LAYERS_PER_IMAGE);
    while picked.len() < LAYERS_PER_IMAGE.min(pool.len()) {
        let bound = rng.below(pool.len()) + 1;
        let layer = &pool[rng.below(bound)];
        if !picked.iter().any(|p| p.digest == layer.digest) {
            picked.push(layer.clone());
        }
    }
    picked
}

fn insert_rows(
    tx: &rusqlite::Transaction,
    i: usize,
    manifest: &Digest,
    tag: &str,
    last_used: i64,
) -> Result<(), BoxError> {
    let lock = Digest::of(format!("lock {i}").as_bytes()).to_string();
    let base = Digest::of(b"base").to_string();
    tx.execute(
        "INSERT INTO env_index (spec_digest, lock_digest, base_digest, manifest_digest, tag,
           size, spec_json, created_at, last_used_at, name)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, '{}', ?7, ?7, ?8)",
        rusqlite::params![
            Digest::of(format!("spec {i}").as_bytes()).to_string(),
            lock,
            base,
            manifest.to_string(),
            tag,
            1000,
            last_used,
            format!("name-{}", i / IMAGES_PER_NAME),
        ],
    )?;
    tx.execute(
        "INSERT INTO lock_index (lock_digest, base_digest, manifest_digest, lock_json,
           created_at) VALUES (?1, ?2, ?3, '{}', ?4)",
        rusqlite::params![lock, base, manifest.to_string(), last_used],
    )?;
    Ok(())
}
