//! A running `strata server` over a world's STRATA_HOME, and the tokens `strata token` makes:
//! shared by the tests of the team service (tests/server.rs, tests/web.rs).

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};

use serde_json::Value;

use super::{requirements, stderr, World};

/// A project configuration with two team queues and one without a team.
pub const CONFIG: &str = r#"
[queues.vision]
team = "vision"

[queues.nlp]
team = "nlp"

# No team: not reachable through the server.
[queues.local]
"#;

/// A running `strata server`, killed on drop; its stderr is kept to look for tokens in.
pub struct Server {
    child: Child,
    pub url: String,
    pub stderr: Arc<Mutex<String>>,
}

impl Server {
    pub fn start(world: &World, extra: &[&str]) -> Server {
        let mut child = world
            .command(&[&["-vv", "server", "--listen", "127.0.0.1:0"], extra].concat())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start strata server");
        let mut reader = BufReader::new(child.stderr.take().unwrap());
        let mut line = String::new();
        let mut seen = String::new();
        let url = loop {
            line.clear();
            if reader.read_line(&mut line).unwrap() == 0 {
                panic!("strata server ended before listening: {seen}");
            }
            seen.push_str(&line);
            if let Some(rest) = line.split("listening on ").nth(1) {
                break rest.split_whitespace().next().unwrap().to_string();
            }
        };
        let stderr = Arc::new(Mutex::new(seen));
        let sink = stderr.clone();
        std::thread::spawn(move || {
            let mut rest = String::new();
            let mut buf = [0u8; 4096];
            while let Ok(n) = reader.read(&mut buf) {
                if n == 0 {
                    break;
                }
                rest.push_str(&String::from_utf8_lossy(&buf[..n]));
                sink.lock().unwrap().push_str(&rest);
                rest.clear();
            }
        });
        Server { child, url, stderr }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.url)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A world whose project configures the team queues, with one image built in its store;
/// the image's digest.
pub fn team_world() -> (World, String) {
    let world = World::new();
    std::fs::write(world.dir.path().join("strata.toml"), CONFIG).unwrap();
    let built = world.build_ok(&requirements("basic.txt"), &[]);
    (world, built["digest"].as_str().unwrap().to_string())
}

/// `strata token create`: (id, secret).
pub fn token(world: &World, user: &str, team: &str, admin: bool) -> (String, String) {
    let mut args = vec!["token", "create", "--user", user, "--team", team, "--json"];
    if admin {
        args.push("--admin");
    }
    let out = world.strata(&args);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    (
        v["id"].as_str().unwrap().to_string(),
        v["token"].as_str().unwrap().to_string(),
    )
}
