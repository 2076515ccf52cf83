//! `name @ git+URL@ref`: the branch or tag is resolved to a commit, the commit is recorded in
//! the lock (and shown by `explain`), the package is built with uv from a checkout of that
//! commit and runs; another spec naming the same commit reuses the built wheel (a lock hit on
//! the same image); a branch that moved gives the new commit with `--refresh`; a ref that does
//! not exist is one error naming it, and the store stays as it was.
//!
//! The repository is a local bare repository made by the test, named by a `git+file://` URL:
//! tests do not reach the network.

mod common;

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use common::*;
use serde_json::Value;

const EXIT_BAD_INPUT: i32 = 3;

fn explain(world: &World, req: &Path) -> Value {
    let req = req.display().to_string();
    let wheels = world.wheels.display().to_string();
    let base = base_ref();
    let out = world.strata(&[
        "explain",
        "-r",
        &req,
        "--base",
        &base,
        "-f",
        &wheels,
        "--no-index",
        "--json",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn value_in_runc(world: &World, built: &Value, name: &str) -> String {
    let stdout = world.python_in(
        built,
        name,
        "import edgegit; print(edgegit.VALUE, edgegit.__file__)",
    );
    assert!(
        stdout.contains(" /opt/venv/lib/"),
        "not in the venv: {stdout}"
    );
    stdout
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string()
}

/// The wheel cache's record of the wheel built from `commit` (the repository's root).
fn built_record(world: &World, commit: &str) -> Option<Value> {
    let key = sha256_hex(format!("git {commit} ").as_bytes());
    let dir = world.home.join("wheels/built").join(key);
    let record = fs::read_dir(dir).ok()?.flatten().next()?.path();
    Some(serde_json::from_slice(&fs::read(record).unwrap()).unwrap())
}

#[test]
#[cfg_attr(skip_root, ignore = "needs root; STRATA_SKIP_ROOT=1")]
fn a_git_branch_is_locked_to_its_commit_built_reused_and_refreshed() {
    require_root("runc");
    let world = World::new();
    let (work, bare) = git_project(world.dir.path(), "edgegit");
    let first_commit = git(&work, &["rev-parse", "HEAD"]);
    let url = format!("file://{}", bare.display());
    let req = world.dir.path().join("git.txt");
    fs::write(&req, format!("edgegit @ git+{url}@main\nalpha\n")).unwrap();

    let first = world.build_ok(&req, &[]);
    assert_eq!(first["cache"], "miss", "{first}");
    assert_eq!(value_in_runc(&world, &first, "bundle1"), "one");
    // The commit is in the lock, as explain shows it; the built wheel is recorded under it.
    let explained = explain(&world, &req);
    assert_eq!(
        explained["hit"]["git"],
        serde_json::json!([{"name": "edgegit", "commit": first_commit}]),
        "{explained}"
    );
    let record = built_record(&world, &first_commit).expect("no record of the built wheel");
    assert_eq!(record["built_from"]["source"], "git", "{record}");
    assert_eq!(record["built_from"]["commit"], first_commit.as_str());
    let wheel = world
        .home
        .join("wheels/sha256")
        .join(
            record["sha256"]
                .as_str()
                .unwrap()
                .trim_start_matches("sha256:"),
        )
        .join(record["filename"].as_str().unwrap());
    let inode = fs::metadata(&wheel).unwrap().ino();

    // Another spec naming the same commit (by its id) builds nothing: the same lock, the same
    // image, the wheel built before.
    let by_commit = world.dir.path().join("by-commit.txt");
    fs::write(
        &by_commit,
        format!("edgegit @ git+{url}@{first_commit}\nalpha\n"),
    )
    .unwrap();
    let again = world.build_ok(&by_commit, &[]);
    assert_eq!(again["cache"], "lock-hit", "{again}");
    assert_eq!(again["lock_digest"], first["lock_digest"]);
    assert_eq!(again["digest"], first["digest"]);
    assert_eq!(
        fs::metadata(&wheel).unwrap().ino(),
        inode,
        "the wheel of the same commit was built again"
    );

    // The branch moves: the cache answers with the first resolution until --refresh.
    let second_commit = git_commit_value(&work, "edgegit", "two");
    git(&work, &["push", "--quiet", "origin", "main"]);
    let hit = world.build_ok(&req, &[]);
    assert_eq!(hit["cache"], "hit");
    assert_eq!(hit["digest"], first["digest"]);
    let refreshed = world.build_ok(&req, &["--refresh"]);
    assert_eq!(refreshed["cache"], "miss", "{refreshed}");
    assert_ne!(refreshed["lock_digest"], first["lock_digest"]);
    assert_eq!(value_in_runc(&world, &refreshed, "bundle2"), "two");
    let explained = explain(&world, &req);
    assert_eq!(
        explained["hit"]["git"][0]["commit"],
        second_commit.as_str(),
        "{explained}"
    );
    let text = world.strata(&[
        "explain",
        "-r",
        req.to_str().unwrap(),
        "--base",
        &base_ref(),
        "-f",
        world.wheels.to_str().unwrap(),
        "--no-index",
    ]);
    let text = String::from_utf8_lossy(&text.stdout).into_owned();
    assert!(
        text.contains(&format!("edgegit built from git commit {second_commit}")),
        "{text}"
    );
}

#[test]
fn a_git_ref_that_does_not_exist_is_named_and_changes_nothing() {
    let world = World::new();
    let (_work, bare) = git_project(world.dir.path(), "edgegit");
    let url = format!("file://{}", bare.display());
    // A first build, so that the store has content to keep.
    let req = world.dir.path().join("ok.txt");
    fs::write(&req, "alpha\n").unwrap();
    world.build_ok(&req, &[]);
    let before = world.snapshot();

    let bad = world.dir.path().join("bad.txt");
    fs::write(&bad, format!("edgegit @ git+{url}@nosuchref\n")).unwrap();
    let out = world.build(&bad, &[]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(EXIT_BAD_INPUT), "{err}");
    assert!(
        err.contains("could not fetch branch or tag `nosuchref` of `edgegit @ git+")
            && err.contains("check that the repository is reachable")
            && !err.contains("uv failed"),
        "{err}"
    );
    assert_eq!(
        err.lines().filter(|l| l.starts_with("error")).count(),
        1,
        "{err}"
    );
    assert_eq!(
        world.snapshot(),
        before,
        "the failed build changed the store"
    );
}
