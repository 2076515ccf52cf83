//! `--python 3.10 | 3.12 | 3.13` against the fixture base of that Python (Ubuntu jammy, Ubuntu
//! noble, Debian trixie: `fixtures/base-image/build.sh --python X.Y`, found under
//! `fixtures/base-image/out/bases` or `STRATA_TEST_BASES_DIR`): the environment is resolved for X.Y, the `cpXY` wheel of a
//! package that has one per version is the one installed, under `lib/pythonX.Y`, and the
//! image runs in runc with that Python. A `--python` the base does not have is refused before
//! anything is resolved, naming both versions, and the store is left as it was.

mod common;

use std::fs;
use std::path::Path;
use std::process::Command;

use common::*;
use serde_json::Value;

const EXIT_BAD_INPUT: i32 = 3;
const VERSIONS: [&str; 4] = ["3.10", "3.11", "3.12", "3.13"];

/// `cp312` for `3.12`.
fn cp(version: &str) -> String {
    format!("cp{}", version.replace('.', ""))
}

/// `vext`, one wheel per CPython version (`cpXY-cpXY-manylinux_2_17_x86_64`), each saying
/// which it is (`vext.TAG`) and carrying an extension module file named for its version;
/// and nothing pure, so a resolution for X.Y can only pick the cpXY wheel.
fn version_wheels(dir: &Path) {
    let script = r#"
import sys
sys.path.insert(0, sys.argv[1])
from make_wheels import build_wheel
for version in sys.argv[3:]:
    cp = "cp" + version.replace(".", "")
    tag = f"{cp}-{cp}-manylinux_2_17_x86_64"
    build_wheel(sys.argv[2], "vext", "1.0", {
        "vext/__init__.py": f"TAG = {cp!r}\n",
        f"vext/_native.cpython-{cp[2:]}-x86_64-linux-gnu.so": b"\x7fELF not loaded",
    }, tags=(tag,), file_tag=tag)
"#;
    run(Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(repo_root().join("fixtures/wheels"))
        .arg(dir)
        .args(VERSIONS));
}

fn requirements(world: &World) -> std::path::PathBuf {
    version_wheels(&world.wheels);
    let req = world.dir.path().join("versions.txt");
    // alpha: a pure py3-none-any wheel, the same file for every version.
    fs::write(&req, "vext\nalpha\n").unwrap();
    req
}

/// Builds for `version` on its base and runs the image: the interpreter is X.Y, the cpXY
/// wheel was chosen, and its files are under `lib/pythonX.Y/site-packages`.
fn builds_and_runs(version: &str) {
    let world = World::new();
    let req = requirements(&world);
    let base = base_ref_for(version);
    let out = world
        .build_command(&req, &base, &["--python", version])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let built: Value = serde_json::from_slice(&out.stdout).unwrap();
    let tag = built["tag"].as_str().unwrap();

    // Without --python the target is the base's own Python: the same spec, so a hit.
    let again = world.build_command(&req, &base, &[]).output().unwrap();
    assert!(again.status.success(), "{}", stderr(&again));
    let again: Value = serde_json::from_slice(&again.stdout).unwrap();
    assert_eq!(again["cache"], "hit", "{again}");
    assert_eq!(again["digest"], built["digest"]);

    let bundle = world.dir.path().join("bundle");
    umoci_unpack(&world.oci(), tag, &bundle);
    let cp = cp(version);
    let site = bundle.join(format!("rootfs/opt/venv/lib/python{version}/site-packages"));
    let so = format!("vext/_native.cpython-{}-x86_64-linux-gnu.so", &cp[2..]);
    assert!(site.join(&so).is_file(), "no {so} in {}", site.display());
    let wheel_tag = fs::read_to_string(site.join("vext-1.0.dist-info/WHEEL")).unwrap();
    assert!(
        wheel_tag.contains(&format!("Tag: {cp}-{cp}-manylinux_2_17_x86_64")),
        "{wheel_tag}"
    );

    let (code, stdout, stderr) = runc_run(
        &bundle,
        &[
            "python",
            "-c",
            "import sys, vext, alpha; print(tuple(sys.version_info[:2]), vext.TAG, sys.prefix)",
        ],
    );
    assert_eq!(code, 0, "python in the {version} image failed: {stderr}");
    let (major, minor) = version.split_once('.').unwrap();
    assert_eq!(
        stdout.trim(),
        format!("({major}, {minor}) {cp} /opt/venv"),
        "stderr: {stderr}"
    );
}

#[test]
#[cfg_attr(skip_root, ignore = "needs root; STRATA_SKIP_ROOT=1")]
#[cfg_attr(
    all(skip_bases, not(skip_root)),
    ignore = "needs the Python 3.10/3.12/3.13 bases; STRATA_SKIP_BASES=1"
)]
fn python_3_10_builds_with_its_cp310_wheel_and_runs() {
    builds_and_runs("3.10");
}

#[test]
#[cfg_attr(skip_root, ignore = "needs root; STRATA_SKIP_ROOT=1")]
#[cfg_attr(
    all(skip_bases, not(skip_root)),
    ignore = "needs the Python 3.10/3.12/3.13 bases; STRATA_SKIP_BASES=1"
)]
fn python_3_12_builds_with_its_cp312_wheel_and_runs() {
    builds_and_runs("3.12");
}

#[test]
#[cfg_attr(skip_root, ignore = "needs root; STRATA_SKIP_ROOT=1")]
#[cfg_attr(
    all(skip_bases, not(skip_root)),
    ignore = "needs the Python 3.10/3.12/3.13 bases; STRATA_SKIP_BASES=1"
)]
fn python_3_13_builds_with_its_cp313_wheel_and_runs() {
    builds_and_runs("3.13");
}

/// `--python X.Y` on the 3.11 base, and `--python 3.11` on the X.Y base: each refused before
/// resolution, naming the version asked for and the base's, with what to do; the store (with
/// an image built before in it) is unchanged.
#[test]
#[cfg_attr(
    skip_bases,
    ignore = "needs the Python 3.10/3.12/3.13 bases; STRATA_SKIP_BASES=1"
)]
fn a_python_the_base_does_not_have_is_refused_naming_both() {
    let world = World::new();
    let req = requirements(&world);
    world.build_ok(&req, &[]);
    let before = world.snapshot();
    for version in ["3.10", "3.12", "3.13"] {
        for (asked, base, has) in [
            (version, base_ref(), "3.11"),
            ("3.11", base_ref_for(version), version),
        ] {
            let out = world
                .build_command(&req, &base, &["--python", asked])
                .output()
                .unwrap();
            assert_eq!(out.status.code(), Some(EXIT_BAD_INPUT), "{}", stderr(&out));
            let err = stderr(&out);
            assert!(
                err.contains(&format!("the target is Python {asked}"))
                    && err.contains(&format!("has Python {has} (/usr/bin/python{has})"))
                    && err.contains(&format!("give a base image with Python {asked}"))
                    && err.contains(&format!("--python {has}")),
                "{err}"
            );
            assert_eq!(
                world.snapshot(),
                before,
                "a refused build changed the store"
            );
        }
    }
}
