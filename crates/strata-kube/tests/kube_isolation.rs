//! A job's pods get no way up, and a Job someone else labelled as a strata attempt is not
//! that attempt (issue 9, part 4). Against the real v1.20 control plane of
//! `scripts/testcluster`; the tests play the kubelet by patching pod status.

mod kube_support;

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::batch::v1::Job as K8sJob;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client, ResourceExt};
use serde_json::json;
use strata_kube::objects::attempt_selector;
use strata_kube::{connect, AttemptStatus, Connection, KubeBackend, KubeSettings};
use strata_queue::{Job, Resources};

use kube_support::{add_node, cluster, fresh_id, job, namespace, unique};

const WAIT: Duration = Duration::from_secs(60);

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

async fn admin() -> Client {
    connect(&Connection::Kubeconfig {
        path: Some(cluster()),
        context: None,
    })
    .await
    .expect("admin client")
}

fn backend(client: &Client, settings: KubeSettings, namespaces: &[&str]) -> KubeBackend {
    let home = tempfile::tempdir().unwrap().keep();
    let backend = KubeBackend::new(client.clone(), settings, home);
    backend.start(&namespaces.iter().map(|s| s.to_string()).collect());
    backend
}

fn placed(queue: &str, node: &str) -> Job {
    let mut j = job(&fresh_id(), queue, "cpu", Resources::new(1.0, 1 << 30, 0));
    j.pool = Some("pool".into());
    j.node = Some(node.to_string());
    j
}

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

fn exited(phase: &str, code: i32, reason: &str) -> serde_json::Value {
    json!({"phase": phase, "containerStatuses": [{
        "name": "job", "image": "img", "imageID": "", "ready": false, "restartCount": 0,
        "state": {"terminated": {
            "exitCode": code, "reason": reason,
            "startedAt": "2024-01-01T00:00:00Z", "finishedAt": "2024-01-01T00:01:00Z"
        }}
    }]})
}

/// The pod the Job controller made for the attempt `job` in `ns`, once there.
async fn pod_in(client: &Client, ns: &str, job: &Job) -> String {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let selector = attempt_selector(&job.id, job.attempt);
    let found = tokio::time::timeout(WAIT, async {
        loop {
            let list = pods
                .list(&ListParams::default().labels(&selector))
                .await
                .unwrap();
            if let Some(p) = list.items.first() {
                return p.name_any();
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    found.unwrap_or_else(|_| panic!("no pod of {} in {ns} within {WAIT:?}", job.id))
}

#[tokio::test]
#[cfg_attr(skip_k8s, ignore = "needs the test cluster; STRATA_SKIP_K8S=1")]
async fn the_job_container_drops_every_capability_and_uses_the_runtime_seccomp() {
    let client = admin().await;
    let ns = namespace(&client, "t-secctx").await;
    let label = unique("p");
    let node = unique("n");
    add_node(&client, &node, 0, &[("pool", &label)]).await;
    let b = backend(&client, settings(&label, &[("team", &ns)]), &[&ns]);
    let j = placed("team", &node);
    let image = b.image_ref(j.image_digest.as_ref().unwrap()).unwrap();
    let launched = b.launch(&j, &image, false).await.expect("launch");
    // What the API server kept (it drops fields it does not know).
    let stored = Api::<K8sJob>::namespaced(client.clone(), &ns)
        .get(&launched.name)
        .await
        .unwrap();
    let spec = stored.spec.unwrap().template.spec.unwrap();
    let ctx = spec.containers[0]
        .security_context
        .clone()
        .expect("securityContext");
    assert_eq!(ctx.allow_privilege_escalation, Some(false));
    assert_eq!(
        ctx.capabilities.and_then(|c| c.drop),
        Some(vec!["ALL".to_string()])
    );
    assert_eq!(
        ctx.seccomp_profile.map(|p| p.type_).as_deref(),
        Some("RuntimeDefault")
    );
    // And the pod the Job controller made from it.
    let pod = pod_in(&client, &ns, &j).await;
    let pod = Api::<Pod>::namespaced(client.clone(), &ns)
        .get(&pod)
        .await
        .unwrap();
    let ctx = pod.spec.unwrap().containers[0].security_context.clone();
    assert_eq!(
        ctx.and_then(|c| c.seccomp_profile)
            .map(|p| p.type_)
            .as_deref(),
        Some("RuntimeDefault")
    );
}

/// Another team's Job carrying the labels of our attempt: in another watched namespace
/// with strata's name, and in our namespace under another name. Each fails with 66 before
/// ours ends with 0: the outcome recorded for our attempt must be ours.
#[tokio::test]
#[cfg_attr(skip_k8s, ignore = "needs the test cluster; STRATA_SKIP_K8S=1")]
async fn an_impostor_job_with_our_labels_is_not_our_outcome() {
    let client = admin().await;
    let ours = namespace(&client, "t-ours").await;
    let theirs = namespace(&client, "t-theirs").await;
    let label = unique("p");
    let node = unique("n");
    add_node(&client, &node, 0, &[("pool", &label)]).await;
    let both = settings(&label, &[("team", &ours), ("other", &theirs)]);
    let b = backend(&client, both.clone(), &[&ours, &theirs]);
    let j = placed("team", &node);
    let image = b.image_ref(j.image_digest.as_ref().unwrap()).unwrap();
    let launched = b.launch(&j, &image, false).await.expect("launch");
    let real_pod = pod_in(&client, &ours, &j).await;

    let object = b.job_object(&j, &image, false).unwrap();
    for (ns, name) in [
        (theirs.as_str(), launched.name.clone()),
        (ours.as_str(), format!("{}-x", launched.name)),
    ] {
        let mut fake: K8sJob = object.clone();
        fake.metadata.namespace = Some(ns.to_string());
        fake.metadata.name = Some(name.clone());
        Api::<K8sJob>::namespaced(client.clone(), ns)
            .create(&PostParams::default(), &fake)
            .await
            .unwrap_or_else(|e| panic!("create impostor {ns}/{name}: {e}"));
        // Its pod carries our attempt's labels too.
        let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
        let fake_pod = tokio::time::timeout(WAIT, async {
            loop {
                let list = pods
                    .list(&ListParams::default().labels(&attempt_selector(&j.id, j.attempt)))
                    .await
                    .unwrap();
                if let Some(p) = list
                    .items
                    .iter()
                    .find(|p| p.name_any() != real_pod && p.name_any().starts_with(&name))
                {
                    return p.name_any();
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("no pod for impostor {ns}/{name}"));
        kubelet(&client, ns, &fake_pod, exited("Failed", 66, "Error")).await;
    }
    // Give the watchers time to see the impostors end.
    let seen = b
        .wait_status(&j, Duration::from_secs(3), |s| {
            matches!(s, AttemptStatus::Finished(_))
        })
        .await;
    assert!(seen.is_none(), "an impostor's end was taken: {seen:?}");
    assert!(
        b.state().pods(&strata_kube::AttemptKey::of(&j)) == vec![real_pod.clone()],
        "{:?}",
        b.state().pods(&strata_kube::AttemptKey::of(&j))
    );

    kubelet(
        &client,
        &ours,
        &real_pod,
        exited("Succeeded", 0, "Completed"),
    )
    .await;
    let end = b.wait(&j, WAIT).await.expect("our outcome");
    assert_eq!(end.outcome.exit_code, Some(0), "{end:?}");

    // An agent restarted: it follows the attempt without having launched it, and finds
    // ours by namespace and name, not an impostor.
    let restarted = backend(&client, both, &[&theirs, &ours]);
    let end = restarted
        .wait(&j, WAIT)
        .await
        .expect("our outcome after a restart");
    assert_eq!(end.outcome.exit_code, Some(0), "{end:?}");
}

/// The uid the API server gave the Job is what the launch reports (the agent records it),
/// and what the listing of a restarted agent shows: a Job deleted and created again under
/// the same name by someone else is told apart by it.
#[tokio::test]
#[cfg_attr(skip_k8s, ignore = "needs the test cluster; STRATA_SKIP_K8S=1")]
async fn the_job_s_uid_is_reported_at_launch_and_listed() {
    let client = admin().await;
    let ns = namespace(&client, "t-uid").await;
    let label = unique("p");
    let node = unique("n");
    add_node(&client, &node, 0, &[("pool", &label)]).await;
    let b = backend(&client, settings(&label, &[("team", &ns)]), &[&ns]);
    let j = placed("team", &node);
    let image = b.image_ref(j.image_digest.as_ref().unwrap()).unwrap();
    let launched = b.launch(&j, &image, false).await.expect("launch");
    let api = Api::<K8sJob>::namespaced(client.clone(), &ns);
    let stored = api.get(&launched.name).await.unwrap();
    assert!(launched.uid.is_some());
    assert_eq!(launched.uid, stored.uid());
    let listed_uid = |jobs: Vec<strata_kube::ClusterJob>| {
        jobs.into_iter()
            .find(|c| c.name == launched.name)
            .and_then(|c| c.uid)
    };
    let namespaces = [ns.clone()].into_iter().collect();
    assert_eq!(listed_uid(b.list(&namespaces).await.unwrap()), launched.uid);

    // Deleted, and created again under its name with strata's labels.
    api.delete(&launched.name, &DeleteParams::background())
        .await
        .expect("delete");
    tokio::time::timeout(WAIT, async {
        while api.get_opt(&launched.name).await.unwrap().is_some() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the Job is deleted");
    let again = api
        .create(
            &PostParams::default(),
            &b.job_object(&j, &image, false).unwrap(),
        )
        .await
        .expect("create the replacement");
    assert_ne!(again.uid(), launched.uid);
    assert_eq!(listed_uid(b.list(&namespaces).await.unwrap()), again.uid());
}
