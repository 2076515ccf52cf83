//! Submitting through `strata server` from another machine: the laptop (its own STRATA_HOME)
//! builds the environment, adds its working tree and pushes the image to the team's
//! repository of a real registry (`docker-registry` on 127.0.0.1); the server takes it by
//! digest from there only, once the registry has it; the agent pulls it and runs it in runc.

mod common;

#[path = "../crates/strata-registry/tests/support/registry.rs"]
mod registry;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use common::server::{team_world, token, Server, CONFIG};
use common::*;
use registry::TestRegistry;
use reqwest::blocking::Client;
use reqwest::StatusCode;
use serde_json::{json, Value};

fn http() -> Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    Client::new()
}

/// The server's world: the team queues, and `[server] registry` on `registry` when given.
fn server_world(registry: Option<&TestRegistry>) -> World {
    let world = World::new();
    write_config(&world, registry);
    world
}

fn write_config(world: &World, registry: Option<&TestRegistry>) {
    let server = match registry {
        Some(r) => format!("\n[server]\nregistry = \"{}/strata\"\n", r.addr()),
        None => String::new(),
    };
    std::fs::write(
        world.dir.path().join("strata.toml"),
        format!("{CONFIG}{server}"),
    )
    .unwrap();
}

/// `POST /api/v1/jobs` with `body` (and an idempotency key): status and body.
fn post(server: &Server, token: &str, body: &Value, key: Option<&str>) -> (StatusCode, Value) {
    let mut request = http()
        .post(server.url("/api/v1/jobs"))
        .bearer_auth(token)
        .json(body);
    if let Some(key) = key {
        request = request.header("Idempotency-Key", key);
    }
    let response = request.send().unwrap();
    let status = response.status();
    let text = response.text().unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

fn get(server: &Server, token: &str, path: &str) -> (StatusCode, Value) {
    let response = http()
        .get(server.url(path))
        .bearer_auth(token)
        .send()
        .unwrap();
    let status = response.status();
    (status, response.json().unwrap())
}

fn submit_body(image: &str) -> Value {
    json!({ "queue": "vision", "tier": "cpu", "image": image, "command": ["true"] })
}

/// Every job of the server's database, read there (not through the server).
fn all_jobs(world: &World) -> Vec<Value> {
    let out = world.strata(&["jobs", "--all", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The server's jobs as stored: (id, environment as JSON, idempotency key).
fn stored(world: &World) -> Vec<(String, String, Option<String>)> {
    let out = Command::new("python3")
        .args([
            "-c",
            "import json,sqlite3,sys; c=sqlite3.connect(sys.argv[1]); print(json.dumps(c.execute('SELECT id, environment, idempotency_key FROM jobs ORDER BY seq').fetchall()))",
        ])
        .arg(world.home.join("strata.db"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// A laptop: its own STRATA_HOME, and a project directory with `reqs.txt` and a data file.
fn laptop(world: &World) -> (World, PathBuf) {
    let laptop = world.with_home("laptop");
    let project = laptop.dir.path().join("project");
    std::fs::create_dir_all(&project).unwrap();
    std::fs::copy(requirements("basic.txt"), project.join("reqs.txt")).unwrap();
    std::fs::write(project.join("hello.txt"), "shipped from the laptop\n").unwrap();
    (laptop, project)
}

/// The laptop's `strata submit` through the server, offline against the fixture wheels.
fn remote_submit(
    laptop: &World,
    project: &PathBuf,
    server: &Server,
    token: &str,
    args: &[&str],
) -> std::process::Output {
    let wheels = laptop.wheels.display().to_string();
    let base = base_ref();
    laptop
        .command(
            &[
                &[
                    "submit",
                    "-q",
                    "vision",
                    "--base",
                    &base,
                    "-f",
                    &wheels,
                    "--no-index",
                ],
                args,
            ]
            .concat(),
        )
        .current_dir(project)
        .env("STRATA_SERVER", &server.url)
        .env("STRATA_TOKEN", token)
        .output()
        .unwrap()
}

/// The issue's case: `strata submit -r reqs.txt -- python -c 'print(42)'` on a laptop with
/// STRATA_SERVER set runs on the server's machine, in runc, and `strata logs` prints 42; the
/// working tree came along; the server read no path of the laptop (its store held nothing
/// before: the agent pulled the image from the team's repository).
#[test]
#[cfg_attr(skip_root, ignore = "needs root; STRATA_SKIP_ROOT=1")]
fn a_laptop_submits_with_requirements_and_its_working_tree() {
    let registry = TestRegistry::start();
    let world = server_world(Some(&registry));
    let (_, alice) = token(&world, "alice", "vision", false);
    let _agent = AgentProcess::start(&world);
    let server = Server::start(&world, &[]);
    let (laptop, project) = laptop(&world);

    let script = "print(42); print(open('hello.txt').read().strip())";
    let out = remote_submit(
        &laptop,
        &project,
        &server,
        &alice,
        &["-r", "reqs.txt", "--", "python", "-c", script],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let status = world.wait_for(&id, TERMINAL, Duration::from_secs(180));
    assert_eq!(status["state"], "succeeded", "{status}");

    // The job's image is the team's, by digest.
    let jobs = stored(&world);
    assert_eq!(jobs.len(), 1);
    let team_repo = format!("{}/strata/vision@sha256:", registry.addr());
    assert!(jobs[0].1.contains(&team_repo), "{jobs:?}");

    let logs = laptop
        .command(&["logs", &id])
        .env("STRATA_SERVER", &server.url)
        .env("STRATA_TOKEN", &alice)
        .output()
        .unwrap();
    assert!(logs.status.success(), "{}", stderr(&logs));
    assert_eq!(
        String::from_utf8_lossy(&logs.stdout),
        "42\nshipped from the laptop\n"
    );
    // The CLI named its submit with an idempotency key, kept with the job.
    assert!(
        jobs[0].2.as_ref().is_some_and(|k| k.len() == 32),
        "{jobs:?}"
    );
}

/// From a working tree, with neither -r nor --image: the environment is detected on the
/// laptop (the project's requirements.txt), built there and sent with the tree.
#[test]
#[cfg_attr(skip_root, ignore = "needs root; STRATA_SKIP_ROOT=1")]
fn a_laptop_submits_its_working_tree() {
    let registry = TestRegistry::start();
    let world = server_world(Some(&registry));
    let (_, alice) = token(&world, "alice", "vision", false);
    let _agent = AgentProcess::start(&world);
    let server = Server::start(&world, &[]);
    let (laptop, project) = laptop(&world);
    std::fs::rename(project.join("reqs.txt"), project.join("requirements.txt")).unwrap();
    std::fs::write(
        project.join("main.py"),
        "import alpha\nprint(42, open('hello.txt').read().strip())\n",
    )
    .unwrap();
    let out = remote_submit(
        &laptop,
        &project,
        &server,
        &alice,
        &["--", "python", "main.py"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let status = world.wait_for(&id, TERMINAL, Duration::from_secs(180));
    assert_eq!(status["state"], "succeeded", "{status}");
    let logs = world.strata(&["logs", &id]);
    assert_eq!(
        String::from_utf8_lossy(&logs.stdout),
        "42 shipped from the laptop\n"
    );
}

/// Without `[server] registry` a laptop cannot send `-r`: it is told so, and nothing is built
/// or stored.
#[test]
fn requirements_need_a_team_registry() {
    let world = server_world(None);
    let (_, alice) = token(&world, "alice", "vision", false);
    let server = Server::start(&world, &[]);
    let (laptop, project) = laptop(&world);
    let out = remote_submit(
        &laptop,
        &project,
        &server,
        &alice,
        &["-r", "reqs.txt", "--", "true"],
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("[server] registry"),
        "{}",
        stderr(&out)
    );
    assert!(all_jobs(&world).is_empty());
    let (status, body) = get(&server, &alice, "/api/v1/registry");
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, json!({ "team": "vision", "repository": null }));
}

/// A team registry that does not answer fails the laptop's submit, naming it, before
/// anything reaches the server: no job is stored.
#[test]
fn an_unreachable_team_registry_fails_the_submit() {
    let world = World::new();
    // A port nothing listens on (bound, then released).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = format!("{CONFIG}\n[server]\nregistry = \"127.0.0.1:{port}/strata\"\n");
    std::fs::write(world.dir.path().join("strata.toml"), config).unwrap();
    let (_, alice) = token(&world, "alice", "vision", false);
    let server = Server::start(&world, &[]);
    let (laptop, project) = laptop(&world);
    let started = std::time::Instant::now();
    let out = remote_submit(
        &laptop,
        &project,
        &server,
        &alice,
        &["-r", "reqs.txt", "--", "true"],
    );
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    let message = stderr(&out);
    assert!(
        message.contains(&format!("127.0.0.1:{port}/strata/vision")),
        "{message}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "{:?}",
        started.elapsed()
    );
    assert!(all_jobs(&world).is_empty());
    // The registry was asked before the build: nothing was built on the laptop either.
    let images = laptop.strata(&["images", "--json"]);
    let images: Value = serde_json::from_slice(&images.stdout).unwrap();
    assert_eq!(images["images"], json!([]), "{images}");
}

/// The server takes a registry image by digest from the team's repository only, and only
/// when the registry has it; a body naming a path is refused; nothing is stored for any.
#[test]
fn registry_images_only_from_the_team_repository_and_only_when_there() {
    let registry = TestRegistry::start();
    let world = server_world(Some(&registry));
    let (_, alice) = token(&world, "alice", "vision", false);
    let server = Server::start(&world, &[]);
    let (status, body) = get(&server, &alice, "/api/v1/registry");
    assert_eq!(status, StatusCode::OK);
    let team_repo = format!("{}/strata/vision", registry.addr());
    assert_eq!(body["repository"], team_repo.as_str());

    // An image the team's repository holds, pushed from a laptop.
    let laptop = world.with_home("laptop");
    let pushed = laptop.build_ok(&requirements("basic.txt"), &["--push", &team_repo]);
    let digest = pushed["digest"].as_str().unwrap().to_string();

    let absent = format!("sha256:{}", "0".repeat(64));
    let refused = [
        (
            format!("{}/strata/nlp@{digest}", registry.addr()),
            "is not team vision's registry repository",
        ),
        (
            format!("other.example.org/strata/vision@{digest}"),
            "other.example.org",
        ),
        (format!("{team_repo}:latest"), "by digest"),
        (format!("{team_repo}@{absent}"), "has no such manifest"),
    ];
    for (image, words) in &refused {
        let (status, body) = post(&server, &alice, &submit_body(image), None);
        assert_eq!(status, StatusCode::BAD_REQUEST, "{image}: {body}");
        let message = body["error"].as_str().unwrap();
        assert!(message.contains(image.as_str()), "{message}");
        assert!(message.contains(words), "{image}: {message}");
    }
    // A path of the client's machine has no field to travel in.
    let mut with_path = submit_body(&format!("{team_repo}@{digest}"));
    with_path["requirements"] = json!("/home/alice/reqs.txt");
    let (status, body) = post(&server, &alice, &with_path, None);
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("requirements"),
        "{body}"
    );
    assert!(all_jobs(&world).is_empty(), "a refused submit stored a job");

    // The pushed one is taken: queued until the agent pulls it.
    let image = format!("{team_repo}@{digest}");
    let (status, body) = post(&server, &alice, &submit_body(&image), None);
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let jobs = all_jobs(&world);
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0]["state"], "queued", "{jobs:?}");
}

/// A submit retried with the same Idempotency-Key by the same user is the first job; another
/// user's same key is their own job; a malformed key is refused.
#[test]
fn a_retried_submit_is_the_same_job() {
    let (world, image) = team_world();
    let (_, alice) = token(&world, "alice", "vision", false);
    let (_, bob) = token(&world, "bob", "vision", false);
    let server = Server::start(&world, &[]);
    let body = submit_body(&image);

    let (status, first) = post(&server, &alice, &body, Some("retry-me-1"));
    assert_eq!(status, StatusCode::CREATED, "{first}");
    let (status, again) = post(&server, &alice, &body, Some("retry-me-1"));
    assert_eq!(status, StatusCode::OK, "{again}");
    assert_eq!(again["id"], first["id"]);
    assert_eq!(all_jobs(&world).len(), 1, "the retry stored a job");
    // The same key with another submit: refused, not answered with the first job.
    let mut changed = body.clone();
    changed["command"] = json!(["python", "-c", "print('another run')"]);
    let (status, refused) = post(&server, &alice, &changed, Some("retry-me-1"));
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{refused}");
    let message = refused["error"].as_str().unwrap();
    assert!(
        message.contains("retry-me-1") && message.contains("new key"),
        "{message}"
    );
    assert_eq!(all_jobs(&world).len(), 1, "the changed submit stored a job");

    let (status, bobs) = post(&server, &bob, &body, Some("retry-me-1"));
    assert_eq!(status, StatusCode::CREATED, "{bobs}");
    assert_ne!(bobs["id"], first["id"]);
    let (status, other) = post(&server, &alice, &body, Some("retry-me-2"));
    assert_eq!(status, StatusCode::CREATED);
    assert_ne!(other["id"], first["id"]);
    // No key: a new job each time.
    let (status, _) = post(&server, &alice, &body, None);
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(all_jobs(&world).len(), 4);

    let long = "k".repeat(129);
    for bad in [long.as_str(), "has space"] {
        let (status, body) = post(&server, &alice, &body, Some(bad));
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad:?}: {body}");
        assert!(body["error"].as_str().unwrap().contains("Idempotency-Key"));
    }
    assert_eq!(all_jobs(&world).len(), 4);
}

/// `GET /api/v1/images` lists the images the team's jobs use, not the server's whole store:
/// another team sees neither the image nor its tag.
#[test]
fn images_are_the_teams_own() {
    let (world, image) = team_world();
    let (_, alice) = token(&world, "alice", "vision", false);
    let (_, carol) = token(&world, "carol", "nlp", false);
    let server = Server::start(&world, &[]);
    let tag = {
        let out = world.strata(&["images", "--json"]);
        let all: Value = serde_json::from_slice(&out.stdout).unwrap();
        all["images"][0]["tag"].as_str().unwrap().to_string()
    };
    let (status, body) = post(&server, &alice, &submit_body(&image), None);
    assert_eq!(status, StatusCode::CREATED, "{body}");

    let (status, vision) = get(&server, &alice, "/api/v1/images");
    assert_eq!(status, StatusCode::OK);
    let digests: Vec<&str> = vision["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["digest"].as_str().unwrap())
        .collect();
    assert_eq!(digests, [image.as_str()]);

    let (status, nlp) = get(&server, &carol, "/api/v1/images");
    assert_eq!(status, StatusCode::OK);
    assert_eq!(nlp["images"], json!([]), "{nlp}");
    assert_eq!(nlp["unique_bytes"], 0);
    let text = nlp.to_string();
    assert!(!text.contains(&image) && !text.contains(&tag), "{text}");
}
