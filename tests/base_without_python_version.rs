//! A base image whose Python comes from Debian packages and whose config declares no
//! `PYTHON_VERSION` (as Debian, Ubuntu and CUDA images with an apt-installed Python are)
//! builds, and the environment runs in runc with a truthful `pyvenv.cfg`.
//!
//! The base is the fixture image (`fixtures/base-image`, made from Debian .debs) with
//! `PYTHON_VERSION` taken out of its config: same layers, new config and manifest.

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use common::*;
use serde_json::Value;

/// Copies the fixture layout to `dir` with a config whose `Env` lacks `PYTHON_VERSION`;
/// returns the `oci:` reference of the variant.
fn base_without_python_version(dir: &Path) -> String {
    let src = base_layout();
    let out = dir.join("base-nopyver");
    let blobs = out.join("blobs/sha256");
    fs::create_dir_all(&blobs).unwrap();
    for entry in fs::read_dir(src.join("blobs/sha256")).unwrap() {
        let entry = entry.unwrap();
        fs::hard_link(entry.path(), blobs.join(entry.file_name()))
            .or_else(|_| fs::copy(entry.path(), blobs.join(entry.file_name())).map(|_| ()))
            .unwrap();
    }
    fs::copy(src.join("oci-layout"), out.join("oci-layout")).unwrap();
    let index: Value = serde_json::from_slice(&fs::read(src.join("index.json")).unwrap()).unwrap();
    let manifest_digest = index["manifests"][0]["digest"].as_str().unwrap();
    let read_blob = |digest: &str| -> Vec<u8> {
        fs::read(blobs.join(digest.trim_start_matches("sha256:"))).unwrap()
    };
    let write_blob = |bytes: &[u8]| -> (String, usize) {
        let hex = sha256_hex(bytes);
        fs::write(blobs.join(&hex), bytes).unwrap();
        (format!("sha256:{hex}"), bytes.len())
    };

    let mut manifest: Value = serde_json::from_slice(&read_blob(manifest_digest)).unwrap();
    let mut config: Value =
        serde_json::from_slice(&read_blob(manifest["config"]["digest"].as_str().unwrap())).unwrap();
    let env = config["config"]["Env"].as_array_mut().unwrap();
    let before = env.len();
    env.retain(|v| !v.as_str().unwrap().starts_with("PYTHON_VERSION="));
    assert_eq!(env.len(), before - 1, "the fixture declared PYTHON_VERSION");
    let (config_digest, config_size) = write_blob(&serde_json::to_vec(&config).unwrap());
    manifest["config"]["digest"] = config_digest.into();
    manifest["config"]["size"] = config_size.into();
    let (digest, size) = write_blob(&serde_json::to_vec(&manifest).unwrap());
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": digest, "size": size,
            "annotations": {"org.opencontainers.image.ref.name": "3.11"},
        }],
    });
    fs::write(out.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
    format!("oci:{}:3.11", out.display())
}

fn build_on(world: &World, base: &str, requirements_file: &str) -> Value {
    let out = world
        .build_command(&requirements(requirements_file), base, &[])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "strata build on {base} failed: {}",
        stderr(&out)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
#[cfg_attr(skip_root, ignore = "needs root; STRATA_SKIP_ROOT=1")]
fn an_environment_on_a_base_without_python_version_builds_and_runs() {
    let world = World::new();
    let base = base_without_python_version(world.dir.path());
    let built = build_on(&world, &base, "shared-a.txt");
    let tag = built["tag"].as_str().unwrap();

    let bundle: PathBuf = world.dir.path().join("bundle");
    umoci_unpack(&world.oci(), tag, &bundle);
    let (code, stdout, stderr) = runc_run(
        &bundle,
        &[
            "python",
            "-c",
            "import tools, sys, platform; assert sys.prefix == '/opt/venv', sys.prefix; print(platform.python_version())",
        ],
    );
    assert_eq!(code, 0, "python in the image failed: {stderr}");
    let actual = stdout.trim();
    assert!(actual.starts_with("3.11."), "{actual}");

    // pyvenv.cfg tells the interpreter's real version, found in the image's own files.
    let cfg = fs::read_to_string(bundle.join("rootfs/opt/venv/pyvenv.cfg")).unwrap();
    assert!(
        cfg.lines().any(|l| l == format!("version = {actual}")),
        "pyvenv.cfg says {cfg:?}, the interpreter is {actual}"
    );
    let (code, stdout, stderr) = runc_run(&bundle, &["tools-hello"]);
    assert_eq!(code, 0, "console script failed: {stderr}");
    assert_eq!(stdout.trim(), "hello from tools");
}
