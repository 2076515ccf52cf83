//! An image is a function of its content (issue 11): the manifest and config depend on the
//! base, the lock, the target and the layer format, never on where the wheels came from or
//! how the spec was written.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use common::*;
use serde_json::Value;

/// A copy of `wheels` at `dest`, every file with the modification time `mtime`.
fn copy_wheels(wheels: &Path, dest: &Path, mtime: SystemTime) -> PathBuf {
    fs::create_dir_all(dest).unwrap();
    for entry in fs::read_dir(wheels).unwrap().flatten() {
        let to = dest.join(entry.file_name());
        fs::copy(entry.path(), &to).unwrap();
        let file = fs::File::options().append(true).open(&to).unwrap();
        file.set_modified(mtime).unwrap();
    }
    dest.to_path_buf()
}

/// The manifest bytes of `digest` in `world`'s store.
fn manifest(world: &World, digest: &str) -> Value {
    let hex = digest.strip_prefix("sha256:").unwrap();
    let bytes = fs::read(world.oci().join("blobs/sha256").join(hex)).unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

/// The tags of the store that point at `digest`.
fn tags_of(world: &World, digest: &str) -> Vec<String> {
    let index: Value =
        serde_json::from_slice(&fs::read(world.oci().join("index.json")).unwrap()).unwrap();
    let mut tags: Vec<String> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["digest"] == digest)
        .filter_map(|m| m["annotations"]["org.opencontainers.image.ref.name"].as_str())
        .map(String::from)
        .collect();
    tags.sort();
    tags
}

/// Issue 11, "what must hold" 1: two fresh stores on one machine, fed the same wheels from two
/// different directories, with different thread counts, wheel mtimes and equivalent spec
/// spellings, give the same manifest digest (and the same spec, so the same tag).
#[test]
fn two_stores_fed_from_two_wheel_dirs_give_one_manifest() {
    let world = World::new();
    let past = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
    let future = SystemTime::now() + Duration::from_secs(86_400);
    let mut first = world.with_home("first");
    first.wheels = copy_wheels(&world.wheels, &first.dir.path().join("wheels-a"), past);
    let mut second = world.with_home("second");
    second.wheels = copy_wheels(&world.wheels, &second.dir.path().join("w/b"), future);
    assert_ne!(first.wheels, second.wheels);

    let a = first.build_ok(&requirements("basic.txt"), &["--jobs", "1"]);
    let b = second.build_ok(&requirements("basic-reformatted.txt"), &["--jobs", "4"]);
    assert_eq!(a["cache"], "miss", "{a}");
    assert_eq!(b["cache"], "miss", "a fresh store builds: {b}");
    assert_eq!(a["digest"], b["digest"], "one environment, one manifest");
    assert_eq!(
        a["spec_digest"], b["spec_digest"],
        "the wheel directory is not part of the spec"
    );
    assert_eq!(a["tag"], b["tag"]);
    let digest = a["digest"].as_str().unwrap();
    let m = manifest(&first, digest);
    assert_eq!(m, manifest(&second, digest));
    let text = m.to_string();
    let spec = a["spec_digest"].as_str().unwrap();
    assert!(
        !text.contains(spec) && !text.contains(&spec[7..19]),
        "the manifest names no spec: {text}"
    );
    assert!(!text.contains("wheels-a"), "{text}");
    assert_eq!(m["annotations"]["dev.strata.lock-digest"], a["lock_digest"]);
}

/// Two specs that resolve to one lock (different pins, same wheels) share one image: the
/// second is a lock hit that writes no blob, and each spec keeps its own tag on the image.
#[test]
fn specs_of_one_lock_share_one_image_and_keep_their_tags() {
    let world = World::new();
    let a = world.build_ok(&requirements("basic.txt"), &[]);
    let loose = world.dir.path().join("loose.txt");
    let text = fs::read_to_string(requirements("basic.txt"))
        .unwrap()
        .replace("alpha==1.0.0", "alpha>=1.0,<1.1");
    fs::write(&loose, text).unwrap();
    let blobs_before = fs::read_dir(world.oci().join("blobs/sha256"))
        .unwrap()
        .count();
    let b = world.build_ok(&loose, &[]);
    assert_ne!(a["spec_digest"], b["spec_digest"]);
    assert_eq!(a["lock_digest"], b["lock_digest"]);
    assert_eq!(b["cache"], "lock-hit", "{b}");
    assert_eq!(a["digest"], b["digest"], "one lock, one image");
    assert_ne!(a["tag"], b["tag"]);
    let blobs_after = fs::read_dir(world.oci().join("blobs/sha256"))
        .unwrap()
        .count();
    assert_eq!(blobs_before, blobs_after, "a lock hit writes no blob");
    let digest = a["digest"].as_str().unwrap();
    let mut expected = vec![
        a["tag"].as_str().unwrap().to_string(),
        b["tag"].as_str().unwrap().to_string(),
    ];
    expected.sort();
    assert_eq!(tags_of(&world, digest), expected);
    // Each spec answers from its own row: both are hits now.
    assert_eq!(
        world.build_ok(&requirements("basic.txt"), &[])["cache"],
        "hit"
    );
    let again = world.build_ok(&loose, &[]);
    assert_eq!(again["cache"], "hit");
    assert_eq!(again["tag"], b["tag"]);
}
