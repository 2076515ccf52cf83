//! `strata submit --output DIR` end to end: a real `strata agent` runs the jobs with runc on
//! the fixture base image and collects what they wrote into `$STRATA_HOME/outputs/<job>/`
//! whatever their outcome; `strata outputs` lists and copies them out.

mod common;

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

/// How long a job may take to reach a state.
const LIMIT: Duration = Duration::from_secs(180);

/// Submits `script` (sh -c) in /work with `outputs/` as its output, in the environment of
/// a fixture requirement set.
fn submit(world: &World, script: &str, extra: &[&str]) -> String {
    let env = world.env_args("shared-a.txt");
    let mut args = vec!["submit", "--json"];
    args.extend(env.iter().map(String::as_str));
    args.extend_from_slice(&["--workdir", "/work", "--output", "outputs/"]);
    args.extend_from_slice(extra);
    args.extend_from_slice(&["--", "sh", "-c", script]);
    let out = world.strata(&args);
    assert!(out.status.success(), "submit failed: {}", stderr(&out));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    v["id"].as_str().unwrap().to_string()
}

fn json(world: &World, args: &[&str]) -> Value {
    let out = world.strata(args);
    assert!(out.status.success(), "{args:?}: {}", stderr(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Writes a model, a 1,000-line CSV in a sub-directory and one file per index, then exits.
fn writer(code: i32) -> String {
    format!(
        "mkdir -p outputs/run && echo model-v1 > outputs/model.txt && \
         seq 1 1000 > outputs/run/metrics.csv && \
         for i in 1 2 3; do echo $i > outputs/run/part-$i; done && exit {code}"
    )
}

/// Every regular file under `dir`: relative path → content.
fn tree(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            let meta = fs::symlink_metadata(&path).unwrap();
            if meta.is_dir() {
                stack.push(path);
            } else {
                assert!(meta.is_file(), "{} is not a file", path.display());
                let rel = path.strip_prefix(dir).unwrap().display().to_string();
                out.push((rel, fs::read(&path).unwrap()));
            }
        }
    }
    out.sort();
    out
}

#[test]
#[cfg_attr(skip_root, ignore = "needs root; STRATA_SKIP_ROOT=1")]
fn outputs_of_failed_and_successful_jobs_are_collected_and_copied_out() {
    let world = World::new();
    let _agent = AgentProcess::start_with_grace(&world, 1);
    let ok = submit(&world, &writer(0), &[]);
    let failed = submit(&world, &writer(1), &[]);
    assert_eq!(world.wait_for(&ok, TERMINAL, LIMIT)["state"], "succeeded");
    assert_eq!(world.wait_for(&failed, TERMINAL, LIMIT)["state"], "failed");

    let mut copies = Vec::new();
    for id in [&ok, &failed] {
        let listed = json(&world, &["outputs", id, "--json"]);
        assert_eq!(listed["state"], "collected", "{listed}");
        let files: Vec<(&str, u64)> = listed["files"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| (f["path"].as_str().unwrap(), f["size"].as_u64().unwrap()))
            .collect();
        assert_eq!(
            files,
            [
                ("outputs/model.txt", 9),
                ("outputs/run/metrics.csv", 3893),
                ("outputs/run/part-1", 2),
                ("outputs/run/part-2", 2),
                ("outputs/run/part-3", 2),
            ],
            "{listed}"
        );
        let to = world.dir.path().join(format!("copy-{id}"));
        let out = world.strata(&["outputs", id, "--to", to.to_str().unwrap()]);
        assert!(out.status.success(), "{}", stderr(&out));
        assert!(String::from_utf8_lossy(&out.stdout).contains("copied 5 files"));
        copies.push(tree(&to));
    }
    assert_eq!(copies[0], copies[1], "a failed job's outputs differ");
    assert!(copies[0].contains(&("outputs/model.txt".into(), b"model-v1\n".to_vec())));

    // The job's container state goes (its cleanup follows the recorded end); its outputs
    // stay, through a GC as well.
    let start = Instant::now();
    while fs::read_dir(world.home.join("run/jobs"))
        .unwrap()
        .next()
        .is_some()
    {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "job directories left"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(world
        .home
        .join("outputs")
        .join(&ok)
        .join("files/outputs/model.txt")
        .is_file());
    let out = world.strata(&[
        "gc",
        "--keep-days",
        "0",
        "--keep-newest",
        "0",
        "--grace",
        "0s",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(world
        .home
        .join("outputs")
        .join(&ok)
        .join("files/outputs/model.txt")
        .is_file());
    // Only --delete removes them.
    let deleted = json(&world, &["outputs", &ok, "--delete", "--json"]);
    assert_eq!(deleted["deleted"], true);
    assert!(!world.home.join("outputs").join(&ok).exists());
    assert!(world.home.join("outputs").join(&failed).exists());
}

#[test]
#[cfg_attr(skip_root, ignore = "needs root; STRATA_SKIP_ROOT=1")]
fn a_planted_symlink_is_not_followed_and_the_limits_cut_with_a_note() {
    let world = World::new();
    fs::write(
        world.dir.path().join("strata.toml"),
        "[outputs]\nmax_size = \"1M\"\n",
    )
    .unwrap();
    let _agent = AgentProcess::start_with_grace(&world, 1);
    let script = "mkdir -p outputs && echo kept > outputs/small.txt && ln -s /etc outputs/evil && \
                  head -c 2097152 /dev/zero > outputs/big.bin && truncate -s 20G outputs/huge && exit 3";
    let id = submit(&world, script, &[]);
    assert_eq!(world.wait_for(&id, TERMINAL, LIMIT)["state"], "failed");
    let listed = json(&world, &["outputs", &id, "--json"]);
    let paths: Vec<&str> = listed["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap())
        .collect();
    assert_eq!(paths, ["outputs/small.txt"], "{listed}");
    assert_eq!(listed["collected"]["truncated"], true, "{listed}");
    let text = String::from_utf8_lossy(&world.strata(&["outputs", &id]).stdout).into_owned();
    assert!(text.contains("evil: a symlink (-> /etc)"), "{text}");
    assert!(text.contains("big.bin: 2097152 bytes"), "{text}");
    assert!(text.contains("PARTIAL"), "{text}");
    // Nothing of the host's /etc came along.
    let files = world.home.join("outputs").join(&id).join("files/outputs");
    assert!(fs::symlink_metadata(files.join("evil")).is_err());
}

#[test]
#[cfg_attr(skip_root, ignore = "needs root; STRATA_SKIP_ROOT=1")]
fn a_running_job_has_no_outputs_yet_and_a_cancelled_one_has_its_own() {
    let world = World::new();
    let _agent = AgentProcess::start_with_grace(&world, 1);
    let id = submit(
        &world,
        "mkdir -p outputs && echo step-1 > outputs/checkpoint && echo ready && sleep 600",
        &[],
    );
    world.wait_for(&id, &["running"], LIMIT);
    let start = Instant::now();
    while !String::from_utf8_lossy(&world.strata(&["logs", &id]).stdout).contains("ready") {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "never got ready"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = world.strata(&["outputs", &id]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("collected when it ends"), "{text}");
    let to = world.dir.path().join("early");
    let out = world.strata(&["outputs", &id, "--to", to.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("collected when it ends"),
        "{}",
        stderr(&out)
    );

    assert!(world.strata(&["cancel", &id]).status.success());
    assert_eq!(world.wait_for(&id, TERMINAL, LIMIT)["state"], "cancelled");
    let out = world.strata(&["outputs", &id, "--to", to.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        fs::read_to_string(to.join("outputs/checkpoint")).unwrap(),
        "step-1\n"
    );

    // A job submitted without --output says so.
    let req = requirements("shared-a.txt").display().to_string();
    let wheels = world.wheels.display().to_string();
    let base = base_ref();
    let plain = json(
        &world,
        &[
            "submit",
            "--json",
            "-r",
            &req,
            "--base",
            &base,
            "-f",
            &wheels,
            "--no-index",
            "--",
            "true",
        ],
    );
    let plain = plain["id"].as_str().unwrap();
    world.wait_for(plain, TERMINAL, LIMIT);
    let text = String::from_utf8_lossy(&world.strata(&["outputs", plain]).stdout).into_owned();
    assert!(text.contains("without --output"), "{text}");
    // And `..` is refused at submit.
    let out = world.strata(&["submit", "--image", "x", "--output", "../etc", "--", "true"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("`..` is not allowed"),
        "{}",
        stderr(&out)
    );
}
