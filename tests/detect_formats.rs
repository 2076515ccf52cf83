//! `strata detect` (and a submit without -r) reads the project files `strata build -r DIR`
//! reads, in the same order: pylock.toml, uv.lock, poetry.lock, Pipfile.lock, pyproject.toml
//! (with `[project] dependencies`), requirements.txt, environment.yml. And `strata submit
//! --refresh` resolves the job's environment again, `--group`/`--extra` reach the agent's
//! build (the real agent, runc), and a pylock.toml is installed without uv.

mod common;

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;
use serde_json::Value;

fn detect(world: &World, dir: &Path) -> Value {
    // No environment: a declared file needs none.
    let out = world
        .command(&["detect", dir.to_str().unwrap(), "--json"])
        .env("VIRTUAL_ENV", world.dir.path().join("no-such-venv"))
        .env_remove("CONDA_PREFIX")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "strata detect failed: {}",
        stderr(&out)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn requirement_lines(detection: &Value) -> Vec<String> {
    detection["requirements"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["requirement"].as_str().unwrap().to_string())
        .collect()
}

fn notes(detection: &Value) -> Vec<String> {
    detection["notes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            format!(
                "{}: {}",
                n["file"].as_str().unwrap_or("-"),
                n["message"].as_str().unwrap()
            )
        })
        .collect()
}

#[test]
fn detect_takes_the_project_files_in_the_order_of_build_r_dir() {
    let world = World::new();
    let dir = world.dir.path().join("proj");
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join("train.py"), "import gamma\n").unwrap();
    fs::write(
        dir.join("pyproject.toml"),
        format!(
            "[project]\nname = \"demo\"\nversion = \"0.1\"\nrequires-python = \">=3.11\"\n\
             dependencies = [\"beta\"]\n\n[tool.uv]\nfind-links = [\"{}\"]\nno-index = true\n",
            world.wheels.display()
        ),
    )
    .unwrap();
    fs::write(dir.join("requirements.txt"), "gamma\n").unwrap();
    fs::write(
        dir.join("environment.yml"),
        "name: demo\ndependencies:\n  - python=3.11\n  - pip:\n    - zeta-util\n",
    )
    .unwrap();
    run(Command::new("uv")
        .args(["lock", "--offline", "--quiet"])
        .current_dir(&dir)
        .env_remove("UV_INDEX_URL")
        .env_remove("UV_FIND_LINKS"));

    // uv.lock first: its pins (the project itself is not a package to install).
    let detection = detect(&world, &dir);
    assert_eq!(detection["from"]["file"], "uv.lock", "{detection}");
    assert_eq!(
        requirement_lines(&detection),
        ["alpha==1.1.0", "beta==2.0.0"],
        "{detection}"
    );
    assert_eq!(
        notes(&detection),
        [
            "environment.yml: not used: uv.lock comes first",
            "pyproject.toml: not used: uv.lock comes first",
            "requirements.txt: not used: uv.lock comes first",
        ]
    );

    // pylock.toml (written by strata lock) comes before uv.lock.
    let out = world
        .command(&[
            "lock",
            "-r",
            dir.to_str().unwrap(),
            "--base",
            &base_ref(),
            "-o",
        ])
        .arg(dir.join("pylock.toml"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let detection = detect(&world, &dir);
    assert_eq!(detection["from"]["file"], "pylock.toml", "{detection}");
    assert_eq!(
        requirement_lines(&detection),
        ["alpha==1.1.0", "beta==2.0.0"]
    );

    // Without the uv locks: poetry.lock (with the pyproject's dependencies) before
    // Pipfile.lock, both before pyproject.toml.
    fs::remove_file(dir.join("pylock.toml")).unwrap();
    fs::remove_file(dir.join("uv.lock")).unwrap();
    let sha = |file: &str| sha256_hex(&fs::read(world.wheels.join(file)).unwrap());
    fs::write(
        dir.join("poetry.lock"),
        format!(
            "[[package]]\nname = \"alpha\"\nversion = \"1.0.0\"\noptional = false\n\
             python-versions = \">=3.8\"\nfiles = [\n    {{file = \"alpha-1.0.0-py3-none-any.whl\", \
             hash = \"sha256:{}\"}},\n]\n\n\
             [[package]]\nname = \"beta\"\nversion = \"2.0.0\"\noptional = false\n\
             python-versions = \">=3.8\"\nfiles = [\n    {{file = \"beta-2.0.0-py3-none-any.whl\", \
             hash = \"sha256:{}\"}},\n]\n\n[package.dependencies]\nalpha = \">=1.0\"\n\n\
             [metadata]\nlock-version = \"2.1\"\npython-versions = \">=3.11\"\ncontent-hash = \"0\"\n",
            sha("alpha-1.0.0-py3-none-any.whl"),
            sha("beta-2.0.0-py3-none-any.whl"),
        ),
    )
    .unwrap();
    fs::write(
        dir.join("Pipfile.lock"),
        serde_json::to_string_pretty(&serde_json::json!({
            "_meta": {"hash": {"sha256": "0"}, "pipfile-spec": 6, "requires": {}, "sources": []},
            "default": {"gamma": {
                "hashes": [format!("sha256:{}", sha("gamma-0.3.0-py3-none-any.whl"))],
                "version": "==0.3.0",
            }},
            "develop": {},
        }))
        .unwrap(),
    )
    .unwrap();
    let detection = detect(&world, &dir);
    assert_eq!(detection["from"]["file"], "poetry.lock", "{detection}");
    assert_eq!(
        requirement_lines(&detection),
        ["alpha==1.0.0", "beta==2.0.0"],
        "{detection}"
    );
    assert!(
        notes(&detection).contains(&"Pipfile.lock: not used: poetry.lock comes first".to_string()),
        "{:?}",
        notes(&detection)
    );
    fs::remove_file(dir.join("poetry.lock")).unwrap();
    let detection = detect(&world, &dir);
    assert_eq!(detection["from"]["file"], "Pipfile.lock", "{detection}");
    assert_eq!(
        requirement_lines(&detection),
        ["gamma==0.3.0"],
        "{detection}"
    );
    assert!(
        notes(&detection)
            .contains(&"pyproject.toml: not used: Pipfile.lock comes first".to_string()),
        "{:?}",
        notes(&detection)
    );

    // Without any lock: pyproject.toml's dependencies.
    fs::remove_file(dir.join("Pipfile.lock")).unwrap();
    let detection = detect(&world, &dir);
    assert_eq!(detection["from"]["file"], "pyproject.toml", "{detection}");
    assert_eq!(requirement_lines(&detection), ["beta"]);

    // A pyproject.toml of tool settings only declares nothing: requirements.txt.
    fs::write(
        dir.join("pyproject.toml"),
        "[tool.black]\nline-length = 100\n",
    )
    .unwrap();
    let detection = detect(&world, &dir);
    assert_eq!(detection["from"]["file"], "requirements.txt", "{detection}");
    assert_eq!(requirement_lines(&detection), ["gamma"]);

    // And environment.yml last: its pip section.
    fs::remove_file(dir.join("requirements.txt")).unwrap();
    let detection = detect(&world, &dir);
    assert_eq!(detection["from"]["file"], "environment.yml", "{detection}");
    assert_eq!(requirement_lines(&detection), ["zeta-util"]);
}

#[test]
#[cfg_attr(skip_root, ignore = "needs root; STRATA_SKIP_ROOT=1")]
fn submit_refresh_resolves_the_environment_again() {
    require_root("runc");
    let mut world = World::new();
    // Only alpha 1.0.0 at first.
    let all = world.wheels.clone();
    let wheels = world.dir.path().join("wheels-now");
    fs::create_dir_all(&wheels).unwrap();
    for entry in fs::read_dir(&all).unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.starts_with("alpha-1.1.0") {
            fs::copy(entry.path(), wheels.join(&name)).unwrap();
        }
    }
    world.wheels = wheels.clone();
    let req = world.dir.path().join("ranges.txt");
    fs::write(&req, "alpha>=1.0\n").unwrap();
    let _agent = AgentProcess::start(&world);
    let submit = |extra: &[&str]| -> Value {
        let base = base_ref();
        let mut args = vec![
            "submit",
            "--json",
            "--no-code",
            "-r",
            req.to_str().unwrap(),
            "--base",
            &base,
            "-f",
            wheels.to_str().unwrap(),
            "--no-index",
        ];
        args.extend_from_slice(extra);
        args.extend([
            "--",
            "python",
            "-c",
            "import importlib.metadata as m; print(m.version('alpha'))",
        ]);
        let out = world.strata(&args);
        assert!(out.status.success(), "submit failed: {}", stderr(&out));
        let submitted: Value = serde_json::from_slice(&out.stdout).unwrap();
        let id = submitted["id"].as_str().unwrap().to_string();
        let status = world.wait_for(&id, TERMINAL, Duration::from_secs(240));
        assert_eq!(status["state"], "succeeded", "{status}");
        let log = String::from_utf8(world.strata(&["logs", &id]).stdout).unwrap();
        serde_json::json!({"image": status["image_digest"], "alpha": log.trim()})
    };
    let first = submit(&[]);
    assert_eq!(first["alpha"], "1.0.0", "{first}");

    // alpha 1.1.0 appears: the spec's first resolution answers until --refresh.
    fs::copy(
        all.join("alpha-1.1.0-py3-none-any.whl"),
        wheels.join("alpha-1.1.0-py3-none-any.whl"),
    )
    .unwrap();
    let cached = submit(&[]);
    assert_eq!(cached, first);
    let refreshed = submit(&["--refresh"]);
    assert_eq!(refreshed["alpha"], "1.1.0", "{refreshed}");
    assert_ne!(refreshed["image"], first["image"]);
}

/// `strata submit -r uv.lock --group dev` and `-r pyproject.toml --extra plot`, run by a
/// real agent: the job's environment has what the group and the extra add (the agent's build
/// options carry the selection), and nothing the other one would.
#[test]
#[cfg_attr(skip_root, ignore = "needs root; STRATA_SKIP_ROOT=1")]
fn a_submitted_group_or_extra_is_installed_by_the_agent() {
    require_root("runc");
    let world = World::new();
    let dir = world.dir.path().join("proj");
    fs::create_dir_all(&dir).unwrap();
    fs::write(
        dir.join("pyproject.toml"),
        format!(
            "[project]\nname = \"demo\"\nversion = \"0.1\"\nrequires-python = \">=3.11\"\n\
             dependencies = [\"beta\"]\n\n[project.optional-dependencies]\nplot = [\"datapkg\"]\n\n\
             [dependency-groups]\ndev = [\"zeta-util\"]\n\n\
             [tool.uv]\nfind-links = [\"{}\"]\nno-index = true\n",
            world.wheels.display()
        ),
    )
    .unwrap();
    run(Command::new("uv")
        .args(["lock", "--offline", "--quiet"])
        .current_dir(&dir)
        .env_remove("UV_INDEX_URL")
        .env_remove("UV_FIND_LINKS"));
    let _agent = AgentProcess::start(&world);
    let base = base_ref();
    let wheels = world.wheels.to_str().unwrap().to_string();
    // Which of the optional modules the job's Python can import.
    let script = "import importlib.util as u; \
                  print(' '.join(n for n in ['beta', 'datapkg', 'zeta_util'] if u.find_spec(n)))";
    let job = |file: &str, selection: &[&str]| -> String {
        let path = dir.join(file);
        let mut args = vec![
            "submit",
            "--json",
            "--no-code",
            "-r",
            path.to_str().unwrap(),
            "--base",
            &base,
            "-f",
            &wheels,
            "--no-index",
        ];
        args.extend_from_slice(selection);
        args.extend(["--", "python", "-c", script]);
        let out = world.strata(&args);
        assert!(out.status.success(), "submit failed: {}", stderr(&out));
        let submitted: Value = serde_json::from_slice(&out.stdout).unwrap();
        let id = submitted["id"].as_str().unwrap().to_string();
        let status = world.wait_for(&id, TERMINAL, Duration::from_secs(240));
        let log = String::from_utf8(world.strata(&["logs", &id]).stdout).unwrap();
        assert_eq!(status["state"], "succeeded", "{status}\n{log}");
        log.trim().to_string()
    };
    assert_eq!(job("uv.lock", &["--group", "dev"]), "beta zeta_util");
    assert_eq!(job("pyproject.toml", &["--extra", "plot"]), "beta datapkg");
    // The control: neither asked for, neither installed.
    assert_eq!(job("uv.lock", &[]), "beta");
}

/// A pylock.toml is installed as it is: built with no uv to be found (`STRATA_UV` naming
/// nothing), it gives the lock and the image the requirements it was locked from give; a
/// requirements file with the same setting is refused for want of uv.
#[test]
fn a_pylock_is_installed_without_uv() {
    let world = World::new();
    let req = world.dir.path().join("requirements.txt");
    fs::write(&req, "beta\ngamma==0.3.0\n").unwrap();
    let from_requirements = world.build_ok(&req, &[]);
    let pylock = world.dir.path().join("pylock.toml");
    let mut lock = world.command(&["lock", "-r"]);
    lock.arg(&req)
        .args(["--base", &base_ref(), "-f"])
        .arg(&world.wheels)
        .args(["--no-index", "-o"])
        .arg(&pylock);
    run(&mut lock);

    // A fresh store, so that nothing is answered from a cache.
    let other = world.with_home("no-uv");
    let no_uv = world.dir.path().join("no-uv-here");
    let out = other
        .command(&[
            "build",
            "-r",
            pylock.to_str().unwrap(),
            "--base",
            &base_ref(),
            "--json",
        ])
        .env("STRATA_UV", &no_uv)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let from_pylock: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(from_pylock["cache"], "miss", "{from_pylock}");
    assert_eq!(from_pylock["lock_digest"], from_requirements["lock_digest"]);
    assert_eq!(from_pylock["digest"], from_requirements["digest"]);

    let out = other
        .build_command(&req, &base_ref(), &[])
        .env("STRATA_UV", &no_uv)
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "a requirements file built without uv"
    );
    assert!(
        stderr(&out).contains("uv was not found"),
        "{}",
        stderr(&out)
    );
}
