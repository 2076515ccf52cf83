//! Shipping a working tree with a job: `strata submit` packs it, the job runs it at /work on
//! top of its environment (runc, the real agent), `strata status` says what was shipped, GC
//! keeps it while the job needs it, and secrets are refused.

mod common;
#[path = "../crates/strata-registry/tests/support/registry.rs"]
mod registry;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use common::*;
use serde_json::Value;

/// git with no user or system configuration.
fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_AUTHOR_NAME", "t")
        .env("GIT_AUTHOR_EMAIL", "t@t")
        .env("GIT_COMMITTER_NAME", "t")
        .env("GIT_COMMITTER_EMAIL", "t@t")
        .output()
        .expect("run git");
    assert!(out.status.success(), "git {args:?}: {}", stderr(&out));
    String::from_utf8(out.stdout).unwrap()
}

/// A project: a script importing a helper package of its own and reading a config file,
/// a git-ignored data directory, in a git repository with one commit.
fn project(world: &World) -> PathBuf {
    let root = world.dir.path().join("project");
    fs::create_dir_all(root.join("helpers")).unwrap();
    fs::create_dir_all(root.join("conf")).unwrap();
    fs::create_dir_all(root.join("data")).unwrap();
    fs::write(
        root.join("main.py"),
        "import sys\nfrom helpers.util import describe\n\
         print(describe(sys.argv[1:], open('conf/settings.txt').read().strip()))\n",
    )
    .unwrap();
    fs::write(root.join("helpers/__init__.py"), "").unwrap();
    fs::write(
        root.join("helpers/util.py"),
        "def describe(args, setting):\n    return f'args={args} setting={setting} sum={sum(range(10))}'\n",
    )
    .unwrap();
    fs::write(root.join("conf/settings.txt"), "lr-schedule=cosine\n").unwrap();
    fs::write(root.join(".gitignore"), "data/\n").unwrap();
    let big = fs::File::create(root.join("data/big.bin")).unwrap();
    big.set_len(50_000_000).unwrap();
    git(&root, &["init", "-q"]);
    git(&root, &["add", "-A"]);
    git(&root, &["commit", "-q", "-m", "project"]);
    root
}

/// `strata submit --json` in `dir` with the fixture environment `shared-a.txt`.
fn submit_in(world: &World, dir: &Path, extra: &[&str], command: &[&str]) -> Output {
    let env = world.env_args("shared-a.txt");
    let mut args = vec!["submit", "--json"];
    args.extend(env.iter().map(String::as_str));
    args.extend_from_slice(extra);
    args.push("--");
    args.extend_from_slice(command);
    world.command(&args).current_dir(dir).output().unwrap()
}

fn submitted(out: &Output) -> Value {
    assert!(out.status.success(), "submit failed: {}", stderr(out));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn blob_exists(world: &World, digest: &str) -> bool {
    let hex = digest.strip_prefix("sha256:").unwrap();
    world.oci().join("blobs/sha256").join(hex).is_file()
}

#[test]
#[cfg_attr(skip_root, ignore = "needs root; STRATA_SKIP_ROOT=1")]
fn a_job_runs_the_shipped_tree_as_it_runs_locally() {
    let world = World::new();
    let root = project(&world);
    let args = ["python", "main.py", "--lr", "0.1"];
    let local = Command::new("python3")
        .args(&args[1..])
        .current_dir(&root)
        .output()
        .unwrap();
    assert!(local.status.success(), "{}", stderr(&local));
    let local = String::from_utf8(local.stdout).unwrap();

    let _agent = AgentProcess::start(&world);
    let first = submitted(&submit_in(&world, &root, &[], &args));
    let code = &first["code"];
    assert_eq!(code["dest"], "/work");
    assert_eq!(code["files"], 5, "{code}");
    assert!(
        code["bytes"].as_u64().unwrap() < 10_000,
        "the data was shipped: {code}"
    );
    let id = first["id"].as_str().unwrap();
    let s = world.wait_for(id, TERMINAL, Duration::from_secs(180));
    assert_eq!(s["state"], "succeeded", "{s}");
    let log = String::from_utf8(world.strata(&["logs", id]).stdout).unwrap();
    assert_eq!(log, local, "the job's output differs from the local run's");

    // The job records what was shipped.
    let head = git(&root, &["rev-parse", "HEAD"]);
    assert_eq!(s["code"]["git_commit"], head.trim());
    assert_eq!(s["code"]["git_dirty"], false);
    assert_eq!(s["code"]["layer"]["digest"], code["layer"]["digest"]);
    let text = world.strata(&["status", id]);
    let text = String::from_utf8(text.stdout).unwrap();
    assert!(
        text.contains(code["layer"]["digest"].as_str().unwrap()),
        "{text}"
    );
    assert!(text.contains(head.trim()), "{text}");

    // The job's image is the environment's layers, shared, plus the code layer.
    let built = world.build_ok(&requirements("shared-a.txt"), &[]);
    let env_layers = world.manifest_layers(built["digest"].as_str().unwrap());
    let job_layers = world.manifest_layers(s["image_digest"].as_str().unwrap());
    assert_eq!(job_layers[..job_layers.len() - 1], env_layers[..]);
    assert_eq!(
        job_layers.last().unwrap(),
        code["layer"]["digest"].as_str().unwrap()
    );

    // An unchanged tree ships the same layer without packing it; a change is dirty and new.
    let again = submitted(&submit_in(&world, &root, &[], &args));
    assert_eq!(again["code"]["layer"], code["layer"]);
    assert_eq!(again["code"]["reused"], true);
    fs::write(root.join("conf/settings.txt"), "lr-schedule=linear\n").unwrap();
    let changed = submitted(&submit_in(&world, &root, &[], &args));
    assert_ne!(changed["code"]["layer"]["digest"], code["layer"]["digest"]);
    assert_eq!(changed["code"]["git"]["dirty"], true);
    let id = changed["id"].as_str().unwrap();
    let s = world.wait_for(id, TERMINAL, Duration::from_secs(180));
    assert_eq!(s["state"], "succeeded", "{s}");
    let log = String::from_utf8(world.strata(&["logs", id]).stdout).unwrap();
    assert!(log.contains("setting=lr-schedule=linear"), "{log}");
}

#[test]
fn gc_keeps_a_queued_jobs_code_and_collects_it_after() {
    let world = World::new();
    let root = project(&world);
    // No agent: the job stays queued, holding its code layer.
    let out = submitted(&submit_in(&world, &root, &[], &["python", "main.py"]));
    let layer = out["code"]["layer"]["digest"].as_str().unwrap().to_string();
    let id = out["id"].as_str().unwrap().to_string();
    assert!(blob_exists(&world, &layer));
    // Older than any grace period: only the job's lease can keep it.
    let hex = layer.strip_prefix("sha256:").unwrap();
    let blob = world.oci().join("blobs/sha256").join(hex);
    let touched = Command::new("touch")
        .args(["-d", "2 hours ago"])
        .arg(&blob)
        .status()
        .unwrap();
    assert!(touched.success());
    let gc = [
        "gc",
        "--grace",
        "0s",
        "--keep-days",
        "0",
        "--keep-newest",
        "0",
    ];
    let run = world.strata(&gc);
    assert!(run.status.success(), "{}", stderr(&run));
    assert!(blob_exists(&world, &layer), "gc took a queued job's code");
    let cancel = world.strata(&["cancel", &id]);
    assert!(cancel.status.success(), "{}", stderr(&cancel));
    let run = world.strata(&gc);
    assert!(run.status.success(), "{}", stderr(&run));
    assert!(
        !blob_exists(&world, &layer),
        "the code of a cancelled job was kept: {} {}",
        String::from_utf8_lossy(&run.stdout),
        stderr(&run)
    );
}

#[test]
fn secrets_are_refused_by_name_and_included_on_request() {
    let world = World::new();
    let root = project(&world);
    fs::write(root.join(".env"), "API_TOKEN=do-not-ship\n").unwrap();
    let out = submit_in(&world, &root, &[], &["python", "main.py"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains(".env"), "{err}");
    assert!(err.contains("--include"), "{err}");
    assert!(!err.contains("do-not-ship"), "{err}");
    let jobs = world.strata(&["jobs", "--all", "--json"]);
    let listed: Value = serde_json::from_slice(&jobs.stdout).unwrap();
    assert_eq!(
        listed.as_array().map(Vec::len),
        Some(0),
        "a refused job was queued"
    );

    let out = submitted(&submit_in(
        &world,
        &root,
        &["--include", ".env"],
        &["python", "main.py"],
    ));
    assert_eq!(out["code"]["included"], serde_json::json!([".env"]));
}

#[test]
fn a_tree_over_the_limit_is_refused_naming_its_largest_files() {
    let world = World::new();
    let root = project(&world);
    fs::write(root.join("weights.bin"), vec![7u8; 300_000]).unwrap();
    let out = submit_in(
        &world,
        &root,
        &["--max-code-size", "100kB"],
        &["python", "main.py"],
    );
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("weights.bin (300.0 kB)"), "{err}");
    // --no-code ships nothing (and so needs no limit).
    let out = submitted(&submit_in(
        &world,
        &root,
        &["--max-code-size", "100kB", "--no-code"],
        &["python", "-c", "print(1)"],
    ));
    assert!(out["code"].is_null(), "{out}");
}

/// What the Kubernetes launcher pushes for a job with code (the same `PushTarget::push`):
/// one manifest whose environment layers the registry has already, so only the code layer
/// and the config travel.
#[test]
fn a_job_image_pushes_only_its_code_layer_and_config() {
    let reg = registry::TestRegistry::start();
    let world = World::new();
    let root = project(&world);
    let target = format!("{}/team/env", reg.addr());
    let built = world.build_ok(&requirements("shared-a.txt"), &["--push", &target]);
    let tag = built["tag"].as_str().unwrap();
    let code_dir = root.display().to_string();
    let out = world
        .command(&[
            "submit", "--json", "--image", tag, "--code", &code_dir, "--", "python", "main.py",
        ])
        .output()
        .unwrap();
    let job = submitted(&out);
    let s = world.status(job["id"].as_str().unwrap());
    assert_eq!(
        s["state"], "ready",
        "an image job is resolved at submit: {s}"
    );
    let image = s["image_digest"].as_str().unwrap();
    assert_ne!(image, built["digest"].as_str().unwrap());
    let env_layers = world.manifest_layers(built["digest"].as_str().unwrap());
    let job_layers = world.manifest_layers(image);
    assert_eq!(job_layers.len(), env_layers.len() + 1);
    let pushed = world.strata(&["push", image, &target, "--tag", "job-test", "--json"]);
    assert!(pushed.status.success(), "{}", stderr(&pushed));
    let pushed: Value = serde_json::from_slice(&pushed.stdout).unwrap();
    assert_eq!(pushed["blobs_uploaded"], 2, "{pushed}");
    assert_eq!(pushed["blobs_present"], env_layers.len(), "{pushed}");
}
