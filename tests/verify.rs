//! `strata verify REF` against a real `docker-registry` on 127.0.0.1: an image built and pushed
//! from one store verifies from another, empty one; a layer swapped in the registry, or a
//! blob whose bytes changed in the registry's storage, fails naming the layer; an image strata
//! did not build and a wheel that cannot be found are clear errors.

#[path = "../crates/strata-registry/tests/support/answer_proxy.rs"]
mod answer_proxy;
mod common;
#[path = "../crates/strata-registry/tests/support/registry.rs"]
mod registry;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use answer_proxy::AnswerProxy;
use common::*;
use registry::TestRegistry;
use serde_json::Value;

/// `strata verify REF ARGS` in `world`.
fn verify(world: &World, reference: &str, args: &[&str]) -> Output {
    let mut command = world.command(&["verify", reference]);
    command.args(args);
    command.output().expect("run strata verify")
}

/// `--find-links WHEELS --base BASE`: what a store that has neither needs.
fn sources(world: &World) -> Vec<String> {
    vec![
        "--find-links".into(),
        world.wheels.display().to_string(),
        "--base".into(),
        base_ref(),
    ]
}

fn verify_json(world: &World, reference: &str, args: &[String]) -> (Output, Value) {
    let mut all: Vec<&str> = args.iter().map(String::as_str).collect();
    all.push("--json");
    let out = verify(world, reference, &all);
    let json = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "bad JSON ({e}): {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            stderr(&out)
        )
    });
    (out, json)
}

/// A blob of `world`'s store, as JSON.
fn store_json(world: &World, digest: &str) -> Value {
    let hex = digest.strip_prefix("sha256:").unwrap();
    serde_json::from_slice(&fs::read(world.oci().join("blobs/sha256").join(hex)).unwrap()).unwrap()
}

/// The index of the layer of a manifest that installs `package` (`name==version`).
fn layer_of(manifest: &Value, package: &str) -> usize {
    manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .position(|l| l["annotations"]["dev.strata.packages"] == package)
        .unwrap_or_else(|| panic!("no layer of {package} in {manifest}"))
}

/// Where `docker-registry` keeps a blob's bytes.
fn registry_blob(reg: &TestRegistry, digest: &str) -> PathBuf {
    let hex = digest.strip_prefix("sha256:").unwrap();
    reg.storage_root()
        .join("docker/registry/v2/blobs/sha256")
        .join(&hex[..2])
        .join(hex)
        .join("data")
}

/// Uploads `bytes` as a blob of `repo` with the registry API (curl, not strata).
fn upload_blob(registry: &str, repo: &str, bytes: &[u8], dir: &Path) -> String {
    let digest = format!("sha256:{}", sha256_hex(bytes));
    let file = dir.join("upload");
    fs::write(&file, bytes).unwrap();
    let headers = run(Command::new("curl").args([
        "-sS",
        "-f",
        "-D",
        "-",
        "-o",
        "/dev/null",
        "-X",
        "POST",
        &format!("http://{registry}/v2/{repo}/blobs/uploads/"),
    ]));
    let location = headers
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("location")
                .then(|| value.trim().to_string())
        })
        .expect("a Location header");
    let location = match location.starts_with('/') {
        true => format!("http://{registry}{location}"),
        false => location,
    };
    let separator = if location.contains('?') { '&' } else { '?' };
    run(Command::new("curl")
        .args(["-sS", "-f", "-X", "PUT", "-H"])
        .arg("Content-Type: application/octet-stream")
        .arg("--data-binary")
        .arg(format!("@{}", file.display()))
        .arg(format!("{location}{separator}digest={digest}")));
    digest
}

/// Puts a manifest under `tag` with the registry API.
fn put_manifest(registry: &str, repo: &str, tag: &str, manifest: &Value, dir: &Path) {
    let file = dir.join("manifest.json");
    fs::write(&file, serde_json::to_vec(manifest).unwrap()).unwrap();
    run(Command::new("curl")
        .args(["-sS", "-f", "-X", "PUT", "-H"])
        .arg(format!(
            "Content-Type: {}",
            manifest["mediaType"].as_str().unwrap()
        ))
        .arg("--data-binary")
        .arg(format!("@{}", file.display()))
        .arg(format!("http://{registry}/v2/{repo}/manifests/{tag}")));
}

/// The layers of a verify's JSON that did not match.
fn failed_layers(result: &Value) -> Vec<Value> {
    result["layers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["matches"] != true)
        .cloned()
        .collect()
}

#[test]
fn an_image_built_elsewhere_verifies_from_an_empty_store() {
    let reg = TestRegistry::start();
    let target = format!("{}/team/env", reg.addr());
    let a = World::new();
    let built = a.build_ok(&requirements("shared-a.txt"), &["--push", &target]);
    let reference = format!("{target}:{}", built["tag"].as_str().unwrap());
    let layers = built["layers"].as_array().unwrap().len();

    // Another machine: an empty store, the wheels in a directory, the base as a layout.
    let b = a.with_home("b");
    let (out, result) = verify_json(&b, &reference, &sources(&b));
    assert!(out.status.success(), "{}\n{result}", stderr(&out));
    assert_eq!(result["verified"], true, "{result}");
    assert_eq!(result["manifest"]["registry"], built["digest"]);
    assert_eq!(result["manifest"]["rebuilt"], built["digest"]);
    assert_eq!(result["layers"].as_array().unwrap().len(), layers);
    assert!(failed_layers(&result).is_empty(), "{result}");
    let kinds: Vec<&str> = result["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds.last(), Some(&"env"));
    assert_eq!(kinds.iter().filter(|k| **k == "packages").count(), 6);

    // The rebuild happened beside the user's store, not in it, and left nothing behind.
    let images = b.strata(&["images", "--json"]);
    assert!(images.status.success(), "{}", stderr(&images));
    let images: Value = serde_json::from_slice(&images.stdout).unwrap();
    assert_eq!(images["images"], serde_json::json!([]));
    let blobs = fs::read_dir(b.oci().join("blobs/sha256"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(blobs, 0, "verify wrote into the user's store");
    let leftovers: Vec<_> = fs::read_dir(b.home.join("tmp"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("scratch-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    // The store that built it verifies by digest with nothing but its own store: the base
    // from the store, the wheels from its wheel cache. Its layer index is not used: here it
    // lies (nsa's wheel → datapkg's layer, as a damaged database might), and the verify still
    // rebuilds nsa's layer. Text output says so.
    let other = a.build_ok(&requirements("shared-b.txt"), &[]);
    let manifest = store_json(&a, built["digest"].as_str().unwrap());
    let donor = store_json(&a, other["digest"].as_str().unwrap());
    let nsa = &manifest["layers"][layer_of(&manifest, "nsa==1.0.0")];
    let datapkg = &donor["layers"][layer_of(&donor, "datapkg==1.0.0")];
    run(Command::new("python3")
        .args([
            "-c",
            "import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); \
             n=c.execute('UPDATE layer_index SET digest=?, size=? WHERE digest=?', sys.argv[2:5]).rowcount; \
             c.commit(); assert n==1, n",
        ])
        .arg(a.home.join("strata.db"))
        .arg(datapkg["digest"].as_str().unwrap())
        .arg(datapkg["size"].to_string())
        .arg(nsa["digest"].as_str().unwrap()));
    let by_digest = format!("{target}@{}", built["digest"].as_str().unwrap());
    let out = verify(&a, &by_digest, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.starts_with(&format!("verified {by_digest}: {layers} layers match")),
        "{text}"
    );

    // Without the wheel cache, the wheels are where the lock this store recorded says.
    fs::remove_dir_all(a.home.join("wheels")).unwrap();
    let out = verify(&a, &by_digest, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn a_layer_swapped_in_the_registry_fails_naming_its_package() {
    let reg = TestRegistry::start();
    let target = format!("{}/team/env", reg.addr());
    let a = World::new();
    let built = a.build_ok(&requirements("shared-a.txt"), &["--push", &target]);
    let other = a.build_ok(&requirements("shared-b.txt"), &["--push", &target]);
    let tag = built["tag"].as_str().unwrap();

    // Under the same tag, the image with nsa's layer replaced by datapkg's (a blob the
    // repository has), its config's diff_id to match and its annotation left as nsa's: an
    // image that looks whole to any client.
    let mut manifest = store_json(&a, built["digest"].as_str().unwrap());
    let mut config = store_json(&a, manifest["config"]["digest"].as_str().unwrap());
    let donor = store_json(&a, other["digest"].as_str().unwrap());
    let donor_config = store_json(&a, donor["config"]["digest"].as_str().unwrap());
    let i = layer_of(&manifest, "nsa==1.0.0");
    let j = layer_of(&donor, "datapkg==1.0.0");
    let original = manifest["layers"][i]["digest"].clone();
    let swapped = donor["layers"][j]["digest"].clone();
    for key in ["digest", "size", "mediaType"] {
        manifest["layers"][i][key] = donor["layers"][j][key].clone();
    }
    config["rootfs"]["diff_ids"][i] = donor_config["rootfs"]["diff_ids"][j].clone();
    let config_bytes = serde_json::to_vec(&config).unwrap();
    let config_digest = upload_blob(&reg.addr(), "team/env", &config_bytes, a.dir.path());
    manifest["config"]["digest"] = Value::String(config_digest);
    manifest["config"]["size"] = Value::from(config_bytes.len());
    put_manifest(&reg.addr(), "team/env", tag, &manifest, a.dir.path());

    let b = a.with_home("b");
    let reference = format!("{target}:{tag}");
    let (out, result) = verify_json(&b, &reference, &sources(&b));
    assert_eq!(out.status.code(), Some(6), "{}\n{result}", stderr(&out));
    assert_eq!(result["verified"], false);
    let failed = failed_layers(&result);
    assert_eq!(failed.len(), 1, "only the swapped layer differs: {result}");
    assert_eq!(failed[0]["index"], i);
    assert_eq!(failed[0]["packages"], serde_json::json!(["nsa==1.0.0"]));
    assert_eq!(failed[0]["registry"], swapped);
    assert_eq!(failed[0]["rebuilt"], original);
    assert_eq!(failed[0]["bytes"], "ok", "the blob itself is sound");
    assert_eq!(result["manifest"]["rebuilt"], built["digest"]);

    let out = verify(
        &b,
        &reference,
        &sources(&b).iter().map(String::as_str).collect::<Vec<_>>(),
    );
    assert_eq!(out.status.code(), Some(6));
    let text = String::from_utf8_lossy(&out.stdout);
    let line = format!(
        "layer {i} (nsa==1.0.0): registry {}, rebuilt {}",
        swapped.as_str().unwrap(),
        original.as_str().unwrap()
    );
    assert!(text.contains(&line), "{text}");
    assert!(
        stderr(&out).contains(&format!("{reference} does not verify: 1 of")),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_blob_changed_in_the_registry_storage_fails_naming_the_layer() {
    let reg = TestRegistry::start();
    let target = format!("{}/team/env", reg.addr());
    let a = World::new();
    let built = a.build_ok(&requirements("shared-a.txt"), &["--push", &target]);
    let manifest = store_json(&a, built["digest"].as_str().unwrap());
    let i = layer_of(&manifest, "nsa==1.0.0");
    let digest = manifest["layers"][i]["digest"]
        .as_str()
        .unwrap()
        .to_string();

    // One byte changed where the registry keeps the blob; its size stays.
    let path = registry_blob(&reg, &digest);
    let mut bytes = fs::read(&path).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    fs::write(&path, &bytes).unwrap();
    let served = format!("sha256:{}", sha256_hex(&bytes));

    let b = a.with_home("b");
    let reference = format!("{target}:{}", built["tag"].as_str().unwrap());
    let (out, result) = verify_json(&b, &reference, &sources(&b));
    assert_eq!(out.status.code(), Some(6), "{}\n{result}", stderr(&out));
    let failed = failed_layers(&result);
    assert_eq!(failed.len(), 1, "{result}");
    assert_eq!(failed[0]["index"], i);
    assert_eq!(failed[0]["packages"], serde_json::json!(["nsa==1.0.0"]));
    assert_eq!(
        failed[0]["bytes"],
        serde_json::json!({"hash-mismatch": {"actual": served}})
    );
    // What the lock builds is what the manifest names: only the served bytes are wrong.
    assert_eq!(failed[0]["rebuilt"], failed[0]["registry"]);
    assert_eq!(result["manifest"]["rebuilt"], built["digest"]);

    let out = verify(
        &b,
        &reference,
        &sources(&b).iter().map(String::as_str).collect::<Vec<_>>(),
    );
    assert_eq!(out.status.code(), Some(6));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!(
            "layer {i} (nsa==1.0.0): the registry's bytes hash to {served}, not to its digest {digest}"
        )),
        "{text}"
    );

    // The config changed too: it is named, and its diff_ids, which say nothing now, do not
    // make every layer fail.
    let config_path = registry_blob(&reg, manifest["config"]["digest"].as_str().unwrap());
    let mut bytes = fs::read(&config_path).unwrap();
    bytes[0] = b' ';
    fs::write(&config_path, &bytes).unwrap();
    let (out, result) = verify_json(&b, &reference, &sources(&b));
    assert_eq!(out.status.code(), Some(6), "{}\n{result}", stderr(&out));
    assert_eq!(
        result["config_bytes"],
        serde_json::json!({"hash-mismatch": {"actual": format!("sha256:{}", sha256_hex(&bytes))}})
    );
    assert_eq!(failed_layers(&result).len(), 1, "{result}");
    let out = verify(
        &b,
        &reference,
        &sources(&b).iter().map(String::as_str).collect::<Vec<_>>(),
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("  config: the registry's bytes hash to sha256:"),
        "{text}"
    );

    // The env layer changed too: its lock cannot be trusted, nothing is rebuilt, and both
    // layers are named.
    let layers = manifest["layers"].as_array().unwrap();
    let env = layers.len() - 1;
    let env_path = registry_blob(&reg, layers[env]["digest"].as_str().unwrap());
    let mut bytes = fs::read(&env_path).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    fs::write(&env_path, &bytes).unwrap();
    let (out, result) = verify_json(&b, &reference, &sources(&b));
    assert_eq!(out.status.code(), Some(6), "{}\n{result}", stderr(&out));
    assert!(result["not_rebuilt"].is_string(), "{result}");
    let damaged: Vec<&Value> = result["layers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["bytes"] != "ok")
        .collect();
    assert_eq!(damaged.len(), 2, "{result}");
    assert_eq!(damaged[0]["index"], i);
    assert_eq!(damaged[1]["index"], env);
    assert_eq!(damaged[1]["kind"], "env");
    // The summary counts what is known: the damaged layers, not every layer never compared.
    let out = verify(
        &b,
        &reference,
        &sources(&b).iter().map(String::as_str).collect::<Vec<_>>(),
    );
    let err = stderr(&out);
    assert!(
        err.contains(&format!(
            "does not verify: 2 of {} layers are damaged, the env layer among them",
            layers.len()
        )),
        "{err}"
    );
}

#[test]
fn a_zstd_image_with_merged_layers_verifies() {
    let reg = TestRegistry::start();
    let target = format!("{}/team/env", reg.addr());
    let a = World::new();
    // One base layer, the env layer and 3 package layers for 6 wheels: the smallest share one.
    let built = a.build_ok(
        &requirements("shared-a.txt"),
        &[
            "--push",
            &target,
            "--compression",
            "zstd",
            "--max-layers",
            "5",
        ],
    );
    let layers = built["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 5, "{built}");
    assert!(layers
        .iter()
        .any(|l| l["packages"].as_array().unwrap().len() > 1));

    let b = a.with_home("b");
    let reference = format!("{target}:{}", built["tag"].as_str().unwrap());
    let (out, result) = verify_json(&b, &reference, &sources(&b));
    assert!(out.status.success(), "{}\n{result}", stderr(&out));
    assert_eq!(result["verified"], true);
    assert_eq!(result["manifest"]["rebuilt"], built["digest"]);
}

#[test]
fn an_image_strata_did_not_build_and_a_missing_wheel_are_clear_errors() {
    let reg = TestRegistry::start();
    let a = World::new();
    let b = a.with_home("b");
    // The store exists before, so that "as it was" has something to compare.
    assert!(b.strata(&["images"]).status.success());
    let before = b.snapshot();

    // The base image itself, copied into the registry by skopeo.
    let base = format!("{}/team/base:3.11", reg.addr());
    run(Command::new("skopeo")
        .args(["copy", "--dest-tls-verify=false"])
        .arg(format!("oci:{}:3.11", base_layout().display()))
        .arg(format!("docker://{base}")));
    let out = verify(&b, &base, &[]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("is not a strata environment image: no annotation dev.strata.lock-digest"),
        "{err}"
    );

    // A strata image whose wheels this machine does not have (through a proxy that lists
    // the requests).
    let proxy = AnswerProxy::forwarding(&reg.addr());
    let target = format!("{}/team/env", proxy.addr());
    let built = a.build_ok(&requirements("shared-a.txt"), &["--push", &target]);
    let reference = format!("{target}:{}", built["tag"].as_str().unwrap());
    let empty = b.dir.path().join("no-wheels");
    fs::create_dir_all(&empty).unwrap();
    let empty = empty.display().to_string();
    proxy.take_requests();
    let out = verify(&b, &reference, &["--base", &base_ref(), "-f", &empty]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let manifest = store_json(&a, built["digest"].as_str().unwrap());
    let env_layer = manifest["layers"].as_array().unwrap().last().unwrap()["digest"].clone();
    let blobs: Vec<String> = proxy
        .take_requests()
        .into_iter()
        .filter(|(method, path)| method == "GET" && path.contains("/blobs/"))
        .map(|(_, path)| path)
        .collect();
    assert_eq!(
        blobs,
        vec![format!(
            "/v2/team/env/blobs/{}",
            env_layer.as_str().unwrap()
        )],
        "only the env layer is read before a missing wheel fails the verify"
    );
    let err = stderr(&out);
    assert!(
        err.contains("6 wheel(s) of the lock found in none of"),
        "{err}"
    );
    assert!(err.contains("nsa-1.0.0-py3-none-any.whl (sha256:"), "{err}");
    assert!(err.contains("--find-links DIR"), "{err}");

    // Without --base, a store that lacks the base says so.
    let wheels = b.wheels.display().to_string();
    let out = verify(&b, &reference, &["-f", &wheels]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("is not in the local store: give it with --base"),
        "{}",
        stderr(&out)
    );

    // A --base that is another image than the one the image names is refused.
    let wrong = format!(
        "oci:{}:{}",
        a.oci().display(),
        built["tag"].as_str().unwrap()
    );
    let out = verify(&b, &reference, &["-f", &wheels, "--base", &wrong]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!(
            "--base {wrong} is {}, but",
            built["digest"].as_str().unwrap()
        )),
        "{}",
        stderr(&out)
    );

    assert_eq!(
        b.snapshot(),
        before,
        "a failed verify leaves the store as it was"
    );
}

#[test]
fn a_config_claiming_more_than_any_config_is_refused_unread() {
    let reg = TestRegistry::start();
    let target = format!("{}/team/env", reg.addr());
    let a = World::new();
    let built = a.build_ok(&requirements("shared-a.txt"), &["--push", &target]);
    let tag = built["tag"].as_str().unwrap();
    // The same config, announced as 5 MiB: a registry could then send that much for it.
    let mut manifest = store_json(&a, built["digest"].as_str().unwrap());
    manifest["config"]["size"] = Value::from(5u64 << 20);
    put_manifest(&reg.addr(), "team/env", tag, &manifest, a.dir.path());

    let b = a.with_home("b");
    let reference = format!("{target}:{tag}");
    let args = sources(&b);
    let out = verify(
        &b,
        &reference,
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    let err = stderr(&out);
    assert!(!out.status.success(), "{err}");
    let config = manifest["config"]["digest"].as_str().unwrap();
    assert!(
        err.contains(config) && err.contains("claims 5242880 bytes"),
        "{err}"
    );
}
