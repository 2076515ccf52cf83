//! `strata server` end to end: the real binary on 127.0.0.1:0 over a world's STRATA_HOME,
//! tokens made by `strata token`, requests by reqwest and by the CLI itself.

mod common;

use std::io::Read;
use std::process::Stdio;
use std::time::Duration;

use common::server::{team_world, token, Server, CONFIG};
use common::*;
use reqwest::blocking::{Client, RequestBuilder};
use reqwest::StatusCode;
use serde_json::{json, Value};

fn http() -> Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    Client::new()
}

fn with(request: RequestBuilder, token: Option<&str>) -> RequestBuilder {
    match token {
        Some(t) => request.bearer_auth(t),
        None => request,
    }
}

/// Sends, returning the status and the body (JSON when it is JSON, else a string).
fn call(request: RequestBuilder) -> (StatusCode, Value) {
    let response = request.send().expect("request");
    let status = response.status();
    let text = response.text().unwrap();
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, body)
}

fn submit_body(queue: &str, image: &str) -> Value {
    json!({ "queue": queue, "tier": "cpu", "image": image, "command": ["true"] })
}

fn submit(server: &Server, token: &str, queue: &str, image: &str) -> String {
    let (status, body) = call(
        http()
            .post(server.url("/api/v1/jobs"))
            .bearer_auth(token)
            .json(&submit_body(queue, image)),
    );
    assert_eq!(status, StatusCode::CREATED, "{body}");
    body["id"].as_str().unwrap().to_string()
}

/// Every job in the store, read locally (not through the server).
fn all_jobs(world: &World) -> Vec<Value> {
    let out = world.strata(&["jobs", "--all", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    serde_json::from_slice::<Vec<Value>>(&out.stdout).unwrap()
}

/// The requests a caller can make about job `id`: (name, request).
fn job_requests(server: &Server, id: &str) -> Vec<(&'static str, RequestBuilder)> {
    let c = http();
    vec![
        ("status", c.get(server.url(&format!("/api/v1/jobs/{id}")))),
        ("log", c.get(server.url(&format!("/api/v1/jobs/{id}/log")))),
        (
            "log follow",
            c.get(server.url(&format!("/api/v1/jobs/{id}/log?follow=true"))),
        ),
        (
            "metrics",
            c.get(server.url(&format!("/api/v1/metrics?jobs={id}"))),
        ),
        (
            "cancel",
            c.post(server.url(&format!("/api/v1/jobs/{id}/cancel"))),
        ),
    ]
}

#[test]
fn every_endpoint_answers_only_to_its_team() {
    let (world, image) = team_world();
    let (_, alice) = token(&world, "alice", "vision", false);
    let (_, bob) = token(&world, "bob", "vision", false);
    let (_, admin) = token(&world, "vera", "vision", true);
    let (_, carol) = token(&world, "carol", "nlp", false);
    let (revoked_id, revoked) = token(&world, "rex", "vision", false);
    let out = world.strata(&["token", "revoke", &revoked_id]);
    assert!(out.status.success(), "{}", stderr(&out));
    let server = Server::start(&world, &[]);

    let a = submit(&server, &alice, "vision", &image);
    let b = submit(&server, &bob, "vision", &image);
    let c = submit(&server, &carol, "nlp", &image);
    let jobs = all_jobs(&world);
    let user_of = |id: &str| {
        jobs.iter()
            .find(|j| j["id"] == id)
            .map(|j| j["user"].as_str().unwrap().to_string())
    };
    // The user is the token's, whatever the machine's $USER.
    assert_eq!(user_of(&a).as_deref(), Some("alice"));
    assert_eq!(user_of(&c).as_deref(), Some("carol"));

    // No token, an unknown one, a revoked one: 401 on every route, before anything else.
    let unknown = "strata_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA".to_string();
    for token in [
        None,
        Some(unknown.as_str()),
        Some(revoked.as_str()),
        Some(""),
    ] {
        let c = http();
        let mut requests = job_requests(&server, &a);
        requests.extend([
            ("whoami", c.get(server.url("/api/v1/whoami"))),
            ("jobs", c.get(server.url("/api/v1/jobs?all=true"))),
            ("capacity", c.get(server.url("/api/v1/capacity"))),
            ("images", c.get(server.url("/api/v1/images"))),
            (
                "submit",
                c.post(server.url("/api/v1/jobs"))
                    .json(&submit_body("vision", &image)),
            ),
            (
                "submit (malformed)",
                c.post(server.url("/api/v1/jobs"))
                    .header("content-type", "application/json")
                    .body("{"),
            ),
            (
                "status of nothing",
                c.get(server.url("/api/v1/jobs/j-aaaaaaaaaa")),
            ),
        ]);
        for (name, request) in requests {
            let (status, body) = call(with(request, token));
            assert_eq!(
                status,
                StatusCode::UNAUTHORIZED,
                "{name} with {token:?}: {body}"
            );
            assert!(body["error"].as_str().unwrap().contains("token"), "{body}");
        }
    }

    // Another team: the job does not exist, exactly as a job that does not exist.
    let (_, nothing) = call(
        http()
            .get(server.url("/api/v1/jobs/j-aaaaaaaaaa"))
            .bearer_auth(&carol),
    );
    assert_eq!(nothing["error"], "no job j-aaaaaaaaaa");
    for (name, request) in job_requests(&server, &a) {
        let (status, body) = call(request.bearer_auth(&carol));
        assert_eq!(
            status,
            StatusCode::NOT_FOUND,
            "carol {name} of alice's job: {body}"
        );
        assert_eq!(body["error"], format!("no job {a}"), "{name}");
    }
    let (status, listed) = call(
        http()
            .get(server.url("/api/v1/jobs?all=true"))
            .bearer_auth(&carol),
    );
    assert_eq!(status, StatusCode::OK);
    let ids: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec![c.as_str()], "carol lists only nlp's jobs");
    let (status, body) = call(
        http()
            .get(server.url("/api/v1/jobs?queue=vision"))
            .bearer_auth(&carol),
    );
    assert_eq!(
        (status, body["error"].clone()),
        (StatusCode::NOT_FOUND, json!("no queue \"vision\""))
    );
    let before = all_jobs(&world).len();
    for queue in ["vision", "local", "nope"] {
        let (status, body) = call(
            http()
                .post(server.url("/api/v1/jobs"))
                .bearer_auth(&carol)
                .json(&submit_body(queue, &image)),
        );
        assert_eq!(
            status,
            StatusCode::NOT_FOUND,
            "carol submits to {queue}: {body}"
        );
        assert_eq!(body["error"], format!("no queue \"{queue}\""));
    }
    assert_eq!(all_jobs(&world).len(), before, "nothing stored");
    let (_, capacity) = call(
        http()
            .get(server.url("/api/v1/capacity"))
            .bearer_auth(&carol),
    );
    assert_eq!(capacity["queues"], json!(["nlp"]));
    assert_eq!(capacity["team"], "nlp");
    assert!(capacity["tiers"]
        .as_array()
        .unwrap()
        .iter()
        .any(|t| t["tier"] == "cpu"));
    let (status, images) = call(http().get(server.url("/api/v1/images")).bearer_auth(&carol));
    assert_eq!(status, StatusCode::OK);
    assert!(images["images"]
        .as_array()
        .unwrap()
        .iter()
        .any(|i| i["digest"] == image.as_str()));

    // A teammate reads the job but may not cancel it.
    let (_, listed) = call(http().get(server.url("/api/v1/jobs")).bearer_auth(&bob));
    let ids: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec![a.as_str(), b.as_str()]);
    assert!(listed[0]["position"].is_number(), "{listed}");
    for (name, request) in job_requests(&server, &a) {
        // Only the status: a followed log of a job that never runs (no agent) never ends.
        let response = request.bearer_auth(&bob).send().unwrap();
        let expected = if name == "cancel" {
            StatusCode::FORBIDDEN
        } else {
            StatusCode::OK
        };
        assert_eq!(response.status(), expected, "bob {name} of alice's job");
    }
    let (_, status) = call(
        http()
            .get(server.url(&format!("/api/v1/jobs/{a}")))
            .bearer_auth(&bob),
    );
    assert_eq!(status["user"], "alice");
    assert!(
        !status["history"].as_array().unwrap().is_empty(),
        "{status}"
    );
    assert_eq!(
        all_jobs(&world)
            .iter()
            .filter(|j| j["state"] == "cancelled")
            .count(),
        0
    );

    // Her own job, and any of the team's for an admin.
    let (status, body) = call(
        http()
            .post(server.url(&format!("/api/v1/jobs/{a}/cancel")))
            .bearer_auth(&alice),
    );
    assert_eq!(
        (status, body["result"].clone()),
        (StatusCode::OK, json!("cancelled"))
    );
    let (status, body) = call(
        http()
            .post(server.url(&format!("/api/v1/jobs/{b}/cancel")))
            .bearer_auth(&admin),
    );
    assert_eq!(
        (status, body["result"].clone()),
        (StatusCode::OK, json!("cancelled"))
    );
    // An admin of vision is nobody in nlp.
    let (status, _) = call(
        http()
            .post(server.url(&format!("/api/v1/jobs/{c}/cancel")))
            .bearer_auth(&admin),
    );
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, who) = call(http().get(server.url("/api/v1/whoami")).bearer_auth(&admin));
    assert_eq!(
        who,
        json!({"user": "vera", "team": "vision", "admin": true})
    );

    // Revoking a live token takes effect at its next request.
    let out = world.strata(&["token", "revoke", "--user", "bob"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let (status, _) = call(http().get(server.url("/api/v1/jobs")).bearer_auth(&bob));
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // No token reached the server's log (-vv).
    let log = server.stderr.lock().unwrap().clone();
    for secret in [&alice, &bob, &admin, &carol, &revoked] {
        assert!(
            !log.contains(secret.as_str()),
            "a token is in the server's log"
        );
    }
}

#[test]
fn bad_input_gets_a_clear_4xx_and_stores_nothing() {
    let (world, image) = team_world();
    let (_, alice) = token(&world, "alice", "vision", false);
    let server = Server::start(&world, &[]);
    let before = world.snapshot();
    let post = |body: String, content_type: &str| {
        http()
            .post(server.url("/api/v1/jobs"))
            .bearer_auth(&alice)
            .header("content-type", content_type)
            .body(body)
    };
    let json_post = |v: Value| post(v.to_string(), "application/json");
    let mut unknown_field = submit_body("vision", &image);
    unknown_field["user"] = json!("root");
    let mut empty_command = submit_body("vision", &image);
    empty_command["command"] = json!([]);
    let mut bad_tier = submit_body("vision", &image);
    bad_tier["tier"] = json!("gpu99");
    let mut bad_timeout = submit_body("vision", &image);
    bad_timeout["timeout"] = json!("soon");
    let cases: Vec<(&str, RequestBuilder, StatusCode, &str)> = vec![
        (
            "malformed JSON",
            post("{\"queue\": ".into(), "application/json"),
            StatusCode::BAD_REQUEST,
            "JSON",
        ),
        (
            "not JSON",
            post("queue=vision".into(), "text/plain"),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Content-Type",
        ),
        (
            "oversized",
            post(
                format!("{{\"queue\": \"{}\"}}", "x".repeat(128 * 1024)),
                "application/json",
            ),
            StatusCode::PAYLOAD_TOO_LARGE,
            "",
        ),
        (
            "unknown field",
            json_post(unknown_field),
            StatusCode::UNPROCESSABLE_ENTITY,
            "unknown field `user`",
        ),
        (
            "missing field",
            json_post(json!({"queue": "vision"})),
            StatusCode::UNPROCESSABLE_ENTITY,
            "missing field",
        ),
        (
            "no such image",
            json_post(submit_body("vision", "nope:latest")),
            StatusCode::BAD_REQUEST,
            "no image \"nope:latest\"",
        ),
        (
            "image as a path",
            json_post(submit_body("vision", "oci:/etc:passwd")),
            StatusCode::BAD_REQUEST,
            "neither an image of the server's store nor",
        ),
        (
            "empty command",
            json_post(empty_command),
            StatusCode::BAD_REQUEST,
            "command",
        ),
        (
            "unknown tier",
            json_post(bad_tier),
            StatusCode::BAD_REQUEST,
            "gpu99",
        ),
        (
            "bad timeout",
            json_post(bad_timeout),
            StatusCode::BAD_REQUEST,
            "timeout",
        ),
        (
            "path traversal id",
            http()
                .get(server.url("/api/v1/jobs/..%2F..%2Fetc%2Fpasswd"))
                .bearer_auth(&alice),
            StatusCode::BAD_REQUEST,
            "invalid job id",
        ),
        (
            "path traversal log",
            http()
                .get(server.url("/api/v1/jobs/..%2Fstrata.db/log"))
                .bearer_auth(&alice),
            StatusCode::BAD_REQUEST,
            "invalid job id",
        ),
        (
            "SQL-looking id",
            http()
                .get(server.url("/api/v1/jobs/j-aaaaaaaaaa'%20OR%20'1'='1"))
                .bearer_auth(&alice),
            StatusCode::BAD_REQUEST,
            "invalid job id",
        ),
        (
            "SQL-looking cancel",
            http()
                .post(server.url("/api/v1/jobs/1;DROP%20TABLE%20jobs/cancel"))
                .bearer_auth(&alice),
            StatusCode::BAD_REQUEST,
            "invalid job id",
        ),
        (
            "SQL-looking metrics",
            http()
                .get(server.url("/api/v1/metrics?jobs=x'%20OR%201=1--"))
                .bearer_auth(&alice),
            StatusCode::BAD_REQUEST,
            "invalid job id",
        ),
        (
            "bad offset",
            http()
                .get(server.url("/api/v1/jobs/j-aaaaaaaaaa/log?offset=-1"))
                .bearer_auth(&alice),
            StatusCode::BAD_REQUEST,
            "offset",
        ),
        (
            "unknown query key",
            http()
                .get(server.url("/api/v1/jobs?owner=alice"))
                .bearer_auth(&alice),
            StatusCode::BAD_REQUEST,
            "owner",
        ),
        (
            "wrong method",
            http().put(server.url("/api/v1/jobs")).bearer_auth(&alice),
            StatusCode::METHOD_NOT_ALLOWED,
            "method not allowed",
        ),
        (
            "no such route",
            http().get(server.url("/api/v2/jobs")).bearer_auth(&alice),
            StatusCode::NOT_FOUND,
            "no such route",
        ),
    ];
    for (name, request, expected, says) in cases {
        let (status, body) = call(request);
        assert_eq!(status, expected, "{name}: {body}");
        let message = body["error"]
            .as_str()
            .unwrap_or_else(|| panic!("{name}: no JSON error: {body}"));
        assert!(
            message.contains(says),
            "{name}: {message:?} does not say {says:?}"
        );
    }
    assert!(all_jobs(&world).is_empty(), "a refused submit stored a job");
    assert_eq!(
        before,
        world.snapshot(),
        "a refused request changed the store"
    );
}

#[test]
fn tokens_are_stored_hashed_and_shown_once() {
    let world = World::new();
    let (id, secret) = token(&world, "alice", "vision", true);
    assert!(
        secret.starts_with("strata_") && secret.len() >= 7 + 43,
        "{secret}"
    );
    let mut stored = Vec::new();
    for name in ["strata.db", "strata.db-wal"] {
        if let Ok(bytes) = std::fs::read(world.home.join(name)) {
            stored.extend(bytes);
        }
    }
    let stored = String::from_utf8_lossy(&stored);
    assert!(!stored.contains(&secret), "the token is in strata.db");
    assert!(
        stored.contains(&sha256_hex(secret.as_bytes())),
        "its sha256 is not"
    );
    let out = world.strata(&["token", "list"]);
    let listed = String::from_utf8_lossy(&out.stdout);
    assert!(listed.contains(&id) && listed.contains("alice") && !listed.contains(&secret));
    // A second create is a new secret.
    let (_, other) = token(&world, "alice", "vision", true);
    assert_ne!(secret, other);
    let out = world.strata(&["token", "create", "--user", "al ice", "--team", "vision"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains("invalid user \"al ice\""));
    // A team names a namespace and a registry repository: a DNS label.
    for team in ["Vision", "-ml", "ml.ops", "a_b"] {
        let team_arg = format!("--team={team}");
        let out = world.strata(&["token", "create", "--user", "alice", &team_arg]);
        assert_eq!(out.status.code(), Some(3), "{team}: {}", stderr(&out));
        assert!(
            stderr(&out).contains(&format!("invalid team \"{team}\"")),
            "{}",
            stderr(&out)
        );
    }
}

#[test]
fn plain_http_is_refused_off_loopback_and_tls_serves() {
    let world = World::new();
    std::fs::write(world.dir.path().join("strata.toml"), CONFIG).unwrap();
    // A server that would listen runs until killed: give it 10 s to refuse.
    let mut child = world
        .command(&["server", "--listen", "0.0.0.0:0"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = std::time::Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > Duration::from_secs(10) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("strata server listened on 0.0.0.0 over plain HTTP");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(err.contains("refusing plain HTTP on 0.0.0.0:0"), "{err}");

    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let cert_file = world.dir.path().join("cert.pem");
    let key_file = world.dir.path().join("key.pem");
    std::fs::write(&cert_file, cert.cert.pem()).unwrap();
    std::fs::write(&key_file, cert.key_pair.serialize_pem()).unwrap();
    let (_, alice) = token(&world, "alice", "vision", false);
    let server = Server::start(
        &world,
        &[
            "--tls-cert",
            cert_file.to_str().unwrap(),
            "--tls-key",
            key_file.to_str().unwrap(),
        ],
    );
    assert!(
        server.url.starts_with("https://127.0.0.1:"),
        "{}",
        server.url
    );
    let url = server.url.replace("127.0.0.1", "localhost");
    let out = world
        .command(&["jobs"])
        .env("STRATA_SERVER", &url)
        .env("STRATA_TOKEN", &alice)
        .env("STRATA_SERVER_CA", &cert_file)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("JOB"));
    // Without trusting the certificate, the CLI does not talk to it.
    let out = world
        .command(&["jobs"])
        .env("STRATA_SERVER", &url)
        .env("STRATA_TOKEN", &alice)
        .output()
        .unwrap();
    assert!(!out.status.success());
}

/// The routes `/openapi.json` describes are the server's routes, each behind a token.
#[test]
fn openapi_describes_the_routes() {
    let world = World::new();
    let server = Server::start(&world, &[]);
    let (status, spec) = call(http().get(server.url("/openapi.json")));
    assert_eq!(status, StatusCode::OK);
    let mut described: Vec<(String, String)> = spec["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, item)| {
            item.as_object()
                .unwrap()
                .keys()
                .map(move |m| (m.clone(), path.clone()))
        })
        .collect();
    described.sort();
    let mut routes: Vec<(String, String)> = strata_server::api::ROUTES
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    routes.sort();
    assert_eq!(described, routes);
    for (method, path) in routes {
        let url = server.url(
            &path
                .replace("{id}", "j-aaaaaaaaaa")
                .replace("{path}", "run/a.txt"),
        );
        let request = match method.as_str() {
            "get" => http().get(url),
            "post" => http().post(url),
            "delete" => http().delete(url),
            other => panic!("method {other}"),
        };
        let (status, _) = call(request);
        assert_eq!(
            status,
            StatusCode::UNAUTHORIZED,
            "{method} {path} is not routed"
        );
    }
}

/// `jobs`, `status`, `logs` and `metrics` print the same through the server as on the
/// machine itself, for a job submitted through the server and run by the real agent; the
/// login file is private to its owner.
#[test]
#[cfg_attr(skip_root, ignore = "needs root; STRATA_SKIP_ROOT=1")]
fn the_cli_prints_the_same_through_the_server() {
    let (world, image) = team_world();
    let (_, alice) = token(&world, "alice", "vision", false);
    let _agent = AgentProcess::start(&world);
    let server = Server::start(&world, &[]);
    let config_home = world.dir.path().join("config");
    let remote = |args: &[&str]| {
        let out = world
            .command(args)
            .env("XDG_CONFIG_HOME", &config_home)
            .env("STRATA_SERVER", &server.url)
            .env("STRATA_TOKEN", &alice)
            .output()
            .unwrap();
        assert!(out.status.success(), "remote {args:?}: {}", stderr(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let script = "import json, os\nprint('hello from the job')\nfor i in range(3): print('strata:metric', json.dumps({'name': 'loss', 'value': 3 - i, 'step': i}))\nos.makedirs('outputs/run one')\nopen('outputs/model.txt', 'w').write('model-v1')\nopen('outputs/run one/metrics.csv', 'w').write('1,2,3\\n' * 1000)";
    let id = remote(&[
        "submit",
        "-q",
        "vision",
        "--image",
        &image,
        "--workdir",
        "/work",
        "--output",
        "outputs/",
        "--",
        "python",
        "-c",
        script,
    ]);
    let id = id.trim().to_string();
    world.wait_for(&id, &["succeeded", "failed"], Duration::from_secs(120));
    // Metrics are ingested when the job's end is recorded; wait for them.
    let start = std::time::Instant::now();
    while !String::from_utf8_lossy(&world.strata(&["metrics", &id]).stdout).contains("loss") {
        assert!(start.elapsed() < Duration::from_secs(30), "no metrics");
        std::thread::sleep(Duration::from_millis(100));
    }
    let local = |args: &[&str]| {
        let out = world
            .command(args)
            .env("XDG_CONFIG_HOME", &config_home)
            .output()
            .unwrap();
        assert!(out.status.success(), "local {args:?}: {}", stderr(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    for args in [
        vec!["jobs", "--all"],
        vec!["jobs", "--all", "--json"],
        vec!["status", &id],
        vec!["status", &id, "--json"],
        vec!["logs", &id],
        vec!["logs", "-f", &id],
        vec!["metrics", &id],
        vec!["metrics", &id, "--json"],
    ] {
        assert_eq!(remote(&args), local(&args), "strata {args:?}");
        // It did go through the server: a revoked-looking token fails it.
        let out = world
            .command(&args)
            .env("STRATA_SERVER", &server.url)
            .env("STRATA_TOKEN", "strata_unknown")
            .output()
            .unwrap();
        assert_eq!(
            out.status.code(),
            Some(3),
            "strata {args:?} with an unknown token"
        );
        assert!(stderr(&out).contains("401"), "{}", stderr(&out));
    }
    assert!(local(&["status", &id]).contains("succeeded"));
    assert!(local(&["logs", &id]).contains("hello from the job"));
    outputs_through_the_server(&world, &server, &id, &remote, &local);
    assert!(local(&["status", &id]).contains("user alice"));

    // `logs -f` through the server follows a running job to its end.
    let slow = "import time\nprint('first', flush=True)\ntime.sleep(2)\nprint('last', flush=True)";
    let slow_id = remote(&[
        "submit", "-q", "vision", "--image", &image, "--", "python", "-c", slow,
    ]);
    let followed = remote(&["logs", "-f", slow_id.trim()]);
    assert_eq!(followed, "first\nlast\n");
    let state = world.status(slow_id.trim())["state"].clone();
    assert_eq!(state, "succeeded", "logs -f ended before the job");

    // `strata login`: the token in a 0600 file, used without STRATA_SERVER.
    let out = world
        .command(&["login", &server.url, "--from-env"])
        .env("XDG_CONFIG_HOME", &config_home)
        .env("STRATA_TOKEN", &alice)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let file = config_home.join("strata/login.json");
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&file).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600);
    let through_login = world
        .command(&["jobs", "--all"])
        .env("XDG_CONFIG_HOME", &config_home)
        .output()
        .unwrap();
    assert!(through_login.status.success(), "{}", stderr(&through_login));
    // The server listed the team's jobs: stopping it makes the same command fail.
    drop(server);
    let out = world
        .command(&["jobs", "--all"])
        .env("XDG_CONFIG_HOME", &config_home)
        .output()
        .unwrap();
    assert!(!out.status.success(), "jobs did not go through the server");
    let out = world
        .command(&["logout"])
        .env("XDG_CONFIG_HOME", &config_home)
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(!file.exists());
}

/// A status through the server answers from views of the queue kept between requests: a
/// job just submitted still has its place (its view is made at once, from the kept
/// scheduler), and what changes after (a job ahead cancelled, locally) shows within the
/// views' lifetime. The status of each job equals the local one.
#[test]
fn statuses_follow_the_queue_as_it_changes() {
    let (world, image) = team_world();
    let server = Server::start(&world, &[]);
    let (_, alice) = token(&world, "alice", "vision", false);
    let position = |id: &str| {
        let (status, body) = call(
            http()
                .get(server.url(&format!("/api/v1/jobs/{id}")))
                .bearer_auth(&alice),
        );
        assert_eq!(status, StatusCode::OK, "{body}");
        body["position"].clone()
    };
    let local = |id: &str| {
        let out = world.strata(&["status", id, "--json"]);
        assert!(out.status.success(), "{}", stderr(&out));
        serde_json::from_slice::<Value>(&out.stdout).unwrap()["position"].clone()
    };
    let mut ids = Vec::new();
    for n in 1..=3 {
        let id = submit(&server, &alice, "vision", &image);
        assert_eq!(position(&id), json!(n), "job {n} just submitted");
        ids.push(id);
    }
    let out = world.strata(&["cancel", &ids[0]]);
    assert!(out.status.success(), "{}", stderr(&out));
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while position(&ids[2]) != json!(2) {
        assert!(
            std::time::Instant::now() < deadline,
            "the cancel never showed through the server: {}",
            position(&ids[2])
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(position(&ids[1]), json!(1));
    assert_eq!(position(&ids[1]), local(&ids[1]));
    // Outputs are collected when a job ends: deleting them before is a conflict.
    let (status, body) = call(
        http()
            .delete(server.url(&format!("/api/v1/jobs/{}/outputs", ids[1])))
            .bearer_auth(&alice),
    );
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(position(&ids[2]), local(&ids[2]));
}

/// `strata outputs` through the server: the same listing as locally (the JSON without the
/// server's own directory), the same files copied out, deleted only by the job's owner or a
/// team admin, nothing for another team, and only listed files served.
fn outputs_through_the_server(
    world: &World,
    server: &Server,
    id: &str,
    remote: &dyn Fn(&[&str]) -> String,
    local: &dyn Fn(&[&str]) -> String,
) {
    // The same but the last line: where the files are (here, or on the server).
    let listing = remote(&["outputs", id]);
    let (files, place) = listing.trim_end().rsplit_once('\n').unwrap();
    let here = local(&["outputs", id]);
    assert_eq!(files, here.trim_end().rsplit_once('\n').unwrap().0);
    assert!(files.contains("run one/metrics.csv"), "{listing}");
    assert!(place.starts_with("on the server: "), "{place}");
    let without_dir = |text: String| {
        let mut v: Value = serde_json::from_str(&text).unwrap();
        v.as_object_mut().unwrap().remove("dir");
        v
    };
    assert_eq!(
        without_dir(remote(&["outputs", id, "--json"])),
        without_dir(local(&["outputs", id, "--json"]))
    );
    let (here, there) = (
        world.dir.path().join("here"),
        world.dir.path().join("there"),
    );
    let (here_s, there_s) = (here.display().to_string(), there.display().to_string());
    assert_eq!(
        remote(&["outputs", id, "--to", &there_s]).replace(&there_s, "DIR"),
        local(&["outputs", id, "--to", &here_s]).replace(&here_s, "DIR")
    );
    for file in ["outputs/model.txt", "outputs/run one/metrics.csv"] {
        let copied = std::fs::read(there.join(file)).unwrap();
        assert_eq!(copied, std::fs::read(here.join(file)).unwrap(), "{file}");
    }

    let (_, bob) = token(world, "bob", "vision", false);
    let (_, carol) = token(world, "carol", "nlp", false);
    let files = |token: &str, path: &str| {
        let url = server.url(&format!("/api/v1/jobs/{id}/outputs/files/{path}"));
        call(http().get(url).bearer_auth(token)).0
    };
    assert_eq!(files(&bob, "outputs/model.txt"), StatusCode::OK);
    assert_eq!(files(&carol, "outputs/model.txt"), StatusCode::NOT_FOUND);
    for path in [
        "..%2F..%2Fstrata.db",
        "../../strata.db",
        "%2Fetc%2Fpasswd",
        "outputs/run%20one",
        "outputs",
    ] {
        assert_eq!(files(&bob, path), StatusCode::NOT_FOUND, "{path}");
    }
    let delete = |token: &str| {
        let url = server.url(&format!("/api/v1/jobs/{id}/outputs"));
        call(http().delete(url).bearer_auth(token))
    };
    assert_eq!(delete(&carol).0, StatusCode::NOT_FOUND);
    let (status, body) = delete(&bob);
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(local(&["outputs", id]).contains("model.txt"), "kept");
    assert_eq!(
        remote(&["outputs", id, "--delete"]),
        format!("deleted the outputs of {id}\n")
    );
    assert!(!local(&["outputs", id]).contains("model.txt"), "deleted");
}
