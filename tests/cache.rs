//! The local cache: images and their sizes, inspect, explain, push/pull between stores and
//! registries, and corrupted blobs detected and repaired.

mod common;
#[path = "../crates/strata-registry/tests/support/registry.rs"]
mod registry;

use std::fs;
use std::process::Command;

use common::*;
use registry::TestRegistry;
use serde_json::Value;

fn json(out: &std::process::Output) -> Value {
    assert!(out.status.success(), "{}", stderr(out));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The store path of the blob of the layer that installs `package`.
fn layer_of(built: &Value, package: &str) -> String {
    built["layers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| {
            l["packages"]
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p.as_str().unwrap().starts_with(package))
        })
        .map(|l| l["digest"].as_str().unwrap().to_string())
        .unwrap()
}

#[test]
fn images_count_shared_layers_once_and_inspect_names_sharers() {
    let world = World::new();
    let a = world.build_ok(&requirements("shared-a.txt"), &[]);
    let b = world.build_ok(&requirements("shared-b.txt"), &[]);
    let images = json(&world.strata(&["images", "--json"]));
    let list = images["images"].as_array().unwrap();
    assert_eq!(list.len(), 2);
    let size = |v: &Value| v["size"].as_u64().unwrap();
    let exclusive: u64 = list
        .iter()
        .map(|i| i["exclusive_size"].as_u64().unwrap())
        .sum();
    let unique = images["unique_bytes"].as_u64().unwrap();
    let naive = images["naive_bytes"].as_u64().unwrap();
    assert_eq!(naive, list.iter().map(size).sum::<u64>());
    // Shared blobs (base layer, alpha, beta, …) are counted once.
    assert!(unique < naive, "{unique} !< {naive}");
    assert!(exclusive < unique);
    let inspect = json(&world.strata(&["inspect", a["tag"].as_str().unwrap(), "--json"]));
    let alpha = layer_of(&a, "alpha==");
    let layer = inspect["layers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["digest"] == alpha.as_str())
        .unwrap();
    assert_eq!(layer["shared_with"], serde_json::json!([b["tag"]]));
    let nsa = layer_of(&a, "nsa==");
    let layer = inspect["layers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["digest"] == nsa.as_str())
        .unwrap();
    assert_eq!(layer["shared_with"], serde_json::json!([]));
}

#[test]
fn explain_names_the_nearest_environment_and_the_differences() {
    let world = World::new();
    let first = world.build_ok(&requirements("basic.txt"), &[]);
    let out = world.build(&requirements("changed-one.txt"), &["--explain"]);
    let built = json(&out);
    let explain = &built["explain"];
    assert_eq!(explain["nearest"]["tag"], first["tag"]);
    assert_eq!(
        explain["differences"],
        serde_json::json!([{"kind": "changed", "name": "alpha", "cached": "alpha==1.0.0", "now": "alpha==1.1.0"}])
    );
    // A hit says which entry it hit.
    let again = json(&world.build(&requirements("basic.txt"), &["--explain"]));
    assert_eq!(again["explain"]["hit"]["tag"], first["tag"]);
    // `strata explain` says the same in words, without building.
    let req = requirements("shared-a.txt");
    let wheels = world.wheels.display().to_string();
    let out = world.strata(&[
        "explain",
        "-r",
        req.to_str().unwrap(),
        "--base",
        &base_ref(),
        "-f",
        &wheels,
        "--no-index",
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(text.contains("cache miss"), "{text}");
    assert!(text.contains("removed datapkg==1.0.0"), "{text}");
}

#[test]
fn corrupt_layer_is_detected_quarantined_and_rebuilt() {
    let world = World::new();
    let first = world.build_ok(&requirements("shared-a.txt"), &[]);
    let alpha = layer_of(&first, "alpha==");
    let blob = world
        .oci()
        .join("blobs/sha256")
        .join(alpha.trim_start_matches("sha256:"));
    let mut bytes = fs::read(&blob).unwrap();
    bytes[20] ^= 0x55;
    fs::write(&blob, &bytes).unwrap();

    let again = world.build_ok(&requirements("shared-a.txt"), &[]);
    assert_eq!(again["cache"], "miss", "a damaged image is not a hit");
    let repairs = again["repairs"].as_array().unwrap();
    assert!(
        repairs.iter().any(|r| r.as_str().unwrap().contains(&alpha)),
        "{repairs:?}"
    );
    assert_eq!(
        again["digest"], first["digest"],
        "the rebuild gives the same image"
    );
    let rebuilt: Vec<_> = rebuilt_layers(&again);
    assert!(rebuilt.iter().any(|l| l["digest"] == alpha.as_str()));
    // The repaired store reads completely with skopeo.
    let tag = again["tag"].as_str().unwrap();
    let dir = world.dir.path().join("copy");
    run(Command::new("skopeo")
        .arg("copy")
        .arg(format!("oci:{}:{tag}", world.oci().display()))
        .arg(format!("oci:{}:x", dir.display())));
}

#[test]
fn push_and_pull_between_stores_through_a_registry() {
    let reg = TestRegistry::start();
    let world = World::new();
    let built = world.build_ok(&requirements("shared-a.txt"), &[]);
    let tag = built["tag"].as_str().unwrap();
    let repo_a = format!("{}/team/a", reg.addr());
    let pushed = json(&world.strata(&["push", tag, &repo_a, "--json"]));
    assert!(pushed["bytes_uploaded"].as_u64().unwrap() > 0);
    // Another repository of the same registry: blobs are mounted, not uploaded.
    let repo_b = format!("{}/team/b", reg.addr());
    let pushed_b = json(&world.strata(&["push", tag, &repo_b, "--json"]));
    assert_eq!(pushed_b["bytes_uploaded"], 0, "{pushed_b}");
    assert!(
        pushed_b["blobs_mounted"].as_u64().unwrap() > 0,
        "{pushed_b}"
    );

    // A fresh store pulls it and then answers the same build from it: the image names its
    // lock, not a spec (issue 11), so the build resolves and finds the pulled image of that
    // lock (a lock hit: re-tagged, nothing built); the next build is a hit.
    let other = world.with_home("other");
    let pulled = json(&other.strata(&["pull", &format!("{repo_a}:{tag}"), "--json"]));
    assert_eq!(pulled["digest"], built["digest"]);
    assert_eq!(pulled["environment"], true);
    let hit = other.build_ok(&requirements("shared-a.txt"), &[]);
    assert_eq!(hit["cache"], "lock-hit", "{hit}");
    assert_eq!(hit["digest"], built["digest"]);
    assert!(rebuilt_layers(&hit).is_empty(), "{hit}");
    let hit = other.build_ok(&requirements("shared-a.txt"), &[]);
    assert_eq!(hit["cache"], "hit");
    // Pulling again downloads nothing.
    let again = json(&other.strata(&["pull", &format!("{repo_a}:{tag}"), "--json"]));
    assert_eq!(again["bytes_downloaded"], 0);
    // A corrupt blob is downloaded again by the next pull.
    let alpha = layer_of(&built, "alpha==");
    let blob = other
        .oci()
        .join("blobs/sha256")
        .join(alpha.trim_start_matches("sha256:"));
    fs::write(&blob, b"garbage").unwrap();
    let repaired = json(&other.strata(&["pull", &format!("{repo_a}:{tag}"), "--json"]));
    assert_eq!(repaired["blobs_downloaded"], 1, "{repaired}");
    run(Command::new("skopeo")
        .arg("inspect")
        .arg(format!("oci:{}:{tag}", other.oci().display())));
}

#[test]
fn push_of_a_damaged_image_is_refused() {
    let reg = TestRegistry::start();
    let world = World::new();
    let built = world.build_ok(&requirements("shared-a.txt"), &[]);
    let alpha = layer_of(&built, "alpha==");
    let blob = world
        .oci()
        .join("blobs/sha256")
        .join(alpha.trim_start_matches("sha256:"));
    fs::write(&blob, b"garbage").unwrap();
    let out = world.strata(&[
        "push",
        built["tag"].as_str().unwrap(),
        &format!("{}/team/a", reg.addr()),
    ]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(5), "{err}");
    assert!(err.contains(&alpha), "{err}");
}
