//! `strata submit -- python train.py ARGS` with neither -r nor --image, in a project whose
//! virtual environment is active: the environment is detected from the script's imports,
//! built from `[build]` in strata.toml, the tree is shipped, and the job's output equals the
//! local run's (runc, the real agent).

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use common::*;
use serde_json::Value;

fn write(path: &Path, text: &str) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, text).unwrap();
}

const TRAIN: &str = r#"import json
import os
import sys

import skwidget
from beta import ALPHA
from helpers.util import scale
import localpkg

try:
    import gamma
except ImportError:
    gamma = None


def main():
    import datapkg
    print(json.dumps({
        "skwidget": skwidget.__version__,
        "alpha": ALPHA,
        "datapkg": datapkg.__version__,
        "local": localpkg.VALUE,
        "gamma": gamma is None,
        "scaled": scale(sys.argv[1:]),
        "sep": os.sep,
    }, sort_keys=True))


if __name__ == "__main__":
    main()
"#;

/// A local distribution built by the fixture build backend, at `root`.
fn local_distribution(root: &Path, name: &str) {
    write(
        &root.join("pyproject.toml"),
        &format!(
            "[build-system]\nrequires = [\"strata-fixture-backend\"]\n\
             build-backend = \"strata_fixture_backend\"\n\n\
             [project]\nname = \"{name}\"\nversion = \"0.1.0\"\ndependencies = []\n"
        ),
    );
    write(&root.join(name).join("__init__.py"), "VALUE = 7\n");
}

/// The project (script, helper package, an editable local package inside the tree, a
/// strata.toml naming the base and the wheels) and its venv, made by uv offline.
fn project(world: &World) -> (PathBuf, PathBuf) {
    let root = world.dir.path().join("project");
    write(&root.join("train.py"), TRAIN);
    write(&root.join("helpers/__init__.py"), "");
    write(
        &root.join("helpers/util.py"),
        "def scale(args):\n    return [a.upper() for a in args]\n",
    );
    local_distribution(&root.join("vendor/localpkg"), "localpkg");
    write(
        &root.join("strata.toml"),
        &format!(
            "[build]\nbase = \"{}\"\nfind_links = [\"{}\"]\nno_index = true\n",
            base_ref(),
            world.wheels.display()
        ),
    );
    let venv = world.dir.path().join("venv");
    run(Command::new("uv").args(["venv", "-q"]).arg(&venv));
    run(Command::new("uv")
        .args(["pip", "install", "-q", "--no-index", "--find-links"])
        .arg(&world.wheels)
        .args(["scikit-widget", "beta", "datapkg", "-e"])
        .arg(root.join("vendor/localpkg"))
        .env("VIRTUAL_ENV", &venv)
        .current_dir(world.dir.path()));
    (root, venv)
}

/// `strata submit --json ARGS -- COMMAND` in `dir` with `venv` active.
fn submit(world: &World, dir: &Path, venv: &Path, args: &[&str], command: &[&str]) -> Output {
    let mut all = vec!["submit", "--json"];
    all.extend_from_slice(args);
    all.push("--");
    all.extend_from_slice(command);
    world
        .command(&all)
        .current_dir(dir)
        .env("VIRTUAL_ENV", venv)
        .env_remove("CONDA_PREFIX")
        .output()
        .unwrap()
}

#[test]
#[cfg_attr(skip_root, ignore = "needs root; STRATA_SKIP_ROOT=1")]
fn a_detected_environment_runs_the_script_as_it_runs_locally() {
    let world = World::new();
    let (root, venv) = project(&world);
    let command = ["python", "train.py", "--lr", "0.1"];
    let local = Command::new(venv.join("bin/python"))
        .args(&command[1..])
        .current_dir(&root)
        .output()
        .unwrap();
    assert!(local.status.success(), "{}", stderr(&local));
    let local = String::from_utf8(local.stdout).unwrap();
    assert!(local.contains("\"local\": 7"), "{local}");

    let _agent = AgentProcess::start(&world);
    let out = submit(&world, &root, &venv, &[], &command);
    assert!(out.status.success(), "submit failed: {}", stderr(&out));
    let said = stderr(&out);
    assert!(said.contains("environment: from imports"), "{said}");
    assert!(
        said.contains("local package localpkg shipped as code"),
        "{said}"
    );
    let submitted: Value = serde_json::from_slice(&out.stdout).unwrap();
    let id = submitted["id"].as_str().unwrap();
    let s = world.wait_for(id, TERMINAL, Duration::from_secs(240));
    assert_eq!(s["state"], "succeeded", "{s}");
    let log = String::from_utf8(world.strata(&["logs", id]).stdout).unwrap();
    assert_eq!(log, local, "the job's output differs from the local run's");

    // The detected pins built the environment once: a second submit of the same tree is a
    // cache hit on the same environment, with the same code layer.
    let again = submit(&world, &root, &venv, &[], &command);
    assert!(again.status.success(), "{}", stderr(&again));
    let again: Value = serde_json::from_slice(&again.stdout).unwrap();
    assert_eq!(again["code"]["layer"], submitted["code"]["layer"]);
    let s2 = world.wait_for(
        again["id"].as_str().unwrap(),
        TERMINAL,
        Duration::from_secs(240),
    );
    assert_eq!(s2["state"], "succeeded", "{s2}");
    assert_eq!(s2["image_digest"], s["image_digest"]);
}

#[test]
fn a_local_package_outside_the_shipped_tree_is_refused_by_name() {
    let world = World::new();
    let (root, venv) = project(&world);
    let outside = world.dir.path().join("elsewhere/outpkg");
    local_distribution(&outside, "outpkg");
    run(Command::new("uv")
        .args(["pip", "install", "-q", "--no-index", "--find-links"])
        .arg(&world.wheels)
        .arg("-e")
        .arg(&outside)
        .env("VIRTUAL_ENV", &venv)
        .current_dir(world.dir.path()));
    write(
        &root.join("extra.py"),
        "import outpkg\nprint(outpkg.VALUE)\n",
    );
    let out = submit(&world, &root, &venv, &[], &["python", "extra.py"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let said = stderr(&out);
    assert!(
        said.contains("outpkg") && said.contains("elsewhere/outpkg"),
        "{said}"
    );
    assert!(said.contains("outside the code shipped"), "{said}");
    let jobs = world.strata(&["jobs", "--all", "--json"]);
    let jobs: Value = serde_json::from_slice(&jobs.stdout).unwrap();
    assert_eq!(jobs.as_array().map(Vec::len), Some(0), "{jobs}");
}

#[test]
fn without_a_base_anywhere_the_submit_says_where_to_set_one() {
    let world = World::new();
    let (root, venv) = project(&world);
    fs::remove_file(root.join("strata.toml")).unwrap();
    let out = submit(&world, &root, &venv, &[], &["python", "train.py"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("[build]"), "{}", stderr(&out));
}

#[test]
fn a_script_that_does_not_parse_is_named_and_nothing_is_queued() {
    let world = World::new();
    let (root, venv) = project(&world);
    write(
        &root.join("helpers/util.py"),
        "def scale(args:\n    return args\n",
    );
    let out = submit(&world, &root, &venv, &[], &["python", "train.py"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("helpers/util.py:"),
        "{}",
        stderr(&out)
    );
    let jobs = world.strata(&["jobs", "--all", "--json"]);
    let jobs: Value = serde_json::from_slice(&jobs.stdout).unwrap();
    assert_eq!(jobs.as_array().map(Vec::len), Some(0), "{jobs}");
}

#[test]
fn an_environment_that_is_not_there_is_named_and_nothing_is_queued() {
    let world = World::new();
    let (root, _venv) = project(&world);
    let missing = world.dir.path().join("no-such-venv");
    let out = submit(&world, &root, &missing, &[], &["python", "train.py"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&missing.display().to_string()),
        "{}",
        stderr(&out)
    );
    let jobs = world.strata(&["jobs", "--all", "--json"]);
    let jobs: Value = serde_json::from_slice(&jobs.stdout).unwrap();
    assert_eq!(jobs.as_array().map(Vec::len), Some(0), "{jobs}");
}
