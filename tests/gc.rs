//! `strata gc`: retention policy, dry runs, crash safety under SIGKILL, registry collection
//! paired with the registry's own blob collection, and bad input.

mod common;
#[path = "../crates/strata-registry/tests/support/registry.rs"]
mod registry;

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime};

use common::*;
use registry::TestRegistry;
use serde_json::Value;

fn json(out: &std::process::Output) -> Value {
    assert!(out.status.success(), "{}", stderr(out));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Builds three environments of one name (with `extra` build flags); with keep-newest 1
/// and keep-days 0 the two older ones are garbage.
fn generations(world: &World, extra: &[&str]) -> Vec<Value> {
    ["shared-a.txt", "shared-b.txt", "basic.txt"]
        .iter()
        .map(|f| {
            let mut args = vec!["--name", "exp"];
            args.extend_from_slice(extra);
            let built = world.build_ok(&requirements(f), &args);
            // Distinct last-used seconds so "newest" is well defined.
            std::thread::sleep(Duration::from_millis(1100));
            built
        })
        .collect()
}

fn three_generations(world: &World) -> Vec<Value> {
    generations(world, &[])
}

fn three_generations_pushed(world: &World, target: &str) -> Vec<Value> {
    generations(world, &["--push", target])
}

const POLICY: &[&str] = &["--keep-days", "0", "--keep-newest", "1", "--grace", "0s"];

/// Every blob of the tagged image is present and verifies, read by skopeo and umoci.
fn assert_readable(world: &World, tag: &str, scratch: &Path) {
    let copy = scratch.join(format!("copy-{tag}"));
    let _ = fs::remove_dir_all(&copy);
    run(Command::new("skopeo")
        .arg("copy")
        .arg(format!("oci:{}:{tag}", world.oci().display()))
        .arg(format!("oci:{}:x", copy.display())));
    let bundle = scratch.join(format!("bundle-{tag}"));
    let _ = fs::remove_dir_all(&bundle);
    umoci_unpack(&copy, "x", &bundle);
}

#[test]
#[cfg_attr(skip_root, ignore = "needs root; STRATA_SKIP_ROOT=1")]
fn dry_run_and_real_run_agree_and_a_second_run_deletes_nothing() {
    let world = World::new();
    let built = three_generations(&world);
    let mut args = vec!["gc", "--json", "--dry-run"];
    args.extend_from_slice(POLICY);
    let plan = json(&world.strata(&args));
    let mut would: Vec<&str> = plan["pruned"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["tag"].as_str().unwrap())
        .collect();
    would.sort();
    let mut older = vec![
        built[0]["tag"].as_str().unwrap(),
        built[1]["tag"].as_str().unwrap(),
    ];
    older.sort();
    assert_eq!(would, older);
    let would_blobs: Vec<String> = plan["blobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["digest"].to_string())
        .collect();
    assert!(!would_blobs.is_empty());

    args.retain(|a| *a != "--dry-run");
    let report = json(&world.strata(&args));
    let mut deleted: Vec<&str> = report["deleted_images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["tag"].as_str().unwrap())
        .collect();
    deleted.sort();
    assert_eq!(deleted, would);
    let deleted_blobs: Vec<String> = report["deleted_blob_digests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.to_string())
        .collect();
    let (mut a, mut b) = (would_blobs.clone(), deleted_blobs.clone());
    a.sort();
    b.sort();
    assert_eq!(a, b, "dry run and real run disagree");
    assert_eq!(report["bytes_freed"], plan["bytes_freed"]);

    let again = json(&world.strata(&args));
    assert_eq!(again["deleted_images"], serde_json::json!([]));
    assert_eq!(again["deleted_blobs"], 0);
    assert_readable(&world, built[2]["tag"].as_str().unwrap(), world.dir.path());
    // The deleted environments are rebuilt on demand, as misses.
    let rebuilt = world.build_ok(&requirements("shared-a.txt"), &["--name", "exp"]);
    assert_eq!(rebuilt["digest"], built[0]["digest"]);
    assert_ne!(rebuilt["cache"], "hit");
}

/// Old, unreferenced blobs: what a long-lived store accumulates, and what makes a sweep long
/// enough to be killed in the middle. Adds `count` of them to `names` (their hex digests).
fn litter(world: &World, count: usize, names: &mut BTreeSet<String>) {
    let blobs = world.oci().join("blobs/sha256");
    let old = SystemTime::now() - Duration::from_secs(30 * 86_400);
    let start = names.len();
    for i in start..start + count {
        let bytes = format!("orphan blob {i}").into_bytes();
        let name = sha256_hex(&bytes);
        let path = blobs.join(&name);
        fs::write(&path, &bytes).unwrap();
        fs::File::options()
            .append(true)
            .open(&path)
            .unwrap()
            .set_modified(old)
            .unwrap();
        names.insert(name);
    }
}

/// The litter blobs still in the store.
fn litter_left(world: &World, names: &BTreeSet<String>) -> BTreeSet<String> {
    let blobs = world.oci().join("blobs/sha256");
    names
        .iter()
        .filter(|n| blobs.join(n).exists())
        .cloned()
        .collect()
}

/// Waits (bounded) until `path` is gone or `child` has exited.
fn wait_until_gone(path: &Path, child: &mut std::process::Child) {
    let start = std::time::Instant::now();
    while path.exists() && child.try_wait().unwrap().is_none() {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "gc never deleted {}",
            path.display()
        );
        std::thread::sleep(Duration::from_micros(200));
    }
}

#[test]
#[cfg_attr(skip_root, ignore = "needs root; STRATA_SKIP_ROOT=1")]
fn gc_killed_at_random_points_never_breaks_a_kept_image() {
    let world = World::new();
    let built = three_generations(&world);
    let kept = built[2]["tag"].as_str().unwrap();
    let mut seed: u64 = 0x5eed_1234;
    let mut names = BTreeSet::new();
    // How long a whole run takes here (it also prunes the older generations), to spread the
    // random kills over one.
    litter(&world, 3000, &mut names);
    let started = std::time::Instant::now();
    let mut args = vec!["gc"];
    args.extend_from_slice(POLICY);
    let out = world.strata(&args);
    assert!(out.status.success(), "{}", stderr(&out));
    let run_ms = started.elapsed().as_millis() as u64;
    assert!(litter_left(&world, &names).is_empty());
    let mut mid_sweep = 0;
    for round in 0..8 {
        litter(&world, 3000, &mut names);
        let before = litter_left(&world, &names);
        let mut child = world
            .command(&["gc"])
            .args(POLICY)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        if round % 2 == 0 {
            // xorshift: a different, reproducible kill time each round.
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            std::thread::sleep(Duration::from_millis(seed % (run_ms + run_ms / 10)));
        } else {
            // A few ms after the first litter blob (in deletion order: by digest, after the
            // pruned manifests) is gone, whatever the machine's load.
            let first = world
                .oci()
                .join("blobs/sha256")
                .join(before.first().unwrap());
            wait_until_gone(&first, &mut child);
            std::thread::sleep(Duration::from_millis(round % 3));
        }
        let _ = child.kill(); // SIGKILL
        let status = child.wait().unwrap();
        // Judged from the store the dead process left: some, not all, of the litter gone.
        let left = litter_left(&world, &names).len();
        if left > 0 && left < before.len() {
            mid_sweep += 1;
        }
        assert_readable(&world, kept, world.dir.path());
        eprintln!(
            "round {round}: {status}; {left} of {} litter blobs left",
            before.len()
        );
    }
    assert!(
        mid_sweep >= 1,
        "no kill landed in the middle of a sweep (some but not all litter deleted); \
         a whole run took {run_ms} ms"
    );
    // A full run afterwards completes the job; the store is clean and still readable.
    let mut args = vec!["gc", "--json"];
    args.extend_from_slice(POLICY);
    json(&world.strata(&args));
    let again = json(&world.strata(&args));
    assert_eq!(again["deleted_blobs"], 0);
    assert!(litter_left(&world, &names).is_empty());
    assert_readable(&world, kept, world.dir.path());
}

#[test]
fn malformed_policy_names_the_key_and_changes_nothing() {
    let world = World::new();
    world.build_ok(&requirements("shared-a.txt"), &[]);
    let project = world.dir.path().join("project");
    fs::create_dir_all(&project).unwrap();
    fs::write(project.join("strata.toml"), "[gc]\nkeep_dayz = 3\n").unwrap();
    let before = world.snapshot();
    let gc_in_project = || {
        world
            .command(&["gc"])
            .current_dir(&project)
            .output()
            .unwrap()
    };
    let out = gc_in_project();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(err.contains("keep_dayz"), "{err}");
    assert!(err.contains("strata.toml"), "{err}");
    assert_eq!(before, world.snapshot());

    fs::write(project.join("strata.toml"), "[gc]\ngrace = \"soon\"\n").unwrap();
    let out = gc_in_project();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(err.contains("grace"), "{err}");
}

#[test]
fn registry_gc_errors_name_the_registry() {
    let world = World::new();
    let out = world.strata(&["gc", "--registry", "127.0.0.1:1/team/env"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(4), "{err}");
    assert!(err.contains("127.0.0.1:1"), "{err}");

    let reg = TestRegistry::without_deletes();
    let target = format!("{}/team/env", reg.addr());
    three_generations_pushed(&world, &target);
    let mut args = vec!["gc", "--registry", &target];
    args.extend_from_slice(POLICY);
    let out = world.strata(&args);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(4), "{err}");
    assert!(err.contains("does not allow deletes"), "{err}");
}

/// Every blob of `image` as pulled by skopeo hashes to its name, and umoci unpacks it.
fn assert_pullable(image: &str, scratch: &Path, name: &str) {
    let dir = scratch.join(format!("pulled-{name}"));
    run(Command::new("skopeo")
        .args(["copy", "--src-tls-verify=false"])
        .arg(format!("docker://{image}"))
        .arg(format!("oci:{}:x", dir.display())));
    for entry in fs::read_dir(dir.join("blobs/sha256")).unwrap().flatten() {
        let bytes = fs::read(entry.path()).unwrap();
        assert_eq!(
            sha256_hex(&bytes),
            entry.file_name().to_string_lossy(),
            "blob of {image}"
        );
    }
    umoci_unpack(&dir, "x", &scratch.join(format!("bundle-{name}")));
}

#[test]
#[cfg_attr(skip_root, ignore = "needs root; STRATA_SKIP_ROOT=1")]
fn registry_gc_keeps_leased_and_in_flight_images_and_the_registry_collector_agrees() {
    let mut reg = TestRegistry::start();
    let world = World::new();
    let target = format!("{}/team/env", reg.addr());
    let generations = three_generations_pushed(&world, &target);
    let image = |v: &Value| v["image"].as_str().unwrap().to_string();
    // A queued job (no agent runs) holds the oldest image.
    let out = world.strata(&[
        "submit",
        "--image",
        generations[0]["tag"].as_str().unwrap(),
        "--",
        "true",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    // A build pushes another environment while GC runs.
    let in_flight = {
        let mut build = world.build_command(
            &requirements("changed-one.txt"),
            &base_ref(),
            &["--name", "other", "--push", &target],
        );
        std::thread::spawn(move || build.output().unwrap())
    };
    let mut args = vec!["gc", "--registry", &target, "--json"];
    args.extend_from_slice(POLICY);
    let report = json(&world.strata(&args));
    let local = {
        let mut local_args = vec!["gc", "--json"];
        local_args.extend_from_slice(POLICY);
        json(&world.strata(&local_args))
    };
    let pushed = in_flight.join().unwrap();
    assert!(pushed.status.success(), "{}", stderr(&pushed));
    let pushed: Value = serde_json::from_slice(&pushed.stdout).unwrap();

    let deleted: Vec<String> = report["deleted"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["digest"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        deleted,
        vec![generations[1]["digest"].as_str().unwrap().to_string()],
        "{report}"
    );
    let kept = report["kept"].to_string();
    assert!(
        kept.contains("leased"),
        "the job's image is kept for its lease: {kept}"
    );
    // Locally the job's image stays too.
    let local_deleted = local["deleted_images"].to_string();
    assert!(
        !local_deleted.contains(generations[0]["tag"].as_str().unwrap()),
        "{local_deleted}"
    );

    // The registry's own collection, with the registry stopped, then everything kept pulls.
    let before = reg.storage_bytes();
    reg.stop();
    reg.garbage_collect();
    reg.restart();
    assert!(
        reg.storage_bytes() < before,
        "the registry collector freed nothing"
    );
    for (i, kept) in [&generations[0], &generations[2], &pushed]
        .into_iter()
        .enumerate()
    {
        assert_pullable(&image(kept), world.dir.path(), &format!("kept{i}"));
    }
    let gone = Command::new("skopeo")
        .args(["inspect", "--tls-verify=false"])
        .arg(format!("docker://{}", image(&generations[1])))
        .output()
        .unwrap();
    assert!(!gone.status.success(), "the deleted image still resolves");
}

/// Tags `image` (`REGISTRY/REPO@DIGEST`) as `dest` (`REGISTRY/REPO:TAG`), as a person does.
fn skopeo_tag(image: &str, dest: &str) {
    run(Command::new("skopeo")
        .args([
            "copy",
            "--preserve-digests",
            "--src-tls-verify=false",
            "--dest-tls-verify=false",
        ])
        .arg(format!("docker://{image}"))
        .arg(format!("docker://{dest}")));
}

/// The digest `reference` resolves to in the registry, if any.
fn registry_digest(reference: &str) -> Option<String> {
    let out = Command::new("skopeo")
        .args(["inspect", "--raw", "--tls-verify=false"])
        .arg(format!("docker://{reference}"))
        .output()
        .unwrap();
    out.status
        .success()
        .then(|| format!("sha256:{}", sha256_hex(&out.stdout)))
}

/// Two builds of `exp` pushed to `target`, the older first.
fn two_generations_pushed(world: &World, target: &str) -> Vec<Value> {
    ["shared-a.txt", "shared-b.txt"]
        .iter()
        .map(|f| {
            let built = world.build_ok(&requirements(f), &["--name", "exp", "--push", target]);
            std::thread::sleep(Duration::from_millis(1100));
            built
        })
        .collect()
}

#[test]
fn registry_gc_keeps_a_manifest_with_a_tag_strata_did_not_make() {
    let reg = TestRegistry::start();
    let world = World::new();
    let target = format!("{}/team/env", reg.addr());
    let built = two_generations_pushed(&world, &target);
    let older = built[0]["image"].as_str().unwrap();
    let older_digest = built[0]["digest"].as_str().unwrap();
    skopeo_tag(older, &format!("{target}:prod"));

    let mut args = vec!["gc", "--registry", &target];
    args.extend_from_slice(POLICY);
    let mut dry = args.clone();
    dry.push("--dry-run");
    let out = world.strata(&dry);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("tag prod was not made by strata"), "{text}");

    args.push("--json");
    let report = json(&world.strata(&args));
    assert_eq!(report["deleted"], serde_json::json!([]), "{report}");
    let kept = report["kept"].to_string();
    assert!(
        kept.contains(r#"{"reason":"foreign_tag","tag":"prod"}"#),
        "{kept}"
    );
    assert_eq!(
        registry_digest(&format!("{target}:prod")).as_deref(),
        Some(older_digest)
    );
}

#[test]
fn registry_gc_from_another_home_sees_the_usage_recorded_in_the_registry() {
    let reg = TestRegistry::start();
    let machine_a = World::new();
    let machine_b = machine_a.with_home("b");
    let target = format!("{}/team/env", reg.addr());
    let built = two_generations_pushed(&machine_a, &target);
    let digest = |v: &Value| v["digest"].as_str().unwrap().to_string();
    let record_of = |v: &Value| {
        let hex = digest(v).trim_start_matches("sha256:").to_string();
        format!("{target}:strata-usage-{hex}")
    };
    assert!(registry_digest(&record_of(&built[0])).is_some());

    // B has no push record of its own: A's records in the registry say both are recent.
    let report = json(&machine_b.strata(&[
        "gc",
        "--registry",
        &target,
        "--json",
        "--keep-days",
        "14",
        "--keep-newest",
        "0",
    ]));
    assert_eq!(report["deleted"], serde_json::json!([]), "{report}");
    let kept = report["kept"].as_array().unwrap();
    assert_eq!(
        kept.len(),
        2,
        "usage records are not environments: {report}"
    );
    for k in kept {
        assert!(
            k["reasons"].to_string().contains(r#""reason":"recent""#),
            "{k}"
        );
    }

    // With keep-days 0 and keep-newest 1, B ranks A's pushes: the older one goes, with its
    // usage record; the newer stays.
    let mut args = vec!["gc", "--registry", &target, "--json"];
    args.extend_from_slice(POLICY);
    let report = json(&machine_b.strata(&args));
    let deleted: Vec<String> = report["deleted"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["digest"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(deleted, vec![digest(&built[0])], "{report}");
    assert!(registry_digest(&record_of(&built[0])).is_none());
    assert!(registry_digest(&record_of(&built[1])).is_some());
    assert_pullable(
        built[1]["image"].as_str().unwrap(),
        machine_b.dir.path(),
        "newer",
    );
}
