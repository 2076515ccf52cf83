//! Packages installed from source: an sdist with no wheel is built into a wheel for the target
//! (in an isolated build environment, its backend from the find-links directory), kept in the
//! wheel cache and reused; a build that fails or gives a wheel the target cannot install is
//! refused naming the package, leaving the store as it was.

mod common;

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

const EXIT_BAD_INPUT: i32 = 3;

fn sha256_of(path: &Path) -> String {
    sha256_hex(&fs::read(path).unwrap())
}

/// The built-wheel records of the wheel cache: `built/<sdist sha256>/<target>.json`.
fn built_records(world: &World, sdist_sha: &str) -> Vec<PathBuf> {
    let dir = world.home.join("wheels/built").join(sdist_sha);
    let mut records: Vec<PathBuf> = fs::read_dir(&dir)
        .map(|entries| entries.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    records.sort();
    records
}

#[test]
#[cfg_attr(skip_root, ignore = "needs root; STRATA_SKIP_ROOT=1")]
fn an_sdist_only_package_is_built_runs_and_is_reused() {
    require_root("runc");
    let world = World::new();
    let sdist = write_sdist(&world.wheels, "edgesdist", FIXTURE_BACKEND, &[]);
    let req = world.dir.path().join("sdist.txt");
    fs::write(&req, "edgesdist==1.0\nalpha\n").unwrap();

    let built = world.build_ok(&req, &[]);
    assert_eq!(built["cache"], "miss", "{built}");
    let records = built_records(&world, &sha256_of(&sdist));
    assert_eq!(
        records.len(),
        1,
        "no record of the built wheel: {records:?}"
    );
    let record: serde_json::Value =
        serde_json::from_slice(&fs::read(&records[0]).unwrap()).unwrap();
    assert_eq!(
        record["filename"], "edgesdist-1.0-py3-none-any.whl",
        "{record}"
    );
    assert_eq!(
        record["built_from"]["source"], "edgesdist-1.0.tar.gz",
        "{record}"
    );
    let wheel = world
        .home
        .join("wheels/sha256")
        .join(
            record["sha256"]
                .as_str()
                .unwrap()
                .trim_start_matches("sha256:"),
        )
        .join("edgesdist-1.0-py3-none-any.whl");
    let inode = fs::metadata(&wheel).unwrap().ino();

    let bundle = world.dir.path().join("bundle");
    umoci_unpack(&world.oci(), built["tag"].as_str().unwrap(), &bundle);
    let (code, stdout, run_err) = runc_run(
        &bundle,
        &[
            "python",
            "-c",
            "import edgesdist, alpha; print(edgesdist.VALUE)",
        ],
    );
    assert_eq!(code, 0, "import failed: {run_err}");
    assert_eq!(stdout.trim(), "edgesdist built from its sdist");

    // The same spec: answered by the cache.
    let again = world.build_ok(&req, &[]);
    assert_eq!(again["cache"], "hit", "{again}");
    assert_eq!(again["digest"], built["digest"]);

    // Resolved again: the sdist is the same, so its wheel is the one built before (not
    // rebuilt: same file), the lock is the same and so is the image.
    let refreshed = world.build_ok(&req, &["--refresh"]);
    assert_eq!(refreshed["cache"], "lock-hit", "{refreshed}");
    assert_eq!(refreshed["digest"], built["digest"]);
    assert_eq!(refreshed["lock_digest"], built["lock_digest"]);
    assert_eq!(
        fs::metadata(&wheel).unwrap().ino(),
        inode,
        "the wheel was built again"
    );

    // Pinned by the sdist's hash (what a hashed requirements file holds): another spec, the
    // same lock and image; a hash of other bytes is refused.
    let pinned = world.dir.path().join("pinned.txt");
    let sdist_sha = sha256_of(&sdist);
    fs::write(
        &pinned,
        format!("edgesdist==1.0 --hash=sha256:{sdist_sha}\nalpha\n"),
    )
    .unwrap();
    let by_hash = world.build_ok(&pinned, &[]);
    assert_eq!(by_hash["cache"], "lock-hit", "{by_hash}");
    assert_eq!(by_hash["digest"], built["digest"]);
    let wrong = "0".repeat(64);
    fs::write(
        &pinned,
        format!("edgesdist==1.0 --hash=sha256:{wrong}\nalpha\n"),
    )
    .unwrap();
    let out = world.build(&pinned, &[]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(err.contains("edgesdist"), "{err}");
}

#[test]
fn an_sdist_whose_build_fails_is_named_and_the_store_is_unchanged() {
    let world = World::new();
    let first = world.dir.path().join("first.txt");
    fs::write(&first, "alpha\n").unwrap();
    world.build_ok(&first, &[]);
    // Its backend is not available offline (like a C extension's compiler missing).
    let missing =
        "[build-system]\nrequires = [\"no-such-backend\"]\nbuild-backend = \"no_such_backend\"\n";
    write_sdist(&world.wheels, "edgebroken", missing, &[]);
    let req = world.dir.path().join("broken.txt");
    fs::write(&req, "edgebroken==1.0\n").unwrap();
    let before = world.snapshot();
    let out = world.build(&req, &[]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(EXIT_BAD_INPUT), "{err}");
    for want in [
        "package edgebroken==1.0",
        "sdist edgebroken-1.0.tar.gz",
        "no-such-backend",
    ] {
        assert!(err.contains(want), "no {want:?} in {err}");
    }
    assert_eq!(before, world.snapshot(), "the store changed: {err}");
}

/// An in-tree backend (`backend-path`) that builds a wheel for another platform, as a native
/// extension built on a host that is not the target would.
const NATIVE_BACKEND: &str = r#"
import os, zipfile

def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    name = "edgenative-1.0-cp311-cp311-linux_aarch64.whl"
    with zipfile.ZipFile(os.path.join(wheel_directory, name), "w") as zf:
        zf.writestr("edgenative/__init__.py", "")
        zf.writestr("edgenative-1.0.dist-info/METADATA", "Metadata-Version: 2.1\nName: edgenative\nVersion: 1.0\n")
        zf.writestr("edgenative-1.0.dist-info/WHEEL", "Wheel-Version: 1.0\nRoot-Is-Purelib: false\nTag: cp311-cp311-linux_aarch64\n")
        zf.writestr("edgenative-1.0.dist-info/RECORD", "")
    return name
"#;

#[test]
fn a_wheel_built_for_another_platform_is_refused() {
    let world = World::new();
    let first = world.dir.path().join("first.txt");
    fs::write(&first, "alpha\n").unwrap();
    world.build_ok(&first, &[]);
    let build_system = "[build-system]\nrequires = []\nbuild-backend = \"native_backend\"\nbackend-path = [\".\"]\n";
    write_sdist(
        &world.wheels,
        "edgenative",
        build_system,
        &[("native_backend.py", NATIVE_BACKEND)],
    );
    let req = world.dir.path().join("native.txt");
    fs::write(&req, "edgenative==1.0\n").unwrap();
    let before = world.snapshot();
    let out = world.build(&req, &[]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(EXIT_BAD_INPUT), "{err}");
    for want in [
        "package edgenative==1.0",
        "edgenative-1.0-cp311-cp311-linux_aarch64.whl",
        "x86_64",
    ] {
        assert!(err.contains(want), "no {want:?} in {err}");
    }
    assert_eq!(before, world.snapshot(), "the store changed: {err}");
}

/// The wheel cache's key is the sdist's sha256 and the target: the same sdist built for
/// Python 3.11 and for 3.12 gives two records (a wheel built for one Python is never taken
/// for another), each naming its target, and each found again by its own target.
#[test]
#[cfg_attr(
    skip_bases,
    ignore = "needs the Python 3.10/3.12/3.13 bases; STRATA_SKIP_BASES=1"
)]
fn one_sdist_built_for_two_pythons_gets_a_record_per_target() {
    // uv builds the sdist with a host interpreter of the target's version.
    let path = path_with_python("3.12");
    let world = World::new();
    let sdist = write_sdist(&world.wheels, "edgesdist", FIXTURE_BACKEND, &[]);
    let req = world.dir.path().join("sdist.txt");
    fs::write(&req, "edgesdist==1.0\n").unwrap();
    let sha = sha256_of(&sdist);

    let for_311 = world.build_ok(&req, &[]);
    assert_eq!(for_311["cache"], "miss", "{for_311}");
    let records = built_records(&world, &sha);
    assert_eq!(records.len(), 1, "{records:?}");

    let base_312 = base_ref_for("3.12");
    let build_312 = || {
        let out = world
            .build_command(&req, &base_312, &["--python", "3.12"])
            .env("PATH", &path)
            .output()
            .unwrap();
        assert!(out.status.success(), "the 3.12 build: {}", stderr(&out));
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    let for_312 = build_312();
    assert_eq!(for_312["cache"], "miss", "{for_312}");
    let records = built_records(&world, &sha);
    let names: Vec<String> = records
        .iter()
        .map(|r| r.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 2, "one record for two targets: {names:?}");
    assert!(
        names[0].starts_with("cp311-") && names[1].starts_with("cp312-"),
        "{names:?}"
    );

    // Each target finds its own record: resolving again rebuilds nothing.
    let modified = |path: &Path| fs::metadata(path).unwrap().modified().unwrap();
    let before: Vec<_> = records.iter().map(|r| modified(r)).collect();
    let again = world.build_ok(&req, &["--refresh"]);
    assert_eq!(again["lock_digest"], for_311["lock_digest"]);
    let out = world
        .build_command(&req, &base_312, &["--python", "3.12", "--refresh"])
        .env("PATH", &path)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let after: Vec<_> = records.iter().map(|r| modified(r)).collect();
    assert_eq!(before, after, "a record was written again");
    assert_eq!(built_records(&world, &sha), records);
}

/// `PATH` with a host `pythonX.Y` on it: as it is when one is there, else with the bin
/// directory of a pyenv installation of X.Y in front (the machine's own interpreters).
fn path_with_python(version: &str) -> std::ffi::OsString {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let runs = |program: &Path| {
        Command::new(program)
            .args(["-c", "pass"])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if runs(Path::new(&format!("python{version}"))) {
        return path;
    }
    let pyenv_root = Command::new("pyenv")
        .arg("root")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .or_else(|| std::env::var("PYENV_ROOT").ok())
        .or_else(|| std::env::var("HOME").ok().map(|h| format!("{h}/.pyenv")));
    let installed = pyenv_root.and_then(|root| {
        let mut dirs: Vec<_> = fs::read_dir(Path::new(&root).join("versions"))
            .ok()?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with(&format!("{version}.")))
            })
            .map(|p| p.join("bin"))
            .filter(|bin| runs(&bin.join(format!("python{version}"))))
            .collect();
        dirs.sort();
        dirs.pop()
    });
    let Some(bin) = installed else {
        panic!(
            "building an sdist for Python {version} needs a host python{version} (on PATH, or \
             installed by pyenv); STRATA_SKIP_BASES=1 marks this test ignored"
        );
    };
    let mut dirs = vec![bin];
    dirs.extend(std::env::split_paths(&path));
    std::env::join_paths(dirs).unwrap()
}
