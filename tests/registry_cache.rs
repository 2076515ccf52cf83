//! The registry as a shared cache (`--push`, `--cache-from`, `[cache] registry`), against a
//! real `docker-registry` on 127.0.0.1 behind a proxy that lists every request strata sends:
//! an empty store with no wheel source gets the spec's image from the registry; another spec
//! of the same lock is only tagged there; a cache registry that is down is a warning.

#[path = "../crates/strata-registry/tests/support/answer_proxy.rs"]
mod answer_proxy;
mod common;
#[path = "../crates/strata-registry/tests/support/registry.rs"]
mod registry;

use std::fs;
use std::path::Path;

use answer_proxy::{error_body, Answer, AnswerProxy, Refusal};
use common::*;
use registry::TestRegistry;
use serde_json::Value;

/// Makes `world`'s wheel directory empty: a build that needs a wheel then fails. The path
/// stays, so a spec that names it keeps its digest.
fn empty_wheels(world: &World) {
    fs::remove_dir_all(&world.wheels).unwrap();
    fs::create_dir_all(&world.wheels).unwrap();
}

/// The requests that write to the registry (anything but GET and HEAD).
fn writes(requests: &[(String, String)]) -> Vec<(String, String)> {
    requests
        .iter()
        .filter(|(method, _)| method != "GET" && method != "HEAD")
        .cloned()
        .collect()
}

fn manifest_path(tag_or_digest: &Value) -> String {
    format!("/v2/team/env/manifests/{}", tag_or_digest.as_str().unwrap())
}

fn local_images(world: &World) -> Value {
    let out = world.strata(&["images", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    serde_json::from_slice::<Value>(&out.stdout).unwrap()["images"].clone()
}

#[test]
fn an_empty_store_without_wheels_gets_the_image_from_the_registry() {
    let reg = TestRegistry::start();
    let proxy = AnswerProxy::forwarding(&reg.addr());
    let target = format!("{}/team/env", proxy.addr());
    let req = requirements("shared-a.txt");
    let a = World::new();
    let built = a.build_ok(&req, &["--push", &target]);
    assert_eq!(built["cache"], "miss");
    let push = proxy.take_requests();
    assert!(
        push.iter()
            .any(|(m, p)| m == "PUT" && p.contains("/manifests/lock-")),
        "a push sets the lock's tag too: {push:?}"
    );

    // Store B is empty and has no wheel to read (--no-index, an empty --find-links).
    empty_wheels(&a);
    let b = a.with_home("b");
    let hit = b.build_ok(&req, &["--push", &target]);
    assert_eq!(hit["cache"], "registry-hit", "{hit}");
    assert_eq!(hit["digest"], built["digest"]);
    assert_eq!(
        hit["image"],
        format!("{target}@{}", built["digest"].as_str().unwrap())
    );
    assert_eq!(hit["bytes_uploaded"], 0);
    assert_eq!(
        proxy.take_requests(),
        vec![("GET".to_string(), manifest_path(&built["tag"]))],
        "a registry hit costs one manifest GET and uploads nothing"
    );
    assert!(hit["local"].is_null(), "not pulled: {hit}");
    assert_eq!(
        local_images(&b),
        serde_json::json!([]),
        "the store is left alone"
    );

    // `[cache] registry` in strata.toml, no push, and --pull: the image lands in the store,
    // and the next build of the spec is a local hit.
    fs::write(
        b.dir.path().join("strata.toml"),
        format!("[cache]\nregistry = \"{target}\"\n"),
    )
    .unwrap();
    let pulled = b.build_ok(&req, &["--pull"]);
    assert_eq!(pulled["cache"], "registry-hit", "{pulled}");
    assert_eq!(pulled["digest"], built["digest"]);
    assert!(pulled["local"].is_string(), "{pulled}");
    assert_eq!(
        writes(&proxy.take_requests()),
        Vec::<(String, String)>::new()
    );
    let again = b.build_ok(&req, &[]);
    assert_eq!(again["cache"], "hit", "{again}");
    assert_eq!(again["digest"], built["digest"]);
    assert!(
        proxy.take_requests().is_empty(),
        "a local hit asks no registry"
    );

    // Found in a --cache-from repository, pushed to another: the push target is asked first,
    // the image is pulled from the cache and pushed whole to the target.
    let e = a.with_home("e");
    let other = format!("{}/team/other", proxy.addr());
    let moved = e.build_ok(&req, &["--push", &other, "--cache-from", &target]);
    assert_eq!(moved["cache"], "registry-hit", "{moved}");
    assert_eq!(
        moved["image"],
        format!("{other}@{}", built["digest"].as_str().unwrap())
    );
    assert!(moved["local"].is_string(), "pulled to be pushed: {moved}");
    let requests = proxy.take_requests();
    let tag = built["tag"].as_str().unwrap();
    assert_eq!(
        requests[..2],
        [
            ("GET".to_string(), format!("/v2/team/other/manifests/{tag}")),
            ("GET".to_string(), manifest_path(&built["tag"])),
        ],
        "the push target first, then the cache"
    );
    assert!(
        writes(&requests)
            .iter()
            .all(|(_, path)| path.starts_with("/v2/team/other/")),
        "nothing is written to the cache repository: {requests:?}"
    );
}

#[test]
fn another_spec_of_the_same_lock_is_only_tagged_in_the_registry() {
    let reg = TestRegistry::start();
    let proxy = AnswerProxy::forwarding(&reg.addr());
    let target = format!("{}/team/env", proxy.addr());
    let a = World::new();
    let built = a.build_ok(&requirements("shared-a.txt"), &["--push", &target]);
    assert_eq!(built["cache"], "miss");
    proxy.take_requests();

    // The same wheels, spelt without pins where only one version exists.
    let c = a.with_home("c");
    let loose = c.dir.path().join("loose.txt");
    fs::write(
        &loose,
        "alpha==1.0.0\nbeta\ngamma==0.3.0\ncext\ntools\nnsa\n",
    )
    .unwrap();
    let tagged = c.build_ok(&loose, &["--push", &target]);
    assert_eq!(tagged["cache"], "registry-lock-hit", "{tagged}");
    assert_ne!(tagged["spec_digest"], built["spec_digest"]);
    assert_eq!(tagged["lock_digest"], built["lock_digest"]);
    assert_eq!(
        tagged["digest"], built["digest"],
        "one image for both specs"
    );
    assert_eq!(tagged["bytes_uploaded"], 0);
    assert_eq!(
        writes(&proxy.take_requests()),
        vec![("PUT".to_string(), manifest_path(&tagged["tag"]))],
        "nothing is uploaded but the new spec's tag"
    );

    // The new spec's tag answers an empty store with no wheels.
    empty_wheels(&a);
    let d = a.with_home("d");
    let hit = d.build_ok(&loose, &["--cache-from", &target]);
    assert_eq!(hit["cache"], "registry-hit", "{hit}");
    assert_eq!(hit["digest"], built["digest"]);
}

#[test]
fn a_cache_registry_that_is_down_is_a_warning_and_the_build_goes_on() {
    let down = {
        let reg = TestRegistry::start();
        format!("{}/team/env", reg.addr())
    };
    let world = World::new();
    let out = world.build(&requirements("shared-a.txt"), &["--cache-from", &down]);
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    let built: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(built["cache"], "miss");
    assert!(
        err.contains(&format!("warning: registry cache {down} was not read")),
        "{err}"
    );
    let warnings = built["warnings"].as_array().unwrap();
    assert_eq!(
        warnings.len(),
        1,
        "asked once, not again after resolution: {built}"
    );
    assert!(warnings[0].as_str().unwrap().contains(&down), "{built}");
    assert!(Path::new(&world.oci()).join("index.json").is_file());
}

/// The lock's image in one compression never answers a build in another: the lock tags
/// differ (the layer format an image names carries its compression), and each keeps its own.
#[test]
fn a_lock_image_in_another_compression_is_not_a_registry_hit() {
    let reg = TestRegistry::start();
    let target = format!("{}/team/env", reg.addr());
    let a = World::new();
    let gzip = a.build_ok(&requirements("shared-a.txt"), &["--push", &target]);
    let b = a.with_home("b");
    let zstd = b.build_ok(
        &requirements("shared-a.txt"),
        &["--push", &target, "--compression", "zstd"],
    );
    assert_eq!(zstd["cache"], "miss", "{zstd}");
    assert_eq!(zstd["lock_digest"], gzip["lock_digest"]);
    assert_ne!(zstd["digest"], gzip["digest"]);
    // Both images keep answering their own compression from an empty store.
    let c = a.with_home("c");
    let again = c.build_ok(&requirements("shared-a.txt"), &["--cache-from", &target]);
    assert_eq!(again["cache"], "registry-hit", "{again}");
    assert_eq!(again["digest"], gzip["digest"]);
    let d = a.with_home("d");
    let loose = d.dir.path().join("loose-zstd.txt");
    fs::write(
        &loose,
        "alpha==1.0.0\nbeta\ngamma==0.3.0\ncext\ntools\nnsa\n",
    )
    .unwrap();
    let other = d.build_ok(&loose, &["--push", &target, "--compression", "zstd"]);
    assert_eq!(other["cache"], "registry-lock-hit", "{other}");
    assert_eq!(other["digest"], zstd["digest"]);
}

/// `skopeo` against the test registry (plain HTTP on loopback).
fn skopeo(args: &[&str]) -> String {
    let mut command = std::process::Command::new("skopeo");
    command.args(args);
    run(&mut command)
}

/// Where docker-registry keeps the blob `digest` (`sha256:...`) in its storage (its bytes
/// are the `data` file inside).
fn registry_blob_dir(reg: &TestRegistry, digest: &str) -> std::path::PathBuf {
    let hex = digest.trim_start_matches("sha256:");
    reg.storage_root()
        .join("docker/registry/v2/blobs/sha256")
        .join(&hex[..2])
        .join(hex)
}

/// The layer index entries in `REGISTRY/REPO`, read with skopeo: tag → manifest.
fn layer_entries(repository: &str) -> Vec<(String, Value)> {
    let listed: Value = serde_json::from_str(&skopeo(&[
        "list-tags",
        "--tls-verify=false",
        &format!("docker://{repository}"),
    ]))
    .unwrap();
    let mut entries = Vec::new();
    for tag in listed["Tags"].as_array().unwrap() {
        let tag = tag.as_str().unwrap();
        if !tag.starts_with("strata-layer-") {
            continue;
        }
        let raw = skopeo(&[
            "inspect",
            "--raw",
            "--tls-verify=false",
            &format!("docker://{repository}:{tag}"),
        ]);
        entries.push((tag.to_string(), serde_json::from_str(&raw).unwrap()));
    }
    entries
}

/// The entry's own JSON (the annotation).
fn entry_json(manifest: &Value) -> Value {
    let json = manifest["annotations"]["dev.strata.layer-entry"]
        .as_str()
        .expect("an entry annotation");
    serde_json::from_str(json).unwrap()
}

/// Blob uploads (`POST .../blobs/uploads/`, one per blob sent) in `requests`.
fn uploads(requests: &[(String, String)]) -> usize {
    requests
        .iter()
        .filter(|(m, p)| m == "POST" && p.contains("/blobs/uploads/"))
        .count()
}

/// The package layers of a build's report (base and env layers left out).
fn package_layers(built: &Value) -> Vec<Value> {
    built["layers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| !l["packages"].as_array().unwrap().is_empty())
        .cloned()
        .collect()
}

#[test]
fn a_one_package_change_on_an_empty_store_takes_the_other_layers_from_the_registry() {
    let reg = TestRegistry::start();
    let proxy = AnswerProxy::forwarding(&reg.addr());
    let target = format!("{}/team/env", proxy.addr());
    let a = World::new();
    let built = a.build_ok(&requirements("basic.txt"), &["--push", &target]);
    assert_eq!(built["cache"], "miss");
    let packages = package_layers(&built).len();
    assert_eq!(packages, 9, "{built}");
    assert_eq!(built["pushed"]["layer_entries"], packages);
    let entries = layer_entries(&format!("{}/team/env", reg.addr()));
    assert_eq!(entries.len(), packages, "one entry per package layer");
    proxy.take_requests();

    // An empty store, the same wheels: one package changed (alpha 1.0.0 -> 1.1.0).
    let b = a.with_home("b");
    let changed = b.build_ok(&requirements("changed-one.txt"), &["--push", &target]);
    assert_eq!(changed["cache"], "miss", "{changed}");
    let layers = package_layers(&changed);
    for layer in &layers {
        let is_alpha = layer["packages"][0]
            .as_str()
            .unwrap()
            .starts_with("alpha==");
        assert_eq!(layer["reused"], !is_alpha, "{layer}");
        match is_alpha {
            true => assert!(layer["registry"].is_null(), "{layer}"),
            false => assert_eq!(layer["registry"], target, "{layer}"),
        }
    }
    let requests = proxy.take_requests();
    assert_eq!(
        uploads(&requests),
        4,
        "only the new layer, the env layer, the config and the new layer's path list (its \
         layer index entry's config) are uploaded: {requests:?}"
    );
    assert_eq!(changed["pushed"]["blobs_uploaded"], 3, "{changed}");
    // Of the layer index, only the new layer's entry is written: the others are in place.
    let entry_writes = requests
        .iter()
        .filter(|(m, p)| m == "PUT" && p.contains("/manifests/strata-layer-"))
        .count();
    assert_eq!(entry_writes, 1, "{requests:?}");
    assert_eq!(changed["pushed"]["layer_entries"], packages, "{changed}");
    assert_eq!(changed["pushed"]["layer_entries_written"], 1, "{changed}");
    // Nor is a layer the build just downloaded from the target asked after again.
    for layer in layers.iter().filter(|l| l["reused"] == true) {
        let digest = layer["digest"].as_str().unwrap();
        let heads: Vec<_> = requests
            .iter()
            .filter(|(m, p)| m == "HEAD" && p.ends_with(digest))
            .collect();
        assert!(heads.is_empty(), "{digest}: {heads:?}");
    }
    // The path list is reported apart: the size of the new entry's config.
    let alpha = layers
        .iter()
        .find(|l| l["packages"][0].as_str().unwrap().starts_with("alpha=="))
        .unwrap();
    let entries = layer_entries(&format!("{}/team/env", reg.addr()));
    let (_, entry) = entries
        .iter()
        .find(|(_, m)| m["layers"][0]["digest"] == alpha["digest"])
        .expect("the new layer's entry");
    assert_eq!(
        changed["pushed"]["layer_entry_bytes_uploaded"], entry["config"]["size"],
        "{changed}"
    );

    // The image is the one a store that builds every layer itself makes.
    let c = a.with_home("c");
    let local = c.build_ok(&requirements("changed-one.txt"), &[]);
    assert_eq!(local["digest"], changed["digest"]);
    assert!(package_layers(&local).iter().all(|l| l["reused"] == false));
}

#[test]
fn concurrent_pushes_of_two_environments_leave_a_sound_layer_index() {
    let reg = TestRegistry::start();
    let repository = format!("{}/team/env", reg.addr());
    let a = World::new();
    let b = a.with_home("b");
    // Two CI runners, empty stores, overlapping environments, one repository, at once.
    let (built_a, built_b) = std::thread::scope(|s| {
        let one = s.spawn(|| a.build_ok(&requirements("shared-a.txt"), &["--push", &repository]));
        let two = s.spawn(|| b.build_ok(&requirements("shared-b.txt"), &["--push", &repository]));
        (one.join().unwrap(), two.join().unwrap())
    });
    assert_eq!(built_a["cache"], "miss");
    assert_eq!(built_b["cache"], "miss");
    // Each push wrote an entry for every package layer of its image: none was lost to the
    // other push rewriting a shared blob's link meanwhile (docker-registry then calls the
    // blob unknown for an instant).
    for built in [&built_a, &built_b] {
        assert_eq!(built["warnings"], serde_json::json!([]), "{built}");
        assert_eq!(
            built["pushed"]["layer_entries"],
            package_layers(built).len(),
            "{built}"
        );
    }

    // Every entry is well formed and names a layer one of the images has, with the same
    // descriptor; one entry per distinct wheel (5 shared + nsa + datapkg).
    let mut pushed_layers = package_layers(&built_a);
    pushed_layers.extend(package_layers(&built_b));
    let entries = layer_entries(&repository);
    assert_eq!(entries.len(), 7, "{entries:?}");
    for (tag, manifest) in &entries {
        assert_eq!(
            manifest["config"]["mediaType"],
            "application/vnd.dev.strata.layer-entry.v1+json"
        );
        let entry = entry_json(manifest);
        let layer = &manifest["layers"][0];
        assert_eq!(layer["digest"], entry["layer"]["digest"], "{tag}");
        assert_eq!(layer["size"], entry["layer"]["size"], "{tag}");
        assert!(
            pushed_layers
                .iter()
                .any(|l| l["digest"] == layer["digest"] && l["size"] == layer["size"]),
            "{tag} names a layer no image has: {manifest}"
        );
    }

    // A third runner combines wheels of both: every package layer comes from the index.
    let c = a.with_home("c");
    let mix = c.dir.path().join("mix.txt");
    fs::write(
        &mix,
        "alpha==1.0.0\nbeta==2.0.0\nnsa==1.0.0\ndatapkg==1.0.0\n",
    )
    .unwrap();
    let mixed = c.build_ok(&mix, &["--push", &repository]);
    let layers = package_layers(&mixed);
    assert_eq!(layers.len(), 4);
    assert!(
        layers.iter().all(|l| l["registry"] == repository),
        "{mixed}"
    );
    assert_eq!(mixed["pushed"]["blobs_uploaded"], 2, "env layer and config");
}

#[test]
fn a_layer_index_the_registry_refuses_is_a_warning_and_the_image_is_pushed() {
    let reg = TestRegistry::start();
    let proxy = AnswerProxy::start(&reg.addr(), |request| {
        let entry = request.target.contains("/manifests/strata-layer-");
        if request.method == "PUT" && entry {
            return Answer::Refuse(Refusal {
                status: 403,
                body: error_body("DENIED", "requested access to the resource is denied", ""),
            });
        }
        Answer::Forward
    });
    let target = format!("{}/team/env", proxy.addr());
    let a = World::new();
    let out = a.build(&requirements("shared-a.txt"), &["--push", &target]);
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    let built: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(built["pushed"]["layer_entries"], 0, "{built}");
    let warnings = built["warnings"].as_array().unwrap();
    assert_eq!(warnings.len(), 1, "{built}");
    let warning = warnings[0].as_str().unwrap();
    assert!(warning.contains("layer index entries"), "{warning}");
    assert!(warning.contains("DENIED"), "{warning}");
    assert!(err.contains(&format!("warning: {warning}")), "{err}");
    assert!(proxy.refused() > 0);
    // `strata push` says so the same way, in its JSON and on stderr.
    let other = format!("{}/team/other", proxy.addr());
    let tag = built["tag"].as_str().unwrap();
    let out = a.strata(&["push", tag, &other, "--json"]);
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    let pushed: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(pushed["layer_entries"], 0, "{pushed}");
    let warning = pushed["warnings"][0].as_str().unwrap();
    assert!(warning.contains("layer index entries"), "{pushed}");
    assert!(err.contains(&format!("warning: {warning}")), "{err}");
    // The image itself landed: an empty store gets it from the registry.
    let b = a.with_home("b");
    let hit = b.build_ok(&requirements("shared-a.txt"), &["--cache-from", &target]);
    assert_eq!(hit["cache"], "registry-hit");
    assert_eq!(hit["digest"], built["digest"]);
}

#[test]
fn an_entry_that_names_another_key_or_a_missing_blob_is_a_miss() {
    let reg = TestRegistry::start();
    let repository = format!("{}/team/env", reg.addr());
    let a = World::new();
    let built = a.build_ok(&requirements("shared-a.txt"), &["--push", &repository]);
    let entries = layer_entries(&repository);
    let by_package = |name: &str| {
        let layer = package_layers(&built)
            .into_iter()
            .find(|l| l["packages"][0].as_str().unwrap().starts_with(name))
            .unwrap();
        entries
            .iter()
            .find(|(_, m)| m["layers"][0]["digest"] == layer["digest"])
            .map(|(tag, m)| (tag.clone(), m.clone()))
            .unwrap()
    };
    // alpha's tag now holds beta's entry (another key): read as a miss, alpha is built.
    let (alpha_tag, _) = by_package("alpha==");
    let (beta_tag, _) = by_package("beta==");
    skopeo(&[
        "copy",
        "--src-tls-verify=false",
        "--dest-tls-verify=false",
        &format!("docker://{repository}:{beta_tag}"),
        &format!("docker://{repository}:{alpha_tag}"),
    ]);
    // gamma's entry loses its blob (deleted in the registry's storage).
    let (_, gamma) = by_package("gamma==");
    let gamma_digest = gamma["layers"][0]["digest"].as_str().unwrap().to_string();
    fs::remove_dir_all(registry_blob_dir(&reg, &gamma_digest)).unwrap();

    // shared-b shares alpha, beta, gamma, cext and tools with shared-a; datapkg is new.
    let b = a.with_home("b");
    let other = b.build_ok(
        &requirements("shared-b.txt"),
        &["--cache-from", &repository],
    );
    assert_eq!(other["cache"], "miss");
    for layer in package_layers(&other) {
        let name = layer["packages"][0].as_str().unwrap();
        let built_here = ["alpha==", "gamma==", "datapkg=="]
            .iter()
            .any(|p| name.starts_with(p));
        assert_eq!(layer["registry"].is_null(), built_here, "{layer}");
        assert_eq!(layer["reused"], !built_here, "{layer}");
    }
    let c = a.with_home("c");
    let local = c.build_ok(&requirements("shared-b.txt"), &[]);
    assert_eq!(
        local["digest"], other["digest"],
        "the same image either way"
    );
}

/// A layer blob damaged in the registry's storage: a build that finds it through the layer
/// index builds the layer itself (a warning names it), and refuses to push an image naming
/// that digest to the registry, whose storage would keep the damaged bytes; the image is in
/// the local store.
#[test]
fn a_blob_damaged_in_the_registry_is_rebuilt_and_no_image_naming_it_is_pushed_there() {
    let reg = TestRegistry::start();
    let repository = format!("{}/team/env", reg.addr());
    let a = World::new();
    let built = a.build_ok(&requirements("shared-a.txt"), &["--push", &repository]);
    let beta = package_layers(&built)
        .into_iter()
        .find(|l| l["packages"][0].as_str().unwrap().starts_with("beta=="))
        .unwrap();
    let digest = beta["digest"].as_str().unwrap().to_string();
    let data = registry_blob_dir(&reg, &digest).join("data");
    let mut bytes = fs::read(&data).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    fs::write(&data, &bytes).unwrap();

    // shared-b shares beta: its layer comes from the index, damaged.
    let b = a.with_home("b");
    let out = b.build(&requirements("shared-b.txt"), &["--push", &repository]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(4), "a registry error: {err}");
    assert!(
        err.contains("beta-2.0.0") && err.contains("was not reused") && err.contains(&digest),
        "the warning names the layer: {err}"
    );
    assert!(
        err.contains(&format!("not pushed to {repository}"))
            && err.contains(&format!("damaged bytes for blob {digest}")),
        "{err}"
    );
    assert!(err.contains("right bytes back"), "the hint: {err}");
    // Nothing was pushed: no tag of shared-b's image.
    let tags = skopeo(&[
        "list-tags",
        "--tls-verify=false",
        &format!("docker://{repository}"),
    ]);
    let tags: Value = serde_json::from_str(&tags).unwrap();
    let envs: Vec<&Value> = tags["Tags"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t.as_str().unwrap().starts_with("env-"))
        .collect();
    assert_eq!(envs, vec![&built["tag"]], "only shared-a's image is tagged");
    // The image is whole in the local store, beta's layer built here.
    let local = b.build_ok(&requirements("shared-b.txt"), &[]);
    assert_eq!(local["cache"], "hit");
    let c = a.with_home("c");
    let fresh = c.build_ok(&requirements("shared-b.txt"), &[]);
    assert_eq!(fresh["digest"], local["digest"]);

    // A target whose own copy of the blob is sound is not refused: it is read again there.
    // It holds shared-a's image (beta's blob) without beta's layer index entry, so the build
    // still takes beta's entry from the damaged repository first.
    let other = TestRegistry::start();
    let elsewhere = format!("{}/team/env", other.addr());
    a.build_ok(&requirements("shared-a.txt"), &["--push", &elsewhere]);
    let beta_entry = layer_entries(&elsewhere)
        .into_iter()
        .find(|(_, m)| m["layers"][0]["digest"] == beta["digest"])
        .map(|(tag, _)| tag)
        .unwrap();
    skopeo(&[
        "delete",
        "--tls-verify=false",
        &format!("docker://{elsewhere}:{beta_entry}"),
    ]);
    let d = a.with_home("d");
    let out = d.build(
        &requirements("shared-b.txt"),
        &["--push", &elsewhere, "--cache-from", &repository],
    );
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("was not reused"),
        "beta was read damaged: {err}"
    );
    let pushed: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(pushed["digest"], local["digest"]);
}

/// The temporary files left in `world`'s work directory (locks left out): a build that
/// ends, whatever happened, leaves none.
fn temporary_files(world: &World) -> Vec<String> {
    let Ok(entries) = fs::read_dir(world.home.join("tmp")) else {
        return Vec::new();
    };
    entries
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.ends_with(".lock"))
        .collect()
}

/// A store of `world` builds `basic.txt` and pushes it to `repository`: the layer index
/// then has an entry for each package layer. Returns the build.
fn publish_basic(world: &World, repository: &str) -> Value {
    let built = world.build_ok(&requirements("basic.txt"), &["--push", repository]);
    assert_eq!(built["pushed"]["layer_entries"], 9, "{built}");
    built
}

/// The same change built where no registry helps: the image step 3 must give.
fn changed_one_built_locally(world: &World) -> Value {
    let local = world.with_home("local");
    local.build_ok(&requirements("changed-one.txt"), &[])
}

/// `changed-one.txt` built in an empty store of `world` with `--cache-from cache`: it must
/// succeed as a miss (the layers the cache does not give are built). Returns the store and
/// the build.
fn changed_one_from_cache(world: &World, cache: &str) -> (World, Value) {
    let b = world.with_home("b");
    let out = b.build(&requirements("changed-one.txt"), &["--cache-from", cache]);
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    let built: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(built["cache"], "miss");
    (b, built)
}

/// The entry of `package`'s layer of `built` in `repository`: tag and manifest.
fn entry_of(repository: &str, built: &Value, package: &str) -> (String, Value) {
    let layer = package_layers(built)
        .into_iter()
        .find(|l| l["packages"][0].as_str().unwrap().starts_with(package))
        .unwrap();
    layer_entries(repository)
        .into_iter()
        .find(|(_, m)| m["layers"][0]["digest"] == layer["digest"])
        .unwrap()
}

/// Replaces the entry under `tag` in `REGISTRY/team/env` with `manifest` (a manifest PUT).
fn put_entry(registry: &str, tag: &str, manifest: &Value) {
    let mut command = std::process::Command::new("curl");
    command.args([
        "-sSf",
        "-X",
        "PUT",
        "-H",
        "Content-Type: application/vnd.oci.image.manifest.v1+json",
        "--data-binary",
        &manifest.to_string(),
        &format!("http://{registry}/v2/team/env/manifests/{tag}"),
    ]);
    run(&mut command);
}

/// `manifest` (an entry) with its layer's `field` set to `value`, in the descriptor and in
/// the entry's JSON alike: a well-formed entry that lies.
fn forged(manifest: &Value, field: &str, value: Value) -> Value {
    let mut forged = manifest.clone();
    forged["layers"][0][field] = value.clone();
    let mut entry = entry_json(manifest);
    let name = match field {
        "mediaType" => "media_type",
        other => other,
    };
    entry["layer"][name] = value;
    forged["annotations"]["dev.strata.layer-entry"] = Value::String(entry.to_string());
    forged
}

/// Each package layer of `built`: whether it came from `repository` (else built here).
fn from_registry(built: &Value, repository: &str) -> Vec<(String, bool)> {
    package_layers(built)
        .iter()
        .map(|l| {
            let came = l["registry"] == repository;
            assert_eq!(l["reused"], came, "{l}");
            (l["packages"][0].as_str().unwrap().to_string(), came)
        })
        .collect()
}

#[test]
fn a_registry_failing_mid_download_is_a_warning_and_the_layers_are_built() {
    let reg = TestRegistry::start();
    // Every blob download is cut halfway (the connection is lost); lookups answer.
    let proxy = AnswerProxy::start(&reg.addr(), |r| {
        match r.method == "GET" && r.target.contains("/blobs/sha256:") {
            true => answer_proxy::Answer::ForwardTruncated,
            false => answer_proxy::Answer::Forward,
        }
    });
    let repository = format!("{}/team/env", reg.addr());
    let cache = format!("{}/team/env", proxy.addr());
    let a = World::new();
    publish_basic(&a, &repository);

    let (b, built) = changed_one_from_cache(&a, &cache);
    assert!(proxy.refused() > 0, "the downloads were cut");
    assert!(
        from_registry(&built, &cache).iter().all(|(_, came)| !came),
        "{built}"
    );
    let warnings = built["warnings"].as_array().unwrap();
    assert!(!warnings.is_empty(), "{built}");
    assert!(
        warnings
            .iter()
            .all(|w| w.as_str().unwrap().contains(&cache)),
        "{built}"
    );
    assert_eq!(built["digest"], changed_one_built_locally(&a)["digest"]);
    assert_eq!(temporary_files(&b), Vec::<String>::new());
}

#[test]
fn an_entry_whose_blob_has_another_size_is_a_miss() {
    let reg = TestRegistry::start();
    let repository = format!("{}/team/env", reg.addr());
    let a = World::new();
    let basic = publish_basic(&a, &repository);
    // beta's entry says its layer is one byte longer, gamma's one byte shorter.
    for (package, delta) in [("beta==", 1i64), ("gamma==", -1)] {
        let (tag, manifest) = entry_of(&repository, &basic, package);
        let size = manifest["layers"][0]["size"].as_i64().unwrap() + delta;
        put_entry(&reg.addr(), &tag, &forged(&manifest, "size", size.into()));
    }

    let b = a.with_home("b");
    let built = b.build_ok(
        &requirements("changed-one.txt"),
        &["--cache-from", &repository],
    );
    for (package, came) in from_registry(&built, &repository) {
        let built_here = ["alpha==", "beta==", "gamma=="]
            .iter()
            .any(|p| package.starts_with(p));
        assert_eq!(came, !built_here, "{package}: {built}");
    }
    let warnings = built["warnings"].as_array().unwrap();
    assert_eq!(warnings.len(), 2, "one per refused layer: {built}");
    for wheel in ["beta-2.0.0", "gamma-0.3.0"] {
        let named = format!("the layer of {wheel}");
        assert!(
            warnings.iter().any(|w| {
                let w = w.as_str().unwrap();
                w.contains("size") && w.contains(&named)
            }),
            "a warning names {wheel} and the cause: {built}"
        );
    }
    assert_eq!(built["digest"], changed_one_built_locally(&a)["digest"]);
    assert_eq!(temporary_files(&b), Vec::<String>::new());
}
#[test]
fn an_entry_claiming_a_layer_far_larger_than_its_wheel_is_not_downloaded() {
    let reg = TestRegistry::start();
    let repository = format!("{}/team/env", reg.addr());
    let a = World::new();
    let basic = publish_basic(&a, &repository);
    // beta's entry claims ten gigabytes for its layer (a wheel of a few kilobytes).
    let (tag, manifest) = entry_of(&repository, &basic, "beta==");
    let digest = manifest["layers"][0]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    put_entry(
        &reg.addr(),
        &tag,
        &forged(&manifest, "size", 10_000_000_000u64.into()),
    );
    let proxy = AnswerProxy::forwarding(&reg.addr());
    let cache = format!("{}/team/env", proxy.addr());

    let b = a.with_home("b");
    let built = b.build_ok(&requirements("changed-one.txt"), &["--cache-from", &cache]);
    let warnings = built["warnings"].as_array().unwrap();
    assert_eq!(warnings.len(), 1, "{built}");
    let warning = warnings[0].as_str().unwrap();
    assert!(
        warning.contains("beta-2.0.0") && warning.contains("claims a layer of 10000000000 bytes"),
        "{warning}"
    );
    let asked: Vec<_> = proxy
        .take_requests()
        .into_iter()
        .filter(|(_, target)| target.ends_with(&format!("/blobs/{digest}")))
        .collect();
    assert_eq!(asked, Vec::new(), "the claimed blob was downloaded");
    assert_eq!(built["digest"], changed_one_built_locally(&a)["digest"]);
}

#[test]
fn an_entry_in_another_media_type_than_the_build_makes_is_a_miss() {
    let reg = TestRegistry::start();
    let repository = format!("{}/team/env", reg.addr());
    let a = World::new();
    let basic = publish_basic(&a, &repository);
    // beta's gzip layer, announced as zstd: an image naming it could not be unpacked.
    let (tag, manifest) = entry_of(&repository, &basic, "beta==");
    let zstd = Value::String("application/vnd.oci.image.layer.v1.tar+zstd".into());
    put_entry(&reg.addr(), &tag, &forged(&manifest, "mediaType", zstd));

    let b = a.with_home("b");
    let built = b.build_ok(
        &requirements("changed-one.txt"),
        &["--cache-from", &repository],
    );
    for (package, came) in from_registry(&built, &repository) {
        let built_here = package.starts_with("alpha==") || package.starts_with("beta==");
        assert_eq!(came, !built_here, "{package}: {built}");
    }
    assert_eq!(built["digest"], changed_one_built_locally(&a)["digest"]);
}
#[test]
fn a_cache_registry_that_goes_down_during_the_layer_lookups_is_one_warning() {
    let reg = TestRegistry::start();
    // The image lookups (steps 1 and 2) are answered; the layer index lookups fail.
    let proxy = AnswerProxy::start(&reg.addr(), |r| {
        match r.target.contains("/manifests/strata-layer-") {
            true => answer_proxy::Answer::Refuse(answer_proxy::Refusal {
                status: 503,
                body: answer_proxy::error_body("UNAVAILABLE", "down", "going away"),
            }),
            false => answer_proxy::Answer::Forward,
        }
    });
    let repository = format!("{}/team/env", reg.addr());
    let cache = format!("{}/team/env", proxy.addr());
    let a = World::new();
    publish_basic(&a, &repository);

    let (_, built) = changed_one_from_cache(&a, &cache);
    assert!(
        from_registry(&built, &cache).iter().all(|(_, came)| !came),
        "{built}"
    );
    let warnings = built["warnings"].as_array().unwrap();
    assert_eq!(warnings.len(), 1, "one warning, not one per layer: {built}");
    assert!(warnings[0].as_str().unwrap().contains(&cache), "{built}");
    assert_eq!(built["digest"], changed_one_built_locally(&a)["digest"]);
}

#[test]
fn a_cache_registry_that_stops_answering_is_one_warning_and_the_build_goes_on() {
    let reg = TestRegistry::start();
    // The lookups are answered; every blob download gets no answer at all.
    let proxy = AnswerProxy::start(&reg.addr(), |r| {
        match r.method == "GET" && r.target.contains("/blobs/sha256:") {
            true => Answer::Stall,
            false => Answer::Forward,
        }
    });
    let repository = format!("{}/team/env", reg.addr());
    let cache = format!("{}/team/env", proxy.addr());
    let a = World::new();
    publish_basic(&a, &repository);

    let b = a.with_home("b");
    let out = b
        .build_command(
            &requirements("changed-one.txt"),
            &base_ref(),
            &["--cache-from", &cache],
        )
        .env("STRATA_REGISTRY_TIMEOUT", "3")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let built: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(proxy.refused() > 0, "no download was held");
    assert!(
        from_registry(&built, &cache).iter().all(|(_, came)| !came),
        "{built}"
    );
    let warnings = built["warnings"].as_array().unwrap();
    assert_eq!(warnings.len(), 1, "one warning, not one per layer: {built}");
    let warning = warnings[0].as_str().unwrap();
    assert!(
        warning.contains(&cache) && warning.contains("stopped answering"),
        "{built}"
    );
    assert_eq!(built["digest"], changed_one_built_locally(&a)["digest"]);
    assert_eq!(temporary_files(&b), Vec::<String>::new());
}

/// The tags of `REGISTRY/REPO`, read with skopeo.
fn tags(repository: &str) -> Vec<String> {
    let listed: Value = serde_json::from_str(&skopeo(&[
        "list-tags",
        "--tls-verify=false",
        &format!("docker://{repository}"),
    ]))
    .unwrap();
    listed["Tags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap().to_string())
        .collect()
}

#[test]
fn registry_gc_leaves_the_layer_index_and_its_blobs_for_later_builds() {
    let mut reg = TestRegistry::start();
    let repository = format!("{}/team/env", reg.addr());
    let a = World::new();
    let basic = a.build_ok(
        &requirements("basic.txt"),
        &["--push", &repository, "--name", "env"],
    );
    let tag = basic["tag"].as_str().unwrap().to_string();
    // A newer image of the environment, so that GC keeping the newest deletes basic's: pushed
    // in a later second (push times are whole seconds).
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let newer = a.dir.path().join("newer.txt");
    fs::write(&newer, "alpha==1.0.0\n").unwrap();
    a.build_ok(&newer, &["--push", &repository, "--name", "env"]);
    // Usage is recorded in whole seconds, and an image used in the second GC plans in counts
    // as used since the plan (kept, to be safe): let that second pass.
    std::thread::sleep(std::time::Duration::from_millis(1100));

    // Registry GC deletes the older image, then the registry's own collector runs.
    let out = a.strata(&[
        "gc",
        "--registry",
        &repository,
        "--keep-days",
        "0",
        "--keep-newest",
        "1",
        "--grace",
        "0s",
        "--json",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        !tags(&repository).contains(&tag),
        "the image is gone: {}{}",
        String::from_utf8_lossy(&out.stdout),
        stderr(&out)
    );
    assert_eq!(layer_entries(&repository).len(), 9, "the entries are not");
    // What the collector frees: basic's env layer and config, not the layers entries keep.
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let digest = basic["digest"].as_str().unwrap();
    let manifest: Value = serde_json::from_slice(
        &fs::read(
            a.oci()
                .join("blobs/sha256")
                .join(digest.trim_start_matches("sha256:")),
        )
        .unwrap(),
    )
    .unwrap();
    let env_layer = &basic["layers"].as_array().unwrap().last().unwrap()["size"];
    assert_eq!(
        report["bytes_freed"].as_u64().unwrap(),
        env_layer.as_u64().unwrap() + manifest["config"]["size"].as_u64().unwrap(),
        "{report}"
    );
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("strata-layer-"),
        "entries are not environments, not in the plan: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    reg.stop();
    reg.garbage_collect();
    reg.restart();

    // An empty store still takes every layer the entries name.
    let b = a.with_home("b");
    let built = b.build_ok(
        &requirements("changed-one.txt"),
        &["--cache-from", &repository],
    );
    for (package, came) in from_registry(&built, &repository) {
        assert_eq!(came, !package.starts_with("alpha=="), "{package}: {built}");
    }
    assert_eq!(built["warnings"], serde_json::json!([]), "{built}");
    assert_eq!(built["digest"], changed_one_built_locally(&a)["digest"]);
}

/// The bytes of blob `digest` of `REGISTRY/team/env`.
fn blob_bytes(registry: &str, digest: &str) -> Vec<u8> {
    let out = std::process::Command::new("curl")
        .args([
            "-sSfL",
            &format!("http://{registry}/v2/team/env/blobs/{digest}"),
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    out.stdout
}

/// Uploads `bytes` as a blob of `REGISTRY/team/env` (POST, then PUT to where it says); its
/// digest.
fn upload_blob(registry: &str, bytes: &[u8]) -> String {
    let digest = format!("sha256:{}", sha256_hex(bytes));
    let headers = run(std::process::Command::new("curl").args([
        "-sSf",
        "-X",
        "POST",
        "-D",
        "-",
        "-o",
        "/dev/null",
        &format!("http://{registry}/v2/team/env/blobs/uploads/"),
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
    let file = tempfile::NamedTempFile::new().unwrap();
    fs::write(file.path(), bytes).unwrap();
    run(std::process::Command::new("curl").args([
        "-sSf",
        "-X",
        "PUT",
        "-H",
        "Content-Type: application/octet-stream",
        "--data-binary",
        &format!("@{}", file.path().display()),
        &format!("{location}{separator}digest={digest}"),
    ]));
    digest
}

/// `manifest` (an entry) with `config` as its config blob (uploaded first).
fn with_config(registry: &str, manifest: &Value, config: &[u8]) -> Value {
    let mut forged = manifest.clone();
    forged["config"]["digest"] = Value::String(upload_blob(registry, config));
    forged["config"]["size"] = config.len().into();
    forged
}

#[test]
fn a_layer_from_the_registry_is_checked_by_the_path_list_of_its_entry() {
    let reg = TestRegistry::start();
    let repository = format!("{}/team/env", reg.addr());
    let a = World::new();
    let basic = publish_basic(&a, &repository);
    // Each entry's config is its layer's path list (files and symlinks with their content).
    let list = |package: &str| {
        let (tag, manifest) = entry_of(&repository, &basic, package);
        let digest = manifest["config"]["digest"].as_str().unwrap().to_string();
        let paths: Value = serde_json::from_slice(&blob_bytes(&reg.addr(), &digest)).unwrap();
        assert!(!paths.as_array().unwrap().is_empty(), "{package}: {paths}");
        (tag, manifest, paths)
    };
    let (_, _, cext) = list("cext==");
    let (beta_tag, beta, beta_paths) = list("beta==");

    // beta's list says it also installs a file of cext with other content: the build taking
    // both layers from the registry trusts the lists (as it trusts the entries' diff_ids)
    // and refuses the image, as it would two wheels that clash. Reading the layers instead
    // would find no clash.
    let mut clashing = beta_paths.as_array().unwrap().clone();
    let mut stolen = cext[0].clone();
    stolen["content"] = Value::String("forged".into());
    clashing.push(stolen.clone());
    let clashing = Value::Array(clashing).to_string();
    put_entry(
        &reg.addr(),
        &beta_tag,
        &with_config(&reg.addr(), &beta, clashing.as_bytes()),
    );
    let b = a.with_home("b");
    let out = b.build(
        &requirements("changed-one.txt"),
        &["--cache-from", &repository],
    );
    let err = stderr(&out);
    assert!(!out.status.success(), "the list was not used: {err}");
    let path = stolen["path"].as_str().unwrap();
    assert!(err.contains("both install") && err.contains(path), "{err}");
    assert_eq!(temporary_files(&b), Vec::<String>::new());

    // An entry of strata before path lists (config `{}`): the layer is read instead.
    put_entry(
        &reg.addr(),
        &beta_tag,
        &with_config(&reg.addr(), &beta, b"{}"),
    );
    let c = a.with_home("c");
    let out = c.build(
        &requirements("changed-one.txt"),
        &["--cache-from", &repository],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let built: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        from_registry(&built, &repository)
            .iter()
            .all(|(name, came)| *came != name.starts_with("alpha==")),
        "{built}"
    );
    assert_eq!(built["digest"], changed_one_built_locally(&a)["digest"]);
}
