//! `--platform linux/arm64` on this x86-64 host: uv resolves for aarch64, the arm64 wheel (an
//! ELF aarch64 extension module, made by the test) is installed as it is, and the image's
//! config says arm64 (`skopeo inspect`). A base of another architecture than the target is
//! refused naming both, and the store is left as it was.

mod common;

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use serde_json::Value;

const EXIT_BAD_INPUT: i32 = 3;
const SO: &str = "armext/_native.cpython-311-aarch64-linux-gnu.so";
/// ELF's e_machine of AArch64.
const EM_AARCH64: u16 = 183;

/// The first 64 bytes of an ELF64 little-endian shared object for `machine`: all the header
/// a loader (and the test) reads first.
fn elf_header(machine: u16) -> Vec<u8> {
    let mut h = vec![0u8; 64];
    h[..4].copy_from_slice(b"\x7fELF");
    h[4] = 2; // 64-bit
    h[5] = 1; // little-endian
    h[6] = 1; // version
    h[16..18].copy_from_slice(&3u16.to_le_bytes()); // ET_DYN
    h[18..20].copy_from_slice(&machine.to_le_bytes());
    h[20..24].copy_from_slice(&1u32.to_le_bytes());
    h[52..54].copy_from_slice(&64u16.to_le_bytes()); // e_ehsize
    h
}

/// `armext`, a wheel for manylinux aarch64 only, with an "extension module", in `dir`.
fn arm_wheel(dir: &Path) {
    let so = dir.join("native.so");
    fs::write(&so, elf_header(EM_AARCH64)).unwrap();
    let script = r#"
import sys
sys.path.insert(0, sys.argv[1])
from make_wheels import build_wheel
tag = "cp311-cp311-manylinux_2_17_aarch64"
so = open(sys.argv[3], "rb").read()
build_wheel(sys.argv[2], "armext", "1.0", {
    "armext/__init__.py": "from . import _native\n",
    sys.argv[4]: so,
}, tags=(tag,), file_tag=tag)
"#;
    run(Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(repo_root().join("fixtures/wheels"))
        .arg(dir)
        .arg(&so)
        .arg(SO));
    fs::remove_file(so).unwrap();
}

/// The fixture base re-labelled arm64 (its files stay x86-64: nothing here runs them), at
/// `oci:DIR:3.11-arm64`.
fn arm_base(dir: &Path) -> String {
    let layout = dir.join("base-arm64");
    run(Command::new("cp").arg("-r").arg(base_layout()).arg(&layout));
    run(Command::new("umoci")
        .args(["config", "--architecture", "arm64", "--image"])
        .arg(format!("{}:3.11", layout.display()))
        .args(["--tag", "3.11-arm64"]));
    format!("oci:{}:3.11-arm64", layout.display())
}

fn config_of(world: &World, tag: &str) -> Value {
    let out = run(Command::new("skopeo")
        .args(["inspect", "--config"])
        .arg(format!("oci:{}:{tag}", world.oci().display())));
    serde_json::from_str(&out).unwrap()
}

fn layer_file(world: &World, built: &Value, package: &str, path: &str) -> Option<Vec<u8>> {
    let layer = built["layers"].as_array()?.iter().find(|l| {
        l["packages"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p == package)
    })?;
    let hex = layer["digest"].as_str()?.trim_start_matches("sha256:");
    let blob = fs::File::open(world.oci().join("blobs/sha256").join(hex)).ok()?;
    let mut tar = tar::Archive::new(flate2::read::MultiGzDecoder::new(blob));
    for entry in tar.entries().ok()? {
        let mut entry = entry.ok()?;
        if entry.path().ok()?.to_string_lossy() == path {
            let mut bytes = Vec::new();
            entry.read_to_end(&mut bytes).ok()?;
            return Some(bytes);
        }
    }
    None
}

fn requirements(world: &World) -> PathBuf {
    arm_wheel(&world.wheels);
    let req = world.dir.path().join("arm.txt");
    fs::write(&req, "armext\nbeta\n").unwrap();
    req
}

#[test]
fn an_arm64_environment_is_resolved_and_assembled_on_x86_64() {
    let world = World::new();
    let req = requirements(&world);
    let base = arm_base(world.dir.path());
    let out = world
        .build_command(&req, &base, &["--platform", "linux/arm64"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let built: Value = serde_json::from_slice(&out.stdout).unwrap();
    let config = config_of(&world, built["tag"].as_str().unwrap());
    assert_eq!(config["architecture"], "arm64", "{config}");
    assert_eq!(config["os"], "linux");
    let so = layer_file(
        &world,
        &built,
        "armext==1.0",
        &format!("opt/venv/lib/python3.11/site-packages/{SO}"),
    )
    .expect("no extension module in armext's layer");
    assert_eq!(&so[..4], b"\x7fELF");
    assert_eq!(u16::from_le_bytes([so[18], so[19]]), EM_AARCH64);
    // Pure wheels come along as they are.
    assert!(built["layers"]
        .as_array()
        .unwrap()
        .iter()
        .any(|l| l["packages"][0] == "alpha==1.1.0"));

    // The same requirements for x86-64: armext has no wheel for it, named.
    let out = world.build(&req, &[]);
    assert_eq!(out.status.code(), Some(EXIT_BAD_INPUT), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("armext") && err.contains("x86_64"), "{err}");
}

#[test]
fn a_base_of_another_architecture_is_refused_naming_both() {
    let world = World::new();
    let req = world.dir.path().join("plain.txt");
    fs::write(&req, "alpha\n").unwrap();
    world.build_ok(&req, &[]);
    let before = world.snapshot();
    // The fixture base is amd64 only, and a single manifest (no index to choose from).
    let out = world.build(&req, &["--platform", "linux/arm64"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(EXIT_BAD_INPUT), "{err}");
    assert!(
        err.contains("is linux/amd64, the target is linux/arm64")
            && err.contains("--platform linux/amd64"),
        "{err}"
    );
    assert_eq!(
        world.snapshot(),
        before,
        "the refused build changed the store"
    );
}
