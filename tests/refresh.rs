//! A spec with ranges is resolved once and answered from the cache; `strata build --refresh`
//! resolves it again: a newer lock builds a new image under the same spec tag, and the old
//! image stays in the store, untagged, until GC collects it.

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use common::*;
use serde_json::Value;

/// A copy of `wheels` without the files whose names start with `skip`.
fn wheels_without(wheels: &Path, skip: &str, into: &Path) -> PathBuf {
    fs::create_dir_all(into).unwrap();
    for entry in fs::read_dir(wheels).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.starts_with(skip) {
            fs::copy(entry.path(), into.join(&name)).unwrap();
        }
    }
    into.to_path_buf()
}

fn json(out: &std::process::Output) -> Value {
    assert!(out.status.success(), "{}", stderr(out));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The packages of a build's layers, as `name==version`.
fn packages(built: &Value) -> Vec<String> {
    built["layers"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|l| l["packages"].as_array().unwrap().iter())
        .map(|p| p.as_str().unwrap().to_string())
        .collect()
}

fn blob_exists(world: &World, digest: &str) -> bool {
    let hex = digest.strip_prefix("sha256:").unwrap();
    world.oci().join("blobs/sha256").join(hex).exists()
}

#[test]
fn refresh_resolves_again_and_the_old_image_is_left_to_gc() {
    let mut world = World::new();
    let both = world.wheels.clone();
    let only_v1 = wheels_without(&both, "alpha-1.1.0", &world.dir.path().join("wheels-v1"));
    let req = world.dir.path().join("ranges.txt");
    fs::write(&req, "alpha>=1.0\n").unwrap();

    // Only alpha 1.0.0 exists: the range resolves to it.
    world.wheels = only_v1;
    let first = world.build_ok(&req, &[]);
    assert_eq!(first["cache"], "miss");
    assert!(
        packages(&first).iter().any(|p| p.contains("1.0.0")),
        "{first}"
    );

    // alpha 1.1.0 appears: without --refresh the cache answers with the first resolution.
    world.wheels = both;
    let second = world.build_ok(&req, &[]);
    assert_eq!(second["cache"], "hit");
    assert_eq!(second["digest"], first["digest"]);

    // `explain` and `images` say when the spec was resolved.
    let base = base_ref();
    let wheels = world.wheels.display().to_string();
    let req_arg = req.display().to_string();
    let explain_args = [
        "explain",
        "-r",
        &req_arg,
        "--base",
        &base,
        "-f",
        &wheels,
        "--no-index",
    ];
    let out = world.strata(&explain_args);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        text.contains("resolved 20") && text.contains("--refresh"),
        "explain does not say when: {text}"
    );
    let mut json_args = explain_args.to_vec();
    json_args.push("--json");
    let explained = json(&world.strata(&json_args));
    let resolved_first = explained["hit"]["resolved_at"].as_i64().unwrap();
    assert!(resolved_first > 1_700_000_000, "{explained}");
    let images = json(&world.strata(&["images", "--json"]));
    assert_eq!(images["images"][0]["resolved_at"], resolved_first);
    let out = world.strata(&["images"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("RESOLVED"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );

    // --refresh resolves again: the newer lock is a new image under the same tag.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let third = world.build_ok(&req, &["--refresh"]);
    assert_eq!(third["cache"], "miss", "{third}");
    assert_ne!(third["digest"], first["digest"]);
    assert_ne!(third["lock_digest"], first["lock_digest"]);
    assert_eq!(third["tag"], first["tag"]);
    assert!(
        packages(&third).iter().any(|p| p.contains("1.1.0")),
        "{third}"
    );
    let images = json(&world.strata(&["images", "--json"]));
    let listed = images["images"].as_array().unwrap();
    assert_eq!(listed.len(), 1, "{images}");
    assert_eq!(listed[0]["digest"], third["digest"]);
    assert!(listed[0]["resolved_at"].as_i64().unwrap() > resolved_first);
    // The old image is untagged but still in the store.
    let old = first["digest"].as_str().unwrap();
    assert!(blob_exists(&world, old), "the old image went before GC");

    // A refresh that finds the same lock is a lock hit: the same image.
    let fourth = world.build_ok(&req, &["--refresh"]);
    assert_eq!(fourth["cache"], "lock-hit");
    assert_eq!(fourth["digest"], third["digest"]);
    // And without --refresh the new image answers.
    let fifth = world.build_ok(&req, &[]);
    assert_eq!(fifth["cache"], "hit");
    assert_eq!(fifth["digest"], third["digest"]);

    // GC collects the old image and keeps the new one.
    let gc = json(&world.strata(&["gc", "--json", "--grace", "0s"]));
    assert!(!blob_exists(&world, old), "gc kept the old image: {gc}");
    assert!(blob_exists(&world, third["digest"].as_str().unwrap()));
}
