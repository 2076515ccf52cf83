//! `strata gc` collects the unpacked layers under `$STRATA_HOME/rootfs` that the real
//! launcher (agent + runc) left: those of dropped images go, those of kept images stay, and
//! a directory that a mount uses stays whatever the index says.

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

fn json(out: &std::process::Output) -> Value {
    assert!(out.status.success(), "strata failed: {}", stderr(out));
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("bad JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)))
}

/// How long a job may take to reach a state.
const LIMIT: Duration = Duration::from_secs(180);

/// Submits `python -c SCRIPT` in the environment of a fixture requirement file.
fn submit_env(world: &World, requirements_file: &str, script: &str) -> String {
    let env = world.env_args(requirements_file);
    let mut args = vec!["submit", "--json"];
    args.extend(env.iter().map(String::as_str));
    // The environment's layers are what this test counts: no code layer on top.
    args.extend_from_slice(&["--no-code", "--", "python", "-c", script]);
    json(&world.strata(&args))["id"]
        .as_str()
        .unwrap()
        .to_string()
}

/// The layer digests (hex) of an environment, from a cache-hit build.
fn layers_of(world: &World, requirements_file: &str) -> (String, BTreeSet<String>) {
    let built = world.build_ok(&requirements(requirements_file), &[]);
    assert_eq!(built["cache"], "hit");
    let layers = built["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            let d = l["digest"].as_str().unwrap();
            d.trim_start_matches("sha256:").to_string()
        })
        .collect();
    (built["tag"].as_str().unwrap().to_string(), layers)
}

/// Waits (bounded) until the agent has cleaned up every job: `run/jobs` is empty.
fn wait_cleaned_up(home: &Path) {
    let jobs = home.join("run/jobs");
    let start = Instant::now();
    let mut left = job_dirs(&jobs);
    while !left.is_empty() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "jobs never cleaned up: {left:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
        left = job_dirs(&jobs);
    }
}

/// The job directories under `jobs` (none when it does not exist).
fn job_dirs(jobs: &Path) -> Vec<std::ffi::OsString> {
    match fs::read_dir(jobs) {
        Ok(entries) => entries.map(|e| e.unwrap().file_name()).collect(),
        Err(_) => Vec::new(),
    }
}

/// The unpacked layer directories (named by digest hex).
fn unpacked(home: &Path) -> BTreeSet<String> {
    fs::read_dir(home.join("rootfs"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.len() == 64 && n.bytes().all(|b| b.is_ascii_hexdigit()))
        .collect()
}

/// An overlay mount whose lower directory is `lower`, unmounted on drop.
struct Overlay(PathBuf);

impl Overlay {
    fn mount(scratch: &Path, lower: &Path) -> Overlay {
        let (upper, work, target) = (
            scratch.join("upper"),
            scratch.join("work"),
            scratch.join("mnt"),
        );
        for d in [&upper, &work, &target] {
            fs::create_dir_all(d).unwrap();
        }
        let options = format!(
            "lowerdir={},upperdir={},workdir={}",
            lower.display(),
            upper.display(),
            work.display()
        );
        run(Command::new("mount")
            .args(["-t", "overlay", "overlay", "-o", &options])
            .arg(&target));
        Overlay(target)
    }
}

impl Drop for Overlay {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

fn gc(world: &World, keep_tag: &str) -> Value {
    json(&world.strata(&[
        "gc",
        "--json",
        "--keep-days",
        "0",
        "--keep-newest",
        "0",
        "--keep-tag",
        keep_tag,
        "--grace",
        "0s",
    ]))
}

#[test]
#[cfg_attr(skip_root, ignore = "needs root; STRATA_SKIP_ROOT=1")]
fn gc_removes_the_unpacked_layers_of_dropped_images_but_not_mounted_ones() {
    let world = World::new();
    let agent = AgentProcess::start(&world);
    let a = submit_env(&world, "shared-a.txt", "import alpha, nsp.a");
    let b = submit_env(&world, "shared-b.txt", "import alpha, datapkg");
    for id in [&a, &b] {
        let s = world.wait_for(id, TERMINAL, LIMIT);
        assert_eq!(s["state"], "succeeded", "{s}");
    }
    // A job's end is recorded before the agent unmounts its root: stop the agent only once
    // both are cleaned up, so that the only mount left is the test's own.
    wait_cleaned_up(&world.home);
    drop(agent);
    let (tag_a, layers_a) = layers_of(&world, "shared-a.txt");
    let (_, layers_b) = layers_of(&world, "shared-b.txt");
    let only_b: Vec<String> = layers_b.difference(&layers_a).cloned().collect();
    assert!(only_b.len() >= 2, "{only_b:?}");
    let all: BTreeSet<String> = layers_a.union(&layers_b).cloned().collect();
    assert_eq!(unpacked(&world.home), all, "the jobs unpacked every layer");

    // One of B's own layers is the lower directory of a mount nobody leased.
    let held = &only_b[0];
    let scratch = world.dir.path().join("overlay");
    let overlay = Overlay::mount(&scratch, &world.home.join("rootfs").join(held));
    std::thread::sleep(Duration::from_millis(1100)); // past the zero grace

    let report = gc(&world, &tag_a);
    let mut expected = layers_a.clone();
    expected.insert(held.clone());
    assert_eq!(unpacked(&world.home), expected, "{report:#}");
    assert_eq!(report["deleted_rootfs_layers"], only_b.len() as u64 - 1);
    assert!(
        report["deleted_rootfs_bytes"].as_u64().unwrap() > 0,
        "{report:#}"
    );
    let skipped = report["skipped_rootfs"].as_array().unwrap();
    assert_eq!(skipped.len(), 1, "{report:#}");
    assert_eq!(skipped[0]["what"], format!("sha256:{held}"));
    assert_eq!(skipped[0]["why"], "mounted");

    // Unmounted, the next run takes it; the text output says what went.
    drop(overlay);
    let out = world.strata(&[
        "gc",
        "--keep-days",
        "0",
        "--keep-newest",
        "0",
        "--keep-tag",
        &tag_a,
        "--grace",
        "0s",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("1 unpacked layers removed"), "{text}");
    assert_eq!(unpacked(&world.home), layers_a);

    // The kept environment still runs from what is left, without unpacking again.
    let agent = AgentProcess::start(&world);
    let again = submit_env(
        &world,
        "shared-a.txt",
        "import alpha, nsp.a; print('still ok')",
    );
    let s = world.wait_for(&again, TERMINAL, LIMIT);
    assert_eq!(s["state"], "succeeded", "{s}");
    drop(agent);
}

/// The second safety: a running container's layers stay even when no lease says so (here
/// every lease is deleted behind strata's back), because its overlay mount uses them — the
/// launcher's lower dirs are relative links (`<job>/l/0`, …), resolved by the GC.
#[test]
#[cfg_attr(skip_root, ignore = "needs root; STRATA_SKIP_ROOT=1")]
fn a_running_job_keeps_its_unpacked_layers_even_without_a_lease() {
    let world = World::new();
    let agent = AgentProcess::start(&world);
    let id = submit_env(
        &world,
        "shared-a.txt",
        "import time; print('started', flush=True); time.sleep(600)",
    );
    world.wait_for(&id, &["running"], LIMIT);
    let start = Instant::now();
    while !String::from_utf8_lossy(&world.strata(&["logs", &id]).stdout).contains("started") {
        assert!(start.elapsed() < Duration::from_secs(120), "never started");
        std::thread::sleep(Duration::from_millis(100));
    }
    let (_, layers) = layers_of(&world, "shared-a.txt");
    assert_eq!(unpacked(&world.home), layers);
    run(Command::new("python3")
        .args([
            "-c",
            "import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); c.execute('DELETE FROM lease_refs'); c.execute('DELETE FROM leases'); c.commit()",
        ])
        .arg(world.home.join("strata.db")));
    std::thread::sleep(Duration::from_millis(1100));

    let report = gc(&world, "none-*");
    assert_eq!(
        report["deleted_images"].as_array().unwrap().len(),
        1,
        "{report:#}"
    );
    assert_eq!(unpacked(&world.home), layers, "{report:#}");
    let skipped = report["skipped_rootfs"].as_array().unwrap();
    assert_eq!(skipped.len(), layers.len(), "{report:#}");
    assert!(skipped.iter().all(|s| s["why"] == "mounted"), "{report:#}");

    // Once the job is gone, so are its layers.
    let out = world.strata(&["cancel", &id]);
    assert!(out.status.success(), "{}", stderr(&out));
    let s = world.wait_for(&id, TERMINAL, LIMIT);
    assert_eq!(s["state"], "cancelled", "{s}");
    // The agent records the end first and unmounts after: until then the layers are in use.
    wait_cleaned_up(&world.home);
    drop(agent);
    let report = gc(&world, "none-*");
    assert_eq!(
        report["deleted_rootfs_layers"],
        layers.len() as u64,
        "{report:#}"
    );
    assert!(unpacked(&world.home).is_empty());
}
