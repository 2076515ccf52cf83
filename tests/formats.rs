//! End-to-end tests of the environment formats (issue 12, "Inputs"): pyproject.toml,
//! uv.lock, pylock.toml (written by `strata lock`), a hashed requirements.txt and `-r DIR`,
//! all made in the test from the fixture wheels, offline.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use serde_json::Value;

/// What the fixture project asks for: `beta` (which needs `alpha`), `cext` (a C extension),
/// `tools`, the extra `plot` (`datapkg`) and the group `dev` (`zeta-util` and, through an
/// include, `gamma`).
fn pyproject(wheels: &Path) -> String {
    format!(
        r#"[project]
name = "demo"
version = "0.1"
requires-python = ">=3.11"
dependencies = ["beta", "cext>=1.0", "tools"]

[project.optional-dependencies]
plot = ["datapkg"]

[dependency-groups]
dev = ["zeta-util", {{include-group = "docs"}}]
docs = ["gamma==0.3.0"]

[tool.uv]
find-links = ["{}"]
no-index = true
"#,
        wheels.display()
    )
}

/// The modules the selection above installs, and the packages.
const MODULES: &[&str] = &[
    "alpha",
    "beta",
    "cext",
    "tools",
    "datapkg",
    "zeta_util",
    "gamma",
];

fn project(world: &World) -> PathBuf {
    let dir = world.dir.path().join("proj");
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join("pyproject.toml"), pyproject(&world.wheels)).unwrap();
    dir
}

/// `strata build --json -r FILE` with the selection, offline (the lock files need no
/// find-links; giving them anyway would change nothing).
fn build(world: &World, file: &Path, extra: &[&str]) -> Value {
    let mut args = vec!["--extra", "plot", "--group", "dev"];
    args.extend_from_slice(extra);
    world.build_ok(file, &args)
}

fn uv_lock(dir: &Path) {
    run(Command::new("uv")
        .args(["lock", "--offline", "--quiet"])
        .current_dir(dir)
        .env_remove("UV_INDEX_URL")
        .env_remove("UV_FIND_LINKS"));
}

/// A requirements.txt with every package of `pylock` pinned with `==` and `--hash`.
fn hashed_requirements(pylock: &str) -> String {
    let doc: toml::Table = pylock.parse().unwrap();
    let mut out = String::new();
    for package in doc["packages"].as_array().unwrap() {
        let name = package["name"].as_str().unwrap();
        let version = package["version"].as_str().unwrap();
        let sha = package["wheels"][0]["hashes"]["sha256"].as_str().unwrap();
        out += &format!("{name}=={version} \\\n    --hash=sha256:{sha}\n");
    }
    out
}

#[test]
#[cfg_attr(skip_root, ignore = "needs root; STRATA_SKIP_ROOT=1")]
fn four_files_pinning_the_same_wheels_give_one_lock_and_one_image_that_runs() {
    let world = World::new();
    let dir = project(&world);

    // pyproject.toml: resolved by uv.
    let from_pyproject = build(&world, &dir.join("pyproject.toml"), &[]);
    assert_eq!(from_pyproject["cache"], "miss");
    let lock = from_pyproject["lock_digest"].clone();
    let image = from_pyproject["digest"].clone();

    // uv.lock written by uv itself, installed as it is.
    uv_lock(&dir);
    let from_uv_lock = build(&world, &dir.join("uv.lock"), &[]);
    assert_eq!(from_uv_lock["lock_digest"], lock);
    assert_eq!(from_uv_lock["digest"], image);

    // pylock.toml written by `strata lock`: no machine path in it.
    let pylock = dir.join("pylock.toml");
    let mut lock_cmd = world.command(&["lock", "-r"]);
    lock_cmd
        .arg(dir.join("pyproject.toml"))
        .args([
            "--extra",
            "plot",
            "--group",
            "dev",
            "--base",
            &base_ref(),
            "-f",
        ])
        .arg(&world.wheels)
        .args(["--no-index", "-o"])
        .arg(&pylock);
    run(&mut lock_cmd);
    let text = fs::read_to_string(&pylock).unwrap();
    assert!(text.contains("lock-version = \"1.0\""), "{text}");
    assert!(!text.contains("file://"), "{text}");
    assert!(
        !text.contains(&world.dir.path().display().to_string()),
        "the lock names a machine path: {text}"
    );
    let no_selection: &[&str] = &[];
    let from_pylock = world.build_ok(&pylock, no_selection);
    assert_eq!(from_pylock["lock_digest"], lock);
    assert_eq!(from_pylock["digest"], image);

    // The same pins as a hashed requirements.txt.
    let hashed = world.dir.path().join("requirements.txt");
    fs::write(&hashed, hashed_requirements(&text)).unwrap();
    let from_hashed = world.build_ok(&hashed, no_selection);
    assert_eq!(from_hashed["lock_digest"], lock);
    assert_eq!(from_hashed["digest"], image);

    // `-r DIR` takes pylock.toml first: the spec of a lock is its canonical lock, so the
    // directory is the very spec built from pylock.toml.
    let from_dir = world.build_ok(&dir, no_selection);
    assert_eq!(from_dir["cache"], "hit");
    assert_eq!(from_dir["spec_digest"], from_pylock["spec_digest"]);
    assert_eq!(from_dir["digest"], image);

    let bundle = world.dir.path().join("bundle");
    umoci_unpack(
        &world.oci(),
        from_pyproject["tag"].as_str().unwrap(),
        &bundle,
    );
    let script = format!(
        "import importlib, importlib.metadata as m\n\
         for name in {MODULES:?}: importlib.import_module(name)\n\
         print(sorted(d.metadata['Name'].lower() for d in m.distributions()))"
    );
    let (code, stdout, stderr) = runc_run(&bundle, &["python", "-c", &script]);
    assert_eq!(code, 0, "python in the image failed: {stderr}");
    // The project itself is not installed.
    assert!(!stdout.contains("demo"), "{stdout}");
    assert!(stdout.contains("zeta-util"), "{stdout}");
}

#[test]
fn a_lock_file_is_installed_without_uv() {
    let world = World::new();
    let dir = project(&world);
    uv_lock(&dir);
    let mut cmd = world.build_command(&dir.join("uv.lock"), &base_ref(), &["--group", "dev"]);
    cmd.env("STRATA_UV", world.dir.path().join("no-uv-here"));
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let built: Value = serde_json::from_slice(&out.stdout).unwrap();
    let packages: Vec<String> = built["layers"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|l| l["packages"].as_array().unwrap().clone())
        .map(|p| p.as_str().unwrap().to_string())
        .collect();
    // The dependency closure of the project and the dev group, no extra asked for.
    for wanted in [
        "alpha==1.1.0",
        "beta==2.0.0",
        "gamma==0.3.0",
        "zeta-util==1.0.0",
    ] {
        assert!(
            packages.iter().any(|p| p == wanted),
            "{wanted} in {packages:?}"
        );
    }
    assert!(
        !packages.iter().any(|p| p.starts_with("datapkg")),
        "{packages:?}"
    );

    // Another selection of the same uv.lock is another lock, so another spec: never a hit
    // on the first.
    let mut cmd = world.build_command(&dir.join("uv.lock"), &base_ref(), &[]);
    cmd.env("STRATA_UV", world.dir.path().join("no-uv-here"));
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let without_dev: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(without_dev["cache"], "miss");
    assert_ne!(without_dev["spec_digest"], built["spec_digest"]);
    assert_ne!(without_dev["lock_digest"], built["lock_digest"]);

    // And a requirements file does need uv: the same setting fails it.
    let plain = world.dir.path().join("plain.txt");
    fs::write(&plain, "alpha\n").unwrap();
    let mut cmd = world.build_command(&plain, &base_ref(), &[]);
    cmd.env("STRATA_UV", world.dir.path().join("no-uv-here"));
    let out = cmd.output().unwrap();
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("uv was not found"),
        "{}",
        stderr(&out)
    );
}

/// Each refusal names the file and what is wrong, and leaves the store as it was.
#[test]
fn bad_project_files_are_refused_by_name_and_leave_the_store_alone() {
    let world = World::new();
    let dir = project(&world);
    world.build_ok(&dir.join("pyproject.toml"), &[]);
    let before = world.snapshot();
    let file = dir.join("pyproject.toml");
    let shown = file.display().to_string();
    let cases: Vec<(Vec<&str>, String)> = vec![
        (
            vec!["--python", "3.10"],
            format!("{shown}: requires-python \">=3.11\" excludes the target's Python 3.10"),
        ),
        (
            vec!["--group", "nope"],
            format!("{shown}: no dependency group \"nope\" (the file has: dev, docs)"),
        ),
        (
            vec!["--extra", "nope"],
            format!("{shown}: no extra \"nope\" (the file has: plot)"),
        ),
    ];
    for (args, want) in cases {
        let out = world.build(&file, &args);
        assert_eq!(out.status.code(), Some(3), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(&want), "{args:?}: {}", stderr(&out));
    }

    let bad = dir.join("bad");
    fs::create_dir_all(&bad).unwrap();
    let broken = [
        (
            "pyproject.toml",
            "[project]\ndependencies = [\"alpha\", \"beta[\"]\n",
            "pyproject.toml: [project] dependencies[1]: invalid requirement \"beta[\"",
        ),
        (
            "pyproject.toml",
            "[project]\ndynamic = [\"dependencies\"]\n",
            "[project] dynamic: the dependencies are computed by the build backend",
        ),
        (
            "pyproject.toml",
            "[dependency-groups]\na = [{include-group = \"b\"}]\nb = [{include-group = \"a\"}]\n",
            "[dependency-groups] a includes itself (through a -> b -> a)",
        ),
        (
            "pylock.toml",
            "lock-version = \"1.0\"\n[[packages]]\nname = \"sdonly\"\nversion = \"1.0\"\nsdist = { url = \"https://example.invalid/sdonly-1.0.tar.gz\" }\n",
            "pylock.toml: package sdonly: sdist sdonly-1.0.tar.gz has no sha256 hash; an sdist fetched from a URL must be pinned by its hash",
        ),
        (
            "pylock.toml",
            "lock-version = \"1.0\"\n[[packages]]\nname = \"gitbranch\"\nvcs = { type = \"git\", url = \"https://example.invalid/g.git\", requested-revision = \"main\" }\n",
            "pylock.toml: package gitbranch: git source https://example.invalid/g.git names no full commit id; a lock must pin a git dependency to its commit",
        ),
        (
            "pylock.toml",
            "lock-version = \"1.0\"\n[[packages]]\nname = \"nodir\"\ndirectory = { path = \"no-such-project\" }\n",
            "pylock.toml: package nodir: directory ",
        ),
        (
            "pylock.toml",
            "lock-version = \"1.0\"\n[[packages]]\nname = \"hgpkg\"\nvcs = { type = \"hg\", url = \"https://example.invalid/h\", commit-id = \"0000000000000000000000000000000000000000\" }\n",
            "pylock.toml: package hgpkg: version control \"hg\" is not supported; strata builds git sources only",
        ),
        (
            "pylock.toml",
            "lock-version = \"1.0\"\n[[packages]]\nname = \"alpha\"\nversion = \"1.0\"\nwheels = [{ url = \"https://example.invalid/alpha-1.0-py3-none-any.whl\" }]\n",
            "pylock.toml: package alpha: wheel alpha-1.0-py3-none-any.whl has no sha256 hash",
        ),
        (
            "pylock.toml",
            "lock-version = \"1.0\"\n[[packages]]\nname = \"armonly\"\nversion = \"1.0\"\nwheels = [{ url = \"https://example.invalid/armonly-1.0-cp311-cp311-manylinux_2_17_aarch64.whl\", hashes = { sha256 = \"bb00000000000000000000000000000000000000000000000000000000000000\" } }]\n",
            "pylock.toml: package armonly==1.0 has no wheel for the target (cp311 manylinux_2_28 x86_64)",
        ),
        (
            "uv.lock",
            "version = 1\n[[package]]\nname = \"alpha\"\nversion = \"1.0\"\n",
            "uv.lock: [[package]]: expected exactly one project",
        ),
    ];
    for (name, text, want) in broken {
        let path = bad.join(name);
        fs::write(&path, text).unwrap();
        let out = world.build(&path, &[]);
        assert_eq!(out.status.code(), Some(3), "{name}: {}", stderr(&out));
        assert!(stderr(&out).contains(want), "{name}: {}", stderr(&out));
        fs::remove_file(&path).unwrap();
    }
    let out = world.build(&bad, &[]);
    assert!(
        stderr(&out).contains("has none of the files strata reads (pylock.toml, uv.lock"),
        "{}",
        stderr(&out)
    );

    // A hash-pinned file that forgets a dependency (beta needs alpha): refused, as pip's
    // hash-checking mode refuses it, instead of an environment without alpha.
    let beta = fs::read(world.wheels.join("beta-2.0.0-py3-none-any.whl")).unwrap();
    let forgetful = bad.join("requirements.txt");
    fs::write(
        &forgetful,
        format!("beta==2.0.0 --hash=sha256:{}\n", sha256_hex(&beta)),
    )
    .unwrap();
    let out = world.build(&forgetful, &[]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("requirements.txt: every package is pinned with --hash, but the pins need alpha==1.1.0, which the file does not pin"),
        "{}",
        stderr(&out)
    );
    fs::remove_file(&forgetful).unwrap();

    // A lock whose wheel is not the one it pins: refused at fetch, nothing stored.
    let wheel = world.wheels.join("alpha-1.1.0-py3-none-any.whl");
    let tampered = format!(
        "lock-version = \"1.0\"\n[[packages]]\nname = \"alpha\"\nversion = \"1.1.0\"\nwheels = [{{ path = \"{}\", hashes = {{ sha256 = \"{}\" }} }}]\n",
        wheel.display(),
        "ab".repeat(32)
    );
    let path = bad.join("pylock.toml");
    fs::write(&path, tampered).unwrap();
    let out = world.build(&path, &[]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert_eq!(
        world.snapshot(),
        before,
        "a refused build changed the store"
    );
}

fn environment_yml(world: &World, body: &str) -> PathBuf {
    let path = world.dir.path().join("environment.yml");
    fs::write(
        &path,
        format!("name: demo\nchannels:\n  - conda-forge\ndependencies:\n{body}"),
    )
    .unwrap();
    path
}

#[test]
#[cfg_attr(skip_root, ignore = "needs root; STRATA_SKIP_ROOT=1")]
fn environment_yml_builds_its_pip_section_for_its_python() {
    let world = World::new();
    let path = environment_yml(
        &world,
        "  - python=3.11\n  - pip\n  - pip:\n    - beta==2.0.0\n    - cext\n",
    );
    let built = world.build_ok(&path, &[]);
    let explained = world.strata(&[
        "explain",
        "--json",
        "-r",
        &path.display().to_string(),
        "--base",
        &base_ref(),
    ]);
    assert!(explained.status.success(), "{}", stderr(&explained));
    let bundle = world.dir.path().join("bundle");
    umoci_unpack(&world.oci(), built["tag"].as_str().unwrap(), &bundle);
    let (code, stdout, stderr) = runc_run(
        &bundle,
        &[
            "python",
            "-c",
            "import alpha, beta, cext, sys; print(sys.version_info[:2])",
        ],
    );
    assert_eq!(code, 0, "python in the image failed: {stderr}");
    assert_eq!(stdout.trim(), "(3, 11)");
}

#[test]
fn environment_yml_refusals_name_the_file_and_what_to_do() {
    let world = World::new();
    // The store as any command leaves it (opened, empty).
    assert!(world.strata(&["images"]).status.success());
    let before = world.snapshot();
    let conda = environment_yml(
        &world,
        "  - python=3.11\n  - numpy=1.26\n  - conda-forge::cudatoolkit\n  - pip:\n    - beta\n",
    );
    let out = world.build(&conda, &[]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let message = stderr(&out);
    assert!(
        message.contains("environment.yml: conda packages strata cannot install: numpy=1.26, conda-forge::cudatoolkit; strata builds from PyPI wheels only: move those that exist on PyPI to the `pip:` section"),
        "{message}"
    );
    // Python 3.10 is not in the base (3.11): the file's pin is checked against the target.
    let other_python = environment_yml(&world, "  - python=3.10\n  - pip:\n    - beta\n");
    let out = world.build(&other_python, &[]);
    assert!(
        stderr(&out).contains(
            "environment.yml: requires-python \"==3.10.*\" excludes the target's Python 3.11"
        ),
        "{}",
        stderr(&out)
    );
    // A bad pip line is named at its line of the YAML file.
    let bad_line = environment_yml(&world, "  - pip:\n    - beta\n    - gamma[\n");
    let out = world.build(&bad_line, &[]);
    assert!(
        stderr(&out).contains("environment.yml:7: invalid requirement \"gamma[\""),
        "{}",
        stderr(&out)
    );
    assert_eq!(world.snapshot(), before);
}

/// The pins of a pylock.toml written by `strata lock`: (name, version, sha256).
fn pins(pylock: &str) -> Vec<(String, String, String)> {
    let doc: toml::Table = pylock.parse().unwrap();
    doc["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap().to_string(),
                p["version"].as_str().unwrap().to_string(),
                p["wheels"][0]["hashes"]["sha256"]
                    .as_str()
                    .unwrap()
                    .to_string(),
            )
        })
        .collect()
}

/// A poetry.lock as Poetry 2 writes it (files by name and hash; beta depends on alpha).
fn poetry_lock(pins: &[(String, String, String)]) -> String {
    let mut out = String::new();
    for (name, version, sha) in pins {
        out += &format!(
            "[[package]]\nname = \"{name}\"\nversion = \"{version}\"\ndescription = \"\"\noptional = false\npython-versions = \">=3.8\"\nfiles = [\n    {{file = \"{}-{version}-py3-none-any.whl\", hash = \"sha256:{sha}\"}},\n    {{file = \"{name}-{version}.tar.gz\", hash = \"sha256:{}\"}},\n]\n",
            name.replace('-', "_"),
            "0".repeat(64)
        );
        if name == "beta" {
            out += "\n[package.dependencies]\nalpha = \">=1.0\"\n";
        }
        out += "\n";
    }
    out + "[metadata]\nlock-version = \"2.1\"\npython-versions = \"^3.11\"\ncontent-hash = \"0\"\n"
}

const POETRY_PYPROJECT: &str = r#"[tool.poetry]
name = "demo"
version = "0.1.0"

[tool.poetry.dependencies]
python = "^3.11"
beta = "*"
cext = ">=1.0"
tools = "*"
datapkg = { version = "*", optional = true }

[tool.poetry.extras]
plot = ["datapkg"]

[tool.poetry.group.dev.dependencies]
zeta-util = "*"
gamma = "0.3.0"
"#;

/// A Pipfile.lock: zeta-util and gamma in `develop`, the rest in `default`.
fn pipfile_lock(pins: &[(String, String, String)]) -> String {
    let entry = |(name, version, sha): &(String, String, String)| {
        (
            name.clone(),
            serde_json::json!({"hashes": [format!("sha256:{sha}")], "version": format!("=={version}"), "index": "pypi"}),
        )
    };
    let dev = ["zeta-util", "gamma"];
    let default: serde_json::Map<String, Value> = pins
        .iter()
        .filter(|p| !dev.contains(&p.0.as_str()))
        .map(entry)
        .collect();
    let develop: serde_json::Map<String, Value> = pins
        .iter()
        .filter(|p| dev.contains(&p.0.as_str()))
        .map(entry)
        .collect();
    serde_json::to_string_pretty(&serde_json::json!({
        "_meta": {"hash": {"sha256": "0"}, "pipfile-spec": 6, "requires": {}, "sources": []},
        "default": default,
        "develop": develop,
    }))
    .unwrap()
}

#[test]
#[cfg_attr(skip_root, ignore = "needs root; STRATA_SKIP_ROOT=1")]
fn poetry_lock_and_pipfile_lock_give_the_same_lock_and_image() {
    let world = World::new();
    let dir = project(&world);
    let from_pyproject = build(&world, &dir.join("pyproject.toml"), &[]);
    let pylock = dir.join("pylock.toml");
    let mut lock_cmd = world.command(&["lock", "-r"]);
    lock_cmd
        .arg(&dir)
        .args([
            "--extra",
            "plot",
            "--group",
            "dev",
            "--base",
            &base_ref(),
            "-f",
        ])
        .arg(&world.wheels)
        .args(["--no-index", "-o"])
        .arg(&pylock);
    run(&mut lock_cmd);
    let pins = pins(&fs::read_to_string(&pylock).unwrap());
    assert_eq!(pins.len(), MODULES.len(), "{pins:?}");

    let poetry = world.dir.path().join("poetry");
    fs::create_dir_all(&poetry).unwrap();
    fs::write(poetry.join("pyproject.toml"), POETRY_PYPROJECT).unwrap();
    fs::write(poetry.join("poetry.lock"), poetry_lock(&pins)).unwrap();
    // `-r DIR` takes poetry.lock before pyproject.toml.
    let from_poetry = build(&world, &poetry, &[]);
    assert_eq!(from_poetry["lock_digest"], from_pyproject["lock_digest"]);
    assert_eq!(from_poetry["digest"], from_pyproject["digest"]);

    let pipenv = world.dir.path().join("pipenv");
    fs::create_dir_all(&pipenv).unwrap();
    fs::write(pipenv.join("Pipfile.lock"), pipfile_lock(&pins)).unwrap();
    let from_pipfile = world.build_ok(&pipenv.join("Pipfile.lock"), &["--group", "dev"]);
    assert_eq!(from_pipfile["lock_digest"], from_pyproject["lock_digest"]);
    assert_eq!(from_pipfile["digest"], from_pyproject["digest"]);

    // Without the group and the extra: fewer packages, another lock.
    let smaller = world.build_ok(&poetry.join("poetry.lock"), &[]);
    assert_ne!(smaller["lock_digest"], from_pyproject["lock_digest"]);

    let bundle = world.dir.path().join("bundle");
    umoci_unpack(&world.oci(), from_poetry["tag"].as_str().unwrap(), &bundle);
    let script = format!(
        "import importlib\nfor name in {MODULES:?}: importlib.import_module(name)\nprint('ok')"
    );
    let (code, stdout, stderr) = runc_run(&bundle, &["python", "-c", &script]);
    assert_eq!(code, 0, "python in the image failed: {stderr}");
    assert_eq!(stdout.trim(), "ok");

    // A dependency that Poetry restricts to other Pythons (`python = "<3.10"`) or another
    // platform (`platform = "win32"`) is not installed for CPython 3.11 on Linux.
    let restricted = POETRY_PYPROJECT
        .replace(
            "tools = \"*\"",
            "tools = { version = \"*\", python = \"<3.10\" }",
        )
        .replace(
            "cext = \">=1.0\"",
            "cext = { version = \">=1.0\", platform = \"win32\" }",
        );
    assert_ne!(restricted, POETRY_PYPROJECT);
    fs::write(poetry.join("pyproject.toml"), restricted).unwrap();
    let without = world.build_ok(&poetry.join("poetry.lock"), &[]);
    let installed: Vec<&str> = without["layers"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|l| l["packages"].as_array().unwrap())
        .map(|p| p.as_str().unwrap())
        .collect();
    assert!(
        installed.iter().any(|p| p.starts_with("beta==")),
        "{installed:?}"
    );
    assert!(
        !installed
            .iter()
            .any(|p| p.starts_with("tools==") || p.starts_with("cext==")),
        "{installed:?}"
    );
}
