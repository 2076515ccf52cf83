//! Bad input gets a clear error naming the culprit, a documented exit code, and leaves the
//! store exactly as it was.

mod common;

use std::fs;

use common::*;

const EXIT_BAD_INPUT: i32 = 3;

/// Builds something first so that "unchanged" compares a non-empty store.
fn world_with_a_build() -> World {
    let world = World::new();
    world.build_ok(&requirements("shared-a.txt"), &[]);
    world
}

/// Runs a failing build and checks its exit code, that stderr names every culprit, and
/// that the store did not change.
fn assert_rejected(
    world: &World,
    requirements: &std::path::Path,
    extra: &[&str],
    culprits: &[&str],
) {
    let before = world.snapshot();
    let out = world.build(requirements, extra);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(EXIT_BAD_INPUT), "stderr: {err}");
    for culprit in culprits {
        assert!(
            err.contains(culprit),
            "error does not name {culprit:?}: {err}"
        );
    }
    assert!(out.stdout.is_empty(), "nothing on stdout for a failure");
    assert_eq!(before, world.snapshot(), "the store changed: {err}");
}

#[test]
fn unknown_package_is_named() {
    let world = world_with_a_build();
    assert_rejected(
        &world,
        &requirements("bad-unknown.txt"),
        &[],
        &["nosuchpkg"],
    );
}

#[test]
fn conflicting_pins_are_named() {
    let world = world_with_a_build();
    assert_rejected(
        &world,
        &requirements("bad-conflict.txt"),
        &[],
        &["conflict-a", "conflict-b", "gamma"],
    );
}

#[test]
fn sdist_only_package_is_named_with_the_target() {
    let world = world_with_a_build();
    assert_rejected(
        &world,
        &requirements("bad-sdistonly.txt"),
        &[],
        &["sdistonly", "wheel"],
    );
}

#[test]
fn wheels_escaping_the_venv_are_rejected() {
    let world = world_with_a_build();
    for (file, culprit) in [
        ("evil-dotdot.txt", "../../../../tmp/evil.txt"),
        ("evil-abs.txt", "/etc/evil.txt"),
        ("evil-link.txt", "evil_link/escape"),
    ] {
        let wheel = file.trim_end_matches(".txt").replace('-', "_");
        assert_rejected(&world, &requirements(file), &[], &[culprit, &wheel]);
    }
}

#[test]
fn malformed_line_is_named_with_its_number() {
    let world = world_with_a_build();
    let req = world.dir.path().join("requirements.txt");
    fs::write(&req, "alpha==1.0.0\n# fine\nbeta>=\ngamma\n").unwrap();
    assert_rejected(&world, &req, &[], &["requirements.txt:3", "beta>="]);
}

#[test]
fn wheel_bytes_that_differ_from_the_pinned_hash_are_refused() {
    let world = world_with_a_build();
    let req = world.dir.path().join("hashed.txt");
    let wrong = "0".repeat(64);
    fs::write(&req, format!("gamma==0.3.0 --hash=sha256:{wrong}\n")).unwrap();
    assert_rejected(&world, &req, &[], &["gamma"]);
}

#[test]
fn unreachable_registry_is_named_and_nothing_is_built() {
    let world = world_with_a_build();
    let before = world.snapshot();
    let out = world.build(
        &requirements("basic.txt"),
        &["--push", "127.0.0.1:1/team/env"],
    );
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(4), "{err}");
    assert!(err.contains("127.0.0.1:1"), "{err}");
    assert_eq!(before, world.snapshot(), "{err}");
}
