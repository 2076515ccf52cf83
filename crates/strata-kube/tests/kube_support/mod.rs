//! Shared by the kube_* tests: a job fixture, and the real v1.20 control plane of
//! `scripts/testcluster` (started once per test binary; a test needing it fails when it
//! cannot start, and is ignored when built with `STRATA_SKIP_K8S=1`).
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use k8s_openapi::api::core::v1::{Namespace, Node};
use kube::api::{Patch, PatchParams, PostParams};
use kube::config::Kubeconfig;
use strata_oci::Digest;
use strata_queue::{Environment, Job, JobId, JobState, Outcome, Resources};

/// A running job as the agent would hand it to the backend.
pub fn job(id: &str, queue: &str, tier: &str, resources: Resources) -> Job {
    Job {
        id: id.parse::<JobId>().expect("test job id"),
        seq: 1,
        queue: queue.into(),
        tier: tier.into(),
        user: "ana".into(),
        priority: 0,
        name: Some("train".into()),
        environment: Environment::Image {
            reference: "reg.example.com/ml/envs:latest".into(),
        },
        image_digest: Some(Digest::of(b"strata test image")),
        command: vec![
            "python".into(),
            "train.py".into(),
            "--lr".into(),
            "0.1".into(),
        ],
        env: BTreeMap::from([
            ("SEED".to_string(), "7".to_string()),
            ("WANDB_MODE".to_string(), "offline".to_string()),
        ]),
        working_dir: Some("/work".into()),
        outputs: vec![],
        timeout_secs: Some(7200),
        resources,
        network: false,
        retries: 0,
        retry_exit_codes: vec![],
        retry_on_oom: false,
        retry_backoff_secs: 30,
        attempt: 1,
        state: JobState::Running,
        not_before: None,
        outcome: Outcome::default(),
        pool: None,
        node: None,
        gpus: vec![],
        container_id: None,
        kube_uid: None,
        submitted_at: 1_700_000_000,
        ready_at: Some(1_700_000_000),
        started_at: Some(1_700_000_010),
        finished_at: None,
        cancel_requested: false,
        code: None,
    }
}

/// A fresh job id (`j-` + 10 base32 characters).
pub fn fresh_id() -> String {
    JobId::generate().expect("a random job id").to_string()
}

/// A short random DNS-label-safe suffix, for unique namespaces and node names.
pub fn unique(prefix: &str) -> String {
    let id = JobId::generate().expect("a random job id").to_string();
    format!("{prefix}-{}", &id[2..])
}

/// The project's own control-plane recipe, `scripts/testcluster/testcluster`, found from the
/// crate including this module (a member crate, or the workspace root package: they sit at
/// different depths).
pub fn testcluster() -> PathBuf {
    let script = Path::new("scripts/testcluster/testcluster");
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest
        .ancestors()
        .map(|dir| dir.join(script))
        .find(|path| path.exists())
        .unwrap_or_else(|| manifest.join("../..").join(script))
}

/// The test cluster's kubeconfig, the cluster started once per test binary. Panics (the
/// test fails) when it cannot start: a test that needs it carries
/// `#[cfg_attr(skip_k8s, ignore = "needs the test cluster; STRATA_SKIP_K8S=1")]`, so that
/// `STRATA_SKIP_K8S=1` reports it ignored rather than passed.
pub fn cluster() -> PathBuf {
    static UP: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    match UP.get_or_init(start_cluster) {
        Ok(path) => path.clone(),
        Err(e) => panic!(
            "the Kubernetes test cluster did not start: {e} (STRATA_SKIP_K8S=1 at build time marks these tests ignored)"
        ),
    }
}

fn start_cluster() -> Result<PathBuf, String> {
    let script = testcluster();
    let out = Command::new("bash")
        .arg(&script)
        .arg("up")
        // apt (during a first build) needs a world-writable temporary directory.
        .env(
            "TMPDIR",
            std::env::var("TMPDIR").unwrap_or_else(|_| "/var/tmp".into()),
        )
        .output()
        .map_err(|e| format!("running {}: {e}", script.display()))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = stderr.lines().rev().take(15).collect();
        return Err(format!(
            "{} up exited with {}: {}",
            script.display(),
            out.status,
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        ));
    }
    stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix("export KUBECONFIG="))
        .map(|p| PathBuf::from(p.trim_matches(['\'', '"'])))
        .ok_or_else(|| format!("no `export KUBECONFIG=` line in the output of `up`: {stdout}"))
}

/// The test cluster's kubeconfig split in two files, as `$KUBECONFIG` may list them: the
/// first holds the clusters and users (no context), the second the contexts and the
/// current context. Neither reaches the cluster alone.
pub fn split_kubeconfig(kubeconfig: &Path, dir: &Path) -> (PathBuf, PathBuf) {
    let full = Kubeconfig::read_from(kubeconfig).expect("read the test cluster's kubeconfig");
    let clusters = Kubeconfig {
        clusters: full.clusters.clone(),
        auth_infos: full.auth_infos.clone(),
        ..Kubeconfig::default()
    };
    let contexts = Kubeconfig {
        contexts: full.contexts.clone(),
        current_context: full.current_context.clone(),
        ..Kubeconfig::default()
    };
    let write = |name: &str, config: &Kubeconfig| {
        let path = dir.join(name);
        // JSON is YAML: kube reads it back as a kubeconfig.
        std::fs::write(&path, serde_json::to_string(config).unwrap()).unwrap();
        path
    };
    (
        write("clusters.kubeconfig", &clusters),
        write("contexts.kubeconfig", &contexts),
    )
}

/// A new namespace `<prefix>-<random>`; its name.
pub async fn namespace(client: &kube::Client, prefix: &str) -> String {
    let name = unique(prefix);
    let ns = Namespace {
        metadata: kube::api::ObjectMeta {
            name: Some(name.clone()),
            ..Default::default()
        },
        ..Default::default()
    };
    kube::Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .unwrap_or_else(|e| panic!("create namespace {name}: {e}"));
    name
}

/// Registers a simulated node whose only address is 127.0.0.1 (see [`loopback_only`]).
pub async fn add_node(client: &kube::Client, name: &str, gpus: u32, labels: &[(&str, &str)]) {
    register_node(name, gpus, labels);
    loopback_only(client, name).await;
}

/// Leaves the node one address, `InternalIP 127.0.0.1`. `testcluster add-node` also reports
/// a `Hostname` address (the node's name), which kube-apiserver prefers by default
/// (`--kubelet-preferred-address-types` starts with Hostname): whenever it contacts the
/// "kubelet" (pod logs), it would resolve the made-up name with the machine's DNS server,
/// sending a query off the machine. With 127.0.0.1 it dials loopback and is refused.
async fn loopback_only(client: &kube::Client, name: &str) {
    let patch = serde_json::json!({"status": {"addresses": [
        {"type": "InternalIP", "address": "127.0.0.1"}
    ]}});
    let nodes: kube::Api<Node> = kube::Api::all(client.clone());
    let node = nodes
        .patch_status(name, &PatchParams::default(), &Patch::Merge(patch))
        .await
        .unwrap_or_else(|e| panic!("patching the addresses of node {name}: {e}"));
    let addresses = node.status.and_then(|s| s.addresses).unwrap_or_default();
    assert!(
        addresses
            .iter()
            .all(|a| a.type_ == "InternalIP" && a.address == "127.0.0.1"),
        "node {name} still has other addresses: {addresses:?}"
    );
}

fn register_node(name: &str, gpus: u32, labels: &[(&str, &str)]) {
    let mut cmd = Command::new("bash");
    cmd.arg(testcluster())
        .args(["add-node", name, "--gpus", &gpus.to_string()])
        .args(["--cpu", "64", "--memory", "512Gi"]);
    for (k, v) in labels {
        cmd.args(["--label", &format!("{k}={v}")]);
    }
    let out = cmd.output().expect("run testcluster add-node");
    assert!(
        out.status.success(),
        "add-node {name}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
