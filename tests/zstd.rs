//! `strata build --compression zstd`: zstd layers whose diff_ids are their tars, another
//! image than the gzip one, run by strata's own runner (umoci 0.4.7 cannot unpack zstd, so
//! the manifest is checked with skopeo and the job runs through the agent), and a corrupt
//! zstd layer refused naming it.

mod common;

use std::fs;
use std::io::Read;
use std::process::Command;
use std::time::Duration;

use common::*;
use serde_json::Value;

const ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";

fn blob(world: &World, digest: &str) -> Vec<u8> {
    let hex = digest.strip_prefix("sha256:").unwrap();
    fs::read(world.oci().join("blobs/sha256").join(hex)).unwrap()
}

fn manifest(world: &World, digest: &str) -> Value {
    serde_json::from_slice(&blob(world, digest)).unwrap()
}

/// The layers strata wrote (the base's come first and stay as they were).
fn own_layers(world: &World, built: &Value) -> Vec<(usize, Value)> {
    let manifest = manifest(world, built["digest"].as_str().unwrap());
    let base_layers = manifest_base_layers(world);
    manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .cloned()
        .enumerate()
        .skip(base_layers)
        .collect()
}

/// Layers of the fixture base image.
fn manifest_base_layers(_world: &World) -> usize {
    let out = Command::new("skopeo")
        .args([
            "inspect",
            "--raw",
            &format!("oci:{}:3.11", base_layout().display()),
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let raw: Value = serde_json::from_slice(&out.stdout).unwrap();
    raw["layers"].as_array().unwrap().len()
}

fn build_zstd(world: &World) -> Value {
    world.build_ok(&requirements("shared-a.txt"), &["--compression", "zstd"])
}

#[test]
fn zstd_layers_hold_their_diff_ids_and_make_another_image() {
    let world = World::new();
    let gzip = world.build_ok(&requirements("shared-a.txt"), &[]);
    let zstd = build_zstd(&world);
    assert_eq!(
        zstd["cache"], "miss",
        "the gzip image answered a zstd build: {zstd}"
    );
    assert_ne!(gzip["digest"], zstd["digest"]);
    assert_ne!(gzip["tag"], zstd["tag"]);
    assert_ne!(gzip["spec_digest"], zstd["spec_digest"]);
    // Each built again is a hit on its own image.
    let again = build_zstd(&world);
    assert_eq!(
        (again["cache"].as_str(), &again["digest"]),
        (Some("hit"), &zstd["digest"])
    );

    let digest = zstd["digest"].as_str().unwrap();
    let config = manifest(&world, digest)["config"]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let config: Value = serde_json::from_slice(&blob(&world, &config)).unwrap();
    let diff_ids = config["rootfs"]["diff_ids"].as_array().unwrap();
    let own = own_layers(&world, &zstd);
    assert!(!own.is_empty());
    for (i, layer) in &own {
        assert_eq!(layer["mediaType"], ZSTD, "{layer}");
        let compressed = blob(&world, layer["digest"].as_str().unwrap());
        let mut tar = Vec::new();
        zstd::stream::read::Decoder::new(&compressed[..])
            .unwrap()
            .read_to_end(&mut tar)
            .unwrap();
        assert_eq!(
            diff_ids[*i].as_str().unwrap(),
            format!("sha256:{}", sha256_hex(&tar)),
            "layer {i}"
        );
    }
    // What other tools read: skopeo sees the zstd layers in the store's manifest.
    let out = Command::new("skopeo")
        .args([
            "inspect",
            "--raw",
            &format!(
                "oci:{}:{}",
                world.oci().display(),
                zstd["tag"].as_str().unwrap()
            ),
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let inspected: Value = serde_json::from_slice(&out.stdout).unwrap();
    let types: Vec<&str> = inspected["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["mediaType"].as_str().unwrap())
        .collect();
    assert_eq!(
        types.iter().filter(|t| **t == ZSTD).count(),
        own.len(),
        "{types:?}"
    );
}

/// Layer bytes do not depend on how many threads build them (`--jobs`, or `STRATA_JOBS` as a
/// CI runner would set it): two fresh stores, one thread and four, give the same layers and
/// the same image, under zstd as under gzip.
#[test]
fn layers_are_the_same_bytes_for_any_thread_count() {
    let world = World::new();
    for compression in ["zstd", "gzip"] {
        let req = requirements("shared-a.txt");
        let one = world
            .with_home(&format!("one-{compression}"))
            .build_ok(&req, &["--compression", compression, "--jobs", "1"]);
        let four = world.with_home(&format!("four-{compression}"));
        let out = four
            .build_command(&req, &base_ref(), &["--compression", compression])
            .env("STRATA_JOBS", "4")
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        let four_built: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(four_built["cache"], "miss", "a fresh store must build");
        let layers = |built: &Value| -> Vec<Value> {
            built["layers"]
                .as_array()
                .unwrap()
                .iter()
                .map(|l| l["digest"].clone())
                .collect()
        };
        assert_eq!(
            layers(&one),
            layers(&four_built),
            "{compression} layers differ between 1 and 4 threads"
        );
        assert_eq!(one["digest"], four_built["digest"], "{compression}");
    }
}

#[test]
fn compression_from_strata_toml_and_a_bad_one_is_named() {
    let world = World::new();
    fs::write(
        world.dir.path().join("strata.toml"),
        "[build]\ncompression = \"zstd\"\n",
    )
    .unwrap();
    let built = world.build_ok(&requirements("shared-a.txt"), &[]);
    for (_, layer) in own_layers(&world, &built) {
        assert_eq!(layer["mediaType"], ZSTD);
    }
    // The flag wins.
    let gzip = world.build_ok(&requirements("shared-a.txt"), &["--compression", "gzip"]);
    assert_ne!(gzip["digest"], built["digest"]);
    fs::write(
        world.dir.path().join("strata.toml"),
        "[build]\ncompression = \"xz\"\n",
    )
    .unwrap();
    let out = world.build(&requirements("shared-a.txt"), &[]);
    let err = stderr(&out);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("compression") && err.contains("xz"), "{err}");
}

fn submit_image(world: &World, image: &str, command: &[&str]) -> String {
    let out = world.strata(&[&["submit", "--json", "--image", image, "--"], command].concat());
    assert!(out.status.success(), "submit failed: {}", stderr(&out));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    v["id"].as_str().unwrap().to_string()
}

#[test]
#[cfg_attr(skip_root, ignore = "needs root; STRATA_SKIP_ROOT=1")]
fn a_job_runs_on_a_zstd_image_and_a_corrupt_zstd_layer_is_refused() {
    let world = World::new();
    let built = build_zstd(&world);
    let tag = built["tag"].as_str().unwrap().to_string();
    // Corrupt one zstd layer in a second store holding the same image.
    let broken = world.with_home("broken");
    let broken_built = build_zstd(&broken);
    assert_eq!(broken_built["digest"], built["digest"]);
    let (_, layer) = own_layers(&broken, &broken_built).remove(0);
    let layer = layer["digest"].as_str().unwrap().to_string();
    let path = broken
        .oci()
        .join("blobs/sha256")
        .join(layer.strip_prefix("sha256:").unwrap());
    let mut bytes = fs::read(&path).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x55;
    fs::write(&path, bytes).unwrap();

    let agent = AgentProcess::start(&world);
    let script = "import alpha, beta, cext, tools, nsp.a; print('imports ok', cext.answer())";
    let id = submit_image(&world, &tag, &["python", "-c", script]);
    let s = world.wait_for(&id, TERMINAL, Duration::from_secs(120));
    assert_eq!(s["state"], "succeeded", "{s}");
    let logs = world.strata(&["logs", &id]);
    assert!(String::from_utf8_lossy(&logs.stdout).contains("imports ok 42"));
    drop(agent);

    let _agent = AgentProcess::start(&broken);
    let id = submit_image(&broken, &tag, &["true"]);
    let s = broken.wait_for(&id, TERMINAL, Duration::from_secs(120));
    assert_eq!(s["state"], "failed", "{s}");
    let reason = s["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains(&layer[7..19]) || reason.contains(&layer),
        "{s}"
    );
}
