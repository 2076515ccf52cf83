//! Pushing to a real registry (`docker-registry` on 127.0.0.1): the image is read back by
//! skopeo, unpacked by umoci and run by runc; shared layers are uploaded once; a push cut in
//! the middle resumes without sending again what landed.

#[path = "../crates/strata-registry/tests/support/answer_proxy.rs"]
mod answer_proxy;
#[path = "../crates/strata-registry/tests/support/auth.rs"]
mod auth;
mod common;
#[path = "../crates/strata-registry/tests/support/registry.rs"]
mod registry;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::Path;
use std::process::{Command, Output};

use answer_proxy::AnswerProxy;
use common::*;
use registry::{FaultProxy, TestRegistry, TestRegistryOptions};
use serde_json::Value;

/// Digests of the blobs a registry holds, read from its storage directory.
fn registry_blobs(storage: &Path) -> BTreeSet<String> {
    let root = storage.join("docker/registry/v2/blobs/sha256");
    let mut out = BTreeSet::new();
    for prefix in fs::read_dir(&root).into_iter().flatten().flatten() {
        for blob in fs::read_dir(prefix.path()).into_iter().flatten().flatten() {
            if blob.path().join("data").is_file() {
                out.insert(format!("sha256:{}", blob.file_name().to_string_lossy()));
            }
        }
    }
    out
}

/// Digest → size of every blob (config and layers) of a pushed image, per skopeo.
fn image_blobs(reference: &str) -> BTreeMap<String, u64> {
    let raw = run(Command::new("skopeo")
        .args(["inspect", "--raw", "--tls-verify=false"])
        .arg(format!("docker://{reference}")));
    let manifest: Value = serde_json::from_str(&raw).unwrap();
    let mut blobs = BTreeMap::new();
    for d in std::iter::once(&manifest["config"]).chain(manifest["layers"].as_array().unwrap()) {
        blobs.insert(
            d["digest"].as_str().unwrap().to_string(),
            d["size"].as_u64().unwrap(),
        );
    }
    blobs
}

#[test]
#[cfg_attr(skip_root, ignore = "needs root; STRATA_SKIP_ROOT=1")]
fn pushed_image_is_pulled_unpacked_and_run_without_strata() {
    let reg = TestRegistry::start();
    let world = World::new();
    let target = format!("{}/team/env", reg.addr());
    let built = world.build_ok(&requirements("basic.txt"), &["--push", &target]);
    let image = built["image"].as_str().unwrap();
    let digest = built["digest"].as_str().unwrap();
    assert_eq!(image, format!("{target}@{digest}"));
    assert!(built["bytes_uploaded"].as_u64().unwrap() > 0);

    let inspect = run(Command::new("skopeo")
        .args(["inspect", "--tls-verify=false"])
        .arg(format!("docker://{image}")));
    let inspect: Value = serde_json::from_str(&inspect).unwrap();
    assert_eq!(inspect["Digest"], digest);
    let by_tag = run(Command::new("skopeo")
        .args(["inspect", "--tls-verify=false"])
        .arg(format!(
            "docker://{target}:{}",
            built["tag"].as_str().unwrap()
        )));
    let by_tag: Value = serde_json::from_str(&by_tag).unwrap();
    assert_eq!(by_tag["Digest"], digest, "the tag points at the digest");

    let copy = world.dir.path().join("copy");
    run(Command::new("skopeo")
        .args(["copy", "--src-tls-verify=false"])
        .arg(format!("docker://{image}"))
        .arg(format!("oci:{}:pulled", copy.display())));
    let bundle = world.dir.path().join("bundle");
    umoci_unpack(&copy, "pulled", &bundle);
    let script = "import alpha, beta, cext, datapkg, gamma, nsp.a, nsp.b, tools, zeta_util\n\
                  import importlib.metadata as m\n\
                  assert cext.answer() == 42\n\
                  print(m.version('alpha'), m.version('beta'))";
    let (code, stdout, stderr) = runc_run(&bundle, &["python", "-c", script]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(stdout.trim(), "1.0.0 2.0.0");
    let (code, stdout, stderr) = runc_run(&bundle, &["tools-hello"]);
    assert_eq!((code, stdout.trim()), (0, "hello from tools"), "{stderr}");

    // Pushing the same image again sends nothing.
    let again = world.build_ok(&requirements("basic.txt"), &["--push", &target]);
    assert_eq!(again["cache"], "hit");
    assert_eq!(again["bytes_uploaded"], 0);
}

#[test]
fn second_environment_uploads_only_the_layers_it_does_not_share() {
    let reg = TestRegistry::start();
    let world = World::new();
    let target = format!("{}/team/env", reg.addr());
    let a = world.build_ok(&requirements("shared-a.txt"), &["--push", &target]);
    let storage_after_a = reg.storage_bytes();
    let b = world.build_ok(&requirements("shared-b.txt"), &["--push", &target]);
    let storage_after_b = reg.storage_bytes();

    let blobs_a = image_blobs(a["image"].as_str().unwrap());
    let blobs_b = image_blobs(b["image"].as_str().unwrap());
    let shared: Vec<&String> = blobs_b
        .keys()
        .filter(|d| blobs_a.contains_key(*d))
        .collect();
    // The base layer and alpha, beta, gamma, cext, tools are shared.
    assert!(shared.len() >= 6, "shared blobs: {shared:?}");
    let new_bytes: u64 = blobs_b
        .iter()
        .filter(|(d, _)| !blobs_a.contains_key(*d))
        .map(|(_, size)| size)
        .sum();
    assert_eq!(b["bytes_uploaded"].as_u64().unwrap(), new_bytes);
    let total_b: u64 = blobs_b.values().sum();
    assert!(
        new_bytes * 10 < total_b,
        "{new_bytes} of {total_b} bytes were new"
    );
    // The registry grew by the new blobs plus the manifest and its link files, no more.
    let growth = storage_after_b - storage_after_a;
    assert!(growth >= new_bytes, "{growth} < {new_bytes}");
    assert!(
        growth < new_bytes + 16 * 1024,
        "registry grew {growth} for {new_bytes} new bytes"
    );
}

#[test]
fn push_cut_mid_way_resumes_without_resending_what_landed() {
    let reg = TestRegistry::start();
    let world = World::new();
    // Any connection that carries more than 2 MB is cut: the small layers land, the 20 MB
    // base layer never does (each retry is cut too), whatever order the uploads run in.
    let proxy = FaultProxy::cutting_each_connection(&reg.addr(), 2_000_000);
    let target = format!("{}/team/env", proxy.addr());
    let out = world.build(&requirements("basic.txt"), &["--push", &target]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(4), "{err}");
    assert!(proxy.is_tripped());
    assert!(
        err.contains(&proxy.addr()),
        "error names the registry: {err}"
    );

    let landed = registry_blobs(&reg.storage_root());
    assert!(
        !landed.is_empty(),
        "some blobs should have landed before the cut"
    );
    proxy.reset(None);
    let retry = world.build_ok(&requirements("basic.txt"), &["--push", &target]);
    assert_eq!(retry["cache"], "hit");
    let blobs = image_blobs(retry["image"].as_str().unwrap());
    assert!(landed.iter().all(|d| blobs.contains_key(d)));
    let missing: u64 = blobs
        .iter()
        .filter(|(d, _)| !landed.contains(*d))
        .map(|(_, size)| size)
        .sum();
    assert!(missing > 0, "the cut must have stopped something");
    assert_eq!(retry["bytes_uploaded"].as_u64().unwrap(), missing);
}

#[test]
fn base_image_from_a_registry_gives_the_same_image_as_from_a_layout() {
    let reg = TestRegistry::start();
    let world = World::new();
    let base = format!("{}/library/python:3.11", reg.addr());
    run(Command::new("skopeo")
        .args(["copy", "--dest-tls-verify=false"])
        .arg(format!("oci:{}:3.11", base_layout().display()))
        .arg(format!("docker://{base}")));
    let req = requirements("shared-a.txt");
    let build_on_registry_base = || world.build_command(&req, &base, &[]).output().unwrap();
    let out = build_on_registry_base();
    assert!(out.status.success(), "{}", stderr(&out));
    let from_registry: Value = serde_json::from_slice(&out.stdout).unwrap();
    let other = world.with_home("layout");
    let from_layout = other.build_ok(&req, &[]);
    assert_eq!(from_registry["digest"], from_layout["digest"]);
    // The base is pinned by digest: the second build on the registry base is a hit.
    let again: Value = serde_json::from_slice(&build_on_registry_base().stdout).unwrap();
    assert_eq!(again["cache"], "hit");
}

#[test]
fn a_hit_with_push_costs_one_manifest_head() {
    let reg = TestRegistry::start();
    let world = World::new();
    // Every request strata sends goes through the proxy, one per connection, and is listed.
    let proxy = AnswerProxy::forwarding(&reg.addr());
    let target = format!("{}/team/env", proxy.addr());
    let first = world.build_ok(&requirements("shared-a.txt"), &["--push", &target]);
    assert_eq!(first["cache"], "miss");
    // The proxy sees a push's requests one by one (so a hit's second request would show).
    let push = proxy.take_requests();
    let manifest_put = format!(
        "/v2/team/env/manifests/{}",
        first["digest"].as_str().unwrap()
    );
    assert!(
        push.len() > 2 && push.contains(&("PUT".into(), manifest_put.clone())),
        "the proxy missed the push's requests: {push:?}"
    );

    let again = world.build_ok(&requirements("shared-a.txt"), &["--push", &target]);
    assert_eq!(again["cache"], "hit");
    assert_eq!(again["bytes_uploaded"], 0);
    let tag = again["tag"].as_str().unwrap();
    assert_eq!(
        proxy.take_requests(),
        vec![("HEAD".to_string(), format!("/v2/team/env/manifests/{tag}"))],
        "a hit already pushed costs exactly one request, a HEAD of its tag's manifest"
    );
}

/// `strata build --push` with the auth files taken from `auth_dir` only (none of the user's).
fn build_push_with_auth(world: &World, target: &str, auth_dir: &Path, auth_file: &Path) -> Output {
    world
        .build_command(
            &requirements("shared-a.txt"),
            &base_ref(),
            &["--push", target],
        )
        .env("REGISTRY_AUTH_FILE", auth_file)
        .env("DOCKER_CONFIG", auth_dir)
        .output()
        .expect("run strata")
}

#[test]
fn a_registry_that_wants_a_login_gets_the_credentials_of_the_auth_file() {
    let auth_dir = tempfile::tempdir().unwrap();
    let htpasswd = auth::htpasswd_auth(auth_dir.path(), "ana", "s3cret-pw");
    let reg = TestRegistry::start_with_config(TestRegistryOptions::default(), &htpasswd);
    let world = World::new();
    let target = format!("{}/team/env", reg.addr());

    // No login: refused before anything is built, naming the registry and how to log in.
    let missing = auth_dir.path().join("no-such-auth.json");
    let out = build_push_with_auth(&world, &target, auth_dir.path(), &missing);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(4), "{err}");
    assert!(
        err.contains(&format!("registry {} requires credentials", reg.addr())),
        "{err}"
    );
    assert!(
        err.contains("skopeo login"),
        "the hint says how to log in: {err}"
    );
    let images: Value =
        serde_json::from_slice(&world.strata(&["images", "--json"]).stdout).unwrap();
    assert_eq!(images["images"], serde_json::json!([]), "nothing built");

    // A wrong password: refused, naming the user and the file; the password never shown.
    let wrong = auth::write_auth_file(auth_dir.path(), "wrong.json", &reg.addr(), "ana", "nope-pw");
    let out = build_push_with_auth(&world, &target, auth_dir.path(), &wrong);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(4), "{err}");
    assert!(err.contains("refused the credentials of user ana"), "{err}");
    assert!(err.contains("wrong.json"), "{err}");
    assert!(!err.contains("nope-pw"), "the password is printed: {err}");

    // Logged in: pushed, and skopeo (with the same file) reads the image back.
    let good = auth::write_auth_file(
        auth_dir.path(),
        "good.json",
        &reg.addr(),
        "ana",
        "s3cret-pw",
    );
    let out = build_push_with_auth(&world, &target, auth_dir.path(), &good);
    assert!(out.status.success(), "{}", stderr(&out));
    let built: Value = serde_json::from_slice(&out.stdout).unwrap();
    let inspected = run(Command::new("skopeo")
        .args(["inspect", "--tls-verify=false", "--authfile"])
        .arg(&good)
        .arg(format!("docker://{}", built["image"].as_str().unwrap())));
    let inspected: Value = serde_json::from_str(&inspected).unwrap();
    assert_eq!(inspected["Digest"], built["digest"]);
}
