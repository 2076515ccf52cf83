//! Lock files whose packages are not wheels (issue 12): a git dependency and an sdist-only
//! package in a `uv.lock` and a `pylock.toml` (both written by uv itself) and a
//! `poetry.lock` are built as the
//! requirements path builds them — the git package at the commit the lock names, never its
//! branch; the sdist verified by its sha256 — and the three give one lock and one image that
//! runs. `strata lock` writes such packages as what they were built from (a `vcs` entry with
//! the commit, an `sdist` entry with its hash, a `directory` entry), never as their place in the wheel cache, and
//! building that pylock.toml gives the same lock and image again.
//!
//! The repository is a local bare repository made by the test (`git+file://`): offline.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use serde_json::Value;

/// Moves the branch the project asked for to a new commit: a lock must not follow it.
fn move_branch(work: &Path) -> String {
    let moved = git_commit_value(work, "lockgit", "two");
    git(work, &["push", "--quiet", "origin", "main"]);
    moved
}

fn uv(dir: &Path, args: &[&str]) {
    run(Command::new("uv")
        .args(args)
        .current_dir(dir)
        .env_remove("UV_INDEX_URL")
        .env_remove("UV_FIND_LINKS"));
}

/// `lockgit`, `locksdist` and `alpha` in the output of `import`, run in runc.
fn values_in_runc(world: &World, built: &Value, name: &str) -> String {
    let script = "import lockgit, locksdist, alpha; print(lockgit.VALUE, '|', locksdist.VALUE)";
    world.python_in(built, name, script)
}

fn explain_git(world: &World, file: &Path) -> Value {
    let out = world.strata(&[
        "explain",
        "-r",
        file.to_str().unwrap(),
        "--base",
        &base_ref(),
        "-f",
        world.wheels.to_str().unwrap(),
        "--no-index",
        "--json",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let explained: Value = serde_json::from_slice(&out.stdout).unwrap();
    explained["hit"]["git"].clone()
}

/// A project asking for the git repository's `main`, the sdist-only `locksdist` (in the
/// find-links directory) and `alpha`.
fn project(world: &World, bare: &Path) -> PathBuf {
    write_sdist(&world.wheels, "locksdist", FIXTURE_BACKEND, &[]);
    let dir = world.dir.path().join("proj");
    fs::create_dir_all(&dir).unwrap();
    fs::write(
        dir.join("pyproject.toml"),
        format!(
            "[project]\nname = \"demo\"\nversion = \"0.1\"\nrequires-python = \">=3.11\"\n\
             dependencies = [\"lockgit @ git+file://{}@main\", \"locksdist\", \"alpha==1.1.0\"]\n\n\
             [tool.uv]\nfind-links = [\"{}\"]\nno-index = true\n",
            bare.display(),
            world.wheels.display()
        ),
    )
    .unwrap();
    dir
}

#[test]
#[cfg_attr(skip_root, ignore = "needs root; STRATA_SKIP_ROOT=1")]
fn git_and_sdist_entries_of_uv_lock_and_pylock_are_built_at_the_locked_commit() {
    require_root("runc");
    let world = World::new();
    let (work, bare) = git_project(world.dir.path(), "lockgit");
    let locked = git(&work, &["rev-parse", "HEAD"]);
    let dir = project(&world, &bare);
    uv(&dir, &["lock", "--offline", "--quiet"]);
    uv(
        &dir,
        &[
            "export",
            "--format",
            "pylock.toml",
            "--offline",
            "--quiet",
            "-o",
            "pylock.toml",
        ],
    );
    let uv_lock = fs::read_to_string(dir.join("uv.lock")).unwrap();
    assert!(uv_lock.contains(&format!("#{locked}")), "{uv_lock}");
    // The branch moves after locking: the locks still mean the first commit.
    move_branch(&work);

    let from_uv_lock = world.build_ok(&dir.join("uv.lock"), &[]);
    assert_eq!(from_uv_lock["cache"], "miss", "{from_uv_lock}");
    assert_eq!(
        values_in_runc(&world, &from_uv_lock, "bundle-uv"),
        "one | locksdist built from its sdist"
    );
    assert_eq!(
        explain_git(&world, &dir.join("uv.lock")),
        serde_json::json!([{"name": "lockgit", "commit": locked}])
    );

    let from_pylock = world.build_ok(&dir.join("pylock.toml"), &[]);
    assert_eq!(from_pylock["lock_digest"], from_uv_lock["lock_digest"]);
    assert_eq!(from_pylock["digest"], from_uv_lock["digest"]);
    assert_eq!(
        explain_git(&world, &dir.join("pylock.toml")),
        serde_json::json!([{"name": "lockgit", "commit": locked}])
    );

    // poetry.lock (with its pyproject.toml): the git source at its resolved_reference, the
    // sdist by its hash.
    let poetry = world.dir.path().join("poetry");
    fs::create_dir_all(&poetry).unwrap();
    fs::write(
        poetry.join("pyproject.toml"),
        "[project]\nname = \"demo\"\nversion = \"0.1\"\ndependencies = [\"lockgit\", \"locksdist\", \"alpha\"]\n",
    )
    .unwrap();
    let file_hash = |name: &str| sha256_hex(&fs::read(world.wheels.join(name)).unwrap());
    fs::write(
        poetry.join("poetry.lock"),
        format!(
            "[[package]]\nname = \"alpha\"\nversion = \"1.1.0\"\n\
             files = [{{file = \"alpha-1.1.0-py3-none-any.whl\", hash = \"sha256:{}\"}}]\n\n\
             [[package]]\nname = \"lockgit\"\nversion = \"1.0\"\nfiles = []\n\n\
             [package.source]\ntype = \"git\"\nurl = \"file://{}\"\nreference = \"main\"\n\
             resolved_reference = \"{locked}\"\n\n\
             [[package]]\nname = \"locksdist\"\nversion = \"1.0\"\n\
             files = [{{file = \"locksdist-1.0.tar.gz\", hash = \"sha256:{}\"}}]\n\n\
             [metadata]\nlock-version = \"2.0\"\npython-versions = \">=3.11\"\ncontent-hash = \"0\"\n",
            file_hash("alpha-1.1.0-py3-none-any.whl"),
            bare.display(),
            file_hash("locksdist-1.0.tar.gz"),
        ),
    )
    .unwrap();
    let from_poetry = world.build_ok(&poetry.join("poetry.lock"), &[]);
    assert_eq!(from_poetry["lock_digest"], from_uv_lock["lock_digest"]);
    assert_eq!(from_poetry["digest"], from_uv_lock["digest"]);

    // Pipfile.lock: the git entry at its `ref`, the others by their hashes.
    let pipenv = world.dir.path().join("pipenv");
    fs::create_dir_all(&pipenv).unwrap();
    let pipfile_lock = serde_json::json!({
        "_meta": {"sources": []},
        "default": {
            "alpha": {"version": "==1.1.0",
                      "hashes": [format!("sha256:{}", file_hash("alpha-1.1.0-py3-none-any.whl"))]},
            "lockgit": {"git": format!("file://{}", bare.display()), "ref": locked},
            "locksdist": {"version": "==1.0",
                          "hashes": [format!("sha256:{}", file_hash("locksdist-1.0.tar.gz"))]},
        },
        "develop": {},
    });
    fs::write(pipenv.join("Pipfile.lock"), pipfile_lock.to_string()).unwrap();
    let from_pipfile = world.build_ok(&pipenv.join("Pipfile.lock"), &[]);
    assert_eq!(from_pipfile["lock_digest"], from_uv_lock["lock_digest"]);
    assert_eq!(from_pipfile["digest"], from_uv_lock["digest"]);

    // The same pins as requirements: the same lock and image.
    let req = world.dir.path().join("requirements.txt");
    fs::write(
        &req,
        format!(
            "lockgit @ git+file://{}@{locked}\nlocksdist==1.0\nalpha==1.1.0\n",
            bare.display()
        ),
    )
    .unwrap();
    let from_requirements = world.build_ok(&req, &[]);
    assert_eq!(
        from_requirements["lock_digest"],
        from_uv_lock["lock_digest"]
    );
    assert_eq!(from_requirements["digest"], from_uv_lock["digest"]);
}

#[test]
fn a_locked_sdist_whose_bytes_differ_from_its_hash_is_refused_and_the_store_kept() {
    let world = World::new();
    write_sdist(&world.wheels, "locksdist", FIXTURE_BACKEND, &[]);
    let sdist = world.wheels.join("locksdist-1.0.tar.gz");
    let pylock = world.dir.path().join("pylock.toml");
    fs::write(
        &pylock,
        format!(
            "lock-version = \"1.0\"\n[[packages]]\nname = \"locksdist\"\nversion = \"1.0\"\n\
             sdist = {{ path = \"{}\", hashes = {{ sha256 = \"{}\" }} }}\n",
            sdist.display(),
            "ab".repeat(32)
        ),
    )
    .unwrap();
    // A store with something in it, to be left as it was.
    let alpha = world.dir.path().join("alpha.txt");
    fs::write(&alpha, "alpha==1.1.0\n").unwrap();
    world.build_ok(&alpha, &[]);
    let before = world.snapshot();
    let out = world.build(&pylock, &[]);
    eprintln!("{}", stderr(&out));
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains("locksdist"), "{}", stderr(&out));
    assert!(stderr(&out).contains("sha256"), "{}", stderr(&out));
    assert_eq!(world.snapshot(), before);
}

#[test]
#[cfg_attr(skip_root, ignore = "needs root; STRATA_SKIP_ROOT=1")]
fn strata_lock_writes_built_packages_as_their_sources_and_builds_the_same_image_again() {
    require_root("runc");
    let world = World::new();
    let (work, bare) = git_project(world.dir.path(), "lockgit");
    write_sdist(&world.wheels, "locksdist", FIXTURE_BACKEND, &[]);
    let moved = move_branch(&work);
    // A project directory beside them.
    let project_dir = world.dir.path().join("lockdir");
    fs::create_dir_all(project_dir.join("lockdir")).unwrap();
    fs::write(
        project_dir.join("pyproject.toml"),
        format!("{FIXTURE_BACKEND}\n[project]\nname = \"lockdir\"\nversion = \"1.0\"\n"),
    )
    .unwrap();
    fs::write(project_dir.join("lockdir/__init__.py"), "VALUE = 'dir'\n").unwrap();
    let req = world.dir.path().join("requirements.txt");
    fs::write(
        &req,
        format!(
            "lockgit @ git+file://{}@main\nlocksdist==1.0\nalpha==1.1.0\n",
            bare.display(),
        ),
    )
    .unwrap();
    let with_directory = world.dir.path().join("with-directory.txt");
    fs::write(
        &with_directory,
        format!("alpha==1.1.0\nlockdir @ file://{}\n", project_dir.display()),
    )
    .unwrap();
    let from_requirements = world.build_ok(&req, &[]);
    assert_eq!(
        values_in_runc(&world, &from_requirements, "bundle-req"),
        "two | locksdist built from its sdist"
    );

    let out_dir = world.dir.path().join("committed");
    fs::create_dir_all(&out_dir).unwrap();
    let pylock = out_dir.join("pylock.toml");
    let text = strata_lock(&world, &req, &pylock);
    let home = world.home.display().to_string();
    assert!(!text.contains(&home), "a STRATA_HOME path: {text}");
    assert!(!text.contains("sha256/"), "the wheel cache: {text}");
    let doc: toml::Table = text.parse().unwrap();
    let packages = doc["packages"].as_array().unwrap();
    let entry = |name: &str| {
        packages
            .iter()
            .find(|p| p["name"].as_str() == Some(name))
            .unwrap_or_else(|| panic!("no {name}: {text}"))
            .clone()
    };
    let vcs = &entry("lockgit")["vcs"];
    assert_eq!(vcs["type"].as_str(), Some("git"), "{text}");
    assert_eq!(vcs["commit-id"].as_str(), Some(moved.as_str()), "{text}");
    let sdist = &entry("locksdist")["sdist"];
    let sdist_bytes = fs::read(world.wheels.join("locksdist-1.0.tar.gz")).unwrap();
    assert_eq!(
        sdist["hashes"]["sha256"].as_str(),
        Some(sha256_hex(&sdist_bytes).as_str()),
        "{text}"
    );
    // Relative to the lock, so it builds wherever the project is checked out.
    assert!(sdist["path"].as_str().unwrap().starts_with("../"), "{text}");
    assert!(entry("alpha")["wheels"].as_array().is_some(), "{text}");

    let from_pylock = world.build_ok(&pylock, &[]);
    assert_eq!(from_pylock["lock_digest"], from_requirements["lock_digest"]);
    assert_eq!(from_pylock["digest"], from_requirements["digest"]);

    // A directory is written as its path relative to the lock, and builds from there. (Its
    // wheel is built again every time and the fixture backend's wheels carry the build
    // time, so the digest is not compared.)
    let dir_lock = out_dir.join("pylock.dir.toml");
    let text = strata_lock(&world, &with_directory, &dir_lock);
    assert!(!text.contains(&home), "a STRATA_HOME path: {text}");
    assert!(
        text.contains("[packages.directory]\npath = \"../lockdir\""),
        "{text}"
    );
    let from_dir_lock = world.build_ok(&dir_lock, &[]);
    let bundle = world.dir.path().join("bundle-dir");
    umoci_unpack(
        &world.oci(),
        from_dir_lock["tag"].as_str().unwrap(),
        &bundle,
    );
    let (code, stdout, err) = runc_run(
        &bundle,
        &["python", "-c", "import lockdir; print(lockdir.VALUE)"],
    );
    assert_eq!((code, stdout.trim()), (0, "dir"), "{err}");
}

/// `strata lock -r REQ -o OUT` offline; the text written.
fn strata_lock(world: &World, req: &Path, out: &Path) -> String {
    let output = world
        .command(&["lock", "-r"])
        .arg(req)
        .args(["--base", &base_ref(), "-f"])
        .arg(&world.wheels)
        .args(["--no-index", "-o"])
        .arg(out)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    fs::read_to_string(out).unwrap()
}

/// `--install-project`: a project that is a package is installed itself, built from its
/// directory (a copy under the venv, never a link to the host), from its pyproject.toml and
/// from its uv.lock; without the flag only its dependencies are. A project that is no
/// package is refused naming the file and what to do, and the store is kept.
#[test]
#[cfg_attr(skip_root, ignore = "needs root; STRATA_SKIP_ROOT=1")]
fn install_project_installs_a_package_project_itself() {
    require_root("runc");
    let world = World::new();
    let dir = world.dir.path().join("pkgproj");
    fs::create_dir_all(dir.join("pkgproj")).unwrap();
    fs::write(dir.join("pkgproj/__init__.py"), "VALUE = 'the project'\n").unwrap();
    fs::write(
        dir.join("pyproject.toml"),
        format!(
            "{FIXTURE_BACKEND}\n[project]\nname = \"pkgproj\"\nversion = \"0.1\"\n\
             requires-python = \">=3.11\"\ndependencies = [\"alpha==1.1.0\"]\n\n\
             [tool.uv]\nfind-links = [\"{}\"]\nno-index = true\n",
            world.wheels.display()
        ),
    )
    .unwrap();
    let imports = |built: &Value, name: &str| {
        let script = "import alpha\ntry:\n import pkgproj; print(pkgproj.VALUE, pkgproj.__file__)\nexcept ImportError:\n print('no project')";
        world.python_in(built, name, script)
    };
    let pyproject = dir.join("pyproject.toml");
    let only_deps = world.build_ok(&pyproject, &[]);
    assert_eq!(imports(&only_deps, "bundle-deps"), "no project");
    let with_project = world.build_ok(&pyproject, &["--install-project"]);
    assert_ne!(with_project["lock_digest"], only_deps["lock_digest"]);
    let printed = imports(&with_project, "bundle-project");
    assert!(
        printed.starts_with("the project /opt/venv/lib/"),
        "{printed}"
    );

    uv(&dir, &["lock", "--offline", "--quiet"]);
    let from_lock = world.build_ok(&dir.join("uv.lock"), &["--install-project"]);
    assert!(
        imports(&from_lock, "bundle-lock").starts_with("the project /opt/venv/lib/"),
        "from uv.lock"
    );

    // No [build-system]: not a package, nothing of its own to install.
    let plain = world.dir.path().join("plain");
    fs::create_dir_all(&plain).unwrap();
    fs::write(
        plain.join("pyproject.toml"),
        "[project]\nname = \"plain\"\nversion = \"0.1\"\ndependencies = [\"alpha==1.1.0\"]\n",
    )
    .unwrap();
    let before = world.snapshot();
    let out = world
        .build_command(
            &plain.join("pyproject.toml"),
            &base_ref(),
            &["--install-project"],
        )
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("pyproject.toml")
            && err.contains("[build-system]")
            && err.contains("leave out --install-project"),
        "{err}"
    );
    assert_eq!(before, world.snapshot(), "the store changed");
}
