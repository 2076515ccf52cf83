//! `strata detect` against a real virtual environment made by uv from the fixture wheels.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::World;
use serde_json::Value;

fn write(path: &Path, text: &str) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, text).unwrap();
}

/// A local project built by the fixture build backend.
fn local_project(dir: &Path, name: &str, dependencies: &str) -> PathBuf {
    let root = dir.join(name);
    write(
        &root.join("pyproject.toml"),
        &format!(
            "[build-system]\nrequires = [\"strata-fixture-backend\"]\n\
             build-backend = \"strata_fixture_backend\"\n\n\
             [project]\nname = \"{name}\"\nversion = \"0.1.0\"\ndependencies = {dependencies}\n"
        ),
    );
    write(&root.join(name).join("__init__.py"), "VALUE = 1\n");
    root
}

/// `uv venv` at `venv` with `packages` installed offline from the fixture wheels.
fn venv(world: &World, venv: &Path, packages: &[&str]) {
    common::run(Command::new("uv").args(["venv", "-q"]).arg(venv));
    common::run(
        Command::new("uv")
            .args(["pip", "install", "-q", "--no-index", "--find-links"])
            .arg(&world.wheels)
            .args(packages)
            .env("VIRTUAL_ENV", venv)
            .current_dir(world.dir.path()),
    );
}

fn detect(world: &World, venv: &Path, args: &[&str]) -> Output {
    let mut command = world.command(&["detect"]);
    command
        .args(args)
        .env("VIRTUAL_ENV", venv)
        .env_remove("CONDA_PREFIX");
    command.output().expect("run strata detect")
}

fn detect_json(world: &World, venv: &Path, path: &Path) -> Value {
    let out = detect(world, venv, &[path.to_str().unwrap(), "--json"]);
    assert!(
        out.status.success(),
        "strata detect failed: {}",
        common::stderr(&out)
    );
    serde_json::from_slice(&out.stdout).expect("JSON")
}

const TRAIN: &str = r#"import os, sys
import json
from collections import abc
import skwidget
from beta import ALPHA
from helpers import util
import localpkg
import localdir

try:
    import gamma
except ImportError:
    gamma = None

try:
    import zeta_util
except ImportError:
    zeta_util = None


def main():
    import datapkg
    shapes = importlib.import_module("skwidget.shapes")
    print(skwidget.__version__, ALPHA, datapkg.__version__, util.X, os.sep, sys.argv, json)


if __name__ == "__main__":
    main()
"#;

/// The fixture project of issue 10: three fixture packages (one imported under another name
/// than its distribution's), a local helper package, stdlib imports, an optional import that
/// is not installed, and two local distributions (editable, and installed from a path).
fn fixture_project(world: &World) -> (PathBuf, PathBuf) {
    let dir = world.dir.path();
    let project = dir.join("project");
    write(&project.join("train.py"), TRAIN);
    write(&project.join("helpers/__init__.py"), "");
    write(&project.join("helpers/util.py"), "import tools\nX = 1\n");
    let editable = local_project(dir, "localpkg", "[\"tools\"]");
    let from_path = local_project(dir, "localdir", "[]");
    let venv_dir = dir.join("venv");
    venv(
        world,
        &venv_dir,
        &[
            "scikit-widget",
            "beta",
            "datapkg",
            "zeta-util",
            "-e",
            editable.to_str().unwrap(),
            from_path.to_str().unwrap(),
        ],
    );
    (project, venv_dir)
}

/// Each requirement as `line <- source; source`.
fn requirements(detection: &Value) -> Vec<String> {
    detection["requirements"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let sources: Vec<String> = r["sources"]
                .as_array()
                .unwrap()
                .iter()
                .map(source)
                .collect();
            format!(
                "{} <- {}",
                r["requirement"].as_str().unwrap(),
                sources.join("; ")
            )
        })
        .collect()
}

fn source(s: &Value) -> String {
    match s["kind"].as_str().unwrap() {
        "import" => format!(
            "{}:{} {}{}",
            s["file"].as_str().unwrap(),
            s["line"],
            s["statement"].as_str().unwrap(),
            if s["optional"] == true {
                " (optional)"
            } else {
                ""
            }
        ),
        "required-by" => format!("required by {}", s["dist"].as_str().unwrap()),
        other => format!("{other} {}", s["file"].as_str().unwrap()),
    }
}

fn findings(detection: &Value, key: &str) -> Vec<String> {
    detection[key]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            format!(
                "{}:{}: {}",
                f["file"].as_str().unwrap_or("-"),
                f["line"],
                f["message"].as_str().unwrap()
            )
        })
        .collect()
}

#[test]
fn detects_pins_and_sources_from_imports() {
    let world = World::new();
    let (project, venv_dir) = fixture_project(&world);
    let detection = detect_json(&world, &venv_dir, &project.join("train.py"));
    assert_eq!(detection["from"]["kind"], "imports");
    assert_eq!(detection["python"], "3.11");
    assert_eq!(
        requirements(&detection),
        [
            "alpha==1.1.0 <- required by beta; required by scikit-widget",
            "beta==2.0.0 <- train.py:5 from beta import ALPHA",
            "datapkg==1.0.0 <- train.py:22 import datapkg",
            "scikit-widget==1.0.0 <- train.py:4 import skwidget; \
             train.py:23 importlib.import_module(\"skwidget.shapes\")",
            "tools==1.0.0 <- helpers/util.py:1 import tools; required by localpkg",
            "zeta-util==1.0.0 <- train.py:16 import zeta_util (optional)",
        ]
    );
    let locals: Vec<String> = detection["local_packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            format!(
                "{} {} editable={} {} <- {}",
                p["name"].as_str().unwrap(),
                p["version"].as_str().unwrap(),
                p["editable"],
                Path::new(p["path"].as_str().unwrap())
                    .file_name()
                    .unwrap()
                    .to_string_lossy(),
                source(&p["sources"][0])
            )
        })
        .collect();
    assert_eq!(
        locals,
        [
            "localdir 0.1.0 editable=false localdir <- train.py:8 import localdir",
            "localpkg 0.1.0 editable=true localpkg <- train.py:7 import localpkg",
        ]
    );
    assert_eq!(findings(&detection, "warnings"), Vec::<String>::new());
    assert_eq!(
        findings(&detection, "notes"),
        ["train.py:11: optional import \"gamma\" (import gamma) is not installed: skipped"]
    );

    // The same project as a directory: the same set (every file is read).
    let as_dir = detect_json(&world, &venv_dir, &project);
    assert_eq!(requirements(&as_dir), requirements(&detection));

    // Text output: each requirement with its source.
    let out = detect(
        &world,
        &venv_dir,
        &[project.join("train.py").to_str().unwrap()],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("scikit-widget==1.0.0") && text.contains("train.py:4 import skwidget"),
        "{text}"
    );
}

#[test]
fn an_import_of_nothing_installed_is_a_warning_naming_file_and_line() {
    let world = World::new();
    let project = world.dir.path().join("project");
    write(
        &project.join("run.py"),
        "import alpha\n\n\ndef f():\n    import not_installed_anywhere\n",
    );
    let venv_dir = world.dir.path().join("venv");
    venv(&world, &venv_dir, &["alpha==1.0.0"]);
    let detection = detect_json(&world, &venv_dir, &project);
    assert_eq!(
        requirements(&detection),
        ["alpha==1.0.0 <- run.py:1 import alpha"]
    );
    assert_eq!(
        findings(&detection, "warnings"),
        [
            "run.py:5: import not_installed_anywhere: no installed distribution provides \
          \"not_installed_anywhere\", so it is not in the requirements"
        ]
    );
}

#[test]
fn a_script_that_does_not_parse_is_named_with_its_line() {
    let world = World::new();
    let project = world.dir.path().join("project");
    write(&project.join("good.py"), "import os\n");
    write(
        &project.join("pkg/bad.py"),
        "import os\n\ndef broken(:\n    pass\n",
    );
    let venv_dir = world.dir.path().join("venv");
    venv(&world, &venv_dir, &["alpha"]);
    let out = detect(&world, &venv_dir, &[project.to_str().unwrap(), "--json"]);
    assert_eq!(out.status.code(), Some(3), "{}", common::stderr(&out));
    assert!(out.stdout.is_empty(), "nothing half-detected on stdout");
    let stderr = common::stderr(&out);
    assert!(stderr.contains("pkg/bad.py:3:"), "{stderr}");
    assert!(stderr.contains("syntax error"), "{stderr}");
}

#[test]
fn a_virtual_env_that_is_not_there_is_named() {
    let world = World::new();
    let project = world.dir.path().join("project");
    write(&project.join("train.py"), "import alpha\n");
    let missing = world.dir.path().join("no-such-venv");
    let out = detect(&world, &missing, &[project.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(3), "{}", common::stderr(&out));
    let stderr = common::stderr(&out);
    assert!(
        stderr.contains(&format!(
            "VIRTUAL_ENV names {}, which does not exist",
            missing.display()
        )),
        "{stderr}"
    );
}

#[test]
fn a_declared_requirements_file_wins_and_needs_no_environment() {
    let world = World::new();
    let project = world.dir.path().join("project");
    write(&project.join("train.py"), "import skwidget\n");
    write(&project.join("requirements.txt"), "beta>=2\nalpha==1.0.0\n");
    write(&project.join("requirements-dev.txt"), "gamma\n");
    let missing = world.dir.path().join("no-such-venv");
    let out = detect(&world, &missing, &[project.to_str().unwrap(), "--json"]);
    assert!(out.status.success(), "{}", common::stderr(&out));
    let detection: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(detection["from"]["file"], "requirements.txt");
    assert_eq!(
        requirements(&detection),
        [
            "alpha==1.0.0 <- file requirements.txt",
            "beta>=2 <- file requirements.txt"
        ]
    );
    assert_eq!(
        findings(&detection, "notes"),
        ["requirements-dev.txt:null: not used: requirements.txt comes first"]
    );

    // pyproject.toml's [project] dependencies when there is no requirements.txt.
    fs::remove_file(project.join("requirements.txt")).unwrap();
    fs::remove_file(project.join("requirements-dev.txt")).unwrap();
    write(
        &project.join("pyproject.toml"),
        "[project]\nname = \"p\"\nversion = \"1\"\ndependencies = [\"Scikit_Widget >= 1.0\"]\n",
    );
    let detection = detect_json(&world, &missing, &project);
    assert_eq!(detection["from"]["file"], "pyproject.toml");
    assert_eq!(
        requirements(&detection),
        ["scikit-widget>=1.0 <- file pyproject.toml"]
    );
}
