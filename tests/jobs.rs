//! Jobs end to end: `strata submit` and a real `strata agent` running them with runc on the
//! fixture base image; checked from outside strata (processes, mounts, runc state).

mod common;

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

fn submit(world: &World, args: &[&str]) -> String {
    let out = world.strata(&[&["submit", "--json"], args].concat());
    assert!(out.status.success(), "submit failed: {}", stderr(&out));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    v["id"].as_str().unwrap().to_string()
}

/// Submits a job in the environment of a fixture requirement set.
fn submit_env(world: &World, requirements_file: &str, extra: &[&str], command: &[&str]) -> String {
    let req = requirements(requirements_file).display().to_string();
    let wheels = world.wheels.display().to_string();
    let base = base_ref();
    let mut args = vec!["-r", &req, "--base", &base, "-f", &wheels, "--no-index"];
    args.extend_from_slice(extra);
    args.push("--");
    args.extend_from_slice(command);
    submit(world, &args)
}

fn logs(world: &World, id: &str) -> String {
    String::from_utf8_lossy(&world.strata(&["logs", id]).stdout).into_owned()
}

/// Nothing of strata's containers is left: no runc state, no overlay mount, no process
/// whose command line carries `marker`. The agent cleans an attempt up just after it
/// records its end, so a job seen ended may still be cleaned up for a moment: this waits
/// a few seconds for that, and fails with what is still there.
fn assert_nothing_left(world: &World, marker: &str) {
    let start = Instant::now();
    loop {
        let left = what_is_left(world, marker);
        if left.is_empty() {
            return;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "{left}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// What of strata's containers is still there, in words ("" for nothing).
fn what_is_left(world: &World, marker: &str) -> String {
    let runc_root = world.home.join("run/runc");
    let list = Command::new("runc")
        .arg("--root")
        .arg(&runc_root)
        .args(["list", "-q"])
        .output()
        .unwrap();
    let listed = String::from_utf8_lossy(&list.stdout).trim().to_string();
    if !listed.is_empty() {
        return format!("runc still lists containers: {listed}");
    }
    let mounts = fs::read_to_string("/proc/self/mountinfo").unwrap();
    let home = world.home.display().to_string();
    if mounts.contains(&home) {
        return format!("a mount under {home} is left");
    }
    for entry in fs::read_dir("/proc").unwrap().flatten() {
        let cmdline = fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmdline.contains(marker) {
            return format!("process left: {cmdline}");
        }
    }
    String::new()
}

fn extractions(home: &Path) -> usize {
    fs::read_to_string(home.join("rootfs/extractions.log"))
        .map(|t| t.lines().filter(|l| !l.is_empty()).count())
        .unwrap_or(0)
}

#[test]
#[cfg_attr(skip_root, ignore = "needs root; STRATA_SKIP_ROOT=1")]
fn jobs_run_in_their_environment_and_share_unpacked_layers() {
    let world = World::new();
    let _agent = AgentProcess::start(&world);
    let script = "import alpha, beta, cext, tools, nsp.a; print('imports ok', cext.answer())";
    let first = submit_env(&world, "shared-a.txt", &[], &["python", "-c", script]);
    let second = submit_env(&world, "shared-a.txt", &[], &["python", "-c", script]);
    for id in [&first, &second] {
        let s = world.wait_for(id, TERMINAL, Duration::from_secs(120));
        assert_eq!(s["state"], "succeeded", "{s}");
        assert!(
            logs(&world, id).contains("imports ok 42"),
            "{}",
            logs(&world, id)
        );
    }
    // One build for both (once per spec), and every layer unpacked once: the
    // environment's, and the one code layer of the tree both shipped (the test's directory).
    let image = world.status(&first)["image_digest"].clone();
    assert_eq!(world.status(&second)["image_digest"], image);
    let built = world.build_ok(&requirements("shared-a.txt"), &[]);
    assert_eq!(built["cache"], "hit");
    let layers = built["layers"].as_array().unwrap().len() + 1;
    assert_eq!(
        extractions(&world.home),
        layers,
        "a layer was unpacked twice"
    );
    let third = submit(
        &world,
        &[
            "--image",
            built["tag"].as_str().unwrap(),
            "--",
            "tools-hello",
        ],
    );
    let s = world.wait_for(&third, TERMINAL, Duration::from_secs(60));
    assert_eq!(s["state"], "succeeded", "{s}");
    assert_eq!(logs(&world, &third).trim(), "hello from tools");
    assert_eq!(extractions(&world.home), layers);
}

#[test]
#[cfg_attr(skip_root, ignore = "needs root; STRATA_SKIP_ROOT=1")]
fn cancel_and_timeout_leave_no_process_and_no_mount() {
    let world = World::new();
    let _agent = AgentProcess::start(&world);
    let cancel_marker = "strata-cancel-marker";
    let cancelled = submit_env(
        &world,
        "shared-a.txt",
        &[],
        &[
            "sh",
            "-c",
            "echo started; sleep 600; echo never",
            cancel_marker,
        ],
    );
    world.wait_for(&cancelled, &["running"], Duration::from_secs(120));
    let start = Instant::now();
    while !logs(&world, &cancelled).contains("started") {
        assert!(start.elapsed() < Duration::from_secs(120), "never started");
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = world.strata(&["cancel", &cancelled]);
    assert!(out.status.success(), "{}", stderr(&out));
    let s = world.wait_for(&cancelled, TERMINAL, Duration::from_secs(30));
    assert_eq!(s["state"], "cancelled", "{s}");

    let timed = submit_env(
        &world,
        "shared-a.txt",
        &["--timeout", "2s"],
        &["sh", "-c", "trap '' TERM; sleep 600"],
    );
    let s = world.wait_for(&timed, TERMINAL, Duration::from_secs(60));
    assert_eq!(s["state"], "timed_out", "{s}");
    assert!(
        s["reason"].as_str().unwrap_or("").contains("timed out"),
        "{s}"
    );
    assert_nothing_left(&world, "sleep 600");
    assert_nothing_left(&world, cancel_marker);
}

#[test]
#[cfg_attr(skip_root, ignore = "needs root; STRATA_SKIP_ROOT=1")]
fn thousand_metric_lines_arrive_in_order_and_plot() {
    let world = World::new();
    let _agent = AgentProcess::start(&world);
    let script = "import json\nfor i in range(1000): print('strata:metric', json.dumps({'name': 'loss', 'value': 1000 - i, 'step': i}))";
    let id = submit_env(&world, "shared-a.txt", &[], &["python", "-c", script]);
    let s = world.wait_for(&id, TERMINAL, Duration::from_secs(120));
    assert_eq!(s["state"], "succeeded", "{s}");
    let png = world.dir.path().join("loss.png");
    let out = world.strata(&["metrics", &id, "--json", "--plot", png.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let metrics: Value = serde_json::from_slice(&out.stdout).unwrap();
    let points = metrics[0]["series"][0]["points"].as_array().unwrap();
    assert_eq!(points.len(), 1000);
    for (i, p) in points.iter().enumerate() {
        assert_eq!(p["step"], i as i64);
        assert_eq!(p["value"].as_f64().unwrap(), (1000 - i) as f64);
    }
    let bytes = fs::read(&png).unwrap();
    assert!(bytes.len() > 1000);
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
}

#[test]
#[cfg_attr(skip_root, ignore = "needs root; STRATA_SKIP_ROOT=1")]
fn agent_killed_while_jobs_run_ends_each_job_exactly_once() {
    let world = World::new();
    let agent = AgentProcess::start(&world);
    // A marker unique to this test run keeps parallel runs apart in the process scan.
    let marker = format!("crash-{}", std::process::id());
    let ok = submit_env(
        &world,
        "shared-a.txt",
        &[],
        &["sh", "-c", "echo started; sleep 3; echo finished", &marker],
    );
    let bad = submit_env(
        &world,
        "shared-a.txt",
        &[],
        // Still running when the new agent starts: it is re-adopted, not restarted.
        &["sh", "-c", "echo started; sleep 9; exit 7", &marker],
    );
    // Killed once both containers really run (admission alone is not a start).
    for id in [&ok, &bad] {
        let start = Instant::now();
        while !logs(&world, id).contains("started") {
            assert!(
                start.elapsed() < Duration::from_secs(120),
                "{id} never started"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    // SIGKILL. One job ends while no agent watches it; the other still runs when the
    // agent returns and is re-adopted.
    agent.kill();
    std::thread::sleep(Duration::from_secs(5));
    let later = submit_env(&world, "shared-a.txt", &[], &["echo", "after restart"]);
    let _agent = AgentProcess::start(&world);
    let s = world.wait_for(&ok, TERMINAL, Duration::from_secs(60));
    assert_eq!(s["state"], "succeeded", "{s}");
    let s = world.wait_for(&bad, TERMINAL, Duration::from_secs(60));
    assert_eq!(
        (s["state"].as_str(), s["exit_code"].as_i64()),
        (Some("failed"), Some(7)),
        "{s}"
    );
    let s = world.wait_for(&later, TERMINAL, Duration::from_secs(60));
    assert_eq!(s["state"], "succeeded", "{s}");
    for id in [&ok, &bad, &later] {
        let history = world.status(id)["history"].as_array().unwrap().clone();
        let count = |state: &str| history.iter().filter(|e| e["state"] == state).count();
        assert_eq!(count("running"), 1, "{id} ran more than once: {history:?}");
        let ends: usize = TERMINAL.iter().map(|t| count(t)).sum();
        assert_eq!(ends, 1, "{id} ended {ends} times: {history:?}");
    }
    assert_eq!(logs(&world, &ok).matches("finished").count(), 1);
    assert_nothing_left(&world, &marker);
}

#[test]
#[cfg_attr(skip_root, ignore = "needs root; STRATA_SKIP_ROOT=1")]
fn bad_jobs_get_clear_errors() {
    let world = World::new();
    // Unknown queue or tier: refused at submit, naming the valid ones; nothing queued.
    for (flag, value, valid) in [("--queue", "nosuch", "default"), ("--tier", "gpu3", "gpu8")] {
        let req = requirements("shared-a.txt").display().to_string();
        let out = world.strata(&[
            "submit",
            flag,
            value,
            "-r",
            &req,
            "--base",
            &base_ref(),
            "--",
            "true",
        ]);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(3), "{err}");
        assert!(err.contains(value) && err.contains(valid), "{err}");
    }
    let out = world.strata(&["jobs", "--all", "--json"]);
    assert_eq!(
        serde_json::from_slice::<Value>(&out.stdout).unwrap(),
        serde_json::json!([])
    );

    // Malformed strata.toml: names the key, changes nothing.
    fs::write(
        world.dir.path().join("strata.toml"),
        "[tiers.gpu1]\ngpus = \"one\"\n",
    )
    .unwrap();
    let out = world.strata(&["jobs"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(err.contains("tiers.gpu1.gpus"), "{err}");
    fs::remove_file(world.dir.path().join("strata.toml")).unwrap();

    let _agent = AgentProcess::start(&world);
    // A command the image does not have.
    let missing = submit_env(&world, "shared-a.txt", &[], &["no-such-command", "x"]);
    let s = world.wait_for(&missing, TERMINAL, Duration::from_secs(120));
    assert_eq!(s["state"], "failed", "{s}");
    assert!(
        s["reason"].as_str().unwrap().contains("no-such-command"),
        "{s}"
    );
    // An environment that fails to build fails its job with the build's error.
    let broken = submit_env(&world, "bad-unknown.txt", &[], &["true"]);
    let s = world.wait_for(&broken, TERMINAL, Duration::from_secs(60));
    assert_eq!(s["state"], "failed", "{s}");
    assert!(s["reason"].as_str().unwrap().contains("nosuchpkg"), "{s}");
}

/// `[launcher]` keys that cannot give jobs an id range stop the agent before it runs
/// anything: bad input (exit 3), naming the key and the file.
#[test]
fn the_agent_refuses_an_invalid_id_range() {
    let world = World::new();
    for (toml, key, says) in [
        (
            "[launcher]\nid_range = \"0:65536\"\n",
            "launcher.id_range",
            "0:65536",
        ),
        (
            "[launcher]\nid_range = \"100000\"\n",
            "launcher.id_range",
            "100000",
        ),
        (
            "[launcher]\nsubid_user = \"strata-no-such-user\"\n",
            "launcher.subid_user",
            "strata-no-such-user",
        ),
    ] {
        fs::write(world.dir.path().join("strata.toml"), toml).unwrap();
        let (code, err) = agent_exit(&world);
        assert_eq!(code, Some(3), "{toml}: {err}");
        assert!(err.contains(key), "{toml}: {err}");
        assert!(err.contains(says), "{toml}: {err}");
        assert!(err.contains("strata.toml"), "{toml}: {err}");
    }
}

/// Runs `strata agent` expecting it to stop by itself: its exit code and stderr. An agent
/// that says it runs (it took the configuration), or still runs after a minute, is killed
/// and fails the test.
fn agent_exit(world: &World) -> (Option<i32>, String) {
    let log = world.dir.path().join("agent.stderr");
    let mut child = world
        .command(&["agent", "--tick-ms", "50"])
        .stdout(Stdio::null())
        .stderr(fs::File::create(&log).unwrap())
        .spawn()
        .expect("start the agent");
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        let started = fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("strata agent: running");
        if started || start.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "the agent started instead of refusing: {}",
                fs::read_to_string(&log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    (status.code(), fs::read_to_string(&log).unwrap_or_default())
}
