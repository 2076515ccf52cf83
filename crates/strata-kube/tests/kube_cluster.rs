//! The Kubernetes backend against a real v1.20 control plane (etcd, kube-apiserver,
//! controller-manager, scheduler on loopback; `scripts/testcluster`). There is no kubelet:
//! the tests play its part by patching pod status. Every test uses its own namespaces and
//! nodes, so they run in parallel and again on a running cluster.

mod kube_support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::api::batch::v1::Job as K8sJob;
use k8s_openapi::api::core::v1::{Namespace, Pod, Secret, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client, ResourceExt};
use serde_json::json;
use strata_kube::objects::{attempt_selector, managed_selector, MANAGED_BY};
use strata_kube::LogError;
use strata_kube::{
    connect, AttemptStatus, Connection, EndKind, KubeBackend, KubeError, KubeSettings,
};
use strata_kube::{connect_to, files_from, from_kubeconfig};
use strata_queue::Pool;
use strata_queue::{Job, Resources, Scheduler, SchedulerConfig};

use kube_support::{add_node, cluster, fresh_id, job, namespace, split_kubeconfig, unique};

const WAIT: Duration = Duration::from_secs(60);
const GIB: u64 = 1 << 30;

fn gpu(n: u32) -> Resources {
    Resources::new(8.0 * f64::from(n), 32 * GIB * u64::from(n), n)
}

fn connection(kubeconfig: &Path) -> Connection {
    Connection::Kubeconfig {
        path: Some(kubeconfig.to_path_buf()),
        context: None,
    }
}

async fn admin(kubeconfig: &Path) -> Client {
    connect(&connection(kubeconfig))
        .await
        .expect("admin client")
}

/// Settings for a test: one pool `pool` selecting `pool=<label>`, registry on a host.
fn settings(pool_label: &str, queues: &[(&str, &str)]) -> KubeSettings {
    KubeSettings {
        registry: Some("registry.test.local:5000/ml/envs".into()),
        pools: BTreeMap::from([(
            "pool".to_string(),
            BTreeMap::from([("pool".to_string(), pool_label.to_string())]),
        )]),
        namespaces: queues
            .iter()
            .map(|(q, ns)| (q.to_string(), ns.to_string()))
            .collect(),
        ..KubeSettings::default()
    }
}

fn backend(client: &Client, settings: KubeSettings, namespaces: &[&str]) -> KubeBackend {
    let home = tempfile::tempdir().unwrap().keep();
    let backend = KubeBackend::new(client.clone(), settings, home);
    backend.start(&namespaces.iter().map(|s| s.to_string()).collect());
    backend
}

/// A job of `tier` in `queue`, placed on `node` of pool `pool` (as admission does).
fn placed(queue: &str, tier: &str, resources: Resources, node: Option<&str>) -> Job {
    let mut j = job(&fresh_id(), queue, tier, resources);
    j.pool = Some("pool".into());
    j.node = node.map(str::to_string);
    j
}

async fn launch(backend: &KubeBackend, job: &Job) -> strata_kube::Launched {
    let image = backend
        .image_ref(job.image_digest.as_ref().unwrap())
        .unwrap();
    backend.launch(job, &image, false).await.expect("launch")
}

/// Waits until the attempt's pod is bound; returns (node, pod).
async fn bound(backend: &KubeBackend, job: &Job) -> (String, String) {
    let status = backend
        .wait_status(job, WAIT, |s| {
            matches!(
                s,
                AttemptStatus::Scheduled { .. } | AttemptStatus::Running { .. }
            )
        })
        .await;
    match status {
        Some(AttemptStatus::Scheduled { node, pod })
        | Some(AttemptStatus::Running { node, pod }) => (node, pod),
        other => panic!("job {} was not bound within {WAIT:?}: {other:?}", job.id),
    }
}

/// Plays the kubelet: patches the pod's status.
async fn kubelet(client: &Client, ns: &str, pod: &str, status: serde_json::Value) {
    Api::<Pod>::namespaced(client.clone(), ns)
        .patch_status(
            pod,
            &PatchParams::default(),
            &Patch::Merge(json!({ "status": status })),
        )
        .await
        .expect("patch pod status");
}

fn container(state: serde_json::Value) -> serde_json::Value {
    json!([{
        "name": "job", "image": "img", "imageID": "", "ready": false, "restartCount": 0,
        "state": state
    }])
}

fn running() -> serde_json::Value {
    json!({"phase": "Running", "containerStatuses": container(json!({"running": {"startedAt": "2024-01-01T00:00:00Z"}}))})
}

fn exited(phase: &str, code: i32, reason: &str) -> serde_json::Value {
    json!({"phase": phase, "containerStatuses": container(json!({"terminated": {
        "exitCode": code, "reason": reason,
        "startedAt": "2024-01-01T00:00:00Z", "finishedAt": "2024-01-01T00:01:00Z"
    }}))})
}

async fn pods_of(client: &Client, ns: &str, job: &Job) -> Vec<Pod> {
    Api::<Pod>::namespaced(client.clone(), ns)
        .list(&ListParams::default().labels(&attempt_selector(&job.id, job.attempt)))
        .await
        .unwrap()
        .items
}

#[tokio::test]
#[cfg_attr(skip_k8s, ignore = "needs the test cluster; STRATA_SKIP_K8S=1")]
async fn create_bind_adopt_and_succeed() {
    let kc = cluster();
    let client = admin(&kc).await;
    let ns = namespace(&client, "t-create").await;
    let label = unique("p");
    let node = unique("n");
    add_node(&client, &node, 4, &[("pool", &label)]).await;
    let settings = settings(&label, &[("team", &ns)]);
    let first = backend(&client, settings.clone(), &[&ns]);
    let j = placed("team", "gpu1", gpu(1), Some(&node));

    let launched = launch(&first, &j).await;
    assert!(!launched.adopted);
    assert_eq!(launched.name, format!("strata-{}-a1", j.id));
    let (bound_to, pod) = bound(&first, &j).await;
    assert_eq!(bound_to, node, "pinned to the node admission chose");

    // An agent restart: a new backend creates the same attempt again and adopts it.
    let second = backend(&client, settings, &[&ns]);
    let again = launch(&second, &j).await;
    assert!(again.adopted, "second create adopts the first Job");
    let jobs = second.list(&BTreeSet::from([ns.clone()])).await.unwrap();
    assert_eq!(jobs.len(), 1, "{jobs:?}");
    assert_eq!((jobs[0].job_id.clone(), jobs[0].attempt), (j.id.clone(), 1));
    assert_eq!(pods_of(&client, &ns, &j).await.len(), 1, "no second pod");

    kubelet(&client, &ns, &pod, running()).await;
    let st = second
        .wait_status(&j, WAIT, |s| matches!(s, AttemptStatus::Running { .. }))
        .await;
    assert!(matches!(st, Some(AttemptStatus::Running { .. })), "{st:?}");
    kubelet(&client, &ns, &pod, exited("Succeeded", 0, "Completed")).await;
    let end = second.wait(&j, WAIT).await.expect("outcome");
    assert_eq!(end.kind, EndKind::Exited);
    assert_eq!(end.outcome.exit_code, Some(0));
    assert_eq!(end.node.as_deref(), Some(node.as_str()));
    // The Job controller agrees: the Job completes.
    let jobs: Api<K8sJob> = Api::namespaced(client.clone(), &ns);
    let name = launched.name.clone();
    let complete = tokio::time::timeout(WAIT, async {
        loop {
            let done = second
                .list(&BTreeSet::from([ns.clone()]))
                .await
                .unwrap()
                .iter()
                .any(|c| c.name == name && c.finished);
            if done {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;
    assert!(
        complete.is_ok(),
        "Job {name} never got its Complete condition"
    );
    let object = jobs.get(&name).await.unwrap();
    assert_eq!(object.spec.as_ref().unwrap().backoff_limit, Some(0));
}

/// A queue naming an outputs claim: the API server takes the Job with the claim as a volume
/// and each `--output` mounted from the job's own sub-directory of it, and the Job
/// controller's pod carries them. The test cluster has no kubelet and no storage
/// provisioner, so nothing is written: the objects are what is checked.
#[tokio::test]
#[cfg_attr(skip_k8s, ignore = "needs the test cluster; STRATA_SKIP_K8S=1")]
async fn a_queues_outputs_claim_is_mounted_at_each_output_one_directory_per_job() {
    let kc = cluster();
    let client = admin(&kc).await;
    let ns = namespace(&client, "t-outputs").await;
    let label = unique("p");
    let node = unique("n");
    add_node(&client, &node, 4, &[("pool", &label)]).await;
    let mut settings = settings(&label, &[("team", &ns)]);
    settings
        .outputs_claims
        .insert("team".into(), "team-outputs".into());
    let b = backend(&client, settings, &[&ns]);
    let cpu = SchedulerConfig::default().tiers["cpu"];
    let mut j = placed("team", "cpu", cpu, Some(&node));
    j.outputs = vec!["outputs".parse().unwrap(), "/data/run".parse().unwrap()];
    let launched = launch(&b, &j).await;

    let object = Api::<K8sJob>::namespaced(client.clone(), &ns)
        .get(&launched.name)
        .await
        .unwrap();
    let template = object.spec.unwrap().template.spec.unwrap();
    let expected_mounts = json!([
        { "name": "strata-outputs", "mountPath": "/work/outputs",
          "subPath": format!("{}/outputs", j.id) },
        { "name": "strata-outputs", "mountPath": "/data/run",
          "subPath": format!("{}/data/run", j.id) },
    ]);
    let expected_volumes = json!([
        { "name": "strata-outputs",
          "persistentVolumeClaim": { "claimName": "team-outputs" } },
    ]);
    let check = |what: &str, spec: &k8s_openapi::api::core::v1::PodSpec| {
        let spec = serde_json::to_value(spec).unwrap();
        assert_eq!(spec["volumes"], expected_volumes, "{what}");
        assert_eq!(
            spec["containers"][0]["volumeMounts"], expected_mounts,
            "{what}"
        );
    };
    check("the Job's pod template", &template);
    let pod = tokio::time::timeout(WAIT, async {
        loop {
            if let Some(pod) = pods_of(&client, &ns, &j).await.into_iter().next() {
                return pod;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await
    .expect("the Job controller made no pod");
    check("the pod", pod.spec.as_ref().unwrap());

    // A queue without a claim: no volume, no mount (the outputs are not kept there).
    let plain = placed("other", "cpu", cpu, Some(&node));
    let mut with_outputs = plain.clone();
    with_outputs.outputs = j.outputs.clone();
    let object = b
        .job_object(
            &with_outputs,
            &b.image_ref(j.image_digest.as_ref().unwrap()).unwrap(),
            false,
        )
        .unwrap();
    let spec = serde_json::to_value(object.spec.unwrap().template.spec.unwrap()).unwrap();
    assert!(spec.get("volumes").is_none(), "{spec}");
    assert!(
        spec["containers"][0].get("volumeMounts").is_none(),
        "{spec}"
    );
}

#[tokio::test]
#[cfg_attr(skip_k8s, ignore = "needs the test cluster; STRATA_SKIP_K8S=1")]
async fn failures_are_classified() {
    let kc = cluster();
    let client = admin(&kc).await;
    let ns = namespace(&client, "t-fail").await;
    let label = unique("p");
    let node = unique("n");
    add_node(&client, &node, 8, &[("pool", &label)]).await;
    let b = backend(&client, settings(&label, &[("team", &ns)]), &[&ns]);
    let exit3 = placed("team", "gpu1", gpu(1), Some(&node));
    let oom = placed("team", "gpu1", gpu(1), Some(&node));
    let pull = placed("team", "gpu1", gpu(1), Some(&node));
    for j in [&exit3, &oom, &pull] {
        launch(&b, j).await;
    }
    let (_, p_exit3) = bound(&b, &exit3).await;
    let (_, p_oom) = bound(&b, &oom).await;
    let (_, p_pull) = bound(&b, &pull).await;
    kubelet(&client, &ns, &p_exit3, exited("Failed", 3, "Error")).await;
    kubelet(&client, &ns, &p_oom, exited("Failed", 137, "OOMKilled")).await;
    let image = b.image_ref(pull.image_digest.as_ref().unwrap()).unwrap();
    kubelet(
        &client,
        &ns,
        &p_pull,
        json!({"phase": "Pending", "containerStatuses": container(json!({"waiting": {
            "reason": "ErrImagePull",
            "message": format!("rpc error: code = NotFound desc = failed to pull and unpack image \"{image}\": not found")
        }}))}),
    )
    .await;

    let end = b.wait(&exit3, WAIT).await.expect("exit 3 outcome");
    assert_eq!(
        (end.kind, end.outcome.exit_code),
        (EndKind::Exited, Some(3))
    );
    assert!(!end.outcome.oom_killed);
    let end = b.wait(&oom, WAIT).await.expect("oom outcome");
    assert_eq!(end.kind, EndKind::OomKilled);
    assert!(end.outcome.oom_killed);
    assert_eq!(end.outcome.exit_code, Some(137));
    let end = b.wait(&pull, WAIT).await.expect("image pull outcome");
    assert_eq!(end.kind, EndKind::ImagePull);
    let reason = end.outcome.reason.unwrap();
    eprintln!("image pull: {reason}");
    assert!(reason.contains(&image), "{reason}");
    assert!(
        reason.contains("registry registry.test.local:5000"),
        "{reason}"
    );
}

#[tokio::test]
#[cfg_attr(skip_k8s, ignore = "needs the test cluster; STRATA_SKIP_K8S=1")]
async fn eight_gpus_do_not_fit_on_four_plus_four() {
    let kc = cluster();
    let client = admin(&kc).await;
    let ns = namespace(&client, "t-fit").await;
    let label = unique("p");
    let (n1, n2) = (unique("n"), unique("n"));
    add_node(&client, &n1, 4, &[("pool", &label)]).await;
    add_node(&client, &n2, 4, &[("pool", &label)]).await;
    let b = backend(&client, settings(&label, &[("team", &ns)]), &[&ns]);

    // strata's admission, over the pool's nodes as read from the cluster, does not start it.
    let pool: Pool = b.pool("pool").await.unwrap();
    assert_eq!(pool.nodes.len(), 2);
    assert!(pool.nodes.iter().all(|n| n.capacity.gpus == 4));
    let config = SchedulerConfig {
        pools: vec![pool],
        ..SchedulerConfig::default()
    };
    let mut scheduler = Scheduler::new(config.clone());
    let mut big = placed("default", "gpu8", config.tiers["gpu8"], None);
    big.state = strata_queue::JobState::Ready;
    scheduler.apply(&big);
    assert!(
        scheduler.next_admissions(1).is_empty(),
        "strata does not admit 8 on 4+4"
    );

    // Created anyway (what strata never does), the real scheduler leaves it unbound.
    big.state = strata_queue::JobState::Running;
    big.queue = "team".into();
    launch(&b, &big).await;
    let end = b.wait(&big, WAIT).await.expect("unschedulable outcome");
    assert_eq!(end.kind, EndKind::Unschedulable, "{end:?}");
    assert!(end.nothing_ran());
    let reason = end.outcome.reason.unwrap();
    eprintln!("unschedulable: {reason}");
    assert!(reason.contains("nvidia.com/gpu"), "{reason}");
    let pods = pods_of(&client, &ns, &big).await;
    assert_eq!(pods.len(), 1);
    assert!(
        pods[0].spec.as_ref().unwrap().node_name.is_none(),
        "left unbound"
    );
    b.cancel(&big, Duration::from_secs(1)).await.unwrap();
}

/// Node name → GPUs of pool `pool` as the backend's Node watchers see it (`None`: not
/// listed yet).
fn watched_gpus(b: &KubeBackend) -> Option<BTreeMap<String, u32>> {
    let pools = b.watched_pools()?;
    let pool = pools.into_iter().find(|p| p.name == "pool")?;
    Some(
        pool.nodes
            .into_iter()
            .map(|n| (n.name, n.capacity.gpus))
            .collect(),
    )
}

/// Waits until the watched pool is `expected` (bounded).
async fn watched_becomes(b: &KubeBackend, what: &str, expected: &[(&str, u32)]) {
    let expected: BTreeMap<String, u32> =
        expected.iter().map(|(n, g)| (n.to_string(), *g)).collect();
    let start = std::time::Instant::now();
    while watched_gpus(b).as_ref() != Some(&expected) {
        assert!(
            start.elapsed() < WAIT,
            "{what}: the watched pool is {:?}, expected {expected:?}",
            watched_gpus(b)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
#[cfg_attr(skip_k8s, ignore = "needs the test cluster; STRATA_SKIP_K8S=1")]
async fn the_watched_pools_follow_nodes_that_join_are_cordoned_leave_or_are_deleted() {
    let kc = cluster();
    let client = admin(&kc).await;
    let label = unique("p");
    let (first, second) = (unique("n"), unique("n"));
    add_node(&client, &first, 4, &[("pool", &label)]).await;
    let b = backend(&client, settings(&label, &[]), &[]);
    watched_becomes(&b, "at start", &[(&first, 4)]).await;

    add_node(&client, &second, 8, &[("pool", &label)]).await;
    watched_becomes(&b, "a node joined", &[(&first, 4), (&second, 8)]).await;

    let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(client.clone());
    let cordon = Patch::Merge(json!({"spec": {"unschedulable": true}}));
    nodes
        .patch(&second, &PatchParams::default(), &cordon)
        .await
        .expect("cordon");
    watched_becomes(&b, "a node was cordoned", &[(&first, 4), (&second, 0)]).await;

    let relabel = Patch::Merge(json!({"metadata": {"labels": {"pool": "elsewhere"}}}));
    nodes
        .patch(&first, &PatchParams::default(), &relabel)
        .await
        .expect("relabel");
    watched_becomes(&b, "a node left the pool", &[(&second, 0)]).await;

    nodes
        .delete(&second, &Default::default())
        .await
        .expect("delete node");
    watched_becomes(&b, "a node was deleted", &[]).await;
}

#[tokio::test]
#[cfg_attr(skip_k8s, ignore = "needs the test cluster; STRATA_SKIP_K8S=1")]
async fn cancel_confirms_the_pods_are_gone() {
    let kc = cluster();
    let client = admin(&kc).await;
    let ns = namespace(&client, "t-cancel").await;
    let label = unique("p");
    let node = unique("n");
    add_node(&client, &node, 4, &[("pool", &label)]).await;
    let b = backend(&client, settings(&label, &[("team", &ns)]), &[&ns]);
    let j = placed("team", "gpu2", gpu(2), Some(&node));
    let launched = launch(&b, &j).await;
    let (_, pod) = bound(&b, &j).await;
    kubelet(&client, &ns, &pod, running()).await;

    let end = b.cancel(&j, Duration::from_secs(1)).await.expect("cancel");
    assert_eq!(end.outcome.reason.as_deref(), Some("cancelled"));
    assert!(
        pods_of(&client, &ns, &j).await.is_empty(),
        "pods gone when cancel returns"
    );
    // The Job goes once its pods are gone (Foreground deletion).
    let jobs: Api<K8sJob> = Api::namespaced(client.clone(), &ns);
    let gone = tokio::time::timeout(WAIT, async {
        while jobs.get_opt(&launched.name).await.unwrap().is_some() {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;
    assert!(gone.is_ok(), "Job {} still there", launched.name);
    // Cancelling again is harmless.
    b.cancel(&j, Duration::from_secs(1))
        .await
        .expect("second cancel");
}

#[tokio::test]
#[cfg_attr(skip_k8s, ignore = "needs the test cluster; STRATA_SKIP_K8S=1")]
async fn a_job_still_being_deleted_is_not_adopted() {
    let kc = cluster();
    let client = admin(&kc).await;
    let ns = namespace(&client, "t-deleting").await;
    let b = backend(&client, settings("none", &[("team", &ns)]), &[&ns]);
    let j = placed("team", "cpu", Resources::new(1.0, GIB, 0), None);
    let image = b.image_ref(j.image_digest.as_ref().unwrap()).unwrap();
    // An earlier try of the same attempt, held in deletion by a finalizer.
    let mut earlier = b.job_object(&j, &image, false).unwrap();
    earlier.metadata.finalizers = Some(vec!["strata.test/hold".into()]);
    let jobs: Api<K8sJob> = Api::namespaced(client.clone(), &ns);
    let name = earlier.metadata.name.clone().unwrap();
    jobs.create(&PostParams::default(), &earlier).await.unwrap();
    jobs.delete(&name, &Default::default()).await.unwrap();

    let err = b.launch(&j, &image, false).await.unwrap_err();
    assert!(matches!(err, KubeError::StillDeleting { .. }), "{err}");
    assert!(err.to_string().contains(&name), "{err}");

    let release = Patch::Merge(json!({"metadata": {"finalizers": null}}));
    jobs.patch(&name, &PatchParams::default(), &release)
        .await
        .unwrap();
    let gone = tokio::time::timeout(WAIT, async {
        while jobs.get_opt(&name).await.unwrap().is_some() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    assert!(gone.is_ok(), "{name} never went");
    let launched = b
        .launch(&j, &image, false)
        .await
        .expect("launch once it is gone");
    assert!(!launched.adopted, "a new Job, not the deleted one");
    b.cancel(&j, Duration::from_secs(1)).await.unwrap();
}

/// Creates the NetworkPolicy `strata deploy` renders for a team namespace in `ns`; the policy
/// as the server stored it.
async fn apply_network_policy(client: &Client, ns: &str) -> NetworkPolicy {
    let policy = strata_deploy::objects::no_network_policy(&ns.parse().unwrap());
    Api::<NetworkPolicy>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &policy)
        .await
        .unwrap_or_else(|e| panic!("creating the no-network policy in {ns}: {e}"))
}

#[tokio::test]
#[cfg_attr(skip_k8s, ignore = "needs the test cluster; STRATA_SKIP_K8S=1")]
async fn the_deploy_network_policy_selects_exactly_the_pods_without_network() {
    let kc = cluster();
    let client = admin(&kc).await;
    let ns = namespace(&client, "t-net").await;
    let label = unique("p");
    let node = unique("n");
    add_node(&client, &node, 0, &[("pool", &label)]).await;
    let policy = apply_network_policy(&client, &ns).await;
    let spec = policy.spec.expect("policy spec");
    let types = spec.policy_types.unwrap_or_default();
    assert!(types.contains(&"Ingress".to_string()) && types.contains(&"Egress".to_string()));
    assert!(
        spec.ingress.unwrap_or_default().is_empty(),
        "nothing allowed in"
    );
    assert!(
        spec.egress.unwrap_or_default().is_empty(),
        "nothing allowed out"
    );
    let selector = spec
        .pod_selector
        .and_then(|s| s.match_labels)
        .expect("matchLabels")
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",");

    let b = backend(&client, settings(&label, &[("team", &ns)]), &[&ns]);
    let cpu = Resources::new(1.0, GIB, 0);
    let (closed, open) = (
        placed("team", "cpu", cpu, Some(&node)),
        placed("team", "cpu", cpu, Some(&node)),
    );
    let image = b.image_ref(closed.image_digest.as_ref().unwrap()).unwrap();
    b.launch(&closed, &image, false).await.expect("launch");
    b.launch(&open, &image, true).await.expect("launch");
    let (_, closed_pod) = bound(&b, &closed).await;
    bound(&b, &open).await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let selected: Vec<String> = pods
        .list(&ListParams::default().labels(&selector))
        .await
        .unwrap()
        .iter()
        .map(|p| p.name_any())
        .collect();
    assert_eq!(
        selected,
        [closed_pod],
        "the policy selects the job without network only"
    );
    for j in [&closed, &open] {
        b.cancel(j, Duration::from_secs(1)).await.unwrap();
    }
}

/// Creates the Role and RoleBinding `strata deploy` renders for team namespace `ns`, bound to
/// the agent's ServiceAccount in `agent_ns`.
async fn apply_team_rbac(client: &Client, ns: &str, agent_ns: &str) {
    let team = ns.parse().unwrap();
    let role = strata_deploy::objects::team_role(&team);
    let binding = strata_deploy::objects::team_role_binding(&team, &agent_ns.parse().unwrap());
    Api::<Role>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &role)
        .await
        .unwrap();
    Api::<RoleBinding>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &binding)
        .await
        .unwrap();
}

/// The token of the ServiceAccount's token Secret (v1.20 creates one per SA).
async fn sa_token(client: &Client, ns: &str, sa: &str) -> String {
    let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), ns);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    let token = tokio::time::timeout(WAIT, async {
        loop {
            let account = sas.get(sa).await.unwrap();
            if let Some(name) = account
                .secrets
                .unwrap_or_default()
                .into_iter()
                .find_map(|r| r.name)
            {
                let secret = secrets.get(&name).await.unwrap();
                if let Some(t) = secret.data.and_then(|d| d.get("token").cloned()) {
                    return String::from_utf8(t.0).unwrap();
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;
    token.expect("ServiceAccount token Secret")
}

/// A kubeconfig for the same cluster with only a bearer token.
fn token_kubeconfig(admin_kubeconfig: &Path, token: &str, dir: &std::path::Path) -> PathBuf {
    let admin = kube::config::Kubeconfig::read_from(admin_kubeconfig).unwrap();
    let cluster = admin.clusters[0].cluster.clone().unwrap();
    let server = cluster.server.unwrap();
    let ca = cluster.certificate_authority_data.unwrap_or_default();
    let text = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: {server}\n    certificate-authority-data: {ca}\nusers:\n- name: agent\n  user:\n    token: {token}\ncontexts:\n- name: agent\n  context:\n    cluster: c\n    user: agent\ncurrent-context: agent\n"
    );
    let path = dir.join("agent.kubeconfig");
    std::fs::write(&path, text).unwrap();
    path
}

#[tokio::test]
#[cfg_attr(skip_k8s, ignore = "needs the test cluster; STRATA_SKIP_K8S=1")]
async fn rbac_role_allows_only_the_team_namespace() {
    let kc = cluster();
    let client = admin(&kc).await;
    let agent_ns = namespace(&client, "t-agent").await;
    let team_a = namespace(&client, "t-team-a").await;
    let team_b = namespace(&client, "t-team-b").await;
    let sa = ServiceAccount {
        metadata: kube::api::ObjectMeta {
            name: Some("strata-agent".into()),
            ..Default::default()
        },
        ..Default::default()
    };
    Api::<ServiceAccount>::namespaced(client.clone(), &agent_ns)
        .create(&PostParams::default(), &sa)
        .await
        .unwrap();
    apply_team_rbac(&client, &team_a, &agent_ns).await;
    let token = sa_token(&client, &agent_ns, "strata-agent").await;
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = token_kubeconfig(&kc, &token, dir.path());
    let agent = connect(&connection(&kubeconfig))
        .await
        .expect("token client");

    let label = unique("p");
    let node = unique("n");
    add_node(&client, &node, 4, &[("pool", &label)]).await;
    let settings = settings(&label, &[("a", &team_a), ("b", &team_b)]);
    let b = backend(&agent, settings, &[&team_a]);
    let ok = placed("a", "gpu1", gpu(1), Some(&node));
    let launched = launch(&b, &ok).await;
    assert_eq!(launched.namespace, team_a);
    let (bound_to, _) = bound(&b, &ok).await;
    assert_eq!(bound_to, node, "the agent's own watch sees its pod");

    let denied = placed("b", "gpu1", gpu(1), Some(&node));
    let image = b.image_ref(denied.image_digest.as_ref().unwrap()).unwrap();
    let err = b.launch(&denied, &image, false).await.unwrap_err();
    let text = err.to_string();
    eprintln!("forbidden: {text}");
    assert!(matches!(err, KubeError::Forbidden { .. }), "{text}");
    let user = format!("system:serviceaccount:{agent_ns}:strata-agent");
    for part in [
        user.as_str(),
        "create",
        "jobs",
        team_b.as_str(),
        "strata deploy",
    ] {
        assert!(text.contains(part), "{part:?} missing in: {text}");
    }
    let secrets = Api::<Secret>::namespaced(agent.clone(), &team_a)
        .list(&ListParams::default())
        .await
        .unwrap_err();
    assert!(
        matches!(&secrets, kube::Error::Api(s) if s.code == 403),
        "secrets must be forbidden: {secrets}"
    );
    // Cancel works with the Role's verbs alone.
    b.cancel(&ok, Duration::from_secs(1))
        .await
        .expect("cancel as the agent");
}

#[tokio::test]
#[cfg_attr(skip_k8s, ignore = "needs the test cluster; STRATA_SKIP_K8S=1")]
async fn two_teams_and_every_object_is_labelled() {
    let kc = cluster();
    let client = admin(&kc).await;
    let ns_a = namespace(&client, "t-two-a").await;
    let ns_b = namespace(&client, "t-two-b").await;
    let label = unique("p");
    let node = unique("n");
    add_node(&client, &node, 8, &[("pool", &label)]).await;
    let b = backend(
        &client,
        settings(&label, &[("a", &ns_a), ("b", &ns_b)]),
        &[&ns_a, &ns_b],
    );
    let jobs = [
        placed("a", "gpu1", gpu(1), Some(&node)),
        placed("a", "cpu", Resources::new(2.0, 4 * GIB, 0), Some(&node)),
        placed("b", "gpu2", gpu(2), Some(&node)),
    ];
    for j in &jobs {
        launch(&b, j).await;
    }
    for j in &jobs {
        bound(&b, j).await;
    }
    let found = b
        .list(&BTreeSet::from([ns_a.clone(), ns_b.clone()]))
        .await
        .unwrap();
    let found: BTreeSet<_> = found
        .iter()
        .map(|c| (c.namespace.clone(), c.job_id.clone()))
        .collect();
    let expected: BTreeSet<_> = jobs
        .iter()
        .map(|j| {
            (
                if j.queue == "a" {
                    ns_a.clone()
                } else {
                    ns_b.clone()
                },
                j.id.clone(),
            )
        })
        .collect();
    assert_eq!(found, expected);
    // `kubectl get jobs,pods -l app.kubernetes.io/managed-by=strata` finds everything, and
    // nothing in the namespaces lacks the label.
    for ns in [&ns_a, &ns_b] {
        let all_jobs = Api::<K8sJob>::namespaced(client.clone(), ns)
            .list(&ListParams::default())
            .await
            .unwrap();
        let all_pods = Api::<Pod>::namespaced(client.clone(), ns)
            .list(&ListParams::default())
            .await
            .unwrap();
        let selected_pods = Api::<Pod>::namespaced(client.clone(), ns)
            .list(&ListParams::default().labels(&managed_selector()))
            .await
            .unwrap();
        assert!(!all_jobs.items.is_empty() && !all_pods.items.is_empty());
        assert_eq!(selected_pods.items.len(), all_pods.items.len());
        for labels in all_jobs
            .iter()
            .map(|j| j.labels())
            .chain(all_pods.iter().map(|p| p.labels()))
        {
            assert_eq!(labels.get(MANAGED_BY).map(String::as_str), Some("strata"));
            for key in [
                "strata.dev/job",
                "strata.dev/attempt",
                "strata.dev/queue",
                "strata.dev/tier",
                "strata.dev/env",
            ] {
                assert!(labels.contains_key(key), "{key} missing: {labels:?}");
            }
        }
    }
}

#[tokio::test]
#[cfg_attr(skip_k8s, ignore = "needs the test cluster; STRATA_SKIP_K8S=1")]
async fn a_kubeconfig_list_is_merged_as_kubectl_merges_it() {
    let kc = cluster();
    let dir = tempfile::tempdir().unwrap();
    let (clusters, contexts) = split_kubeconfig(&kc, dir.path());
    let listed = std::env::join_paths([&clusters, &contexts]).unwrap();
    let files = files_from(None, Some(&listed), None).unwrap();
    assert_eq!(files, [clusters.clone(), contexts.clone()]);

    // The first file has no context; the second names it and the first has its cluster.
    let resolved = from_kubeconfig(&files, None)
        .await
        .expect("the merged files");
    let client = connect_to(resolved)
        .await
        .expect("connect through both files");
    Api::<Namespace>::all(client)
        .get("default")
        .await
        .expect("the cluster answers");

    let err = from_kubeconfig(&files[..1], None).await.err().unwrap();
    let text = err.to_string();
    assert!(text.contains(&clusters.display().to_string()), "{text}");
    assert!(text.contains("current-context"), "{text}");
    let current = kube::config::Kubeconfig::read_from(&kc)
        .unwrap()
        .current_context
        .unwrap();
    let err = from_kubeconfig(&files[1..], None).await.err().unwrap();
    let text = err.to_string();
    assert!(text.contains(&contexts.display().to_string()), "{text}");
    assert!(text.contains(&format!("context `{current}`")), "{text}");
}

#[tokio::test]
#[cfg_attr(skip_k8s, ignore = "needs the test cluster; STRATA_SKIP_K8S=1")]
async fn bad_input_names_what_to_fix() {
    let kc = cluster();
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.kubeconfig");
    let err = connect(&connection(&missing))
        .await
        .err()
        .expect("missing file fails")
        .to_string();
    assert!(
        err.contains("nope.kubeconfig") && err.contains("cannot read"),
        "{err}"
    );

    let admin_cfg = kube::config::Kubeconfig::read_from(&kc).unwrap();
    let mut dead = admin_cfg.clone();
    if let Some(c) = dead.clusters[0].cluster.as_mut() {
        c.server = Some("https://127.0.0.1:1".into());
    }
    let dead_path = dir.path().join("dead.kubeconfig");
    std::fs::write(&dead_path, serde_json::to_string(&dead).unwrap()).unwrap();
    let err = connect(&connection(&dead_path))
        .await
        .err()
        .expect("dead server fails")
        .to_string();
    assert!(
        err.contains("https://127.0.0.1:1") && err.contains("dead.kubeconfig"),
        "{err}"
    );
    assert!(err.contains("did not answer"), "{err}");
    eprintln!("dead server: {err}");

    let client = admin(&kc).await;
    let b = backend(
        &client,
        settings("none", &[("ghost-queue", "no-such-ns-strata")]),
        &[],
    );
    let j = placed("ghost-queue", "cpu", Resources::new(2.0, 4 * GIB, 0), None);
    let image = b.image_ref(j.image_digest.as_ref().unwrap()).unwrap();
    let err = b.launch(&j, &image, false).await.unwrap_err();
    let text = err.to_string();
    eprintln!("namespace: {text}");
    assert!(matches!(err, KubeError::NamespaceMissing { .. }), "{text}");
    assert!(
        text.contains("no-such-ns-strata") && text.contains("ghost-queue"),
        "{text}"
    );
    // Not by digest: refused before anything is created.
    let err = b
        .launch(&j, "registry.test.local:5000/ml/envs:latest", false)
        .await
        .unwrap_err();
    assert!(matches!(err, KubeError::NotByDigest { .. }), "{err}");
}

#[tokio::test]
#[cfg_attr(skip_k8s, ignore = "needs the test cluster; STRATA_SKIP_K8S=1")]
async fn log_streaming_reports_a_pod_without_a_running_container() {
    let kc = cluster();
    let client = admin(&kc).await;
    let ns = namespace(&client, "t-logs").await;
    let label = unique("p");
    let node = unique("n");
    add_node(&client, &node, 1, &[("pool", &label)]).await;
    let b = backend(&client, settings(&label, &[("team", &ns)]), &[&ns]);
    let j = placed("team", "gpu1", gpu(1), Some(&node));
    launch(&b, &j).await;
    let (_, pod) = bound(&b, &j).await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("logs").join(format!("{}.log", j.id));
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let stream = || strata_kube::stream_pod_logs(&pods, &ns, &pod, &log, false);

    // Bound but no container yet: refused without asking for the logs at all.
    let err = stream().await.expect_err("no container was created");
    let text = err.to_string();
    eprintln!("logs, pending: {text}");
    assert!(matches!(err, LogError::NotAvailable { .. }), "{text}");
    assert!(text.contains(&pod) && text.contains(&ns), "{text}");
    assert!(text.contains("has not been created"), "{text}");

    // "Running", but no kubelet: the API server's own error, from dialling the node's only
    // address (loopback; never a name it would have to look up).
    kubelet(&client, &ns, &pod, running()).await;
    let err = stream()
        .await
        .expect_err("no kubelet answers: the API must refuse");
    let text = err.to_string();
    eprintln!("logs, running: {text}");
    assert!(matches!(err, LogError::NotAvailable { .. }), "{text}");
    assert!(text.contains(&pod) && text.contains(&ns), "{text}");
    assert!(text.contains("127.0.0.1:10250"), "{text}");
    assert!(
        std::fs::read_to_string(&log).unwrap_or_default().is_empty(),
        "nothing written"
    );
    b.cancel(&j, Duration::from_secs(1)).await.unwrap();
}
