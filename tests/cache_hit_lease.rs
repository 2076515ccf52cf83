//! A cache hit holds a lease on its image before it answers, as a lock hit does: a GC that
//! sweeps (in another process, grace 0, keeping nothing by policy) between the hit's lookup
//! and its answer cannot delete the image the hit returns.

mod common;

use std::sync::Mutex;
use std::time::Duration;

use common::*;
use serde_json::Value;
use strata_build::BaseRef;
use strata_build::Home;
use strata_build::Progress;
use strata_build::DEFAULT_LAYER_LIMIT;
use strata_build::{build, BuildOptions, CacheOutcome};
use strata_oci::ManifestDocument;

/// Runs `strata gc` when the build reaches the "cache hit" stage (checked, not answered).
struct GcDuringHit<'a> {
    world: &'a World,
    report: Mutex<Option<Value>>,
}

impl Progress for GcDuringHit<'_> {
    fn stage(&self, name: &str) {
        if name != "cache hit" {
            return;
        }
        let out = self.world.strata(&[
            "gc",
            "--json",
            "--keep-days",
            "0",
            "--keep-newest",
            "0",
            "--grace",
            "0s",
        ]);
        assert!(out.status.success(), "gc failed: {}", stderr(&out));
        *self.report.lock().unwrap() = Some(serde_json::from_slice(&out.stdout).unwrap());
    }
}

#[test]
fn a_sweep_racing_a_cache_hit_cannot_delete_the_image_it_returns() {
    let world = World::new();
    let requirements = requirements("basic.txt");
    let first = world.build_ok(&requirements, &[]);
    assert_eq!(first["cache"], "miss");
    // Past the zero grace: every blob is old enough to be swept.
    std::thread::sleep(Duration::from_millis(1100));

    let home = Home::open(&world.home).unwrap();
    let options = BuildOptions {
        requirements: requirements.clone(),
        selection: Default::default(),
        base: base_ref().parse::<BaseRef>().unwrap(),
        python: None,
        platform: "linux/amd64".parse().unwrap(),
        find_links: vec![world.wheels.display().to_string()],
        no_index: true,
        jobs: 2,
        name: None,
        layer_limit: DEFAULT_LAYER_LIMIT,
        compression: Default::default(),
        compile: false,
        registry_cache: Default::default(),
        refresh: false,
    };
    let progress = GcDuringHit {
        world: &world,
        report: Mutex::new(None),
    };
    let built = build(&home, &options, &progress).unwrap();
    assert_eq!(built.cache, CacheOutcome::Hit);
    let report = progress
        .report
        .lock()
        .unwrap()
        .take()
        .expect("the sweep ran during the hit");

    // The image the hit returned is whole and tagged.
    let tag = home.store.resolve_tag(&built.tag).unwrap();
    assert_eq!(
        tag.map(|e| e.digest),
        Some(built.digest.clone()),
        "the hit's tag is gone: {report:#}"
    );
    assert!(
        home.store.has_blob(&built.digest),
        "the hit returned a deleted manifest: {report:#}"
    );
    let bytes = home.store.read_blob(&built.digest).unwrap();
    let Ok(ManifestDocument::Image(manifest)) = ManifestDocument::parse(&bytes) else {
        panic!("not an image manifest");
    };
    for blob in manifest.blobs() {
        home.store
            .verify_blob(&blob.digest)
            .unwrap_or_else(|e| panic!("{e}: {report:#}"));
    }
    assert_eq!(
        report["deleted_images"],
        serde_json::json!([]),
        "{report:#}"
    );
    // (Blobs of nothing kept, such as the base image's own manifest, may go.)
    // The lease went with the answer: nothing of the hit is left held.
    let leases = home.index.leases().unwrap();
    assert!(
        home.index.live_lease_refs().unwrap().is_empty(),
        "{leases:?}"
    );
}
