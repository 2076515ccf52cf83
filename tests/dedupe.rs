//! Deduplication in a real registry: 20 environments that share most wheels occupy about the
//! bytes of their distinct blobs, where one-layer-per-environment images would take the sum.

mod common;
#[path = "../crates/strata-registry/tests/support/registry.rs"]
mod registry;

use std::collections::BTreeMap;
use std::fs;
use std::process::{Command, Stdio};

use common::*;
use registry::TestRegistry;

const ENVS: usize = 20;
const SHARED: usize = 20;
const UNIQUE_PER_ENV: usize = 2;
const WHEEL_BYTES: usize = 100_000;

#[test]
fn twenty_environments_take_the_space_of_their_distinct_layers() {
    let world = World::new();
    let synthetic = SHARED + ENVS * UNIQUE_PER_ENV;
    let status = Command::new("python3")
        .arg(repo_root().join("fixtures/wheels/make_wheels.py"))
        .arg(&world.wheels)
        .args([
            "--synthetic",
            &synthetic.to_string(),
            "--size",
            &WHEEL_BYTES.to_string(),
        ])
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let reg = TestRegistry::start();
    let target = format!("{}/team/experiments", reg.addr());

    let mut distinct: BTreeMap<String, u64> = BTreeMap::new();
    let mut naive: u64 = 0;
    let mut uploaded: u64 = 0;
    for env in 0..ENVS {
        let mut lines: Vec<String> = (0..SHARED).map(|i| format!("synth{i:03}==1.0.0")).collect();
        for j in 0..UNIQUE_PER_ENV {
            lines.push(format!(
                "synth{:03}==1.0.0",
                SHARED + env * UNIQUE_PER_ENV + j
            ));
        }
        let req = world.dir.path().join(format!("exp{env:02}.txt"));
        fs::write(&req, lines.join("\n")).unwrap();
        let built = world.build_ok(&req, &["--push", &target]);
        uploaded += built["bytes_uploaded"].as_u64().unwrap();
        let manifest = run(Command::new("skopeo")
            .args(["inspect", "--raw", "--tls-verify=false"])
            .arg(format!("docker://{}", built["image"].as_str().unwrap())));
        let manifest: serde_json::Value = serde_json::from_str(&manifest).unwrap();
        let mut image_bytes = manifest.to_string().len() as u64;
        distinct.insert(
            built["digest"].as_str().unwrap().to_string(),
            manifest.to_string().len() as u64,
        );
        for d in std::iter::once(&manifest["config"]).chain(manifest["layers"].as_array().unwrap())
        {
            let size = d["size"].as_u64().unwrap();
            image_bytes += size;
            distinct.insert(d["digest"].as_str().unwrap().to_string(), size);
        }
        naive += image_bytes;
    }
    let distinct_bytes: u64 = distinct.values().sum();
    let stored = reg.storage_bytes();
    eprintln!(
        "dedupe: {ENVS} environments: registry holds {stored} bytes; distinct blobs {distinct_bytes} bytes; \
         one layer per environment would take {naive} bytes ({:.1}x); uploaded {uploaded} bytes",
        naive as f64 / stored as f64
    );
    let within = (stored as f64 - distinct_bytes as f64).abs() / distinct_bytes as f64;
    assert!(
        within <= 0.05,
        "registry {stored} vs distinct {distinct_bytes}: {:.1}% apart",
        within * 100.0
    );
    assert!(
        naive > 5 * stored,
        "sharing should save most of {naive} bytes, registry holds {stored}"
    );
    // Nothing shared was uploaded twice.
    let layers_uploaded_at_most = distinct_bytes;
    assert!(
        uploaded <= layers_uploaded_at_most,
        "{uploaded} > {layers_uploaded_at_most}"
    );
}
