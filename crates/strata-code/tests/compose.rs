//! A job's image: the environment's layers shared as they are, the code layer on top.

use std::fs;

use serde_json::{json, Value};
use strata_code::{compose, pack, CodeRef, PackOptions, ANNOTATION_ENV};
use strata_index::{Index, LeaseOwner};
use strata_oci::{BlobDescriptor, Descriptor, Digest, Manifest, ManifestDocument, Store};

#[test]
fn the_code_goes_on_top_of_the_environment_and_nothing_else_changes() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("oci"), &dir.path().join("tmp")).unwrap();
    let index = Index::open(&dir.path().join("strata.db")).unwrap();
    let lease = index.lease("test", LeaseOwner::current_process()).unwrap();

    // An "environment": one layer (any tree will do), a config and a manifest.
    let env_tree = dir.path().join("env");
    fs::create_dir_all(env_tree.join("venv")).unwrap();
    fs::write(env_tree.join("venv/lib.py"), "x = 1\n").unwrap();
    let env_layer = pack(
        &env_tree,
        &PackOptions {
            dest: "/opt".into(),
            ..PackOptions::default()
        },
        &store,
        &lease,
    )
    .unwrap()
    .layer;
    let config = json!({
        "architecture": "amd64", "os": "linux",
        "config": {"Env": ["PATH=/opt/venv/bin:/usr/bin", "VIRTUAL_ENV=/opt/venv"], "WorkingDir": "/"},
        "rootfs": {"type": "layers", "diff_ids": [env_layer.diff_id.to_string()]},
        "history": [{"created_by": "env"}],
    });
    let config_bytes = serde_json::to_vec(&config).unwrap();
    let config_digest = store.put_bytes(&config_bytes).unwrap();
    let mut manifest = Manifest::new(
        Descriptor::new(&BlobDescriptor {
            media_type: strata_oci::MEDIA_TYPE_CONFIG.into(),
            digest: config_digest,
            size: config_bytes.len() as u64,
        }),
        vec![Descriptor::from(&env_layer)],
    );
    manifest.annotations.insert(
        "dev.strata.spec-digest".into(),
        Digest::of(b"spec").to_string(),
    );
    manifest.annotations.insert(
        "dev.strata.lock-digest".into(),
        Digest::of(b"lock").to_string(),
    );
    let env = store.put_bytes(&manifest.to_bytes()).unwrap();

    let code_tree = dir.path().join("code");
    fs::create_dir_all(&code_tree).unwrap();
    fs::write(code_tree.join("main.py"), "print(1)\n").unwrap();
    let code = pack(&code_tree, &PackOptions::default(), &store, &lease).unwrap();
    let code_ref = CodeRef {
        layer: &code.layer,
        dest: "/work",
    };
    let job = compose(&store, &lease, &env, &code_ref).unwrap();
    assert_eq!(
        compose(&store, &lease, &env, &code_ref).unwrap(),
        job,
        "the same inputs gave another image"
    );

    let ManifestDocument::Image(composed) =
        ManifestDocument::parse(&store.read_blob(&job).unwrap()).unwrap()
    else {
        panic!("not an image manifest");
    };
    let layers: Vec<&Digest> = composed.layers.iter().map(|l| &l.digest).collect();
    assert_eq!(layers, [&env_layer.digest, &code.layer.digest]);
    assert_eq!(composed.annotations[ANNOTATION_ENV], env.to_string());
    assert!(
        !composed.annotations.contains_key("dev.strata.spec-digest"),
        "an image with code must not answer builds of the environment's spec"
    );
    let config: Value =
        serde_json::from_slice(&store.read_blob(&composed.config.digest).unwrap()).unwrap();
    assert_eq!(config["config"]["WorkingDir"], "/work");
    assert_eq!(
        config["config"]["Env"],
        json!(["PATH=/opt/venv/bin:/usr/bin", "VIRTUAL_ENV=/opt/venv"])
    );
    assert_eq!(
        config["rootfs"]["diff_ids"],
        json!([
            env_layer.diff_id.to_string(),
            code.layer.diff_id.to_string()
        ])
    );
    assert_eq!(config["history"].as_array().unwrap().len(), 2);
}
