//! The team service's web pages in a real browser: Debian's headless Chromium driven through
//! chromedriver (the W3C WebDriver protocol, spoken here with reqwest) logs in with a token,
//! opens a finished job's page and finds its log line and a drawn chart; the screenshot is
//! kept in `target/test-artifacts/`. The pages' authorisation is checked with plain HTTP:
//! another team's session sees "not found", a revoked token's session is sent to the login.

mod common;

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use common::server::{team_world, token, Server};
use common::*;
use reqwest::blocking::Client;
use reqwest::redirect::Policy;
use reqwest::StatusCode;
use serde_json::{json, Value};

const LOG_LINE: &str = "hello from the web test";

/// An HTTP client (reqwest with rustls' ring provider); `follow`: whether it follows redirects.
fn http(follow: bool) -> Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let policy = if follow {
        Policy::default()
    } else {
        Policy::none()
    };
    Client::builder()
        .redirect(policy)
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap()
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// chromedriver on a loopback port, killed on drop.
struct Driver {
    child: Child,
    url: String,
    http: Client,
}

impl Driver {
    fn start() -> Driver {
        let port = free_port();
        let child = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver (Debian's chromium-driver; scripts/setup installs it)");
        let driver = Driver {
            child,
            url: format!("http://127.0.0.1:{port}"),
            http: http(true),
        };
        let start = Instant::now();
        while driver
            .http
            .get(format!("{}/status", driver.url))
            .send()
            .is_err()
        {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "chromedriver did not start"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        driver
    }

    fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut request = self.http.request(method, format!("{}{path}", self.url));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().expect("a WebDriver request");
        let status = response.status();
        let body: Value = response.json().expect("WebDriver answers JSON");
        assert!(status.is_success(), "WebDriver {path}: {status} {body}");
        body["value"].clone()
    }

    /// A headless Chromium session with a fresh profile and no background traffic.
    fn session(&self, profile: &std::path::Path) -> Session<'_> {
        let args = [
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--window-size=1200,1400",
        ];
        let mut args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        args.push(format!("--user-data-dir={}", profile.display()));
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": "/usr/bin/chromium", "args": args}
        }}});
        let value = self.call(reqwest::Method::POST, "/session", Some(caps));
        Session {
            driver: self,
            id: value["sessionId"]
                .as_str()
                .expect("a session id")
                .to_string(),
        }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Session<'a> {
    driver: &'a Driver,
    id: String,
}

impl Session<'_> {
    fn post(&self, path: &str, body: Value) -> Value {
        let path = format!("/session/{}{path}", self.id);
        self.driver.call(reqwest::Method::POST, &path, Some(body))
    }

    fn get(&self, path: &str) -> Value {
        let path = format!("/session/{}{path}", self.id);
        self.driver.call(reqwest::Method::GET, &path, None)
    }

    fn open(&self, url: &str) {
        self.post("/url", json!({ "url": url }));
    }

    fn current_url(&self) -> String {
        self.get("/url").as_str().unwrap().to_string()
    }

    /// The element for a CSS selector (its WebDriver reference).
    fn find(&self, css: &str) -> String {
        let found = self.post("/element", json!({"using": "css selector", "value": css}));
        found
            .as_object()
            .and_then(|o| o.values().next())
            .and_then(Value::as_str)
            .unwrap_or_else(|| panic!("no element {css}"))
            .to_string()
    }

    fn script(&self, source: &str) -> Value {
        self.post("/execute/sync", json!({"script": source, "args": []}))
    }

    /// Waits (bounded) until `source` returns true in the page.
    fn wait_for(&self, source: &str, what: &str) {
        let start = Instant::now();
        while self.script(source) != Value::Bool(true) {
            assert!(start.elapsed() < Duration::from_secs(30), "never: {what}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn screenshot(&self, path: &std::path::Path) {
        let png = self.get("/screenshot");
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(png.as_str().unwrap())
            .unwrap();
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, bytes).unwrap();
    }
}

impl Drop for Session<'_> {
    fn drop(&mut self) {
        let path = format!("{}/session/{}", self.driver.url, self.id);
        let _ = self.driver.http.delete(path).send();
    }
}

/// Where screenshots are kept: `target/test-artifacts/`.
fn artifacts() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/test-artifacts")
}

/// A finished job of team vision with a log line and a metric; its id.
fn finished_job(world: &World, server: &Server, token: &str, image: &str) -> String {
    let script = format!(
        "import json\nprint('{LOG_LINE}')\nfor i in range(5): print('strata:metric', json.dumps({{'name': 'loss', 'value': 5 - i, 'step': i}}))"
    );
    let body = json!({
        "queue": "vision", "tier": "cpu", "image": image, "name": "web-run",
        "command": ["python", "-c", script, "--lr", "0.1"],
    });
    let response = http(true)
        .post(server.url("/api/v1/jobs"))
        .bearer_auth(token)
        .json(&body)
        .send()
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let id = response.json::<Value>().unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let done = world.wait_for(&id, &["succeeded", "failed"], Duration::from_secs(120));
    assert_eq!(done["state"], "succeeded", "{done}");
    let start = Instant::now();
    while !String::from_utf8_lossy(&world.strata(&["metrics", &id]).stdout).contains("loss") {
        assert!(start.elapsed() < Duration::from_secs(30), "no metrics");
        std::thread::sleep(Duration::from_millis(100));
    }
    id
}

#[test]
#[cfg_attr(skip_root, ignore = "needs root; STRATA_SKIP_ROOT=1")]
fn a_browser_logs_in_and_sees_a_finished_jobs_log_and_chart() {
    let (world, image) = team_world();
    let (_, alice) = token(&world, "alice", "vision", false);
    let _agent = AgentProcess::start(&world);
    let server = Server::start(&world, &[]);
    let id = finished_job(&world, &server, &alice, &image);

    let driver = Driver::start();
    let profile = tempfile::tempdir().unwrap();
    let browser = driver.session(profile.path());
    // Not logged in: the pages send the browser to the login form.
    browser.open(&server.url(&format!("/jobs/{id}")));
    assert!(
        browser.current_url().ends_with("/login"),
        "{}",
        browser.current_url()
    );
    let field = browser.find("#token");
    browser.post(&format!("/element/{field}/value"), json!({ "text": alice }));
    let button = browser.find("form.login button[type=submit]");
    browser.post(&format!("/element/{button}/click"), json!({}));
    browser.wait_for(
        "return document.querySelector('table#jobs') !== null",
        "the queues page after logging in",
    );
    // The session cookie is HttpOnly: the page's scripts cannot read the token.
    assert_eq!(browser.script("return document.cookie"), json!(""));
    let queues = browser.script("return document.querySelector('table#jobs').innerText");
    assert!(queues.as_str().unwrap().contains(&id), "{queues}");

    browser.open(&server.url(&format!("/jobs/{id}")));
    let log = browser.script("return document.getElementById('log').innerText");
    assert!(log.as_str().unwrap().contains(LOG_LINE), "{log}");
    browser.wait_for(
        "const img = document.querySelector('img.chart'); return img !== null && img.complete && img.naturalWidth > 0",
        "a drawn chart on the job page",
    );
    browser.screenshot(&artifacts().join("web-job-page.png"));

    // The comparison page of the run, its parameters read off the command line.
    browser.open(&server.url(&format!("/compare?jobs={id}")));
    let runs = browser.script("return document.querySelector('table#runs').innerText");
    assert!(runs.as_str().unwrap().contains("lr"), "{runs}");
    browser.wait_for(
        "const img = document.querySelector('img.chart'); return img !== null && img.complete && img.naturalWidth > 0",
        "a drawn chart on the comparison page",
    );
}

/// Logs in with plain HTTP; the session cookie (`name=value`).
fn session_cookie(server: &Server, token: &str) -> String {
    let http = http(false);
    let response = http
        .post(server.url("/login"))
        .form(&[("token", token)])
        .send()
        .unwrap();
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let cookie = response.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .to_string();
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(cookie.contains(attribute), "{cookie}");
    }
    cookie.split(';').next().unwrap().to_string()
}

#[test]
fn pages_answer_only_to_a_valid_session_of_the_team() {
    let (world, image) = team_world();
    let (_, alice) = token(&world, "alice", "vision", false);
    let (_, carol) = token(&world, "carol", "nlp", false);
    let (rex_id, rex) = token(&world, "rex", "vision", false);
    let server = Server::start(&world, &[]);
    let response = http(true)
        .post(server.url("/api/v1/jobs"))
        .bearer_auth(&alice)
        .json(&json!({"queue": "vision", "tier": "cpu", "image": image, "command": ["true"]}))
        .send()
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let id = response.json::<Value>().unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();

    let http = http(false);
    let get = |path: &str, cookie: Option<&str>| {
        let mut request = http.get(server.url(path));
        if let Some(cookie) = cookie {
            request = request.header("cookie", cookie);
        }
        let response = request.send().unwrap();
        (response.status(), response.text().unwrap())
    };
    let pages = [
        "/".to_string(),
        format!("/jobs/{id}"),
        format!("/jobs/{id}/log"),
        format!("/jobs/{id}/chart.png?metric=loss"),
        format!("/compare?jobs={id}"),
        format!("/compare/chart.png?metric=loss&jobs={id}"),
    ];
    // No session, or a cookie that is not a token: nothing but the way to the login.
    for page in &pages {
        for cookie in [None, Some("strata_session=strata_forged")] {
            let (status, body) = get(page, cookie);
            assert!(
                status == StatusCode::SEE_OTHER || status == StatusCode::UNAUTHORIZED,
                "{page} {cookie:?}: {status}"
            );
            assert!(!body.contains(&id), "{page} {cookie:?} leaks the job");
        }
    }
    // A wrong token at the login form: 401 and the form again, no cookie.
    let response = http
        .post(server.url("/login"))
        .form(&[("token", "strata_wrong")])
        .send()
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert!(response.headers().get("set-cookie").is_none());

    let alice_cookie = session_cookie(&server, &alice);
    let (status, body) = get("/", Some(&alice_cookie));
    assert_eq!(status, StatusCode::OK);
    assert!(body.contains(&id), "alice sees her team's job");
    let (status, _) = get(&format!("/jobs/{id}"), Some(&alice_cookie));
    assert_eq!(status, StatusCode::OK);
    // Bad queries of the page's own requests are 400s naming what is wrong.
    let (status, body) = get(&format!("/jobs/{id}/log?offset=abc"), Some(&alice_cookie));
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body.contains("offset"), "{body}");
    let (status, body) = get(&format!("/jobs/{id}/chart.png"), Some(&alice_cookie));
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body.contains("metric"), "{body}");
    let (status, body) = get("/compare", Some(&alice_cookie));
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body.contains("jobs"), "{body}");

    // Another team's session: the job does not exist for it, on every page about it.
    let carol_cookie = session_cookie(&server, &carol);
    let (status, body) = get("/", Some(&carol_cookie));
    assert_eq!(status, StatusCode::OK);
    assert!(!body.contains(&id), "carol sees another team's job");
    for page in &pages[1..] {
        let (status, body) = get(page, Some(&carol_cookie));
        assert!(
            status == StatusCode::NOT_FOUND || status == StatusCode::BAD_REQUEST,
            "{page} for another team: {status}"
        );
        assert!(!body.contains("alice"), "{page} leaks the job's user");
    }

    // A session ends with its token.
    let rex_cookie = session_cookie(&server, &rex);
    assert_eq!(get("/", Some(&rex_cookie)).0, StatusCode::OK);
    let out = world.strata(&["token", "revoke", &rex_id]);
    assert!(out.status.success(), "{}", stderr(&out));
    let (status, _) = get("/", Some(&rex_cookie));
    assert_eq!(status, StatusCode::SEE_OTHER, "a revoked token's session");

    // Tokens appear in no log line of the server.
    let log = server.stderr.lock().unwrap().clone();
    for secret in [&alice, &carol, &rex] {
        assert!(
            !log.contains(secret.as_str()),
            "a token in the server's log"
        );
    }
}
