//! `schemathesis` (from PyPI; scripts/setup installs it) against the server's own
//! `/openapi.json`: every operation, with generated valid and invalid input, as a team's user
//! with a built image in the store, must answer without a 5xx. The run's seed is fixed so a
//! failure can be replayed; its report is printed on failure.

mod common;

use std::process::Command;

use common::server::{team_world, token, Server};
use common::stderr;

#[test]
fn schemathesis_finds_no_server_error() {
    let (world, _image) = team_world();
    let (_, alice) = token(&world, "alice", "vision", false);
    let server = Server::start(&world, &[]);
    let out = Command::new("schemathesis")
        .args(["run", &server.url("/openapi.json")])
        .args(["--header", &format!("Authorization: Bearer {alice}")])
        .args(["--checks", "not_a_server_error"])
        .args(["--max-examples", "40", "--seed", "20261207"])
        .current_dir(world.dir.path())
        .env("NO_COLOR", "1")
        .env("SCHEMATHESIS_TELEMETRY", "false")
        .output()
        .expect("schemathesis (pip install schemathesis; scripts/setup installs it)");
    let report = String::from_utf8_lossy(&out.stdout);
    // The end of the report names the failing operations and how to replay them.
    let tail: String = report
        .chars()
        .rev()
        .take(6000)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    assert!(
        out.status.success(),
        "schemathesis found failures:\n{tail}\n{}",
        stderr(&out)
    );
    // It did test the operations (a run that reached nothing would pass too).
    assert!(report.contains("Tested: "), "{report}");
    assert!(!report.contains("Tested: 0"), "{report}");
    let log = server.stderr.lock().unwrap().clone();
    assert!(!log.contains(&alice), "the token in the server's log");
}
