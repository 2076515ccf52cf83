//! `strata build --compile`: unchecked-hash pycs (PEP 552) in the same layer as their
//! package, the same bytes on every build (two fresh stores give one manifest digest), loaded
//! by the image's Python as they are and never rewritten. Another image than without.

mod common;

use std::fs;
use std::io::Read;

use common::*;
use serde_json::Value;

const SITE: &str = "opt/venv/lib/python3.11/site-packages";

/// The files of the layer that installs `package` (`name==version`), with their bytes.
fn layer_files(world: &World, built: &Value, package: &str) -> Vec<(String, Vec<u8>)> {
    let layer = built["layers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| {
            l["packages"]
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p == package)
        })
        .unwrap_or_else(|| panic!("no layer of {package}: {built}"));
    let hex = layer["digest"]
        .as_str()
        .unwrap()
        .trim_start_matches("sha256:");
    let blob = fs::File::open(world.oci().join("blobs/sha256").join(hex)).unwrap();
    let mut tar = tar::Archive::new(flate2::read::MultiGzDecoder::new(blob));
    let mut files = Vec::new();
    for entry in tar.entries().unwrap() {
        let mut entry = entry.unwrap();
        let path = entry.path().unwrap().display().to_string();
        let mut bytes = Vec::new();
        entry.read_to_end(&mut bytes).unwrap();
        files.push((path, bytes));
    }
    files
}

#[test]
#[cfg_attr(skip_root, ignore = "needs root; STRATA_SKIP_ROOT=1")]
fn compiled_layers_are_deterministic_and_their_pycs_are_used_in_runc() {
    require_root("runc");
    let world = World::new();
    let req = world.dir.path().join("compiled.txt");
    fs::write(&req, "alpha==1.0.0\ngamma\n").unwrap();

    let compiled = world.build_ok(&req, &["--compile"]);
    assert_eq!(compiled["cache"], "miss", "{compiled}");
    // The pyc is in alpha's own layer, an unchecked-hash pyc (flags 0b01), and in RECORD.
    let files = layer_files(&world, &compiled, "alpha==1.0.0");
    let pyc_path = format!("{SITE}/alpha/__pycache__/__init__.cpython-311.pyc");
    let pyc = files
        .iter()
        .find(|(p, _)| *p == pyc_path)
        .map(|(_, b)| b.clone())
        .unwrap_or_else(|| {
            let names: Vec<&str> = files.iter().map(|(p, _)| p.as_str()).collect();
            panic!("no {pyc_path} in alpha's layer: {names:?}")
        });
    assert_eq!(&pyc[4..8], &[1, 0, 0, 0], "not an unchecked-hash pyc");
    let record = files
        .iter()
        .find(|(p, _)| p.ends_with("alpha-1.0.0.dist-info/RECORD"))
        .map(|(_, b)| String::from_utf8_lossy(b).into_owned())
        .unwrap();
    assert!(
        record.contains("alpha/__pycache__/__init__.cpython-311.pyc,sha256="),
        "{record}"
    );

    // Another fresh store: the same image, byte for byte.
    let other = world.with_home("other-home");
    let again = other.build_ok(&req, &["--compile"]);
    assert_eq!(again["cache"], "miss", "{again}");
    assert_eq!(again["digest"], compiled["digest"]);

    // Without --compile: another spec identity and another image, without pycs.
    let plain = world.build_ok(&req, &[]);
    assert_eq!(plain["cache"], "miss", "{plain}");
    assert_ne!(plain["tag"], compiled["tag"]);
    assert_ne!(plain["digest"], compiled["digest"]);
    assert_eq!(plain["lock_digest"], compiled["lock_digest"]);
    assert!(layer_files(&world, &plain, "alpha==1.0.0")
        .iter()
        .all(|(p, _)| !p.ends_with(".pyc")));
    // And --compile again is a hit on the compiled image.
    let hit = world.build_ok(&req, &["--compile"]);
    assert_eq!(hit["cache"], "hit");
    assert_eq!(hit["digest"], compiled["digest"]);

    // Python in the image loads the pyc (`-v` says where code came from) and leaves it alone.
    let bundle = world.dir.path().join("bundle");
    umoci_unpack(&world.oci(), compiled["tag"].as_str().unwrap(), &bundle);
    let on_disk = bundle.join("rootfs").join(&pyc_path);
    let before = fs::read(&on_disk).unwrap();
    assert_eq!(before, pyc);
    let (code, stdout, stderr) = runc_run(
        &bundle,
        &[
            "python",
            "-v",
            "-c",
            "import alpha, gamma; print(alpha.__spec__.cached)",
        ],
    );
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(stdout.trim(), format!("/{pyc_path}"));
    assert!(
        stderr.contains(&format!("# code object from '/{pyc_path}'")),
        "the pyc was not loaded: {stderr}"
    );
    assert_eq!(
        fs::read(&on_disk).unwrap(),
        before,
        "python rewrote the pyc"
    );
}

/// A wheel that ships a pyc of its own (numpy 2.2 ships some) keeps it: --compile writes no
/// second file at that path (which was refused as a path added twice).
#[test]
fn a_pyc_the_wheel_ships_is_kept() {
    let world = World::new();
    let script = r#"
import sys
sys.path.insert(0, sys.argv[1])
from make_wheels import build_wheel
build_wheel(sys.argv[2], "shipspyc", "1.0", {
    "shipspyc/__init__.py": "from . import mod\n",
    "shipspyc/mod.py": "VALUE = 1\n",
    "shipspyc/__pycache__/mod.cpython-311.pyc": b"shipped by the wheel",
})
"#;
    run(std::process::Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(repo_root().join("fixtures/wheels"))
        .arg(&world.wheels));
    let req = world.dir.path().join("ships.txt");
    fs::write(&req, "shipspyc\n").unwrap();
    let built = world.build_ok(&req, &["--compile"]);
    let files = layer_files(&world, &built, "shipspyc==1.0");
    let pyc = |name: &str| {
        let path = format!("{SITE}/shipspyc/__pycache__/{name}.cpython-311.pyc");
        let found: Vec<&Vec<u8>> = files
            .iter()
            .filter(|(p, _)| *p == path)
            .map(|(_, b)| b)
            .collect();
        assert_eq!(found.len(), 1, "{path}: {found:?}");
        found[0].clone()
    };
    assert_eq!(pyc("mod"), b"shipped by the wheel");
    assert_eq!(&pyc("__init__")[4..8], &[1, 0, 0, 0]);
}
